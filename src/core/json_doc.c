/* An owned hg_json document: the arena and its root travel together. */
#include <stdlib.h>

#include "core/common.h"
#include "core/json.h"

struct hg_json_doc *hg_json_doc_new(size_t cap)
{
    struct hg_json_doc *d = hg_xmalloc(sizeof(*d));
    /* One cached 8 KiB chunk holds a typical webhook's envelope and its event (~6 KiB measured). */
    hg_arena_init_sized(&d->arena, cap, HG_ARENA_CACHED_CHUNK);
    d->root = NULL;
    return d;
}

void hg_json_doc_free(struct hg_json_doc *d)
{
    if (d == NULL)
        return;
    hg_arena_destroy(&d->arena);
    free(d);
}

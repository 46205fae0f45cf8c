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

void hg_jb_set(struct hg_json_build *b, struct hg_json *obj, const char *key, struct hg_json *val)
{
    if (hg_json_set(b->a, obj, key, val) != 0)
        b->oom = true;
}

void hg_jb_append(struct hg_json_build *b, struct hg_json *arr, struct hg_json *val)
{
    if (hg_json_append(b->a, arr, val) != 0)
        b->oom = true;
}

struct hg_json *hg_jb_object(struct hg_json_build *b)
{
    struct hg_json *o = hg_json_object(b->a);
    b->oom |= o == NULL;
    return o;
}

struct hg_json *hg_jb_array(struct hg_json_build *b)
{
    struct hg_json *o = hg_json_array(b->a);
    b->oom |= o == NULL;
    return o;
}

struct hg_json *hg_jb_string(struct hg_json_build *b, const char *s)
{
    struct hg_json *o = hg_json_string(b->a, s);
    b->oom |= o == NULL;
    return o;
}

/* Per-request memory pool. */
#include <string.h>

#include "core/arena.h"
#include "core/common.h"
#include "core/err.h"

#define CHUNK_DEFAULT 4096

struct hg_arena_chunk {
    struct hg_arena_chunk *next;
    size_t size;
    size_t off;
    _Alignas(16) unsigned char data[];
};

struct hg_arena_cleanup {
    struct hg_arena_cleanup *next;
    hg_arena_cleanup_fn fn;
    void *data;
};

void hg_arena_init(struct hg_arena *a, size_t cap)
{
    a->chunks = NULL;
    a->cleanups = NULL;
    a->used = 0;
    a->cap = cap;
}

void *hg_arena_alloc(struct hg_arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (a->cap && a->used + n > a->cap)
        return NULL;
    struct hg_arena_chunk *c = a->chunks;
    if (c == NULL || c->size - c->off < n) {
        size_t sz = n > CHUNK_DEFAULT / 2 ? n : CHUNK_DEFAULT - sizeof(*c);
        struct hg_arena_chunk *nc = hg_xmalloc(sizeof(*nc) + sz);
        nc->size = sz;
        nc->off = 0;
        if (c != NULL && n > CHUNK_DEFAULT / 2) {
            /* A big block goes behind the current chunk so the current one keeps filling. */
            nc->next = c->next;
            c->next = nc;
        } else {
            nc->next = c;
            a->chunks = nc;
        }
        c = nc;
    }
    void *p = c->data + c->off;
    c->off += n;
    a->used += n;
    return p;
}

char *hg_arena_strndup(struct hg_arena *a, const char *s, size_t n)
{
    char *p = hg_arena_alloc(a, n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

int hg_arena_cleanup_add(struct hg_arena *a, hg_arena_cleanup_fn fn, void *data)
{
    struct hg_arena_cleanup *c = hg_arena_alloc(a, sizeof(*c));
    if (c == NULL)
        return HG_ERR_NOMEM;
    c->fn = fn;
    c->data = data;
    c->next = a->cleanups;
    a->cleanups = c;
    return 0;
}

static void run_cleanups(struct hg_arena *a)
{
    /* Cleanup records live inside the arena: take the list first, free chunks after. */
    struct hg_arena_cleanup *c = a->cleanups;
    a->cleanups = NULL;
    for (; c; c = c->next)
        c->fn(c->data);
}

void hg_arena_reset(struct hg_arena *a)
{
    run_cleanups(a);
    struct hg_arena_chunk *keep = NULL, *c = a->chunks;
    while (c) {
        struct hg_arena_chunk *next = c->next;
        if (keep == NULL && c->size == CHUNK_DEFAULT - sizeof(*c)) {
            keep = c;
        } else {
            free(c);
        }
        c = next;
    }
    if (keep) {
        keep->off = 0;
        keep->next = NULL;
    }
    a->chunks = keep;
    a->used = 0;
}

void hg_arena_destroy(struct hg_arena *a)
{
    run_cleanups(a);
    struct hg_arena_chunk *c = a->chunks;
    while (c) {
        struct hg_arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->chunks = NULL;
    a->used = 0;
}

/*
 * Per-request memory pool. Chunks of the standard size come from a small per-thread cache and go
 * back to it: a webhook's document arena (parse, events) is one cached chunk taken and returned,
 * not a malloc and free per chunk, and the heap does not fragment under them.
 */
#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include "core/arena.h"
#include "core/common.h"
#include "core/err.h"

#define CHUNK_DEFAULT 4096
#define CACHE_MAX     64 /* chunks a thread keeps for reuse: 64 x 8 KiB for document arenas */

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

/*
 * The cache of one thread: chunks of HG_ARENA_CACHED_CHUNK bytes. A pthread key's destructor
 * frees them when the thread exits (worker threads end before the process does).
 */
struct chunk_cache {
    struct hg_arena_chunk *head;
    unsigned n;
};

static _Thread_local struct chunk_cache cache;
static _Thread_local bool cache_registered;
static pthread_key_t cache_key;
static pthread_once_t cache_key_once = PTHREAD_ONCE_INIT;

static void cache_drop(void *p)
{
    struct chunk_cache *cc = p;
    while (cc->head) {
        struct hg_arena_chunk *c = cc->head;
        cc->head = c->next;
        free(c);
    }
    cc->n = 0;
}

static void cache_key_make(void)
{
    (void)pthread_key_create(&cache_key, cache_drop);
}

static size_t data_size(size_t total)
{
    return total - sizeof(struct hg_arena_chunk);
}

static struct hg_arena_chunk *chunk_take(size_t total)
{
    if (total == HG_ARENA_CACHED_CHUNK && cache.head) {
        struct hg_arena_chunk *c = cache.head;
        cache.head = c->next;
        cache.n--;
        return c;
    }
    struct hg_arena_chunk *c = hg_xmalloc(total);
    c->size = data_size(total);
    return c;
}

static void chunk_give(struct hg_arena_chunk *c)
{
    if (c->size == data_size(HG_ARENA_CACHED_CHUNK) && cache.n < CACHE_MAX) {
        if (!cache_registered) {
            pthread_once(&cache_key_once, cache_key_make);
            (void)pthread_setspecific(cache_key, &cache);
            cache_registered = true;
        }
        c->next = cache.head;
        cache.head = c;
        cache.n++;
        return;
    }
    free(c);
}

void hg_arena_init(struct hg_arena *a, size_t cap)
{
    hg_arena_init_sized(a, cap, CHUNK_DEFAULT);
}

void hg_arena_init_sized(struct hg_arena *a, size_t cap, size_t chunk_bytes)
{
    a->chunks = NULL;
    a->cleanups = NULL;
    a->used = 0;
    a->cap = cap;
    a->chunk = chunk_bytes > sizeof(struct hg_arena_chunk) + 64 ? chunk_bytes : CHUNK_DEFAULT;
}

void *hg_arena_alloc(struct hg_arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (a->cap && a->used + n > a->cap)
        return NULL;
    size_t standard = data_size(a->chunk);
    struct hg_arena_chunk *c = a->chunks;
    if (c == NULL || c->size - c->off < n) {
        bool big = n > standard / 2;
        struct hg_arena_chunk *nc = big ? chunk_take(sizeof(*nc) + n) : chunk_take(a->chunk);
        nc->off = 0;
        if (c != NULL && big) {
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
        if (keep == NULL && c->size == data_size(a->chunk))
            keep = c;
        else
            chunk_give(c);
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
        chunk_give(c);
        c = next;
    }
    a->chunks = NULL;
    a->used = 0;
}

/* Per-request memory pool (h2o req->pool, nginx r->pool): many small allocations, one release. */
#ifndef HG_CORE_ARENA_H
#define HG_CORE_ARENA_H

#include <stddef.h>

typedef void (*hg_arena_cleanup_fn)(void *data);

struct hg_arena_chunk;
struct hg_arena_cleanup;

struct hg_arena {
    struct hg_arena_chunk *chunks;     /* newest first; the first one is reused across resets */
    struct hg_arena_cleanup *cleanups; /* run in reverse order of registration */
    size_t used;                       /* bytes handed out since the last reset */
    size_t cap;                        /* hg_arena_alloc returns NULL past this (0 = no cap) */
    size_t chunk;                      /* bytes of a standard chunk, its header included */
};

/* Chunks of this size (total) are kept in a per-thread cache when released, and reused. */
#define HG_ARENA_CACHED_CHUNK (8 * 1024)

/* Prepare an empty arena; `cap` bounds the bytes it will ever hand out between resets. */
void hg_arena_init(struct hg_arena *a, size_t cap);
/* The same with standard chunks of `chunk_bytes` (HG_ARENA_CACHED_CHUNK: from the thread's cache). */
void hg_arena_init_sized(struct hg_arena *a, size_t cap, size_t chunk_bytes);
/* 16-byte aligned memory valid until reset/destroy; NULL when the cap would be passed. */
void *hg_arena_alloc(struct hg_arena *a, size_t n);
char *hg_arena_strndup(struct hg_arena *a, const char *s, size_t n);
/* Register `fn(data)` to run at reset/destroy (for foreign objects: json_t, handles). 0 or HG_ERR_NOMEM. */
int hg_arena_cleanup_add(struct hg_arena *a, hg_arena_cleanup_fn fn, void *data);
/* Run cleanups, free all but one chunk, keep the arena usable. */
void hg_arena_reset(struct hg_arena *a);
/* Run cleanups and free everything. */
void hg_arena_destroy(struct hg_arena *a);

#endif

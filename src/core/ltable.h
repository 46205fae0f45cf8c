/*
 * A bounded hash table with TTL and LRU eviction, single-threaded (one per worker). Entries carry
 * four integers and one pointer of payload for the caller; the key is copied into the entry.
 * Used by the Redis client's local fallback (dedup marks, rate-limit windows) and the tenant
 * resolver's per-worker cache.
 */
#ifndef HG_CORE_LTABLE_H
#define HG_CORE_LTABLE_H

#include <stddef.h>
#include <stdint.h>

#include "core/list.h"

struct hg_lentry {
    struct hg_lentry *hnext;
    struct hg_list lru;           /* in the table's LRU list */
    uint64_t hash;
    uint64_t expires_ms;          /* monotonic ms; the entry is gone after it */
    int64_t a, b;                 /* dedup: a = state; ratelimit: a = current, b = previous count */
    uint64_t c, d;                /* ratelimit: c = current window start, d = window length */
    void *ptr;                    /* owned by the caller; handed to the table's drop hook */
    size_t klen;
    char key[];
};

/* Zero-initialized, then `max` (and `drop` when entries hold a `ptr`) set by the owner. */
struct hg_ltable {
    struct hg_lentry **buckets; /* allocated on first insert: an always-up Redis costs nothing */
    size_t nbuckets;
    size_t count;
    size_t max;
    void (*drop)(void *ptr);    /* runs for a non-NULL ptr whenever its entry goes */
    struct hg_list lru;         /* most recently used first; set up with the buckets */
};

/* The live entry for key (expires_ms > now), moved to the front of the LRU; an expired one is
 * removed (NULL). */
struct hg_lentry *hg_ltable_get(struct hg_ltable *t, const char *key, size_t klen, uint64_t now);
/* A fresh zeroed entry for a key known to be absent; evicts the LRU entry when full (counted in
 * *evictions). Set expires_ms on it. */
struct hg_lentry *hg_ltable_add(struct hg_ltable *t, const char *key, size_t klen, uint64_t *evictions);
void hg_ltable_remove(struct hg_ltable *t, struct hg_lentry *e);
/* Replace e's ptr, dropping the old one. */
void hg_ltable_set_ptr(struct hg_ltable *t, struct hg_lentry *e, void *ptr);
/* Free every entry; the table is empty (and reusable) after. */
void hg_ltable_free(struct hg_ltable *t);

#endif

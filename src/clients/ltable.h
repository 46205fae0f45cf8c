/*
 * A bounded hash table with TTL and LRU eviction, single-threaded (one per worker). Entries carry
 * four integers of payload for the caller; the key is copied into the entry.
 */
#ifndef HG_CLIENTS_LTABLE_H
#define HG_CLIENTS_LTABLE_H

#include <stddef.h>
#include <stdint.h>

/* A bounded hash table with TTL and LRU eviction: the local fallback's memory. */
struct hg_lentry {
    struct hg_lentry *hnext;
    struct hg_lentry *lprev, *lnext; /* LRU list, most recently used first */
    uint64_t hash;
    uint64_t expires_ms;          /* monotonic ms; the entry is gone after it */
    int64_t a, b;                 /* dedup: a = state; ratelimit: a = current, b = previous count */
    uint64_t c, d;                /* ratelimit: c = current window start, d = window length */
    size_t klen;
    char key[];
};

struct hg_ltable {
    struct hg_lentry **buckets; /* allocated on first insert: an always-up Redis costs nothing */
    size_t nbuckets;
    size_t count;
    size_t max;
    struct hg_lentry *lru_head, *lru_tail;
};

/* The live entry for key, moved to the front of the LRU; an expired one is dropped (NULL). */
struct hg_lentry *hg_ltable_get(struct hg_ltable *t, const char *key, size_t klen, uint64_t now);
/* A fresh zeroed entry for a key known to be absent; evicts the LRU entry when full (counted in
 * *evictions). Set expires_ms on it. */
struct hg_lentry *hg_ltable_add(struct hg_ltable *t, const char *key, size_t klen, uint64_t *evictions);
void hg_ltable_remove(struct hg_ltable *t, struct hg_lentry *e);
/* Free every entry; the table is empty (and reusable) after. */
void hg_ltable_free(struct hg_ltable *t);

#endif

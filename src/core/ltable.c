/*
 * A bounded hash table with TTL and LRU eviction (see ltable.h): the memory of the Redis client's
 * local fallback (dedup and rate limits while Redis cannot answer) and of the tenant resolver.
 */
#include <string.h>

#include "core/ltable.h"
#include "core/common.h"

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static void entry_free(struct hg_ltable *t, struct hg_lentry *e)
{
    if (e->ptr && t->drop)
        t->drop(e->ptr);
    free(e);
}

void hg_ltable_remove(struct hg_ltable *t, struct hg_lentry *e)
{
    struct hg_lentry **pp = &t->buckets[e->hash & (t->nbuckets - 1)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    hg_list_unlink(&e->lru);
    t->count--;
    entry_free(t, e);
}

void hg_ltable_set_ptr(struct hg_ltable *t, struct hg_lentry *e, void *ptr)
{
    if (e->ptr && t->drop)
        t->drop(e->ptr);
    e->ptr = ptr;
}

/* The live entry for key, moved to the front of the LRU; expired entries are dropped. */
struct hg_lentry *hg_ltable_get(struct hg_ltable *t, const char *key, size_t klen, uint64_t now)
{
    if (t->buckets == NULL)
        return NULL;
    uint64_t h = fnv1a(key, klen);
    for (struct hg_lentry *e = t->buckets[h & (t->nbuckets - 1)]; e; e = e->hnext) {
        if (e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0) {
            if (e->expires_ms <= now) {
                hg_ltable_remove(t, e);
                return NULL;
            }
            hg_list_unlink(&e->lru);
            hg_list_insert_head(&t->lru, &e->lru);
            return e;
        }
    }
    return NULL;
}

/* A fresh zeroed entry for a key known to be absent; evicts the LRU entry when full. */
struct hg_lentry *hg_ltable_add(struct hg_ltable *t, const char *key, size_t klen,
                                 uint64_t *evictions)
{
    if (t->buckets == NULL) {
        size_t n = 64;
        while (n < t->max && n < (1u << 20))
            n <<= 1;
        t->buckets = hg_xcalloc(n, sizeof(*t->buckets));
        t->nbuckets = n;
        hg_list_init(&t->lru);
    }
    struct hg_list *oldest = hg_list_last(&t->lru);
    if (t->count >= t->max && oldest != NULL) {
        hg_ltable_remove(t, hg_list_entry(oldest, struct hg_lentry, lru));
        (*evictions)++;
    }
    struct hg_lentry *e = hg_xcalloc(1, sizeof(*e) + klen + 1);
    e->hash = fnv1a(key, klen);
    e->klen = klen;
    memcpy(e->key, key, klen);
    size_t b = e->hash & (t->nbuckets - 1);
    e->hnext = t->buckets[b];
    t->buckets[b] = e;
    hg_list_insert_head(&t->lru, &e->lru);
    t->count++;
    return e;
}

void hg_ltable_free(struct hg_ltable *t)
{
    if (t->buckets != NULL) { /* else the LRU list was never set up: no entry either */
        struct hg_list *pos, *next;
        HG_LIST_FOREACH_SAFE(pos, next, &t->lru)
            entry_free(t, hg_list_entry(pos, struct hg_lentry, lru));
    }
    free(t->buckets);
    t->buckets = NULL;
    t->nbuckets = 0;
    t->count = 0;
    t->lru = (struct hg_list){ NULL, NULL };
}

/*
 * Per-conversation order in the drain: events that carry `conversation.id` (Genesys) leave in the
 * order their records arrived, per tenant and conversation. Each conversation is a FIFO of its
 * events not yet done; only the head may start. An event behind it is held (one count of its
 * item's `outstanding`, so the item neither settles nor backs off) and starts when the one before
 * it is done. A head that waits on a retry holds back the later events of its conversation only.
 */
#include <string.h>

#include "core/common.h"
#include "core/json.h"
#include "drain/drain_internal.h"

struct order_conv {
    struct order_conv *next;       /* in its hash bucket */
    struct item_event *head, *tail;
    size_t key_len;
    char key[];                    /* tenant NUL conversation id */
};

static uint64_t key_hash(const char *key, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)key[i]) * 1099511628211ull;
    return h;
}

static void table_grow(struct hg_drain *d)
{
    size_t cap = d->conv_cap ? d->conv_cap * 2 : 64;
    struct order_conv **b = hg_xcalloc(cap, sizeof(*b));
    for (size_t i = 0; i < d->conv_cap; i++) {
        struct order_conv *c = d->convs[i];
        while (c) {
            struct order_conv *next = c->next;
            size_t at = key_hash(c->key, c->key_len) & (cap - 1);
            c->next = b[at];
            b[at] = c;
            c = next;
        }
    }
    free(d->convs);
    d->convs = b;
    d->conv_cap = cap;
}

/* The conversation for key, created when missing. */
static struct order_conv *conv_get(struct hg_drain *d, const char *key, size_t n)
{
    if (d->n_convs >= d->conv_cap)
        table_grow(d);
    size_t at = key_hash(key, n) & (d->conv_cap - 1);
    for (struct order_conv *c = d->convs[at]; c; c = c->next)
        if (c->key_len == n && memcmp(c->key, key, n) == 0)
            return c;
    struct order_conv *c = hg_xcalloc(1, sizeof(*c) + n);
    memcpy(c->key, key, n);
    c->key_len = n;
    c->next = d->convs[at];
    d->convs[at] = c;
    d->n_convs++;
    return c;
}

static void conv_drop(struct hg_drain *d, struct order_conv *gone)
{
    size_t at = key_hash(gone->key, gone->key_len) & (d->conv_cap - 1);
    for (struct order_conv **p = &d->convs[at]; *p; p = &(*p)->next) {
        if (*p == gone) {
            *p = gone->next;
            break;
        }
    }
    d->n_convs--;
    free(gone);
}

void order_add(struct item *it)
{
    struct hg_drain *d = it->drain;
    for (size_t i = 0; i < it->n_events; i++) {
        struct item_event *e = &it->events[i];
        const char *id = e->conv_id;
        if (e->dead_reason != NULL || e->doc == NULL || id == NULL || id[0] == '\0')
            continue;
        size_t tl = strlen(it->tenant), il = strlen(id);
        char small[256];
        char *key = tl + il + 1 <= sizeof(small) ? small : hg_xmalloc(tl + il + 1);
        memcpy(key, it->tenant, tl);
        key[tl] = '\0';
        memcpy(key + tl + 1, id, il);
        struct order_conv *c = conv_get(d, key, tl + 1 + il);
        if (key != small)
            free(key);
        e->conv = c;
        e->conv_next = NULL;
        if (c->tail)
            c->tail->conv_next = e;
        else
            c->head = e;
        c->tail = e;
    }
}

bool order_hold(struct item_event *e)
{
    if (e->held)
        return true; /* already counted */
    if (e->conv == NULL || e->conv->head == e || e->item->drain->closing)
        return false;
    e->held = true;
    e->item->outstanding++;
    return true;
}

void order_done(struct item_event *e)
{
    struct order_conv *c = e->conv;
    if (c == NULL)
        return;
    struct hg_drain *d = e->item->drain;
    bool was_head = c->head == e;
    struct item_event *prev = NULL;
    for (struct item_event *x = c->head; x; prev = x, x = x->conv_next) {
        if (x != e)
            continue;
        if (prev)
            prev->conv_next = e->conv_next;
        else
            c->head = e->conv_next;
        if (c->tail == e)
            c->tail = prev;
        break;
    }
    e->conv = NULL;
    e->conv_next = NULL;
    if (e->held) {
        /* Leaves without having started (its item is being freed): drop its count. */
        if (e->resume_queued)
            drain_event_resume_cancel(e);
        e->held = false;
        e->item->outstanding--;
    }
    if (c->head == NULL) {
        conv_drop(d, c);
        return;
    }
    struct item_event *next = c->head;
    if (was_head && next->held && !next->resume_queued && !d->closing)
        drain_event_resume_later(next);
}

void order_free(struct hg_drain *d)
{
    for (size_t i = 0; i < d->conv_cap; i++) {
        struct order_conv *c = d->convs[i];
        while (c) {
            struct order_conv *next = c->next;
            free(c);
            c = next;
        }
    }
    free(d->convs);
    d->convs = NULL;
    d->conv_cap = d->n_convs = 0;
}

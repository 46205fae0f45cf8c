/*
 * The drain: spool record → events → sink → release. See drain.h for the contract.
 */
#include <stdio.h>
#include <string.h>

#include "core/common.h"
#include "core/err.h"
#include "core/log.h"
#include "core/time.h"
#include "core/uuid.h"
#include "ops/metrics.h"
#include "providers/whatsapp.h"
#include "req/drain.h"
#include "sink/sink.h"
#include "spool/spool.h"

#define RECOVER_BATCH 256          /* recovered records taken per pull */
#define INFLIGHT_PULL_LIMIT 1024   /* pull the backlog only while fewer records are in flight */
#define RETRY_MIN_MS 100
#define RETRY_MAX_MS 30000
#define TICK_MS 50

/* One event of a record, kept until its sink confirmed it. */
struct item_event {
    char *event_id;
    char *routing_key;
    char *kind;
    char *type;
    char *correlation_id;
    char *priority_class;
    uint64_t timestamp_s;
    int priority;
    char *json;
    size_t json_len;
    bool confirmed;
    bool in_flight;
    struct item *item;
};

/* One spool record being handed on. */
struct item {
    struct hg_drain *drain;
    struct item *prev, *next;      /* in drain->items */
    uint64_t spool_id;
    char *request_id;
    char *tenant;
    char *provider;
    uint64_t received_at_ns;
    char *body;
    size_t body_len;
    json_t *root;                  /* parsed envelope until events are built */
    struct item_event *events;
    size_t n_events;
    size_t in_flight;              /* publishes awaiting their callback */
    bool failed;                   /* some publish of this round failed */
    unsigned attempts;
    uint64_t retry_at_ms;          /* loop time; 0 = not waiting */
};

struct hg_drain {
    uv_loop_t *loop;
    struct hg_spool *spool;
    struct hg_sink *sink;
    uv_timer_t tick;               /* retries and backlog pulls */
    struct item *items;
    uint64_t n_items;
    bool recovered_done;
    bool closing;
    void (*free_done)(void *arg);
    void *free_arg;
};

static void item_publish(struct item *it);

static void item_free(struct item *it)
{
    struct hg_drain *d = it->drain;
    if (it->prev)
        it->prev->next = it->next;
    else
        d->items = it->next;
    if (it->next)
        it->next->prev = it->prev;
    d->n_items--;
    for (size_t i = 0; i < it->n_events; i++) {
        struct item_event *e = &it->events[i];
        free(e->event_id);
        free(e->routing_key);
        free(e->kind);
        free(e->type);
        free(e->correlation_id);
        free(e->priority_class);
        free(e->json);
    }
    free(it->events);
    if (it->root)
        json_decref(it->root);
    free(it->request_id);
    free(it->tenant);
    free(it->provider);
    free(it->body);
    free(it);
}

static void item_done(struct item *it)
{
    hg_spool_release(it->drain->spool, it->spool_id);
    item_free(it);
}

static uint64_t backoff_ms(unsigned attempts)
{
    uint64_t ms = RETRY_MIN_MS;
    for (unsigned i = 1; i < attempts && ms < RETRY_MAX_MS; i++)
        ms *= 2;
    if (ms > RETRY_MAX_MS)
        ms = RETRY_MAX_MS;
    /* Full jitter on half the delay: retries of many records do not arrive in lockstep. */
    return ms / 2 + hg_random_u64() % (ms / 2 + 1);
}

static void item_retry_later(struct item *it)
{
    it->attempts++;
    it->failed = false;
    it->retry_at_ms = uv_now(it->drain->loop) + backoff_ms(it->attempts);
    if (it->attempts == 1 || it->attempts % 20 == 0) {
        char n[24];
        snprintf(n, sizeof(n), "%u", it->attempts);
        hg_warn(it->request_id, "publish failed; record stays in the spool and is retried", "attempts", n, NULL);
    }
}

static void on_published(void *arg, int status)
{
    struct item_event *e = arg;
    struct item *it = e->item;
    e->in_flight = false;
    it->in_flight--;
    if (status == 0) {
        e->confirmed = true;
        char labels[256], esc[128];
        snprintf(labels, sizeof(labels), "provider=\"%s\",tenant=\"%s\",type=\"%s\",status=\"published\"",
                 it->provider, hg_metrics_label_escape(esc, sizeof(esc), it->tenant), e->type);
        hg_metric_inc(HG_M_WEBHOOK_RECEIVED, labels);
    } else {
        it->failed = true;
    }
    if (it->in_flight > 0)
        return;
    if (it->failed) {
        item_retry_later(it);
        return;
    }
    for (size_t i = 0; i < it->n_events; i++)
        if (!it->events[i].confirmed)
            return;
    item_done(it);
}

static char *dup_or_empty(const char *s) { return hg_xstrdup(s ? s : ""); }

static int on_event(void *arg, const struct hg_event *ev, json_t *doc)
{
    struct item *it = arg;
    char *json = json_dumps(doc, JSON_COMPACT);
    if (json == NULL)
        hg_oom(__FILE__, __LINE__);
    it->events = hg_xrealloc(it->events, (it->n_events + 1) * sizeof(*it->events));
    struct item_event *e = &it->events[it->n_events++];
    memset(e, 0, sizeof(*e));
    e->item = it;
    e->event_id = dup_or_empty(ev->event_id);
    e->routing_key = dup_or_empty(ev->routing_key);
    e->kind = dup_or_empty(ev->kind);
    e->type = dup_or_empty(ev->type);
    e->correlation_id = dup_or_empty(ev->correlation_id);
    e->priority_class = dup_or_empty(ev->priority_class);
    e->timestamp_s = ev->timestamp_s;
    e->priority = ev->priority;
    e->json = json;
    e->json_len = strlen(json);
    return 0;
}

/* A record that can never become events: publish one dead-letter event carrying it whole. */
static void item_dead_letter(struct item *it, const char *reason)
{
    json_t *doc = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s#}", "schema_version", "1", "kind", "dead_letter",
                            "type", "unparseable", "reason", reason, "provider", it->provider, "tenant",
                            it->tenant, "correlation_id", it->request_id, "raw_body", it->body,
                            (int)it->body_len);
    if (doc == NULL) {
        /* The body is not valid UTF-8: keep it as an escaped hex-free note instead of losing the record. */
        doc = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s}", "schema_version", "1", "kind", "dead_letter", "type",
                        "unparseable", "reason", reason, "provider", it->provider, "tenant", it->tenant,
                        "correlation_id", it->request_id);
    }
    char id[64];
    snprintf(id, sizeof(id), "dead:%s", it->request_id);
    struct hg_event ev = {
        .event_id = id,
        .routing_key = "dead_letter.unparseable",
        .kind = "dead_letter",
        .type = "unparseable",
        .tenant = it->tenant,
        .provider = it->provider,
        .correlation_id = it->request_id,
        .timestamp_s = it->received_at_ns / 1000000000ull,
        .priority_class = "medium",
    };
    on_event(it, &ev, doc);
    json_decref(doc);
    hg_error(it->request_id, "record cannot be normalized; dead-lettered", "reason", reason, NULL);
}

static void item_build(struct item *it)
{
    if (it->root == NULL) {
        char reason[256];
        it->root = hg_whatsapp_parse(it->body, it->body_len, reason, sizeof(reason));
        if (it->root == NULL) {
            item_dead_letter(it, reason);
            return;
        }
    }
    struct hg_event_meta meta = {
        .tenant = it->tenant,
        .request_id = it->request_id,
        .received_at_ns = it->received_at_ns,
    };
    int n = hg_whatsapp_normalize(it->root, &meta, on_event, it);
    json_decref(it->root);
    it->root = NULL;
    if (n < 0)
        item_dead_letter(it, hg_strerror(n));
}

static void item_publish(struct item *it)
{
    struct hg_drain *d = it->drain;
    it->retry_at_ms = 0;
    it->failed = false;
    /* Hold one count while publishing so a callback cannot finish the item under our feet. */
    it->in_flight++;
    for (size_t i = 0; i < it->n_events; i++) {
        struct item_event *e = &it->events[i];
        if (e->confirmed || e->in_flight)
            continue;
        struct hg_event ev = {
            .event_id = e->event_id,
            .routing_key = e->routing_key,
            .kind = e->kind,
            .type = e->type,
            .tenant = it->tenant,
            .provider = it->provider,
            .correlation_id = e->correlation_id,
            .timestamp_s = e->timestamp_s,
            .priority = e->priority,
            .priority_class = e->priority_class,
            .json = e->json,
            .json_len = e->json_len,
        };
        int rc = hg_sink_publish(d->sink, &ev, on_published, e);
        if (rc == 0) {
            e->in_flight = true;
            it->in_flight++;
        } else {
            it->failed = true;
        }
    }
    it->in_flight--;
    if (it->in_flight > 0)
        return;
    if (it->failed) {
        item_retry_later(it);
        return;
    }
    for (size_t i = 0; i < it->n_events; i++)
        if (!it->events[i].confirmed)
            return;
    item_done(it); /* a record with no events at all */
}

static struct item *item_new(struct hg_drain *d, uint64_t spool_id, const struct hg_drain_record *rec)
{
    struct item *it = hg_xcalloc(1, sizeof(*it));
    it->drain = d;
    it->spool_id = spool_id;
    it->request_id = dup_or_empty(rec->request_id);
    it->tenant = dup_or_empty(rec->tenant);
    it->provider = dup_or_empty(rec->provider);
    it->received_at_ns = rec->received_at_ns;
    it->body = hg_xstrndup(rec->body, rec->body_len);
    it->body_len = rec->body_len;
    it->next = d->items;
    if (d->items)
        d->items->prev = it;
    d->items = it;
    d->n_items++;
    return it;
}

void hg_drain_submit(struct hg_drain *d, uint64_t spool_id, const struct hg_drain_record *rec, json_t *root)
{
    struct item *it = item_new(d, spool_id, rec);
    it->root = root;
    item_build(it);
    item_publish(it);
}

static void pull_recovered(struct hg_drain *d)
{
    for (int i = 0; i < RECOVER_BATCH && d->n_items < INFLIGHT_PULL_LIMIT; i++) {
        struct hg_spool_entry *e;
        int rc = hg_spool_recovered_next(d->spool, &e);
        if (rc == HG_ERR_NOT_FOUND) {
            d->recovered_done = true;
            return;
        }
        if (rc != 0) {
            hg_error(NULL, "reading a recovered spool record failed", "error", hg_strerror(rc), NULL);
            return;
        }
        struct hg_drain_record rec = {
            .request_id = e->request_id,
            .tenant = e->tenant,
            .provider = e->provider,
            .received_at_ns = e->received_at_ns,
            .body = e->body,
            .body_len = e->body_len,
        };
        uint64_t id = e->id;
        struct item *it = item_new(d, id, &rec);
        hg_spool_entry_free(e);
        item_build(it);
        item_publish(it);
    }
}

static void on_tick(uv_timer_t *t)
{
    struct hg_drain *d = t->data;
    if (d->closing)
        return;
    uint64_t now = uv_now(d->loop);
    for (struct item *it = d->items, *next; it; it = next) {
        next = it->next;
        if (it->retry_at_ms && it->retry_at_ms <= now && it->in_flight == 0)
            item_publish(it);
    }
    if (!d->recovered_done)
        pull_recovered(d);
}

int hg_drain_open(uv_loop_t *loop, struct hg_spool *spool, struct hg_sink *sink, struct hg_drain **out)
{
    struct hg_drain *d = hg_xcalloc(1, sizeof(*d));
    d->loop = loop;
    d->spool = spool;
    d->sink = sink;
    uv_timer_init(loop, &d->tick);
    d->tick.data = d;
    uv_timer_start(&d->tick, on_tick, 0, TICK_MS);
    *out = d;
    return 0;
}

uint64_t hg_drain_inflight(const struct hg_drain *d)
{
    return d->n_items;
}

static void on_tick_closed(uv_handle_t *h)
{
    struct hg_drain *d = h->data;
    while (d->items)
        item_free(d->items);
    void (*done)(void *) = d->free_done;
    void *arg = d->free_arg;
    free(d);
    if (done)
        done(arg);
}

void hg_drain_free(struct hg_drain *d, void (*done)(void *arg), void *arg)
{
    d->closing = true;
    d->free_done = done;
    d->free_arg = arg;
    uv_close((uv_handle_t *)&d->tick, on_tick_closed);
}

/*
 * The drain: spool record → (archive raw body) + (for each event: dedup → enrich → publish) →
 * release. See drain.h for the contract.
 *
 * Every record is an `item` with independent steps: the archive (when S3 is configured) and one
 * small state machine per event. Each asynchronous step holds one count in `outstanding`; when the
 * count drops to zero the item is either complete (release it) or has a failed step (retry the
 * steps not done yet, after a backoff).
 *
 * Enrichment (State Manager mapping, media fetch) edits the event document; it is serialized once,
 * just before its first publish, and kept as text for any retry. Normalization itself does not run
 * inside hg_drain_submit (that is the spool's fsync callback, answering a batch of requests): the
 * record is queued and built from an idle handle, a bounded batch per loop iteration.
 *
 * Sections, in order:
 *   records          item lifecycle: the retry waiting list, free, ack, settle (retry or release)
 *   events           publish, its callback, dead-lettering what the sink refuses for good
 *   dedup            Redis two-phase dedup in front of enrich + publish
 *   raw archive      the body's PutObject to S3
 *   building events  normalize (or dead-letter) a record into item events
 *   intake           step an item; submit, the build queue, recovered records, the 50 ms tick
 *   open and close
 *
 * The enrichment step between dedup and publish (State Manager mapping, media fetch with the Graph
 * token lookup) is in enrich.c; the structs and the calls each file makes into the other are in
 * drain_internal.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clients/redis.h"
#include "clients/s3.h"
#include "core/backoff.h"
#include "core/common.h"
#include "core/err.h"
#include "core/log.h"
#include "core/time.h"
#include "core/uuid.h"
#include "ops/metrics.h"
#include "conf/conf.h"
#include "providers/provider.h"
#include "rules/rules.h"
#include "drain/drain.h"
#include "drain/drain_internal.h"
#include "sink/sink.h"
#include "spool/spool.h"

#define RECOVER_BATCH 256          /* recovered records taken per pull */
#define DEFAULT_MAX_IN_MEMORY 4096 /* records held at once; the rest wait in the spool (backlog) */
#define DEFAULT_MAX_BYTES (128ull << 20) /* and the bytes they take */
#define ARCHIVE_SLOTS 256          /* archive PutObjects in flight; past it records park by id */
#define RETRY_MIN_MS 100
#define RETRY_MAX_MS 30000
#define TICK_MS 50
#define DEDUP_PENDING_TTL_MS 60000 /* a crashed attempt's claim expires after this */
#define MAX_REJECTIONS 3           /* refusals by the broker before an event is dead-lettered */
#define BUILD_BATCH 64             /* records normalized per loop iteration, at most */
/* Body bytes normalized on the loop per iteration (~80 ns a byte: a few ms), so one busy turn
 * cannot hold /health and every other connection of the worker for long. */
#define BUILD_TURN_BYTES (128 * 1024)
/* A record at least this big is parsed and normalized on the threadpool: 25,000 messages in one
 * 2.6 MB webhook took ~220 ms to normalize, far past any loop turn. */
#define BUILD_JOB_BYTES (32 * 1024)
/* Events a round starts per loop turn (dedup, enrich, serialize, publish: ~10 us each); the rest
 * start at the next turns. */
#define STEP_SLICE 256

static void item_step(struct item *it);
static void archive_or_park(struct item *it);
static void unpark(struct hg_drain *d, bool probe);
static void item_build(struct item *it);
static void build_enqueue(struct hg_drain *d, struct item *it);
static void item_mem(struct item *it, ptrdiff_t delta);
static struct item *item_new(struct hg_drain *d, uint64_t spool_id, const struct hg_record *rec);
static struct item *item_from_entry(struct hg_drain *d, struct hg_spool_entry *e);

/* ---- records ---- */

void drain_event_set_state(struct item_event *e, enum event_state s)
{
    e->state = s;
    if (s == EV_DONE) {
        /* Never sent again: its text goes now, not all at once with a record of thousands. */
        if (e->json != NULL)
            item_mem(e->item, -(ptrdiff_t)e->json_len);
        free(e->json);
        e->json = NULL;
        if (e->conv)
            order_done(e);
    }
}

/* Wait for a retry at `at` (loop time), in the drain's waiting list. */
static void item_wait(struct item *it, uint64_t at)
{
    struct hg_drain *d = it->drain;
    if (it->retry_at_ms == 0)
        hg_list_insert_head(&d->waiting, &it->wnode);
    it->retry_at_ms = at ? at : 1; /* 0 means "not waiting" */
}

static void item_unwait(struct item *it)
{
    if (it->retry_at_ms == 0)
        return;
    hg_list_unlink(&it->wnode);
    it->retry_at_ms = 0;
}

static void wake_intake(struct hg_drain *d);

/* Count `delta` bytes more (or fewer) for the item against the drain's max_bytes. */
static void item_mem(struct item *it, ptrdiff_t delta)
{
    it->mem += (size_t)delta;
    it->drain->mem_bytes += (uint64_t)(int64_t)delta;
}

/* The item's document arena as it is now (0 once released): the counted part follows it. */
static void item_mem_arena(struct item *it)
{
    size_t now = it->doc ? it->doc->arena.used : 0;
    item_mem(it, (ptrdiff_t)now - (ptrdiff_t)it->arena_counted);
    it->arena_counted = now;
}

/* Room for one more record: under both caps, or nothing held at all (one record alone may be
 * bigger than max_bytes; it must still go through). */
static bool drain_has_room(const struct hg_drain *d)
{
    return d->n_items == 0 || (d->n_items < d->max_in_memory && d->mem_bytes < d->max_bytes);
}

static void item_free(struct item *it)
{
    struct hg_drain *d = it->drain;
    d->mem_bytes -= it->mem;
    item_unwait(it);
    hg_list_unlink(&it->node);
    d->n_items--;
    /* Room again: the backlog waiting in the spool comes in from the loop's idle phase. */
    if (!d->closing && !hg_spool_backlog_empty(d->b.spool))
        wake_intake(d);
    /* Last first: leaving an event's conversation must not start a later event of this item. */
    for (size_t i = it->n_events; i-- > 0;)
        if (it->events[i].conv)
            order_done(&it->events[i]);
    for (size_t i = 0; i < it->n_events; i++) {
        struct item_event *e = &it->events[i];
        enrich_event_free(e);
        free(e->strings);
        free(e->json);
    }
    free(it->events);
    hg_json_doc_free(it->doc);
    free(it);
}

/* A record's n-th failed round (n >= 1) waits [d/2, d], d = 100 ms doubled per round up to 30 s:
 * jitter on half the delay, so retries of many records do not arrive in lockstep. */
static uint64_t backoff_ms(unsigned attempts)
{
    static const struct hg_backoff policy = { RETRY_MIN_MS, RETRY_MAX_MS, HG_BACKOFF_EQUAL };
    return hg_backoff_ms(&policy, attempts - 1, hg_random_u64());
}

static bool events_done(const struct item *it)
{
    for (size_t i = 0; i < it->n_events; i++)
        if (it->events[i].state != EV_DONE)
            return false;
    return true;
}

/* ack = broker: answer the request once (success when every event is confirmed). */
static void item_ack(struct item *it, int status)
{
    if (it->ack == NULL)
        return;
    hg_drain_ack_cb ack = it->ack;
    it->ack = NULL;
    ack(it->ack_arg, status);
}

static bool item_complete(const struct item *it)
{
    if (it->archive != AR_NONE && it->archive != AR_DONE)
        return false;
    for (size_t i = 0; i < it->n_events; i++)
        if (it->events[i].state != EV_DONE)
            return false;
    return true;
}

/* An asynchronous step finished: decide what happens to the item when it was the last one. */
void drain_item_settle(struct item *it)
{
    if (it->ephemeral) {
        if (events_done(it))
            item_ack(it, 0);
        else if (it->failed)
            item_ack(it, HG_ERR_UNAVAILABLE);
        if (it->outstanding == 0) {
            item_ack(it, HG_ERR_UNAVAILABLE); /* no-op unless nothing decided yet */
            item_free(it);
        }
        return;
    }
    if (it->outstanding > 0)
        return;
    if (item_complete(it)) {
        hg_spool_release(it->drain->b.spool, it->spool_id);
        item_free(it);
        return;
    }
    if (it->archive == AR_PENDING && events_done(it) && !it->drain->closing) {
        archive_or_park(it);
        return;
    }
    if (it->failed) {
        it->attempts++;
        it->failed = false;
        item_wait(it, uv_now(it->drain->loop) + backoff_ms(it->attempts));
        if (it->attempts == 1 || it->attempts % 20 == 0) {
            char n[24];
            snprintf(n, sizeof(n), "%u", it->attempts);
            hg_warn(it->request_id, "hand-on step failed; record stays in the spool and is retried", "attempts", n,
                    NULL);
        }
    }
}

/* ---- events: publish and dead-lettering ---- */

/* A metrics label set assembled by copies; what does not fit is cut (the buffer holds any real one). */
struct label_buf {
    char *p;
    size_t cap, len;
};

static void label_add(struct label_buf *b, const char *lit, const char *value)
{
    const char *parts[2] = { lit, value };
    for (int i = 0; i < 2; i++) {
        size_t n = strlen(parts[i]);
        if (n > b->cap - 1 - b->len)
            n = b->cap - 1 - b->len;
        memcpy(b->p + b->len, parts[i], n);
        b->len += n;
    }
    b->p[b->len] = '\0';
}

static void on_published(void *arg, int status)
{
    struct item_event *e = arg;
    struct item *it = e->item;
    struct hg_drain *d = it->drain;
    it->outstanding--;
    if (status == 0) {
        if (d->sink_failing) {
            /* The sink works again, whether or not it ever said "not ready" in between. */
            d->sink_failing = false;
            d->sink_recovered = true;
        }
        drain_event_set_state(e, EV_DONE);
        char labels[384], esc[128];
        /* By copies, not snprintf (it was the biggest cost of this callback). */
        struct label_buf lb = { labels, sizeof(labels), 0 };
        label_add(&lb, "provider=\"", it->provider);
        label_add(&lb, "\",tenant=\"", hg_metrics_label_escape(esc, sizeof(esc), it->tenant));
        label_add(&lb, "\",type=\"", hg_metrics_label_escape(esc, sizeof(esc), e->type));
        label_add(&lb, "\",status=\"published\"", "");
        hg_metric_inc(HG_M_WEBHOOK_RECEIVED, labels);
        if (d->b.redis && !d->closing)
            hg_redis_dedup_done(d->b.redis, e->dedup_key, d->b.dedup_ttl_ms, NULL, NULL);
    } else {
        drain_event_set_state(e, EV_NEW);
        it->failed = true;
        if (status != HG_ERR_REJECTED)
            d->sink_failing = true;
        if (d->b.redis && !d->closing)
            hg_redis_dedup_abort(d->b.redis, e->dedup_key);
        /* Poison: an event the broker keeps refusing goes to the dead-letter path, not round forever. */
        if (status == HG_ERR_REJECTED && ++e->rejections >= MAX_REJECTIONS && d->b.sink->ops->publish_dead &&
            e->dead_reason == NULL) {
            e->dead_reason = "rejected by the broker";
            hg_error(it->request_id, "event refused by the broker; dead-lettering it", "event_id", e->event_id, NULL);
        }
    }
    drain_item_settle(it);
}

/* The event cannot go on this round: back to NEW, its dedup claim released, the item retried. */
void drain_event_fail(struct item_event *e)
{
    struct item *it = e->item;
    drain_event_set_state(e, EV_NEW);
    it->failed = true;
    if (it->drain->b.redis && !it->drain->closing)
        hg_redis_dedup_abort(it->drain->b.redis, e->dedup_key);
}

/*
 * The sink refuses this event for good (too big for it, or malformed for it): it must not go round
 * forever and hold its record in the spool. First the dead-letter path with the whole event; when
 * that refuses it too (or there is none), a small summary that names it, so consumers learn of it
 * (the raw body stays in the spool until then, and in the S3 archive after). False: nothing left.
 */
static bool event_escalate(struct item_event *e, int rc)
{
    struct item *it = e->item;
    struct hg_drain *d = it->drain;
    const char *reason = rc == HG_ERR_TOO_BIG ? "too big for the sink" : "refused by the sink";
    if (e->dead_reason == NULL && d->b.sink->ops->publish_dead) {
        e->dead_reason = reason;
        hg_error(it->request_id, "event refused by the sink for good; dead-lettering it", "event_id", e->event_id,
                 "error", hg_strerror(rc), NULL);
        return true;
    }
    if (e->summarized) {
        hg_error(it->request_id, "event dropped: the sink refuses even its dead-letter summary", "event_id",
                 e->event_id, "error", hg_strerror(rc), NULL);
        return false;
    }
    json_t *summary = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:I}", "schema_version", "1",
                                "event_id", e->event_id, "kind", "dead_letter", "type", "unpublishable",
                                "reason", reason, "event_type", e->type, "provider", it->provider, "tenant",
                                it->tenant, "correlation_id", it->request_id, "size", (json_int_t)e->json_len);
    if (summary == NULL)
        hg_oom(__FILE__, __LINE__);
    if (e->json != NULL)
        item_mem(it, -(ptrdiff_t)e->json_len);
    free(e->json);
    e->json = json_dumps(summary, JSON_COMPACT);
    json_decref(summary);
    if (e->json == NULL)
        hg_oom(__FILE__, __LINE__);
    e->json_len = strlen(e->json);
    item_mem(it, (ptrdiff_t)e->json_len);
    e->summarized = true;
    if (e->dead_reason == NULL) {
        /* No dead-letter path (ndjson): the summary goes out as a dead_letter event of its own. */
        e->dead_reason = reason;
        e->routing_key = "dead_letter.unpublishable";
    }
    hg_error(it->request_id, "event too big or malformed even for the dead-letter path; sending a summary",
             "event_id", e->event_id, NULL);
    return true;
}

/*
 * Once every event is serialized the envelope and the documents are no longer read: the arena
 * goes now, not when the record is released, so a backlog (a broker down, a slow S3) holds each
 * record's body and event texts, not its parse tree.
 */
static void item_doc_release(struct item *it)
{
    /* A count, not a walk over the events: walking them at every publish was quadratic in the
     * events of a record (25,000 messages in one webhook held the loop for seconds). */
    if (it->n_docs > 0)
        return;
    hg_json_doc_free(it->doc);
    it->doc = NULL;
    item_mem_arena(it);
}

void drain_event_publish(struct item_event *e)
{
    struct item *it = e->item;
    struct hg_drain *d = it->drain;
    if (e->json == NULL) {
        /* Frozen here, once: enrichment is in the document now; a retry sends the same bytes. */
        e->json = hg_json_dumps(e->doc, &e->json_len);
        if (e->json == NULL)
            hg_oom(__FILE__, __LINE__);
        item_mem(it, (ptrdiff_t)e->json_len);
        e->doc = NULL;
        it->n_docs--;
        item_doc_release(it);
    }
    for (;;) {
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
        e->publish_start_ns = hg_time_mono_ns();
        int rc = HG_ERR_CLOSED;
        if (!d->closing) {
            if (e->dead_reason && d->b.sink->ops->publish_dead)
                rc = d->b.sink->ops->publish_dead(d->b.sink, &ev, e->dead_reason, on_published, e);
            else
                rc = hg_sink_publish(d->b.sink, &ev, on_published, e);
        }
        if (rc == 0) {
            drain_event_set_state(e, EV_PUBLISHING);
            it->outstanding++;
            return;
        }
        if ((rc == HG_ERR_INVALID || rc == HG_ERR_TOO_BIG) && !d->closing) {
            if (event_escalate(e, rc))
                continue;
            drain_event_set_state(e, EV_DONE); /* logged: nothing can carry it */
            return;
        }
        if (!d->closing)
            d->sink_failing = true;
        drain_event_fail(e);
        return;
    }
}

/* ---- dedup ---- */

/* Enrichment is over (enrich_start's completion): publish, or go round again later. */
static void on_enriched(struct item_event *e, bool retry)
{
    struct item *it = e->item;
    it->outstanding--; /* the hold event_go took for the whole enrichment */
    if (retry) {
        drain_event_fail(e);
    } else {
        e->enriched = true;
        drain_event_publish(e);
    }
    /* Inside enrich_start, event_go's caller settles the item (it may be freed by a settle). */
    if (!e->in_enrich_start)
        drain_item_settle(it);
}

/* Dedup said this event is new here: enrich it (first time) and publish it. */
static void event_go(struct item_event *e)
{
    if (e->item->drain->closing) {
        drain_event_fail(e);
    } else if (e->enriched) {
        drain_event_publish(e);
    } else {
        drain_event_set_state(e, EV_ENRICH);
        e->item->outstanding++;
        e->in_enrich_start = true;
        enrich_start(e, on_enriched);
        e->in_enrich_start = false;
    }
}

static void on_dedup(void *arg, const struct hg_redis_dedup_result *res)
{
    struct item_event *e = arg;
    struct item *it = e->item;
    it->outstanding--;
    if (res->fallback)
        hg_metric_inc(HG_M_REDIS_FALLBACK, "op=\"dedup\"");
    switch (res->status) {
    case HG_REDIS_DEDUP_NEW:
        if (it->drain->closing) {
            drain_event_set_state(e, EV_NEW);
            it->failed = true;
        } else {
            event_go(e);
        }
        break;
    case HG_REDIS_DEDUP_DUPLICATE_DONE:
        hg_metric_inc(HG_M_DEDUP_DUPLICATES, NULL);
        hg_debug(it->request_id, "duplicate event skipped", "event_id", e->event_id, NULL);
        drain_event_set_state(e, EV_DONE);
        break;
    default:
        /* Another attempt holds the id (or a crashed one did): look again after a backoff. */
        drain_event_set_state(e, EV_NEW);
        it->failed = true;
        break;
    }
    drain_item_settle(it);
}

static void event_start(struct item_event *e)
{
    struct item *it = e->item;
    struct hg_drain *d = it->drain;
    if (order_hold(e))
        return;
    if (d->b.redis == NULL) {
        event_go(e);
        return;
    }
    if (e->dedup_key[0] == '\0' &&
        hg_redis_dedup_key(e->dedup_key, sizeof(e->dedup_key), it->tenant, e->event_id) != 0) {
        /* An id too long to be a key cannot be deduplicated: publish it (at least once). */
        event_go(e);
        return;
    }
    if (!d->closing && hg_redis_dedup_begin(d->b.redis, e->dedup_key, DEDUP_PENDING_TTL_MS, on_dedup, e) == 0) {
        drain_event_set_state(e, EV_DEDUP);
        it->outstanding++;
    } else {
        drain_event_set_state(e, EV_NEW);
        it->failed = true;
    }
}

/* ---- raw archive ---- */

static void on_bucket(void *arg, const struct hg_s3_result *res)
{
    struct hg_drain *d = arg;
    if (res->err == 0)
        d->bucket_checked = true;
    else
        hg_warn(NULL, "archive bucket not available yet", "bucket", d->bucket, "error", hg_strerror(res->err), NULL);
}

static void on_archived(void *arg, const struct hg_s3_result *res)
{
    struct item *it = arg;
    struct hg_drain *d = it->drain;
    it->outstanding--;
    d->archives_in_flight--;
    d->archive_failing = res->err != 0;
    if (res->err == 0) {
        it->archive = AR_DONE;
        hg_metric_observe(HG_M_MINIO_UPLOAD_DURATION, "kind=\"archive\"",
                          (double)(hg_time_mono_ns() - it->archive_start_ns) / 1e9);
    } else {
        it->archive = AR_PENDING;
        it->failed = true;
        if (strcmp(res->code, "NoSuchBucket") == 0 && !d->closing)
            d->bucket_checked = false;
        hg_debug(it->request_id, "archive failed", "error", hg_strerror(res->err), "code", res->code, NULL);
    }
    drain_item_settle(it);
    unpark(d, false);
}

/* Object key webhooks-inbound/{tenant}/{yyyy-MM-dd}/{timestamp}-{messageId}.json */
static void archive_key(const struct item *it, char *out, size_t cap)
{
    char date[11];
    hg_time_date(date, it->received_at_ns);
    const char *id = it->n_events ? it->events[0].event_id : it->request_id;
    snprintf(out, cap, "webhooks-inbound/%s/%s/%llu-%s.json", it->tenant, date,
             (unsigned long long)(it->received_at_ns / 1000000ull), id);
}

static void archive_start(struct item *it)
{
    struct hg_drain *d = it->drain;
    if (!d->bucket_checked) {
        /* Created once per worker (and again after NoSuchBucket); the put below retries meanwhile. */
        d->bucket_checked = true;
        hg_s3_ensure_bucket(d->b.s3, d->bucket, on_bucket, d);
    }
    char key[1024], received[24], sig[160] = "";
    archive_key(it, key, sizeof(key));
    snprintf(received, sizeof(received), "%llu", (unsigned long long)(it->received_at_ns / 1000000ull));
    /* The signature header is what a later re-verification needs. */
    const char *h = it->headers ? strstr(it->headers, "X-Hub-Signature-256: ") : NULL;
    if (h) {
        h += strlen("X-Hub-Signature-256: ");
        size_t n = strcspn(h, "\n");
        if (n < sizeof(sig))
            memcpy(sig, h, n), sig[n] = '\0';
    }
    struct hg_http_header meta[] = {
        { "x-amz-meta-request-id", it->request_id },
        { "x-amz-meta-tenant", it->tenant },
        { "x-amz-meta-provider", it->provider },
        { "x-amz-meta-received-at-ms", received },
        { "x-amz-meta-x-hub-signature-256", sig },
    };
    size_t nmeta = sig[0] ? HG_ARRAY_SIZE(meta) : HG_ARRAY_SIZE(meta) - 1;
    it->archive_start_ns = hg_time_mono_ns();
    if (!d->closing && hg_s3_put_object(d->b.s3, d->bucket, key, "application/json", meta, nmeta, it->body,
                                        it->body_len, on_archived, it) == 0) {
        it->archive = AR_IN_FLIGHT;
        it->outstanding++;
        d->archives_in_flight++;
    } else {
        it->failed = true;
    }
}

/*
 * Every event of the record is out; only its archive is left. Start it when a slot is free and
 * S3 answers; otherwise park the record: keep its spool id only (the record stays unreleased in
 * the spool) and free the rest, so events keep flowing at the broker's pace whatever S3 does.
 */
static void archive_or_park(struct item *it)
{
    struct hg_drain *d = it->drain;
    if (!it->failed && !d->archive_failing && d->archives_in_flight < ARCHIVE_SLOTS) {
        it->outstanding++;
        archive_start(it);
        it->outstanding--;
        if (it->outstanding > 0)
            return;
    }
    if (d->parked_head + d->parked_len == d->parked_cap) {
        if (d->parked_head > 0) {
            memmove(d->parked, d->parked + d->parked_head, d->parked_len * sizeof(*d->parked));
            d->parked_head = 0;
        } else {
            d->parked_cap = d->parked_cap ? d->parked_cap * 2 : 256;
            d->parked = hg_xrealloc(d->parked, d->parked_cap * sizeof(*d->parked));
        }
    }
    d->parked[d->parked_head + d->parked_len++] = it->spool_id;
    item_free(it);
}

/*
 * Bring parked records back while archive slots are free: read from the spool, rebuilt for the
 * archive key (their events are marked done: they went out before), then archived. While S3
 * fails, only a probe from the tick (one upload at a time) until an upload succeeds again.
 */
static void drain_unhold(struct hg_drain *d);

/* A parked record read back (hg_spool_read_async, on the threadpool). */
static void on_unparked(void *arg, uint64_t id, int status, struct hg_spool_entry *e, bool last)
{
    struct hg_drain *d = arg;
    if (last)
        d->unpark_reading = false;
    if (status != 0 || d->closing) {
        /* Unreadable now (logged by the spool), or closing: it stays unreleased in the spool and
         * the next start recovers it. Its archive slot goes back. */
        d->archives_in_flight--;
        hg_spool_entry_free(e);
    } else {
        struct item *it = item_from_entry(d, e);
        /* Its archive key names its first event: built again, in the queue (a big record on the
         * threadpool), then archived (item_after_build, which hands the slot to archive_start). */
        it->archive_only = true;
        build_enqueue(d, it);
        wake_intake(d);
    }
    if (last) {
        if (!d->closing)
            unpark(d, false);
        drain_unhold(d);
    }
}

static void unpark(struct hg_drain *d, bool probe)
{
    /* One read at a time; the records come back through on_unparked, the loop never reads disk. */
    uint64_t ids[RECOVER_BATCH];
    size_t n = 0;
    while (n < RECOVER_BATCH && d->parked_len > 0 && !d->closing && !d->unpark_reading) {
        if (d->archives_in_flight >= ARCHIVE_SLOTS)
            break;
        if (d->archive_failing && !(probe && d->archives_in_flight == 0))
            break;
        probe = false;
        ids[n++] = d->parked[d->parked_head++];
        if (--d->parked_len == 0)
            d->parked_head = 0;
        d->archives_in_flight++; /* its slot, from now: unpark must not read more than fit */
    }
    if (n == 0)
        return;
    if (hg_spool_read_async(d->b.spool, ids, n, on_unparked, d) != 0) {
        d->archives_in_flight -= (unsigned)n; /* closing: they stay in the spool for the next start */
        return;
    }
    d->unpark_reading = true;
    d->handles_open++; /* the drain is not freed before the read's callbacks ran */
}

/* ---- building events ---- */

/*
 * The event's identity strings, copied into one allocation (not six): they outlive the document
 * arena, which goes as soon as every event of the record is serialized.
 */
static void event_strings(struct item_event *e, const char *const src[6], const char **dst[6])
{
    size_t len[6], total = 0;
    for (int i = 0; i < 6; i++)
        total += (len[i] = src[i] ? strlen(src[i]) : 0) + 1;
    char *p = e->strings = hg_xmalloc(total);
    for (int i = 0; i < 6; i++) {
        memcpy(p, src[i] ? src[i] : "", len[i]);
        p[len[i]] = '\0';
        *dst[i] = p;
        p += len[i] + 1;
    }
}

static int on_event(void *arg, const struct hg_event *ev, struct hg_json *doc)
{
    struct item *it = arg;
    int priority = ev->priority;
    const char *priority_class = ev->priority_class;
    /* Closing while a big record is built on the threadpool: stop its walk here. */
    if (atomic_load_explicit(&it->drain->cancel_build, memory_order_relaxed))
        return HG_ERR_CLOSED;
    /* Tenant rules set priority and tags before the document is frozen into its JSON text. They
     * come from it->rules, not the worker's config pointer: this may run on the threadpool. */
    if (it->apply_rules && strcmp(ev->kind, "dead_letter") != 0)
        hg_rules_apply(it->rules, &it->doc->arena, doc, &priority, &priority_class);
    if (it->n_events == it->events_cap) {
        /* Doubling: one realloc per event copied the whole array each time (quadratic). The array
         * may move only here, while the record is being built: nothing points into it yet. */
        it->events_cap = it->events_cap ? it->events_cap * 2 : 1;
        it->events = hg_xrealloc(it->events, it->events_cap * sizeof(*it->events));
    }
    struct item_event *e = &it->events[it->n_events++];
    memset(e, 0, sizeof(*e));
    e->item = it;
    const char *const src[6] = { ev->event_id, ev->routing_key, ev->kind, ev->type, ev->correlation_id,
                                 priority_class ? priority_class : "medium" };
    const char **dst[6] = { &e->event_id, &e->routing_key, &e->kind, &e->type, &e->correlation_id,
                            &e->priority_class };
    event_strings(e, src, dst);
    e->timestamp_s = ev->timestamp_s;
    e->priority = priority;
    e->doc = doc;
    it->n_docs += doc != NULL;
    e->conv_id = hg_json_str(hg_json_get(hg_json_get(doc, "conversation"), "id"));
    /* Nothing to add to it: the document is final (and needs no enrichment round). */
    e->enriched = !enrich_wants_state(e) && !enrich_wants_media(e) && !enrich_wants_sequence(e);
    return 0;
}

/* A record that can never become events: one dead-letter event carrying it whole, with the reason. */
static void item_dead_letter(struct item *it, const char *reason)
{
    json_t *doc = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s%}", "schema_version", "1", "kind", "dead_letter",
                            "type", "unparseable", "reason", reason, "provider", it->provider, "tenant",
                            it->tenant, "correlation_id", it->request_id, "raw_body", it->body, it->body_len);
    if (doc == NULL) {
        /* The body is not valid UTF-8: keep the record's identity and reason; the archive has the bytes. */
        doc = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s}", "schema_version", "1", "kind", "dead_letter", "type",
                        "unparseable", "reason", reason, "provider", it->provider, "tenant", it->tenant,
                        "correlation_id", it->request_id);
    }
    if (it->doc == NULL)
        it->doc = hg_json_doc_new(0);
    /* After a normalization that ran out of arena, the dead letter must still be made. */
    it->doc->arena.cap = 0;
    struct hg_json *hdoc = doc ? hg_json_from_jansson(&it->doc->arena, doc) : NULL;
    json_decref(doc);
    if (hdoc == NULL)
        hg_oom(__FILE__, __LINE__);
    char id[160];
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
    on_event(it, &ev, hdoc);
    it->events[it->n_events - 1].dead_reason = "unparseable";
    hg_error(it->request_id, "record cannot be normalized; dead-lettered", "reason", reason, NULL);
}

/*
 * Parse (a record read back from the spool) and normalize into it->events. Touches only the item
 * and the drain's immutable settings, so it also runs on the threadpool (build_job_start). 0, or
 * <0 with the reason the record becomes a dead letter.
 */
static int item_normalize(struct item *it, char *reason, size_t cap)
{
    const struct hg_provider *p = hg_provider_find(it->provider);
    if (p == NULL) {
        /* A record of a provider this build does not have (spooled by another version). */
        snprintf(reason, cap, "unknown provider");
        return HG_ERR_INVALID;
    }
    if (it->doc == NULL) {
        struct hg_provider_body b = { it->body, it->body_len, it->headers, it->headers_len };
        it->doc = p->parse(&b, reason, cap);
        if (it->doc == NULL)
            return HG_ERR_PARSE;
    }
    struct hg_event_meta meta = {
        .tenant = it->tenant,
        .request_id = it->request_id,
        .received_at_ns = it->received_at_ns,
    };
    /* The envelope stays: the events share its nodes until they are serialized. */
    int n = p->normalize(&it->doc->arena, it->doc->root, &meta, on_event, it);
    if (n < 0) {
        snprintf(reason, cap, "%s", hg_strerror(n));
        return n;
    }
    return 0;
}

/* Back on the loop after item_normalize: dead-letter what failed, join conversations. */
static void item_build_finish(struct item *it, int rc, const char *reason)
{
    it->built = true;
    it->rules = NULL;
    if (rc != 0)
        item_dead_letter(it, reason);
    order_add(it);
    size_t strings = 0;
    for (size_t i = 0; i < it->n_events; i++)
        strings += (size_t)(it->events[i].priority_class - it->events[i].strings) + 16;
    item_mem(it, (ptrdiff_t)(it->events_cap * sizeof(*it->events) + strings));
    item_mem_arena(it);
}

static void item_build(struct item *it)
{
    struct hg_drain *d = it->drain;
    char reason[256] = "";
    it->apply_rules = d->b.conf && *d->b.conf;
    it->rules = it->apply_rules ? hg_conf_rules(*d->b.conf, it->tenant) : NULL;
    item_build_finish(it, item_normalize(it, reason, sizeof(reason)), reason);
}

static void item_after_build(struct item *it);
static void wake_intake(struct hg_drain *d);
static void drain_unhold(struct hg_drain *d);

static void on_build_work(uv_work_t *w)
{
    struct hg_drain *d = HG_CONTAINER_OF(w, struct hg_drain, build_job);
    d->job_reason[0] = '\0';
    d->job_rc = item_normalize(d->job_item, d->job_reason, sizeof(d->job_reason));
}

static void on_build_done(uv_work_t *w, int status)
{
    struct hg_drain *d = HG_CONTAINER_OF(w, struct hg_drain, build_job);
    struct item *it = d->job_item;
    d->job_item = NULL;
    hg_conf_unref(d->job_conf);
    d->job_conf = NULL;
    if (!d->closing) {
        item_build_finish(it, status < 0 ? status : d->job_rc,
                          status < 0 ? hg_strerror(status) : d->job_reason);
        item_after_build(it);
        wake_intake(d);
    } else {
        it->rules = NULL; /* stays unbuilt in the items list; freed with the drain */
    }
    drain_unhold(d);
}

/*
 * Build a big record on the threadpool: the loop goes on serving meanwhile. The build queue
 * waits behind it, so records are still built (and join their conversations) in order.
 */
static void build_job_start(struct hg_drain *d, struct item *it)
{
    d->job_item = it;
    d->job_conf = d->b.conf && *d->b.conf ? hg_conf_ref(*d->b.conf) : NULL;
    it->apply_rules = d->job_conf != NULL;
    it->rules = it->apply_rules ? hg_conf_rules(d->job_conf, it->tenant) : NULL;
    d->handles_open++; /* the drain is not freed before the job's completion ran */
    /* uv_queue_work fails only without an after-work callback, never the case here. */
    if (uv_queue_work(d->loop, &d->build_job, on_build_work, on_build_done) != 0)
        abort();
}

static void on_build_idle(uv_idle_t *h);

void drain_event_resume_later(struct item_event *e)
{
    struct hg_drain *d = e->item->drain;
    e->resume_queued = true;
    e->resume_next = NULL;
    if (d->resume_tail)
        d->resume_tail->resume_next = e;
    else
        d->resume_head = e;
    d->resume_tail = e;
    if (!uv_is_active((uv_handle_t *)&d->build_idle))
        uv_idle_start(&d->build_idle, on_build_idle);
}

void drain_event_resume_cancel(struct item_event *e)
{
    struct hg_drain *d = e->item->drain;
    struct item_event *prev = NULL;
    for (struct item_event *x = d->resume_head; x; prev = x, x = x->resume_next) {
        if (x != e)
            continue;
        if (prev)
            prev->resume_next = x->resume_next;
        else
            d->resume_head = x->resume_next;
        if (d->resume_tail == x)
            d->resume_tail = prev;
        break;
    }
    e->resume_queued = false;
    e->resume_next = NULL;
}

/* Start the held events whose turn came (each settles its record: it may be freed). */
static void run_resumes(struct hg_drain *d)
{
    while (d->resume_head && !d->closing) {
        struct item_event *e = d->resume_head;
        d->resume_head = e->resume_next;
        if (d->resume_head == NULL)
            d->resume_tail = NULL;
        e->resume_queued = false;
        e->resume_next = NULL;
        e->held = false;
        e->item->outstanding--;
        event_start(e);
        drain_item_settle(e->item);
    }
}

/* ---- intake: stepping, submit, the build queue, recovered records, the tick ---- */

/*
 * Start up to `budget` more events of the item's round; when the round has more, the item waits
 * in the step queue (its hold kept), else the hold goes and the item settles. Returns the number
 * started. Events start in their record's order; per-conversation order is order.c's business
 * and does not depend on when an event is reached.
 */
static size_t item_step_more(struct item *it, size_t budget)
{
    struct hg_drain *d = it->drain;
    size_t started = 0;
    while (it->step_cursor < it->n_events && started < budget && !d->closing) {
        struct item_event *e = &it->events[it->step_cursor++];
        if (e->state == EV_NEW) {
            event_start(e);
            started++;
        }
    }
    if (it->step_cursor < it->n_events && !d->closing) {
        if (!it->stepping) {
            it->stepping = true;
            it->step_next = NULL;
            if (d->step_tail)
                d->step_tail->step_next = it;
            else
                d->step_head = it;
            d->step_tail = it;
            if (!uv_is_active((uv_handle_t *)&d->build_idle))
                uv_idle_start(&d->build_idle, on_build_idle);
        }
        return started;
    }
    if (it->stepping) {
        /* Only run_steps goes on with a queued round, and always with the queue's head. */
        d->step_head = it->step_next;
        if (d->step_head == NULL)
            d->step_tail = NULL;
        it->step_next = NULL;
        it->stepping = false;
    }
    it->outstanding--; /* the round's hold (item_step) */
    drain_item_settle(it);
    return started;
}

/* Start every step that is not done and not in flight (the events STEP_SLICE per loop turn). */
static void item_step(struct item *it)
{
    item_unwait(it);
    it->failed = false;
    /* Held until every event of the round was started, so a step finishing at once (or a round
     * spread over several loop turns) cannot settle and free the item meanwhile. */
    it->outstanding++;
    if (it->archive == AR_PENDING && it->drain->archives_in_flight < ARCHIVE_SLOTS)
        archive_start(it);
    it->step_cursor = 0;
    item_step_more(it, STEP_SLICE);
}

/* Go on with the rounds spread over loop turns, oldest first, STEP_SLICE events in all. */
static void run_steps(struct hg_drain *d)
{
    size_t budget = STEP_SLICE;
    while (d->step_head && budget > 0 && !d->closing) {
        struct item *it = d->step_head;
        /* Once: HG_MIN evaluates its arguments twice, and a second call on a finished round
         * would drop its hold again (the record then never left the spool). */
        size_t started = item_step_more(it, budget);
        budget -= HG_MIN(budget, started);
        if (d->step_head == it)
            break; /* it still has more: this turn's budget is spent */
    }
}

/* A record is built: start its round, or (read back for its archive only) archive it. */
static void item_after_build(struct item *it)
{
    if (!it->archive_only) {
        item_step(it);
        return;
    }
    for (size_t i = 0; i < it->n_events; i++)
        drain_event_set_state(&it->events[i], EV_DONE);
    it->drain->archives_in_flight--; /* the slot unpark took for it, handed to archive_start */
    it->outstanding++;
    archive_start(it);
    it->outstanding--;
    drain_item_settle(it);
}

/* Copy n bytes to *at, NUL-terminate them, advance *at past the NUL; the copy. */
static char *put_text(char **at, const char *s, size_t n)
{
    char *p = *at;
    if (n)
        memcpy(p, s, n);
    p[n] = '\0';
    *at = p + n + 1;
    return p;
}

static struct item *item_new(struct hg_drain *d, uint64_t spool_id, const struct hg_record *rec)
{
    /* One allocation for the item and its texts: five fewer mallocs per record. */
    size_t lens[3] = {
        rec->request_id ? strlen(rec->request_id) : 0,
        rec->tenant ? strlen(rec->tenant) : 0,
        rec->provider ? strlen(rec->provider) : 0,
    };
    size_t hlen = rec->headers ? rec->headers_len : 0;
    struct item *it = hg_xcalloc(1, sizeof(*it) + lens[0] + lens[1] + lens[2] + hlen + rec->body_len + 5);
    char *at = it->text;
    it->drain = d;
    it->spool_id = spool_id;
    it->request_id = put_text(&at, rec->request_id, lens[0]);
    it->tenant = put_text(&at, rec->tenant, lens[1]);
    it->provider = put_text(&at, rec->provider, lens[2]);
    it->received_at_ns = rec->received_at_ns;
    it->headers = rec->headers ? put_text(&at, rec->headers, hlen) : NULL;
    it->headers_len = hlen;
    it->body = put_text(&at, rec->body, rec->body_len);
    it->body_len = rec->body_len;
    it->archive = d->b.s3 ? AR_PENDING : AR_NONE;
    hg_list_insert_head(&d->items, &it->node);
    d->n_items++;
    item_mem(it, (ptrdiff_t)(sizeof(*it) + lens[0] + lens[1] + lens[2] + hlen + rec->body_len + 5));
    return it;
}

/* A record read back from the spool (backlog or parked) as a new item; frees e. */
static struct item *item_from_entry(struct hg_drain *d, struct hg_spool_entry *e)
{
    struct item *it = item_new(d, e->id, &e->rec);
    hg_spool_entry_free(e);
    return it;
}


void hg_drain_submit(struct hg_drain *d, uint64_t spool_id, const struct hg_record *rec,
                     struct hg_json_doc *doc)
{
    /*
     * Memory is bounded, the disk quota is not the RAM: past max_in_memory records (a broker
     * outage, a slow S3), or while older records still wait in the spool (their turn comes
     * first), this one waits there too, as a few bytes of index, and is read back in order.
     */
    if ((!drain_has_room(d) || !hg_spool_backlog_empty(d->b.spool) || d->backlog_reading) &&
        hg_spool_defer(d->b.spool, spool_id) == 0) {
        hg_json_doc_free(doc);
        d->deferred++;
        wake_intake(d);
        return;
    }
    struct item *it = item_new(d, spool_id, rec);
    it->doc = doc;
    /* Built later, from the loop: the caller is answering a batch of requests right now. */
    build_enqueue(d, it);
    wake_intake(d);
}

/* Is there intake work for the idle phase: records to build, or backlog that fits in memory?
 * Not while a record is being built on the threadpool: the queue waits for it (its completion
 * wakes the intake), and the idle phase must not spin meanwhile. */
static bool intake_due(const struct hg_drain *d)
{
    return !d->closing && d->job_item == NULL &&
           (d->build_head != NULL ||
            (!d->backlog_reading && drain_has_room(d) && !hg_spool_backlog_empty(d->b.spool)));
}

static void wake_intake(struct hg_drain *d)
{
    if (intake_due(d) && !uv_is_active((uv_handle_t *)&d->build_idle))
        uv_idle_start(&d->build_idle, on_build_idle);
}

static void build_enqueue(struct hg_drain *d, struct item *it)
{
    it->build_next = NULL;
    if (d->build_tail)
        d->build_tail->build_next = it;
    else
        d->build_head = it;
    d->build_tail = it;
}

static void pull_backlog(struct hg_drain *d);

/*
 * One loop turn of the drain's own work, each part bounded so the worker keeps answering: held
 * events whose turn came, STEP_SLICE more events of rounds in progress, then records built in
 * order up to BUILD_TURN_BYTES of body (a big one goes to the threadpool and the rest wait for
 * it), then more backlog from the spool.
 */
static void on_build_idle(uv_idle_t *h)
{
    struct hg_drain *d = h->data;
    run_resumes(d);
    run_steps(d);
    size_t bytes = 0;
    for (int i = 0; i < BUILD_BATCH && d->build_head && d->job_item == NULL && bytes < BUILD_TURN_BYTES &&
                    !d->closing; i++) {
        struct item *it = d->build_head;
        d->build_head = it->build_next;
        if (d->build_head == NULL)
            d->build_tail = NULL;
        it->build_next = NULL;
        if (it->body_len >= BUILD_JOB_BYTES) {
            build_job_start(d, it);
            break;
        }
        bytes += it->body_len;
        item_build(it);
        item_after_build(it);
    }
    if (d->build_head == NULL && d->job_item == NULL && !d->closing)
        pull_backlog(d);
    if (!intake_due(d) && d->resume_head == NULL && d->step_head == NULL)
        uv_idle_stop(&d->build_idle);
}

void hg_drain_submit_acked(struct hg_drain *d, const struct hg_record *rec, struct hg_json_doc *doc,
                           hg_drain_ack_cb ack, void *arg)
{
    struct item *it = item_new(d, 0, rec);
    it->ephemeral = true;
    it->ack = ack;
    it->ack_arg = arg;
    it->doc = doc;
    /* Built from the loop like any record (a big one on the threadpool): the answer comes later. */
    build_enqueue(d, it);
    wake_intake(d);
}

/* Backlog records read back (hg_spool_read_async): into the build queue, in order. */
static void on_backlog_read(void *arg, uint64_t id, int status, struct hg_spool_entry *e, bool last)
{
    struct hg_drain *d = arg;
    if (status == 0 && !d->closing)
        build_enqueue(d, item_from_entry(d, e));
    else
        hg_spool_entry_free(e); /* unreadable (logged): it stays unreleased, the next start offers it */
    if (last) {
        d->backlog_reading = false;
        wake_intake(d);
        drain_unhold(d);
    }
}

/*
 * Take up to RECOVER_BATCH records of the spool's backlog (recovered, or deferred by submit)
 * while they fit in memory (counting their spooled size against drain_max_bytes), and read them
 * on the threadpool: a serving loop never waits for the disk. Each is parsed again from its body
 * when its turn in the build queue comes. While the read runs, submit defers new records too, so
 * they stay behind the ones being read.
 */
static void pull_backlog(struct hg_drain *d)
{
    if (d->backlog_reading)
        return;
    uint64_t ids[RECOVER_BATCH];
    size_t n = 0;
    uint64_t bytes = d->mem_bytes;
    while (n < RECOVER_BATCH && d->n_items + n < d->max_in_memory && (n == 0 || bytes < d->max_bytes) &&
           (d->n_items == 0 || bytes < d->max_bytes)) {
        uint32_t len = 0;
        if (hg_spool_backlog_take(d->b.spool, &ids[n], &len) != 0)
            break;
        bytes += len;
        n++;
    }
    if (n == 0)
        return;
    if (hg_spool_read_async(d->b.spool, ids, n, on_backlog_read, d) != 0)
        return; /* closing: they stay unreleased in the spool for the next start */
    d->backlog_reading = true;
    d->handles_open++; /* the drain is not freed before the read's callbacks ran */
}

static int by_spool_id(const void *a, const void *b)
{
    uint64_t x = (*(struct item *const *)a)->spool_id, y = (*(struct item *const *)b)->spool_id;
    return x < y ? -1 : x > y;
}

/*
 * The sink is back: every record waiting out a backoff goes now, oldest first (spool ids grow in
 * append order). The waiting list itself is in no useful order (each failure goes to its head), and
 * a reconnect must not turn a webhook and the next one around: a "delivered" status published after
 * the "read" that followed it.
 */
static void step_waiting_in_order(struct hg_drain *d, uint64_t now)
{
    size_t n = 0;
    struct hg_list *pos;
    HG_LIST_FOREACH(pos, &d->waiting)
        n++;
    if (n == 0)
        return;
    struct item **order = hg_xmalloc(n * sizeof(*order));
    n = 0;
    HG_LIST_FOREACH(pos, &d->waiting)
        order[n++] = hg_list_entry(pos, struct item, wnode);
    qsort(order, n, sizeof(*order), by_spool_id);
    /* Stepping a record frees at most that record; one that fails again at once goes back on the
     * waiting list, which this walk no longer reads. */
    for (size_t i = 0; i < n; i++) {
        struct item *it = order[i];
        it->retry_at_ms = now ? now : 1;
        it->attempts = 0;
        if (it->outstanding == 0)
            item_step(it);
    }
    free(order);
}

static void on_tick(uv_timer_t *t)
{
    struct hg_drain *d = t->data;
    if (d->closing)
        return;
    uint64_t now = uv_now(d->loop);
    /*
     * The sink is back (a broker reconnect, or a publish that went through after failures, when a
     * flapping broker came back between two ticks): records waiting out a backoff go now, not in
     * up to 30 s.
     */
    const char *why;
    bool ready = d->b.sink->ops->ready(d->b.sink, &why) == 0;
    bool back = ready && (!d->sink_was_ready || d->sink_recovered);
    d->sink_was_ready = ready;
    d->sink_recovered = false;
    /*
     * Only the records waiting out a backoff: walking every record in flight each tick cost 7-8 %
     * of the loop with a backlog of thousands. A record stepped here that fails again at once is
     * put back at the head, which this walk has passed.
     */
    if (back) {
        step_waiting_in_order(d, now);
    } else {
        struct hg_list *pos, *tmp;
        HG_LIST_FOREACH_SAFE(pos, tmp, &d->waiting) {
            struct item *it = hg_list_entry(pos, struct item, wnode);
            if (it->retry_at_ms <= now && it->outstanding == 0)
                item_step(it);
        }
    }
    wake_intake(d); /* the recovered backlog at start; later, only a safety net */
    unpark(d, true);
}

/* ---- open and close ---- */

int hg_drain_open(uv_loop_t *loop, const struct hg_drain_backends *b, struct hg_drain **out)
{
    struct hg_drain *d = hg_xcalloc(1, sizeof(*d));
    d->loop = loop;
    d->b = *b;
    hg_list_init(&d->items);
    hg_list_init(&d->waiting);
    d->max_in_memory = b->max_in_memory ? b->max_in_memory : DEFAULT_MAX_IN_MEMORY;
    d->max_bytes = b->max_bytes ? b->max_bytes : DEFAULT_MAX_BYTES;
    d->bucket = hg_xstrdup(b->bucket ? b->bucket : "hookgate");
    d->b.bucket = d->bucket;
    d->media_bucket = b->media_bucket ? hg_xstrdup(b->media_bucket) : NULL;
    d->b.media_bucket = d->media_bucket;
    uv_timer_init(loop, &d->tick);
    d->tick.data = d;
    uv_timer_start(&d->tick, on_tick, 0, TICK_MS);
    uv_idle_init(loop, &d->build_idle);
    d->build_idle.data = d;
    d->handles_open = 2;
    *out = d;
    return 0;
}

bool hg_drain_archive_failing(const struct hg_drain *d)
{
    return d->archive_failing;
}

uint64_t hg_drain_inflight(const struct hg_drain *d)
{
    return d->n_items;
}

uint64_t hg_drain_inflight_bytes(const struct hg_drain *d)
{
    return d->mem_bytes;
}

/* A handle closed or a threadpool job finished: the last one frees the drain (after free). */
static void drain_unhold(struct hg_drain *d)
{
    if (--d->handles_open > 0)
        return;
    while (!hg_list_empty(&d->items))
        item_free(hg_list_entry(hg_list_first(&d->items), struct item, node));
    order_free(d);
    free(d->parked); /* their records stay in the spool: the next start recovers them */
    void (*done)(void *) = d->free_done;
    void *arg = d->free_arg;
    free(d->bucket);
    free(d->media_bucket);
    free(d);
    if (done)
        done(arg);
}

static void on_handle_closed(uv_handle_t *h)
{
    drain_unhold(h->data);
}

void hg_drain_stop(struct hg_drain *d)
{
    d->closing = true;
    atomic_store(&d->cancel_build, true);
    uv_timer_stop(&d->tick);
    uv_idle_stop(&d->build_idle);
}

void hg_drain_free(struct hg_drain *d, void (*done)(void *arg), void *arg)
{
    d->closing = true;
    atomic_store(&d->cancel_build, true);
    d->free_done = done;
    d->free_arg = arg;
    uv_close((uv_handle_t *)&d->tick, on_handle_closed);
    uv_close((uv_handle_t *)&d->build_idle, on_handle_closed);
}

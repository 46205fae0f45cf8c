/*
 * The outbound store: endpoints, events, deliveries and their attempts, behind one interface so
 * the embedded backend (SQLite on local disk, store_sqlite.c) and a shared one (Redis, later) are
 * interchangeable. Every call is asynchronous in libuv's contract: it returns <0 and the callback
 * never runs, or 0 and the callback runs exactly once, later, on the loop the store was opened
 * on. A callback with err 0 means the change is durable (committed and synced).
 *
 * Documents are jansson objects. A call that takes a json_t * steals the reference (even when it
 * fails). The result handed to a callback belongs to the store and is freed after the callback
 * returns (json_incref it to keep it).
 */
#ifndef HG_OUTBOUND_STORE_H
#define HG_OUTBOUND_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#define HG_OB_ID_MAX 64

/* Delivery states. */
#define HG_OB_STATE_PENDING   "pending"   /* waits for next_at (and its endpoint to be active) */
#define HG_OB_STATE_SENDING   "sending"   /* claimed by this process; after a crash it is pending again */
#define HG_OB_STATE_DELIVERED "delivered" /* a 2xx came */
#define HG_OB_STATE_FAILED    "failed"    /* not retryable (4xx, 410) or its endpoint was deleted */
#define HG_OB_STATE_DEAD      "dead"      /* every attempt of its policy failed */

struct hg_ob_store;

/*
 * err: 0; HG_ERR_NOT_FOUND (no such id); HG_ERR_INVALID (the state forbids it: `message` says
 * why); HG_ERR_UNAVAILABLE (the backend failed; nothing was changed). `result` as each call says.
 */
typedef void (*hg_ob_store_cb)(void *arg, int err, const char *message, json_t *result);

/* What a backend implements: run one request (store.c builds them), and close. */
struct hg_ob_req;
struct hg_ob_store_ops {
    int (*submit)(struct hg_ob_store *s, struct hg_ob_req *q);
    /* Finish what was submitted (callbacks run), release everything, then on_closed(arg). */
    void (*close)(struct hg_ob_store *s, void (*on_closed)(void *arg), void *arg);
};

struct hg_ob_store {
    const struct hg_ob_store_ops *ops;
};

/*
 * Open the embedded store at `path` (SQLite, WAL, synchronous=FULL; the directory is created).
 * Rows a dead process left "sending" become pending again here (at-least-once, same id). Runs on
 * the calling thread (start-up). 0 or an error (logged).
 */
int hg_ob_store_open_sqlite(uv_loop_t *loop, const char *path, struct hg_ob_store **out);

/* Close: see the ops. */
void hg_ob_store_close(struct hg_ob_store *s, void (*on_closed)(void *arg), void *arg);

/* ---- endpoints: documents as the API shows them, plus "secret" ---- */

/* Insert `ep` (with id, status, created_at, updated_at set by the caller). result: ep. */
int hg_ob_endpoint_create(struct hg_ob_store *s, json_t *ep, hg_ob_store_cb cb, void *arg);
/* result: the endpoint document. */
int hg_ob_endpoint_get(struct hg_ob_store *s, const char *id, hg_ob_store_cb cb, void *arg);
/* Endpoints in id order after `cursor` ("" = from the start), at most `limit`.
 * result: {"data":[...], "next_cursor": id or null}. */
int hg_ob_endpoint_list(struct hg_ob_store *s, const char *cursor, unsigned limit, hg_ob_store_cb cb, void *arg);
/* Replace the document of `id` with `ep` (same id). result: ep. */
int hg_ob_endpoint_replace(struct hg_ob_store *s, const char *id, json_t *ep, hg_ob_store_cb cb, void *arg);
/* Delete; its deliveries that were still waiting become failed ("endpoint deleted"). result: NULL. */
int hg_ob_endpoint_delete(struct hg_ob_store *s, const char *id, hg_ob_store_cb cb, void *arg);
/* status: "active", "paused" or "disabled". result: the endpoint document. */
int hg_ob_endpoint_set_status(struct hg_ob_store *s, const char *id, const char *status, hg_ob_store_cb cb,
                              void *arg);

/*
 * Make the config file's endpoints (`docs`: an array of canonical documents with id "cfg_<name>",
 * source "config" and secret) what the store holds, in one transaction: new ones are inserted
 * (active), changed ones replaced (status and created_at kept, updated_at now), and every stored
 * "cfg_" endpoint not in `docs` deleted, its pending deliveries failed with "endpoint_removed".
 * result: {"added": n, "changed": n, "removed": n}.
 */
int hg_ob_endpoints_sync(struct hg_ob_store *s, json_t *docs, int64_t now_ms, hg_ob_store_cb cb, void *arg);

/* ---- events ---- */

/*
 * Publish `ev` ({event_id, event_type, tenant?, data, metadata?, timestamp, created_at}): in one
 * transaction, unless the same event_id was published within `idem_ms` (then nothing changes and
 * the original answer comes back), store the event and one pending delivery (due now) per active
 * endpoint whose events match its type and whose tenant (if any) is the event's.
 * result: {"event_id", "deliveries": n, "duplicate": bool}.
 */
int hg_ob_event_publish(struct hg_ob_store *s, json_t *ev, int64_t idem_ms, hg_ob_store_cb cb, void *arg);
/*
 * A test (POST /v1/endpoints/{id}/test): store `ev` and one pending delivery of it to `endpoint_id`
 * whatever the endpoint's events, tenant and status, due now and sent whatever that status, with
 * one attempt (no retries). No idempotency check. HG_ERR_NOT_FOUND for an unknown endpoint.
 * result: {"event_id", "deliveries": 1, "duplicate": false, "delivery_id"}.
 */
int hg_ob_event_publish_test(struct hg_ob_store *s, json_t *ev, const char *endpoint_id, hg_ob_store_cb cb,
                             void *arg);
/* The latest event with this id, with "deliveries": [{id, endpoint_id, status, attempts}]. */
int hg_ob_event_get(struct hg_ob_store *s, const char *event_id, hg_ob_store_cb cb, void *arg);

/* ---- deliveries ---- */

/*
 * Claim up to `limit` pending deliveries due at `now_ms` whose endpoint is active (or that are
 * tests), oldest due first, and mark them sending. result: {"claimed": [{"id", "attempts",
 * "round_start", "endpoint": doc, "event": doc, "test": bool}], "next_due": ms of the earliest
 * pending one left, or null}.
 */
int hg_ob_delivery_claim(struct hg_ob_store *s, int64_t now_ms, unsigned limit, hg_ob_store_cb cb, void *arg);
/*
 * Record an attempt of a sending delivery and its new state, in one transaction. `outcome`:
 * {"attempt": {"at", "status", "latency_ms", "headers", "body", "error"}, "state": pending|
 * delivered|failed|dead, "next_at": ms (pending), "disable_endpoint": bool}. result: NULL.
 */
int hg_ob_delivery_settle(struct hg_ob_store *s, const char *id, json_t *outcome, hg_ob_store_cb cb, void *arg);
/*
 * Deliveries newest first, after `cursor`, filtered by `filter` {endpoint_id?, event_type?,
 * status?, since?, until? (ms)}, at most limit. result: {"data":[...], "next_cursor"}.
 */
int hg_ob_delivery_list(struct hg_ob_store *s, json_t *filter, const char *cursor, unsigned limit,
                        hg_ob_store_cb cb, void *arg);
/* One delivery with "attempts": [...] (oldest first). */
int hg_ob_delivery_get(struct hg_ob_store *s, const char *id, hg_ob_store_cb cb, void *arg);
/*
 * Manual retry: a delivery that is not sending becomes pending, due now, with a fresh round of
 * its policy's attempts. HG_ERR_INVALID while it is being sent. result: the delivery.
 */
int hg_ob_delivery_retry(struct hg_ob_store *s, const char *id, int64_t now_ms, hg_ob_store_cb cb, void *arg);

/*
 * Bulk recovery: every failed or dead delivery (tests excepted) of `endpoint_id` created in
 * [since_ms, until_ms) becomes pending, due now, with a fresh round of its policy's attempts.
 * HG_ERR_NOT_FOUND for an unknown endpoint. result: {"recovered": n}.
 */
int hg_ob_endpoint_recover(struct hg_ob_store *s, const char *endpoint_id, int64_t since_ms, int64_t until_ms,
                           int64_t now_ms, hg_ob_store_cb cb, void *arg);

/*
 * Numbers for the metrics: deliveries not settled (pending or sending) and the creation time of
 * the oldest, and how many pending ones that could be sent (active endpoint, or a test) were
 * created before `stale_before_ms` and never attempted. result: {"depth": n, "oldest_ms": ms or
 * null, "never_attempted": n}.
 */
int hg_ob_stats(struct hg_ob_store *s, int64_t stale_before_ms, hg_ob_store_cb cb, void *arg);

/* ---- for backends (store.c and the backends only) ---- */

enum hg_ob_op {
    HG_OB_OP_ENDPOINT_CREATE,
    HG_OB_OP_ENDPOINT_GET,
    HG_OB_OP_ENDPOINT_LIST,
    HG_OB_OP_ENDPOINT_REPLACE,
    HG_OB_OP_ENDPOINT_DELETE,
    HG_OB_OP_ENDPOINT_STATUS,
    HG_OB_OP_EVENT_PUBLISH,
    HG_OB_OP_EVENT_GET,
    HG_OB_OP_DELIVERY_CLAIM,
    HG_OB_OP_DELIVERY_SETTLE,
    HG_OB_OP_DELIVERY_LIST,
    HG_OB_OP_DELIVERY_GET,
    HG_OB_OP_DELIVERY_RETRY,
    HG_OB_OP_ENDPOINT_RECOVER,
    HG_OB_OP_STATS,
    HG_OB_OP_ENDPOINTS_SYNC,
};

/* One call, as a backend sees it. The backend fills err/message/result and calls hg__ob_req_done. */
struct hg_ob_req {
    enum hg_ob_op op;
    char id[HG_OB_ID_MAX + 1];      /* endpoint, event or delivery id; list cursor; PUBLISH: a test's endpoint */
    char status[16];                /* ENDPOINT_STATUS */
    json_t *doc;                    /* the call's document (owned) */
    int64_t now_ms;                 /* CLAIM, RETRY, RECOVER */
    int64_t since_ms, until_ms;     /* RECOVER; STATS: until_ms = stale_before */
    int64_t idem_ms;                /* PUBLISH */
    unsigned limit;                 /* LIST, CLAIM */
    int err;
    char message[160];
    json_t *result;                 /* owned; freed after the callback */
    hg_ob_store_cb cb;
    void *arg;
    struct hg_ob_req *next;         /* the backend's queue */
};

/* Run the request's callback and free it. */
void hg__ob_req_done(struct hg_ob_req *q);

#endif

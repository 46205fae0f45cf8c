/*
 * The provider-neutral ingest chain (ingest/ingest.h). One struct hg_req per webhook; every
 * transition goes through req_set_state(). The provider is consulted only through its table:
 * which headers to keep, its credentials for the tenant, verify, parse, tenant ids, event count
 * and the accepted answer.
 */
#include <stdio.h>
#include <string.h>

#include "clients/jwks_remote.h"
#include "clients/redis.h"
#include "conf/conf.h"
#include "core/common.h"
#include "core/err.h"
#include "core/jwt.h"
#include "core/log.h"
#include "core/ltable.h"
#include "core/time.h"
#include "drain/drain.h"
#include "http/http.h"
#include "ingest/access.h"
#include "ingest/ingest.h"
#include "ops/metrics.h"
#include "spool/spool.h"
#include "tenants/tenants.h"
#include "worker/worker.h"

#define SPOOLED_HEADERS_MAX 8192 /* cap on the kept headers' total size */
#define ACCEPTED_MAX        512  /* the accepted answer's body */
#define SPOOL_EXTRA_MAX     1024 /* a provider's spool_extra lines */
#define REPLAY_KEY_MAX      256
#define REPLAY_TABLE_MAX    100000 /* remembered signatures per worker (LRU beyond) */

/* Where an ingest request is; every change goes through req_set_state(). */
enum hg_req_state {
    HG_REQ_IPLIMIT,   /* waiting for the client address's rate limit answer (Redis) */
    HG_REQ_TENANT,    /* resolving the tenant (config and LRU at once; Redis / tenant service later) */
    HG_REQ_KEYS,      /* waiting for verification keys (a jwks_url fetch) */
    HG_REQ_REPLAY,    /* waiting for Redis to mark the signature seen (replay window, SET NX PX) */
    HG_REQ_RATELIMIT, /* waiting for the tenant's rate limit answer (Redis) */
    HG_REQ_SPOOL,     /* appended, waiting for the group fsync */
    HG_REQ_BROKER,    /* ack = broker: waiting for the broker's confirms */
    HG_REQ_DONE,      /* answered (or its connection went away) */
};

struct hg_req {
    enum hg_req_state state;
    const struct hg_provider *provider;
    struct hg_worker *worker;
    struct hg_conn *conn;          /* NULL once the connection went away */
    struct hg_http_request *http;  /* the parsed request: valid while conn is (until answered) */
    bool handshake;                /* GET: answer the provider's handshake, spool nothing */
    struct hg_conf *conf;          /* the config this request started with (a reference) */
    struct hg_json_doc *doc;       /* parsed body, handed to the drain */
    struct hg_tenant *tenant;      /* resolved tenant (a reference) */
    const char *tenant_id;         /* tenant->id once resolved, else the path tenant (metrics) */
    char path_tenant[HG_TENANTS_ID_MAX + 1];
    const struct hg_source_conf *source; /* path_names_source: the path's source (in conf) */
    char replay_key[REPLAY_KEY_MAX];   /* "hg:replay:<key>" this request marked seen: forgotten
                                        * again unless the webhook is accepted */
    bool replay_redis;                 /* the mark is in Redis (else this worker's table) */
    char request_id[HG_HTTP_REQUEST_ID_MAX + 1];
    struct hg_ip client;           /* the client address (ingest/access.h): IP rules, per-IP limit */
    char client_ip[HG_IP_TEXT_MAX]; /* the same, as text for the logs */
    uint64_t received_at_ns;
    uint64_t start_mono_ns;
    int events;
    char rl_headers[192];          /* X-RateLimit-* lines for every answer, "" without Redis */
    char *headers;                 /* spooled request headers ("Name: value\n" lines), in inline_data */
    size_t headers_len;
    char *body;                    /* copy of the raw body (the connection may go away meanwhile) */
    size_t body_len;
    char parse_reason[256];        /* why the body did not parse (400 after a good signature) */
    char inline_data[];            /* body NUL headers NUL: one allocation with the request */
};

static const char *const state_names[] = { "iplimit", "tenant", "keys", "replay", "ratelimit", "spool", "broker",
                                           "done" };

static void req_set_state(struct hg_req *q, enum hg_req_state s)
{
    hg_debug(q->request_id, "request state", "from", state_names[q->state], "to", state_names[s], NULL);
    q->state = s;
}

/* Append s to the label buffer at *len, truncating at cap - 1 (no printf on this path). */
static void label_put(char *out, size_t cap, size_t *len, const char *s)
{
    size_t n = strlen(s);
    if (*len + 1 >= cap)
        return;
    if (n > cap - 1 - *len)
        n = cap - 1 - *len;
    memcpy(out + *len, s, n);
    *len += n;
    out[*len] = '\0';
}

/* webhook_received_total{provider,tenant,type="webhook",status} for the webhook as a whole. */
static void count_webhook_as(const char *provider, const char *tenant, const char *status)
{
    char labels[256], esc[128];
    size_t n = 0;
    labels[0] = '\0';
    label_put(labels, sizeof(labels), &n, "provider=\"");
    label_put(labels, sizeof(labels), &n, provider);
    label_put(labels, sizeof(labels), &n, "\",tenant=\"");
    label_put(labels, sizeof(labels), &n, hg_metrics_label_escape(esc, sizeof(esc), tenant ? tenant : "unknown"));
    label_put(labels, sizeof(labels), &n, "\",type=\"webhook\",status=\"");
    label_put(labels, sizeof(labels), &n, status);
    label_put(labels, sizeof(labels), &n, "\"");
    hg_metric_inc(HG_M_WEBHOOK_RECEIVED, labels);
}

static void count_webhook(const struct hg_req *q, const char *status)
{
    count_webhook_as(q->provider->name, q->tenant_id, status);
}

static void req_free(struct hg_req *q)
{
    hg_json_doc_free(q->doc);
    hg_conf_unref(q->conf);
    hg_tenant_unref(q->tenant);
    free(q);
}

/*
 * The replay window: signatures seen by this worker thread (the ingest runs on the worker's loop
 * only), remembered for the provider's ttl. A per-worker table: see docs/generic.md for what that
 * means with several workers. Freed by hg_ingest_thread_done.
 */
static _Thread_local struct hg_ltable replay_seen;

void hg_ingest_thread_done(void)
{
    hg_ltable_free(&replay_seen);
    hg_access_thread_done();
}

/* Forget the request's replay mark: it was not accepted, so the sender's retry must pass. */
static void replay_forget(struct hg_req *q)
{
    if (q->replay_key[0] == '\0')
        return;
    if (q->replay_redis) {
        if (q->worker->redis)
            hg_redis_dedup_abort(q->worker->redis, q->replay_key);
    } else {
        struct hg_lentry *e = hg_ltable_get(&replay_seen, q->replay_key, strlen(q->replay_key),
                                            hg_time_mono_ns() / 1000000ull);
        if (e != NULL)
            hg_ltable_remove(&replay_seen, e);
    }
    q->replay_key[0] = '\0';
}

/* Mark key seen; false when it already was (a replay). */
static bool replay_mark(const char *key, uint64_t ttl_ms)
{
    uint64_t now = hg_time_mono_ns() / 1000000ull, evicted = 0;
    if (replay_seen.max == 0)
        replay_seen.max = REPLAY_TABLE_MAX;
    if (hg_ltable_get(&replay_seen, key, strlen(key), now) != NULL)
        return false;
    struct hg_lentry *e = hg_ltable_add(&replay_seen, key, strlen(key), &evicted);
    e->expires_ms = now + ttl_ms;
    return true;
}

/* Answer an error (when the connection is still there) and free the request. */
static void req_fail(struct hg_req *q, int status, const char *code, const char *msg, const char *extra)
{
    req_set_state(q, HG_REQ_DONE);
    replay_forget(q);
    if (q->conn) {
        char headers[384];
        snprintf(headers, sizeof(headers), "%s%s", q->rl_headers, extra ? extra : "");
        hg_conn_set_data(q->conn, NULL);
        hg_conn_respond_error(q->conn, status, code, msg, headers);
    }
    req_free(q);
}

static void answer_accepted(struct hg_req *q)
{
    req_set_state(q, HG_REQ_DONE);
    count_webhook(q, "accepted");
    if (q->conn) {
        char body[ACCEPTED_MAX];
        const char *type = "application/json";
        int status = q->provider->accepted_status ? q->provider->accepted_status : 200;
        size_t n = 0;
        if (q->provider->accepted != NULL && status != 204)
            n = q->provider->accepted(body, sizeof(body), q->request_id, q->events, &type);
        hg_conn_set_data(q->conn, NULL);
        hg_conn_respond(q->conn, status, type, q->rl_headers, body, n);
    }
    hg_metric_observe(HG_M_PROCESSING_DURATION, NULL, (double)(hg_time_mono_ns() - q->start_mono_ns) / 1e9);
}

/* The record as the spool and the drain take it. */
static struct hg_record req_record(const struct hg_req *q)
{
    return (struct hg_record){
        .request_id = q->request_id,
        .tenant = q->tenant_id,
        .provider = q->provider->name,
        .received_at_ns = q->received_at_ns,
        .headers = q->headers,
        .headers_len = q->headers_len,
        .body = q->body,
        .body_len = q->body_len,
    };
}

static void on_spooled(void *arg, int status, uint64_t id)
{
    struct hg_req *q = arg;
    q->worker->inflight--;
    if (status != 0) {
        hg_error(q->request_id, "spool write failed; answered 503", "error", hg_strerror(status), NULL);
        count_webhook(q, "unavailable");
        req_fail(q, 503, "unavailable", "could not store the webhook durably; retry later", "Retry-After: 5\r\n");
        return;
    }
    /* Durable: answer first, then hand the record on. */
    answer_accepted(q);
    struct hg_record rec = req_record(q);
    struct hg_json_doc *doc = q->doc;
    q->doc = NULL;
    hg_drain_submit(q->worker->drain, id, &rec, doc);
    req_free(q);
}

static void on_broker_acked(void *arg, int status)
{
    struct hg_req *q = arg;
    if (status != 0) {
        count_webhook(q, "unavailable");
        req_fail(q, 503, "unavailable", "the broker did not confirm the events; retry later", "Retry-After: 5\r\n");
        return;
    }
    answer_accepted(q);
    req_free(q);
}

/* Append to the spool (or, with ack = broker, publish); the answer comes from the callback. */
static void req_spool(struct hg_req *q)
{
    struct hg_worker *w = q->worker;
    struct hg_record rec = req_record(q);
    if (w->ack_broker) {
        req_set_state(q, HG_REQ_BROKER);
        struct hg_json_doc *doc = q->doc;
        q->doc = NULL;
        hg_drain_submit_acked(w->drain, &rec, doc, on_broker_acked, q);
        return; /* q may be freed by now */
    }
    req_set_state(q, HG_REQ_SPOOL);
    int rc = hg_spool_append(w->spool, &rec, on_spooled, q);
    if (rc != 0) {
        bool full = rc == HG_ERR_FULL;
        if (full)
            hg_warn(q->request_id, "spool full; answered 503", NULL);
        else
            hg_error(q->request_id, "spool append failed; answered 503", "error", hg_strerror(rc), NULL);
        count_webhook(q, "unavailable");
        req_fail(q, 503, full ? "spool_full" : "unavailable",
                 full ? "spool quota reached; retry later" : "could not store the webhook; retry later",
                 "Retry-After: 5\r\n");
        return;
    }
    w->inflight++;
}

static void on_ratelimit(void *arg, const struct hg_redis_ratelimit_result *res)
{
    struct hg_req *q = arg;
    snprintf(q->rl_headers, sizeof(q->rl_headers),
             "X-RateLimit-Limit: %lld\r\nX-RateLimit-Remaining: %lld\r\nX-RateLimit-Reset: %lld\r\n",
             (long long)res->limit, (long long)res->remaining, (long long)res->reset_at_unix_s);
    if (res->fallback)
        hg_metric_inc(HG_M_REDIS_FALLBACK, "op=\"ratelimit\"");
    if (res->allowed) {
        req_spool(q);
        return;
    }
    char labels[160], esc[128], retry[48];
    snprintf(labels, sizeof(labels), "tenant=\"%s\"", hg_metrics_label_escape(esc, sizeof(esc), q->tenant_id));
    hg_metric_inc(HG_M_RATELIMIT_REJECTED, labels);
    count_webhook(q, "rate_limited");
    long long wait = res->reset_at_unix_s - (long long)(hg_time_now_ns() / 1000000000ull);
    snprintf(retry, sizeof(retry), "Retry-After: %lld\r\n", wait > 0 ? wait : 1);
    req_fail(q, 429, "rate_limited", "tenant rate limit reached; retry later", retry);
}

/* The GET handshake, once the tenant is known. */
static void req_handshake(struct hg_req *q, const struct hg_creds *creds)
{
    char challenge[1024];
    if (q->provider->handshake(q->http, creds, challenge, sizeof(challenge)) != 0) {
        hg_info(q->request_id, "verification handshake refused", "provider", q->provider->name, "tenant",
                q->tenant_id, "client_ip", q->client_ip, NULL);
        req_fail(q, 403, "forbidden", "verification failed", NULL);
        return;
    }
    req_set_state(q, HG_REQ_DONE);
    hg_conn_set_data(q->conn, NULL);
    hg_conn_respond(q->conn, 200, "text/plain", NULL, challenge, strlen(challenge));
    req_free(q);
}

static bool creds_empty(const struct hg_creds *c)
{
    return (c->secrets == NULL || c->secrets->n == 0) && (c->api_keys == NULL || c->api_keys->n == 0) &&
           c->jwks == NULL && c->jwks_url == NULL;
}

/* The tenant's rate limit (with Redis), then the spool. */
static void req_limit(struct hg_req *q)
{
    const struct hg_tenant *t = q->tenant;
    uint32_t limit = t->rate_limit ? t->rate_limit : q->conf->ratelimit_default;
    if (q->worker->redis) {
        req_set_state(q, HG_REQ_RATELIMIT);
        if (hg_redis_ratelimit(q->worker->redis, q->tenant_id, limit, 60000, on_ratelimit, q) == 0)
            return;
    }
    req_spool(q);
}

static void replay_refuse(struct hg_req *q)
{
    hg_info(q->request_id, "replayed signature", "provider", q->provider->name, "tenant", q->tenant_id, "client_ip",
            q->client_ip, NULL);
    count_webhook(q, "unauthorized");
    req_fail(q, 401, "unauthorized", "replayed (this signature was already received)", NULL);
}

static void on_replay_marked(void *arg, const struct hg_redis_dedup_result *res)
{
    struct hg_req *q = arg;
    if (res->fallback)
        hg_metric_inc(HG_M_REDIS_FALLBACK, "op=\"replay\"");
    if (res->status != HG_REDIS_DEDUP_NEW) {
        q->replay_key[0] = '\0'; /* not ours: another request holds (or accepted) it */
        replay_refuse(q);
        return;
    }
    req_limit(q);
}

/*
 * The replay window, after a good signature: mark "hg:replay:<key>" seen for ttl_ms (Redis SET
 * NX PX when configured, so every worker and instance shares it; else this worker's table). A
 * key already marked is a replay (401). The mark is dropped again by req_fail, so a webhook that
 * is not accepted (429, 503) can be retried with the same signature.
 */
static void req_replay(struct hg_req *q, const char *key, uint64_t ttl_ms)
{
    snprintf(q->replay_key, sizeof(q->replay_key), "hg:replay:%s", key);
    if (q->worker->redis) {
        q->replay_redis = true;
        req_set_state(q, HG_REQ_REPLAY);
        if (hg_redis_dedup_begin(q->worker->redis, q->replay_key, ttl_ms, on_replay_marked, q) == 0)
            return;
        q->replay_redis = false; /* refused at once (closed): this worker's table instead */
    }
    if (!replay_mark(q->replay_key, ttl_ms)) {
        q->replay_key[0] = '\0';
        replay_refuse(q);
        return;
    }
    req_limit(q);
}

/* allow / deny of the resolved tenant's [tenant.<id>] section (none for tenants of the service). */
static bool tenant_permits(const struct hg_req *q)
{
    const struct hg_tenant_conf *tc = hg_conf_tenant(q->conf, q->tenant_id);
    return tc == NULL || hg_cidr_rules_permit(&tc->ip, &q->client);
}

/* A section's allow / deny refused the client: 403 naming no rule (the log says which section). */
static void refuse_client(struct hg_conn *c, const char *request_id, const char *provider, const char *client_ip,
                          const char *section, const char *name)
{
    char rules[96];
    snprintf(rules, sizeof(rules), "[%s%s%s]", section, name ? "." : "", name ? name : "");
    hg_info(request_id, "client address not allowed", "client_ip", client_ip, "provider", provider, "rules", rules,
            NULL);
    /* Not the path's tenant: made-up ids must not become metric series. */
    count_webhook_as(provider, NULL, "forbidden");
    hg_conn_respond_error(c, 403, "forbidden", "client address not allowed", NULL);
}

/* The same for the resolved tenant's section (a config tenant: a bounded metric label). */
static void req_forbid(struct hg_req *q)
{
    char rules[96];
    snprintf(rules, sizeof(rules), "[tenant.%s]", q->tenant_id);
    hg_info(q->request_id, "client address not allowed", "client_ip", q->client_ip, "provider", q->provider->name,
            "rules", rules, NULL);
    count_webhook(q, "forbidden");
    req_fail(q, 403, "forbidden", "client address not allowed", NULL);
}

static void req_verify(struct hg_req *q, const struct hg_creds *cr);

static void on_keys(void *arg, int status)
{
    struct hg_req *q = arg;
    if (q->conn == NULL) {
        req_free(q); /* gone while the keys were fetched: nothing was acknowledged */
        return;
    }
    if (status != 0) {
        hg_warn(q->request_id, "no verification keys (jwks_url unreachable); answered 503", "provider",
                q->provider->name, NULL);
        count_webhook(q, "unavailable");
        req_fail(q, 503, "keys_unavailable", "verification keys could not be fetched; retry later",
                 "Retry-After: 10\r\n");
        return;
    }
    struct hg_creds creds = { .source = q->source };
    q->provider->creds(q->conf, q->tenant, &creds);
    creds.jwks_fetched = hg_jwks_remote_keys(q->worker->jwks_remote);
    req_verify(q, &creds);
}

/*
 * Keys published at creds->jwks_url (Pub/Sub: Google's certificates): unless jwks_file already
 * holds the token's key, the worker's cache answers at once or after a fetch (on_keys).
 */
static void req_keys(struct hg_req *q, struct hg_creds *creds)
{
    char kid[256];
    q->provider->key_id(q->http, kid, sizeof(kid));
    if (kid[0] != '\0' && hg_jwks_has(creds->jwks, kid)) {
        req_verify(q, creds);
        return;
    }
    req_set_state(q, HG_REQ_KEYS);
    int rc = hg_jwks_remote_want(q->worker->jwks_remote, creds->jwks_url, kid, on_keys, q);
    if (rc == HG_ERR_AGAIN)
        return;
    if (rc != 0 && creds->jwks == NULL) {
        on_keys(q, rc);
        return;
    }
    creds->jwks_fetched = hg_jwks_remote_keys(q->worker->jwks_remote);
    req_verify(q, creds);
}

/* The tenant is known: credentials, signature, body, then the rate limit and the spool. */
static void on_tenant(void *arg, int status, struct hg_tenant *t)
{
    struct hg_req *q = arg;
    const struct hg_provider *p = q->provider;
    if (status != 0) {
        bool missing = status == HG_ERR_NOT_FOUND;
        count_webhook(q, missing ? "unknown_tenant" : "unavailable");
        if (missing)
            req_fail(q, 404, "unknown_tenant", "no such tenant", NULL);
        else
            req_fail(q, 503, "tenant_unavailable", "tenant could not be resolved; retry later", "Retry-After: 10\r\n");
        return;
    }
    q->tenant = t;
    q->tenant_id = t->id;
    if (q->conn == NULL) {
        /* Gone while the tenant was looked up: nothing was acknowledged, the provider retries. */
        req_free(q);
        return;
    }
    if (q->conf->tenant_ip_rules && !tenant_permits(q)) {
        req_forbid(q);
        return;
    }
    struct hg_creds creds = { .source = q->source };
    p->creds(q->conf, t, &creds);
    if (q->handshake) {
        req_handshake(q, &creds);
        return;
    }
    if (creds_empty(&creds)) {
        hg_warn(q->request_id, "no credentials configured for tenant; answered 503", "provider", p->name, "tenant",
                q->tenant_id, "client_ip", q->client_ip, NULL);
        count_webhook(q, "unavailable");
        req_fail(q, 503, "tenant_unavailable", "no credentials configured for this tenant", "Retry-After: 30\r\n");
        return;
    }
    if (creds.jwks_url != NULL && p->key_id != NULL) {
        req_keys(q, &creds);
        return;
    }
    req_verify(q, &creds);
}

/* Signature, body, replay window; then the rate limit and the spool. */
static void req_verify(struct hg_req *q, const struct hg_creds *cr)
{
    const struct hg_provider *p = q->provider;
    struct hg_creds creds = *cr;
    /* The connection is still there, so is its parsed request (it waits for this answer). */
    char why[128] = "signature does not match";
    struct hg_provider_request pr = { .http = q->http, .body = q->body, .body_len = q->body_len };
    if (p->verify(&pr, &creds, why, sizeof(why)) != 0) {
        hg_info(q->request_id, "signature mismatch", "provider", p->name, "tenant", q->tenant_id, "reason", why,
                "client_ip", q->client_ip, NULL);
        count_webhook(q, "unauthorized");
        req_fail(q, 401, "unauthorized", why, NULL);
        return;
    }
    if (q->doc == NULL && q->parse_reason[0] == '\0') {
        struct hg_provider_body b = { q->body, q->body_len, q->headers, q->headers_len };
        q->doc = p->parse(&b, q->parse_reason, sizeof(q->parse_reason));
    }
    if (q->doc == NULL) {
        count_webhook(q, "invalid");
        req_fail(q, 400, "invalid_envelope", q->parse_reason[0] ? q->parse_reason : "invalid body", NULL);
        return;
    }
    q->events = p->count_events(q->doc->root);
    char rkey[REPLAY_KEY_MAX - 16];
    uint64_t ttl_ms = 0;
    if (p->replay_key && p->replay_key(&pr, &creds, rkey, sizeof(rkey), &ttl_ms) == 1) {
        req_replay(q, rkey, ttl_ms);
        return;
    }
    req_limit(q);
}

void hg_ingest_abandon(struct hg_conn *c, void *data)
{
    (void)data;
    struct hg_req *q = hg_conn_get_data(c);
    if (q) {
        q->conn = NULL; /* the spool callback still runs and hands the record on */
        q->http = NULL;
    }
}

/* Bytes the kept headers take as "Name: value\n" lines (before the cap). */
static size_t spool_headers_len(const struct hg_provider *p, const struct hg_http_request *r)
{
    size_t total = 0;
    for (const char *const *h = p->spool_headers; *h; h++) {
        size_t n;
        if (hg_http_header_get(r, *h, &n))
            total += strlen(*h) + 2 + n + 1;
    }
    return total;
}

/* Write the kept headers into out (room for cap bytes plus a NUL); a line that would pass the
 * cap is left out. Returns the length written. */
static size_t spool_headers(const struct hg_provider *p, char *out, size_t cap, const struct hg_http_request *r)
{
    size_t len = 0;
    for (const char *const *h = p->spool_headers; *h; h++) {
        size_t n;
        const char *v = hg_http_header_get(r, *h, &n);
        if (v == NULL)
            continue;
        size_t nl = strlen(*h);
        if (nl + 2 + n + 1 > cap - len)
            continue;
        memcpy(out + len, *h, nl);
        memcpy(out + len + nl, ": ", 2);
        memcpy(out + len + nl + 2, v, n);
        out[len + nl + 2 + n] = '\n';
        len += nl + 2 + n + 1;
    }
    out[len] = '\0';
    return len;
}

/*
 * A request with its own copies of the body and the kept headers in one allocation (the
 * connection's buffers are reused once it is answered; the drain needs both after that).
 */
static struct hg_req *req_new(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r,
                              const struct hg_provider *p, const char *path_tenant, const char *extra,
                              size_t extra_len)
{
    size_t hcap = HG_MIN(spool_headers_len(p, r), (size_t)SPOOLED_HEADERS_MAX) + extra_len;
    struct hg_req *q = hg_xcalloc(1, sizeof(*q) + r->body_len + 1 + hcap + 1);
    q->state = HG_REQ_TENANT;
    q->provider = p;
    q->worker = w;
    q->conn = c;
    q->http = r;
    q->conf = hg_conf_ref(w->conf);
    memcpy(q->request_id, r->request_id, sizeof(q->request_id));
    q->received_at_ns = hg_time_now_ns();
    q->start_mono_ns = r->start_ns;
    if (path_tenant) {
        snprintf(q->path_tenant, sizeof(q->path_tenant), "%s", path_tenant);
        q->tenant_id = q->path_tenant;
    }
    q->body = q->inline_data;
    if (r->body_len)
        memcpy(q->body, r->body, r->body_len);
    q->body[r->body_len] = '\0';
    q->body_len = r->body_len;
    q->headers = q->inline_data + r->body_len + 1;
    q->headers_len = spool_headers(p, q->headers, hcap - extra_len, r);
    /* The provider's own lines go last, always whole (they are bounded by SPOOL_EXTRA_MAX). */
    memcpy(q->headers + q->headers_len, extra, extra_len);
    q->headers_len += extra_len;
    q->headers[q->headers_len] = '\0';
    /* From now on a connection that goes away clears q->conn (hg_ingest_abandon). */
    hg_conn_set_data(c, q);
    return q;
}

/* The ids a provider found, copied: they are valid only during its callback (a provider may
 * build one in a buffer of its own, as Genesys does for the org id in an EventBridge source). */
struct id_list {
    const char *ids[HG_TENANTS_MAX_IDS];
    char copy[HG_TENANTS_MAX_IDS][HG_TENANTS_ID_MAX + 1];
    size_t n;
};

static int collect_id(void *arg, const char *id)
{
    struct id_list *l = arg;
    if (l->n >= HG_TENANTS_MAX_IDS)
        return 0;
    /* Longer than any tenant id can be: kept as "" (skipped as invalid), never cut to a prefix. */
    size_t n = strlen(id);
    if (n > HG_TENANTS_ID_MAX)
        n = 0;
    memcpy(l->copy[l->n], id, n);
    l->copy[l->n][n] = '\0';
    l->ids[l->n] = l->copy[l->n];
    l->n++;
    return 0;
}

/* Resolve the tenant: at once from the config or the LRU, else through Redis / the service. */
static void req_resolve(struct hg_req *q)
{
    struct hg_worker *w = q->worker;
    const char *path = q->path_tenant[0] ? q->path_tenant : NULL;
    struct id_list ids = { .n = 0 };
    if (path == NULL && q->doc && q->provider->tenant_ids)
        q->provider->tenant_ids(q->doc->root, collect_id, &ids);
    struct hg_tenant *t = NULL;
    int rc = hg_tenants_resolve_local(w->tenants, q->conf, path, ids.ids, ids.n, &t);
    if (rc != HG_TENANTS_PENDING) {
        on_tenant(q, rc, t);
        return;
    }
    if (hg_tenants_resolve(w->tenants, q->conf, path, ids.ids, ids.n, on_tenant, q) != 0)
        on_tenant(q, HG_ERR_UNAVAILABLE, NULL);
}

/* Past the per-IP limit: the body is parsed now when it names the tenant, then the tenant. */
static void req_begin(struct hg_req *q)
{
    if (!q->handshake && q->path_tenant[0] == '\0' && q->provider->tenant_ids) {
        /* The body names the tenant; a body that does not parse is still answered 401 first when
         * its signature is wrong, and 400 only after a good one. */
        struct hg_provider_body b = { q->body, q->body_len, q->headers, q->headers_len };
        q->doc = q->provider->parse(&b, q->parse_reason, sizeof(q->parse_reason));
    }
    req_resolve(q);
}

static void on_ip_limit(void *arg, const struct hg_redis_ratelimit_result *res)
{
    struct hg_req *q = arg;
    if (res->fallback)
        hg_metric_inc(HG_M_REDIS_FALLBACK, "op=\"ratelimit\"");
    if (q->conn == NULL) {
        /* Gone while Redis answered: nothing was acknowledged, the provider retries. */
        req_free(q);
        return;
    }
    req_set_state(q, HG_REQ_TENANT);
    if (res->allowed) {
        req_begin(q);
        return;
    }
    char labels[96], retry[48];
    snprintf(labels, sizeof(labels), "provider=\"%s\"", q->provider->name);
    hg_metric_inc(HG_M_RATELIMIT_IP_REJECTED, labels);
    count_webhook_as(q->provider->name, NULL, "rate_limited");
    hg_info(q->request_id, "per-IP rate limit reached", "client_ip", q->client_ip, "provider", q->provider->name,
            NULL);
    long long wait = res->reset_at_unix_s - (long long)(hg_time_now_ns() / 1000000000ull);
    snprintf(retry, sizeof(retry), "Retry-After: %lld\r\n", wait > 0 ? wait : 1);
    req_fail(q, 429, "rate_limited", "too many requests from this client address; retry later", retry);
}

/*
 * [ratelimit] per_ip, before the tenant is looked up, so a flood of made-up tenants from one
 * address is cut here: Redis when configured (every instance shares the window; its own local
 * fallback when Redis is down), else this worker's window.
 */
static void req_ip_limit(struct hg_req *q)
{
    uint32_t limit = q->conf->ratelimit_per_ip;
    if (limit == 0) {
        req_begin(q);
        return;
    }
    if (q->worker->redis) {
        char key[HG_ACCESS_KEY_MAX];
        hg_access_ip_key(q->client_ip, key, sizeof(key));
        req_set_state(q, HG_REQ_IPLIMIT);
        if (hg_redis_ratelimit(q->worker->redis, key, limit, 60000, on_ip_limit, q) == 0)
            return;
    }
    struct hg_redis_ratelimit_result res;
    hg_access_ip_window(&q->client, limit, &res);
    on_ip_limit(q, &res);
}

/*
 * The client address and the provider section's allow / deny, before anything else (answered
 * 403 when refused: false).
 */
static bool client_permitted(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r,
                             const struct hg_provider *p, struct hg_ip *client, char *client_ip)
{
    hg_access_client(w->conf, c, r, client);
    hg_ip_format(client, client_ip, HG_IP_TEXT_MAX);
    if (hg_cidr_rules_permit(hg_conf_ip_rules(w->conf, p->name), client))
        return true;
    refuse_client(c, r->request_id, p->name, client_ip, p->name, NULL);
    return false;
}

static void req_set_client(struct hg_req *q, const struct hg_ip *client, const char *client_ip)
{
    q->client = *client;
    memcpy(q->client_ip, client_ip, sizeof(q->client_ip));
}

void hg_ingest_get(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r, const char *tenant,
                   const struct hg_provider *p)
{
    struct hg_ip client;
    char client_ip[HG_IP_TEXT_MAX];
    if (!client_permitted(w, c, r, p, &client, client_ip))
        return;
    struct hg_req *q = req_new(w, c, r, p, tenant, "", 0);
    q->handshake = true;
    req_set_client(q, &client, client_ip);
    req_ip_limit(q);
}

void hg_ingest_post(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r, const char *tenant,
                    const struct hg_provider *p)
{
    struct hg_ip client;
    char client_ip[HG_IP_TEXT_MAX];
    if (!client_permitted(w, c, r, p, &client, client_ip))
        return;
    char why[128] = "";
    if (p->unsigned_request && p->unsigned_request(r, w->conf, why, sizeof(why))) {
        /* No credential at all: refused before any tenant lookup or copy. */
        count_webhook_as(p->name, tenant, "unauthorized");
        hg_conn_respond_error(c, 401, "unauthorized", why, NULL);
        return;
    }
    const struct hg_source_conf *source = NULL;
    char extra[SPOOL_EXTRA_MAX];
    size_t extra_len = 0;
    if (p->path_names_source) {
        /* The path names a source; the tenant is the source's (NULL: the default tenant). */
        source = hg_conf_source(w->conf, tenant);
        if (source == NULL) {
            count_webhook_as(p->name, NULL, "unknown_source");
            hg_conn_respond_error(c, 404, "unknown_source", "no such source", NULL);
            return;
        }
        if (!hg_cidr_rules_permit(&source->ip, &client)) {
            refuse_client(c, r->request_id, p->name, client_ip, "source", source->name);
            return;
        }
        tenant = source->tenant;
        if (p->spool_extra) {
            struct hg_creds sc = { .source = source };
            extra_len = p->spool_extra(&sc, r, r->body, r->body_len, extra, sizeof(extra));
        }
    }
    struct hg_req *q = req_new(w, c, r, p, tenant, extra, extra_len);
    q->source = source;
    req_set_client(q, &client, client_ip);
    req_ip_limit(q);
}

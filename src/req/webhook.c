/*
 * WhatsApp front door: the GET handshake and the POST ingest chain
 *   resolve tenant → verify signature → validate envelope → spool append (group fsync) → 200
 * after which the record goes to the drain. A request's state lives in struct hg_req; every
 * transition goes through req_set_state().
 */
#include <stdio.h>
#include <string.h>

#include "clients/redis.h"
#include "conf/conf.h"
#include "core/buf.h"
#include "core/common.h"
#include "core/err.h"
#include "core/log.h"
#include "core/time.h"
#include "http/http.h"
#include "ops/metrics.h"
#include "providers/whatsapp.h"
#include "drain/drain.h"
#include "req/req.h"
#include "spool/spool.h"
#include "tenants/tenants.h"
#include "worker/worker.h"

/* Where an ingest request is; every change goes through req_set_state(). */
enum hg_req_state {
    HG_REQ_VERIFY,    /* tenant, signature and envelope checks (synchronous) */
    HG_REQ_RATELIMIT, /* waiting for the tenant's rate limit answer (Redis) */
    HG_REQ_SPOOL,     /* appended, waiting for the group fsync */
    HG_REQ_BROKER,    /* ack = broker: waiting for the broker's confirms */
    HG_REQ_DONE,      /* answered (or its connection went away) */
};

struct hg_req {
    enum hg_req_state state;
    struct hg_worker *worker;
    struct hg_conn *conn;          /* NULL once the connection went away */
    struct hg_conf *conf;          /* the config this request started with (a reference) */
    struct hg_json_doc *doc;       /* parsed envelope, handed to the drain */
    const char *tenant;            /* points into conf */
    char request_id[HG_HTTP_REQUEST_ID_MAX + 1];
    uint64_t received_at_ns;
    uint64_t start_mono_ns;
    int events;
    uint32_t rate_limit;           /* requests per minute for this tenant */
    char rl_headers[192];          /* X-RateLimit-* lines for every answer, "" without Redis */
    char *headers;                 /* spooled request headers ("Name: value\n" lines), in `inline_data` */
    size_t headers_len;
    char *body;                    /* copy of the raw body (the connection may go away meanwhile), in `inline_data` */
    size_t body_len;
    struct hg_tenant *svc_tenant;  /* tenant from the cache / tenant service (a reference) */
    char *sig;                     /* X-Hub-Signature-256 while the tenant is looked up */
    size_t sig_len;
    char *parse_reason;            /* why the body did not parse (400 after a good signature) */
    char inline_data[];            /* body NUL headers NUL: one allocation with the request */
};

static const char *const state_names[] = { "verify", "ratelimit", "spool", "broker", "done" };

static void req_set_state(struct hg_req *q, enum hg_req_state s)
{
    hg_debug(q->request_id, "request state", "from", state_names[q->state], "to", state_names[s], NULL);
    q->state = s;
}

/* A bounded string builder for the small fixed texts of every request (no printf on this path). */
struct text {
    char *p;
    size_t cap;
    size_t len;
};

/* Append n bytes, truncating at cap - 1; the text stays NUL-terminated. */
static void text_add(struct text *t, const char *s, size_t n)
{
    if (t->len + 1 >= t->cap)
        return;
    size_t room = t->cap - 1 - t->len;
    if (n > room)
        n = room;
    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = '\0';
}

static void text_str(struct text *t, const char *s) { text_add(t, s, strlen(s)); }

static void text_int(struct text *t, long long v)
{
    char d[24];
    char *e = d + sizeof(d), *q = e;
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    do {
        *--q = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--q = '-';
    text_add(t, q, (size_t)(e - q));
}

/* webhook_received_total{...,type="webhook",status} for the webhook as a whole. */
static void count_webhook(const char *tenant, const char *status)
{
    char labels[256], esc[128];
    struct text t = { labels, sizeof(labels), 0 };
    labels[0] = '\0';
    text_str(&t, "provider=\"whatsapp\",tenant=\"");
    text_str(&t, hg_metrics_label_escape(esc, sizeof(esc), tenant ? tenant : "unknown"));
    text_str(&t, "\",type=\"webhook\",status=\"");
    text_str(&t, status);
    text_str(&t, "\"");
    hg_metric_inc(HG_M_WEBHOOK_RECEIVED, labels);
}

/* The 200 body: {"status":"accepted","request_id":"...","events":N}. Returns its length. */
static size_t accepted_body(char *out, size_t cap, const char *request_id, int events)
{
    struct text t = { out, cap, 0 };
    out[0] = '\0';
    text_str(&t, "{\"status\":\"accepted\",\"request_id\":\"");
    text_str(&t, request_id);
    text_str(&t, "\",\"events\":");
    text_int(&t, events);
    text_str(&t, "}");
    return t.len;
}

/* The secrets and verify token that apply to a tenant: its own, else the [whatsapp] defaults. */
static const struct hg_strlist *tenant_secrets(const struct hg_conf *conf, const struct hg_tenant_conf *t)
{
    return t && t->app_secrets.n ? &t->app_secrets : &conf->app_secrets;
}

void hg_req_whatsapp_handshake(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r, const char *tenant)
{
    const struct hg_conf *conf = w->conf;
    const struct hg_tenant_conf *t = tenant ? hg_conf_tenant(conf, tenant) : NULL;
    const char *token = t && t->verify_token ? t->verify_token : conf->verify_token;
    char challenge[1024];
    if (token == NULL || token[0] == '\0' ||
        hg_whatsapp_handshake(r->query, r->query_len, token, challenge, sizeof(challenge)) != 0) {
        hg_info(r->request_id, "verification handshake refused", "tenant", t ? t->id : conf->default_tenant, NULL);
        hg_conn_respond_error(c, 403, "forbidden", "verification failed", NULL);
        return;
    }
    hg_conn_respond(c, 200, "text/plain", NULL, challenge, strlen(challenge));
}

struct tenant_match {
    const struct hg_conf *conf;
    const struct hg_tenant_conf *found;
};

static int match_business(void *arg, const char *id)
{
    struct tenant_match *m = arg;
    m->found = hg_conf_tenant_by_business(m->conf, id);
    return m->found != NULL;
}

/* Events a validated envelope will produce: messages + statuses + errors, one per other field. */
static int count_events(const struct hg_json *root)
{
    int n = 0;
    for (struct hg_json_item *ei = hg_json_first(hg_json_get(root, "entry")); ei; ei = ei->next) {
        for (struct hg_json_item *ci = hg_json_first(hg_json_get(ei->val, "changes")); ci; ci = ci->next) {
            struct hg_json *value = hg_json_get(ci->val, "value");
            const char *field = hg_json_str(hg_json_get(ci->val, "field"));
            if (field && strcmp(field, "messages") == 0) {
                n += (int)hg_json_size(hg_json_get(value, "messages"));
                n += (int)hg_json_size(hg_json_get(value, "statuses"));
                n += (int)hg_json_size(hg_json_get(value, "errors"));
            } else {
                n++;
            }
        }
    }
    return n;
}

static void req_free(struct hg_req *q)
{
    hg_json_doc_free(q->doc);
    hg_conf_unref(q->conf);
    if (q->svc_tenant)
        hg_tenant_unref(q->svc_tenant);
    free(q->sig);
    free(q->parse_reason);
    free(q);
}

static void req_answer_error(struct hg_req *q, int status, const char *code, const char *msg, const char *extra)
{
    req_set_state(q, HG_REQ_DONE);
    if (q->conn) {
        char headers[384];
        snprintf(headers, sizeof(headers), "%s%s", q->rl_headers, extra ? extra : "");
        hg_conn_respond_error(q->conn, status, code, msg, headers);
    }
}

static void on_spooled(void *arg, int status, uint64_t id)
{
    struct hg_req *q = arg;
    q->worker->inflight--;
    if (status != 0) {
        hg_error(q->request_id, "spool write failed; answered 503", "error", hg_strerror(status), NULL);
        count_webhook(q->tenant, "unavailable");
        req_answer_error(q, 503, "unavailable", "could not store the webhook durably; retry later",
                         "Retry-After: 5\r\n");
        req_free(q);
        return;
    }
    /* Durable: answer first, then hand the record on. */
    if (q->conn) {
        char body[256];
        size_t n = accepted_body(body, sizeof(body), q->request_id, q->events);
        hg_conn_respond(q->conn, 200, "application/json", q->rl_headers, body, n);
    }
    req_set_state(q, HG_REQ_DONE);
    count_webhook(q->tenant, "accepted");
    hg_metric_observe(HG_M_PROCESSING_DURATION, NULL, (double)(hg_time_mono_ns() - q->start_mono_ns) / 1e9);
    struct hg_drain_record rec = {
        .request_id = q->request_id,
        .tenant = q->tenant,
        .provider = "whatsapp",
        .received_at_ns = q->received_at_ns,
        .headers = q->headers,
        .headers_len = q->headers_len,
        .body = q->body,
        .body_len = q->body_len,
    };
    struct hg_json_doc *doc = q->doc;
    q->doc = NULL;
    hg_drain_submit(q->worker->drain, id, &rec, doc);
    req_free(q);
}

static void on_broker_acked(void *arg, int status)
{
    struct hg_req *q = arg;
    if (status != 0) {
        count_webhook(q->tenant, "unavailable");
        req_answer_error(q, 503, "unavailable", "the broker did not confirm the events; retry later",
                         "Retry-After: 5\r\n");
        req_free(q);
        return;
    }
    req_set_state(q, HG_REQ_DONE);
    count_webhook(q->tenant, "accepted");
    if (q->conn) {
        char body[256];
        size_t n = accepted_body(body, sizeof(body), q->request_id, q->events);
        hg_conn_respond(q->conn, 200, "application/json", q->rl_headers, body, n);
    }
    hg_metric_observe(HG_M_PROCESSING_DURATION, NULL, (double)(hg_time_mono_ns() - q->start_mono_ns) / 1e9);
    req_free(q);
}

/* ack = broker: no spool; the answer waits for the broker's confirms of every event. */
static void req_publish(struct hg_req *q)
{
    req_set_state(q, HG_REQ_BROKER);
    struct hg_drain_record rec = {
        .request_id = q->request_id,
        .tenant = q->tenant,
        .provider = "whatsapp",
        .received_at_ns = q->received_at_ns,
        .headers = q->headers,
        .headers_len = q->headers_len,
        .body = q->body,
        .body_len = q->body_len,
    };
    struct hg_json_doc *doc = q->doc;
    q->doc = NULL;
    hg_drain_submit_acked(q->worker->drain, &rec, doc, on_broker_acked, q);
    /* q may be freed by now. */
}

/* Append to the spool; the answer comes from on_spooled (or at once on refusal). */
static void req_spool(struct hg_req *q)
{
    struct hg_worker *w = q->worker;
    if (w->ack_broker) {
        req_publish(q);
        return;
    }
    struct hg_spool_record rec = {
        .received_at_ns = q->received_at_ns,
        .request_id = q->request_id,
        .tenant = q->tenant,
        .provider = "whatsapp",
        .headers = q->headers,
        .headers_len = q->headers_len,
        .body = q->body,
        .body_len = q->body_len,
    };
    req_set_state(q, HG_REQ_SPOOL);
    int rc = hg_spool_append(w->spool, &rec, on_spooled, q);
    if (rc != 0) {
        bool full = rc == HG_ERR_FULL;
        if (full)
            hg_warn(q->request_id, "spool full; answered 503", NULL);
        else
            hg_error(q->request_id, "spool append failed; answered 503", "error", hg_strerror(rc), NULL);
        count_webhook(q->tenant, "unavailable");
        if (q->conn)
            hg_conn_set_data(q->conn, NULL);
        req_answer_error(q, 503, full ? "spool_full" : "unavailable",
                         full ? "spool quota reached; retry later" : "could not store the webhook; retry later",
                         "Retry-After: 5\r\n");
        req_free(q);
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
    snprintf(labels, sizeof(labels), "tenant=\"%s\"", hg_metrics_label_escape(esc, sizeof(esc), q->tenant));
    hg_metric_inc(HG_M_RATELIMIT_REJECTED, labels);
    count_webhook(q->tenant, "rate_limited");
    long long wait = res->reset_at_unix_s - (long long)(hg_time_now_ns() / 1000000000ull);
    snprintf(retry, sizeof(retry), "Retry-After: %lld\r\n", wait > 0 ? wait : 1);
    if (q->conn)
        hg_conn_set_data(q->conn, NULL);
    req_answer_error(q, 429, "rate_limited", "tenant rate limit reached; retry later", retry);
    req_free(q);
}

void hg_req_abandon(struct hg_conn *c, void *data)
{
    (void)data;
    struct hg_req *q = hg_conn_get_data(c);
    if (q)
        q->conn = NULL; /* the spool callback still runs and hands the record on */
}

/* The request headers a later re-verification or replay needs, as "name: value\n" lines. */
static const char *const spooled_header_names[] = { "X-Hub-Signature-256", "Content-Type", "User-Agent" };
#define SPOOLED_HEADERS_MAX 8192 /* cap on their total size, as before */

/* Bytes spool_headers will write (before the cap). */
static size_t spool_headers_len(const struct hg_http_request *r)
{
    size_t total = 0;
    for (size_t i = 0; i < HG_ARRAY_SIZE(spooled_header_names); i++) {
        size_t n;
        if (hg_http_header_get(r, spooled_header_names[i], &n))
            total += strlen(spooled_header_names[i]) + 2 + n + 1;
    }
    return total;
}

/*
 * Write the kept headers into out (room for cap bytes plus a NUL); a line that would pass the cap
 * is left out, as the capped buffer did. Returns the length written.
 */
static size_t spool_headers(char *out, size_t cap, const struct hg_http_request *r)
{
    size_t len = 0;
    for (size_t i = 0; i < HG_ARRAY_SIZE(spooled_header_names); i++) {
        size_t n;
        const char *v = hg_http_header_get(r, spooled_header_names[i], &n);
        if (v == NULL)
            continue;
        size_t nl = strlen(spooled_header_names[i]);
        if (nl + 2 + n + 1 > cap - len)
            continue;
        memcpy(out + len, spooled_header_names[i], nl);
        memcpy(out + len + nl, ": ", 2);
        memcpy(out + len + nl + 2, v, n);
        out[len + nl + 2 + n] = '\n';
        len += nl + 2 + n + 1;
    }
    out[len] = '\0';
    return len;
}

/*
 * A request with its own copies of the body and the spooled headers in one allocation (the
 * connection's buffers are reused once it is answered; the drain needs both after that).
 */
static struct hg_req *req_new(struct hg_worker *w, struct hg_conn *c, const struct hg_http_request *r)
{
    size_t hcap = HG_MIN(spool_headers_len(r), (size_t)SPOOLED_HEADERS_MAX);
    struct hg_req *q = hg_xcalloc(1, sizeof(*q) + r->body_len + 1 + hcap + 1);
    q->state = HG_REQ_VERIFY;
    q->worker = w;
    q->conn = c;
    q->conf = hg_conf_ref(w->conf);
    memcpy(q->request_id, r->request_id, sizeof(q->request_id));
    q->received_at_ns = hg_time_now_ns();
    q->start_mono_ns = r->start_ns;
    q->body = q->inline_data;
    if (r->body_len)
        memcpy(q->body, r->body, r->body_len);
    q->body[r->body_len] = '\0';
    q->body_len = r->body_len;
    q->headers = q->inline_data + r->body_len + 1;
    q->headers_len = spool_headers(q->headers, hcap, r);
    return q;
}

/* Continue a request whose tenant came from the cache / tenant service. */
static void on_tenant(void *arg, int status, struct hg_tenant *t)
{
    struct hg_req *q = arg;
    if (status != 0) {
        bool missing = status == HG_ERR_NOT_FOUND;
        count_webhook(NULL, missing ? "unknown_tenant" : "unavailable");
        if (missing)
            req_answer_error(q, 404, "unknown_tenant", "no such tenant", NULL);
        else
            req_answer_error(q, 503, "tenant_unavailable", "tenant could not be resolved; retry later",
                             "Retry-After: 10\r\n");
        if (q->conn)
            hg_conn_set_data(q->conn, NULL);
        req_free(q);
        return;
    }
    q->svc_tenant = t;
    q->tenant = t->id;
    q->rate_limit = t->rate_limit ? t->rate_limit : q->conf->ratelimit_default;
    if (hg_whatsapp_verify_signature(q->sig, q->sig_len, q->body, q->body_len, &t->app_secrets) != 0) {
        hg_info(q->request_id, "signature mismatch", "tenant", q->tenant, NULL);
        count_webhook(q->tenant, "unauthorized");
        req_answer_error(q, 401, "unauthorized", "signature does not match", NULL);
    } else if (q->doc == NULL) {
        count_webhook(q->tenant, "invalid");
        req_answer_error(q, 400, "invalid_envelope", q->parse_reason ? q->parse_reason : "invalid envelope", NULL);
    } else {
        q->events = count_events(q->doc->root);
        if (q->worker->redis) {
            req_set_state(q, HG_REQ_RATELIMIT);
            if (hg_redis_ratelimit(q->worker->redis, q->tenant, q->rate_limit, 60000, on_ratelimit, q) == 0)
                return;
        }
        req_spool(q);
        return;
    }
    if (q->conn)
        hg_conn_set_data(q->conn, NULL);
    req_free(q);
}

struct id_list {
    const char *ids[HG_TENANTS_MAX_IDS];
    size_t n;
};

static int collect_id(void *arg, const char *id)
{
    struct id_list *l = arg;
    if (l->n < HG_TENANTS_MAX_IDS)
        l->ids[l->n++] = id;
    return 0;
}

static void req_lookup_tenant(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r,
                              const char *path_tenant, struct hg_json_doc *doc, const char *sig, size_t sig_len,
                              const char *reason)
{
    struct hg_conf *conf = w->conf;
    struct hg_req *q = req_new(w, c, r);
    q->doc = doc;
    q->tenant = conf->default_tenant;
    q->sig = hg_xstrndup(sig, sig_len);
    q->sig_len = sig_len;
    if (doc == NULL && path_tenant) {
        char why[256] = "";
        q->doc = hg_whatsapp_parse(r->body, r->body_len, why, sizeof(why));
        if (q->doc == NULL)
            q->parse_reason = hg_xstrdup(why);
    } else if (doc == NULL) {
        q->parse_reason = hg_xstrdup(reason);
    }
    hg_conn_set_data(c, q);

    struct id_list ids = { .n = 0 };
    if (q->doc)
        hg_whatsapp_business_ids(q->doc->root, collect_id, &ids);
    if (hg_tenants_resolve(w->tenants, conf, path_tenant, ids.ids, ids.n, on_tenant, q) != 0)
        on_tenant(q, HG_ERR_UNAVAILABLE, NULL);
}

void hg_req_whatsapp_ingest(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r, const char *tenant)
{
    struct hg_conf *conf = w->conf;
    size_t sig_len = 0;
    const char *sig = hg_http_header_get(r, "X-Hub-Signature-256", &sig_len);
    const struct hg_tenant_conf *t = NULL;
    struct hg_json_doc *doc = NULL;
    char reason[256] = "";

    if (sig == NULL) {
        count_webhook(tenant, "unauthorized");
        hg_conn_respond_error(c, 401, "unauthorized", "missing X-Hub-Signature-256", NULL);
        return;
    }
    if (tenant) {
        t = hg_conf_tenant(conf, tenant);
    } else {
        /* No tenant in the path: the envelope's WABA / phone number ids may map to one. */
        doc = hg_whatsapp_parse(r->body, r->body_len, reason, sizeof(reason));
        if (doc) {
            struct tenant_match m = { conf, NULL };
            hg_whatsapp_business_ids(doc->root, match_business, &m);
            t = m.found;
        }
    }
    if (t == NULL && w->tenants) {
        /* Not in the config: the tenant cache and the tenant service decide (asynchronously). */
        req_lookup_tenant(w, c, r, tenant, doc, sig, sig_len, reason);
        return;
    }
    const char *tenant_id = t ? t->id : conf->default_tenant;
    const struct hg_strlist *secrets = tenant_secrets(conf, t);
    if (secrets->n == 0) {
        hg_json_doc_free(doc);
        hg_warn(r->request_id, "no app secret configured for tenant; answered 503", "tenant", tenant_id, NULL);
        count_webhook(tenant_id, "unavailable");
        hg_conn_respond_error(c, 503, "tenant_unavailable", "no app secret configured for this tenant",
                              "Retry-After: 30\r\n");
        return;
    }
    if (hg_whatsapp_verify_signature(sig, sig_len, r->body, r->body_len, secrets) != 0) {
        hg_json_doc_free(doc);
        hg_info(r->request_id, "signature mismatch", "tenant", tenant_id, NULL);
        count_webhook(tenant_id, "unauthorized");
        hg_conn_respond_error(c, 401, "unauthorized", "signature does not match", NULL);
        return;
    }
    if (doc == NULL && reason[0] == '\0')
        doc = hg_whatsapp_parse(r->body, r->body_len, reason, sizeof(reason));
    if (doc == NULL) {
        count_webhook(tenant_id, "invalid");
        hg_conn_respond_error(c, 400, "invalid_envelope", reason, NULL);
        return;
    }

    struct hg_req *q = req_new(w, c, r);
    q->doc = doc;
    q->tenant = tenant_id;
    q->events = count_events(doc->root);
    q->rate_limit = t && t->rate_limit ? t->rate_limit : conf->ratelimit_default;
    hg_conn_set_data(c, q);

    if (w->redis) {
        req_set_state(q, HG_REQ_RATELIMIT);
        if (hg_redis_ratelimit(w->redis, q->tenant, q->rate_limit, 60000, on_ratelimit, q) == 0)
            return;
    }
    req_spool(q);
}

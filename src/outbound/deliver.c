/*
 * The outbound scheduler: claims due deliveries from the store (they become "sending"), sends
 * each with the worker's curl multi client, signed by the endpoint's method (sign.c), and settles
 * the attempt in the store: delivered, retry at a durable time, failed, or dead. The store holds
 * the schedule; this holds only what is in flight, so a kill -9 loses nothing that was due. Also
 * here: the config file's endpoints applied to the store, the queue gauges, and watches (the
 * test call waiting for its attempt).
 */
#include <curl/curl.h>
#include <string.h>

#include "clients/http.h"
#include "core/buf.h"
#include "core/common.h"
#include "core/err.h"
#include "core/hmac.h"
#include "core/list.h"
#include "core/log.h"
#include "core/time.h"
#include "core/uuid.h"
#include "ops/metrics.h"
#include "outbound/outbound.h"
#include "outbound/retry.h"
#include "outbound/sign.h"
#include "outbound/store.h"

#define RESP_BODY_KEEP 1024           /* first KiB of the answer is logged */
#define RESP_HEADERS_KEEP 8192
#define IDLE_POLL_MS 5000             /* look at the store at least this often (wall clock jumps) */
#define STORE_RETRY_MS 1000           /* after a store failure */
#define CUSTOM_HEADERS_MAX 32
#define STATS_INTERVAL_MS 2000        /* queue depth, oldest pending, never-attempted alarm */

struct hg_outbound {
    uv_loop_t *loop;
    struct hg_http *http;
    struct hg_ob_store *store;
    uv_timer_t timer;
    uv_timer_t stats_timer;
    bool stats_out;                   /* a stats call is out */
    uint64_t never_attempted_ms;
    json_t *config_want;              /* config endpoints still to apply (latest set), or NULL */
    bool config_out;                  /* a sync call is out */
    uv_timer_t config_timer;          /* retry after a store failure */
    uint32_t max_inflight;
    uint64_t idempotency_ms;
    uint32_t inflight;                /* claimed and not yet settled */
    bool claiming;                    /* a claim call is out */
    bool again;                       /* kicked while claiming: claim again after it */
    bool closing;
    int close_steps;                  /* timer closes, store close */
    struct hg_list attempts;          /* attempts whose HTTP request is out */
    struct hg_list watches;           /* hg_outbound_watch calls waiting for an attempt */
    void (*done)(void *arg);
    void *done_arg;
};

/* One attempt of one delivery, from the claim to its settle. */
struct attempt {
    struct hg_outbound *ob;
    struct hg_list link;              /* in ob->attempts from its claim to its end */
    bool sending;                     /* its HTTP request is out */
    char id[HG_OB_ID_MAX + 1];
    unsigned attempts, round_start;   /* attempts made before this one; where this round began */
    bool test;                        /* POST /v1/endpoints/{id}/test: one attempt, never retried */
    struct hg_ob_retry_policy policy;
    char *body;
    struct hg_http_header headers[CUSTOM_HEADERS_MAX + 8];
    char ts[24];
    char sig[HG_OB_SIG_MAX];
    struct hg_buf resp_headers;
    char resp_body[RESP_BODY_KEEP];
    size_t resp_len;
    uint64_t start_ns;
    int64_t at_ms;
    json_t *endpoint;
    json_t *outcome;                  /* kept while its settle is retried */
    uv_timer_t retry_timer;
};

static int64_t wall_ms(void)
{
    return (int64_t)(hg_time_now_ns() / 1000000);
}

static void schedule(struct hg_outbound *ob);

static void on_timer(uv_timer_t *t)
{
    schedule(t->data);
}

void hg_outbound_kick(struct hg_outbound *ob)
{
    if (ob->closing)
        return;
    if (ob->claiming) {
        ob->again = true;
        return;
    }
    /* A zero timer, not a call: many kicks in one loop turn make one claim. */
    uv_timer_start(&ob->timer, on_timer, 0, 0);
}

struct hg_ob_store *hg_outbound_store(struct hg_outbound *ob)
{
    return ob->store;
}

uint64_t hg_outbound_idempotency_ms(const struct hg_outbound *ob)
{
    return ob->idempotency_ms;
}

/* ---- watches: the test call waits for its delivery's attempt ---- */

struct watch {
    struct hg_list link;              /* in ob->watches until it fires */
    char id[HG_OB_ID_MAX + 1];
    hg_outbound_watch_cb cb;
    void *arg;
    uv_timer_t timer;
};

static void on_watch_closed(uv_handle_t *h)
{
    free(h->data);
}

static void watch_fire(struct watch *w, int err)
{
    hg_list_unlink(&w->link);
    uv_timer_stop(&w->timer);
    uv_close((uv_handle_t *)&w->timer, on_watch_closed);
    w->cb(w->arg, err);
}

static void on_watch_timeout(uv_timer_t *t)
{
    watch_fire(t->data, HG_ERR_TIMEOUT);
}

int hg_outbound_watch(struct hg_outbound *ob, const char *delivery_id, uint64_t timeout_ms, hg_outbound_watch_cb cb,
                      void *arg)
{
    if (ob->closing)
        return HG_ERR_CLOSED;
    struct watch *w = hg_xcalloc(1, sizeof(*w));
    snprintf(w->id, sizeof(w->id), "%s", delivery_id);
    w->cb = cb;
    w->arg = arg;
    uv_timer_init(ob->loop, &w->timer);
    w->timer.data = w;
    uv_timer_start(&w->timer, on_watch_timeout, timeout_ms, 0);
    hg_list_insert_tail(&ob->watches, &w->link);
    return 0;
}

/* The attempt of delivery `id` ended: recorded (err 0) or not (closing). */
static void watches_notify(struct hg_outbound *ob, const char *id, int err)
{
    struct hg_list *pos, *tmp;
    HG_LIST_FOREACH_SAFE(pos, tmp, &ob->watches) {
        struct watch *w = hg_list_entry(pos, struct watch, link);
        if (id == NULL || strcmp(w->id, id) == 0)
            watch_fire(w, err);
    }
}

/* ---- policy and signing ---- */

static uint64_t seconds_ms(const json_t *v, uint64_t def)
{
    return json_is_number(v) ? (uint64_t)(json_number_value(v) * 1000.0 + 0.5) : def;
}

static void policy_of(const json_t *ep, struct hg_ob_retry_policy *p)
{
    hg_ob_retry_policy_default(p);
    json_t *rp = json_object_get(ep, "retry_policy");
    if (!json_is_object(rp))
        return;
    json_t *v = json_object_get(rp, "max_attempts");
    if (json_is_integer(v))
        p->max_attempts = (uint32_t)json_integer_value(v);
    p->initial_delay_ms = seconds_ms(json_object_get(rp, "initial_delay_seconds"), p->initial_delay_ms);
    p->max_delay_ms = seconds_ms(json_object_get(rp, "max_delay_seconds"), p->max_delay_ms);
    v = json_object_get(rp, "backoff_multiplier");
    if (json_is_number(v))
        p->multiplier = json_number_value(v);
    size_t i;
    json_array_foreach(json_object_get(rp, "retry_on_status_codes"), i, v) {
        if (p->n_retry_on < HG_OB_RETRY_CODES_MAX)
            p->retry_on[p->n_retry_on++] = (uint16_t)json_integer_value(v);
    }
}

/*
 * The endpoint's signature header value for this attempt into a->sig; its name, or NULL when
 * the endpoint's secret does not suit its method (the API and the config keep that from happening).
 * During a rotation's grace period (previous_secret_expires_at in the future) Standard Webhooks
 * signs with the old secret too, so receivers can switch secrets at their own pace.
 */
static const char *sign_attempt(struct attempt *a, const json_t *ev, size_t blen)
{
    const json_t *ep = a->endpoint;
    enum hg_ob_sig_method m = HG_OB_SIG_STANDARD_WEBHOOKS;
    const char *mname = json_string_value(json_object_get(ep, "signature_method"));
    if (mname && hg_ob_sig_method_parse(mname, &m) != 0)
        return NULL;
    const char *prev = json_string_value(json_object_get(ep, "previous_secret"));
    const char *until = json_string_value(json_object_get(ep, "previous_secret_expires_at"));
    int64_t until_ms;
    if (prev && (until == NULL || hg_time_parse_rfc3339(until, strlen(until), &until_ms) != 0 || until_ms <= a->at_ms))
        prev = NULL;
    struct hg_ob_sign_input in = {
        .delivery_id = a->id,
        .event_id = json_string_value(json_object_get(ev, "event_id")),
        .event_type = json_string_value(json_object_get(ev, "event_type")),
        .now_s = a->at_ms / 1000,
        .body = a->body,
        .body_len = blen,
        .secret = json_string_value(json_object_get(ep, "secret")),
        .previous_secret = prev,
    };
    return hg_ob_sign(m, &in, a->sig, sizeof(a->sig)) == 0 ? hg_ob_sig_header(m) : NULL;
}

/* The seed's payload: event_type, event_id, timestamp, data, metadata (+ retry_count). */
static char *payload(const json_t *ev, unsigned retry_count)
{
    json_t *meta = json_object_get(ev, "metadata");
    json_t *m = json_is_object(meta) ? json_deep_copy(meta) : json_object();
    json_object_set_new(m, "retry_count", json_integer(retry_count));
    json_t *p = json_pack("{s:O, s:O, s:O, s:O, s:o}", "event_type", json_object_get(ev, "event_type"), "event_id",
                          json_object_get(ev, "event_id"), "timestamp", json_object_get(ev, "timestamp"), "data",
                          json_object_get(ev, "data"), "metadata", m);
    char *s = p ? json_dumps(p, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;
    json_decref(p);
    return s;
}

/* ---- settle ---- */

static void attempt_free(struct attempt *a)
{
    free(a->body);
    hg_buf_free(&a->resp_headers);
    json_decref(a->endpoint);
    json_decref(a->outcome);
    free(a);
}

static void on_retry_timer_closed(uv_handle_t *h)
{
    attempt_free(h->data);
}

static void attempt_end(struct attempt *a)
{
    struct hg_outbound *ob = a->ob;
    ob->inflight--;
    hg_list_unlink(&a->link);
    uv_close((uv_handle_t *)&a->retry_timer, on_retry_timer_closed);
    hg_outbound_kick(ob);
}

static void settle(struct attempt *a);

/* outbound_deliveries_total{endpoint,status}: ids, not URLs (bounded, and no credentials in labels). */
static void count_outcome(const struct attempt *a)
{
    const char *state = json_string_value(json_object_get(a->outcome, "state"));
    const char *status = state && strcmp(state, HG_OB_STATE_PENDING) == 0 ? "retried" : state;
    char id[2 * HG_OB_ID_MAX + 1], labels[3 * HG_OB_ID_MAX + 48];
    hg_metrics_label_escape(id, sizeof(id), json_string_value(json_object_get(a->endpoint, "id")) ?: "");
    snprintf(labels, sizeof(labels), "endpoint=\"%s\",status=\"%s\"", id, status ? status : "unknown");
    hg_metric_inc(HG_M_OUTBOUND_DELIVERIES, labels);
}

static void on_settle_retry(uv_timer_t *t)
{
    settle(t->data);
}

static void on_settled(void *arg, int err, const char *message, json_t *result)
{
    struct attempt *a = arg;
    if (err == HG_ERR_UNAVAILABLE && !a->ob->closing) {
        /* The row stays "sending" until this lands: keep trying (a restart would resend it). */
        hg_warn(NULL, "outbound: cannot record an attempt, retrying", "delivery", a->id, "error",
                message ? message : hg_strerror(err), NULL);
        uv_timer_start(&a->retry_timer, on_settle_retry, STORE_RETRY_MS, 0);
        return;
    }
    if (err != 0 && err != HG_ERR_CLOSED)
        hg_warn(NULL, "outbound: attempt not recorded", "delivery", a->id, "error",
                message ? message : hg_strerror(err), NULL);
    if (err == 0)
        count_outcome(a);
    watches_notify(a->ob, a->id, err == 0 ? 0 : HG_ERR_UNAVAILABLE);
    attempt_end(a);
}

static void settle(struct attempt *a)
{
    int rc = hg_ob_delivery_settle(a->ob->store, a->id, json_incref(a->outcome), on_settled, a);
    if (rc != 0)
        on_settled(a, rc, NULL, NULL);
}

/* The logged response headers as an object (lower-case names; repeats joined by ", "). */
static json_t *headers_json(struct hg_buf *b)
{
    json_t *o = json_object();
    const char *p = hg_buf_cstr(b), *end = p + b->len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if (colon && colon > p) {
            char name[128];
            size_t nn = HG_MIN((size_t)(colon - p), sizeof(name) - 1);
            for (size_t i = 0; i < nn; i++)
                name[i] = (char)((p[i] >= 'A' && p[i] <= 'Z') ? p[i] + 32 : p[i]);
            name[nn] = '\0';
            const char *v = colon + 1;
            while (v < le && (*v == ' ' || *v == '\t'))
                v++;
            json_t *val = json_stringn(v, (size_t)(le - v));
            if (val) {
                json_t *old = json_object_get(o, name);
                if (json_is_string(old)) {
                    char *joined = NULL;
                    if (asprintf(&joined, "%s, %s", json_string_value(old), json_string_value(val)) > 0) {
                        json_object_set_new(o, name, json_string(joined));
                        free(joined);
                    }
                    json_decref(val);
                } else {
                    json_object_set_new(o, name, val);
                }
            }
        }
        p = le + 1;
    }
    return o;
}

/* The kept body as a JSON string: cut back to whole UTF-8 characters, other bytes as '?'. */
static json_t *body_json(const char *b, size_t n)
{
    for (size_t cut = 0; cut < 4 && cut <= n; cut++) {
        json_t *s = json_stringn(b, n - cut);
        if (s)
            return s;
    }
    char tmp[RESP_BODY_KEEP];
    for (size_t i = 0; i < n; i++)
        tmp[i] = (b[i] & 0x80) || b[i] == '\0' ? '?' : b[i];
    return json_stringn(tmp, n);
}

static int on_resp_body(void *arg, const char *data, size_t n)
{
    struct attempt *a = arg;
    size_t take = HG_MIN(n, RESP_BODY_KEEP - a->resp_len);
    memcpy(a->resp_body + a->resp_len, data, take);
    a->resp_len += take;
    return 0; /* the rest is read and dropped, so the connection stays reusable */
}

static void on_response(void *arg, const struct hg_http_resp *resp)
{
    struct attempt *a = arg;
    struct hg_outbound *ob = a->ob;
    a->sending = false;
    if (ob->closing) {
        /* Not recorded: the row is still "sending" and goes out again at the next start. */
        attempt_end(a);
        return;
    }
    uint64_t took_ns = hg_time_mono_ns() - a->start_ns;
    int64_t latency = (int64_t)(took_ns / 1000000);
    if (resp->err != HG_ERR_INVALID)
        hg_metric_observe(HG_M_OUTBOUND_ATTEMPT_DURATION, NULL, (double)took_ns / 1e9);
    enum hg_ob_verdict v = hg_ob_classify(&a->policy, resp->err, resp->status);
    unsigned failed_in_round = a->attempts + 1 - a->round_start;
    const char *state = HG_OB_STATE_DELIVERED;
    int64_t next_at = -1;
    char error[192] = "";
    if (resp->err == HG_ERR_TIMEOUT)
        snprintf(error, sizeof(error), "timeout: %s", curl_easy_strerror((CURLcode)resp->curl_code));
    else if (resp->err == HG_ERR_INVALID)
        snprintf(error, sizeof(error), "cannot build the request (secret or payload)");
    else if (resp->err != 0)
        snprintf(error, sizeof(error), "no answer: %s", curl_easy_strerror((CURLcode)resp->curl_code));
    else if (resp->status >= 300 && resp->status < 400)
        snprintf(error, sizeof(error), "HTTP %ld: redirects are not followed", resp->status);
    else if (v != HG_OB_DELIVERED)
        snprintf(error, sizeof(error), "HTTP %ld", resp->status);
    switch (v) {
    case HG_OB_DELIVERED:
        break;
    case HG_OB_RETRY:
        if (a->test) {
            state = HG_OB_STATE_FAILED; /* a test is one attempt: its answer is what the caller wanted */
        } else if (failed_in_round >= a->policy.max_attempts) {
            state = HG_OB_STATE_DEAD;
        } else {
            state = HG_OB_STATE_PENDING;
            int64_t ra = resp->err == 0 ? hg_ob_retry_after_ms(resp->retry_after, wall_ms()) : -1;
            next_at = wall_ms() + (int64_t)hg_ob_next_delay_ms(&a->policy, failed_in_round, ra, hg_random_u64());
        }
        break;
    case HG_OB_FAILED:
    case HG_OB_GONE:
        state = HG_OB_STATE_FAILED;
        break;
    }
    json_t *att = json_pack("{s:I, s:I, s:I, s:o, s:o}", "at", (json_int_t)a->at_ms, "status",
                            (json_int_t)resp->status, "latency_ms", (json_int_t)latency, "headers",
                            headers_json(&a->resp_headers), "body", body_json(a->resp_body, a->resp_len));
    if (error[0])
        json_object_set_new(att, "error", json_string(error));
    a->outcome = json_pack("{s:o, s:s, s:b}", "attempt", att, "state", state, "disable_endpoint", v == HG_OB_GONE);
    if (next_at >= 0)
        json_object_set_new(a->outcome, "next_at", json_integer(next_at));
    if (v == HG_OB_GONE)
        hg_warn(NULL, "outbound: endpoint answered 410 Gone, disabled", "delivery", a->id, "endpoint",
                json_string_value(json_object_get(a->endpoint, "id")), NULL);
    settle(a);
}

/* ---- send ---- */

static void send_attempt(struct hg_outbound *ob, json_t *d)
{
    struct attempt *a = hg_xcalloc(1, sizeof(*a));
    a->ob = ob;
    a->start_ns = hg_time_mono_ns();
    uv_timer_init(ob->loop, &a->retry_timer);
    a->retry_timer.data = a;
    hg_buf_init(&a->resp_headers, RESP_HEADERS_KEEP);
    snprintf(a->id, sizeof(a->id), "%s", json_string_value(json_object_get(d, "id")));
    a->attempts = (unsigned)json_integer_value(json_object_get(d, "attempts"));
    a->round_start = (unsigned)json_integer_value(json_object_get(d, "round_start"));
    a->endpoint = json_incref(json_object_get(d, "endpoint"));
    a->test = json_is_true(json_object_get(d, "test"));
    policy_of(a->endpoint, &a->policy);
    ob->inflight++;
    hg_list_insert_tail(&ob->attempts, &a->link);

    const json_t *ep = a->endpoint;
    const json_t *ev = json_object_get(d, "event");
    a->body = payload(ev, a->attempts);
    a->at_ms = wall_ms();
    snprintf(a->ts, sizeof(a->ts), "%lld", (long long)(a->at_ms / 1000));
    size_t blen = a->body ? strlen(a->body) : 0;
    const char *sig_header = a->body ? sign_attempt(a, ev, blen) : NULL;
    if (sig_header == NULL) {
        struct hg_http_resp r = { .err = HG_ERR_INVALID };
        on_response(a, &r); /* recorded as a failed attempt; the API keeps this from happening */
        return;
    }
    /* webhook-id and webhook-timestamp go with every method: receivers deduplicate on the id. */
    size_t nh = 0;
    a->headers[nh++] = (struct hg_http_header){ "Content-Type", "application/json" };
    a->headers[nh++] = (struct hg_http_header){ "webhook-id", a->id };
    a->headers[nh++] = (struct hg_http_header){ "webhook-timestamp", a->ts };
    a->headers[nh++] = (struct hg_http_header){ sig_header, a->sig };
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)json_object_get(ep, "custom_headers"), k, v) {
        if (nh < HG_ARRAY_SIZE(a->headers) && json_is_string(v) && strcasecmp(k, sig_header) != 0)
            a->headers[nh++] = (struct hg_http_header){ k, json_string_value(v) };
    }
    uint64_t timeout_ms = seconds_ms(json_object_get(ep, "timeout_seconds"), 15000);
    const char *method = json_string_value(json_object_get(ep, "http_method"));
    struct hg_http_req req = {
        .method = method ? method : "POST",
        .url = json_string_value(json_object_get(ep, "url")),
        .headers = a->headers,
        .nheaders = nh,
        .body = a->body,
        .body_len = blen,
        .resp_write = on_resp_body,
        .resp_write_arg = a,
        .resp_headers = &a->resp_headers,
        .connect_timeout_ms = (uint32_t)HG_MIN(timeout_ms, 10000),
        .timeout_ms = (uint32_t)timeout_ms,
        .max_redirects = 0, /* a 3xx is the answer, and a failure */
    };
    a->start_ns = hg_time_mono_ns();
    a->sending = true;
    int rc = hg_http_request(ob->http, &req, on_response, a);
    if (rc != 0) {
        struct hg_http_resp r = { .err = rc };
        on_response(a, &r);
    }
}

static void on_claimed(void *arg, int err, const char *message, json_t *result)
{
    struct hg_outbound *ob = arg;
    ob->claiming = false;
    if (ob->closing)
        return; /* claimed rows stay "sending": the next start sends them */
    if (err != 0) {
        hg_warn(NULL, "outbound: cannot claim due deliveries", "error", message ? message : hg_strerror(err), NULL);
        uv_timer_start(&ob->timer, on_timer, STORE_RETRY_MS, 0);
        return;
    }
    size_t i;
    json_t *d, *claimed = json_object_get(result, "claimed");
    json_array_foreach(claimed, i, d) send_attempt(ob, d);
    if (ob->again) {
        ob->again = false;
        hg_outbound_kick(ob);
        return;
    }
    json_t *next = json_object_get(result, "next_due");
    uint64_t wait = IDLE_POLL_MS;
    if (json_is_integer(next)) {
        int64_t dt = json_integer_value(next) - wall_ms();
        wait = dt <= 0 ? 0 : HG_MIN((uint64_t)dt, (uint64_t)IDLE_POLL_MS);
    }
    /* Due now but no room: the next settle kicks. */
    if (wait == 0 && ob->inflight >= ob->max_inflight)
        return;
    uv_timer_start(&ob->timer, on_timer, wait, 0);
}

static void schedule(struct hg_outbound *ob)
{
    if (ob->closing || ob->claiming || ob->inflight >= ob->max_inflight)
        return;
    ob->claiming = true;
    int rc = hg_ob_delivery_claim(ob->store, wall_ms(), ob->max_inflight - ob->inflight, on_claimed, ob);
    if (rc != 0) {
        ob->claiming = false;
        uv_timer_start(&ob->timer, on_timer, STORE_RETRY_MS, 0);
    }
}

/* ---- gauges ---- */

static void on_stats_timer(uv_timer_t *t);

static void on_stats(void *arg, int err, const char *message, json_t *result)
{
    struct hg_outbound *ob = arg;
    ob->stats_out = false;
    if (err != 0)
        return; /* the gauges keep their last values; the next tick tries again */
    int64_t now = wall_ms();
    json_t *oldest = json_object_get(result, "oldest_ms");
    double age = json_is_integer(oldest) && json_integer_value(oldest) < now
                     ? (double)(now - json_integer_value(oldest)) / 1000.0 : 0.0;
    hg_metric_set(HG_M_OUTBOUND_QUEUE_DEPTH, NULL, (double)json_integer_value(json_object_get(result, "depth")));
    hg_metric_set(HG_M_OUTBOUND_OLDEST_PENDING, NULL, age);
    hg_metric_set(HG_M_OUTBOUND_NEVER_ATTEMPTED, NULL,
                  (double)json_integer_value(json_object_get(result, "never_attempted")));
}

static void on_stats_timer(uv_timer_t *t)
{
    struct hg_outbound *ob = t->data;
    if (ob->closing || ob->stats_out)
        return;
    ob->stats_out = true;
    if (hg_ob_stats(ob->store, wall_ms() - (int64_t)ob->never_attempted_ms, on_stats, ob) != 0)
        ob->stats_out = false;
}

/* ---- config endpoints ---- */

static void config_sync(struct hg_outbound *ob);

static void on_config_timer(uv_timer_t *t)
{
    config_sync(t->data);
}

static void on_config_synced(void *arg, int err, const char *message, json_t *result)
{
    struct hg_outbound *ob = arg;
    ob->config_out = false;
    if (ob->closing)
        return;
    if (err != 0) {
        hg_error(NULL, "outbound: cannot apply the config file's endpoints, retrying", "error",
                 message ? message : hg_strerror(err), NULL);
        uv_timer_start(&ob->config_timer, on_config_timer, STORE_RETRY_MS, 0);
        return;
    }
    char added[24], changed[24], removed[24];
    snprintf(added, sizeof(added), "%lld", (long long)json_integer_value(json_object_get(result, "added")));
    snprintf(changed, sizeof(changed), "%lld", (long long)json_integer_value(json_object_get(result, "changed")));
    snprintf(removed, sizeof(removed), "%lld", (long long)json_integer_value(json_object_get(result, "removed")));
    hg_info(NULL, "outbound: config endpoints applied", "added", added, "changed", changed, "removed", removed, NULL);
    if (ob->config_want)
        config_sync(ob); /* a reload came meanwhile */
    else
        hg_outbound_kick(ob); /* a new endpoint may have something due (not for new events, but retried ones) */
}

static void config_sync(struct hg_outbound *ob)
{
    if (ob->closing || ob->config_out || ob->config_want == NULL)
        return;
    json_t *docs = ob->config_want;
    ob->config_want = NULL;
    ob->config_out = true;
    int rc = hg_ob_endpoints_sync(ob->store, json_incref(docs), wall_ms(), on_config_synced, ob);
    if (rc != 0) {
        ob->config_out = false;
        ob->config_want = docs; /* kept for the retry */
        uv_timer_start(&ob->config_timer, on_config_timer, STORE_RETRY_MS, 0);
        return;
    }
    json_decref(docs);
}

void hg_outbound_set_config_endpoints(struct hg_outbound *ob, const json_t *docs)
{
    if (ob->closing)
        return;
    json_decref(ob->config_want);
    ob->config_want = docs ? json_deep_copy(docs) : json_array();
    config_sync(ob);
}

/* ---- open / close ---- */

int hg_outbound_open(uv_loop_t *loop, struct hg_http *http, const struct hg_outbound_opts *o,
                     struct hg_outbound **out)
{
    struct hg_ob_store *store;
    int rc = hg_ob_store_open_sqlite(loop, o->store_path, &store);
    if (rc != 0)
        return rc;
    struct hg_outbound *ob = hg_xcalloc(1, sizeof(*ob));
    ob->loop = loop;
    ob->http = http;
    ob->store = store;
    ob->max_inflight = o->max_inflight ? o->max_inflight : 64;
    ob->idempotency_ms = o->idempotency_ms;
    ob->never_attempted_ms = o->never_attempted_ms ? o->never_attempted_ms : 60000;
    hg_list_init(&ob->attempts);
    hg_list_init(&ob->watches);
    uv_timer_init(loop, &ob->timer);
    ob->timer.data = ob;
    uv_timer_init(loop, &ob->stats_timer);
    ob->stats_timer.data = ob;
    uv_timer_init(loop, &ob->config_timer);
    ob->config_timer.data = ob;
    /* Before the first claim: the store runs calls in order, so the file's endpoints are in place. */
    hg_outbound_set_config_endpoints(ob, o->config_endpoints);
    uv_timer_start(&ob->stats_timer, on_stats_timer, 0, STATS_INTERVAL_MS);
    *out = ob;
    hg_outbound_kick(ob); /* what a previous run left due */
    return 0;
}

static void close_step_done(struct hg_outbound *ob)
{
    if (--ob->close_steps > 0)
        return;
    void (*done)(void *) = ob->done;
    void *arg = ob->done_arg;
    free(ob);
    if (done)
        done(arg);
}

static void on_timer_closed(uv_handle_t *h)
{
    close_step_done(h->data);
}

static void on_store_closed(void *arg)
{
    close_step_done(arg);
}

void hg_outbound_close(struct hg_outbound *ob, void (*done)(void *arg), void *arg)
{
    ob->closing = true;
    ob->done = done;
    ob->done_arg = arg;
    ob->close_steps = 4;
    /*
     * Canceled requests call on_response now, which ends them without recording anything; an
     * attempt waiting to retry its settle ends too (its row is sent again at the next start).
     * Settles already queued in the store finish before the store closes.
     */
    struct hg_list *pos, *tmp;
    HG_LIST_FOREACH_SAFE(pos, tmp, &ob->attempts) {
        struct attempt *a = hg_list_entry(pos, struct attempt, link);
        if (a->sending) {
            hg_http_cancel(ob->http, a);
        } else if (uv_is_active((uv_handle_t *)&a->retry_timer)) {
            uv_timer_stop(&a->retry_timer);
            attempt_end(a);
        }
    }
    watches_notify(ob, NULL, HG_ERR_CLOSED);
    uv_close((uv_handle_t *)&ob->timer, on_timer_closed);
    uv_close((uv_handle_t *)&ob->stats_timer, on_timer_closed);
    uv_close((uv_handle_t *)&ob->config_timer, on_timer_closed);
    json_decref(ob->config_want);
    ob->config_want = NULL;
    /* The store runs what was queued (settles included) before it closes. */
    hg_ob_store_close(ob->store, on_store_closed, ob);
}

/*
 * The outbound management API under /v1 on the admin listener: endpoints (CRUD, status, secret
 * rotation, test, recover; config file endpoints are read-only here), events (publish: 202 once
 * the event and its fan-out are durable; idempotent event_id), deliveries (list, get with
 * attempts, manual retry). JSON in and out; errors are {"error":{"code","message","details"}}.
 * The admin router checked the token already.
 */
#include <curl/curl.h>
#include <llhttp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/common.h"
#include "core/err.h"
#include "core/hmac.h"
#include "core/str.h"
#include "core/time.h"
#include "core/uuid.h"
#include "outbound/endpoint.h"
#include "outbound/match.h"
#include "outbound/outbound.h"
#include "outbound/store.h"
#include "worker/worker.h"

#define LIMIT_DEFAULT 50
#define LIMIT_MAX 500
#define QUERY_VALUE_MAX 256
#define TENANT_MAX HG_OB_TENANT_MAX

/* One API call waiting for the store. */
struct call {
    struct hg_conn *conn;      /* NULL once the client went away */
    struct hg_outbound *ob;
    json_t *body;              /* PUT/PATCH: the request's document, merged once the old one is read */
    bool patch;
    bool strip_secret;         /* answers show the secret only on create */
    int ok_status;
    char id[HG_OB_ID_MAX + 1];
};

/* ---- answers ---- */

static void respond_json(struct hg_conn *c, int status, json_t *doc, const char *extra)
{
    char *s = json_dumps(doc, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15));
    if (s == NULL) {
        hg_conn_respond_error(c, 500, "internal", "cannot encode the answer", NULL);
        return;
    }
    hg_conn_respond(c, status, "application/json", extra, s, strlen(s));
    free(s);
}

/* {"error":{"code","message","details"}}; takes `details` (may be NULL). */
static void respond_err(struct hg_conn *c, int status, const char *code, const char *message, json_t *details)
{
    json_t *e = json_pack("{s:{s:s, s:s, s:o}}", "error", "code", code, "message", message, "details",
                          details ? details : json_null());
    respond_json(c, status, e, status == 503 ? "Retry-After: 1\r\n" : NULL);
    json_decref(e);
}

static void respond_store_err(struct hg_conn *c, int err, const char *message)
{
    if (err == HG_ERR_NOT_FOUND)
        respond_err(c, 404, "not_found", message ? message : "not found", NULL);
    else if (err == HG_ERR_INVALID)
        respond_err(c, 409, "conflict", message ? message : "conflict", NULL);
    else
        respond_err(c, 503, "store_unavailable", "the outbound store failed; nothing was changed, try again", NULL);
}

static struct call *call_new(struct hg_conn *c, struct hg_outbound *ob)
{
    struct call *q = hg_xcalloc(1, sizeof(*q));
    q->conn = c;
    q->ob = ob;
    q->ok_status = 200;
    q->strip_secret = true;
    hg_conn_set_data(c, q);
    return q;
}

static void call_free(struct call *q)
{
    json_decref(q->body);
    free(q);
}

void hg_outbound_api_abandon(struct hg_conn *c, void *ud)
{
    (void)ud;
    struct call *q = hg_conn_get_data(c);
    if (q)
        q->conn = NULL; /* the store's callback still runs; its answer has nowhere to go */
}

/* The connection to answer on, taken out of the call (NULL when the client went away). */
static struct hg_conn *take_conn(struct call *q)
{
    struct hg_conn *c = q->conn;
    if (c)
        hg_conn_set_data(c, NULL);
    q->conn = NULL;
    return c;
}

/* The common store callback: answer with the result (or the error), then free the call. */
static void on_store_answer(void *arg, int err, const char *message, json_t *result)
{
    struct call *q = arg;
    struct hg_conn *c = take_conn(q);
    if (c) {
        if (err != 0) {
            respond_store_err(c, err, message);
        } else if (result == NULL) {
            hg_conn_respond(c, 204, "application/json", NULL, NULL, 0);
        } else {
            if (q->strip_secret)
                hg_ob_endpoint_strip_secrets(result);
            respond_json(c, q->ok_status, result, NULL);
        }
    }
    call_free(q);
}

/* A store call that returned an error at once: answer and free. */
static void started(struct call *q, int rc)
{
    if (rc != 0)
        on_store_answer(q, rc == HG_ERR_CLOSED ? HG_ERR_UNAVAILABLE : rc, NULL, NULL);
}

/* ---- request parsing ---- */

static json_t *parse_body(struct hg_conn *c, const struct hg_http_request *r)
{
    json_error_t je;
    if (r->body_len == 0) {
        respond_err(c, 400, "invalid_json", "the request needs a JSON object body", NULL);
        return NULL;
    }
    json_t *doc = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &je);
    if (doc == NULL) {
        char msg[256];
        snprintf(msg, sizeof(msg), "the body is not valid JSON: %s (line %d, column %d)", je.text, je.line, je.column);
        respond_err(c, 400, "invalid_json", msg, NULL);
        return NULL;
    }
    if (!json_is_object(doc)) {
        json_decref(doc);
        respond_err(c, 400, "invalid_json", "the body must be a JSON object", NULL);
        return NULL;
    }
    return doc;
}

/* The query parameter `name`, percent-decoded, into out; 1 found, 0 absent, -1 malformed/too long. */
static int query_get(const struct hg_http_request *r, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    const char *p = r->query, *end = r->query + r->query_len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        const char *ke = eq ? eq : pe;
        if ((size_t)(ke - p) == nl && memcmp(p, name, nl) == 0) {
            const char *v = eq ? eq + 1 : pe;
            size_t n;
            if (hg_percent_decode(v, (size_t)(pe - v), HG_PERCENT_PLUS, out, cap - 1, &n) != 0 ||
                memchr(out, '\0', n) != NULL)
                return -1;
            out[n] = '\0';
            return 1;
        }
        p = pe + 1;
    }
    return 0;
}

/* limit and cursor of a list call; false when it answered 400. */
static bool page_params(struct hg_conn *c, const struct hg_http_request *r, unsigned *limit, char *cursor)
{
    char v[QUERY_VALUE_MAX];
    int64_t n = LIMIT_DEFAULT;
    int rc = query_get(r, "limit", v, sizeof(v));
    if (rc < 0 || (rc > 0 && hg_str_to_i64(v, 1, LIMIT_MAX, &n) != 0)) {
        respond_err(c, 400, "invalid_query", "limit must be an integer from 1 to 500", NULL);
        return false;
    }
    *limit = (unsigned)n;
    cursor[0] = '\0';
    rc = query_get(r, "cursor", cursor, HG_OB_ID_MAX);
    if (rc < 0) {
        respond_err(c, 400, "invalid_query", "cursor is not one this API gave", NULL);
        return false;
    }
    return true;
}

/* A time parameter: RFC 3339, or seconds since the epoch. 1 found, 0 absent, -1 bad. */
static int query_time(const struct hg_http_request *r, const char *name, int64_t *ms)
{
    char v[QUERY_VALUE_MAX];
    int rc = query_get(r, name, v, sizeof(v));
    if (rc <= 0)
        return rc;
    int64_t secs;
    if (hg_str_to_i64(v, 0, 253402300799LL, &secs) == 0) {
        *ms = secs * 1000;
        return 1;
    }
    return hg_time_parse_rfc3339(v, strlen(v), ms) == 0 ? 1 : -1;
}

static int64_t wall_ms(void)
{
    return (int64_t)(hg_time_now_ns() / 1000000);
}

static json_t *rfc3339_now(int64_t ms)
{
    char ts[40];
    hg_time_rfc3339(ts, sizeof(ts), (uint64_t)ms * 1000000ull, 3);
    return json_string(ts);
}

static void new_id(char *out, size_t cap, const char *prefix)
{
    snprintf(out, cap, "%s%012llx%016llx", prefix, (unsigned long long)wall_ms(), (unsigned long long)hg_random_u64());
}

static void respond_problems(struct hg_conn *c, struct hg_ob_problems *p)
{
    char msg[320];
    json_t *first = json_array_get(p->list, 0);
    snprintf(msg, sizeof(msg), "%s %s", json_string_value(json_object_get(first, "field")),
             json_string_value(json_object_get(first, "message")));
    respond_err(c, 422, "validation_failed", msg, p->list);
    p->list = NULL;
}

/* ---- endpoints ---- */

static void endpoint_create(struct hg_outbound *ob, struct hg_conn *c, const struct hg_http_request *r)
{
    json_t *in = parse_body(c, r);
    if (in == NULL)
        return;
    struct hg_ob_problems p = { json_array() };
    json_t *ep = hg_ob_endpoint_canonical(in, &p);
    json_decref(in);
    if (ep == NULL) {
        respond_problems(c, &p);
        return;
    }
    json_decref(p.list);
    char id[HG_OB_ID_MAX];
    new_id(id, sizeof(id), "ep_");
    int64_t now = wall_ms();
    json_object_set_new(ep, "id", json_string(id));
    json_object_set_new(ep, "status", json_string("active"));
    json_object_set_new(ep, "source", json_string("api"));
    json_object_set_new(ep, "created_at", rfc3339_now(now));
    json_object_set_new(ep, "updated_at", rfc3339_now(now));
    if (json_object_get(ep, "secret") == NULL) {
        char *s = hg_ob_secret_generate();
        json_object_set_new(ep, "secret", json_string(s));
        hg_wipe(s, strlen(s));
        free(s);
    }
    struct call *q = call_new(c, ob);
    q->ok_status = 201;
    q->strip_secret = false; /* the one answer that shows it */
    started(q, hg_ob_endpoint_create(hg_outbound_store(ob), ep, on_store_answer, q));
}

/* A [endpoint.<name>] endpoint: the config file owns it; the API only reads, tests and pauses it. */
static bool from_config(struct call *q, const json_t *old)
{
    const char *src = json_string_value(json_object_get(old, "source"));
    if (src == NULL || strcmp(src, "config") != 0)
        return false;
    respond_err(take_conn(q), 409, "conflict",
                "this endpoint comes from the config file ([endpoint.<name>]): change it there and reload", NULL);
    call_free(q);
    return true;
}

static void on_endpoint_read_for_update(void *arg, int err, const char *message, json_t *old)
{
    struct call *q = arg;
    if (err != 0 || q->conn == NULL) {
        on_store_answer(q, err, message, NULL);
        return;
    }
    if (from_config(q, old))
        return;
    /* PATCH: the old fields, each given one replacing it (null = back to the default). PUT: the
     * new document whole; the secret, id, status and dates stay unless given. */
    json_t *in = q->patch ? json_deep_copy(old) : json_incref(q->body);
    if (q->patch) {
        const char *k;
        json_t *v;
        json_object_foreach(q->body, k, v) json_object_set(in, k, v);
    }
    struct hg_ob_problems p = { json_array() };
    json_t *ep = hg_ob_endpoint_canonical(in, &p);
    json_decref(in);
    if (ep == NULL) {
        respond_problems(take_conn(q), &p);
        call_free(q);
        return;
    }
    json_decref(p.list);
    static const char *const kept[] = { "id", "status", "source", "created_at" };
    for (size_t i = 0; i < HG_ARRAY_SIZE(kept); i++)
        if (json_object_get(old, kept[i]))
            json_object_set(ep, kept[i], json_object_get(old, kept[i]));
    /* A PUT or PATCH that gives no secret keeps the old one and a rotation's grace period with it;
     * one that gives a secret replaces it at once (rotate for a grace period). */
    const char *given = json_string_value(json_object_get(ep, "secret"));
    if (given == NULL || (q->patch && json_object_get(q->body, "secret") == NULL)) {
        static const char *const secrets[] = { "secret", "previous_secret", "previous_secret_expires_at" };
        for (size_t i = 0; i < HG_ARRAY_SIZE(secrets); i++)
            if (json_object_get(old, secrets[i]))
                json_object_set(ep, secrets[i], json_object_get(old, secrets[i]));
        if (!hg_ob_endpoint_secret_fits(ep)) {
            json_decref(ep);
            respond_err(take_conn(q), 422, "validation_failed",
                        "secret does not suit the new signature_method: give one with it",
                        json_pack("[{s:s, s:s}]", "field", "secret",
                                  "message", "the stored secret does not suit this signature_method"));
            call_free(q);
            return;
        }
    }
    json_object_set_new(ep, "updated_at", rfc3339_now(wall_ms()));
    started(q, hg_ob_endpoint_replace(hg_outbound_store(q->ob), q->id, ep, on_store_answer, q));
}

static void endpoint_update(struct hg_outbound *ob, struct hg_conn *c, const struct hg_http_request *r,
                            const char *id, bool patch)
{
    json_t *in = parse_body(c, r);
    if (in == NULL)
        return;
    struct call *q = call_new(c, ob);
    q->body = in;
    q->patch = patch;
    snprintf(q->id, sizeof(q->id), "%s", id);
    started(q, hg_ob_endpoint_get(hg_outbound_store(ob), id, on_endpoint_read_for_update, q));
}

static void on_endpoint_read_for_delete(void *arg, int err, const char *message, json_t *old)
{
    struct call *q = arg;
    if (err != 0 || q->conn == NULL) {
        on_store_answer(q, err, message, NULL);
        return;
    }
    if (from_config(q, old))
        return;
    started(q, hg_ob_endpoint_delete(hg_outbound_store(q->ob), q->id, on_store_answer, q));
}

static void on_status_set(void *arg, int err, const char *message, json_t *result)
{
    struct call *q = arg;
    const char *st = err == 0 ? json_string_value(json_object_get(result, "status")) : NULL;
    if (st && strcmp(st, "active") == 0)
        hg_outbound_kick(q->ob); /* its waiting deliveries may be due */
    on_store_answer(arg, err, message, result);
}

static void endpoint_status(struct hg_outbound *ob, struct hg_conn *c, const struct hg_http_request *r,
                            const char *id)
{
    json_t *in = parse_body(c, r);
    if (in == NULL)
        return;
    const char *st = json_string_value(json_object_get(in, "status"));
    if (st == NULL || (strcmp(st, "active") != 0 && strcmp(st, "paused") != 0 && strcmp(st, "disabled") != 0)) {
        json_decref(in);
        respond_err(c, 422, "validation_failed", "status must be active, paused or disabled",
                    json_pack("[{s:s, s:s}]", "field", "status", "message", "must be active, paused or disabled"));
        return;
    }
    struct call *q = call_new(c, ob);
    started(q, hg_ob_endpoint_set_status(hg_outbound_store(ob), id, st, on_status_set, q));
    json_decref(in);
}

/* ---- secret rotation ---- */

#define GRACE_DEFAULT_S 86400
#define GRACE_MAX_S (7 * 86400)

static void on_rotated(void *arg, int err, const char *message, json_t *result)
{
    struct call *q = arg;
    if (err == 0) {
        /* The one answer that shows the new secret. */
        json_t *a = json_pack("{s:O, s:O, s:O}", "id", json_object_get(result, "id"), "secret",
                              json_object_get(result, "secret"), "previous_secret_expires_at",
                              json_object_get(result, "previous_secret_expires_at")
                                  ? json_object_get(result, "previous_secret_expires_at") : json_null());
        struct hg_conn *c = take_conn(q);
        if (c)
            respond_json(c, 200, a, NULL);
        json_decref(a);
        call_free(q);
        return;
    }
    on_store_answer(arg, err, message, result);
}

static void on_endpoint_read_for_rotate(void *arg, int err, const char *message, json_t *old)
{
    struct call *q = arg;
    if (err != 0 || q->conn == NULL) {
        on_store_answer(q, err, message, NULL);
        return;
    }
    if (from_config(q, old))
        return;
    json_t *ep = json_deep_copy(old);
    const char *given = json_string_value(json_object_get(q->body, "secret"));
    json_t *probe = given ? json_pack("{s:O, s:s}", "signature_method", json_object_get(ep, "signature_method"),
                                      "secret", given) : NULL;
    bool fits = probe == NULL || hg_ob_endpoint_secret_fits(probe);
    json_decref(probe);
    if (!fits) {
        json_decref(ep);
        respond_err(take_conn(q), 422, "validation_failed", "secret does not suit the endpoint's signature_method",
                    json_pack("[{s:s, s:s}]", "field", "secret", "message",
                              "does not suit the endpoint's signature_method"));
        call_free(q);
        return;
    }
    int64_t now = wall_ms();
    json_t *g = json_object_get(q->body, "grace_period_seconds");
    int64_t grace_ms = (int64_t)((json_is_number(g) ? json_number_value(g) : GRACE_DEFAULT_S) * 1000.0);
    if (grace_ms > 0 && json_is_string(json_object_get(old, "secret"))) {
        json_object_set(ep, "previous_secret", json_object_get(old, "secret"));
        json_object_set_new(ep, "previous_secret_expires_at", rfc3339_now(now + grace_ms));
    } else {
        json_object_del(ep, "previous_secret");
        json_object_del(ep, "previous_secret_expires_at");
    }
    char *fresh = given ? NULL : hg_ob_secret_generate();
    json_object_set_new(ep, "secret", json_string(given ? given : fresh));
    if (fresh) {
        hg_wipe(fresh, strlen(fresh));
        free(fresh);
    }
    json_object_set_new(ep, "updated_at", rfc3339_now(now));
    started(q, hg_ob_endpoint_replace(hg_outbound_store(q->ob), q->id, ep, on_rotated, q));
}

/* POST /v1/endpoints/{id}/secret/rotate {"secret"?, "grace_period_seconds"?}: the body may be empty. */
static void endpoint_rotate(struct hg_outbound *ob, struct hg_conn *c, const struct hg_http_request *r,
                            const char *id)
{
    json_t *in = r->body_len ? parse_body(c, r) : json_object();
    if (in == NULL)
        return;
    struct hg_ob_problems p = { json_array() };
    const char *k;
    json_t *v;
    json_object_foreach(in, k, v) {
        if (strcmp(k, "secret") != 0 && strcmp(k, "grace_period_seconds") != 0)
            hg_ob_problem(&p, k, "is not a rotation field (secret, grace_period_seconds)");
    }
    json_t *sec = json_object_get(in, "secret");
    if (sec && !json_is_null(sec) && !json_is_string(sec))
        hg_ob_problem(&p, "secret", "must be a string");
    json_t *g = json_object_get(in, "grace_period_seconds");
    if (g && !json_is_null(g) && (!json_is_number(g) || json_number_value(g) < 0 || json_number_value(g) > GRACE_MAX_S))
        hg_ob_problem(&p, "grace_period_seconds", "must be a number of seconds from 0 to %d", GRACE_MAX_S);
    if (json_array_size(p.list) > 0) {
        json_decref(in);
        respond_problems(c, &p);
        return;
    }
    json_decref(p.list);
    struct call *q = call_new(c, ob);
    q->body = in;
    snprintf(q->id, sizeof(q->id), "%s", id);
    started(q, hg_ob_endpoint_get(hg_outbound_store(ob), id, on_endpoint_read_for_rotate, q));
}

/* ---- test: one webhook.test event to one endpoint, answered with its attempt ---- */

/* Longest wait for the attempt: the longest timeout_seconds plus time to be claimed. */
#define TEST_WAIT_MS ((300 + 30) * 1000)

static void on_test_read(void *arg, int err, const char *message, json_t *d)
{
    struct call *q = arg;
    struct hg_conn *c = take_conn(q);
    if (c && err != 0) {
        respond_store_err(c, err, message);
    } else if (c) {
        json_t *log = json_object_get(d, "attempt_log");
        json_t *last = json_array_get(log, json_array_size(log) - 1);
        const char *st = json_string_value(json_object_get(d, "status"));
        json_t *a = json_pack("{s:O, s:O, s:O, s:b, s:O}", "delivery_id", json_object_get(d, "id"), "event_id",
                              json_object_get(d, "event_id"), "status", json_object_get(d, "status"), "delivered",
                              st && strcmp(st, HG_OB_STATE_DELIVERED) == 0, "attempt", last ? last : json_null());
        respond_json(c, 200, a, NULL);
        json_decref(a);
    }
    call_free(q);
}

static void on_test_attempted(void *arg, int err)
{
    struct call *q = arg;
    const char *did = json_string_value(json_object_get(q->body, "delivery_id"));
    if (err == 0 && q->conn != NULL) {
        started(q, hg_ob_delivery_get(hg_outbound_store(q->ob), did, on_test_read, q));
        return;
    }
    struct hg_conn *c = take_conn(q);
    if (c && err == HG_ERR_TIMEOUT)
        respond_err(c, 504, "timeout", "the test attempt did not end in time; see GET /v1/deliveries/{delivery_id}",
                    json_pack("{s:s}", "delivery_id", did));
    else if (c)
        respond_err(c, 503, "unavailable", "the test attempt was not recorded (stopping or store failure)",
                    json_pack("{s:s}", "delivery_id", did));
    call_free(q);
}

static void on_test_published(void *arg, int err, const char *message, json_t *result)
{
    struct call *q = arg;
    if (err != 0) {
        on_store_answer(q, err, message, NULL);
        return;
    }
    q->body = json_incref(result);
    /* Registered before the kick: the attempt cannot end before someone waits for it. */
    int rc = hg_outbound_watch(q->ob, json_string_value(json_object_get(result, "delivery_id")), TEST_WAIT_MS,
                               on_test_attempted, q);
    if (rc != 0) {
        on_test_attempted(q, rc);
        return;
    }
    hg_outbound_kick(q->ob);
}

/* POST /v1/endpoints/{id}/test, body optional: {"data"?: the sample payload's data}. */
static void endpoint_test(struct hg_outbound *ob, struct hg_conn *c, const struct hg_http_request *r,
                          const char *id)
{
    json_t *in = r->body_len ? parse_body(c, r) : json_object();
    if (in == NULL)
        return;
    const char *k;
    json_t *v;
    json_object_foreach(in, k, v) {
        if (strcmp(k, "data") != 0) {
            char f[80];
            snprintf(f, sizeof(f), "%.64s", k);
            json_decref(in);
            respond_err(c, 422, "validation_failed", "the test body takes only \"data\"",
                        json_pack("[{s:s, s:s}]", "field", f, "message", "is not a test field"));
            return;
        }
    }
    int64_t now = wall_ms();
    char eid[HG_OB_ID_MAX];
    new_id(eid, sizeof(eid), "evt_");
    json_t *data = json_object_get(in, "data");
    json_t *ev = json_pack("{s:s, s:s, s:o, s:{s:b}, s:o, s:I}", "event_id", eid, "event_type", "webhook.test", "data",
                           data ? json_incref(data)
                                : json_pack("{s:s, s:s}", "message", "a test event from hookgate", "endpoint_id", id),
                           "metadata", "test", 1, "timestamp", rfc3339_now(now), "created_at", (json_int_t)now);
    json_decref(in);
    struct call *q = call_new(c, ob);
    snprintf(q->id, sizeof(q->id), "%s", id);
    started(q, hg_ob_event_publish_test(hg_outbound_store(ob), ev, id, on_test_published, q));
}

/* ---- recover ---- */

static void on_recovered(void *arg, int err, const char *message, json_t *result)
{
    struct call *q = arg;
    if (err == 0 && json_integer_value(json_object_get(result, "recovered")) > 0)
        hg_outbound_kick(q->ob);
    on_store_answer(arg, err, message, result);
}

/* POST /v1/endpoints/{id}/recover?since=&until=: since is required (no accidental resend of a
 * whole history), until defaults to now. */
static void endpoint_recover(struct hg_outbound *ob, struct hg_conn *c, const struct hg_http_request *r,
                             const char *id)
{
    int64_t since, until = wall_ms() + 1;
    int rs = query_time(r, "since", &since), ru = query_time(r, "until", &until);
    if (rs <= 0 || ru < 0) {
        respond_err(c, 400, "invalid_query",
                    rs == 0 ? "since is required (RFC 3339 or epoch seconds)"
                            : "since and until must be RFC 3339 times or epoch seconds", NULL);
        return;
    }
    if (until <= since) {
        respond_err(c, 400, "invalid_query", "until must be after since", NULL);
        return;
    }
    struct call *q = call_new(c, ob);
    q->ok_status = 202;
    started(q, hg_ob_endpoint_recover(hg_outbound_store(ob), id, since, until, wall_ms(), on_recovered, q));
}

/* ---- events ---- */

static void on_published(void *arg, int err, const char *message, json_t *result)
{
    struct call *q = arg;
    if (err == 0) {
        if (json_integer_value(json_object_get(result, "deliveries")) > 0)
            hg_outbound_kick(q->ob);
        json_object_del(result, "duplicate");
        q->ok_status = 202;
    }
    on_store_answer(arg, err, message, result);
}

static void event_publish(struct hg_outbound *ob, struct hg_conn *c, const struct hg_http_request *r)
{
    json_t *in = parse_body(c, r);
    if (in == NULL)
        return;
    struct hg_ob_problems p = { json_array() };
    static const char *const fields[] = { "event_type", "event_id", "tenant", "data", "metadata" };
    const char *k;
    json_t *v;
    json_object_foreach(in, k, v) {
        bool ok = false;
        for (size_t i = 0; i < HG_ARRAY_SIZE(fields); i++)
            ok = ok || strcmp(k, fields[i]) == 0;
        if (!ok) {
            char f[80];
            snprintf(f, sizeof(f), "%.64s", k);
            hg_ob_problem(&p, f, "is not an event field");
        }
    }
    const char *type = json_string_value(json_object_get(in, "event_type"));
    if (!hg_ob_type_valid(type))
        hg_ob_problem(&p, "event_type", "is required: dot-separated segments of A-Z a-z 0-9 _ - (at most %d characters)",
                HG_OB_TYPE_MAX);
    json_t *eid = json_object_get(in, "event_id");
    if (eid && !json_is_null(eid) && (!json_is_string(eid) || !hg_ob_id_chars(json_string_value(eid), HG_OB_ID_MAX - 1)))
        hg_ob_problem(&p, "event_id", "must be 1 to %d of A-Z a-z 0-9 _ - . :", HG_OB_ID_MAX - 1);
    json_t *t = json_object_get(in, "tenant");
    if (t && !json_is_null(t) && (!json_is_string(t) || !hg_ob_id_chars(json_string_value(t), TENANT_MAX)))
        hg_ob_problem(&p, "tenant", "must be a tenant id: 1 to 64 of A-Z a-z 0-9 _ - . :");
    if (json_object_get(in, "data") == NULL)
        hg_ob_problem(&p, "data", "is required");
    json_t *md = json_object_get(in, "metadata");
    if (md && !json_is_null(md) && !json_is_object(md))
        hg_ob_problem(&p, "metadata", "must be an object");
    if (json_array_size(p.list) > 0) {
        json_decref(in);
        respond_problems(c, &p);
        return;
    }
    json_decref(p.list);
    int64_t now = wall_ms();
    char id[HG_OB_ID_MAX];
    if (eid == NULL || json_is_null(eid))
        new_id(id, sizeof(id), "evt_");
    else
        snprintf(id, sizeof(id), "%s", json_string_value(eid));
    json_t *ev = json_pack("{s:s, s:s, s:O, s:o, s:o, s:I}", "event_id", id, "event_type", type, "data",
                           json_object_get(in, "data"), "metadata",
                           json_is_object(md) ? json_deep_copy(md) : json_object(), "timestamp", rfc3339_now(now),
                           "created_at", (json_int_t)now);
    if (t && json_is_string(t))
        json_object_set(ev, "tenant", t);
    json_decref(in);
    struct call *q = call_new(c, ob);
    int64_t window = (int64_t)hg_outbound_idempotency_ms(ob);
    started(q, hg_ob_event_publish(hg_outbound_store(ob), ev, window, on_published, q));
}

/* ---- deliveries ---- */

static void delivery_list(struct hg_outbound *ob, struct hg_conn *c, const struct hg_http_request *r)
{
    unsigned limit;
    char cursor[HG_OB_ID_MAX + 1];
    if (!page_params(c, r, &limit, cursor))
        return;
    json_t *f = json_object();
    static const char *const text[] = { "endpoint_id", "event_type", "status" };
    for (size_t i = 0; i < HG_ARRAY_SIZE(text); i++) {
        char v[QUERY_VALUE_MAX];
        int rc = query_get(r, text[i], v, sizeof(v));
        if (rc < 0) {
            json_decref(f);
            respond_err(c, 400, "invalid_query", "a query parameter is malformed or too long", NULL);
            return;
        }
        if (rc > 0)
            json_object_set_new(f, text[i], json_string(v));
    }
    const char *st = json_string_value(json_object_get(f, "status"));
    if (st && strcmp(st, HG_OB_STATE_PENDING) != 0 && strcmp(st, HG_OB_STATE_SENDING) != 0 &&
        strcmp(st, HG_OB_STATE_DELIVERED) != 0 && strcmp(st, HG_OB_STATE_FAILED) != 0 &&
        strcmp(st, HG_OB_STATE_DEAD) != 0) {
        json_decref(f);
        respond_err(c, 400, "invalid_query", "status must be pending, sending, delivered, failed or dead", NULL);
        return;
    }
    static const char *const times[] = { "since", "until" };
    for (size_t i = 0; i < 2; i++) {
        int64_t ms;
        int rc = query_time(r, times[i], &ms);
        if (rc < 0) {
            json_decref(f);
            respond_err(c, 400, "invalid_query", "since and until must be RFC 3339 times or epoch seconds", NULL);
            return;
        }
        if (rc > 0)
            json_object_set_new(f, times[i], json_integer(ms));
    }
    struct call *q = call_new(c, ob);
    started(q, hg_ob_delivery_list(hg_outbound_store(ob), f, cursor, limit, on_store_answer, q));
}

static void on_retried(void *arg, int err, const char *message, json_t *result)
{
    struct call *q = arg;
    if (err == 0)
        hg_outbound_kick(q->ob);
    on_store_answer(arg, err, message, result);
}

/* ---- routing ---- */

static void method_not_allowed(struct hg_conn *c, const char *allow)
{
    char hdr[96];
    snprintf(hdr, sizeof(hdr), "Allow: %s\r\n", allow);
    json_t *e = json_pack("{s:{s:s, s:s, s:n}}", "error", "code", "method_not_allowed", "message",
                          "method not allowed on this path", "details");
    respond_json(c, 405, e, hdr);
    json_decref(e);
}

#define SEGMENTS_MAX 4

/* Split "a/b/c/d" into at most 4 segments; false when there are more or one is empty/too long. */
static bool split(const char *path, char seg[SEGMENTS_MAX][HG_OB_ID_MAX + 1], int *n)
{
    *n = 0;
    const char *p = path;
    while (*p) {
        const char *sl = strchr(p, '/');
        size_t len = sl ? (size_t)(sl - p) : strlen(p);
        if (*n == SEGMENTS_MAX || len == 0 || len > HG_OB_ID_MAX)
            return false;
        memcpy(seg[*n], p, len);
        seg[*n][len] = '\0';
        (*n)++;
        if (!sl)
            break;
        p = sl + 1;
        if (*p == '\0')
            return false; /* trailing slash */
    }
    return *n > 0;
}

void hg_outbound_api(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r, const char *path)
{
    struct hg_outbound *ob = w->outbound;
    char seg[SEGMENTS_MAX][HG_OB_ID_MAX + 1];
    int n;
    if (ob == NULL) {
        respond_err(c, 503, "unavailable", "outbound delivery is not running", NULL);
        return;
    }
    if (!split(path, seg, &n)) {
        respond_err(c, 404, "not_found", "no such API path", NULL);
        return;
    }
    int m = r->method;
    bool get = m == HTTP_GET || m == HTTP_HEAD;
    struct hg_ob_store *st = hg_outbound_store(ob);
    if (strcmp(seg[0], "endpoints") == 0) {
        if (n == 1) {
            if (m == HTTP_POST) {
                endpoint_create(ob, c, r);
            } else if (get) {
                unsigned limit;
                char cursor[HG_OB_ID_MAX + 1];
                if (page_params(c, r, &limit, cursor)) {
                    struct call *q = call_new(c, ob);
                    started(q, hg_ob_endpoint_list(st, cursor, limit, on_store_answer, q));
                }
            } else {
                method_not_allowed(c, "GET, POST");
            }
            return;
        }
        if (n == 2) {
            if (get) {
                struct call *q = call_new(c, ob);
                started(q, hg_ob_endpoint_get(st, seg[1], on_store_answer, q));
            } else if (m == HTTP_PUT || m == HTTP_PATCH) {
                endpoint_update(ob, c, r, seg[1], m == HTTP_PATCH);
            } else if (m == HTTP_DELETE) {
                /* Read first: a config file endpoint cannot be deleted here (409). */
                struct call *q = call_new(c, ob);
                snprintf(q->id, sizeof(q->id), "%s", seg[1]);
                started(q, hg_ob_endpoint_get(st, seg[1], on_endpoint_read_for_delete, q));
            } else {
                method_not_allowed(c, "GET, PUT, PATCH, DELETE");
            }
            return;
        }
        if (n == 3 && strcmp(seg[2], "status") == 0) {
            if (m == HTTP_PUT)
                endpoint_status(ob, c, r, seg[1]);
            else
                method_not_allowed(c, "PUT");
            return;
        }
        if (n == 3 && strcmp(seg[2], "recover") == 0) {
            if (m == HTTP_POST)
                endpoint_recover(ob, c, r, seg[1]);
            else
                method_not_allowed(c, "POST");
            return;
        }
        if (n == 3 && strcmp(seg[2], "test") == 0) {
            if (m == HTTP_POST)
                endpoint_test(ob, c, r, seg[1]);
            else
                method_not_allowed(c, "POST");
            return;
        }
        if (n == 4 && strcmp(seg[2], "secret") == 0 && strcmp(seg[3], "rotate") == 0) {
            if (m == HTTP_POST)
                endpoint_rotate(ob, c, r, seg[1]);
            else
                method_not_allowed(c, "POST");
            return;
        }
    } else if (strcmp(seg[0], "events") == 0) {
        if (n == 1 || (n == 2 && strcmp(seg[1], "publish") == 0 && m == HTTP_POST)) {
            if (m == HTTP_POST)
                event_publish(ob, c, r);
            else
                method_not_allowed(c, "POST");
            return;
        }
        if (n == 2) {
            if (get) {
                struct call *q = call_new(c, ob);
                started(q, hg_ob_event_get(st, seg[1], on_store_answer, q));
            } else {
                method_not_allowed(c, "GET");
            }
            return;
        }
    } else if (strcmp(seg[0], "deliveries") == 0) {
        if (n == 1) {
            if (get)
                delivery_list(ob, c, r);
            else
                method_not_allowed(c, "GET");
            return;
        }
        if (n == 2) {
            if (get) {
                struct call *q = call_new(c, ob);
                started(q, hg_ob_delivery_get(st, seg[1], on_store_answer, q));
            } else {
                method_not_allowed(c, "GET");
            }
            return;
        }
        if (n == 3 && strcmp(seg[2], "retry") == 0) {
            if (m == HTTP_POST) {
                struct call *q = call_new(c, ob);
                q->ok_status = 202;
                started(q, hg_ob_delivery_retry(st, seg[1], wall_ms(), on_retried, q));
            } else {
                method_not_allowed(c, "POST");
            }
            return;
        }
    }
    respond_err(c, 404, "not_found", "no such API path", NULL);
}

/*
 * The outbound management API under /v1 on the admin listener: endpoints (CRUD, status), events
 * (publish: 202 once the event and its fan-out are durable; idempotent event_id), deliveries
 * (list, get with attempts, manual retry). JSON in and out; errors are
 * {"error":{"code","message","details"}}. The admin router checked the token already.
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
#include "outbound/match.h"
#include "outbound/outbound.h"
#include "outbound/store.h"
#include "worker/worker.h"

#define LIMIT_DEFAULT 50
#define LIMIT_MAX 500
#define QUERY_VALUE_MAX 256
#define URL_MAX 2048
#define NAME_MAX_LEN 256
#define DESCRIPTION_MAX 2048
#define EVENTS_MAX 100
#define METADATA_MAX 8192
#define TENANT_MAX 64

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
            if (q->strip_secret && json_is_object(result))
                json_object_del(result, "secret");
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

/* ---- endpoint validation ---- */

/* Collects every problem of a document, so one answer names them all. */
struct problems {
    json_t *list;
};

static void problem(struct problems *p, const char *field, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void problem(struct problems *p, const char *field, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_array_append_new(p->list, json_pack("{s:s, s:s}", "field", field, "message", msg));
}

static bool printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return false;
    return true;
}

static bool id_chars(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
              ch == '-' || ch == '.' || ch == ':'))
            return false;
    }
    return true;
}

static bool header_name_ok(const char *s)
{
    if (*s == '\0' || strlen(s) > 128)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr("!#$%&'*+-.^_`|~", *s)))
            return false;
    return true;
}

/* Headers hookgate sets itself (or HTTP framing owns): an endpoint cannot override them. */
static bool header_reserved(const char *s)
{
    static const char *const reserved[] = { "webhook-id", "webhook-timestamp", "webhook-signature", "content-type",
                                            "content-length", "host", "transfer-encoding", "connection",
                                            "expect", "te", "upgrade", "trailer" };
    for (size_t i = 0; i < HG_ARRAY_SIZE(reserved); i++)
        if (strcasecmp(s, reserved[i]) == 0)
            return true;
    return false;
}

static void check_url(struct problems *p, const json_t *v)
{
    const char *url = json_string_value(v);
    if (url == NULL) {
        problem(p, "url", v ? "must be a string" : "is required");
        return;
    }
    if (strlen(url) > URL_MAX || !printable(url)) {
        problem(p, "url", "must be at most %d printable characters", URL_MAX);
        return;
    }
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
        problem(p, "url", "must be an http:// or https:// URL");
        return;
    }
    CURLU *u = curl_url();
    char *host = NULL;
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK || curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        host == NULL || host[0] == '\0')
        problem(p, "url", "is not a valid URL with a host");
    else if (strchr(url, '#'))
        problem(p, "url", "must not have a fragment");
    curl_free(host);
    curl_url_cleanup(u);
}

static void check_string(struct problems *p, json_t *out, const json_t *in, const char *field, size_t max)
{
    const json_t *v = json_object_get(in, field);
    if (v == NULL || json_is_null(v)) {
        json_object_set_new(out, field, json_null());
        return;
    }
    if (!json_is_string(v) || json_string_length(v) > max || !printable(json_string_value(v))) {
        problem(p, field, "must be a string of at most %zu printable characters", max);
        return;
    }
    json_object_set(out, field, (json_t *)v);
}

/* A number of seconds in [min, max]; the default when absent. */
static void check_seconds(struct problems *p, json_t *out, const json_t *in, const char *field, double def, double min,
                          double max, bool integer, const char *where)
{
    const json_t *v = json_object_get(in, field);
    char name[64];
    snprintf(name, sizeof(name), "%s%s", where, field);
    if (v == NULL || json_is_null(v)) {
        json_object_set_new(out, field,
                            def == (double)(json_int_t)def ? json_integer((json_int_t)def) : json_real(def));
        return;
    }
    if ((integer && !json_is_integer(v)) || (!integer && !json_is_number(v)) || json_number_value(v) < min ||
        json_number_value(v) > max) {
        problem(p, name, "must be %s from %g to %g", integer ? "an integer" : "a number", min, max);
        return;
    }
    double d = json_number_value(v);
    if (json_is_real(v) && d == (double)(json_int_t)d)
        json_object_set_new(out, field, json_integer((json_int_t)d)); /* 15.0 shows as 15 */
    else
        json_object_set(out, field, (json_t *)v);
}

static void check_retry_policy(struct problems *p, json_t *out, const json_t *in)
{
    const json_t *rp = json_object_get(in, "retry_policy");
    if (rp != NULL && !json_is_null(rp) && !json_is_object(rp)) {
        problem(p, "retry_policy", "must be an object");
        return;
    }
    json_t *o = json_object();
    static const char *const known[] = { "max_attempts", "initial_delay_seconds", "max_delay_seconds",
                                         "backoff_multiplier", "retry_on_status_codes" };
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)rp, k, v) {
        bool ok = false;
        for (size_t i = 0; i < HG_ARRAY_SIZE(known); i++)
            ok = ok || strcmp(k, known[i]) == 0;
        if (!ok) {
            char f[96];
            snprintf(f, sizeof(f), "retry_policy.%.64s", k);
            problem(p, f, "is not a retry_policy field");
        }
    }
    check_seconds(p, o, rp, "max_attempts", 8, 1, 50, true, "retry_policy.");
    check_seconds(p, o, rp, "initial_delay_seconds", 30, 0.001, 86400, false, "retry_policy.");
    check_seconds(p, o, rp, "max_delay_seconds", 43200, 0.001, 7 * 86400, false, "retry_policy.");
    check_seconds(p, o, rp, "backoff_multiplier", 4, 1, 10, false, "retry_policy.");
    json_t *ini = json_object_get(o, "initial_delay_seconds"), *mx = json_object_get(o, "max_delay_seconds");
    if (ini && mx && json_number_value(mx) < json_number_value(ini))
        problem(p, "retry_policy.max_delay_seconds", "must not be below initial_delay_seconds");
    const json_t *codes = json_object_get(rp, "retry_on_status_codes");
    if (codes == NULL || json_is_null(codes)) {
        json_object_set_new(o, "retry_on_status_codes", json_null());
    } else if (!json_is_array(codes) || json_array_size(codes) > 32) {
        problem(p, "retry_policy.retry_on_status_codes", "must be an array of at most 32 status codes");
    } else {
        size_t i;
        json_array_foreach(codes, i, v) {
            if (!json_is_integer(v) || json_integer_value(v) < 300 || json_integer_value(v) > 599) {
                problem(p, "retry_policy.retry_on_status_codes", "every code must be an integer from 300 to 599");
                break;
            }
        }
        json_object_set(o, "retry_on_status_codes", (json_t *)codes);
    }
    json_object_set_new(out, "retry_policy", o);
}

static bool secret_ok(const char *s)
{
    unsigned char key[128];
    size_t n;
    return s && strncmp(s, "whsec_", 6) == 0 &&
           hg_base64_decode(s + 6, strlen(s + 6), key, sizeof(key), &n) == 0 && n >= 16 && n <= 64;
}

static char *generate_secret(void)
{
    unsigned char key[24];
    for (size_t i = 0; i < sizeof(key); i += 8) {
        uint64_t r = hg_random_u64();
        memcpy(key + i, &r, 8);
    }
    char b64[64];
    hg_base64_encode(key, sizeof(key), b64, sizeof(b64));
    char *out = NULL;
    if (asprintf(&out, "whsec_%s", b64) < 0)
        hg_oom(__FILE__, __LINE__);
    hg_wipe(key, sizeof(key));
    return out;
}

/*
 * Validate an endpoint document `in` (every field; absent = default) into its canonical form.
 * NULL and p->list filled when it is not valid.
 */
static json_t *endpoint_canonical(const json_t *in, struct problems *p)
{
    static const char *const fields[] = { "url", "name", "description", "events", "http_method", "custom_headers",
                                          "secret", "signature_method", "timeout_seconds", "retry_policy",
                                          "environment", "tenant", "metadata",
                                          /* read-only, ignored: what GET shows may be sent back */
                                          "id", "status", "created_at", "updated_at" };
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)in, k, v) {
        bool ok = false;
        for (size_t i = 0; i < HG_ARRAY_SIZE(fields); i++)
            ok = ok || strcmp(k, fields[i]) == 0;
        if (!ok) {
            char f[80];
            snprintf(f, sizeof(f), "%.64s", k);
            problem(p, f, "is not an endpoint field");
        }
    }
    json_t *out = json_object();
    check_url(p, json_object_get(in, "url"));
    json_object_set(out, "url", json_object_get(in, "url") ? json_object_get(in, "url") : json_null());
    check_string(p, out, in, "name", NAME_MAX_LEN);
    check_string(p, out, in, "description", DESCRIPTION_MAX);

    const json_t *evs = json_object_get(in, "events");
    if (evs == NULL || json_is_null(evs)) {
        json_object_set_new(out, "events", json_pack("[s]", "*"));
    } else if (!json_is_array(evs) || json_array_size(evs) == 0 || json_array_size(evs) > EVENTS_MAX) {
        problem(p, "events", "must be a non-empty array of at most %d event types or patterns", EVENTS_MAX);
    } else {
        size_t i;
        json_array_foreach(evs, i, v) {
            if (!hg_ob_pattern_valid(json_string_value(v))) {
                problem(p, "events", "\"%.80s\" is not an event type, \"*\" or a \"prefix.*\" pattern",
                        json_is_string(v) ? json_string_value(v) : "(not a string)");
                break;
            }
        }
        json_object_set(out, "events", (json_t *)evs);
    }

    const json_t *m = json_object_get(in, "http_method");
    static const char *const methods[] = { "GET", "POST", "PUT", "PATCH", "DELETE" };
    if (m == NULL || json_is_null(m)) {
        json_object_set_new(out, "http_method", json_string("POST"));
    } else {
        bool ok = false;
        for (size_t i = 0; i < HG_ARRAY_SIZE(methods); i++)
            ok = ok || (json_is_string(m) && strcmp(json_string_value(m), methods[i]) == 0);
        if (!ok)
            problem(p, "http_method", "must be one of GET, POST, PUT, PATCH, DELETE");
        json_object_set(out, "http_method", (json_t *)m);
    }

    const json_t *ch = json_object_get(in, "custom_headers");
    if (ch == NULL || json_is_null(ch)) {
        json_object_set_new(out, "custom_headers", json_object());
    } else if (!json_is_object(ch) || json_object_size(ch) > 32) {
        problem(p, "custom_headers", "must be an object of at most 32 header names and string values");
    } else {
        json_object_foreach((json_t *)ch, k, v) {
            if (!header_name_ok(k)) {
                problem(p, "custom_headers", "\"%.64s\" is not a valid header name", k);
            } else if (header_reserved(k)) {
                problem(p, "custom_headers", "\"%.64s\" is set by hookgate and cannot be overridden", k);
            } else if (!json_is_string(v) || json_string_length(v) > 4096 || !printable(json_string_value(v))) {
                problem(p, "custom_headers", "the value of \"%.64s\" must be a string of printable characters", k);
            }
        }
        json_object_set(out, "custom_headers", (json_t *)ch);
    }

    const json_t *sec = json_object_get(in, "secret");
    if (sec != NULL && !json_is_null(sec)) {
        if (!secret_ok(json_string_value(sec)))
            problem(p, "secret", "must be \"whsec_\" followed by the base64 of 16 to 64 bytes");
        json_object_set(out, "secret", (json_t *)sec);
    }

    const json_t *sm = json_object_get(in, "signature_method");
    if (sm == NULL || json_is_null(sm)) {
        json_object_set_new(out, "signature_method", json_string("standard_webhooks"));
    } else if (!json_is_string(sm) || strcmp(json_string_value(sm), "standard_webhooks") != 0) {
        problem(p, "signature_method", "only \"standard_webhooks\" is supported so far");
    } else {
        json_object_set(out, "signature_method", (json_t *)sm);
    }

    check_seconds(p, out, in, "timeout_seconds", 15, 1, 300, false, "");
    check_retry_policy(p, out, in);

    const json_t *env = json_object_get(in, "environment");
    if (env == NULL || json_is_null(env)) {
        json_object_set_new(out, "environment", json_string("production"));
    } else if (!json_is_string(env) || (strcmp(json_string_value(env), "development") != 0 &&
                                         strcmp(json_string_value(env), "staging") != 0 &&
                                         strcmp(json_string_value(env), "production") != 0)) {
        problem(p, "environment", "must be development, staging or production");
    } else {
        json_object_set(out, "environment", (json_t *)env);
    }

    const json_t *t = json_object_get(in, "tenant");
    if (t == NULL || json_is_null(t)) {
        json_object_set_new(out, "tenant", json_null());
    } else if (!json_is_string(t) || !id_chars(json_string_value(t), TENANT_MAX)) {
        problem(p, "tenant", "must be a tenant id: 1 to 64 of A-Z a-z 0-9 _ - . :");
    } else {
        json_object_set(out, "tenant", (json_t *)t);
    }

    const json_t *md = json_object_get(in, "metadata");
    if (md == NULL || json_is_null(md)) {
        json_object_set_new(out, "metadata", json_object());
    } else {
        char *s = json_is_object(md) ? json_dumps(md, JSON_COMPACT) : NULL;
        if (s == NULL || strlen(s) > METADATA_MAX)
            problem(p, "metadata", "must be an object of at most %d bytes of JSON", METADATA_MAX);
        free(s);
        json_object_set(out, "metadata", (json_t *)md);
    }
    if (json_array_size(p->list) > 0) {
        json_decref(out);
        return NULL;
    }
    return out;
}

static void respond_problems(struct hg_conn *c, struct problems *p)
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
    struct problems p = { json_array() };
    json_t *ep = endpoint_canonical(in, &p);
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
    json_object_set_new(ep, "created_at", rfc3339_now(now));
    json_object_set_new(ep, "updated_at", rfc3339_now(now));
    if (json_object_get(ep, "secret") == NULL) {
        char *s = generate_secret();
        json_object_set_new(ep, "secret", json_string(s));
        hg_wipe(s, strlen(s));
        free(s);
    }
    struct call *q = call_new(c, ob);
    q->ok_status = 201;
    q->strip_secret = false; /* the one answer that shows it */
    started(q, hg_ob_endpoint_create(hg_outbound_store(ob), ep, on_store_answer, q));
}

static void on_endpoint_read_for_update(void *arg, int err, const char *message, json_t *old)
{
    struct call *q = arg;
    if (err != 0 || q->conn == NULL) {
        on_store_answer(q, err, message, NULL);
        return;
    }
    /* PATCH: the old fields, each given one replacing it (null = back to the default). PUT: the
     * new document whole; the secret, id, status and dates stay unless given. */
    json_t *in = q->patch ? json_deep_copy(old) : json_incref(q->body);
    if (q->patch) {
        const char *k;
        json_t *v;
        json_object_foreach(q->body, k, v) json_object_set(in, k, v);
    }
    struct problems p = { json_array() };
    json_t *ep = endpoint_canonical(in, &p);
    json_decref(in);
    if (ep == NULL) {
        respond_problems(take_conn(q), &p);
        call_free(q);
        return;
    }
    json_decref(p.list);
    static const char *const kept[] = { "id", "status", "created_at" };
    for (size_t i = 0; i < HG_ARRAY_SIZE(kept); i++)
        json_object_set(ep, kept[i], json_object_get(old, kept[i]));
    if (json_object_get(ep, "secret") == NULL)
        json_object_set(ep, "secret", json_object_get(old, "secret"));
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
    struct problems p = { json_array() };
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
            problem(&p, f, "is not an event field");
        }
    }
    const char *type = json_string_value(json_object_get(in, "event_type"));
    if (!hg_ob_type_valid(type))
        problem(&p, "event_type", "is required: dot-separated segments of A-Z a-z 0-9 _ - (at most %d characters)",
                HG_OB_TYPE_MAX);
    json_t *eid = json_object_get(in, "event_id");
    if (eid && !json_is_null(eid) && (!json_is_string(eid) || !id_chars(json_string_value(eid), HG_OB_ID_MAX - 1)))
        problem(&p, "event_id", "must be 1 to %d of A-Z a-z 0-9 _ - . :", HG_OB_ID_MAX - 1);
    json_t *t = json_object_get(in, "tenant");
    if (t && !json_is_null(t) && (!json_is_string(t) || !id_chars(json_string_value(t), TENANT_MAX)))
        problem(&p, "tenant", "must be a tenant id: 1 to 64 of A-Z a-z 0-9 _ - . :");
    if (json_object_get(in, "data") == NULL)
        problem(&p, "data", "is required");
    json_t *md = json_object_get(in, "metadata");
    if (md && !json_is_null(md) && !json_is_object(md))
        problem(&p, "metadata", "must be an object");
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

/* Split "a/b/c" into at most 3 segments; false when there are more or one is empty/too long. */
static bool split(const char *path, char seg[3][HG_OB_ID_MAX + 1], int *n)
{
    *n = 0;
    const char *p = path;
    while (*p) {
        const char *sl = strchr(p, '/');
        size_t len = sl ? (size_t)(sl - p) : strlen(p);
        if (*n == 3 || len == 0 || len > HG_OB_ID_MAX)
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
    char seg[3][HG_OB_ID_MAX + 1];
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
                struct call *q = call_new(c, ob);
                started(q, hg_ob_endpoint_delete(st, seg[1], on_store_answer, q));
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

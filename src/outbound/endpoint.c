/* Endpoint documents: validation into the canonical form (endpoint.h). */
#include <curl/curl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/common.h"
#include "core/hmac.h"
#include "core/str.h"
#include "core/uuid.h"
#include "outbound/endpoint.h"
#include "outbound/match.h"
#include "outbound/sign.h"

#define URL_MAX 2048
#define NAME_MAX_LEN 256
#define DESCRIPTION_MAX 2048
#define EVENTS_MAX 100
#define METADATA_MAX 8192
#define TENANT_MAX HG_OB_TENANT_MAX

void hg_ob_problem(struct hg_ob_problems *p, const char *field, const char *fmt, ...)
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

bool hg_ob_id_chars(const char *s, size_t max)
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

static void check_url(struct hg_ob_problems *p, const json_t *v)
{
    const char *url = json_string_value(v);
    if (url == NULL) {
        hg_ob_problem(p, "url", v ? "must be a string" : "is required");
        return;
    }
    if (strlen(url) > URL_MAX || !printable(url)) {
        hg_ob_problem(p, "url", "must be at most %d printable characters", URL_MAX);
        return;
    }
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
        hg_ob_problem(p, "url", "must be an http:// or https:// URL");
        return;
    }
    CURLU *u = curl_url();
    char *host = NULL;
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK || curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        host == NULL || host[0] == '\0')
        hg_ob_problem(p, "url", "is not a valid URL with a host");
    else if (strchr(url, '#'))
        hg_ob_problem(p, "url", "must not have a fragment");
    curl_free(host);
    curl_url_cleanup(u);
}

static void check_string(struct hg_ob_problems *p, json_t *out, const json_t *in, const char *field, size_t max)
{
    const json_t *v = json_object_get(in, field);
    if (v == NULL || json_is_null(v)) {
        json_object_set_new(out, field, json_null());
        return;
    }
    if (!json_is_string(v) || json_string_length(v) > max || !printable(json_string_value(v))) {
        hg_ob_problem(p, field, "must be a string of at most %zu printable characters", max);
        return;
    }
    json_object_set(out, field, (json_t *)v);
}

/* A number of seconds in [min, max]; the default when absent. */
static void check_seconds(struct hg_ob_problems *p, json_t *out, const json_t *in, const char *field, double def, double min,
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
        hg_ob_problem(p, name, "must be %s from %g to %g", integer ? "an integer" : "a number", min, max);
        return;
    }
    double d = json_number_value(v);
    if (json_is_real(v) && d == (double)(json_int_t)d)
        json_object_set_new(out, field, json_integer((json_int_t)d)); /* 15.0 shows as 15 */
    else
        json_object_set(out, field, (json_t *)v);
}

static void check_retry_policy(struct hg_ob_problems *p, json_t *out, const json_t *in)
{
    const json_t *rp = json_object_get(in, "retry_policy");
    if (rp != NULL && !json_is_null(rp) && !json_is_object(rp)) {
        hg_ob_problem(p, "retry_policy", "must be an object");
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
            hg_ob_problem(p, f, "is not a retry_policy field");
        }
    }
    check_seconds(p, o, rp, "max_attempts", 8, 1, 50, true, "retry_policy.");
    check_seconds(p, o, rp, "initial_delay_seconds", 30, 0.001, 86400, false, "retry_policy.");
    check_seconds(p, o, rp, "max_delay_seconds", 43200, 0.001, 7 * 86400, false, "retry_policy.");
    check_seconds(p, o, rp, "backoff_multiplier", 4, 1, 10, false, "retry_policy.");
    json_t *ini = json_object_get(o, "initial_delay_seconds"), *mx = json_object_get(o, "max_delay_seconds");
    if (ini && mx && json_number_value(mx) < json_number_value(ini))
        hg_ob_problem(p, "retry_policy.max_delay_seconds", "must not be below initial_delay_seconds");
    const json_t *codes = json_object_get(rp, "retry_on_status_codes");
    if (codes == NULL || json_is_null(codes)) {
        json_object_set_new(o, "retry_on_status_codes", json_null());
    } else if (!json_is_array(codes) || json_array_size(codes) > 32) {
        hg_ob_problem(p, "retry_policy.retry_on_status_codes", "must be an array of at most 32 status codes");
    } else {
        size_t i;
        json_array_foreach(codes, i, v) {
            if (!json_is_integer(v) || json_integer_value(v) < 300 || json_integer_value(v) > 599) {
                hg_ob_problem(p, "retry_policy.retry_on_status_codes", "every code must be an integer from 300 to 599");
                break;
            }
        }
        json_object_set(o, "retry_on_status_codes", (json_t *)codes);
    }
    json_object_set_new(out, "retry_policy", o);
}

char *hg_ob_secret_generate(void)
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
json_t *hg_ob_endpoint_canonical(const json_t *in, struct hg_ob_problems *p)
{
    static const char *const fields[] = { "url", "name", "description", "events", "http_method", "custom_headers",
                                          "secret", "signature_method", "timeout_seconds", "retry_policy",
                                          "environment", "tenant", "metadata",
                                          /* read-only, ignored: what GET shows may be sent back
                                           * (and what a PATCH merges from the stored document) */
                                          "id", "status", "source", "created_at", "updated_at",
                                          "previous_secret", "previous_secret_expires_at" };
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)in, k, v) {
        bool ok = false;
        for (size_t i = 0; i < HG_ARRAY_SIZE(fields); i++)
            ok = ok || strcmp(k, fields[i]) == 0;
        if (!ok) {
            char f[80];
            snprintf(f, sizeof(f), "%.64s", k);
            hg_ob_problem(p, f, "is not an endpoint field");
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
        hg_ob_problem(p, "events", "must be a non-empty array of at most %d event types or patterns", EVENTS_MAX);
    } else {
        size_t i;
        json_array_foreach(evs, i, v) {
            if (!hg_ob_pattern_valid(json_string_value(v))) {
                hg_ob_problem(p, "events", "\"%.80s\" is not an event type, \"*\" or a \"prefix.*\" pattern",
                        json_is_string(v) ? json_string_value(v) : "(not a string)");
                break;
            }
        }
        json_object_set(out, "events", (json_t *)evs);
    }

    /* The method first: which secrets and custom headers are allowed depends on it. */
    enum hg_ob_sig_method method = HG_OB_SIG_STANDARD_WEBHOOKS;
    const json_t *sm = json_object_get(in, "signature_method");
    if (sm != NULL && !json_is_null(sm) && hg_ob_sig_method_parse(json_string_value(sm), &method) != 0)
        hg_ob_problem(p, "signature_method", "must be standard_webhooks, hmac_sha256, hmac_sha1, jwt or api_key");
    json_object_set_new(out, "signature_method", json_string(hg_ob_sig_method_name(method)));

    const json_t *m = json_object_get(in, "http_method");
    static const char *const methods[] = { "GET", "POST", "PUT", "PATCH", "DELETE" };
    if (m == NULL || json_is_null(m)) {
        json_object_set_new(out, "http_method", json_string("POST"));
    } else {
        bool ok = false;
        for (size_t i = 0; i < HG_ARRAY_SIZE(methods); i++)
            ok = ok || (json_is_string(m) && strcmp(json_string_value(m), methods[i]) == 0);
        if (!ok)
            hg_ob_problem(p, "http_method", "must be one of GET, POST, PUT, PATCH, DELETE");
        json_object_set(out, "http_method", (json_t *)m);
    }

    const json_t *ch = json_object_get(in, "custom_headers");
    if (ch == NULL || json_is_null(ch)) {
        json_object_set_new(out, "custom_headers", json_object());
    } else if (!json_is_object(ch) || json_object_size(ch) > 32) {
        hg_ob_problem(p, "custom_headers", "must be an object of at most 32 header names and string values");
    } else {
        json_object_foreach((json_t *)ch, k, v) {
            if (!header_name_ok(k)) {
                hg_ob_problem(p, "custom_headers", "\"%.64s\" is not a valid header name", k);
            } else if (header_reserved(k) || strcasecmp(k, hg_ob_sig_header(method)) == 0) {
                hg_ob_problem(p, "custom_headers", "\"%.64s\" is set by hookgate and cannot be overridden", k);
            } else if (!json_is_string(v) || json_string_length(v) > 4096 || !printable(json_string_value(v))) {
                hg_ob_problem(p, "custom_headers", "the value of \"%.64s\" must be a string of printable characters", k);
            }
        }
        json_object_set(out, "custom_headers", (json_t *)ch);
    }

    const json_t *sec = json_object_get(in, "secret");
    if (sec != NULL && !json_is_null(sec)) {
        if (!hg_ob_sig_secret_ok(method, json_string_value(sec)))
            hg_ob_problem(p, "secret", method == HG_OB_SIG_STANDARD_WEBHOOKS
                                           ? "must be \"whsec_\" followed by the base64 of 16 to 64 bytes"
                                           : "must be 16 to 256 printable ASCII characters without spaces");
        json_object_set(out, "secret", (json_t *)sec);
    }

    check_seconds(p, out, in, "timeout_seconds", 15, 1, 300, false, "");
    check_retry_policy(p, out, in);

    const json_t *env = json_object_get(in, "environment");
    if (env == NULL || json_is_null(env)) {
        json_object_set_new(out, "environment", json_string("production"));
    } else if (!json_is_string(env) || (strcmp(json_string_value(env), "development") != 0 &&
                                         strcmp(json_string_value(env), "staging") != 0 &&
                                         strcmp(json_string_value(env), "production") != 0)) {
        hg_ob_problem(p, "environment", "must be development, staging or production");
    } else {
        json_object_set(out, "environment", (json_t *)env);
    }

    const json_t *t = json_object_get(in, "tenant");
    if (t == NULL || json_is_null(t)) {
        json_object_set_new(out, "tenant", json_null());
    } else if (!json_is_string(t) || !hg_ob_id_chars(json_string_value(t), TENANT_MAX)) {
        hg_ob_problem(p, "tenant", "must be a tenant id: 1 to 64 of A-Z a-z 0-9 _ - . :");
    } else {
        json_object_set(out, "tenant", (json_t *)t);
    }

    const json_t *md = json_object_get(in, "metadata");
    if (md == NULL || json_is_null(md)) {
        json_object_set_new(out, "metadata", json_object());
    } else {
        char *s = json_is_object(md) ? json_dumps(md, JSON_COMPACT) : NULL;
        if (s == NULL || strlen(s) > METADATA_MAX)
            hg_ob_problem(p, "metadata", "must be an object of at most %d bytes of JSON", METADATA_MAX);
        free(s);
        json_object_set(out, "metadata", (json_t *)md);
    }
    if (json_array_size(p->list) > 0) {
        json_decref(out);
        return NULL;
    }
    return out;
}


bool hg_ob_endpoint_secret_fits(const json_t *ep)
{
    enum hg_ob_sig_method m = HG_OB_SIG_STANDARD_WEBHOOKS;
    const char *name = json_string_value(json_object_get(ep, "signature_method"));
    if (name && hg_ob_sig_method_parse(name, &m) != 0)
        return false;
    return hg_ob_sig_secret_ok(m, json_string_value(json_object_get(ep, "secret")));
}

void hg_ob_endpoint_strip_secrets(json_t *ep)
{
    if (!json_is_object(ep))
        return;
    json_object_del(ep, "secret");
    json_object_del(ep, "previous_secret");
}

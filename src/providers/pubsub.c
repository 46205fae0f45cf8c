/*
 * Google Pub/Sub push, the request side: the OIDC bearer token (signature through core/jwt.h,
 * claims here), body validation and the provider table. Normalization is in pubsub_normalize.c.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/common.h"
#include "core/err.h"
#include "core/hmac.h"
#include "core/jwt.h"
#include "core/str.h"
#include "core/time.h"
#include "http/http.h"
#include "providers/pubsub.h"
#include "tenants/tenants.h"

#define AUDIENCE_MAX        2048
#define MESSAGE_ID_MAX      255   /* the event id: an AMQP shortstr */
#define ARENA_PER_BODY_BYTE 64
#define ARENA_BASE          (1024 * 1024)

static int refuse(char *why, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int refuse(char *why, size_t cap, const char *fmt, ...)
{
    if (why != NULL && cap > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, cap, fmt, ap);
        va_end(ap);
    }
    return HG_ERR_SIGNATURE;
}

/* An integer claim (NumericDate): Google writes integers; a real or a string is refused. */
static bool int_claim(const json_t *claims, const char *name, int64_t *out)
{
    json_t *v = json_object_get(claims, name);
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return true;
    }
    return false;
}

int hg_pubsub_check_claims(const json_t *claims, const char *audience, const char *account, int64_t now_s,
                           char *why, size_t cap)
{
    const char *iss = json_string_value(json_object_get(claims, "iss"));
    if (iss == NULL || (strcmp(iss, "accounts.google.com") != 0 && strcmp(iss, "https://accounts.google.com") != 0))
        return refuse(why, cap, "token iss is not accounts.google.com");
    const char *aud = json_string_value(json_object_get(claims, "aud"));
    if (audience == NULL || aud == NULL || strcmp(aud, audience) != 0)
        return refuse(why, cap, "token aud does not match");
    int64_t exp, iat, nbf;
    if (!int_claim(claims, "exp", &exp) || !int_claim(claims, "iat", &iat))
        return refuse(why, cap, "token has no exp or iat");
    if (now_s >= exp + HG_PUBSUB_SKEW_S)
        return refuse(why, cap, "token expired");
    if (iat > now_s + HG_PUBSUB_SKEW_S)
        return refuse(why, cap, "token issued in the future");
    if (json_object_get(claims, "nbf") != NULL &&
        (!int_claim(claims, "nbf", &nbf) || nbf > now_s + HG_PUBSUB_SKEW_S))
        return refuse(why, cap, "token not valid yet");
    if (account != NULL) {
        const char *email = json_string_value(json_object_get(claims, "email"));
        if (email == NULL || strcmp(email, account) != 0)
            return refuse(why, cap, "token email is not the service account");
        if (!json_is_true(json_object_get(claims, "email_verified")))
            return refuse(why, cap, "token email is not verified");
    }
    return 0;
}

/* The audience a push must carry: the configured one, else public_url + the request target. */
static int audience_of(const struct hg_creds *creds, const char *target, char *out, size_t cap)
{
    if (creds->audience != NULL) {
        if ((size_t)snprintf(out, cap, "%s", creds->audience) >= cap)
            return HG_ERR_TOO_BIG;
        return 0;
    }
    if (creds->public_url == NULL)
        return HG_ERR_INVALID;
    size_t n = strlen(creds->public_url);
    while (n > 0 && creds->public_url[n - 1] == '/')
        n--;
    int w = snprintf(out, cap, "%.*s%s", (int)n, creds->public_url, target ? target : "");
    return w < 0 || (size_t)w >= cap ? HG_ERR_TOO_BIG : 0;
}

int hg_pubsub_verify_token(const char *auth, size_t len, const struct hg_creds *creds, const char *target,
                           int64_t now_s, char *why, size_t cap)
{
    char audience[AUDIENCE_MAX];
    json_t *claims = NULL;

    while (auth != NULL && len > 0 && (auth[len - 1] == ' ' || auth[len - 1] == '\t'))
        len--;
    if (auth == NULL || len < 7 || !hg_span_ieq(auth, 7, "Bearer "))
        return refuse(why, cap, "missing Authorization: Bearer token");
    auth += 7, len -= 7;
    while (len > 0 && *auth == ' ')
        auth++, len--;
    if (creds == NULL || (creds->jwks == NULL && creds->jwks_fetched == NULL))
        return refuse(why, cap, "no keys configured");
    if (audience_of(creds, target, audience, sizeof(audience)) != 0)
        return refuse(why, cap, "no audience configured");
    /* jwks_file first, then the keys from jwks_url (a kid the file lacks). */
    int rc = HG_ERR_NOT_FOUND;
    if (creds->jwks != NULL)
        rc = hg_jwt_verify_rs256(auth, len, creds->jwks, &claims, why, cap);
    if (rc == HG_ERR_NOT_FOUND && creds->jwks_fetched != NULL)
        rc = hg_jwt_verify_rs256(auth, len, creds->jwks_fetched, &claims, why, cap);
    if (rc == 0)
        rc = hg_pubsub_check_claims(claims, audience, creds->account, now_s, why, cap);
    json_decref(claims);
    return rc == 0 ? 0 : HG_ERR_SIGNATURE;
}

static int provider_verify(const struct hg_provider_request *r, const struct hg_creds *creds, char *why, size_t cap)
{
    char target[AUDIENCE_MAX];
    size_t len = 0;
    const char *auth = r->http ? hg_http_header_get(r->http, "Authorization", &len) : NULL;
    if (auth == NULL)
        return refuse(why, cap, "missing Authorization: Bearer token");
    if (r->http->query_len > 0)
        snprintf(target, sizeof(target), "%s?%s", r->http->path, r->http->query);
    else
        snprintf(target, sizeof(target), "%s", r->http->path);
    return hg_pubsub_verify_token(auth, len, creds, target, (int64_t)(hg_time_now_ns() / 1000000000ull), why, cap);
}

/* The kid of the bearer token ("" without one): the ingest fetches jwks_url's keys for it. */
static void provider_key_id(const struct hg_http_request *r, char *kid, size_t cap)
{
    size_t len = 0;
    const char *auth = hg_http_header_get(r, "Authorization", &len);
    kid[0] = '\0';
    if (auth == NULL || len < 7 || !hg_span_ieq(auth, 7, "Bearer "))
        return;
    auth += 7, len -= 7;
    while (len > 0 && *auth == ' ')
        auth++, len--;
    while (len > 0 && (auth[len - 1] == ' ' || auth[len - 1] == '\t'))
        len--;
    hg_jwt_peek_kid(auth, len, kid, cap);
}

/* No bearer token at all: 401 before any tenant lookup. */
static bool provider_unsigned(const struct hg_http_request *r, const struct hg_conf *conf, char *why, size_t cap)
{
    size_t len = 0;
    const char *auth = hg_http_header_get(r, "Authorization", &len);
    if (auth != NULL && len >= 7 && hg_span_ieq(auth, 7, "Bearer "))
        return false;
    snprintf(why, cap, "missing Authorization: Bearer token");
    return true;
}

/* A string member, when present, must be a string (of at most max bytes, 0 = any). */
static bool opt_string(const struct hg_json *obj, const char *key, size_t max)
{
    const struct hg_json *v = hg_json_get(obj, key);
    return v == NULL || (hg_json_is_string(v) && (max == 0 || v->len <= max));
}

struct hg_json_doc *hg_pubsub_parse(const char *body, size_t len, char *reason, size_t cap)
{
    struct hg_json_doc *doc = hg_json_doc_new(ARENA_PER_BODY_BYTE * len + ARENA_BASE);
    struct hg_json_error jerr;
    struct hg_json *root = hg_json_parse(&doc->arena, body ? body : "", body ? len : 0, &jerr);
    if (root == NULL)
        return hg_provider_parse_fail(reason, cap, doc, "body is not valid JSON: %s (line %d, column %d)",
                                      jerr.text, jerr.line, jerr.column);
    doc->root = root;
    if (!hg_json_is_object(root))
        return hg_provider_parse_fail(reason, cap, doc, "body is not a JSON object");
    const struct hg_json *msg = hg_json_get(root, "message");
    if (!hg_json_is_object(msg))
        return hg_provider_parse_fail(reason, cap, doc, "body has no message object");
    if (!hg_json_is_string(hg_json_get(root, "subscription")))
        return hg_provider_parse_fail(reason, cap, doc, "body has no subscription string");
    const struct hg_json *id = hg_json_get(msg, "messageId");
    if (!hg_json_is_string(id) || id->len == 0 || id->len > MESSAGE_ID_MAX || memchr(id->str, '\0', id->len))
        return hg_provider_parse_fail(reason, cap, doc, "message.messageId is not a string of 1 to %d bytes",
                                      MESSAGE_ID_MAX);
    const struct hg_json *data = hg_json_get(msg, "data");
    const struct hg_json *attrs = hg_json_get(msg, "attributes");
    if (data == NULL && attrs == NULL)
        return hg_provider_parse_fail(reason, cap, doc, "message has neither data nor attributes");
    if (data != NULL) {
        size_t out_len;
        unsigned char *tmp = hg_json_is_string(data) ? hg_arena_alloc(&doc->arena, data->len / 4 * 3 + 3) : NULL;
        if (!hg_json_is_string(data) ||
            (data->len > 0 && (tmp == NULL || hg_base64_decode(data->str, data->len, tmp, data->len / 4 * 3 + 3,
                                                               &out_len) != 0)))
            return hg_provider_parse_fail(reason, cap, doc, "message.data is not base64");
    }
    if (attrs != NULL) {
        if (!hg_json_is_object(attrs))
            return hg_provider_parse_fail(reason, cap, doc, "message.attributes is not an object");
        for (struct hg_json_item *it = hg_json_first(attrs); it; it = it->next)
            if (!hg_json_is_string(it->val))
                return hg_provider_parse_fail(reason, cap, doc, "message.attributes values must be strings");
    }
    if (!opt_string(msg, "publishTime", 64) || !opt_string(msg, "orderingKey", 0))
        return hg_provider_parse_fail(reason, cap, doc, "message.publishTime or orderingKey is not a string");
    return doc;
}

/* ---- the provider table ---- */

static struct hg_json_doc *provider_parse(const struct hg_provider_body *b, char *reason, size_t cap)
{
    return hg_pubsub_parse(b->body, b->body_len, reason, cap);
}

static int provider_count(const struct hg_json *root)
{
    return hg_json_is_object(root) ? 1 : 0;
}

/* [pubsub] for every tenant: one subscription's service account and key set. */
static void provider_creds(const struct hg_conf *conf, const struct hg_tenant *t, struct hg_creds *out)
{
    (void)t;
    out->jwks = conf->pubsub_jwks;
    out->jwks_url = conf->pubsub_jwks_url;
    out->audience = conf->pubsub_audience;
    out->public_url = conf->pubsub_public_url;
    out->account = conf->pubsub_service_account;
}

/* The token is a credential (replayable until exp): checked at ingest, never spooled. */
static const char *const spool_headers[] = {"Content-Type", "User-Agent", NULL};

static const char *const bind_messages[] = {"message.#", NULL};
static const char *const bind_system[] = {"event.#", "system.#", "error.#", NULL};

static const struct hg_provider_queue queues[] = {
    {"INBOUND_PUBSUB_MESSAGES", bind_messages},
    /* Last: it also takes dead letters whose routing key no binding matches. */
    {"PUBSUB_SYSTEM_EVENTS", bind_system},
};

static const struct hg_provider_topology topology = {
    .exchange = "pubsub.inbound",
    .dlx = "pubsub.inbound.dlx",
    .queues = queues,
    .n_queues = sizeof(queues) / sizeof(queues[0]),
};

const struct hg_provider hg_provider_pubsub = {
    .id = HG_PROVIDER_PUBSUB,
    .name = "pubsub",
    .route = "/webhooks/pubsub",
    .spool_headers = spool_headers,
    .topology = &topology,
    .creds = provider_creds,
    .handshake = NULL,
    .verify = provider_verify,
    .key_id = provider_key_id,
    .unsigned_request = provider_unsigned,
    .parse = provider_parse,
    .tenant_ids = NULL,      /* the tenant is the path's, else the default */
    .count_events = provider_count,
    .normalize = hg_pubsub_normalize,
    .accepted = NULL,        /* Pub/Sub takes any 2xx; 204 says "acked" with nothing to read */
    .accepted_status = 204,
    .media = NULL,
    .media_list = false,
};

/*
 * Generic signed senders: the per-scheme verification, the replay key, the spooled id and type,
 * parse, normalize and the provider table (docs/generic.md).
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/common.h"
#include "core/err.h"
#include "core/hmac.h"
#include "core/jwt.h"
#include "core/sha256.h"
#include "core/str.h"
#include "core/time.h"
#include "http/http.h"
#include "providers/generic.h"
#include "providers/genesys.h"

#define PROVIDER       "generic"
#define SCHEMA_VERSION "1"
#define TYPE_MAX       64                  /* a type word: [a-z0-9_] */
#define ID_MAX         200                 /* longest event id taken from a header or the body */
#define KEY_MAX        128                 /* longest decoded whsec_ key */
#define SIG_LIST_MAX   16                  /* signatures looked at in one header */
#define ARENA_PER_BODY_BYTE 64
#define ARENA_BASE          (1024 * 1024)

static int refuse(char *why, size_t cap, const char *reason)
{
    if (why != NULL && cap > 0)
        snprintf(why, cap, "%s", reason);
    return HG_ERR_SIGNATURE;
}

static void trim(const char **s, size_t *n)
{
    while (*n > 0 && ((*s)[0] == ' ' || (*s)[0] == '\t'))
        (*s)++, (*n)--;
    while (*n > 0 && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
        (*n)--;
}

/* The source's tolerance in seconds (signed timestamps either way, JWT exp/nbf skew). */
static int64_t tolerance_s(const struct hg_source_conf *s)
{
    return s->tolerance_ms ? (int64_t)(s->tolerance_ms / 1000u) : HG_GENERIC_TOLERANCE_S;
}

/* A signed Unix timestamp within the source's tolerance of now: 0, or a refusal naming it. */
static int check_time(const struct hg_source_conf *s, const char *ts, size_t n, int64_t now_s, char *why,
                      size_t cap)
{
    uint64_t t;
    int64_t tol = tolerance_s(s);
    if (hg_span_to_u64(ts, n, (uint64_t)INT64_MAX, &t) != 0)
        return refuse(why, cap, "malformed timestamp");
    if ((int64_t)t >= now_s - tol && (int64_t)t <= now_s + tol)
        return 0;
    if (why != NULL && cap > 0)
        snprintf(why, cap, "timestamp %s (outside the %lld s tolerance)", (int64_t)t < now_s ? "too old" : "in the future",
                 (long long)tol);
    return HG_ERR_SIGNATURE;
}

/* The key bytes of a Standard Webhooks secret: base64 after "whsec_" (raw bytes otherwise). */
static size_t whsec_key(const char *secret, unsigned char key[KEY_MAX])
{
    const char *b64 = strncmp(secret, "whsec_", 6) == 0 ? secret + 6 : secret;
    size_t n = 0;
    if (hg_base64_decode(b64, strlen(b64), key, KEY_MAX, &n) == 0 && n > 0)
        return n;
    n = HG_MIN(strlen(secret), (size_t)KEY_MAX);
    memcpy(key, secret, n);
    return n;
}

/* Standard Webhooks / Svix: HMAC-SHA256(key, id "." timestamp "." body), "v1,<base64>" list. */
static int verify_standard(const struct hg_source_conf *s, hg_generic_header_fn header, const void *arg,
                           const char *body, size_t body_len, int64_t now_s, char *why, size_t cap)
{
    size_t id_len, ts_len, sig_len;
    const char *id = header(arg, "webhook-id", &id_len);
    const char *ts = header(arg, "webhook-timestamp", &ts_len);
    const char *sig = header(arg, "webhook-signature", &sig_len);
    if (id == NULL && ts == NULL && sig == NULL) {
        id = header(arg, "svix-id", &id_len);
        ts = header(arg, "svix-timestamp", &ts_len);
        sig = header(arg, "svix-signature", &sig_len);
    }
    if (id == NULL || ts == NULL || sig == NULL)
        return refuse(why, cap, "missing webhook-id, webhook-timestamp or webhook-signature");
    trim(&ts, &ts_len);
    int rc = check_time(s, ts, ts_len, now_s, why, cap);
    if (rc != 0)
        return rc;

    /* The signatures offered: "v1,<base64 of 32 bytes>", space separated; others are skipped. */
    unsigned char want[SIG_LIST_MAX][32];
    size_t nwant = 0;
    const char *p = sig, *end = sig + sig_len;
    while (p < end && nwant < SIG_LIST_MAX) {
        while (p < end && *p == ' ')
            p++;
        const char *e = memchr(p, ' ', (size_t)(end - p));
        if (e == NULL)
            e = end;
        size_t n = (size_t)(e - p), got = 0;
        unsigned char tmp[48];
        if (n > 3 && memcmp(p, "v1,", 3) == 0 && hg_base64_decode(p + 3, n - 3, tmp, sizeof(tmp), &got) == 0 &&
            got == 32)
            memcpy(want[nwant++], tmp, 32);
        p = e;
    }
    if (nwant == 0)
        return refuse(why, cap, "malformed webhook-signature");

    int matched = 0;
    unsigned char key[KEY_MAX], mac[HG_HMAC_MAX];
    for (size_t i = 0; i < s->secrets.n; i++) {
        const char *secret = s->secrets.items[i];
        if (secret == NULL || secret[0] == '\0')
            continue;
        size_t kl = whsec_key(secret, key);
        struct hg_hmac_ctx c;
        hg_hmac_start(&c, HG_HMAC_SHA256, key, kl);
        hg_hmac_update(&c, id, id_len);
        hg_hmac_update(&c, ".", 1);
        hg_hmac_update(&c, ts, ts_len);
        hg_hmac_update(&c, ".", 1);
        hg_hmac_update(&c, body, body_len);
        hg_hmac_finish(&c, mac);
        for (size_t j = 0; j < nwant; j++)
            if (hg_ct_equal(mac, 32, want[j], 32))
                matched = 1;
    }
    hg_wipe(key, sizeof(key));
    hg_wipe(mac, sizeof(mac));
    return matched ? 0 : refuse(why, cap, "signature does not match");
}

/* Stripe: "t=<ts>,v1=<hex>[,v1=<hex>]", HMAC-SHA256(secret, t "." body) in hex. */
static int verify_stripe(const struct hg_source_conf *s, hg_generic_header_fn header, const void *arg,
                         const char *body, size_t body_len, int64_t now_s, char *why, size_t cap)
{
    size_t len;
    const char *h = header(arg, "Stripe-Signature", &len);
    if (h == NULL)
        return refuse(why, cap, "missing Stripe-Signature");
    const char *ts = NULL;
    size_t ts_len = 0, nwant = 0;
    unsigned char want[SIG_LIST_MAX][32];
    const char *p = h, *end = h + len;
    while (p < end) {
        const char *e = memchr(p, ',', (size_t)(end - p));
        if (e == NULL)
            e = end;
        const char *item = p;
        size_t n = (size_t)(e - p);
        trim(&item, &n);
        if (n > 2 && memcmp(item, "t=", 2) == 0) {
            ts = item + 2;
            ts_len = n - 2;
        } else if (n > 3 && memcmp(item, "v1=", 3) == 0 && nwant < SIG_LIST_MAX &&
                   hg_hex_decode(item + 3, n - 3, want[nwant], 32) == 0) {
            nwant++;
        }
        p = e + 1;
    }
    if (ts == NULL || nwant == 0)
        return refuse(why, cap, "malformed Stripe-Signature (needs t= and a v1= of 64 hex digits)");
    int rc = check_time(s, ts, ts_len, now_s, why, cap);
    if (rc != 0)
        return rc;
    int matched = 0;
    unsigned char mac[HG_HMAC_MAX];
    for (size_t i = 0; i < s->secrets.n; i++) {
        const char *secret = s->secrets.items[i];
        if (secret == NULL || secret[0] == '\0')
            continue;
        struct hg_hmac_ctx c;
        hg_hmac_start(&c, HG_HMAC_SHA256, secret, strlen(secret));
        hg_hmac_update(&c, ts, ts_len);
        hg_hmac_update(&c, ".", 1);
        hg_hmac_update(&c, body, body_len);
        hg_hmac_finish(&c, mac);
        for (size_t j = 0; j < nwant; j++)
            if (hg_ct_equal(mac, 32, want[j], 32))
                matched = 1;
    }
    hg_wipe(mac, sizeof(mac));
    return matched ? 0 : refuse(why, cap, "signature does not match");
}

static enum hg_hmac_alg alg_of(const char *name)
{
    if (name != NULL && strcmp(name, "sha1") == 0)
        return HG_HMAC_SHA1;
    if (name != NULL && strcmp(name, "sha512") == 0)
        return HG_HMAC_SHA512;
    return HG_HMAC_SHA256;
}

/*
 * The text an hmac source signs: the body, or its template with {timestamp} and {body} filled in
 * (Slack: "v0:{timestamp}:{body}"; the default with a timestamp_header is "{timestamp}.{body}").
 */
static void hmac_signed_text(struct hg_hmac_ctx *c, const struct hg_source_conf *s, const char *ts, size_t ts_len,
                             const char *body, size_t body_len)
{
    const char *t = s->template ? s->template : ts ? "{timestamp}.{body}" : "{body}";
    while (*t) {
        const char *open = strchr(t, '{');
        size_t lit = open ? (size_t)(open - t) : strlen(t);
        hg_hmac_update(c, t, lit);
        t += lit;
        if (strncmp(t, "{body}", 6) == 0) {
            hg_hmac_update(c, body, body_len);
            t += 6;
        } else if (strncmp(t, "{timestamp}", 11) == 0) {
            hg_hmac_update(c, ts ? ts : "", ts ? ts_len : 0);
            t += 11;
        } else if (*t) {
            hg_hmac_update(c, t++, 1); /* not a placeholder (the loader refuses these) */
        }
    }
}

/* hmac: `prefix` + hex or base64 of HMAC-alg(secret, signed text) in `header` (GitHub, Shopify,
 * Slack with a timestamp_header and template, ...). */
static int verify_hmac(const struct hg_source_conf *s, hg_generic_header_fn header, const void *arg,
                       const char *body, size_t body_len, int64_t now_s, char *why, size_t cap)
{
    char reason[160];
    size_t len, ts_len = 0;
    const char *ts = NULL;
    if (s->timestamp_header != NULL) {
        ts = header(arg, s->timestamp_header, &ts_len);
        if (ts == NULL) {
            snprintf(reason, sizeof(reason), "missing %s", s->timestamp_header);
            return refuse(why, cap, reason);
        }
        trim(&ts, &ts_len);
        int rc = check_time(s, ts, ts_len, now_s, why, cap);
        if (rc != 0)
            return rc;
    }
    const char *v = header(arg, s->header, &len);
    if (v == NULL) {
        snprintf(reason, sizeof(reason), "missing %s", s->header);
        return refuse(why, cap, reason);
    }
    trim(&v, &len);
    size_t pl = s->prefix ? strlen(s->prefix) : 0;
    enum hg_hmac_alg alg = alg_of(s->algorithm);
    size_t dl = hg_hmac_len(alg), got = 0;
    unsigned char want[HG_HMAC_MAX + 4], mac[HG_HMAC_MAX];
    bool b64 = s->encoding != NULL && strcmp(s->encoding, "base64") == 0;
    if (len < pl || (pl > 0 && strncasecmp(v, s->prefix, pl) != 0) ||
        (b64 ? hg_base64_decode(v + pl, len - pl, want, sizeof(want), &got) != 0 || got != dl
             : hg_hex_decode(v + pl, len - pl, want, dl) != 0)) {
        snprintf(reason, sizeof(reason), "malformed %s", s->header);
        return refuse(why, cap, reason);
    }
    int matched = 0;
    for (size_t i = 0; i < s->secrets.n; i++) {
        const char *secret = s->secrets.items[i];
        if (secret == NULL || secret[0] == '\0')
            continue;
        struct hg_hmac_ctx c;
        hg_hmac_start(&c, alg, secret, strlen(secret));
        hmac_signed_text(&c, s, ts, ts_len, body, body_len);
        hg_hmac_finish(&c, mac);
        if (hg_ct_equal(mac, dl, want, dl))
            matched = 1;
    }
    hg_wipe(mac, sizeof(mac));
    return matched ? 0 : refuse(why, cap, "signature does not match");
}

/* api-key: the key in `header` (default X-API-Key) is one of the secrets. */
static int verify_api_key(const struct hg_source_conf *s, hg_generic_header_fn header, const void *arg,
                          char *why, size_t cap)
{
    const char *name = s->header && s->header[0] ? s->header : "X-API-Key";
    size_t len;
    const char *v = header(arg, name, &len);
    if (v == NULL) {
        char reason[160];
        snprintf(reason, sizeof(reason), "missing %s", name);
        return refuse(why, cap, reason);
    }
    return hg_genesys_verify_api_key(v, len, &s->secrets) == 0 ? 0 : refuse(why, cap, "API key does not match");
}

/* basic: Authorization: Basic base64(user ":" password), the password one of the secrets. */
static int verify_basic(const struct hg_source_conf *s, hg_generic_header_fn header, const void *arg,
                        char *why, size_t cap)
{
    size_t len, got = 0;
    const char *v = header(arg, "Authorization", &len);
    if (v == NULL)
        return refuse(why, cap, "missing Authorization");
    trim(&v, &len);
    unsigned char cred[512];
    if (len < 6 || strncasecmp(v, "Basic ", 6) != 0)
        return refuse(why, cap, "malformed Authorization (expected Basic)");
    const char *b = v + 6;
    size_t bl = len - 6;
    trim(&b, &bl);
    if (hg_base64_decode(b, bl, cred, sizeof(cred) - 1, &got) != 0)
        return refuse(why, cap, "malformed Authorization (expected Basic)");
    const unsigned char *colon = memchr(cred, ':', got);
    if (colon == NULL) {
        hg_wipe(cred, sizeof(cred));
        return refuse(why, cap, "malformed Authorization (expected Basic)");
    }
    size_t ul = (size_t)(colon - cred);
    /* Digests of the user names, so the comparison does not tell the configured name's length. */
    unsigned char a[HG_SHA256_LEN], u[HG_SHA256_LEN];
    hg_sha256(cred, ul, a);
    hg_sha256(s->user ? s->user : "", s->user ? strlen(s->user) : 0, u);
    bool user_ok = hg_ct_equal(a, sizeof(a), u, sizeof(u));
    bool pass_ok = hg_genesys_verify_api_key((const char *)colon + 1, got - ul - 1, &s->secrets) == 0;
    hg_wipe(cred, sizeof(cred));
    return user_ok && pass_ok ? 0 : refuse(why, cap, "user or password does not match");
}

/* ---- jwt ---- */

/* An aud claim (a string or an array of strings) naming want. */
static bool aud_names(const json_t *aud, const char *want)
{
    size_t i;
    const json_t *v;
    if (json_is_string(aud))
        return strcmp(json_string_value(aud), want) == 0;
    json_array_foreach(aud, i, v)
        if (json_is_string(v) && strcmp(json_string_value(v), want) == 0)
            return true;
    return false;
}

/* The registered claims a jwt source checks: exp and nbf when present (with the tolerance as
 * clock skew), iss and aud when configured. */
static int check_claims(const struct hg_source_conf *s, const json_t *p, int64_t now_s, char *why, size_t cap)
{
    int64_t tol = tolerance_s(s);
    const json_t *exp = json_object_get(p, "exp"), *nbf = json_object_get(p, "nbf");
    if (exp != NULL && (!json_is_number(exp) || json_number_value(exp) + (double)tol <= (double)now_s))
        return refuse(why, cap, "JWT expired (exp)");
    if (nbf != NULL && (!json_is_number(nbf) || json_number_value(nbf) > (double)(now_s + tol)))
        return refuse(why, cap, "JWT not valid yet (nbf)");
    const char *iss = json_string_value(json_object_get(p, "iss"));
    if (s->issuer != NULL && (iss == NULL || strcmp(iss, s->issuer) != 0))
        return refuse(why, cap, "JWT iss is not the source's issuer");
    if (s->audience != NULL && !aud_names(json_object_get(p, "aud"), s->audience))
        return refuse(why, cap, "JWT aud does not name the source's audience");
    return 0;
}

/*
 * jwt: "Authorization: Bearer <JWT>" (or the `header`, with or without "Bearer "), verified by
 * core/jwt.h: HS256 with the secrets, RS256 with the JWKS; the algorithm follows from what is
 * configured, never from the token (no "none", no HS/RS confusion). Then check_claims.
 */
static int verify_jwt(const struct hg_source_conf *s, hg_generic_header_fn header, const void *arg, int64_t now_s,
                      char *why, size_t cap)
{
    const char *name = s->header && s->header[0] ? s->header : "Authorization";
    size_t len;
    const char *v = header(arg, name, &len);
    if (v == NULL) {
        char reason[160];
        snprintf(reason, sizeof(reason), "missing %s", name);
        return refuse(why, cap, reason);
    }
    trim(&v, &len);
    if (len > 7 && strncasecmp(v, "Bearer ", 7) == 0) {
        v += 7;
        len -= 7;
        trim(&v, &len);
    }
    struct hg_jwt_keys keys = { .rsa = s->jwks_keys, .secrets = (const char *const *)s->secrets.items,
                                .n_secrets = s->secrets.n };
    json_t *claims = NULL;
    int rc = hg_jwt_verify(v, len, &keys, &claims, why, cap);
    if (rc == 0)
        rc = check_claims(s, claims, now_s, why, cap);
    json_decref(claims);
    return rc == 0 ? 0 : HG_ERR_SIGNATURE;
}

int hg_generic_verify_at(const struct hg_source_conf *s, hg_generic_header_fn header, const void *arg,
                         const char *body, size_t body_len, int64_t now_s, char *why, size_t cap)
{
    if (why != NULL && cap > 0)
        why[0] = '\0';
    if (s == NULL || s->scheme == NULL)
        return refuse(why, cap, "no such source");
    if (body == NULL)
        body = "";
    if (strcmp(s->scheme, "standard-webhooks") == 0)
        return verify_standard(s, header, arg, body, body_len, now_s, why, cap);
    if (strcmp(s->scheme, "stripe") == 0)
        return verify_stripe(s, header, arg, body, body_len, now_s, why, cap);
    if (strcmp(s->scheme, "hmac") == 0)
        return verify_hmac(s, header, arg, body, body_len, now_s, why, cap);
    if (strcmp(s->scheme, "api-key") == 0)
        return verify_api_key(s, header, arg, why, cap);
    if (strcmp(s->scheme, "basic") == 0)
        return verify_basic(s, header, arg, why, cap);
    if (strcmp(s->scheme, "jwt") == 0)
        return verify_jwt(s, header, arg, now_s, why, cap);
    return refuse(why, cap, "scheme not supported");
}

static const char *http_header(const void *arg, const char *name, size_t *len)
{
    return hg_http_header_get(arg, name, len);
}

static int provider_verify(const struct hg_provider_request *r, const struct hg_creds *creds, char *why, size_t cap)
{
    if (r == NULL || r->http == NULL || creds == NULL)
        return refuse(why, cap, "no request");
    return hg_generic_verify_at(creds->source, http_header, r->http, r->body, r->body_len,
                                (int64_t)(hg_time_now_ns() / 1000000000ull), why, cap);
}

/*
 * The replay key of a verified request: Standard Webhooks, the message id (a sender's retry of a
 * webhook we did not accept reuses it; a webhook we accepted is not retried); Stripe, the signed
 * timestamp and the first v1 (Stripe re-signs every retry with a new t); hmac with a
 * timestamp_header, the signature (it covers the timestamp). Other schemes carry no signed
 * timestamp: none. Remembered for twice the tolerance: past it the timestamp is refused.
 */
static int provider_replay_key(const struct hg_provider_request *r, const struct hg_creds *creds, char *out,
                               size_t cap, uint64_t *ttl_ms)
{
    const struct hg_source_conf *s = creds ? creds->source : NULL;
    size_t n = 0;
    const char *v = NULL;
    if (s == NULL || s->scheme == NULL || r == NULL || r->http == NULL)
        return 0;
    if (strcmp(s->scheme, "standard-webhooks") == 0) {
        v = hg_http_header_get(r->http, "webhook-id", &n);
        if (v == NULL)
            v = hg_http_header_get(r->http, "svix-id", &n);
    } else if (strcmp(s->scheme, "stripe") == 0) {
        v = hg_http_header_get(r->http, "Stripe-Signature", &n);
    } else if (strcmp(s->scheme, "hmac") == 0 && s->timestamp_header != NULL) {
        v = hg_http_header_get(r->http, s->header, &n); /* the signature covers the timestamp */
    }
    if (v == NULL || n == 0)
        return 0;
    /* A long value is hashed so the key stays bounded. */
    unsigned char d[HG_SHA256_LEN];
    char hex[2 * HG_SHA256_LEN + 1];
    hg_sha256(v, n, d);
    hg_hex(hex, d, sizeof(d));
    if ((size_t)snprintf(out, cap, "%s:%s", s->name, hex) >= cap)
        return 0;
    *ttl_ms = 2ull * (uint64_t)tolerance_s(s) * 1000ull;
    return 1;
}

/* ---- id and type, found at ingest and spooled ---- */

/* A value from "header:<Name>" or a JSON path ("$.a.b", "a.b") into out (cap), control bytes
 * replaced; false when absent. */
static bool lookup(const char *spec, const struct hg_http_request *r, const struct hg_json *root, char *out,
                   size_t cap)
{
    const char *v = NULL;
    size_t n = 0;
    char num[32];
    if (strncasecmp(spec, "header:", 7) == 0) {
        v = hg_http_header_get(r, spec + 7, &n);
    } else if (root != NULL) {
        const char *p = spec;
        if (p[0] == '$')
            p++;
        if (p[0] == '.')
            p++;
        const struct hg_json *cur = root;
        while (cur != NULL && *p) {
            const char *dot = strchr(p, '.');
            size_t kl = dot ? (size_t)(dot - p) : strlen(p);
            cur = hg_json_getn(cur, p, kl);
            p += kl + (dot ? 1 : 0);
        }
        long long i;
        if (hg_json_is_string(cur)) {
            v = cur->str;
            n = cur->len;
        } else if (hg_json_int(cur, &i)) {
            n = (size_t)snprintf(num, sizeof(num), "%lld", i);
            v = num;
        }
    }
    if (v == NULL || n == 0)
        return false;
    if (n > cap - 1)
        n = cap - 1;
    for (size_t k = 0; k < n; k++)
        out[k] = (unsigned char)v[k] < 0x20 || v[k] == 0x7f ? '_' : v[k];
    out[n] = '\0';
    return true;
}

static size_t put_line(char *out, size_t cap, size_t len, const char *name, const char *value)
{
    int n = snprintf(out + len, cap - len, "%s: %s\n", name, value);
    if (n < 0 || (size_t)n >= cap - len) {
        out[len] = '\0';
        return len;
    }
    return len + (size_t)n;
}

static size_t provider_spool_extra(const struct hg_creds *creds, const struct hg_http_request *r, const char *body,
                                   size_t body_len, char *out, size_t cap)
{
    const struct hg_source_conf *s = creds ? creds->source : NULL;
    if (s == NULL || cap == 0)
        return 0;
    out[0] = '\0';
    size_t len = put_line(out, cap, 0, HG_GENERIC_SOURCE_HEADER, s->name);
    const char *id_spec = s->id;
    if (id_spec == NULL && s->scheme && strcmp(s->scheme, "standard-webhooks") == 0)
        id_spec = hg_http_header_get(r, "webhook-id", NULL) ? "header:webhook-id" : "header:svix-id";
    else if (id_spec == NULL && s->scheme && strcmp(s->scheme, "stripe") == 0)
        id_spec = "$.id";
    const char *type_spec = s->type;
    struct hg_json_doc *doc = NULL;
    bool need_json = (id_spec && strncasecmp(id_spec, "header:", 7) != 0) ||
                     (type_spec && strncasecmp(type_spec, "header:", 7) != 0);
    if (need_json) {
        struct hg_json_error jerr;
        doc = hg_json_doc_new(ARENA_PER_BODY_BYTE * body_len + ARENA_BASE);
        doc->root = hg_json_parse(&doc->arena, body ? body : "", body ? body_len : 0, &jerr);
    }
    char v[ID_MAX + 1];
    if (id_spec && lookup(id_spec, r, doc ? doc->root : NULL, v, sizeof(v)))
        len = put_line(out, cap, len, HG_GENERIC_ID_HEADER, v);
    if (type_spec && lookup(type_spec, r, doc ? doc->root : NULL, v, sizeof(v)))
        len = put_line(out, cap, len, HG_GENERIC_TYPE_HEADER, v);
    hg_json_doc_free(doc);
    return len;
}

/* ---- parse and normalize ---- */

/*
 * The spooled lines and the body into {"source","event_id","type","raw"}: the body parsed when it
 * is JSON, else kept as a string; the event id "generic:<32 hex of SHA-256(body)>" when the source
 * named none.
 */
static struct hg_json_doc *provider_parse(const struct hg_provider_body *b, char *reason, size_t cap)
{
    size_t sl = 0, il = 0, tl = 0;
    const char *src = hg_provider_header(b->headers ? b->headers : "", b->headers_len, HG_GENERIC_SOURCE_HEADER, &sl);
    const char *id = hg_provider_header(b->headers ? b->headers : "", b->headers_len, HG_GENERIC_ID_HEADER, &il);
    const char *ty = hg_provider_header(b->headers ? b->headers : "", b->headers_len, HG_GENERIC_TYPE_HEADER, &tl);
    struct hg_json_doc *doc = hg_json_doc_new(ARENA_PER_BODY_BYTE * b->body_len + ARENA_BASE);
    if (src == NULL || sl == 0)
        return hg_provider_parse_fail(reason, cap, doc, "no source recorded with the webhook");
    struct hg_json_error jerr;
    const char *body = b->body ? b->body : "";
    struct hg_json *raw = hg_json_parse(&doc->arena, body, b->body_len, &jerr);
    if (raw == NULL)
        raw = hg_json_stringn(&doc->arena, body, b->body_len);
    char idbuf[ID_MAX + 16], type[TYPE_MAX + 1];
    if (id == NULL || il == 0) {
        unsigned char d[HG_SHA256_LEN];
        char hex[33];
        hg_sha256(body, b->body_len, d);
        hg_hex(hex, d, 16);
        snprintf(idbuf, sizeof(idbuf), "generic:%s", hex);
    } else {
        snprintf(idbuf, sizeof(idbuf), "%.*s", (int)HG_MIN(il, (size_t)ID_MAX), id);
    }
    hg_provider_type_word(type, TYPE_MAX + 1, ty, ty ? tl : 0, "event");
    struct hg_json *root = hg_json_object(&doc->arena);
    if (root == NULL || raw == NULL ||
        hg_json_set(&doc->arena, root, "source", hg_json_stringn(&doc->arena, src, sl)) != 0 ||
        hg_json_set(&doc->arena, root, "event_id", hg_json_string(&doc->arena, idbuf)) != 0 ||
        hg_json_set(&doc->arena, root, "type", hg_json_string(&doc->arena, type)) != 0 ||
        hg_json_set(&doc->arena, root, "raw", raw) != 0)
        return hg_provider_parse_fail(reason, cap, doc, "body too large");
    doc->root = root;
    return doc;
}

static int provider_count_events(const struct hg_json *root)
{
    return hg_json_is_object(root) ? 1 : 0;
}

static int provider_normalize(struct hg_arena *a, const struct hg_json *root, const struct hg_event_meta *meta,
                              hg_event_emit_fn emit, void *arg)
{
    struct hg_json_build b = { .a = a };
    const char *source = hg_json_str(hg_json_get(root, "source"));
    const char *event_id = hg_json_str(hg_json_get(root, "event_id"));
    const char *type = hg_json_str(hg_json_get(root, "type"));
    if (!hg_json_is_object(root) || source == NULL || event_id == NULL || type == NULL)
        return 0;
    char received[40], rk[64 + TYPE_MAX + 2];
    hg_time_rfc3339(received, sizeof(received), meta->received_at_ns, 3);
    /* The routing key is "<source>.<type>": a '.' of the source name would add a topic word. */
    size_t o = 0;
    for (const char *p = source; *p && o < 64; p++)
        rk[o++] = *p == '.' ? '_' : *p;
    rk[o] = '\0';
    snprintf(rk + o, sizeof(rk) - o, ".%s", type);

    struct hg_json *doc = hg_jb_object(&b);
    hg_jb_set(&b, doc, "schema_version", hg_jb_string(&b, SCHEMA_VERSION));
    hg_jb_set(&b, doc, "event_id", hg_jb_string(&b, event_id));
    hg_jb_set(&b, doc, "correlation_id", meta->request_id ? hg_jb_string(&b, meta->request_id) : hg_json_null());
    hg_jb_set(&b, doc, "provider", hg_jb_string(&b, PROVIDER));
    hg_jb_set(&b, doc, "tenant", meta->tenant ? hg_jb_string(&b, meta->tenant) : hg_json_null());
    hg_jb_set(&b, doc, "source", hg_jb_string(&b, source));
    hg_jb_set(&b, doc, "kind", hg_jb_string(&b, "message"));
    hg_jb_set(&b, doc, "type", hg_jb_string(&b, type));
    hg_jb_set(&b, doc, "occurred_at", hg_jb_string(&b, received));
    hg_jb_set(&b, doc, "received_at", hg_jb_string(&b, received));
    hg_jb_set(&b, doc, "customer", hg_json_null());
    hg_jb_set(&b, doc, "business", hg_jb_object(&b));
    hg_jb_set(&b, doc, "conversation", hg_json_null());
    hg_jb_set(&b, doc, "content", hg_json_null());
    hg_jb_set(&b, doc, "context", hg_json_null());
    hg_jb_set(&b, doc, "referral", hg_json_null());
    hg_jb_set(&b, doc, "errors", hg_json_null());
    hg_jb_set(&b, doc, "media", hg_json_null());
    hg_jb_set(&b, doc, "raw", hg_json_get(root, "raw") ? hg_json_get(root, "raw") : hg_json_null());
    if (b.oom || doc == NULL)
        return HG_ERR_NOMEM;
    struct hg_event ev = {
        .event_id = event_id,
        .routing_key = rk,
        .kind = "message",
        .type = type,
        .tenant = meta->tenant,
        .provider = PROVIDER,
        .correlation_id = meta->request_id,
        .timestamp_s = meta->received_at_ns / 1000000000ull,
        .priority = 0,
        .priority_class = "medium",
    };
    int rc = emit(arg, &ev, doc);
    return rc == 0 ? 1 : rc;
}

/* ---- the provider table ---- */

/* Stands for the JWKS of a jwt source among the credentials (verify reads the document itself). */
static char *jwks_item[] = { "jwks" };
static struct hg_strlist jwks_present = { jwks_item, 1 };

static void provider_creds(const struct hg_conf *conf, const struct hg_tenant *t, struct hg_creds *out)
{
    (void)conf;
    (void)t;
    if (out->source == NULL)
        return;
    out->secrets = &out->source->secrets;
    /* A jwt source with only a JWKS has credentials: not the 503 of a source without any. */
    if (out->source->jwks != NULL)
        out->api_keys = &jwks_present;
}

static const char *const spool_headers[] = {"Content-Type", "User-Agent", "webhook-id", "webhook-timestamp", NULL};

static const char *const bind_all[] = {"#", NULL};
static const struct hg_provider_queue queues[] = {
    /* One catch-all queue: every source's events ("<source>.<type>"), and unroutable dead letters. */
    {"INBOUND_GENERIC_EVENTS", bind_all},
};

static const struct hg_provider_topology topology = {
    .exchange = "generic.inbound",
    .dlx = "generic.inbound.dlx",
    .queues = queues,
    .n_queues = sizeof(queues) / sizeof(queues[0]),
};

const struct hg_provider hg_provider_generic = {
    .id = HG_PROVIDER_GENERIC,
    .name = PROVIDER,
    .route = "/webhooks/generic",
    .spool_headers = spool_headers,
    .topology = &topology,
    .path_names_source = true,
    .spool_extra = provider_spool_extra,
    .replay_key = provider_replay_key,
    .creds = provider_creds,
    .handshake = NULL,
    .verify = provider_verify,
    .unsigned_request = NULL,
    .parse = provider_parse,
    .tenant_ids = NULL,
    .count_events = provider_count_events,
    .normalize = provider_normalize,
    .accepted = hg_provider_accepted_json,
    .media = NULL,
    .media_list = false,
};

/*
 * Twilio, the request side: form decoding, the URL Twilio signed, X-Twilio-Signature verification
 * (as twilio-python's RequestValidator and twilio-node's validateRequest), body parsing, tenant
 * ids and the provider table. Normalization lives in twilio_normalize.c.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/common.h"
#include "core/err.h"
#include "core/sha256.h"
#include "core/str.h"
#include "http/http.h"
#include "providers/twilio.h"
#include "tenants/tenants.h"

#define SIGNATURE_HEADER "X-Twilio-Signature"
#define SETTINGS_HEADER  "X-Twilio-Webhooks-Signature-Settings"
#define BODY_HASH_PARAM  "bodySHA256"
/* Arena of a parsed body and its event: bytes per body byte, plus a base (as whatsapp.c). */
#define ARENA_PER_BODY_BYTE 64
#define ARENA_BASE          (1024 * 1024)
/* A URL longer than this is not one Twilio called (its limit is 4 KiB with the query). */
#define URL_MAX (64 * 1024)

static const char ACCEPTED_BODY[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>";

/* Write a reason into why (cap bytes), when there is room for one. */
static void say(char *why, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char *why, size_t cap, const char *fmt, ...)
{
    if (why == NULL || cap == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, cap, fmt, ap);
    va_end(ap);
}

/* Drop spaces and tabs around a header value or list element. */
static void trim(const char **s, size_t *n)
{
    while (*n > 0 && ((*s)[0] == ' ' || (*s)[0] == '\t'))
        (*s)++, (*n)--;
    while (*n > 0 && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t' || (*s)[*n - 1] == '\r'))
        (*n)--;
}

/* ---- form decoding ---- */

/*
 * Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing past U+10FFFF. The decoded
 * params become JSON strings, and the JSON writer trusts its strings to be UTF-8.
 */
static bool utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t more;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            more = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            more = 2;
            if (c == 0xE0)
                lo = 0xA0; /* overlong */
            else if (c == 0xED)
                hi = 0x9F; /* surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            more = 3;
            if (c == 0xF0)
                lo = 0x90; /* overlong */
            else if (c == 0xF4)
                hi = 0x8F; /* past U+10FFFF */
        } else {
            return false;
        }
        if (n - i <= more)
            return false;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (size_t k = 2; k <= more; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return false;
        i += more + 1;
    }
    return true;
}

/*
 * Decode one form component (s, n bytes at body offset `at`) into a new NUL-terminated string in
 * `a`. 0, HG_ERR_PARSE (why says where) or HG_ERR_NOMEM.
 */
static int decode_component(struct hg_arena *a, const char *s, size_t n, size_t at, const char **out,
                            size_t *out_len, char *why, size_t cap)
{
    char *d = hg_arena_alloc(a, n + 1);
    size_t o = 0;
    if (d == NULL)
        return HG_ERR_NOMEM;
    if (hg_percent_decode(s, n, HG_PERCENT_PLUS, d, n, &o) != 0) {
        /* o is the offset of the malformed '%'. */
        say(why, cap, "bad %%-escape at byte %zu", at + o);
        return HG_ERR_PARSE;
    }
    d[o] = '\0';
    *out = d;
    *out_len = o;
    return 0;
}

int hg_twilio_form_decode(struct hg_arena *a, const char *body, size_t len, struct hg_twilio_param **out,
                          char *why, size_t cap)
{
    size_t count = 0, pos = 0;

    /* Count first, so the params are one array and the cap is checked before any decoding. */
    for (size_t i = 0; i <= len; i++) {
        if (i == len || body[i] == '&') {
            if (i > pos)
                count++;
            pos = i + 1;
        }
    }
    if (count > HG_TWILIO_MAX_PARAMS) {
        say(why, cap, "more than %d parameters", HG_TWILIO_MAX_PARAMS);
        return HG_ERR_PARSE;
    }
    struct hg_twilio_param *p = hg_arena_alloc(a, (count ? count : 1) * sizeof(*p));
    if (p == NULL)
        return HG_ERR_NOMEM;

    size_t n = 0;
    pos = 0;
    while (pos < len) {
        const char *pair = body + pos;
        const char *amp = memchr(pair, '&', len - pos);
        size_t pair_len = amp ? (size_t)(amp - pair) : len - pos;
        size_t at = pos;
        pos += pair_len + 1;
        if (pair_len == 0)
            continue;
        const char *eq = memchr(pair, '=', pair_len);
        size_t key_len = eq ? (size_t)(eq - pair) : pair_len;
        int rc = decode_component(a, pair, key_len, at, &p[n].key, &p[n].key_len, why, cap);
        if (rc == 0) {
            const char *val = eq ? eq + 1 : pair + pair_len;
            size_t val_len = eq ? pair_len - key_len - 1 : 0;
            rc = decode_component(a, val, val_len, at + (size_t)(val - pair), &p[n].value, &p[n].value_len, why, cap);
        }
        if (rc != 0)
            return rc;
        if (!utf8_valid((const unsigned char *)p[n].key, p[n].key_len) ||
            !utf8_valid((const unsigned char *)p[n].value, p[n].value_len)) {
            say(why, cap, "invalid UTF-8 in parameter %zu", n + 1);
            return HG_ERR_PARSE;
        }
        n++;
    }
    *out = p;
    return (int)n;
}

struct hg_json *hg_twilio_form_object(struct hg_arena *a, const struct hg_twilio_param *p, size_t n)
{
    struct hg_json *obj = hg_json_object(a);
    if (obj == NULL)
        return NULL;
    /* Linear lookups: n is at most HG_TWILIO_MAX_PARAMS, so this stays ~0.5 M compares at worst. */
    for (size_t i = 0; i < n; i++) {
        struct hg_json *v = hg_json_stringn(a, p[i].value, p[i].value_len);
        if (v == NULL)
            return NULL;
        struct hg_json *cur = hg_json_getn(obj, p[i].key, p[i].key_len);
        if (cur == NULL) {
            if (hg_json_setn(a, obj, p[i].key, p[i].key_len, v) != 0)
                return NULL;
        } else if (hg_json_is_array(cur)) {
            if (hg_json_append(a, cur, v) != 0)
                return NULL;
        } else {
            struct hg_json *arr = hg_json_array(a);
            if (arr == NULL || hg_json_append(a, arr, cur) != 0 || hg_json_append(a, arr, v) != 0 ||
                hg_json_setn(a, obj, p[i].key, p[i].key_len, arr) != 0)
                return NULL;
        }
    }
    return obj;
}

/* ---- the signature ---- */

static int span_cmp(const char *a, size_t an, const char *b, size_t bn)
{
    int c = memcmp(a, b, an < bn ? an : bn);
    if (c != 0)
        return c;
    return an < bn ? -1 : an > bn;
}

/* By key, then by value, bytewise: UTF-8 byte order is code point order, which python sorts by. */
static int param_cmp(const void *x, const void *y)
{
    const struct hg_twilio_param *a = x, *b = y;
    int c = span_cmp(a->key, a->key_len, b->key, b->key_len);
    return c != 0 ? c : span_cmp(a->value, a->value_len, b->value, b->value_len);
}

static bool param_same(const struct hg_twilio_param *a, const struct hg_twilio_param *b)
{
    return param_cmp(a, b) == 0;
}

/* The signature over sorted params (see hg_twilio_signature). */
static size_t sign_sorted(enum hg_hmac_alg alg, const void *key, size_t key_len, const char *url, size_t url_len,
                          const struct hg_twilio_param *p, size_t n, bool dedup, char *out, size_t cap)
{
    unsigned char digest[HG_HMAC_MAX];
    struct hg_hmac_ctx ctx;

    if (cap < HG_TWILIO_SIG_MAX)
        return 0;
    hg_hmac_start(&ctx, alg, key, key_len);
    hg_hmac_update(&ctx, url, url_len);
    for (size_t i = 0; i < n; i++) {
        if (dedup && i > 0 && param_same(&p[i], &p[i - 1]))
            continue;
        hg_hmac_update(&ctx, p[i].key, p[i].key_len);
        hg_hmac_update(&ctx, p[i].value, p[i].value_len);
    }
    size_t dl = hg_hmac_finish(&ctx, digest);
    size_t len = hg_base64_encode(digest, dl, out, cap);
    memset(digest, 0, sizeof(digest));
    return len;
}

size_t hg_twilio_signature(enum hg_hmac_alg alg, const void *key, size_t key_len, const char *url, size_t url_len,
                           const struct hg_twilio_param *params, size_t n, bool dedup, char *out, size_t cap)
{
    struct hg_twilio_param *sorted = hg_xmalloc((n ? n : 1) * sizeof(*sorted));
    if (n > 0)
        memcpy(sorted, params, n * sizeof(*sorted));
    qsort(sorted, n, sizeof(*sorted), param_cmp);
    size_t len = sign_sorted(alg, key, key_len, url, url_len, sorted, n, dedup, out, cap);
    free(sorted);
    return len;
}

/* ---- the URL ---- */

/* The first element of a comma-separated header value, trimmed; NULL when absent or empty. */
static const char *first_element(const struct hg_http_request *r, const char *name, size_t *len)
{
    size_t n = 0;
    const char *v = hg_http_header_get(r, name, &n);
    if (v == NULL)
        return NULL;
    const char *comma = memchr(v, ',', n);
    if (comma != NULL)
        n = (size_t)(comma - v);
    trim(&v, &n);
    *len = n;
    return n > 0 ? v : NULL;
}

int hg_twilio_url(const struct hg_http_request *r, const char *public_url, struct hg_buf *out)
{
    int rc = 0;

    hg_buf_reset(out);
    if (public_url != NULL && public_url[0] != '\0') {
        size_t n = strlen(public_url);
        if (public_url[n - 1] == '/')
            n--;
        rc = hg_buf_append(out, public_url, n);
    } else {
        size_t plen = 0, hlen = 0;
        const char *proto = first_element(r, "X-Forwarded-Proto", &plen);
        const char *host = first_element(r, "X-Forwarded-Host", &hlen);
        if (host == NULL)
            host = first_element(r, "Host", &hlen);
        if (host == NULL)
            return HG_ERR_INVALID;
        if (proto == NULL) {
            /* No proxy in front: the scheme is the one this request came in with. */
            proto = r->tls ? "https" : "http";
            plen = strlen(proto);
        }
        if ((rc = hg_buf_append(out, proto, plen)) == 0 && (rc = hg_buf_append(out, "://", 3)) == 0)
            rc = hg_buf_append(out, host, hlen);
    }
    if (rc == 0)
        rc = hg_buf_append(out, r->path ? r->path : "", r->path ? r->path_len : 0);
    if (rc == 0 && r->query != NULL && r->query_len > 0 && (rc = hg_buf_append(out, "?", 1)) == 0)
        rc = hg_buf_append(out, r->query, r->query_len);
    return rc;
}

/*
 * The two URLs the validators try: without a port and with one (the URL's own, else the scheme's
 * default: 443 for https, 80 otherwise). A URL without "://" is tried as is only. Each is
 * malloc'd; *n_out gets how many (1 or 2).
 */
static void url_variants(const char *url, size_t len, char *out[2], size_t out_len[2], size_t *n_out)
{
    const char *sep = NULL;
    for (size_t i = 0; i + 3 <= len; i++) {
        if (url[i] == ':' && url[i + 1] == '/' && url[i + 2] == '/') {
            sep = url + i;
            break;
        }
        if (url[i] == '/' || url[i] == '?')
            break;
    }
    if (sep == NULL) {
        out[0] = hg_xstrndup(url, len);
        out_len[0] = len;
        *n_out = 1;
        return;
    }
    const char *auth = sep + 3, *end = url + len, *auth_end = auth;
    while (auth_end < end && *auth_end != '/' && *auth_end != '?' && *auth_end != '#')
        auth_end++;
    const char *host = auth;
    for (const char *c = auth; c < auth_end; c++)
        if (*c == '@')
            host = c + 1;
    /* The port's ':' is the last one, after the ']' of an IPv6 literal. */
    const char *colon = NULL;
    for (const char *c = host; c < auth_end; c++) {
        if (*c == ']')
            colon = NULL;
        else if (*c == ':')
            colon = c;
    }
    bool https = (size_t)(sep - url) == 5 && strncasecmp(url, "https", 5) == 0;
    const char *host_end = colon ? colon : auth_end;
    size_t head = (size_t)(host_end - url), tail = (size_t)(end - auth_end);

    /* Without the port. */
    out[0] = hg_xmalloc(head + tail + 1);
    memcpy(out[0], url, head);
    memcpy(out[0] + head, auth_end, tail);
    out_len[0] = head + tail;
    out[0][out_len[0]] = '\0';

    /* With the port: as it is when it has a (non-empty) one, else the default added. */
    if (colon != NULL && colon + 1 < auth_end) {
        out[1] = hg_xstrndup(url, len);
        out_len[1] = len;
    } else {
        const char *port = https ? ":443" : ":80";
        size_t pl = strlen(port);
        out[1] = hg_xmalloc(head + pl + tail + 1);
        memcpy(out[1], url, head);
        memcpy(out[1] + head, port, pl);
        memcpy(out[1] + head + pl, auth_end, tail);
        out_len[1] = head + pl + tail;
        out[1][out_len[1]] = '\0';
    }
    *n_out = 2;
}

/* The query of a URL (after the first '?', up to a '#'), or NULL. */
static const char *url_query(const char *url, size_t len, size_t *qlen)
{
    const char *q = memchr(url, '?', len);
    if (q == NULL)
        return NULL;
    q++;
    const char *hash = memchr(q, '#', (size_t)(url + len - q));
    *qlen = (size_t)((hash ? hash : url + len) - q);
    return q;
}

/*
 * The first bodySHA256 value of a query, decoded, into out (cap bytes): its length; -1 when
 * absent; -2 when it does not decode or does not fit (it cannot be a SHA-256 hex digest then).
 */
static long query_body_hash(const char *q, size_t qlen, char *out, size_t cap)
{
    struct hg_arena a;
    long found = -1;
    hg_arena_init(&a, 0);
    size_t pos = 0;
    while (pos < qlen && found == -1) {
        const char *pair = q + pos;
        const char *amp = memchr(pair, '&', qlen - pos);
        size_t pair_len = amp ? (size_t)(amp - pair) : qlen - pos;
        pos += pair_len + 1;
        const char *eq = memchr(pair, '=', pair_len);
        size_t key_len = eq ? (size_t)(eq - pair) : pair_len;
        const char *key, *val;
        size_t klen, vlen;
        if (decode_component(&a, pair, key_len, 0, &key, &klen, NULL, 0) != 0)
            continue;
        if (klen != strlen(BODY_HASH_PARAM) || memcmp(key, BODY_HASH_PARAM, klen) != 0)
            continue;
        const char *raw = eq ? eq + 1 : pair + pair_len;
        size_t raw_len = eq ? pair_len - key_len - 1 : 0;
        if (decode_component(&a, raw, raw_len, 0, &val, &vlen, NULL, 0) != 0 || vlen + 1 > cap) {
            found = -2;
        } else {
            memcpy(out, val, vlen + 1);
            found = (long)vlen;
        }
    }
    hg_arena_destroy(&a);
    return found;
}

/* application/json or application/<anything>+json, parameters ignored, case-insensitive. */
static bool is_json(const char *ct, size_t n)
{
    if (ct == NULL)
        return false;
    const char *semi = memchr(ct, ';', n);
    if (semi != NULL)
        n = (size_t)(semi - ct);
    trim(&ct, &n);
    if (hg_span_ieq(ct, n, "application/json"))
        return true;
    return n > 17 && strncasecmp(ct, "application/", 12) == 0 && strncasecmp(ct + n - 5, "+json", 5) == 0;
}

/*
 * The HMAC X-Twilio-Webhooks-Signature-Settings asks for ("key=<id>,algorithm=HMAC_SHA256"):
 * 0 and *alg; HG_ERR_SIGNATURE for an algorithm this module cannot compute. No header, or no
 * algorithm in it: SHA-1, Twilio's default.
 */
static int settings_alg(const char *s, size_t n, enum hg_hmac_alg *alg)
{
    *alg = HG_HMAC_SHA1;
    if (s == NULL)
        return 0;
    size_t pos = 0;
    while (pos < n) {
        const char *item = s + pos;
        const char *comma = memchr(item, ',', n - pos);
        size_t ilen = comma ? (size_t)(comma - item) : n - pos;
        pos += ilen + 1;
        const char *eq = memchr(item, '=', ilen);
        if (eq == NULL)
            continue;
        const char *k = item, *v = eq + 1;
        size_t kl = (size_t)(eq - item), vl = ilen - kl - 1;
        trim(&k, &kl);
        trim(&v, &vl);
        if (!hg_span_ieq(k, kl, "algorithm"))
            continue;
        if (hg_span_ieq(v, vl, "HMAC_SHA256"))
            *alg = HG_HMAC_SHA256;
        else if (hg_span_ieq(v, vl, "HMAC_SHA1"))
            *alg = HG_HMAC_SHA1;
        else
            return HG_ERR_SIGNATURE;
    }
    return 0;
}

int hg_twilio_verify(const struct hg_twilio_signed *s, const struct hg_strlist *tokens, char *why, size_t cap)
{
    struct hg_arena a;
    struct hg_twilio_param *params = NULL;
    char *urls[2] = {NULL, NULL};
    size_t url_lens[2] = {0, 0}, n_urls = 0, n = 0;
    char hash_given[128];
    long hash_len = -1;
    enum hg_hmac_alg alg;
    int rc = HG_ERR_SIGNATURE;
    bool usable = false;

    if (why != NULL && cap > 0)
        why[0] = '\0';
    const char *sig = s->signature;
    size_t sig_len = s->signature_len;
    if (sig != NULL)
        trim(&sig, &sig_len);
    if (sig == NULL || sig_len == 0) {
        say(why, cap, "missing " SIGNATURE_HEADER);
        return HG_ERR_SIGNATURE;
    }
    for (size_t i = 0; tokens != NULL && i < tokens->n; i++)
        usable |= tokens->items[i] != NULL && tokens->items[i][0] != '\0';
    if (!usable) {
        say(why, cap, "no Twilio auth token configured");
        return HG_ERR_SIGNATURE;
    }
    if (settings_alg(s->settings, s->settings_len, &alg) != 0) {
        say(why, cap, "unsupported algorithm in " SETTINGS_HEADER);
        return HG_ERR_SIGNATURE;
    }

    hg_arena_init(&a, ARENA_PER_BODY_BYTE * s->body_len + ARENA_BASE);
    bool json = is_json(s->content_type, s->content_type_len);
    if (json) {
        /* As the validators: a JSON body is signed through the URL, which carries its hash. */
        size_t qlen = 0;
        const char *q = url_query(s->url, s->url_len, &qlen);
        hash_len = q ? query_body_hash(q, qlen, hash_given, sizeof(hash_given)) : -1;
        if (hash_len == -1) {
            say(why, cap, BODY_HASH_PARAM " missing from the URL of a JSON body");
            goto out;
        }
    } else {
        char reason[128];
        int got = hg_twilio_form_decode(&a, s->body ? s->body : "", s->body_len, &params, reason, sizeof(reason));
        if (got < 0) {
            say(why, cap, "body is not a valid form: %s", got == HG_ERR_NOMEM ? "out of memory" : reason);
            goto out;
        }
        n = (size_t)got;
        qsort(params, n, sizeof(*params), param_cmp);
    }
    bool has_repeats = false;
    for (size_t i = 1; i < n; i++)
        has_repeats |= param_same(&params[i], &params[i - 1]);

    url_variants(s->url, s->url_len, urls, url_lens, &n_urls);
    /*
     * Every token, URL form and repeat rule is computed even after a match, so the time taken
     * does not tell which token of a rotation is current.
     */
    int matched = 0;
    for (size_t t = 0; t < tokens->n; t++) {
        const char *token = tokens->items[t];
        if (token == NULL || token[0] == '\0')
            continue;
        for (size_t u = 0; u < n_urls; u++) {
            for (int dedup = 0; dedup <= (has_repeats ? 1 : 0); dedup++) {
                char want[HG_TWILIO_SIG_MAX];
                size_t wl = sign_sorted(alg, token, strlen(token), urls[u], url_lens[u], params, n, dedup != 0,
                                        want, sizeof(want));
                matched |= hg_ct_equal(want, wl, sig, sig_len);
            }
        }
    }
    if (!matched) {
        say(why, cap, "signature does not match");
        goto out;
    }
    if (json) {
        unsigned char digest[HG_SHA256_LEN];
        char hex[2 * HG_SHA256_LEN + 1];
        hg_sha256(s->body ? s->body : "", s->body_len, digest);
        hg_hex(hex, digest, sizeof(digest));
        if (hash_len < 0 || !hg_ct_equal(hex, 2 * HG_SHA256_LEN, hash_given, (size_t)hash_len)) {
            say(why, cap, BODY_HASH_PARAM " does not match the body");
            goto out;
        }
    }
    rc = 0;
out:
    for (size_t u = 0; u < 2; u++)
        free(urls[u]);
    hg_arena_destroy(&a);
    return rc;
}

/* ---- parsing ---- */


struct hg_json_doc *hg_twilio_parse(const char *body, size_t len, const char *content_type, size_t ct_len,
                                    char *reason, size_t cap)
{
    struct hg_json_doc *doc = hg_json_doc_new(ARENA_PER_BODY_BYTE * len + ARENA_BASE);
    if (body == NULL)
        body = "";
    if (is_json(content_type, ct_len)) {
        struct hg_json_error jerr;
        struct hg_json *root = hg_json_parse(&doc->arena, body, len, &jerr);
        if (root == NULL)
            return hg_provider_parse_fail(reason, cap, doc, "body is not valid JSON: %s (line %d, column %d)",
                                          jerr.text, jerr.line, jerr.column);
        if (!hg_json_is_object(root))
            return hg_provider_parse_fail(reason, cap, doc, "body is not valid JSON: the top level is not an object");
        doc->root = root;
        return doc;
    }
    struct hg_twilio_param *params;
    char why[128];
    int n = hg_twilio_form_decode(&doc->arena, body, len, &params, why, sizeof(why));
    if (n < 0)
        return hg_provider_parse_fail(reason, cap, doc, "body is not a valid form: %s",
                                      n == HG_ERR_NOMEM ? "out of memory" : why);
    doc->root = hg_twilio_form_object(&doc->arena, params, (size_t)n);
    if (doc->root == NULL)
        return hg_provider_parse_fail(reason, cap, doc, "body is not a valid form: out of memory");
    return doc;
}

int hg_twilio_tenant_ids(const struct hg_json *root, int (*fn)(void *arg, const char *id), void *arg)
{
    static const char *const keys[] = {"AccountSid", "MessagingServiceSid"};
    for (size_t i = 0; i < HG_ARRAY_SIZE(keys); i++) {
        struct hg_json *v = hg_json_get(root, keys[i]);
        /* An id with a NUL inside could match a configured id it is not. */
        if (!hg_json_is_string(v) || v->len == 0 || memchr(v->str, '\0', v->len) != NULL)
            continue;
        int rc = fn(arg, v->str);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int hg_twilio_count_events(const struct hg_json *root)
{
    return hg_json_is_object(root) ? 1 : 0;
}

/* ---- the provider table ---- */

static int provider_verify(const struct hg_provider_request *r, const struct hg_creds *creds, char *why, size_t cap)
{
    struct hg_buf url;
    struct hg_twilio_signed s = {.body = r->body, .body_len = r->body_len};
    int rc;

    s.signature = hg_http_header_get(r->http, SIGNATURE_HEADER, &s.signature_len);
    s.settings = hg_http_header_get(r->http, SETTINGS_HEADER, &s.settings_len);
    s.content_type = hg_http_header_get(r->http, "Content-Type", &s.content_type_len);
    if (s.signature == NULL) {
        say(why, cap, "missing " SIGNATURE_HEADER);
        return HG_ERR_SIGNATURE;
    }
    hg_buf_init(&url, URL_MAX);
    rc = hg_twilio_url(r->http, creds ? creds->public_url : NULL, &url);
    if (rc != 0) {
        say(why, cap, rc == HG_ERR_INVALID ? "cannot tell the URL Twilio called: no public_url and no Host header"
                                           : "request URL too long");
        hg_buf_free(&url);
        return HG_ERR_SIGNATURE;
    }
    s.url = hg_buf_cstr(&url);
    s.url_len = url.len;
    rc = hg_twilio_verify(&s, creds ? creds->secrets : NULL, why, cap);
    hg_buf_free(&url);
    return rc;
}

static bool provider_unsigned(const struct hg_http_request *r, const struct hg_conf *conf, char *why, size_t cap)
{
    (void)conf;
    if (hg_http_header_get(r, SIGNATURE_HEADER, NULL) != NULL)
        return false;
    snprintf(why, cap, "missing " SIGNATURE_HEADER);
    return true;
}

/* The tenant's auth tokens (else [twilio] auth_token's) and the public URL Twilio calls. */
static void provider_creds(const struct hg_conf *conf, const struct hg_tenant *t, struct hg_creds *out)
{
    out->secrets = &t->twilio_auth_tokens;
    out->public_url = conf->twilio_public_url;
}

static struct hg_json_doc *provider_parse(const struct hg_provider_body *b, char *reason, size_t cap)
{
    size_t ct_len = 0;
    const char *ct = b->headers ? hg_provider_header(b->headers, b->headers_len, "Content-Type", &ct_len) : NULL;
    return hg_twilio_parse(b->body, b->body_len, ct, ct_len, reason, cap);
}

/* Empty TwiML: Twilio reads the answer to an inbound message or call as instructions. */
static size_t provider_accepted(char *out, size_t cap, const char *request_id, int events, const char **content_type)
{
    size_t n = sizeof(ACCEPTED_BODY) - 1;
    *content_type = "text/xml";
    if (cap == 0)
        return 0;
    if (n > cap - 1)
        n = cap - 1;
    memcpy(out, ACCEPTED_BODY, n);
    out[n] = '\0';
    return n;
}

static const char *const spool_headers[] = {
    SIGNATURE_HEADER, "Content-Type", "User-Agent", "I-Twilio-Idempotency-Token", SETTINGS_HEADER, NULL,
};

static const char *const bind_messages[] = {"message.#", NULL};
static const char *const bind_status[] = {"status.#", NULL};
static const char *const bind_calls[] = {"call.#", NULL};
static const char *const bind_system[] = {"system.#", "error.#", NULL};

static const struct hg_provider_queue queues[] = {
    {"INBOUND_TWILIO_MESSAGES", bind_messages},
    {"TWILIO_STATUS_UPDATES", bind_status},
    {"TWILIO_CALL_EVENTS", bind_calls},
    {"TWILIO_SYSTEM_EVENTS", bind_system},
};

static const struct hg_provider_topology topology = {
    .exchange = "twilio.inbound",
    .dlx = "twilio.inbound.dlx",
    .queues = queues,
    .n_queues = HG_ARRAY_SIZE(queues),
};

/* A media type from a content type: image/..., video/..., audio/..., else a document. */
static const char *media_type_of(const char *content_type)
{
    if (content_type != NULL && strncasecmp(content_type, "image/", 6) == 0)
        return "image";
    if (content_type != NULL && strncasecmp(content_type, "video/", 6) == 0)
        return "video";
    if (content_type != NULL && strncasecmp(content_type, "audio/", 6) == 0)
        return "audio";
    return "document";
}

/*
 * Media resolver: a message of type media has one file per content.media[] item ({url,
 * content_type} from MediaUrlN / MediaContentTypeN), in order. Twilio's media URLs take HTTP
 * Basic auth with the account's SID (raw.AccountSid) and auth token, and redirect to a
 * short-lived storage URL on another host. Each file is named "<MessageSid>-<n>" (n its index),
 * as its id and as {messageId} of its key, so the files of one message never share a key.
 */
static size_t provider_media(const struct hg_json *ev, size_t i, struct hg_media_ref *out)
{
    const char *kind = hg_json_str(hg_json_get(ev, "kind")), *type = hg_json_str(hg_json_get(ev, "type"));
    const struct hg_json *media = hg_json_get(hg_json_get(ev, "content"), "media");
    if (kind == NULL || strcmp(kind, "message") != 0 || type == NULL || strcmp(type, "media") != 0 ||
        !hg_json_is_array(media))
        return 0;
    size_t n = 0;
    for (const struct hg_json_item *it = hg_json_first(media); it != NULL; it = it->next, n++) {
        if (out == NULL || n != i)
            continue;
        const char *ct = hg_json_str(hg_json_get(it->val, "content_type"));
        const char *sid = hg_json_str(hg_json_get(ev, "event_id"));
        memset(out, 0, sizeof(*out));
        out->via = HG_MEDIA_VIA_URL_BASIC;
        out->type = media_type_of(ct);
        out->url = hg_json_str(hg_json_get(it->val, "url"));
        out->user = hg_json_str(hg_json_get(hg_json_get(ev, "raw"), "AccountSid"));
        out->mime_type = ct;
        snprintf(out->id, sizeof(out->id), "%s-%zu", sid != NULL ? sid : "", n);
        out->media_id = out->message_id = out->id;
    }
    return n;
}

const struct hg_provider hg_provider_twilio = {
    .id = HG_PROVIDER_TWILIO,
    .name = "twilio",
    .route = "/webhooks/twilio",
    .spool_headers = spool_headers,
    .topology = &topology,
    .creds = provider_creds,
    .handshake = NULL,
    .verify = provider_verify,
    .unsigned_request = provider_unsigned,
    .parse = provider_parse,
    .tenant_ids = hg_twilio_tenant_ids,
    .count_events = hg_twilio_count_events,
    .normalize = hg_twilio_normalize,
    .accepted = provider_accepted,
    .media = provider_media,
    .media_list = true,
};

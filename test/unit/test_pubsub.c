/*
 * Unit tests for Google Pub/Sub push: the strict base64url decoder, JWKS parsing, RS256 token
 * verification (tokens signed here with an RSA key pair generated at test time by mbedTLS's key
 * generator: no key material is copied from anywhere) and every refusal the docs list (expired and
 * future tokens, wrong aud/iss/email, unknown kid, alg none, HS256 signed with the public key as
 * the secret, truncated signature, bad base64url), then body parsing and normalization.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/md.h>
#include <mbedtls/rsa.h>

#include "clients/jwks_remote.h"
#include "core/arena.h"
#include "core/err.h"
#include "core/hmac.h"
#include "core/jwt.h"
#include "core/sha256.h"
#include "providers/pubsub.h"

#define AUD "https://hooks.example.com/webhooks/pubsub"
#define SA  "push@project.iam.gserviceaccount.com"

static mbedtls_rsa_context key, other_key;
static char jwks_text[4096];
static struct hg_jwks *jwks;
static int64_t now;

/* ---- helpers: base64url, key generation, token minting ---- */

static size_t b64url(const unsigned char *in, size_t n, char *out, size_t cap)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        assert_true(o + 4 < cap);
        out[o++] = al[(v >> 18) & 63];
        out[o++] = al[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = al[(v >> 6) & 63];
        if (i + 2 < n)
            out[o++] = al[v & 63];
    }
    out[o] = '\0';
    return o;
}

static void gen_key(mbedtls_rsa_context *k)
{
    mbedtls_entropy_context ent;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_entropy_init(&ent);
    mbedtls_ctr_drbg_init(&drbg);
    assert_int_equal(mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &ent, (const unsigned char *)"t", 1), 0);
    mbedtls_rsa_init(k, MBEDTLS_RSA_PKCS_V15, 0);
    assert_int_equal(mbedtls_rsa_gen_key(k, mbedtls_ctr_drbg_random, &drbg, 2048, 65537), 0);
    mbedtls_ctr_drbg_free(&drbg);
    mbedtls_entropy_free(&ent);
}

/* {"kty":"RSA","kid":kid,"n":..,"e":..} of k's public half. */
static void jwk_json(const mbedtls_rsa_context *k, const char *kid, char *out, size_t cap)
{
    unsigned char n[512], e[4];
    char nb[800], eb[16];
    size_t nl = mbedtls_rsa_get_len(k);
    assert_int_equal(mbedtls_rsa_export_raw(k, n, nl, NULL, 0, NULL, 0, NULL, 0, e, sizeof(e)), 0);
    size_t skip = 0;
    while (e[skip] == 0)
        skip++;
    b64url(n, nl, nb, sizeof(nb));
    b64url(e + skip, sizeof(e) - skip, eb, sizeof(eb));
    snprintf(out, cap, "{\"kty\":\"RSA\",\"alg\":\"RS256\",\"use\":\"sig\",\"kid\":\"%s\",\"n\":\"%s\",\"e\":\"%s\"}", kid,
             nb, eb);
}

/* header.payload.signature with k (RS256) over the two JSON texts. */
static void mint_with(mbedtls_rsa_context *k, const char *header, const char *payload, char *out, size_t cap)
{
    size_t o = b64url((const unsigned char *)header, strlen(header), out, cap);
    out[o++] = '.';
    o += b64url((const unsigned char *)payload, strlen(payload), out + o, cap - o);
    unsigned char digest[32], sig[512];
    hg_sha256(out, o, digest);
    assert_int_equal(mbedtls_rsa_pkcs1_sign(k, NULL, NULL, MBEDTLS_RSA_PRIVATE, MBEDTLS_MD_SHA256, 32, digest, sig), 0);
    out[o++] = '.';
    b64url(sig, mbedtls_rsa_get_len(k), out + o, cap - o);
}

static void claims(char *out, size_t cap, const char *iss, const char *aud, const char *email, const char *verified,
                   int64_t iat, int64_t exp)
{
    snprintf(out, cap,
             "{\"iss\":\"%s\",\"aud\":\"%s\",\"azp\":\"1234\",\"email\":\"%s\",\"email_verified\":%s,"
             "\"iat\":%lld,\"exp\":%lld,\"sub\":\"1234\"}",
             iss, aud, email, verified, (long long)iat, (long long)exp);
}

static void good_claims(char *out, size_t cap)
{
    claims(out, cap, "https://accounts.google.com", AUD, SA, "true", now - 10, now + 3590);
}

static const char HDR[] = "{\"alg\":\"RS256\",\"kid\":\"k1\",\"typ\":\"JWT\"}";

/* The full check, with creds as the provider makes them; returns rc, reason in why. */
static int check(const char *token, char *why, size_t cap)
{
    char auth[8192 + 16];
    struct hg_creds c = {.jwks = jwks, .audience = AUD, .account = SA};
    snprintf(auth, sizeof(auth), "Bearer %s", token);
    return hg_pubsub_verify_token(auth, strlen(auth), &c, "/webhooks/pubsub", now, why, cap);
}

static void expect_refused(const char *token, const char *reason)
{
    char why[256] = "";
    assert_int_equal(check(token, why, sizeof(why)), HG_ERR_SIGNATURE);
    assert_string_equal(why, reason);
}

static int setup(void **state)
{
    (void)state;
    now = (int64_t)time(NULL);
    gen_key(&key);
    gen_key(&other_key);
    char k1[1024], k2[1024];
    jwk_json(&key, "k1", k1, sizeof(k1));
    jwk_json(&other_key, "k2", k2, sizeof(k2));
    snprintf(jwks_text, sizeof(jwks_text), "{\"keys\":[{\"kty\":\"EC\",\"kid\":\"ec\"},%s,%s]}", k1, k2);
    char why[256] = "";
    assert_int_equal(hg_jwks_parse(jwks_text, strlen(jwks_text), &jwks, why, sizeof(why)), 0);
    assert_int_equal(hg_jwks_count(jwks), 2);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    hg_jwks_free(jwks);
    mbedtls_rsa_free(&key);
    mbedtls_rsa_free(&other_key);
    return 0;
}

/* ---- tests ---- */

static void test_base64url(void **state)
{
    (void)state;
    unsigned char out[16];
    assert_int_equal(hg_base64url_decode("aGk", 3, out, sizeof(out)), 2);
    assert_memory_equal(out, "hi", 2);
    assert_int_equal(hg_base64url_decode("-_8", 3, out, sizeof(out)), 2);
    assert_int_equal(hg_base64url_decode("aGk=", 4, out, sizeof(out)), -1); /* padding */
    assert_int_equal(hg_base64url_decode("a+k", 3, out, sizeof(out)), -1);  /* standard alphabet */
    assert_int_equal(hg_base64url_decode("aGl", 3, out, sizeof(out)), -1);  /* non-zero spare bits */
    assert_int_equal(hg_base64url_decode("aGkaG", 5, out, sizeof(out)), -1); /* 6 stray bits */
    assert_int_equal(hg_base64url_decode("aGVsbG8", 7, out, 4), -1);       /* past cap */
    assert_int_equal(hg_base64url_decode("", 0, out, sizeof(out)), 0);
}

static void test_jwks_errors(void **state)
{
    (void)state;
    struct hg_jwks *k = NULL;
    char why[256];
    const char *bad[][2] = {
        {"not json", "not valid JSON"},
        {"{\"nokeys\":[]}", "not a JWKS document"},
        {"{\"keys\":[]}", "no RSA signing key"},
        {"{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"a\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}", "key \"a\": 17-bit modulus"},
        {"{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"a\",\"n\":\"AQ+B\",\"e\":\"AQAB\"}]}", "key \"a\": \"n\" or \"e\""},
        {"{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}", "key 0: \"kid\" missing"},
        {"{\"keys\":[], \"keys\":[]}", "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why[0] = '\0';
        assert_int_equal(hg_jwks_parse(bad[i][0], strlen(bad[i][0]), &k, why, sizeof(why)), HG_ERR_PARSE);
        assert_null(k);
        if (strncmp(why, bad[i][1], strlen(bad[i][1])) != 0)
            fail_msg("%s: got \"%s\", want \"%s...\"", bad[i][0], why, bad[i][1]);
    }
    /* The same kid twice. */
    char k1[1024], dup[2200];
    jwk_json(&key, "k1", k1, sizeof(k1));
    snprintf(dup, sizeof(dup), "{\"keys\":[%s,%s]}", k1, k1);
    assert_int_equal(hg_jwks_parse(dup, strlen(dup), &k, why, sizeof(why)), HG_ERR_PARSE);
    assert_string_equal(why, "key 1: kid \"k1\" appears twice");
    assert_int_equal(hg_jwks_load_file("/nonexistent/jwks.json", &k, why, sizeof(why)), HG_ERR_PARSE);
    assert_string_equal(why, "cannot open: No such file or directory");
}

static void test_valid_token(void **state)
{
    (void)state;
    char c[1024], tok[4096], why[256] = "";
    good_claims(c, sizeof(c));
    mint_with(&key, HDR, c, tok, sizeof(tok));
    assert_int_equal(check(tok, why, sizeof(why)), 0);
    /* Either iss spelling; the second key of the set; the scheme in any case. */
    claims(c, sizeof(c), "accounts.google.com", AUD, SA, "true", now, now + 3600);
    mint_with(&other_key, "{\"alg\":\"RS256\",\"kid\":\"k2\"}", c, tok, sizeof(tok));
    char auth[4200];
    snprintf(auth, sizeof(auth), "bearer %s", tok);
    struct hg_creds cr = {.jwks = jwks, .audience = AUD, .account = SA};
    assert_int_equal(hg_pubsub_verify_token(auth, strlen(auth), &cr, "/x", now, why, sizeof(why)), 0);
    /* Audience derived from public_url + target (a trailing slash of public_url dropped). */
    struct hg_creds pu = {.jwks = jwks, .public_url = "https://hooks.example.com/", .account = NULL};
    assert_int_equal(hg_pubsub_verify_token(auth, strlen(auth), &pu, "/webhooks/pubsub", now, why, sizeof(why)), 0);
    assert_int_equal(hg_pubsub_verify_token(auth, strlen(auth), &pu, "/webhooks/pubsub/acme", now, why, sizeof(why)),
                     HG_ERR_SIGNATURE);
    assert_string_equal(why, "token aud does not match");
}

static void test_times(void **state)
{
    (void)state;
    char c[1024], tok[4096], why[256];
    claims(c, sizeof(c), "https://accounts.google.com", AUD, SA, "true", now - 3700, now - 100);
    mint_with(&key, HDR, c, tok, sizeof(tok));
    expect_refused(tok, "token expired");
    /* Within the skew: still good. */
    claims(c, sizeof(c), "https://accounts.google.com", AUD, SA, "true", now - 3600, now - 30);
    mint_with(&key, HDR, c, tok, sizeof(tok));
    assert_int_equal(check(tok, why, sizeof(why)), 0);
    claims(c, sizeof(c), "https://accounts.google.com", AUD, SA, "true", now + 300, now + 3900);
    mint_with(&key, HDR, c, tok, sizeof(tok));
    expect_refused(tok, "token issued in the future");
    claims(c, sizeof(c), "https://accounts.google.com", AUD, SA, "true", now + 30, now + 3630);
    mint_with(&key, HDR, c, tok, sizeof(tok));
    assert_int_equal(check(tok, why, sizeof(why)), 0);
    mint_with(&key, HDR, "{\"iss\":\"accounts.google.com\",\"aud\":\"" AUD "\",\"exp\":\"9999999999\",\"iat\":1}", tok,
              sizeof(tok));
    expect_refused(tok, "token has no exp or iat");
    snprintf(c, sizeof(c),
             "{\"iss\":\"accounts.google.com\",\"aud\":\"" AUD "\",\"email\":\"" SA "\",\"email_verified\":true,"
             "\"iat\":%lld,\"exp\":%lld,\"nbf\":%lld}",
             (long long)now, (long long)now + 3600, (long long)now + 600);
    mint_with(&key, HDR, c, tok, sizeof(tok));
    expect_refused(tok, "token not valid yet");
}

static void test_claims(void **state)
{
    (void)state;
    char c[1024], tok[4096];
    claims(c, sizeof(c), "https://evil.example.com", AUD, SA, "true", now, now + 3600);
    mint_with(&key, HDR, c, tok, sizeof(tok));
    expect_refused(tok, "token iss is not accounts.google.com");
    claims(c, sizeof(c), "https://accounts.google.com", AUD "/other", SA, "true", now, now + 3600);
    mint_with(&key, HDR, c, tok, sizeof(tok));
    expect_refused(tok, "token aud does not match");
    claims(c, sizeof(c), "https://accounts.google.com", AUD, "mallory@evil.iam.gserviceaccount.com", "true", now,
           now + 3600);
    mint_with(&key, HDR, c, tok, sizeof(tok));
    expect_refused(tok, "token email is not the service account");
    claims(c, sizeof(c), "https://accounts.google.com", AUD, SA, "false", now, now + 3600);
    mint_with(&key, HDR, c, tok, sizeof(tok));
    expect_refused(tok, "token email is not verified");
    claims(c, sizeof(c), "https://accounts.google.com", AUD, SA, "\"true\"", now, now + 3600);
    mint_with(&key, HDR, c, tok, sizeof(tok));
    expect_refused(tok, "token email is not verified");
    /* aud as a list: refused (Google sends a string). */
    snprintf(c, sizeof(c), "{\"iss\":\"accounts.google.com\",\"aud\":[\"" AUD "\"],\"iat\":%lld,\"exp\":%lld}",
             (long long)now, (long long)now + 3600);
    mint_with(&key, HDR, c, tok, sizeof(tok));
    expect_refused(tok, "token aud does not match");
}

static void test_header_refusals(void **state)
{
    (void)state;
    char c[1024], tok[4096], h[256], p[2048];
    good_claims(c, sizeof(c));
    mint_with(&key, "{\"alg\":\"RS256\",\"kid\":\"nope\"}", c, tok, sizeof(tok));
    expect_refused(tok, "token kid is not a known key");
    mint_with(&key, "{\"alg\":\"RS256\"}", c, tok, sizeof(tok));
    expect_refused(tok, "token has no kid");
    /* Signed by key k2 but naming k1. */
    mint_with(&other_key, HDR, c, tok, sizeof(tok));
    expect_refused(tok, "token signature does not match");
    mint_with(&key, "{\"alg\":\"RS256\",\"kid\":\"k1\",\"crit\":[\"exp\"]}", c, tok, sizeof(tok));
    expect_refused(tok, "token header has crit");
    mint_with(&key, "{\"alg\":\"RS256\",\"alg\":\"RS256\",\"kid\":\"k1\"}", c, tok, sizeof(tok));
    expect_refused(tok, "token header is not base64url JSON");

    /* alg none: unsigned, and with a signature part too. */
    const char *none = "{\"alg\":\"none\",\"kid\":\"k1\"}";
    b64url((const unsigned char *)none, strlen(none), h, sizeof(h));
    b64url((const unsigned char *)c, strlen(c), p, sizeof(p));
    snprintf(tok, sizeof(tok), "%s.%s.", h, p);
    expect_refused(tok, "token alg must be RS256");
    snprintf(tok, sizeof(tok), "%s.%s.AAAA", h, p);
    expect_refused(tok, "token alg must be RS256");

    /* HS256 with the public key (the JWKS text and the raw modulus) as the HMAC secret. */
    unsigned char n[256], mac[HG_HMAC_MAX];
    assert_int_equal(mbedtls_rsa_export_raw(&key, n, sizeof(n), NULL, 0, NULL, 0, NULL, 0, NULL, 0), 0);
    const char *hs = "{\"alg\":\"HS256\",\"kid\":\"k1\",\"typ\":\"JWT\"}";
    b64url((const unsigned char *)hs, strlen(hs), h, sizeof(h));
    char signing[3000], sig[100];
    snprintf(signing, sizeof(signing), "%s.%s", h, p);
    hg_hmac(HG_HMAC_SHA256, n, sizeof(n), signing, strlen(signing), mac);
    b64url(mac, 32, sig, sizeof(sig));
    snprintf(tok, sizeof(tok), "%s.%s", signing, sig);
    expect_refused(tok, "token alg must be RS256");
    hg_hmac(HG_HMAC_SHA256, jwks_text, strlen(jwks_text), signing, strlen(signing), mac);
    b64url(mac, 32, sig, sizeof(sig));
    snprintf(tok, sizeof(tok), "%s.%s", signing, sig);
    expect_refused(tok, "token alg must be RS256");
    mint_with(&key, "{\"alg\":\"rs256\",\"kid\":\"k1\"}", c, tok, sizeof(tok));
    expect_refused(tok, "token alg must be RS256");
}

static void test_structure_refusals(void **state)
{
    (void)state;
    char c[1024], tok[4096], bad[4096], why[256];
    good_claims(c, sizeof(c));
    mint_with(&key, HDR, c, tok, sizeof(tok));
    size_t n = strlen(tok);

    /* Truncated signature: its first 255 bytes, well encoded; then one character short (an
     * encoding of stray bits). */
    const char *dot = strrchr(tok, '.');
    unsigned char raw[300];
    assert_int_equal(hg_base64url_decode(dot + 1, strlen(dot + 1), raw, sizeof(raw)), 256);
    int pre = (int)(dot + 1 - tok);
    memcpy(bad, tok, (size_t)pre);
    b64url(raw, 255, bad + pre, sizeof(bad) - (size_t)pre);
    expect_refused(bad, "token signature has the wrong length");
    memcpy(bad, tok, n - 1);
    bad[n - 1] = '\0';
    expect_refused(bad, "token signature is not base64url");
    /* A flipped signature bit. */
    snprintf(bad, sizeof(bad), "%s", tok);
    bad[n - 10] = bad[n - 10] == 'A' ? 'B' : 'A';
    expect_refused(bad, "token signature does not match");
    /* Padding and the standard alphabet in the signature. */
    snprintf(bad, sizeof(bad), "%s=", tok);
    expect_refused(bad, "token signature is not base64url");
    /* A tampered payload (same signature). */
    const char *d1 = strchr(tok, '.'), *d2 = strrchr(tok, '.');
    char p2[2048];
    claims(c, sizeof(c), "https://accounts.google.com", AUD, SA, "true", now - 10, now + 99999);
    b64url((const unsigned char *)c, strlen(c), p2, sizeof(p2));
    snprintf(bad, sizeof(bad), "%.*s.%s%s", (int)(d1 - tok), tok, p2, d2);
    expect_refused(bad, "token signature does not match");
    /* Bad base64url in the header. */
    snprintf(bad, sizeof(bad), "e+%s", tok + 2);
    expect_refused(bad, "token header is not base64url JSON");
    /* Two parts, four parts, empty. */
    snprintf(bad, sizeof(bad), "%.*s", (int)(d2 - tok), tok);
    expect_refused(bad, "token is not three dot-separated parts");
    snprintf(bad, sizeof(bad), "%s.x", tok);
    expect_refused(bad, "token is not three dot-separated parts");
    expect_refused("", "missing Authorization: Bearer token");
    /* Not Bearer at all. */
    struct hg_creds cr = {.jwks = jwks, .audience = AUD};
    assert_int_equal(hg_pubsub_verify_token("Basic abc", 9, &cr, "/", now, why, sizeof(why)), HG_ERR_SIGNATURE);
    assert_string_equal(why, "missing Authorization: Bearer token");
    /* Too long. */
    char *huge = malloc(HG_JWT_MAX + 100);
    memset(huge, 'A', HG_JWT_MAX + 99);
    huge[HG_JWT_MAX + 99] = '\0';
    expect_refused(huge, "token longer than 8192 bytes");
    free(huge);
}

/* ---- body and events ---- */

struct got {
    int n;
    char type[80], rk[100], id[300];
    char *json;
};

static int on_event(void *arg, const struct hg_event *ev, struct hg_json *doc)
{
    struct got *g = arg;
    g->n++;
    snprintf(g->type, sizeof(g->type), "%s", ev->type);
    snprintf(g->rk, sizeof(g->rk), "%s", ev->routing_key);
    snprintf(g->id, sizeof(g->id), "%s", ev->event_id);
    free(g->json);
    g->json = hg_json_dumps(doc, NULL);
    return 0;
}

static void normalize(const char *body, struct got *g)
{
    char reason[256] = "";
    struct hg_json_doc *doc = hg_pubsub_parse(body, strlen(body), reason, sizeof(reason));
    if (doc == NULL)
        fail_msg("parse refused %s: %s", body, reason);
    struct hg_event_meta meta = {.tenant = "acme", .request_id = "rid-1", .received_at_ns = 1700000000000000000ull};
    memset(g, 0, sizeof(*g));
    assert_int_equal(hg_pubsub_normalize(&doc->arena, doc->root, &meta, on_event, g), 1);
    hg_json_doc_free(doc);
}

static void test_parse_refusals(void **state)
{
    (void)state;
    const char *bad[][2] = {
        {"nope", "body is not valid JSON"},
        {"[]", "body is not a JSON object"},
        {"{\"subscription\":\"s\"}", "body has no message object"},
        {"{\"message\":{\"messageId\":\"1\",\"data\":\"\"}}", "body has no subscription string"},
        {"{\"message\":{\"data\":\"aGk=\"},\"subscription\":\"s\"}", "message.messageId is not"},
        {"{\"message\":{\"messageId\":\"\",\"data\":\"aGk=\"},\"subscription\":\"s\"}", "message.messageId is not"},
        {"{\"message\":{\"messageId\":\"1\"},\"subscription\":\"s\"}", "message has neither data nor attributes"},
        {"{\"message\":{\"messageId\":\"1\",\"data\":\"a!k=\"},\"subscription\":\"s\"}", "message.data is not base64"},
        {"{\"message\":{\"messageId\":\"1\",\"data\":5},\"subscription\":\"s\"}", "message.data is not base64"},
        {"{\"message\":{\"messageId\":\"1\",\"attributes\":[]},\"subscription\":\"s\"}", "message.attributes is not"},
        {"{\"message\":{\"messageId\":\"1\",\"attributes\":{\"a\":1}},\"subscription\":\"s\"}", "message.attributes values"},
        {"{\"message\":{\"messageId\":\"1\",\"data\":\"\",\"publishTime\":1},\"subscription\":\"s\"}", "message.publishTime"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char reason[256] = "";
        struct hg_json_doc *d = hg_pubsub_parse(bad[i][0], strlen(bad[i][0]), reason, sizeof(reason));
        if (d != NULL || strncmp(reason, bad[i][1], strlen(bad[i][1])) != 0)
            fail_msg("%s: got \"%s\", want \"%s...\"", bad[i][0], reason, bad[i][1]);
    }
}

static void test_normalize(void **state)
{
    (void)state;
    struct got g;
    /* JSON data, type from the attribute. data = {"order":42} */
    normalize("{\"message\":{\"data\":\"eyJvcmRlciI6NDJ9\",\"attributes\":{\"type\":\"Order.Created\"},"
              "\"messageId\":\"m-1\",\"publishTime\":\"2025-03-01T10:00:00.123Z\",\"orderingKey\":\"k\"},"
              "\"subscription\":\"projects/p/subscriptions/s\"}",
              &g);
    assert_int_equal(g.n, 1);
    assert_string_equal(g.id, "m-1");
    assert_string_equal(g.type, "order_created");
    assert_string_equal(g.rk, "message.order_created");
    assert_non_null(strstr(g.json, "\"data\":{\"order\":42}"));
    assert_non_null(strstr(g.json, "\"data_base64\":\"eyJvcmRlciI6NDJ9\""));
    assert_non_null(strstr(g.json, "\"occurred_at\":\"2025-03-01T10:00:00.123Z\""));
    assert_non_null(strstr(g.json, "\"ordering_key\":\"k\""));
    assert_non_null(strstr(g.json, "\"provider\":\"pubsub\""));
    assert_non_null(strstr(g.json, "\"raw\":{\"data\""));
    free(g.json);

    /* Gmail: {"emailAddress":"user@example.com","historyId":9876543210} */
    normalize("{\"message\":{\"data\":\"eyJlbWFpbEFkZHJlc3MiOiJ1c2VyQGV4YW1wbGUuY29tIiwiaGlzdG9yeUlkIjo5ODc2NTQzMjEwfQ==\","
              "\"messageId\":\"g-1\",\"publishTime\":\"2025-03-01T10:00:00Z\"},\"subscription\":\"s\"}",
              &g);
    assert_string_equal(g.type, "gmail_notification");
    assert_string_equal(g.rk, "message.gmail_notification");
    assert_non_null(strstr(g.json, "\"email_address\":\"user@example.com\",\"history_id\":9876543210"));
    free(g.json);

    /* Text data ("hello world"), eventType attribute. */
    normalize("{\"message\":{\"data\":\"aGVsbG8gd29ybGQ=\",\"attributes\":{\"eventType\":\"OBJECT_FINALIZE\"},"
              "\"messageId\":\"t-1\"},\"subscription\":\"s\"}",
              &g);
    assert_string_equal(g.type, "object_finalize");
    assert_non_null(strstr(g.json, "\"data\":\"hello world\""));
    free(g.json);

    /* Binary data (ff fe 00): only base64; no type attribute: "message". */
    normalize("{\"message\":{\"data\":\"//4A\",\"messageId\":\"b-1\"},\"subscription\":\"s\"}", &g);
    assert_string_equal(g.type, "message");
    assert_non_null(strstr(g.json, "\"data\":null,\"data_base64\":\"//4A\""));
    free(g.json);
}

/* How long fetched keys stay fresh: Cache-Control max-age, clamped to 60 s .. 1 day; 1 h without. */
static void test_jwks_max_age(void **state)
{
    (void)state;
    assert_int_equal(hg_jwks_remote_max_age("public, max-age=19850, must-revalidate, no-transform"), 19850);
    assert_int_equal(hg_jwks_remote_max_age("max-age=5"), 60);
    assert_int_equal(hg_jwks_remote_max_age("MAX-AGE=999999999"), 86400);
    assert_int_equal(hg_jwks_remote_max_age(""), 3600);
    assert_int_equal(hg_jwks_remote_max_age(NULL), 3600);
    assert_int_equal(hg_jwks_remote_max_age("max-age=abc"), 3600);
    assert_int_equal(hg_jwks_remote_max_age("no-store"), 60);
    assert_int_equal(hg_jwks_remote_max_age("public, no-cache, max-age=7200"), 60);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64url),
        cmocka_unit_test(test_jwks_max_age),
        cmocka_unit_test(test_jwks_errors),
        cmocka_unit_test(test_valid_token),
        cmocka_unit_test(test_times),
        cmocka_unit_test(test_claims),
        cmocka_unit_test(test_header_refusals),
        cmocka_unit_test(test_structure_refusals),
        cmocka_unit_test(test_parse_refusals),
        cmocka_unit_test(test_normalize),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

/*
 * Unit tests for the generic provider's schemes (providers/generic.h): the Standard Webhooks spec
 * example, Stripe-, GitHub- and Shopify-style signatures computed outside hookgate (Python's hmac),
 * api-key, basic and jwt (PyJWT tokens, HS256 and RS256 with a JWKS); tolerance, rotation, truncated and malformed signatures; parse and normalize.
 *
 * Vectors (python3):
 *   k = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
 *   base64.b64encode(hmac.new(k, b'msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{"test": 2432232314}',
 *                             sha256).digest())
 *   hmac.new(b"whsec_stripe_test", b"1700000000." + BODY, sha256).hexdigest()
 *   hmac.new(b"gh-secret", BODY, sha256 | sha1 | sha512).hexdigest()
 *   base64.b64encode(hmac.new(b"shop-secret", BODY, sha256).digest())
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>
#include <jansson.h>

#include "core/err.h"
#include "core/json.h"
#include "core/jwt.h"
#include "providers/generic.h"

/* A request's headers as the verify sees them. */
struct hdrs {
    const char *name[6];
    const char *value[6];
};

static const char *get(const void *arg, const char *name, size_t *len)
{
    const struct hdrs *h = arg;
    for (size_t i = 0; i < 6 && h->name[i]; i++) {
        if (strcasecmp(h->name[i], name) == 0) {
            if (len)
                *len = strlen(h->value[i]);
            return h->value[i];
        }
    }
    return NULL;
}

static char *secrets_a[] = { "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" };

static struct hg_source_conf source(const char *scheme, char **secrets, size_t n)
{
    struct hg_source_conf s = { .name = "src", .scheme = (char *)scheme, .algorithm = "sha256", .encoding = "hex" };
    s.secrets.items = secrets;
    s.secrets.n = n;
    return s;
}

#define SW_BODY "{\"test\": 2432232314}"
#define SW_TS   1614265330
/* The spec's example signature (Python's hmac agrees with it). */
#define SW_SIG  "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

static int sw(const struct hg_source_conf *s, const char *id, const char *ts, const char *sig, int64_t now, char *why)
{
    struct hdrs h = { { "webhook-id", "webhook-timestamp", "webhook-signature" }, { id, ts, sig } };
    return hg_generic_verify_at(s, get, &h, SW_BODY, strlen(SW_BODY), now, why, 128);
}

static void test_standard_webhooks_spec_vector(void **state)
{
    (void)state;
    char why[128];
    struct hg_source_conf s = source("standard-webhooks", secrets_a, 2); /* rotation: 2nd key signs */
    assert_int_equal(sw(&s, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", SW_SIG, SW_TS, why), 0);
    /* Several signatures, the good one last. */
    assert_int_equal(sw(&s, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330",
                        "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= v2,x " SW_SIG, SW_TS, why), 0);
    /* Svix header names. */
    struct hdrs svix = { { "svix-id", "svix-timestamp", "svix-signature" },
                         { "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", SW_SIG } };
    assert_int_equal(hg_generic_verify_at(&s, get, &svix, SW_BODY, strlen(SW_BODY), SW_TS, why, sizeof(why)), 0);
    /* Another id, another body, a truncated signature, only the wrong key. */
    assert_int_equal(sw(&s, "msg_other", "1614265330", SW_SIG, SW_TS, why), HG_ERR_SIGNATURE);
    assert_string_equal(why, "signature does not match");
    assert_int_equal(sw(&s, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJE", SW_TS,
                        why), HG_ERR_SIGNATURE);
    assert_string_equal(why, "malformed webhook-signature");
    struct hg_source_conf only_a = source("standard-webhooks", secrets_a, 1);
    assert_int_equal(sw(&only_a, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", SW_SIG, SW_TS, why), HG_ERR_SIGNATURE);
}

static void test_standard_webhooks_tolerance(void **state)
{
    (void)state;
    char why[128];
    struct hg_source_conf s = source("standard-webhooks", secrets_a, 2);
    const char *id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    assert_int_equal(sw(&s, id, "1614265330", SW_SIG, SW_TS + 300, why), 0);
    assert_int_equal(sw(&s, id, "1614265330", SW_SIG, SW_TS - 300, why), 0);
    assert_int_equal(sw(&s, id, "1614265330", SW_SIG, SW_TS + 301, why), HG_ERR_SIGNATURE);
    assert_non_null(strstr(why, "too old"));
    assert_int_equal(sw(&s, id, "1614265330", SW_SIG, SW_TS - 301, why), HG_ERR_SIGNATURE);
    assert_non_null(strstr(why, "future"));
    assert_int_equal(sw(&s, id, "16142x5330", SW_SIG, SW_TS, why), HG_ERR_SIGNATURE);
    assert_string_equal(why, "malformed timestamp");
    struct hdrs none = { { "X-Other" }, { "1" } };
    assert_int_equal(hg_generic_verify_at(&s, get, &none, SW_BODY, strlen(SW_BODY), SW_TS, why, sizeof(why)),
                     HG_ERR_SIGNATURE);
    assert_non_null(strstr(why, "missing webhook-id"));
}

#define BODY "{\"id\":\"evt_1\",\"type\":\"invoice.paid\"}"
#define STRIPE_V1 "3951c1891e7d7f3735a4bdf78a8a9ae399991085b146a6d01cf2cb08cb948e71"

static int stripe(const struct hg_source_conf *s, const char *header, int64_t now, char *why)
{
    struct hdrs h = { { "Stripe-Signature" }, { header } };
    return hg_generic_verify_at(s, get, &h, BODY, strlen(BODY), now, why, 128);
}

static void test_stripe(void **state)
{
    (void)state;
    char why[128];
    char *secrets[] = { "whsec_old", "whsec_stripe_test" };
    struct hg_source_conf s = source("stripe", secrets, 2);
    assert_int_equal(stripe(&s, "t=1700000000,v1=" STRIPE_V1, 1700000000, why), 0);
    assert_int_equal(stripe(&s, "t=1700000000,v1=" STRIPE_V1 ",v0=abc", 1700000100, why), 0);
    assert_int_equal(stripe(&s, "t=1700000000,v1=0051c1891e7d7f3735a4bdf78a8a9ae399991085b146a6d01cf2cb08cb948e71", 1700000000, why), HG_ERR_SIGNATURE);
    assert_string_equal(why, "signature does not match");
    assert_int_equal(stripe(&s, "t=1700000001,v1=" STRIPE_V1, 1700000000, why), HG_ERR_SIGNATURE);
    assert_int_equal(stripe(&s, "t=1700000000,v1=3951c1891e7d7f37", 1700000000, why), HG_ERR_SIGNATURE);
    assert_non_null(strstr(why, "malformed Stripe-Signature"));
    assert_int_equal(stripe(&s, "t=1700000000,v1=" STRIPE_V1, 1700000301, why), HG_ERR_SIGNATURE);
    assert_non_null(strstr(why, "too old"));
    assert_int_equal(stripe(&s, "v1=" STRIPE_V1, 1700000000, why), HG_ERR_SIGNATURE);
    assert_non_null(strstr(why, "malformed"));
}

static int hmac_with(const struct hg_source_conf *s, const char *value, char *why)
{
    struct hdrs h = { { s->header }, { value } };
    return hg_generic_verify_at(s, get, &h, BODY, strlen(BODY), 0, why, 128);
}

static void test_hmac(void **state)
{
    (void)state;
    char why[128];
    char *gh[] = { "gh-secret" }, *shop[] = { "old", "shop-secret" };
    struct hg_source_conf g = source("hmac", gh, 1);
    g.header = "X-Hub-Signature-256";
    g.prefix = "sha256=";
    assert_int_equal(hmac_with(&g, "sha256=ab476e47357b04d2a5710d6a4664b2fe2b7297525df46650d4dc2ac03983ad10", why), 0);
    assert_int_equal(hmac_with(&g, "sha256=AB476E47357B04D2A5710D6A4664B2FE2B7297525DF46650D4DC2AC03983AD10", why), 0);
    assert_int_equal(hmac_with(&g, "sha256=bb476e47357b04d2a5710d6a4664b2fe2b7297525df46650d4dc2ac03983ad10", why),
                     HG_ERR_SIGNATURE);
    assert_int_equal(hmac_with(&g, "ab476e47357b04d2a5710d6a4664b2fe2b7297525df46650d4dc2ac03983ad10", why),
                     HG_ERR_SIGNATURE);
    assert_string_equal(why, "malformed X-Hub-Signature-256");
    assert_int_equal(hmac_with(&g, "sha256=ab476e47357b04d2a5710d6a4664b2fe", why), HG_ERR_SIGNATURE);
    g.algorithm = "sha1";
    g.prefix = "sha1=";
    assert_int_equal(hmac_with(&g, "sha1=80b15fb62c628bad20026fc98fe4dc13ebb870e6", why), 0);
    g.algorithm = "sha512";
    g.prefix = NULL;
    assert_int_equal(hmac_with(&g, "ef2332203f6e9fecab1683efa58a030ac877bde5f22e7387258440f56d87f39fa140a29a72c18dded8"
                                   "dfed742b0f554d57e60b23d957e759ad2feb941c33302a", why), 0);
    struct hg_source_conf s = source("hmac", shop, 2);
    s.header = "X-Shopify-Hmac-Sha256";
    s.encoding = "base64";
    assert_int_equal(hmac_with(&s, "s/HUUQSChGjJVKT2oE3rOPD8KyShEuQQkoea3Y7xBCs=", why), 0);
    assert_int_equal(hmac_with(&s, "t/HUUQSChGjJVKT2oE3rOPD8KyShEuQQkoea3Y7xBCs=", why), HG_ERR_SIGNATURE);
    struct hdrs none = { { "X-Other" }, { "1" } };
    assert_int_equal(hg_generic_verify_at(&s, get, &none, BODY, strlen(BODY), 0, why, sizeof(why)), HG_ERR_SIGNATURE);
    assert_string_equal(why, "missing X-Shopify-Hmac-Sha256");
}

static void test_api_key_and_basic(void **state)
{
    (void)state;
    char why[128];
    char *keys[] = { "key-one", "key-two" };
    struct hg_source_conf k = source("api-key", keys, 2);
    struct hdrs h = { { "X-API-Key" }, { "key-two" } };
    assert_int_equal(hg_generic_verify_at(&k, get, &h, BODY, strlen(BODY), 0, why, sizeof(why)), 0);
    h.value[0] = "key-thre";
    assert_int_equal(hg_generic_verify_at(&k, get, &h, BODY, strlen(BODY), 0, why, sizeof(why)), HG_ERR_SIGNATURE);
    k.header = "Authorization-Token";
    h.value[0] = "key-one";
    assert_int_equal(hg_generic_verify_at(&k, get, &h, BODY, strlen(BODY), 0, why, sizeof(why)), HG_ERR_SIGNATURE);
    assert_string_equal(why, "missing Authorization-Token");

    char *pw[] = { "pass-one", "pass-two" };
    struct hg_source_conf b = source("basic", pw, 2);
    b.user = "svc";
    struct hdrs a = { { "Authorization" }, { "Basic c3ZjOnBhc3MtdHdv" } };          /* svc:pass-two */
    assert_int_equal(hg_generic_verify_at(&b, get, &a, BODY, strlen(BODY), 0, why, sizeof(why)), 0);
    a.value[0] = "Basic c3ZjOm5vcGU=";                                             /* svc:nope */
    assert_int_equal(hg_generic_verify_at(&b, get, &a, BODY, strlen(BODY), 0, why, sizeof(why)), HG_ERR_SIGNATURE);
    b.user = "other";
    a.value[0] = "Basic c3ZjOnBhc3MtdHdv";
    assert_int_equal(hg_generic_verify_at(&b, get, &a, BODY, strlen(BODY), 0, why, sizeof(why)), HG_ERR_SIGNATURE);
    a.value[0] = "Bearer abc";
    assert_int_equal(hg_generic_verify_at(&b, get, &a, BODY, strlen(BODY), 0, why, sizeof(why)), HG_ERR_SIGNATURE);
    assert_non_null(strstr(why, "malformed Authorization"));
}

static int on_event(void *arg, const struct hg_event *ev, struct hg_json *doc)
{
    char *out = arg;
    snprintf(out, 256, "%s|%s|%s|%s", ev->event_id, ev->routing_key, ev->type,
             hg_json_str(hg_json_get(doc, "source")));
    return 0;
}

static void test_parse_normalize(void **state)
{
    (void)state;
    const struct hg_provider *p = &hg_provider_generic;
    const char *lines = "Content-Type: application/json\nX-Hookgate-Source: pay.ments\nX-Hookgate-Event-Id: evt_1\n"
                        "X-Hookgate-Event-Type: Invoice.Paid\n";
    struct hg_provider_body b = { BODY, strlen(BODY), lines, strlen(lines) };
    char reason[128] = "", out[256] = "";
    struct hg_json_doc *doc = p->parse(&b, reason, sizeof(reason));
    assert_non_null(doc);
    assert_int_equal(p->count_events(doc->root), 1);
    struct hg_event_meta meta = { .tenant = "default", .request_id = "r1", .received_at_ns = 1700000000000000000ull };
    assert_int_equal(p->normalize(&doc->arena, doc->root, &meta, on_event, out), 1);
    assert_string_equal(out, "evt_1|pay_ments.invoice_paid|invoice_paid|pay.ments");
    hg_json_doc_free(doc);

    /* Not JSON, no id or type: kept as a string, a body hash for the id, "event" for the type. */
    const char *l2 = "X-Hookgate-Source: s\n";
    struct hg_provider_body b2 = { "a=1&b=2", 7, l2, strlen(l2) };
    doc = p->parse(&b2, reason, sizeof(reason));
    assert_non_null(doc);
    assert_string_equal(hg_json_str(hg_json_get(doc->root, "raw")), "a=1&b=2");
    assert_int_equal(p->normalize(&doc->arena, doc->root, &meta, on_event, out), 1);
    assert_true(strncmp(out, "generic:", 8) == 0);
    assert_non_null(strstr(out, "|s.event|event|s"));
    hg_json_doc_free(doc);

    struct hg_provider_body b3 = { BODY, strlen(BODY), "", 0 };
    assert_null(p->parse(&b3, reason, sizeof(reason)));
    assert_string_equal(reason, "no source recorded with the webhook");
}

/* ---- jwt ----
 * Tokens made with PyJWT 2.6 (claims iss, sub, exp 4102444800, iat 1739321000): RS256 with the key
 * of test/fixtures/generic/jwks.json (kid k1), RS256 with another key, HS256 with "jwt-hs-secret"
 * (also with exp 1700000000, and nbf 1739400000), alg none, HS512.
 */
#define JWT_RS "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJpc3MiOiJiaWxsaW5nIiwic3ViIjoiaG9va3MiLCJleHAiOjQxMDI0NDQ4MDAsImlhdCI6MTczOTMyMTAwMH0.JcHzshxk51h3fHS2VIGgEXIL8Aa24UJWB-CAClmXdRR0PJarhbuKE3lT9J3lBwPCOqX_Ree4YC8FjMtJsQxZTYcWI_bue0MEJ2X6R4IQTU8tKpU18LXR66vc7z8-ehRm3WqoxWs8CkjhMS7MSx0GN6-bXaFxNqSUsv0sbTerxao7fLRzAffRz28HVgOhgs_QhxugRZQMm3Sw0uOQDzhiQOJAZXW-HNZFmEojIh8BPYMbLopBg8e3UMkxU34qiTuZ_g0g5kj-m2dfE40Yqf6D5fAZzFQqUhBJacuA2ToEi9piOc2eGaofahlIt36SM8GeYMxGcO4QSULavzyNbLapXA"
#define JWT_RS_OTHER "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJpc3MiOiJiaWxsaW5nIiwic3ViIjoiaG9va3MiLCJleHAiOjQxMDI0NDQ4MDAsImlhdCI6MTczOTMyMTAwMH0.JurK1mDiavW32Yikyw_aCQgS0cyVmojDZqDWwQpDmpWOjF8WUOGov1f2tybsl5P9Ttg8O-5melHaDnyo5R89WY4cM_NFF6QbeWJooRdY59tydEExl17EWAy_ofU0hLNvI65K-kKQfYTh7s9XflyXJPbyXbpnFvtMpau2GIxrte5ht2y2pcknZqUnziokXSEt6HBnDpofcoCLM9vCMhfxg_EHF11B-72yw1psRR10MRYxbvhJ-lV6rBZ82qPKw40VYeP6c1Mj7sFR1NFoKquYhXqi0JQq1A70JlgJSV1ryitjf0PLHzbimyesdN_z3CMr_kA1b_BMF1jyzb1JG5kUFw"
#define JWT_HS "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJiaWxsaW5nIiwic3ViIjoiaG9va3MiLCJleHAiOjQxMDI0NDQ4MDAsImlhdCI6MTczOTMyMTAwMH0.By0BrDxV5otAnNkn_7jELKcDKgFpD4_wTa6BXe8K_wE"
#define JWT_HS_EXPIRED "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJiaWxsaW5nIiwic3ViIjoiaG9va3MiLCJleHAiOjE3MDAwMDAwMDAsImlhdCI6MTczOTMyMTAwMH0.Iez6vc6SBufz8XQK2GRzhjDhRQle6vRh9BkRm9lywRQ"
#define JWT_HS_NBF "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJiaWxsaW5nIiwic3ViIjoiaG9va3MiLCJleHAiOjQxMDI0NDQ4MDAsImlhdCI6MTczOTMyMTAwMCwibmJmIjoxNzM5NDAwMDAwfQ.fpdTai0MTaq87JhbZ3PqWLg-KdYKloJrN6Xs5tVc_no"
#define JWT_NONE "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJpc3MiOiJiaWxsaW5nIiwic3ViIjoiaG9va3MiLCJleHAiOjQxMDI0NDQ4MDAsImlhdCI6MTczOTMyMTAwMH0."
#define JWT_HS512 "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJiaWxsaW5nIiwic3ViIjoiaG9va3MiLCJleHAiOjQxMDI0NDQ4MDAsImlhdCI6MTczOTMyMTAwMH0.ratkBEuMPyNb06P7BCCTSnpg05_zoT--UCnssgZrs-VFH2d1-OEUMQJGJYUEXnI-yrAupvc5lCx30mivPL2IqA"

static int jwt_with(const struct hg_source_conf *s, const char *authorization, int64_t now, char *why)
{
    struct hdrs h = { { "Authorization" }, { authorization } };
    return hg_generic_verify_at(s, get, &h, BODY, strlen(BODY), now, why, 128);
}

static void test_jwt(void **state)
{
    (void)state;
    char why[128], jwks[8192];
    FILE *f = fopen("../fixtures/generic/jwks.json", "r");
    assert_non_null(f);
    size_t n = fread(jwks, 1, sizeof(jwks) - 1, f);
    fclose(f);
    jwks[n] = '\0';
    char *hs[] = { "old-secret", "jwt-hs-secret" };
    struct hg_source_conf s = source("jwt", hs, 2);
    struct hg_jwks *keys = NULL;
    assert_int_equal(hg_jwks_parse(jwks, n, &keys, why, sizeof(why)), 0);
    s.jwks = jwks;
    s.jwks_keys = keys;
    const int64_t now = 1739321025;
    assert_int_equal(jwt_with(&s, "Bearer " JWT_RS, now, why), 0);
    assert_int_equal(jwt_with(&s, "Bearer " JWT_HS, now, why), 0);
    assert_int_equal(jwt_with(&s, JWT_HS, now, why), 0);                 /* "Bearer " is optional */
    assert_int_equal(jwt_with(&s, "Bearer " JWT_RS_OTHER, now, why), HG_ERR_SIGNATURE);
    assert_string_equal(why, "token signature does not match");
    assert_int_equal(jwt_with(&s, "Bearer " JWT_HS_EXPIRED, now, why), HG_ERR_SIGNATURE);
    assert_string_equal(why, "JWT expired (exp)");
    assert_int_equal(jwt_with(&s, "Bearer " JWT_HS_NBF, now, why), HG_ERR_SIGNATURE);
    assert_string_equal(why, "JWT not valid yet (nbf)");
    assert_int_equal(jwt_with(&s, "Bearer " JWT_HS_NBF, 1739400000 - 300, why), 0);   /* skew allowed */
    assert_int_equal(jwt_with(&s, "Bearer " JWT_HS_EXPIRED, 1700000000 + 299, why), 0); /* either way */
    s.tolerance_ms = 10000;                                                              /* per source */
    assert_int_equal(jwt_with(&s, "Bearer " JWT_HS_NBF, 1739400000 - 300, why), HG_ERR_SIGNATURE);
    assert_int_equal(jwt_with(&s, "Bearer " JWT_HS_NBF, 1739400000 - 10, why), 0);
    s.tolerance_ms = 0;
    /* iss and aud when configured (the tokens carry iss "billing" and no aud). */
    s.issuer = "billing";
    assert_int_equal(jwt_with(&s, "Bearer " JWT_HS, now, why), 0);
    s.issuer = "someone-else";
    assert_int_equal(jwt_with(&s, "Bearer " JWT_HS, now, why), HG_ERR_SIGNATURE);
    assert_string_equal(why, "JWT iss is not the source's issuer");
    s.issuer = NULL;
    s.audience = "hookgate";
    assert_int_equal(jwt_with(&s, "Bearer " JWT_RS, now, why), HG_ERR_SIGNATURE);
    assert_string_equal(why, "JWT aud does not name the source's audience");
    s.audience = NULL;
    assert_int_equal(jwt_with(&s, "Bearer " JWT_NONE, now, why), HG_ERR_SIGNATURE);
    assert_string_equal(why, "token alg must be RS256 or HS256");
    assert_int_equal(jwt_with(&s, "Bearer " JWT_HS512, now, why), HG_ERR_SIGNATURE);
    assert_string_equal(why, "token alg must be RS256 or HS256");
    assert_int_equal(jwt_with(&s, "Bearer abc.def", now, why), HG_ERR_SIGNATURE);
    assert_string_equal(why, "token is not three dot-separated parts");
    /* Tampered payload (one character), truncated signature. */
    char tampered[sizeof(JWT_HS) + 8];
    snprintf(tampered, sizeof(tampered), "Bearer %s", JWT_HS);
    tampered[7 + 40] = tampered[7 + 40] == 'A' ? 'B' : 'A';
    assert_int_equal(jwt_with(&s, tampered, now, why), HG_ERR_SIGNATURE);
    char truncated[sizeof(JWT_RS) + 8];
    snprintf(truncated, sizeof(truncated), "Bearer %.*s", (int)strlen(JWT_RS) - 10, JWT_RS);
    assert_int_equal(jwt_with(&s, truncated, now, why), HG_ERR_SIGNATURE);
    /* Without a JWKS an RS256 token is refused; without secrets an HS256 one is. */
    s.jwks_keys = NULL;
    assert_int_equal(jwt_with(&s, "Bearer " JWT_RS, now, why), HG_ERR_SIGNATURE);
    assert_string_equal(why, "token alg must be HS256");
    s.jwks_keys = keys;
    s.secrets.n = 0;
    assert_int_equal(jwt_with(&s, "Bearer " JWT_HS, now, why), HG_ERR_SIGNATURE);
    assert_string_equal(why, "token alg must be RS256");
    assert_int_equal(jwt_with(&s, "Bearer " JWT_RS, now, why), 0);
    struct hdrs none = { { "X-Other" }, { "1" } };
    assert_int_equal(hg_generic_verify_at(&s, get, &none, BODY, strlen(BODY), now, why, sizeof(why)), HG_ERR_SIGNATURE);
    assert_string_equal(why, "missing Authorization");
    hg_jwks_free(keys);
}

/* Slack's published example (api.slack.com "Verifying requests from Slack"): v0=HMAC-SHA256 of
 * "v0:<X-Slack-Request-Timestamp>:<body>", the way a hmac source with a template signs. */
#define SLACK_BODY                                                                                                    \
    "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=" \
    "foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2F"  \
    "hooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015."    \
    "47445629121.803a0bc887a14d10d2c447fce8b6703c"
#define SLACK_SIG "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"

static int slack(const struct hg_source_conf *s, const char *ts, const char *sig, int64_t now, char *why)
{
    struct hdrs h = { { "X-Slack-Request-Timestamp", "X-Slack-Signature" }, { ts, sig } };
    return hg_generic_verify_at(s, get, &h, SLACK_BODY, strlen(SLACK_BODY), now, why, 128);
}

static void test_hmac_timestamp_template(void **state)
{
    (void)state;
    char why[128], *secret[] = { "8f742231b10e8888abcd99yyyzzz85a5" };
    struct hg_source_conf s = source("hmac", secret, 1);
    s.header = "X-Slack-Signature";
    s.prefix = "v0=";
    s.timestamp_header = "X-Slack-Request-Timestamp";
    s.template = "v0:{timestamp}:{body}";
    assert_int_equal(slack(&s, "1531420618", SLACK_SIG, 1531420618 + 60, why), 0);
    /* The timestamp is signed: another one does not match; outside the tolerance is refused. */
    assert_int_equal(slack(&s, "1531420619", SLACK_SIG, 1531420618, why), HG_ERR_SIGNATURE);
    assert_string_equal(why, "signature does not match");
    assert_int_equal(slack(&s, "1531420618", SLACK_SIG, 1531420618 + 301, why), HG_ERR_SIGNATURE);
    assert_string_equal(why, "timestamp too old (outside the 300 s tolerance)");
    s.tolerance_ms = 600000;
    assert_int_equal(slack(&s, "1531420618", SLACK_SIG, 1531420618 + 301, why), 0);
    assert_int_equal(slack(&s, "1531420618", SLACK_SIG, 1531420618 - 601, why), HG_ERR_SIGNATURE);
    assert_string_equal(why, "timestamp in the future (outside the 600 s tolerance)");
    /* Without a template a timestamp_header signs "<timestamp>.<body>". */
    s.template = NULL;
    assert_int_equal(slack(&s, "1531420618", SLACK_SIG, 1531420618, why), HG_ERR_SIGNATURE);
    struct hdrs none = { { "X-Slack-Signature" }, { SLACK_SIG } };
    assert_int_equal(hg_generic_verify_at(&s, get, &none, "", 0, 1531420618, why, sizeof(why)), HG_ERR_SIGNATURE);
    assert_string_equal(why, "missing X-Slack-Request-Timestamp");
}

/* ---- the documented examples: normalizer output == test/fixtures/generic/expected/<name>.json ---- */

#define EXPECTED "../fixtures/generic/expected/"

static const struct {
    const char *name, *lines, *body;
} examples[] = {
    { "stripe_invoice_paid",
      "Content-Type: application/json\nX-Hookgate-Source: stripe\nX-Hookgate-Event-Id: evt_1QxYzA2eZvKYlo2C\n"
      "X-Hookgate-Event-Type: invoice.paid\n",
      "{\"id\":\"evt_1QxYzA2eZvKYlo2C\",\"object\":\"event\",\"type\":\"invoice.paid\",\"created\":1739321024,"
      "\"data\":{\"object\":{\"id\":\"in_1QxYz\",\"amount_paid\":2000,\"currency\":\"usd\"}}}" },
    { "github_push",
      "Content-Type: application/json\nX-Hookgate-Source: github\n"
      "X-Hookgate-Event-Id: 72d3162e-cc78-11e3-81ab-4c9367dc0958\nX-Hookgate-Event-Type: push\n",
      "{\"ref\":\"refs/heads/main\",\"repository\":{\"full_name\":\"acme/site\"},\"pusher\":{\"name\":\"sam\"}}" },
    { "form_body",
      "Content-Type: application/x-www-form-urlencoded\nX-Hookgate-Source: legacy\n",
      "order=1042&status=shipped" },
};

static int keep_event(void *arg, const struct hg_event *ev, struct hg_json *doc)
{
    (void)ev;
    *(char **)arg = hg_json_dumps(doc, NULL);
    return 0;
}

static void test_documented_examples(void **state)
{
    (void)state;
    const struct hg_provider *p = &hg_provider_generic;
    bool write = getenv("HG_WRITE_EXPECTED") != NULL;
    for (size_t i = 0; i < sizeof(examples) / sizeof(examples[0]); i++) {
        struct hg_provider_body b = { examples[i].body, strlen(examples[i].body), examples[i].lines,
                                      strlen(examples[i].lines) };
        char reason[128] = "", *text = NULL, path[256];
        struct hg_json_doc *doc = p->parse(&b, reason, sizeof(reason));
        assert_non_null(doc);
        struct hg_event_meta meta = { .tenant = "default", .request_id = "5a0c3f9e-2b7d-4c1a-9e8f-0d6b4a2c1e7f",
                                      .received_at_ns = 1739321025123000000ull };
        assert_int_equal(p->normalize(&doc->arena, doc->root, &meta, keep_event, &text), 1);
        assert_non_null(text);
        json_error_t err;
        json_t *got = json_loads(text, 0, &err);
        assert_non_null(got);
        snprintf(path, sizeof(path), EXPECTED "%s.json", examples[i].name);
        if (write) {
            assert_int_equal(json_dump_file(got, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER), 0);
        } else {
            json_t *want = json_load_file(path, 0, &err);
            if (want == NULL)
                fail_msg("%s: %s", path, err.text);
            if (!json_equal(got, want))
                fail_msg("%s differs from the normalizer's output:\n%s", path, text);
            json_decref(want);
        }
        json_decref(got);
        free(text);
        hg_json_doc_free(doc);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_standard_webhooks_spec_vector),
        cmocka_unit_test(test_standard_webhooks_tolerance),
        cmocka_unit_test(test_hmac_timestamp_template),
        cmocka_unit_test(test_stripe),
        cmocka_unit_test(test_hmac),
        cmocka_unit_test(test_api_key_and_basic),
        cmocka_unit_test(test_parse_normalize),
        cmocka_unit_test(test_documented_examples),
        cmocka_unit_test(test_jwt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

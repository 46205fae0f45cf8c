/*
 * Unit tests for the Twilio provider: X-Twilio-Signature (Twilio's published vector, ports,
 * bodySHA256, rotation, repeated keys, the HMAC-SHA256 shared-key mode), form decoding, parsing,
 * and normalization of every fixture in test/fixtures/twilio/ (*.form, *.json) against
 * test/fixtures/twilio/expected/<name>.json. HG_WRITE_EXPECTED=1 rewrites the expected files
 * instead of comparing (review the diff!).
 *
 * Expected signatures were computed with Python's hmac/hashlib, as twilio-python does:
 *   sig = lambda tok, url, pairs, alg=hashlib.sha1: base64.b64encode(hmac.new(tok.encode(),
 *         (url + ''.join(k + v for k, v in sorted(pairs))).encode(), alg).digest()).decode()
 * (pairs from urllib.parse.parse_qsl(body, keep_blank_values=True); the value quoted with each
 * test is the call that gave it).
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/err.h"
#include "http/http.h"
#include "providers/twilio.h"
#include "json_expect.h"

#define FIXTURES "../fixtures/twilio/"
#define MAX_EVENTS 4

/* Twilio's published example (docs "Webhooks security"): token 12345, this URL and these params. */
#define VEC_TOKEN "12345"
#define VEC_URL   "https://mycompany.com/myapp.php?foo=1&bar=2"
#define VEC_BODY  "CallSid=CA1234567890ABCDE&Caller=%2B12349013030&Digits=1234&From=%2B12349013030&To=%2B18005551212"
#define VEC_SIG   "0/KCTR6DLpKmkAf8muzZqo1nDgQ="

/* ---- helpers ---- */

static struct hg_strlist *tokens(int n, ...)
{
    static char *items[8];
    static struct hg_strlist list;
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++)
        items[i] = va_arg(ap, char *);
    va_end(ap);
    list.items = items;
    list.n = (size_t)n;
    return &list;
}

/* hg_twilio_verify with a form body (content type NULL), returning the result and the reason. */
static int verify_form(const char *url, const char *sig, const char *body, const struct hg_strlist *t, char *why)
{
    struct hg_twilio_signed s = {
        .url = url, .url_len = strlen(url),
        .signature = sig, .signature_len = sig ? strlen(sig) : 0,
        .content_type = "application/x-www-form-urlencoded", .content_type_len = 33,
        .body = body, .body_len = strlen(body),
    };
    return hg_twilio_verify(&s, t, why, 128);
}

/* A parsed HTTP request as the connection would hand it over. */
struct fake_request {
    struct hg_http_request r;
};

static void fake_header(struct fake_request *f, const char *name, const char *value)
{
    struct hg_http_req_header *h = &f->r.headers[f->r.n_headers++];
    h->name = name;
    h->name_len = strlen(name);
    h->value = value;
    h->value_len = strlen(value);
}

static void fake_init(struct fake_request *f, const char *path, const char *query, const char *body)
{
    memset(f, 0, sizeof(*f));
    f->r.path = path;
    f->r.path_len = strlen(path);
    f->r.query = query;
    f->r.query_len = strlen(query);
    f->r.body = body;
    f->r.body_len = strlen(body);
}

/* The provider table's verify on a fake request. */
static int provider_verify(struct fake_request *f, const char *public_url, const struct hg_strlist *t, char *why)
{
    struct hg_creds creds = {.secrets = t, .public_url = public_url};
    struct hg_provider_request pr = {.http = &f->r, .body = f->r.body, .body_len = f->r.body_len};
    return hg_provider_twilio.verify(&pr, &creds, why, 128);
}

/* ---- signatures ---- */

static void test_signature_published_vector(void **state)
{
    struct hg_twilio_param p[] = {
        /* Deliberately out of order: the function sorts. */
        {"To", 2, "+18005551212", 12}, {"Digits", 6, "1234", 4}, {"CallSid", 7, "CA1234567890ABCDE", 17},
        {"From", 4, "+12349013030", 12}, {"Caller", 6, "+12349013030", 12},
    };
    char out[HG_TWILIO_SIG_MAX];
    size_t n = hg_twilio_signature(HG_HMAC_SHA1, VEC_TOKEN, 5, VEC_URL, strlen(VEC_URL), p, 5, false, out, sizeof(out));
    assert_int_equal(n, 28);
    assert_string_equal(out, VEC_SIG);
    /* sig('12345', VEC_URL, params, hashlib.sha256) */
    n = hg_twilio_signature(HG_HMAC_SHA256, VEC_TOKEN, 5, VEC_URL, strlen(VEC_URL), p, 5, false, out, sizeof(out));
    assert_int_equal(n, 44);
    assert_string_equal(out, "Rmm4Vzj+Ky7JGoWXMCsZDZuHDszLr9xvdbvitrDr4/M=");
    /* Too small a buffer: nothing written. */
    assert_int_equal(hg_twilio_signature(HG_HMAC_SHA1, "k", 1, "u", 1, p, 5, false, out, 10), 0);
}

static void test_verify_published_vector(void **state)
{
    char why[128];
    assert_int_equal(verify_form(VEC_URL, VEC_SIG, VEC_BODY, tokens(1, VEC_TOKEN), why), 0);
    /* Twilio signed without the port; we see it with :443 (and the other way round):
     * sig('12345', 'https://mycompany.com:443/myapp.php?foo=1&bar=2', params) */
    assert_int_equal(verify_form("https://mycompany.com:443/myapp.php?foo=1&bar=2", VEC_SIG, VEC_BODY,
                                 tokens(1, VEC_TOKEN), why), 0);
    assert_int_equal(verify_form(VEC_URL, "EpDEmp1PyjDYp77YxYU3GILBWzE=", VEC_BODY, tokens(1, VEC_TOKEN), why), 0);
    /* Spaces around the header value are not part of it. */
    assert_int_equal(verify_form(VEC_URL, "  " VEC_SIG "\t", VEC_BODY, tokens(1, VEC_TOKEN), why), 0);
    /* http's default port is 80: sig('12345', 'http://mycompany.com:80/myapp.php?foo=1&bar=2', params). */
    assert_int_equal(verify_form("http://mycompany.com/myapp.php?foo=1&bar=2", "boT12oXXJ0BuzO2U/6iCqFdh2Do=", VEC_BODY,
                                 tokens(1, VEC_TOKEN), why), 0);
    assert_int_equal(verify_form("https://mycompany.com/myapp.php?foo=1&bar=2", "boT12oXXJ0BuzO2U/6iCqFdh2Do=",
                                 VEC_BODY, tokens(1, VEC_TOKEN), why), HG_ERR_SIGNATURE);
    /* A non-default port is kept or dropped, never swapped for the default:
     * sig('12345', 'https://mycompany.com:8443/myapp.php?foo=1&bar=2', params). */
    assert_int_equal(verify_form("https://mycompany.com:8443/myapp.php?foo=1&bar=2", "SffuNP6bC3hHFCUbsco6GyaPyas=",
                                 VEC_BODY, tokens(1, VEC_TOKEN), why), 0);
    assert_int_equal(verify_form("https://mycompany.com:8443/myapp.php?foo=1&bar=2", VEC_SIG, VEC_BODY,
                                 tokens(1, VEC_TOKEN), why), 0);
    assert_int_equal(verify_form("https://mycompany.com:8443/myapp.php?foo=1&bar=2", "EpDEmp1PyjDYp77YxYU3GILBWzE=",
                                 VEC_BODY, tokens(1, VEC_TOKEN), why), HG_ERR_SIGNATURE);
}

static void test_verify_failures(void **state)
{
    char why[128];
    /* Rotation: any token of the list may sign, in any position. */
    assert_int_equal(verify_form(VEC_URL, VEC_SIG, VEC_BODY, tokens(3, "old-token", "", VEC_TOKEN), why), 0);
    assert_int_equal(verify_form(VEC_URL, VEC_SIG, VEC_BODY, tokens(2, VEC_TOKEN, "next-token"), why), 0);
    assert_int_equal(verify_form(VEC_URL, VEC_SIG, VEC_BODY, tokens(1, "12346"), why), HG_ERR_SIGNATURE);
    assert_string_equal(why, "signature does not match");
    /* Tampered params, a param added, a tampered query, a truncated signature. */
    const char *tampered = "CallSid=CA1234567890ABCDE&Caller=%2B12349013030&Digits=1235&From=%2B12349013030&To=%2B18005551212";
    assert_int_equal(verify_form(VEC_URL, VEC_SIG, tampered, tokens(1, VEC_TOKEN), why), HG_ERR_SIGNATURE);
    assert_string_equal(why, "signature does not match");
    assert_int_equal(verify_form(VEC_URL, VEC_SIG, VEC_BODY "&Extra=1", tokens(1, VEC_TOKEN), why), HG_ERR_SIGNATURE);
    assert_int_equal(verify_form("https://mycompany.com/myapp.php?foo=1&bar=3", VEC_SIG, VEC_BODY, tokens(1, VEC_TOKEN),
                                 why), HG_ERR_SIGNATURE);
    assert_int_equal(verify_form(VEC_URL, "0/KCTR6DLpKmkAf8muzZqo1nDgQ", VEC_BODY, tokens(1, VEC_TOKEN), why),
                     HG_ERR_SIGNATURE);
    /* Missing header, empty header. */
    assert_int_equal(verify_form(VEC_URL, NULL, VEC_BODY, tokens(1, VEC_TOKEN), why), HG_ERR_SIGNATURE);
    assert_string_equal(why, "missing X-Twilio-Signature");
    assert_int_equal(verify_form(VEC_URL, " ", VEC_BODY, tokens(1, VEC_TOKEN), why), HG_ERR_SIGNATURE);
    assert_string_equal(why, "missing X-Twilio-Signature");
    /* No usable token. */
    assert_int_equal(verify_form(VEC_URL, VEC_SIG, VEC_BODY, tokens(1, ""), why), HG_ERR_SIGNATURE);
    assert_string_equal(why, "no Twilio auth token configured");
    assert_int_equal(verify_form(VEC_URL, VEC_SIG, VEC_BODY, NULL, why), HG_ERR_SIGNATURE);
    assert_string_equal(why, "no Twilio auth token configured");
    /* A body that is not a form cannot be verified. */
    assert_int_equal(verify_form(VEC_URL, VEC_SIG, "Body=100%zz", tokens(1, VEC_TOKEN), why), HG_ERR_SIGNATURE);
    assert_string_equal(why, "body is not a valid form: bad %-escape at byte 8");
}

/*
 * A JSON body: the signature covers the URL (with bodySHA256) alone.
 *   h = hashlib.sha256(body.encode()).hexdigest()  -> 5ccde714... (Twilio's example body)
 *   sig('12345', 'https://example.com/myapp?bodySHA256=' + h, [])  -> hPXmLwIy3Fgqv1i9KPmH/HhQ6zo=
 */
static void test_verify_json_body(void **state)
{
    static const char body[] = "{\"CallSid\":\"CA1234567890ABCDE\",\"Caller\":\"+12349013030\"}";
    static const char url[] =
        "https://example.com/myapp?bodySHA256=5ccde7145dfb8f56479710896586cb9d5911809d83afbe34627818790db0aec9";
    char why[128];
    struct hg_twilio_signed s = {
        .url = url, .url_len = strlen(url),
        .signature = "hPXmLwIy3Fgqv1i9KPmH/HhQ6zo=", .signature_len = 28,
        .content_type = "application/json; charset=utf-8", .content_type_len = 31,
        .body = body, .body_len = strlen(body),
    };
    assert_int_equal(hg_twilio_verify(&s, tokens(2, "other", VEC_TOKEN), why, sizeof(why)), 0);
    /* With :443 added to the URL it still verifies (port toggling applies to JSON too). */
    char with_port[256];
    snprintf(with_port, sizeof(with_port), "https://example.com:443/myapp?%s", strchr(url, '?') + 1);
    struct hg_twilio_signed p = s;
    p.url = with_port;
    p.url_len = strlen(with_port);
    assert_int_equal(hg_twilio_verify(&p, tokens(1, VEC_TOKEN), why, sizeof(why)), 0);
    /* A changed body: the signature (over the URL) matches, the hash does not. */
    struct hg_twilio_signed t = s;
    t.body = "{\"CallSid\":\"CA1234567890ABCDE\",\"Caller\":\"+12349013031\"}";
    assert_int_equal(hg_twilio_verify(&t, tokens(1, VEC_TOKEN), why, sizeof(why)), HG_ERR_SIGNATURE);
    assert_string_equal(why, "bodySHA256 does not match the body");
    /* Uppercase hex is not what Twilio sends (and not what it signed). */
    struct hg_twilio_signed u = s;
    u.url = "https://example.com/myapp?bodySHA256=5CCDE7145DFB8F56479710896586CB9D5911809D83AFBE34627818790DB0AEC9";
    u.url_len = strlen(u.url);
    assert_int_equal(hg_twilio_verify(&u, tokens(1, VEC_TOKEN), why, sizeof(why)), HG_ERR_SIGNATURE);
    /* No bodySHA256: a JSON body would be unsigned. */
    struct hg_twilio_signed m = s;
    m.url = "https://example.com/myapp";
    m.url_len = strlen(m.url);
    assert_int_equal(hg_twilio_verify(&m, tokens(1, VEC_TOKEN), why, sizeof(why)), HG_ERR_SIGNATURE);
    assert_string_equal(why, "bodySHA256 missing from the URL of a JSON body");
    /* The same request declared as a form: the body is decoded as params and signed with them. */
    struct hg_twilio_signed f = s;
    f.content_type = NULL;
    assert_int_equal(hg_twilio_verify(&f, tokens(1, VEC_TOKEN), why, sizeof(why)), HG_ERR_SIGNATURE);
    assert_string_equal(why, "signature does not match");
}

/*
 * A repeated key: twilio-python signs every value (sorted), twilio-node each distinct one.
 *   rep = parse_qsl('To=%2B1&b=2&To=%2B1&a=x&b=1')
 *   sig('12345', URL, rep)                         -> HlIQc3r0pgsAfJhJVHIeIpNNy0A=   (python)
 *   sig over sorted(set(rep))                      -> eqU51saI6MebFV508eO4cEa5efI=   (node)
 */
static void test_verify_repeated_keys(void **state)
{
    const char *url = "https://hooks.example.com/webhooks/twilio";
    const char *body = "To=%2B1&b=2&To=%2B1&a=x&b=1";
    char why[128];
    assert_int_equal(verify_form(url, "HlIQc3r0pgsAfJhJVHIeIpNNy0A=", body, tokens(1, VEC_TOKEN), why), 0);
    assert_int_equal(verify_form(url, "eqU51saI6MebFV508eO4cEa5efI=", body, tokens(1, VEC_TOKEN), why), 0);
    /* Without a repeat the two rules agree, and only the one form is accepted. */
    assert_int_equal(verify_form(url, "eqU51saI6MebFV508eO4cEa5efI=", "To=%2B1&b=2&a=x&b=1", tokens(1, VEC_TOKEN), why),
                     0);
    assert_int_equal(verify_form(url, "HlIQc3r0pgsAfJhJVHIeIpNNy0A=", "To=%2B1&b=2&a=x&b=1", tokens(1, VEC_TOKEN), why),
                     HG_ERR_SIGNATURE);
}

/*
 * Twilio's shared-key signing (Webhook Settings, public beta): X-Twilio-Webhooks-Signature-Settings
 * names the algorithm; the signed string is the same.
 *   sig('sk_shared_secret_1', 'https://hooks.example.com/webhooks/twilio/acme', sms_inbound pairs,
 *       hashlib.sha256)  -> Qc6nSblUWjFZad3p4q6s3gKBZ2oSBI+nD1lsxt3iFAM=
 */
static void test_verify_sha256_settings(void **state)
{
    size_t len;
    char *body = read_file(FIXTURES "sms_inbound.form", &len);
    const char *url = "https://hooks.example.com/webhooks/twilio/acme";
    char why[128];
    struct hg_twilio_signed s = {
        .url = url, .url_len = strlen(url),
        .signature = "Qc6nSblUWjFZad3p4q6s3gKBZ2oSBI+nD1lsxt3iFAM=", .signature_len = 44,
        .settings = "key=HKb0a7e91f3c2d4e5f60718293a4b5c6d7, algorithm=HMAC_SHA256",
        .body = body, .body_len = len,
    };
    s.settings_len = strlen(s.settings);
    assert_int_equal(hg_twilio_verify(&s, tokens(2, VEC_TOKEN, "sk_shared_secret_1"), why, sizeof(why)), 0);
    /* The same signature without the settings header is checked as SHA-1: no match. */
    struct hg_twilio_signed n = s;
    n.settings = NULL;
    n.settings_len = 0;
    assert_int_equal(hg_twilio_verify(&n, tokens(1, "sk_shared_secret_1"), why, sizeof(why)), HG_ERR_SIGNATURE);
    assert_string_equal(why, "signature does not match");
    /* An algorithm this module cannot compute. */
    struct hg_twilio_signed u = s;
    u.settings = "key=HK1,algorithm=HMAC_SHA512";
    u.settings_len = strlen(u.settings);
    assert_int_equal(hg_twilio_verify(&u, tokens(1, "sk_shared_secret_1"), why, sizeof(why)), HG_ERR_SIGNATURE);
    assert_string_equal(why, "unsupported algorithm in X-Twilio-Webhooks-Signature-Settings");
    /* algorithm=HMAC_SHA1 spelled out, with the auth token's SHA-1 signature: sig('12345', url, pairs). */
    struct hg_twilio_signed one = s;
    one.settings = "algorithm=hmac_sha1";
    one.settings_len = strlen(one.settings);
    one.signature = "7CMOI+zBPoqvIs9uWKfgOcPJYeo=";
    one.signature_len = 28;
    assert_int_equal(hg_twilio_verify(&one, tokens(1, VEC_TOKEN), why, sizeof(why)), 0);
    free(body);
}

/*
 * Through the provider table: the URL from public_url (with or without a trailing '/') or from
 * the proxy headers, the tenant path and the query included.
 *   sig('12345', 'https://hooks.example.com/webhooks/twilio/acme', pairs)            -> 7CMOI+zB...
 *   sig('12345', 'https://hooks.example.com:8443/webhooks/twilio/acme?x=1', pairs)   -> KspLvvTE...
 */
static void test_provider_verify_url(void **state)
{
    size_t len;
    char *body = read_file(FIXTURES "sms_inbound.form", &len);
    struct fake_request f;
    char why[128];

    fake_init(&f, "/webhooks/twilio/acme", "", body);
    fake_header(&f, "Content-Type", "application/x-www-form-urlencoded");
    fake_header(&f, "X-Twilio-Signature", "7CMOI+zBPoqvIs9uWKfgOcPJYeo=");
    fake_header(&f, "Host", "10.0.0.5:8080");
    assert_int_equal(provider_verify(&f, "https://hooks.example.com", tokens(1, VEC_TOKEN), why), 0);
    assert_int_equal(provider_verify(&f, "https://hooks.example.com/", tokens(1, VEC_TOKEN), why), 0);
    /* Without public_url, the Host header is what we have: not the URL Twilio called. */
    assert_int_equal(provider_verify(&f, NULL, tokens(1, VEC_TOKEN), why), HG_ERR_SIGNATURE);
    assert_string_equal(why, "signature does not match");
    /* Behind a proxy that says where the request came in. */
    fake_header(&f, "X-Forwarded-Proto", "https, http");
    fake_header(&f, "X-Forwarded-Host", "hooks.example.com");
    assert_int_equal(provider_verify(&f, NULL, tokens(1, VEC_TOKEN), why), 0);
    assert_int_equal(provider_verify(&f, "", tokens(1, VEC_TOKEN), why), 0);

    /* A non-default port and a query. */
    fake_init(&f, "/webhooks/twilio/acme", "x=1", body);
    fake_header(&f, "X-Twilio-Signature", "KspLvvTE1Vzg4nG997RDiiUI33I=");
    assert_int_equal(provider_verify(&f, "https://hooks.example.com:8443", tokens(1, VEC_TOKEN), why), 0);
    assert_int_equal(provider_verify(&f, "https://hooks.example.com", tokens(1, VEC_TOKEN), why), HG_ERR_SIGNATURE);

    /* No signature header, and no way to tell the URL. */
    fake_init(&f, "/webhooks/twilio", "", body);
    char uwhy[64];
    assert_true(hg_provider_twilio.unsigned_request(&f.r, NULL, uwhy, sizeof(uwhy)));
    assert_string_equal(uwhy, "missing X-Twilio-Signature");
    assert_int_equal(provider_verify(&f, "https://hooks.example.com", tokens(1, VEC_TOKEN), why), HG_ERR_SIGNATURE);
    assert_string_equal(why, "missing X-Twilio-Signature");
    fake_header(&f, "X-Twilio-Signature", "7CMOI+zBPoqvIs9uWKfgOcPJYeo=");
    assert_false(hg_provider_twilio.unsigned_request(&f.r, NULL, uwhy, sizeof(uwhy)));
    assert_int_equal(provider_verify(&f, NULL, tokens(1, VEC_TOKEN), why), HG_ERR_SIGNATURE);
    assert_string_equal(why, "cannot tell the URL Twilio called: no public_url and no Host header");
    free(body);
}

static void test_url(void **state)
{
    struct fake_request f;
    struct hg_buf b;
    hg_buf_init(&b, 64);
    fake_init(&f, "/webhooks/twilio", "a=1&b=%20", "");
    assert_int_equal(hg_twilio_url(&f.r, "https://hooks.example.com/", &b), 0);
    assert_string_equal(hg_buf_cstr(&b), "https://hooks.example.com/webhooks/twilio?a=1&b=%20");
    fake_header(&f, "Host", "gw.internal:8080");
    assert_int_equal(hg_twilio_url(&f.r, NULL, &b), 0);
    assert_string_equal(hg_buf_cstr(&b), "http://gw.internal:8080/webhooks/twilio?a=1&b=%20");
    /* Past the buffer's cap. */
    assert_int_equal(hg_twilio_url(&f.r, "https://a-very-long-host-name.example.com/with/a/long/path/prefix", &b),
                     HG_ERR_TOO_BIG);
    hg_buf_free(&b);
}

/* ---- forms and parsing ---- */

static int decode(const char *body, struct hg_twilio_param **p, char *why, struct hg_arena *a)
{
    return hg_twilio_form_decode(a, body, strlen(body), p, why, 128);
}

static void test_form_decode(void **state)
{
    struct hg_arena a;
    struct hg_twilio_param *p;
    char why[128];
    hg_arena_init(&a, 0);

    assert_int_equal(decode("Body=Hello+World&From=%2B14155550123&To=%2b1&Empty=&Flag&&Last=%E2%9C%93", &p, why, &a), 6);
    assert_string_equal(p[0].key, "Body");
    assert_string_equal(p[0].value, "Hello World");
    assert_string_equal(p[1].value, "+14155550123");
    assert_string_equal(p[2].value, "+1");
    assert_string_equal(p[3].key, "Empty");
    assert_int_equal(p[3].value_len, 0);
    assert_string_equal(p[4].key, "Flag");
    assert_int_equal(p[4].value_len, 0);
    assert_string_equal(p[5].value, "\xE2\x9C\x93");
    /* '=' inside a value, an escaped '&', a NUL byte kept with its length. */
    assert_int_equal(decode("a=b=c&k%26=v%00w", &p, why, &a), 2);
    assert_string_equal(p[0].value, "b=c");
    assert_string_equal(p[1].key, "k&");
    assert_int_equal(p[1].value_len, 3);
    assert_memory_equal(p[1].value, "v\0w", 3);
    /* Empty body, only separators. */
    assert_int_equal(decode("", &p, why, &a), 0);
    assert_int_equal(decode("&&&", &p, why, &a), 0);

    /* Malformed escapes, in keys and values, at the end. */
    assert_int_equal(decode("Body=%zz", &p, why, &a), HG_ERR_PARSE);
    assert_string_equal(why, "bad %-escape at byte 5");
    assert_int_equal(decode("a=1&%g1=2", &p, why, &a), HG_ERR_PARSE);
    assert_string_equal(why, "bad %-escape at byte 4");
    assert_int_equal(decode("a=%2", &p, why, &a), HG_ERR_PARSE);
    assert_int_equal(decode("a=%", &p, why, &a), HG_ERR_PARSE);
    /* Not UTF-8 once decoded: a lone continuation byte, an overlong '/', a surrogate. */
    assert_int_equal(decode("a=%80", &p, why, &a), HG_ERR_PARSE);
    assert_string_equal(why, "invalid UTF-8 in parameter 1");
    assert_int_equal(decode("ok=1&a=%C0%AF", &p, why, &a), HG_ERR_PARSE);
    assert_string_equal(why, "invalid UTF-8 in parameter 2");
    assert_int_equal(decode("a=%ED%A0%80", &p, why, &a), HG_ERR_PARSE);
    assert_int_equal(decode("%FF=1", &p, why, &a), HG_ERR_PARSE);
    /* 4-byte sequences are fine. */
    assert_int_equal(decode("a=%F0%9F%98%80", &p, why, &a), 1);

    /* At most HG_TWILIO_MAX_PARAMS params. */
    struct hg_buf b;
    hg_buf_init(&b, 1 << 20);
    for (int i = 0; i < HG_TWILIO_MAX_PARAMS; i++)
        hg_buf_appendf(&b, "k%d=v&", i);
    assert_int_equal(hg_twilio_form_decode(&a, b.data, b.len, &p, why, sizeof(why)), HG_TWILIO_MAX_PARAMS);
    hg_buf_append(&b, "one=more", 8);
    assert_int_equal(hg_twilio_form_decode(&a, b.data, b.len, &p, why, sizeof(why)), HG_ERR_PARSE);
    assert_string_equal(why, "more than 1024 parameters");
    hg_buf_free(&b);
    hg_arena_destroy(&a);
}

static void test_form_object(void **state)
{
    struct hg_arena a;
    struct hg_twilio_param *p;
    char why[128];
    hg_arena_init(&a, 0);
    int n = decode("MediaUrl=a&Body=x&MediaUrl=b&Flag&MediaUrl=c", &p, why, &a);
    assert_int_equal(n, 5);
    struct hg_json *o = hg_twilio_form_object(&a, p, (size_t)n);
    char *text = hg_json_dumps(o, NULL);
    assert_string_equal(text, "{\"MediaUrl\":[\"a\",\"b\",\"c\"],\"Body\":\"x\",\"Flag\":\"\"}");
    free(text);
    hg_arena_destroy(&a);
}

static void test_parse(void **state)
{
    char reason[256];
    struct hg_json_doc *d;
    char *text;

    d = hg_twilio_parse("From=%2B1&Body=Hi+there&From=%2B2", 33, NULL, 0, reason, sizeof(reason));
    assert_non_null(d);
    text = hg_json_dumps(d->root, NULL);
    assert_string_equal(text, "{\"From\":[\"+1\",\"+2\"],\"Body\":\"Hi there\"}");
    free(text);
    hg_json_doc_free(d);

    const char *json = "{\"MessageSid\":\"SM1\",\"ErrorCode\":30007}";
    d = hg_twilio_parse(json, strlen(json), "Application/JSON ; charset=utf-8", 32, reason, sizeof(reason));
    assert_non_null(d);
    text = hg_json_dumps(d->root, NULL);
    assert_string_equal(text, json);
    free(text);
    hg_json_doc_free(d);
    /* application/<x>+json is JSON too. */
    d = hg_twilio_parse("{}", 2, "application/cloudevents+json", 28, reason, sizeof(reason));
    assert_non_null(d);
    hg_json_doc_free(d);

    assert_null(hg_twilio_parse("Body=%zz", 8, "application/x-www-form-urlencoded", 33, reason, sizeof(reason)));
    assert_string_equal(reason, "body is not a valid form: bad %-escape at byte 5");
    assert_null(hg_twilio_parse("{\"a\":", 5, "application/json", 16, reason, sizeof(reason)));
    assert_memory_equal(reason, "body is not valid JSON: ", 24);
    assert_null(hg_twilio_parse("[1,2]", 5, "application/json", 16, reason, sizeof(reason)));
    assert_string_equal(reason, "body is not valid JSON: the top level is not an object");
    /* A JSON body sent as a form is a form (Twilio's default), whatever it looks like. */
    d = hg_twilio_parse("{\"a\":1}", 7, "text/plain", 10, reason, sizeof(reason));
    assert_non_null(d);
    hg_json_doc_free(d);

    /* The provider table reads the Content-Type from the spooled header lines. */
    static const char lines[] = "X-Twilio-Signature: abc=\nContent-Type: application/json\n";
    struct hg_provider_body b = {.body = "[]", .body_len = 2, .headers = lines, .headers_len = sizeof(lines) - 1};
    assert_null(hg_provider_twilio.parse(&b, reason, sizeof(reason)));
    assert_string_equal(reason, "body is not valid JSON: the top level is not an object");
    b.headers = "Content-Type: application/x-www-form-urlencoded\n";
    b.headers_len = strlen(b.headers);
    d = hg_provider_twilio.parse(&b, reason, sizeof(reason));
    assert_non_null(d);
    assert_int_equal(hg_provider_twilio.count_events(d->root), 1);
    hg_json_doc_free(d);
    assert_int_equal(hg_twilio_count_events(NULL), 0);
}

static int collect_id(void *arg, const char *id)
{
    char *buf = arg;
    size_t n = strlen(buf);
    snprintf(buf + n, 128 - n, "%s;", id);
    return strcmp(id, "MGstop") == 0 ? 7 : 0;
}

static void test_table(void **state)
{
    const struct hg_provider *p = &hg_provider_twilio;
    assert_int_equal(p->id, HG_PROVIDER_TWILIO);
    assert_string_equal(p->name, "twilio");
    assert_string_equal(p->route, "/webhooks/twilio");
    assert_non_null(p->creds);
    assert_null(p->handshake);
    static const char *const headers[] = {"X-Twilio-Signature", "Content-Type", "User-Agent",
                                          "I-Twilio-Idempotency-Token", "X-Twilio-Webhooks-Signature-Settings", NULL};
    for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++) {
        if (headers[i] == NULL)
            assert_null(p->spool_headers[i]);
        else
            assert_string_equal(p->spool_headers[i], headers[i]);
    }
    assert_string_equal(p->topology->exchange, "twilio.inbound");
    assert_string_equal(p->topology->dlx, "twilio.inbound.dlx");
    assert_int_equal(p->topology->n_queues, 4);
    static const char *const want[][3] = {
        {"INBOUND_TWILIO_MESSAGES", "message.#", NULL},
        {"TWILIO_STATUS_UPDATES", "status.#", NULL},
        {"TWILIO_CALL_EVENTS", "call.#", NULL},
        {"TWILIO_SYSTEM_EVENTS", "system.#", "error.#"},
    };
    for (size_t i = 0; i < 4; i++) {
        assert_string_equal(p->topology->queues[i].name, want[i][0]);
        size_t k = 0;
        for (; k < 2 && want[i][k + 1] != NULL; k++)
            assert_string_equal(p->topology->queues[i].bindings[k], want[i][k + 1]);
        assert_null(p->topology->queues[i].bindings[k]);
    }

    char out[128];
    const char *ct = NULL;
    size_t n = p->accepted(out, sizeof(out), "req-1", 1, &ct);
    assert_string_equal(ct, "text/xml");
    assert_string_equal(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>");
    assert_int_equal(n, strlen(out));
    n = p->accepted(out, 10, "req-1", 1, &ct);
    assert_int_equal(n, 9);
    assert_int_equal(strlen(out), 9);

    /* Tenant ids: AccountSid, then MessagingServiceSid; non-strings and empties skipped. */
    struct hg_json_doc *d = hg_twilio_parse("MessagingServiceSid=MG1&AccountSid=AC1&x=1", 42, NULL, 0, out, sizeof(out));
    char ids[128] = "";
    assert_int_equal(p->tenant_ids(d->root, collect_id, ids), 0);
    assert_string_equal(ids, "AC1;MG1;");
    hg_json_doc_free(d);
    d = hg_twilio_parse("{\"AccountSid\":5,\"MessagingServiceSid\":\"MGstop\"}", 47, "application/json", 16, out,
                        sizeof(out));
    ids[0] = '\0';
    assert_int_equal(p->tenant_ids(d->root, collect_id, ids), 7);
    assert_string_equal(ids, "MGstop;");
    hg_json_doc_free(d);
}

static void test_rfc2822(void **state)
{
    int64_t t;
#define OK(s, want)                                                                                                    \
    do {                                                                                                               \
        assert_int_equal(hg_twilio_rfc2822(s, strlen(s), &t), 0);                                                      \
        assert_int_equal(t, want);                                                                                     \
    } while (0)
#define BAD(s) assert_int_equal(hg_twilio_rfc2822(s, strlen(s), &t), HG_ERR_PARSE)
    OK("Tue, 14 Jan 2025 17:01:51 +0000", 1736874111);
    OK("14 Jan 2025 17:01:51 +0000", 1736874111);
    OK("Tue, 14 Jan 2025 12:01:51 -0500", 1736874111);
    OK("Tue, 14 Jan 2025 12:01:51 EST", 1736874111);
    OK("tue,14 jan 2025 17:01 GMT", 1736874060);
    OK("Thu, 29 Feb 2024 00:00:00 UT", 1709164800);
    OK("  Wed, 1 Jan 1970 00:00:01 +0000  ", 1);
    OK("Fri, 31 Dec 99 23:59:59 +0000", 946684799); /* obsolete 2-digit year */
    BAD("");
    BAD("2025-01-14T17:01:51Z");
    BAD("Tue, 14 Jan 2025 17:01:51");       /* no zone */
    BAD("Tue, 14 Foo 2025 17:01:51 +0000");
    BAD("Tue, 29 Feb 2025 17:01:51 +0000"); /* not a leap year */
    BAD("Tue, 14 Jan 2025 24:01:51 +0000");
    BAD("Tue, 14 Jan 2025 17:61:51 +0000");
    BAD("Tue, 14 Jan 2025 17:01:51 +0060");
    BAD("Tue, 14 Jan 2025 17:01:51 +0000 extra");
    BAD("Xyz, 14 Jan 2025 17:01:51 +0000");
    BAD("Thu, 01 Jan 1970 00:00:00 +0000"); /* not after the epoch: no provider time */
#undef OK
#undef BAD
}

/* ---- normalization ---- */

struct captured {
    int n;
    json_t *docs[MAX_EVENTS];
    char *event_id[MAX_EVENTS];
    char *routing_key[MAX_EVENTS];
    uint64_t ts[MAX_EVENTS];
    int ret; /* what emit returns */
};

static int capture(void *arg, const struct hg_event *ev, struct hg_json *hdoc)
{
    struct captured *c = arg;
    json_t *doc = hg_json_to_jansson(hdoc);
    assert_non_null(doc);
    assert_true(c->n < MAX_EVENTS);
    assert_string_equal(ev->provider, "twilio");
    assert_string_equal(ev->tenant, "acme");
    assert_string_equal(ev->correlation_id, "req-0001");
    assert_string_equal(ev->priority_class, "medium");
    assert_int_equal(ev->priority, 0);
    assert_null(ev->json);
    assert_string_equal(ev->event_id, json_string_value(json_object_get(doc, "event_id")));
    assert_string_equal(ev->kind, json_string_value(json_object_get(doc, "kind")));
    assert_string_equal(ev->type, json_string_value(json_object_get(doc, "type")));
    assert_true(strlen(ev->event_id) >= 1 && strlen(ev->event_id) <= 255);
    /* What the sink gets is the writer's text: it must read back as the same document. */
    size_t len = 0;
    char *text = hg_json_dumps(hdoc, &len);
    assert_non_null(text);
    json_error_t jerr;
    json_t *back = json_loadb(text, len, JSON_ALLOW_NUL, &jerr);
    if (back == NULL)
        fail_msg("written document does not parse: %s: %s", jerr.text, text);
    assert_true(json_equal(back, doc));
    json_decref(back);
    free(text);
    c->docs[c->n] = doc;
    c->event_id[c->n] = strdup(ev->event_id);
    c->routing_key[c->n] = strdup(ev->routing_key);
    c->ts[c->n] = ev->timestamp_s;
    c->n++;
    return c->ret;
}

static void captured_free(struct captured *c)
{
    for (int i = 0; i < c->n; i++) {
        json_decref(c->docs[i]);
        free(c->event_id[i]);
        free(c->routing_key[i]);
    }
    memset(c, 0, sizeof(*c));
}

static const struct hg_event_meta META = {
    .tenant = "acme",
    .request_id = "req-0001",
    .received_at_ns = 1736874125123000000ull, /* 2025-01-14T17:02:05.123Z */
};
#define RECEIVED_AT "2025-01-14T17:02:05.123Z"
#define RECEIVED_S  1736874125ull

/* Parse a body with its content type and normalize it into c; returns the params (jansson). */
static json_t *normalize_body(const char *body, size_t len, const char *ct, struct captured *c, int want)
{
    char reason[256];
    struct hg_json_doc *doc = hg_twilio_parse(body, len, ct, ct ? strlen(ct) : 0, reason, sizeof(reason));
    if (doc == NULL)
        fail_msg("%s", reason);
    int rc = hg_twilio_normalize(&doc->arena, doc->root, &META, capture, c);
    assert_int_equal(rc, want);
    json_t *root = hg_json_to_jansson(doc->root);
    hg_json_doc_free(doc);
    return root;
}

static json_t *normalize_form(const char *body, struct captured *c)
{
    return normalize_body(body, strlen(body), NULL, c, 1);
}

/* Fixture `file` (name.form or name.json): its content type comes from the extension. */
static json_t *load(const char *file, struct captured *c)
{
    char path[512];
    size_t len;
    snprintf(path, sizeof(path), FIXTURES "%s", file);
    char *body = read_file(path, &len);
    size_t fl = strlen(file);
    const char *ct = fl > 5 && strcmp(file + fl - 5, ".json") == 0 ? "application/json"
                                                                   : "application/x-www-form-urlencoded";
    json_t *root = normalize_body(body, len, ct, c, 1);
    free(body);
    return root;
}

static const char *const ENVELOPE_KEYS[] = {"schema_version", "event_id", "correlation_id", "provider", "tenant",
                                            "kind", "type", "occurred_at", "received_at", "customer",
                                            "business", "content", "context", "errors", "media", "raw"};

static void expect_envelope(json_t *doc)
{
    assert_int_equal(json_object_size(doc), sizeof(ENVELOPE_KEYS) / sizeof(ENVELOPE_KEYS[0]));
    size_t i = 0;
    const char *key;
    json_t *v;
    json_object_foreach(doc, key, v) {
        assert_string_equal(key, ENVELOPE_KEYS[i]);
        i++;
    }
    expect_str(doc, "schema_version", "1");
    expect_str(doc, "provider", "twilio");
    expect_str(doc, "tenant", "acme");
    expect_str(doc, "correlation_id", "req-0001");
    expect_str(doc, "received_at", RECEIVED_AT);
    expect_null(doc, "context");
    expect_null(doc, "media");
    assert_true(json_is_object(at(doc, "business")));
    assert_true(json_is_object(at(doc, "content")));
}

/* What every fixture must normalize to (the rest is in its expected file). */
struct fixture {
    const char *file;
    const char *routing_key;
    const char *event_id;
    const char *occurred_at;   /* NULL: received_at */
};

#define AC  "AC8f3e2b1c0d9a7f6e5d4c3b2a1f0e9d8c"
#define OUT "SM3c4d5e6f708192a3b4c5d6e7f8091a2b"
#define CA  "CA5d6e7f8091a2b3c4d5e6f708192a3b4c"

static const struct fixture FIXTURE_TABLE[] = {
    {"sms_inbound.form", "message.text", "SM1f0e2d3c4b5a69788796a5b4c3d2e1f0", NULL},
    {"mms_two_media.form", "message.media", "MM7a6b5c4d3e2f10a9b8c7d6e5f4a3b2c1", NULL},
    {"whatsapp_inbound.form", "message.text", "SMa1b2c3d4e5f60718293a4b5c6d7e8f90", NULL},
    {"whatsapp_location.form", "message.text", "SMb2c3d4e5f60718293a4b5c6d7e8f90a1", NULL},
    {"status_accepted.form", "status.accepted", OUT ":accepted", NULL},
    {"status_scheduled.form", "status.scheduled", OUT ":scheduled", NULL},
    {"status_queued.form", "status.queued", OUT ":queued", NULL},
    {"status_sending.form", "status.sending", OUT ":sending", NULL},
    {"status_sent.form", "status.sent", OUT ":sent", NULL},
    {"status_delivered.form", "status.delivered", OUT ":delivered", NULL},
    {"status_undelivered.form", "status.undelivered", OUT ":undelivered", NULL},
    {"status_failed.form", "status.failed", OUT ":failed", NULL},
    {"status_canceled.form", "status.canceled", OUT ":canceled", NULL},
    {"status_read_whatsapp.form", "status.read", "SMc3d4e5f60718293a4b5c6d7e8f90a1b2:read", NULL},
    {"status_failed_json.json", "status.failed", "SM4d5e6f708192a3b4c5d6e7f8091a2b3c:failed", NULL},
    {"call_inbound.form", "call.ringing", "CA6e7f8091a2b3c4d5e6f708192a3b4c5d:ringing", NULL},
    {"call_ringing.form", "call.ringing", CA ":ringing:1", "2025-01-14T17:01:02Z"},
    {"call_in_progress.form", "call.in_progress", CA ":in_progress:2", "2025-01-14T17:01:09Z"},
    {"call_completed.form", "call.completed", CA ":completed:3", "2025-01-14T17:01:51Z"},
    {"recording_completed.form", "call.recording_completed", "RE7f8091a2b3c4d5e6f708192a3b4c5d6e:completed", NULL},
    {"unknown_debugger_alert.form", "system.unknown", NULL, NULL},
};

static const struct fixture *fixture_find(const char *file)
{
    for (size_t i = 0; i < sizeof(FIXTURE_TABLE) / sizeof(FIXTURE_TABLE[0]); i++)
        if (strcmp(FIXTURE_TABLE[i].file, file) == 0)
            return &FIXTURE_TABLE[i];
    return NULL;
}

static void check_fixture(const struct fixture *fx, struct captured *c, json_t *root)
{
    json_t *d = c->docs[0];
    assert_int_equal(c->n, 1);
    expect_envelope(d);
    /* raw is the params object exactly as parsed. */
    assert_true(json_equal(at(d, "raw"), root));
    assert_string_equal(c->routing_key[0], fx->routing_key);
    char kind[32];
    snprintf(kind, sizeof(kind), "%.*s", (int)(strchr(fx->routing_key, '.') - fx->routing_key), fx->routing_key);
    expect_str(d, "kind", kind);
    if (fx->event_id != NULL)
        assert_string_equal(c->event_id[0], fx->event_id);
    else
        assert_true(strncmp(c->event_id[0], "twilio:", 7) == 0 && strlen(c->event_id[0]) == 7 + 32);
    expect_str(d, "occurred_at", fx->occurred_at ? fx->occurred_at : RECEIVED_AT);
    if (fx->occurred_at == NULL)
        assert_int_equal(c->ts[0], RECEIVED_S);
    expect_str(d, "business.account_sid", AC);
}

/* Every fixture in the directory is in FIXTURE_TABLE, normalizes stably, and equals its expected file. */
static void test_fixtures(void **state)
{
    int write = getenv("HG_WRITE_EXPECTED") != NULL;
    DIR *dir = opendir(FIXTURES);
    struct dirent *de;
    size_t seen = 0;
    assert_non_null(dir);
    while ((de = readdir(dir)) != NULL) {
        size_t fl = strlen(de->d_name);
        bool form = fl > 5 && strcmp(de->d_name + fl - 5, ".form") == 0;
        bool json = fl > 5 && strcmp(de->d_name + fl - 5, ".json") == 0;
        if (!form && !json)
            continue;
        const struct fixture *fx = fixture_find(de->d_name);
        if (fx == NULL)
            fail_msg("fixture %s is not in FIXTURE_TABLE", de->d_name);
        seen++;
        struct captured c = {0}, again = {0};
        json_t *root = load(de->d_name, &c);
        check_fixture(fx, &c, root);
        /* Normalizing the same body again gives the same id (redeliveries dedup). */
        json_t *root2 = load(de->d_name, &again);
        assert_string_equal(c.event_id[0], again.event_id[0]);
        assert_true(json_equal(c.docs[0], again.docs[0]));

        char path[512];
        snprintf(path, sizeof(path), FIXTURES "expected/%.*s.json", (int)(fl - 5), de->d_name);
        if (write) {
            assert_int_equal(json_dump_file(c.docs[0], path, JSON_INDENT(2)), 0);
        } else {
            json_error_t err;
            json_t *want = json_load_file(path, JSON_ALLOW_NUL, &err);
            if (want == NULL)
                fail_msg("%s: %s", path, err.text);
            if (!json_equal(c.docs[0], want))
                fail_msg("%s differs from the normalized %s fixture", path, de->d_name);
            json_decref(want);
        }
        json_decref(root);
        json_decref(root2);
        captured_free(&c);
        captured_free(&again);
    }
    closedir(dir);
    assert_int_equal(seen, sizeof(FIXTURE_TABLE) / sizeof(FIXTURE_TABLE[0]));
}

static void test_messages(void **state)
{
    struct captured c = {0};
    json_t *root = load("sms_inbound.form", &c);
    json_t *d = c.docs[0];
    expect_str(d, "type", "text");
    expect_str(d, "content.body", "Hi, my order #4417 has not arrived. Can you check?");
    expect_str(d, "content.channel", "sms");
    expect_int(d, "content.num_media", 0);
    expect_int(d, "content.num_segments", 1);
    assert_int_equal(json_array_size(at(d, "content.media")), 0);
    expect_str(d, "customer.address", "+14155550123");
    expect_str(d, "customer.phone", "+14155550123");
    expect_str(d, "customer.country_calling_code", "1");
    expect_str(d, "customer.region", "US");
    expect_absent(d, "customer.profile_name");
    expect_str(d, "business.messaging_service_sid", "MG2c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f");
    expect_str(d, "business.to", "+14155550100");
    /* Geography stays in raw only. */
    expect_absent(d, "customer.city");
    expect_str(d, "raw.FromCity", "SAN FRANCISCO");
    expect_null(d, "errors");
    json_decref(root);
    captured_free(&c);

    root = load("mms_two_media.form", &c);
    d = c.docs[0];
    expect_str(d, "type", "media");
    expect_str(d, "content.channel", "mms");
    expect_int(d, "content.num_media", 2);
    assert_int_equal(json_array_size(at(d, "content.media")), 2);
    expect_str(d, "content.media.0.content_type", "image/jpeg");
    expect_str(d, "content.media.1.content_type", "image/png");
    expect_str(d, "content.media.1.url",
               "https://api.twilio.com/2010-04-01/Accounts/" AC
               "/Messages/MM7a6b5c4d3e2f10a9b8c7d6e5f4a3b2c1/Media/ME9f8e7d6c5b4a39281706f5e4d3c2b1a0");
    expect_str(d, "content.body", "Photos of the water damage under the sink");
    json_decref(root);
    captured_free(&c);

    root = load("whatsapp_inbound.form", &c);
    d = c.docs[0];
    expect_str(d, "content.channel", "whatsapp");
    expect_str(d, "content.message_type", "text");
    expect_str(d, "customer.address", "whatsapp:+5511987654321");
    expect_str(d, "customer.phone", "+5511987654321");
    expect_str(d, "customer.country_calling_code", "55");
    expect_str(d, "customer.region", "BR");
    expect_str(d, "customer.profile_name", "Maria Souza");
    expect_str(d, "customer.wa_id", "5511987654321");
    expect_str(d, "business.to", "+14155238886");
    json_decref(root);
    captured_free(&c);

    root = load("whatsapp_location.form", &c);
    d = c.docs[0];
    expect_str(d, "content.body", "");
    expect_str(d, "content.message_type", "location");
    assert_true(json_is_real(at(d, "content.latitude")));
    assert_true(json_number_value(at(d, "content.latitude")) == -23.561414);
    expect_str(d, "content.label", "MASP");
    json_decref(root);
    captured_free(&c);

    /* A message with neither Body nor NumMedia is not one we can read: system. */
    root = normalize_form("MessageSid=SM1&AccountSid=AC1&From=%2B14155550123", &c);
    assert_string_equal(c.routing_key[0], "system.unknown");
    json_decref(root);
    captured_free(&c);
    /* SmsSid alone names the message; NumMedia that is not a number counts as no media. */
    root = normalize_form("SmsSid=SM2&Body=x&NumMedia=two&From=sip%3Aalice%40example.com", &c);
    assert_string_equal(c.event_id[0], "SM2");
    expect_str(c.docs[0], "type", "text");
    expect_absent(c.docs[0], "content.num_media");
    expect_str(c.docs[0], "content.channel", "sip");
    expect_str(c.docs[0], "customer.address", "sip:alice@example.com");
    expect_absent(c.docs[0], "customer.phone");
    json_decref(root);
    captured_free(&c);
}

static void test_statuses(void **state)
{
    struct captured c = {0};
    json_t *root = load("status_undelivered.form", &c);
    json_t *d = c.docs[0];
    expect_str(d, "type", "undelivered");
    expect_str(d, "content.message_sid", OUT);
    expect_str(d, "content.status", "undelivered");
    expect_str(d, "content.channel", "sms");
    expect_str(d, "customer.phone", "+14155550123");
    expect_str(d, "business.from", "+14155550100");
    assert_int_equal(json_array_size(at(d, "errors")), 1);
    expect_int(d, "errors.0.code", 30003);
    expect_absent(d, "errors.0.message");
    json_decref(root);
    captured_free(&c);

    root = load("status_failed.form", &c);
    expect_int(c.docs[0], "errors.0.code", 30008);
    expect_str(c.docs[0], "errors.0.message", "Unknown error");
    json_decref(root);
    captured_free(&c);

    root = load("status_read_whatsapp.form", &c);
    d = c.docs[0];
    expect_str(d, "content.channel", "whatsapp");
    expect_str(d, "customer.region", "BR");
    expect_absent(d, "business.messaging_service_sid");
    json_decref(root);
    captured_free(&c);

    /* JSON bodies: a numeric ErrorCode is read too. */
    root = load("status_failed_json.json", &c);
    expect_int(c.docs[0], "errors.0.code", 30007);
    expect_str(c.docs[0], "customer.region", "GB");
    json_decref(root);
    captured_free(&c);

    /* Status words are lowercased; hostile ones cannot add routing key words. */
    root = normalize_form("MessageSid=SM9&MessageStatus=Delivered", &c);
    assert_string_equal(c.event_id[0], "SM9:delivered");
    expect_str(c.docs[0], "content.status", "Delivered");
    json_decref(root);
    captured_free(&c);
    root = normalize_form("MessageSid=SM9&MessageStatus=weird.%23*", &c);
    assert_string_equal(c.routing_key[0], "status.weird___");
    expect_str(c.docs[0], "type", "weird.#*");
    expect_null(c.docs[0], "customer");
    json_decref(root);
    captured_free(&c);
    /* The first messaging API sends SmsStatus only. */
    root = normalize_form("SmsSid=SM8&SmsStatus=sent&AccountSid=AC1", &c);
    assert_string_equal(c.routing_key[0], "status.sent");
    assert_string_equal(c.event_id[0], "SM8:sent");
    json_decref(root);
    captured_free(&c);
    /* A status without a message sid gets a derived id. */
    root = normalize_form("MessageStatus=sent&AccountSid=AC1", &c);
    assert_true(strncmp(c.event_id[0], "twilio:", 7) == 0);
    json_decref(root);
    captured_free(&c);
}

static void test_calls(void **state)
{
    struct captured c = {0};
    json_t *root = load("call_completed.form", &c);
    json_t *d = c.docs[0];
    expect_str(d, "type", "completed");
    expect_str(d, "content.call_sid", CA);
    expect_str(d, "content.direction", "outbound-api");
    expect_str(d, "content.call_status", "completed");
    expect_int(d, "content.duration", 42);
    expect_int(d, "content.sequence_number", 3);
    expect_int(d, "content.sip_response_code", 200);
    expect_str(d, "content.from", "+14155550100");
    expect_str(d, "content.to", "+14155550123");
    /* Outbound: the customer is the called party. */
    expect_str(d, "customer.phone", "+14155550123");
    expect_str(d, "business.from", "+14155550100");
    assert_int_equal(c.ts[0], 1736874111);
    json_decref(root);
    captured_free(&c);

    root = load("call_in_progress.form", &c);
    expect_str(c.docs[0], "type", "in_progress");
    expect_str(c.docs[0], "content.call_status", "in-progress");
    expect_absent(c.docs[0], "content.duration");
    json_decref(root);
    captured_free(&c);

    root = load("call_inbound.form", &c);
    d = c.docs[0];
    expect_str(d, "customer.phone", "+447700900123");
    expect_str(d, "customer.region", "GB");
    expect_str(d, "business.to", "+14155550100");
    expect_absent(d, "content.sequence_number");
    json_decref(root);
    captured_free(&c);

    root = load("recording_completed.form", &c);
    d = c.docs[0];
    expect_str(d, "kind", "call");
    expect_str(d, "type", "recording_completed");
    expect_str(d, "content.recording_sid", "RE7f8091a2b3c4d5e6f708192a3b4c5d6e");
    expect_int(d, "content.duration", 41);
    expect_int(d, "content.channels", 1);
    expect_str(d, "content.started_at", "2025-01-14T17:01:10Z");
    expect_str(d, "content.call_sid", CA);
    /* ErrorCode=0 is no error. */
    expect_null(d, "errors");
    expect_null(d, "customer");
    json_decref(root);
    captured_free(&c);

    /* no-answer → no_answer; a sequence number that is not a number stays out of the id. */
    root = normalize_form("CallSid=CA1&CallStatus=no-answer&SequenceNumber=x1&Direction=outbound-dial", &c);
    assert_string_equal(c.routing_key[0], "call.no_answer");
    assert_string_equal(c.event_id[0], "CA1:no_answer");
    json_decref(root);
    captured_free(&c);
    root = normalize_form("RecordingSid=RE1&RecordingStatus=in-progress&CallSid=CA1&CallStatus=in-progress", &c);
    assert_string_equal(c.routing_key[0], "call.recording_in_progress");
    assert_string_equal(c.event_id[0], "RE1:in_progress");
    json_decref(root);
    captured_free(&c);
}

/* Unknown shapes: system/unknown, raw kept, a stable id independent of the params' order. */
static void test_unknown_and_ids(void **state)
{
    struct captured a = {0}, b = {0}, c = {0};
    json_t *ra = normalize_form("Foo=1&Bar=2&AccountSid=AC1", &a);
    json_t *rb = normalize_form("AccountSid=AC1&Bar=2&Foo=1", &b);
    json_t *rc = normalize_form("AccountSid=AC1&Bar=2&Foo=3", &c);
    assert_string_equal(a.routing_key[0], "system.unknown");
    assert_string_equal(a.event_id[0], b.event_id[0]);
    assert_string_not_equal(a.event_id[0], c.event_id[0]);
    expect_str(a.docs[0], "business.account_sid", "AC1");
    assert_int_equal(json_object_size(at(a.docs[0], "content")), 0);
    assert_true(json_equal(at(a.docs[0], "raw"), ra));
    json_decref(ra);
    json_decref(rb);
    json_decref(rc);
    captured_free(&a);
    captured_free(&b);
    captured_free(&c);

    /* An empty form and an empty JSON object are events too. */
    json_t *r = normalize_body("", 0, NULL, &a, 1);
    assert_string_equal(a.routing_key[0], "system.unknown");
    expect_null(a.docs[0], "customer");
    json_decref(r);
    captured_free(&a);

    /* Ids longer than 255 bytes, or with a NUL, are derived instead. */
    char body[1024], sid[300];
    memset(sid, 'S', 250);
    sid[250] = '\0';
    snprintf(body, sizeof(body), "MessageSid=%s&MessageStatus=sent", sid); /* 250 + ":sent" = 255 */
    r = normalize_form(body, &a);
    assert_int_equal(strlen(a.event_id[0]), 255);
    json_decref(r);
    captured_free(&a);
    snprintf(body, sizeof(body), "MessageSid=%s&MessageStatus=delivered", sid);
    r = normalize_form(body, &a);
    assert_true(strncmp(a.event_id[0], "twilio:", 7) == 0);
    expect_str(a.docs[0], "content.message_sid", sid);
    json_decref(r);
    captured_free(&a);
    r = normalize_form("MessageSid=SM%00X&Body=hi", &a);
    assert_true(strncmp(a.event_id[0], "twilio:", 7) == 0);
    json_decref(r);
    captured_free(&a);

    /* A repeated key counts by its first value; raw keeps them all. */
    r = normalize_form("MessageSid=SM1&MessageSid=SM2&Body=a&Body=b", &a);
    assert_string_equal(a.event_id[0], "SM1");
    expect_str(a.docs[0], "content.body", "a");
    assert_int_equal(json_array_size(at(a.docs[0], "raw.Body")), 2);
    json_decref(r);
    captured_free(&a);

    /* A JSON body with nested values of every type never fails. */
    const char *json = "{\"Timestamp\":5,\"From\":[],\"NumMedia\":{\"a\":[1,{\"b\":null}]},\"MessageSid\":true,"
                       "\"Body\":null,\"CallSid\":\"CA1\",\"CallStatus\":17}";
    r = normalize_body(json, strlen(json), "application/json", &a, 1);
    assert_string_equal(a.routing_key[0], "call.17");
    assert_string_equal(a.event_id[0], "CA1:17");
    expect_str(a.docs[0], "occurred_at", RECEIVED_AT);
    json_decref(r);
    captured_free(&a);
}

/* The emit's non-zero value is returned; an arena that refuses memory gives HG_ERR_NOMEM. */
static void test_emit_and_oom(void **state)
{
    struct captured c = {.ret = -7};
    json_t *r = normalize_body("MessageSid=SM1&Body=x", 21, NULL, &c, -7);
    assert_int_equal(c.n, 1);
    json_decref(r);
    captured_free(&c);

    size_t len;
    char *body = read_file(FIXTURES "mms_two_media.form", &len);
    char reason[128];
    struct hg_json_doc *d = hg_twilio_parse(body, len, NULL, 0, reason, sizeof(reason));
    assert_non_null(d);
    /* Arenas from tiny to ample: every outcome is clean (NOMEM or one event). */
    for (size_t cap = 0; cap < 64 * 1024; cap += 512) {
        struct hg_arena a;
        hg_arena_init(&a, cap ? cap : 1);
        struct captured k = {0};
        int rc = hg_twilio_normalize(&a, d->root, &META, capture, &k);
        assert_true(rc == HG_ERR_NOMEM || (rc == 1 && k.n == 1));
        captured_free(&k);
        hg_arena_destroy(&a);
    }
    hg_json_doc_free(d);
    free(body);
    assert_int_equal(hg_twilio_normalize(NULL, NULL, &META, capture, &c), 0);
}

static int count_only(void *arg, const struct hg_event *ev, struct hg_json *doc)
{
    (*(int *)arg)++;
    return 0;
}

/*
 * Hostile bytes: fixtures with bytes changed, inserted and cut (a fixed pseudo-random sequence)
 * are parsed, verified and normalized. Whatever parses normalizes to exactly one event; nothing
 * crashes or leaks (run under ASan).
 */
static void test_mutations(void **state)
{
    static const char *const files[] = {"mms_two_media.form", "call_completed.form", "status_failed_json.json"};
    static const char alphabet[] = "%&=+0aZ\"{}[]:,\x80\xff\xc3\xa9\x00";
    uint32_t rnd = 12345;
    for (size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
        char path[256];
        size_t len;
        snprintf(path, sizeof(path), FIXTURES "%s", files[f]);
        char *orig = read_file(path, &len);
        const char *ct = strstr(files[f], ".json") ? "application/json" : NULL;
        char *buf = malloc(len + 16);
        for (int iter = 0; iter < 3000; iter++) {
            memcpy(buf, orig, len);
            size_t n = len;
            int edits = 1 + (int)((rnd = rnd * 1103515245u + 12345u) >> 16) % 4;
            for (int e = 0; e < edits && n > 0; e++) {
                rnd = rnd * 1103515245u + 12345u;
                size_t at = (rnd >> 8) % n;
                char c = alphabet[(rnd >> 20) % (sizeof(alphabet) - 1)];
                switch ((rnd >> 4) % 3) {
                case 0:
                    buf[at] = c;
                    break;
                case 1:
                    if (n < len + 15) {
                        memmove(buf + at + 1, buf + at, n - at);
                        buf[at] = c;
                        n++;
                    }
                    break;
                default:
                    n = at;
                    break;
                }
            }
            char reason[256], why[128];
            struct hg_json_doc *d = hg_twilio_parse(buf, n, ct, ct ? strlen(ct) : 0, reason, sizeof(reason));
            struct hg_twilio_signed s = {.url = "https://hooks.example.com/webhooks/twilio?bodySHA256=00",
                                         .signature = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=", .signature_len = 28,
                                         .content_type = ct, .content_type_len = ct ? strlen(ct) : 0,
                                         .body = buf, .body_len = n};
            s.url_len = strlen(s.url);
            assert_int_equal(hg_twilio_verify(&s, tokens(1, VEC_TOKEN), why, sizeof(why)), HG_ERR_SIGNATURE);
            if (d == NULL) {
                assert_true(strncmp(reason, "body is not", 11) == 0);
                continue;
            }
            int events = 0;
            assert_int_equal(hg_twilio_normalize(&d->arena, d->root, &META, count_only, &events), 1);
            assert_int_equal(events, 1);
            hg_json_doc_free(d);
        }
        free(buf);
        free(orig);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signature_published_vector),
        cmocka_unit_test(test_verify_published_vector),
        cmocka_unit_test(test_verify_failures),
        cmocka_unit_test(test_verify_json_body),
        cmocka_unit_test(test_verify_repeated_keys),
        cmocka_unit_test(test_verify_sha256_settings),
        cmocka_unit_test(test_provider_verify_url),
        cmocka_unit_test(test_url),
        cmocka_unit_test(test_form_decode),
        cmocka_unit_test(test_form_object),
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_rfc2822),
        cmocka_unit_test(test_fixtures),
        cmocka_unit_test(test_messages),
        cmocka_unit_test(test_statuses),
        cmocka_unit_test(test_calls),
        cmocka_unit_test(test_unknown_and_ids),
        cmocka_unit_test(test_emit_and_oom),
        cmocka_unit_test(test_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

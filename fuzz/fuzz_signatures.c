/*
 * libFuzzer harness: every provider's verify on untrusted headers and bodies. The input is
 * "<signature header value>\n<api key header value>\n<body>"; each provider's verify runs on it
 * with fixed credentials, through a request as the HTTP layer hands it over (path, query, Host,
 * Content-Type). A forged signature must never pass.
 *
 * Then the generic provider once per scheme, each with its own headers, so every scheme's
 * signature-header parser sees the input: standard-webhooks (webhook-* and svix-*: the first line
 * is the signature list, the second the timestamp), stripe (Stripe-Signature), hmac on the body
 * (hex and base64, sha1/256/512), hmac with timestamp_header and template (Slack: the second line
 * is the timestamp), api-key (the second line), basic and jwt (Authorization: the first line; jwt
 * also in its own header without "Bearer "). The api-key and basic secrets are drawn at start, so
 * no input can carry them: whatever passes there is a forgery. The spooled id and type
 * (spool_extra: header:<Name> and JSON paths into the body) are read for each source too.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "conf/conf.h"
#include "http/http.h"
#include "providers/provider.h"

/* The next '\n'-terminated piece of [*p, end): its start and length; *p moves past it. */
static const char *piece(const char **p, const char *end, size_t *len)
{
    const char *s = *p;
    const char *nl = memchr(s, '\n', (size_t)(end - s));
    *len = nl ? (size_t)(nl - s) : (size_t)(end - s);
    *p = nl ? nl + 1 : end;
    return s;
}

static char *copy_of(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d == NULL)
        abort();
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* One generic source per scheme and variant; `sig` and `second` name the headers that carry the
 * input's first and second line. */
struct scheme_case {
    struct hg_source_conf source;
    const char *sig;
    const char *second;
};

static char drawn[65]; /* api-key and basic secret, drawn at start */
static char *drawn_items[] = { drawn };
static char *hmac_items[] = { "fuzz-secret-1", "fuzz-secret-2" };
static char *sw_items[] = { "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" };

#define STRLIST(a) { a, sizeof(a) / sizeof(a[0]) }
static struct scheme_case cases[] = {
    { { .name = "sw", .scheme = "standard-webhooks", .secrets = STRLIST(sw_items), .tolerance_ms = 300000 },
      "webhook-signature", "webhook-timestamp" },
    { { .name = "svix", .scheme = "standard-webhooks", .secrets = STRLIST(sw_items), .tolerance_ms = 300000,
        .id = "data.id", .type = "type" },
      "svix-signature", "svix-timestamp" },
    { { .name = "stripe", .scheme = "stripe", .secrets = STRLIST(hmac_items), .tolerance_ms = 300000 },
      "Stripe-Signature", "X-Unused" },
    { { .name = "gh", .scheme = "hmac", .secrets = STRLIST(hmac_items), .header = "X-Hub-Signature-256",
        .algorithm = "sha256", .encoding = "hex", .prefix = "sha256=", .id = "header:X-GitHub-Delivery",
        .type = "header:X-GitHub-Event" },
      "X-Hub-Signature-256", "X-GitHub-Delivery" },
    { { .name = "shop", .scheme = "hmac", .secrets = STRLIST(hmac_items), .header = "X-Shopify-Hmac-Sha256",
        .algorithm = "sha512", .encoding = "base64" },
      "X-Shopify-Hmac-Sha256", "X-Unused" },
    { { .name = "sha1", .scheme = "hmac", .secrets = STRLIST(hmac_items), .header = "X-Signature",
        .algorithm = "sha1", .encoding = "hex" },
      "X-Signature", "X-Unused" },
    { { .name = "slack", .scheme = "hmac", .secrets = STRLIST(hmac_items), .header = "X-Slack-Signature",
        .algorithm = "sha256", .encoding = "hex", .prefix = "v0=", .timestamp_header = "X-Slack-Request-Timestamp",
        .template = "v0:{timestamp}:{body}", .tolerance_ms = 300000 },
      "X-Slack-Signature", "X-Slack-Request-Timestamp" },
    { { .name = "ts", .scheme = "hmac", .secrets = STRLIST(hmac_items), .header = "X-Sig", .algorithm = "sha256",
        .encoding = "base64", .timestamp_header = "X-Ts", .tolerance_ms = 300000 },
      "X-Sig", "X-Ts" },
    { { .name = "key", .scheme = "api-key", .secrets = STRLIST(drawn_items), .header = "X-Api-Key" },
      "X-Unused", "X-Api-Key" },
    { { .name = "basic", .scheme = "basic", .secrets = STRLIST(drawn_items), .user = "fuzz" },
      "Authorization", "X-Unused" },
    { { .name = "jwt", .scheme = "jwt", .secrets = STRLIST(hmac_items), .issuer = "iss", .audience = "aud",
        .tolerance_ms = 300000 },
      "Authorization", "X-Unused" },
    { { .name = "jwth", .scheme = "jwt", .secrets = STRLIST(hmac_items), .header = "X-Token", .tolerance_ms = 300000 },
      "X-Token", "X-Unused" },
};

static void draw_secret(void)
{
    unsigned char raw[32];
    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
        abort();
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(drawn + 2 * i, 3, "%02x", raw[i]);
}

static void fuzz_generic_schemes(const char *sigz, size_t sig_len, const char *keyz, size_t key_len,
                                 const char *body, size_t body_len)
{
    const struct hg_provider *p = hg_provider_find("generic");
    if (p == NULL)
        abort();
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct scheme_case *sc = &cases[i];
        struct hg_http_request r;
        memset(&r, 0, sizeof(r));
        r.path = "/webhooks/generic/x";
        r.path_len = strlen(r.path);
        r.query = "";
        r.headers[0] = (struct hg_http_req_header){ sc->sig, strlen(sc->sig), sigz, sig_len };
        r.headers[1] = (struct hg_http_req_header){ sc->second, strlen(sc->second), keyz, key_len };
        /* standard-webhooks signs "id.timestamp.body" */
        r.headers[2] = (struct hg_http_req_header){ i == 1 ? "svix-id" : "webhook-id", i == 1 ? 7 : 10, "msg_fuzz", 8 };
        r.headers[3] = (struct hg_http_req_header){ "Content-Type", 12, "application/json", 16 };
        r.n_headers = 4;
        r.body = body;
        r.body_len = body_len;
        struct hg_creds creds = { .source = &sc->source };
        struct hg_provider_request pr = { &r, body, body_len };
        char why[128] = "";
        if (p->verify(&pr, &creds, why, sizeof(why)) == 0) {
            fprintf(stderr, "fuzz_signatures: generic scheme %s (%s) passed a forged request\n", sc->source.scheme,
                    sc->source.name);
            abort();
        }
        if (why[0] == '\0')
            abort(); /* a 401 always says why */
        char extra[1024];
        size_t n = p->spool_extra(&creds, &r, body, body_len, extra, sizeof(extra));
        if (n >= sizeof(extra))
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (drawn[0] == '\0')
        draw_secret();
    const char *p = (const char *)data, *end = p + size;
    size_t sig_len, key_len;
    const char *sig = piece(&p, end, &sig_len);
    const char *key = piece(&p, end, &key_len);
    size_t body_len = (size_t)(end - p);
    /* The HTTP layer hands over NUL-terminated copies, lengths exact. */
    char *sigz = copy_of(sig, sig_len), *keyz = copy_of(key, key_len), *body = copy_of(p, body_len);

    static char *secret_items[] = { "fuzz-secret-1", "fuzz-secret-2" };
    static char *key_items[] = { "fuzz-api-key" };
    struct hg_strlist secrets = { secret_items, 2 }, keys = { key_items, 1 };
    /* The generic provider verifies against its source: GitHub-style hmac on the first header,
     * a JWT (HS256 with the secrets) on the second. */
    static struct hg_source_conf source = { .name = "fuzz", .algorithm = "sha256", .encoding = "hex",
                                            .prefix = "sha256=" };
    source.secrets = secrets;
    const char *sig_names[] = { "X-Hub-Signature-256", "X-Twilio-Signature" };
    size_t n;
    const struct hg_provider *const *providers = hg_providers(&n);
    for (size_t i = 0; i < n; i++) {
        for (size_t s = 0; s < 2; s++) {
            struct hg_http_request r;
            memset(&r, 0, sizeof(r));
            r.path = "/webhooks/x";
            r.path_len = strlen(r.path);
            r.query = "bodySHA256=00";
            r.query_len = strlen(r.query);
            r.headers[0] = (struct hg_http_req_header){ sig_names[s], strlen(sig_names[s]), sigz, sig_len };
            r.headers[1] = (struct hg_http_req_header){ "X-API-Key", 9, keyz, key_len };
            r.headers[2] = (struct hg_http_req_header){ "Host", 4, "hooks.example.com", 17 };
            r.headers[3] = (struct hg_http_req_header){ "Content-Type", 12,
                                                        body_len && body[0] == '{' ? "application/json" : "application/x-www-form-urlencoded",
                                                        body_len && body[0] == '{' ? 16 : 33 };
            r.n_headers = 4;
            r.body = body;
            r.body_len = body_len;
            source.scheme = s ? "jwt" : "hmac";
            source.header = (char *)sig_names[s];
            struct hg_creds creds = { .secrets = &secrets, .api_keys = &keys, .api_key_header = "X-API-Key",
                                      .public_url = s ? "https://hooks.example.com" : NULL, .source = &source };
            struct hg_provider_request pr = { &r, body, body_len };
            char why[128] = "";
            int rc = providers[i]->verify(&pr, &creds, why, sizeof(why));
            /* Only the API key can be guessed from the input; a signature over it cannot. */
            if (rc == 0 && !(key_len == 12 && memcmp(key, "fuzz-api-key", 12) == 0))
                abort();
            if (rc != 0 && why[0] == '\0')
                abort(); /* a 401 always says why */
        }
    }
    fuzz_generic_schemes(sigz, sig_len, keyz, key_len, body, body_len);
    free(sigz);
    free(keyz);
    free(body);
    return 0;
}

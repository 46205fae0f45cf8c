/*
 * libFuzzer harness: every provider's verify on untrusted headers and bodies. The input is
 * "<signature header value>\n<api key header value>\n<body>"; each provider's verify runs on it
 * with fixed credentials, through a request as the HTTP layer hands it over (path, query, Host,
 * Content-Type). A forged signature must never pass.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
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
    free(sigz);
    free(keyz);
    free(body);
    return 0;
}

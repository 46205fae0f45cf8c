/*
 * libFuzzer harness for the JWT code (core/jwt.h) and the Pub/Sub claims check: the input is
 * decoded as base64url, parsed as a JWKS, verified as a token against a fixed key set (an RSA key
 * and an HS256 secret generated once at start: no fuzzed token can carry their signatures, so a
 * token that passes is a forgery and aborts), its kid peeked, and checked as a claims object.
 */
#include <jansson.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/rsa.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/jwt.h"
#include "providers/pubsub.h"

static struct hg_jwks *keys;
static char secret[65];   /* an HS256 secret drawn at start: no input can carry its MAC */

static void b64url(const unsigned char *in, size_t n, char *out)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        out[o++] = al[(v >> 18) & 63];
        out[o++] = al[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = al[(v >> 6) & 63];
        if (i + 2 < n)
            out[o++] = al[v & 63];
    }
    out[o] = '\0';
}

static void init_keys(void)
{
    mbedtls_entropy_context ent;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_rsa_context rsa;
    unsigned char n[256], e[3];
    char nb[400], eb[8], text[1024], why[256];
    mbedtls_entropy_init(&ent);
    mbedtls_ctr_drbg_init(&drbg);
    mbedtls_rsa_init(&rsa, MBEDTLS_RSA_PKCS_V15, 0);
    if (mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &ent, NULL, 0) != 0 ||
        mbedtls_rsa_gen_key(&rsa, mbedtls_ctr_drbg_random, &drbg, 2048, 65537) != 0 ||
        mbedtls_rsa_export_raw(&rsa, n, sizeof(n), NULL, 0, NULL, 0, NULL, 0, e, sizeof(e)) != 0)
        abort();
    unsigned char raw[32];
    if (mbedtls_ctr_drbg_random(&drbg, raw, sizeof(raw)) != 0)
        abort();
    b64url(raw, sizeof(raw), secret);
    b64url(n, sizeof(n), nb);
    b64url(e, sizeof(e), eb);
    snprintf(text, sizeof(text), "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"k1\",\"n\":\"%s\",\"e\":\"%s\"}]}", nb, eb);
    if (hg_jwks_parse(text, strlen(text), &keys, why, sizeof(why)) != 0)
        abort();
    mbedtls_rsa_free(&rsa);
    mbedtls_ctr_drbg_free(&drbg);
    mbedtls_entropy_free(&ent);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    char why[256];
    unsigned char out[HG_JWT_MAX];
    struct hg_jwks *parsed = NULL;
    json_t *claims = NULL;

    if (keys == NULL)
        init_keys();
    hg_base64url_decode(s, size, out, sizeof(out));
    if (hg_jwks_parse(s, size, &parsed, why, sizeof(why)) == 0)
        hg_jwks_free(parsed);
    if (hg_jwt_verify_rs256(s, size, keys, &claims, why, sizeof(why)) == 0)
        abort(); /* a token signed by a key only this process knows */
    const char *secrets[] = { secret };
    struct hg_jwt_keys both = { .rsa = keys, .secrets = secrets, .n_secrets = 1 };
    if (hg_jwt_verify(s, size, &both, &claims, why, sizeof(why)) == 0)
        abort(); /* nor one HMAC'd with a secret only this process knows */
    char kid[64];
    hg_jwt_peek_kid(s, size, kid, sizeof(kid));
    json_t *j = json_loadb(s, size, 0, NULL);
    if (j != NULL) {
        hg_pubsub_check_claims(j, "https://hooks.example.com/webhooks/pubsub", "a@b.c", 1700000000, why, sizeof(why));
        json_decref(j);
    }
    return 0;
}

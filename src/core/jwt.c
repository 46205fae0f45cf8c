/*
 * RS256 JWT verification against a JWKS (core/jwt.h): base64url, the three parts, the header
 * rules, and RSASSA-PKCS1-v1_5 with SHA-256 through mbedTLS. Claims are the caller's business.
 */
#include <errno.h>
#include <mbedtls/md.h>
#include <mbedtls/rsa.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/err.h"
#include "core/jwt.h"
#include "core/sha256.h"

#define KID_MAX     256
#define MOD_MAX     (HG_JWK_MAX_BITS / 8)
#define EXP_MAX     8

/*
 * A key keeps the raw modulus and exponent, not an mbedtls_rsa_context: mbedTLS caches a
 * Montgomery constant in the context on first use (a write), so a context shared by the worker
 * threads would race. Each verification builds its own context on the stack instead (the import
 * costs far less than the exponentiation).
 */
struct jwk {
    char kid[KID_MAX + 1];
    unsigned char n[MOD_MAX];
    size_t n_len;
    unsigned char e[EXP_MAX];
    size_t e_len;
};

struct hg_jwks {
    size_t n;
    struct jwk keys[];
};

static int say(char *why, size_t cap, int rc, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int say(char *why, size_t cap, int rc, const char *fmt, ...)
{
    if (why != NULL && cap > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, cap, fmt, ap);
        va_end(ap);
    }
    return rc;
}

static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

long hg_base64url_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
    /* A lone trailing character carries 6 bits, not a byte: no valid encoding ends that way. */
    if (len % 4 == 1 || (len / 4) * 3 + (len % 4 ? len % 4 - 1 : 0) > cap)
        return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64url_value((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    /* Non-zero leftover bits: a second spelling of the same bytes (malleable), refused. */
    if (acc != 0)
        return -1;
    return (long)o;
}

/* ---- the key set ---- */

/* A base64url big-endian integer member into out, leading zero bytes dropped; its length or -1. */
static long uint_member(json_t *key, const char *name, unsigned char *out, size_t cap)
{
    const char *s = json_string_value(json_object_get(key, name));
    unsigned char buf[MOD_MAX + 1];
    if (s == NULL)
        return -1;
    long n = hg_base64url_decode(s, strlen(s), buf, sizeof(buf));
    if (n <= 0)
        return -1;
    size_t skip = 0;
    while (skip < (size_t)n && buf[skip] == 0)
        skip++;
    if ((size_t)n - skip > cap || (size_t)n == skip)
        return -1;
    memcpy(out, buf + skip, (size_t)n - skip);
    return (long)((size_t)n - skip);
}

/* Bits of a big-endian magnitude without leading zero bytes. */
static size_t bit_len(const unsigned char *p, size_t n)
{
    if (n == 0)
        return 0;
    size_t bits = (n - 1) * 8;
    for (unsigned char top = p[0]; top; top >>= 1)
        bits++;
    return bits;
}

/* An mbedTLS public key from a parsed jwk; 0, or an mbedTLS error (the context is then freed). */
static int rsa_from_jwk(mbedtls_rsa_context *rsa, const struct jwk *k)
{
    mbedtls_rsa_init(rsa, MBEDTLS_RSA_PKCS_V15, 0);
    int rc = mbedtls_rsa_import_raw(rsa, k->n, k->n_len, NULL, 0, NULL, 0, NULL, 0, k->e, k->e_len);
    if (rc == 0)
        rc = mbedtls_rsa_complete(rsa);
    if (rc == 0)
        rc = mbedtls_rsa_check_pubkey(rsa);
    if (rc != 0)
        mbedtls_rsa_free(rsa);
    return rc;
}

int hg_jwks_parse(const char *text, size_t len, struct hg_jwks **out, char *why, size_t cap)
{
    json_error_t jerr;
    struct hg_jwks *set = NULL;
    int rc = HG_ERR_PARSE;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);

    *out = NULL;
    if (root == NULL) {
        say(why, cap, 0, "not valid JSON: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column);
        goto out;
    }
    json_t *keys = json_object_get(root, "keys");
    if (!json_is_array(keys)) {
        say(why, cap, 0, "not a JWKS document: no \"keys\" array");
        goto out;
    }
    if (json_array_size(keys) > HG_JWKS_MAX_KEYS) {
        say(why, cap, 0, "more than %d keys", HG_JWKS_MAX_KEYS);
        goto out;
    }
    set = hg_xcalloc(1, sizeof(*set) + json_array_size(keys) * sizeof(set->keys[0]));
    size_t i;
    json_t *key;
    json_array_foreach(keys, i, key) {
        const char *kty = json_string_value(json_object_get(key, "kty"));
        const char *use = json_string_value(json_object_get(key, "use"));
        const char *alg = json_string_value(json_object_get(key, "alg"));
        const char *kid = json_string_value(json_object_get(key, "kid"));
        if (!json_is_object(key) || kty == NULL) {
            say(why, cap, 0, "key %zu: not an object with a \"kty\"", i);
            goto out;
        }
        /* Not a key an RS256 token can name: skipped, as a JWKS may hold other kinds. */
        if (strcmp(kty, "RSA") != 0 || (use != NULL && strcmp(use, "sig") != 0) ||
            (alg != NULL && strcmp(alg, "RS256") != 0))
            continue;
        if (kid == NULL || kid[0] == '\0' || strlen(kid) > KID_MAX) {
            say(why, cap, 0, "key %zu: \"kid\" missing, empty or longer than %d bytes", i, KID_MAX);
            goto out;
        }
        for (size_t j = 0; j < set->n; j++) {
            if (strcmp(set->keys[j].kid, kid) == 0) {
                say(why, cap, 0, "key %zu: kid \"%s\" appears twice", i, kid);
                goto out;
            }
        }
        struct jwk *k = &set->keys[set->n];
        long nl = uint_member(key, "n", k->n, sizeof(k->n));
        long el = uint_member(key, "e", k->e, sizeof(k->e));
        if (nl < 0 || el < 0) {
            say(why, cap, 0, "key \"%s\": \"n\" or \"e\" missing, not base64url or too long", kid);
            goto out;
        }
        k->n_len = (size_t)nl;
        k->e_len = (size_t)el;
        size_t bits = bit_len(k->n, k->n_len);
        if (bits < HG_JWK_MIN_BITS || bits > HG_JWK_MAX_BITS) {
            say(why, cap, 0, "key \"%s\": %zu-bit modulus (%d to %d bits accepted)", kid, bits, HG_JWK_MIN_BITS,
                HG_JWK_MAX_BITS);
            goto out;
        }
        mbedtls_rsa_context rsa;
        if (rsa_from_jwk(&rsa, k) != 0) {
            say(why, cap, 0, "key \"%s\": not a valid RSA public key", kid);
            goto out;
        }
        mbedtls_rsa_free(&rsa);
        memcpy(k->kid, kid, strlen(kid) + 1);
        set->n++;
    }
    if (set->n == 0) {
        say(why, cap, 0, "no RSA signing key (kty RSA, RS256)");
        goto out;
    }
    *out = set;
    set = NULL;
    rc = 0;
out:
    json_decref(root);
    free(set);
    return rc;
}

int hg_jwks_load_file(const char *path, struct hg_jwks **out, char *why, size_t cap)
{
    char *text = NULL;
    int rc = HG_ERR_PARSE;
    FILE *f = fopen(path, "re");
    *out = NULL;
    if (f == NULL)
        return say(why, cap, HG_ERR_PARSE, "cannot open: %s", strerror(errno));
    text = hg_xmalloc(HG_JWKS_FILE_MAX + 1);
    size_t len = fread(text, 1, HG_JWKS_FILE_MAX + 1, f);
    if (ferror(f))
        say(why, cap, 0, "cannot read: %s", strerror(errno));
    else if (len > HG_JWKS_FILE_MAX)
        say(why, cap, 0, "bigger than %u bytes", HG_JWKS_FILE_MAX);
    else
        rc = hg_jwks_parse(text, len, out, why, cap);
    fclose(f);
    free(text);
    return rc;
}

size_t hg_jwks_count(const struct hg_jwks *k)
{
    return k ? k->n : 0;
}

void hg_jwks_free(struct hg_jwks *k)
{
    free(k);
}

/* ---- tokens ---- */

/* A base64url part decoded and parsed as a JSON object; NULL when it is not one. */
static json_t *json_part(const char *s, size_t n)
{
    unsigned char buf[HG_JWT_PART_MAX];
    long len = hg_base64url_decode(s, n, buf, sizeof(buf));
    if (len <= 0)
        return NULL;
    json_error_t jerr;
    /* Duplicate names are refused: two "alg" or "aud" members would be read differently by
     * different parsers. */
    json_t *j = json_loadb((const char *)buf, (size_t)len, JSON_REJECT_DUPLICATES, &jerr);
    if (j != NULL && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

int hg_jwt_verify_rs256(const char *token, size_t len, const struct hg_jwks *keys, json_t **claims, char *why,
                        size_t cap)
{
    json_t *header = NULL, *payload = NULL;
    int rc = HG_ERR_SIGNATURE;
    unsigned char sig[MOD_MAX + 3];

    *claims = NULL;
    if (token == NULL || len == 0)
        return say(why, cap, rc, "empty token");
    if (len > HG_JWT_MAX)
        return say(why, cap, rc, "token longer than %d bytes", HG_JWT_MAX);
    const char *d1 = memchr(token, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', (size_t)(token + len - d1 - 1)) : NULL;
    if (d1 == NULL || d2 == NULL || memchr(d2 + 1, '.', (size_t)(token + len - d2 - 1)) != NULL)
        return say(why, cap, rc, "token is not three dot-separated parts");
    size_t hl = (size_t)(d1 - token), pl = (size_t)(d2 - d1 - 1), sl = (size_t)(token + len - d2 - 1);
    if (hl == 0 || pl == 0 || sl == 0)
        return say(why, cap, rc, "token has an empty part");

    header = json_part(token, hl);
    if (header == NULL) {
        say(why, cap, 0, "token header is not base64url JSON");
        goto out;
    }
    const char *alg = json_string_value(json_object_get(header, "alg"));
    if (alg == NULL || strcmp(alg, "RS256") != 0) {
        say(why, cap, 0, "token alg must be RS256");
        goto out;
    }
    if (json_object_get(header, "crit") != NULL) {
        say(why, cap, 0, "token header has crit");
        goto out;
    }
    json_t *typ = json_object_get(header, "typ");
    if (typ != NULL && (!json_is_string(typ) || strcmp(json_string_value(typ), "JWT") != 0)) {
        say(why, cap, 0, "token typ is not JWT");
        goto out;
    }
    const char *kid = json_string_value(json_object_get(header, "kid"));
    const struct jwk *k = NULL;
    for (size_t i = 0; kid != NULL && keys != NULL && i < keys->n && k == NULL; i++)
        if (strcmp(keys->keys[i].kid, kid) == 0)
            k = &keys->keys[i];
    if (k == NULL) {
        say(why, cap, 0, kid ? "token kid is not a known key" : "token has no kid");
        goto out;
    }

    long sig_len = hg_base64url_decode(d2 + 1, sl, sig, sizeof(sig));
    mbedtls_rsa_context rsa;
    if (sig_len < 0) {
        say(why, cap, 0, "token signature is not base64url");
        goto out;
    }
    if (rsa_from_jwk(&rsa, k) != 0) {
        say(why, cap, 0, "token key is unusable");
        goto out;
    }
    /* mbedTLS reads exactly the modulus length from sig: a shorter one must never reach it. */
    if ((size_t)sig_len != mbedtls_rsa_get_len(&rsa)) {
        mbedtls_rsa_free(&rsa);
        say(why, cap, 0, "token signature has the wrong length");
        goto out;
    }
    unsigned char digest[HG_SHA256_LEN];
    hg_sha256(token, hl + 1 + pl, digest);
    int vrc = mbedtls_rsa_pkcs1_verify(&rsa, NULL, NULL, MBEDTLS_RSA_PUBLIC, MBEDTLS_MD_SHA256, sizeof(digest),
                                       digest, sig);
    mbedtls_rsa_free(&rsa);
    if (vrc != 0) {
        say(why, cap, 0, "token signature does not match");
        goto out;
    }
    payload = json_part(d1 + 1, pl);
    if (payload == NULL) {
        say(why, cap, 0, "token payload is not base64url JSON");
        goto out;
    }
    *claims = payload;
    payload = NULL;
    rc = 0;
out:
    json_decref(header);
    json_decref(payload);
    return rc;
}

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
#include <strings.h>

#include "core/common.h"
#include "core/err.h"
#include "core/hmac.h"
#include "core/jwt.h"
#include "core/sha256.h"
#include "core/str.h"

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

bool hg_jwks_has(const struct hg_jwks *k, const char *kid)
{
    for (size_t i = 0; k != NULL && kid != NULL && i < k->n; i++)
        if (strcmp(k->keys[i].kid, kid) == 0)
            return true;
    return false;
}

/* Split a compact token into its three parts: 0, or HG_ERR_SIGNATURE with the reason. */
static int split(const char *token, size_t len, size_t *hl, size_t *pl, size_t *sl, char *why, size_t cap)
{
    if (token == NULL || len == 0)
        return say(why, cap, HG_ERR_SIGNATURE, "empty token");
    if (len > HG_JWT_MAX)
        return say(why, cap, HG_ERR_SIGNATURE, "token longer than %d bytes", HG_JWT_MAX);
    const char *d1 = memchr(token, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', (size_t)(token + len - d1 - 1)) : NULL;
    if (d1 == NULL || d2 == NULL || memchr(d2 + 1, '.', (size_t)(token + len - d2 - 1)) != NULL)
        return say(why, cap, HG_ERR_SIGNATURE, "token is not three dot-separated parts");
    *hl = (size_t)(d1 - token), *pl = (size_t)(d2 - d1 - 1), *sl = (size_t)(token + len - d2 - 1);
    if (*hl == 0 || *pl == 0)
        return say(why, cap, HG_ERR_SIGNATURE, "token has an empty part");
    return 0;
}

int hg_jwt_peek_kid(const char *token, size_t len, char *kid, size_t cap)
{
    size_t hl, pl, sl;
    if (cap > 0)
        kid[0] = '\0';
    if (split(token, len, &hl, &pl, &sl, NULL, 0) != 0)
        return HG_ERR_PARSE;
    json_t *header = json_part(token, hl);
    const char *k = json_string_value(json_object_get(header, "kid"));
    int rc = k != NULL && strlen(k) < cap ? 0 : HG_ERR_PARSE;
    if (rc == 0)
        memcpy(kid, k, strlen(k) + 1);
    json_decref(header);
    return rc;
}

/* The algorithms keys accept, for the refusal: "RS256", "HS256" or both. */
static const char *accepted_algs(const struct hg_jwt_keys *keys)
{
    bool rs = keys->rsa != NULL, hs = keys->n_secrets > 0;
    return rs && hs ? "RS256 or HS256" : hs ? "HS256" : "RS256";
}

/* RS256: the header's kid names the key (a set of one key also serves a token without kid). */
static int verify_rs256(const char *token, size_t signed_len, const char *sig64, size_t sl, const json_t *header,
                        const struct hg_jwks *keys, char *why, size_t cap)
{
    unsigned char sig[MOD_MAX + 3];
    const char *kid = json_string_value(json_object_get(header, "kid"));
    const struct jwk *k = NULL;
    for (size_t i = 0; kid != NULL && i < keys->n && k == NULL; i++)
        if (strcmp(keys->keys[i].kid, kid) == 0)
            k = &keys->keys[i];
    if (k == NULL && kid == NULL && keys->n == 1)
        k = &keys->keys[0];
    if (k == NULL)
        return say(why, cap, HG_ERR_NOT_FOUND, kid ? "token kid is not a known key" : "token has no kid");
    long sig_len = hg_base64url_decode(sig64, sl, sig, sizeof(sig));
    if (sig_len < 0)
        return say(why, cap, HG_ERR_SIGNATURE, "token signature is not base64url");
    mbedtls_rsa_context rsa;
    if (rsa_from_jwk(&rsa, k) != 0)
        return say(why, cap, HG_ERR_SIGNATURE, "token key is unusable");
    /* mbedTLS reads exactly the modulus length from sig: a shorter one must never reach it. */
    if ((size_t)sig_len != mbedtls_rsa_get_len(&rsa)) {
        mbedtls_rsa_free(&rsa);
        return say(why, cap, HG_ERR_SIGNATURE, "token signature has the wrong length");
    }
    unsigned char digest[HG_SHA256_LEN];
    hg_sha256(token, signed_len, digest);
    int vrc = mbedtls_rsa_pkcs1_verify(&rsa, NULL, NULL, MBEDTLS_RSA_PUBLIC, MBEDTLS_MD_SHA256, sizeof(digest),
                                       digest, sig);
    mbedtls_rsa_free(&rsa);
    return vrc == 0 ? 0 : say(why, cap, HG_ERR_SIGNATURE, "token signature does not match");
}

/* HS256: any of the secrets (rotation); the comparison is constant-time. */
static int verify_hs256(const char *token, size_t signed_len, const char *sig64, size_t sl,
                        const struct hg_jwt_keys *keys, char *why, size_t cap)
{
    unsigned char sig[HG_SHA256_LEN + 3], mac[HG_HMAC_MAX];
    long sig_len = hg_base64url_decode(sig64, sl, sig, sizeof(sig));
    if (sig_len < 0)
        return say(why, cap, HG_ERR_SIGNATURE, "token signature is not base64url");
    bool ok = false;
    for (size_t i = 0; i < keys->n_secrets; i++) {
        const char *secret = keys->secrets[i];
        if (secret == NULL || secret[0] == '\0')
            continue;
        hg_hmac(HG_HMAC_SHA256, secret, strlen(secret), token, signed_len, mac);
        ok |= hg_ct_equal(mac, HG_SHA256_LEN, sig, (size_t)sig_len);
    }
    hg_wipe(mac, sizeof(mac));
    return ok ? 0 : say(why, cap, HG_ERR_SIGNATURE, "token signature does not match");
}

int hg_jwt_verify(const char *token, size_t len, const struct hg_jwt_keys *keys, json_t **claims, char *why,
                  size_t cap)
{
    json_t *header = NULL, *payload = NULL;
    size_t hl, pl, sl;
    int rc;

    *claims = NULL;
    if ((rc = split(token, len, &hl, &pl, &sl, why, cap)) != 0)
        return rc;
    rc = HG_ERR_SIGNATURE;
    header = json_part(token, hl);
    if (header == NULL) {
        say(why, cap, 0, "token header is not base64url JSON");
        goto out;
    }
    /* The algorithm is the one the keys allow, never the token's choice: an RS256 public key is
     * never an HMAC secret, and "none" is never accepted. */
    const char *alg = json_string_value(json_object_get(header, "alg"));
    bool rs = alg != NULL && keys->rsa != NULL && strcmp(alg, "RS256") == 0;
    bool hs = alg != NULL && keys->n_secrets > 0 && strcmp(alg, "HS256") == 0;
    if (!rs && !hs) {
        say(why, cap, 0, "token alg must be %s", accepted_algs(keys));
        goto out;
    }
    if (json_object_get(header, "crit") != NULL) {
        say(why, cap, 0, "token header has crit");
        goto out;
    }
    json_t *typ = json_object_get(header, "typ");
    if (typ != NULL && (!json_is_string(typ) || strcasecmp(json_string_value(typ), "JWT") != 0)) {
        say(why, cap, 0, "token typ is not JWT");
        goto out;
    }
    if (sl == 0) {
        say(why, cap, 0, "token has no signature");
        goto out;
    }
    const char *sig64 = token + hl + 1 + pl + 1;
    rc = rs ? verify_rs256(token, hl + 1 + pl, sig64, sl, header, keys->rsa, why, cap)
            : verify_hs256(token, hl + 1 + pl, sig64, sl, keys, why, cap);
    if (rc != 0)
        goto out;
    rc = HG_ERR_SIGNATURE;
    payload = json_part(token + hl + 1, pl);
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

int hg_jwt_verify_rs256(const char *token, size_t len, const struct hg_jwks *keys, json_t **claims, char *why,
                        size_t cap)
{
    struct hg_jwt_keys k = { .rsa = keys };
    if (keys == NULL) {
        *claims = NULL;
        return say(why, cap, HG_ERR_SIGNATURE, "no keys");
    }
    return hg_jwt_verify(token, len, &k, claims, why, cap);
}

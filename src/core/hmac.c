/*
 * HMAC through mbedTLS's md layer, the per-thread cached HMAC-SHA256 of the hot path (core/sha256
 * with the key states precomputed), hex and base64 decoding (core/hmac.h).
 */
#include <mbedtls/base64.h>
#include <mbedtls/md.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/hmac.h"
#include "core/sha256.h"
#include "core/str.h"

static const mbedtls_md_info_t *md_info(enum hg_hmac_alg alg)
{
    switch (alg) {
    case HG_HMAC_SHA1:
        return mbedtls_md_info_from_type(MBEDTLS_MD_SHA1);
    case HG_HMAC_SHA512:
        return mbedtls_md_info_from_type(MBEDTLS_MD_SHA512);
    case HG_HMAC_SHA256:
    default:
        return mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
    }
}

size_t hg_hmac_len(enum hg_hmac_alg alg)
{
    return mbedtls_md_get_size(md_info(alg));
}

size_t hg_hmac(enum hg_hmac_alg alg, const void *key, size_t key_len, const void *data, size_t len,
               unsigned char out[HG_HMAC_MAX])
{
    const mbedtls_md_info_t *md = md_info(alg);
    /* Only an unknown algorithm or a NULL pointer fails here; both are programming errors. */
    if (mbedtls_md_hmac(md, key, key_len, data, len, out) != 0)
        hg_oom(__FILE__, __LINE__);
    return mbedtls_md_get_size(md);
}

void hg_hmac_start(struct hg_hmac_ctx *c, enum hg_hmac_alg alg, const void *key, size_t key_len)
{
    mbedtls_md_context_t *md = hg_xmalloc(sizeof(*md));
    mbedtls_md_init(md);
    if (mbedtls_md_setup(md, md_info(alg), 1) != 0 || mbedtls_md_hmac_starts(md, key, key_len) != 0)
        hg_oom(__FILE__, __LINE__);
    c->md = md;
    c->alg = alg;
}

void hg_hmac_update(struct hg_hmac_ctx *c, const void *data, size_t len)
{
    if (len)
        mbedtls_md_hmac_update(c->md, data, len);
}

size_t hg_hmac_finish(struct hg_hmac_ctx *c, unsigned char out[HG_HMAC_MAX])
{
    mbedtls_md_hmac_finish(c->md, out);
    mbedtls_md_free(c->md);
    free(c->md);
    c->md = NULL;
    return hg_hmac_len(c->alg);
}

int hg_hex_digit(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int hg_hex_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
    if (len != 2 * cap)
        return -1;
    for (size_t i = 0; i < cap; i++) {
        int hi = hg_hex_digit((unsigned char)in[2 * i]), lo = hg_hex_digit((unsigned char)in[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

size_t hg_base64_encode(const unsigned char *in, size_t n, char *out, size_t cap)
{
    size_t olen = 0;
    if (mbedtls_base64_encode((unsigned char *)out, cap, &olen, in, n) != 0)
        return 0;
    return olen;
}

int hg_base64_decode(const char *in, size_t len, unsigned char *out, size_t cap, size_t *out_len)
{
    size_t olen = 0;
    /* mbedTLS skips line breaks and spaces inside; a signature header carries none. */
    for (size_t i = 0; i < len; i++)
        if (in[i] == ' ' || in[i] == '\r' || in[i] == '\n' || in[i] == '\t')
            return -1;
    if (len % 4 != 0 || mbedtls_base64_decode(out, cap, &olen, (const unsigned char *)in, len) != 0)
        return -1;
    *out_len = olen;
    return 0;
}

/* ---- HMAC-SHA256 with cached key states (the per-webhook signature check) ---- */

/* Secrets whose HMAC key state a worker thread keeps: a config's secrets plus rotation. */
#define KEY_CACHE_SIZE 8

/*
 * HMAC-SHA256 with the key already absorbed: the SHA-256 states after the 64-byte ipad and opad
 * blocks. Computing them once per secret instead of once per request saves two of the ~16
 * compression rounds of a typical webhook. core/sha256 uses the CPU's SHA extensions when present.
 */
struct hmac_key {
    bool valid;
    size_t secret_len;
    unsigned char secret[HG_SHA256_BLOCK]; /* the secret itself: a hit is confirmed by content */
    struct hg_sha256 inner;
    struct hg_sha256 outer;
};

/*
 * Per thread, so workers never share or lock it. Keyed by the secret's bytes, not by where it
 * lives: a config reload may free one secret and allocate a different one at the same address.
 */
static _Thread_local struct hmac_key key_cache[KEY_CACHE_SIZE];
static _Thread_local unsigned key_cache_next;

/* Absorb the padded key into the inner and outer states (RFC 2104). */
static void hmac_key_init(struct hmac_key *k, const unsigned char *secret, size_t len)
{
    unsigned char k0[HG_SHA256_BLOCK] = { 0 }, pad[HG_SHA256_BLOCK];
    if (len > HG_SHA256_BLOCK)
        hg_sha256(secret, len, k0); /* a key longer than the block is hashed first */
    else
        memcpy(k0, secret, len);
    for (size_t i = 0; i < HG_SHA256_BLOCK; i++)
        pad[i] = k0[i] ^ 0x36;
    hg_sha256_init(&k->inner);
    hg_sha256_update(&k->inner, pad, HG_SHA256_BLOCK);
    for (size_t i = 0; i < HG_SHA256_BLOCK; i++)
        pad[i] = k0[i] ^ 0x5c;
    hg_sha256_init(&k->outer);
    hg_sha256_update(&k->outer, pad, HG_SHA256_BLOCK);
    hg_wipe(k0, sizeof(k0));
    hg_wipe(pad, sizeof(pad));
}

/*
 * The key state of `secret`, from this thread's cache or computed into it (round robin). Secrets
 * longer than a block are not cached: their state is computed into `tmp`.
 */
static const struct hmac_key *hmac_key_get(const char *secret, struct hmac_key *tmp)
{
    size_t len = strlen(secret);
    if (len > HG_SHA256_BLOCK) {
        hmac_key_init(tmp, (const unsigned char *)secret, len);
        return tmp;
    }
    for (size_t i = 0; i < KEY_CACHE_SIZE; i++) {
        struct hmac_key *k = &key_cache[i];
        if (k->valid && k->secret_len == len && memcmp(k->secret, secret, len) == 0)
            return k;
    }
    struct hmac_key *k = &key_cache[key_cache_next];
    key_cache_next = (key_cache_next + 1) % KEY_CACHE_SIZE;
    hmac_key_init(k, (const unsigned char *)secret, len);
    memcpy(k->secret, secret, len);
    k->secret_len = len;
    k->valid = true;
    return k;
}

/* HMAC-SHA256(key, body) from a precomputed key state: copying a state clones the hash. */
static void hmac_sha256_state(const struct hmac_key *k, const void *body, size_t body_len,
                              unsigned char out[HG_SHA256_LEN])
{
    struct hg_sha256 ctx = k->inner;
    unsigned char inner[HG_SHA256_LEN];
    hg_sha256_update(&ctx, body, body_len);
    hg_sha256_final(&ctx, inner);
    ctx = k->outer;
    hg_sha256_update(&ctx, inner, HG_SHA256_LEN);
    hg_sha256_final(&ctx, out);
    hg_wipe(&ctx, sizeof(ctx));
    hg_wipe(inner, sizeof(inner));
}

void hg_hmac_sha256_cached(const char *secret, const void *data, size_t len, unsigned char out[HG_SHA256_LEN])
{
    struct hmac_key tmp;
    const struct hmac_key *k = hmac_key_get(secret, &tmp);
    hmac_sha256_state(k, data, len, out);
    if (k == &tmp)
        hg_wipe(&tmp, sizeof(tmp));
}

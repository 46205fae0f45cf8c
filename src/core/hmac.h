/*
 * HMAC (SHA-1, SHA-256, SHA-512 through mbedTLS), the encodings providers sign in (hex, base64)
 * decoding: the one place signature arithmetic lives (with core/str.h's hg_ct_equal and hg_hex).
 */
#ifndef HG_CORE_HMAC_H
#define HG_CORE_HMAC_H

#include <stdbool.h>
#include <stddef.h>

#define HG_HMAC_MAX 64 /* longest digest (SHA-512) */

enum hg_hmac_alg {
    HG_HMAC_SHA1,      /* 20 bytes: Twilio's X-Twilio-Signature */
    HG_HMAC_SHA256,    /* 32 bytes: Meta, Genesys, Standard Webhooks, Stripe */
    HG_HMAC_SHA512,    /* 64 bytes */
};

/* Digest length of alg in bytes. */
size_t hg_hmac_len(enum hg_hmac_alg alg);

/* out (HG_HMAC_MAX bytes) = HMAC-alg(key, data). Returns the digest length. */
size_t hg_hmac(enum hg_hmac_alg alg, const void *key, size_t key_len, const void *data, size_t len,
               unsigned char out[HG_HMAC_MAX]);

/*
 * HMAC-SHA256(secret, data) into out (32 bytes) with this thread's cache of key states: the
 * SHA-256 states after the ipad and opad blocks are computed once per secret (8 per thread, round
 * robin, keyed by the secret's bytes so a reload never uses a stale key), which saves two of the
 * ~16 compression rounds of a typical webhook; core/sha256 uses the CPU's SHA extensions. Secrets
 * longer than a block are not cached. `secret` is NUL-terminated. For every provider's signature.
 */
void hg_hmac_sha256_cached(const char *secret, const void *data, size_t len, unsigned char out[32]);

/* Incremental HMAC over several pieces (Twilio signs URL + sorted params). */
struct hg_hmac_ctx {
    void *md;          /* mbedtls_md_context_t, private */
    enum hg_hmac_alg alg;
};
void hg_hmac_start(struct hg_hmac_ctx *c, enum hg_hmac_alg alg, const void *key, size_t key_len);
void hg_hmac_update(struct hg_hmac_ctx *c, const void *data, size_t len);
/* Writes the digest, frees the context, returns the digest length. */
size_t hg_hmac_finish(struct hg_hmac_ctx *c, unsigned char out[HG_HMAC_MAX]);

/* Comparison in constant time and hex encoding: hg_ct_equal and hg_hex in core/str.h. */
/* Decode hex (either case) of exactly 2*cap characters into out; 0, or -1 when a character is
 * not hex or the length is not 2*cap. */
int hg_hex_decode(const char *in, size_t len, unsigned char *out, size_t cap);
/* Value of one hex digit, -1 when not hex. */
int hg_hex_digit(unsigned char c);

/* Standard base64 (with padding) of n bytes into out (cap bytes incl. NUL); the length, or 0
 * when it does not fit. */
size_t hg_base64_encode(const unsigned char *in, size_t n, char *out, size_t cap);
/* Decode standard base64 (padding required, no whitespace) into out; 0 and *out_len, or -1 when
 * malformed or larger than cap. */
int hg_base64_decode(const char *in, size_t len, unsigned char *out, size_t cap, size_t *out_len);

#endif

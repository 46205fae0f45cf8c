/*
 * SHA-256 (FIPS 180-4) with the x86 SHA extensions when the CPU has them (checked once at run
 * time) and portable C otherwise. The state is a plain struct: copying it clones a hash midway,
 * which is how HMAC keys are precomputed (whatsapp.c).
 */
#ifndef HG_CORE_SHA256_H
#define HG_CORE_SHA256_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HG_SHA256_LEN   32
#define HG_SHA256_BLOCK 64

struct hg_sha256 {
    uint32_t h[8];
    uint64_t total;                       /* bytes hashed so far */
    unsigned char buf[HG_SHA256_BLOCK];   /* a partial block */
    size_t buffered;
};

void hg_sha256_init(struct hg_sha256 *s);
void hg_sha256_update(struct hg_sha256 *s, const void *data, size_t len);
/* Write the digest; `s` must be initialised again before reuse. */
void hg_sha256_final(struct hg_sha256 *s, unsigned char out[HG_SHA256_LEN]);
/* One-shot digest. */
void hg_sha256(const void *data, size_t len, unsigned char out[HG_SHA256_LEN]);

/*
 * Whether the SHA extensions are in use. `hg_sha256_set_accel(false)` forces portable C (tests
 * compare both); `true` uses the extensions only when the CPU has them. Not thread-safe: call
 * before other threads hash.
 */
bool hg_sha256_accelerated(void);
void hg_sha256_set_accel(bool on);

#endif

/*
 * SHA-256: portable C per FIPS 180-4, plus a block function using the x86 SHA extensions
 * (SHA256RNDS2/MSG1/MSG2), chosen once at start-up from CPUID. Webhook signatures hash every
 * body; mbedTLS 2.28 has no accelerated SHA-256 and its C rounds were ~15 % of a webhook's CPU.
 */
#include <string.h>

#include "core/sha256.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define HAVE_X86_SHA 1
#endif

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t ror(uint32_t x, int n) { return x >> n | x << (32 - n); }

static uint32_t load_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void store_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* Compress `n` 64-byte blocks into h. */
static void blocks_c(uint32_t h[8], const unsigned char *p, size_t n)
{
    for (; n > 0; n--, p += HG_SHA256_BLOCK) {
        uint32_t w[64];
        for (int i = 0; i < 16; i++)
            w[i] = load_be32(p + 4 * i);
        for (int i = 16; i < 64; i++) {
            uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
            uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
        for (int i = 0; i < 64; i++) {
            uint32_t t1 = hh + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
            uint32_t t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
            hh = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = b;
            b = a;
            a = t1 + t2;
        }
        h[0] += a;
        h[1] += b;
        h[2] += c;
        h[3] += d;
        h[4] += e;
        h[5] += f;
        h[6] += g;
        h[7] += hh;
    }
}

#ifdef HAVE_X86_SHA
/*
 * The SHA extensions keep the state as two vectors, ABEF and CDGH, and do two rounds per
 * SHA256RNDS2 with the message words plus constants in the low half of its third operand.
 * Message schedule: MSG1 and MSG2 compute W[t] for t >= 16 four at a time.
 */
__attribute__((target("sha,sse4.1,ssse3"))) static void blocks_x86(uint32_t h[8], const unsigned char *p, size_t n)
{
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
    __m128i tmp = _mm_loadu_si128((const __m128i *)&h[0]);   /* DCBA */
    __m128i state1 = _mm_loadu_si128((const __m128i *)&h[4]); /* HGFE */
    tmp = _mm_shuffle_epi32(tmp, 0xB1);                       /* CDAB */
    state1 = _mm_shuffle_epi32(state1, 0x1B);                 /* EFGH */
    __m128i state0 = _mm_alignr_epi8(tmp, state1, 8);         /* ABEF */
    state1 = _mm_blend_epi16(state1, tmp, 0xF0);              /* CDGH */

    for (; n > 0; n--, p += HG_SHA256_BLOCK) {
        __m128i abef = state0, cdgh = state1;
        __m128i m[4], msg;
        for (int i = 0; i < 16; i++) {
            /* Rounds 4i .. 4i+3 with message words m[i % 4]. */
            __m128i *cur = &m[i & 3], *prev = &m[(i + 3) & 3], *next = &m[(i + 1) & 3];
            if (i < 4)
                *cur = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), bswap);
            msg = _mm_add_epi32(*cur, _mm_loadu_si128((const __m128i *)&K[4 * i]));
            state1 = _mm_sha256rnds2_epu32(state1, state0, msg);
            if (i >= 3 && i < 15) {
                *next = _mm_add_epi32(*next, _mm_alignr_epi8(*cur, *prev, 4));
                *next = _mm_sha256msg2_epu32(*next, *cur);
            }
            msg = _mm_shuffle_epi32(msg, 0x0E);
            state0 = _mm_sha256rnds2_epu32(state0, state1, msg);
            if (i >= 1 && i < 13)
                *prev = _mm_sha256msg1_epu32(*prev, *cur);
        }
        state0 = _mm_add_epi32(state0, abef);
        state1 = _mm_add_epi32(state1, cdgh);
    }

    tmp = _mm_shuffle_epi32(state0, 0x1B);       /* FEBA */
    state1 = _mm_shuffle_epi32(state1, 0xB1);    /* DCHG */
    state0 = _mm_blend_epi16(tmp, state1, 0xF0); /* DCBA */
    state1 = _mm_alignr_epi8(state1, tmp, 8);    /* HGFE */
    _mm_storeu_si128((__m128i *)&h[0], state0);
    _mm_storeu_si128((__m128i *)&h[4], state1);
}

static bool cpu_has_sha(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return false;
    bool ssse3 = c & (1u << 9), sse41 = c & (1u << 19);
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return false;
    return ssse3 && sse41 && (b & (1u << 29));
}
#endif

static void (*blocks)(uint32_t h[8], const unsigned char *p, size_t n) = blocks_c;

/* Chosen before main, so worker threads only ever read the pointer. */
__attribute__((constructor)) static void choose_blocks(void)
{
    hg_sha256_set_accel(true);
}

bool hg_sha256_accelerated(void)
{
    return blocks != blocks_c;
}

void hg_sha256_set_accel(bool on)
{
    blocks = blocks_c;
#ifdef HAVE_X86_SHA
    if (on && cpu_has_sha())
        blocks = blocks_x86;
#else
    (void)on;
#endif
}

void hg_sha256_init(struct hg_sha256 *s)
{
    static const uint32_t iv[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                    0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
    memcpy(s->h, iv, sizeof(iv));
    s->total = 0;
    s->buffered = 0;
}

void hg_sha256_update(struct hg_sha256 *s, const void *data, size_t len)
{
    const unsigned char *p = data;
    s->total += len;
    if (s->buffered > 0) {
        size_t take = HG_SHA256_BLOCK - s->buffered;
        if (take > len)
            take = len;
        memcpy(s->buf + s->buffered, p, take);
        s->buffered += take;
        p += take;
        len -= take;
        if (s->buffered < HG_SHA256_BLOCK)
            return;
        blocks(s->h, s->buf, 1);
        s->buffered = 0;
    }
    size_t full = len / HG_SHA256_BLOCK;
    if (full > 0) {
        blocks(s->h, p, full);
        p += full * HG_SHA256_BLOCK;
        len -= full * HG_SHA256_BLOCK;
    }
    if (len > 0) {
        memcpy(s->buf, p, len);
        s->buffered = len;
    }
}

void hg_sha256_final(struct hg_sha256 *s, unsigned char out[HG_SHA256_LEN])
{
    uint64_t bits = s->total * 8;
    s->buf[s->buffered++] = 0x80;
    if (s->buffered > HG_SHA256_BLOCK - 8) {
        memset(s->buf + s->buffered, 0, HG_SHA256_BLOCK - s->buffered);
        blocks(s->h, s->buf, 1);
        s->buffered = 0;
    }
    memset(s->buf + s->buffered, 0, HG_SHA256_BLOCK - 8 - s->buffered);
    store_be32(s->buf + 56, (uint32_t)(bits >> 32));
    store_be32(s->buf + 60, (uint32_t)bits);
    blocks(s->h, s->buf, 1);
    for (int i = 0; i < 8; i++)
        store_be32(out + 4 * i, s->h[i]);
}

void hg_sha256(const void *data, size_t len, unsigned char out[HG_SHA256_LEN])
{
    struct hg_sha256 s;
    hg_sha256_init(&s);
    hg_sha256_update(&s, data, len);
    hg_sha256_final(&s, out);
}

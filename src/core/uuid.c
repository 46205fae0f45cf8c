/* Per-thread xoshiro256** seeded from the kernel: request ids need uniqueness, not secrecy. */
#include <stdbool.h>
#include <sys/random.h>
#include <time.h>

#include "core/uuid.h"

static _Thread_local uint64_t s[4];
static _Thread_local bool seeded;

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t hg_random_u64(void)
{
    if (!seeded) {
        if (getrandom(s, sizeof(s), 0) != (ssize_t)sizeof(s)) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            s[0] = (uint64_t)ts.tv_nsec ^ 0x9E3779B97F4A7C15ull;
            s[1] = (uint64_t)(uintptr_t)&ts;
            s[2] = (uint64_t)ts.tv_sec;
            s[3] = 0xD1B54A32D192ED03ull;
        }
        seeded = true;
    }
    uint64_t r = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

void hg_uuid_v4(char out[HG_UUID_STRLEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[16];
    uint64_t a = hg_random_u64(), c = hg_random_u64();
    for (int i = 0; i < 8; i++) {
        b[i] = (unsigned char)(a >> (i * 8));
        b[8 + i] = (unsigned char)(c >> (i * 8));
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    int o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 15];
    }
    out[o] = '\0';
}

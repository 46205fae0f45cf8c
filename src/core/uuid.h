/* Random identifiers: UUIDv4 for request ids. */
#ifndef HG_CORE_UUID_H
#define HG_CORE_UUID_H

#include <stdint.h>

#define HG_UUID_STRLEN 36

/* Write a random UUIDv4 as 36 lowercase characters plus NUL. Thread-safe, never blocks. */
void hg_uuid_v4(char out[HG_UUID_STRLEN + 1]);
/* 64 random bits from a per-thread generator seeded by getrandom(2). Not for secrets. */
uint64_t hg_random_u64(void);

#endif

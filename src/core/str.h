/* Bounded, checked string helpers (no atoi, no unchecked strtol). */
#ifndef HG_CORE_STR_H
#define HG_CORE_STR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Parse a whole decimal string into [min, max]. 0 or HG_ERR_PARSE. */
int hg_str_to_i64(const char *s, int64_t min, int64_t max, int64_t *out);
/* Same for a length-delimited span. */
int hg_span_to_u64(const char *s, size_t n, uint64_t max, uint64_t *out);
/* Parse sizes like "3MiB", "512k", "1048576" (k/m/g and KiB/MiB/GiB, powers of 1024). */
int hg_str_to_size(const char *s, uint64_t *out);
/* Parse durations like "30s", "250ms", "5m", "1h"; a bare number is seconds. Result in ms. */
int hg_str_to_ms(const char *s, uint64_t *out);
/* Constant-time comparison of two equal-length buffers; false when lengths differ. */
bool hg_ct_equal(const void *a, size_t alen, const void *b, size_t blen);
/* Case-insensitive equality of a span and a C string. */
bool hg_span_ieq(const char *s, size_t n, const char *lit);
/* Lowercase hex of n bytes into out (2n+1 bytes). */
void hg_hex(char *out, const unsigned char *in, size_t n);

#endif

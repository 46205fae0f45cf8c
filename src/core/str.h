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
/* Zero key material; the stores are not optimized away (volatile). */
void hg_wipe(void *p, size_t n);
/* Case-insensitive equality of a span and a C string. */
bool hg_span_ieq(const char *s, size_t n, const char *lit);
/* Lowercase hex of n bytes into out (2n+1 bytes). */
void hg_hex(char *out, const unsigned char *in, size_t n);

/* hg_percent_decode flags. */
#define HG_PERCENT_PLUS    1u /* '+' is a space (application/x-www-form-urlencoded, query strings) */
#define HG_PERCENT_LENIENT 2u /* a '%' without two hex digits after it is kept as it is, not an error */

/*
 * Decode the percent-escapes (%XX, hex digits of either case) of in[0..len) into out, which has
 * room for cap bytes; out may be in itself (the result is never longer than the input, so cap =
 * len always fits). The result is not NUL-terminated and may contain NUL bytes (%00). Returns 0
 * and the decoded length in *out_len; HG_ERR_PARSE for a malformed escape (a '%' not followed by
 * two hex digits) unless flags has HG_PERCENT_LENIENT, with *out_len = the offset of that '%' in
 * `in` (for the caller's error message); HG_ERR_TOO_BIG when the result is longer than cap
 * (*out_len untouched). On an error out holds a partial result.
 */
int hg_percent_decode(const char *in, size_t len, unsigned flags, char *out, size_t cap,
                      size_t *out_len);

#endif

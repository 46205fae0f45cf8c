/* Clocks and RFC 3339 formatting. */
#ifndef HG_CORE_TIME_H
#define HG_CORE_TIME_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

/* Wall clock, nanoseconds since the Unix epoch. */
uint64_t hg_time_now_ns(void);
/* Monotonic clock, nanoseconds. */
uint64_t hg_time_mono_ns(void);
/* Format `ns` (Unix epoch) as RFC 3339 UTC with `frac` fractional digits (0, 3, 6 or 9). */
size_t hg_time_rfc3339(char *out, size_t cap, uint64_t ns, int frac);
/* Format the UTC date of `ns` as yyyy-MM-dd (11 bytes with NUL). */
void hg_time_date(char out[11], uint64_t ns);

#endif

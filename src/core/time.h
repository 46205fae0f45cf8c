/* Clocks, RFC 3339 formatting and parsing, civil-date arithmetic. */
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

/*
 * Parse the RFC 3339 date-time s[0..n) into Unix milliseconds (negative before 1970):
 * YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM), 'T' and 'Z' in either case, digits past
 * milliseconds dropped, a leap second (:60) read as :59. Returns 0, or HG_ERR_PARSE (then *ms is
 * untouched) for anything else, including a date that does not exist (02-30).
 */
int hg_time_parse_rfc3339(const char *s, size_t n, int64_t *ms);

/* Days since 1970-01-01 of a proleptic Gregorian date (month 1..12, day 1..31, not checked). */
int64_t hg_time_days_from_civil(int64_t y, unsigned m, unsigned d);
/* The inverse: proleptic Gregorian year, month (1..12) and day (1..31) of a day count. */
void hg_time_civil_from_days(int64_t days, int64_t *y, unsigned *m, unsigned *d);

#endif

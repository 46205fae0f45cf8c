/* Clocks, RFC 3339 formatting and parsing, civil-date arithmetic. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/err.h"
#include "core/time.h"

uint64_t hg_time_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t hg_time_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Write v as exactly `width` decimal digits (the low ones) at p. */
static void put_digits(char *p, uint64_t v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
}

/*
 * Proleptic Gregorian civil date of a day count since 1970-01-01 (the "days from civil" inverse
 * in Howard Hinnant's date algorithms). Formatting is on every event's path; gmtime_r takes the
 * timezone lock and snprintf parses its format each time, together most of the cost.
 */
void hg_time_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

size_t hg_time_rfc3339(char *out, size_t cap, uint64_t ns, int frac)
{
    uint64_t secs = ns / 1000000000ull;
    uint64_t sub = ns % 1000000000ull;
    int64_t y;
    unsigned mo, d;
    hg_time_civil_from_days((int64_t)(secs / 86400), &y, &mo, &d);
    unsigned sod = (unsigned)(secs % 86400);
    char buf[32];
    /* yyyy-MM-ddTHH:mm:ss: years past 9999 keep their low four digits, as %04d of a wider field would not. */
    put_digits(buf, (uint64_t)y % 10000, 4);
    buf[4] = '-';
    put_digits(buf + 5, mo, 2);
    buf[7] = '-';
    put_digits(buf + 8, d, 2);
    buf[10] = 'T';
    put_digits(buf + 11, sod / 3600, 2);
    buf[13] = ':';
    put_digits(buf + 14, sod / 60 % 60, 2);
    buf[16] = ':';
    put_digits(buf + 17, sod % 60, 2);
    size_t n = 19;
    if (frac == 3 || frac == 6 || frac == 9) {
        buf[n++] = '.';
        uint64_t v = frac == 3 ? sub / 1000000 : frac == 6 ? sub / 1000 : sub;
        put_digits(buf + n, v, frac);
        n += (size_t)frac;
    }
    buf[n++] = 'Z';
    /* snprintf's contract: truncate to cap - 1 and NUL-terminate, return the full length. */
    if (cap > 0) {
        size_t k = n < cap - 1 ? n : cap - 1;
        memcpy(out, buf, k);
        out[k] = '\0';
    }
    return n;
}

void hg_time_date(char out[11], uint64_t ns)
{
    time_t secs = (time_t)(ns / 1000000000ull);
    struct tm tm;
    gmtime_r(&secs, &tm);
    unsigned y = (unsigned)(tm.tm_year + 1900) % 10000u, m = (unsigned)(tm.tm_mon + 1) % 100u, d = (unsigned)tm.tm_mday % 100u;
    out[0] = (char)('0' + y / 1000); out[1] = (char)('0' + y / 100 % 10);
    out[2] = (char)('0' + y / 10 % 10); out[3] = (char)('0' + y % 10);
    out[4] = '-'; out[5] = (char)('0' + m / 10); out[6] = (char)('0' + m % 10);
    out[7] = '-'; out[8] = (char)('0' + d / 10); out[9] = (char)('0' + d % 10);
    out[10] = '\0';
}

/* Howard Hinnant's days_from_civil: the inverse of hg_time_civil_from_days. */
int64_t hg_time_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * ((int64_t)m + (m > 2 ? -3 : 9)) + 2) / 5 + (int64_t)d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* n decimal digits at s into *out; false when one is not a digit. */
static bool digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

int hg_time_parse_rfc3339(const char *s, size_t n, int64_t *ms)
{
    static const int mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    int y, mo, d, h, mi, sec, frac = 0, off = 0;

    if (s == NULL || n < 20 || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' ||
        !digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't') || !digits(s + 11, 2, &h) || s[13] != ':' ||
        !digits(s + 14, 2, &mi) || s[16] != ':' || !digits(s + 17, 2, &sec))
        return HG_ERR_PARSE;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || sec > 60)
        return HG_ERR_PARSE;
    if (mo == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)))
        return HG_ERR_PARSE;
    if (sec == 60)
        sec = 59; /* a leap second: Unix time has none */
    size_t i = 19;
    if (s[i] == '.') {
        size_t start = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            if (i - start < 3)
                frac = frac * 10 + (s[i] - '0');
            i++;
        }
        if (i == start)
            return HG_ERR_PARSE;
        for (size_t k = i - start; k < 3; k++)
            frac *= 10;
    }
    if (i < n && (s[i] == 'Z' || s[i] == 'z')) {
        i++;
    } else if (i + 6 == n && (s[i] == '+' || s[i] == '-')) {
        int oh, om;
        if (!digits(s + i + 1, 2, &oh) || s[i + 3] != ':' || !digits(s + i + 4, 2, &om) || oh > 23 || om > 59)
            return HG_ERR_PARSE;
        off = (oh * 60 + om) * 60 * (s[i] == '-' ? -1 : 1);
        i += 6;
    } else {
        return HG_ERR_PARSE;
    }
    if (i != n)
        return HG_ERR_PARSE;
    int64_t secs = hg_time_days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + sec - off;
    *ms = secs * 1000 + frac;
    return 0;
}

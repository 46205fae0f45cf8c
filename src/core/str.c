/* Bounded, checked string helpers. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/err.h"
#include "core/hmac.h"
#include "core/str.h"

int hg_str_to_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    if (s == NULL || *s == '\0')
        return HG_ERR_PARSE;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end != '\0' || v < min || v > max)
        return HG_ERR_PARSE;
    *out = v;
    return 0;
}

int hg_span_to_u64(const char *s, size_t n, uint64_t max, uint64_t *out)
{
    if (n == 0 || n > 20)
        return HG_ERR_PARSE;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return HG_ERR_PARSE;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return HG_ERR_PARSE;
        v = v * 10 + d;
    }
    if (v > max)
        return HG_ERR_PARSE;
    *out = v;
    return 0;
}

static int parse_num_suffix(const char *s, uint64_t *num, const char **suffix)
{
    if (s == NULL || !isdigit((unsigned char)*s))
        return HG_ERR_PARSE;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return HG_ERR_PARSE;
    while (*end == ' ')
        end++;
    *num = v;
    *suffix = end;
    return 0;
}

int hg_str_to_size(const char *s, uint64_t *out)
{
    uint64_t v;
    const char *sf;
    if (parse_num_suffix(s, &v, &sf))
        return HG_ERR_PARSE;
    uint64_t mul;
    if (*sf == '\0' || strcasecmp(sf, "b") == 0) mul = 1;
    else if (strcasecmp(sf, "k") == 0 || strcasecmp(sf, "kb") == 0 || strcasecmp(sf, "kib") == 0) mul = 1ull << 10;
    else if (strcasecmp(sf, "m") == 0 || strcasecmp(sf, "mb") == 0 || strcasecmp(sf, "mib") == 0) mul = 1ull << 20;
    else if (strcasecmp(sf, "g") == 0 || strcasecmp(sf, "gb") == 0 || strcasecmp(sf, "gib") == 0) mul = 1ull << 30;
    else return HG_ERR_PARSE;
    if (v > UINT64_MAX / mul)
        return HG_ERR_PARSE;
    *out = v * mul;
    return 0;
}

int hg_str_to_ms(const char *s, uint64_t *out)
{
    uint64_t v;
    const char *sf;
    if (parse_num_suffix(s, &v, &sf))
        return HG_ERR_PARSE;
    uint64_t mul;
    if (*sf == '\0' || strcmp(sf, "s") == 0) mul = 1000;
    else if (strcmp(sf, "ms") == 0) mul = 1;
    else if (strcmp(sf, "m") == 0 || strcmp(sf, "min") == 0) mul = 60000;
    else if (strcmp(sf, "h") == 0) mul = 3600000;
    else return HG_ERR_PARSE;
    if (v > UINT64_MAX / mul)
        return HG_ERR_PARSE;
    *out = v * mul;
    return 0;
}

bool hg_ct_equal(const void *a, size_t alen, const void *b, size_t blen)
{
    if (alen != blen)
        return false;
    const volatile unsigned char *x = a, *y = b;
    unsigned char d = 0;
    for (size_t i = 0; i < alen; i++)
        d |= x[i] ^ y[i];
    return d == 0;
}

void hg_wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;
    while (n--)
        *v++ = 0;
}

bool hg_span_ieq(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(s, lit, n) == 0;
}

void hg_hex(char *out, const unsigned char *in, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 15];
    }
    out[2 * n] = '\0';
}

int hg_percent_decode(const char *in, size_t len, unsigned flags, char *out, size_t cap,
                      size_t *out_len)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = in[i];
        if (ch == '%') {
            int hi = i + 2 < len ? hg_hex_digit((unsigned char)in[i + 1]) : -1;
            int lo = i + 2 < len ? hg_hex_digit((unsigned char)in[i + 2]) : -1;
            if (hi >= 0 && lo >= 0) {
                ch = (char)(hi << 4 | lo);
                i += 2;
            } else if (!(flags & HG_PERCENT_LENIENT)) {
                *out_len = i;
                return HG_ERR_PARSE;
            }
        } else if (ch == '+' && (flags & HG_PERCENT_PLUS)) {
            ch = ' ';
        }
        if (o == cap)
            return HG_ERR_TOO_BIG;
        out[o++] = ch;
    }
    *out_len = o;
    return 0;
}

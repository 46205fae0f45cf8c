/*
 * TZif reader (RFC 8536) and POSIX TZ footer rules: what the rules engine needs to turn an instant
 * into local wall time in a tenant's zone, thread-safely and without the process TZ.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/common.h"
#include "core/err.h"
#include "core/time.h"
#include "rules/tz.h"

#define TZ_HEADER     44
#define TZ_MAX_OFFSET (25 * 3600 + 59 * 60 + 59)  /* POSIX TZ offsets go to 24:59:59 */
#define TZ_MAX_RULE_H 167                          /* version 3: a rule time may be -167..167 h */

/* One end of daylight time in a POSIX TZ string. */
struct tz_rule {
    char form;           /* 'M' (Mm.w.d), 'J' (Jn: 1..365, Feb 29 never counted), 'N' (n: 0..365) */
    int month;           /* M: 1..12 */
    int week;            /* M: 1..5, 5 = the last such weekday of the month */
    int day;             /* M: weekday, 0 = Sunday; J and N: the day number */
    int32_t time;        /* local time of the change, seconds after midnight (may be negative or > 24 h) */
};

/* A footer rule: standard time, and optionally daylight time between two yearly changes. */
struct tz_posix {
    int32_t std_off;     /* UTC offsets, east positive (the string itself writes them west positive) */
    int32_t dst_off;
    bool has_dst;
    struct tz_rule start, end;   /* start in local standard time, end in local daylight time */
};

struct hg_tz {
    int64_t *times;      /* transition instants, strictly ascending */
    uint8_t *types;      /* local time type of each transition */
    size_t n_times;
    int32_t *offs;       /* UTC offset of each local time type */
    size_t n_types;
    bool has_footer;     /* instants at or after the last transition follow `footer` */
    struct tz_posix footer;
};

void hg_tz_free(struct hg_tz *tz)
{
    if (tz == NULL)
        return;
    free(tz->times);
    free(tz->types);
    free(tz->offs);
    free(tz);
}

/* ---------------------------------------------------------------- POSIX TZ strings */

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* A zone abbreviation: 3+ letters, or <3+ of letters, digits, '+', '-'>. */
static bool posix_name(const char **p)
{
    const char *q = *p;
    if (*q == '<') {
        const char *s = ++q;
        while (is_alpha(*q) || is_digit(*q) || *q == '+' || *q == '-')
            q++;
        if (*q != '>' || q - s < 3)
            return false;
        *p = q + 1;
        return true;
    }
    while (is_alpha(*q))
        q++;
    if (q - *p < 3)
        return false;
    *p = q;
    return true;
}

/* [+-]h[h[h]][:mm[:ss]] with the hour at most `max_h`, into signed seconds. */
static bool posix_hms(const char **p, int max_h, int32_t *out)
{
    const char *q = *p;
    int sign = 1;
    if (*q == '+' || *q == '-')
        sign = *q++ == '-' ? -1 : 1;
    int h = 0, m = 0, s = 0, nd = 0;
    while (is_digit(*q) && nd < 3) {
        h = h * 10 + (*q++ - '0');
        nd++;
    }
    if (nd == 0 || is_digit(*q) || h > max_h)
        return false;
    if (*q == ':') {
        if (!is_digit(q[1]) || !is_digit(q[2]))
            return false;
        m = (q[1] - '0') * 10 + (q[2] - '0');
        q += 3;
        if (*q == ':') {
            if (!is_digit(q[1]) || !is_digit(q[2]))
                return false;
            s = (q[1] - '0') * 10 + (q[2] - '0');
            q += 3;
        }
        if (m > 59 || s > 59)
            return false;
    }
    *out = sign * (h * 3600 + m * 60 + s);
    *p = q;
    return true;
}

static bool posix_int(const char **p, int lo, int hi, int *out)
{
    const char *q = *p;
    int v = 0, nd = 0;
    while (is_digit(*q) && nd < 4) {
        v = v * 10 + (*q++ - '0');
        nd++;
    }
    if (nd == 0 || is_digit(*q) || v < lo || v > hi)
        return false;
    *out = v;
    *p = q;
    return true;
}

static bool posix_rule(const char **p, struct tz_rule *r)
{
    const char *q = *p;
    memset(r, 0, sizeof(*r));
    if (*q == 'M') {
        q++;
        r->form = 'M';
        if (!posix_int(&q, 1, 12, &r->month) || *q++ != '.' || !posix_int(&q, 1, 5, &r->week) || *q++ != '.' ||
            !posix_int(&q, 0, 6, &r->day))
            return false;
    } else if (*q == 'J') {
        q++;
        r->form = 'J';
        if (!posix_int(&q, 1, 365, &r->day))
            return false;
    } else {
        r->form = 'N';
        if (!posix_int(&q, 0, 365, &r->day))
            return false;
    }
    r->time = 2 * 3600;   /* POSIX default: 02:00 */
    if (*q == '/') {
        q++;
        if (!posix_hms(&q, TZ_MAX_RULE_H, &r->time))
            return false;
    }
    *p = q;
    return true;
}

/* Parse the footer string s (NUL-terminated) into *f. */
static int posix_parse(const char *s, struct tz_posix *f, char *why, size_t wl)
{
    const char *p = s;
    int32_t off;
    memset(f, 0, sizeof(*f));
    if (!posix_name(&p) || !posix_hms(&p, 24, &off))
        goto bad;
    f->std_off = -off;
    if (*p == '\0')
        return 0;
    if (!posix_name(&p))
        goto bad;
    f->has_dst = true;
    f->dst_off = f->std_off + 3600;
    if (*p != ',' && *p != '\0') {
        if (!posix_hms(&p, 24, &off))
            goto bad;
        f->dst_off = -off;
    }
    if (*p == '\0') {
        /* POSIX leaves the rules to the implementation then; zic never writes such a footer. */
        snprintf(why, wl, "footer TZ string '%s' has daylight time but no rules", s);
        return HG_ERR_PARSE;
    }
    if (*p++ != ',' || !posix_rule(&p, &f->start) || *p++ != ',' || !posix_rule(&p, &f->end) || *p != '\0')
        goto bad;
    return 0;
bad:
    snprintf(why, wl, "footer TZ string '%s' is not a POSIX TZ string", s);
    return HG_ERR_PARSE;
}

static int64_t floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

static bool leap_year(int64_t y)
{
    return y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
}

/* Local time (seconds since the epoch, as if local were UTC) at which rule `r` fires in year `y`. */
static int64_t rule_local(const struct tz_rule *r, int64_t y)
{
    static const unsigned mdays[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    int64_t days;
    if (r->form == 'J') {
        days = hg_time_days_from_civil(y, 1, 1) + r->day - 1 + (leap_year(y) && r->day >= 60);
    } else if (r->form == 'N') {
        days = hg_time_days_from_civil(y, 1, 1) + r->day;
    } else {
        int64_t first = hg_time_days_from_civil(y, (unsigned)r->month, 1);
        int wd_first = (int)(((first + 4) % 7 + 7) % 7);   /* 1970-01-01 was a Thursday (4) */
        int dom = (r->day - wd_first + 7) % 7 + 7 * (r->week - 1);
        int dim = (int)mdays[r->month - 1] + (r->month == 2 && leap_year(y));
        while (dom >= dim)
            dom -= 7;
        days = first + dom;
    }
    return days * 86400 + r->time;
}

static int32_t posix_offset(const struct tz_posix *f, int64_t t)
{
    if (!f->has_dst)
        return f->std_off;
    int64_t y;
    unsigned m, d;
    hg_time_civil_from_days(floor_div(t + f->std_off, 86400), &y, &m, &d);
    /*
     * Daylight time runs from `start` (in standard time) to `end` (in daylight time). In the
     * southern hemisphere it starts in one year and ends in the next; rule times past 24 h or
     * negative can move a change across New Year. Looking at the years around t covers all.
     */
    for (int64_t yy = y - 1; yy <= y + 1; yy++) {
        int64_t s = rule_local(&f->start, yy) - f->std_off;
        int64_t e = rule_local(&f->end, yy) - f->dst_off;
        if (e <= s)
            e = rule_local(&f->end, yy + 1) - f->dst_off;
        if (t >= s && t < e)
            return f->dst_off;
    }
    return f->std_off;
}

/* ---------------------------------------------------------------- TZif */

struct tzif_counts {
    uint32_t isut, isstd, leap, time, type, chars;
};

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t be64(const unsigned char *p)
{
    return (uint64_t)be32(p) << 32 | be32(p + 4);
}

/* The header at p[0..n): counts, and the size of the data block after it (time_size 4 or 8). */
static int tzif_header(const unsigned char *p, size_t n, int time_size, struct tzif_counts *c, size_t *block,
                       char *why, size_t wl)
{
    if (n < TZ_HEADER) {
        snprintf(why, wl, "truncated header");
        return HG_ERR_PARSE;
    }
    if (memcmp(p, "TZif", 4) != 0) {
        snprintf(why, wl, "bad magic (not a TZif file)");
        return HG_ERR_PARSE;
    }
    c->isut = be32(p + 20);
    c->isstd = be32(p + 24);
    c->leap = be32(p + 28);
    c->time = be32(p + 32);
    c->type = be32(p + 36);
    c->chars = be32(p + 40);
    /* 64-bit arithmetic: six 32-bit counts times at most 12 bytes cannot overflow it. */
    uint64_t size = (uint64_t)c->time * (uint64_t)(time_size + 1) + (uint64_t)c->type * 6 + c->chars +
                    (uint64_t)c->leap * (uint64_t)(time_size + 4) + c->isstd + c->isut;
    if (size > n - TZ_HEADER) {
        snprintf(why, wl, "truncated data block (%llu bytes announced, %zu present)", (unsigned long long)size,
                 n - TZ_HEADER);
        return HG_ERR_PARSE;
    }
    *block = (size_t)size;
    return 0;
}

/* The data block at p (its size checked by tzif_header) into tz. */
static int tzif_block(const unsigned char *p, const struct tzif_counts *c, int time_size, struct hg_tz *tz,
                      char *why, size_t wl)
{
    if (c->type == 0 || c->type > 256) {
        snprintf(why, wl, "%u local time types (1..256 allowed)", (unsigned)c->type);
        return HG_ERR_PARSE;
    }
    if (c->chars == 0) {
        snprintf(why, wl, "no time zone designations");
        return HG_ERR_PARSE;
    }
    if ((c->isut != 0 && c->isut != c->type) || (c->isstd != 0 && c->isstd != c->type)) {
        snprintf(why, wl, "isutcnt %u / isstdcnt %u disagree with typecnt %u", (unsigned)c->isut,
                 (unsigned)c->isstd, (unsigned)c->type);
        return HG_ERR_PARSE;
    }
    if (c->leap != 0) {
        snprintf(why, wl, "leap-second records (a \"right/\" zone) are not supported");
        return HG_ERR_PARSE;
    }
    tz->n_times = c->time;
    tz->times = hg_xcalloc(c->time ? c->time : 1, sizeof(*tz->times));
    tz->types = hg_xcalloc(c->time ? c->time : 1, sizeof(*tz->types));
    tz->n_types = c->type;
    tz->offs = hg_xcalloc(c->type, sizeof(*tz->offs));
    const unsigned char *q = p;
    for (size_t i = 0; i < c->time; i++, q += time_size) {
        tz->times[i] = time_size == 8 ? (int64_t)be64(q) : (int64_t)(int32_t)be32(q);
        if (i > 0 && tz->times[i] <= tz->times[i - 1]) {
            snprintf(why, wl, "transition %zu is not after the one before", i);
            return HG_ERR_PARSE;
        }
    }
    for (size_t i = 0; i < c->time; i++, q++) {
        if (*q >= c->type) {
            snprintf(why, wl, "transition %zu names local time type %u of %u", i, *q, (unsigned)c->type);
            return HG_ERR_PARSE;
        }
        tz->types[i] = *q;
    }
    for (size_t i = 0; i < c->type; i++, q += 6) {
        int32_t off = (int32_t)be32(q);
        if (off < -TZ_MAX_OFFSET || off > TZ_MAX_OFFSET) {
            snprintf(why, wl, "local time type %zu has UTC offset %ld s", i, (long)off);
            return HG_ERR_PARSE;
        }
        if (q[4] > 1 || q[5] >= c->chars) {
            snprintf(why, wl, "local time type %zu is malformed", i);
            return HG_ERR_PARSE;
        }
        tz->offs[i] = off;
    }
    q += c->chars;
    for (size_t i = 0; i < (size_t)c->isstd + c->isut; i++, q++) {
        if (*q > 1) {
            snprintf(why, wl, "standard/UT indicator is not 0 or 1");
            return HG_ERR_PARSE;
        }
    }
    return 0;
}

int hg_tz_parse(const void *data, size_t n, struct hg_tz **out, char *why, size_t wl)
{
    const unsigned char *p = data;
    struct tzif_counts c;
    size_t block;
    struct hg_tz *tz = hg_xcalloc(1, sizeof(*tz));
    *out = NULL;
    int rc = tzif_header(p, n, 4, &c, &block, why, wl);
    if (rc)
        goto fail;
    char version = (char)p[4];
    if (version != '\0' && version != '2' && version != '3' && version != '4') {
        snprintf(why, wl, "unknown TZif version 0x%02x", (unsigned char)version);
        rc = HG_ERR_PARSE;
        goto fail;
    }
    if (version == '\0') {
        rc = tzif_block(p + TZ_HEADER, &c, 4, tz, why, wl);
        if (rc)
            goto fail;
        *out = tz;
        return 0;
    }
    /* Version 2+: the 32-bit block is only for old readers; the 64-bit one follows it. */
    size_t off = TZ_HEADER + block;
    rc = tzif_header(p + off, n - off, 8, &c, &block, why, wl);
    if (rc)
        goto fail;
    if (p[off + 4] != (unsigned char)version) {
        snprintf(why, wl, "the two headers disagree on the version");
        rc = HG_ERR_PARSE;
        goto fail;
    }
    rc = tzif_block(p + off + TZ_HEADER, &c, 8, tz, why, wl);
    if (rc)
        goto fail;
    off += TZ_HEADER + block;
    /* The footer: "\n<POSIX TZ string>\n". */
    const unsigned char *nl = off < n && p[off] == '\n' ? memchr(p + off + 1, '\n', n - off - 1) : NULL;
    if (nl == NULL) {
        snprintf(why, wl, "missing or truncated footer");
        rc = HG_ERR_PARSE;
        goto fail;
    }
    size_t flen = (size_t)(nl - (p + off + 1));
    char footer[128];
    if (flen >= sizeof(footer) || memchr(p + off + 1, '\0', flen)) {
        snprintf(why, wl, "footer TZ string is not a POSIX TZ string");
        rc = HG_ERR_PARSE;
        goto fail;
    }
    memcpy(footer, p + off + 1, flen);
    footer[flen] = '\0';
    if (flen > 0) {
        rc = posix_parse(footer, &tz->footer, why, wl);
        if (rc)
            goto fail;
        tz->has_footer = true;
    }
    *out = tz;
    return 0;
fail:
    hg_tz_free(tz);
    return rc;
}

int32_t hg_tz_offset(const struct hg_tz *tz, int64_t t)
{
    if (tz == NULL)
        return 0;
    size_t n = tz->n_times;
    if (n == 0 || (tz->has_footer && t >= tz->times[n - 1]))
        return tz->has_footer ? posix_offset(&tz->footer, t) : tz->offs[0];
    /* RFC 8536 3.2: before the first transition, local time type 0. */
    if (t < tz->times[0])
        return tz->offs[0];
    size_t lo = 0, hi = n;   /* the last transition <= t is in [lo, hi) */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (tz->times[mid] <= t)
            lo = mid;
        else
            hi = mid;
    }
    return tz->offs[tz->types[lo]];
}

/* ---------------------------------------------------------------- files */

/* Read the whole regular file at `path` (at most HG_TZ_MAX_FILE bytes). -errno, or HG_ERR_TOO_BIG. */
static int read_file(const char *path, unsigned char **data, size_t *n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = 0;
    unsigned char *buf = NULL;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
        goto out;
    }
    /* One byte more than allowed, so a file that grew past the cap is seen as too big. */
    buf = hg_xmalloc(HG_TZ_MAX_FILE + 1);
    size_t got = 0;
    while (got <= HG_TZ_MAX_FILE) {
        ssize_t r = read(fd, buf + got, HG_TZ_MAX_FILE + 1 - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            goto out;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    if (got > HG_TZ_MAX_FILE) {
        rc = HG_ERR_TOO_BIG;
        goto out;
    }
    *data = buf;
    *n = got;
    buf = NULL;
out:
    free(buf);
    close(fd);
    return rc;
}

int hg_tz_load_file(const char *path, struct hg_tz **out, char *why, size_t wl)
{
    unsigned char *data = NULL;
    size_t n = 0;
    *out = NULL;
    int rc = read_file(path, &data, &n);
    if (rc == HG_ERR_TOO_BIG) {
        snprintf(why, wl, "%s: larger than %u bytes", path, HG_TZ_MAX_FILE);
        return HG_ERR_PARSE;
    }
    if (rc) {
        snprintf(why, wl, "%s: %s", path, strerror(-rc));
        return rc == -ENOENT || rc == -ENOTDIR || rc == -EISDIR ? HG_ERR_NOT_FOUND : rc;
    }
    char reason[192];
    rc = hg_tz_parse(data, n, out, reason, sizeof(reason));
    free(data);
    if (rc)
        snprintf(why, wl, "%s is not a valid TZif file: %s", path, reason);
    return rc;
}

static bool valid_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > HG_TZ_NAME_MAX || name[0] == '/' || strstr(name, "..") != NULL)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!(is_alpha(c) || is_digit(c) || c == '/' || c == '_' || c == '-' || c == '+'))
            return false;
    }
    return true;
}

int hg_tz_load(const char *name, struct hg_tz **out, char *why, size_t wl)
{
    *out = NULL;
    if (!valid_name(name)) {
        snprintf(why, wl, "'%s' is not a time zone name (IANA names such as America/New_York: "
                 "A-Z a-z 0-9 / _ - +, no leading '/', no '..')", name);
        return HG_ERR_INVALID;
    }
    if (strcmp(name, "UTC") == 0) {
        struct hg_tz *tz = hg_xcalloc(1, sizeof(*tz));
        tz->offs = hg_xcalloc(1, sizeof(*tz->offs));
        tz->n_types = 1;
        *out = tz;
        return 0;
    }
    const char *dir = getenv("TZDIR");
    if (dir == NULL || *dir == '\0')
        dir = HG_TZ_DIR;
    char path[4096];
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path)) {
        snprintf(why, wl, "unknown time zone '%s' (path too long)", name);
        return HG_ERR_NOT_FOUND;
    }
    char reason[384];
    int rc = hg_tz_load_file(path, out, reason, sizeof(reason));
    if (rc == HG_ERR_NOT_FOUND)
        snprintf(why, wl, "unknown time zone '%s'", name);
    else if (rc)
        snprintf(why, wl, "time zone '%s': %s", name, reason);
    return rc;
}

/*
 * Enrichment rules: case-folded keyword search with word boundaries and POSIX regexes over the
 * text of an event, giving it a priority class and tags; business hours in the tenant's time zone
 * decide whether the *_after_hours rules apply. Built by the config loader, then frozen.
 */
#include <regex.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/common.h"
#include "core/err.h"
#include "core/time.h"
#include "rules/rules.h"
#include "rules/tz.h"

#define RULES_MAX_KEYWORDS 1024     /* keywords in one key; an env value has no line cap */
#define RULES_MAX_REGEX    4096     /* bytes of one pattern */
#define RULES_TAG_MAX      64       /* bytes of a tag name */
#define RULES_STACK_TEXT   4096     /* folded text up to this size needs no heap */
#define RULES_DAY_MINUTES  1440
#define RULES_WEEK_MINUTES (7 * RULES_DAY_MINUTES)

static const char *const class_names[HG_RULES_N_CLASSES] = { "low", "medium", "high", "emergency" };
static const int class_priorities[HG_RULES_N_CLASSES] = {
    HG_RULES_PRIORITY_LOW, HG_RULES_PRIORITY_MEDIUM, HG_RULES_PRIORITY_HIGH, HG_RULES_PRIORITY_EMERGENCY,
};

struct keyword {
    char *text;          /* folded (see fold_append), without the '*' marks */
    size_t len;
    bool bound_start;    /* the char before a hit must not be a word char */
    bool bound_end;      /* the char after a hit must not be a word char */
};

/* What one config key compiled to. */
struct entry {
    char *key;           /* "emergency", "high_regex", "high_after_hours", "tag.gas", "tag_regex.gas" */
    int cls;             /* enum hg_rules_class, or -1 for a tag entry */
    bool after_hours;    /* a *_after_hours key: matches only outside business hours */
    const char *tag;     /* tag entries: the name, inside `key` */
    unsigned tag_rank;   /* tag entries: index into hg_rules.tags (after seal) */
    struct keyword *kw;
    size_t n_kw;
    regex_t re;
    bool has_re;
};

struct hg_rules {
    struct entry *entries;   /* after seal: highest class first, tag entries last */
    size_t n;
    const char **tags;       /* after seal: distinct tag names, sorted (point into entries) */
    size_t n_tags;
    struct hg_tz *tz;        /* the `timezone` key's zone; NULL = UTC */
    bool has_hours;          /* the `hours` key is set, so an event can be "after hours" */
    /* Business hours: bit m is set when minute m of the local week (Monday 00:00 = 0) is in them. */
    uint8_t open[RULES_WEEK_MINUTES / 8];
    bool sealed;
};

const char *hg_rules_class_name(int cls)
{
    return cls >= 0 && cls < HG_RULES_N_CLASSES ? class_names[cls] : class_names[HG_RULES_MEDIUM];
}

int hg_rules_class_priority(int cls)
{
    return cls >= 0 && cls < HG_RULES_N_CLASSES ? class_priorities[cls] : HG_RULES_PRIORITY_MEDIUM;
}

/* ---------------------------------------------------------------- UTF-8 and case folding */

/* Decode one code point; returns its length, or 0 for a byte that does not start valid UTF-8. */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    if (n == 0)
        return 0;
    unsigned char c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t len;
    uint32_t v, min;
    if (c >= 0xC2 && c <= 0xDF) { len = 2; v = c & 0x1F; min = 0x80; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; v = c & 0x0F; min = 0x800; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; v = c & 0x07; min = 0x10000; }
    else return 0;
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = v;
    return len;
}

static size_t utf8_encode(uint32_t c, char *out)
{
    if (c < 0x80) {
        out[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        out[0] = (char)(0xC0 | (c >> 6));
        out[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        out[0] = (char)(0xE0 | (c >> 12));
        out[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        out[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (c >> 18));
    out[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    out[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

/*
 * Simple (one-to-one) lower-casing for the scripts customers of our tenants write in: ASCII,
 * Latin-1, Latin Extended-A, Latin Extended Additional (Vietnamese), Greek and Cyrillic. Every
 * mapping keeps or shortens the UTF-8 length, so a folded copy never outgrows its source.
 * Accents are kept: "gás" and "gas" stay different words.
 */
static uint32_t fold_cp(uint32_t c)
{
    if (c < 0x80)
        return (c >= 'A' && c <= 'Z') ? c + 32 : c;
    if (c >= 0xC0 && c <= 0xDE && c != 0xD7)
        return c + 32;
    if (c >= 0x100 && c <= 0x17F) {
        if (c == 0x130)
            return 'i';
        if (c == 0x178)
            return 0xFF;
        if (c <= 0x12F || (c >= 0x132 && c <= 0x137) || (c >= 0x14A && c <= 0x177))
            return c | 1;   /* upper case even, lower case odd */
        if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E))
            return (c & 1) ? c + 1 : c;   /* upper case odd, lower case even */
        return c;
    }
    if (c >= 0x386 && c <= 0x3AB) {
        if (c >= 0x391 && c != 0x3A2)
            return c + 32;
        if (c == 0x386)
            return 0x3AC;
        if (c >= 0x388 && c <= 0x38A)
            return c + 37;
        if (c == 0x38C)
            return 0x3CC;
        if (c == 0x38E || c == 0x38F)
            return c + 63;
        return c;
    }
    if (c == 0x3C2)
        return 0x3C3;   /* final sigma folds to sigma */
    if (c >= 0x400 && c <= 0x40F)
        return c + 80;
    if (c >= 0x410 && c <= 0x42F)
        return c + 32;
    if ((c >= 0x460 && c <= 0x481) || (c >= 0x48A && c <= 0x4BF))
        return c | 1;
    if (c == 0x1E9E)
        return 0xDF;    /* capital sharp s */
    if ((c >= 0x1E00 && c <= 0x1E95) || (c >= 0x1EA0 && c <= 0x1EFF))
        return c | 1;
    return c;
}

static bool is_blank_cp(uint32_t c)
{
    return c == ' ' || (c >= '\t' && c <= '\r') || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Invisible characters that would otherwise split a word ("fl<soft hyphen>ooding"). */
static bool is_ignorable_cp(uint32_t c)
{
    return c == 0xAD || (c >= 0x200B && c <= 0x200D) || c == 0x2060 || c == 0xFEFF || (c >= 0xFE00 && c <= 0xFE0F);
}

/*
 * Word characters for keyword boundaries: ASCII letters, digits and '_', and every other code
 * point except Latin-1 punctuation, general punctuation, symbol blocks, CJK punctuation and
 * emoji. Bytes that are not valid UTF-8 count as word characters (no boundary is invented).
 */
static bool is_word_cp(uint32_t c)
{
    if (c < 0x80)
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    if (c <= 0xBF || c == 0xD7 || c == 0xF7)
        return false;
    if ((c >= 0x2000 && c <= 0x206F) || (c >= 0x2190 && c <= 0x2BFF) || (c >= 0x3000 && c <= 0x303F))
        return false;
    if ((c >= 0xFE00 && c <= 0xFE0F) || (c >= 0xFF01 && c <= 0xFF0F) || (c >= 0x1F000 && c <= 0x1FAFF))
        return false;
    return true;
}

/* Is the character ending just before `p` (not before `start`) a word character? */
static bool word_before(const char *start, const char *p)
{
    if (p == start)
        return false;
    const char *q = p - 1;
    while (q > start && p - q < 4 && ((unsigned char)*q & 0xC0) == 0x80)
        q--;
    uint32_t cp;
    size_t len = utf8_decode((const unsigned char *)q, (size_t)(p - q), &cp);
    if (len != (size_t)(p - q))
        return ((unsigned char)p[-1]) >= 0x80;
    return is_word_cp(cp);
}

/* Is the character starting at `p` (before `end`) a word character? */
static bool word_at(const char *p, const char *end)
{
    if (p >= end)
        return false;
    uint32_t cp;
    if (utf8_decode((const unsigned char *)p, (size_t)(end - p), &cp) == 0)
        return ((unsigned char)*p) >= 0x80;
    return is_word_cp(cp);
}

/*
 * Append the folded form of s[0..n) to out[*o..cap): lower case (fold_cp), every run of blanks
 * as one ' ', invisible characters dropped, invalid bytes copied. `*blank` carries "last output
 * was a blank" across calls. Stops early (on a character boundary) when out is full.
 */
static void fold_append(const char *s, size_t n, char *out, size_t cap, size_t *o, bool *blank)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        uint32_t cp;
        size_t len = utf8_decode(p, (size_t)(end - p), &cp);
        if (len == 0) {
            if (*o + 1 > cap)
                return;
            out[(*o)++] = (char)*p++;
            *blank = false;
            continue;
        }
        p += len;
        if (is_ignorable_cp(cp))
            continue;
        if (is_blank_cp(cp)) {
            if (!*blank && *o < cap) {
                out[(*o)++] = ' ';
                *blank = true;
            }
            continue;
        }
        char tmp[4];
        size_t tl = utf8_encode(fold_cp(cp), tmp);
        if (*o + tl > cap)
            return;
        memcpy(out + *o, tmp, tl);
        *o += tl;
        *blank = false;
    }
}

/* ---------------------------------------------------------------- building */

struct hg_rules *hg_rules_new(void)
{
    return hg_xcalloc(1, sizeof(struct hg_rules));
}

static void entry_clear(struct entry *e)
{
    for (size_t i = 0; i < e->n_kw; i++)
        free(e->kw[i].text);
    free(e->kw);
    if (e->has_re)
        regfree(&e->re);
    free(e->key);
    memset(e, 0, sizeof(*e));
}

static bool valid_tag(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > RULES_TAG_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = t[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* Split `key` into class or tag, keyword/regex kind, after hours or not. HG_ERR_NOT_FOUND / HG_ERR_PARSE. */
static int key_parse(const char *key, int *cls, bool *regex, bool *after_hours, const char **tag, char *why,
                     size_t wl)
{
    *tag = NULL;
    *cls = -1;
    *regex = false;
    *after_hours = false;
    if (strncmp(key, "tag.", 4) == 0) {
        *tag = key + 4;
    } else if (strncmp(key, "tag_regex.", 10) == 0) {
        *tag = key + 10;
        *regex = true;
    } else {
        /* <class>, <class>_regex, <class>_after_hours, <class>_after_hours_regex */
        size_t kl = strlen(key);
        for (int c = 0; c < HG_RULES_N_CLASSES; c++) {
            size_t cl = strlen(class_names[c]);
            if (kl < cl || memcmp(key, class_names[c], cl) != 0)
                continue;
            const char *rest = key + cl;
            *after_hours = strncmp(rest, "_after_hours", 12) == 0;
            if (*after_hours)
                rest += 12;
            if (*rest == '\0' || strcmp(rest, "_regex") == 0) {
                *cls = c;
                *regex = *rest != '\0';
                return 0;
            }
        }
        *after_hours = false;
        return HG_ERR_NOT_FOUND;
    }
    if (!valid_tag(*tag)) {
        snprintf(why, wl, "'%s' is not a tag name (1-%d of a-z 0-9 _ -)", *tag, RULES_TAG_MAX);
        return HG_ERR_PARSE;
    }
    return 0;
}

static bool is_ascii_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* One keyword from the span a..b (already split at commas). */
static int keyword_parse(const char *a, const char *b, struct keyword *kw, char *why, size_t wl)
{
    bool open_start = false, open_end = false;
    while (a < b && is_ascii_blank(*a))
        a++;
    while (b > a && is_ascii_blank(b[-1]))
        b--;
    if (a < b && *a == '*') {
        open_start = true;
        a++;
    }
    if (b > a && b[-1] == '*') {
        open_end = true;
        b--;
    }
    while (a < b && is_ascii_blank(*a))
        a++;
    while (b > a && is_ascii_blank(b[-1]))
        b--;
    if (a == b) {
        snprintf(why, wl, "empty keyword in list");
        return HG_ERR_PARSE;
    }
    if (memchr(a, '*', (size_t)(b - a))) {
        snprintf(why, wl, "'*' is allowed only at the start or end of a keyword");
        return HG_ERR_PARSE;
    }
    if ((size_t)(b - a) > HG_RULES_MAX_KEYWORD) {
        snprintf(why, wl, "keyword longer than %d bytes", HG_RULES_MAX_KEYWORD);
        return HG_ERR_PARSE;
    }
    char *text = hg_xmalloc((size_t)(b - a) + 1);
    size_t n = 0;
    bool blank = false;
    fold_append(a, (size_t)(b - a), text, (size_t)(b - a), &n, &blank);
    /* Blanks the ASCII trim did not see (no-break space) must not become part of the keyword. */
    size_t s = 0;
    while (s < n && text[s] == ' ')
        s++;
    while (n > s && text[n - 1] == ' ')
        n--;
    if (s == n) {
        free(text);
        snprintf(why, wl, "empty keyword in list");
        return HG_ERR_PARSE;
    }
    memmove(text, text + s, n - s);
    n -= s;
    text[n] = '\0';
    kw->text = text;
    kw->len = n;
    /* A boundary is needed only where the keyword itself ends in a word character ("#vip"). */
    kw->bound_start = !open_start && word_at(text, text + n);
    kw->bound_end = !open_end && word_before(text, text + n);
    return 0;
}

static int keywords_parse(const char *v, struct entry *e, char *why, size_t wl)
{
    const char *p = v;
    for (;;) {
        size_t n = strcspn(p, ",");
        if (e->n_kw == RULES_MAX_KEYWORDS) {
            snprintf(why, wl, "more than %d keywords", RULES_MAX_KEYWORDS);
            return HG_ERR_PARSE;
        }
        e->kw = hg_xrealloc(e->kw, (e->n_kw + 1) * sizeof(*e->kw));
        int rc = keyword_parse(p, p + n, &e->kw[e->n_kw], why, wl);
        if (rc)
            return rc;
        e->n_kw++;
        if (p[n] == '\0')
            return 0;
        p += n + 1;
    }
}

static int regex_parse(const char *v, struct entry *e, char *why, size_t wl)
{
    if (strlen(v) > RULES_MAX_REGEX) {
        snprintf(why, wl, "regex longer than %d bytes", RULES_MAX_REGEX);
        return HG_ERR_PARSE;
    }
    /*
     * REG_NOSUB: we only ask "does it match", which lets glibc skip sub-match bookkeeping.
     * The process runs in the C locale, so REG_ICASE folds ASCII only.
     */
    int rc = regcomp(&e->re, v, REG_EXTENDED | REG_ICASE | REG_NOSUB);
    if (rc != 0) {
        char msg[160];
        regerror(rc, &e->re, msg, sizeof(msg));
        regfree(&e->re);
        snprintf(why, wl, "bad regex: %s", msg);
        return HG_ERR_PARSE;
    }
    e->has_re = true;
    return 0;
}

static bool value_empty(const char *v)
{
    while (is_ascii_blank(*v))
        v++;
    return *v == '\0';
}

/* Distinct tag names among entries other than `skip`, plus `extra` if not among them. */
static size_t count_tags(const struct hg_rules *r, size_t skip, const char *extra)
{
    size_t n = 0;
    bool extra_seen = extra == NULL;
    for (size_t i = 0; i < r->n; i++) {
        if (i == skip || r->entries[i].tag == NULL)
            continue;
        bool dup = false;
        for (size_t j = 0; j < i && !dup; j++)
            dup = j != skip && r->entries[j].tag && strcmp(r->entries[j].tag, r->entries[i].tag) == 0;
        n += !dup;
        if (extra && strcmp(r->entries[i].tag, extra) == 0)
            extra_seen = true;
    }
    return n + !extra_seen;
}

/* ---------------------------------------------------------------- time zone and business hours */

static const char *const day_names[7] = { "mon", "tue", "wed", "thu", "fri", "sat", "sun" };

static bool is_ascii_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_ascii_digit(char c)
{
    return c >= '0' && c <= '9';
}

static void skip_blanks(const char **p, const char *end)
{
    while (*p < end && is_ascii_blank(**p))
        (*p)++;
}

/* One item of an `hours` list, for error messages: its text, and where it is being read. */
struct hours_item {
    const char *a, *b;   /* trimmed, without the commas */
    const char *p;       /* read position */
};

static int hours_error(const struct hours_item *it, char *why, size_t wl, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* "<what> in '<item>'": every `hours` error quotes the item it is about. Returns HG_ERR_PARSE. */
static int hours_error(const struct hours_item *it, char *why, size_t wl, const char *fmt, ...)
{
    char what[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    snprintf(why, wl, "%s in '%.*s'", what, (int)HG_MIN((size_t)(it->b - it->a), 80), it->a);
    return HG_ERR_PARSE;
}

/* Length of the token at p for an error message: at least one byte when there is one, at most 40. */
static int token_len(const char *p, const char *q, const char *end)
{
    size_t n = (size_t)(q - p);
    if (n == 0 && p < end)
        n = 1;
    return (int)HG_MIN(n, 40);
}

/* A day name (mon..sun, any case) at it->p: 0 (Monday) .. 6 (Sunday). */
static int hours_day(struct hours_item *it, int *day, char *why, size_t wl)
{
    const char *q = it->p;
    while (q < it->b && is_ascii_alpha(*q))
        q++;
    size_t n = (size_t)(q - it->p);
    for (int d = 0; d < 7 && n == 3; d++) {
        if (strncasecmp(it->p, day_names[d], 3) == 0) {
            *day = d;
            it->p = q;
            return 0;
        }
    }
    return hours_error(it, why, wl, "unknown day '%.*s' (mon tue wed thu fri sat sun)", token_len(it->p, q, it->b),
                       it->p);
}

/* H:MM or HH:MM at it->p, 00:00 .. 24:00, as minutes after midnight. */
static int hours_time(struct hours_item *it, int *minutes, char *why, size_t wl)
{
    const char *q = it->p;
    while (q < it->b && (is_ascii_digit(*q) || *q == ':'))
        q++;
    const char *t = it->p;
    size_t n = (size_t)(q - t);
    int h = -1, m = -1;
    if (n == 4 && t[1] == ':')
        h = t[0] - '0';
    else if (n == 5 && t[2] == ':' && is_ascii_digit(t[0]) && is_ascii_digit(t[1]))
        h = (t[0] - '0') * 10 + (t[1] - '0');
    if (h >= 0 && is_ascii_digit(t[0]) && is_ascii_digit(t[n - 2]) && is_ascii_digit(t[n - 1]))
        m = (t[n - 2] - '0') * 10 + (t[n - 1] - '0');
    if (m < 0 || m > 59 || h > 24 || (h == 24 && m != 0))
        return hours_error(it, why, wl, "bad time '%.*s' (HH:MM, 00:00 to 24:00)", token_len(t, q, it->b), t);
    *minutes = h * 60 + m;
    it->p = q;
    return 0;
}

static void hours_open(uint8_t *open, int day, int from, int to)
{
    for (int m = from; m < to; m++) {
        unsigned i = (unsigned)(day * RULES_DAY_MINUTES + m);
        open[i / 8] |= (uint8_t)(1u << (i % 8));
    }
}

/*
 * One item, "<days> HH:MM-HH:MM" or (after an item with days) "HH:MM-HH:MM" for the same days,
 * into `open`. *d1 and *d2 carry the days from item to item (-1 = none yet).
 */
static int hours_item(struct hours_item *it, int *d1, int *d2, uint8_t *open, char *why, size_t wl)
{
    int rc, from, to;
    if (it->p < it->b && is_ascii_alpha(*it->p)) {
        if ((rc = hours_day(it, d1, why, wl)))
            return rc;
        *d2 = *d1;
        skip_blanks(&it->p, it->b);
        if (it->p < it->b && *it->p == '-') {
            it->p++;
            skip_blanks(&it->p, it->b);
            if ((rc = hours_day(it, d2, why, wl)))
                return rc;
        }
        skip_blanks(&it->p, it->b);
        if (it->p == it->b)
            return hours_error(it, why, wl, "days without a time span (HH:MM-HH:MM)");
    } else if (*d1 < 0) {
        return hours_error(it, why, wl, "no days before the first time span (mon..sun, or a range like mon-fri)");
    }
    const char *span = it->p;
    if ((rc = hours_time(it, &from, why, wl)))
        return rc;
    skip_blanks(&it->p, it->b);
    if (it->p == it->b || *it->p != '-')
        return hours_error(it, why, wl, "a time span is HH:MM-HH:MM");
    it->p++;
    skip_blanks(&it->p, it->b);
    if ((rc = hours_time(it, &to, why, wl)))
        return rc;
    int span_len = (int)(it->p - span);
    skip_blanks(&it->p, it->b);
    if (it->p != it->b)
        return hours_error(it, why, wl, "unexpected '%.*s'", token_len(it->p, it->b, it->b), it->p);
    if (from == RULES_DAY_MINUTES)
        return hours_error(it, why, wl, "span '%.*s' starts at 24:00 (24:00 can only end a span)", span_len, span);
    if (from == to)
        return hours_error(it, why, wl, "span '%.*s' is empty (a whole day is 00:00-24:00)", span_len, span);
    for (int d = *d1;; d = (d + 1) % 7) {
        if (from < to) {
            hours_open(open, d, from, to);
        } else {
            /* Past midnight: the rest of this day and the start of the next (Sunday night -> Monday). */
            hours_open(open, d, from, RULES_DAY_MINUTES);
            hours_open(open, (d + 1) % 7, 0, to);
        }
        if (d == *d2)
            break;
    }
    return 0;
}

/* The `hours` value into `open` (all closed first). */
static int hours_parse(const char *v, uint8_t *open, char *why, size_t wl)
{
    int d1 = -1, d2 = -1;
    memset(open, 0, RULES_WEEK_MINUTES / 8);
    const char *p = v;
    for (;;) {
        size_t n = strcspn(p, ",");
        struct hours_item it = { p, p + n, p };
        skip_blanks(&it.a, it.b);
        while (it.b > it.a && is_ascii_blank(it.b[-1]))
            it.b--;
        it.p = it.a;
        if (it.a == it.b) {
            snprintf(why, wl, "empty item in list");
            return HG_ERR_PARSE;
        }
        int rc = hours_item(&it, &d1, &d2, open, why, wl);
        if (rc)
            return rc;
        if (p[n] == '\0')
            return 0;
        p += n + 1;
    }
}

static int timezone_set(struct hg_rules *r, const char *value, char *why, size_t wl)
{
    const char *a = value, *b = value + strlen(value);
    skip_blanks(&a, b);
    while (b > a && is_ascii_blank(b[-1]))
        b--;
    struct hg_tz *tz = NULL;
    if (a < b) {
        char name[HG_TZ_NAME_MAX + 2];
        snprintf(name, sizeof(name), "%.*s", (int)HG_MIN((size_t)(b - a), sizeof(name) - 1), a);
        if (hg_tz_load(name, &tz, why, wl) != 0)
            return HG_ERR_PARSE;
    }
    hg_tz_free(r->tz);
    r->tz = tz;
    return 0;
}

static int hours_set(struct hg_rules *r, const char *value, char *why, size_t wl)
{
    if (value_empty(value)) {
        r->has_hours = false;
        memset(r->open, 0, sizeof(r->open));
        return 0;
    }
    uint8_t open[sizeof(r->open)];
    int rc = hours_parse(value, open, why, wl);
    if (rc)
        return rc;
    memcpy(r->open, open, sizeof(open));
    r->has_hours = true;
    return 0;
}

static int64_t floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

bool hg_rules_after_hours(const struct hg_rules *r, int64_t t)
{
    if (r == NULL || !r->has_hours)
        return false;
    int64_t local = t + hg_tz_offset(r->tz, t);
    int64_t days = floor_div(local, 86400);
    int64_t minute = (local - days * 86400) / 60;
    int64_t weekday = ((days + 3) % 7 + 7) % 7;   /* 1970-01-01 was a Thursday; Monday = 0 */
    size_t i = (size_t)(weekday * RULES_DAY_MINUTES + minute);
    return !((r->open[i / 8] >> (i % 8)) & 1);
}

int hg_rules_set(struct hg_rules *r, const char *key, const char *value, char *why, size_t wl)
{
    int cls;
    bool regex, after_hours;
    const char *tag;
    struct entry e;
    memset(&e, 0, sizeof(e));
    if (r->sealed)
        abort();   /* a sealed rule set is shared between threads */
    if (strcmp(key, "timezone") == 0)
        return timezone_set(r, value, why, wl);
    if (strcmp(key, "hours") == 0)
        return hours_set(r, value, why, wl);
    int rc = key_parse(key, &cls, &regex, &after_hours, &tag, why, wl);
    if (rc)
        return rc;

    size_t old = r->n;
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->entries[i].key, key) == 0)
            old = i;
    if (value_empty(value)) {
        if (old < r->n) {
            entry_clear(&r->entries[old]);
            r->entries[old] = r->entries[--r->n];
        }
        return 0;
    }
    if (tag && count_tags(r, old, tag) > HG_RULES_MAX_TAGS) {
        snprintf(why, wl, "more than %d tags in one section", HG_RULES_MAX_TAGS);
        return HG_ERR_PARSE;
    }

    e.key = hg_xstrdup(key);
    e.cls = cls;
    e.after_hours = after_hours;
    e.tag = tag ? e.key + (tag - key) : NULL;
    rc = regex ? regex_parse(value, &e, why, wl) : keywords_parse(value, &e, why, wl);
    if (rc) {
        entry_clear(&e);
        return rc;
    }
    if (old < r->n) {
        entry_clear(&r->entries[old]);
        r->entries[old] = e;
    } else {
        r->entries = hg_xrealloc(r->entries, (r->n + 1) * sizeof(*r->entries));
        r->entries[r->n++] = e;
    }
    return 0;
}

static int cmp_entry(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;
    if (x->cls != y->cls)
        return x->cls > y->cls ? -1 : 1;
    return strcmp(x->key, y->key);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

void hg_rules_seal(struct hg_rules *r)
{
    if (r->sealed)
        return;
    /* Highest class first: once a class matched, lower ones need not be looked at. */
    if (r->n)
        qsort(r->entries, r->n, sizeof(*r->entries), cmp_entry);
    r->tags = hg_xcalloc(r->n ? r->n : 1, sizeof(*r->tags));
    for (size_t i = 0; i < r->n; i++)
        if (r->entries[i].tag)
            r->tags[r->n_tags++] = r->entries[i].tag;
    if (r->n_tags)
        qsort(r->tags, r->n_tags, sizeof(*r->tags), cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < r->n_tags; i++)
        if (u == 0 || strcmp(r->tags[u - 1], r->tags[i]) != 0)
            r->tags[u++] = r->tags[i];
    r->n_tags = u;
    for (size_t i = 0; i < r->n; i++) {
        struct entry *e = &r->entries[i];
        if (e->tag == NULL)
            continue;
        const char **hit = bsearch(&e->tag, r->tags, r->n_tags, sizeof(*r->tags), cmp_str);
        e->tag_rank = (unsigned)(hit - r->tags);
    }
    r->sealed = true;
}

void hg_rules_free(struct hg_rules *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->n; i++)
        entry_clear(&r->entries[i]);
    free(r->entries);
    free(r->tags);
    hg_tz_free(r->tz);
    free(r);
}

/* ---------------------------------------------------------------- matching */

/* The strings of one event that rules look at (originals, for regexes). */
struct text {
    const char *s[4];
    size_t n[4];
    size_t count;
};

/*
 * Per message type, the content keys holding text a person wrote or chose. Providers share the
 * envelope, so one table serves them all: a key a provider does not fill is simply absent
 * (WhatsApp media carry `caption`, Genesys attachments their caption in `body`).
 */
static const struct {
    const char *type;
    const char *keys[4];
} text_keys[] = {
    { "text", { "body" } },                                /* WhatsApp, Genesys, Twilio */
    { "image", { "caption", "body" } },                    /* WhatsApp caption; Genesys body */
    { "video", { "caption", "body" } },
    { "document", { "caption", "body" } },
    { "audio", { "body" } },                               /* Genesys */
    { "structured", { "body" } },                          /* Genesys */
    { "media", { "body" } },                               /* Twilio */
    { "button", { "text", "payload" } },                   /* WhatsApp */
    { "interactive", { "title", "description", "body" } }, /* WhatsApp */
    { "order", { "text" } },                               /* WhatsApp */
    { "location", { "name", "address" } },                 /* WhatsApp */
};

static bool is_message(const struct hg_json *doc)
{
    const char *kind = hg_json_str(hg_json_get(doc, "kind"));
    return kind && strcmp(kind, "message") == 0;
}

static void text_collect(const struct hg_json *doc, struct text *t)
{
    t->count = 0;
    const char *type = hg_json_str(hg_json_get(doc, "type"));
    struct hg_json *content = hg_json_get(doc, "content");
    if (!is_message(doc) || type == NULL || !hg_json_is_object(content))
        return;
    size_t budget = HG_RULES_MAX_TEXT;
    for (size_t i = 0; i < HG_ARRAY_SIZE(text_keys); i++) {
        if (strcmp(text_keys[i].type, type) != 0)
            continue;
        for (size_t k = 0; k < HG_ARRAY_SIZE(text_keys[i].keys) && text_keys[i].keys[k]; k++) {
            struct hg_json *v = hg_json_get(content, text_keys[i].keys[k]);
            if (!hg_json_is_string(v) || budget == 0)
                continue;
            size_t n = HG_MIN(v->len, budget);
            if (n == 0)
                continue;
            t->s[t->count] = v->str;
            t->n[t->count] = n;
            t->count++;
            budget -= n;
        }
        break;
    }
}

static bool keyword_match(const struct keyword *k, const char *text, size_t n)
{
    const char *p = text, *end = text + n;
    while ((size_t)(end - p) >= k->len) {
        const char *hit = memmem(p, (size_t)(end - p), k->text, k->len);
        if (hit == NULL)
            return false;
        if ((!k->bound_start || !word_before(text, hit)) && (!k->bound_end || !word_at(hit + k->len, end)))
            return true;
        p = hit + 1;
    }
    return false;
}

static bool entry_match(const struct entry *e, const char *folded, size_t fn, const struct text *t)
{
    for (size_t i = 0; i < e->n_kw; i++)
        if (keyword_match(&e->kw[i], folded, fn))
            return true;
    if (!e->has_re)
        return false;
    for (size_t i = 0; i < t->count; i++) {
        /* REG_STARTEND bounds the match to the capped length and lets it see past a \u0000. */
        regmatch_t m[1] = { { 0, (regoff_t)t->n[i] } };
        if (regexec(&e->re, t->s[i], 1, m, REG_STARTEND) == 0)
            return true;
    }
    return false;
}

/*
 * The instant the event happened, Unix seconds: occurred_at (provider time; the normalizers put
 * received_at there when the provider gave none), else received_at. False when neither parses.
 */
static bool event_time(const struct hg_json *doc, int64_t *t)
{
    static const char *const keys[] = { "occurred_at", "received_at" };
    for (size_t i = 0; i < HG_ARRAY_SIZE(keys); i++) {
        const struct hg_json *v = hg_json_get(doc, keys[i]);
        int64_t ms;
        if (hg_json_is_string(v) && hg_time_parse_rfc3339(v->str, v->len, &ms) == 0) {
            *t = floor_div(ms, 1000);
            return true;
        }
    }
    return false;
}

/*
 * Write priority and tags into doc, just before raw (so raw stays the last key). `after_hours`
 * adds HG_RULES_TAG_AFTER_HOURS in its sorted place, once even if a rule tag has the same name.
 */
static int doc_set(struct hg_arena *a, struct hg_json *doc, int cls, const struct hg_rules *r, uint64_t tags,
                   bool after_hours)
{
    int rc = 0;
    struct hg_json *arr = hg_json_array(a);
    for (size_t i = 0; r && i < r->n_tags && arr; i++) {
        bool on = (tags >> i) & 1;
        if (after_hours) {
            int c = strcmp(HG_RULES_TAG_AFTER_HOURS, r->tags[i]);
            if (c < 0)
                rc |= hg_json_append(a, arr, hg_json_string(a, HG_RULES_TAG_AFTER_HOURS));
            else if (c == 0)
                on = true;
            after_hours = c > 0;
        }
        if (on)
            rc |= hg_json_append(a, arr, hg_json_string(a, r->tags[i]));
    }
    if (after_hours && arr)
        rc |= hg_json_append(a, arr, hg_json_string(a, HG_RULES_TAG_AFTER_HOURS));
    struct hg_json *raw = hg_json_get(doc, "raw");
    if (raw)
        hg_json_del(doc, "raw");
    rc |= hg_json_set(a, doc, "priority", hg_json_string(a, class_names[cls]));
    rc |= hg_json_set(a, doc, "tags", arr);
    if (raw)
        rc |= hg_json_set(a, doc, "raw", raw);
    return rc ? HG_ERR_NOMEM : 0;
}

int hg_rules_apply(const struct hg_rules *r, struct hg_arena *a, struct hg_json *doc, int *priority,
                   const char **priority_class)
{
    *priority = HG_RULES_PRIORITY_MEDIUM;
    *priority_class = class_names[HG_RULES_MEDIUM];
    if (!hg_json_is_object(doc))
        return HG_ERR_INVALID;

    int best = -1;
    uint64_t tags = 0;
    char stack[RULES_STACK_TEXT];
    char *folded = stack;
    int rc = 0;
    struct text t;
    text_collect(doc, &t);
    int64_t when;
    bool after_hours =
        r && r->has_hours && is_message(doc) && event_time(doc, &when) && hg_rules_after_hours(r, when);
    if (r && r->n && t.count) {
        /* One folded copy of all fields, '\0' between them so no keyword spans two fields. */
        size_t cap = t.count;
        for (size_t i = 0; i < t.count; i++)
            cap += t.n[i];
        if (cap > sizeof(stack)) {
            folded = malloc(cap);
            if (folded == NULL)
                return HG_ERR_NOMEM;
        }
        size_t fn = 0;
        for (size_t i = 0; i < t.count; i++) {
            bool blank = false;
            if (i)
                folded[fn++] = '\0';
            fold_append(t.s[i], t.n[i], folded, cap, &fn, &blank);
        }
        for (size_t i = 0; i < r->n; i++) {
            const struct entry *e = &r->entries[i];
            if (e->tag ? (tags >> e->tag_rank) & 1 : e->cls <= best)
                continue;
            if (e->after_hours && !after_hours)
                continue;
            if (!entry_match(e, folded, fn, &t))
                continue;
            if (e->tag)
                tags |= UINT64_C(1) << e->tag_rank;
            else
                best = e->cls;
        }
    }
    int cls = best < 0 ? HG_RULES_MEDIUM : best;
    rc = doc_set(a, doc, cls, r, tags, after_hours);
    *priority = class_priorities[cls];
    *priority_class = class_names[cls];
    if (folded != stack)
        free(folded);
    return rc;
}

/*
 * Enrichment rules: case-folded keyword search with word boundaries and POSIX regexes over the
 * text of an event, giving it a priority class and tags. Built by the config loader, then frozen.
 */
#include <regex.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/err.h"
#include "rules/rules.h"

#define RULES_MAX_KEYWORDS 1024     /* keywords in one key; an env value has no line cap */
#define RULES_MAX_REGEX    4096     /* bytes of one pattern */
#define RULES_TAG_MAX      64       /* bytes of a tag name */
#define RULES_STACK_TEXT   4096     /* folded text up to this size needs no heap */

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
    char *key;           /* "emergency", "high_regex", "tag.gas", "tag_regex.gas" */
    int cls;             /* enum hg_rules_class, or -1 for a tag entry */
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

/* Split `key` into class or tag and keyword/regex kind. HG_ERR_NOT_FOUND / HG_ERR_PARSE. */
static int key_parse(const char *key, int *cls, bool *regex, const char **tag, char *why, size_t wl)
{
    *tag = NULL;
    *cls = -1;
    *regex = false;
    if (strncmp(key, "tag.", 4) == 0) {
        *tag = key + 4;
    } else if (strncmp(key, "tag_regex.", 10) == 0) {
        *tag = key + 10;
        *regex = true;
    } else {
        size_t kl = strlen(key);
        for (int c = 0; c < HG_RULES_N_CLASSES; c++) {
            size_t cl = strlen(class_names[c]);
            if (kl < cl || memcmp(key, class_names[c], cl) != 0)
                continue;
            if (key[cl] == '\0' || strcmp(key + cl, "_regex") == 0) {
                *cls = c;
                *regex = key[cl] != '\0';
                return 0;
            }
        }
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

int hg_rules_set(struct hg_rules *r, const char *key, const char *value, char *why, size_t wl)
{
    int cls;
    bool regex;
    const char *tag;
    struct entry e;
    memset(&e, 0, sizeof(e));
    if (r->sealed)
        abort();   /* a sealed rule set is shared between threads */
    int rc = key_parse(key, &cls, &regex, &tag, why, wl);
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

static void text_collect(const struct hg_json *doc, struct text *t)
{
    t->count = 0;
    const char *kind = hg_json_str(hg_json_get(doc, "kind"));
    const char *type = hg_json_str(hg_json_get(doc, "type"));
    struct hg_json *content = hg_json_get(doc, "content");
    if (kind == NULL || type == NULL || strcmp(kind, "message") != 0 || !hg_json_is_object(content))
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

/* Write priority and tags into doc, just before raw (so raw stays the last key). */
static int doc_set(struct hg_arena *a, struct hg_json *doc, int cls, const struct hg_rules *r, uint64_t tags)
{
    int rc = 0;
    struct hg_json *arr = hg_json_array(a);
    for (size_t i = 0; r && i < r->n_tags && arr; i++)
        if (tags & (UINT64_C(1) << i))
            rc |= hg_json_append(a, arr, hg_json_string(a, r->tags[i]));
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
            if (!entry_match(e, folded, fn, &t))
                continue;
            if (e->tag)
                tags |= UINT64_C(1) << e->tag_rank;
            else
                best = e->cls;
        }
    }
    int cls = best < 0 ? HG_RULES_MEDIUM : best;
    rc = doc_set(a, doc, cls, r, tags);
    *priority = class_priorities[cls];
    *priority_class = class_names[cls];
    if (folded != stack)
        free(folded);
    return rc;
}

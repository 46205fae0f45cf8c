/*
 * hg_json: the arena JSON document of the per-webhook path. A one-pass recursive-descent parser
 * that validates and copies into arena nodes, a compact writer matching jansson's JSON_COMPACT
 * output, small builders, and the copies across the jansson boundary.
 */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/err.h"
#include "core/json.h"

/* Objects up to this many members find a repeated key by comparing with every earlier one; past
 * it, one sort at the end of the object does it, so a body with 100k keys stays O(n log n). */
#define DEDUP_LINEAR_MAX 16
/* The writer and the jansson copies recurse; a tree built by hand (or a cycle made by appending a
 * container to itself) must not overflow the stack. jansson parses up to 2048 levels. */
#define TREE_MAX_DEPTH 2048
/* The parser takes memory from the arena in blocks and bumps through them inline: a call into
 * hg_arena_alloc per node costs more than the node. Blocks stay below the arena's big-block
 * threshold (half its 4 KiB chunk) so they share chunks with the request's other allocations. */
#define BLOCK_MIN 256
#define BLOCK_MAX 2032
#define DUMPS_FIRST 2048 /* hg_json_dumps' first buffer */

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define HG_JSON_SWAR 1
#endif

_Static_assert(sizeof(json_int_t) >= sizeof(long long), "every long long must fit json_int_t");

#define ONES  0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

static const struct hg_json const_true = {.type = HG_JSON_TRUE};
static const struct hg_json const_false = {.type = HG_JSON_FALSE};
static const struct hg_json const_null = {.type = HG_JSON_NULL};

/* Bytes that end a plain run inside a string: '"', '\\', control characters, and (for the parser,
 * which must validate UTF-8) every byte >= 0x80. */
static const unsigned char parse_stop[256] = {
    [0x00 ... 0x1f] = 1, ['"'] = 1, ['\\'] = 1, [0x80 ... 0xff] = 1,
};
static const unsigned char write_stop[256] = {
    [0x00 ... 0x1f] = 1, ['"'] = 1, ['\\'] = 1,
};

/* Non-zero when any of the 8 bytes is '"', '\\' or < 0x20; the lowest set 0x80 bit marks the
 * first such byte exactly (a subtraction only borrows out of a byte that is itself flagged). */
static inline uint64_t swar_write_stop(uint64_t v)
{
    uint64_t q = v ^ (ONES * '"');
    uint64_t b = v ^ (ONES * '\\');
    uint64_t c = v - ONES * 0x20;
    return (((q - ONES) & ~q) | ((b - ONES) & ~b) | (c & ~v)) & HIGHS;
}

/* The same plus every byte >= 0x80. */
static inline uint64_t swar_parse_stop(uint64_t v)
{
    uint64_t q = v ^ (ONES * '"');
    uint64_t b = v ^ (ONES * '\\');
    return (((q - ONES) & ~q) | ((b - ONES) & ~b) | (v - ONES * 0x20) | v) & HIGHS;
}

/* ------------------------------------------------------------------------------------------ */
/* parsing                                                                                    */

struct parser {
    const unsigned char *start;
    const unsigned char *p;     /* the cursor */
    const unsigned char *end;
    struct hg_arena *arena;
    char *bump;                 /* free space of the current block */
    char *bump_end;
    size_t block;               /* size of the next block to ask the arena for */
    int depth;
    const char *err_text;
    const unsigned char *err_at;
};

static void *fail(struct parser *ps, const unsigned char *at, const char *text)
{
    /* The first error wins: an inner failure is the precise one. */
    if (ps->err_text == NULL) {
        ps->err_text = text;
        ps->err_at = at;
    }
    return NULL;
}

static void *alloc_slow(struct parser *ps, size_t n)
{
    /* A big piece goes straight to the arena so the current block keeps filling. */
    if (n > ps->block / 4)
        return hg_arena_alloc(ps->arena, n);
    char *blk = hg_arena_alloc(ps->arena, ps->block);
    if (blk == NULL)
        /* The arena's cap is near: ask for exactly what is needed before giving up. */
        return hg_arena_alloc(ps->arena, n);
    ps->bump = blk + n;
    ps->bump_end = blk + ps->block;
    ps->block = BLOCK_MAX;
    return blk;
}

/* n bytes aligned to `align` (1 or 8). */
static inline void *palloc(struct parser *ps, size_t n, size_t align)
{
    uintptr_t cur = ((uintptr_t)ps->bump + align - 1) & ~(uintptr_t)(align - 1);
    /* bump_end is 16-aligned (blocks come from the arena in multiples of 16), so cur never
     * passes it; with no block yet both are NULL and the test fails. */
    if (HG_LIKELY(n <= (uintptr_t)ps->bump_end - cur)) {
        ps->bump = (char *)cur + n;
        return (void *)cur;
    }
    return alloc_slow(ps, n);
}

static inline const unsigned char *skip_ws(const unsigned char *p, const unsigned char *end)
{
    while (p < end && *p <= ' ' && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

/* Length of the valid UTF-8 sequence at p (a byte >= 0x80), or 0: no overlong forms, no
 * surrogates, nothing past U+10FFFF, no truncation (RFC 3629 table 4). */
static inline size_t utf8_seq(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0];
    size_t avail = (size_t)(end - p);
    if (c >= 0xC2 && c <= 0xDF)
        return avail >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        unsigned lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        if (avail < 3 || p[1] < lo || p[1] > hi || (p[2] & 0xC0) != 0x80)
            return 0;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        unsigned lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        if (avail < 4 || p[1] < lo || p[1] > hi || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
            return 0;
        return 4;
    }
    return 0;
}

/*
 * Find the closing quote of the string whose contents start at s, validating UTF-8, control
 * characters and the character after each backslash on the way. *escaped tells whether the
 * decoding pass is needed. NULL on error.
 */
static const unsigned char *scan_string(struct parser *ps, const unsigned char *s, bool *escaped)
{
    const unsigned char *p = s, *end = ps->end;
    for (;;) {
#ifdef HG_JSON_SWAR
        while (end - p >= 8) {
            uint64_t v;
            memcpy(&v, p, 8);
            uint64_t m = swar_parse_stop(v);
            if (m) {
                p += (unsigned)__builtin_ctzll(m) >> 3;
                goto stop;
            }
            p += 8;
        }
#endif
        while (p < end && !parse_stop[*p])
            p++;
        if (p >= end)
            return fail(ps, end, "unterminated string");
#ifdef HG_JSON_SWAR
    stop:
#endif
        switch (*p) {
        case '"':
            return p;
        case '\\':
            if (end - p < 2)
                return fail(ps, end, "unterminated string");
            switch (p[1]) {
            case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't': case 'u':
                break;
            default:
                return fail(ps, p, "invalid escape in string");
            }
            *escaped = true;
            p += 2;
            break;
        default:
            if (*p < 0x20)
                return fail(ps, p, "control character in string");
            size_t n = utf8_seq(p, end);
            if (n == 0)
                return fail(ps, p, "invalid UTF-8 in string");
            p += n;
        }
    }
}

static inline int hex4(const unsigned char *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], d;
        if (c - '0' < 10)
            d = c - '0';
        else if ((c | 0x20) - 'a' < 6)
            d = (c | 0x20) - 'a' + 10;
        else
            return -1;
        v = v << 4 | (int)d;
    }
    return v;
}

/* Decode the escaped string s..q (already scanned) into out; its length, or (size_t)-1. */
static size_t decode_string(struct parser *ps, const unsigned char *s, const unsigned char *q, char *out)
{
    char *o = out;
    while (s < q) {
        const unsigned char *bs = memchr(s, '\\', (size_t)(q - s));
        if (bs == NULL)
            bs = q;
        memcpy(o, s, (size_t)(bs - s));
        o += bs - s;
        if (bs == q)
            break;
        switch (bs[1]) {
        case 'b': *o++ = '\b'; s = bs + 2; continue;
        case 'f': *o++ = '\f'; s = bs + 2; continue;
        case 'n': *o++ = '\n'; s = bs + 2; continue;
        case 'r': *o++ = '\r'; s = bs + 2; continue;
        case 't': *o++ = '\t'; s = bs + 2; continue;
        case 'u': break;
        default: *o++ = (char)bs[1]; s = bs + 2; continue; /* '"', '\\', '/' */
        }
        int cp = q - bs >= 6 ? hex4(bs + 2) : -1;
        if (cp < 0) {
            fail(ps, bs, "invalid \\u escape in string");
            return (size_t)-1;
        }
        s = bs + 6;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            int lo = q - s >= 6 && s[0] == '\\' && s[1] == 'u' ? hex4(s + 2) : -1;
            if (lo < 0xDC00 || lo > 0xDFFF) {
                fail(ps, bs, "invalid Unicode surrogate in string");
                return (size_t)-1;
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            s += 6;
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            fail(ps, bs, "invalid Unicode surrogate in string");
            return (size_t)-1;
        }
        if (cp < 0x80) {
            *o++ = (char)cp;
        } else if (cp < 0x800) {
            *o++ = (char)(0xC0 | cp >> 6);
            *o++ = (char)(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            *o++ = (char)(0xE0 | cp >> 12);
            *o++ = (char)(0x80 | (cp >> 6 & 0x3F));
            *o++ = (char)(0x80 | (cp & 0x3F));
        } else {
            *o++ = (char)(0xF0 | cp >> 18);
            *o++ = (char)(0x80 | (cp >> 12 & 0x3F));
            *o++ = (char)(0x80 | (cp >> 6 & 0x3F));
            *o++ = (char)(0x80 | (cp & 0x3F));
        }
    }
    return (size_t)(o - out);
}

/*
 * The string whose opening quote is at ps->p: arena memory holding `prefix` bytes (8-aligned, for
 * the node) followed by the decoded NUL-terminated text. Escapes only shrink text, so the raw
 * length bounds the decoded one and the text is written once, in place.
 */
static char *parse_string(struct parser *ps, size_t prefix, size_t *len)
{
    const unsigned char *s = ps->p + 1;
    bool escaped = false;
    const unsigned char *q = scan_string(ps, s, &escaped);
    if (q == NULL)
        return NULL;
    size_t raw = (size_t)(q - s);
    char *mem = palloc(ps, prefix + raw + 1, prefix ? 8 : 1);
    if (mem == NULL)
        return fail(ps, ps->p, "out of memory");
    char *out = mem + prefix;
    size_t n = raw;
    if (!escaped) {
        memcpy(out, s, raw);
    } else {
        n = decode_string(ps, s, q, out);
        if (n == (size_t)-1)
            return NULL;
    }
    out[n] = '\0';
    *len = n;
    ps->p = q + 1;
    return mem;
}

static struct hg_json *parse_number(struct parser *ps)
{
    const unsigned char *s = ps->p, *p = s, *end = ps->end;
    if (*p == '-')
        p++;
    if (p < end && *p == '0') {
        p++;
    } else if (p < end && (unsigned)(*p - '1') < 9) {
        p++;
        while (p < end && (unsigned)(*p - '0') < 10)
            p++;
    } else {
        return fail(ps, p, "invalid number");
    }
    if (p < end && *p == '.') {
        p++;
        if (p >= end || (unsigned)(*p - '0') >= 10)
            return fail(ps, p, "invalid number");
        while (p < end && (unsigned)(*p - '0') < 10)
            p++;
    }
    if (p < end && (*p | 0x20) == 'e') {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || (unsigned)(*p - '0') >= 10)
            return fail(ps, p, "invalid number");
        while (p < end && (unsigned)(*p - '0') < 10)
            p++;
    }
    size_t n = (size_t)(p - s);
    struct hg_json *v = palloc(ps, sizeof(*v) + n + 1, 8);
    if (v == NULL)
        return fail(ps, s, "out of memory");
    char *text = (char *)(v + 1);
    memcpy(text, s, n);
    text[n] = '\0';
    v->type = HG_JSON_NUMBER;
    v->len = n;
    v->str = text;
    v->head = v->tail = NULL;
    ps->p = p;
    return v;
}

static struct hg_json *parse_value(struct parser *ps);

static struct hg_json *new_container(struct parser *ps, enum hg_json_type type)
{
    if (++ps->depth > HG_JSON_MAX_DEPTH)
        return fail(ps, ps->p, "maximum nesting depth exceeded");
    struct hg_json *v = palloc(ps, sizeof(*v), 8);
    if (v == NULL)
        return fail(ps, ps->p, "out of memory");
    v->type = type;
    v->len = 0;
    v->str = NULL;
    v->head = v->tail = NULL;
    ps->p = skip_ws(ps->p + 1, ps->end);
    return v;
}

static struct hg_json *parse_array(struct parser *ps)
{
    struct hg_json *arr = new_container(ps, HG_JSON_ARRAY);
    if (arr == NULL)
        return NULL;
    if (ps->p < ps->end && *ps->p == ']') {
        ps->p++;
        ps->depth--;
        return arr;
    }
    for (;;) {
        struct hg_json *val = parse_value(ps);
        if (val == NULL)
            return NULL;
        struct hg_json_item *it = palloc(ps, sizeof(*it), 8);
        if (it == NULL)
            return fail(ps, ps->p, "out of memory");
        it->next = NULL;
        it->key = NULL;
        it->key_len = 0;
        it->val = val;
        if (arr->tail)
            arr->tail->next = it;
        else
            arr->head = it;
        arr->tail = it;
        arr->len++;
        const unsigned char *p = skip_ws(ps->p, ps->end);
        if (p >= ps->end)
            return fail(ps, p, "unexpected end of input");
        if (*p == ',') {
            ps->p = skip_ws(p + 1, ps->end);
            continue;
        }
        if (*p != ']')
            return fail(ps, p, "expected ',' or ']'");
        ps->p = p + 1;
        ps->depth--;
        return arr;
    }
}

struct member_ref {
    struct hg_json_item *it;
    size_t pos;
};

static int member_cmp(const void *a, const void *b)
{
    const struct member_ref *x = a, *y = b;
    if (x->it->key_len != y->it->key_len)
        return x->it->key_len < y->it->key_len ? -1 : 1;
    int c = memcmp(x->it->key, y->it->key, x->it->key_len);
    if (c != 0)
        return c;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/* Collapse repeated keys of a big object: the first occurrence keeps its place and takes the
 * last occurrence's value, as a sequence of json_object_set calls would leave it. */
static bool dedup_sorted(struct hg_json *obj)
{
    struct member_ref *refs = malloc(obj->len * sizeof(*refs));
    if (refs == NULL)
        return false;
    size_t n = 0;
    for (struct hg_json_item *it = obj->head; it; it = it->next, n++) {
        refs[n].it = it;
        refs[n].pos = n;
    }
    qsort(refs, n, sizeof(*refs), member_cmp);
    bool dup = false;
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && refs[j].it->key_len == refs[i].it->key_len &&
               memcmp(refs[j].it->key, refs[i].it->key, refs[i].it->key_len) == 0)
            j++;
        if (j - i > 1) {
            refs[i].it->val = refs[j - 1].it->val;
            for (size_t k = i + 1; k < j; k++)
                refs[k].it->val = NULL; /* marks the item for unlinking below */
            dup = true;
        }
        i = j;
    }
    free(refs);
    if (!dup)
        return true;
    struct hg_json_item **link = &obj->head, *last = NULL;
    obj->len = 0;
    for (struct hg_json_item *it = obj->head; it; it = it->next) {
        if (it->val == NULL)
            continue;
        *link = it;
        link = &it->next;
        last = it;
        obj->len++;
    }
    *link = NULL;
    obj->tail = last;
    return true;
}

static struct hg_json *parse_object(struct parser *ps)
{
    struct hg_json *obj = new_container(ps, HG_JSON_OBJECT);
    if (obj == NULL)
        return NULL;
    if (ps->p < ps->end && *ps->p == '}') {
        ps->p++;
        ps->depth--;
        return obj;
    }
    for (;;) {
        if (ps->p >= ps->end)
            return fail(ps, ps->p, "unexpected end of input");
        if (*ps->p != '"')
            return fail(ps, ps->p, "expected a string key");
        size_t key_len;
        /* The item and its key text in one piece. */
        struct hg_json_item *it = (struct hg_json_item *)parse_string(ps, sizeof(*it), &key_len);
        if (it == NULL)
            return NULL;
        const unsigned char *p = skip_ws(ps->p, ps->end);
        if (p >= ps->end || *p != ':')
            return fail(ps, p, "expected ':'");
        ps->p = skip_ws(p + 1, ps->end);
        struct hg_json *val = parse_value(ps);
        if (val == NULL)
            return NULL;
        it->next = NULL;
        it->key = (const char *)(it + 1);
        it->key_len = key_len;
        it->val = val;
        struct hg_json_item *same = NULL;
        if (obj->len < DEDUP_LINEAR_MAX) {
            for (struct hg_json_item *o = obj->head; o; o = o->next) {
                if (o->key_len == key_len && memcmp(o->key, it->key, key_len) == 0) {
                    same = o;
                    break;
                }
            }
        }
        if (same) {
            same->val = val;
        } else {
            if (obj->tail)
                obj->tail->next = it;
            else
                obj->head = it;
            obj->tail = it;
            obj->len++;
        }
        p = skip_ws(ps->p, ps->end);
        if (p >= ps->end)
            return fail(ps, p, "unexpected end of input");
        if (*p == ',') {
            ps->p = skip_ws(p + 1, ps->end);
            continue;
        }
        if (*p != '}')
            return fail(ps, p, "expected ',' or '}'");
        ps->p = p + 1;
        break;
    }
    if (obj->len > DEDUP_LINEAR_MAX && !dedup_sorted(obj))
        return fail(ps, ps->p, "out of memory");
    ps->depth--;
    return obj;
}

static struct hg_json *parse_value(struct parser *ps)
{
    const unsigned char *p = ps->p, *end = ps->end;
    if (p >= end)
        return fail(ps, p, "unexpected end of input");
    switch (*p) {
    case '{':
        return parse_object(ps);
    case '[':
        return parse_array(ps);
    case '"': {
        size_t n;
        struct hg_json *v = (struct hg_json *)parse_string(ps, sizeof(*v), &n);
        if (v == NULL)
            return NULL;
        v->type = HG_JSON_STRING;
        v->len = n;
        v->str = (const char *)(v + 1);
        v->head = v->tail = NULL;
        return v;
    }
    case '-': case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':
        return parse_number(ps);
    case 't':
        if (end - p >= 4 && memcmp(p, "true", 4) == 0) {
            ps->p = p + 4;
            return (struct hg_json *)&const_true;
        }
        break;
    case 'f':
        if (end - p >= 5 && memcmp(p, "false", 5) == 0) {
            ps->p = p + 5;
            return (struct hg_json *)&const_false;
        }
        break;
    case 'n':
        if (end - p >= 4 && memcmp(p, "null", 4) == 0) {
            ps->p = p + 4;
            return (struct hg_json *)&const_null;
        }
        break;
    default:
        break;
    }
    return fail(ps, p, "unexpected character");
}

static void fill_error(struct hg_json_error *err, const struct parser *ps)
{
    size_t pos = (size_t)(ps->err_at - ps->start);
    int line = 1;
    const unsigned char *line_start = ps->start, *nl;
    /* Counted only on failure: the happy path tracks no lines. */
    while ((nl = memchr(line_start, '\n', (size_t)(ps->err_at - line_start))) != NULL) {
        line++;
        line_start = nl + 1;
    }
    snprintf(err->text, sizeof(err->text), "%s", ps->err_text);
    err->line = line;
    err->column = (int)(ps->err_at - line_start) + 1;
    err->position = pos;
}

struct hg_json *hg_json_parse(struct hg_arena *a, const char *text, size_t len, struct hg_json_error *err)
{
    static const char empty[1] = "";
    if (text == NULL)
        text = empty, len = 0;
    struct parser ps = {
        .start = (const unsigned char *)text,
        .end = (const unsigned char *)text + len,
        .arena = a,
    };
    size_t block = (len * 2 + 15) & ~(size_t)15;
    ps.block = block < BLOCK_MIN ? BLOCK_MIN : block > BLOCK_MAX ? BLOCK_MAX : block;
    ps.p = skip_ws(ps.start, ps.end);
    struct hg_json *v = parse_value(&ps);
    if (v != NULL) {
        ps.p = skip_ws(ps.p, ps.end);
        if (ps.p != ps.end)
            v = fail(&ps, ps.p, "end of input expected");
    }
    if (v == NULL && err != NULL)
        fill_error(err, &ps);
    return v;
}

/* ------------------------------------------------------------------------------------------ */
/* reading                                                                                    */

struct hg_json *hg_json_getn(const struct hg_json *obj, const char *key, size_t key_len)
{
    if (!hg_json_is_object(obj) || (key == NULL && key_len != 0))
        return NULL;
    for (struct hg_json_item *it = obj->head; it; it = it->next) {
        if (it->key_len == key_len && (key_len == 0 || (it->key[0] == key[0] && memcmp(it->key, key, key_len) == 0)))
            return it->val;
    }
    return NULL;
}

struct hg_json *hg_json_get(const struct hg_json *obj, const char *key)
{
    return key ? hg_json_getn(obj, key, strlen(key)) : NULL;
}

bool hg_json_int(const struct hg_json *v, long long *out)
{
    if (!hg_json_is_number(v) || v->len == 0)
        return false;
    const char *s = v->str, *e = s + v->len;
    bool neg = *s == '-';
    if (neg)
        s++;
    if (s == e)
        return false;
    unsigned long long limit = neg ? (unsigned long long)LLONG_MAX + 1 : (unsigned long long)LLONG_MAX;
    unsigned long long acc = 0;
    for (; s < e; s++) {
        unsigned d = (unsigned)(*s - '0');
        if (d >= 10 || acc > (limit - d) / 10)
            return false; /* '.', 'e', 'E', or past long long */
        acc = acc * 10 + d;
    }
    if (out)
        *out = neg ? (acc == (unsigned long long)LLONG_MAX + 1 ? LLONG_MIN : -(long long)acc) : (long long)acc;
    return true;
}

/* ------------------------------------------------------------------------------------------ */
/* building                                                                                   */

static struct hg_json *node_new(struct hg_arena *a, enum hg_json_type type, size_t extra)
{
    struct hg_json *v = hg_arena_alloc(a, sizeof(*v) + extra);
    if (v == NULL)
        return NULL;
    v->type = type;
    v->len = 0;
    v->str = NULL;
    v->head = v->tail = NULL;
    return v;
}

struct hg_json *hg_json_object(struct hg_arena *a)
{
    return node_new(a, HG_JSON_OBJECT, 0);
}

struct hg_json *hg_json_array(struct hg_arena *a)
{
    return node_new(a, HG_JSON_ARRAY, 0);
}

static struct hg_json *text_node(struct hg_arena *a, enum hg_json_type type, const char *s, size_t n)
{
    if (s == NULL && n != 0)
        return NULL;
    struct hg_json *v = node_new(a, type, n + 1);
    if (v == NULL)
        return NULL;
    char *text = (char *)(v + 1);
    if (n)
        memcpy(text, s, n);
    text[n] = '\0';
    v->str = text;
    v->len = n;
    return v;
}

struct hg_json *hg_json_stringn(struct hg_arena *a, const char *s, size_t n)
{
    return text_node(a, HG_JSON_STRING, s, n);
}

struct hg_json *hg_json_string(struct hg_arena *a, const char *s)
{
    return s ? text_node(a, HG_JSON_STRING, s, strlen(s)) : NULL;
}

struct hg_json *hg_json_integer(struct hg_arena *a, long long v)
{
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%lld", v);
    return text_node(a, HG_JSON_NUMBER, buf, (size_t)n);
}

/*
 * jansson 2.14's jsonp_dtostr with precision 0: "%.17g"; ".0" appended when neither '.' nor 'e'
 * appears; then the exponent loses its '+' and leading zeros ("1e+300" -> "1e300", "1e-05" ->
 * "1e-5"). -1 for NaN and infinities, which JSON cannot carry (json_real refuses them too).
 */
static int format_real(char *buf, size_t size, double d)
{
    if (!isfinite(d))
        return -1;
    int n = snprintf(buf, size, "%.17g", d);
    if (n < 0 || (size_t)n + 3 > size)
        return -1;
    if (strchr(buf, '.') == NULL && strchr(buf, 'e') == NULL) {
        buf[n++] = '.';
        buf[n++] = '0';
        buf[n] = '\0';
    }
    char *e = strchr(buf, 'e');
    if (e != NULL) {
        char *start = e + 1, *digits = start + 1;
        if (*start == '-')
            start++;
        while (*digits == '0')
            digits++;
        if (digits != start) {
            memmove(start, digits, (size_t)(buf + n + 1 - digits)); /* with the NUL */
            n -= (int)(digits - start);
        }
    }
    return n;
}

struct hg_json *hg_json_real(struct hg_arena *a, double d)
{
    char buf[40];
    int n = format_real(buf, sizeof(buf), d);
    if (n < 0)
        return NULL;
    return text_node(a, HG_JSON_NUMBER, buf, (size_t)n);
}

struct hg_json *hg_json_bool(bool b)
{
    /* Shared constants cast to non-const for the API; the setters refuse them (not containers). */
    return (struct hg_json *)(b ? &const_true : &const_false);
}

struct hg_json *hg_json_null(void)
{
    return (struct hg_json *)&const_null;
}

static void item_link(struct hg_json *c, struct hg_json_item *it)
{
    it->next = NULL;
    if (c->tail)
        c->tail->next = it;
    else
        c->head = it;
    c->tail = it;
    c->len++;
}

int hg_json_setn(struct hg_arena *a, struct hg_json *obj, const char *key, size_t key_len, struct hg_json *val)
{
    if (!hg_json_is_object(obj) || val == NULL || (key == NULL && key_len != 0))
        return HG_ERR_INVALID;
    for (struct hg_json_item *it = obj->head; it; it = it->next) {
        if (it->key_len == key_len && (key_len == 0 || (it->key[0] == key[0] && memcmp(it->key, key, key_len) == 0))) {
            it->val = val;
            return 0;
        }
    }
    struct hg_json_item *it = hg_arena_alloc(a, sizeof(*it) + key_len + 1);
    if (it == NULL)
        return HG_ERR_NOMEM;
    char *k = (char *)(it + 1);
    if (key_len)
        memcpy(k, key, key_len);
    k[key_len] = '\0';
    it->key = k;
    it->key_len = key_len;
    it->val = val;
    item_link(obj, it);
    return 0;
}

int hg_json_set(struct hg_arena *a, struct hg_json *obj, const char *key, struct hg_json *val)
{
    if (key == NULL)
        return HG_ERR_INVALID;
    return hg_json_setn(a, obj, key, strlen(key), val);
}

int hg_json_del(struct hg_json *obj, const char *key)
{
    if (!hg_json_is_object(obj) || key == NULL)
        return HG_ERR_NOT_FOUND;
    size_t n = strlen(key);
    struct hg_json_item *prev = NULL;
    for (struct hg_json_item *it = obj->head; it; prev = it, it = it->next) {
        if (it->key_len != n || memcmp(it->key, key, n) != 0)
            continue;
        if (prev)
            prev->next = it->next;
        else
            obj->head = it->next;
        if (obj->tail == it)
            obj->tail = prev;
        obj->len--;
        return 0;
    }
    return HG_ERR_NOT_FOUND;
}

int hg_json_append(struct hg_arena *a, struct hg_json *arr, struct hg_json *val)
{
    if (!hg_json_is_array(arr) || val == NULL)
        return HG_ERR_INVALID;
    struct hg_json_item *it = hg_arena_alloc(a, sizeof(*it));
    if (it == NULL)
        return HG_ERR_NOMEM;
    it->key = NULL;
    it->key_len = 0;
    it->val = val;
    item_link(arr, it);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* writing                                                                                    */

/* The writer fills b's spare room through a local cursor and goes back to hg_buf_reserve only
 * when it runs out, so most tokens cost a compare and a store. */
struct writer {
    struct hg_buf *b;
    char *w;
    char *lim;      /* end of the room that b's allocation and cap allow (one byte kept for NUL) */
};

static int grow(struct writer *wr, size_t n)
{
    struct hg_buf *b = wr->b;
    b->len = (size_t)(wr->w - b->data);
    char *p = hg_buf_reserve(b, n);
    if (p == NULL)
        return HG_ERR_TOO_BIG;
    size_t room = HG_MIN(b->alloc - 1, b->max);
    wr->w = p;
    wr->lim = b->data + room;
    return 0;
}

static inline int need(struct writer *wr, size_t n)
{
    return HG_LIKELY((size_t)(wr->lim - wr->w) >= n) ? 0 : grow(wr, n);
}

static int write_string(struct writer *wr, const char *str, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *s = (const unsigned char *)str, *e = s + len;
    if (need(wr, 1))
        return HG_ERR_TOO_BIG;
    *wr->w++ = '"';
    for (;;) {
#ifdef HG_JSON_SWAR
        /* Copy 8 bytes at a time while testing them; the stop byte and what follows it are
         * overwritten later, only the cursor counts. */
        while (e - s >= 8) {
            if ((size_t)(wr->lim - wr->w) < 8 && grow(wr, 8))
                goto slow;
            uint64_t v;
            memcpy(&v, s, 8);
            memcpy(wr->w, &v, 8);
            uint64_t m = swar_write_stop(v);
            if (m) {
                unsigned k = (unsigned)__builtin_ctzll(m) >> 3;
                s += k;
                wr->w += k;
                goto stop;
            }
            s += 8;
            wr->w += 8;
        }
    slow:
#endif
        {
            const unsigned char *r = s;
            while (r < e && !write_stop[*r])
                r++;
            size_t n = (size_t)(r - s);
            if (n) {
                if (need(wr, n))
                    return HG_ERR_TOO_BIG;
                memcpy(wr->w, s, n);
                wr->w += n;
                s = r;
            }
        }
        if (s == e)
            break;
#ifdef HG_JSON_SWAR
    stop:
#endif
        {
            unsigned c = *s++;
            if (need(wr, 6))
                return HG_ERR_TOO_BIG;
            char *w = wr->w;
            *w++ = '\\';
            switch (c) {
            case '"': *w++ = '"'; break;
            case '\\': *w++ = '\\'; break;
            case '\b': *w++ = 'b'; break;
            case '\f': *w++ = 'f'; break;
            case '\n': *w++ = 'n'; break;
            case '\r': *w++ = 'r'; break;
            case '\t': *w++ = 't'; break;
            default: /* jansson: "\\u%04X" */
                *w++ = 'u';
                *w++ = '0';
                *w++ = '0';
                *w++ = hex[c >> 4];
                *w++ = hex[c & 15];
            }
            wr->w = w;
        }
        if (s == e)
            break;
    }
    if (need(wr, 1))
        return HG_ERR_TOO_BIG;
    *wr->w++ = '"';
    return 0;
}

static int write_value(struct writer *wr, const struct hg_json *v, int depth)
{
    int rc;
    switch (v->type) {
    case HG_JSON_NULL:
        if (need(wr, 4))
            return HG_ERR_TOO_BIG;
        memcpy(wr->w, "null", 4);
        wr->w += 4;
        return 0;
    case HG_JSON_TRUE:
        if (need(wr, 4))
            return HG_ERR_TOO_BIG;
        memcpy(wr->w, "true", 4);
        wr->w += 4;
        return 0;
    case HG_JSON_FALSE:
        if (need(wr, 5))
            return HG_ERR_TOO_BIG;
        memcpy(wr->w, "false", 5);
        wr->w += 5;
        return 0;
    case HG_JSON_NUMBER:
        if (need(wr, v->len))
            return HG_ERR_TOO_BIG;
        memcpy(wr->w, v->str, v->len);
        wr->w += v->len;
        return 0;
    case HG_JSON_STRING:
        return write_string(wr, v->str, v->len);
    case HG_JSON_ARRAY:
    case HG_JSON_OBJECT:
        break;
    default:
        return HG_ERR_INVALID;
    }
    if (depth >= TREE_MAX_DEPTH)
        return HG_ERR_INVALID;
    bool obj = v->type == HG_JSON_OBJECT;
    if (need(wr, 1))
        return HG_ERR_TOO_BIG;
    *wr->w++ = obj ? '{' : '[';
    for (const struct hg_json_item *it = v->head; it; it = it->next) {
        if (it != v->head) {
            if (need(wr, 1))
                return HG_ERR_TOO_BIG;
            *wr->w++ = ',';
        }
        if (obj) {
            if ((rc = write_string(wr, it->key, it->key_len)) != 0)
                return rc;
            if (need(wr, 1))
                return HG_ERR_TOO_BIG;
            *wr->w++ = ':';
        }
        if ((rc = write_value(wr, it->val, depth + 1)) != 0)
            return rc;
    }
    if (need(wr, 1))
        return HG_ERR_TOO_BIG;
    *wr->w++ = obj ? '}' : ']';
    return 0;
}

int hg_json_write(struct hg_buf *b, const struct hg_json *v)
{
    if (b == NULL || v == NULL)
        return HG_ERR_INVALID;
    size_t old = b->len;
    /* Reserving nothing still makes data non-NULL, so the cursor always points into it. */
    if (hg_buf_reserve(b, 0) == NULL)
        return HG_ERR_TOO_BIG;
    struct writer wr = {.b = b, .w = b->data + b->len, .lim = b->data + HG_MIN(b->alloc - 1, b->max)};
    int rc = write_value(&wr, v, 0);
    b->len = rc == 0 ? (size_t)(wr.w - b->data) : old;
    b->data[b->len] = '\0';
    return rc;
}

char *hg_json_dumps(const struct hg_json *v, size_t *len)
{
    struct hg_buf b;
    hg_buf_init(&b, SIZE_MAX / 2);
    /* An event is 1-2 KiB: one allocation instead of doubling up from hg_buf's 256 bytes. */
    if (hg_buf_reserve(&b, DUMPS_FIRST) == NULL || hg_json_write(&b, v) != 0) {
        hg_buf_free(&b);
        return NULL;
    }
    if (len)
        *len = b.len;
    return b.data;
}

/* ------------------------------------------------------------------------------------------ */
/* the jansson boundary                                                                       */

static struct hg_json *from_jansson(struct hg_arena *a, const json_t *j, int depth)
{
    if (j == NULL || depth > TREE_MAX_DEPTH)
        return NULL;
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        struct hg_json *obj = hg_json_object(a);
        if (obj == NULL)
            return NULL;
        const char *key;
        size_t key_len;
        json_t *val;
        /* jansson's API takes non-const objects; iterating does not modify it. */
        json_t *jo = (json_t *)j;
        json_object_keylen_foreach(jo, key, key_len, val) {
            struct hg_json *child = from_jansson(a, val, depth + 1);
            struct hg_json_item *it = child ? hg_arena_alloc(a, sizeof(*it) + key_len + 1) : NULL;
            if (it == NULL)
                return NULL;
            char *k = (char *)(it + 1);
            memcpy(k, key, key_len);
            k[key_len] = '\0';
            it->key = k;
            it->key_len = key_len;
            it->val = child;
            item_link(obj, it); /* jansson's keys are unique: no search */
        }
        return obj;
    }
    case JSON_ARRAY: {
        struct hg_json *arr = hg_json_array(a);
        if (arr == NULL)
            return NULL;
        size_t i;
        json_t *val;
        json_array_foreach(j, i, val) {
            struct hg_json *child = from_jansson(a, val, depth + 1);
            if (child == NULL || hg_json_append(a, arr, child) != 0)
                return NULL;
        }
        return arr;
    }
    case JSON_STRING:
        return hg_json_stringn(a, json_string_value(j), json_string_length(j));
    case JSON_INTEGER: {
        char buf[32];
        int n = snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(j));
        return text_node(a, HG_JSON_NUMBER, buf, (size_t)n);
    }
    case JSON_REAL:
        return hg_json_real(a, json_real_value(j));
    case JSON_TRUE:
        return hg_json_bool(true);
    case JSON_FALSE:
        return hg_json_bool(false);
    case JSON_NULL:
        return hg_json_null();
    }
    return NULL;
}

struct hg_json *hg_json_from_jansson(struct hg_arena *a, const json_t *j)
{
    return from_jansson(a, j, 0);
}

static json_t *to_jansson(const struct hg_json *v, int depth)
{
    if (v == NULL || depth > TREE_MAX_DEPTH)
        return NULL;
    switch (v->type) {
    case HG_JSON_NULL:
        return json_null();
    case HG_JSON_TRUE:
        return json_true();
    case HG_JSON_FALSE:
        return json_false();
    case HG_JSON_NUMBER: {
        long long i;
        if (hg_json_int(v, &i))
            return json_integer((json_int_t)i);
        /* A real, or an integer too big for json_int_t; json_real refuses what overflows. */
        return json_real(strtod(v->str, NULL));
    }
    case HG_JSON_STRING:
        return json_stringn(v->str, v->len);
    case HG_JSON_ARRAY: {
        json_t *arr = json_array();
        if (arr == NULL)
            return NULL;
        for (const struct hg_json_item *it = v->head; it; it = it->next) {
            if (json_array_append_new(arr, to_jansson(it->val, depth + 1)) != 0) {
                json_decref(arr);
                return NULL;
            }
        }
        return arr;
    }
    case HG_JSON_OBJECT: {
        json_t *obj = json_object();
        if (obj == NULL)
            return NULL;
        for (const struct hg_json_item *it = v->head; it; it = it->next) {
            /* setn_new takes the child's reference even when it fails. */
            if (json_object_setn_new(obj, it->key, it->key_len, to_jansson(it->val, depth + 1)) != 0) {
                json_decref(obj);
                return NULL;
            }
        }
        return obj;
    }
    }
    return NULL;
}

json_t *hg_json_to_jansson(const struct hg_json *v)
{
    return to_jansson(v, 0);
}

/*
 * hg_json: the JSON document of the per-webhook path, allocated in an arena.
 *
 * jansson took about 60 % of the instructions per webhook: a malloc per node and per string, a
 * hash table per object, refcounts, a character-at-a-time lexer and a callback per dumped token.
 * Here a parse is one pass over the bytes into arena nodes, an object is a short list searched
 * linearly (webhook objects have a handful of keys), a value can sit in several containers at once
 * (the normalizer shares the envelope's nodes with the events it builds), and the whole document is
 * released with its arena. jansson stays for configuration and the clients' small documents;
 * hg_json_from_jansson / hg_json_to_jansson cross the boundary.
 *
 * Semantics follow jansson's (JSON_ALLOW_NUL | JSON_DECODE_ANY): strict RFC 8259 grammar, one
 * top-level value of any type, valid UTF-8 only (no overlong forms,
 * no surrogates, nothing past U+10FFFF), \u escapes with surrogate pairs joined and a lone
 * surrogate refused, "\u0000" allowed (strings carry a length), control characters refused inside
 * strings, nesting deeper than HG_JSON_MAX_DEPTH refused (jansson: 2048). A repeated key keeps the
 * first key's position and the last value (jansson's json_object_set). Accepted where jansson 2.14
 * refused: NULs in keys, integers past long long and reals past a double, because a number keeps
 * its text exactly as sent (no range limit, no reformatting of reals) and is written back
 * unchanged. A webhook that says something valid in JSON is not refused for how it says it.
 */
#ifndef HG_CORE_JSON_H
#define HG_CORE_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/arena.h"
#include "core/buf.h"

#define HG_JSON_MAX_DEPTH 512

enum hg_json_type {
    HG_JSON_NULL,
    HG_JSON_FALSE,
    HG_JSON_TRUE,
    HG_JSON_NUMBER,
    HG_JSON_STRING,
    HG_JSON_ARRAY,
    HG_JSON_OBJECT,
};

struct hg_json_item;

struct hg_json {
    enum hg_json_type type;
    size_t len;                /* STRING: bytes (NULs possible); NUMBER: text length; ARRAY/OBJECT: members */
    const char *str;           /* STRING: the decoded bytes; NUMBER: the text; both NUL-terminated */
    struct hg_json_item *head; /* ARRAY/OBJECT: members in order */
    struct hg_json_item *tail;
};

/* A member of an array (key NULL) or an object. */
struct hg_json_item {
    struct hg_json_item *next;
    const char *key;           /* decoded, NUL-terminated (NULs possible: use key_len) */
    size_t key_len;
    struct hg_json *val;
};

struct hg_json_error {
    char text[96];             /* "unexpected character", "invalid UTF-8 in string", ... */
    int line;                  /* 1-based */
    int column;                /* 1-based, in bytes */
    size_t position;           /* byte offset */
};

/*
 * Parse `len` bytes (not necessarily NUL-terminated) into nodes in `a`. Strings and numbers are
 * copied into the arena: the document does not point into `text`. NULL on a syntax error (with
 * `err` filled when not NULL) or when the arena refuses memory (err->text "out of memory").
 */
struct hg_json *hg_json_parse(struct hg_arena *a, const char *text, size_t len, struct hg_json_error *err);

/* ---- reading: every function accepts NULL and the wrong type, and then answers NULL / 0 ---- */

static inline bool hg_json_is(const struct hg_json *v, enum hg_json_type t)
{
    return v != NULL && v->type == t;
}
#define hg_json_is_object(v) hg_json_is((v), HG_JSON_OBJECT)
#define hg_json_is_array(v)  hg_json_is((v), HG_JSON_ARRAY)
#define hg_json_is_string(v) hg_json_is((v), HG_JSON_STRING)
#define hg_json_is_number(v) hg_json_is((v), HG_JSON_NUMBER)
#define hg_json_is_null(v)   hg_json_is((v), HG_JSON_NULL)
static inline bool hg_json_is_bool(const struct hg_json *v)
{
    return v != NULL && (v->type == HG_JSON_TRUE || v->type == HG_JSON_FALSE);
}

/* The value under `key` in an object (the last one set), or NULL. */
struct hg_json *hg_json_get(const struct hg_json *obj, const char *key);
struct hg_json *hg_json_getn(const struct hg_json *obj, const char *key, size_t key_len);
/* The string's bytes (NUL-terminated) or NULL when v is not a string. */
static inline const char *hg_json_str(const struct hg_json *v)
{
    return hg_json_is_string(v) ? v->str : NULL;
}
/* Members of an array or object; 0 for anything else. */
static inline size_t hg_json_size(const struct hg_json *v)
{
    return v != NULL && (v->type == HG_JSON_ARRAY || v->type == HG_JSON_OBJECT) ? v->len : 0;
}
/* The first member of an array or object, or NULL: `for (it = hg_json_first(v); it; it = it->next)`. */
static inline struct hg_json_item *hg_json_first(const struct hg_json *v)
{
    return v != NULL && (v->type == HG_JSON_ARRAY || v->type == HG_JSON_OBJECT) ? v->head : NULL;
}
/* A number's value when it is an integer that fits (no fraction, no exponent): true and *out. */
bool hg_json_int(const struct hg_json *v, long long *out);

/* ---- building: NULL (or HG_ERR_NOMEM) only when the arena refuses memory ---- */

struct hg_json *hg_json_object(struct hg_arena *a);
struct hg_json *hg_json_array(struct hg_arena *a);
/* A string copied from s (n bytes; NULs allowed; must be valid UTF-8: the writer does not check). */
struct hg_json *hg_json_stringn(struct hg_arena *a, const char *s, size_t n);
struct hg_json *hg_json_string(struct hg_arena *a, const char *s);
struct hg_json *hg_json_integer(struct hg_arena *a, long long v);
/* A real written as jansson writes it ("%.17g", ".0" added when it reads as an integer, the
 * exponent without '+' or leading zeros: "1.0000000000000001e300"). NULL also for NaN and
 * infinities, which JSON cannot carry. */
struct hg_json *hg_json_real(struct hg_arena *a, double v);
/* true / false / null are shared constants: never NULL, never to be modified. */
struct hg_json *hg_json_bool(bool b);
struct hg_json *hg_json_null(void);

/*
 * Set obj[key] = val: replaces the value of an existing key in place, else appends. The key is
 * copied; val is referenced, not copied (one node may sit in several containers). 0, or
 * HG_ERR_INVALID (obj not an object, val NULL) / HG_ERR_NOMEM.
 */
int hg_json_set(struct hg_arena *a, struct hg_json *obj, const char *key, struct hg_json *val);
int hg_json_setn(struct hg_arena *a, struct hg_json *obj, const char *key, size_t key_len, struct hg_json *val);
/* Remove obj[key]; 0 when it was there, HG_ERR_NOT_FOUND when not (or obj is no object). */
int hg_json_del(struct hg_json *obj, const char *key);
/* Append val to an array: 0, HG_ERR_INVALID or HG_ERR_NOMEM. */
int hg_json_append(struct hg_arena *a, struct hg_json *arr, struct hg_json *val);

/* ---- writing ---- */

/*
 * Append v's compact JSON to b, byte for byte what jansson's json_dumps(JSON_COMPACT) writes for
 * the same tree (UTF-8 kept as is; '"', '\\' and control characters escaped, \b \f \n \r \t by
 * name, the rest as \u00XX; members in order). 0, or HG_ERR_TOO_BIG past b's cap (b is then as it
 * was), HG_ERR_INVALID for NULL or nesting past 2048 (a container appended to itself).
 */
int hg_json_write(struct hg_buf *b, const struct hg_json *v);
/* v's compact JSON in a malloc'd NUL-terminated string (*len its length), or NULL. */
char *hg_json_dumps(const struct hg_json *v, size_t *len);

/* ---- the jansson boundary ---- */

/* A deep copy of a jansson tree into `a` (integers and reals formatted as jansson dumps them);
 * NULL when the arena refuses memory or past 2048 levels. */
struct hg_json *hg_json_from_jansson(struct hg_arena *a, const json_t *j);
/* A new jansson tree (a new reference) equal to v; NULL on allocation failure. Numbers become
 * integers when they are integers that fit json_int_t, reals otherwise. NULL also where jansson
 * cannot hold the value: a number past a double (1e400), a built string that is not UTF-8. */
json_t *hg_json_to_jansson(const struct hg_json *v);

/* ---- an owned document: a tree and the arena it lives in, handed on as one pointer ---- */

struct hg_json_doc {
    struct hg_arena arena;
    struct hg_json *root;      /* NULL until set */
};

/* An empty document (root NULL) whose arena holds at most `cap` bytes (0 = no cap). Never NULL. */
struct hg_json_doc *hg_json_doc_new(size_t cap);
/* Release the document, its arena and every node in it. NULL is fine. */
void hg_json_doc_free(struct hg_json_doc *d);

/*
 * A document being built in an arena whose allocations may be refused (a capped arena): the first
 * refusal is remembered in `oom` instead of being checked at every call, and the builder drops the
 * document whole, never emits it half built. The normalizers build every event this way.
 */
struct hg_json_build {
    struct hg_arena *a;
    bool oom;
};
void hg_jb_set(struct hg_json_build *b, struct hg_json *obj, const char *key, struct hg_json *val);
void hg_jb_append(struct hg_json_build *b, struct hg_json *arr, struct hg_json *val);
struct hg_json *hg_jb_object(struct hg_json_build *b);
struct hg_json *hg_jb_array(struct hg_json_build *b);
struct hg_json *hg_jb_string(struct hg_json_build *b, const char *s);

#endif

/*
 * Unit tests for core/json: the arena parser and writer checked against jansson (the library it
 * replaces on the per-webhook path) on the fixtures, hand-written edge cases and random trees,
 * plus builders, lookups, the jansson boundary and arena exhaustion.
 */
#include <dirent.h>
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <jansson.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/err.h"
#include "core/json.h"

#define JFLAGS (JSON_ALLOW_NUL | JSON_DECODE_ANY)

/* ---- helpers ---- */

/* True when writing v cannot be byte-equal to jansson's dump of the same text: jansson reformats
 * reals and "-0" (hg keeps number text as sent). */
static bool has_free_number(const struct hg_json *v)
{
    if (hg_json_is_number(v))
        return strpbrk(v->str, ".eE") != NULL || strcmp(v->str, "-0") == 0;
    for (struct hg_json_item *it = hg_json_first(v); it; it = it->next)
        if (has_free_number(it->val))
            return true;
    return false;
}

static char *jdump(const json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    assert_non_null(s);
    return s;
}

static char *hdump(const struct hg_json *v, size_t *n)
{
    size_t len = 0;
    char *s = hg_json_dumps(v, &len);
    assert_non_null(s);
    assert_int_equal(strlen(s), len); /* escapes keep NULs out of the output */
    if (n)
        *n = len;
    return s;
}

/*
 * Parse with both libraries; they must agree on accept/reject. When both accept: hg's output
 * equals jansson's (when no number text is free-form), the jansson copy of hg's tree equals
 * jansson's tree, and hg's copy of jansson's tree writes exactly what jansson writes.
 * Returns whether the text was accepted.
 */
static bool differential_exact(const char *text, size_t len, const char *name);

static bool differential(const char *text, size_t len, const char *name)
{
    /* An exact-size heap copy: under ASan a read one byte past the input is caught. */
    char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, text, len);
    bool ok = differential_exact(copy, len, name);
    free(copy);
    return ok;
}

static bool differential_exact(const char *text, size_t len, const char *name)
{
    json_error_t je;
    json_t *j = json_loadb(text, len, JFLAGS, &je);
    struct hg_arena a;
    hg_arena_init(&a, 0);
    struct hg_json_error he;
    memset(&he, 0, sizeof(he));
    struct hg_json *v = hg_json_parse(&a, text, len, &he);
    if ((j != NULL) != (v != NULL))
        fail_msg("%s: jansson %s, hg %s", name, j ? "accepts" : je.text, v ? "accepts" : he.text);
    if (v != NULL) {
        char *want = jdump(j);
        if (!has_free_number(v)) {
            char *got = hdump(v, NULL);
            if (strcmp(got, want) != 0)
                fail_msg("%s: hg wrote\n%s\njansson wrote\n%s", name, got, want);
            free(got);
        }
        struct hg_json *copy = hg_json_from_jansson(&a, j);
        assert_non_null(copy);
        char *got = hdump(copy, NULL);
        assert_string_equal(got, want);
        free(got);
        json_t *back = hg_json_to_jansson(v);
        assert_non_null(back);
        if (!json_equal(back, j))
            fail_msg("%s: hg_json_to_jansson differs from jansson's parse", name);
        json_decref(back);
        free(want);
        json_decref(j);
    } else {
        assert_true(he.text[0] != '\0');
        assert_true(he.position <= len);
        assert_true(he.line >= 1);
        assert_true(he.column >= 1);
    }
    hg_arena_destroy(&a);
    return v != NULL;
}

/* hg rejects `text`; returns the error so callers can check where. */
static struct hg_json_error reject(const char *text, size_t len)
{
    struct hg_arena a;
    hg_arena_init(&a, 0);
    struct hg_json_error e;
    memset(&e, 0, sizeof(e));
    char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, text, len);
    struct hg_json *v = hg_json_parse(&a, copy, len, &e);
    if (v != NULL)
        fail_msg("accepted: %.*s", (int)(len > 80 ? 80 : len), text);
    free(copy);
    hg_arena_destroy(&a);
    return e;
}

static void read_file(const char *path, char **data, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    struct stat st;
    assert_int_equal(fstat(fileno(f), &st), 0);
    *data = malloc((size_t)st.st_size + 1);
    assert_non_null(*data);
    *len = fread(*data, 1, (size_t)st.st_size, f);
    assert_int_equal(*len, (size_t)st.st_size);
    fclose(f);
}

static void walk_fixtures(const char *dir, int *files, int *accepted)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        if (S_ISDIR(st.st_mode)) {
            walk_fixtures(path, files, accepted);
            continue;
        }
        char *data;
        size_t len;
        read_file(path, &data, &len);
        (*files)++;
        *accepted += differential(data, len, path);
        free(data);
    }
    closedir(d);
}

/* ---- 1. differential on the fixtures and hand-written documents ---- */

static void test_fixtures(void **state)
{
    (void)state;
    int files = 0, accepted = 0;
    walk_fixtures("../fixtures", &files, &accepted);
    /* 80 WhatsApp envelopes and expected events plus the media files (all refused). */
    assert_true(files >= 80);
    assert_true(accepted >= 78);
    assert_true(files - accepted >= 6);
}

#define S(lit) lit, sizeof(lit) - 1

static void test_tricky_documents(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        size_t len;
    } docs[] = {
        {S("{}")}, {S("[]")}, {S(" \t\r\n{ } \n")}, {S("[[[]],[{}],{\"\":[]}]")},
        {S("0")}, {S("-1")}, {S("123")}, {S("-9223372036854775808")}, {S("9223372036854775807")},
        {S("1.5")}, {S("-0.0")}, {S("1e10")}, {S("1E+2")}, {S("1e-2")}, {S("0.000001")},
        {S("true")}, {S("false")}, {S("null")}, {S("\"\"")}, {S("\"x\"")},
        {S("[true,false,null,0,\"\"]")},
        {S("\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t\"")},
        {S("\"\\u0041\\u00e9\\u20AC\\uD83D\\uDE00\\uFFFF\\uE000\"")},
        {S("\"\\u0000\"")}, {S("[\"a\\u0000b\", \"\\u0000\"]")},
        {S("\"\x7f \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf \xef\xbf\xbf\"")},
        {S("\"\\u001f\\u0001\\u007f\"")}, {S("\"a/b\"")},
        {S("{\"a\":1,\"b\":2,\"a\":3}")}, {S("{\"a\":{\"x\":1},\"a\":[1,2]}")},
        {S("{\"k\":\"v\",\"k\":\"w\",\"k\":\"x\"}")},
        {S("{\"\\u0061\":1,\"a\":2}")}, /* the same key, escaped and not */
        {S("[1,\n2,\n3]")}, {S("{\"a\" : [ 1 , 2 ] , \"b\" : { } }")},
        {S("\"a very long string with no escapes at all, longer than sixteen bytes for the fast path\"")},
        {S("\"long string with an escape at the end of a block\\n and more text after the escape ...\"")},
        /* What must be refused, by both. */
        {S("")}, {S("   ")}, {S("[1,]")}, {S("{\"a\":1,}")}, {S("01")}, {S("-")}, {S("1.")}, {S(".5")},
        {S("1e")}, {S("1e+")}, {S("NaN")}, {S("Infinity")}, {S("-Infinity")}, {S("+1")}, {S("0x10")},
        {S("\"abc")}, {S("\"a\tb\"")}, {S("\"a\nb\"")}, {S("\"\\x\"")}, {S("\"\\ud800\"")},
        {S("\"\\udc00\"")}, {S("\"\\ud800\\u0041\"")}, {S("\"\\ud800x\"")}, {S("\"\\ud800\\ue000\"")}, {S("\"\\udbff\\udbff\"")},
        {S("\"\\ud800\\udc0\"")}, {S("\"\\ud800\\\"")},
        {S("\"\\u12\"")}, {S("\"\\u12G4\"")}, {S("\"\xc0\x80\"")}, {S("\"\xe0\x80\x80\"")},
        {S("\"\xed\xa0\x80\"")}, {S("\"\xf5\x80\x80\x80\"")}, {S("\"\xf4\x90\x80\x80\"")},
        {S("\"\xe2\x82")}, {S("\"\xf0\x9f\x98")}, {S("\"\xf0\x9f")}, {S("\"\xf0")}, {S("\"\xc3")},
        {S("\"\\")}, {S("\"\\u12")}, {S("[\"\\ud83d\\ude0")}, {S("-1.5e")}, {S("[tru")}, {S("fals")}, {S("\"\xe2\x82\"")}, {S("\"\x80\"")}, {S("\"\xff\"")}, {S("{} {}")},
        {S("[1] x")}, {S("1 2")}, {S("tru")}, {S("truex")}, {S("nul")}, {S("[")}, {S("{")},
        {S("{\"a\"}")}, {S("{\"a\" 1}")}, {S("[1 2]")}, {S("{1:2}")}, {S("{'a':1}")}, {S("[1,,2]")},
        {S("/* c */ {}")}, {S("{} // c")}, {S("\xef\xbb\xbf{}")}, {S("\0")}, {S("[\"a\"\0]")},
        {S("\"\\u0000")}, {S("[-]")}, {S("[1.e5]")}, {S("[00]")}, {S("[-01]")},
    };
    int accepted = 0;
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        char name[64];
        snprintf(name, sizeof(name), "document %zu", i);
        accepted += differential(docs[i].text, docs[i].len, name);
    }
    assert_int_equal(accepted, 36);
}

/* ---- 2. rejections with their positions ---- */

static void test_rejections(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        size_t len;
        size_t pos;
    } bad[] = {
        {S("[1,]"), 3}, {S("{\"a\":1,}"), 7}, {S("01"), 1}, {S("-"), 1}, {S("1."), 2}, {S(".5"), 0},
        {S("1e"), 2}, {S("NaN"), 0}, {S("\"abc"), 4}, {S("\"a\tb\""), 2}, {S("\"a\nb\""), 2},
        {S("\"\\x\""), 1}, {S("\"\\ud800\""), 1}, {S("\"\\udc00\""), 1}, {S("\"\\ud800\\u0041\""), 1},
        {S("\"\xc0\x80\""), 1}, {S("\"\xe0\x80\x80\""), 1}, {S("\"\xed\xa0\x80\""), 1},
        {S("\"\xf5\x80\x80\x80\""), 1}, {S("\"ab\xe2\x82"), 3}, {S("{} {}"), 3}, {S(""), 0},
        {S("  \n "), 4}, {S("[1] x"), 4}, {S("{\"a\" 1}"), 5}, {S("[1 2]"), 3},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct hg_json_error e = reject(bad[i].text, bad[i].len);
        if (e.position != bad[i].pos)
            fail_msg("case %zu (%s): position %zu, want %zu", i, e.text, e.position, bad[i].pos);
        assert_true(strlen(e.text) > 5);
        /* jansson refuses each as well. */
        json_error_t je;
        assert_null(json_loadb(bad[i].text, bad[i].len, JFLAGS, &je));
    }

    /* Texts say what went wrong. */
    assert_string_equal(reject(S("\"\xc0\x80\"")).text, "invalid UTF-8 in string");
    assert_string_equal(reject(S("\"a\tb\"")).text, "control character in string");
    assert_string_equal(reject(S("\"\x1f\"")).text, "control character in string");
    assert_string_equal(reject(S("\"\x00\"")).text, "control character in string");
    assert_string_equal(reject(S("\"\x80\"")).text, "invalid UTF-8 in string");
    assert_string_equal(reject(S("\"\\udc00\"")).text, "invalid Unicode surrogate in string");
    assert_string_equal(reject(S("{} {}")).text, "end of input expected");

    /* Line and column (1-based, bytes) of an error on a later line. */
    struct hg_json_error e = reject(S("{\n  \"a\": [1,\n    tru]\n}"));
    assert_int_equal(e.line, 3);
    assert_int_equal(e.column, 5);
    assert_int_equal(e.position, 17);
    e = reject(S("x"));
    assert_int_equal(e.line, 1);
    assert_int_equal(e.column, 1);
    assert_int_equal(e.position, 0);

    /* A NULL error pointer is fine. */
    struct hg_arena a;
    hg_arena_init(&a, 0);
    assert_null(hg_json_parse(&a, "[", 1, NULL));
    hg_arena_destroy(&a);
}

static char *nested(int depth, size_t *len)
{
    char *s = malloc((size_t)depth * 2 + 1);
    assert_non_null(s);
    memset(s, '[', (size_t)depth);
    memset(s + depth, ']', (size_t)depth);
    s[depth * 2] = '\0';
    *len = (size_t)depth * 2;
    return s;
}

static void test_depth(void **state)
{
    (void)state;
    struct hg_arena a;
    hg_arena_init(&a, 0);
    size_t len;
    char *s = nested(HG_JSON_MAX_DEPTH, &len);
    struct hg_json *v = hg_json_parse(&a, s, len, NULL);
    assert_non_null(v);
    char *out = hdump(v, NULL);
    assert_string_equal(out, s);
    free(out);
    free(s);

    s = nested(HG_JSON_MAX_DEPTH + 1, &len);
    struct hg_json_error e = reject(s, len);
    assert_int_equal(e.position, HG_JSON_MAX_DEPTH);
    assert_string_equal(e.text, "maximum nesting depth exceeded");
    free(s);

    /* Objects count too, mixed with arrays. */
    char buf[HG_JSON_MAX_DEPTH * 8 + 16];
    size_t n = 0;
    for (int i = 0; i <= HG_JSON_MAX_DEPTH; i++)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, i % 2 ? "[" : "{\"k\":");
    e = reject(buf, n);
    assert_string_equal(e.text, "maximum nesting depth exceeded");

    /* Far deeper than any stack: refused, not a crash. */
    s = nested(1000000, &len);
    e = reject(s, len);
    assert_int_equal(e.position, HG_JSON_MAX_DEPTH);
    free(s);
    hg_arena_destroy(&a);
}

/* ---- 3. what hg accepts that jansson refused, and the details of accepted values ---- */

static void test_acceptance(void **state)
{
    (void)state;
    struct hg_arena a;
    hg_arena_init(&a, 0);
    json_error_t je;

    /* "\u0000" in a string: the length counts it, the writer escapes it. */
    struct hg_json *v = hg_json_parse(&a, S("\"a\\u0000b\""), NULL);
    assert_non_null(v);
    assert_int_equal(v->len, 3);
    assert_memory_equal(v->str, "a\0b", 4);
    char *out = hdump(v, NULL);
    assert_string_equal(out, "\"a\\u0000b\"");
    free(out);

    /* ...and in a key (jansson 2.14 refuses NUL in keys: a deliberate difference of the header). */
    v = hg_json_parse(&a, S("{\"k\\u0000z\":1,\"k\":2}"), NULL);
    assert_non_null(v);
    assert_null(json_loadb("{\"k\\u0000z\":1}", 14, JFLAGS, &je));
    assert_int_equal(hg_json_size(v), 2);
    assert_int_equal(hg_json_first(v)->key_len, 3);
    assert_memory_equal(hg_json_first(v)->key, "k\0z", 4);
    assert_string_equal(hg_json_getn(v, "k\0z", 3)->str, "1");
    assert_string_equal(hg_json_get(v, "k")->str, "2");
    out = hdump(v, NULL);
    assert_string_equal(out, "{\"k\\u0000z\":1,\"k\":2}");
    free(out);
    json_t *j = hg_json_to_jansson(v);
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_object_getn(j, "k\0z", 3)), 1);
    json_decref(j);

    /* A surrogate pair is one 4-byte UTF-8 sequence. */
    v = hg_json_parse(&a, S("\"\\ud83d\\ude00\""), NULL);
    assert_non_null(v);
    assert_int_equal(v->len, 4);
    assert_memory_equal(v->str, "\xf0\x9f\x98\x80", 5);
    v = hg_json_parse(&a, S("\"\\uDBFF\\uDFFF\""), NULL);
    assert_memory_equal(v->str, "\xf4\x8f\xbf\xbf", 5);

    /* Big integers: accepted, text kept, not an int (jansson refused them). */
    assert_null(json_loadb(S("99999999999999999999999"), JFLAGS, &je));
    v = hg_json_parse(&a, S("[99999999999999999999999,-99999999999999999999999,1e400]"), NULL);
    assert_non_null(v);
    long long ll = 7;
    assert_false(hg_json_int(hg_json_first(v)->val, &ll));
    assert_int_equal(ll, 7);
    out = hdump(v, NULL);
    assert_string_equal(out, "[99999999999999999999999,-99999999999999999999999,1e400]");
    free(out);

    /* Reals are kept verbatim. */
    v = hg_json_parse(&a, S("[1.50,1E+02,-0.0e-0,0.1]"), NULL);
    out = hdump(v, NULL);
    assert_string_equal(out, "[1.50,1E+02,-0.0e-0,0.1]");
    free(out);
    assert_false(hg_json_int(hg_json_first(v)->val, &ll));

    /* Every type at top level, with whitespace around. */
    static const struct {
        const char *text;
        enum hg_json_type type;
        const char *out;
    } tops[] = {
        {" null ", HG_JSON_NULL, "null"}, {"\ttrue\n", HG_JSON_TRUE, "true"},
        {"false", HG_JSON_FALSE, "false"}, {" -12 ", HG_JSON_NUMBER, "-12"},
        {"\r\n\"s\"\r\n", HG_JSON_STRING, "\"s\""}, {" [ ] ", HG_JSON_ARRAY, "[]"},
        {" { } ", HG_JSON_OBJECT, "{}"},
    };
    for (size_t i = 0; i < sizeof(tops) / sizeof(tops[0]); i++) {
        v = hg_json_parse(&a, tops[i].text, strlen(tops[i].text), NULL);
        assert_non_null(v);
        assert_int_equal(v->type, tops[i].type);
        out = hdump(v, NULL);
        assert_string_equal(out, tops[i].out);
        free(out);
    }

    /* The input need not be NUL-terminated, and the document does not point into it. */
    char *buf = malloc(16);
    memcpy(buf, "{\"ab\":\"cd\"}", 11);
    v = hg_json_parse(&a, buf, 11, NULL);
    memset(buf, 'x', 11);
    free(buf);
    assert_string_equal(hg_json_str(hg_json_get(v, "ab")), "cd");

    /* Escapes decoded: the writer escapes back what needs it, no more. */
    v = hg_json_parse(&a, S("\"\\/\\u0041\\u00e9\\u001F\\u007f\\b\""), NULL);
    assert_string_equal(v->str, "/A\xc3\xa9\x1f\x7f\b");
    out = hdump(v, NULL);
    assert_string_equal(out, "\"/A\xc3\xa9\\u001F\x7f\\b\"");
    free(out);

    /* Reading functions tolerate NULL and the wrong type. */
    assert_null(hg_json_get(NULL, "a"));
    assert_null(hg_json_get(v, "a"));
    assert_null(hg_json_str(NULL));
    assert_null(hg_json_str(hg_json_null()));
    assert_int_equal(hg_json_size(v), 0);
    assert_null(hg_json_first(v));
    assert_false(hg_json_int(v, &ll));
    assert_false(hg_json_int(NULL, &ll));
    hg_arena_destroy(&a);
}

static void test_int(void **state)
{
    (void)state;
    struct hg_arena a;
    hg_arena_init(&a, 0);
    static const struct {
        const char *text;
        bool ok;
        long long want;
    } cases[] = {
        {"0", true, 0}, {"-0", true, 0}, {"42", true, 42}, {"-42", true, -42},
        {"9223372036854775807", true, LLONG_MAX}, {"-9223372036854775808", true, LLONG_MIN},
        {"9223372036854775808", false, 0}, {"-9223372036854775809", false, 0},
        {"18446744073709551616", false, 0}, {"1.0", false, 0}, {"1e2", false, 0}, {"1E2", false, 0},
        {"100000000000000000000000000000", false, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct hg_json *v = hg_json_parse(&a, cases[i].text, strlen(cases[i].text), NULL);
        assert_non_null(v);
        long long got = 12345;
        assert_int_equal(hg_json_int(v, &got), cases[i].ok);
        assert_int_equal(got, cases[i].ok ? cases[i].want : 12345);
    }
    long long got;
    assert_true(hg_json_int(hg_json_integer(&a, LLONG_MIN), &got));
    assert_int_equal(got, LLONG_MIN);
    assert_false(hg_json_int(hg_json_string(&a, "1"), &got));
    hg_arena_destroy(&a);
}

/* ---- 4. repeated keys ---- */

/* Both libraries on `text`: same output, and hg's object has `size` members. */
static void check_dup(const char *text, size_t len, size_t size)
{
    struct hg_arena a;
    hg_arena_init(&a, 0);
    struct hg_json *v = hg_json_parse(&a, text, len, NULL);
    assert_non_null(v);
    assert_int_equal(hg_json_size(v), size);
    size_t n = 0;
    struct hg_json_item *last = NULL;
    for (struct hg_json_item *it = hg_json_first(v); it; it = it->next, n++)
        last = it;
    assert_int_equal(n, size); /* len matches the list */
    assert_ptr_equal(last, v->tail);
    json_error_t je;
    json_t *j = json_loadb(text, len, JFLAGS, &je);
    assert_non_null(j);
    assert_int_equal(json_object_size(j), size);
    char *want = jdump(j), *got = hdump(v, NULL);
    assert_string_equal(got, want);
    free(want);
    free(got);
    json_decref(j);
    /* The tail is usable after a collapse: appending lands last. */
    assert_int_equal(hg_json_set(&a, v, "zz-new", hg_json_null()), 0);
    assert_ptr_equal(v->tail->val, hg_json_null());
    assert_int_equal(hg_json_size(v), size + 1);
    hg_arena_destroy(&a);
}

static void test_duplicate_keys(void **state)
{
    (void)state;
    struct hg_arena a;
    hg_arena_init(&a, 0);
    struct hg_json *v = hg_json_parse(&a, S("{\"a\":1,\"b\":2,\"a\":3}"), NULL);
    assert_int_equal(hg_json_size(v), 2);
    assert_string_equal(hg_json_first(v)->key, "a");
    assert_string_equal(hg_json_first(v)->val->str, "3");
    assert_string_equal(hg_json_first(v)->next->key, "b");
    assert_ptr_equal(hg_json_first(v)->next, v->tail);
    assert_string_equal(hg_json_get(v, "a")->str, "3");
    hg_arena_destroy(&a);

    check_dup(S("{\"a\":1,\"b\":2,\"a\":3}"), 2);
    check_dup(S("{\"a\":1,\"a\":2,\"a\":3}"), 1);
    check_dup(S("{\"x\":1,\"a\":1,\"b\":2,\"a\":{\"n\":[1]},\"b\":4,\"x\":[]}"), 3);

    /* 20 keys with repeats: the sorted path. Repeats of early, late and last keys, a key that
     * appears four times, and one whose last occurrence is the last member. */
    char buf[4096];
    size_t n = (size_t)snprintf(buf, sizeof(buf), "{");
    for (int i = 0; i < 20; i++)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "\"k%d\":%d,", i, i);
    n += (size_t)snprintf(buf + n, sizeof(buf) - n,
                          "\"k3\":\"three\",\"k17\":[17],\"k0\":{},\"k3\":33,\"new\":1,\"k3\":\"last\",\"k19\":-19}");
    check_dup(buf, n, 21);

    /* Exactly at the switch between the two ways: 16 and 17 distinct keys, repeats after. */
    for (int distinct = 15; distinct <= 18; distinct++) {
        n = (size_t)snprintf(buf, sizeof(buf), "{");
        for (int i = 0; i < distinct; i++)
            n += (size_t)snprintf(buf + n, sizeof(buf) - n, "\"k%d\":%d,", i, i);
        for (int i = 0; i < distinct; i += 3)
            n += (size_t)snprintf(buf + n, sizeof(buf) - n, "\"k%d\":%d,", i, -i);
        buf[n - 1] = '}';
        check_dup(buf, n, (size_t)distinct);
    }
}

static void test_many_keys(void **state)
{
    (void)state;
    enum { KEYS = 100000 };
    size_t cap = (size_t)KEYS * 2 * 24 + 16;
    char *buf = malloc(cap);
    assert_non_null(buf);

    /* 100k distinct keys. */
    size_t n = (size_t)snprintf(buf, cap, "{");
    for (int i = 0; i < KEYS; i++)
        n += (size_t)snprintf(buf + n, cap - n, "\"key%d\":%d,", i, i);
    buf[n - 1] = '}';
    struct hg_arena a;
    hg_arena_init(&a, 0);
    struct hg_json *v = hg_json_parse(&a, buf, n, NULL);
    assert_non_null(v);
    assert_int_equal(hg_json_size(v), KEYS);
    assert_string_equal(hg_json_get(v, "key0")->str, "0");
    assert_string_equal(hg_json_get(v, "key99999")->str, "99999");
    assert_string_equal(hg_json_get(v, "key54321")->str, "54321");
    assert_string_equal(v->tail->key, "key99999");
    hg_arena_destroy(&a);

    /* Each of 50k keys twice, the second time after all the first ones, plus one key 50k times:
     * first position, last value, in a stable order. */
    n = (size_t)snprintf(buf, cap, "{");
    for (int i = 0; i < KEYS; i++) {
        if (i % 2)
            n += (size_t)snprintf(buf + n, cap - n, "\"same\":%d,", i);
        else
            n += (size_t)snprintf(buf + n, cap - n, "\"k%d\":%d,", i / 2 % 25000, i);
    }
    buf[n - 1] = '}';
    hg_arena_init(&a, 0);
    v = hg_json_parse(&a, buf, n, NULL);
    assert_non_null(v);
    assert_int_equal(hg_json_size(v), 25001);
    struct hg_json_item *it = hg_json_first(v);
    assert_string_equal(it->key, "k0");
    assert_string_equal(it->val->str, "50000"); /* k0 at i = 0 and i = 50000 */
    it = it->next;
    assert_string_equal(it->key, "same");
    assert_string_equal(it->val->str, "99999");
    assert_string_equal(it->next->key, "k1");
    assert_string_equal(v->tail->key, "k24999");
    assert_string_equal(v->tail->val->str, "99998");
    json_error_t je;
    json_t *j = json_loadb(buf, n, JFLAGS, &je);
    assert_non_null(j);
    char *want = jdump(j), *got = hdump(v, NULL);
    assert_string_equal(got, want);
    free(want);
    free(got);
    json_decref(j);
    hg_arena_destroy(&a);
    free(buf);
}

/* ---- 5. random trees ---- */

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
    /* xorshift64*: seeded, the same on every run. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ULL) >> 32) % n;
}

static size_t put_utf8(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static size_t random_text(char *o, size_t max_chars)
{
    size_t n = 0, chars = rnd(4) == 0 ? rnd(40) : rnd((uint32_t)max_chars + 1);
    for (size_t i = 0; i < chars; i++) {
        uint32_t cp;
        switch (rnd(12)) {
        case 0: cp = rnd(0x20); break;                      /* controls, NUL included */
        case 1: cp = "\"\\/"[rnd(3)]; break;
        case 2: cp = 0x7f; break;
        case 3: cp = 0x80 + rnd(0x780); break;              /* 2 bytes */
        case 4: cp = 0x800 + rnd(0xD800 - 0x800); break;    /* 3 bytes below the surrogates */
        case 5: cp = 0xE000 + rnd(0x2000); break;           /* 3 bytes above them */
        case 6: cp = 0x1F600 + rnd(0x50); break;            /* emoji */
        case 7: cp = 0x10000 + rnd(0x100000); break;        /* any 4 bytes */
        default: cp = 0x20 + rnd(0x5f); break;               /* printable ASCII */
        }
        n += put_utf8(o + n, cp);
    }
    return n;
}

static json_t *random_tree(int depth)
{
    char text[400];
    switch (rnd(depth >= 5 ? 6 : 9)) {
    case 0: return json_null();
    case 1: return json_true();
    case 2: return json_false();
    case 3: {
        static const json_int_t edges[] = {0, -1, 1, LLONG_MAX, LLONG_MIN, 1000000007};
        if (rnd(4) == 0)
            return json_integer(edges[rnd(6)]);
        return json_integer((json_int_t)rnd(2000000) - 1000000);
    }
    case 4:
    case 5: {
        size_t n = random_text(text, 60);
        return json_stringn(text, n);
    }
    case 6:
    case 7: {
        json_t *o = json_object();
        int members = (int)rnd(7);
        for (int i = 0; i < members; i++) {
            size_t n = random_text(text, 12);
            json_object_setn_new(o, text, n, random_tree(depth + 1));
        }
        return o;
    }
    default: {
        json_t *arr = json_array();
        int members = (int)rnd(7);
        for (int i = 0; i < members; i++)
            json_array_append_new(arr, random_tree(depth + 1));
        return arr;
    }
    }
}

static void parse_and_compare(struct hg_arena *a, const char *text, const char *want)
{
    struct hg_json_error e;
    struct hg_json *v = hg_json_parse(a, text, strlen(text), &e);
    if (v == NULL)
        fail_msg("refused (%s at %zu): %s", e.text, e.position, text);
    char *got = hdump(v, NULL);
    if (strcmp(got, want) != 0)
        fail_msg("wrote\n%s\nwant\n%s", got, want);
    free(got);
}

static void test_random_trees(void **state)
{
    (void)state;
    rng_state = 0x9E3779B97F4A7C15ULL;
    struct hg_arena a;
    hg_arena_init(&a, 0);
    for (int iter = 0; iter < 3000; iter++) {
        json_t *j = random_tree(0);
        assert_non_null(j);
        char *compact = jdump(j);
        parse_and_compare(&a, compact, compact);
        char *pretty = json_dumps(j, JSON_INDENT(2) | JSON_ENCODE_ANY);
        parse_and_compare(&a, pretty, compact);
        /* Every non-ASCII character as \u escapes (surrogate pairs past the BMP). */
        char *ascii = json_dumps(j, JSON_ENSURE_ASCII | JSON_ESCAPE_SLASH | JSON_ENCODE_ANY);
        parse_and_compare(&a, ascii, compact);
        /* Across the boundary both ways. */
        struct hg_json *copy = hg_json_from_jansson(&a, j);
        char *got = hdump(copy, NULL);
        assert_string_equal(got, compact);
        free(got);
        /* Compared as text: jansson 2.14's json_equal looks keys up with strlen, so keys with NULs
         * never compare equal. */
        json_t *back = hg_json_to_jansson(copy);
        assert_non_null(back);
        got = jdump(back);
        assert_string_equal(got, compact);
        free(got);
        json_decref(back);
        free(compact);
        free(pretty);
        free(ascii);
        json_decref(j);
        hg_arena_reset(&a);
    }
    hg_arena_destroy(&a);
}

/* Every string of one or two bytes, and three-byte strings over an interesting set of bytes,
 * as JSON string contents: hg and jansson agree on each. */
/*
 * Webhook bodies damaged at random (1-4 bytes replaced, inserted or deleted, from an alphabet of
 * JSON syntax, escapes and multibyte UTF-8 pieces): both libraries must agree on every one, except
 * where jansson refuses what hg accepts by design (big numbers, a NUL in a key).
 */
static void test_mutations_vs_jansson(void **state)
{
    (void)state;
    static const char alphabet[] = "{}[]\",:\\0123456789-+.eEtrufalsn \t\n\x80\xc3\xa9\xed\xa0\x80\xf0\x9f\x98"
                                   "\x80u0000";
    static const char *const fixtures[] = { "text.json", "batched.json", "emoji_and_escapes.json",
                                            "contacts_full.json", "interactive_nfm_reply.json" };
    int accepted = 0, rejected = 0;
    rng_state = 0x6a09e667f3bcc908ull;
    for (size_t fi = 0; fi < sizeof(fixtures) / sizeof(fixtures[0]); fi++) {
        char path[256], *base;
        size_t n;
        snprintf(path, sizeof(path), "../fixtures/whatsapp/%s", fixtures[fi]);
        read_file(path, &base, &n);
        char *buf = malloc(n + 8);
        assert_non_null(buf);
        for (int it = 0; it < 1000; it++) {
            memcpy(buf, base, n);
            size_t len = n;
            for (uint32_t m = 0, k = 1 + rnd(4); m < k; m++) {
                size_t pos = rnd((uint32_t)len);
                char c = alphabet[rnd(sizeof(alphabet) - 1)];
                uint32_t op = rnd(3);
                if (op == 0) {
                    buf[pos] = c;
                } else if (op == 1 && len < n + 8) {
                    memmove(buf + pos + 1, buf + pos, len - pos);
                    buf[pos] = c;
                    len++;
                } else if (len > 1) {
                    memmove(buf + pos, buf + pos + 1, len - pos - 1);
                    len--;
                }
            }
            json_error_t je;
            json_t *j = json_loadb(buf, len, JFLAGS, &je);
            json_decref(j);
            if (j == NULL && (strstr(je.text, "too big") || strstr(je.text, "overflow") ||
                              strstr(je.text, "NUL byte in object key"))) {
                /* jansson stopped at its first error; the body may hold another one later. */
                struct hg_arena a;
                hg_arena_init(&a, 0);
                (void)hg_json_parse(&a, buf, len, NULL);
                hg_arena_destroy(&a);
                continue;
            }
            if (differential(buf, len, fixtures[fi]))
                accepted++;
            else
                rejected++;
        }
        free(buf);
        free(base);
    }
    /* The mutations must exercise both sides. */
    assert_true(accepted > 300);
    assert_true(rejected > 1000);
}

static void test_exhaustive_short_strings(void **state)
{
    (void)state;
    static const unsigned char pick[] = {0x00, 0x09, 0x1f, 0x20, '"', '\\', 'u', 'a', '0', 0x7f, 0x80,
                                         0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0,
                                         0xe1, 0xec, 0xed, 0xee, 0xef, 0xf0, 0xf1, 0xf3, 0xf4, 0xf5, 0xff};
    char doc[8];
    int accepted = 0;
    for (int x = 0; x < 256; x++) {
        doc[0] = '"';
        doc[1] = (char)x;
        doc[2] = '"';
        accepted += differential(doc, 3, "1-byte string");
        for (int y = 0; y < 256; y++) {
            doc[2] = (char)y;
            doc[3] = '"';
            accepted += differential(doc, 4, "2-byte string");
        }
    }
    for (size_t i = 0; i < sizeof(pick); i++)
        for (size_t k = 0; k < sizeof(pick); k++)
            for (size_t m = 0; m < sizeof(pick); m++)
                for (size_t l = 0; l < sizeof(pick); l++) {
                    doc[1] = (char)pick[i];
                    doc[2] = (char)pick[k];
                    doc[3] = (char)pick[m];
                    doc[4] = (char)pick[l];
                    doc[5] = '"';
                    accepted += differential(doc, 6, "4-byte string");
                }
    assert_true(accepted > 10000);
}

/* Strings of every length 0..40 with one special byte at every position: the 8-byte scans of
 * parser and writer see it at every offset, next to every block boundary. */
static void test_string_offsets(void **state)
{
    (void)state;
    static const char *const special[] = {"\\n", "\\u0001", "\\\"", "\\\\", "\xc3\xa9", "\xf0\x9f\x98\x80", "\\u0000"};
    char doc[128];
    for (size_t len = 0; len <= 40; len++) {
        for (size_t at = 0; at <= len; at++) {
            for (size_t s = 0; s < sizeof(special) / sizeof(special[0]); s++) {
                size_t n = 0;
                doc[n++] = '"';
                for (size_t i = 0; i < at; i++)
                    doc[n++] = (char)('a' + i % 26);
                memcpy(doc + n, special[s], strlen(special[s]));
                n += strlen(special[s]);
                for (size_t i = at; i < len; i++)
                    doc[n++] = (char)('A' + i % 26);
                doc[n++] = '"';
                assert_true(differential(doc, n, "offset string"));
                /* The same with the closing quote missing, and with a raw control byte. */
                assert_false(differential(doc, n - 1, "unterminated"));
                doc[1 + at] = '\x01';
                assert_false(differential(doc, n, "raw control"));
            }
        }
    }
}

/* ---- 6. builders, setters, writer ---- */

static void test_builders(void **state)
{
    (void)state;
    struct hg_arena a;
    hg_arena_init(&a, 0);
    struct hg_json *obj = hg_json_object(&a), *arr = hg_json_array(&a);
    assert_int_equal(hg_json_set(&a, obj, "id", hg_json_string(&a, "w1")), 0);
    assert_int_equal(hg_json_set(&a, obj, "n", hg_json_integer(&a, -5)), 0);
    assert_int_equal(hg_json_set(&a, obj, "ok", hg_json_bool(true)), 0);
    assert_int_equal(hg_json_set(&a, obj, "no", hg_json_bool(false)), 0);
    assert_int_equal(hg_json_set(&a, obj, "nil", hg_json_null()), 0);
    assert_int_equal(hg_json_append(&a, arr, hg_json_stringn(&a, "a\0b", 3)), 0);
    assert_int_equal(hg_json_append(&a, arr, hg_json_real(&a, 2.5)), 0);
    assert_int_equal(hg_json_append(&a, arr, obj), 0); /* shared: obj sits in two places */
    assert_int_equal(hg_json_set(&a, obj, "list", arr), 0);
    assert_int_equal(hg_json_del(obj, "list"), 0);
    assert_int_equal(hg_json_set(&a, obj, "list", hg_json_array(&a)), 0);
    char *out = hdump(arr, NULL);
    assert_string_equal(out, "[\"a\\u0000b\",2.5,{\"id\":\"w1\",\"n\":-5,\"ok\":true,\"no\":false,\"nil\":null,\"list\":[]}]");
    free(out);

    /* Replacing keeps the position; deleting head, middle and tail keeps the list sound. */
    assert_int_equal(hg_json_set(&a, obj, "n", hg_json_string(&a, "five")), 0);
    assert_int_equal(hg_json_size(obj), 6);
    assert_int_equal(hg_json_del(obj, "id"), 0);
    assert_int_equal(hg_json_del(obj, "no"), 0);
    assert_int_equal(hg_json_del(obj, "list"), 0);
    assert_int_equal(hg_json_del(obj, "list"), HG_ERR_NOT_FOUND);
    assert_int_equal(hg_json_del(obj, "absent"), HG_ERR_NOT_FOUND);
    assert_int_equal(hg_json_size(obj), 3);
    assert_int_equal(hg_json_set(&a, obj, "tail", hg_json_integer(&a, 1)), 0);
    out = hdump(obj, NULL);
    assert_string_equal(out, "{\"n\":\"five\",\"ok\":true,\"nil\":null,\"tail\":1}");
    free(out);
    assert_int_equal(hg_json_del(obj, "n"), 0);
    assert_int_equal(hg_json_del(obj, "ok"), 0);
    assert_int_equal(hg_json_del(obj, "nil"), 0);
    assert_int_equal(hg_json_del(obj, "tail"), 0);
    assert_null(obj->head);
    assert_null(obj->tail);
    assert_int_equal(hg_json_set(&a, obj, "again", hg_json_null()), 0);
    out = hdump(obj, NULL);
    assert_string_equal(out, "{\"again\":null}");
    free(out);

    /* Keys with NULs through setn/getn. */
    assert_int_equal(hg_json_setn(&a, obj, "x\0y", 3, hg_json_integer(&a, 1)), 0);
    assert_int_equal(hg_json_setn(&a, obj, "x", 1, hg_json_integer(&a, 2)), 0);
    assert_int_equal(hg_json_setn(&a, obj, "x\0y", 3, hg_json_integer(&a, 3)), 0);
    assert_int_equal(hg_json_size(obj), 3);
    assert_string_equal(hg_json_getn(obj, "x\0y", 3)->str, "3");
    assert_string_equal(hg_json_get(obj, "x")->str, "2");
    assert_int_equal(hg_json_setn(&a, obj, "", 0, hg_json_null()), 0);
    assert_ptr_equal(hg_json_get(obj, ""), hg_json_null());

    /* Refusals: not a container, a shared constant, a NULL value. */
    assert_int_equal(hg_json_set(&a, arr, "k", hg_json_null()), HG_ERR_INVALID);
    assert_int_equal(hg_json_set(&a, hg_json_null(), "k", hg_json_null()), HG_ERR_INVALID);
    assert_int_equal(hg_json_set(&a, obj, "k", NULL), HG_ERR_INVALID);
    assert_int_equal(hg_json_set(NULL, NULL, "k", hg_json_null()), HG_ERR_INVALID);
    assert_int_equal(hg_json_append(&a, obj, hg_json_null()), HG_ERR_INVALID);
    assert_int_equal(hg_json_append(&a, hg_json_bool(true), hg_json_null()), HG_ERR_INVALID);
    assert_int_equal(hg_json_append(&a, arr, NULL), HG_ERR_INVALID);
    assert_int_equal(hg_json_del(hg_json_bool(false), "k"), HG_ERR_NOT_FOUND);
    assert_int_equal(hg_json_bool(true)->type, HG_JSON_TRUE);
    assert_int_equal(hg_json_bool(false)->type, HG_JSON_FALSE);
    assert_int_equal(hg_json_null()->type, HG_JSON_NULL);
    assert_int_equal(hg_json_size(hg_json_null()), 0);

    assert_string_equal(hg_json_integer(&a, LLONG_MIN)->str, "-9223372036854775808");
    assert_string_equal(hg_json_integer(&a, 0)->str, "0");
    assert_string_equal(hg_json_string(&a, "")->str, "");
    assert_int_equal(hg_json_stringn(&a, NULL, 0)->len, 0);
    assert_null(hg_json_string(&a, NULL));

    /* A container inside itself: refused by the writer, not a stack overflow. */
    struct hg_json *loop = hg_json_array(&a);
    assert_int_equal(hg_json_append(&a, loop, loop), 0);
    assert_null(hg_json_dumps(loop, NULL));
    hg_arena_destroy(&a);
}

static void test_real_format(void **state)
{
    (void)state;
    static const double reals[] = {0.1, 1e300, -0.0, 0.0, 3.0, 123456789.0, 5e-324, 1e-5, 1e21, 1e16,
                                   1e15, -2.5, 1.0 / 3, 2.2250738585072014e-308, 1.7976931348623157e308,
                                   100.0, 1e-7, 123e-20, 6.02214076e23, -1e-300, 0.5, 1e100};
    struct hg_arena a;
    hg_arena_init(&a, 0);
    for (size_t i = 0; i < sizeof(reals) / sizeof(reals[0]); i++) {
        json_t *j = json_real(reals[i]);
        char *want = jdump(j);
        struct hg_json *v = hg_json_real(&a, reals[i]);
        assert_non_null(v);
        assert_string_equal(v->str, want);
        assert_int_equal(v->len, strlen(want));
        /* The text reads back as the same double. */
        assert_true(strtod(v->str, NULL) == reals[i]);
        json_t *back = hg_json_to_jansson(v);
        assert_true(json_is_real(back));
        assert_true(json_equal(back, j));
        json_decref(back);
        free(want);
        json_decref(j);
    }
    assert_string_equal(hg_json_real(&a, 1e300)->str, "1.0000000000000001e300");
    assert_string_equal(hg_json_real(&a, 3.0)->str, "3.0");
    assert_string_equal(hg_json_real(&a, -0.0)->str, "-0.0");
    assert_string_equal(hg_json_real(&a, 1e-5)->str, "1.0000000000000001e-5");
    /* JSON has no NaN or infinity; jansson's json_real refuses them too. */
    assert_null(hg_json_real(&a, NAN));
    assert_null(hg_json_real(&a, INFINITY));
    hg_arena_destroy(&a);
}

static void test_escapes_vs_jansson(void **state)
{
    (void)state;
    /* Every byte below 0x80 as a string, written by both (checks jansson's "\\u%04X" casing). */
    struct hg_arena a;
    hg_arena_init(&a, 0);
    for (int c = 0; c < 0x80; c++) {
        char s[3] = {'x', (char)c, 'y'};
        json_t *j = json_stringn(s, 3);
        char *want = jdump(j);
        struct hg_json *v = hg_json_stringn(&a, s, 3);
        char *got = hdump(v, NULL);
        assert_string_equal(got, want);
        free(got);
        free(want);
        json_decref(j);
    }
    struct hg_json *v = hg_json_stringn(&a, "\x1f", 1);
    char *got = hdump(v, NULL);
    assert_string_equal(got, "\"\\u001F\"");
    free(got);
    hg_arena_destroy(&a);
}

static void test_write_cap(void **state)
{
    (void)state;
    struct hg_arena a;
    hg_arena_init(&a, 0);
    const char *doc = "{\"a\":\"0123456789\\n0123456789\",\"b\":[1,2,3,true,null,\"\\u0001\"]}";
    struct hg_json *v = hg_json_parse(&a, doc, strlen(doc), NULL);
    assert_non_null(v);
    size_t full;
    char *want = hdump(v, &full);
    assert_string_equal(want, doc);
    /* Every cap below the size fails and leaves the buffer as it was; the exact size fits. */
    for (size_t cap = 0; cap <= full + 3; cap++) {
        struct hg_buf b;
        hg_buf_init(&b, cap + 3);
        assert_int_equal(hg_buf_append(&b, "ab:", 3), 0);
        int rc = hg_json_write(&b, v);
        if (cap < full) {
            assert_int_equal(rc, HG_ERR_TOO_BIG);
            assert_int_equal(b.len, 3);
            assert_string_equal(hg_buf_cstr(&b), "ab:");
        } else {
            assert_int_equal(rc, 0);
            assert_int_equal(b.len, full + 3);
            assert_memory_equal(b.data + 3, want, full);
            assert_int_equal(b.data[b.len], '\0');
        }
        hg_buf_free(&b);
    }
    /* Appending to a buffer that grows many times over a long document. */
    struct hg_buf b;
    hg_buf_init(&b, 1 << 20);
    for (int i = 0; i < 200; i++)
        assert_int_equal(hg_json_write(&b, v), 0);
    assert_int_equal(b.len, 200 * full);
    assert_memory_equal(b.data + 199 * full, want, full);
    hg_buf_free(&b);
    free(want);
    assert_int_equal(hg_json_write(NULL, v), HG_ERR_INVALID);
    hg_buf_init(&b, 100);
    assert_int_equal(hg_json_write(&b, NULL), HG_ERR_INVALID);
    hg_buf_free(&b);
    assert_null(hg_json_dumps(NULL, NULL));
    hg_arena_destroy(&a);
}

static void test_jansson_boundary(void **state)
{
    (void)state;
    struct hg_arena a;
    hg_arena_init(&a, 0);
    json_error_t je;
    const char *doc = "{\"z\":1,\"a\":[1.5,-7,\"s\\u0000t\",{\"k\":null}],\"m\":true,\"big\":9223372036854775807,"
                      "\"r\":1e-7,\"f\":false}";
    json_t *j = json_loads(doc, JSON_ALLOW_NUL, &je);
    assert_non_null(j);
    struct hg_json *v = hg_json_from_jansson(&a, j);
    assert_non_null(v);
    /* Insertion order kept, as jansson iterates it. */
    assert_string_equal(hg_json_first(v)->key, "z");
    assert_string_equal(v->tail->key, "f");
    char *got = hdump(v, NULL), *want = jdump(j);
    assert_string_equal(got, want);
    assert_string_equal(got, "{\"z\":1,\"a\":[1.5,-7,\"s\\u0000t\",{\"k\":null}],\"m\":true,"
                             "\"big\":9223372036854775807,\"r\":9.9999999999999995e-8,\"f\":false}");
    free(got);
    free(want);
    struct hg_json *s = hg_json_first(hg_json_get(v, "a"))->next->next->val;
    assert_int_equal(s->len, 3);
    json_t *back = hg_json_to_jansson(v);
    assert_true(json_equal(back, j));
    assert_true(json_is_integer(json_object_get(back, "big")));
    assert_true(json_is_real(json_array_get(json_object_get(back, "a"), 0)));
    assert_true(json_is_integer(json_array_get(json_object_get(back, "a"), 1)));
    json_decref(back);
    json_decref(j);

    /* A number too big for json_int_t becomes a real; one past a double's range is refused. */
    v = hg_json_parse(&a, S("[99999999999999999999999,1.0,-0]"), NULL);
    back = hg_json_to_jansson(v);
    assert_non_null(back);
    assert_true(json_is_real(json_array_get(back, 0)));
    assert_true(json_real_value(json_array_get(back, 0)) == 1e23);
    assert_true(json_is_real(json_array_get(back, 1)));
    assert_true(json_is_integer(json_array_get(back, 2)));
    json_decref(back);
    v = hg_json_parse(&a, S("{\"a\":[1e400]}"), NULL);
    assert_non_null(v);
    assert_null(hg_json_to_jansson(v));
    /* Invalid UTF-8 can only come from a builder; jansson refuses it, NULL without a leak. */
    struct hg_json *o = hg_json_object(&a);
    assert_int_equal(hg_json_set(&a, o, "ok", hg_json_integer(&a, 1)), 0);
    assert_int_equal(hg_json_set(&a, o, "bad", hg_json_stringn(&a, "\xff", 1)), 0);
    assert_null(hg_json_to_jansson(o));
    assert_null(hg_json_to_jansson(NULL));
    assert_null(hg_json_from_jansson(&a, NULL));
    hg_arena_destroy(&a);
}

/* ---- 7. arena cap ---- */

static void test_arena_cap(void **state)
{
    (void)state;
    char *data;
    size_t len;
    read_file("../fixtures/whatsapp/batched.json", &data, &len);
    struct hg_arena a;
    hg_arena_init(&a, 64);
    struct hg_json_error e;
    assert_null(hg_json_parse(&a, data, len, &e));
    assert_string_equal(e.text, "out of memory");
    hg_arena_destroy(&a);

    /* Every cap from tiny upwards fails cleanly with "out of memory" until one is enough; past
     * that the document is complete. Under ASan this also proves nothing leaks or overruns. */
    size_t cap = 16;
    for (;; cap += 16) {
        hg_arena_init(&a, cap);
        struct hg_json *v = hg_json_parse(&a, data, len, &e);
        if (v != NULL) {
            json_error_t je;
            json_t *j = json_loadb(data, len, JFLAGS, &je);
            char *want = jdump(j), *got = hdump(v, NULL);
            assert_string_equal(got, want);
            free(want);
            free(got);
            json_decref(j);
            hg_arena_destroy(&a);
            break;
        }
        assert_string_equal(e.text, "out of memory");
        assert_true(e.position < len);
        hg_arena_destroy(&a);
        assert_true(cap < len * 64);
    }
    /* The document costs a few times its text, not more. */
    assert_true(cap < len * 8);

    /* A big object under a cap: refused by the cap, including in the sorted path. */
    char buf[8192];
    size_t n = (size_t)snprintf(buf, sizeof(buf), "{");
    for (int i = 0; i < 200; i++)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "\"k%d\":\"%d\",", i % 150, i);
    buf[n - 1] = '}';
    hg_arena_init(&a, 4096);
    assert_null(hg_json_parse(&a, buf, n, &e));
    assert_string_equal(e.text, "out of memory");
    hg_arena_destroy(&a);

    /* The builders answer NULL / HG_ERR_NOMEM. */
    hg_arena_init(&a, 64);
    struct hg_json *obj = hg_json_object(&a);
    assert_non_null(obj);
    assert_null(hg_json_string(&a, "0123456789012345678901234567890123456789"));
    assert_int_equal(hg_json_set(&a, obj, "0123456789012345678901234567890123456789", hg_json_null()), HG_ERR_NOMEM);
    assert_null(hg_json_array(&a));
    hg_arena_destroy(&a);
    free(data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixtures),
        cmocka_unit_test(test_tricky_documents),
        cmocka_unit_test(test_rejections),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_acceptance),
        cmocka_unit_test(test_int),
        cmocka_unit_test(test_duplicate_keys),
        cmocka_unit_test(test_many_keys),
        cmocka_unit_test(test_random_trees),
        cmocka_unit_test(test_mutations_vs_jansson),
        cmocka_unit_test(test_exhaustive_short_strings),
        cmocka_unit_test(test_string_offsets),
        cmocka_unit_test(test_builders),
        cmocka_unit_test(test_real_format),
        cmocka_unit_test(test_escapes_vs_jansson),
        cmocka_unit_test(test_write_cap),
        cmocka_unit_test(test_jansson_boundary),
        cmocka_unit_test(test_arena_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

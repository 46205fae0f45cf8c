/*
 * libFuzzer harness for core/json.c, the hand-written parser every webhook body goes through, with
 * jansson (whose semantics it follows, core/json.h) as the reference:
 *   - a document hg_json_parse accepts writes out (hg_json_write), and that text parses again to
 *     a document that writes out byte for byte the same (the writer's output is valid JSON and
 *     the round trip is stable); every member of an object is found again by hg_json_getn;
 *   - accepted or refused as jansson decides (JSON_DECODE_ANY | JSON_ALLOW_NUL), except where
 *     core/json.h says they differ: nesting past HG_JSON_MAX_DEPTH (refused here), NULs in keys
 *     and numbers past long long / double (accepted here), and a NUL byte outside strings, which
 *     jansson's reader takes for the end of the input (refused here, as RFC 8259 says);
 *   - when both accept, the trees are equal (hg_json_to_jansson + json_equal), and jansson's tree
 *     copied in (hg_json_from_jansson) writes out exactly what json_dumps(JSON_COMPACT) writes.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/json.h"

static void fail(const char *what, const uint8_t *data, size_t size)
{
    fprintf(stderr, "fuzz_json: %s (input %zu bytes)\n", what, size);
    abort();
}

/* Every member of every object is found by its key (a parsed object holds each key once). */
static void check_lookup(const struct hg_json *v, int depth)
{
    if (depth > HG_JSON_MAX_DEPTH + 1)
        abort();
    size_t n = 0;
    for (struct hg_json_item *it = hg_json_first(v); it; it = it->next, n++) {
        if (v->type == HG_JSON_OBJECT && hg_json_getn(v, it->key, it->key_len) != it->val)
            abort();
        check_lookup(it->val, depth + 1);
    }
    if (n != hg_json_size(v))
        abort();
    long long ll;
    if (v->type == HG_JSON_NUMBER)
        (void)hg_json_int(v, &ll);
}

/* Is jansson's refusal one core/json.h documents as accepted here? */
static bool jansson_refusal_documented(const json_error_t *je)
{
    enum json_error_code code = json_error_code(je);
    return code == json_error_numeric_overflow || code == json_error_null_byte_in_key;
}

/*
 * Deepest nesting of the text's containers, counting brackets outside strings; *nul set when a
 * NUL byte stands outside a string (jansson's reader takes it as the end of the input and
 * accepts "2\0"; RFC 8259 has no such whitespace, and core/json.c refuses it).
 */
static size_t depth_of(const uint8_t *d, size_t n, bool *nul)
{
    *nul = false;
    size_t depth = 0, max = 0;
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        if (in_str) {
            if (d[i] == '\\')
                i++;
            else if (d[i] == '"')
                in_str = false;
        } else if (d[i] == '"') {
            in_str = true;
        } else if (d[i] == '\0') {
            *nul = true;
        } else if (d[i] == '[' || d[i] == '{') {
            if (++depth > max)
                max = depth;
        } else if ((d[i] == ']' || d[i] == '}') && depth > 0) {
            depth--;
        }
    }
    return max;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct hg_arena a;
    struct hg_json_error err;
    hg_arena_init(&a, 64u << 20);
    struct hg_json *v = hg_json_parse(&a, (const char *)data, size, &err);

    json_error_t je;
    json_t *j = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);

    bool nul;
    if (v == NULL && j != NULL && depth_of(data, size, &nul) <= HG_JSON_MAX_DEPTH && !nul)
        fail("refused what jansson accepts", data, size);
    if (v != NULL && j == NULL && !jansson_refusal_documented(&je)) {
        fprintf(stderr, "fuzz_json: jansson: %s at %d:%d\n", je.text, je.line, je.column);
        fail("accepted what jansson refuses", data, size);
    }

    if (v != NULL) {
        check_lookup(v, 0);
        struct hg_buf out1, out2;
        hg_buf_init(&out1, 256u << 20);
        hg_buf_init(&out2, 256u << 20);
        if (hg_json_write(&out1, v) != 0)
            fail("a parsed document does not write out", data, size);
        struct hg_arena b;
        hg_arena_init(&b, 64u << 20);
        struct hg_json *w = hg_json_parse(&b, out1.data, out1.len, &err);
        if (w == NULL) {
            fprintf(stderr, "fuzz_json: %s at %d:%d\n", err.text, err.line, err.column);
            fail("the written document does not parse again", data, size);
        }
        if (hg_json_write(&out2, w) != 0 || out1.len != out2.len || memcmp(out1.data, out2.data, out1.len) != 0)
            fail("parse(write(doc)) writes out differently", data, size);
        if (j != NULL) {
            json_t *mine = hg_json_to_jansson(v);
            if (mine == NULL || !json_equal(mine, j))
                fail("the parsed tree differs from jansson's", data, size);
            json_decref(mine);
        }
        hg_buf_free(&out1);
        hg_buf_free(&out2);
        hg_arena_destroy(&b);
    }

    if (j != NULL) {
        /* The writer matches json_dumps byte for byte on jansson's own tree. */
        struct hg_arena c;
        hg_arena_init(&c, 64u << 20);
        struct hg_json *copy = hg_json_from_jansson(&c, j);
        char *text = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
        struct hg_buf out;
        hg_buf_init(&out, 256u << 20);
        if (copy != NULL && text != NULL) {
            if (hg_json_write(&out, copy) != 0 || out.len != strlen(text) || memcmp(out.data, text, out.len) != 0) {
                fprintf(stderr, "fuzz_json: jansson wrote %s\n", text);
                fail("the writer departs from json_dumps", data, size);
            }
        }
        free(text);
        hg_buf_free(&out);
        hg_arena_destroy(&c);
        json_decref(j);
    }
    hg_arena_destroy(&a);
    return 0;
}

/* Tests for src/core/str: percent decoding (strict and lenient, '+' as space or not, caps). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "core/err.h"
#include "core/str.h"

/* Decode s with flags into a buffer of len(s) bytes; returns the code, the result in out. */
static int decode(const char *s, unsigned flags, char *out, size_t *out_len)
{
    return hg_percent_decode(s, strlen(s), flags, out, strlen(s), out_len);
}

static void expect_ok(const char *s, unsigned flags, const char *want, size_t want_len)
{
    char out[256];
    size_t n = 9999;
    assert_int_equal(decode(s, flags, out, &n), 0);
    assert_int_equal(n, want_len);
    assert_memory_equal(out, want, want_len);
}

/* A malformed escape: *out_len says where its '%' is. */
static void expect_bad_at(const char *s, unsigned flags, size_t at)
{
    char out[256];
    size_t n = 9999;
    assert_int_equal(decode(s, flags, out, &n), HG_ERR_PARSE);
    assert_int_equal(n, at);
}

static void test_escapes(void **state)
{
    (void)state;
    expect_ok("", 0, "", 0);
    expect_ok("plain-text_1.2~", 0, "plain-text_1.2~", 15);
    expect_ok("a%20b", 0, "a b", 3);
    expect_ok("%2f%2F", 0, "//", 2);                     /* either case */
    expect_ok("%41%62%7A%5a", 0, "AbzZ", 4);
    expect_ok("%E2%82%AC", 0, "\xe2\x82\xac", 3);        /* UTF-8 bytes pass through */
    expect_ok("x%00y", 0, "x\0y", 3);                    /* NUL is a byte like any other */
    expect_ok("%25", 0, "%", 1);                         /* an escaped '%' is not read again */
    expect_ok("%2541", 0, "%41", 3);
    expect_ok("%ff", 0, "\xff", 1);
}

static void test_plus(void **state)
{
    (void)state;
    expect_ok("a+b", 0, "a+b", 3);                       /* RFC 3986: '+' is itself */
    expect_ok("a+b", HG_PERCENT_PLUS, "a b", 3);         /* forms and queries: a space */
    expect_ok("%2B+", HG_PERCENT_PLUS, "+ ", 2);         /* an escaped '+' stays a '+' */
    expect_ok("hub.challenge=1+2%3D3", HG_PERCENT_PLUS, "hub.challenge=1 2=3", 19);
}

static void test_malformed(void **state)
{
    (void)state;
    const struct {
        const char *s;
        size_t at;
    } bad[] = {
        { "%", 0 }, { "%4", 0 }, { "a%", 1 }, { "ab%4", 2 }, { "%4g", 0 }, { "%g4", 0 },
        { "%%41", 0 }, { "% 1", 0 }, { "%-1", 0 }, { "%+1", 0 }, { "%\xff\xff", 0 },
        { "a%20b%2", 5 }, { "x+y%41%zz", 6 },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        expect_bad_at(bad[i].s, 0, bad[i].at);
        expect_bad_at(bad[i].s, HG_PERCENT_PLUS, bad[i].at);
    }
}

static void test_lenient(void **state)
{
    (void)state;
    /* a broken escape is kept as written; the good ones around it still decode */
    expect_ok("%", HG_PERCENT_LENIENT, "%", 1);
    expect_ok("100%", HG_PERCENT_LENIENT, "100%", 4);
    expect_ok("%4", HG_PERCENT_LENIENT, "%4", 2);
    expect_ok("%zz%41", HG_PERCENT_LENIENT, "%zzA", 4);
    expect_ok("%%41", HG_PERCENT_LENIENT, "%A", 2);
    expect_ok("a+%2x", HG_PERCENT_LENIENT | HG_PERCENT_PLUS, "a %2x", 5);
}

static void test_cap(void **state)
{
    (void)state;
    char out[8];
    size_t n = 0;
    /* exactly fits */
    assert_int_equal(hg_percent_decode("abc%41", 6, 0, out, 4, &n), 0);
    assert_int_equal(n, 4);
    assert_memory_equal(out, "abcA", 4);
    /* one byte short */
    n = 77;
    assert_int_equal(hg_percent_decode("abc%41", 6, 0, out, 3, &n), HG_ERR_TOO_BIG);
    assert_int_equal(n, 77);
    assert_int_equal(hg_percent_decode("a", 1, 0, out, 0, &n), HG_ERR_TOO_BIG);
    assert_int_equal(hg_percent_decode("", 0, 0, out, 0, &n), 0);
    assert_int_equal(n, 0);
    /* len bounds the input: what lies after it is not read */
    assert_int_equal(hg_percent_decode("ab%41", 3, HG_PERCENT_LENIENT, out, sizeof(out), &n), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(out, "ab%", 3);
    assert_int_equal(hg_percent_decode("ab%41", 4, 0, out, sizeof(out), &n), HG_ERR_PARSE);
}

static void test_in_place(void **state)
{
    (void)state;
    char buf[] = "a%20b+c%2Fd";
    size_t n = 0;
    assert_int_equal(hg_percent_decode(buf, strlen(buf), HG_PERCENT_PLUS, buf, strlen(buf), &n), 0);
    assert_int_equal(n, 7);
    assert_memory_equal(buf, "a b c/d", 7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escapes),
        cmocka_unit_test(test_plus),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_lenient),
        cmocka_unit_test(test_cap),
        cmocka_unit_test(test_in_place),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

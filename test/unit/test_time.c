/* Unit tests for src/core/time: RFC 3339 parsing against formatting, civil-date round trips. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "core/err.h"
#include "core/time.h"

static int64_t parse_ok(const char *s)
{
    int64_t ms = INT64_MIN;
    if (hg_time_parse_rfc3339(s, strlen(s), &ms) != 0)
        fail_msg("'%s' did not parse", s);
    return ms;
}

static void parse_bad(const char *s)
{
    int64_t ms = 42;
    if (hg_time_parse_rfc3339(s, strlen(s), &ms) != HG_ERR_PARSE)
        fail_msg("'%s' parsed", s);
    assert_int_equal(ms, 42);
}

static void test_parse(void **state)
{
    /* Values from Python: int(datetime.fromisoformat(s).timestamp() * 1000). */
    assert_int_equal(parse_ok("2025-02-12T00:43:44Z"), 1739321024000);
    assert_int_equal(parse_ok("2025-02-12T00:43:44.512Z"), 1739321024512);
    assert_int_equal(parse_ok("2025-02-12t00:43:44.5z"), 1739321024500);
    assert_int_equal(parse_ok("2025-02-12T00:43:44.123456789Z"), 1739321024123);
    assert_int_equal(parse_ok("2025-02-11T19:43:44-05:00"), 1739321024000);
    assert_int_equal(parse_ok("2025-02-12T06:13:44+05:30"), 1739321024000);
    assert_int_equal(parse_ok("1970-01-01T00:00:00Z"), 0);
    assert_int_equal(parse_ok("1969-12-31T23:59:59Z"), -1000);
    assert_int_equal(parse_ok("2024-02-29T12:00:00Z"), 1709208000000);
    assert_int_equal(parse_ok("2016-12-31T23:59:60Z"), 1483228799000);   /* leap second */
    parse_bad("");
    parse_bad("2025-02-12");
    parse_bad("2025-02-12T00:43:44");         /* no zone */
    parse_bad("2025-02-12 00:43:44Z");
    parse_bad("2025-02-30T00:00:00Z");
    parse_bad("2025-02-29T00:00:00Z");
    parse_bad("2025-13-01T00:00:00Z");
    parse_bad("2025-01-01T24:00:00Z");
    parse_bad("2025-01-01T00:60:00Z");
    parse_bad("2025-01-01T00:00:00.Z");
    parse_bad("2025-01-01T00:00:00Zx");
    parse_bad("2025-01-01T00:00:00+0500");
    parse_bad("2025-01-01T00:00:00+24:00");
    parse_bad("1739321024");
    /* Not NUL-terminated: only n bytes are read. */
    int64_t ms = 0;
    assert_int_equal(hg_time_parse_rfc3339("2025-02-12T00:43:44Zjunk", 20, &ms), 0);
    assert_int_equal(ms, 1739321024000);
}

static void test_round_trip(void **state)
{
    /* Every day from 1900 to 2200 through both conversions, and formatting then parsing. */
    for (int64_t days = -25567; days < 84000; days++) {
        int64_t y;
        unsigned m, d;
        hg_time_civil_from_days(days, &y, &m, &d);
        assert_int_equal(hg_time_days_from_civil(y, m, d), days);
        if (days >= 0 && days % 97 == 0) {
            char buf[40];
            uint64_t ns = (uint64_t)days * 86400000000000ull + 45296789000000ull;   /* 12:34:56.789 */
            hg_time_rfc3339(buf, sizeof(buf), ns, 3);
            assert_int_equal(parse_ok(buf), (int64_t)(ns / 1000000));
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

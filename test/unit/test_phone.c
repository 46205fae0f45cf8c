/* Unit tests for E.164 parsing and the country calling code table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/err.h"
#include "providers/phone.h"

static void expect_phone(const char *in, const char *e164, const char *cc, const char *region)
{
    struct hg_phone p;
    assert_int_equal(hg_phone_parse(in, strlen(in), &p), 0);
    assert_string_equal(p.e164, e164);
    assert_string_equal(p.cc, cc);
    if (region == NULL)
        assert_null(p.region);
    else
        assert_string_equal(p.region, region);
}

static void test_countries(void **state)
{
    expect_phone("16505551234", "+16505551234", "1", "US");
    expect_phone("5511987654321", "+5511987654321", "55", "BR");
    expect_phone("447911123456", "+447911123456", "44", "GB");
    expect_phone("4915123456789", "+4915123456789", "49", "DE");
    expect_phone("919876543210", "+919876543210", "91", "IN");
    expect_phone("2348012345678", "+2348012345678", "234", "NG");
    expect_phone("353871234567", "+353871234567", "353", "IE");
    expect_phone("525512345678", "+525512345678", "52", "MX");
    expect_phone("8613812345678", "+8613812345678", "86", "CN");
    expect_phone("97150123456", "+97150123456", "971", "AE");
    expect_phone("6281234567890", "+6281234567890", "62", "ID");
    expect_phone("27821234567", "+27821234567", "27", "ZA");
    expect_phone("59899123456", "+59899123456", "598", "UY");
}

static void test_shared_codes(void **state)
{
    /* NANP: Toronto, Jamaica, Puerto Rico; unknown area code stays US. */
    expect_phone("14165551234", "+14165551234", "1", "CA");
    expect_phone("18765551234", "+18765551234", "1", "JM");
    expect_phone("17875551234", "+17875551234", "1", "PR");
    expect_phone("12125551234", "+12125551234", "1", "US");
    /* +7: Kazakhstan by 7 6/7, else Russia. */
    expect_phone("77011234567", "+77011234567", "7", "KZ");
    expect_phone("79161234567", "+79161234567", "7", "RU");
    /* Crown dependency, Åland. */
    expect_phone("447781123456", "+447781123456", "44", "GB");
    expect_phone("441534123456", "+441534123456", "44", "JE");
    expect_phone("358181234567", "+358181234567", "358", "AX");
    /* Non-geographic: code known, no region. */
    expect_phone("80012345678", "+80012345678", "800", NULL);
    expect_phone("88213012345", "+88213012345", "882", NULL);
}

static void test_formatting(void **state)
{
    expect_phone("+1 (650) 555-1234", "+16505551234", "1", "US");
    expect_phone("55.11.98765.4321", "+5511987654321", "55", "BR");
}

static void test_invalid(void **state)
{
    struct hg_phone p;
    const char *bad[] = {"1650555",                 /* 7 digits */
                         "1234567890123456",        /* 16 digits */
                         "06505551234",             /* leading 0 */
                         "US.13491208655302741918", /* a business-scoped user id */
                         "1650555123x",
                         "1+6505551234",
                         ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (hg_phone_parse(bad[i], strlen(bad[i]), &p) != HG_ERR_PARSE)
            fail_msg("accepted \"%s\"", bad[i]);
    }
    /* Boundaries: 8 and 15 digits. */
    assert_int_equal(hg_phone_parse("49301234", 8, &p), 0);
    assert_string_equal(p.e164, "+49301234");
    assert_int_equal(hg_phone_parse("491234567890123", 15, &p), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_countries),
        cmocka_unit_test(test_shared_codes),
        cmocka_unit_test(test_formatting),
        cmocka_unit_test(test_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Tests for src/core/cidr: address and CIDR parsing, IPv4-mapped IPv6, matching, allow / deny. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "core/cidr.h"
#include "core/err.h"

static struct hg_ip ip(const char *s)
{
    struct hg_ip a;
    if (hg_ip_parse(s, strlen(s), &a) != 0)
        fail_msg("'%s' did not parse", s);
    return a;
}

static void expect_format(const char *in, const char *want)
{
    struct hg_ip a = ip(in);
    char out[HG_IP_TEXT_MAX];
    assert_string_equal(hg_ip_format(&a, out, sizeof(out)), want);
}

static void test_ip_parse(void **state)
{
    (void)state;
    struct hg_ip a;
    expect_format("192.0.2.7", "192.0.2.7");
    expect_format("::1", "::1");
    expect_format("2001:DB8:0:0::1", "2001:db8::1");
    /* An IPv4-mapped IPv6 address is the IPv4 address. */
    expect_format("::ffff:192.0.2.7", "192.0.2.7");
    expect_format("::ffff:c000:0207", "192.0.2.7");
    a = ip("::ffff:127.0.0.1");
    assert_true(hg_ip_is_v4(&a));
    a = ip("::1");
    assert_false(hg_ip_is_v4(&a));
    /* Not an address: ports, brackets, zones, octal-looking or short quads, junk, empty, too long. */
    const char *bad[] = { "", "192.0.2.7:80", "[::1]", "fe80::1%eth0", "192.0.2.07", "192.0.2", "1.2.3.256",
                          "localhost", " 192.0.2.7", "192.0.2.7 ", "::g", "1:2:3:4:5:6:7:8:9",
                          "0000:0000:0000:0000:0000:0000:0000:0000:0000" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (hg_ip_parse(bad[i], strlen(bad[i]), &a) != HG_ERR_PARSE)
            fail_msg("'%s' parsed", bad[i]);
    /* The length counts, not a NUL: "10.0.0.1" within a longer buffer. */
    assert_int_equal(hg_ip_parse("10.0.0.1,10.0.0.2", 8, &a), 0);
    expect_format("10.0.0.1", "10.0.0.1");
    /* An embedded NUL is not an address. */
    assert_int_equal(hg_ip_parse("10.0.0.1\0", 9, &a), HG_ERR_PARSE);
}

static void test_from_sockaddr(void **state)
{
    (void)state;
    struct sockaddr_in a4 = { .sin_family = AF_INET };
    inet_pton(AF_INET, "198.51.100.9", &a4.sin_addr);
    struct hg_ip a;
    char out[HG_IP_TEXT_MAX];
    assert_int_equal(hg_ip_from_sockaddr((struct sockaddr *)&a4, &a), 0);
    assert_string_equal(hg_ip_format(&a, out, sizeof(out)), "198.51.100.9");
    /* A dual-stack socket's IPv4 client arrives as ::ffff:a.b.c.d: the same address. */
    struct sockaddr_in6 a6 = { .sin6_family = AF_INET6 };
    inet_pton(AF_INET6, "::ffff:198.51.100.9", &a6.sin6_addr);
    struct hg_ip b;
    assert_int_equal(hg_ip_from_sockaddr((struct sockaddr *)&a6, &b), 0);
    assert_memory_equal(a.b, b.b, 16);
    struct sockaddr un = { .sa_family = AF_UNIX };
    assert_int_equal(hg_ip_from_sockaddr(&un, &a), HG_ERR_INVALID);
}

static struct hg_cidr_list list(const char *s)
{
    struct hg_cidr_list l;
    char why[256] = "";
    if (hg_cidr_list_parse(s, 256, &l, why, sizeof(why)) != 0)
        fail_msg("'%s': %s", s, why);
    return l;
}

static bool in(const char *rules, const char *addr)
{
    struct hg_cidr_list l = list(rules);
    struct hg_ip a = ip(addr);
    bool m = hg_cidr_list_match(&l, &a);
    hg_cidr_list_free(&l);
    return m;
}

static void test_match(void **state)
{
    (void)state;
    assert_true(in("10.0.0.0/8", "10.255.1.2"));
    assert_false(in("10.0.0.0/8", "11.0.0.0"));
    assert_true(in("192.0.2.7", "192.0.2.7"));            /* a bare address is /32 */
    assert_false(in("192.0.2.7", "192.0.2.8"));
    assert_true(in("192.0.2.0/25", "192.0.2.127"));
    assert_false(in("192.0.2.0/25", "192.0.2.128"));
    assert_true(in("0.0.0.0/0", "203.0.113.1"));
    assert_true(in("2001:db8::/32", "2001:db8:ffff::1"));
    assert_false(in("2001:db8::/32", "2001:db9::1"));
    assert_true(in("::1", "::1"));                        /* a bare IPv6 address is /128 */
    assert_false(in("::1", "::2"));
    assert_true(in("2001:db8::/127", "2001:db8::1"));
    assert_false(in("2001:db8::/127", "2001:db8::2"));
    /* IPv4 rules match IPv4-mapped clients; IPv6 rules do not cover IPv4 and the other way round. */
    assert_true(in("127.0.0.0/8", "::ffff:127.0.0.1"));
    assert_false(in("::/0", "127.0.0.1"));
    assert_true(in("::/0", "::1"));
    assert_false(in("0.0.0.0/0", "::1"));
    /* A rule written as IPv4-mapped IPv6 is an IPv4 rule. */
    assert_true(in("::ffff:10.0.0.0/104", "10.1.2.3"));
    assert_false(in("::ffff:10.0.0.0/104", "11.1.2.3"));
    assert_true(in("::ffff:0:0/96", "198.51.100.1"));
    /* Lists: any item. */
    assert_true(in("10.0.0.0/8, 192.0.2.0/24 ,::1", "192.0.2.200"));
    assert_true(in("10.0.0.0/8, 192.0.2.0/24 ,::1", "::1"));
    assert_false(in("10.0.0.0/8, 192.0.2.0/24 ,::1", "172.16.0.1"));
    assert_false(in("", "10.0.0.1"));
}

static void expect_list_error(const char *s, const char *want)
{
    struct hg_cidr_list l = { NULL, 7 };
    char why[256] = "";
    assert_int_equal(hg_cidr_list_parse(s, 3, &l, why, sizeof(why)), HG_ERR_PARSE);
    assert_string_equal(why, want);
}

static void test_parse_errors(void **state)
{
    (void)state;
    expect_list_error("10.0.0.0/33", "item 1: '10.0.0.0/33': prefix length 33 is more than 32");
    expect_list_error("::/129", "item 1: '::/129': prefix length 129 is more than 128");
    expect_list_error("10.0.0.1/8", "item 1: '10.0.0.1/8' has bits set after the prefix (the network is written with them zero)");
    expect_list_error("2001:db8::1/32", "item 1: '2001:db8::1/32' has bits set after the prefix (the network is written with them zero)");
    expect_list_error("10.0.0.0/", "item 1: '10.0.0.0/' has no valid prefix length");
    expect_list_error("10.0.0.0/08", "item 1: '10.0.0.0/08' has no valid prefix length");
    expect_list_error("10.0.0.0/+8", "item 1: '10.0.0.0/+8' has no valid prefix length");
    expect_list_error("10.0.0.0/8x", "item 1: '10.0.0.0/8x' has no valid prefix length");
    expect_list_error("10.0.0.0/8, example.com", "item 2: 'example.com' is not an IPv4 or IPv6 address");
    expect_list_error("10.0.0.0/8,,::1", "item 2: empty item in list");
    expect_list_error("10.0.0.0/8,", "item 2: empty item in list");
    expect_list_error("::1,::2,::3,::4", "more than 3 items in list");
    /* Blanks only: an empty list. */
    struct hg_cidr_list l = list("  ");
    assert_int_equal(l.n, 0);
    assert_null(l.items);
    /* /0 and the largest prefixes parse. */
    l = list("0.0.0.0/0, ::/0, 192.0.2.1/32, ::1/128");
    assert_int_equal(l.n, 4);
    hg_cidr_list_free(&l);
    assert_int_equal(l.n, 0);
}

static bool permit(const char *allow, const char *deny, const char *addr)
{
    struct hg_cidr_rules r = { list(allow), list(deny) };
    struct hg_ip a = ip(addr);
    bool ok = hg_cidr_rules_permit(&r, &a);
    hg_cidr_list_free(&r.allow);
    hg_cidr_list_free(&r.deny);
    return ok;
}

static void test_rules(void **state)
{
    (void)state;
    struct hg_ip a = ip("192.0.2.1");
    assert_true(hg_cidr_rules_permit(NULL, &a));          /* no section: everyone */
    assert_true(permit("", "", "192.0.2.1"));             /* no rules: everyone */
    assert_true(permit("192.0.2.0/24", "", "192.0.2.1")); /* allow set: only matching */
    assert_false(permit("192.0.2.0/24", "", "198.51.100.1"));
    assert_false(permit("192.0.2.0/24", "", "::1"));
    assert_false(permit("", "192.0.2.1", "192.0.2.1"));   /* deny: refused */
    assert_true(permit("", "192.0.2.1", "192.0.2.2"));
    /* Deny wins over allow (a hole in an allowed range). */
    assert_false(permit("192.0.2.0/24", "192.0.2.128/25", "192.0.2.200"));
    assert_true(permit("192.0.2.0/24", "192.0.2.128/25", "192.0.2.100"));
    assert_false(permit("", "::ffff:192.0.2.0/120", "192.0.2.9"));
    struct hg_cidr_rules none = { { NULL, 0 }, { NULL, 0 } };
    assert_false(hg_cidr_rules_any(&none));
    assert_false(hg_cidr_rules_any(NULL));
    none.deny = list("::1");
    assert_true(hg_cidr_rules_any(&none));
    hg_cidr_list_free(&none.deny);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ip_parse),
        cmocka_unit_test(test_from_sockaddr),
        cmocka_unit_test(test_match),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Tests for src/http/proxy: the PROXY protocol parser against the examples of HAProxy's spec
 * (proxy-protocol.txt, sections 2.1 and 2.2), and the X-Forwarded-For / Forwarded walk (RFC 7239's
 * examples) past trusted proxies.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "core/cidr.h"
#include "http/proxy.h"

static const uint8_t v2_sig[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A };

static char *fmt(const struct hg_ip *a)
{
    static char out[4][HG_IP_TEXT_MAX];
    static int k;
    k = (k + 1) % 4;
    return hg_ip_format(a, out[k], sizeof(out[k]));
}

static int parse(const char *s, struct hg_proxy_header *h)
{
    return hg_proxy_parse((const uint8_t *)s, strlen(s), h);
}

/* Every proper prefix of a complete header needs more bytes. */
static void expect_more_before(const uint8_t *buf, size_t total)
{
    struct hg_proxy_header h;
    for (size_t n = 1; n < total; n++)
        if (hg_proxy_parse(buf, n, &h) != HG_PROXY_MORE)
            fail_msg("prefix of %zu of %zu bytes: %d, not MORE", n, total, hg_proxy_parse(buf, n, &h));
}

static void test_v1_examples(void **state)
{
    (void)state;
    struct hg_proxy_header h;
    /* The spec's example: the header, then the HTTP request it carries. */
    const char *ex = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n";
    size_t hl = strlen("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n");
    assert_int_equal(parse(ex, &h), (int)hl);
    assert_int_equal(h.version, 1);
    assert_true(h.has_addr);
    assert_string_equal(fmt(&h.src), "192.168.0.1");
    assert_string_equal(fmt(&h.dst), "192.168.0.11");
    assert_int_equal(h.src_port, 56324);
    assert_int_equal(h.dst_port, 443);
    expect_more_before((const uint8_t *)ex, hl);

    /* The spec's worst cases: 56 bytes (TCP4), 104 (TCP6), 107 (UNKNOWN with addresses). */
    const char *w4 = "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
    assert_int_equal(strlen(w4), 56);
    assert_int_equal(parse(w4, &h), 56);
    assert_int_equal(h.src_port, 65535);
    const char *w6 = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert_int_equal(strlen(w6), 104);
    assert_int_equal(parse(w6, &h), 104);
    assert_true(h.has_addr);
    assert_string_equal(fmt(&h.src), "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    const char *wu = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert_int_equal(strlen(wu), HG_PROXY_V1_MAX);
    assert_int_equal(parse(wu, &h), HG_PROXY_V1_MAX);
    assert_false(h.has_addr);
    assert_int_equal(parse("PROXY UNKNOWN\r\n", &h), 15);
    assert_false(h.has_addr);
    expect_more_before((const uint8_t *)wu, strlen(wu));

    /* TCP6 carrying an IPv4-mapped client: an IPv4 client. */
    assert_int_equal(parse("PROXY TCP6 ::ffff:127.0.0.5 ::1 40000 8080\r\n", &h), 44);
    assert_true(hg_ip_is_v4(&h.src));
    assert_string_equal(fmt(&h.src), "127.0.0.5");
    assert_int_equal(parse("PROXY TCP6 2001:db8::1 2001:db8::2 0 80\r\n", &h), 41);
    assert_string_equal(fmt(&h.src), "2001:db8::1");
    assert_int_equal(h.src_port, 0);
}

static void test_v1_malformed(void **state)
{
    (void)state;
    struct hg_proxy_header h;
    const char *bad[] = {
        "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\n",          /* LF without CR */
        "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443 \r\n",       /* trailing space */
        "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443 1\r\n",      /* a sixth field */
        "PROXY TCP4 192.168.0.1 192.168.0.11 56324\r\n",            /* a field missing */
        "PROXY TCP4 192.168.0.1  192.168.0.11 56324 443\r\n",       /* two spaces */
        "PROXY TCP4 192.168.0.1 192.168.0.11 65536 443\r\n",        /* port out of range */
        "PROXY TCP4 192.168.0.1 192.168.0.11 056324 443\r\n",       /* leading zero, 6 digits */
        "PROXY TCP4 192.168.0.1 192.168.0.11 0443 443\r\n",         /* leading zero */
        "PROXY TCP4 192.168.0.1 192.168.0.11 -1 443\r\n",
        "PROXY TCP4 ::1 ::1 1 2\r\n",                               /* IPv6 under TCP4 */
        "PROXY TCP6 192.168.0.1 192.168.0.11 1 2\r\n",              /* IPv4 under TCP6 */
        "PROXY TCP4 192.168.0.256 192.168.0.11 1 2\r\n",
        "PROXY TCP5 192.168.0.1 192.168.0.11 1 2\r\n",
        "PROXY tcp4 192.168.0.1 192.168.0.11 1 2\r\n",              /* case matters */
        "PROXY UDP4 192.168.0.1 192.168.0.11 1 2\r\n",
        "PROXY \r\n",
        "PROXY UNKNOWN\x01\r\n",                                   /* control byte */
        "PROXY TCP4 192.168.0.1 192.168.0.11 1 2\r\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (parse(bad[i], &h) != HG_PROXY_BAD)
            fail_msg("case %zu: %d, not BAD", i, parse(bad[i], &h));
    /* No line end within the spec's 107 bytes: malformed, however the bytes continue. */
    char longline[200];
    memset(longline, 'A', sizeof(longline));
    memcpy(longline, "PROXY UNKNOWN ", 14);
    assert_int_equal(hg_proxy_parse((const uint8_t *)longline, 106, &h), HG_PROXY_MORE);
    assert_int_equal(hg_proxy_parse((const uint8_t *)longline, 107, &h), HG_PROXY_BAD);
    assert_int_equal(hg_proxy_parse((const uint8_t *)longline, sizeof(longline), &h), HG_PROXY_BAD);
}

static void test_not_proxy(void **state)
{
    (void)state;
    struct hg_proxy_header h;
    assert_int_equal(parse("GET / HTTP/1.1\r\n", &h), HG_PROXY_NONE);
    assert_int_equal(parse("POST /webhooks/whatsapp HTTP/1.1\r\n", &h), HG_PROXY_NONE);
    /* PROPFIND shares "PRO" with a v1 header: undecided until the fourth byte. */
    assert_int_equal(parse("PRO", &h), HG_PROXY_MORE);
    assert_int_equal(parse("PROP", &h), HG_PROXY_NONE);
    assert_int_equal(parse("PROXYZ", &h), HG_PROXY_NONE);
    /* Empty lines may precede a request line; the v2 signature starts the same way. */
    assert_int_equal(parse("\r\n", &h), HG_PROXY_MORE);
    assert_int_equal(parse("\r\nGET / HTTP/1.1\r\n", &h), HG_PROXY_NONE);
    assert_int_equal(parse("\r\n\r\n\r\n", &h), HG_PROXY_NONE);
    assert_int_equal(hg_proxy_parse((const uint8_t *)"", 0, &h), HG_PROXY_MORE);
}

/* A v2 header: signature, version/command, family, length, then `body`. */
static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const uint8_t *body, size_t n)
{
    memcpy(out, v2_sig, 12);
    out[12] = ver_cmd;
    out[13] = fam;
    out[14] = (uint8_t)(n >> 8);
    out[15] = (uint8_t)n;
    if (n > 0)
        memcpy(out + 16, body, n); /* body may be NULL when n is 0 */
    return 16 + n;
}

static void test_v2(void **state)
{
    (void)state;
    struct hg_proxy_header h;
    uint8_t buf[4096];
    /* TCP over IPv4, followed by a TLV (type 0x04 NOOP, 3 bytes) that is skipped, then HTTP. */
    const uint8_t b4[] = { 203, 0, 113, 9, 10, 0, 0, 1, 0xc3, 0x50, 0x01, 0xbb, 0x04, 0x00, 0x03, 'a', 'b', 'c' };
    size_t n = v2(buf, 0x21, 0x11, b4, sizeof(b4));
    memcpy(buf + n, "GET / HTTP/1.1\r\n\r\n", 18);
    assert_int_equal(hg_proxy_parse(buf, n + 18, &h), (int)n);
    assert_int_equal(h.version, 2);
    assert_true(h.has_addr);
    assert_string_equal(fmt(&h.src), "203.0.113.9");
    assert_string_equal(fmt(&h.dst), "10.0.0.1");
    assert_int_equal(h.src_port, 50000);
    assert_int_equal(h.dst_port, 443);
    expect_more_before(buf, n);

    /* TCP over IPv6. */
    uint8_t b6[36] = { 0x20, 0x01, 0x0d, 0xb8 };
    b6[15] = 1;
    b6[31] = 2;
    b6[33] = 80;
    b6[35] = 81;
    n = v2(buf, 0x21, 0x21, b6, sizeof(b6));
    assert_int_equal(hg_proxy_parse(buf, n, &h), 52);
    assert_string_equal(fmt(&h.src), "2001:db8::1");
    assert_string_equal(fmt(&h.dst), "::2");
    assert_int_equal(h.src_port, 80);
    assert_int_equal(h.dst_port, 81);

    /* LOCAL (a health check of the proxy itself): the block is ignored, whatever its family. */
    n = v2(buf, 0x20, 0x00, NULL, 0);
    assert_int_equal(hg_proxy_parse(buf, n, &h), 16);
    assert_false(h.has_addr);
    n = v2(buf, 0x20, 0x11, b4, sizeof(b4));
    assert_int_equal(hg_proxy_parse(buf, n, &h), (int)n);
    assert_false(h.has_addr);
    /* PROXY with UNSPEC or a UNIX stream: no address to take, the peer's stays. */
    n = v2(buf, 0x21, 0x00, b4, sizeof(b4));
    assert_int_equal(hg_proxy_parse(buf, n, &h), (int)n);
    assert_false(h.has_addr);
    uint8_t unix_body[216] = { '/' };
    n = v2(buf, 0x21, 0x31, unix_body, sizeof(unix_body));
    assert_int_equal(hg_proxy_parse(buf, n, &h), (int)n);
    assert_false(h.has_addr);
    /* TLVs up to the bound are fine. */
    static uint8_t big[HG_PROXY_V2_MAX - 16];
    memcpy(big, b4, 12);
    n = v2(buf, 0x21, 0x11, big, sizeof(big));
    assert_int_equal(hg_proxy_parse(buf, n, &h), HG_PROXY_V2_MAX);
}

static void test_v2_malformed(void **state)
{
    (void)state;
    struct hg_proxy_header h;
    uint8_t buf[4096];
    const uint8_t b4[12] = { 203, 0, 113, 9, 10, 0, 0, 1, 0, 1, 0, 2 };
    size_t n;
    n = v2(buf, 0x11, 0x11, b4, sizeof(b4)); /* version 1 in a v2 header */
    assert_int_equal(hg_proxy_parse(buf, n, &h), HG_PROXY_BAD);
    n = v2(buf, 0x22, 0x11, b4, sizeof(b4)); /* command 2 */
    assert_int_equal(hg_proxy_parse(buf, n, &h), HG_PROXY_BAD);
    n = v2(buf, 0x21, 0x12, b4, sizeof(b4)); /* UDP over IPv4 */
    assert_int_equal(hg_proxy_parse(buf, n, &h), HG_PROXY_BAD);
    n = v2(buf, 0x21, 0x22, b4, sizeof(b4)); /* UDP over IPv6 */
    assert_int_equal(hg_proxy_parse(buf, n, &h), HG_PROXY_BAD);
    n = v2(buf, 0x21, 0x41, b4, sizeof(b4)); /* unknown family */
    assert_int_equal(hg_proxy_parse(buf, n, &h), HG_PROXY_BAD);
    n = v2(buf, 0x21, 0x11, b4, 8);          /* too short for IPv4 addresses and ports */
    assert_int_equal(hg_proxy_parse(buf, n, &h), HG_PROXY_BAD);
    n = v2(buf, 0x21, 0x21, b4, 12);         /* too short for IPv6 */
    assert_int_equal(hg_proxy_parse(buf, n, &h), HG_PROXY_BAD);
    n = v2(buf, 0x21, 0x31, b4, 12);         /* too short for UNIX */
    assert_int_equal(hg_proxy_parse(buf, n, &h), HG_PROXY_BAD);
    /* Longer than we take: refused from the 16-byte header alone, before the rest arrives. */
    v2(buf, 0x21, 0x11, b4, 12);
    buf[14] = 0xff;
    buf[15] = 0xff;
    assert_int_equal(hg_proxy_parse(buf, 16, &h), HG_PROXY_BAD);
    buf[14] = (uint8_t)((HG_PROXY_V2_MAX - 15) >> 8);
    buf[15] = (uint8_t)(HG_PROXY_V2_MAX - 15);
    assert_int_equal(hg_proxy_parse(buf, 16, &h), HG_PROXY_BAD);
    /* A damaged signature is not a v2 header (plain bytes, HTTP's to refuse). */
    n = v2(buf, 0x21, 0x11, b4, sizeof(b4));
    buf[11] = 'X';
    assert_int_equal(hg_proxy_parse(buf, n, &h), HG_PROXY_NONE);
}

/* ---- forwarding headers ---- */

struct req {
    struct hg_http_req_header h[8];
    size_t n;
};

static void add(struct req *r, const char *name, const char *value)
{
    r->h[r->n++] = (struct hg_http_req_header){ name, strlen(name), value, strlen(value) };
}

static struct hg_cidr_list trusted(const char *s)
{
    struct hg_cidr_list l;
    char why[128];
    assert_int_equal(hg_cidr_list_parse(s, 64, &l, why, sizeof(why)), 0);
    return l;
}

/* The client of a request from `hop` with the headers of r, trusting `trust`. */
static const char *client(const char *hop, const char *trust, enum hg_proxy_forwarded kind, const struct req *r)
{
    struct hg_ip h, c;
    assert_int_equal(hg_ip_parse(hop, strlen(hop), &h), 0);
    struct hg_cidr_list t = trusted(trust);
    hg_proxy_client(&h, &t, kind, r->h, r->n, &c);
    hg_cidr_list_free(&t);
    return fmt(&c);
}

static const char *xff(const char *hop, const char *trust, const char *value)
{
    struct req r = { .n = 0 };
    add(&r, "Host", "example.com");
    add(&r, "X-Forwarded-For", value);
    return client(hop, trust, HG_PROXY_XFF, &r);
}

static void test_xff(void **state)
{
    (void)state;
    /* Nobody trusted, or the peer not trusted: the header is not looked at (spoofing). */
    assert_string_equal(xff("203.0.113.9", "", "198.51.100.1"), "203.0.113.9");
    assert_string_equal(xff("203.0.113.9", "10.0.0.0/8", "198.51.100.1"), "203.0.113.9");
    /* A trusted proxy names the client. */
    assert_string_equal(xff("10.0.0.1", "10.0.0.0/8", "198.51.100.1"), "198.51.100.1");
    /* From the right: trusted hops are skipped, the first untrusted one is the client, and what
     * the client wrote further left (a forged entry) is never reached. */
    assert_string_equal(xff("10.0.0.1", "10.0.0.0/8", "6.6.6.6, 198.51.100.1, 10.0.0.7"), "198.51.100.1");
    assert_string_equal(xff("10.0.0.1", "10.0.0.0/8", "6.6.6.6,198.51.100.1"), "198.51.100.1");
    /* Every hop trusted: the leftmost. */
    assert_string_equal(xff("10.0.0.1", "10.0.0.0/8", "10.0.0.3, 10.0.0.2"), "10.0.0.3");
    /* Not an address: the walk stops at the last hop that was one (a trusted proxy). */
    assert_string_equal(xff("10.0.0.1", "10.0.0.0/8", "unknown"), "10.0.0.1");
    assert_string_equal(xff("10.0.0.1", "10.0.0.0/8", "198.51.100.1, 10.0.0.2, junk"), "10.0.0.1");
    assert_string_equal(xff("10.0.0.1", "10.0.0.0/8", "198.51.100.1, junk, 10.0.0.2"), "10.0.0.2");
    assert_string_equal(xff("10.0.0.1", "10.0.0.0/8", ""), "10.0.0.1");
    assert_string_equal(xff("10.0.0.1", "10.0.0.0/8", "198.51.100.1,"), "10.0.0.1");
    /* Ports and IPv6 forms writers use. */
    assert_string_equal(xff("10.0.0.1", "10.0.0.0/8", "198.51.100.1:4711"), "198.51.100.1");
    assert_string_equal(xff("10.0.0.1", "10.0.0.0/8", "[2001:db8::1]:4711"), "2001:db8::1");
    assert_string_equal(xff("10.0.0.1", "10.0.0.0/8", "[2001:db8::1]"), "2001:db8::1");
    assert_string_equal(xff("10.0.0.1", "10.0.0.0/8", "2001:db8::1"), "2001:db8::1");
    assert_string_equal(xff("10.0.0.1", "10.0.0.0/8", "::ffff:198.51.100.1"), "198.51.100.1");
    assert_string_equal(xff("10.0.0.1", "10.0.0.0/8", "198.51.100.1:99999"), "10.0.0.1");
    assert_string_equal(xff("10.0.0.1", "10.0.0.0/8", "[2001:db8::1"), "10.0.0.1");
    assert_string_equal(xff("10.0.0.1", "10.0.0.0/8", "[198.51.100.1]"), "10.0.0.1");
    /* An IPv6 proxy in front. */
    assert_string_equal(xff("::1", "::1", "192.0.2.5"), "192.0.2.5");
    /* A trusted IPv4 proxy reaching a dual-stack socket (::ffff:...) is trusted all the same. */
    assert_string_equal(xff("::ffff:10.0.0.1", "10.0.0.0/8", "192.0.2.5"), "192.0.2.5");

    /* Several header lines are one list, in order; names match case-insensitively. */
    struct req r = { .n = 0 };
    add(&r, "x-forwarded-for", "6.6.6.6, 198.51.100.1");
    add(&r, "Content-Type", "application/json");
    add(&r, "X-FORWARDED-FOR", "10.0.0.9");
    assert_string_equal(client("10.0.0.1", "10.0.0.0/8", HG_PROXY_XFF, &r), "198.51.100.1");
    /* The other header is not read when X-Forwarded-For is the one configured. */
    struct req f = { .n = 0 };
    add(&f, "Forwarded", "for=198.51.100.1");
    assert_string_equal(client("10.0.0.1", "10.0.0.0/8", HG_PROXY_XFF, &f), "10.0.0.1");

    /* A chain longer than HG_PROXY_MAX_HOPS of trusted hops is cut there. */
    char chain[2048] = "198.51.100.1";
    for (int i = 0; i < 40; i++)
        snprintf(chain + strlen(chain), sizeof(chain) - strlen(chain), ", 10.0.%d.1", i);
    assert_string_equal(xff("10.0.0.1", "10.0.0.0/8", chain), "10.0.8.1"); /* 32nd from the right */
}

static const char *fwd(const char *hop, const char *trust, const char *value)
{
    struct req r = { .n = 0 };
    add(&r, "Forwarded", value);
    return client(hop, trust, HG_PROXY_FORWARDED, &r);
}

static void test_forwarded(void **state)
{
    (void)state;
    /* RFC 7239 section 4's examples. */
    assert_string_equal(fwd("10.0.0.1", "10.0.0.0/8", "for=\"_gazonk\""), "10.0.0.1");
    assert_string_equal(fwd("10.0.0.1", "10.0.0.0/8", "For=\"[2001:db8:cafe::17]:4711\""), "2001:db8:cafe::17");
    assert_string_equal(fwd("10.0.0.1", "10.0.0.0/8", "for=192.0.2.60;proto=http;by=203.0.113.43"), "192.0.2.60");
    assert_string_equal(fwd("10.0.0.1", "10.0.0.0/8", "for=192.0.2.43, for=198.51.100.17"), "198.51.100.17");
    assert_string_equal(fwd("10.0.0.1", "10.0.0.0/8", "for=192.0.2.43, for=10.0.0.2"), "192.0.2.43");
    /* Section 6: "unknown" and obfuscated identifiers are no addresses. */
    assert_string_equal(fwd("10.0.0.1", "10.0.0.0/8", "for=192.0.2.43, for=unknown"), "10.0.0.1");
    /* Untrusted peer: ignored. */
    assert_string_equal(fwd("203.0.113.1", "10.0.0.0/8", "for=192.0.2.43"), "203.0.113.1");
    /* Pairs in any order, blanks around the separators, quoted IPv4, empty pairs. */
    assert_string_equal(fwd("10.0.0.1", "10.0.0.0/8", "proto=https ; for=\"192.0.2.9:80\" ;by=x"), "192.0.2.9");
    assert_string_equal(fwd("10.0.0.1", "10.0.0.0/8", "for=192.0.2.9;;proto=http"), "192.0.2.9");
    /* An element without for=: no address, the walk stops. */
    assert_string_equal(fwd("10.0.0.1", "10.0.0.0/8", "for=192.0.2.9, proto=https"), "10.0.0.1");
    /* Broken grammar: nothing after the damage is believed. */
    assert_string_equal(fwd("10.0.0.1", "10.0.0.0/8", "for=192.0.2.9 junk"), "10.0.0.1");
    assert_string_equal(fwd("10.0.0.1", "10.0.0.0/8", "for=\"192.0.2.9"), "10.0.0.1");
    assert_string_equal(fwd("10.0.0.1", "10.0.0.0/8", "for="), "10.0.0.1");
    assert_string_equal(fwd("10.0.0.1", "10.0.0.0/8", "=192.0.2.9"), "10.0.0.1");
    assert_string_equal(fwd("10.0.0.1", "10.0.0.0/8", "for=\"192.0.2.\\9\""), "10.0.0.1");
    /* A quoted comma does not split elements. */
    assert_string_equal(fwd("10.0.0.1", "10.0.0.0/8", "for=192.0.2.1, for=\"a,b\""), "10.0.0.1");
    assert_string_equal(fwd("10.0.0.1", "10.0.0.0/8", "for=192.0.2.1;x=\"a,b\""), "192.0.2.1");
    /* The walk crosses header lines. */
    struct req r = { .n = 0 };
    add(&r, "Forwarded", "for=198.51.100.1");
    add(&r, "forwarded", "for=10.0.0.5;by=10.0.0.1");
    assert_string_equal(client("10.0.0.1", "10.0.0.0/8", HG_PROXY_FORWARDED, &r), "198.51.100.1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1_examples),
        cmocka_unit_test(test_v1_malformed),
        cmocka_unit_test(test_not_proxy),
        cmocka_unit_test(test_v2),
        cmocka_unit_test(test_v2_malformed),
        cmocka_unit_test(test_xff),
        cmocka_unit_test(test_forwarded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

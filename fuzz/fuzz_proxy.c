/*
 * libFuzzer harness for what a proxy says about the client (http/proxy.h) and the CIDR lists
 * (core/cidr.h): the input is a connection's first bytes for the PROXY parser, X-Forwarded-For and
 * Forwarded header values for the hop walk, and a CIDR list. Besides the sanitizers, the parser's
 * contract is checked and a broken one aborts: a header length within the input and the bound,
 * MORE only below the bound, the same answer for the header alone, and no header longer than the
 * spec's 107 bytes for v1.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/cidr.h"
#include "http/proxy.h"

static void check_proxy(const uint8_t *data, size_t size)
{
    struct hg_proxy_header h;
    int rc = hg_proxy_parse(data, size, &h);
    if (rc == HG_PROXY_MORE && size >= HG_PROXY_MAX)
        abort();
    if (rc > 0) {
        if ((size_t)rc > size || rc > HG_PROXY_MAX || (h.version != 1 && h.version != 2) ||
            (h.version == 1 && rc > HG_PROXY_V1_MAX))
            abort();
        struct hg_proxy_header again;
        if (hg_proxy_parse(data, (size_t)rc, &again) != rc || again.has_addr != h.has_addr ||
            (h.has_addr && memcmp(&again.src, &h.src, sizeof(h.src)) != 0))
            abort();
        char text[HG_IP_TEXT_MAX];
        hg_ip_format(&h.src, text, sizeof(text));
        hg_ip_format(&h.dst, text, sizeof(text));
    }
}

/* The input split at '\n' into header values, each given as X-Forwarded-For and as Forwarded. */
static void check_forwarded(const uint8_t *data, size_t size)
{
    struct hg_http_req_header hdr[8];
    size_t n = 0, start = 0;
    for (size_t i = 0; i <= size && n < 8; i++) {
        if (i < size && data[i] != '\n')
            continue;
        hdr[n++] = (struct hg_http_req_header){ "X-Forwarded-For", 15, (const char *)data + start, i - start };
        start = i + 1;
    }
    static const char *const trust[] = { "10.0.0.0/8, 2001:db8::/32", "0.0.0.0/0, ::/0" };
    struct hg_ip hop, client;
    hg_ip_parse("10.0.0.1", 8, &hop);
    for (size_t t = 0; t < 2; t++) {
        struct hg_cidr_list l;
        char why[256];
        if (hg_cidr_list_parse(trust[t], 8, &l, why, sizeof(why)) != 0)
            abort();
        hg_proxy_client(&hop, &l, HG_PROXY_XFF, hdr, n, &client);
        for (size_t i = 0; i < n; i++) {
            hdr[i].name = "Forwarded";
            hdr[i].name_len = 9;
        }
        hg_proxy_client(&hop, &l, HG_PROXY_FORWARDED, hdr, n, &client);
        for (size_t i = 0; i < n; i++) {
            hdr[i].name = "X-Forwarded-For";
            hdr[i].name_len = 15;
        }
        hg_cidr_list_free(&l);
    }
}

static void check_cidr(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (s == NULL)
        return;
    memcpy(s, data, size);
    s[size] = '\0';
    struct hg_cidr_list l;
    char why[256];
    if (hg_cidr_list_parse(s, 256, &l, why, sizeof(why)) == 0) {
        struct hg_ip a;
        hg_ip_parse("192.0.2.1", 9, &a);
        hg_cidr_list_match(&l, &a);
        hg_ip_parse("2001:db8::1", 11, &a);
        hg_cidr_list_match(&l, &a);
        hg_cidr_list_free(&l);
    }
    struct hg_ip a;
    hg_ip_parse(s, size, &a);
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_proxy(data, size);
    check_forwarded(data, size);
    check_cidr(data, size);
    return 0;
}

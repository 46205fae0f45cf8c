/* IP addresses and CIDR lists (core/cidr.h): parsing, formatting, matching. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "core/cidr.h"
#include "core/common.h"
#include "core/err.h"

static const uint8_t v4_mapped_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

bool hg_ip_is_v4(const struct hg_ip *ip)
{
    return memcmp(ip->b, v4_mapped_prefix, sizeof(v4_mapped_prefix)) == 0;
}

int hg_ip_parse(const char *s, size_t len, struct hg_ip *out)
{
    /* inet_pton wants a NUL-terminated string; longer than any address text is not one. */
    char text[HG_IP_TEXT_MAX];
    if (len == 0 || len >= sizeof(text))
        return HG_ERR_PARSE;
    memcpy(text, s, len);
    text[len] = '\0';
    if (memchr(text, '\0', len) != NULL)
        return HG_ERR_PARSE;
    struct in_addr a4;
    if (inet_pton(AF_INET, text, &a4) == 1) {
        memcpy(out->b, v4_mapped_prefix, sizeof(v4_mapped_prefix));
        memcpy(out->b + 12, &a4, 4);
        return 0;
    }
    if (inet_pton(AF_INET6, text, out->b) == 1)
        return 0;
    return HG_ERR_PARSE;
}

int hg_ip_from_sockaddr(const struct sockaddr *sa, struct hg_ip *out)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a4 = (const struct sockaddr_in *)sa;
        memcpy(out->b, v4_mapped_prefix, sizeof(v4_mapped_prefix));
        memcpy(out->b + 12, &a4->sin_addr, 4);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        memcpy(out->b, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        return 0;
    }
    return HG_ERR_INVALID;
}

char *hg_ip_format(const struct hg_ip *ip, char *out, size_t n)
{
    if (n == 0)
        return out;
    bool ok = hg_ip_is_v4(ip) ? inet_ntop(AF_INET, ip->b + 12, out, (socklen_t)n) != NULL
                              : inet_ntop(AF_INET6, ip->b, out, (socklen_t)n) != NULL;
    if (!ok)
        out[0] = '\0';
    return out;
}

/* True when the first `bits` bits of a and b are equal. */
static bool prefix_equal(const uint8_t *a, const uint8_t *b, unsigned bits)
{
    unsigned whole = bits / 8, rest = bits % 8;
    if (memcmp(a, b, whole) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[whole] & mask) == (b[whole] & mask);
}

/* True when some bit after the first `bits` is set. */
static bool host_bits_set(const uint8_t *a, unsigned bits)
{
    for (unsigned i = bits; i < 128; i++)
        if (a[i / 8] & (0x80 >> (i % 8)))
            return true;
    return false;
}

int hg_cidr_parse(const char *s, size_t len, struct hg_cidr *out, char *why, size_t wl)
{
    const char *slash = memchr(s, '/', len);
    size_t alen = slash ? (size_t)(slash - s) : len;
    struct hg_ip ip;
    if (hg_ip_parse(s, alen, &ip) != 0) {
        snprintf(why, wl, "'%.*s' is not an IPv4 or IPv6 address", (int)HG_MIN(alen, 64), s);
        return HG_ERR_PARSE;
    }
    /* An IPv4 rule's prefix counts the 32 IPv4 bits; it sits behind the 96-bit mapped prefix. */
    bool text_v4 = memchr(s, ':', alen) == NULL;
    unsigned max = text_v4 ? 32 : 128, bits = max;
    if (slash) {
        const char *p = slash + 1, *end = s + len;
        if (p == end || end - p > 3 || (p[0] == '0' && end - p > 1)) {
            snprintf(why, wl, "'%.*s' has no valid prefix length", (int)HG_MIN(len, 64), s);
            return HG_ERR_PARSE;
        }
        bits = 0;
        for (; p < end; p++) {
            if (*p < '0' || *p > '9') {
                snprintf(why, wl, "'%.*s' has no valid prefix length", (int)HG_MIN(len, 64), s);
                return HG_ERR_PARSE;
            }
            bits = bits * 10 + (unsigned)(*p - '0');
        }
        if (bits > max) {
            snprintf(why, wl, "'%.*s': prefix length %u is more than %u", (int)HG_MIN(len, 64), s, bits, max);
            return HG_ERR_PARSE;
        }
    }
    unsigned bits128 = text_v4 ? 96 + bits : bits;
    if (host_bits_set(ip.b, bits128)) {
        snprintf(why, wl, "'%.*s' has bits set after the prefix (the network is written with them zero)",
                 (int)HG_MIN(len, 64), s);
        return HG_ERR_PARSE;
    }
    out->addr = ip;
    out->bits = (uint8_t)bits128;
    /* ::ffff:a.b.c.d/n with n >= 96 names IPv4 clients, like the dotted form does. */
    out->v4 = bits128 >= 96 && hg_ip_is_v4(&ip);
    return 0;
}

static bool is_blank(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

int hg_cidr_list_parse(const char *s, size_t max, struct hg_cidr_list *out, char *why, size_t wl)
{
    struct hg_cidr_list l = { NULL, 0 };
    const char *p = s;
    while (is_blank(*p))
        p++;
    if (*p != '\0') {
        for (size_t item = 1;; item++) {
            size_t n = strcspn(p, ",");
            const char *a = p, *b = p + n;
            while (a < b && is_blank(*a))
                a++;
            while (b > a && is_blank(b[-1]))
                b--;
            char reason[160];
            if (a == b) {
                snprintf(why, wl, "item %zu: empty item in list", item);
                goto fail;
            }
            if (l.n == max) {
                snprintf(why, wl, "more than %zu items in list", max);
                goto fail;
            }
            l.items = hg_xrealloc(l.items, (l.n + 1) * sizeof(*l.items));
            if (hg_cidr_parse(a, (size_t)(b - a), &l.items[l.n], reason, sizeof(reason)) != 0) {
                snprintf(why, wl, "item %zu: %s", item, reason);
                goto fail;
            }
            l.n++;
            if (p[n] == '\0')
                break;
            p += n + 1;
        }
    }
    *out = l;
    return 0;
fail:
    hg_cidr_list_free(&l);
    return HG_ERR_PARSE;
}

void hg_cidr_list_free(struct hg_cidr_list *l)
{
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

bool hg_cidr_list_match(const struct hg_cidr_list *l, const struct hg_ip *ip)
{
    bool v4 = hg_ip_is_v4(ip);
    for (size_t i = 0; i < l->n; i++)
        if (l->items[i].v4 == v4 && prefix_equal(l->items[i].addr.b, ip->b, l->items[i].bits))
            return true;
    return false;
}

bool hg_cidr_rules_permit(const struct hg_cidr_rules *r, const struct hg_ip *ip)
{
    if (r == NULL)
        return true;
    if (hg_cidr_list_match(&r->deny, ip))
        return false;
    return r->allow.n == 0 || hg_cidr_list_match(&r->allow, ip);
}

bool hg_cidr_rules_any(const struct hg_cidr_rules *r)
{
    return r != NULL && (r->allow.n > 0 || r->deny.n > 0);
}

/*
 * PROXY protocol headers and forwarding headers (http/proxy.h): parsers over bytes the caller
 * holds, bounded, with no allocation. Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt
 * (v1 section 2.1, v2 section 2.2) and RFC 7239 (Forwarded).
 */
#include <arpa/inet.h>
#include <string.h>
#include <strings.h>

#include "core/common.h"
#include "http/proxy.h"

static const char v1_sig[6] = { 'P', 'R', 'O', 'X', 'Y', ' ' };
static const uint8_t v2_sig[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A };

/* ---- v1: "PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n" ---- */

/* A port: 1-5 digits, no leading zero (other than "0" itself), at most 65535. */
static bool port_parse(const char *s, size_t n, uint16_t *out)
{
    if (n == 0 || n > 5 || (s[0] == '0' && n > 1))
        return false;
    uint32_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint32_t)(s[i] - '0');
    }
    if (v > 65535)
        return false;
    *out = (uint16_t)v;
    return true;
}

/* An address of the family the line names: TCP4 takes dotted quads only, TCP6 IPv6 text only. */
static bool v1_addr(const char *s, size_t n, bool v6, struct hg_ip *out)
{
    if ((memchr(s, ':', n) != NULL) != v6)
        return false;
    return hg_ip_parse(s, n, out) == 0;
}

static int parse_v1(const uint8_t *buf, size_t len, struct hg_proxy_header *out)
{
    size_t scan = HG_MIN(len, (size_t)HG_PROXY_V1_MAX);
    const uint8_t *nl = memchr(buf, '\n', scan);
    if (nl == NULL)
        return len >= HG_PROXY_V1_MAX ? HG_PROXY_BAD : HG_PROXY_MORE;
    size_t end = (size_t)(nl - buf); /* index of '\n' */
    if (end < 7 || buf[end - 1] != '\r')
        return HG_PROXY_BAD;
    const char *line = (const char *)buf + sizeof(v1_sig);
    size_t n = end - 1 - sizeof(v1_sig); /* up to the CR */
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)line[i] < 0x20 || (unsigned char)line[i] > 0x7e)
            return HG_PROXY_BAD;

    /* Fields one space apart: protocol, source, destination, source port, destination port. */
    const char *field[5];
    size_t flen[5], nf = 0, start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && line[i] != ' ')
            continue;
        if (nf == 5)
            return HG_PROXY_BAD;
        field[nf] = line + start;
        flen[nf] = i - start;
        nf++;
        start = i + 1;
        /* UNKNOWN: whatever follows is to be ignored (the spec), spaces included. */
        if (nf == 1 && flen[0] == 7 && memcmp(field[0], "UNKNOWN", 7) == 0)
            break;
    }
    memset(out, 0, sizeof(*out));
    out->version = 1;
    if (flen[0] == 7 && memcmp(field[0], "UNKNOWN", 7) == 0)
        return (int)(end + 1);
    bool v6;
    if (flen[0] == 4 && memcmp(field[0], "TCP4", 4) == 0)
        v6 = false;
    else if (flen[0] == 4 && memcmp(field[0], "TCP6", 4) == 0)
        v6 = true;
    else
        return HG_PROXY_BAD;
    if (nf != 5 || !v1_addr(field[1], flen[1], v6, &out->src) || !v1_addr(field[2], flen[2], v6, &out->dst) ||
        !port_parse(field[3], flen[3], &out->src_port) || !port_parse(field[4], flen[4], &out->dst_port))
        return HG_PROXY_BAD;
    out->has_addr = true;
    return (int)(end + 1);
}

/* ---- v2: 12-byte signature, version/command, family/protocol, length, addresses, TLVs ---- */

static int parse_v2(const uint8_t *buf, size_t len, struct hg_proxy_header *out)
{
    if (len < 16)
        return HG_PROXY_MORE;
    uint8_t ver_cmd = buf[12], fam = buf[13];
    size_t body = (size_t)buf[14] << 8 | buf[15];
    size_t total = 16 + body;
    if ((ver_cmd >> 4) != 2 || (ver_cmd & 0x0f) > 1 || total > HG_PROXY_V2_MAX)
        return HG_PROXY_BAD;
    if (len < total)
        return HG_PROXY_MORE;
    memset(out, 0, sizeof(*out));
    out->version = 2;
    /* LOCAL: the proxy's own connection (health checks); the block is to be ignored. */
    if ((ver_cmd & 0x0f) == 0)
        return (int)total;
    const uint8_t *a = buf + 16;
    switch (fam) {
    case 0x00: /* UNSPEC: no address to take */
        return (int)total;
    case 0x11: /* TCP over IPv4: src, dst (4 bytes each), src port, dst port */
        if (body < 12)
            return HG_PROXY_BAD;
        memset(out->src.b, 0, 10);
        out->src.b[10] = out->src.b[11] = 0xff;
        out->dst = out->src;
        memcpy(out->src.b + 12, a, 4);
        memcpy(out->dst.b + 12, a + 4, 4);
        out->src_port = (uint16_t)(a[8] << 8 | a[9]);
        out->dst_port = (uint16_t)(a[10] << 8 | a[11]);
        out->has_addr = true;
        return (int)total;
    case 0x21: /* TCP over IPv6: 16 bytes each, then the ports */
        if (body < 36)
            return HG_PROXY_BAD;
        memcpy(out->src.b, a, 16);
        memcpy(out->dst.b, a + 16, 16);
        out->src_port = (uint16_t)(a[32] << 8 | a[33]);
        out->dst_port = (uint16_t)(a[34] << 8 | a[35]);
        out->has_addr = true;
        return (int)total;
    case 0x31: /* UNIX stream: two 108-byte paths, nothing an IP rule could use */
        if (body < 216)
            return HG_PROXY_BAD;
        return (int)total;
    default:   /* UDP or datagram sockets cannot carry this HTTP stream; anything else is unknown */
        return HG_PROXY_BAD;
    }
}

int hg_proxy_parse(const uint8_t *buf, size_t len, struct hg_proxy_header *out)
{
    if (len == 0)
        return HG_PROXY_MORE;
    size_t n = HG_MIN(len, sizeof(v1_sig));
    if (memcmp(buf, v1_sig, n) == 0)
        return len < sizeof(v1_sig) ? HG_PROXY_MORE : parse_v1(buf, len, out);
    n = HG_MIN(len, sizeof(v2_sig));
    if (memcmp(buf, v2_sig, n) == 0)
        return len < sizeof(v2_sig) ? HG_PROXY_MORE : parse_v2(buf, len, out);
    return HG_PROXY_NONE;
}

/* ---- forwarding headers ---- */

struct span {
    const char *p;
    size_t n;      /* 0: this hop names no address we can use */
};

/* The last HG_PROXY_MAX_HOPS hops of one header line, oldest first, as spans into the line. */
struct hops {
    struct span ring[HG_PROXY_MAX_HOPS];
    size_t count;  /* hops seen in the line (may exceed the ring) */
};

static void hops_add(struct hops *h, const char *p, size_t n)
{
    h->ring[h->count % HG_PROXY_MAX_HOPS] = (struct span){ p, n };
    h->count++;
}

static bool ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

/*
 * A node: "192.0.2.1", "192.0.2.1:8080", "[2001:db8::1]", "[2001:db8::1]:8080", or a bare
 * "2001:db8::1" (X-Forwarded-For writers do that). "unknown", "_hidden" and the rest: false.
 */
static bool node_addr(const char *s, size_t n, struct hg_ip *out)
{
    uint16_t port;
    if (n > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (close == NULL)
            return false;
        size_t an = (size_t)(close - s - 1), rest = n - an - 2;
        if (rest > 0 && (close[1] != ':' || !port_parse(close + 2, rest - 1, &port)))
            return false;
        return memchr(s + 1, ':', an) != NULL && hg_ip_parse(s + 1, an, out) == 0;
    }
    const char *colon = memchr(s, ':', n);
    if (colon != NULL && memchr(colon + 1, ':', n - (size_t)(colon - s) - 1) == NULL) {
        /* One colon: IPv4 with a port. */
        if (!port_parse(colon + 1, n - (size_t)(colon - s) - 1, &port))
            return false;
        n = (size_t)(colon - s);
        if (memchr(s, '.', n) == NULL)
            return false;
    }
    return hg_ip_parse(s, n, out) == 0;
}

/* X-Forwarded-For: comma-separated nodes, blanks around them dropped; an empty one is no address. */
static void xff_hops(const char *v, size_t n, struct hops *h)
{
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && v[i] != ',')
            continue;
        size_t a = start, b = i;
        while (a < b && ows(v[a]))
            a++;
        while (b > a && ows(v[b - 1]))
            b--;
        hops_add(h, v + a, b - a);
        start = i + 1;
    }
}

static bool tchar(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/*
 * Forwarded (RFC 7239 section 4): elements separated by commas, pairs by semicolons, values a
 * token or a quoted string. Each element gives one hop: its for= value (unquoted), or no address
 * when it has none. A line that breaks the grammar ends with one hop that has no address, so the
 * walk stops there instead of trusting what follows the damage.
 */
static void forwarded_hops(const char *v, size_t n, struct hops *h)
{
    size_t i = 0;
    struct span hop = { NULL, 0 };
    for (;;) {
        while (i < n && ows(v[i]))
            i++;
        /* One pair, or an empty one before ';' / ',' / the end. */
        if (i < n && v[i] != ';' && v[i] != ',') {
            size_t name = i;
            while (i < n && tchar(v[i]))
                i++;
            size_t name_len = i - name;
            if (name_len == 0 || i == n || v[i] != '=')
                goto broken;
            i++;
            struct span val = { v + i, 0 };
            if (i < n && v[i] == '"') {
                size_t q = ++i;
                bool escaped = false;
                while (i < n && v[i] != '"') {
                    if (v[i] == '\\') {
                        escaped = true;
                        i++;
                    }
                    i++;
                }
                if (i >= n)
                    goto broken;
                /* No address needs an escape: an escaped value is taken as no address. */
                val = escaped ? (struct span){ NULL, 0 } : (struct span){ v + q, i - q };
                i++;
            } else {
                while (i < n && tchar(v[i]))
                    i++;
                val.n = (size_t)(v + i - val.p);
                if (val.n == 0)
                    goto broken;
            }
            if (name_len == 3 && strncasecmp(v + name, "for", 3) == 0)
                hop = val;
            while (i < n && ows(v[i]))
                i++;
        }
        if (i == n || v[i] == ',') {
            hops_add(h, hop.p, hop.n);
            hop = (struct span){ NULL, 0 };
            if (i == n)
                return;
            i++;
        } else if (v[i] == ';') {
            i++;
        } else {
            goto broken;
        }
    }
broken:
    hops_add(h, NULL, 0);
}

void hg_proxy_client(const struct hg_ip *hop, const struct hg_cidr_list *trusted, enum hg_proxy_forwarded kind,
                     const struct hg_http_req_header *headers, size_t n_headers, struct hg_ip *client)
{
    *client = *hop;
    if (trusted == NULL || trusted->n == 0 || !hg_cidr_list_match(trusted, client))
        return;
    const char *name = kind == HG_PROXY_XFF ? "X-Forwarded-For" : "Forwarded";
    size_t name_len = strlen(name), steps = 0;
    /* The last line's last hop is the nearest: walk lines and hops from the right. */
    for (size_t i = n_headers; i-- > 0;) {
        const struct hg_http_req_header *hd = &headers[i];
        if (hd->name_len != name_len || strncasecmp(hd->name, name, name_len) != 0)
            continue;
        struct hops h;
        h.count = 0;
        if (kind == HG_PROXY_XFF)
            xff_hops(hd->value, hd->value_len, &h);
        else
            forwarded_hops(hd->value, hd->value_len, &h);
        size_t keep = HG_MIN(h.count, (size_t)HG_PROXY_MAX_HOPS);
        for (size_t j = 0; j < keep; j++) {
            const struct span *s = &h.ring[(h.count - 1 - j) % HG_PROXY_MAX_HOPS];
            struct hg_ip ip;
            if (s->n == 0 || !node_addr(s->p, s->n, &ip))
                return;
            *client = ip;
            if (!hg_cidr_list_match(trusted, client) || ++steps >= HG_PROXY_MAX_HOPS)
                return;
        }
        /* A line longer than the ring: the hops beyond it were not kept, so stop at the last one. */
        if (h.count > HG_PROXY_MAX_HOPS)
            return;
    }
}

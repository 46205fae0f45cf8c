/*
 * What a proxy in front of hookgate says about the client, as pure functions (no I/O, no state):
 * the PROXY protocol header at the start of a connection (HAProxy's spec, v1 text and v2 binary),
 * and the client address a request's X-Forwarded-For or Forwarded (RFC 7239) header gives once
 * the hops are walked from the right past the trusted proxies. The caller decides whom to trust
 * (docs/security.md); these functions only parse and walk.
 */
#ifndef HG_HTTP_PROXY_H
#define HG_HTTP_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/cidr.h"
#include "http/http.h"

/* v1: "PROXY " ... "\r\n", at most 107 bytes (the spec's bound). */
#define HG_PROXY_V1_MAX 107
/* v2: 16-byte header + addresses + TLVs. The spec allows up to 65535 bytes after the header; we
 * take what load balancers send (AWS, GCP, HAProxy: addresses plus a few TLVs) and refuse more. */
#define HG_PROXY_V2_MAX 2048
/* The longest header hg_proxy_parse may ask to see in full. */
#define HG_PROXY_MAX HG_PROXY_V2_MAX

/* hg_proxy_parse answers (a positive answer is the header's length). */
#define HG_PROXY_NONE  0   /* the bytes do not start a PROXY header (plain HTTP) */
#define HG_PROXY_MORE  (-1) /* a PROXY header may start here: more bytes are needed to decide */
#define HG_PROXY_BAD   (-2) /* a PROXY header that is malformed or too long: close the connection */

struct hg_proxy_header {
    int version;          /* 1 or 2 */
    bool has_addr;        /* false for v1 UNKNOWN, v2 LOCAL and v2 UNSPEC/UNIX: keep the peer's */
    struct hg_ip src, dst;
    uint16_t src_port, dst_port;
};

/*
 * Parse a PROXY header at the start of `buf` (the connection's first `len` bytes). Returns the
 * header's length (> 0; the bytes after it are the HTTP stream) and fills *out, or HG_PROXY_NONE,
 * HG_PROXY_MORE (only while len < HG_PROXY_MAX) or HG_PROXY_BAD. v1: TCP4, TCP6 (addresses and
 * ports checked, one space apart, CRLF) or UNKNOWN (the rest of the line ignored). v2: version 2,
 * command LOCAL or PROXY, family UNSPEC, TCP over IPv4/IPv6 or UNIX; TLVs are skipped. UDP and
 * unknown families or commands are HG_PROXY_BAD.
 */
int hg_proxy_parse(const uint8_t *buf, size_t len, struct hg_proxy_header *out);

/* Which request header names the hops a trusted proxy saw. */
enum hg_proxy_forwarded {
    HG_PROXY_XFF,         /* X-Forwarded-For: a, b, c (addresses, optionally with a port) */
    HG_PROXY_FORWARDED,   /* Forwarded: for=a, for="[2001:db8::1]:80";proto=https (RFC 7239) */
};

/* Hops considered at most: a longer chain is cut there (the client is the hop reached). */
#define HG_PROXY_MAX_HOPS 32

/*
 * The client of a request that arrived from `hop` (the connection's address: its socket peer, or
 * what a PROXY header named). While the current hop is in `trusted`, step one address to the left
 * in the forwarding header (every header line of that name, the last line's last entry first);
 * the first hop that is not trusted is the client. An entry that is not an address ("unknown",
 * an obfuscated "_name", garbage) ends the walk at the last hop that was one; every hop trusted
 * ends it at the leftmost. With `trusted` empty the client is `hop`. `headers`: the request's.
 */
void hg_proxy_client(const struct hg_ip *hop, const struct hg_cidr_list *trusted, enum hg_proxy_forwarded kind,
                     const struct hg_http_req_header *headers, size_t n_headers, struct hg_ip *client);

#endif

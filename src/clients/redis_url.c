/*
 * redis:// URL parsing for the Redis client (src/clients/redis.c): userinfo with percent-escapes,
 * IPv6 literals, port and database number. Kept apart: it is pure string work with its own tests.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "clients/redis.h"
#include "core/err.h"
#include "core/str.h"

/* Copy s[0..n) into out (cap bytes with NUL), decoding %XX ('+' is itself in a URL's userinfo).
 * A %00 would cut the C string short: refused like a malformed escape. */
static int copy_decoded(char *out, size_t cap, const char *s, size_t n)
{
    size_t len;
    if (hg_percent_decode(s, n, 0, out, cap - 1, &len) < 0 || memchr(out, '\0', len) != NULL)
        return HG_ERR_PARSE;
    out[len] = '\0';
    return 0;
}

static int parse_uint(const char *s, size_t n, int max, int *out)
{
    if (n == 0 || n > 10)
        return HG_ERR_PARSE;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return HG_ERR_PARSE;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max)
        return HG_ERR_PARSE;
    *out = (int)v;
    return 0;
}

int hg_redis_url_check(const char *url, char *why, size_t wl)
{
    struct hg_redis_url u;
    if (url != NULL && strncasecmp(url, "rediss://", 9) == 0) {
        snprintf(why, wl, "rediss:// (TLS) is not supported: Debian's hiredis 0.14 has no TLS; run a TLS "
                          "sidecar (stunnel) on loopback and point url at it as redis:// (docs/backend-tls.md)");
        return HG_ERR_PARSE;
    }
    if (url != NULL && strncasecmp(url, "unix://", 7) == 0) {
        snprintf(why, wl, "unix:// sockets are not supported; use redis://host:port (docs/redis.md)");
        return HG_ERR_PARSE;
    }
    int rc = hg_redis_url_parse(url, &u);
    explicit_bzero(&u, sizeof u);
    if (rc != 0)
        snprintf(why, wl, "not a redis://[user:password@]host[:port][/db] URL (percent-escape reserved "
                          "characters; no query string)");
    return rc;
}

int hg_redis_url_parse(const char *url, struct hg_redis_url *out)
{
    static const char scheme[] = "redis://";
    memset(out, 0, sizeof(*out));
    out->port = 6379;
    if (url == NULL || strncmp(url, scheme, sizeof(scheme) - 1) != 0)
        return HG_ERR_PARSE;
    const char *p = url + sizeof(scheme) - 1;
    const char *end = p + strlen(p);
    if (memchr(p, '?', (size_t)(end - p)) || memchr(p, '#', (size_t)(end - p)))
        return HG_ERR_PARSE;
    const char *slash = memchr(p, '/', (size_t)(end - p));
    const char *auth_end = slash ? slash : end;
    /* The last '@' before the path ends the userinfo, so a password with an unescaped '@'
     * still parses as its owner meant. */
    const char *at = NULL;
    for (const char *q = p; q < auth_end; q++)
        if (*q == '@')
            at = q;
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon) {
            if (copy_decoded(out->user, sizeof(out->user), p, (size_t)(colon - p)) < 0 ||
                copy_decoded(out->password, sizeof(out->password), colon + 1,
                             (size_t)(at - colon - 1)) < 0)
                return HG_ERR_PARSE;
        } else if (copy_decoded(out->password, sizeof(out->password), p, (size_t)(at - p)) < 0) {
            /* redis://secret@host: a lone userinfo is the password, as redis-cli reads it */
            return HG_ERR_PARSE;
        }
        p = at + 1;
    }
    const char *host = p, *host_end, *port = NULL;
    if (*p == '[') {
        const char *rb = memchr(p, ']', (size_t)(auth_end - p));
        if (rb == NULL)
            return HG_ERR_PARSE;
        host = p + 1;
        host_end = rb;
        if (rb + 1 < auth_end) {
            if (rb[1] != ':')
                return HG_ERR_PARSE;
            port = rb + 2;
        }
    } else {
        const char *colon = memchr(p, ':', (size_t)(auth_end - p));
        host_end = colon ? colon : auth_end;
        if (colon)
            port = colon + 1;
    }
    size_t hlen = (size_t)(host_end - host);
    if (hlen == 0 || hlen > HG_REDIS_HOST_MAX)
        return HG_ERR_PARSE;
    for (size_t i = 0; i < hlen; i++) {
        char ch = host[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '-' || ch == '_' || ch == ':'))
            return HG_ERR_PARSE;
    }
    memcpy(out->host, host, hlen);
    out->host[hlen] = '\0';
    if (port && (parse_uint(port, (size_t)(auth_end - port), 65535, &out->port) < 0 ||
                 out->port == 0))
        return HG_ERR_PARSE;
    if (slash && slash + 1 < end && parse_uint(slash + 1, (size_t)(end - slash - 1), 65535,
                                               &out->db) < 0)
        return HG_ERR_PARSE;
    return 0;
}

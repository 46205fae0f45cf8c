/*
 * Configuration values: comma-separated lists, paths, tenant ids, URL schemes, and the parsers of
 * every key type (sizes, durations, booleans, enums, listen addresses) with their range checks,
 * and values read from secret files (<key>_file). The loader (conf.c) drives them from its key
 * table.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "conf/conf_internal.h"
#include "core/cidr.h"
#include "core/common.h"
#include "core/err.h"
#include "core/log.h"
#include "core/str.h"

/* ---------------------------------------------------------------- lists and strings */

/* Overwrite a secret before its memory goes back to the allocator (core dumps, reuse). */
void conf_wipe(char *s)
{
    if (s)
        explicit_bzero(s, strlen(s));
}

void conf_strlist_clear(struct hg_strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

bool conf_is_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

/*
 * Split `s` at any character of `seps`, trimming blanks around items. An empty `s` is an empty
 * list; an empty item inside ("a,,b") is an error because it is almost always a typo.
 */
int conf_strlist_parse(const char *s, const char *seps, struct hg_strlist *out, char *why, size_t wl)
{
    struct hg_strlist l = { NULL, 0 };
    const char *p = s;
    while (conf_is_space(*p))
        p++;
    if (*p == '\0') {
        *out = l;
        return 0;
    }
    for (;;) {
        size_t n = strcspn(p, seps);
        const char *a = p, *b = p + n;
        while (a < b && conf_is_space(*a))
            a++;
        while (b > a && conf_is_space(b[-1]))
            b--;
        if (a == b) {
            snprintf(why, wl, "empty item in list");
            goto fail;
        }
        if (l.n == CONF_MAX_ITEMS) {
            snprintf(why, wl, "more than %u items in list", CONF_MAX_ITEMS);
            goto fail;
        }
        l.items = hg_xrealloc(l.items, (l.n + 1) * sizeof(*l.items));
        l.items[l.n++] = hg_xstrndup(a, (size_t)(b - a));
        if (p[n] == '\0')
            break;
        p += n + 1;
    }
    *out = l;
    return 0;
fail:
    conf_strlist_clear(&l);
    return -1;
}

/* Absolute path for `p` against the working directory; no symlink resolution (dirs may not exist). */
char *conf_path_absolute(const char *p)
{
    if (p[0] == '/')
        return hg_xstrdup(p);
    char cwd[4096];
    if (getcwd(cwd, sizeof(cwd)) == NULL)
        return NULL;
    while (p[0] == '.' && p[1] == '/')
        p += 2;
    size_t cl = strlen(cwd), pl = strlen(p);
    if (cl > 1 && cwd[cl - 1] == '/')
        cl--;
    char *r = hg_xmalloc(cl + 1 + pl + 1);
    memcpy(r, cwd, cl);
    r[cl] = '/';
    memcpy(r + cl + 1, p, pl + 1);
    if (pl == 0 || strcmp(p, ".") == 0)
        r[cl] = '\0';
    return r;
}

bool conf_valid_tenant_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > CONF_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.')
            return false;
    return true;
}

/* ---------------------------------------------------------------- value parsers */

static void words_join(char *out, size_t n, const char *const *w, const char *sep)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; w[i] && o < n; i++)
        o += (size_t)snprintf(out + o, n - o, "%s%s", i ? sep : "", w[i]);
}

/* URL-ish values must start with one of the key's schemes; the value itself is never echoed. */
int conf_check_scheme(const struct key *k, const char *v, size_t item, char *why, size_t wl)
{
    for (size_t i = 0; k->words[i]; i++)
        if (strncasecmp(v, k->words[i], strlen(k->words[i])) == 0)
            return 0;
    char all[128];
    words_join(all, sizeof(all), k->words, " or ");
    if (item)
        snprintf(why, wl, "item %zu must start with %s", item, all);
    else
        snprintf(why, wl, "must start with %s", all);
    return -1;
}

/* Durations in microseconds: "200us", "250ms", "30s", "5m"/"5min", "24h", "1d"; bare = seconds. */
static int parse_duration_us(const char *s, uint64_t *out)
{
    const char *p = s;
    while (*p >= '0' && *p <= '9')
        p++;
    uint64_t v;
    if (hg_span_to_u64(s, (size_t)(p - s), UINT64_MAX, &v))
        return HG_ERR_PARSE;
    while (*p == ' ')
        p++;
    uint64_t mul;
    if (*p == '\0' || strcmp(p, "s") == 0) mul = 1000000ull;
    else if (strcmp(p, "us") == 0) mul = 1;
    else if (strcmp(p, "ms") == 0) mul = 1000ull;
    else if (strcmp(p, "m") == 0 || strcmp(p, "min") == 0) mul = 60000000ull;
    else if (strcmp(p, "h") == 0) mul = 3600000000ull;
    else if (strcmp(p, "d") == 0) mul = 86400000000ull;
    else return HG_ERR_PARSE;
    if (v > UINT64_MAX / mul)
        return HG_ERR_PARSE;
    *out = v * mul;
    return 0;
}

/* Parse a numeric value of key type `t` into its unit (bytes, ms, us or plain). */
static int parse_number(enum key_type t, const char *s, uint64_t *out, char *why, size_t wl)
{
    uint64_t us;
    switch (t) {
    case KEY_UINT:
    case KEY_WORKERS:
        if (hg_span_to_u64(s, strlen(s), UINT64_MAX, out) == 0)
            return 0;
        snprintf(why, wl, "'%s' is not a number", s);
        return -1;
    case KEY_SIZE:
        if (hg_str_to_size(s, out) == 0)
            return 0;
        snprintf(why, wl, "'%s' is not a size (like 512KiB, 3MiB, 1GiB or a byte count)", s);
        return -1;
    case KEY_MS:
        if (parse_duration_us(s, &us) == 0) {
            if (us % 1000) {
                snprintf(why, wl, "'%s' is finer than a millisecond", s);
                return -1;
            }
            *out = us / 1000;
            return 0;
        }
        snprintf(why, wl, "'%s' is not a duration (like 250ms, 30s, 5m, 24h)", s);
        return -1;
    case KEY_US:
        if (parse_duration_us(s, out) == 0)
            return 0;
        snprintf(why, wl, "'%s' is not a duration (like 200us, 2ms, 1s)", s);
        return -1;
    default:
        break;
    }
    snprintf(why, wl, "internal: not a numeric key");
    return -1;
}

/* Check `v` against the key's range (written in the key's syntax); table ranges always parse. */
static int check_range(const struct key *k, const char *text, uint64_t v, char *why, size_t wl)
{
    uint64_t lo = 0, hi = UINT64_MAX;
    char scratch[64];
    if (k->min && parse_number(k->type, k->min, &lo, scratch, sizeof(scratch)))
        abort();
    if (k->max && parse_number(k->type, k->max, &hi, scratch, sizeof(scratch)))
        abort();
    if (k->size == sizeof(uint32_t) && hi > UINT32_MAX)
        hi = UINT32_MAX;
    if (v < lo || v > hi) {
        snprintf(why, wl, "%s is out of range %s..%s", text, k->min ? k->min : "0", k->max ? k->max : "max");
        return -1;
    }
    return 0;
}

/*
 * "host:port", "[v6]:port" or ":port" (all IPv4 interfaces) into *host_field and the uint16_t
 * port that follows it in struct hg_conf (conf.c asserts that layout for every KEY_LISTEN key).
 * With KEY_F_OFF, "off" or "" means no listener: the host becomes NULL.
 */
static int set_listen(const struct key *k, char *field, const char *v, char *why, size_t wl)
{
    char **host_field = (char **)field;
    uint16_t *port_field = (uint16_t *)(field + sizeof(char *));
    if ((k->flags & KEY_F_OFF) && (*v == '\0' || strcmp(v, "off") == 0)) {
        free(*host_field);
        *host_field = NULL;
        *port_field = 0;
        return 0;
    }
    const char *colon = strrchr(v, ':');
    char host[INET6_ADDRSTRLEN + 8];
    unsigned char addr[sizeof(struct in6_addr)];
    bool v6 = false;
    uint64_t port;
    if (colon == NULL)
        goto bad;
    size_t hl = (size_t)(colon - v);
    if (hl > 0 && v[0] == '[') {
        if (hl < 3 || v[hl - 1] != ']' || hl - 2 >= sizeof(host))
            goto bad;
        memcpy(host, v + 1, hl - 2);
        host[hl - 2] = '\0';
        v6 = true;
    } else {
        if (hl >= sizeof(host) || memchr(v, ':', hl))
            goto bad;
        memcpy(host, v, hl);
        host[hl] = '\0';
    }
    /* Numeric only (plus localhost): the listener binds with uv_ip4_addr / uv_ip6_addr. */
    if (hl == 0) {
        snprintf(host, sizeof(host), "0.0.0.0");
    } else if (!v6 && strcmp(host, "localhost") == 0) {
        snprintf(host, sizeof(host), "127.0.0.1");
    } else if (inet_pton(v6 ? AF_INET6 : AF_INET, host, addr) != 1) {
        snprintf(why, wl, "'%s' is not a numeric %s address", host, v6 ? "IPv6" : "IPv4");
        return -1;
    }
    if (hg_span_to_u64(colon + 1, strlen(colon + 1), 65535, &port)) {
        snprintf(why, wl, "port '%s' is not a number in 0..65535", colon + 1);
        return -1;
    }
    free(*host_field);
    *host_field = hg_xstrdup(host);
    *port_field = (uint16_t)port;
    return 0;
bad:
    snprintf(why, wl, "'%s' is not host:port, [ipv6]:port or :port", v);
    return -1;
}

/* Parse `v` and store it into the field of `base` that `k` names, freeing what was there. */
int conf_set_value(const struct key *k, void *base, const char *v, char *why, size_t wl)
{
    char *field = (char *)base + k->off;
    uint64_t n;

    switch (k->type) {
    case KEY_STRING:
    case KEY_ENUM:
    case KEY_PATH: {
        char **sp = (char **)field;
        if (*v == '\0') {
            /* Empty unsets an optional key; keys with a default always have a value. */
            if (k->type != KEY_STRING || k->def) {
                snprintf(why, wl, "empty value");
                return -1;
            }
            free(*sp);
            *sp = NULL;
            return 0;
        }
        if (k->type == KEY_ENUM) {
            size_t i;
            for (i = 0; k->words[i]; i++)
                if (strcmp(v, k->words[i]) == 0)
                    break;
            if (k->words[i] == NULL) {
                char all[128];
                words_join(all, sizeof(all), k->words, ", ");
                snprintf(why, wl, "'%s' is not one of %s", v, all);
                return -1;
            }
        }
        if (k->words && k->type == KEY_STRING && conf_check_scheme(k, v, 0, why, wl))
            return -1;
        if ((k->flags & KEY_F_ID) && !conf_valid_tenant_id(v)) {
            snprintf(why, wl, "'%s' is not a tenant id (1-%d of A-Z a-z 0-9 - _ .)", v, CONF_ID_MAX);
            return -1;
        }
        char *nv;
        if (k->type == KEY_PATH) {
            nv = conf_path_absolute(v);
            if (nv == NULL) {
                snprintf(why, wl, "cannot resolve relative path: %s", strerror(errno));
                return -1;
            }
        } else {
            nv = hg_xstrdup(v);
        }
        free(*sp);
        *sp = nv;
        return 0;
    }
    case KEY_STRLIST: {
        struct hg_strlist l;
        if (conf_strlist_parse(v, ",", &l, why, wl))
            return -1;
        for (size_t i = 0; k->words && i < l.n; i++) {
            if (conf_check_scheme(k, l.items[i], i + 1, why, wl)) {
                conf_strlist_clear(&l);
                return -1;
            }
        }
        conf_strlist_clear((struct hg_strlist *)field);
        *(struct hg_strlist *)field = l;
        return 0;
    }
    case KEY_UINT:
    case KEY_SIZE:
    case KEY_MS:
    case KEY_US:
        if (parse_number(k->type, v, &n, why, wl) || check_range(k, v, n, why, wl))
            return -1;
        if (k->size == sizeof(uint64_t))
            *(uint64_t *)field = n;
        else if (k->size == sizeof(uint32_t))
            *(uint32_t *)field = (uint32_t)n;
        else
            abort();
        return 0;
    case KEY_WORKERS:
        if (strcmp(v, "auto") == 0) {
            *(int *)field = 0;   /* resolved to the CPU count after load */
            return 0;
        }
        if (parse_number(k->type, v, &n, why, wl)) {
            snprintf(why, wl, "'%s' is not auto or a number", v);
            return -1;
        }
        if (check_range(k, v, n, why, wl))
            return -1;
        *(int *)field = (int)n;
        return 0;
    case KEY_BOOL:
        if (!strcasecmp(v, "yes") || !strcasecmp(v, "true") || !strcasecmp(v, "on") || !strcmp(v, "1"))
            *(int *)field = 1;
        else if (!strcasecmp(v, "no") || !strcasecmp(v, "false") || !strcasecmp(v, "off") || !strcmp(v, "0"))
            *(int *)field = 0;
        else {
            snprintf(why, wl, "'%s' is not one of yes, no", v);
            return -1;
        }
        return 0;
    case KEY_AUTOBOOL:
        if (strcmp(v, "auto") == 0)
            *(int *)field = -1;
        else if (!strcasecmp(v, "yes") || !strcasecmp(v, "true") || !strcasecmp(v, "on") || !strcmp(v, "1"))
            *(int *)field = 1;
        else if (!strcasecmp(v, "no") || !strcasecmp(v, "false") || !strcasecmp(v, "off") || !strcmp(v, "0"))
            *(int *)field = 0;
        else {
            snprintf(why, wl, "'%s' is not one of auto, yes, no", v);
            return -1;
        }
        return 0;
    case KEY_LOGLEVEL: {
        int lv = hg_log_level_parse(v);
        if (lv < 0) {
            snprintf(why, wl, "'%s' is not one of debug, info, warn, error", v);
            return -1;
        }
        *(int *)field = lv;
        return 0;
    }
    case KEY_LISTEN:
        /* The field is the host; its port is only ever set here, as its pair. */
        return set_listen(k, field, v, why, wl);
    case KEY_CIDRS: {
        struct hg_cidr_list l;
        if (hg_cidr_list_parse(v, CONF_MAX_ITEMS, &l, why, wl) != 0)
            return -1;
        hg_cidr_list_free((struct hg_cidr_list *)field);
        *(struct hg_cidr_list *)field = l;
        return 0;
    }
    }
    abort();
}

/* ---------------------------------------------------------------- secret files */

/* Read a whole small file; trailing CR/LF removed. Errors name the file (never its content). */
static int read_secret_file(const char *path, char **out, char *why, size_t wl)
{
    int rc = -1;
    char *abs = conf_path_absolute(path);
    char *buf = NULL;
    int fd = -1;
    if (abs == NULL) {
        snprintf(why, wl, "cannot resolve '%s': %s", path, strerror(errno));
        goto out;
    }
    fd = open(abs, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, wl, "cannot read '%s': %s", abs, strerror(errno));
        goto out;
    }
    buf = hg_xmalloc(CONF_MAX_SECRET + 1);
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fd, buf + len, CONF_MAX_SECRET + 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(why, wl, "cannot read '%s': %s", abs, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        len += (size_t)r;
        if (len > CONF_MAX_SECRET) {
            snprintf(why, wl, "'%s' is bigger than %u bytes", abs, CONF_MAX_SECRET);
            goto out;
        }
    }
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        len--;
    buf[len] = '\0';
    if (len == 0 || memchr(buf, '\0', len)) {
        snprintf(why, wl, "'%s' is %s", abs, len == 0 ? "empty" : "not text");
        goto out;
    }
    *out = buf;
    buf = NULL;
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    free(buf);
    free(abs);
    return rc;
}

/* Turn "reason" into "'path': reason" in place, truncating the reason if it must. */
static void prefix_why(char *why, size_t wl, const char *path)
{
    size_t pl = strlen(path) + 4;   /* quotes, colon, space */
    size_t rl = strlen(why);
    if (pl >= wl)
        return;
    if (rl > wl - 1 - pl)
        rl = wl - 1 - pl;
    memmove(why + pl, why, rl);
    why[0] = '\'';
    memcpy(why + 1, path, pl - 4);
    memcpy(why + pl - 3, "': ", 3);
    why[pl + rl] = '\0';
}

/* Set key `k` from the file at `path`: lists take one or more items comma- or newline-separated. */
int conf_set_from_file(const struct key *k, void *base, const char *path, char *why, size_t wl)
{
    char *text = NULL;
    if (read_secret_file(path, &text, why, wl))
        return -1;
    int rc;
    if (k->type == KEY_STRLIST) {
        struct hg_strlist l;
        rc = conf_strlist_parse(text, ",\n", &l, why, wl);
        for (size_t i = 0; rc == 0 && k->words && i < l.n; i++) {
            rc = conf_check_scheme(k, l.items[i], i + 1, why, wl);
            if (rc)
                conf_strlist_clear(&l);
        }
        if (rc == 0) {
            conf_strlist_clear((struct hg_strlist *)((char *)base + k->off));
            *(struct hg_strlist *)((char *)base + k->off) = l;
        } else {
            prefix_why(why, wl, path);
        }
    } else {
        /* A single-valued secret must not carry inner newlines (a header value would break). */
        if (!(k->flags & KEY_F_LINES) && strpbrk(text, "\r\n")) {
            snprintf(why, wl, "'%s' has more than one line", path);
            rc = -1;
        } else {
            rc = conf_set_value(k, base, text, why, wl);
        }
    }
    conf_wipe(text);
    free(text);
    return rc;
}

/*
 * The admin listener's router: the route table (add management routes here), bearer-token
 * authorization in constant time, 401/404/405.
 */
#include <llhttp.h>
#include <stdio.h>
#include <string.h>

#include "core/sha256.h"
#include "outbound/outbound.h"
#include "core/str.h"
#include "http/http.h"
#include "ops/ops.h"
#include "worker/worker.h"

struct admin_route {
    const char *path;        /* exact path; or a prefix ending in '/', whose one further segment is `param` */
    int method;              /* enum llhttp_method; HTTP_GET also answers HEAD; ANY_METHOD: the handler decides */
    hg_ops_handler handler;
    bool open;               /* its path answers without a token, any method (so 405 too): probes reach it */
    bool subtree;            /* prefix route: `param` is the whole rest of the path, slashes included */
};

#define ANY_METHOD (-1)

static const struct admin_route routes[] = {
    { "/health", HTTP_GET, hg_ops_health, true, false },
    { "/ready", HTTP_GET, hg_ops_ready, true, false },
    { "/metrics", HTTP_GET, hg_ops_metrics, false, false },
    /* The outbound management API routes its own paths and methods (src/outbound/api.c). */
    { "/v1/", ANY_METHOD, hg_outbound_api, false, true },
};

#define N_ROUTES (sizeof(routes) / sizeof(routes[0]))
#define PARAM_MAX 256

/* Does `rt` match the request's path? A prefix route's segment goes to param[PARAM_MAX + 1]. */
static bool path_matches(const struct admin_route *rt, const struct hg_http_request *r, char *param)
{
    size_t pl = strlen(rt->path);
    param[0] = '\0';
    if (rt->path[pl - 1] != '/')
        return r->path_len == pl && memcmp(r->path, rt->path, pl) == 0;
    if (r->path_len <= pl || r->path_len - pl > PARAM_MAX || memcmp(r->path, rt->path, pl) != 0 ||
        (!rt->subtree && memchr(r->path + pl, '/', r->path_len - pl) != NULL))
        return false;
    memcpy(param, r->path + pl, r->path_len - pl);
    param[r->path_len - pl] = '\0';
    return true;
}

/*
 * "Bearer <token>" against [admin] token. Both sides are hashed first so the comparison takes
 * the same time whatever the length or content of what was sent.
 */
static bool token_ok(const char *token, const struct hg_http_request *r, bool *sent)
{
    size_t len;
    const char *v = hg_http_header_get(r, "Authorization", &len);
    *sent = false;
    if (v == NULL || len < 7 || !hg_span_ieq(v, 6, "Bearer") || v[6] != ' ')
        return false;
    size_t off = 7;
    while (off < len && v[off] == ' ')
        off++;
    *sent = true;
    unsigned char got[HG_SHA256_LEN], want[HG_SHA256_LEN];
    hg_sha256(v + off, len - off, got);
    hg_sha256(token, strlen(token), want);
    return hg_ct_equal(got, sizeof(got), want, sizeof(want));
}

static void unauthorized(struct hg_conn *c, bool sent, bool no_token)
{
    const char *msg = no_token ? "this admin listener is reachable beyond loopback and [admin] token is not set"
                      : sent   ? "wrong admin token"
                               : "this admin route needs Authorization: Bearer <[admin] token>";
    const char *hdr = sent ? "WWW-Authenticate: Bearer realm=\"hookgate admin\", error=\"invalid_token\"\r\n"
                           : "WWW-Authenticate: Bearer realm=\"hookgate admin\"\r\n";
    hg_conn_respond_error(c, 401, "unauthorized", msg, hdr);
}

void hg_admin_dispatch(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r, bool public_listener)
{
    char param[PARAM_MAX + 1];
    bool open = false, known = false;
    for (size_t i = 0; i < N_ROUTES; i++) {
        if (path_matches(&routes[i], r, param)) {
            known = true;
            open = open || routes[i].open;
        }
    }
    /* Unknown paths need the token too: no one learns the management routes without it. */
    if (!open) {
        const char *token = w->conf->admin_token;
        bool sent = false;
        if (token == NULL && public_listener) {
            unauthorized(c, false, true);
            return;
        }
        if (token != NULL && !token_ok(token, r, &sent)) {
            unauthorized(c, sent, false);
            return;
        }
    }
    if (!known) {
        hg_conn_respond_error(c, 404, "not_found", "no such admin path", NULL);
        return;
    }
    char allow[96];
    size_t an = 0;
    allow[0] = '\0';
    for (size_t i = 0; i < N_ROUTES; i++) {
        const struct admin_route *rt = &routes[i];
        if (!path_matches(rt, r, param))
            continue;
        if (r->method == rt->method || rt->method == ANY_METHOD ||
            (rt->method == HTTP_GET && r->method == HTTP_HEAD)) {
            rt->handler(w, c, r, rt->path[strlen(rt->path) - 1] == '/' ? param : NULL);
            return;
        }
        int n = snprintf(allow + an, sizeof(allow) - an, "%s%s", an ? ", " : "",
                         llhttp_method_name((llhttp_method_t)rt->method));
        if (n > 0 && (size_t)n < sizeof(allow) - an)
            an += (size_t)n;
    }
    char hdr[128];
    snprintf(hdr, sizeof(hdr), "Allow: %s\r\n", allow);
    hg_conn_respond_error(c, 405, "method_not_allowed", "method not allowed on this path", hdr);
}

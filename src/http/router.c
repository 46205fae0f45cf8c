/* Routing table: exact paths and `prefix/{tenant}` paths to handlers, 404 and 405 + Allow. */
#include <llhttp.h>
#include <stdio.h>
#include <string.h>

#include "http/http.h"
#include "req/req.h"

typedef void (*route_fn)(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r, const char *param);

struct route {
    const char *path;      /* exact path, or the prefix of a /{tenant} route */
    bool tenant_param;     /* path may be followed by "/{tenant}" */
    route_fn get;
    route_fn post;
    const char *allow;
};

static const struct route routes[] = {
    { "/webhooks/whatsapp", true, hg_req_whatsapp_handshake, hg_req_whatsapp_ingest, "GET, POST" },
    { "/health", false, hg_ops_health, NULL, "GET" },
    { "/ready", false, hg_ops_ready, NULL, "GET" },
    { "/metrics", false, hg_ops_metrics, NULL, "GET" },
};

/* A tenant id in a path: 1..64 of [A-Za-z0-9_.-]. */
static bool tenant_ok(const char *s, size_t n)
{
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
              ch == '_' || ch == '.'))
            return false;
    }
    return true;
}

void hg_router_dispatch(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r)
{
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        const struct route *rt = &routes[i];
        size_t plen = strlen(rt->path);
        const char *param = NULL;
        char tenant[65];
        if (r->path_len == plen && memcmp(r->path, rt->path, plen) == 0) {
            param = NULL;
        } else if (rt->tenant_param && r->path_len > plen + 1 && memcmp(r->path, rt->path, plen) == 0 &&
                   r->path[plen] == '/' && tenant_ok(r->path + plen + 1, r->path_len - plen - 1)) {
            memcpy(tenant, r->path + plen + 1, r->path_len - plen - 1);
            tenant[r->path_len - plen - 1] = '\0';
            param = tenant;
        } else {
            continue;
        }
        route_fn fn = NULL;
        if (r->method == HTTP_GET || r->method == HTTP_HEAD)
            fn = rt->get;
        else if (r->method == HTTP_POST)
            fn = rt->post;
        if (fn == NULL) {
            char allow[64];
            size_t n = (size_t)snprintf(allow, sizeof(allow), "Allow: %s\r\n", rt->allow);
            (void)n;
            hg_conn_respond_error(c, 405, "method_not_allowed", "method not allowed on this path", allow);
            return;
        }
        fn(w, c, r, param);
        return;
    }
    hg_conn_respond_error(c, 404, "not_found", "no such path", NULL);
}

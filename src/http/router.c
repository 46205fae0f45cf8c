/* Webhook routing: provider routes from the registry, /health, 404 and 405 + Allow. */
#include <llhttp.h>
#include <stdio.h>
#include <string.h>

#include "http/http.h"
#include "http/router.h"
#include "ingest/ingest.h"
#include "ops/ops.h"
#include "providers/provider.h"
#include "worker/worker.h"

struct route {
    const char *path;
    hg_ops_handler get;
};

/*
 * Only /health on the webhook port, for load balancers: /ready and /metrics (tenant names,
 * traffic) are on the admin listener, which the internet does not reach.
 */
static const struct route ops_routes[] = {
    { "/health", hg_ops_health },
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

static bool is_get(const struct hg_http_request *r)
{
    return r->method == HTTP_GET || r->method == HTTP_HEAD;
}

static void not_allowed(struct hg_conn *c, const char *allow)
{
    char hdr[64];
    snprintf(hdr, sizeof(hdr), "Allow: %s\r\n", allow);
    hg_conn_respond_error(c, 405, "method_not_allowed", "method not allowed on this path", hdr);
}

/* `path` or `path/{tenant}`: true, with the tenant (or "") in tenant[65]. */
static bool match_tenant_route(const struct hg_http_request *r, const char *path, char tenant[65])
{
    size_t plen = strlen(path);
    tenant[0] = '\0';
    if (r->path_len < plen || memcmp(r->path, path, plen) != 0)
        return false;
    if (r->path_len == plen)
        return true;
    size_t tl = r->path_len - plen - 1;
    if (r->path[plen] != '/' || !tenant_ok(r->path + plen + 1, tl))
        return false;
    memcpy(tenant, r->path + plen + 1, tl);
    tenant[tl] = '\0';
    return true;
}

void hg_router_dispatch(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r)
{
    size_t n;
    const struct hg_provider *const *providers = hg_providers(&n);
    for (size_t i = 0; i < n; i++) {
        const struct hg_provider *p = providers[i];
        char tenant[65];
        if (!match_tenant_route(r, p->route, tenant))
            continue;
        const char *param = tenant[0] ? tenant : NULL;
        /* A path that names a source (generic) is unknown, whatever the method, without one. */
        if (p->path_names_source && hg_conf_source(w->conf, param) == NULL) {
            hg_conn_respond_error(c, 404, "unknown_source", "no such source", NULL);
            return;
        }
        /* Mutual TLS per route: the handshake verified what the client showed; the route decides. */
        const struct hg_source_conf *source = p->path_names_source ? hg_conf_source(w->conf, param) : NULL;
        char why[384];
        if (hg_conf_requires_client_cert(w->conf, p->name, source) && !hg_conn_client_cert_ok(c, why, sizeof(why))) {
            hg_conn_respond_error(c, 403, "client_certificate_required", why, NULL);
            return;
        }
        if (r->method == HTTP_POST)
            hg_ingest_post(w, c, r, param, p);
        else if (is_get(r) && p->handshake)
            hg_ingest_get(w, c, r, param, p);
        else
            not_allowed(c, p->handshake ? "GET, POST" : "POST");
        return;
    }
    for (size_t i = 0; i < sizeof(ops_routes) / sizeof(ops_routes[0]); i++) {
        if (r->path_len != strlen(ops_routes[i].path) || memcmp(r->path, ops_routes[i].path, r->path_len) != 0)
            continue;
        if (is_get(r))
            ops_routes[i].get(w, c, r, NULL);
        else
            not_allowed(c, "GET");
        return;
    }
    hg_conn_respond_error(c, 404, "not_found", "no such path", NULL);
}

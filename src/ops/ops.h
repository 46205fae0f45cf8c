/*
 * The operator endpoints and the admin listener's router. /health is served on the webhook port
 * too (load balancers); /ready, /metrics and every management route only on the admin listener
 * ([admin] listen), which worker 0 runs next to its webhook listener (docs/ARCHITECTURE.md).
 */
#ifndef HG_OPS_OPS_H
#define HG_OPS_OPS_H

#include "http/http.h"

struct hg_worker;

/*
 * An admin or operator handler: answers exactly once with hg_conn_respond*, at once or later.
 * `param` is the path's last segment for a prefix route (see admin.c), else NULL.
 */
typedef void (*hg_ops_handler)(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r,
                               const char *param);

/* GET /health (alive), /ready (can accept and hand on), /metrics (Prometheus text): src/ops/health.c. */
void hg_ops_health(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r, const char *param);
void hg_ops_ready(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r, const char *param);
void hg_ops_metrics(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r, const char *param);

/*
 * Route one admin request (src/ops/admin.c): routes marked open (/health, /ready: probes must
 * reach them) answer anyone; every other path, unknown ones included, first needs
 * `Authorization: Bearer <[admin] token>` when a token is set (401 otherwise), then 404 or 405 +
 * Allow. `public_listener`: the listener is reachable beyond loopback, so without a token only
 * the open routes answer (the config refuses that setup; a reload must not open it either).
 */
void hg_admin_dispatch(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r, bool public_listener);

#endif

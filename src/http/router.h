/*
 * The webhook listener's routing table: each registered provider's webhook route
 * (`/webhooks/<name>[/{tenant}]`, GET only when the provider has a handshake) and `/health` for
 * load balancers. /ready, /metrics and the management API are on the admin listener only
 * (src/ops/ops.h). Handlers answer exactly once with hg_conn_respond*, at once or later.
 */
#ifndef HG_HTTP_ROUTER_H
#define HG_HTTP_ROUTER_H

#include "http/http.h"

struct hg_worker;

/* Route one request to its handler (404, or 405 with Allow). */
void hg_router_dispatch(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r);

#endif

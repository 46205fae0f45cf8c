/*
 * The routing table: each registered provider's webhook route (`/webhooks/<name>[/{tenant}]`,
 * GET only when the provider has a handshake), and the operator endpoints. Handlers answer
 * exactly once with hg_conn_respond*, at once or later.
 */
#ifndef HG_HTTP_ROUTER_H
#define HG_HTTP_ROUTER_H

#include "http/http.h"

struct hg_worker;

/* GET /health, /ready, /metrics (src/ops/health.c); `unused` is NULL. */
void hg_ops_health(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r, const char *unused);
void hg_ops_ready(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r, const char *unused);
void hg_ops_metrics(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r, const char *unused);

/* Route one request to its handler (404, or 405 with Allow). */
void hg_router_dispatch(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r);

#endif

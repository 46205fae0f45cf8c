/*
 * Request handlers behind the router. Each answers exactly once with hg_conn_respond*, at once
 * or later; `tenant` is the {tenant} path segment or NULL.
 */
#ifndef HG_REQ_REQ_H
#define HG_REQ_REQ_H

#include "http/http.h"

struct hg_worker;

/* GET /webhooks/whatsapp[/{tenant}]: Meta's verification handshake. */
void hg_req_whatsapp_handshake(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r, const char *tenant);
/* POST /webhooks/whatsapp[/{tenant}]: verify, make durable, answer, hand to the drain. */
void hg_req_whatsapp_ingest(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r, const char *tenant);
/* The connection of a request still in flight went away (see hg_http_handler.on_abandon). */
void hg_req_abandon(struct hg_conn *c, void *data);

/* GET /health, /ready, /metrics */
void hg_ops_health(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r, const char *unused);
void hg_ops_ready(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r, const char *unused);
void hg_ops_metrics(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r, const char *unused);

/* Route one request to its handler (404 / 405 with Allow otherwise). */
void hg_router_dispatch(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r);

#endif

/* GET /health (alive), /ready (can accept and hand on), /metrics (Prometheus text). */
#include <stdio.h>

#include "core/buf.h"
#include "core/err.h"
#include "http/http.h"
#include "ops/metrics.h"
#include "req/req.h"
#include "sink/sink.h"
#include "spool/spool.h"
#include "worker/worker.h"

void hg_ops_health(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r, const char *unused)
{
    static const char body[] = "{\"status\":\"ok\"}";
    hg_conn_respond(c, 200, "application/json", NULL, body, sizeof(body) - 1);
}

void hg_ops_ready(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r, const char *unused)
{
    const char *sink_reason = NULL;
    int spool_rc = hg_spool_writable(w->spool);
    int sink_rc = w->sink->ops->ready(w->sink, &sink_reason);
    bool ready = !w->stopping && spool_rc == 0 && sink_rc == 0;
    char body[512];
    int n = snprintf(body, sizeof(body),
                     "{\"status\":\"%s\",\"checks\":{\"listener\":\"%s\",\"spool\":\"%s\",\"sink\":\"%s\"}%s%s%s}",
                     ready ? "ready" : "not_ready", w->stopping ? "down" : "ok",
                     spool_rc == 0 ? "ok" : "down", sink_rc == 0 ? "ok" : "down",
                     ready ? "" : ",\"reason\":\"",
                     ready ? "" : (w->stopping ? "shutting down" : spool_rc ? hg_strerror(spool_rc)
                                                               : (sink_reason ? sink_reason : "sink not ready")),
                     ready ? "" : "\"");
    hg_conn_respond(c, ready ? 200 : 503, "application/json", NULL, body, (size_t)n);
}

void hg_ops_metrics(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r, const char *unused)
{
    struct hg_buf b;
    hg_buf_init(&b, 16u << 20);
    if (hg_metrics_render(&b) != 0) {
        hg_buf_free(&b);
        hg_conn_respond_error(c, 500, "internal", "metrics too large", NULL);
        return;
    }
    hg_conn_respond(c, 200, "text/plain; version=0.0.4", NULL, b.data ? b.data : "", b.len);
    hg_buf_free(&b);
}

/*
 * GET /health (alive), /ready (can accept and hand on, per backend), /metrics (Prometheus text).
 * /health is on both listeners; /ready and /metrics on the admin listener (worker 0's loop), where
 * /ready's checks are worker 0's and its status the worst over every worker.
 */
#include <stdio.h>

#include "clients/redis.h"
#include "core/buf.h"
#include "core/err.h"
#include "http/http.h"
#include "ops/metrics.h"
#include "drain/drain.h"
#include "ops/ops.h"
#include "sink/sink.h"
#include "spool/spool.h"
#include "worker/worker.h"

void hg_ops_health(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r, const char *unused)
{
    static const char body[] = "{\"status\":\"ok\"}";
    hg_conn_respond(c, 200, "application/json", NULL, body, sizeof(body) - 1);
}

/*
 * Ready (200): listening, the spool takes appends and the sink can hand events on — in every
 * worker, since a load balancer cannot choose which worker answers. Not ready (503 + reason):
 * shutting down, spool not writable, or the sink down (acceptance itself goes on meanwhile:
 * records wait in the spool). Redis down is "degraded" (200): a per-worker fallback keeps dedup
 * and rate limits working.
 */
void hg_ops_ready(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r, const char *unused)
{
    const char *own_reason, *all_reason;
    enum hg_worker_health own = hg_worker_health(w, &own_reason);
    enum hg_worker_health all = hg_worker_health_all(&all_reason);
    enum hg_worker_health worst = own > all ? own : all;
    const char *reason = own >= all ? own_reason : all_reason;
    const char *sink_reason = NULL;
    int spool_rc = w->spool ? hg_spool_writable(w->spool) : HG_ERR_CLOSED;
    int sink_rc = w->sink ? w->sink->ops->ready(w->sink, &sink_reason) : HG_ERR_CLOSED;
    bool redis_ok = w->redis == NULL || hg_redis_state(w->redis) == HG_REDIS_OK;
    /* This worker's view, or any other worker's as its lag timer last published it. */
    unsigned others = hg_worker_checks_all();
    if ((others & HG_CHECK_SPOOL) && spool_rc == 0)
        spool_rc = HG_ERR_UNAVAILABLE;
    if ((others & HG_CHECK_SINK) && sink_rc == 0)
        sink_rc = HG_ERR_UNAVAILABLE;
    if (others & HG_CHECK_REDIS)
        redis_ok = false;
    static const char *const names[] = { "ready", "degraded", "not_ready" };

    struct hg_buf b;
    hg_buf_init(&b, 4096);
    hg_buf_appendf(&b, "{\"status\":\"%s\",\"checks\":{\"listener\":\"%s\",\"spool\":\"%s\",\"%s\":\"%s\"",
                   names[worst], w->stopping ? "down" : "ok", spool_rc == 0 ? "ok" : "down",
                   w->sink_is_amqp ? "rabbitmq" : "ndjson", sink_rc == 0 ? "ok" : "down");
    if (w->redis)
        hg_buf_appendf(&b, ",\"redis\":\"%s\"", redis_ok ? "ok" : "degraded");
    if (w->s3 && w->drain)
        hg_buf_appendf(&b, ",\"s3\":\"%s\"",
                       hg_drain_archive_failing(w->drain) || (others & HG_CHECK_S3) ? "down" : "ok");
    hg_buf_appendf(&b, "}");
    if (reason)
        hg_buf_appendf(&b, ",\"reason\":\"%s\"", reason);
    hg_buf_appendf(&b, "}");
    hg_conn_respond(c, worst == HG_WORKER_NOT_READY ? 503 : 200, "application/json", NULL, b.data, b.len);
    hg_buf_free(&b);
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

/*
 * Worker threads: each runs its own libuv loop with its own listener, spool, sink and drain.
 * Start-up order: spool (recovery) → sink → drain → listener. Shutdown runs the same chain
 * backwards, each step in the previous step's close callback.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "sink/amqp.h"
#include "clients/http.h"
#include "clients/jwks_remote.h"
#include "clients/redis.h"
#include "clients/s3.h"
#include "core/common.h"
#include "core/err.h"
#include "core/log.h"
#include "core/time.h"
#include "http/http.h"
#include "ops/metrics.h"
#include "drain/drain.h"
#include "http/router.h"
#include "ingest/ingest.h"
#include "ops/ops.h"
#include "sink/ndjson.h"
#include "sink/sink.h"
#include "spool/spool.h"
#include "clients/statemgr.h"
#include "media/media.h"
#include "outbound/outbound.h"
#include "tenants/tenants.h"
#include "worker/worker.h"

#define LAG_INTERVAL_MS 100
/* Connections the admin listener takes at once: scrapers and probes need a handful. */
#define ADMIN_MAX_CONNECTIONS 1024

static _Thread_local struct hg_worker *current_worker;
/* Every worker, for /ready's view over all of them; written before any worker listens. */
static struct hg_worker *all_workers[256];
static _Atomic int n_all_workers;

struct hg_worker *hg_worker_current(void) { return current_worker; }

static void limits_from_conf(struct hg_http_limits *l, const struct hg_conf *c)
{
    l->max_header_bytes = c->max_header_bytes;
    l->max_body_bytes = c->max_body_bytes;
    l->header_timeout_ms = c->header_timeout_ms;
    l->body_timeout_ms = c->body_timeout_ms;
    l->body_total_timeout_ms = c->body_total_timeout_ms;
    l->request_timeout_ms = c->request_timeout_ms;
    l->max_buffered_bytes = c->max_buffered_bytes;
    l->keepalive_timeout_ms = c->keepalive_timeout_ms;
    l->max_connections = c->max_connections;
    l->trusted_proxies = c->trusted_proxies.n ? &c->trusted_proxies : NULL;
}

static void on_request(struct hg_conn *c, struct hg_http_request *r, void *ud)
{
    hg_router_dispatch(ud, c, r);
}

static void on_admin_request(struct hg_conn *c, struct hg_http_request *r, void *ud)
{
    struct hg_worker *w = ud;
    hg_admin_dispatch(w, c, r, w->admin_public);
}

/* The admin listener's limits: [server]'s, with fewer connections. */
static void admin_limits_from_conf(struct hg_http_limits *l, const struct hg_conf *c)
{
    limits_from_conf(l, c);
    if (l->max_connections > ADMIN_MAX_CONNECTIONS)
        l->max_connections = ADMIN_MAX_CONNECTIONS;
}

static void on_fsync(void *arg, double seconds)
{
    (void)arg;
    hg_metric_observe(HG_M_SPOOL_FSYNC_DURATION, NULL, seconds);
}

static void on_amqp_confirm(void *arg, int status, uint64_t latency_ns)
{
    (void)arg;
    hg_metric_observe(HG_M_RABBITMQ_CONFIRM_DURATION, NULL, (double)latency_ns / 1e9);
    hg_metric_inc(HG_M_RABBITMQ_PUBLISH, status == 0 ? "status=\"confirmed\""
                                         : status == HG_ERR_REJECTED ? "status=\"rejected\"" : "status=\"failed\"");
    if (status != 0)
        hg_metric_inc(HG_M_RABBITMQ_PUBLISH_FAILURES, NULL);
}

enum hg_worker_health hg_worker_health(struct hg_worker *w, const char **reason)
{
    const char *sink_reason = NULL;
    *reason = NULL;
    /* Checked first: while stopping, the backends below are being closed and freed one by one. */
    if (w->stopping) {
        *reason = "shutting down";
        return HG_WORKER_NOT_READY;
    }
    int spool_rc = w->spool ? hg_spool_writable(w->spool) : HG_ERR_CLOSED;
    int sink_rc = w->sink ? w->sink->ops->ready(w->sink, &sink_reason) : HG_ERR_CLOSED;
    if (spool_rc != 0) {
        *reason = spool_rc == HG_ERR_FULL ? "spool full" : "spool not writable";
        return HG_WORKER_NOT_READY;
    }
    if (sink_rc != 0) {
        *reason = sink_reason ? sink_reason : "sink not ready";
        return HG_WORKER_NOT_READY;
    }
    if (w->drain && hg_drain_archive_failing(w->drain)) {
        *reason = "s3 archive failing: records wait in the spool";
        return HG_WORKER_DEGRADED;
    }
    if (w->redis && hg_redis_state(w->redis) != HG_REDIS_OK) {
        *reason = "redis unreachable: local fallback in use";
        return HG_WORKER_DEGRADED;
    }
    return HG_WORKER_READY;
}

enum hg_worker_health hg_worker_health_all(const char **reason)
{
    enum hg_worker_health worst = HG_WORKER_READY;
    *reason = NULL;
    int n = atomic_load(&n_all_workers);
    for (int i = 0; i < n; i++) {
        int h = atomic_load_explicit(&all_workers[i]->health, memory_order_relaxed);
        if (h > (int)worst) {
            worst = (enum hg_worker_health)h;
            *reason = atomic_load_explicit(&all_workers[i]->health_reason, memory_order_relaxed);
        }
    }
    return worst;
}

unsigned hg_worker_checks_all(void)
{
    unsigned bits = 0;
    int n = atomic_load(&n_all_workers);
    for (int i = 0; i < n; i++)
        bits |= atomic_load_explicit(&all_workers[i]->checks_down, memory_order_relaxed);
    return bits;
}

static void publish_health(struct hg_worker *w)
{
    const char *reason;
    enum hg_worker_health h = hg_worker_health(w, &reason);
    unsigned bits = 0;
    if (!w->stopping) {
        const char *sink_reason = NULL;
        if (w->spool && hg_spool_writable(w->spool) != 0)
            bits |= HG_CHECK_SPOOL;
        if (w->sink && w->sink->ops->ready(w->sink, &sink_reason) != 0)
            bits |= HG_CHECK_SINK;
        if (w->drain && hg_drain_archive_failing(w->drain))
            bits |= HG_CHECK_S3;
        if (w->redis && hg_redis_state(w->redis) != HG_REDIS_OK)
            bits |= HG_CHECK_REDIS;
    }
    atomic_store_explicit(&w->checks_down, bits, memory_order_relaxed);
    atomic_store_explicit(&w->health_reason, reason, memory_order_relaxed);
    atomic_store_explicit(&w->health, (int)h, memory_order_relaxed);
}

/* The tenant resolver counts on its own; the metrics get what it counted since the last tick. */
static void publish_tenant_cache(struct hg_worker *w)
{
    const struct hg_tenants_stats *st = hg_tenants_stats(w->tenants);
    struct hg_tenants_stats *seen = &w->tenants_seen;
    hg_metric_add(HG_M_CACHE_HIT, "cache=\"tenant_local\"", st->local_hits - seen->local_hits);
    hg_metric_add(HG_M_CACHE_MISS, "cache=\"tenant_local\"", st->local_misses - seen->local_misses);
    hg_metric_add(HG_M_CACHE_HIT, "cache=\"tenant_redis\"", st->redis_hits - seen->redis_hits);
    hg_metric_add(HG_M_CACHE_MISS, "cache=\"tenant_redis\"", st->redis_misses - seen->redis_misses);
    *seen = *st;
}

/* Event loop lag: how late a periodic timer fires. Also refreshes the spool gauges. */
static void on_lag_timer(uv_timer_t *t)
{
    struct hg_worker *w = t->data;
    uint64_t now = hg_time_mono_ns();
    double lag = 0;
    if (w->lag_expected_ns && now > w->lag_expected_ns)
        lag = (double)(now - w->lag_expected_ns) / 1e9;
    w->lag_expected_ns = now + LAG_INTERVAL_MS * 1000000ull;
    hg_metric_set(HG_M_EVENT_LOOP_LAG, NULL, lag);
    uint64_t records = 0, bytes = 0;
    if (w->spool)
        hg_spool_stats(w->spool, &records, &bytes);
    hg_metric_set(HG_M_SPOOL_RECORDS, NULL, (double)records);
    hg_metric_set(HG_M_SPOOL_BYTES, NULL, (double)bytes);
    if (w->drain)
        hg_metric_set(HG_M_DRAIN_IN_MEMORY, NULL, (double)hg_drain_inflight(w->drain));
    if (w->tenants)
        publish_tenant_cache(w);
    publish_health(w);
}

/* ---- shutdown chain: http stopped → sink closed → drain freed → spool closed → handles ---- */

static void on_handle_closed(uv_handle_t *h)
{
    (void)h;
}

static void on_spool_closed(void *arg)
{
    struct hg_worker *w = arg;
    w->spool = NULL;
    if (uv_is_closing((uv_handle_t *)&w->wakeup))
        return;
    uv_close((uv_handle_t *)&w->lag_timer, on_handle_closed);
    uv_close((uv_handle_t *)&w->shutdown_timer, on_handle_closed);
    uv_close((uv_handle_t *)&w->wakeup, on_handle_closed);
    hg_info(NULL, "worker stopped", NULL);
}

static void on_drain_freed(void *arg)
{
    struct hg_worker *w = arg;
    w->drain = NULL;
    if (w->spool)
        hg_spool_close(w->spool, on_spool_closed, w);
    else
        on_spool_closed(w);
}

static void on_http_client_closed(void *arg)
{
    struct hg_worker *w = arg;
    w->http_client = NULL;
    hg_jwks_remote_free(w->jwks_remote); /* its fetch ended with the client (no waiter is left) */
    w->jwks_remote = NULL;
    if (w->drain)
        hg_drain_free(w->drain, on_drain_freed, w);
    else
        on_drain_freed(w);
}

static void on_redis_closed(void *arg)
{
    struct hg_worker *w = arg;
    w->redis = NULL;
    if (w->http_client == NULL) {
        on_http_client_closed(w);
        return;
    }
    /* Closing the HTTP client ends every S3 call (their callbacks run now), then the S3 client goes. */
    if (w->http_client)
        hg_http_close(w->http_client, on_http_client_closed, w);
    if (w->s3) {
        hg_s3_close(w->s3);
        w->s3 = NULL;
    }
}

static void on_tenants_closed(void *arg)
{
    struct hg_worker *w = arg;
    w->tenants = NULL;
    if (w->redis)
        hg_redis_close(w->redis, on_redis_closed, w);
    else
        on_redis_closed(w);
}

static void on_media_closed(void *arg)
{
    struct hg_worker *w = arg;
    w->media = NULL;
    /* Tenant lookups end next: they use the Redis and HTTP clients closed after them. */
    if (w->tenants)
        hg_tenants_close(w->tenants, on_tenants_closed, w);
    else
        on_tenants_closed(w);
}

static void on_statemgr_closed(void *arg)
{
    struct hg_worker *w = arg;
    w->statemgr = NULL;
    /* Downloads in flight end as "retry": their records stay in the spool for the next run. */
    if (w->media)
        hg_media_close(w->media, on_media_closed, w);
    else
        on_media_closed(w);
}

static void on_sink_closed(void *arg)
{
    struct hg_worker *w = arg;
    w->sink = NULL; /* freed: the lag timer's health check must not look at it */
    if (w->statemgr)
        hg_statemgr_close(w->statemgr, on_statemgr_closed, w);
    else
        on_statemgr_closed(w);
}

static void on_outbound_closed(void *arg)
{
    struct hg_worker *w = arg;
    w->outbound = NULL;
    if (w->drain)
        hg_drain_stop(w->drain);
    if (w->sink)
        w->sink->ops->close(w->sink, on_sink_closed, w);
    else
        on_sink_closed(w);
}

static void on_http_stopped(void *arg)
{
    struct hg_worker *w = arg;
    if (w->http)
        hg_http_server_free(w->http);
    w->http = NULL;
    if (w->admin)
        hg_http_server_free(w->admin);
    w->admin = NULL;
    uv_timer_stop(&w->shutdown_timer);
    /* Outbound first: it sends with the HTTP client, closed further down the chain. */
    if (w->outbound)
        hg_outbound_close(w->outbound, on_outbound_closed, w);
    else
        on_outbound_closed(w);
}

static void on_shutdown_timeout(uv_timer_t *t)
{
    struct hg_worker *w = t->data;
    hg_warn(NULL, "shutdown timeout reached; closing remaining connections", NULL);
    if (w->http)
        hg_http_server_abort(w->http);
    if (w->admin)
        hg_http_server_abort(w->admin);
}

/* One listener stopped; the shutdown chain goes on once both have. */
static void on_server_stopped(void *arg)
{
    struct hg_worker *w = arg;
    if (--w->servers_stopping == 0)
        on_http_stopped(w);
}

static void begin_stop(struct hg_worker *w)
{
    if (w->stopping)
        return;
    w->stopping = true;
    publish_health(w);
    if (w->http == NULL) {
        on_http_stopped(w); /* never listened */
        return;
    }
    uv_timer_start(&w->shutdown_timer, on_shutdown_timeout, w->conf->shutdown_timeout_ms, 0);
    w->servers_stopping = w->admin ? 2 : 1;
    hg_http_server_stop(w->http, on_server_stopped, w);
    if (w->admin)
        hg_http_server_stop(w->admin, on_server_stopped, w);
}

static void amqp_opts_from_conf(struct hg_amqp_opts *ao, const struct hg_conf *c)
{
    ao->urls = (const char *const *)c->amqp_urls.items;
    ao->n_urls = c->amqp_urls.n;
    ao->tls_ca = c->amqp_tls_ca;
    ao->tls_cert = c->amqp_tls_cert;
    ao->tls_key = c->amqp_tls_key;
    ao->tls_insecure = c->amqp_tls_verify == 0;
}

/*
 * A reload hands every client the credentials of the new snapshot (docs/configuration.md,
 * "Reload"): Redis and RabbitMQ reconnect when their URL (password included) or TLS settings
 * changed, S3 signs new requests with the new keys, the tenant service and the State Manager get
 * the new bearer token. What a client cannot change while running is logged by main.c as taking
 * effect at restart. The snapshot was validated by the loader, so a refusal here is unexpected;
 * it is logged and the client keeps what it had.
 */
static void reload_backends(struct hg_worker *w, const struct hg_conf *c)
{
    if (w->sink_is_amqp && c->amqp_urls.n > 0) {
        struct hg_amqp_opts ao = {0};
        bool changed;
        amqp_opts_from_conf(&ao, c);
        if (hg_amqp_sink_reconfigure(w->sink, &ao, &changed) != 0)
            hg_error(NULL, "reload: amqp settings refused; keeping the running ones", NULL);
    }
    if (w->redis && c->redis_url) {
        bool changed;
        if (hg_redis_set_url(w->redis, c->redis_url, &changed) != 0)
            hg_error(NULL, "reload: redis url refused; keeping the running one", NULL);
    }
    if (w->s3 && c->s3_endpoint && hg_s3_set_keys(w->s3, c->s3_access_key, c->s3_secret_key) != 0)
        hg_error(NULL, "reload: s3 keys refused; keeping the running ones", NULL);
    if (w->tenants && hg_tenants_set_token(w->tenants, c->tenant_service_token) != 0)
        hg_error(NULL, "reload: tenant service token refused; keeping the running one", NULL);
    if (w->statemgr && c->state_manager_url && hg_statemgr_set_token(w->statemgr, c->state_manager_token) != 0)
        hg_error(NULL, "reload: state manager token refused; keeping the running one", NULL);
}

/* The [endpoint.<name>] documents of a snapshot as one array (new references to them). */
static json_t *config_endpoints(const struct hg_conf *c)
{
    json_t *a = json_array();
    for (size_t i = 0; i < c->n_endpoints; i++)
        json_array_append(a, c->endpoints[i].doc);
    return a;
}

static void on_wakeup(uv_async_t *a)
{
    struct hg_worker *w = a->data;
    struct hg_conf *next = atomic_exchange(&w->next_conf, NULL);
    if (next) {
        struct hg_conf *old = w->conf;
        w->conf = next;
        struct hg_http_limits l;
        limits_from_conf(&l, next);
        if (w->http) {
            hg_http_server_set_limits(w->http, &l);
            /* New connections handshake with the new certificate; open ones keep theirs (refcounted). */
            hg_http_server_set_tls(w->http, next->tls);
        }
        if (w->admin) {
            admin_limits_from_conf(&l, next);
            hg_http_server_set_limits(w->admin, &l);
        }
        if (!w->stopping)
            reload_backends(w, next);
        if (!w->stopping && w->outbound) {
            json_t *eps = config_endpoints(next);
            hg_outbound_set_config_endpoints(w->outbound, eps);
            json_decref(eps);
        }
        hg_conf_unref(old);
    }
    if (atomic_load(&w->stop_requested))
        begin_stop(w);
}

static int worker_open(struct hg_worker *w)
{
    const struct hg_conf *c = w->conf;
    struct hg_spool_opts so = {
        .dir = c->spool_dir,
        .worker = w->id,
        .nworkers = w->nworkers,
        /* The quota is the process's: each worker owns an equal share of it. */
        .max_bytes = c->spool_max_bytes / (uint64_t)w->nworkers,
        .segment_bytes = c->spool_segment_bytes,
        .commit_delay_us = c->spool_commit_delay_us,
        .on_fsync = on_fsync,
        .on_fsync_arg = w,
    };
    int rc = hg_spool_open(&w->loop, &so, &w->spool);
    if (rc != 0) {
        hg_error(NULL, "cannot open spool", "dir", c->spool_dir, "error", hg_strerror(rc), NULL);
        return rc;
    }
    if (c->amqp_urls.n > 0) {
        struct hg_amqp_opts ao = {
            .queue_type = c->amqp_queue_type,
            .max_priority = (int)c->amqp_max_priority,
            .queue_version = c->amqp_queue_version,
            .on_confirm = on_amqp_confirm,
            .hook_arg = w,
        };
        amqp_opts_from_conf(&ao, c);
        rc = hg_amqp_sink_open(&w->loop, &ao, &w->sink);
        if (rc != 0) {
            hg_error(NULL, "cannot use amqp url", "error", hg_strerror(rc), NULL);
            return rc;
        }
        w->sink_is_amqp = true;
        w->ack_broker = c->ack && strcmp(c->ack, "broker") == 0;
    } else {
        rc = hg_ndjson_sink_open(&w->loop, c->ndjson_dir, w->id, c->ndjson_rotate_bytes, &w->sink);
        if (rc != 0) {
            hg_error(NULL, "cannot open ndjson sink", "dir", c->ndjson_dir, "error", hg_strerror(rc), NULL);
            return rc;
        }
    }
    rc = hg_http_open(&w->loop, &w->http_client);
    if (rc != 0)
        return rc;
    w->jwks_remote = hg_jwks_remote_new(w->http_client);
    if (w->id == 0) {
        /* One scheduler and one store connection per process, next to the admin API (worker 0). */
        struct hg_outbound_opts oo = {
            .store_path = c->outbound_store_path,
            .max_inflight = c->outbound_max_inflight,
            .idempotency_ms = c->outbound_idempotency_ms,
            .never_attempted_ms = c->outbound_never_attempted_ms,
        };
        json_t *eps = config_endpoints(c);
        oo.config_endpoints = eps;
        rc = hg_outbound_open(&w->loop, w->http_client, &oo, &w->outbound);
        json_decref(eps);
        if (rc != 0)
            return rc;
    }
    if (c->redis_url) {
        rc = hg_redis_open(&w->loop, c->redis_url, NULL, &w->redis);
        if (rc != 0) {
            hg_error(NULL, "cannot use redis url", "error", hg_strerror(rc), NULL);
            return rc;
        }
    }
    if (c->s3_endpoint) {
        struct hg_s3_opts s3o = {
            .endpoint = c->s3_endpoint,
            .region = c->s3_region,
            .access_key = c->s3_access_key,
            .secret_key = c->s3_secret_key,
            .path_style = true,
            .max_inflight = c->s3_max_inflight,
        };
        rc = hg_s3_open(w->http_client, &s3o, &w->s3);
        if (rc != 0) {
            hg_error(NULL, "cannot use s3 endpoint", "error", hg_strerror(rc), NULL);
            return rc;
        }
    }
    /* Always: the one tenant path decides config tenants too (404 for an unknown path tenant). */
    {
        struct hg_tenants_opts to = {
            .service_url = c->tenant_service_url,
            .service_token = c->tenant_service_token,
            .timeout_ms = (uint32_t)c->tenant_service_timeout_ms,
            .cache_ttl_ms = c->tenant_cache_ttl_ms,
            .negative_ttl_ms = c->tenant_negative_ttl_ms,
        };
        rc = hg_tenants_open(&w->loop, w->http_client, w->redis, &to, &w->tenants);
        if (rc != 0) {
            hg_error(NULL, "cannot use the tenant service", "error", hg_strerror(rc), NULL);
            return rc;
        }
    }
    if (c->state_manager_url) {
        struct hg_statemgr_opts so2 = {
            .base_url = c->state_manager_url,
            .token = c->state_manager_token,
            .timeout_ms = (uint32_t)c->state_manager_timeout_ms,
        };
        rc = hg_statemgr_open(w->http_client, &w->loop, &so2, &w->statemgr);
        if (rc != 0) {
            hg_error(NULL, "cannot use the state manager url", "error", hg_strerror(rc), NULL);
            return rc;
        }
    }
    if (c->media_enabled > 0 && w->s3) {
        struct hg_media_opts mo = {
            .graph_api_base = c->graph_api_base,
            .graph_api_version = c->graph_api_version,
            .bucket = c->media_bucket,
            .max_size = { [HG_MEDIA_IMAGE] = c->media_max_image, [HG_MEDIA_VIDEO] = c->media_max_video,
                          [HG_MEDIA_AUDIO] = c->media_max_audio, [HG_MEDIA_DOCUMENT] = c->media_max_document,
                          [HG_MEDIA_STICKER] = c->media_max_sticker },
            .part_size = (size_t)c->media_part_size,
            .presign_expiry_s = (uint32_t)(c->media_presign_expiry_ms / 1000),
            .download_timeout_ms = (uint32_t)c->media_download_timeout_ms,
            .max_inflight = c->media_max_inflight,
            .max_inflight_tenant = c->media_max_inflight_tenant,
            .clamd_socket = c->media_clamd_socket,
        };
        rc = hg_media_open(&w->loop, w->http_client, w->s3, &mo, &w->media);
        if (rc != 0) {
            hg_error(NULL, "cannot set up media fetching", "error", hg_strerror(rc), NULL);
            return rc;
        }
    } else if (c->media_enabled > 0) {
        hg_warn(NULL, "[media] enabled without [s3] endpoint: media is not fetched", NULL);
    }
    struct hg_drain_backends b = {
        .conf = &w->conf,
        .spool = w->spool,
        .sink = w->sink,
        .redis = w->redis,
        .dedup_ttl_ms = c->dedup_ttl_ms,
        .s3 = w->s3,
        .bucket = c->s3_bucket,
        .statemgr = w->statemgr,
        .media = w->media,
        .media_bucket = c->media_bucket,
        .token_ttl_ms = c->media_token_cache_ttl_ms,
        .max_in_memory = c->spool_max_in_memory,
        .max_bytes = c->spool_drain_max_bytes,
        .tenants = w->tenants,
    };
    hg_drain_open(&w->loop, &b, &w->drain);

    return 0;
}

static int worker_listen(struct hg_worker *w)
{
    struct hg_http_limits l;
    limits_from_conf(&l, w->conf);
    struct hg_http_handler h = { on_request, hg_ingest_abandon, w, false };
    int rc = hg_http_server_start(&w->loop, w->listen_fd, &l, &h, &w->http);
    if (rc != 0) {
        hg_error(NULL, "cannot start listener", "error", hg_strerror(rc), NULL);
        return rc;
    }
    w->listen_fd = -1; /* owned by the uv handle now */
    /* [server] tls_cert: the webhook port speaks TLS only. The admin listener stays plain (loopback). */
    hg_http_server_set_tls(w->http, w->conf->tls);
    if (w->admin_fd >= 0) {
        /*
         * One admin listener, on worker 0's loop: its routes read process-wide state (metrics
         * summed over workers, every worker's published health), so one acceptor is enough, and
         * a plain bind (no SO_REUSEPORT) makes a port taken by another process a start-up error
         * instead of a silent share.
         */
        struct hg_http_handler ah = { on_admin_request, hg_outbound_api_abandon, w, true };
        admin_limits_from_conf(&l, w->conf);
        rc = hg_http_server_start(&w->loop, w->admin_fd, &l, &ah, &w->admin);
        if (rc != 0) {
            hg_error(NULL, "cannot start the admin listener", "error", hg_strerror(rc), NULL);
            return rc;
        }
        w->admin_fd = -1;
    }
    return 0;
}

static void worker_main(void *arg)
{
    struct hg_worker *w = arg;
    current_worker = w;
    hg_log_set_worker(w->id);
    hg_metrics_bind(w->id);

    w->start_error = worker_open(w);
    uv_sem_post(&w->started);
    if (w->start_error != 0) {
        /* Close what did open, so nothing is left behind (the chain skips what is missing). */
        begin_stop(w);
        uv_run(&w->loop, UV_RUN_DEFAULT);
        return;
    }
    /*
     * Listen only once every worker opened its spool and sink: an instance that answers 200 and
     * then fails start-up on another worker would be lying about its health.
     */
    uv_sem_wait(&w->go);
    if (!atomic_load(&w->stop_requested) && worker_listen(w) == 0) {
        char id[16];
        snprintf(id, sizeof(id), "%d", w->id);
        hg_info(NULL, "worker listening", "worker", id, NULL);
    } else {
        begin_stop(w);
    }
    uv_run(&w->loop, UV_RUN_DEFAULT);
    hg_ingest_thread_done();
}

int hg_worker_start(struct hg_worker *w, int id, int n, struct hg_conf *conf)
{
    memset(w, 0, sizeof(*w));
    w->admin_fd = -1;
    w->id = id;
    w->nworkers = n;
    w->conf = hg_conf_ref(conf);
    atomic_init(&w->next_conf, NULL);
    atomic_init(&w->stop_requested, false);
    uv_loop_init(&w->loop);
    uv_async_init(&w->loop, &w->wakeup, on_wakeup);
    w->wakeup.data = w;
    uv_timer_init(&w->loop, &w->lag_timer);
    w->lag_timer.data = w;
    uv_timer_start(&w->lag_timer, on_lag_timer, LAG_INTERVAL_MS, LAG_INTERVAL_MS);
    uv_timer_init(&w->loop, &w->shutdown_timer);
    w->shutdown_timer.data = w;
    uv_sem_init(&w->started, 0);
    uv_sem_init(&w->go, 0);

    w->listen_fd = hg_http_listen_socket(conf->listen_host, conf->listen_port, 4096, true);
    if (w->listen_fd < 0) {
        char port[8];
        snprintf(port, sizeof(port), "%u", conf->listen_port);
        hg_error(NULL, "cannot listen", "host", conf->listen_host, "port", port, "error", hg_strerror(w->listen_fd),
                 NULL);
        return w->listen_fd;
    }
    if (id == 0 && conf->admin_listen_host) {
        w->admin_fd = hg_http_listen_socket(conf->admin_listen_host, conf->admin_listen_port, 128, false);
        if (w->admin_fd < 0) {
            char port[8];
            snprintf(port, sizeof(port), "%u", conf->admin_listen_port);
            hg_error(NULL, "cannot listen on the [admin] address", "host", conf->admin_listen_host, "port", port,
                     "error", hg_strerror(w->admin_fd), NULL);
            return w->admin_fd;
        }
        w->admin_public = !hg_conf_host_is_loopback(conf->admin_listen_host);
    }
    int rc = uv_thread_create(&w->thread, worker_main, w);
    if (rc != 0)
        return rc;
    w->thread_started = true;
    uv_sem_wait(&w->started);
    if (w->start_error == 0 && id < (int)HG_ARRAY_SIZE(all_workers)) {
        publish_health(w); /* the worker waits for hg_worker_go: nothing else touches it now */
        all_workers[id] = w;
        atomic_store(&n_all_workers, id + 1);
    }
    return w->start_error;
}

void hg_worker_go(struct hg_worker *w, bool listen)
{
    if (!listen)
        atomic_store(&w->stop_requested, true);
    uv_sem_post(&w->go);
}

void hg_worker_reload(struct hg_worker *w, struct hg_conf *conf)
{
    struct hg_conf *old = atomic_exchange(&w->next_conf, hg_conf_ref(conf));
    if (old)
        hg_conf_unref(old);
    uv_async_send(&w->wakeup);
}

void hg_worker_stop(struct hg_worker *w)
{
    atomic_store(&w->stop_requested, true);
    uv_async_send(&w->wakeup);
}

static void walk_close(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

void hg_worker_join(struct hg_worker *w)
{
    if (w->thread_started)
        uv_thread_join(&w->thread);
    /* A worker that failed at start-up left handles open: close them so the loop can be freed. */
    uv_walk(&w->loop, walk_close, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    uv_loop_close(&w->loop);
    if (w->listen_fd >= 0)
        close(w->listen_fd);
    if (w->admin_fd >= 0)
        close(w->admin_fd);
    struct hg_conf *next = atomic_exchange(&w->next_conf, NULL);
    if (next)
        hg_conf_unref(next);
    hg_conf_unref(w->conf);
    uv_sem_destroy(&w->started);
    uv_sem_destroy(&w->go);
}

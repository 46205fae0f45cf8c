/*
 * A worker: one thread, one libuv loop, its own SO_REUSEPORT listener, connections, spool, sink
 * and drain (worker 0 also runs the admin listener). Nothing on its request path is shared with
 * another worker. The main thread talks to a worker only through hg_worker_reload /
 * hg_worker_stop (an atomic pointer + uv_async).
 */
#ifndef HG_WORKER_WORKER_H
#define HG_WORKER_WORKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "conf/conf.h"
#include "tenants/tenants.h"

struct hg_http_server;
struct hg_spool;
struct hg_sink;
struct hg_drain;
struct hg_redis;
struct hg_http;
struct hg_s3;
struct hg_tenants;

struct hg_worker {
    int id;
    int nworkers;
    uv_thread_t thread;
    uv_loop_t loop;
    uv_async_t wakeup;               /* main → worker: new config or stop */
    uv_timer_t lag_timer;            /* measures event loop lag */
    uv_timer_t shutdown_timer;       /* bounds the drain on stop */
    uint64_t lag_expected_ns;

    struct hg_conf *conf;            /* the config new requests use (worker thread only) */
    _Atomic(struct hg_conf *) next_conf;
    atomic_bool stop_requested;

    int listen_fd;
    struct hg_http_server *http;
    int admin_fd;                    /* worker 0 only: the [admin] listener's socket, until it serves */
    struct hg_http_server *admin;    /* worker 0 only, NULL with [admin] listen = off */
    bool admin_public;               /* the admin listener is reachable beyond loopback */
    int servers_stopping;            /* listeners whose stop has not completed yet */
    struct hg_spool *spool;
    struct hg_sink *sink;
    struct hg_drain *drain;
    bool sink_is_amqp;               /* RabbitMQ sink (else ndjson) */
    bool ack_broker;                 /* [server] ack = broker: 200 after the broker's confirms */
    struct hg_redis *redis;          /* NULL without [redis] url */
    struct hg_http *http_client;     /* libcurl multi on this loop (S3, tenant service, media) */
    struct hg_jwks_remote *jwks_remote; /* keys fetched from [pubsub] jwks_url (clients/jwks_remote.h) */
    struct hg_s3 *s3;                /* NULL without [s3] endpoint */
    struct hg_tenants *tenants;      /* tenant resolution (config; the service with [tenants] service_url) */
    struct hg_statemgr *statemgr;    /* NULL without [state_manager] url */
    struct hg_media *media;          /* NULL unless [media] is enabled (needs [s3]) */
    struct hg_outbound *outbound;    /* worker 0 only: outbound delivery and its store (src/outbound/) */
    struct hg_tenants_stats tenants_seen; /* counts already added to the cache metrics */

    bool stopping;
    int close_steps;                 /* asynchronous closes still running at shutdown */
    int start_error;                 /* set by the thread if start-up failed */
    uv_sem_t started;                /* posted when the worker opened everything (or failed) */
    uv_sem_t go;                     /* main → worker: every worker opened, listen (or stop) */
    bool thread_started;
    uint64_t inflight;               /* requests between accept and answer */
    _Atomic int health;              /* enum hg_worker_health, published by the lag timer */
    _Atomic(const char *) health_reason;
    _Atomic unsigned checks_down;    /* HG_CHECK_* bits, published with health (for /ready) */
};

/*
 * Start worker `id` of `n` on its own thread with one reference to `conf` (taken here).
 * Opens the spool (recovery), the sink and the clients; returns once they are open, or an error.
 * The worker then waits for hg_worker_go before it accepts connections.
 */
int hg_worker_start(struct hg_worker *w, int id, int n, struct hg_conf *conf);
/* Every worker started: listen (true), or shut down without listening (false). */
void hg_worker_go(struct hg_worker *w, bool listen);
/* Hand a new config to the worker (a reference is taken); it applies it on its loop. */
void hg_worker_reload(struct hg_worker *w, struct hg_conf *conf);
/* Ask the worker to stop: stop accepting, finish in-flight requests and spool writes. */
void hg_worker_stop(struct hg_worker *w);
/* Wait for the worker thread to end and release what it owns. */
void hg_worker_join(struct hg_worker *w);

/* Readiness of one worker, as /ready reports it. */
enum hg_worker_health {
    HG_WORKER_READY = 0,
    HG_WORKER_DEGRADED = 1,     /* accepting, a backend uses its fallback (Redis down) */
    HG_WORKER_NOT_READY = 2,    /* stopping, spool not writable, or sink down */
};
/* This worker's health now (its own thread only); *reason is a static string or NULL. */
enum hg_worker_health hg_worker_health(struct hg_worker *w, const char **reason);
/* What /ready lists per backend, as published by each worker's lag timer: a bit set = that check
 * is down (or degraded) in this worker. */
#define HG_CHECK_SPOOL 1u
#define HG_CHECK_SINK  2u
#define HG_CHECK_S3    4u
#define HG_CHECK_REDIS 8u
/* The HG_CHECK_* bits set in any worker (the admin listener runs on worker 0 only, and a backend
 * failing in another worker must show there too). */
unsigned hg_worker_checks_all(void);

/* The worst health over all workers, as each last published it (any thread; ~100 ms old). */
enum hg_worker_health hg_worker_health_all(const char **reason);

/* Current worker of the calling thread (NULL on the main thread). */
struct hg_worker *hg_worker_current(void);

#endif

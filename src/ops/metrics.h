/*
 * Prometheus metrics without locks on the hot path: every worker thread owns its own series
 * (single writer, relaxed atomics); /metrics sums all workers' series at render time.
 * A series is a family plus a label string such as `code="200"` (already escaped by the caller
 * with hg_metrics_label_escape when values come from outside).
 */
#ifndef HG_OPS_METRICS_H
#define HG_OPS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

enum hg_metric {
    /* counters */
    HG_M_WEBHOOK_RECEIVED,          /* webhook_received_total{provider,tenant,type,status} */
    HG_M_HTTP_REQUESTS,             /* http_requests_total{code} */
    HG_M_RABBITMQ_PUBLISH,          /* rabbitmq_publish_total{status} */
    HG_M_RABBITMQ_PUBLISH_FAILURES, /* rabbitmq_publish_failures_total */
    HG_M_CACHE_HIT,                 /* cache_hit_total{cache} */
    HG_M_CACHE_MISS,                /* cache_miss_total{cache} */
    HG_M_DEDUP_DUPLICATES,          /* dedup_duplicates_total */
    HG_M_RATELIMIT_REJECTED,        /* ratelimit_rejected_total{tenant} */
    HG_M_RATELIMIT_IP_REJECTED,     /* ratelimit_ip_rejected_total{provider} (no address: bounded) */
    HG_M_REDIS_FALLBACK,            /* redis_fallback_total{op} */
    HG_M_SINK_EVENTS,               /* sink_events_total{sink,status} */
    HG_M_MEDIA_FAILURES,            /* media_failures_total{reason} */
    HG_M_STATE_MANAGER_FAILURES,    /* state_manager_failures_total */
    HG_M_JWKS_FETCH,                /* jwks_fetch_total{status} */
    HG_M_OUTBOUND_DELIVERIES,       /* outbound_deliveries_total{endpoint,status}: attempts recorded, by verdict */
    /* gauges (summed over workers) */
    HG_M_SPOOL_RECORDS,             /* spool_records */
    HG_M_SPOOL_BYTES,               /* spool_bytes */
    HG_M_DRAIN_IN_MEMORY,           /* drain_records_in_memory */
    HG_M_CONNECTIONS,               /* http_connections */
    HG_M_EVENT_LOOP_LAG,            /* event_loop_lag_seconds (max over workers) */
    HG_M_OUTBOUND_QUEUE_DEPTH,      /* outbound_queue_depth (worker 0) */
    HG_M_OUTBOUND_OLDEST_PENDING,   /* outbound_oldest_pending_seconds (worker 0) */
    HG_M_OUTBOUND_NEVER_ATTEMPTED,  /* outbound_never_attempted (worker 0): the alarm */
    /* histograms (seconds unless the name says otherwise) */
    HG_M_PROCESSING_DURATION,       /* webhook_processing_duration_seconds */
    HG_M_SPOOL_FSYNC_DURATION,      /* spool_fsync_duration_seconds */
    HG_M_RABBITMQ_CONFIRM_DURATION, /* rabbitmq_confirm_duration_seconds */
    HG_M_MINIO_UPLOAD_DURATION,     /* minio_upload_duration_seconds */
    HG_M_MEDIA_DOWNLOAD_DURATION,   /* media_download_duration_seconds */
    HG_M_MEDIA_DOWNLOAD_SIZE,       /* media_download_size_bytes */
    HG_M_OUTBOUND_ATTEMPT_DURATION, /* outbound_attempt_duration_seconds */
    HG_M__COUNT
};

/*
 * Once, before any worker starts: room for `nworkers` registries plus the main thread's.
 * Metrics recorded before init, or by a thread never bound, go to the main thread's registry
 * (which takes a lock, as several threads may share it).
 */
void hg_metrics_init(int nworkers);
/* Bind the calling thread to registry `worker` (-1 or out of range = main thread). */
void hg_metrics_bind(int worker);
/*
 * Drop every series and worker registry (tests, clean exit). No other thread may record or render
 * meanwhile; bindings made before become void (those threads fall back to the main registry).
 */
void hg_metrics_free(void);

/* Add n to a counter series of the calling thread's registry. `labels` may be NULL. */
void hg_metric_add(enum hg_metric m, const char *labels, uint64_t n);
static inline void hg_metric_inc(enum hg_metric m, const char *labels) { hg_metric_add(m, labels, 1); }
/* Set this worker's value of a gauge series (rendered as the sum over workers; lag as the max). */
void hg_metric_set(enum hg_metric m, const char *labels, double v);
/* Record one observation into a histogram series. */
void hg_metric_observe(enum hg_metric m, const char *labels, double v);

/*
 * Escape a label value (\\, \", \n) into out; returns out. Always NUL-terminated when cap > 0;
 * a value that does not fit is cut on a UTF-8 character boundary, never inside an escape.
 */
char *hg_metrics_label_escape(char *out, size_t cap, const char *value);

/*
 * Render all families in Prometheus text format 0.0.4, summed over workers. Any thread, lock-free
 * with respect to writers. Series are sorted by label string. HG_ERR_TOO_BIG past out's cap.
 */
int hg_metrics_render(struct hg_buf *out);

/* Read a counter's sum over workers (tests, /ready). */
uint64_t hg_metric_counter_total(enum hg_metric m, const char *labels);

#endif

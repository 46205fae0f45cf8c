/*
 * Prometheus metrics: one registry per worker thread, written only by its owner with relaxed
 * atomics; hg_metrics_render() walks every registry from any thread and sums at read time.
 */
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/err.h"
#include "core/log.h"
#include "ops/metrics.h"

enum family_type { FAMILY_COUNTER, FAMILY_GAUGE, FAMILY_HISTOGRAM };

/* How a gauge family combines its per-worker values at render time. */
enum gauge_merge { MERGE_SUM, MERGE_MAX };

struct bucket_layout {
    size_t n;               /* finite bounds; +Inf is implied */
    const double *bound;
    const char *const *le;  /* the bound as written in the le label (exact, no float noise) */
};

static const double seconds_bound[] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};
static const char *const seconds_le[] = {
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
    "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
};
/* Media sizes: powers of 4 from 1 KiB, capped by the 100 MiB the providers allow. */
static const double size_bound[] = {
    1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864, 104857600,
};
static const char *const size_le[] = {
    "1024", "4096", "16384", "65536", "262144", "1048576", "4194304", "16777216", "67108864",
    "104857600",
};

static const struct bucket_layout seconds_buckets = { HG_ARRAY_SIZE(seconds_bound), seconds_bound, seconds_le };
static const struct bucket_layout size_buckets = { HG_ARRAY_SIZE(size_bound), size_bound, size_le };

#define MAX_BUCKETS 16
_Static_assert(HG_ARRAY_SIZE(seconds_bound) <= MAX_BUCKETS && HG_ARRAY_SIZE(size_bound) <= MAX_BUCKETS,
               "render keeps buckets on the stack");

struct family {
    const char *name;
    const char *help;
    enum family_type type;
    bool labelled;                        /* has label names: render nothing when no series */
    enum gauge_merge merge;
    const struct bucket_layout *buckets;  /* histograms only */
};

static const struct family families[HG_M__COUNT] = {
    [HG_M_WEBHOOK_RECEIVED] = { "webhook_received_total", "Webhooks received, by provider, tenant, type and status.", FAMILY_COUNTER, true, MERGE_SUM, NULL },
    [HG_M_HTTP_REQUESTS] = { "http_requests_total", "HTTP requests answered, by status code.", FAMILY_COUNTER, true, MERGE_SUM, NULL },
    [HG_M_RABBITMQ_PUBLISH] = { "rabbitmq_publish_total", "RabbitMQ publishes, by outcome.", FAMILY_COUNTER, true, MERGE_SUM, NULL },
    [HG_M_RABBITMQ_PUBLISH_FAILURES] = { "rabbitmq_publish_failures_total", "RabbitMQ publishes that failed.", FAMILY_COUNTER, false, MERGE_SUM, NULL },
    [HG_M_CACHE_HIT] = { "cache_hit_total", "Cache hits, by cache.", FAMILY_COUNTER, true, MERGE_SUM, NULL },
    [HG_M_CACHE_MISS] = { "cache_miss_total", "Cache misses, by cache.", FAMILY_COUNTER, true, MERGE_SUM, NULL },
    [HG_M_DEDUP_DUPLICATES] = { "dedup_duplicates_total", "Events dropped as duplicates.", FAMILY_COUNTER, false, MERGE_SUM, NULL },
    [HG_M_RATELIMIT_REJECTED] = { "ratelimit_rejected_total", "Requests rejected by rate limiting, by tenant.", FAMILY_COUNTER, true, MERGE_SUM, NULL },
    [HG_M_RATELIMIT_IP_REJECTED] = { "ratelimit_ip_rejected_total", "Requests rejected by the per-IP rate limit, by provider.", FAMILY_COUNTER, true, MERGE_SUM, NULL },
    [HG_M_REDIS_FALLBACK] = { "redis_fallback_total", "Operations served by the local fallback while Redis was unusable, by operation.", FAMILY_COUNTER, true, MERGE_SUM, NULL },
    [HG_M_SINK_EVENTS] = { "sink_events_total", "Events handed to sinks, by sink and outcome.", FAMILY_COUNTER, true, MERGE_SUM, NULL },
    [HG_M_MEDIA_FAILURES] = { "media_failures_total", "Media downloads or uploads that failed, by reason.", FAMILY_COUNTER, true, MERGE_SUM, NULL },
    [HG_M_STATE_MANAGER_FAILURES] = { "state_manager_failures_total", "State manager calls that failed.", FAMILY_COUNTER, false, MERGE_SUM, NULL },
    [HG_M_JWKS_FETCH] = { "jwks_fetch_total", "JWKS fetches from [pubsub] jwks_url, by outcome (ok, error).", FAMILY_COUNTER, true, MERGE_SUM, NULL },
    [HG_M_OUTBOUND_DELIVERIES] = { "outbound_deliveries_total", "Outbound attempts recorded, by endpoint id and verdict (delivered, retried, failed, dead).", FAMILY_COUNTER, true, MERGE_SUM, NULL },
    [HG_M_SPOOL_RECORDS] = { "spool_records", "Records waiting in the spool.", FAMILY_GAUGE, false, MERGE_SUM, NULL },
    [HG_M_SPOOL_BYTES] = { "spool_bytes", "Bytes held by the spool.", FAMILY_GAUGE, false, MERGE_SUM, NULL },
    [HG_M_DRAIN_IN_MEMORY] = { "drain_records_in_memory", "Spooled records the drain holds in memory (the rest of spool_records wait on disk).", FAMILY_GAUGE, false, MERGE_SUM, NULL },
    [HG_M_CONNECTIONS] = { "http_connections", "Open HTTP connections.", FAMILY_GAUGE, false, MERGE_SUM, NULL },
    [HG_M_EVENT_LOOP_LAG] = { "event_loop_lag_seconds", "Event loop lag, the worst worker.", FAMILY_GAUGE, false, MERGE_MAX, NULL },
    [HG_M_OUTBOUND_QUEUE_DEPTH] = { "outbound_queue_depth", "Outbound deliveries not yet settled (pending or being sent).", FAMILY_GAUGE, false, MERGE_SUM, NULL },
    [HG_M_OUTBOUND_OLDEST_PENDING] = { "outbound_oldest_pending_seconds", "Age of the oldest outbound delivery not yet settled; 0 when none.", FAMILY_GAUGE, false, MERGE_SUM, NULL },
    [HG_M_OUTBOUND_NEVER_ATTEMPTED] = { "outbound_never_attempted", "Alarm: outbound deliveries accepted longer than [outbound] never_attempted_after ago, sendable, and never attempted; should be 0.", FAMILY_GAUGE, false, MERGE_SUM, NULL },
    [HG_M_PROCESSING_DURATION] = { "webhook_processing_duration_seconds", "Time from request start to response.", FAMILY_HISTOGRAM, false, MERGE_SUM, &seconds_buckets },
    [HG_M_SPOOL_FSYNC_DURATION] = { "spool_fsync_duration_seconds", "Spool group commit fsync duration.", FAMILY_HISTOGRAM, false, MERGE_SUM, &seconds_buckets },
    [HG_M_RABBITMQ_CONFIRM_DURATION] = { "rabbitmq_confirm_duration_seconds", "Time from publish to broker confirm.", FAMILY_HISTOGRAM, false, MERGE_SUM, &seconds_buckets },
    [HG_M_MINIO_UPLOAD_DURATION] = { "minio_upload_duration_seconds", "Object storage upload duration.", FAMILY_HISTOGRAM, false, MERGE_SUM, &seconds_buckets },
    [HG_M_MEDIA_DOWNLOAD_DURATION] = { "media_download_duration_seconds", "Media download duration.", FAMILY_HISTOGRAM, false, MERGE_SUM, &seconds_buckets },
    [HG_M_MEDIA_DOWNLOAD_SIZE] = { "media_download_size_bytes", "Size of downloaded media.", FAMILY_HISTOGRAM, false, MERGE_SUM, &size_buckets },
    [HG_M_OUTBOUND_ATTEMPT_DURATION] = { "outbound_attempt_duration_seconds", "Outbound attempt duration, from send to answer or error.", FAMILY_HISTOGRAM, false, MERGE_SUM, &seconds_buckets },
};

/* Cardinality caps: label values come from the outside (tenants), so a registry stops growing. */
#define MAX_SERIES_PER_FAMILY 4096
#define MAX_LABELS_LEN 1024

/*
 * One series. Immutable after publication except `v`: counters use v[0]; gauges keep the double's
 * bits in v[0]; histograms keep one non-cumulative count per bucket (+Inf last) then the sum's bits.
 */
struct series {
    struct series *next;    /* older series of the same family; set before publication */
    enum hg_metric family;
    uint32_t hash;
    char *labels;
    _Atomic uint64_t v[];
};

/* Writer-side index of a registry: open addressing over (family, labels). */
struct series_index {
    struct series **slot;
    size_t cap;             /* power of two */
    size_t used;
};

struct registry {
    /* Newest series first; release-stored by the writer, acquire-loaded by readers. */
    struct series *_Atomic head[HG_M__COUNT];
    size_t count[HG_M__COUNT];
    struct series_index index;
    /* The main registry also serves unbound threads, so its writers take this lock. */
    bool shared;
    pthread_mutex_t lock;
};

static struct registry main_registry = { .shared = true, .lock = PTHREAD_MUTEX_INITIALIZER };
static struct registry *worker_registry; /* nworkers of them, from hg_metrics_init */
static int nworker_registry;

/*
 * A thread's binding is valid only for the generation it was made in, so a stale pointer left
 * over from before hg_metrics_free() falls back to the main registry instead of freed memory.
 */
static _Atomic unsigned generation = 1;
static _Thread_local struct registry *bound_registry;
static _Thread_local unsigned bound_generation;

static atomic_bool overflow_warned;

static uint64_t double_bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof(u));
    return u;
}

static double bits_double(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof(d));
    return d;
}

static uint32_t labels_hash(enum hg_metric m, const char *labels)
{
    uint32_t h = 2166136261u ^ (uint32_t)m;
    for (const unsigned char *p = (const unsigned char *)labels; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h;
}

static size_t series_values(enum hg_metric m)
{
    if (families[m].type == FAMILY_HISTOGRAM)
        return families[m].buckets->n + 2; /* buckets, +Inf, sum */
    return 1;
}

static void registry_free_series(struct registry *r)
{
    for (int m = 0; m < HG_M__COUNT; m++) {
        struct series *s = atomic_load_explicit(&r->head[m], memory_order_acquire);
        while (s) {
            struct series *next = s->next;
            free(s->labels);
            free(s);
            s = next;
        }
        atomic_store_explicit(&r->head[m], NULL, memory_order_relaxed);
        r->count[m] = 0;
    }
    free(r->index.slot);
    r->index.slot = NULL;
    r->index.cap = r->index.used = 0;
}

void hg_metrics_free(void)
{
    atomic_fetch_add_explicit(&generation, 1, memory_order_relaxed);
    for (int i = 0; i < nworker_registry; i++) {
        registry_free_series(&worker_registry[i]);
        pthread_mutex_destroy(&worker_registry[i].lock);
    }
    free(worker_registry);
    worker_registry = NULL;
    nworker_registry = 0;
    pthread_mutex_lock(&main_registry.lock);
    registry_free_series(&main_registry);
    pthread_mutex_unlock(&main_registry.lock);
    atomic_store_explicit(&overflow_warned, false, memory_order_relaxed);
}

void hg_metrics_init(int nworkers)
{
    if (worker_registry != NULL || nworker_registry != 0)
        hg_metrics_free();
    if (nworkers < 0)
        nworkers = 0;
    worker_registry = hg_xcalloc((size_t)nworkers, sizeof(*worker_registry));
    for (int i = 0; i < nworkers; i++)
        pthread_mutex_init(&worker_registry[i].lock, NULL);
    nworker_registry = nworkers;
    atomic_fetch_add_explicit(&generation, 1, memory_order_relaxed);
}

void hg_metrics_bind(int worker)
{
    bound_registry = (worker >= 0 && worker < nworker_registry) ? &worker_registry[worker] : &main_registry;
    bound_generation = atomic_load_explicit(&generation, memory_order_relaxed);
}

static struct registry *current_registry(void)
{
    if (HG_LIKELY(bound_registry != NULL &&
                  bound_generation == atomic_load_explicit(&generation, memory_order_relaxed)))
        return bound_registry;
    return &main_registry;
}

static void index_insert(struct series_index *ix, struct series *s)
{
    size_t i = s->hash & (ix->cap - 1);
    while (ix->slot[i] != NULL)
        i = (i + 1) & (ix->cap - 1);
    ix->slot[i] = s;
    ix->used++;
}

static void index_grow(struct series_index *ix)
{
    struct series_index bigger = { NULL, ix->cap ? ix->cap * 2 : 64, 0 };
    bigger.slot = hg_xcalloc(bigger.cap, sizeof(*bigger.slot));
    for (size_t i = 0; i < ix->cap; i++)
        if (ix->slot[i] != NULL)
            index_insert(&bigger, ix->slot[i]);
    free(ix->slot);
    *ix = bigger;
}

/* Writer side: find or create the series; NULL when the family is at its cardinality cap. */
static struct series *series_get(struct registry *r, enum hg_metric m, const char *labels)
{
    uint32_t h = labels_hash(m, labels);
    struct series_index *ix = &r->index;
    if (ix->cap > 0) {
        for (size_t i = h & (ix->cap - 1); ix->slot[i] != NULL; i = (i + 1) & (ix->cap - 1)) {
            struct series *s = ix->slot[i];
            if (s->hash == h && s->family == m && strcmp(s->labels, labels) == 0)
                return s;
        }
    }
    size_t len = strlen(labels);
    if (r->count[m] >= MAX_SERIES_PER_FAMILY || len > MAX_LABELS_LEN) {
        if (!atomic_exchange_explicit(&overflow_warned, true, memory_order_relaxed))
            hg_warn(NULL, "metric series dropped", "metric", families[m].name, "reason",
                    len > MAX_LABELS_LEN ? "labels too long" : "too many series", NULL);
        return NULL;
    }
    size_t nv = series_values(m);
    struct series *s = hg_xcalloc(1, sizeof(*s) + nv * sizeof(s->v[0]));
    s->family = m;
    s->hash = h;
    s->labels = hg_xstrndup(labels, len);
    for (size_t i = 0; i < nv; i++)
        atomic_init(&s->v[i], 0);
    s->next = atomic_load_explicit(&r->head[m], memory_order_relaxed);
    /* Release: a reader that sees the new head also sees the series' fields and the older list. */
    atomic_store_explicit(&r->head[m], s, memory_order_release);
    r->count[m]++;
    if ((ix->used + 1) * 2 > ix->cap)
        index_grow(ix);
    index_insert(ix, s);
    return s;
}

/* Only the owner writes a series, so a plain relaxed load + store is an exact add. */
static inline void value_add(_Atomic uint64_t *v, uint64_t n)
{
    atomic_store_explicit(v, atomic_load_explicit(v, memory_order_relaxed) + n, memory_order_relaxed);
}

static void update(enum hg_metric m, const char *labels, enum family_type type, uint64_t n, double d)
{
    if ((unsigned)m >= HG_M__COUNT || families[m].type != type)
        return;
    if (labels == NULL)
        labels = "";
    struct registry *r = current_registry();
    if (r->shared)
        pthread_mutex_lock(&r->lock);
    struct series *s = series_get(r, m, labels);
    if (s == NULL)
        goto out;
    switch (type) {
    case FAMILY_COUNTER:
        value_add(&s->v[0], n);
        break;
    case FAMILY_GAUGE:
        atomic_store_explicit(&s->v[0], double_bits(d), memory_order_relaxed);
        break;
    case FAMILY_HISTOGRAM: {
        const struct bucket_layout *b = families[m].buckets;
        size_t i = 0;
        while (i < b->n && !(d <= b->bound[i]))
            i++;
        value_add(&s->v[i], 1);
        _Atomic uint64_t *sum = &s->v[b->n + 1];
        double total = bits_double(atomic_load_explicit(sum, memory_order_relaxed)) + d;
        atomic_store_explicit(sum, double_bits(total), memory_order_relaxed);
        break;
    }
    }
out:
    if (r->shared)
        pthread_mutex_unlock(&r->lock);
}

void hg_metric_add(enum hg_metric m, const char *labels, uint64_t n)
{
    update(m, labels, FAMILY_COUNTER, n, 0);
}

void hg_metric_set(enum hg_metric m, const char *labels, double v)
{
    update(m, labels, FAMILY_GAUGE, 0, v);
}

void hg_metric_observe(enum hg_metric m, const char *labels, double v)
{
    /* A NaN would poison the sum forever; it is a caller bug, not an observation. */
    if (isnan(v))
        return;
    update(m, labels, FAMILY_HISTOGRAM, 0, v);
}

char *hg_metrics_label_escape(char *out, size_t cap, const char *value)
{
    if (cap == 0)
        return out;
    size_t o = 0;
    for (const char *p = value ? value : ""; *p; p++) {
        char esc[2];
        size_t n = 1;
        esc[0] = *p;
        if (*p == '\\' || *p == '"') {
            esc[0] = '\\';
            esc[1] = *p;
            n = 2;
        } else if (*p == '\n') {
            esc[0] = '\\';
            esc[1] = 'n';
            n = 2;
        }
        if (o + n >= cap) {
            /* Cutting inside a multi-byte character would leave invalid UTF-8: drop all of it. */
            if (((unsigned char)*p & 0xC0) == 0x80) {
                while (o > 0 && ((unsigned char)out[o - 1] & 0xC0) == 0x80)
                    o--;
                if (o > 0 && ((unsigned char)out[o - 1] & 0xC0) == 0xC0)
                    o--;
            }
            break;
        }
        memcpy(out + o, esc, n);
        o += n;
    }
    out[o] = '\0';
    return out;
}

uint64_t hg_metric_counter_total(enum hg_metric m, const char *labels)
{
    if ((unsigned)m >= HG_M__COUNT || families[m].type != FAMILY_COUNTER)
        return 0;
    if (labels == NULL)
        labels = "";
    uint64_t total = 0;
    for (int i = -1; i < nworker_registry; i++) {
        struct registry *r = i < 0 ? &main_registry : &worker_registry[i];
        for (struct series *s = atomic_load_explicit(&r->head[m], memory_order_acquire); s; s = s->next)
            if (strcmp(s->labels, labels) == 0)
                total += atomic_load_explicit(&s->v[0], memory_order_relaxed);
    }
    return total;
}

/* Shortest text that reads back as the same double (Prometheus accepts any Go float syntax). */
static void format_double(char *out, size_t cap, double d)
{
    if (isnan(d)) {
        snprintf(out, cap, "NaN");
        return;
    }
    if (isinf(d)) {
        snprintf(out, cap, d > 0 ? "+Inf" : "-Inf");
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, cap, "%.*g", prec, d);
        if (strtod(out, NULL) == d)
            return;
    }
}

static int cmp_series_labels(const void *a, const void *b)
{
    const struct series *x = *(const struct series *const *)a;
    const struct series *y = *(const struct series *const *)b;
    return strcmp(x->labels, y->labels);
}

/* Collect the family's series of every registry, sorted by labels so equal label sets are adjacent. */
static struct series **collect(enum hg_metric m, size_t *n_out)
{
    size_t n = 0, cap = 16;
    struct series **all = hg_xmalloc(cap * sizeof(*all));
    for (int i = -1; i < nworker_registry; i++) {
        struct registry *r = i < 0 ? &main_registry : &worker_registry[i];
        for (struct series *s = atomic_load_explicit(&r->head[m], memory_order_acquire); s; s = s->next) {
            if (n == cap) {
                cap *= 2;
                all = hg_xrealloc(all, cap * sizeof(*all));
            }
            all[n++] = s;
        }
    }
    qsort(all, n, sizeof(*all), cmp_series_labels);
    *n_out = n;
    return all;
}

static int render_scalar(struct hg_buf *out, const struct family *f, struct series **all, size_t n)
{
    char num[64];
    if (n == 0) {
        if (f->labelled)
            return 0;
        return hg_buf_appendf(out, "%s 0\n", f->name);
    }
    for (size_t i = 0; i < n;) {
        size_t j = i;
        uint64_t count = 0;
        double gauge = 0;
        for (; j < n && strcmp(all[j]->labels, all[i]->labels) == 0; j++) {
            uint64_t v = atomic_load_explicit(&all[j]->v[0], memory_order_relaxed);
            if (f->type == FAMILY_COUNTER)
                count += v;
            else if (f->merge == MERGE_MAX)
                gauge = j == i ? bits_double(v) : fmax(gauge, bits_double(v));
            else
                gauge += bits_double(v);
        }
        const char *labels = all[i]->labels;
        const char *open = labels[0] ? "{" : "", *close = labels[0] ? "}" : "";
        int rc;
        if (f->type == FAMILY_COUNTER) {
            rc = hg_buf_appendf(out, "%s%s%s%s %" PRIu64 "\n", f->name, open, labels, close, count);
        } else {
            format_double(num, sizeof(num), gauge);
            rc = hg_buf_appendf(out, "%s%s%s%s %s\n", f->name, open, labels, close, num);
        }
        if (rc < 0)
            return rc;
        i = j;
    }
    return 0;
}

static int render_histogram_series(struct hg_buf *out, const struct family *f, const char *labels,
                                   const uint64_t *bucket, double sum)
{
    const struct bucket_layout *b = f->buckets;
    const char *sep = labels[0] ? "," : "";
    const char *open = labels[0] ? "{" : "", *close = labels[0] ? "}" : "";
    uint64_t cumulative = 0;
    char num[64];
    int rc = 0;
    for (size_t k = 0; k <= b->n && rc == 0; k++) {
        cumulative += bucket[k];
        rc = hg_buf_appendf(out, "%s_bucket{%s%sle=\"%s\"} %" PRIu64 "\n", f->name, labels, sep,
                            k < b->n ? b->le[k] : "+Inf", cumulative);
    }
    if (rc < 0)
        return rc;
    format_double(num, sizeof(num), sum);
    rc = hg_buf_appendf(out, "%s_sum%s%s%s %s\n", f->name, open, labels, close, num);
    if (rc < 0)
        return rc;
    /* _count is the +Inf bucket, so the two always agree even while a writer is mid-update. */
    return hg_buf_appendf(out, "%s_count%s%s%s %" PRIu64 "\n", f->name, open, labels, close, cumulative);
}

static int render_histogram(struct hg_buf *out, const struct family *f, struct series **all, size_t n)
{
    uint64_t bucket[MAX_BUCKETS + 1];
    size_t nb = f->buckets->n + 1;
    if (n == 0) {
        if (f->labelled)
            return 0;
        memset(bucket, 0, sizeof(bucket));
        return render_histogram_series(out, f, "", bucket, 0);
    }
    for (size_t i = 0; i < n;) {
        size_t j = i;
        double sum = 0;
        memset(bucket, 0, sizeof(bucket));
        for (; j < n && strcmp(all[j]->labels, all[i]->labels) == 0; j++) {
            for (size_t k = 0; k < nb; k++)
                bucket[k] += atomic_load_explicit(&all[j]->v[k], memory_order_relaxed);
            sum += bits_double(atomic_load_explicit(&all[j]->v[nb], memory_order_relaxed));
        }
        int rc = render_histogram_series(out, f, all[i]->labels, bucket, sum);
        if (rc < 0)
            return rc;
        i = j;
    }
    return 0;
}

int hg_metrics_render(struct hg_buf *out)
{
    static const char *const type_name[] = { "counter", "gauge", "histogram" };
    int rc = 0;
    for (int m = 0; m < HG_M__COUNT && rc == 0; m++) {
        const struct family *f = &families[m];
        rc = hg_buf_appendf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, type_name[f->type]);
        if (rc < 0)
            break;
        size_t n;
        struct series **all = collect((enum hg_metric)m, &n);
        rc = f->type == FAMILY_HISTOGRAM ? render_histogram(out, f, all, n) : render_scalar(out, f, all, n);
        free(all);
    }
    return rc;
}

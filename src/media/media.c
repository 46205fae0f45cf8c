/*
 * Media jobs: Graph API metadata → streamed download (size cap, magic number, SHA-256, optional
 * clamd INSTREAM scan) → S3 (one PUT, or multipart for big files) → presigned GET URL.
 *
 * Sections, in order: opening and options; tenants, slots, queue (per-tenant concurrency);
 * freeing; finishing (the result and its callback); failure and settling (retry or give up);
 * clamd INSTREAM; S3 (PUT, multipart, presign); download (Graph API metadata, then the stream).
 */
#include <stdio.h>
#include <string.h>

#include <mbedtls/base64.h>
#include <mbedtls/sha256.h>

#include "core/common.h"
#include "core/err.h"
#include "core/log.h"
#include "core/str.h"
#include "core/time.h"
#include "media/media.h"
#include "ops/metrics.h"

/* The metadata answer is a handful of short fields. */
#define META_MAX (16 * 1024)
/* Magic numbers we know need at most 12 bytes; 16 leaves room. */
#define SNIFF_LEN 16
/* S3's limit on the number of parts of one upload. */
#define MAX_PARTS 10000
/* One segment of the object key (tenant, message id); wamids are well below this. */
#define SEGMENT_MAX 256
/* Chunks sent to clamd: its INSTREAM quota is per stream, but smaller chunks keep it streaming. */
#define CLAMD_CHUNK (256 * 1024)
#define CLAMD_REPLY_MAX 256
#define URL_MAX 4096
#define MS 1000000ull

struct tenant {
    char *name;
    unsigned jobs;            /* jobs of this tenant alive (queued or running) */
    unsigned running;         /* of those, holding a slot */
    struct tenant *next;
};

/* A buffer of downloaded bytes on its way to S3 (and clamd). Freed when nobody uses it. */
struct part {
    struct hg_buf buf;
    int no;                   /* part number, 1-based */
    int refs;                 /* the upload queue, an upload in flight, a clamd write */
    struct part *next;        /* upload queue */
};

enum s3_step {
    S3_NONE,
    S3_BEGIN,
    S3_PART,
    S3_COMPLETE,
    S3_PUT,
    S3_ABORT,
};

enum scan_state {
    SCAN_OFF,                 /* no clamd configured */
    SCAN_IDLE,                /* configured, nothing sent yet */
    SCAN_SENDING,             /* connected (or connecting), chunks going out */
    SCAN_CLEAN,
    SCAN_DONE_BAD,            /* infected or error: the failure is recorded */
};

enum fail_kind {
    FAIL_NONE,
    FAIL_FINAL,               /* HG_MEDIA_FAILED */
    FAIL_TRANSIENT,           /* retry the attempt, HG_MEDIA_RETRY when out of attempts */
    FAIL_SHUTDOWN,            /* HG_MEDIA_RETRY "shutdown" at once */
};

enum job_state {
    JOB_QUEUED,               /* waiting for a slot (m->queue) */
    JOB_RUNNING,              /* an attempt holds a slot */
    JOB_BACKOFF,              /* between attempts, timer armed, no slot */
    JOB_DONE,                 /* callback ran; freed when the timer handle closed */
};

struct job {
    struct hg_media *m;
    struct tenant *tenant;
    enum job_state state;
    hg_media_cb cb;
    void *arg;
    /* the request, copied */
    char *access_token, *media_id, *message_id, *declared_mime, *declared_sha, *request_id;
    char *auth_header;        /* "Bearer <token>" */
    enum hg_media_type type;
    uint64_t occurred_at_s;
    uint64_t created_ns;
    unsigned attempts;
    uv_timer_t timer;         /* backoff between attempts, clamd deadline during one */
    struct job *prev, *next;  /* m->jobs */
    struct job *qnext;        /* m->queue */
    int depth;                /* callbacks of this job on the stack (settle waits for 0) */
    bool in_write;            /* inside the download's write callback: no curl calls */
    bool want_advance;        /* advance from the loop (S3 calls cannot start in on_data) */
    bool close_seen;          /* hg_media_close has handled it */

    /* the current attempt */
    uint64_t attempt_ns, dl_end_ns, upload_ns;
    bool meta_pending, dl_pending, dl_done;
    struct hg_buf meta_body;
    char *url, *meta_mime, *meta_sha;
    uint64_t meta_size;
    bool meta_size_known;
    enum fail_kind fail;
    const char *error;
    uint64_t retry_after_ms;
    bool retry_after_set;
    /* verdict of the stream callback; applies only if the answer turns out to be a 200 */
    enum fail_kind verdict;
    const char *verdict_error;
    unsigned char sniff[SNIFF_LEN];
    size_t sniff_len;
    bool sniffed;
    const char *mime, *ext;   /* validated type (static strings) */
    mbedtls_sha256_context sha;
    char sha_hex[65];
    uint64_t size;
    struct part *cur;         /* being filled */
    struct part *upq, *upq_tail;
    unsigned parts_alive;
    int parts_pushed;
    bool multipart;
    char *upload_id;
    char **etags;
    int netags;
    enum s3_step s3_step;     /* S3 call in flight, S3_NONE when none */
    struct part *s3_part;     /* the part an S3_PART call uploads */
    uint64_t s3_started_ns;
    bool begun, stored;
    char key[1024];
    /* clamd */
    enum scan_state scan;
    uv_pipe_t pipe;
    uv_connect_t connect_req;
    bool pipe_open;           /* initialised and not yet closed (close_cb clears it) */
    bool pipe_closing;
    bool timer_for_scan;
    unsigned scan_writes;     /* uv_write in flight */
    bool scan_terminated;     /* the zero-length chunk is queued */
    char reply[CLAMD_REPLY_MAX];
    size_t reply_len;
};

struct hg_media {
    uv_loop_t *loop;
    struct hg_http *http;
    struct hg_s3 *s3;
    char *api_base, *api_version, *bucket, *clamd_socket;
    struct hg_media_opts o;   /* numbers with defaults applied; string members unused */
    struct job *jobs;         /* every job not done */
    struct job *queue, *queue_tail;
    size_t nqueued, running, max_running, max_running_tenant;
    struct tenant *tenants;
    uint64_t rng;
    unsigned jobs_alive;      /* allocated jobs, done or not (their timers close async) */
    bool closing;
    uv_timer_t handle;        /* closed at close: makes freeing m always happen later */
    bool handle_closed;
    void (*on_closed)(void *arg);
    void *on_closed_arg;
};

static void settle(struct job *j);
static void advance(struct job *j);
static void pump(struct hg_media *m);
static void on_s3(void *arg, const struct hg_s3_result *res);
static void kick(struct hg_media *m);

static const char *const type_names[HG_MEDIA_NTYPES] = {
    "image", "video", "audio", "document", "sticker",
};

const char *hg_media_type_name(enum hg_media_type t)
{
    return (unsigned)t < HG_MEDIA_NTYPES ? type_names[t] : "unknown";
}

int hg_media_type_parse(const char *name)
{
    for (int i = 0; name != NULL && i < HG_MEDIA_NTYPES; i++)
        if (strcmp(name, type_names[i]) == 0)
            return i;
    return -1;
}

static uint64_t now_ms_since(uint64_t ns)
{
    return (hg_time_mono_ns() - ns) / MS;
}

/* xorshift64*: jitter only, no need for anything stronger. */
static uint64_t rnd(struct hg_media *m)
{
    m->rng ^= m->rng >> 12;
    m->rng ^= m->rng << 25;
    m->rng ^= m->rng >> 27;
    return m->rng * 2685821657736338717ull;
}

/* ---- opening and options ---- */

int hg_media_open(uv_loop_t *loop, struct hg_http *http, struct hg_s3 *s3,
                  const struct hg_media_opts *opts, struct hg_media **out)
{
    static const uint64_t dflt_size[HG_MEDIA_NTYPES] = {
        5ull << 20, 16ull << 20, 16ull << 20, 100ull << 20, 500ull << 10,
    };
    if (opts->bucket == NULL || *opts->bucket == '\0' ||
        (opts->part_size != 0 && opts->part_size < 1024) || opts->presign_expiry_s > 604800)
        return HG_ERR_CONFIG;
    const char *base = opts->graph_api_base ? opts->graph_api_base : "https://graph.facebook.com";
    if (strncmp(base, "http://", 7) != 0 && strncmp(base, "https://", 8) != 0)
        return HG_ERR_CONFIG;

    struct hg_media *m = hg_xcalloc(1, sizeof(*m));
    m->loop = loop;
    m->http = http;
    m->s3 = s3;
    size_t blen = strlen(base);
    while (blen > 0 && base[blen - 1] == '/')
        blen--;
    m->api_base = hg_xstrndup(base, blen);
    m->api_version = hg_xstrdup(opts->graph_api_version ? opts->graph_api_version : "v18.0");
    m->bucket = hg_xstrdup(opts->bucket);
    if (opts->clamd_socket != NULL && *opts->clamd_socket != '\0')
        m->clamd_socket = hg_xstrdup(opts->clamd_socket);

    struct hg_media_opts *o = &m->o;
    *o = *opts;
    o->graph_api_base = o->graph_api_version = o->bucket = o->clamd_socket = NULL;
    for (int i = 0; i < HG_MEDIA_NTYPES; i++)
        if (o->max_size[i] == 0)
            o->max_size[i] = dflt_size[i];
#define DFLT(field, v) do { if (o->field == 0) o->field = (v); } while (0)
    DFLT(part_size, 5u << 20);
    DFLT(max_parts_buffered, 3);
    DFLT(presign_expiry_s, 3600);
    DFLT(connect_timeout_ms, 10000);
    DFLT(api_timeout_ms, 30000);
    DFLT(download_timeout_ms, 300000);
    DFLT(max_attempts, 5);
    DFLT(backoff_base_ms, 500);
    DFLT(backoff_max_ms, 30000);
    DFLT(max_inflight, 8);
    DFLT(max_inflight_tenant, 4);
    DFLT(max_queued, 1024);
    DFLT(clamd_timeout_ms, 60000);
#undef DFLT
    if (o->max_parts_buffered < 2)
        o->max_parts_buffered = 2; /* one uploading while the next fills */
    m->rng = hg_time_now_ns() | 1;
    uv_timer_init(loop, &m->handle);
    *out = m;
    return 0;
}

void hg_media_stats(const struct hg_media *m, struct hg_media_stats *out)
{
    out->running = m->running;
    out->queued = m->nqueued;
    out->max_running = m->max_running;
    out->max_running_tenant = m->max_running_tenant;
}

/* ---- tenants, slots, queue ---- */

static struct tenant *tenant_get(struct hg_media *m, const char *name)
{
    struct tenant *t;
    for (t = m->tenants; t != NULL; t = t->next)
        if (strcmp(t->name, name) == 0)
            break;
    if (t == NULL) {
        t = hg_xcalloc(1, sizeof(*t));
        t->name = hg_xstrdup(name);
        t->next = m->tenants;
        m->tenants = t;
    }
    t->jobs++;
    return t;
}

static void tenant_put(struct hg_media *m, struct tenant *t)
{
    if (--t->jobs > 0)
        return;
    for (struct tenant **pp = &m->tenants; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == t) {
            *pp = t->next;
            break;
        }
    }
    free(t->name);
    free(t);
}

static void queue_push(struct hg_media *m, struct job *j, bool front)
{
    j->state = JOB_QUEUED;
    j->qnext = NULL;
    if (m->queue == NULL) {
        m->queue = m->queue_tail = j;
    } else if (front) {
        j->qnext = m->queue;
        m->queue = j;
    } else {
        m->queue_tail->qnext = j;
        m->queue_tail = j;
    }
    m->nqueued++;
}

static void queue_remove(struct hg_media *m, struct job *j)
{
    struct job *prev = NULL;
    for (struct job *q = m->queue; q != NULL; prev = q, q = q->qnext) {
        if (q != j)
            continue;
        if (prev != NULL)
            prev->qnext = q->qnext;
        else
            m->queue = q->qnext;
        if (m->queue_tail == q)
            m->queue_tail = prev;
        m->nqueued--;
        return;
    }
}

static void slot_release(struct job *j)
{
    if (j->state != JOB_RUNNING)
        return;
    j->m->running--;
    j->tenant->running--;
}

/* ---- freeing ---- */

static void maybe_free_media(struct hg_media *m)
{
    if (!m->closing || !m->handle_closed || m->jobs_alive > 0)
        return;
    void (*on_closed)(void *) = m->on_closed;
    void *arg = m->on_closed_arg;
    free(m->api_base);
    free(m->api_version);
    free(m->bucket);
    free(m->clamd_socket);
    free(m);
    if (on_closed != NULL)
        on_closed(arg);
}

static void on_media_handle_closed(uv_handle_t *h)
{
    struct hg_media *m = HG_CONTAINER_OF((uv_timer_t *)h, struct hg_media, handle);
    m->handle_closed = true;
    maybe_free_media(m);
}

static void part_unref(struct job *j, struct part *p)
{
    if (p == NULL || --p->refs > 0)
        return;
    hg_buf_free(&p->buf);
    free(p);
    j->parts_alive--;
}

/* Drop everything the attempt built up (nothing may be in flight). */
static void attempt_reset(struct job *j)
{
    while (j->upq != NULL) {
        struct part *p = j->upq;
        j->upq = p->next;
        part_unref(j, p);
    }
    j->upq_tail = NULL;
    part_unref(j, j->cur);
    j->cur = NULL;
    for (int i = 0; i < j->netags; i++)
        free(j->etags[i]);
    free(j->etags);
    j->etags = NULL;
    j->netags = 0;
    free(j->upload_id);
    j->upload_id = NULL;
    free(j->url);
    free(j->meta_mime);
    free(j->meta_sha);
    j->url = j->meta_mime = j->meta_sha = NULL;
    hg_buf_free(&j->meta_body);
    mbedtls_sha256_free(&j->sha);
}

static void on_job_timer_closed(uv_handle_t *h)
{
    struct job *j = HG_CONTAINER_OF((uv_timer_t *)h, struct job, timer);
    struct hg_media *m = j->m;
    free(j);
    m->jobs_alive--;
    maybe_free_media(m);
}

static void job_free(struct job *j)
{
    attempt_reset(j);
    tenant_put(j->m, j->tenant);
    free(j->access_token);
    free(j->media_id);
    free(j->message_id);
    free(j->declared_mime);
    free(j->declared_sha);
    free(j->request_id);
    if (j->auth_header != NULL)
        memset(j->auth_header, 0, strlen(j->auth_header));
    free(j->auth_header);
    uv_close((uv_handle_t *)&j->timer, on_job_timer_closed);
}

/* ---- finishing ---- */

/*
 * One job's outcome into the metrics, from the calling worker's registry. Per job, not per
 * attempt: a file stored on its third try is one download and no failure. Durations are those
 * of the last attempt (the one that decided). Only final failures count in media_failures_total:
 * a RETRY is not decided yet (the drain counts it when it gives up and publishes media.error), so
 * the counter moves once per event published without its media.
 */
static void observe(const struct job *j, const struct hg_media_result *r)
{
    if (r->status == HG_MEDIA_RETRY && r->error != NULL && strcmp(r->error, "shutdown") == 0)
        return;
    if (j->dl_end_ns > j->attempt_ns) {
        /* a download ran to an answer; size is what arrived (how far it got, on a failure) */
        hg_metric_observe(HG_M_MEDIA_DOWNLOAD_DURATION, NULL,
                          (double)(j->dl_end_ns - j->attempt_ns) / 1e9);
        hg_metric_observe(HG_M_MEDIA_DOWNLOAD_SIZE, NULL, (double)r->size);
    }
    if (r->status == HG_MEDIA_STORED) {
        /* the same family as the raw archive's uploads, told apart by kind */
        hg_metric_observe(HG_M_MINIO_UPLOAD_DURATION, "kind=\"media\"",
                          (double)j->upload_ns / 1e9);
    } else if (r->status == HG_MEDIA_FAILED) {
        /* reason codes are this module's static strings: no escaping needed */
        char labels[96];
        snprintf(labels, sizeof(labels), "reason=\"%s\"", r->error ? r->error : "download_failed");
        hg_metric_inc(HG_M_MEDIA_FAILURES, labels);
    }
}

static void finish(struct job *j, enum hg_media_status status, const char *error)
{
    struct hg_media *m = j->m;
    char url[URL_MAX];
    struct hg_media_result r = {
        .status = status,
        .error = error,
        .media_id = j->media_id,
        .media_type = j->type,
        .size = j->size,
        .attempts = j->attempts,
        .download_ms = j->dl_end_ns > j->attempt_ns ? (j->dl_end_ns - j->attempt_ns) / MS : 0,
        .upload_ms = j->upload_ns / MS,
        .total_ms = now_ms_since(j->created_ns),
        .multipart = j->multipart,
        .scanned = j->scan == SCAN_CLEAN,
    };
    if (j->sha_hex[0] != '\0')
        r.sha256 = j->sha_hex;
    if (status == HG_MEDIA_STORED) {
        uint64_t now = hg_time_now_ns() / 1000000000ull;
        int rc = hg_s3_presign_get(m->s3, m->bucket, j->key, m->o.presign_expiry_s, now, url,
                                   sizeof(url));
        if (rc < 0) {
            /* only a key past the URL cap gets here: the object stays, the event says why */
            hg_warn(j->request_id, "media: presign failed", "error", hg_strerror(rc), NULL);
            r.status = HG_MEDIA_FAILED;
            r.error = "upload_failed";
        } else {
            r.bucket = m->bucket;
            r.key = j->key;
            r.mime_type = j->mime;
            r.url = url;
            r.expires_at_s = now + m->o.presign_expiry_s;
        }
    }
    if (r.status != HG_MEDIA_STORED) {
        hg_info(j->request_id, "media: not stored", "media_id", j->media_id, "error", r.error,
                "final", r.status == HG_MEDIA_FAILED ? "true" : "false", NULL);
    } else {
        char size[24];
        snprintf(size, sizeof(size), "%llu", (unsigned long long)r.size);
        hg_info(j->request_id, "media: stored", "media_id", j->media_id, "key", j->key, "size", size,
                "upload", r.multipart ? "multipart" : "put", NULL);
    }

    observe(j, &r);

    if (j->state == JOB_QUEUED)
        queue_remove(m, j);
    slot_release(j);
    j->state = JOB_DONE;
    if (j->prev != NULL)
        j->prev->next = j->next;
    else
        m->jobs = j->next;
    if (j->next != NULL)
        j->next->prev = j->prev;

    j->cb(j->arg, &r);
    if (!m->closing)
        pump(m);
    job_free(j);
}

/* ---- failure and settling ---- */

static void pipe_close(struct job *j);

static void fail(struct job *j, enum fail_kind kind, const char *error)
{
    if (j->fail != FAIL_NONE) {
        /* shutdown overrides a retry that has not happened yet */
        if (kind == FAIL_SHUTDOWN && j->fail == FAIL_TRANSIENT) {
            j->fail = kind;
            j->error = error;
        }
        return;
    }
    j->fail = kind;
    j->error = error;
    j->depth++;
    /*
     * Runs the download's callback right here (UV_ECANCELED); the depth keeps it from settling.
     * Inside the write callback curl must not be called: on_data aborts the transfer instead.
     */
    if ((j->dl_pending || j->meta_pending) && !j->in_write)
        hg_http_cancel(j->m->http, j);
    pipe_close(j);
    j->depth--;
}

static void on_backoff(uv_timer_t *t)
{
    struct job *j = HG_CONTAINER_OF(t, struct job, timer);
    struct hg_media *m = j->m;
    /* Back at the head of the queue: it has waited its turn already. */
    queue_push(m, j, true);
    pump(m);
}

static uint64_t backoff_ms(struct job *j)
{
    struct hg_media *m = j->m;
    if (j->retry_after_set)
        return HG_MIN(j->retry_after_ms, (uint64_t)m->o.backoff_max_ms);
    unsigned shift = HG_MIN(j->attempts - 1, 20u);
    uint64_t cap = HG_MIN((uint64_t)m->o.backoff_base_ms << shift, (uint64_t)m->o.backoff_max_ms);
    /* full jitter, but never zero: a retry in the same tick helps nobody */
    return 1 + rnd(m) % cap;
}

/* Once a failed attempt has nothing in flight: clean up S3, then retry or report. */
static void settle(struct job *j)
{
    if (j->depth > 0 || j->state != JOB_RUNNING || j->fail == FAIL_NONE)
        return;
    if (j->meta_pending || j->dl_pending || j->s3_step != S3_NONE || j->pipe_open)
        return;
    struct hg_media *m = j->m;
    if (j->upload_id != NULL) {
        /* Parts of a failed file must not linger. s3rver lacks Abort (405): best effort. */
        char *id = j->upload_id;
        j->upload_id = NULL;
        j->s3_step = S3_ABORT;
        j->s3_started_ns = hg_time_mono_ns();
        int rc = hg_s3_multipart_abort(m->s3, m->bucket, j->key, id, on_s3, j);
        free(id);
        if (rc == 0)
            return;
        j->s3_step = S3_NONE;
    }
    uv_timer_stop(&j->timer);
    j->timer_for_scan = false;
    if (j->fail == FAIL_TRANSIENT && j->attempts < m->o.max_attempts && !m->closing) {
        uint64_t delay = backoff_ms(j);
        hg_info(j->request_id, "media: retrying", "media_id", j->media_id, "error", j->error,
                NULL);
        attempt_reset(j);
        slot_release(j);
        j->state = JOB_BACKOFF;
        uv_timer_start(&j->timer, on_backoff, delay, 0);
        pump(m);
        return;
    }
    finish(j, j->fail == FAIL_FINAL ? HG_MEDIA_FAILED : HG_MEDIA_RETRY,
           j->fail == FAIL_SHUTDOWN ? "shutdown" : j->error);
}

/* Classify an HTTP answer that is not a 2xx. */
static void fail_status(struct job *j, long status, const char *retry_after)
{
    if (status == 401 || status == 403) {
        fail(j, FAIL_FINAL, "unauthorized");
    } else if (status == 404 || status == 410) {
        fail(j, FAIL_FINAL, "not_found");
    } else if (status == 429 || status == 408 || status >= 500) {
        int64_t secs;
        if (retry_after != NULL && hg_str_to_i64(retry_after, 0, 86400, &secs) == 0) {
            j->retry_after_ms = (uint64_t)secs * 1000;
            j->retry_after_set = true;
        }
        fail(j, FAIL_TRANSIENT, "download_failed");
    } else {
        fail(j, FAIL_FINAL, "download_failed");
    }
}

/* ---- clamd INSTREAM ---- */

struct scan_write {
    uv_write_t req;
    struct job *j;
    struct part *part;        /* NULL for the command and the terminator */
    size_t nbufs;
    uint32_t *prefixes;
    uv_buf_t *bufs;
};

static void on_pipe_closed(uv_handle_t *h)
{
    struct job *j = HG_CONTAINER_OF((uv_pipe_t *)h, struct job, pipe);
    j->pipe_open = false;
    j->pipe_closing = false;
    if (j->scan == SCAN_SENDING)
        j->scan = SCAN_DONE_BAD;
    settle(j);
    if (j->state == JOB_RUNNING && j->fail == FAIL_NONE)
        advance(j);
}

static void pipe_close(struct job *j)
{
    if (!j->pipe_open || j->pipe_closing)
        return;
    j->pipe_closing = true;
    if (j->timer_for_scan) {
        uv_timer_stop(&j->timer);
        j->timer_for_scan = false;
    }
    uv_close((uv_handle_t *)&j->pipe, on_pipe_closed);
}

static void scan_verdict(struct job *j)
{
    j->reply[HG_MIN(j->reply_len, sizeof(j->reply) - 1)] = '\0';
    size_t n = strlen(j->reply);
    while (n > 0 && (j->reply[n - 1] == '\n' || j->reply[n - 1] == '\r'))
        j->reply[--n] = '\0';
    if (n >= 6 && strcmp(j->reply + n - 6, " FOUND") == 0) {
        j->scan = SCAN_DONE_BAD;
        hg_warn(j->request_id, "media: infected", "media_id", j->media_id, NULL);
        fail(j, FAIL_FINAL, "infected");
    } else if (n >= 4 && strcmp(j->reply + n - 4, ": OK") == 0 && j->scan_terminated) {
        j->scan = SCAN_CLEAN;
        pipe_close(j);
    } else {
        j->scan = SCAN_DONE_BAD;
        hg_warn(j->request_id, "media: scan failed", "reply", j->reply, NULL);
        fail(j, FAIL_TRANSIENT, "scan_failed");
    }
}

static void on_reply_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct job *j = HG_CONTAINER_OF((uv_pipe_t *)h, struct job, pipe);
    size_t room = sizeof(j->reply) - 1 - j->reply_len;
    buf->base = j->reply + j->reply_len;
    buf->len = room;
}

static void on_reply(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct job *j = HG_CONTAINER_OF((uv_pipe_t *)s, struct job, pipe);
    if (nread == 0)
        return;
    j->depth++;
    if (nread > 0) {
        j->reply_len += (size_t)nread;
        /* z-commands end their reply with NUL; a full buffer is not a reply we know */
        if (memchr(j->reply, '\0', j->reply_len) != NULL || j->reply_len >= sizeof(j->reply) - 1) {
            uv_read_stop(s);
            scan_verdict(j);
        }
    } else {
        uv_read_stop(s);
        if (j->reply_len > 0) {
            scan_verdict(j);
        } else {
            j->scan = SCAN_DONE_BAD;
            fail(j, FAIL_TRANSIENT, "scan_failed");
        }
    }
    j->depth--;
    settle(j);
    if (j->state == JOB_RUNNING && j->fail == FAIL_NONE)
        advance(j);
}

static void on_scan_written(uv_write_t *req, int status)
{
    struct scan_write *w = HG_CONTAINER_OF(req, struct scan_write, req);
    struct job *j = w->j;
    j->scan_writes--;
    part_unref(j, w->part);
    free(w->prefixes);
    free(w->bufs);
    free(w);
    if (status < 0 && status != UV_ECANCELED && j->scan == SCAN_SENDING) {
        j->depth++;
        fail(j, FAIL_TRANSIENT, "scan_failed");
        j->depth--;
        settle(j);
        return;
    }
    if (j->state == JOB_RUNNING && j->fail == FAIL_NONE)
        advance(j);
}

static void on_scan_connected(uv_connect_t *req, int status)
{
    struct job *j = HG_CONTAINER_OF(req, struct job, connect_req);
    if (status == UV_ECANCELED)
        return;
    j->depth++;
    if (status < 0) {
        hg_warn(j->request_id, "media: clamd unreachable", "error", uv_strerror(status), NULL);
        fail(j, FAIL_TRANSIENT, "scan_failed");
    } else if (uv_read_start((uv_stream_t *)&j->pipe, on_reply_alloc, on_reply) < 0) {
        fail(j, FAIL_TRANSIENT, "scan_failed");
    }
    j->depth--;
    settle(j);
}

static void on_scan_timeout(uv_timer_t *t)
{
    struct job *j = HG_CONTAINER_OF(t, struct job, timer);
    j->timer_for_scan = false;
    j->depth++;
    fail(j, FAIL_TRANSIENT, "scan_failed");
    j->depth--;
    settle(j);
}

/* Queue bytes for clamd: as length-prefixed chunks (part != NULL), or raw (cmd). */
static int scan_write(struct job *j, struct part *part, const char *raw, size_t rawlen)
{
    struct scan_write *w = hg_xcalloc(1, sizeof(*w));
    w->j = j;
    if (part != NULL) {
        size_t len = part->buf.len;
        size_t nchunks = len == 0 ? 0 : (len + CLAMD_CHUNK - 1) / CLAMD_CHUNK;
        w->prefixes = hg_xcalloc(nchunks, sizeof(uint32_t));
        w->bufs = hg_xcalloc(2 * nchunks, sizeof(uv_buf_t));
        for (size_t i = 0; i < nchunks; i++) {
            size_t n = HG_MIN((size_t)CLAMD_CHUNK, len - i * CLAMD_CHUNK);
            unsigned char *pfx = (unsigned char *)&w->prefixes[i];
            pfx[0] = (unsigned char)(n >> 24);
            pfx[1] = (unsigned char)(n >> 16);
            pfx[2] = (unsigned char)(n >> 8);
            pfx[3] = (unsigned char)n;
            w->bufs[w->nbufs++] = uv_buf_init((char *)pfx, 4);
            w->bufs[w->nbufs++] = uv_buf_init(part->buf.data + i * CLAMD_CHUNK, (unsigned)n);
        }
        part->refs++;
        w->part = part;
    } else {
        w->bufs = hg_xcalloc(1, sizeof(uv_buf_t));
        w->bufs[w->nbufs++] = uv_buf_init((char *)raw, (unsigned)rawlen);
    }
    if (w->nbufs == 0) {
        part_unref(j, w->part);
        free(w->prefixes);
        free(w->bufs);
        free(w);
        return 0;
    }
    /* libuv queues writes on a stream that is still connecting and flushes them once it is. */
    int rc = uv_write(&w->req, (uv_stream_t *)&j->pipe, w->bufs, (unsigned)w->nbufs,
                      on_scan_written);
    if (rc < 0) {
        part_unref(j, w->part);
        free(w->prefixes);
        free(w->bufs);
        free(w);
        return rc;
    }
    j->scan_writes++;
    return 0;
}

/* Send a part (or, with last, also the terminator) to clamd; connect on first use. */
static void scan_send(struct job *j, struct part *p, bool last)
{
    static const char cmd[] = "zINSTREAM"; /* sent with its NUL */
    static const char end[4] = { 0, 0, 0, 0 };
    struct hg_media *m = j->m;
    if (j->scan == SCAN_OFF || j->fail != FAIL_NONE)
        return;
    if (j->scan == SCAN_IDLE) {
        uv_pipe_init(m->loop, &j->pipe, 0);
        j->pipe_open = true;
        j->scan = SCAN_SENDING;
        j->reply_len = 0;
        uv_pipe_connect(&j->connect_req, &j->pipe, m->clamd_socket, on_scan_connected);
        uv_timer_start(&j->timer, on_scan_timeout, m->o.clamd_timeout_ms, 0);
        j->timer_for_scan = true;
        if (scan_write(j, NULL, cmd, sizeof(cmd)) < 0)
            goto err;
    }
    if (j->scan != SCAN_SENDING)
        return;
    if (p != NULL && scan_write(j, p, NULL, 0) < 0)
        goto err;
    if (last) {
        if (scan_write(j, NULL, end, sizeof(end)) < 0)
            goto err;
        j->scan_terminated = true;
    }
    return;
err:
    fail(j, FAIL_TRANSIENT, "scan_failed");
}

/* ---- S3 ---- */

static bool sha_decode(const char *s, unsigned char out[32]);

/* x-amz-meta-* headers of the object; returns how many. */
static size_t build_meta(struct job *j, struct hg_http_header meta[4], char vals[4][SEGMENT_MAX])
{
    char hex[65] = "";
    unsigned char sum[32];
    if (j->sha_hex[0] != '\0') {
        memcpy(hex, j->sha_hex, sizeof(hex));
    } else {
        const char *declared = j->meta_sha ? j->meta_sha : j->declared_sha;
        if (declared != NULL && sha_decode(declared, sum))
            hg_hex(hex, sum, 32);
    }
    const char *src[4] = { j->media_id, j->tenant->name, j->message_id, hex };
    static const char *const names[4] = { "x-amz-meta-media-id", "x-amz-meta-tenant",
                                          "x-amz-meta-message-id", "x-amz-meta-sha256" };
    size_t count = hex[0] != '\0' ? 4 : 3;
    for (size_t i = 0; i < count; i++) {
        size_t n = 0;
        /* S3 metadata is ASCII; anything else becomes '_' (the originals are in the event) */
        for (const char *s = src[i]; *s && n + 1 < SEGMENT_MAX; s++)
            vals[i][n++] = (*s >= 0x20 && *s <= 0x7e) ? *s : '_';
        vals[i][n] = '\0';
        meta[i].name = names[i];
        meta[i].value = vals[i];
    }
    return count;
}

static void s3_started(struct job *j, enum s3_step step)
{
    j->s3_step = step;
    j->s3_started_ns = hg_time_mono_ns();
}

/* Start whatever S3 call is due. Called after every event of a healthy attempt. */
static void advance(struct job *j)
{
    struct hg_media *m = j->m;
    if (j->in_write) {
        /* curl refuses new transfers from inside a write callback (CURLM_RECURSIVE_API_CALL) */
        j->want_advance = true;
        kick(m);
        return;
    }
    if (j->depth > 0 || j->fail != FAIL_NONE || j->s3_step != S3_NONE || j->stored)
        return;
    /* the last step also waits for the clamd pipe to be closed, so finish can free the job */
    bool scan_ok = j->scan == SCAN_OFF || (j->scan == SCAN_CLEAN && !j->pipe_open);
    struct hg_http_header meta[4];
    char vals[4][SEGMENT_MAX];
    int rc = 0;

    if (j->multipart) {
        if (!j->begun) {
            /*
             * Metadata is fixed at begin, before the last byte is hashed: it carries the hash
             * Meta declared (checked before complete), or none when Meta declared none.
             */
            size_t nmeta = build_meta(j, meta, vals);
            s3_started(j, S3_BEGIN);
            j->begun = true;
            rc = hg_s3_multipart_begin(m->s3, m->bucket, j->key, j->mime, meta, nmeta,
                                       on_s3, j);
        } else if (j->upload_id == NULL) {
            return; /* begin in flight or failed */
        } else if (j->upq != NULL) {
            struct part *p = j->upq;
            j->upq = p->next;
            if (j->upq == NULL)
                j->upq_tail = NULL;
            j->s3_part = p; /* the queue's reference moves to the call */
            s3_started(j, S3_PART);
            rc = hg_s3_multipart_upload_part(m->s3, m->bucket, j->key, j->upload_id, p->no,
                                             p->buf.data, p->buf.len, on_s3, j);
        } else if (j->dl_done && scan_ok && j->netags == j->parts_pushed) {
            s3_started(j, S3_COMPLETE);
            rc = hg_s3_multipart_complete(m->s3, m->bucket, j->key, j->upload_id,
                                          (const char *const *)j->etags, (size_t)j->netags,
                                          on_s3, j);
        } else {
            return;
        }
    } else {
        if (!j->dl_done || !scan_ok)
            return;
        size_t nmeta = build_meta(j, meta, vals);
        s3_started(j, S3_PUT);
        rc = hg_s3_put_object(m->s3, m->bucket, j->key, j->mime, meta, nmeta,
                              j->cur ? j->cur->buf.data : "", j->cur ? j->cur->buf.len : 0,
                              on_s3, j);
    }
    if (rc < 0) {
        hg_warn(j->request_id, "media: s3 call refused", "error", hg_strerror(rc), NULL);
        j->s3_step = S3_NONE;
        /* a refused call is a bad key or metadata, which no retry fixes */
        j->depth++;
        fail(j, FAIL_FINAL, "upload_failed");
        j->depth--;
        settle(j);
    }
}

static void on_s3(void *arg, const struct hg_s3_result *res)
{
    struct job *j = arg;
    enum s3_step step = j->s3_step;
    j->s3_step = S3_NONE;
    j->upload_ns += hg_time_mono_ns() - j->s3_started_ns;
    j->depth++;
    if (step == S3_PART) {
        part_unref(j, j->s3_part);
        j->s3_part = NULL;
    }
    if (step == S3_ABORT) {
        if (res->err != 0)
            hg_debug(j->request_id, "media: multipart abort failed", "error",
                     hg_strerror(res->err), NULL);
    } else if (res->err == HG_ERR_CLOSED || (res->err != 0 && j->m->closing)) {
        fail(j, FAIL_SHUTDOWN, "shutdown");
    } else if (res->err != 0) {
        hg_warn(j->request_id, "media: s3 failed", "error", hg_strerror(res->err), "code",
                res->code, NULL);
        /*
         * Storage trouble is ours, never the sender's: even a refusal (wrong key, missing
         * bucket) must not drop the media for good, so every S3 failure may be retried later.
         */
        fail(j, FAIL_TRANSIENT, "upload_failed");
    } else if (j->fail == FAIL_NONE) {
        switch (step) {
        case S3_BEGIN:
            j->upload_id = hg_xstrdup(res->upload_id);
            break;
        case S3_PART:
            j->etags = hg_xrealloc(j->etags, sizeof(char *) * (size_t)(j->netags + 1));
            j->etags[j->netags++] = hg_xstrdup(res->etag);
            break;
        case S3_COMPLETE:
            free(j->upload_id);
            j->upload_id = NULL;
            j->stored = true;
            break;
        case S3_PUT:
            j->stored = true;
            break;
        default:
            break;
        }
    }
    j->depth--;
    if (j->fail != FAIL_NONE) {
        settle(j);
        return;
    }
    if (j->stored) {
        finish(j, HG_MEDIA_STORED, NULL);
        return;
    }
    advance(j);
}

/* ---- download ---- */

static bool sha_decode(const char *s, unsigned char out[32])
{
    size_t n = strlen(s);
    if (n == 64) {
        for (size_t i = 0; i < 32; i++) {
            unsigned v = 0;
            for (int k = 0; k < 2; k++) {
                char c = s[2 * i + (size_t)k];
                unsigned d;
                if (c >= '0' && c <= '9')
                    d = (unsigned)(c - '0');
                else if (c >= 'a' && c <= 'f')
                    d = (unsigned)(c - 'a' + 10);
                else if (c >= 'A' && c <= 'F')
                    d = (unsigned)(c - 'A' + 10);
                else
                    goto base64;
                v = v * 16 + d;
            }
            out[i] = (unsigned char)v;
        }
        return true;
    }
base64:;
    unsigned char tmp[64];
    size_t olen = 0;
    if (mbedtls_base64_decode(tmp, sizeof(tmp), &olen, (const unsigned char *)s, n) != 0 ||
        olen != 32)
        return false;
    memcpy(out, tmp, 32);
    return true;
}

/* The declared types (webhook and Graph API) both have to fit the bytes. */
static void do_sniff(struct job *j)
{
    const char *declared[2] = { j->meta_mime, j->declared_mime };
    const char *mime = NULL, *ext = NULL;
    int rc = 0;
    j->sniffed = true;
    for (int i = 0; i < 2 && rc == 0; i++)
        if (declared[i] != NULL && *declared[i] != '\0')
            rc = hg_media_sniff(j->type, declared[i], j->sniff, j->sniff_len, &mime, &ext);
    if (rc == 0 && mime == NULL)
        rc = hg_media_sniff(j->type, NULL, j->sniff, j->sniff_len, &mime, &ext);
    if (rc == HG_ERR_INVALID) {
        j->verdict = FAIL_FINAL;
        j->verdict_error = "unsupported_type";
    } else if (rc < 0) {
        j->verdict = FAIL_FINAL;
        j->verdict_error = "mime_mismatch";
    } else {
        j->mime = mime;
        j->ext = ext;
    }
}

static void segment(char *out, size_t cap, const char *s)
{
    size_t n = 0;
    for (; *s && n + 1 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        out[n++] = (c < 0x20 || c == 0x7f || c == '/' || c == '\\') ? '_' : (char)c;
    }
    out[n] = '\0';
    if (n == 0 || strcmp(out, ".") == 0 || strcmp(out, "..") == 0)
        snprintf(out, cap, "_");
}

static void make_key(struct job *j)
{
    char tenant[SEGMENT_MAX], msg[SEGMENT_MAX], date[11];
    segment(tenant, sizeof(tenant), j->tenant->name);
    segment(msg, sizeof(msg), j->message_id);
    uint64_t at = j->occurred_at_s ? j->occurred_at_s : hg_time_now_ns() / 1000000000ull;
    hg_time_date(date, at * 1000000000ull);
    snprintf(j->key, sizeof(j->key), "media-inbound/%s/%s/%s/%s.%s", tenant,
             hg_media_type_name(j->type), date, msg, j->ext);
}

static struct part *part_new(struct job *j)
{
    struct part *p = hg_xcalloc(1, sizeof(*p));
    hg_buf_init(&p->buf, j->m->o.part_size);
    p->refs = 1;
    j->parts_alive++;
    return p;
}

/* cur is full and more bytes come: it becomes an upload part. */
static int push_part(struct job *j)
{
    struct part *p = j->cur;
    if (j->parts_pushed >= MAX_PARTS) {
        j->verdict = FAIL_FINAL;
        j->verdict_error = "too_large";
        return -1;
    }
    if (!j->multipart) {
        j->multipart = true;
        make_key(j);
    }
    p->no = ++j->parts_pushed;
    scan_send(j, p, false);
    if (j->upq_tail != NULL)
        j->upq_tail->next = p;
    else
        j->upq = p;
    j->upq_tail = p;
    j->cur = NULL;
    return 0;
}

static int on_data(void *arg, const char *data, size_t n)
{
    struct job *j = arg;
    struct hg_media *m = j->m;
    if (j->fail != FAIL_NONE || j->verdict != FAIL_NONE)
        return 1;
    j->size += n;
    if (j->size > m->o.max_size[j->type]) {
        j->verdict = FAIL_FINAL;
        j->verdict_error = "too_large";
        return 1;
    }
    if (!j->sniffed) {
        size_t k = HG_MIN(n, SNIFF_LEN - j->sniff_len);
        memcpy(j->sniff + j->sniff_len, data, k);
        j->sniff_len += k;
        if (j->sniff_len == SNIFF_LEN) {
            do_sniff(j);
            if (j->verdict != FAIL_NONE)
                return 1;
        }
    }
    mbedtls_sha256_update_ret(&j->sha, (const unsigned char *)data, n);
    j->depth++;
    j->in_write = true;
    while (n > 0) {
        if (j->cur != NULL && j->cur->buf.len == m->o.part_size && push_part(j) < 0)
            break;
        if (j->cur == NULL) {
            if (j->parts_alive >= m->o.max_parts_buffered) {
                /* S3 is slower than the download and the stream cannot be paused */
                j->verdict = FAIL_TRANSIENT;
                j->verdict_error = "upload_failed";
                break;
            }
            j->cur = part_new(j);
        }
        size_t k = HG_MIN(n, m->o.part_size - j->cur->buf.len);
        hg_buf_append(&j->cur->buf, data, k);
        data += k;
        n -= k;
    }
    if (j->verdict == FAIL_NONE && j->fail == FAIL_NONE)
        advance(j); /* deferred to the loop: we are inside curl */
    j->in_write = false;
    j->depth--;
    return (j->verdict != FAIL_NONE || j->fail != FAIL_NONE) ? 1 : 0;
}

static void on_download(void *arg, const struct hg_http_resp *resp)
{
    struct job *j = arg;
    struct hg_media *m = j->m;
    j->dl_pending = false;
    j->dl_end_ns = hg_time_mono_ns();
    j->depth++;
    if (j->fail != FAIL_NONE) {
        /* canceled by fail(): already decided */
    } else if (resp->err == HG_ERR_CLOSED || m->closing) {
        fail(j, FAIL_SHUTDOWN, "shutdown");
    } else if (resp->status > 0 && (resp->status < 200 || resp->status > 299)) {
        fail_status(j, resp->status, resp->retry_after);
    } else if (j->verdict != FAIL_NONE) {
        fail(j, j->verdict, j->verdict_error);
    } else if (resp->err != 0) {
        fail(j, FAIL_TRANSIENT, "download_failed");
    } else {
        if (!j->sniffed)
            do_sniff(j);
        unsigned char sum[32], want[32];
        mbedtls_sha256_finish_ret(&j->sha, sum);
        hg_hex(j->sha_hex, sum, 32);
        const char *declared[2] = { j->meta_sha, j->declared_sha };
        if (j->verdict != FAIL_NONE) {
            fail(j, j->verdict, j->verdict_error);
        } else {
            for (int i = 0; i < 2 && j->fail == FAIL_NONE; i++)
                if (declared[i] != NULL && *declared[i] != '\0' &&
                    (!sha_decode(declared[i], want) || memcmp(want, sum, 32) != 0))
                    fail(j, FAIL_FINAL, "sha256_mismatch");
        }
        if (j->fail == FAIL_NONE) {
            j->dl_done = true;
            if (j->multipart) {
                if (j->cur != NULL && push_part(j) < 0)
                    fail(j, j->verdict, j->verdict_error);
                scan_send(j, NULL, true);
            } else {
                make_key(j);
                scan_send(j, j->cur, true);
            }
        }
    }
    j->depth--;
    settle(j);
    if (j->state == JOB_RUNNING && j->fail == FAIL_NONE)
        advance(j);
}

static char *json_str_dup(json_t *obj, const char *name)
{
    const char *s = json_string_value(json_object_get(obj, name));
    return s != NULL ? hg_xstrdup(s) : NULL;
}

static void start_download(struct job *j)
{
    struct hg_media *m = j->m;
    const struct hg_http_header hdrs[] = { { "Authorization", j->auth_header } };
    const struct hg_http_req req = {
        .url = j->url,
        .headers = hdrs,
        .nheaders = 1,
        .resp_write = on_data,
        .resp_write_arg = j,
        .connect_timeout_ms = m->o.connect_timeout_ms,
        .timeout_ms = m->o.download_timeout_ms,
    };
    mbedtls_sha256_starts_ret(&j->sha, 0);
    int rc = hg_http_request(m->http, &req, on_download, j);
    if (rc < 0) {
        fail(j, rc == HG_ERR_CLOSED ? FAIL_SHUTDOWN : FAIL_FINAL,
             rc == HG_ERR_CLOSED ? "shutdown" : "download_failed");
        return;
    }
    j->dl_pending = true;
}

static void on_meta(void *arg, const struct hg_http_resp *resp)
{
    struct job *j = arg;
    struct hg_media *m = j->m;
    json_t *doc = NULL;
    j->meta_pending = false;
    j->depth++;
    if (j->fail != FAIL_NONE)
        goto out;
    if (resp->err == HG_ERR_CLOSED || m->closing) {
        fail(j, FAIL_SHUTDOWN, "shutdown");
        goto out;
    }
    if (resp->err != 0) {
        fail(j, FAIL_TRANSIENT, "download_failed");
        goto out;
    }
    if (resp->status != 200) {
        fail_status(j, resp->status, resp->retry_after);
        goto out;
    }
    doc = json_loadb(j->meta_body.data ? j->meta_body.data : "", j->meta_body.len, 0, NULL);
    const char *url = json_string_value(json_object_get(doc, "url"));
    if (url == NULL || (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)) {
        /* a 200 without a usable URL is Graph API trouble, not the media's */
        hg_warn(j->request_id, "media: metadata without url", "media_id", j->media_id, NULL);
        fail(j, FAIL_TRANSIENT, "download_failed");
        goto out;
    }
    j->url = hg_xstrdup(url);
    j->meta_mime = json_str_dup(doc, "mime_type");
    j->meta_sha = json_str_dup(doc, "sha256");
    json_t *fs = json_object_get(doc, "file_size");
    int64_t size;
    if (json_is_integer(fs) && json_integer_value(fs) >= 0) {
        j->meta_size = (uint64_t)json_integer_value(fs);
        j->meta_size_known = true;
    } else if (json_is_string(fs) &&
               hg_str_to_i64(json_string_value(fs), 0, INT64_MAX, &size) == 0) {
        j->meta_size = (uint64_t)size;
        j->meta_size_known = true;
    }
    if (j->meta_size_known && j->meta_size > m->o.max_size[j->type]) {
        j->size = j->meta_size;
        fail(j, FAIL_FINAL, "too_large");
        goto out;
    }
    start_download(j);
out:
    json_decref(doc);
    j->depth--;
    settle(j);
}

static void attempt_start(struct job *j)
{
    struct hg_media *m = j->m;
    char url[URL_MAX];
    j->attempts++;
    j->attempt_ns = hg_time_mono_ns();
    j->dl_end_ns = j->upload_ns = 0;
    j->dl_done = j->begun = j->stored = j->multipart = j->sniffed = false;
    j->fail = j->verdict = FAIL_NONE;
    j->error = j->verdict_error = NULL;
    j->retry_after_set = false;
    j->sniff_len = 0;
    j->size = 0;
    j->sha_hex[0] = '\0';
    j->mime = j->ext = NULL;
    j->parts_pushed = 0;
    j->scan = m->clamd_socket != NULL ? SCAN_IDLE : SCAN_OFF;
    j->scan_terminated = false;
    j->key[0] = '\0';
    hg_buf_init(&j->meta_body, META_MAX);
    mbedtls_sha256_init(&j->sha);

    /* media ids are digits; anything else is encoded so it stays one path segment */
    struct hg_buf u;
    hg_buf_init(&u, sizeof(url));
    int rc = hg_buf_appendf(&u, "%s/%s/", m->api_base, m->api_version);
    for (const unsigned char *p = (const unsigned char *)j->media_id; rc == 0 && *p; p++) {
        if ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
            *p == '-' || *p == '_' || *p == '.')
            rc = hg_buf_append(&u, p, 1);
        else
            rc = hg_buf_appendf(&u, "%%%02X", *p);
    }
    const struct hg_http_header hdrs[] = { { "Authorization", j->auth_header } };
    const struct hg_http_req req = {
        .url = hg_buf_cstr(&u),
        .headers = hdrs,
        .nheaders = 1,
        .resp_body = &j->meta_body,
        .connect_timeout_ms = m->o.connect_timeout_ms,
        .timeout_ms = m->o.api_timeout_ms,
    };
    j->depth++;
    if (rc == 0)
        rc = hg_http_request(m->http, &req, on_meta, j);
    hg_buf_free(&u);
    if (rc < 0)
        fail(j, rc == HG_ERR_CLOSED ? FAIL_SHUTDOWN : FAIL_FINAL,
             rc == HG_ERR_CLOSED ? "shutdown" : "download_failed");
    else
        j->meta_pending = true;
    j->depth--;
    settle(j);
}

/* Start queued jobs while the worker and their tenants have free slots. */
static void pump(struct hg_media *m)
{
    struct job *prev = NULL, *j = m->queue;
    while (j != NULL && m->running < m->o.max_inflight && !m->closing) {
        struct job *next = j->qnext;
        if (j->tenant->running >= m->o.max_inflight_tenant) {
            prev = j;
            j = next;
            continue;
        }
        if (prev != NULL)
            prev->qnext = next;
        else
            m->queue = next;
        if (m->queue_tail == j)
            m->queue_tail = prev;
        m->nqueued--;
        j->state = JOB_RUNNING;
        m->running++;
        j->tenant->running++;
        m->max_running = HG_MAX(m->max_running, m->running);
        m->max_running_tenant = HG_MAX(m->max_running_tenant, (size_t)j->tenant->running);
        attempt_start(j);
        /* attempt_start may have finished j (and run pump) already: restart from the head */
        prev = NULL;
        j = m->queue;
    }
}

static void on_kick(uv_timer_t *t)
{
    struct hg_media *m = HG_CONTAINER_OF(t, struct hg_media, handle);
    pump(m);
    /* advance may finish a job (unlinking it): start over after each one */
    for (bool again = true; again && !m->closing;) {
        again = false;
        for (struct job *j = m->jobs; j != NULL; j = j->next) {
            if (!j->want_advance)
                continue;
            j->want_advance = false;
            if (j->state == JOB_RUNNING && j->fail == FAIL_NONE) {
                advance(j);
                again = true;
                break;
            }
        }
    }
}

/* Run on_kick from the loop soon (a zero timer: after this callback chain unwinds). */
static void kick(struct hg_media *m)
{
    if (!m->closing && !uv_is_active((uv_handle_t *)&m->handle))
        uv_timer_start(&m->handle, on_kick, 0, 0);
}

int hg_media_fetch(struct hg_media *m, const struct hg_media_job *job, hg_media_cb cb, void *arg)
{
    if (m->closing)
        return HG_ERR_CLOSED;
    if (cb == NULL || job->tenant == NULL || *job->tenant == '\0' || job->access_token == NULL ||
        *job->access_token == '\0' || job->media_id == NULL || *job->media_id == '\0' ||
        job->message_id == NULL || *job->message_id == '\0' ||
        (unsigned)job->media_type >= HG_MEDIA_NTYPES)
        return HG_ERR_INVALID;
    if (m->nqueued >= m->o.max_queued)
        return HG_ERR_FULL;

    struct job *j = hg_xcalloc(1, sizeof(*j));
    j->m = m;
    j->cb = cb;
    j->arg = arg;
    j->tenant = tenant_get(m, job->tenant);
    j->access_token = hg_xstrdup(job->access_token);
    j->media_id = hg_xstrdup(job->media_id);
    j->message_id = hg_xstrdup(job->message_id);
    j->declared_mime = hg_xstrdup(job->mime_type);
    j->declared_sha = hg_xstrdup(job->sha256);
    j->request_id = hg_xstrdup(job->request_id);
    size_t alen = strlen(job->access_token) + 8;
    j->auth_header = hg_xmalloc(alen);
    snprintf(j->auth_header, alen, "Bearer %s", job->access_token);
    j->type = job->media_type;
    j->occurred_at_s = job->occurred_at_s;
    j->created_ns = hg_time_mono_ns();
    uv_timer_init(m->loop, &j->timer);
    m->jobs_alive++;
    j->next = m->jobs;
    if (m->jobs != NULL)
        m->jobs->prev = j;
    m->jobs = j;
    queue_push(m, j, false);
    /*
     * Start from the loop, not here: the callback must never run inside this call, and a job
     * whose first request is refused would finish at once.
     */
    kick(m);
    return 0;
}

void hg_media_close(struct hg_media *m, void (*on_closed)(void *arg), void *arg)
{
    if (m->closing)
        return;
    m->closing = true;
    m->on_closed = on_closed;
    m->on_closed_arg = arg;
    uv_timer_stop(&m->handle);
    uv_close((uv_handle_t *)&m->handle, on_media_handle_closed);
    /* Each round handles one job; callbacks may change the list, so start over every time. */
    for (;;) {
        struct job *j = m->jobs;
        while (j != NULL && j->close_seen)
            j = j->next;
        if (j == NULL)
            break;
        j->close_seen = true;
        if (j->state == JOB_QUEUED || j->state == JOB_BACKOFF) {
            uv_timer_stop(&j->timer);
            finish(j, HG_MEDIA_RETRY, "shutdown");
            continue;
        }
        j->depth++;
        fail(j, FAIL_SHUTDOWN, "shutdown");
        j->depth--;
        settle(j); /* may finish j; if an S3 call is in flight it finishes when that returns */
    }
}

json_t *hg_media_result_json(const struct hg_media_result *res)
{
    json_t *o = json_object();
    json_object_set_new(o, "media_id", json_string(res->media_id ? res->media_id : ""));
    json_object_set_new(o, "type", json_string(hg_media_type_name(res->media_type)));
    if (res->status == HG_MEDIA_STORED) {
        char at[40];
        hg_time_rfc3339(at, sizeof(at), res->expires_at_s * 1000000000ull, 0);
        json_object_set_new(o, "bucket", json_string(res->bucket));
        json_object_set_new(o, "key", json_string(res->key));
        json_object_set_new(o, "mime_type", json_string(res->mime_type));
        json_object_set_new(o, "size", json_integer((json_int_t)res->size));
        json_object_set_new(o, "sha256", json_string(res->sha256));
        json_object_set_new(o, "url", json_string(res->url));
        json_object_set_new(o, "expires_at", json_string(at));
    } else {
        json_object_set_new(o, "error", json_string(res->error ? res->error : "download_failed"));
    }
    return o;
}

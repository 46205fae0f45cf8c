/*
 * Media jobs: (Graph API metadata for a WhatsApp media id) → streamed download of the file's URL
 * (size cap, magic number, SHA-256, optional clamd INSTREAM scan) → S3 (one PUT, or multipart for
 * big files) → presigned GET URL.
 *
 * This file is the job lifecycle and the public API; the work of one attempt is in three more
 * files (shared state in media_internal.h): graph.c (the Graph API step, Graph jobs only),
 * download.c (the stream into parts) and store.c (clamd INSTREAM, then S3: PUT or multipart).
 *
 * Sections, in order: opening and options; tenants, slots, queue (per-tenant concurrency);
 * freeing; finishing (the result and its callback); failure and settling (retry or give up);
 * starting jobs, fetch and close.
 */
#include <stdio.h>
#include <string.h>

#include <mbedtls/sha256.h>

#include "core/backoff.h"
#include "core/common.h"
#include "core/err.h"
#include "core/log.h"
#include "core/str.h"
#include "core/time.h"
#include "media/media.h"
#include "media/media_internal.h"
#include "ops/metrics.h"

#define MS 1000000ull

static void pump(struct hg_media *m);

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
    hg_list_init(&m->jobs);
    hg_list_init(&m->queue);
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
    if (front)
        hg_list_insert_head(&m->queue, &j->qlink);
    else
        hg_list_insert_tail(&m->queue, &j->qlink);
    m->nqueued++;
}

static void queue_remove(struct hg_media *m, struct job *j)
{
    if (!hg_list_linked(&j->qlink))
        return;
    hg_list_unlink(&j->qlink);
    m->nqueued--;
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

void media_part_unref(struct job *j, struct part *p)
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
        media_part_unref(j, p);
    }
    j->upq_tail = NULL;
    media_part_unref(j, j->cur);
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
    free(j->src_url);
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

void media_finish(struct job *j, enum hg_media_status status, const char *error)
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
    hg_list_unlink(&j->link);

    j->cb(j->arg, &r);
    if (!m->closing)
        pump(m);
    job_free(j);
}

/* ---- failure and settling ---- */

void media_fail(struct job *j, enum fail_kind kind, const char *error)
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
    media_pipe_close(j);
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
    /* full jitter (never zero); attempts counts the attempt that just failed, from 1 */
    const struct hg_backoff policy = {
        .base_ms = m->o.backoff_base_ms,
        .max_ms = m->o.backoff_max_ms,
        .jitter = HG_BACKOFF_FULL,
    };
    return hg_backoff_ms(&policy, j->attempts - 1, rnd(m));
}

/* Once a failed attempt has nothing in flight: clean up S3, then retry or report. */
void media_settle(struct job *j)
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
        int rc = hg_s3_multipart_abort(m->s3, m->bucket, j->key, id, media_on_s3, j);
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
    media_finish(j, j->fail == FAIL_FINAL ? HG_MEDIA_FAILED : HG_MEDIA_RETRY,
           j->fail == FAIL_SHUTDOWN ? "shutdown" : j->error);
}

/* Classify an HTTP answer that is not a 2xx. */
void media_fail_status(struct job *j, long status, const char *retry_after)
{
    if (status == 401 || status == 403) {
        media_fail(j, FAIL_FINAL, "unauthorized");
    } else if (status == 404 || status == 410) {
        media_fail(j, FAIL_FINAL, "not_found");
    } else if (status == 429 || status == 408 || status >= 500) {
        int64_t secs;
        if (retry_after != NULL && hg_str_to_i64(retry_after, 0, 86400, &secs) == 0) {
            j->retry_after_ms = (uint64_t)secs * 1000;
            j->retry_after_set = true;
        }
        media_fail(j, FAIL_TRANSIENT, "download_failed");
    } else {
        media_fail(j, FAIL_FINAL, "download_failed");
    }
}

/* ---- starting jobs, fetch and close ---- */

/* Start queued jobs while the worker and their tenants have free slots. */
static void pump(struct hg_media *m)
{
    struct hg_list *pos = hg_list_first(&m->queue);
    while (pos != NULL && m->running < m->o.max_inflight && !m->closing) {
        struct job *j = hg_list_entry(pos, struct job, qlink);
        if (j->tenant->running >= m->o.max_inflight_tenant) {
            pos = hg_list_next(&m->queue, pos);
            continue;
        }
        hg_list_unlink(&j->qlink);
        m->nqueued--;
        j->state = JOB_RUNNING;
        m->running++;
        j->tenant->running++;
        m->max_running = HG_MAX(m->max_running, m->running);
        m->max_running_tenant = HG_MAX(m->max_running_tenant, (size_t)j->tenant->running);
        media_attempt_start(j);
        /* media_attempt_start may have finished j (and run pump) already: restart from the head */
        pos = hg_list_first(&m->queue);
    }
}

static void on_kick(uv_timer_t *t)
{
    struct hg_media *m = HG_CONTAINER_OF(t, struct hg_media, handle);
    pump(m);
    /* advance may finish a job (unlinking it): start over after each one */
    for (bool again = true; again && !m->closing;) {
        again = false;
        struct hg_list *pos;
        HG_LIST_FOREACH(pos, &m->jobs) {
            struct job *j = hg_list_entry(pos, struct job, link);
            if (!j->want_advance)
                continue;
            j->want_advance = false;
            if (j->state == JOB_RUNNING && j->fail == FAIL_NONE) {
                media_advance(j);
                again = true;
                break;
            }
        }
    }
}

/* Run on_kick from the loop soon (a zero timer: after this callback chain unwinds). */
void media_kick(struct hg_media *m)
{
    if (!m->closing && !uv_is_active((uv_handle_t *)&m->handle))
        uv_timer_start(&m->handle, on_kick, 0, 0);
}

static bool nonempty(const char *s)
{
    return s != NULL && *s != '\0';
}

/* Either a Graph job (access token, no url) or a URL job (http(s) url, no access token). */
static bool source_valid(const struct hg_media_job *job)
{
    if (job->url == NULL)
        return nonempty(job->access_token) && job->authorization == NULL;
    if (job->access_token != NULL || strlen(job->url) >= URL_MAX ||
        (strncmp(job->url, "http://", 7) != 0 && strncmp(job->url, "https://", 8) != 0))
        return false;
    /* refused here rather than by hg_http at every attempt */
    return job->authorization == NULL || strpbrk(job->authorization, "\r\n") == NULL;
}

int hg_media_fetch(struct hg_media *m, const struct hg_media_job *job, hg_media_cb cb, void *arg)
{
    if (m->closing)
        return HG_ERR_CLOSED;
    if (cb == NULL || !nonempty(job->tenant) || !source_valid(job) || !nonempty(job->media_id) ||
        !nonempty(job->message_id) || (unsigned)job->media_type >= HG_MEDIA_NTYPES)
        return HG_ERR_INVALID;
    if (m->nqueued >= m->o.max_queued)
        return HG_ERR_FULL;

    struct job *j = hg_xcalloc(1, sizeof(*j));
    j->m = m;
    j->cb = cb;
    j->arg = arg;
    j->tenant = tenant_get(m, job->tenant);
    j->media_id = hg_xstrdup(job->media_id);
    j->message_id = hg_xstrdup(job->message_id);
    j->declared_mime = hg_xstrdup(job->mime_type);
    j->declared_sha = hg_xstrdup(job->sha256);
    j->request_id = hg_xstrdup(job->request_id);
    if (job->url != NULL) {
        j->by_url = true;
        j->src_url = hg_xstrdup(job->url);
        j->auth_header = hg_xstrdup(job->authorization); /* NULL stays NULL: no header */
    } else {
        j->access_token = hg_xstrdup(job->access_token);
        size_t alen = strlen(job->access_token) + 8;
        j->auth_header = hg_xmalloc(alen);
        snprintf(j->auth_header, alen, "Bearer %s", job->access_token);
    }
    j->type = job->media_type;
    j->occurred_at_s = job->occurred_at_s;
    j->created_ns = hg_time_mono_ns();
    uv_timer_init(m->loop, &j->timer);
    m->jobs_alive++;
    hg_list_insert_head(&m->jobs, &j->link);
    queue_push(m, j, false);
    /*
     * Start from the loop, not here: the callback must never run inside this call, and a job
     * whose first request is refused would finish at once.
     */
    media_kick(m);
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
        struct job *j = NULL;
        struct hg_list *pos;
        HG_LIST_FOREACH(pos, &m->jobs) {
            struct job *x = hg_list_entry(pos, struct job, link);
            if (!x->close_seen) {
                j = x;
                break;
            }
        }
        if (j == NULL)
            break;
        j->close_seen = true;
        if (j->state == JOB_QUEUED || j->state == JOB_BACKOFF) {
            uv_timer_stop(&j->timer);
            media_finish(j, HG_MEDIA_RETRY, "shutdown");
            continue;
        }
        j->depth++;
        media_fail(j, FAIL_SHUTDOWN, "shutdown");
        j->depth--;
        /* may finish j; if an S3 call is in flight it finishes when that returns */
        media_settle(j);
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

/*
 * Media jobs, the storing side of one attempt: the downloaded parts go to clamd (INSTREAM over its
 * Unix socket, when configured) and to S3 (one PUT, or multipart begin/part/complete, abort on
 * failure). Separate from the job lifecycle (media.c) and from the download (download.c); what
 * they share is in media_internal.h.
 */
#include <string.h>

#include <uv.h>

#include "core/common.h"
#include "core/err.h"
#include "core/log.h"
#include "core/str.h"
#include "core/time.h"
#include "media/media.h"
#include "media/media_internal.h"

/* Chunks sent to clamd: its INSTREAM quota is per stream, but smaller chunks keep it streaming. */
#define CLAMD_CHUNK (256 * 1024)

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
    media_settle(j);
    if (j->state == JOB_RUNNING && j->fail == FAIL_NONE)
        media_advance(j);
}

void media_pipe_close(struct job *j)
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
        media_fail(j, FAIL_FINAL, "infected");
    } else if (n >= 4 && strcmp(j->reply + n - 4, ": OK") == 0 && j->scan_terminated) {
        j->scan = SCAN_CLEAN;
        media_pipe_close(j);
    } else {
        j->scan = SCAN_DONE_BAD;
        hg_warn(j->request_id, "media: scan failed", "reply", j->reply, NULL);
        media_fail(j, FAIL_TRANSIENT, "scan_failed");
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
            media_fail(j, FAIL_TRANSIENT, "scan_failed");
        }
    }
    j->depth--;
    media_settle(j);
    if (j->state == JOB_RUNNING && j->fail == FAIL_NONE)
        media_advance(j);
}

static void on_scan_written(uv_write_t *req, int status)
{
    struct scan_write *w = HG_CONTAINER_OF(req, struct scan_write, req);
    struct job *j = w->j;
    j->scan_writes--;
    media_part_unref(j, w->part);
    free(w->prefixes);
    free(w->bufs);
    free(w);
    if (status < 0 && status != UV_ECANCELED && j->scan == SCAN_SENDING) {
        j->depth++;
        media_fail(j, FAIL_TRANSIENT, "scan_failed");
        j->depth--;
        media_settle(j);
        return;
    }
    if (j->state == JOB_RUNNING && j->fail == FAIL_NONE)
        media_advance(j);
}

static void on_scan_connected(uv_connect_t *req, int status)
{
    struct job *j = HG_CONTAINER_OF(req, struct job, connect_req);
    if (status == UV_ECANCELED)
        return;
    j->depth++;
    if (status < 0) {
        hg_warn(j->request_id, "media: clamd unreachable", "error", uv_strerror(status), NULL);
        media_fail(j, FAIL_TRANSIENT, "scan_failed");
    } else if (uv_read_start((uv_stream_t *)&j->pipe, on_reply_alloc, on_reply) < 0) {
        media_fail(j, FAIL_TRANSIENT, "scan_failed");
    }
    j->depth--;
    media_settle(j);
}

static void on_scan_timeout(uv_timer_t *t)
{
    struct job *j = HG_CONTAINER_OF(t, struct job, timer);
    j->timer_for_scan = false;
    j->depth++;
    media_fail(j, FAIL_TRANSIENT, "scan_failed");
    j->depth--;
    media_settle(j);
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
        media_part_unref(j, w->part);
        free(w->prefixes);
        free(w->bufs);
        free(w);
        return 0;
    }
    /* libuv queues writes on a stream that is still connecting and flushes them once it is. */
    int rc = uv_write(&w->req, (uv_stream_t *)&j->pipe, w->bufs, (unsigned)w->nbufs,
                      on_scan_written);
    if (rc < 0) {
        media_part_unref(j, w->part);
        free(w->prefixes);
        free(w->bufs);
        free(w);
        return rc;
    }
    j->scan_writes++;
    return 0;
}

/* Send a part (or, with last, also the terminator) to clamd; connect on first use. */
void media_scan_send(struct job *j, struct part *p, bool last)
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
    media_fail(j, FAIL_TRANSIENT, "scan_failed");
}

/* ---- S3 ---- */

/* x-amz-meta-* headers of the object; returns how many. */
static size_t build_meta(struct job *j, struct hg_http_header meta[4], char vals[4][SEGMENT_MAX])
{
    char hex[65] = "";
    unsigned char sum[32];
    if (j->sha_hex[0] != '\0') {
        memcpy(hex, j->sha_hex, sizeof(hex));
    } else {
        const char *declared = j->meta_sha ? j->meta_sha : j->declared_sha;
        if (declared != NULL && media_sha_decode(declared, sum))
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
void media_advance(struct job *j)
{
    struct hg_media *m = j->m;
    if (j->in_write) {
        /* curl refuses new transfers from inside a write callback (CURLM_RECURSIVE_API_CALL) */
        j->want_advance = true;
        media_kick(m);
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
                                       media_on_s3, j);
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
                                             p->buf.data, p->buf.len, media_on_s3, j);
        } else if (j->dl_done && scan_ok && j->netags == j->parts_pushed) {
            s3_started(j, S3_COMPLETE);
            rc = hg_s3_multipart_complete(m->s3, m->bucket, j->key, j->upload_id,
                                          (const char *const *)j->etags, (size_t)j->netags,
                                          media_on_s3, j);
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
                              media_on_s3, j);
    }
    if (rc < 0) {
        hg_warn(j->request_id, "media: s3 call refused", "error", hg_strerror(rc), NULL);
        j->s3_step = S3_NONE;
        /* a refused call is a bad key or metadata, which no retry fixes */
        j->depth++;
        media_fail(j, FAIL_FINAL, "upload_failed");
        j->depth--;
        media_settle(j);
    }
}

void media_on_s3(void *arg, const struct hg_s3_result *res)
{
    struct job *j = arg;
    enum s3_step step = j->s3_step;
    j->s3_step = S3_NONE;
    j->upload_ns += hg_time_mono_ns() - j->s3_started_ns;
    j->depth++;
    if (step == S3_PART) {
        media_part_unref(j, j->s3_part);
        j->s3_part = NULL;
    }
    if (step == S3_ABORT) {
        if (res->err != 0)
            hg_debug(j->request_id, "media: multipart abort failed", "error",
                     hg_strerror(res->err), NULL);
    } else if (res->err == HG_ERR_CLOSED || (res->err != 0 && j->m->closing)) {
        media_fail(j, FAIL_SHUTDOWN, "shutdown");
    } else if (res->err != 0) {
        hg_warn(j->request_id, "media: s3 failed", "error", hg_strerror(res->err), "code",
                res->code, NULL);
        /*
         * Storage trouble is ours, never the sender's: even a refusal (wrong key, missing
         * bucket) must not drop the media for good, so every S3 failure may be retried later.
         */
        media_fail(j, FAIL_TRANSIENT, "upload_failed");
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
        media_settle(j);
        return;
    }
    if (j->stored) {
        media_finish(j, HG_MEDIA_STORED, NULL);
        return;
    }
    media_advance(j);
}

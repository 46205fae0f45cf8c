/*
 * Media jobs, the download side of one attempt: the streamed download of the file's URL (a URL
 * job's own, or the one the Graph step resolved) into upload parts, checked on the way (size cap,
 * magic number, SHA-256) and named by its S3 key. Provider-neutral: the Graph API step is in
 * graph.c, the job lifecycle in media.c, where the parts go in store.c; what they share is in
 * media_internal.h.
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
#include "media/media_internal.h"

/* S3's limit on the number of parts of one upload. */
#define MAX_PARTS 10000

bool media_sha_decode(const char *s, unsigned char out[32])
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

/* The declared types (webhook and, for Graph jobs, the Graph API) all have to fit the bytes. */
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
    media_scan_send(j, p, false);
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
        media_advance(j); /* deferred to the loop: we are inside curl */
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
        /* canceled by media_fail(): already decided */
    } else if (resp->err == HG_ERR_CLOSED || m->closing) {
        media_fail(j, FAIL_SHUTDOWN, "shutdown");
    } else if (resp->status > 0 && (resp->status < 200 || resp->status > 299)) {
        media_fail_status(j, resp->status, resp->retry_after);
    } else if (j->verdict != FAIL_NONE) {
        media_fail(j, j->verdict, j->verdict_error);
    } else if (resp->err != 0) {
        media_fail(j, FAIL_TRANSIENT, "download_failed");
    } else {
        if (!j->sniffed)
            do_sniff(j);
        unsigned char sum[32], want[32];
        mbedtls_sha256_finish_ret(&j->sha, sum);
        hg_hex(j->sha_hex, sum, 32);
        const char *declared[2] = { j->meta_sha, j->declared_sha };
        if (j->verdict != FAIL_NONE) {
            media_fail(j, j->verdict, j->verdict_error);
        } else {
            for (int i = 0; i < 2 && j->fail == FAIL_NONE; i++)
                if (declared[i] != NULL && *declared[i] != '\0' &&
                    (!media_sha_decode(declared[i], want) || memcmp(want, sum, 32) != 0))
                    media_fail(j, FAIL_FINAL, "sha256_mismatch");
        }
        if (j->fail == FAIL_NONE) {
            j->dl_done = true;
            if (j->multipart) {
                if (j->cur != NULL && push_part(j) < 0)
                    media_fail(j, j->verdict, j->verdict_error);
                media_scan_send(j, NULL, true);
            } else {
                make_key(j);
                media_scan_send(j, j->cur, true);
            }
        }
    }
    j->depth--;
    media_settle(j);
    if (j->state == JOB_RUNNING && j->fail == FAIL_NONE)
        media_advance(j);
}

void media_download_start(struct job *j)
{
    struct hg_media *m = j->m;
    const struct hg_http_header hdrs[] = { { "Authorization", j->auth_header } };
    const struct hg_http_req req = {
        .url = j->url,
        .headers = hdrs,
        .nheaders = j->auth_header != NULL ? 1 : 0,
        .resp_write = on_data,
        .resp_write_arg = j,
        .connect_timeout_ms = m->o.connect_timeout_ms,
        .timeout_ms = m->o.download_timeout_ms,
        /* Graph download URLs are used as given (as before); a URL job's may redirect to storage,
         * and hg_http keeps the Authorization header on the first host */
        .max_redirects = j->by_url ? HG_MEDIA_MAX_REDIRECTS : 0,
    };
    mbedtls_sha256_starts_ret(&j->sha, 0);
    int rc = hg_http_request(m->http, &req, on_download, j);
    if (rc < 0) {
        media_fail(j, rc == HG_ERR_CLOSED ? FAIL_SHUTDOWN : FAIL_FINAL,
             rc == HG_ERR_CLOSED ? "shutdown" : "download_failed");
        return;
    }
    j->dl_pending = true;
}

void media_attempt_start(struct job *j)
{
    struct hg_media *m = j->m;
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
    hg_buf_init(&j->meta_body, 0);
    mbedtls_sha256_init(&j->sha);
    if (!j->by_url) {
        media_graph_start(j);
        return;
    }
    j->url = hg_xstrdup(j->src_url);
    j->depth++;
    media_download_start(j);
    j->depth--;
    media_settle(j);
}

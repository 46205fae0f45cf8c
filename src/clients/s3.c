/* S3 client: object and multipart calls over hg_http, signed by clients/sigv4, XML errors parsed. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "clients/s3.h"
#include "clients/sigv4.h"
#include "core/common.h"
#include "core/err.h"
#include "core/log.h"
#include "core/time.h"

/* S3 allows at most 2 KiB of user metadata; a handful of headers is all we ever send. */
#define MAX_META 16
/* Error and multipart XML answers are small; anything bigger is not one of them. */
#define XML_MAX (64 * 1024)
/* S3's limit on key length in bytes. */
#define KEY_MAX 1024
/* A URL is scheme, host, bucket, a key encoded at most 3x, and the presign query. */
#define URL_MAX (8 * 1024)
/*
 * Calls handed to hg_http at once (hg_s3_opts.max_inflight = 0); the rest wait in our own FIFO.
 * Without a bound every archived webhook is a curl transfer of its own the moment it is drained:
 * when S3 is slower than the intake (a backlog) that meant thousands of transfers, as many
 * connections and curl bookkeeping that is linear in their number on every transfer, all on the
 * worker's loop thread — which also answers the webhooks.
 */
#define DEFAULT_MAX_INFLIGHT 64

struct hg_s3 {
    struct hg_http *http;
    char *scheme;            /* "http" or "https" */
    char *host;              /* authority as in the endpoint: "127.0.0.1:14569" */
    char *region;
    char *access_key;
    char *secret_key;
    bool path_style;
    uint32_t connect_timeout_ms, timeout_ms;
    size_t pending;          /* accepted calls whose callback has not run (queued + in flight) */
    size_t inflight;         /* calls handed to hg_http */
    size_t max_inflight;
    struct s3_op *queue_head, *queue_tail; /* accepted, waiting for an in-flight slot */
};

enum op_kind {
    OP_PLAIN,        /* status and headers are the whole answer */
    OP_ENSURE_HEAD,  /* ensure_bucket, step 1: does it exist? */
    OP_ENSURE_PUT,   /* ensure_bucket, step 2: create it */
    OP_GET,          /* the body is the result */
    OP_BEGIN,        /* the body carries <UploadId> */
    OP_COMPLETE,     /* a 200 may still carry <Error> */
};

struct s3_op {
    struct hg_s3 *s3;
    enum op_kind kind;
    hg_s3_cb cb;
    void *arg;
    size_t get_max;           /* OP_GET: the caller's cap on the object */
    char *bucket;             /* OP_ENSURE_*: for step 2 */
    struct hg_buf resp;       /* response body (capped) */
    struct hg_buf req_body;   /* XML we send (complete, create bucket); must outlive the request */
    struct hg_s3_result res;
    /* While queued: the request to send, its strings owned here (see args_keep). */
    struct send_args *args;
    struct s3_op *queue_next;
};

/* What one signed request consists of; strings only need to live during op_send. */
struct send_args {
    const char *method;
    const char *bucket;
    const char *key;          /* NULL for bucket calls */
    const char *query;        /* already encoded, NULL for none */
    const char *content_type;
    const struct hg_http_header *meta;
    size_t nmeta;
    const void *body;
    size_t len;
    hg_http_read_fn read;
    void *read_arg;
    int64_t read_len;
};

static bool valid_bucket(const char *b)
{
    size_t n = b ? strlen(b) : 0;
    if (n < 3 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = b[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.'))
            return false;
    }
    return true;
}

static bool valid_key(const char *k)
{
    size_t n = k ? strlen(k) : 0;
    return n > 0 && n <= KEY_MAX;
}

static bool valid_meta(const struct hg_http_header *meta, size_t nmeta)
{
    if (nmeta > MAX_META || (nmeta > 0 && meta == NULL))
        return false;
    for (size_t i = 0; i < nmeta; i++) {
        if (meta[i].name == NULL || meta[i].value == NULL ||
            strncasecmp(meta[i].name, "x-amz-meta-", 11) != 0 || meta[i].name[11] == '\0')
            return false;
        for (const char *p = meta[i].value; *p; p++)
            if (*p < 0x20 || *p > 0x7e)
                return false; /* S3 metadata headers carry ASCII only */
    }
    return true;
}

int hg_s3_check(const char *ep, const char *access_key, const char *secret_key, char *why, size_t wl)
{
    if (ep == NULL) {
        snprintf(why, wl, "no endpoint");
        return HG_ERR_CONFIG;
    }
    if (access_key == NULL || secret_key == NULL || !access_key[0] || !secret_key[0]) {
        snprintf(why, wl, "access_key and secret_key are needed (every request is signed)");
        return HG_ERR_CONFIG;
    }
    const char *rest = strncmp(ep, "http://", 7) == 0 ? ep + 7 : strncmp(ep, "https://", 8) == 0 ? ep + 8 : NULL;
    if (rest == NULL) {
        snprintf(why, wl, "endpoint must start with http:// or https://");
        return HG_ERR_CONFIG;
    }
    size_t hlen = strcspn(rest, "/?#");
    /* A base path would have to be part of every signature; S3 endpoints have none. */
    if (hlen == 0 || (rest[hlen] != '\0' && strcmp(rest + hlen, "/") != 0)) {
        snprintf(why, wl, "endpoint must be scheme://host[:port] (no path, query or fragment)");
        return HG_ERR_CONFIG;
    }
    return 0;
}

int hg_s3_set_keys(struct hg_s3 *s3, const char *access_key, const char *secret_key)
{
    if (access_key == NULL || secret_key == NULL || !access_key[0] || !secret_key[0])
        return HG_ERR_CONFIG;
    /* Ops sign when they start (the queue included), from these fields: swapping them here, on
     * the loop thread that runs the ops, is all a new key needs. */
    explicit_bzero(s3->secret_key, strlen(s3->secret_key));
    free(s3->access_key);
    free(s3->secret_key);
    s3->access_key = hg_xstrdup(access_key);
    s3->secret_key = hg_xstrdup(secret_key);
    return 0;
}

int hg_s3_open(struct hg_http *http, const struct hg_s3_opts *opts, struct hg_s3 **out)
{
    const char *ep = opts->endpoint;
    char why[160];
    if (hg_s3_check(ep, opts->access_key, opts->secret_key, why, sizeof why) != 0)
        return HG_ERR_CONFIG;
    const char *scheme = strncmp(ep, "https://", 8) == 0 ? "https" : "http";
    const char *rest = ep + strlen(scheme) + 3;
    size_t hlen = strcspn(rest, "/?#");

    struct hg_s3 *s3 = hg_xcalloc(1, sizeof(*s3));
    s3->http = http;
    s3->scheme = hg_xstrdup(scheme);
    s3->host = hg_xstrndup(rest, hlen);
    for (char *p = s3->host; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    s3->region = hg_xstrdup(opts->region ? opts->region : "us-east-1");
    s3->access_key = hg_xstrdup(opts->access_key);
    s3->secret_key = hg_xstrdup(opts->secret_key);
    s3->path_style = opts->path_style;
    s3->connect_timeout_ms = opts->connect_timeout_ms;
    s3->timeout_ms = opts->timeout_ms;
    s3->max_inflight = opts->max_inflight ? opts->max_inflight : DEFAULT_MAX_INFLIGHT;
    *out = s3;
    return 0;
}

static void op_fail(struct s3_op *op, int err);

void hg_s3_close(struct hg_s3 *s3)
{
    if (s3 == NULL)
        return;
    /* Calls still waiting for a slot never reached hg_http: they end here. */
    while (s3->queue_head != NULL) {
        struct s3_op *op = s3->queue_head;
        s3->queue_head = op->queue_next;
        if (s3->queue_head == NULL)
            s3->queue_tail = NULL;
        op_fail(op, HG_ERR_CLOSED);
    }
    if (s3->pending != 0)
        hg_warn(NULL, "s3: closed with calls pending", NULL);
    free(s3->scheme);
    free(s3->host);
    free(s3->region);
    free(s3->access_key);
    if (s3->secret_key != NULL)
        memset(s3->secret_key, 0, strlen(s3->secret_key));
    free(s3->secret_key);
    free(s3);
}

size_t hg_s3_pending(const struct hg_s3 *s3)
{
    return s3->pending;
}

bool hg_s3_retryable(const struct hg_s3_result *res)
{
    if (res->err == 0)
        return false;
    if (res->err == HG_ERR_UNAVAILABLE || res->err == HG_ERR_TIMEOUT ||
        res->err == HG_ERR_PROTOCOL)
        return true;
    if (res->status >= 500 || res->status == 429 || res->status == 408)
        return true;
    static const char *const transient[] = { "SlowDown", "InternalError", "RequestTimeout",
                                             "ServiceUnavailable", "RequestTimeTooSkewed" };
    for (size_t i = 0; i < HG_ARRAY_SIZE(transient); i++)
        if (strcmp(res->code, transient[i]) == 0)
            return true;
    return false;
}

/* Text of the first <tag>...</tag> in xml, entities decoded, into out (cut at cap). */
static bool xml_value(const char *xml, size_t len, const char *tag, char *out, size_t cap)
{
    char open[64], close[64];
    snprintf(open, sizeof(open), "<%s>", tag);
    snprintf(close, sizeof(close), "</%s>", tag);
    const char *s = memmem(xml, len, open, strlen(open));
    if (s == NULL)
        return false;
    s += strlen(open);
    const char *e = memmem(s, len - (size_t)(s - xml), close, strlen(close));
    if (e == NULL)
        return false;
    static const struct { const char *ent; char c; } ents[] = {
        { "&quot;", '"' }, { "&amp;", '&' }, { "&lt;", '<' }, { "&gt;", '>' }, { "&apos;", '\'' },
        { "&#34;", '"' },
    };
    size_t o = 0;
    while (s < e && o + 1 < cap) {
        bool done = false;
        if (*s == '&') {
            for (size_t i = 0; i < HG_ARRAY_SIZE(ents); i++) {
                size_t n = strlen(ents[i].ent);
                if ((size_t)(e - s) >= n && memcmp(s, ents[i].ent, n) == 0) {
                    out[o++] = ents[i].c;
                    s += n;
                    done = true;
                    break;
                }
            }
        }
        if (!done)
            out[o++] = *s++;
    }
    out[o] = '\0';
    return true;
}

/* Append "&", "<", ">" escaped (ETags carry quotes, which element text may hold as they are). */
static int xml_escape(struct hg_buf *b, const char *s)
{
    int rc = 0;
    for (; *s && rc == 0; s++) {
        switch (*s) {
        case '&': rc = hg_buf_append(b, "&amp;", 5); break;
        case '<': rc = hg_buf_append(b, "&lt;", 4); break;
        case '>': rc = hg_buf_append(b, "&gt;", 4); break;
        default: rc = hg_buf_append(b, s, 1); break;
        }
    }
    return rc;
}

static struct s3_op *op_new(struct hg_s3 *s3, enum op_kind kind, hg_s3_cb cb, void *arg)
{
    struct s3_op *op = hg_xcalloc(1, sizeof(*op));
    op->s3 = s3;
    op->kind = kind;
    op->cb = cb;
    op->arg = arg;
    hg_buf_init(&op->resp, XML_MAX);
    hg_buf_init(&op->req_body, XML_MAX);
    return op;
}

static void args_free(struct send_args *a)
{
    if (a == NULL)
        return;
    free((char *)a->bucket);
    free((char *)a->key);
    free((char *)a->query);
    free((char *)a->content_type);
    for (size_t i = 0; i < a->nmeta; i++) {
        free((char *)a->meta[i].name);
        free((char *)a->meta[i].value);
    }
    free((struct hg_http_header *)a->meta);
    free(a);
}

static char *dup_or_null(const char *s)
{
    return s ? hg_xstrdup(s) : NULL;
}

/*
 * A queued call is signed when it is sent (a signature is only good for minutes), so it keeps its
 * own copies of the strings, which the caller only had to keep during the call. The method is
 * always a literal; bodies and stream readers are the caller's until the callback, as documented.
 */
static void args_keep(struct s3_op *op, const struct send_args *a)
{
    struct send_args *k = hg_xcalloc(1, sizeof(*k));
    *k = *a;
    k->bucket = dup_or_null(a->bucket);
    k->key = dup_or_null(a->key);
    k->query = dup_or_null(a->query);
    k->content_type = dup_or_null(a->content_type);
    if (a->nmeta > 0) {
        struct hg_http_header *m = hg_xcalloc(a->nmeta, sizeof(*m));
        for (size_t i = 0; i < a->nmeta; i++) {
            m[i].name = hg_xstrdup(a->meta[i].name);
            m[i].value = hg_xstrdup(a->meta[i].value);
        }
        k->meta = m;
    } else {
        k->meta = NULL;
    }
    op->args = k;
}

static void op_free(struct s3_op *op)
{
    hg_buf_free(&op->resp);
    hg_buf_free(&op->req_body);
    free(op->bucket);
    args_free(op->args);
    free(op);
}

static void on_http_done(void *arg, const struct hg_http_resp *resp);
static void queue_pump(struct hg_s3 *s3);

/* Build, sign and start one request for op. 0 or <0 (then nothing was started). */
static int op_send(struct s3_op *op, const struct send_args *a)
{
    struct hg_s3 *s3 = op->s3;
    struct hg_buf host, path, url, auth;
    char date[HG_SIGV4_DATE_LEN], payload[65];
    int rc;

    hg_buf_init(&host, 512);
    hg_buf_init(&path, URL_MAX);
    hg_buf_init(&url, URL_MAX);
    hg_buf_init(&auth, 4096);

    if (s3->path_style) {
        rc = hg_buf_appendf(&host, "%s", s3->host);
        if (rc == 0)
            rc = hg_buf_appendf(&path, "/%s", a->bucket);
        if (rc == 0 && a->key != NULL)
            rc = hg_buf_append(&path, "/", 1);
    } else {
        rc = hg_buf_appendf(&host, "%s.%s", a->bucket, s3->host);
        if (rc == 0)
            rc = hg_buf_append(&path, "/", 1);
    }
    if (rc == 0 && a->key != NULL)
        rc = hg_sigv4_uri_encode(&path, a->key, strlen(a->key), true);
    if (rc == 0)
        rc = hg_buf_appendf(&url, "%s://%s%s%s%s", s3->scheme, host.data, path.data,
                            a->query ? "?" : "", a->query ? a->query : "");
    if (rc < 0)
        goto out;

    hg_sigv4_date(hg_time_now_ns() / 1000000000u, date);
    if (a->read != NULL)
        memcpy(payload, HG_SIGV4_UNSIGNED, sizeof(HG_SIGV4_UNSIGNED));
    else
        hg_sigv4_sha256_hex(a->body ? a->body : "", a->body ? a->len : 0, payload);

    /* The signed set is exactly what goes on the wire (besides Content-Length and friends). */
    struct hg_sigv4_header sh[4 + MAX_META];
    size_t ns = 0;
    sh[ns++] = (struct hg_sigv4_header){ "host", host.data };
    sh[ns++] = (struct hg_sigv4_header){ "x-amz-date", date };
    sh[ns++] = (struct hg_sigv4_header){ "x-amz-content-sha256", payload };
    if (a->content_type != NULL)
        sh[ns++] = (struct hg_sigv4_header){ "content-type", a->content_type };
    for (size_t i = 0; i < a->nmeta; i++)
        sh[ns++] = (struct hg_sigv4_header){ a->meta[i].name, a->meta[i].value };
    const struct hg_sigv4_creds creds = { s3->access_key, s3->secret_key, s3->region, "s3" };
    const struct hg_sigv4_req sreq = {
        .method = a->method, .path = path.data, .query = a->query,
        .headers = sh, .nheaders = ns, .payload_hash = payload,
    };
    if ((rc = hg_sigv4_authorization(&creds, date, &sreq, &auth, NULL)) < 0)
        goto out;

    struct hg_http_header hh[5 + MAX_META];
    size_t nh = 0;
    hh[nh++] = (struct hg_http_header){ "Host", host.data };
    hh[nh++] = (struct hg_http_header){ "x-amz-date", date };
    hh[nh++] = (struct hg_http_header){ "x-amz-content-sha256", payload };
    hh[nh++] = (struct hg_http_header){ "Authorization", auth.data };
    /* NULL suppresses the form content type curl would add to a POST (it is not signed). */
    hh[nh++] = (struct hg_http_header){ "Content-Type", a->content_type };
    for (size_t i = 0; i < a->nmeta; i++)
        hh[nh++] = a->meta[i];

    hg_buf_reset(&op->resp);
    op->resp.max = op->kind == OP_GET ? HG_MAX(op->get_max, (size_t)XML_MAX) : XML_MAX;
    const struct hg_http_req req = {
        .method = a->method, .url = url.data, .headers = hh, .nheaders = nh,
        .body = a->read ? NULL : a->body, .body_len = a->read ? 0 : a->len,
        .body_read = a->read, .body_read_arg = a->read_arg, .body_read_len = a->read_len,
        .resp_body = &op->resp,
        .connect_timeout_ms = s3->connect_timeout_ms, .timeout_ms = s3->timeout_ms,
    };
    rc = hg_http_request(s3->http, &req, on_http_done, op);
out:
    hg_buf_free(&host);
    hg_buf_free(&path);
    hg_buf_free(&url);
    hg_buf_free(&auth);
    return rc;
}

static int create_bucket(struct s3_op *op)
{
    struct send_args a = { .method = "PUT", .bucket = op->bucket };
    hg_buf_reset(&op->req_body);
    /* us-east-1 is the default location and S3 refuses it spelled out. */
    if (strcmp(op->s3->region, "us-east-1") != 0) {
        int rc = hg_buf_appendf(&op->req_body,
                                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/"
                                "2006-03-01/\"><LocationConstraint>%s</LocationConstraint>"
                                "</CreateBucketConfiguration>", op->s3->region);
        if (rc < 0)
            return rc;
        a.body = op->req_body.data;
        a.len = op->req_body.len;
    }
    op->kind = OP_ENSURE_PUT;
    return op_send(op, &a);
}

static int status_err(long status)
{
    if (status >= 200 && status < 300)
        return 0;
    if (status == 404)
        return HG_ERR_NOT_FOUND;
    if (status >= 500 || status == 429 || status == 408)
        return HG_ERR_UNAVAILABLE;
    return HG_ERR_REJECTED;
}

static void on_http_done(void *arg, const struct hg_http_resp *resp)
{
    struct s3_op *op = arg;
    struct hg_s3 *s3 = op->s3;
    struct hg_s3_result *res = &op->res;
    const char *body = op->resp.data ? op->resp.data : "";
    size_t blen = op->resp.len;

    memset(res, 0, sizeof(*res));
    res->status = resp->status;
    snprintf(res->etag, sizeof(res->etag), "%s", resp->etag);
    snprintf(res->retry_after, sizeof(res->retry_after), "%s", resp->retry_after);
    if (resp->err != 0) {
        res->err = resp->err;
        goto done;
    }
    res->err = status_err(resp->status);
    bool is_error_xml = res->err != 0 || (op->kind == OP_COMPLETE && memmem(body, blen, "<Error>", 7));
    if (is_error_xml)
        xml_value(body, blen, "Code", res->code, sizeof(res->code));
    /* CompleteMultipartUpload may answer 200 with an <Error> inside; transient codes retry. */
    if (is_error_xml && res->code[0] != '\0') {
        struct hg_s3_result probe = { .err = HG_ERR_REJECTED };
        memcpy(probe.code, res->code, sizeof(probe.code));
        if (hg_s3_retryable(&probe))
            res->err = HG_ERR_UNAVAILABLE;
        else if (res->err == 0)
            res->err = HG_ERR_REJECTED;
    }

    switch (op->kind) {
    case OP_ENSURE_HEAD:
        if (res->status == 404) {
            int rc = create_bucket(op);
            if (rc == 0)
                return; /* step 2 runs; this callback comes again */
            res->err = rc;
        }
        break;
    case OP_ENSURE_PUT:
        if (res->status == 409 && strcmp(res->code, "BucketAlreadyOwnedByYou") == 0)
            res->err = 0;
        break;
    case OP_GET:
        if (res->err == 0 && op->resp.len > op->get_max)
            res->err = HG_ERR_TOO_BIG;
        if (res->err == 0)
            res->body = &op->resp;
        break;
    case OP_BEGIN:
        if (res->err == 0 && !xml_value(body, blen, "UploadId", res->upload_id,
                                        sizeof(res->upload_id)))
            res->err = HG_ERR_PROTOCOL;
        break;
    default:
        break;
    }
done:
    if (res->err != 0)
        hg_debug(NULL, "s3 call failed", "error", hg_strerror(res->err), "code", res->code, NULL);
    s3->pending--;
    s3->inflight--;
    /*
     * Looked at before the callback: with nothing queued, the callback may close the client (no
     * call pending), and any call it makes finds the free slot itself.
     */
    bool queued = s3->queue_head != NULL;
    op->cb(op->arg, res);
    op_free(op);
    /* The freed slot goes to the oldest waiting call (calls the callback made queue behind it). */
    if (queued)
        queue_pump(s3);
}

/* A call that was accepted but could not be sent: its callback runs now, with err. */
static void op_fail(struct s3_op *op, int err)
{
    memset(&op->res, 0, sizeof(op->res));
    op->res.err = err;
    op->s3->pending--;
    hg_debug(NULL, "s3 call failed", "error", hg_strerror(err), NULL);
    op->cb(op->arg, &op->res);
    op_free(op);
}

/*
 * Send waiting calls while there are free slots. Runs only from on_http_done, never inside a
 * caller's hg_s3_* call, so a queued call's failure can be reported through its callback.
 */
static void queue_pump(struct hg_s3 *s3)
{
    while (s3->queue_head != NULL && s3->inflight < s3->max_inflight) {
        struct s3_op *op = s3->queue_head;
        s3->queue_head = op->queue_next;
        if (s3->queue_head == NULL)
            s3->queue_tail = NULL;
        op->queue_next = NULL;
        int rc = op_send(op, op->args);
        if (rc < 0) {
            op_fail(op, rc);
            continue;
        }
        s3->inflight++;
    }
}

/*
 * Start op with a, or queue it when max_inflight calls are out already. On failure (only
 * possible when it is sent at once) free it: the caller's callback then never runs.
 */
static int op_start(struct s3_op *op, const struct send_args *a)
{
    struct hg_s3 *s3 = op->s3;
    if (s3->inflight >= s3->max_inflight || s3->queue_head != NULL) {
        args_keep(op, a);
        if (s3->queue_tail != NULL)
            s3->queue_tail->queue_next = op;
        else
            s3->queue_head = op;
        s3->queue_tail = op;
        s3->pending++;
        return 0;
    }
    int rc = op_send(op, a);
    if (rc < 0) {
        op_free(op);
        return rc;
    }
    s3->pending++;
    s3->inflight++;
    return 0;
}

int hg_s3_ensure_bucket(struct hg_s3 *s3, const char *bucket, hg_s3_cb cb, void *arg)
{
    if (!valid_bucket(bucket) || cb == NULL)
        return HG_ERR_INVALID;
    struct s3_op *op = op_new(s3, OP_ENSURE_HEAD, cb, arg);
    op->bucket = hg_xstrdup(bucket);
    const struct send_args a = { .method = "HEAD", .bucket = bucket };
    return op_start(op, &a);
}

static int put_common(struct hg_s3 *s3, const struct send_args *a, hg_s3_cb cb, void *arg)
{
    if (!valid_bucket(a->bucket) || !valid_key(a->key) || !valid_meta(a->meta, a->nmeta) ||
        cb == NULL)
        return HG_ERR_INVALID;
    return op_start(op_new(s3, OP_PLAIN, cb, arg), a);
}

int hg_s3_put_object(struct hg_s3 *s3, const char *bucket, const char *key,
                     const char *content_type, const struct hg_http_header *meta, size_t nmeta,
                     const void *body, size_t len, hg_s3_cb cb, void *arg)
{
    const struct send_args a = {
        .method = "PUT", .bucket = bucket, .key = key, .content_type = content_type,
        .meta = meta, .nmeta = nmeta, .body = body ? body : "", .len = body ? len : 0,
    };
    return put_common(s3, &a, cb, arg);
}

int hg_s3_put_object_stream(struct hg_s3 *s3, const char *bucket, const char *key,
                            const char *content_type, const struct hg_http_header *meta,
                            size_t nmeta, int64_t len, hg_http_read_fn read, void *read_arg,
                            hg_s3_cb cb, void *arg)
{
    /* S3 wants Content-Length on PUT: chunked uploads without aws-chunked framing are refused. */
    if (read == NULL || len < 0)
        return HG_ERR_INVALID;
    const struct send_args a = {
        .method = "PUT", .bucket = bucket, .key = key, .content_type = content_type,
        .meta = meta, .nmeta = nmeta, .read = read, .read_arg = read_arg, .read_len = len,
    };
    return put_common(s3, &a, cb, arg);
}

int hg_s3_get_object(struct hg_s3 *s3, const char *bucket, const char *key, size_t max,
                     hg_s3_cb cb, void *arg)
{
    if (!valid_bucket(bucket) || !valid_key(key) || cb == NULL)
        return HG_ERR_INVALID;
    struct s3_op *op = op_new(s3, OP_GET, cb, arg);
    op->get_max = max;
    const struct send_args a = { .method = "GET", .bucket = bucket, .key = key };
    return op_start(op, &a);
}

int hg_s3_delete_object(struct hg_s3 *s3, const char *bucket, const char *key, hg_s3_cb cb,
                        void *arg)
{
    if (!valid_bucket(bucket) || !valid_key(key) || cb == NULL)
        return HG_ERR_INVALID;
    const struct send_args a = { .method = "DELETE", .bucket = bucket, .key = key };
    return op_start(op_new(s3, OP_PLAIN, cb, arg), &a);
}

int hg_s3_presign_get(struct hg_s3 *s3, const char *bucket, const char *key, uint32_t expires_s,
                      uint64_t now_s, char *out, size_t cap)
{
    struct hg_buf host, path, query;
    char date[HG_SIGV4_DATE_LEN];
    int rc;

    if (!valid_bucket(bucket) || !valid_key(key) || out == NULL || cap == 0)
        return HG_ERR_INVALID;
    hg_buf_init(&host, 512);
    hg_buf_init(&path, URL_MAX);
    hg_buf_init(&query, URL_MAX);
    if (s3->path_style)
        rc = hg_buf_appendf(&host, "%s", s3->host) || hg_buf_appendf(&path, "/%s/", bucket);
    else
        rc = hg_buf_appendf(&host, "%s.%s", bucket, s3->host) || hg_buf_append(&path, "/", 1);
    if (rc != 0) {
        rc = HG_ERR_TOO_BIG;
        goto out;
    }
    if ((rc = hg_sigv4_uri_encode(&path, key, strlen(key), true)) < 0)
        goto out;
    hg_sigv4_date(now_s, date);
    const struct hg_sigv4_creds creds = { s3->access_key, s3->secret_key, s3->region, "s3" };
    if ((rc = hg_sigv4_presign_query(&creds, date, host.data, path.data, expires_s, &query)) < 0)
        goto out;
    int n = snprintf(out, cap, "%s://%s%s?%s", s3->scheme, host.data, path.data, query.data);
    rc = (n < 0 || (size_t)n >= cap) ? HG_ERR_TOO_BIG : 0;
out:
    hg_buf_free(&host);
    hg_buf_free(&path);
    hg_buf_free(&query);
    return rc;
}

int hg_s3_multipart_begin(struct hg_s3 *s3, const char *bucket, const char *key,
                          const char *content_type, const struct hg_http_header *meta,
                          size_t nmeta, hg_s3_cb cb, void *arg)
{
    if (!valid_bucket(bucket) || !valid_key(key) || !valid_meta(meta, nmeta) || cb == NULL)
        return HG_ERR_INVALID;
    const struct send_args a = {
        .method = "POST", .bucket = bucket, .key = key, .query = "uploads",
        .content_type = content_type, .meta = meta, .nmeta = nmeta,
    };
    return op_start(op_new(s3, OP_BEGIN, cb, arg), &a);
}

/* "uploadId=<encoded>" (with a partNumber first when part_no > 0), sorted as signed. */
static int upload_query(struct hg_buf *q, const char *upload_id, int part_no)
{
    int rc = 0;
    if (part_no > 0)
        rc = hg_buf_appendf(q, "partNumber=%d&", part_no);
    if (rc == 0)
        rc = hg_buf_append(q, "uploadId=", 9);
    if (rc == 0)
        rc = hg_sigv4_uri_encode(q, upload_id, strlen(upload_id), false);
    return rc;
}

int hg_s3_multipart_upload_part(struct hg_s3 *s3, const char *bucket, const char *key,
                                const char *upload_id, int part_no, const void *body, size_t len,
                                hg_s3_cb cb, void *arg)
{
    struct hg_buf q;
    int rc;

    if (!valid_bucket(bucket) || !valid_key(key) || upload_id == NULL || *upload_id == '\0' ||
        part_no < 1 || part_no > 10000 || body == NULL || cb == NULL)
        return HG_ERR_INVALID;
    hg_buf_init(&q, 1024);
    if ((rc = upload_query(&q, upload_id, part_no)) == 0) {
        const struct send_args a = {
            .method = "PUT", .bucket = bucket, .key = key, .query = q.data, .body = body,
            .len = len,
        };
        rc = op_start(op_new(s3, OP_PLAIN, cb, arg), &a);
    }
    hg_buf_free(&q);
    return rc;
}

int hg_s3_multipart_complete(struct hg_s3 *s3, const char *bucket, const char *key,
                             const char *upload_id, const char *const *etags, size_t nparts,
                             hg_s3_cb cb, void *arg)
{
    struct hg_buf q;
    struct s3_op *op = NULL;
    int rc;

    if (!valid_bucket(bucket) || !valid_key(key) || upload_id == NULL || *upload_id == '\0' ||
        etags == NULL || nparts < 1 || nparts > 10000 || cb == NULL)
        return HG_ERR_INVALID;
    hg_buf_init(&q, 1024);
    op = op_new(s3, OP_COMPLETE, cb, arg);
    /* 10000 parts of ~100 bytes each fit well under 2 MiB. */
    op->req_body.max = 2 * 1024 * 1024;
    rc = hg_buf_append(&op->req_body, "<CompleteMultipartUpload>", 25);
    for (size_t i = 0; i < nparts && rc == 0; i++) {
        if (etags[i] == NULL) {
            rc = HG_ERR_INVALID;
            break;
        }
        rc = hg_buf_appendf(&op->req_body, "<Part><PartNumber>%zu</PartNumber><ETag>", i + 1);
        if (rc == 0)
            rc = xml_escape(&op->req_body, etags[i]);
        if (rc == 0)
            rc = hg_buf_append(&op->req_body, "</ETag></Part>", 14);
    }
    if (rc == 0)
        rc = hg_buf_append(&op->req_body, "</CompleteMultipartUpload>", 26);
    if (rc == 0)
        rc = upload_query(&q, upload_id, 0);
    if (rc < 0) {
        op_free(op);
        goto out;
    }
    const struct send_args a = {
        .method = "POST", .bucket = bucket, .key = key, .query = q.data,
        .content_type = "application/xml", .body = op->req_body.data, .len = op->req_body.len,
    };
    rc = op_start(op, &a);
out:
    hg_buf_free(&q);
    return rc;
}

int hg_s3_multipart_abort(struct hg_s3 *s3, const char *bucket, const char *key,
                          const char *upload_id, hg_s3_cb cb, void *arg)
{
    struct hg_buf q;
    int rc;

    if (!valid_bucket(bucket) || !valid_key(key) || upload_id == NULL || *upload_id == '\0' ||
        cb == NULL)
        return HG_ERR_INVALID;
    hg_buf_init(&q, 1024);
    if ((rc = upload_query(&q, upload_id, 0)) == 0) {
        const struct send_args a = { .method = "DELETE", .bucket = bucket, .key = key,
                                     .query = q.data };
        rc = op_start(op_new(s3, OP_PLAIN, cb, arg), &a);
    }
    hg_buf_free(&q);
    return rc;
}

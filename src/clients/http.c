/* Async HTTP client on libcurl's multi socket API, with libuv polling the sockets and the timer. */
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "clients/http.h"
#include "core/common.h"
#include "core/err.h"
#include "core/list.h"
#include "core/log.h"

#define DEFAULT_CONNECT_TIMEOUT_MS 10000
#define DEFAULT_TIMEOUT_MS 60000
/*
 * Idle connections kept for reuse. curl's default (4 x the easy handles added right now) shrinks
 * as transfers finish, so under a steady stream of short calls connections were closed and
 * reopened all the time. No per-host cap (CURLMOPT_MAX_HOST_CONNECTIONS): curl 7.88 walks its
 * whole queue of waiting transfers on every curl_multi_remove_handle; callers bound themselves
 * (the S3 client's max_inflight).
 */
#define MAX_CACHED_CONNECTIONS 128

/* One poll handle per socket curl tells us about; freed only in its close callback. */
struct sock_ctx {
    uv_poll_t poll;
    struct hg_http *h;
    curl_socket_t fd;
    bool closing;
    struct hg_list link;            /* in h->socks, so close can reach the ones curl never removed */
};

/* One request in flight. */
struct xfer {
    struct hg_http *h;
    CURL *easy;
    struct curl_slist *headers;
    hg_http_cb cb;
    void *arg;
    const char *body;               /* memory body (not owned) */
    size_t body_len, body_off;
    hg_http_read_fn body_read;
    void *body_read_arg;
    struct hg_buf *sink;
    hg_http_write_fn resp_write;
    void *resp_write_arg;
    struct hg_buf *resp_headers;    /* the caller's header-line buffer, or NULL */
    int sink_err;                   /* HG_ERR_TOO_BIG when the sink's cap stopped the transfer */
    bool aborted;                   /* a stream callback asked to stop */
    struct hg_http_resp resp;
    char errbuf[CURL_ERROR_SIZE];
    struct hg_list link;            /* in h->xfers */
};

struct hg_http {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    size_t handles;                 /* uv handles not yet closed (timer + polls) */
    size_t pending;
    bool closing;
    struct hg_list xfers;           /* requests in flight, newest first */
    struct hg_list socks;           /* sock_ctx not yet freed, newest first */
    void (*on_closed)(void *arg);
    void *on_closed_arg;
};

static void maybe_free(struct hg_http *h)
{
    if (!h->closing || h->handles > 0)
        return;
    void (*on_closed)(void *) = h->on_closed;
    void *arg = h->on_closed_arg;
    free(h);
    if (on_closed != NULL)
        on_closed(arg);
}

static void on_sock_closed(uv_handle_t *handle)
{
    struct sock_ctx *ctx = HG_CONTAINER_OF((uv_poll_t *)handle, struct sock_ctx, poll);
    struct hg_http *h = ctx->h;
    hg_list_unlink(&ctx->link);
    free(ctx);
    h->handles--;
    maybe_free(h);
}

/*
 * Stop polling at once and close later: curl may close this fd and open a new socket with the
 * same number before the close callback runs, and the new socket gets a fresh sock_ctx.
 */
static void sock_close(struct sock_ctx *ctx)
{
    if (ctx->closing)
        return;
    ctx->closing = true;
    uv_poll_stop(&ctx->poll);
    uv_close((uv_handle_t *)&ctx->poll, on_sock_closed);
}

static int map_error(const struct xfer *x, CURLcode code)
{
    if (x->sink_err != 0)
        return x->sink_err;
    if (x->aborted)
        return UV_ECANCELED;
    switch (code) {
    case CURLE_OK:
        return 0;
    case CURLE_OPERATION_TIMEDOUT:
        return HG_ERR_TIMEOUT;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
        return HG_ERR_UNAVAILABLE;
    case CURLE_ABORTED_BY_CALLBACK:
    case CURLE_READ_ERROR:
        return UV_ECANCELED;
    default:
        return HG_ERR_PROTOCOL;
    }
}

/* Detach x from curl and the list, run its callback once, free it. */
static void xfer_finish(struct xfer *x, CURLcode code, int err_override)
{
    struct hg_http *h = x->h;

    hg_list_unlink(&x->link);
    h->pending--;

    long status = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    x->resp.status = status;
    x->resp.curl_code = (int)code;
    x->resp.err = err_override != 0 ? err_override : map_error(x, code);
    x->resp.body = x->sink;
    if (h->multi != NULL)
        curl_multi_remove_handle(h->multi, x->easy);
    if (x->resp.err != 0 && err_override == 0)
        hg_debug(NULL, "http transfer failed", "error", hg_strerror(x->resp.err),
                 "curl", x->errbuf[0] ? x->errbuf : curl_easy_strerror(code), NULL);
    x->cb(x->arg, &x->resp);
    curl_easy_cleanup(x->easy);
    curl_slist_free_all(x->headers);
    free(x);
}

static void check_done(struct hg_http *h)
{
    CURLMsg *msg;
    int left;
    /* A callback may close the client; then the multi handle is gone and so are its messages. */
    while (!h->closing && (msg = curl_multi_info_read(h->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct xfer *x = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        xfer_finish(x, msg->data.result, 0);
    }
}

static void on_poll(uv_poll_t *handle, int status, int events)
{
    struct sock_ctx *ctx = HG_CONTAINER_OF(handle, struct sock_ctx, poll);
    struct hg_http *h = ctx->h;
    int flags = 0, running;

    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(h->multi, ctx->fd, flags, &running);
    check_done(h);
}

static void on_timer(uv_timer_t *timer)
{
    struct hg_http *h = HG_CONTAINER_OF(timer, struct hg_http, timer);
    int running;
    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(h);
}

/* CURLMOPT_TIMERFUNCTION: never act from here, only (re)arm the one uv timer. */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    struct hg_http *h = userp;
    if (h->closing)
        return 0;
    if (timeout_ms < 0)
        uv_timer_stop(&h->timer);
    else
        uv_timer_start(&h->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

/* CURLMOPT_SOCKETFUNCTION: what curl wants to wait for on socket s. */
static int on_curl_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct hg_http *h = userp;
    struct sock_ctx *ctx = socketp;

    if (what == CURL_POLL_REMOVE) {
        if (ctx != NULL) {
            sock_close(ctx);
            if (h->multi != NULL)
                curl_multi_assign(h->multi, s, NULL);
        }
        return 0;
    }
    if (h->closing)
        return 0;
    if (ctx == NULL) {
        ctx = hg_xcalloc(1, sizeof(*ctx));
        ctx->h = h;
        ctx->fd = s;
        int rc = uv_poll_init_socket(h->loop, &ctx->poll, s);
        if (rc < 0) {
            hg_warn(NULL, "http: cannot poll socket", "error", uv_strerror(rc), NULL);
            free(ctx);
            return -1;
        }
        h->handles++;
        hg_list_insert_head(&h->socks, &ctx->link);
        curl_multi_assign(h->multi, s, ctx);
    }
    int events = 0;
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    uv_poll_start(&ctx->poll, events, on_poll);
    return 0;
}

int hg_http_open(uv_loop_t *loop, struct hg_http **out)
{
    struct hg_http *h = hg_xcalloc(1, sizeof(*h));
    h->loop = loop;
    h->multi = curl_multi_init();
    if (h->multi == NULL) {
        free(h);
        return HG_ERR_INVALID;
    }
    hg_list_init(&h->xfers);
    hg_list_init(&h->socks);
    uv_timer_init(loop, &h->timer);
    h->handles = 1;
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, (long)MAX_CACHED_CONNECTIONS);
    *out = h;
    return 0;
}

/* Copy "Name: value" without its CRLF into dst (cut at cap). */
static void copy_header_value(char *dst, size_t cap, const char *v, size_t n)
{
    while (n > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        n--;
    }
    while (n > 0 && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' '))
        n--;
    n = HG_MIN(n, cap - 1);
    memcpy(dst, v, n);
    dst[n] = '\0';
}

static size_t on_header(char *line, size_t size, size_t nitems, void *userdata)
{
    struct xfer *x = userdata;
    size_t n = size * nitems;

    /* A new status line (after 100 Continue or a retried request) starts a new header set. */
    if (n >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        x->resp.content_type[0] = x->resp.retry_after[0] = x->resp.etag[0] = x->resp.cache_control[0] = '\0';
        if (x->resp_headers)
            hg_buf_reset(x->resp_headers);
        return n;
    }
    if (x->resp_headers) {
        size_t ln = n;
        while (ln > 0 && (line[ln - 1] == '\r' || line[ln - 1] == '\n'))
            ln--;
        /* A line that does not fit is dropped whole, and the ones after it may still fit. */
        if (ln > 0 && x->resp_headers->len + ln + 1 <= x->resp_headers->max) {
            hg_buf_append(x->resp_headers, line, ln);
            hg_buf_append(x->resp_headers, "\n", 1);
        }
    }
    const char *colon = memchr(line, ':', n);
    if (colon == NULL)
        return n;
    size_t nlen = (size_t)(colon - line);
    const char *v = colon + 1;
    size_t vlen = n - nlen - 1;
    if (nlen == 12 && strncasecmp(line, "content-type", 12) == 0)
        copy_header_value(x->resp.content_type, sizeof(x->resp.content_type), v, vlen);
    else if (nlen == 11 && strncasecmp(line, "retry-after", 11) == 0)
        copy_header_value(x->resp.retry_after, sizeof(x->resp.retry_after), v, vlen);
    else if (nlen == 4 && strncasecmp(line, "etag", 4) == 0)
        copy_header_value(x->resp.etag, sizeof(x->resp.etag), v, vlen);
    else if (nlen == 13 && strncasecmp(line, "cache-control", 13) == 0)
        copy_header_value(x->resp.cache_control, sizeof(x->resp.cache_control), v, vlen);
    return n;
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *userdata)
{
    struct xfer *x = userdata;
    size_t n = size * nmemb;

    if (x->sink != NULL) {
        if (hg_buf_append(x->sink, data, n) < 0) {
            x->sink_err = HG_ERR_TOO_BIG;
            return 0;
        }
    } else if (x->resp_write != NULL) {
        if (x->resp_write(x->resp_write_arg, data, n) != 0) {
            x->aborted = true;
            return 0;
        }
    }
    return n;
}

static size_t on_read(char *dst, size_t size, size_t nitems, void *userdata)
{
    struct xfer *x = userdata;
    size_t cap = size * nitems;

    if (x->body_read != NULL) {
        size_t n = x->body_read(x->body_read_arg, dst, cap);
        if (n == HG_HTTP_READ_ABORT || n > cap) {
            x->aborted = true;
            return CURL_READFUNC_ABORT;
        }
        return n;
    }
    size_t n = HG_MIN(cap, x->body_len - x->body_off);
    if (n > 0)
        memcpy(dst, x->body + x->body_off, n);
    x->body_off += n;
    return n;
}

/* curl rewinds when it resends on a reused connection the server had closed. */
static int on_seek(void *userdata, curl_off_t offset, int origin)
{
    struct xfer *x = userdata;
    if (x->body_read != NULL || origin != SEEK_SET || offset < 0 || (size_t)offset > x->body_len)
        return CURL_SEEKFUNC_CANTSEEK;
    x->body_off = (size_t)offset;
    return CURL_SEEKFUNC_OK;
}

static bool has_header(const struct hg_http_req *req, const char *name)
{
    for (size_t i = 0; i < req->nheaders; i++)
        if (strcasecmp(req->headers[i].name, name) == 0)
            return true;
    return false;
}

static int add_header(struct xfer *x, const char *name, const char *value)
{
    struct hg_buf line;
    hg_buf_init(&line, 16 * 1024);
    int rc = value != NULL ? hg_buf_appendf(&line, "%s: %s", name, value)
                           : hg_buf_appendf(&line, "%s:", name);
    if (rc == 0 && (strchr(line.data, '\r') != NULL || strchr(line.data, '\n') != NULL))
        rc = HG_ERR_INVALID; /* no header injection through values */
    if (rc == 0) {
        struct curl_slist *l = curl_slist_append(x->headers, line.data);
        if (l == NULL)
            hg_oom(__FILE__, __LINE__);
        x->headers = l;
    }
    hg_buf_free(&line);
    return rc;
}

static int set_method(struct xfer *x, const struct hg_http_req *req)
{
    const char *m = req->method != NULL ? req->method : "GET";
    bool has_body = req->body != NULL || req->body_read != NULL;
    curl_off_t len = req->body_read != NULL ? (curl_off_t)req->body_read_len
                                            : (curl_off_t)req->body_len;
    CURL *e = x->easy;

    if (strcmp(m, "HEAD") == 0) {
        if (has_body)
            return HG_ERR_INVALID;
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (strcmp(m, "GET") == 0 && !has_body) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(m, "POST") == 0) {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, has_body ? len : (curl_off_t)0);
    } else if (has_body || strcmp(m, "PUT") == 0) {
        /* PUT without a body still sends Content-Length: 0 (CreateBucket needs it). */
        curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, has_body ? len : (curl_off_t)0);
        if (strcmp(m, "PUT") != 0)
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m);
    } else {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m);
    }
    return 0;
}

int hg_http_request(struct hg_http *h, const struct hg_http_req *req, hg_http_cb cb, void *arg)
{
    struct xfer *x = NULL;
    int rc;

    if (h->closing)
        return HG_ERR_CLOSED;
    if (req->url == NULL || cb == NULL || (req->body != NULL && req->body_read != NULL) ||
        (req->resp_body != NULL && req->resp_write != NULL) ||
        (strncmp(req->url, "http://", 7) != 0 && strncmp(req->url, "https://", 8) != 0))
        return HG_ERR_INVALID;

    x = hg_xcalloc(1, sizeof(*x));
    x->h = h;
    x->cb = cb;
    x->arg = arg;
    x->body = req->body;
    x->body_len = req->body_len;
    x->body_read = req->body_read;
    x->body_read_arg = req->body_read_arg;
    x->sink = req->resp_body;
    x->resp_write = req->resp_write;
    x->resp_write_arg = req->resp_write_arg;
    x->resp_headers = req->resp_headers;
    x->easy = curl_easy_init();
    if (x->easy == NULL)
        hg_oom(__FILE__, __LINE__);

    CURL *e = x->easy;
    if (curl_easy_setopt(e, CURLOPT_URL, req->url) != CURLE_OK) {
        rc = HG_ERR_INVALID;
        goto fail;
    }
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_USERAGENT, "hookgate/" HG_VERSION);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(req->connect_timeout_ms ? req->connect_timeout_ms
                                                    : DEFAULT_CONNECT_TIMEOUT_MS));
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS,
                     (long)(req->timeout_ms ? req->timeout_ms : DEFAULT_TIMEOUT_MS));
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(e, CURLOPT_READDATA, x);
    curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, on_seek);
    curl_easy_setopt(e, CURLOPT_SEEKDATA, x);
    if (req->max_redirects > 0) {
        curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(e, CURLOPT_MAXREDIRS, (long)req->max_redirects);
        curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
        /*
         * Explicit although it is the default: credentials stay with the first host. Media URLs
         * (Twilio's) answer with a redirect to a pre-signed storage URL on another host, which must
         * not see the account's Basic credentials (and S3-style URLs refuse a second auth anyway).
         */
        curl_easy_setopt(e, CURLOPT_UNRESTRICTED_AUTH, 0L);
    }
    if ((rc = set_method(x, req)) < 0)
        goto fail;

    for (size_t i = 0; i < req->nheaders; i++)
        if ((rc = add_header(x, req->headers[i].name, req->headers[i].value)) < 0)
            goto fail;
    /*
     * Waiting for 100 Continue costs a round trip (or a 1 s stall) on every upload. Not with
     * curl's SigV4: 7.88 would sign the empty "expect" it never sends, and the server refuses.
     */
    if (req->aws_sigv4 == NULL && !has_header(req, "Expect") &&
        (rc = add_header(x, "Expect", NULL)) < 0)
        goto fail;
    if (req->aws_sigv4 != NULL) {
        size_t n = strlen(req->aws_sigv4);
        /* curl 7.88 does not add the payload hash header that S3 requires. */
        if (n >= 3 && strcmp(req->aws_sigv4 + n - 3, ":s3") == 0 &&
            !has_header(req, "x-amz-content-sha256") &&
            (rc = add_header(x, "x-amz-content-sha256", "UNSIGNED-PAYLOAD")) < 0)
            goto fail;
        curl_easy_setopt(e, CURLOPT_AWS_SIGV4, req->aws_sigv4);
        if (req->userpwd != NULL)
            curl_easy_setopt(e, CURLOPT_USERPWD, req->userpwd);
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers);

    hg_list_insert_head(&h->xfers, &x->link);
    h->pending++;
    if (curl_multi_add_handle(h->multi, e) != CURLM_OK) {
        hg_list_unlink(&x->link);
        h->pending--;
        rc = HG_ERR_INVALID;
        goto fail;
    }
    return 0;
fail:
    curl_easy_cleanup(x->easy);
    curl_slist_free_all(x->headers);
    free(x);
    return rc;
}

int hg_http_cancel(struct hg_http *h, void *arg)
{
    int n = 0;
    /* Rescan from the head each time: a callback may start or cancel other transfers. */
    for (;;) {
        struct xfer *x = NULL;
        struct hg_list *pos;
        HG_LIST_FOREACH(pos, &h->xfers) {
            struct xfer *c = hg_list_entry(pos, struct xfer, link);
            if (c->arg == arg) {
                x = c;
                break;
            }
        }
        if (x == NULL)
            break;
        xfer_finish(x, CURLE_ABORTED_BY_CALLBACK, UV_ECANCELED);
        n++;
    }
    return n;
}

size_t hg_http_pending(const struct hg_http *h)
{
    return h->pending;
}

static void on_timer_closed(uv_handle_t *handle)
{
    struct hg_http *h = HG_CONTAINER_OF((uv_timer_t *)handle, struct hg_http, timer);
    h->handles--;
    maybe_free(h);
}

void hg_http_close(struct hg_http *h, void (*on_closed)(void *arg), void *arg)
{
    if (h->closing)
        return;
    h->on_closed = on_closed;
    h->on_closed_arg = arg;
    /* First, so the callbacks below cannot start new requests (they get HG_ERR_CLOSED). */
    h->closing = true;
    while (!hg_list_empty(&h->xfers))
        xfer_finish(hg_list_entry(hg_list_first(&h->xfers), struct xfer, link),
                    CURLE_ABORTED_BY_CALLBACK, HG_ERR_CLOSED);
    /* Cleanup closes cached connections, reporting CURL_POLL_REMOVE for their sockets. */
    CURLM *multi = h->multi;
    h->multi = NULL;
    curl_multi_cleanup(multi);
    struct hg_list *pos;
    HG_LIST_FOREACH(pos, &h->socks)
        sock_close(hg_list_entry(pos, struct sock_ctx, link));
    uv_timer_stop(&h->timer);
    uv_close((uv_handle_t *)&h->timer, on_timer_closed);
}

/* Async HTTP client: one libcurl multi handle per worker loop, driven by libuv (poll + timer). */
#ifndef HG_CLIENTS_HTTP_H
#define HG_CLIENTS_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "core/buf.h"

struct hg_http;

struct hg_http_header {
    const char *name;
    const char *value;
};

/*
 * Streaming request body: copy up to cap bytes into dst and return how many; 0 means end of
 * body. Return HG_HTTP_READ_ABORT to fail the transfer (its callback then reports UV_ECANCELED).
 */
#define HG_HTTP_READ_ABORT ((size_t)-1)
typedef size_t (*hg_http_read_fn)(void *arg, char *dst, size_t cap);
/* Streaming response body: consume n bytes; return non-zero to abort (callback: UV_ECANCELED). */
typedef int (*hg_http_write_fn)(void *arg, const char *data, size_t n);

/*
 * One request. Everything is read during hg_http_request except the memory body (`body`), the
 * sink (`resp_body`) and the callbacks' args, which must stay valid until the callback ran.
 */
struct hg_http_req {
    const char *method;                   /* "GET" when NULL; "HEAD" sends no body request */
    const char *url;                      /* http:// or https:// only */
    const struct hg_http_header *headers; /* copied; a NULL value sends "Name:" (removes it) */
    size_t nheaders;
    /* request body: memory (body/body_len) or stream (body_read, body_read_len or -1 = chunked) */
    const void *body;
    size_t body_len;
    hg_http_read_fn body_read;
    void *body_read_arg;
    int64_t body_read_len;
    /* response body: capped memory sink (caller-owned hg_buf; its max is the cap), or a stream
     * (resp_write), or neither (the body is discarded) */
    struct hg_buf *resp_body;
    hg_http_write_fn resp_write;
    void *resp_write_arg;
    /* optional: the final response's header lines, "Name: value\n" each, into this caller-owned
     * buffer; lines past its cap are dropped (not an error). Outbound deliveries log them. */
    struct hg_buf *resp_headers;
    uint32_t connect_timeout_ms;          /* 0 = 10 s */
    uint32_t timeout_ms;                  /* whole transfer, redirects included; 0 = 60 s */
    /*
     * Redirects (3xx with Location) followed, at most this many; 0 = none: the 3xx is the answer.
     * Past the limit the callback gets the last 3xx's status with err HG_ERR_PROTOCOL. Only to
     * http/https. An Authorization header (or userpwd) goes to the request URL's own host only —
     * same scheme, host name and port — never to a host a redirect leads to: libcurl's rule for
     * custom Authorization headers since 7.58 (host name, port and scheme compared since 7.83),
     * kept by leaving CURLOPT_UNRESTRICTED_AUTH off. Bodies of followed 3xx are not delivered.
     */
    unsigned max_redirects;
    /* libcurl's own SigV4 ("aws:amz:us-east-1:s3") with userpwd "ACCESS:SECRET"; for S3 an
     * x-amz-content-sha256: UNSIGNED-PAYLOAD header is added unless headers carry one */
    const char *aws_sigv4;
    const char *userpwd;
};

struct hg_http_resp {
    /*
     * 0 when an HTTP response arrived (whatever its status); else HG_ERR_TIMEOUT (connect or total
     * timeout), HG_ERR_UNAVAILABLE (resolve/connect/send/recv failed), HG_ERR_TOO_BIG (response
     * past the sink's cap), UV_ECANCELED (hg_http_cancel, a stream callback aborted),
     * HG_ERR_CLOSED (hg_http_close), HG_ERR_PROTOCOL (anything else curl reports).
     */
    int err;
    int curl_code;          /* CURLcode, for logs */
    long status;            /* HTTP status; 0 when none arrived */
    char content_type[128]; /* response headers, "" when absent, cut at the array size */
    char retry_after[64];
    char etag[128];
    char cache_control[128];
    struct hg_buf *body;    /* req->resp_body (NULL when none was given) */
};

/* Runs exactly once per accepted request, from the loop, never inside hg_http_request. */
typedef void (*hg_http_cb)(void *arg, const struct hg_http_resp *resp);

/* Client bound to `loop` (one per worker thread; not thread-safe). curl_global_init is the
 * caller's business (main, once, before threads). 0 or HG_ERR_INVALID. */
int hg_http_open(uv_loop_t *loop, struct hg_http **out);

/*
 * Start a request. Returns 0 (cb runs exactly once later) or <0 (HG_ERR_INVALID for a bad
 * request, HG_ERR_CLOSED after hg_http_close; cb never runs).
 */
int hg_http_request(struct hg_http *h, const struct hg_http_req *req, hg_http_cb cb, void *arg);

/*
 * Cancel every in-flight request whose callback arg is `arg` (a request object owns its arg, so
 * this means "everything I started"). Their callbacks run before this returns, with UV_ECANCELED.
 * Returns how many were canceled. Not from inside a read/write stream callback (return abort there).
 */
int hg_http_cancel(struct hg_http *h, void *arg);

/* Number of requests in flight. */
size_t hg_http_pending(const struct hg_http *h);

/*
 * Cancel everything (callbacks run before this returns, with HG_ERR_CLOSED), close the uv handles
 * and free the client once they are closed; then `on_closed(arg)` runs (may be NULL). Safe to
 * call from an hg_http_cb.
 */
void hg_http_close(struct hg_http *h, void (*on_closed)(void *arg), void *arg);

#endif

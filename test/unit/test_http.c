/* HTTP client on curl multi + libuv: errors, timeouts, cancel, close, sinks and streams,
 * redirects (and the Authorization header staying on the first host). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>

#include "clients/http.h"
#include "core/common.h"
#include "core/err.h"
#include "core/hmac.h"

struct result {
    int calls;
    int err;
    long status;
    char etag[128];
    char content_type[128];
    bool in_request;     /* set while hg_http_request runs: the callback must never see it */
    bool ran_inside;
};

struct fixture {
    uv_loop_t loop;
    struct hg_http *http;
    bool closed;
};

static void on_done(void *arg, const struct hg_http_resp *resp)
{
    struct result *r = arg;
    r->calls++;
    r->err = resp->err;
    r->status = resp->status;
    if (r->in_request)
        r->ran_inside = true;
    snprintf(r->etag, sizeof(r->etag), "%s", resp->etag);
    snprintf(r->content_type, sizeof(r->content_type), "%s", resp->content_type);
}

static int start(struct fixture *f, const struct hg_http_req *req, struct result *r)
{
    r->in_request = true;
    int rc = hg_http_request(f->http, req, on_done, r);
    r->in_request = false;
    return rc;
}

static void run_until(struct fixture *f, const int *calls, int want)
{
    while (*calls < want)
        assert_true(uv_run(&f->loop, UV_RUN_ONCE) != 0 || *calls >= want);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(hg_http_open(&f->loop, &f->http), 0);
    *state = f;
    return 0;
}

static void on_closed(void *arg)
{
    ((struct fixture *)arg)->closed = true;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (f->http != NULL)
        hg_http_close(f->http, on_closed, f);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_true(f->closed);
    /* Every uv handle the client opened must be closed and freed by now. */
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    return 0;
}

/* A loopback port nobody listens on (bound then closed). */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(sa);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

/* A listener that never accepts: connects succeed (kernel backlog), answers never come. */
static int silent_listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(sa);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

static void test_connection_refused(void **state)
{
    struct fixture *f = *state;
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", closed_port());
    struct hg_http_req req = { .url = url };
    struct result r = { 0 };
    assert_int_equal(start(f, &req, &r), 0);
    assert_int_equal(r.calls, 0);
    run_until(f, &r.calls, 1);
    assert_false(r.ran_inside);
    assert_int_equal(r.err, HG_ERR_UNAVAILABLE);
    assert_int_equal(r.status, 0);
    assert_int_equal(hg_http_pending(f->http), 0);
}

struct chain {
    struct fixture *f;
    char url[64];
    int left;
    int done;
    int unavailable;
};

static void on_chain(void *arg, const struct hg_http_resp *resp)
{
    struct chain *c = arg;
    c->done++;
    if (resp->err == HG_ERR_UNAVAILABLE)
        c->unavailable++;
    if (--c->left > 0) {
        struct hg_http_req req = { .url = c->url };
        assert_int_equal(hg_http_request(c->f->http, &req, on_chain, c), 0);
    }
}

/*
 * Each refused connect closes its socket and the next one, started from the callback, usually
 * gets the same fd number while the old poll handle is still closing (the libuv/curl pitfall).
 */
static void test_fd_reuse_chain(void **state)
{
    struct fixture *f = *state;
    struct chain c = { .f = f, .left = 20 };
    snprintf(c.url, sizeof(c.url), "http://127.0.0.1:%d/x", closed_port());
    struct hg_http_req req = { .url = c.url };
    assert_int_equal(hg_http_request(f->http, &req, on_chain, &c), 0);
    run_until(f, &c.done, 20);
    assert_int_equal(c.unavailable, 20);
}

static void test_total_timeout(void **state)
{
    struct fixture *f = *state;
    int port;
    int lfd = silent_listener(&port);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/slow", port);
    struct hg_http_req req = { .url = url, .timeout_ms = 300 };
    struct result r = { 0 };
    uint64_t t0 = uv_hrtime();
    assert_int_equal(start(f, &req, &r), 0);
    run_until(f, &r.calls, 1);
    uint64_t ms = (uv_hrtime() - t0) / 1000000;
    assert_int_equal(r.err, HG_ERR_TIMEOUT);
    assert_true(ms >= 250 && ms < 3000);
    close(lfd);
}

static void test_cancel_and_close(void **state)
{
    struct fixture *f = *state;
    int port;
    int lfd = silent_listener(&port);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/hang", port);
    struct hg_http_req req = { .url = url, .timeout_ms = 10000 };
    struct result a = { 0 }, b = { 0 }, c = { 0 };
    assert_int_equal(start(f, &req, &a), 0);
    assert_int_equal(start(f, &req, &b), 0);
    assert_int_equal(start(f, &req, &c), 0);
    /* let the connects happen */
    for (int i = 0; i < 5; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(hg_http_pending(f->http), 3);

    assert_int_equal(hg_http_cancel(f->http, &a), 1);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.err, UV_ECANCELED);
    assert_int_equal(hg_http_cancel(f->http, &a), 0);
    assert_int_equal(b.calls, 0);

    hg_http_close(f->http, on_closed, f);
    assert_int_equal(b.calls, 1);
    assert_int_equal(b.err, HG_ERR_CLOSED);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.err, HG_ERR_CLOSED);
    /* a closing client refuses work, and then the callback never runs */
    struct result d = { 0 };
    assert_int_equal(start(f, &req, &d), HG_ERR_CLOSED);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(d.calls, 0);
    assert_true(f->closed);
    f->http = NULL;
    close(lfd);
}

static void test_invalid_requests(void **state)
{
    struct fixture *f = *state;
    struct result r = { 0 };
    struct hg_http_req req = { .url = "ftp://127.0.0.1/x" };
    assert_int_equal(start(f, &req, &r), HG_ERR_INVALID);
    req.url = NULL;
    assert_int_equal(start(f, &req, &r), HG_ERR_INVALID);
    const struct hg_http_header bad = { "X-Evil", "a\r\nInjected: 1" };
    req.url = "http://127.0.0.1:1/";
    req.headers = &bad;
    req.nheaders = 1;
    assert_int_equal(start(f, &req, &r), HG_ERR_INVALID);
    req.headers = NULL;
    req.nheaders = 0;
    req.method = "HEAD";
    req.body = "x";
    req.body_len = 1;
    assert_int_equal(start(f, &req, &r), HG_ERR_INVALID);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(r.calls, 0);
    assert_int_equal(hg_http_pending(f->http), 0);
}

/* ---- against the S3 test peer (curl's own SigV4) ---- */

static const char *s3_endpoint(void)
{
    const char *e = getenv("HG_TEST_S3_ENDPOINT");
    return (e != NULL && *e != '\0') ? e : NULL;
}

static void s3_url(char *out, size_t cap, const char *path)
{
    snprintf(out, cap, "%s%s", s3_endpoint(), path);
}

static void do_req(struct fixture *f, struct hg_http_req *req, struct result *r)
{
    memset(r, 0, sizeof(*r));
    req->aws_sigv4 = "aws:amz:us-east-1:s3";
    if (req->userpwd == NULL)
        req->userpwd = "S3RVER:S3RVER";
    assert_int_equal(start(f, req, r), 0);
    run_until(f, &r->calls, 1);
    assert_false(r->ran_inside);
}

struct stream_src {
    size_t total, sent;
};

static size_t read_pattern(void *arg, char *dst, size_t cap)
{
    struct stream_src *s = arg;
    size_t n = HG_MIN(cap, s->total - s->sent);
    for (size_t i = 0; i < n; i++)
        dst[i] = (char)('a' + (s->sent + i) % 26);
    s->sent += n;
    return n;
}

struct stream_dst {
    size_t got;
    size_t stop_after;  /* abort once this much arrived (0 = never) */
    bool pattern_ok;
};

static int write_check(void *arg, const char *data, size_t n)
{
    struct stream_dst *d = arg;
    for (size_t i = 0; i < n; i++)
        if (data[i] != (char)('a' + (d->got + i) % 26))
            d->pattern_ok = false;
    d->got += n;
    return d->stop_after != 0 && d->got >= d->stop_after;
}

static void test_s3_sigv4_roundtrip(void **state)
{
    struct fixture *f = *state;
    if (s3_endpoint() == NULL)
        skip();
    char url[256];
    struct result r;

    s3_url(url, sizeof(url), "/hg-http-test");
    struct hg_http_req mk = { .method = "PUT", .url = url };
    do_req(f, &mk, &r);
    assert_int_equal(r.err, 0);
    assert_true(r.status == 200 || r.status == 409);

    /* memory body up, capped memory sink down */
    s3_url(url, sizeof(url), "/hg-http-test/hello.txt");
    const struct hg_http_header ct = { "Content-Type", "text/plain" };
    struct hg_http_req put = { .method = "PUT", .url = url, .headers = &ct, .nheaders = 1,
                               .body = "hello, world", .body_len = 12 };
    do_req(f, &put, &r);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.etag, "\"e4d7f1b4ed2e42d15898f4b27b019da4\""); /* md5("hello, world") */

    struct hg_buf body;
    hg_buf_init(&body, 1024);
    struct hg_http_req get = { .url = url, .resp_body = &body };
    do_req(f, &get, &r);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(body.len, 12);
    assert_memory_equal(body.data, "hello, world", 12);
    assert_string_equal(r.content_type, "text/plain");

    /* the sink's cap is enforced */
    struct hg_buf small;
    hg_buf_init(&small, 5);
    get.resp_body = &small;
    do_req(f, &get, &r);
    assert_int_equal(r.err, HG_ERR_TOO_BIG);
    assert_true(small.len <= 5);
    hg_buf_free(&small);

    /* wrong secret: the peer really checks signatures */
    hg_buf_reset(&body);
    get.resp_body = &body;
    get.userpwd = "S3RVER:not-the-secret";
    do_req(f, &get, &r);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.status, 403);
    assert_non_null(strstr(hg_buf_cstr(&body), "SignatureDoesNotMatch"));
    hg_buf_free(&body);

    /* HEAD: status only */
    struct hg_http_req head = { .method = "HEAD", .url = url };
    do_req(f, &head, &r);
    assert_int_equal(r.status, 200);
    s3_url(url, sizeof(url), "/hg-http-test/nope.txt");
    head.url = url;
    do_req(f, &head, &r);
    assert_int_equal(r.status, 404);
}

static void test_s3_streams(void **state)
{
    struct fixture *f = *state;
    if (s3_endpoint() == NULL)
        skip();
    char url[256];
    struct result r;
    s3_url(url, sizeof(url), "/hg-http-test");
    struct hg_http_req mk = { .method = "PUT", .url = url };
    do_req(f, &mk, &r);

    /* 3 MiB streamed up with a known length, streamed down and checked byte by byte */
    s3_url(url, sizeof(url), "/hg-http-test/stream.bin");
    struct stream_src src = { .total = 3 << 20 };
    struct hg_http_req put = { .method = "PUT", .url = url, .body_read = read_pattern,
                               .body_read_arg = &src, .body_read_len = (int64_t)src.total };
    do_req(f, &put, &r);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(src.sent, src.total);

    struct stream_dst dst = { .pattern_ok = true };
    struct hg_http_req get = { .url = url, .resp_write = write_check, .resp_write_arg = &dst };
    do_req(f, &get, &r);
    assert_int_equal(r.err, 0);
    assert_int_equal(dst.got, src.total);
    assert_true(dst.pattern_ok);

    /* the write callback aborts */
    struct stream_dst stop = { .pattern_ok = true, .stop_after = 1 };
    get.resp_write_arg = &stop;
    do_req(f, &get, &r);
    assert_int_equal(r.err, UV_ECANCELED);
    assert_true(stop.got < src.total);

    /* many requests at once over the same client all complete (connections get reused) */
    struct result many[8];
    struct hg_buf bodies[8];
    struct hg_http_req reqs[8];
    int total = 0;
    for (int i = 0; i < 8; i++) {
        hg_buf_init(&bodies[i], 4 << 20);
        reqs[i] = (struct hg_http_req){ .url = url, .resp_body = &bodies[i],
                                        .aws_sigv4 = "aws:amz:us-east-1:s3",
                                        .userpwd = "S3RVER:S3RVER" };
        memset(&many[i], 0, sizeof(many[i]));
        assert_int_equal(start(f, &reqs[i], &many[i]), 0);
    }
    while (total < 8) {
        uv_run(&f->loop, UV_RUN_ONCE);
        total = 0;
        for (int i = 0; i < 8; i++)
            total += many[i].calls;
    }
    for (int i = 0; i < 8; i++) {
        assert_int_equal(many[i].calls, 1);
        assert_int_equal(many[i].status, 200);
        assert_int_equal(bodies[i].len, src.total);
        hg_buf_free(&bodies[i]);
    }
}

/* ---- redirects: the fake Graph API's Twilio media route (Basic auth, then a 307 to a storage
 * host on another name and port that refuses any Authorization header and counts them) ---- */

static const char *graph_url(void)
{
    const char *v = getenv("HG_TEST_GRAPH_URL");
    return v != NULL && *v != '\0' ? v : NULL;
}

static void plain_req(struct fixture *f, const struct hg_http_req *req, struct result *r)
{
    memset(r, 0, sizeof(*r));
    assert_int_equal(start(f, req, r), 0);
    run_until(f, &r->calls, 1);
    assert_false(r->ran_inside);
}

static json_t *fake_stats(struct fixture *f)
{
    char url[256];
    struct result r;
    struct hg_buf body;
    hg_buf_init(&body, 1 << 20);
    snprintf(url, sizeof(url), "%s/_stats", graph_url());
    struct hg_http_req req = { .url = url, .resp_body = &body };
    plain_req(f, &req, &r);
    assert_int_equal(r.status, 200);
    json_t *doc = json_loadb(body.data, body.len, 0, NULL);
    assert_non_null(doc);
    hg_buf_free(&body);
    return doc;
}

static void test_redirects(void **state)
{
    struct fixture *f = *state;
    if (graph_url() == NULL)
        skip();
    const char *sid = getenv("HG_TEST_TWILIO_ACCOUNT_SID"), *tok = getenv("HG_TEST_TWILIO_AUTH_TOKEN");
    assert_non_null(sid);
    assert_non_null(tok);
    char url[512], plain[256], b64[400], auth[420];
    struct result r;
    snprintf(url, sizeof(url), "%s/_reset", graph_url());
    struct hg_http_req reset = { .method = "POST", .url = url };
    plain_req(f, &reset, &r);
    assert_int_equal(r.status, 200);

    int n = snprintf(plain, sizeof(plain), "%s:%s", sid, tok);
    assert_true(hg_base64_encode((const unsigned char *)plain, (size_t)n, b64, sizeof(b64)) > 0);
    snprintf(auth, sizeof(auth), "Basic %s", b64);
    const struct hg_http_header hdr = { "Authorization", auth };
    snprintf(url, sizeof(url), "%s/twilio/2010-04-01/Accounts/%s/Messages/MM1/Media/jpg", graph_url(), sid);
    struct hg_buf body;
    hg_buf_init(&body, 1 << 20);

    /* not followed by default: the 3xx is the answer, its own body included */
    struct hg_http_req req = { .url = url, .headers = &hdr, .nheaders = 1, .resp_body = &body };
    plain_req(f, &req, &r);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.status, 307);
    assert_string_equal(r.content_type, "text/html");
    assert_true(body.len > 0 && memcmp(body.data, "<html>", 6) == 0);

    /* followed: the storage host's answer alone (no redirect body before the JPEG), and the
     * storage host (which answers 400 to an Authorization header) never saw the credentials */
    hg_buf_free(&body);
    req.max_redirects = 5;
    plain_req(f, &req, &r);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.content_type, "image/jpeg");
    assert_true(body.len > 3 && memcmp(body.data, "\xff\xd8\xff", 3) == 0);
    json_t *st = fake_stats(f);
    assert_int_equal(json_object_size(json_object_get(st, "storage_auth")), 0);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(st, "storage_hits"), "/storage/jpg")), 1);
    char storage[300];
    snprintf(storage, sizeof(storage), "%s/storage/jpg", json_string_value(json_object_get(st, "storage_url")));
    json_decref(st);

    /* the control: the storage host does notice a header sent to it */
    hg_buf_free(&body);
    struct hg_http_req direct = { .url = storage, .headers = &hdr, .nheaders = 1, .resp_body = &body };
    plain_req(f, &direct, &r);
    assert_int_equal(r.status, 400);
    st = fake_stats(f);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(st, "storage_auth"), "/storage/jpg")), 1);
    json_decref(st);

    /* redirected on the same host (scheme, name and port): the header goes along */
    hg_buf_free(&body);
    snprintf(url, sizeof(url), "%s/twilio/2010-04-01/Accounts/%s/Messages/MM1/Media/same-png", graph_url(), sid);
    plain_req(f, &req, &r);
    assert_int_equal(r.status, 200);
    assert_true(body.len > 4 && memcmp(body.data, "\x89PNG", 4) == 0);

    /* bounded: past max_redirects the last 3xx comes back as a protocol error */
    hg_buf_free(&body);
    snprintf(url, sizeof(url), "%s/twilio/2010-04-01/Accounts/%s/Messages/MM1/Media/loop", graph_url(), sid);
    req.max_redirects = 3;
    plain_req(f, &req, &r);
    assert_int_equal(r.err, HG_ERR_PROTOCOL);
    assert_int_equal(r.status, 307);
    hg_buf_free(&body);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_connection_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fd_reuse_chain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_total_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_and_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_s3_sigv4_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_s3_streams, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redirects, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}

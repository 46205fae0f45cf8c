/* S3 client against the S3 test peer (s3rver, checks SigV4): buckets, objects, presign, multipart. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "clients/http.h"
#include "clients/s3.h"
#include "core/common.h"
#include "core/err.h"
#include "core/time.h"

#define MiB (1024 * 1024)

struct call {
    int calls;
    struct hg_s3_result res;   /* copy; res.body is not kept */
    struct hg_buf body;        /* copy of res->body */
};

struct fixture {
    uv_loop_t loop;
    struct hg_http *http;
    struct hg_s3 *s3;
    char bucket[64];
};

static const char *endpoint(void)
{
    const char *e = getenv("HG_TEST_S3_ENDPOINT");
    return (e != NULL && *e != '\0') ? e : NULL;
}

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return (v != NULL && *v != '\0') ? v : dflt;
}

static void on_call(void *arg, const struct hg_s3_result *res)
{
    struct call *c = arg;
    c->calls++;
    c->res = *res;
    c->res.body = NULL;
    hg_buf_init(&c->body, 64 * MiB);
    if (res->body != NULL && res->body->len > 0)
        assert_int_equal(hg_buf_append(&c->body, res->body->data, res->body->len), 0);
}

static void wait_call(struct fixture *f, struct call *c)
{
    while (c->calls == 0)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(c->calls, 1);
}

static void call_free(struct call *c)
{
    hg_buf_free(&c->body);
    memset(c, 0, sizeof(*c));
}

static int open_s3(struct fixture *f, const char *secret, const char *ep, struct hg_s3 **out)
{
    const struct hg_s3_opts o = {
        .endpoint = ep,
        .region = "us-east-1",
        .access_key = env_or("HG_TEST_S3_ACCESS_KEY", "S3RVER"),
        .secret_key = secret,
        .path_style = true,
        .timeout_ms = 30000,
    };
    return hg_s3_open(f->http, &o, out);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(hg_http_open(&f->loop, &f->http), 0);
    if (endpoint() != NULL)
        assert_int_equal(open_s3(f, env_or("HG_TEST_S3_SECRET_KEY", "S3RVER"), endpoint(),
                                 &f->s3), 0);
    /* A bucket per test run keeps reruns against a kept data directory independent. */
    snprintf(f->bucket, sizeof(f->bucket), "hg-test-%llu",
             (unsigned long long)(hg_time_now_ns() / 1000) % 1000000000000ull);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (f->s3 != NULL) {
        assert_int_equal(hg_s3_pending(f->s3), 0);
        hg_s3_close(f->s3);
    }
    hg_http_close(f->http, NULL, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    return 0;
}

static void ensure_bucket(struct fixture *f)
{
    struct call c = { 0 };
    assert_int_equal(hg_s3_ensure_bucket(f->s3, f->bucket, on_call, &c), 0);
    assert_int_equal(c.calls, 0);
    wait_call(f, &c);
    assert_int_equal(c.res.err, 0);
    call_free(&c);
}

static void put(struct fixture *f, const char *key, const void *body, size_t len, int want_err)
{
    struct call c = { 0 };
    assert_int_equal(hg_s3_put_object(f->s3, f->bucket, key, "application/octet-stream", NULL,
                                      0, body, len, on_call, &c), 0);
    wait_call(f, &c);
    assert_int_equal(c.res.err, want_err);
    call_free(&c);
}

static void get_expect(struct fixture *f, const char *key, const void *body, size_t len)
{
    struct call c = { 0 };
    assert_int_equal(hg_s3_get_object(f->s3, f->bucket, key, len + 16, on_call, &c), 0);
    wait_call(f, &c);
    assert_int_equal(c.res.err, 0);
    assert_int_equal(c.res.status, 200);
    assert_int_equal(c.body.len, len);
    if (len > 0)
        assert_memory_equal(c.body.data, body, len);
    call_free(&c);
}

static void test_retryable(void **state)
{
    struct hg_s3_result r = { 0 };
    assert_false(hg_s3_retryable(&r));
    r.err = HG_ERR_UNAVAILABLE;
    assert_true(hg_s3_retryable(&r));
    r.err = HG_ERR_TIMEOUT;
    assert_true(hg_s3_retryable(&r));
    r = (struct hg_s3_result){ .err = HG_ERR_UNAVAILABLE, .status = 503 };
    snprintf(r.code, sizeof(r.code), "SlowDown");
    assert_true(hg_s3_retryable(&r));
    r = (struct hg_s3_result){ .err = HG_ERR_REJECTED, .status = 429 };
    assert_true(hg_s3_retryable(&r));
    r = (struct hg_s3_result){ .err = HG_ERR_REJECTED, .status = 403 };
    snprintf(r.code, sizeof(r.code), "SignatureDoesNotMatch");
    assert_false(hg_s3_retryable(&r));
    r = (struct hg_s3_result){ .err = HG_ERR_NOT_FOUND, .status = 404 };
    assert_false(hg_s3_retryable(&r));
    r = (struct hg_s3_result){ .err = HG_ERR_TOO_BIG, .status = 200 };
    assert_false(hg_s3_retryable(&r));
    r = (struct hg_s3_result){ .err = HG_ERR_REJECTED, .status = 200 };
    snprintf(r.code, sizeof(r.code), "InternalError");
    assert_true(hg_s3_retryable(&r));
}

static void test_open_and_args(void **state)
{
    struct fixture *f = *state;
    struct hg_s3 *s3;
    const struct hg_s3_opts bad[] = {
        { .endpoint = "ftp://x", .access_key = "a", .secret_key = "b" },
        { .endpoint = "http://h:1/base", .access_key = "a", .secret_key = "b" },
        { .endpoint = "http://h:1", .access_key = NULL, .secret_key = "b" },
        { .endpoint = "http://", .access_key = "a", .secret_key = "b" },
    };
    for (size_t i = 0; i < HG_ARRAY_SIZE(bad); i++)
        assert_int_equal(hg_s3_open(f->http, &bad[i], &s3), HG_ERR_CONFIG);
    const struct hg_s3_opts ok = { .endpoint = "http://127.0.0.1:1/", .access_key = "a",
                                   .secret_key = "b", .path_style = true };
    assert_int_equal(hg_s3_open(f->http, &ok, &s3), 0);

    struct call c = { 0 };
    assert_int_equal(hg_s3_ensure_bucket(s3, "Bad_Bucket", on_call, &c), HG_ERR_INVALID);
    assert_int_equal(hg_s3_put_object(s3, "bucket", "", NULL, NULL, 0, "x", 1, on_call, &c),
                     HG_ERR_INVALID);
    const struct hg_http_header not_meta = { "x-tenant", "t" };
    assert_int_equal(hg_s3_put_object(s3, "bucket", "k", NULL, &not_meta, 1, "x", 1, on_call,
                                      &c), HG_ERR_INVALID);
    const struct hg_http_header bin_meta = { "x-amz-meta-a", "caf\xc3\xa9" };
    assert_int_equal(hg_s3_put_object(s3, "bucket", "k", NULL, &bin_meta, 1, "x", 1, on_call,
                                      &c), HG_ERR_INVALID);
    assert_int_equal(hg_s3_multipart_upload_part(s3, "bucket", "k", "id", 0, "x", 1, on_call,
                                                 &c), HG_ERR_INVALID);
    char url[64];
    assert_int_equal(hg_s3_presign_get(s3, "bucket", "k", 60, 0, url, sizeof(url)),
                     HG_ERR_TOO_BIG);
    assert_int_equal(hg_s3_presign_get(s3, "bucket", "k", 0, 0, url, sizeof(url)),
                     HG_ERR_INVALID);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(c.calls, 0);

    /* nobody on that port: a transport failure, retryable */
    assert_int_equal(hg_s3_put_object(s3, "bucket", "k", NULL, NULL, 0, "x", 1, on_call, &c), 0);
    wait_call(f, &c);
    assert_int_equal(c.res.err, HG_ERR_UNAVAILABLE);
    assert_int_equal(c.res.status, 0);
    assert_true(hg_s3_retryable(&c.res));
    call_free(&c);
    hg_s3_close(s3);
}

static void test_bucket_put_get(void **state)
{
    struct fixture *f = *state;
    if (endpoint() == NULL)
        skip();
    ensure_bucket(f);
    ensure_bucket(f); /* existing bucket: still success */

    /* every byte value, so nothing on the way treats the body as text */
    size_t len = 100000;
    unsigned char *body = malloc(len);
    for (size_t i = 0; i < len; i++)
        body[i] = (unsigned char)(i * 7 + i / 256);
    const struct hg_http_header meta[] = {
        { "x-amz-meta-tenant", "acme" },
        { "X-Amz-Meta-Event-Id", "wamid.HBgL 123" },
    };
    struct call c = { 0 };
    assert_int_equal(hg_s3_put_object(f->s3, f->bucket, "webhooks-inbound/acme/2026-01-01/x.json",
                                      "application/json", meta, 2, body, len, on_call, &c), 0);
    wait_call(f, &c);
    assert_int_equal(c.res.err, 0);
    assert_int_equal(c.res.status, 200);
    assert_true(strlen(c.res.etag) > 2 && c.res.etag[0] == '"');
    call_free(&c);
    get_expect(f, "webhooks-inbound/acme/2026-01-01/x.json", body, len);

    /* a cap below the object's size refuses it */
    assert_int_equal(hg_s3_get_object(f->s3, f->bucket, "webhooks-inbound/acme/2026-01-01/x.json",
                                      len - 1, on_call, &c), 0);
    wait_call(f, &c);
    assert_int_equal(c.res.err, HG_ERR_TOO_BIG);
    assert_false(hg_s3_retryable(&c.res));
    call_free(&c);

    /* a missing key: 404 with S3's code */
    assert_int_equal(hg_s3_get_object(f->s3, f->bucket, "no/such/key", 1024, on_call, &c), 0);
    wait_call(f, &c);
    assert_int_equal(c.res.err, HG_ERR_NOT_FOUND);
    assert_int_equal(c.res.status, 404);
    assert_string_equal(c.res.code, "NoSuchKey");
    call_free(&c);

    /* empty object, then delete */
    put(f, "empty", "", 0, 0);
    get_expect(f, "empty", "", 0);
    assert_int_equal(hg_s3_delete_object(f->s3, f->bucket, "empty", on_call, &c), 0);
    wait_call(f, &c);
    assert_int_equal(c.res.err, 0);
    call_free(&c);
    assert_int_equal(hg_s3_get_object(f->s3, f->bucket, "empty", 1024, on_call, &c), 0);
    wait_call(f, &c);
    assert_int_equal(c.res.err, HG_ERR_NOT_FOUND);
    call_free(&c);
    free(body);
}

static void test_key_encoding(void **state)
{
    struct fixture *f = *state;
    if (endpoint() == NULL)
        skip();
    ensure_bucket(f);
    static const char *const keys[] = {
        "dir one/file name (1).json",
        "m\xc3\xa9" "dias/\xc3\xbcn\xc3\xaf" "c\xc3\xb6" "d\xc3\xa9/\xe6\x97\xa5\xe6\x9c\xac.txt",
        "a+b=c&d;e,f@g$h!i'j*k~l.txt",
        "percent%20literal/x",
    };
    for (size_t i = 0; i < HG_ARRAY_SIZE(keys); i++) {
        char body[64];
        int n = snprintf(body, sizeof(body), "object %zu", i);
        put(f, keys[i], body, (size_t)n, 0);
    }
    for (size_t i = 0; i < HG_ARRAY_SIZE(keys); i++) {
        char body[64];
        int n = snprintf(body, sizeof(body), "object %zu", i);
        get_expect(f, keys[i], body, (size_t)n);
    }
}

static void test_wrong_secret(void **state)
{
    struct fixture *f = *state;
    if (endpoint() == NULL)
        skip();
    ensure_bucket(f);
    struct hg_s3 *bad;
    assert_int_equal(open_s3(f, "definitely-not-the-secret", endpoint(), &bad), 0);
    struct call c = { 0 };
    assert_int_equal(hg_s3_put_object(bad, f->bucket, "k", NULL, NULL, 0, "x", 1, on_call, &c), 0);
    wait_call(f, &c);
    assert_int_equal(c.res.status, 403);
    assert_int_equal(c.res.err, HG_ERR_REJECTED);
    assert_string_equal(c.res.code, "SignatureDoesNotMatch");
    assert_false(hg_s3_retryable(&c.res));
    call_free(&c);
    hg_s3_close(bad);
}

struct fetched {
    long status;
    struct hg_buf body;
};

static size_t on_curl_body(char *p, size_t sz, size_t n, void *arg)
{
    struct fetched *r = arg;
    return hg_buf_append(&r->body, p, sz * n) == 0 ? sz * n : 0;
}

/* Plain blocking curl, no credentials: what a consumer of the URL does. */
static void fetch(const char *url, struct fetched *out)
{
    CURL *e = curl_easy_init();
    hg_buf_init(&out->body, MiB);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_curl_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 10L);
    assert_int_equal(curl_easy_perform(e), CURLE_OK);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &out->status);
    curl_easy_cleanup(e);
}

static void test_presign(void **state)
{
    struct fixture *f = *state;
    if (endpoint() == NULL)
        skip();
    ensure_bucket(f);
    const char *key = "media-inbound/acme/image/2026-01-01/wamid x\xc3\xa9" ".jpg";
    put(f, key, "jpeg bytes", 10, 0);

    char url[4096];
    uint64_t now = hg_time_now_ns() / 1000000000u;
    assert_int_equal(hg_s3_presign_get(f->s3, f->bucket, key, 300, now, url, sizeof(url)), 0);
    assert_non_null(strstr(url, "X-Amz-Expires=300"));
    struct fetched r;
    fetch(url, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body.len, 10);
    assert_memory_equal(r.body.data, "jpeg bytes", 10);
    hg_buf_free(&r.body);

    /* one flipped signature digit is refused: the peer really checks query auth */
    size_t n = strlen(url);
    url[n - 1] = url[n - 1] == '0' ? '1' : '0';
    fetch(url, &r);
    assert_int_equal(r.status, 403);
    assert_non_null(strstr(hg_buf_cstr(&r.body), "SignatureDoesNotMatch"));
    hg_buf_free(&r.body);

    /* expired */
    assert_int_equal(hg_s3_presign_get(f->s3, f->bucket, key, 1, now, url, sizeof(url)), 0);
    sleep(2);
    fetch(url, &r);
    assert_int_equal(r.status, 403);
    assert_non_null(strstr(hg_buf_cstr(&r.body), "expired"));
    hg_buf_free(&r.body);
}

/* Ticks while the client works: the loop must keep turning during big uploads. */
struct ticker {
    uv_timer_t timer;
    uint64_t last_ns, max_gap_ns;
    int ticks;
    bool closed;
};

static void on_ticker_closed(uv_handle_t *h)
{
    HG_CONTAINER_OF((uv_timer_t *)h, struct ticker, timer)->closed = true;
}

static void on_tick(uv_timer_t *t)
{
    struct ticker *tk = HG_CONTAINER_OF(t, struct ticker, timer);
    uint64_t now = uv_hrtime();
    if (tk->last_ns != 0 && now - tk->last_ns > tk->max_gap_ns)
        tk->max_gap_ns = now - tk->last_ns;
    tk->last_ns = now;
    tk->ticks++;
}

static void test_multipart(void **state)
{
    struct fixture *f = *state;
    if (endpoint() == NULL)
        skip();
    ensure_bucket(f);
    const size_t total = 12 * MiB + 12345, part = 5 * MiB;
    unsigned char *data = malloc(total);
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < total; i++) { /* xorshift: no repeating pattern to hide a misplaced part */
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        data[i] = (unsigned char)x;
    }
    const char *key = "media-inbound/acme/video/2026-01-01/big file.mp4";

    struct ticker tk = { 0 };
    uv_timer_init(&f->loop, &tk.timer);
    uv_timer_start(&tk.timer, on_tick, 5, 5);

    struct call c = { 0 };
    assert_int_equal(hg_s3_multipart_begin(f->s3, f->bucket, key, "video/mp4", NULL, 0, on_call,
                                           &c), 0);
    wait_call(f, &c);
    assert_int_equal(c.res.err, 0);
    char upload_id[256];
    snprintf(upload_id, sizeof(upload_id), "%s", c.res.upload_id);
    assert_true(strlen(upload_id) > 0);
    call_free(&c);

    char etags[3][128];
    const char *etag_ptrs[3];
    size_t nparts = 0;
    for (size_t off = 0; off < total; off += part, nparts++) {
        size_t len = HG_MIN(part, total - off);
        assert_int_equal(hg_s3_multipart_upload_part(f->s3, f->bucket, key, upload_id,
                                                     (int)nparts + 1, data + off, len, on_call,
                                                     &c), 0);
        wait_call(f, &c);
        assert_int_equal(c.res.err, 0);
        assert_true(strlen(c.res.etag) > 0);
        snprintf(etags[nparts], sizeof(etags[0]), "%s", c.res.etag);
        etag_ptrs[nparts] = etags[nparts];
        call_free(&c);
    }
    assert_int_equal(nparts, 3);
    assert_int_equal(hg_s3_multipart_complete(f->s3, f->bucket, key, upload_id, etag_ptrs, nparts,
                                              on_call, &c), 0);
    wait_call(f, &c);
    assert_int_equal(c.res.err, 0);
    call_free(&c);
    uv_timer_stop(&tk.timer);

    /* the loop kept ticking: no call blocked it for long */
    assert_true(tk.ticks > 3);
    assert_true(tk.max_gap_ns < 500ull * 1000000);

    get_expect(f, key, data, total);

    /*
     * Abort: s3rver 4 has no AbortMultipartUpload and answers 405 MethodNotAllowed, but only after
     * checking the signature, so this still proves the DELETE ?uploadId= request is signed right.
     * Real S3 and MinIO answer 204.
     */
    assert_int_equal(hg_s3_multipart_begin(f->s3, f->bucket, "aborted", NULL, NULL, 0, on_call,
                                           &c), 0);
    wait_call(f, &c);
    assert_int_equal(c.res.err, 0);
    snprintf(upload_id, sizeof(upload_id), "%s", c.res.upload_id);
    call_free(&c);
    assert_int_equal(hg_s3_multipart_abort(f->s3, f->bucket, "aborted", upload_id, on_call, &c),
                     0);
    wait_call(f, &c);
    if (c.res.err != 0) {
        assert_int_equal(c.res.status, 405);
        assert_string_equal(c.res.code, "MethodNotAllowed");
    }
    call_free(&c);

    /* tk lives on this stack frame: wait for its close before returning */
    uv_close((uv_handle_t *)&tk.timer, on_ticker_closed);
    while (!tk.closed)
        uv_run(&f->loop, UV_RUN_ONCE);
    free(data);
}

struct src {
    const unsigned char *data;
    size_t len, off;
};

static size_t read_src(void *arg, char *dst, size_t cap)
{
    struct src *s = arg;
    size_t n = HG_MIN(cap, s->len - s->off);
    memcpy(dst, s->data + s->off, n);
    s->off += n;
    return n;
}

static void test_stream_put(void **state)
{
    struct fixture *f = *state;
    if (endpoint() == NULL)
        skip();
    ensure_bucket(f);
    size_t len = 2 * MiB + 3;
    unsigned char *data = malloc(len);
    for (size_t i = 0; i < len; i++)
        data[i] = (unsigned char)(i % 251);
    struct src s = { data, len, 0 };
    struct call c = { 0 };
    assert_int_equal(hg_s3_put_object_stream(f->s3, f->bucket, "streamed/one", "image/png", NULL, 0,
                                             (int64_t)len, read_src, &s, on_call, &c), 0);
    wait_call(f, &c);
    assert_int_equal(c.res.err, 0);
    assert_int_equal(s.off, len);
    call_free(&c);
    get_expect(f, "streamed/one", data, len);
    free(data);
}

/* ---- max_inflight: calls past the bound wait in the client's FIFO ---- */

struct queued {
    struct hg_http *http;
    int order[16];           /* callback order: the index each call was started with */
    int done;
    int errs[16];
    size_t max_http_pending; /* the most transfers hg_http held when a callback ran */
};

struct queued_call {
    struct queued *q;
    int index;
};

static void on_queued(void *arg, const struct hg_s3_result *res)
{
    struct queued_call *qc = arg;
    struct queued *q = qc->q;
    size_t p = hg_http_pending(q->http);
    if (p > q->max_http_pending)
        q->max_http_pending = p;
    q->errs[qc->index] = res->err;
    q->order[q->done++] = qc->index;
}

static void test_queue_bounded(void **state)
{
    struct fixture *f = *state;
    if (endpoint() == NULL)
        skip();
    struct hg_s3 *s3;
    const struct hg_s3_opts o = {
        .endpoint = endpoint(), .access_key = env_or("HG_TEST_S3_ACCESS_KEY", "S3RVER"),
        .secret_key = env_or("HG_TEST_S3_SECRET_KEY", "S3RVER"), .path_style = true,
        .max_inflight = 2,
    };
    assert_int_equal(hg_s3_open(f->http, &o, &s3), 0);
    ensure_bucket(f);
    enum { N = 12 };
    struct queued q = { .http = f->http };
    struct queued_call qc[N];
    char bodies[N][32];
    for (int i = 0; i < N; i++) {
        /* Key and metadata live in one reused buffer: queued calls must keep their own copies. */
        char key[64], val[32];
        snprintf(key, sizeof(key), "queued/%02d", i);
        snprintf(val, sizeof(val), "v%d", i);
        snprintf(bodies[i], sizeof(bodies[i]), "body of call %d", i);
        const struct hg_http_header meta = { "x-amz-meta-index", val };
        qc[i] = (struct queued_call){ &q, i };
        assert_int_equal(hg_s3_put_object(s3, f->bucket, key, "text/plain", &meta, 1, bodies[i],
                                          strlen(bodies[i]), on_queued, &qc[i]), 0);
        memset(key, 'x', sizeof(key) - 1);
        memset(val, 'y', sizeof(val) - 1);
    }
    assert_int_equal(hg_s3_pending(s3), N);
    assert_int_equal(hg_http_pending(f->http), 2);
    assert_int_equal(q.done, 0); /* never inside the call */
    while (q.done < N)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(hg_s3_pending(s3), 0);
    assert_true(q.max_http_pending <= 2);
    for (int i = 0; i < N; i++)
        assert_int_equal(q.errs[i], 0);
    /* The queued calls went out under their own keys with their own bodies. */
    for (int i = 0; i < N; i++) {
        char key[64];
        snprintf(key, sizeof(key), "queued/%02d", i);
        get_expect(f, key, bodies[i], strlen(bodies[i]));
    }
    hg_s3_close(s3);
}

/* Against a closed port: one call at a time, callbacks in FIFO order, each failing on its own. */
static void test_queue_refused_in_order(void **state)
{
    (void)state;
    uv_loop_t loop;
    struct hg_http *http;
    struct hg_s3 *s3;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(hg_http_open(&loop, &http), 0);
    const struct hg_s3_opts o = { .endpoint = "http://127.0.0.1:1", .access_key = "a",
                                  .secret_key = "b", .path_style = true, .max_inflight = 1 };
    assert_int_equal(hg_s3_open(http, &o, &s3), 0);
    struct queued q = { .http = http };
    struct queued_call qc[4];
    for (int i = 0; i < 4; i++) {
        qc[i] = (struct queued_call){ &q, i };
        assert_int_equal(hg_s3_put_object(s3, "bucket", "k", NULL, NULL, 0, "x", 1, on_queued, &qc[i]), 0);
    }
    assert_int_equal(hg_http_pending(http), 1);
    assert_int_equal(hg_s3_pending(s3), 4);
    while (q.done < 4)
        uv_run(&loop, UV_RUN_ONCE);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(q.order[i], i);
        assert_int_equal(q.errs[i], HG_ERR_UNAVAILABLE);
    }
    assert_true(q.max_http_pending <= 1);
    assert_int_equal(hg_s3_pending(s3), 0);
    hg_s3_close(s3);
    hg_http_close(http, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* Closing the HTTP client ends the queued calls too, each callback once, before close returns. */
static void test_queue_http_close(void **state)
{
    (void)state;
    uv_loop_t loop;
    struct hg_http *http;
    struct hg_s3 *s3;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(hg_http_open(&loop, &http), 0);
    const struct hg_s3_opts o = { .endpoint = "http://127.0.0.1:1", .access_key = "a",
                                  .secret_key = "b", .path_style = true, .max_inflight = 1 };
    assert_int_equal(hg_s3_open(http, &o, &s3), 0);
    struct queued q = { .http = http };
    struct queued_call qc[3];
    for (int i = 0; i < 3; i++) {
        qc[i] = (struct queued_call){ &q, i };
        assert_int_equal(hg_s3_put_object(s3, "bucket", "k", NULL, NULL, 0, "x", 1, on_queued, &qc[i]), 0);
    }
    hg_http_close(http, NULL, NULL);
    assert_int_equal(q.done, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(q.order[i], i);
        assert_int_equal(q.errs[i], HG_ERR_CLOSED);
    }
    assert_int_equal(hg_s3_pending(s3), 0);
    hg_s3_close(s3);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retryable),
        cmocka_unit_test_setup_teardown(test_open_and_args, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bucket_put_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_encoding, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_secret, setup, teardown),
        cmocka_unit_test_setup_teardown(test_presign, setup, teardown),
        cmocka_unit_test_setup_teardown(test_multipart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_put, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_bounded, setup, teardown),
        cmocka_unit_test(test_queue_refused_in_order),
        cmocka_unit_test(test_queue_http_close),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}

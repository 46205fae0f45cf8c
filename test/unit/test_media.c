/* Media module against the fake Graph API (test/fakes/graph_api.py), the S3 test peer and a fake
 * clamd on the test's own loop: round trips, every failure, retries, limits, scan, shutdown; URL
 * jobs against the fake's Twilio media URLs and its storage host (Basic auth, redirects). */
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
#include <jansson.h>
#include <mbedtls/sha256.h>

#include "clients/http.h"
#include "clients/s3.h"
#include "core/common.h"
#include "core/err.h"
#include "core/hmac.h"
#include "core/str.h"
#include "core/time.h"
#include "media/media.h"
#include "ops/metrics.h"

#define KiB 1024
#define FIXTURES "../fixtures/media/"
/* 2025-02-12T00:43:44Z, the date in every key below */
#define OCCURRED 1739321024u

struct outcome {
    int calls;
    enum hg_media_status status;
    char error[64];
    char key[1024];
    char mime[128];
    char sha[65];
    char url[4096];
    uint64_t size, expires_at_s, total_ms;
    unsigned attempts;
    bool multipart, scanned;
    json_t *json;
};

struct fixture {
    uv_loop_t loop;
    struct hg_http *http;
    struct hg_s3 *s3;
    struct hg_media *media;
    char bucket[64];
};

/* ---- helpers ---- */

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return (v != NULL && *v != '\0') ? v : NULL;
}

static bool have_servers(void)
{
    return env("HG_TEST_GRAPH_URL") != NULL && env("HG_TEST_S3_ENDPOINT") != NULL;
}

static const char *token(void)
{
    return env("HG_TEST_GRAPH_TOKEN") ? env("HG_TEST_GRAPH_TOKEN") : "test-graph-token";
}

static const char *token2(void)
{
    return env("HG_TEST_GRAPH_TOKEN2") ? env("HG_TEST_GRAPH_TOKEN2") : "test-graph-token-2";
}

static void on_result(void *arg, const struct hg_media_result *r)
{
    struct outcome *o = arg;
    o->calls++;
    o->status = r->status;
    snprintf(o->error, sizeof(o->error), "%s", r->error ? r->error : "");
    snprintf(o->key, sizeof(o->key), "%s", r->key ? r->key : "");
    snprintf(o->mime, sizeof(o->mime), "%s", r->mime_type ? r->mime_type : "");
    snprintf(o->sha, sizeof(o->sha), "%s", r->sha256 ? r->sha256 : "");
    snprintf(o->url, sizeof(o->url), "%s", r->url ? r->url : "");
    o->size = r->size;
    o->expires_at_s = r->expires_at_s;
    o->total_ms = r->total_ms;
    o->attempts = r->attempts;
    o->multipart = r->multipart;
    o->scanned = r->scanned;
    /* the error is NULL exactly when stored */
    assert_true((r->status == HG_MEDIA_STORED) == (r->error == NULL));
    o->json = hg_media_result_json(r);
}

static void outcome_free(struct outcome *o)
{
    json_decref(o->json);
    memset(o, 0, sizeof(*o));
}

static void wait_outcomes(struct fixture *f, struct outcome *o, size_t n)
{
    uint64_t deadline = hg_time_mono_ns() + 30ull * 1000000000u;
    for (;;) {
        size_t done = 0;
        for (size_t i = 0; i < n; i++) {
            assert_true(o[i].calls <= 1);
            done += o[i].calls == 1;
        }
        if (done == n)
            break;
        assert_true(hg_time_mono_ns() < deadline);
        uv_run(&f->loop, UV_RUN_ONCE);
    }
}

static struct hg_media_opts base_opts(struct fixture *f)
{
    struct hg_media_opts o = {
        .graph_api_base = env("HG_TEST_GRAPH_URL") ? env("HG_TEST_GRAPH_URL") : "http://127.0.0.1:1",
        .graph_api_version = "v18.0",
        .bucket = f->bucket,
        .max_attempts = 4,
        .backoff_base_ms = 20,
        .backoff_max_ms = 2000,
    };
    o.max_size[HG_MEDIA_IMAGE] = 100 * KiB; /* "big" is 300 KiB */
    return o;
}

static void open_media(struct fixture *f, const struct hg_media_opts *o)
{
    assert_int_equal(hg_media_open(&f->loop, f->http, f->s3, o, &f->media), 0);
}

static struct hg_media_job job_for(const char *media_id, enum hg_media_type t, const char *msg)
{
    return (struct hg_media_job){
        .tenant = "acme",
        .access_token = token(),
        .media_id = media_id,
        .media_type = t,
        .message_id = msg,
        .occurred_at_s = OCCURRED,
    };
}

static void fetch(struct fixture *f, const struct hg_media_job *job, struct outcome *o)
{
    assert_int_equal(hg_media_fetch(f->media, job, on_result, o), 0);
    assert_int_equal(o->calls, 0); /* never inside fetch */
}

static void run_one(struct fixture *f, const struct hg_media_job *job, struct outcome *o)
{
    fetch(f, job, o);
    wait_outcomes(f, o, 1);
}

static unsigned char *read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    unsigned char *buf = malloc(1 << 20);
    *len = fread(buf, 1, 1 << 20, fp);
    fclose(fp);
    return buf;
}

static void sha_hex(const void *p, size_t n, char out[65])
{
    unsigned char sum[32];
    mbedtls_sha256_ret(p, n, sum, 0);
    hg_hex(out, sum, 32);
}

struct fetched {
    long status;
    struct hg_buf body;
    char content_type[128];
    char meta_tenant[64];
    char meta_sha[80];
};

static size_t on_curl_body(char *p, size_t sz, size_t n, void *arg)
{
    struct fetched *r = arg;
    return hg_buf_append(&r->body, p, sz * n) == 0 ? sz * n : 0;
}

static void header_value(const char *line, size_t n, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    if (n <= nl + 1 || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
        return;
    const char *v = line + nl + 1;
    size_t vn = n - nl - 1;
    while (vn > 0 && *v == ' ') {
        v++;
        vn--;
    }
    while (vn > 0 && (v[vn - 1] == '\r' || v[vn - 1] == '\n'))
        vn--;
    snprintf(out, cap, "%.*s", (int)vn, v);
}

static size_t on_curl_header(char *p, size_t sz, size_t n, void *arg)
{
    struct fetched *r = arg;
    header_value(p, sz * n, "content-type", r->content_type, sizeof(r->content_type));
    header_value(p, sz * n, "x-amz-meta-tenant", r->meta_tenant, sizeof(r->meta_tenant));
    header_value(p, sz * n, "x-amz-meta-sha256", r->meta_sha, sizeof(r->meta_sha));
    return sz * n;
}

/* Plain blocking libcurl, no credentials: what a consumer of the event does. */
static void curl_get(const char *url, const char *method, struct fetched *out)
{
    memset(out, 0, sizeof(*out));
    CURL *e = curl_easy_init();
    hg_buf_init(&out->body, 4 << 20);
    curl_easy_setopt(e, CURLOPT_URL, url);
    if (method != NULL)
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_curl_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_curl_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, out);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 10L);
    assert_int_equal(curl_easy_perform(e), CURLE_OK);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &out->status);
    curl_easy_cleanup(e);
}

static json_t *graph_stats(void)
{
    char url[256];
    struct fetched r;
    snprintf(url, sizeof(url), "%s/_stats", env("HG_TEST_GRAPH_URL"));
    curl_get(url, NULL, &r);
    assert_int_equal(r.status, 200);
    json_t *doc = json_loadb(r.body.data, r.body.len, 0, NULL);
    assert_non_null(doc);
    hg_buf_free(&r.body);
    return doc;
}

static void graph_reset(void)
{
    char url[256];
    struct fetched r;
    snprintf(url, sizeof(url), "%s/_reset", env("HG_TEST_GRAPH_URL"));
    curl_get(url, "POST", &r);
    assert_int_equal(r.status, 200);
    hg_buf_free(&r.body);
}

struct s3call {
    int calls;
    int err;
    struct hg_buf body;
};

static void on_s3(void *arg, const struct hg_s3_result *res)
{
    struct s3call *c = arg;
    c->calls++;
    c->err = res->err;
    hg_buf_init(&c->body, 4 << 20);
    if (res->body != NULL && res->body->len > 0)
        assert_int_equal(hg_buf_append(&c->body, res->body->data, res->body->len), 0);
}

static void s3_wait(struct fixture *f, struct s3call *c)
{
    while (c->calls == 0)
        uv_run(&f->loop, UV_RUN_ONCE);
}

/* The stored object (via our S3 client), or err HG_ERR_NOT_FOUND. */
static int s3_get(struct fixture *f, const char *key, struct hg_buf *out)
{
    struct s3call c = { 0 };
    assert_int_equal(hg_s3_get_object(f->s3, f->bucket, key, 4 << 20, on_s3, &c), 0);
    s3_wait(f, &c);
    *out = c.body;
    return c.err;
}

static void assert_not_stored(struct fixture *f, const char *key)
{
    struct hg_buf b;
    assert_int_equal(s3_get(f, key, &b), HG_ERR_NOT_FOUND);
    hg_buf_free(&b);
}

/* ---- fake clamd: INSTREAM over a unix socket, flags the EICAR test string ---- */

struct clamd {
    uv_pipe_t server;
    char path[108];
    int scans;
    size_t max_len;          /* longest stream scanned, to see every byte arrived */
    bool closed;
};

struct clamd_conn {
    uv_pipe_t pipe;
    struct clamd *c;
    struct hg_buf in;
    bool answered;
    uv_write_t wr;
    char reply[64];
};

static void on_conn_closed(uv_handle_t *h)
{
    struct clamd_conn *cc = HG_CONTAINER_OF((uv_pipe_t *)h, struct clamd_conn, pipe);
    hg_buf_free(&cc->in);
    free(cc);
}

static void on_reply_written(uv_write_t *w, int status)
{
    struct clamd_conn *cc = HG_CONTAINER_OF(w, struct clamd_conn, wr);
    uv_close((uv_handle_t *)&cc->pipe, on_conn_closed);
}

static void clamd_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char scratch[64 * 1024];
    buf->base = scratch;
    buf->len = sizeof(scratch);
}

/* Parse what arrived: "zINSTREAM\0", then <be32 len><bytes>..., then a zero length. */
static void clamd_try_answer(struct clamd_conn *cc)
{
    const unsigned char *p = (const unsigned char *)cc->in.data;
    size_t len = cc->in.len, off = 10;
    if (len < 10)
        return;
    assert_memory_equal(p, "zINSTREAM\0", 10);
    struct hg_buf payload;
    hg_buf_init(&payload, 4 << 20);
    for (;;) {
        if (off + 4 > len) {
            hg_buf_free(&payload);
            return; /* more to come */
        }
        uint32_t n = (uint32_t)p[off] << 24 | (uint32_t)p[off + 1] << 16 |
                     (uint32_t)p[off + 2] << 8 | p[off + 3];
        off += 4;
        if (n == 0)
            break;
        if (off + n > len) {
            hg_buf_free(&payload);
            return;
        }
        assert_int_equal(hg_buf_append(&payload, p + off, n), 0);
        off += n;
    }
    bool infected = payload.len > 0 &&
                    memmem(payload.data, payload.len, "EICAR-STANDARD-ANTIVIRUS-TEST-FILE", 34);
    cc->c->scans++;
    cc->c->max_len = HG_MAX(cc->c->max_len, payload.len);
    hg_buf_free(&payload);
    snprintf(cc->reply, sizeof(cc->reply), "%s",
             infected ? "stream: Eicar-Test-Signature FOUND" : "stream: OK");
    uv_buf_t b = uv_buf_init(cc->reply, (unsigned)strlen(cc->reply) + 1);
    cc->answered = true;
    uv_read_stop((uv_stream_t *)&cc->pipe);
    assert_int_equal(uv_write(&cc->wr, (uv_stream_t *)&cc->pipe, &b, 1, on_reply_written), 0);
}

static void clamd_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct clamd_conn *cc = HG_CONTAINER_OF((uv_pipe_t *)s, struct clamd_conn, pipe);
    if (nread > 0) {
        assert_int_equal(hg_buf_append(&cc->in, buf->base, (size_t)nread), 0);
        clamd_try_answer(cc);
    } else if (nread < 0 && !cc->answered) {
        uv_close((uv_handle_t *)&cc->pipe, on_conn_closed);
    }
}

static void clamd_on_conn(uv_stream_t *server, int status)
{
    struct clamd *c = HG_CONTAINER_OF((uv_pipe_t *)server, struct clamd, server);
    struct clamd_conn *cc = calloc(1, sizeof(*cc));
    cc->c = c;
    hg_buf_init(&cc->in, 4 << 20);
    uv_pipe_init(server->loop, &cc->pipe, 0);
    assert_int_equal(uv_accept(server, (uv_stream_t *)&cc->pipe), 0);
    uv_read_start((uv_stream_t *)&cc->pipe, clamd_alloc, clamd_on_read);
}

static void clamd_start(struct fixture *f, struct clamd *c)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->path, sizeof(c->path), "/tmp/hg-test-clamd-%d.sock", (int)getpid());
    unlink(c->path);
    uv_pipe_init(&f->loop, &c->server, 0);
    assert_int_equal(uv_pipe_bind(&c->server, c->path), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&c->server, 16, clamd_on_conn), 0);
}

static void on_clamd_closed(uv_handle_t *h)
{
    HG_CONTAINER_OF((uv_pipe_t *)h, struct clamd, server)->closed = true;
}

static void clamd_stop(struct fixture *f, struct clamd *c)
{
    uv_close((uv_handle_t *)&c->server, on_clamd_closed);
    while (!c->closed)
        uv_run(&f->loop, UV_RUN_ONCE);
    unlink(c->path);
}

/* ---- fixture ---- */

static void ensure_bucket(struct fixture *f)
{
    struct s3call c = { 0 };
    assert_int_equal(hg_s3_ensure_bucket(f->s3, f->bucket, on_s3, &c), 0);
    s3_wait(f, &c);
    assert_int_equal(c.err, 0);
    hg_buf_free(&c.body);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(hg_http_open(&f->loop, &f->http), 0);
    snprintf(f->bucket, sizeof(f->bucket), "hg-media-%llu",
             (unsigned long long)(hg_time_now_ns() / 1000) % 1000000000000ull);
    const struct hg_s3_opts so = {
        .endpoint = env("HG_TEST_S3_ENDPOINT") ? env("HG_TEST_S3_ENDPOINT") : "http://127.0.0.1:1",
        .access_key = env("HG_TEST_S3_ACCESS_KEY") ? env("HG_TEST_S3_ACCESS_KEY") : "S3RVER",
        .secret_key = env("HG_TEST_S3_SECRET_KEY") ? env("HG_TEST_S3_SECRET_KEY") : "S3RVER",
        .path_style = true,
        .timeout_ms = 30000,
    };
    assert_int_equal(hg_s3_open(f->http, &so, &f->s3), 0);
    if (have_servers()) {
        graph_reset();
        ensure_bucket(f);
    }
    *state = f;
    return 0;
}

static void on_media_closed(void *arg)
{
    *(bool *)arg = true;
}

static void close_media(struct fixture *f)
{
    bool closed = false;
    hg_media_close(f->media, on_media_closed, &closed);
    while (!closed)
        uv_run(&f->loop, UV_RUN_ONCE);
    f->media = NULL;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (f->media != NULL)
        close_media(f);
    assert_int_equal(hg_s3_pending(f->s3), 0);
    hg_s3_close(f->s3);
    hg_http_close(f->http, NULL, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    return 0;
}

/* ---- tests without servers ---- */

static void test_sniff(void **state)
{
    static const struct {
        const char *file;
        enum hg_media_type type;
        const char *declared, *mime, *ext;
    } ok[] = {
        { "tiny.jpg", HG_MEDIA_IMAGE, "image/jpeg", "image/jpeg", "jpg" },
        { "tiny.jpg", HG_MEDIA_IMAGE, "IMAGE/JPG", "image/jpeg", "jpg" },
        { "tiny.png", HG_MEDIA_IMAGE, "image/png", "image/png", "png" },
        { "tiny.webp", HG_MEDIA_STICKER, "image/webp", "image/webp", "webp" },
        { "tiny.ogg", HG_MEDIA_AUDIO, "audio/ogg; codecs=opus", "audio/ogg", "ogg" },
        { "tiny.mp4", HG_MEDIA_VIDEO, "video/mp4", "video/mp4", "mp4" },
        { "tiny.pdf", HG_MEDIA_DOCUMENT, "application/pdf", "application/pdf", "pdf" },
        { "tiny.jpg", HG_MEDIA_DOCUMENT, "image/jpeg", "image/jpeg", "jpg" }, /* photo as file */
        { "tiny.png", HG_MEDIA_IMAGE, NULL, "image/png", "png" },           /* bytes decide */
    };
    for (size_t i = 0; i < HG_ARRAY_SIZE(ok); i++) {
        size_t n;
        char path[256];
        snprintf(path, sizeof(path), FIXTURES "%s", ok[i].file);
        unsigned char *p = read_file(path, &n);
        const char *mime = NULL, *ext = NULL;
        assert_int_equal(hg_media_sniff(ok[i].type, ok[i].declared, p, n, &mime, &ext), 0);
        assert_string_equal(mime, ok[i].mime);
        assert_string_equal(ext, ok[i].ext);
        free(p);
    }
    const char *mime, *ext;
    const unsigned char png[] = "\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    const unsigned char mp3[] = "ID3\x04\0\0\0\0\0\0";
    const unsigned char sync[] = { 0xff, 0xfb, 0x90, 0x64 };
    const unsigned char adts[] = { 0xff, 0xf1, 0x50, 0x80 };
    assert_int_equal(hg_media_sniff(HG_MEDIA_IMAGE, "image/jpeg", png, 16, &mime, &ext),
                     HG_ERR_REJECTED);                                   /* bytes lie */
    assert_int_equal(hg_media_sniff(HG_MEDIA_STICKER, "image/png", png, 16, &mime, &ext),
                     HG_ERR_REJECTED);                                   /* stickers are WebP */
    assert_int_equal(hg_media_sniff(HG_MEDIA_VIDEO, "image/png", png, 16, &mime, &ext),
                     HG_ERR_REJECTED);                                   /* not a video type */
    assert_int_equal(hg_media_sniff(HG_MEDIA_DOCUMENT, "application/x-evil", png, 16, &mime,
                                    &ext), HG_ERR_INVALID);
    assert_int_equal(hg_media_sniff(HG_MEDIA_IMAGE, "image/png", png, 3, &mime, &ext),
                     HG_ERR_REJECTED);                                   /* too short */
    assert_int_equal(hg_media_sniff(HG_MEDIA_AUDIO, "audio/mpeg", mp3, 10, &mime, &ext), 0);
    assert_string_equal(ext, "mp3");
    assert_int_equal(hg_media_sniff(HG_MEDIA_AUDIO, "audio/mpeg", sync, 4, &mime, &ext), 0);
    assert_int_equal(hg_media_sniff(HG_MEDIA_AUDIO, "audio/aac", adts, 4, &mime, &ext), 0);
    assert_int_equal(hg_media_sniff(HG_MEDIA_AUDIO, "audio/mpeg", adts, 4, &mime, &ext),
                     HG_ERR_REJECTED);
    assert_int_equal(hg_media_sniff(HG_MEDIA_DOCUMENT, "text/plain",
                                    (const unsigned char *)"hello\n", 6, &mime, &ext), 0);
    assert_string_equal(ext, "txt");
    assert_int_equal(hg_media_sniff(HG_MEDIA_DOCUMENT, "text/plain", png, 16, &mime, &ext),
                     HG_ERR_REJECTED);                                   /* binary as text */
    assert_int_equal(hg_media_type_parse("sticker"), HG_MEDIA_STICKER);
    assert_int_equal(hg_media_type_parse("hologram"), -1);
}

static void test_result_json(void **state)
{
    const struct hg_media_result ok = {
        .status = HG_MEDIA_STORED, .media_id = "123", .media_type = HG_MEDIA_IMAGE,
        .bucket = "media", .key = "media-inbound/acme/image/2025-02-12/w.jpg",
        .mime_type = "image/jpeg", .sha256 = "ab", .size = 159,
        .url = "http://s3/x?X-Amz-Signature=1", .expires_at_s = OCCURRED,
    };
    json_t *j = hg_media_result_json(&ok);
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    assert_string_equal(s, "{\"media_id\":\"123\",\"type\":\"image\",\"bucket\":\"media\","
                           "\"key\":\"media-inbound/acme/image/2025-02-12/w.jpg\","
                           "\"mime_type\":\"image/jpeg\",\"size\":159,\"sha256\":\"ab\","
                           "\"url\":\"http://s3/x?X-Amz-Signature=1\","
                           "\"expires_at\":\"2025-02-12T00:43:44Z\"}");
    free(s);
    json_decref(j);
    const struct hg_media_result bad = {
        .status = HG_MEDIA_FAILED, .error = "too_large", .media_id = "9",
        .media_type = HG_MEDIA_STICKER,
    };
    j = hg_media_result_json(&bad);
    s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    assert_string_equal(s, "{\"media_id\":\"9\",\"type\":\"sticker\",\"error\":\"too_large\"}");
    free(s);
    json_decref(j);
}

static void test_open_and_args(void **state)
{
    struct fixture *f = *state;
    struct hg_media *m;
    struct hg_media_opts o = base_opts(f);
    o.bucket = NULL;
    assert_int_equal(hg_media_open(&f->loop, f->http, f->s3, &o, &m), HG_ERR_CONFIG);
    o = base_opts(f);
    o.graph_api_base = "ftp://x";
    assert_int_equal(hg_media_open(&f->loop, f->http, f->s3, &o, &m), HG_ERR_CONFIG);
    o = base_opts(f);
    o.part_size = 10;
    assert_int_equal(hg_media_open(&f->loop, f->http, f->s3, &o, &m), HG_ERR_CONFIG);

    o = base_opts(f);
    o.graph_api_base = "http://127.0.0.1:1"; /* nobody there */
    o.max_queued = 1;
    o.max_attempts = 2;
    open_media(f, &o);
    struct outcome out[2] = { 0 };
    struct hg_media_job j = job_for("1", HG_MEDIA_IMAGE, "wamid.A");
    j.tenant = NULL;
    assert_int_equal(hg_media_fetch(f->media, &j, on_result, &out[0]), HG_ERR_INVALID);
    j = job_for("1", (enum hg_media_type)42, "wamid.A");
    assert_int_equal(hg_media_fetch(f->media, &j, on_result, &out[0]), HG_ERR_INVALID);
    j = job_for("1", HG_MEDIA_IMAGE, "wamid.A");
    fetch(f, &j, &out[0]);
    /* the queue holds one: the next is refused and its callback never runs */
    assert_int_equal(hg_media_fetch(f->media, &j, on_result, &out[1]), HG_ERR_FULL);
    /* network trouble is retried, then left for later, nothing stored */
    wait_outcomes(f, out, 1);
    assert_int_equal(out[0].status, HG_MEDIA_RETRY);
    assert_string_equal(out[0].error, "download_failed");
    assert_int_equal(out[0].attempts, 2);
    assert_int_equal(out[1].calls, 0);
    outcome_free(&out[0]);
}

/* ---- tests against the fake Graph API and S3 ---- */

static void test_round_trip(void **state)
{
    struct fixture *f = *state;
    if (!have_servers())
        skip();
    struct hg_media_opts o = base_opts(f);
    open_media(f, &o);
    static const struct {
        const char *id, *file, *type_name, *mime, *ext;
        enum hg_media_type type;
        const char *declared;
    } cases[] = {
        { "jpg", "tiny.jpg", "image", "image/jpeg", "jpg", HG_MEDIA_IMAGE, "image/jpeg" },
        { "png", "tiny.png", "image", "image/png", "png", HG_MEDIA_IMAGE, NULL },
        { "webp", "tiny.webp", "sticker", "image/webp", "webp", HG_MEDIA_STICKER, "image/webp" },
        { "ogg", "tiny.ogg", "audio", "audio/ogg", "ogg", HG_MEDIA_AUDIO, "audio/ogg; codecs=opus" },
        { "mp4", "tiny.mp4", "video", "video/mp4", "mp4", HG_MEDIA_VIDEO, "video/mp4" },
        { "pdf", "tiny.pdf", "document", "application/pdf", "pdf", HG_MEDIA_DOCUMENT, NULL },
    };
    struct outcome out[HG_ARRAY_SIZE(cases)];
    memset(out, 0, sizeof(out));
    char msgs[HG_ARRAY_SIZE(cases)][64];
    for (size_t i = 0; i < HG_ARRAY_SIZE(cases); i++) {
        /* '/' in an id must not add a path level */
        snprintf(msgs[i], sizeof(msgs[i]), "wamid.HBgL/%s==", cases[i].id);
        struct hg_media_job j = job_for(cases[i].id, cases[i].type, msgs[i]);
        j.mime_type = cases[i].declared;
        fetch(f, &j, &out[i]);
    }
    wait_outcomes(f, out, HG_ARRAY_SIZE(cases));
    uint64_t now = hg_time_now_ns() / 1000000000u;
    for (size_t i = 0; i < HG_ARRAY_SIZE(cases); i++) {
        struct outcome *r = &out[i];
        size_t n;
        char path[256], key[512], sha[65];
        snprintf(path, sizeof(path), FIXTURES "%s", cases[i].file);
        unsigned char *src = read_file(path, &n);
        sha_hex(src, n, sha);
        assert_int_equal(r->status, HG_MEDIA_STORED);
        assert_int_equal(r->attempts, 1);
        snprintf(key, sizeof(key), "media-inbound/acme/%s/2025-02-12/wamid.HBgL_%s==.%s",
                 cases[i].type_name, cases[i].id, cases[i].ext);
        assert_string_equal(r->key, key);
        assert_string_equal(r->mime, cases[i].mime);
        assert_int_equal(r->size, n);
        assert_string_equal(r->sha, sha);
        assert_false(r->multipart);
        assert_true(r->expires_at_s >= now + 3590 && r->expires_at_s <= now + 3610);

        /* the stored bytes are the source's */
        struct hg_buf b;
        assert_int_equal(s3_get(f, key, &b), 0);
        assert_int_equal(b.len, n);
        assert_memory_equal(b.data, src, n);
        hg_buf_free(&b);

        /* the presigned URL works without credentials, with the right type and metadata */
        struct fetched g;
        curl_get(r->url, NULL, &g);
        assert_int_equal(g.status, 200);
        assert_int_equal(g.body.len, n);
        assert_memory_equal(g.body.data, src, n);
        assert_string_equal(g.content_type, cases[i].mime);
        assert_string_equal(g.meta_tenant, "acme");
        assert_string_equal(g.meta_sha, sha);
        hg_buf_free(&g.body);

        /* the event's media object */
        assert_string_equal(json_string_value(json_object_get(r->json, "key")), key);
        assert_string_equal(json_string_value(json_object_get(r->json, "url")), r->url);
        assert_string_equal(json_string_value(json_object_get(r->json, "bucket")), f->bucket);
        assert_int_equal(json_integer_value(json_object_get(r->json, "size")), n);
        assert_null(json_object_get(r->json, "error"));
        free(src);
        outcome_free(r);
    }
}

static void test_presign_expires(void **state)
{
    struct fixture *f = *state;
    if (!have_servers())
        skip();
    struct hg_media_opts o = base_opts(f);
    o.presign_expiry_s = 1;
    open_media(f, &o);
    struct outcome r = { 0 };
    struct hg_media_job j = job_for("jpg", HG_MEDIA_IMAGE, "wamid.exp");
    run_one(f, &j, &r);
    assert_int_equal(r.status, HG_MEDIA_STORED);
    assert_non_null(strstr(r.url, "X-Amz-Expires=1&"));
    sleep(2);
    struct fetched g;
    curl_get(r.url, NULL, &g);
    assert_int_equal(g.status, 403);
    hg_buf_free(&g.body);
    outcome_free(&r);
}

static void test_failures(void **state)
{
    struct fixture *f = *state;
    if (!have_servers())
        skip();
    struct hg_media_opts o = base_opts(f);
    open_media(f, &o);
    static const struct {
        const char *id;
        enum hg_media_type type;
        const char *declared, *error, *key;
        const char *token;
    } cases[] = {
        { "expired", HG_MEDIA_IMAGE, NULL, "not_found", "image/2025-02-12/wamid.f0.jpg", NULL },
        { "gone", HG_MEDIA_IMAGE, NULL, "not_found", "image/2025-02-12/wamid.f1.jpg", NULL },
        { "badsha", HG_MEDIA_IMAGE, NULL, "sha256_mismatch", "image/2025-02-12/wamid.f2.jpg", NULL },
        { "liar", HG_MEDIA_IMAGE, NULL, "mime_mismatch", "image/2025-02-12/wamid.f3.jpg", NULL },
        { "big", HG_MEDIA_IMAGE, NULL, "too_large", "image/2025-02-12/wamid.f4.jpg", NULL },
        { "bigquiet", HG_MEDIA_IMAGE, NULL, "too_large", "image/2025-02-12/wamid.f5.jpg", NULL },
        { "weird", HG_MEDIA_DOCUMENT, NULL, "unsupported_type", "document/2025-02-12/wamid.f6.txt",
          NULL },
        { "jpg", HG_MEDIA_IMAGE, NULL, "unauthorized", "image/2025-02-12/wamid.f7.jpg",
          "wrong-token" },
        /* the webhook's own declaration counts too */
        { "jpg", HG_MEDIA_IMAGE, "image/png", "mime_mismatch", "image/2025-02-12/wamid.f8.jpg",
          NULL },
        { "png", HG_MEDIA_STICKER, NULL, "mime_mismatch", "sticker/2025-02-12/wamid.f9.png", NULL },
    };
    struct outcome out[HG_ARRAY_SIZE(cases)];
    memset(out, 0, sizeof(out));
    char msgs[HG_ARRAY_SIZE(cases)][32];
    for (size_t i = 0; i < HG_ARRAY_SIZE(cases); i++) {
        snprintf(msgs[i], sizeof(msgs[i]), "wamid.f%zu", i);
        struct hg_media_job j = job_for(cases[i].id, cases[i].type, msgs[i]);
        j.mime_type = cases[i].declared;
        if (cases[i].token != NULL)
            j.access_token = cases[i].token;
        fetch(f, &j, &out[i]);
    }
    wait_outcomes(f, out, HG_ARRAY_SIZE(cases));
    for (size_t i = 0; i < HG_ARRAY_SIZE(cases); i++) {
        char key[256];
        assert_int_equal(out[i].status, HG_MEDIA_FAILED);
        assert_string_equal(out[i].error, cases[i].error);
        assert_int_equal(out[i].attempts, 1); /* final: not retried */
        assert_string_equal(out[i].url, "");
        assert_string_equal(json_string_value(json_object_get(out[i].json, "error")),
                            cases[i].error);
        assert_null(json_object_get(out[i].json, "url"));
        snprintf(key, sizeof(key), "media-inbound/acme/%s", cases[i].key);
        assert_not_stored(f, key);
        outcome_free(&out[i]);
    }
    /* "big" was refused from its declared file_size, without downloading a byte */
    json_t *st = graph_stats();
    json_t *hits = json_object_get(st, "hits");
    assert_null(json_object_get(hits, "/files/big"));
    assert_int_equal(json_integer_value(json_object_get(hits, "/files/bigquiet")), 1);
    json_decref(st);
}

static void test_retries(void **state)
{
    struct fixture *f = *state;
    if (!have_servers())
        skip();
    struct hg_media_opts o = base_opts(f);
    open_media(f, &o);
    struct outcome r[2] = { 0 };
    struct hg_media_job j = job_for("flaky", HG_MEDIA_IMAGE, "wamid.flaky");
    fetch(f, &j, &r[0]);
    j = job_for("ratelimited", HG_MEDIA_IMAGE, "wamid.rl");
    fetch(f, &j, &r[1]);
    wait_outcomes(f, r, 2);
    /* metadata 503, then the file 503, then success */
    assert_int_equal(r[0].status, HG_MEDIA_STORED);
    assert_int_equal(r[0].attempts, 3);
    /* 429 with Retry-After: 1 is waited out, not retried at once */
    assert_int_equal(r[1].status, HG_MEDIA_STORED);
    assert_int_equal(r[1].attempts, 2);
    assert_true(r[1].total_ms >= 950);
    struct hg_buf b;
    assert_int_equal(s3_get(f, "media-inbound/acme/image/2025-02-12/wamid.flaky.png", &b), 0);
    hg_buf_free(&b);
    json_t *st = graph_stats();
    json_t *hits = json_object_get(st, "hits");
    assert_int_equal(json_integer_value(json_object_get(hits, "/v18.0/flaky")), 3);
    assert_int_equal(json_integer_value(json_object_get(hits, "/files/flaky")), 2);
    json_decref(st);
    outcome_free(&r[0]);
    outcome_free(&r[1]);
}

static void test_timeout(void **state)
{
    struct fixture *f = *state;
    if (!have_servers())
        skip();
    struct hg_media_opts o = base_opts(f);
    o.download_timeout_ms = 100; /* slow-* takes ~350 ms */
    o.max_attempts = 2;
    open_media(f, &o);
    struct outcome r = { 0 };
    struct hg_media_job j = job_for("slow-t", HG_MEDIA_IMAGE, "wamid.slow");
    run_one(f, &j, &r);
    assert_int_equal(r.status, HG_MEDIA_RETRY);
    assert_string_equal(r.error, "download_failed");
    assert_int_equal(r.attempts, 2);
    assert_not_stored(f, "media-inbound/acme/image/2025-02-12/wamid.slow.jpg");
    outcome_free(&r);
}

static void test_concurrency(void **state)
{
    struct fixture *f = *state;
    if (!have_servers())
        skip();
    struct hg_media_opts o = base_opts(f);
    o.max_inflight = 3;
    o.max_inflight_tenant = 2;
    open_media(f, &o);
    enum { N = 8 };
    struct outcome out[N + 1];
    memset(out, 0, sizeof(out));
    char ids[N][16], msgs[N][16];
    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof(ids[i]), "slow-%d", i);
        snprintf(msgs[i], sizeof(msgs[i]), "wamid.c%d", i);
        struct hg_media_job j = job_for(ids[i], HG_MEDIA_IMAGE, msgs[i]);
        if (i % 2) {
            j.tenant = "globex";
            j.access_token = token2();
        }
        fetch(f, &j, &out[i]);
    }
    struct hg_media_stats st;
    hg_media_stats(f->media, &st);
    assert_int_equal(st.queued, N);
    /* a fast one queued behind the slow ones still gets through before they all end */
    struct hg_media_job fast = job_for("jpg", HG_MEDIA_IMAGE, "wamid.fast");
    fast.tenant = "initech";
    fetch(f, &fast, &out[N]);
    wait_outcomes(f, &out[N], 1);
    int slow_done = 0;
    for (int i = 0; i < N; i++)
        slow_done += out[i].calls;
    assert_true(slow_done < N);
    wait_outcomes(f, out, N);
    for (int i = 0; i <= N; i++) {
        assert_int_equal(out[i].status, HG_MEDIA_STORED);
        outcome_free(&out[i]);
    }
    hg_media_stats(f->media, &st);
    assert_int_equal(st.running, 0);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.max_running, 3);
    assert_int_equal(st.max_running_tenant, 2);
    /* the server saw the same: never more than 3 at once, never more than 2 per token */
    json_t *gs = graph_stats();
    assert_int_equal(json_integer_value(json_object_get(gs, "max_inflight")), 3);
    json_t *per = json_object_get(gs, "max_inflight_token");
    /* globex alone uses token 2; acme shares token 1 with the fast initech job */
    assert_int_equal(json_integer_value(json_object_get(per, token2())), 2);
    assert_true(json_integer_value(json_object_get(per, token())) >= 2);
    json_decref(gs);
}

/* ---- URL jobs: Twilio's media URLs (Basic auth, a redirect to storage), pre-signed URLs ---- */

static const char *twilio_sid(void)
{
    return env("HG_TEST_TWILIO_ACCOUNT_SID") ? env("HG_TEST_TWILIO_ACCOUNT_SID")
                                             : "AC0123456789abcdef0123456789abcdef";
}

static const char *twilio_token(void)
{
    return env("HG_TEST_TWILIO_AUTH_TOKEN") ? env("HG_TEST_TWILIO_AUTH_TOKEN")
                                            : "twilio-media-auth-token";
}

/* The fake's Twilio media resource <name> of message MM1 (as MediaUrlN looks). */
static void twilio_url(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/twilio/2010-04-01/Accounts/%s/Messages/MM1/Media/%s",
             env("HG_TEST_GRAPH_URL") ? env("HG_TEST_GRAPH_URL") : "http://127.0.0.1:1", twilio_sid(),
             name);
}

static void basic(char *out, size_t cap, const char *user, const char *password)
{
    char plain[256], b64[400];
    int n = snprintf(plain, sizeof(plain), "%s:%s", user, password);
    assert_true(hg_base64_encode((const unsigned char *)plain, (size_t)n, b64, sizeof(b64)) > 0);
    snprintf(out, cap, "Basic %s", b64);
}

static struct hg_media_job url_job(const char *url, const char *auth, enum hg_media_type t,
                                   const char *id)
{
    return (struct hg_media_job){
        .tenant = "acme",
        .media_id = id,
        .url = url,
        .authorization = auth,
        .media_type = t,
        .message_id = id,
        .occurred_at_s = OCCURRED,
    };
}

static void test_url_job_args(void **state)
{
    struct fixture *f = *state;
    struct hg_media_opts o = base_opts(f);
    open_media(f, &o);
    struct outcome out = { 0 };
    char long_url[5000];
    memset(long_url, 'a', sizeof(long_url) - 1);
    memcpy(long_url, "http://", 7);
    long_url[sizeof(long_url) - 1] = '\0';
    struct hg_media_job j = url_job("http://127.0.0.1:1/x", NULL, HG_MEDIA_IMAGE, "MM1-0");
    j.access_token = token(); /* a URL job has no Graph token */
    assert_int_equal(hg_media_fetch(f->media, &j, on_result, &out), HG_ERR_INVALID);
    j = url_job("ftp://127.0.0.1/x", NULL, HG_MEDIA_IMAGE, "MM1-0");
    assert_int_equal(hg_media_fetch(f->media, &j, on_result, &out), HG_ERR_INVALID);
    j = url_job(long_url, NULL, HG_MEDIA_IMAGE, "MM1-0");
    assert_int_equal(hg_media_fetch(f->media, &j, on_result, &out), HG_ERR_INVALID);
    j = url_job("http://127.0.0.1:1/x", "Basic x\r\nX-Evil: 1", HG_MEDIA_IMAGE, "MM1-0");
    assert_int_equal(hg_media_fetch(f->media, &j, on_result, &out), HG_ERR_INVALID);
    j = url_job("http://127.0.0.1:1/x", NULL, HG_MEDIA_IMAGE, NULL);
    assert_int_equal(hg_media_fetch(f->media, &j, on_result, &out), HG_ERR_INVALID);
    /* a Graph job carries no authorization of its own, and needs its token */
    j = job_for("jpg", HG_MEDIA_IMAGE, "wamid.A");
    j.authorization = "Basic eA==";
    assert_int_equal(hg_media_fetch(f->media, &j, on_result, &out), HG_ERR_INVALID);
    j = job_for("jpg", HG_MEDIA_IMAGE, "wamid.A");
    j.access_token = NULL;
    assert_int_equal(hg_media_fetch(f->media, &j, on_result, &out), HG_ERR_INVALID);
    assert_int_equal(out.calls, 0);
}

static long stats_count(json_t *st, const char *table, const char *key)
{
    return (long)json_integer_value(json_object_get(json_object_get(st, table), key));
}

static void test_url_jobs(void **state)
{
    struct fixture *f = *state;
    if (!have_servers())
        skip();
    struct hg_media_opts o = base_opts(f);
    open_media(f, &o);
    json_t *st = graph_stats();
    char storage[128];
    snprintf(storage, sizeof(storage), "%s", json_string_value(json_object_get(st, "storage_url")));
    json_decref(st);

    char good[512], bad[512];
    basic(good, sizeof(good), twilio_sid(), twilio_token());
    basic(bad, sizeof(bad), twilio_sid(), "not-the-token");
    static const struct {
        const char *name;          /* Twilio media name, or a storage path for a pre-signed URL */
        bool presigned;
        int auth;                  /* 0 none, 1 right, 2 wrong */
        enum hg_media_type type;
        const char *declared;
        const char *error;         /* NULL: stored */
        const char *file, *key;
    } cases[] = {
        /* redirected to another host and port, which refuses an Authorization header */
        { "jpg", false, 1, HG_MEDIA_IMAGE, "image/jpeg", NULL, "tiny.jpg", "image/2025-02-12/MM1-0.jpg" },
        /* redirected on the same host: the header goes along there */
        { "same-png", false, 1, HG_MEDIA_IMAGE, "image/png", NULL, "tiny.png", "image/2025-02-12/MM1-1.png" },
        /* a Genesys-style pre-signed URL: no credentials at all */
        { "/storage/pdf?X-Amz-Signature=x", true, 0, HG_MEDIA_DOCUMENT, "application/pdf", NULL,
          "tiny.pdf", "document/2025-02-12/MM1-2.pdf" },
        { "jpg", false, 2, HG_MEDIA_IMAGE, "image/jpeg", "unauthorized", NULL, "image/2025-02-12/MM1-3.jpg" },
        { "jpg", false, 0, HG_MEDIA_IMAGE, "image/jpeg", "unauthorized", NULL, "image/2025-02-12/MM1-4.jpg" },
        /* validation is the Graph jobs': the cap counted on the stream, the bytes against the type */
        { "big", false, 1, HG_MEDIA_IMAGE, "image/jpeg", "too_large", NULL, "image/2025-02-12/MM1-5.jpg" },
        { "liar", false, 1, HG_MEDIA_IMAGE, "image/jpeg", "mime_mismatch", NULL, "image/2025-02-12/MM1-6.jpg" },
        { "/storage/png", true, 0, HG_MEDIA_STICKER, NULL, "mime_mismatch", NULL, "sticker/2025-02-12/MM1-7.png" },
        /* redirects are bounded */
        { "loop", false, 1, HG_MEDIA_IMAGE, "image/jpeg", "download_failed", NULL, "image/2025-02-12/MM1-8.jpg" },
        { "/storage/nothing", true, 0, HG_MEDIA_IMAGE, "image/jpeg", "not_found", NULL, "image/2025-02-12/MM1-9.jpg" },
    };
    struct outcome out[HG_ARRAY_SIZE(cases)];
    memset(out, 0, sizeof(out));
    char urls[HG_ARRAY_SIZE(cases)][512], ids[HG_ARRAY_SIZE(cases)][16];
    for (size_t i = 0; i < HG_ARRAY_SIZE(cases); i++) {
        if (cases[i].presigned)
            snprintf(urls[i], sizeof(urls[i]), "%s%s", storage, cases[i].name);
        else
            twilio_url(urls[i], sizeof(urls[i]), cases[i].name);
        snprintf(ids[i], sizeof(ids[i]), "MM1-%zu", i);
        const char *auth = cases[i].auth == 1 ? good : cases[i].auth == 2 ? bad : NULL;
        struct hg_media_job j = url_job(urls[i], auth, cases[i].type, ids[i]);
        j.mime_type = cases[i].declared;
        fetch(f, &j, &out[i]);
    }
    wait_outcomes(f, out, HG_ARRAY_SIZE(cases));
    for (size_t i = 0; i < HG_ARRAY_SIZE(cases); i++) {
        struct outcome *r = &out[i];
        char key[256];
        snprintf(key, sizeof(key), "media-inbound/acme/%s", cases[i].key);
        assert_int_equal(r->attempts, 1);
        assert_string_equal(json_string_value(json_object_get(r->json, "media_id")), ids[i]);
        if (cases[i].error != NULL) {
            assert_int_equal(r->status, HG_MEDIA_FAILED);
            assert_string_equal(r->error, cases[i].error);
            assert_null(json_object_get(r->json, "url"));
            assert_not_stored(f, key);
            outcome_free(r);
            continue;
        }
        size_t n;
        char path[256], sha[65];
        snprintf(path, sizeof(path), FIXTURES "%s", cases[i].file);
        unsigned char *src = read_file(path, &n);
        sha_hex(src, n, sha);
        assert_int_equal(r->status, HG_MEDIA_STORED);
        assert_string_equal(r->key, key);
        assert_string_equal(r->sha, sha);
        assert_int_equal(r->size, n);
        struct hg_buf b;
        assert_int_equal(s3_get(f, key, &b), 0);
        assert_int_equal(b.len, n);
        assert_memory_equal(b.data, src, n);
        hg_buf_free(&b);
        struct fetched g;
        curl_get(r->url, NULL, &g);
        assert_int_equal(g.status, 200);
        assert_int_equal(g.body.len, n);
        assert_memory_equal(g.body.data, src, n);
        hg_buf_free(&g.body);
        free(src);
        outcome_free(r);
    }

    /* The storage host never saw the account's credentials; Twilio's host saw them each time. */
    st = graph_stats();
    assert_int_equal(json_object_size(json_object_get(st, "storage_auth")), 0);
    assert_int_equal(stats_count(st, "storage_hits", "/storage/jpg"), 1);
    assert_int_equal(stats_count(st, "storage_hits", "/storage/pdf"), 1);
    char k[600];
    snprintf(k, sizeof(k), "ok /twilio/2010-04-01/Accounts/%s/Messages/MM1/Media/jpg", twilio_sid());
    assert_int_equal(stats_count(st, "twilio_auth", k), 1);
    snprintf(k, sizeof(k), "bad /twilio/2010-04-01/Accounts/%s/Messages/MM1/Media/jpg", twilio_sid());
    assert_int_equal(stats_count(st, "twilio_auth", k), 2);
    assert_int_equal(stats_count(st, "twilio_auth", "ok /twilio-storage/png"), 1);
    /* "big" was cut off on the stream once past the cap: no metadata step told its size */
    assert_int_equal(stats_count(st, "storage_hits", "/storage/big"), 1);
    json_decref(st);
}

static void test_multipart(void **state)
{
    struct fixture *f = *state;
    if (!have_servers())
        skip();
    struct hg_media_opts o = base_opts(f);
    o.part_size = 64 * KiB; /* "multi" is 200 KiB + 26 bytes: four parts */
    o.max_parts_buffered = 8;
    open_media(f, &o);
    struct outcome r = { 0 };
    struct hg_media_job j = job_for("multi", HG_MEDIA_DOCUMENT, "wamid.multi");
    run_one(f, &j, &r);
    assert_int_equal(r.status, HG_MEDIA_STORED);
    assert_true(r.multipart);
    assert_int_equal(r.size, 9 + 200 * KiB + 17);
    assert_string_equal(r.key, "media-inbound/acme/document/2025-02-12/wamid.multi.pdf");
    /* same bytes as the fake served (it says what they hash to) */
    struct fetched g;
    curl_get(r.url, NULL, &g);
    assert_int_equal(g.status, 200);
    assert_int_equal(g.body.len, r.size);
    char sha[65];
    sha_hex(g.body.data, g.body.len, sha);
    assert_string_equal(sha, r.sha);
    assert_string_equal(g.meta_sha, r.sha);
    assert_string_equal(g.content_type, "application/pdf");
    hg_buf_free(&g.body);
    outcome_free(&r);

    /* a multipart file that fails its hash is never completed */
    struct hg_media_opts o2 = base_opts(f);
    o2.part_size = 64 * KiB;
    o2.max_parts_buffered = 8;
    o2.max_size[HG_MEDIA_IMAGE] = 1 << 20;
    close_media(f);
    open_media(f, &o2);
    j = job_for("big", HG_MEDIA_IMAGE, "wamid.bigsha");
    j.sha256 = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="; /* the empty file's */
    run_one(f, &j, &r);
    assert_int_equal(r.status, HG_MEDIA_FAILED);
    assert_string_equal(r.error, "sha256_mismatch");
    assert_not_stored(f, "media-inbound/acme/image/2025-02-12/wamid.bigsha.jpg");
    outcome_free(&r);
}

static void test_clamd(void **state)
{
    struct fixture *f = *state;
    if (!have_servers())
        skip();
    struct clamd c;
    clamd_start(f, &c);
    struct hg_media_opts o = base_opts(f);
    o.clamd_socket = c.path;
    o.part_size = 64 * KiB;
    o.max_parts_buffered = 8;
    open_media(f, &o);
    struct outcome r[3] = { 0 };
    struct hg_media_job j = job_for("eicar", HG_MEDIA_DOCUMENT, "wamid.eicar");
    fetch(f, &j, &r[0]);
    j = job_for("clean", HG_MEDIA_DOCUMENT, "wamid.clean");
    fetch(f, &j, &r[1]);
    j = job_for("multi", HG_MEDIA_DOCUMENT, "wamid.mscan");
    fetch(f, &j, &r[2]);
    wait_outcomes(f, r, 3);
    assert_int_equal(r[0].status, HG_MEDIA_FAILED);
    assert_string_equal(r[0].error, "infected");
    assert_not_stored(f, "media-inbound/acme/document/2025-02-12/wamid.eicar.txt");
    assert_int_equal(r[1].status, HG_MEDIA_STORED);
    assert_true(r[1].scanned);
    assert_string_equal(r[1].key, "media-inbound/acme/document/2025-02-12/wamid.clean.txt");
    assert_int_equal(r[2].status, HG_MEDIA_STORED);
    assert_true(r[2].scanned && r[2].multipart);
    assert_int_equal(c.scans, 3);
    assert_int_equal(c.max_len, r[2].size); /* the multipart file went to clamd whole */
    for (int i = 0; i < 3; i++)
        outcome_free(&r[i]);
    close_media(f);
    clamd_stop(f, &c);

    /* clamd not there: nothing is stored unscanned, the job is left for later */
    o.max_attempts = 1;
    open_media(f, &o);
    j = job_for("clean", HG_MEDIA_DOCUMENT, "wamid.noscan");
    run_one(f, &j, &r[0]);
    assert_int_equal(r[0].status, HG_MEDIA_RETRY);
    assert_string_equal(r[0].error, "scan_failed");
    assert_not_stored(f, "media-inbound/acme/document/2025-02-12/wamid.noscan.txt");
    outcome_free(&r[0]);
}

static void test_close(void **state)
{
    struct fixture *f = *state;
    if (!have_servers())
        skip();
    struct hg_media_opts o = base_opts(f);
    o.max_inflight = 2;
    open_media(f, &o);
    struct outcome r[4] = { 0 };
    char ids[4][16];
    for (int i = 0; i < 4; i++) {
        snprintf(ids[i], sizeof(ids[i]), "slow-x%d", i);
        struct hg_media_job j = job_for(ids[i], HG_MEDIA_IMAGE, ids[i]);
        fetch(f, &j, &r[i]);
    }
    /* let two start downloading; two wait in the queue */
    uint64_t until = hg_time_mono_ns() + 150ull * 1000000;
    while (hg_time_mono_ns() < until)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    struct hg_media_stats st;
    hg_media_stats(f->media, &st);
    assert_int_equal(st.running, 2);
    assert_int_equal(st.queued, 2);
    bool closed = false;
    hg_media_close(f->media, on_media_closed, &closed);
    f->media = NULL;
    for (int i = 0; i < 4; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, HG_MEDIA_RETRY);
        assert_string_equal(r[i].error, "shutdown");
        outcome_free(&r[i]);
    }
    assert_false(closed); /* freed later, from the loop */
    while (!closed)
        uv_run(&f->loop, UV_RUN_ONCE);
}

/* Render /metrics text; the caller frees it. */
static char *metrics_text(void)
{
    struct hg_buf b;
    hg_buf_init(&b, 4 << 20);
    assert_int_equal(hg_metrics_render(&b), 0);
    char *t = strdup(hg_buf_cstr(&b));
    hg_buf_free(&b);
    return t;
}

/* The value of the sample line starting with `prefix` followed by a space; -1 when absent. */
static double metric_value(const char *text, const char *prefix)
{
    size_t n = strlen(prefix);
    for (const char *p = text; p != NULL && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncmp(p, prefix, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    }
    return -1;
}

static void test_metrics(void **state)
{
    struct fixture *f = *state;
    if (!have_servers())
        skip();
    hg_metrics_free(); /* a clean registry: only this test's jobs count */
    struct hg_media_opts o = base_opts(f);
    o.max_inflight = 1; /* one at a time: the slow job below is still queued at close */
    open_media(f, &o);
    size_t jpg_len;
    unsigned char *jpg = read_file(FIXTURES "tiny.jpg", &jpg_len);
    free(jpg);

    struct outcome r[5] = { 0 };
    struct hg_media_job j = job_for("jpg", HG_MEDIA_IMAGE, "wamid.m0");
    fetch(f, &j, &r[0]);                 /* stored: a download, a size, an upload */
    j = job_for("flaky", HG_MEDIA_IMAGE, "wamid.m1");
    fetch(f, &j, &r[1]);                 /* stored on the third try: no failure counted */
    j = job_for("gone", HG_MEDIA_IMAGE, "wamid.m2");
    fetch(f, &j, &r[2]);                 /* not_found at the metadata: no download observed */
    j = job_for("badsha", HG_MEDIA_IMAGE, "wamid.m3");
    fetch(f, &j, &r[3]);                 /* downloaded whole, then refused */
    wait_outcomes(f, r, 4);
    assert_int_equal(r[0].status, HG_MEDIA_STORED);
    assert_int_equal(r[1].status, HG_MEDIA_STORED);
    assert_int_equal(r[1].attempts, 3);
    assert_string_equal(r[2].error, "not_found");
    assert_string_equal(r[3].error, "sha256_mismatch");
    j = job_for("slow-m", HG_MEDIA_IMAGE, "wamid.m4");
    fetch(f, &j, &r[4]);
    close_media(f);                      /* shutdown is no failure of the media */
    assert_string_equal(r[4].error, "shutdown");
    /* nor is an undecided job (the drain counts it if it gives up) */
    struct hg_media_opts o2 = base_opts(f);
    o2.graph_api_base = "http://127.0.0.1:1";
    o2.max_attempts = 1;
    open_media(f, &o2);
    struct outcome u = { 0 };
    j = job_for("jpg", HG_MEDIA_IMAGE, "wamid.m5");
    run_one(f, &j, &u);
    assert_int_equal(u.status, HG_MEDIA_RETRY);
    assert_string_equal(u.error, "download_failed");
    outcome_free(&u);

    assert_int_equal(hg_metric_counter_total(HG_M_MEDIA_FAILURES, "reason=\"not_found\""), 1);
    assert_int_equal(hg_metric_counter_total(HG_M_MEDIA_FAILURES, "reason=\"sha256_mismatch\""),
                     1);
    assert_int_equal(hg_metric_counter_total(HG_M_MEDIA_FAILURES, "reason=\"download_failed\""),
                     0);
    assert_int_equal(hg_metric_counter_total(HG_M_MEDIA_FAILURES, "reason=\"shutdown\""), 0);

    char *text = metrics_text();
    /* jpg, flaky (its last attempt), badsha: three downloads that reached an answer */
    assert_true(metric_value(text, "media_download_duration_seconds_count") == 3);
    assert_true(metric_value(text, "media_download_duration_seconds_sum") > 0);
    assert_true(metric_value(text, "media_download_size_bytes_count") == 3);
    /* the JPEG twice and the PNG once */
    size_t png_len;
    unsigned char *png = read_file(FIXTURES "tiny.png", &png_len);
    free(png);
    assert_true(metric_value(text, "media_download_size_bytes_sum") ==
                (double)(2 * jpg_len + png_len));
    assert_true(metric_value(text, "media_download_size_bytes_bucket{le=\"1024\"}") ==
                (jpg_len <= 1024) * 2 + (png_len <= 1024));
    /* two uploads, told apart from the raw archive's */
    assert_true(metric_value(text, "minio_upload_duration_seconds_count{kind=\"media\"}") == 2);
    assert_true(metric_value(text, "minio_upload_duration_seconds_sum{kind=\"media\"}") > 0);
    assert_true(metric_value(text, "media_failures_total{reason=\"not_found\"}") == 1);
    free(text);
    for (int i = 0; i < 5; i++)
        outcome_free(&r[i]);
    hg_metrics_free();
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sniff),
        cmocka_unit_test(test_result_json),
        cmocka_unit_test_setup_teardown(test_open_and_args, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_presign_expires, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrency, setup, teardown),
        cmocka_unit_test_setup_teardown(test_multipart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clamd, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics, setup, teardown),
        cmocka_unit_test_setup_teardown(test_url_job_args, setup, teardown),
        cmocka_unit_test_setup_teardown(test_url_jobs, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}

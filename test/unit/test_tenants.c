/*
 * Tests for src/tenants: config resolution (path, business ids, default), the JSON contract, the
 * async contract and close; with HG_TEST_TENANT_SERVICE_URL (and HG_TEST_REDIS_URL) the Redis
 * cache, negative caching, coalescing, failures, stale-if-error against the fake tenant service.
 */
#include <setjmp.h>
#include <signal.h>
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
#include <uv.h>

#include "clients/http.h"
#include "clients/redis.h"
#include "conf/conf.h"
#include "core/err.h"
#include "core/time.h"
#include "core/uuid.h"
#include "tenants/tenants.h"

/* ---- helpers ----------------------------------------------------------------------------- */

static const char conf_text[] =
    "[whatsapp]\n"
    "app_secret = default-secret\n"
    "verify_token = default-vt\n"
    "access_token = default-at\n"
    "default_tenant = main\n"
    "[ratelimit]\n"
    "default = 77\n"
    "[tenant.acme]\n"
    "app_secret = acme-1, acme-2\n"
    "verify_token = acme-vt\n"
    "business_ids = 1001, 1002\n"
    "rate_limit = 50\n"
    "[tenant.beta]\n"
    "business_ids = 2002\n";

/* No [whatsapp] app_secret: the default tenant cannot verify anything. */
static const char conf_nosecret_text[] =
    "[tenant.acme]\n"
    "app_secret = acme-1\n"
    "business_ids = 1001\n";

static struct hg_conf *load_conf(const char *text)
{
    char path[] = "/tmp/hg-test-tenants-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    struct hg_conf *c = NULL;
    char err[256] = "";
    int rc = hg_conf_load(path, &c, err, sizeof(err));
    unlink(path);
    if (rc != 0)
        fail_msg("conf: %s", err);
    return c;
}

struct rec {
    int calls;
    bool returned;
    bool early;
    int status;
    struct hg_tenant *tenant;
};

static void on_resolved(void *arg, int status, struct hg_tenant *tenant)
{
    struct rec *r = arg;
    r->calls++;
    if (!r->returned)
        r->early = true;
    r->status = status;
    r->tenant = tenant;
}

/*
 * Run the loop until *count >= want or ms pass; true when reached. The loop is polled (NOWAIT and
 * a short sleep) rather than blocked in UV_RUN_ONCE behind a guard timer: under load (and ASan) a
 * blocking run was seen to wait in epoll_wait with no timeout, and a helper of the tests must not
 * be able to hang the suite.
 */
static bool run_until(uv_loop_t *loop, const int *count, int want, uint64_t ms)
{
    uint64_t end = uv_hrtime() + ms * 1000000ull;
    while (*count < want) {
        uv_run(loop, UV_RUN_NOWAIT);
        if (*count >= want || uv_hrtime() >= end)
            break;
        usleep(200);
    }
    uv_update_time(loop);
    return *count >= want;
}

static void sleep_loop(uv_loop_t *loop, uint64_t ms)
{
    int never = 0;
    run_until(loop, &never, 1, ms);
}

struct fixture {
    uv_loop_t loop;
    struct hg_conf *conf;
    struct hg_http *http;
    struct hg_redis *redis;
    struct hg_tenants *t;
    const char *svc;   /* HG_TEST_TENANT_SERVICE_URL or NULL */
    const char *token; /* HG_TEST_TENANT_SERVICE_TOKEN or NULL */
};

static void fixture_init(struct fixture *f, const char *conf)
{
    memset(f, 0, sizeof(*f));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    f->conf = load_conf(conf);
    f->svc = getenv("HG_TEST_TENANT_SERVICE_URL");
    f->token = getenv("HG_TEST_TENANT_SERVICE_TOKEN");
}

static void open_tenants(struct fixture *f, struct hg_tenants **out, const struct hg_tenants_opts *o)
{
    assert_int_equal(hg_tenants_open(&f->loop, f->http, f->redis, o, out), 0);
}

static void on_flag(void *arg)
{
    (*(int *)arg)++;
}

static void close_tenants(struct fixture *f, struct hg_tenants *t)
{
    int closed = 0;
    hg_tenants_close(t, on_flag, &closed);
    assert_int_equal(closed, 0); /* never inside the call */
    assert_true(run_until(&f->loop, &closed, 1, 5000));
    assert_int_equal(closed, 1);
}

static void open_redis(struct fixture *f, const char *url)
{
    assert_int_equal(hg_redis_open(&f->loop, url, NULL, &f->redis), 0);
}

/* Wait for the Redis handshake so cache calls really reach the server. */
static void wait_redis(struct fixture *f)
{
    uint64_t end = hg_time_mono_ns() / 1000000u + 3000;
    while (hg_redis_state(f->redis) != HG_REDIS_OK && hg_time_mono_ns() / 1000000u < end)
        sleep_loop(&f->loop, 20);
    assert_int_equal(hg_redis_state(f->redis), HG_REDIS_OK);
}

static void fixture_done(struct fixture *f)
{
    int closed = 0;
    if (f->t != NULL)
        close_tenants(f, f->t);
    if (f->redis != NULL) {
        hg_redis_close(f->redis, on_flag, &closed);
        assert_true(run_until(&f->loop, &closed, 1, 5000));
        closed = 0;
    }
    if (f->http != NULL) {
        hg_http_close(f->http, on_flag, &closed);
        assert_true(run_until(&f->loop, &closed, 1, 5000));
    }
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0); /* every handle closed and freed */
    hg_conf_unref(f->conf);
}

/* Full async resolve; asserts the callback contract and returns the outcome. */
static int resolve(struct fixture *f, struct hg_tenants *t, const char *path,
                   const char *const *ids, size_t n, struct hg_tenant **out)
{
    struct rec r = { 0 };
    assert_int_equal(hg_tenants_resolve(t, f->conf, path, ids, n, on_resolved, &r), 0);
    r.returned = true;
    assert_int_equal(r.calls, 0);
    assert_true(run_until(&f->loop, &r.calls, 1, 5000));
    uv_run(&f->loop, UV_RUN_NOWAIT); /* a second call would show up here */
    assert_int_equal(r.calls, 1);
    assert_false(r.early);
    if (r.status == 0)
        assert_non_null(r.tenant);
    else
        assert_null(r.tenant);
    *out = r.tenant;
    return r.status;
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

/* A fresh business id the fake serves (prefix 7: found, 4: 404, 5: broken document). */
static void fresh_id(char *out, size_t cap, char prefix)
{
    snprintf(out, cap, "%c%012llu", prefix,
             (unsigned long long)(hg_random_u64() % 1000000000000ull));
}

/* ---- the fake tenant service's control endpoints (blocking curl is fine in a test) --------- */

static size_t on_curl_body(char *p, size_t sz, size_t n, void *arg)
{
    struct hg_buf *b = arg;
    return hg_buf_append(b, p, sz * n) == 0 ? sz * n : 0;
}

static json_t *svc_call(const char *base, const char *path, const char *post)
{
    char url[512];
    struct hg_buf b;
    hg_buf_init(&b, 1 << 20);
    snprintf(url, sizeof(url), "%s%s", base, path);
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_curl_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    if (post != NULL)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, post);
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    curl_easy_cleanup(c);
    json_t *j = json_loadb(b.data, b.len, 0, NULL);
    hg_buf_free(&b);
    assert_non_null(j);
    return j;
}

/* How many tenant requests the fake has seen for one path. */
static long svc_count(struct fixture *f, const char *path)
{
    json_t *j = svc_call(f->svc, "/_test/stats", NULL);
    json_t *v = json_object_get(json_object_get(j, "paths"), path);
    long n = v != NULL ? (long)json_integer_value(v) : 0;
    json_decref(j);
    return n;
}

static long svc_count_ba(struct fixture *f, const char *id)
{
    char path[128];
    snprintf(path, sizeof(path), "/tenants/by-business-account/%s", id);
    return svc_count(f, path);
}

static void svc_mode(struct fixture *f, const char *mode, int delay_ms)
{
    char body[128];
    snprintf(body, sizeof(body), "{\"mode\":\"%s\",\"delay_ms\":%d}", mode, delay_ms);
    json_decref(svc_call(f->svc, "/_test/mode", body));
}

static struct hg_tenants_opts svc_opts(const struct fixture *f)
{
    return (struct hg_tenants_opts){
        .service_url = f->svc,
        .service_token = f->token,
        .timeout_ms = 2000,
        .failure_backoff_ms = 1, /* tests flip the fake's mode and expect the next call at once */
    };
}

/* Service tests: the fake, an hg_http client. Redis too when `need_redis`. */
static bool setup_service(struct fixture *f, bool need_redis)
{
    fixture_init(f, conf_text);
    const char *redis = getenv("HG_TEST_REDIS_URL");
    if (f->svc == NULL || (need_redis && redis == NULL)) {
        fixture_done(f);
        return false;
    }
    svc_mode(f, "ok", 0);
    assert_int_equal(hg_http_open(&f->loop, &f->http), 0);
    if (need_redis) {
        open_redis(f, redis);
        wait_redis(f);
    }
    return true;
}

/* ---- config, default, contract ----------------------------------------------------------- */

static void test_config_path_tenant(void **state)
{
    struct fixture f;
    fixture_init(&f, conf_text);
    open_tenants(&f, &f.t, NULL);

    struct hg_tenant *a = NULL, *a2 = NULL, *b = NULL;
    assert_int_equal(hg_tenants_resolve_local(f.t, f.conf, "acme", NULL, 0, &a), 0);
    assert_int_equal(a->source, HG_TENANT_CONFIG);
    assert_string_equal(a->id, "acme");
    assert_int_equal(a->app_secrets.n, 2);
    assert_string_equal(a->app_secrets.items[0], "acme-1");
    assert_string_equal(a->app_secrets.items[1], "acme-2");
    assert_string_equal(a->verify_token, "acme-vt");
    assert_string_equal(a->access_token, "default-at"); /* [whatsapp] fills the gap */
    assert_int_equal(a->rate_limit, 50);
    /* The hot path hands out the same object again: no allocation per request. */
    assert_int_equal(hg_tenants_resolve_local(f.t, f.conf, "acme", NULL, 0, &a2), 0);
    assert_ptr_equal(a, a2);

    /* An empty-ish section takes every [whatsapp] value and the [ratelimit] default. */
    assert_int_equal(hg_tenants_resolve_local(f.t, f.conf, "beta", NULL, 0, &b), 0);
    assert_string_equal(b->id, "beta");
    assert_int_equal(b->app_secrets.n, 1);
    assert_string_equal(b->app_secrets.items[0], "default-secret");
    assert_string_equal(b->verify_token, "default-vt");
    assert_int_equal(b->rate_limit, 77);

    /* The path wins over business ids that map elsewhere. */
    const char *ids[] = { "1001" };
    struct hg_tenant *c = NULL;
    assert_int_equal(hg_tenants_resolve_local(f.t, f.conf, "beta", ids, 1, &c), 0);
    assert_string_equal(c->id, "beta");

    /* Async gives the same answer, later. */
    struct hg_tenant *d = NULL;
    assert_int_equal(resolve(&f, f.t, "acme", NULL, 0, &d), 0);
    assert_ptr_equal(d, a);
    assert_int_equal(hg_tenants_stats(f.t)->config_hits, 5);

    hg_tenant_unref(a);
    hg_tenant_unref(a2);
    hg_tenant_unref(b);
    hg_tenant_unref(c);
    hg_tenant_unref(d);
    fixture_done(&f);
}

static void test_config_business_ids(void **state)
{
    struct fixture f;
    fixture_init(&f, conf_text);
    open_tenants(&f, &f.t, NULL);

    struct hg_tenant *tn = NULL;
    const char *ids1[] = { "1002" };
    assert_int_equal(hg_tenants_resolve_local(f.t, f.conf, NULL, ids1, 1, &tn), 0);
    assert_string_equal(tn->id, "acme");
    assert_int_equal(tn->source, HG_TENANT_CONFIG);
    hg_tenant_unref(tn);

    /* Any mapped id decides, even when an earlier one is unknown. */
    const char *ids2[] = { "9999", "2002" };
    assert_int_equal(resolve(&f, f.t, NULL, ids2, 2, &tn), 0);
    assert_string_equal(tn->id, "beta");
    assert_int_equal(tn->source, HG_TENANT_CONFIG);
    hg_tenant_unref(tn);

    /* The tenant outlives a reload: it holds its own snapshot. */
    struct hg_conf *old = f.conf;
    assert_int_equal(hg_tenants_resolve_local(f.t, old, NULL, ids1, 1, &tn), 0);
    f.conf = load_conf(conf_text);
    struct hg_tenant *tn2 = NULL;
    assert_int_equal(hg_tenants_resolve_local(f.t, f.conf, NULL, ids1, 1, &tn2), 0);
    assert_ptr_not_equal(tn, tn2);
    hg_conf_unref(old);
    assert_string_equal(tn->app_secrets.items[0], "acme-1"); /* still readable (ASan) */
    hg_tenant_unref(tn);
    hg_tenant_unref(tn2);
    fixture_done(&f);
}

static void test_default_tenant(void **state)
{
    struct fixture f;
    fixture_init(&f, conf_text);
    open_tenants(&f, &f.t, NULL);
    struct hg_tenant *tn = NULL;

    /* No tenant service: an unknown business id goes to the default. */
    const char *ids[] = { "555" };
    assert_int_equal(hg_tenants_resolve_local(f.t, f.conf, NULL, ids, 1, &tn), 0);
    assert_int_equal(tn->source, HG_TENANT_DEFAULT);
    assert_string_equal(tn->id, "main");
    assert_string_equal(tn->app_secrets.items[0], "default-secret");
    assert_string_equal(tn->verify_token, "default-vt");
    assert_int_equal(tn->rate_limit, 77);
    hg_tenant_unref(tn);

    /* No ids at all (the GET handshake without a path tenant). */
    assert_int_equal(resolve(&f, f.t, NULL, NULL, 0, &tn), 0);
    assert_int_equal(tn->source, HG_TENANT_DEFAULT);
    hg_tenant_unref(tn);

    /* The default's own id in the path. */
    assert_int_equal(hg_tenants_resolve_local(f.t, f.conf, "main", NULL, 0, &tn), 0);
    assert_int_equal(tn->source, HG_TENANT_DEFAULT);
    hg_tenant_unref(tn);

    /* A path naming no tenant is not charged to the default. */
    assert_int_equal(hg_tenants_resolve_local(f.t, f.conf, "nobody", NULL, 0, &tn), HG_ERR_NOT_FOUND);
    assert_null(tn);
    assert_int_equal(resolve(&f, f.t, "nobody", NULL, 0, &tn), HG_ERR_NOT_FOUND);
    assert_int_equal(hg_tenants_stats(f.t)->defaults, 3);
    fixture_done(&f);
}

static void test_default_without_secret(void **state)
{
    struct fixture f;
    fixture_init(&f, conf_nosecret_text);
    open_tenants(&f, &f.t, NULL);
    struct hg_tenant *tn = NULL;
    const char *ids[] = { "555" };
    /* The resolver names the tenant; that it has no WhatsApp secret is the ingest's 503. */
    assert_int_equal(hg_tenants_resolve_local(f.t, f.conf, NULL, ids, 1, &tn), 0);
    assert_string_equal(tn->id, "default");
    assert_int_equal(tn->app_secrets.n, 0);
    hg_tenant_unref(tn);
    tn = NULL;
    assert_int_equal(resolve(&f, f.t, NULL, ids, 1, &tn), 0);
    assert_int_equal(tn->app_secrets.n, 0);
    hg_tenant_unref(tn);
    /* The configured tenant still works. */
    const char *ids2[] = { "1001" };
    assert_int_equal(resolve(&f, f.t, NULL, ids2, 1, &tn), 0);
    assert_string_equal(tn->id, "acme");
    hg_tenant_unref(tn);
    assert_int_equal(hg_tenants_stats(f.t)->unavailable, 0);
    fixture_done(&f);
}

static void test_invalid_args(void **state)
{
    struct fixture f;
    fixture_init(&f, conf_text);
    struct hg_tenants *t = NULL;
    struct hg_tenants_opts bad = { .service_url = "ftp://x" };
    assert_int_equal(hg_tenants_open(&f.loop, NULL, NULL, &bad, &t), HG_ERR_INVALID);
    assert_null(t);
    open_tenants(&f, &f.t, NULL);
    struct rec r = { 0 };
    assert_int_equal(hg_tenants_resolve(f.t, f.conf, NULL, NULL, 0, NULL, &r), HG_ERR_INVALID);
    assert_int_equal(hg_tenants_resolve(f.t, f.conf, NULL, NULL, 3, on_resolved, &r), HG_ERR_INVALID);
    assert_int_equal(hg_tenants_resolve(f.t, NULL, NULL, NULL, 0, on_resolved, &r), HG_ERR_INVALID);
    sleep_loop(&f.loop, 20);
    assert_int_equal(r.calls, 0); /* an error return means no callback, ever */
    fixture_done(&f);
}

static void test_parse(void **state)
{
    struct hg_tenant *t = NULL;
    const char ok[] = "{\"tenant_id\":\"acme\",\"app_secrets\":[\"s1\",\"s2\"],"
                      "\"verify_token\":\"vt\",\"access_token\":\"at\",\"rate_limit\":1000,"
                      "\"extra\":{\"ignored\":true}}";
    assert_int_equal(hg_tenant_parse(ok, strlen(ok), NULL, &t), 0);
    assert_string_equal(t->id, "acme");
    assert_int_equal(t->app_secrets.n, 2);
    assert_string_equal(t->app_secrets.items[1], "s2");
    assert_string_equal(t->verify_token, "vt");
    assert_string_equal(t->access_token, "at");
    assert_int_equal(t->rate_limit, 1000);
    assert_int_equal(t->source, HG_TENANT_SERVICE);
    hg_tenant_unref(t);

    /* Optional fields absent or null; rate limit from the config. */
    struct hg_conf *c = load_conf(conf_text);
    const char minimal[] = "{\"tenant_id\":\"b.2-x_y\",\"app_secrets\":[\"s\"],\"verify_token\":null}";
    assert_int_equal(hg_tenant_parse(minimal, strlen(minimal), c, &t), 0);
    assert_null(t->verify_token);
    assert_null(t->access_token);
    assert_int_equal(t->rate_limit, 77);
    hg_tenant_unref(t);

    /* A tenant of other providers only: no WhatsApp app secret (its WhatsApp webhooks get 503). */
    const char others[] = "{\"tenant_id\":\"plumb\",\"genesys_secrets\":[\"g1\"],"
                          "\"genesys_api_keys\":[\"k1\",\"k2\"],\"twilio_auth_tokens\":[\"tw\"]}";
    assert_int_equal(hg_tenant_parse(others, strlen(others), c, &t), 0);
    assert_int_equal(t->app_secrets.n, 0);
    assert_string_equal(t->genesys_secrets.items[0], "g1");
    assert_int_equal(t->genesys_api_keys.n, 2);
    assert_string_equal(t->twilio_auth_tokens.items[0], "tw");
    hg_tenant_unref(t);
    hg_conf_unref(c);

    static const char *const bad[] = {
        "",
        "not json",
        "[]",
        "{\"app_secrets\":[\"s\"]}",                                   /* no tenant_id */
        "{\"tenant_id\":\"\",\"app_secrets\":[\"s\"]}",
        "{\"tenant_id\":\"../etc\",\"app_secrets\":[\"s\"]}",          /* not an id */
        "{\"tenant_id\":\"..\",\"app_secrets\":[\"s\"]}",
        "{\"tenant_id\":\"a b\",\"app_secrets\":[\"s\"]}",
        "{\"tenant_id\":\"a\"}",                                        /* no secrets */
        "{\"tenant_id\":\"a\",\"app_secrets\":null,\"twilio_auth_tokens\":[]}", /* none either */
        "{\"tenant_id\":\"a\",\"genesys_secrets\":[\"\"]}",
        "{\"tenant_id\":\"a\",\"twilio_auth_tokens\":\"t\"}",
        "{\"tenant_id\":\"a\",\"app_secrets\":[]}",
        "{\"tenant_id\":\"a\",\"app_secrets\":\"s\"}",
        "{\"tenant_id\":\"a\",\"app_secrets\":[\"\"]}",
        "{\"tenant_id\":\"a\",\"app_secrets\":[1]}",
        "{\"tenant_id\":\"a\",\"app_secrets\":[\"s\\u0000t\"]}",        /* embedded NUL */
        "{\"tenant_id\":\"a\",\"app_secrets\":[\"s\"],\"rate_limit\":-1}",
        "{\"tenant_id\":\"a\",\"app_secrets\":[\"s\"],\"rate_limit\":\"5\"}",
        "{\"tenant_id\":\"a\",\"app_secrets\":[\"s\"],\"verify_token\":7}",
        "{\"tenant_id\":\"a\",\"tenant_id\":\"b\",\"app_secrets\":[\"s\"]}", /* duplicate key */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        t = (struct hg_tenant *)1;
        if (hg_tenant_parse(bad[i], strlen(bad[i]), NULL, &t) != HG_ERR_PARSE)
            fail_msg("accepted: %s", bad[i]);
        assert_null(t);
    }
    /* A 65-character id is one too many. */
    char longid[200];
    snprintf(longid, sizeof(longid), "{\"tenant_id\":\"%065d\",\"app_secrets\":[\"s\"]}", 0);
    assert_int_equal(hg_tenant_parse(longid, strlen(longid), NULL, &t), HG_ERR_PARSE);
    char *big = calloc(1, HG_TENANTS_BODY_MAX + 2);
    memset(big, ' ', HG_TENANTS_BODY_MAX + 1);
    assert_int_equal(hg_tenant_parse(big, HG_TENANTS_BODY_MAX + 1, NULL, &t), HG_ERR_TOO_BIG);
    free(big);
}

/* ---- without a real service -------------------------------------------------------------- */

static void test_service_unreachable(void **state)
{
    struct fixture f;
    fixture_init(&f, conf_text);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", closed_port());
    assert_int_equal(hg_http_open(&f.loop, &f.http), 0);
    struct hg_tenants_opts o = { .service_url = url, .failure_backoff_ms = 60000 };
    open_tenants(&f, &f.t, &o);

    struct hg_tenant *tn = NULL;
    const char *ids[] = { "123456" };
    assert_int_equal(hg_tenants_resolve_local(f.t, f.conf, NULL, ids, 1, &tn), HG_TENANTS_PENDING);
    /* Unknown id, service down: 503, not the default (the tenant may well exist). */
    assert_int_equal(resolve(&f, f.t, NULL, ids, 1, &tn), HG_ERR_UNAVAILABLE);
    assert_int_equal(hg_tenants_stats(f.t)->service_calls, 1);
    assert_int_equal(hg_tenants_stats(f.t)->service_failures, 1);
    /* Within the failure backoff the service is not asked again. */
    const char *ids2[] = { "654321" };
    assert_int_equal(resolve(&f, f.t, NULL, ids2, 1, &tn), HG_ERR_UNAVAILABLE);
    assert_int_equal(hg_tenants_stats(f.t)->service_calls, 1);
    /* Config tenants do not need the service. */
    const char *ids3[] = { "654321", "1001" };
    assert_int_equal(resolve(&f, f.t, NULL, ids3, 2, &tn), 0);
    assert_string_equal(tn->id, "acme");
    hg_tenant_unref(tn);
    /* Ids that cannot be a tenant are skipped without a lookup: the default answers. */
    const char *junk[] = { "..", "a/b", "", "-x" };
    assert_int_equal(resolve(&f, f.t, NULL, junk, 4, &tn), 0);
    assert_int_equal(tn->source, HG_TENANT_DEFAULT);
    hg_tenant_unref(tn);
    assert_int_equal(hg_tenants_stats(f.t)->invalid_ids, 4);
    assert_int_equal(hg_tenants_stats(f.t)->service_calls, 1);
    fixture_done(&f);
}

static void on_close_in_cb(void *arg, int status, struct hg_tenant *tenant)
{
    struct rec *r = arg;
    r->calls++;
    r->status = status;
    hg_tenant_unref(tenant);
}

/* A resolve waiting on a service that never answers ends with CLOSED when the resolver closes. */
static void test_close_pending(void **state)
{
    struct fixture f;
    fixture_init(&f, conf_text);
    /* Listening, never accepting: the request hangs until canceled. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(sa);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 8), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", ntohs(sa.sin_port));
    assert_int_equal(hg_http_open(&f.loop, &f.http), 0);
    struct hg_tenants_opts o = { .service_url = url, .timeout_ms = 30000 };
    open_tenants(&f, &f.t, &o);

    struct rec r[3] = { { 0 } };
    const char *ids[] = { "777" };
    for (int i = 0; i < 3; i++)
        assert_int_equal(hg_tenants_resolve(f.t, f.conf, NULL, ids, 1, on_close_in_cb, &r[i]), 0);
    sleep_loop(&f.loop, 100);
    assert_int_equal(r[0].calls + r[1].calls + r[2].calls, 0);
    assert_int_equal(hg_http_pending(f.http), 1); /* coalesced into one request */
    assert_int_equal(hg_tenants_stats(f.t)->coalesced, 2);

    close_tenants(&f, f.t);
    f.t = NULL;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, HG_ERR_CLOSED);
    }
    assert_int_equal(hg_http_pending(f.http), 0);
    close(fd);
    fixture_done(&f);
}

/* ---- against the fake tenant service ----------------------------------------------------- */

static void test_service_hit_cached_in_redis(void **state)
{
    struct fixture f;
    if (!setup_service(&f, true))
        skip();
    struct hg_tenants_opts o = svc_opts(&f);
    open_tenants(&f, &f.t, &o);
    char id[32], want[40];
    fresh_id(id, sizeof(id), '7');
    snprintf(want, sizeof(want), "gen-%s", id);
    const char *ids[] = { id };

    struct hg_tenant *tn = NULL;
    assert_int_equal(hg_tenants_resolve_local(f.t, f.conf, NULL, ids, 1, &tn), HG_TENANTS_PENDING);
    assert_int_equal(resolve(&f, f.t, NULL, ids, 1, &tn), 0);
    assert_int_equal(tn->source, HG_TENANT_SERVICE);
    assert_string_equal(tn->id, want);
    assert_int_equal(tn->rate_limit, 60);
    assert_null(tn->access_token);
    hg_tenant_unref(tn);
    assert_int_equal(svc_count_ba(&f, id), 1);

    /* Same worker: the LRU answers synchronously. */
    assert_int_equal(hg_tenants_resolve_local(f.t, f.conf, NULL, ids, 1, &tn), 0);
    assert_string_equal(tn->id, want);
    hg_tenant_unref(tn);
    assert_int_equal(resolve(&f, f.t, NULL, ids, 1, &tn), 0);
    hg_tenant_unref(tn);
    assert_int_equal(hg_tenants_stats(f.t)->local_hits, 2);

    /* Another worker (empty LRU) finds it in Redis, not at the service. */
    struct hg_tenants *t2 = NULL;
    open_tenants(&f, &t2, &o);
    assert_int_equal(resolve(&f, t2, NULL, ids, 1, &tn), 0);
    assert_int_equal(tn->source, HG_TENANT_CACHE);
    assert_string_equal(tn->id, want);
    char secret[48];
    snprintf(secret, sizeof(secret), "gen-secret-%s", id);
    assert_string_equal(tn->app_secrets.items[0], secret);
    hg_tenant_unref(tn);
    assert_int_equal(hg_tenants_stats(t2)->redis_hits, 1);
    assert_int_equal(hg_tenants_stats(t2)->service_calls, 0);
    assert_int_equal(svc_count_ba(&f, id), 1);
    close_tenants(&f, t2);
    fixture_done(&f);
}

static void test_negative_caching(void **state)
{
    struct fixture f;
    if (!setup_service(&f, true))
        skip();
    struct hg_tenants_opts o = svc_opts(&f);
    open_tenants(&f, &f.t, &o);
    char id[32];
    fresh_id(id, sizeof(id), '4');
    const char *ids[] = { id };

    struct hg_tenant *tn = NULL;
    assert_int_equal(resolve(&f, f.t, NULL, ids, 1, &tn), 0);
    assert_int_equal(tn->source, HG_TENANT_DEFAULT); /* the service said 404: default */
    hg_tenant_unref(tn);
    assert_int_equal(svc_count_ba(&f, id), 1);
    assert_int_equal(hg_tenants_stats(f.t)->service_not_found, 1);

    /* This worker remembers the 404 itself ... */
    assert_int_equal(hg_tenants_resolve_local(f.t, f.conf, NULL, ids, 1, &tn), 0);
    assert_int_equal(tn->source, HG_TENANT_DEFAULT);
    hg_tenant_unref(tn);
    /* ... and another one finds the negative entry in Redis. */
    struct hg_tenants *t2 = NULL;
    open_tenants(&f, &t2, &o);
    assert_int_equal(resolve(&f, t2, NULL, ids, 1, &tn), 0);
    assert_int_equal(tn->source, HG_TENANT_DEFAULT);
    hg_tenant_unref(tn);
    assert_int_equal(hg_tenants_stats(t2)->redis_hits, 1);
    assert_int_equal(svc_count_ba(&f, id), 1);

    /* Negative for the first id, found for the second: the second decides. */
    char id2[32];
    fresh_id(id2, sizeof(id2), '7');
    const char *both[] = { id, id2 };
    assert_int_equal(resolve(&f, t2, NULL, both, 2, &tn), 0);
    assert_int_equal(tn->source, HG_TENANT_SERVICE);
    assert_string_equal(tn->id + 4, id2);
    hg_tenant_unref(tn);
    assert_int_equal(svc_count_ba(&f, id), 1);
    close_tenants(&f, t2);
    fixture_done(&f);
}

static void test_service_down_cached_still_resolves(void **state)
{
    struct fixture f;
    if (!setup_service(&f, true))
        skip();
    struct hg_tenants_opts o = svc_opts(&f);
    open_tenants(&f, &f.t, &o);
    char known[32], unknown[32];
    fresh_id(known, sizeof(known), '7');
    fresh_id(unknown, sizeof(unknown), '7');
    const char *k[] = { known }, *u[] = { unknown };
    struct hg_tenant *tn = NULL;
    assert_int_equal(resolve(&f, f.t, NULL, k, 1, &tn), 0);
    hg_tenant_unref(tn);

    svc_mode(&f, "fail", 0);
    struct hg_tenants *t2 = NULL;
    open_tenants(&f, &t2, &o);
    assert_int_equal(resolve(&f, t2, NULL, u, 1, &tn), HG_ERR_UNAVAILABLE);
    assert_int_equal(svc_count_ba(&f, unknown), 1);
    assert_int_equal(hg_tenants_stats(t2)->service_failures, 1);
    assert_int_equal(resolve(&f, t2, NULL, k, 1, &tn), 0); /* from Redis */
    assert_int_equal(tn->source, HG_TENANT_CACHE);
    hg_tenant_unref(tn);
    /* Nothing was cached for the failure: once the service is back the id resolves. */
    svc_mode(&f, "ok", 0);
    sleep_loop(&f.loop, 5); /* past the (1 ms) failure backoff */
    assert_int_equal(resolve(&f, t2, NULL, u, 1, &tn), 0);
    assert_int_equal(tn->source, HG_TENANT_SERVICE);
    hg_tenant_unref(tn);
    close_tenants(&f, t2);
    fixture_done(&f);
}

static void test_coalescing(void **state)
{
    struct fixture f;
    if (!setup_service(&f, false))
        skip();
    struct hg_tenants_opts o = svc_opts(&f);
    open_tenants(&f, &f.t, &o);
    char id[32];
    fresh_id(id, sizeof(id), '7');
    const char *ids[] = { id };

    struct rec r[10] = { { 0 } };
    int total = 0;
    for (int i = 0; i < 10; i++) {
        assert_int_equal(hg_tenants_resolve(f.t, f.conf, NULL, ids, 1, on_resolved, &r[i]), 0);
        r[i].returned = true;
    }
    uint64_t end = hg_time_mono_ns() / 1000000u + 5000;
    while (total < 10 && hg_time_mono_ns() / 1000000u < end) {
        sleep_loop(&f.loop, 10);
        total = 0;
        for (int i = 0; i < 10; i++)
            total += r[i].calls;
    }
    for (int i = 0; i < 10; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_false(r[i].early);
        assert_int_equal(r[i].status, 0);
        assert_ptr_equal(r[i].tenant, r[0].tenant); /* one lookup, one tenant object */
    }
    assert_int_equal(r[0].tenant->source, HG_TENANT_SERVICE);
    for (int i = 0; i < 10; i++)
        hg_tenant_unref(r[i].tenant);
    assert_int_equal(svc_count_ba(&f, id), 1);
    assert_int_equal(hg_tenants_stats(f.t)->service_calls, 1);
    assert_int_equal(hg_tenants_stats(f.t)->coalesced, 9);
    fixture_done(&f);
}

static void test_redis_down_uses_service(void **state)
{
    struct fixture f;
    if (!setup_service(&f, false))
        skip();
    char rurl[64];
    snprintf(rurl, sizeof(rurl), "redis://127.0.0.1:%d/0", closed_port());
    open_redis(&f, rurl);
    struct hg_tenants_opts o = svc_opts(&f);
    open_tenants(&f, &f.t, &o);
    char id[32];
    fresh_id(id, sizeof(id), '7');
    const char *ids[] = { id };
    struct hg_tenant *tn = NULL;
    assert_int_equal(resolve(&f, f.t, NULL, ids, 1, &tn), 0);
    assert_int_equal(tn->source, HG_TENANT_SERVICE);
    hg_tenant_unref(tn);
    assert_int_equal(svc_count_ba(&f, id), 1);
    assert_int_equal(hg_tenants_stats(f.t)->redis_misses, 1);
    assert_int_equal(hg_tenants_stats(f.t)->redis_hits, 0);
    fixture_done(&f);
}

static void test_service_timeout(void **state)
{
    struct fixture f;
    if (!setup_service(&f, false))
        skip();
    struct hg_tenants_opts o = svc_opts(&f);
    o.timeout_ms = 300;
    open_tenants(&f, &f.t, &o);
    svc_mode(&f, "slow", 1500);
    char id[32];
    fresh_id(id, sizeof(id), '7');
    const char *ids[] = { id };
    struct hg_tenant *tn = NULL;
    uint64_t t0 = hg_time_mono_ns();
    assert_int_equal(resolve(&f, f.t, NULL, ids, 1, &tn), HG_ERR_UNAVAILABLE);
    uint64_t ms = (hg_time_mono_ns() - t0) / 1000000u;
    assert_true(ms >= 250 && ms < 1200);
    svc_mode(&f, "ok", 0);
    fixture_done(&f);
}

/* Without Redis this worker's LRU is the only negative cache: a 404 is remembered for
 * negative_ttl, not just local_ttl. And one lookup per resolve, however many ids. */
static void test_negative_without_redis_and_one_lookup(void **state)
{
    struct fixture f;
    if (!setup_service(&f, false))
        skip();
    struct hg_tenants_opts o = svc_opts(&f);
    o.local_ttl_ms = 50;
    o.negative_ttl_ms = 60000;
    open_tenants(&f, &f.t, &o);
    char a[32], b[32], c[32];
    fresh_id(a, sizeof(a), '4');
    fresh_id(b, sizeof(b), '4');
    fresh_id(c, sizeof(c), '7');
    const char *ids[] = { a, b, c };
    struct hg_tenant *tn = NULL;
    /* a is asked (404); b and c are unknown to the LRU: skipped, the default answers. */
    assert_int_equal(resolve(&f, f.t, NULL, ids, 3, &tn), 0);
    assert_int_equal(tn->source, HG_TENANT_DEFAULT);
    hg_tenant_unref(tn);
    assert_int_equal(svc_count_ba(&f, a), 1);
    assert_int_equal(svc_count_ba(&f, b), 0);
    assert_int_equal(svc_count_ba(&f, c), 0);
    assert_int_equal(hg_tenants_stats(f.t)->ids_not_asked, 2);
    sleep_loop(&f.loop, 80); /* past the local TTL, well inside the negative one */
    /* a is still known not to exist: b is the one asked now (404), c skipped again. */
    assert_int_equal(resolve(&f, f.t, NULL, ids, 3, &tn), 0);
    hg_tenant_unref(tn);
    assert_int_equal(svc_count_ba(&f, a), 1);
    assert_int_equal(svc_count_ba(&f, b), 1);
    assert_int_equal(svc_count_ba(&f, c), 0);
    /* Then c, which the service knows: found at the third request. */
    assert_int_equal(resolve(&f, f.t, NULL, ids, 3, &tn), 0);
    assert_int_equal(tn->source, HG_TENANT_SERVICE);
    assert_string_equal(tn->id + 4, c);
    hg_tenant_unref(tn);
    assert_int_equal(svc_count_ba(&f, c), 1);
    fixture_done(&f);
}

static void test_stale_if_error(void **state)
{
    struct fixture f;
    if (!setup_service(&f, false))
        skip();
    struct hg_tenants_opts o = svc_opts(&f);
    o.local_ttl_ms = 50;
    open_tenants(&f, &f.t, &o);
    char id[32];
    fresh_id(id, sizeof(id), '7');
    const char *ids[] = { id };
    struct hg_tenant *tn = NULL, *tn2 = NULL;
    assert_int_equal(resolve(&f, f.t, NULL, ids, 1, &tn), 0);
    sleep_loop(&f.loop, 80); /* past the local TTL */
    assert_int_equal(hg_tenants_resolve_local(f.t, f.conf, NULL, ids, 1, &tn2), HG_TENANTS_PENDING);

    svc_mode(&f, "fail", 0);
    assert_int_equal(resolve(&f, f.t, NULL, ids, 1, &tn2), 0);
    assert_ptr_equal(tn2, tn); /* the stale copy */
    hg_tenant_unref(tn2);
    assert_int_equal(hg_tenants_stats(f.t)->stale_served, 1);
    assert_int_equal(svc_count_ba(&f, id), 2);
    /* Served stale, it counts as fresh again for a while: no call per request. */
    assert_int_equal(hg_tenants_resolve_local(f.t, f.conf, NULL, ids, 1, &tn2), 0);
    hg_tenant_unref(tn2);
    assert_int_equal(svc_count_ba(&f, id), 2);
    hg_tenant_unref(tn);
    svc_mode(&f, "ok", 0);
    fixture_done(&f);
}

static void test_bad_document_and_token(void **state)
{
    struct fixture f;
    if (!setup_service(&f, false))
        skip();
    struct hg_tenants_opts o = svc_opts(&f);
    open_tenants(&f, &f.t, &o);
    char id[32];
    fresh_id(id, sizeof(id), '5');
    const char *ids[] = { id };
    struct hg_tenant *tn = NULL;
    assert_int_equal(resolve(&f, f.t, NULL, ids, 1, &tn), HG_ERR_UNAVAILABLE);
    assert_int_equal(hg_tenants_stats(f.t)->service_failures, 1);
    assert_int_equal(svc_count_ba(&f, id), 1);

    /* The fake insists on the bearer token: a wrong one is a failure, not "not found". */
    if (f.token != NULL) {
        struct hg_tenants *t2 = NULL;
        struct hg_tenants_opts o2 = o;
        o2.service_token = "wrong";
        open_tenants(&f, &t2, &o2);
        fresh_id(id, sizeof(id), '7');
        assert_int_equal(resolve(&f, t2, NULL, ids, 1, &tn), HG_ERR_UNAVAILABLE);
        assert_int_equal(hg_tenants_stats(t2)->service_failures, 1);
        close_tenants(&f, t2);
    }
    fixture_done(&f);
}

static void test_path_tenant_service(void **state)
{
    struct fixture f;
    if (!setup_service(&f, false))
        skip();
    struct hg_tenants_opts o = svc_opts(&f);
    open_tenants(&f, &f.t, &o);
    char id[32], path[40], url[64];
    fresh_id(id, sizeof(id), '7');
    snprintf(path, sizeof(path), "gen-%s", id);
    struct hg_tenant *tn = NULL;
    assert_int_equal(resolve(&f, f.t, path, NULL, 0, &tn), 0);
    assert_int_equal(tn->source, HG_TENANT_SERVICE);
    assert_string_equal(tn->id, path);
    hg_tenant_unref(tn);
    snprintf(url, sizeof(url), "/tenants/%s", path);
    assert_int_equal(svc_count(&f, url), 1);

    /* A path tenant the service does not know: 404, cached, never the default. */
    char nobody[40];
    snprintf(nobody, sizeof(nobody), "nobody-%s", id);
    assert_int_equal(resolve(&f, f.t, nobody, NULL, 0, &tn), HG_ERR_NOT_FOUND);
    assert_int_equal(hg_tenants_resolve_local(f.t, f.conf, nobody, NULL, 0, &tn), HG_ERR_NOT_FOUND);
    snprintf(url, sizeof(url), "/tenants/%s", nobody);
    assert_int_equal(svc_count(&f, url), 1);
    /* Config tenants never reach the service, even by path. */
    assert_int_equal(resolve(&f, f.t, "acme", NULL, 0, &tn), 0);
    assert_int_equal(tn->source, HG_TENANT_CONFIG);
    hg_tenant_unref(tn);
    assert_int_equal(svc_count(&f, "/tenants/acme"), 0);
    fixture_done(&f);
}

/* The LRU is bounded: the least recently used id is dropped and looked up again. */
static void test_lru_bounded(void **state)
{
    struct fixture f;
    if (!setup_service(&f, false))
        skip();
    struct hg_tenants_opts o = svc_opts(&f);
    o.local_max = 2;
    open_tenants(&f, &f.t, &o);
    char id[3][32];
    struct hg_tenant *tn = NULL;
    for (int i = 0; i < 3; i++) {
        fresh_id(id[i], sizeof(id[i]), '7');
        const char *ids[] = { id[i] };
        assert_int_equal(resolve(&f, f.t, NULL, ids, 1, &tn), 0);
        hg_tenant_unref(tn);
    }
    const char *last[] = { id[2] }, *first[] = { id[0] };
    assert_int_equal(hg_tenants_resolve_local(f.t, f.conf, NULL, last, 1, &tn), 0);
    hg_tenant_unref(tn);
    assert_int_equal(hg_tenants_resolve_local(f.t, f.conf, NULL, first, 1, &tn), HG_TENANTS_PENDING);
    assert_int_equal(resolve(&f, f.t, NULL, first, 1, &tn), 0);
    hg_tenant_unref(tn);
    assert_int_equal(svc_count_ba(&f, id[0]), 2);
    assert_int_equal(svc_count_ba(&f, id[2]), 1);

    /* The same unknown id twice is asked once. */
    char nf[32];
    fresh_id(nf, sizeof(nf), '4');
    const char *twice[] = { nf, nf };
    assert_int_equal(resolve(&f, f.t, NULL, twice, 2, &tn), 0);
    assert_int_equal(tn->source, HG_TENANT_DEFAULT);
    hg_tenant_unref(tn);
    assert_int_equal(svc_count_ba(&f, nf), 1);
    fixture_done(&f);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_path_tenant),
        cmocka_unit_test(test_config_business_ids),
        cmocka_unit_test(test_default_tenant),
        cmocka_unit_test(test_default_without_secret),
        cmocka_unit_test(test_invalid_args),
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_service_unreachable),
        cmocka_unit_test(test_close_pending),
        cmocka_unit_test(test_service_hit_cached_in_redis),
        cmocka_unit_test(test_negative_caching),
        cmocka_unit_test(test_service_down_cached_still_resolves),
        cmocka_unit_test(test_coalescing),
        cmocka_unit_test(test_redis_down_uses_service),
        cmocka_unit_test(test_service_timeout),
        cmocka_unit_test(test_stale_if_error),
        cmocka_unit_test(test_negative_without_redis_and_one_lookup),
        cmocka_unit_test(test_bad_document_and_token),
        cmocka_unit_test(test_path_tenant_service),
        cmocka_unit_test(test_lru_bounded),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}

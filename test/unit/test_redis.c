/* Tests for src/clients/redis: URL parsing, the local fallback, and (with HG_TEST_REDIS_URL)
 * dedup, rate limit, cache, NOSCRIPT, deadlines and a Redis restart against a real server. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <uv.h>

#include "clients/redis.h"
#include "clients/redis_uv.h"
#include "core/err.h"
#include "core/time.h"
#include "core/uuid.h"

/* ---- helpers ----------------------------------------------------------------------------- */

/* One call's outcome; `returned` is set right after the call returns so a callback that runs
 * too early is caught. */
struct rec {
    int calls;
    bool returned;
    bool early;
    struct hg_redis_dedup_result dedup;
    struct hg_redis_ratelimit_result rl;
    struct hg_redis_cache_result cache;
    struct hg_redis_seq_result seq;
    char value[256];
};

/* Sequence answers, in the order they came. */
struct seq_log {
    int calls;
    bool returned;
    uint64_t values[16];
    bool fallback[16];
};

static void on_seq(void *arg, const struct hg_redis_seq_result *res)
{
    struct seq_log *l = arg;
    assert_true(l->returned);
    assert_true(l->calls < 16);
    l->values[l->calls] = res->value;
    l->fallback[l->calls] = res->fallback;
    l->calls++;
}

static void on_dedup(void *arg, const struct hg_redis_dedup_result *res)
{
    struct rec *rc = arg;
    rc->calls++;
    if (!rc->returned)
        rc->early = true;
    rc->dedup = *res;
}

static void on_rl(void *arg, const struct hg_redis_ratelimit_result *res)
{
    struct rec *rc = arg;
    rc->calls++;
    if (!rc->returned)
        rc->early = true;
    rc->rl = *res;
}

static void on_cache(void *arg, const struct hg_redis_cache_result *res)
{
    struct rec *rc = arg;
    rc->calls++;
    if (!rc->returned)
        rc->early = true;
    rc->cache = *res;
    rc->value[0] = '\0';
    if (res->status == HG_REDIS_CACHE_HIT) {
        assert_true(res->len < sizeof(rc->value));
        memcpy(rc->value, res->value, res->len);
        rc->value[res->len] = '\0';
        assert_int_equal(res->value[res->len], '\0');
    }
}

static void on_guard(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

/* Run the loop until *count >= want or ms pass; true when reached. */
static bool run_until(uv_loop_t *loop, const int *count, int want, uint64_t ms)
{
    bool fired = false;
    uv_timer_t guard;
    uv_timer_init(loop, &guard);
    guard.data = &fired;
    uv_timer_start(&guard, on_guard, ms, 0);
    while (*count < want && !fired)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return *count >= want;
}

static void sleep_loop(uv_loop_t *loop, uint64_t ms)
{
    int never = 0;
    run_until(loop, &never, 1, ms);
}

static bool wait_state(uv_loop_t *loop, struct hg_redis *r, enum hg_redis_state want, uint64_t ms)
{
    uint64_t end = hg_time_mono_ns() / 1000000u + ms;
    while (hg_redis_state(r) != want && hg_time_mono_ns() / 1000000u < end)
        sleep_loop(loop, 20);
    return hg_redis_state(r) == want;
}

static void dedup_begin(uv_loop_t *loop, struct hg_redis *r, const char *key, uint64_t ttl,
                        struct hg_redis_dedup_result *out)
{
    struct rec rc = { 0 };
    assert_int_equal(hg_redis_dedup_begin(r, key, ttl, on_dedup, &rc), 0);
    rc.returned = true;
    assert_int_equal(rc.calls, 0);
    assert_true(run_until(loop, &rc.calls, 1, 2000));
    uv_run(loop, UV_RUN_NOWAIT); /* a second call would show up here */
    assert_int_equal(rc.calls, 1);
    assert_false(rc.early);
    *out = rc.dedup;
}

static void dedup_done(uv_loop_t *loop, struct hg_redis *r, const char *key, uint64_t ttl,
                       struct hg_redis_dedup_result *out)
{
    struct rec rc = { 0 };
    assert_int_equal(hg_redis_dedup_done(r, key, ttl, on_dedup, &rc), 0);
    rc.returned = true;
    assert_true(run_until(loop, &rc.calls, 1, 2000));
    assert_false(rc.early);
    assert_int_equal(rc.dedup.status, HG_REDIS_DEDUP_MARKED);
    *out = rc.dedup;
}

static void ratelimit(uv_loop_t *loop, struct hg_redis *r, const char *tenant, int64_t limit,
                      uint64_t window, struct hg_redis_ratelimit_result *out)
{
    struct rec rc = { 0 };
    assert_int_equal(hg_redis_ratelimit(r, tenant, limit, window, on_rl, &rc), 0);
    rc.returned = true;
    assert_true(run_until(loop, &rc.calls, 1, 2000));
    assert_false(rc.early);
    *out = rc.rl;
}

static void cache_get(uv_loop_t *loop, struct hg_redis *r, const char *key, struct rec *rc)
{
    memset(rc, 0, sizeof(*rc));
    assert_int_equal(hg_redis_cache_get(r, key, on_cache, rc), 0);
    rc->returned = true;
    assert_true(run_until(loop, &rc->calls, 1, 2000));
    assert_false(rc->early);
}

static void on_closed(void *arg)
{
    (*(int *)arg)++;
}

static void close_client(uv_loop_t *loop, struct hg_redis *r)
{
    int closed = 0;
    hg_redis_close(r, on_closed, &closed);
    assert_int_equal(closed, 0); /* never inside the call */
    assert_true(run_until(loop, &closed, 1, 5000));
    uv_run(loop, UV_RUN_DEFAULT); /* the adapter's poll handle closes on its own turn */
    assert_int_equal(closed, 1);
    assert_int_equal(uv_loop_close(loop), 0); /* nothing leaked on the loop */
}

/* A per-run prefix so runs (and other users of the test server) never share keys. */
static char run_id[17];

static void key_of(char *out, size_t cap, const char *what)
{
    snprintf(out, cap, "t%s-%s", run_id, what);
}

static const char *server_url(void)
{
    const char *u = getenv("HG_TEST_REDIS_URL");
    return u && u[0] ? u : NULL;
}

/* A blocking side connection for setting up and inspecting server state. */
static redisContext *side_connect(void)
{
    struct hg_redis_url u;
    assert_int_equal(hg_redis_url_parse(server_url(), &u), 0);
    struct timeval tv = { 2, 0 };
    redisContext *c = redisConnectWithTimeout(u.host, u.port, tv);
    assert_non_null(c);
    assert_int_equal(c->err, 0);
    redisReply *rp = redisCommand(c, "SELECT %d", u.db);
    assert_non_null(rp);
    freeReplyObject(rp);
    return c;
}

static void side_cmd(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *rp = redisvCommand(c, fmt, ap);
    va_end(ap);
    assert_non_null(rp);
    assert_int_not_equal(rp->type, REDIS_REPLY_ERROR);
    freeReplyObject(rp);
}

static struct hg_redis *open_ready(uv_loop_t *loop, const struct hg_redis_opts *opts)
{
    struct hg_redis *r = NULL;
    assert_int_equal(uv_loop_init(loop), 0);
    assert_int_equal(hg_redis_open(loop, server_url(), opts, &r), 0);
    assert_true(wait_state(loop, r, HG_REDIS_OK, 5000));
    return r;
}

/* ---- no server needed -------------------------------------------------------------------- */

/* The config loader's check: its own reason for rediss:// and unix://, never the password. */
static void test_url_check(void **state)
{
    (void)state;
    char why[512];
    assert_int_equal(hg_redis_url_check("redis://:pw@127.0.0.1:6379/2", why, sizeof why), 0);
    assert_int_equal(hg_redis_url_check("rediss://:s3cr3t@cache.example:6380/0", why, sizeof why), HG_ERR_PARSE);
    assert_non_null(strstr(why, "docs/backend-tls.md"));
    assert_null(strstr(why, "s3cr3t"));
    assert_int_equal(hg_redis_url_check("unix:///run/redis.sock", why, sizeof why), HG_ERR_PARSE);
    assert_non_null(strstr(why, "unix://"));
    assert_int_equal(hg_redis_url_check("redis://:s3cr3t@host:70000/0", why, sizeof why), HG_ERR_PARSE);
    assert_null(strstr(why, "s3cr3t"));
}

static void test_url_parse(void **state)
{
    struct hg_redis_url u;
    assert_int_equal(hg_redis_url_parse("redis://127.0.0.1:16379/0", &u), 0);
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 16379);
    assert_int_equal(u.db, 0);
    assert_string_equal(u.password, "");
    assert_string_equal(u.user, "");

    assert_int_equal(hg_redis_url_parse("redis://localhost", &u), 0);
    assert_string_equal(u.host, "localhost");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 0);

    assert_int_equal(hg_redis_url_parse("redis://:s3cr%40t@redis.example:7000/5", &u), 0);
    assert_string_equal(u.password, "s3cr@t");
    assert_string_equal(u.user, "");
    assert_string_equal(u.host, "redis.example");
    assert_int_equal(u.port, 7000);
    assert_int_equal(u.db, 5);

    assert_int_equal(hg_redis_url_parse("redis://hook:pw@10.0.0.1/2", &u), 0);
    assert_string_equal(u.user, "hook");
    assert_string_equal(u.password, "pw");
    assert_int_equal(u.db, 2);

    assert_int_equal(hg_redis_url_parse("redis://[::1]:6380/1", &u), 0);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 6380);
    assert_int_equal(u.db, 1);

    assert_int_equal(hg_redis_url_parse("redis://host/", &u), 0);
    assert_int_equal(u.db, 0);

    const char *bad[] = {
        "", "http://host", "rediss://host:6379", "redis://", "redis://:6379", "redis://host:0",
        "redis://host:65536", "redis://host:12ab", "redis://host:/0", "redis://host/x",
        "redis://host/1/2", "redis://host/-1", "redis://host?db=1", "redis://ho st",
        "redis://[::1", "redis://[::1]x", "redis://:pw%4@host", "redis://:pw%zz@host",
        "redis://host:99999999999", NULL,
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (hg_redis_url_parse(bad[i], &u) != HG_ERR_PARSE)
            fail_msg("accepted bad url '%s'", bad[i] ? bad[i] : "(null)");
    }

    char longhost[400] = "redis://";
    memset(longhost + 8, 'a', 300);
    longhost[308] = '\0';
    assert_int_equal(hg_redis_url_parse(longhost, &u), HG_ERR_PARSE);

    uv_loop_t loop;
    struct hg_redis *r = NULL;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(hg_redis_open(&loop, "rediss://x", NULL, &r), HG_ERR_PARSE);
    assert_null(r);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_dedup_key(void **state)
{
    char k[64];
    assert_int_equal(hg_redis_dedup_key(k, sizeof(k), "acme", "wamid.1"), 0);
    assert_string_equal(k, "hg:dedup:acme:wamid.1");
    char tiny[10];
    assert_int_equal(hg_redis_dedup_key(tiny, sizeof(tiny), "acme", "wamid.1"), HG_ERR_TOO_BIG);
}

/* Nothing listens on port 1: everything answers from the local fallback, asynchronously. */
static void test_fallback_without_server(void **state)
{
    uv_loop_t loop;
    struct hg_redis *r = NULL;
    struct hg_redis_opts opts = { .backoff_min_ms = 20, .backoff_max_ms = 50,
                                  .local_dedup_max = 3 };
    struct hg_redis_dedup_result d;
    struct hg_redis_ratelimit_result rl;
    struct rec rc;

    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(hg_redis_open(&loop, "redis://127.0.0.1:1/0", &opts, &r), 0);
    sleep_loop(&loop, 100); /* a few failed connects */
    assert_int_equal(hg_redis_state(r), HG_REDIS_DOWN);

    dedup_begin(&loop, r, "k1", 60000, &d);
    assert_int_equal(d.status, HG_REDIS_DEDUP_NEW);
    assert_true(d.fallback);
    dedup_begin(&loop, r, "k1", 60000, &d);
    assert_int_equal(d.status, HG_REDIS_DEDUP_DUPLICATE_PENDING);
    assert_true(d.fallback);
    dedup_done(&loop, r, "k1", 60000, &d);
    assert_true(d.fallback);
    dedup_begin(&loop, r, "k1", 60000, &d);
    assert_int_equal(d.status, HG_REDIS_DEDUP_DUPLICATE_DONE);
    assert_int_equal(hg_redis_dedup_abort(r, "k1"), 0);
    dedup_begin(&loop, r, "k1", 60000, &d);
    assert_int_equal(d.status, HG_REDIS_DEDUP_NEW);

    /* Pending TTL applies locally too. */
    dedup_begin(&loop, r, "k2", 50, &d);
    assert_int_equal(d.status, HG_REDIS_DEDUP_NEW);
    sleep_loop(&loop, 120);
    dedup_begin(&loop, r, "k2", 50, &d);
    assert_int_equal(d.status, HG_REDIS_DEDUP_NEW);

    /* Bounded: with room for 3 entries, the least recently used one goes. */
    dedup_begin(&loop, r, "k3", 60000, &d);
    dedup_begin(&loop, r, "k4", 60000, &d);
    assert_true(hg_redis_stats(r)->local_evictions >= 1);
    dedup_begin(&loop, r, "k1", 60000, &d); /* evicted: NEW again */
    assert_int_equal(d.status, HG_REDIS_DEDUP_NEW);

    /* Local window: exactly `limit` pass, then 429-style answers; tenants independent. */
    for (int i = 0; i < 3; i++) {
        ratelimit(&loop, r, "acme", 3, 60000, &rl);
        assert_true(rl.allowed);
        assert_true(rl.fallback);
        assert_int_equal(rl.limit, 3);
        assert_int_equal(rl.remaining, 2 - i);
    }
    ratelimit(&loop, r, "acme", 3, 60000, &rl);
    assert_false(rl.allowed);
    assert_int_equal(rl.remaining, 0);
    int64_t now_s = (int64_t)(hg_time_now_ns() / 1000000000u);
    assert_true(rl.reset_at_unix_s >= now_s && rl.reset_at_unix_s <= now_s + 61);
    ratelimit(&loop, r, "other", 3, 60000, &rl);
    assert_true(rl.allowed);

    cache_get(&loop, r, "tenant:acme", &rc);
    assert_int_equal(rc.cache.status, HG_REDIS_CACHE_MISS);
    assert_true(rc.cache.fallback);
    assert_int_equal(hg_redis_cache_set(r, "tenant:acme", "x", 1, 1000), 0);

    const struct hg_redis_stats *st = hg_redis_stats(r);
    assert_true(st->fallback_dedup >= 9);
    assert_int_equal(st->fallback_ratelimit, 5);
    assert_true(st->fallback_cache >= 1);
    assert_int_equal(st->connects, 0);

    /* Bad arguments fail at once and never call back. */
    struct rec bad = { 0 };
    assert_int_equal(hg_redis_dedup_begin(r, "", 1000, on_dedup, &bad), HG_ERR_INVALID);
    assert_int_equal(hg_redis_dedup_begin(r, "k", 0, on_dedup, &bad), HG_ERR_INVALID);
    assert_int_equal(hg_redis_ratelimit(r, "acme", 0, 1000, on_rl, &bad), HG_ERR_INVALID);
    assert_int_equal(hg_redis_ratelimit(r, "acme", 5, 0, on_rl, &bad), HG_ERR_INVALID);
    sleep_loop(&loop, 10);
    assert_int_equal(bad.calls, 0);

    close_client(&loop, r);
}

/* Callbacks queued but not yet delivered at close still run once, before close_cb. */
static void test_close_delivers_outstanding(void **state)
{
    uv_loop_t loop;
    struct hg_redis *r = NULL;
    struct rec a = { 0 }, b = { 0 };
    int closed = 0;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(hg_redis_open(&loop, server_url() ? server_url() : "redis://127.0.0.1:1",
                                   NULL, &r), 0);
    assert_int_equal(hg_redis_dedup_begin(r, "close-k", 1000, on_dedup, &a), 0);
    assert_int_equal(hg_redis_ratelimit(r, "close-t", 10, 1000, on_rl, &b), 0);
    hg_redis_close(r, on_closed, &closed);
    assert_int_equal(hg_redis_dedup_begin(r, "close-k", 1000, on_dedup, &a), HG_ERR_CLOSED);
    assert_int_equal(a.calls + b.calls + closed, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(a.calls, 1);
    assert_int_equal(b.calls, 1);
    assert_int_equal(closed, 1);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- real server ------------------------------------------------------------------------- */

/* A host name is resolved off the loop; closing while that is in flight is clean too. */
static void test_hostname(void **state)
{
    if (!server_url())
        skip();
    struct hg_redis_url u;
    assert_int_equal(hg_redis_url_parse(server_url(), &u), 0);
    if (strcmp(u.host, "127.0.0.1") != 0)
        skip();
    char url[128];
    snprintf(url, sizeof(url), "redis://localhost:%d/%d", u.port, u.db);
    uv_loop_t loop;
    struct hg_redis *r = NULL;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(hg_redis_open(&loop, url, NULL, &r), 0);
    close_client(&loop, r); /* at once: the lookup is still in flight */

    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(hg_redis_open(&loop, url, NULL, &r), 0);
    assert_true(wait_state(&loop, r, HG_REDIS_OK, 5000));
    close_client(&loop, r);
}

static void test_dedup_two_phase(void **state)
{
    if (!server_url())
        skip();
    uv_loop_t loop;
    struct hg_redis *r = open_ready(&loop, NULL);
    struct hg_redis_dedup_result d;
    char key[128], ev[64];
    key_of(ev, sizeof(ev), "ev1");
    assert_int_equal(hg_redis_dedup_key(key, sizeof(key), "acme", ev), 0);

    dedup_begin(&loop, r, key, 60000, &d);
    assert_int_equal(d.status, HG_REDIS_DEDUP_NEW);
    assert_false(d.fallback);
    dedup_begin(&loop, r, key, 60000, &d);
    assert_int_equal(d.status, HG_REDIS_DEDUP_DUPLICATE_PENDING);
    assert_false(d.fallback);
    dedup_done(&loop, r, key, 60000, &d);
    assert_false(d.fallback);
    dedup_begin(&loop, r, key, 60000, &d);
    assert_int_equal(d.status, HG_REDIS_DEDUP_DUPLICATE_DONE);
    assert_false(d.fallback);

    /* The marks are really in Redis, with the TTLs asked for. */
    redisContext *side = side_connect();
    redisReply *rp = redisCommand(side, "GET %s", key);
    assert_non_null(rp);
    assert_int_equal(rp->type, REDIS_REPLY_STRING);
    assert_string_equal(rp->str, "done");
    freeReplyObject(rp);
    rp = redisCommand(side, "PTTL %s", key);
    assert_true(rp->integer > 50000 && rp->integer <= 60000);
    freeReplyObject(rp);

    assert_int_equal(hg_redis_dedup_abort(r, key), 0);
    dedup_begin(&loop, r, key, 60000, &d); /* pipelined after the DEL */
    assert_int_equal(d.status, HG_REDIS_DEDUP_NEW);
    assert_false(d.fallback);
    assert_int_equal(hg_redis_stats(r)->fallback_dedup, 0);
    side_cmd(side, "DEL %s", key);
    redisFree(side);
    close_client(&loop, r);
}

static void test_dedup_pending_ttl(void **state)
{
    if (!server_url())
        skip();
    uv_loop_t loop;
    struct hg_redis *r = open_ready(&loop, NULL);
    struct hg_redis_dedup_result d;
    char key[128];
    key_of(key, sizeof(key), "pending-ttl");
    dedup_begin(&loop, r, key, 150, &d);
    assert_int_equal(d.status, HG_REDIS_DEDUP_NEW);
    dedup_begin(&loop, r, key, 150, &d);
    assert_int_equal(d.status, HG_REDIS_DEDUP_DUPLICATE_PENDING);
    sleep_loop(&loop, 300);
    dedup_begin(&loop, r, key, 150, &d);
    assert_int_equal(d.status, HG_REDIS_DEDUP_NEW); /* a crashed holder's mark ran out */
    assert_false(d.fallback);
    close_client(&loop, r);
}

static void test_ratelimit(void **state)
{
    if (!server_url())
        skip();
    uv_loop_t loop;
    struct hg_redis *r = open_ready(&loop, NULL);
    struct hg_redis_ratelimit_result rl;
    char t1[64], t2[64];
    key_of(t1, sizeof(t1), "tenant-a");
    key_of(t2, sizeof(t2), "tenant-b");
    const int64_t limit = 5;

    for (int64_t i = 0; i < limit; i++) {
        ratelimit(&loop, r, t1, limit, 10000, &rl);
        assert_true(rl.allowed);
        assert_false(rl.fallback);
        assert_int_equal(rl.limit, limit);
        assert_int_equal(rl.remaining, limit - 1 - i);
    }
    int64_t now_s = (int64_t)(hg_time_now_ns() / 1000000000u);
    for (int i = 0; i < 3; i++) {
        ratelimit(&loop, r, t1, limit, 10000, &rl);
        assert_false(rl.allowed);
        assert_false(rl.fallback);
        assert_int_equal(rl.remaining, 0);
        assert_true(rl.reset_at_unix_s >= now_s);
        assert_true(rl.reset_at_unix_s <= now_s + 11);
    }
    /* Another tenant has its own window. */
    ratelimit(&loop, r, t2, limit, 10000, &rl);
    assert_true(rl.allowed);
    assert_int_equal(rl.remaining, limit - 1);

    /* Many in flight at once on the one pipelined connection: exactly `limit` pass. */
    char t3[64];
    key_of(t3, sizeof(t3), "tenant-c");
    struct rec recs[20];
    memset(recs, 0, sizeof(recs));
    int total = 0;
    for (int i = 0; i < 20; i++) {
        assert_int_equal(hg_redis_ratelimit(r, t3, 7, 10000, on_rl, &recs[i]), 0);
        recs[i].returned = true;
    }
    uint64_t end = hg_time_mono_ns() / 1000000u + 3000;
    while (hg_time_mono_ns() / 1000000u < end) {
        total = 0;
        for (int i = 0; i < 20; i++)
            total += recs[i].calls;
        if (total == 20)
            break;
        sleep_loop(&loop, 10);
    }
    assert_int_equal(total, 20);
    int allowed = 0;
    for (int i = 0; i < 20; i++)
        allowed += recs[i].rl.allowed;
    assert_int_equal(allowed, 7);

    /* A short window frees up again. */
    char t4[64];
    key_of(t4, sizeof(t4), "tenant-d");
    ratelimit(&loop, r, t4, 1, 200, &rl);
    assert_true(rl.allowed);
    ratelimit(&loop, r, t4, 1, 200, &rl);
    assert_false(rl.allowed);
    sleep_loop(&loop, 300);
    ratelimit(&loop, r, t4, 1, 200, &rl);
    assert_true(rl.allowed);
    assert_int_equal(hg_redis_stats(r)->fallback_ratelimit, 0);
    close_client(&loop, r);
}

static void test_noscript(void **state)
{
    if (!server_url())
        skip();
    uv_loop_t loop;
    struct hg_redis *r = open_ready(&loop, NULL);
    struct hg_redis_ratelimit_result rl;
    struct hg_redis_dedup_result d;
    char t[64], key[64];
    key_of(t, sizeof(t), "noscript");
    key_of(key, sizeof(key), "noscript-dedup");
    redisContext *side = side_connect();
    side_cmd(side, "SCRIPT FLUSH");
    ratelimit(&loop, r, t, 2, 10000, &rl);
    assert_true(rl.allowed);
    assert_false(rl.fallback);
    assert_int_equal(rl.remaining, 1);
    assert_int_equal(hg_redis_stats(r)->noscript, 1);
    dedup_begin(&loop, r, key, 10000, &d);
    assert_int_equal(d.status, HG_REDIS_DEDUP_NEW);
    assert_false(d.fallback);
    assert_int_equal(hg_redis_stats(r)->noscript, 2);
    /* EVAL cached the scripts again: EVALSHA works without another retry. */
    ratelimit(&loop, r, t, 2, 10000, &rl);
    assert_true(rl.allowed);
    assert_int_equal(rl.remaining, 0);
    assert_int_equal(hg_redis_stats(r)->noscript, 2);
    redisFree(side);
    close_client(&loop, r);
}

static void test_cache(void **state)
{
    if (!server_url())
        skip();
    uv_loop_t loop;
    struct hg_redis *r = open_ready(&loop, NULL);
    struct rec rc;
    char k1[64], k2[64], k3[64];
    key_of(k1, sizeof(k1), "cache-1");
    key_of(k2, sizeof(k2), "cache-2");
    key_of(k3, sizeof(k3), "cache-3");

    cache_get(&loop, r, k1, &rc);
    assert_int_equal(rc.cache.status, HG_REDIS_CACHE_MISS);
    assert_false(rc.cache.fallback);

    const char val[] = "{\"tenant\":\"acme\",\"n\":\"n\"}";
    assert_int_equal(hg_redis_cache_set(r, k1, val, strlen(val), 60000), 0);
    cache_get(&loop, r, k1, &rc);
    assert_int_equal(rc.cache.status, HG_REDIS_CACHE_HIT);
    assert_int_equal(rc.cache.len, strlen(val));
    assert_string_equal(rc.value, val);

    /* Deleted: a miss again. */
    assert_int_equal(hg_redis_cache_del(r, k1), 0);
    cache_get(&loop, r, k1, &rc);
    assert_int_equal(rc.cache.status, HG_REDIS_CACHE_MISS);
    assert_int_equal(hg_redis_cache_set(r, k1, val, strlen(val), 60000), 0);

    /* A value that looks like the negative marker is still a value. */
    assert_int_equal(hg_redis_cache_set(r, k3, "n", 1, 60000), 0);
    cache_get(&loop, r, k3, &rc);
    assert_int_equal(rc.cache.status, HG_REDIS_CACHE_HIT);
    assert_string_equal(rc.value, "n");
    assert_int_equal(hg_redis_cache_set(r, k3, "", 0, 60000), 0);
    cache_get(&loop, r, k3, &rc);
    assert_int_equal(rc.cache.status, HG_REDIS_CACHE_HIT);
    assert_int_equal(rc.cache.len, 0);

    assert_int_equal(hg_redis_cache_set_negative(r, k2, 150), 0);
    cache_get(&loop, r, k2, &rc);
    assert_int_equal(rc.cache.status, HG_REDIS_CACHE_NEGATIVE);
    assert_false(rc.cache.fallback);
    sleep_loop(&loop, 300);
    cache_get(&loop, r, k2, &rc);
    assert_int_equal(rc.cache.status, HG_REDIS_CACHE_MISS); /* TTL ran out */

    assert_int_equal(hg_redis_cache_set(r, k1, "v2", 2, 150), 0);
    cache_get(&loop, r, k1, &rc);
    assert_string_equal(rc.value, "v2");
    sleep_loop(&loop, 300);
    cache_get(&loop, r, k1, &rc);
    assert_int_equal(rc.cache.status, HG_REDIS_CACHE_MISS);

    /* Foreign data under our prefix reads as a miss, not as garbage. */
    redisContext *side = side_connect();
    side_cmd(side, "SET hg:cache:%s %s PX 60000", k2, "plain");
    cache_get(&loop, r, k2, &rc);
    assert_int_equal(rc.cache.status, HG_REDIS_CACHE_MISS);
    side_cmd(side, "DEL hg:cache:%s hg:cache:%s", k2, k3);
    redisFree(side);

    assert_int_equal(hg_redis_cache_set(r, k1, "x", HG_REDIS_VALUE_MAX + 1, 1000), HG_ERR_TOO_BIG);
    assert_int_equal(hg_redis_stats(r)->fallback_cache, 0);
    close_client(&loop, r);
}

/* Numbers per key in call order, the key's TTL set (and refreshed), none without Redis. */
static void test_sequence(void **state)
{
    if (!server_url())
        skip();
    uv_loop_t loop;
    struct hg_redis *r = open_ready(&loop, NULL);
    char ka[64], kb[64];
    key_of(ka, sizeof(ka), "seq-a");
    key_of(kb, sizeof(kb), "seq-b");
    struct seq_log l = { 0 };
    const char *order[] = { ka, ka, kb, ka, kb };
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(hg_redis_sequence_next(r, order[i], 60000, on_seq, &l), 0);
    l.returned = true;
    assert_true(run_until(&loop, &l.calls, 5, 2000));
    const uint64_t want[] = { 1, 2, 1, 3, 2 };
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(l.values[i], want[i]);
        assert_false(l.fallback[i]);
    }
    redisContext *side = side_connect();
    redisReply *rp = redisCommand(side, "PTTL hg:seq:%s", ka);
    assert_non_null(rp);
    assert_int_equal(rp->type, REDIS_REPLY_INTEGER);
    assert_true(rp->integer > 50000 && rp->integer <= 60000);
    freeReplyObject(rp);
    side_cmd(side, "DEL hg:seq:%s hg:seq:%s", ka, kb);
    redisFree(side);
    assert_int_equal(hg_redis_sequence_next(r, ka, 0, on_seq, &l), HG_ERR_INVALID);
    assert_int_equal(hg_redis_sequence_next(r, "", 1000, on_seq, &l), HG_ERR_INVALID);
    assert_int_equal(hg_redis_stats(r)->fallback_sequence, 0);
    close_client(&loop, r);
}

static void test_sequence_without_server(void **state)
{
    uv_loop_t loop;
    struct hg_redis *r = NULL;
    struct hg_redis_opts opts = { .backoff_min_ms = 20, .backoff_max_ms = 50 };
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(hg_redis_open(&loop, "redis://127.0.0.1:1/0", &opts, &r), 0);
    struct seq_log l = { 0 };
    assert_int_equal(hg_redis_sequence_next(r, "conv", 1000, on_seq, &l), 0);
    l.returned = true;
    assert_true(run_until(&loop, &l.calls, 1, 2000));
    assert_int_equal(l.values[0], 0);
    assert_true(l.fallback[0]);
    assert_true(hg_redis_stats(r)->fallback_sequence >= 1);
    close_client(&loop, r);
}

/* CLIENT PAUSE makes Redis sit on commands: the deadline answers from the fallback, the late
 * reply is dropped, and the client recovers once Redis answers again. */
static void test_command_timeout(void **state)
{
    if (!server_url())
        skip();
    uv_loop_t loop;
    struct hg_redis_opts opts = { .command_timeout_ms = 150, .connect_timeout_ms = 300,
                                  .backoff_min_ms = 50, .backoff_max_ms = 200 };
    struct hg_redis *r = open_ready(&loop, &opts);
    struct hg_redis_ratelimit_result rl;
    char t[64];
    key_of(t, sizeof(t), "timeout");
    redisContext *side = side_connect();
    side_cmd(side, "CLIENT PAUSE 800 ALL");
    uint64_t t0 = hg_time_mono_ns();
    ratelimit(&loop, r, t, 10, 10000, &rl);
    uint64_t took_ms = (hg_time_mono_ns() - t0) / 1000000u;
    assert_true(rl.fallback);
    assert_true(rl.allowed);
    assert_true(took_ms >= 100 && took_ms < 600);
    assert_int_equal(hg_redis_stats(r)->timeouts, 1);
    /* Meanwhile calls answer at once from the fallback. */
    assert_int_equal(hg_redis_state(r), HG_REDIS_DOWN);
    t0 = hg_time_mono_ns();
    ratelimit(&loop, r, t, 10, 10000, &rl);
    assert_true(rl.fallback);
    assert_true((hg_time_mono_ns() - t0) / 1000000u < 100);
    assert_true(wait_state(&loop, r, HG_REDIS_OK, 5000));
    ratelimit(&loop, r, t, 10, 10000, &rl);
    assert_false(rl.fallback);
    redisFree(side);
    close_client(&loop, r);
}

static void ctl(const char *verb)
{
    const char *path = getenv("HG_TEST_REDIS_CTL");
    char cmd[1024];
    assert_true((size_t)snprintf(cmd, sizeof(cmd), "'%s' %s >/dev/null 2>&1", path, verb) <
                sizeof(cmd));
    assert_int_equal(system(cmd), 0);
}

/* Stop Redis under a live client, then start it again: fallback meanwhile, shared state after. */
static void test_redis_restart(void **state)
{
    if (!server_url() || !getenv("HG_TEST_REDIS_CTL"))
        skip();
    uv_loop_t loop;
    struct hg_redis_opts opts = { .backoff_min_ms = 50, .backoff_max_ms = 400 };
    struct hg_redis *r = open_ready(&loop, &opts);
    struct hg_redis_dedup_result d;
    struct hg_redis_ratelimit_result rl;
    struct rec rc;
    char key[64], t[64];
    key_of(key, sizeof(key), "restart");
    key_of(t, sizeof(t), "restart-tenant");

    ctl("stop");
    assert_true(wait_state(&loop, r, HG_REDIS_DOWN, 3000));
    dedup_begin(&loop, r, key, 60000, &d);
    assert_int_equal(d.status, HG_REDIS_DEDUP_NEW);
    assert_true(d.fallback);
    dedup_begin(&loop, r, key, 60000, &d);
    assert_int_equal(d.status, HG_REDIS_DEDUP_DUPLICATE_PENDING);
    assert_true(d.fallback);
    ratelimit(&loop, r, t, 5, 10000, &rl);
    assert_true(rl.allowed);
    assert_true(rl.fallback);
    assert_int_equal(rl.remaining, 4);
    cache_get(&loop, r, key, &rc);
    assert_int_equal(rc.cache.status, HG_REDIS_CACHE_MISS);
    assert_true(rc.cache.fallback);
    sleep_loop(&loop, 500); /* a few failed reconnects */
    assert_int_equal(hg_redis_state(r), HG_REDIS_DOWN);

    ctl("start");
    assert_true(wait_state(&loop, r, HG_REDIS_OK, 5000));
    assert_true(hg_redis_stats(r)->connects >= 2);
    /* Shared state again: a mark set by another instance is seen. */
    redisContext *side = side_connect();
    side_cmd(side, "SET %s done PX 60000", key);
    dedup_begin(&loop, r, key, 60000, &d);
    assert_int_equal(d.status, HG_REDIS_DEDUP_DUPLICATE_DONE);
    assert_false(d.fallback);
    ratelimit(&loop, r, t, 5, 10000, &rl);
    assert_false(rl.fallback);
    assert_int_equal(rl.remaining, 4); /* the server's window, not the local one */
    side_cmd(side, "DEL %s", key);
    redisFree(side);
    close_client(&loop, r);
}

/* ---- the hiredis ↔ libuv glue (redis_uv.c), on a raw async context ---------------------- */

struct glue_rec {
    int connected;     /* 1 ok, -1 failed */
    int disconnected;
    int replies;
    long long last_int;
    bool in_order;
    char status[32];
};

static void glue_on_connect(const redisAsyncContext *ac, int status)
{
    struct glue_rec *g = ac->data;
    g->connected = status == REDIS_OK ? 1 : -1;
}

static void glue_on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    struct glue_rec *g = ac->data;
    g->disconnected++;
}

static void glue_on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct glue_rec *g = ac->data;
    redisReply *r = reply;
    (void)priv;
    if (r == NULL)
        return; /* the context is going away */
    g->replies++;
    if (r->type == REDIS_REPLY_INTEGER) {
        if (r->integer != g->last_int + 1)
            g->in_order = false;
        g->last_int = r->integer;
    } else if (r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_ERROR) {
        snprintf(g->status, sizeof(g->status), "%s", r->str);
    }
}

/* Initialize loop and connect a raw async context to the test server through the glue. */
static redisAsyncContext *glue_connect(uv_loop_t *loop, struct glue_rec *g)
{
    assert_int_equal(uv_loop_init(loop), 0);
    struct hg_redis_url u;
    assert_int_equal(hg_redis_url_parse(server_url(), &u), 0);
    redisAsyncContext *ac = redisAsyncConnect(u.host, u.port);
    assert_non_null(ac);
    assert_int_equal(ac->err, 0);
    assert_int_equal(hg_redis_uv_attach(ac, loop), 0);
    assert_int_not_equal(hg_redis_uv_attach(ac, loop), 0); /* attached once only */
    ac->data = g;
    g->in_order = true;
    redisAsyncSetDisconnectCallback(ac, glue_on_disconnect);
    redisAsyncSetConnectCallback(ac, glue_on_connect);
    int one = 1;
    run_until(loop, &g->connected, 1, 2000);
    assert_int_equal(g->connected, one);
    return ac;
}

/* Close the context and every handle; ASan reports anything the glue leaked. */
static void glue_close(uv_loop_t *loop, redisAsyncContext *ac, struct glue_rec *g)
{
    redisAsyncDisconnect(ac);
    run_until(loop, &g->disconnected, 1, 2000);
    assert_int_equal(g->disconnected, 1);
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
}

/* Commands queued in one loop turn leave in one write pass, and epoll is never touched. */
static void test_glue_one_write_per_turn(void **state)
{
    (void)state;
    if (!server_url())
        skip();
    uv_loop_t loop;
    struct glue_rec g = { 0 };
    redisAsyncContext *ac = glue_connect(&loop, &g);
    char key[64];
    key_of(key, sizeof(key), "glue-incr");
    struct hg_redis_uv_stats s0, s1;
    hg_redis_uv_stats(&s0);
    for (int i = 0; i < 300; i++)
        assert_int_equal(redisAsyncCommand(ac, glue_on_reply, NULL, "INCR %s", key), REDIS_OK);
    assert_true(run_until(&loop, &g.replies, 300, 3000));
    hg_redis_uv_stats(&s1);
    assert_true(g.in_order);
    assert_int_equal(g.last_int, 300);
    assert_int_equal(s1.flushes - s0.flushes, 1);
    assert_int_equal(s1.poll_changes - s0.poll_changes, 0);
    assert_int_equal(s1.write_waits - s0.write_waits, 0);

    /* The next turn's command is a write pass of its own. */
    assert_int_equal(redisAsyncCommand(ac, glue_on_reply, NULL, "DEL %s", key), REDIS_OK);
    assert_true(run_until(&loop, &g.replies, 301, 3000));
    hg_redis_uv_stats(&s0);
    assert_int_equal(s0.flushes - s1.flushes, 1);
    assert_int_equal(s0.poll_changes - s1.poll_changes, 0);
    glue_close(&loop, ac, &g);
}

/* A command larger than the socket buffer waits for writability, then the glue goes back to
 * flushing at the end of the turn. */
static void test_glue_full_socket(void **state)
{
    (void)state;
    if (!server_url())
        skip();
    uv_loop_t loop;
    struct glue_rec g = { 0 };
    redisAsyncContext *ac = glue_connect(&loop, &g);
    char key[64];
    key_of(key, sizeof(key), "glue-big");
    size_t big = 48u << 20;
    char *v = malloc(big);
    assert_non_null(v);
    memset(v, 'x', big);
    struct hg_redis_uv_stats s0, s1;
    hg_redis_uv_stats(&s0);
    assert_int_equal(redisAsyncCommand(ac, glue_on_reply, NULL, "SET %s %b", key, v, big), REDIS_OK);
    free(v);
    assert_true(run_until(&loop, &g.replies, 1, 20000));
    assert_string_equal(g.status, "OK");
    hg_redis_uv_stats(&s1);
    assert_true(s1.write_waits - s0.write_waits >= 1);
    assert_true(s1.poll_changes - s0.poll_changes >= 2); /* writability armed, then dropped */

    g.last_int = big - 1;
    assert_int_equal(redisAsyncCommand(ac, glue_on_reply, NULL, "STRLEN %s", key), REDIS_OK);
    assert_true(run_until(&loop, &g.replies, 2, 3000));
    assert_int_equal(g.last_int, (long long)big);
    assert_true(g.in_order);
    hg_redis_uv_stats(&s0);
    assert_int_equal(s0.poll_changes - s1.poll_changes, 0);
    assert_int_equal(s0.flushes - s1.flushes, 1);
    assert_int_equal(redisAsyncCommand(ac, glue_on_reply, NULL, "DEL %s", key), REDIS_OK);
    assert_true(run_until(&loop, &g.replies, 3, 3000));
    glue_close(&loop, ac, &g);
}

/* The server hangs up: hiredis frees the context from inside a read; the glue's handles close
 * after it and nothing touches the freed context. */
static void test_glue_server_hangs_up(void **state)
{
    (void)state;
    if (!server_url())
        skip();
    uv_loop_t loop;
    struct glue_rec g = { 0 };
    redisAsyncContext *ac = glue_connect(&loop, &g);
    assert_int_equal(redisAsyncCommand(ac, glue_on_reply, NULL, "QUIT"), REDIS_OK);
    assert_true(run_until(&loop, &g.disconnected, 1, 3000));
    assert_int_equal(g.disconnected, 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    snprintf(run_id, sizeof(run_id), "%016llx", (unsigned long long)hg_random_u64());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_parse),
        cmocka_unit_test(test_url_check),
        cmocka_unit_test(test_dedup_key),
        cmocka_unit_test(test_fallback_without_server),
        cmocka_unit_test(test_close_delivers_outstanding),
        cmocka_unit_test(test_sequence_without_server),
        cmocka_unit_test(test_sequence),
        cmocka_unit_test(test_hostname),
        cmocka_unit_test(test_dedup_two_phase),
        cmocka_unit_test(test_dedup_pending_ttl),
        cmocka_unit_test(test_ratelimit),
        cmocka_unit_test(test_noscript),
        cmocka_unit_test(test_cache),
        cmocka_unit_test(test_command_timeout),
        cmocka_unit_test(test_redis_restart),
        cmocka_unit_test(test_glue_one_write_per_turn),
        cmocka_unit_test(test_glue_full_socket),
        cmocka_unit_test(test_glue_server_hangs_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * State Manager client: breaker state machine, timeouts, close and the async contract without a
 * server; mapping, record, retries and breaker against the fake (HG_TEST_STATE_MANAGER_URL).
 */
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
#include "clients/statemgr.h"
#include "core/buf.h"
#include "core/common.h"
#include "core/err.h"

struct result {
    int calls;
    bool in_call;        /* set while enrich/close runs: the callback must never see it */
    bool ran_inside;
    json_t *mapping;     /* own reference */
    bool degraded;
    bool recorded;
    char error[160];
    bool had_error;
};

struct fixture {
    uv_loop_t loop;
    struct hg_http *http;
    struct hg_statemgr *sm;
    int sm_closed;
    bool http_closed;
    int lfd;             /* silent listener, -1 when none */
};

static void on_result(void *arg, const struct hg_statemgr_result *r)
{
    struct result *res = arg;
    res->calls++;
    if (res->in_call)
        res->ran_inside = true;
    json_decref(res->mapping);
    res->mapping = r->mapping != NULL ? json_incref(r->mapping) : NULL;
    res->degraded = r->degraded;
    res->recorded = r->recorded;
    res->had_error = r->error != NULL;
    snprintf(res->error, sizeof(res->error), "%s", r->error != NULL ? r->error : "");
}

static void result_reset(struct result *r)
{
    json_decref(r->mapping);
    memset(r, 0, sizeof(*r));
}

static int enrich(struct fixture *f, const char *wa_id, const char *tenant, json_t *body,
                  struct result *r)
{
    r->in_call = true;
    int rc = hg_statemgr_enrich(f->sm, wa_id, tenant, body, on_result, r);
    r->in_call = false;
    return rc;
}

static void run_until(struct fixture *f, const int *calls, int want)
{
    while (*calls < want)
        assert_true(uv_run(&f->loop, UV_RUN_ONCE) != 0 || *calls >= want);
}

/* Enrich and wait for the answer; checks the callback did not run inside enrich. */
static void enrich_wait(struct fixture *f, const char *wa_id, const char *tenant, json_t *body,
                        struct result *r)
{
    result_reset(r);
    assert_int_equal(enrich(f, wa_id, tenant, body, r), 0);
    assert_int_equal(r->calls, 0);
    run_until(f, &r->calls, 1);
    assert_false(r->ran_inside);
    assert_int_equal(r->calls, 1);
}

static void on_sleep(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

static void on_sleep_closed(uv_handle_t *h)
{
    (void)h;
}

/* Let `ms` pass on the loop (requests and timers keep running meanwhile). */
static void loop_sleep(struct fixture *f, uint64_t ms)
{
    uv_timer_t t;
    bool fired = false;
    uv_timer_init(&f->loop, &t);
    t.data = &fired;
    uv_timer_start(&t, on_sleep, ms, 0);
    while (!fired)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, on_sleep_closed);
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

static void stats(struct fixture *f, struct hg_statemgr_stats *st)
{
    hg_statemgr_stats(f->sm, st);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(hg_http_open(&f->loop, &f->http), 0);
    f->lfd = -1;
    *state = f;
    return 0;
}

static void on_sm_closed(void *arg)
{
    ((struct fixture *)arg)->sm_closed++;
}

static void on_http_closed(void *arg)
{
    ((struct fixture *)arg)->http_closed = true;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (f->sm != NULL) {
        hg_statemgr_close(f->sm, on_sm_closed, f);
        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_int_equal(f->sm_closed, 1);
    }
    hg_http_close(f->http, on_http_closed, f);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_true(f->http_closed);
    /* Every uv handle either client opened must be closed and freed by now. */
    assert_int_equal(uv_loop_close(&f->loop), 0);
    if (f->lfd >= 0)
        close(f->lfd);
    free(f);
    return 0;
}

static void open_sm(struct fixture *f, const struct hg_statemgr_opts *o)
{
    assert_int_equal(hg_statemgr_open(f->http, &f->loop, o, &f->sm), 0);
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

static uint64_t ms_since(uint64_t t0)
{
    return (uv_hrtime() - t0) / 1000000;
}

/* ---- without a server ---------------------------------------------------------------------- */

static void test_open_invalid(void **state)
{
    struct fixture *f = *state;
    struct hg_statemgr *sm = NULL;
    struct hg_statemgr_opts o = { 0 };
    assert_int_equal(hg_statemgr_open(f->http, &f->loop, &o, &sm), HG_ERR_INVALID);
    o.base_url = "ftp://127.0.0.1:1";
    assert_int_equal(hg_statemgr_open(f->http, &f->loop, &o, &sm), HG_ERR_INVALID);
    o.base_url = "http://";
    assert_int_equal(hg_statemgr_open(f->http, &f->loop, &o, &sm), HG_ERR_INVALID);
    o.base_url = "http:///";
    assert_int_equal(hg_statemgr_open(f->http, &f->loop, &o, &sm), HG_ERR_INVALID);
    o.base_url = "http://127.0.0.1:1\r\nX: y";
    assert_int_equal(hg_statemgr_open(f->http, &f->loop, &o, &sm), HG_ERR_INVALID);
    o.base_url = "http://127.0.0.1:1";
    o.token = "a\nb";
    assert_int_equal(hg_statemgr_open(f->http, &f->loop, &o, &sm), HG_ERR_INVALID);
    assert_null(sm);
    assert_int_equal(hg_statemgr_open(f->http, &f->loop, NULL, &sm), HG_ERR_INVALID);
    o.token = NULL;
    open_sm(f, &o);
}

static void test_invalid_calls(void **state)
{
    struct fixture *f = *state;
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", closed_port());
    struct hg_statemgr_opts o = { .base_url = url };
    open_sm(f, &o);
    struct result r = { 0 };
    assert_int_equal(hg_statemgr_enrich(f->sm, "1", NULL, NULL, NULL, &r), HG_ERR_INVALID);
    char longid[HG_STATEMGR_WA_ID_MAX + 2];
    memset(longid, '7', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    assert_int_equal(enrich(f, longid, NULL, NULL, &r), HG_ERR_INVALID);
    assert_int_equal(enrich(f, "1", "acme\r\nX-Evil: 1", NULL, &r), HG_ERR_INVALID);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(r.calls, 0);
    struct hg_statemgr_stats st;
    stats(f, &st);
    assert_int_equal(st.calls, 0);
    assert_int_equal(st.requests, 0);
    assert_int_equal(hg_http_pending(f->http), 0);
}

/* Nothing asked (no wa_id, no body): still answered, later, not degraded, no request. */
static void test_nothing_to_do_answers_later(void **state)
{
    struct fixture *f = *state;
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", closed_port());
    struct hg_statemgr_opts o = { .base_url = url };
    open_sm(f, &o);
    struct result r = { 0 };
    enrich_wait(f, NULL, "acme", NULL, &r);
    assert_false(r.degraded);
    assert_false(r.had_error);
    assert_null(r.mapping);
    enrich_wait(f, "", NULL, NULL, &r);
    assert_false(r.degraded);
    struct hg_statemgr_stats st;
    stats(f, &st);
    assert_int_equal(st.calls, 2);
    assert_int_equal(st.requests, 0);
    result_reset(&r);
}

/*
 * The breaker state machine against a closed port: N consecutive failures open it; while open,
 * calls are answered degraded without a request (and never inside enrich); after the interval one
 * trial goes out, and its failure opens the breaker again.
 */
static void test_breaker_opens_and_trial_fails(void **state)
{
    struct fixture *f = *state;
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", closed_port());
    struct hg_statemgr_opts o = { .base_url = url, .retries = HG_STATEMGR_NO_RETRY,
                                  .breaker_failures = 3, .breaker_open_ms = 300 };
    open_sm(f, &o);
    struct result r = { 0 };
    struct hg_statemgr_stats st;

    for (int i = 0; i < 3; i++) {
        stats(f, &st);
        assert_int_equal(st.breaker, HG_STATEMGR_BREAKER_CLOSED);
        enrich_wait(f, "16505551234", NULL, NULL, &r);
        assert_true(r.degraded);
        assert_null(r.mapping);
        assert_string_equal(r.error, "mapping: backend unavailable");
    }
    stats(f, &st);
    assert_int_equal(st.requests, 3);
    assert_int_equal(st.failures, 3);
    assert_int_equal(st.breaker, HG_STATEMGR_BREAKER_OPEN);
    assert_int_equal(st.breaker_opened, 1);

    /* Open: answered at once (no request), but still not inside enrich. */
    uint64_t t0 = uv_hrtime();
    for (int i = 0; i < 3; i++) {
        json_t *body = json_pack("{s:s}", "event_id", "e1");
        enrich_wait(f, "16505551234", NULL, body, &r);
        json_decref(body);
        assert_true(r.degraded);
        assert_string_equal(r.error, "mapping: circuit breaker open");
        assert_false(r.recorded);
    }
    /* without a wa_id the record step is the one refused */
    json_t *body = json_pack("{s:s}", "event_id", "e2");
    enrich_wait(f, NULL, NULL, body, &r);
    json_decref(body);
    assert_string_equal(r.error, "record: circuit breaker open");
    assert_true(ms_since(t0) < 200);
    stats(f, &st);
    assert_int_equal(st.requests, 3);
    assert_int_equal(st.breaker_rejected, 4);
    assert_int_equal(st.degraded, 7);
    assert_int_equal(hg_http_pending(f->http), 0);

    /* After the interval: one trial request; it fails, so the breaker opens again. */
    loop_sleep(f, 350);
    stats(f, &st);
    assert_int_equal(st.breaker, HG_STATEMGR_BREAKER_HALF_OPEN);
    struct result trial = { 0 }, other = { 0 };
    assert_int_equal(enrich(f, "16505551234", NULL, NULL, &trial), 0);
    assert_int_equal(enrich(f, "16505551234", NULL, NULL, &other), 0);
    stats(f, &st);
    assert_int_equal(st.requests, 4);
    assert_int_equal(st.breaker, HG_STATEMGR_BREAKER_HALF_OPEN);
    run_until(f, &trial.calls, 1);
    run_until(f, &other.calls, 1);
    assert_false(trial.ran_inside || other.ran_inside);
    assert_string_equal(trial.error, "mapping: backend unavailable");
    assert_string_equal(other.error, "mapping: circuit breaker open");
    stats(f, &st);
    assert_int_equal(st.requests, 4);
    assert_int_equal(st.breaker, HG_STATEMGR_BREAKER_OPEN);
    assert_int_equal(st.breaker_opened, 2);
    result_reset(&r);
    result_reset(&trial);
    result_reset(&other);
}

/* A failed request is retried `retries` times with a growing, jittered backoff. */
static void test_retries_with_backoff(void **state)
{
    struct fixture *f = *state;
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", closed_port());
    struct hg_statemgr_opts o = { .base_url = url, .retries = 2, .backoff_ms = 100 };
    open_sm(f, &o);
    struct result r = { 0 };
    uint64_t t0 = uv_hrtime();
    enrich_wait(f, "16505551234", NULL, NULL, &r);
    uint64_t ms = ms_since(t0);
    assert_true(r.degraded);
    struct hg_statemgr_stats st;
    stats(f, &st);
    assert_int_equal(st.requests, 3);
    assert_int_equal(st.retries, 2);
    assert_int_equal(st.failures, 3);
    /* waits of [50,100] then [100,200] ms */
    assert_true(ms >= 145);
    assert_true(ms < 2000);
    result_reset(&r);
}

/* A server that accepts and never answers: degraded after about timeout_ms. */
static void test_timeout_degrades(void **state)
{
    struct fixture *f = *state;
    int port;
    f->lfd = silent_listener(&port);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", port);
    struct hg_statemgr_opts o = { .base_url = url, .timeout_ms = 300,
                                  .retries = HG_STATEMGR_NO_RETRY };
    open_sm(f, &o);
    struct result r = { 0 };
    uint64_t t0 = uv_hrtime();
    enrich_wait(f, "16505551234", "acme", NULL, &r);
    uint64_t ms = ms_since(t0);
    assert_true(r.degraded);
    assert_string_equal(r.error, "mapping: timed out");
    assert_true(ms >= 250 && ms < 1500);
    struct hg_statemgr_stats st;
    stats(f, &st);
    assert_int_equal(st.failures, 1);
    result_reset(&r);
}

/* Close with a request in flight and one waiting to retry: both answered once, from the loop. */
static void test_close_answers_pending_calls(void **state)
{
    struct fixture *f = *state;
    int port;
    f->lfd = silent_listener(&port);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
    struct hg_statemgr_opts o = { .base_url = url, .timeout_ms = 10000 };
    open_sm(f, &o);
    struct result hang = { 0 };
    assert_int_equal(enrich(f, "16505551234", NULL, NULL, &hang), 0);

    /* a second client on the same hg_http, to a closed port with a long backoff */
    char url2[64];
    snprintf(url2, sizeof(url2), "http://127.0.0.1:%d", closed_port());
    struct hg_statemgr_opts o2 = { .base_url = url2, .backoff_ms = 60000 };
    struct hg_statemgr *sm2;
    assert_int_equal(hg_statemgr_open(f->http, &f->loop, &o2, &sm2), 0);
    struct result retry = { 0 };
    retry.in_call = true;
    assert_int_equal(hg_statemgr_enrich(sm2, "1", NULL, NULL, on_result, &retry), 0);
    retry.in_call = false;
    struct hg_statemgr_stats st;
    for (;;) {
        uv_run(&f->loop, UV_RUN_ONCE);
        hg_statemgr_stats(sm2, &st);
        if (st.retries == 1)
            break;
    }
    assert_int_equal(retry.calls, 0);
    assert_int_equal(hg_http_pending(f->http), 1);

    uint64_t t0 = uv_hrtime();
    hang.in_call = retry.in_call = true;
    hg_statemgr_close(f->sm, on_sm_closed, f);
    hg_statemgr_close(f->sm, on_sm_closed, f); /* a second close is a no-op */
    hg_statemgr_close(sm2, on_sm_closed, f);
    hang.in_call = retry.in_call = false;
    assert_int_equal(hang.calls, 0);
    assert_int_equal(retry.calls, 0);
    assert_int_equal(f->sm_closed, 0);
    assert_int_equal(hg_http_pending(f->http), 0);
    struct result late = { 0 };
    assert_int_equal(enrich(f, "1", NULL, NULL, &late), HG_ERR_CLOSED);

    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_true(ms_since(t0) < 1000);
    assert_int_equal(hang.calls, 1);
    assert_int_equal(retry.calls, 1);
    assert_true(hang.degraded && retry.degraded);
    assert_string_equal(hang.error, "mapping: closing");
    assert_string_equal(retry.error, "mapping: closing");
    assert_int_equal(late.calls, 0);
    assert_int_equal(f->sm_closed, 2);
    f->sm = NULL;
    result_reset(&hang);
    result_reset(&retry);
}

/* Closing from inside a result callback, and enriching from one, are both safe. */
struct reentry {
    struct fixture *f;
    struct result first;
    struct result second;
    int second_rc;
};

static void on_reentry(void *arg, const struct hg_statemgr_result *r)
{
    struct reentry *re = arg;
    on_result(&re->first, r);
    re->second_rc = hg_statemgr_enrich(re->f->sm, "2", NULL, NULL, on_result, &re->second);
    hg_statemgr_close(re->f->sm, on_sm_closed, re->f);
}

static void test_close_from_callback(void **state)
{
    struct fixture *f = *state;
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", closed_port());
    struct hg_statemgr_opts o = { .base_url = url, .retries = HG_STATEMGR_NO_RETRY };
    open_sm(f, &o);
    struct reentry re = { .f = f };
    assert_int_equal(hg_statemgr_enrich(f->sm, "1", NULL, NULL, on_reentry, &re), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(re.first.calls, 1);
    assert_int_equal(re.second_rc, 0);
    assert_int_equal(re.second.calls, 1);
    assert_true(re.second.degraded);
    assert_int_equal(f->sm_closed, 1);
    f->sm = NULL;
    result_reset(&re.first);
    result_reset(&re.second);
}

/* The hg_http closed under the client: calls still answer (degraded), nothing leaks. */
static void test_http_closed_first(void **state)
{
    struct fixture *f = *state;
    int port;
    f->lfd = silent_listener(&port);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
    struct hg_statemgr_opts o = { .base_url = url };
    open_sm(f, &o);
    struct result r = { 0 };
    assert_int_equal(enrich(f, "1", NULL, NULL, &r), 0);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    r.in_call = true;
    hg_http_close(f->http, on_http_closed, f);
    r.in_call = false;
    assert_int_equal(r.calls, 0);
    /* still closing (not freed): requests cannot start any more, the call answers degraded */
    struct result r2 = { 0 };
    assert_int_equal(enrich(f, "1", NULL, NULL, &r2), 0);
    run_until(f, &r.calls, 1);
    run_until(f, &r2.calls, 1);
    assert_false(r.ran_inside || r2.ran_inside);
    assert_true(r.degraded);
    assert_string_equal(r.error, "mapping: closed");
    assert_true(r2.degraded);
    assert_string_equal(r2.error, "mapping: closed");
    struct hg_statemgr_stats st;
    stats(f, &st);
    assert_int_equal(st.failures, 0);
    assert_int_equal(st.breaker, HG_STATEMGR_BREAKER_CLOSED);
    hg_statemgr_close(f->sm, on_sm_closed, f);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    f->sm = NULL;
    assert_true(f->http_closed);
    /* teardown closes an hg_http: give it a fresh one */
    f->http_closed = false;
    assert_int_equal(hg_http_open(&f->loop, &f->http), 0);
    result_reset(&r);
    result_reset(&r2);
}

static void test_message_body(void **state)
{
    (void)state;
    json_error_t err;
    json_t *ev = json_loads("{\"schema_version\":\"1\",\"event_id\":\"wamid.X\","
                            "\"correlation_id\":\"req-0001\",\"provider\":\"whatsapp\","
                            "\"tenant\":\"acme\",\"kind\":\"message\",\"type\":\"text\","
                            "\"occurred_at\":\"2025-02-12T00:43:44Z\","
                            "\"customer\":{\"wa_id\":\"16505551234\",\"name\":\"S\"}}",
                            0, &err);
    assert_non_null(ev);
    json_t *b = hg_statemgr_message_body(ev);
    json_t *want = json_loads("{\"event_id\":\"wamid.X\",\"tenant\":\"acme\","
                              "\"wa_id\":\"16505551234\",\"kind\":\"message\",\"type\":\"text\","
                              "\"occurred_at\":\"2025-02-12T00:43:44Z\","
                              "\"correlation_id\":\"req-0001\"}", 0, &err);
    assert_true(json_equal(b, want));
    json_decref(b);
    json_decref(want);
    json_decref(ev);

    /* a system event: no customer, null correlation id */
    ev = json_loads("{\"event_id\":\"system:ab\",\"correlation_id\":null,\"tenant\":null,"
                    "\"kind\":\"system\",\"type\":\"account_update\",\"customer\":null}", 0, &err);
    b = hg_statemgr_message_body(ev);
    assert_true(json_is_null(json_object_get(b, "wa_id")));
    assert_true(json_is_null(json_object_get(b, "tenant")));
    assert_true(json_is_null(json_object_get(b, "occurred_at")));
    assert_string_equal(json_string_value(json_object_get(b, "type")), "account_update");
    assert_int_equal(json_object_size(b), 7);
    json_decref(b);
    json_decref(ev);
    json_t *arr = json_array();
    assert_null(hg_statemgr_message_body(arr));
    json_decref(arr);
}

static void test_conversation_body(void **state)
{
    (void)state;
    json_error_t err;
    json_t *ev = json_loads("{\"event_id\":\"f4a1\",\"correlation_id\":\"req-1\",\"provider\":\"genesys\","
                            "\"tenant\":\"acme\",\"kind\":\"conversation\",\"type\":\"customer_start\","
                            "\"occurred_at\":\"2025-02-12T00:43:44.512Z\",\"conversation\":{\"id\":\"c-1\","
                            "\"participant_id\":\"p-1\",\"session_id\":\"s-1\",\"sequence\":7}}", 0, &err);
    assert_non_null(ev);
    json_t *b = hg_statemgr_conversation_body(ev);
    json_t *want = json_loads("{\"event_id\":\"f4a1\",\"tenant\":\"acme\",\"provider\":\"genesys\","
                              "\"action\":\"created\",\"type\":\"customer_start\",\"conversation_id\":\"c-1\","
                              "\"participant_id\":\"p-1\",\"session_id\":\"s-1\",\"sequence\":7,"
                              "\"occurred_at\":\"2025-02-12T00:43:44.512Z\",\"correlation_id\":\"req-1\"}", 0, &err);
    assert_true(json_equal(b, want));
    json_decref(b);
    json_decref(want);
    /* Not a lifecycle change: attributes, a message, no conversation id. */
    json_object_set_new(ev, "type", json_string("attributes"));
    assert_null(hg_statemgr_conversation_body(ev));
    json_object_set_new(ev, "type", json_string("customer_end"));
    json_object_set_new(ev, "kind", json_string("message"));
    assert_null(hg_statemgr_conversation_body(ev));
    json_object_set_new(ev, "kind", json_string("conversation"));
    json_object_set_new(ev, "conversation", json_null());
    assert_null(hg_statemgr_conversation_body(ev));
    json_decref(ev);
    assert_string_equal(hg_statemgr_conversation_action("user_start"), "participant_joined");
    assert_string_equal(hg_statemgr_conversation_action("user_end"), "participant_left");
    assert_string_equal(hg_statemgr_conversation_action("transfer"), "transferred");
    assert_string_equal(hg_statemgr_conversation_action("customer_end"), "closed");
    assert_null(hg_statemgr_conversation_action("flow_outcome"));
    assert_null(hg_statemgr_conversation_action(NULL));
}

/* ---- against the fake State Manager --------------------------------------------------------- */

static const char *fake_url(void)
{
    const char *e = getenv("HG_TEST_STATE_MANAGER_URL");
    return (e != NULL && *e != '\0') ? e : NULL;
}

static size_t on_ctl_write(char *data, size_t size, size_t n, void *userdata)
{
    if (hg_buf_append(userdata, data, size * n) < 0)
        return 0;
    return size * n;
}

/* Blocking control request to the fake (the loop is not running meanwhile). */
static json_t *ctl(const char *method, const char *path, const char *body)
{
    char url[512];
    snprintf(url, sizeof(url), "%s%s", fake_url(), path);
    struct hg_buf out;
    hg_buf_init(&out, 1 << 20);
    CURL *e = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    if (body != NULL)
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_ctl_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &out);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 5000L);
    assert_int_equal(curl_easy_perform(e), CURLE_OK);
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    assert_int_equal(status, 200);
    curl_slist_free_all(h);
    curl_easy_cleanup(e);
    json_error_t err;
    json_t *j = json_loadb(out.data, out.len, 0, &err);
    hg_buf_free(&out);
    assert_non_null(j);
    return j;
}

static void ctl_do(const char *method, const char *path, const char *body)
{
    json_decref(ctl(method, path, body));
}

static json_int_t fake_stat(const char *name)
{
    json_t *s = ctl("GET", "/_test/stats", NULL);
    json_t *v = json_object_get(s, name);
    assert_true(json_is_integer(v));
    json_int_t n = json_integer_value(v);
    json_decref(s);
    return n;
}

static char *fake_stat_str(const char *name)
{
    json_t *s = ctl("GET", "/_test/stats", NULL);
    const char *v = json_string_value(json_object_get(s, name));
    char *copy = v != NULL ? strdup(v) : NULL;
    json_decref(s);
    return copy;
}

#define NEED_FAKE()                     \
    do {                                \
        if (fake_url() == NULL)         \
            skip();                     \
        ctl_do("POST", "/_test/reset", "{}"); \
    } while (0)

static void test_mapping_attached(void **state)
{
    NEED_FAKE();
    struct fixture *f = *state;
    struct hg_statemgr_opts o = { .base_url = fake_url(), .token = "s3cret" };
    open_sm(f, &o);
    struct result r = { 0 };
    enrich_wait(f, "16505551234", "acme", NULL, &r);
    assert_false(r.degraded);
    assert_false(r.had_error);
    assert_false(r.recorded);
    assert_non_null(r.mapping);
    assert_string_equal(json_string_value(json_object_get(r.mapping, "conversation_id")),
                        "conv-0001");
    assert_string_equal(json_string_value(json_object_get(r.mapping, "queue")), "sales");
    assert_int_equal(fake_stat("mapping_requests"), 1);
    assert_int_equal(fake_stat("message_requests"), 0);
    char *auth = fake_stat_str("last_authorization");
    char *tenant = fake_stat_str("last_tenant");
    assert_string_equal(auth, "Bearer s3cret");
    assert_string_equal(tenant, "acme");
    free(auth);
    free(tenant);
    struct hg_statemgr_stats st;
    stats(f, &st);
    assert_int_equal(st.mappings, 1);
    assert_int_equal(st.degraded, 0);
    result_reset(&r);
}

/* Whatever object the State Manager returns is passed through as is; ids are path-escaped. */
static void test_mapping_passthrough(void **state)
{
    NEED_FAKE();
    struct fixture *f = *state;
    const char *m = "{\"wa_id\":\"+44 20/7946\",\"conversation_id\":\"c-9\",\"agent_id\":null,"
                    "\"custom\":{\"tags\":[\"vip\",1,true],\"score\":0.5},\"state\":\"bot\"}";
    ctl_do("PUT", "/_test/mapping/%2B44%2020%2F7946", m);
    struct hg_statemgr_opts o = { .base_url = fake_url() };
    open_sm(f, &o);
    struct result r = { 0 };
    enrich_wait(f, "+44 20/7946", NULL, NULL, &r);
    assert_false(r.degraded);
    json_error_t err;
    json_t *want = json_loads(m, 0, &err);
    assert_true(json_equal(r.mapping, want));
    json_decref(want);
    char *path = fake_stat_str("last_path");
    assert_string_equal(path, "/state/mapping/%2B44%2020%2F7946");
    free(path);
    result_reset(&r);
}

static void test_no_mapping_is_not_degraded(void **state)
{
    NEED_FAKE();
    struct fixture *f = *state;
    struct hg_statemgr_opts o = { .base_url = fake_url() };
    open_sm(f, &o);
    struct result r = { 0 };
    enrich_wait(f, "19995550000", NULL, NULL, &r);
    assert_false(r.degraded);
    assert_false(r.had_error);
    assert_null(r.mapping);
    assert_int_equal(fake_stat("mapping_requests"), 1);
    struct hg_statemgr_stats st;
    stats(f, &st);
    assert_int_equal(st.failures, 0);
    assert_int_equal(st.retries, 0);
    result_reset(&r);
}

static void test_message_recorded(void **state)
{
    NEED_FAKE();
    struct fixture *f = *state;
    struct hg_statemgr_opts o = { .base_url = fake_url() };
    open_sm(f, &o);
    json_error_t err;
    json_t *ev = json_loads("{\"event_id\":\"wamid.REC1\",\"correlation_id\":\"req-7\","
                            "\"tenant\":\"acme\",\"kind\":\"message\",\"type\":\"text\","
                            "\"occurred_at\":\"2025-02-12T00:43:44Z\","
                            "\"customer\":{\"wa_id\":\"16505551234\"}}", 0, &err);
    json_t *body = hg_statemgr_message_body(ev);
    struct result r = { 0 };
    assert_int_equal(enrich(f, "16505551234", "acme", body, &r), 0);
    /* the body was serialized during the call: the caller may drop it at once */
    json_t *sent = json_deep_copy(body);
    json_decref(body);
    run_until(f, &r.calls, 1);
    assert_false(r.ran_inside);
    assert_false(r.degraded);
    assert_true(r.recorded);
    assert_non_null(r.mapping);

    json_t *msgs = ctl("GET", "/_test/messages", NULL);
    assert_int_equal(json_array_size(msgs), 1);
    json_t *m0 = json_array_get(msgs, 0);
    assert_true(json_equal(json_object_get(m0, "body"), sent));
    assert_string_equal(json_string_value(json_object_get(m0, "tenant_header")), "acme");
    assert_string_equal(json_string_value(json_object_get(m0, "content_type")),
                        "application/json");
    json_decref(msgs);

    /* no wa_id: record only, no lookup */
    struct result r2 = { 0 };
    enrich_wait(f, NULL, NULL, sent, &r2);
    assert_true(r2.recorded);
    assert_null(r2.mapping);
    assert_int_equal(fake_stat("mapping_requests"), 1);
    assert_int_equal(fake_stat("message_requests"), 2);
    struct hg_statemgr_stats st;
    stats(f, &st);
    assert_int_equal(st.recorded, 2);
    json_decref(sent);
    json_decref(ev);
    result_reset(&r);
    result_reset(&r2);
}

/* A conversation lifecycle change goes to /state/conversation (no lookup); 5xx is retried. */
static void test_conversation_recorded(void **state)
{
    NEED_FAKE();
    struct fixture *f = *state;
    struct hg_statemgr_opts o = { .base_url = fake_url(), .retries = 2, .backoff_ms = 20 };
    open_sm(f, &o);
    json_error_t err;
    json_t *ev = json_loads("{\"event_id\":\"f4a1\",\"correlation_id\":\"req-1\",\"provider\":\"genesys\","
                            "\"tenant\":\"acme\",\"kind\":\"conversation\",\"type\":\"user_end\","
                            "\"occurred_at\":\"2025-02-12T00:43:44.512Z\",\"conversation\":{\"id\":\"c-1\","
                            "\"participant_id\":\"p-1\",\"sequence\":null}}", 0, &err);
    json_t *body = hg_statemgr_conversation_body(ev);
    assert_non_null(body);
    struct result r = { 0 };
    r.in_call = true;
    assert_int_equal(hg_statemgr_conversation(f->sm, "acme", body, on_result, &r), 0);
    r.in_call = false;
    run_until(f, &r.calls, 1);
    assert_false(r.ran_inside);
    assert_false(r.degraded);
    assert_true(r.recorded);
    assert_null(r.mapping);
    json_t *got = ctl("GET", "/_test/conversations", NULL);
    assert_int_equal(json_array_size(got), 1);
    json_t *c0 = json_array_get(got, 0);
    assert_true(json_equal(json_object_get(c0, "body"), body));
    assert_string_equal(json_string_value(json_object_get(json_object_get(c0, "body"), "action")), "participant_left");
    assert_string_equal(json_string_value(json_object_get(c0, "tenant_header")), "acme");
    json_decref(got);
    assert_int_equal(fake_stat("mapping_requests"), 0);

    /* Failing: retried, then degraded (the event is published anyway by the drain). */
    ctl_do("POST", "/_test/mode", "{\"mode\":\"fail500\"}");
    result_reset(&r);
    assert_int_equal(hg_statemgr_conversation(f->sm, "acme", body, on_result, &r), 0);
    run_until(f, &r.calls, 1);
    assert_true(r.degraded);
    assert_false(r.recorded);
    assert_int_equal(fake_stat("conversation_requests"), 4);
    assert_int_equal(hg_statemgr_conversation(f->sm, "acme", NULL, on_result, &r), HG_ERR_INVALID);
    json_decref(body);
    json_decref(ev);
    result_reset(&r);
}

/* A record the State Manager refuses (400) is degraded but not retried and not a failure. */
static void test_record_refused(void **state)
{
    NEED_FAKE();
    struct fixture *f = *state;
    struct hg_statemgr_opts o = { .base_url = fake_url() };
    open_sm(f, &o);
    json_t *body = json_pack("{s:s}", "no_event_id", "x");
    struct result r = { 0 };
    enrich_wait(f, "16505551234", NULL, body, &r);
    json_decref(body);
    assert_true(r.degraded);
    assert_false(r.recorded);
    assert_string_equal(r.error, "record: http 400");
    /* the lookup itself worked: its mapping is still attached */
    assert_non_null(r.mapping);
    assert_int_equal(fake_stat("message_requests"), 1);
    struct hg_statemgr_stats st;
    stats(f, &st);
    assert_int_equal(st.failures, 0);
    assert_int_equal(st.breaker, HG_STATEMGR_BREAKER_CLOSED);
    result_reset(&r);
}

static void test_500_retried_then_degraded(void **state)
{
    NEED_FAKE();
    struct fixture *f = *state;
    ctl_do("POST", "/_test/mode", "{\"mode\":\"fail500\"}");
    struct hg_statemgr_opts o = { .base_url = fake_url(), .retries = 2, .backoff_ms = 20 };
    open_sm(f, &o);
    json_t *body = json_pack("{s:s}", "event_id", "e500");
    struct result r = { 0 };
    enrich_wait(f, "16505551234", NULL, body, &r);
    json_decref(body);
    assert_true(r.degraded);
    assert_null(r.mapping);
    assert_false(r.recorded);
    assert_string_equal(r.error, "mapping: http 500");
    assert_int_equal(fake_stat("mapping_requests"), 3);
    /* the lookup gave up: the record is not attempted against a failing service */
    assert_int_equal(fake_stat("message_requests"), 0);
    struct hg_statemgr_stats st;
    stats(f, &st);
    assert_int_equal(st.requests, 3);
    assert_int_equal(st.retries, 2);
    assert_int_equal(st.failures, 3);
    assert_int_equal(st.degraded, 1);
    assert_int_equal(st.breaker, HG_STATEMGR_BREAKER_CLOSED);

    /* back to health: the next call is whole again */
    ctl_do("POST", "/_test/mode", "{\"mode\":\"ok\"}");
    enrich_wait(f, "16505551234", NULL, NULL, &r);
    assert_false(r.degraded);
    assert_non_null(r.mapping);
    result_reset(&r);
}

/*
 * Breaker against the fake: 5 consecutive 500s open it (a retry in progress stops there), no
 * request reaches the fake while it is open, after the interval exactly one trial goes out, and
 * its success closes the breaker.
 */
static void test_breaker_against_fake(void **state)
{
    NEED_FAKE();
    struct fixture *f = *state;
    ctl_do("POST", "/_test/mode", "{\"mode\":\"fail500\"}");
    struct hg_statemgr_opts o = { .base_url = fake_url(), .retries = 2, .backoff_ms = 10,
                                  .breaker_failures = 5, .breaker_open_ms = 400 };
    open_sm(f, &o);
    struct result r = { 0 };
    struct hg_statemgr_stats st;

    enrich_wait(f, "16505551234", NULL, NULL, &r);
    assert_string_equal(r.error, "mapping: http 500");
    assert_int_equal(fake_stat("requests"), 3);
    enrich_wait(f, "16505551234", NULL, NULL, &r);
    /* failures 4 and 5 open the breaker; the third try of this call is refused */
    assert_true(r.degraded);
    assert_string_equal(r.error, "mapping: http 500");
    assert_int_equal(fake_stat("requests"), 5);
    stats(f, &st);
    assert_int_equal(st.breaker, HG_STATEMGR_BREAKER_OPEN);
    assert_int_equal(st.breaker_rejected, 1);

    /* open, even though the service is healthy again: nothing reaches it */
    ctl_do("POST", "/_test/mode", "{\"mode\":\"ok\"}");
    for (int i = 0; i < 5; i++) {
        enrich_wait(f, "16505551234", NULL, NULL, &r);
        assert_true(r.degraded);
        assert_null(r.mapping);
        assert_string_equal(r.error, "mapping: circuit breaker open");
    }
    assert_int_equal(fake_stat("requests"), 5);

    /* half-open: one trial; a call meanwhile is refused; success closes the breaker */
    loop_sleep(f, 450);
    struct result trial = { 0 }, other = { 0 };
    assert_int_equal(enrich(f, "16505551234", NULL, NULL, &trial), 0);
    assert_int_equal(enrich(f, "16505551234", NULL, NULL, &other), 0);
    run_until(f, &trial.calls, 1);
    run_until(f, &other.calls, 1);
    assert_false(trial.ran_inside || other.ran_inside);
    assert_false(trial.degraded);
    assert_non_null(trial.mapping);
    assert_true(other.degraded);
    assert_string_equal(other.error, "mapping: circuit breaker open");
    assert_int_equal(fake_stat("requests"), 6);
    stats(f, &st);
    assert_int_equal(st.breaker, HG_STATEMGR_BREAKER_CLOSED);
    assert_int_equal(st.breaker_opened, 1);

    enrich_wait(f, "16505551234", NULL, NULL, &r);
    assert_false(r.degraded);
    assert_int_equal(fake_stat("requests"), 7);
    result_reset(&r);
    result_reset(&trial);
    result_reset(&other);
}

static void test_slow_times_out(void **state)
{
    NEED_FAKE();
    struct fixture *f = *state;
    ctl_do("POST", "/_test/mode", "{\"mode\":\"slow\",\"delay_ms\":3000}");
    struct hg_statemgr_opts o = { .base_url = fake_url(), .timeout_ms = 300,
                                  .retries = HG_STATEMGR_NO_RETRY };
    open_sm(f, &o);
    struct result r = { 0 };
    uint64_t t0 = uv_hrtime();
    enrich_wait(f, "16505551234", NULL, NULL, &r);
    uint64_t ms = ms_since(t0);
    assert_true(r.degraded);
    assert_null(r.mapping);
    assert_string_equal(r.error, "mapping: timed out");
    assert_true(ms >= 250 && ms < 1500);
    ctl_do("POST", "/_test/mode", "{\"mode\":\"ok\"}");
    result_reset(&r);
}

/* "down" closes connections without an answer: degraded, counted as a failure. */
static void test_down_degrades(void **state)
{
    NEED_FAKE();
    struct fixture *f = *state;
    ctl_do("POST", "/_test/mode", "{\"mode\":\"down\"}");
    struct hg_statemgr_opts o = { .base_url = fake_url(), .retries = HG_STATEMGR_NO_RETRY };
    open_sm(f, &o);
    struct result r = { 0 };
    enrich_wait(f, "16505551234", NULL, NULL, &r);
    assert_true(r.degraded);
    assert_string_equal(r.error, "mapping: backend unavailable");
    assert_true(fake_stat("requests") >= 1);
    struct hg_statemgr_stats st;
    stats(f, &st);
    assert_int_equal(st.failures, 1);
    result_reset(&r);
}

/* The service stopped and started again (HG_TEST_STATE_MANAGER_CTL): degraded, then whole. */
static void test_stop_and_start(void **state)
{
    NEED_FAKE();
    const char *ctlsh = getenv("HG_TEST_STATE_MANAGER_CTL");
    if (ctlsh == NULL || *ctlsh == '\0')
        skip();
    struct fixture *f = *state;
    struct hg_statemgr_opts o = { .base_url = fake_url(), .retries = HG_STATEMGR_NO_RETRY };
    open_sm(f, &o);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "'%s' stop", ctlsh);
    assert_int_equal(system(cmd), 0);
    struct result r = { 0 };
    enrich_wait(f, "16505551234", NULL, NULL, &r);
    assert_true(r.degraded);
    snprintf(cmd, sizeof(cmd), "'%s' start", ctlsh);
    assert_int_equal(system(cmd), 0);
    enrich_wait(f, "16505551234", NULL, NULL, &r);
    assert_false(r.degraded);
    assert_non_null(r.mapping);
    result_reset(&r);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_invalid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_calls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nothing_to_do_answers_later, setup, teardown),
        cmocka_unit_test_setup_teardown(test_breaker_opens_and_trial_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retries_with_backoff, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_degrades, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_answers_pending_calls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_from_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_closed_first, setup, teardown),
        cmocka_unit_test(test_message_body),
        cmocka_unit_test(test_conversation_body),
        cmocka_unit_test_setup_teardown(test_conversation_recorded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mapping_attached, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mapping_passthrough, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_mapping_is_not_degraded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_message_recorded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_record_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_500_retried_then_degraded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_breaker_against_fake, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_times_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_down_degrades, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_and_start, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}

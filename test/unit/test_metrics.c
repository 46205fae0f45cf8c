/* Unit tests for src/ops/metrics.c: per-worker registries summed at render, histograms, escaping. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/buf.h"
#include "core/err.h"
#include "ops/metrics.h"

#define RENDER_CAP (16u << 20)

struct job {
    int worker;
    void (*fn)(void *arg);
    void *arg;
};

static void *job_main(void *p)
{
    struct job *j = p;
    if (j->worker != -2)
        hg_metrics_bind(j->worker);
    j->fn(j->arg);
    return NULL;
}

static void run_on_threads(struct job *jobs, size_t n)
{
    pthread_t t[8];
    assert_true(n <= 8);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(pthread_create(&t[i], NULL, job_main, &jobs[i]), 0);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
}

/* Render into a fresh buffer the caller frees. */
static char *render(void)
{
    struct hg_buf b;
    hg_buf_init(&b, RENDER_CAP);
    assert_int_equal(hg_metrics_render(&b), 0);
    char *text = strdup(hg_buf_cstr(&b));
    hg_buf_free(&b);
    return text;
}

/* True when `line` (without its newline) is one whole line of text. */
static int has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return 1;
    return 0;
}

static size_t count_prefix(const char *text, const char *prefix)
{
    size_t n = 0, len = strlen(prefix);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, prefix, len) == 0)
            n++;
    return n;
}

#define assert_line(text, line) \
    do { if (!has_line((text), (line))) fail_msg("missing line: %s\n--- render ---\n%s", (line), (text)); } while (0)

static int setup2(void **state)
{
    hg_metrics_init(2);
    hg_metrics_bind(-1);
    return 0;
}

static int teardown(void **state)
{
    hg_metrics_free();
    return 0;
}

static void add_200_x1000(void *arg)
{
    for (int i = 0; i < 1000; i++)
        hg_metric_inc(HG_M_HTTP_REQUESTS, "code=\"200\"");
    if (arg != NULL)
        hg_metric_add(HG_M_HTTP_REQUESTS, "code=\"500\"", 3);
}

static void test_counters_summed_across_workers(void **state)
{
    struct job jobs[2] = { { 0, add_200_x1000, "x" }, { 1, add_200_x1000, NULL } };
    run_on_threads(jobs, 2);
    hg_metric_add(HG_M_RABBITMQ_PUBLISH_FAILURES, NULL, 2);

    char *text = render();
    assert_line(text, "# HELP http_requests_total HTTP requests answered, by status code.");
    assert_line(text, "# TYPE http_requests_total counter");
    assert_line(text, "http_requests_total{code=\"200\"} 2000");
    assert_line(text, "http_requests_total{code=\"500\"} 3");
    assert_line(text, "rabbitmq_publish_failures_total 2");
    /* Unlabelled families without series render 0; labelled ones only HELP and TYPE. */
    assert_line(text, "dedup_duplicates_total 0");
    assert_line(text, "spool_records 0");
    assert_line(text, "# TYPE cache_hit_total counter");
    assert_int_equal(count_prefix(text, "cache_hit_total"), 0);
    /* Each series exactly once, sorted by labels. */
    assert_int_equal(count_prefix(text, "http_requests_total{"), 2);
    assert_true(strstr(text, "code=\"200\"} 2000") < strstr(text, "code=\"500\"} 3"));
    /* Every family has its HELP and TYPE lines. */
    assert_int_equal(count_prefix(text, "# HELP "), HG_M__COUNT);
    assert_int_equal(count_prefix(text, "# TYPE "), HG_M__COUNT);
    free(text);
}

static void observe_some(void *arg)
{
    (void)arg;
    hg_metric_observe(HG_M_PROCESSING_DURATION, NULL, 0.00390625); /* le 0.005 */
    hg_metric_observe(HG_M_PROCESSING_DURATION, NULL, 0.5);        /* le 0.5: bounds are inclusive */
}

static void observe_more(void *arg)
{
    (void)arg;
    hg_metric_observe(HG_M_PROCESSING_DURATION, NULL, 0.75);       /* le 1 */
    hg_metric_observe(HG_M_PROCESSING_DURATION, NULL, 16);         /* +Inf only */
}

static void test_histogram_buckets(void **state)
{
    struct job jobs[2] = { { 0, observe_some, NULL }, { 1, observe_more, NULL } };
    run_on_threads(jobs, 2);
    hg_metric_observe(HG_M_MEDIA_DOWNLOAD_SIZE, NULL, 1024);
    hg_metric_observe(HG_M_MEDIA_DOWNLOAD_SIZE, NULL, 200.0 * 1024 * 1024);
    hg_metric_observe(HG_M_MINIO_UPLOAD_DURATION, "bucket=\"raw\"", 0.0001);

    char *text = render();
    const char *p = "webhook_processing_duration_seconds";
    char line[256];
    static const struct { const char *le; int n; } want[] = {
        { "0.0001", 0 }, { "0.0025", 0 }, { "0.005", 1 }, { "0.25", 1 }, { "0.5", 2 },
        { "1", 3 }, { "2.5", 3 }, { "10", 3 }, { "+Inf", 4 },
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        snprintf(line, sizeof(line), "%s_bucket{le=\"%s\"} %d", p, want[i].le, want[i].n);
        assert_line(text, line);
    }
    assert_int_equal(count_prefix(text, "webhook_processing_duration_seconds_bucket{"), 17);
    assert_line(text, "webhook_processing_duration_seconds_sum 17.25390625");
    assert_line(text, "webhook_processing_duration_seconds_count 4");
    assert_line(text, "# TYPE webhook_processing_duration_seconds histogram");

    assert_line(text, "media_download_size_bytes_bucket{le=\"1024\"} 1");
    assert_line(text, "media_download_size_bytes_bucket{le=\"104857600\"} 1");
    assert_line(text, "media_download_size_bytes_bucket{le=\"+Inf\"} 2");
    assert_line(text, "media_download_size_bytes_count 2");

    /* Labels come first, le last; an observation on a bound lands in that bucket. */
    assert_line(text, "minio_upload_duration_seconds_bucket{bucket=\"raw\",le=\"0.0001\"} 1");
    assert_line(text, "minio_upload_duration_seconds_count{bucket=\"raw\"} 1");
    assert_line(text, "minio_upload_duration_seconds_sum{bucket=\"raw\"} 0.0001");

    /* An unlabelled histogram with no observations renders zeros. */
    assert_line(text, "spool_fsync_duration_seconds_bucket{le=\"+Inf\"} 0");
    assert_line(text, "spool_fsync_duration_seconds_sum 0");
    assert_line(text, "spool_fsync_duration_seconds_count 0");
    free(text);
}

struct gauge_arg {
    double records, lag;
};

static void set_gauges(void *arg)
{
    struct gauge_arg *g = arg;
    hg_metric_set(HG_M_SPOOL_RECORDS, NULL, 1000); /* overwritten: a gauge keeps the last value */
    hg_metric_set(HG_M_SPOOL_RECORDS, NULL, g->records);
    hg_metric_set(HG_M_EVENT_LOOP_LAG, NULL, g->lag);
}

static void test_gauges_sum_and_lag_max(void **state)
{
    struct gauge_arg a = { 5, 0.25 }, b = { 7, 0.125 };
    struct job jobs[2] = { { 0, set_gauges, &a }, { 1, set_gauges, &b } };
    run_on_threads(jobs, 2);
    hg_metric_set(HG_M_SPOOL_BYTES, NULL, 1.5);

    char *text = render();
    assert_line(text, "# TYPE spool_records gauge");
    assert_line(text, "spool_records 12");
    assert_line(text, "event_loop_lag_seconds 0.25");
    assert_line(text, "spool_bytes 1.5");
    assert_line(text, "http_connections 0");
    free(text);
}

static void test_label_escape(void **state)
{
    char out[64];
    assert_string_equal(hg_metrics_label_escape(out, sizeof(out), "a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    assert_string_equal(hg_metrics_label_escape(out, sizeof(out), "plain-tenant_1"), "plain-tenant_1");
    assert_string_equal(hg_metrics_label_escape(out, sizeof(out), NULL), "");
    /* Never cut inside an escape sequence or a UTF-8 character. */
    assert_string_equal(hg_metrics_label_escape(out, 4, "ab\"c"), "ab");
    assert_string_equal(hg_metrics_label_escape(out, 3, "a\xc3\xa9"), "a");
    assert_string_equal(hg_metrics_label_escape(out, 4, "a\xc3\xa9z"), "a\xc3\xa9");

    char esc[64], labels[128];
    hg_metrics_label_escape(esc, sizeof(esc), "acme\"\n");
    snprintf(labels, sizeof(labels), "tenant=\"%s\"", esc);
    hg_metric_inc(HG_M_RATELIMIT_REJECTED, labels);
    char *text = render();
    assert_line(text, "ratelimit_rejected_total{tenant=\"acme\\\"\\n\"} 1");
    free(text);
}

static atomic_bool writer_done;

static void add_many_series(void *arg)
{
    char labels[64];
    for (int i = 0; i < 2000; i++) {
        snprintf(labels, sizeof(labels), "tenant=\"t%04d\"", i);
        hg_metric_inc(HG_M_WEBHOOK_RECEIVED, labels);
        for (int k = 0; k < 25; k++)
            hg_metric_inc(HG_M_HTTP_REQUESTS, "code=\"200\"");
        hg_metric_observe(HG_M_PROCESSING_DURATION, NULL, 0.001);
    }
    atomic_store(&writer_done, true);
}

static void *writer_thread(void *arg)
{
    hg_metrics_bind(0);
    add_many_series(arg);
    return NULL;
}

static void test_render_while_adding_series(void **state)
{
    atomic_store(&writer_done, false);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, writer_thread, NULL), 0);
    int renders = 0;
    uint64_t last = 0;
    while (!atomic_load(&writer_done) || renders == 0) {
        char *text = render();
        /* Counters never go backwards between renders. */
        uint64_t now = hg_metric_counter_total(HG_M_HTTP_REQUESTS, "code=\"200\"");
        assert_true(now >= last);
        last = now;
        free(text);
        renders++;
    }
    assert_int_equal(pthread_join(t, NULL), 0);

    char *text = render();
    assert_int_equal(count_prefix(text, "webhook_received_total{"), 2000);
    assert_line(text, "webhook_received_total{tenant=\"t0000\"} 1");
    assert_line(text, "webhook_received_total{tenant=\"t1999\"} 1");
    assert_line(text, "http_requests_total{code=\"200\"} 50000");
    assert_line(text, "webhook_processing_duration_seconds_count 2000");
    assert_line(text, "webhook_processing_duration_seconds_bucket{le=\"0.001\"} 2000");
    free(text);
}

static void add_from_worker(void *arg)
{
    hg_metric_add(HG_M_CACHE_HIT, "cache=\"tenant\"", (uint64_t)(uintptr_t)arg);
}

static void test_counter_total(void **state)
{
    struct job jobs[3] = {
        { 0, add_from_worker, (void *)(uintptr_t)4 },
        { 1, add_from_worker, (void *)(uintptr_t)5 },
        { -2, add_from_worker, (void *)(uintptr_t)6 }, /* never bound: main registry */
    };
    run_on_threads(jobs, 3);
    hg_metric_inc(HG_M_CACHE_HIT, "cache=\"tenant\"");
    hg_metric_inc(HG_M_CACHE_HIT, "cache=\"media\"");
    assert_int_equal(hg_metric_counter_total(HG_M_CACHE_HIT, "cache=\"tenant\""), 16);
    assert_int_equal(hg_metric_counter_total(HG_M_CACHE_HIT, "cache=\"media\""), 1);
    assert_int_equal(hg_metric_counter_total(HG_M_CACHE_HIT, "cache=\"other\""), 0);
    assert_int_equal(hg_metric_counter_total(HG_M_CACHE_MISS, NULL), 0);
    /* Wrong kind of update for the family is ignored, not mixed in. */
    hg_metric_set(HG_M_CACHE_HIT, "cache=\"tenant\"", 99);
    hg_metric_observe(HG_M_CACHE_HIT, "cache=\"tenant\"", 99);
    assert_int_equal(hg_metric_counter_total(HG_M_CACHE_HIT, "cache=\"tenant\""), 16);
    assert_int_equal(hg_metric_counter_total(HG_M_SPOOL_RECORDS, NULL), 0);
}

static void test_before_init_and_unbound(void **state)
{
    hg_metrics_free();
    /* Before init: everything lands in the main registry. */
    hg_metric_inc(HG_M_DEDUP_DUPLICATES, NULL);
    struct job jobs[2] = { { -2, add_from_worker, (void *)(uintptr_t)2 }, { 7, add_from_worker, (void *)(uintptr_t)3 } };
    run_on_threads(jobs, 2);
    assert_int_equal(hg_metric_counter_total(HG_M_DEDUP_DUPLICATES, NULL), 1);
    assert_int_equal(hg_metric_counter_total(HG_M_CACHE_HIT, "cache=\"tenant\""), 5);
    char *text = render();
    assert_line(text, "dedup_duplicates_total 1");
    free(text);

    /* A binding from an earlier init no longer points at freed memory after re-init. */
    hg_metrics_init(1);
    hg_metrics_bind(0);
    hg_metrics_free();
    hg_metrics_init(1);
    hg_metric_inc(HG_M_DEDUP_DUPLICATES, NULL);
    assert_int_equal(hg_metric_counter_total(HG_M_DEDUP_DUPLICATES, NULL), 1);
}

static void test_series_cap(void **state)
{
    char labels[64];
    for (int i = 0; i < 5000; i++) {
        snprintf(labels, sizeof(labels), "tenant=\"%d\"", i);
        hg_metric_inc(HG_M_RATELIMIT_REJECTED, labels);
    }
    /* Existing series keep counting past the cap. */
    hg_metric_inc(HG_M_RATELIMIT_REJECTED, "tenant=\"0\"");
    char *text = render();
    assert_int_equal(count_prefix(text, "ratelimit_rejected_total{"), 4096);
    assert_line(text, "ratelimit_rejected_total{tenant=\"0\"} 2");
    free(text);

    struct hg_buf small;
    hg_buf_init(&small, 100);
    assert_int_equal(hg_metrics_render(&small), HG_ERR_TOO_BIG);
    hg_buf_free(&small);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_counters_summed_across_workers, setup2, teardown),
        cmocka_unit_test_setup_teardown(test_histogram_buckets, setup2, teardown),
        cmocka_unit_test_setup_teardown(test_gauges_sum_and_lag_max, setup2, teardown),
        cmocka_unit_test_setup_teardown(test_label_escape, setup2, teardown),
        cmocka_unit_test_setup_teardown(test_render_while_adding_series, setup2, teardown),
        cmocka_unit_test_setup_teardown(test_counter_total, setup2, teardown),
        cmocka_unit_test_setup_teardown(test_before_init_and_unbound, setup2, teardown),
        cmocka_unit_test_setup_teardown(test_series_cap, setup2, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

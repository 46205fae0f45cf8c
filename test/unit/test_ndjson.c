/* Unit tests for src/sink/ndjson.c: durable lines, group commit, rotation, errors, close. */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "core/err.h"
#include "sink/ndjson.h"

struct fixture {
    uv_loop_t loop;
    char dir[64];
};

struct outcome {
    int calls;
    int status;
    int order; /* when the callback ran, across all outcomes of a test */
};

static int clock_tick;

static void on_published(void *arg, int status)
{
    struct outcome *o = arg;
    o->calls++;
    o->status = status;
    o->order = ++clock_tick;
}

static void on_closed(void *arg)
{
    struct outcome *o = arg;
    o->calls++;
    o->order = ++clock_tick;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (f == NULL || uv_loop_init(&f->loop) != 0)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/hg-ndjson-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    clock_tick = 0;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    uv_run(&f->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&f->loop);
    nftw(f->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(f);
    return rc == 0 ? 0 : -1;
}

static int publish(struct hg_sink *s, const char *json, struct outcome *o)
{
    struct hg_event ev = { .event_id = "id", .kind = "message", .type = "text", .json = json, .json_len = strlen(json) };
    return hg_sink_publish(s, &ev, on_published, o);
}

static void close_sink(struct fixture *f, struct hg_sink *s)
{
    struct outcome done = { 0 };
    s->ops->close(s, on_closed, &done);
    assert_int_equal(done.calls, 0); /* never synchronously */
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(done.calls, 1);
}

/* Names of the event files in dir, sorted; returns how many. */
static int list_files(const char *dir, char names[][128], int cap)
{
    struct dirent **ents;
    int n = scandir(dir, &ents, NULL, alphasort), k = 0;
    assert_true(n >= 0);
    for (int i = 0; i < n; i++) {
        if (ents[i]->d_name[0] != '.' && k < cap) {
            assert_true(strlen(ents[i]->d_name) < 128);
            memcpy(names[k++], ents[i]->d_name, strlen(ents[i]->d_name) + 1);
        }
        free(ents[i]);
    }
    free(ents);
    return k;
}

/* Whole file as a string the caller frees. */
static char *slurp(const char *dir, const char *name)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *data = malloc((size_t)n + 1);
    assert_non_null(data);
    assert_int_equal(fread(data, 1, (size_t)n, fp), (size_t)n);
    data[n] = '\0';
    fclose(fp);
    return data;
}

static int name_matches(const char *name, int worker, unsigned seq)
{
    char prefix[32], suffix[32];
    snprintf(prefix, sizeof(prefix), "events-w%d-", worker);
    snprintf(suffix, sizeof(suffix), "-%06u.ndjson", seq);
    size_t pl = strlen(prefix), sl = strlen(suffix), nl = strlen(name);
    if (nl != pl + 15 + sl || strncmp(name, prefix, pl) != 0 || strcmp(name + nl - sl, suffix) != 0)
        return 0;
    for (size_t i = 0; i < 15; i++) {
        char c = name[pl + i];
        if (i == 8 ? c != 'T' : (c < '0' || c > '9'))
            return 0;
    }
    return 1;
}

static struct outcome reentrant_out;
static struct hg_sink *reentrant_sink;

static void on_published_then_publish(void *arg, int status)
{
    on_published(arg, status);
    assert_int_equal(publish(reentrant_sink, "{\"n\":4}", &reentrant_out), 0);
}

static void test_lines_written_in_order(void **state)
{
    struct fixture *f = *state;
    struct hg_sink *s;
    assert_int_equal(hg_ndjson_sink_open(&f->loop, f->dir, 3, 1 << 20, &s), 0);
    assert_string_equal(s->ops->name, "ndjson");
    const char *reason = NULL;
    assert_int_equal(s->ops->ready(s, &reason), 0);

    struct outcome o[3] = { { 0 } };
    assert_int_equal(publish(s, "{\"n\":1}", &o[0]), 0);
    assert_int_equal(publish(s, "{\"n\":2,\"s\":\"a b\"}", &o[1]), 0);
    /* The third publisher publishes again from its callback. */
    reentrant_sink = s;
    memset(&reentrant_out, 0, sizeof(reentrant_out));
    struct hg_event ev = { .json = "{\"n\":3}", .json_len = 7 };
    assert_int_equal(hg_sink_publish(s, &ev, on_published_then_publish, &o[2]), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(o[i].calls, 0); /* nothing confirmed before the fsync */

    uv_run(&f->loop, UV_RUN_DEFAULT);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(o[i].calls, 1);
        assert_int_equal(o[i].status, 0);
    }
    assert_true(o[0].order < o[1].order && o[1].order < o[2].order);
    assert_int_equal(reentrant_out.calls, 1);
    assert_int_equal(reentrant_out.status, 0);

    char names[4][128];
    assert_int_equal(list_files(f->dir, names, 4), 1);
    assert_true(name_matches(names[0], 3, 0));
    char *data = slurp(f->dir, names[0]);
    assert_string_equal(data, "{\"n\":1}\n{\"n\":2,\"s\":\"a b\"}\n{\"n\":3}\n{\"n\":4}\n");
    free(data);
    close_sink(f, s);
}

static void test_rotation(void **state)
{
    struct fixture *f = *state;
    struct hg_sink *s;
    assert_int_equal(hg_ndjson_sink_open(&f->loop, f->dir, 0, 10, &s), 0);
    struct outcome o[3] = { { 0 } };
    const char *line[3] = { "{\"a\":1}", "{\"a\":2}", "{\"a\":3}" };
    /* One batch each: 8 bytes (< 10, stay), 16 bytes (past 10: rotate), then a new file. */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(publish(s, line[i], &o[i]), 0);
        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_int_equal(o[i].calls, 1);
        assert_int_equal(o[i].status, 0);
    }
    char names[4][128];
    assert_int_equal(list_files(f->dir, names, 4), 2);
    assert_true(name_matches(names[0], 0, 0));
    assert_true(name_matches(names[1], 0, 1));
    char *a = slurp(f->dir, names[0]), *b = slurp(f->dir, names[1]);
    assert_string_equal(a, "{\"a\":1}\n{\"a\":2}\n");
    assert_string_equal(b, "{\"a\":3}\n");
    free(a);
    free(b);
    close_sink(f, s);
}

static void test_refuses_bad_events(void **state)
{
    struct fixture *f = *state;
    struct hg_sink *s;
    struct outcome o = { 0 };
    assert_int_equal(hg_ndjson_sink_open(&f->loop, f->dir, 0, 0, &s), 0);
    assert_int_equal(publish(s, "{\"a\":\n1}", &o), HG_ERR_INVALID);
    assert_int_equal(publish(s, "{\"a\":1}\r", &o), HG_ERR_INVALID);
    assert_int_equal(publish(s, "", &o), HG_ERR_INVALID);
    struct hg_event ev = { .json = "{}", .json_len = 2 };
    assert_int_equal(hg_sink_publish(s, &ev, NULL, NULL), HG_ERR_INVALID);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(o.calls, 0);
    char names[2][128];
    assert_int_equal(list_files(f->dir, names, 2), 0); /* nothing accepted, no file */
    close_sink(f, s);

    assert_int_equal(hg_ndjson_sink_open(&f->loop, "", 0, 0, &s), HG_ERR_INVALID);
    assert_int_equal(hg_ndjson_sink_open(&f->loop, f->dir, -1, 0, &s), HG_ERR_INVALID);
}

static void test_mkdir_p(void **state)
{
    struct fixture *f = *state;
    char dir[128];
    snprintf(dir, sizeof(dir), "%s/a/b/c", f->dir);
    struct hg_sink *s;
    assert_int_equal(hg_ndjson_sink_open(&f->loop, dir, 1, 0, &s), 0);
    struct outcome o = { 0 };
    assert_int_equal(publish(s, "{}", &o), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(o.status, 0);
    char names[2][128];
    assert_int_equal(list_files(dir, names, 2), 1);
    close_sink(f, s);
}

static void test_close_flushes_pending(void **state)
{
    struct fixture *f = *state;
    struct hg_sink *s;
    assert_int_equal(hg_ndjson_sink_open(&f->loop, f->dir, 0, 0, &s), 0);
    struct outcome o[5] = { { 0 } }, done = { 0 };
    char json[5][16];
    for (int i = 0; i < 5; i++) {
        snprintf(json[i], sizeof(json[i]), "{\"i\":%d}", i);
        assert_int_equal(publish(s, json[i], &o[i]), 0);
    }
    s->ops->close(s, on_closed, &done);
    struct outcome late = { 0 };
    assert_int_equal(publish(s, "{}", &late), HG_ERR_CLOSED);
    const char *reason = NULL;
    assert_int_equal(s->ops->ready(s, &reason), HG_ERR_CLOSED);
    assert_int_equal(done.calls, 0);

    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(done.calls, 1);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(o[i].calls, 1);
        assert_int_equal(o[i].status, 0);
        assert_true(o[i].order < done.order);
    }
    assert_int_equal(late.calls, 0);
    char names[2][128];
    assert_int_equal(list_files(f->dir, names, 2), 1);
    char *data = slurp(f->dir, names[0]);
    assert_string_equal(data, "{\"i\":0}\n{\"i\":1}\n{\"i\":2}\n{\"i\":3}\n{\"i\":4}\n");
    free(data);
}

static void test_close_idle_is_async(void **state)
{
    struct fixture *f = *state;
    struct hg_sink *s;
    assert_int_equal(hg_ndjson_sink_open(&f->loop, f->dir, 0, 0, &s), 0);
    close_sink(f, s);
}

static void test_group_commit(void **state)
{
    struct fixture *f = *state;
    struct hg_sink *s;
    enum { N = 200 };
    static struct outcome o[N];
    memset(o, 0, sizeof(o));
    assert_int_equal(hg_ndjson_sink_open(&f->loop, f->dir, 0, 0, &s), 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(publish(s, "{\"x\":\"yz\"}", &o[i]), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    for (int i = 0; i < N; i++) {
        assert_int_equal(o[i].calls, 1);
        assert_int_equal(o[i].status, 0);
        if (i > 0)
            assert_true(o[i - 1].order < o[i].order);
    }
    /* The first line goes alone; the 199 that arrived meanwhile share the second fsync. */
    uint64_t fsyncs = hg_ndjson_sink_fsyncs(s);
    assert_true(fsyncs >= 1 && fsyncs <= 2);
    char names[2][128];
    assert_int_equal(list_files(f->dir, names, 2), 1);
    char *data = slurp(f->dir, names[0]);
    assert_int_equal(strlen(data), (size_t)N * 11);
    free(data);
    close_sink(f, s);
}

static void test_caps(void **state)
{
    struct fixture *f = *state;
    struct hg_sink *s;
    assert_int_equal(hg_ndjson_sink_open(&f->loop, f->dir, 0, 0, &s), 0);
    /* The first publish goes in flight at once; then the pending batch fills to its event cap. */
    static struct outcome o[HG_NDJSON_MAX_WAITERS + 1];
    memset(o, 0, sizeof(o));
    for (size_t i = 0; i <= HG_NDJSON_MAX_WAITERS; i++)
        assert_int_equal(publish(s, "{}", &o[i]), 0);
    struct outcome refused = { 0 };
    assert_int_equal(publish(s, "{}", &refused), HG_ERR_FULL);

    uv_run(&f->loop, UV_RUN_DEFAULT);
    for (size_t i = 0; i <= HG_NDJSON_MAX_WAITERS; i++)
        assert_int_equal(o[i].calls, 1);
    assert_int_equal(refused.calls, 0);

    /* One event bigger than the byte cap. */
    size_t n = HG_NDJSON_MAX_PENDING;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memset(big, 'a', n);
    big[n] = '\0';
    assert_int_equal(publish(s, big, &refused), HG_ERR_FULL);
    free(big);
    assert_int_equal(refused.calls, 0);
    close_sink(f, s);
}

static void test_open_error_then_recovery(void **state)
{
    struct fixture *f = *state;
    char dir[128];
    snprintf(dir, sizeof(dir), "%s/spool", f->dir);
    struct hg_sink *s;
    assert_int_equal(hg_ndjson_sink_open(&f->loop, dir, 0, 0, &s), 0);
    /* The directory turns into a file: creating the event file fails. */
    assert_int_equal(rmdir(dir), 0);
    FILE *fp = fopen(dir, "w");
    assert_non_null(fp);
    fclose(fp);

    struct outcome bad = { 0 };
    assert_int_equal(publish(s, "{\"a\":1}", &bad), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(bad.calls, 1);
    assert_int_equal(bad.status, -ENOTDIR);
    const char *reason = NULL;
    assert_int_equal(s->ops->ready(s, &reason), HG_ERR_UNAVAILABLE);
    assert_string_equal(reason, "ndjson write failed");

    /* Once the directory is back, the retried event gets through and the sink is ready again. */
    assert_int_equal(unlink(dir), 0);
    assert_int_equal(mkdir(dir, 0750), 0);
    struct outcome good = { 0 };
    assert_int_equal(publish(s, "{\"a\":1}", &good), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(good.calls, 1);
    assert_int_equal(good.status, 0);
    assert_int_equal(s->ops->ready(s, &reason), 0);
    close_sink(f, s);
}

static void test_torn_write_cut_and_rotated(void **state)
{
    struct fixture *f = *state;
    struct hg_sink *s;
    assert_int_equal(hg_ndjson_sink_open(&f->loop, f->dir, 0, 0, &s), 0);
    struct outcome first = { 0 };
    assert_int_equal(publish(s, "{\"ok\":1}", &first), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(first.status, 0);

    /* A file size limit makes the next write short and then fail with EFBIG. */
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    lim = old;
    lim.rlim_cur = 32;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    char json[101];
    memset(json, 'b', 100);
    json[0] = '"';
    json[99] = '"';
    json[100] = '\0';
    struct outcome torn = { 0 };
    assert_int_equal(publish(s, json, &torn), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, prev);
    assert_int_equal(torn.calls, 1);
    assert_int_equal(torn.status, UV_EFBIG);
    const char *reason = NULL;
    assert_int_equal(s->ops->ready(s, &reason), HG_ERR_UNAVAILABLE);

    /* The retry lands in a new file; the old one is cut back to its confirmed line. */
    struct outcome retry = { 0 };
    assert_int_equal(publish(s, json, &retry), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(retry.status, 0);
    assert_int_equal(s->ops->ready(s, &reason), 0);
    char names[3][128];
    assert_int_equal(list_files(f->dir, names, 3), 2);
    char *a = slurp(f->dir, names[0]), *b = slurp(f->dir, names[1]);
    assert_string_equal(a, "{\"ok\":1}\n");
    assert_int_equal(strlen(b), 101);
    assert_memory_equal(b, json, 100);
    free(a);
    free(b);
    close_sink(f, s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_lines_written_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rotation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuses_bad_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mkdir_p, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_flushes_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_idle_is_async, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_caps, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_error_then_recovery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_write_cut_and_rotated, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

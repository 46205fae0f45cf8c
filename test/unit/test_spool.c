/*
 * Unit tests for the spool: group commit, recovery, torn/corrupt tails, quota, rotation, orphans,
 * close, and segments prepared ahead (zero-filled): their zero tails, interrupted preparations,
 * rollover into them and their place in the quota.
 */
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "core/err.h"
#include "core/log.h"
#include "spool/spool.h"

struct fixture {
    char dir[64];
    uv_loop_t loop;
    int fsyncs;
};

struct result {
    int calls;
    int status;
    uint64_t id;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/hg-spool-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    hg_log_set_level(HG_LOG_ERROR);
    *state = f;
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    uv_run(&f->loop, UV_RUN_DEFAULT);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    int rc = uv_loop_close(&f->loop);
    free(f);
    assert_int_equal(rc, 0); /* every handle closed: nothing leaked by the spool */
    return 0;
}

static void on_fsync(void *arg, double seconds)
{
    struct fixture *f = arg;
    assert_true(seconds >= 0.0);
    f->fsyncs++;
}

static struct hg_spool *open_spool(struct fixture *f, int worker, int nworkers, uint64_t max_bytes, uint64_t segment_bytes)
{
    struct hg_spool_opts o = {
        .dir = f->dir,
        .worker = worker,
        .nworkers = nworkers,
        .max_bytes = max_bytes,
        .segment_bytes = segment_bytes,
        .commit_delay_us = 0,
        .on_fsync = on_fsync,
        .on_fsync_arg = f,
    };
    struct hg_spool *s = NULL;
    assert_int_equal(hg_spool_open(&f->loop, &o, &s), 0);
    assert_non_null(s);
    return s;
}

static void on_closed(void *arg)
{
    (*(int *)arg)++;
}

static void close_spool(struct fixture *f, struct hg_spool *s)
{
    int closed = 0;
    hg_spool_close(s, on_closed, &closed);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(closed, 1);
    assert_int_equal(uv_loop_alive(&f->loop), 0);
}

static void on_append(void *arg, int status, uint64_t id)
{
    struct result *r = arg;
    r->calls++;
    r->status = status;
    r->id = id;
}

/* Record i: a body with a recognisable marker and headers holding a NUL byte. */
static char headers_fixed[] = "x-hub-signature-256: sha256=ab\0cd\ncontent-type: application/json\n";

static void make_body(char *body, size_t len, int i)
{
    for (size_t k = 0; k < len; k++)
        body[k] = (char)('A' + (i % 26));
    int n = snprintf(body, len, "{\"n\":%d}", i);
    if (n > 0 && (size_t)n < len)
        body[n] = ' ';
}

static int append_one(struct hg_spool *s, int i, size_t body_len, struct result *r)
{
    char rid[32], body[4096];
    assert_true(body_len <= sizeof(body));
    snprintf(rid, sizeof(rid), "req-%d", i);
    make_body(body, body_len, i);
    struct hg_record rec = {
        .received_at_ns = 1700000000000000000ull + (uint64_t)i,
        .request_id = rid,
        .tenant = "acme",
        .provider = "whatsapp",
        .headers = headers_fixed,
        .headers_len = sizeof(headers_fixed) - 1,
        .body = body,
        .body_len = body_len,
    };
    return hg_spool_append(s, &rec, on_append, r);
}

static void check_entry(const struct hg_spool_entry *e, int i, size_t body_len)
{
    char rid[32], body[4096];
    snprintf(rid, sizeof(rid), "req-%d", i);
    make_body(body, body_len, i);
    assert_string_equal(e->rec.request_id, rid);
    assert_string_equal(e->rec.tenant, "acme");
    assert_string_equal(e->rec.provider, "whatsapp");
    assert_int_equal(e->rec.headers_len, sizeof(headers_fixed) - 1);
    assert_memory_equal(e->rec.headers, headers_fixed, sizeof(headers_fixed) - 1);
    assert_int_equal(e->rec.body_len, body_len);
    assert_memory_equal(e->rec.body, body, body_len);
    assert_int_equal(e->rec.received_at_ns, 1700000000000000000ull + (uint64_t)i);
    assert_true(e->spooled_at_ns > 1600000000000000000ull);
}

static int count_files(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return 0;
    int n = 0;
    struct dirent *de;
    size_t sl = strlen(suffix);
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l > sl && strcmp(de->d_name + l - sl, suffix) == 0)
            n++;
    }
    closedir(d);
    return n;
}

/* Name of the one file in `dir` ending in `suffix`, or fail. */
static void only_file(const char *dir, const char *suffix, char *out, size_t cap)
{
    assert_int_equal(count_files(dir, suffix), 1);
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    size_t sl = strlen(suffix);
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l > sl && strcmp(de->d_name + l - sl, suffix) == 0)
            snprintf(out, cap, "%s/%s", dir, de->d_name);
    }
    closedir(d);
}

static off_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

static char *read_all(const char *path, size_t *len)
{
    *len = (size_t)file_size(path);
    char *p = malloc(*len + 1);
    assert_non_null(p);
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    assert_int_equal(fread(p, 1, *len, fp), *len);
    fclose(fp);
    return p;
}

/* Offset just past the last non-zero byte: where a zero-filled segment's records end. */
static off_t data_end(const char *path)
{
    size_t len;
    char *p = read_all(path, &len);
    while (len > 0 && p[len - 1] == 0)
        len--;
    free(p);
    return (off_t)len;
}

/* Worker 0's directory, its only segment, and the quarantine directory. */
struct seg_paths {
    char w0[128], seg[300], qdir[128];
};

/* Append n records of `size` bytes (ids 0..n-1), wait until they are durable, close, locate. */
static void write_and_locate(struct fixture *f, int n, size_t size, struct seg_paths *p)
{
    struct hg_spool *s = open_spool(f, 0, 1, 1 << 24, 1 << 20);
    struct result r[8] = { { 0 } };
    assert_true(n <= 8);
    for (int i = 0; i < n; i++)
        assert_int_equal(append_one(s, i, size, &r[i]), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    for (int i = 0; i < n; i++)
        assert_int_equal(r[i].status, 0);
    close_spool(f, s);
    snprintf(p->w0, sizeof(p->w0), "%s/w0", f->dir);
    snprintf(p->qdir, sizeof(p->qdir), "%s/quarantine", f->dir);
    only_file(p->w0, ".seg", p->seg, sizeof(p->seg));
}

static void write_at(const char *path, off_t off, const void *buf, size_t n)
{
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, buf, n, off), (ssize_t)n);
    close(fd);
}

static void test_append_one(void **state)
{
    struct fixture *f = *state;
    struct hg_spool *s = open_spool(f, 0, 1, 1 << 20, 1 << 20);
    struct result r = { 0 };
    assert_int_equal(hg_spool_writable(s), 0);
    assert_int_equal(append_one(s, 1, 100, &r), 0);
    assert_int_equal(r.calls, 0); /* never synchronous */
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, 0);
    assert_int_equal(f->fsyncs, 1);
    uint64_t recs, bytes;
    hg_spool_stats(s, &recs, &bytes);
    assert_int_equal(recs, 1);
    assert_true(bytes > 100);
    close_spool(f, s);
    char w0[128];
    snprintf(w0, sizeof(w0), "%s/w0", f->dir);
    assert_int_equal(count_files(w0, ".seg"), 1);
}

static void test_append_many(void **state)
{
    struct fixture *f = *state;
    struct hg_spool *s = open_spool(f, 0, 1, 1 << 24, 1 << 20);
    enum { N = 200 };
    struct result r[N] = { { 0 } };
    for (int tick = 0; tick < 4; tick++) {
        for (int i = tick * 50; i < (tick + 1) * 50; i++)
            assert_int_equal(append_one(s, i, 64 + (size_t)i, &r[i]), 0);
        uv_run(&f->loop, UV_RUN_DEFAULT);
    }
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, 0);
        for (int k = 0; k < i; k++)
            assert_true(r[k].id != r[i].id);
    }
    uint64_t recs;
    hg_spool_stats(s, &recs, NULL);
    assert_int_equal(recs, N);
    close_spool(f, s);
}

static void test_group_commit(void **state)
{
    struct fixture *f = *state;
    struct hg_spool *s = open_spool(f, 0, 1, 1 << 24, 1 << 24);
    enum { N = 64 };
    struct result r[N] = { { 0 } };
    for (int i = 0; i < N; i++)
        assert_int_equal(append_one(s, i, 300, &r[i]), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, 0);
    }
    assert_true(f->fsyncs >= 1);
    assert_true(f->fsyncs < N);
    close_spool(f, s);
}

static void test_recover_after_reopen(void **state)
{
    struct fixture *f = *state;
    struct hg_spool *s = open_spool(f, 0, 1, 1 << 24, 1 << 20);
    struct result r[5] = { { 0 } };
    for (int i = 0; i < 5; i++)
        assert_int_equal(append_one(s, i, 500 + (size_t)i, &r[i]), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(hg_spool_release(s, r[1].id), 0);
    assert_int_equal(hg_spool_release(s, r[3].id), 0);
    assert_int_equal(hg_spool_release(s, r[3].id), HG_ERR_NOT_FOUND);
    assert_int_equal(hg_spool_release(s, 0xdeadbeef00000007ull), HG_ERR_NOT_FOUND);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    close_spool(f, s);

    s = open_spool(f, 0, 1, 1 << 24, 1 << 20);
    uint64_t recs;
    hg_spool_stats(s, &recs, NULL);
    assert_int_equal(recs, 3);
    struct hg_spool_entry *e[3];
    int want[3] = { 0, 2, 4 };
    for (int k = 0; k < 3; k++) {
        assert_int_equal(hg_spool_recovered_next(s, &e[k]), 0);
        check_entry(e[k], want[k], 500 + (size_t)want[k]);
    }
    struct hg_spool_entry *none = NULL;
    assert_int_equal(hg_spool_recovered_next(s, &none), HG_ERR_NOT_FOUND);
    /* Released now, they must not come back a third time; their segment goes. */
    for (int k = 0; k < 3; k++) {
        assert_int_equal(hg_spool_release(s, e[k]->id), 0);
        hg_spool_entry_free(e[k]);
    }
    hg_spool_stats(s, &recs, NULL);
    assert_int_equal(recs, 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    close_spool(f, s);

    s = open_spool(f, 0, 1, 1 << 24, 1 << 20);
    assert_int_equal(hg_spool_recovered_next(s, &none), HG_ERR_NOT_FOUND);
    char w0[128];
    snprintf(w0, sizeof(w0), "%s/w0", f->dir);
    assert_int_equal(count_files(w0, ".seg"), 1); /* only the one prepared at open */
    close_spool(f, s);
    assert_int_equal(count_files(w0, ".seg"), 0);
}

/* A release whose only copy sat in a segment deleted at recovery is written again. */
static void test_release_survives_restarts(void **state)
{
    struct fixture *f = *state;
    struct hg_spool *s = open_spool(f, 0, 1, 1 << 24, 1 << 20);
    struct result r[2] = { { 0 } };
    assert_int_equal(append_one(s, 0, 50, &r[0]), 0);
    assert_int_equal(append_one(s, 1, 50, &r[1]), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    close_spool(f, s);

    s = open_spool(f, 0, 1, 1 << 24, 1 << 20);
    struct hg_spool_entry *e;
    assert_int_equal(hg_spool_recovered_next(s, &e), 0);
    check_entry(e, 0, 50);
    assert_int_equal(hg_spool_release(s, e->id), 0);
    hg_spool_entry_free(e);
    close_spool(f, s);

    for (int run = 0; run < 2; run++) {
        s = open_spool(f, 0, 1, 1 << 24, 1 << 20);
        assert_int_equal(hg_spool_recovered_next(s, &e), 0);
        check_entry(e, 1, 50);
        hg_spool_entry_free(e);
        assert_int_equal(hg_spool_recovered_next(s, &e), HG_ERR_NOT_FOUND);
        close_spool(f, s);
    }
}

/* What hg_spool_read_async handed back, in call order. */
struct async_reads {
    int n;
    uint64_t ids[8];
    int status[8];
    struct hg_spool_entry *e[8];
    bool last[8];
    pthread_t thread[8];
};

static void on_async_read(void *arg, uint64_t id, int status, struct hg_spool_entry *e, bool last)
{
    struct async_reads *r = arg;
    r->ids[r->n] = id;
    r->status[r->n] = status;
    r->e[r->n] = e;
    r->last[r->n] = last;
    r->thread[r->n] = pthread_self();
    r->n++;
}

/* The backlog taken by id and read on the threadpool: in order, with the records' contents, a
 * released id answered NOT_FOUND in its place, callbacks on the loop's thread, never inside the
 * call; close waits for a read in flight. */
static void test_read_async(void **state)
{
    struct fixture *f = *state;
    struct hg_spool *s = open_spool(f, 0, 1, 1 << 24, 1 << 20);
    struct result r[4] = { { 0 } };
    for (int i = 0; i < 4; i++)
        assert_int_equal(append_one(s, i, 300 + (size_t)i, &r[i]), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    close_spool(f, s);

    s = open_spool(f, 0, 1, 1 << 24, 1 << 20);
    uint64_t ids[4];
    uint32_t len = 0;
    for (int k = 0; k < 4; k++) {
        assert_int_equal(hg_spool_backlog_take(s, &ids[k], &len), 0);
        assert_true(len > 300);
    }
    uint64_t none;
    assert_int_equal(hg_spool_backlog_take(s, &none, NULL), HG_ERR_NOT_FOUND);
    assert_true(hg_spool_backlog_empty(s));
    assert_int_equal(hg_spool_release(s, ids[2]), 0);
    struct async_reads got = { 0 };
    assert_int_equal(hg_spool_read_async(s, ids, 4, on_async_read, &got), 0);
    assert_int_equal(got.n, 0); /* never inside the call */
    assert_int_equal(hg_spool_read_async(s, ids, 0, on_async_read, &got), HG_ERR_INVALID);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(got.n, 4);
    for (int k = 0; k < 4; k++) {
        assert_int_equal(got.ids[k], ids[k]);
        assert_true(pthread_equal(got.thread[k], pthread_self()));
        assert_int_equal(got.last[k], k == 3);
        if (k == 2) {
            assert_int_equal(got.status[k], HG_ERR_NOT_FOUND);
            assert_null(got.e[k]);
            continue;
        }
        assert_int_equal(got.status[k], 0);
        check_entry(got.e[k], k, 300 + (size_t)k);
        hg_spool_entry_free(got.e[k]);
    }
    /* A read still in flight when close is asked: its callbacks run first, then the close. */
    struct async_reads late = { 0 };
    assert_int_equal(hg_spool_read_async(s, ids, 2, on_async_read, &late), 0);
    close_spool(f, s);
    assert_int_equal(late.n, 2);
    for (int k = 0; k < 2; k++)
        hg_spool_entry_free(late.e[k]);
}

static void test_torn_tail(void **state)
{
    struct fixture *f = *state;
    struct seg_paths sp;
    write_and_locate(f, 3, 200, &sp);
    const char *w0 = sp.w0, *seg = sp.seg, *qdir = sp.qdir;
    char qfile[400];
    struct hg_spool *s;
    /* A torn write at the end of a plain (growing) segment: the file ends inside the last record. */
    off_t torn = data_end(seg) - 10;
    assert_int_equal(truncate(seg, torn), 0);

    s = open_spool(f, 0, 1, 1 << 24, 1 << 20);
    struct hg_spool_entry *e;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(hg_spool_recovered_next(s, &e), 0);
        check_entry(e, i, 200);
        hg_spool_entry_free(e);
    }
    assert_int_equal(hg_spool_recovered_next(s, &e), HG_ERR_NOT_FOUND);
    only_file(qdir, ".bad", qfile, sizeof(qfile));
    assert_non_null(strstr(qfile, "/0-0000000000000001-"));
    assert_int_equal(file_size(seg) + file_size(qfile), torn);
    assert_true(file_size(qfile) > 0);
    /* New appends go to a fresh segment; the cut one is never written again. */
    struct result r4 = { 0 };
    assert_int_equal(append_one(s, 9, 10, &r4), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(r4.status, 0);
    assert_int_equal(file_size(seg), torn - file_size(qfile));
    /* The cut one, the one written, and the next one prepared (deleted by the close). */
    assert_int_equal(count_files(w0, ".seg"), 3);
    close_spool(f, s);
    assert_int_equal(count_files(w0, ".seg"), 2);
}

static void test_crc_mismatch(void **state)
{
    struct fixture *f = *state;
    struct seg_paths sp;
    write_and_locate(f, 3, 400, &sp);
    const char *seg = sp.seg, *qdir = sp.qdir;
    char qfile[400];
    struct hg_spool *s;
    size_t len;
    char *data = read_all(seg, &len);
    char *mid = memmem(data, len, "BBBBBBBBBB", 10); /* inside record 1's body */
    assert_non_null(mid);
    off_t flip = mid - data + 5;
    free(data);
    int fd = open(seg, O_RDWR);
    assert_true(fd >= 0);
    char b;
    assert_int_equal(pread(fd, &b, 1, flip), 1);
    b ^= 0x20;
    assert_int_equal(pwrite(fd, &b, 1, flip), 1);
    close(fd);
    off_t before = data_end(seg); /* the zeros after it are not quarantined */

    s = open_spool(f, 0, 1, 1 << 24, 1 << 20);
    struct hg_spool_entry *e;
    assert_int_equal(hg_spool_recovered_next(s, &e), 0);
    check_entry(e, 0, 400);
    hg_spool_entry_free(e);
    assert_int_equal(hg_spool_recovered_next(s, &e), HG_ERR_NOT_FOUND);
    uint64_t recs;
    hg_spool_stats(s, &recs, NULL);
    assert_int_equal(recs, 1);
    only_file(qdir, ".bad", qfile, sizeof(qfile));
    assert_int_equal(file_size(seg) + file_size(qfile), before);
    assert_true(file_size(seg) < flip);
    data = read_all(qfile, &len);
    assert_non_null(memmem(data, len, "CCCCCCCCCC", 10)); /* record 2 kept in quarantine */
    free(data);
    close_spool(f, s);
}

/* When the bad tail cannot be copied out, nothing is cut or deleted. */
static void test_quarantine_failure_keeps_segment(void **state)
{
    struct fixture *f = *state;
    struct hg_spool *s = open_spool(f, 0, 1, 1 << 24, 1 << 20);
    struct result r = { 0 };
    assert_int_equal(append_one(s, 0, 100, &r), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    close_spool(f, s);

    char w0[128], seg[300], qdir[128];
    snprintf(w0, sizeof(w0), "%s/w0", f->dir);
    snprintf(qdir, sizeof(qdir), "%s/quarantine", f->dir);
    only_file(w0, ".seg", seg, sizeof(seg));
    off_t torn = data_end(seg) - 1; /* the only data record is torn */
    assert_int_equal(truncate(seg, torn), 0);
    assert_int_equal(rmdir(qdir), 0);
    FILE *fp = fopen(qdir, "w"); /* a file where the directory should be: copies fail */
    assert_non_null(fp);
    fclose(fp);

    s = open_spool(f, 0, 1, 1 << 24, 1 << 20);
    struct hg_spool_entry *e;
    assert_int_equal(hg_spool_recovered_next(s, &e), HG_ERR_NOT_FOUND);
    close_spool(f, s);
    assert_int_equal(file_size(seg), torn);
}

static void test_quota(void **state)
{
    struct fixture *f = *state;
    struct hg_spool *s = open_spool(f, 0, 1, 1100, 1 << 20); /* three 334-byte records fit */
    struct result r[3] = { { 0 } }, full = { 0 };
    for (int i = 0; i < 3; i++)
        assert_int_equal(append_one(s, i, 200, &r[i]), 0);
    assert_int_equal(append_one(s, 3, 200, &full), HG_ERR_FULL);
    assert_int_equal(append_one(s, 4, 2000, &full), HG_ERR_FULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(full.calls, 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(r[i].status, 0);
    assert_int_equal(append_one(s, 3, 200, &full), HG_ERR_FULL);

    assert_int_equal(hg_spool_release(s, r[0].id), 0);
    struct result again = { 0 };
    assert_int_equal(append_one(s, 5, 200, &again), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(again.calls, 1);
    assert_int_equal(again.status, 0);
    assert_int_equal(full.calls, 0);
    uint64_t recs, bytes;
    hg_spool_stats(s, &recs, &bytes);
    assert_int_equal(recs, 3);
    assert_true(bytes <= 1100);
    close_spool(f, s);
}

static void test_rotation_and_deletion(void **state)
{
    struct fixture *f = *state;
    struct hg_spool *s = open_spool(f, 0, 1, 1 << 24, 600);
    enum { N = 10 };
    struct result r[N] = { { 0 } };
    /* ~234-byte records: two fit a 600-byte segment after its 56-byte header. */
    for (int i = 0; i < N; i++) {
        assert_int_equal(append_one(s, i, 100, &r[i]), 0);
        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_int_equal(r[i].status, 0);
    }
    char w0[128], first[200];
    struct stat st;
    snprintf(w0, sizeof(w0), "%s/w0", f->dir);
    snprintf(first, sizeof(first), "%s/0000000000000001.seg", w0);
    assert_int_equal(count_files(w0, ".seg"), N / 2 + 1); /* + the next one, prepared */
    assert_true(file_size(first) <= 600);
    assert_int_equal((int)(r[0].id >> 32), (int)(r[1].id >> 32));
    assert_true((r[0].id >> 32) != (r[2].id >> 32));

    /* The first segment goes only once both of its records are released. */
    assert_int_equal(hg_spool_release(s, r[0].id), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(stat(first, &st), 0);
    assert_int_equal(hg_spool_release(s, r[1].id), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(stat(first, &st), -1);

    for (int i = 2; i < N; i++)
        assert_int_equal(hg_spool_release(s, r[i].id), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    /* Only the segment being written survives (and the next one, prepared). */
    assert_int_equal(count_files(w0, ".seg"), 2);
    uint64_t recs, bytes;
    hg_spool_stats(s, &recs, &bytes);
    assert_int_equal(recs, 0);
    assert_int_equal(bytes, 0);
    close_spool(f, s);

    s = open_spool(f, 0, 1, 1 << 24, 600);
    struct hg_spool_entry *e;
    assert_int_equal(hg_spool_recovered_next(s, &e), HG_ERR_NOT_FOUND);
    assert_int_equal(count_files(w0, ".seg"), 1); /* only the one prepared at open */
    close_spool(f, s);
    assert_int_equal(count_files(w0, ".seg"), 0);
}

static void test_orphan_adoption(void **state)
{
    struct fixture *f = *state;
    /* Worker 3 of a 4-worker run leaves two records behind. */
    struct hg_spool *s = open_spool(f, 3, 4, 1 << 24, 1 << 20);
    struct result r[2] = { { 0 } };
    assert_int_equal(append_one(s, 30, 100, &r[0]), 0);
    assert_int_equal(append_one(s, 31, 100, &r[1]), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    close_spool(f, s);

    char w3[128];
    snprintf(w3, sizeof(w3), "%s/w3", f->dir);
    assert_int_equal(count_files(w3, ".seg"), 1);

    /* With 2 workers, w3 belongs to worker 1 (3 % 2), not to worker 0. */
    s = open_spool(f, 0, 2, 1 << 24, 1 << 20);
    struct hg_spool_entry *e;
    assert_int_equal(hg_spool_recovered_next(s, &e), HG_ERR_NOT_FOUND);
    close_spool(f, s);

    s = open_spool(f, 1, 2, 1 << 24, 1 << 20);
    uint64_t ids[2];
    for (int i = 0; i < 2; i++) {
        assert_int_equal(hg_spool_recovered_next(s, &e), 0);
        check_entry(e, 30 + i, 100);
        ids[i] = e->id;
        hg_spool_entry_free(e);
    }
    assert_int_equal(hg_spool_recovered_next(s, &e), HG_ERR_NOT_FOUND);
    for (int i = 0; i < 2; i++)
        assert_int_equal(hg_spool_release(s, ids[i]), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(count_files(w3, ".seg"), 0);
    close_spool(f, s);
}

static int close_order_appends;

static void on_closed_check(void *arg)
{
    /* Every append's callback ran before the close callback. */
    assert_int_equal(close_order_appends, 10);
    (*(int *)arg)++;
}

static void on_append_counted(void *arg, int status, uint64_t id)
{
    on_append(arg, status, id);
    close_order_appends++;
}

static void test_close_with_appends_in_flight(void **state)
{
    struct fixture *f = *state;
    struct hg_spool *s = open_spool(f, 0, 1, 1 << 24, 1 << 20);
    struct result r[10] = { { 0 } };
    char body[64] = "in flight";
    struct hg_record rec = { .request_id = "rid", .body = body, .body_len = strlen(body) };
    close_order_appends = 0;
    for (int i = 0; i < 5; i++)
        assert_int_equal(hg_spool_append(s, &rec, on_append_counted, &r[i]), 0);
    /* Start the first batch, then queue more behind it. */
    uv_run(&f->loop, UV_RUN_NOWAIT);
    for (int i = 5; i < 10; i++)
        assert_int_equal(hg_spool_append(s, &rec, on_append_counted, &r[i]), 0);
    int closed = 0;
    hg_spool_close(s, on_closed_check, &closed);
    struct result late = { 0 };
    assert_int_equal(hg_spool_append(s, &rec, on_append, &late), HG_ERR_CLOSED);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(closed, 1);
    assert_int_equal(late.calls, 0);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, 0);
    }

    s = open_spool(f, 0, 1, 1 << 24, 1 << 20);
    uint64_t recs;
    hg_spool_stats(s, &recs, NULL);
    assert_int_equal(recs, 10);
    struct hg_spool_entry *e;
    assert_int_equal(hg_spool_recovered_next(s, &e), 0);
    assert_string_equal(e->rec.request_id, "rid");
    assert_string_equal(e->rec.tenant, ""); /* NULL fields come back empty */
    assert_int_equal(e->rec.headers_len, 0);
    assert_memory_equal(e->rec.body, body, strlen(body));
    hg_spool_entry_free(e);
    close_spool(f, s);
}

/*
 * A failed batch answers its appends with the error; the next batch moves to a new segment. The
 * failure is made by taking names: the next segment cannot be prepared (its name exists), so the
 * rotation falls back to creating a plain segment, whose name is taken too.
 */
static void test_write_error_not_durable(void **state)
{
    struct fixture *f = *state;
    struct hg_spool *s = open_spool(f, 0, 1, 1 << 24, 600); /* two ~234-byte records per segment */
    char w0[128], path[256];
    snprintf(w0, sizeof(w0), "%s/w0", f->dir);
    for (int seq = 2; seq <= 3; seq++) {
        snprintf(path, sizeof(path), "%s/%016x.seg", w0, seq);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
        assert_true(fd >= 0);
        close(fd);
    }

    struct result a = { 0 }, b = { 0 }, r = { 0 }, ok = { 0 };
    assert_int_equal(append_one(s, 0, 100, &a), 0); /* into segment 1, prepared at open */
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(a.status, 0);
    assert_int_equal(count_files(w0, ".zero"), 0); /* the failed preparation of 2 left nothing */
    snprintf(path, sizeof(path), "%s/%016x.seg", w0, 2);
    assert_int_equal(file_size(path), 0);           /* and did not replace what had that name */
    assert_int_equal(append_one(s, 1, 100, &b), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(b.status, 0);

    assert_int_equal(append_one(s, 2, 100, &r), 0); /* rotates: no prepared segment, 3 is taken */
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, UV_EEXIST);
    assert_int_equal(hg_spool_writable(s), UV_EEXIST);
    uint64_t recs, bytes;
    hg_spool_stats(s, &recs, &bytes);
    assert_int_equal(recs, 2);

    assert_int_equal(append_one(s, 3, 100, &ok), 0); /* into segment 4, prepared after the failure */
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(ok.status, 0);
    assert_int_equal(hg_spool_writable(s), 0);
    snprintf(path, sizeof(path), "%s/%016x.seg", w0, 4);
    assert_int_equal(file_size(path), 600);
    assert_int_equal((int)(ok.id >> 32), (int)(a.id >> 32) + 2); /* after the failed segment 3 */
    close_spool(f, s);
}

/* N records in a zero-filled segment, then zeros: all N come back, nothing is quarantined or cut. */
static void test_prezeroed_recovery(void **state)
{
    struct fixture *f = *state;
    enum { N = 7 };
    struct hg_spool *s = open_spool(f, 0, 1, 1 << 24, 1 << 20);
    struct result r[N] = { { 0 } };
    for (int i = 0; i < N; i++)
        assert_int_equal(append_one(s, i, 300 + (size_t)i, &r[i]), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    for (int i = 0; i < N; i++)
        assert_int_equal(r[i].status, 0);
    close_spool(f, s);

    char w0[128], qdir[128], seg[300];
    snprintf(w0, sizeof(w0), "%s/w0", f->dir);
    snprintf(qdir, sizeof(qdir), "%s/quarantine", f->dir);
    only_file(w0, ".seg", seg, sizeof(seg));
    assert_int_equal(file_size(seg), 1 << 20); /* written in full before use */
    off_t end = data_end(seg);
    assert_true(end > N * 300 && end < (1 << 20));

    for (int run = 0; run < 2; run++) { /* twice: recovery itself must not change the file */
        s = open_spool(f, 0, 1, 1 << 24, 1 << 20);
        uint64_t recs;
        hg_spool_stats(s, &recs, NULL);
        assert_int_equal(recs, N);
        struct hg_spool_entry *e;
        for (int i = 0; i < N; i++) {
            assert_int_equal(hg_spool_recovered_next(s, &e), 0);
            check_entry(e, i, 300 + (size_t)i);
            hg_spool_entry_free(e);
        }
        assert_int_equal(hg_spool_recovered_next(s, &e), HG_ERR_NOT_FOUND);
        close_spool(f, s);
        assert_int_equal(count_files(qdir, ".bad"), 0);
        assert_int_equal(file_size(seg), 1 << 20);
        assert_int_equal(data_end(seg), end);
    }
}

/* A torn last record in a zero-filled segment (its end never reached the disk): cut and quarantined as before. */
static void test_torn_record_then_zeros(void **state)
{
    struct fixture *f = *state;
    struct seg_paths sp;
    write_and_locate(f, 3, 200, &sp);
    const char *seg = sp.seg, *qdir = sp.qdir;
    char qfile[400];
    struct hg_spool *s;
    off_t end = data_end(seg);
    char z[10] = { 0 };
    write_at(seg, end - 10, z, sizeof(z)); /* the file keeps its size: zeros where the tail was */
    off_t torn = end - 10;

    s = open_spool(f, 0, 1, 1 << 24, 1 << 20);
    struct hg_spool_entry *e;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(hg_spool_recovered_next(s, &e), 0);
        check_entry(e, i, 200);
        hg_spool_entry_free(e);
    }
    assert_int_equal(hg_spool_recovered_next(s, &e), HG_ERR_NOT_FOUND);
    close_spool(f, s);
    /* Exactly the torn record's bytes are kept, and the segment ends where it began. */
    only_file(qdir, ".bad", qfile, sizeof(qfile));
    assert_true(file_size(qfile) > 0);
    assert_int_equal(file_size(seg) + file_size(qfile), torn);
    size_t len;
    char *q = read_all(qfile, &len);
    assert_non_null(memmem(q, len, "req-2", 5));
    assert_null(memmem(q, len, "req-1", 5));
    free(q);
    /* Recovered once more: nothing new is found or quarantined. */
    s = open_spool(f, 0, 1, 1 << 24, 1 << 20);
    uint64_t recs;
    hg_spool_stats(s, &recs, NULL);
    assert_int_equal(recs, 2);
    close_spool(f, s);
    assert_int_equal(count_files(qdir, ".bad"), 1);
}

/* Zeros inside the last record but data after them: not a clean end, the whole tail is bad. */
static void test_zero_hole_then_data(void **state)
{
    struct fixture *f = *state;
    struct seg_paths sp;
    write_and_locate(f, 3, 600, &sp);
    const char *seg = sp.seg, *qdir = sp.qdir;
    char qfile[400];
    struct hg_spool *s;
    off_t end = data_end(seg);
    char z[200] = { 0 };
    write_at(seg, end - 400, z, sizeof(z)); /* a hole in record 2's body */

    s = open_spool(f, 0, 1, 1 << 24, 1 << 20);
    uint64_t recs;
    hg_spool_stats(s, &recs, NULL);
    assert_int_equal(recs, 2);
    close_spool(f, s);
    only_file(qdir, ".bad", qfile, sizeof(qfile));
    assert_int_equal(file_size(seg) + file_size(qfile), end);
}

/*
 * A crash while the next segment was being prepared: a <seq>.zero file of any length and
 * content, or (the prepared segment being unused) a .seg holding only its header and some zeros.
 * Both are deleted; the records are all there; nothing is quarantined.
 */
static void test_crash_during_prezero(void **state)
{
    struct fixture *f = *state;
    struct hg_spool *s = open_spool(f, 0, 1, 1 << 24, 1 << 16);
    struct result r[3] = { { 0 } };
    for (int i = 0; i < 3; i++)
        assert_int_equal(append_one(s, i, 100, &r[i]), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);

    char w0[128], qdir[128], prepared[256], copy[256], zero[256];
    snprintf(w0, sizeof(w0), "%s/w0", f->dir);
    snprintf(qdir, sizeof(qdir), "%s/quarantine", f->dir);
    snprintf(prepared, sizeof(prepared), "%s/0000000000000002.seg", w0);
    snprintf(copy, sizeof(copy), "%s/prepared.copy", f->dir);
    snprintf(zero, sizeof(zero), "%s/0000000000000003.zero", w0);
    assert_int_equal(count_files(w0, ".seg"), 2);
    assert_int_equal(file_size(prepared), 1 << 16);
    assert_true(data_end(prepared) <= 56); /* its header, then zeros */
    assert_int_equal(link(prepared, copy), 0);
    close_spool(f, s);
    assert_int_equal(count_files(w0, ".seg"), 1);

    /* Put back what a crash would have left: the prepared one (cut short), a half-filled .zero. */
    assert_int_equal(rename(copy, prepared), 0);
    assert_int_equal(truncate(prepared, 4096), 0);
    FILE *fp = fopen(zero, "w");
    assert_non_null(fp);
    fputs("HGSP stale bytes of a file that was never named .seg", fp);
    fclose(fp);
    assert_int_equal(truncate(zero, 10000), 0);

    s = open_spool(f, 0, 1, 1 << 24, 1 << 16);
    struct hg_spool_entry *e;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(hg_spool_recovered_next(s, &e), 0);
        check_entry(e, i, 100);
        hg_spool_entry_free(e);
    }
    assert_int_equal(hg_spool_recovered_next(s, &e), HG_ERR_NOT_FOUND);
    assert_int_equal(count_files(w0, ".zero"), 0);
    struct stat st;
    assert_int_equal(stat(prepared, &st), -1); /* an empty segment is deleted */
    assert_int_equal(count_files(qdir, ".bad"), 0);
    /* New appends go to a segment prepared afresh after the last .seg (the .zero's name is free again). */
    struct result n = { 0 };
    assert_int_equal(append_one(s, 9, 100, &n), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(n.status, 0);
    close_spool(f, s);
    char next[256];
    snprintf(next, sizeof(next), "%s/0000000000000003.seg", w0);
    assert_int_equal(file_size(next), 1 << 16);
    assert_int_equal(count_files(w0, ".seg"), 2);
}

/*
 * Rollover into prepared segments: every segment is written in full before use, each holds as
 * many records as its logical size allows (not its file size, which is always segment_bytes), a
 * batch bigger than a segment still goes (past the zeros), and everything recovers in order.
 */
static void test_rollover_prezeroed(void **state)
{
    struct fixture *f = *state;
    struct hg_spool *s = open_spool(f, 0, 1, 1 << 24, 600);
    enum { N = 9 };
    struct result r[N] = { { 0 } };
    size_t blen[N];
    char w0[128], path[256];
    snprintf(w0, sizeof(w0), "%s/w0", f->dir);
    for (int i = 0; i < N; i++) {
        blen[i] = i == 6 ? 1000 : 100; /* record 6 alone is bigger than a segment */
        assert_int_equal(append_one(s, i, blen[i], &r[i]), 0);
        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_int_equal(r[i].status, 0);
        assert_int_equal(count_files(w0, ".zero"), 0);
    }
    /* Two ~234-byte records per 600-byte segment: 0-1, 2-3, 4-5, then 6 alone, 7-8. */
    int want_seg[N] = { 1, 1, 2, 2, 3, 3, 4, 5, 5 };
    for (int i = 0; i < N; i++)
        assert_int_equal((int)(r[i].id >> 32) - (int)(r[0].id >> 32), want_seg[i] - 1);
    for (int seq = 1; seq <= 6; seq++) { /* 6: the next one, prepared */
        snprintf(path, sizeof(path), "%s/%016x.seg", w0, seq);
        assert_int_equal(file_size(path), seq == 4 ? 56 + 1134 : 600);
    }
    assert_int_equal(count_files(w0, ".seg"), 6);
    close_spool(f, s);
    assert_int_equal(count_files(w0, ".seg"), 5);

    s = open_spool(f, 0, 1, 1 << 24, 600);
    struct hg_spool_entry *e;
    for (int i = 0; i < N; i++) {
        assert_int_equal(hg_spool_recovered_next(s, &e), 0);
        check_entry(e, i, blen[i]);
        hg_spool_entry_free(e);
    }
    assert_int_equal(hg_spool_recovered_next(s, &e), HG_ERR_NOT_FOUND);
    close_spool(f, s);
}

/*
 * A rotation that comes while the next segment is still being prepared waits for it: appends
 * made meanwhile are answered once it is there, and segments are used in sequence order.
 */
static void test_rotation_waits_for_prepared(void **state)
{
    struct fixture *f = *state;
    struct hg_spool *s = open_spool(f, 0, 1, 1 << 24, 600);
    enum { N = 12 };
    struct result r[N] = { { 0 } };
    /* Never let the loop finish in between: each append's batch goes while the preparation may still run. */
    for (int i = 0; i < N; i++) {
        assert_int_equal(append_one(s, i, 100, &r[i]), 0);
        uv_run(&f->loop, UV_RUN_ONCE);
    }
    uv_run(&f->loop, UV_RUN_DEFAULT);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, 0);
        if (i > 0)
            assert_true(r[i].id >> 32 >= r[i - 1].id >> 32);
    }
    close_spool(f, s);
    s = open_spool(f, 0, 1, 1 << 24, 600);
    struct hg_spool_entry *e;
    for (int i = 0; i < N; i++) {
        assert_int_equal(hg_spool_recovered_next(s, &e), 0);
        check_entry(e, i, 100);
        hg_spool_entry_free(e);
    }
    close_spool(f, s);
}

/*
 * max_bytes counts live record bytes only: the zero-filled segments (here 1 MiB each, far past
 * the quota) take disk space but no quota, and released records give theirs back.
 */
static void test_quota_ignores_prepared_space(void **state)
{
    struct fixture *f = *state;
    struct hg_spool *s = open_spool(f, 0, 1, 1100, 1 << 20);
    struct result r[3] = { { 0 } }, one = { 0 }, full = { 0 };
    assert_int_equal(append_one(s, 0, 200, &r[0]), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    uint64_t recs, bytes, rec_len;
    hg_spool_stats(s, &recs, &rec_len);
    assert_int_equal(recs, 1);
    for (int i = 1; i < 3; i++)
        assert_int_equal(append_one(s, i, 200, &r[i]), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    hg_spool_stats(s, &recs, &bytes);
    assert_int_equal(recs, 3);
    assert_int_equal(bytes, 3 * rec_len);
    char w0[128];
    snprintf(w0, sizeof(w0), "%s/w0", f->dir);
    assert_int_equal(count_files(w0, ".seg"), 2); /* 2 MiB on disk for ~1 KiB of records */
    assert_int_equal(hg_spool_writable(s), 0);
    assert_int_equal(append_one(s, 3, 200, &full), HG_ERR_FULL);
    for (int i = 0; i < 3; i++)
        assert_int_equal(hg_spool_release(s, r[i].id), 0);
    hg_spool_stats(s, &recs, &bytes);
    assert_int_equal(bytes, 0);
    assert_int_equal(append_one(s, 4, 200, &one), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(one.status, 0);
    hg_spool_stats(s, &recs, &bytes);
    assert_int_equal(bytes, rec_len);
    assert_int_equal(full.calls, 0);
    close_spool(f, s);
}

static void test_open_invalid(void **state)
{
    struct fixture *f = *state;
    struct hg_spool_opts o = { .dir = f->dir, .worker = 2, .nworkers = 2, .max_bytes = 1, .segment_bytes = 1 };
    struct hg_spool *s = NULL;
    assert_int_equal(hg_spool_open(&f->loop, &o, &s), HG_ERR_INVALID);
    assert_null(s);
}

/* Deferred records come back through hg_spool_recovered_next, in the order deferred, with their
 * bytes, across segments and batches; released or unknown ids are refused or skipped. */
static void test_defer_backlog(void **state)
{
    struct fixture *f = *state;
    struct hg_spool *s = open_spool(f, 0, 1, 1 << 24, 1000);
    enum { N = 12 };
    struct result r[N] = { { 0 } };
    /* Batches of three (same loop turn) of ~334-byte records: several segments of 1000 bytes. */
    for (int i = 0; i < N; i += 3) {
        for (int k = i; k < i + 3; k++)
            assert_int_equal(append_one(s, k, 200 + k, &r[k]), 0);
        uv_run(&f->loop, UV_RUN_DEFAULT);
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(r[i].status, 0);
    assert_true((r[0].id >> 32) != (r[N - 1].id >> 32));
    assert_true(hg_spool_backlog_empty(s));

    int order[] = { 1, 2, 4, 7, 8, 11, 0 };
    for (size_t k = 0; k < sizeof(order) / sizeof(order[0]); k++)
        assert_int_equal(hg_spool_defer(s, r[order[k]].id), 0);
    assert_false(hg_spool_backlog_empty(s));
    assert_int_equal(hg_spool_defer(s, r[3].id + 1000), HG_ERR_NOT_FOUND);
    assert_int_equal(hg_spool_defer(s, ((uint64_t)999 << 32) | 1), HG_ERR_NOT_FOUND);
    /* Released after deferring: skipped; released before: refused. */
    assert_int_equal(hg_spool_release(s, r[4].id), 0);
    assert_int_equal(hg_spool_release(s, r[5].id), 0);
    assert_int_equal(hg_spool_defer(s, r[5].id), HG_ERR_NOT_FOUND);

    /* Read by id: any live record, as often as asked; released ones are gone. */
    for (int k = 0; k < 2; k++) {
        struct hg_spool_entry *byid = NULL;
        assert_int_equal(hg_spool_read(s, r[9].id, &byid), 0);
        assert_int_equal(byid->id, r[9].id);
        check_entry(byid, 9, 209);
        hg_spool_entry_free(byid);
    }
    struct hg_spool_entry *none = NULL;
    assert_int_equal(hg_spool_read(s, r[4].id, &none), HG_ERR_NOT_FOUND);
    assert_int_equal(hg_spool_read(s, ((uint64_t)999 << 32) | 1, &none), HG_ERR_NOT_FOUND);
    assert_null(none);

    int want[] = { 1, 2, 7, 8, 11, 0 };
    for (size_t k = 0; k < sizeof(want) / sizeof(want[0]); k++) {
        struct hg_spool_entry *e = NULL;
        assert_int_equal(hg_spool_recovered_next(s, &e), 0);
        assert_int_equal(e->id, r[want[k]].id);
        check_entry(e, want[k], 200 + (size_t)want[k]);
        hg_spool_entry_free(e);
    }
    struct hg_spool_entry *e = NULL;
    assert_int_equal(hg_spool_recovered_next(s, &e), HG_ERR_NOT_FOUND);
    assert_true(hg_spool_backlog_empty(s));

    /* The list starts over once taken to the end; a record may be deferred again. */
    assert_int_equal(hg_spool_defer(s, r[1].id), 0);
    assert_int_equal(hg_spool_recovered_next(s, &e), 0);
    check_entry(e, 1, 201);
    hg_spool_entry_free(e);

    /* Deferred records are still unreleased: a restart offers every one not released. */
    close_spool(f, s);
    s = open_spool(f, 0, 1, 1 << 24, 1000);
    int n = 0;
    while (hg_spool_recovered_next(s, &e) == 0) {
        assert_int_not_equal(e->rec.received_at_ns, 1700000000000000000ull + 4);
        assert_int_not_equal(e->rec.received_at_ns, 1700000000000000000ull + 5);
        hg_spool_entry_free(e);
        n++;
    }
    assert_int_equal(n, N - 2);
    close_spool(f, s);
}

/* A steady backlog (defer one, take one, many times) keeps its index small and reads each record
 * back intact while segments behind it are deleted. */
static void test_defer_steady(void **state)
{
    struct fixture *f = *state;
    struct hg_spool *s = open_spool(f, 0, 1, 1 << 24, 4096);
    struct result r[2] = { { 0 } };
    assert_int_equal(append_one(s, 0, 300, &r[0]), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(hg_spool_defer(s, r[0].id), 0);
    for (int i = 1; i < 3000; i++) {
        struct result *cur = &r[i % 2];
        memset(cur, 0, sizeof(*cur));
        assert_int_equal(append_one(s, i, 300, cur), 0);
        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_int_equal(cur->status, 0);
        assert_int_equal(hg_spool_defer(s, cur->id), 0);
        struct hg_spool_entry *e = NULL;
        assert_int_equal(hg_spool_recovered_next(s, &e), 0);
        check_entry(e, i - 1, 300);
        assert_int_equal(hg_spool_release(s, e->id), 0);
        hg_spool_entry_free(e);
    }
    uv_run(&f->loop, UV_RUN_DEFAULT);
    char w0[128];
    snprintf(w0, sizeof(w0), "%s/w0", f->dir);
    assert_true(count_files(w0, ".seg") <= 3); /* released segments went */
    uint64_t recs, bytes;
    hg_spool_stats(s, &recs, &bytes);
    assert_int_equal(recs, 1);
    close_spool(f, s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_append_one, setup, teardown),
        cmocka_unit_test_setup_teardown(test_append_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recover_after_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_release_survives_restarts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_async, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crc_mismatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_quarantine_failure_keeps_segment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_quota, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rotation_and_deletion, setup, teardown),
        cmocka_unit_test_setup_teardown(test_defer_backlog, setup, teardown),
        cmocka_unit_test_setup_teardown(test_defer_steady, setup, teardown),
        cmocka_unit_test_setup_teardown(test_orphan_adoption, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_with_appends_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_error_not_durable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prezeroed_recovery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_record_then_zeros, setup, teardown),
        cmocka_unit_test_setup_teardown(test_zero_hole_then_data, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_during_prezero, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollover_prezeroed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rotation_waits_for_prepared, setup, teardown),
        cmocka_unit_test_setup_teardown(test_quota_ignores_prepared_space, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_invalid, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

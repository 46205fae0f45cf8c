/*
 * ndjson sink: appends events to local files with group commit (one write + one fdatasync per
 * batch, on the libuv threadpool) and confirms each event only once its batch is durable.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/common.h"
#include "core/err.h"
#include "core/log.h"
#include "core/time.h"
#include "ops/metrics.h"
#include "sink/ndjson.h"

/* Where the one I/O chain of a sink stands; every transition happens on the loop thread. */
enum flush_state {
    FLUSH_IDLE,       /* nothing in flight: the next publish starts a batch */
    FLUSH_OPENING,    /* threadpool: close the old file, create the next one, sync the directory */
    FLUSH_WRITING,    /* threadpool: write the in-flight batch, then fdatasync the file */
    FLUSH_DELIVERING, /* running the batch's callbacks; publishes only queue meanwhile */
    FLUSH_CLOSING,    /* close(): closing the last file on the threadpool */
};

struct waiter {
    hg_sink_cb cb;
    void *arg;
};

/* Lines plus the callbacks waiting for them, in publish order. */
struct batch {
    struct hg_buf lines;
    struct waiter *waiter;
    size_t n, cap;
};

/* Inputs and results of a threadpool file job; only the threadpool touches it while one runs. */
struct file_job {
    int old_fd;          /* to close first, or -1 */
    int64_t truncate_to; /* cut old_fd back to this length first (drops a torn batch), or -1 */
    bool open_next;      /* create the next file (rotation) rather than only closing */
    char stamp[16];      /* yyyymmddThhmmss */
    unsigned seq;        /* first seq to try; the next unused one on return */
    int new_fd;
    int err;
};

struct ndjson_sink {
    struct hg_sink base;
    uv_loop_t *loop;
    char *dir;
    int worker;
    uint64_t rotate_bytes;

    uv_file fd;           /* current file, -1 before the first batch and after an error */
    uint64_t file_bytes;  /* bytes of durable lines in the current file */
    bool rotate;          /* the next batch goes to a new file */
    unsigned seq;

    struct batch pending;  /* accepted, waiting for the in-flight batch to finish */
    struct batch inflight; /* being written and synced */
    size_t written;        /* bytes of inflight already written */
    int commit_err;        /* the commit job's result: 0 or a negative errno */
    bool commit_synced;    /* the commit job got as far as its fdatasync */
    enum flush_state state;
    uv_work_t work;
    struct file_job job;

    bool failed;   /* the last batch failed: not ready */
    bool closing;
    void (*done)(void *arg);
    void *done_arg;
    uint64_t fsyncs;
};

static void start_flush(struct ndjson_sink *s);
static void start_write(struct ndjson_sink *s);

static struct ndjson_sink *sink_of(struct hg_sink *base)
{
    return HG_CONTAINER_OF(base, struct ndjson_sink, base);
}

static void batch_init(struct batch *b)
{
    hg_buf_init(&b->lines, HG_NDJSON_MAX_PENDING);
    b->waiter = NULL;
    b->n = b->cap = 0;
}

static void batch_free(struct batch *b)
{
    hg_buf_free(&b->lines);
    free(b->waiter);
    b->waiter = NULL;
    b->n = b->cap = 0;
}

/* Empty the batch for reuse; give back memory a burst made it grow to. */
static void batch_reset(struct batch *b)
{
    if (b->lines.alloc > (1u << 20))
        hg_buf_free(&b->lines);
    hg_buf_reset(&b->lines);
    if (b->cap > 1024) {
        free(b->waiter);
        b->waiter = NULL;
        b->cap = 0;
    }
    b->n = 0;
}

/* mkdir -p: each component in turn; an existing one is fine. */
static int make_dirs(const char *dir)
{
    char path[PATH_MAX];
    size_t len = strlen(dir);
    if (len == 0 || len >= sizeof(path))
        return HG_ERR_INVALID;
    memcpy(path, dir, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (path[i] != '/' && path[i] != '\0')
            continue;
        char saved = path[i];
        path[i] = '\0';
        if (mkdir(path, 0750) != 0 && errno != EEXIST)
            return -errno;
        path[i] = saved;
    }
    struct stat st;
    if (stat(dir, &st) != 0)
        return -errno;
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

/*
 * Threadpool: retire the old file and, for a rotation, create the next one. The directory is
 * synced after the create because fdatasync on the file alone does not make its name durable.
 */
static void on_file_work(uv_work_t *w)
{
    struct ndjson_sink *s = HG_CONTAINER_OF(w, struct ndjson_sink, work);
    struct file_job *job = &s->job;
    job->err = 0;
    job->new_fd = -1;
    if (job->old_fd >= 0) {
        /* Best effort: the batch that failed there was reported and will be published again. */
        if (job->truncate_to >= 0 && ftruncate(job->old_fd, (off_t)job->truncate_to) == 0)
            (void)fdatasync(job->old_fd);
        close(job->old_fd);
    }
    if (!job->open_next)
        return;
    char path[PATH_MAX];
    int fd = -1;
    for (int tries = 0; tries < 1000 && fd < 0; tries++, job->seq++) {
        int n = snprintf(path, sizeof(path), "%s/events-w%d-%s-%06u.ndjson", s->dir, s->worker,
                         job->stamp, job->seq);
        if (n < 0 || (size_t)n >= sizeof(path)) {
            job->err = HG_ERR_INVALID;
            return;
        }
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0640);
        if (fd < 0 && errno != EEXIST) {
            job->err = -errno;
            return;
        }
    }
    if (fd < 0) {
        job->err = -EEXIST;
        return;
    }
    int dfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0) {
        job->err = -errno;
        if (dfd >= 0)
            close(dfd);
        close(fd);
        unlink(path);
        return;
    }
    close(dfd);
    job->new_fd = fd;
}

static void queue_file_job(struct ndjson_sink *s, bool open_next, uv_after_work_cb after)
{
    struct file_job *job = &s->job;
    job->old_fd = s->fd;
    job->truncate_to = s->failed ? (int64_t)s->file_bytes : -1;
    job->open_next = open_next;
    job->seq = s->seq;
    if (open_next) {
        time_t now = (time_t)(hg_time_now_ns() / 1000000000ull);
        struct tm tm;
        gmtime_r(&now, &tm);
        if (strftime(job->stamp, sizeof(job->stamp), "%Y%m%dT%H%M%S", &tm) == 0)
            memcpy(job->stamp, "00000000T000000", 16);
    }
    s->fd = -1;
    /* uv_queue_work only fails without an after-work callback, which is never the case here. */
    int rc = uv_queue_work(s->loop, &s->work, on_file_work, after);
    if (rc < 0)
        abort();
}

/* Run the in-flight batch's callbacks, then move on: next batch, or the final close. */
static void finish_batch(struct ndjson_sink *s, int status)
{
    size_t n = s->inflight.n;
    s->state = FLUSH_DELIVERING;
    hg_metric_add(HG_M_SINK_EVENTS, status == 0 ? "sink=\"ndjson\",status=\"ok\"" : "sink=\"ndjson\",status=\"error\"", n);
    for (size_t i = 0; i < n; i++)
        s->inflight.waiter[i].cb(s->inflight.waiter[i].arg, status);
    batch_reset(&s->inflight);
    s->state = FLUSH_IDLE;
    if (s->pending.n > 0)
        start_flush(s);
}

static void on_close_done(uv_work_t *w, int status)
{
    struct ndjson_sink *s = HG_CONTAINER_OF(w, struct ndjson_sink, work);
    void (*done)(void *) = s->done;
    void *arg = s->done_arg;
    batch_free(&s->pending);
    batch_free(&s->inflight);
    free(s->dir);
    free(s);
    if (done)
        done(arg);
}

static void start_close(struct ndjson_sink *s)
{
    s->state = FLUSH_CLOSING;
    queue_file_job(s, false, on_close_done);
}

/* After a batch completed: with nothing left and close requested, the file goes now. */
static void settle(struct ndjson_sink *s, int status)
{
    finish_batch(s, status);
    if (s->state == FLUSH_IDLE && s->closing)
        start_close(s);
}

static void fail_batch(struct ndjson_sink *s, int err)
{
    hg_warn(NULL, "ndjson write failed", "dir", s->dir, "error", hg_strerror(err), NULL);
    s->failed = true;
    s->rotate = true;
    settle(s, err);
}

static void on_open_done(uv_work_t *w, int status)
{
    struct ndjson_sink *s = HG_CONTAINER_OF(w, struct ndjson_sink, work);
    s->seq = s->job.seq;
    if (s->job.err < 0) {
        fail_batch(s, s->job.err);
        return;
    }
    s->fd = s->job.new_fd;
    s->file_bytes = 0;
    s->rotate = false;
    start_write(s);
}

/*
 * Threadpool: the in-flight batch's write (all of it) and the file's fdatasync in one job, one
 * threadpool round trip per batch instead of two. Only this job touches the fd and `inflight`
 * while it runs; publishes meanwhile go to `pending`.
 */
static void on_commit_work(uv_work_t *w)
{
    struct ndjson_sink *s = HG_CONTAINER_OF(w, struct ndjson_sink, work);
    const char *data = s->inflight.lines.data;
    size_t len = s->inflight.lines.len;
    s->commit_err = 0;
    s->commit_synced = false;
    while (s->written < len) {
        /* O_APPEND and one writer keep lines in order. */
        ssize_t n = write(s->fd, data + s->written, len - s->written);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            s->commit_err = n < 0 ? -errno : UV_EIO;
            return;
        }
        s->written += (size_t)n;
    }
    s->commit_synced = true;
    if (fdatasync(s->fd) != 0)
        s->commit_err = -errno;
}

static void on_commit_done(uv_work_t *w, int status)
{
    struct ndjson_sink *s = HG_CONTAINER_OF(w, struct ndjson_sink, work);
    if (s->commit_synced)
        s->fsyncs++;
    if (s->commit_err < 0) {
        /* After a failed fsync the kernel may have dropped the dirty pages: never trust this file again. */
        fail_batch(s, s->commit_err);
        return;
    }
    s->file_bytes += s->inflight.lines.len;
    if (s->file_bytes >= s->rotate_bytes)
        s->rotate = true;
    s->failed = false;
    settle(s, 0);
}

static void start_write(struct ndjson_sink *s)
{
    s->state = FLUSH_WRITING;
    /* uv_queue_work only fails without an after-work callback, which is never the case here. */
    if (uv_queue_work(s->loop, &s->work, on_commit_work, on_commit_done) < 0)
        abort();
}

static void start_flush(struct ndjson_sink *s)
{
    struct batch t = s->inflight;
    s->inflight = s->pending;
    s->pending = t;
    s->written = 0;
    if (s->fd < 0 || s->rotate) {
        s->state = FLUSH_OPENING;
        queue_file_job(s, true, on_open_done);
        return;
    }
    start_write(s);
}

static int ndjson_publish(struct hg_sink *base, const struct hg_event *ev, hg_sink_cb cb, void *arg)
{
    struct ndjson_sink *s = sink_of(base);
    if (s->closing)
        return HG_ERR_CLOSED;
    if (ev == NULL || ev->json == NULL || ev->json_len == 0 || cb == NULL)
        return HG_ERR_INVALID;
    /* One event, one line: a raw line break would split it into two unparseable halves. */
    if (memchr(ev->json, '\n', ev->json_len) != NULL || memchr(ev->json, '\r', ev->json_len) != NULL)
        return HG_ERR_INVALID;
    struct batch *b = &s->pending;
    if (b->n >= HG_NDJSON_MAX_WAITERS)
        return HG_ERR_FULL;
    char *dst = hg_buf_reserve(&b->lines, ev->json_len + 1);
    if (dst == NULL)
        return HG_ERR_FULL;
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 64;
        b->waiter = hg_xrealloc(b->waiter, b->cap * sizeof(*b->waiter));
    }
    memcpy(dst, ev->json, ev->json_len);
    dst[ev->json_len] = '\n';
    b->lines.len += ev->json_len + 1;
    b->waiter[b->n++] = (struct waiter){ cb, arg };
    if (s->state == FLUSH_IDLE)
        start_flush(s);
    return 0;
}

static int ndjson_ready(struct hg_sink *base, const char **reason)
{
    struct ndjson_sink *s = sink_of(base);
    if (s->closing) {
        *reason = "ndjson sink closing";
        return HG_ERR_CLOSED;
    }
    if (s->failed) {
        *reason = "ndjson write failed";
        return HG_ERR_UNAVAILABLE;
    }
    return 0;
}

static void ndjson_close(struct hg_sink *base, void (*done)(void *arg), void *arg)
{
    struct ndjson_sink *s = sink_of(base);
    if (s->closing)
        return; /* a second close is a caller bug; the first one's done still runs */
    s->closing = true;
    s->done = done;
    s->done_arg = arg;
    /* Otherwise the running chain drains pending and then closes (see settle). */
    if (s->state == FLUSH_IDLE)
        start_close(s);
}

static const struct hg_sink_ops ndjson_ops = {
    .name = "ndjson",
    .publish = ndjson_publish,
    .ready = ndjson_ready,
    .close = ndjson_close,
};

int hg_ndjson_sink_open(uv_loop_t *loop, const char *dir, int worker, uint64_t rotate_bytes,
                        struct hg_sink **out)
{
    if (loop == NULL || dir == NULL || out == NULL || worker < 0)
        return HG_ERR_INVALID;
    /* Leave room for "/events-w<worker>-<stamp>-<seq>.ndjson". */
    if (strlen(dir) == 0 || strlen(dir) > PATH_MAX - 64)
        return HG_ERR_INVALID;
    int rc = make_dirs(dir);
    if (rc < 0)
        return rc;
    struct ndjson_sink *s = hg_xcalloc(1, sizeof(*s));
    s->base.ops = &ndjson_ops;
    s->loop = loop;
    s->dir = hg_xstrdup(dir);
    s->worker = worker;
    s->rotate_bytes = rotate_bytes ? rotate_bytes : HG_NDJSON_DEFAULT_ROTATE;
    s->fd = -1;
    s->state = FLUSH_IDLE;
    batch_init(&s->pending);
    batch_init(&s->inflight);
    *out = &s->base;
    return 0;
}

uint64_t hg_ndjson_sink_fsyncs(struct hg_sink *base)
{
    return sink_of(base)->fsyncs;
}

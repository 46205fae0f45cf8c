/*
 * The floor under figure 4's ingest latency: what the machine alone charges a lone webhook's
 * group commit. A libuv loop queues one threadpool job every 1/rate s, as the spool does for a
 * webhook that arrives alone, and measures queue → after-work callback:
 *   empty:     the job does nothing (the two cross-thread wake-ups: loop → pool → loop);
 *   fdatasync: pwrite 1 KiB into a zero-filled file + fdatasync (the commit itself, as the spool
 *              does it into its prepared segments).
 * No HTTP, no parsing, no second thread competing: hookgate's @500/s p99 cannot be below this.
 *
 *   fsync_floor MODE RATE SECONDS FILE     MODE = empty | fdatasync; one JSON line on stdout
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#define FILE_BYTES (8 << 20) /* zero-filled before the run; wraps around */

struct job {
    uv_work_t work;
    uint64_t queued_ns;
};

static int fd = -1;
static int sync_mode;
static unsigned n_total, n_queued, n_done;
static double *lat_ms;
static off_t off;
static uv_timer_t timer;

static void on_job(uv_work_t *w)
{
    (void)w;
    if (!sync_mode)
        return;
    char buf[1024];
    memset(buf, 'x', sizeof(buf));
    if (pwrite(fd, buf, sizeof(buf), off) != (ssize_t)sizeof(buf) || fdatasync(fd) != 0) {
        perror("pwrite/fdatasync");
        exit(1);
    }
    off = (off + (off_t)sizeof(buf)) % FILE_BYTES;
}

static void on_done(uv_work_t *w, int status)
{
    (void)status;
    struct job *j = (struct job *)w;
    lat_ms[n_done++] = (double)(uv_hrtime() - j->queued_ns) / 1e6;
    free(j);
}

static void on_tick(uv_timer_t *t)
{
    if (n_queued == n_total) {
        uv_timer_stop(t);
        return;
    }
    struct job *j = malloc(sizeof(*j));
    if (j == NULL)
        exit(1);
    j->queued_ns = uv_hrtime();
    n_queued++;
    if (uv_queue_work(uv_default_loop(), &j->work, on_job, on_done) != 0)
        exit(1);
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: fsync_floor empty|fdatasync RATE SECONDS FILE\n");
        return 2;
    }
    sync_mode = strcmp(argv[1], "fdatasync") == 0;
    double rate = atof(argv[2]), secs = atof(argv[3]);
    if (rate < 1 || rate > 1000 || secs <= 0)
        return 2;
    n_total = (unsigned)(rate * secs);
    lat_ms = calloc(n_total, sizeof(*lat_ms));
    if (lat_ms == NULL)
        return 1;
    if (sync_mode) {
        fd = open(argv[4], O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        static char zeros[1 << 20];
        for (int i = 0; fd >= 0 && i < FILE_BYTES / (int)sizeof(zeros); i++)
            if (write(fd, zeros, sizeof(zeros)) != (ssize_t)sizeof(zeros))
                return 1;
        if (fd < 0 || fsync(fd) != 0)
            return 1;
    }
    uint64_t every_ms = (uint64_t)(1000.0 / rate + 0.5);
    uv_timer_init(uv_default_loop(), &timer);
    uv_timer_start(&timer, on_tick, every_ms, every_ms ? every_ms : 1);
    uv_run(uv_default_loop(), UV_RUN_DEFAULT);
    if (fd >= 0) {
        close(fd);
        unlink(argv[4]);
    }
    qsort(lat_ms, n_done, sizeof(*lat_ms), cmp);
#define Q(q) (n_done ? lat_ms[(size_t)((q) * (n_done - 1))] : 0.0)
    printf("{\"mode\":\"%s\",\"rate\":%.0f,\"jobs\":%u,\"p50_ms\":%.4f,\"p90_ms\":%.4f,\"p99_ms\":%.4f,"
           "\"p999_ms\":%.4f,\"max_ms\":%.4f}\n",
           sync_mode ? "fdatasync" : "empty", rate, n_done, Q(0.5), Q(0.9), Q(0.99), Q(0.999), Q(1.0));
    return 0;
}

/*
 * The spool's write-ahead log: record framing, segment files, group commit on the libuv
 * threadpool, segment files prepared ahead of use (zero-filled). Start-up recovery (open: cut and
 * quarantine torn or corrupt tails) is in recover.c; what the two share is in spool_internal.h.
 * The on-disk format and the reasoning behind it are in docs/spool.md; the zero-filled segments are
 * explained at "segments prepared ahead" below.
 *
 * Sections, in order:
 *   little-endian encoding   record headers and payload fields (byte helpers: spool_internal.h)
 *   batches                  the pending batch an append encodes into
 *   paths and directories    names, mkdir -p with durable parents, directory fsync
 *   segments                 open/close of segment files, the per-segment record index
 *   segments prepared ahead  zero-filled `.zero` → `.seg` on the threadpool, and taking one
 *   group commit             the threadpool job (pwritev + fdatasync) and its completion
 *   public                   append, release, stats
 *   close                    free, then the segment fd and the timer
 * (recovery, in recover.c: open, scan, check, quarantine + cut, re-append lost releases, index)
 */
#include "spool/spool.h"
#include "spool/spool_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/common.h"
#include "core/crc32c.h"
#include "core/err.h"
#include "core/log.h"
#include "core/time.h"
#include "core/uuid.h"

#define ZERO_CHUNK      (1u << 20)  /* zero-fill step: each is written and fdatasync'ed alone */
#define ZERO_IOV        16          /* ZERO_CHUNK as ZERO_IOV writes of one shared zero buffer */


/* The one batch being written: everything the threadpool needs, so it never touches the spool. */
struct commit {
    uv_work_t work;
    struct hg_spool *spool;
    struct segment *seg;
    struct batch batch;
    char seghdr[SEGHDR_LEN];
    bool create;          /* create seg's file (and fsync its directory) before writing */
    const char *path;
    const char *dir_path;
    int close_fd;         /* the previous segment's fd, closed off the loop */
    int fd;
    uint64_t offset;
    bool sync;            /* fdatasync after the write: false for release-only batches */
    int status;
    double fsync_seconds;
};

struct unlink_req {
    uv_fs_t req;
    struct hg_spool *spool;
};

/* The next segment, prepared ahead: everything its threadpool job needs, so it never touches the spool. */
struct prep {
    uv_work_t work;
    struct hg_spool *spool;
    uint64_t seq;
    uint64_t uid;
    uint64_t size;        /* file length: header + zeros up to segment_bytes */
    char *path;           /* <seq>.seg, the name it gets once complete */
    char *tmp_path;       /* <seq>.zero while it is being filled */
    const char *dir_path; /* the spool's own_dir: the spool waits for the job before it is freed */
    char seghdr[SEGHDR_LEN];
    int fd;               /* open for writing once ready */
    int status;
};

/* ---- little-endian encoding ---- */

/* CRC-32C over the header and payload with the CRC field itself left out. */
uint32_t spool_record_crc(const char *rec, uint32_t total)
{
    uint32_t crc = hg_crc32c(0, rec, OFF_CRC);
    return hg_crc32c(crc, rec + OFF_CRC + 4, total - (OFF_CRC + 4));
}

static void frame_header(char *rec, enum rec_type type, uint32_t total, uint64_t received, uint64_t spooled)
{
    put32(rec + OFF_MAGIC, SPOOL_MAGIC);
    rec[OFF_TYPE] = (char)type;
    rec[OFF_VERSION] = SPOOL_VERSION;
    rec[6] = 0;
    rec[7] = 0;
    put32(rec + OFF_LEN, total);
    put32(rec + OFF_CRC, 0);
    put64(rec + OFF_RECEIVED, received);
    put64(rec + OFF_SPOOLED, spooled);
}

/* Call once the payload is in place. */
static void frame_seal(char *rec, uint32_t total)
{
    put32(rec + OFF_CRC, spool_record_crc(rec, total));
}

/* Split a data record's payload into its five length-prefixed fields; HG_ERR_CORRUPT if they do not tile it. */
int spool_decode_data(const char *rec, uint32_t total, struct span f[DATA_FIELDS])
{
    uint32_t pos = HDR_LEN;
    for (int i = 0; i < DATA_FIELDS; i++) {
        if (total - pos < 4)
            return HG_ERR_CORRUPT;
        uint32_t n = get32(rec + pos);
        pos += 4;
        if (n > total - pos)
            return HG_ERR_CORRUPT;
        f[i].p = rec + pos;
        f[i].n = n;
        pos += n;
    }
    return pos == total ? 0 : HG_ERR_CORRUPT;
}

/* ---- batches ---- */

static char *batch_reserve(struct batch *b, size_t n)
{
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len < n)
            cap *= 2;
        b->data = hg_xrealloc(b->data, cap);
        b->cap = cap;
    }
    return b->data + b->len;
}

static struct waiter *batch_add_waiter(struct batch *b)
{
    if (b->nwaiters == b->waiters_cap) {
        b->waiters_cap = b->waiters_cap ? b->waiters_cap * 2 : 16;
        b->waiters = hg_xrealloc(b->waiters, b->waiters_cap * sizeof(*b->waiters));
    }
    return &b->waiters[b->nwaiters++];
}

static void batch_free(struct batch *b)
{
    free(b->data);
    free(b->waiters);
    memset(b, 0, sizeof(*b));
}

/* A finished batch's buffers become the spare (when none is kept and they are not huge). */
#define SPARE_MAX (1u << 20)
static void batch_recycle(struct batch *spare, struct batch *done)
{
    if (spare->data == NULL && done->cap <= SPARE_MAX) {
        spare->data = done->data;
        spare->cap = done->cap;
        done->data = NULL;
    }
    if (spare->waiters == NULL && done->waiters_cap <= SPARE_MAX / sizeof(*done->waiters)) {
        spare->waiters = done->waiters;
        spare->waiters_cap = done->waiters_cap;
        done->waiters = NULL;
    }
    batch_free(done);
}

/* Give an empty pending batch the spare buffers: a commit per request otherwise costs two mallocs. */
static void pending_adopt_spare(struct hg_spool *s)
{
    if (s->pending.data == NULL && s->spare.data != NULL) {
        s->pending.data = s->spare.data;
        s->pending.cap = s->spare.cap;
        s->spare.data = NULL;
        s->spare.cap = 0;
    }
    if (s->pending.waiters == NULL && s->spare.waiters != NULL) {
        s->pending.waiters = s->spare.waiters;
        s->pending.waiters_cap = s->spare.waiters_cap;
        s->spare.waiters = NULL;
        s->spare.waiters_cap = 0;
    }
}

void spool_batch_add_release(struct batch *b, uint64_t uid, uint32_t idx)
{
    char *rec = batch_reserve(b, RELEASE_LEN);
    frame_header(rec, REC_RELEASE, RELEASE_LEN, 0, hg_time_now_ns());
    put64(rec + HDR_LEN, uid);
    put32(rec + HDR_LEN + 8, idx);
    put32(rec + HDR_LEN + 12, 0);
    frame_seal(rec, RELEASE_LEN);
    b->len += RELEASE_LEN;
}

/* ---- paths and directories ---- */

char *spool_path_fmt(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        hg_oom(__FILE__, __LINE__);
    char *p = hg_xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

/* Runs on the threadpool too: uses nothing but its argument. */
int spool_fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

/* mkdir -p; each directory it creates is made durable by fsyncing its parent. */
int spool_mkdir_p(const char *path)
{
    char *p = hg_xstrdup(path);
    size_t n = strlen(p);
    int rc = 0;
    while (n > 1 && p[n - 1] == '/')
        p[--n] = '\0';
    for (size_t i = 1; i <= n; i++) {
        if (p[i] != '/' && p[i] != '\0')
            continue;
        char saved = p[i];
        p[i] = '\0';
        if (mkdir(p, 0750) == 0) {
            char *slash = strrchr(p, '/');
            if (slash == p) {
                rc = spool_fsync_dir("/");
            } else if (slash) {
                *slash = '\0';
                rc = spool_fsync_dir(p);
                *slash = '/';
            } else {
                rc = spool_fsync_dir(".");
            }
        } else if (errno != EEXIST) {
            rc = -errno;
        }
        p[i] = saved;
        if (rc < 0)
            goto out;
    }
out:
    free(p);
    return rc;
}

/* ---- segments ---- */

struct segment *spool_segment_new(struct hg_spool *s, int dir_worker, const char *dir_path, uint64_t seq, uint64_t uid)
{
    struct segment *seg = hg_xcalloc(1, sizeof(*seg));
    seg->slot = s->next_slot++;
    seg->uid = uid;
    seg->seq = seq;
    seg->dir_worker = dir_worker;
    seg->path = spool_path_fmt("%s/%016" PRIx64 ".seg", dir_path, seq);
    seg->fd = -1;
    if (s->nsegs == s->segs_cap) {
        s->segs_cap = s->segs_cap ? s->segs_cap * 2 : 16;
        s->segs = hg_xrealloc(s->segs, s->segs_cap * sizeof(*s->segs));
    }
    s->segs[s->nsegs++] = seg;
    return seg;
}

static void segment_free(struct segment *seg)
{
    free(seg->path);
    free(seg->lens);
    free(seg->offs);
    free(seg);
}

/* Give the segment a new record index, its length slot zero until the record is durable. */
uint32_t spool_segment_next_index(struct segment *seg)
{
    if (seg->nrecords == seg->lens_cap) {
        seg->lens_cap = seg->lens_cap ? seg->lens_cap * 2 : 64;
        seg->lens = hg_xrealloc(seg->lens, (size_t)seg->lens_cap * sizeof(*seg->lens));
        seg->offs = hg_xrealloc(seg->offs, (size_t)seg->lens_cap * sizeof(*seg->offs));
    }
    seg->lens[seg->nrecords] = 0;
    seg->offs[seg->nrecords] = 0;
    return seg->nrecords++;
}

struct segment *spool_find_segment(const struct hg_spool *s, uint32_t slot)
{
    size_t lo = 0, hi = s->nsegs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->segs[mid]->slot == slot)
            return s->segs[mid];
        if (s->segs[mid]->slot < slot)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

void spool_segment_forget(struct hg_spool *s, struct segment *seg)
{
    for (size_t i = 0; i < s->nsegs; i++) {
        if (s->segs[i] == seg) {
            memmove(&s->segs[i], &s->segs[i + 1], (s->nsegs - i - 1) * sizeof(*s->segs));
            s->nsegs--;
            break;
        }
    }
    if (s->backlog_fd >= 0 && s->backlog_slot == seg->slot) {
        close(s->backlog_fd); /* the file is going: do not keep its blocks alive */
        s->backlog_fd = -1;
    }
    segment_free(seg);
}

static void maybe_finish(struct hg_spool *s);

static void on_unlinked(uv_fs_t *req)
{
    struct unlink_req *u = HG_CONTAINER_OF(req, struct unlink_req, req);
    struct hg_spool *s = u->spool;
    if (req->result < 0 && req->result != UV_ENOENT)
        hg_warn(NULL, "spool: cannot delete released segment", "path", req->path,
                "error", hg_strerror((int)req->result), NULL);
    uv_fs_req_cleanup(req);
    free(u);
    s->unlinks--;
    maybe_finish(s);
}

/* A segment with nothing live that is no longer written is deleted; its file goes asynchronously. */
static void maybe_delete(struct hg_spool *s, struct segment *seg)
{
    if (seg->live > 0 || seg == s->cur || seg->pinned)
        return;
    if (!seg->on_disk) {
        spool_segment_forget(s, seg);
        return;
    }
    struct unlink_req *u = hg_xcalloc(1, sizeof(*u));
    u->spool = s;
    /* libuv copies the path, so the segment can go at once. */
    int rc = uv_fs_unlink(s->loop, &u->req, seg->path, on_unlinked);
    if (rc < 0) {
        hg_warn(NULL, "spool: cannot delete released segment", "path", seg->path, "error", hg_strerror(rc), NULL);
        free(u);
    } else {
        s->unlinks++;
    }
    spool_segment_forget(s, seg);
}

/* ---- segments prepared ahead ----
 *
 * Why: every acknowledged append waits for one fdatasync. On a file that grows, that fdatasync
 * also has to write the inode (the new i_size, and the block allocation), synchronously and after
 * the data: on ext4 without a journal (ext4_fsync_nojournal) that is a second dependent disk
 * write, and it is what made the ingest p99 tail. Overwriting blocks that were already written
 * and synced changes no metadata, so the fdatasync writes the data pages only. (fallocate is not
 * enough: it leaves unwritten extents whose conversion on first write is a metadata change too.)
 *
 * How: a segment file is written in full before any record goes into it: its REC_SEGMENT header,
 * then zeros up to segment_bytes, in ZERO_CHUNK steps each fdatasync'ed (so the fill never queues
 * a large flush in front of a commit's fdatasync), as <seq>.zero; then renamed (never over an
 * existing name) to <seq>.seg and the directory fsynced. Only a complete, durable file ever
 * carries a .seg name, so a crash during the fill leaves a .zero file, which recovery deletes (it
 * never held a record). The first segment is prepared synchronously in hg_spool_open; each time a
 * commit rotates into the prepared segment, the next one is prepared on the threadpool while the
 * current one fills. Records are written at the segment's logical offset (segment->size, which
 * is also what the rotation test uses), never at the file size.
 *
 * If a rotation comes while the next segment is still being prepared, the commit waits for it
 * (the batch keeps gathering appends), so segments are always used in sequence order; if the
 * preparation failed (e.g. ENOSPC, a name taken), the commit creates a plain growing segment as
 * before and the next preparation is tried at once.
 *
 * Recovery: a run of zero bytes up to the end of the file where the next record header would be
 * is the clean end of the segment. Anything else there (a torn or corrupt record, even one
 * followed by zeros) is handled as before: bytes up to the last non-zero one are copied to
 * quarantine/ and the segment is cut at the last good record.
 *
 * Space: up to two segments per worker (the one being written, the one prepared) take
 * segment_bytes on disk whatever they hold. max_bytes is a quota on live record bytes, not on
 * disk usage, so it does not count that (see spool.h); a clean close deletes the unused prepared
 * segment, and recovery deletes segments with nothing live.
 */

static char zeros[ZERO_CHUNK / ZERO_IOV];

struct prep *spool_prep_new(struct hg_spool *s)
{
    struct prep *p = hg_xcalloc(1, sizeof(*p));
    p->spool = s;
    p->seq = s->next_seq++;
    p->uid = hg_random_u64();
    p->size = HG_MAX(s->segment_bytes, (uint64_t)SEGHDR_LEN);
    p->path = spool_path_fmt("%s/%016" PRIx64 ".seg", s->own_dir, p->seq);
    p->tmp_path = spool_path_fmt("%s/%016" PRIx64 ".zero", s->own_dir, p->seq);
    p->dir_path = s->own_dir;
    p->fd = -1;
    frame_header(p->seghdr, REC_SEGMENT, SEGHDR_LEN, 0, hg_time_now_ns());
    put64(p->seghdr + HDR_LEN, p->uid);
    put64(p->seghdr + HDR_LEN + 8, p->seq);
    put32(p->seghdr + HDR_LEN + 16, (uint32_t)s->worker);
    put32(p->seghdr + HDR_LEN + 20, 0);
    frame_seal(p->seghdr, SEGHDR_LEN);
    return p;
}

static void prep_free(struct prep *p)
{
    if (p->fd >= 0)
        close(p->fd);
    free(p->path);
    free(p->tmp_path);
    free(p);
}

static int pwrite_all(int fd, struct iovec *iov, int iovcnt, uint64_t off);

/* Fill, sync and name the file. Runs on the threadpool (or in hg_spool_open): uses only `p`. */
void spool_prep_run(struct prep *p)
{
    struct iovec iov[ZERO_IOV];
    int fd = open(p->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) {
        p->status = -errno;
        return;
    }
    iov[0] = (struct iovec){ .iov_base = p->seghdr, .iov_len = SEGHDR_LEN };
    int rc = pwrite_all(fd, iov, 1, 0);
    for (uint64_t off = SEGHDR_LEN; rc == 0 && off < p->size;) {
        uint64_t n = HG_MIN((uint64_t)ZERO_CHUNK, p->size - off);
        int k = 0;
        for (uint64_t left = n; left > 0; k++) {
            size_t m = (size_t)HG_MIN(left, (uint64_t)sizeof(zeros));
            iov[k] = (struct iovec){ .iov_base = zeros, .iov_len = m };
            left -= m;
        }
        rc = pwrite_all(fd, iov, k, off);
        if (rc == 0 && fdatasync(fd) < 0)
            rc = -errno;
        off += n;
    }
    /* Also covers a file no longer than its header. The size is durable with it (fdatasync). */
    if (rc == 0 && fdatasync(fd) < 0)
        rc = -errno;
    /* Never over an existing segment: that would destroy its records. */
    if (rc == 0 && renameat2(AT_FDCWD, p->tmp_path, AT_FDCWD, p->path, RENAME_NOREPLACE) < 0) {
        rc = -errno;
        /* A filesystem without RENAME_NOREPLACE: link() refuses an existing name just the same
         * (a .zero name left behind is deleted by the next recovery). */
        if (rc == -EINVAL || rc == -ENOSYS) {
            rc = link(p->tmp_path, p->path) < 0 ? -errno : 0;
            if (rc == 0)
                unlink(p->tmp_path);
        }
    }
    if (rc < 0) {
        close(fd);
        unlink(p->tmp_path);
        p->status = rc;
        return;
    }
    /* Once renamed the file is complete: if only the directory sync fails, it is still a valid
     * (empty) segment to recovery, but records must not be acknowledged in a name that may vanish. */
    rc = spool_fsync_dir(p->dir_path);
    if (rc < 0) {
        close(fd);
        unlink(p->path);
        p->status = rc;
        return;
    }
    p->fd = fd;
}

static void prep_work(uv_work_t *work)
{
    spool_prep_run(HG_CONTAINER_OF(work, struct prep, work));
}

/* A failed preparation leaves nothing behind; the next rotation creates a plain segment. */
bool spool_prep_check(struct hg_spool *s, struct prep *p, int uvstatus)
{
    int status = uvstatus < 0 ? uvstatus : p->status;
    if (status == 0)
        return true;
    hg_warn(NULL, "spool: cannot prepare the next segment", "path", p->path, "error", hg_strerror(status), NULL);
    if (s->prep == p)
        s->prep = NULL;
    prep_free(p);
    return false;
}

static void prep_done(uv_work_t *work, int uvstatus)
{
    struct prep *p = HG_CONTAINER_OF(work, struct prep, work);
    struct hg_spool *s = p->spool;
    s->prep_busy = false;
    spool_prep_check(s, p, uvstatus);
    if (s->prep_waited) {
        s->prep_waited = false;
        spool_schedule_commit(s, true);
    }
    maybe_finish(s);
}

/* Prepare the segment after the current one, unless one is ready or closing has begun. */
static void prep_start(struct hg_spool *s)
{
    if (s->prep || s->closing)
        return;
    s->prep = spool_prep_new(s);
    s->prep_busy = true;
    /* Cannot fail: uv_queue_work only rejects a NULL work callback. */
    if (uv_queue_work(s->loop, &s->prep->work, prep_work, prep_done) < 0)
        abort();
}

/* At close: the prepared segment was never used; delete it (asynchronously, like released ones). */
static void prep_drop(struct hg_spool *s)
{
    struct prep *p = s->prep;
    s->prep = NULL;
    struct unlink_req *u = hg_xcalloc(1, sizeof(*u));
    u->spool = s;
    int rc = uv_fs_unlink(s->loop, &u->req, p->path, on_unlinked);
    if (rc < 0) {
        hg_warn(NULL, "spool: cannot delete unused segment", "path", p->path, "error", hg_strerror(rc), NULL);
        free(u);
    } else {
        s->unlinks++;
    }
    prep_free(p);
}

/* ---- group commit ---- */

static int pwrite_all(int fd, struct iovec *iov, int iovcnt, uint64_t off)
{
    while (iovcnt > 0) {
        ssize_t n = pwritev(fd, iov, iovcnt, (off_t)off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return UV_EIO;
        off += (uint64_t)n;
        size_t left = (size_t)n;
        while (iovcnt > 0 && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (char *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
    return 0;
}

/*
 * Threadpool side of a commit: one job does the segment creation, the write and the fdatasync, so
 * a batch costs one hop to the pool instead of four and the loop thread never waits on the disk.
 */
static void commit_work(uv_work_t *work)
{
    struct commit *c = HG_CONTAINER_OF(work, struct commit, work);
    if (c->close_fd >= 0)
        close(c->close_fd);
    if (c->create) {
        c->fd = open(c->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
        if (c->fd < 0) {
            c->status = -errno;
            return;
        }
        /* The new file's name must survive a crash before any record in it is acknowledged. */
        c->status = spool_fsync_dir(c->dir_path);
        if (c->status < 0)
            return;
    }
    struct iovec iov[2];
    int n = 0;
    if (c->create)
        iov[n++] = (struct iovec){ .iov_base = c->seghdr, .iov_len = SEGHDR_LEN };
    iov[n++] = (struct iovec){ .iov_base = c->batch.data, .iov_len = c->batch.len };
    c->status = pwrite_all(c->fd, iov, n, c->offset);
    if (c->status < 0 || !c->sync)
        return;
    uint64_t t0 = hg_time_mono_ns();
    if (fdatasync(c->fd) < 0)
        c->status = -errno;
    c->fsync_seconds = (double)(hg_time_mono_ns() - t0) / 1e9;
}

static void commit_done(uv_work_t *work, int uvstatus)
{
    struct commit *c = HG_CONTAINER_OF(work, struct commit, work);
    struct hg_spool *s = c->spool;
    struct segment *seg = c->seg;
    int status = uvstatus < 0 ? uvstatus : c->status;
    uint32_t slot = seg->slot;

    s->inflight = NULL;
    if (c->create) {
        seg->fd = c->fd;
        seg->on_disk = c->fd >= 0;
    }
    if (status == 0 && c->sync && s->on_fsync)
        s->on_fsync(s->on_fsync_arg, c->fsync_seconds);
    if (status < 0) {
        /* Bytes after a failed write or fsync cannot be trusted (a torn record would hide every
         * later one from recovery, and a failed fsync may have dropped dirty pages): move on. */
        seg->broken = true;
        hg_warn(NULL, "spool: write failed", "path", seg->path, "error", hg_strerror(status), NULL);
    }
    s->io_error = status;

    /* Settle all accounting before any callback, which may release, append or close. */
    for (size_t i = 0; i < c->batch.nwaiters; i++) {
        struct waiter *w = &c->batch.waiters[i];
        s->pending_bytes -= w->len;
        if (status == 0) {
            seg->lens[w->idx] = w->len;
            seg->live++;
            s->live_records++;
            s->live_bytes += w->len;
        }
    }
    /*
     * Start the next batch (what arrived during this fsync) before answering this one: its write
     * and fdatasync then run in the threadpool while the loop thread does the callbacks' CPU work
     * (answers, drain). Appends and releases the callbacks make queue for the batch after it.
     */
    struct batch done = c->batch;
    free(c);
    spool_schedule_commit(s, true);
    for (size_t i = 0; i < done.nwaiters; i++) {
        struct waiter *w = &done.waiters[i];
        w->cb(w->arg, status, status == 0 ? ((uint64_t)slot << 32 | w->idx) : 0);
    }
    batch_recycle(&s->spare, &done);
    maybe_finish(s);
}

/* Does the pending batch need a new segment? The current one's size is its logical write offset. */
static bool must_rotate(const struct hg_spool *s)
{
    const struct segment *cur = s->cur;
    return cur == NULL || cur->broken
           || (cur->size > SEGHDR_LEN && cur->size + s->pending.len > s->segment_bytes)
           || (uint64_t)cur->nrecords + s->pending.nwaiters > UINT32_MAX;
}

/* Hand the pending batch to the threadpool, rotating to a new segment first when needed. */
static void start_commit(struct hg_spool *s)
{
    bool rotate = must_rotate(s);
    struct commit *c = hg_xcalloc(1, sizeof(*c));
    c->spool = s;
    c->batch = s->pending;
    memset(&s->pending, 0, sizeof(s->pending));
    c->close_fd = -1;
    c->sync = c->batch.nwaiters > 0;

    struct segment *cur = s->cur;
    if (rotate) {
        struct segment *seg;
        /* spool_schedule_commit never lets a rotation start while the preparation runs. */
        struct prep *p = s->prep_busy ? NULL : s->prep;
        if (p) {
            /* The prepared file is complete and durable under its name: just write into it. */
            s->prep = NULL;
            seg = spool_segment_new(s, s->worker, s->own_dir, p->seq, p->uid);
            seg->fd = p->fd;
            p->fd = -1;
            seg->on_disk = true;
            prep_free(p);
        } else {
            /* No prepared segment (its preparation failed): a plain one, created by the commit. */
            seg = spool_segment_new(s, s->worker, s->own_dir, s->next_seq++, hg_random_u64());
            frame_header(c->seghdr, REC_SEGMENT, SEGHDR_LEN, 0, hg_time_now_ns());
            put64(c->seghdr + HDR_LEN, seg->uid);
            put64(c->seghdr + HDR_LEN + 8, seg->seq);
            put32(c->seghdr + HDR_LEN + 16, (uint32_t)s->worker);
            put32(c->seghdr + HDR_LEN + 20, 0);
            frame_seal(c->seghdr, SEGHDR_LEN);
            c->create = true;
            c->path = seg->path;
            c->dir_path = s->own_dir;
        }
        seg->size = SEGHDR_LEN;
        s->cur = seg;
        if (cur) {
            c->close_fd = cur->fd;
            cur->fd = -1;
            maybe_delete(s, cur);
        }
        prep_start(s);
    }
    c->seg = s->cur;
    c->fd = s->cur->fd;
    /* A new file is written from 0 with the segment header in front of the batch. */
    c->offset = c->create ? 0 : s->cur->size;
    uint64_t base = s->cur->size; /* where the batch lands (after the header of a new file) */
    s->cur->size += c->batch.len;
    for (size_t i = 0; i < c->batch.nwaiters; i++) {
        struct waiter *w = &c->batch.waiters[i];
        w->idx = spool_segment_next_index(s->cur);
        s->cur->offs[w->idx] = base + w->pos;
    }

    s->inflight = c;
    /* Cannot fail: uv_queue_work only rejects a NULL work callback. */
    int rc = uv_queue_work(s->loop, &c->work, commit_work, commit_done);
    if (rc < 0)
        abort();
}

static void on_commit_timer(uv_timer_t *t)
{
    struct hg_spool *s = HG_CONTAINER_OF(t, struct hg_spool, timer);
    s->timer_armed = false;
    spool_schedule_commit(s, true);
}

/*
 * Start a commit if one can start. Appends wait for the timer (commit_delay_us, at least until
 * the next loop iteration) so a burst shares one fsync; after a commit completes (`now`), what
 * queued meanwhile has already waited and goes at once.
 */
void spool_schedule_commit(struct hg_spool *s, bool now)
{
    if (s->inflight || s->pending.len == 0 || s->finishing)
        return;
    if (s->prep_busy && must_rotate(s)) {
        /* prep_done starts it: segments are used in sequence order. */
        s->prep_waited = true;
        return;
    }
    if (now || s->closing) {
        if (s->timer_armed) {
            uv_timer_stop(&s->timer);
            s->timer_armed = false;
        }
        start_commit(s);
        return;
    }
    if (s->timer_armed)
        return;
    uv_timer_start(&s->timer, on_commit_timer, (s->commit_delay_us + 999) / 1000, 0);
    s->timer_armed = true;
}

/* ---- public: append, release, stats ---- */

int hg_spool_append(struct hg_spool *s, const struct hg_record *rec, hg_spool_append_cb cb, void *arg)
{
    if (s == NULL || rec == NULL || cb == NULL)
        return HG_ERR_INVALID;
    if (s->closing)
        return HG_ERR_CLOSED;
    if ((rec->headers == NULL && rec->headers_len) || (rec->body == NULL && rec->body_len))
        return HG_ERR_INVALID;

    const char *field[DATA_FIELDS] = { rec->request_id, rec->tenant, rec->provider, rec->headers, rec->body };
    size_t flen[DATA_FIELDS] = {
        rec->request_id ? strlen(rec->request_id) : 0,
        rec->tenant ? strlen(rec->tenant) : 0,
        rec->provider ? strlen(rec->provider) : 0,
        rec->headers_len,
        rec->body_len,
    };
    /* Each term is clamped so the sum cannot wrap. */
    uint64_t total = HDR_LEN;
    for (int i = 0; i < DATA_FIELDS; i++)
        total += 4 + HG_MIN(flen[i], (size_t)RECORD_MAX + 1);
    if (total > s->max_bytes || s->live_bytes + s->pending_bytes > s->max_bytes - total)
        return HG_ERR_FULL;
    if (total > RECORD_MAX)
        return HG_ERR_TOO_BIG;

    pending_adopt_spare(s);
    size_t at = s->pending.len;
    char *p = batch_reserve(&s->pending, (size_t)total);
    frame_header(p, REC_DATA, (uint32_t)total, rec->received_at_ns, hg_time_now_ns());
    size_t pos = HDR_LEN;
    for (int i = 0; i < DATA_FIELDS; i++) {
        put32(p + pos, (uint32_t)flen[i]);
        pos += 4;
        if (flen[i])
            memcpy(p + pos, field[i], flen[i]);
        pos += flen[i];
    }
    frame_seal(p, (uint32_t)total);
    s->pending.len += (size_t)total;

    struct waiter *w = batch_add_waiter(&s->pending);
    w->cb = cb;
    w->arg = arg;
    w->len = (uint32_t)total;
    w->idx = 0;
    w->pos = at;
    s->pending_bytes += total;
    spool_schedule_commit(s, false);
    return 0;
}

int hg_spool_release(struct hg_spool *s, uint64_t id)
{
    if (s == NULL)
        return HG_ERR_INVALID;
    if (s->finishing)
        return HG_ERR_CLOSED;
    struct segment *seg = spool_find_segment(s, (uint32_t)(id >> 32));
    uint32_t idx = (uint32_t)id;
    if (seg == NULL || idx >= seg->nrecords || seg->lens[idx] == 0)
        return HG_ERR_NOT_FOUND;

    uint32_t len = seg->lens[idx];
    seg->lens[idx] = 0;
    seg->live--;
    s->live_records--;
    s->live_bytes -= len;
    /* Advisory and unsynced: it rides with the next batch (or goes alone without fdatasync). */
    pending_adopt_spare(s);
    spool_batch_add_release(&s->pending, seg->uid, idx);
    maybe_delete(s, seg);
    spool_schedule_commit(s, false);
    return 0;
}

void hg_spool_stats(const struct hg_spool *s, uint64_t *records, uint64_t *bytes)
{
    if (records)
        *records = s->live_records;
    if (bytes)
        *bytes = s->live_bytes;
}

int hg_spool_writable(const struct hg_spool *s)
{
    if (s->closing)
        return HG_ERR_CLOSED;
    if (s->io_error < 0)
        return s->io_error;
    if (s->live_bytes + s->pending_bytes >= s->max_bytes)
        return HG_ERR_FULL;
    return 0;
}

/* ---- close ---- */

void spool_free(struct hg_spool *s)
{
    for (size_t i = 0; i < s->nsegs; i++)
        segment_free(s->segs[i]);
    free(s->segs);
    if (s->prep)
        prep_free(s->prep);
    batch_free(&s->pending);
    batch_free(&s->spare);
    free(s->recov);
    if (s->backlog_fd >= 0)
        close(s->backlog_fd);
    free(s->dir);
    free(s->own_dir);
    free(s->quarantine_dir);
    free(s);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct hg_spool *s = HG_CONTAINER_OF((uv_timer_t *)h, struct hg_spool, timer);
    hg_spool_close_cb cb = s->close_cb;
    void *arg = s->close_arg;
    spool_free(s);
    if (cb)
        cb(arg);
}

static void on_fd_closed(uv_fs_t *req)
{
    struct hg_spool *s = HG_CONTAINER_OF(req, struct hg_spool, close_req);
    uv_fs_req_cleanup(req);
    uv_close((uv_handle_t *)&s->timer, on_timer_closed);
}

/* Once nothing is queued, written, prepared or being deleted: close the segment fd, then the timer. */
static void maybe_finish(struct hg_spool *s)
{
    if (!s->closing || s->finishing || s->inflight || s->pending.len > 0 || s->prep_busy || s->reads > 0)
        return;
    if (s->prep)
        prep_drop(s);
    if (s->unlinks > 0)
        return;
    s->finishing = true;
    if (s->cur && s->cur->fd >= 0) {
        int fd = s->cur->fd;
        s->cur->fd = -1;
        if (uv_fs_close(s->loop, &s->close_req, fd, on_fd_closed) == 0)
            return;
    }
    uv_close((uv_handle_t *)&s->timer, on_timer_closed);
}

void spool_maybe_finish(struct hg_spool *s)
{
    maybe_finish(s);
}

void hg_spool_close(struct hg_spool *s, hg_spool_close_cb cb, void *arg)
{
    if (s == NULL || s->closing)
        return;
    s->closing = true;
    s->close_cb = cb;
    s->close_arg = arg;
    spool_schedule_commit(s, true);
    maybe_finish(s);
}

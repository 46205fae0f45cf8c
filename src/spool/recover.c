/*
 * Start-up recovery of the spool (hg_spool_open): scan every segment of this worker and of the
 * orphaned workers it adopts, check each record's framing and CRC, copy a torn or corrupt tail to
 * quarantine and cut it off, apply the release records found anywhere (re-noting those whose only
 * copy is in a segment about to be deleted), and index the live records that
 * hg_spool_recovered_next then hands out. The format is in docs/spool.md; spool.c writes it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/common.h"
#include "core/err.h"
#include "core/log.h"
#include "core/str.h"
#include "spool/spool.h"
#include "spool/spool_internal.h"

#define COPY_CHUNK      65536

/* A data record found at recovery, in order, for hg_spool_recovered_next. */
struct recovered {
    uint32_t slot;
    uint32_t idx;
    uint64_t offset;
    uint32_t len;
};

/* A release record found at recovery; `holder` is the slot of the segment that contains it. */
struct found_release {
    uint64_t uid;
    uint32_t idx;
    uint32_t holder;
};

/* ---- recovery ---- */

/* State of one hg_spool_open scan; freed when open returns. */
struct scan {
    char *buf;               /* one record at a time */
    size_t cap;
    struct found_release *rel;
    size_t nrel;
    size_t relcap;
};

static int read_exact(int fd, void *buf, size_t n, uint64_t off)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, (char *)buf + done, n - done, (off_t)(off + done));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            return HG_ERR_CORRUPT;
        done += (size_t)r;
    }
    return 0;
}

static int write_exact(int fd, const void *buf, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, (const char *)buf + done, n - done);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        done += (size_t)w;
    }
    return 0;
}

/* Copy bytes [off, end) of a segment to <dir>/quarantine/<worker>-<seq>-<off>.bad, durably. */
static int quarantine_tail(struct hg_spool *s, int dir_worker, uint64_t seq, int fd, uint64_t off, uint64_t end,
                           char **qpath_out)
{
    char *qpath = spool_path_fmt("%s/%d-%016" PRIx64 "-%" PRIu64 ".bad", s->quarantine_dir, dir_worker, seq, off);
    char *chunk = hg_xmalloc(COPY_CHUNK);
    int rc = 0;
    int qfd = open(qpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (qfd < 0) {
        rc = -errno;
        goto out;
    }
    for (uint64_t pos = off; pos < end;) {
        size_t n = (size_t)HG_MIN((uint64_t)COPY_CHUNK, end - pos);
        rc = read_exact(fd, chunk, n, pos);
        if (rc == 0)
            rc = write_exact(qfd, chunk, n);
        if (rc < 0)
            goto out;
        pos += n;
    }
    if (fsync(qfd) < 0) {
        rc = -errno;
        goto out;
    }
    rc = spool_fsync_dir(s->quarantine_dir);
out:
    if (qfd >= 0)
        close(qfd);
    free(chunk);
    *qpath_out = qpath;
    return rc;
}

static void recovered_add(struct hg_spool *s, uint32_t slot, uint32_t idx, uint64_t off, uint32_t len)
{
    if (s->nrecov == s->recov_cap && s->recov_pos > 0) {
        /* Full, with records already taken at the front: reuse their room before growing. */
        s->nrecov -= s->recov_pos;
        memmove(s->recov, s->recov + s->recov_pos, s->nrecov * sizeof(*s->recov));
        s->recov_pos = 0;
    }
    if (s->nrecov == s->recov_cap) {
        s->recov_cap = s->recov_cap ? s->recov_cap * 2 : 64;
        s->recov = hg_xrealloc(s->recov, s->recov_cap * sizeof(*s->recov));
    }
    s->recov[s->nrecov++] = (struct recovered){ .slot = slot, .idx = idx, .offset = off, .len = len };
}

/*
 * Check one record at `off` of a `size`-byte file: framing, CRC, and a payload that matches its
 * type. Leaves the record in sc->buf. 0, HG_ERR_CORRUPT, or an I/O error.
 */
static int read_record(struct scan *sc, int fd, uint64_t off, uint64_t size, uint32_t *total_out)
{
    if (size - off < HDR_LEN)
        return HG_ERR_CORRUPT;
    char hdr[HDR_LEN];
    int rc = read_exact(fd, hdr, HDR_LEN, off);
    if (rc < 0)
        return rc;
    uint32_t total = get32(hdr + OFF_LEN);
    uint8_t type = (uint8_t)hdr[OFF_TYPE];
    if (get32(hdr + OFF_MAGIC) != SPOOL_MAGIC || hdr[OFF_VERSION] != SPOOL_VERSION)
        return HG_ERR_CORRUPT;
    if (total < HDR_LEN || total > RECORD_MAX || total > size - off)
        return HG_ERR_CORRUPT;
    if ((type == REC_SEGMENT && total != SEGHDR_LEN) || (type == REC_RELEASE && total != RELEASE_LEN)
        || (type != REC_SEGMENT && type != REC_RELEASE && type != REC_DATA))
        return HG_ERR_CORRUPT;
    if (sc->cap < total) {
        sc->cap = total;
        sc->buf = hg_xrealloc(sc->buf, sc->cap);
    }
    memcpy(sc->buf, hdr, HDR_LEN);
    rc = read_exact(fd, sc->buf + HDR_LEN, total - HDR_LEN, off + HDR_LEN);
    if (rc < 0)
        return rc;
    if (spool_record_crc(sc->buf, total) != get32(sc->buf + OFF_CRC))
        return HG_ERR_CORRUPT;
    if (type == REC_DATA) {
        struct span f[DATA_FIELDS];
        if (spool_decode_data(sc->buf, total, f) < 0)
            return HG_ERR_CORRUPT;
    }
    *total_out = total;
    return 0;
}

/*
 * End of the non-zero bytes in [off, size): `off` itself when they are all zero, i.e. the clean
 * end of a prepared segment. 0 or an I/O error.
 */
static int nonzero_end(int fd, uint64_t off, uint64_t size, uint64_t *end)
{
    char *chunk = hg_xmalloc(COPY_CHUNK);
    int rc = 0;
    *end = off;
    for (uint64_t pos = off; pos < size;) {
        size_t n = (size_t)HG_MIN((uint64_t)COPY_CHUNK, size - pos);
        rc = read_exact(fd, chunk, n, pos);
        if (rc < 0)
            break;
        for (size_t i = n; i > 0; i--) {
            if (chunk[i - 1] != 0) {
                *end = pos + i;
                break;
            }
        }
        pos += n;
    }
    free(chunk);
    return rc;
}

/* Scan one segment file; index its data records and collect its releases; cut a bad tail. */
static int recover_segment(struct hg_spool *s, struct scan *sc, int dir_worker, const char *dir_path, uint64_t seq)
{
    char *path = spool_path_fmt("%s/%016" PRIx64 ".seg", dir_path, seq);
    struct segment *seg = NULL;
    uint64_t off = 0;
    int bad = 0;
    int rc = 0;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        hg_error(NULL, "spool: cannot open segment", "path", path, "error", hg_strerror(rc), NULL);
        goto out;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        goto out;
    }
    uint64_t size = (uint64_t)st.st_size;

    while (off < size) {
        uint32_t total = 0;
        bad = read_record(sc, fd, off, size, &total);
        if (bad == 0) {
            uint8_t type = (uint8_t)sc->buf[OFF_TYPE];
            /* A segment is only usable with its header first: release records name it by uid. */
            if ((off == 0) != (type == REC_SEGMENT))
                bad = HG_ERR_CORRUPT;
        }
        if (bad == HG_ERR_CORRUPT)
            break;
        if (bad < 0) {
            rc = bad;
            hg_error(NULL, "spool: cannot read segment", "path", path, "error", hg_strerror(rc), NULL);
            goto out;
        }
        switch ((uint8_t)sc->buf[OFF_TYPE]) {
        case REC_SEGMENT:
            seg = spool_segment_new(s, dir_worker, dir_path, seq, get64(sc->buf + HDR_LEN));
            seg->on_disk = true;
            break;
        case REC_DATA: {
            uint32_t idx = spool_segment_next_index(seg);
            seg->lens[idx] = total;
            seg->offs[idx] = off;
            recovered_add(s, seg->slot, idx, off, total);
            break;
        }
        case REC_RELEASE:
            if (sc->nrel == sc->relcap) {
                sc->relcap = sc->relcap ? sc->relcap * 2 : 64;
                sc->rel = hg_xrealloc(sc->rel, sc->relcap * sizeof(*sc->rel));
            }
            sc->rel[sc->nrel++] = (struct found_release){
                .uid = get64(sc->buf + HDR_LEN),
                .idx = get32(sc->buf + HDR_LEN + 8),
                .holder = seg->slot,
            };
            break;
        }
        off += total;
    }

    bool unsaved = false;
    uint64_t end = off;
    if (off < size && (rc = nonzero_end(fd, off, size, &end)) < 0) {
        hg_error(NULL, "spool: cannot read segment", "path", path, "error", hg_strerror(rc), NULL);
        goto out;
    }
    /* Zeros alone after the last good record: the unused rest of a prepared segment. */
    if (off < end) {
        /* Torn or corrupt tail: keep a copy (up to its last non-zero byte), then cut the segment
         * at the last good record. */
        char *qpath = NULL;
        char offs[24], lens[24];
        snprintf(offs, sizeof(offs), "%" PRIu64, off);
        snprintf(lens, sizeof(lens), "%" PRIu64, end - off);
        int qrc = quarantine_tail(s, dir_worker, seq, fd, off, end, &qpath);
        if (qrc == 0 && ftruncate(fd, (off_t)off) < 0)
            qrc = -errno;
        if (qrc == 0 && fdatasync(fd) < 0)
            qrc = -errno;
        if (qrc == 0) {
            hg_warn(NULL, "spool: cut bad segment tail", "path", path, "offset", offs, "bytes", lens,
                    "quarantine", qpath, NULL);
        } else {
            /* Never destroy what could not be saved: leave the file as it is; no append ever
             * goes after recovered data, so only this start-up's reading stops early. */
            hg_error(NULL, "spool: cannot quarantine bad segment tail, left in place", "path", path,
                     "offset", offs, "error", hg_strerror(qrc), NULL);
            unsaved = true;
        }
        free(qpath);
    }
    if (seg) {
        seg->size = off;
        seg->pinned = unsaved;
    } else if (!unsaved && unlink(path) < 0)
        hg_warn(NULL, "spool: cannot delete empty segment", "path", path, "error", hg_strerror(-errno), NULL);
out:
    if (fd >= 0)
        close(fd);
    free(path);
    return rc;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* "<16 hex digits><suffix>" → its sequence number: ".seg" for segments, ".zero" for one being prepared. */
static bool parse_segment_name(const char *name, const char *suffix, uint64_t *seq)
{
    if (strlen(name) != 16 + strlen(suffix) || strcmp(name + 16, suffix) != 0)
        return false;
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char c = name[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            return false;
        v = v << 4 | (uint64_t)d;
    }
    *seq = v;
    return true;
}

/* Recover every segment of one worker directory, oldest first. *max_seq gets the highest seen. */
static int recover_dir(struct hg_spool *s, struct scan *sc, int dir_worker, const char *dir_path, uint64_t *max_seq)
{
    uint64_t *seqs = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    DIR *d = opendir(dir_path);
    if (d == NULL)
        return -errno;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        uint64_t seq;
        if (parse_segment_name(de->d_name, ".zero", &seq)) {
            /* A crash interrupted its preparation: it never held a record. */
            char *zpath = spool_path_fmt("%s/%s", dir_path, de->d_name);
            if (unlink(zpath) < 0 && errno != ENOENT)
                hg_warn(NULL, "spool: cannot delete unfinished segment", "path", zpath,
                        "error", hg_strerror(-errno), NULL);
            free(zpath);
            continue;
        }
        if (!parse_segment_name(de->d_name, ".seg", &seq))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            seqs = hg_xrealloc(seqs, cap * sizeof(*seqs));
        }
        seqs[n++] = seq;
    }
    closedir(d);
    if (n)
        qsort(seqs, n, sizeof(*seqs), cmp_u64);
    for (size_t i = 0; i < n; i++) {
        rc = recover_segment(s, sc, dir_worker, dir_path, seqs[i]);
        if (rc < 0)
            goto out;
        if (max_seq && seqs[i] > *max_seq)
            *max_seq = seqs[i];
    }
out:
    free(seqs);
    return rc;
}

/* "w<j>" without leading zeros → j. */
static bool parse_worker_dir(const char *name, int *j)
{
    int64_t v;
    if (name[0] != 'w' || name[1] < '0' || name[1] > '9' || (name[1] == '0' && name[2] != '\0'))
        return false;
    if (hg_str_to_i64(name + 1, 0, INT_MAX, &v) < 0)
        return false;
    *j = (int)v;
    return true;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return x < y ? -1 : x > y;
}

/* Directories of workers that no longer exist and fall to this one: j >= nworkers, j % nworkers == worker. */
static int recover_orphans(struct hg_spool *s, struct scan *sc)
{
    int *js = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    DIR *d = opendir(s->dir);
    if (d == NULL)
        return -errno;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        int j;
        if (!parse_worker_dir(de->d_name, &j) || j < s->nworkers || j % s->nworkers != s->worker)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 4;
            js = hg_xrealloc(js, cap * sizeof(*js));
        }
        js[n++] = j;
    }
    closedir(d);
    if (n)
        qsort(js, n, sizeof(*js), cmp_int);
    for (size_t i = 0; i < n; i++) {
        char *path = spool_path_fmt("%s/w%d", s->dir, js[i]);
        char num[16];
        snprintf(num, sizeof(num), "%d", js[i]);
        size_t before = s->nsegs;
        rc = recover_dir(s, sc, js[i], path, NULL);
        if (rc == 0 && s->nsegs > before)
            hg_info(NULL, "spool: adopted orphan segments", "from_worker", num, NULL);
        free(path);
        if (rc < 0)
            goto out;
    }
out:
    free(js);
    return rc;
}

static int cmp_seg_uid(const void *a, const void *b)
{
    const struct segment *x = *(struct segment *const *)a, *y = *(struct segment *const *)b;
    return x->uid < y->uid ? -1 : x->uid > y->uid;
}

static struct segment *find_by_uid(struct segment **by_uid, size_t n, uint64_t uid)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (by_uid[mid]->uid == uid)
            return by_uid[mid];
        if (by_uid[mid]->uid < uid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/*
 * Apply the releases found anywhere, count what is live, delete segments left with nothing live,
 * and re-note the releases whose only copy was in a deleted segment (so the next start still
 * skips those records).
 */
static void settle_recovery(struct hg_spool *s, struct scan *sc)
{
    size_t nsegs = s->nsegs;
    struct segment **by_uid = hg_xmalloc(nsegs * sizeof(*by_uid));
    if (nsegs) {
        memcpy(by_uid, s->segs, nsegs * sizeof(*by_uid));
        qsort(by_uid, nsegs, sizeof(*by_uid), cmp_seg_uid);
    }
    for (size_t i = 0; i < sc->nrel; i++) {
        struct segment *seg = find_by_uid(by_uid, nsegs, sc->rel[i].uid);
        if (seg && sc->rel[i].idx < seg->nrecords)
            seg->lens[sc->rel[i].idx] = 0;
    }
    free(by_uid);

    for (size_t i = 0; i < s->nsegs; i++) {
        struct segment *seg = s->segs[i];
        for (uint32_t k = 0; k < seg->nrecords; k++) {
            if (seg->lens[k]) {
                seg->live++;
                s->live_records++;
                s->live_bytes += seg->lens[k];
            }
        }
    }

    /* Holders are looked up by slot, so note re-emissions before any segment is freed. */
    for (size_t i = 0; i < sc->nrel; i++) {
        struct segment *holder = spool_find_segment(s, sc->rel[i].holder);
        if (holder && holder->live > 0)
            continue;
        for (size_t k = 0; k < s->nsegs; k++) {
            struct segment *seg = s->segs[k];
            if (seg->uid == sc->rel[i].uid && seg->live > 0 && sc->rel[i].idx < seg->nrecords)
                spool_batch_add_release(&s->pending, seg->uid, sc->rel[i].idx);
        }
    }

    for (size_t i = 0; i < s->nsegs;) {
        struct segment *seg = s->segs[i];
        if (seg->live > 0 || seg->pinned) {
            i++;
            continue;
        }
        if (unlink(seg->path) < 0 && errno != ENOENT)
            hg_warn(NULL, "spool: cannot delete released segment", "path", seg->path,
                    "error", hg_strerror(-errno), NULL);
        spool_segment_forget(s, seg);
    }
}

int hg_spool_open(uv_loop_t *loop, const struct hg_spool_opts *opts, struct hg_spool **out)
{
    if (loop == NULL || opts == NULL || out == NULL || opts->dir == NULL || opts->dir[0] == '\0'
        || opts->nworkers < 1 || opts->worker < 0 || opts->worker >= opts->nworkers
        || opts->max_bytes == 0 || opts->segment_bytes == 0)
        return HG_ERR_INVALID;

    struct scan sc = { 0 };
    struct hg_spool *s = hg_xcalloc(1, sizeof(*s));
    int rc;
    s->loop = loop;
    s->backlog_fd = -1;
    s->dir = hg_xstrdup(opts->dir);
    s->own_dir = spool_path_fmt("%s/w%d", opts->dir, opts->worker);
    s->quarantine_dir = spool_path_fmt("%s/quarantine", opts->dir);
    s->worker = opts->worker;
    s->nworkers = opts->nworkers;
    s->max_bytes = opts->max_bytes;
    s->segment_bytes = opts->segment_bytes;
    s->commit_delay_us = opts->commit_delay_us;
    s->on_fsync = opts->on_fsync;
    s->on_fsync_arg = opts->on_fsync_arg;

    if ((rc = spool_mkdir_p(s->own_dir)) < 0 || (rc = spool_mkdir_p(s->quarantine_dir)) < 0) {
        hg_error(NULL, "spool: cannot create directory", "dir", s->dir, "error", hg_strerror(rc), NULL);
        goto fail;
    }
    uint64_t max_seq = 0;
    if ((rc = recover_dir(s, &sc, s->worker, s->own_dir, &max_seq)) < 0)
        goto fail;
    if ((rc = recover_orphans(s, &sc)) < 0)
        goto fail;
    settle_recovery(s, &sc);
    /* New appends always start a fresh segment after every recovered one. */
    s->next_seq = max_seq + 1;
    /* The first segment is prepared now, so the first appends already overwrite zeros. */
    struct prep *p = spool_prep_new(s);
    spool_prep_run(p);
    if (spool_prep_check(s, p, 0))
        s->prep = p;

    uv_timer_init(loop, &s->timer);
    if (s->pending.len > 0)
        spool_schedule_commit(s, false);

    char nrec[24], nbytes[24];
    snprintf(nrec, sizeof(nrec), "%" PRIu64, s->live_records);
    snprintf(nbytes, sizeof(nbytes), "%" PRIu64, s->live_bytes);
    hg_info(NULL, "spool: recovered", "dir", s->own_dir, "records", nrec, "bytes", nbytes, NULL);
    free(sc.buf);
    free(sc.rel);
    *out = s;
    return 0;
fail:
    free(sc.buf);
    free(sc.rel);
    spool_free(s);
    return rc;
}

int hg_spool_defer(struct hg_spool *s, uint64_t id)
{
    if (s->closing)
        return HG_ERR_CLOSED;
    uint32_t idx = (uint32_t)id;
    struct segment *seg = spool_find_segment(s, (uint32_t)(id >> 32));
    if (seg == NULL || idx >= seg->nrecords || seg->lens[idx] == 0)
        return HG_ERR_NOT_FOUND;
    recovered_add(s, seg->slot, idx, seg->offs[idx], seg->lens[idx]);
    return 0;
}

bool hg_spool_backlog_empty(const struct hg_spool *s)
{
    return s->recov_pos == s->nrecov;
}

/* A read fd for seg, kept for the next record of the same segment (a backlog reads in order). */
static int backlog_fd(struct hg_spool *s, const struct segment *seg)
{
    if (s->backlog_fd >= 0 && s->backlog_slot == seg->slot)
        return s->backlog_fd;
    if (s->backlog_fd >= 0)
        close(s->backlog_fd);
    s->backlog_fd = open(seg->path, O_RDONLY | O_CLOEXEC);
    s->backlog_slot = seg->slot;
    return s->backlog_fd >= 0 ? s->backlog_fd : -errno;
}

/* A framed data record read whole (len bytes) into a new entry with id `id`: checks its length,
 * CRC and fields. Uses nothing of the spool: also runs on the threadpool (hg_spool_read_async). */
static int entry_decode(const char *rec, uint32_t len, uint64_t id, struct hg_spool_entry **out)
{
    struct span f[DATA_FIELDS];
    if (get32(rec + OFF_LEN) != len || spool_record_crc(rec, len) != get32(rec + OFF_CRC)
        || spool_decode_data(rec, len, f) < 0)
        return HG_ERR_CORRUPT;
    /* One allocation: the entry and its five fields, each NUL-terminated (headers and body may
     * hold NUL bytes: their lengths say where they end). */
    size_t total = 0;
    for (int i = 0; i < DATA_FIELDS; i++)
        total += (size_t)f[i].n + 1;
    struct hg_spool_entry *e = hg_xcalloc(1, sizeof(*e) + total);
    char *at = e->data;
    const char *dst[DATA_FIELDS];
    for (int i = 0; i < DATA_FIELDS; i++) {
        memcpy(at, f[i].p, f[i].n);
        at[f[i].n] = '\0';
        dst[i] = at;
        at += f[i].n + 1;
    }
    e->id = id;
    e->spooled_at_ns = get64(rec + OFF_SPOOLED);
    e->rec = (struct hg_record){
        .received_at_ns = get64(rec + OFF_RECEIVED),
        .request_id = dst[0],
        .tenant = dst[1],
        .provider = dst[2],
        .headers = dst[3],
        .headers_len = f[3].n,
        .body = dst[4],
        .body_len = f[4].n,
    };
    *out = e;
    return 0;
}

/* Read live record idx of seg (framed, len bytes at off) into a new entry. */
static int read_entry(struct hg_spool *s, struct segment *seg, uint32_t idx, uint64_t off, uint32_t len,
                       struct hg_spool_entry **out)
{
    char *rec = hg_xmalloc(len);
    int rc;
    int fd = backlog_fd(s, seg);
    if (fd < 0) {
        rc = fd;
        goto fail;
    }
    rc = read_exact(fd, rec, len, off);
    if (rc == 0)
        rc = entry_decode(rec, len, (uint64_t)seg->slot << 32 | idx, out);
    if (rc < 0)
        goto fail;
    free(rec);
    return 0;
fail:
    hg_error(NULL, "spool: cannot read record", "path", seg->path, "error", hg_strerror(rc), NULL);
    free(rec);
    return rc;
}

int hg_spool_recovered_next(struct hg_spool *s, struct hg_spool_entry **out)
{
    while (s->recov_pos < s->nrecov) {
        struct recovered *r = &s->recov[s->recov_pos++];
        if (s->recov_pos == s->nrecov)
            s->recov_pos = s->nrecov = 0; /* taken to the end: deferrals start at the front again */
        struct segment *seg = spool_find_segment(s, r->slot);
        if (seg == NULL || r->idx >= seg->nrecords || seg->lens[r->idx] == 0)
            continue;
        return read_entry(s, seg, r->idx, r->offset, r->len, out);
    }
    return HG_ERR_NOT_FOUND;
}

int hg_spool_read(struct hg_spool *s, uint64_t id, struct hg_spool_entry **out)
{
    uint32_t idx = (uint32_t)id;
    struct segment *seg = spool_find_segment(s, (uint32_t)(id >> 32));
    if (seg == NULL || idx >= seg->nrecords || seg->lens[idx] == 0)
        return HG_ERR_NOT_FOUND;
    return read_entry(s, seg, idx, seg->offs[idx], seg->lens[idx], out);
}

void hg_spool_entry_free(struct hg_spool_entry *e)
{
    free(e);
}

/* ---- asynchronous read-back, for a serving loop ---- */

int hg_spool_backlog_take(struct hg_spool *s, uint64_t *id, uint32_t *len)
{
    while (s->recov_pos < s->nrecov) {
        struct recovered *r = &s->recov[s->recov_pos++];
        if (s->recov_pos == s->nrecov)
            s->recov_pos = s->nrecov = 0; /* taken to the end: deferrals start at the front again */
        struct segment *seg = spool_find_segment(s, r->slot);
        if (seg == NULL || r->idx >= seg->nrecords || seg->lens[r->idx] == 0)
            continue;
        *id = (uint64_t)r->slot << 32 | r->idx;
        if (len)
            *len = r->len;
        return 0;
    }
    return HG_ERR_NOT_FOUND;
}

/* One record of an asynchronous read: where it is (copied: the job does not touch the spool),
 * and what came of it. */
struct read_item {
    uint64_t id;
    char *path;                    /* NULL: not live when asked (HG_ERR_NOT_FOUND) */
    uint64_t off;
    uint32_t len;
    int status;
    struct hg_spool_entry *e;
};

struct read_job {
    uv_work_t work;
    struct hg_spool *s;
    hg_spool_read_cb cb;
    void *arg;
    size_t n;
    struct read_item items[];
};

/* Threadpool: pread each record (one fd per run of the same segment), check and decode it. */
static void read_work(uv_work_t *w)
{
    struct read_job *j = HG_CONTAINER_OF(w, struct read_job, work);
    int fd = -1, open_err = 0;
    const char *open_path = NULL;
    for (size_t i = 0; i < j->n; i++) {
        struct read_item *it = &j->items[i];
        if (it->path == NULL) {
            it->status = HG_ERR_NOT_FOUND;
            continue;
        }
        if (open_path == NULL || strcmp(open_path, it->path) != 0) {
            if (fd >= 0)
                close(fd);
            fd = open(it->path, O_RDONLY | O_CLOEXEC);
            open_path = it->path;
            open_err = fd < 0 ? -errno : 0;
        }
        if (fd < 0) {
            it->status = open_err;
            continue;
        }
        char *rec = hg_xmalloc(it->len);
        it->status = read_exact(fd, rec, it->len, it->off);
        if (it->status == 0)
            it->status = entry_decode(rec, it->len, it->id, &it->e);
        free(rec);
    }
    if (fd >= 0)
        close(fd);
}

static void read_done(uv_work_t *w, int uvstatus)
{
    struct read_job *j = HG_CONTAINER_OF(w, struct read_job, work);
    struct hg_spool *s = j->s;
    s->reads--;
    for (size_t i = 0; i < j->n; i++) {
        struct read_item *it = &j->items[i];
        int status = uvstatus < 0 ? uvstatus : it->status;
        if (status < 0 && status != HG_ERR_NOT_FOUND)
            hg_error(NULL, "spool: cannot read record", "path", it->path ? it->path : "", "error",
                     hg_strerror(status), NULL);
        if (status < 0 && it->e != NULL) {
            hg_spool_entry_free(it->e);
            it->e = NULL;
        }
        j->cb(j->arg, it->id, status, it->e, i + 1 == j->n);
        free(it->path);
    }
    free(j);
    spool_maybe_finish(s);
}

int hg_spool_read_async(struct hg_spool *s, const uint64_t *ids, size_t n, hg_spool_read_cb cb, void *arg)
{
    if (n == 0 || ids == NULL || cb == NULL)
        return HG_ERR_INVALID;
    if (s->closing)
        return HG_ERR_CLOSED;
    struct read_job *j = hg_xcalloc(1, sizeof(*j) + n * sizeof(j->items[0]));
    j->s = s;
    j->cb = cb;
    j->arg = arg;
    j->n = n;
    for (size_t i = 0; i < n; i++) {
        struct read_item *it = &j->items[i];
        uint32_t idx = (uint32_t)ids[i];
        struct segment *seg = spool_find_segment(s, (uint32_t)(ids[i] >> 32));
        it->id = ids[i];
        if (seg == NULL || idx >= seg->nrecords || seg->lens[idx] == 0)
            continue; /* answered HG_ERR_NOT_FOUND, in its place */
        /* A live record's segment is not deleted (it still holds this record) while the job reads. */
        it->path = hg_xstrdup(seg->path);
        it->off = seg->offs[idx];
        it->len = seg->lens[idx];
    }
    /* uv_queue_work fails only without an after-work callback, never the case here. */
    if (uv_queue_work(s->loop, &j->work, read_work, read_done) != 0)
        abort();
    s->reads++;
    return 0;
}

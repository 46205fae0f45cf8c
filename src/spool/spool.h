/*
 * The spool: a per-worker write-ahead log that makes each webhook durable before it is answered.
 * Segment files `<dir>/w<worker>/<seq:016x>.seg`, written full of zeros ahead of use (so a commit's
 * fdatasync overwrites allocated blocks and changes no metadata); each record framed with magic,
 * length, CRC-32C, timestamps and metadata. Appends are batched (group commit): one write + one
 * fdatasync for all appends that arrived while the previous fsync ran; the write and the fsync run
 * on the libuv threadpool, never on the loop thread. Everything else is called on the owning
 * worker's loop.
 */
#ifndef HG_SPOOL_SPOOL_H
#define HG_SPOOL_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "spool/record.h"

struct hg_spool;

struct hg_spool_opts {
    const char *dir;            /* spool root; the worker's segments live in <dir>/w<worker> */
    int worker;                 /* this worker's index */
    int nworkers;               /* recovery also adopts <dir>/w<j> for j >= nworkers, j % nworkers == worker */
    uint64_t max_bytes;         /* quota over live record bytes (unreleased + pending); past it appends
                                 * fail with HG_ERR_FULL. Not a bound on disk use: segment files are
                                 * zero-filled to segment_bytes before use, so the segment being written
                                 * and the next one (prepared ahead) take 2 x segment_bytes whatever they
                                 * hold, and a segment stays until all its records are released */
    uint64_t segment_bytes;     /* segment file size: rotate to a new segment past it */
    uint64_t commit_delay_us;   /* wait up to this long for more appends before writing; 0 = at once
                                 * (still batches every append made in the same loop iteration) */
    /* Observer of each fdatasync's duration (seconds), called on the loop thread after it
     * completes, e.g. to feed spool_fsync_duration_seconds. May be NULL. */
    void (*on_fsync)(void *arg, double seconds);
    void *on_fsync_arg;
};

/* A record read back from the spool: one allocation holding `rec`'s strings; free with
 * hg_spool_entry_free. */
struct hg_spool_entry {
    uint64_t id;                /* pass to hg_spool_release */
    uint64_t spooled_at_ns;
    struct hg_record rec;       /* its strings point into data */
    char data[];
};

/* Fires once per accepted append: status 0 = durable (fsynced) with its id; <0 = not durable. */
typedef void (*hg_spool_append_cb)(void *arg, int status, uint64_t id);
/* Fires once when the spool is closed and all its handles are released. */
typedef void (*hg_spool_close_cb)(void *arg);

/*
 * Open (creating directories) and recover: scan every segment of this worker (and its orphans),
 * verify each record's CRC, cut a torn or corrupt tail (the bad bytes are copied to
 * <dir>/quarantine/ first, never silently deleted; zeros alone after the last record are the
 * clean end of a segment), and index every record not yet released. Then prepare (zero-fill) the
 * first segment to write. Runs synchronously; call before serving. 0 or a negative error.
 */
int hg_spool_open(uv_loop_t *loop, const struct hg_spool_opts *opts, struct hg_spool **out);

/*
 * Append one record. Returns HG_ERR_FULL (quota, or the record alone is bigger than the quota),
 * HG_ERR_TOO_BIG (record past the 64 MiB framing cap), HG_ERR_CLOSED (closing) or
 * HG_ERR_INVALID at once, and then `cb` never runs; returns 0 and `cb` runs exactly once, later,
 * after the record is fsynced (status 0, with its id) or failed (status <0: not durable).
 */
int hg_spool_append(struct hg_spool *s, const struct hg_record *rec, hg_spool_append_cb cb, void *arg);

/*
 * The record was handed on (its sink confirmed it): forget it. A segment whose records are all
 * released, and that is no longer being written, is deleted. Releases are also noted in the log
 * (without fsync) so a restart redelivers as few records as it can. 0, HG_ERR_NOT_FOUND (unknown
 * or already released id) or HG_ERR_CLOSED (close is finishing).
 */
int hg_spool_release(struct hg_spool *s, uint64_t id);

/*
 * Next record of the backlog not yet taken (nor released): first those found at recovery, in
 * append order (own segments, then adopted orphans), then those deferred with hg_spool_defer, in
 * the order deferred. *out is the caller's (hg_spool_entry_free). HG_ERR_NOT_FOUND when none is
 * left. Reads synchronously with pread (one fd kept per segment being read): for tools and tests;
 * a serving loop uses hg_spool_backlog_take + hg_spool_read_async, which never block it. On a read error or a CRC mismatch the error is
 * returned and that record is skipped for this run (it stays unreleased, so the next start
 * offers it again).
 */
int hg_spool_recovered_next(struct hg_spool *s, struct hg_spool_entry **out);
/*
 * The caller will not hold durable record `id` in memory: offer it again through
 * hg_spool_recovered_next, after the records already there (append order is kept when every
 * record is deferred while the backlog is not empty). It stays unreleased until
 * hg_spool_release. 0, HG_ERR_NOT_FOUND (unknown, released or not yet durable) or HG_ERR_CLOSED.
 */
int hg_spool_defer(struct hg_spool *s, uint64_t id);
/* Read live record `id` again (the caller dropped its copy and keeps only the id). *out as for
 * hg_spool_recovered_next. 0, HG_ERR_NOT_FOUND (unknown, released or not yet durable), or a read
 * / CRC error. Synchronous (pread): not on a serving loop, use hg_spool_read_async there. */
int hg_spool_read(struct hg_spool *s, uint64_t id, struct hg_spool_entry **out);

/*
 * Take the next record id of the backlog (hg_spool_recovered_next's order) without reading it:
 * 0 with *id (and *len, its framed length, when not NULL), or HG_ERR_NOT_FOUND. The caller reads
 * it with hg_spool_read_async; it stays unreleased meanwhile.
 */
int hg_spool_backlog_take(struct hg_spool *s, uint64_t *id, uint32_t *len);

/*
 * One record of an asynchronous read: `e` (the callback's to free, hg_spool_entry_free) with
 * status 0, or NULL with HG_ERR_NOT_FOUND (no longer live), a read error or HG_ERR_CORRUPT (CRC;
 * logged; the record stays unreleased, so the next start offers it again). `last` on the call for
 * the last id asked.
 */
typedef void (*hg_spool_read_cb)(void *arg, uint64_t id, int status, struct hg_spool_entry *e, bool last);
/*
 * Read live records `ids` (n >= 1, copied) on the libuv threadpool: pread, CRC check and decode
 * run there, never on the loop. Returns HG_ERR_INVALID / HG_ERR_CLOSED and `cb` never runs, or 0
 * and `cb` runs exactly n times, in the order of `ids`, later, from the loop (the last with
 * `last`). hg_spool_close waits for reads in flight.
 */
int hg_spool_read_async(struct hg_spool *s, const uint64_t *ids, size_t n, hg_spool_read_cb cb, void *arg);
/* Nothing left for hg_spool_recovered_next. */
bool hg_spool_backlog_empty(const struct hg_spool *s);
void hg_spool_entry_free(struct hg_spool_entry *e);

/* Live (durable, unreleased) records and their framed bytes, for metrics and /ready. */
void hg_spool_stats(const struct hg_spool *s, uint64_t *records, uint64_t *bytes);

/* 0 when appends can succeed now, else an error: HG_ERR_CLOSED, the last write/fsync error
 * (until a later batch succeeds), or HG_ERR_FULL at the quota. */
int hg_spool_writable(const struct hg_spool *s);

/* Finish pending appends (their callbacks run), close files, then `cb` (once; `s` is freed by
 * then). New appends fail with HG_ERR_CLOSED from the moment this is called. */
void hg_spool_close(struct hg_spool *s, hg_spool_close_cb cb, void *arg);

#endif

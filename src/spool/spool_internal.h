/*
 * Internal to src/spool: what the write path (spool.c) and start-up recovery (recover.c) share.
 * The record format's constants, the spool's structs, the little-endian helpers, and the spool.c
 * functions recovery calls. Not part of the public API (spool/spool.h).
 */
#ifndef HG_SPOOL_INTERNAL_H
#define HG_SPOOL_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "spool/spool.h"

#define SPOOL_MAGIC     0x50534748u /* "HGSP" read as little-endian */
#define SPOOL_VERSION   1
#define HDR_LEN         32u         /* fixed header of every record */
#define SEG_PAYLOAD     24u         /* uid u64, seq u64, worker u32, reserved u32 */
#define SEGHDR_LEN      (HDR_LEN + SEG_PAYLOAD)
#define RELEASE_PAYLOAD 16u         /* segment uid u64, record index u32, reserved u32 */
#define RELEASE_LEN     (HDR_LEN + RELEASE_PAYLOAD)
#define DATA_FIELDS     5           /* request_id, tenant, provider, headers, body */
#define RECORD_MAX      (64u << 20) /* framing cap: a length past it is corruption, not data */

/* Byte offsets inside the record header. */
#define OFF_MAGIC    0
#define OFF_TYPE     4
#define OFF_VERSION  5
#define OFF_LEN      8
#define OFF_CRC      12
#define OFF_RECEIVED 16
#define OFF_SPOOLED  24

enum rec_type {
    REC_SEGMENT = 1, /* first record of every segment: names it for release records */
    REC_DATA = 2,    /* one webhook */
    REC_RELEASE = 3, /* advisory: a data record was handed on */
};

/* One segment file, recovered or written in this run. */
struct segment {
    uint32_t slot;      /* per-run number, the upper half of the record ids it hands out */
    uint64_t uid;       /* random, written in its REC_SEGMENT header: what release records name */
    uint64_t seq;       /* from the file name; orders segments of one directory */
    int dir_worker;     /* which <dir>/w<j> holds it (j != worker for adopted orphans) */
    char *path;
    uint64_t size;      /* bytes written or scheduled to be written */
    uint32_t nrecords;  /* data records: the next record index */
    uint32_t *lens;     /* per index: framed length while live, 0 when released/failed/in flight */
    uint64_t *offs;     /* per index: the record's offset in the file (for the backlog's reads) */
    uint32_t lens_cap;  /* slots in lens and offs */
    uint32_t live;      /* durable, unreleased data records */
    int fd;             /* write fd of the current segment, else -1 */
    bool on_disk;       /* its file exists (recovered, or created by us): only then is it deleted */
    bool pinned;        /* holds a bad tail that could not be quarantined: never delete it */
    bool broken;        /* a write or fsync on it failed: never write to it again */
};

/* An append waiting for its batch's fsync. */
struct waiter {
    hg_spool_append_cb cb;
    void *arg;
    uint32_t len;
    uint32_t idx;
    size_t pos;         /* the record's offset in its batch's data */
};

/* Encoded records plus the appends to answer once they are durable. */
struct batch {
    char *data;
    size_t len;
    size_t cap;
    struct waiter *waiters;
    size_t nwaiters;
    size_t waiters_cap;
};

/* Only pointers to these here: their layout is the business of one file each. */
struct commit;    /* spool.c: the batch being written */
struct prep;      /* spool.c: the next segment, prepared ahead */
struct recovered; /* recover.c: a data record found at recovery */

struct hg_spool {
    uv_loop_t *loop;
    char *dir;
    char *own_dir;
    char *quarantine_dir;
    int worker;
    int nworkers;
    uint64_t max_bytes;
    uint64_t segment_bytes;
    uint64_t commit_delay_us;
    void (*on_fsync)(void *arg, double seconds);
    void *on_fsync_arg;

    struct segment **segs; /* sorted by slot, so ids find their segment by binary search */
    size_t nsegs;
    size_t segs_cap;
    uint32_t next_slot;
    uint64_t next_seq;
    struct segment *cur;   /* the segment new batches go to; NULL until the first batch */
    struct prep *prep;     /* the next segment, prepared ahead (NULL: none, or it failed) */
    bool prep_busy;        /* prep's job is running on the threadpool */
    bool prep_waited;      /* a commit waits for that job (it needs to rotate) */

    struct batch pending;  /* appends and releases that arrived since the last commit started */
    struct batch spare;    /* a finished batch's empty buffers, reused by the next pending one */
    struct commit *inflight;
    uv_timer_t timer;
    bool timer_armed;

    uint64_t live_records;
    uint64_t live_bytes;
    uint64_t pending_bytes; /* appended, not yet durable or failed: counts against the quota */
    int io_error;           /* status of the last commit: 0 or the error that broke it */

    /* The backlog hg_spool_recovered_next offers: records found at recovery, then records the
     * caller deferred (hg_spool_defer), in that order. */
    struct recovered *recov;
    size_t nrecov;
    size_t recov_cap;
    size_t recov_pos;
    int backlog_fd;         /* read fd of the segment the backlog last read, or -1 */
    uint32_t backlog_slot;  /* ... and that segment's slot */

    unsigned unlinks;       /* uv_fs_unlink requests in flight */
    unsigned reads;         /* hg_spool_read_async jobs in flight: close waits for them */
    bool closing;
    bool finishing;
    hg_spool_close_cb close_cb;
    void *close_arg;
    uv_fs_t close_req;
};

/* ---- little-endian encoding (inline: they sit on every append's path) ---- */

static inline void put32(char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (char)(v >> (8 * i));
}

static inline void put64(char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (char)(v >> (8 * i));
}

static inline uint32_t get32(const char *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)(unsigned char)p[i] << (8 * i);
    return v;
}

static inline uint64_t get64(const char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)(unsigned char)p[i] << (8 * i);
    return v;
}

struct span {
    const char *p;
    uint32_t n;
};

/* ---- spool.c, called by recovery ---- */

/* CRC-32C over the header and payload with the CRC field itself left out. */
uint32_t spool_record_crc(const char *rec, uint32_t total);
/* Split a data record's payload into its five length-prefixed fields; HG_ERR_CORRUPT if they do not tile it. */
int spool_decode_data(const char *rec, uint32_t total, struct span f[DATA_FIELDS]);
/* Add a release record for record `idx` of the segment `uid` to the batch. */
void spool_batch_add_release(struct batch *b, uint64_t uid, uint32_t idx);

/* A new string from a printf format (aborts when out of memory); the caller frees it. */
char *spool_path_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* fsync a directory, so the names in it are durable: 0 or -errno. Runs on the threadpool too. */
int spool_fsync_dir(const char *path);
/* mkdir -p; each directory it creates is made durable by fsyncing its parent. */
int spool_mkdir_p(const char *path);

/* A new segment <dir_path>/<seq>.seg with the next slot, added to s->segs; touches no file. */
struct segment *spool_segment_new(struct hg_spool *s, int dir_worker, const char *dir_path, uint64_t seq,
                                  uint64_t uid);
/* Give the segment a new record index, its length slot zero until the record is durable. */
uint32_t spool_segment_next_index(struct segment *seg);
/* The segment of a slot (binary search over s->segs), or NULL. */
struct segment *spool_find_segment(const struct hg_spool *s, uint32_t slot);
/* Take the segment out of s->segs and free it; its file is left as it is. */
void spool_segment_forget(struct hg_spool *s, struct segment *seg);

/* The next segment to prepare (it takes s->next_seq); nothing is on disk until spool_prep_run. */
struct prep *spool_prep_new(struct hg_spool *s);
/* Fill, sync and name the file. Runs on the threadpool (or in hg_spool_open): uses only `p`. */
void spool_prep_run(struct prep *p);
/* True when the preparation succeeded; otherwise it is logged and `p` freed (and unset as s->prep). */
bool spool_prep_check(struct hg_spool *s, struct prep *p, int uvstatus);
/* Start a commit if one can start: at once with `now`, else after commit_delay_us. */
void spool_schedule_commit(struct hg_spool *s, bool now);
/* Finish a close once nothing is in flight any more (call after each thing in flight ends). */
void spool_maybe_finish(struct hg_spool *s);
/* Free the spool and all it holds (only a prepared segment's fd is closed here): once its timer is
 * closed, or before that timer was initialized. */
void spool_free(struct hg_spool *s);

#endif

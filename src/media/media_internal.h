/*
 * Internal to src/media: what the job lifecycle (media.c), the Graph API step (graph.c), the
 * download (download.c) and the storing (store.c) share. The job and worker structs, the sizes their fields need, and the calls
 * each file makes into the others. Not part of the public API (media/media.h).
 */
#ifndef HG_MEDIA_INTERNAL_H
#define HG_MEDIA_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <mbedtls/sha256.h>
#include <uv.h>

#include "clients/http.h"
#include "clients/s3.h"
#include "core/buf.h"
#include "core/list.h"
#include "media/media.h"

/* Magic numbers we know need at most 12 bytes; 16 leaves room. */
#define SNIFF_LEN 16
/* One segment of the object key (tenant, message id); wamids are well below this. */
#define SEGMENT_MAX 256
#define CLAMD_REPLY_MAX 256
#define URL_MAX 4096

struct tenant {
    char *name;
    unsigned jobs;            /* jobs of this tenant alive (queued or running) */
    unsigned running;         /* of those, holding a slot */
    struct tenant *next;
};

/* A buffer of downloaded bytes on its way to S3 (and clamd). Freed when nobody uses it. */
struct part {
    struct hg_buf buf;
    int no;                   /* part number, 1-based */
    int refs;                 /* the upload queue, an upload in flight, a clamd write */
    struct part *next;        /* upload queue */
};

enum s3_step {
    S3_NONE,
    S3_BEGIN,
    S3_PART,
    S3_COMPLETE,
    S3_PUT,
    S3_ABORT,
};

enum scan_state {
    SCAN_OFF,                 /* no clamd configured */
    SCAN_IDLE,                /* configured, nothing sent yet */
    SCAN_SENDING,             /* connected (or connecting), chunks going out */
    SCAN_CLEAN,
    SCAN_DONE_BAD,            /* infected or error: the failure is recorded */
};

enum fail_kind {
    FAIL_NONE,
    FAIL_FINAL,               /* HG_MEDIA_FAILED */
    FAIL_TRANSIENT,           /* retry the attempt, HG_MEDIA_RETRY when out of attempts */
    FAIL_SHUTDOWN,            /* HG_MEDIA_RETRY "shutdown" at once */
};

enum job_state {
    JOB_QUEUED,               /* waiting for a slot (m->queue) */
    JOB_RUNNING,              /* an attempt holds a slot */
    JOB_BACKOFF,              /* between attempts, timer armed, no slot */
    JOB_DONE,                 /* callback ran; freed when the timer handle closed */
};

struct job {
    struct hg_media *m;
    struct tenant *tenant;
    enum job_state state;
    hg_media_cb cb;
    void *arg;
    /* the request, copied */
    char *access_token, *media_id, *message_id, *declared_mime, *declared_sha, *request_id;
    char *src_url;            /* URL jobs: the file's URL (the source); NULL for Graph jobs */
    char *auth_header;        /* "Bearer <token>" (Graph), the job's authorization (URL) or NULL */
    bool by_url;              /* a URL job: no Graph step, redirects followed */
    enum hg_media_type type;
    uint64_t occurred_at_s;
    uint64_t created_ns;
    unsigned attempts;
    uv_timer_t timer;         /* backoff between attempts, clamd deadline during one */
    struct hg_list link;      /* in m->jobs */
    struct hg_list qlink;     /* in m->queue while JOB_QUEUED */
    int depth;                /* callbacks of this job on the stack (settle waits for 0) */
    bool in_write;            /* inside the download's write callback: no curl calls */
    bool want_advance;        /* advance from the loop (S3 calls cannot start in on_data) */
    bool close_seen;          /* hg_media_close has handled it */

    /* the current attempt */
    uint64_t attempt_ns, dl_end_ns, upload_ns;
    bool meta_pending, dl_pending, dl_done;
    struct hg_buf meta_body;  /* Graph: the metadata answer */
    char *url;                /* what this attempt downloads: Graph's url, or a copy of src_url */
    char *meta_mime, *meta_sha; /* Graph: declared by the metadata (NULL for URL jobs) */
    uint64_t meta_size;
    bool meta_size_known;
    enum fail_kind fail;
    const char *error;
    uint64_t retry_after_ms;
    bool retry_after_set;
    /* verdict of the stream callback; applies only if the answer turns out to be a 200 */
    enum fail_kind verdict;
    const char *verdict_error;
    unsigned char sniff[SNIFF_LEN];
    size_t sniff_len;
    bool sniffed;
    const char *mime, *ext;   /* validated type (static strings) */
    mbedtls_sha256_context sha;
    char sha_hex[65];
    uint64_t size;
    struct part *cur;         /* being filled */
    struct part *upq, *upq_tail;
    unsigned parts_alive;
    int parts_pushed;
    bool multipart;
    char *upload_id;
    char **etags;
    int netags;
    enum s3_step s3_step;     /* S3 call in flight, S3_NONE when none */
    struct part *s3_part;     /* the part an S3_PART call uploads */
    uint64_t s3_started_ns;
    bool begun, stored;
    char key[1024];
    /* clamd */
    enum scan_state scan;
    uv_pipe_t pipe;
    uv_connect_t connect_req;
    bool pipe_open;           /* initialised and not yet closed (close_cb clears it) */
    bool pipe_closing;
    bool timer_for_scan;
    unsigned scan_writes;     /* uv_write in flight */
    bool scan_terminated;     /* the zero-length chunk is queued */
    char reply[CLAMD_REPLY_MAX];
    size_t reply_len;
};

struct hg_media {
    uv_loop_t *loop;
    struct hg_http *http;
    struct hg_s3 *s3;
    char *api_base, *api_version, *bucket, *clamd_socket;
    struct hg_media_opts o;   /* numbers with defaults applied; string members unused */
    struct hg_list jobs;      /* every job not done, newest first */
    struct hg_list queue;     /* jobs waiting for a slot, in the order they get one */
    size_t nqueued, running, max_running, max_running_tenant;
    struct tenant *tenants;
    uint64_t rng;
    unsigned jobs_alive;      /* allocated jobs, done or not (their timers close async) */
    bool closing;
    uv_timer_t handle;        /* closed at close: makes freeing m always happen later */
    bool handle_closed;
    void (*on_closed)(void *arg);
    void *on_closed_arg;
};

/* ---- media.c, called by the download and the storing ---- */

/* Drop a reference to a part; the last one frees it (p may be NULL). */
void media_part_unref(struct job *j, struct part *p);
/*
 * The result into the log and metrics, presigned URL when stored, then the job's callback; the job
 * is unlinked and freed, and queued jobs are started.
 */
void media_finish(struct job *j, enum hg_media_status status, const char *error);
/*
 * Record the attempt's failure (the first one wins; shutdown overrides a pending retry), cancel
 * its HTTP call and close the clamd pipe. Settling is the caller's: media_settle().
 */
void media_fail(struct job *j, enum fail_kind kind, const char *error);
/* Once a failed attempt has nothing in flight: abort a multipart upload, then retry or finish. */
void media_settle(struct job *j);
/* Classify an HTTP answer that is not a 2xx (401/403, 404/410 final; 408, 429, 5xx retried). */
void media_fail_status(struct job *j, long status, const char *retry_after);
/* Run pending work (queued jobs, deferred advances) from the loop soon, not on this stack. */
void media_kick(struct hg_media *m);

/* ---- download.c, called by the lifecycle, the Graph step and the storing ---- */

/* A SHA-256 as 64 hex digits or base64 into 32 bytes; false when it is neither. */
bool media_sha_decode(const char *s, unsigned char out[32]);
/*
 * Reset the attempt's state and start it: a Graph job with its metadata call (graph.c), a URL
 * job with the download of its URL.
 */
void media_attempt_start(struct job *j);
/*
 * Start downloading j->url (set by the caller) into parts, validating on the way; a request that
 * cannot start fails the attempt (media_fail). Settling is the caller's.
 */
void media_download_start(struct job *j);

/* ---- graph.c: the Graph API step of a WhatsApp media id, called by the download ---- */

/* GET {base}/{version}/{media_id} → j->url, meta_mime, meta_sha, size; then the download. */
void media_graph_start(struct job *j);

/* ---- store.c, called by the lifecycle and the download ---- */

/* Close the clamd pipe if open (its close callback settles and advances the job). */
void media_pipe_close(struct job *j);
/* Send a part (or, with last, also the terminator) to clamd; connect on first use. */
void media_scan_send(struct job *j, struct part *p, bool last);
/* Start whatever S3 call is due; from inside the download's write callback, via the loop. */
void media_advance(struct job *j);
/* Every S3 call's callback (hg_s3_cb), the multipart abort of media_settle() included. */
void media_on_s3(void *arg, const struct hg_s3_result *res);

#endif

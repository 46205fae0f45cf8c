/*
 * Media files into S3: fetch (a WhatsApp media id resolved on the Graph API, or a URL), validate,
 * store, presign. Provider-neutral apart from the Graph step; which files an event carries and
 * with which credentials is decided by the providers' resolvers (src/providers/provider.h).
 */
#ifndef HG_MEDIA_MEDIA_H
#define HG_MEDIA_MEDIA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "clients/http.h"
#include "clients/s3.h"

struct hg_media;

/* Kinds of media (WhatsApp's message types that carry media); the {mediaType} segment of the key. */
enum hg_media_type {
    HG_MEDIA_IMAGE = 0,
    HG_MEDIA_VIDEO,
    HG_MEDIA_AUDIO,
    HG_MEDIA_DOCUMENT,
    HG_MEDIA_STICKER,
    HG_MEDIA_NTYPES,
};

/* Everything is copied by hg_media_open; 0 means "the default" for every number. */
struct hg_media_opts {
    const char *graph_api_base;      /* "https://graph.facebook.com" when NULL */
    const char *graph_api_version;   /* "v18.0" when NULL */
    const char *bucket;              /* S3 bucket for media-inbound/...; required */
    /* per-type size caps in bytes, indexed by enum hg_media_type; defaults image 5 MiB,
     * video and audio 16 MiB, document 100 MiB, sticker 500 KiB */
    uint64_t max_size[HG_MEDIA_NTYPES];
    /* Files up to part_size go to S3 in one PUT once validated; bigger ones as a multipart
     * upload of part_size parts (S3's minimum is 5 MiB, the default; tests go lower). */
    size_t part_size;
    /* Part buffers one download may hold while S3 catches up (the stream cannot be paused):
     * memory per download <= max_parts_buffered * part_size. Default 3. */
    unsigned max_parts_buffered;
    uint32_t presign_expiry_s;       /* default 3600, at most 604800 */
    uint32_t connect_timeout_ms;     /* Graph API and download connect; default 10 s */
    uint32_t api_timeout_ms;         /* the metadata GET as a whole; default 30 s */
    uint32_t download_timeout_ms;    /* one file download as a whole; default 300 s */
    unsigned max_attempts;           /* per job, transient failures; default 5 */
    uint32_t backoff_base_ms;        /* first retry after up to this (full jitter); default 500 */
    uint32_t backoff_max_ms;         /* cap on one backoff, also on Retry-After; default 30 s */
    unsigned max_inflight;           /* jobs running at once on this loop; default 8 */
    unsigned max_inflight_tenant;    /* of those, per tenant; default 4 */
    unsigned max_queued;             /* jobs waiting for a slot; past it fetch says HG_ERR_FULL; 1024 */
    const char *clamd_socket;        /* unix socket path of clamd; NULL/"" = no scan */
    uint32_t clamd_timeout_ms;       /* whole scan conversation; default 60 s */
};

/* Redirects a URL job follows (Twilio's media URL answers with one to its storage). */
#define HG_MEDIA_MAX_REDIRECTS 5

/*
 * One media item to fetch. Strings are copied by hg_media_fetch. A job has one of two sources:
 *  - Graph (url NULL): media_id is a WhatsApp media id and access_token the tenant's Graph token.
 *    The Graph API metadata call resolves the id (URL, type, size, hash), then the file is
 *    downloaded with the same bearer token, without following redirects.
 *  - URL (url set, access_token NULL): the file is downloaded at once, no metadata step, with
 *    `authorization` (when set) as the Authorization header. Redirects are followed (at most
 *    HG_MEDIA_MAX_REDIRECTS); the header goes to the URL's own host (scheme, name and port) only,
 *    never to a host a redirect leads to. media_id is the caller's name for the file (results,
 *    logs, x-amz-meta-media-id): Twilio's "<MessageSid>-<n>", a Genesys attachment id.
 * Validation is the same for both: size cap of media_type, the first bytes against every
 * declared type, SHA-256 against every declared hash, the clamd scan when configured.
 */
struct hg_media_job {
    const char *tenant;              /* {tenantId} in the key; required */
    const char *access_token;        /* Graph: bearer for the Graph API and the download; URL: NULL */
    const char *media_id;            /* required */
    const char *url;                 /* URL: http:// or https:// (< 4096 bytes); Graph: NULL */
    const char *authorization;       /* URL: Authorization value ("Basic ..."), may be NULL; no CR/LF */
    enum hg_media_type media_type;
    const char *mime_type;           /* declared in the webhook, may be NULL */
    const char *sha256;              /* declared in the webhook (base64 or hex), may be NULL */
    const char *message_id;          /* {messageId} in the key (wamid; one per file of a message
                                      * with several, e.g. "<MessageSid>-1"); required */
    uint64_t occurred_at_s;          /* Unix seconds, for {yyyy-MM-dd}; 0 = now */
    const char *request_id;          /* for log lines, may be NULL */
};

/*
 * What became of a job.
 *  HG_MEDIA_STORED  the object is in S3 and url is a presigned GET; error is NULL.
 *  HG_MEDIA_FAILED  final: this media will never be fetched (too_large, mime_mismatch,
 *                   sha256_mismatch, unsupported_type, not_found, unauthorized, infected,
 *                   download_failed for a 4xx or a bad answer). Nothing was stored. Publish the
 *                   event with media.error = error.
 *  HG_MEDIA_RETRY   not decided: transient trouble outlived max_attempts (download_failed,
 *                   upload_failed, scan_failed) or the module is closing (shutdown). Nothing was
 *                   stored. Keep the record and try again later; do not publish yet (a caller
 *                   that gives up may still publish it with media.error = error).
 */
enum hg_media_status {
    HG_MEDIA_STORED = 0,
    HG_MEDIA_FAILED = 1,
    HG_MEDIA_RETRY = 2,
};

/* Valid only during the callback; copy what you keep (hg_media_result_json does). */
struct hg_media_result {
    enum hg_media_status status;
    const char *error;               /* NULL when stored; a short reason code otherwise */
    const char *media_id;
    enum hg_media_type media_type;
    const char *bucket, *key;        /* NULL unless stored */
    const char *mime_type;           /* validated type; NULL unless stored */
    const char *sha256;              /* lower-case hex of the bytes received; NULL if none */
    uint64_t size;                   /* bytes received (also on failure: how far it got) */
    const char *url;                 /* presigned GET; NULL unless stored */
    uint64_t expires_at_s;           /* Unix seconds the URL stops working */
    /* for metrics (media_download_duration_seconds, ...): */
    unsigned attempts;               /* 1 when the first try decided it */
    uint64_t download_ms;            /* metadata (Graph) + download of the last attempt */
    uint64_t upload_ms;              /* S3 calls of the last attempt (0 when none ran) */
    uint64_t total_ms;               /* from hg_media_fetch to this callback, queueing included */
    bool multipart;                  /* stored with a multipart upload */
    bool scanned;                    /* clamd said clean */
};

/* Runs exactly once per accepted job, from the loop, never inside hg_media_fetch. */
typedef void (*hg_media_cb)(void *arg, const struct hg_media_result *res);

/*
 * Media fetcher on `loop` over `http` and `s3` (not owned; both must outlive it). 0,
 * HG_ERR_CONFIG (bucket missing, part_size < 1 KiB, expiry out of range).
 */
int hg_media_open(uv_loop_t *loop, struct hg_http *http, struct hg_s3 *s3,
                  const struct hg_media_opts *opts, struct hg_media **out);

/*
 * Queue a job; it starts when the worker and its tenant have a free slot. Returns 0 (cb runs
 * exactly once later), HG_ERR_INVALID (a required field missing, bad media type, both or neither
 * of url and access_token, a url not http(s) or too long, CR/LF in authorization), HG_ERR_FULL
 * (max_queued jobs waiting) or HG_ERR_CLOSED (closing); then cb never runs.
 */
int hg_media_fetch(struct hg_media *m, const struct hg_media_job *job, hg_media_cb cb, void *arg);

/* Counters for tests and the ready check. */
struct hg_media_stats {
    size_t running;                  /* jobs holding a slot */
    size_t queued;                   /* waiting for a slot (also those in backoff) */
    size_t max_running;              /* high-water mark of running */
    size_t max_running_tenant;       /* high-water mark of one tenant's running jobs */
};
void hg_media_stats(const struct hg_media *m, struct hg_media_stats *out);

/*
 * Stop: every job not finished gets its callback with HG_MEDIA_RETRY "shutdown" (downloads are
 * canceled at once; a job inside an S3 call finishes when that call returns). After the last one
 * and the last uv handle closed, m is freed and on_closed(arg) runs (may be NULL). Safe from a
 * hg_media_cb.
 */
void hg_media_close(struct hg_media *m, void (*on_closed)(void *arg), void *arg);

/*
 * The event's `media` object for res: media_id, type and, when stored, bucket, key, mime_type,
 * size, sha256, url, expires_at (RFC 3339); otherwise error. New reference.
 */
json_t *hg_media_result_json(const struct hg_media_result *res);

/* "image", "video", and so on; parse returns -1 for anything else. */
const char *hg_media_type_name(enum hg_media_type t);
int hg_media_type_parse(const char *name);

/*
 * Sniff: the canonical MIME type and extension of the first n bytes, checked against the
 * declared type (parameters and case ignored). Returns 0 and sets *mime and *ext, HG_ERR_REJECTED
 * when the bytes are not the declared type (or do not fit media type t), HG_ERR_INVALID when the
 * declared type is not one we store. Exposed for the unit test.
 */
int hg_media_sniff(enum hg_media_type t, const char *declared, const unsigned char *p, size_t n,
                   const char **mime, const char **ext);

#endif

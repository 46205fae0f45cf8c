/* S3 client (path-style or virtual-host) on hg_http, requests signed with our own SigV4 signer. */
#ifndef HG_CLIENTS_S3_H
#define HG_CLIENTS_S3_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clients/http.h"
#include "core/buf.h"

struct hg_s3;

struct hg_s3_opts {
    const char *endpoint;        /* "http://127.0.0.1:14569", "https://s3.eu-west-1.amazonaws.com" */
    const char *region;          /* "us-east-1" when NULL */
    const char *access_key;
    const char *secret_key;
    bool path_style;             /* endpoint/bucket/key (MinIO, tests); else bucket.host/key */
    uint32_t connect_timeout_ms; /* 0 = hg_http's default */
    uint32_t timeout_ms;         /* per request; 0 = hg_http's default */
    /*
     * Calls on the wire at once (0 = 64). More wait in the client's FIFO, in order, and are
     * signed when sent; the timeouts count from then. Their callbacks run as always.
     */
    size_t max_inflight;
};

/* Outcome of one S3 call. Everything in it is valid only during the callback. */
struct hg_s3_result {
    /*
     * 0 on success. Transport failures pass through from hg_http (HG_ERR_UNAVAILABLE,
     * HG_ERR_TIMEOUT, HG_ERR_TOO_BIG, HG_ERR_CLOSED, UV_ECANCELED, HG_ERR_PROTOCOL). An S3 error
     * answer gives HG_ERR_NOT_FOUND (404), HG_ERR_UNAVAILABLE (5xx, 429, SlowDown) or
     * HG_ERR_REJECTED (any other refusal: signature, access, bad request).
     */
    int err;
    long status;                 /* HTTP status, 0 when no answer arrived */
    char code[64];               /* S3 error code from the XML body ("NoSuchKey"), else "" */
    char etag[128];              /* put_object / upload_part: the ETag header, quotes kept */
    char upload_id[256];         /* multipart_begin */
    char retry_after[64];        /* Retry-After header when present */
    const struct hg_buf *body;   /* get_object: the object; NULL for other calls */
};

/* Runs exactly once per accepted call, from the loop (never inside the call that started it). */
typedef void (*hg_s3_cb)(void *arg, const struct hg_s3_result *res);

/* Client over `http` (not owned; must outlive it). Strings are copied. 0 or HG_ERR_CONFIG. */
int hg_s3_open(struct hg_http *http, const struct hg_s3_opts *opts, struct hg_s3 **out);

/* What hg_s3_open refuses in an endpoint and keys: 0, or HG_ERR_CONFIG with the reason in why.
 * Pure; the config loader calls it so that `hookgate -t` refuses what the client would. */
int hg_s3_check(const char *endpoint, const char *access_key, const char *secret_key, char *why, size_t wl);

/* A reload: sign every request started from now on with these keys (copied; requests already on
 * the wire keep the old signature). 0, or HG_ERR_CONFIG when either is NULL or empty. */
int hg_s3_set_keys(struct hg_s3 *s3, const char *access_key, const char *secret_key);
/* Free the client. Only when no call is pending (hg_s3_pending() == 0): ops point at it. */
void hg_s3_close(struct hg_s3 *s3);
size_t hg_s3_pending(const struct hg_s3 *s3);

/* True when trying the same call later may succeed: network trouble, 5xx, 429, SlowDown. */
bool hg_s3_retryable(const struct hg_s3_result *res);

/*
 * HEAD the bucket and, on 404, create it (PUT; LocationConstraint outside us-east-1).
 * An existing bucket, or 409 BucketAlreadyOwnedByYou, is success.
 */
int hg_s3_ensure_bucket(struct hg_s3 *s3, const char *bucket, hg_s3_cb cb, void *arg);

/*
 * PutObject from memory; the body is hashed (x-amz-content-sha256) and must stay valid until cb.
 * content_type may be NULL. meta: headers named "x-amz-meta-*" with printable ASCII values
 * (others are refused with HG_ERR_INVALID). Keys are UTF-8; each path segment is URI-encoded.
 */
int hg_s3_put_object(struct hg_s3 *s3, const char *bucket, const char *key,
                     const char *content_type, const struct hg_http_header *meta, size_t nmeta,
                     const void *body, size_t len, hg_s3_cb cb, void *arg);

/* PutObject from a stream of exactly `len` bytes, signed with UNSIGNED-PAYLOAD. */
int hg_s3_put_object_stream(struct hg_s3 *s3, const char *bucket, const char *key,
                            const char *content_type, const struct hg_http_header *meta,
                            size_t nmeta, int64_t len, hg_http_read_fn read, void *read_arg,
                            hg_s3_cb cb, void *arg);

/* GetObject into memory; more than `max` bytes fails with HG_ERR_TOO_BIG. res->body holds it. */
int hg_s3_get_object(struct hg_s3 *s3, const char *bucket, const char *key, size_t max,
                     hg_s3_cb cb, void *arg);

/* DeleteObject (204 also for a missing key, as S3 does). */
int hg_s3_delete_object(struct hg_s3 *s3, const char *bucket, const char *key, hg_s3_cb cb,
                        void *arg);

/*
 * Presigned GET URL valid expires_s seconds (1..604800) from now_s (Unix seconds), written to
 * out as a C string. 0, HG_ERR_TOO_BIG (cap) or HG_ERR_INVALID. No I/O.
 */
int hg_s3_presign_get(struct hg_s3 *s3, const char *bucket, const char *key, uint32_t expires_s,
                      uint64_t now_s, char *out, size_t cap);

/* CreateMultipartUpload: res->upload_id names the upload for the calls below. */
int hg_s3_multipart_begin(struct hg_s3 *s3, const char *bucket, const char *key,
                          const char *content_type, const struct hg_http_header *meta,
                          size_t nmeta, hg_s3_cb cb, void *arg);
/*
 * UploadPart number part_no (1..10000) from memory (every part but the last >= 5 MiB);
 * res->etag is what complete needs. The body must stay valid until cb.
 */
int hg_s3_multipart_upload_part(struct hg_s3 *s3, const char *bucket, const char *key,
                                const char *upload_id, int part_no, const void *body, size_t len,
                                hg_s3_cb cb, void *arg);
/* CompleteMultipartUpload with the parts' ETags in order (etags[i] is part i + 1). A 200 whose
 * body is an <Error> counts as failure, as S3 documents. */
int hg_s3_multipart_complete(struct hg_s3 *s3, const char *bucket, const char *key,
                             const char *upload_id, const char *const *etags, size_t nparts,
                             hg_s3_cb cb, void *arg);
/* AbortMultipartUpload. */
int hg_s3_multipart_abort(struct hg_s3 *s3, const char *bucket, const char *key,
                          const char *upload_id, hg_s3_cb cb, void *arg);

#endif

/* AWS Signature Version 4 (header auth and presigned query auth) for S3 requests, on mbedTLS. */
#ifndef HG_CLIENTS_SIGV4_H
#define HG_CLIENTS_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

/* SHA-256 of the empty string, the payload hash of a request without body. */
#define HG_SIGV4_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
/* Payload hash for bodies that are streamed and therefore not hashed up front. */
#define HG_SIGV4_UNSIGNED "UNSIGNED-PAYLOAD"
/* "20130524T000000Z" plus NUL. */
#define HG_SIGV4_DATE_LEN 17

struct hg_sigv4_creds {
    const char *access_key;
    const char *secret_key;
    const char *region;   /* "us-east-1" */
    const char *service;  /* "s3" */
};

struct hg_sigv4_header {
    const char *name;     /* any case; signed in lower case */
    const char *value;    /* trimmed and inner runs of spaces collapsed when signed */
};

/*
 * One request to sign. Every header in `headers` is signed (so pass only what is sent: at least
 * host, x-amz-date and, for S3, x-amz-content-sha256). Nothing here is copied or kept.
 */
struct hg_sigv4_req {
    const char *method;                     /* "GET", "PUT", ... */
    const char *path;                       /* URI-encoded absolute path as sent: "/bucket/a%20b" */
    const char *query;                      /* query as sent without '?', NULL or "" for none */
    const struct hg_sigv4_header *headers;
    size_t nheaders;
    const char *payload_hash;               /* lower-case hex SHA-256 or HG_SIGV4_UNSIGNED */
};

/* Format Unix seconds as the ISO 8601 basic form SigV4 uses ("20130524T000000Z"). */
void hg_sigv4_date(uint64_t unix_s, char out[HG_SIGV4_DATE_LEN]);

/* Lower-case hex SHA-256 of n bytes (65 bytes with NUL). */
void hg_sigv4_sha256_hex(const void *p, size_t n, char out[65]);

/* kSigning = HMAC(HMAC(HMAC(HMAC("AWS4"+secret, yyyymmdd), region), service), "aws4_request"). */
int hg_sigv4_signing_key(const struct hg_sigv4_creds *creds, const char *date8, unsigned char out[32]);

/*
 * Append s to out URI-encoded as SigV4 wants it: unreserved characters (A-Z a-z 0-9 - . _ ~)
 * stay, every other byte becomes %XX (upper-case hex); '/' stays when keep_slash (object keys).
 * HG_ERR_TOO_BIG past out's cap.
 */
int hg_sigv4_uri_encode(struct hg_buf *out, const char *s, size_t n, bool keep_slash);

/*
 * The canonical request (method, path, canonical query, canonical headers, signed headers,
 * payload hash joined by newlines) into out (appended). 0, HG_ERR_TOO_BIG or HG_ERR_INVALID.
 */
int hg_sigv4_canonical_request(const struct hg_sigv4_req *req, struct hg_buf *out);

/* "AWS4-HMAC-SHA256\n<amz_date>\n<scope>\n<hex sha256 of canonical request>" appended to out. */
int hg_sigv4_string_to_sign(const struct hg_sigv4_creds *creds, const char *amz_date,
                            const char *canonical_request, struct hg_buf *out);

/*
 * The value of the Authorization header for req signed at amz_date (which must equal the request's
 * x-amz-date header): "AWS4-HMAC-SHA256 Credential=...,SignedHeaders=...,Signature=...", appended to
 * out. `signature` (65 bytes) receives the hex signature when not NULL.
 */
int hg_sigv4_authorization(const struct hg_sigv4_creds *creds, const char *amz_date,
                           const struct hg_sigv4_req *req, struct hg_buf *out, char *signature);

/*
 * Presigned (query-auth) GET: appends to out the complete query string, X-Amz-Signature last,
 * for GET `path` (URI-encoded) on `host`, valid `expires_s` seconds (1..604800) from amz_date.
 * Only the host header is signed and the payload is UNSIGNED-PAYLOAD.
 */
int hg_sigv4_presign_query(const struct hg_sigv4_creds *creds, const char *amz_date,
                           const char *host, const char *path, uint32_t expires_s,
                           struct hg_buf *out);

#endif

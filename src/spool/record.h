/*
 * A webhook as the data path carries it, from ingest to release: what the ingest appends to the
 * spool and hands to the drain, what recovery reads back. One struct for all three, so a field
 * added here travels the whole way.
 */
#ifndef HG_SPOOL_RECORD_H
#define HG_SPOOL_RECORD_H

#include <stddef.h>
#include <stdint.h>

/* Pointers are borrowed: whoever takes a record (the spool, the drain) copies what it keeps. */
struct hg_record {
    uint64_t received_at_ns;    /* wall clock, Unix ns */
    const char *request_id;     /* X-Request-Id / correlation id */
    const char *tenant;
    const char *provider;       /* "whatsapp", "genesys", "twilio" */
    const char *headers;        /* "Name: value\n" lines the provider keeps (re-verify, replay) */
    size_t headers_len;
    const char *body;           /* exact raw body (NUL bytes possible; NUL-terminated after body_len) */
    size_t body_len;
};

#endif

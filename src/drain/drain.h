/*
 * The drain hands durable spool records on: parse, split + normalize into events, publish each
 * event to the sink, and release the record from the spool once every event is confirmed.
 * With Redis, each event id is checked first (two-phase: pending, then done once published), so a
 * redelivered webhook is not published twice. With S3, the raw body is archived; an archive
 * failure never holds back publishing, but the record is released only once both are done.
 * Failed steps are retried with exponential backoff (only the steps not yet done);
 * a record that can never be turned into events is dead-lettered with its reason. Runs on the
 * worker's loop; pulls the recovered backlog from the spool a bounded batch at a time.
 */
#ifndef HG_DRAIN_DRAIN_H
#define HG_DRAIN_DRAIN_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "core/json.h"
#include "sink/sink.h"
#include "spool/record.h"

struct hg_spool;
struct hg_sink;
struct hg_drain;
struct hg_redis;
struct hg_s3;
struct hg_statemgr;
struct hg_media;
struct hg_tenants;

/* What the drain hands records to. Only spool and sink are required. */
struct hg_conf;

struct hg_drain_backends {
    struct hg_conf *const *conf;   /* the worker's current config (tenant rules); read per event */
    struct hg_spool *spool;
    struct hg_sink *sink;
    struct hg_redis *redis;        /* dedup of event ids; NULL = no dedup */
    uint64_t dedup_ttl_ms;         /* how long a published id is remembered */
    struct hg_s3 *s3;              /* raw archive; NULL = no archive */
    const char *bucket;            /* archive bucket (copied) */
    /* Enrichment before publish (each NULL = not done). Messages get `mapping` from the State
     * Manager; messages whose provider lists media files (provider.h `media`) get `media` once
     * they are fetched and stored (the Graph token, or a provider's credentials, from the config,
     * or from `tenants` for the tenant service's tenants). */
    struct hg_statemgr *statemgr;
    struct hg_media *media;
    const char *media_bucket;      /* created when missing, like the archive bucket (copied) */
    struct hg_tenants *tenants;
    uint64_t token_ttl_ms;         /* Redis cache of service tenants' Graph tokens */
    uint32_t max_in_memory;        /* records held in memory at once (0 = 4096); the rest wait in
                                    * the spool and are read back in order */
    uint64_t max_bytes;            /* and the bytes they take (0 = 128 MiB); one record alone may
                                    * pass it */
};

int hg_drain_open(uv_loop_t *loop, const struct hg_drain_backends *b, struct hg_drain **out);
/*
 * Hand on record `spool_id`. `doc` is the already parsed body (the provider's parse) or NULL (it
 * is then parsed from the body); the drain takes it over, and builds the events in its arena.
 */
void hg_drain_submit(struct hg_drain *d, uint64_t spool_id, const struct hg_record *rec,
                     struct hg_json_doc *doc);
/*
 * ack = broker: hand on a webhook that is NOT in the spool. `ack(arg, 0)` runs once every event is
 * confirmed by the sink (the caller answers 200 then); `ack(arg, <0)` runs as soon as one step
 * fails (answer 503: the provider retries; nothing is retried here). Exactly once; it may run
 * before this returns (a record without events, a sink that refuses at once), so the caller must
 * not touch `arg` after the call. The raw archive still runs; it does not change the answer.
 */
typedef void (*hg_drain_ack_cb)(void *arg, int status);
void hg_drain_submit_acked(struct hg_drain *d, const struct hg_record *rec, struct hg_json_doc *doc,
                           hg_drain_ack_cb ack, void *arg);

/* True while the last raw-archive attempt failed (S3 down or refusing). */
bool hg_drain_archive_failing(const struct hg_drain *d);

/* Records taken and not yet released. */
uint64_t hg_drain_inflight(const struct hg_drain *d);
/* The memory they take, as counted against max_bytes. */
uint64_t hg_drain_inflight_bytes(const struct hg_drain *d);
/* Start no new step from now on (shutdown): call before closing the sink and the clients, whose
 * callbacks then still reach the drain. */
void hg_drain_stop(struct hg_drain *d);
/* Free everything; records not released stay in the spool. Call after the sink and the clients
 * closed (no callback may be pending). */
void hg_drain_free(struct hg_drain *d, void (*done)(void *arg), void *arg);

#endif

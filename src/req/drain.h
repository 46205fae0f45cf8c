/*
 * The drain hands durable spool records on: parse, split + normalize into events, publish each
 * event to the sink, and release the record from the spool once every event is confirmed.
 * Failed publishes are retried with exponential backoff (only the events not yet confirmed);
 * a record that can never be turned into events is dead-lettered with its reason. Runs on the
 * worker's loop; pulls the recovered backlog from the spool a bounded batch at a time.
 */
#ifndef HG_REQ_DRAIN_H
#define HG_REQ_DRAIN_H

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

struct hg_spool;
struct hg_sink;
struct hg_drain;

/* A spooled webhook as the drain needs it; strings and body are copied by hg_drain_submit. */
struct hg_drain_record {
    const char *request_id;
    const char *tenant;
    const char *provider;
    uint64_t received_at_ns;
    const char *body;
    size_t body_len;
};

int hg_drain_open(uv_loop_t *loop, struct hg_spool *spool, struct hg_sink *sink, struct hg_drain **out);
/*
 * Hand on record `spool_id`. `root` is the already parsed envelope or NULL (it is then parsed
 * from the body); the drain takes over that reference.
 */
void hg_drain_submit(struct hg_drain *d, uint64_t spool_id, const struct hg_drain_record *rec, json_t *root);
/* Records taken and not yet released. */
uint64_t hg_drain_inflight(const struct hg_drain *d);
/* Stop retrying and pulling; records not released stay in the spool. Call after the sink closed. */
void hg_drain_free(struct hg_drain *d, void (*done)(void *arg), void *arg);

#endif

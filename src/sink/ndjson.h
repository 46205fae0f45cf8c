/*
 * The embedded sink: one line of JSON per event appended to local files, confirmed only after the
 * line is fdatasync'ed. Lines that arrive while a write is in flight go together in the next one.
 */
#ifndef HG_SINK_NDJSON_H
#define HG_SINK_NDJSON_H

#include <stdint.h>

#include <uv.h>

#include "sink/sink.h"

/* Bytes accepted but not yet written; past this, publish returns HG_ERR_FULL. */
#define HG_NDJSON_MAX_PENDING (64u << 20)
/* Events waiting for the next write; past this, publish returns HG_ERR_FULL. */
#define HG_NDJSON_MAX_WAITERS 65536u
/* rotate_bytes = 0 means this. */
#define HG_NDJSON_DEFAULT_ROTATE (128u << 20)

/*
 * Open a sink writing `<dir>/events-w<worker>-<yyyymmddThhmmss>-<seq>.ndjson` (UTC time, seq
 * counts up from 000000), starting a new file once the current one holds rotate_bytes or more.
 * Creates dir like `mkdir -p` (synchronously: call at start-up). All I/O after that runs on the
 * libuv threadpool; the sink is bound to `loop` and its thread. On 0, *out is released by
 * ops->close. Errors: HG_ERR_INVALID (bad arguments), or the mkdir error.
 *
 * publish: <0 refuses the event (callback never runs): HG_ERR_INVALID when the json is empty or
 * holds a '\n' or '\r' byte, HG_ERR_FULL past the caps above, HG_ERR_CLOSED once close was
 * called. 0: the callback runs once, later, with 0 after the line was written and fdatasync'ed, or
 * with the write/sync error (the record is kept by the caller and retried later; the sink moves on
 * to a new file so a torn line never precedes good ones). Callbacks may publish again.
 * ready: 0, or HG_ERR_UNAVAILABLE "ndjson write failed" from a failed write until one succeeds.
 * close: writes what is pending (its callbacks run), closes the file, then done(arg) — always later.
 */
int hg_ndjson_sink_open(uv_loop_t *loop, const char *dir, int worker, uint64_t rotate_bytes,
                        struct hg_sink **out);

/* Test hook: fdatasync calls completed so far (shows group commit). */
uint64_t hg_ndjson_sink_fsyncs(struct hg_sink *s);

#endif

/*
 * Outbound delivery: the store (store.h), the scheduler that takes due deliveries from it and
 * sends them (signed, Standard Webhooks) with the worker's curl multi client, and the management
 * API on the admin listener (api.c). One instance, on worker 0's loop, next to the admin listener.
 */
#ifndef HG_OUTBOUND_OUTBOUND_H
#define HG_OUTBOUND_OUTBOUND_H

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#include "http/http.h"

struct hg_http;
struct hg_worker;
struct hg_ob_store;
struct hg_outbound;

struct hg_outbound_opts {
    const char *store_path;     /* [outbound] store_path: the SQLite file */
    uint32_t max_inflight;      /* [outbound] max_inflight: deliveries sent at once */
    uint64_t idempotency_ms;    /* [outbound] idempotency_window: same event_id accepted once within it */
    uint64_t never_attempted_ms; /* [outbound] never_attempted_after: the alarm metric's threshold */
    const json_t *config_endpoints; /* [endpoint.<name>] documents (borrowed), or NULL */
};

/* Open the store (recovery of rows a dead process was sending) and start the scheduler on `loop`,
 * sending with `http` (which must outlive it). 0 or an error (logged). */
int hg_outbound_open(uv_loop_t *loop, struct hg_http *http, const struct hg_outbound_opts *o,
                     struct hg_outbound **out);

/*
 * Stop: deliveries in flight are canceled (their rows stay "sending" and are sent again at the
 * next start: at-least-once), queued store calls finish, then `done(arg)` runs once (maybe at once).
 */
void hg_outbound_close(struct hg_outbound *ob, void (*done)(void *arg), void *arg);

/*
 * The config file's endpoints ([endpoint.<name>]: an array of canonical documents, borrowed; they
 * are copied) are made what the store holds: at open (hg_outbound_open calls this with
 * hg_outbound_opts.config_endpoints) and at every reload. Endpoints the file no longer has are
 * removed (their pending deliveries fail as "endpoint_removed"). Asynchronous; a store failure
 * is logged and retried; only the latest set is applied.
 */
void hg_outbound_set_config_endpoints(struct hg_outbound *ob, const json_t *docs);

/* The store, for the API. */
struct hg_ob_store *hg_outbound_store(struct hg_outbound *ob);
/* Window of event_id idempotency in ms. */
uint64_t hg_outbound_idempotency_ms(const struct hg_outbound *ob);

/* Something may have become due (a publish, a manual retry, an endpoint re-activated): look now. */
void hg_outbound_kick(struct hg_outbound *ob);

/*
 * Call cb(arg, err) once when the next attempt of delivery `delivery_id` ends: err 0 once it is
 * recorded in the store, HG_ERR_UNAVAILABLE when it could not be, HG_ERR_TIMEOUT after timeout_ms
 * without one, HG_ERR_CLOSED when the scheduler stops first. Returns <0 (and cb never runs) when
 * closing. Register before the delivery can be claimed (in the publish callback).
 */
typedef void (*hg_outbound_watch_cb)(void *arg, int err);
int hg_outbound_watch(struct hg_outbound *ob, const char *delivery_id, uint64_t timeout_ms, hg_outbound_watch_cb cb,
                      void *arg);

/*
 * The management API (api.c): `path` is the request path after "/v1/". Answers exactly once.
 * The admin router sends every /v1/ path here once the token was checked.
 */
void hg_outbound_api(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r, const char *path);
/* The admin listener's on_abandon: the connection of an API call in flight went away. */
void hg_outbound_api_abandon(struct hg_conn *c, void *ud);

#endif

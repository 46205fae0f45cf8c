/*
 * A JSON Web Key Set fetched from a URL ([pubsub] jwks_url: Google's certificates endpoint), one
 * cache per worker loop, fetched with that loop's curl multi client (clients/http.h).
 *
 * - Fresh for the response's Cache-Control max-age (clamped to 1 min .. 1 day; 1 hour without
 *   one). Past it the keys are still used while a refresh runs in the background: a rotation
 *   keeps the old keys published for days, and an expired cache must not stall webhooks.
 * - A token naming a kid the set lacks starts a refresh (at most one per 30 s) and waits for it:
 *   that is how a key rotation is picked up before max-age runs out.
 * - A failed fetch keeps the keys there were; with none, the waiting requests get
 *   HG_ERR_UNAVAILABLE (the ingest answers 503 + Retry-After, never 401: the sender is not
 *   wrong), and the next attempt waits 5 s so a dead endpoint is not hammered.
 * Not thread-safe: one per worker, used from its loop only.
 */
#ifndef HG_CLIENTS_JWKS_REMOTE_H
#define HG_CLIENTS_JWKS_REMOTE_H

#include <stdint.h>

struct hg_http;
struct hg_jwks;
struct hg_jwks_remote;

typedef void (*hg_jwks_ready_fn)(void *arg, int status);

/* A cache bound to the worker's HTTP client. */
struct hg_jwks_remote *hg_jwks_remote_new(struct hg_http *http);
/* After the HTTP client closed (its fetch callback has run, so no waiter is left). */
void hg_jwks_remote_free(struct hg_jwks_remote *r);

/*
 * The keys of url for a token naming kid ("" = none named). 0 when the request can be verified
 * now against hg_jwks_remote_keys (which may lack the kid: the verify then refuses it); else
 * HG_ERR_AGAIN, and done(arg, status) runs later from the loop, exactly once: status 0 (verify
 * now) or HG_ERR_UNAVAILABLE (no keys could be had). A changed url drops the cached keys.
 */
int hg_jwks_remote_want(struct hg_jwks_remote *r, const char *url, const char *kid, hg_jwks_ready_fn done,
                        void *arg);
/* The cached keys (NULL before the first good fetch). Valid until control returns to the loop. */
const struct hg_jwks *hg_jwks_remote_keys(const struct hg_jwks_remote *r);

/* Seconds a Cache-Control value lets the keys be fresh (max-age clamped; default without one).
 * Exposed for the unit tests. */
uint64_t hg_jwks_remote_max_age(const char *cache_control);

#endif

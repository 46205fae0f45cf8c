/*
 * The provider-neutral front door: every provider's webhook route runs the same chain
 *   tenant (config, cache, tenant service) → provider.verify → provider.parse → rate limit
 *   → spool append (group fsync) → provider's accepted answer → drain
 * and the optional GET handshake. A provider only supplies its table (providers/provider.h).
 */
#ifndef HG_INGEST_INGEST_H
#define HG_INGEST_INGEST_H

#include "http/http.h"
#include "providers/provider.h"

struct hg_worker;

/*
 * GET on a provider's route: the provider's handshake (Meta's hub.challenge) with the resolved
 * tenant's credentials. 200 text/plain with the challenge, 403 when refused, 404 for an unknown
 * path tenant, 503 when the tenant cannot be resolved now. Answers exactly once, at once or later.
 */
void hg_ingest_get(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r, const char *tenant,
                   const struct hg_provider *p);

/*
 * POST on a provider's route: verify, make durable, answer (the provider's accepted answer, 200),
 * hand to the drain. 401 bad or missing signature, 400 body the provider cannot parse, 404
 * unknown path tenant, 429 over the tenant's rate limit, 503 spool/tenant/credentials unavailable.
 * `tenant` is the {tenant} path segment or NULL. Answers exactly once, at once or later.
 */
void hg_ingest_post(struct hg_worker *w, struct hg_conn *c, struct hg_http_request *r, const char *tenant,
                    const struct hg_provider *p);

/* The connection of a request still in flight went away (see hg_http_handler.on_abandon). */
void hg_ingest_abandon(struct hg_conn *c, void *data);

/* Free this worker thread's replay table (the replay window of providers with replay_key); once,
 * at the end of the worker's thread. */
void hg_ingest_thread_done(void);

#endif

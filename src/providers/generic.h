/*
 * Generic signed senders (docs/generic.md): POST /webhooks/generic/{source}, one [source.<name>]
 * per sender, verified by its scheme: standard-webhooks (Svix), stripe, hmac, api-key, basic.
 */
#ifndef HG_PROVIDERS_GENERIC_H
#define HG_PROVIDERS_GENERIC_H

#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"
#include "providers/provider.h"

#define HG_GENERIC_TOLERANCE_S 300  /* signed timestamps: 5 minutes either way */

/* Spooled lines the ingest adds (spool_extra); parse reads them back at ingest and recovery. */
#define HG_GENERIC_SOURCE_HEADER "X-Hookgate-Source"
#define HG_GENERIC_ID_HEADER     "X-Hookgate-Event-Id"
#define HG_GENERIC_TYPE_HEADER   "X-Hookgate-Event-Type"

/*
 * Verify one request against source `s` at time now_s (Unix seconds): 0, or HG_ERR_SIGNATURE with
 * the reason in why (cap bytes). `header(arg, name, &len)` looks a request header up (NULL when
 * absent). Every secret is tried; comparisons are constant time. Exposed for the unit tests.
 */
typedef const char *(*hg_generic_header_fn)(const void *arg, const char *name, size_t *len);
int hg_generic_verify_at(const struct hg_source_conf *s, hg_generic_header_fn header, const void *arg,
                         const char *body, size_t body_len, int64_t now_s, char *why, size_t cap);

extern const struct hg_provider hg_provider_generic;

#endif

/*
 * Google Cloud Pub/Sub push subscriptions (docs/pubsub.md): an OIDC token signed by Google
 * (RS256, core/jwt.h) in Authorization: Bearer, and one message per push.
 */
#ifndef HG_PROVIDERS_PUBSUB_H
#define HG_PROVIDERS_PUBSUB_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/json.h"
#include "providers/provider.h"

#define HG_PUBSUB_SKEW_S 60 /* clock skew allowed on exp and iat, seconds */

extern const struct hg_provider hg_provider_pubsub;

/*
 * The claims of a token whose signature was verified: iss is Google's (either spelling), aud
 * equals `audience` exactly (a string: Google never sends a list), exp and iat are integers with
 * iat - skew <= now < exp + skew (and nbf, when present, <= now + skew), and when `account` is set,
 * email equals it and email_verified is true. 0, or HG_ERR_SIGNATURE with the reason in why.
 */
int hg_pubsub_check_claims(const json_t *claims, const char *audience, const char *account, int64_t now_s,
                           char *why, size_t cap);

/*
 * The whole check of one push: the bearer token in the Authorization header value (`auth`, len
 * bytes) against creds (jwks, audience or public_url + `target`, account) at now_s. 0, or
 * HG_ERR_SIGNATURE with a reason for the 401 in why.
 */
int hg_pubsub_verify_token(const char *auth, size_t len, const struct hg_creds *creds, const char *target,
                           int64_t now_s, char *why, size_t cap);

/* Parse and validate a push body; a new document, or NULL with the 400 reason. */
struct hg_json_doc *hg_pubsub_parse(const char *body, size_t len, char *reason, size_t cap);

/* One event per push (docs/pubsub.md); returns 1, an emit's non-zero value, or HG_ERR_NOMEM. */
int hg_pubsub_normalize(struct hg_arena *a, const struct hg_json *root, const struct hg_event_meta *meta,
                        hg_event_emit_fn emit, void *arg);

#endif

/*
 * WhatsApp Cloud API: GET handshake, X-Hub-Signature-256 verification, envelope validation,
 * and split + normalize of a (possibly batched) envelope into one event per message/status/error
 * (and per non-message change). whatsapp.c: request side; whatsapp_normalize.c: events;
 * phone.c: E.164 + country codes.
 */
#ifndef HG_PROVIDERS_WHATSAPP_H
#define HG_PROVIDERS_WHATSAPP_H

#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"
#include "core/json.h"
#include "providers/provider.h"
#include "sink/sink.h"

/*
 * Check `X-Hub-Signature-256: sha256=<64 hex>` (Meta sends lowercase; uppercase hex is accepted,
 * the "sha256=" prefix must be lowercase; surrounding spaces/tabs are ignored) against
 * HMAC-SHA256(secret, body) for each secret (rotation), in constant time per comparison; every
 * secret is tried even after a match. Empty secrets are skipped. 0 when one matches, else
 * HG_ERR_SIGNATURE (also for a missing/malformed header or an empty secret list).
 */
int hg_whatsapp_verify_signature(const char *header, size_t header_len, const void *body, size_t body_len,
                                 const struct hg_strlist *secrets);

/*
 * Meta's GET handshake. `query` is the raw query string (no '?'). When hub.mode=subscribe and
 * hub.verify_token equals `verify_token` (constant time), copies the URL-decoded hub.challenge
 * into `challenge` (cap bytes incl. NUL) and returns 0. Otherwise `challenge` is "" and the result
 * is HG_ERR_SIGNATURE (mode/token wrong, a hub.* key missing or repeated, empty challenge, an empty
 * verify_token configured), HG_ERR_PARSE (a malformed %XX escape) or HG_ERR_TOO_BIG (challenge
 * does not fit in cap); answer 403 for any of them. Decoding: %XX (either case) and '+' = space.
 */
int hg_whatsapp_handshake(const char *query, size_t query_len, const char *verify_token,
                          char *challenge, size_t cap);

/*
 * Parse and validate an envelope: {"object":"whatsapp_business_account","entry":[{"id":..,
 * "changes":[{"field":..,"value":{..}}]}]}. Returns a new document (free with hg_json_doc_free;
 * its arena also holds the events hg_whatsapp_normalize builds from it), or NULL with a short
 * reason ("body is not valid JSON: ...", "object is not whatsapp_business_account",
 * "entry[0].changes[1].value is not an object", ...) for a 400. Checked: object, entry (non-empty
 * array of objects, each with a string id and a changes array of objects, each with a string
 * field and an object value). Anything else, including unknown keys, is accepted.
 */
struct hg_json_doc *hg_whatsapp_parse(const char *body, size_t len, char *reason, size_t cap);

/*
 * Business ids in the envelope used to map a tenant: entry[i].id (WABA id) and
 * value.metadata.phone_number_id, in document order. Calls fn for each; stops when fn returns
 * non-zero and returns that value.
 */
int hg_whatsapp_business_ids(const struct hg_json *root, int (*fn)(void *arg, const char *id), void *arg);

/*
 * Split a validated envelope (hg_whatsapp_parse) into events and normalize each one; the format
 * is docs/events.md and docs/schema/event.v1.json. Per entry, per change: field "messages" gives
 * one event per value.messages[] (kind "message"), value.statuses[] ("status") and
 * value.errors[] ("error"), in that order; any other field gives one "system" event.
 * For every event, `emit` runs synchronously with the sink view (all strings valid only during
 * the call; ev->json is NULL: the caller dumps `doc`) and the normalized document, allocated in
 * `a` (it lives as long as the arena; it shares nodes with `root`, so the envelope must stay
 * too). A non-zero return from emit (use a negative code) stops the walk and is returned.
 * Otherwise returns the number of events emitted (>= 0), or HG_ERR_NOMEM when a document could
 * not be allocated. Unknown types and fields never fail: they become type "unknown" (messages) or
 * a "system" event, with `raw` kept.
 */
int hg_whatsapp_normalize(struct hg_arena *a, const struct hg_json *root, const struct hg_event_meta *meta,
                          hg_event_emit_fn emit, void *arg);

/* Events a validated envelope will produce: messages + statuses + errors, one per other field. */
int hg_whatsapp_count_events(const struct hg_json *root);

/* The WhatsApp Cloud API provider (route /webhooks/whatsapp, exchange whatsapp.inbound). */
extern const struct hg_provider hg_provider_whatsapp;

#endif

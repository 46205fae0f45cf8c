/*
 * Genesys Cloud: Open Messaging webhooks (X-Hub-Signature-256) and notification topics delivered
 * through the Amazon EventBridge integration (API key), verified, parsed and normalized into one
 * event per webhook (docs/genesys.md, docs/schema/event.v1.json). genesys.c: request side;
 * genesys_normalize.c: events.
 */
#ifndef HG_PROVIDERS_GENESYS_H
#define HG_PROVIDERS_GENESYS_H

#include <stddef.h>

#include "conf/conf.h"
#include "core/json.h"
#include "providers/provider.h"

/* The header carrying the API key when the credentials name none. */
#define HG_GENESYS_API_KEY_HEADER "X-API-Key"
/* The Open Messaging signature header. */
#define HG_GENESYS_SIGNATURE_HEADER "X-Hub-Signature-256"

/* The provider table (registered in provider.c by the ingest wiring): route /webhooks/genesys. */
extern const struct hg_provider hg_provider_genesys;

/* The two shapes Genesys sends, and everything else. */
enum hg_genesys_family {
    HG_GENESYS_OPEN_MESSAGING, /* {"channel":{..},"type":"Text"|"Structured"|"Event"|"Receipt",..} */
    HG_GENESYS_EVENTBRIDGE,    /* {"version","id","detail-type","source",..,"detail":{"topicName",..}} */
    HG_GENESYS_NOTIFICATION,   /* a bare notification: {"topicName":..,"eventBody":{..},..} */
    HG_GENESYS_UNKNOWN,        /* any other JSON object: one system event of type "unknown" */
};

/*
 * Check `X-Hub-Signature-256: sha256=<base64 of HMAC-SHA256(secret, body)>` (the Open Messaging
 * outbound webhook signature; the digest is 32 bytes, so 44 base64 characters with padding).
 * Surrounding spaces/tabs are ignored; the "sha256=" prefix is lowercase. Every non-empty secret
 * is tried, even after a match, each comparison in constant time. 0 when one matches; else
 * HG_ERR_PARSE for a malformed header (no prefix, not base64, not 32 bytes) and HG_ERR_SIGNATURE
 * when no secret matches (also for a NULL header or an empty secret list).
 */
int hg_genesys_verify_signature(const char *header, size_t header_len, const void *body, size_t body_len,
                                const struct hg_strlist *secrets);

/*
 * Is `value` (len bytes; surrounding spaces/tabs ignored) one of `keys`? Compared as SHA-256
 * digests in constant time, so neither the content nor the length of a key leaks; every key is
 * tried; empty keys never match. 0 or HG_ERR_SIGNATURE (also for NULL value or keys).
 */
int hg_genesys_verify_api_key(const char *value, size_t len, const struct hg_strlist *keys);

/*
 * The provider's verify: accepted (0) when the X-Hub-Signature-256 header verifies against
 * creds->secrets, OR when the header named creds->api_key_header (HG_GENESYS_API_KEY_HEADER when
 * NULL) holds one of creds->api_keys. Either valid credential is enough: an EventBridge API
 * destination sends only the key, Open Messaging only the signature, and a proxy may add one to
 * the other. Both checks always run (no timing hint of which failed first). Otherwise
 * HG_ERR_SIGNATURE and, in `why` (cap bytes): "missing X-Hub-Signature-256 or API key",
 * "malformed X-Hub-Signature-256", "signature does not match", "API key does not match" or
 * "signature and API key do not match". `creds` may be NULL (nothing configured: refused).
 */
int hg_genesys_verify(const struct hg_provider_request *r, const struct hg_creds *creds, char *why, size_t cap);

/*
 * Parse a body: it must be JSON whose top level is an object. Returns a new document (free with
 * hg_json_doc_free; its arena also holds the events hg_genesys_normalize builds), or NULL with a
 * short reason for a 400 ("body is not valid JSON: ... (line L, column C)", "body is not a JSON
 * object"). Any object is accepted, whatever its keys: unknown shapes become a system event.
 */
struct hg_json_doc *hg_genesys_parse(const char *body, size_t len, char *reason, size_t cap);

/* Which family a parsed body belongs to (see enum hg_genesys_family); NULL is UNKNOWN. */
enum hg_genesys_family hg_genesys_family(const struct hg_json *root);

/*
 * Ids in the document that may name the tenant, in priority order. Open Messaging: the
 * integration id, channel.id; when absent, the business side's id (channel.from.id of an
 * outbound message, channel.to.id of an inbound one; never the customer's). EventBridge: the
 * organization id in `source` ("aws.partner/genesys.com/cloud/<org id>/<name>"), then
 * detail.eventBody.organizationId when it differs, then the AWS `account`. A bare notification:
 * eventBody.organizationId. Calls fn for each; stops when fn returns non-zero and returns that
 * value; 0 otherwise.
 */
int hg_genesys_tenant_ids(const struct hg_json *root, int (*fn)(void *arg, const char *id), void *arg);

/* Events hg_genesys_normalize will emit for `root`: 1 for an object (every webhook is one
 * message, receipt, event or notification), 0 for anything else. */
int hg_genesys_count_events(const struct hg_json *root);

/*
 * Normalize a parsed body (hg_genesys_parse) into its event (docs/genesys.md): kind "message",
 * "receipt", "event" (Open Messaging), "conversation" or "system" (notifications), with a
 * `conversation` object when the event belongs to one and `raw` = the whole body. `emit` runs
 * synchronously, once, with the sink view (strings valid only during the call; ev->json is NULL:
 * the caller dumps `doc`) and the document, built in `a` (it shares nodes with `root`, which must
 * live as long). Returns the number emitted (1), the emit's non-zero return, or HG_ERR_NOMEM when
 * the arena refused memory (nothing is emitted half built). Unknown types, topics and fields never
 * fail: they become type "unknown" with `raw` kept.
 */
int hg_genesys_normalize(struct hg_arena *a, const struct hg_json *root, const struct hg_event_meta *meta,
                         hg_event_emit_fn emit, void *arg);

#endif

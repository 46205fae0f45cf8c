/*
 * Twilio (Messaging, WhatsApp via Twilio, Voice status and recording callbacks): X-Twilio-Signature
 * verification, form/JSON body parsing and normalization of one webhook into one event.
 * twilio.c: request side (form decoding, URL, signature, parse); twilio_normalize.c: the event.
 */
#ifndef HG_PROVIDERS_TWILIO_H
#define HG_PROVIDERS_TWILIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"
#include "core/arena.h"
#include "core/buf.h"
#include "core/hmac.h"
#include "core/json.h"
#include "providers/provider.h"

struct hg_http_request;

/* The provider table (provider.h): route /webhooks/twilio, exchange twilio.inbound. */
extern const struct hg_provider hg_provider_twilio;

/* A form body with more parameters is refused (Twilio sends < 100; it bounds the work per body). */
#define HG_TWILIO_MAX_PARAMS 1024
/* Longest X-Twilio-Signature this module writes or accepts (base64 of HMAC-SHA256 is 44) + NUL. */
#define HG_TWILIO_SIG_MAX 96

/* One decoded application/x-www-form-urlencoded parameter. */
struct hg_twilio_param {
    const char *key;           /* decoded, NUL-terminated (may hold NULs: use key_len) */
    size_t key_len;
    const char *value;         /* decoded, NUL-terminated (may hold NULs: use value_len) */
    size_t value_len;
};

/*
 * Decode an application/x-www-form-urlencoded body: pairs separated by '&' (empty pairs skipped),
 * key and value split at the first '=' (a pair without '=' is a key with the value ""), '+' is a
 * space, %XX (either case) a byte. Decoded keys and values must be valid UTF-8. The params, in
 * body order, go to *out (allocated in `a`, as are the strings). Returns their number (>= 0);
 * HG_ERR_PARSE with a reason in `why` (cap bytes: "bad %-escape at byte 17", "invalid UTF-8 in
 * parameter 3", "more than 1024 parameters"); HG_ERR_NOMEM when `a` refuses memory.
 */
int hg_twilio_form_decode(struct hg_arena *a, const char *body, size_t len, struct hg_twilio_param **out,
                          char *why, size_t cap);

/*
 * The params as a JSON object in `a`: each key once, in order of first appearance, its value a
 * string; a key that appears several times gets an array of its values in body order. NULL when
 * `a` refuses memory.
 */
struct hg_json *hg_twilio_form_object(struct hg_arena *a, const struct hg_twilio_param *p, size_t n);

/*
 * X-Twilio-Signature of a request: base64(HMAC-alg(key, url + for each param sorted by key, then
 * by value (bytewise, = twilio-python's code point order): key + value)). Params in any order;
 * `dedup` drops a repeated identical key=value pair (twilio-node's Set) instead of signing it
 * twice (twilio-python). Writes the NUL-terminated base64 into out and returns its length; 0 when
 * cap < HG_TWILIO_SIG_MAX.
 */
size_t hg_twilio_signature(enum hg_hmac_alg alg, const void *key, size_t key_len, const char *url, size_t url_len,
                           const struct hg_twilio_param *params, size_t n, bool dedup, char *out, size_t cap);

/*
 * The URL Twilio called, into `out` (cleared first): `public_url` (one trailing '/' dropped) +
 * the request's raw path + ("?" + raw query when not empty). With public_url NULL or "":
 * X-Forwarded-Proto (first element; else "http") + "://" + X-Forwarded-Host (first element;
 * else Host) + path + query. 0; HG_ERR_INVALID when neither public_url nor a host is there;
 * HG_ERR_TOO_BIG past out's cap.
 */
int hg_twilio_url(const struct hg_http_request *r, const char *public_url, struct hg_buf *out);

/* What hg_twilio_verify looks at: the URL and the spooled parts of the request. */
struct hg_twilio_signed {
    const char *url;           /* the URL Twilio called, query included (hg_twilio_url) */
    size_t url_len;
    const char *signature;     /* X-Twilio-Signature value; NULL = missing */
    size_t signature_len;
    const char *settings;      /* X-Twilio-Webhooks-Signature-Settings value; NULL = absent */
    size_t settings_len;
    const char *content_type;  /* Content-Type value; NULL = absent (a form) */
    size_t content_type_len;
    const char *body;
    size_t body_len;
};

/*
 * Verify a Twilio webhook as twilio-python's RequestValidator and twilio-node's validateRequest
 * do. The URL is tried without its port and with it (the scheme's default port added when it has
 * none). A JSON body (Content-Type application/json or application/<x>+json): the signature is
 * over the URL alone and the query's bodySHA256 must equal the lowercase hex SHA-256 of the raw
 * body. Any other body is a form: the signature is over the URL and the decoded params (when a
 * key repeats an identical value, the form with and without the repeat is accepted: python and
 * node differ there). With X-Twilio-Webhooks-Signature-Settings "algorithm=HMAC_SHA256" the HMAC
 * is SHA-256 (Twilio's shared-key signing, public beta), else SHA-1. Every non-empty key in
 * `tokens` is tried against every candidate (rotation; constant time per comparison, no early
 * exit). 0 when one matches; else HG_ERR_SIGNATURE and the reason in `why`: "missing
 * X-Twilio-Signature", "no Twilio auth token configured", "body is not a valid form: ...",
 * "unsupported algorithm in X-Twilio-Webhooks-Signature-Settings", "bodySHA256 missing from the
 * URL of a JSON body", "signature does not match", "bodySHA256 does not match the body".
 */
int hg_twilio_verify(const struct hg_twilio_signed *s, const struct hg_strlist *tokens, char *why, size_t cap);

/*
 * Parse a body by its Content-Type (NULL or anything but JSON: a form) into a new document whose
 * root is an object: a form becomes hg_twilio_form_object; JSON must be an object. NULL with a
 * reason for the 400: "body is not a valid form: ...", "body is not valid JSON: ...". The
 * document's arena also takes the event hg_twilio_normalize builds from it.
 */
struct hg_json_doc *hg_twilio_parse(const char *body, size_t len, const char *content_type, size_t ct_len,
                                    char *reason, size_t cap);

/*
 * Ids that may name the tenant, in this order: AccountSid, then MessagingServiceSid (strings at
 * the top level). Calls fn for each; stops when fn returns non-zero and returns that value.
 */
int hg_twilio_tenant_ids(const struct hg_json *root, int (*fn)(void *arg, const char *id), void *arg);

/* Events hg_twilio_normalize will make of a parsed document: 1 for an object, 0 otherwise. */
int hg_twilio_count_events(const struct hg_json *root);

/*
 * Normalize a parsed document (hg_twilio_parse) into its one event (docs/twilio.md,
 * docs/schema/event.v1.json): kind message, status, call or system. `emit` runs synchronously
 * with the sink view and the document, allocated in `a` (it shares nodes with root: raw is root
 * itself). Returns 1, emit's non-zero value, or HG_ERR_NOMEM. Unknown shapes never fail: they
 * become system/unknown with raw kept. 0 (nothing emitted) only when root is not an object.
 */
int hg_twilio_normalize(struct hg_arena *a, const struct hg_json *root, const struct hg_event_meta *meta,
                        hg_event_emit_fn emit, void *arg);

/*
 * An RFC 2822 date-time ("Tue, 09 Jan 2024 17:00:35 +0000"; day name optional, seconds optional,
 * zone +hhmm/-hhmm, UT, UTC, GMT, Z or a US zone name) as Unix seconds. 0 and *out, or
 * HG_ERR_PARSE.
 */
int hg_twilio_rfc2822(const char *s, size_t len, int64_t *out);

#endif

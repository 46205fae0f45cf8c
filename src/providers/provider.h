/*
 * A provider: everything hookgate knows about one sender of webhooks (WhatsApp, Genesys, Twilio,
 * …) as one table of functions, and the registry of them. The ingest path (src/ingest/) and the
 * drain (src/drain/) know providers only through this table; adding one is a new file in
 * src/providers/, a line in provider.c's registry and its docs.
 *
 * Every function here is synchronous and pure (no I/O, no globals written): they run on a
 * worker's loop, for every webhook, and from the drain at recovery for records spooled long ago.
 */
#ifndef HG_PROVIDERS_PROVIDER_H
#define HG_PROVIDERS_PROVIDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"
#include "core/json.h"
#include "sink/sink.h"

struct hg_http_request;
struct hg_jwks;
struct hg_tenant;

/* The providers compiled in, in registry order (the index of each in hg_providers()). */
enum hg_provider_id {
    HG_PROVIDER_WHATSAPP,
    HG_PROVIDER_GENESYS,
    HG_PROVIDER_TWILIO,
    HG_PROVIDER_PUBSUB,
    HG_PROVIDER_GENERIC,
    HG_PROVIDER_COUNT,
};

/*
 * The credentials that apply to one webhook: the tenant's own for this provider when it has
 * them, else the provider's section defaults. Pointers into the config snapshot or the tenant
 * (both outlive the request). Empty lists / NULL = not configured.
 */
struct hg_creds {
    const struct hg_strlist *secrets;  /* HMAC keys, any of which may sign (rotation): WhatsApp app
                                        * secrets, Genesys outbound secrets, Twilio auth tokens */
    const struct hg_strlist *api_keys; /* static API keys (Genesys EventBridge); NULL = none */
    const char *api_key_header;        /* header carrying the API key ("X-API-Key") */
    const char *verify_token;          /* GET handshake token (WhatsApp); NULL = none */
    const char *public_url;            /* scheme://host[:port] the provider called (Twilio signs
                                        * the URL it called); NULL = none configured */
    const struct hg_jwks *jwks;        /* RSA keys that may sign an OIDC bearer token (Pub/Sub);
                                        * NULL = none */
    const char *jwks_url;              /* where more such keys are published (fetched by the
                                        * ingest before verify); NULL = none */
    const struct hg_jwks *jwks_fetched; /* the keys fetched from jwks_url, set by the ingest */
    const char *audience;              /* the token's required aud; NULL = public_url + path */
    const char *account;               /* the token's required (verified) email; NULL = any */
    const struct hg_source_conf *source; /* path_names_source providers: the source the path
                                        * named, set by the ingest before `creds` runs; else NULL */
};

/* The request as verify sees it: the parsed HTTP request and the spooled header lines. */
struct hg_provider_request {
    const struct hg_http_request *http;
    const char *body;
    size_t body_len;
};

/* The spooled form of a webhook (what the drain re-reads at recovery). */
struct hg_provider_body {
    const char *body;
    size_t body_len;
    const char *headers;               /* "Name: value\n" lines (the provider's spool_headers) */
    size_t headers_len;
};

/* Context for normalization: what the gateway knows about the webhook. */
struct hg_event_meta {
    const char *tenant;
    const char *request_id;            /* correlation id */
    uint64_t received_at_ns;
};

/*
 * For every event a normalizer makes: `emit` runs synchronously with the sink view (all strings
 * valid only during the call; ev->json is NULL: the caller dumps `doc`) and the normalized
 * document, allocated in the caller's arena. A non-zero return (negative) stops the walk.
 */
typedef int (*hg_event_emit_fn)(void *arg, const struct hg_event *ev, struct hg_json *doc);

/*
 * How the drain's media stage (src/drain/enrich.c, src/media/) fetches one media file an event
 * refers to. The provider says what kind of credential a file needs; getting it (the tenant's
 * Graph token, its credentials) is the drain's business, at fetch time.
 */
enum hg_media_via {
    HG_MEDIA_VIA_GRAPH,      /* media_id is a WhatsApp media id: the Graph API, with the tenant's
                              * access token (only as the one file of a non-list provider) */
    HG_MEDIA_VIA_URL,        /* url as it is: pre-signed, no credentials (Genesys) */
    HG_MEDIA_VIA_URL_BASIC,  /* url with HTTP Basic auth: `user` and the first secret of the
                              * provider's creds for the tenant (Twilio: AccountSid, auth token) */
};

/* Room for an id a resolver makes up: an event id (<= 255 bytes) and a "-<n>" suffix. */
#define HG_MEDIA_REF_ID_MAX 272

/*
 * One media file of a normalized event, as its provider's resolver (`media` below) describes it.
 * Strings point into the event document or into `id`; valid while both are.
 */
struct hg_media_ref {
    enum hg_media_via via;
    const char *type;          /* "image", "video", "audio", "document" or "sticker": the size
                                * cap, the types the bytes may be, {mediaType} of the S3 key */
    const char *media_id;      /* VIA_GRAPH: the media id; URL: the id the result carries */
    const char *url;           /* URL kinds: http(s); NULL or anything else: the file fails
                                * ("invalid") */
    const char *user;          /* VIA_URL_BASIC: the Basic user name; NULL: no_credentials */
    const char *mime_type;     /* declared by the webhook; NULL = none */
    const char *sha256;        /* declared by the webhook (hex or base64); NULL = none */
    const char *message_id;    /* {messageId} of the S3 key; NULL = the event id. Files of one
                                * event must differ here (or in type) */
    char id[HG_MEDIA_REF_ID_MAX];
};

/* One AMQP queue of a provider's topology and the routing-key patterns bound to it. */
struct hg_provider_queue {
    const char *name;                  /* "INBOUND_WHATSAPP_MESSAGES" */
    const char *const *bindings;       /* NULL-terminated: "message.#", ... */
};

/*
 * A provider's AMQP topology: a durable topic exchange `exchange`, its dead-letter exchange
 * `dlx`, and queues; each queue Q dead-letters to `dlx` with routing key "Q.dlq", bound to the
 * queue "Q.dlq". The last queue also takes what no other binding matches (dead letters of an
 * unknown routing key).
 */
struct hg_provider_topology {
    const char *exchange;              /* "<provider>.inbound" */
    const char *dlx;                   /* "<provider>.inbound.dlx" */
    const struct hg_provider_queue *queues;
    size_t n_queues;
};

struct hg_provider {
    enum hg_provider_id id;
    const char *name;                  /* "whatsapp": spool records, x-provider, metrics, schema */
    const char *route;                 /* "/webhooks/whatsapp"; "/{tenant}" may follow */
    const char *const *spool_headers;  /* NULL-terminated: request headers kept with the body */
    const struct hg_provider_topology *topology;

    /*
     * The path segment after `route` names a source ([source.<name>], the generic provider), not
     * a tenant: the ingest answers 404 for an unknown source, takes the tenant from the source's
     * `tenant` key (NULL: the default tenant) and hands the source to `creds` in out->source.
     */
    bool path_names_source;

    /*
     * Optional: extra "Name: value\n" lines spooled after the kept headers (the generic provider:
     * the source name and the event id and type its settings found), so the drain needs no config
     * to normalize. Runs at ingest before verify; writes at most cap bytes, returns the length.
     */
    size_t (*spool_extra)(const struct hg_creds *creds, const struct hg_http_request *r, const char *body,
                          size_t body_len, char *out, size_t cap);

    /*
     * Optional replay window: after a good verify, the key that identifies this signature
     * ("<source>:<id>", NUL-terminated in out, cap bytes) and how long to remember it (*ttl_ms).
     * 1 when there is one, 0 when the request has none. The ingest refuses a key it has seen
     * (401 "replayed") and forgets it again when the webhook is not accepted.
     */
    int (*replay_key)(const struct hg_provider_request *r, const struct hg_creds *creds, char *out, size_t cap,
                      uint64_t *ttl_ms);

    /* This provider's credentials for a webhook (see struct hg_creds); `tenant` may be NULL (the
     * default tenant of the section). */
    void (*creds)(const struct hg_conf *conf, const struct hg_tenant *tenant, struct hg_creds *out);

    /*
     * Optional GET handshake (NULL: GET is 405). 0 and a NUL-terminated answer in `out` (cap
     * bytes) for a 200 text/plain; any error for a 403.
     */
    int (*handshake)(const struct hg_http_request *r, const struct hg_creds *creds, char *out, size_t cap);

    /*
     * Is the request signed (or keyed) by one of `creds`? 0, or HG_ERR_SIGNATURE with a short
     * reason for the 401 in `why` (cap bytes): "missing X-Hub-Signature-256", "signature does not
     * match". Constant time in the secret; every secret is tried.
     */
    int (*verify)(const struct hg_provider_request *r, const struct hg_creds *creds, char *why, size_t cap);

    /*
     * Optional, for providers whose keys may come from creds->jwks_url: the key id the request's
     * token names, NUL-terminated in kid (cap bytes; "" when it names none). The ingest then
     * fetches or refreshes the URL's keys (clients/jwks_remote.h) before verify, unless
     * creds->jwks already holds that key, and hands them to verify in creds->jwks_fetched.
     */
    void (*key_id)(const struct hg_http_request *r, char *kid, size_t cap);

    /* Optional: the request carries no credential at all (401 before any tenant lookup or copy);
     * true with the reason in `why` (cap bytes). */
    bool (*unsigned_request)(const struct hg_http_request *r, const struct hg_conf *conf, char *why, size_t cap);

    /*
     * Parse and validate the body into a document (JSON, or a form body turned into a JSON
     * object). A new document (hg_json_doc_free), or NULL with a short reason for the 400.
     */
    struct hg_json_doc *(*parse)(const struct hg_provider_body *b, char *reason, size_t cap);

    /*
     * Ids in the document that may name the tenant (WhatsApp: WABA and phone number ids; Twilio:
     * AccountSid), in priority order. Calls fn for each (the id is valid only during the call:
     * fn copies what it keeps); stops when fn returns non-zero and returns that value. NULL: the
     * tenant comes from the path or is the default.
     */
    int (*tenant_ids)(const struct hg_json *root, int (*fn)(void *arg, const char *id), void *arg);

    /* Events a parsed document will produce (the accepted answer's "events"). */
    int (*count_events)(const struct hg_json *root);

    /*
     * Split and normalize a parsed document into events (docs/events.md); `emit` per event, in
     * order. Returns the number emitted, the emit's non-zero value, or HG_ERR_NOMEM.
     */
    int (*normalize)(struct hg_arena *a, const struct hg_json *root, const struct hg_event_meta *meta,
                     hg_event_emit_fn emit, void *arg);

    /*
     * The accepted answer: writes the body into out (cap bytes, NUL-terminated), sets
     * *content_type and returns the body's length. Its status is accepted_status. NULL: no body
     * (with accepted_status 204).
     */
    size_t (*accepted)(char *out, size_t cap, const char *request_id, int events, const char **content_type);
    /* The accepted answer's status: 0 = 200 (with a body); 204 (Pub/Sub) = no body. */
    int accepted_status;

    /*
     * Optional media resolver (NULL: this provider's events carry no media the drain fetches).
     * The media files of `event` (a document this provider's normalize made): returns how many
     * there are (0: none), and when out is not NULL and i is below that, describes file i
     * (0-based, in the event's own order) in *out.
     */
    size_t (*media)(const struct hg_json *event, size_t i, struct hg_media_ref *out);
    /* How the drain writes the results into the event's `media`: true, an array with one object
     * per file in resolver order (even for one file); false, the object of the one file. */
    bool media_list;
};

/* Every provider compiled in, in registry order; *n gets their number. */
const struct hg_provider *const *hg_providers(size_t *n);
/* The provider named `name` ("whatsapp"), or NULL. */
const struct hg_provider *hg_provider_find(const char *name);

/*
 * Value of header `name` (case-insensitive) in spooled "Name: value\n" lines, or NULL; *len gets
 * its length. For parse at recovery, where the HTTP request is gone.
 */
const char *hg_provider_header(const char *lines, size_t len, const char *name, size_t *vlen);

/* For a provider's parse: write the 400 reason (printf format) into reason (cap bytes), free doc
 * (may be NULL), return NULL. */
struct hg_json_doc *hg_provider_parse_fail(char *reason, size_t cap, struct hg_json_doc *doc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/*
 * A type word from payload text, as the routing key's second word and the event's type: ASCII
 * letters lowercased, digits and '_' kept, anything else (".", "-", "#", spaces, UTF-8 bytes)
 * becomes '_', at most cap - 1 bytes; `fallback` when nothing is left. A payload cannot add topic
 * words this way.
 */
void hg_provider_type_word(char *out, size_t cap, const char *in, size_t n, const char *fallback);

/* The JSON accepted answer most providers give: {"status":"accepted","request_id":..,"events":N}. */
size_t hg_provider_accepted_json(char *out, size_t cap, const char *request_id, int events,
                                 const char **content_type);

#endif

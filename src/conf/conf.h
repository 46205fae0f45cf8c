/*
 * Configuration: INI file (inih) + env overrides HOOKGATE_<SECTION>_<KEY> (env wins) + *_file
 * secrets. A loaded hg_conf is an immutable, refcounted snapshot: SIGHUP builds a new one and
 * workers switch to it for new requests while old requests keep theirs.
 */
#ifndef HG_CONF_CONF_H
#define HG_CONF_CONF_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/cidr.h"

/* A list of strings (secrets, ids). Owned by the hg_conf. */
struct hg_strlist {
    char **items;
    size_t n;
};

struct hg_rules;
struct hg_jwks;
struct hg_tls_ctx;

/* One `[rules.<id>]` section, compiled at load (src/rules/rules.h). */
struct hg_rules_conf {
    char *id;                         /* tenant id, or "default" */
    struct hg_rules *rules;           /* sealed: immutable, shared by all threads; freed with the hg_conf */
};

/* One `[tenant.<id>]` section. */
struct hg_tenant_conf {
    char *id;                         /* tenant id, as in /webhooks/whatsapp/{tenant} */
    struct hg_strlist app_secrets;    /* WhatsApp app secrets; empty = use [whatsapp] app_secret */
    char *verify_token;               /* NULL = use [whatsapp] verify_token */
    char *access_token;               /* Graph API token; NULL = use [whatsapp] access_token */
    struct hg_strlist business_ids;   /* WABA ids (entry[].id) and phone_number_ids mapped here */
    uint32_t rate_limit;              /* requests per minute; 0 = [ratelimit] default */
    struct hg_strlist genesys_secrets;  /* Genesys outbound secrets; empty = [genesys] secret */
    struct hg_strlist genesys_api_keys; /* Genesys EventBridge API keys; empty = [genesys] api_key */
    struct hg_strlist twilio_auth_tokens; /* Twilio auth tokens; empty = [twilio] auth_token */
    struct hg_strlist account_sids;   /* Twilio AccountSids mapped here (like business_ids) */
    struct hg_cidr_rules ip;          /* allow / deny, checked once the tenant is known */
};

/* One [source.<name>] section: a generic signed sender (docs/generic.md). */
struct hg_source_conf {
    char *name;                       /* as in /webhooks/generic/{source} */
    char *scheme;                     /* standard-webhooks | stripe | hmac | api-key | basic | jwt */
    struct hg_strlist secrets;        /* keys, any of which may sign (rotation) */
    char *header;                     /* hmac: signature header; api-key: key header */
    char *algorithm;                  /* hmac: sha1 | sha256 | sha512 */
    char *encoding;                   /* hmac: hex | base64 */
    char *prefix;                     /* hmac: text before the digest ("sha256="); NULL = none */
    char *timestamp_header;           /* hmac: the signed timestamp's header (Slack); NULL = none */
    char *template;                   /* hmac: the signed text, {timestamp} and {body}; NULL = body */
    char *user;                       /* basic: the user name */
    char *jwks;                       /* jwt: the JWKS document (RS256 keys), from jwks_file */
    struct hg_jwks *jwks_keys;        /* jwt: jwks parsed at load (core/jwt.h); NULL = none */
    char *issuer;                     /* jwt: the required iss; NULL = any */
    char *audience;                   /* jwt: the required aud (or one of a list); NULL = any */
    uint64_t tolerance_ms;            /* signed timestamps either way, jwt exp/nbf skew: 5 min */
    char *id;                         /* dedup id: JSON path or header:<Name>; NULL = scheme default */
    char *type;                       /* event type: JSON path or header:<Name>; NULL = "event" */
    char *tenant;                     /* tenant the source belongs to; NULL = the default tenant */
    struct hg_cidr_rules ip;          /* allow / deny, checked before any tenant or signature work */
    int require_client_cert;          /* 1 = 403 without a client certificate from tls_client_ca */
};

/*
 * One [endpoint.<name>] section: an outbound subscriber declared in the file (docs/outbound.md).
 * Checked at load with the API's own validation (outbound/endpoint.h) into `doc`.
 */
struct hg_endpoint_conf {
    char *name;                       /* the endpoint's id is "cfg_<name>" */
    char *url;
    struct hg_strlist events;         /* empty = ["*"] */
    char *secret;                     /* required (a generated one would change at every load) */
    char *signature_method;
    uint64_t timeout_ms;              /* 0 = unset: the API's default */
    uint32_t max_attempts;            /* the retry policy; 0 / NULL = unset */
    uint64_t initial_delay_ms;
    uint64_t max_delay_ms;
    char *backoff_multiplier;         /* a decimal number, parsed at validation */
    struct hg_strlist retry_on_status_codes;
    char *http_method;
    char *tenant;
    char *environment;
    struct hg_strlist header_names;   /* header.<Name> = value, in file order */
    struct hg_strlist header_values;
    struct json_t *doc;               /* the canonical endpoint document with id, source "config" and secret */
};

struct hg_conf {
    _Atomic long refs;
    char *path;                       /* file it came from (absolute) */

    /* [server] */
    char *listen_host;                /* "127.0.0.1" */
    uint16_t listen_port;             /* 8080 */
    int workers;                      /* resolved: "auto" = number of CPUs */
    uint64_t max_body_bytes;          /* 3 MiB */
    uint64_t max_header_bytes;        /* 16 KiB, all request headers together */
    uint64_t header_timeout_ms;       /* 10 s to receive all headers */
    uint64_t body_timeout_ms;         /* 30 s between body bytes */
    uint64_t body_total_timeout_ms;   /* 30 s for the whole body, however it trickles in */
    uint64_t request_timeout_ms;      /* 30 s from a request's first byte to its answer */
    uint64_t max_buffered_bytes;      /* 256 MiB of request bodies held per worker, all connections */
    uint64_t keepalive_timeout_ms;    /* 60 s idle between requests */
    uint64_t shutdown_timeout_ms;     /* 10 s to drain on SIGTERM */
    uint32_t max_connections;         /* per worker; 10000 */
    char *ack;                        /* "spool" (default) or "broker" */
    struct hg_cidr_list trusted_proxies; /* peers whose PROXY header / forwarding header names the client */
    char *client_ip_header;           /* "x-forwarded-for" (default) or "forwarded": what trusted peers set */
    char *tls_cert;                   /* PEM certificate chain (path); NULL = plain HTTP */
    char *tls_key;                    /* the PEM private key itself (secret; tls_key_file reads it) */
    char *tls_client_ca;              /* PEM CA bundle (path) for client certificates; NULL = none */
    char *tls_client_auth;            /* "optional" (routes decide) | "required" (handshake) */
    char *tls_min_version;            /* "1.2"; "1.3" is refused (mbedTLS 2.28 has no TLS 1.3) */
    struct hg_tls_ctx *tls;           /* the above, loaded and checked (http/tls.h); NULL = plain */

    /* [admin] (metrics, ready, health, management API; served by worker 0) */
    char *admin_listen_host;          /* "127.0.0.1"; NULL = no admin listener (listen = off) */
    uint16_t admin_listen_port;       /* 9090 */
    char *admin_token;                /* bearer token for every admin route but /health, /ready */

    /* [outbound] (delivery to subscriber endpoints; worker 0; docs/outbound.md) */
    char *outbound_store_path;        /* "var/outbound.db": the embedded store (SQLite) */
    uint32_t outbound_max_inflight;   /* deliveries sent at once; 64 */
    uint64_t outbound_idempotency_ms; /* an event_id published again within this is accepted once; 24 h */
    uint64_t outbound_never_attempted_ms; /* the outbound_never_attempted alarm counts deliveries older than this; 60 s */

    /* [log] */
    int log_level;                    /* enum hg_log_level */

    /* [whatsapp] */
    struct hg_strlist app_secrets;    /* default tenant's app secrets (rotation: several valid) */
    char *verify_token;               /* default verify token for the GET handshake */
    char *access_token;               /* default Graph API token */
    char *graph_api_base;             /* "https://graph.facebook.com" */
    char *graph_api_version;          /* "v18.0" */
    char *default_tenant;             /* tenant id when none resolves; "default" */
    struct hg_cidr_rules whatsapp_ip; /* allow / deny of [whatsapp] (use hg_conf_ip_rules) */
    int whatsapp_require_client_cert; /* require_client_cert of [whatsapp]: 403 without mTLS */

    /* [genesys] */
    struct hg_strlist genesys_secrets;  /* Open Messaging outbound secrets (rotation) */
    struct hg_strlist genesys_api_keys; /* EventBridge API destination keys (rotation) */
    char *genesys_api_key_header;     /* "X-API-Key" */
    struct hg_cidr_rules genesys_ip;  /* allow / deny of [genesys] */
    int genesys_require_client_cert;

    /* [twilio] */
    struct hg_strlist twilio_auth_tokens; /* auth tokens that sign X-Twilio-Signature (rotation) */
    char *twilio_public_url;          /* scheme://host[:port] Twilio calls; NULL = from Host */
    struct hg_cidr_rules twilio_ip;   /* allow / deny of [twilio] */
    int twilio_require_client_cert;

    /* [pubsub] (Google Pub/Sub push, OIDC tokens) */
    char *pubsub_jwks_file;           /* JWKS document on disk; NULL = Pub/Sub not configured */
    char *pubsub_jwks_url;            /* not supported yet: a config error when set */
    char *pubsub_audience;            /* required aud; NULL = pubsub_public_url + request path */
    char *pubsub_public_url;          /* scheme://host[:port] the push subscription calls */
    char *pubsub_service_account;     /* required email (verified); NULL = any */
    struct hg_jwks *pubsub_jwks;      /* jwks_file parsed at load (core/jwt.h); NULL = none */
    struct hg_cidr_rules pubsub_ip;   /* allow / deny of [pubsub] */
    int pubsub_require_client_cert;

    /* [tenant.<id>] sections */
    struct hg_tenant_conf *tenants;
    size_t n_tenants;
    bool tenant_ip_rules;             /* some tenant has allow / deny (else no per-request lookup) */

    /* [spool] */
    char *spool_dir;                  /* "var/spool", absolute after load */
    uint64_t spool_max_bytes;         /* quota: 1 GiB; past it 503 + Retry-After */
    uint64_t spool_segment_bytes;     /* rotate segments at 16 MiB */
    uint64_t spool_commit_delay_us;   /* group commit: wait up to this for more appends; 0 = none */
    uint32_t spool_max_in_memory;     /* records a worker's drain holds; the rest wait on disk: 4096 */
    uint64_t spool_drain_max_bytes;   /* bytes those records may take in memory: 128 MiB */

    /* [ndjson] */
    char *ndjson_dir;                 /* "var/out", absolute after load */
    uint64_t ndjson_rotate_bytes;     /* 64 MiB */
    int ndjson_enabled;               /* 1 unless an AMQP URL is set and [ndjson] enabled = auto|no */

    /* [amqp] */
    struct hg_strlist amqp_urls;      /* empty = no RabbitMQ */
    char *amqp_queue_type;            /* "classic" | "quorum" */
    uint32_t amqp_max_priority;       /* 0 = no x-max-priority */
    uint32_t amqp_queue_version;      /* x-queue-version 1|2 on classic queues; 0 = not sent */
    char *amqp_tls_ca;                /* amqps://: CA bundle (PEM) the broker is checked against; NULL = system store */
    char *amqp_tls_cert;              /* amqps://: client certificate (PEM), with amqp_tls_key; NULL = none */
    char *amqp_tls_key;
    int amqp_tls_verify;              /* 1 (default): check the broker's certificate and name; 0 = off (warned) */

    /* [redis] */
    char *redis_url;                  /* NULL = no Redis */
    uint64_t dedup_ttl_ms;            /* 24 h */

    /* [ratelimit] */
    uint32_t ratelimit_default;       /* requests per minute per tenant; 1000 */
    uint32_t ratelimit_per_ip;        /* requests per minute per client address; 0 = off */

    /* [tenants] */
    char *tenant_service_url;         /* NULL = none */
    char *tenant_service_token;       /* bearer token for the tenant service, optional */
    uint64_t tenant_service_timeout_ms; /* 2 s */
    uint64_t tenant_cache_ttl_ms;     /* 5 min in Redis */
    uint64_t tenant_negative_ttl_ms;  /* 60 s for "no such tenant" */

    /* [s3] */
    char *s3_endpoint;                /* NULL = no archive */
    char *s3_region;                  /* "us-east-1" */
    char *s3_access_key;
    char *s3_secret_key;
    char *s3_bucket;                  /* "hookgate" */
    uint32_t s3_max_inflight;         /* S3 calls on the wire per worker; more wait in order */

    /* [media] (needs [s3] and a Graph API access token) */
    int media_enabled;                /* auto = yes when [s3] endpoint is set */
    char *media_bucket;               /* "hookgate-media" */
    uint64_t media_max_image;         /* 5 MiB */
    uint64_t media_max_video;         /* 16 MiB */
    uint64_t media_max_audio;         /* 16 MiB */
    uint64_t media_max_document;      /* 100 MiB */
    uint64_t media_max_sticker;       /* 500 KiB */
    uint64_t media_part_size;         /* 5 MiB: single PUT up to this, multipart beyond */
    uint64_t media_presign_expiry_ms; /* 1 h */
    uint64_t media_download_timeout_ms; /* 5 min per file */
    uint32_t media_max_inflight;      /* downloads at once per worker: 8 */
    uint32_t media_max_inflight_tenant; /* of those per tenant: 4 */
    char *media_clamd_socket;         /* unix socket of clamd; NULL = no scan */
    uint64_t media_token_cache_ttl_ms; /* Redis cache of tenant service Graph tokens: 24 h */

    /* [state_manager] (optional enrichment) */
    char *state_manager_url;          /* NULL = none */
    char *state_manager_token;        /* bearer token, optional */
    uint64_t state_manager_timeout_ms; /* 2 s per request */

    /* [rules.<id>] sections, sorted by id; use hg_conf_rules() */
    struct hg_rules_conf *rules;
    size_t n_rules;

    /* [source.<name>] sections (generic provider); use hg_conf_source() */
    struct hg_source_conf *sources;
    size_t n_sources;

    /* [endpoint.<name>] sections (outbound subscribers), in file order */
    struct hg_endpoint_conf *endpoints;
    size_t n_endpoints;
};

/*
 * Load `path` (NULL = defaults only), apply env overrides, read *_file secrets, validate.
 * On success *out holds one reference. On error returns HG_ERR_CONFIG and writes
 * "file:line: reason" (or "env HOOKGATE_X_Y: reason") into err.
 */
int hg_conf_load(const char *path, struct hg_conf **out, char *err, size_t errlen);

/* Take / drop a reference; the last drop frees. Safe from any thread. */
struct hg_conf *hg_conf_ref(struct hg_conf *c);
void hg_conf_unref(struct hg_conf *c);

/* Tenant by id, or by an id listed in business_ids (WABA / phone_number_id) or account_sid
 * (Twilio AccountSid); NULL when none. */
const struct hg_tenant_conf *hg_conf_tenant(const struct hg_conf *c, const char *id);
const struct hg_tenant_conf *hg_conf_tenant_by_business(const struct hg_conf *c, const char *business_id);

/* A numeric address (as a listen key stores it) that only this machine can reach: 127/8, ::1. */
bool hg_conf_host_is_loopback(const char *host);
/* The allow / deny rules of provider section [<provider>] (whatsapp, genesys, twilio, pubsub);
 * NULL for a provider without one (generic: its [source.<name>] sections have them). */
const struct hg_cidr_rules *hg_conf_ip_rules(const struct hg_conf *c, const char *provider);

/*
 * Does a webhook for `provider` (its registry name) need a verified client certificate
 * (require_client_cert of its section; for the generic provider, of `source`'s)?
 */
bool hg_conf_requires_client_cert(const struct hg_conf *c, const char *provider, const struct hg_source_conf *source);

/* The [source.<name>] section named `name`, or NULL. */
const struct hg_source_conf *hg_conf_source(const struct hg_conf *c, const char *name);

/*
 * Enrichment rules for `tenant`: its [rules.<tenant>] section, else [rules.default], else NULL
 * (no rules; hg_rules_apply takes NULL). A NULL tenant gets [rules.default]. The result lives as
 * long as the caller's reference to `c`. Safe from any thread; O(log sections).
 */
const struct hg_rules *hg_conf_rules(const struct hg_conf *c, const char *tenant);

#endif

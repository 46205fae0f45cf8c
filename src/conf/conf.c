/*
 * Configuration loader: one key table drives defaults, the INI file (inih), env overrides
 * (HOOKGATE_<SECTION>_<KEY>), <key>_file secrets and validation; errors say "file:line: reason".
 *
 * Sections, in order: the key table; tenants; rules; file parsing (inih callbacks); environment;
 * validation; public API (load, reload, lookups, free). Value parsers (sizes, durations, URLs,
 * lists) and <key>_file secrets are in conf_value.c.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "conf/conf.h"
#include "conf/conf_internal.h"
#include "core/common.h"
#include "core/err.h"
#include "core/jwt.h"
#include "core/log.h"
#include "core/str.h"
#include "http/tls.h"
#include "outbound/endpoint.h"
#include "rules/rules.h"
#include "clients/redis.h"
#include "clients/s3.h"
#include "clients/statemgr.h"
#include "sink/amqp.h"
#include "tenants/tenants.h"

/* KEY_LISTEN writes the port right after the host (conf_value.c's set_listen). */
_Static_assert(offsetof(struct hg_conf, listen_port) == offsetof(struct hg_conf, listen_host) + sizeof(char *),
               "listen_port must follow listen_host");
_Static_assert(offsetof(struct hg_conf, admin_listen_port) ==
                   offsetof(struct hg_conf, admin_listen_host) + sizeof(char *),
               "admin_listen_port must follow admin_listen_host");

#define CF(field) offsetof(struct hg_conf, field), sizeof(((struct hg_conf *)0)->field)
#define TF(field) offsetof(struct hg_tenant_conf, field), sizeof(((struct hg_tenant_conf *)0)->field)
#define SF(field) offsetof(struct hg_source_conf, field), sizeof(((struct hg_source_conf *)0)->field)
#define EF(field) offsetof(struct hg_endpoint_conf, field), sizeof(((struct hg_endpoint_conf *)0)->field)

static const char *const ack_words[] = { "spool", "broker", NULL };
static const char *const client_ip_headers[] = { "x-forwarded-for", "forwarded", NULL };
static const char *const queue_words[] = { "classic", "quorum", NULL };
static const char *const http_schemes[] = { "http://", "https://", NULL };
static const char *const amqp_schemes[] = { "amqp://", "amqps://", NULL };
static const char *const redis_schemes[] = { "redis://", "rediss://", "unix://", NULL };
static const char *const client_auth_words[] = { "optional", "required", NULL };
static const char *const tls_version_words[] = { "1.2", "1.3", NULL };

/* Every global key. Order is the order of docs/configuration.md and conf/hookgate.conf. */
static const struct key conf_keys[] = {
    { "server", "listen", KEY_LISTEN, CF(listen_host), "127.0.0.1:8080", NULL, NULL, NULL, 0 },
    { "server", "workers", KEY_WORKERS, CF(workers), "auto", "1", "256", NULL, 0 },
    { "server", "max_body", KEY_SIZE, CF(max_body_bytes), "3MiB", "1KiB", "1GiB", NULL, 0 },
    { "server", "max_header", KEY_SIZE, CF(max_header_bytes), "16KiB", "1KiB", "1MiB", NULL, 0 },
    { "server", "header_timeout", KEY_MS, CF(header_timeout_ms), "10s", "100ms", "10m", NULL, 0 },
    { "server", "body_timeout", KEY_MS, CF(body_timeout_ms), "30s", "100ms", "10m", NULL, 0 },
    { "server", "body_total_timeout", KEY_MS, CF(body_total_timeout_ms), "30s", "100ms", "1h", NULL, 0 },
    { "server", "request_timeout", KEY_MS, CF(request_timeout_ms), "30s", "100ms", "1h", NULL, 0 },
    { "server", "max_buffered_bytes", KEY_SIZE, CF(max_buffered_bytes), "256MiB", "64KiB", "1024GiB", NULL, 0 },
    { "server", "keepalive_timeout", KEY_MS, CF(keepalive_timeout_ms), "60s", "0", "1h", NULL, 0 },
    { "server", "shutdown_timeout", KEY_MS, CF(shutdown_timeout_ms), "10s", "0", "10m", NULL, 0 },
    { "server", "max_connections", KEY_UINT, CF(max_connections), "10000", "1", "1000000", NULL, 0 },
    { "server", "ack", KEY_ENUM, CF(ack), "spool", NULL, NULL, ack_words, 0 },
    { "server", "tls_cert", KEY_PATH, CF(tls_cert), NULL, NULL, NULL, NULL, 0 },
    { "server", "tls_key", KEY_STRING, CF(tls_key), NULL, NULL, NULL, NULL, KEY_F_SECRET | KEY_F_LINES },
    { "server", "tls_client_ca", KEY_PATH, CF(tls_client_ca), NULL, NULL, NULL, NULL, 0 },
    { "server", "tls_client_auth", KEY_ENUM, CF(tls_client_auth), "optional", NULL, NULL, client_auth_words, 0 },
    { "server", "tls_min_version", KEY_ENUM, CF(tls_min_version), "1.2", NULL, NULL, tls_version_words, 0 },
    { "server", "trusted_proxies", KEY_CIDRS, CF(trusted_proxies), NULL, NULL, NULL, NULL, 0 },
    { "server", "client_ip_header", KEY_ENUM, CF(client_ip_header), "x-forwarded-for", NULL, NULL, client_ip_headers, 0 },

    { "admin", "listen", KEY_LISTEN, CF(admin_listen_host), "127.0.0.1:9090", NULL, NULL, NULL, KEY_F_OFF },
    { "admin", "token", KEY_STRING, CF(admin_token), NULL, NULL, NULL, NULL, KEY_F_SECRET },

    { "outbound", "store_path", KEY_PATH, CF(outbound_store_path), "var/outbound.db", NULL, NULL, NULL, 0 },
    { "outbound", "max_inflight", KEY_UINT, CF(outbound_max_inflight), "64", "1", "10000", NULL, 0 },
    { "outbound", "idempotency_window", KEY_MS, CF(outbound_idempotency_ms), "24h", "1s", "30d", NULL, 0 },
    { "outbound", "never_attempted_after", KEY_MS, CF(outbound_never_attempted_ms), "60s", "1s", "1d", NULL, 0 },

    { "log", "level", KEY_LOGLEVEL, CF(log_level), "info", NULL, NULL, NULL, 0 },

    { "whatsapp", "app_secret", KEY_STRLIST, CF(app_secrets), NULL, NULL, NULL, NULL, KEY_F_SECRET },
    { "whatsapp", "verify_token", KEY_STRING, CF(verify_token), NULL, NULL, NULL, NULL, KEY_F_SECRET },
    { "whatsapp", "access_token", KEY_STRING, CF(access_token), NULL, NULL, NULL, NULL, KEY_F_SECRET },
    { "whatsapp", "graph_api_base", KEY_STRING, CF(graph_api_base), "https://graph.facebook.com",
      NULL, NULL, http_schemes, 0 },
    { "whatsapp", "graph_api_version", KEY_STRING, CF(graph_api_version), "v18.0", NULL, NULL, NULL, 0 },
    { "whatsapp", "default_tenant", KEY_STRING, CF(default_tenant), "default", NULL, NULL, NULL, KEY_F_ID },
    { "whatsapp", "allow", KEY_CIDRS, CF(whatsapp_ip.allow), NULL, NULL, NULL, NULL, 0 },
    { "whatsapp", "deny", KEY_CIDRS, CF(whatsapp_ip.deny), NULL, NULL, NULL, NULL, 0 },
    { "whatsapp", "require_client_cert", KEY_BOOL, CF(whatsapp_require_client_cert), "no", NULL, NULL, NULL, 0 },

    { "genesys", "secret", KEY_STRLIST, CF(genesys_secrets), NULL, NULL, NULL, NULL, KEY_F_SECRET },
    { "genesys", "api_key", KEY_STRLIST, CF(genesys_api_keys), NULL, NULL, NULL, NULL, KEY_F_SECRET },
    { "genesys", "api_key_header", KEY_STRING, CF(genesys_api_key_header), "X-API-Key", NULL, NULL, NULL, 0 },
    { "genesys", "allow", KEY_CIDRS, CF(genesys_ip.allow), NULL, NULL, NULL, NULL, 0 },
    { "genesys", "deny", KEY_CIDRS, CF(genesys_ip.deny), NULL, NULL, NULL, NULL, 0 },
    { "genesys", "require_client_cert", KEY_BOOL, CF(genesys_require_client_cert), "no", NULL, NULL, NULL, 0 },

    { "twilio", "auth_token", KEY_STRLIST, CF(twilio_auth_tokens), NULL, NULL, NULL, NULL, KEY_F_SECRET },
    { "twilio", "public_url", KEY_STRING, CF(twilio_public_url), NULL, NULL, NULL, http_schemes, 0 },
    { "twilio", "allow", KEY_CIDRS, CF(twilio_ip.allow), NULL, NULL, NULL, NULL, 0 },
    { "twilio", "deny", KEY_CIDRS, CF(twilio_ip.deny), NULL, NULL, NULL, NULL, 0 },
    { "twilio", "require_client_cert", KEY_BOOL, CF(twilio_require_client_cert), "no", NULL, NULL, NULL, 0 },

    { "pubsub", "jwks_file", KEY_PATH, CF(pubsub_jwks_file), NULL, NULL, NULL, NULL, 0 },
    { "pubsub", "jwks_url", KEY_STRING, CF(pubsub_jwks_url), NULL, NULL, NULL, http_schemes, 0 },
    { "pubsub", "audience", KEY_STRING, CF(pubsub_audience), NULL, NULL, NULL, NULL, 0 },
    { "pubsub", "public_url", KEY_STRING, CF(pubsub_public_url), NULL, NULL, NULL, http_schemes, 0 },
    { "pubsub", "service_account", KEY_STRING, CF(pubsub_service_account), NULL, NULL, NULL, NULL, 0 },
    { "pubsub", "allow", KEY_CIDRS, CF(pubsub_ip.allow), NULL, NULL, NULL, NULL, 0 },
    { "pubsub", "deny", KEY_CIDRS, CF(pubsub_ip.deny), NULL, NULL, NULL, NULL, 0 },
    { "pubsub", "require_client_cert", KEY_BOOL, CF(pubsub_require_client_cert), "no", NULL, NULL, NULL, 0 },

    { "spool", "dir", KEY_PATH, CF(spool_dir), "var/spool", NULL, NULL, NULL, 0 },
    { "spool", "max_bytes", KEY_SIZE, CF(spool_max_bytes), "1GiB", "1MiB", "65536GiB", NULL, 0 },
    { "spool", "segment_bytes", KEY_SIZE, CF(spool_segment_bytes), "16MiB", "64KiB", "1GiB", NULL, 0 },
    { "spool", "commit_delay", KEY_US, CF(spool_commit_delay_us), "0", "0", "1s", NULL, 0 },
    { "spool", "max_in_memory", KEY_UINT, CF(spool_max_in_memory), "4096", "16", "1000000", NULL, 0 },
    { "spool", "drain_max_bytes", KEY_SIZE, CF(spool_drain_max_bytes), "128MiB", "64KiB", "1024GiB", NULL, 0 },

    { "ndjson", "dir", KEY_PATH, CF(ndjson_dir), "var/out", NULL, NULL, NULL, 0 },
    { "ndjson", "rotate_bytes", KEY_SIZE, CF(ndjson_rotate_bytes), "64MiB", "64KiB", "64GiB", NULL, 0 },
    { "ndjson", "enabled", KEY_AUTOBOOL, CF(ndjson_enabled), "auto", NULL, NULL, NULL, 0 },

    { "amqp", "url", KEY_STRLIST, CF(amqp_urls), NULL, NULL, NULL, amqp_schemes, KEY_F_SECRET },
    { "amqp", "queue_type", KEY_ENUM, CF(amqp_queue_type), "classic", NULL, NULL, queue_words, 0 },
    { "amqp", "max_priority", KEY_UINT, CF(amqp_max_priority), "10", "0", "255", NULL, 0 },
    { "amqp", "queue_version", KEY_UINT, CF(amqp_queue_version), "2", "0", "2", NULL, 0 },
    { "amqp", "tls_ca", KEY_PATH, CF(amqp_tls_ca), NULL, NULL, NULL, NULL, 0 },
    { "amqp", "tls_cert", KEY_PATH, CF(amqp_tls_cert), NULL, NULL, NULL, NULL, 0 },
    { "amqp", "tls_key", KEY_PATH, CF(amqp_tls_key), NULL, NULL, NULL, NULL, 0 },
    { "amqp", "tls_verify", KEY_AUTOBOOL, CF(amqp_tls_verify), "on", NULL, NULL, NULL, 0 },

    { "redis", "url", KEY_STRING, CF(redis_url), NULL, NULL, NULL, redis_schemes, KEY_F_SECRET },
    { "redis", "dedup_ttl", KEY_MS, CF(dedup_ttl_ms), "24h", "1s", "30d", NULL, 0 },

    { "ratelimit", "default", KEY_UINT, CF(ratelimit_default), "1000", "1", "1000000000", NULL, 0 },
    { "ratelimit", "per_ip", KEY_UINT, CF(ratelimit_per_ip), "0", "0", "1000000000", NULL, 0 },

    { "tenants", "service_url", KEY_STRING, CF(tenant_service_url), NULL, NULL, NULL, http_schemes, 0 },
    { "tenants", "service_token", KEY_STRING, CF(tenant_service_token), NULL, NULL, NULL, NULL, KEY_F_SECRET },
    { "tenants", "timeout", KEY_MS, CF(tenant_service_timeout_ms), "2s", "10ms", "1m", NULL, 0 },
    { "tenants", "cache_ttl", KEY_MS, CF(tenant_cache_ttl_ms), "5m", "1s", "7d", NULL, 0 },
    { "tenants", "negative_ttl", KEY_MS, CF(tenant_negative_ttl_ms), "60s", "1s", "1d", NULL, 0 },

    { "s3", "endpoint", KEY_STRING, CF(s3_endpoint), NULL, NULL, NULL, http_schemes, 0 },
    { "s3", "region", KEY_STRING, CF(s3_region), "us-east-1", NULL, NULL, NULL, 0 },
    { "s3", "access_key", KEY_STRING, CF(s3_access_key), NULL, NULL, NULL, NULL, KEY_F_SECRET },
    { "s3", "secret_key", KEY_STRING, CF(s3_secret_key), NULL, NULL, NULL, NULL, KEY_F_SECRET },
    { "s3", "bucket", KEY_STRING, CF(s3_bucket), "hookgate", NULL, NULL, NULL, 0 },
    { "s3", "max_inflight", KEY_UINT, CF(s3_max_inflight), "64", "1", "4096", NULL, 0 },

    { "media", "enabled", KEY_AUTOBOOL, CF(media_enabled), "auto", NULL, NULL, NULL, 0 },
    { "media", "bucket", KEY_STRING, CF(media_bucket), "hookgate-media", NULL, NULL, NULL, 0 },
    { "media", "max_image", KEY_SIZE, CF(media_max_image), "5MiB", "1KiB", "1GiB", NULL, 0 },
    { "media", "max_video", KEY_SIZE, CF(media_max_video), "16MiB", "1KiB", "1GiB", NULL, 0 },
    { "media", "max_audio", KEY_SIZE, CF(media_max_audio), "16MiB", "1KiB", "1GiB", NULL, 0 },
    { "media", "max_document", KEY_SIZE, CF(media_max_document), "100MiB", "1KiB", "1GiB", NULL, 0 },
    { "media", "max_sticker", KEY_SIZE, CF(media_max_sticker), "500KiB", "1KiB", "1GiB", NULL, 0 },
    { "media", "part_size", KEY_SIZE, CF(media_part_size), "5MiB", "5MiB", "1GiB", NULL, 0 },
    { "media", "presign_expiry", KEY_MS, CF(media_presign_expiry_ms), "1h", "1s", "7d", NULL, 0 },
    { "media", "download_timeout", KEY_MS, CF(media_download_timeout_ms), "5m", "1s", "1h", NULL, 0 },
    { "media", "max_inflight", KEY_UINT, CF(media_max_inflight), "8", "1", "1024", NULL, 0 },
    { "media", "max_inflight_tenant", KEY_UINT, CF(media_max_inflight_tenant), "4", "1", "1024", NULL, 0 },
    { "media", "clamd_socket", KEY_PATH, CF(media_clamd_socket), NULL, NULL, NULL, NULL, 0 },
    { "media", "token_cache_ttl", KEY_MS, CF(media_token_cache_ttl_ms), "24h", "1s", "30d", NULL, 0 },

    { "state_manager", "url", KEY_STRING, CF(state_manager_url), NULL, NULL, NULL, http_schemes, 0 },
    { "state_manager", "token", KEY_STRING, CF(state_manager_token), NULL, NULL, NULL, NULL, KEY_F_SECRET },
    { "state_manager", "timeout", KEY_MS, CF(state_manager_timeout_ms), "2s", "10ms", "1m", NULL, 0 },
};

/* Keys of a [tenant.<id>] section; offsets are into struct hg_tenant_conf. */
static const struct key tenant_keys[] = {
    { "tenant", "app_secret", KEY_STRLIST, TF(app_secrets), NULL, NULL, NULL, NULL, KEY_F_SECRET },
    { "tenant", "verify_token", KEY_STRING, TF(verify_token), NULL, NULL, NULL, NULL, KEY_F_SECRET },
    { "tenant", "access_token", KEY_STRING, TF(access_token), NULL, NULL, NULL, NULL, KEY_F_SECRET },
    { "tenant", "business_ids", KEY_STRLIST, TF(business_ids), NULL, NULL, NULL, NULL, 0 },
    { "tenant", "rate_limit", KEY_UINT, TF(rate_limit), "0", "0", "1000000000", NULL, 0 },
    { "tenant", "genesys_secret", KEY_STRLIST, TF(genesys_secrets), NULL, NULL, NULL, NULL, KEY_F_SECRET },
    { "tenant", "genesys_api_key", KEY_STRLIST, TF(genesys_api_keys), NULL, NULL, NULL, NULL, KEY_F_SECRET },
    { "tenant", "twilio_auth_token", KEY_STRLIST, TF(twilio_auth_tokens), NULL, NULL, NULL, NULL, KEY_F_SECRET },
    { "tenant", "account_sid", KEY_STRLIST, TF(account_sids), NULL, NULL, NULL, NULL, 0 },
    { "tenant", "allow", KEY_CIDRS, TF(ip.allow), NULL, NULL, NULL, NULL, 0 },
    { "tenant", "deny", KEY_CIDRS, TF(ip.deny), NULL, NULL, NULL, NULL, 0 },
};

static const char *const source_schemes[] = { "standard-webhooks", "stripe", "hmac", "api-key", "basic", "jwt", NULL };
static const char *const hmac_algorithms[] = { "sha1", "sha256", "sha512", NULL };
static const char *const hmac_encodings[] = { "hex", "base64", NULL };

/* Keys of a [source.<name>] section (docs/generic.md); offsets are into struct hg_source_conf. */
static const struct key source_keys[] = {
    { "source", "scheme", KEY_ENUM, SF(scheme), NULL, NULL, NULL, source_schemes, 0 },
    { "source", "secret", KEY_STRLIST, SF(secrets), NULL, NULL, NULL, NULL, KEY_F_SECRET },
    { "source", "header", KEY_STRING, SF(header), NULL, NULL, NULL, NULL, 0 },
    { "source", "algorithm", KEY_ENUM, SF(algorithm), "sha256", NULL, NULL, hmac_algorithms, 0 },
    { "source", "encoding", KEY_ENUM, SF(encoding), "hex", NULL, NULL, hmac_encodings, 0 },
    { "source", "prefix", KEY_STRING, SF(prefix), NULL, NULL, NULL, NULL, 0 },
    { "source", "timestamp_header", KEY_STRING, SF(timestamp_header), NULL, NULL, NULL, NULL, 0 },
    { "source", "template", KEY_STRING, SF(template), NULL, NULL, NULL, NULL, 0 },
    { "source", "user", KEY_STRING, SF(user), NULL, NULL, NULL, NULL, 0 },
    /* Not a secret, but the flag gives jwks_file (the documented way) its file reading. */
    { "source", "jwks", KEY_STRING, SF(jwks), NULL, NULL, NULL, NULL, KEY_F_SECRET },
    { "source", "issuer", KEY_STRING, SF(issuer), NULL, NULL, NULL, NULL, 0 },
    { "source", "audience", KEY_STRING, SF(audience), NULL, NULL, NULL, NULL, 0 },
    { "source", "tolerance", KEY_MS, SF(tolerance_ms), "5m", "1s", "1d", NULL, 0 },
    { "source", "id", KEY_STRING, SF(id), NULL, NULL, NULL, NULL, 0 },
    { "source", "type", KEY_STRING, SF(type), NULL, NULL, NULL, NULL, 0 },
    { "source", "tenant", KEY_STRING, SF(tenant), NULL, NULL, NULL, NULL, KEY_F_ID },
    { "source", "allow", KEY_CIDRS, SF(ip.allow), NULL, NULL, NULL, NULL, 0 },
    { "source", "deny", KEY_CIDRS, SF(ip.deny), NULL, NULL, NULL, NULL, 0 },
    { "source", "require_client_cert", KEY_BOOL, SF(require_client_cert), "no", NULL, NULL, NULL, 0 },
};

/*
 * Keys of an [endpoint.<name>] section (docs/outbound.md): the API's fields, checked at load by
 * the API's own validation (outbound/endpoint.h); `header.<Name> = value` lines are custom headers.
 * Unset keys take the API's defaults.
 */
static const struct key endpoint_keys[] = {
    { "endpoint", "url", KEY_STRING, EF(url), NULL, NULL, NULL, NULL, 0 },
    { "endpoint", "events", KEY_STRLIST, EF(events), NULL, NULL, NULL, NULL, 0 },
    { "endpoint", "secret", KEY_STRING, EF(secret), NULL, NULL, NULL, NULL, KEY_F_SECRET },
    { "endpoint", "signature_method", KEY_STRING, EF(signature_method), NULL, NULL, NULL, NULL, 0 },
    { "endpoint", "timeout_seconds", KEY_MS, EF(timeout_ms), NULL, NULL, NULL, NULL, 0 },
    { "endpoint", "max_attempts", KEY_UINT, EF(max_attempts), NULL, NULL, NULL, NULL, 0 },
    { "endpoint", "initial_delay_seconds", KEY_MS, EF(initial_delay_ms), NULL, NULL, NULL, NULL, 0 },
    { "endpoint", "max_delay_seconds", KEY_MS, EF(max_delay_ms), NULL, NULL, NULL, NULL, 0 },
    { "endpoint", "backoff_multiplier", KEY_STRING, EF(backoff_multiplier), NULL, NULL, NULL, NULL, 0 },
    { "endpoint", "retry_on_status_codes", KEY_STRLIST, EF(retry_on_status_codes), NULL, NULL, NULL, NULL, 0 },
    { "endpoint", "http_method", KEY_STRING, EF(http_method), NULL, NULL, NULL, NULL, 0 },
    { "endpoint", "tenant", KEY_STRING, EF(tenant), NULL, NULL, NULL, NULL, 0 },
    { "endpoint", "environment", KEY_STRING, EF(environment), NULL, NULL, NULL, NULL, 0 },
};

/* cfg_<name> must stay an id (< HG_OB_ID_MAX of the store). */
#define ENDPOINT_NAME_MAX 48

#define N_CONF_KEYS   HG_ARRAY_SIZE(conf_keys)
#define N_ENDPOINT_KEYS HG_ARRAY_SIZE(endpoint_keys)
#define N_TENANT_KEYS HG_ARRAY_SIZE(tenant_keys)
#define N_SOURCE_KEYS HG_ARRAY_SIZE(source_keys)

static const char *const sections[] = {
    "server", "log", "whatsapp", "genesys", "twilio", "pubsub", "spool", "ndjson", "amqp", "redis", "ratelimit", "tenants", "s3",
    "media", "state_manager",
    "admin", "outbound",
};

/* Where a key's current value came from, for conflict checks and cross-key error messages. */
struct origin {
    int line;           /* file line, 0 = not set in the file */
    bool via_file;      /* set in the file through <key>_file */
    bool env;           /* overridden from the environment */
    bool env_file;      /* ... through HOOKGATE_..._FILE */
};

/* A key set in a [rules.<id>] section of the file. */
struct rules_key {
    char *name;
    int line;
};

/* Load-time bookkeeping of one [rules.<id>] section (parallel to hg_conf.rules until the sort). */
struct rules_sec {
    int line;                          /* header line */
    struct rules_key *keys;
    size_t n_keys;
};

/* One env name a rules key answers to (HOOKGATE_RULES_<ID>_<KEY>). */
struct rules_env {
    char name[192];                    /* longest: 15 + 64 (id) + 1 + 10 + 64 (tag) */
    size_t sec;                        /* index into hg_conf.rules */
    const char *key;                   /* points into a static table or a rules_key */
    int line;                          /* the key's line, or the section's for keys not in the file */
};

/* State of one hg_conf_load call. */
struct load {
    struct hg_conf *c;
    const char *path;                  /* as the caller gave it, for messages */
    /* file reading (the inih reader walks this buffer line by line) */
    const char *text, *pos, *end;
    int lineno;                        /* line the reader handed out last */
    char section[128];                 /* current section header, as the reader saw it */
    struct hg_tenant_conf *tenant;     /* current tenant section, or NULL */
    int *tenant_lines;                 /* header line of each tenant section */
    int section_lines[HG_ARRAY_SIZE(sections)]; /* header line of each fixed section, 0 = none */
    struct origin origin[N_CONF_KEYS];
    struct origin (*tenant_origin)[N_TENANT_KEYS];
    size_t tenant_cap;
    struct rules_sec *rules_secs;
    size_t rules_cap;
    size_t rules_cur;                  /* current [rules.<id>] section, SIZE_MAX = none */
    struct hg_source_conf *source;     /* current source section, or NULL */
    int *source_lines;                 /* header line of each source section */
    struct origin (*source_origin)[N_SOURCE_KEYS];
    size_t source_cap;
    struct hg_endpoint_conf *endpoint; /* current endpoint section, or NULL */
    int *endpoint_lines;               /* header line of each endpoint section */
    struct origin (*endpoint_origin)[N_ENDPOINT_KEYS];
    size_t endpoint_cap;
    struct rules_env *rules_env;       /* sorted by name */
    size_t n_rules_env;
    bool failed;
    char *err;
    size_t errlen;
};

static void fail(struct load *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Record the first error only: later ones are usually consequences of it. */
static void fail(struct load *L, const char *fmt, ...)
{
    if (L->failed)
        return;
    L->failed = true;
    if (L->errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(L->err, L->errlen, fmt, ap);
    va_end(ap);
}

/* ---------------------------------------------------------------- tenants */

static struct hg_tenant_conf *tenant_add(struct load *L, const char *id, int line)
{
    struct hg_conf *c = L->c;
    if (c->n_tenants == L->tenant_cap) {
        L->tenant_cap = L->tenant_cap ? L->tenant_cap * 2 : 8;
        c->tenants = hg_xrealloc(c->tenants, L->tenant_cap * sizeof(*c->tenants));
        L->tenant_origin = hg_xrealloc(L->tenant_origin, L->tenant_cap * sizeof(*L->tenant_origin));
        L->tenant_lines = hg_xrealloc(L->tenant_lines, L->tenant_cap * sizeof(*L->tenant_lines));
    }
    size_t i = c->n_tenants++;
    struct hg_tenant_conf *t = &c->tenants[i];
    memset(t, 0, sizeof(*t));
    memset(L->tenant_origin[i], 0, sizeof(L->tenant_origin[i]));
    L->tenant_lines[i] = line;
    t->id = hg_xstrdup(id);
    char why[CONF_WHY];
    for (size_t k = 0; k < N_TENANT_KEYS; k++)
        if (tenant_keys[k].def && conf_set_value(&tenant_keys[k], t, tenant_keys[k].def, why, sizeof(why)))
            abort();
    return t;
}

static void keys_free(const struct key *keys, size_t n, void *base);

static void tenant_free(struct hg_tenant_conf *t)
{
    free(t->id);
    keys_free(tenant_keys, N_TENANT_KEYS, t);
}

/* ---------------------------------------------------------------- sources */

/* A [source.<name>] header: a generic sender (same name rules as tenant ids). */
static void source_section(struct load *L, const char *name)
{
    struct hg_conf *c = L->c;
    if (!conf_valid_tenant_id(name)) {
        fail(L, "%s:%d: '%s' is not a source name (1-%d of A-Z a-z 0-9 - _ .)", L->path, L->lineno, name,
             CONF_ID_MAX);
        return;
    }
    for (size_t i = 0; i < c->n_sources; i++) {
        if (strcmp(c->sources[i].name, name) == 0) {
            fail(L, "%s:%d: duplicate section [%s] (first at line %d)", L->path, L->lineno, L->section,
                 L->source_lines[i]);
            return;
        }
    }
    if (c->n_sources == CONF_MAX_TENANTS) {
        fail(L, "%s:%d: more than %d source sections", L->path, L->lineno, CONF_MAX_TENANTS);
        return;
    }
    if (c->n_sources == L->source_cap) {
        L->source_cap = L->source_cap ? L->source_cap * 2 : 8;
        c->sources = hg_xrealloc(c->sources, L->source_cap * sizeof(*c->sources));
        L->source_origin = hg_xrealloc(L->source_origin, L->source_cap * sizeof(*L->source_origin));
        L->source_lines = hg_xrealloc(L->source_lines, L->source_cap * sizeof(*L->source_lines));
    }
    size_t i = c->n_sources++;
    struct hg_source_conf *s = &c->sources[i];
    memset(s, 0, sizeof(*s));
    memset(L->source_origin[i], 0, sizeof(L->source_origin[i]));
    L->source_lines[i] = L->lineno;
    s->name = hg_xstrdup(name);
    char why[CONF_WHY];
    for (size_t k = 0; k < N_SOURCE_KEYS; k++)
        if (source_keys[k].def && conf_set_value(&source_keys[k], s, source_keys[k].def, why, sizeof(why)))
            abort();
    L->source = s;
}

/* ---------------------------------------------------------------- endpoints */

/* An [endpoint.<name>] header: an outbound subscriber (same name rules as tenant ids, shorter). */
static void endpoint_section(struct load *L, const char *name)
{
    struct hg_conf *c = L->c;
    if (!conf_valid_tenant_id(name) || strlen(name) > ENDPOINT_NAME_MAX) {
        fail(L, "%s:%d: '%s' is not an endpoint name (1-%d of A-Z a-z 0-9 - _ .)", L->path, L->lineno, name,
             ENDPOINT_NAME_MAX);
        return;
    }
    for (size_t i = 0; i < c->n_endpoints; i++) {
        if (strcmp(c->endpoints[i].name, name) == 0) {
            fail(L, "%s:%d: duplicate section [%s] (first at line %d)", L->path, L->lineno, L->section,
                 L->endpoint_lines[i]);
            return;
        }
    }
    if (c->n_endpoints == CONF_MAX_TENANTS) {
        fail(L, "%s:%d: more than %d endpoint sections", L->path, L->lineno, CONF_MAX_TENANTS);
        return;
    }
    if (c->n_endpoints == L->endpoint_cap) {
        L->endpoint_cap = L->endpoint_cap ? L->endpoint_cap * 2 : 8;
        c->endpoints = hg_xrealloc(c->endpoints, L->endpoint_cap * sizeof(*c->endpoints));
        L->endpoint_origin = hg_xrealloc(L->endpoint_origin, L->endpoint_cap * sizeof(*L->endpoint_origin));
        L->endpoint_lines = hg_xrealloc(L->endpoint_lines, L->endpoint_cap * sizeof(*L->endpoint_lines));
    }
    size_t i = c->n_endpoints++;
    struct hg_endpoint_conf *e = &c->endpoints[i];
    memset(e, 0, sizeof(*e));
    memset(L->endpoint_origin[i], 0, sizeof(L->endpoint_origin[i]));
    L->endpoint_lines[i] = L->lineno;
    e->name = hg_xstrdup(name);
    L->endpoint = e;
}

/* A `header.<Name> = value` line of the current endpoint section. */
static void endpoint_header(struct load *L, const char *name, const char *value)
{
    struct hg_endpoint_conf *e = L->endpoint;
    for (size_t i = 0; i < e->header_names.n; i++) {
        if (strcasecmp(e->header_names.items[i], name) == 0) {
            fail(L, "%s:%d: header '%s' set twice in [endpoint.%s]", L->path, L->lineno, name, e->name);
            return;
        }
    }
    if (e->header_names.n == 32) {
        fail(L, "%s:%d: more than 32 headers in [endpoint.%s]", L->path, L->lineno, e->name);
        return;
    }
    e->header_names.items = hg_xrealloc(e->header_names.items, (e->header_names.n + 1) * sizeof(char *));
    e->header_values.items = hg_xrealloc(e->header_values.items, (e->header_values.n + 1) * sizeof(char *));
    e->header_names.items[e->header_names.n++] = hg_xstrdup(name);
    e->header_values.items[e->header_values.n++] = hg_xstrdup(value);
}

/* Milliseconds as the API's seconds (an integer when whole). */
static json_t *seconds_json(uint64_t ms)
{
    return ms % 1000 ? json_real((double)ms / 1000.0) : json_integer((json_int_t)(ms / 1000));
}

/*
 * Each endpoint section into the API's document, checked by the API's validation, so a file
 * endpoint and an API endpoint obey the same rules. Unset keys are left out (API defaults).
 */
static void endpoint_validate(struct load *L)
{
    for (size_t i = 0; i < L->c->n_endpoints && !L->failed; i++) {
        struct hg_endpoint_conf *e = &L->c->endpoints[i];
        const struct origin *o = L->endpoint_origin[i];
        const char *at = L->path ? L->path : "env";
        int line = L->endpoint_lines[i];
#define SET(k) (o[k].line || o[k].env)
        json_t *in = json_object(), *rp = json_object();
        for (size_t k = 0; k < N_ENDPOINT_KEYS; k++) {
            if (!SET(k))
                continue;
            const struct key *key = &endpoint_keys[k];
            void *field = (char *)e + key->off;
            json_t *v = NULL, *into = in;
            const char *n = key->name;
            if (strcmp(n, "max_attempts") == 0 || strcmp(n, "initial_delay_seconds") == 0 ||
                strcmp(n, "max_delay_seconds") == 0 || strcmp(n, "backoff_multiplier") == 0 ||
                strcmp(n, "retry_on_status_codes") == 0)
                into = rp;
            if (key->type == KEY_STRING) {
                const char *sv = *(char **)field;
                if (strcmp(n, "backoff_multiplier") == 0 && sv) {
                    char *end;
                    double d = strtod(sv, &end);
                    v = end != sv && *end == '\0' ? json_real(d) : json_string(sv); /* a string: refused below */
                } else {
                    v = sv ? json_string(sv) : json_null();
                }
            } else if (key->type == KEY_MS) {
                v = seconds_json(*(uint64_t *)field);
            } else if (key->type == KEY_UINT) {
                v = json_integer(*(uint32_t *)field);
            } else if (key->type == KEY_STRLIST) {
                const struct hg_strlist *l = field;
                v = json_array();
                for (size_t j = 0; j < l->n; j++) {
                    int64_t code;
                    if (strcmp(n, "retry_on_status_codes") == 0 && hg_str_to_i64(l->items[j], 0, 999, &code) == 0)
                        json_array_append_new(v, json_integer(code));
                    else
                        json_array_append_new(v, json_string(l->items[j]));
                }
            }
            json_object_set_new(into, n, v);
        }
#undef SET
        if (json_object_size(rp))
            json_object_set(in, "retry_policy", rp);
        json_decref(rp);
        if (e->header_names.n) {
            json_t *h = json_object();
            for (size_t j = 0; j < e->header_names.n; j++)
                json_object_set_new(h, e->header_names.items[j], json_string(e->header_values.items[j]));
            json_object_set_new(in, "custom_headers", h);
        }
        struct hg_ob_problems p = { json_array() };
        json_t *doc = hg_ob_endpoint_canonical(in, &p);
        json_decref(in);
        if (doc == NULL) {
            json_t *first = json_array_get(p.list, 0);
            fail(L, "%s:%d: [endpoint.%s] %s %s", at, line, e->name,
                 json_string_value(json_object_get(first, "field")), json_string_value(json_object_get(first, "message")));
        } else if (e->secret == NULL) {
            fail(L, "%s:%d: [endpoint.%s] needs a secret (or secret_file): a generated one would change at every load",
                 at, line, e->name);
        } else {
            char id[16 + ENDPOINT_NAME_MAX];
            snprintf(id, sizeof(id), "cfg_%s", e->name);
            json_object_set_new(doc, "id", json_string(id));
            json_object_set_new(doc, "source", json_string("config"));
            e->doc = doc;
            doc = NULL;
        }
        json_decref(doc);
        json_decref(p.list);
    }
}

/* An hmac template: literal text with {body} exactly once and {timestamp} at most once (and
 * only with a timestamp_header): NULL, or why not. */
static const char *template_problem(const struct hg_source_conf *s)
{
    const char *t = s->template;
    int body = 0, ts = 0;
    for (const char *p = strchr(t, '{'); p != NULL; p = strchr(p + 1, '{')) {
        if (strncmp(p, "{body}", 6) == 0)
            body++;
        else if (strncmp(p, "{timestamp}", 11) == 0)
            ts++;
        else
            return "template knows only {body} and {timestamp}";
    }
    if (body != 1)
        return "template needs {body} exactly once";
    if (ts > 1)
        return "template has {timestamp} more than once";
    if (ts == 1 && s->timestamp_header == NULL)
        return "template has {timestamp} but no timestamp_header";
    return NULL;
}

/* Per-scheme required keys; a jwt source's JWKS parsed (core/jwt.h: the parser that verifies). */
static void source_validate(struct load *L)
{
    for (size_t i = 0; i < L->c->n_sources && !L->failed; i++) {
        struct hg_source_conf *s = &L->c->sources[i];
        const char *at = L->path ? L->path : "env";
        int line = L->source_lines[i];
        char why[CONF_WHY];
        if (s->scheme == NULL) {
            fail(L, "%s:%d: [source.%s] needs a scheme (standard-webhooks, stripe, hmac, api-key, basic, jwt)", at, line,
                 s->name);
        } else if (strcmp(s->scheme, "jwt") == 0 && s->jwks != NULL) {
            if (hg_jwks_parse(s->jwks, strlen(s->jwks), &s->jwks_keys, why, sizeof(why)) != 0)
                fail(L, "%s:%d: [source.%s] jwks_file: %s", at, line, s->name, why);
        } else if (strcmp(s->scheme, "hmac") == 0 && (s->header == NULL || s->header[0] == '\0')) {
            fail(L, "%s:%d: [source.%s] scheme = hmac needs a header", at, line, s->name);
        } else if (strcmp(s->scheme, "hmac") == 0 && s->template != NULL && template_problem(s) != NULL) {
            fail(L, "%s:%d: [source.%s] %s", at, line, s->name, template_problem(s));
        } else if (strcmp(s->scheme, "basic") == 0 && (s->user == NULL || s->user[0] == '\0')) {
            fail(L, "%s:%d: [source.%s] scheme = basic needs a user", at, line, s->name);
        }
    }
}

/* ---------------------------------------------------------------- rules */

/* The keys of every rules section other than tag keys (see hg_rules_set). */
static const char *const rules_fixed_keys[] = {
    "low", "medium", "high", "emergency", "low_regex", "medium_regex", "high_regex", "emergency_regex",
    "low_after_hours", "medium_after_hours", "high_after_hours", "emergency_after_hours",
    "low_after_hours_regex", "medium_after_hours_regex", "high_after_hours_regex", "emergency_after_hours_regex",
    "timezone", "hours",
};

/* A [rules.<id>] header: the id is a tenant id or "default"; it need not have a [tenant.<id>]. */
static void rules_section(struct load *L, const char *id)
{
    struct hg_conf *c = L->c;
    if (!conf_valid_tenant_id(id)) {
        fail(L, "%s:%d: '%s' is not a tenant id (1-%d of A-Z a-z 0-9 - _ .)", L->path, L->lineno, id,
             CONF_ID_MAX);
        return;
    }
    for (size_t i = 0; i < c->n_rules; i++) {
        if (strcmp(c->rules[i].id, id) == 0) {
            fail(L, "%s:%d: duplicate section [%s] (first at line %d)", L->path, L->lineno, L->section,
                 L->rules_secs[i].line);
            return;
        }
    }
    if (c->n_rules == CONF_MAX_TENANTS) {
        fail(L, "%s:%d: more than %d rules sections", L->path, L->lineno, CONF_MAX_TENANTS);
        return;
    }
    if (c->n_rules == L->rules_cap) {
        L->rules_cap = L->rules_cap ? L->rules_cap * 2 : 8;
        c->rules = hg_xrealloc(c->rules, L->rules_cap * sizeof(*c->rules));
        L->rules_secs = hg_xrealloc(L->rules_secs, L->rules_cap * sizeof(*L->rules_secs));
    }
    size_t i = c->n_rules++;
    c->rules[i].id = hg_xstrdup(id);
    c->rules[i].rules = hg_rules_new();
    memset(&L->rules_secs[i], 0, sizeof(L->rules_secs[i]));
    L->rules_secs[i].line = L->lineno;
    L->rules_cur = i;
}

/* One key = value of the current [rules.<id>] section: compiled right away, so errors have a line. */
static void rules_pair(struct load *L, const char *section, const char *name, const char *value)
{
    struct hg_rules_conf *rc = &L->c->rules[L->rules_cur];
    struct rules_sec *rs = &L->rules_secs[L->rules_cur];
    for (size_t i = 0; i < rs->n_keys; i++) {
        if (strcmp(rs->keys[i].name, name) == 0) {
            fail(L, "%s:%d: duplicate key '%s' in [%s] (first at line %d)", L->path, L->lineno, name,
                 section, rs->keys[i].line);
            return;
        }
    }
    char why[CONF_WHY];
    int rc_set = hg_rules_set(rc->rules, name, value, why, sizeof(why));
    if (rc_set == HG_ERR_NOT_FOUND) {
        fail(L, "%s:%d: unknown key '%s' in [%s]", L->path, L->lineno, name, section);
        return;
    }
    if (rc_set) {
        fail(L, "%s:%d: %s: %s", L->path, L->lineno, name, why);
        return;
    }
    rs->keys = hg_xrealloc(rs->keys, (rs->n_keys + 1) * sizeof(*rs->keys));
    rs->keys[rs->n_keys].name = hg_xstrdup(name);
    rs->keys[rs->n_keys].line = L->lineno;
    rs->n_keys++;
}

/* ---------------------------------------------------------------- file parsing */

/*
 * Section headers are checked here, in the reader, rather than in the key handler: inih only
 * reports name=value pairs, so an empty unknown section (or an empty tenant section) would
 * otherwise pass unseen. The rules mirror inih's (leading blanks skipped, name up to ']').
 */
static void on_section_line(struct load *L, const char *line, size_t n)
{
    size_t i = 0;
    if (L->lineno == 1 && n >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0)
        i = 3;   /* UTF-8 BOM, which inih skips too */
    while (i < n && conf_is_space(line[i]))
        i++;
    if (i == n || line[i] != '[')
        return;
    const char *name = line + i + 1;
    const char *close = memchr(name, ']', n - i - 1);
    if (close == NULL)
        return;   /* inih reports the syntax error with this line */
    size_t nl = (size_t)(close - name);
    if (nl >= sizeof(L->section)) {
        fail(L, "%s:%d: section name too long", L->path, L->lineno);
        return;
    }
    memcpy(L->section, name, nl);
    L->section[nl] = '\0';
    L->tenant = NULL;
    L->source = NULL;
    L->endpoint = NULL;
    L->rules_cur = SIZE_MAX;

    if (strncmp(L->section, "endpoint.", 9) == 0) {
        endpoint_section(L, L->section + 9);
        return;
    }

    if (strncmp(L->section, "source.", 7) == 0) {
        source_section(L, L->section + 7);
        return;
    }

    if (strncmp(L->section, "rules.", 6) == 0) {
        rules_section(L, L->section + 6);
        return;
    }

    if (strncmp(L->section, "tenant.", 7) == 0) {
        const char *id = L->section + 7;
        if (!conf_valid_tenant_id(id)) {
            fail(L, "%s:%d: '%s' is not a tenant id (1-%d of A-Z a-z 0-9 - _ .)", L->path, L->lineno,
                 id, CONF_ID_MAX);
            return;
        }
        for (size_t t = 0; t < L->c->n_tenants; t++) {
            if (strcmp(L->c->tenants[t].id, id) == 0) {
                fail(L, "%s:%d: duplicate section [%s] (first at line %d)", L->path, L->lineno,
                     L->section, L->tenant_lines[t]);
                return;
            }
        }
        if (L->c->n_tenants == CONF_MAX_TENANTS) {
            fail(L, "%s:%d: more than %d tenant sections", L->path, L->lineno, CONF_MAX_TENANTS);
            return;
        }
        L->tenant = tenant_add(L, id, L->lineno);
        return;
    }
    for (size_t s = 0; s < HG_ARRAY_SIZE(sections); s++) {
        if (strcmp(L->section, sections[s]) != 0)
            continue;
        /* A repeated section would make "which value wins" depend on reading order. */
        if (L->section_lines[s])
            fail(L, "%s:%d: duplicate section [%s] (first at line %d)", L->path, L->lineno,
                 L->section, L->section_lines[s]);
        L->section_lines[s] = L->lineno;
        return;
    }
    fail(L, "%s:%d: unknown section [%s]", L->path, L->lineno, L->section);
}

/* inih reader: hands out one line at a time so the handler knows its line number. */
static char *on_read_line(char *str, int num, void *stream)
{
    struct load *L = stream;
    if (L->failed || L->pos >= L->end)
        return NULL;
    const char *nl = memchr(L->pos, '\n', (size_t)(L->end - L->pos));
    size_t n = nl ? (size_t)(nl - L->pos) + 1 : (size_t)(L->end - L->pos);
    L->lineno++;
    if (n > CONF_MAX_LINE || (int)n >= num) {
        fail(L, "%s:%d: line longer than %d bytes", L->path, L->lineno, CONF_MAX_LINE);
        return NULL;
    }
    if (memchr(L->pos, '\0', n)) {
        fail(L, "%s:%d: NUL byte in line", L->path, L->lineno);
        return NULL;
    }
    memcpy(str, L->pos, n);
    str[n] = '\0';
    on_section_line(L, str, n);
    L->pos += n;
    return L->failed ? NULL : str;
}

static const struct key *key_find(const struct key *table, size_t n, const char *section, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(table[i].section, section) == 0 && strcmp(table[i].name, name) == 0)
            return &table[i];
    return NULL;
}

/* inih handler: one name=value pair at line L->lineno. */
static int on_pair(void *user, const char *section, const char *name, const char *value)
{
    struct load *L = user;
    if (L->failed)
        return 1;
    const struct key *table = conf_keys;
    size_t ntable = N_CONF_KEYS;
    void *base = L->c;
    struct origin *origins = L->origin;
    const char *ksec = section;
    if (section[0] == '\0') {
        fail(L, "%s:%d: key '%s' outside any section", L->path, L->lineno, name);
        return 1;
    }
    if (L->rules_cur != SIZE_MAX) {
        rules_pair(L, section, name, value);
        return 1;
    }
    if (L->tenant) {
        table = tenant_keys;
        ntable = N_TENANT_KEYS;
        base = L->tenant;
        origins = L->tenant_origin[L->tenant - L->c->tenants];
        ksec = "tenant";
    }
    if (L->source) {
        table = source_keys;
        ntable = N_SOURCE_KEYS;
        base = L->source;
        origins = L->source_origin[L->source - L->c->sources];
        ksec = "source";
    }
    if (L->endpoint) {
        if (strncmp(name, "header.", 7) == 0) {
            endpoint_header(L, name + 7, value);
            return 1;
        }
        table = endpoint_keys;
        ntable = N_ENDPOINT_KEYS;
        base = L->endpoint;
        origins = L->endpoint_origin[L->endpoint - L->c->endpoints];
        ksec = "endpoint";
    }

    /* "<key>_file" names the file holding a secret key's value. */
    bool via_file = false;
    const struct key *k = key_find(table, ntable, ksec, name);
    size_t nl = strlen(name);
    if (k == NULL && nl > 5 && strcmp(name + nl - 5, "_file") == 0) {
        char base_name[64];
        if (nl - 5 < sizeof(base_name)) {
            memcpy(base_name, name, nl - 5);
            base_name[nl - 5] = '\0';
            k = key_find(table, ntable, ksec, base_name);
            if (k && !(k->flags & KEY_F_SECRET))
                k = NULL;
            via_file = k != NULL;
        }
    }
    if (k == NULL) {
        fail(L, "%s:%d: unknown key '%s' in [%s]", L->path, L->lineno, name, section);
        return 1;
    }

    struct origin *o = &origins[k - table];
    if (o->line) {
        if (o->via_file != via_file)
            fail(L, "%s:%d: %s and %s_file are both set (the other at line %d)", L->path, L->lineno,
                 k->name, k->name, o->line);
        else
            fail(L, "%s:%d: duplicate key '%s' in [%s] (first at line %d)", L->path, L->lineno,
                 name, section, o->line);
        return 1;
    }
    char why[CONF_WHY];
    int rc = via_file ? conf_set_from_file(k, base, value, why, sizeof(why))
                      : conf_set_value(k, base, value, why, sizeof(why));
    if (rc) {
        fail(L, "%s:%d: %s: %s", L->path, L->lineno, name, why);
        return 1;
    }
    o->line = L->lineno;
    o->via_file = via_file;
    return 1;
}

/* Read the whole file (bounded) and feed it to inih line by line. */
static void parse_file(struct load *L)
{
    char *text = NULL;
    FILE *f = fopen(L->path, "re");
    if (f == NULL) {
        fail(L, "%s: cannot open: %s", L->path, strerror(errno));
        return;
    }
    text = hg_xmalloc(CONF_MAX_FILE + 1);
    size_t len = fread(text, 1, CONF_MAX_FILE + 1, f);
    if (ferror(f)) {
        fail(L, "%s: cannot read: %s", L->path, strerror(errno));
        goto out;
    }
    if (len > CONF_MAX_FILE) {
        fail(L, "%s: bigger than %u bytes", L->path, CONF_MAX_FILE);
        goto out;
    }
    L->text = L->pos = text;
    L->end = text + len;

    /*
     * inih's knobs are process globals in Debian's build; set them on every load (the main thread
     * is the only caller). Multi-line values are off so an indented line is never silently glued
     * to the previous key; the heap line buffer is sized so the reader's own limit comes first.
     */
    ini_allow_multiline = false;
    ini_allow_inline_comments = true;
    ini_stop_on_first_error = true;
    ini_use_stack = false;
    ini_allow_realloc = false;
    ini_max_line = CONF_MAX_LINE + 3;
    ini_initial_alloc = CONF_MAX_LINE + 3;

    int rc = ini_parse_stream(on_read_line, L, on_pair, L);
    if (!L->failed && rc > 0)
        fail(L, "%s:%d: syntax error (expected [section] or key = value)", L->path, rc);
    else if (!L->failed && rc < 0)
        fail(L, "%s: cannot parse: %s", L->path, rc == -2 ? "out of memory" : "read error");
out:
    fclose(f);
    free(text);
    L->text = L->pos = L->end = NULL;
}

/* ---------------------------------------------------------------- environment */

/* "HOOKGATE_" + upper(a) [+ "_" + upper(b)] [+ "_" + upper(c)], '-' and '.' become '_'. */
static void env_name(char *out, size_t n, const char *a, const char *b, const char *c)
{
    size_t o = (size_t)snprintf(out, n, "HOOKGATE_%s%s%s%s%s", a, b ? "_" : "", b ? b : "",
                                c ? "_" : "", c ? c : "");
    for (size_t i = 9; i < o && i < n; i++) {
        unsigned char ch = (unsigned char)out[i];
        out[i] = (ch == '-' || ch == '.') ? '_' : (char)toupper(ch);
    }
}

extern char **environ;

/*
 * getenv, or for tenant keys a case-insensitive match: tenant ids are case-sensitive in the file
 * but env names are conventionally upper case, so HOOKGATE_TENANT_acme_... is accepted too. Two
 * spellings of one name set at once are ambiguous and an error.
 */
static const char *env_lookup(struct load *L, const char *name, bool ci)
{
    if (!ci)
        return getenv(name);
    size_t n = strlen(name);
    const char *found = NULL;
    for (char **e = environ; e && *e; e++) {
        if (strncasecmp(*e, name, n) != 0 || (*e)[n] != '=')
            continue;
        if (found) {
            fail(L, "env %s: set more than once with different case", name);
            return NULL;
        }
        found = *e + n + 1;
    }
    return found;
}

/* Apply HOOKGATE_<prefix>_<KEY> and ..._FILE for every key of `table` onto `base`. */
static void apply_env_table(struct load *L, const struct key *table, size_t n, void *base,
                            struct origin *origins, const char *sec, const char *id)
{
    for (size_t i = 0; i < n && !L->failed; i++) {
        const struct key *k = &table[i];
        char name[256], fname[262];
        env_name(name, sizeof(name), sec, id, k->name);
        snprintf(fname, sizeof(fname), "%s_FILE", name);
        const char *v = env_lookup(L, name, id != NULL);
        const char *fv = (k->flags & KEY_F_SECRET) ? env_lookup(L, fname, id != NULL) : NULL;
        if (L->failed)
            return;
        if (v && fv) {
            fail(L, "env %s: both %s and %s are set", name, name, fname);
            return;
        }
        char why[CONF_WHY];
        if (v) {
            if (conf_set_value(k, base, v, why, sizeof(why)))
                fail(L, "env %s: %s", name, why);
            origins[i].env = true;
            origins[i].env_file = false;
        } else if (fv) {
            if (conf_set_from_file(k, base, fv, why, sizeof(why)))
                fail(L, "env %s: %s", fname, why);
            origins[i].env = true;
            origins[i].env_file = true;
        }
    }
}

/* Is `name` one of the env names this configuration reads? */
static bool env_known(struct load *L, const char *name)
{
    char want[256], wantf[262];
    for (size_t i = 0; i < N_CONF_KEYS; i++) {
        env_name(want, sizeof(want), conf_keys[i].section, conf_keys[i].name, NULL);
        snprintf(wantf, sizeof(wantf), "%s_FILE", want);
        if (strcmp(name, want) == 0 || ((conf_keys[i].flags & KEY_F_SECRET) && strcmp(name, wantf) == 0))
            return true;
    }
    for (size_t t = 0; t < L->c->n_tenants; t++) {
        for (size_t i = 0; i < N_TENANT_KEYS; i++) {
            env_name(want, sizeof(want), "tenant", L->c->tenants[t].id, tenant_keys[i].name);
            snprintf(wantf, sizeof(wantf), "%s_FILE", want);
            if (strcasecmp(name, want) == 0 || ((tenant_keys[i].flags & KEY_F_SECRET) && strcasecmp(name, wantf) == 0))
                return true;
        }
    }
    for (size_t t = 0; t < L->c->n_sources; t++) {
        for (size_t i = 0; i < N_SOURCE_KEYS; i++) {
            env_name(want, sizeof(want), "source", L->c->sources[t].name, source_keys[i].name);
            snprintf(wantf, sizeof(wantf), "%s_FILE", want);
            if (strcasecmp(name, want) == 0 || ((source_keys[i].flags & KEY_F_SECRET) && strcasecmp(name, wantf) == 0))
                return true;
        }
    }
    for (size_t t = 0; t < L->c->n_endpoints; t++) {
        for (size_t i = 0; i < N_ENDPOINT_KEYS; i++) {
            env_name(want, sizeof(want), "endpoint", L->c->endpoints[t].name, endpoint_keys[i].name);
            snprintf(wantf, sizeof(wantf), "%s_FILE", want);
            if (strcasecmp(name, want) == 0 ||
                ((endpoint_keys[i].flags & KEY_F_SECRET) && strcasecmp(name, wantf) == 0))
                return true;
        }
    }
    return false;
}

/* By name; ties (a clash, reported) in section then key order, so the message is stable. */
static int cmp_rules_env(const void *a, const void *b)
{
    const struct rules_env *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c || x->sec == y->sec)
        return c ? c : strcmp(x->key, y->key);
    return x->sec < y->sec ? -1 : 1;
}

static int cmp_rules_env_name(const void *a, const void *b)
{
    return strcmp(((const struct rules_env *)a)->name, ((const struct rules_env *)b)->name);
}

/*
 * Every env name a rules key answers to: the fixed keys of each section and the tag keys
 * its file section names (the environment cannot create tags, as it cannot create sections).
 * Sorted, so two keys that would share a name are found next to each other.
 */
static void rules_env_build(struct load *L)
{
    struct hg_conf *c = L->c;
    size_t n = 0;
    for (size_t s = 0; s < c->n_rules; s++)
        n += HG_ARRAY_SIZE(rules_fixed_keys) + L->rules_secs[s].n_keys;
    L->rules_env = hg_xcalloc(n ? n : 1, sizeof(*L->rules_env));
    for (size_t s = 0; s < c->n_rules; s++) {
        for (size_t k = 0; k < HG_ARRAY_SIZE(rules_fixed_keys); k++) {
            struct rules_env *e = &L->rules_env[L->n_rules_env++];
            env_name(e->name, sizeof(e->name), "rules", c->rules[s].id, rules_fixed_keys[k]);
            e->sec = s;
            e->key = rules_fixed_keys[k];
            e->line = L->rules_secs[s].line;
        }
        for (size_t k = 0; k < L->rules_secs[s].n_keys; k++) {
            const char *key = L->rules_secs[s].keys[k].name;
            if (strncmp(key, "tag", 3) != 0)
                continue;
            struct rules_env *e = &L->rules_env[L->n_rules_env++];
            env_name(e->name, sizeof(e->name), "rules", c->rules[s].id, key);
            e->sec = s;
            e->key = key;
            e->line = L->rules_secs[s].keys[k].line;
        }
    }
    if (L->n_rules_env)
        qsort(L->rules_env, L->n_rules_env, sizeof(*L->rules_env), cmp_rules_env);
    for (size_t i = 1; i < L->n_rules_env; i++) {
        const struct rules_env *a = &L->rules_env[i - 1], *b = &L->rules_env[i];
        if (strcmp(a->name, b->name) != 0)
            continue;
        fail(L, "%s:%d: '%s' in [rules.%s] and '%s' in [rules.%s] share the env name %s", L->path,
             HG_MAX(a->line, b->line), a->key, c->rules[a->sec].id, b->key, c->rules[b->sec].id, a->name);
        return;
    }
}

/* Apply HOOKGATE_RULES_<ID>_<KEY> overrides (matched case-insensitively, like tenant names). */
static void rules_env_apply(struct load *L)
{
    for (size_t i = 0; i < L->n_rules_env && !L->failed; i++) {
        const struct rules_env *e = &L->rules_env[i];
        const char *v = env_lookup(L, e->name, true);
        if (v == NULL)
            continue;
        char why[CONF_WHY];
        if (hg_rules_set(L->c->rules[e->sec].rules, e->key, v, why, sizeof(why)))
            fail(L, "env %s: %s", e->name, why);
    }
}

static bool rules_env_known(struct load *L, const char *name)
{
    struct rules_env want;
    size_t n = strlen(name);
    if (n >= sizeof(want.name))
        return false;
    for (size_t i = 0; i <= n; i++)
        want.name[i] = (char)toupper((unsigned char)name[i]);
    return L->n_rules_env &&
           bsearch(&want, L->rules_env, L->n_rules_env, sizeof(*L->rules_env), cmp_rules_env_name) != NULL;
}

static void apply_env(struct load *L)
{
    struct hg_conf *c = L->c;

    /* Two tenant ids that differ only in case or '-'/'_'/'.' would share env names. */
    for (size_t a = 0; a < c->n_tenants; a++) {
        for (size_t b = a + 1; b < c->n_tenants; b++) {
            char na[128], nb[128];
            env_name(na, sizeof(na), "tenant", c->tenants[a].id, NULL);
            env_name(nb, sizeof(nb), "tenant", c->tenants[b].id, NULL);
            if (strcmp(na, nb) == 0) {
                fail(L, "%s:%d: tenant ids '%s' and '%s' share the env prefix %s_", L->path,
                     L->tenant_lines[b], c->tenants[a].id, c->tenants[b].id, na);
                return;
            }
        }
    }

    for (size_t s = 0; s < HG_ARRAY_SIZE(sections) && !L->failed; s++) {
        /* Walk the table once per section so errors come in the documented order. */
        for (size_t i = 0; i < N_CONF_KEYS && !L->failed; i++)
            if (strcmp(conf_keys[i].section, sections[s]) == 0)
                apply_env_table(L, &conf_keys[i], 1, c, &L->origin[i], sections[s], NULL);
    }
    for (size_t t = 0; t < c->n_tenants && !L->failed; t++)
        apply_env_table(L, tenant_keys, N_TENANT_KEYS, &c->tenants[t], L->tenant_origin[t], "tenant",
                        c->tenants[t].id);
    for (size_t t = 0; t < c->n_sources && !L->failed; t++)
        apply_env_table(L, source_keys, N_SOURCE_KEYS, &c->sources[t], L->source_origin[t], "source",
                        c->sources[t].name);
    for (size_t t = 0; t < c->n_endpoints && !L->failed; t++)
        apply_env_table(L, endpoint_keys, N_ENDPOINT_KEYS, &c->endpoints[t], L->endpoint_origin[t], "endpoint",
                        c->endpoints[t].name);
    if (!L->failed)
        rules_env_build(L);
    if (!L->failed)
        rules_env_apply(L);
    if (L->failed)
        return;

    /*
     * A misspelt override would otherwise be ignored in silence, so any HOOKGATE_<SECTION>_...
     * name that no key reads is an error. Names outside the config sections (HOOKGATE_CONF, ...)
     * belong to other parts of the program and are left alone.
     */
    for (char **e = environ; e && *e; e++) {
        if (strncmp(*e, "HOOKGATE_", 9) != 0)
            continue;
        const char *eq = strchr(*e, '=');
        char name[256];
        if (eq == NULL || (size_t)(eq - *e) >= sizeof(name))
            continue;
        memcpy(name, *e, (size_t)(eq - *e));
        name[eq - *e] = '\0';
        bool in_section = false;
        char pre[64];
        for (size_t s = 0; s < HG_ARRAY_SIZE(sections) && !in_section; s++) {
            env_name(pre, sizeof(pre), sections[s], NULL, NULL);
            size_t pl = strlen(pre);
            in_section = strncmp(name, pre, pl) == 0 && name[pl] == '_';
        }
        bool tenant = strncmp(name, "HOOKGATE_TENANT_", 16) == 0;
        if (strncmp(name, "HOOKGATE_SOURCE_", 16) == 0) {
            if (!env_known(L, name)) {
                fail(L, "env %s: no [source.<name>] section or key matches it", name);
                return;
            }
            continue;
        }
        if (strncmp(name, "HOOKGATE_ENDPOINT_", 18) == 0) {
            if (!env_known(L, name)) {
                fail(L, "env %s: no [endpoint.<name>] section or key matches it", name);
                return;
            }
            continue;
        }
        if (strncmp(name, "HOOKGATE_RULES_", 15) == 0) {
            if (!rules_env_known(L, name)) {
                fail(L, "env %s: no [rules.<id>] section or key matches it", name);
                return;
            }
            continue;
        }
        if ((in_section || tenant) && !env_known(L, name)) {
            if (tenant)
                fail(L, "env %s: no [tenant.<id>] section or key matches it", name);
            else
                fail(L, "env %s: unknown key", name);
            return;
        }
    }
}

/* ---------------------------------------------------------------- validation */

/* "file:line" or "env NAME" for where global key `name` got its value (for cross-key errors). */
static void where(struct load *L, const char *section, const char *name, char *out, size_t n)
{
    const struct key *k = key_find(conf_keys, N_CONF_KEYS, section, name);
    const struct origin *o = &L->origin[k - conf_keys];
    if (o->env) {
        char en[256];
        env_name(en, sizeof(en), section, name, NULL);
        snprintf(out, n, "env %s%s", en, o->env_file ? "_FILE" : "");
    } else if (o->line) {
        snprintf(out, n, "%s:%d", L->path, o->line);
    } else {
        snprintf(out, n, "%s", L->path ? L->path : "defaults");
    }
}

/*
 * With queue_type = quorum, an [amqp] option that only classic queues have: its default (set for
 * classic queues) is dropped, an explicit value (file or env) is an error. False after fail().
 */
static bool classic_only(struct load *L, const char *key, uint32_t *value, const char *why)
{
    if (*value == 0)
        return true;
    const struct origin *o = &L->origin[key_find(conf_keys, N_CONF_KEYS, "amqp", key) - conf_keys];
    if (o->line == 0 && !o->env) {
        *value = 0;
        return true;
    }
    char at[320];
    where(L, "amqp", key, at, sizeof(at));
    fail(L, "%s: %s needs queue_type = classic (%s)", at, key, why);
    return false;
}

/*
 * [pubsub]: the key set of jwks_file is read here, into the snapshot, so a SIGHUP re-reads it
 * (jwks_url's keys are fetched by each worker, clients/jwks_remote.h); without an
 * audience to check (explicit, or derived from public_url) a token minted for any other service
 * would pass. False after fail().
 */
static bool validate_pubsub(struct load *L)
{
    struct hg_conf *c = L->c;
    char at[320], why[CONF_WHY];
    if (c->pubsub_jwks_file == NULL && c->pubsub_jwks_url == NULL)
        return true;
    where(L, "pubsub", c->pubsub_jwks_file ? "jwks_file" : "jwks_url", at, sizeof(at));
    if (c->pubsub_jwks_file && hg_jwks_load_file(c->pubsub_jwks_file, &c->pubsub_jwks, why, sizeof(why)) != 0) {
        fail(L, "%s: jwks_file %s: %s", at, c->pubsub_jwks_file, why);
        return false;
    }
    if (c->pubsub_audience == NULL && c->pubsub_public_url == NULL) {
        fail(L, "%s: [pubsub] needs audience or public_url (the token's aud is checked against it)", at);
        return false;
    }
    return true;
}

bool hg_conf_host_is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6) ||
               (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    return false;
}

static bool host_is_any(const char *host)
{
    return strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0;
}

/*
 * [admin]: /metrics names tenants and the management API changes state, so a listener that other
 * machines can reach needs a token; and it may not take the webhook port. False after fail().
 */
static bool validate_admin(struct load *L)
{
    struct hg_conf *c = L->c;
    char at[320];
    if (c->admin_listen_host == NULL)
        return true;
    where(L, "admin", "listen", at, sizeof(at));
    if (!hg_conf_host_is_loopback(c->admin_listen_host) && c->admin_token == NULL) {
        fail(L, "%s: listen %s is beyond loopback: set [admin] token (or token_file) so /metrics and the "
                "management API are not open to the network", at, c->admin_listen_host);
        return false;
    }
    if (c->admin_listen_port != 0 && c->admin_listen_port == c->listen_port &&
        (strcmp(c->admin_listen_host, c->listen_host) == 0 || host_is_any(c->admin_listen_host) ||
         host_is_any(c->listen_host))) {
        fail(L, "%s: listen uses the [server] listen port %u", at, c->listen_port);
        return false;
    }
    return true;
}

/* A file the process must be able to read (a certificate or key named by path). */
static bool readable_file(struct load *L, const char *section, const char *key, const char *path)
{
    char at[320];
    struct stat st;
    if (path == NULL)
        return true;
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, R_OK) == 0)
        return true;
    where(L, section, key, at, sizeof(at));
    fail(L, "%s: %s %s: %s", at, key, path, errno ? strerror(errno) : "not a regular file");
    return false;
}

/*
 * The backends' own checks, made here with the same functions the clients run at start, so
 * `hookgate -t` refuses what the server would and says why (a URL's secrets are never echoed).
 * False after fail().
 */
static bool validate_backends(struct load *L)
{
    struct hg_conf *c = L->c;
    char at[320], why[CONF_WHY];

    for (size_t i = 0; i < c->amqp_urls.n; i++) {
        why[0] = '\0';
        if (hg_amqp_url_check(c->amqp_urls.items[i], why, sizeof(why)) != 0) {
            where(L, "amqp", "url", at, sizeof(at));
            fail(L, "%s: [amqp] url item %zu: %s", at, i + 1, why);
            return false;
        }
    }
    if (c->amqp_tls_verify < 0) {
        where(L, "amqp", "tls_verify", at, sizeof(at));
        fail(L, "%s: tls_verify is on or off", at);
        return false;
    }
    if ((c->amqp_tls_cert == NULL) != (c->amqp_tls_key == NULL)) {
        where(L, "amqp", c->amqp_tls_cert ? "tls_cert" : "tls_key", at, sizeof(at));
        fail(L, "%s: [amqp] tls_cert and tls_key must be set together", at);
        return false;
    }
    if (!readable_file(L, "amqp", "tls_ca", c->amqp_tls_ca) || !readable_file(L, "amqp", "tls_cert", c->amqp_tls_cert) ||
        !readable_file(L, "amqp", "tls_key", c->amqp_tls_key))
        return false;
    if (c->redis_url && hg_redis_url_check(c->redis_url, why, sizeof(why)) != 0) {
        where(L, "redis", "url", at, sizeof(at));
        fail(L, "%s: [redis] url: %s", at, why);
        return false;
    }
    if (c->s3_endpoint && hg_s3_check(c->s3_endpoint, c->s3_access_key, c->s3_secret_key, why, sizeof(why)) != 0) {
        where(L, "s3", "endpoint", at, sizeof(at));
        fail(L, "%s: [s3] %s", at, why);
        return false;
    }
    if (c->s3_endpoint && c->media_enabled > 0 && c->media_bucket == NULL) {
        where(L, "media", "bucket", at, sizeof(at));
        fail(L, "%s: [media] bucket must not be empty", at);
        return false;
    }
    /* The media fetcher takes the scheme in lower case only (the key's own check ignores case). */
    if (c->s3_endpoint && c->media_enabled > 0 && c->graph_api_base && strncmp(c->graph_api_base, "http://", 7) != 0 &&
        strncmp(c->graph_api_base, "https://", 8) != 0) {
        where(L, "whatsapp", "graph_api_base", at, sizeof(at));
        fail(L, "%s: graph_api_base must start with http:// or https:// (lower case)", at);
        return false;
    }
    if (hg_tenants_service_check(c->tenant_service_url, c->tenant_service_token, why, sizeof(why)) != 0) {
        where(L, "tenants", c->tenant_service_token && strncmp(why, "service_token", 13) == 0 ? "service_token"
                                                                                                : "service_url",
              at, sizeof(at));
        fail(L, "%s: [tenants] %s", at, why);
        return false;
    }
    if (c->state_manager_url &&
        hg_statemgr_check(c->state_manager_url, c->state_manager_token, why, sizeof(why)) != 0) {
        where(L, "state_manager", strncmp(why, "token", 5) == 0 ? "token" : "url", at, sizeof(at));
        fail(L, "%s: [state_manager] %s", at, why);
        return false;
    }
    return true;
}

/* A provider section's require_client_cert is set (file or env) to yes. */
static bool any_client_cert_route(const struct hg_conf *c, const char **section)
{
    static const char *const names[] = { "whatsapp", "genesys", "twilio", "pubsub" };
    for (size_t i = 0; i < HG_ARRAY_SIZE(names); i++) {
        if (hg_conf_requires_client_cert(c, names[i], NULL)) {
            *section = names[i];
            return true;
        }
    }
    for (size_t i = 0; i < c->n_sources; i++) {
        if (c->sources[i].require_client_cert) {
            *section = "source";
            return true;
        }
    }
    return false;
}

/*
 * [server] tls_*: the certificate chain and key are read and checked here, into the snapshot
 * (http/tls.h), so `hookgate -t` refuses what the server would, and a SIGHUP whose new
 * certificate or key is bad fails as a whole: the running configuration, old certificate
 * included, stays. False after fail().
 */
static bool validate_tls(struct load *L)
{
    struct hg_conf *c = L->c;
    char at[320], why[CONF_WHY];
    const char *section;
    if (strcmp(c->tls_min_version, "1.3") == 0) {
        where(L, "server", "tls_min_version", at, sizeof(at));
        fail(L, "%s: tls_min_version = 1.3 is not available: this build's TLS library (%s, Debian bookworm's) "
                "implements TLS up to 1.2; hookgate serves TLS 1.2 with ECDHE and AEAD ciphers only (docs/tls.md)",
             at, hg_tls_library());
        return false;
    }
    if ((c->tls_cert == NULL) != (c->tls_key == NULL)) {
        where(L, "server", c->tls_cert ? "tls_cert" : "tls_key", at, sizeof(at));
        fail(L, "%s: [server] tls_cert and tls_key (or tls_key_file) must be set together", at);
        return false;
    }
    if (c->tls_cert == NULL) {
        if (c->tls_client_ca) {
            where(L, "server", "tls_client_ca", at, sizeof(at));
            fail(L, "%s: tls_client_ca needs TLS: set [server] tls_cert and tls_key_file", at);
            return false;
        }
        if (any_client_cert_route(c, &section)) {
            fail(L, "%s: [%s] require_client_cert needs TLS with client certificates: set [server] tls_cert, "
                    "tls_key_file and tls_client_ca", L->path ? L->path : "env", section);
            return false;
        }
        return true;
    }
    if (strstr(c->tls_key, "-----BEGIN ") == NULL) {
        where(L, "server", "tls_key", at, sizeof(at));
        fail(L, "%s: tls_key holds the PEM private key itself (as HOOKGATE_SERVER_TLS_KEY can); to name the key's "
                "file use tls_key_file", at);
        return false;
    }
    if (c->tls_client_ca == NULL) {
        if (strcmp(c->tls_client_auth, "required") == 0) {
            where(L, "server", "tls_client_auth", at, sizeof(at));
            fail(L, "%s: tls_client_auth = required needs tls_client_ca (the CAs client certificates are checked "
                    "against)", at);
            return false;
        }
        if (any_client_cert_route(c, &section)) {
            fail(L, "%s: [%s] require_client_cert needs [server] tls_client_ca (the CAs client certificates are "
                    "checked against)", L->path ? L->path : "env", section);
            return false;
        }
    }
    struct hg_tls_opts o = {
        .cert_path = c->tls_cert,
        .key_pem = c->tls_key,
        .client_ca_path = c->tls_client_ca,
        .client_auth = c->tls_client_ca == NULL                      ? HG_TLS_CLIENT_AUTH_NONE
                       : strcmp(c->tls_client_auth, "required") == 0 ? HG_TLS_CLIENT_AUTH_REQUIRED
                                                                     : HG_TLS_CLIENT_AUTH_OPTIONAL,
    };
    if (hg_tls_ctx_load(&o, &c->tls, why, sizeof(why)) != 0) {
        where(L, "server", "tls_cert", at, sizeof(at));
        fail(L, "%s: %s", at, why);
        return false;
    }
    return true;
}

static void validate(struct load *L)
{
    struct hg_conf *c = L->c;
    char at[320];

    if (c->workers == 0) {
        unsigned n = uv_available_parallelism();
        c->workers = n < 1 ? 1 : n > 256 ? 256 : (int)n;
    }
    if (c->ndjson_enabled < 0)
        c->ndjson_enabled = c->amqp_urls.n == 0;
    if (c->media_enabled < 0)
        c->media_enabled = c->s3_endpoint != NULL;

    if (strcmp(c->amqp_queue_type, "quorum") == 0 &&
        (!classic_only(L, "max_priority", &c->amqp_max_priority, "quorum queues have no priorities") ||
         !classic_only(L, "queue_version", &c->amqp_queue_version, "it is a classic queue storage format")))
        return;
    if (strcmp(c->ack, "broker") == 0 && c->amqp_urls.n == 0) {
        where(L, "server", "ack", at, sizeof(at));
        fail(L, "%s: ack = broker needs an [amqp] url", at);
        return;
    }
    if (!c->ndjson_enabled && c->amqp_urls.n == 0) {
        where(L, "ndjson", "enabled", at, sizeof(at));
        fail(L, "%s: [ndjson] enabled = no needs an [amqp] url (events would have nowhere to go)", at);
        return;
    }
    if (c->spool_segment_bytes > c->spool_max_bytes) {
        where(L, "spool", "segment_bytes", at, sizeof(at));
        fail(L, "%s: segment_bytes is larger than max_bytes", at);
        return;
    }
    if (c->s3_endpoint && (c->s3_access_key == NULL) != (c->s3_secret_key == NULL)) {
        where(L, "s3", c->s3_access_key ? "access_key" : "secret_key", at, sizeof(at));
        fail(L, "%s: [s3] access_key and secret_key must be set together", at);
        return;
    }
    if (!validate_pubsub(L))
        return;
    for (size_t t = 0; t < c->n_tenants; t++)
        c->tenant_ip_rules = c->tenant_ip_rules || hg_cidr_rules_any(&c->tenants[t].ip);
    if (!validate_admin(L) || !validate_backends(L) || !validate_tls(L))
        return;
    /* A business id must map to one tenant, or routing would depend on section order. */
    for (size_t a = 0; a < c->n_tenants; a++) {
        const struct hg_strlist *la = &c->tenants[a].business_ids;
        for (size_t i = 0; i < la->n; i++) {
            for (size_t b = a; b < c->n_tenants; b++) {
                const struct hg_strlist *lb = &c->tenants[b].business_ids;
                for (size_t j = (b == a ? i + 1 : 0); j < lb->n; j++) {
                    if (strcmp(la->items[i], lb->items[j]) != 0)
                        continue;
                    const struct key *bk = key_find(tenant_keys, N_TENANT_KEYS, "tenant", "business_ids");
                    const struct origin *o = &L->tenant_origin[b][bk - tenant_keys];
                    if (o->env) {
                        char en[256];
                        env_name(en, sizeof(en), "tenant", c->tenants[b].id, "business_ids");
                        snprintf(at, sizeof(at), "env %s", en);
                    } else {
                        snprintf(at, sizeof(at), "%s:%d", L->path, o->line);
                    }
                    fail(L, "%s: business id '%s' is listed for both [tenant.%s] and [tenant.%s]", at,
                         la->items[i], c->tenants[a].id, c->tenants[b].id);
                    return;
                }
            }
        }
    }
}

/* ---------------------------------------------------------------- public API */

static int cmp_rules_id(const void *a, const void *b)
{
    return strcmp(((const struct hg_rules_conf *)a)->id, ((const struct hg_rules_conf *)b)->id);
}

/* Free the strings and lists of a key table's fields in `base` (secrets wiped first). */
static void keys_free(const struct key *keys, size_t n, void *base)
{
    for (size_t i = 0; i < n; i++) {
        const struct key *k = &keys[i];
        char *field = (char *)base + k->off;
        if (k->type == KEY_STRING || k->type == KEY_ENUM || k->type == KEY_PATH || k->type == KEY_LISTEN) {
            char **sp = (char **)field;
            if (k->flags & KEY_F_SECRET)
                conf_wipe(*sp);
            free(*sp);
        } else if (k->type == KEY_STRLIST) {
            struct hg_strlist *l = (struct hg_strlist *)field;
            for (size_t j = 0; (k->flags & KEY_F_SECRET) && j < l->n; j++)
                conf_wipe(l->items[j]);
            conf_strlist_clear(l);
        } else if (k->type == KEY_CIDRS) {
            hg_cidr_list_free((struct hg_cidr_list *)field);
        }
    }
}

static void conf_free(struct hg_conf *c)
{
    keys_free(conf_keys, N_CONF_KEYS, c);
    hg_jwks_free(c->pubsub_jwks);
    hg_tls_ctx_unref(c->tls);
    for (size_t t = 0; t < c->n_tenants; t++)
        tenant_free(&c->tenants[t]);
    free(c->tenants);
    for (size_t r = 0; r < c->n_rules; r++) {
        free(c->rules[r].id);
        hg_rules_free(c->rules[r].rules);
    }
    free(c->rules);
    for (size_t i = 0; i < c->n_sources; i++) {
        free(c->sources[i].name);
        hg_jwks_free(c->sources[i].jwks_keys);
        keys_free(source_keys, N_SOURCE_KEYS, &c->sources[i]);
    }
    free(c->sources);
    for (size_t i = 0; i < c->n_endpoints; i++) {
        free(c->endpoints[i].name);
        json_decref(c->endpoints[i].doc);
        conf_strlist_clear(&c->endpoints[i].header_names);
        conf_strlist_clear(&c->endpoints[i].header_values);
        keys_free(endpoint_keys, N_ENDPOINT_KEYS, &c->endpoints[i]);
    }
    free(c->endpoints);
    free(c->path);
    free(c);
}

int hg_conf_load(const char *path, struct hg_conf **out, char *err, size_t errlen)
{
    struct load L;
    memset(&L, 0, sizeof(L));
    L.err = err;
    L.errlen = errlen;
    L.path = path;
    L.rules_cur = SIZE_MAX;
    if (errlen)
        err[0] = '\0';

    struct hg_conf *c = hg_xcalloc(1, sizeof(*c));
    atomic_init(&c->refs, 1);
    L.c = c;

    char why[CONF_WHY];
    for (size_t i = 0; i < N_CONF_KEYS; i++)
        if (conf_keys[i].def && conf_set_value(&conf_keys[i], c, conf_keys[i].def, why, sizeof(why)))
            abort();   /* a default that does not parse is a bug in the table */

    if (path) {
        c->path = conf_path_absolute(path);
        if (c->path == NULL)
            fail(&L, "%s: cannot resolve path: %s", path, strerror(errno));
        else
            parse_file(&L);
    }
    if (!L.failed)
        apply_env(&L);
    if (!L.failed)
        validate(&L);
    if (!L.failed)
        source_validate(&L);
    if (!L.failed)
        endpoint_validate(&L);

    free(L.tenant_origin);
    free(L.endpoint_origin);
    free(L.endpoint_lines);
    free(L.source_origin);
    free(L.source_lines);
    free(L.tenant_lines);
    for (size_t r = 0; r < c->n_rules; r++) {
        for (size_t k = 0; k < L.rules_secs[r].n_keys; k++)
            free(L.rules_secs[r].keys[k].name);
        free(L.rules_secs[r].keys);
    }
    free(L.rules_secs);
    free(L.rules_env);
    if (L.failed) {
        conf_free(c);
        return HG_ERR_CONFIG;
    }
    /* Sealed rules are read by every worker thread; sorted ids make hg_conf_rules a bsearch. */
    for (size_t r = 0; r < c->n_rules; r++)
        hg_rules_seal(c->rules[r].rules);
    if (c->n_rules)
        qsort(c->rules, c->n_rules, sizeof(*c->rules), cmp_rules_id);
    *out = c;
    return 0;
}

struct hg_conf *hg_conf_ref(struct hg_conf *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}

void hg_conf_unref(struct hg_conf *c)
{
    if (c == NULL)
        return;
    /* acq_rel: the freeing thread must see every write made under the other references. */
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1)
        conf_free(c);
}

const struct hg_tenant_conf *hg_conf_tenant(const struct hg_conf *c, const char *id)
{
    if (c == NULL || id == NULL)
        return NULL;
    for (size_t i = 0; i < c->n_tenants; i++)
        if (strcmp(c->tenants[i].id, id) == 0)
            return &c->tenants[i];
    return NULL;
}

const struct hg_cidr_rules *hg_conf_ip_rules(const struct hg_conf *c, const char *provider)
{
    if (strcmp(provider, "whatsapp") == 0)
        return &c->whatsapp_ip;
    if (strcmp(provider, "genesys") == 0)
        return &c->genesys_ip;
    if (strcmp(provider, "twilio") == 0)
        return &c->twilio_ip;
    if (strcmp(provider, "pubsub") == 0)
        return &c->pubsub_ip;
    return NULL;
}

bool hg_conf_requires_client_cert(const struct hg_conf *c, const char *provider, const struct hg_source_conf *source)
{
    if (source)
        return source->require_client_cert == 1;
    if (strcmp(provider, "whatsapp") == 0)
        return c->whatsapp_require_client_cert == 1;
    if (strcmp(provider, "genesys") == 0)
        return c->genesys_require_client_cert == 1;
    if (strcmp(provider, "twilio") == 0)
        return c->twilio_require_client_cert == 1;
    if (strcmp(provider, "pubsub") == 0)
        return c->pubsub_require_client_cert == 1;
    return false;
}

const struct hg_source_conf *hg_conf_source(const struct hg_conf *c, const char *name)
{
    for (size_t i = 0; c != NULL && name != NULL && i < c->n_sources; i++)
        if (strcmp(c->sources[i].name, name) == 0)
            return &c->sources[i];
    return NULL;
}

const struct hg_rules *hg_conf_rules(const struct hg_conf *c, const char *tenant)
{
    if (c == NULL || c->n_rules == 0)
        return NULL;
    struct hg_rules_conf key = { (char *)(tenant ? tenant : "default"), NULL };
    const struct hg_rules_conf *hit = bsearch(&key, c->rules, c->n_rules, sizeof(*c->rules), cmp_rules_id);
    if (hit == NULL && tenant) {
        key.id = (char *)"default";
        hit = bsearch(&key, c->rules, c->n_rules, sizeof(*c->rules), cmp_rules_id);
    }
    return hit ? hit->rules : NULL;
}

const struct hg_tenant_conf *hg_conf_tenant_by_business(const struct hg_conf *c, const char *business_id)
{
    if (c == NULL || business_id == NULL)
        return NULL;
    for (size_t t = 0; t < c->n_tenants; t++)
    {
        for (size_t i = 0; i < c->tenants[t].business_ids.n; i++)
            if (strcmp(c->tenants[t].business_ids.items[i], business_id) == 0)
                return &c->tenants[t];
        for (size_t i = 0; i < c->tenants[t].account_sids.n; i++)
            if (strcmp(c->tenants[t].account_sids.items[i], business_id) == 0)
                return &c->tenants[t];
    }
    return NULL;
}

/*
 * Tenant resolution: which tenant a webhook belongs to and its settings (each provider's secrets,
 * verify token, Graph API token, rate limit). Order: the config snapshot → a per-worker in-memory LRU →
 * the Redis cache → the tenant service over HTTP, all on the worker's loop. See docs/tenants.md.
 */
#ifndef HG_TENANTS_TENANTS_H
#define HG_TENANTS_TENANTS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "conf/conf.h"

struct hg_http;
struct hg_redis;

#define HG_TENANTS_ID_MAX 64       /* longest tenant id / business id looked up */
#define HG_TENANTS_MAX_IDS 8       /* business ids considered per resolve; more are ignored */
#define HG_TENANTS_BODY_MAX 65536  /* largest tenant service answer / cache value accepted */
#define HG_TENANTS_PENDING 1       /* hg_tenants_resolve_local: config and LRU cannot decide */

enum hg_tenant_source {
    HG_TENANT_CONFIG,  /* a [tenant.<id>] section (by path id or business id) */
    HG_TENANT_CACHE,   /* read from the Redis cache (then kept a while in this worker's LRU) */
    HG_TENANT_SERVICE, /* fetched from the tenant service (then kept a while in the LRU) */
    HG_TENANT_DEFAULT, /* nobody claimed the webhook: [whatsapp] default_tenant */
};

/*
 * A resolved tenant. Immutable once built; refcounted (atomic, so a reference may travel to
 * another thread). Strings are NUL-terminated; they live as long as the reference.
 */
struct hg_tenant {
    _Atomic long refs;
    enum hg_tenant_source source;
    char *id;                      /* tenant id: metrics, dedup/rate-limit keys, archive paths */
    /* Each provider's credentials (rotation: every item is valid); an empty list = none, and that
     * provider's webhooks for this tenant are answered 503. Config tenants inherit the provider
     * section's list when their own is empty. */
    struct hg_strlist app_secrets;        /* WhatsApp app secrets */
    struct hg_strlist genesys_secrets;    /* Genesys Open Messaging outbound secrets */
    struct hg_strlist genesys_api_keys;   /* Genesys EventBridge API keys */
    struct hg_strlist twilio_auth_tokens; /* Twilio auth tokens */
    char *verify_token;            /* GET handshake token; NULL = none (the handshake fails) */
    char *access_token;            /* Graph API token; NULL = none */
    uint32_t rate_limit;           /* requests per minute; never 0 ([ratelimit] default applied) */
    /* private: the config snapshot the strings point into (NULL when the strings are owned) */
    struct hg_conf *conf;
};

struct hg_tenant *hg_tenant_ref(struct hg_tenant *t);
/* Drop a reference; the last one frees. NULL is ignored. */
void hg_tenant_unref(struct hg_tenant *t);
/* "config" | "cache" | "service" | "default". */
const char *hg_tenant_source_name(enum hg_tenant_source s);

/*
 * Parse the tenant service's JSON contract (docs/tenants.md) into a new tenant with one reference
 * (source HG_TENANT_SERVICE); rate_limit 0/absent takes conf->ratelimit_default (1000 when conf
 * is NULL). 0, or HG_ERR_PARSE (not JSON, missing/invalid field) / HG_ERR_TOO_BIG.
 */
int hg_tenant_parse(const char *json, size_t len, const struct hg_conf *conf,
                    struct hg_tenant **out);

/* Tunables; zero fields take the default shown. */
struct hg_tenants_opts {
    const char *service_url;     /* tenant service base URL; NULL/"" = none (copied) */
    const char *service_token;   /* sent as "Authorization: Bearer <token>"; NULL = none (copied) */
    uint32_t timeout_ms;         /* 2000: whole tenant service request */
    uint64_t cache_ttl_ms;       /* 300000: Redis cache entry for a found tenant */
    uint64_t negative_ttl_ms;    /* 60000: Redis cache entry for a 404 */
    uint64_t local_ttl_ms;       /* 10000: this worker's LRU (found and not-found entries) */
    uint64_t stale_ttl_ms;       /* 3600000: an LRU entry past local_ttl may still answer for
                                  * this long while the service fails (stale-if-error) */
    uint32_t local_max;          /* 4096: LRU entries (least recently used dropped beyond) */
    uint32_t max_inflight;       /* 256: distinct ids being looked up at once; beyond →
                                  * HG_ERR_UNAVAILABLE (a flood of made-up ids cannot pile up) */
    uint32_t failure_backoff_ms; /* 1000: after a service failure, lookups that miss every cache
                                  * fail at once for this long instead of calling it again */
};

/* Counters for metrics (cache_hit_total / cache_miss_total ...). Single writer: the loop. */
struct hg_tenants_stats {
    uint64_t config_hits;      /* decided by the config snapshot */
    uint64_t local_hits;       /* LRU answered (found or not-found) */
    uint64_t local_misses;     /* LRU had nothing fresh: a lookup was needed */
    uint64_t redis_hits;       /* Redis answered (found or not-found) */
    uint64_t redis_misses;     /* Redis had nothing (or is down) */
    uint64_t service_calls;    /* HTTP requests sent to the tenant service */
    uint64_t service_found;    /* 200 with a valid tenant */
    uint64_t service_not_found;/* 404 */
    uint64_t service_failures; /* timeout, connect error, 5xx, other status, bad body */
    uint64_t coalesced;        /* resolves that joined a lookup already in flight */
    uint64_t stale_served;     /* an expired LRU entry answered because the service failed */
    uint64_t defaults;         /* resolved to the default tenant */
    uint64_t unavailable;      /* resolves that ended in HG_ERR_UNAVAILABLE */
    uint64_t invalid_ids;      /* ids skipped without a lookup (empty, too long, bad characters) */
    uint64_t ids_not_asked;    /* later business ids of a resolve that already looked one up,
                                * unknown to the LRU: skipped (one lookup per request) */
};

struct hg_tenants;

/*
 * One resolver per worker loop. `http` and `redis` may be NULL (no tenant service calls / no
 * shared cache); they must outlive the resolver's close. Returns 0 and *out, or HG_ERR_INVALID
 * (bad opts: service URL not http(s), over-long token) / a UV_E* from handle setup.
 */
int hg_tenants_open(uv_loop_t *loop, struct hg_http *http, struct hg_redis *redis,
                    const struct hg_tenants_opts *opts, struct hg_tenants **out);

/* What hg_tenants_open refuses in a service URL (NULL = none) and token: 0, or HG_ERR_INVALID
 * with the reason in why. Pure; the config loader calls it so that `hookgate -t` refuses it too. */
int hg_tenants_service_check(const char *service_url, const char *token, char *why, size_t wl);

/* A reload: tenant service lookups started from now on carry this bearer token (NULL or "":
 * none). 0, or HG_ERR_INVALID (the old token stays). Loop thread. */
int hg_tenants_set_token(struct hg_tenants *t, const char *token);

/*
 * Resolve without waiting: 0 and *out (a reference the caller owns) when the config snapshot or
 * the LRU decides (this is the hot path: no allocation for config tenants, no callback hop);
 * HG_TENANTS_PENDING when a Redis/service lookup is needed (call hg_tenants_resolve);
 * HG_ERR_NOT_FOUND when `path_tenant` names no tenant (no service, or the LRU
 * remembers the service's 404).
 * `path_tenant` (may be NULL) is the {tenant} URL segment; `business_ids` are the envelope's ids
 * in priority order (entry[].id, then phone_number_id; may be NULL when n_ids is 0).
 */
int hg_tenants_resolve_local(struct hg_tenants *t, const struct hg_conf *conf,
                             const char *path_tenant, const char *const *business_ids,
                             size_t n_ids, struct hg_tenant **out);

/*
 * status 0: `tenant` is a reference the callback owns. Else tenant is NULL and status is
 * HG_ERR_UNAVAILABLE (service down/slow/failing for an id no cache knows, or no usable default:
 * answer 503 + Retry-After), HG_ERR_NOT_FOUND (the path tenant does not exist: 404) or
 * HG_ERR_CLOSED (hg_tenants_close ran first).
 */
typedef void (*hg_tenants_cb)(void *arg, int status, struct hg_tenant *tenant);

/*
 * Full resolution (same rules as hg_tenants_resolve_local, then Redis and the tenant service).
 * Returns 0 (cb runs exactly once, from the loop, never inside this call) or HG_ERR_INVALID /
 * HG_ERR_CLOSED (cb never runs). Everything passed is copied; `conf` gets a reference held until
 * the callback ran. Concurrent resolves of the same id share one lookup.
 */
int hg_tenants_resolve(struct hg_tenants *t, const struct hg_conf *conf, const char *path_tenant,
                       const char *const *business_ids, size_t n_ids, hg_tenants_cb cb,
                       void *arg);

/* Counters since open; valid until the close callback. */
const struct hg_tenants_stats *hg_tenants_stats(const struct hg_tenants *t);

/*
 * Start closing: pending resolves get HG_ERR_CLOSED (from the loop), tenant service requests are
 * canceled, lookups waiting on Redis are finished when Redis answers; then the memory is freed and
 * `cb(arg)` (may be NULL) runs once, from the loop. Close this before the http/redis clients.
 */
void hg_tenants_close(struct hg_tenants *t, void (*cb)(void *arg), void *arg);

#endif

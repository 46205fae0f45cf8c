/*
 * One Redis client per worker on the worker's libuv loop (hiredis async + its libuv adapter):
 * two-phase dedup, sliding-window rate limit (one Lua script), tenant cache. When Redis is down
 * or slow every call still answers, from a per-worker local fallback, flagged `fallback`.
 */
#ifndef HG_CLIENTS_REDIS_H
#define HG_CLIENTS_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#define HG_REDIS_HOST_MAX 255
#define HG_REDIS_CRED_MAX 255
#define HG_REDIS_KEY_MAX 512     /* longest key accepted (dedup key, tenant cache key) */
#define HG_REDIS_TENANT_MAX 128  /* longest tenant id accepted by hg_redis_ratelimit */
#define HG_REDIS_VALUE_MAX (1u << 20) /* cache values above this are refused / read as a miss */

/* A parsed redis://[user:pass@|:pass@]host[:port][/db] URL. Strings are NUL-terminated. */
struct hg_redis_url {
    char host[HG_REDIS_HOST_MAX + 1];     /* name, IPv4 or IPv6 (without brackets) */
    int port;                              /* default 6379 */
    int db;                                /* default 0 */
    char user[HG_REDIS_CRED_MAX + 1];     /* "" = no ACL user (AUTH pass) */
    char password[HG_REDIS_CRED_MAX + 1]; /* "" = no AUTH */
};

/*
 * Parse `url` (percent-escapes allowed in user and password). 0, or HG_ERR_PARSE for anything
 * else: other schemes (rediss:// — no TLS here), empty host, bad port, bad db, query strings,
 * over-long parts.
 */
int hg_redis_url_parse(const char *url, struct hg_redis_url *out);

/*
 * What hg_redis_open refuses in a URL: 0, or HG_ERR_PARSE with the reason in why (never the URL:
 * it carries the password). rediss:// and unix:// get their own reasons (no TLS in Debian's
 * hiredis 0.14: docs/backend-tls.md shows the TLS sidecar). Pure; the config loader calls it so
 * that `hookgate -t` refuses what the client would.
 */
int hg_redis_url_check(const char *url, char *why, size_t wl);

/* Tunables; zero fields take the default shown. */
struct hg_redis_opts {
    uint32_t command_timeout_ms;  /* 200: a command not answered by then gets the fallback answer */
    uint32_t connect_timeout_ms;  /* 1000: TCP connect + AUTH/SELECT/SCRIPT LOAD */
    uint32_t backoff_min_ms;      /* 100: first reconnect delay (then doubled, with jitter) */
    uint32_t backoff_max_ms;      /* 10000: reconnect delay cap */
    uint32_t local_dedup_max;     /* 100000: entries in the local dedup fallback (LRU beyond) */
    uint32_t local_ratelimit_max; /* 10000: tenants in the local rate-limit fallback (LRU beyond) */
};

enum hg_redis_state {
    HG_REDIS_DOWN = 0, /* not connected (or handshake pending): calls answer from the fallback */
    HG_REDIS_OK = 1,   /* connected, authenticated, db selected, script loaded */
};

/* Counters the caller reads for metrics (redis_fallback_total{op}) and /ready. Single writer. */
struct hg_redis_stats {
    uint64_t fallback_dedup;     /* dedup_begin/done answered locally */
    uint64_t fallback_ratelimit; /* ratelimit answered locally */
    uint64_t fallback_cache;     /* cache_get answered "miss" (or set dropped) because of Redis */
    uint64_t fallback_sequence;  /* sequence_next answered "no number" because of Redis */
    uint64_t timeouts;           /* commands that passed their deadline */
    uint64_t noscript;           /* EVALSHA answered NOSCRIPT and was retried with EVAL */
    uint64_t connects;           /* handshakes completed (first connect + reconnects) */
    uint64_t local_evictions;    /* local fallback entries dropped because a table was full */
};

struct hg_redis;

/*
 * Create the client and start connecting in the background (AUTH, SELECT, SCRIPT LOAD on every
 * connect; reconnect forever with exponential backoff and jitter). Never fails because Redis is
 * unreachable: the client simply starts DOWN. `opts` may be NULL. Returns 0 and *out, or
 * HG_ERR_PARSE (bad URL) / a UV_E* from handle setup. The loop must not be run by other threads.
 * The process must ignore SIGPIPE (hiredis writes with write(2)).
 */
int hg_redis_open(uv_loop_t *loop, const char *url, const struct hg_redis_opts *opts,
                  struct hg_redis **out);

typedef void (*hg_redis_close_cb)(void *arg);
/*
 * Start closing. Calls made after this return HG_ERR_CLOSED. Callbacks of calls made before still
 * run exactly once (answered from the fallback if Redis had not answered yet), then every handle
 * is closed, the memory freed and `cb(arg)` (may be NULL) runs once — always from the loop, never
 * inside this call.
 */
void hg_redis_close(struct hg_redis *r, hg_redis_close_cb cb, void *arg);

/*
 * A reload: use this URL from now on. When it differs from the current one (host, port, db, user
 * or password), the connection is dropped and made again with it at once (commands in flight on
 * the old one get their fallback answers, as on any reconnect); *changed says whether it did.
 * 0, or HG_ERR_PARSE (the old URL stays). Loop thread.
 */
int hg_redis_set_url(struct hg_redis *r, const char *url, bool *changed);

/* OK only while the connection is up and the handshake is done (for /ready). */
enum hg_redis_state hg_redis_state(const struct hg_redis *r);
/* Counters since open; valid until close_cb. */
const struct hg_redis_stats *hg_redis_stats(const struct hg_redis *r);

/* ---- dedup, two-phase --------------------------------------------------------------------- */

enum hg_redis_dedup_status {
    HG_REDIS_DEDUP_NEW,               /* begin: the key is ours now ("pending"); process it */
    HG_REDIS_DEDUP_DUPLICATE_DONE,    /* begin: already published; skip it */
    HG_REDIS_DEDUP_DUPLICATE_PENDING, /* begin: another attempt holds it; retry after a while
                                       * (a crashed holder's mark expires after pending_ttl) */
    HG_REDIS_DEDUP_MARKED,            /* done: the "done" mark is stored */
};

struct hg_redis_dedup_result {
    enum hg_redis_dedup_status status;
    bool fallback; /* answered by this worker's local table, not by Redis */
};

typedef void (*hg_redis_dedup_cb)(void *arg, const struct hg_redis_dedup_result *res);

/*
 * Build the dedup key "hg:dedup:<tenant>:<event_id>" into out. 0, or HG_ERR_TOO_BIG when it does
 * not fit in `cap` or HG_REDIS_KEY_MAX.
 */
int hg_redis_dedup_key(char *out, size_t cap, const char *tenant, const char *event_id);

/*
 * SET key "pending" NX PX pending_ttl_ms, then cb with NEW / DUPLICATE_DONE / DUPLICATE_PENDING.
 * Returns 0 (cb runs exactly once, never before this returns) or HG_ERR_INVALID / HG_ERR_CLOSED
 * (cb never runs). The key is copied.
 */
int hg_redis_dedup_begin(struct hg_redis *r, const char *key, uint64_t pending_ttl_ms,
                         hg_redis_dedup_cb cb, void *arg);
/* SET key "done" PX ttl_ms once the record is published; cb (may be NULL) gets MARKED. */
int hg_redis_dedup_done(struct hg_redis *r, const char *key, uint64_t ttl_ms,
                        hg_redis_dedup_cb cb, void *arg);
/* DEL key when publishing failed, so a retry is NEW at once. Fire and forget. */
int hg_redis_dedup_abort(struct hg_redis *r, const char *key);

/* ---- rate limit --------------------------------------------------------------------------- */

struct hg_redis_ratelimit_result {
    bool allowed;
    int64_t limit;
    int64_t remaining;       /* requests left in the window after this one (>= 0) */
    int64_t reset_at_unix_s; /* when a slot frees up (for Retry-After / X-RateLimit-Reset) */
    bool fallback;           /* answered by this worker's local window, not by Redis */
};

typedef void (*hg_redis_ratelimit_cb)(void *arg, const struct hg_redis_ratelimit_result *res);

/*
 * Count one request of `tenant` against `limit` per sliding `window_ms` (key hg:rl:<tenant>).
 * 0 (cb runs exactly once, later) or HG_ERR_INVALID / HG_ERR_CLOSED. Down or slow Redis: a
 * per-worker local sliding window answers (so the effective limit is per worker then).
 */
int hg_redis_ratelimit(struct hg_redis *r, const char *tenant, int64_t limit, uint64_t window_ms,
                       hg_redis_ratelimit_cb cb, void *arg);

/* ---- tenant cache ------------------------------------------------------------------------- */

enum hg_redis_cache_status {
    HG_REDIS_CACHE_MISS,     /* nothing cached (or Redis down/slow) */
    HG_REDIS_CACHE_HIT,      /* value/len hold the cached bytes */
    HG_REDIS_CACHE_NEGATIVE, /* a negative entry: the origin said "no such thing" recently */
};

struct hg_redis_cache_result {
    enum hg_redis_cache_status status;
    const char *value; /* HIT only; valid during the callback; NUL-terminated */
    size_t len;
    bool fallback;     /* the miss is due to Redis being down or slow */
};

typedef void (*hg_redis_cache_cb)(void *arg, const struct hg_redis_cache_result *res);

/* GET hg:cache:<key>. 0 (cb exactly once, later) or HG_ERR_INVALID / HG_ERR_CLOSED. */
int hg_redis_cache_get(struct hg_redis *r, const char *key, hg_redis_cache_cb cb, void *arg);
/* SET hg:cache:<key> value PX ttl_ms, fire and forget (dropped when Redis is down). */
int hg_redis_cache_set(struct hg_redis *r, const char *key, const void *value, size_t len,
                       uint64_t ttl_ms);
/* Remember "no such key" for ttl_ms; cache_get then answers NEGATIVE. */
int hg_redis_cache_set_negative(struct hg_redis *r, const char *key, uint64_t ttl_ms);
/* DEL hg:cache:<key>, fire and forget (dropped when Redis is down). */
int hg_redis_cache_del(struct hg_redis *r, const char *key);

/* ---- per-conversation sequence numbers ---------------------------------------------------- */

struct hg_redis_seq_result {
    uint64_t value;  /* 1, 2, 3, ... in the order the INCRs reached Redis; 0 with fallback */
    bool fallback;   /* Redis down or slow: no number (there is no local stand-in) */
};

typedef void (*hg_redis_seq_cb)(void *arg, const struct hg_redis_seq_result *res);

/*
 * INCR hg:seq:<key>, then PEXPIRE it ttl_ms (refreshed at every number). The commands of one
 * worker leave in call order on its one connection, so numbers follow the order of the calls.
 * 0 (cb exactly once, later) or HG_ERR_INVALID / HG_ERR_CLOSED (cb never runs).
 */
int hg_redis_sequence_next(struct hg_redis *r, const char *key, uint64_t ttl_ms, hg_redis_seq_cb cb, void *arg);

#endif

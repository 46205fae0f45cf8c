/*
 * Per-worker Redis client: one pipelined hiredis async connection on the worker's loop, a
 * handshake (AUTH, SELECT, SCRIPT LOAD) on every connect, reconnect with backoff, per-command
 * deadlines, and a bounded local fallback that answers whenever Redis cannot.
 */
#include <stdio.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "core/ltable.h"
#include "clients/redis.h"
#include "clients/redis_uv.h"
#include "core/backoff.h"
#include "core/common.h"
#include "core/err.h"
#include "core/list.h"
#include "core/log.h"
#include "core/time.h"
#include "core/uuid.h"

/* ---- Lua scripts ------------------------------------------------------------------------- */

/*
 * Sliding-window log in a sorted set, atomic in one script. Redis' own clock (TIME) is used so
 * that every hookgate instance agrees on the window whatever its local clock says.
 * KEYS[1] = hg:rl:<tenant>; ARGV = window_ms, limit, unique member.
 * Returns {allowed 0|1, remaining, reset_ms (until the oldest entry leaves), now_ms}.
 */
static const char ratelimit_lua[] =
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local window = tonumber(ARGV[1])\n"
    "local limit = tonumber(ARGV[2])\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)\n"
    "local count = redis.call('ZCARD', KEYS[1])\n"
    "local allowed = 0\n"
    "if count < limit then\n"
    "  redis.call('ZADD', KEYS[1], now, ARGV[3])\n"
    "  count = count + 1\n"
    "  allowed = 1\n"
    "end\n"
    "redis.call('PEXPIRE', KEYS[1], window)\n"
    "local reset = window\n"
    "local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')\n"
    "if oldest[2] then reset = tonumber(oldest[2]) + window - now end\n"
    "return {allowed, limit - count, reset, now}\n";

/*
 * Dedup phase one. SET NX alone cannot tell "done" from "pending" when it fails, and SET NX GET
 * needs Redis 7; a script answers both in one round trip on any version.
 * KEYS[1] = dedup key; ARGV[1] = pending TTL in ms. Returns "new" or the existing value.
 */
static const char dedup_lua[] =
    "if redis.call('SET', KEYS[1], 'pending', 'NX', 'PX', ARGV[1]) then return 'new' end\n"
    "local v = redis.call('GET', KEYS[1])\n"
    "if not v then return 'gone' end\n"
    "return v\n";

enum script_id { SCRIPT_RATELIMIT, SCRIPT_DEDUP, SCRIPT__COUNT };

static const char *const scripts[SCRIPT__COUNT] = { ratelimit_lua, dedup_lua };

/* Handshake steps; a pointer to one is the privdata of its reply. */
struct hs_step {
    const char *name;
    int script; /* index into scripts[] for SCRIPT LOAD, -1 otherwise */
};

static struct hs_step hs_auth = { "AUTH", -1 };
static struct hs_step hs_select = { "SELECT", -1 };
static struct hs_step hs_load[SCRIPT__COUNT] = {
    { "SCRIPT LOAD ratelimit", SCRIPT_RATELIMIT },
    { "SCRIPT LOAD dedup", SCRIPT_DEDUP },
};

/* ---- types ------------------------------------------------------------------------------- */

#define KEY_PREFIX_RL "hg:rl:"
#define KEY_PREFIX_CACHE "hg:cache:"
#define KEY_PREFIX_DEDUP "hg:dedup:"
#define KEY_PREFIX_SEQ "hg:seq:"
#define DEDUP_PENDING 1
#define DEDUP_DONE 2

enum cmd_kind {
    CMD_DEDUP_BEGIN,
    CMD_DEDUP_DONE,
    CMD_DEDUP_ABORT,
    CMD_RATELIMIT,
    CMD_CACHE_GET,
    CMD_CACHE_SET,
    CMD_CACHE_DEL,
    CMD_SEQ_NEXT,   /* INCR */
    CMD_SEQ_EXPIRE, /* PEXPIRE after it, fire and forget */
};

/*
 * One call. Two owners may hold it: hiredis (as reply privdata, `in_redis`) and the answer
 * queue (`in_queue`); it is freed when neither does and the answer has been decided.
 */
struct cmd {
    struct hg_redis *r;
    enum cmd_kind kind;
    struct hg_list link;     /* in `inflight` until answered, then in the answer queue */
    uint64_t deadline;       /* uv_now() ms */
    bool in_redis;
    bool in_list;
    bool in_queue;
    bool answered;
    bool evalled;            /* EVALSHA said NOSCRIPT and the script was sent in full */
    union {
        hg_redis_dedup_cb dedup;
        hg_redis_ratelimit_cb rl;
        hg_redis_cache_cb cache;
        hg_redis_seq_cb seq;
    } cb;
    void *arg;
    uint64_t ttl_ms;         /* dedup: pending or done TTL */
    int64_t limit;           /* ratelimit */
    uint64_t window_ms;
    size_t tenant_off;       /* ratelimit: the tenant inside key (for the local window) */
    union {
        struct hg_redis_dedup_result dedup;
        struct hg_redis_ratelimit_result rl;
        struct hg_redis_cache_result cache;
        struct hg_redis_seq_result seq;
    } res;
    char *value;             /* cache hit: a copy of the bytes, owned here */
    size_t klen;
    char key[];
};

enum conn_state {
    CONN_IDLE,       /* no context; the retry timer may be running */
    CONN_RESOLVING,  /* uv_getaddrinfo in flight */
    CONN_CONNECTING, /* TCP connect in progress */
    CONN_HANDSHAKE,  /* AUTH / SELECT / SCRIPT LOAD replies pending */
    CONN_READY,      /* commands go to Redis */
    CONN_DYING,      /* context condemned; freed from the idle callback, off hiredis' stack */
};

struct hg_redis {
    uv_loop_t *loop;
    struct hg_redis_url url;
    struct hg_redis_opts opts;
    struct hg_redis_stats stats;
    enum conn_state conn;
    redisAsyncContext *ctx;
    char sha[SCRIPT__COUNT][41];
    unsigned handshake_left;
    unsigned attempt;        /* failed connects since the last good handshake */
    bool closing;
    bool resolving;
    bool url_changed;        /* a reload set a new URL: a planned reconnect, not an outage */
    bool resolve_stale;      /* ... while a resolve for the old host was in flight */
    bool was_ready;          /* for logging the down transition once */
    int handles_open;
    uv_timer_t retry_timer;
    uv_timer_t connect_timer;
    uv_timer_t cmd_timer;
    uv_idle_t idle;          /* delivers answers and reaps contexts on the next loop turn */
    uv_getaddrinfo_t gai;
    struct hg_list inflight; /* sent, by deadline (all share one timeout) */
    struct hg_list queue;    /* answered, callbacks due on the next loop turn */
    struct hg_ltable dedup;
    struct hg_ltable rl;
    hg_redis_close_cb close_cb;
    void *close_arg;
};

static void start_connect(struct hg_redis *r);
static void answer_fallback(struct cmd *c);
static void on_idle(uv_idle_t *h);

/* ---- local fallback table ---------------------------------------------------------------- */

static uint64_t mono_ms(void)
{
    return hg_time_mono_ns() / 1000000u;
}

static void local_dedup(struct hg_redis *r, struct cmd *c)
{
    uint64_t now = mono_ms();
    struct hg_lentry *e = hg_ltable_get(&r->dedup, c->key, c->klen, now);
    switch (c->kind) {
    case CMD_DEDUP_BEGIN:
        if (e == NULL) {
            e = hg_ltable_add(&r->dedup, c->key, c->klen, &r->stats.local_evictions);
            e->a = DEDUP_PENDING;
            e->expires_ms = now + c->ttl_ms;
            c->res.dedup.status = HG_REDIS_DEDUP_NEW;
        } else {
            c->res.dedup.status = e->a == DEDUP_DONE ? HG_REDIS_DEDUP_DUPLICATE_DONE
                                                     : HG_REDIS_DEDUP_DUPLICATE_PENDING;
        }
        break;
    case CMD_DEDUP_DONE:
        if (e == NULL)
            e = hg_ltable_add(&r->dedup, c->key, c->klen, &r->stats.local_evictions);
        e->a = DEDUP_DONE;
        e->expires_ms = now + c->ttl_ms;
        c->res.dedup.status = HG_REDIS_DEDUP_MARKED;
        break;
    default:
        if (e)
            hg_ltable_remove(&r->dedup, e);
        break;
    }
    c->res.dedup.fallback = true;
}

/*
 * Local window: the sliding-window counter approximation (previous fixed window weighted by
 * its overlap plus the current one). Constant memory per tenant, unlike a log of timestamps,
 * and never lets more than `limit` through per sliding window.
 */
static void local_ratelimit(struct hg_redis *r, struct cmd *c)
{
    uint64_t now = mono_ms();
    uint64_t w = c->window_ms;
    const char *tenant = c->key + c->tenant_off;
    size_t tlen = c->klen - c->tenant_off;
    struct hg_lentry *e = hg_ltable_get(&r->rl, tenant, tlen, now);
    if (e == NULL || e->d != w) {
        if (e == NULL)
            e = hg_ltable_add(&r->rl, tenant, tlen, &r->stats.local_evictions);
        e->a = e->b = 0;
        e->c = now - now % w;
        e->d = w;
    }
    uint64_t start = now - now % w;
    if (start != e->c) {
        e->b = start == e->c + w ? e->a : 0;
        e->a = 0;
        e->c = start;
    }
    e->expires_ms = start + 2 * w;
    uint64_t elapsed = now - start;
    double est = (double)e->b * (double)(w - elapsed) / (double)w + (double)e->a;
    struct hg_redis_ratelimit_result *res = &c->res.rl;
    res->limit = c->limit;
    res->allowed = est + 1.0 <= (double)c->limit;
    if (res->allowed) {
        e->a++;
        est += 1.0;
    }
    int64_t left = c->limit - (int64_t)(est + 0.999999);
    res->remaining = left > 0 ? left : 0;
    uint64_t wall_ms = hg_time_now_ns() / 1000000u;
    res->reset_at_unix_s = (int64_t)((wall_ms + (w - elapsed) + 999) / 1000);
    res->fallback = true;
}

/* ---- answers ----------------------------------------------------------------------------- */

static bool cmd_has_cb(const struct cmd *c)
{
    switch (c->kind) {
    case CMD_DEDUP_BEGIN:
    case CMD_DEDUP_DONE:
        return c->cb.dedup != NULL;
    case CMD_RATELIMIT:
        return c->cb.rl != NULL;
    case CMD_CACHE_GET:
        return c->cb.cache != NULL;
    case CMD_SEQ_NEXT:
        return c->cb.seq != NULL;
    default:
        return false;
    }
}

static void cmd_release(struct cmd *c)
{
    if (c->in_redis || c->in_queue || !c->answered)
        return;
    free(c->value);
    free(c);
}

static void inflight_unlink(struct hg_redis *r, struct cmd *c)
{
    if (!c->in_list)
        return;
    hg_list_unlink(&c->link);
    c->in_list = false;
    if (hg_list_empty(&r->inflight))
        uv_timer_stop(&r->cmd_timer); /* no wake-up for nothing */
}

/* The answer in c->res is final: queue the callback for the next loop turn. */
static void answer(struct cmd *c)
{
    struct hg_redis *r = c->r;
    inflight_unlink(r, c);
    c->answered = true;
    if (!cmd_has_cb(c)) {
        cmd_release(c);
        return;
    }
    c->in_queue = true;
    hg_list_insert_tail(&r->queue, &c->link);
    uv_idle_start(&r->idle, on_idle);
}

static void answer_fallback(struct cmd *c)
{
    struct hg_redis *r = c->r;
    switch (c->kind) {
    case CMD_DEDUP_BEGIN:
    case CMD_DEDUP_DONE:
    case CMD_DEDUP_ABORT:
        local_dedup(r, c);
        r->stats.fallback_dedup++;
        break;
    case CMD_RATELIMIT:
        local_ratelimit(r, c);
        r->stats.fallback_ratelimit++;
        break;
    case CMD_CACHE_GET:
    case CMD_CACHE_SET:
    case CMD_CACHE_DEL:
        c->res.cache.status = HG_REDIS_CACHE_MISS;
        c->res.cache.fallback = true;
        r->stats.fallback_cache++;
        break;
    case CMD_SEQ_NEXT:
    case CMD_SEQ_EXPIRE:
        /* No local stand-in: a number from this worker alone would lie about the order. */
        c->res.seq.value = 0;
        c->res.seq.fallback = true;
        r->stats.fallback_sequence++;
        break;
    }
    answer(c);
}

static void deliver(struct cmd *c)
{
    switch (c->kind) {
    case CMD_DEDUP_BEGIN:
    case CMD_DEDUP_DONE:
        c->cb.dedup(c->arg, &c->res.dedup);
        break;
    case CMD_RATELIMIT:
        c->cb.rl(c->arg, &c->res.rl);
        break;
    case CMD_CACHE_GET:
        c->cb.cache(c->arg, &c->res.cache);
        break;
    case CMD_SEQ_NEXT:
        c->cb.seq(c->arg, &c->res.seq);
        break;
    default:
        break;
    }
}

/* ---- connection -------------------------------------------------------------------------- */

static void conn_set(struct hg_redis *r, enum conn_state s)
{
    if (r->conn == CONN_READY && s != CONN_READY && !r->closing && !r->url_changed)
        hg_warn(NULL, "redis down, answering from the local fallback", "host", r->url.host, NULL);
    r->conn = s;
}

static void on_retry(uv_timer_t *t)
{
    start_connect(HG_CONTAINER_OF(t, struct hg_redis, retry_timer));
}

/* Exponential backoff with "equal jitter": half the delay fixed, half random, so a fleet of
 * workers does not reconnect in lockstep after a Redis restart. */
static void schedule_retry(struct hg_redis *r)
{
    if (r->closing)
        return;
    const struct hg_backoff policy = {
        .base_ms = r->opts.backoff_min_ms,
        .max_ms = r->opts.backoff_max_ms,
        .jitter = HG_BACKOFF_EQUAL,
    };
    uint64_t delay = hg_backoff_ms(&policy, r->attempt, hg_random_u64());
    if (r->attempt < 64)
        r->attempt++;
    uv_timer_start(&r->retry_timer, on_retry, delay, 0);
}

/* Condemn the current context; the idle callback frees it outside any hiredis callback. */
static void conn_fail(struct hg_redis *r)
{
    uv_timer_stop(&r->connect_timer);
    if (r->ctx == NULL || r->conn == CONN_DYING)
        return;
    conn_set(r, CONN_DYING);
    uv_idle_start(&r->idle, on_idle);
}

static void reap(struct hg_redis *r)
{
    if (r->conn != CONN_DYING)
        return;
    redisAsyncContext *ac = r->ctx;
    r->ctx = NULL;
    conn_set(r, CONN_IDLE);
    /* Replies still owed come back as NULL here and are answered from the fallback. */
    redisAsyncFree(ac);
    schedule_retry(r);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct hg_redis *r = ac->data;
    if (r->ctx != ac)
        return; /* we freed it ourselves (reap) */
    r->ctx = NULL;
    uv_timer_stop(&r->connect_timer);
    if (!r->closing && r->conn == CONN_READY)
        hg_warn(NULL, "redis connection lost", "error", ac->errstr[0] ? ac->errstr : "eof", NULL);
    conn_set(r, CONN_IDLE);
    schedule_retry(r);
}

static void on_handshake_reply(redisAsyncContext *ac, void *reply_, void *privdata)
{
    struct hg_redis *r = ac->data;
    redisReply *reply = reply_;
    struct hs_step *step = privdata;
    if (r->ctx != ac || r->conn != CONN_HANDSHAKE)
        return;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        hg_warn(NULL, "redis handshake failed", "step", step->name, "error",
                reply ? reply->str : "connection lost", NULL);
        conn_fail(r);
        return;
    }
    if (step->script >= 0) {
        if (reply->type != REDIS_REPLY_STRING || reply->len != 40) {
            hg_warn(NULL, "redis handshake failed", "step", step->name, "error",
                    "unexpected SCRIPT LOAD reply", NULL);
            conn_fail(r);
            return;
        }
        memcpy(r->sha[step->script], reply->str, 40);
        r->sha[step->script][40] = '\0';
    }
    if (--r->handshake_left > 0)
        return;
    uv_timer_stop(&r->connect_timer);
    r->attempt = 0;
    r->stats.connects++;
    conn_set(r, CONN_READY);
    hg_info(NULL, r->url_changed ? "redis ready with the reloaded url" : "redis ready", "host", r->url.host, NULL);
    r->url_changed = false;
}

static void on_connect(const redisAsyncContext *cac, int status)
{
    struct hg_redis *r = cac->data;
    /* hiredis hands out a const pointer here but the context is ours to send on. */
    redisAsyncContext *ac = r->ctx;
    if (ac != cac)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees the context right after this callback. */
        hg_debug(NULL, "redis connect failed", "error", cac->errstr, NULL);
        r->ctx = NULL;
        uv_timer_stop(&r->connect_timer);
        conn_set(r, CONN_IDLE);
        schedule_retry(r);
        return;
    }
    if (r->closing) {
        conn_fail(r);
        return;
    }
    conn_set(r, CONN_HANDSHAKE);
    r->handshake_left = 0;
    int rc = REDIS_OK;
    if (r->url.password[0]) {
        if (r->url.user[0])
            rc |= redisAsyncCommand(ac, on_handshake_reply, &hs_auth, "AUTH %s %s", r->url.user,
                                    r->url.password);
        else
            rc |= redisAsyncCommand(ac, on_handshake_reply, &hs_auth, "AUTH %s", r->url.password);
        r->handshake_left++;
    }
    if (r->url.db != 0) {
        rc |= redisAsyncCommand(ac, on_handshake_reply, &hs_select, "SELECT %d", r->url.db);
        r->handshake_left++;
    }
    for (int i = 0; i < SCRIPT__COUNT; i++) {
        rc |= redisAsyncCommand(ac, on_handshake_reply, &hs_load[i], "SCRIPT LOAD %s", scripts[i]);
        r->handshake_left++;
    }
    if (rc != REDIS_OK)
        conn_fail(r);
}

static void on_connect_timeout(uv_timer_t *t)
{
    struct hg_redis *r = HG_CONTAINER_OF(t, struct hg_redis, connect_timer);
    if (r->conn == CONN_CONNECTING || r->conn == CONN_HANDSHAKE) {
        hg_debug(NULL, "redis connect timed out", "host", r->url.host, NULL);
        conn_fail(r);
    }
}

static void connect_to(struct hg_redis *r, const char *ip)
{
    redisAsyncContext *ac = redisAsyncConnect(ip, r->url.port);
    if (ac == NULL || ac->err) {
        hg_debug(NULL, "redis connect failed", "error", ac ? ac->errstr : "out of memory", NULL);
        if (ac)
            redisAsyncFree(ac);
        goto retry;
    }
    if (hg_redis_uv_attach(ac, r->loop) != 0) {
        redisAsyncFree(ac);
        goto retry;
    }
    ac->data = r;
    r->ctx = ac;
    conn_set(r, CONN_CONNECTING);
    /* Order matters in hiredis 0.14: setting the connect callback arms the write watcher,
     * which needs the adapter attached. */
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    redisAsyncSetConnectCallback(ac, on_connect);
    uv_timer_start(&r->connect_timer, on_connect_timeout, r->opts.connect_timeout_ms, 0);
    return;
retry:
    conn_set(r, CONN_IDLE);
    schedule_retry(r);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct hg_redis *r = HG_CONTAINER_OF(req, struct hg_redis, gai);
    r->resolving = false;
    char ip[64] = "";
    if (status == 0 && res) {
        if (res->ai_family == AF_INET6)
            uv_ip6_name((const struct sockaddr_in6 *)res->ai_addr, ip, sizeof(ip));
        else
            uv_ip4_name((const struct sockaddr_in *)res->ai_addr, ip, sizeof(ip));
    }
    uv_freeaddrinfo(res);
    if (r->closing) {
        uv_idle_start(&r->idle, on_idle); /* let the close finish */
        return;
    }
    if (r->resolve_stale) {
        /* A reload changed the URL meanwhile: that address is the old host's. */
        r->resolve_stale = false;
        conn_set(r, CONN_IDLE);
        start_connect(r);
        return;
    }
    if (ip[0] == '\0') {
        hg_debug(NULL, "redis host did not resolve", "host", r->url.host, "error",
                 hg_strerror(status), NULL);
        conn_set(r, CONN_IDLE);
        schedule_retry(r);
        return;
    }
    connect_to(r, ip);
}

/* Resolve off the loop (getaddrinfo blocks) unless the host is already an address. */
static void start_connect(struct hg_redis *r)
{
    if (r->closing || r->conn != CONN_IDLE)
        return;
    unsigned char tmp[16];
    if (uv_inet_pton(AF_INET, r->url.host, tmp) == 0 ||
        uv_inet_pton(AF_INET6, r->url.host, tmp) == 0) {
        connect_to(r, r->url.host);
        return;
    }
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (uv_getaddrinfo(r->loop, &r->gai, on_resolved, r->url.host, NULL, &hints) != 0) {
        schedule_retry(r);
        return;
    }
    r->resolving = true;
    conn_set(r, CONN_RESOLVING);
}

/* ---- commands ---------------------------------------------------------------------------- */

static void on_cmd_timer(uv_timer_t *t)
{
    struct hg_redis *r = HG_CONTAINER_OF(t, struct hg_redis, cmd_timer);
    uint64_t now = uv_now(r->loop);
    unsigned expired = 0;
    struct hg_list *first;
    while ((first = hg_list_first(&r->inflight)) != NULL &&
           hg_list_entry(first, struct cmd, link)->deadline <= now) {
        r->stats.timeouts++;
        expired++;
        /* unlinks it; its late reply is dropped */
        answer_fallback(hg_list_entry(first, struct cmd, link));
    }
    if (expired) {
        /* A Redis that misses deadlines is treated as down: dropping the connection means the
         * next calls answer at once from the fallback instead of each waiting the timeout. */
        hg_warn(NULL, "redis command timed out, reconnecting", "host", r->url.host, NULL);
        conn_fail(r);
    }
    if ((first = hg_list_first(&r->inflight)) != NULL)
        uv_timer_start(&r->cmd_timer, on_cmd_timer,
                       hg_list_entry(first, struct cmd, link)->deadline - now, 0);
}

static void on_reply(redisAsyncContext *ac, void *reply_, void *privdata);

/* Send the script call of c (EVALSHA, or EVAL with the full text after NOSCRIPT). */
static int send_script(struct hg_redis *r, struct cmd *c)
{
    char a1[24], a2[24], member[24];
    const char *argv[7];
    size_t argvlen[7];
    int argc = 0;
    enum script_id id = c->kind == CMD_RATELIMIT ? SCRIPT_RATELIMIT : SCRIPT_DEDUP;
    argv[argc++] = c->evalled ? "EVAL" : "EVALSHA";
    argv[argc++] = c->evalled ? scripts[id] : r->sha[id];
    argv[argc++] = "1";
    argv[argc] = c->key;
    argvlen[argc++] = c->klen;
    if (id == SCRIPT_RATELIMIT) {
        snprintf(a1, sizeof(a1), "%llu", (unsigned long long)c->window_ms);
        snprintf(a2, sizeof(a2), "%lld", (long long)c->limit);
        snprintf(member, sizeof(member), "%016llx", (unsigned long long)hg_random_u64());
        argv[argc++] = a1;
        argv[argc++] = a2;
        argv[argc++] = member;
    } else {
        snprintf(a1, sizeof(a1), "%llu", (unsigned long long)c->ttl_ms);
        argv[argc++] = a1;
    }
    for (int i = 0; i < argc; i++)
        if (i != 3)
            argvlen[i] = strlen(argv[i]);
    return redisAsyncCommandArgv(r->ctx, on_reply, c, argc, argv, argvlen);
}

static int send_cmd(struct hg_redis *r, struct cmd *c, const char *value, size_t vlen)
{
    char ttl[24];
    const char *argv[5];
    size_t argvlen[5];
    snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)c->ttl_ms);
    switch (c->kind) {
    case CMD_DEDUP_BEGIN:
    case CMD_RATELIMIT:
        return send_script(r, c);
    case CMD_DEDUP_DONE:
        value = "done";
        vlen = 4;
        /* fall through */
    case CMD_CACHE_SET:
        argv[0] = "SET";
        argv[1] = c->key;
        argv[2] = value;
        argv[3] = "PX";
        argv[4] = ttl;
        argvlen[0] = 3;
        argvlen[1] = c->klen;
        argvlen[2] = vlen;
        argvlen[3] = 2;
        argvlen[4] = strlen(ttl);
        return redisAsyncCommandArgv(r->ctx, on_reply, c, 5, argv, argvlen);
    case CMD_SEQ_NEXT:
        argv[0] = "INCR";
        argv[1] = c->key;
        argvlen[0] = 4;
        argvlen[1] = c->klen;
        return redisAsyncCommandArgv(r->ctx, on_reply, c, 2, argv, argvlen);
    case CMD_SEQ_EXPIRE:
        argv[0] = "PEXPIRE";
        argv[1] = c->key;
        argv[2] = ttl;
        argvlen[0] = 7;
        argvlen[1] = c->klen;
        argvlen[2] = strlen(ttl);
        return redisAsyncCommandArgv(r->ctx, on_reply, c, 3, argv, argvlen);
    case CMD_DEDUP_ABORT:
    case CMD_CACHE_DEL:
    case CMD_CACHE_GET:
        argv[0] = c->kind == CMD_CACHE_GET ? "GET" : "DEL";
        argv[1] = c->key;
        argvlen[0] = 3;
        argvlen[1] = c->klen;
        return redisAsyncCommandArgv(r->ctx, on_reply, c, 2, argv, argvlen);
    }
    return REDIS_ERR;
}

static int64_t reply_int(const redisReply *rp)
{
    return rp->type == REDIS_REPLY_INTEGER ? rp->integer : 0;
}

/* Turn a successful reply into c->res; false when the reply has an unexpected shape. */
static bool parse_reply(struct cmd *c, const redisReply *rp)
{
    switch (c->kind) {
    case CMD_DEDUP_BEGIN:
        if (rp->type != REDIS_REPLY_STRING && rp->type != REDIS_REPLY_STATUS)
            return false;
        if (rp->len == 3 && memcmp(rp->str, "new", 3) == 0)
            c->res.dedup.status = HG_REDIS_DEDUP_NEW;
        else if (rp->len == 4 && memcmp(rp->str, "done", 4) == 0)
            c->res.dedup.status = HG_REDIS_DEDUP_DUPLICATE_DONE;
        else
            c->res.dedup.status = HG_REDIS_DEDUP_DUPLICATE_PENDING;
        return true;
    case CMD_DEDUP_DONE:
        c->res.dedup.status = HG_REDIS_DEDUP_MARKED;
        return true;
    case CMD_SEQ_NEXT:
        if (rp->type != REDIS_REPLY_INTEGER || rp->integer < 1)
            return false;
        c->res.seq.value = (uint64_t)rp->integer;
        return true;
    case CMD_RATELIMIT: {
        if (rp->type != REDIS_REPLY_ARRAY || rp->elements != 4)
            return false;
        for (size_t i = 0; i < 4; i++)
            if (rp->element[i]->type != REDIS_REPLY_INTEGER)
                return false;
        struct hg_redis_ratelimit_result *res = &c->res.rl;
        int64_t now_ms = reply_int(rp->element[3]);
        int64_t reset_ms = reply_int(rp->element[2]);
        res->allowed = reply_int(rp->element[0]) == 1;
        res->limit = c->limit;
        res->remaining = HG_MAX(reply_int(rp->element[1]), 0);
        res->reset_at_unix_s = (now_ms + HG_MAX(reset_ms, 0) + 999) / 1000;
        return true;
    }
    case CMD_CACHE_GET:
        if (rp->type == REDIS_REPLY_NIL) {
            c->res.cache.status = HG_REDIS_CACHE_MISS;
            return true;
        }
        if (rp->type != REDIS_REPLY_STRING)
            return false;
        if (rp->len == 1 && rp->str[0] == 'n') {
            c->res.cache.status = HG_REDIS_CACHE_NEGATIVE;
        } else if (rp->len >= 1 && rp->str[0] == 'v' && rp->len - 1 <= HG_REDIS_VALUE_MAX) {
            c->value = hg_xmalloc(rp->len);
            memcpy(c->value, rp->str + 1, rp->len - 1);
            c->value[rp->len - 1] = '\0';
            c->res.cache.status = HG_REDIS_CACHE_HIT;
            c->res.cache.value = c->value;
            c->res.cache.len = rp->len - 1;
        } else {
            /* Not written by us (or too big): behave as if nothing were cached. */
            c->res.cache.status = HG_REDIS_CACHE_MISS;
        }
        return true;
    default:
        return true;
    }
}

static void on_reply(redisAsyncContext *ac, void *reply_, void *privdata)
{
    struct cmd *c = privdata;
    struct hg_redis *r = c->r;
    redisReply *rp = reply_;
    c->in_redis = false;
    if (c->answered) { /* timed out earlier: the late reply is dropped */
        cmd_release(c);
        return;
    }
    if (rp == NULL) { /* the connection went away */
        answer_fallback(c);
        return;
    }
    if (rp->type == REDIS_REPLY_ERROR) {
        if ((c->kind == CMD_RATELIMIT || c->kind == CMD_DEDUP_BEGIN) && !c->evalled &&
            strncmp(rp->str, "NOSCRIPT", 8) == 0 && r->conn == CONN_READY && r->ctx == ac) {
            /* The script cache was flushed (SCRIPT FLUSH, failover to a fresh replica): EVAL
             * sends the text and caches it again. */
            r->stats.noscript++;
            c->evalled = true;
            if (send_script(r, c) == REDIS_OK) {
                c->in_redis = true;
                return;
            }
        }
        hg_warn(NULL, "redis command failed, answering from the fallback", "error", rp->str, NULL);
        answer_fallback(c);
        return;
    }
    if (!parse_reply(c, rp)) {
        hg_warn(NULL, "redis reply has an unexpected shape", NULL);
        answer_fallback(c);
        return;
    }
    answer(c);
}

static struct cmd *cmd_new(struct hg_redis *r, enum cmd_kind kind, const char *prefix,
                           const char *key, size_t klen)
{
    size_t plen = strlen(prefix);
    struct cmd *c = hg_xcalloc(1, sizeof(*c) + plen + klen + 1);
    c->r = r;
    c->kind = kind;
    memcpy(c->key, prefix, plen);
    memcpy(c->key + plen, key, klen);
    c->klen = plen + klen;
    c->tenant_off = plen;
    return c;
}

/* Send c to Redis when it is ready, else answer it from the fallback (on the next loop turn). */
static void submit(struct hg_redis *r, struct cmd *c, const char *value, size_t vlen)
{
    if (r->conn != CONN_READY || send_cmd(r, c, value, vlen) != REDIS_OK) {
        answer_fallback(c);
        return;
    }
    c->in_redis = true;
    c->deadline = uv_now(r->loop) + r->opts.command_timeout_ms;
    c->in_list = true;
    hg_list_insert_tail(&r->inflight, &c->link);
    if (!uv_is_active((uv_handle_t *)&r->cmd_timer))
        uv_timer_start(&r->cmd_timer, on_cmd_timer, r->opts.command_timeout_ms, 0);
}

static int check_key(const char *key, size_t max, size_t *len)
{
    if (key == NULL)
        return HG_ERR_INVALID;
    *len = strnlen(key, max + 1);
    return *len == 0 || *len > max ? HG_ERR_INVALID : 0;
}

int hg_redis_dedup_key(char *out, size_t cap, const char *tenant, const char *event_id)
{
    int n = snprintf(out, cap, KEY_PREFIX_DEDUP "%s:%s", tenant, event_id);
    if (n < 0 || (size_t)n >= cap || (size_t)n > HG_REDIS_KEY_MAX)
        return HG_ERR_TOO_BIG;
    return 0;
}

static int dedup_call(struct hg_redis *r, enum cmd_kind kind, const char *key, uint64_t ttl_ms,
                      hg_redis_dedup_cb cb, void *arg)
{
    size_t klen;
    if (r->closing)
        return HG_ERR_CLOSED;
    if (check_key(key, HG_REDIS_KEY_MAX, &klen) < 0 ||
        (kind != CMD_DEDUP_ABORT && (ttl_ms == 0 || ttl_ms > (1ull << 40))))
        return HG_ERR_INVALID;
    struct cmd *c = cmd_new(r, kind, "", key, klen);
    c->ttl_ms = ttl_ms;
    c->cb.dedup = cb;
    c->arg = arg;
    if (kind == CMD_DEDUP_ABORT) {
        /* Forget a local mark too, so a retry is NEW whichever side answers it. */
        struct hg_lentry *e = hg_ltable_get(&r->dedup, c->key, c->klen, mono_ms());
        if (e)
            hg_ltable_remove(&r->dedup, e);
    }
    submit(r, c, NULL, 0);
    return 0;
}

int hg_redis_dedup_begin(struct hg_redis *r, const char *key, uint64_t pending_ttl_ms,
                         hg_redis_dedup_cb cb, void *arg)
{
    if (cb == NULL)
        return HG_ERR_INVALID;
    return dedup_call(r, CMD_DEDUP_BEGIN, key, pending_ttl_ms, cb, arg);
}

int hg_redis_dedup_done(struct hg_redis *r, const char *key, uint64_t ttl_ms,
                        hg_redis_dedup_cb cb, void *arg)
{
    return dedup_call(r, CMD_DEDUP_DONE, key, ttl_ms, cb, arg);
}

int hg_redis_dedup_abort(struct hg_redis *r, const char *key)
{
    return dedup_call(r, CMD_DEDUP_ABORT, key, 0, NULL, NULL);
}

int hg_redis_ratelimit(struct hg_redis *r, const char *tenant, int64_t limit, uint64_t window_ms,
                       hg_redis_ratelimit_cb cb, void *arg)
{
    size_t tlen;
    if (r->closing)
        return HG_ERR_CLOSED;
    if (cb == NULL || check_key(tenant, HG_REDIS_TENANT_MAX, &tlen) < 0 || limit < 1 ||
        limit > (1ll << 40) || window_ms == 0 || window_ms > (1ull << 40))
        return HG_ERR_INVALID;
    struct cmd *c = cmd_new(r, CMD_RATELIMIT, KEY_PREFIX_RL, tenant, tlen);
    c->limit = limit;
    c->window_ms = window_ms;
    c->cb.rl = cb;
    c->arg = arg;
    submit(r, c, NULL, 0);
    return 0;
}

int hg_redis_cache_get(struct hg_redis *r, const char *key, hg_redis_cache_cb cb, void *arg)
{
    size_t klen;
    if (r->closing)
        return HG_ERR_CLOSED;
    if (cb == NULL || check_key(key, HG_REDIS_KEY_MAX, &klen) < 0)
        return HG_ERR_INVALID;
    struct cmd *c = cmd_new(r, CMD_CACHE_GET, KEY_PREFIX_CACHE, key, klen);
    c->cb.cache = cb;
    c->arg = arg;
    submit(r, c, NULL, 0);
    return 0;
}

/* Stored values carry a one-byte tag ('v' value, 'n' negative) so that no real value can be
 * mistaken for the negative marker. */
static int cache_set(struct hg_redis *r, const char *key, const void *value, size_t len,
                     bool negative, uint64_t ttl_ms)
{
    size_t klen;
    if (r->closing)
        return HG_ERR_CLOSED;
    if (check_key(key, HG_REDIS_KEY_MAX, &klen) < 0 || ttl_ms == 0 || ttl_ms > (1ull << 40) ||
        (!negative && value == NULL && len > 0))
        return HG_ERR_INVALID;
    if (len > HG_REDIS_VALUE_MAX)
        return HG_ERR_TOO_BIG;
    struct cmd *c = cmd_new(r, CMD_CACHE_SET, KEY_PREFIX_CACHE, key, klen);
    c->ttl_ms = ttl_ms;
    if (negative) {
        submit(r, c, "n", 1);
        return 0;
    }
    char *tagged = hg_xmalloc(len + 1);
    tagged[0] = 'v';
    if (len)
        memcpy(tagged + 1, value, len);
    submit(r, c, tagged, len + 1); /* hiredis copies the formatted command */
    free(tagged);
    return 0;
}

int hg_redis_cache_set(struct hg_redis *r, const char *key, const void *value, size_t len,
                       uint64_t ttl_ms)
{
    return cache_set(r, key, value, len, false, ttl_ms);
}

int hg_redis_cache_set_negative(struct hg_redis *r, const char *key, uint64_t ttl_ms)
{
    return cache_set(r, key, NULL, 0, true, ttl_ms);
}

int hg_redis_cache_del(struct hg_redis *r, const char *key)
{
    size_t klen;
    if (r->closing)
        return HG_ERR_CLOSED;
    if (check_key(key, HG_REDIS_KEY_MAX, &klen) < 0)
        return HG_ERR_INVALID;
    submit(r, cmd_new(r, CMD_CACHE_DEL, KEY_PREFIX_CACHE, key, klen), NULL, 0);
    return 0;
}

/* ---- lifecycle --------------------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
    struct hg_redis *r = h->data;
    if (--r->handles_open > 0)
        return;
    hg_redis_close_cb cb = r->close_cb;
    void *arg = r->close_arg;
    hg_ltable_free(&r->dedup);
    hg_ltable_free(&r->rl);
    free(r);
    if (cb)
        cb(arg);
}

static void finish_close(struct hg_redis *r)
{
    uv_idle_stop(&r->idle);
    uv_timer_stop(&r->retry_timer);
    uv_timer_stop(&r->connect_timer);
    uv_timer_stop(&r->cmd_timer);
    r->handles_open = 4;
    uv_close((uv_handle_t *)&r->retry_timer, on_handle_closed);
    uv_close((uv_handle_t *)&r->connect_timer, on_handle_closed);
    uv_close((uv_handle_t *)&r->cmd_timer, on_handle_closed);
    uv_close((uv_handle_t *)&r->idle, on_handle_closed);
}

static void on_idle(uv_idle_t *h)
{
    struct hg_redis *r = HG_CONTAINER_OF(h, struct hg_redis, idle);
    reap(r);
    /* Take the whole queue: answers queued by these callbacks wait for the next turn. */
    struct hg_list batch;
    hg_list_init(&batch);
    hg_list_move(&r->queue, &batch);
    struct hg_list *first;
    while ((first = hg_list_first(&batch)) != NULL) {
        struct cmd *c = hg_list_entry(first, struct cmd, link);
        hg_list_unlink(&c->link);
        deliver(c);
        c->in_queue = false;
        cmd_release(c);
    }
    if (!hg_list_empty(&r->queue) || r->conn == CONN_DYING)
        return;
    uv_idle_stop(&r->idle);
    if (r->closing && !r->resolving && r->handles_open == 0)
        finish_close(r);
}

int hg_redis_open(uv_loop_t *loop, const char *url, const struct hg_redis_opts *opts,
                  struct hg_redis **out)
{
    struct hg_redis *r = hg_xcalloc(1, sizeof(*r));
    int rc = hg_redis_url_parse(url, &r->url);
    if (rc < 0) {
        free(r);
        return rc;
    }
    r->loop = loop;
    hg_list_init(&r->inflight);
    hg_list_init(&r->queue);
    if (opts)
        r->opts = *opts;
    if (r->opts.command_timeout_ms == 0)
        r->opts.command_timeout_ms = 200;
    if (r->opts.connect_timeout_ms == 0)
        r->opts.connect_timeout_ms = 1000;
    if (r->opts.backoff_min_ms == 0)
        r->opts.backoff_min_ms = 100;
    if (r->opts.backoff_max_ms == 0)
        r->opts.backoff_max_ms = 10000;
    if (r->opts.backoff_max_ms < r->opts.backoff_min_ms)
        r->opts.backoff_max_ms = r->opts.backoff_min_ms;
    r->dedup.max = r->opts.local_dedup_max ? r->opts.local_dedup_max : 100000;
    r->rl.max = r->opts.local_ratelimit_max ? r->opts.local_ratelimit_max : 10000;
    /* uv_timer_init / uv_idle_init cannot fail on a valid loop. */
    uv_timer_init(loop, &r->retry_timer);
    uv_timer_init(loop, &r->connect_timer);
    uv_timer_init(loop, &r->cmd_timer);
    uv_idle_init(loop, &r->idle);
    r->retry_timer.data = r->connect_timer.data = r->cmd_timer.data = r->idle.data = r;
    r->conn = CONN_IDLE;
    start_connect(r);
    *out = r;
    return 0;
}

int hg_redis_set_url(struct hg_redis *r, const char *url, bool *changed)
{
    struct hg_redis_url u;
    *changed = false;
    int rc = hg_redis_url_parse(url, &u);
    if (rc != 0 || r->closing)
        return rc;
    if (memcmp(&u, &r->url, sizeof u) == 0) { /* both zero-filled by the parser */
        explicit_bzero(&u, sizeof u);
        return 0;
    }
    *changed = true;
    explicit_bzero(&r->url, sizeof r->url);
    r->url = u;
    explicit_bzero(&u, sizeof u);
    r->url_changed = true;
    r->attempt = 0;
    hg_info(NULL, "redis url changed by a reload: reconnecting", "host", r->url.host, NULL);
    switch (r->conn) {
    case CONN_IDLE: /* waiting out a backoff: try the new URL now */
        uv_timer_stop(&r->retry_timer);
        start_connect(r);
        break;
    case CONN_RESOLVING:
        r->resolve_stale = true;
        break;
    case CONN_CONNECTING:
    case CONN_HANDSHAKE:
    case CONN_READY:
        /* Reaped on the next loop turn, then a new connect after the first (short) backoff. */
        conn_fail(r);
        break;
    case CONN_DYING:
        break; /* reap reconnects, with the new URL */
    }
    return 0;
}

void hg_redis_close(struct hg_redis *r, hg_redis_close_cb cb, void *arg)
{
    if (r->closing)
        return;
    r->closing = true;
    r->close_cb = cb;
    r->close_arg = arg;
    uv_timer_stop(&r->retry_timer);
    uv_timer_stop(&r->connect_timer);
    if (r->resolving)
        uv_cancel((uv_req_t *)&r->gai);
    if (r->ctx && r->conn != CONN_DYING)
        conn_set(r, CONN_DYING);
    /* Everything else happens from the loop: reaping the context answers what is still owed,
     * then the handles close. */
    uv_idle_start(&r->idle, on_idle);
}

enum hg_redis_state hg_redis_state(const struct hg_redis *r)
{
    return r->conn == CONN_READY ? HG_REDIS_OK : HG_REDIS_DOWN;
}

const struct hg_redis_stats *hg_redis_stats(const struct hg_redis *r)
{
    return &r->stats;
}

int hg_redis_sequence_next(struct hg_redis *r, const char *key, uint64_t ttl_ms, hg_redis_seq_cb cb, void *arg)
{
    size_t klen;
    if (r->closing)
        return HG_ERR_CLOSED;
    if (cb == NULL || check_key(key, HG_REDIS_KEY_MAX, &klen) < 0 || ttl_ms == 0 || ttl_ms > (1ull << 40))
        return HG_ERR_INVALID;
    struct cmd *c = cmd_new(r, CMD_SEQ_NEXT, KEY_PREFIX_SEQ, key, klen);
    c->cb.seq = cb;
    c->arg = arg;
    submit(r, c, NULL, 0);
    /* Refreshed at every number: a conversation's counter lives ttl_ms past its last event. */
    struct cmd *x = cmd_new(r, CMD_SEQ_EXPIRE, KEY_PREFIX_SEQ, key, klen);
    x->ttl_ms = ttl_ms;
    submit(r, x, NULL, 0);
    return 0;
}

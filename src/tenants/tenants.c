/*
 * Tenant resolution on a worker's loop: config snapshot first (no allocation, no hop), then a
 * bounded per-worker LRU, then the Redis cache, then the tenant service through hg_http. Lookups
 * of the same id coalesce; answers are cached positive and negative. See docs/tenants.md.
 */
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "clients/http.h"
#include "clients/redis.h"
#include "core/buf.h"
#include "core/common.h"
#include "core/err.h"
#include "core/list.h"
#include "core/log.h"
#include "core/ltable.h"
#include "tenants/tenants.h"

#define DEF_TIMEOUT_MS 2000u
#define DEF_CACHE_TTL_MS 300000u
#define DEF_NEGATIVE_TTL_MS 60000u
#define DEF_LOCAL_TTL_MS 10000u
#define DEF_STALE_TTL_MS 3600000u
#define DEF_LOCAL_MAX 4096u
#define DEF_MAX_INFLIGHT 256u
#define DEF_FAILURE_BACKOFF_MS 1000u
#define DEF_RATE_LIMIT 1000u

#define SERVICE_URL_MAX 1024
#define SERVICE_TOKEN_MAX 4096
#define SECRETS_MAX 8        /* app secrets per tenant (rotation needs two, a few to spare) */
#define SECRET_LEN_MAX 1024
#define TOKEN_LEN_MAX 4096
#define RATE_LIMIT_MAX 1000000000
/* "ba:" / "id:" + id: the LRU key; Redis gets "tenant:" in front (under hg:cache:). */
#define KEY_MAX (3 + HG_TENANTS_ID_MAX + 1)

/* ---- tenants ----------------------------------------------------------------------------- */

struct hg_tenant *hg_tenant_ref(struct hg_tenant *t)
{
    atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
    return t;
}

/* A list the tenant owns (service tenants); items[] may be partly filled after a parse error. */
static void secrets_free(struct hg_strlist *l)
{
    for (size_t i = 0; i < l->n; i++) {
        memset(l->items[i], 0, strlen(l->items[i]));
        free(l->items[i]);
    }
    free(l->items);
}

void hg_tenant_unref(struct hg_tenant *t)
{
    if (t == NULL || atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (t->conf != NULL) {
        /* Strings belong to the config snapshot. */
        hg_conf_unref(t->conf);
    } else {
        secrets_free(&t->app_secrets);
        secrets_free(&t->genesys_secrets);
        secrets_free(&t->genesys_api_keys);
        secrets_free(&t->twilio_auth_tokens);
        free(t->id);
        free(t->verify_token);
        free(t->access_token);
    }
    free(t);
}

const char *hg_tenant_source_name(enum hg_tenant_source s)
{
    switch (s) {
    case HG_TENANT_CONFIG: return "config";
    case HG_TENANT_CACHE: return "cache";
    case HG_TENANT_SERVICE: return "service";
    case HG_TENANT_DEFAULT: return "default";
    }
    return "unknown";
}

/*
 * Ids go into URL paths, Redis keys and archive object keys, and arrive before the signature is
 * checked: only 1-64 of A-Z a-z 0-9 - _ . starting with a letter or digit (so never "." or "..",
 * which curl would fold away as dot segments).
 */
static bool valid_id(const char *s)
{
    size_t n = 0;
    if (s == NULL)
        return false;
    for (; s[n] != '\0'; n++) {
        char c = s[n];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (n >= HG_TENANTS_ID_MAX || !(alnum || (n > 0 && (c == '-' || c == '_' || c == '.'))))
            return false;
    }
    return n > 0;
}

static uint32_t default_rate_limit(const struct hg_conf *conf)
{
    return conf != NULL && conf->ratelimit_default != 0 ? conf->ratelimit_default : DEF_RATE_LIMIT;
}

/* A tenant whose strings point into `conf` ([whatsapp] values fill what the section leaves out). */
static struct hg_tenant *tenant_from_conf(const struct hg_conf *conf, const struct hg_tenant_conf *tc,
                                          enum hg_tenant_source source)
{
    struct hg_tenant *t = hg_xcalloc(1, sizeof(*t));
    atomic_init(&t->refs, 1);
    t->source = source;
    /* The snapshot is immutable; only its refcount changes, which hg_conf_ref allows on a
     * const snapshot by design (the count is atomic). */
    t->conf = hg_conf_ref((struct hg_conf *)conf);
    t->id = tc != NULL ? tc->id : conf->default_tenant;
    t->app_secrets = tc != NULL && tc->app_secrets.n > 0 ? tc->app_secrets : conf->app_secrets;
    t->genesys_secrets = tc != NULL && tc->genesys_secrets.n > 0 ? tc->genesys_secrets : conf->genesys_secrets;
    t->genesys_api_keys = tc != NULL && tc->genesys_api_keys.n > 0 ? tc->genesys_api_keys : conf->genesys_api_keys;
    t->twilio_auth_tokens =
        tc != NULL && tc->twilio_auth_tokens.n > 0 ? tc->twilio_auth_tokens : conf->twilio_auth_tokens;
    t->verify_token = tc != NULL && tc->verify_token != NULL ? tc->verify_token : conf->verify_token;
    t->access_token = tc != NULL && tc->access_token != NULL ? tc->access_token : conf->access_token;
    t->rate_limit = tc != NULL && tc->rate_limit != 0 ? tc->rate_limit : default_rate_limit(conf);
    return t;
}

/* An optional string field: absent/null → NULL; else a non-empty string up to `max` bytes. */
static int opt_string(json_t *root, const char *name, size_t max, char **out)
{
    json_t *v = json_object_get(root, name);
    *out = NULL;
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > max ||
        strlen(json_string_value(v)) != json_string_length(v))
        return HG_ERR_PARSE;
    *out = hg_xstrdup(json_string_value(v));
    return 0;
}

/* An optional list of secrets: absent/null → empty; else 1..SECRETS_MAX non-empty strings. */
static int opt_secrets(json_t *root, const char *name, struct hg_strlist *out)
{
    json_t *secrets = json_object_get(root, name);
    if (secrets == NULL || json_is_null(secrets))
        return 0;
    size_t n = json_is_array(secrets) ? json_array_size(secrets) : 0;
    if (n == 0 || n > SECRETS_MAX)
        return HG_ERR_PARSE;
    out->items = hg_xcalloc(n, sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_array_get(secrets, i);
        if (!json_is_string(s) || json_string_length(s) == 0 || json_string_length(s) > SECRET_LEN_MAX ||
            strlen(json_string_value(s)) != json_string_length(s))
            return HG_ERR_PARSE;
        out->items[out->n++] = hg_xstrdup(json_string_value(s));
    }
    return 0;
}

int hg_tenant_parse(const char *json, size_t len, const struct hg_conf *conf, struct hg_tenant **out)
{
    int rc = HG_ERR_PARSE;
    struct hg_tenant *t = NULL;
    json_t *root = NULL;

    *out = NULL;
    if (len > HG_TENANTS_BODY_MAX)
        return HG_ERR_TOO_BIG;
    root = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);
    if (root == NULL || !json_is_object(root))
        goto out;

    t = hg_xcalloc(1, sizeof(*t));
    atomic_init(&t->refs, 1);
    t->source = HG_TENANT_SERVICE;

    json_t *id = json_object_get(root, "tenant_id");
    if (!json_is_string(id) || !valid_id(json_string_value(id)))
        goto out;
    t->id = hg_xstrdup(json_string_value(id));

    /* Each provider's secrets are optional; a tenant needs at least one (docs/tenants.md). */
    if (opt_secrets(root, "app_secrets", &t->app_secrets) != 0 ||
        opt_secrets(root, "genesys_secrets", &t->genesys_secrets) != 0 ||
        opt_secrets(root, "genesys_api_keys", &t->genesys_api_keys) != 0 ||
        opt_secrets(root, "twilio_auth_tokens", &t->twilio_auth_tokens) != 0)
        goto out;
    if (t->app_secrets.n + t->genesys_secrets.n + t->genesys_api_keys.n + t->twilio_auth_tokens.n == 0)
        goto out;

    if (opt_string(root, "verify_token", TOKEN_LEN_MAX, &t->verify_token) != 0 ||
        opt_string(root, "access_token", TOKEN_LEN_MAX, &t->access_token) != 0)
        goto out;

    json_t *rl = json_object_get(root, "rate_limit");
    t->rate_limit = default_rate_limit(conf);
    if (rl != NULL && !json_is_null(rl)) {
        if (!json_is_integer(rl) || json_integer_value(rl) < 0 ||
            json_integer_value(rl) > RATE_LIMIT_MAX)
            goto out;
        if (json_integer_value(rl) > 0)
            t->rate_limit = (uint32_t)json_integer_value(rl);
    }
    *out = t;
    t = NULL;
    rc = 0;
out:
    hg_tenant_unref(t);
    json_decref(root);
    return rc;
}

/* ---- the per-worker LRU -------------------------------------------------------------------- */

/*
 * An hg_ltable (core/ltable.h) keyed "ba:<id>" / "id:<id>": ptr = a tenant reference (NULL = "no
 * such tenant"), c = loop ms until which it answers without a lookup, expires_ms = loop ms until
 * which it may still answer while the service fails (stale-if-error).
 */
static void lru_drop(void *tenant)
{
    hg_tenant_unref(tenant);
}

static struct hg_tenant *entry_tenant(const struct hg_lentry *e)
{
    return e->ptr;
}

/* The entry for key unless it is past its stale horizon (then it is dropped). */
static struct hg_lentry *lru_find(struct hg_ltable *l, const char *key, uint64_t now)
{
    return hg_ltable_get(l, key, strlen(key), now);
}

/* Remember key → tenant (a new reference is taken; NULL = not found). */
static void lru_put(struct hg_ltable *l, const char *key, struct hg_tenant *tenant, uint64_t now,
                    uint64_t fresh_ms, uint64_t stale_ms)
{
    struct hg_lentry *e = lru_find(l, key, now);
    if (e == NULL) {
        if (l->max == 0)
            return;
        uint64_t evicted = 0;
        e = hg_ltable_add(l, key, strlen(key), &evicted);
    }
    hg_ltable_set_ptr(l, e, tenant != NULL ? hg_tenant_ref(tenant) : NULL);
    e->c = now + fresh_ms;
    /* Not-found entries are never served stale: an outage must not hide a new tenant. */
    e->expires_ms = tenant != NULL ? now + HG_MAX(fresh_ms, stale_ms) : e->c;
}

/* ---- the resolver ------------------------------------------------------------------------ */

/* One hg_tenants_resolve call. */
struct resolve {
    struct hg_tenants *t;
    struct hg_conf *conf;              /* a reference, until the callback ran */
    char *path;                        /* copy of path_tenant, or NULL */
    char *ids[HG_TENANTS_MAX_IDS];     /* copies of the business ids */
    size_t n_ids;
    size_t idx;                        /* next business id to try */
    bool asked;                        /* one id was looked up (Redis, service) for this resolve:
                                        * the later ids are decided by this worker's LRU alone */
    hg_tenants_cb cb;
    void *arg;
    int status;                        /* outcome, once on the ready list */
    struct hg_tenant *tenant;
    struct resolve *next;              /* in a lookup's waiters, or the ready list */
};

enum lookup_stage {
    LOOKUP_REDIS, /* waiting for the Redis cache */
    LOOKUP_HTTP,  /* waiting for the tenant service */
};

enum lookup_outcome {
    OUTCOME_FOUND,
    OUTCOME_NOT_FOUND,
    OUTCOME_FAILED,
    OUTCOME_CLOSED,
};

/* One id being looked up (Redis, then the service), shared by every resolve waiting on it. */
struct lookup {
    struct hg_tenants *t;
    char key[KEY_MAX];                 /* "ba:<id>" or "id:<id>" */
    bool by_path;
    enum lookup_stage stage;
    struct resolve *waiters, *waiters_tail;
    struct hg_buf body;
    struct hg_list link;               /* in t->lookups */
};

struct hg_tenants {
    uv_loop_t *loop;
    struct hg_http *http;
    struct hg_redis *redis;
    char *service_url;                 /* without a trailing '/'; NULL = no service */
    char *auth_header;                 /* "Bearer <token>", or NULL */
    uint32_t timeout_ms;
    uint64_t cache_ttl_ms, negative_ttl_ms, local_ttl_ms, stale_ttl_ms;
    uint32_t max_inflight;
    uint32_t failure_backoff_ms;
    uint64_t fail_until;               /* loop ms: skip the service until then */

    /* Tenants built from the current config snapshot, so the hot path allocates nothing. */
    struct hg_conf *snap;              /* a reference, or NULL */
    struct hg_tenant **snap_tenants;   /* snap->n_tenants slots, built on first use */
    struct hg_tenant *snap_default;

    struct hg_ltable lru;
    struct hg_list lookups;            /* in flight, newest first */
    size_t n_lookups;
    struct resolve *ready, *ready_tail; /* finished resolves whose callbacks are due */
    uv_idle_t idle;                    /* runs the ready callbacks on the next loop turn */

    bool closing;
    void (*close_cb)(void *arg);
    void *close_arg;
    struct hg_tenants_stats stats;
};

static void step(struct resolve *r);
static void on_idle(uv_idle_t *h);

static bool have_service(const struct hg_tenants *t)
{
    return t->service_url != NULL && t->http != NULL;
}

static void snap_drop(struct hg_tenants *t)
{
    if (t->snap == NULL)
        return;
    for (size_t i = 0; i < t->snap->n_tenants; i++)
        hg_tenant_unref(t->snap_tenants[i]);
    free(t->snap_tenants);
    hg_tenant_unref(t->snap_default);
    hg_conf_unref(t->snap);
    t->snap = NULL;
    t->snap_tenants = NULL;
    t->snap_default = NULL;
}

/* New requests carry the newest snapshot: switch to it when a different one shows up. */
static void snap_use(struct hg_tenants *t, const struct hg_conf *conf)
{
    if (t->snap == conf)
        return;
    snap_drop(t);
    t->snap = hg_conf_ref((struct hg_conf *)conf);
    t->snap_tenants = hg_xcalloc(conf->n_tenants, sizeof(*t->snap_tenants));
}

/* A new reference to the tenant for `tc` (NULL = the default without a section); *built says
 * whether it was made just now (once per snapshot on the hot path). */
static struct hg_tenant *conf_tenant(struct hg_tenants *t, const struct hg_conf *conf,
                                     const struct hg_tenant_conf *tc, enum hg_tenant_source source,
                                     bool *built)
{
    *built = true;
    /* A resolve that started before a reload finishes with its own (older) snapshot. */
    if (conf != t->snap)
        return tenant_from_conf(conf, tc, source);
    struct hg_tenant **slot = source == HG_TENANT_DEFAULT ? &t->snap_default
                                                          : &t->snap_tenants[tc - conf->tenants];
    *built = *slot == NULL;
    if (*slot == NULL)
        *slot = tenant_from_conf(conf, tc, source);
    return hg_tenant_ref(*slot);
}

/* The tenant for a config section. Whether it has credentials for the webhook's provider is the
 * ingest path's question (answered 503 there), not the resolver's. */
static int use_conf_tenant(struct hg_tenants *t, const struct hg_conf *conf,
                           const struct hg_tenant_conf *tc, enum hg_tenant_source source,
                           struct hg_tenant **out)
{
    bool built;
    struct hg_tenant *tn = conf_tenant(t, conf, tc, source, &built);
    if (source == HG_TENANT_DEFAULT)
        t->stats.defaults++;
    else
        t->stats.config_hits++;
    *out = tn;
    return 0;
}

static int use_default(struct hg_tenants *t, const struct hg_conf *conf, struct hg_tenant **out)
{
    const char *id = conf->default_tenant != NULL ? conf->default_tenant : "default";
    return use_conf_tenant(t, conf, hg_conf_tenant(conf, id), HG_TENANT_DEFAULT, out);
}

/* What the config alone decides: 0 / error, or HG_TENANTS_PENDING. */
static int decide_config(struct hg_tenants *t, const struct hg_conf *conf, const char *path,
                         const char *const *ids, size_t n_ids, struct hg_tenant **out)
{
    if (path != NULL) {
        const struct hg_tenant_conf *tc = hg_conf_tenant(conf, path);
        if (tc != NULL)
            return use_conf_tenant(t, conf, tc, HG_TENANT_CONFIG, out);
        if (conf->default_tenant != NULL && strcmp(path, conf->default_tenant) == 0)
            return use_default(t, conf, out);
        if (!have_service(t) || !valid_id(path))
            return HG_ERR_NOT_FOUND;
        return HG_TENANTS_PENDING;
    }
    for (size_t i = 0; i < n_ids; i++) {
        const struct hg_tenant_conf *tc = hg_conf_tenant_by_business(conf, ids[i]);
        if (tc != NULL)
            return use_conf_tenant(t, conf, tc, HG_TENANT_CONFIG, out);
    }
    if (!have_service(t))
        return use_default(t, conf, out);
    return HG_TENANTS_PENDING;
}

static void make_key(char *key, bool by_path, const char *id)
{
    snprintf(key, KEY_MAX, "%s:%s", by_path ? "id" : "ba", id);
}

/*
 * After the config: walk the ids from *idx through the LRU. 0 / error when decided, or
 * HG_TENANTS_PENDING with *idx at the id that needs a lookup.
 */
static int decide_lru(struct hg_tenants *t, const struct hg_conf *conf, const char *path,
                      const char *const *ids, size_t n_ids, size_t *idx, bool count_miss,
                      struct hg_tenant **out)
{
    char key[KEY_MAX];
    uint64_t now = uv_now(t->loop);

    if (path != NULL) {
        make_key(key, true, path);
        struct hg_lentry *e = lru_find(&t->lru, key, now);
        if (e == NULL || now >= e->c) {
            t->stats.local_misses += count_miss;
            return HG_TENANTS_PENDING;
        }
        t->stats.local_hits++;
        if (entry_tenant(e) == NULL)
            return HG_ERR_NOT_FOUND;
        *out = hg_tenant_ref(entry_tenant(e));
        return 0;
    }
    for (; *idx < n_ids; (*idx)++) {
        if (!valid_id(ids[*idx])) {
            t->stats.invalid_ids++;
            continue;
        }
        make_key(key, false, ids[*idx]);
        struct hg_lentry *e = lru_find(&t->lru, key, now);
        if (e == NULL || now >= e->c) {
            t->stats.local_misses += count_miss;
            return HG_TENANTS_PENDING;
        }
        t->stats.local_hits++;
        if (entry_tenant(e) != NULL) {
            *out = hg_tenant_ref(entry_tenant(e));
            return 0;
        }
    }
    return use_default(t, conf, out);
}

int hg_tenants_resolve_local(struct hg_tenants *t, const struct hg_conf *conf,
                             const char *path_tenant, const char *const *business_ids,
                             size_t n_ids, struct hg_tenant **out)
{
    *out = NULL;
    if (t == NULL || conf == NULL || (n_ids > 0 && business_ids == NULL))
        return HG_ERR_INVALID;
    if (t->closing)
        return HG_ERR_CLOSED;
    n_ids = HG_MIN(n_ids, (size_t)HG_TENANTS_MAX_IDS);
    snap_use(t, conf);
    int rc = decide_config(t, conf, path_tenant, business_ids, n_ids, out);
    if (rc == HG_TENANTS_PENDING) {
        size_t idx = 0;
        /* A miss here is counted by the hg_tenants_resolve that follows, not twice. */
        rc = decide_lru(t, conf, path_tenant, business_ids, n_ids, &idx, false, out);
    }
    if (rc == HG_ERR_UNAVAILABLE)
        t->stats.unavailable++;
    return rc;
}

/* ---- completion -------------------------------------------------------------------------- */

static void kick(struct hg_tenants *t)
{
    if (!uv_is_active((uv_handle_t *)&t->idle) && !uv_is_closing((uv_handle_t *)&t->idle))
        uv_idle_start(&t->idle, on_idle);
}

static void finish(struct resolve *r, int status, struct hg_tenant *tenant)
{
    struct hg_tenants *t = r->t;
    r->status = status;
    r->tenant = tenant;
    if (status == HG_ERR_UNAVAILABLE)
        t->stats.unavailable++;
    r->next = NULL;
    if (t->ready_tail != NULL)
        t->ready_tail->next = r;
    else
        t->ready = r;
    t->ready_tail = r;
    kick(t);
}

static void resolve_free(struct resolve *r)
{
    hg_conf_unref(r->conf);
    free(r->path);
    for (size_t i = 0; i < r->n_ids; i++)
        free(r->ids[i]);
    free(r);
}

static void on_closed(uv_handle_t *h)
{
    struct hg_tenants *t = h->data;
    void (*cb)(void *) = t->close_cb;
    void *arg = t->close_arg;
    hg_ltable_free(&t->lru);
    snap_drop(t);
    free(t->service_url);
    free(t->auth_header);
    free(t);
    if (cb != NULL)
        cb(arg);
}

static void on_idle(uv_idle_t *h)
{
    struct hg_tenants *t = h->data;
    /* Take the whole list: callbacks may resolve again (and add to a fresh list). */
    struct resolve *r = t->ready;
    t->ready = t->ready_tail = NULL;
    while (r != NULL) {
        struct resolve *next = r->next;
        r->cb(r->arg, r->status, r->tenant);
        resolve_free(r);
        r = next;
    }
    if (t->ready != NULL)
        return;
    uv_idle_stop(&t->idle);
    if (t->closing && hg_list_empty(&t->lookups) && !uv_is_closing((uv_handle_t *)&t->idle))
        uv_close((uv_handle_t *)&t->idle, on_closed);
}

static void lookup_unlink(struct lookup *l)
{
    hg_list_unlink(&l->link);
    l->t->n_lookups--;
}

/* Hand the outcome to every waiter, then free the lookup. */
static void lookup_done(struct lookup *l, enum lookup_outcome outcome, struct hg_tenant *tenant)
{
    struct hg_tenants *t = l->t;
    struct resolve *r = l->waiters;
    l->waiters = l->waiters_tail = NULL;
    /* Out of the list first: a waiter moving on to its next id must never join this lookup. */
    lookup_unlink(l);

    struct hg_tenant *stale = NULL;
    if (outcome == OUTCOME_FAILED) {
        uint64_t now = uv_now(t->loop);
        struct hg_lentry *e = lru_find(&t->lru, l->key, now);
        if (e != NULL && entry_tenant(e) != NULL) {
            /* Stale-if-error: the tenant was valid a while ago, which beats a 503; keep it fresh
             * for another local TTL so a failing service is not asked on every request. */
            stale = entry_tenant(e);
            e->c = now + t->local_ttl_ms;
        }
    }
    while (r != NULL) {
        struct resolve *next = r->next;
        switch (outcome) {
        case OUTCOME_FOUND:
            finish(r, 0, hg_tenant_ref(tenant));
            break;
        case OUTCOME_NOT_FOUND:
            if (l->by_path) {
                finish(r, HG_ERR_NOT_FOUND, NULL);
            } else {
                r->idx++;
                step(r);
            }
            break;
        case OUTCOME_FAILED:
            if (stale != NULL) {
                t->stats.stale_served++;
                finish(r, 0, hg_tenant_ref(stale));
            } else {
                finish(r, HG_ERR_UNAVAILABLE, NULL);
            }
            break;
        case OUTCOME_CLOSED:
            finish(r, HG_ERR_CLOSED, NULL);
            break;
        }
        r = next;
    }
    hg_buf_free(&l->body);
    free(l);
    if (t->closing)
        kick(t); /* the idle callback finishes the close once nothing is left */
}

/* ---- Redis and the tenant service -------------------------------------------------------- */

static const char *lookup_id(const struct lookup *l)
{
    return l->key + 3;
}

static void on_http(void *arg, const struct hg_http_resp *resp);

static void service_failed(struct lookup *l, const char *why, long status)
{
    struct hg_tenants *t = l->t;
    char st[24];
    snprintf(st, sizeof(st), "%ld", status);
    t->stats.service_failures++;
    t->fail_until = uv_now(t->loop) + t->failure_backoff_ms;
    hg_warn(NULL, "tenant service failed", "id", lookup_id(l), "reason", why, "status", st, NULL);
    lookup_done(l, OUTCOME_FAILED, NULL);
}

static void lookup_http(struct lookup *l)
{
    struct hg_tenants *t = l->t;
    char url[SERVICE_URL_MAX + 64 + HG_TENANTS_ID_MAX];

    l->stage = LOOKUP_HTTP;
    if (uv_now(t->loop) < t->fail_until) {
        /* Backing off after a failure: no call, the same answer the failure gave. */
        lookup_done(l, OUTCOME_FAILED, NULL);
        return;
    }
    snprintf(url, sizeof(url), "%s/tenants/%s%s", t->service_url,
             l->by_path ? "" : "by-business-account/", lookup_id(l));
    struct hg_http_header headers[2] = { { "Accept", "application/json" } };
    size_t nh = 1;
    if (t->auth_header != NULL)
        headers[nh++] = (struct hg_http_header){ "Authorization", t->auth_header };
    struct hg_http_req req = {
        .method = "GET",
        .url = url,
        .headers = headers,
        .nheaders = nh,
        .resp_body = &l->body,
        .connect_timeout_ms = t->timeout_ms,
        .timeout_ms = t->timeout_ms,
    };
    int rc = hg_http_request(t->http, &req, on_http, l);
    if (rc != 0) {
        service_failed(l, hg_strerror(rc), 0);
        return;
    }
    t->stats.service_calls++;
}

static void on_http(void *arg, const struct hg_http_resp *resp)
{
    struct lookup *l = arg;
    struct hg_tenants *t = l->t;
    struct hg_tenant *tn = NULL;
    char rkey[KEY_MAX + 8];

    if (t->closing) {
        lookup_done(l, OUTCOME_CLOSED, NULL);
        return;
    }
    if (resp->err != 0) {
        service_failed(l, hg_strerror(resp->err), 0);
        return;
    }
    snprintf(rkey, sizeof(rkey), "tenant:%s", l->key);
    uint64_t now = uv_now(t->loop);
    if (resp->status == 404) {
        t->stats.service_not_found++;
        if (t->redis != NULL)
            hg_redis_cache_set_negative(t->redis, rkey, t->negative_ttl_ms);
        /* Without Redis this worker's entry is the only negative cache: it lasts negative_ttl, so a
         * made-up id costs one service call per negative_ttl, as documented (not per local TTL). */
        lru_put(&t->lru, l->key, NULL, now,
                t->redis != NULL ? HG_MIN(t->local_ttl_ms, t->negative_ttl_ms) : t->negative_ttl_ms, 0);
        lookup_done(l, OUTCOME_NOT_FOUND, NULL);
        return;
    }
    if (resp->status != 200) {
        service_failed(l, "status", resp->status);
        return;
    }
    if (hg_tenant_parse(l->body.data, l->body.len, t->snap, &tn) != 0) {
        service_failed(l, "bad tenant document", resp->status);
        return;
    }
    if (l->by_path && strcmp(tn->id, lookup_id(l)) != 0) {
        hg_tenant_unref(tn);
        service_failed(l, "tenant_id differs from the id asked for", resp->status);
        return;
    }
    t->stats.service_found++;
    /* The document was just validated; cache it as it came so every instance parses the same. */
    if (t->redis != NULL)
        hg_redis_cache_set(t->redis, rkey, l->body.data, l->body.len, t->cache_ttl_ms);
    lru_put(&t->lru, l->key, tn, now, HG_MIN(t->local_ttl_ms, t->cache_ttl_ms), t->stale_ttl_ms);
    lookup_done(l, OUTCOME_FOUND, tn);
    hg_tenant_unref(tn);
}

static void on_redis(void *arg, const struct hg_redis_cache_result *res)
{
    struct lookup *l = arg;
    struct hg_tenants *t = l->t;
    uint64_t now = uv_now(t->loop);

    if (t->closing) {
        lookup_done(l, OUTCOME_CLOSED, NULL);
        return;
    }
    if (res->status == HG_REDIS_CACHE_NEGATIVE) {
        t->stats.redis_hits++;
        lru_put(&t->lru, l->key, NULL, now, HG_MIN(t->local_ttl_ms, t->negative_ttl_ms), 0);
        lookup_done(l, OUTCOME_NOT_FOUND, NULL);
        return;
    }
    if (res->status == HG_REDIS_CACHE_HIT) {
        struct hg_tenant *tn = NULL;
        if (hg_tenant_parse(res->value, res->len, t->snap, &tn) == 0 &&
            (!l->by_path || strcmp(tn->id, lookup_id(l)) == 0)) {
            t->stats.redis_hits++;
            tn->source = HG_TENANT_CACHE;
            lru_put(&t->lru, l->key, tn, now, t->local_ttl_ms, t->stale_ttl_ms);
            lookup_done(l, OUTCOME_FOUND, tn);
            hg_tenant_unref(tn);
            return;
        }
        hg_tenant_unref(tn);
        hg_warn(NULL, "tenant cache entry unusable; asking the service", "id", lookup_id(l), NULL);
    }
    t->stats.redis_misses++;
    lookup_http(l);
}

static void lookup_start(struct lookup *l)
{
    struct hg_tenants *t = l->t;
    char rkey[KEY_MAX + 8];

    if (t->redis != NULL) {
        snprintf(rkey, sizeof(rkey), "tenant:%s", l->key);
        l->stage = LOOKUP_REDIS;
        if (hg_redis_cache_get(t->redis, rkey, on_redis, l) == 0)
            return;
        t->stats.redis_misses++;
    }
    lookup_http(l);
}

/* Continue a resolve: LRU, then join or start the lookup of the id it is at. */
static void step(struct resolve *r)
{
    struct hg_tenants *t = r->t;
    struct hg_tenant *tn = NULL;
    char key[KEY_MAX];

    if (t->closing) {
        finish(r, HG_ERR_CLOSED, NULL);
        return;
    }
    int rc = decide_lru(t, r->conf, r->path, (const char *const *)r->ids, r->n_ids, &r->idx, true, &tn);
    /*
     * Business ids come from the body before its signature is checked: anyone can send eight
     * made-up ones. Each resolve looks up one id no cache knows (the first); the ids after it
     * count only when this worker remembers them (a stale positive entry too), so a request costs
     * at most one Redis GET and one service call. A tenant the service knows only by a later id
     * is found at the next request (the earlier id is negatively cached by then).
     */
    while (rc == HG_TENANTS_PENDING && r->asked && r->path == NULL) {
        make_key(key, false, r->ids[r->idx]);
        struct hg_lentry *e = lru_find(&t->lru, key, uv_now(t->loop));
        if (e != NULL && entry_tenant(e) != NULL) {
            finish(r, 0, hg_tenant_ref(entry_tenant(e)));
            return;
        }
        t->stats.ids_not_asked++;
        r->idx++;
        rc = decide_lru(t, r->conf, r->path, (const char *const *)r->ids, r->n_ids, &r->idx, true, &tn);
    }
    if (rc != HG_TENANTS_PENDING) {
        finish(r, rc, tn);
        return;
    }
    r->asked = true;
    bool by_path = r->path != NULL;
    make_key(key, by_path, by_path ? r->path : r->ids[r->idx]);

    struct lookup *l = NULL;
    struct hg_list *pos;
    HG_LIST_FOREACH(pos, &t->lookups) {
        struct lookup *x = hg_list_entry(pos, struct lookup, link);
        if (strcmp(x->key, key) == 0) {
            l = x;
            break;
        }
    }
    if (l != NULL) {
        t->stats.coalesced++;
    } else {
        if (t->n_lookups >= t->max_inflight) {
            finish(r, HG_ERR_UNAVAILABLE, NULL);
            return;
        }
        l = hg_xcalloc(1, sizeof(*l));
        l->t = t;
        l->by_path = by_path;
        snprintf(l->key, sizeof(l->key), "%s", key);
        hg_buf_init(&l->body, HG_TENANTS_BODY_MAX);
        hg_list_insert_head(&t->lookups, &l->link);
        t->n_lookups++;
    }
    r->next = NULL;
    if (l->waiters_tail != NULL)
        l->waiters_tail->next = r;
    else
        l->waiters = r;
    l->waiters_tail = r;
    /* Start only a new lookup, and only after r waits on it: it may finish at once. */
    if (l->waiters == r)
        lookup_start(l);
}

int hg_tenants_resolve(struct hg_tenants *t, const struct hg_conf *conf, const char *path_tenant,
                       const char *const *business_ids, size_t n_ids, hg_tenants_cb cb, void *arg)
{
    if (t == NULL || conf == NULL || cb == NULL || (n_ids > 0 && business_ids == NULL))
        return HG_ERR_INVALID;
    if (t->closing)
        return HG_ERR_CLOSED;
    n_ids = HG_MIN(n_ids, (size_t)HG_TENANTS_MAX_IDS);

    struct resolve *r = hg_xcalloc(1, sizeof(*r));
    r->t = t;
    r->conf = hg_conf_ref((struct hg_conf *)conf);
    r->cb = cb;
    r->arg = arg;
    /* Over-long ids cannot be looked up: keep them as "" so they count as invalid, not as a
     * truncated (different) id. */
    if (path_tenant != NULL)
        r->path = hg_xstrdup(strlen(path_tenant) <= HG_TENANTS_ID_MAX ? path_tenant : "");
    for (size_t i = 0; i < n_ids; i++)
        r->ids[r->n_ids++] = hg_xstrdup(business_ids[i] != NULL &&
                                        strlen(business_ids[i]) <= HG_TENANTS_ID_MAX
                                            ? business_ids[i] : "");

    snap_use(t, conf);
    struct hg_tenant *tn = NULL;
    int rc = decide_config(t, conf, path_tenant, business_ids, n_ids, &tn);
    if (rc != HG_TENANTS_PENDING)
        finish(r, rc, tn);
    else
        step(r);
    return 0;
}

/* ---- open / close ------------------------------------------------------------------------ */

static bool service_token_ok(const char *token)
{
    /* A line break would be refused as a header by the HTTP client at every lookup. */
    return token == NULL || (strlen(token) <= SERVICE_TOKEN_MAX && strpbrk(token, "\r\n") == NULL);
}

int hg_tenants_service_check(const char *url, const char *token, char *why, size_t wl)
{
    if (url != NULL && url[0] != '\0' &&
        ((strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) || strlen(url) > SERVICE_URL_MAX)) {
        snprintf(why, wl, "service_url must be http[s]://..., at most %d bytes", SERVICE_URL_MAX);
        return HG_ERR_INVALID;
    }
    if (!service_token_ok(token)) {
        snprintf(why, wl, "service_token is longer than %d bytes or holds a line break", SERVICE_TOKEN_MAX);
        return HG_ERR_INVALID;
    }
    return 0;
}

int hg_tenants_set_token(struct hg_tenants *t, const char *token)
{
    if (!service_token_ok(token))
        return HG_ERR_INVALID;
    if (t->auth_header != NULL)
        explicit_bzero(t->auth_header, strlen(t->auth_header));
    free(t->auth_header);
    t->auth_header = NULL;
    if (token != NULL && token[0] != '\0') {
        size_t n = strlen(token) + 8;
        t->auth_header = hg_xmalloc(n);
        snprintf(t->auth_header, n, "Bearer %s", token);
    }
    return 0;
}

int hg_tenants_open(uv_loop_t *loop, struct hg_http *http, struct hg_redis *redis,
                    const struct hg_tenants_opts *opts, struct hg_tenants **out)
{
    static const struct hg_tenants_opts none;
    if (opts == NULL)
        opts = &none;
    *out = NULL;
    char why[160];
    if (loop == NULL || hg_tenants_service_check(opts->service_url, opts->service_token, why, sizeof why) != 0)
        return HG_ERR_INVALID;
    const char *url = opts->service_url != NULL && opts->service_url[0] != '\0' ? opts->service_url : NULL;

    struct hg_tenants *t = hg_xcalloc(1, sizeof(*t));
    t->loop = loop;
    t->http = http;
    t->redis = redis;
    if (url != NULL) {
        size_t n = strlen(url);
        while (n > 0 && url[n - 1] == '/')
            n--;
        t->service_url = hg_xstrndup(url, n);
    }
    hg_tenants_set_token(t, opts->service_token);
    t->timeout_ms = opts->timeout_ms ? opts->timeout_ms : DEF_TIMEOUT_MS;
    t->cache_ttl_ms = opts->cache_ttl_ms ? opts->cache_ttl_ms : DEF_CACHE_TTL_MS;
    t->negative_ttl_ms = opts->negative_ttl_ms ? opts->negative_ttl_ms : DEF_NEGATIVE_TTL_MS;
    t->local_ttl_ms = opts->local_ttl_ms ? opts->local_ttl_ms : DEF_LOCAL_TTL_MS;
    t->stale_ttl_ms = opts->stale_ttl_ms ? opts->stale_ttl_ms : DEF_STALE_TTL_MS;
    t->max_inflight = opts->max_inflight ? opts->max_inflight : DEF_MAX_INFLIGHT;
    t->failure_backoff_ms = opts->failure_backoff_ms ? opts->failure_backoff_ms : DEF_FAILURE_BACKOFF_MS;
    t->lru.max = opts->local_max ? opts->local_max : DEF_LOCAL_MAX;
    t->lru.drop = lru_drop;
    hg_list_init(&t->lookups);

    int rc = uv_idle_init(loop, &t->idle);
    if (rc != 0) {
        hg_ltable_free(&t->lru);
        free(t->service_url);
        free(t->auth_header);
        free(t);
        return rc;
    }
    t->idle.data = t;
    *out = t;
    return 0;
}

const struct hg_tenants_stats *hg_tenants_stats(const struct hg_tenants *t)
{
    return &t->stats;
}

void hg_tenants_close(struct hg_tenants *t, void (*cb)(void *arg), void *arg)
{
    if (t == NULL || t->closing)
        return;
    t->closing = true;
    t->close_cb = cb;
    t->close_arg = arg;
    /* Waiters learn at once; lookups left without waiters end when their client answers. */
    struct hg_list *pos;
    HG_LIST_FOREACH(pos, &t->lookups) {
        struct lookup *l = hg_list_entry(pos, struct lookup, link);
        struct resolve *r = l->waiters;
        l->waiters = l->waiters_tail = NULL;
        while (r != NULL) {
            struct resolve *next = r->next;
            finish(r, HG_ERR_CLOSED, NULL);
            r = next;
        }
    }
    /* Canceled transfers call on_http at once, which frees their lookup: rescan each time. */
    for (;;) {
        struct lookup *l = NULL;
        HG_LIST_FOREACH(pos, &t->lookups) {
            struct lookup *x = hg_list_entry(pos, struct lookup, link);
            if (x->stage == LOOKUP_HTTP) {
                l = x;
                break;
            }
        }
        if (l == NULL || t->http == NULL || hg_http_cancel(t->http, l) == 0)
            break;
    }
    kick(t);
}

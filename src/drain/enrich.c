/*
 * The drain's enrichment step: between dedup and publish, a conversation event gets its sequence
 * number (Redis), then a message event gets its State Manager `mapping` (a conversation lifecycle
 * change is told to the State Manager) and, for media messages, its `media` (fetched from the
 * Graph API and stored in S3; the tenant's Graph token comes from the config, the Redis token
 * cache or the tenant service), in parallel. Each call holds one count of `enrich_pending`; when
 * the last one is over, the completion the drain passed to enrich_start runs.
 */
#include <stdio.h>
#include <string.h>

#include "clients/redis.h"
#include "clients/s3.h"
#include "clients/statemgr.h"
#include "conf/conf.h"
#include "core/common.h"
#include "core/err.h"
#include "core/log.h"
#include "media/media.h"
#include "ops/metrics.h"
#include "drain/drain_internal.h"
#include "tenants/tenants.h"

#define MEDIA_MAX_ROUNDS 5         /* undecided media fetches before publishing with media.error */
#define SEQUENCE_TTL_MS (7ull * 24 * 3600 * 1000) /* a conversation's counter outlives its last event by this */

/* ---- enrichment: State Manager mapping and media, in parallel; then the publish ---- */

static bool is_message(const struct item_event *e)
{
    return strcmp(e->kind, "message") == 0 && e->dead_reason == NULL;
}

/* A conversation event that changes the conversation's life (docs/state-manager.md). */
static bool is_lifecycle(const struct item_event *e)
{
    return strcmp(e->kind, "conversation") == 0 && e->dead_reason == NULL &&
           hg_statemgr_conversation_action(e->type) != NULL;
}

bool enrich_wants_state(const struct item_event *e)
{
    return e->item->drain->b.statemgr != NULL && (is_message(e) || is_lifecycle(e));
}

static struct hg_json *conversation_of(const struct item_event *e)
{
    struct hg_json *c = hg_json_get(e->doc, "conversation");
    const char *id = hg_json_str(hg_json_get(c, "id"));
    return id != NULL && id[0] != '\0' ? c : NULL;
}

bool enrich_wants_sequence(const struct item_event *e)
{
    return e->item->drain->b.redis != NULL && e->dead_reason == NULL && conversation_of(e) != NULL;
}

static enum hg_media_type media_type_of(const struct item_event *e)
{
    int t = hg_media_type_parse(e->type);
    return t < 0 ? HG_MEDIA_NTYPES : (enum hg_media_type)t;
}

bool enrich_wants_media(const struct item_event *e)
{
    if (e->item->drain->b.media == NULL || !is_message(e) || media_type_of(e) == HG_MEDIA_NTYPES)
        return false;
    const char *id = hg_json_str(hg_json_get(hg_json_get(e->doc, "content"), "media_id"));
    return id != NULL && id[0] != '\0';
}

/*
 * Set doc[key] = val (val from the item's arena, NULL when it refused memory). The arena is sized
 * for the envelope's events many times over, so a refusal means something is badly wrong: the
 * key gets null rather than the event being lost.
 */
static void event_doc_set(struct item_event *e, const char *key, struct hg_json *val)
{
    if (val == NULL || hg_json_set(&e->item->doc->arena, e->doc, key, val) != 0) {
        hg_error(e->item->request_id, "event document arena exhausted; field set to null", "event_id", e->event_id,
                 "field", key, NULL);
        hg_json_set(&e->item->doc->arena, e->doc, key, hg_json_null());
    }
}

/* A jansson tree of a client (State Manager, media) into the event; the tree is released. */
static void event_doc_set_jansson(struct item_event *e, const char *key, json_t *val)
{
    event_doc_set(e, key, val ? hg_json_from_jansson(&e->item->doc->arena, val) : hg_json_null());
    json_decref(val);
}

static void enrich_finish(struct item_event *e)
{
    bool retry = e->enrich_retry || e->item->drain->closing;
    e->enrich_retry = false;
    enrich_done_fn done = e->enrich_done;
    e->enrich_done = NULL;
    done(e, retry);
}

/* One enrichment call (or the starting hold) is over. */
static void enrich_release(struct item_event *e)
{
    if (--e->enrich_pending == 0)
        enrich_finish(e);
}

static void enrich_hold(struct item_event *e)
{
    e->enrich_pending++;
}

static void on_state(void *arg, const struct hg_statemgr_result *r)
{
    struct item_event *e = arg;
    struct item *it = e->item;
    if (!(r->degraded && it->drain->closing)) {
        /* Down, slow or refusing: published without the mapping (it is null), and counted. */
        if (r->degraded) {
            hg_metric_inc(HG_M_STATE_MANAGER_FAILURES, NULL);
            hg_debug(it->request_id, "state manager degraded; publishing without mapping", "error",
                     r->error ? r->error : "", NULL);
        }
        if (is_message(e))
            event_doc_set_jansson(e, "mapping", r->mapping ? json_incref(r->mapping) : NULL);
        e->state_done = true;
    }
    enrich_release(e);
}

static void state_start(struct item_event *e)
{
    struct item *it = e->item;
    const char *wa_id = hg_json_str(hg_json_get(hg_json_get(e->doc, "customer"), "wa_id"));
    json_t *event = hg_json_to_jansson(e->doc);
    bool message = is_message(e);
    json_t *body = event ? (message ? hg_statemgr_message_body(event) : hg_statemgr_conversation_body(event)) : NULL;
    json_decref(event);
    enrich_hold(e);
    int rc = message ? hg_statemgr_enrich(it->drain->b.statemgr, wa_id ? wa_id : "", it->tenant, body, on_state, e)
                     : hg_statemgr_conversation(it->drain->b.statemgr, it->tenant, body, on_state, e);
    if (body)
        json_decref(body);
    if (rc != 0) {
        if (rc != HG_ERR_CLOSED) {
            hg_metric_inc(HG_M_STATE_MANAGER_FAILURES, NULL);
            if (message)
                event_doc_set(e, "mapping", hg_json_null());
            e->state_done = true;
        }
        enrich_release(e);
    }
}

/* media given up on for good: the event goes out with media.error = reason. */
static void media_give_up(struct item_event *e, const char *reason)
{
    struct hg_arena *a = &e->item->doc->arena;
    struct hg_json *media_id = hg_json_get(hg_json_get(e->doc, "content"), "media_id");
    struct hg_json *m = hg_json_object(a);
    if (m == NULL || hg_json_set(a, m, "media_id", media_id ? media_id : hg_json_null()) != 0 ||
        hg_json_set(a, m, "type", hg_json_string(a, e->type)) != 0 ||
        hg_json_set(a, m, "error", hg_json_string(a, reason)) != 0)
        m = NULL;
    event_doc_set(e, "media", m);
    e->media_done = true;
    char labels[96];
    snprintf(labels, sizeof(labels), "reason=\"%s\"", reason); /* reasons are fixed identifiers */
    hg_metric_inc(HG_M_MEDIA_FAILURES, labels);
    hg_warn(e->item->request_id, "media not stored; publishing with media.error", "event_id", e->event_id, "error",
            reason, NULL);
}

/* Redis cache key of a tenant's Graph API token. */
static int token_key(char *out, size_t cap, const char *tenant)
{
    int n = snprintf(out, cap, "token:%s", tenant);
    return n > 0 && (size_t)n < cap ? 0 : HG_ERR_TOO_BIG;
}

static void on_media_bucket(void *arg, const struct hg_s3_result *res)
{
    struct hg_drain *d = arg;
    if (res->err != 0) {
        d->media_bucket_checked = false;
        hg_warn(NULL, "media bucket not available yet", "bucket", d->media_bucket, "error", hg_strerror(res->err),
                NULL);
    }
}

static void on_media(void *arg, const struct hg_media_result *res)
{
    struct item_event *e = arg;
    struct item *it = e->item;
    if (res->status == HG_MEDIA_RETRY && res->error && strcmp(res->error, "upload_failed") == 0)
        it->drain->media_bucket_checked = false; /* maybe the bucket went away: check it again */
    if (res->status == HG_MEDIA_FAILED && e->token_from_cache && res->error &&
        strcmp(res->error, "unauthorized") == 0) {
        /* The cached token was rotated or revoked: forget it and ask the tenant service again. */
        char key[HG_REDIS_KEY_MAX + 1];
        if (token_key(key, sizeof(key), it->tenant) == 0)
            hg_redis_cache_del(it->drain->b.redis, key);
        e->token_from_cache = false;
        e->enrich_retry = true;
    } else if (res->status == HG_MEDIA_RETRY) {
        if (it->drain->closing) {
            /* shutdown: the record stays in the spool; the next run fetches again */
        } else if (++e->media_rounds >= MEDIA_MAX_ROUNDS) {
            media_give_up(e, res->error ? res->error : "download_failed");
        } else {
            e->enrich_retry = true;
        }
    } else {
        json_t *m = hg_media_result_json(res);
        if (m == NULL)
            hg_oom(__FILE__, __LINE__);
        event_doc_set_jansson(e, "media", m);
        e->media_done = true;
    }
    enrich_release(e);
}

static void media_fetch(struct item_event *e, const char *token, bool from_cache)
{
    struct item *it = e->item;
    e->token_from_cache = from_cache;
    if (token == NULL || token[0] == '\0') {
        media_give_up(e, "no_access_token");
        return;
    }
    struct hg_drain *d = it->drain;
    if (!d->media_bucket_checked && d->media_bucket && d->b.s3 && !d->closing) {
        /* Once per worker (and after a failed upload); the fetch below retries meanwhile. */
        d->media_bucket_checked = true;
        hg_s3_ensure_bucket(d->b.s3, d->media_bucket, on_media_bucket, d);
    }
    struct hg_json *content = hg_json_get(e->doc, "content");
    struct hg_media_job job = {
        .tenant = it->tenant,
        .access_token = token,
        .media_id = hg_json_str(hg_json_get(content, "media_id")),
        .media_type = media_type_of(e),
        .mime_type = hg_json_str(hg_json_get(content, "mime_type")),
        .sha256 = hg_json_str(hg_json_get(content, "sha256")),
        .message_id = e->event_id,
        .occurred_at_s = e->timestamp_s,
        .request_id = it->request_id,
    };
    enrich_hold(e);
    int rc = hg_media_fetch(it->drain->b.media, &job, on_media, e);
    if (rc == HG_ERR_INVALID)
        media_give_up(e, "invalid");
    else if (rc != 0)
        e->enrich_retry = true; /* queue full or closing: later */
    if (rc != 0)
        enrich_release(e);
}

/* The Graph API token of the config's own tenants (and the default): theirs, else [whatsapp]'s. */
static bool conf_token(const struct hg_conf *conf, const char *tenant, const char **token)
{
    const struct hg_tenant_conf *tc = hg_conf_tenant(conf, tenant);
    bool is_default = conf->default_tenant != NULL && strcmp(conf->default_tenant, tenant) == 0;
    *token = tc && tc->access_token ? tc->access_token : conf->access_token;
    return tc != NULL || is_default;
}

static void on_media_tenant(void *arg, int status, struct hg_tenant *tn)
{
    struct item_event *e = arg;
    struct item *it = e->item;
    if (status == 0) {
        struct hg_drain *d = it->drain;
        const struct hg_conf *conf = *d->b.conf;
        char key[HG_REDIS_KEY_MAX + 1];
        if (tn->access_token && d->b.redis && token_key(key, sizeof(key), it->tenant) == 0)
            hg_redis_cache_set(d->b.redis, key, tn->access_token, strlen(tn->access_token), d->b.token_ttl_ms);
        media_fetch(e, tn->access_token ? tn->access_token : conf->access_token, false);
        hg_tenant_unref(tn);
    } else if (status == HG_ERR_NOT_FOUND) {
        media_give_up(e, "no_access_token");
    } else {
        e->enrich_retry = true; /* tenant service unavailable, or closing */
    }
    enrich_release(e);
}

/* A tenant of the tenant service: its token comes from the tenant caches or the service. */
static void token_resolve(struct item_event *e)
{
    struct hg_drain *d = e->item->drain;
    enrich_hold(e);
    if (hg_tenants_resolve(d->b.tenants, *d->b.conf, e->item->tenant, NULL, 0, on_media_tenant, e) != 0) {
        e->enrich_retry = true;
        enrich_release(e);
    }
}

static void on_token_cached(void *arg, const struct hg_redis_cache_result *res)
{
    struct item_event *e = arg;
    struct item *it = e->item;
    if (it->drain->closing)
        e->enrich_retry = true;
    else if (res->status == HG_REDIS_CACHE_HIT && res->len > 0)
        media_fetch(e, res->value, true);
    else
        token_resolve(e);
    enrich_release(e);
}

static void media_start(struct item_event *e)
{
    struct item *it = e->item;
    struct hg_drain *d = it->drain;
    const char *token;
    if (conf_token(*d->b.conf, it->tenant, &token) || d->b.tenants == NULL) {
        media_fetch(e, token, false);
        return;
    }
    /* Tokens of service tenants are cached in Redis on their own, for longer than the tenant. */
    char key[HG_REDIS_KEY_MAX + 1];
    if (d->b.redis && token_key(key, sizeof(key), it->tenant) == 0) {
        enrich_hold(e);
        if (hg_redis_cache_get(d->b.redis, key, on_token_cached, e) == 0)
            return;
        enrich_release(e);
    }
    token_resolve(e);
}

/* The State Manager and media calls still missing, in parallel. */
static void enrich_rest(struct item_event *e)
{
    enrich_hold(e); /* released below: a call answering at once cannot finish the event early */
    if (!e->state_done && enrich_wants_state(e))
        state_start(e);
    if (!e->media_done && enrich_wants_media(e))
        media_start(e);
    enrich_release(e);
}

static void on_sequence(void *arg, const struct hg_redis_seq_result *res)
{
    struct item_event *e = arg;
    struct item *it = e->item;
    if (res->fallback) {
        /* Redis down or slow: published with sequence null (documented), never a made-up number. */
        hg_metric_inc(HG_M_REDIS_FALLBACK, "op=\"sequence\"");
    } else {
        struct hg_arena *a = &it->doc->arena;
        struct hg_json *v = hg_json_integer(a, (long long)res->value);
        if (v == NULL || hg_json_set(a, conversation_of(e), "sequence", v) != 0)
            hg_error(it->request_id, "event document arena exhausted; sequence left null", "event_id", e->event_id,
                     NULL);
    }
    e->seq_done = true;
    if (!it->drain->closing)
        enrich_rest(e); /* the State Manager's body carries the number */
    enrich_release(e);
}

/* Number the event in its conversation first (Redis INCR): 0 when asked, else not wanted. */
static int sequence_start(struct item_event *e)
{
    struct item *it = e->item;
    const char *id = hg_json_str(hg_json_get(conversation_of(e), "id"));
    char key[HG_REDIS_KEY_MAX + 1];
    int n = snprintf(key, sizeof(key), "%s:%s", it->tenant, id);
    enrich_hold(e);
    if (n > 0 && (size_t)n < sizeof(key) - 8 &&
        hg_redis_sequence_next(it->drain->b.redis, key, SEQUENCE_TTL_MS, on_sequence, e) == 0)
        return 0;
    /* An id too long for a key, or a closing client: no number (the hold is dropped without
     * finishing: the other calls start next). */
    e->seq_done = true;
    e->enrich_pending--;
    return -1;
}

void enrich_start(struct item_event *e, enrich_done_fn done)
{
    e->enrich_done = done;
    e->enrich_retry = false;
    if (!e->seq_done && enrich_wants_sequence(e) && sequence_start(e) == 0)
        return;
    enrich_rest(e);
}

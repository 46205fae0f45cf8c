/*
 * The drain's enrichment step: between dedup and publish, a conversation event gets its sequence
 * number (Redis), then a message event gets its State Manager `mapping` (a conversation lifecycle
 * change is told to the State Manager) and, for media messages, its `media`, in parallel. Which
 * files a message carries and how they are fetched is its provider's resolver's answer
 * (provider.h `media`): a WhatsApp media id goes through the Graph API with the tenant's Graph
 * token (from the config, the Redis token cache or the tenant service); URLs (Genesys
 * attachments, Twilio's MediaUrlN with the tenant's Basic credentials) are fetched as they are.
 * Each file is stored in S3 by src/media. Each call holds one count of `enrich_pending`; when the
 * last one is over, the completion the drain passed to enrich_start runs (a retry when some media
 * was undecided this round).
 */
#include <stdio.h>
#include <string.h>

#include "clients/redis.h"
#include "clients/s3.h"
#include "clients/statemgr.h"
#include "conf/conf.h"
#include "core/common.h"
#include "core/err.h"
#include "core/hmac.h"
#include "core/log.h"
#include "media/media.h"
#include "ops/metrics.h"
#include "drain/drain_internal.h"
#include "providers/provider.h"
#include "tenants/tenants.h"

#define MEDIA_MAX_ROUNDS 5         /* undecided media fetches before publishing with media.error */
#define BASIC_AUTH_MAX 2048        /* "Basic " + base64(user:secret); longer credentials are refused */
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

/* The event's provider, when it has a media resolver. */
static const struct hg_provider *media_provider(const struct item_event *e)
{
    const struct hg_provider *p = hg_provider_find(e->item->provider);
    return p != NULL && p->media != NULL ? p : NULL;
}

/* How many media files the event's provider lists for it (0: none, or no resolver). */
static size_t media_count(const struct item_event *e)
{
    const struct hg_provider *p = media_provider(e);
    return p != NULL && e->doc != NULL ? p->media(e->doc, 0, NULL) : 0;
}

static enum hg_media_type media_type_of(const char *name)
{
    int t = hg_media_type_parse(name);
    return t < 0 ? HG_MEDIA_NTYPES : (enum hg_media_type)t;
}

bool enrich_wants_media(const struct item_event *e)
{
    return e->item->drain->b.media != NULL && is_message(e) && media_count(e) > 0;
}

/* The one file of a WhatsApp media message: a media id the Graph API resolves. */
static bool graph_ref(const struct item_event *e, struct hg_media_ref *ref)
{
    const struct hg_provider *p = media_provider(e);
    return p != NULL && !p->media_list && p->media(e->doc, 0, ref) == 1 && ref->via == HG_MEDIA_VIA_GRAPH;
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

/* Once per worker (and after a failed upload); fetches meanwhile retry on their own. */
static void media_bucket_ensure(struct hg_drain *d)
{
    if (!d->media_bucket_checked && d->media_bucket && d->b.s3 && !d->closing) {
        d->media_bucket_checked = true;
        hg_s3_ensure_bucket(d->b.s3, d->media_bucket, on_media_bucket, d);
    }
}

static void media_fetch(struct item_event *e, const char *token, bool from_cache)
{
    struct item *it = e->item;
    struct hg_media_ref ref;
    e->token_from_cache = from_cache;
    if (token == NULL || token[0] == '\0') {
        media_give_up(e, "no_access_token");
        return;
    }
    if (!graph_ref(e, &ref)) {
        media_give_up(e, "invalid");
        return;
    }
    media_bucket_ensure(it->drain);
    struct hg_media_job job = {
        .tenant = it->tenant,
        .access_token = token,
        .media_id = ref.media_id,
        .media_type = media_type_of(ref.type),
        .mime_type = ref.mime_type,
        .sha256 = ref.sha256,
        .message_id = ref.message_id ? ref.message_id : e->event_id,
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

/* A WhatsApp media id: the tenant's Graph token first (config, Redis, tenant service). */
static void graph_start(struct item_event *e)
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

/* ---- media fetched by URL: one slot per file the provider's resolver lists ---- */

struct media_slot {
    struct item_event *e;
    json_t *result;                /* the file's media object once decided; NULL before */
    char error[32];                /* why it was undecided the last round */
    bool in_flight;
};

/* The URL files of one event, kept across rounds: a file decided once is not fetched again. */
struct media_files {
    size_t n;
    unsigned in_flight;            /* fetches of this round not answered yet */
    bool undecided;                /* a fetch of this round came back RETRY */
    struct media_slot slot[];
};

void enrich_event_free(struct item_event *e)
{
    struct media_files *f = e->files;
    if (f == NULL)
        return;
    for (size_t i = 0; i < f->n; i++)
        json_decref(f->slot[i].result);
    free(f);
    e->files = NULL;
}

/* A file given up on for good (no credentials, no usable URL, undecided too often). */
static void file_give_up(struct media_slot *s, const struct hg_media_ref *ref, const char *reason)
{
    struct item_event *e = s->e;
    json_t *o = json_pack("{s:s,s:s,s:s}", "media_id", ref->media_id ? ref->media_id : "", "type",
                          ref->type ? ref->type : "document", "error", reason);
    if (o == NULL)
        hg_oom(__FILE__, __LINE__);
    s->result = o;
    char labels[96];
    snprintf(labels, sizeof(labels), "reason=\"%s\"", reason); /* reasons are fixed identifiers */
    hg_metric_inc(HG_M_MEDIA_FAILURES, labels);
    hg_warn(e->item->request_id, "media file not stored; publishing with its error", "event_id", e->event_id,
            "media_id", ref->media_id ? ref->media_id : "", "error", reason, NULL);
}

/* Every file decided: the event's `media` is written (a list, or the one object) and done. */
static void files_check_done(struct item_event *e)
{
    struct media_files *f = e->files;
    const struct hg_provider *p = media_provider(e);
    for (size_t i = 0; i < f->n; i++)
        if (f->slot[i].result == NULL)
            return;
    json_t *media;
    if (p != NULL && p->media_list) {
        media = json_array();
        for (size_t i = 0; i < f->n; i++)
            json_array_append(media, f->slot[i].result);
    } else {
        media = json_incref(f->slot[0].result);
    }
    event_doc_set_jansson(e, "media", media);
    e->media_done = true;
    enrich_event_free(e);
}

/* The round's last fetch answered: count an undecided round, give up after MEDIA_MAX_ROUNDS. */
static void files_round_over(struct item_event *e)
{
    struct media_files *f = e->files;
    if (f->undecided && !e->item->drain->closing) {
        f->undecided = false;
        if (++e->media_rounds >= MEDIA_MAX_ROUNDS) {
            const struct hg_provider *p = media_provider(e);
            for (size_t i = 0; i < f->n; i++) {
                struct hg_media_ref ref = { 0 };
                if (f->slot[i].result != NULL)
                    continue;
                if (p != NULL)
                    p->media(e->doc, i, &ref);
                file_give_up(&f->slot[i], &ref, f->slot[i].error[0] ? f->slot[i].error : "download_failed");
            }
        } else {
            e->enrich_retry = true;
        }
    }
    files_check_done(e);
}

static void on_file(void *arg, const struct hg_media_result *res)
{
    struct media_slot *s = arg;
    struct item_event *e = s->e;
    struct item *it = e->item;
    struct media_files *f = e->files;
    s->in_flight = false;
    f->in_flight--;
    if (res->status == HG_MEDIA_RETRY) {
        if (res->error && strcmp(res->error, "upload_failed") == 0)
            it->drain->media_bucket_checked = false; /* maybe the bucket went away: check it again */
        if (!it->drain->closing) {
            /* shutdown: the record stays in the spool and the next run fetches again */
            f->undecided = true;
            snprintf(s->error, sizeof(s->error), "%s", res->error ? res->error : "download_failed");
        }
    } else {
        s->result = hg_media_result_json(res);
        if (s->result == NULL)
            hg_oom(__FILE__, __LINE__);
    }
    if (f->in_flight == 0)
        files_round_over(e);
    enrich_release(e);
}

/* "Basic " + base64(user ":" secret) into out; 0, or -1 when it does not fit. */
static int basic_auth(char *out, size_t cap, const char *user, const char *secret)
{
    char plain[BASIC_AUTH_MAX];
    int n = snprintf(plain, sizeof(plain), "%s:%s", user, secret);
    int rc = -1;
    if (n > 0 && (size_t)n < sizeof(plain) && cap > 6) {
        memcpy(out, "Basic ", 6);
        rc = hg_base64_encode((const unsigned char *)plain, (size_t)n, out + 6, cap - 6) > 0 ? 0 : -1;
    }
    memset(plain, 0, sizeof(plain));
    return rc;
}

/*
 * Start every file not decided and not in flight. `tenant` (may be NULL: none known) gives the
 * credentials of the files that need them: the first secret of the provider's creds for it.
 */
static void files_fetch(struct item_event *e, const struct hg_tenant *tenant)
{
    struct item *it = e->item;
    struct hg_drain *d = it->drain;
    struct media_files *f = e->files;
    const struct hg_provider *p = media_provider(e);
    struct hg_creds creds = { 0 };
    if (tenant != NULL && p != NULL && p->creds != NULL)
        p->creds(*d->b.conf, tenant, &creds);
    const char *secret = creds.secrets != NULL && creds.secrets->n > 0 ? creds.secrets->items[0] : NULL;
    media_bucket_ensure(d);
    for (size_t i = 0; i < f->n; i++) {
        struct media_slot *s = &f->slot[i];
        struct hg_media_ref ref = { 0 };
        char auth[BASIC_AUTH_MAX];
        const char *reason = NULL;
        if (s->result != NULL || s->in_flight)
            continue;
        if (p == NULL || p->media(e->doc, i, &ref) <= i || ref.via == HG_MEDIA_VIA_GRAPH) {
            reason = "invalid"; /* a Graph media id only as a provider's one file (WhatsApp) */
        } else if (ref.via == HG_MEDIA_VIA_URL_BASIC) {
            if (ref.user == NULL || ref.user[0] == '\0' || secret == NULL || secret[0] == '\0')
                reason = "no_credentials";
            else if (basic_auth(auth, sizeof(auth), ref.user, secret) != 0)
                reason = "invalid";
        }
        if (reason != NULL) {
            file_give_up(s, &ref, reason);
            continue;
        }
        struct hg_media_job job = {
            .tenant = it->tenant,
            .media_id = ref.media_id,
            .url = ref.url,
            .authorization = ref.via == HG_MEDIA_VIA_URL_BASIC ? auth : NULL,
            .media_type = media_type_of(ref.type),
            .mime_type = ref.mime_type,
            .sha256 = ref.sha256,
            .message_id = ref.message_id ? ref.message_id : e->event_id,
            .occurred_at_s = e->timestamp_s,
            .request_id = it->request_id,
        };
        enrich_hold(e);
        s->in_flight = true;
        f->in_flight++;
        int rc = hg_media_fetch(d->b.media, &job, on_file, s);
        if (ref.via == HG_MEDIA_VIA_URL_BASIC)
            memset(auth, 0, sizeof(auth)); /* the job has its own copy */
        if (rc != 0) {
            s->in_flight = false;
            f->in_flight--;
            if (rc == HG_ERR_INVALID)
                file_give_up(s, &ref, "invalid"); /* no url, not http(s), bad type, ... */
            else
                e->enrich_retry = true;           /* queue full or closing: later */
            enrich_release(e);
        }
    }
    if (f->in_flight == 0)
        files_round_over(e);
}

static void on_files_tenant(void *arg, int status, struct hg_tenant *tn)
{
    struct item_event *e = arg;
    struct item *it = e->item;
    if (it->drain->closing) {
        e->enrich_retry = true;
    } else if (status == 0) {
        files_fetch(e, tn);
    } else if (status == HG_ERR_NOT_FOUND) {
        files_fetch(e, NULL);   /* no tenant, no credentials: those files get no_credentials */
    } else {
        e->enrich_retry = true; /* tenant service unavailable, or closing */
    }
    hg_tenant_unref(tn);
    enrich_release(e);
}

/*
 * Files fetched by URL (Genesys, Twilio): the ones still undecided this round. Credentials, when
 * a file needs them, come from the tenant: the config's tenants and the LRU at once, the tenant
 * service's through the same resolution the ingest path uses.
 */
static void files_start(struct item_event *e, size_t n)
{
    struct item *it = e->item;
    struct hg_drain *d = it->drain;
    const struct hg_provider *p = media_provider(e);
    if (e->files == NULL) {
        e->files = hg_xcalloc(1, sizeof(*e->files) + n * sizeof(e->files->slot[0]));
        e->files->n = n;
        for (size_t i = 0; i < n; i++)
            e->files->slot[i].e = e;
    }
    e->files->undecided = false;
    bool need_creds = false;
    for (size_t i = 0; i < e->files->n && !need_creds; i++) {
        struct hg_media_ref ref = { 0 };
        need_creds = e->files->slot[i].result == NULL && p->media(e->doc, i, &ref) > i &&
                     ref.via == HG_MEDIA_VIA_URL_BASIC;
    }
    if (!need_creds || d->b.tenants == NULL) {
        files_fetch(e, NULL);
        return;
    }
    struct hg_tenant *tn = NULL;
    int rc = hg_tenants_resolve_local(d->b.tenants, *d->b.conf, it->tenant, NULL, 0, &tn);
    if (rc == 0 || rc == HG_ERR_NOT_FOUND) {
        files_fetch(e, tn); /* not found: those files get no_credentials */
        hg_tenant_unref(tn);
    } else if (rc == HG_TENANTS_PENDING) {
        enrich_hold(e);
        if (hg_tenants_resolve(d->b.tenants, *d->b.conf, it->tenant, NULL, 0, on_files_tenant, e) != 0) {
            e->enrich_retry = true;
            enrich_release(e);
        }
    } else {
        e->enrich_retry = true; /* unavailable (too many lookups) or closing: later */
    }
}

static void media_start(struct item_event *e)
{
    struct hg_media_ref ref;
    size_t n = media_count(e);
    if (n == 0)
        return;
    if (graph_ref(e, &ref))
        graph_start(e); /* WhatsApp, as it always was */
    else
        files_start(e, n);
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

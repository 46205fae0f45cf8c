/*
 * State Manager enrichment client on hg_http: mapping lookup + message record per event, with
 * retries (exponential backoff, jitter) and a circuit breaker shared by every call of a worker.
 */
#include <string.h>

#include "clients/statemgr.h"
#include "core/backoff.h"
#include "core/breaker.h"
#include "core/buf.h"
#include "core/common.h"
#include "core/err.h"
#include "core/list.h"
#include "core/log.h"
#include "core/time.h"

#define DEFAULT_TIMEOUT_MS 2000
#define DEFAULT_RETRIES 2
#define DEFAULT_BACKOFF_MS 100
#define BACKOFF_CAP_MS 10000
#define DEFAULT_BREAKER_FAILURES 5
#define DEFAULT_BREAKER_OPEN_MS 30000
#define DEFAULT_MAX_RESPONSE (64 * 1024)
#define RECORD_BODY_MAX (256 * 1024)   /* the POST body is a handful of ids; this is a sanity cap */
#define URL_BUF_MAX (HG_STATEMGR_URL_MAX + 3 * HG_STATEMGR_WA_ID_MAX + 64)
#define ERROR_MAX 128

/* Where one enrich call is. Each call goes LOOKUP → RECORD → ANSWER, skipping what it was not asked. */
enum call_step {
    STEP_LOOKUP, /* GET /state/mapping/{waId}: in flight, or waiting for a retry */
    STEP_RECORD, /* POST /state/message: in flight, or waiting for a retry */
    STEP_ANSWER, /* outcome known; the callback is due on the next timer turn */
};

struct call {
    struct hg_statemgr *s;
    enum call_step step;
    hg_statemgr_cb cb;
    void *arg;
    char *lookup_url;           /* NULL: no lookup asked */
    char *tenant;               /* NULL: no X-Tenant-Id */
    char *record;               /* serialized POST body; NULL: no record asked */
    const char *record_path;    /* "/state/message" or "/state/conversation" (static) */
    size_t record_len;
    int tries;                  /* requests sent for the current step */
    bool in_flight;             /* an hg_http request carries this call as its arg */
    bool waiting;               /* on the timer: a retry (LOOKUP/RECORD) or the answer (ANSWER) */
    uint64_t due_ms;            /* loop time the wait ends */
    bool trial;                 /* the request in flight is the breaker's half-open trial */
    struct hg_buf resp;         /* response body of the lookup, capped at max_response */
    json_t *mapping;
    bool degraded;
    bool recorded;
    char error[ERROR_MAX];
    char last_failure[64];      /* why the current step's last try failed ("" if none did) */
    struct hg_list link;        /* in s->calls */
};

struct hg_statemgr {
    struct hg_http *http;
    uv_loop_t *loop;
    char *base_url;
    char *auth;                 /* "Bearer <token>" or NULL */
    uint32_t timeout_ms;
    uint32_t retries;
    struct hg_backoff backoff;  /* before retry n (1-based): backoff_ms * 2^(n-1), equal jitter */
    uint32_t max_response;

    struct hg_breaker breaker;  /* loop time in ms */
    uint64_t rng;               /* xorshift state for backoff jitter */

    struct hg_list calls;       /* every call not yet answered, newest first */
    uv_timer_t timer;           /* retries and deferred answers: fires at the earliest due_ms */
    bool closing;
    bool timer_closing;
    hg_statemgr_close_cb on_closed;
    void *on_closed_arg;
    struct hg_statemgr_stats stats;
};

static void step_start(struct call *c);

/* ---- circuit breaker ------------------------------------------------------------------------ */

/* May c send a request now? The breaker decides, and marks c when it is the half-open trial. */
static bool breaker_admit(struct hg_statemgr *s, struct call *c)
{
    return hg_breaker_admit(&s->breaker, uv_now(s->loop), &c->trial);
}

/* Outcome of one request (see hg_breaker_report): the openings and closings are logged here. */
static void breaker_report(struct hg_statemgr *s, struct call *c, bool ok)
{
    bool trial = c->trial;
    c->trial = false;
    enum hg_breaker_state from;
    if (!hg_breaker_report(&s->breaker, trial, ok, uv_now(s->loop), &from))
        return;
    if (s->breaker.state == HG_BREAKER_OPEN) {
        s->stats.breaker_opened++;
        hg_warn(NULL, "state manager circuit breaker open", "from", hg_breaker_state_name(from),
                NULL);
    } else {
        hg_info(NULL, "state manager circuit breaker closed", "from", hg_breaker_state_name(from),
                NULL);
    }
}

/* The request never got an answer (canceled): a trial lets the next call try again at once. */
static void breaker_release(struct hg_statemgr *s, struct call *c)
{
    bool trial = c->trial;
    c->trial = false;
    hg_breaker_release(&s->breaker, trial, uv_now(s->loop));
}

/* ---- timer: retries and deferred answers ---------------------------------------------------- */

static void on_timer(uv_timer_t *timer);

static void timer_arm(struct hg_statemgr *s)
{
    if (s->timer_closing)
        return;
    bool any = false;
    uint64_t due = 0;
    struct hg_list *pos;
    HG_LIST_FOREACH(pos, &s->calls) {
        struct call *c = hg_list_entry(pos, struct call, link);
        if (c->waiting && (!any || c->due_ms < due)) {
            due = c->due_ms;
            any = true;
        }
    }
    if (!any) {
        uv_timer_stop(&s->timer);
        return;
    }
    uint64_t now = uv_now(s->loop);
    uv_timer_start(&s->timer, on_timer, due > now ? due - now : 0, 0);
}

static void wait_until(struct call *c, uint64_t due_ms)
{
    c->waiting = true;
    c->due_ms = due_ms;
    timer_arm(c->s);
}

/* Outcome known: answer on the next timer turn (never inside enrich or close). */
static void answer_later(struct call *c)
{
    c->step = STEP_ANSWER;
    wait_until(c, uv_now(c->s->loop));
}

static void degrade(struct call *c, const char *what, const char *why)
{
    c->degraded = true;
    if (c->error[0] == '\0')
        snprintf(c->error, sizeof(c->error), "%s: %s", what, why);
}

static void call_free(struct call *c)
{
    free(c->lookup_url);
    free(c->tenant);
    free(c->record);
    hg_buf_free(&c->resp);
    json_decref(c->mapping);
    free(c);
}

/* Run the callback once and free the call. The caller must not be inside enrich or close. */
static void answer_now(struct call *c)
{
    struct hg_statemgr *s = c->s;
    hg_list_unlink(&c->link);
    struct hg_statemgr_result r = {
        .mapping = c->mapping,
        .degraded = c->degraded,
        .recorded = c->recorded,
        .error = c->degraded ? c->error : NULL,
    };
    if (r.degraded)
        s->stats.degraded++;
    if (r.mapping != NULL)
        s->stats.mappings++;
    if (r.recorded)
        s->stats.recorded++;
    c->cb(c->arg, &r);
    call_free(c);
}

static void on_timer_closed(uv_handle_t *handle)
{
    struct hg_statemgr *s = HG_CONTAINER_OF((uv_timer_t *)handle, struct hg_statemgr, timer);
    hg_statemgr_close_cb cb = s->on_closed;
    void *arg = s->on_closed_arg;
    free(s->base_url);
    free(s->auth);
    free(s);
    if (cb != NULL)
        cb(arg);
}

static void on_timer(uv_timer_t *timer)
{
    struct hg_statemgr *s = HG_CONTAINER_OF(timer, struct hg_statemgr, timer);

    /*
     * Rescan from the head after each due call: an answer's callback may start new calls or
     * close the client, and a retry may finish (and unlink) calls synchronously.
     */
    for (;;) {
        uint64_t now = uv_now(s->loop);
        struct call *c = NULL;
        struct hg_list *pos;
        HG_LIST_FOREACH(pos, &s->calls) {
            struct call *x = hg_list_entry(pos, struct call, link);
            if (x->waiting && x->due_ms <= now) {
                c = x;
                break;
            }
        }
        if (c == NULL)
            break;
        c->waiting = false;
        if (c->step == STEP_ANSWER)
            answer_now(c);
        else
            step_start(c);
    }
    if (s->closing && hg_list_empty(&s->calls)) {
        if (!s->timer_closing) {
            s->timer_closing = true;
            uv_timer_stop(&s->timer);
            uv_close((uv_handle_t *)&s->timer, on_timer_closed);
        }
        return;
    }
    timer_arm(s);
}

/* ---- requests ------------------------------------------------------------------------------- */

static uint64_t backoff_ms(struct hg_statemgr *s, int tries)
{
    /* xorshift64: jitter only, so every worker's retries do not land in the same millisecond */
    s->rng ^= s->rng << 13;
    s->rng ^= s->rng >> 7;
    s->rng ^= s->rng << 17;
    return hg_backoff_ms(&s->backoff, tries > 1 ? (unsigned)tries - 1 : 0, s->rng);
}

static const char *step_name(const struct call *c)
{
    return c->step == STEP_LOOKUP ? "mapping" : "record";
}

/* The current step failed in a way another try may fix: retry after a backoff, or give up. */
static void step_failed(struct call *c, const char *why)
{
    struct hg_statemgr *s = c->s;
    snprintf(c->last_failure, sizeof(c->last_failure), "%s", why);
    if (!s->closing && c->tries <= (int)s->retries) {
        s->stats.retries++;
        wait_until(c, uv_now(s->loop) + backoff_ms(s, c->tries));
        return;
    }
    degrade(c, step_name(c), why);
    answer_later(c);
}

/* The current step is over (answered or given up without degrading): go on to the next one. */
static void step_next(struct call *c)
{
    c->tries = 0;
    c->last_failure[0] = '\0';
    if (c->step == STEP_LOOKUP && c->record != NULL && !c->degraded) {
        c->step = STEP_RECORD;
        step_start(c);
        return;
    }
    answer_later(c);
}

static void lookup_answered(struct call *c, const struct hg_http_resp *resp)
{
    if (resp->status == 404)
        return; /* no mapping: not an error */
    if (resp->status < 200 || resp->status > 299) {
        char why[32];
        snprintf(why, sizeof(why), "http %ld", resp->status);
        degrade(c, "mapping", why);
        return;
    }
    if (resp->status != 200 || c->resp.len == 0)
        return; /* 204 and friends: nothing to attach */
    json_error_t jerr;
    json_t *m = json_loadb(c->resp.data, c->resp.len, 0, &jerr);
    if (m == NULL || !json_is_object(m)) {
        json_decref(m);
        degrade(c, "mapping", "answer is not a JSON object");
        return;
    }
    c->mapping = m;
}

static void record_answered(struct call *c, const struct hg_http_resp *resp)
{
    if (resp->status >= 200 && resp->status <= 299) {
        c->recorded = true;
        return;
    }
    char why[32];
    snprintf(why, sizeof(why), "http %ld", resp->status);
    degrade(c, "record", why);
}

static void on_http(void *arg, const struct hg_http_resp *resp)
{
    struct call *c = arg;
    struct hg_statemgr *s = c->s;
    c->in_flight = false;

    if (resp->err == UV_ECANCELED || resp->err == HG_ERR_CLOSED) {
        /* Ours (close) or the hg_http's: not the State Manager's fault, so no breaker report. */
        breaker_release(s, c);
        degrade(c, step_name(c), s->closing ? "closing" : hg_strerror(resp->err));
        answer_later(c);
        return;
    }
    if (resp->err == HG_ERR_TOO_BIG) {
        /* It answered, just too much: the service is up, retrying will not shrink it. */
        breaker_report(s, c, true);
        degrade(c, step_name(c), "answer too big");
        answer_later(c);
        return;
    }
    if (resp->err != 0 || resp->status >= 500 || resp->status == 429) {
        s->stats.failures++;
        breaker_report(s, c, false);
        char why[64];
        if (resp->err != 0)
            snprintf(why, sizeof(why), "%s", hg_strerror(resp->err));
        else
            snprintf(why, sizeof(why), "http %ld", resp->status);
        hg_debug(NULL, "state manager request failed", "step", step_name(c), "error", why, NULL);
        step_failed(c, why);
        return;
    }
    breaker_report(s, c, true);
    if (c->step == STEP_LOOKUP)
        lookup_answered(c, resp);
    else
        record_answered(c, resp);
    step_next(c);
}

/* Send the current step's request, unless the breaker or a closing client says no. */
static void step_start(struct call *c)
{
    struct hg_statemgr *s = c->s;

    if (s->closing) {
        degrade(c, step_name(c), "closing");
        answer_later(c);
        return;
    }
    if (c->step == STEP_LOOKUP && c->lookup_url == NULL) {
        step_next(c);
        return;
    }
    if (!breaker_admit(s, c)) {
        s->stats.breaker_rejected++;
        /* A retry the breaker stops: the failure that led here says more than the breaker. */
        degrade(c, step_name(c), c->last_failure[0] ? c->last_failure : "circuit breaker open");
        answer_later(c);
        return;
    }

    struct hg_http_header headers[4];
    size_t n = 0;
    headers[n++] = (struct hg_http_header){ "Accept", "application/json" };
    if (s->auth != NULL)
        headers[n++] = (struct hg_http_header){ "Authorization", s->auth };
    if (c->tenant != NULL)
        headers[n++] = (struct hg_http_header){ "X-Tenant-Id", c->tenant };

    char url[URL_BUF_MAX];
    struct hg_http_req req = {
        .url = c->lookup_url,
        .headers = headers,
        .connect_timeout_ms = s->timeout_ms,
        .timeout_ms = s->timeout_ms,
    };
    if (c->step == STEP_LOOKUP) {
        hg_buf_reset(&c->resp);
        req.resp_body = &c->resp;
    } else {
        headers[n++] = (struct hg_http_header){ "Content-Type", "application/json" };
        snprintf(url, sizeof(url), "%s%s", s->base_url, c->record_path);
        req.url = url;
        req.method = "POST";
        req.body = c->record;
        req.body_len = c->record_len;
    }
    req.nheaders = n;

    int rc = hg_http_request(s->http, &req, on_http, c);
    if (rc < 0) {
        /* The hg_http is closed (or refused the request): nothing reached the State Manager. */
        breaker_release(s, c);
        degrade(c, step_name(c), hg_strerror(rc));
        answer_later(c);
        return;
    }
    c->in_flight = true;
    c->tries++;
    s->stats.requests++;
}

/* ---- API ------------------------------------------------------------------------------------ */

static bool has_crlf(const char *v)
{
    return strchr(v, '\r') != NULL || strchr(v, '\n') != NULL;
}

static bool token_ok(const char *token)
{
    return token == NULL || *token == '\0' || (strlen(token) <= HG_STATEMGR_TOKEN_MAX && !has_crlf(token));
}

int hg_statemgr_check(const char *base, const char *token, char *why, size_t wl)
{
    if (base == NULL) {
        snprintf(why, wl, "no url");
        return HG_ERR_INVALID;
    }
    size_t blen = strlen(base);
    if (blen > HG_STATEMGR_URL_MAX || has_crlf(base) ||
        (strncmp(base, "http://", 7) != 0 && strncmp(base, "https://", 8) != 0)) {
        snprintf(why, wl, "url must be http[s]://host[:port][/prefix], at most %d bytes", HG_STATEMGR_URL_MAX);
        return HG_ERR_INVALID;
    }
    while (blen > 0 && base[blen - 1] == '/')
        blen--;
    if (blen <= 8) {
        snprintf(why, wl, "url names no host"); /* "http://" with no host */
        return HG_ERR_INVALID;
    }
    if (!token_ok(token)) {
        snprintf(why, wl, "token is longer than %d bytes or holds a line break", HG_STATEMGR_TOKEN_MAX);
        return HG_ERR_INVALID;
    }
    return 0;
}

int hg_statemgr_set_token(struct hg_statemgr *s, const char *token)
{
    if (!token_ok(token))
        return HG_ERR_INVALID;
    if (s->auth != NULL)
        explicit_bzero(s->auth, strlen(s->auth));
    free(s->auth);
    s->auth = NULL;
    if (token != NULL && *token != '\0') {
        struct hg_buf b;
        hg_buf_init(&b, HG_STATEMGR_TOKEN_MAX + 16);
        if (hg_buf_appendf(&b, "Bearer %s", token) < 0)
            hg_oom(__FILE__, __LINE__); /* cannot happen: the length was checked */
        s->auth = hg_xstrdup(hg_buf_cstr(&b));
        explicit_bzero(b.data, b.len);
        hg_buf_free(&b);
    }
    return 0;
}

int hg_statemgr_open(struct hg_http *http, uv_loop_t *loop, const struct hg_statemgr_opts *opts,
                     struct hg_statemgr **out)
{
    char why[160];
    if (http == NULL || loop == NULL || opts == NULL || out == NULL ||
        hg_statemgr_check(opts->base_url, opts->token, why, sizeof why) != 0)
        return HG_ERR_INVALID;
    const char *base = opts->base_url;
    size_t blen = strlen(base);
    while (blen > 0 && base[blen - 1] == '/')
        blen--;

    struct hg_statemgr *s = hg_xcalloc(1, sizeof(*s));
    s->http = http;
    s->loop = loop;
    s->base_url = hg_xstrndup(base, blen);
    hg_statemgr_set_token(s, opts->token);
    s->timeout_ms = opts->timeout_ms ? opts->timeout_ms : DEFAULT_TIMEOUT_MS;
    s->retries = opts->retries < 0 ? 0 : opts->retries == 0 ? DEFAULT_RETRIES
                                                             : (uint32_t)opts->retries;
    s->backoff = (struct hg_backoff){
        .base_ms = opts->backoff_ms ? opts->backoff_ms : DEFAULT_BACKOFF_MS,
        .max_ms = BACKOFF_CAP_MS,
        .jitter = HG_BACKOFF_EQUAL,
    };
    hg_breaker_init(&s->breaker,
                    opts->breaker_failures ? opts->breaker_failures : DEFAULT_BREAKER_FAILURES,
                    opts->breaker_open_ms ? opts->breaker_open_ms : DEFAULT_BREAKER_OPEN_MS);
    s->max_response = opts->max_response ? opts->max_response : DEFAULT_MAX_RESPONSE;
    hg_list_init(&s->calls);
    s->rng = hg_time_mono_ns() ^ (uint64_t)(uintptr_t)s;
    if (s->rng == 0)
        s->rng = 0x9e3779b97f4a7c15ull;
    uv_timer_init(loop, &s->timer);
    *out = s;
    return 0;
}

/* Percent-encode everything but RFC 3986 unreserved characters, so a wa_id stays one segment. */
static int append_segment(struct hg_buf *b, const char *v)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)v; *p != '\0'; p++) {
        unsigned char ch = *p;
        bool plain = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                     (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' || ch == '~';
        char esc[3] = { '%', hex[ch >> 4], hex[ch & 15] };
        int rc = plain ? hg_buf_append(b, p, 1) : hg_buf_append(b, esc, 3);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* One call: the mapping lookup (wa_id non-empty), then the record POSTed to `path`. */
static int call_start(struct hg_statemgr *s, const char *wa_id, const char *tenant, json_t *record_body,
                      const char *path, hg_statemgr_cb cb, void *arg)
{
    struct call *c = NULL;
    struct hg_buf url;
    int rc = 0;

    hg_buf_init(&url, URL_BUF_MAX - 1);
    if (s->closing)
        return HG_ERR_CLOSED;
    if (cb == NULL || (wa_id != NULL && strlen(wa_id) > HG_STATEMGR_WA_ID_MAX) ||
        (tenant != NULL && has_crlf(tenant)))
        return HG_ERR_INVALID;

    c = hg_xcalloc(1, sizeof(*c));
    c->s = s;
    c->cb = cb;
    c->arg = arg;
    c->record_path = path;
    hg_buf_init(&c->resp, s->max_response);
    if (wa_id != NULL && *wa_id != '\0') {
        if ((rc = hg_buf_appendf(&url, "%s/state/mapping/", s->base_url)) < 0 ||
            (rc = append_segment(&url, wa_id)) < 0) {
            rc = HG_ERR_INVALID;
            goto fail;
        }
        c->lookup_url = hg_xstrdup(hg_buf_cstr(&url));
    }
    if (tenant != NULL && *tenant != '\0')
        c->tenant = hg_xstrdup(tenant);
    if (record_body != NULL) {
        c->record = json_dumps(record_body, JSON_COMPACT | JSON_ENCODE_ANY);
        if (c->record == NULL || strlen(c->record) > RECORD_BODY_MAX) {
            rc = HG_ERR_INVALID;
            goto fail;
        }
        c->record_len = strlen(c->record);
    }

    hg_list_insert_head(&s->calls, &c->link);
    s->stats.calls++;
    /* Every outcome of step_start is asynchronous: a request, or an answer on the timer. */
    c->step = STEP_LOOKUP;
    step_start(c);
    hg_buf_free(&url);
    return 0;
fail:
    hg_buf_free(&url);
    call_free(c);
    return rc;
}

int hg_statemgr_enrich(struct hg_statemgr *s, const char *wa_id, const char *tenant,
                       json_t *record_body, hg_statemgr_cb cb, void *arg)
{
    return call_start(s, wa_id, tenant, record_body, "/state/message", cb, arg);
}

int hg_statemgr_conversation(struct hg_statemgr *s, const char *tenant, json_t *body, hg_statemgr_cb cb, void *arg)
{
    if (body == NULL)
        return HG_ERR_INVALID;
    return call_start(s, NULL, tenant, body, "/state/conversation", cb, arg);
}

/* Conversation event types that change a conversation's life, and what they tell the State
 * Manager (docs/state-manager.md). */
static const struct {
    const char *type;
    const char *action;
} lifecycle[] = {
    { "customer_start", "created" },
    { "user_start", "participant_joined" },
    { "acd_start", "participant_joined" },
    { "participant_added", "participant_joined" },
    { "user_end", "participant_left" },
    { "acd_end", "participant_left" },
    { "participant_removed", "participant_left" },
    { "transfer", "transferred" },
    { "customer_end", "closed" },
};

const char *hg_statemgr_conversation_action(const char *type)
{
    for (size_t i = 0; type != NULL && i < sizeof(lifecycle) / sizeof(lifecycle[0]); i++)
        if (strcmp(lifecycle[i].type, type) == 0)
            return lifecycle[i].action;
    return NULL;
}

static void set_string(json_t *obj, const char *key, const json_t *v);

json_t *hg_statemgr_conversation_body(const json_t *event)
{
    if (!json_is_object(event))
        return NULL;
    json_t *kind = json_object_get(event, "kind");
    const char *action = hg_statemgr_conversation_action(json_string_value(json_object_get(event, "type")));
    json_t *conv = json_object_get(event, "conversation");
    if (!json_is_string(kind) || strcmp(json_string_value(kind), "conversation") != 0 || action == NULL ||
        !json_is_object(conv) || !json_is_string(json_object_get(conv, "id")))
        return NULL;
    json_t *b = json_object();
    if (b == NULL)
        hg_oom(__FILE__, __LINE__);
    set_string(b, "event_id", json_object_get(event, "event_id"));
    set_string(b, "tenant", json_object_get(event, "tenant"));
    set_string(b, "provider", json_object_get(event, "provider"));
    json_object_set_new(b, "action", json_string(action));
    set_string(b, "type", json_object_get(event, "type"));
    set_string(b, "conversation_id", json_object_get(conv, "id"));
    set_string(b, "participant_id", json_object_get(conv, "participant_id"));
    set_string(b, "session_id", json_object_get(conv, "session_id"));
    json_t *seq = json_object_get(conv, "sequence");
    json_object_set_new(b, "sequence", json_is_integer(seq) ? json_integer(json_integer_value(seq)) : json_null());
    set_string(b, "occurred_at", json_object_get(event, "occurred_at"));
    set_string(b, "correlation_id", json_object_get(event, "correlation_id"));
    return b;
}

static void set_string(json_t *obj, const char *key, const json_t *v)
{
    json_object_set_new(obj, key, json_is_string(v) ? json_copy((json_t *)v) : json_null());
}

json_t *hg_statemgr_message_body(const json_t *event)
{
    if (!json_is_object(event))
        return NULL;
    json_t *b = json_object();
    if (b == NULL)
        hg_oom(__FILE__, __LINE__);
    json_t *customer = json_object_get(event, "customer");
    set_string(b, "event_id", json_object_get(event, "event_id"));
    set_string(b, "tenant", json_object_get(event, "tenant"));
    set_string(b, "wa_id", json_is_object(customer) ? json_object_get(customer, "wa_id") : NULL);
    set_string(b, "kind", json_object_get(event, "kind"));
    set_string(b, "type", json_object_get(event, "type"));
    set_string(b, "occurred_at", json_object_get(event, "occurred_at"));
    set_string(b, "correlation_id", json_object_get(event, "correlation_id"));
    return b;
}

void hg_statemgr_stats(const struct hg_statemgr *s, struct hg_statemgr_stats *out)
{
    *out = s->stats;
    /* Open past its interval shows half-open: the next call will be the trial, so /ready may say
     * so already. */
    switch (hg_breaker_state(&s->breaker, uv_now(s->loop))) {
    case HG_BREAKER_CLOSED:
        out->breaker = HG_STATEMGR_BREAKER_CLOSED;
        break;
    case HG_BREAKER_OPEN:
        out->breaker = HG_STATEMGR_BREAKER_OPEN;
        break;
    case HG_BREAKER_HALF_OPEN:
        out->breaker = HG_STATEMGR_BREAKER_HALF_OPEN;
        break;
    }
}

void hg_statemgr_close(struct hg_statemgr *s, hg_statemgr_close_cb cb, void *arg)
{
    if (s->closing)
        return;
    s->closing = true;
    s->on_closed = cb;
    s->on_closed_arg = arg;
    /*
     * Canceling runs on_http at once for each request, which only marks its call for an answer
     * on the timer: no user callback runs inside this function.
     */
    struct hg_list *pos;
    HG_LIST_FOREACH(pos, &s->calls) {
        struct call *c = hg_list_entry(pos, struct call, link);
        if (c->in_flight)
            hg_http_cancel(s->http, c);
        else if (c->step != STEP_ANSWER)
            degrade(c, step_name(c), "closing");
        c->step = STEP_ANSWER;
        c->waiting = true;
        c->due_ms = uv_now(s->loop);
    }
    /* Even with no call left, the close callback must come from the loop. */
    uv_timer_start(&s->timer, on_timer, 0, 0);
}

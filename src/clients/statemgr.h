/*
 * Optional State Manager enrichment client: looks up the conversation mapping of a WhatsApp user
 * (GET {base}/state/mapping/{waId}), records the message (POST {base}/state/message) and
 * conversation lifecycle changes (POST {base}/state/conversation), through
 * the worker's hg_http, with per-request timeout, retries with backoff and a circuit breaker.
 * When the State Manager cannot answer, every call still answers, flagged `degraded`.
 * Protocol: docs/state-manager.md.
 */
#ifndef HG_CLIENTS_STATEMGR_H
#define HG_CLIENTS_STATEMGR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "clients/http.h"

#define HG_STATEMGR_URL_MAX 1024    /* longest base URL accepted */
#define HG_STATEMGR_TOKEN_MAX 4096  /* longest bearer token accepted */
#define HG_STATEMGR_WA_ID_MAX 256   /* longest wa_id accepted by hg_statemgr_enrich */
#define HG_STATEMGR_NO_RETRY (-1)   /* opts.retries: one try only */

/* Tunables; zero fields take the default shown. Strings are copied by hg_statemgr_open. */
struct hg_statemgr_opts {
    const char *base_url;       /* required: http[s]://host[:port][/prefix] (a trailing / is dropped) */
    const char *token;          /* NULL or "": no Authorization header; else "Bearer <token>" */
    uint32_t timeout_ms;        /* 2000: one HTTP request, connect included */
    int retries;                /* 2: further tries of a failed request; HG_STATEMGR_NO_RETRY = none */
    uint32_t backoff_ms;        /* 100: delay before the first retry, doubled each retry, jittered
                                 * down to half, capped at 10 s */
    uint32_t breaker_failures;  /* 5: consecutive failed requests that open the breaker */
    uint32_t breaker_open_ms;   /* 30000: how long the breaker stays open before one trial */
    uint32_t max_response;      /* 65536: cap on a mapping response body, bytes */
};

enum hg_statemgr_breaker {
    HG_STATEMGR_BREAKER_CLOSED = 0,    /* requests go out */
    HG_STATEMGR_BREAKER_OPEN = 1,      /* requests are not sent; calls answer degraded at once */
    HG_STATEMGR_BREAKER_HALF_OPEN = 2, /* one trial request is in flight (or due: open_ms passed);
                                        * other calls answer degraded until it succeeds */
};

/*
 * Counters since open, for metrics (state_manager_* families) and /ready. Single writer (the
 * loop thread); read them on that thread.
 */
struct hg_statemgr_stats {
    uint64_t calls;            /* hg_statemgr_enrich calls accepted */
    uint64_t requests;         /* HTTP requests sent (first tries and retries) */
    uint64_t retries;          /* of which retries */
    uint64_t failures;         /* requests that failed: 5xx/429, timeout, connect/transport error */
    uint64_t degraded;         /* answers with degraded = true */
    uint64_t breaker_rejected; /* requests not sent because the breaker was open/half-open */
    uint64_t breaker_opened;   /* transitions to open (from closed or a failed trial) */
    uint64_t mappings;         /* answers that carried a mapping */
    uint64_t recorded;         /* messages the State Manager accepted (2xx) */
    enum hg_statemgr_breaker breaker; /* now */
};

/* What one enrich call produced. Everything is borrowed for the duration of the callback. */
struct hg_statemgr_result {
    /* The mapping object exactly as the State Manager returned it; NULL when it has none (404),
     * when no wa_id was given, or when the lookup failed (a failed record keeps the mapping).
     * json_incref it to keep it. */
    json_t *mapping;
    /* The State Manager could not do everything asked: unreachable, 5xx, timed out, breaker open,
     * closing, or a non-404 4xx / unparsable answer. The event should be published anyway,
     * without (part of) the enrichment. */
    bool degraded;
    bool recorded;       /* the message POST was answered 2xx */
    const char *error;   /* NULL unless degraded: short text for logs (no wa_id in it) */
};

struct hg_statemgr;

typedef void (*hg_statemgr_cb)(void *arg, const struct hg_statemgr_result *r);
typedef void (*hg_statemgr_close_cb)(void *arg);

/*
 * Create a client that sends its requests through `http` (the worker's client, bound to `loop`;
 * it must outlive this one — close this one first). No I/O happens here. Returns 0 and *out, or
 * HG_ERR_INVALID (missing/non-http base URL, over-long URL or token, token with CR/LF).
 */
/* What hg_statemgr_open refuses in a base URL and token: 0, or HG_ERR_INVALID with the reason in
 * why. Pure; the config loader calls it so that `hookgate -t` refuses what the client would. */
int hg_statemgr_check(const char *base_url, const char *token, char *why, size_t wl);

/* A reload: requests started from now on carry this token (NULL or "": none). 0, or
 * HG_ERR_INVALID (too long, CR/LF: the old token stays). Loop thread. */
int hg_statemgr_set_token(struct hg_statemgr *s, const char *token);

int hg_statemgr_open(struct hg_http *http, uv_loop_t *loop, const struct hg_statemgr_opts *opts,
                     struct hg_statemgr **out);

/*
 * Enrich one event: when wa_id is non-empty, GET its mapping; then, when record_body is not NULL
 * and the lookup did not end degraded, POST record_body to /state/message. `tenant` (may be
 * NULL) is sent as X-Tenant-Id. wa_id, tenant and record_body are copied (the body serialized)
 * before this returns.
 *
 * Returns 0: cb runs exactly once, from the loop, never before this returns (even when the
 * breaker is open). Or HG_ERR_INVALID (no cb, wa_id too long, body not serializable) /
 * HG_ERR_CLOSED (after hg_statemgr_close): cb never runs.
 */
int hg_statemgr_enrich(struct hg_statemgr *s, const char *wa_id, const char *tenant,
                       json_t *record_body, hg_statemgr_cb cb, void *arg);

/*
 * The POST body for one normalized event (docs/events.md): {event_id, tenant, wa_id (from
 * customer.wa_id, else null), kind, type, occurred_at, correlation_id}; missing keys are null.
 * New reference, owned by the caller. NULL when `event` is not an object.
 */
json_t *hg_statemgr_message_body(const json_t *event);

/*
 * Tell the State Manager about a conversation lifecycle change: POST {base}/state/conversation
 * with `body` (hg_statemgr_conversation_body), same retries, breaker and callback contract as
 * hg_statemgr_enrich without the lookup (result.mapping is always NULL). HG_ERR_INVALID for a
 * NULL body.
 */
int hg_statemgr_conversation(struct hg_statemgr *s, const char *tenant, json_t *body, hg_statemgr_cb cb, void *arg);

/* The lifecycle action of a conversation event type ("customer_start" → "created", "user_start"
 * → "participant_joined", "user_end" → "participant_left", "transfer" → "transferred",
 * "customer_end" → "closed", ...); NULL when the type changes nothing. */
const char *hg_statemgr_conversation_action(const char *type);

/*
 * The POST body for a conversation event (docs/state-manager.md): {event_id, tenant, provider,
 * action, type, conversation_id, participant_id, session_id, sequence, occurred_at,
 * correlation_id}; NULL when `event` is not a lifecycle change of a conversation with an id.
 */
json_t *hg_statemgr_conversation_body(const json_t *event);

/* Counters and breaker state now (a copy). */
void hg_statemgr_stats(const struct hg_statemgr *s, struct hg_statemgr_stats *out);

/*
 * Start closing. Later calls return HG_ERR_CLOSED. Calls still in progress are answered once
 * (degraded, error "closing"): their requests are canceled, their retries dropped. Then the
 * memory is freed and cb(arg) (may be NULL) runs once — always from the loop, never inside this
 * call. The hg_http stays open (it is the caller's).
 */
void hg_statemgr_close(struct hg_statemgr *s, hg_statemgr_close_cb cb, void *arg);

#endif

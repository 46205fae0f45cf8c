/*
 * RabbitMQ sink over rabbitmq-c, driven by a libuv loop. Connect, login and topology run on a
 * uv_queue_work thread (rabbitmq-c's RPCs are blocking); afterwards the loop owns the connection:
 * uv_poll for reads, zero-timeout frame reads, and publishes encoded here (rabbitmq-c's encoders)
 * and written once per loop turn with one send(), admitted only while the kernel send buffer has
 * room so neither we nor rabbitmq-c ever wait for the socket. See docs/amqp.md.
 *
 * This file: the state machine, the loop side (frames, confirms, returns, heartbeats, reconnect),
 * ready and stats, close and open. The connect on the work thread (TCP, login, topology, confirm
 * mode) is in amqp_connect.c; the entries and the publish path (frame encoding, the per-turn
 * flush) in amqp_publish.c; what they share in amqp_internal.h.
 */
#include "sink/amqp.h"

#include <amqp.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "sink/amqp_internal.h"
#include "core/backoff.h"
#include "core/common.h"
#include "core/err.h"
#include "core/log.h"
#include "core/time.h"
#include "core/uuid.h"

#define FRAMES_PER_TURN    256     /* frames read per loop turn before yielding */

static void start_connect(struct hg_amqp *a);
static void pump(struct hg_amqp *a);
static void maybe_finish_close(struct hg_amqp *a);
static void maybe_rotate(struct hg_amqp *a);
static void shutdown_now(struct hg_amqp *a);

static const char *state_name(enum amqp_state st)
{
    switch (st) {
    case ST_DOWN: return "down";
    case ST_CONNECTING: return "connecting";
    case ST_UP: return "up";
    case ST_SHUTDOWN: return "shutdown";
    }
    return "?";
}

/* Every state change goes through here so the debug log tells the story. */
static void set_state(struct hg_amqp *a, enum amqp_state st)
{
    hg_debug(NULL, "amqp state", "from", state_name(a->state), "to", state_name(st), NULL);
    a->state = st;
}

/* ---- loop side ---------------------------------------------------------------------------- */

static void on_link_closed(uv_handle_t *h)
{
    struct link *l = HG_CONTAINER_OF((uv_poll_t *)h, struct link, poll);
    struct hg_amqp *a = l->owner;
    /* Only now, with the poll handle gone, may the fd be closed. */
    amqp_destroy_connection(l->conn);
    hg_buf_free(&l->out);
    free(l);
    a->handles_open--;
    maybe_finish_close(a);
}

static void on_retry(uv_timer_t *t)
{
    struct hg_amqp *a = HG_CONTAINER_OF(t, struct hg_amqp, retry_timer);
    if (a->state == ST_DOWN && !a->closing)
        start_connect(a);
}

static void arm_retry(struct hg_amqp *a)
{
    /* Jitter in [delay/2, delay] so a fleet does not reconnect in lockstep. */
    const struct hg_backoff policy = {
        .base_ms = a->reconnect_min_ms,
        .max_ms = a->reconnect_max_ms,
        .jitter = HG_BACKOFF_EQUAL,
    };
    uint64_t delay = hg_backoff_ms(&policy, a->attempt, hg_random_u64());
    a->attempt++;
    uv_timer_start(&a->retry_timer, on_retry, delay, 0);
}

/* The connection is gone (or being given up): settle everything in flight with UNAVAILABLE —
 * the caller still has the record and retries it — and reconnect unless closing. */
static void link_lost(struct hg_amqp *a, const char *reason, const char *detail)
{
    struct link *l = a->link;
    if (l == NULL)
        return;
    a->link = NULL;
    a->rotating = false;
    uv_timer_stop(&a->rotate_timer);
    a->broken = false;
    a->ret.active = false;
    a->stats.disconnects++;
    a->stats.url_index = -1;
    a->down_reason = reason;
    uv_timer_stop(&a->heartbeat_timer);
    uv_poll_stop(&l->poll);
    uv_close((uv_handle_t *)&l->poll, on_link_closed);
    if (a->next_target && !a->closing)
        hg_info(NULL, "amqp reconnecting with the reloaded url / tls settings", "reason", reason, NULL);
    else
        hg_warn(NULL, "amqp connection lost", "reason", reason, "detail", detail ? detail : "", NULL);
    if (a->closing) {
        set_state(a, ST_SHUTDOWN);
        amqpc_fail_all(a, HG_ERR_UNAVAILABLE);
        shutdown_now(a);
        return;
    }
    set_state(a, ST_DOWN);
    a->attempt = 0;
    arm_retry(a);
    amqpc_fail_all(a, HG_ERR_UNAVAILABLE);
}

/* Settle by delivery tag: `multiple` covers every tag ≤ tag. */
static void settle(struct hg_amqp *a, uint64_t tag, bool multiple, bool nack)
{
    struct hg_list *pos, *next;
    HG_LIST_FOREACH_SAFE(pos, next, &a->inflight.entries) {
        struct entry *e = hg_list_entry(pos, struct entry, link);
        if (e->tag > tag)
            break;
        if (multiple || e->tag == tag) {
            amqpc_list_remove(&a->inflight, e);
            int status = 0;
            if (nack) {
                a->stats.nacked++;
                status = HG_ERR_REJECTED;
            } else if (e->returned) {
                status = HG_ERR_REJECTED;
            }
            amqpc_entry_finish(a, e, status);
            /* The callback may have closed the sink, which settled (and freed) the rest. */
            if (!multiple || a->link == NULL)
                break;
        }
    }
}

/* basic.return names no delivery tag; the message_id does. Mark the oldest unmarked match (two
 * in-flight copies of one event are identical, so which one is marked does not matter). */
static void mark_returned(struct hg_amqp *a, amqp_basic_properties_t *p)
{
    if (!(p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG))
        return;
    struct hg_list *pos;
    HG_LIST_FOREACH(pos, &a->inflight.entries) {
        struct entry *e = hg_list_entry(pos, struct entry, link);
        if (!e->returned && strlen(e->event_id) == p->message_id.len &&
            memcmp(e->event_id, p->message_id.bytes, p->message_id.len) == 0) {
            e->returned = true;
            a->stats.returned++;
            return;
        }
    }
}

/* Handle one frame. Returns -1 when the connection was given up. */
static int on_frame(struct hg_amqp *a, amqp_frame_t *f)
{
    amqp_connection_state_t c = a->link->conn;
    if (f->frame_type == AMQP_FRAME_METHOD) {
        switch (f->payload.method.id) {
        case AMQP_BASIC_ACK_METHOD: {
            amqp_basic_ack_t *m = f->payload.method.decoded;
            settle(a, m->delivery_tag, m->multiple, false);
            return 0;
        }
        case AMQP_BASIC_NACK_METHOD: {
            amqp_basic_nack_t *m = f->payload.method.decoded;
            settle(a, m->delivery_tag, m->multiple, true);
            return 0;
        }
        case AMQP_BASIC_RETURN_METHOD: {
            amqp_basic_return_t *m = f->payload.method.decoded;
            char code[8];
            snprintf(code, sizeof code, "%u", m->reply_code);
            hg_debug(NULL, "amqp message returned", "code", code, NULL);
            a->ret.active = true;
            a->ret.body_left = 0;
            return 0;
        }
        case AMQP_CHANNEL_CLOSE_METHOD: {
            amqp_channel_close_t *m = f->payload.method.decoded;
            char detail[120];
            snprintf(detail, sizeof detail, "%u %.*s", m->reply_code,
                     (int)HG_MIN(m->reply_text.len, 100), (char *)m->reply_text.bytes);
            amqp_channel_close_ok_t ok = {0};
            (void)amqp_send_method(c, CHANNEL, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
            link_lost(a, "channel closed by broker", detail);
            return -1;
        }
        case AMQP_CONNECTION_CLOSE_METHOD: {
            amqp_connection_close_t *m = f->payload.method.decoded;
            char detail[120];
            snprintf(detail, sizeof detail, "%u %.*s", m->reply_code,
                     (int)HG_MIN(m->reply_text.len, 100), (char *)m->reply_text.bytes);
            amqp_connection_close_ok_t ok = {0};
            (void)amqp_send_method(c, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
            link_lost(a, "connection closed by broker", detail);
            return -1;
        }
        default:
            hg_debug(NULL, "amqp ignored method", "name", amqp_method_name(f->payload.method.id),
                     NULL);
            return 0;
        }
    }
    /* Content frames only follow a basic.return: read the header for the message_id, then skip
     * the body. */
    if (f->frame_type == AMQP_FRAME_HEADER && a->ret.active) {
        mark_returned(a, f->payload.properties.decoded);
        a->ret.body_left = f->payload.properties.body_size;
        if (a->ret.body_left == 0)
            a->ret.active = false;
    } else if (f->frame_type == AMQP_FRAME_BODY && a->ret.active) {
        size_t n = f->payload.body_fragment.len;
        a->ret.body_left -= HG_MIN(n, a->ret.body_left);
        if (a->ret.body_left == 0)
            a->ret.active = false;
    }
    return 0;
}

/* Read every frame already available, never waiting: zero-timeout reads until TIMEOUT. */
static void pump(struct hg_amqp *a)
{
    struct link *l = a->link;
    int n = 0;
    if (l == NULL)
        return;
    for (; n < FRAMES_PER_TURN; n++) {
        struct timeval zero = {0, 0};
        amqp_frame_t f;
        int rc = amqp_simple_wait_frame_noblock(l->conn, &f, &zero);
        if (rc == AMQP_STATUS_TIMEOUT)
            break;
        if (rc != AMQP_STATUS_OK) {
            link_lost(a, rc == AMQP_STATUS_HEARTBEAT_TIMEOUT ? "heartbeat timeout" : "read failed",
                      amqp_error_string2(rc));
            return;
        }
        if (on_frame(a, &f) != 0)
            return;
        if (a->link != l) /* a callback closed the sink and the link with it */
            return;
    }
    /* Frames left in rabbitmq-c's buffer will not wake the poll again: come back soon. */
    if (n == FRAMES_PER_TURN || amqp_frames_enqueued(l->conn) || amqp_data_in_buffer(l->conn) ||
        (l->ssl && SSL_has_pending(l->ssl)))
        amqpc_kick(a, 0);
    else
        amqp_maybe_release_buffers(l->conn);
    /* Acks may have made room in the send window: pending publishes go out from the prepare
     * handle before the loop blocks again, together with whatever this turn still publishes. */
    maybe_finish_close(a);
    maybe_rotate(a);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct link *l = HG_CONTAINER_OF(h, struct link, poll);
    struct hg_amqp *a = l->owner;
    if (a->link != l)
        return;
    if (status < 0) {
        link_lost(a, "socket error", uv_strerror(status));
        return;
    }
    a->last_rx_ns = hg_time_mono_ns();
    pump(a);
}

/*
 * Our reads always use an immediate deadline, which rabbitmq-c prefers over its own heartbeat
 * deadline, so it never reports a missed heartbeat itself: we do, from the last readable event.
 * Its send side still works: every pump sends a heartbeat frame when one is due.
 */
static void on_heartbeat(uv_timer_t *t)
{
    struct hg_amqp *a = HG_CONTAINER_OF(t, struct hg_amqp, heartbeat_timer);
    if (a->link == NULL)
        return;
    uint64_t hb_ns = (uint64_t)amqp_get_heartbeat(a->link->conn) * 1000000000u;
    if (hb_ns && hg_time_mono_ns() - a->last_rx_ns > 2 * hb_ns) {
        link_lost(a, "heartbeat timeout", NULL);
        return;
    }
    pump(a);
}

static void on_kick(uv_timer_t *t)
{
    struct hg_amqp *a = HG_CONTAINER_OF(t, struct hg_amqp, kick_timer);
    if (a->link && a->broken) {
        link_lost(a, "write failed", NULL);
        return;
    }
    pump(a);
}

void amqpc_kick(struct hg_amqp *a, uint64_t ms)
{
    if (a->state == ST_SHUTDOWN)
        return;
    /* An earlier due time wins over a later one already armed. */
    if (uv_is_active((uv_handle_t *)&a->kick_timer) && ms > 0 &&
        uv_timer_get_due_in(&a->kick_timer) <= ms)
        return;
    uv_timer_start(&a->kick_timer, on_kick, ms, 0);
}

/*
 * A reload changed the URLs or TLS settings while connected: once no publish waits for a confirm
 * (or rotate_timer gave up waiting), say goodbye to the broker and connect again with the new
 * ones. Pending publishes were never written: they settle UNAVAILABLE and the drain sends them
 * again on the new connection, without duplicates.
 */
static void maybe_rotate(struct hg_amqp *a)
{
    if (!a->rotating || a->link == NULL || a->closing || a->inflight.count > 0)
        return;
    amqp_connection_close_t m = {.reply_code = AMQP_REPLY_SUCCESS,
                                 .reply_text = amqp_cstring_bytes("hookgate reconnecting: configuration reloaded")};
    (void)amqp_send_method(a->link->conn, 0, AMQP_CONNECTION_CLOSE_METHOD, &m);
    link_lost(a, "configuration reloaded", NULL);
    /* No backoff for a planned reconnect. */
    uv_timer_start(&a->retry_timer, on_retry, 0, 0);
}

static void on_rotate_timeout(uv_timer_t *t)
{
    struct hg_amqp *a = HG_CONTAINER_OF(t, struct hg_amqp, rotate_timer);
    if (!a->rotating || a->link == NULL)
        return;
    hg_warn(NULL, "amqp reload: confirms still missing, reconnecting anyway (they are published again)", NULL);
    link_lost(a, "configuration reloaded", NULL);
    uv_timer_start(&a->retry_timer, on_retry, 0, 0);
}

static void begin_rotate(struct hg_amqp *a)
{
    a->rotating = true;
    uv_timer_start(&a->rotate_timer, on_rotate_timeout, a->close_timeout_ms, 0);
    amqpc_kick(a, 0);
}

static void on_connect_done(uv_work_t *req, int status)
{
    struct connect_work *w = HG_CONTAINER_OF(req, struct connect_work, req);
    struct hg_amqp *a = w->owner;
    amqp_connection_state_t c = w->conn;
    w->conn = NULL;
    a->work_active = false;

    if (a->closing) {
        if (c)
            amqp_destroy_connection(c);
        set_state(a, ST_SHUTDOWN);
        shutdown_now(a);
        return;
    }
    if (c == NULL) {
        if (strncmp(w->error, "declare", 7) == 0 || strncmp(w->error, "bind", 4) == 0)
            a->down_reason = "topology declaration refused by broker";
        else if (strncmp(w->error, "login", 5) == 0)
            a->down_reason = "login refused by broker";
        else if (strncmp(w->error, "tls handshake: certificate refused", 34) == 0)
            a->down_reason = "broker's TLS certificate not trusted (tls_ca, host name)";
        else if (strncmp(w->error, "tls", 3) == 0)
            a->down_reason = "TLS with the broker failed";
        else
            a->down_reason = "broker unreachable or refused the connection";
        hg_warn(NULL, "amqp connect failed", "error", w->error, NULL);
        set_state(a, ST_DOWN);
        arm_retry(a);
        return;
    }
    struct link *l = hg_xcalloc(1, sizeof *l);
    l->owner = a;
    l->conn = c;
    l->ssl = w->ssl;
    w->ssl = NULL;
    l->fd = amqp_get_sockfd(c);
    l->url_index = w->url_index;
    /* Room for a full send window, then one message alone (the empty-queue case of
     * flush_pending) with a frame's envelope per 4 KiB of body at the smallest frame_max, and the
     * frame_max each of its method and header frames is encoded into. */
    hg_buf_init(&l->out, SEND_WINDOW + a->max_message_bytes + a->max_message_bytes / 256 +
                             4 * FRAME_MAX);
    int rc = uv_poll_init(a->loop, &l->poll, l->fd);
    if (rc != 0) {
        /* Nothing to close yet: drop the connection and try again later. */
        hg_error(NULL, "amqp poll init failed", "error", uv_strerror(rc), NULL);
        amqp_destroy_connection(c);
        hg_buf_free(&l->out);
        free(l);
        a->down_reason = "cannot watch the socket";
        set_state(a, ST_DOWN);
        arm_retry(a);
        return;
    }
    a->handles_open++;
    a->link = l;
    set_state(a, ST_UP);
    rc = uv_poll_start(&l->poll, UV_READABLE | UV_DISCONNECT, on_poll);
    if (rc != 0) {
        link_lost(a, "poll failed", uv_strerror(rc));
        return;
    }
    a->attempt = 0;
    a->next_tag = 0;
    a->last_rx_ns = hg_time_mono_ns();
    a->broken = false;
    a->down_reason = NULL;
    a->stats.connects++;
    a->stats.url_index = w->url_index;
    char idx[8];
    snprintf(idx, sizeof idx, "%d", w->url_index);
    hg_info(NULL, "amqp connected", "url_index", idx, "tls", l->ssl ? SSL_get_version(l->ssl) : "no", NULL);
    a->stats.queues_without_priority = 0;
    const struct amqpc_queue *queues;
    size_t nq = amqpc_queues(&queues);
    for (size_t i = 0; i < nq; i++) {
        if (!(w->no_priority & (1u << i)))
            continue;
        a->stats.queues_without_priority++;
        char mp[16];
        snprintf(mp, sizeof mp, "%d", a->max_priority);
        hg_warn(NULL, "amqp queue exists without x-max-priority: using it as it is, message priorities have no "
                      "effect on it; delete or migrate it to get priorities (docs/amqp.md)",
                "queue", queues[i].name, "max_priority", mp, "broker", w->priority_refusal[i], NULL);
    }
    a->stats.queues_without_version = 0;
    for (size_t i = 0; i < 2 * N_QUEUES_MAX; i++) {
        if (!(w->no_version & (1u << i)))
            continue;
        a->stats.queues_without_version++;
        char name[64], qv[16];
        snprintf(name, sizeof name, "%s%s", queues[i % N_QUEUES_MAX].name, i >= N_QUEUES_MAX ? ".dlq" : "");
        snprintf(qv, sizeof qv, "%u", a->queue_version);
        hg_warn(NULL, "amqp queue exists without x-queue-version: using it as it is, in the classic queue "
                      "version the broker or a policy gives it; see docs/amqp.md to migrate it",
                "queue", name, "queue_version", qv, "broker", w->version_refusal[i], NULL);
    }
    int hb = amqp_get_heartbeat(c);
    if (hb > 0)
        uv_timer_start(&a->heartbeat_timer, on_heartbeat, (uint64_t)hb * 500, (uint64_t)hb * 500);
    amqpc_kick(a, 0);
    /* A reload that came while connecting: this connection used the old settings. */
    if (a->next_target)
        begin_rotate(a);
}

static void start_connect(struct hg_amqp *a)
{
    /* No work thread runs now: the target it reads may change. */
    if (a->next_target) {
        amqpc_target_free(a->target);
        a->target = a->next_target;
        a->next_target = NULL;
    }
    memset(&a->work, 0, sizeof a->work);
    a->work.owner = a;
    a->work.url_index = -1;
    set_state(a, ST_CONNECTING);
    int rc = uv_queue_work(a->loop, &a->work.req, amqpc_connect_work, on_connect_done);
    if (rc != 0) {
        hg_error(NULL, "amqp queue_work failed", "error", uv_strerror(rc), NULL);
        set_state(a, ST_DOWN);
        arm_retry(a);
        return;
    }
    a->work_active = true;
}

/* ---- ready, stats ------------------------------------------------------------------------- */

static int sink_ready(struct hg_sink *s, const char **reason)
{
    struct hg_amqp *a = (struct hg_amqp *)s;
    const char *why = NULL;
    if (a->closing)
        why = "closing";
    else if (a->state == ST_UP && a->rotating)
        why = "reconnecting with reloaded settings";
    else if (a->state == ST_UP && !a->broken)
        return 0;
    else if (a->state == ST_UP)
        why = "connection failed, reconnecting";
    else if (a->down_reason)
        why = a->down_reason;
    else
        why = "connecting to broker";
    if (reason)
        *reason = why;
    return HG_ERR_UNAVAILABLE;
}

void hg_amqp_sink_stats(struct hg_sink *s, struct hg_amqp_stats *out)
{
    struct hg_amqp *a = (struct hg_amqp *)s;
    *out = a->stats;
    out->inflight = a->inflight.count;
    out->pending = a->pending.count;
}

/* ---- close -------------------------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
    struct hg_amqp *a = h->data;
    a->handles_open--;
    maybe_finish_close(a);
}

/* Give up the connection and close every handle; done() runs from the last close callback. */
static void shutdown_now(struct hg_amqp *a)
{
    set_state(a, ST_SHUTDOWN);
    if (a->link) {
        struct link *l = a->link;
        /* Tell the broker politely; a small frame that fits the send window, no reply awaited. */
        amqp_connection_close_t m = {.reply_code = AMQP_REPLY_SUCCESS,
                                     .reply_text = amqp_cstring_bytes("hookgate closing")};
        (void)amqp_send_method(l->conn, 0, AMQP_CONNECTION_CLOSE_METHOD, &m);
        a->link = NULL;
        uv_poll_stop(&l->poll);
        uv_close((uv_handle_t *)&l->poll, on_link_closed);
    }
    amqpc_fail_all(a, HG_ERR_UNAVAILABLE);
    uv_handle_t *handles[] = {(uv_handle_t *)&a->retry_timer, (uv_handle_t *)&a->kick_timer,
                              (uv_handle_t *)&a->heartbeat_timer, (uv_handle_t *)&a->close_timer,
                              (uv_handle_t *)&a->rotate_timer, (uv_handle_t *)&a->flush_prepare};
    for (size_t i = 0; i < HG_ARRAY_SIZE(handles); i++)
        if (!uv_is_closing(handles[i]))
            uv_close(handles[i], on_handle_closed);
}

static void on_close_timeout(uv_timer_t *t)
{
    struct hg_amqp *a = HG_CONTAINER_OF(t, struct hg_amqp, close_timer);
    hg_warn(NULL, "amqp close timed out waiting for confirms", NULL);
    shutdown_now(a);
}

static void maybe_finish_close(struct hg_amqp *a)
{
    if (!a->closing)
        return;
    if (a->state == ST_UP) {
        /* Draining: give up the connection once nothing waits for the broker. */
        if (a->inflight.count == 0 && a->pending.count == 0)
            shutdown_now(a);
        return;
    }
    if (a->state != ST_SHUTDOWN || a->handles_open > 0 || a->work_active)
        return;
    void (*done)(void *) = a->done;
    void *done_arg = a->done_arg;
    amqpc_target_free(a->target);
    amqpc_target_free(a->next_target);
    free(a);
    if (done)
        done(done_arg);
}

void hg_amqp_sink_close(struct hg_sink *s, void (*done)(void *arg), void *arg)
{
    struct hg_amqp *a = (struct hg_amqp *)s;
    if (a->closing)
        return;
    a->closing = true;
    a->done = done;
    a->done_arg = arg;
    switch (a->state) {
    case ST_UP:
        /* Never settle on the caller's stack: the drain check runs from the loop. */
        uv_timer_start(&a->close_timer, on_close_timeout, a->close_timeout_ms, 0);
        amqpc_kick(a, 0);
        return;
    case ST_CONNECTING:
        /* The work thread owns the connection; on_connect_done finishes the close. */
        uv_timer_stop(&a->retry_timer);
        return;
    case ST_DOWN:
    case ST_SHUTDOWN:
        shutdown_now(a);
        return;
    }
}

static void sink_close(struct hg_sink *s, void (*done)(void *arg), void *arg)
{
    hg_amqp_sink_close(s, done, arg);
}

static const struct hg_sink_ops amqp_sink_ops = {
    .name = "amqp",
    .publish = amqpc_sink_publish,
    .publish_dead = hg_amqp_publish_dead,
    .ready = sink_ready,
    .close = sink_close,
};

/* ---- open --------------------------------------------------------------------------------- */

int hg_amqp_url_check(const char *url, char *why, size_t wl)
{
    struct amqp_connection_info info;
    if (url == NULL) {
        snprintf(why, wl, "no url");
        return HG_ERR_CONFIG;
    }
    char *copy = hg_xstrdup(url); /* amqp_parse_url writes into its argument */
    int rc = amqp_parse_url(copy, &info);
    if (rc != AMQP_STATUS_OK)
        snprintf(why, wl, "not an amqp:// or amqps:// URL that rabbitmq-c can read "
                          "(amqp[s]://user:password@host:port/vhost; percent-escape reserved characters)");
    else if (info.host == NULL || info.host[0] == '\0')
        snprintf(why, wl, "names no host");
    free(copy);
    return rc == AMQP_STATUS_OK && why[0] == '\0' ? 0 : HG_ERR_CONFIG;
}

void amqpc_target_free(struct amqpc_target *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->n_urls; i++) {
        explicit_bzero(t->urls[i], strlen(t->urls[i])); /* they carry the password */
        free(t->urls[i]);
    }
    free(t->tls_ca);
    free(t->tls_cert);
    free(t->tls_key);
    free(t);
}

static char *dup_or_null(const char *s)
{
    return s && s[0] ? hg_xstrdup(s) : NULL;
}

/* The target of opts, or NULL (invalid: logged, the URL itself never). */
static struct amqpc_target *target_new(const struct hg_amqp_opts *opts)
{
    if (opts->urls == NULL || opts->n_urls == 0 || opts->n_urls > HG_AMQP_MAX_URLS)
        return NULL;
    if ((opts->tls_cert == NULL || !opts->tls_cert[0]) != (opts->tls_key == NULL || !opts->tls_key[0])) {
        hg_error(NULL, "amqp tls_cert and tls_key go together", NULL);
        return NULL;
    }
    for (size_t i = 0; i < opts->n_urls; i++) {
        char why[200] = "";
        if (hg_amqp_url_check(opts->urls[i], why, sizeof why) != 0) {
            char idx[8];
            snprintf(idx, sizeof idx, "%u", (unsigned)i & 0xff);
            hg_error(NULL, "amqp url invalid", "url_index", idx, "reason", why, NULL);
            return NULL;
        }
    }
    struct amqpc_target *t = hg_xcalloc(1, sizeof *t);
    t->n_urls = opts->n_urls;
    for (size_t i = 0; i < opts->n_urls; i++)
        t->urls[i] = hg_xstrdup(opts->urls[i]);
    t->tls_ca = dup_or_null(opts->tls_ca);
    t->tls_cert = dup_or_null(opts->tls_cert);
    t->tls_key = dup_or_null(opts->tls_key);
    t->tls_insecure = opts->tls_insecure;
    for (size_t i = 0; i < t->n_urls && t->tls_insecure; i++)
        if (strncasecmp(t->urls[i], "amqps://", 8) == 0) {
            hg_warn(NULL, "amqp tls_verify = off: the broker's certificate is not checked; anyone on the path can "
                          "pose as the broker and read every event (docs/backend-tls.md)", NULL);
            break;
        }
    return t;
}

static bool str_eq(const char *x, const char *y)
{
    return x == y || (x && y && strcmp(x, y) == 0);
}

static bool target_eq(const struct amqpc_target *x, const struct amqpc_target *y)
{
    if (x->n_urls != y->n_urls || x->tls_insecure != y->tls_insecure || !str_eq(x->tls_ca, y->tls_ca) ||
        !str_eq(x->tls_cert, y->tls_cert) || !str_eq(x->tls_key, y->tls_key))
        return false;
    for (size_t i = 0; i < x->n_urls; i++)
        if (strcmp(x->urls[i], y->urls[i]) != 0)
            return false;
    return true;
}

int hg_amqp_sink_reconfigure(struct hg_sink *s, const struct hg_amqp_opts *opts, bool *changed)
{
    struct hg_amqp *a = (struct hg_amqp *)s;
    *changed = false;
    struct amqpc_target *t = target_new(opts);
    if (t == NULL)
        return HG_ERR_CONFIG;
    /* Compared with what the next connect would use: the last reload's, else the current. */
    if (target_eq(t, a->next_target ? a->next_target : a->target) || a->closing) {
        amqpc_target_free(t);
        return 0;
    }
    *changed = true;
    amqpc_target_free(a->next_target);
    a->next_target = t;
    switch (a->state) {
    case ST_UP:
        if (!a->rotating)
            begin_rotate(a);
        break;
    case ST_DOWN:
        /* Waiting out a backoff: the new settings may be the fix; try them now. */
        a->attempt = 0;
        uv_timer_start(&a->retry_timer, on_retry, 0, 0);
        break;
    case ST_CONNECTING: /* on_connect_done rotates a connection made with the old settings */
    case ST_SHUTDOWN:
        break;
    }
    return 0;
}

int hg_amqp_sink_open(uv_loop_t *loop, const struct hg_amqp_opts *opts, struct hg_sink **out)
{
    if (loop == NULL || opts == NULL || out == NULL)
        return HG_ERR_CONFIG;
    bool quorum = false;
    if (opts->queue_type && strcmp(opts->queue_type, "quorum") == 0)
        quorum = true;
    else if (opts->queue_type && strcmp(opts->queue_type, "classic") != 0)
        return HG_ERR_CONFIG;
    if (opts->max_priority < 0 || opts->max_priority > 255 || opts->queue_version > 2)
        return HG_ERR_CONFIG;
    struct amqpc_target *target = target_new(opts);
    if (target == NULL)
        return HG_ERR_CONFIG;

    struct hg_amqp *a = hg_xcalloc(1, sizeof *a);
    a->sink.ops = &amqp_sink_ops;
    a->loop = loop;
    a->state = ST_DOWN;
    hg_list_init(&a->inflight.entries);
    hg_list_init(&a->pending.entries);
    a->target = target;
    a->quorum = quorum;
    a->max_priority = opts->max_priority;
    a->queue_version = quorum ? 0 : opts->queue_version; /* quorum queues have no versions */
    a->reconnect_min_ms = opts->reconnect_min_ms ? opts->reconnect_min_ms : 100;
    a->reconnect_max_ms = opts->reconnect_max_ms ? opts->reconnect_max_ms : 30000;
    if (a->reconnect_max_ms < a->reconnect_min_ms)
        a->reconnect_max_ms = a->reconnect_min_ms;
    a->connect_timeout_ms = opts->connect_timeout_ms ? opts->connect_timeout_ms : 5000;
    a->heartbeat_s = opts->heartbeat_s ? opts->heartbeat_s : 30;
    a->max_pending = opts->max_pending ? opts->max_pending : 10000;
    a->max_message_bytes = opts->max_message_bytes ? opts->max_message_bytes : 1024 * 1024;
    a->close_timeout_ms = opts->close_timeout_ms ? opts->close_timeout_ms : 2000;
    a->on_confirm = opts->on_confirm;
    a->hook_arg = opts->hook_arg;
    a->stats.url_index = -1;
    a->down_reason = NULL;

    uv_timer_t *timers[] = {&a->retry_timer, &a->kick_timer, &a->heartbeat_timer, &a->close_timer,
                            &a->rotate_timer};
    for (size_t i = 0; i < HG_ARRAY_SIZE(timers); i++) {
        uv_timer_init(loop, timers[i]);
        timers[i]->data = a;
        a->handles_open++;
    }
    uv_prepare_init(loop, &a->flush_prepare);
    a->flush_prepare.data = a;
    a->handles_open++;
    start_connect(a);
    *out = &a->sink;
    return 0;
}

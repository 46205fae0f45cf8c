/*
 * RabbitMQ sink, publish side: the entries (a private copy of each accepted event and the
 * pending / in-flight queues), the publish frames encoded with rabbitmq-c's encoders, and the
 * per-turn flush that writes them with one send() within the send window. Separate from amqp.c
 * because it is the loop's write path only: the read side there settles the entries by tag.
 * See docs/amqp.md.
 */
#include <amqp.h>
#include <errno.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <linux/sockios.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "sink/amqp_internal.h"
#include "providers/provider.h"
#include "core/buf.h"
#include "core/common.h"
#include "core/err.h"
#include "core/log.h"
#include "core/time.h"

#define FLUSH_RETRY_MS     1
/* The link's send buffer is given back after a flush when one large message grew it past this. */
#define OUT_KEEP_BYTES     (1024 * 1024)

/* ---- entries ---------------------------------------------------------------------------- */

static void list_push(struct entry_list *l, struct entry *e)
{
    hg_list_insert_tail(&l->entries, &e->link);
    l->count++;
}

void amqpc_list_remove(struct entry_list *l, struct entry *e)
{
    hg_list_unlink(&e->link);
    l->count--;
}

/* Append s (may be NULL) to the entry's data area; returns where it landed or NULL. */
static const char *entry_put(char **at, const char *s, size_t n)
{
    char *p = *at;
    if (s == NULL)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    *at = p + n + 1;
    return p;
}

static size_t slen(const char *s)
{
    return s ? strlen(s) : 0;
}

/* A topic binding as hookgate writes them: "word.#" (the word, then anything) or an exact key. */
static bool binding_matches(const char *pattern, const char *key)
{
    size_t n = strlen(pattern);
    if (n >= 2 && strcmp(pattern + n - 2, ".#") == 0)
        return strncmp(key, pattern, n - 1) == 0 || (strlen(key) == n - 2 && strncmp(key, pattern, n - 2) == 0);
    return strcmp(pattern, key) == 0;
}

/* The provider's queue an event with this routing key lands in; the provider's last queue takes
 * what no binding names. NULL for a provider without a topology. */
static const struct amqpc_queue *queue_of(const char *provider, const char *routing_key)
{
    const struct amqpc_queue *queues, *last = NULL;
    size_t nq = amqpc_queues(&queues);
    const struct hg_provider *p = hg_provider_find(provider);
    if (p == NULL || routing_key == NULL)
        return NULL;
    for (size_t i = 0; i < nq; i++) {
        if (strcmp(queues[i].exchange, p->topology->exchange) != 0)
            continue;
        last = &queues[i];
        for (const char *const *b = queues[i].bindings; *b; b++)
            if (binding_matches(*b, routing_key))
                return &queues[i];
    }
    return last;
}

const char *hg_amqp_queue_for(const char *provider, const char *routing_key)
{
    const struct amqpc_queue *q = queue_of(provider, routing_key);
    return q ? q->name : NULL;
}

static struct entry *entry_new(const struct hg_event *ev, bool dead, const char *reason)
{
    char dlq_key[64];
    const char *rk = ev->routing_key;
    size_t n_rk;
    const struct amqpc_queue *q = queue_of(ev->provider, ev->routing_key);
    if (q == NULL)
        return NULL; /* no such provider: refused as invalid */
    if (dead) {
        /* The dead-letter routing key names the queue the record would have gone to. */
        int n = snprintf(dlq_key, sizeof dlq_key, "%s.dlq", q->name);
        if (n < 0 || (size_t)n >= sizeof dlq_key)
            return NULL;
        rk = dlq_key;
    }
    n_rk = strlen(rk);
    size_t n_id = slen(ev->event_id), n_type = slen(ev->type), n_tenant = slen(ev->tenant);
    size_t n_prov = slen(ev->provider), n_corr = slen(ev->correlation_id);
    size_t n_pc = slen(ev->priority_class), n_reason = slen(reason);
    size_t total = n_id + n_rk + n_type + n_tenant + n_prov + n_corr + n_pc + n_reason +
                   ev->json_len + 9;
    struct entry *e = hg_xcalloc(1, sizeof *e + total);
    char *at = e->data;
    e->event_id = entry_put(&at, ev->event_id, n_id);
    e->routing_key = entry_put(&at, rk, n_rk);
    e->type = entry_put(&at, ev->type, n_type);
    e->tenant = entry_put(&at, ev->tenant, n_tenant);
    e->provider = entry_put(&at, ev->provider, n_prov);
    e->correlation_id = entry_put(&at, ev->correlation_id, n_corr);
    e->priority_class = entry_put(&at, ev->priority_class, n_pc);
    e->reason = entry_put(&at, reason, n_reason);
    e->json = entry_put(&at, ev->json, ev->json_len);
    e->json_len = ev->json_len;
    e->timestamp_s = ev->timestamp_s;
    e->priority = ev->priority < 0 ? 0 : ev->priority > 9 ? 9 : ev->priority;
    e->dead = dead;
    e->exchange = dead ? q->dlx : q->exchange;
    /* Three frames of 8 bytes framing each, the fixed method/header fields, every string (header
     * names included) and one frame per FRAME_MAX of body. Generous on purpose. */
    e->wire = 512 + total + 8 * (ev->json_len / (FRAME_MAX - 8) + 1);
    return e;
}

/* Run the callback and the hook for a settled entry, then free it. */
void amqpc_entry_finish(struct hg_amqp *a, struct entry *e, int status)
{
    uint64_t latency = e->sent_ns ? hg_time_mono_ns() - e->sent_ns : 0;
    if (status == 0)
        a->stats.confirmed++;
    else if (status == HG_ERR_UNAVAILABLE)
        a->stats.failed++;
    e->cb(e->arg, status);
    if (a->on_confirm)
        a->on_confirm(a->hook_arg, status, latency);
    free(e);
}

/* Settle every entry of both queues with `status`. The lists are detached first because a
 * callback may publish again (and be refused) or call close. */
void amqpc_fail_all(struct hg_amqp *a, int status)
{
    struct hg_list lists[2];
    hg_list_init(&lists[0]);
    hg_list_init(&lists[1]);
    hg_list_move(&a->inflight.entries, &lists[0]);
    hg_list_move(&a->pending.entries, &lists[1]);
    a->inflight.count = a->pending.count = 0;
    for (size_t i = 0; i < 2; i++) {
        struct hg_list *first;
        while ((first = hg_list_first(&lists[i])) != NULL) {
            hg_list_unlink(first);
            amqpc_entry_finish(a, hg_list_entry(first, struct entry, link), status);
        }
    }
}

/* ---- publish ------------------------------------------------------------------------------ */

/*
 * The sink writes its publishes itself rather than through amqp_basic_publish, which sends the
 * method, header and body frames with one send() each: a loop turn's publishes are encoded into
 * the link's buffer with rabbitmq-c's own encoders and leave in one send(). The frames are the
 * ones amqp_basic_publish would write (test_encode_matches_rabbitmq_c holds them side by side):
 * type (1 method, 2 header, 3 body), channel, payload size, payload, FRAME_END.
 */
#define FRAME_HEADER_SIZE  7       /* type (1) + channel (2) + payload size (4) */
#define FRAME_END_SIZE     1
#define FRAME_MIN          4096    /* the smallest frame_max AMQP 0-9-1 allows */

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    put_u16(p, (uint16_t)(v >> 16));
    put_u16(p + 2, (uint16_t)v);
}

static void put_u64(uint8_t *p, uint64_t v)
{
    put_u32(p, (uint32_t)(v >> 32));
    put_u32(p + 4, (uint32_t)v);
}

/* Type, channel and payload size before a payload of n bytes at p, FRAME_END after it. */
static void frame_wrap(uint8_t *p, uint8_t type, size_t n)
{
    p[0] = type;
    put_u16(p + 1, CHANNEL);
    put_u32(p + 3, (uint32_t)n);
    p[FRAME_HEADER_SIZE + n] = AMQP_FRAME_END;
}

/* Append the frames of one publish of e to out; out is unchanged on failure. rabbitmq-c encodes a
 * method or header frame into a frame_max buffer, so the same room is given here: a message whose
 * properties do not fit a frame fails here as it failed there. */
static int encode_entry(const struct entry *e, size_t frame_max, struct hg_buf *out)
{
    size_t start = out->len;
    size_t room = frame_max - FRAME_HEADER_SIZE - FRAME_END_SIZE;
    int rc = HG_ERR_TOO_BIG;

    amqp_basic_publish_t m = {
        .ticket = 0,
        .exchange = amqp_cstring_bytes(e->exchange),
        .routing_key = amqp_cstring_bytes(e->routing_key),
        .mandatory = 1,
        .immediate = 0,
    };
    uint8_t *p = (uint8_t *)hg_buf_reserve(out, frame_max);
    if (p == NULL)
        goto fail;
    /* Method payload: class and method id as one 32-bit number, then the arguments. */
    put_u32(p + FRAME_HEADER_SIZE, AMQP_BASIC_PUBLISH_METHOD);
    amqp_bytes_t args = {.len = room - 4, .bytes = p + FRAME_HEADER_SIZE + 4};
    int n = amqp_encode_method(AMQP_BASIC_PUBLISH_METHOD, &m, args);
    if (n < 0)
        goto fail;
    frame_wrap(p, AMQP_FRAME_METHOD, 4 + (size_t)n);
    out->len += FRAME_HEADER_SIZE + 4 + (size_t)n + FRAME_END_SIZE;

    amqp_table_entry_t hdr[5];
    int nh = 0;
    if (e->tenant)
        hdr[nh++] = amqpc_utf8_entry("x-tenant-id", e->tenant);
    if (e->provider)
        hdr[nh++] = amqpc_utf8_entry("x-provider", e->provider);
    if (e->type)
        hdr[nh++] = amqpc_utf8_entry("x-event-type", e->type);
    if (e->priority_class)
        hdr[nh++] = amqpc_utf8_entry("x-priority-class", e->priority_class);
    if (e->reason)
        hdr[nh++] = amqpc_utf8_entry("x-death-reason", e->reason);
    amqp_basic_properties_t props;
    memset(&props, 0, sizeof props);
    props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
                   AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_TIMESTAMP_FLAG |
                   AMQP_BASIC_PRIORITY_FLAG | AMQP_BASIC_HEADERS_FLAG;
    props.content_type = amqp_cstring_bytes("application/json");
    props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    props.message_id = amqp_cstring_bytes(e->event_id);
    props.timestamp = e->timestamp_s ? e->timestamp_s : hg_time_now_ns() / 1000000000u;
    props.priority = (uint8_t)e->priority;
    props.headers.num_entries = nh;
    props.headers.entries = hdr;
    if (e->correlation_id) {
        props._flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
        props.correlation_id = amqp_cstring_bytes(e->correlation_id);
    }
    p = (uint8_t *)hg_buf_reserve(out, frame_max);
    if (p == NULL)
        goto fail;
    /* Header payload: class, weight 0, body size, then the property flags and values. */
    uint8_t *h = p + FRAME_HEADER_SIZE;
    put_u16(h, AMQP_BASIC_CLASS);
    put_u16(h + 2, 0);
    put_u64(h + 4, e->json_len);
    amqp_bytes_t fields = {.len = room - 12, .bytes = h + 12};
    n = amqp_encode_properties(AMQP_BASIC_CLASS, &props, fields);
    if (n < 0)
        goto fail;
    frame_wrap(p, AMQP_FRAME_HEADER, 12 + (size_t)n);
    out->len += FRAME_HEADER_SIZE + 12 + (size_t)n + FRAME_END_SIZE;

    for (size_t off = 0; off < e->json_len;) {
        size_t chunk = HG_MIN(e->json_len - off, room);
        p = (uint8_t *)hg_buf_reserve(out, FRAME_HEADER_SIZE + chunk + FRAME_END_SIZE);
        if (p == NULL)
            goto fail;
        memcpy(p + FRAME_HEADER_SIZE, e->json + off, chunk);
        frame_wrap(p, AMQP_FRAME_BODY, chunk);
        out->len += FRAME_HEADER_SIZE + chunk + FRAME_END_SIZE;
        off += chunk;
    }
    return 0;
fail:
    out->len = start;
    return rc;
}

/* What publish refuses at once for the event's fields alone. */
static int check_event(const struct hg_event *ev)
{
    if (ev == NULL || ev->event_id == NULL || ev->routing_key == NULL ||
        (ev->json == NULL && ev->json_len > 0) || strlen(ev->event_id) > 255 ||
        strlen(ev->routing_key) > 255)
        return HG_ERR_INVALID;
    return 0;
}

int hg_amqp_encode_publish(const struct hg_event *ev, const char *dead_reason, size_t frame_max,
                           struct hg_buf *out)
{
    if (check_event(ev) != 0 || (dead_reason && strlen(dead_reason) > 200) ||
        frame_max < FRAME_MIN || frame_max > UINT32_MAX)
        return HG_ERR_INVALID;
    struct entry *e = entry_new(ev, dead_reason != NULL, dead_reason);
    if (e == NULL)
        return HG_ERR_INVALID;
    int rc = encode_entry(e, frame_max, out);
    free(e);
    return rc;
}

/*
 * On a TLS link the turn's frames go to OpenSSL, which seals them into records of up to 16 KiB
 * (about 22 bytes more each: within the margin SO_SNDBUF has over SEND_WINDOW) and writes them to
 * the socket. rabbitmq-c turns SSL_MODE_ENABLE_PARTIAL_WRITE on, so one SSL_write may stop after
 * a record: call again with the rest until all is written. WANT_WRITE cannot happen under the
 * window; if it did, the stream is given up like a short send().
 */
ssize_t amqpc_link_write(struct link *l, const void *buf, size_t n, const char **why)
{
    ssize_t w;
    if (l->ssl) {
        size_t off = 0;
        while (off < n) {
            ERR_clear_error();
            int rc = SSL_write(l->ssl, (const char *)buf + off, (int)HG_MIN(n - off, (size_t)INT_MAX));
            if (rc <= 0) {
                int err = SSL_get_error(l->ssl, rc);
                *why = err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ ? "tls: socket full"
                       : err == SSL_ERROR_SYSCALL                              ? strerror(errno)
                                                                               : "tls write failed";
                return -1;
            }
            off += (size_t)rc;
        }
        return (ssize_t)n;
    }
    do
        w = send(l->fd, buf, n, MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
    if (w >= 0 && (size_t)w == n)
        return w;
    *why = w < 0 ? strerror(errno) : "short write";
    return -1;
}

/*
 * Write what fits of `pending` in one send(): one SIOCOUTQ read, then entries in order while the
 * send queue plus the bytes encoded so far plus the entry's estimate stay within SEND_WINDOW (an
 * empty queue takes any one message: SO_SNDBUF covers SEND_WINDOW + the largest body) and the
 * in-flight count stays under max_pending. So send() cannot meet EAGAIN (see SEND_WINDOW): the
 * frames go out whole, and rabbitmq-c's own writes on this socket never land inside one. What
 * does not fit waits; the kick timer looks again in FLUSH_RETRY_MS.
 */
static void flush_pending(struct hg_amqp *a)
{
    struct link *l = a->link;
    /* Rotating (a reload): what waits is sent on the next connection, not written on this one. */
    if (hg_list_empty(&a->pending.entries) || l == NULL || a->broken || a->rotating)
        return;
    int outq = 0;
    if (ioctl(l->fd, SIOCOUTQ, &outq) != 0 || outq < 0) {
        amqpc_kick(a, FLUSH_RETRY_MS);
        return;
    }
    size_t frame_max = (size_t)amqp_get_frame_max(l->conn);
    size_t n = 0;
    hg_buf_reset(&l->out);
    struct hg_list *pos;
    HG_LIST_FOREACH(pos, &a->pending.entries) {
        struct entry *e = hg_list_entry(pos, struct entry, link);
        if (a->inflight.count + n >= a->max_pending)
            break;
        bool alone = outq == 0 && l->out.len == 0;
        if (!alone && (size_t)outq + l->out.len + e->wire > SEND_WINDOW)
            break;
        int rc = encode_entry(e, frame_max, &l->out);
        if (rc != 0 && l->out.len > 0)
            break; /* past the buffer's cap: send what is encoded, this one goes next time */
        if (rc != 0) {
            /* amqp_basic_publish failed on such a message too, and the link was given up. */
            hg_warn(NULL, "amqp publish encode failed", "error", hg_strerror(rc), "event_id",
                    e->event_id, NULL);
            a->broken = true;
            amqpc_kick(a, 0);
            return;
        }
        n++;
    }
    if (n > 0) {
        const char *why = NULL;
        ssize_t w = amqpc_link_write(l, l->out.data, l->out.len, &why);
        if (w < 0) {
            /* A short write leaves a frame cut off: the stream is lost. Every entry stays pending
             * and settles UNAVAILABLE with the link, as after a failed amqp_basic_publish. */
            hg_warn(NULL, "amqp publish write failed", "error", why, NULL);
            a->broken = true;
            amqpc_kick(a, 0);
            return;
        }
        /* The broker numbers publishes in the order it reads them: the buffer's order. */
        uint64_t now = hg_time_mono_ns();
        for (size_t i = 0; i < n; i++) {
            struct entry *e = amqpc_list_first(&a->pending);
            amqpc_list_remove(&a->pending, e);
            e->tag = ++a->next_tag;
            e->sent_ns = now;
            list_push(&a->inflight, e);
            a->stats.published++;
        }
    }
    if (l->out.alloc > OUT_KEEP_BYTES) {
        /* One large message grew the buffer: give it back instead of holding it per worker. */
        size_t cap = l->out.max;
        hg_buf_free(&l->out);
        hg_buf_init(&l->out, cap);
    }
    if (!hg_list_empty(&a->pending.entries))
        amqpc_kick(a, FLUSH_RETRY_MS);
}

/* Runs before the loop blocks for I/O while publishes wait: see publish_common(). */
static void on_flush_prepare(uv_prepare_t *h)
{
    struct hg_amqp *a = HG_CONTAINER_OF(h, struct hg_amqp, flush_prepare);
    flush_pending(a);
    if (hg_list_empty(&a->pending.entries))
        uv_prepare_stop(h);
}

static int publish_common(struct hg_amqp *a, const struct hg_event *ev, bool dead,
                          const char *reason, hg_sink_cb cb, void *arg)
{
    if (a->closing)
        return HG_ERR_CLOSED;
    if (cb == NULL || check_event(ev) != 0)
        return HG_ERR_INVALID;
    if (ev->json_len > a->max_message_bytes)
        return HG_ERR_TOO_BIG;
    if (a->state != ST_UP || a->link == NULL || a->broken || a->rotating)
        return HG_ERR_UNAVAILABLE;
    if (a->pending.count >= a->max_pending)
        return HG_ERR_UNAVAILABLE;
    struct entry *e = entry_new(ev, dead, reason);
    if (e == NULL)
        return HG_ERR_INVALID;
    e->cb = cb;
    e->arg = arg;
    /*
     * Nothing is written here: the prepare handle flushes every publish of this loop turn in one
     * send() just before the loop next blocks for I/O. A prepare rather than a check handle:
     * check runs after the poll, so a publish made from a timer (the drain's tick) would wait
     * for the poll to wake up; prepare runs before every poll, whatever phase the publish came
     * from. It is active only while publishes wait.
     */
    if (hg_list_empty(&a->pending.entries))
        uv_prepare_start(&a->flush_prepare, on_flush_prepare);
    list_push(&a->pending, e);
    return 0;
}

int amqpc_sink_publish(struct hg_sink *s, const struct hg_event *ev, hg_sink_cb cb, void *arg)
{
    return publish_common((struct hg_amqp *)s, ev, false, NULL, cb, arg);
}

int hg_amqp_publish_dead(struct hg_sink *s, const struct hg_event *ev, const char *reason,
                         hg_sink_cb cb, void *arg)
{
    if (reason == NULL || strlen(reason) > 200)
        return HG_ERR_INVALID;
    return publish_common((struct hg_amqp *)s, ev, true, reason, cb, arg);
}


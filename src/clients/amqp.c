/*
 * RabbitMQ sink over rabbitmq-c, driven by a libuv loop. Connect, login and topology run on a
 * uv_queue_work thread (rabbitmq-c's RPCs are blocking); afterwards the loop owns the connection:
 * uv_poll for reads, zero-timeout frame reads, and publishes encoded here (rabbitmq-c's encoders)
 * and written once per loop turn with one send(), admitted only while the kernel send buffer has
 * room so neither we nor rabbitmq-c ever wait for the socket. See docs/amqp.md.
 *
 * Sections, in order: entries (a publish and its confirm queue); connect (work thread: TCP,
 * login, topology, confirm mode); loop side (frames, confirms, returns, heartbeats, reconnect);
 * publish (frame encoding, the per-turn flush); close; open.
 */
#include "clients/amqp.h"

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "core/buf.h"
#include "core/common.h"
#include "core/err.h"
#include "core/log.h"
#include "core/time.h"
#include "core/uuid.h"

#define CHANNEL            1
#define FRAME_MAX          131072
#define FRAMES_PER_TURN    256     /* frames read per loop turn before yielding */
/*
 * Bytes we let sit unacknowledged in the kernel send queue (SIOCOUTQ). SO_SNDBUF is set to
 * several times this (plus the largest message), so a write admitted under it never meets EAGAIN
 * even with the kernel's per-segment overhead, and rabbitmq-c never reaches its internal poll().
 */
#define SEND_WINDOW        (256 * 1024)
#define FLUSH_RETRY_MS     1
/* The link's send buffer is given back after a flush when one large message grew it past this. */
#define OUT_KEEP_BYTES     (1024 * 1024)
#define REFUSAL_MAX        120     /* bytes kept of a broker's refusal text */

enum amqp_state {
    ST_DOWN,       /* not connected; retry_timer will start the next attempt */
    ST_CONNECTING, /* a work thread owns work.conn; the loop must not touch it */
    ST_UP,         /* the loop owns link->conn; publishes go out */
    ST_SHUTDOWN,   /* close() gave up on the connection; handles are closing */
};

/* One accepted publish: a private copy of the event, then its place in the confirm queue. */
struct entry {
    struct entry *prev, *next;
    uint64_t tag;       /* delivery tag on CHANNEL, 0 until written */
    uint64_t sent_ns;   /* monotonic, when written */
    hg_sink_cb cb;
    void *arg;
    bool dead;          /* goes to the DLX */
    bool returned;      /* basic.return seen: the ack that follows is not a success */
    size_t wire;        /* estimated bytes on the wire */
    const char *event_id, *routing_key, *type, *tenant, *provider, *correlation_id;
    const char *priority_class, *reason, *json;
    size_t json_len;
    uint64_t timestamp_s;
    int priority;
    char data[];
};

struct entry_list {
    struct entry *head, *tail;
    size_t count;
};

/* One TCP connection as handed to the loop. Freed in its poll handle's close callback. */
struct link {
    struct hg_amqp *owner;
    amqp_connection_state_t conn;
    uv_poll_t poll;
    int fd;
    int url_index;
    struct hg_buf out;            /* the frames of one flush, written with one send() */
};

/* The live queues; each has a DLQ "<name>.dlq". */
static const char *const queue_names[] = {HG_AMQP_QUEUE_MESSAGES, HG_AMQP_QUEUE_STATUSES,
                                          HG_AMQP_QUEUE_SYSTEM};
#define N_QUEUES HG_ARRAY_SIZE(queue_names)

struct connect_work {
    uv_work_t req;
    struct hg_amqp *owner;
    amqp_connection_state_t conn; /* out: logged in, topology declared, confirm mode on */
    int url_index;
    char error[160];              /* out: why the last URL failed */
    unsigned no_priority;         /* out: bit i = queue_names[i] kept without x-max-priority */
    unsigned no_version;          /* out: bit i = queue_names[i], bit N_QUEUES + i = its DLQ, kept
                                     without x-queue-version */
    char priority_refusal[N_QUEUES][REFUSAL_MAX];    /* out: the broker's text, per bit */
    char version_refusal[2 * N_QUEUES][REFUSAL_MAX]; /* out: the same for x-queue-version */
};

struct hg_amqp {
    struct hg_sink sink;          /* first: the sink ops cast back */
    uv_loop_t *loop;
    enum amqp_state state;
    char *urls[HG_AMQP_MAX_URLS];
    size_t n_urls;
    bool quorum;
    int max_priority;
    unsigned queue_version;       /* 0 for quorum */
    unsigned reconnect_min_ms, reconnect_max_ms, connect_timeout_ms, heartbeat_s;
    unsigned close_timeout_ms;
    size_t max_pending, max_message_bytes;
    hg_amqp_confirm_hook on_confirm;
    void *hook_arg;

    struct link *link;            /* when ST_UP */
    struct connect_work work;
    bool work_active;
    unsigned attempt;             /* failed attempts since the last success */
    const char *down_reason;      /* static, for ready() */
    bool broken;                  /* a write failed: tear down on the next kick */
    uint64_t last_rx_ns;          /* monotonic, last time the socket was readable */
    uint64_t next_tag;
    struct entry_list inflight;   /* written, in tag order */
    struct entry_list pending;    /* accepted, waiting for send room */
    struct {
        bool active;              /* between basic.return and the end of its body */
        uint64_t body_left;
    } ret;

    uv_timer_t retry_timer;       /* backoff before the next connect */
    uv_timer_t kick_timer;        /* deferred work: teardown, more frames, pending flush */
    uv_timer_t heartbeat_timer;   /* lets rabbitmq-c send and check heartbeats */
    uv_timer_t close_timer;       /* bounds how long close() waits for confirms */
    uv_prepare_t flush_prepare;   /* active while `pending` is not empty: one send() per turn */
    int handles_open;
    bool closing;
    void (*done)(void *arg);
    void *done_arg;

    struct hg_amqp_stats stats;
};

static void start_connect(struct hg_amqp *a);
static void pump(struct hg_amqp *a);
static void maybe_finish_close(struct hg_amqp *a);
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

/* ---- entries ---------------------------------------------------------------------------- */

static void list_push(struct entry_list *l, struct entry *e)
{
    e->next = NULL;
    e->prev = l->tail;
    if (l->tail)
        l->tail->next = e;
    else
        l->head = e;
    l->tail = e;
    l->count++;
}

static void list_remove(struct entry_list *l, struct entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        l->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        l->tail = e->prev;
    e->prev = e->next = NULL;
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

const char *hg_amqp_queue_for(const char *routing_key)
{
    if (routing_key && strncmp(routing_key, "message.", 8) == 0)
        return HG_AMQP_QUEUE_MESSAGES;
    if (routing_key && strncmp(routing_key, "status.", 7) == 0)
        return HG_AMQP_QUEUE_STATUSES;
    return HG_AMQP_QUEUE_SYSTEM;
}

static struct entry *entry_new(const struct hg_event *ev, bool dead, const char *reason)
{
    char dlq_key[64];
    const char *rk = ev->routing_key;
    size_t n_rk;
    if (dead) {
        /* The dead-letter routing key names the queue the record would have gone to. */
        int n = snprintf(dlq_key, sizeof dlq_key, "%s.dlq", hg_amqp_queue_for(ev->routing_key));
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
    /* Three frames of 8 bytes framing each, the fixed method/header fields, every string (header
     * names included) and one frame per FRAME_MAX of body. Generous on purpose. */
    e->wire = 512 + total + 8 * (ev->json_len / (FRAME_MAX - 8) + 1);
    return e;
}

/* Run the callback and the hook for a settled entry, then free it. */
static void entry_finish(struct hg_amqp *a, struct entry *e, int status)
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
static void fail_all(struct hg_amqp *a, int status)
{
    struct entry_list lists[2] = {a->inflight, a->pending};
    memset(&a->inflight, 0, sizeof a->inflight);
    memset(&a->pending, 0, sizeof a->pending);
    for (size_t i = 0; i < 2; i++) {
        struct entry *e = lists[i].head;
        while (e) {
            struct entry *next = e->next;
            entry_finish(a, e, status);
            e = next;
        }
    }
}

/* ---- connect (work thread) ---------------------------------------------------------------- */

static void set_error(struct connect_work *w, const char *what, const char *detail)
{
    snprintf(w->error, sizeof w->error, "%s: %s", what, detail ? detail : "?");
}

/* 0 when the RPC reply r is a success; else fills w->error. Runs on the work thread. */
static int reply_check(amqp_rpc_reply_t r, struct connect_work *w, const char *what)
{
    char text[120];
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return 0;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        set_error(w, what, amqp_error_string2(r.library_error));
        return -1;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD || r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_bytes_t t;
            uint16_t code;
            if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
                amqp_channel_close_t *m = r.reply.decoded;
                t = m->reply_text;
                code = m->reply_code;
            } else {
                amqp_connection_close_t *m = r.reply.decoded;
                t = m->reply_text;
                code = m->reply_code;
            }
            snprintf(text, sizeof text, "%u %.*s", code, (int)HG_MIN(t.len, 100), (char *)t.bytes);
            set_error(w, what, text);
        } else {
            set_error(w, what, "unexpected server reply");
        }
        return -1;
    default:
        set_error(w, what, "no reply");
        return -1;
    }
}

/* Same for the last RPC on c (amqp_login is the one call that does not record it there). */
static int rpc_check(amqp_connection_state_t c, struct connect_work *w, const char *what)
{
    return reply_check(amqp_get_rpc_reply(c), w, what);
}

static amqp_table_entry_t utf8_entry(const char *key, const char *value)
{
    amqp_table_entry_t t;
    t.key = amqp_cstring_bytes(key);
    t.value.kind = AMQP_FIELD_KIND_UTF8;
    t.value.value.bytes = amqp_cstring_bytes(value);
    return t;
}

/* The broker's reply code when r is a channel.close, else 0. */
static unsigned channel_close_code(amqp_rpc_reply_t r)
{
    if (r.reply_type != AMQP_RESPONSE_SERVER_EXCEPTION || r.reply.id != AMQP_CHANNEL_CLOSE_METHOD)
        return 0;
    return ((amqp_channel_close_t *)r.reply.decoded)->reply_code;
}

/* The optional arguments of one queue.declare; 0 = not sent. */
struct queue_args {
    int priority;     /* x-max-priority */
    unsigned version; /* x-queue-version */
};

/* Send one queue.declare; the arguments are the DLX pair (live queues), x-queue-type = quorum, and
 * those of `opt` that are set. */
static amqp_rpc_reply_t queue_declare(struct hg_amqp *a, amqp_connection_state_t c, const char *queue,
                                      bool dlq, const char *dlq_key, const struct queue_args *opt)
{
    amqp_table_entry_t args[5];
    int n = 0;
    if (!dlq) {
        args[n++] = utf8_entry("x-dead-letter-exchange", HG_AMQP_DLX);
        args[n++] = utf8_entry("x-dead-letter-routing-key", dlq_key);
    }
    /* Only quorum is spelled out: an explicit "classic" can count as inequivalent against a queue
     * declared earlier without the argument. */
    if (a->quorum)
        args[n++] = utf8_entry("x-queue-type", "quorum");
    if (opt->priority > 0) {
        args[n].key = amqp_cstring_bytes("x-max-priority");
        args[n].value.kind = AMQP_FIELD_KIND_I32;
        args[n].value.value.i32 = opt->priority;
        n++;
    }
    if (opt->version > 0) {
        args[n].key = amqp_cstring_bytes("x-queue-version");
        args[n].value.kind = AMQP_FIELD_KIND_I32;
        args[n].value.value.i32 = (int32_t)opt->version;
        n++;
    }
    amqp_table_t table = {.num_entries = n, .entries = args};
    amqp_queue_declare(c, CHANNEL, amqp_cstring_bytes(queue), 0, 1, 0, 0, table);
    return amqp_get_rpc_reply(c);
}

/* After the broker closed CHANNEL with channel.close: acknowledge it and open the channel again. */
static int reopen_channel(amqp_connection_state_t c, struct connect_work *w)
{
    amqp_channel_close_ok_t ok = {0};
    int rc = amqp_send_method(c, CHANNEL, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
    if (rc != AMQP_STATUS_OK) {
        set_error(w, "channel close-ok", amqp_error_string2(rc));
        return -1;
    }
    amqp_channel_open(c, CHANNEL);
    return rpc_check(c, w, "reopen channel");
}

/* The first set after tries[i] that is not a repeat of an earlier one (dropping an argument the
 * queue does not ask for repeats a set); n when none is left. */
static size_t next_try(const struct queue_args *tries, size_t n, size_t i)
{
    for (size_t k = i + 1; k < n; k++) {
        bool repeat = false;
        for (size_t j = 0; j < k && !repeat; j++)
            repeat = tries[j].priority == tries[k].priority && tries[j].version == tries[k].version;
        if (!repeat)
            return k;
    }
    return n;
}

/* Of the broker's refusals, the first that names `arg` (it names the first argument that
 * differs), else the first. */
static const char *refusal_naming(char refusals[][REFUSAL_MAX], size_t n, const char *arg)
{
    for (size_t i = 0; i < n; i++)
        if (strstr(refusals[i], arg))
            return refusals[i];
    return refusals[0];
}

/*
 * Declare live queue queue_names[qi] (or its DLQ). RabbitMQ compares x-max-priority and
 * x-queue-version with those of an existing queue, refuses any difference (also present against
 * absent) with 406 PRECONDITION_FAILED and closes the channel; it cannot add either argument to
 * an existing queue. Queues an older hookgate declared lack them. So after a 406: close-ok,
 * reopen the channel and declare again with the next set of arguments, most wanted first: both,
 * priority only, version only, neither. Every other argument is in each set, so it is still
 * checked. When a reduced set passes, the queue is used as it is and w->no_priority /
 * w->no_version record it for a warning on the loop. A queue with another value of either
 * argument fails every set: the operator must migrate it (docs/amqp.md).
 */
static int declare_queue(struct hg_amqp *a, amqp_connection_state_t c, struct connect_work *w, size_t qi,
                         bool dlq)
{
    const char *name = queue_names[qi];
    const char *what = dlq ? "declare dead-letter queue" : "declare queue";
    const int priority = dlq || a->quorum ? 0 : a->max_priority;
    const unsigned version = a->queue_version;
    const struct queue_args tries[] = {{priority, version}, {priority, 0}, {0, version}, {0, 0}};
    char refusals[HG_ARRAY_SIZE(tries) - 1][REFUSAL_MAX];
    size_t n_refusals = 0;
    char dlq_key[64];
    snprintf(dlq_key, sizeof dlq_key, "%s.dlq", name);

    size_t i = 0;
    amqp_rpc_reply_t r;
    for (;;) {
        r = queue_declare(a, c, dlq ? dlq_key : name, dlq, dlq_key, &tries[i]);
        size_t next = next_try(tries, HG_ARRAY_SIZE(tries), i);
        if (next == HG_ARRAY_SIZE(tries) || channel_close_code(r) != AMQP_PRECONDITION_FAILED)
            break;
        /* Keep the broker's text before the next call reuses the decoding pool. */
        amqp_bytes_t t = ((amqp_channel_close_t *)r.reply.decoded)->reply_text;
        snprintf(refusals[n_refusals], sizeof refusals[0], "%.*s",
                 (int)HG_MIN(t.len, sizeof refusals[0] - 1), (char *)t.bytes);
        n_refusals++;
        if (reopen_channel(c, w) != 0)
            return -1;
        i = next;
    }
    if (reply_check(r, w, what) != 0) {
        /* Every set was refused: the first refusal, against the arguments asked for, names what
         * differs (a later one may only name the argument that set left out). */
        if (n_refusals > 0 && channel_close_code(r) == AMQP_PRECONDITION_FAILED) {
            char text[REFUSAL_MAX + 8];
            snprintf(text, sizeof text, "%u %s", AMQP_PRECONDITION_FAILED, refusals[0]);
            set_error(w, what, text);
        }
        return -1;
    }
    if (tries[i].priority != priority) {
        memcpy(w->priority_refusal[qi], refusal_naming(refusals, n_refusals, "x-max-priority"), REFUSAL_MAX);
        w->no_priority |= 1u << qi;
    }
    if (tries[i].version != version) {
        size_t bit = dlq ? N_QUEUES + qi : qi;
        memcpy(w->version_refusal[bit], refusal_naming(refusals, n_refusals, "x-queue-version"), REFUSAL_MAX);
        w->no_version |= 1u << bit;
    }
    return 0;
}

static int bind_queue(amqp_connection_state_t c, struct connect_work *w, const char *queue,
                      const char *exchange, const char *key)
{
    amqp_queue_bind(c, CHANNEL, amqp_cstring_bytes(queue), amqp_cstring_bytes(exchange),
                    amqp_cstring_bytes(key), amqp_empty_table);
    return rpc_check(c, w, "bind queue");
}

static int declare_topology(struct hg_amqp *a, amqp_connection_state_t c, struct connect_work *w)
{
    static const char *const bindings[][2] = {
        {HG_AMQP_QUEUE_MESSAGES, "message.#"},
        {HG_AMQP_QUEUE_STATUSES, "status.#"},
        {HG_AMQP_QUEUE_SYSTEM, "error.#"},
        {HG_AMQP_QUEUE_SYSTEM, "system.#"},
    };
    const char *exchanges[] = {HG_AMQP_EXCHANGE, HG_AMQP_DLX};
    for (size_t i = 0; i < HG_ARRAY_SIZE(exchanges); i++) {
        amqp_exchange_declare(c, CHANNEL, amqp_cstring_bytes(exchanges[i]),
                              amqp_cstring_bytes("topic"), 0, 1, 0, 0, amqp_empty_table);
        if (rpc_check(c, w, "declare exchange") != 0)
            return -1;
    }
    for (size_t i = 0; i < HG_ARRAY_SIZE(queue_names); i++) {
        char dlq_key[64];
        snprintf(dlq_key, sizeof dlq_key, "%s.dlq", queue_names[i]);
        if (declare_queue(a, c, w, i, false) != 0 ||
            declare_queue(a, c, w, i, true) != 0 ||
            bind_queue(c, w, dlq_key, HG_AMQP_DLX, dlq_key) != 0)
            return -1;
    }
    for (size_t i = 0; i < HG_ARRAY_SIZE(bindings); i++)
        if (bind_queue(c, w, bindings[i][0], HG_AMQP_EXCHANGE, bindings[i][1]) != 0)
            return -1;
    return 0;
}

/* One full connect to urls[i]: TCP, login, channel, topology, confirm mode. Blocking, bounded
 * by connect_timeout_ms per step. Returns the connection or NULL with w->error set. */
static amqp_connection_state_t connect_one(struct hg_amqp *a, struct connect_work *w, size_t i)
{
    struct amqp_connection_info info;
    char *url = hg_xstrdup(a->urls[i]); /* amqp_parse_url writes into its argument */
    amqp_connection_state_t c = NULL;
    struct timeval tv = {.tv_sec = a->connect_timeout_ms / 1000,
                         .tv_usec = (a->connect_timeout_ms % 1000) * 1000};

    if (amqp_parse_url(url, &info) != AMQP_STATUS_OK) {
        set_error(w, "parse url", "invalid");
        goto fail;
    }
    c = amqp_new_connection();
    if (c == NULL)
        hg_oom(__FILE__, __LINE__);
    amqp_socket_t *sock = amqp_tcp_socket_new(c);
    if (sock == NULL)
        hg_oom(__FILE__, __LINE__);
    int rc = amqp_socket_open_noblock(sock, info.host, info.port, &tv);
    if (rc != AMQP_STATUS_OK) {
        set_error(w, "connect", amqp_error_string2(rc));
        goto fail;
    }
    amqp_set_handshake_timeout(c, &tv);
    amqp_set_rpc_timeout(c, &tv);
    /* "amqp://host:port/" parses to the empty vhost, which never exists; it means "/" as it
     * does for most other clients. */
    amqp_rpc_reply_t r = amqp_login(c, info.vhost[0] ? info.vhost : "/", 0, FRAME_MAX,
                                    (int)a->heartbeat_s, AMQP_SASL_METHOD_PLAIN, info.user,
                                    info.password);
    if (reply_check(r, w, "login") != 0)
        goto fail;
    amqp_channel_open(c, CHANNEL);
    if (rpc_check(c, w, "open channel") != 0)
        goto fail;
    if (declare_topology(a, c, w) != 0)
        goto fail;
    amqp_confirm_select(c, CHANNEL);
    if (rpc_check(c, w, "confirm.select") != 0)
        goto fail;

    /* rabbitmq-c opens its sockets O_NONBLOCK already; make sure, then size the send buffer so
     * the window in flush_pending() never reaches it (see SEND_WINDOW). */
    int fd = amqp_get_sockfd(c);
    int fl = fcntl(fd, F_GETFL);
    int sndbuf = (int)(4 * (SEND_WINDOW + a->max_message_bytes));
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf) < 0) {
        set_error(w, "socket options", strerror(errno));
        goto fail;
    }
    free(url);
    return c;
fail:
    if (c)
        amqp_destroy_connection(c);
    free(url);
    return NULL;
}

static void on_connect_work(uv_work_t *req)
{
    struct connect_work *w = HG_CONTAINER_OF(req, struct connect_work, req);
    struct hg_amqp *a = w->owner;
    for (size_t i = 0; i < a->n_urls; i++) {
        w->no_priority = 0;
        w->no_version = 0;
        w->conn = connect_one(a, w, i);
        if (w->conn) {
            w->url_index = (int)i;
            return;
        }
    }
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
    uint64_t delay = a->reconnect_min_ms;
    for (unsigned i = 0; i < a->attempt && delay < a->reconnect_max_ms; i++)
        delay *= 2;
    if (delay > a->reconnect_max_ms)
        delay = a->reconnect_max_ms;
    /* Jitter in [delay/2, delay] so a fleet does not reconnect in lockstep. */
    delay = delay / 2 + hg_random_u64() % (delay / 2 + 1);
    a->attempt++;
    uv_timer_start(&a->retry_timer, on_retry, delay, 0);
}

static void kick(struct hg_amqp *a, uint64_t ms);

/* The connection is gone (or being given up): settle everything in flight with UNAVAILABLE —
 * the caller still has the record and retries it — and reconnect unless closing. */
static void link_lost(struct hg_amqp *a, const char *reason, const char *detail)
{
    struct link *l = a->link;
    if (l == NULL)
        return;
    a->link = NULL;
    a->broken = false;
    a->ret.active = false;
    a->stats.disconnects++;
    a->stats.url_index = -1;
    a->down_reason = reason;
    uv_timer_stop(&a->heartbeat_timer);
    uv_poll_stop(&l->poll);
    uv_close((uv_handle_t *)&l->poll, on_link_closed);
    hg_warn(NULL, "amqp connection lost", "reason", reason, "detail", detail ? detail : "",
            NULL);
    if (a->closing) {
        set_state(a, ST_SHUTDOWN);
        fail_all(a, HG_ERR_UNAVAILABLE);
        shutdown_now(a);
        return;
    }
    set_state(a, ST_DOWN);
    a->attempt = 0;
    arm_retry(a);
    fail_all(a, HG_ERR_UNAVAILABLE);
}

/* Settle by delivery tag: `multiple` covers every tag ≤ tag. */
static void settle(struct hg_amqp *a, uint64_t tag, bool multiple, bool nack)
{
    struct entry *e = a->inflight.head;
    while (e) {
        struct entry *next = e->next;
        if (e->tag > tag)
            break;
        if (multiple || e->tag == tag) {
            list_remove(&a->inflight, e);
            int status = 0;
            if (nack) {
                a->stats.nacked++;
                status = HG_ERR_REJECTED;
            } else if (e->returned) {
                status = HG_ERR_REJECTED;
            }
            entry_finish(a, e, status);
            /* The callback may have closed the sink, which settled (and freed) the rest. */
            if (!multiple || a->link == NULL)
                break;
        }
        e = next;
    }
}

/* basic.return names no delivery tag; the message_id does. Mark the oldest unmarked match (two
 * in-flight copies of one event are identical, so which one is marked does not matter). */
static void mark_returned(struct hg_amqp *a, amqp_basic_properties_t *p)
{
    if (!(p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG))
        return;
    for (struct entry *e = a->inflight.head; e; e = e->next) {
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
    if (n == FRAMES_PER_TURN || amqp_frames_enqueued(l->conn) || amqp_data_in_buffer(l->conn))
        kick(a, 0);
    else
        amqp_maybe_release_buffers(l->conn);
    /* Acks may have made room in the send window: pending publishes go out from the prepare
     * handle before the loop blocks again, together with whatever this turn still publishes. */
    maybe_finish_close(a);
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

static void kick(struct hg_amqp *a, uint64_t ms)
{
    if (a->state == ST_SHUTDOWN)
        return;
    /* An earlier due time wins over a later one already armed. */
    if (uv_is_active((uv_handle_t *)&a->kick_timer) && ms > 0 &&
        uv_timer_get_due_in(&a->kick_timer) <= ms)
        return;
    uv_timer_start(&a->kick_timer, on_kick, ms, 0);
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
    hg_info(NULL, "amqp connected", "url_index", idx, NULL);
    a->stats.queues_without_priority = 0;
    for (size_t i = 0; i < N_QUEUES; i++) {
        if (!(w->no_priority & (1u << i)))
            continue;
        a->stats.queues_without_priority++;
        char mp[16];
        snprintf(mp, sizeof mp, "%d", a->max_priority);
        hg_warn(NULL, "amqp queue exists without x-max-priority: using it as it is, message priorities have no "
                      "effect on it; delete or migrate it to get priorities (docs/amqp.md)",
                "queue", queue_names[i], "max_priority", mp, "broker", w->priority_refusal[i], NULL);
    }
    a->stats.queues_without_version = 0;
    for (size_t i = 0; i < 2 * N_QUEUES; i++) {
        if (!(w->no_version & (1u << i)))
            continue;
        a->stats.queues_without_version++;
        char name[64], qv[16];
        snprintf(name, sizeof name, "%s%s", queue_names[i % N_QUEUES], i >= N_QUEUES ? ".dlq" : "");
        snprintf(qv, sizeof qv, "%u", a->queue_version);
        hg_warn(NULL, "amqp queue exists without x-queue-version: using it as it is, in the classic queue "
                      "version the broker or a policy gives it; see docs/amqp.md to migrate it",
                "queue", name, "queue_version", qv, "broker", w->version_refusal[i], NULL);
    }
    int hb = amqp_get_heartbeat(c);
    if (hb > 0)
        uv_timer_start(&a->heartbeat_timer, on_heartbeat, (uint64_t)hb * 500, (uint64_t)hb * 500);
    kick(a, 0);
}

static void start_connect(struct hg_amqp *a)
{
    memset(&a->work, 0, sizeof a->work);
    a->work.owner = a;
    a->work.url_index = -1;
    set_state(a, ST_CONNECTING);
    int rc = uv_queue_work(a->loop, &a->work.req, on_connect_work, on_connect_done);
    if (rc != 0) {
        hg_error(NULL, "amqp queue_work failed", "error", uv_strerror(rc), NULL);
        set_state(a, ST_DOWN);
        arm_retry(a);
        return;
    }
    a->work_active = true;
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
        .exchange = amqp_cstring_bytes(e->dead ? HG_AMQP_DLX : HG_AMQP_EXCHANGE),
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
        hdr[nh++] = utf8_entry("x-tenant-id", e->tenant);
    if (e->provider)
        hdr[nh++] = utf8_entry("x-provider", e->provider);
    if (e->type)
        hdr[nh++] = utf8_entry("x-event-type", e->type);
    if (e->priority_class)
        hdr[nh++] = utf8_entry("x-priority-class", e->priority_class);
    if (e->reason)
        hdr[nh++] = utf8_entry("x-death-reason", e->reason);
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
    if (a->pending.head == NULL || l == NULL || a->broken)
        return;
    int outq = 0;
    if (ioctl(l->fd, SIOCOUTQ, &outq) != 0 || outq < 0) {
        kick(a, FLUSH_RETRY_MS);
        return;
    }
    size_t frame_max = (size_t)amqp_get_frame_max(l->conn);
    size_t n = 0;
    hg_buf_reset(&l->out);
    for (struct entry *e = a->pending.head; e; e = e->next) {
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
            kick(a, 0);
            return;
        }
        n++;
    }
    if (n > 0) {
        ssize_t w;
        do
            w = send(l->fd, l->out.data, l->out.len, MSG_NOSIGNAL);
        while (w < 0 && errno == EINTR);
        if (w < 0 || (size_t)w != l->out.len) {
            /* A short write leaves a frame cut off: the stream is lost. Every entry stays pending
             * and settles UNAVAILABLE with the link, as after a failed amqp_basic_publish. */
            hg_warn(NULL, "amqp publish write failed", "error",
                    w < 0 ? strerror(errno) : "short write", NULL);
            a->broken = true;
            kick(a, 0);
            return;
        }
        /* The broker numbers publishes in the order it reads them: the buffer's order. */
        uint64_t now = hg_time_mono_ns();
        for (size_t i = 0; i < n; i++) {
            struct entry *e = a->pending.head;
            list_remove(&a->pending, e);
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
    if (a->pending.head)
        kick(a, FLUSH_RETRY_MS);
}

/* Runs before the loop blocks for I/O while publishes wait: see publish_common(). */
static void on_flush_prepare(uv_prepare_t *h)
{
    struct hg_amqp *a = HG_CONTAINER_OF(h, struct hg_amqp, flush_prepare);
    flush_pending(a);
    if (a->pending.head == NULL)
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
    if (a->state != ST_UP || a->link == NULL || a->broken)
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
    if (a->pending.head == NULL)
        uv_prepare_start(&a->flush_prepare, on_flush_prepare);
    list_push(&a->pending, e);
    return 0;
}

static int sink_publish(struct hg_sink *s, const struct hg_event *ev, hg_sink_cb cb, void *arg)
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

static int sink_ready(struct hg_sink *s, const char **reason)
{
    struct hg_amqp *a = (struct hg_amqp *)s;
    const char *why = NULL;
    if (a->closing)
        why = "closing";
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
    fail_all(a, HG_ERR_UNAVAILABLE);
    uv_handle_t *handles[] = {(uv_handle_t *)&a->retry_timer, (uv_handle_t *)&a->kick_timer,
                              (uv_handle_t *)&a->heartbeat_timer, (uv_handle_t *)&a->close_timer,
                              (uv_handle_t *)&a->flush_prepare};
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
    for (size_t i = 0; i < a->n_urls; i++)
        free(a->urls[i]);
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
        kick(a, 0);
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
    .publish = sink_publish,
    .ready = sink_ready,
    .close = sink_close,
};

/* ---- open --------------------------------------------------------------------------------- */

static int validate_url(const char *url)
{
    struct amqp_connection_info info;
    char *copy = hg_xstrdup(url);
    int rc = amqp_parse_url(copy, &info);
    int ok = rc == AMQP_STATUS_OK && !info.ssl;
    free(copy);
    return ok ? 0 : HG_ERR_CONFIG;
}

int hg_amqp_sink_open(uv_loop_t *loop, const struct hg_amqp_opts *opts, struct hg_sink **out)
{
    if (loop == NULL || opts == NULL || out == NULL || opts->urls == NULL || opts->n_urls == 0 ||
        opts->n_urls > HG_AMQP_MAX_URLS)
        return HG_ERR_CONFIG;
    for (size_t i = 0; i < opts->n_urls; i++)
        if (opts->urls[i] == NULL || validate_url(opts->urls[i]) != 0) {
            hg_error(NULL, "amqp url invalid (amqps is not supported)", NULL);
            return HG_ERR_CONFIG;
        }
    bool quorum = false;
    if (opts->queue_type && strcmp(opts->queue_type, "quorum") == 0)
        quorum = true;
    else if (opts->queue_type && strcmp(opts->queue_type, "classic") != 0)
        return HG_ERR_CONFIG;
    if (opts->max_priority < 0 || opts->max_priority > 255 || opts->queue_version > 2)
        return HG_ERR_CONFIG;

    struct hg_amqp *a = hg_xcalloc(1, sizeof *a);
    a->sink.ops = &amqp_sink_ops;
    a->loop = loop;
    a->state = ST_DOWN;
    a->n_urls = opts->n_urls;
    for (size_t i = 0; i < opts->n_urls; i++)
        a->urls[i] = hg_xstrdup(opts->urls[i]);
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

    uv_timer_t *timers[] = {&a->retry_timer, &a->kick_timer, &a->heartbeat_timer, &a->close_timer};
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

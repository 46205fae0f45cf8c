/*
 * Internal to the RabbitMQ sink in src/clients: what the lifecycle and loop side (amqp.c), the
 * connect and topology work on a threadpool thread (amqp_connect.c) and the entries and publish
 * path (amqp_publish.c) share. The sink, link, entry and connect-work structs, the constants their
 * fields and frames need, and the calls each file makes into the others. Not part of the public
 * API (sink/amqp.h). Shared names are prefixed amqpc_: amqp_ is rabbitmq-c's namespace.
 */
#ifndef HG_SINK_AMQP_INTERNAL_H
#define HG_SINK_AMQP_INTERNAL_H

#include <amqp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "sink/amqp.h"
#include "core/buf.h"
#include "core/list.h"

#define CHANNEL            1
#define FRAME_MAX          131072
/*
 * Bytes we let sit unacknowledged in the kernel send queue (SIOCOUTQ). SO_SNDBUF is set to
 * several times this (plus the largest message), so a write admitted under it never meets EAGAIN
 * even with the kernel's per-segment overhead, and rabbitmq-c never reaches its internal poll().
 */
#define SEND_WINDOW        (256 * 1024)
#define REFUSAL_MAX        120     /* bytes kept of a broker's refusal text */

enum amqp_state {
    ST_DOWN,       /* not connected; retry_timer will start the next attempt */
    ST_CONNECTING, /* a work thread owns work.conn; the loop must not touch it */
    ST_UP,         /* the loop owns link->conn; publishes go out */
    ST_SHUTDOWN,   /* close() gave up on the connection; handles are closing */
};

/* One accepted publish: a private copy of the event, then its place in the confirm queue. */
struct entry {
    struct hg_list link;  /* in a->pending, then a->inflight */
    uint64_t tag;       /* delivery tag on CHANNEL, 0 until written */
    uint64_t sent_ns;   /* monotonic, when written */
    hg_sink_cb cb;
    void *arg;
    bool dead;          /* goes to the DLX */
    const char *exchange; /* the provider's exchange or DLX (static storage) */
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
    struct hg_list entries; /* struct entry by link, oldest first */
    size_t count;
};

/* The oldest entry of l, or NULL when it is empty. */
static inline struct entry *amqpc_list_first(const struct entry_list *l)
{
    struct hg_list *first = hg_list_first(&l->entries);
    return first ? hg_list_entry(first, struct entry, link) : NULL;
}

/* One TCP connection as handed to the loop. Freed in its poll handle's close callback. */
struct link {
    struct hg_amqp *owner;
    amqp_connection_state_t conn;
    void *ssl;                    /* the OpenSSL SSL of an amqps:// connection (owned by conn), else NULL */
    uv_poll_t poll;
    int fd;
    int url_index;
    struct hg_buf out;            /* the frames of one flush, written with one send() */
};

/* Every provider's live queues (providers/provider.h topologies), each with a DLQ "<name>.dlq". */
#define N_QUEUES_MAX 16           /* two bits each (queue, DLQ) in the unsigned masks below */
struct amqpc_queue {
    const char *name;
    const char *exchange;         /* the provider's topic exchange */
    const char *dlx;              /* its dead-letter exchange */
    const char *const *bindings;  /* routing-key patterns bound to the queue, NULL-terminated */
};
/* The table, built once from the provider registry (thread-safe); *out gets it. */
size_t amqpc_queues(const struct amqpc_queue **out);

/*
 * Where and how to connect: the URLs and the TLS settings of amqps:// URLs. Immutable once built;
 * the work thread reads the sink's current one during a connect, a reload hands a new one that
 * takes over at the next connect (amqp.c).
 */
struct amqpc_target {
    char *urls[HG_AMQP_MAX_URLS];
    size_t n_urls;
    char *tls_ca, *tls_cert, *tls_key; /* NULL = system CA store / no client certificate */
    bool tls_insecure;                 /* tls_verify = off */
};

struct connect_work {
    uv_work_t req;
    struct hg_amqp *owner;
    amqp_connection_state_t conn; /* out: logged in, topology declared, confirm mode on */
    void *ssl;                    /* out: conn's SSL for an amqps:// URL (set by an OpenSSL callback) */
    char tls_error[120];          /* the first certificate check that failed, during a handshake */
    int url_index;
    char error[160];              /* out: why the last URL failed */
    unsigned no_priority;         /* out: bit i = amqpc_queues()[i] kept without x-max-priority */
    unsigned no_version;          /* out: bit i = amqpc_queues()[i], bit N_QUEUES_MAX + i = its
                                     DLQ, kept without x-queue-version */
    char priority_refusal[N_QUEUES_MAX][REFUSAL_MAX];    /* out: the broker's text, per bit */
    char version_refusal[2 * N_QUEUES_MAX][REFUSAL_MAX]; /* out: the same for x-queue-version */
};

struct hg_amqp {
    struct hg_sink sink;          /* first: the sink ops cast back */
    uv_loop_t *loop;
    enum amqp_state state;
    struct amqpc_target *target;  /* the URLs and TLS settings connects use */
    struct amqpc_target *next_target; /* from a reload; replaces target before the next connect */
    bool rotating;                /* next_target waits for the link to go: no new publishes, the
                                     link is closed once nothing is in flight (or rotate_timer) */
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
    uv_timer_t rotate_timer;      /* bounds how long a reload waits for confirms before reconnecting */
    uv_prepare_t flush_prepare;   /* active while `pending` is not empty: one send() per turn */
    int handles_open;
    bool closing;
    void (*done)(void *arg);
    void *done_arg;

    struct hg_amqp_stats stats;
};

/* ---- amqp_connect.c ---------------------------------------------------------------------- */

/* The uv_queue_work body: tries urls in order until one connects (w->conn) or all failed
 * (w->error). Runs on a threadpool thread; touches only the work struct and the sink's options. */
void amqpc_connect_work(uv_work_t *req);

/* A UTF-8 string field table entry; key and value are borrowed. */
amqp_table_entry_t amqpc_utf8_entry(const char *key, const char *value);

/* ---- amqp_publish.c ----------------------------------------------------------------------- */

void amqpc_list_remove(struct entry_list *l, struct entry *e);

/* Run the callback and the hook for a settled entry, then free it. */
void amqpc_entry_finish(struct hg_amqp *a, struct entry *e, int status);

/* Settle every accepted entry (in flight and pending) with `status`. */
void amqpc_fail_all(struct hg_amqp *a, int status);

/* The sink's publish op: queue the event for the next flush. */
int amqpc_sink_publish(struct hg_sink *s, const struct hg_event *ev, hg_sink_cb cb, void *arg);

/* ---- amqp.c ------------------------------------------------------------------------------- */

/* Arm the kick timer to read frames, tear down a broken link or retry a flush in `ms`; an
 * earlier due time already armed wins. */
void amqpc_kick(struct hg_amqp *a, uint64_t ms);

/* Free a target and its strings (NULL is fine). */
void amqpc_target_free(struct amqpc_target *t);

/* ---- amqp_publish.c (write side of a TLS link) ------------------------------------------- */

/* Write n bytes on the link: send() on a plain link, SSL_write on a TLS one. Returns n, or <0
 * with *why set (a short or failed write: the stream is lost). Never waits. */
ssize_t amqpc_link_write(struct link *l, const void *buf, size_t n, const char **why);

#endif

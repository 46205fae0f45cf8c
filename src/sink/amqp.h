/*
 * RabbitMQ sink: publishes normalized events to their provider's topic exchange (`whatsapp.inbound`, …) with publisher
 * confirms, on a libuv loop, without ever blocking it. Design and topology: docs/amqp.md.
 */
#ifndef HG_SINK_AMQP_H
#define HG_SINK_AMQP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "sink/sink.h"

struct hg_buf;

/*
 * Topology: every provider's exchange, DLX, queues and bindings (providers/provider.h), declared
 * after every connect. WhatsApp's names, which other programs rely on:
 */
#define HG_AMQP_EXCHANGE        "whatsapp.inbound"
#define HG_AMQP_DLX             "whatsapp.inbound.dlx"
#define HG_AMQP_QUEUE_MESSAGES  "INBOUND_WHATSAPP_MESSAGES" /* bound message.# */
#define HG_AMQP_QUEUE_STATUSES  "WHATSAPP_STATUS_UPDATES"   /* bound status.# */
#define HG_AMQP_QUEUE_SYSTEM    "WHATSAPP_SYSTEM_EVENTS"    /* bound error.# and system.# */
/* Each queue Q dead-letters to HG_AMQP_DLX with routing key "Q.dlq", bound to the queue "Q.dlq". */
#define HG_AMQP_MAX_URLS        8

/* Called once per settled publish (after the publish callback ran) with its outcome and the time
 * from the write to the broker's answer; 0 when it never reached the broker. Optional. */
typedef void (*hg_amqp_confirm_hook)(void *arg, int status, uint64_t latency_ns);

struct hg_amqp_opts {
    /* amqp://user:pass@host:port/vhost or amqps://… (TLS, port 5671 by default), tried in order
     * on every (re)connect. 1..HG_AMQP_MAX_URLS. */
    const char *const *urls;
    size_t n_urls;
    /* TLS of amqps:// URLs (docs/backend-tls.md). The broker's certificate chain is checked
     * against tls_ca (a PEM bundle; NULL = the system store) and its name against the URL's host,
     * unless tls_insecure. tls_cert + tls_key (PEM files, both or neither): a client certificate.
     * The files are read at every connect. */
    const char *tls_ca;
    const char *tls_cert;
    const char *tls_key;
    bool tls_insecure;
    const char *queue_type;          /* "classic" (default when NULL) or "quorum" */
    int max_priority;                /* x-max-priority 1..255 on live classic queues; 0 = none. An
                                        existing queue without it is used as it is (a warning) */
    unsigned queue_version;          /* x-queue-version 1 or 2 on classic queues and their DLQs;
                                        0 = not sent (the broker's default or a policy decides);
                                        ignored for quorum. An existing queue without it is used
                                        as it is (a warning) */
    unsigned reconnect_min_ms;       /* first backoff step; 0 → 100 */
    unsigned reconnect_max_ms;       /* backoff ceiling; 0 → 30000 */
    unsigned connect_timeout_ms;     /* TCP connect and each handshake RPC; 0 → 5000 */
    unsigned heartbeat_s;            /* AMQP heartbeat; 0 → 30 */
    size_t max_pending;              /* publishes accepted, not yet written; 0 → 10000 */
    size_t max_message_bytes;        /* largest json body; 0 → 1 MiB */
    unsigned close_timeout_ms;       /* how long close() waits for confirms; 0 → 2000 */
    hg_amqp_confirm_hook on_confirm; /* e.g. observe rabbitmq_confirm_duration_seconds */
    void *hook_arg;
};

struct hg_amqp_stats {
    uint64_t published;   /* written to the socket */
    uint64_t confirmed;   /* basic.ack (not returned) → callback 0 */
    uint64_t nacked;      /* basic.nack → HG_ERR_REJECTED */
    uint64_t returned;    /* basic.return (unroutable) → HG_ERR_REJECTED */
    uint64_t failed;      /* lost with the connection or at close → HG_ERR_UNAVAILABLE */
    uint64_t connects;    /* successful connects (topology declared) */
    uint64_t disconnects; /* connections lost */
    size_t inflight;      /* written, waiting for the broker */
    size_t pending;       /* accepted, not yet written: until the turn's flush, or room in
                             the socket send window */
    int url_index;        /* index in opts.urls of the current connection; -1 when down */
    unsigned queues_without_priority; /* live queues of the last connect that exist without
                                         x-max-priority and are used as they are (docs/amqp.md) */
    unsigned queues_without_version;  /* live queues and DLQs of the last connect that exist
                                         without the configured x-queue-version and are used as
                                         they are (docs/amqp.md) */
};

/*
 * Open the sink on `loop` (the caller's worker loop; every call below runs on that loop's thread).
 * Validates opts and copies everything it keeps, then starts connecting in the background: publish
 * returns HG_ERR_UNAVAILABLE until ready() says 0. Returns 0 and *out, or HG_ERR_CONFIG.
 * Release with the sink's close op (hg_amqp_sink_close below is the same).
 *
 * publish: 0 → the callback runs exactly once, later: 0 when the broker confirmed a persistent
 * message routed to at least one queue; HG_ERR_REJECTED when nacked or returned unroutable;
 * HG_ERR_UNAVAILABLE when the connection dropped before the answer (the message may still have
 * arrived: retry with the same event id). <0 at once: HG_ERR_UNAVAILABLE when not connected or the
 * pending queue is full, HG_ERR_TOO_BIG, HG_ERR_INVALID (missing fields), HG_ERR_CLOSED.
 */
int hg_amqp_sink_open(uv_loop_t *loop, const struct hg_amqp_opts *opts, struct hg_sink **out);

/*
 * Check one [amqp] url as the sink will use it: 0, or HG_ERR_CONFIG with the reason in why (never
 * the URL itself: it carries the password). Pure; any thread. The config loader calls it so that
 * `hookgate -t` refuses what the sink would.
 */
int hg_amqp_url_check(const char *url, char *why, size_t wl);

/*
 * A reload: connect with these URLs and TLS settings from now on (the other opts fields are
 * ignored: they take effect at restart). When they differ from the current ones and the sink is
 * connected, it stops taking publishes (HG_ERR_UNAVAILABLE, ready() says why), waits up to
 * close_timeout_ms for the confirms in flight, closes the connection and connects again with the
 * new ones; not connected, the next attempt uses them at once. 0 (also when nothing changed:
 * *changed false), or HG_ERR_CONFIG (an invalid URL: nothing changes). Loop thread only.
 */
int hg_amqp_sink_reconfigure(struct hg_sink *s, const struct hg_amqp_opts *opts, bool *changed);

/* Same contract as publish, but to HG_AMQP_DLX with routing key "<queue>.dlq", where <queue> is
 * the queue ev->routing_key is bound to (message.* / status.* / else the system queue), and the
 * header x-death-reason = reason (e.g. "unparseable"). For poison records. */
int hg_amqp_publish_dead(struct hg_sink *s, const struct hg_event *ev, const char *reason,
                         hg_sink_cb cb, void *arg);

/* The queue an event of `provider` ("whatsapp") with this routing key lands in: the queue whose
 * binding matches, else the provider's last (system) queue; NULL for an unknown provider. */
const char *hg_amqp_queue_for(const char *provider, const char *routing_key);

/*
 * Append to out the frames that publish (dead_reason NULL) or hg_amqp_publish_dead (dead_reason
 * set) put on the wire for ev on the sink's channel: basic.publish, content header, body frames
 * cut at frame_max - 8. Byte for byte what rabbitmq-c's amqp_basic_publish writes for the same
 * message; the sink writes these itself so that a loop turn's publishes leave in one send().
 * Exported so a test can hold the two side by side. 0; HG_ERR_INVALID (fields missing or too long,
 * frame_max below 4096); HG_ERR_TOO_BIG (out's cap, or properties larger than a frame): out is
 * then unchanged.
 */
int hg_amqp_encode_publish(const struct hg_event *ev, const char *dead_reason, size_t frame_max,
                           struct hg_buf *out);

/* Counters since open. */
void hg_amqp_sink_stats(struct hg_sink *s, struct hg_amqp_stats *out);

/* Stop accepting, wait up to close_timeout_ms for outstanding confirms, fail the rest with
 * HG_ERR_UNAVAILABLE, close the connection, free everything, then done(arg) (always later). */
void hg_amqp_sink_close(struct hg_sink *s, void (*done)(void *arg), void *arg);

#endif

/*
 * A sink takes normalized events and confirms when each is durable downstream (an fsynced ndjson
 * line, a RabbitMQ publisher confirm). A spool record is released only after every event it
 * produced was confirmed by its sink: delivery is at least once, duplicates keep their event id.
 */
#ifndef HG_SINK_SINK_H
#define HG_SINK_SINK_H

#include <stddef.h>
#include <stdint.h>

/* One normalized event. All pointers are only read during publish (the sink copies). */
struct hg_event {
    const char *event_id;       /* dedup key and AMQP message_id (statuses: "<wamid>:<status>") */
    const char *routing_key;    /* "message.text", "status.read", ... */
    const char *kind;           /* "message" | "status" | "error" | "system" */
    const char *type;           /* "text", "read", ... */
    const char *tenant;
    const char *provider;       /* "whatsapp" */
    const char *correlation_id; /* the webhook's request id */
    uint64_t timestamp_s;       /* when the event happened (provider time), Unix seconds */
    int priority;               /* 0..9 (AMQP priority); 0 = normal */
    const char *priority_class; /* "low" | "medium" | "high" | "emergency" */
    const char *json;           /* the normalized document */
    size_t json_len;
};

/* Fires exactly once per accepted publish: 0 = durable downstream; <0 = not taken, retry later. */
typedef void (*hg_sink_cb)(void *arg, int status);

struct hg_sink;

struct hg_sink_ops {
    const char *name;
    /* <0: refused now (callback never runs); 0: callback runs exactly once, later. */
    int (*publish)(struct hg_sink *s, const struct hg_event *ev, hg_sink_cb cb, void *arg);
    /* Optional: the sink's dead-letter path for a poison event (RabbitMQ: the provider's DLX),
     * with the reason ("unparseable", "rejected", ...); same contract as publish. NULL: dead
     * letters are published as ordinary events, routing key "dead_letter.<reason>". */
    int (*publish_dead)(struct hg_sink *s, const struct hg_event *ev, const char *reason, hg_sink_cb cb,
                        void *arg);
    /* 0 when ready; else an error and *reason says why (static string). */
    int (*ready)(struct hg_sink *s, const char **reason);
    /* Flush what is pending (callbacks run), release everything, then done(arg). */
    void (*close)(struct hg_sink *s, void (*done)(void *arg), void *arg);
};

struct hg_sink {
    const struct hg_sink_ops *ops;
};

static inline int hg_sink_publish(struct hg_sink *s, const struct hg_event *ev, hg_sink_cb cb, void *arg)
{
    return s->ops->publish(s, ev, cb, arg);
}

#endif

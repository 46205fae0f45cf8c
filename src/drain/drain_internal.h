/*
 * Internal to src/drain: what the drain (drain.c) and its enrichment step (enrich.c) share. The
 * record and event structs, and the calls each file makes into the other. Not part of the public
 * API (drain/drain.h).
 */
#ifndef HG_DRAIN_DRAIN_INTERNAL_H
#define HG_DRAIN_DRAIN_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "clients/redis.h"
#include "core/list.h"
#include "core/json.h"
#include "drain/drain.h"

struct hg_conf;
struct hg_rules;

struct item_event;
/*
 * Enrichment is over for this round: `retry` when something is undecided (media, closing) and the
 * event must go round again later; else its document is complete. Runs exactly once per
 * enrich_start, possibly inside it (when nothing needed a call, or every call refused at once).
 */
typedef void (*enrich_done_fn)(struct item_event *e, bool retry);

/* Where one event is; every change goes through drain_event_set_state(). */
enum event_state {
    EV_NEW,        /* not yet checked / to be retried */
    EV_DEDUP,      /* dedup_begin in flight */
    EV_ENRICH,     /* State Manager / media calls in flight */
    EV_PUBLISHING, /* sink publish in flight */
    EV_DONE,       /* confirmed by the sink, or a duplicate already published */
};

enum archive_state {
    AR_NONE,       /* no archive configured */
    AR_PENDING,    /* to be (re)tried */
    AR_IN_FLIGHT,  /* PutObject in flight */
    AR_DONE,
};

struct media_files;

struct item_event {
    enum event_state state;
    char *strings;                 /* one block holding the six strings below */
    const char *event_id;
    const char *routing_key;
    const char *kind;
    const char *type;
    const char *correlation_id;
    const char *priority_class;
    uint64_t timestamp_s;
    int priority;
    struct hg_json *doc;           /* the event until it is serialized (in the item's arena) */
    char *json;                    /* NULL until the first publish */
    size_t json_len;
    unsigned enrich_pending;       /* enrichment calls in flight (plus a hold while starting) */
    enrich_done_fn enrich_done;    /* enrich_start's completion, while enrich_pending > 0 */
    bool in_enrich_start;          /* enrich_start is on the stack (the drain settles after it) */
    bool enriched;                 /* enrichment finished, or none needed */
    bool state_done, media_done;   /* that enrichment is in the document (or given up) */
    bool seq_done;                 /* conversation.sequence is decided (a number, or null) */
    bool enrich_retry;             /* media undecided this round: go round again later */
    unsigned media_rounds;         /* undecided media fetches so far */
    bool token_from_cache;         /* the Graph token of the fetch in flight came from Redis */
    struct media_files *files;     /* URL media (enrich.c): per file, decided or not; NULL when
                                    * none is being fetched */
    bool summarized;               /* json is a dead-letter summary: the sink refused the event */
    char dedup_key[HG_REDIS_KEY_MAX + 1];
    const char *dead_reason;       /* set: goes to the dead-letter path with this reason */
    unsigned rejections;           /* times the sink refused it for good (nack, return) */
    uint64_t publish_start_ns;
    struct item *item;
    const char *conv_id;           /* conversation.id in doc (found while building, so the
                                    * loop does not walk every document again), or NULL */
    struct order_conv *conv;       /* its conversation's FIFO (order.c); NULL = no conversation */
    struct item_event *conv_next;  /* the next event of that conversation */
    bool held;                     /* waiting behind an earlier event of its conversation (one
                                    * count of the item's outstanding) */
    bool resume_queued;            /* held, and its turn came: starts from the idle phase */
    struct item_event *resume_next;/* in drain->resume while resume_queued */
};

/* One spool record being handed on. */
struct item {
    struct hg_drain *drain;
    struct hg_list node;           /* in drain->items */
    uint64_t spool_id;
    char *request_id;
    char *tenant;
    char *provider;
    uint64_t received_at_ns;
    char *headers;
    size_t headers_len;
    char *body;
    size_t body_len;
    struct hg_json_doc *doc;       /* the envelope; its arena holds the events' documents too */
    struct item_event *events;
    size_t n_events;
    size_t events_cap;             /* room in events (grown geometrically while building) */
    size_t n_docs;                 /* events whose document is not serialized yet: the arena goes
                                    * when this reaches 0 */
    size_t mem;                    /* bytes counted in drain->mem_bytes for this item */
    size_t arena_counted;          /* the part of `mem` that is its document arena */
    enum archive_state archive;
    uint64_t archive_start_ns;
    unsigned outstanding;          /* asynchronous steps awaiting their callback */
    bool failed;                   /* some step of this round failed */
    unsigned attempts;
    uint64_t retry_at_ms;          /* loop time; 0 = not waiting */
    struct hg_list wnode;          /* in drain->waiting while retry_at_ms != 0 */
    bool built;                    /* events made (from the queue in the drain) */
    struct item *build_next;       /* in drain->build_queue while not built */
    const struct hg_rules *rules;  /* the tenant's rules while its events are being made */
    bool apply_rules;              /* set with rules: a config is there, so rules decide the priority
                                    * (no rules for the tenant = medium) */
    bool archive_only;             /* read back from the park: its events went out before; only
                                    * the archive is left once it is built */
    /* A round started more events than one loop turn may: the rest start from the idle phase,
     * STEP_SLICE per turn, while one count of `outstanding` keeps the round open. */
    size_t step_cursor;            /* next event the round looks at */
    bool stepping;                 /* in drain->step_head's queue */
    struct item *step_next;
    bool ephemeral;                /* ack = broker: not in the spool, never retried */
    hg_drain_ack_cb ack;           /* ephemeral: pending answer to the request */
    void *ack_arg;
    char text[];                   /* request_id, tenant, provider, headers, body: one allocation
                                    * with the item (each NUL-terminated) */
};

struct hg_drain {
    uv_loop_t *loop;
    struct hg_drain_backends b;
    char *bucket;
    char *media_bucket;
    bool media_bucket_checked;
    uv_timer_t tick;               /* retries and backlog pulls */
    uv_idle_t build_idle;          /* normalizes queued records while any are queued */
    struct item *build_head, *build_tail;
    /* A big record is normalized on the threadpool (one at a time; the queue behind it waits, so
     * records are still built in order). */
    uv_work_t build_job;
    struct item *job_item;         /* the record being built there, or NULL */
    struct hg_conf *job_conf;      /* a reference held for the job: its tenant rules are read there */
    int job_rc;
    char job_reason[256];
    _Atomic bool cancel_build;     /* set when closing: the job's walk stops at its next event */
    struct item *step_head, *step_tail; /* items whose round still has events to start */
    bool backlog_reading;          /* a read of backlog records runs on the threadpool */
    bool unpark_reading;           /* a read of parked records runs there */
    struct hg_list items;          /* every record taken and not yet released */
    struct hg_list waiting;        /* items waiting out a retry backoff: the tick walks only these */
    uint64_t n_items;
    uint64_t max_in_memory;        /* records held at once; past it submit defers to the spool */
    uint64_t max_bytes;            /* bytes they may take; past it too */
    uint64_t mem_bytes;            /* what the items take: bodies, arenas, events, JSON texts */
    uint64_t deferred;             /* records submit left in the spool (counter) */
    /* Records whose events are all out and whose archive waits for a slot (or for S3 to come
     * back), kept as spool ids only: a slow or absent S3 holds back neither events nor RAM. */
    uint64_t *parked;
    size_t parked_head, parked_len, parked_cap;
    unsigned archives_in_flight;   /* PutObjects started and not answered yet */
    bool closing;
    bool bucket_checked;
    bool archive_failing;          /* the last archive attempt failed (for /ready) */
    bool sink_was_ready;           /* at the last tick: a reconnect retries waiting records at once */
    bool sink_failing;             /* the last publish failed (refused at once or not confirmed) */
    bool sink_recovered;           /* a publish went through after failures: retry waiting records */
    int handles_open;              /* tick and build_idle, until their close callbacks ran */
    struct order_conv **convs;     /* conversations with events in memory (order.c), a hash table */
    size_t conv_cap, n_convs;
    struct item_event *resume_head, *resume_tail; /* held events whose turn came, started from the
                                    * idle phase (never inside the callback that ended the one before) */
    void (*free_done)(void *arg);
    void *free_arg;
};

/* ---- drain.c, called by the enrichment ---- */

/* Every change of an event's state goes through here. */
void drain_event_set_state(struct item_event *e, enum event_state s);
/* An asynchronous step finished: decide what happens to the item when it was the last one. */
void drain_item_settle(struct item *it);
/* The event cannot go on this round: back to NEW, its dedup claim released, the item retried. */
void drain_event_fail(struct item_event *e);
/*
 * Publish the event (serialized on the first call; a retry sends the same bytes), on the
 * dead-letter path when it has a dead_reason; what the sink refuses for good is escalated.
 */
void drain_event_publish(struct item_event *e);

/*
 * A held event's turn came (order.c): it starts from the drain's idle phase, where no other
 * record's callback is on the stack (starting it may settle and free its record). It stays held
 * (and counted) until then.
 */
void drain_event_resume_later(struct item_event *e);
/* Take a queued resume back (its record is being freed). */
void drain_event_resume_cancel(struct item_event *e);

/* ---- order.c: per-conversation order, called by the drain ---- */

struct order_conv;
/* After an item's events are built: each event with conversation.id joins its conversation's
 * FIFO (per tenant). */
void order_add(struct item *it);
/* Before an event starts: true when it must wait behind an earlier event of its conversation
 * (it is then held and counted in its item's outstanding until order_done releases it). */
bool order_hold(struct item_event *e);
/* The event is done (or its item goes away): leave the FIFO; the next event starts when this was
 * the head (not while closing). */
void order_done(struct item_event *e);
/* Free the conversation table (the drain is being freed). */
void order_free(struct hg_drain *d);

/* ---- enrich.c, called by the drain ---- */

/* The event is a message that gets a State Manager `mapping` (a State Manager is configured). */
bool enrich_wants_state(const struct item_event *e);
/* Media fetching is configured and the event's provider lists media files for it (a message). */
bool enrich_wants_media(const struct item_event *e);
/* The event belongs to a conversation (conversation.id) and Redis numbers them. */
bool enrich_wants_sequence(const struct item_event *e);
/*
 * Start the enrichment calls still missing (the conversation's sequence number first, then the
 * State Manager and media in parallel); `done` runs once the last one is over. The drain calls it
 * once dedup has let a not-yet-enriched event through; enrichment never calls the drain back by
 * name, and never touches the item's outstanding count or settles it.
 */
void enrich_start(struct item_event *e, enrich_done_fn done);
/* Free what the enrichment keeps per event between rounds (its record is being freed). */
void enrich_event_free(struct item_event *e);

#endif

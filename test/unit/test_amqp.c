/*
 * RabbitMQ sink against a real broker (HG_TEST_AMQP_URL; skipped when unset). A second, plain
 * blocking rabbitmq-c connection checks what the broker actually holds.
 */
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <uv.h>

#include "sink/amqp.h"
#include "core/buf.h"
#include "core/err.h"
#include "core/common.h"
#include "core/time.h"

/* ---- helpers ------------------------------------------------------------------------------ */

static const char *test_url(void)
{
    const char *u = getenv("HG_TEST_AMQP_URL");
    return (u && *u) ? u : NULL;
}

#define NEED_BROKER()                                                                      \
    do {                                                                                   \
        if (test_url() == NULL) {                                                          \
            print_message("HG_TEST_AMQP_URL unset: skipped\n");                            \
            skip();                                                                        \
        }                                                                                  \
    } while (0)

/* A blocking checker connection on channel 1, to `url` (a vhost of the test broker). */
static amqp_connection_state_t checker_open_url(const char *url_in)
{
    struct amqp_connection_info info;
    char *url = strdup(url_in);
    assert_int_equal(amqp_parse_url(url, &info), AMQP_STATUS_OK);
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    assert_non_null(s);
    assert_int_equal(amqp_socket_open(s, info.host, info.port), AMQP_STATUS_OK);
    amqp_rpc_reply_t r = amqp_login(c, info.vhost[0] ? info.vhost : "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN,
                                    info.user, info.password);
    assert_int_equal(r.reply_type, AMQP_RESPONSE_NORMAL);
    amqp_channel_open(c, 1);
    assert_int_equal(amqp_get_rpc_reply(c).reply_type, AMQP_RESPONSE_NORMAL);
    free(url);
    return c;
}

/* The same to HG_TEST_AMQP_URL. */
static amqp_connection_state_t checker_open(void)
{
    return checker_open_url(test_url());
}

static void checker_close(amqp_connection_state_t c)
{
    amqp_channel_close(c, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
}

static void purge_all(void)
{
    const char *q[] = {HG_AMQP_QUEUE_MESSAGES, HG_AMQP_QUEUE_STATUSES, HG_AMQP_QUEUE_SYSTEM,
                       HG_AMQP_QUEUE_MESSAGES ".dlq", HG_AMQP_QUEUE_STATUSES ".dlq",
                       HG_AMQP_QUEUE_SYSTEM ".dlq"};
    amqp_connection_state_t c = checker_open();
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
        amqp_queue_purge(c, 1, amqp_cstring_bytes(q[i]));
        /* Before the first sink ever ran the queues may not exist; a fresh channel then. */
        if (amqp_get_rpc_reply(c).reply_type != AMQP_RESPONSE_NORMAL) {
            checker_close(c);
            c = checker_open();
        }
    }
    checker_close(c);
}

/* Passive declare: true when the queue exists; its depth in *count. */
static int queue_exists(amqp_connection_state_t *c, const char *name, uint32_t *count)
{
    amqp_queue_declare_ok_t *ok =
        amqp_queue_declare(*c, 1, amqp_cstring_bytes(name), 1, 0, 0, 0, amqp_empty_table);
    if (ok == NULL) {
        checker_close(*c);
        *c = checker_open();
        return 0;
    }
    if (count)
        *count = ok->message_count;
    return 1;
}

static int exchange_exists(amqp_connection_state_t *c, const char *name)
{
    amqp_exchange_declare(*c, 1, amqp_cstring_bytes(name), amqp_cstring_bytes("topic"), 1, 0, 0,
                          0, amqp_empty_table);
    if (amqp_get_rpc_reply(*c).reply_type != AMQP_RESPONSE_NORMAL) {
        checker_close(*c);
        *c = checker_open();
        return 0;
    }
    return 1;
}

/* Fetch one message (no ack); 0 when the queue is empty. */
static int get_one(amqp_connection_state_t c, const char *queue, amqp_message_t *msg)
{
    amqp_rpc_reply_t r = amqp_basic_get(c, 1, amqp_cstring_bytes(queue), 1);
    assert_int_equal(r.reply_type, AMQP_RESPONSE_NORMAL);
    if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD)
        return 0;
    assert_int_equal(r.reply.id, AMQP_BASIC_GET_OK_METHOD);
    r = amqp_read_message(c, 1, msg, 0);
    assert_int_equal(r.reply_type, AMQP_RESPONSE_NORMAL);
    return 1;
}

static int bytes_eq(amqp_bytes_t b, const char *s)
{
    return b.len == strlen(s) && memcmp(b.bytes, s, b.len) == 0;
}

static const char *header(const amqp_basic_properties_t *p, const char *key, char *out, size_t cap)
{
    if (!(p->_flags & AMQP_BASIC_HEADERS_FLAG))
        return NULL;
    for (int i = 0; i < p->headers.num_entries; i++) {
        amqp_table_entry_t *e = &p->headers.entries[i];
        if (bytes_eq(e->key, key) && (e->value.kind == AMQP_FIELD_KIND_UTF8 ||
                                      e->value.kind == AMQP_FIELD_KIND_BYTES)) {
            snprintf(out, cap, "%.*s", (int)e->value.value.bytes.len,
                     (char *)e->value.value.bytes.bytes);
            return out;
        }
    }
    return NULL;
}

/* An event with its own storage. */
struct test_event {
    struct hg_event ev;
    char id[64];
    char json[128];
};

static void make_event(struct test_event *t, const char *rk, const char *type, int i)
{
    memset(t, 0, sizeof *t);
    snprintf(t->id, sizeof t->id, "wamid.%s.%d", type, i);
    snprintf(t->json, sizeof t->json, "{\"id\":\"%s\",\"n\":%d}", t->id, i);
    t->ev.event_id = t->id;
    t->ev.routing_key = rk;
    t->ev.kind = strncmp(rk, "status.", 7) == 0 ? "status" : "message";
    t->ev.type = type;
    t->ev.tenant = "tenant-a";
    t->ev.provider = "whatsapp";
    t->ev.correlation_id = "req-123";
    t->ev.timestamp_s = 1700000000;
    t->ev.priority = 5;
    t->ev.priority_class = "high";
    t->ev.json = t->json;
    t->ev.json_len = strlen(t->json);
}

/* Callback bookkeeping. */
struct tally {
    int calls, ok, rejected, unavailable, other;
};

static void on_result(void *arg, int status)
{
    struct tally *t = arg;
    t->calls++;
    if (status == 0)
        t->ok++;
    else if (status == HG_ERR_REJECTED)
        t->rejected++;
    else if (status == HG_ERR_UNAVAILABLE)
        t->unavailable++;
    else
        t->other++;
}

struct hook_tally {
    int calls;
    uint64_t max_latency_ns;
};

static void on_hook(void *arg, int status, uint64_t latency_ns)
{
    struct hook_tally *h = arg;
    h->calls++;
    if (latency_ns > h->max_latency_ns)
        h->max_latency_ns = latency_ns;
}

static void on_tick_keepalive(uv_timer_t *t)
{
    (void)t;
}

/* Run the loop until pred(arg) or timeout; returns pred's last value. */
static int run_until(uv_loop_t *loop, int (*pred)(void *), void *arg, uint64_t timeout_ms)
{
    uv_timer_t keep;
    uv_timer_init(loop, &keep);
    uv_timer_start(&keep, on_tick_keepalive, 5, 5);
    uint64_t end = hg_time_mono_ns() + timeout_ms * 1000000u;
    int r;
    while (!(r = pred(arg)) && hg_time_mono_ns() < end)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&keep, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return r;
}

static int sink_is_ready(void *arg)
{
    return ((struct hg_sink *)arg)->ops->ready(arg, NULL) == 0;
}

static int sink_is_down(void *arg)
{
    return ((struct hg_sink *)arg)->ops->ready(arg, NULL) != 0;
}

struct wait_calls {
    struct tally *t;
    int want;
};

static int calls_reached(void *arg)
{
    struct wait_calls *w = arg;
    return w->t->calls >= w->want;
}

static void on_closed(void *arg)
{
    *(int *)arg = 1;
}

static int flag_set(void *arg)
{
    return *(int *)arg;
}

static struct hg_sink *open_sink(uv_loop_t *loop, const char *const *urls, size_t n,
                                 struct hook_tally *hook)
{
    struct hg_amqp_opts o = {
        .urls = urls,
        .n_urls = n,
        .queue_type = "classic",
        .max_priority = 10,
        .queue_version = 2,
        .reconnect_min_ms = 50,
        .reconnect_max_ms = 500,
        .connect_timeout_ms = 3000,
        .on_confirm = hook ? on_hook : NULL,
        .hook_arg = hook,
    };
    struct hg_sink *s = NULL;
    assert_int_equal(hg_amqp_sink_open(loop, &o, &s), 0);
    assert_non_null(s);
    return s;
}

static void close_sink(uv_loop_t *loop, struct hg_sink *s)
{
    int closed = 0;
    s->ops->close(s, on_closed, &closed);
    assert_int_equal(closed, 0); /* done() never runs on the caller's stack */
    assert_true(run_until(loop, flag_set, &closed, 10000));
    uv_run(loop, UV_RUN_NOWAIT);
    assert_int_equal(uv_loop_close(loop), 0); /* every handle was released */
}

/* ---- wire format -------------------------------------------------------------------------- */

/* Reads everything a rabbitmq-c connection writes, until it closes the socket. */
struct capture {
    int fd;
    struct hg_buf got;
    pthread_t thread;
};

static void *capture_main(void *arg)
{
    struct capture *c = arg;
    char chunk[65536];
    for (;;) {
        ssize_t n = read(c->fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (hg_buf_append(&c->got, chunk, (size_t)n) != 0)
            break;
    }
    return NULL;
}

/* A rabbitmq-c connection whose socket is connected to a capture thread on loopback. No broker:
 * nothing is read from it, and amqp_basic_publish needs no login to write its frames. */
static amqp_connection_state_t capture_open(struct capture *cap, int frame_max)
{
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(ls >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    assert_int_equal(bind(ls, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(ls, 1), 0);
    assert_int_equal(getsockname(ls, (struct sockaddr *)&sa, &sl), 0);
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    assert_non_null(s);
    assert_int_equal(amqp_socket_open(s, "127.0.0.1", ntohs(sa.sin_port)), AMQP_STATUS_OK);
    cap->fd = accept(ls, NULL, NULL);
    assert_true(cap->fd >= 0);
    close(ls);
    /* A connection may be tuned only once it saw the broker's protocol header, as in a login. */
    char proto[8] = {'A', 'M', 'Q', 'P', 0, 0, 9, 1};
    amqp_frame_t f;
    assert_int_equal(amqp_handle_input(c, (amqp_bytes_t){.len = 8, .bytes = proto}, &f), 8);
    assert_int_equal(amqp_tune_connection(c, 0, frame_max, 0), AMQP_STATUS_OK);
    assert_int_equal(amqp_get_frame_max(c), frame_max);
    hg_buf_init(&cap->got, 16 * 1024 * 1024);
    assert_int_equal(pthread_create(&cap->thread, NULL, capture_main, cap), 0);
    return c;
}

/* Close rabbitmq-c's side; the capture then holds every byte it wrote. */
static void capture_close(struct capture *cap, amqp_connection_state_t c)
{
    amqp_destroy_connection(c);
    assert_int_equal(pthread_join(cap->thread, NULL), 0);
    close(cap->fd);
}

/* What the sink puts in the properties of ev (docs/amqp.md, "Message properties"), built here
 * independently of the sink so the comparison also checks that mapping. */
static void expected_properties(const struct hg_event *ev, const char *reason,
                                amqp_basic_properties_t *p, amqp_table_entry_t hdr[5])
{
    int n = 0;
    const char *keys[] = {"x-tenant-id", "x-provider", "x-event-type", "x-priority-class",
                          "x-death-reason"};
    const char *vals[] = {ev->tenant, ev->provider, ev->type, ev->priority_class, reason};
    for (int i = 0; i < 5; i++) {
        if (vals[i] == NULL)
            continue;
        hdr[n].key = amqp_cstring_bytes(keys[i]);
        hdr[n].value.kind = AMQP_FIELD_KIND_UTF8;
        hdr[n].value.value.bytes = amqp_cstring_bytes(vals[i]);
        n++;
    }
    memset(p, 0, sizeof *p);
    p->_flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
                AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_TIMESTAMP_FLAG | AMQP_BASIC_PRIORITY_FLAG |
                AMQP_BASIC_HEADERS_FLAG;
    p->content_type = amqp_cstring_bytes("application/json");
    p->delivery_mode = 2;
    p->message_id = amqp_cstring_bytes(ev->event_id);
    p->timestamp = ev->timestamp_s;
    p->priority = (uint8_t)(ev->priority < 0 ? 0 : ev->priority > 9 ? 9 : ev->priority);
    p->headers.num_entries = n;
    p->headers.entries = hdr;
    if (ev->correlation_id) {
        p->_flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
        p->correlation_id = amqp_cstring_bytes(ev->correlation_id);
    }
}

/* Count the frames in a byte stream by walking their headers; -1 when it is not well formed. */
static int count_frames(const uint8_t *p, size_t len, int type)
{
    int n = 0;
    size_t at = 0;
    while (at < len) {
        if (len - at < 8)
            return -1;
        uint32_t size = (uint32_t)p[at + 3] << 24 | (uint32_t)p[at + 4] << 16 |
                        (uint32_t)p[at + 5] << 8 | p[at + 6];
        if (len - at < 8 + (size_t)size || p[at + 7 + size] != 0xCE)
            return -1;
        if (p[at] == type)
            n++;
        at += 8 + size;
    }
    return n;
}

/*
 * The sink's own frames must be exactly what amqp_basic_publish writes for the same message: the
 * same publishes go through both, one after the other on one stream, and the two streams must be
 * equal byte for byte. Bodies of 0, 1, frame_max - 8 (one full frame), one byte more, and several
 * frames; with and without correlation id and headers; live and dead-letter.
 */
static void test_encode_matches_rabbitmq_c(void **state)
{
    (void)state;
    const int frame_maxes[] = {4096, 131072};
    for (size_t f = 0; f < sizeof frame_maxes / sizeof frame_maxes[0]; f++) {
        int fm = frame_maxes[f];
        size_t sizes[] = {0, 1, 57, (size_t)fm - 8, (size_t)fm - 7, 3 * ((size_t)fm - 8),
                          2 * (size_t)fm + 1000, 300000};
        size_t n_sizes = sizeof sizes / sizeof sizes[0];
        enum { BODY_MAX = 400000 }; /* the largest size above */
        char *body = malloc(BODY_MAX);
        assert_non_null(body);
        for (size_t i = 0; i < BODY_MAX; i++)
            body[i] = (char)('a' + (i * 7) % 26);
        struct capture cap;
        amqp_connection_state_t c = capture_open(&cap, fm);
        struct hg_buf mine;
        hg_buf_init(&mine, 16 * 1024 * 1024);
        int body_frames = 0;
        for (size_t i = 0; i < n_sizes; i++) {
            for (int variant = 0; variant < 3; variant++) {
                struct test_event t;
                make_event(&t, "message.text", "text", (int)i);
                assert_true(sizes[i] <= BODY_MAX);
                t.ev.json = body;
                t.ev.json_len = sizes[i];
                const char *reason = NULL;
                if (variant == 1) { /* no correlation id, no optional headers (the provider routes) */
                    t.ev.correlation_id = NULL;
                    t.ev.tenant = t.ev.type = t.ev.priority_class = NULL;
                    t.ev.priority = 42; /* clamped to 9 */
                } else if (variant == 2) { /* dead letter: DLX, "<queue>.dlq", x-death-reason */
                    reason = "unparseable";
                    t.ev.routing_key = "status.failed";
                }
                assert_int_equal(hg_amqp_encode_publish(&t.ev, reason, (size_t)fm, &mine), 0);

                amqp_basic_properties_t p;
                amqp_table_entry_t hdr[5];
                expected_properties(&t.ev, reason, &p, hdr);
                const char *exchange = reason ? HG_AMQP_DLX : HG_AMQP_EXCHANGE;
                const char *rk = reason ? HG_AMQP_QUEUE_STATUSES ".dlq" : t.ev.routing_key;
                amqp_bytes_t b = {.len = sizes[i], .bytes = body};
                assert_int_equal(amqp_basic_publish(c, 1, amqp_cstring_bytes(exchange),
                                                    amqp_cstring_bytes(rk), 1, 0, &p, b),
                                 AMQP_STATUS_OK);
                body_frames += sizes[i] ? (int)((sizes[i] + (size_t)fm - 9) / ((size_t)fm - 8)) : 0;
            }
        }
        capture_close(&cap, c);
        print_message("frame_max %d: %zu bytes from rabbitmq-c, %zu encoded\n", fm, cap.got.len,
                      mine.len);
        assert_int_equal(cap.got.len, mine.len);
        assert_memory_equal(cap.got.data, mine.data, mine.len);
        /* And the stream is what the spec says: one method and one header frame per publish, the
         * bodies cut at frame_max - 8. */
        assert_int_equal(count_frames((uint8_t *)mine.data, mine.len, 1), 3 * (int)n_sizes);
        assert_int_equal(count_frames((uint8_t *)mine.data, mine.len, 2), 3 * (int)n_sizes);
        assert_int_equal(count_frames((uint8_t *)mine.data, mine.len, 3), body_frames);
        hg_buf_free(&cap.got);
        hg_buf_free(&mine);
        free(body);
    }
}

/* Refusals leave the buffer as it was. */
static void test_encode_refuses(void **state)
{
    (void)state;
    struct hg_buf out;
    hg_buf_init(&out, 1024);
    struct test_event t;
    make_event(&t, "message.text", "text", 1);
    assert_int_equal(hg_amqp_encode_publish(&t.ev, NULL, 4095, &out), HG_ERR_INVALID);
    assert_int_equal(hg_amqp_encode_publish(&t.ev, NULL, 4096, &out), HG_ERR_TOO_BIG); /* cap */
    assert_int_equal(out.len, 0);
    hg_buf_free(&out);
    hg_buf_init(&out, 1024 * 1024);
    /* Properties that do not fit one header frame: amqp_basic_publish cannot send them either. */
    char *big = malloc(5000);
    memset(big, 'x', 4999);
    big[4999] = '\0';
    t.ev.tenant = big;
    assert_int_equal(hg_amqp_encode_publish(&t.ev, NULL, 4096, &out), HG_ERR_TOO_BIG);
    assert_int_equal(out.len, 0);
    t.ev.tenant = "tenant-a";
    t.ev.event_id = NULL;
    assert_int_equal(hg_amqp_encode_publish(&t.ev, NULL, 4096, &out), HG_ERR_INVALID);
    make_event(&t, "message.text", "text", 1);
    assert_int_equal(hg_amqp_encode_publish(&t.ev, NULL, 4096, &out), 0);
    assert_true(out.len > 0);
    free(big);
    hg_buf_free(&out);
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_open_rejects_bad_options(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct hg_sink *s = NULL;
    const char *bad[] = {"http://x/"};
    const char *tls[] = {"amqps://guest:guest@127.0.0.1:5671/"};
    const char *good[] = {"amqp://guest:guest@127.0.0.1:1/"};
    struct hg_amqp_opts o = {.urls = bad, .n_urls = 1};
    assert_int_equal(hg_amqp_sink_open(&loop, &o, &s), HG_ERR_CONFIG);
    /* amqps:// is taken (docs/backend-tls.md), but a client certificate needs its key. */
    o.urls = tls;
    o.tls_cert = "client.pem";
    assert_int_equal(hg_amqp_sink_open(&loop, &o, &s), HG_ERR_CONFIG);
    o.tls_cert = NULL;
    o.urls = good;
    o.n_urls = 0;
    assert_int_equal(hg_amqp_sink_open(&loop, &o, &s), HG_ERR_CONFIG);
    o.n_urls = 1;
    o.queue_type = "lazy";
    assert_int_equal(hg_amqp_sink_open(&loop, &o, &s), HG_ERR_CONFIG);
    o.queue_type = "classic";
    o.queue_version = 3;
    assert_int_equal(hg_amqp_sink_open(&loop, &o, &s), HG_ERR_CONFIG);
    assert_null(s);
    assert_string_equal(hg_amqp_queue_for("whatsapp", "message.text"), HG_AMQP_QUEUE_MESSAGES);
    assert_string_equal(hg_amqp_queue_for("whatsapp", "status.read"), HG_AMQP_QUEUE_STATUSES);
    assert_string_equal(hg_amqp_queue_for("whatsapp", "error.x"), HG_AMQP_QUEUE_SYSTEM);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* The check the config loader runs (so `hookgate -t` refuses what open refuses), and its reasons
 * never echo the URL, which carries the password. */
static void test_url_check(void **state)
{
    (void)state;
    char why[256];
    const char *ok[] = {"amqp://guest:guest@127.0.0.1:5672/", "amqps://u:p@broker.example:5671/vh",
                        "amqp://localhost", "amqps://b-1234.mq.eu-west-1.amazonaws.com:5671"};
    for (size_t i = 0; i < HG_ARRAY_SIZE(ok); i++) {
        why[0] = '\0';
        assert_int_equal(hg_amqp_url_check(ok[i], why, sizeof why), 0);
    }
    const char *bad[] = {"http://x/", "amqp://u:s3cr3t@host:notaport/", "amqp://u:s3cr3t@host:99999999/", "redis://x"};
    for (size_t i = 0; i < HG_ARRAY_SIZE(bad); i++) {
        why[0] = '\0';
        assert_int_equal(hg_amqp_url_check(bad[i], why, sizeof why), HG_ERR_CONFIG);
        assert_true(why[0] != '\0');
        assert_null(strstr(why, "s3cr3t"));
    }
}

/* Nothing listens: publish is refused at once, ready() says why, close still completes. */
static void test_unreachable_refuses(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    const char *urls[] = {"amqp://guest:guest@127.0.0.1:1/"};
    struct hg_sink *s = open_sink(&loop, urls, 1, NULL);
    struct test_event e;
    struct tally t = {0};
    make_event(&e, "message.text", "text", 0);
    const char *why = NULL;
    assert_int_equal(s->ops->ready(s, &why), HG_ERR_UNAVAILABLE);
    assert_non_null(why);
    assert_int_equal(s->ops->publish(s, &e.ev, on_result, &t), HG_ERR_UNAVAILABLE);
    struct hg_amqp_stats st;
    for (int i = 0; i < 50; i++) /* let a few attempts fail */
        uv_run(&loop, UV_RUN_ONCE);
    hg_amqp_sink_stats(s, &st);
    assert_int_equal(st.connects, 0);
    assert_int_equal(s->ops->ready(s, &why), HG_ERR_UNAVAILABLE);
    assert_string_equal(why, "broker unreachable or refused the connection");
    close_sink(&loop, s);
    assert_int_equal(t.calls, 0);
}

static void test_topology_declared(void **state)
{
    (void)state;
    NEED_BROKER();
    uv_loop_t loop;
    uv_loop_init(&loop);
    const char *urls[] = {test_url()};
    struct hg_sink *s = open_sink(&loop, urls, 1, NULL);
    assert_true(run_until(&loop, sink_is_ready, s, 15000));

    amqp_connection_state_t c = checker_open();
    assert_true(exchange_exists(&c, HG_AMQP_EXCHANGE));
    assert_true(exchange_exists(&c, HG_AMQP_DLX));
    assert_false(exchange_exists(&c, "whatsapp.nonexistent"));
    const char *q[] = {HG_AMQP_QUEUE_MESSAGES, HG_AMQP_QUEUE_STATUSES, HG_AMQP_QUEUE_SYSTEM,
                       HG_AMQP_QUEUE_MESSAGES ".dlq", HG_AMQP_QUEUE_STATUSES ".dlq",
                       HG_AMQP_QUEUE_SYSTEM ".dlq"};
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++)
        assert_true(queue_exists(&c, q[i], NULL));
    assert_false(queue_exists(&c, "NO_SUCH_QUEUE", NULL));
    checker_close(c);
    close_sink(&loop, s);
}

static void check_message(amqp_message_t *m, const char *type)
{
    char buf[128];
    amqp_basic_properties_t *p = &m->properties;
    assert_true(p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG);
    snprintf(buf, sizeof buf, "%.*s", (int)p->message_id.len, (char *)p->message_id.bytes);
    assert_true(strncmp(buf, "wamid.", 6) == 0);
    assert_non_null(strstr((char *)m->body.bytes, buf) ? buf : NULL); /* body carries its id */
    assert_true(p->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG);
    assert_int_equal(p->delivery_mode, 2);
    assert_true(bytes_eq(p->content_type, "application/json"));
    assert_true(bytes_eq(p->correlation_id, "req-123"));
    assert_int_equal(p->timestamp, 1700000000);
    assert_int_equal(p->priority, 5);
    assert_string_equal(header(p, "x-tenant-id", buf, sizeof buf), "tenant-a");
    assert_string_equal(header(p, "x-provider", buf, sizeof buf), "whatsapp");
    assert_string_equal(header(p, "x-event-type", buf, sizeof buf), type);
    assert_string_equal(header(p, "x-priority-class", buf, sizeof buf), "high");
}

static void test_publish_confirm_and_consume(void **state)
{
    (void)state;
    NEED_BROKER();
    enum { N = 20 };
    purge_all();
    uv_loop_t loop;
    uv_loop_init(&loop);
    const char *urls[] = {test_url()};
    struct hook_tally hook = {0};
    struct hg_sink *s = open_sink(&loop, urls, 1, &hook);
    assert_true(run_until(&loop, sink_is_ready, s, 15000));

    struct tally t = {0};
    for (int i = 0; i < N; i++) {
        struct test_event e;
        if (i % 2)
            make_event(&e, "status.read", "read", i);
        else
            make_event(&e, "message.text", "text", i);
        assert_int_equal(s->ops->publish(s, &e.ev, on_result, &t), 0);
    }
    assert_int_equal(t.calls, 0); /* never on the caller's stack */
    struct wait_calls w = {&t, N};
    assert_true(run_until(&loop, calls_reached, &w, 10000));
    assert_int_equal(t.ok, N);
    assert_int_equal(hook.calls, N);
    assert_true(hook.max_latency_ns > 0);
    struct hg_amqp_stats st;
    hg_amqp_sink_stats(s, &st);
    assert_int_equal(st.published, N);
    assert_int_equal(st.confirmed, N);
    assert_int_equal(st.inflight, 0);
    assert_int_equal(st.url_index, 0);

    amqp_connection_state_t c = checker_open();
    amqp_message_t m;
    int got = 0;
    while (get_one(c, HG_AMQP_QUEUE_MESSAGES, &m)) {
        check_message(&m, "text");
        amqp_destroy_message(&m);
        got++;
    }
    assert_int_equal(got, N / 2);
    got = 0;
    while (get_one(c, HG_AMQP_QUEUE_STATUSES, &m)) {
        check_message(&m, "read");
        amqp_destroy_message(&m);
        got++;
    }
    assert_int_equal(got, N / 2);
    assert_int_equal(get_one(c, HG_AMQP_QUEUE_SYSTEM, &m), 0);
    checker_close(c);
    close_sink(&loop, s);
}

/* Mandatory + no binding → basic.return then basic.ack: the callback must say REJECTED. */
static void test_unroutable_is_rejected(void **state)
{
    (void)state;
    NEED_BROKER();
    uv_loop_t loop;
    uv_loop_init(&loop);
    const char *urls[] = {test_url()};
    struct hg_sink *s = open_sink(&loop, urls, 1, NULL);
    assert_true(run_until(&loop, sink_is_ready, s, 15000));
    struct tally bad = {0}, good = {0};
    struct test_event e1, e2, e3;
    make_event(&e1, "message.text", "text", 1000);
    make_event(&e2, "nowhere.x", "x", 1001);
    make_event(&e3, "message.text", "text", 1002);
    assert_int_equal(s->ops->publish(s, &e1.ev, on_result, &good), 0);
    assert_int_equal(s->ops->publish(s, &e2.ev, on_result, &bad), 0);
    assert_int_equal(s->ops->publish(s, &e3.ev, on_result, &good), 0);
    struct wait_calls w = {&bad, 1};
    assert_true(run_until(&loop, calls_reached, &w, 10000));
    struct wait_calls w2 = {&good, 2};
    assert_true(run_until(&loop, calls_reached, &w2, 10000));
    assert_int_equal(bad.rejected, 1);
    assert_int_equal(good.ok, 2);
    struct hg_amqp_stats st;
    hg_amqp_sink_stats(s, &st);
    assert_int_equal(st.returned, 1);
    assert_int_equal(st.confirmed, 2);
    assert_int_equal(s->ops->ready(s, NULL), 0); /* a return is not a connection problem */
    close_sink(&loop, s);
    purge_all();
}

static void test_publish_dead(void **state)
{
    (void)state;
    NEED_BROKER();
    purge_all();
    uv_loop_t loop;
    uv_loop_init(&loop);
    const char *urls[] = {test_url()};
    struct hg_sink *s = open_sink(&loop, urls, 1, NULL);
    assert_true(run_until(&loop, sink_is_ready, s, 15000));
    struct tally t = {0};
    struct test_event e;
    make_event(&e, "status.failed", "failed", 7);
    assert_int_equal(hg_amqp_publish_dead(s, &e.ev, NULL, on_result, &t), HG_ERR_INVALID);
    assert_int_equal(hg_amqp_publish_dead(s, &e.ev, "unparseable", on_result, &t), 0);
    struct wait_calls w = {&t, 1};
    assert_true(run_until(&loop, calls_reached, &w, 10000));
    assert_int_equal(t.ok, 1);

    amqp_connection_state_t c = checker_open();
    amqp_message_t m;
    char buf[64];
    assert_int_equal(get_one(c, HG_AMQP_QUEUE_STATUSES, &m), 0); /* not the live queue */
    assert_int_equal(get_one(c, HG_AMQP_QUEUE_STATUSES ".dlq", &m), 1);
    assert_string_equal(header(&m.properties, "x-death-reason", buf, sizeof buf), "unparseable");
    assert_true(bytes_eq(m.properties.message_id, "wamid.failed.7"));
    amqp_destroy_message(&m);
    checker_close(c);
    close_sink(&loop, s);
}

/* First URL refuses (closed port), the second is the broker. */
static void test_url_failover(void **state)
{
    (void)state;
    NEED_BROKER();
    uv_loop_t loop;
    uv_loop_init(&loop);
    const char *urls[] = {"amqp://guest:guest@127.0.0.1:1/", test_url()};
    struct hg_sink *s = open_sink(&loop, urls, 2, NULL);
    assert_true(run_until(&loop, sink_is_ready, s, 15000));
    struct hg_amqp_stats st;
    hg_amqp_sink_stats(s, &st);
    assert_int_equal(st.url_index, 1);
    struct tally t = {0};
    struct test_event e;
    make_event(&e, "message.text", "text", 2000);
    assert_int_equal(s->ops->publish(s, &e.ev, on_result, &t), 0);
    struct wait_calls w = {&t, 1};
    assert_true(run_until(&loop, calls_reached, &w, 10000));
    assert_int_equal(t.ok, 1);
    close_sink(&loop, s);
    purge_all();
}

/*
 * 5000 publishes in bursts of 50 per tick while a 1 ms timer measures the loop's gaps. A sink that
 * blocked on the broker would stall the loop again and again; a single long gap is the scheduler
 * (the machine is shared with the broker and other tests), so isolated gaps are tolerated.
 */
#define BURST_GAP_NS (50u * 1000000u)
struct burst {
    struct hg_sink *sink;
    struct tally t;
    int sent, refused;
    uint64_t last_ns, max_gap_ns;
    unsigned long_gaps;            /* gaps over BURST_GAP_NS */
    uv_timer_t probe, feeder;
};

static void on_probe(uv_timer_t *h)
{
    struct burst *b = h->data;
    uint64_t now = hg_time_mono_ns();
    if (b->last_ns && now - b->last_ns > b->max_gap_ns)
        b->max_gap_ns = now - b->last_ns;
    if (b->last_ns && now - b->last_ns > BURST_GAP_NS)
        b->long_gaps++;
    b->last_ns = now;
}

static void on_feed(uv_timer_t *h)
{
    struct burst *b = h->data;
    for (int i = 0; i < 50 && b->sent < 5000; i++) {
        struct test_event e;
        make_event(&e, (b->sent % 2) ? "status.delivered" : "message.text", "burst", b->sent);
        int rc = b->sink->ops->publish(b->sink, &e.ev, on_result, &b->t);
        if (rc == 0)
            b->sent++;
        else {
            b->refused++;
            break; /* pending queue full: try again next tick */
        }
    }
    if (b->sent >= 5000)
        uv_timer_stop(h);
}

static int burst_done(void *arg)
{
    struct burst *b = arg;
    return b->sent == 5000 && b->t.calls == 5000;
}

static void test_burst_never_blocks_loop(void **state)
{
    (void)state;
    NEED_BROKER();
    purge_all();
    uv_loop_t loop;
    uv_loop_init(&loop);
    const char *urls[] = {test_url()};
    static struct burst b;
    memset(&b, 0, sizeof b);
    b.sink = open_sink(&loop, urls, 1, NULL);
    assert_true(run_until(&loop, sink_is_ready, b.sink, 15000));
    uv_timer_init(&loop, &b.probe);
    uv_timer_init(&loop, &b.feeder);
    b.probe.data = b.feeder.data = &b;
    uv_timer_start(&b.probe, on_probe, 1, 1);
    uv_timer_start(&b.feeder, on_feed, 1, 1);
    assert_true(run_until(&loop, burst_done, &b, 60000));
    uv_close((uv_handle_t *)&b.probe, NULL);
    uv_close((uv_handle_t *)&b.feeder, NULL);
    print_message("burst: max loop gap %.2f ms, %u gaps over 50 ms, refused %d\n", b.max_gap_ns / 1e6,
                  b.long_gaps, b.refused);
    assert_int_equal(b.t.ok, 5000);
    assert_true(b.long_gaps <= 2);
    assert_true(b.max_gap_ns < 10u * BURST_GAP_NS);
    close_sink(&loop, b.sink);
    purge_all();
}

/*
 * Every send() of the process goes through here so a test can count the sink's writes (the sink
 * and rabbitmq-c both write with send(); nothing else in this binary does while it counts).
 */
static unsigned long sends_counted;

ssize_t send(int fd, const void *buf, size_t len, int flags)
{
    static ssize_t (*real_send)(int, const void *, size_t, int);
    if (real_send == NULL)
        real_send = (ssize_t (*)(int, const void *, size_t, int))dlsym(RTLD_NEXT, "send");
    __atomic_add_fetch(&sends_counted, 1, __ATOMIC_RELAXED);
    return real_send(fd, buf, len, flags);
}

/* One publish of the one-turn test: its place in the sequence and what its callback saw. */
struct turn_pub {
    struct turn *turn;
    int idx;
};

/*
 * RabbitMQ confirms a channel's publishes asynchronously, as each queue has persisted them: in
 * order within one queue for messages kept in its index (below 4 KiB), in any order across queues
 * or for large messages (the message store syncs on its own). So the order is checked per queue
 * (publish i goes to queue i % queues) and among the small messages only.
 */
struct turn {
    int n, calls, ok, queues, out_of_order;
    int last_small[3];
};

static bool turn_small(int i);

static void on_turn_result(void *arg, int status)
{
    struct turn_pub *p = arg;
    struct turn *t = p->turn;
    int q = p->idx % t->queues;
    t->calls++;
    if (status == 0)
        t->ok++;
    if (!turn_small(p->idx))
        return;
    if (p->idx <= t->last_small[q])
        t->out_of_order++;
    t->last_small[q] = p->idx;
}

static int turn_done(void *arg)
{
    struct turn *t = arg;
    return t->calls == t->n;
}

/* Publish i of the one-turn test: a third status.read to the statuses queue, a third
 * message.text, a third dead-lettered; every fourth without correlation id; bodies of 0..~3 KiB,
 * every hundredth 200,000 bytes (two body frames at frame_max 131072). */
enum { TURN_N = 500 };

static bool turn_small(int i)
{
    return i % 100 != 50;
}

static char *turn_body(int i, size_t *len)
{
    size_t pad = turn_small(i) ? (size_t)(i * 37) % 3000 : 200000;
    char *b = malloc(pad + 64);
    assert_non_null(b);
    int n = snprintf(b, 64, "{\"id\":\"wamid.turn.%d\",\"n\":%d,\"pad\":\"", i, i);
    memset(b + n, 'a' + i % 26, pad);
    memcpy(b + n + pad, "\"}", 3);
    *len = (size_t)n + pad + 2;
    return b;
}

static void turn_event(struct test_event *t, int i, char *body, size_t len)
{
    make_event(t, i % 3 == 0 ? "status.read" : "message.text", i % 3 == 0 ? "read" : "text", i);
    snprintf(t->id, sizeof t->id, "wamid.turn.%d", i);
    t->ev.json = body;
    t->ev.json_len = len;
    if (i % 4 == 0)
        t->ev.correlation_id = NULL;
}

/* What a consumer must find for publish i, read from `queue` in order. */
static void check_turn_message(amqp_message_t *m, int i)
{
    char buf[64];
    size_t len;
    char *body = turn_body(i, &len);
    amqp_basic_properties_t *p = &m->properties;
    snprintf(buf, sizeof buf, "wamid.turn.%d", i);
    assert_true(bytes_eq(p->message_id, buf));
    assert_int_equal(m->body.len, len);
    assert_memory_equal(m->body.bytes, body, len);
    assert_int_equal(p->delivery_mode, 2);
    assert_true(bytes_eq(p->content_type, "application/json"));
    if (i % 4 == 0)
        assert_false(p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG);
    else
        assert_true(bytes_eq(p->correlation_id, "req-123"));
    assert_int_equal(p->timestamp, 1700000000);
    assert_int_equal(p->priority, 5);
    assert_string_equal(header(p, "x-tenant-id", buf, sizeof buf), "tenant-a");
    assert_string_equal(header(p, "x-event-type", buf, sizeof buf), i % 3 == 0 ? "read" : "text");
    if (i % 3 == 2)
        assert_string_equal(header(p, "x-death-reason", buf, sizeof buf), "unparseable");
    else
        assert_null(header(p, "x-death-reason", buf, sizeof buf));
    free(body);
}

/*
 * Publishes made in one loop turn leave in one send() (200 small ones: they fit the send window
 * together), and a turn of 500 with large bodies and dead letters mixed in is confirmed in
 * publish order, each message arriving with its own body and properties.
 */
static void test_one_turn_one_send(void **state)
{
    (void)state;
    NEED_BROKER();
    purge_all();
    uv_loop_t loop;
    uv_loop_init(&loop);
    const char *urls[] = {test_url()};
    struct hg_sink *s = open_sink(&loop, urls, 1, NULL);
    assert_true(run_until(&loop, sink_is_ready, s, 15000));

    /* 200 small publishes, then one turn of the loop. */
    static struct turn_pub pubs[TURN_N];
    struct turn small = {.n = 200, .queues = 1, .last_small = {-1}};
    for (int i = 0; i < small.n; i++) {
        struct test_event e;
        make_event(&e, "message.text", "text", 10000 + i);
        pubs[i] = (struct turn_pub){.turn = &small, .idx = i};
        assert_int_equal(s->ops->publish(s, &e.ev, on_turn_result, &pubs[i]), 0);
    }
    struct hg_amqp_stats st;
    hg_amqp_sink_stats(s, &st);
    assert_int_equal(st.published, 0); /* nothing is written on the caller's stack */
    assert_int_equal(st.pending, 200);
    unsigned long before = __atomic_load_n(&sends_counted, __ATOMIC_RELAXED);
    uv_run(&loop, UV_RUN_NOWAIT);
    unsigned long sends = __atomic_load_n(&sends_counted, __ATOMIC_RELAXED) - before;
    hg_amqp_sink_stats(s, &st);
    print_message("one turn: %zu of 200 published with %lu send()\n", (size_t)st.published, sends);
    assert_int_equal(st.published, 200);
    assert_int_equal(sends, 1);
    assert_true(run_until(&loop, turn_done, &small, 10000));
    assert_int_equal(small.ok, 200);
    assert_int_equal(small.out_of_order, 0);

    /* 500 mixed publishes in one turn: more than one send window, so several flushes. */
    purge_all();
    struct turn big = {.n = TURN_N, .queues = 3, .last_small = {-1, -1, -1}};
    for (int i = 0; i < TURN_N; i++) {
        struct test_event e;
        size_t len;
        char *body = turn_body(i, &len);
        turn_event(&e, i, body, len);
        pubs[i] = (struct turn_pub){.turn = &big, .idx = i};
        if (i % 3 == 2)
            assert_int_equal(hg_amqp_publish_dead(s, &e.ev, "unparseable", on_turn_result, &pubs[i]),
                             0);
        else
            assert_int_equal(s->ops->publish(s, &e.ev, on_turn_result, &pubs[i]), 0);
        free(body); /* the sink keeps its own copy */
    }
    assert_true(run_until(&loop, turn_done, &big, 30000));
    assert_int_equal(big.ok, TURN_N);
    assert_int_equal(big.out_of_order, 0);
    hg_amqp_sink_stats(s, &st);
    assert_int_equal(st.published, 200 + TURN_N);
    assert_int_equal(st.confirmed, 200 + TURN_N);

    /* Each queue holds its share in publish order (all of priority 5, so FIFO). */
    amqp_connection_state_t c = checker_open();
    const char *queues[3] = {HG_AMQP_QUEUE_STATUSES, HG_AMQP_QUEUE_MESSAGES,
                             HG_AMQP_QUEUE_MESSAGES ".dlq"};
    for (int q = 0; q < 3; q++) {
        amqp_message_t m;
        int next = q, got = 0;
        while (get_one(c, queues[q], &m)) {
            assert_true(next < TURN_N);
            check_turn_message(&m, next);
            amqp_destroy_message(&m);
            next += 3;
            got++;
        }
        assert_int_equal(got, (TURN_N - q + 2) / 3);
    }
    checker_close(c);
    close_sink(&loop, s);
    purge_all();
}

/* ---- broker loss -------------------------------------------------------------------------- */

struct ctl_run {
    uv_process_t proc;
    int done;
    int64_t exit_status;
};

static void on_ctl_exit(uv_process_t *p, int64_t exit_status, int term_signal)
{
    struct ctl_run *r = HG_CONTAINER_OF(p, struct ctl_run, proc);
    (void)term_signal;
    r->exit_status = exit_status;
    r->done = 1;
    uv_close((uv_handle_t *)p, NULL);
}

/* Run `$HG_TEST_RABBITMQ_CTL args...` without blocking the loop; waits for it by running it. */
static void ctl(uv_loop_t *loop, const char *a1, const char *a2)
{
    struct ctl_run r;
    memset(&r, 0, sizeof r);
    char *args[] = {(char *)getenv("HG_TEST_RABBITMQ_CTL"), (char *)a1, (char *)a2, NULL};
    uv_stdio_container_t io[3] = {{.flags = UV_IGNORE}, {.flags = UV_IGNORE},
                                  {.flags = UV_INHERIT_FD, .data.fd = 2}};
    uv_process_options_t o = {.exit_cb = on_ctl_exit, .file = args[0], .args = args,
                              .stdio_count = 3, .stdio = io};
    assert_int_equal(uv_spawn(loop, &r.proc, &o), 0);
    assert_true(run_until(loop, flag_set, &r.done, 60000));
    uv_run(loop, UV_RUN_NOWAIT);
    assert_int_equal(r.exit_status, 0);
}

static void test_broker_loss_and_reconnect(void **state)
{
    (void)state;
    NEED_BROKER();
    if (getenv("HG_TEST_RABBITMQ_CTL") == NULL) {
        print_message("HG_TEST_RABBITMQ_CTL unset: skipped\n");
        skip();
    }
    purge_all();
    uv_loop_t loop;
    uv_loop_init(&loop);
    const char *urls[] = {test_url()};
    struct hg_sink *s = open_sink(&loop, urls, 1, NULL);
    assert_true(run_until(&loop, sink_is_ready, s, 15000));

    /* A memory alarm makes the broker stop reading publishes, so these stay unconfirmed. */
    ctl(&loop, "set_vm_memory_high_watermark", "0");
    struct tally t = {0};
    enum { N = 50 };
    for (int i = 0; i < N; i++) {
        struct test_event e;
        make_event(&e, "message.text", "text", 3000 + i);
        assert_int_equal(s->ops->publish(s, &e.ev, on_result, &t), 0);
    }
    struct wait_calls never = {&t, 1};
    assert_false(run_until(&loop, calls_reached, &never, 500));
    struct hg_amqp_stats st;
    hg_amqp_sink_stats(s, &st);
    assert_int_equal(st.inflight + st.pending, N);

    /* stop_app closes every connection: each unconfirmed publish must come back UNAVAILABLE. */
    ctl(&loop, "stop_app", NULL);
    struct wait_calls all = {&t, N};
    assert_true(run_until(&loop, calls_reached, &all, 15000));
    assert_int_equal(t.unavailable, N);
    assert_int_equal(t.ok + t.rejected + t.other, 0);
    const char *why = NULL;
    assert_int_equal(s->ops->ready(s, &why), HG_ERR_UNAVAILABLE);
    assert_non_null(why);
    struct test_event e;
    struct tally late = {0};
    make_event(&e, "message.text", "text", 3999);
    assert_int_equal(s->ops->publish(s, &e.ev, on_result, &late), HG_ERR_UNAVAILABLE);
    assert_true(run_until(&loop, sink_is_down, s, 100)); /* still down while stopped */

    /* Back up (the runtime alarm setting does not survive a restart): reconnects, works. */
    ctl(&loop, "start_app", NULL);
    assert_true(run_until(&loop, sink_is_ready, s, 30000));
    hg_amqp_sink_stats(s, &st);
    assert_int_equal(st.connects, 2);
    assert_int_equal(st.disconnects, 1);
    assert_int_equal(st.failed, N);
    struct tally after = {0};
    for (int i = 0; i < 10; i++) {
        make_event(&e, "status.read", "read", 4000 + i);
        assert_int_equal(s->ops->publish(s, &e.ev, on_result, &after), 0);
    }
    struct wait_calls w = {&after, 10};
    assert_true(run_until(&loop, calls_reached, &w, 15000));
    assert_int_equal(after.ok, 10);
    assert_int_equal(late.calls, 0);
    close_sink(&loop, s);
    purge_all();
}

/*
 * A broker under a memory alarm stops reading the socket. The sink must fill its send window,
 * queue up to max_pending, then refuse — never wait inside rabbitmq-c — and drain when unblocked.
 */
struct blocked {
    struct hg_sink *sink;
    struct tally t;
    int accepted, refused;
    char *json;
    uint64_t last_ns, max_gap_ns;
    unsigned long_gaps;            /* gaps over BURST_GAP_NS */
    struct hg_amqp_stats at_refusal;
    uv_timer_t probe, feeder;
};

static void on_blocked_probe(uv_timer_t *h)
{
    struct blocked *b = h->data;
    uint64_t now = hg_time_mono_ns();
    if (b->last_ns && now - b->last_ns > b->max_gap_ns)
        b->max_gap_ns = now - b->last_ns;
    if (b->last_ns && now - b->last_ns > BURST_GAP_NS)
        b->long_gaps++;
    b->last_ns = now;
}

static void on_blocked_feed(uv_timer_t *h)
{
    struct blocked *b = h->data;
    for (int i = 0; i < 20 && b->refused == 0; i++) {
        struct test_event e;
        make_event(&e, "message.text", "big", 6000 + b->accepted);
        e.ev.json = b->json;
        e.ev.json_len = 16384;
        if (b->sink->ops->publish(b->sink, &e.ev, on_result, &b->t) == 0)
            b->accepted++;
        else if (b->refused++ == 0)
            hg_amqp_sink_stats(b->sink, &b->at_refusal);
    }
}

static int blocked_refused(void *arg)
{
    return ((struct blocked *)arg)->refused > 0;
}

static int blocked_all_settled(void *arg)
{
    struct blocked *b = arg;
    return b->t.calls == b->accepted;
}

static void test_blocked_broker_never_blocks_loop(void **state)
{
    (void)state;
    NEED_BROKER();
    if (getenv("HG_TEST_RABBITMQ_CTL") == NULL) {
        print_message("HG_TEST_RABBITMQ_CTL unset: skipped\n");
        skip();
    }
    purge_all();
    uv_loop_t loop;
    uv_loop_init(&loop);
    const char *urls[] = {test_url()};
    struct hg_amqp_opts o = {.urls = urls, .n_urls = 1, .max_priority = 10, .queue_version = 2,
                             .max_pending = 300};
    static struct blocked b;
    memset(&b, 0, sizeof b);
    assert_int_equal(hg_amqp_sink_open(&loop, &o, &b.sink), 0);
    assert_true(run_until(&loop, sink_is_ready, b.sink, 15000));
    b.json = malloc(16384);
    memset(b.json, ' ', 16384);
    b.json[0] = '{';
    b.json[16383] = '}';

    ctl(&loop, "set_vm_memory_high_watermark", "0");
    uv_timer_init(&loop, &b.probe);
    uv_timer_init(&loop, &b.feeder);
    b.probe.data = b.feeder.data = &b;
    uv_timer_start(&b.probe, on_blocked_probe, 1, 1);
    uv_timer_start(&b.feeder, on_blocked_feed, 1, 1);
    assert_true(run_until(&loop, blocked_refused, &b, 60000));
    uv_timer_stop(&b.feeder);
    struct hg_amqp_stats st;
    hg_amqp_sink_stats(b.sink, &st);
    print_message("blocked: accepted %d, inflight %zu, pending %zu, max gap %.2f ms, %u over 50 ms\n",
                  b.accepted, st.inflight, st.pending, b.max_gap_ns / 1e6, b.long_gaps);
    /* Refused because the send window filled, then the queue. Taken at the refusal: the flush
     * before the loop's next poll may still find a little room once the broker's receive buffer
     * takes a few more bytes. */
    assert_int_equal(b.at_refusal.pending, 300);
    assert_int_equal(b.at_refusal.inflight + b.at_refusal.pending, b.accepted);
    assert_true(b.at_refusal.inflight < 100);    /* 16 KiB each: the window holds about 16 */
    assert_true(b.t.calls < b.accepted);         /* and the broker is really not confirming */
    /* while the loop kept running (a stall per blocked write would show as many long gaps) */
    assert_true(b.long_gaps <= 2);
    assert_true(b.max_gap_ns < 10u * BURST_GAP_NS);

    ctl(&loop, "set_vm_memory_high_watermark", "0.8");
    assert_true(run_until(&loop, blocked_all_settled, &b, 60000));
    assert_int_equal(b.t.ok, b.accepted);
    uv_close((uv_handle_t *)&b.probe, NULL);
    uv_close((uv_handle_t *)&b.feeder, NULL);
    close_sink(&loop, b.sink);
    free(b.json);
    purge_all();
}

/* close() with publishes in flight: they settle (confirmed) before done() runs. */
static void test_close_flushes(void **state)
{
    (void)state;
    NEED_BROKER();
    uv_loop_t loop;
    uv_loop_init(&loop);
    const char *urls[] = {test_url()};
    struct hg_sink *s = open_sink(&loop, urls, 1, NULL);
    assert_true(run_until(&loop, sink_is_ready, s, 15000));
    struct tally t = {0};
    for (int i = 0; i < 100; i++) {
        struct test_event e;
        make_event(&e, "message.text", "text", 5000 + i);
        assert_int_equal(s->ops->publish(s, &e.ev, on_result, &t), 0);
    }
    int closed = 0;
    s->ops->close(s, on_closed, &closed);
    assert_int_equal(t.calls, 0);
    assert_true(run_until(&loop, flag_set, &closed, 10000));
    assert_int_equal(t.ok, 100);
    assert_int_equal(uv_loop_close(&loop), 0);
    purge_all();
}

/* ---- queue arguments (x-queue-version) ---------------------------------------------------- */

#define NEED_CTL()                                                                         \
    do {                                                                                   \
        NEED_BROKER();                                                                     \
        if (getenv("HG_TEST_RABBITMQ_CTL") == NULL) {                                      \
            print_message("HG_TEST_RABBITMQ_CTL unset: skipped\n");                        \
            skip();                                                                        \
        }                                                                                  \
    } while (0)

/* Run `$HG_TEST_RABBITMQ_CTL -q args...` (args NULL-terminated), blocking: no sink is waiting for
 * the loop meanwhile, or one can wait (heartbeats are 30 s). Its stdout into out (capped, NUL
 * terminated) when out is not NULL. Asserts it exited 0. */
static void ctl_run(char *out, size_t cap, const char *const *args)
{
    const char *argv[16] = {getenv("HG_TEST_RABBITMQ_CTL"), "-q"};
    size_t n = 2;
    for (; args[n - 2] != NULL; n++) {
        assert_true(n < HG_ARRAY_SIZE(argv) - 1);
        argv[n] = args[n - 2];
    }
    argv[n] = NULL;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    size_t len = 0;
    char chunk[4096];
    for (;;) {
        ssize_t r = read(fds[0], chunk, sizeof chunk);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        if (out && len + 1 < cap) {
            size_t take = HG_MIN((size_t)r, cap - 1 - len);
            memcpy(out + len, chunk, take);
            len += take;
        }
    }
    close(fds[0]);
    if (out)
        out[len] = '\0';
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* A fresh vhost of the test broker that the test URL's user may use, so that queues declared by
 * other tests (or another queue_version) cannot meet these; its URL in url. */
static void vhost_add(char *name, size_t name_cap, char *url, size_t url_cap)
{
    static unsigned seq;
    snprintf(name, name_cap, "hgu-%ld-%u", (long)getpid(), seq++);
    struct amqp_connection_info info;
    char *base = strdup(test_url());
    assert_int_equal(amqp_parse_url(base, &info), AMQP_STATUS_OK);
    snprintf(url, url_cap, "amqp://%s:%s@%s:%d/%s", info.user, info.password, info.host, info.port, name);
    const char *const add[] = {"add_vhost", name, NULL};
    ctl_run(NULL, 0, add);
    const char *const perm[] = {"set_permissions", "-p", name, info.user, ".*", ".*", ".*", NULL};
    ctl_run(NULL, 0, perm);
    free(base);
}

static void vhost_delete(const char *name)
{
    const char *const del[] = {"delete_vhost", name, NULL};
    ctl_run(NULL, 0, del);
}

/* `list_queues name arguments` of vhost into out (one "name\targuments" line a queue). */
static void list_queues(const char *vhost, char *out, size_t cap)
{
    const char *const args[] = {"list_queues", "-p", vhost, "name", "arguments", NULL};
    ctl_run(out, cap, args);
}

/* Whether queue's (exact name) arguments in a listing hold key, with value when value is not
 * NULL (as list_queues prints it: {"x-queue-version",2}). */
static bool has_arg(const char *listing, const char *queue, const char *key, const char *value)
{
    char want[128];
    snprintf(want, sizeof want, "{\"%s\",%s%s", key, value ? value : "", value ? "}" : "");
    size_t qlen = strlen(queue);
    for (const char *line = listing; *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        if (len > qlen && strncmp(line, queue, qlen) == 0 && line[qlen] == '\t') {
            char args[1024];
            snprintf(args, sizeof args, "%.*s", (int)(len - qlen - 1), line + qlen + 1);
            return strstr(args, want) != NULL;
        }
        line += len + (end != NULL);
    }
    fail_msg("queue %s not in the listing:\n%s", queue, listing);
    return false;
}

static const char *const all_queues[] = {HG_AMQP_QUEUE_MESSAGES, HG_AMQP_QUEUE_STATUSES,
                                         HG_AMQP_QUEUE_SYSTEM, HG_AMQP_QUEUE_MESSAGES ".dlq",
                                         HG_AMQP_QUEUE_STATUSES ".dlq", HG_AMQP_QUEUE_SYSTEM ".dlq"};

/* Open a sink on url with queue_version qv (max_priority 10) and wait until it is ready. */
static struct hg_sink *open_ready(uv_loop_t *loop, const char *url, unsigned qv)
{
    const char *urls[] = {url};
    struct hg_amqp_opts o = {.urls = urls, .n_urls = 1, .queue_type = "classic", .max_priority = 10,
                             .queue_version = qv, .reconnect_min_ms = 50, .reconnect_max_ms = 500,
                             .connect_timeout_ms = 3000};
    struct hg_sink *s = NULL;
    assert_int_equal(hg_amqp_sink_open(loop, &o, &s), 0);
    assert_true(run_until(loop, sink_is_ready, s, 15000));
    return s;
}

/* The default topology asks for CQv2 on every queue, the DLQs too; queue_version 0 leaves the
 * argument out. */
static void test_queue_version_declared(void **state)
{
    (void)state;
    NEED_CTL();
    char vh[64], url[256];
    for (unsigned qv = 0; qv <= 2; qv += 2) {
        vhost_add(vh, sizeof vh, url, sizeof url);
        uv_loop_t loop;
        uv_loop_init(&loop);
        struct hg_sink *s = open_ready(&loop, url, qv);
        struct hg_amqp_stats st;
        hg_amqp_sink_stats(s, &st);
        assert_int_equal(st.queues_without_version, 0);
        assert_int_equal(st.queues_without_priority, 0);
        static char listing[16384];
        list_queues(vh, listing, sizeof listing);
        for (size_t i = 0; i < HG_ARRAY_SIZE(all_queues); i++) {
            if (qv == 2)
                assert_true(has_arg(listing, all_queues[i], "x-queue-version", "2"));
            else
                assert_false(has_arg(listing, all_queues[i], "x-queue-version", NULL));
            /* Priorities stay on the live queues only, whatever the version. */
            assert_int_equal(has_arg(listing, all_queues[i], "x-max-priority", "10"), i < 3);
        }
        /* A second connect finds its own topology equivalent: nothing is dropped. */
        close_sink(&loop, s);
        uv_loop_init(&loop);
        s = open_ready(&loop, url, qv);
        hg_amqp_sink_stats(s, &st);
        assert_int_equal(st.queues_without_version, 0);
        assert_int_equal(st.queues_without_priority, 0);
        close_sink(&loop, s);
        vhost_delete(vh);
    }
}

/* Declare queue in the vhost at url as an older hookgate did: a live queue with the DLX pair (and
 * x-max-priority 10 when `priority`, x-queue-version 2 when `version`), a DLQ without arguments. */
static void predeclare(const char *url, const char *queue, bool dlq, bool priority, bool version)
{
    amqp_table_entry_t args[4];
    int n = 0;
    char key[64];
    snprintf(key, sizeof key, "%.*s.dlq", (int)strcspn(queue, "."), queue);
    if (!dlq) {
        args[n].key = amqp_cstring_bytes("x-dead-letter-exchange");
        args[n].value.kind = AMQP_FIELD_KIND_UTF8;
        args[n++].value.value.bytes = amqp_cstring_bytes(HG_AMQP_DLX);
        args[n].key = amqp_cstring_bytes("x-dead-letter-routing-key");
        args[n].value.kind = AMQP_FIELD_KIND_UTF8;
        args[n++].value.value.bytes = amqp_cstring_bytes(key);
    }
    if (priority) {
        args[n].key = amqp_cstring_bytes("x-max-priority");
        args[n].value.kind = AMQP_FIELD_KIND_I32;
        args[n++].value.value.i32 = 10;
    }
    if (version) {
        args[n].key = amqp_cstring_bytes("x-queue-version");
        args[n].value.kind = AMQP_FIELD_KIND_I32;
        args[n++].value.value.i32 = 2;
    }
    amqp_connection_state_t c = checker_open_url(url);
    amqp_table_t table = {.num_entries = n, .entries = args};
    amqp_queue_declare(c, 1, amqp_cstring_bytes(queue), 0, 1, 0, 0, table);
    assert_int_equal(amqp_get_rpc_reply(c).reply_type, AMQP_RESPONSE_NORMAL);
    checker_close(c);
}

/*
 * Queues that exist from before (RabbitMQ refuses a redeclare that adds or drops x-queue-version
 * or x-max-priority) are used as they are: the messages queue and its DLQ as hookgate declared
 * them before queue_version (priority, no version), the statuses queue as the oldest hookgate did
 * (neither), the system queue with a version but no priority. Publishes to each are confirmed,
 * the queues keep their arguments, and the stats count what was dropped.
 */
static void test_queue_version_fallback_existing(void **state)
{
    (void)state;
    NEED_CTL();
    char vh[64], url[256];
    vhost_add(vh, sizeof vh, url, sizeof url);
    predeclare(url, HG_AMQP_QUEUE_MESSAGES, false, true, false);
    predeclare(url, HG_AMQP_QUEUE_MESSAGES ".dlq", true, false, false);
    predeclare(url, HG_AMQP_QUEUE_STATUSES, false, false, false);
    predeclare(url, HG_AMQP_QUEUE_SYSTEM, false, false, true);

    uv_loop_t loop;
    uv_loop_init(&loop);
    struct hg_sink *s = open_ready(&loop, url, 2);
    struct hg_amqp_stats st;
    hg_amqp_sink_stats(s, &st);
    assert_int_equal(st.queues_without_version, 3);  /* messages, its DLQ, statuses */
    assert_int_equal(st.queues_without_priority, 2); /* statuses, system */

    struct tally t = {0};
    const char *keys[][2] = {{"message.text", "text"}, {"status.read", "read"}, {"system.x", "x"}};
    for (int i = 0; i < 3; i++) {
        struct test_event e;
        make_event(&e, keys[i][0], keys[i][1], 7000 + i);
        assert_int_equal(s->ops->publish(s, &e.ev, on_result, &t), 0);
        struct test_event d;
        make_event(&d, keys[i][0], keys[i][1], 7100 + i);
        assert_int_equal(hg_amqp_publish_dead(s, &d.ev, "unparseable", on_result, &t), 0);
    }
    struct wait_calls wc = {&t, 6};
    assert_true(run_until(&loop, calls_reached, &wc, 10000));
    assert_int_equal(t.ok, 6);

    amqp_connection_state_t c = checker_open_url(url);
    for (size_t i = 0; i < HG_ARRAY_SIZE(all_queues); i++) {
        uint32_t depth = 0;
        assert_true(queue_exists(&c, all_queues[i], &depth));
        assert_int_equal(depth, 1);
    }
    checker_close(c);
    static char listing[16384];
    list_queues(vh, listing, sizeof listing);
    assert_false(has_arg(listing, HG_AMQP_QUEUE_MESSAGES, "x-queue-version", NULL));
    assert_true(has_arg(listing, HG_AMQP_QUEUE_MESSAGES, "x-max-priority", "10"));
    assert_false(has_arg(listing, HG_AMQP_QUEUE_MESSAGES ".dlq", "x-queue-version", NULL));
    assert_false(has_arg(listing, HG_AMQP_QUEUE_STATUSES, "x-queue-version", NULL));
    assert_false(has_arg(listing, HG_AMQP_QUEUE_STATUSES, "x-max-priority", NULL));
    assert_true(has_arg(listing, HG_AMQP_QUEUE_SYSTEM, "x-queue-version", "2"));
    assert_false(has_arg(listing, HG_AMQP_QUEUE_SYSTEM, "x-max-priority", NULL));
    /* The queues created now get what was asked for. */
    assert_true(has_arg(listing, HG_AMQP_QUEUE_STATUSES ".dlq", "x-queue-version", "2"));
    assert_true(has_arg(listing, HG_AMQP_QUEUE_SYSTEM ".dlq", "x-queue-version", "2"));
    close_sink(&loop, s);
    vhost_delete(vh);
}

/* Another x-queue-version than the configured one is a conflict, not an old layout: no connect. */
static void test_queue_version_conflict_refused(void **state)
{
    (void)state;
    NEED_CTL();
    char vh[64], url[256];
    vhost_add(vh, sizeof vh, url, sizeof url);
    predeclare(url, HG_AMQP_QUEUE_STATUSES, false, true, true); /* x-queue-version 2 */
    uv_loop_t loop;
    uv_loop_init(&loop);
    const char *urls[] = {url};
    struct hg_amqp_opts o = {.urls = urls, .n_urls = 1, .max_priority = 10, .queue_version = 1,
                             .reconnect_min_ms = 50, .reconnect_max_ms = 100};
    struct hg_sink *s = NULL;
    assert_int_equal(hg_amqp_sink_open(&loop, &o, &s), 0);
    assert_false(run_until(&loop, sink_is_ready, s, 2000));
    struct hg_amqp_stats st;
    hg_amqp_sink_stats(s, &st);
    assert_int_equal(st.connects, 0);
    close_sink(&loop, s);
    static char listing[16384];
    list_queues(vh, listing, sizeof listing);
    assert_true(has_arg(listing, HG_AMQP_QUEUE_STATUSES, "x-queue-version", "2"));
    vhost_delete(vh);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_rejects_bad_options),
        cmocka_unit_test(test_url_check),
        cmocka_unit_test(test_encode_matches_rabbitmq_c),
        cmocka_unit_test(test_encode_refuses),
        cmocka_unit_test(test_unreachable_refuses),
        cmocka_unit_test(test_topology_declared),
        cmocka_unit_test(test_publish_confirm_and_consume),
        cmocka_unit_test(test_unroutable_is_rejected),
        cmocka_unit_test(test_publish_dead),
        cmocka_unit_test(test_url_failover),
        cmocka_unit_test(test_burst_never_blocks_loop),
        cmocka_unit_test(test_one_turn_one_send),
        cmocka_unit_test(test_close_flushes),
        cmocka_unit_test(test_blocked_broker_never_blocks_loop),
        cmocka_unit_test(test_broker_loss_and_reconnect),
        cmocka_unit_test(test_queue_version_declared),
        cmocka_unit_test(test_queue_version_fallback_existing),
        cmocka_unit_test(test_queue_version_conflict_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

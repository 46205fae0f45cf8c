/*
 * HTTP/1.1 connections: llhttp parsing, limits, timeouts, in-order answers.
 *
 * A connection handles one request at a time. When llhttp completes a message it pauses and the
 * request goes to the application. Reading stays on (no epoll_ctl pair per request); bytes that
 * arrive before the answer is written (a pipelining client) are kept in `pending`, reading stops
 * until the answer is written, and they are parsed after it, so answers are in order. An answer
 * that fits the socket goes out with uv_try_write and completes from an idle handle (send_answer).
 * Reads land in one buffer shared by the worker's connections, and everything a request needs
 * (header bytes and table, body, answer, write request) lives in a `struct conn_request` taken
 * from a small per-server pool at the request's first byte and given back once its answer is
 * written, so an idle keep-alive connection costs only its struct and libuv handles (well under
 * 1 KiB).
 *
 * With [server] tls_cert a connection also has a TLS session (http/tls.h, memory only): what is
 * read goes through it and its plaintext takes the path above unchanged (conn_input); answers are
 * encrypted into the session's output and written the same way (tls_flush). Without TLS the only
 * cost is a NULL pointer test per read and per answer.
 */
#include <errno.h>
#include <llhttp.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/cidr.h"
#include "core/common.h"
#include "core/err.h"
#include "core/list.h"
#include "core/log.h"
#include "core/str.h"
#include "core/time.h"
#include "core/uuid.h"
#include "http/http.h"
#include "http/proxy.h"
#include "http/tls.h"
#include "ops/metrics.h"

#define READ_BUF_SIZE (64 * 1024)
/* Request states kept for reuse per server: enough for a burst without malloc, bounded memory. */
#define RQ_POOL_MAX 64
/* A pooled request state keeps buffers up to this capacity; bigger ones go back to malloc. */
#define RQ_KEEP_BYTES (16 * 1024)
/* After the last request in flight is answered, give free heap pages back after this long. */
#define TRIM_DELAY_MS 1000
/*
 * Lingering close (nginx's lingering_close): after an early answer (413, 431, 400, ...) the
 * client may still be sending; closing at once would make the kernel answer its data with a
 * reset, which destroys our answer in the client's receive buffer. So the write side is shut,
 * and what arrives is read and dropped until the client closes, for at most LINGER_TOTAL_MS,
 * LINGER_IDLE_MS without data, and the larger of LINGER_MIN_BYTES and twice max_body.
 */
#define LINGER_TOTAL_MS 30000
#define LINGER_IDLE_MS 5000
#define LINGER_MIN_BYTES (32u << 20)
/* mbedTLS hands out at most one record's plaintext (16 KiB) per read. */
#define TLS_PLAIN_SIZE (16 * 1024)

/* Where a connection is in its life; every change goes through set_state(). */
enum conn_state {
    CONN_IDLE,      /* between requests (or before the first): keep-alive / first-byte timer */
    CONN_HEADERS,   /* first byte of a request seen, headers not complete: header timer */
    CONN_BODY,      /* headers complete, body arriving: body timer (reset on progress) */
    CONN_HANDLING,  /* request handed to the application, no answer yet: reading stopped */
    CONN_WRITING,   /* answer being written */
    CONN_LINGERING, /* early answer written, write side shut: reading and dropping until EOF */
    CONN_CLOSING,   /* uv_close called; waiting for the handles' close callbacks */
};

struct hg_http_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    struct hg_http_limits limits;
    struct hg_http_handler handler;
    llhttp_settings_t settings;
    struct hg_list conns;           /* all live connections (hg_conn.link) */
    uint32_t nconns;
    bool stopping;
    bool listener_closed;
    bool trim_closed;
    void (*stop_done)(void *arg);
    void *stop_arg;
    char read_buf[READ_BUF_SIZE];   /* shared by all connections of this loop */
    bool read_buf_busy;
    struct conn_request *rq_pool;   /* free request states, singly linked through `next` */
    uint32_t rq_pooled;
    uint32_t rq_busy;               /* request states held by connections */
    uint64_t rq_taken;              /* request states ever taken: tells whether a second was quiet */
    uint64_t trim_mark;             /* rq_taken when the trim timer was armed */
    uv_timer_t trim_timer;          /* malloc_trim once the server goes quiet */
    uv_idle_t written_idle;         /* completes answers written at once (write_response) */
    struct hg_conn *written_head;   /* connections whose answer went out whole, to complete */
    bool written_closed;
    uint64_t buffered;              /* body bytes counted by its connections (max_buffered_bytes) */
    struct hg_tls_ctx *tls;         /* TLS for new connections (a reference); NULL = plain HTTP */
    char *tls_plain;                /* decrypted bytes, shared like read_buf; allocated at first use */
};

/*
 * Everything one request needs, from its first byte until its answer is written. Owned by one
 * connection at a time; pooled per server between requests.
 */
struct conn_request {
    struct conn_request *next;       /* pool link */
    struct hg_buf head;              /* URL and header bytes (capped), then "path\0query\0" */
    size_t url_len;
    uint32_t name_off[HG_HTTP_MAX_HEADERS], name_len[HG_HTTP_MAX_HEADERS];
    uint32_t value_off[HG_HTTP_MAX_HEADERS], value_len[HG_HTTP_MAX_HEADERS];
    size_t n_headers;
    bool in_value;
    struct hg_buf body;
    struct hg_buf out;               /* the answer being written */
    uv_write_t write_req;
    uv_write_t continue_req;
    struct hg_http_request req;
};

struct hg_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    struct hg_http_server *srv;
    struct hg_list link;             /* in srv->conns */
    llhttp_t parser;
    enum conn_state state;
    int open_handles;
    struct hg_http_limits limits;    /* snapshot at accept */

    char *pending;                   /* bytes read past a paused message */
    size_t pending_len;

    struct conn_request *rq;         /* the request in progress; NULL while idle */
    int fail_status;                 /* set by a parser callback before it stops the parser */
    const char *fail_code;           /* its error code and message (static strings), or NULL */
    const char *fail_message;
    const char *feed_end;            /* end of the bytes llhttp_execute is parsing now */
    uint64_t linger_deadline;        /* loop time (ms) when a lingering close ends at the latest */
    uint64_t linger_left;            /* bytes still dropped before a lingering close gives up */
    bool keep_alive;
    bool close_after;
    bool linger;                     /* close_after with a lingering close (an early answer) */
    bool peer_eof;                   /* the client half-closed: answer what was read, then close */
    bool abandoned_notified;
    bool served_one;
    bool continue_pending;           /* a "100 Continue" write is in flight */
    bool written_queued;             /* in srv->written_head: the answer is out, completion due */
    struct hg_conn *written_next;
    void *app_data;                  /* the application's object for the request in flight */
    struct hg_ip addr;               /* the client: socket peer, or a trusted PROXY header's source */
    bool proxy_trusted;              /* the peer is in trusted_proxies: its PROXY header counts */
    bool proxy_checked;              /* the first bytes were looked at for a PROXY header */
    uint64_t body_deadline;          /* loop ms: the whole body must be in by then (0 = none) */
    uint64_t req_deadline;           /* loop ms: the request must be answered by then (0 = none) */
    uint64_t buffered;               /* body bytes this request counts in srv->buffered */
    bool body_reserved;              /* its Content-Length was counted in full at the headers */
    struct hg_tls_conn *tls;         /* its TLS session (under the server's TLS of its accept); NULL = plain */
};

static const char continue_line[] = "HTTP/1.1 100 Continue\r\n\r\n";

static void conn_close(struct hg_conn *c);
static void conn_feed(struct hg_conn *c, const char *data, size_t len);
static void conn_fail(struct hg_conn *c, int status, const char *code, const char *message);
static void conn_fail_with(struct hg_conn *c, int status, const char *code, const char *message,
                           const char *extra);

static void set_state(struct hg_conn *c, enum conn_state s)
{
    c->state = s;
}

static void timer_arm(struct hg_conn *c, uint64_t ms);
static void body_timer_arm(struct hg_conn *c);

/* `ms` (0 = none), cut short by the request's and the body's deadlines: the time to arm. */
static uint64_t until_deadlines(const struct hg_conn *c, uint64_t ms)
{
    uint64_t now = uv_now(c->srv->loop);
    const uint64_t deadlines[2] = { c->req_deadline, c->body_deadline };
    for (int i = 0; i < 2; i++) {
        if (deadlines[i] == 0)
            continue;
        uint64_t left = deadlines[i] > now ? deadlines[i] - now : 1;
        if (ms == 0 || left < ms)
            ms = left;
    }
    return ms;
}
static void start_reading(struct hg_conn *c);
static void send_continue(struct hg_conn *c);
static void tls_send_now(struct hg_conn *c);
static void tls_send_last(struct hg_conn *c);

/* ---- request states: taken at a request's first byte, given back once it is answered ---- */

static void rq_destroy(struct conn_request *rq)
{
    hg_buf_free(&rq->head);
    hg_buf_free(&rq->body);
    hg_buf_free(&rq->out);
    free(rq);
}

/* The connection's request state, taken from the pool (or allocated) when it has none. */
static struct conn_request *rq_get(struct hg_conn *c)
{
    if (c->rq)
        return c->rq;
    struct hg_http_server *s = c->srv;
    struct conn_request *rq = s->rq_pool;
    if (rq) {
        s->rq_pool = rq->next;
        s->rq_pooled--;
    } else {
        rq = hg_xcalloc(1, sizeof(*rq));
    }
    s->rq_busy++;
    s->rq_taken++;
    rq->next = NULL;
    /* Caps come from this connection's limits snapshot; capacities carry over from the pool. */
    hg_buf_reset(&rq->head);
    rq->head.max = c->limits.max_header_bytes;
    hg_buf_reset(&rq->body);
    rq->body.max = c->limits.max_body_bytes;
    hg_buf_reset(&rq->out);
    rq->out.max = 1 << 20;
    rq->url_len = 0;
    rq->n_headers = 0;
    rq->in_value = false;
    rq->req.method = 0;
    rq->req.path = "";
    rq->req.path_len = 0;
    rq->req.query = "";
    rq->req.query_len = 0;
    rq->req.n_headers = 0;
    rq->req.body = "";
    rq->req.body_len = 0;
    rq->req.request_id[0] = '\0';
    rq->req.start_ns = 0;
    rq->req.tls = c->tls != NULL;
    rq->write_req.data = c;
    rq->continue_req.data = c;
    c->rq = rq;
    return rq;
}

static void on_trim_timer(uv_timer_t *t);

static void trim_arm(struct hg_http_server *s)
{
    s->trim_mark = s->rq_taken;
    uv_timer_start(&s->trim_timer, on_trim_timer, TRIM_DELAY_MS, 0);
}

static void on_trim_timer(uv_timer_t *t)
{
    struct hg_http_server *s = t->data;
    if (s->rq_busy > 0)
        return; /* the release of the last one re-arms */
    if (s->rq_taken != s->trim_mark) {
        trim_arm(s); /* requests came and went meanwhile: not quiet yet */
        return;
    }
    /*
     * A burst of requests leaves freed memory (request states, parsed envelopes, drain work)
     * scattered between long-lived objects such as idle connections; glibc keeps those pages
     * resident, so without this an idle server's RSS stays at its busiest point. Only after a
     * whole TRIM_DELAY_MS without a request, so it never runs under steady traffic.
     */
    malloc_trim(0);
}

/* A request state was given back: when it was the last one, schedule a heap trim. */
static void rq_released(struct hg_http_server *s)
{
    s->rq_busy--;
    if (s->rq_busy == 0 && !s->stopping && !uv_is_active((uv_handle_t *)&s->trim_timer))
        trim_arm(s);
}

/* The request's body is no longer held: its bytes leave the server's buffered count. */
static void buffered_release(struct hg_conn *c)
{
    c->srv->buffered -= c->buffered;
    c->buffered = 0;
    c->body_reserved = false;
}

/* Count n more body bytes; false (nothing counted) when they would pass max_buffered_bytes. */
static bool buffered_take(struct hg_conn *c, uint64_t n)
{
    struct hg_http_server *s = c->srv;
    if (c->limits.max_buffered_bytes && s->buffered + n > c->limits.max_buffered_bytes)
        return false;
    s->buffered += n;
    c->buffered += n;
    return true;
}

/* Give the connection's request state back: to the pool, or to malloc when the pool is full. */
static void rq_put(struct hg_conn *c)
{
    buffered_release(c);
    struct conn_request *rq = c->rq;
    if (rq == NULL)
        return;
    c->rq = NULL;
    struct hg_http_server *s = c->srv;
    rq_released(s);
    if (s->rq_pooled >= RQ_POOL_MAX) {
        rq_destroy(rq);
        return;
    }
    /* A big body or answer once must not pin its memory in the pool for ever. */
    if (rq->head.alloc > RQ_KEEP_BYTES)
        hg_buf_free(&rq->head);
    if (rq->body.alloc > RQ_KEEP_BYTES)
        hg_buf_free(&rq->body);
    if (rq->out.alloc > RQ_KEEP_BYTES)
        hg_buf_free(&rq->out);
    rq->next = s->rq_pool;
    s->rq_pool = rq;
    s->rq_pooled++;
}

const char *hg_http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}

const char *hg_http_header_get(const struct hg_http_request *r, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < r->n_headers; i++) {
        if (r->headers[i].name_len == nl && strncasecmp(r->headers[i].name, name, nl) == 0) {
            if (len)
                *len = r->headers[i].value_len;
            return r->headers[i].value;
        }
    }
    return NULL;
}

/* A caller's request id is echoed only when it cannot break a header or a log line. */
static bool request_id_sane(const char *v, size_t n)
{
    if (n == 0 || n > HG_HTTP_REQUEST_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = v[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                  ch == '-' || ch == '_' || ch == '.' || ch == ':';
        if (!ok)
            return false;
    }
    return true;
}

/* ---- llhttp callbacks: build the request in c->head / c->body ---- */

#define HG_STR_(x) #x
#define HG_STR(x) HG_STR_(x)

/* Stop the parser with an answer: status, error code and message (static strings). */
static int parse_fail(struct hg_conn *c, int status, const char *code, const char *message)
{
    c->fail_status = status;
    c->fail_code = code;
    c->fail_message = message;
    return HPE_USER;
}

static int on_message_begin(llhttp_t *p)
{
    struct hg_conn *c = p->data;
    rq_put(c); /* normally none is held here; a fresh state either way */
    struct conn_request *rq = rq_get(c);
    c->fail_status = 0;
    c->fail_code = NULL;
    c->fail_message = NULL;
    rq->req.start_ns = hg_time_mono_ns();
    c->req_deadline = c->limits.request_timeout_ms ? uv_now(c->srv->loop) + c->limits.request_timeout_ms : 0;
    c->body_deadline = 0;
    set_state(c, CONN_HEADERS);
    timer_arm(c, until_deadlines(c, c->limits.header_timeout_ms));
    return 0;
}

static int head_append(struct hg_conn *c, const char *at, size_t len)
{
    if (hg_buf_append(&c->rq->head, at, len) != 0) {
        c->fail_status = 431;
        return HPE_USER;
    }
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct hg_conn *c = p->data;
    /*
     * An HTTP/0.9 request line ("GET /\r\n") ends the URL with CR or LF instead of a space. llhttp
     * takes it and then waits for one more byte before it says anything, so the client, which
     * waits for its answer, would hold the connection until the header timeout. The byte that
     * ended the URL is in the buffer being parsed (unless the URL merely reached its end).
     */
    if (at + len < c->feed_end && (at[len] == '\r' || at[len] == '\n'))
        return parse_fail(c, 400, "bad_request", "HTTP/0.9 request line (no HTTP version) is not supported");
    c->rq->url_len += len;
    return head_append(c, at, len);
}

/*
 * Offsets and lengths in the head buffer fit 32 bits: the buffer is capped by max_header_bytes,
 * which the config bounds far below 4 GiB.
 */
static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct hg_conn *c = p->data;
    struct conn_request *rq = c->rq;
    if (rq->in_value || rq->n_headers == 0) {
        if (rq->n_headers == HG_HTTP_MAX_HEADERS)
            return parse_fail(c, 431, "too_many_headers",
                              "the request has more than " HG_STR(HG_HTTP_MAX_HEADERS) " header fields (the limit)");
        rq->in_value = false;
        rq->name_off[rq->n_headers] = (uint32_t)rq->head.len;
        rq->name_len[rq->n_headers] = 0;
        rq->value_off[rq->n_headers] = (uint32_t)rq->head.len;
        rq->value_len[rq->n_headers] = 0;
        rq->n_headers++;
    }
    rq->name_len[rq->n_headers - 1] += (uint32_t)len;
    return head_append(c, at, len);
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct hg_conn *c = p->data;
    struct conn_request *rq = c->rq;
    if (rq->n_headers == 0)
        return HPE_USER;
    if (!rq->in_value) {
        rq->in_value = true;
        rq->value_off[rq->n_headers - 1] = (uint32_t)rq->head.len;
    }
    rq->value_len[rq->n_headers - 1] += (uint32_t)len;
    return head_append(c, at, len);
}

/*
 * Transfer-Encoding (RFC 9112 §6): hookgate decodes chunked only. The codings of every
 * Transfer-Encoding field, in order: 0 when absent or exactly "chunked"; otherwise the status to
 * answer, with *message: 400 when chunked is not the last coding (the body length cannot be
 * known, §6.3) or comes twice, 501 for any other coding ahead of a final chunked (§6.1).
 */
static int check_transfer_coding(const struct hg_http_request *r, const char **message)
{
    size_t n_codings = 0, n_chunked = 0;
    bool last_chunked = false;
    for (size_t i = 0; i < r->n_headers; i++) {
        const struct hg_http_req_header *h = &r->headers[i];
        if (!hg_span_ieq(h->name, h->name_len, "Transfer-Encoding"))
            continue;
        const char *v = h->value, *end = h->value + h->value_len;
        while (v < end) {
            const char *comma = memchr(v, ',', (size_t)(end - v));
            const char *item_end = comma ? comma : end;
            const char *a = v, *b = item_end;
            while (a < b && (*a == ' ' || *a == '\t'))
                a++;
            for (const char *q = a; q < b; q++) {
                if (*q == ';') { /* coding parameters */
                    b = q;
                    break;
                }
            }
            while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
                b--;
            if (b > a) {
                n_codings++;
                last_chunked = hg_span_ieq(a, (size_t)(b - a), "chunked");
                n_chunked += last_chunked;
            }
            v = comma ? comma + 1 : end;
        }
    }
    if (n_codings == 0 || (n_codings == 1 && last_chunked))
        return 0;
    if (!last_chunked || n_chunked > 1) {
        *message = "Transfer-Encoding must end with a single chunked (the body length cannot be determined)";
        return 400;
    }
    *message = "unsupported transfer coding: only chunked is implemented (no gzip, deflate or compress)";
    return 501;
}

static void on_continue_written(uv_write_t *w, int status)
{
    struct hg_conn *c = w->data;
    (void)status; /* a failed write shows up on the next read or write */
    c->continue_pending = false;
}

/* "100 Continue" (Expect: 100-continue), at most one in flight. */
static void send_continue(struct hg_conn *c)
{
    if (c->tls) {
        /* Encrypted behind whatever the session still had to send; a failure shows up later. */
        if (hg_tls_conn_write(c->tls, continue_line, sizeof(continue_line) - 1) == 0)
            tls_send_now(c);
        return;
    }
    uv_buf_t b = uv_buf_init((char *)continue_line, sizeof(continue_line) - 1);
    if (uv_write(&c->rq->continue_req, (uv_stream_t *)&c->tcp, &b, 1, on_continue_written) == 0)
        c->continue_pending = true;
}

static int on_headers_complete(llhttp_t *p)
{
    struct hg_conn *c = p->data;
    struct conn_request *rq = c->rq;
    struct hg_http_request *r = &rq->req;

    r->method = p->method;
    /*
     * Path and query need their own NUL-terminated copies: the URL bytes are followed by the
     * header bytes. They go at the end of the head buffer (one allocation for the whole request
     * line and headers), past the header cap by at most the URL's own size.
     */
    size_t url_len = rq->url_len;
    size_t url_off = rq->head.len;
    rq->head.max += url_len + 2;
    char *dst = hg_buf_reserve(&rq->head, url_len + 2);
    if (dst == NULL) {
        c->fail_status = 431;
        return HPE_USER;
    }
    const char *base = rq->head.data; /* stable from here: nothing appends to head any more */
    const char *q = memchr(base, '?', url_len);
    size_t plen = q ? (size_t)(q - base) : url_len;
    memcpy(dst, base, plen);
    dst[plen] = '\0';
    r->path = dst;
    r->path_len = plen;
    if (q) {
        r->query_len = url_len - plen - 1;
        memcpy(dst + plen + 1, q + 1, r->query_len);
        dst[plen + 1 + r->query_len] = '\0';
        r->query = dst + plen + 1;
    } else {
        dst[plen + 1] = '\0';
        r->query = "";
        r->query_len = 0;
    }
    rq->head.len = url_off + url_len + 2;
    for (size_t i = 0; i < rq->n_headers; i++) {
        r->headers[i].name = base + rq->name_off[i];
        r->headers[i].name_len = rq->name_len[i];
        r->headers[i].value = base + rq->value_off[i];
        r->headers[i].value_len = rq->value_len[i];
    }
    r->n_headers = rq->n_headers;

    size_t idlen;
    const char *id = hg_http_header_get(r, "X-Request-Id", &idlen);
    if (id && request_id_sane(id, idlen)) {
        memcpy(r->request_id, id, idlen);
        r->request_id[idlen] = '\0';
    } else {
        hg_uuid_v4(r->request_id);
    }

    c->keep_alive = llhttp_should_keep_alive(p);

    /* Refuse an oversized body before it is sent: the sender learns at once, we read nothing. */
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > c->limits.max_body_bytes)
        return parse_fail(c, 413, "body_too_large", "request body exceeds the configured max_body");
    if (p->upgrade)
        return parse_fail(c, 400, "bad_request", "protocol upgrades and CONNECT are not supported");
    if (p->flags & F_TRANSFER_ENCODING) {
        const char *why = NULL;
        int status = check_transfer_coding(r, &why);
        if (status == 501)
            return parse_fail(c, 501, "unsupported_transfer_coding", why);
        if (status != 0)
            return parse_fail(c, status, "bad_request", why);
    }
    /*
     * Bodies held by all connections together are capped (a few thousand slow uploads of large
     * bodies must not take the worker's memory): a declared length counts in full now, before
     * it is sent, so the sender learns at once; a chunked body counts as it arrives (on_body).
     */
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0) {
        if (!buffered_take(c, p->content_length)) {
            c->fail_status = 503;
            return HPE_USER;
        }
        c->body_reserved = true;
    }
    size_t elen;
    const char *expect = hg_http_header_get(r, "Expect", &elen);
    if (expect && hg_span_ieq(expect, elen, "100-continue") && !c->continue_pending)
        send_continue(c);
    set_state(c, CONN_BODY);
    c->body_deadline = c->limits.body_total_timeout_ms
                           ? uv_now(c->srv->loop) + c->limits.body_total_timeout_ms : 0;
    body_timer_arm(c);
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct hg_conn *c = p->data;
    if (hg_buf_append(&c->rq->body, at, len) != 0) {
        c->fail_status = 413;
        return HPE_USER;
    }
    if (!c->body_reserved && !buffered_take(c, len)) {
        c->fail_status = 503;
        return HPE_USER;
    }
    body_timer_arm(c);
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct hg_conn *c = p->data;
    c->rq->req.body = hg_buf_cstr(&c->rq->body);
    c->rq->req.body_len = c->rq->body.len;
    c->keep_alive = llhttp_should_keep_alive(p);
    /* Pause: the request is handled before the parser may look at pipelined bytes. */
    return HPE_PAUSED;
}

/* ---- timers ---- */

static void on_timer(uv_timer_t *t)
{
    struct hg_conn *c = t->data;
    switch (c->state) {
    case CONN_IDLE:
        /* Idle keep-alive (or a connection that never sent a byte): close quietly. */
        conn_close(c);
        break;
    case CONN_LINGERING:
        /* No data for LINGER_IDLE_MS, or LINGER_TOTAL_MS over: the client had its chance. */
        conn_close(c);
        break;
    case CONN_HEADERS:
    case CONN_BODY:
        conn_fail(c, 408, "request_timeout", c->state == CONN_HEADERS ? "headers not received in time"
                                                                          : "body not received in time");
        break;
    case CONN_HANDLING:
        /*
         * request_timeout passed while the application works on it (a stuck fsync, a slow
         * backend): the client must not hang. The application is told as if the connection had
         * gone (its work goes on: a spool append in flight still hands its record on once
         * durable), and the client gets 503 + Retry-After: its retry is a duplicate at worst.
         */
        if (!c->abandoned_notified && c->srv->handler.on_abandon) {
            c->abandoned_notified = true;
            c->srv->handler.on_abandon(c, c->srv->handler.ud);
        }
        c->app_data = NULL;
        conn_fail_with(c, 503, "request_timeout", "the request could not be completed in time; retry later",
                       "Retry-After: 5\r\n");
        break;
    default:
        break;
    }
}

static void timer_arm(struct hg_conn *c, uint64_t ms)
{
    if (ms == 0)
        uv_timer_stop(&c->timer);
    else
        uv_timer_start(&c->timer, on_timer, ms, 0);
}

/*
 * While the body arrives: the pause timer restarts on every piece, but never past the total body
 * deadline, so a client trickling a byte every few seconds cannot hold a connection (and its
 * buffered body) for ever.
 */
static void body_timer_arm(struct hg_conn *c)
{
    timer_arm(c, until_deadlines(c, c->limits.body_timeout_ms));
}

/* ---- writing ---- */

/*
 * An early answer is out: shut the write side (the FIN follows the answer) and read and drop
 * whatever the client still sends. Closing with its data unread would make our kernel answer with
 * a reset, and a reset makes the client's kernel drop the answer it had not read yet.
 */
static void linger_start(struct hg_conn *c)
{
    uv_os_fd_t fd;
    if (c->tls) {
        /* The end of our data, said in TLS too, then the FIN; what arrives next is dropped unread. */
        hg_tls_conn_close_notify(c->tls);
        tls_send_last(c);
    }
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0 || shutdown(fd, SHUT_WR) != 0) {
        conn_close(c);
        return;
    }
    rq_put(c);
    free(c->pending);
    c->pending = NULL;
    c->pending_len = 0;
    set_state(c, CONN_LINGERING);
    uint64_t twice_body = 2 * c->limits.max_body_bytes;
    c->linger_left = twice_body > LINGER_MIN_BYTES ? twice_body : LINGER_MIN_BYTES;
    c->linger_deadline = uv_now(c->srv->loop) + LINGER_TOTAL_MS;
    timer_arm(c, LINGER_IDLE_MS);
    start_reading(c);
}

/* The answer is out (or failed): back to idle, or closed. */
static void written_done(struct hg_conn *c, int status)
{
    if (c->state == CONN_CLOSING)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->close_after) {
        /* A client that half-closed sends nothing more: nothing to linger for. */
        if (c->linger && !c->peer_eof && !c->srv->stopping)
            linger_start(c);
        else
            conn_close(c);
        return;
    }
    /* Answered: an idle keep-alive connection holds no request memory. */
    rq_put(c);
    set_state(c, CONN_IDLE);
    c->served_one = true;
    timer_arm(c, c->limits.keepalive_timeout_ms);
    if (c->srv->stopping) {
        conn_close(c);
        return;
    }
    llhttp_resume(&c->parser);
    if (c->pending_len > 0) {
        /* Pipelined bytes read earlier: parse them before reading more. */
        char *data = c->pending;
        size_t len = c->pending_len;
        c->pending = NULL;
        c->pending_len = 0;
        conn_feed(c, data, len);
        free(data);
        /* A complete request was in there (handled now) or it failed: reading stays stopped. */
        if (c->state != CONN_IDLE && c->state != CONN_HEADERS && c->state != CONN_BODY)
            return;
    }
    if (c->peer_eof) {
        /* Every whole request the client sent before its half-close is answered; a part of one never completes. */
        conn_close(c);
        return;
    }
    start_reading(c);
}

static void on_written(uv_write_t *w, int status)
{
    written_done(w->data, status);
}

static void written_unlink(struct hg_conn *c)
{
    struct hg_conn **pp = &c->srv->written_head;
    while (*pp && *pp != c)
        pp = &(*pp)->written_next;
    if (*pp)
        *pp = c->written_next;
    c->written_queued = false;
    c->written_next = NULL;
}

/* Complete every answer that went out whole; each completion may start the next request. */
static void written_flush(struct hg_http_server *s)
{
    while (s->written_head) {
        struct hg_conn *c = s->written_head;
        written_unlink(c);
        written_done(c, 0);
    }
    uv_idle_stop(&s->written_idle);
}

static void on_written_idle(uv_idle_t *h)
{
    written_flush(h->data);
}

/* The whole answer is in the socket: its completion runs from the idle handle (written_flush). */
static void answer_sent(struct hg_conn *c)
{
    struct hg_http_server *s = c->srv;
    c->written_next = s->written_head;
    s->written_head = c;
    c->written_queued = true;
    if (!uv_is_active((uv_handle_t *)&s->written_idle))
        uv_idle_start(&s->written_idle, on_written_idle);
}

/* ---- TLS output: the session's ciphertext, written in order ---- */

/* Ciphertext that did not fit the socket at once, handed to libuv's write queue in its own buffer. */
struct tls_chunk {
    uv_write_t req;
    struct hg_conn *c;
    struct hg_buf buf;
    size_t off;
    bool answer;                     /* its completion is the answer's (written_done) */
};

/* After a flush: an idle keep-alive connection keeps no big buffer (as rq_put does). */
static void tls_output_done(struct hg_buf *out)
{
    if (out->alloc > RQ_KEEP_BYTES)
        hg_buf_free(out);
    else
        hg_buf_reset(out);
}

static void on_tls_chunk_written(uv_write_t *w, int status)
{
    struct tls_chunk *ch = w->data;
    struct hg_conn *c = ch->c;
    bool answer = ch->answer;
    hg_buf_free(&ch->buf);
    free(ch);
    if (answer)
        written_done(c, status);
    else if (status < 0)
        conn_close(c);
}

/*
 * Write the session's output: at once when the socket takes it (no epoll_ctl, as send_answer),
 * else the rest through libuv's queue, whose order keeps records in sequence (uv_try_write
 * refuses while anything is queued). `answer`: this output ends an answer, whose completion
 * (written_done) follows its last byte. Other output (handshake, 100 Continue) never closes the
 * connection from here: it may run inside a parser callback, and a broken socket shows up at
 * the next read anyway.
 */
static void tls_flush(struct hg_conn *c, bool answer)
{
    struct hg_buf *out = hg_tls_conn_output(c->tls);
    size_t off = 0;
    if (out->len > 0) {
        uv_buf_t b = uv_buf_init(out->data, (unsigned)out->len);
        int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (n < 0 && n != UV_EAGAIN) {
            tls_output_done(out);
            if (answer)
                conn_close(c);
            return;
        }
        off = n > 0 ? (size_t)n : 0;
    }
    if (off == out->len) {
        tls_output_done(out);
        if (answer)
            answer_sent(c);
        return;
    }
    /* The chunk takes the buffer: what the session produces meanwhile goes into a new one, queued behind. */
    struct tls_chunk *ch = hg_xmalloc(sizeof(*ch));
    ch->req.data = ch;
    ch->c = c;
    ch->buf = *out;
    ch->off = off;
    ch->answer = answer;
    hg_buf_init(out, ch->buf.max);
    uv_buf_t b = uv_buf_init(ch->buf.data + off, (unsigned)(ch->buf.len - off));
    if (uv_write(&ch->req, (uv_stream_t *)&c->tcp, &b, 1, on_tls_chunk_written) != 0) {
        hg_buf_free(&ch->buf);
        free(ch);
        if (answer)
            conn_close(c);
    }
}

static void tls_send_now(struct hg_conn *c)
{
    tls_flush(c, false);
}

/*
 * Before a close: what the socket takes now (a close_notify, an alert), nothing queued, since
 * the handle is about to go.
 */
static void tls_send_last(struct hg_conn *c)
{
    struct hg_buf *out = hg_tls_conn_output(c->tls);
    if (out->len > 0) {
        uv_buf_t b = uv_buf_init(out->data, (unsigned)out->len);
        (void)uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    }
    tls_output_done(out);
}

/* ---- the answer on the socket ---- */

/*
 * Send the answer in out. Most answers fit the socket buffer at once: uv_try_write sends them
 * without the write queue, whose completion re-arms epoll (an epoll_ctl per request). Their
 * completion runs from the server's idle handle at the next loop turn, never on the stack of the
 * caller answering (which may be answering a whole batch). What does not fit goes through uv_write.
 * Over TLS the answer is encrypted first and its records take the same way (tls_flush).
 */
static void send_answer(struct hg_conn *c, struct hg_buf *out)
{
    if (c->tls) {
        if (hg_tls_conn_write(c->tls, out->data, out->len) != 0) {
            conn_close(c);
            return;
        }
        tls_flush(c, true);
        return;
    }
    uv_buf_t b = uv_buf_init(out->data, (unsigned)out->len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == (int)out->len) {
        answer_sent(c);
        return;
    }
    if (n < 0 && n != UV_EAGAIN) {
        conn_close(c);
        return;
    }
    if (n > 0)
        b = uv_buf_init(out->data + n, (unsigned)(out->len - (size_t)n));
    if (uv_write(&c->rq->write_req, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0)
        conn_close(c);
}

/* Decimal digits of v, written backwards from `end`; returns the first digit. */
static char *put_decimal(char *end, uint64_t v)
{
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return end;
}

/* Append a C string (nothing for NULL). The caller checks the buffer's error state once. */
static void out_str(struct hg_buf *b, const char *str, int *rc)
{
    if (*rc == 0 && str)
        *rc = hg_buf_append(b, str, strlen(str));
}

/*
 * The answer is assembled by plain copies, not printf: this runs once per request and the
 * format parsing cost more than the rest of the answer together (callgrind).
 */
static void write_response(struct hg_conn *c, int status, const char *request_id, const char *content_type,
                           const char *extra, const char *body, size_t body_len)
{
    struct conn_request *rq = rq_get(c);
    if (c->srv->stopping)
        c->close_after = true;
    if (!c->keep_alive)
        c->close_after = true;
    /* After a half-close this is the last answer unless pipelined bytes wait to be parsed. */
    if (c->peer_eof && c->pending_len == 0)
        c->close_after = true;
    struct hg_buf *out = &rq->out;
    hg_buf_reset(out);
    /* The answer is bounded by the body we were given plus a small header block. */
    out->max = body_len + 4096 + (extra ? strlen(extra) : 0);
    if (status < 100 || status > 999)
        status = 500;
    char num[24];
    char *end = num + sizeof(num);
    int rc = 0;
    out_str(out, "HTTP/1.1 ", &rc);
    if (rc == 0) {
        char *d = put_decimal(end, (uint64_t)status);
        rc = hg_buf_append(out, d, (size_t)(end - d));
    }
    out_str(out, " ", &rc);
    out_str(out, hg_http_reason(status), &rc);
    /* RFC 9110 §8.6, §15.3.5: a 204 has no content, so neither Content-Type nor Content-Length. */
    if (status == 204)
        body_len = 0;
    /*
     * RFC 9110 §9.3.2: the answer to a HEAD has the GET's header fields, Content-Length included,
     * and no content. A client reads none, so a body would be taken as the start of the next
     * answer on the connection. (Before its headers are read a request's method is unknown and
     * an early error is answered with its body: it closes the connection anyway.)
     */
    bool head = rq->req.method == HTTP_HEAD;
    if (status != 204) {
        out_str(out, "\r\nContent-Type: ", &rc);
        out_str(out, content_type ? content_type : "application/json", &rc);
        out_str(out, "\r\nContent-Length: ", &rc);
        if (rc == 0) {
            char *d = put_decimal(end, body_len);
            rc = hg_buf_append(out, d, (size_t)(end - d));
        }
    }
    out_str(out, "\r\nX-Request-Id: ", &rc);
    out_str(out, request_id, &rc);
    out_str(out, "\r\n", &rc);
    out_str(out, extra, &rc);
    out_str(out, c->close_after ? "Connection: close\r\n\r\n" : "Connection: keep-alive\r\n\r\n", &rc);
    if (rc == 0 && body_len && !head)
        rc = hg_buf_append(out, body, body_len);
    if (rc != 0) {
        conn_close(c);
        return;
    }
    /* The metric label, e.g. code="200", without snprintf. */
    char code[16] = "code=\"";
    char *d = put_decimal(end, (uint64_t)status);
    size_t dn = (size_t)(end - d);
    memcpy(code + 6, d, dn);
    code[6 + dn] = '"';
    code[7 + dn] = '\0';
    if (!c->srv->handler.no_metrics)
        hg_metric_inc(HG_M_HTTP_REQUESTS, code);

    set_state(c, CONN_WRITING);
    uv_timer_stop(&c->timer);
    send_answer(c, out);
}

void hg_conn_respond(struct hg_conn *c, int status, const char *content_type, const char *extra_headers,
                     const char *body, size_t body_len)
{
    if (c->state != CONN_HANDLING)
        return; /* answered twice: a bug in the caller; never write two answers */
    c->app_data = NULL;
    write_response(c, status, c->rq->req.request_id, content_type, extra_headers, body, body_len);
}

static void json_error_body(struct hg_buf *b, const char *code, const char *message, const char *rid)
{
    /* Codes and messages are our own constants or short reasons without quotes; escape anyway. */
    hg_buf_appendf(b, "{\"error\":\"%s\",\"message\":\"", code);
    for (const char *p = message; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch == '"' || ch == '\\')
            hg_buf_appendf(b, "\\%c", ch);
        else if (ch < 0x20)
            hg_buf_appendf(b, "\\u%04x", ch);
        else
            hg_buf_append(b, p, 1);
    }
    hg_buf_appendf(b, "\",\"request_id\":\"%s\"}", rid);
}

void hg_conn_respond_error(struct hg_conn *c, int status, const char *code, const char *message,
                           const char *extra_headers)
{
    if (c->state != CONN_HANDLING)
        return;
    struct hg_buf b;
    hg_buf_init(&b, 8192);
    json_error_body(&b, code, message, c->rq->req.request_id);
    hg_conn_respond(c, status, "application/json", extra_headers, b.data, b.len);
    hg_buf_free(&b);
}

void hg_conn_set_data(struct hg_conn *c, void *data) { c->app_data = data; }
const struct hg_ip *hg_conn_addr(const struct hg_conn *c) { return &c->addr; }
void *hg_conn_get_data(const struct hg_conn *c) { return c->app_data; }

/* An error found by the parser or a timer: answer it (with `extra` headers) and close after. */
static void conn_fail_with(struct hg_conn *c, int status, const char *code, const char *message,
                           const char *extra)
{
    struct conn_request *rq = rq_get(c);
    if (rq->req.request_id[0] == '\0')
        hg_uuid_v4(rq->req.request_id);
    c->close_after = true;
    c->linger = true;
    uv_read_stop((uv_stream_t *)&c->tcp);
    struct hg_buf b;
    hg_buf_init(&b, 8192);
    json_error_body(&b, code, message, rq->req.request_id);
    write_response(c, status, rq->req.request_id, "application/json", extra, b.data, b.len);
    hg_buf_free(&b);
}

static void conn_fail(struct hg_conn *c, int status, const char *code, const char *message)
{
    conn_fail_with(c, status, code, message, NULL);
}

/* ---- reading and parsing ---- */

static void dispatch(struct hg_conn *c)
{
    set_state(c, CONN_HANDLING);
    /* Only the request's deadline runs while the application has it. */
    c->body_deadline = 0;
    timer_arm(c, until_deadlines(c, 0));
    /*
     * Reading stays on: stopping and restarting it costs an epoll_ctl pair per request, and a
     * client that waits for its answer sends nothing meanwhile. A pipelining client's bytes are
     * kept (one read's worth) and reading stops then (on_read).
     */
    c->srv->handler.on_request(c, &c->rq->req, c->srv->handler.ud);
}

static void conn_feed(struct hg_conn *c, const char *data, size_t len)
{
    c->feed_end = data + len;
    llhttp_errno_t rc = llhttp_execute(&c->parser, data, len);
    if (rc == HPE_OK)
        return;
    if (rc == HPE_PAUSED) {
        const char *pos = llhttp_get_error_pos(&c->parser);
        size_t used = pos ? (size_t)(pos - data) : len;
        if (used < len) {
            /* At most one read's worth: reading stops while a request is handled. */
            c->pending = hg_xmalloc(len - used);
            memcpy(c->pending, data + used, len - used);
            c->pending_len = len - used;
        }
        dispatch(c);
        return;
    }
    if (c->fail_code) {
        conn_fail(c, c->fail_status, c->fail_code, c->fail_message);
        return;
    }
    switch (c->fail_status) {
    case 413:
        conn_fail(c, 413, "body_too_large", "request body exceeds the configured max_body");
        break;
    case 431:
        conn_fail(c, 431, "headers_too_large", "request headers exceed the configured max_header");
        break;
    case 503:
        conn_fail_with(c, 503, "busy", "too many request bodies held by this worker; retry later",
                       "Retry-After: 1\r\n");
        break;
    default:
        conn_fail(c, 400, "bad_request", llhttp_get_error_reason(&c->parser) ? llhttp_get_error_reason(&c->parser)
                                                                               : llhttp_errno_name(rc));
        break;
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct hg_conn *c = h->data;
    (void)suggested;
    /* One loop thread: the shared buffer is free again once on_read returns. */
    if (c->srv->read_buf_busy) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    c->srv->read_buf_busy = true;
    *buf = uv_buf_init(c->srv->read_buf, READ_BUF_SIZE);
}

/* The client's data ended (EOF, or a TLS close_notify). */
static void conn_eof(struct hg_conn *c)
{
    if (c->state == CONN_HANDLING || c->state == CONN_WRITING) {
        /*
         * A half-close after a complete request: its answer is still owed, and so are the
         * answers to whole requests pipelined before the FIN (kept in `pending`); the
         * connection closes after the last of them (write_response, written_done).
         */
        c->peer_eof = true;
        uv_read_stop((uv_stream_t *)&c->tcp);
        return;
    }
    /* Mid-request or idle: nothing to answer. */
    conn_close(c);
}

/* Request bytes (plaintext, or decrypted): parsed now, or kept while a request is handled. */
static void conn_plain_input(struct hg_conn *c, const char *data, size_t len)
{
    if (c->state == CONN_HANDLING || c->state == CONN_WRITING || c->state == CONN_CLOSING) {
        /* Reading is stopped in these states; bytes that still arrive are kept in order. */
        c->pending = hg_xrealloc(c->pending, c->pending_len + len);
        memcpy(c->pending + c->pending_len, data, len);
        c->pending_len += len;
        uv_read_stop((uv_stream_t *)&c->tcp);
        return;
    }
    conn_feed(c, data, len);
}

/*
 * Ciphertext read from a TLS connection: handshake, then every whole record decrypted and passed
 * on before returning. Nothing is left undecrypted (mbedTLS keeps only a partial record): a
 * pipelining client's later requests land in `pending` like plaintext ones, because they would
 * otherwise wait in the session for a read that never comes.
 */
static void tls_input(struct hg_conn *c, const char *data, size_t len)
{
    struct hg_http_server *s = c->srv;
    if (s->tls_plain == NULL)
        s->tls_plain = hg_xmalloc(TLS_PLAIN_SIZE);
    hg_tls_conn_feed(c->tls, data, len);
    for (;;) {
        ssize_t n = hg_tls_conn_read(c->tls, s->tls_plain, TLS_PLAIN_SIZE);
        if (n > 0) {
            conn_plain_input(c, s->tls_plain, (size_t)n);
            if (c->state == CONN_CLOSING)
                return;
            continue;
        }
        if (n == 0) {
            tls_send_now(c); /* a handshake flight, when there is one */
            return;
        }
        if (n == HG_TLS_PLAINTEXT) {
            /*
             * A plain HTTP request on the TLS port (http:// for https://): say so in plain HTTP,
             * as nginx does, instead of a reset the sender cannot make sense of.
             */
            hg_tls_conn_free(c->tls);
            c->tls = NULL;
            conn_fail(c, 400, "tls_required", "this port speaks HTTPS only (TLS): use https://");
            return;
        }
        if (n == HG_TLS_CLOSED) {
            tls_send_now(c);
            conn_eof(c);
            return;
        }
        /* A failed handshake or a bad record: internet noise, not an incident. */
        hg_debug(NULL, "TLS failed; closing the connection", "error", hg_tls_conn_error(c->tls), NULL);
        tls_send_last(c); /* the alert saying why, when mbedTLS wrote one */
        conn_close(c);
        return;
    }
}

/*
 * Bytes read from the socket, past anything that precedes the connection's protocol (a PROXY
 * protocol header is such a thing: it comes before the TLS handshake, so it is taken off first).
 */
static void conn_input(struct hg_conn *c, const char *data, size_t len)
{
    if (c->tls)
        tls_input(c, data, len);
    else
        conn_plain_input(c, data, len);
}

/*
 * The connection's first bytes: a PROXY protocol header (http/proxy.h) from a trusted proxy names
 * the client; from any other peer, or malformed, it is answered 400 and the connection closes.
 * The start of a header not complete yet waits in `pending` (less than HG_PROXY_MAX bytes).
 */
static void proxy_first_bytes(struct hg_conn *c, const char *data, size_t len)
{
    if (c->pending_len > 0) {
        c->pending = hg_xrealloc(c->pending, c->pending_len + len);
        memcpy(c->pending + c->pending_len, data, len);
        c->pending_len += len;
        data = c->pending;
        len = c->pending_len;
    }
    struct hg_proxy_header h;
    int rc = hg_proxy_parse((const uint8_t *)data, len, &h);
    if (rc == HG_PROXY_MORE) {
        if (c->pending == NULL) {
            c->pending = hg_xmalloc(len);
            memcpy(c->pending, data, len);
            c->pending_len = len;
        }
        return;
    }
    c->proxy_checked = true;
    char *held = c->pending; /* `data` may point into it: freed once it is parsed */
    c->pending = NULL;
    c->pending_len = 0;
    if (rc == HG_PROXY_BAD || (rc > 0 && !c->proxy_trusted)) {
        free(held);
        conn_fail(c, 400, "bad_request", rc > 0 ? "PROXY protocol header from a peer not in trusted_proxies"
                                                : "malformed PROXY protocol header");
        return;
    }
    size_t used = rc > 0 ? (size_t)rc : 0;
    if (rc > 0 && h.has_addr)
        c->addr = h.src;
    if (used < len)
        conn_input(c, data + used, len - used); /* a TLS handshake, or a plain request */
    free(held);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct hg_conn *c = s->data;
    if (buf->base == c->srv->read_buf)
        c->srv->read_buf_busy = false;
    if (nread == 0)
        return;
    if (c->state == CONN_LINGERING) {
        /* Dropped unread (TLS records too: nothing more is answered). EOF or the byte cap ends it. */
        if (nread < 0 || (uint64_t)nread >= c->linger_left) {
            conn_close(c);
            return;
        }
        c->linger_left -= (uint64_t)nread;
        uint64_t now = uv_now(c->srv->loop);
        if (now >= c->linger_deadline) {
            conn_close(c);
            return;
        }
        uint64_t left = c->linger_deadline - now;
        timer_arm(c, left < LINGER_IDLE_MS ? left : LINGER_IDLE_MS);
        return;
    }
    if (nread < 0) {
        /* Peer went away (mid-request: nothing to answer; while handled: the request is told). */
        if (nread == UV_EOF)
            conn_eof(c);
        else
            conn_close(c);
        return;
    }
    if (c->state == CONN_CLOSING)
        return;
    if (!c->proxy_checked) {
        /* Before the TLS handshake too: a proxy sends its header in the clear. */
        proxy_first_bytes(c, buf->base, (size_t)nread);
        return;
    }
    conn_input(c, buf->base, (size_t)nread);
}

static void start_reading(struct hg_conn *c)
{
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* ---- lifecycle ---- */

static void maybe_stop_done(struct hg_http_server *s)
{
    if (s->stopping && s->listener_closed && s->trim_closed && s->written_closed && s->nconns == 0 &&
        s->stop_done) {
        void (*done)(void *) = s->stop_done;
        s->stop_done = NULL;
        done(s->stop_arg);
    }
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    struct hg_conn *c = h->data;
    if (--c->open_handles > 0)
        return;
    struct hg_http_server *s = c->srv;
    buffered_release(c);
    hg_list_unlink(&c->link);
    s->nconns--;
    if (!s->handler.no_metrics)
        hg_metric_set(HG_M_CONNECTIONS, NULL, (double)s->nconns);
    if (c->rq) {
        rq_destroy(c->rq);
        rq_released(s);
    }
    free(c->pending);
    hg_tls_conn_free(c->tls);
    free(c);
    maybe_stop_done(s);
}

static void conn_close(struct hg_conn *c)
{
    if (c->state == CONN_CLOSING)
        return;
    bool was_handling = c->state == CONN_HANDLING;
    if (c->tls && c->state != CONN_LINGERING) {
        hg_tls_conn_close_notify(c->tls);
        tls_send_last(c);
    }
    set_state(c, CONN_CLOSING);
    if (c->written_queued)
        written_unlink(c);
    if (was_handling && !c->abandoned_notified && c->srv->handler.on_abandon) {
        c->abandoned_notified = true;
        c->srv->handler.on_abandon(c, c->srv->handler.ud);
    }
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
}

static void on_connection(uv_stream_t *ls, int status)
{
    struct hg_http_server *s = ls->data;
    if (status < 0)
        return;
    struct hg_conn *c = hg_xcalloc(1, sizeof(*c));
    c->srv = s;
    c->limits = s->limits;
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->open_handles = 2;
    llhttp_init(&c->parser, HTTP_REQUEST, &s->settings);
    c->parser.data = c;
    hg_list_insert_head(&s->conns, &c->link);
    s->nconns++;
    if (!s->handler.no_metrics)
        hg_metric_set(HG_M_CONNECTIONS, NULL, (double)s->nconns);

    if (uv_accept(ls, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage peer;
    int peer_len = sizeof(peer);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&peer, &peer_len) == 0)
        hg_ip_from_sockaddr((struct sockaddr *)&peer, &c->addr);
    c->proxy_trusted = s->limits.trusted_proxies && hg_cidr_list_match(s->limits.trusted_proxies, &c->addr);
    c->limits.trusted_proxies = NULL; /* its config may be gone after a reload */
    if (s->stopping) {
        conn_close(c);
        return;
    }
    if (s->nconns > c->limits.max_connections) {
        /* Over TLS a plain 503 would be garbage to the client, and a handshake costs what we lack. */
        if (s->tls)
            conn_close(c);
        else
            conn_fail(c, 503, "too_many_connections", "connection limit of this worker reached");
        return;
    }
    if (s->tls)
        c->tls = hg_tls_conn_new(s->tls);
    set_state(c, CONN_IDLE);
    timer_arm(c, c->limits.header_timeout_ms);
    start_reading(c);
}

int hg_http_server_start(uv_loop_t *loop, int fd, const struct hg_http_limits *limits,
                         const struct hg_http_handler *handler, struct hg_http_server **out)
{
    struct hg_http_server *s = hg_xcalloc(1, sizeof(*s));
    hg_list_init(&s->conns);
    s->loop = loop;
    s->limits = *limits;
    s->handler = *handler;
    llhttp_settings_init(&s->settings);
    s->settings.on_message_begin = on_message_begin;
    s->settings.on_url = on_url;
    s->settings.on_header_field = on_header_field;
    s->settings.on_header_value = on_header_value;
    s->settings.on_headers_complete = on_headers_complete;
    s->settings.on_body = on_body;
    s->settings.on_message_complete = on_message_complete;
    int rc = uv_tcp_init(loop, &s->listener);
    if (rc == 0)
        rc = uv_tcp_open(&s->listener, fd);
    if (rc == 0) {
        s->listener.data = s;
        rc = uv_listen((uv_stream_t *)&s->listener, 4096, on_connection);
    }
    if (rc != 0) {
        free(s);
        return rc;
    }
    uv_timer_init(loop, &s->trim_timer);
    s->trim_timer.data = s;
    /* Housekeeping only: it must not keep the loop alive. */
    uv_unref((uv_handle_t *)&s->trim_timer);
    uv_idle_init(loop, &s->written_idle);
    s->written_idle.data = s;
    *out = s;
    return 0;
}

void hg_http_server_set_limits(struct hg_http_server *s, const struct hg_http_limits *limits)
{
    s->limits = *limits;
}

void hg_http_server_set_tls(struct hg_http_server *s, struct hg_tls_ctx *tls)
{
    if (tls)
        hg_tls_ctx_ref(tls);
    hg_tls_ctx_unref(s->tls);
    s->tls = tls;
}

bool hg_conn_client_cert_ok(const struct hg_conn *c, char *why, size_t wl)
{
    char problem[256];
    switch (c->tls ? hg_tls_conn_peer(c->tls, problem, sizeof(problem)) : HG_TLS_PEER_NONE) {
    case HG_TLS_PEER_VERIFIED:
        return true;
    case HG_TLS_PEER_INVALID:
        snprintf(why, wl, "the client certificate did not verify against [server] tls_client_ca: %s", problem);
        return false;
    case HG_TLS_PEER_NONE:
    default:
        snprintf(why, wl, "%s", c->tls ? "this route requires a client certificate (mutual TLS); none was presented"
                                        : "this route requires a client certificate (mutual TLS); the connection is "
                                          "not TLS");
        return false;
    }
}

uint32_t hg_http_server_connections(const struct hg_http_server *s)
{
    return s->nconns;
}

static void on_trim_closed(uv_handle_t *h)
{
    struct hg_http_server *s = h->data;
    s->trim_closed = true;
    maybe_stop_done(s);
}

static void on_written_idle_closed(uv_handle_t *h)
{
    struct hg_http_server *s = h->data;
    s->written_closed = true;
    maybe_stop_done(s);
}

static void on_listener_closed(uv_handle_t *h)
{
    struct hg_http_server *s = h->data;
    s->listener_closed = true;
    maybe_stop_done(s);
}

void hg_http_server_stop(struct hg_http_server *s, void (*done)(void *arg), void *arg)
{
    if (s->stopping)
        return;
    s->stopping = true;
    s->stop_done = done;
    s->stop_arg = arg;
    uv_close((uv_handle_t *)&s->listener, on_listener_closed);
    uv_close((uv_handle_t *)&s->trim_timer, on_trim_closed);
    /* Answers already out complete now (each closes, as stopping asks); then the idle goes. */
    written_flush(s);
    uv_close((uv_handle_t *)&s->written_idle, on_written_idle_closed);
    struct hg_list *pos, *tmp;
    /* Closing only starts here: a connection leaves the list in its close callback. */
    HG_LIST_FOREACH_SAFE(pos, tmp, &s->conns) {
        struct hg_conn *c = hg_list_entry(pos, struct hg_conn, link);
        if (c->state == CONN_IDLE || c->state == CONN_LINGERING)
            conn_close(c);
        else
            c->close_after = true;
    }
}

void hg_http_server_abort(struct hg_http_server *s)
{
    struct hg_list *pos, *tmp;
    HG_LIST_FOREACH_SAFE(pos, tmp, &s->conns)
        conn_close(hg_list_entry(pos, struct hg_conn, link));
}

void hg_http_server_free(struct hg_http_server *s)
{
    hg_tls_ctx_unref(s->tls);
    free(s->tls_plain);
    while (s->rq_pool) {
        struct conn_request *rq = s->rq_pool;
        s->rq_pool = rq->next;
        rq_destroy(rq);
    }
    free(s);
}

int hg_http_listen_socket(const char *host, uint16_t port, int backlog, bool reuseport)
{
    struct sockaddr_storage ss;
    socklen_t slen;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    if (uv_ip4_addr(host, port, a4) == 0) {
        slen = sizeof(*a4);
    } else if (uv_ip6_addr(host, port, a6) == 0) {
        slen = sizeof(*a6);
    } else {
        return UV_EINVAL;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    /* SO_REUSEPORT: each worker owns a listener on the same port; the kernel spreads accepts. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) ||
        bind(fd, (struct sockaddr *)&ss, slen) != 0 || listen(fd, backlog) != 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

/*
 * HTTP/1.1 server connections on a libuv loop, parsed with llhttp: keep-alive, pipelining
 * (one request handled at a time per connection, answers in order, also after a half-close),
 * Content-Length and chunked bodies (other transfer codings 501), Expect: 100-continue, and every
 * limit (header bytes 431, HG_HTTP_MAX_HEADERS fields 431, body 413 decided early from
 * Content-Length, slow headers/body 408, idle keep-alive, connection cap 503). An early answer
 * (an error before the request was read whole) closes with a lingering close, so a client still
 * sending its body reads the answer instead of a reset. With TLS (hg_http_server_set_tls) the same,
 * over TLS 1.2 (http/tls.h), with client certificates checked per route (hg_conn_client_cert_ok).
 */
#ifndef HG_HTTP_HTTP_H
#define HG_HTTP_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/buf.h"

#define HG_HTTP_MAX_HEADERS 64
#define HG_HTTP_REQUEST_ID_MAX 128

struct hg_http_req_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* One parsed request. Valid until the connection's response to it has been handed to libuv. */
struct hg_http_request {
    int method;                    /* enum llhttp_method */
    const char *path;              /* raw path, NUL-terminated, without the query */
    size_t path_len;
    const char *query;             /* raw query (after '?'), NUL-terminated, "" when none */
    size_t query_len;
    struct hg_http_req_header headers[HG_HTTP_MAX_HEADERS];
    size_t n_headers;
    const char *body;              /* whole body, NUL-terminated */
    size_t body_len;
    char request_id[HG_HTTP_REQUEST_ID_MAX + 1]; /* caller's X-Request-Id if sane, else UUIDv4 */
    uint64_t start_ns;             /* monotonic, first byte of the request */
    bool tls;                      /* it came over TLS ([server] tls_cert): its URL is https:// */
};

/* Value of a header (case-insensitive name), or NULL; *len gets its length. */
const char *hg_http_header_get(const struct hg_http_request *r, const char *name, size_t *len);

struct hg_ip;
struct hg_cidr_list;

/* Limits and timeouts of a listener's connections (from [server]). */
struct hg_http_limits {
    uint64_t max_header_bytes;
    uint64_t max_body_bytes;
    uint64_t header_timeout_ms;
    uint64_t body_timeout_ms;
    uint64_t body_total_timeout_ms; /* the whole body, from the end of the headers (0 = none) */
    uint64_t request_timeout_ms;    /* first byte to answer (0 = none): still reading → 408, the
                                     * application not done → 503 + Retry-After (on_abandon runs) */
    uint64_t max_buffered_bytes;    /* request bodies held by all connections of a server together
                                     * (0 = no cap): a body that does not fit → 503 + Retry-After */
    uint64_t keepalive_timeout_ms;
    uint32_t max_connections;
    /* Peers whose PROXY protocol header names the client (http/proxy.h); NULL = none. Read only
     * as a connection is accepted: it points into the config snapshot the limits came from. */
    const struct hg_cidr_list *trusted_proxies;
};

struct hg_conn;
struct hg_http_server;
struct hg_tls_ctx;

/*
 * The application's side. on_request runs once per complete request; the application must
 * answer exactly once with hg_conn_respond (at once or later). If the connection closes before
 * it answers, or the request's deadline (request_timeout) passes first (the connection then
 * answers 503 + Retry-After itself and closes), on_abandon(conn, ud) runs once: from then on the
 * conn pointer is invalid.
 */
struct hg_http_handler {
    void (*on_request)(struct hg_conn *c, struct hg_http_request *req, void *ud);
    void (*on_abandon)(struct hg_conn *c, void *ud);
    void *ud;
    /* Leave http_requests_total and http_connections alone (the admin listener: a scrape is not traffic). */
    bool no_metrics;
};

/* Start serving on an already bound and listening socket fd (SO_REUSEPORT, made by the caller). */
int hg_http_server_start(uv_loop_t *loop, int fd, const struct hg_http_limits *limits,
                         const struct hg_http_handler *handler, struct hg_http_server **out);
/* New limits for connections from now on (config reload). */
void hg_http_server_set_limits(struct hg_http_server *s, const struct hg_http_limits *limits);
/*
 * TLS for connections accepted from now on (http/tls.h; a reference is taken, the previous one
 * dropped); NULL = plain HTTP. Open connections keep the TLS they were accepted with.
 */
void hg_http_server_set_tls(struct hg_http_server *s, struct hg_tls_ctx *tls);
/*
 * Stop accepting; idle connections close now, busy ones after their current response
 * (answered with Connection: close). `done` runs once every connection is gone.
 */
void hg_http_server_stop(struct hg_http_server *s, void (*done)(void *arg), void *arg);
/* Close every connection now (shutdown timeout passed); in-flight requests are abandoned. */
void hg_http_server_abort(struct hg_http_server *s);
uint32_t hg_http_server_connections(const struct hg_http_server *s);
/* Free a server whose stop `done` callback has run. */
void hg_http_server_free(struct hg_http_server *s);

/*
 * Answer the current request. `extra_headers` is "Name: value\r\n"... or NULL. The body is
 * copied. X-Request-Id, Content-Length, Date-less minimal headers and Connection are added.
 */
void hg_conn_respond(struct hg_conn *c, int status, const char *content_type, const char *extra_headers,
                     const char *body, size_t body_len);
/* Answer with a JSON error body {"error":code,"message":msg,"request_id":id}. */
void hg_conn_respond_error(struct hg_conn *c, int status, const char *code, const char *message,
                           const char *extra_headers);

/* The connection's client address: its socket peer, or the source a trusted peer's PROXY header
 * named. Forwarding headers are the application's to weigh (hg_proxy_client in http/proxy.h). */
const struct hg_ip *hg_conn_addr(const struct hg_conn *c);
/*
 * Mutual TLS: true when the client presented a certificate that verified against
 * [server] tls_client_ca in this connection's handshake; otherwise false with the reason, in
 * words for a 403's message, in `why`.
 */
bool hg_conn_client_cert_ok(const struct hg_conn *c, char *why, size_t wl);

/* The application's pointer for the request in flight on this connection (NULL between requests). */
void hg_conn_set_data(struct hg_conn *c, void *data);
void *hg_conn_get_data(const struct hg_conn *c);

/*
 * Open a listening TCP socket on host:port, with SO_REUSEPORT when `reuseport` (one per worker on
 * the webhook port); without it a port already taken is an error. Returns the fd or a negative error.
 */
int hg_http_listen_socket(const char *host, uint16_t port, int backlog, bool reuseport);

/* Reason phrase of a status code. */
const char *hg_http_reason(int status);

#endif

/*
 * RabbitMQ sink, connect side: one full connect (TCP, login, channel, the exchanges, queues and
 * bindings with the x-max-priority / x-queue-version fallback, confirm mode) on a uv_queue_work
 * thread, because rabbitmq-c's RPCs block. Separate from amqp.c because nothing here runs on the
 * loop: the loop hands the work struct over and takes the connection back in on_connect_done().
 * See docs/amqp.md.
 */
#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdlib.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include "sink/amqp_internal.h"
#include "core/common.h"
#include "providers/provider.h"

static struct amqpc_queue queue_table[N_QUEUES_MAX];
static size_t n_queue_table;
static pthread_once_t queue_table_once = PTHREAD_ONCE_INIT;

static void queue_table_build(void)
{
    size_t n;
    const struct hg_provider *const *providers = hg_providers(&n);
    for (size_t i = 0; i < n; i++) {
        const struct hg_provider_topology *t = providers[i]->topology;
        for (size_t q = 0; q < t->n_queues; q++) {
            /* A registry that outgrows the masks is a build mistake, caught by the first test. */
            if (n_queue_table == N_QUEUES_MAX)
                abort();
            queue_table[n_queue_table++] = (struct amqpc_queue){ t->queues[q].name, t->exchange, t->dlx,
                                                                 t->queues[q].bindings };
        }
    }
}

size_t amqpc_queues(const struct amqpc_queue **out)
{
    pthread_once(&queue_table_once, queue_table_build);
    *out = queue_table;
    return n_queue_table;
}

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

amqp_table_entry_t amqpc_utf8_entry(const char *key, const char *value)
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
                                      const char *dlx, bool dlq, const char *dlq_key,
                                      const struct queue_args *opt)
{
    amqp_table_entry_t args[5];
    int n = 0;
    if (!dlq) {
        args[n++] = amqpc_utf8_entry("x-dead-letter-exchange", dlx);
        args[n++] = amqpc_utf8_entry("x-dead-letter-routing-key", dlq_key);
    }
    /* Only quorum is spelled out: an explicit "classic" can count as inequivalent against a queue
     * declared earlier without the argument. */
    if (a->quorum)
        args[n++] = amqpc_utf8_entry("x-queue-type", "quorum");
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
 * Declare live queue amqpc_queues()[qi] (or its DLQ). RabbitMQ compares x-max-priority and
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
    const struct amqpc_queue *queues;
    amqpc_queues(&queues);
    const char *name = queues[qi].name;
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
        r = queue_declare(a, c, dlq ? dlq_key : name, queues[qi].dlx, dlq, dlq_key, &tries[i]);
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
        size_t bit = dlq ? N_QUEUES_MAX + qi : qi;
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

/* Every provider's exchange and DLX (topic, durable), its queues and DLQs, and the bindings. */
static int declare_topology(struct hg_amqp *a, amqp_connection_state_t c, struct connect_work *w)
{
    const struct amqpc_queue *queues;
    size_t nq = amqpc_queues(&queues);
    for (size_t i = 0; i < nq; i++) {
        /* Each provider's exchanges once: at its first queue. */
        if (i > 0 && strcmp(queues[i].exchange, queues[i - 1].exchange) == 0)
            continue;
        const char *exchanges[] = {queues[i].exchange, queues[i].dlx};
        for (size_t x = 0; x < HG_ARRAY_SIZE(exchanges); x++) {
            amqp_exchange_declare(c, CHANNEL, amqp_cstring_bytes(exchanges[x]), amqp_cstring_bytes("topic"), 0, 1,
                                  0, 0, amqp_empty_table);
            if (rpc_check(c, w, "declare exchange") != 0)
                return -1;
        }
    }
    for (size_t i = 0; i < nq; i++) {
        char dlq_key[64];
        snprintf(dlq_key, sizeof dlq_key, "%s.dlq", queues[i].name);
        if (declare_queue(a, c, w, i, false) != 0 || declare_queue(a, c, w, i, true) != 0 ||
            bind_queue(c, w, dlq_key, queues[i].dlx, dlq_key) != 0)
            return -1;
    }
    for (size_t i = 0; i < nq; i++)
        for (const char *const *b = queues[i].bindings; *b; b++)
            if (bind_queue(c, w, queues[i].name, queues[i].exchange, *b) != 0)
                return -1;
    return 0;
}

/*
 * OpenSSL callbacks of an amqps:// connect, on the work thread. rabbitmq-c keeps its SSL to
 * itself; the sink needs it on the loop to write a turn's frames with one SSL_write (see
 * amqpc_link_write) and to see records OpenSSL already holds, so the info callback, which sees
 * every handshake step, hands it over. The verify callback keeps the first certificate error, so
 * the log says why a broker was refused rather than "SSL connection failed".
 */
static void on_tls_info(const SSL *ssl, int where, int ret)
{
    (void)where;
    (void)ret;
    struct connect_work *w = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    if (w)
        w->ssl = (SSL *)ssl; /* OpenSSL passes it const; the connection owns it, we only use it */
}

static int on_tls_verify(int ok, X509_STORE_CTX *store)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct connect_work *w = ssl ? SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)) : NULL;
    if (!ok && w && w->tls_error[0] == '\0')
        snprintf(w->tls_error, sizeof w->tls_error, "%s",
                 X509_verify_cert_error_string(X509_STORE_CTX_get_error(store)));
    return ok;
}

/*
 * The TLS socket of an amqps:// URL: TLS 1.2 at least; the chain checked against tls_ca or the
 * system store and the host name (or IP address) against the certificate by OpenSSL's own checks
 * (rabbitmq-c's host check knows no IP addresses), the handshake aborted on a failure; a client
 * certificate when configured. Returns the socket or NULL with w->error set.
 */
static amqp_socket_t *tls_socket(struct hg_amqp *a, struct connect_work *w, amqp_connection_state_t c,
                                 const char *host)
{
    const struct amqpc_target *t = a->target;
    amqp_socket_t *sock = amqp_ssl_socket_new(c);
    if (sock == NULL) {
        set_error(w, "tls", "cannot set up OpenSSL");
        return NULL;
    }
    SSL_CTX *ctx = amqp_ssl_socket_get_context(sock);
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_app_data(ctx, w);
    SSL_CTX_set_info_callback(ctx, on_tls_info);
    if (t->tls_ca) {
        if (amqp_ssl_socket_set_cacert(sock, t->tls_ca) != AMQP_STATUS_OK) {
            set_error(w, "tls_ca", "cannot read the CA bundle (PEM)");
            return NULL;
        }
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        set_error(w, "tls", "cannot load the system CA store");
        return NULL;
    }
    if (t->tls_cert && amqp_ssl_socket_set_key(sock, t->tls_cert, t->tls_key) != AMQP_STATUS_OK) {
        set_error(w, "tls_cert", "cannot read the client certificate and key (PEM)");
        return NULL;
    }
    amqp_ssl_socket_set_verify_hostname(sock, 0);
    if (t->tls_insecure) {
        amqp_ssl_socket_set_verify_peer(sock, 0);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
        return sock;
    }
    amqp_ssl_socket_set_verify_peer(sock, 1);
    X509_VERIFY_PARAM *param = SSL_CTX_get0_param(ctx);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    unsigned char ip[16];
    int is_ip = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
    if ((is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, host) : X509_VERIFY_PARAM_set1_host(param, host, 0)) != 1) {
        set_error(w, "tls", "cannot set the host name to check");
        return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, on_tls_verify);
    return sock;
}

/* One full connect to urls[i]: TCP (and TLS), login, channel, topology, confirm mode. Blocking,
 * bounded by connect_timeout_ms per step. Returns the connection or NULL with w->error set. */
static amqp_connection_state_t connect_one(struct hg_amqp *a, struct connect_work *w, size_t i)
{
    struct amqp_connection_info info;
    char *url = hg_xstrdup(a->target->urls[i]); /* amqp_parse_url writes into its argument */
    amqp_connection_state_t c = NULL;
    struct timeval tv = {.tv_sec = a->connect_timeout_ms / 1000,
                         .tv_usec = (a->connect_timeout_ms % 1000) * 1000};

    w->ssl = NULL;
    w->tls_error[0] = '\0';
    if (amqp_parse_url(url, &info) != AMQP_STATUS_OK) {
        set_error(w, "parse url", "invalid");
        goto fail;
    }
    c = amqp_new_connection();
    if (c == NULL)
        hg_oom(__FILE__, __LINE__);
    amqp_socket_t *sock = info.ssl ? tls_socket(a, w, c, info.host) : amqp_tcp_socket_new(c);
    if (sock == NULL) {
        if (!info.ssl)
            hg_oom(__FILE__, __LINE__);
        goto fail;
    }
    int rc = amqp_socket_open_noblock(sock, info.host, info.port, &tv);
    if (rc != AMQP_STATUS_OK) {
        if (info.ssl && w->tls_error[0])
            set_error(w, "tls handshake: certificate refused", w->tls_error);
        else if (info.ssl && rc == AMQP_STATUS_SSL_CONNECTION_FAILED)
            set_error(w, "tls handshake", ERR_reason_error_string(ERR_peek_last_error()));
        else
            set_error(w, info.ssl && rc != AMQP_STATUS_SOCKET_ERROR && rc != AMQP_STATUS_TIMEOUT ? "tls handshake"
                                                                                               : "connect",
                      amqp_error_string2(rc));
        goto fail;
    }
    if (info.ssl && w->ssl == NULL) {
        set_error(w, "tls", "no TLS session"); /* cannot happen: every handshake calls on_tls_info */
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
    if (info.ssl) /* the callbacks must not outlive this work struct's use of them */
        SSL_CTX_set_app_data(SSL_get_SSL_CTX(w->ssl), NULL);
    free(url);
    return c;
fail:
    if (c)
        amqp_destroy_connection(c);
    w->ssl = NULL;
    free(url);
    return NULL;
}

void amqpc_connect_work(uv_work_t *req)
{
    struct connect_work *w = HG_CONTAINER_OF(req, struct connect_work, req);
    struct hg_amqp *a = w->owner;
    for (size_t i = 0; i < a->target->n_urls; i++) {
        w->no_priority = 0;
        w->no_version = 0;
        w->conn = connect_one(a, w, i);
        if (w->conn) {
            w->url_index = (int)i;
            return;
        }
    }
}

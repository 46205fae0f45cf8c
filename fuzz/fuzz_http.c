/*
 * libFuzzer harness for the webhook port's request path: the bytes a client sends go through a
 * real connection (src/http/conn.c on a libuv loop, llhttp and every limit), the router and the
 * ingest chain of every provider (tenant, credentials, verify, parse, replay window) down to the
 * spool, which is faked: the linker sends ingest's hg_spool_append and hg_drain_submit here
 * (-Wl,--wrap), so nothing is written to disk. The clock is fixed (hg_time_now_ns wrapped too) so
 * seeds signed with a timestamp stay valid.
 *
 * The server listens on a unix socket (uv_tcp_open takes any stream socket fd; no TCP port, no
 * TIME_WAIT after millions of connections). Input: byte 0 chooses how the client and the fake
 * spool behave, the rest is what the client writes:
 *   bits 0-1  spool: 0, 3 durable; 1 refuses at once (full); 2 fails after the append (EIO)
 *   bit 2     write in two pieces (split at byte 1's share of the input), the loop runs between
 *   bit 3     abandon: close the client right after writing, without reading
 * Checks, per input: no crash, leak or sanitizer report; the connection always closes (the client
 * half-closes after writing, so every path must end); the bytes the server wrote parse as a
 * sequence of HTTP responses (bodyless for HEAD), one per request the client completed, except
 * that the last answer may be an error that closes the connection; the fake spool is empty again.
 */
#include <errno.h>
#include <fcntl.h>
#include <llhttp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include "conf/conf.h"
#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "drain/drain.h"
#include "http/http.h"
#include "http/router.h"
#include "ingest/ingest.h"
#include "ops/metrics.h"
#include "spool/spool.h"
#include "tenants/tenants.h"
#include "worker/worker.h"

#ifndef HG_SOURCE_DIR
#error "build with -DHG_SOURCE_DIR=\"<repository root>\" (the Makefile does)"
#endif

/* 2025-12-07T00:00:00Z: the seeds' signed timestamps and JWT lifetimes are built around it. */
#define FUZZ_NOW_S 1765065600ull

static uv_loop_t loop;
static struct hg_worker worker;
static struct hg_http_server *server;
static char sock_path[108];
static char tmp_dir[32];

/* The socket and its directory go at exit: a run must not leave one per run in /tmp. */
static void clean_up(void)
{
    unlink(sock_path);
    rmdir(tmp_dir);
}
static int spool_mode;
static bool dump; /* FUZZ_HTTP_DUMP=1: the server's answers go to stderr (to check the seeds) */
static struct hg_spool *fake_spool = (struct hg_spool *)&fake_spool;
static struct hg_drain *fake_drain = (struct hg_drain *)&fake_drain;

/* ---- the fake spool and drain (ingest's calls land here through --wrap) ---- */

struct fake_append {
    struct fake_append *next;
    hg_spool_append_cb cb;
    void *arg;
};

static struct fake_append *appends;
static uint64_t next_id = 1;
static uv_idle_t append_idle;

/* Complete every pending append, later than the call as the spool's contract says. */
static void on_append_idle(uv_idle_t *h)
{
    struct fake_append *a = appends;
    appends = NULL;
    uv_idle_stop(h);
    while (a) {
        struct fake_append *next = a->next;
        a->cb(a->arg, spool_mode == 2 ? UV_EIO : 0, next_id++);
        free(a);
        a = next;
    }
}

int __wrap_hg_spool_append(struct hg_spool *s, const struct hg_record *rec, hg_spool_append_cb cb, void *arg);
int __wrap_hg_spool_append(struct hg_spool *s, const struct hg_record *rec, hg_spool_append_cb cb, void *arg)
{
    if (s != fake_spool || rec->body == NULL || rec->headers == NULL || rec->request_id == NULL)
        abort();
    if (spool_mode == 1)
        return HG_ERR_FULL;
    struct fake_append *a = calloc(1, sizeof(*a));
    if (a == NULL)
        abort();
    a->cb = cb;
    a->arg = arg;
    a->next = appends;
    appends = a;
    uv_idle_start(&append_idle, on_append_idle);
    return 0;
}

void __wrap_hg_drain_submit(struct hg_drain *d, uint64_t spool_id, const struct hg_record *rec,
                            struct hg_json_doc *doc);
void __wrap_hg_drain_submit(struct hg_drain *d, uint64_t spool_id, const struct hg_record *rec,
                            struct hg_json_doc *doc)
{
    if (d != fake_drain || spool_id == 0 || rec->provider == NULL)
        abort();
    /* The drain owns the parsed document from here; it would normalize and publish it. */
    hg_json_doc_free(doc);
}

uint64_t __wrap_hg_time_now_ns(void);
uint64_t __wrap_hg_time_now_ns(void)
{
    return FUZZ_NOW_S * 1000000000ull;
}

/* ---- set-up, once ---- */

static const char conf_text[] =
    "[server]\n"
    "workers = 1\n"
    "max_body = 64KiB\n"
    "max_header = 4KiB\n"
    "header_timeout = 10m\n"
    "body_timeout = 10m\n"
    "keepalive_timeout = 10m\n"
    "[admin]\n"
    "listen = off\n"
    "[whatsapp]\n"
    "app_secret = fuzz-app-secret\n"
    "verify_token = fuzz-verify-token\n"
    "[genesys]\n"
    "secret = fuzz-genesys-secret\n"
    "api_key = fuzz-genesys-key\n"
    "[twilio]\n"
    "auth_token = fuzz-twilio-token\n"
    "public_url = https://hooks.example.com\n"
    "[pubsub]\n"
    "jwks_file = " HG_SOURCE_DIR "/test/fixtures/generic/jwks.json\n"
    "audience = https://hooks.example.com/webhooks/pubsub\n"
    "[tenant.acme]\n"
    "app_secret = acme-app-secret\n"
    "business_ids = 1111,2222\n"
    "twilio_auth_token = acme-twilio-token\n"
    "account_sid = AC0123456789abcdef0123456789abcdef\n"
    "[source.sw]\n"
    "scheme = standard-webhooks\n"
    "secret = whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n"
    "[source.stripe]\n"
    "scheme = stripe\n"
    "secret = whsec_fuzz_stripe\n"
    "[source.gh]\n"
    "scheme = hmac\n"
    "header = X-Hub-Signature-256\n"
    "prefix = sha256=\n"
    "secret = fuzz-gh-secret\n"
    "id = header:X-GitHub-Delivery\n"
    "type = header:X-GitHub-Event\n"
    "[source.slack]\n"
    "scheme = hmac\n"
    "header = X-Slack-Signature\n"
    "prefix = v0=\n"
    "timestamp_header = X-Slack-Request-Timestamp\n"
    "template = v0:{timestamp}:{body}\n"
    "secret = fuzz-slack-secret\n"
    "[source.shop]\n"
    "scheme = hmac\n"
    "header = X-Shopify-Hmac-Sha256\n"
    "encoding = base64\n"
    "algorithm = sha512\n"
    "secret = fuzz-shop-secret\n"
    "id = id\n"
    "type = topic\n"
    "[source.key]\n"
    "scheme = api-key\n"
    "header = X-Api-Key\n"
    "secret = fuzz-source-key\n"
    "tenant = acme\n"
    "[source.basic]\n"
    "scheme = basic\n"
    "user = fuzz\n"
    "secret = fuzz-basic-password\n"
    "[source.jwt]\n"
    "scheme = jwt\n"
    "secret = fuzz-jwt-secret\n"
    "issuer = fuzz-issuer\n"
    "audience = hookgate\n"
    "[source.nokey]\n"
    "scheme = api-key\n"
    "[source.rs]\n"
    "scheme = jwt\n"
    "jwks = "; /* the fixture's JWKS follows, on one line */

static void on_request(struct hg_conn *c, struct hg_http_request *r, void *ud)
{
    hg_router_dispatch(ud, c, r);
}

static void set_up(void)
{
    char *dir = tmp_dir, path[256], err[512];
    snprintf(tmp_dir, sizeof(tmp_dir), "/tmp/hg-fuzz-http-XXXXXX");
    if (mkdtemp(tmp_dir) == NULL)
        abort();
    snprintf(path, sizeof(path), "%s/hookgate.conf", dir);
    FILE *f = fopen(path, "w"), *jwks = fopen(HG_SOURCE_DIR "/test/fixtures/generic/jwks.json", "r");
    if (f == NULL || jwks == NULL || fwrite(conf_text, 1, sizeof(conf_text) - 1, f) != sizeof(conf_text) - 1)
        abort();
    for (int ch; (ch = fgetc(jwks)) != EOF;)
        if (ch != '\n' && ch != '\r')
            fputc(ch, f);
    fputc('\n', f);
    if (fclose(f) != 0 || fclose(jwks) != 0)
        abort();
    struct hg_conf *conf;
    if (hg_conf_load(path, &conf, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_http: config: %s\n", err);
        abort();
    }
    unlink(path);
    dump = getenv("FUZZ_HTTP_DUMP") != NULL;
    /* As main.c does: a client gone before its answer is an EPIPE to handle, not a signal. */
    signal(SIGPIPE, SIG_IGN);
    /* Refusals are logged at info and warn; millions of them would be the whole run's cost. */
    hg_log_set_level((enum hg_log_level)(HG_LOG_ERROR + 1));
    hg_metrics_init(1);
    hg_metrics_bind(0);
    if (uv_loop_init(&loop) != 0)
        abort();
    uv_idle_init(&loop, &append_idle);
    worker.id = 0;
    worker.nworkers = 1;
    worker.conf = conf;
    worker.spool = fake_spool;
    worker.drain = fake_drain;
    struct hg_tenants_opts to = { .cache_ttl_ms = conf->tenant_cache_ttl_ms,
                                  .negative_ttl_ms = conf->tenant_negative_ttl_ms };
    if (hg_tenants_open(&loop, NULL, NULL, &to, &worker.tenants) != 0)
        abort();

    snprintf(sock_path, sizeof(sock_path), "%s/http.sock", dir);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock_path);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 16) != 0)
        abort();
    struct hg_http_limits l = {
        .max_header_bytes = conf->max_header_bytes,
        .max_body_bytes = conf->max_body_bytes,
        .header_timeout_ms = conf->header_timeout_ms,
        .body_timeout_ms = conf->body_timeout_ms,
        .keepalive_timeout_ms = conf->keepalive_timeout_ms,
        .max_connections = 16,
    };
    struct hg_http_handler h = { on_request, hg_ingest_abandon, &worker, false };
    if (hg_http_server_start(&loop, fd, &l, &h, &server) != 0)
        abort();
    atexit(clean_up);
}

/* ---- the client's view: what it sent (a mirror parser) and what it got back ---- */

#define MAX_MSGS 256

struct mirror {
    llhttp_t p;
    int methods[MAX_MSGS];  /* method of each request whose headers completed */
    size_t heads;
    size_t complete;        /* requests sent whole */
};

static int mirror_headers(llhttp_t *p)
{
    struct mirror *m = p->data;
    if (m->heads < MAX_MSGS)
        m->methods[m->heads] = p->method;
    m->heads++;
    return 0;
}

static int mirror_complete(llhttp_t *p)
{
    ((struct mirror *)p->data)->complete++;
    return 0;
}

struct answers {
    llhttp_t p;
    const struct mirror *m;
    size_t final;           /* final (non-1xx) responses */
    bool last_close;        /* the last final response said Connection: close */
    bool hdr_connection;    /* the header being read is Connection */
    bool hdr_close;
};

static int ans_field(llhttp_t *p, const char *at, size_t len)
{
    struct answers *a = p->data;
    a->hdr_connection = len == 10 && strncasecmp(at, "Connection", 10) == 0;
    return 0;
}

static int ans_value(llhttp_t *p, const char *at, size_t len)
{
    struct answers *a = p->data;
    if (a->hdr_connection && len == 5 && strncasecmp(at, "close", 5) == 0)
        a->hdr_close = true;
    return 0;
}

static int ans_begin(llhttp_t *p)
{
    ((struct answers *)p->data)->hdr_close = false;
    return 0;
}

static int ans_headers(llhttp_t *p)
{
    struct answers *a = p->data;
    if (p->status_code < 200)
        return 0;
    /* The answer to a HEAD carries the GET's headers and no body (RFC 9110 §9.3.2). */
    if (a->final < a->m->heads && a->final < MAX_MSGS && a->m->methods[a->final] == HTTP_HEAD)
        return 1;
    return 0;
}

static int ans_complete(llhttp_t *p)
{
    struct answers *a = p->data;
    if (p->status_code >= 200) {
        a->final++;
        a->last_close = a->hdr_close;
        /* Nothing a client reads follows a closing answer (an early error may carry a body
         * after a HEAD whose method the server had not read yet). */
        if (a->hdr_close)
            return HPE_PAUSED;
    }
    return 0;
}

/* Run the loop until `done` or no progress is possible; false when it never got there. */
static bool settle(int cfd, struct answers *ans, bool reading, bool *eof)
{
    char buf[16384];
    for (int turns = 0; turns < 10000; turns++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        if (reading && !*eof) {
            for (;;) {
                ssize_t n = read(cfd, buf, sizeof(buf));
                if (n > 0) {
                    if (dump)
                        fwrite(buf, 1, (size_t)n, stderr);
                    if (ans->last_close)
                        continue;
                    llhttp_errno_t rc = llhttp_execute(&ans->p, buf, (size_t)n);
                    if (rc != HPE_OK && !(rc == HPE_PAUSED && ans->last_close)) {
                        fprintf(stderr, "fuzz_http: the server wrote a malformed answer: %s (%s)\n",
                                llhttp_errno_name(rc), llhttp_get_error_reason(&ans->p));
                        abort();
                    }
                    continue;
                }
                if (n == 0)
                    *eof = true;
                else if (errno != EAGAIN)
                    *eof = true; /* reset: the server closed with our bytes unread */
                break;
            }
        }
        if ((*eof || !reading) && hg_http_server_connections(server) == 0 && appends == NULL)
            return true;
    }
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (server == NULL)
        set_up();
    if (size < 2)
        return 0;
    unsigned flags = data[0];
    size_t split = (size_t)data[1] * (size - 2) / 255;
    const char *req = (const char *)data + 2;
    size_t req_len = size - 2;
    spool_mode = (int)(flags & 3);
    bool pieces = flags & 4, abandon = flags & 8;

    struct mirror m = { .heads = 0 };
    llhttp_settings_t ms;
    llhttp_settings_init(&ms);
    ms.on_headers_complete = mirror_headers;
    ms.on_message_complete = mirror_complete;
    llhttp_init(&m.p, HTTP_REQUEST, &ms);
    m.p.data = &m;
    /* The server stops at the first error too; a request after it is never read. */
    llhttp_execute(&m.p, req, req_len);

    struct answers ans = { .m = &m };
    llhttp_settings_t as;
    llhttp_settings_init(&as);
    as.on_message_begin = ans_begin;
    as.on_header_field = ans_field;
    as.on_header_value = ans_value;
    as.on_headers_complete = ans_headers;
    as.on_message_complete = ans_complete;
    llhttp_init(&ans.p, HTTP_RESPONSE, &as);
    ans.p.data = &ans;

    int cfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock_path);
    if (cfd < 0 || connect(cfd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        abort();
    /* The whole input fits the socket buffers (inputs are far below them). */
    int big = 1 << 20;
    setsockopt(cfd, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    fcntl(cfd, F_SETFL, O_NONBLOCK);
    bool eof = false;
    size_t first = pieces ? split : req_len;
    if (first > 0 && write(cfd, req, first) != (ssize_t)first)
        abort();
    if (pieces) {
        for (int i = 0; i < 3; i++)
            uv_run(&loop, UV_RUN_NOWAIT);
        /* The answer to the first piece may have closed the connection (Connection: close, an
         * error): the rest is then refused (EPIPE) and never read, as for any client. */
        if (req_len > first && write(cfd, req + first, req_len - first) < 0 && errno != EPIPE && errno != ECONNRESET)
            abort();
    }
    if (abandon) {
        close(cfd);
        cfd = -1;
    } else {
        shutdown(cfd, SHUT_WR);
    }
    if (!settle(cfd, &ans, !abandon, &eof)) {
        fprintf(stderr, "fuzz_http: the connection was neither answered nor closed (%u open, spool %s)\n",
                hg_http_server_connections(server), appends ? "busy" : "idle");
        abort();
    }
    if (!abandon) {
        /* One answer per whole request; fewer only when an answer closed the connection early,
         * and one more only for an error answered before a request was read whole. */
        bool ok = ans.final == m.complete || (ans.last_close && ans.final > 0 && ans.final <= m.complete + 1);
        if (!ok) {
            fprintf(stderr, "fuzz_http: %zu requests sent whole, %zu answered (last %s)\n", m.complete, ans.final,
                    ans.last_close ? "closing" : "keep-alive");
            abort();
        }
        close(cfd);
    }
    return 0;
}

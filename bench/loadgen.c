/*
 * bench/loadgen: HTTP/1.1 keep-alive load generator for WhatsApp Cloud API webhooks.
 *
 * Every request carries a realistic envelope with unique wamids and a valid X-Hub-Signature-256
 * (HMAC-SHA256 of the exact body, computed per request with mbedTLS). Three modes:
 *   closed loop  (-c C, no -R)  every connection sends its next request as soon as the previous
 *                               answer arrived: maximum throughput.
 *   open loop    (-R RATE)      request k is scheduled at t0 + k/RATE and its latency is measured
 *                               from that scheduled time, so a stalled server is charged for every
 *                               request it delayed (no coordinated omission, as wrk2 does).
 *   idle         (--idle N)     opens N connections, sends one request on each (so each is a real
 *                               keep-alive connection), then holds them open without traffic.
 * Text report on stderr, one JSON line on stdout. Single thread, epoll, non-blocking sockets.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/md.h>

#define OUT_CAP        16384  /* request headers + largest body */
#define BODY_CAP       12288
#define IN_CAP         8192   /* answers are small; a larger one is skipped by Content-Length */
#define MAX_CONNECTING 256    /* connects in flight at once, so the accept queue never overflows */
#define NSTATUS        600

/* ---- latency histogram: log2 buckets, 64 linear sub-buckets each (<= 1.6 % error) ---- */

#define SUB_BITS 6
#define SUB      (1 << SUB_BITS)
#define HIST_N   ((64 - SUB_BITS) * SUB)

struct hist {
    uint64_t b[HIST_N];
    uint64_t n, max;
    double sum;
};

static int hist_index(uint64_t v)
{
    if (v < SUB)
        return (int)v;
    int e = 63 - __builtin_clzll(v);
    return (e - SUB_BITS + 1) * SUB + (int)((v >> (e - SUB_BITS)) & (SUB - 1));
}

/* Middle of the bucket's range, the value reported for every sample in it. */
static uint64_t hist_value(int i)
{
    if (i < SUB)
        return (uint64_t)i;
    int e = i / SUB + SUB_BITS - 1;
    uint64_t lo = (1ull << e) + ((uint64_t)(i % SUB) << (e - SUB_BITS));
    return lo + (1ull << (e - SUB_BITS)) / 2;
}

static void hist_add(struct hist *h, uint64_t v)
{
    h->b[hist_index(v)]++;
    h->n++;
    h->sum += (double)v;
    if (v > h->max)
        h->max = v;
}

static uint64_t hist_pct(const struct hist *h, double p)
{
    if (h->n == 0)
        return 0;
    uint64_t want = (uint64_t)((double)h->n * p / 100.0 + 0.5);
    if (want < 1)
        want = 1;
    uint64_t seen = 0;
    for (int i = 0; i < HIST_N; i++) {
        seen += h->b[i];
        if (seen >= want)
            return hist_value(i) > h->max ? h->max : hist_value(i);
    }
    return h->max;
}

/* ---- options and global state ---- */

enum body_kind { BODY_TEXT, BODY_BATCH, BODY_MEDIA, BODY_MIX };

static struct {
    const char *host, *path, *secret, *ready_file, *label;
    int port, conns, idle;
    double duration, warmup, rate;
    long requests;
    enum body_kind body;
    uint64_t seed;
    long fixed_ts;
    bool sign;
} opt = {
    .host = "127.0.0.1", .path = "/webhooks/whatsapp", .secret = "demo-app-secret", .port = 8080,
    .conns = 16, .duration = 10, .body = BODY_TEXT, .sign = true,
};

struct conn {
    int fd;
    bool connected, busy, closing;
    uint64_t sched_ns;   /* when the in-flight request was due (open loop) or sent (closed) */
    char out[OUT_CAP];
    size_t out_len, out_off;
    char in[IN_CAP];
    size_t in_len;
    size_t skip;         /* body bytes of the current answer still to discard */
    int idle_next;       /* free-list link, -1 = end */
};

static struct conn *conns;
static int nconns, epfd;
static int idle_head = -1;     /* connections free to take a request (open loop) */
static int connecting;         /* connects in flight */
static int next_to_open;       /* index of the next connection to open (idle mode) */
static struct sockaddr_in addr;
static volatile sig_atomic_t stop_flag;

static struct stats {
    struct hist lat;
    uint64_t sent, done, ok, bytes_out;
    uint64_t status[NSTATUS];
    uint64_t connect_err, reset, reconnects, unsent;
} st;

static uint64_t seq;           /* request counter: every wamid embeds it */
static uint64_t run_id;        /* distinguishes runs, so ids stay unique across runs */
static mbedtls_md_context_t hmac;
static size_t body_sizes[3];

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(2);
}

/* splitmix64: deterministic per (seed, seq), so a fixed --seed gives the same bodies every run. */
static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* ---- bodies ---- */

static const char *const names[] = { "Sheena Nelson", "Arjun Mehta", "Lucia Fernandez", "Kwame Mensah",
                                     "Mei Tanaka", "Olga Petrova", "Tomas Novak", "Amara Okafor" };
static const char *const texts[] = {
    "Hi! I ordered the blue running shoes last Tuesday (order #A-20931) and the tracking page still says "
    "label created. Could you check whether they have shipped yet, and if not, whether I can change the "
    "size from 42 to 43 before they go out? Thanks a lot for your help, I need them before the half marathon "
    "on Sunday.",
    "Good morning, does the large oak dining table also come in a darker walnut finish, and what would the "
    "delivery time be to Porto? I would also like to know if assembly is included in the price or whether "
    "I should book that separately. We are moving next month so timing matters quite a lot for us. Thanks!",
};

/* A wamid is base64-looking and unique: run id and sequence number in hex inside a fixed frame. */
static int wamid(char *out, size_t cap, uint64_t n, int k)
{
    return snprintf(out, cap, "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQ%016" PRIX64 "%08" PRIX64 "%02XA=", run_id, n, k);
}

static int env_open(char *b, size_t cap, uint64_t r)
{
    return snprintf(b, cap,
                    "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"102290129340398\",\"changes\":[{"
                    "\"value\":{\"messaging_product\":\"whatsapp\",\"metadata\":{\"display_phone_number\":"
                    "\"15550783881\",\"phone_number_id\":\"106540352242922\"},\"contacts\":[{\"profile\":{\"name\":"
                    "\"%s\"},\"wa_id\":\"1650555%04u\"}],",
                    names[r % 8], (unsigned)(r % 10000));
}

static const char env_close[] = "},\"field\":\"messages\"}]}]}";

static int msg_text(char *b, size_t cap, uint64_t n, int k, uint64_t r, long ts)
{
    char id[96];
    wamid(id, sizeof(id), n, k);
    return snprintf(b, cap,
                    "{\"from\":\"1650555%04u\",\"id\":\"%s\",\"timestamp\":\"%ld\",\"type\":\"text\","
                    "\"text\":{\"body\":\"%s\"}}",
                    (unsigned)(r % 10000), id, ts, texts[(r >> 8) % 2]);
}

static int msg_image(char *b, size_t cap, uint64_t n, int k, uint64_t r, long ts)
{
    char id[96];
    wamid(id, sizeof(id), n, k);
    return snprintf(b, cap,
                    "{\"from\":\"1650555%04u\",\"id\":\"%s\",\"timestamp\":\"%ld\",\"type\":\"image\","
                    "\"image\":{\"caption\":\"Photo of the damaged parcel as it arrived this morning\","
                    "\"mime_type\":\"image/jpeg\",\"sha256\":\"Ux8Lq0YPq7H3nJ9Wc2aZ4m5S1tVbE0dRrKfGhIjKlMo=\","
                    "\"id\":\"%llu\"}}",
                    (unsigned)(r % 10000), id, ts, 1000000000000000ull + (r % 1000000000000000ull));
}

static int status_read(char *b, size_t cap, uint64_t n, int k, uint64_t r, long ts)
{
    char id[96];
    wamid(id, sizeof(id), n, k);
    static const char *const st_names[] = { "sent", "delivered", "read" };
    return snprintf(b, cap,
                    "{\"id\":\"%s\",\"status\":\"%s\",\"timestamp\":\"%ld\",\"recipient_id\":\"1650555%04u\","
                    "\"conversation\":{\"id\":\"c%016" PRIx64 "\",\"origin\":{\"type\":\"service\"}},"
                    "\"pricing\":{\"billable\":true,\"pricing_model\":\"CBP\",\"category\":\"service\"}}",
                    id, st_names[k % 3], ts, (unsigned)(r % 10000), r);
}

/* Append with bounds: returns false once the body would not fit. */
static bool add(size_t cap, size_t *len, int n)
{
    if (n < 0 || (size_t)n >= cap - *len)
        return false;
    *len += (size_t)n;
    return true;
}

static enum body_kind kind_for(uint64_t n)
{
    if (opt.body != BODY_MIX)
        return opt.body;
    /* 70 % text, 15 % batched, 15 % media: deterministic in the sequence number. */
    uint64_t m = mix(n ^ 0x5eed) % 100;
    return m < 70 ? BODY_TEXT : m < 85 ? BODY_BATCH : BODY_MEDIA;
}

static size_t make_body(char *b, size_t cap, uint64_t n)
{
    uint64_t r = mix(opt.seed * 1000003u + n);
    long ts = opt.fixed_ts ? opt.fixed_ts : (long)time(NULL);
    size_t len = 0;
    bool ok = add(cap, &len, env_open(b, cap, r));
    switch (kind_for(n)) {
    case BODY_TEXT:
    case BODY_MIX:
        ok = ok && add(cap, &len, snprintf(b + len, cap - len, "\"messages\":["));
        ok = ok && add(cap, &len, msg_text(b + len, cap - len, n, 0, r, ts));
        ok = ok && add(cap, &len, snprintf(b + len, cap - len, "]"));
        break;
    case BODY_MEDIA:
        ok = ok && add(cap, &len, snprintf(b + len, cap - len, "\"messages\":["));
        ok = ok && add(cap, &len, msg_image(b + len, cap - len, n, 0, r, ts));
        ok = ok && add(cap, &len, snprintf(b + len, cap - len, "]"));
        break;
    case BODY_BATCH:
        /* What Meta sends under load: several messages and statuses in one envelope. */
        ok = ok && add(cap, &len, snprintf(b + len, cap - len, "\"messages\":["));
        for (int k = 0; k < 3 && ok; k++) {
            if (k)
                ok = add(cap, &len, snprintf(b + len, cap - len, ","));
            ok = ok && add(cap, &len, (k == 1 ? msg_image : msg_text)(b + len, cap - len, n, k, r + (uint64_t)k, ts));
        }
        ok = ok && add(cap, &len, snprintf(b + len, cap - len, "],\"statuses\":["));
        for (int k = 0; k < 3 && ok; k++) {
            if (k)
                ok = add(cap, &len, snprintf(b + len, cap - len, ","));
            ok = ok && add(cap, &len, status_read(b + len, cap - len, n, 10 + k, r + (uint64_t)k, ts));
        }
        ok = ok && add(cap, &len, snprintf(b + len, cap - len, "]"));
        break;
    }
    ok = ok && add(cap, &len, snprintf(b + len, cap - len, "%s", env_close));
    if (!ok) {
        fprintf(stderr, "loadgen: body larger than %zu bytes\n", cap);
        exit(2);
    }
    return len;
}

static void sign(const char *body, size_t len, char hex[65])
{
    unsigned char mac[32];
    static const char digits[] = "0123456789abcdef";
    /* reset reuses the key's inner pad computed once in main: two SHA-256 passes per body. */
    if (mbedtls_md_hmac_reset(&hmac) != 0 || mbedtls_md_hmac_update(&hmac, (const unsigned char *)body, len) != 0 ||
        mbedtls_md_hmac_finish(&hmac, mac) != 0) {
        fprintf(stderr, "loadgen: HMAC failed\n");
        exit(2);
    }
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = digits[mac[i] >> 4];
        hex[2 * i + 1] = digits[mac[i] & 15];
    }
    hex[64] = '\0';
}

/* Build the next request (headers + body) into the connection's output buffer. */
static void build_request(struct conn *c)
{
    static char body[BODY_CAP];
    uint64_t n = seq++;
    size_t blen = make_body(body, sizeof(body), n);
    char sig[65] = "";
    if (opt.sign)
        sign(body, blen, sig);
    int h = snprintf(c->out, OUT_CAP,
                     "POST %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: facebookexternalua\r\n"
                     "Accept: */*\r\nContent-Type: application/json\r\n%s%s%sContent-Length: %zu\r\n\r\n",
                     opt.path, opt.host, opt.port, opt.sign ? "X-Hub-Signature-256: sha256=" : "", sig,
                     opt.sign ? "\r\n" : "", blen);
    if (h < 0 || (size_t)h + blen > OUT_CAP) {
        fprintf(stderr, "loadgen: request larger than %d bytes\n", OUT_CAP);
        exit(2);
    }
    memcpy(c->out + h, body, blen);
    c->out_len = (size_t)h + blen;
    c->out_off = 0;
}

/* ---- connections ---- */

static void conn_watch(struct conn *c, uint32_t ev, int op)
{
    struct epoll_event e = { .events = ev, .data.u32 = (uint32_t)(c - conns) };
    if (epoll_ctl(epfd, op, c->fd, &e) != 0)
        die("epoll_ctl");
}

static void conn_open(struct conn *c)
{
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        die("socket (raise ulimit -n?)");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->connected = c->busy = c->closing = false;
    c->in_len = c->skip = 0;
    c->out_len = c->out_off = 0;
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 && errno != EINPROGRESS)
        die("connect");
    connecting++;
    conn_watch(c, EPOLLOUT, EPOLL_CTL_ADD);
}

static void idle_push(struct conn *c)
{
    c->idle_next = idle_head;
    idle_head = (int)(c - conns);
}

static bool measuring(uint64_t t, uint64_t t_measure)
{
    return t >= t_measure;
}

static void try_write(struct conn *c);

/* Start a request on an idle, connected connection; sched is when it was due. */
static void start_request(struct conn *c, uint64_t sched)
{
    build_request(c);
    c->busy = true;
    c->sched_ns = sched;
    st.sent++;
    st.bytes_out += c->out_len;
    try_write(c);
}

static void conn_fail(struct conn *c, bool count_reset);

static void try_write(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n > 0) {
            c->out_off += (size_t)n;
        } else if (n < 0 && errno == EAGAIN) {
            conn_watch(c, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
            return;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            conn_fail(c, true);
            return;
        }
    }
}

/*
 * Parse one complete answer from c->in: status line, headers up to the blank line, and a
 * Content-Length body. Returns the status (>0), 0 when more bytes are needed, -1 if malformed.
 * *close_after is set when the server said Connection: close.
 */
static int parse_answer(struct conn *c, size_t *consumed, bool *close_after)
{
    char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (!end)
        return c->in_len == IN_CAP ? -1 : 0;
    size_t hlen = (size_t)(end - c->in) + 4;
    if (c->in_len < 12 || memcmp(c->in, "HTTP/1.", 7) != 0)
        return -1;
    int status = (c->in[9] - '0') * 100 + (c->in[10] - '0') * 10 + (c->in[11] - '0');
    if (status < 100 || status >= NSTATUS)
        return -1;
    size_t clen = 0;
    *close_after = false;
    for (char *p = memchr(c->in, '\n', hlen); p && p < end; p = memchr(p, '\n', (size_t)(end - p))) {
        p++;
        if (strncasecmp(p, "content-length:", 15) == 0) {
            clen = strtoul(p + 15, NULL, 10);
        } else if (strncasecmp(p, "connection:", 11) == 0) {
            const char *v = p + 11;
            while (*v == ' ')
                v++;
            if (strncasecmp(v, "close", 5) == 0)
                *close_after = true;
        }
    }
    size_t have = c->in_len - hlen;
    if (have >= clen) {
        *consumed = hlen + clen;
        c->skip = 0;
    } else {
        /* A body bigger than what arrived: consume everything, discard the rest as it comes. */
        *consumed = c->in_len;
        c->skip = clen - have;
    }
    return status;
}

static uint64_t t_measure; /* samples before this (warm-up) are not counted */
static uint64_t t_start, t_end;
static long idle_answered;

static void request_done(struct conn *c, int status, uint64_t now)
{
    c->busy = false;
    if (measuring(c->sched_ns, t_measure) || opt.requests > 0) {
        st.done++;
        st.status[status]++;
        if (status >= 200 && status < 300) {
            st.ok++;
            hist_add(&st.lat, now > c->sched_ns ? now - c->sched_ns : 0);
        }
    }
}

static void on_readable(struct conn *c, uint64_t now)
{
    for (;;) {
        if (c->in_len == IN_CAP) {
            conn_fail(c, true);
            return;
        }
        ssize_t n = read(c->fd, c->in + c->in_len, IN_CAP - c->in_len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            conn_fail(c, c->busy);
            return;
        }
        if (c->skip) {
            size_t s = (size_t)n < c->skip ? (size_t)n : c->skip;
            c->skip -= s;
            memmove(c->in, c->in + s, (size_t)n - s);
            n -= (ssize_t)s;
        }
        c->in_len += (size_t)n;
        size_t used = 0;
        bool close_after = false;
        int status = parse_answer(c, &used, &close_after);
        if (status < 0) {
            conn_fail(c, true);
            return;
        }
        if (status == 0)
            continue;
        memmove(c->in, c->in + used, c->in_len - used);
        c->in_len -= used;
        if (!c->busy) {
            conn_fail(c, false); /* an answer nobody asked for */
            return;
        }
        request_done(c, status, now);
        if (opt.idle) {
            idle_answered++;
            if (close_after)
                conn_fail(c, false);
            return;
        }
        if (close_after) {
            conn_fail(c, false);
            return;
        }
        if (opt.rate > 0) {
            idle_push(c);
            return;
        }
        bool more = now < t_end && !stop_flag && (opt.requests == 0 || (long)st.sent < opt.requests);
        if (more)
            start_request(c, now_ns());
        return;
    }
}

/* Close a connection and open a fresh one in its place (counted as a reconnect). */
static void conn_fail(struct conn *c, bool count_reset)
{
    if (count_reset) {
        st.reset++;
        if (c->busy && opt.idle)
            idle_answered++;
    }
    bool was_busy = c->busy;
    close(c->fd);
    c->fd = -1;
    if (!c->connected)
        connecting--;
    c->connected = c->busy = false;
    /* Idle mode and finished runs do not reconnect; the others keep their connection count. */
    if (opt.idle || stop_flag || now_ns() >= t_end)
        return;
    st.reconnects++;
    conn_open(c);
    (void)was_busy;
}

static void on_connected(struct conn *c, uint64_t now)
{
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    connecting--;
    if (err != 0) {
        st.connect_err++;
        close(c->fd);
        c->fd = -1;
        if (!opt.idle && !stop_flag && now < t_end) {
            usleep(10000); /* a refusing server: do not spin */
            conn_open(c);
        }
        return;
    }
    c->connected = true;
    conn_watch(c, EPOLLIN, EPOLL_CTL_MOD);
    if (opt.idle) {
        start_request(c, now);
    } else if (opt.rate > 0) {
        idle_push(c);
    } else if (now < t_end && (opt.requests == 0 || (long)st.sent < opt.requests)) {
        start_request(c, now);
    }
}

static bool any_busy(void)
{
    for (int i = 0; i < nconns; i++)
        if (conns[i].busy)
            return true;
    return false;
}

static void on_stop(int sig)
{
    (void)sig;
    stop_flag = 1;
}

/* ---- reporting ---- */

static const char *body_name(enum body_kind k)
{
    static const char *const n[] = { "text", "batch", "media", "mix" };
    return n[k];
}

static double cpu_seconds(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec / 1e6;
}

static double wall_seconds; /* whole run, for the client's CPU share */

static void report(double secs)
{
    /* Share of one core the generator itself used: near 1.0 means the client, not the server,
     * may be the limit. */
    double client_cpu = wall_seconds > 0 ? cpu_seconds() / wall_seconds : 0;
    double rps = secs > 0 ? (double)st.ok / secs : 0;
    uint64_t p50 = hist_pct(&st.lat, 50), p90 = hist_pct(&st.lat, 90), p99 = hist_pct(&st.lat, 99),
             p999 = hist_pct(&st.lat, 99.9);
    double mean = st.lat.n ? st.lat.sum / (double)st.lat.n : 0;
    uint64_t errs = st.done - st.ok + st.reset + st.connect_err + st.unsent;
    const char *mode = opt.idle ? "idle" : opt.rate > 0 ? "open" : "closed";

    fprintf(stderr, "%s%s%s%s loop, %d connections, %.1f s measured, body %s (text %zu B, batch %zu B, media %zu B)\n",
            opt.label ? "[" : "", opt.label ? opt.label : "", opt.label ? "] " : "", mode, opt.conns, secs,
            body_name(opt.body), body_sizes[0], body_sizes[1], body_sizes[2]);
    if (opt.rate > 0)
        fprintf(stderr, "  target rate %.0f req/s\n", opt.rate);
    fprintf(stderr, "  requests %" PRIu64 "  ok %" PRIu64 "  %.1f req/s\n", st.done, st.ok, rps);
    fprintf(stderr, "  latency  mean %.3f ms  p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f ms\n", mean / 1e6,
            (double)p50 / 1e6, (double)p90 / 1e6, (double)p99 / 1e6, (double)p999 / 1e6, (double)st.lat.max / 1e6);
    fprintf(stderr, "  client   %.0f %% of one core\n", client_cpu * 100);
    fprintf(stderr, "  errors   %" PRIu64, errs);
    for (int s = 0; s < NSTATUS; s++)
        if (st.status[s] && (s < 200 || s >= 300))
            fprintf(stderr, "  status %d: %" PRIu64, s, st.status[s]);
    if (st.reset)
        fprintf(stderr, "  reset: %" PRIu64, st.reset);
    if (st.connect_err)
        fprintf(stderr, "  connect: %" PRIu64, st.connect_err);
    if (st.unsent)
        fprintf(stderr, "  never sent (no free connection): %" PRIu64, st.unsent);
    fprintf(stderr, "\n");

    printf("{\"label\":\"%s\",\"mode\":\"%s\",\"conns\":%d,\"rate\":%.1f,\"body\":\"%s\",\"seconds\":%.3f,"
           "\"requests\":%" PRIu64 ",\"ok\":%" PRIu64 ",\"rps\":%.1f,\"mean_ms\":%.4f,\"p50_ms\":%.4f,"
           "\"p90_ms\":%.4f,\"p99_ms\":%.4f,\"p999_ms\":%.4f,\"max_ms\":%.4f,\"errors\":%" PRIu64
           ",\"reset\":%" PRIu64 ",\"connect_errors\":%" PRIu64 ",\"unsent\":%" PRIu64 ",\"bytes_out\":%" PRIu64 ",\"client_cpu\":%.3f,\"status\":{",
           opt.label ? opt.label : "", mode, opt.conns, opt.rate, body_name(opt.body), secs, st.done, st.ok, rps,
           mean / 1e6, (double)p50 / 1e6, (double)p90 / 1e6, (double)p99 / 1e6, (double)p999 / 1e6,
           (double)st.lat.max / 1e6, errs, st.reset, st.connect_err, st.unsent, st.bytes_out, client_cpu);
    const char *sep = "";
    for (int s = 0; s < NSTATUS; s++)
        if (st.status[s]) {
            printf("%s\"%d\":%" PRIu64, sep, s, st.status[s]);
            sep = ",";
        }
    printf("}}\n");
    fflush(stdout);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: loadgen [options]\n"
            "  -H, --host IP          server address (default 127.0.0.1)\n"
            "  -p, --port N           server port (default 8080)\n"
            "  -P, --path PATH        request path (default /webhooks/whatsapp)\n"
            "  -s, --secret S         app secret for X-Hub-Signature-256 (default demo-app-secret)\n"
            "      --no-sign          send no signature header\n"
            "  -c, --conns N          keep-alive connections (default 16)\n"
            "  -d, --duration S       measured duration in seconds (default 10)\n"
            "  -w, --warmup S         unmeasured warm-up before it (default 0)\n"
            "  -R, --rate R           open loop at R req/s (default: closed loop)\n"
            "  -n, --requests N       closed loop: stop after N requests (fixed input set)\n"
            "  -b, --body KIND        text | batch | media | mix (default text)\n"
            "      --seed N           body randomness seed (default: from time and pid)\n"
            "      --timestamp T      fixed message timestamp (default: now)\n"
            "      --idle N           open N connections, one request each, then hold them idle\n"
            "      --ready-file F     idle mode: create F once every connection is open and answered\n"
            "  -l, --label L          label copied into the report\n"
            "Text report on stderr, one JSON line on stdout. Exit 0 if any request succeeded.\n");
}

static double parse_num(const char *s, const char *what)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || v < 0) {
        fprintf(stderr, "loadgen: bad %s: %s\n", what, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    enum { O_NOSIGN = 256, O_SEED, O_TS, O_IDLE, O_READY };
    static const struct option lo[] = {
        { "host", required_argument, NULL, 'H' },      { "port", required_argument, NULL, 'p' },
        { "path", required_argument, NULL, 'P' },      { "secret", required_argument, NULL, 's' },
        { "no-sign", no_argument, NULL, O_NOSIGN },    { "conns", required_argument, NULL, 'c' },
        { "duration", required_argument, NULL, 'd' }, { "warmup", required_argument, NULL, 'w' },
        { "rate", required_argument, NULL, 'R' },      { "requests", required_argument, NULL, 'n' },
        { "body", required_argument, NULL, 'b' },      { "seed", required_argument, NULL, O_SEED },
        { "timestamp", required_argument, NULL, O_TS }, { "idle", required_argument, NULL, O_IDLE },
        { "ready-file", required_argument, NULL, O_READY }, { "label", required_argument, NULL, 'l' },
        { "help", no_argument, NULL, 'h' },            { NULL, 0, NULL, 0 },
    };
    bool seeded = false;
    int ch;
    while ((ch = getopt_long(argc, argv, "H:p:P:s:c:d:w:R:n:b:l:h", lo, NULL)) != -1) {
        switch (ch) {
        case 'H': opt.host = optarg; break;
        case 'p': opt.port = (int)parse_num(optarg, "port"); break;
        case 'P': opt.path = optarg; break;
        case 's': opt.secret = optarg; break;
        case O_NOSIGN: opt.sign = false; break;
        case 'c': opt.conns = (int)parse_num(optarg, "connections"); break;
        case 'd': opt.duration = parse_num(optarg, "duration"); break;
        case 'w': opt.warmup = parse_num(optarg, "warm-up"); break;
        case 'R': opt.rate = parse_num(optarg, "rate"); break;
        case 'n': opt.requests = (long)parse_num(optarg, "requests"); break;
        case 'b':
            if (!strcmp(optarg, "text")) opt.body = BODY_TEXT;
            else if (!strcmp(optarg, "batch")) opt.body = BODY_BATCH;
            else if (!strcmp(optarg, "media")) opt.body = BODY_MEDIA;
            else if (!strcmp(optarg, "mix")) opt.body = BODY_MIX;
            else { usage(stderr); return 2; }
            break;
        case O_SEED: opt.seed = (uint64_t)parse_num(optarg, "seed"); seeded = true; break;
        case O_TS: opt.fixed_ts = (long)parse_num(optarg, "timestamp"); break;
        case O_IDLE: opt.idle = (int)parse_num(optarg, "idle count"); break;
        case O_READY: opt.ready_file = optarg; break;
        case 'l': opt.label = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc || opt.conns < 1 || opt.port < 1 || opt.port > 65535) {
        usage(stderr);
        return 2;
    }
    if (!seeded)
        opt.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    /* A fixed seed means a fixed input set: the same ids every run (for callgrind). */
    run_id = seeded ? mix(opt.seed) : mix(opt.seed ^ now_ns());
    if (opt.idle)
        opt.conns = opt.idle;

    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)opt.port);
    if (inet_pton(AF_INET, opt.host, &addr.sin_addr) != 1) {
        fprintf(stderr, "loadgen: host must be an IPv4 address: %s\n", opt.host);
        return 2;
    }

    mbedtls_md_init(&hmac);
    if (mbedtls_md_setup(&hmac, mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), 1) != 0 ||
        mbedtls_md_hmac_starts(&hmac, (const unsigned char *)opt.secret, strlen(opt.secret)) != 0) {
        fprintf(stderr, "loadgen: HMAC set-up failed\n");
        return 2;
    }
    {
        static char tmp[BODY_CAP];
        enum body_kind saved = opt.body;
        for (int k = 0; k < 3; k++) {
            opt.body = (enum body_kind)k;
            body_sizes[k] = make_body(tmp, sizeof(tmp), 0);
        }
        opt.body = saved;
    }

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)opt.conns + 16) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < (rlim_t)opt.conns + 16) {
            fprintf(stderr, "loadgen: %d connections need ulimit -n >= %d (hard limit %lu)\n", opt.conns,
                    opt.conns + 16, (unsigned long)rl.rlim_max);
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_stop);
    signal(SIGTERM, on_stop);

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        die("epoll_create1");
    nconns = opt.conns;
    conns = calloc((size_t)nconns, sizeof(*conns));
    if (!conns)
        die("calloc");

    t_start = now_ns();
    t_measure = t_start + (uint64_t)(opt.warmup * 1e9);
    t_end = t_measure + (uint64_t)(opt.duration * 1e9);
    if (opt.requests > 0)
        t_end = t_start + (uint64_t)((opt.duration > 0 ? opt.duration : 60) * 1e9); /* still bounded */

    for (int i = 0; i < nconns; i++) {
        conns[i].fd = -1;
        conns[i].idle_next = -1;
    }
    /* Idle mode opens connections in waves of MAX_CONNECTING; the others open all at once. */
    int first_wave = opt.idle ? (nconns < MAX_CONNECTING ? nconns : MAX_CONNECTING) : nconns;
    for (next_to_open = 0; next_to_open < first_wave; next_to_open++)
        conn_open(&conns[next_to_open]);

    bool ready = false;
    uint64_t rate_t0 = 0; /* open loop: the schedule starts when the first connection is up */
    uint64_t next_k = 0;  /* open loop: index of the next scheduled request */
    uint64_t interval = opt.rate > 0 ? (uint64_t)(1e9 / opt.rate) : 0;
    struct epoll_event evs[256];

    while (!stop_flag) {
        uint64_t now = now_ns();
        if (opt.rate > 0) {
            if (rate_t0 == 0 && idle_head >= 0)
                rate_t0 = now;
            /* Send every request that is due, as long as a connection is free; the rest wait
             * and their latency keeps counting from their scheduled time. */
            while (rate_t0 && idle_head >= 0 && rate_t0 + next_k * interval <= now) {
                uint64_t sched = rate_t0 + next_k * interval;
                if (sched >= t_end)
                    break;
                struct conn *c = &conns[idle_head];
                idle_head = c->idle_next;
                next_k++;
                start_request(c, sched);
            }
        }
        /* Open loop: requests still in flight at the end are waited for (up to 2 s) so a stall at
         * the very end is charged, not dropped. */
        if (now >= t_end && !(opt.rate > 0 && any_busy() && now < t_end + 2000000000ull))
            break;
        if (opt.requests > 0 && st.done >= (uint64_t)opt.requests)
            break;
        if (opt.idle && !ready && idle_answered >= nconns) {
            ready = true;
            long open = 0;
            for (int i = 0; i < nconns; i++)
                open += conns[i].fd >= 0;
            fprintf(stderr, "loadgen: %ld idle keep-alive connections open (%" PRIu64 " answered ok)\n", open, st.ok);
            if (opt.ready_file) {
                FILE *f = fopen(opt.ready_file, "w");
                if (f) {
                    fprintf(f, "%ld\n", open);
                    fclose(f);
                }
            }
        }

        uint64_t wake = t_end;
        if (opt.rate > 0 && rate_t0 && idle_head >= 0) {
            uint64_t due = rate_t0 + next_k * interval;
            if (due < wake)
                wake = due;
        }
        if (wake > now + 100000000ull)
            wake = now + 100000000ull; /* re-check stop conditions at least every 100 ms */
        struct timespec to = { .tv_sec = (time_t)((wake - now) / 1000000000ull),
                               .tv_nsec = (long)((wake - now) % 1000000000ull) };
        int n = epoll_pwait2(epfd, evs, 256, &to, NULL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_pwait2");
        }
        now = now_ns();
        for (int i = 0; i < n; i++) {
            struct conn *c = &conns[evs[i].data.u32];
            if (c->fd < 0)
                continue;
            if (!c->connected) {
                on_connected(c, now);
                if (opt.idle && next_to_open < nconns)
                    conn_open(&conns[next_to_open++]);
                continue;
            }
            if (evs[i].events & EPOLLOUT) {
                try_write(c);
                if (c->fd >= 0 && c->out_off == c->out_len)
                    conn_watch(c, EPOLLIN, EPOLL_CTL_MOD);
            }
            if (c->fd >= 0 && (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                on_readable(c, now);
        }
    }

    uint64_t t_stop = now_ns();
    if (opt.rate > 0 && rate_t0) {
        /* Scheduled before the end but never sent for lack of a free connection. */
        uint64_t due = t_end > rate_t0 ? (t_end - rate_t0 + interval - 1) / interval : 0;
        st.unsent = due > next_k ? due - next_k : 0;
    }
    double secs;
    if (opt.requests > 0 || opt.idle)
        secs = (double)(t_stop - t_start) / 1e9;
    else
        secs = (double)((t_stop < t_end ? t_stop : t_end) - t_measure) / 1e9;
    wall_seconds = (double)(t_stop - t_start) / 1e9;
    report(secs);
    for (int i = 0; i < nconns; i++)
        if (conns[i].fd >= 0)
            close(conns[i].fd);
    free(conns);
    mbedtls_md_free(&hmac);
    return st.ok > 0 ? 0 : 1;
}

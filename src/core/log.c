/* JSON log lines, written with one write(2) each so lines from several threads never interleave. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/time.h"

static _Atomic int log_level = HG_LOG_INFO;
static _Thread_local int log_worker = -1;

static const char *const level_names[] = { "debug", "info", "warn", "error" };

void hg_log_set_level(enum hg_log_level level) { atomic_store(&log_level, (int)level); }
enum hg_log_level hg_log_get_level(void) { return (enum hg_log_level)atomic_load_explicit(&log_level, memory_order_relaxed); }
void hg_log_set_worker(int worker) { log_worker = worker; }

int hg_log_level_parse(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    return -1;
}

struct line {
    char buf[4096];
    size_t len;
};

static void put(struct line *l, const char *s, size_t n)
{
    /* Leave room for the closing "}\n"; a line that does not fit is cut, never overflowed. */
    size_t room = sizeof(l->buf) - 3 - l->len;
    if (n > room)
        n = room;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void put_str(struct line *l, const char *s) { put(l, s, strlen(s)); }

static void put_json(struct line *l, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    put(l, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[6];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\'; esc[1] = (char)*p;
            put(l, esc, 2);
        } else if (*p < 0x20) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[*p >> 4]; esc[5] = hex[*p & 15];
            put(l, esc, 6);
        } else {
            put(l, (const char *)p, 1);
        }
    }
    put(l, "\"", 1);
}

void hg_log(enum hg_log_level level, const char *request_id, const char *msg, ...)
{
    if ((int)level < atomic_load_explicit(&log_level, memory_order_relaxed))
        return;
    struct line l;
    l.len = 0;
    char ts[40];
    hg_time_rfc3339(ts, sizeof(ts), hg_time_now_ns(), 6);
    put_str(&l, "{\"ts\":\"");
    put_str(&l, ts);
    put_str(&l, "\",\"level\":\"");
    put_str(&l, level_names[level & 3]);
    char wk[24];
    snprintf(wk, sizeof(wk), "\",\"worker\":%d", log_worker);
    put_str(&l, wk);
    if (request_id) {
        put_str(&l, ",\"request_id\":");
        put_json(&l, request_id);
    }
    put_str(&l, ",\"msg\":");
    put_json(&l, msg);

    va_list ap;
    va_start(ap, msg);
    const char *key = va_arg(ap, const char *);
    if (key) {
        put_str(&l, ",\"fields\":{");
        bool first = true;
        while (key) {
            const char *val = va_arg(ap, const char *);
            if (!first)
                put(&l, ",", 1);
            first = false;
            put_json(&l, key);
            put(&l, ":", 1);
            put_json(&l, val ? val : "");
            key = va_arg(ap, const char *);
        }
        put(&l, "}", 1);
    }
    va_end(ap);
    l.buf[l.len++] = '}';
    l.buf[l.len++] = '\n';
    ssize_t rc = write(STDERR_FILENO, l.buf, l.len);
    (void)rc; /* Nowhere left to report a failed log write. */
}

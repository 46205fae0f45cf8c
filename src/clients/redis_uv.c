/*
 * hiredis ↔ libuv glue (replaces hiredis 0.14's adapters/libuv.h).
 *
 * Why not the stock adapter: it calls uv_poll_start on every hook hiredis fires, and hiredis fires
 * them constantly: addWrite for every command, delWrite + addRead after every write, addRead after
 * every read. libuv turns each uv_poll_start into two epoll_ctl calls (it re-adds the watcher: ADD
 * fails with EEXIST, then MOD), even when the mask did not change. With a pipeline of one command
 * per webhook stage that was ~12 epoll_ctl per webhook (strace at 500 req/s), plus a full extra
 * epoll round trip per command batch to learn that a socket with an empty send buffer is writable.
 *
 * Here:
 *   - the poll's mask is changed only when it really changes (reads stay armed for the life of
 *     the connection);
 *   - a command queued on a connected context does not arm writability: a uv_prepare handle runs
 *     hiredis' write pass just before the loop next blocks, so every command of the loop turn goes
 *     out in one write();
 *   - writability is awaited only while connecting (that is how a non-blocking connect reports
 *     completion) and when the kernel's send buffer is full (the write pass did not finish).
 *
 * hiredis may free the context from inside any of its calls (a failed write disconnects it); the
 * cleanup hook then clears `ac` and closes both handles, and the glue is freed when the second
 * close completes, so no callback here touches the context after calling into hiredis without
 * checking `ac` first.
 */
#include "clients/redis_uv.h"

#include <stdbool.h>
#include <stdlib.h>

#include <hiredis/hiredis.h>

#include "core/err.h"

struct glue {
    redisAsyncContext *ac; /* NULL once hiredis ran the cleanup hook */
    uv_poll_t poll;
    uv_prepare_t flush;
    int mask;              /* UV_READABLE | UV_WRITABLE as armed on `poll` */
    bool in_write;         /* inside redisAsyncHandleWrite: an addWrite means "socket full" */
    int open_handles;
};

static _Thread_local struct hg_redis_uv_stats stats;

void hg_redis_uv_stats(struct hg_redis_uv_stats *out)
{
    *out = stats;
}

static void on_poll(uv_poll_t *h, int status, int events);

static void set_mask(struct glue *g, int mask)
{
    if (mask == g->mask)
        return;
    g->mask = mask;
    stats.poll_changes++;
    if (mask)
        (void)uv_poll_start(&g->poll, mask, on_poll);
    else
        (void)uv_poll_stop(&g->poll);
}

/* hiredis' write pass; an addWrite from inside it means the kernel took less than everything. */
static void write_pass(struct glue *g)
{
    g->in_write = true;
    redisAsyncHandleWrite(g->ac);
    g->in_write = false;
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct glue *g = h->data;
    /* A poll error is reported to hiredis as readability: its read() then meets the error and
     * disconnects cleanly, instead of the connection hanging until a command's deadline. */
    if (status < 0)
        events = UV_READABLE;
    if (g->ac && (events & UV_READABLE))
        redisAsyncHandleRead(g->ac);
    if (g->ac && (events & UV_WRITABLE))
        write_pass(g);
}

static void on_flush(uv_prepare_t *h)
{
    struct glue *g = h->data;
    uv_prepare_stop(&g->flush);
    if (g->ac == NULL)
        return;
    stats.flushes++;
    write_pass(g);
}

static void add_read(void *data)
{
    struct glue *g = data;
    set_mask(g, g->mask | UV_READABLE);
}

static void del_read(void *data)
{
    struct glue *g = data;
    set_mask(g, g->mask & ~UV_READABLE);
}

static void add_write(void *data)
{
    struct glue *g = data;
    if (g->in_write || !(g->ac->c.flags & REDIS_CONNECTED)) {
        /* Connecting, or the socket is full: only the kernel can say when to go on. */
        if (g->in_write && !(g->mask & UV_WRITABLE))
            stats.write_waits++;
        set_mask(g, g->mask | UV_WRITABLE);
        return;
    }
    if (g->mask & UV_WRITABLE)
        return; /* already waiting for room; that write pass takes this command too */
    (void)uv_prepare_start(&g->flush, on_flush);
}

static void del_write(void *data)
{
    struct glue *g = data;
    uv_prepare_stop(&g->flush);
    set_mask(g, g->mask & ~UV_WRITABLE);
}

static void on_closed(uv_handle_t *h)
{
    struct glue *g = h->data;
    if (--g->open_handles == 0)
        free(g);
}

static void cleanup(void *data)
{
    struct glue *g = data;
    g->ac = NULL;
    uv_close((uv_handle_t *)&g->poll, on_closed);
    uv_close((uv_handle_t *)&g->flush, on_closed);
}

int hg_redis_uv_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    if (ac->ev.data != NULL)
        return HG_ERR_INVALID;
    struct glue *g = calloc(1, sizeof *g);
    if (g == NULL)
        return HG_ERR_NOMEM;
    int rc = uv_poll_init(loop, &g->poll, ac->c.fd);
    if (rc != 0) {
        free(g);
        return rc;
    }
    g->open_handles = 1;
    (void)uv_prepare_init(loop, &g->flush); /* cannot fail */
    g->open_handles = 2;
    g->poll.data = g;
    g->flush.data = g;
    g->ac = ac;
    ac->ev.data = g;
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    ac->ev.cleanup = cleanup;
    return 0;
}

/*
 * hiredis ↔ libuv glue that writes a loop turn's commands with one write() and touches epoll only
 * when the socket is full. It replaces hiredis' own adapters/libuv.h; see redis_uv.c for why.
 */
#ifndef HG_CLIENTS_REDIS_UV_H
#define HG_CLIENTS_REDIS_UV_H

#include <hiredis/async.h>
#include <uv.h>

/*
 * Attach ac to loop. 0, or <0 (a libuv or HG_ERR_* code) with ac's event hooks left empty, so redisAsyncFree(ac)
 * is then safe. The glue is freed through hiredis' cleanup hook when ac is.
 */
int hg_redis_uv_attach(redisAsyncContext *ac, uv_loop_t *loop);

/* Syscall-level counters of every attached context of this thread (for tests and the bench). */
struct hg_redis_uv_stats {
    uint64_t flushes;      /* write passes run at the end of a loop turn */
    uint64_t write_waits;  /* times the socket was full and writability had to be awaited */
    uint64_t poll_changes; /* uv_poll_start/stop calls (each one costs epoll_ctl) */
};
void hg_redis_uv_stats(struct hg_redis_uv_stats *out);

#endif

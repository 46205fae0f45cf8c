/* The client address of a webhook and its per-IP window on this worker (ingest/access.h). */
#include <stdio.h>
#include <string.h>

#include "core/ltable.h"
#include "core/time.h"
#include "http/proxy.h"
#include "ingest/access.h"

void hg_access_client(const struct hg_conf *conf, const struct hg_conn *c, const struct hg_http_request *r,
                      struct hg_ip *out)
{
    enum hg_proxy_forwarded kind = strcmp(conf->client_ip_header, "forwarded") == 0 ? HG_PROXY_FORWARDED
                                                                                     : HG_PROXY_XFF;
    hg_proxy_client(hg_conn_addr(c), &conf->trusted_proxies, kind, r->headers, r->n_headers, out);
}

void hg_access_ip_key(const char *client_ip, char *out, size_t n)
{
    snprintf(out, n, "ip:%s", client_ip);
}

/* Per-IP windows of this worker thread, keyed by the 16 address bytes. */
static _Thread_local struct hg_ltable windows;

void hg_access_thread_done(void)
{
    hg_ltable_free(&windows);
}

/*
 * The sliding-window counter approximation (the previous fixed window weighted by its overlap,
 * plus the current one), as src/clients/redis.c's local_ratelimit: constant memory per address,
 * never more than the limit per sliding window.
 */
void hg_access_ip_window(const struct hg_ip *ip, uint32_t per_minute, struct hg_redis_ratelimit_result *res)
{
    const uint64_t w = 60000;
    uint64_t now = hg_time_mono_ns() / 1000000u, evicted = 0;
    uint64_t start = now - now % w;
    if (windows.max == 0)
        windows.max = HG_ACCESS_LOCAL_MAX;
    struct hg_lentry *e = hg_ltable_get(&windows, (const char *)ip->b, sizeof(ip->b), now);
    if (e == NULL) {
        e = hg_ltable_add(&windows, (const char *)ip->b, sizeof(ip->b), &evicted);
        e->c = start;
    }
    if (start != e->c) {
        e->b = start == e->c + w ? e->a : 0;
        e->a = 0;
        e->c = start;
    }
    e->expires_ms = start + 2 * w;
    uint64_t elapsed = now - start;
    double est = (double)e->b * (double)(w - elapsed) / (double)w + (double)e->a;
    res->limit = per_minute;
    res->allowed = est + 1.0 <= (double)per_minute;
    if (res->allowed) {
        e->a++;
        est += 1.0;
    }
    int64_t left = (int64_t)per_minute - (int64_t)(est + 0.999999);
    res->remaining = left > 0 ? left : 0;
    res->reset_at_unix_s = (int64_t)((hg_time_now_ns() / 1000000u + (w - elapsed) + 999) / 1000);
    res->fallback = false;
}

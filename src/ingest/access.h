/*
 * The ingest's view of a webhook's client address, used before any tenant lookup or signature
 * work (docs/security.md): who the client is (the connection's address, then the hops trusted
 * proxies name) and the per-IP rate limit's window on this worker (no Redis, or as its key).
 */
#ifndef HG_INGEST_ACCESS_H
#define HG_INGEST_ACCESS_H

#include <stddef.h>
#include <stdint.h>

#include "clients/redis.h"
#include "conf/conf.h"
#include "core/cidr.h"
#include "http/http.h"

/* Room for "ip:" + an address + NUL: the per-IP limit's id in hg_redis_ratelimit. */
#define HG_ACCESS_KEY_MAX (3 + HG_IP_TEXT_MAX)

/*
 * The request's client: the connection's address (hg_conn_addr) and, while that is one of
 * [server] trusted_proxies, the hops its client_ip_header names (hg_proxy_client).
 */
void hg_access_client(const struct hg_conf *conf, const struct hg_conn *c, const struct hg_http_request *r,
                      struct hg_ip *out);

/*
 * The per-IP limit's id for hg_redis_ratelimit: "ip:<address>" (key hg:rl:ip:<address>). A tenant
 * id has no ':', so no tenant's window can be this one.
 */
void hg_access_ip_key(const char *client_ip, char *out, size_t n);

/*
 * Count one request of `ip` against `per_minute` in this worker thread's window (used without
 * Redis): the same sliding-window approximation as the Redis client's local fallback, at most
 * HG_ACCESS_LOCAL_MAX addresses (least recently seen dropped). Fills *res as hg_redis_ratelimit
 * would, with fallback false. Worker threads only.
 */
#define HG_ACCESS_LOCAL_MAX 65536
void hg_access_ip_window(const struct hg_ip *ip, uint32_t per_minute, struct hg_redis_ratelimit_result *res);

/* Free this worker thread's window table; once, at the end of the thread. */
void hg_access_thread_done(void);

#endif

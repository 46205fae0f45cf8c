/* A JWKS fetched from a URL and cached per worker (clients/jwks_remote.h). */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clients/http.h"
#include "clients/jwks_remote.h"
#include "core/buf.h"
#include "core/common.h"
#include "core/err.h"
#include "core/jwt.h"
#include "core/log.h"
#include "core/time.h"
#include "ops/metrics.h"

#define MAX_AGE_DEFAULT_S  3600u
#define MAX_AGE_MIN_S      60u
#define MAX_AGE_MAX_S      86400u
#define KID_REFRESH_GAP_MS 30000u  /* an unknown kid refetches at most this often */
#define FAIL_GAP_MS        5000u   /* after a failed fetch, the next one waits this long */
#define FETCH_TIMEOUT_MS   10000u

struct waiter {
    hg_jwks_ready_fn done;
    void *arg;
};

struct hg_jwks_remote {
    struct hg_http *http;
    char *url;                     /* the URL the keys are for ([pubsub] jwks_url) */
    char *fetch_url;               /* the URL of the fetch in flight (url may change meanwhile) */
    struct hg_jwks *keys;          /* NULL before the first good fetch */
    uint64_t fresh_until_ms;       /* monotonic: past it, refresh in the background */
    uint64_t kid_refresh_ms;       /* monotonic start of the last fetch an unknown kid caused */
    uint64_t retry_after_ms;       /* monotonic: no fetch before (after a failure) */
    bool fetching;
    struct hg_buf body;
    struct waiter *waiters;
    size_t n_waiters, cap_waiters;
};

static uint64_t now_ms(void)
{
    return hg_time_mono_ns() / 1000000u;
}

uint64_t hg_jwks_remote_max_age(const char *cc)
{
    /* "public, max-age=19850, must-revalidate, no-transform" (Google's); no-store/no-cache are
     * taken as the minimum: keys must still be cached for a moment, or every webhook refetches. */
    uint64_t age = MAX_AGE_DEFAULT_S;
    for (const char *p = cc; p != NULL && *p;) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        if (strncasecmp(p, "max-age=", 8) == 0) {
            char *end;
            unsigned long long v = strtoull(p + 8, &end, 10);
            age = end == p + 8 ? MAX_AGE_DEFAULT_S : (uint64_t)v;
        } else if (strncasecmp(p, "no-store", 8) == 0 || strncasecmp(p, "no-cache", 8) == 0) {
            age = MAX_AGE_MIN_S;
            break;
        }
        p = strchr(p, ',');
    }
    return HG_MAX(MAX_AGE_MIN_S, HG_MIN(age, (uint64_t)MAX_AGE_MAX_S));
}

struct hg_jwks_remote *hg_jwks_remote_new(struct hg_http *http)
{
    struct hg_jwks_remote *r = hg_xcalloc(1, sizeof(*r));
    r->http = http;
    hg_buf_init(&r->body, HG_JWKS_FILE_MAX);
    return r;
}

void hg_jwks_remote_free(struct hg_jwks_remote *r)
{
    if (r == NULL)
        return;
    hg_jwks_free(r->keys);
    hg_buf_free(&r->body);
    free(r->waiters);
    free(r->url);
    free(r->fetch_url);
    free(r);
}

const struct hg_jwks *hg_jwks_remote_keys(const struct hg_jwks_remote *r)
{
    return r ? r->keys : NULL;
}

/* Tell every waiter: 0 when there are keys to verify against, else HG_ERR_UNAVAILABLE. */
static void wake(struct hg_jwks_remote *r)
{
    int status = r->keys ? 0 : HG_ERR_UNAVAILABLE;
    /* A waiter's callback may want keys again (and wait again): take the list first. */
    struct waiter *w = r->waiters;
    size_t n = r->n_waiters;
    r->waiters = NULL;
    r->n_waiters = r->cap_waiters = 0;
    for (size_t i = 0; i < n; i++)
        w[i].done(w[i].arg, status);
    free(w);
}

static bool fetch(struct hg_jwks_remote *r);

static void on_fetched(void *arg, const struct hg_http_resp *resp)
{
    struct hg_jwks_remote *r = arg;
    char why[256] = "";
    struct hg_jwks *keys = NULL;
    r->fetching = false;
    if (strcmp(r->fetch_url, r->url) != 0) {
        /* Fetched for a URL a reload replaced: not these keys. Fetch the new one for the waiters. */
        hg_buf_reset(&r->body);
        if (r->n_waiters > 0 && (resp->err == HG_ERR_CLOSED || !fetch(r)))
            wake(r);
        return;
    }
    if (resp->err != 0)
        snprintf(why, sizeof(why), "%s", hg_strerror(resp->err));
    else if (resp->status != 200)
        snprintf(why, sizeof(why), "HTTP status %ld", resp->status);
    else
        hg_jwks_parse(r->body.data ? r->body.data : "", r->body.len, &keys, why, sizeof(why));
    if (keys != NULL) {
        uint64_t age = hg_jwks_remote_max_age(resp->cache_control);
        hg_jwks_free(r->keys);
        r->keys = keys;
        r->fresh_until_ms = now_ms() + age * 1000u;
        hg_metric_inc(HG_M_JWKS_FETCH, "status=\"ok\"");
        hg_debug(NULL, "jwks fetched", "url", r->url, NULL);
    } else {
        r->retry_after_ms = now_ms() + FAIL_GAP_MS;
        hg_metric_inc(HG_M_JWKS_FETCH, "status=\"error\"");
        hg_warn(NULL, r->keys ? "jwks fetch failed; keeping the keys there were" : "jwks fetch failed; no keys",
                "url", r->url, "error", why, NULL);
    }
    hg_buf_reset(&r->body);
    wake(r);
}

/* Start a fetch unless one runs; false when none could start (a waiter would wait forever). */
static bool fetch(struct hg_jwks_remote *r)
{
    if (r->fetching)
        return true;
    struct hg_http_req req = {
        .method = "GET",
        .url = r->url,
        .resp_body = &r->body,
        .connect_timeout_ms = FETCH_TIMEOUT_MS,
        .timeout_ms = FETCH_TIMEOUT_MS,
        .max_redirects = 2,
    };
    hg_buf_reset(&r->body);
    free(r->fetch_url);
    r->fetch_url = hg_xstrdup(r->url);
    if (hg_http_request(r->http, &req, on_fetched, r) != 0) {
        r->retry_after_ms = now_ms() + FAIL_GAP_MS;
        return false;
    }
    r->fetching = true;
    return true;
}

int hg_jwks_remote_want(struct hg_jwks_remote *r, const char *url, const char *kid, hg_jwks_ready_fn done,
                        void *arg)
{
    uint64_t now = now_ms();
    if (r->url == NULL || strcmp(r->url, url) != 0) {
        /* A new URL (first use, or changed by a reload): what was cached belongs to the old one.
         * A fetch still running for the old URL is told apart by fetch_url when it ends. */
        free(r->url);
        r->url = hg_xstrdup(url);
        hg_jwks_free(r->keys);
        r->keys = NULL;
        r->fresh_until_ms = r->kid_refresh_ms = r->retry_after_ms = 0;
    }
    bool may_fetch = now >= r->retry_after_ms;
    if (r->keys != NULL) {
        bool known = kid == NULL || kid[0] == '\0' || hg_jwks_has(r->keys, kid);
        if (now >= r->fresh_until_ms && may_fetch)
            fetch(r); /* stale: refresh in the background, verify with what there is */
        if (known || !may_fetch || (r->kid_refresh_ms != 0 && now - r->kid_refresh_ms < KID_REFRESH_GAP_MS))
            return 0;
        r->kid_refresh_ms = now;
    } else if (!may_fetch && !r->fetching) {
        return HG_ERR_UNAVAILABLE;
    }
    if (!fetch(r))
        return r->keys ? 0 : HG_ERR_UNAVAILABLE;
    if (r->n_waiters == r->cap_waiters) {
        r->cap_waiters = r->cap_waiters ? r->cap_waiters * 2 : 8;
        r->waiters = hg_xrealloc(r->waiters, r->cap_waiters * sizeof(*r->waiters));
    }
    r->waiters[r->n_waiters++] = (struct waiter){ done, arg };
    return HG_ERR_AGAIN;
}

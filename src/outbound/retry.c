/* Retry arithmetic of outbound deliveries: backoff with full jitter, verdicts, Retry-After. */
#include <math.h>
#include <string.h>
#include <time.h>

#include "core/common.h"
#include "core/str.h"
#include "outbound/retry.h"

void hg_ob_retry_policy_default(struct hg_ob_retry_policy *p)
{
    memset(p, 0, sizeof(*p));
    p->max_attempts = HG_OB_RETRY_DEFAULT_ATTEMPTS;
    p->initial_delay_ms = HG_OB_RETRY_DEFAULT_INITIAL_MS;
    p->max_delay_ms = HG_OB_RETRY_DEFAULT_MAX_MS;
    p->multiplier = HG_OB_RETRY_DEFAULT_MULTIPLIER;
}

uint64_t hg_ob_backoff_ceiling_ms(const struct hg_ob_retry_policy *p, unsigned failed)
{
    uint64_t cap = p->max_delay_ms;
    uint64_t base = HG_MIN(p->initial_delay_ms, cap);
    if (failed <= 1 || p->multiplier <= 1.0)
        return base;
    /* In doubles: the product overflows nothing there, and past cap we stop anyway. */
    double d = (double)base * pow(p->multiplier, (double)(failed - 1));
    if (!(d < (double)cap)) /* also NaN/inf */
        return cap;
    return (uint64_t)d;
}

uint64_t hg_ob_backoff_ms(const struct hg_ob_retry_policy *p, unsigned failed, uint64_t random)
{
    uint64_t c = hg_ob_backoff_ceiling_ms(p, failed);
    if (c == 0)
        return 0;
    return 1 + random % c;
}

enum hg_ob_verdict hg_ob_classify(const struct hg_ob_retry_policy *p, int err, long status)
{
    if (err != 0 || status == 0)
        return HG_OB_RETRY;
    if (status >= 200 && status < 300)
        return HG_OB_DELIVERED;
    if (status == 410)
        return HG_OB_GONE;
    if (p->n_retry_on > 0) {
        for (size_t i = 0; i < p->n_retry_on; i++)
            if (p->retry_on[i] == status)
                return HG_OB_RETRY;
        return HG_OB_FAILED;
    }
    if (status >= 400 && status < 500)
        return (status == 408 || status == 409 || status == 425 || status == 429) ? HG_OB_RETRY : HG_OB_FAILED;
    return HG_OB_RETRY; /* 1xx left over, 3xx (no redirect is followed), 5xx */
}

int64_t hg_ob_retry_after_ms(const char *value, int64_t now_ms)
{
    if (value == NULL || value[0] == '\0')
        return -1;
    int64_t secs;
    if (hg_str_to_i64(value, 0, 10LL * 365 * 86400, &secs) == 0)
        return secs * 1000;
    /* IMF-fixdate, the one form RFC 9110 asks senders to use. */
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *end = strptime(value, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (end == NULL || *end != '\0')
        return -1;
    int64_t at = (int64_t)timegm(&tm) * 1000;
    return at > now_ms ? at - now_ms : 0;
}

uint64_t hg_ob_next_delay_ms(const struct hg_ob_retry_policy *p, unsigned failed, int64_t retry_after_ms,
                             uint64_t random)
{
    if (retry_after_ms >= 0)
        return HG_MIN((uint64_t)retry_after_ms, p->max_delay_ms);
    return hg_ob_backoff_ms(p, failed, random);
}

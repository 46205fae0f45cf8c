/*
 * An endpoint's retry policy and what an attempt's outcome means under it: delivered, retry
 * later (exponential backoff with full jitter, Retry-After honoured and clamped), failed for good,
 * or gone (410: the endpoint is disabled). Pure arithmetic; the caller brings time and randomness.
 */
#ifndef HG_OUTBOUND_RETRY_H
#define HG_OUTBOUND_RETRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HG_OB_RETRY_CODES_MAX 32

/* The seed's retry_policy, in milliseconds. */
struct hg_ob_retry_policy {
    uint32_t max_attempts;          /* attempts in all, the first included (1 = never retried) */
    uint64_t initial_delay_ms;      /* ceiling of the delay after the first failed attempt */
    uint64_t max_delay_ms;          /* no delay (backoff or Retry-After) is longer */
    double multiplier;              /* the ceiling grows by this per failed attempt (>= 1) */
    uint16_t retry_on[HG_OB_RETRY_CODES_MAX]; /* retry_on_status_codes; none = the default set */
    size_t n_retry_on;
};

/* Defaults: 8 attempts, 30 s first ceiling, x4 per attempt, 12 h cap (~24 h in all at the ceilings). */
#define HG_OB_RETRY_DEFAULT_ATTEMPTS 8
#define HG_OB_RETRY_DEFAULT_INITIAL_MS 30000
#define HG_OB_RETRY_DEFAULT_MAX_MS (12ull * 3600 * 1000)
#define HG_OB_RETRY_DEFAULT_MULTIPLIER 4.0
void hg_ob_retry_policy_default(struct hg_ob_retry_policy *p);

/*
 * The delay ceiling after `failed` failed attempts (>= 1): min(initial * multiplier^(failed-1),
 * max), without overflow for any count. Non-decreasing in failed.
 */
uint64_t hg_ob_backoff_ceiling_ms(const struct hg_ob_retry_policy *p, unsigned failed);

/*
 * Full jitter: uniform in [1, ceiling] (0 only when the ceiling is 0) from `random` (any uniform
 * 64-bit value). A fleet of failing deliveries spreads out instead of retrying in lockstep.
 */
uint64_t hg_ob_backoff_ms(const struct hg_ob_retry_policy *p, unsigned failed, uint64_t random);

enum hg_ob_verdict {
    HG_OB_DELIVERED,   /* 2xx */
    HG_OB_RETRY,       /* retryable: no answer (connect error, timeout, reset), 3xx, 5xx, 408/409/425/429,
                        * or a status listed in retry_on when that list is set */
    HG_OB_FAILED,      /* not retryable (other 4xx, or not in retry_on) */
    HG_OB_GONE,        /* 410: the endpoint is disabled, the delivery failed */
};

/* What an attempt that ended with transport error `err` (0 = an answer came) and `status` means. */
enum hg_ob_verdict hg_ob_classify(const struct hg_ob_retry_policy *p, int err, long status);

/*
 * Retry-After (delta seconds or an HTTP-date) as milliseconds from now_ms (epoch ms); -1 when
 * absent or unreadable. A date in the past is 0.
 */
int64_t hg_ob_retry_after_ms(const char *value, int64_t now_ms);

/*
 * The delay before the next attempt after `failed` failed attempts: Retry-After when the answer
 * had one (>= 0), else the jittered backoff; either way at most max_delay_ms.
 */
uint64_t hg_ob_next_delay_ms(const struct hg_ob_retry_policy *p, unsigned failed, int64_t retry_after_ms,
                             uint64_t random);

#endif

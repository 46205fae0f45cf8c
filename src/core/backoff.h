/*
 * Exponential backoff with jitter: the delay before retry number n of anything that reconnects or
 * retries (Redis, AMQP, media downloads, State Manager calls, the drain). Pure arithmetic: the
 * caller keeps the attempt count and brings the random number, so each keeps its own generator.
 */
#ifndef HG_CORE_BACKOFF_H
#define HG_CORE_BACKOFF_H

#include <stdint.h>

/* How the delay is spread below its ceiling d (d = min(base_ms * 2^attempt, max_ms)). */
enum hg_backoff_jitter {
    HG_BACKOFF_EQUAL, /* uniform in [d/2, d] (d/2 rounded down): half fixed, half random, so a
                       * fleet does not retry in lockstep yet never retries much sooner than d */
    HG_BACKOFF_FULL,  /* uniform in [1, d]: the widest spread, but never 0 (a retry in the same
                       * loop tick helps nobody); 0 only when d is 0 */
};

/* A policy: plain values, usually a compound literal or a const beside the caller's defaults. */
struct hg_backoff {
    uint64_t base_ms;                /* ceiling of the first retry (attempt 0) */
    uint64_t max_ms;                 /* the ceiling never grows past this (also caps base_ms) */
    enum hg_backoff_jitter jitter;
};

/*
 * The ceiling before jitter for retry number `attempt` (0 = the first retry):
 * min(base_ms * 2^attempt, max_ms), without overflow for any attempt. Non-decreasing in attempt.
 */
uint64_t hg_backoff_ceiling_ms(const struct hg_backoff *b, unsigned attempt);

/*
 * The delay before retry number `attempt` (0 = the first retry): the ceiling spread by b->jitter,
 * taking `random` (any uniform 64-bit value; the caller's generator) modulo the range width.
 * Never above the ceiling.
 */
uint64_t hg_backoff_ms(const struct hg_backoff *b, unsigned attempt, uint64_t random);

#endif

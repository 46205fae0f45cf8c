/*
 * Circuit breaker for a client of one remote service: closed (requests go out) → open after a run
 * of consecutive failures (requests are refused) → after a cool-down one trial request goes out
 * (half-open) → closed again on any success, open again if the trial fails. Pure state: the caller
 * passes the time (loop ms) and does its own logging from what the calls return, so it is tested
 * without a loop or a clock.
 */
#ifndef HG_CORE_BREAKER_H
#define HG_CORE_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

enum hg_breaker_state {
    HG_BREAKER_CLOSED = 0,    /* requests go out */
    HG_BREAKER_OPEN = 1,      /* requests are refused until open_until_ms */
    HG_BREAKER_HALF_OPEN = 2, /* the one trial request is out; others are refused */
};

/* Embedded in its owner and set up by hg_breaker_init; the caller reads the fields, never writes. */
struct hg_breaker {
    uint32_t threshold;           /* consecutive failures that open a closed breaker */
    uint64_t open_ms;             /* cool-down: how long it stays open before a trial */
    enum hg_breaker_state state;
    uint32_t failures;            /* failed requests in a row; any success resets it */
    uint64_t open_until_ms;       /* while open: the time the next admit becomes the trial */
};

/* A closed breaker that opens after `threshold` consecutive failures and stays open `open_ms`. */
void hg_breaker_init(struct hg_breaker *b, uint32_t threshold, uint64_t open_ms);

/*
 * May a request go out at now_ms? Closed: yes. Open: no until open_until_ms; from then the first
 * caller gets yes with *trial = true and the breaker is half-open. Half-open: no. *trial is
 * written on every call (false unless this request is the trial). The caller must hand an
 * admitted request's outcome back once: hg_breaker_report, or hg_breaker_release when the
 * request never reached the service.
 */
bool hg_breaker_admit(struct hg_breaker *b, uint64_t now_ms, bool *trial);

/*
 * The outcome of one admitted request (`trial` as hg_breaker_admit said; ok: the service
 * answered). Any success closes the breaker, even one sent before it opened: it is fresh
 * evidence of health. A failure counts toward the threshold; it opens a closed breaker at the
 * threshold, and a failed trial opens it at once, with a new cool-down from now_ms (also when
 * other requests have opened it again meanwhile: then it counts as leaving half-open).
 * Returns true when the state changed (to closed, or to open), with the state left in *from,
 * for the caller's log line and counters; false when nothing changed.
 */
bool hg_breaker_report(struct hg_breaker *b, bool trial, bool ok, uint64_t now_ms,
                       enum hg_breaker_state *from);

/*
 * An admitted request ended without reaching the service (canceled, refused locally): no
 * evidence either way. For the trial, the breaker goes back to what admit found, open with the
 * cool-down over, so the next request becomes the trial at once. Not a transition to log.
 * No-op when `trial` is false.
 */
void hg_breaker_release(struct hg_breaker *b, bool trial, uint64_t now_ms);

/* The state as seen from outside at now_ms: an open breaker whose cool-down is over shows as
 * half-open, since the next request will be the trial (for /ready and metrics). */
enum hg_breaker_state hg_breaker_state(const struct hg_breaker *b, uint64_t now_ms);

/* "closed", "open" or "half-open" (static strings). */
const char *hg_breaker_state_name(enum hg_breaker_state s);

#endif

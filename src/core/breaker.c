/* Circuit breaker (see breaker.h): closed → open → half-open → closed, time passed in. */
#include "core/breaker.h"

void hg_breaker_init(struct hg_breaker *b, uint32_t threshold, uint64_t open_ms)
{
    *b = (struct hg_breaker){ .threshold = threshold, .open_ms = open_ms, .state = HG_BREAKER_CLOSED };
}

bool hg_breaker_admit(struct hg_breaker *b, uint64_t now_ms, bool *trial)
{
    *trial = false;
    switch (b->state) {
    case HG_BREAKER_CLOSED:
        return true;
    case HG_BREAKER_OPEN:
        if (now_ms < b->open_until_ms)
            return false;
        b->state = HG_BREAKER_HALF_OPEN;
        *trial = true;
        return true;
    case HG_BREAKER_HALF_OPEN:
        return false;
    }
    return false;
}

bool hg_breaker_report(struct hg_breaker *b, bool trial, bool ok, uint64_t now_ms,
                       enum hg_breaker_state *from)
{
    if (ok) {
        b->failures = 0;
        if (b->state == HG_BREAKER_CLOSED)
            return false;
        *from = b->state;
        b->state = HG_BREAKER_CLOSED;
        return true;
    }
    b->failures++;
    if (!trial && !(b->state == HG_BREAKER_CLOSED && b->failures >= b->threshold))
        return false;
    /* A failed trial always opens anew: when other requests have opened the breaker again while
     * it was out, the cool-down starts over from this failure. */
    *from = b->state == HG_BREAKER_OPEN ? HG_BREAKER_HALF_OPEN : b->state;
    b->state = HG_BREAKER_OPEN;
    b->open_until_ms = now_ms + b->open_ms;
    return true;
}

void hg_breaker_release(struct hg_breaker *b, bool trial, uint64_t now_ms)
{
    if (!trial || b->state != HG_BREAKER_HALF_OPEN)
        return;
    b->state = HG_BREAKER_OPEN;
    b->open_until_ms = now_ms;
}

enum hg_breaker_state hg_breaker_state(const struct hg_breaker *b, uint64_t now_ms)
{
    if (b->state == HG_BREAKER_OPEN && now_ms >= b->open_until_ms)
        return HG_BREAKER_HALF_OPEN;
    return b->state;
}

const char *hg_breaker_state_name(enum hg_breaker_state s)
{
    switch (s) {
    case HG_BREAKER_CLOSED:
        return "closed";
    case HG_BREAKER_OPEN:
        return "open";
    case HG_BREAKER_HALF_OPEN:
        return "half-open";
    }
    return "?";
}

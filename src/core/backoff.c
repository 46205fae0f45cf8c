/* Exponential backoff with jitter (see backoff.h). */
#include "core/backoff.h"

uint64_t hg_backoff_ceiling_ms(const struct hg_backoff *b, unsigned attempt)
{
    uint64_t d = b->base_ms;
    /* Doubling stops at the cap, so at most 64 rounds even for attempt = UINT_MAX; 0 never grows. */
    for (unsigned i = 0; i < attempt && d != 0 && d < b->max_ms; i++)
        d = d > b->max_ms / 2 ? b->max_ms : d * 2;
    return d < b->max_ms ? d : b->max_ms;
}

uint64_t hg_backoff_ms(const struct hg_backoff *b, unsigned attempt, uint64_t random)
{
    uint64_t d = hg_backoff_ceiling_ms(b, attempt);
    if (b->jitter == HG_BACKOFF_FULL)
        return d == 0 ? 0 : 1 + random % d;
    /* Equal jitter. d - half + 1 cannot wrap: d - half <= 2^63. */
    uint64_t half = d / 2;
    return half + random % (d - half + 1);
}

/* Tests for src/core/backoff: the ceiling (growth, cap, overflow), both jitter kinds' ranges, and
 * that the callers' numbers give what their hand-written copies gave. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/backoff.h"

/* splitmix64: a spread of test randoms, reproducible. */
static uint64_t next_random(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void test_ceiling_doubles_to_cap(void **state)
{
    (void)state;
    const struct hg_backoff b = { .base_ms = 100, .max_ms = 10000 };
    const uint64_t want[] = { 100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000 };
    for (unsigned i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        assert_int_equal(hg_backoff_ceiling_ms(&b, i), want[i]);
    assert_int_equal(hg_backoff_ceiling_ms(&b, 1000), 10000);
    assert_int_equal(hg_backoff_ceiling_ms(&b, UINT_MAX), 10000);
}

static void test_ceiling_monotone(void **state)
{
    (void)state;
    const struct hg_backoff policies[] = {
        { .base_ms = 1, .max_ms = 30000 },
        { .base_ms = 500, .max_ms = 30000 },
        { .base_ms = 101, .max_ms = 9999 },
        { .base_ms = 3, .max_ms = UINT64_MAX },
        { .base_ms = 7, .max_ms = 7 },
    };
    for (size_t p = 0; p < sizeof(policies) / sizeof(policies[0]); p++) {
        uint64_t prev = 0;
        for (unsigned i = 0; i < 200; i++) {
            uint64_t d = hg_backoff_ceiling_ms(&policies[p], i);
            assert_true(d >= prev);
            assert_true(d <= policies[p].max_ms);
            prev = d;
        }
        assert_int_equal(hg_backoff_ceiling_ms(&policies[p], UINT_MAX), prev);
    }
}

static void test_ceiling_edges(void **state)
{
    (void)state;
    /* base above the cap: the cap, from the first retry on */
    const struct hg_backoff over = { .base_ms = 60000, .max_ms = 10000 };
    assert_int_equal(hg_backoff_ceiling_ms(&over, 0), 10000);
    assert_int_equal(hg_backoff_ceiling_ms(&over, 5), 10000);
    /* base 0 stays 0 and does not loop UINT_MAX times */
    const struct hg_backoff zero = { .base_ms = 0, .max_ms = 10000 };
    assert_int_equal(hg_backoff_ceiling_ms(&zero, UINT_MAX), 0);
    assert_int_equal(hg_backoff_ms(&zero, UINT_MAX, 12345), 0);
    const struct hg_backoff zero_full = { .base_ms = 0, .max_ms = 10000, .jitter = HG_BACKOFF_FULL };
    assert_int_equal(hg_backoff_ms(&zero_full, 3, UINT64_MAX), 0);
    /* cap 0 */
    const struct hg_backoff nocap = { .base_ms = 100, .max_ms = 0 };
    assert_int_equal(hg_backoff_ceiling_ms(&nocap, 3), 0);
}

static void test_ceiling_no_overflow(void **state)
{
    (void)state;
    const struct hg_backoff one = { .base_ms = 1, .max_ms = UINT64_MAX };
    assert_int_equal(hg_backoff_ceiling_ms(&one, 62), 1ull << 62);
    assert_int_equal(hg_backoff_ceiling_ms(&one, 63), 1ull << 63);
    assert_true(hg_backoff_ceiling_ms(&one, 64) == UINT64_MAX);
    assert_true(hg_backoff_ceiling_ms(&one, UINT_MAX) == UINT64_MAX);
    const struct hg_backoff big = { .base_ms = UINT64_MAX / 3, .max_ms = UINT64_MAX };
    assert_true(hg_backoff_ceiling_ms(&big, 1) == UINT64_MAX / 3 * 2);
    assert_true(hg_backoff_ceiling_ms(&big, 2) == UINT64_MAX);
    /* The delays themselves at the top of the range. */
    assert_true(hg_backoff_ms(&one, UINT_MAX, UINT64_MAX) <= UINT64_MAX);
    assert_true(hg_backoff_ms(&one, UINT_MAX, 0) == UINT64_MAX / 2);
    const struct hg_backoff full = { .base_ms = 1, .max_ms = UINT64_MAX, .jitter = HG_BACKOFF_FULL };
    assert_true(hg_backoff_ms(&full, UINT_MAX, UINT64_MAX - 1) == UINT64_MAX);
    assert_true(hg_backoff_ms(&full, UINT_MAX, UINT64_MAX) == 1);
}

static void test_equal_jitter_range(void **state)
{
    (void)state;
    uint64_t s = 1;
    const uint64_t bases[] = { 1, 2, 3, 100, 101, 499, 500 };
    for (size_t k = 0; k < sizeof(bases) / sizeof(bases[0]); k++) {
        const struct hg_backoff b = { .base_ms = bases[k], .max_ms = 30001, .jitter = HG_BACKOFF_EQUAL };
        for (unsigned a = 0; a < 12; a++) {
            uint64_t d = hg_backoff_ceiling_ms(&b, a);
            /* the ends: random 0 gives the fixed half, the top of the range gives d itself */
            assert_int_equal(hg_backoff_ms(&b, a, 0), d / 2);
            assert_int_equal(hg_backoff_ms(&b, a, d - d / 2), d);
            for (int i = 0; i < 2000; i++) {
                uint64_t v = hg_backoff_ms(&b, a, next_random(&s));
                assert_true(v >= d / 2 && v <= d);
            }
        }
    }
}

static void test_full_jitter_range(void **state)
{
    (void)state;
    uint64_t s = 2;
    const struct hg_backoff b = { .base_ms = 20, .max_ms = 2000, .jitter = HG_BACKOFF_FULL };
    for (unsigned a = 0; a < 12; a++) {
        uint64_t d = hg_backoff_ceiling_ms(&b, a);
        assert_int_equal(hg_backoff_ms(&b, a, 0), 1);
        assert_int_equal(hg_backoff_ms(&b, a, d - 1), d);
        assert_int_equal(hg_backoff_ms(&b, a, d), 1);
        bool low = false, high = false;
        for (int i = 0; i < 20000; i++) {
            uint64_t v = hg_backoff_ms(&b, a, next_random(&s));
            assert_true(v >= 1 && v <= d);
            low |= v <= d / 4 + 1;
            high |= v > d - d / 4;
        }
        assert_true(low && high); /* spread over the whole range, not only its top half */
    }
    const struct hg_backoff tiny = { .base_ms = 1, .max_ms = 1, .jitter = HG_BACKOFF_FULL };
    assert_int_equal(hg_backoff_ms(&tiny, 0, UINT64_MAX), 1);
}

/*
 * The hand-written copies this replaced, as they read (src/sink/amqp.c, src/clients/redis.c,
 * src/clients/statemgr.c, src/drain/drain.c, src/media/media.c), checked against hg_backoff_ms
 * with each caller's numbers. For an even ceiling the three equal-jitter copies and
 * HG_BACKOFF_EQUAL are the same function of the random number; every ceiling their numbers
 * reach is even.
 */
static uint64_t old_amqp_drain(uint64_t min, uint64_t max, unsigned attempt, uint64_t r)
{
    uint64_t delay = min;
    for (unsigned i = 0; i < attempt && delay < max; i++)
        delay *= 2;
    if (delay > max)
        delay = max;
    return delay / 2 + r % (delay / 2 + 1);
}

static uint64_t old_redis(uint64_t min, uint64_t max, unsigned attempt, uint64_t r)
{
    uint64_t delay = min;
    for (unsigned i = 0; i < attempt && delay < max; i++)
        delay *= 2;
    if (delay > max)
        delay = max;
    uint64_t half = delay / 2;
    return half + r % (delay - half + 1);
}

static uint64_t old_statemgr(uint64_t base, uint64_t cap, int tries, uint64_t r)
{
    uint64_t d = base;
    for (int i = 1; i < tries && d < cap; i++)
        d *= 2;
    d = d < cap ? d : cap;
    uint64_t half = d / 2;
    return d - half + (half > 0 ? r % (half + 1) : 0);
}

static uint64_t old_media(uint64_t base, uint64_t max, unsigned attempts, uint64_t r)
{
    unsigned shift = attempts - 1 < 20u ? attempts - 1 : 20u;
    uint64_t cap = base << shift < max ? base << shift : max;
    return 1 + r % cap;
}

static void test_same_as_replaced_copies(void **state)
{
    (void)state;
    uint64_t s = 3;
    for (unsigned a = 0; a < 40; a++) {
        for (int i = 0; i < 500; i++) {
            uint64_t r = next_random(&s);
            /* amqp reconnect (attempt 0-based), defaults and test_amqp's numbers */
            assert_int_equal(hg_backoff_ms(&(struct hg_backoff){ 100, 30000, HG_BACKOFF_EQUAL }, a, r),
                             old_amqp_drain(100, 30000, a, r));
            assert_int_equal(hg_backoff_ms(&(struct hg_backoff){ 50, 500, HG_BACKOFF_EQUAL }, a, r),
                             old_amqp_drain(50, 500, a, r));
            /* drain (attempts 1-based) */
            assert_int_equal(hg_backoff_ms(&(struct hg_backoff){ 100, 30000, HG_BACKOFF_EQUAL }, a, r),
                             old_amqp_drain(100, 30000, a, r));
            /* redis reconnect, defaults and test_redis's numbers */
            assert_int_equal(hg_backoff_ms(&(struct hg_backoff){ 100, 10000, HG_BACKOFF_EQUAL }, a, r),
                             old_redis(100, 10000, a, r));
            assert_int_equal(hg_backoff_ms(&(struct hg_backoff){ 20, 50, HG_BACKOFF_EQUAL }, a, r),
                             old_redis(20, 50, a, r));
            /* statemgr (tries 1-based), default and test_statemgr's numbers */
            const uint64_t sm[] = { 100, 20, 10, 60000 };
            for (size_t k = 0; k < 4; k++)
                assert_int_equal(hg_backoff_ms(&(struct hg_backoff){ sm[k], 10000, HG_BACKOFF_EQUAL }, a, r),
                                 old_statemgr(sm[k], 10000, (int)a + 1, r));
            /* media (attempts 1-based, full jitter), default and test_media's numbers */
            assert_int_equal(hg_backoff_ms(&(struct hg_backoff){ 500, 30000, HG_BACKOFF_FULL }, a, r),
                             old_media(500, 30000, a + 1, r));
            assert_int_equal(hg_backoff_ms(&(struct hg_backoff){ 20, 2000, HG_BACKOFF_FULL }, a, r),
                             old_media(20, 2000, a + 1, r));
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ceiling_doubles_to_cap),
        cmocka_unit_test(test_ceiling_monotone),
        cmocka_unit_test(test_ceiling_edges),
        cmocka_unit_test(test_ceiling_no_overflow),
        cmocka_unit_test(test_equal_jitter_range),
        cmocka_unit_test(test_full_jitter_range),
        cmocka_unit_test(test_same_as_replaced_copies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Tests for src/core/breaker: every transition, with the time passed in (no sleeping). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/breaker.h"

#define OPEN_MS 30000

static void fail_n(struct hg_breaker *b, int n, uint64_t now)
{
    enum hg_breaker_state from;
    for (int i = 0; i < n; i++)
        assert_false(hg_breaker_report(b, false, false, now, &from));
}

/* A breaker with threshold 3 opened at t = 1000, so its cool-down ends at 31000. */
static void open_at_1000(struct hg_breaker *b)
{
    enum hg_breaker_state from;
    hg_breaker_init(b, 3, OPEN_MS);
    fail_n(b, 2, 1000);
    assert_true(hg_breaker_report(b, false, false, 1000, &from));
    assert_int_equal(from, HG_BREAKER_CLOSED);
    assert_int_equal(b->state, HG_BREAKER_OPEN);
    assert_int_equal(b->open_until_ms, 1000 + OPEN_MS);
}

/* The same, then the trial admitted at 31000. */
static void half_open_at_31000(struct hg_breaker *b)
{
    bool trial;
    open_at_1000(b);
    assert_true(hg_breaker_admit(b, 31000, &trial));
    assert_true(trial);
    assert_int_equal(b->state, HG_BREAKER_HALF_OPEN);
}

static void test_closed_admits(void **state)
{
    (void)state;
    struct hg_breaker b;
    bool trial = true;
    enum hg_breaker_state from;
    hg_breaker_init(&b, 3, OPEN_MS);
    assert_int_equal(hg_breaker_state(&b, 0), HG_BREAKER_CLOSED);
    for (int i = 0; i < 10; i++) {
        assert_true(hg_breaker_admit(&b, (uint64_t)i, &trial));
        assert_false(trial);
    }
    /* a success while closed changes nothing */
    assert_false(hg_breaker_report(&b, false, true, 5, &from));
    assert_int_equal(b.state, HG_BREAKER_CLOSED);
}

static void test_closed_to_open_after_threshold(void **state)
{
    (void)state;
    struct hg_breaker b;
    enum hg_breaker_state from;
    hg_breaker_init(&b, 3, OPEN_MS);
    /* two failures, then a success: the run starts over */
    fail_n(&b, 2, 10);
    assert_int_equal(b.failures, 2);
    assert_false(hg_breaker_report(&b, false, true, 10, &from));
    assert_int_equal(b.failures, 0);
    fail_n(&b, 2, 20);
    assert_int_equal(b.state, HG_BREAKER_CLOSED);
    /* the third in a row opens it, the cool-down counted from that failure */
    assert_true(hg_breaker_report(&b, false, false, 500, &from));
    assert_int_equal(from, HG_BREAKER_CLOSED);
    assert_int_equal(b.state, HG_BREAKER_OPEN);
    assert_int_equal(b.open_until_ms, 500 + OPEN_MS);

    /* threshold 1: the first failure opens */
    hg_breaker_init(&b, 1, 100);
    assert_true(hg_breaker_report(&b, false, false, 7, &from));
    assert_int_equal(b.state, HG_BREAKER_OPEN);
    assert_int_equal(b.open_until_ms, 107);
}

static void test_open_refuses_until_cooldown(void **state)
{
    (void)state;
    struct hg_breaker b;
    bool trial = true;
    open_at_1000(&b);
    assert_false(hg_breaker_admit(&b, 1000, &trial));
    assert_false(trial);
    assert_false(hg_breaker_admit(&b, 30999, &trial));
    assert_int_equal(hg_breaker_state(&b, 30999), HG_BREAKER_OPEN);
    /* past the cool-down it already shows half-open, though still open inside */
    assert_int_equal(hg_breaker_state(&b, 31000), HG_BREAKER_HALF_OPEN);
    assert_int_equal(b.state, HG_BREAKER_OPEN);
    /* more failures of requests sent before it opened do not move the cool-down */
    fail_n(&b, 5, 2000);
    assert_int_equal(b.open_until_ms, 31000);
    assert_int_equal(b.state, HG_BREAKER_OPEN);
}

static void test_open_to_half_open_one_trial(void **state)
{
    (void)state;
    struct hg_breaker b;
    bool trial = true;
    half_open_at_31000(&b);
    assert_int_equal(hg_breaker_state(&b, 31000), HG_BREAKER_HALF_OPEN);
    /* only one trial at a time */
    assert_false(hg_breaker_admit(&b, 31000, &trial));
    assert_false(trial);
    assert_false(hg_breaker_admit(&b, 999999, &trial));
}

static void test_half_open_to_closed_on_success(void **state)
{
    (void)state;
    struct hg_breaker b;
    bool trial;
    enum hg_breaker_state from;
    half_open_at_31000(&b);
    assert_true(hg_breaker_report(&b, true, true, 31050, &from));
    assert_int_equal(from, HG_BREAKER_HALF_OPEN);
    assert_int_equal(b.state, HG_BREAKER_CLOSED);
    assert_int_equal(b.failures, 0);
    assert_true(hg_breaker_admit(&b, 31051, &trial));
    assert_false(trial);
    /* a fresh run of failures is needed to open it again */
    fail_n(&b, 2, 31060);
    assert_int_equal(b.state, HG_BREAKER_CLOSED);
}

static void test_half_open_to_open_on_trial_failure(void **state)
{
    (void)state;
    struct hg_breaker b;
    bool trial;
    enum hg_breaker_state from;
    half_open_at_31000(&b);
    assert_true(hg_breaker_report(&b, true, false, 32000, &from));
    assert_int_equal(from, HG_BREAKER_HALF_OPEN);
    assert_int_equal(b.state, HG_BREAKER_OPEN);
    assert_int_equal(b.open_until_ms, 32000 + OPEN_MS);
    assert_false(hg_breaker_admit(&b, 32000 + OPEN_MS - 1, &trial));
    assert_true(hg_breaker_admit(&b, 32000 + OPEN_MS, &trial));
    assert_true(trial);
}

static void test_half_open_other_failure_changes_nothing(void **state)
{
    (void)state;
    struct hg_breaker b;
    enum hg_breaker_state from;
    half_open_at_31000(&b);
    uint32_t before = b.failures;
    /* a request sent before the breaker opened fails while the trial is out */
    assert_false(hg_breaker_report(&b, false, false, 31001, &from));
    assert_int_equal(b.state, HG_BREAKER_HALF_OPEN);
    assert_int_equal(b.failures, before + 1);
}

static void test_straggler_success_closes(void **state)
{
    (void)state;
    struct hg_breaker b;
    enum hg_breaker_state from;
    /* open: an answer to a request sent before it opened */
    open_at_1000(&b);
    assert_true(hg_breaker_report(&b, false, true, 1500, &from));
    assert_int_equal(from, HG_BREAKER_OPEN);
    assert_int_equal(b.state, HG_BREAKER_CLOSED);
    /* half-open: the same, while the trial is out */
    half_open_at_31000(&b);
    assert_true(hg_breaker_report(&b, false, true, 31001, &from));
    assert_int_equal(from, HG_BREAKER_HALF_OPEN);
    assert_int_equal(b.state, HG_BREAKER_CLOSED);
    /* the trial fails afterwards: it opens from closed at once, whatever the count */
    assert_true(hg_breaker_report(&b, true, false, 31002, &from));
    assert_int_equal(from, HG_BREAKER_CLOSED);
    assert_int_equal(b.state, HG_BREAKER_OPEN);
    assert_int_equal(b.open_until_ms, 31002 + OPEN_MS);
}

static void test_trial_failure_after_reopen_rearms(void **state)
{
    (void)state;
    struct hg_breaker b;
    enum hg_breaker_state from;
    half_open_at_31000(&b);
    /* while the trial is out, a straggler closes it and three failures open it again */
    assert_true(hg_breaker_report(&b, false, true, 31001, &from));
    fail_n(&b, 2, 31002);
    assert_true(hg_breaker_report(&b, false, false, 31003, &from));
    assert_int_equal(from, HG_BREAKER_CLOSED);
    assert_int_equal(b.open_until_ms, 31003 + OPEN_MS);
    /* now the trial fails: a new opening, as from half-open, cool-down from now */
    assert_true(hg_breaker_report(&b, true, false, 40000, &from));
    assert_int_equal(from, HG_BREAKER_HALF_OPEN);
    assert_int_equal(b.state, HG_BREAKER_OPEN);
    assert_int_equal(b.open_until_ms, 40000 + OPEN_MS);
}

static void test_release(void **state)
{
    (void)state;
    struct hg_breaker b;
    bool trial;
    /* the trial never reached the service: open again, the next request is the trial at once */
    half_open_at_31000(&b);
    hg_breaker_release(&b, true, 31500);
    assert_int_equal(b.state, HG_BREAKER_OPEN);
    assert_int_equal(b.open_until_ms, 31500);
    assert_int_equal(hg_breaker_state(&b, 31500), HG_BREAKER_HALF_OPEN);
    assert_true(hg_breaker_admit(&b, 31500, &trial));
    assert_true(trial);
    /* releasing a request that was not the trial changes nothing */
    hg_breaker_release(&b, false, 31600);
    assert_int_equal(b.state, HG_BREAKER_HALF_OPEN);
    /* nor does releasing a trial once the breaker has left half-open */
    enum hg_breaker_state from;
    assert_true(hg_breaker_report(&b, false, true, 31700, &from));
    hg_breaker_release(&b, true, 31800);
    assert_int_equal(b.state, HG_BREAKER_CLOSED);
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(hg_breaker_state_name(HG_BREAKER_CLOSED), "closed");
    assert_string_equal(hg_breaker_state_name(HG_BREAKER_OPEN), "open");
    assert_string_equal(hg_breaker_state_name(HG_BREAKER_HALF_OPEN), "half-open");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_closed_admits),
        cmocka_unit_test(test_closed_to_open_after_threshold),
        cmocka_unit_test(test_open_refuses_until_cooldown),
        cmocka_unit_test(test_open_to_half_open_one_trial),
        cmocka_unit_test(test_half_open_to_closed_on_success),
        cmocka_unit_test(test_half_open_to_open_on_trial_failure),
        cmocka_unit_test(test_half_open_other_failure_changes_nothing),
        cmocka_unit_test(test_straggler_success_closes),
        cmocka_unit_test(test_trial_failure_after_reopen_rearms),
        cmocka_unit_test(test_release),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

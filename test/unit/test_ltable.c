/* Tests for src/core/ltable: lookups, TTL expiry, LRU eviction and the drop hook that releases
 * what entries point to (the tenant resolver keeps tenant references there). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "core/ltable.h"

/* Payloads are slots of this array; the drop hook counts what it released. */
static int dropped[8];

static void drop(void *p)
{
    dropped[(int *)p - dropped]++;
}

static struct hg_lentry *add(struct hg_ltable *t, const char *key, uint64_t expires, int slot,
                             uint64_t *evictions)
{
    struct hg_lentry *e = hg_ltable_add(t, key, strlen(key), evictions);
    assert_non_null(e);
    e->expires_ms = expires;
    if (slot >= 0)
        hg_ltable_set_ptr(t, e, &dropped[slot]);
    return e;
}

static struct hg_lentry *get(struct hg_ltable *t, const char *key, uint64_t now)
{
    return hg_ltable_get(t, key, strlen(key), now);
}

static void test_get_and_keys(void **state)
{
    (void)state;
    struct hg_ltable t = { .max = 10 };
    uint64_t ev = 0;
    assert_null(get(&t, "a", 0)); /* empty, no buckets yet */
    struct hg_lentry *ab = add(&t, "ab", 100, -1, &ev);
    ab->a = 7;
    add(&t, "abc", 100, -1, &ev);
    assert_int_equal(t.count, 2);
    assert_ptr_equal(get(&t, "ab", 0), ab);
    assert_int_equal(get(&t, "ab", 0)->a, 7);
    assert_int_equal(get(&t, "abc", 0)->klen, 3);
    assert_null(get(&t, "a", 0));
    /* Keys are (pointer, length): the first two bytes of "abc" are the key "ab". */
    assert_ptr_equal(hg_ltable_get(&t, "abc", 2, 0), ab);
    hg_ltable_free(&t);
    assert_int_equal(t.count, 0);
    assert_int_equal(ev, 0);
}

static void test_expiry_drops(void **state)
{
    (void)state;
    memset(dropped, 0, sizeof(dropped));
    struct hg_ltable t = { .max = 10, .drop = drop };
    uint64_t ev = 0;
    add(&t, "k", 100, 0, &ev);
    assert_non_null(get(&t, "k", 99));
    assert_int_equal(dropped[0], 0);
    assert_null(get(&t, "k", 100)); /* expires_ms is the first moment it is gone */
    assert_int_equal(dropped[0], 1);
    assert_int_equal(t.count, 0);
    hg_ltable_free(&t);
    assert_int_equal(dropped[0], 1);
}

static void test_lru_eviction(void **state)
{
    (void)state;
    memset(dropped, 0, sizeof(dropped));
    struct hg_ltable t = { .max = 2, .drop = drop };
    uint64_t ev = 0;
    add(&t, "a", 1000, 0, &ev);
    add(&t, "b", 1000, 1, &ev);
    assert_non_null(get(&t, "a", 0)); /* a is now the most recent: b goes first */
    add(&t, "c", 1000, 2, &ev);
    assert_int_equal(ev, 1);
    assert_int_equal(t.count, 2);
    assert_int_equal(dropped[1], 1);
    assert_null(get(&t, "b", 0));
    assert_non_null(get(&t, "a", 0));
    assert_non_null(get(&t, "c", 0));
    assert_int_equal(dropped[0] + dropped[2], 0);
    hg_ltable_free(&t);
    assert_int_equal(dropped[0], 1);
    assert_int_equal(dropped[2], 1);
}

static void test_set_ptr_and_remove(void **state)
{
    (void)state;
    memset(dropped, 0, sizeof(dropped));
    struct hg_ltable t = { .max = 4, .drop = drop };
    uint64_t ev = 0;
    struct hg_lentry *e = add(&t, "x", 1000, 3, &ev);
    hg_ltable_set_ptr(&t, e, &dropped[4]);
    assert_int_equal(dropped[3], 1);
    hg_ltable_set_ptr(&t, e, NULL);
    assert_int_equal(dropped[4], 1);
    hg_ltable_set_ptr(&t, e, &dropped[5]);
    hg_ltable_remove(&t, e);
    assert_int_equal(dropped[5], 1);
    assert_int_equal(t.count, 0);
    /* Reusable after free, with its bound and hook kept. */
    hg_ltable_free(&t);
    add(&t, "y", 1000, 6, &ev);
    assert_int_equal(t.max, 4);
    hg_ltable_free(&t);
    assert_int_equal(dropped[6], 1);
}

/* Many keys through a small table: count and chains stay consistent. */
static void test_churn(void **state)
{
    (void)state;
    struct hg_ltable t = { .max = 100 };
    uint64_t ev = 0;
    char key[32];
    for (int i = 0; i < 5000; i++) {
        int n = snprintf(key, sizeof(key), "key-%d", i);
        assert_null(hg_ltable_get(&t, key, (size_t)n, 0));
        struct hg_lentry *e = hg_ltable_add(&t, key, (size_t)n, &ev);
        e->expires_ms = 10;
        e->a = i;
        assert_true(t.count <= 100);
    }
    assert_int_equal(ev, 4900);
    for (int i = 4900; i < 5000; i++) {
        int n = snprintf(key, sizeof(key), "key-%d", i);
        struct hg_lentry *e = hg_ltable_get(&t, key, (size_t)n, 0);
        assert_non_null(e);
        assert_int_equal(e->a, i);
    }
    hg_ltable_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_and_keys),
        cmocka_unit_test(test_expiry_drops),
        cmocka_unit_test(test_lru_eviction),
        cmocka_unit_test(test_set_ptr_and_remove),
        cmocka_unit_test(test_churn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

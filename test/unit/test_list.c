/* Tests for src/core/list.h: every operation, unlinking the head, the tail and the only element,
 * re-inserting, iteration (also while unlinking) and moving a whole list. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "core/list.h"

struct item {
    int value;
    struct hg_list link;
};

/* The values of head's elements, first to last, must be want[0..n); checked both ways. */
static void expect(const struct hg_list *head, const int *want, size_t n)
{
    size_t i = 0;
    const struct hg_list *pos;
    HG_LIST_FOREACH(pos, head) {
        assert_true(i < n);
        assert_int_equal(hg_list_entry(pos, struct item, link)->value, want[i]);
        assert_ptr_equal(pos->next->prev, pos);
        i++;
    }
    assert_int_equal(i, n);
    for (pos = head->prev; pos != head; pos = pos->prev)
        assert_int_equal(hg_list_entry(pos, struct item, link)->value, want[--i]);
    assert_int_equal(hg_list_empty(head), n == 0);
    if (n == 0) {
        assert_null(hg_list_first(head));
        assert_null(hg_list_last(head));
    } else {
        assert_int_equal(hg_list_entry(hg_list_first(head), struct item, link)->value, want[0]);
        assert_int_equal(hg_list_entry(hg_list_last(head), struct item, link)->value, want[n - 1]);
    }
}

#define EXPECT(head, ...)                                                                          \
    do {                                                                                           \
        const int want_[] = { __VA_ARGS__ };                                                       \
        expect((head), want_, sizeof(want_) / sizeof(want_[0]));                                   \
    } while (0)

static void items_init(struct item *it, size_t n)
{
    memset(it, 0, n * sizeof(*it));
    for (size_t i = 0; i < n; i++)
        it[i].value = (int)i;
}

static void test_init_and_empty(void **state)
{
    (void)state;
    struct hg_list head;
    hg_list_init(&head);
    expect(&head, NULL, 0);
    struct item a = { .value = 1 };
    assert_false(hg_list_linked(&a.link)); /* zeroed: in no list */
}

static void test_insert_tail_and_head(void **state)
{
    (void)state;
    struct item it[5];
    items_init(it, 5);
    struct hg_list head;
    hg_list_init(&head);
    hg_list_insert_tail(&head, &it[1].link);
    EXPECT(&head, 1);
    hg_list_insert_tail(&head, &it[2].link);
    hg_list_insert_head(&head, &it[0].link);
    EXPECT(&head, 0, 1, 2);
    hg_list_insert_before(&it[2].link, &it[3].link);
    EXPECT(&head, 0, 1, 3, 2);
    hg_list_insert_before(&head, &it[4].link); /* before the head = at the tail */
    EXPECT(&head, 0, 1, 3, 2, 4);
    for (int i = 0; i < 5; i++)
        assert_true(hg_list_linked(&it[i].link));
}

static void test_unlink_positions(void **state)
{
    (void)state;
    struct item it[4];
    items_init(it, 4);
    struct hg_list head;
    hg_list_init(&head);
    for (int i = 0; i < 4; i++)
        hg_list_insert_tail(&head, &it[i].link);

    hg_list_unlink(&it[2].link); /* middle */
    EXPECT(&head, 0, 1, 3);
    assert_false(hg_list_linked(&it[2].link));
    assert_null(it[2].link.prev);

    hg_list_unlink(&it[0].link); /* head */
    EXPECT(&head, 1, 3);
    hg_list_unlink(&it[3].link); /* tail */
    EXPECT(&head, 1);
    hg_list_unlink(&it[1].link); /* the only one */
    expect(&head, NULL, 0);
    assert_ptr_equal(head.next, &head);
    assert_ptr_equal(head.prev, &head);
}

static void test_reinsert(void **state)
{
    (void)state;
    struct item it[3];
    items_init(it, 3);
    struct hg_list a, b;
    hg_list_init(&a);
    hg_list_init(&b);
    for (int i = 0; i < 3; i++)
        hg_list_insert_tail(&a, &it[i].link);
    /* back at the front of the same list */
    hg_list_unlink(&it[2].link);
    hg_list_insert_head(&a, &it[2].link);
    EXPECT(&a, 2, 0, 1);
    /* into another list */
    hg_list_unlink(&it[0].link);
    hg_list_insert_tail(&b, &it[0].link);
    EXPECT(&a, 2, 1);
    EXPECT(&b, 0);
    /* the only element out and in again */
    hg_list_unlink(&it[0].link);
    expect(&b, NULL, 0);
    hg_list_insert_tail(&b, &it[0].link);
    EXPECT(&b, 0);
}

static void test_next(void **state)
{
    (void)state;
    struct item it[3];
    items_init(it, 3);
    struct hg_list head;
    hg_list_init(&head);
    for (int i = 0; i < 3; i++)
        hg_list_insert_tail(&head, &it[i].link);
    int seen = 0;
    for (struct hg_list *n = hg_list_first(&head); n != NULL; n = hg_list_next(&head, n))
        assert_int_equal(hg_list_entry(n, struct item, link)->value, seen++);
    assert_int_equal(seen, 3);
    assert_null(hg_list_next(&head, &it[2].link));
    assert_ptr_equal(hg_list_next(&head, &it[0].link), &it[1].link);
}

static void test_foreach_safe_unlinks(void **state)
{
    (void)state;
    struct item it[6];
    items_init(it, 6);
    struct hg_list head;
    hg_list_init(&head);
    for (int i = 0; i < 6; i++)
        hg_list_insert_tail(&head, &it[i].link);
    struct hg_list *pos, *tmp;
    HG_LIST_FOREACH_SAFE(pos, tmp, &head) {
        struct item *x = hg_list_entry(pos, struct item, link);
        if (x->value % 2 == 0) {
            hg_list_unlink(pos);
            memset(x, 0xa5, sizeof(*x)); /* as if freed: iteration must not read it again */
        }
    }
    EXPECT(&head, 1, 3, 5);
    HG_LIST_FOREACH_SAFE(pos, tmp, &head)
        hg_list_unlink(pos);
    expect(&head, NULL, 0);
}

static void test_move(void **state)
{
    (void)state;
    struct item it[5];
    items_init(it, 5);
    struct hg_list from, to;
    hg_list_init(&from);
    hg_list_init(&to);
    /* empty into empty */
    hg_list_move(&from, &to);
    expect(&from, NULL, 0);
    expect(&to, NULL, 0);
    /* into an empty list */
    for (int i = 0; i < 3; i++)
        hg_list_insert_tail(&from, &it[i].link);
    hg_list_move(&from, &to);
    expect(&from, NULL, 0);
    EXPECT(&to, 0, 1, 2);
    /* appended after what is there, and the emptied list works again */
    hg_list_insert_tail(&from, &it[3].link);
    hg_list_insert_tail(&from, &it[4].link);
    hg_list_move(&from, &to);
    EXPECT(&to, 0, 1, 2, 3, 4);
    expect(&from, NULL, 0);
    hg_list_unlink(&it[4].link);
    hg_list_insert_tail(&from, &it[4].link);
    EXPECT(&from, 4);
    EXPECT(&to, 0, 1, 2, 3);
    /* an empty list moved onto a full one changes nothing */
    struct hg_list none;
    hg_list_init(&none);
    hg_list_move(&none, &to);
    EXPECT(&to, 0, 1, 2, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_and_empty),
        cmocka_unit_test(test_insert_tail_and_head),
        cmocka_unit_test(test_unlink_positions),
        cmocka_unit_test(test_reinsert),
        cmocka_unit_test(test_next),
        cmocka_unit_test(test_foreach_safe_unlinks),
        cmocka_unit_test(test_move),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

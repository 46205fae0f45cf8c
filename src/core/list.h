/*
 * Intrusive doubly-linked list, after libuv's queue.h and h2o's linklist.h: each element embeds a
 * struct hg_list, the owner holds one as the head. The head is a sentinel (the list is circular),
 * so insert and unlink are O(1) with no special case for the first or last element. The list
 * owns nothing: elements are the caller's memory, allocated and freed by the caller.
 */
#ifndef HG_CORE_LIST_H
#define HG_CORE_LIST_H

#include <stdbool.h>
#include <stddef.h>

#include "core/common.h"

/* A head (after hg_list_init) or an element's link (NULL links while in no list). */
struct hg_list {
    struct hg_list *prev, *next;
};

/* The element that embeds `ptr` as its `member`. */
#define hg_list_entry(ptr, type, member) HG_CONTAINER_OF(ptr, type, member)

/* Every link of `head`, first to last. Do not unlink `pos` inside the body: use the _SAFE form. */
#define HG_LIST_FOREACH(pos, head) for ((pos) = (head)->next; (pos) != (head); (pos) = (pos)->next)

/* The same, with `tmp` holding the next link so the body may unlink (and free) `pos`. Only `pos`:
 * a body that may unlink other elements must rescan from the head instead. */
#define HG_LIST_FOREACH_SAFE(pos, tmp, head)                                                      \
    for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head);                              \
         (pos) = (tmp), (tmp) = (pos)->next)

/* Make `head` an empty list. A zeroed head is not a list: every head goes through here first. */
static inline void hg_list_init(struct hg_list *head)
{
    head->prev = head->next = head;
}

/* Whether the list `head` has no element. */
static inline bool hg_list_empty(const struct hg_list *head)
{
    return head->next == head;
}

/* Whether the element link `node` is in a list (false when zeroed or after hg_list_unlink). */
static inline bool hg_list_linked(const struct hg_list *node)
{
    return node->next != NULL;
}

/* Link `node` (in no list) just before `pos` (an element, or the head: then at the tail). */
static inline void hg_list_insert_before(struct hg_list *pos, struct hg_list *node)
{
    node->prev = pos->prev;
    node->next = pos;
    pos->prev->next = node;
    pos->prev = node;
}

/* Link `node` (in no list) as the last element of `head`. */
static inline void hg_list_insert_tail(struct hg_list *head, struct hg_list *node)
{
    hg_list_insert_before(head, node);
}

/* Link `node` (in no list) as the first element of `head`. */
static inline void hg_list_insert_head(struct hg_list *head, struct hg_list *node)
{
    hg_list_insert_before(head->next, node);
}

/* Take `node` (in a list) out of its list; its links become NULL, so it may be inserted again. */
static inline void hg_list_unlink(struct hg_list *node)
{
    node->prev->next = node->next;
    node->next->prev = node->prev;
    node->prev = node->next = NULL;
}

/* The first element's link, or NULL when the list is empty. */
static inline struct hg_list *hg_list_first(const struct hg_list *head)
{
    return head->next == head ? NULL : head->next;
}

/* The last element's link, or NULL when the list is empty. */
static inline struct hg_list *hg_list_last(const struct hg_list *head)
{
    return head->prev == head ? NULL : head->prev;
}

/* The link after `node` (an element of `head`), or NULL when `node` is the last. */
static inline struct hg_list *hg_list_next(const struct hg_list *head, const struct hg_list *node)
{
    return node->next == head ? NULL : node->next;
}

/* Move every element of `from` to the end of `to`, in order; `from` is empty after. For taking a
 * whole queue before running callbacks that may add to it again. */
static inline void hg_list_move(struct hg_list *from, struct hg_list *to)
{
    if (hg_list_empty(from))
        return;
    from->next->prev = to->prev;
    to->prev->next = from->next;
    from->prev->next = to;
    to->prev = from->prev;
    hg_list_init(from);
}

#endif

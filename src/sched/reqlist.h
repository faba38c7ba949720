/* Doubly linked lists of requests through their next/prev links (one list at a time). */
#ifndef SP_SCHED_REQLIST_H
#define SP_SCHED_REQLIST_H

#include "sched/internal.h"

typedef struct sp__req_list {
    sp_request *head, *tail;
    int32_t n;
} sp__req_list;

static inline void list_remove(sp__req_list *l, sp_request *r) {
    if (r->prev)
        r->prev->next = r->next;
    else
        l->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        l->tail = r->prev;
    r->next = r->prev = NULL;
    l->n--;
}

static inline void list_push_back(sp__req_list *l, sp_request *r) {
    r->next = NULL;
    r->prev = l->tail;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
    l->n++;
}

static inline void list_push_front(sp__req_list *l, sp_request *r) {
    r->prev = NULL;
    r->next = l->head;
    if (l->head)
        l->head->prev = r;
    else
        l->tail = r;
    l->head = r;
    l->n++;
}

/* Inserts keeping arrival order. */
static inline void list_insert_sorted(sp__req_list *l, sp_request *r) {
    sp_request *after = l->tail;
    while (after && after->arrival > r->arrival)
        after = after->prev;
    if (!after) {
        list_push_front(l, r);
        return;
    }
    r->prev = after;
    r->next = after->next;
    if (after->next)
        after->next->prev = r;
    else
        l->tail = r;
    after->next = r;
    l->n++;
}

#endif

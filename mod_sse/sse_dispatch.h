/*
 * sse_dispatch.h - per-child registry of mapped buses and their dispatcher
 * threads, and the waiter a stream sleeps on.
 *
 * One sse_busref per distinct SSEBus path per child: the read-only mapping,
 * a refcount of the streams using it, one dispatcher thread, and a table
 * channel -> subscribed waiters. The dispatcher reads each new record's
 * header once and wakes only the waiters of that record's channel (all of
 * them if it was itself lapped). When the file is deleted or replaced the
 * busref goes "stale": new streams get a fresh mapping, the old streams are
 * woken with SSE_WAKE_BUS_GONE, and the old mapping is unmapped when its
 * last stream releases it.
 *
 * Thread safety: every function here may be called from any thread (under
 * HTTP/2 a request pool cleanup can run on another thread than the handler).
 * Callers: mod_sse.c (child_init, child_stopping), sse_handler.c.
 */
#ifndef SSE_DISPATCH_H
#define SSE_DISPATCH_H

#include <pthread.h>

#include "httpd.h"
#include "sse_bus.h"

typedef struct sse_busref sse_busref_t;
typedef struct sse_chan sse_chan_t;
typedef struct sse_waiter sse_waiter_t;

/* One channel subscription of a waiter (embedded: no allocation). */
typedef struct sse_sub {
    struct sse_sub *prev, *next;
    sse_chan_t *chan;
    sse_waiter_t *w;
} sse_sub_t;

/* Wake reasons (bit flags returned by sse_waiter_wait). */
#define SSE_WAKE_PENDING 1u  /* a record for one of our channels arrived */
#define SSE_WAKE_STOP 2u     /* the child is stopping */
#define SSE_WAKE_BUS_GONE 4u /* the bus was deleted/replaced */

struct sse_waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;   /* CLOCK_MONOTONIC: immune to wall-clock jumps */
    unsigned flags;      /* SSE_WAKE_*; guarded by mu */
    int initialised;
    /* Detached streams (sse_detach.c) have no thread sleeping on cv: when
     * set, a raise calls notify(notify_arg) instead of signalling, after
     * releasing mu (it queues the stream for its loop thread). Set once
     * before registration. Raises come under the busref's mutex (or from
     * sse_dispatch_register itself), so none is in flight once
     * sse_dispatch_unregister has returned. */
    void (*notify)(void *arg);
    void *notify_arg;

    /* Registration; guarded by the busref's mutex. */
    sse_busref_t *ref;
    int registered;
    sse_waiter_t *all_prev, *all_next; /* every waiter of the busref */
    unsigned nsubs;
    sse_sub_t subs[SSE_BUS_FILTER_MAX];
};

/* child_init: remember the child pool, register the shutdown cleanup. */
void sse_dispatch_child_init(apr_pool_t *pchild, server_rec *s);
/* child_stopping hook: set the stopping flag, wake every stream and
 * dispatcher. Cheap; does not join. */
void sse_dispatch_child_stopping(void);
/* 1 once the child is stopping. */
int sse_dispatch_stopping(void);

/* Get (opening lazily, read-only) the bus at path, with a reference.
 * On failure returns the bus error code (< 0) and logs at most once per
 * 10 s per path what happened and what to run. */
int sse_dispatch_acquire(const char *path, server_rec *s, sse_busref_t **ref,
                         const sse_bus_t **bus);
/* Drop a reference; unmaps a stale bus when its last user leaves. */
void sse_dispatch_release(sse_busref_t *ref);

apr_status_t sse_waiter_init(sse_waiter_t *w);
void sse_waiter_destroy(sse_waiter_t *w);

/* Subscribe w to the channels of f on ref. If the child is stopping or the
 * bus already went stale, w's flags say so at once. */
void sse_dispatch_register(sse_busref_t *ref, sse_waiter_t *w,
                           const sse_bus_filter_t *f);
/* Remove w from its busref (idempotent). */
void sse_dispatch_unregister(sse_waiter_t *w);

/* Sleep until woken or timeout_us passes; returns and clears the flags
 * (0 = timed out). STOP and BUS_GONE stay set once raised. */
unsigned sse_waiter_wait(sse_waiter_t *w, apr_interval_time_t timeout_us);
/* The same without sleeping: returns and clears the flags (PENDING only). */
unsigned sse_waiter_take(sse_waiter_t *w);

/* Start a module thread (dispatcher, detached loop) with httpd's signals
 * blocked and SIGBUS/SIGSEGV left to the bus guard. pthread_create's
 * return value. */
int sse_thread_start(pthread_t *t, void *(*fn)(void *), void *arg);

#endif /* SSE_DISPATCH_H */

/*
 * sse_dispatch.c - the per-child dispatcher: one read-only mapping and one
 * thread per bus path, waking only the streams whose channel got a record.
 *
 * Locks, always taken in this order, never the other way round:
 *   reg_mu     the list of busrefs, their refcounts and stale flags,
 *              the open-failure log throttle;
 *   ref->mu    one busref's channel table and waiter list;
 *   w->mu      one waiter's flags (the condition variable's mutex).
 * Nothing blocks while holding a lock except pthread_join, which is only
 * ever called with no lock held.
 *
 * Memory: busrefs and channel entries are malloc'd and
 * freed here (not pool memory), because they are created and destroyed by
 * request threads at any time during the child's life, and a child pool is
 * not safe to allocate from concurrently. Waiters live in the stream's
 * request pool and are only linked here.
 *
 * Callers: mod_sse.c (child_init, child_stopping), sse_handler.c.
 */
#include <errno.h>
#include <stddef.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "httpd.h"
#include "http_log.h"
#include "apr_strings.h"

#include "mod_sse.h"
#include "sse_dispatch.h"
#include "sse_trim.h"

#define SSE_DISPATCH_WAIT_MS 1000      /* also: how often stale is checked */
#define SSE_OPEN_LOG_INTERVAL apr_time_from_sec(10)
#define SSE_CHAN_BUCKETS_MIN 64
#define SSE_DISPATCH_BATCH 256         /* records per hold of ref->mu */

struct sse_chan {
    sse_chan_t *next;   /* bucket chain */
    uint32_t hash;
    uint16_t len;
    sse_sub_t *subs;    /* doubly linked list of subscriptions */
    char name[];        /* not NUL-terminated */
};

struct sse_busref {
    sse_busref_t *next;   /* reg_mu */
    char *path;
    sse_bus_t *bus;
    int refs;             /* reg_mu */
    int stale;            /* written under reg_mu, read atomically */
    int thread_started;
    pthread_t thread;
    sse_bus_cursor_t start; /* the dispatcher's first position, taken by
                               the acquiring thread before any stream can
                               position its own cursor (so none is ahead) */

    pthread_mutex_t mu;   /* guards everything below */
    sse_chan_t **buckets;
    size_t nbuckets, nchans;
    sse_waiter_t *all;
};

typedef struct open_failure {
    struct open_failure *next;
    apr_time_t last_log;
    int last_code;
    char path[];
} open_failure_t;

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static sse_busref_t *reg_list;           /* reg_mu */
static open_failure_t *reg_failures;     /* reg_mu */
static int sse_stopping_flag;            /* atomic */
static server_rec *main_server;

int sse_dispatch_stopping(void)
{
    return __atomic_load_n(&sse_stopping_flag, __ATOMIC_ACQUIRE);
}

/* --------------------------------------------------------------- waiters */

apr_status_t sse_waiter_init(sse_waiter_t *w)
{
    pthread_condattr_t ca;
    int rc;

    /* Not subs[]: written before they are read (nsubs counts them), and a
     * detached stream allocates only the ones it uses (sse_detach.c). */
    memset(w, 0, offsetof(sse_waiter_t, subs));
    if ((rc = pthread_mutex_init(&w->mu, NULL)) != 0)
        return rc;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    rc = pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0) {
        pthread_mutex_destroy(&w->mu);
        return rc;
    }
    w->initialised = 1;
    return APR_SUCCESS;
}

void sse_waiter_destroy(sse_waiter_t *w)
{
    if (!w->initialised)
        return;
    sse_dispatch_unregister(w);
    /* No pthread_cond_destroy: under prefork a SIGTERM destroys the child
     * pool (and this request pool) from a signal handler that interrupted
     * this very thread inside pthread_cond_timedwait, and glibc's destroy
     * then waits for that waiter for ever. A glibc condvar holds no
     * resource besides its memory, which the pool owns. */
    pthread_mutex_destroy(&w->mu);
    w->initialised = 0;
}

static void waiter_raise(sse_waiter_t *w, unsigned flags)
{
    int notify = 0;

    pthread_mutex_lock(&w->mu);
    /* A waiter already flagged will look at the bus anyway: no second
     * signal (a burst of N records costs one wake-up, not N). */
    if ((w->flags & flags) != flags) {
        w->flags |= flags;
        if (w->notify)
            notify = 1;
        else
            pthread_cond_signal(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    if (notify)
        w->notify(w->notify_arg);
}

unsigned sse_waiter_take(sse_waiter_t *w)
{
    unsigned flags;

    pthread_mutex_lock(&w->mu);
    flags = w->flags;
    w->flags &= ~SSE_WAKE_PENDING;
    pthread_mutex_unlock(&w->mu);
    return flags;
}

unsigned sse_waiter_wait(sse_waiter_t *w, apr_interval_time_t timeout_us)
{
    struct timespec ts;
    unsigned flags;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (timeout_us < 0)
        timeout_us = 0;
    ts.tv_sec += timeout_us / APR_USEC_PER_SEC;
    ts.tv_nsec += (long)(timeout_us % APR_USEC_PER_SEC) * 1000;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&w->mu);
    while (w->flags == 0) {
        if (pthread_cond_timedwait(&w->cv, &w->mu, &ts) == ETIMEDOUT)
            break;
    }
    flags = w->flags;
    /* PENDING is consumed; STOP and BUS_GONE are sticky. */
    w->flags &= ~SSE_WAKE_PENDING;
    pthread_mutex_unlock(&w->mu);
    return flags;
}

/* ------------------------------------------------------- channel table */

static sse_chan_t *chan_find(sse_busref_t *ref, const char *name, size_t len,
                             uint32_t hash)
{
    sse_chan_t *ch;
    if (!ref->nbuckets)
        return NULL;
    for (ch = ref->buckets[hash & (ref->nbuckets - 1)]; ch; ch = ch->next)
        if (ch->hash == hash && ch->len == len && !memcmp(ch->name, name, len))
            return ch;
    return NULL;
}

static void chan_grow(sse_busref_t *ref)
{
    size_t n = ref->nbuckets ? ref->nbuckets * 2 : SSE_CHAN_BUCKETS_MIN, i;
    sse_chan_t **nb = calloc(n, sizeof(*nb));
    if (!nb)
        return; /* keep the old table: longer chains, still correct */
    for (i = 0; i < ref->nbuckets; i++) {
        sse_chan_t *ch = ref->buckets[i], *next;
        for (; ch; ch = next) {
            next = ch->next;
            ch->next = nb[ch->hash & (n - 1)];
            nb[ch->hash & (n - 1)] = ch;
        }
    }
    free(ref->buckets);
    ref->buckets = nb;
    ref->nbuckets = n;
}

static sse_chan_t *chan_get(sse_busref_t *ref, const char *name, size_t len)
{
    uint32_t hash = sse_bus_channel_hash(name, len);
    sse_chan_t *ch = chan_find(ref, name, len, hash);
    if (ch)
        return ch;
    if (ref->nchans >= ref->nbuckets)
        chan_grow(ref);
    if (!ref->nbuckets || !(ch = malloc(sizeof(*ch) + len)))
        return NULL;
    ch->hash = hash;
    ch->len = (uint16_t)len;
    ch->subs = NULL;
    memcpy(ch->name, name, len);
    ch->next = ref->buckets[hash & (ref->nbuckets - 1)];
    ref->buckets[hash & (ref->nbuckets - 1)] = ch;
    ref->nchans++;
    return ch;
}

static void chan_drop_if_empty(sse_busref_t *ref, sse_chan_t *ch)
{
    sse_chan_t **pp;
    if (ch->subs)
        return;
    for (pp = &ref->buckets[ch->hash & (ref->nbuckets - 1)]; *pp;
         pp = &(*pp)->next) {
        if (*pp == ch) {
            *pp = ch->next;
            ref->nchans--;
            free(ch);
            return;
        }
    }
}

/* ----------------------------------------------------- (un)registration */

void sse_dispatch_register(sse_busref_t *ref, sse_waiter_t *w,
                           const sse_bus_filter_t *f)
{
    unsigned i;

    pthread_mutex_lock(&ref->mu);
    w->ref = ref;
    w->registered = 1;
    w->all_prev = NULL;
    w->all_next = ref->all;
    if (ref->all)
        ref->all->all_prev = w;
    ref->all = w;
    w->nsubs = 0;
    for (i = 0; i < f->n && i < SSE_BUS_FILTER_MAX; i++) {
        size_t len;
        const char *name = sse_bus_filter_name(f, i, &len);
        sse_chan_t *ch = chan_get(ref, name, len);
        sse_sub_t *sub;
        if (!ch) {
            /* Out of memory: this waiter cannot be woken per channel, so
             * it will rely on its timed waits (1 s): slower, not lost. */
            continue;
        }
        sub = &w->subs[w->nsubs++];
        sub->chan = ch;
        sub->w = w;
        sub->prev = NULL;
        sub->next = ch->subs;
        if (ch->subs)
            ch->subs->prev = sub;
        ch->subs = sub;
    }
    pthread_mutex_unlock(&ref->mu);

    /* Raised after linking: a stop/stale that happened before we were in
     * the list would otherwise never reach us. */
    if (sse_dispatch_stopping())
        waiter_raise(w, SSE_WAKE_STOP);
    if (__atomic_load_n(&ref->stale, __ATOMIC_ACQUIRE))
        waiter_raise(w, SSE_WAKE_BUS_GONE);
}

void sse_dispatch_unregister(sse_waiter_t *w)
{
    sse_busref_t *ref = w->ref;
    unsigned i;

    if (!ref)
        return;
    pthread_mutex_lock(&ref->mu);
    if (w->registered) {
        for (i = 0; i < w->nsubs; i++) {
            sse_sub_t *sub = &w->subs[i];
            if (sub->prev)
                sub->prev->next = sub->next;
            else
                sub->chan->subs = sub->next;
            if (sub->next)
                sub->next->prev = sub->prev;
            chan_drop_if_empty(ref, sub->chan);
        }
        w->nsubs = 0;
        if (w->all_prev)
            w->all_prev->all_next = w->all_next;
        else
            ref->all = w->all_next;
        if (w->all_next)
            w->all_next->all_prev = w->all_prev;
        w->registered = 0;
    }
    pthread_mutex_unlock(&ref->mu);
}

/* Wake every waiter of ref with flags. */
/* Caller holds ref->mu. */
static unsigned wake_all_locked(sse_busref_t *ref, unsigned flags)
{
    sse_waiter_t *w;
    unsigned n = 0;
    for (w = ref->all; w; w = w->all_next, n++)
        waiter_raise(w, flags);
    return n;
}

static unsigned wake_all(sse_busref_t *ref, unsigned flags)
{
    unsigned n;
    pthread_mutex_lock(&ref->mu);
    n = wake_all_locked(ref, flags);
    pthread_mutex_unlock(&ref->mu);
    return n;
}

/* Caller holds ref->mu. */
static void wake_channel_locked(sse_busref_t *ref, const char *name,
                                size_t len)
{
    sse_chan_t *ch = chan_find(ref, name, len,
                               sse_bus_channel_hash(name, len));
    sse_sub_t *sub;
    if (ch)
        for (sub = ch->subs; sub; sub = sub->next)
            waiter_raise(sub->w, SSE_WAKE_PENDING);
}

/* ------------------------------------------------------------ dispatcher */

static void mark_stale(sse_busref_t *ref, const char *why)
{
    unsigned n;
    pthread_mutex_lock(&reg_mu);
    __atomic_store_n(&ref->stale, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&reg_mu);
    n = wake_all(ref, SSE_WAKE_BUS_GONE);
    ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, main_server, APLOGNO(10530)
                 "bus %s %s; %u stream(s) in this child told to reconnect, "
                 "new streams use the new file", ref->path, why, n);
}

static void *dispatcher_main(void *arg)
{
    sse_busref_t *ref = arg;
    sse_bus_cursor_t cur;
    sse_bus_record_t rec;
    apr_time_t last_stale_check = apr_time_now();

    cur = ref->start;
    while (!sse_dispatch_stopping()) {
        int rc = sse_bus_wait(ref->bus, cur.pos, SSE_DISPATCH_WAIT_MS);
        apr_time_t now;

        if (sse_dispatch_stopping())
            break;
        if (rc < 0 && rc != SSE_BUS_ERETIRED) {
            struct timespec ts = { 0, 100 * 1000 * 1000 };
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, main_server, APLOGNO(10531)
                         "dispatcher: waiting on bus %s failed: %s",
                         ref->path, sse_bus_strerror(rc));
            nanosleep(&ts, NULL); /* never spin on a persistent error */
        }
        /* Read each new record's header (not its frame) and wake the
         * streams of its channel.
         * ref->mu is held across up to SSE_DISPATCH_BATCH records so a
         * burst costs few lock round trips; register/unregister wait at
         * most that long. */
        for (unsigned batches = 0;; batches++) {
            unsigned n = 0;
            pthread_mutex_lock(&ref->mu);
            do {
                rc = sse_bus_next(&cur, NULL, NULL, 0, &rec, 4096);
                if (rc == SSE_BUS_OK && (rec.flags & SSE_BUS_EVF_BROADCAST))
                    wake_all_locked(ref, SSE_WAKE_PENDING); /* gap marker */
                else if (rc == SSE_BUS_OK)
                    wake_channel_locked(ref, rec.channel, rec.channel_len);
            } while (rc == SSE_BUS_OK && ++n < SSE_DISPATCH_BATCH);
            pthread_mutex_unlock(&ref->mu);
            if (rc == SSE_BUS_OK) {
                /* On a flooded bus, come up for air: stop flag and the
                 * stale check below; the wait then returns at once. */
                if (batches >= 64 || sse_dispatch_stopping())
                    break;
                continue;
            }
            else if (rc == SSE_BUS_EMPTY) {
                if (!sse_bus_pending(&cur) || sse_dispatch_stopping())
                    break;
            }
            else if (rc == SSE_BUS_LAPPED || rc == SSE_BUS_EFORMAT) {
                /* We lost track of which channels got records: let every
                 * stream look for itself. */
                wake_all(ref, SSE_WAKE_PENDING);
            }
            else if (rc == SSE_BUS_ERETIRED) {
                mark_stale(ref, "was replaced by a newer bus");
                return NULL;
            }
            else {
                break;
            }
        }
        /* On a busy bus waits never time out: check by the clock. */
        now = apr_time_now();
        if (now - last_stale_check
            >= apr_time_from_msec(SSE_DISPATCH_WAIT_MS)) {
            last_stale_check = now;
            if (sse_bus_is_stale(ref->bus)) {
                mark_stale(ref, "was deleted, replaced or truncated");
                return NULL;
            }
        }
        /* Streams left? Give their freed malloc memory back (sse_trim.c). */
        sse_trim_tick();
    }
    return NULL;
}

/* Start a module thread with every asynchronous signal blocked: httpd's
 * signals (SIGTERM, SIGUSR1, SIGHUP, SIGPIPE...) must reach the MPM's
 * threads, not ours; under prefork a SIGTERM run on such a thread would
 * destroy the child pool there and join that very thread. The synchronous
 * faults stay unblocked: a blocked SIGBUS raised by a read of a truncated
 * bus kills the process instead of reaching the bus guard
 * (sse_bus_guard_install in child_init). */
int sse_thread_start(pthread_t *t, void *(*fn)(void *), void *arg)
{
    sigset_t all, old;
    int rc;

    sigfillset(&all);
    sigdelset(&all, SIGBUS);
    sigdelset(&all, SIGSEGV);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(t, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

/* ------------------------------------------------------------- registry */

static void busref_free(sse_busref_t *ref)
{
    size_t i;
    if (ref->thread_started)
        pthread_join(ref->thread, NULL);
    for (i = 0; i < ref->nbuckets; i++) {
        sse_chan_t *ch = ref->buckets[i], *next;
        for (; ch; ch = next) {
            next = ch->next;
            free(ch);
        }
    }
    free(ref->buckets);
    if (ref->bus)
        sse_bus_close(ref->bus);
    pthread_mutex_destroy(&ref->mu);
    free(ref->path);
    free(ref);
}

/* Unlink stale busrefs nobody uses; caller holds reg_mu. Returns the list
 * of unlinked ones, to be freed (joined) after reg_mu is released. */
static sse_busref_t *reap_locked(void)
{
    sse_busref_t **pp = &reg_list, *dead = NULL, *ref;
    while ((ref = *pp)) {
        if (ref->stale && ref->refs == 0) {
            *pp = ref->next;
            ref->next = dead;
            dead = ref;
        }
        else {
            pp = &ref->next;
        }
    }
    return dead;
}

static void free_list(sse_busref_t *dead)
{
    while (dead) {
        sse_busref_t *next = dead->next;
        busref_free(dead);
        dead = next;
    }
}

/* Log an open failure at most once per SSE_OPEN_LOG_INTERVAL per path
 * (and at once when the reason changes). Caller holds reg_mu. */
static void log_open_failure(const char *path, server_rec *s,
                             const sse_bus_error_t *err)
{
    open_failure_t *f;
    apr_time_t now = apr_time_now();
    size_t len = strlen(path);

    for (f = reg_failures; f; f = f->next)
        if (!strcmp(f->path, path))
            break;
    if (!f && (f = malloc(sizeof(*f) + len + 1))) {
        memcpy(f->path, path, len + 1);
        f->last_log = 0;
        f->last_code = 0;
        f->next = reg_failures;
        reg_failures = f;
    }
    if (f && f->last_code == err->code && f->last_log
        && now - f->last_log < SSE_OPEN_LOG_INTERVAL)
        return;
    if (f) {
        f->last_log = now;
        f->last_code = err->code;
    }
    ap_log_error(APLOG_MARK, APLOG_ERR, err->sys_errno, s, APLOGNO(10532)
                 "cannot open bus %s (%s)%s%s; streams answer 503 until it "
                 "exists and is readable by the httpd user: create it with "
                 "`sse-pub create %s --group www-data`", path,
                 sse_bus_strerror(err->code), err->msg[0] ? ": " : "",
                 err->msg, path);
}

int sse_dispatch_acquire(const char *path, server_rec *s, sse_busref_t **out,
                         const sse_bus_t **bus_out)
{
    sse_busref_t *ref, *dead;
    sse_bus_error_t err;
    sse_bus_info_t info;
    int rc;

    if (sse_dispatch_stopping())
        return SSE_BUS_EINVAL;
    pthread_mutex_lock(&reg_mu);
    dead = reap_locked();
    for (ref = reg_list; ref; ref = ref->next)
        if (!ref->stale && !strcmp(ref->path, path))
            break;
    if (!ref) {
        memset(&err, 0, sizeof(err));
        sse_bus_t *bus = NULL;
        rc = sse_bus_open(path, SSE_BUS_RDONLY, &bus, &err);
        if (rc != SSE_BUS_OK) {
            if (!err.code)
                err.code = rc;
            log_open_failure(path, s, &err);
            pthread_mutex_unlock(&reg_mu);
            free_list(dead);
            return rc;
        }
        ref = calloc(1, sizeof(*ref));
        sse_bus_info(bus, &info);
        if (ref)
            ref->path = strdup(path);
        if (!ref || !ref->path || pthread_mutex_init(&ref->mu, NULL) != 0) {
            if (ref) {
                free(ref->path);
                free(ref);
            }
            sse_bus_close(bus);
            pthread_mutex_unlock(&reg_mu);
            free_list(dead);
            ap_log_error(APLOG_MARK, APLOG_ERR, APR_ENOMEM, s, APLOGNO(10533)
                         "out of memory opening bus %s", path);
            return SSE_BUS_ESYS;
        }
        ref->bus = bus;
        chan_grow(ref);
        /* Here, not in the new thread: a thread that starts late would
         * skip records committed after the first stream's cursor. */
        sse_bus_cursor_newest(&ref->start, bus);
        if ((rc = sse_thread_start(&ref->thread, dispatcher_main, ref)) != 0) {
            ap_log_error(APLOG_MARK, APLOG_ERR, rc, s, APLOGNO(10534)
                         "cannot start the dispatcher thread for bus %s; "
                         "streams will poll once a second", path);
        }
        else {
            ref->thread_started = 1;
        }
        ref->next = reg_list;
        reg_list = ref;
        ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, APLOGNO(10535)
                     "opened bus %s read-only (epoch %08x, capacity %"
                     APR_UINT64_T_FMT ")",
                     path, info.epoch, (apr_uint64_t)info.capacity);
    }
    ref->refs++;
    pthread_mutex_unlock(&reg_mu);
    free_list(dead);
    *out = ref;
    *bus_out = ref->bus;
    return SSE_BUS_OK;
}

void sse_dispatch_release(sse_busref_t *ref)
{
    sse_busref_t *dead;
    pthread_mutex_lock(&reg_mu);
    ref->refs--;
    dead = reap_locked();
    pthread_mutex_unlock(&reg_mu);
    free_list(dead);
}

/* ------------------------------------------------------- child lifetime */

void sse_dispatch_child_stopping(void)
{
    sse_busref_t *ref;
    if (__atomic_exchange_n(&sse_stopping_flag, 1, __ATOMIC_ACQ_REL))
        return;
    pthread_mutex_lock(&reg_mu);
    for (ref = reg_list; ref; ref = ref->next) {
        wake_all(ref, SSE_WAKE_STOP);
        /* The dispatcher sleeps in the bus futex; this also wakes readers
         * of other processes (harmless: they re-check and sleep again). */
        sse_bus_wake_all(ref->bus);
    }
    pthread_mutex_unlock(&reg_mu);
}

static apr_status_t dispatch_shutdown(void *data)
{
    sse_busref_t *ref, *keep = NULL, *list;
    (void)data;

    /* Threaded MPMs ran child_stopping and joined their workers before
     * this; prefork may run it from a SIGTERM handler on the stream's own
     * thread. So: no waiter locks here, only the flag and the dispatchers
     * (whose threads block every signal). */
    __atomic_store_n(&sse_stopping_flag, 1, __ATOMIC_RELEASE);
    pthread_mutex_lock(&reg_mu);
    for (ref = reg_list; ref; ref = ref->next)
        sse_bus_wake_all(ref->bus);
    pthread_mutex_unlock(&reg_mu);
    pthread_mutex_lock(&reg_mu);
    list = reg_list;
    reg_list = NULL;
    pthread_mutex_unlock(&reg_mu);
    while ((ref = list)) {
        list = ref->next;
        if (ref->thread_started) {
            pthread_join(ref->thread, NULL);
            ref->thread_started = 0;
        }
        if (ref->refs == 0) {
            busref_free(ref);
        }
        else {
            /* A stream still uses it (its thread was not joined by the
             * MPM): leave the mapping; the process is exiting anyway. */
            ref->next = keep;
            keep = ref;
        }
    }
    pthread_mutex_lock(&reg_mu);
    reg_list = keep;
    while (reg_failures) {
        open_failure_t *f = reg_failures;
        reg_failures = f->next;
        free(f);
    }
    pthread_mutex_unlock(&reg_mu);
    return APR_SUCCESS;
}

void sse_dispatch_child_init(apr_pool_t *pchild, server_rec *s)
{
    main_server = s;
    __atomic_store_n(&sse_stopping_flag, 0, __ATOMIC_RELEASE);
    /* A bus truncated under our read-only mapping must not kill the child
     * (SIGBUS): readers see a retired bus, the dispatcher's stale check
     * ends its streams, new ones get 503 until a valid bus is back
     * (bus/sse_bus_guard.c). Installed after httpd's
     * own fatal-signal handlers, which the guard chains to. */
    if (sse_bus_guard_install() != 0)
        ap_log_error(APLOG_MARK, APLOG_WARNING, errno, s, APLOGNO(10536)
                     "cannot install the SIGBUS guard: a bus file truncated "
                     "while mapped will crash this child");
    /* Pre-cleanup: runs before the child pool's subpools and other
     * cleanups, while the module is still mapped. */
    apr_pool_pre_cleanup_register(pchild, NULL, dispatch_shutdown);
}

/*
 * sse_trim.c - give memory back to the kernel after streams have left.
 *
 * Why: a stream's per-connection and per-request memory (httpd's APR pools
 * and bucket allocator, 8 KB blocks, ~25 KB per stream measured) comes from
 * the connection's APR allocator. When the connection ends the event and
 * worker MPMs *recycle* its pool, and the allocator keeps every freed block
 * on its free list (MaxMemFree, default 2 MB per allocator, is far above a
 * stream's footprint): that, not the stream, was the memory "not returned"
 * after clients left (bench/RESULTS.md). So sse_trim_limit_conn() lowers
 * the stream connection's allocator max-free to one page: when httpd clears
 * the pool, the blocks go back to malloc. What glibc then holds in the
 * middle of an arena heap is only returned by malloc_trim(), hence the
 * tick below. Measurements: test/RELIABILITY.md, scenario 1.
 *
 * Policy: a stream's cleanup calls sse_trim_note_end(); the dispatcher
 * thread calls sse_trim_tick() at every turn of its loop (at least once a
 * second). A tick trims when streams have ended since the last trim and
 * either no stream has ended for SSE_TRIM_QUIET (departures are over: the
 * connections' pools have been released by then), or SSE_TRIM_BATCH ends
 * accumulated and the last trim is SSE_TRIM_MIN_INTERVAL old (steady churn
 * would otherwise never be quiet). So an idle or steady server never trims;
 * a trim costs one walk over the arenas (about a millisecond here), at most
 * once per SSE_TRIM_MIN_INTERVAL in the churn case.
 *
 * Invariants: lock-free (atomics only), callable from any thread; only one
 * tick trims at a time (the winner of a compare-and-swap on last_trim).
 * Callers: sse_handler.c (request-pool cleanup), sse_dispatch.c
 * (dispatcher loop).
 */
#include <malloc.h>

#include "apr_allocator.h"
#include "apr_time.h"

#include "sse_trim.h"

#define SSE_TRIM_QUIET apr_time_from_msec(1500)
#define SSE_TRIM_BATCH 256
#define SSE_TRIM_MIN_INTERVAL apr_time_from_sec(10)
/* APR rounds this up to one page: "keep nothing" (0 would mean unlimited). */
#define SSE_CONN_MAX_FREE 4096

static unsigned long ends_since_trim;   /* atomic */
static apr_time_t last_end;             /* atomic */
static apr_time_t last_trim;            /* atomic */
static unsigned long trims;             /* atomic, for the debug log */

void sse_trim_limit_conn(conn_rec *c)
{
    apr_allocator_t *a;

    /* HTTP/2 streams' pools belong to mod_http2, which sizes them itself. */
    if (c->master || !(a = apr_pool_allocator_get(c->pool)))
        return;
    /* Takes the allocator's mutex if it has one; the event/worker MPMs'
     * per-connection allocators are used by this thread only anyway. */
    apr_allocator_max_free_set(a, SSE_CONN_MAX_FREE);
}

void sse_trim_note_end(void)
{
    __atomic_add_fetch(&ends_since_trim, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&last_end, apr_time_now(), __ATOMIC_RELAXED);
}

int sse_trim_tick(void)
{
    unsigned long ends = __atomic_load_n(&ends_since_trim, __ATOMIC_RELAXED);
    apr_time_t now, prev;

    if (ends == 0)
        return 0;
    now = apr_time_now();
    prev = __atomic_load_n(&last_trim, __ATOMIC_RELAXED);
    if (now - __atomic_load_n(&last_end, __ATOMIC_RELAXED) < SSE_TRIM_QUIET
        && !(ends >= SSE_TRIM_BATCH && now - prev >= SSE_TRIM_MIN_INTERVAL))
        return 0;
    /* One trimmer at a time (several dispatchers may tick). */
    if (!__atomic_compare_exchange_n(&last_trim, &prev, now, 0,
                                     __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
        return 0;
    __atomic_sub_fetch(&ends_since_trim, ends, __ATOMIC_RELAXED);
    malloc_trim(0);
    __atomic_add_fetch(&trims, 1, __ATOMIC_RELAXED);
    return 1;
}

/* glibc keeps M_TOP_PAD (128 KB) of touched memory at the top of every
 * arena, and malloc_trim() never shrinks the top of a thread's arena: with
 * one arena per worker thread (up to 8 per CPU) that is about 2 MB that a
 * child holding detached streams kept after they all left (bench: 16
 * arenas x ~134 KB free). With no pad and a fixed, small trim threshold,
 * free() shrinks an arena's top once it passes SSE_TRIM_THRESHOLD. The
 * cost is more brk/mprotect/madvise calls when httpd's memory grows and
 * shrinks; a streaming server's memory does not churn like that. */
#define SSE_TRIM_THRESHOLD (32 * 1024)

void sse_trim_child_init(void)
{
    mallopt(M_TOP_PAD, 0);
    mallopt(M_TRIM_THRESHOLD, SSE_TRIM_THRESHOLD);
}

unsigned long sse_trim_count(void)
{
    return __atomic_load_n(&trims, __ATOMIC_RELAXED);
}

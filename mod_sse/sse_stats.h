/*
 * sse_stats.h - mod_sse statistics in shared memory that httpd creates.
 *
 * Layout (one anonymous shared mapping, created by the parent in
 * post_config and inherited by every child through fork):
 *
 *   sse_stats_shm_t header
 *   slots[0 .. nslots-1]   one per scoreboard process slot (ServerLimit)
 *   slots[nslots]          the shared "overflow" slot
 *
 * Who writes what:
 *   - a child finds its scoreboard slot in child_init (its pid in
 *     ap_scoreboard_image->parent[i].pid) and from then on is the only
 *     writer of that slot's counters, from any of its threads, with relaxed
 *     atomic adds (no locks; one cache line per slot start so two children
 *     never share a line). A child that cannot find its slot (an MPM that
 *     does not publish pids, or the parent not having written it in time)
 *     writes the overflow slot, also with relaxed atomic adds: correct
 *     totals, only the per-child split is lost;
 *   - on attach the new occupant stores its pid and generation and zeroes
 *     the open-streams gauge (the previous occupant is gone: httpd reuses a
 *     process slot only after its process exited, so its streams are gone
 *     too). Counters are never reset while the mapping lives: they are
 *     cumulative across occupants, which is how a restarted child or a
 *     graceful restart keeps the totals;
 *   - the mapping itself lives in the process pool of the parent
 *     (s->process->pool), so graceful and plain restarts reuse it; only a
 *     full stop/start begins again at zero.
 * Who reads: sse_status.c and sse_metrics.c, in whatever child serves the
 * request, summing all slots with relaxed loads. A sum is not a snapshot:
 * each counter is individually monotonic, but two counters read while
 * streams run may be a few events apart. The gauge of a slot is counted
 * only while its pid is still the scoreboard's pid for that slot (so a
 * child killed with open streams stops counting at once) and is clamped at
 * zero (a gauge that went negative after a reset is reported as 0).
 *
 * Callers: every SSE_STAT_ADD/SUB in sse_stream.c and sse_handler.c (the
 * hot path: a handful of relaxed atomic adds per flush), sse_stats_observe
 * from the flush pass, mod_sse.c (post_config, child_init hooks).
 */
#ifndef SSE_STATS_H
#define SSE_STATS_H

#include <stdint.h>
#include <time.h>

#include "httpd.h"
#include "apr_pools.h"

/* Flush latency histogram: upper bounds 0.0001 * 2^k s, k = 0..9
 * (0.1 ms .. 51.2 ms), then +Inf. Buckets are stored non-cumulative
 * (each observation increments exactly one), the reader accumulates. */
#define SSE_HIST_FINITE 10
#define SSE_HIST_BUCKETS (SSE_HIST_FINITE + 1)
#define SSE_HIST_BASE_NS 100000ull /* 0.0001 s */
#define SSE_HIST_OK 0
#define SSE_HIST_ERROR 1

/* The counters of one slot. Every field: written by the slot's occupant(s)
 * with relaxed atomic RMW, read by any child with relaxed loads. */
typedef struct sse_stats {
    uint64_t streams_started;
    uint64_t streams_active;       /* gauge: inc at start, dec at end; read
                                      as int64, clamped at 0 */
    uint64_t streams_detached;     /* gauge, the part of streams_active
                                      served by the detached loop (httpd
                                      does not see these); like
                                      streams_active: reset on attach,
                                      live slots only, clamped at 0 */
    uint64_t ended_client_closed;  /* client went away (FIN/EPIPE/aborted) */
    uint64_t ended_client_reset;   /* ECONNRESET */
    uint64_t ended_write_timeout;  /* a write blocked SSEWriteTimeout */
    uint64_t ended_slow_close;     /* SSESlowClient close */
    uint64_t ended_server_stopping;/* graceful restart/stop */
    uint64_t ended_bus_replaced;   /* bus file deleted/replaced */
    uint64_t ended_error;          /* anything else */
    uint64_t events_sent;
    uint64_t bytes_sent;
    uint64_t flushes;              /* successful flush passes */
    uint64_t events_skipped;       /* slow-client skip */
    uint64_t events_missed;        /* lapped / stale resume */
    uint64_t events_oversize;      /* larger than the stream buffer */
    uint64_t heartbeats;
    uint64_t resumes;              /* streams started from a Last-Event-ID */
    uint64_t resets;               /* "event: sse-reset" sent: the stream's
                                      resume point (Last-Event-ID, or where
                                      a live stream was) lies before a gap
                                      the relay marked, or before the oldest
                                      ordered event held (sse_stream.c) */
    uint64_t rejected_no_bus;      /* 503: bus missing/unreadable */
    uint64_t rejected_limit;       /* 503: SSEMaxStreams reached */
    /* flush pass latency, [status][bucket] and [status] sum in ns */
    uint64_t flush_hist[2][SSE_HIST_BUCKETS];
    uint64_t flush_sum_ns[2];
} sse_stats_t;

/* One slot: identity of the current occupant + its counters. */
typedef struct sse_stats_slot {
    /* Written once per occupant by sse_stats_child_init (pid last, with
     * release order, after the gauge reset); read by reporters (acquire on
     * pid). pid 0 = never occupied. */
    int32_t pid;
    int32_t generation;   /* ap_my_generation of the occupant */
    uint64_t occupants;   /* how many processes have used this slot */
    int64_t attached_at;  /* apr_time_t of the last attach */
    uint64_t pad_[5];     /* counters start on their own cache line */
    sse_stats_t c;
} __attribute__((aligned(64))) sse_stats_slot_t;

/* Changes with the layout of sse_stats_t: a graceful restart into a
 * module whose slots differ must not reuse the old mapping. */
#define SSE_STATS_MAGIC 0x5353457374617432ull /* "SSEstat2": + resets */

typedef struct sse_stats_shm {
    uint64_t magic;       /* written once by the parent before any fork */
    uint32_t nslots;      /* scoreboard slots (+1 overflow follows) */
    uint32_t restarts;    /* post_config passes that reused the mapping
                             (parent only writes, between generations) */
    int64_t created_at;   /* apr_time_t */
    uint64_t pad_[5];
    sse_stats_slot_t slots[]; /* nslots + 1 */
} sse_stats_shm_t;

/* The slot this process writes. Never NULL: before child_init (or if the
 * shared memory could not be created) it points to a process-local
 * scratch slot, so an increment can never crash. */
extern sse_stats_t *sse_stats_mine;

#define SSE_STAT_ADD(field, n) \
    __atomic_fetch_add(&sse_stats_mine->field, (uint64_t)(n), __ATOMIC_RELAXED)
#define SSE_STAT_SUB(field, n) \
    __atomic_fetch_sub(&sse_stats_mine->field, (uint64_t)(n), __ATOMIC_RELAXED)

/* Monotonic nanoseconds (vDSO clock_gettime; ~20 ns). */
static inline uint64_t sse_stats_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Bucket index of a duration: first k with ns <= BASE * 2^k, else +Inf. */
static inline unsigned sse_stats_bucket(uint64_t ns)
{
    unsigned k = 0;
    uint64_t bound = SSE_HIST_BASE_NS;
    while (k < SSE_HIST_FINITE && ns > bound) {
        bound <<= 1;
        k++;
    }
    return k;
}

/* Record one flush pass that took ns nanoseconds (status SSE_HIST_*). */
static inline void sse_stats_observe_flush(int status, uint64_t ns)
{
    __atomic_fetch_add(&sse_stats_mine->flush_hist[status][
                           sse_stats_bucket(ns)], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&sse_stats_mine->flush_sum_ns[status], ns,
                       __ATOMIC_RELAXED);
}

/* post_config (parent; skip the first start-up pass): create the mapping
 * or find the one kept from before a restart. Also collects the SSEBus
 * paths of the configuration for the bus figures. */
int sse_stats_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                          apr_pool_t *ptemp, server_rec *s);
/* child_init: attach this process to its scoreboard slot. */
void sse_stats_child_init(apr_pool_t *pchild, server_rec *s);

/* ---------------------------------------------------------- readers */

/* Totals over all slots; open = live gauge sum. */
typedef struct sse_stats_view {
    sse_stats_t sum;      /* streams_active holds the live, clamped sum */
    int nslots;           /* including overflow */
    int attached;         /* 1 if the shared memory exists */
    unsigned restarts;
    apr_time_t created_at;
} sse_stats_view_t;

/* Per-slot row for reports. */
typedef struct sse_stats_row {
    int slot;             /* scoreboard slot, -1 = overflow */
    pid_t pid;
    int generation;
    int alive;            /* pid still the scoreboard's pid for the slot */
    uint64_t occupants;
    int64_t open;         /* gauge as counted (0 if not alive) */
    const sse_stats_t *c; /* live counters (read with sse_stats_load) */
} sse_stats_row_t;

/* Sum everything into v. */
void sse_stats_read(sse_stats_view_t *v);
/* Fill up to max rows of slots that were ever occupied; returns count. */
int sse_stats_rows(sse_stats_row_t *rows, int max);
/* Relaxed load of one counter. */
static inline uint64_t sse_stats_load(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

/* SSEBus paths found in the configuration (deduplicated). */
const apr_array_header_t *sse_stats_bus_paths(void);

/* Header figures of the bus at path, opened read-only for this call only
 * (a report must work in a child that never streamed). Returns SSE_BUS_OK
 * or the bus error code; err (may be NULL) says why. */
struct sse_bus_info;
struct sse_bus_error;
int sse_stats_bus_info(const char *path, struct sse_bus_info *info,
                       struct sse_bus_error *err);

/* ---------------------------------------------------------- reports */

#define SSE_HANDLER_METRICS "sse-metrics"

/* `SetHandler sse-metrics`: Prometheus text format (sse_metrics.c). */
int sse_metrics_handler(request_rec *r);
/* mod_status status_hook: SSE section, HTML or ?auto (sse_status.c). */
int sse_status_hook(request_rec *r, int flags);

#endif /* SSE_STATS_H */

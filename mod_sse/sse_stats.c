/*
 * sse_stats.c - creates, keeps across restarts, attaches and sums the
 * shared-memory statistics described in sse_stats.h.
 *
 * Lifetime: the parent creates one anonymous shared mapping in post_config
 * (second start-up pass only) from s->process->pool and remembers it in
 * that pool's userdata. The process pool outlives every configuration
 * generation, so a graceful or plain restart finds the same mapping and
 * the totals carry on; the module's own globals do not (the DSO is
 * reloaded on restart), which is why nothing here relies on them across
 * generations. Children inherit the mapping through fork().
 *
 * Also here, because it is gathered at the same moment: the list of SSEBus
 * paths of the configuration (walked from ap_conftree), which the status
 * and metrics reports open read-only to show each bus's header figures.
 *
 * Callers: mod_sse.c (post_config, child_init), sse_status.c and
 * sse_metrics.c (readers), the SSE_STAT_* macros (writers).
 */
#include <string.h>
#include <unistd.h>

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"
#include "http_main.h"
#include "http_core.h"
#include "ap_mpm.h"
#include "scoreboard.h"
#include "util_cfgtree.h"
#include "apr_shm.h"
#include "apr_strings.h"
#include "apr_time.h"

#include "mod_sse.h"
#include "sse_bus.h"
#include "sse_stats.h"

#define SSE_STATS_USERDATA "mod_sse-stats-shm"

/* Before attach (and if the shared memory is missing): a private slot, so
 * SSE_STAT_* never dereferences NULL. */
static sse_stats_t sse_stats_scratch;
sse_stats_t *sse_stats_mine = &sse_stats_scratch;

/* Set in post_config (parent), inherited by children. */
static sse_stats_shm_t *shm;
static apr_array_header_t *bus_paths;

static apr_size_t shm_size(int nslots)
{
    return sizeof(sse_stats_shm_t)
           + (apr_size_t)(nslots + 1) * sizeof(sse_stats_slot_t);
}

/* The block inside an apr_shm segment. APR puts its own size word at the
 * start of an anonymous segment, so the base address is only 8-aligned;
 * the slots are cache-line aligned (one line per child, no false sharing),
 * so the block starts at the next 64-byte boundary of a segment created
 * SSE_STATS_ALIGN bytes larger. Found by UBSan (misaligned member access)
 * with the module loaded into httpd under ASan+UBSan. */
#define SSE_STATS_ALIGN 64
static sse_stats_shm_t *shm_block(apr_shm_t *sh)
{
    uintptr_t a = (uintptr_t)apr_shm_baseaddr_get(sh);
    return (sse_stats_shm_t *)((a + SSE_STATS_ALIGN - 1)
                               & ~(uintptr_t)(SSE_STATS_ALIGN - 1));
}

/* Collect the SSEBus arguments of the whole configuration tree. */
static void collect_bus_paths(apr_pool_t *p, const ap_directive_t *d)
{
    for (; d; d = d->next) {
        if (!strcasecmp(d->directive, "SSEBus") && d->args) {
            const char *args = d->args;
            char *path = ap_getword_conf(p, &args);
            int i, dup = 0;
            for (i = 0; i < bus_paths->nelts; i++)
                if (!strcmp(APR_ARRAY_IDX(bus_paths, i, char *), path))
                    dup = 1;
            if (*path && !dup)
                APR_ARRAY_PUSH(bus_paths, char *) = path;
        }
        if (d->first_child)
            collect_bus_paths(p, d->first_child);
    }
}

const apr_array_header_t *sse_stats_bus_paths(void)
{
    return bus_paths;
}

int sse_stats_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                          apr_pool_t *ptemp, server_rec *s)
{
    apr_pool_t *pproc = s->process->pool;
    apr_shm_t *sh = NULL;
    int nslots = 0;
    apr_status_t rv;
    (void)plog;
    (void)ptemp;

    bus_paths = apr_array_make(pconf, 4, sizeof(char *));
    collect_bus_paths(pconf, ap_conftree);

    /* The first of the two start-up passes only checks the config. */
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG)
        return OK;

    ap_mpm_query(AP_MPMQ_HARD_LIMIT_DAEMONS, &nslots);
    if (nslots < 1)
        nslots = 1;

    apr_pool_userdata_get((void **)&sh, SSE_STATS_USERDATA, pproc);
    if (sh) {
        sse_stats_shm_t *old = shm_block(sh);
        if (old->magic == SSE_STATS_MAGIC && (int)old->nslots >= nslots) {
            shm = old;
            shm->restarts++;
            return OK;
        }
        /* ServerLimit only changes on a full restart, and then the process
         * pool is new too; this is a belt-and-braces fallback. */
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s, APLOGNO(10560)
                     "SSE statistics: ServerLimit grew from %u to %d; "
                     "starting the statistics again from zero",
                     old->nslots, nslots);
        apr_shm_destroy(sh);
        apr_pool_userdata_set(NULL, SSE_STATS_USERDATA, NULL, pproc);
    }

    rv = apr_shm_create(&sh, shm_size(nslots) + SSE_STATS_ALIGN, NULL, pproc);
    if (rv != APR_SUCCESS) {
        shm = NULL;
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s, APLOGNO(10561)
                     "SSE statistics: cannot create %lu bytes of anonymous "
                     "shared memory; server-status and sse-metrics will only "
                     "show the child that answers. Check the memory limits "
                     "(ulimit -l / vm.overcommit) of the httpd parent.",
                     (unsigned long)shm_size(nslots));
        return OK; /* statistics are not worth refusing to start for */
    }
    shm = shm_block(sh);
    memset(shm, 0, shm_size(nslots));
    shm->nslots = (uint32_t)nslots;
    shm->created_at = apr_time_now();
    shm->magic = SSE_STATS_MAGIC; /* no reader exists before fork */
    apr_pool_userdata_set(sh, SSE_STATS_USERDATA, apr_pool_cleanup_null,
                          pproc);
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, APLOGNO(10562)
                 "SSE statistics: %d child slots + 1 overflow slot "
                 "(%lu bytes of shared memory)", nslots,
                 (unsigned long)shm_size(nslots));
    return OK;
}

/* Our scoreboard process slot, or -1. The parent writes the pid just after
 * fork() returns in it, which can be after we get here: wait a little,
 * bounded (normally found at the first look). */
static int find_my_slot(pid_t me, int nslots)
{
    int tries, i;
    if (!ap_scoreboard_image)
        return -1;
    for (tries = 0; tries < 200; tries++) {
        for (i = 0; i < nslots; i++)
            if (ap_scoreboard_image->parent[i].pid == me)
                return i;
        apr_sleep(apr_time_from_msec(1));
    }
    return -1;
}

void sse_stats_child_init(apr_pool_t *pchild, server_rec *s)
{
    sse_stats_slot_t *slot;
    pid_t me = getpid();
    int i, gen = 0;
    (void)pchild;

    if (!shm)
        return;
    ap_mpm_query(AP_MPMQ_GENERATION, &gen);
    i = find_my_slot(me, (int)shm->nslots);
    if (i < 0) {
        /* Shared by every child in this case: counters stay right (atomic
         * adds), the per-child rows and the gauge reset do not apply. */
        slot = &shm->slots[shm->nslots];
        __atomic_fetch_add(&slot->occupants, 1, __ATOMIC_RELAXED);
        __atomic_store_n(&slot->generation, gen, __ATOMIC_RELAXED);
        __atomic_store_n(&slot->pid, (int32_t)-1, __ATOMIC_RELEASE);
        ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, APLOGNO(10563)
                     "SSE statistics: pid %ld not found in the scoreboard; "
                     "counting in the shared overflow slot", (long)me);
    }
    else {
        slot = &shm->slots[i];
        /* The previous occupant has exited (httpd reuses a process slot
         * only then), so its open streams are gone: reset the gauge before
         * publishing our pid. Counters stay: they are cumulative. */
        __atomic_store_n(&slot->c.streams_active, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&slot->c.streams_detached, 0, __ATOMIC_RELAXED);
        __atomic_fetch_add(&slot->occupants, 1, __ATOMIC_RELAXED);
        __atomic_store_n(&slot->generation, gen, __ATOMIC_RELAXED);
        __atomic_store_n(&slot->attached_at, (int64_t)apr_time_now(),
                         __ATOMIC_RELAXED);
        __atomic_store_n(&slot->pid, (int32_t)me, __ATOMIC_RELEASE);
    }
    sse_stats_mine = &slot->c;
}

/* ---------------------------------------------------------- readers */

static int slot_alive(int i, int32_t pid)
{
    if (pid <= 0 || !ap_scoreboard_image)
        return 0;
    return ap_scoreboard_image->parent[i].pid == (pid_t)pid;
}

static void add_counters(sse_stats_t *sum, const sse_stats_t *c)
{
    /* sse_stats_t is all uint64_t: add field by field as an array. */
    const uint64_t *src = (const uint64_t *)c;
    uint64_t *dst = (uint64_t *)sum;
    size_t k, n = sizeof(*c) / sizeof(uint64_t);
    for (k = 0; k < n; k++)
        dst[k] += sse_stats_load(&src[k]);
}

static int64_t gauge_of(const sse_stats_t *c)
{
    int64_t g = (int64_t)sse_stats_load(&c->streams_active);
    return g < 0 ? 0 : g;
}

static int64_t detached_of(const sse_stats_t *c)
{
    int64_t g = (int64_t)sse_stats_load(&c->streams_detached);
    return g < 0 ? 0 : g;
}

void sse_stats_read(sse_stats_view_t *v)
{
    uint32_t i;
    int64_t open = 0, detached = 0;

    memset(v, 0, sizeof(*v));
    if (!shm) {
        /* No shared memory: this child's own figures are all we have. */
        add_counters(&v->sum, sse_stats_mine);
        v->sum.streams_active = (uint64_t)gauge_of(sse_stats_mine);
        v->sum.streams_detached = (uint64_t)detached_of(sse_stats_mine);
        return;
    }
    v->attached = 1;
    v->nslots = (int)shm->nslots + 1;
    v->restarts = shm->restarts;
    v->created_at = shm->created_at;
    for (i = 0; i <= shm->nslots; i++) {
        const sse_stats_slot_t *slot = &shm->slots[i];
        int32_t pid = __atomic_load_n(&slot->pid, __ATOMIC_ACQUIRE);
        if (pid == 0)
            continue; /* never occupied: all zero */
        add_counters(&v->sum, &slot->c);
        if (i == shm->nslots || slot_alive((int)i, pid)) {
            open += gauge_of(&slot->c);
            detached += detached_of(&slot->c);
        }
    }
    v->sum.streams_active = (uint64_t)open;
    v->sum.streams_detached = (uint64_t)detached;
}

int sse_stats_rows(sse_stats_row_t *rows, int max)
{
    uint32_t i;
    int n = 0;

    if (!shm)
        return 0;
    for (i = 0; i <= shm->nslots && n < max; i++) {
        const sse_stats_slot_t *slot = &shm->slots[i];
        int32_t pid = __atomic_load_n(&slot->pid, __ATOMIC_ACQUIRE);
        sse_stats_row_t *row;
        if (pid == 0)
            continue;
        row = &rows[n++];
        row->slot = i == shm->nslots ? -1 : (int)i;
        row->pid = pid > 0 ? (pid_t)pid : 0;
        row->generation = __atomic_load_n(&slot->generation,
                                          __ATOMIC_RELAXED);
        row->alive = i == shm->nslots ? 1 : slot_alive((int)i, pid);
        row->occupants = sse_stats_load(&slot->occupants);
        row->open = row->alive ? gauge_of(&slot->c) : 0;
        row->c = &slot->c;
    }
    return n;
}

int sse_stats_bus_info(const char *path, sse_bus_info_t *info,
                       sse_bus_error_t *err)
{
    sse_bus_t *bus = NULL;
    sse_bus_error_t local;
    int rc;

    if (!err)
        err = &local;
    memset(err, 0, sizeof(*err));
    rc = sse_bus_open(path, SSE_BUS_RDONLY, &bus, err);
    if (rc != SSE_BUS_OK)
        return rc;
    sse_bus_info(bus, info);
    sse_bus_close(bus);
    return SSE_BUS_OK;
}

/*
 * stats_bench.c - what mod_sse's statistics cost on the event path.
 *
 * Per flush pass the module does (sse_stream.c flush_pass):
 *   2 clock reads (CLOCK_MONOTONIC, before and after the sink write),
 *   3 relaxed atomic adds (events_sent, bytes_sent, flushes),
 *   2 relaxed atomic adds for the histogram (bucket, sum).
 * This program runs exactly that sequence (through the real sse_stats.h
 * inline functions and macros, on a MAP_SHARED anonymous mapping like the
 * module's) in a loop, alone and with T threads of one "child" sharing a
 * slot (the worst case: every thread of a child writes the same cache
 * lines), and prints nanoseconds per flush pass. It is a measurement, not
 * a test; see doc/monitoring.md for the figures measured here.
 *
 * Build and run (not part of `make`: it needs the httpd include path):
 *   gcc -std=gnu11 -O2 -pthread -Imod_sse -Iinclude -I/usr/include/apache2 \
 *       -I/usr/include/apr-1.0 -D_GNU_SOURCE bench/stats_bench.c \
 *       -o bench/stats_bench && bench/stats_bench [iterations] [threads]
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "sse_stats.h"

sse_stats_t *sse_stats_mine;

static long iters = 10000000;
static volatile uint64_t sink_;

static uint64_t now_ns(void)
{
    return sse_stats_now_ns();
}

/* The stats work of one flush pass around an (empty) sink write. */
static void *with_stats(void *arg)
{
    long i;
    (void)arg;
    for (i = 0; i < iters; i++) {
        uint64_t t0 = sse_stats_now_ns(), t1;
        sink_ += (uint64_t)i;           /* stands for the sink write */
        t1 = sse_stats_now_ns();
        sse_stats_observe_flush(SSE_HIST_OK, t1 - t0);
        SSE_STAT_ADD(events_sent, 3);
        SSE_STAT_ADD(bytes_sent, 420);
        SSE_STAT_ADD(flushes, 1);
    }
    return NULL;
}

static void *without_stats(void *arg)
{
    long i;
    (void)arg;
    for (i = 0; i < iters; i++)
        sink_ += (uint64_t)i;
    return NULL;
}

static double run(void *(*fn)(void *), int threads)
{
    pthread_t th[64];
    uint64_t t0 = now_ns();
    int k;
    for (k = 0; k < threads; k++)
        pthread_create(&th[k], NULL, fn, NULL);
    for (k = 0; k < threads; k++)
        pthread_join(th[k], NULL);
    /* ns per pass, per thread (wall time / passes of one thread) */
    return (double)(now_ns() - t0) / (double)iters;
}

int main(int argc, char **argv)
{
    int threads = 2, t;
    void *p;

    if (argc > 1)
        iters = atol(argv[1]);
    if (argc > 2)
        threads = atoi(argv[2]);
    if (threads < 1 || threads > 64 || iters < 1) {
        fprintf(stderr, "usage: stats_bench [iterations] [threads 1-64]\n");
        return 2;
    }
    p = mmap(NULL, sizeof(sse_stats_slot_t), PROT_READ | PROT_WRITE,
             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    sse_stats_mine = &((sse_stats_slot_t *)p)->c;

    printf("stats cost per flush pass (2 clock reads + 5 relaxed atomic "
           "adds), %ld passes per thread\n", iters);
    for (t = 1; t <= threads; t *= 2) {
        double base = run(without_stats, t);
        double with = run(with_stats, t);
        printf("  %2d thread(s) on one slot: %.1f ns/pass with stats, "
               "%.1f ns without: %.1f ns of stats\n", t, with, base,
               with - base);
    }
    printf("  flushes counted: %" PRIu64 " (check)\n",
           sse_stats_load(&sse_stats_mine->flushes));
    return 0;
}

/*
 * resume_bench.c - how long a resume from an ordered id (Last-Event-ID of
 * the MS-SEQ form, what clients of a relayed bus send) takes on a full
 * ring. Not a test: it measures and prints.
 *
 *   bench/resume_bench [BUS_PATH] [CAPACITY_MIB] [RESUMES]
 *
 * Fills a bus of CAPACITY_MIB (default 64) with ordered records of ~100
 * bytes until the ring has wrapped (the relay's steady state), then times
 * RESUMES (default 2000) calls of sse_bus_cursor_resume at ids spread over
 * the ring (oldest, middle, newest, between two ids) and prints the mean
 * and the worst. Link it against the library before and after a change to
 * compare (bench/RESULTS.md says how the figures there were made).
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sse_bus.h"

#define T0 UINT64_C(1700000000000)

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "/tmp/resume_bench.bus";
    uint64_t mib = argc > 2 ? strtoull(argv[2], NULL, 10) : 64;
    unsigned resumes = argc > 3 ? (unsigned)atoi(argv[3]) : 2000;
    sse_bus_create_opts_t o;
    sse_bus_error_t err;
    sse_bus_t *bus;
    sse_bus_info_t in;
    char id[64], data[40];
    uint64_t i = 0, first;
    double worst = 0, total = 0;

    sse_bus_create_opts_init(&o);
    o.capacity = mib << 20;
    o.replace = 1;
    if (sse_bus_create(path, &o, &err) != SSE_BUS_OK
        || sse_bus_open(path, SSE_BUS_RDWR, &bus, &err) != SSE_BUS_OK) {
        fprintf(stderr, "resume_bench: %s\n", err.msg);
        return 1;
    }
    memset(data, 'x', sizeof data);
    /* fill until the ring has wrapped once */
    do {
        sse_bus_event_t ev = {.channel = "c", .channel_len = 1, .id = id,
                              .data = data, .data_len = sizeof data};
        ev.id_len = (size_t)snprintf(id, sizeof id, "%" PRIu64 "-%" PRIu64,
                                     T0 + i / 4, i % 4);
        if (sse_bus_publish(bus, &ev, NULL, &err) != SSE_BUS_OK) {
            fprintf(stderr, "resume_bench: %s\n", err.msg);
            return 1;
        }
        i++;
        if (i % 4096 == 0)
            sse_bus_info(bus, &in);
    } while (i % 4096 != 0 || in.tail_pos == 0);
    sse_bus_info(bus, &in);
    first = in.tail_seq ? in.tail_seq - 1 : 0; /* index of the oldest held */
    printf("ring %" PRIu64 " MiB, %" PRIu64 " records held (%" PRIu64
           " published)\n", mib, in.head_seq - in.tail_seq + 1, i);
    for (unsigned k = 0; k < resumes; k++) {
        /* spread over what the ring holds; every 4th between two ids */
        uint64_t j = first + (i - first) * k / resumes;
        size_t n = (size_t)snprintf(id, sizeof id, "%" PRIu64 "-%" PRIu64,
                                    T0 + j / 4, k % 4 == 3 ? 9 : j % 4);
        sse_bus_cursor_t c;
        double t = now_us();
        sse_bus_resume_t rc = sse_bus_cursor_resume(&c, bus, id, n, NULL);
        t = now_us() - t;
        if (rc != SSE_BUS_RESUME_EXACT && rc != SSE_BUS_RESUME_GAP) {
            fprintf(stderr, "resume_bench: resume from %s gave %d\n", id,
                    (int)rc);
            return 1;
        }
        total += t;
        if (t > worst)
            worst = t;
    }
    printf("%u resumes from ordered ids: mean %.1f us, worst %.1f us\n",
           resumes, total / resumes, worst);
    sse_bus_close(bus);
    unlink(path);
    {
        char wake[4200];
        snprintf(wake, sizeof wake, "%s.wake", path);
        unlink(wake);
    }
    return 0;
}

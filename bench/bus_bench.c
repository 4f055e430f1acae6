/*
 * bus_bench.c - benchmark of the bus library and of `sse-pub stream`.
 * Not a test: it asserts nothing, prints Markdown tables on stdout and
 * leaves no file behind (its buses live in a temporary directory on
 * /dev/shm, removed at the end).
 *
 *   bus_bench [PATH-TO-sse-pub]      (or SSE_PUB=... in the environment;
 *                                     without it the stdin row is skipped)
 *
 * Measures:
 *   1. publishes/s with sse_bus_publish (one event per call) and with
 *      sse_bus_publish_batch (64 per call), for 64 B, 128 B and 1 KiB of
 *      data, with 1 and 2 publisher processes, 64 MiB ring, no waiters;
 *   2. events/s through `sse-pub stream` for 100-byte lines on a pipe;
 *   3. publish -> reader wake-up latency (p50/p99/p99.9) with 1, 16 and 256
 *      reader threads blocked in sse_bus_wait. The publisher puts a
 *      CLOCK_MONOTONIC stamp in the data right before publishing; a reader
 *      subtracts it from its own stamp once sse_bus_next returns the event.
 *      So the figure includes the publish, the futex wake, the scheduler and
 *      the copy out of the ring. Events are spaced so readers are asleep
 *      when each one arrives.
 * Every phase is bounded in time; the whole run takes about 20 s.
 * Wake-up figures on a virtual machine include waking a halted vCPU.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sse_bus.h"

static char dir[128];

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what, const sse_bus_error_t *err)
{
    fprintf(stderr, "bus_bench: %s: %s\n", what, err ? err->msg : strerror(errno));
    exit(1);
}

static void make_bus(const char *path, uint64_t capacity)
{
    sse_bus_create_opts_t o;
    sse_bus_error_t err;
    sse_bus_create_opts_init(&o);
    o.capacity = capacity;
    o.replace = 1;
    if (sse_bus_create(path, &o, &err) != SSE_BUS_OK)
        die("create", &err);
}

static sse_bus_t *open_bus(const char *path, int mode)
{
    sse_bus_t *b;
    sse_bus_error_t err;
    if (sse_bus_open(path, mode, &b, &err) != SSE_BUS_OK)
        die("open", &err);
    return b;
}

/* ------------------------------------------------------------ publish/s */

#define PUB_SECONDS 0.6
#define BATCH 64

/* Publish for PUB_SECONDS; returns events published. */
static uint64_t publish_loop(const char *path, size_t size, int batch)
{
    sse_bus_t *bus = open_bus(path, SSE_BUS_RDWR);
    static char data[1024];
    memset(data, 'x', sizeof data);
    sse_bus_event_t evs[BATCH];
    for (int i = 0; i < BATCH; i++)
        evs[i] = (sse_bus_event_t){.channel = "bench", .channel_len = 5,
                                   .data = data, .data_len = size};
    sse_bus_error_t err;
    uint64_t n = 0, deadline = now_ns() + (uint64_t)(PUB_SECONDS * 1e9);
    for (;;) {
        for (int k = 0; k < 64; k++) {
            int rc = batch ? sse_bus_publish_batch(bus, evs, BATCH, NULL,
                                                   NULL, &err)
                           : sse_bus_publish(bus, &evs[0], NULL, &err);
            if (rc != SSE_BUS_OK)
                die("publish", &err);
            n += batch ? BATCH : 1;
        }
        if (now_ns() >= deadline)
            break;
    }
    sse_bus_close(bus);
    return n;
}

/* Aggregate events/s of nproc publisher processes started together. */
static double publish_rate(size_t size, int nproc, int batch)
{
    char path[256];
    snprintf(path, sizeof path, "%s/pub.bus", dir);
    make_bus(path, 64u << 20);
    int res[2], go[2];
    if (pipe(res) || pipe(go))
        die("pipe", NULL);
    pid_t pids[8];
    for (int i = 0; i < nproc; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            char c;
            if (read(go[0], &c, 1) != 1)
                _exit(1);
            uint64_t t0 = now_ns();
            uint64_t n = publish_loop(path, size, batch);
            double rate = (double)n / ((double)(now_ns() - t0) / 1e9);
            if (write(res[1], &rate, sizeof rate) != sizeof rate)
                _exit(1);
            _exit(0);
        }
    }
    char go_bytes[8] = {0};
    if (write(go[1], go_bytes, (size_t)nproc) != nproc)
        die("write", NULL);
    double total = 0;
    for (int i = 0; i < nproc; i++) {
        double r = 0;
        if (read(res[0], &r, sizeof r) != sizeof r)
            die("read", NULL);
        total += r;
    }
    for (int i = 0; i < nproc; i++)
        waitpid(pids[i], NULL, 0);
    close(res[0]); close(res[1]); close(go[0]); close(go[1]);
    return total;
}

/* -------------------------------------------------------- sse-pub stdin */

#define STREAM_LINES 2000000u
#define LINE_LEN 100u

static double stream_rate(const char *sse_pub, double *seconds)
{
    char path[256];
    snprintf(path, sizeof path, "%s/stream.bus", dir);
    make_bus(path, 64u << 20);
    /* the input, generated before the clock starts */
    size_t chunk_lines = 10000, len = chunk_lines * LINE_LEN;
    char *chunk = malloc(len);
    for (size_t i = 0; i < chunk_lines; i++) {
        memset(chunk + i * LINE_LEN, 'a' + (int)(i % 26), LINE_LEN - 1);
        chunk[i * LINE_LEN + LINE_LEN - 1] = '\n';
    }
    int p[2];
    if (pipe(p))
        die("pipe", NULL);
    fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
    uint64_t t0 = now_ns();
    pid_t pub = fork();
    if (pub == 0) {
        dup2(p[0], 0);
        close(p[0]);
        close(p[1]);
        execl(sse_pub, sse_pub, "stream", path, "--channel", "bench",
              (char *)NULL);
        fprintf(stderr, "bus_bench: cannot run %s: %s\n", sse_pub,
                strerror(errno));
        _exit(127);
    }
    close(p[0]);
    signal(SIGPIPE, SIG_IGN);
    for (unsigned done = 0; done < STREAM_LINES; done += chunk_lines) {
        size_t off = 0;
        while (off < len) {
            ssize_t w = write(p[1], chunk + off, len - off);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                die("write to sse-pub", NULL);
            }
            off += (size_t)w;
        }
    }
    close(p[1]);
    int st;
    waitpid(pub, &st, 0);
    uint64_t t1 = now_ns();
    free(chunk);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "bus_bench: sse-pub stream failed (status %#x)\n", st);
        return -1;
    }
    sse_bus_t *bus = open_bus(path, SSE_BUS_RDONLY);
    sse_bus_info_t info;
    sse_bus_info(bus, &info);
    sse_bus_close(bus);
    if (info.head_seq != STREAM_LINES) {
        fprintf(stderr, "bus_bench: sse-pub published %" PRIu64 " of %u\n",
                info.head_seq, STREAM_LINES);
        return -1;
    }
    *seconds = (double)(t1 - t0) / 1e9;
    return STREAM_LINES / *seconds;
}

/* -------------------------------------------------------------- latency */

typedef struct {
    const char *path;
    uint64_t *lat;
    size_t n, cap;
    pthread_barrier_t *ready;
} reader_t;

static void *reader_main(void *arg)
{
    reader_t *r = arg;
    sse_bus_t *bus = open_bus(r->path, SSE_BUS_RDONLY);
    sse_bus_cursor_t c;
    sse_bus_cursor_newest(&c, bus);
    char buf[4096];
    pthread_barrier_wait(r->ready);
    uint64_t deadline = now_ns() + 30ull * 1000000000ull;
    for (;;) {
        sse_bus_record_t rec;
        int rc = sse_bus_next(&c, NULL, buf, sizeof buf, &rec, 0);
        if (rc == SSE_BUS_OK) {
            uint64_t t = now_ns();
            /* frame: "id: ...\ndata: <stamp>\n\n" */
            const char *d = memmem(rec.frame, rec.frame_len, "data: ", 6);
            if (!d)
                continue;
            uint64_t stamp = strtoull(d + 6, NULL, 10);
            if (stamp == 0)
                break; /* stop event */
            if (r->n < r->cap)
                r->lat[r->n++] = t - stamp;
            continue;
        }
        if (rc == SSE_BUS_LAPPED)
            continue;
        if (now_ns() > deadline)
            break;
        sse_bus_wait(bus, c.pos, 100);
    }
    sse_bus_close(bus);
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void latency(int nreaders, int events, int gap_us, double *p50,
                    double *p99, double *p999, size_t *samples)
{
    char path[256];
    snprintf(path, sizeof path, "%s/lat.bus", dir);
    make_bus(path, 16u << 20);
    sse_bus_t *bus = open_bus(path, SSE_BUS_RDWR);
    reader_t *rs = calloc((size_t)nreaders, sizeof *rs);
    pthread_t *th = calloc((size_t)nreaders, sizeof *th);
    pthread_barrier_t ready;
    pthread_barrier_init(&ready, NULL, (unsigned)nreaders + 1);
    for (int i = 0; i < nreaders; i++) {
        rs[i] = (reader_t){.path = path, .cap = (size_t)events,
                           .lat = malloc((size_t)events * sizeof(uint64_t)),
                           .ready = &ready};
        pthread_attr_t a;
        pthread_attr_init(&a);
        pthread_attr_setstacksize(&a, 256 * 1024);
        if (pthread_create(&th[i], &a, reader_main, &rs[i]))
            die("pthread_create", NULL);
        pthread_attr_destroy(&a);
    }
    pthread_barrier_wait(&ready);
    usleep(50 * 1000);
    sse_bus_error_t err;
    char data[32];
    for (int e = 0; e <= events; e++) {
        usleep((useconds_t)gap_us);
        uint64_t stamp = e == events ? 0 : now_ns();
        int n = snprintf(data, sizeof data, "%" PRIu64, stamp);
        sse_bus_event_t ev = {.channel = "lat", .channel_len = 3,
                              .data = data, .data_len = (size_t)n};
        if (sse_bus_publish(bus, &ev, NULL, &err) != SSE_BUS_OK)
            die("publish", &err);
    }
    size_t total = 0;
    for (int i = 0; i < nreaders; i++) {
        pthread_join(th[i], NULL);
        total += rs[i].n;
    }
    uint64_t *all = malloc((total ? total : 1) * sizeof *all);
    size_t k = 0;
    for (int i = 0; i < nreaders; i++) {
        memcpy(all + k, rs[i].lat, rs[i].n * sizeof *all);
        k += rs[i].n;
        free(rs[i].lat);
    }
    qsort(all, total, sizeof *all, cmp_u64);
    *samples = total;
    *p50 = total ? (double)all[total / 2] / 1e3 : -1;
    *p99 = total ? (double)all[total * 99 / 100] / 1e3 : -1;
    *p999 = total ? (double)all[total * 999 / 1000] / 1e3 : -1;
    free(all);
    free(rs);
    free(th);
    pthread_barrier_destroy(&ready);
    sse_bus_close(bus);
}

/* ---------------------------------------------------------------- main */

static int rm_one(const char *p, const struct stat *sb, int flag,
                  struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    return remove(p);
}

static void cleanup(void)
{
    if (dir[0])
        nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

int main(int argc, char **argv)
{
    const char *sse_pub = argc > 1 ? argv[1] : getenv("SSE_PUB");
    snprintf(dir, sizeof dir, "/dev/shm/sse-bus-bench.XXXXXX");
    if (!mkdtemp(dir)) {
        snprintf(dir, sizeof dir, "/tmp/sse-bus-bench.XXXXXX");
        if (!mkdtemp(dir))
            die("mkdtemp", NULL);
    }
    atexit(cleanup);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

    printf("## Bus publish rate (64 MiB ring on %s, no waiters, %ld CPUs)\n\n",
           strncmp(dir, "/dev/shm", 8) ? "/tmp" : "/dev/shm", ncpu);
    printf("| data size | publishers | call | events/s (total) |\n");
    printf("|---:|---:|---|---:|\n");
    static const size_t sizes[] = {64, 128, 1024};
    for (int s = 0; s < 3; s++)
        for (int np = 1; np <= 2; np++)
            for (int b = 0; b <= 1; b++) {
                double r = publish_rate(sizes[s], np, b);
                printf("| %zu B | %d | %s | %.2fM |\n", sizes[s], np,
                       b ? "publish_batch(64)" : "publish", r / 1e6);
                fflush(stdout);
            }

    printf("\n## `sse-pub stream` (stdin pipe, %u lines of %u B)\n\n",
           STREAM_LINES, LINE_LEN);
    printf("| binary | seconds | events/s |\n|---|---:|---:|\n");
    if (sse_pub && *sse_pub) {
        double secs = 0, r = stream_rate(sse_pub, &secs);
        if (r > 0)
            printf("| %s | %.3f | %.2fM |\n", sse_pub, secs, r / 1e6);
        else
            printf("| %s | failed | - |\n", sse_pub);
    } else {
        printf("| (not given: pass the sse-pub path or set SSE_PUB) | - | - |\n");
    }
    fflush(stdout);

    printf("\n## Publish -> reader wake-up latency (reader threads blocked in "
           "sse_bus_wait)\n\n");
    printf("| readers | events | gap | samples | p50 us | p99 us | p99.9 us |\n");
    printf("|---:|---:|---:|---:|---:|---:|---:|\n");
    /* Gaps: 50 us keeps the CPUs busy; 500 us and more let idle vCPUs halt,
     * and on a VM their wake-up (an IPI through the hypervisor) then shows
     * in the tail. Both are reported. */
    static const struct { int readers, events, gap_us; } lc[] = {
        {1, 4000, 50}, {1, 3000, 500}, {16, 1000, 2000}, {256, 200, 20000}};
    for (int i = 0; i < 4; i++) {
        double p50, p99, p999;
        size_t n;
        latency(lc[i].readers, lc[i].events, lc[i].gap_us, &p50, &p99, &p999,
                &n);
        printf("| %d | %d | %d us | %zu | %.1f | %.1f | %.1f |\n",
               lc[i].readers, lc[i].events, lc[i].gap_us, n, p50, p99, p999);
        fflush(stdout);
    }
    return 0;
}

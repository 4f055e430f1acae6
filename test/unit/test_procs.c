/*
 * test_procs.c - the bus shared by several processes at once: concurrent
 * publishers and readers (every event seen exactly once, in order, never
 * torn), and publishers SIGKILLed at random instants, often while they hold
 * the lock, without wedging the bus or letting a reader see a torn record.
 *
 * Children report through their exit status (0 = all checks passed) and a
 * line on a pipe; the parent asserts on both. Every loop is bounded in
 * count and in time.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test_helpers.h"

#define NPUB 4
#define PER_PUB 20000
#define NREAD 3

static char rbuf[2u << 20];

/* Exit codes of reader children. */
enum { RX_OK = 0, RX_OPEN = 10, RX_TORN, RX_ORDER, RX_DUP, RX_LAPPED, RX_TIMEOUT,
       RX_ERR, RX_NONE };

static void child_fail(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));
static void child_fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "child %d: ", (int)getpid());
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    _exit(code);
}

/* Reader for the concurrency test: reads `expect` events (all channels, or
 * only `only` if given) and checks order, integrity and per-publisher
 * sequence; writes a digest of what it saw to fd. */
static void reader_exact(const char *path, const char *only, uint64_t expect,
                         int ready_fd, int out_fd)
{
    sse_bus_t *bus;
    sse_bus_error_t err;
    if (sse_bus_open(path, SSE_BUS_RDONLY, &bus, &err) != SSE_BUS_OK)
        child_fail(RX_OPEN, "open: %s", err.msg);
    sse_bus_cursor_t c;
    sse_bus_cursor_oldest(&c, bus);
    sse_bus_filter_t f;
    unsigned char fspace[SSE_BUS_FILTER_SPACE_MAX];
    sse_bus_filter_init(&f, fspace, sizeof fspace);
    if (only)
        sse_bus_filter_add(&f, only, strlen(only));
    if (write(ready_fd, "r", 1) != 1)
        _exit(RX_ERR);
    uint64_t last_ctr[NPUB], n = 0, prev_seq = 0, digest = 1469598103934665603ull;
    for (int i = 0; i < NPUB; i++)
        last_ctr[i] = UINT64_MAX;
    uint64_t deadline = th_now_ns() + 60ull * 1000000000ull;
    while (n < expect) {
        sse_bus_record_t rec;
        int rc = sse_bus_next(&c, only ? &f : NULL, rbuf, sizeof rbuf, &rec, 0);
        if (rc == SSE_BUS_EMPTY) {
            if (th_now_ns() > deadline)
                child_fail(RX_TIMEOUT, "saw %" PRIu64 " of %" PRIu64, n, expect);
            sse_bus_wait(bus, c.pos, 100);
            continue;
        }
        if (rc == SSE_BUS_LAPPED)
            child_fail(RX_LAPPED, "lapped (lost %" PRIu64 ")", c.lost);
        if (rc != SSE_BUS_OK)
            child_fail(RX_ERR, "sse_bus_next: %d", rc);
        th_sse_t e;
        const char *why;
        unsigned pub;
        uint64_t ctr;
        if (th_sse_parse(rec.frame, rec.frame_len, &e, &why) ||
            th_payload_check(e.data, e.data_len, &pub, &ctr) || pub >= NPUB)
            child_fail(RX_TORN, "seq %" PRIu64 ": torn or malformed frame",
                       rec.seq);
        th_sse_free(&e);
        char want_ch[8];
        snprintf(want_ch, sizeof want_ch, "p%u", pub);
        if (rec.channel_len != strlen(want_ch) ||
            memcmp(rec.channel, want_ch, rec.channel_len) != 0)
            child_fail(RX_TORN, "seq %" PRIu64 ": channel does not match data",
                       rec.seq);
        if (rec.seq <= prev_seq)
            child_fail(RX_DUP, "seq %" PRIu64 " after %" PRIu64, rec.seq,
                       prev_seq);
        if (!only && prev_seq && rec.seq != prev_seq + 1)
            child_fail(RX_ORDER, "seq %" PRIu64 " after %" PRIu64 " (gap)",
                       rec.seq, prev_seq);
        if (ctr != last_ctr[pub] + 1)
            child_fail(RX_ORDER, "publisher %u: counter %" PRIu64 " after %"
                       PRIu64, pub, ctr, last_ctr[pub]);
        last_ctr[pub] = ctr;
        prev_seq = rec.seq;
        digest = (digest ^ rec.seq ^ ((uint64_t)pub << 56) ^ (ctr << 20)) *
                 1099511628211ull;
        n++;
    }
    char line[64];
    int len = snprintf(line, sizeof line, "%016" PRIx64 "\n", digest);
    if (write(out_fd, line, (size_t)len) != len)
        _exit(RX_ERR);
    _exit(RX_OK);
}

static void publisher(const char *path, unsigned pub, uint64_t count)
{
    sse_bus_t *bus;
    sse_bus_error_t err;
    if (sse_bus_open(path, SSE_BUS_RDWR, &bus, &err) != SSE_BUS_OK)
        child_fail(RX_OPEN, "open: %s", err.msg);
    static char data[8][512];
    sse_bus_event_t evs[8];
    char ch[8];
    snprintf(ch, sizeof ch, "p%u", pub);
    uint64_t i = 0;
    while (i < count) {
        /* alternate single publishes and batches of up to 8 */
        size_t n = (i / 8) % 2 ? 8 : 1;
        if (n > count - i)
            n = count - i;
        for (size_t k = 0; k < n; k++) {
            size_t size = 64 + ((i + k) * 7919 + pub * 31) % 400;
            th_payload(data[k], size, pub, i + k);
            evs[k] = (sse_bus_event_t){.channel = ch, .channel_len = strlen(ch),
                                       .data = data[k], .data_len = size};
        }
        int rc = n == 1 ? sse_bus_publish(bus, &evs[0], NULL, &err)
                        : sse_bus_publish_batch(bus, evs, n, NULL, NULL, &err);
        if (rc != SSE_BUS_OK)
            child_fail(RX_ERR, "publish: %d %s", rc, err.msg);
        i += n;
    }
    sse_bus_close(bus);
    _exit(0);
}

START_TEST(test_concurrent_publishers_and_readers_see_every_event_once_in_order)
{
    const char *p = th_path("procs.bus");
    th_create(p, 64u << 20, 0); /* holds all 80000 events: no lapping */
    int ready[2], out[2];
    ck_assert_int_eq(pipe(ready), 0);
    ck_assert_int_eq(pipe(out), 0);
    pid_t readers[NREAD], pubs[NPUB];
    for (int r = 0; r < NREAD; r++) {
        readers[r] = fork();
        ck_assert_int_ge(readers[r], 0);
        if (readers[r] == 0) {
            /* reader 2 follows only publisher 1's channel */
            if (r == 2)
                reader_exact(p, "p1", PER_PUB, ready[1], out[1]);
            reader_exact(p, NULL, (uint64_t)NPUB * PER_PUB, ready[1], out[1]);
        }
    }
    for (int r = 0; r < NREAD; r++) {
        char ch;
        ck_assert_int_eq(read(ready[0], &ch, 1), 1);
    }
    for (unsigned k = 0; k < NPUB; k++) {
        pubs[k] = fork();
        ck_assert_int_ge(pubs[k], 0);
        if (pubs[k] == 0)
            publisher(p, k, PER_PUB);
    }
    for (int k = 0; k < NPUB; k++) {
        int st;
        ck_assert_int_eq(waitpid(pubs[k], &st, 0), pubs[k]);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                      "publisher %d failed (status %#x)", k, st);
    }
    int failed = 0;
    for (int r = 0; r < NREAD; r++) {
        int st;
        ck_assert_int_eq(waitpid(readers[r], &st, 0), readers[r]);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "reader %d: status %#x (exit %d)\n", r, st,
                    WIFEXITED(st) ? WEXITSTATUS(st) : -1);
            failed++;
        }
    }
    ck_assert_msg(failed == 0, "%d reader(s) failed; see stderr", failed);
    /* the two all-channel readers saw the same sequence */
    close(out[1]);
    char digests[256] = "";
    ssize_t n = 0, r;
    while ((r = read(out[0], digests + n, sizeof digests - 1 - (size_t)n)) > 0)
        n += r;
    digests[n] = 0;
    ck_assert_int_eq(n, 17 * NREAD);
    sse_bus_t *bus = th_open(p, SSE_BUS_RDONLY);
    sse_bus_info_t info;
    sse_bus_info(bus, &info);
    ck_assert_uint_eq(info.head_seq, (uint64_t)NPUB * PER_PUB);
    ck_assert_uint_eq(info.recoveries, 0);
    sse_bus_close(bus);
    /* count equal digests: at least the two full readers must agree */
    char d[NREAD][17];
    for (int i = 0; i < NREAD; i++)
        memcpy(d[i], digests + 17 * i, 17), d[i][16] = 0;
    int agree = !strcmp(d[0], d[1]) || !strcmp(d[0], d[2]) ||
                !strcmp(d[1], d[2]);
    ck_assert_msg(agree, "full readers disagree: %s %s %s", d[0], d[1], d[2]);
}
END_TEST

/* ------------------------------------------------- publisher SIGKILL */

#define KILL_ROUNDS 300
#define KILL_EVENT (120u * 1024u)

/* Follows the bus until it sees an event on "ctl"; every data frame must be
 * intact. Lapping is expected here (big events, small ring). */
static void reader_intact(const char *path, int ready_fd)
{
    sse_bus_t *bus;
    sse_bus_error_t err;
    if (sse_bus_open(path, SSE_BUS_RDONLY, &bus, &err) != SSE_BUS_OK)
        child_fail(RX_OPEN, "open: %s", err.msg);
    sse_bus_cursor_t c;
    sse_bus_cursor_oldest(&c, bus);
    if (write(ready_fd, "r", 1) != 1)
        _exit(RX_ERR);
    uint64_t seen = 0, prev_seq = 0;
    uint64_t deadline = th_now_ns() + 60ull * 1000000000ull;
    for (;;) {
        sse_bus_record_t rec;
        int rc = sse_bus_next(&c, NULL, rbuf, sizeof rbuf, &rec, 0);
        if (rc == SSE_BUS_EMPTY) {
            if (th_now_ns() > deadline)
                child_fail(RX_TIMEOUT, "no ctl event after 60 s");
            sse_bus_wait(bus, c.pos, 100);
            continue;
        }
        if (rc == SSE_BUS_LAPPED)
            continue;
        if (rc != SSE_BUS_OK)
            child_fail(RX_ERR, "sse_bus_next: %d", rc);
        if (rec.seq <= prev_seq)
            child_fail(RX_DUP, "seq %" PRIu64 " after %" PRIu64, rec.seq,
                       prev_seq);
        prev_seq = rec.seq;
        if (rec.channel_len == 3 && memcmp(rec.channel, "ctl", 3) == 0)
            break;
        th_sse_t e;
        const char *why;
        unsigned pub;
        uint64_t ctr;
        if (th_sse_parse(rec.frame, rec.frame_len, &e, &why) ||
            th_payload_check(e.data, e.data_len, &pub, &ctr))
            child_fail(RX_TORN, "seq %" PRIu64 ": torn frame (%s)", rec.seq,
                       why ? why : "payload check failed");
        th_sse_free(&e);
        seen++;
    }
    _exit(seen ? RX_OK : RX_NONE);
}

static void doomed_publisher(const char *path, unsigned round)
{
    sse_bus_t *bus;
    sse_bus_error_t err;
    if (sse_bus_open(path, SSE_BUS_RDWR, &bus, &err) != SSE_BUS_OK)
        _exit(RX_OPEN);
    static char data[KILL_EVENT];
    for (uint64_t i = 0;; i++) {
        size_t size = KILL_EVENT - (i % 7) * 1024;
        th_payload(data, size, round, i);
        sse_bus_event_t ev = {.channel = "k", .channel_len = 1,
                              .data = data, .data_len = size};
        if (sse_bus_publish(bus, &ev, NULL, &err) != SSE_BUS_OK)
            _exit(RX_ERR);
    }
}

START_TEST(test_publisher_sigkilled_mid_write_never_wedges_or_tears)
{
    const char *p = th_path("kill.bus");
    sse_bus_create_opts_t o;
    sse_bus_error_t err;
    sse_bus_create_opts_init(&o);
    o.capacity = 4u << 20;
    o.max_record = 1u << 20;
    ck_assert_int_eq(sse_bus_create(p, &o, &err), SSE_BUS_OK);
    int ready[2];
    ck_assert_int_eq(pipe(ready), 0);
    pid_t readers[2];
    for (int r = 0; r < 2; r++) {
        readers[r] = fork();
        ck_assert_int_ge(readers[r], 0);
        if (readers[r] == 0)
            reader_intact(p, ready[1]);
        char ch;
        ck_assert_int_eq(read(ready[0], &ch, 1), 1);
    }
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    unsigned rounds = 0;
    uint64_t t_end = th_now_ns() + 40ull * 1000000000ull;
    for (; rounds < KILL_ROUNDS && th_now_ns() < t_end; rounds++) {
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0)
            doomed_publisher(p, rounds);
        usleep(200 + (useconds_t)(rand() % 1500));
        kill(pid, SIGKILL);
        int st;
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        ck_assert_msg(WIFSIGNALED(st),
                      "round %u: publisher exited by itself (status %#x)",
                      rounds, st);
    }
    ck_assert_uint_ge(rounds, 100);
    /* the bus still accepts publishes (a wedged lock hangs here, and the
     * test's timeout fails it) */
    sse_bus_t *bus = th_open(p, SSE_BUS_RDWR);
    char small[256];
    th_payload(small, sizeof small, 9999, 1);
    th_pub_ev(bus, "k", NULL, NULL, small, sizeof small);
    th_pub(bus, "ctl", "stop");
    sse_bus_info_t info;
    sse_bus_info(bus, &info);
    fprintf(stderr, "kill test: %u rounds, %" PRIu64 " events, %" PRIu64
            " recoveries\n", rounds, info.head_seq, info.recoveries);
    ck_assert_msg(info.recoveries > 0,
                  "no publisher was killed inside the lock in %u rounds",
                  rounds);
    for (int r = 0; r < 2; r++) {
        int st;
        ck_assert_int_eq(waitpid(readers[r], &st, 0), readers[r]);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                      "reader %d failed: status %#x (exit %d)", r, st,
                      WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    }
    /* everything still in the ring reads back intact */
    sse_bus_cursor_t c;
    sse_bus_cursor_oldest(&c, bus);
    sse_bus_record_t rec;
    uint64_t n = 0;
    while (th_next_any(&c, NULL, &rec, NULL) == SSE_BUS_OK) {
        if (rec.channel_len == 3)
            continue;
        th_sse_t e;
        const char *why;
        unsigned pub;
        uint64_t ctr;
        ck_assert(th_sse_parse(rec.frame, rec.frame_len, &e, &why) == 0);
        ck_assert(th_payload_check(e.data, e.data_len, &pub, &ctr) == 0);
        th_sse_free(&e);
        n++;
    }
    ck_assert_uint_gt(n, 0);
    sse_bus_close(bus);
}
END_TEST

TCase *procs_tcase(void)
{
    TCase *tc = tcase_create("procs");
    tcase_add_checked_fixture(tc, th_setup, th_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_concurrent_publishers_and_readers_see_every_event_once_in_order);
    tcase_add_test(tc, test_publisher_sigkilled_mid_write_never_wedges_or_tears);
    return tc;
}

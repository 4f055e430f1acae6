/*
 * test_guard.c - the SIGBUS guard (bus/sse_bus_guard.c): a bus truncated
 * under a reader's mapping makes the reader see a retired bus, never a
 * crash or a zeroed frame; a SIGBUS that is not about a bus still kills.
 * Each test forks, so that the process-wide handler and a possible crash
 * stay in a child whose exit status is the verdict.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_helpers.h"

static char frame[1 << 16];

/* Child: exit 0 if a reader of a bus truncated to `size` bytes gets
 * ERETIRED (after at most one LAPPED) and the bus reports stale. */
static int reader_survives(const char *path, sse_bus_t *rd, off_t size)
{
    sse_bus_cursor_t c;
    sse_bus_record_t rec;
    int rc, i;

    if (sse_bus_guard_install() != 0)
        return 10;
    sse_bus_cursor_oldest(&c, rd);
    if (sse_bus_next(&c, NULL, frame, sizeof frame, &rec, 0) != SSE_BUS_OK)
        return 11;
    if (truncate(path, size) != 0)
        return 12;
    for (i = 0; i < 3; i++) {
        rc = sse_bus_next(&c, NULL, frame, sizeof frame, &rec, 0);
        if (rc == SSE_BUS_ERETIRED)
            break;
        if (rc == SSE_BUS_OK)
            return 13; /* handed on a record from a truncated file */
    }
    if (rc != SSE_BUS_ERETIRED)
        return 14;
    if (!sse_bus_is_stale(rd))
        return 15;
    /* waits return at once on a retired bus */
    if (sse_bus_wait(rd, c.pos, 5000) == SSE_BUS_TIMEOUT)
        return 16;
    sse_bus_close(rd);
    return 0;
}

static void check_truncated_to(off_t size)
{
    const char *path = th_path("g.bus");
    sse_bus_t *bus, *rd;
    int status;
    pid_t pid;

    th_create(path, SSE_BUS_CAPACITY_MIN, 0);
    bus = th_open(path, SSE_BUS_RDWR);
    for (int i = 0; i < 50; i++)
        th_pub(bus, "c", "some data for the ring");
    rd = th_open(path, SSE_BUS_RDONLY);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(reader_survives(path, rd, size));
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status), "reader killed by signal %d",
                  WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    ck_assert_int_eq(WEXITSTATUS(status), 0);
    sse_bus_close(rd);
    sse_bus_close(bus);
}

START_TEST(test_reader_of_bus_truncated_to_zero_sees_retired_bus)
{
    check_truncated_to(0);
}
END_TEST

START_TEST(test_reader_of_bus_truncated_mid_ring_sees_retired_bus)
{
    check_truncated_to(8192); /* header page kept, index/ring cut */
}
END_TEST

START_TEST(test_truncation_is_stale_before_any_fault)
{
    const char *path = th_path("s.bus");
    sse_bus_t *rd;
    th_create(path, SSE_BUS_CAPACITY_MIN, 0);
    rd = th_open(path, SSE_BUS_RDONLY);
    ck_assert_int_eq(sse_bus_is_stale(rd), 0);
    ck_assert_int_eq(truncate(path, 4096), 0);
    ck_assert_int_eq(sse_bus_is_stale(rd), 1);
    sse_bus_close(rd);
}
END_TEST

START_TEST(test_sigbus_outside_a_bus_still_kills)
{
    const char *path = th_path("other.file");
    int status;
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int fd = open(path, O_RDWR | O_CREAT, 0600);
        volatile char *m;
        signal(SIGBUS, SIG_DFL);
        if (fd < 0 || ftruncate(fd, 8192) != 0)
            _exit(20);
        m = mmap(NULL, 8192, PROT_READ, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED || sse_bus_guard_install() != 0
            || ftruncate(fd, 0) != 0)
            _exit(21);
        (void)m[4096];
        _exit(0); /* the guard swallowed a SIGBUS that was not ours */
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFSIGNALED(status));
    ck_assert_int_eq(WTERMSIG(status), SIGBUS);
}
END_TEST

TCase *guard_tcase(void)
{
    TCase *tc = tcase_create("guard");
    tcase_add_checked_fixture(tc, th_setup, th_teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_reader_of_bus_truncated_to_zero_sees_retired_bus);
    tcase_add_test(tc, test_reader_of_bus_truncated_mid_ring_sees_retired_bus);
    tcase_add_test(tc, test_truncation_is_stale_before_any_fault);
    tcase_add_test(tc, test_sigbus_outside_a_bus_still_kills);
    return tc;
}

/*
 * test_publish.c - creating, opening and writing a bus: wrap-around keeps
 * every record intact, create never clobbers an existing file or follows a
 * planted symlink, open refuses anything that is not a bus it understands
 * (with the right code and a message), and readers' mappings are read-only.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_helpers.h"

START_TEST(test_wraparound_keeps_every_record_intact)
{
    sse_bus_t *bus = th_new_bus("w.bus", SSE_BUS_CAPACITY_MIN, 0);
    sse_bus_info_t info;
    sse_bus_info(bus, &info);
    ck_assert_uint_eq(info.capacity, 64u * 1024u);
    sse_bus_cursor_t c;
    sse_bus_cursor_oldest(&c, bus);
    char data[4096];
    uint64_t expect_seq = 0;
    for (uint64_t i = 0; i < 5000; i++) {
        size_t size = 64 + (i * 137) % 3000; /* odd sizes: hit the ring end */
        th_payload(data, size, 1, i);
        uint64_t seq = th_pub_ev(bus, "w", NULL, NULL, data, size);
        sse_bus_record_t rec;
        th_next(&c, NULL, &rec);
        ck_assert_uint_eq(rec.seq, seq);
        ck_assert_uint_eq(rec.seq, ++expect_seq);
        th_sse_t e;
        const char *why;
        ck_assert_msg(th_sse_parse(rec.frame, rec.frame_len, &e, &why) == 0,
                      "event %llu: %s", (unsigned long long)i, why);
        unsigned pub;
        uint64_t ctr;
        ck_assert_msg(th_payload_check(e.data, e.data_len, &pub, &ctr) == 0,
                      "event %llu: payload corrupt", (unsigned long long)i);
        ck_assert_uint_eq(ctr, i);
        th_sse_free(&e);
    }
    sse_bus_info(bus, &info);
    ck_assert_uint_gt(info.head_pos, 10 * info.capacity);
    ck_assert_uint_le(info.head_pos - info.tail_pos, info.capacity);
    ck_assert_uint_eq(info.head_seq, 5000);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_wraparound_oldest_events_still_readable_after_many_laps)
{
    sse_bus_t *bus = th_new_bus("w.bus", SSE_BUS_CAPACITY_MIN, 0);
    char data[1000];
    for (uint64_t i = 0; i < 3000; i++) {
        size_t size = 100 + (i * 31) % 900;
        th_payload(data, size, 2, i);
        th_pub_ev(bus, "w", NULL, NULL, data, size);
    }
    sse_bus_info_t info;
    sse_bus_info(bus, &info);
    sse_bus_cursor_t c;
    sse_bus_cursor_oldest(&c, bus);
    sse_bus_record_t rec;
    uint64_t n = 0, prev = 0;
    while (th_next_any(&c, NULL, &rec, NULL) == SSE_BUS_OK) {
        th_sse_t e;
        const char *why;
        ck_assert(th_sse_parse(rec.frame, rec.frame_len, &e, &why) == 0);
        unsigned pub;
        uint64_t ctr;
        ck_assert(th_payload_check(e.data, e.data_len, &pub, &ctr) == 0);
        ck_assert_uint_eq(ctr + 1, rec.seq); /* counter i has seq i+1 */
        if (prev)
            ck_assert_uint_eq(rec.seq, prev + 1);
        prev = rec.seq;
        n++;
        th_sse_free(&e);
    }
    ck_assert_uint_gt(n, 10);
    ck_assert_uint_eq(prev, 3000);
    ck_assert_uint_eq(n, info.head_seq - info.tail_seq + 1);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_create_rounds_capacity_up_to_power_of_two)
{
    sse_bus_t *bus = th_new_bus("a.bus", 100000, 0);
    sse_bus_info_t info;
    sse_bus_info(bus, &info);
    ck_assert_uint_eq(info.capacity, 131072);
    ck_assert_uint_eq(info.version, SSE_BUS_VERSION);
    ck_assert_uint_ne(info.epoch, 0);
    ck_assert_uint_eq(info.head_seq, 0);
    ck_assert_uint_gt(info.created_ns, 0);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_create_applies_mode)
{
    const char *p = th_path("m.bus");
    sse_bus_create_opts_t o;
    sse_bus_error_t err;
    sse_bus_create_opts_init(&o);
    o.capacity = 1u << 20;
    o.mode = 0604;
    ck_assert_int_eq(sse_bus_create(p, &o, &err), SSE_BUS_OK);
    struct stat st;
    ck_assert_int_eq(stat(p, &st), 0);
    ck_assert_uint_eq(st.st_mode & 07777, 0604);
    ck_assert_uint_ge((uint64_t)st.st_size, o.capacity);
}
END_TEST

START_TEST(test_create_refuses_to_overwrite_without_replace)
{
    const char *p = th_path("a.bus");
    th_create(p, 1u << 20, 0);
    sse_bus_t *bus = th_open(p, SSE_BUS_RDWR);
    th_pub(bus, "c", "kept");
    sse_bus_info_t before, after;
    sse_bus_info(bus, &before);
    sse_bus_create_opts_t o;
    sse_bus_error_t err;
    memset(&err, 0, sizeof err);
    sse_bus_create_opts_init(&o);
    ck_assert_int_eq(sse_bus_create(p, &o, &err), SSE_BUS_EEXIST);
    ck_assert(err.msg[0] != 0);
    sse_bus_info(bus, &after);
    ck_assert_uint_eq(after.epoch, before.epoch);
    ck_assert_uint_eq(after.head_seq, 1);
    ck_assert_uint_eq(after.retired, 0);
    ck_assert_int_eq(sse_bus_is_stale(bus), 0);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_create_replace_retires_old_bus)
{
    const char *p = th_path("a.bus");
    th_create(p, 1u << 20, 0);
    sse_bus_t *old = th_open(p, SSE_BUS_RDONLY);
    sse_bus_info_t oi, ni;
    sse_bus_info(old, &oi);
    sse_bus_cursor_t c;
    sse_bus_cursor_oldest(&c, old);
    sse_bus_create_opts_t o;
    sse_bus_error_t err;
    sse_bus_create_opts_init(&o);
    o.capacity = 1u << 20;
    o.replace = 1;
    ck_assert_int_eq(sse_bus_create(p, &o, &err), SSE_BUS_OK);
    sse_bus_t *nb = th_open(p, SSE_BUS_RDONLY);
    sse_bus_info(nb, &ni);
    ck_assert_uint_ne(ni.epoch, oi.epoch);
    ck_assert_int_eq(sse_bus_is_stale(old), 1);
    ck_assert_int_eq(sse_bus_is_stale(nb), 0);
    static char buf[65536];
    sse_bus_record_t rec;
    ck_assert_int_eq(sse_bus_next(&c, NULL, buf, sizeof buf, &rec, 0),
                     SSE_BUS_ERETIRED);
    sse_bus_close(old);
    sse_bus_close(nb);
}
END_TEST

static void write_file(const char *p, const void *d, size_t n)
{
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, d, n), (ssize_t)n);
    close(fd);
}

static size_t read_file(const char *p, char *d, size_t n)
{
    int fd = open(p, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    ssize_t r = read(fd, d, n);
    close(fd);
    ck_assert_int_ge(r, 0);
    return (size_t)r;
}

START_TEST(test_create_does_not_follow_planted_symlink)
{
    const char *victim = th_path("victim.txt");
    const char *p = th_path("a.bus");
    write_file(victim, "precious\n", 9);
    ck_assert_int_eq(symlink(victim, p), 0);
    sse_bus_create_opts_t o;
    sse_bus_error_t err;
    sse_bus_create_opts_init(&o);
    o.capacity = 1u << 20;
    /* without replace: the name is taken, refused */
    ck_assert_int_ne(sse_bus_create(p, &o, &err), SSE_BUS_OK);
    char buf[64];
    ck_assert_uint_eq(read_file(victim, buf, sizeof buf), 9);
    ck_assert_mem_eq(buf, "precious\n", 9);
    /* with replace: whatever happens, the link's target is untouched and
     * any bus created is a regular file in place of the link */
    o.replace = 1;
    int rc = sse_bus_create(p, &o, &err);
    ck_assert_uint_eq(read_file(victim, buf, sizeof buf), 9);
    ck_assert_mem_eq(buf, "precious\n", 9);
    struct stat st;
    ck_assert_int_eq(lstat(victim, &st), 0);
    ck_assert_int_eq(st.st_size, 9);
    if (rc == SSE_BUS_OK) {
        ck_assert_int_eq(lstat(p, &st), 0);
        ck_assert(S_ISREG(st.st_mode));
    }
}
END_TEST

/* Open must refuse with `code` and a message. */
static void assert_open_refused(const char *p, int code)
{
    sse_bus_t *bus = (sse_bus_t *)0x1;
    sse_bus_error_t err;
    memset(&err, 0, sizeof err);
    int rc = sse_bus_open(p, SSE_BUS_RDONLY, &bus, &err);
    ck_assert_msg(rc == code, "open: expected %d, got %d (%s)", code, rc,
                  err.msg);
    ck_assert_msg(err.msg[0] != 0, "no message for refused open");
    ck_assert_int_eq(err.code, code);
    memset(&err, 0, sizeof err);
    rc = sse_bus_open(p, SSE_BUS_RDWR, &bus, &err);
    ck_assert_msg(rc == code, "open rw: expected %d, got %d (%s)", code, rc,
                  err.msg);
}

START_TEST(test_open_missing_file_is_enoent)
{
    assert_open_refused(th_path("nope.bus"), SSE_BUS_ENOENT);
}
END_TEST

START_TEST(test_open_truncated_file_is_etrunc)
{
    const char *p = th_path("a.bus");
    th_create(p, 1u << 20, 0);
    struct stat st;
    ck_assert_int_eq(stat(p, &st), 0);
    ck_assert_int_eq(truncate(p, st.st_size / 2), 0);
    assert_open_refused(p, SSE_BUS_ETRUNC);
}
END_TEST

START_TEST(test_open_zeroed_file_is_eformat)
{
    const char *p = th_path("a.bus");
    th_create(p, 1u << 20, 0);
    struct stat st;
    ck_assert_int_eq(stat(p, &st), 0);
    char *z = calloc(1, (size_t)st.st_size);
    write_file(p, z, (size_t)st.st_size);
    free(z);
    assert_open_refused(p, SSE_BUS_EFORMAT);
}
END_TEST

START_TEST(test_open_random_bytes_is_eformat)
{
    const char *p = th_path("a.bus");
    size_t n = 2u << 20;
    unsigned char *d = malloc(n);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        d[i] = (unsigned char)x;
    }
    write_file(p, d, n);
    free(d);
    assert_open_refused(p, SSE_BUS_EFORMAT);
}
END_TEST

START_TEST(test_open_text_file_is_eformat)
{
    const char *p = th_path("a.bus");
    size_t n = 0, cap = 64 * 1024;
    char *d = malloc(cap);
    while (n + 64 < cap)
        n += (size_t)sprintf(d + n, "line %zu: this is not a bus file\n", n);
    write_file(p, d, n);
    free(d);
    assert_open_refused(p, SSE_BUS_EFORMAT);
}
END_TEST

START_TEST(test_open_file_shorter_than_header_refused)
{
    const char *p = th_path("a.bus");
    write_file(p, "hello\n", 6);
    sse_bus_t *bus;
    sse_bus_error_t err;
    memset(&err, 0, sizeof err);
    int rc = sse_bus_open(p, SSE_BUS_RDONLY, &bus, &err);
    ck_assert_msg(rc == SSE_BUS_EFORMAT || rc == SSE_BUS_ETRUNC,
                  "got %d", rc);
    ck_assert(err.msg[0] != 0);
}
END_TEST

START_TEST(test_open_newer_version_is_eversion)
{
    const char *p = th_path("a.bus");
    th_create(p, 1u << 20, 0);
    int fd = open(p, O_RDWR);
    ck_assert_int_ge(fd, 0);
    /* bus/sse_bus_format.h: magic u64 at 0, version u32 at 8 */
    uint32_t v = SSE_BUS_VERSION + 1;
    ck_assert_int_eq(pwrite(fd, &v, 4, 8), 4);
    close(fd);
    assert_open_refused(p, SSE_BUS_EVERSION);
}
END_TEST

START_TEST(test_open_directory_refused)
{
    sse_bus_t *bus;
    sse_bus_error_t err;
    memset(&err, 0, sizeof err);
    int rc = sse_bus_open(th_dir, SSE_BUS_RDONLY, &bus, &err);
    ck_assert_int_lt(rc, 0);
    ck_assert(err.msg[0] != 0);
}
END_TEST

/* Find the mapping of `path` in /proc/self/maps: start address and perms. */
static int find_mapping(const char *path, void **addr, char perms[5])
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[1024];
    int found = 0;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long lo, hi, off;
        char pr[5], dev[16], file[768] = "";
        unsigned long ino;
        if (sscanf(line, "%lx-%lx %4s %lx %15s %lu %767s", &lo, &hi, pr, &off,
                   dev, &ino, file) >= 6 && strcmp(file, path) == 0 &&
            off == 0) {
            *addr = (void *)lo;
            memcpy(perms, pr, 5);
            found = 1;
            break;
        }
    }
    if (f)
        fclose(f);
    return found;
}

START_TEST(test_readonly_mapping_cannot_be_written)
{
    const char *p = th_path("ro.bus");
    th_create(p, 1u << 20, 0);
    char real[4096];
    ck_assert_ptr_nonnull(realpath(p, real));
    sse_bus_t *bus = th_open(p, SSE_BUS_RDONLY);
    void *addr = NULL;
    char perms[5] = "";
    /* there is no public accessor for the mapping, so find the library's
     * own mapping of the file through /proc/self/maps */
    ck_assert_msg(find_mapping(real, &addr, perms), "mapping of %s not found",
                  real);
    ck_assert_msg(perms[1] == '-', "reader mapping is writable: %s", perms);
    ck_assert_int_eq(perms[3], 's');
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        signal(SIGSEGV, SIG_DFL); /* sanitizers install their own */
        *(volatile uint64_t *)addr = 0; /* the magic */
        _exit(0);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV,
                  "child writing the header was not killed by SIGSEGV "
                  "(status %#x)", status);
    sse_bus_close(bus);
    sse_bus_close(th_open(p, SSE_BUS_RDONLY)); /* still a valid bus */
}
END_TEST

START_TEST(test_publisher_id_in_bus_id_form_refused)
{
    sse_bus_t *bus = th_new_bus("a.bus", 1u << 20, 0);
    sse_bus_event_t ev = {.channel = "c", .channel_len = 1,
                          .id = "0000abcd:5", .id_len = 10,
                          .data = "x", .data_len = 1};
    sse_bus_error_t err;
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(sse_bus_publish(bus, &ev, NULL, &err), SSE_BUS_EID);
    ck_assert(err.msg[0] != 0);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_info_counts_bytes_and_sequences)
{
    sse_bus_t *bus = th_new_bus("a.bus", 1u << 20, 0);
    sse_bus_cursor_t c;
    sse_bus_cursor_oldest(&c, bus);
    uint64_t frames = 0;
    for (int i = 0; i < 10; i++) {
        th_pub(bus, "c", "0123456789");
        sse_bus_record_t rec;
        th_next(&c, NULL, &rec);
        frames += rec.frame_len;
    }
    sse_bus_info_t info;
    sse_bus_info(bus, &info);
    ck_assert_uint_eq(info.head_seq, 10);
    ck_assert_uint_eq(info.tail_pos, 0);
    ck_assert_uint_eq(info.bytes_total, frames);
    ck_assert_uint_eq(info.recoveries, 0);
    ck_assert_uint_eq(info.waiters, 0);
    ck_assert_uint_eq(c.pos, info.head_pos);
    ck_assert_uint_eq(sse_bus_head_pos(bus), info.head_pos);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_info_tail_seq_is_first_event_before_any_wrap)
{
    /* sse_bus.h: tail_seq is "sequence of the oldest event still held" */
    sse_bus_t *bus = th_new_bus("a.bus", 1u << 20, 0);
    for (int i = 0; i < 3; i++)
        th_pub(bus, "c", "x");
    sse_bus_info_t info;
    sse_bus_info(bus, &info);
    ck_assert_uint_eq(info.tail_pos, 0);
    ck_assert_uint_eq(info.tail_seq, 1);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_bus_is_stale_once_its_file_is_deleted)
{
    const char *p = th_path("a.bus");
    th_create(p, 1u << 20, 0);
    sse_bus_t *bus = th_open(p, SSE_BUS_RDONLY);
    ck_assert_int_eq(sse_bus_is_stale(bus), 0);
    ck_assert_int_eq(unlink(p), 0);
    ck_assert_int_eq(sse_bus_is_stale(bus), 1);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_failed_publish_keeps_earlier_events)
{
    sse_bus_t *bus = th_new_bus("a.bus", 1u << 20, 4096);
    th_pub(bus, "c", "one");
    th_pub(bus, "c", "two");
    static char huge[8192];
    memset(huge, 'h', sizeof huge);
    sse_bus_event_t ev = {.channel = "c", .channel_len = 1, .data = huge,
                          .data_len = sizeof huge};
    sse_bus_error_t err;
    ck_assert_int_eq(sse_bus_publish(bus, &ev, NULL, &err), SSE_BUS_ETOOBIG);
    sse_bus_cursor_t c;
    sse_bus_cursor_oldest(&c, bus);
    sse_bus_record_t rec;
    th_next(&c, NULL, &rec);
    ck_assert_uint_eq(rec.seq, 1);
    th_next(&c, NULL, &rec);
    ck_assert_uint_eq(rec.seq, 2);
    ck_assert_uint_eq(th_pub(bus, "c", "three"), 3);
    sse_bus_close(bus);
}
END_TEST

TCase *publish_tcase(void)
{
    TCase *tc = tcase_create("publish");
    tcase_add_checked_fixture(tc, th_setup, th_teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_wraparound_keeps_every_record_intact);
    tcase_add_test(tc, test_wraparound_oldest_events_still_readable_after_many_laps);
    tcase_add_test(tc, test_create_rounds_capacity_up_to_power_of_two);
    tcase_add_test(tc, test_create_applies_mode);
    tcase_add_test(tc, test_create_refuses_to_overwrite_without_replace);
    tcase_add_test(tc, test_create_replace_retires_old_bus);
    tcase_add_test(tc, test_create_does_not_follow_planted_symlink);
    tcase_add_test(tc, test_open_missing_file_is_enoent);
    tcase_add_test(tc, test_open_truncated_file_is_etrunc);
    tcase_add_test(tc, test_open_zeroed_file_is_eformat);
    tcase_add_test(tc, test_open_random_bytes_is_eformat);
    tcase_add_test(tc, test_open_text_file_is_eformat);
    tcase_add_test(tc, test_open_file_shorter_than_header_refused);
    tcase_add_test(tc, test_open_newer_version_is_eversion);
    tcase_add_test(tc, test_open_directory_refused);
    tcase_add_test(tc, test_readonly_mapping_cannot_be_written);
    tcase_add_test(tc, test_publisher_id_in_bus_id_form_refused);
    tcase_add_test(tc, test_info_counts_bytes_and_sequences);
    tcase_add_test(tc, test_info_tail_seq_is_first_event_before_any_wrap);
    tcase_add_test(tc, test_bus_is_stale_once_its_file_is_deleted);
    tcase_add_test(tc, test_failed_publish_keeps_earlier_events);
    return tc;
}

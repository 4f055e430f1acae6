/*
 * test_read.c - following a bus: lapping is detected with the exact number
 * of lost events, resuming from an id continues exactly (or says why it
 * cannot), last-N replay and channel filters return the right events,
 * ENOBUFS consumes nothing, and sse_bus_wait wakes on a publish from another
 * process and times out when nothing happens.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_helpers.h"

static char big[1 << 20];

/* Publish n events of size bytes on channel ch, payload counters from 0. */
static void pub_n(sse_bus_t *bus, const char *ch, uint64_t n, size_t size)
{
    char data[4096];
    for (uint64_t i = 0; i < n; i++) {
        th_payload(data, size, 0, i);
        th_pub_ev(bus, ch, NULL, NULL, data, size);
    }
}

static void id_of(sse_bus_t *bus, uint64_t seq, char *buf)
{
    sse_bus_info_t info;
    sse_bus_info(bus, &info);
    sse_bus_format_id(info.epoch, seq, buf);
}

START_TEST(test_lapped_reader_learns_exact_lost_count)
{
    sse_bus_t *bus = th_new_bus("l.bus", SSE_BUS_CAPACITY_MIN, 0);
    sse_bus_cursor_t c;
    sse_bus_cursor_oldest(&c, bus);
    pub_n(bus, "c", 3, 200);
    sse_bus_record_t rec;
    for (int i = 0; i < 3; i++)
        th_next(&c, NULL, &rec);
    ck_assert_uint_eq(rec.seq, 3);
    pub_n(bus, "c", 2000, 200); /* ~6 laps of a 64 KiB ring */
    int rc = sse_bus_next(&c, NULL, big, sizeof big, &rec, 0);
    ck_assert_int_eq(rc, SSE_BUS_LAPPED);
    uint64_t lost = c.lost;
    ck_assert_uint_gt(lost, 0);
    ck_assert_uint_eq(c.lost_total, lost);
    th_next(&c, NULL, &rec);
    ck_assert_uint_eq(rec.seq, 3 + lost + 1);
    sse_bus_info_t info;
    sse_bus_info(bus, &info);
    ck_assert_uint_eq(rec.seq, info.tail_seq);
    uint64_t read = 1;
    while (th_next_any(&c, NULL, &rec, NULL) == SSE_BUS_OK)
        read++;
    ck_assert_uint_eq(3 + lost + read, 2003);
    ck_assert_uint_eq(rec.seq, 2003);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_lapped_reader_is_told_again_on_second_lap)
{
    sse_bus_t *bus = th_new_bus("l.bus", SSE_BUS_CAPACITY_MIN, 0);
    sse_bus_cursor_t c;
    sse_bus_cursor_oldest(&c, bus);
    sse_bus_record_t rec;
    uint64_t total_lost = 0, read = 0;
    for (int round = 0; round < 3; round++) {
        pub_n(bus, "c", 1000, 300);
        int rc;
        while ((rc = sse_bus_next(&c, NULL, big, sizeof big, &rec, 0)) !=
               SSE_BUS_EMPTY) {
            if (rc == SSE_BUS_LAPPED) {
                total_lost += c.lost;
                continue;
            }
            ck_assert_int_eq(rc, SSE_BUS_OK);
            read++;
        }
    }
    ck_assert_uint_gt(total_lost, 0);
    ck_assert_uint_eq(c.lost_total, total_lost);
    ck_assert_uint_eq(read + total_lost, 3000);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_resume_from_id_is_exact)
{
    sse_bus_t *bus = th_new_bus("r.bus", 1u << 20, 0);
    pub_n(bus, "c", 10, 100);
    char id[SSE_BUS_NATIVE_ID_MAX + 1];
    id_of(bus, 5, id);
    sse_bus_cursor_t c;
    uint64_t missed = 99;
    ck_assert_int_eq(sse_bus_cursor_resume(&c, bus, id, strlen(id), &missed),
                     SSE_BUS_RESUME_EXACT);
    ck_assert_uint_eq(missed, 0);
    sse_bus_record_t rec;
    for (uint64_t s = 6; s <= 10; s++) {
        th_next(&c, NULL, &rec);
        ck_assert_uint_eq(rec.seq, s);
    }
    ck_assert_int_eq(sse_bus_next(&c, NULL, big, sizeof big, &rec, 0),
                     SSE_BUS_EMPTY);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_resume_from_newest_id_waits_for_next)
{
    sse_bus_t *bus = th_new_bus("r.bus", 1u << 20, 0);
    pub_n(bus, "c", 4, 100);
    char id[SSE_BUS_NATIVE_ID_MAX + 1];
    id_of(bus, 4, id);
    sse_bus_cursor_t c;
    ck_assert_int_eq(sse_bus_cursor_resume(&c, bus, id, strlen(id), NULL),
                     SSE_BUS_RESUME_EXACT);
    sse_bus_record_t rec;
    ck_assert_int_eq(sse_bus_next(&c, NULL, big, sizeof big, &rec, 0),
                     SSE_BUS_EMPTY);
    th_pub(bus, "c", "five");
    th_next(&c, NULL, &rec);
    ck_assert_uint_eq(rec.seq, 5);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_resume_from_overwritten_id_is_stale_with_missed_count)
{
    sse_bus_t *bus = th_new_bus("r.bus", SSE_BUS_CAPACITY_MIN, 0);
    pub_n(bus, "c", 3000, 200);
    sse_bus_info_t info;
    sse_bus_info(bus, &info);
    ck_assert_uint_gt(info.tail_seq, 10);
    char id[SSE_BUS_NATIVE_ID_MAX + 1];
    id_of(bus, 7, id);
    sse_bus_cursor_t c;
    uint64_t missed = 0;
    ck_assert_int_eq(sse_bus_cursor_resume(&c, bus, id, strlen(id), &missed),
                     SSE_BUS_RESUME_STALE);
    sse_bus_record_t rec;
    th_next(&c, NULL, &rec);
    /* events 8 .. rec.seq-1 are gone: exactly `missed` of them */
    ck_assert_uint_eq(missed, rec.seq - 8);
    ck_assert_uint_eq(rec.seq, info.tail_seq);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_resume_from_other_epoch_starts_at_oldest)
{
    sse_bus_t *bus = th_new_bus("r.bus", 1u << 20, 0);
    pub_n(bus, "c", 5, 100);
    sse_bus_info_t info;
    sse_bus_info(bus, &info);
    char id[SSE_BUS_NATIVE_ID_MAX + 1];
    sse_bus_format_id(info.epoch ^ 0x10000001u, 3, id);
    sse_bus_cursor_t c;
    uint64_t missed = 99;
    ck_assert_int_eq(sse_bus_cursor_resume(&c, bus, id, strlen(id), &missed),
                     SSE_BUS_RESUME_EPOCH);
    ck_assert_uint_eq(missed, 0);
    sse_bus_record_t rec;
    th_next(&c, NULL, &rec);
    ck_assert_uint_eq(rec.seq, 1);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_resume_from_future_id_starts_at_newest)
{
    sse_bus_t *bus = th_new_bus("r.bus", 1u << 20, 0);
    pub_n(bus, "c", 5, 100);
    char id[SSE_BUS_NATIVE_ID_MAX + 1];
    id_of(bus, 500, id);
    sse_bus_cursor_t c;
    ck_assert_int_eq(sse_bus_cursor_resume(&c, bus, id, strlen(id), NULL),
                     SSE_BUS_RESUME_FUTURE);
    sse_bus_record_t rec;
    ck_assert_int_eq(sse_bus_next(&c, NULL, big, sizeof big, &rec, 0),
                     SSE_BUS_EMPTY);
    th_pub(bus, "c", "six");
    th_next(&c, NULL, &rec);
    ck_assert_uint_eq(rec.seq, 6);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_resume_from_unknown_custom_id_starts_at_oldest)
{
    sse_bus_t *bus = th_new_bus("r.bus", 1u << 20, 0);
    pub_n(bus, "c", 5, 100);
    sse_bus_cursor_t c;
    uint64_t missed = 99;
    ck_assert_int_eq(sse_bus_cursor_resume(&c, bus, "no-such-id", 10,
                                           &missed),
                     SSE_BUS_RESUME_UNKNOWN);
    ck_assert_uint_eq(missed, 0);
    sse_bus_record_t rec;
    th_next(&c, NULL, &rec);
    ck_assert_uint_eq(rec.seq, 1);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_resume_from_garbage_never_crashes)
{
    sse_bus_t *bus = th_new_bus("r.bus", 1u << 20, 0);
    pub_n(bus, "c", 5, 100);
    static const char *odd[] = {"", ":", "00000000:", "ffffffff:99999999999"
                                "999999999999", "\xff\xfe", "9f3ac21b:-1",
                                "a\nb"};
    sse_bus_cursor_t c;
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        sse_bus_resume_t r = sse_bus_cursor_resume(&c, bus, odd[i],
                                                   strlen(odd[i]), NULL);
        ck_assert_int_ge(r, SSE_BUS_RESUME_EXACT);
        ck_assert_int_le(r, SSE_BUS_RESUME_UNKNOWN);
    }
    uint64_t x = 88172645463325252ull;
    char id[80];
    for (int i = 0; i < 2000; i++) {
        size_t n = (size_t)(i % 80);
        for (size_t k = 0; k < n; k++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            id[k] = (char)x;
        }
        sse_bus_resume_t r = sse_bus_cursor_resume(&c, bus, id, n, NULL);
        ck_assert_int_ge(r, SSE_BUS_RESUME_EXACT);
        ck_assert_int_le(r, SSE_BUS_RESUME_UNKNOWN);
        sse_bus_record_t rec;
        int rc = sse_bus_next(&c, NULL, big, sizeof big, &rec, 0);
        ck_assert(rc == SSE_BUS_OK || rc == SSE_BUS_EMPTY);
    }
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_publisher_ids_resumable_while_in_ring)
{
    sse_bus_t *bus = th_new_bus("r.bus", 1u << 20, 0);
    char id[32];
    for (int i = 1; i <= 10; i++) {
        snprintf(id, sizeof id, "redis-%d-0", 1000 + i);
        th_pub_ev(bus, "c", NULL, id, "x", 1);
    }
    sse_bus_cursor_t c;
    ck_assert_int_eq(sse_bus_cursor_resume(&c, bus, "redis-1004-0", 12,
                                           NULL),
                     SSE_BUS_RESUME_EXACT);
    sse_bus_record_t rec;
    for (int i = 5; i <= 10; i++) {
        th_next(&c, NULL, &rec);
        snprintf(id, sizeof id, "redis-%d-0", 1000 + i);
        ck_assert_uint_eq(rec.id_len, strlen(id));
        ck_assert_mem_eq(rec.id, id, rec.id_len);
        ck_assert_uint_eq(rec.seq, (uint64_t)i);
    }
    ck_assert_int_eq(sse_bus_next(&c, NULL, big, sizeof big, &rec, 0),
                     SSE_BUS_EMPTY);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_publisher_id_pushed_out_of_ring_is_unknown)
{
    sse_bus_t *bus = th_new_bus("r.bus", SSE_BUS_CAPACITY_MIN, 0);
    th_pub_ev(bus, "c", NULL, "first-one", "x", 1);
    pub_n(bus, "c", 2000, 200);
    sse_bus_cursor_t c;
    ck_assert_int_eq(sse_bus_cursor_resume(&c, bus, "first-one", 9, NULL),
                     SSE_BUS_RESUME_UNKNOWN);
    sse_bus_info_t info;
    sse_bus_info(bus, &info);
    sse_bus_record_t rec;
    th_next(&c, NULL, &rec);
    ck_assert_uint_eq(rec.seq, info.tail_seq);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_last_n_replays_the_last_n_events)
{
    sse_bus_t *bus = th_new_bus("r.bus", 1u << 20, 0);
    pub_n(bus, "c", 10, 100);
    sse_bus_cursor_t c;
    sse_bus_cursor_last(&c, bus, 3);
    sse_bus_record_t rec;
    for (uint64_t s = 8; s <= 10; s++) {
        th_next(&c, NULL, &rec);
        ck_assert_uint_eq(rec.seq, s);
    }
    ck_assert_int_eq(sse_bus_next(&c, NULL, big, sizeof big, &rec, 0),
                     SSE_BUS_EMPTY);
    sse_bus_cursor_last(&c, bus, 0);
    ck_assert_int_eq(sse_bus_next(&c, NULL, big, sizeof big, &rec, 0),
                     SSE_BUS_EMPTY);
    sse_bus_cursor_last(&c, bus, 1000); /* more than held: from the oldest */
    th_next(&c, NULL, &rec);
    ck_assert_uint_eq(rec.seq, 1);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_last_n_after_wrap_replays_the_last_n_events)
{
    sse_bus_t *bus = th_new_bus("r.bus", SSE_BUS_CAPACITY_MIN, 0);
    pub_n(bus, "c", 2000, 150);
    sse_bus_cursor_t c;
    sse_bus_cursor_last(&c, bus, 5);
    sse_bus_record_t rec;
    for (uint64_t s = 1996; s <= 2000; s++) {
        th_next(&c, NULL, &rec);
        ck_assert_uint_eq(rec.seq, s);
    }
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_cursor_newest_sees_only_new_events)
{
    sse_bus_t *bus = th_new_bus("r.bus", 1u << 20, 0);
    pub_n(bus, "c", 5, 100);
    sse_bus_cursor_t c;
    sse_bus_cursor_newest(&c, bus);
    sse_bus_record_t rec;
    ck_assert_int_eq(sse_bus_pending(&c), 0);
    ck_assert_int_eq(sse_bus_next(&c, NULL, big, sizeof big, &rec, 0),
                     SSE_BUS_EMPTY);
    th_pub(bus, "c", "new");
    ck_assert_int_eq(sse_bus_pending(&c), 1);
    th_next(&c, NULL, &rec);
    ck_assert_uint_eq(rec.seq, 6);
    ck_assert_int_eq(sse_bus_pending(&c), 0);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_filter_returns_only_matching_channels)
{
    sse_bus_t *bus = th_new_bus("f.bus", 1u << 20, 0);
    static const char *chans[] = {"news", "sport", "chat.1", "newsx", "new"};
    for (int i = 0; i < 50; i++)
        th_pub(bus, chans[i % 5], "x");
    sse_bus_filter_t f;
    unsigned char fspace[SSE_BUS_FILTER_SPACE_MAX];
    sse_bus_filter_init(&f, fspace, sizeof fspace);
    ck_assert_int_eq(sse_bus_filter_add(&f, "news", 4), SSE_BUS_OK);
    sse_bus_cursor_t c;
    sse_bus_cursor_oldest(&c, bus);
    sse_bus_record_t rec;
    for (int i = 0; i < 10; i++) {
        th_next(&c, &f, &rec);
        ck_assert_uint_eq(rec.channel_len, 4);
        ck_assert_mem_eq(rec.channel, "news", 4);
        ck_assert_uint_eq(rec.seq, (uint64_t)(i * 5 + 1));
    }
    ck_assert_int_eq(sse_bus_next(&c, &f, big, sizeof big, &rec, 0),
                     SSE_BUS_EMPTY);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_filter_with_several_channels_keeps_bus_order)
{
    sse_bus_t *bus = th_new_bus("f.bus", 1u << 20, 0);
    static const char *chans[] = {"a", "b", "c", "d"};
    for (int i = 0; i < 40; i++)
        th_pub(bus, chans[i % 4], "x");
    sse_bus_filter_t f;
    unsigned char fspace[SSE_BUS_FILTER_SPACE_MAX];
    sse_bus_filter_init(&f, fspace, sizeof fspace);
    ck_assert_int_eq(sse_bus_filter_add(&f, "d", 1), SSE_BUS_OK);
    ck_assert_int_eq(sse_bus_filter_add(&f, "b", 1), SSE_BUS_OK);
    ck_assert_int_eq(sse_bus_filter_add(&f, "b", 1), SSE_BUS_OK); /* no-op */
    ck_assert_uint_eq(f.n, 2);
    sse_bus_cursor_t c;
    sse_bus_cursor_oldest(&c, bus);
    sse_bus_record_t rec;
    uint64_t prev = 0;
    for (int i = 0; i < 20; i++) {
        th_next(&c, &f, &rec);
        ck_assert(rec.channel[0] == 'b' || rec.channel[0] == 'd');
        ck_assert_uint_eq(rec.seq % 2, 0);
        ck_assert_uint_gt(rec.seq, prev);
        prev = rec.seq;
    }
    ck_assert_int_eq(sse_bus_next(&c, &f, big, sizeof big, &rec, 0),
                     SSE_BUS_EMPTY);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_filter_refuses_bad_names_and_overflow)
{
    sse_bus_filter_t f;
    unsigned char fspace[SSE_BUS_FILTER_SPACE_MAX];
    sse_bus_filter_init(&f, fspace, sizeof fspace);
    ck_assert_int_eq(sse_bus_filter_add(&f, "", 0), SSE_BUS_ECHANNEL);
    ck_assert_int_eq(sse_bus_filter_add(&f, "a\nb", 3), SSE_BUS_ECHANNEL);
    char name[8];
    for (int i = 0; i < SSE_BUS_FILTER_MAX; i++) {
        int n = snprintf(name, sizeof name, "c%d", i);
        ck_assert_int_eq(sse_bus_filter_add(&f, name, (size_t)n), SSE_BUS_OK);
    }
    ck_assert_int_eq(sse_bus_filter_add(&f, "one-more", 8), SSE_BUS_ETOOBIG);
    ck_assert_int_eq(sse_bus_filter_match(&f, "c7", 2), 1);
    ck_assert_int_eq(sse_bus_filter_match(&f, "c", 1), 0);
}
END_TEST

/* 32 names of the maximum length fill exactly SSE_BUS_FILTER_SPACE_MAX. */
START_TEST(test_filter_holds_32_names_of_128_bytes)
{
    sse_bus_filter_t f;
    unsigned char fspace[SSE_BUS_FILTER_SPACE_MAX];
    char name[SSE_BUS_CHANNEL_MAX + 1];
    sse_bus_filter_init(&f, fspace, sizeof fspace);
    memset(name, 'x', sizeof name);
    for (int i = 0; i < SSE_BUS_FILTER_MAX; i++) {
        name[0] = (char)('A' + i);
        ck_assert_int_eq(sse_bus_filter_add(&f, name, SSE_BUS_CHANNEL_MAX),
                         SSE_BUS_OK);
    }
    ck_assert_uint_eq(f.n, SSE_BUS_FILTER_MAX);
    ck_assert_uint_eq(sse_bus_filter_space(&f), SSE_BUS_FILTER_SPACE_MAX);
    /* a 129-byte name is not a channel; a 33rd name does not fit */
    ck_assert_int_eq(sse_bus_filter_add(&f, name, SSE_BUS_CHANNEL_MAX + 1),
                     SSE_BUS_ECHANNEL);
    ck_assert_int_eq(sse_bus_filter_add(&f, "z", 1), SSE_BUS_ETOOBIG);
    for (int i = 0; i < SSE_BUS_FILTER_MAX; i++) {
        size_t len = 0;
        const char *got = sse_bus_filter_name(&f, (unsigned)i, &len);
        name[0] = (char)('A' + i);
        ck_assert_uint_eq(len, SSE_BUS_CHANNEL_MAX);
        ck_assert_mem_eq(got, name, SSE_BUS_CHANNEL_MAX);
        ck_assert_int_eq(sse_bus_filter_match(&f, name, SSE_BUS_CHANNEL_MAX),
                         1);
        /* prefixes and other lengths never match */
        ck_assert_int_eq(sse_bus_filter_match(&f, name,
                                              SSE_BUS_CHANNEL_MAX - 1), 0);
    }
    ck_assert_ptr_null(sse_bus_filter_name(&f, SSE_BUS_FILTER_MAX, NULL));
    /* a duplicate of the longest name is a no-op even when full */
    name[0] = 'A';
    ck_assert_int_eq(sse_bus_filter_add(&f, name, SSE_BUS_CHANNEL_MAX),
                     SSE_BUS_OK);
    ck_assert_uint_eq(f.n, SSE_BUS_FILTER_MAX);
}
END_TEST

/* Duplicates take no space; a copy holds exactly the bytes used and
 * matches the same names, independently of the original's block. */
START_TEST(test_filter_duplicates_and_exact_copy)
{
    sse_bus_filter_t f, g;
    unsigned char fspace[SSE_BUS_FILTER_SPACE_MAX];
    sse_bus_filter_init(&f, fspace, sizeof fspace);
    ck_assert_int_eq(sse_bus_filter_add(&f, "news", 4), SSE_BUS_OK);
    ck_assert_int_eq(sse_bus_filter_add(&f, "new", 3), SSE_BUS_OK);
    ck_assert_int_eq(sse_bus_filter_add(&f, "news", 4), SSE_BUS_OK);
    ck_assert_int_eq(sse_bus_filter_add(&f, "new", 3), SSE_BUS_OK);
    ck_assert_uint_eq(f.n, 2);
    ck_assert_uint_eq(sse_bus_filter_space(&f),
                      SSE_BUS_FILTER_ENTRY(4) + SSE_BUS_FILTER_ENTRY(3));
    unsigned char *exact = malloc(sse_bus_filter_space(&f));
    sse_bus_filter_copy(&g, &f, exact);
    memset(fspace, 0, sizeof fspace); /* the copy must not use it */
    ck_assert_uint_eq(g.n, 2);
    ck_assert_int_eq(sse_bus_filter_match(&g, "news", 4), 1);
    ck_assert_int_eq(sse_bus_filter_match(&g, "new", 3), 1);
    ck_assert_int_eq(sse_bus_filter_match(&g, "ne", 2), 0);
    ck_assert_int_eq(sse_bus_filter_match(&g, "newsx", 5), 0);
    /* full to the byte: a new name is refused, a duplicate is not */
    ck_assert_int_eq(sse_bus_filter_add(&g, "x", 1), SSE_BUS_ETOOBIG);
    ck_assert_int_eq(sse_bus_filter_add(&g, "new", 3), SSE_BUS_OK);
    size_t len;
    ck_assert_mem_eq(sse_bus_filter_name(&g, 1, &len), "new", 3);
    ck_assert_uint_eq(len, 3);
    free(exact);
}
END_TEST

/* A block too small for the next name refuses it (ETOOBIG) and keeps
 * what it has; an empty filter matches nothing. */
START_TEST(test_filter_in_a_small_block)
{
    sse_bus_filter_t f;
    unsigned char small[SSE_BUS_FILTER_ENTRY(5) + 3];
    sse_bus_filter_init(&f, small, sizeof small);
    ck_assert_int_eq(sse_bus_filter_match(&f, "alpha", 5), 0);
    ck_assert_int_eq(sse_bus_filter_add(&f, "alpha", 5), SSE_BUS_OK);
    ck_assert_int_eq(sse_bus_filter_add(&f, "beta", 4), SSE_BUS_ETOOBIG);
    ck_assert_int_eq(sse_bus_filter_add(&f, "b", 1), SSE_BUS_ETOOBIG);
    ck_assert_uint_eq(f.n, 1);
    ck_assert_int_eq(sse_bus_filter_match(&f, "alpha", 5), 1);
    ck_assert_int_eq(sse_bus_filter_match(&f, "beta", 4), 0);
}
END_TEST

START_TEST(test_max_scan_bounds_the_work_of_one_call)
{
    sse_bus_t *bus = th_new_bus("f.bus", 1u << 20, 0);
    for (int i = 0; i < 100; i++)
        th_pub(bus, "other", "x");
    th_pub(bus, "mine", "y");
    sse_bus_filter_t f;
    unsigned char fspace[SSE_BUS_FILTER_SPACE_MAX];
    sse_bus_filter_init(&f, fspace, sizeof fspace);
    sse_bus_filter_add(&f, "mine", 4);
    sse_bus_cursor_t c;
    sse_bus_cursor_oldest(&c, bus);
    sse_bus_record_t rec;
    ck_assert_int_eq(sse_bus_next(&c, &f, big, sizeof big, &rec, 10),
                     SSE_BUS_EMPTY);
    int calls = 1, rc;
    while ((rc = sse_bus_next(&c, &f, big, sizeof big, &rec, 10)) ==
               SSE_BUS_EMPTY && calls < 100)
        calls++;
    ck_assert_int_eq(rc, SSE_BUS_OK);
    ck_assert_uint_eq(rec.seq, 101);
    ck_assert_int_ge(calls, 10);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_enobufs_leaves_record_unconsumed)
{
    sse_bus_t *bus = th_new_bus("b.bus", 1u << 20, 0);
    char data[1000];
    memset(data, 'z', sizeof data);
    th_pub_ev(bus, "c", NULL, NULL, data, sizeof data);
    th_pub(bus, "c", "small");
    sse_bus_cursor_t c;
    sse_bus_cursor_oldest(&c, bus);
    uint64_t pos = c.pos;
    char small[100];
    sse_bus_record_t rec;
    ck_assert_int_eq(sse_bus_next(&c, NULL, small, sizeof small, &rec, 0),
                     SSE_BUS_ENOBUFS);
    ck_assert_uint_gt(rec.frame_len, sizeof data);
    ck_assert_uint_eq(c.pos, pos);
    uint32_t need = rec.frame_len;
    char *buf = malloc(need);
    ck_assert_int_eq(sse_bus_next(&c, NULL, buf, need, &rec, 0), SSE_BUS_OK);
    ck_assert_uint_eq(rec.seq, 1);
    ck_assert_uint_eq(rec.frame_len, need);
    th_next(&c, NULL, &rec);
    ck_assert_uint_eq(rec.seq, 2);
    free(buf);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_header_only_read_advances_without_copying_frames)
{
    sse_bus_t *bus = th_new_bus("h.bus", 1u << 20, 0);
    th_pub(bus, "a", "one");
    th_pub(bus, "b", "two");
    th_pub(bus, "a", "three");
    sse_bus_filter_t f;
    unsigned char fspace[SSE_BUS_FILTER_SPACE_MAX];
    sse_bus_filter_init(&f, fspace, sizeof fspace);
    sse_bus_filter_add(&f, "a", 1);
    sse_bus_cursor_t c;
    sse_bus_cursor_oldest(&c, bus);
    sse_bus_record_t rec;
    ck_assert_int_eq(sse_bus_next(&c, &f, NULL, 0, &rec, 0), SSE_BUS_OK);
    ck_assert_uint_eq(rec.seq, 1);
    ck_assert_ptr_null(rec.frame);
    ck_assert_uint_eq(rec.channel_len, 1);
    ck_assert_int_eq(rec.channel[0], 'a');
    ck_assert_uint_gt(rec.frame_len, 0);
    ck_assert_int_eq(sse_bus_next(&c, &f, NULL, 0, &rec, 0), SSE_BUS_OK);
    ck_assert_uint_eq(rec.seq, 3);
    ck_assert_int_eq(sse_bus_next(&c, &f, NULL, 0, &rec, 0), SSE_BUS_EMPTY);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_skip_after_enobufs_drops_that_record)
{
    sse_bus_t *bus = th_new_bus("b.bus", 1u << 20, 0);
    char data[1000];
    memset(data, 'z', sizeof data);
    th_pub_ev(bus, "c", NULL, NULL, data, sizeof data);
    th_pub(bus, "c", "small");
    sse_bus_cursor_t c;
    sse_bus_cursor_oldest(&c, bus);
    char small[100];
    sse_bus_record_t rec;
    ck_assert_int_eq(sse_bus_next(&c, NULL, small, sizeof small, &rec, 0),
                     SSE_BUS_ENOBUFS);
    ck_assert_int_eq(sse_bus_skip(&c), SSE_BUS_OK);
    ck_assert_int_eq(sse_bus_next(&c, NULL, small, sizeof small, &rec, 0),
                     SSE_BUS_OK);
    ck_assert_uint_eq(rec.seq, 2);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_wait_times_out_when_nothing_published)
{
    sse_bus_t *bus = th_new_bus("w.bus", 1u << 20, 0);
    uint64_t t0 = th_now_ns();
    int rc = sse_bus_wait(bus, sse_bus_head_pos(bus), 150);
    uint64_t ms = (th_now_ns() - t0) / 1000000;
    /* spurious wake-ups are allowed (OK), but nothing was published */
    ck_assert_msg(rc == SSE_BUS_TIMEOUT || rc == SSE_BUS_OK, "rc %d", rc);
    if (rc == SSE_BUS_TIMEOUT)
        ck_assert_uint_ge(ms, 100);
    ck_assert_uint_eq(sse_bus_head_pos(bus), 0);
    sse_bus_info_t info;
    sse_bus_info(bus, &info);
    ck_assert_uint_eq(info.waiters, 0);
    /* a loop of waits must end in TIMEOUT */
    int timeouts = 0;
    for (int i = 0; i < 5 && !timeouts; i++)
        timeouts = sse_bus_wait(bus, 0, 50) == SSE_BUS_TIMEOUT;
    ck_assert(timeouts);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_wait_returns_at_once_when_already_behind)
{
    sse_bus_t *bus = th_new_bus("w.bus", 1u << 20, 0);
    th_pub(bus, "c", "x");
    ck_assert_int_eq(sse_bus_wait(bus, 0, 10000), SSE_BUS_OK);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_wait_wakes_on_publish_from_another_process)
{
    const char *p = th_path("w.bus");
    th_create(p, 1u << 20, 0);
    sse_bus_t *bus = th_open(p, SSE_BUS_RDONLY);
    sse_bus_cursor_t c;
    sse_bus_cursor_newest(&c, bus);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        sse_bus_t *pb;
        sse_bus_error_t err;
        if (sse_bus_open(p, SSE_BUS_RDWR, &pb, &err) != SSE_BUS_OK)
            _exit(2);
        usleep(200 * 1000); /* let the parent block first */
        sse_bus_event_t ev = {.channel = "c", .channel_len = 1,
                              .data = "wake", .data_len = 4};
        _exit(sse_bus_publish(pb, &ev, NULL, &err) == SSE_BUS_OK ? 0 : 3);
    }
    uint64_t t0 = th_now_ns();
    int woke = 0;
    /* a 10 s timeout per wait: only a wake-up ends this loop early */
    while (!woke && th_now_ns() - t0 < 10ull * 1000000000ull) {
        int rc = sse_bus_wait(bus, c.pos, 10000);
        ck_assert_int_ge(rc, 0);
        woke = sse_bus_pending(&c);
    }
    ck_assert_msg(woke, "no wake-up within 10 s");
    ck_assert_uint_lt(th_now_ns() - t0, 9ull * 1000000000ull);
    sse_bus_record_t rec;
    th_next(&c, NULL, &rec);
    ck_assert_uint_eq(rec.seq, 1);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    sse_bus_close(bus);
}
END_TEST

TCase *read_tcase(void)
{
    TCase *tc = tcase_create("read");
    tcase_add_checked_fixture(tc, th_setup, th_teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_lapped_reader_learns_exact_lost_count);
    tcase_add_test(tc, test_lapped_reader_is_told_again_on_second_lap);
    tcase_add_test(tc, test_resume_from_id_is_exact);
    tcase_add_test(tc, test_resume_from_newest_id_waits_for_next);
    tcase_add_test(tc, test_resume_from_overwritten_id_is_stale_with_missed_count);
    tcase_add_test(tc, test_resume_from_other_epoch_starts_at_oldest);
    tcase_add_test(tc, test_resume_from_future_id_starts_at_newest);
    tcase_add_test(tc, test_resume_from_unknown_custom_id_starts_at_oldest);
    tcase_add_test(tc, test_resume_from_garbage_never_crashes);
    tcase_add_test(tc, test_publisher_ids_resumable_while_in_ring);
    tcase_add_test(tc, test_publisher_id_pushed_out_of_ring_is_unknown);
    tcase_add_test(tc, test_last_n_replays_the_last_n_events);
    tcase_add_test(tc, test_last_n_after_wrap_replays_the_last_n_events);
    tcase_add_test(tc, test_cursor_newest_sees_only_new_events);
    tcase_add_test(tc, test_filter_returns_only_matching_channels);
    tcase_add_test(tc, test_filter_with_several_channels_keeps_bus_order);
    tcase_add_test(tc, test_filter_refuses_bad_names_and_overflow);
    tcase_add_test(tc, test_filter_holds_32_names_of_128_bytes);
    tcase_add_test(tc, test_filter_duplicates_and_exact_copy);
    tcase_add_test(tc, test_filter_in_a_small_block);
    tcase_add_test(tc, test_max_scan_bounds_the_work_of_one_call);
    tcase_add_test(tc, test_enobufs_leaves_record_unconsumed);
    tcase_add_test(tc, test_skip_after_enobufs_drops_that_record);
    tcase_add_test(tc, test_header_only_read_advances_without_copying_frames);
    tcase_add_test(tc, test_wait_times_out_when_nothing_published);
    tcase_add_test(tc, test_wait_returns_at_once_when_already_behind);
    tcase_add_test(tc, test_wait_wakes_on_publish_from_another_process);
    return tc;
}

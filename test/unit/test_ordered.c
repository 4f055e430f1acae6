/*
 * test_ordered.c - ordered ids (MS-SEQ, the Redis stream ids sse-relay
 * carries) and broadcast records: ids parse by the documented grammar,
 * resuming compares numerically (exact, between ids, ahead of a lagging
 * bus, before the oldest = GAP), the floor keeps late-appended older
 * records out, the newest ordered id is found, a broadcast record passes
 * every channel filter, and the binary search that resumes from an ordered
 * id agrees with a linear reading of the ring at the start, middle and end
 * of many records, after the ring wrapped, and when it must fall back on
 * the walk. Also the relay's status file (sse_bus_relay_status_*): parsed,
 * aged, and refused when it is anything but what sse-relay writes.
 */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test_helpers.h"

static char frame[1 << 16];

static void pub_id(sse_bus_t *bus, const char *ch, const char *id,
                   const char *data)
{
    th_pub_ev(bus, ch, NULL, id, data, strlen(data));
}

/* Next record's id text (asserts OK). */
static const char *next_id(sse_bus_cursor_t *c, const sse_bus_filter_t *f)
{
    static char id[SSE_BUS_ID_MAX + 1];
    sse_bus_record_t rec;
    int rc = sse_bus_next(c, f, frame, sizeof frame, &rec, 0);
    ck_assert_int_eq(rc, SSE_BUS_OK);
    memcpy(id, rec.id, rec.id_len);
    id[rec.id_len] = '\0';
    return id;
}

static int next_rc(sse_bus_cursor_t *c)
{
    sse_bus_record_t rec;
    return sse_bus_next(c, NULL, frame, sizeof frame, &rec, 0);
}

START_TEST(test_ordered_id_grammar)
{
    uint64_t ms;
    uint32_t seq;
    ck_assert_int_eq(sse_bus_parse_ordered_id("1700000000000-3", 15, &ms,
                                              &seq), SSE_BUS_OK);
    ck_assert_uint_eq(ms, 1700000000000ull);
    ck_assert_uint_eq(seq, 3);
    ck_assert_int_eq(sse_bus_parse_ordered_id("0-1", 3, &ms, &seq),
                     SSE_BUS_OK);
    ck_assert_int_eq(sse_bus_parse_ordered_id("18446744073709551615-4294967295",
                                              31, &ms, &seq), SSE_BUS_OK);
    ck_assert_uint_eq(ms, UINT64_MAX);
    ck_assert_uint_eq(seq, UINT32_MAX);
    static const char *bad[] = {"", "1", "1-", "-1", "1-2-3", "a-1", "1-b",
                                "1-4294967296", "18446744073709551616-0",
                                " 1-2", "1-2 ", "1:2"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        ck_assert_msg(sse_bus_parse_ordered_id(bad[i], strlen(bad[i]), &ms,
                                               &seq) == SSE_BUS_EID,
                      "'%s' must not parse", bad[i]);
}
END_TEST

START_TEST(test_resume_from_ordered_id_compares_numerically)
{
    sse_bus_t *bus = th_new_bus("o.bus", 1 << 20, 0);
    sse_bus_cursor_t c;
    pub_id(bus, "a", "100-0", "x");
    pub_id(bus, "a", "100-9", "x");
    pub_id(bus, "a", "100-10", "x"); /* textually below 100-9 */
    pub_id(bus, "a", "2000-0", "x");
    /* exact */
    ck_assert_int_eq(sse_bus_cursor_resume(&c, bus, "100-9", 5, NULL),
                     SSE_BUS_RESUME_EXACT);
    ck_assert_str_eq(next_id(&c, NULL), "100-10");
    /* between two ids (e.g. a gap marker's id seen elsewhere) */
    ck_assert_int_eq(sse_bus_cursor_resume(&c, bus, "999-5", 5, NULL),
                     SSE_BUS_RESUME_EXACT);
    ck_assert_str_eq(next_id(&c, NULL), "2000-0");
    ck_assert_int_eq(next_rc(&c), SSE_BUS_EMPTY);
    /* older than the oldest ordered record held: GAP, from the oldest */
    ck_assert_int_eq(sse_bus_cursor_resume(&c, bus, "99-0", 4, NULL),
                     SSE_BUS_RESUME_GAP);
    ck_assert_str_eq(next_id(&c, NULL), "100-0");
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_resume_ahead_of_a_lagging_bus_skips_what_arrives_late)
{
    sse_bus_t *bus = th_new_bus("lag.bus", 1 << 20, 0);
    sse_bus_cursor_t c;
    pub_id(bus, "a", "5-0", "x");
    /* the client saw up to 7-0 on a host whose relay is ahead */
    ck_assert_int_eq(sse_bus_cursor_resume(&c, bus, "7-0", 3, NULL),
                     SSE_BUS_RESUME_EXACT);
    ck_assert_int_eq(next_rc(&c), SSE_BUS_EMPTY);
    pub_id(bus, "a", "6-0", "x");
    pub_id(bus, "a", "7-0", "x");
    th_pub(bus, "a", "local"); /* not ordered: not subject to the floor */
    pub_id(bus, "a", "7-1", "x");
    sse_bus_record_t rec;
    ck_assert_int_eq(sse_bus_next(&c, NULL, frame, sizeof frame, &rec, 0),
                     SSE_BUS_OK);
    ck_assert_uint_eq(rec.flags, 0);
    ck_assert_int_eq(rec.id[8], ':'); /* the local one: a bus id */
    ck_assert_str_eq(next_id(&c, NULL), "7-1");
    ck_assert_int_eq(next_rc(&c), SSE_BUS_EMPTY);
    /* the floor is gone once passed */
    ck_assert_int_eq(c.floor_set, 0);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_last_ordered_id_is_the_greatest_in_the_ring)
{
    sse_bus_t *bus = th_new_bus("last.bus", 1 << 20, 0);
    uint64_t ms = 1;
    uint32_t seq = 1;
    ck_assert_int_eq(sse_bus_last_ordered_id(bus, &ms, &seq), 0);
    pub_id(bus, "a", "10-2", "x");
    pub_id(bus, "a", "10-11", "x");
    th_pub(bus, "a", "a bus id after it");
    pub_id(bus, "a", "not-ordered", "x");
    ck_assert_int_eq(sse_bus_last_ordered_id(bus, &ms, &seq), 1);
    ck_assert_uint_eq(ms, 10);
    ck_assert_uint_eq(seq, 11);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_broadcast_record_passes_every_filter)
{
    sse_bus_t *bus = th_new_bus("b.bus", 1 << 20, 0);
    sse_bus_filter_t f;
    unsigned char fspace[SSE_BUS_FILTER_SPACE_MAX];
    sse_bus_cursor_t c;
    sse_bus_record_t rec;
    sse_bus_error_t err;
    sse_bus_event_t ev = {.channel = "sse.relay", .channel_len = 9,
                          .event = "sse-reset", .event_len = 9,
                          .id = "5-0", .id_len = 3, .data = "{}",
                          .data_len = 2, .flags = SSE_BUS_EVF_BROADCAST};
    sse_bus_filter_init(&f, fspace, sizeof fspace);
    sse_bus_filter_add(&f, "a", 1);
    sse_bus_cursor_oldest(&c, bus);
    th_pub(bus, "b", "not for a");
    ck_assert_int_eq(sse_bus_publish(bus, &ev, NULL, &err), SSE_BUS_OK);
    th_pub(bus, "a", "for a");
    ck_assert_int_eq(sse_bus_next(&c, &f, frame, sizeof frame, &rec, 0),
                     SSE_BUS_OK);
    ck_assert_uint_eq(rec.flags, SSE_BUS_EVF_BROADCAST);
    ck_assert_int_eq(memcmp(rec.frame, "id: 5-0\nevent: sse-reset\n", 25), 0);
    ck_assert_int_eq(sse_bus_next(&c, &f, frame, sizeof frame, &rec, 0),
                     SSE_BUS_OK);
    ck_assert_uint_eq(rec.flags, 0);
    ck_assert_int_eq(memcmp(rec.channel, "a", 1), 0);
    sse_bus_close(bus);
}
END_TEST

/* ------------------------------------------- resume by binary search */

/* What a linear reading of the ring says a resume from (ms, seq) must give:
 * the id of the first ordered record above it ("" if none: at the head),
 * and whether the oldest ordered record is above it (GAP). The reference
 * the search in sse_bus_read.c is checked against. */
static void expected_resume(sse_bus_t *bus, uint64_t ms, uint32_t seq,
                            char *first, int *gap)
{
    sse_bus_cursor_t c;
    sse_bus_record_t rec;
    int seen = 0;
    first[0] = '\0';
    *gap = 0;
    sse_bus_cursor_oldest(&c, bus);
    while (sse_bus_next(&c, NULL, frame, sizeof frame, &rec, 0)
           == SSE_BUS_OK) {
        uint64_t rms;
        uint32_t rseq;
        if (sse_bus_parse_ordered_id(rec.id, rec.id_len, &rms, &rseq)
            != SSE_BUS_OK)
            continue;
        int above = rms > ms || (rms == ms && rseq > seq);
        if (!seen++)
            *gap = above;
        if (above) {
            memcpy(first, rec.id, rec.id_len);
            first[rec.id_len] = '\0';
            return;
        }
    }
}

/* Resume from (ms, seq) and check the outcome and the next record against
 * expected_resume. */
static void check_resume(sse_bus_t *bus, uint64_t ms, uint32_t seq)
{
    char id[64], want[SSE_BUS_ID_MAX + 1];
    int gap;
    sse_bus_cursor_t c;
    int n = snprintf(id, sizeof id, "%llu-%u", (unsigned long long)ms, seq);
    expected_resume(bus, ms, seq, want, &gap);
    sse_bus_resume_t rc = sse_bus_cursor_resume(&c, bus, id, (size_t)n,
                                                NULL);
    ck_assert_msg(rc == (gap ? SSE_BUS_RESUME_GAP : SSE_BUS_RESUME_EXACT),
                  "resume from %s: outcome %d, want %s", id, rc,
                  gap ? "GAP" : "EXACT");
    if (want[0]) {
        /* bus-id records between the two ordered ones are skipped */
        const char *got = next_id(&c, NULL);
        ck_assert_msg(strcmp(got, want) == 0, "resume from %s: next %s, "
                      "want %s", id, got, want);
    }
    else {
        ck_assert_msg(next_rc(&c) == SSE_BUS_EMPTY, "resume from %s: not "
                      "at the head", id);
    }
}

#define T0 1700000000000ull

/* n ordered records T0+i/4 - i%4, a bus-id record after every 7th. */
static void fill_ordered(sse_bus_t *bus, unsigned from, unsigned n)
{
    char id[64];
    for (unsigned i = from; i < from + n; i++) {
        snprintf(id, sizeof id, "%llu-%u", (unsigned long long)(T0 + i / 4),
                 i % 4);
        pub_id(bus, "a", id, "0123456789abcdef0123456789abcdef");
        if (i % 7 == 6)
            th_pub(bus, "b", "a local event between two relayed ones");
    }
}

START_TEST(test_resume_search_at_start_middle_end_of_many_records)
{
    sse_bus_t *bus = th_new_bus("many.bus", 8u << 20, 0);
    const unsigned n = 20000;
    fill_ordered(bus, 0, n);
    check_resume(bus, T0 - 1, 7);           /* before everything: GAP */
    check_resume(bus, T0, 0);               /* the first */
    check_resume(bus, T0, 1);
    for (unsigned i = 1; i < n; i += 997) { /* all through the middle */
        check_resume(bus, T0 + i / 4, i % 4);
        check_resume(bus, T0 + i / 4, 99);  /* between two ids */
    }
    check_resume(bus, T0 + (n - 2) / 4, (n - 2) % 4); /* the last but one */
    check_resume(bus, T0 + (n - 1) / 4, (n - 1) % 4); /* the last: head */
    check_resume(bus, T0 + n, 0);           /* after everything: head */
    /* and then what is published next is what it reads */
    sse_bus_cursor_t c;
    ck_assert_int_eq(sse_bus_cursor_resume(&c, bus, "1700000005000-0", 15,
                                           NULL), SSE_BUS_RESUME_EXACT);
    ck_assert_int_eq(next_rc(&c), SSE_BUS_EMPTY);
    pub_id(bus, "a", "1700000005000-1", "x");
    ck_assert_str_eq(next_id(&c, NULL), "1700000005000-1");
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_resume_search_after_the_ring_wrapped)
{
    sse_bus_t *bus = th_new_bus("wrap.bus", 256u << 10, 0);
    sse_bus_info_t in;
    const unsigned n = 30000; /* ~100 bytes each: the ring wraps 10 times */
    fill_ordered(bus, 0, n);
    sse_bus_info(bus, &in);
    ck_assert_uint_gt(in.tail_pos, 8 * in.capacity);
    /* the oldest ordered record still held */
    char oldest[SSE_BUS_ID_MAX + 1];
    int gap;
    expected_resume(bus, 0, 0, oldest, &gap);
    ck_assert(gap);
    uint64_t oms;
    uint32_t oseq;
    ck_assert_int_eq(sse_bus_parse_ordered_id(oldest, strlen(oldest), &oms,
                                              &oseq), SSE_BUS_OK);
    unsigned first = (unsigned)((oms - T0) * 4 + oseq);
    check_resume(bus, T0 + 100, 0);          /* overwritten long ago */
    check_resume(bus, oms, oseq ? oseq - 1 : 0); /* just before the oldest */
    check_resume(bus, oms, oseq);            /* the oldest held */
    for (unsigned i = first + 1; i < n; i += 131)
        check_resume(bus, T0 + i / 4, i % 4);
    check_resume(bus, T0 + (n - 1) / 4, (n - 1) % 4);
    check_resume(bus, T0 + n, 0);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_resume_with_sparse_ordered_records_walks_and_is_exact)
{
    /* More bus-id records between two ordered ones than the search looks
     * past: the walk answers, with the same result. */
    sse_bus_t *bus = th_new_bus("sparse.bus", 1 << 20, 0);
    char id[32];
    for (unsigned i = 0; i < 20; i++) {
        snprintf(id, sizeof id, "%u-0", 100 + i);
        pub_id(bus, "a", id, "x");
        for (int k = 0; k < 100; k++)
            th_pub(bus, "b", "local");
    }
    for (unsigned i = 0; i < 20; i++)
        check_resume(bus, 100 + i, 0);
    check_resume(bus, 99, 0);
    check_resume(bus, 150, 0);
    sse_bus_close(bus);
}
END_TEST

/* ------------------------------------------------- relay status file */

static const char status_ok[] =
    "pid=77\nredis=127.0.0.1:6379\nstream_key=sse\nconnected=1\n"
    "cursor=1700000000000-3\nredis_last_id=1700000000250-0\nlag_ms=250\n"
    "events_relayed=12\nevents_skipped=1\ngaps=2\nreconnects=3\n"
    "id_repairs=4\ndown_since=0\nupdated=1000\nlag_events=\n"
    "stale_after_ms=7000\nmaster=10.0.0.5:6380\nmaster_changes=5\n"
    "a_field_of_a_newer_relay=x y z\n";

START_TEST(test_relay_status_parses_and_ages)
{
    sse_bus_relay_status_t st;
    sse_bus_error_t err;
    ck_assert_int_eq(sse_bus_relay_status_parse(status_ok, strlen(status_ok),
                                                1003, &st, &err),
                     SSE_BUS_OK);
    ck_assert_int_eq(st.pid, 77);
    ck_assert_int_eq(st.connected, 1);
    ck_assert_str_eq(st.cursor, "1700000000000-3");
    ck_assert_str_eq(st.master, "10.0.0.5:6380");
    ck_assert_int_eq(st.lag_events_known, 0);
    ck_assert_uint_eq(st.lag_ms, 250);
    ck_assert_uint_eq(st.gaps, 2);
    ck_assert_uint_eq(st.reconnects, 3);
    ck_assert_uint_eq(st.id_repairs, 4);
    ck_assert_uint_eq(st.master_changes, 5);
    ck_assert_int_eq(st.age_s, 3);
    ck_assert_int_eq(st.stale, 0);
    /* 8 s old with stale_after_ms=7000: stale; a clock that went back
     * gives age 0, not a negative one */
    ck_assert_int_eq(sse_bus_relay_status_parse(status_ok, strlen(status_ok),
                                                1008, &st, &err),
                     SSE_BUS_OK);
    ck_assert_int_eq(st.stale, 1);
    ck_assert_int_eq(sse_bus_relay_status_parse(status_ok, strlen(status_ok),
                                                900, &st, &err),
                     SSE_BUS_OK);
    ck_assert_int_eq(st.age_s, 0);
    ck_assert_int_eq(st.stale, 0);
}
END_TEST

START_TEST(test_relay_status_garbage_is_refused)
{
    static const struct {
        const char *from, *to;
    } bad[] = {
        {"gaps=2\n", "gaps=-2\n"},
        {"gaps=2\n", "gaps=2x\n"},
        {"gaps=2\n", "gaps=\n"},
        {"gaps=2\n", "gaps=99999999999999999999999\n"},
        {"gaps=2\n", "gaps=18446744073709551616\n"},
        {"connected=1\n", "connected=2\n"},
        {"pid=77\n", "pid=0\n"},
        {"cursor=1700000000000-3\n", "cursor=<script>\n"},
        {"cursor=1700000000000-3\n", "cursor=1-99999999999\n"},
        {"stream_key=sse\n", "stream_key=s\x01\n"},
        {"stream_key=sse\n", "stream_key=s\xc3\xa9\n"},
        {"stream_key=sse\n", "Stream_Key=sse\n"},
        {"stream_key=sse\n", "no equals sign\n"},
        {"stream_key=sse\n", "=sse\n"},
        {"updated=1000\n", ""},                   /* required */
        {"pid=77\n", ""},
        {"connected=1\n", ""},
        {"a_field_of_a_newer_relay=x y z\n", "last line unterminated"},
    };
    char buf[8192];
    sse_bus_relay_status_t st;
    sse_bus_error_t err;
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *at = strstr(status_ok, bad[i].from);
        ck_assert_ptr_nonnull(at);
        int n = snprintf(buf, sizeof buf, "%.*s%s%s",
                         (int)(at - status_ok), status_ok, bad[i].to,
                         at + strlen(bad[i].from));
        memset(&err, 0, sizeof err);
        ck_assert_msg(sse_bus_relay_status_parse(buf, (size_t)n, 1000, &st,
                                                 &err) == SSE_BUS_EFORMAT,
                      "accepted: %s -> %s", bad[i].from, bad[i].to);
        ck_assert_msg(err.msg[0] != '\0', "no reason given");
    }
    /* longer than the bound */
    memset(buf, 'a', sizeof buf);
    ck_assert_int_eq(sse_bus_relay_status_parse(buf, sizeof buf, 1000, &st,
                                                &err), SSE_BUS_EFORMAT);
    /* NUL inside */
    memcpy(buf, status_ok, sizeof status_ok);
    buf[3] = '\0';
    ck_assert_int_eq(sse_bus_relay_status_parse(buf, sizeof status_ok - 1,
                                                1000, &st, &err),
                     SSE_BUS_EFORMAT);
}
END_TEST

START_TEST(test_relay_status_file_is_read_with_care)
{
    sse_bus_relay_status_t st;
    sse_bus_error_t err;
    char path[4200], link[4200];
    const char *bus = th_path("r.bus");
    snprintf(path, sizeof path, "%s.relay-status", bus);
    ck_assert_int_eq(sse_bus_relay_status_read(bus, &st, &err),
                     SSE_BUS_ENOENT);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(status_ok, f);
    fclose(f);
    ck_assert_int_eq(sse_bus_relay_status_read(bus, &st, &err), SSE_BUS_OK);
    ck_assert_uint_eq(st.gaps, 2);
    /* a symlink is not followed */
    snprintf(link, sizeof link, "%s.relay-status", th_path("l.bus"));
    ck_assert_int_eq(symlink(path, link), 0);
    ck_assert_int_ne(sse_bus_relay_status_read(th_path("l.bus"), &st, &err),
                     SSE_BUS_OK);
    /* a FIFO neither blocks the reader nor passes */
    snprintf(link, sizeof link, "%s.relay-status", th_path("p.bus"));
    ck_assert_int_eq(mkfifo(link, 0600), 0);
    ck_assert_int_eq(sse_bus_relay_status_read(th_path("p.bus"), &st, &err),
                     SSE_BUS_EFORMAT);
    /* nor does a file over the bound */
    f = fopen(path, "w");
    for (int i = 0; i < 500; i++)
        fputs(status_ok, f);
    fclose(f);
    ck_assert_int_eq(sse_bus_relay_status_read(bus, &st, &err),
                     SSE_BUS_EFORMAT);
}
END_TEST

TCase *ordered_tcase(void)
{
    TCase *tc = tcase_create("ordered");
    tcase_add_checked_fixture(tc, th_setup, th_teardown);
    tcase_add_test(tc, test_ordered_id_grammar);
    tcase_add_test(tc, test_resume_from_ordered_id_compares_numerically);
    tcase_add_test(tc, test_resume_ahead_of_a_lagging_bus_skips_what_arrives_late);
    tcase_add_test(tc, test_last_ordered_id_is_the_greatest_in_the_ring);
    tcase_add_test(tc, test_broadcast_record_passes_every_filter);
    tcase_add_test(tc, test_resume_search_at_start_middle_end_of_many_records);
    tcase_add_test(tc, test_resume_search_after_the_ring_wrapped);
    tcase_add_test(tc,
                   test_resume_with_sparse_ordered_records_walks_and_is_exact);
    tcase_add_test(tc, test_relay_status_parses_and_ages);
    tcase_add_test(tc, test_relay_status_garbage_is_refused);
    tcase_add_test(tc, test_relay_status_file_is_read_with_care);
    return tc;
}

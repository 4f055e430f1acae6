/*
 * test_ordered.c - ordered ids (MS-SEQ, the Redis stream ids sse-relay
 * carries) and broadcast records: ids parse by the documented grammar,
 * resuming compares numerically (exact, between ids, ahead of a lagging
 * bus, before the oldest = GAP), the floor keeps late-appended older
 * records out, the newest ordered id is found, and a broadcast record passes
 * every channel filter.
 */
#include <string.h>

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
    sse_bus_cursor_t c;
    sse_bus_record_t rec;
    sse_bus_error_t err;
    sse_bus_event_t ev = {.channel = "sse.relay", .channel_len = 9,
                          .event = "sse-reset", .event_len = 9,
                          .id = "5-0", .id_len = 3, .data = "{}",
                          .data_len = 2, .flags = SSE_BUS_EVF_BROADCAST};
    sse_bus_filter_init(&f);
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

TCase *ordered_tcase(void)
{
    TCase *tc = tcase_create("ordered");
    tcase_add_checked_fixture(tc, th_setup, th_teardown);
    tcase_add_test(tc, test_ordered_id_grammar);
    tcase_add_test(tc, test_resume_from_ordered_id_compares_numerically);
    tcase_add_test(tc, test_resume_ahead_of_a_lagging_bus_skips_what_arrives_late);
    tcase_add_test(tc, test_last_ordered_id_is_the_greatest_in_the_ring);
    tcase_add_test(tc, test_broadcast_record_passes_every_filter);
    return tc;
}

/*
 * test_format.c - framing and ids: what a publisher puts in is exactly what
 * an EventSource gets out, no byte of data can forge a field, and bad
 * channel/event/id values are refused before anything reaches the ring.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_helpers.h"

/* Publish data on "c" and parse the frame read back. */
static void roundtrip(const char *data, size_t len, th_sse_t *out)
{
    sse_bus_t *bus = th_new_bus("rt.bus", 4u << 20, 256u * 1024u);
    sse_bus_cursor_t c;
    sse_bus_cursor_oldest(&c, bus);
    th_pub_ev(bus, "c", NULL, NULL, data, len);
    sse_bus_record_t rec;
    th_next(&c, NULL, &rec);
    const char *why;
    int rc = th_sse_parse(rec.frame, rec.frame_len, out, &why);
    ck_assert_msg(rc == 0, "frame malformed: %s: [%.*s]", why,
                  (int)(rec.frame_len > 200 ? 200 : rec.frame_len), rec.frame);
    sse_bus_close(bus);
}

static void assert_data_roundtrip(const char *in, size_t in_len,
                                  const char *want, int want_lines)
{
    th_sse_t e;
    roundtrip(in, in_len, &e);
    ck_assert_uint_eq(e.data_len, strlen(want));
    ck_assert_msg(memcmp(e.data, want, e.data_len) == 0,
                  "data differs: got [%s] want [%s]", e.data, want);
    ck_assert_int_eq(e.data_lines, want_lines);
    ck_assert_int_eq(e.comments, 0);
    th_sse_free(&e);
}

START_TEST(test_roundtrip_frame_is_exact)
{
    sse_bus_t *bus = th_new_bus("a.bus", 1u << 20, 0);
    sse_bus_info_t info;
    sse_bus_info(bus, &info);
    sse_bus_cursor_t c;
    sse_bus_cursor_oldest(&c, bus);
    uint64_t seq = th_pub(bus, "news", "hello");
    sse_bus_record_t rec;
    th_next(&c, NULL, &rec);
    char id[SSE_BUS_NATIVE_ID_MAX + 1], want[128];
    sse_bus_format_id(info.epoch, seq, id);
    snprintf(want, sizeof want, "id: %s\ndata: hello\n\n", id);
    ck_assert_uint_eq(rec.frame_len, strlen(want));
    ck_assert_mem_eq(rec.frame, want, rec.frame_len);
    ck_assert_uint_eq(rec.seq, seq);
    ck_assert_uint_eq(rec.channel_len, 4);
    ck_assert_mem_eq(rec.channel, "news", 4);
    ck_assert_uint_eq(rec.id_len, strlen(id));
    ck_assert_mem_eq(rec.id, id, rec.id_len);
    ck_assert_uint_gt(rec.time_ns, 0);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_roundtrip_event_type_and_custom_id)
{
    sse_bus_t *bus = th_new_bus("a.bus", 1u << 20, 0);
    sse_bus_cursor_t c;
    sse_bus_cursor_oldest(&c, bus);
    th_pub_ev(bus, "news", "update", "redis-1700-0", "x", 1);
    sse_bus_record_t rec;
    th_next(&c, NULL, &rec);
    const char *want = "id: redis-1700-0\nevent: update\ndata: x\n\n";
    ck_assert_uint_eq(rec.frame_len, strlen(want));
    ck_assert_mem_eq(rec.frame, want, rec.frame_len);
    ck_assert_uint_eq(rec.id_len, strlen("redis-1700-0"));
    ck_assert_mem_eq(rec.id, "redis-1700-0", rec.id_len);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_data_lf_splits_lines)
{ assert_data_roundtrip("a\nb", 3, "a\nb", 2); }
END_TEST

START_TEST(test_data_cr_splits_lines)
{ assert_data_roundtrip("a\rb", 3, "a\nb", 2); }
END_TEST

START_TEST(test_data_crlf_is_one_line_break)
{ assert_data_roundtrip("a\r\nb", 4, "a\nb", 2); }
END_TEST

START_TEST(test_data_mixed_line_breaks)
{ assert_data_roundtrip("a\rb\nc\r\nd\n\re", 11, "a\nb\nc\nd\n\ne", 6); }
END_TEST

START_TEST(test_data_trailing_newline_is_kept)
{ assert_data_roundtrip("a\n", 2, "a\n", 2); }
END_TEST

START_TEST(test_data_empty_is_one_empty_data_line)
{ assert_data_roundtrip("", 0, "", 1); }
END_TEST

START_TEST(test_data_empty_lines_inside_are_kept)
{ assert_data_roundtrip("a\n\n\nb", 5, "a\n\n\nb", 4); }
END_TEST

START_TEST(test_data_leading_space_survives)
{ assert_data_roundtrip(" x\n  y", 6, " x\n  y", 2); }
END_TEST

START_TEST(test_data_cannot_inject_fields)
{
    const char *evil = "x\nid: 1\nevent: evil\n: comment\n\ndata: y\rretry: 1";
    assert_data_roundtrip(evil, strlen(evil),
                          "x\nid: 1\nevent: evil\n: comment\n\ndata: y\nretry: 1",
                          7);
}
END_TEST

START_TEST(test_data_utf8_is_intact)
{
    const char *u = "h\xc3\xa9llo \xe2\x86\x92 \xe2\x9c\x93 \xf0\x9f\x98\x80";
    assert_data_roundtrip(u, strlen(u), u, 1);
}
END_TEST

START_TEST(test_data_64k_is_intact)
{
    size_t n = 64u * 1024u;
    char *d = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        d[i] = (char)('A' + i % 57 % 26);
    d[n] = 0;
    d[1000] = '\n'; /* two lines */
    assert_data_roundtrip(d, n, d, 2);
    free(d);
}
END_TEST

/* An invalid event is refused by check and by publish with `code`, with a
 * message, and nothing reaches the ring. */
static void assert_refused(const sse_bus_event_t *ev, int code)
{
    sse_bus_t *bus = th_new_bus("r.bus", 1u << 20, 0);
    sse_bus_error_t err;
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(sse_bus_event_check(bus, ev, &err), code);
    ck_assert_msg(err.msg[0] != 0, "no message for code %d", code);
    memset(&err, 0, sizeof err);
    uint64_t seq = 0;
    ck_assert_int_eq(sse_bus_publish(bus, ev, &seq, &err), code);
    ck_assert_msg(err.msg[0] != 0, "publish: no message for code %d", code);
    sse_bus_info_t info;
    sse_bus_info(bus, &info);
    ck_assert_uint_eq(info.head_seq, 0);
    ck_assert_uint_eq(info.head_pos, 0);
    sse_bus_close(bus);
}

#define EV(ch, chl, evt, evl, idp, idl) \
    ((sse_bus_event_t){.channel = ch, .channel_len = chl, .event = evt, \
                       .event_len = evl, .id = idp, .id_len = idl, \
                       .data = "d", .data_len = 1})

START_TEST(test_channel_with_cr_lf_nul_refused)
{
    sse_bus_event_t a = EV("a\rb", 3, NULL, 0, NULL, 0);
    sse_bus_event_t b = EV("a\nb", 3, NULL, 0, NULL, 0);
    sse_bus_event_t c = EV("a\0b", 3, NULL, 0, NULL, 0);
    assert_refused(&a, SSE_BUS_ECHANNEL);
    th_teardown(); th_setup();
    assert_refused(&b, SSE_BUS_ECHANNEL);
    th_teardown(); th_setup();
    assert_refused(&c, SSE_BUS_ECHANNEL);
}
END_TEST

START_TEST(test_channel_empty_refused)
{
    sse_bus_event_t a = EV("", 0, NULL, 0, NULL, 0);
    assert_refused(&a, SSE_BUS_ECHANNEL);
}
END_TEST

START_TEST(test_channel_too_long_refused)
{
    char name[SSE_BUS_CHANNEL_MAX + 1];
    memset(name, 'c', sizeof name);
    sse_bus_event_t a = EV(name, sizeof name, NULL, 0, NULL, 0);
    assert_refused(&a, SSE_BUS_ECHANNEL);
}
END_TEST

START_TEST(test_channel_of_max_length_accepted)
{
    char name[SSE_BUS_CHANNEL_MAX];
    memset(name, 'c', sizeof name);
    sse_bus_t *bus = th_new_bus("a.bus", 1u << 20, 0);
    sse_bus_cursor_t c;
    sse_bus_cursor_oldest(&c, bus);
    sse_bus_event_t ev = EV(name, sizeof name, NULL, 0, NULL, 0);
    sse_bus_error_t err;
    ck_assert_int_eq(sse_bus_publish(bus, &ev, NULL, &err), SSE_BUS_OK);
    sse_bus_record_t rec;
    th_next(&c, NULL, &rec);
    ck_assert_uint_eq(rec.channel_len, SSE_BUS_CHANNEL_MAX);
    ck_assert_mem_eq(rec.channel, name, sizeof name);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_event_with_cr_lf_nul_refused)
{
    sse_bus_event_t a = EV("c", 1, "a\rb", 3, NULL, 0);
    sse_bus_event_t b = EV("c", 1, "a\nb", 3, NULL, 0);
    sse_bus_event_t c = EV("c", 1, "a\0b", 3, NULL, 0);
    assert_refused(&a, SSE_BUS_EEVENT);
    th_teardown(); th_setup();
    assert_refused(&b, SSE_BUS_EEVENT);
    th_teardown(); th_setup();
    assert_refused(&c, SSE_BUS_EEVENT);
}
END_TEST

START_TEST(test_event_too_long_refused)
{
    char t[SSE_BUS_EVENT_MAX + 1];
    memset(t, 'e', sizeof t);
    sse_bus_event_t a = EV("c", 1, t, sizeof t, NULL, 0);
    assert_refused(&a, SSE_BUS_EEVENT);
}
END_TEST

START_TEST(test_id_with_cr_lf_nul_refused)
{
    sse_bus_event_t a = EV("c", 1, NULL, 0, "a\rb", 3);
    sse_bus_event_t b = EV("c", 1, NULL, 0, "a\nb", 3);
    sse_bus_event_t c = EV("c", 1, NULL, 0, "a\0b", 3);
    assert_refused(&a, SSE_BUS_EID);
    th_teardown(); th_setup();
    assert_refused(&b, SSE_BUS_EID);
    th_teardown(); th_setup();
    assert_refused(&c, SSE_BUS_EID);
}
END_TEST

START_TEST(test_id_too_long_refused)
{
    char t[SSE_BUS_ID_MAX + 1];
    memset(t, 'i', sizeof t);
    sse_bus_event_t a = EV("c", 1, NULL, 0, t, sizeof t);
    assert_refused(&a, SSE_BUS_EID);
}
END_TEST

START_TEST(test_oversize_event_refused_with_etoobig)
{
    sse_bus_t *bus = th_new_bus("a.bus", 1u << 20, 4096);
    sse_bus_info_t info;
    sse_bus_info(bus, &info);
    size_t n = info.max_record; /* framing overhead makes it too big */
    char *d = malloc(n);
    memset(d, 'x', n);
    sse_bus_event_t ev = {.channel = "c", .channel_len = 1, .data = d,
                          .data_len = n};
    sse_bus_error_t err;
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(sse_bus_publish(bus, &ev, NULL, &err), SSE_BUS_ETOOBIG);
    ck_assert(err.msg[0] != 0);
    ev.data_len = 100;
    ck_assert_int_eq(sse_bus_publish(bus, &ev, NULL, &err), SSE_BUS_OK);
    sse_bus_info(bus, &info);
    ck_assert_uint_eq(info.head_seq, 1);
    free(d);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_batch_with_one_bad_event_publishes_none)
{
    sse_bus_t *bus = th_new_bus("a.bus", 1u << 20, 0);
    sse_bus_event_t evs[3] = {EV("c", 1, NULL, 0, NULL, 0),
                              EV("c", 1, NULL, 0, NULL, 0),
                              EV("c\n", 2, NULL, 0, NULL, 0)};
    sse_bus_error_t err;
    size_t bad = 99;
    uint64_t first = 0;
    ck_assert_int_eq(sse_bus_publish_batch(bus, evs, 3, &first, &bad, &err),
                     SSE_BUS_ECHANNEL);
    ck_assert_uint_eq(bad, 2);
    sse_bus_info_t info;
    sse_bus_info(bus, &info);
    ck_assert_uint_eq(info.head_seq, 0);
    ck_assert_int_eq(sse_bus_publish_batch(bus, evs, 2, &first, &bad, &err),
                     SSE_BUS_OK);
    ck_assert_uint_eq(first, 1);
    sse_bus_info(bus, &info);
    ck_assert_uint_eq(info.head_seq, 2);
    sse_bus_close(bus);
}
END_TEST

START_TEST(test_publish_on_readonly_bus_refused)
{
    const char *p = th_path("a.bus");
    th_create(p, 1u << 20, 0);
    sse_bus_t *bus = th_open(p, SSE_BUS_RDONLY);
    sse_bus_event_t ev = EV("c", 1, NULL, 0, NULL, 0);
    sse_bus_error_t err;
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(sse_bus_publish(bus, &ev, NULL, &err), SSE_BUS_ERDONLY);
    sse_bus_close(bus);
}
END_TEST

/* ------------------------------------------------------------------- ids */

START_TEST(test_id_format_parse_roundtrip)
{
    static const struct { uint32_t e; uint64_t s; const char *txt; } v[] = {
        {0x9f3ac21bu, 1042, "9f3ac21b:1042"},
        {1, 0, "00000001:0"},
        {0xffffffffu, UINT64_MAX, "ffffffff:18446744073709551615"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char buf[SSE_BUS_NATIVE_ID_MAX + 1];
        size_t n = sse_bus_format_id(v[i].e, v[i].s, buf);
        ck_assert_uint_eq(n, strlen(v[i].txt));
        ck_assert_str_eq(buf, v[i].txt);
        uint32_t e = 0;
        uint64_t s = 1;
        ck_assert_int_eq(sse_bus_parse_id(buf, n, &e, &s), SSE_BUS_OK);
        ck_assert_uint_eq(e, v[i].e);
        ck_assert_uint_eq(s, v[i].s);
    }
}
END_TEST

START_TEST(test_id_parse_rejects_malformed)
{
    static const char *bad[] = {
        "",                                 /* empty */
        "9f3ac21g:1",                       /* non-hex epoch */
        "9f3ac21b:-1",                      /* negative */
        "9f3ac21b:18446744073709551616",    /* overflow */
        "9f3ac21b:1x",                      /* trailing junk */
        "9f3ac21b:1 ",                      /* trailing space */
        "9f3ac21b:",                        /* no sequence */
        "9f3ac21b1042",                     /* no colon */
        "9f3ac:1042",                       /* short epoch */
        "-f3ac21b:1",                       /* sign in epoch */
        " 9f3ac21b:1",                      /* leading space */
        "9f3ac21b:+1",                      /* plus sign */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint32_t e;
        uint64_t s;
        ck_assert_msg(sse_bus_parse_id(bad[i], strlen(bad[i]), &e, &s) ==
                          SSE_BUS_EID, "accepted malformed id '%s'", bad[i]);
    }
}
END_TEST

START_TEST(test_id_parse_respects_length)
{
    uint32_t e;
    uint64_t s;
    /* the length, not a NUL, ends the id */
    ck_assert_int_eq(sse_bus_parse_id("0000000a:12junk", 11, &e, &s),
                     SSE_BUS_OK);
    ck_assert_uint_eq(e, 10);
    ck_assert_uint_eq(s, 12);
}
END_TEST

TCase *format_tcase(void)
{
    TCase *tc = tcase_create("format");
    tcase_add_checked_fixture(tc, th_setup, th_teardown);
    tcase_add_test(tc, test_roundtrip_frame_is_exact);
    tcase_add_test(tc, test_roundtrip_event_type_and_custom_id);
    tcase_add_test(tc, test_data_lf_splits_lines);
    tcase_add_test(tc, test_data_cr_splits_lines);
    tcase_add_test(tc, test_data_crlf_is_one_line_break);
    tcase_add_test(tc, test_data_mixed_line_breaks);
    tcase_add_test(tc, test_data_trailing_newline_is_kept);
    tcase_add_test(tc, test_data_empty_is_one_empty_data_line);
    tcase_add_test(tc, test_data_empty_lines_inside_are_kept);
    tcase_add_test(tc, test_data_leading_space_survives);
    tcase_add_test(tc, test_data_cannot_inject_fields);
    tcase_add_test(tc, test_data_utf8_is_intact);
    tcase_add_test(tc, test_data_64k_is_intact);
    tcase_add_test(tc, test_channel_with_cr_lf_nul_refused);
    tcase_add_test(tc, test_channel_empty_refused);
    tcase_add_test(tc, test_channel_too_long_refused);
    tcase_add_test(tc, test_channel_of_max_length_accepted);
    tcase_add_test(tc, test_event_with_cr_lf_nul_refused);
    tcase_add_test(tc, test_event_too_long_refused);
    tcase_add_test(tc, test_id_with_cr_lf_nul_refused);
    tcase_add_test(tc, test_id_too_long_refused);
    tcase_add_test(tc, test_oversize_event_refused_with_etoobig);
    tcase_add_test(tc, test_batch_with_one_bad_event_publishes_none);
    tcase_add_test(tc, test_publish_on_readonly_bus_refused);
    tcase_add_test(tc, test_id_format_parse_roundtrip);
    tcase_add_test(tc, test_id_parse_rejects_malformed);
    tcase_add_test(tc, test_id_parse_respects_length);
    return tc;
}

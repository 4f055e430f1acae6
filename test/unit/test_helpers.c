/*
 * test_helpers.c - fixtures shared by the bus unit tests: a temporary
 * directory per test, bus create/open/publish shortcuts that assert success,
 * an EventSource-rules SSE frame parser, and self-checking payloads.
 */
#define _GNU_SOURCE
#include "test_helpers.h"

#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

char th_dir[256];

static void th_cleanup_at_exit(void)
{
    th_teardown();
}

/* A failed ck_assert ends the forked test process with exit(), skipping the
 * checked teardown; the atexit hook still removes the directory. */
void th_setup(void)
{
    static int hooked;
    if (!hooked && atexit(th_cleanup_at_exit) == 0)
        hooked = 1;
    const char *base = getenv("TMPDIR");
    snprintf(th_dir, sizeof th_dir, "%s/sse-bus-test.XXXXXX",
             base && *base ? base : "/tmp");
    ck_assert_msg(mkdtemp(th_dir) != NULL, "mkdtemp %s failed", th_dir);
}

static int rm_one(const char *p, const struct stat *sb, int flag,
                  struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    remove(p);
    return 0;
}

void th_teardown(void)
{
    if (th_dir[0] && !getenv("SSE_TEST_KEEP"))
        nftw(th_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    th_dir[0] = 0;
}

const char *th_path(const char *name)
{
    static char bufs[4][512];
    static int i;
    char *b = bufs[i++ & 3];
    snprintf(b, 512, "%s/%s", th_dir, name);
    return b;
}

void th_create(const char *path, uint64_t capacity, uint32_t max_record)
{
    sse_bus_create_opts_t o;
    sse_bus_error_t err;
    memset(&err, 0, sizeof err);
    sse_bus_create_opts_init(&o);
    o.capacity = capacity;
    o.max_record = max_record;
    int rc = sse_bus_create(path, &o, &err);
    ck_assert_msg(rc == SSE_BUS_OK, "create %s: rc %d: %s", path, rc, err.msg);
}

sse_bus_t *th_open(const char *path, int mode)
{
    sse_bus_t *bus = NULL;
    sse_bus_error_t err;
    memset(&err, 0, sizeof err);
    int rc = sse_bus_open(path, mode, &bus, &err);
    ck_assert_msg(rc == SSE_BUS_OK, "open %s: rc %d: %s", path, rc, err.msg);
    ck_assert_ptr_nonnull(bus);
    return bus;
}

sse_bus_t *th_new_bus(const char *name, uint64_t capacity, uint32_t max_record)
{
    const char *p = th_path(name);
    th_create(p, capacity, max_record);
    return th_open(p, SSE_BUS_RDWR);
}

uint64_t th_pub_ev(sse_bus_t *bus, const char *channel, const char *event,
                   const char *id, const char *data, size_t data_len)
{
    sse_bus_event_t ev = {
        .channel = channel, .channel_len = strlen(channel),
        .event = event, .event_len = event ? strlen(event) : 0,
        .id = id, .id_len = id ? strlen(id) : 0,
        .data = data, .data_len = data_len};
    sse_bus_error_t err;
    memset(&err, 0, sizeof err);
    uint64_t seq = 0;
    int rc = sse_bus_publish(bus, &ev, &seq, &err);
    ck_assert_msg(rc == SSE_BUS_OK, "publish on %s: rc %d: %s", channel, rc,
                  err.msg);
    ck_assert_uint_gt(seq, 0);
    return seq;
}

uint64_t th_pub(sse_bus_t *bus, const char *channel, const char *data)
{
    return th_pub_ev(bus, channel, NULL, NULL, data, strlen(data));
}

/* EventSource line processing (WHATWG HTML, "Interpreting an event
 * stream"), restricted to one event and to the LF line ending the bus is
 * supposed to emit. */
int th_sse_parse(const char *frame, size_t len, th_sse_t *out,
                 const char **why)
{
    memset(out, 0, sizeof *out);
    *why = NULL;
    out->data = malloc(len + 1);
    if (!out->data) {
        *why = "out of memory";
        return -1;
    }
    if (memchr(frame, '\r', len)) { *why = "CR in frame"; return -1; }
    if (memchr(frame, '\0', len)) { *why = "NUL in frame"; return -1; }
    if (len < 2 || frame[len - 1] != '\n' || frame[len - 2] != '\n') {
        *why = "frame does not end with a blank line";
        return -1;
    }
    size_t p = 0;
    while (p < len) {
        const char *nl = memchr(frame + p, '\n', len - p);
        size_t ll = (size_t)(nl - (frame + p));
        const char *line = frame + p;
        p += ll + 1;
        if (ll == 0) {
            if (p != len) { *why = "bytes after the blank line"; return -1; }
            break;
        }
        if (line[0] == ':') { out->comments++; continue; }
        const char *colon = memchr(line, ':', ll);
        size_t fl = colon ? (size_t)(colon - line) : ll;
        const char *val = colon ? colon + 1 : line + ll;
        size_t vl = colon ? ll - fl - 1 : 0;
        if (vl && val[0] == ' ') { val++; vl--; }
        if (fl == 4 && memcmp(line, "data", 4) == 0) {
            if (out->data_lines++)
                out->data[out->data_len++] = '\n';
            memcpy(out->data + out->data_len, val, vl);
            out->data_len += vl;
        } else if (fl == 2 && memcmp(line, "id", 2) == 0) {
            if (vl >= sizeof out->id) { *why = "id too long"; return -1; }
            if (out->has_id) { *why = "two id lines"; return -1; }
            memcpy(out->id, val, vl);
            out->id[vl] = 0;
            out->has_id = 1;
        } else if (fl == 5 && memcmp(line, "event", 5) == 0) {
            if (vl >= sizeof out->event) { *why = "event too long"; return -1; }
            if (out->has_event) { *why = "two event lines"; return -1; }
            memcpy(out->event, val, vl);
            out->event[vl] = 0;
            out->has_event = 1;
        } else {
            *why = "unexpected field (injection?)";
            return -1;
        }
    }
    out->data[out->data_len] = 0;
    return 0;
}

void th_sse_free(th_sse_t *e)
{
    free(e->data);
    e->data = NULL;
}

static char th_buf[1 << 21];

int th_next(sse_bus_cursor_t *c, const sse_bus_filter_t *f,
            sse_bus_record_t *rec)
{
    int rc = sse_bus_next(c, f, th_buf, sizeof th_buf, rec, 0);
    ck_assert_msg(rc == SSE_BUS_OK, "sse_bus_next: expected OK, got %d", rc);
    return rc;
}

int th_next_any(sse_bus_cursor_t *c, const sse_bus_filter_t *f,
                sse_bus_record_t *rec, uint64_t *lost)
{
    for (int i = 0; i < 1000; i++) {
        int rc = sse_bus_next(c, f, th_buf, sizeof th_buf, rec, 0);
        if (rc == SSE_BUS_LAPPED) {
            if (lost)
                *lost += c->lost;
            continue;
        }
        ck_assert_msg(rc == SSE_BUS_OK || rc == SSE_BUS_EMPTY,
                      "sse_bus_next: unexpected %d", rc);
        return rc;
    }
    ck_abort_msg("sse_bus_next: LAPPED 1000 times in a row");
    return -1;
}

static uint32_t fnv(const char *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 16777619u;
    }
    return h;
}

static char filler(unsigned pub, uint64_t counter, size_t i)
{
    return (char)('a' + (pub * 7u + counter * 13u + i) % 26u);
}

size_t th_payload(char *buf, size_t size, unsigned pub, uint64_t counter)
{
    char head[96];
    int hl = snprintf(head, sizeof head, "P%u C%" PRIu64 " L%zu X", pub,
                      counter, size);
    size_t body_off = (size_t)hl + 9; /* 8 hex + space */
    if (size < body_off + 1)
        return 0;
    for (size_t i = body_off; i < size; i++)
        buf[i] = filler(pub, counter, i);
    uint32_t sum = fnv(buf + body_off, size - body_off);
    memcpy(buf, head, (size_t)hl);
    snprintf(head, sizeof head, "%08" PRIx32 " ", sum);
    memcpy(buf + hl, head, 9);
    return size;
}

int th_payload_check(const char *data, size_t len, unsigned *pub,
                     uint64_t *counter)
{
    unsigned p;
    uint64_t c;
    size_t l;
    uint32_t sum;
    int n = 0;
    char head[96];
    size_t hl = len < sizeof head - 1 ? len : sizeof head - 1;
    memcpy(head, data, hl);
    head[hl] = 0;
    if (sscanf(head, "P%u C%" SCNu64 " L%zu X%8" SCNx32 " %n", &p, &c, &l,
               &sum, &n) != 4 || n == 0)
        return -1;
    if (l != len)
        return -1;
    size_t body_off = (size_t)n;
    if (fnv(data + body_off, len - body_off) != sum)
        return -1;
    for (size_t i = body_off; i < len; i++)
        if (data[i] != filler(p, c, i))
            return -1;
    *pub = p;
    *counter = c;
    return 0;
}

uint64_t th_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

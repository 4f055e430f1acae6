/*
 * test_helpers.h - shared fixtures for the bus unit tests (Check).
 *
 * Every test runs in its own temporary directory (th_setup/th_teardown,
 * installed as a checked fixture by each TCase), so tests never see each
 * other's bus files. Frames are checked with a small SSE parser written to
 * the WHATWG EventSource rules, so the tests assert what a browser would
 * receive rather than one exact spelling (e.g. "data:" vs "data: " for an
 * empty line). Self-checking payloads (publisher, counter, checksum) let the
 * multi-process tests prove a frame was not torn.
 */
#ifndef TEST_HELPERS_H
#define TEST_HELPERS_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>

#include "sse_bus.h"

extern char th_dir[256];

void th_setup(void);
void th_teardown(void);

/* th_dir + "/" + name, in a static rotating buffer. */
const char *th_path(const char *name);

/* Create a bus (asserts success) and open it. */
void th_create(const char *path, uint64_t capacity, uint32_t max_record);
sse_bus_t *th_open(const char *path, int mode);
sse_bus_t *th_new_bus(const char *name, uint64_t capacity, uint32_t max_record);

/* Publish (asserts success); returns the sequence. */
uint64_t th_pub(sse_bus_t *bus, const char *channel, const char *data);
uint64_t th_pub_ev(sse_bus_t *bus, const char *channel, const char *event,
                   const char *id, const char *data, size_t data_len);

/* An event as an EventSource would dispatch it. */
typedef struct th_sse {
    char id[256];
    int has_id;
    char event[256];
    int has_event;
    char *data; /* malloc'd; joined with "\n" */
    size_t data_len;
    int data_lines;
    int comments;
} th_sse_t;

/* Parse exactly one event frame (must end with a blank line, contain no CR
 * and no NUL, and have nothing after the blank line). 0 ok, -1 malformed
 * (why is set). */
int th_sse_parse(const char *frame, size_t len, th_sse_t *out,
                 const char **why);
void th_sse_free(th_sse_t *e);

/* Read the next record (asserts OK) into a static buffer. */
int th_next(sse_bus_cursor_t *c, const sse_bus_filter_t *f,
            sse_bus_record_t *rec);
/* Read the next record skipping LAPPED; counts lost in *lost. Returns the
 * sse_bus_next code (OK or EMPTY). */
int th_next_any(sse_bus_cursor_t *c, const sse_bus_filter_t *f,
                sse_bus_record_t *rec, uint64_t *lost);

/* Self-checking payload "P<pub> C<counter> L<len> X<sum> <filler>" of
 * exactly size bytes (size >= 64). */
size_t th_payload(char *buf, size_t size, unsigned pub, uint64_t counter);
/* 0 if data is an intact payload (fills pub/counter), -1 otherwise. */
int th_payload_check(const char *data, size_t len, unsigned *pub,
                     uint64_t *counter);

/* Monotonic time in ns. */
uint64_t th_now_ns(void);

/* TCases, one per file. */
TCase *format_tcase(void);
TCase *publish_tcase(void);
TCase *read_tcase(void);
TCase *guard_tcase(void);
TCase *procs_tcase(void);
TCase *ordered_tcase(void);

#endif

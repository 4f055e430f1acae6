/*
 * sse_stream.h - one SSE stream: what it sends, independent of how the bytes
 * reach the client.
 *
 * A stream owns a bus cursor, a channel filter (compact: its names live in
 * memory the caller provides, the request pool or the detached record) and
 * one fixed copy buffer
 * (an anonymous mmap of SSEBufferSize bytes, unmapped when the stream is
 * destroyed so the memory really goes back to the system). Each "pass"
 * copies as many pending frames (plus any comment lines: missed, skipped,
 * heartbeat, retry) as fit into the buffer and hands the whole buffer to the
 * sink in ONE call; the sink writes it and flushes once. The sink is an
 * interface so that a later detached (epoll) sink can replace the threaded
 * brigade sink (sse_handler.c) without touching this logic.
 *
 * Invariants: the buffer is never grown; nothing is allocated per event; a
 * frame is copied (and validated by the bus) before it is sent, never
 * after; counters in sse_stats are only ever incremented.
 * Callers: sse_handler.c (threaded driver); later the detached loop.
 */
#ifndef SSE_STREAM_H
#define SSE_STREAM_H

#include <stdint.h>

#include "apr.h"
#include "apr_errno.h"
#include "apr_time.h"

#include "sse_bus.h"
#include "sse_config.h"

/* Statistics (SSE_STAT_ADD/SUB, the flush histogram) live in shared
 * memory, one slot per child: see sse_stats.h. */
#include "sse_stats.h"

/* Why a stream ended. */
typedef enum {
    SSE_END_NONE = 0,
    SSE_END_CLIENT_CLOSED,
    SSE_END_CLIENT_RESET,
    SSE_END_WRITE_TIMEOUT,
    SSE_END_SLOW_CLOSE,
    SSE_END_SERVER_STOPPING,
    SSE_END_BUS_REPLACED,
    SSE_END_ERROR
} sse_end_t;

const char *sse_end_reason_str(sse_end_t why);

/* Where the bytes go. write() must send len bytes and flush them (one
 * HTTP/1.1 chunk / one h2 DATA frame); len may be 0 = "flush only" (sends
 * the response headers). It returns APR_SUCCESS or the error that ended
 * the connection. closed() says whether the client is known to be gone
 * without writing (c->aborted). */
typedef struct sse_sink {
    void *ctx;
    apr_status_t (*write)(void *ctx, const char *buf, apr_size_t len);
    int (*closed)(void *ctx);
    /* Optional (NULL for the threaded sink, whose write blocks): a
     * non-blocking sink that kept part of a pass for later says so here;
     * sse_stream_pump then stops after that pass (the bus keeps the rest;
     * the caller pumps again once the sink drained) and never returns with
     * bytes staged in s->buf, so a borrowing sink may lend s->buf per call
     * (sse_detach.c). */
    int (*busy)(void *ctx);
} sse_sink_t;

/* Settings a stream needs, copied out of the request's config. */
typedef struct sse_stream_opts {
    int retry_ms;
    int heartbeat_s;
    apr_size_t buffer_size;
    sse_slow_policy_t slow_policy;
    apr_uint64_t slow_lag;
    int replay;
    int retry_spread_ms; /* server-side stop: retry + random 0..this */
} sse_stream_opts_t;

typedef struct sse_stream {
    const sse_bus_t *bus;
    sse_bus_cursor_t cursor;
    sse_bus_filter_t filter;
    sse_stream_opts_t opts;
    sse_sink_t sink;

    char *buf;          /* anonymous mmap, buf_size bytes */
    apr_size_t buf_size;
    apr_size_t used;    /* bytes staged for the next pass */
    apr_size_t staged_events;

    apr_time_t last_write; /* for heartbeats */
    sse_end_t end;         /* set once; the stream is over */

    /* per-stream counters (also added to sse_stats) */
    uint64_t events_sent, bytes_sent, flushes, skipped, missed;

    const char *log_id;      /* for log lines: client address + URI */
    struct server_rec *server; /* whose error log and LogLevel apply */
} sse_stream_t;

/* Prepare s (caller-owned memory, zeroed or not): map the buffer. The
 * filter must already hold the channels. Returns APR_SUCCESS or ENOMEM. */
apr_status_t sse_stream_init(sse_stream_t *s, const sse_bus_t *bus,
                             const sse_stream_opts_t *opts,
                             const sse_sink_t *sink);
/* Unmap the buffer. Idempotent; safe from a pool cleanup. */
void sse_stream_destroy(sse_stream_t *s);

/* Position the cursor (resume from last_event_id if non-NULL, else replay
 * or newest) and send "retry:" (or just flush the headers) plus any resume
 * comment. Returns 0 to go on, -1 when the stream is over (s->end). */
int sse_stream_begin(sse_stream_t *s, const char *last_event_id);

/* Send everything pending, pass by pass, then apply the slow-client policy.
 * Returns 0 to go on, -1 when the stream is over (s->end). */
int sse_stream_pump(sse_stream_t *s);

/* Call when woken without news: sends ": hb" if idle for SSEHeartbeat.
 * Returns 0 to go on, -1 when over. */
int sse_stream_idle(sse_stream_t *s, apr_time_t now);

/* When the next heartbeat is due (0 if heartbeats are off). */
apr_time_t sse_stream_next_heartbeat(const sse_stream_t *s);

/* End the stream from the server side (stopping, bus replaced): send a
 * "retry:" hint, best effort, and set s->end = why. */
void sse_stream_end(sse_stream_t *s, sse_end_t why);

/* Count the end reason in sse_stats (call exactly once per stream). */
void sse_stream_count_end(const sse_stream_t *s);

#endif /* SSE_STREAM_H */

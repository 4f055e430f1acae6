/*
 * sse_stream.c - the stream logic: where a stream starts reading, what goes
 * into each pass, and the policies (lapped, oversize event, slow client,
 * heartbeat, server-side end). See sse_stream.h for the model.
 *
 * Invariants:
 *   - one pass = the bytes staged in s->buf, handed to the sink in one
 *     write+flush call; a pass holds whole frames and whole comment lines;
 *   - the buffer is an anonymous mmap made once in sse_stream_init and
 *     unmapped in sse_stream_destroy: its pages never live in an APR pool,
 *     so they go back to the kernel when the stream ends;
 *   - once s->end is set nothing more is written (except the best-effort
 *     retry hint written by sse_stream_end itself).
 * Knows nothing of httpd requests; logs through ap_log_error with the
 * server_rec the caller put in s->server. Callers: sse_handler.c.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "httpd.h"
#include "http_log.h"

#include "mod_sse.h"
#include "sse_stream.h"

/* Records looked at per sse_bus_next call before it gives control back;
 * keeps a single call's work bounded on a busy bus with many channels. */
#define SSE_SCAN_LIMIT 65536u

const char *sse_end_reason_str(sse_end_t why)
{
    switch (why) {
    case SSE_END_NONE: return "not ended";
    case SSE_END_CLIENT_CLOSED: return "client closed";
    case SSE_END_CLIENT_RESET: return "client reset";
    case SSE_END_WRITE_TIMEOUT: return "write timeout";
    case SSE_END_SLOW_CLOSE: return "slow client closed";
    case SSE_END_SERVER_STOPPING: return "server stopping";
    case SSE_END_BUS_REPLACED: return "bus replaced";
    case SSE_END_ERROR: return "error";
    }
    return "?";
}

apr_status_t sse_stream_init(sse_stream_t *s, const sse_bus_t *bus,
                             const sse_stream_opts_t *opts,
                             const sse_sink_t *sink)
{
    sse_bus_info_t info;
    apr_size_t size = opts->buffer_size;
    void *p;

    s->bus = bus;
    s->opts = *opts;
    s->sink = *sink;
    s->used = 0;
    s->staged_events = 0;
    s->end = SSE_END_NONE;
    s->events_sent = s->bytes_sent = s->flushes = s->skipped = s->missed = 0;
    s->buf = NULL;

    /* A buffer smaller than the largest record could never carry it. */
    sse_bus_info(bus, &info);
    if (size < info.max_record)
        size = info.max_record;
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
             -1, 0);
    if (p == MAP_FAILED)
        return errno ? errno : APR_ENOMEM;
    s->buf = p;
    s->buf_size = size;
    s->last_write = apr_time_now();
    return APR_SUCCESS;
}

void sse_stream_destroy(sse_stream_t *s)
{
    if (s->buf) {
        munmap(s->buf, s->buf_size);
        s->buf = NULL;
    }
}

static sse_end_t end_reason_for(apr_status_t rv)
{
    if (APR_STATUS_IS_TIMEUP(rv) || APR_STATUS_IS_ETIMEDOUT(rv))
        return SSE_END_WRITE_TIMEOUT;
    if (APR_STATUS_IS_ECONNRESET(rv))
        return SSE_END_CLIENT_RESET;
    return SSE_END_CLIENT_CLOSED;
}

/* Hand the staged bytes to the sink as one pass (len 0 = flush only). */
static int flush_pass(sse_stream_t *s, int force)
{
    apr_status_t rv;
    uint64_t t0;

    if (s->end != SSE_END_NONE)
        return -1;
    if (s->used == 0 && !force)
        return 0;
    if (s->sink.closed(s->sink.ctx)) {
        s->end = SSE_END_CLIENT_CLOSED;
        return -1;
    }
    /* Flush latency: one clock read before and one after the pass. */
    t0 = sse_stats_now_ns();
    rv = s->sink.write(s->sink.ctx, s->buf, s->used);
    sse_stats_observe_flush(rv == APR_SUCCESS ? SSE_HIST_OK : SSE_HIST_ERROR,
                            sse_stats_now_ns() - t0);
    if (rv != APR_SUCCESS) {
        s->end = end_reason_for(rv);
        ap_log_error(APLOG_MARK, APLOG_DEBUG, rv, s->server,
                     APLOGNO(10520)
                     "stream %s: write failed: %s", s->log_id,
                     sse_end_reason_str(s->end));
        return -1;
    }
    s->events_sent += s->staged_events;
    s->bytes_sent += s->used;
    s->flushes++;
    SSE_STAT_ADD(events_sent, s->staged_events);
    SSE_STAT_ADD(bytes_sent, s->used);
    SSE_STAT_ADD(flushes, 1);
    s->used = 0;
    s->staged_events = 0;
    s->last_write = apr_time_now();
    return 0;
}

/* Stage a comment or control line; flushes first if it does not fit. */
static int stage_text(sse_stream_t *s, const char *text, apr_size_t len)
{
    if (s->used + len > s->buf_size && flush_pass(s, 0) < 0)
        return -1;
    if (len > s->buf_size) /* cannot happen: texts are < 200 bytes */
        return 0;
    memcpy(s->buf + s->used, text, len);
    s->used += len;
    return 0;
}

static int stage_fmt(sse_stream_t *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int stage_fmt(sse_stream_t *s, const char *fmt, ...)
{
    char line[256];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0)
        return 0;
    if ((size_t)n >= sizeof(line))
        n = sizeof(line) - 1;
    return stage_text(s, line, (apr_size_t)n);
}

static void note_missed(sse_stream_t *s, uint64_t n)
{
    s->missed += n;
    SSE_STAT_ADD(events_missed, n);
}

/* A client-supplied id we are willing to hand to the bus and echo back in
 * a comment: bounded, printable ASCII only (no CR/LF/NUL, no controls). */
static int id_is_sane(const char *id, size_t len)
{
    size_t i;
    if (len == 0 || len > SSE_BUS_ID_MAX)
        return 0;
    for (i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)id[i];
        if (ch < 0x20 || ch == 0x7f)
            return 0;
    }
    return 1;
}

int sse_stream_begin(sse_stream_t *s, const char *leid)
{
    int have_comment = 0;
    char comment[256];

    if (leid) {
        size_t len = strlen(leid);
        uint64_t missed = 0;
        SSE_STAT_ADD(resumes, 1);
        if (!id_is_sane(leid, len)) {
            sse_bus_cursor_oldest(&s->cursor, s->bus);
            snprintf(comment, sizeof(comment), ": unknown last event id, "
                     "starting at the oldest event\n\n");
            have_comment = 1;
        }
        else {
            switch (sse_bus_cursor_resume(&s->cursor, s->bus, leid, len,
                                          &missed)) {
            case SSE_BUS_RESUME_EXACT:
                break;
            case SSE_BUS_RESUME_STALE:
                snprintf(comment, sizeof(comment),
                         ": missed %llu events\n\n",
                         (unsigned long long)missed);
                note_missed(s, missed);
                have_comment = 1;
                break;
            case SSE_BUS_RESUME_EPOCH:
                snprintf(comment, sizeof(comment), ": bus was reset, id %s "
                         "is from an earlier bus\n\n", leid);
                have_comment = 1;
                break;
            case SSE_BUS_RESUME_FUTURE:
                snprintf(comment, sizeof(comment), ": last event id %s is "
                         "ahead of the bus, starting at the newest event\n\n",
                         leid);
                have_comment = 1;
                break;
            case SSE_BUS_RESUME_GAP:
                /* Ordered (Redis relay) id older than what this host still
                 * holds: events may be lost. An explicit event, not a
                 * comment, so the page can reload its state (README,
                 * "Several hosts"). No id line: lastEventId stays put. */
                snprintf(comment, sizeof(comment), "event: sse-reset\n"
                         "data: {\"reason\":\"gap\",\"after\":\"%s\"}"
                         "\n\n", leid);
                have_comment = 1;
                SSE_STAT_ADD(resets, 1);
                break;
            case SSE_BUS_RESUME_UNKNOWN:
            default:
                snprintf(comment, sizeof(comment), ": unknown last event id "
                         "%s, starting at the oldest event\n\n", leid);
                have_comment = 1;
                break;
            }
        }
    }
    else if (s->opts.replay > 0) {
        sse_bus_cursor_last(&s->cursor, s->bus, (uint64_t)s->opts.replay);
    }
    else {
        sse_bus_cursor_newest(&s->cursor, s->bus);
    }

    /* "retry:" goes out alone, in its own flush, so the client has it (and
     * the headers) before any event; with SSERetry 0 only the headers go. */
    if (s->opts.retry_ms > 0
        && stage_fmt(s, "retry: %d\n\n", s->opts.retry_ms) < 0)
        return -1;
    if (flush_pass(s, 1) < 0)
        return -1;
    if (have_comment && stage_text(s, comment, strlen(comment)) < 0)
        return -1;
    return 0;
}

/* Copy pending matching frames into the buffer until it is full or nothing
 * is pending. Returns 1 if drained, 0 if the buffer is full (more pending),
 * -1 if the stream is over. */
static int fill(sse_stream_t *s)
{
    sse_bus_record_t rec;
    unsigned scans = 0;
    int rc;

    for (;;) {
        rc = sse_bus_next(&s->cursor, &s->filter, s->buf + s->used,
                          s->buf_size - s->used, &rec, SSE_SCAN_LIMIT);
        switch (rc) {
        case SSE_BUS_OK:
            s->used += rec.frame_len;
            s->staged_events++;
            /* Broadcast records are the relay's gap markers (sse-reset). */
            if (rec.flags & SSE_BUS_EVF_BROADCAST)
                SSE_STAT_ADD(resets, 1);
            break;
        case SSE_BUS_EMPTY:
            /* EMPTY also ends a call that hit the scan limit: go on while
             * records are committed past the cursor, but give the caller
             * back control now and then (stop flag) when other channels
             * flood the bus; the next wake-up or timeout continues. */
            if (!sse_bus_pending(&s->cursor) || ++scans >= 16)
                return 1;
            break;
        case SSE_BUS_LAPPED:
            note_missed(s, s->cursor.lost);
            if (stage_fmt(s, ": missed %llu events\n\n",
                          (unsigned long long)s->cursor.lost) < 0)
                return -1;
            break;
        case SSE_BUS_ENOBUFS:
            if (s->used > 0)
                return 0; /* send what we have, then retry this one */
            /* Larger than the whole buffer (only if the buffer is smaller
             * than the bus's max record, which init prevents): drop it. */
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s->server,
                         APLOGNO(10521)
                         "stream %s: event %" APR_UINT64_T_FMT " of %u bytes "
                         "is larger than "
                         "the stream buffer (%lu bytes); skipped. Raise "
                         "SSEBufferSize.", s->log_id,
                         (apr_uint64_t)rec.seq, rec.frame_len,
                         (unsigned long)s->buf_size);
            sse_bus_skip(&s->cursor);
            SSE_STAT_ADD(events_oversize, 1);
            if (stage_fmt(s, ": skipped 1 events\n\n") < 0)
                return -1;
            break;
        case SSE_BUS_EFORMAT:
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, s->server,
                         APLOGNO(10522)
                         "stream %s: corrupt record in bus %s; the stream "
                         "skipped to the newest event", s->log_id,
                         sse_bus_path(s->bus));
            if (stage_fmt(s, ": bus record corrupt, skipped to the newest "
                          "event\n\n") < 0)
                return -1;
            break;
        case SSE_BUS_ERETIRED:
            sse_stream_end(s, SSE_END_BUS_REPLACED);
            return -1;
        default:
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, s->server,
                         APLOGNO(10523)
                         "stream %s: reading bus %s failed: %s", s->log_id,
                         sse_bus_path(s->bus), sse_bus_strerror(rc));
            flush_pass(s, 0);
            s->end = SSE_END_ERROR;
            return -1;
        }
    }
}

/* Walk the cursor to the head as it is now, counting matching events
 * without copying their frames (sse_bus_next in header-only mode). */
static uint64_t skip_to_head(sse_stream_t *s)
{
    uint64_t target = sse_bus_head_pos(s->bus), n = 0;
    sse_bus_record_t rec;
    unsigned guard = 0;

    while (s->cursor.pos < target && guard++ < 10000000u) {
        int rc = sse_bus_next(&s->cursor, &s->filter, NULL, 0, &rec,
                              SSE_SCAN_LIMIT);
        if (rc == SSE_BUS_OK) {
            n++;
        }
        else if (rc == SSE_BUS_LAPPED) {
            note_missed(s, s->cursor.lost);
        }
        else if (rc == SSE_BUS_EMPTY) {
            if (!sse_bus_pending(&s->cursor))
                break;
        }
        else {
            break;
        }
    }
    return n;
}

/* After a pass: is the client more than SSESlowClientLag behind? */
static int slow_check(sse_stream_t *s)
{
    uint64_t head = sse_bus_head_pos(s->bus);
    uint64_t n;

    if (head <= s->cursor.pos || head - s->cursor.pos <= s->opts.slow_lag)
        return 0;
    if (s->opts.slow_policy == SSE_SLOW_CLOSE) {
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, s->server,
                     APLOGNO(10524)
                     "stream %s: client is %" APR_UINT64_T_FMT " bytes behind "
                     "the bus head (SSESlowClientLag %" APR_UINT64_T_FMT
                     "); closing (SSESlowClient close)",
                     s->log_id, (apr_uint64_t)(head - s->cursor.pos),
                     (apr_uint64_t)s->opts.slow_lag);
        s->end = SSE_END_SLOW_CLOSE;
        return -1;
    }
    n = skip_to_head(s);
    s->skipped += n;
    SSE_STAT_ADD(events_skipped, n);
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s->server,
                 APLOGNO(10525)
                 "stream %s: slow client skipped %" APR_UINT64_T_FMT
                 " events", s->log_id,
                 (apr_uint64_t)n);
    return stage_fmt(s, ": skipped %llu events\n\n", (unsigned long long)n);
}

int sse_stream_pump(sse_stream_t *s)
{
    int drained;
    unsigned passes = 0;

    if (s->end != SSE_END_NONE)
        return -1;
    do {
        drained = fill(s);
        if (drained < 0)
            return -1;
        if (flush_pass(s, 0) < 0)
            return -1;
        if (s->sink.busy && s->sink.busy(s->sink.ctx))
            return 0; /* resumed when the sink has drained */
        if (slow_check(s) < 0)
            return -1;
        /* A skip staged a comment and moved to the head: go round again to
         * send it with whatever arrived meanwhile. Bounded so that a flood
         * cannot keep us here without ever looking at the stop flag. */
    } while ((!drained || s->used > 0) && ++passes < 1024);
    /* A sink that lends the buffer must get everything staged now. */
    if (s->used > 0 && s->sink.busy && flush_pass(s, 0) < 0)
        return -1;
    return 0;
}

apr_time_t sse_stream_next_heartbeat(const sse_stream_t *s)
{
    if (s->opts.heartbeat_s <= 0)
        return 0;
    return s->last_write + apr_time_from_sec(s->opts.heartbeat_s);
}

int sse_stream_idle(sse_stream_t *s, apr_time_t now)
{
    apr_time_t due = sse_stream_next_heartbeat(s);

    if (s->end != SSE_END_NONE)
        return -1;
    if (s->sink.closed(s->sink.ctx)) {
        s->end = SSE_END_CLIENT_CLOSED;
        return -1;
    }
    if (due == 0 || now < due)
        return 0;
    SSE_STAT_ADD(heartbeats, 1);
    if (stage_text(s, ": hb\n\n", 6) < 0)
        return -1;
    return flush_pass(s, 0);
}

/* xorshift32 per thread, seeded from the clock and the thread's stack
 * address: uniform enough to spread reconnects, no locks, no syscalls. */
static unsigned spread_random(void)
{
    static __thread unsigned x;
    if (x == 0) {
        x = (unsigned)apr_time_now() ^ (unsigned)(uintptr_t)&x;
        if (x == 0)
            x = 0x9e3779b9u;
    }
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return x;
}

void sse_stream_end(sse_stream_t *s, sse_end_t why)
{
    if (s->end == SSE_END_NONE) {
        /* Tell the client to come back (it resumes with Last-Event-ID and
         * loses nothing: the bus outlives httpd). SSERetry 0 means "browser
         * default" at stream start; here a value is needed, so use the
         * module default. */
        int ms = s->opts.retry_ms > 0 ? s->opts.retry_ms
                                      : SSE_DEFAULT_RETRY_MS;
        /* A restart ends every stream of the child at once: spread the
         * reconnects over SSERetrySpread so they do not all arrive in the
         * same millisecond. */
        if (why == SSE_END_SERVER_STOPPING && s->opts.retry_spread_ms > 0)
            ms += (int)(spread_random() % (unsigned)(s->opts.retry_spread_ms
                                                     + 1));
        if (stage_fmt(s, "retry: %d\n\n", ms) == 0)
            flush_pass(s, 0);
    }
    if (s->end == SSE_END_NONE)
        s->end = why;
}

void sse_stream_count_end(const sse_stream_t *s)
{
    switch (s->end) {
    case SSE_END_CLIENT_CLOSED: SSE_STAT_ADD(ended_client_closed, 1); break;
    case SSE_END_CLIENT_RESET: SSE_STAT_ADD(ended_client_reset, 1); break;
    case SSE_END_WRITE_TIMEOUT: SSE_STAT_ADD(ended_write_timeout, 1); break;
    case SSE_END_SLOW_CLOSE: SSE_STAT_ADD(ended_slow_close, 1); break;
    case SSE_END_SERVER_STOPPING:
        SSE_STAT_ADD(ended_server_stopping, 1);
        break;
    case SSE_END_BUS_REPLACED: SSE_STAT_ADD(ended_bus_replaced, 1); break;
    case SSE_END_NONE:
    case SSE_END_ERROR:
    default: SSE_STAT_ADD(ended_error, 1); break;
    }
}

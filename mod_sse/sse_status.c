/*
 * sse_status.c - the SSE section of mod_status's server-status page.
 *
 * Registered as mod_status's optional status_hook (mod_sse.c), so it costs
 * nothing when mod_status is not loaded. Two forms, as mod_status does it:
 *   - ?auto (AP_STATUS_SHORT): one `Key: value` line per figure, keys
 *     CamelCase with an SSE prefix (SSEOpenStreams: 3), no spaces in keys,
 *     so `key, value = line.split(": ", 1)` works for every line; per-bus
 *     lines carry the bus's index (SSEBus0Path, SSEBus0HeadSeq ...);
 *   - HTML: a totals table, a per-child table (scoreboard slot, pid,
 *     generation, open streams and traffic of that slot's occupants) and
 *     a bus table, and a table of the buses' Redis relays (those with a
 *     well-formed BUS.relay-status); with AP_STATUS_NOTABLE the same
 *     figures as lines.
 * The figures are the same sums sse_metrics.c serves (sse_stats_read).
 * Callers: mod_status, through ap_run_status_hook.
 */
#include <string.h>

#include "httpd.h"
#include "http_protocol.h"
#include "apr_strings.h"
#include "mod_status.h"

#include "mod_sse.h"
#include "sse_bus.h"
#include "sse_stats.h"

/* Rows shown in the per-child table; slots are ServerLimit + 1 at most,
 * and only ever-occupied ones are listed. */
#define SSE_STATUS_MAX_ROWS 1024

typedef struct figure {
    const char *key;   /* ?auto key */
    const char *label; /* HTML label */
    uint64_t value;
} figure_t;

static int totals(const sse_stats_t *s, figure_t *f)
{
    uint64_t flush_errors = 0;
    int n = 0, k;

    /* failed flushes = the histogram's error observations */
    for (k = 0; k < SSE_HIST_BUCKETS; k++)
        flush_errors += s->flush_hist[SSE_HIST_ERROR][k];
#define FIG(K, L, V) f[n].key = K, f[n].label = L, f[n].value = V, n++
    FIG("SSEOpenStreams", "open streams", s->streams_active);
    FIG("SSEDetachedStreams", "open streams: detached",
        s->streams_detached);
    FIG("SSEStreamsStarted", "streams started", s->streams_started);
    FIG("SSEStreamsEndedClientClosed", "ended: client closed",
        s->ended_client_closed);
    FIG("SSEStreamsEndedClientReset", "ended: client reset",
        s->ended_client_reset);
    FIG("SSEStreamsEndedWriteTimeout", "ended: write timeout",
        s->ended_write_timeout);
    FIG("SSEStreamsEndedSlowClient", "ended: slow client closed",
        s->ended_slow_close);
    FIG("SSEStreamsEndedServerStopping", "ended: server stopping",
        s->ended_server_stopping);
    FIG("SSEStreamsEndedBusReplaced", "ended: bus replaced",
        s->ended_bus_replaced);
    FIG("SSEStreamsEndedError", "ended: error", s->ended_error);
    FIG("SSEEventsSent", "events sent", s->events_sent);
    FIG("SSEBytesSent", "bytes sent", s->bytes_sent);
    FIG("SSEFlushes", "flushes", s->flushes);
    FIG("SSEFlushErrors", "failed flushes", flush_errors);
    FIG("SSEEventsSkipped", "events skipped (slow clients)",
        s->events_skipped);
    FIG("SSEEventsMissed", "events missed (lapped / stale resume)",
        s->events_missed);
    FIG("SSEEventsOversize", "events too big for the buffer",
        s->events_oversize);
    FIG("SSEHeartbeats", "heartbeats", s->heartbeats);
    FIG("SSEResumes", "resumes requested", s->resumes);
    FIG("SSEResets", "resets sent (sse-reset: events lost before the "
        "resume point)", s->resets);
    FIG("SSERejectedNoBus", "503: bus unavailable", s->rejected_no_bus);
    FIG("SSERejectedStreamLimit", "503: SSEMaxStreams reached",
        s->rejected_limit);
#undef FIG
    return n;
}

static double mean_flush_ms(const sse_stats_t *s)
{
    uint64_t n = 0;
    int k;
    for (k = 0; k < SSE_HIST_BUCKETS; k++)
        n += s->flush_hist[SSE_HIST_OK][k];
    return n ? (double)s->flush_sum_ns[SSE_HIST_OK] / 1e6 / (double)n : 0.0;
}

/* ?auto lines for the relay of bus i, when it has a well-formed status
 * (sse_bus_relay_status_read; nothing otherwise). */
static void relay_short(request_rec *r, int i, const char *path)
{
    sse_bus_relay_status_t st;
    if (sse_bus_relay_status_read(path, &st, NULL) != SSE_BUS_OK)
        return;
    ap_rprintf(r, "SSEBus%dRelayUp: %d\n", i, st.connected && !st.stale);
    ap_rprintf(r, "SSEBus%dRelayConnected: %d\n", i, st.connected);
    ap_rprintf(r, "SSEBus%dRelayStale: %d\n", i, st.stale);
    ap_rprintf(r, "SSEBus%dRelayStatusAge: %" APR_INT64_T_FMT "\n", i,
               (apr_int64_t)st.age_s);
    ap_rprintf(r, "SSEBus%dRelayMaster: %s\n", i,
               st.master[0] ? st.master : st.redis);
    ap_rprintf(r, "SSEBus%dRelayCursor: %s\n", i, st.cursor);
    if (st.lag_events_known)
        ap_rprintf(r, "SSEBus%dRelayLagEvents: %" APR_UINT64_T_FMT "\n", i,
                   (apr_uint64_t)st.lag_events);
    ap_rprintf(r, "SSEBus%dRelayLagMs: %" APR_UINT64_T_FMT "\n", i,
               (apr_uint64_t)st.lag_ms);
    ap_rprintf(r, "SSEBus%dRelayGaps: %" APR_UINT64_T_FMT "\n", i,
               (apr_uint64_t)st.gaps);
    ap_rprintf(r, "SSEBus%dRelayReconnects: %" APR_UINT64_T_FMT "\n", i,
               (apr_uint64_t)st.reconnects);
    ap_rprintf(r, "SSEBus%dRelayIdRepairs: %" APR_UINT64_T_FMT "\n", i,
               (apr_uint64_t)st.id_repairs);
}

/* The relays of the configured buses that have one (HTML). */
static void html_relays(request_rec *r, int table)
{
    const apr_array_header_t *paths = sse_stats_bus_paths();
    int i, shown = 0;

    for (i = 0; paths && i < paths->nelts; i++) {
        const char *path = APR_ARRAY_IDX(paths, i, const char *);
        sse_bus_relay_status_t st;
        char lag[32];
        const char *state;
        if (sse_bus_relay_status_read(path, &st, NULL) != SSE_BUS_OK)
            continue;
        if (table && !shown)
            ap_rputs("<h3>Redis relays</h3>\n<table border=\"0\"><tr>"
                     "<th>Bus</th><th>State</th><th>Master</th>"
                     "<th>Cursor</th><th>Lag (events)</th><th>Lag (ms)</th>"
                     "<th>Gaps</th><th>Reconnects</th><th>Id repairs</th>"
                     "<th>Status age (s)</th></tr>\n", r);
        shown++;
        if (st.lag_events_known)
            apr_snprintf(lag, sizeof(lag), "%" APR_UINT64_T_FMT,
                         (apr_uint64_t)st.lag_events);
        else
            apr_cpystrn(lag, "?", sizeof(lag));
        state = st.stale ? "STALE (relay dead?)"
                : st.connected ? "connected" : "disconnected";
        if (table)
            ap_rprintf(r, "<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td>"
                       "<td>%s</td><td>%" APR_UINT64_T_FMT "</td><td>%"
                       APR_UINT64_T_FMT "</td><td>%" APR_UINT64_T_FMT
                       "</td><td>%" APR_UINT64_T_FMT "</td><td>%"
                       APR_INT64_T_FMT "</td></tr>\n",
                       ap_escape_html(r->pool, path), state,
                       ap_escape_html(r->pool, st.master[0] ? st.master
                                                            : st.redis),
                       ap_escape_html(r->pool, st.cursor), lag,
                       (apr_uint64_t)st.lag_ms, (apr_uint64_t)st.gaps,
                       (apr_uint64_t)st.reconnects,
                       (apr_uint64_t)st.id_repairs, (apr_int64_t)st.age_s);
        else
            ap_rprintf(r, "Relay of %s: %s, cursor %s, lag %s events / %"
                       APR_UINT64_T_FMT " ms, %" APR_UINT64_T_FMT " gaps, %"
                       APR_UINT64_T_FMT " reconnects, status %"
                       APR_INT64_T_FMT " s old<br />\n",
                       ap_escape_html(r->pool, path), state,
                       ap_escape_html(r->pool, st.cursor), lag,
                       (apr_uint64_t)st.lag_ms, (apr_uint64_t)st.gaps,
                       (apr_uint64_t)st.reconnects, (apr_int64_t)st.age_s);
    }
    if (table && shown)
        ap_rputs("</table>\n", r);
}

static void short_report(request_rec *r, const sse_stats_view_t *v,
                         const figure_t *f, int nf)
{
    const apr_array_header_t *paths = sse_stats_bus_paths();
    int i;

    for (i = 0; i < nf; i++)
        ap_rprintf(r, "%s: %" APR_UINT64_T_FMT "\n", f[i].key,
                   (apr_uint64_t)f[i].value);
    ap_rprintf(r, "SSEFlushMeanMs: %.3f\n", mean_flush_ms(&v->sum));
    ap_rprintf(r, "SSEStatsShared: %d\n", v->attached);
    ap_rprintf(r, "SSEStatsRestarts: %u\n", v->restarts);
    ap_rprintf(r, "SSEBuses: %d\n", paths ? paths->nelts : 0);
    for (i = 0; paths && i < paths->nelts; i++) {
        const char *path = APR_ARRAY_IDX(paths, i, const char *);
        sse_bus_info_t info;
        int ok = sse_stats_bus_info(path, &info, NULL) == SSE_BUS_OK;
        ap_rprintf(r, "SSEBus%dPath: %s\n", i, path);
        ap_rprintf(r, "SSEBus%dUp: %d\n", i, ok);
        relay_short(r, i, path);
        if (!ok)
            continue;
        ap_rprintf(r, "SSEBus%dEpoch: %08x\n", i, info.epoch);
        ap_rprintf(r, "SSEBus%dHeadSeq: %" APR_UINT64_T_FMT "\n", i,
                   (apr_uint64_t)info.head_seq);
        ap_rprintf(r, "SSEBus%dCapacity: %" APR_UINT64_T_FMT "\n", i,
                   (apr_uint64_t)info.capacity);
        ap_rprintf(r, "SSEBus%dFill: %" APR_UINT64_T_FMT "\n", i,
                   (apr_uint64_t)(info.head_pos - info.tail_pos));
        ap_rprintf(r, "SSEBus%dRecoveries: %" APR_UINT64_T_FMT "\n", i,
                   (apr_uint64_t)info.recoveries);
    }
}

static void html_buses(request_rec *r, int table)
{
    const apr_array_header_t *paths = sse_stats_bus_paths();
    int i;

    if (!paths || paths->nelts == 0)
        return;
    if (table)
        ap_rputs("<table border=\"0\"><tr><th>Bus</th><th>Epoch</th>"
                 "<th>Head seq</th><th>Capacity</th><th>Fill</th>"
                 "<th>Recoveries</th></tr>\n", r);
    for (i = 0; i < paths->nelts; i++) {
        const char *path = APR_ARRAY_IDX(paths, i, const char *);
        const char *epath = ap_escape_html(r->pool, path);
        sse_bus_info_t info;
        sse_bus_error_t err;
        if (sse_stats_bus_info(path, &info, &err) != SSE_BUS_OK) {
            const char *why = ap_escape_html(r->pool, err.msg[0] ? err.msg
                                             : sse_bus_strerror(err.code));
            if (table)
                ap_rprintf(r, "<tr><td>%s</td><td colspan=\"5\">"
                           "unavailable: %s</td></tr>\n", epath, why);
            else
                ap_rprintf(r, "Bus %s: unavailable: %s<br />\n", epath, why);
            continue;
        }
        if (table)
            ap_rprintf(r, "<tr><td>%s</td><td>%08x</td><td>%"
                       APR_UINT64_T_FMT "</td><td>%" APR_UINT64_T_FMT
                       "</td><td>%" APR_UINT64_T_FMT "</td><td>%"
                       APR_UINT64_T_FMT "</td></tr>\n", epath, info.epoch,
                       (apr_uint64_t)info.head_seq,
                       (apr_uint64_t)info.capacity,
                       (apr_uint64_t)(info.head_pos - info.tail_pos),
                       (apr_uint64_t)info.recoveries);
        else
            ap_rprintf(r, "Bus %s: epoch %08x, head seq %" APR_UINT64_T_FMT
                       ", fill %" APR_UINT64_T_FMT " of %" APR_UINT64_T_FMT
                       " bytes, %" APR_UINT64_T_FMT " recoveries<br />\n",
                       epath, info.epoch, (apr_uint64_t)info.head_seq,
                       (apr_uint64_t)(info.head_pos - info.tail_pos),
                       (apr_uint64_t)info.capacity,
                       (apr_uint64_t)info.recoveries);
    }
    if (table)
        ap_rputs("</table>\n", r);
}

static void html_children(request_rec *r)
{
    sse_stats_row_t *rows = apr_palloc(r->pool, sizeof(*rows)
                                       * SSE_STATUS_MAX_ROWS);
    int n = sse_stats_rows(rows, SSE_STATUS_MAX_ROWS), i;

    if (n == 0)
        return;
    ap_rputs("<table border=\"0\"><tr><th>Slot</th><th>PID</th>"
             "<th>Gen</th><th>Occupants</th><th>Open</th><th>Started</th>"
             "<th>Events</th><th>Bytes</th><th>Flushes</th>"
             "<th>Skipped</th><th>Missed</th></tr>\n", r);
    for (i = 0; i < n; i++) {
        const sse_stats_row_t *w = &rows[i];
        ap_rprintf(r, "<tr><td>%s</td><td>%s</td><td>%d</td><td>%"
                   APR_UINT64_T_FMT "</td><td>%" APR_INT64_T_FMT "</td><td>%"
                   APR_UINT64_T_FMT "</td><td>%" APR_UINT64_T_FMT "</td><td>%"
                   APR_UINT64_T_FMT "</td><td>%" APR_UINT64_T_FMT "</td><td>%"
                   APR_UINT64_T_FMT "</td><td>%" APR_UINT64_T_FMT
                   "</td></tr>\n",
                   w->slot < 0 ? "overflow"
                               : apr_itoa(r->pool, w->slot),
                   w->slot < 0 ? "-"
                       : w->alive ? apr_itoa(r->pool, w->pid)
                                  : apr_psprintf(r->pool, "(%d, exited)",
                                                 (int)w->pid),
                   w->generation, (apr_uint64_t)w->occupants,
                   (apr_int64_t)w->open,
                   (apr_uint64_t)sse_stats_load(&w->c->streams_started),
                   (apr_uint64_t)sse_stats_load(&w->c->events_sent),
                   (apr_uint64_t)sse_stats_load(&w->c->bytes_sent),
                   (apr_uint64_t)sse_stats_load(&w->c->flushes),
                   (apr_uint64_t)sse_stats_load(&w->c->events_skipped),
                   (apr_uint64_t)sse_stats_load(&w->c->events_missed));
    }
    ap_rputs("</table>\n<p>Counters are cumulative over every process that "
             "has used a scoreboard slot since httpd started (restarts "
             "included); Open counts only the slot's current process.</p>\n",
             r);
}

int sse_status_hook(request_rec *r, int flags)
{
    sse_stats_view_t v;
    figure_t f[32];
    int nf, i;

    sse_stats_read(&v);
    nf = totals(&v.sum, f);
    if (flags & AP_STATUS_SHORT) {
        short_report(r, &v, f, nf);
        return OK;
    }

    ap_rputs("<hr />\n<h2><a name=\"sse\">Server-Sent Events "
             "(mod_sse)</a></h2>\n", r);
    if (!v.attached)
        ap_rputs("<p><b>Shared statistics unavailable</b> (see the error "
                 "log): figures below are this child's only.</p>\n", r);
    if (flags & AP_STATUS_NOTABLE) {
        for (i = 0; i < nf; i++)
            ap_rprintf(r, "%s: %" APR_UINT64_T_FMT "<br />\n", f[i].label,
                       (apr_uint64_t)f[i].value);
        ap_rprintf(r, "mean flush: %.3f ms<br />\n", mean_flush_ms(&v.sum));
        html_buses(r, 0);
        html_relays(r, 0);
        return OK;
    }
    ap_rputs("<table border=\"0\">\n", r);
    for (i = 0; i < nf; i++)
        ap_rprintf(r, "<tr><th align=\"left\">%s</th><td>%" APR_UINT64_T_FMT
                   "</td></tr>\n", f[i].label, (apr_uint64_t)f[i].value);
    ap_rprintf(r, "<tr><th align=\"left\">mean flush</th><td>%.3f ms"
               "</td></tr>\n", mean_flush_ms(&v.sum));
    ap_rputs("</table>\n<h3>Per child</h3>\n", r);
    html_children(r);
    ap_rputs("<h3>Buses</h3>\n", r);
    html_buses(r, 1);
    html_relays(r, 1);
    return OK;
}

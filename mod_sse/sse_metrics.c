/*
 * sse_metrics.c - the `sse-metrics` handler: mod_sse's statistics in the
 * Prometheus text exposition format, version 0.0.4.
 *
 * What it promises (checked by `promtool check metrics` in the tests):
 *   - every family has one # HELP and one # TYPE line, before its samples;
 *   - counters end in _total, units are base units (seconds, bytes);
 *   - all names start with sse_;
 *   - label values are escaped (\\, \", \n) - bus paths come from the
 *     configuration and may contain anything.
 * Values are sums over every child's slot in the shared statistics
 * (sse_stats.h), so any child answers for the whole server. Bus figures
 * are read from each configured bus's header, opened read-only for the
 * request. Access control is ordinary httpd authorization (`Require ip
 * ...` in the same <Location>); this handler adds none.
 *
 * Callers: httpd (handler hook, registered in mod_sse.c).
 */
#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_protocol.h"
#include "http_request.h"
#include "apr_strings.h"

#include "mod_sse.h"
#include "sse_bus.h"
#include "sse_stats.h"

/* One counter family of a single series. */
static void family(request_rec *r, const char *name, const char *type,
                   const char *help)
{
    ap_rprintf(r, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample_u64(request_rec *r, const char *name,
                       const char *labels, uint64_t v)
{
    ap_rprintf(r, "%s%s %" APR_UINT64_T_FMT "\n", name,
               labels ? labels : "", (apr_uint64_t)v);
}

static void counter(request_rec *r, const char *name, const char *help,
                    uint64_t v)
{
    family(r, name, "counter", help);
    sample_u64(r, name, NULL, v);
}

/* A label value per the exposition format: \ -> \\, " -> \", LF -> \n. */
static const char *label_escape(apr_pool_t *p, const char *s)
{
    size_t n = 0;
    const char *q;
    char *out, *o;

    for (q = s; *q; q++)
        n += (*q == '\\' || *q == '"' || *q == '\n') ? 2 : 1;
    out = o = apr_palloc(p, n + 1);
    for (q = s; *q; q++) {
        if (*q == '\\' || *q == '"') {
            *o++ = '\\';
            *o++ = *q;
        }
        else if (*q == '\n') {
            *o++ = '\\';
            *o++ = 'n';
        }
        else {
            *o++ = *q;
        }
    }
    *o = '\0';
    return out;
}

static void histogram(request_rec *r, const sse_stats_t *sum)
{
    static const char *const status_name[2] = { "ok", "error" };
    const char *name = "sse_flush_duration_seconds";
    int st, k;

    family(r, name, "histogram",
           "Time one flush pass (events written, then flushed to the client)"
           " took, by outcome.");
    for (st = 0; st < 2; st++) {
        uint64_t cum = 0;
        for (k = 0; k < SSE_HIST_BUCKETS; k++) {
            cum += sum->flush_hist[st][k];
            if (k < SSE_HIST_FINITE)
                ap_rprintf(r, "%s_bucket{status=\"%s\",le=\"%.4f\"} %"
                           APR_UINT64_T_FMT "\n", name, status_name[st],
                           (double)(SSE_HIST_BASE_NS << k) / 1e9,
                           (apr_uint64_t)cum);
            else
                ap_rprintf(r, "%s_bucket{status=\"%s\",le=\"+Inf\"} %"
                           APR_UINT64_T_FMT "\n", name, status_name[st],
                           (apr_uint64_t)cum);
        }
        ap_rprintf(r, "%s_sum{status=\"%s\"} %.9f\n", name, status_name[st],
                   (double)sum->flush_sum_ns[st] / 1e9);
        ap_rprintf(r, "%s_count{status=\"%s\"} %" APR_UINT64_T_FMT "\n",
                   name, status_name[st], (apr_uint64_t)cum);
    }
}

/* The configured buses (*paths, *n of them) and each one's label set,
 * {bus="PATH"}, in the same order; NULL when there are none. */
static const char **bus_labels(request_rec *r,
                               const apr_array_header_t **paths, int *n)
{
    const char **lab;
    int i;

    *paths = sse_stats_bus_paths();
    *n = *paths ? (*paths)->nelts : 0;
    if (*n == 0)
        return NULL;
    lab = apr_pcalloc(r->pool, sizeof(*lab) * *n);
    for (i = 0; i < *n; i++)
        lab[i] = apr_psprintf(r->pool, "{bus=\"%s\"}",
                              label_escape(r->pool,
                                           APR_ARRAY_IDX(*paths, i,
                                                         const char *)));
    return lab;
}

/* Bus header figures, one series per configured SSEBus. */
static void bus_families(request_rec *r)
{
    const apr_array_header_t *paths;
    int n, i;
    sse_bus_info_t *info;
    int *ok;
    const char **lab = bus_labels(r, &paths, &n);

    if (n == 0)
        return;
    info = apr_pcalloc(r->pool, sizeof(*info) * n);
    ok = apr_pcalloc(r->pool, sizeof(*ok) * n);
    for (i = 0; i < n; i++)
        ok[i] = sse_stats_bus_info(APR_ARRAY_IDX(paths, i, const char *),
                                   &info[i], NULL) == SSE_BUS_OK;

    family(r, "sse_bus_up", "gauge",
           "1 if the bus file could be opened and read, 0 if not (streams "
           "on it answer 503).");
    for (i = 0; i < n; i++)
        sample_u64(r, "sse_bus_up", lab[i], ok[i] ? 1 : 0);

#define BUS_FAMILY(NAME, TYPE, HELP, EXPR)                        \
    family(r, NAME, TYPE, HELP);                                  \
    for (i = 0; i < n; i++)                                       \
        if (ok[i])                                                \
            sample_u64(r, NAME, lab[i], (uint64_t)(EXPR));

    BUS_FAMILY("sse_bus_head_sequence", "gauge",
               "Sequence number of the newest event in the bus (0: none).",
               info[i].head_seq)
    BUS_FAMILY("sse_bus_capacity_bytes", "gauge",
               "Size of the bus's record ring.", info[i].capacity)
    BUS_FAMILY("sse_bus_fill_bytes", "gauge",
               "Bytes of records the ring holds (head minus tail position).",
               info[i].head_pos - info[i].tail_pos)
    BUS_FAMILY("sse_bus_publisher_recoveries_total", "counter",
               "Publishers that died holding the bus lock and were "
               "recovered from.", info[i].recoveries)
    BUS_FAMILY("sse_bus_epoch", "gauge",
               "Random epoch of the bus (first part of every event id, as a "
               "number); changes when the bus is re-created.", info[i].epoch)
#undef BUS_FAMILY
}

/* The Redis relay of each configured bus that has one: what sse-relay
 * wrote in BUS.relay-status (read and validated by the bus library; a
 * missing or malformed file gives no series for that bus). Counters are
 * the relay process's own: they restart at 0 with it, as Prometheus
 * counters may. */
static void relay_families(request_rec *r)
{
    const apr_array_header_t *paths;
    int n, i, any = 0;
    sse_bus_relay_status_t *st;
    int *ok;
    const char **lab = bus_labels(r, &paths, &n);

    if (n == 0)
        return;
    st = apr_pcalloc(r->pool, sizeof(*st) * n);
    ok = apr_pcalloc(r->pool, sizeof(*ok) * n);
    for (i = 0; i < n; i++) {
        ok[i] = sse_bus_relay_status_read(APR_ARRAY_IDX(paths, i,
                                                        const char *),
                                          &st[i], NULL) == SSE_BUS_OK;
        any |= ok[i];
    }
    if (!any)
        return;

#define RELAY_FAMILY(NAME, TYPE, HELP, COND, FMT, EXPR)            \
    family(r, NAME, TYPE, HELP);                                  \
    for (i = 0; i < n; i++)                                       \
        if (ok[i] && (COND))                                      \
            ap_rprintf(r, "%s%s " FMT "\n", NAME, lab[i], EXPR);

    RELAY_FAMILY("sse_relay_up", "gauge",
                 "1 if the bus's sse-relay is connected to Redis and its "
                 "status is fresh; 0 if disconnected or stale (dead?).", 1,
                 "%d", st[i].connected && !st[i].stale)
    RELAY_FAMILY("sse_relay_status_age_seconds", "gauge",
                 "Age of the relay's status file; stale (the relay may be "
                 "dead) above sse_relay_status_stale_after_seconds.", 1,
                 "%" APR_INT64_T_FMT, (apr_int64_t)st[i].age_s)
    RELAY_FAMILY("sse_relay_status_stale_after_seconds", "gauge",
                 "Age beyond which the relay's status is stale (the relay "
                 "rewrites it more often while it lives).", 1, "%.3f",
                 (double)st[i].stale_after_ms / 1000.0)
    RELAY_FAMILY("sse_relay_lag_events", "gauge",
                 "Stream entries in Redis not yet in the bus (absent until "
                 "the relay first reaches the stream's end).",
                 st[i].lag_events_known, "%" APR_UINT64_T_FMT,
                 (apr_uint64_t)st[i].lag_events)
    RELAY_FAMILY("sse_relay_lag_seconds", "gauge",
                 "Stream's newest id minus the bus's newest id, in time.", 1,
                 "%.3f", (double)st[i].lag_ms / 1000.0)
    RELAY_FAMILY("sse_relay_events_total", "counter",
                 "Events the relay appended to the bus.", 1,
                 "%" APR_UINT64_T_FMT, (apr_uint64_t)st[i].relayed)
    RELAY_FAMILY("sse_relay_gaps_total", "counter",
                 "Gap markers (sse-reset) the relay wrote: Redis no longer "
                 "held what followed the bus's newest event.", 1,
                 "%" APR_UINT64_T_FMT, (apr_uint64_t)st[i].gaps)
    RELAY_FAMILY("sse_relay_reconnects_total", "counter",
                 "Times the relay connected to Redis again.", 1,
                 "%" APR_UINT64_T_FMT, (apr_uint64_t)st[i].reconnects)
    RELAY_FAMILY("sse_relay_id_repairs_total", "counter",
                 "Times the relay raised the stream's last id (it had gone "
                 "below ids already delivered).", 1,
                 "%" APR_UINT64_T_FMT, (apr_uint64_t)st[i].id_repairs)
#undef RELAY_FAMILY
}

int sse_metrics_handler(request_rec *r)
{
    sse_stats_view_t v;
    const sse_stats_t *s = &v.sum;

    if (!r->handler || strcmp(r->handler, SSE_HANDLER_METRICS))
        return DECLINED;
    r->allowed = (AP_METHOD_BIT << M_GET);
    if (r->method_number != M_GET)
        return HTTP_METHOD_NOT_ALLOWED;

    apr_table_setn(r->subprocess_env, "no-gzip", "1");
    ap_set_content_type(r, "text/plain; version=0.0.4; charset=utf-8");
    apr_table_setn(r->headers_out, "Cache-Control", "no-cache");
    if (r->header_only)
        return OK;

    sse_stats_read(&v);

    family(r, "sse_streams_open", "gauge", "Streams open now.");
    sample_u64(r, "sse_streams_open", NULL, s->streams_active);
    family(r, "sse_streams_detached", "gauge", "Open streams served by "
           "the detached event loop (part of sse_streams_open).");
    sample_u64(r, "sse_streams_detached", NULL, s->streams_detached);
    counter(r, "sse_streams_started_total", "Streams that started "
            "(200 sent, events could flow).", s->streams_started);

    family(r, "sse_streams_ended_total", "counter",
           "Streams that ended, by reason.");
    sample_u64(r, "sse_streams_ended_total", "{reason=\"client_closed\"}",
               s->ended_client_closed);
    sample_u64(r, "sse_streams_ended_total", "{reason=\"client_reset\"}",
               s->ended_client_reset);
    sample_u64(r, "sse_streams_ended_total", "{reason=\"write_timeout\"}",
               s->ended_write_timeout);
    sample_u64(r, "sse_streams_ended_total", "{reason=\"slow_client\"}",
               s->ended_slow_close);
    sample_u64(r, "sse_streams_ended_total", "{reason=\"server_stopping\"}",
               s->ended_server_stopping);
    sample_u64(r, "sse_streams_ended_total", "{reason=\"bus_replaced\"}",
               s->ended_bus_replaced);
    sample_u64(r, "sse_streams_ended_total", "{reason=\"error\"}",
               s->ended_error);

    counter(r, "sse_events_sent_total", "Events written to clients.",
            s->events_sent);
    counter(r, "sse_sent_bytes_total", "Bytes of SSE frames and comments "
            "written to clients (before chunked/TLS framing).",
            s->bytes_sent);
    counter(r, "sse_flushes_total", "Successful flush passes (one HTTP/1.1 "
            "chunk each); equals the ok count of "
            "sse_flush_duration_seconds.", s->flushes);
    counter(r, "sse_events_skipped_total", "Events skipped for slow clients "
            "(SSESlowClient skip).", s->events_skipped);
    counter(r, "sse_events_missed_total", "Events clients lost because "
            "their stream was lapped or resumed from an id older than the "
            "ring.", s->events_missed);
    counter(r, "sse_events_oversize_total", "Events dropped because they "
            "were larger than the stream buffer.", s->events_oversize);
    counter(r, "sse_heartbeats_total", "Heartbeat comments sent.",
            s->heartbeats);
    counter(r, "sse_resumes_total", "Streams that asked to resume "
            "(Last-Event-ID header or query parameter).", s->resumes);
    counter(r, "sse_resets_total", "sse-reset events sent: the client's "
            "resume point (or a live stream's position) lay before a gap "
            "the Redis relay marked or before the oldest ordered event "
            "held; the client must reload its state.", s->resets);

    family(r, "sse_rejected_total", "counter",
           "Stream requests answered 503, by reason.");
    sample_u64(r, "sse_rejected_total", "{reason=\"no_bus\"}",
               s->rejected_no_bus);
    sample_u64(r, "sse_rejected_total", "{reason=\"stream_limit\"}",
               s->rejected_limit);

    histogram(r, s);

    family(r, "sse_stats_shared", "gauge", "1 if the statistics are shared "
           "by all children; 0 if shared memory could not be created and "
           "only the answering child is counted.");
    sample_u64(r, "sse_stats_shared", NULL, (uint64_t)v.attached);

    bus_families(r);
    relay_families(r);
    return OK;
}

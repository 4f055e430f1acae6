/*
 * sse_handler.c - the `sse-stream` request handler and the threaded sink.
 *
 * The handler checks the method, picks the channels (fixed SSEChannel plus
 * client-chosen ones allowed by SSEChannelAllow), applies SSEMaxStreams,
 * gets the bus from the dispatcher and then runs the stream in this worker
 * thread until it ends: pump pending events, sleep on the stream's waiter
 * (woken by the dispatcher for our channels, by child_stopping, or by the
 * heartbeat timeout), repeat.
 *
 * Invariants:
 *   - the request-pool cleanup is registered before anything it undoes
 *     exists; it unregisters the waiter, releases the bus, unmaps the
 *     buffer and fixes the counters, whatever ended the stream (client
 *     gone, RST, write timeout, server stopping); it may run on another
 *     thread (HTTP/2), which the dispatcher's locking allows;
 *   - the threaded sink reuses one brigade: each pass is one transient
 *     bucket pointing into the stream buffer plus one FLUSH bucket, passed
 *     once, then apr_brigade_cleanup. Bucket structs come from the
 *     connection's bucket allocator free lists; nothing is taken from
 *     r->pool inside the loop (checked at debug level: see pool_mark()).
 * Callers: httpd (handler hook, registered in mod_sse.c).
 */
#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "ap_mpm.h"
#include "scoreboard.h"
#include "util_filter.h"
#include "apr_atomic.h"
#include "apr_buckets.h"
#include "apr_fnmatch.h"
#include "apr_strings.h"

#include "mod_sse.h"
#include "sse_config.h"
#include "sse_detach.h"
#include "sse_dispatch.h"
#include "sse_trim.h"
#include "sse_stream.h"

/* Longest sleep without looking at c->aborted (HTTP/2 sets it while we
 * sleep) and at the heartbeat clock. */
#define SSE_MAX_SLEEP apr_time_from_sec(1)

static apr_uint32_t sse_open_streams; /* this child's running streams */

/* Everything one stream needs, allocated once from r->pool. */
typedef struct sse_req {
    request_rec *r;
    conn_rec *c;
    server_rec *server; /* for logging from the cleanup (r may be gone) */
    apr_bucket_brigade *bb;
    sse_stream_t stream;
    sse_waiter_t waiter;
    sse_busref_t *ref;
    int counted;      /* holds a slot in sse_open_streams */
    int active;       /* counted in sse_stats.streams_active */
} sse_req_t;

/* --------------------------------------------------------- threaded sink */

static apr_status_t tsink_write(void *ctx, const char *buf, apr_size_t len)
{
    sse_req_t *q = ctx;
    conn_rec *c = q->c;
    apr_status_t rv;

    if (len)
        APR_BRIGADE_INSERT_TAIL(q->bb, apr_bucket_transient_create(
                                           buf, len, c->bucket_alloc));
    APR_BRIGADE_INSERT_TAIL(q->bb, apr_bucket_flush_create(c->bucket_alloc));
    rv = ap_pass_brigade(q->r->output_filters, q->bb);
    apr_brigade_cleanup(q->bb);
    if (rv == APR_SUCCESS && c->aborted)
        rv = APR_ECONNABORTED;
    return rv;
}

static int tsink_closed(void *ctx)
{
    sse_req_t *q = ctx;
    return q->c->aborted;
}

/* --------------------------------------------------------------- cleanup */

static apr_status_t sse_req_cleanup(void *data)
{
    sse_req_t *q = data;

    sse_waiter_destroy(&q->waiter); /* unregisters first */
    if (q->ref) {
        sse_dispatch_release(q->ref);
        q->ref = NULL;
    }
    sse_stream_destroy(&q->stream);
    if (q->active) {
        SSE_STAT_SUB(streams_active, 1);
        q->active = 0;
        sse_trim_note_end(); /* the dispatcher trims malloc once quiet */
    }
    if (q->counted) {
        apr_atomic_dec32(&sse_open_streams);
        q->counted = 0;
    }
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, q->server, APLOGNO(10540)
                 "stream %s: cleanup done (buffer unmapped, bus released)",
                 q->stream.log_id ? q->stream.log_id : "?");
    return APR_SUCCESS;
}

/* ------------------------------------------------------ small responses */

/* A short plain-text answer (400/403/405/500/503). We write it ourselves
 * so that the body and the Allow header are exactly as documented. */
static int reply(request_rec *r, int status, const char *text)
{
    r->status = status;
    ap_set_content_type(r, "text/plain; charset=utf-8");
    apr_table_setn(r->headers_out, "Cache-Control", "no-cache");
    if (!r->header_only)
        ap_rvputs(r, text, "\n", NULL);
    return OK;
}

static int reply_503(request_rec *r, const char *text)
{
    apr_table_setn(r->headers_out, "Retry-After", SSE_RETRY_AFTER_S);
    return reply(r, HTTP_SERVICE_UNAVAILABLE, text);
}

/* ---------------------------------------------------------- query string */

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Decode a query component in place ('+' is a space, %XX a byte; a bad
 * escape stays literal). Returns the decoded length (may contain NUL). */
static size_t url_decode(char *s, size_t len)
{
    size_t i, o = 0;
    for (i = 0; i < len; i++) {
        if (s[i] == '+') {
            s[o++] = ' ';
        }
        else if (s[i] == '%' && i + 2 < len && hexval(s[i + 1]) >= 0
                 && hexval(s[i + 2]) >= 0) {
            s[o++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        }
        else {
            s[o++] = s[i];
        }
    }
    return o;
}

static int channel_allowed(const sse_dir_conf_t *dc, const char *name)
{
    int i;
    for (i = 0; i < dc->allow->nelts; i++)
        if (apr_fnmatch(APR_ARRAY_IDX(dc->allow, i, const char *), name, 0)
            == APR_SUCCESS)
            return 1;
    return 0;
}

static int is_fixed(const sse_dir_conf_t *dc, const char *name, size_t len)
{
    int i;
    for (i = 0; i < dc->channels->nelts; i++) {
        const char *f = APR_ARRAY_IDX(dc->channels, i, const char *);
        if (strlen(f) == len && !memcmp(f, name, len))
            return 1;
    }
    return 0;
}

/* Add one client-chosen channel. Returns OK or an HTTP status, with
 * *why set to the text for the client. */
static int add_client_channel(request_rec *r, const sse_dir_conf_t *dc,
                              sse_bus_filter_t *f, const char *name,
                              size_t len, const char **why)
{
    char cname[SSE_BUS_CHANNEL_MAX + 1];
    size_t i;
    /* The bus's rule (sse_bus_frame.c): no control character at all, not
     * only CR/LF/NUL; otherwise sse_bus_filter_add refuses the name below
     * and the client would be told "too many channels". */
    for (i = 0; i < len; i++)
        if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
            break;
    if (len == 0 || len > SSE_BUS_CHANNEL_MAX || i < len) {
        *why = apr_psprintf(r->pool, "invalid channel name: it must be 1 to "
                            "%d bytes without control characters (CR, LF, "
                            "NUL, ...)", SSE_BUS_CHANNEL_MAX);
        return HTTP_BAD_REQUEST;
    }
    /* name is not NUL-terminated (it may be "a" of "a,b"): match a copy,
     * or apr_fnmatch would see "a,b" and "*-public" would let "secret"
     * of "secret,x-public" through. Found by test_bad_input.py. */
    memcpy(cname, name, len);
    cname[len] = '\0';
    if (!is_fixed(dc, name, len) && !channel_allowed(dc, cname)) {
        *why = "channel not allowed here";
        return HTTP_FORBIDDEN;
    }
    if (sse_bus_filter_match(f, name, len))
        return OK;
    if ((int)f->n >= dc->max_channels
        || sse_bus_filter_add(f, name, len) != SSE_BUS_OK) {
        *why = apr_psprintf(r->pool, "too many channels: at most %d per "
                            "stream", dc->max_channels);
        return HTTP_BAD_REQUEST;
    }
    return OK;
}

/* Parse r->args: client channels into f, Last-Event-ID into *leid. */
static int parse_query(request_rec *r, const sse_dir_conf_t *dc,
                       sse_bus_filter_t *f, const char **leid,
                       const char **why)
{
    char *args, *pair, *state = NULL;
    size_t cp_len = strlen(dc->channel_param);
    size_t lp_len = strlen(dc->leid_param);

    if (!r->args || !*r->args)
        return OK;
    args = apr_pstrdup(r->pool, r->args);
    for (pair = apr_strtok(args, "&", &state); pair;
         pair = apr_strtok(NULL, "&", &state)) {
        char *eq = strchr(pair, '=');
        char *val = eq ? eq + 1 : pair + strlen(pair);
        size_t klen = url_decode(pair, eq ? (size_t)(eq - pair)
                                          : strlen(pair));
        size_t vlen = url_decode(val, strlen(val));

        if (klen == cp_len && !memcmp(pair, dc->channel_param, klen)) {
            /* "a,b" and repeated parameters both add channels. */
            size_t start = 0, i;
            for (i = 0; i <= vlen; i++) {
                if (i == vlen || val[i] == ',') {
                    int st = add_client_channel(r, dc, f, val + start,
                                                i - start, why);
                    if (st != OK)
                        return st;
                    start = i + 1;
                }
            }
        }
        else if (klen == lp_len && !memcmp(pair, dc->leid_param, klen)
                 && !*leid) {
            /* Kept as given; sse_stream_begin refuses unsafe ids. A NUL
             * inside truncates it, which makes it unknown, not unsafe. */
            val[vlen] = '\0';
            *leid = val;
        }
    }
    return OK;
}

/* ------------------------------------------------------------ the loop */

/* The MPM's own view, for what child_stopping does not cover. Prefork
 * never runs child_stopping while a request is busy and only notices a
 * graceful restart between connections, so a prefork stream would outlive
 * every restart; the scoreboard's running generation moving past ours says
 * a restart happened, in any MPM. Checked at each wake-up (at most
 * SSE_MAX_SLEEP apart); both reads are plain loads. */
static int mpm_stopping(void)
{
    int state = AP_MPMQ_RUNNING, gen = 0;
    if (sse_dispatch_stopping())
        return 1;
    if (ap_mpm_query(AP_MPMQ_MPM_STATE, &state) == APR_SUCCESS
        && state == AP_MPMQ_STOPPING)
        return 1;
    return ap_scoreboard_image
           && ap_mpm_query(AP_MPMQ_GENERATION, &gen) == APR_SUCCESS
           && ap_scoreboard_image->global->running_generation != gen;
}

/* Address of the next allocation in r->pool: comparing two marks shows
 * whether anything was taken from the pool in between (same block) - a
 * debug aid for the "nothing allocated per event" invariant. */
static char *pool_mark(apr_pool_t *p)
{
    return apr_palloc(p, 8);
}

/* SSEMode detached asked for a stream that cannot be detached: say why,
 * once per child and reason (auto falls back silently, at debug level). */
static void note_threaded(request_rec *r, sse_mode_t mode, const char *why)
{
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    static char said[8][96];
    int i, first = 1;

    if (mode == SSE_MODE_DETACHED) {
        pthread_mutex_lock(&mu);
        for (i = 0; i < 8 && said[i][0]; i++)
            if (!strncmp(said[i], why, sizeof(said[i]) - 1))
                first = 0;
        if (first && i < 8)
            apr_cpystrn(said[i], why, sizeof(said[i]));
        pthread_mutex_unlock(&mu);
        if (first)
            ap_log_rerror(APLOG_MARK, APLOG_NOTICE, 0, r, APLOGNO(10548)
                          "SSEMode detached: %s streams stay threaded in "
                          "this child: %s", r->uri, why);
    }
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, APLOGNO(10549)
                  "stream %s stays threaded (SSEMode %s): %s",
                  r->unparsed_uri, sse_mode_str(mode), why);
}

/* After the first pass went out through httpd's filters: hand the socket
 * to a detached loop. Returns 1 if the loop owns the stream now. */
static int try_detach(sse_req_t *q, const sse_dir_conf_t *dc)
{
    sse_stream_t *s = &q->stream;
    request_rec *r = q->r;
    sse_detach_args_t a;
    const char *why;

    /* Anything staged by begin (a resume comment) and everything pending
     * goes out threaded first: the loop starts with nothing staged. */
    if (sse_stream_pump(s) < 0)
        return 0;
    why = sse_detach_ineligible_after_flush(r);
    if (!why && mpm_stopping())
        why = "the server is stopping";
    if (!why && s->used)
        why = "bytes still staged";
    if (why) {
        note_threaded(r, dc->mode, why);
        return 0;
    }
    a.r = r;
    a.stream = s;
    a.ref = q->ref;
    a.open_counter = &sse_open_streams;
    a.write_timeout_s = dc->write_timeout_s;
    if (sse_detach_handoff(&a) != APR_SUCCESS) {
        note_threaded(r, dc->mode, "the hand-off failed");
        return 0;
    }
    /* The loop has its own waiter, the reference and both counts now. */
    sse_dispatch_unregister(&q->waiter);
    q->ref = NULL;
    q->counted = 0;
    q->active = 0;
    sse_stream_destroy(s); /* our buffer; the loop lends its own */
    return 1;
}

/* Returns 1 if the stream was detached (the loop ends it), else 0. */
static int run_stream(sse_req_t *q, const char *leid,
                      const sse_dir_conf_t *dc, int detach)
{
    sse_stream_t *s = &q->stream;
    request_rec *r = q->r;
    char *mark0, *mark1;

    if (sse_stream_begin(s, leid) < 0)
        return 0;
    if (detach && try_detach(q, dc))
        return 1;
    /* After the first pass: the response headers are built from r->pool
     * once; from here on nothing should be. */
    mark0 = pool_mark(r->pool);
    for (;;) {
        apr_time_t now, hb;
        apr_interval_time_t sleep = SSE_MAX_SLEEP;
        unsigned flags;

        if (sse_stream_pump(s) < 0)
            break;
        now = apr_time_now();
        hb = sse_stream_next_heartbeat(s);
        if (hb && hb - now < sleep)
            sleep = hb > now ? hb - now : 0;
        flags = sse_waiter_wait(&q->waiter, sleep);
        if ((flags & SSE_WAKE_STOP) || mpm_stopping()) {
            sse_stream_end(s, SSE_END_SERVER_STOPPING);
            break;
        }
        if (flags & SSE_WAKE_BUS_GONE) {
            /* Send what the old bus still holds, then send them away: the
             * reconnect gets the new bus (and an EPOCH comment). */
            if (sse_stream_pump(s) == 0)
                sse_stream_end(s, SSE_END_BUS_REPLACED);
            break;
        }
        if (q->c->aborted) {
            s->end = SSE_END_CLIENT_CLOSED;
            break;
        }
        if (!(flags & SSE_WAKE_PENDING)
            && sse_stream_idle(s, apr_time_now()) < 0)
            break;
    }
    mark1 = pool_mark(r->pool);
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, APLOGNO(10541)
                  "stream %s ended (%s): %" APR_UINT64_T_FMT " events, %"
                  APR_UINT64_T_FMT " bytes, %" APR_UINT64_T_FMT " flushes, %"
                  APR_UINT64_T_FMT " skipped, %" APR_UINT64_T_FMT " missed; "
                  "r->pool growth during "
                  "the stream: %s", s->log_id, sse_end_reason_str(s->end),
                  (apr_uint64_t)s->events_sent,
                  (apr_uint64_t)s->bytes_sent,
                  (apr_uint64_t)s->flushes,
                  (apr_uint64_t)s->skipped,
                  (apr_uint64_t)s->missed,
                  (mark1 > mark0 && mark1 - mark0 < 65536)
                      ? apr_psprintf(r->pool, "%ld bytes",
                                     (long)(mark1 - mark0 - 8))
                      : "a new pool block (>= 8 KB) was needed");
    return 0;
}

/* Bound the kernel's send buffer for this stream. Bytes queued in the
 * socket are backlog the slow-client policy cannot see nor take back, and
 * Linux autotuning lets them grow to several MB per slow client on
 * loopback/LAN. Linux doubles the value set, so asking for half of
 * SSESlowClientLag keeps the unseen backlog about as large as the seen one
 * (clamped to 32k..2M: enough for any SSE rate, bounded kernel memory). */
static void set_send_buffer(apr_socket_t *sock, apr_uint64_t slow_lag)
{
    apr_uint64_t want = slow_lag / 2;
    if (want < 32 * 1024)
        want = 32 * 1024;
    if (want > 2 * 1024 * 1024)
        want = 2 * 1024 * 1024;
    apr_socket_opt_set(sock, APR_SO_SNDBUF, (apr_int32_t)want);
}

/* ------------------------------------------------------------- handler */

int sse_handler(request_rec *r)
{
    sse_dir_conf_t *dc;
    sse_srv_conf_t *sc;
    sse_bus_filter_t filter;
    unsigned char filter_space[SSE_BUS_FILTER_SPACE_MAX];
    const char *leid = NULL, *why = NULL;
    const sse_bus_t *bus;
    sse_busref_t *ref;
    sse_req_t *q;
    sse_stream_opts_t opts;
    sse_sink_t sink;
    int st, i, rc, detach = 0;
    conn_rec *c = r->connection;

    if (!r->handler || strcmp(r->handler, SSE_HANDLER_STREAM))
        return DECLINED;
    if (r->main) /* a stream cannot be a subrequest's body */
        return DECLINED;

    /* Never compress a stream (nor our short error texts): mod_deflate
     * reads this when its filter first runs, so set it before any output. */
    apr_table_setn(r->subprocess_env, "no-gzip", "1");
    r->allowed = (AP_METHOD_BIT << M_GET);
    if (r->method_number != M_GET) {
        apr_table_setn(r->headers_out, "Allow", "GET, HEAD");
        return reply(r, HTTP_METHOD_NOT_ALLOWED,
                     "method not allowed: use GET");
    }

    dc = ap_get_module_config(r->per_dir_config, &sse_module);
    sc = ap_get_module_config(r->server->module_config, &sse_module);
    if (!dc->bus_path) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, APLOGNO(10542)
                      "`SetHandler sse-stream` for %s but no SSEBus applies "
                      "here: add `SSEBus PATH` to the same <Location>",
                      r->uri);
        return HTTP_INTERNAL_SERVER_ERROR;
    }

    /* Channels: the fixed ones, then the client's. */
    sse_bus_filter_init(&filter, filter_space, sizeof(filter_space));
    /* Fixed channels always count in full (the config allows at most 32);
     * SSEMaxChannels bounds what the client may add to them. */
    for (i = 0; i < dc->channels->nelts; i++) {
        const char *name = APR_ARRAY_IDX(dc->channels, i, const char *);
        sse_bus_filter_add(&filter, name, strlen(name));
    }
    st = parse_query(r, dc, &filter, &leid, &why);
    if (st != OK)
        return reply(r, st, why);
    if (filter.n == 0) {
        if (dc->allow->nelts == 0) {
            ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, APLOGNO(10543)
                          "no SSEChannel or SSEChannelAllow applies to %s",
                          r->uri);
            return HTTP_INTERNAL_SERVER_ERROR;
        }
        return reply(r, HTTP_BAD_REQUEST, apr_psprintf(r->pool,
                     "no channel selected: add ?%s=NAME",
                     dc->channel_param));
    }
    {
        /* The header wins over the query parameter; an empty value (some
         * proxies send one) means "no id", not "unknown id". */
        const char *h = apr_table_get(r->headers_in, "Last-Event-ID");
        if (h && *h)
            leid = h;
        if (leid && !*leid)
            leid = NULL;
    }

    /* Per-child stream limit. */
    if (sc->max_streams > 0
        && apr_atomic_inc32(&sse_open_streams)
               >= (apr_uint32_t)sc->max_streams) {
        apr_atomic_dec32(&sse_open_streams);
        SSE_STAT_ADD(rejected_limit, 1);
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, APLOGNO(10544)
                      "SSEMaxStreams %d reached in this child; answering 503",
                      sc->max_streams);
        return reply_503(r, "too many streams: retry later");
    }
    else if (sc->max_streams <= 0) {
        apr_atomic_inc32(&sse_open_streams);
    }

    /* From here the cleanup owns the slot, the bus reference, the buffer. */
    q = apr_pcalloc(r->pool, sizeof(*q));
    q->r = r;
    q->c = c;
    q->server = r->server;
    q->counted = 1;
    apr_pool_cleanup_register(r->pool, q, sse_req_cleanup,
                              apr_pool_cleanup_null);

    if (sse_dispatch_stopping())
        return reply_503(r, "server is restarting: retry later");
    rc = sse_dispatch_acquire(dc->bus_path, r->server, &ref, &bus);
    if (rc != SSE_BUS_OK) {
        SSE_STAT_ADD(rejected_no_bus, 1);
        return reply_503(r, "event bus unavailable: retry later");
    }
    q->ref = ref;

    /* Headers (no-gzip is already set above). */
    ap_set_content_type(r, "text/event-stream; charset=utf-8");
    apr_table_setn(r->headers_out, "Cache-Control", "no-cache");
    apr_table_setn(r->headers_out, "X-Accel-Buffering", "no");
    if (r->header_only)
        return OK;

    if (sse_waiter_init(&q->waiter) != APR_SUCCESS) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, APLOGNO(10545)
                      "cannot create the stream's condition variable");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    opts.retry_ms = dc->retry_ms;
    opts.heartbeat_s = dc->heartbeat_s;
    opts.buffer_size = dc->buffer_size;
    opts.slow_policy = dc->slow_policy;
    opts.slow_lag = dc->slow_lag;
    opts.replay = dc->replay;
    opts.retry_spread_ms = dc->retry_spread_ms;
    sink.ctx = q;
    sink.write = tsink_write;
    sink.closed = tsink_closed;
    sink.busy = NULL; /* blocking writes */
    q->stream.log_id = apr_psprintf(r->pool, "%s %s", c->client_ip,
                                    r->unparsed_uri);
    q->stream.server = r->server;
    if (sse_stream_init(&q->stream, bus, &opts, &sink) != APR_SUCCESS) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, APR_ENOMEM, r, APLOGNO(10546)
                      "cannot map a %lu-byte stream buffer (SSEBufferSize)",
                      (unsigned long)dc->buffer_size);
        return reply_503(r, "out of memory: retry later");
    }
    /* The names move from the stack into the request pool, exactly. */
    sse_bus_filter_copy(&q->stream.filter, &filter,
                        apr_palloc(r->pool, sse_bus_filter_space(&filter)));
    q->bb = apr_brigade_create(r->pool, c->bucket_alloc);
    q->active = 1;
    SSE_STAT_ADD(streams_active, 1);
    SSE_STAT_ADD(streams_started, 1);
    sse_trim_limit_conn(c); /* its pool memory returns when it ends */

    /* A write may block SSEWriteTimeout; this also lifts httpd's Timeout
     * as a cap on the stream's life. Only on HTTP/1.x: under HTTP/2 the
     * socket belongs to the main connection, which mod_http2 manages. */
    if (!c->master) {
        apr_socket_t *sock = ap_get_conn_socket(c);
        if (sock) {
            apr_socket_timeout_set(sock,
                                   apr_time_from_sec(dc->write_timeout_s));
            set_send_buffer(sock, dc->slow_lag);
        }
    }

    /* Subscribe before positioning the cursor: an event committed in
     * between then still wakes us (at worst one spurious wake-up). */
    sse_dispatch_register(ref, &q->waiter, &q->stream.filter);
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, APLOGNO(10547)
                  "stream %s started: %u channel(s), buffer %lu bytes%s%s",
                  q->stream.log_id, q->stream.filter.n,
                  (unsigned long)q->stream.buf_size,
                  leid ? ", resuming after " : "", leid ? leid : "");

    if (dc->mode != SSE_MODE_THREADED) {
        const char *why = sse_detach_ineligible(r);
        if (why)
            note_threaded(r, dc->mode, why);
        else
            detach = 1;
    }
    if (run_stream(q, leid, dc, detach))
        return OK; /* the detached loop serves it; httpd logs it now */

    sse_dispatch_unregister(&q->waiter);
    sse_stream_count_end(&q->stream);
    if (!c->master) {
        apr_socket_t *sock = ap_get_conn_socket(c);
        if (sock)
            apr_socket_timeout_set(sock, r->server->timeout);
        /* EventSource reconnects on a new connection anyway; closing lets
         * a stopping child go at once. */
        c->keepalive = AP_CONN_CLOSE;
    }
    return OK;
}

/*
 * sse_config.c - mod_sse directives, config create/merge and the start-up
 * check that refuses a stream location without a bus or channels.
 *
 * Invariants: create() gives every field its default and *_set = 0; merge()
 * takes the inner value when the inner section set it, else the outer one.
 * Parsers reject bad values at config time with a message that names the
 * directive, the value and what is allowed; nothing is checked per request
 * that could have been checked here.
 * Callers: mod_sse.c (directive table, check_config hook), sse_handler.c.
 */
#include <string.h>
#include <strings.h>

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"
#include "util_cfgtree.h"
#include "apr_strings.h"
#include "apr_lib.h"

#include "sse_bus.h"
#include "mod_sse.h"
#include "sse_config.h"

/* ------------------------------------------------------------ create/merge */

void *sse_create_dir_conf(apr_pool_t *p, char *dir)
{
    sse_dir_conf_t *c = apr_pcalloc(p, sizeof(*c));
    (void)dir;
    c->channels = apr_array_make(p, 2, sizeof(const char *));
    c->allow = apr_array_make(p, 2, sizeof(const char *));
    c->channel_param = SSE_DEFAULT_CHANNEL_PARAM;
    c->max_channels = SSE_DEFAULT_MAX_CHANNELS;
    c->retry_ms = SSE_DEFAULT_RETRY_MS;
    c->heartbeat_s = SSE_DEFAULT_HEARTBEAT_S;
    c->write_timeout_s = SSE_DEFAULT_WRITE_TIMEOUT_S;
    c->buffer_size = SSE_DEFAULT_BUFFER_SIZE;
    c->slow_policy = SSE_SLOW_SKIP;
    c->slow_lag = SSE_DEFAULT_SLOW_LAG;
    c->replay = 0;
    c->leid_param = SSE_DEFAULT_LEID_PARAM;
    c->mode = SSE_DEFAULT_MODE;
    c->retry_spread_ms = SSE_DEFAULT_RETRY_SPREAD_MS;
    return c;
}

#define SSE_MERGE(field)                                                     \
    do {                                                                     \
        c->field = add->field##_set ? add->field : base->field;              \
        c->field##_set = add->field##_set || base->field##_set;              \
    } while (0)

void *sse_merge_dir_conf(apr_pool_t *p, void *basev, void *addv)
{
    sse_dir_conf_t *base = basev, *add = addv;
    sse_dir_conf_t *c = apr_pcalloc(p, sizeof(*c));
    SSE_MERGE(bus_path);
    SSE_MERGE(channels);
    SSE_MERGE(allow);
    SSE_MERGE(channel_param);
    SSE_MERGE(max_channels);
    SSE_MERGE(retry_ms);
    SSE_MERGE(heartbeat_s);
    SSE_MERGE(write_timeout_s);
    SSE_MERGE(buffer_size);
    SSE_MERGE(slow_policy);
    SSE_MERGE(slow_lag);
    SSE_MERGE(replay);
    SSE_MERGE(leid_param);
    SSE_MERGE(mode);
    SSE_MERGE(retry_spread_ms);
    return c;
}

void *sse_create_srv_conf(apr_pool_t *p, server_rec *s)
{
    sse_srv_conf_t *c = apr_pcalloc(p, sizeof(*c));
    (void)s;
    c->max_streams = 0;
    c->detached_threads = SSE_DEFAULT_DETACHED_THREADS;
    c->detached_uring = 1;
    return c;
}

void *sse_merge_srv_conf(apr_pool_t *p, void *basev, void *addv)
{
    sse_srv_conf_t *base = basev, *add = addv;
    sse_srv_conf_t *c = apr_pcalloc(p, sizeof(*c));
    SSE_MERGE(max_streams);
    SSE_MERGE(detached_threads);
    SSE_MERGE(detached_coalesce_ms);
    SSE_MERGE(detached_uring);
    return c;
}

/* ---------------------------------------------------------------- helpers */

int sse_parse_size(const char *arg, apr_uint64_t *out)
{
    char *end = NULL;
    apr_int64_t v;
    apr_uint64_t mult = 1;

    if (!arg || !apr_isdigit(*arg))
        return -1;
    v = apr_strtoi64(arg, &end, 10);
    if (v < 0 || end == arg)
        return -1;
    if (*end) {
        switch (apr_tolower(*end)) {
        case 'k': mult = 1024ull; break;
        case 'm': mult = 1024ull * 1024; break;
        case 'g': mult = 1024ull * 1024 * 1024; break;
        default: return -1;
        }
        end++;
        if (*end == 'b' || *end == 'B') /* accept "64kB", "1MB" */
            end++;
        if (*end)
            return -1;
    }
    if ((apr_uint64_t)v > UINT64_MAX / mult)
        return -1;
    *out = (apr_uint64_t)v * mult;
    return 0;
}

/* Parse a non-negative integer in [lo, hi] or return an error message. */
static const char *parse_int(cmd_parms *cmd, const char *arg, int lo, int hi,
                             int *out)
{
    char *end = NULL;
    apr_int64_t v = apr_strtoi64(arg, &end, 10);
    if (!*arg || *end || v < lo || v > hi)
        return apr_psprintf(cmd->pool, "%s: '%s' is not a whole number "
                            "between %d and %d", cmd->cmd->name, arg, lo, hi);
    *out = (int)v;
    return NULL;
}

/* A whole number lo..hi for a directive allowed only in the global server
 * config; *set records that it was given. */
static const char *global_int(cmd_parms *cmd, const char *arg, int lo, int hi,
                              int *out, int *set)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    if (!err)
        err = parse_int(cmd, arg, lo, hi, out);
    if (!err)
        *set = 1;
    return err;
}

/* A channel name the bus would accept (non-empty, <= SSE_BUS_CHANNEL_MAX,
 * no control character: the bus's rule, else sse_bus_filter_add silently
 * drops the name at request time). Returns NULL or an error message. */
static const char *check_channel(cmd_parms *cmd, const char *name)
{
    size_t len = strlen(name), i;
    for (i = 0; i < len; i++)
        if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
            break;
    if (len == 0 || len > SSE_BUS_CHANNEL_MAX || i < len)
        return apr_psprintf(cmd->pool, "%s: channel name '%s' is invalid: "
                            "it must be 1 to %d bytes without control "
                            "characters (tab, CR, LF, ...)",
                            cmd->cmd->name, name, SSE_BUS_CHANNEL_MAX);
    return NULL;
}

/* -------------------------------------------------------------- directives */

/* SSEBus PATH
 * Context: server config, virtual host, directory (<Location> etc.).
 * Default: none; required wherever `SetHandler sse-stream` is used.
 * The bus file written by `sse-pub`; httpd maps it read-only and never
 * creates it (create it with `sse-pub create PATH --group www-data`). */
const char *sse_cmd_bus(cmd_parms *cmd, void *dc, const char *arg)
{
    sse_dir_conf_t *c = dc;
    if (!*arg)
        return "SSEBus: expects the path of a bus file created by "
               "`sse-pub create PATH`";
    c->bus_path = ap_server_root_relative(cmd->pool, arg);
    if (!c->bus_path)
        return apr_psprintf(cmd->pool, "SSEBus: invalid path '%s'", arg);
    c->bus_path_set = 1;
    return NULL;
}

/* SSEChannel NAME [NAME ...]
 * Context: server config, virtual host, directory (<Location> etc.).
 * Default: none. Fixed channel(s) every stream of this location follows.
 * Repeating the directive in the same section adds channels. */
const char *sse_cmd_channel(cmd_parms *cmd, void *dc, const char *arg)
{
    sse_dir_conf_t *c = dc;
    const char *err = check_channel(cmd, arg);
    if (err)
        return err;
    if (c->channels->nelts >= SSE_MAX_CHANNELS_LIMIT)
        return apr_psprintf(cmd->pool, "SSEChannel: at most %d channels per "
                            "location", SSE_MAX_CHANNELS_LIMIT);
    APR_ARRAY_PUSH(c->channels, const char *) = apr_pstrdup(cmd->pool, arg);
    c->channels_set = 1;
    return NULL;
}

/* SSEChannelAllow PATTERN [PATTERN ...]
 * Context: server config, virtual host, directory (<Location> etc.).
 * Default: none (clients cannot choose channels). Lets a client pick
 * channels with ?channel=a&channel=b (or a,b); each must match one of these
 * fnmatch(3) patterns ("chat.*", "room-?") or the request gets 403. */
const char *sse_cmd_channel_allow(cmd_parms *cmd, void *dc, const char *arg)
{
    sse_dir_conf_t *c = dc;
    if (!*arg || strpbrk(arg, "\r\n"))
        return "SSEChannelAllow: expects one or more non-empty fnmatch "
               "patterns, e.g. SSEChannelAllow \"chat.*\" \"room-?\"";
    APR_ARRAY_PUSH(c->allow, const char *) = apr_pstrdup(cmd->pool, arg);
    c->allow_set = 1;
    return NULL;
}

/* SSEChannelParam NAME
 * Context: server config, virtual host, directory (<Location> etc.).
 * Default: channel. Query parameter carrying client-chosen channels. */
const char *sse_cmd_channel_param(cmd_parms *cmd, void *dc, const char *arg)
{
    sse_dir_conf_t *c = dc;
    if (!*arg || strpbrk(arg, "&=#?"))
        return "SSEChannelParam: expects a query parameter name without "
               "'&', '=', '#' or '?'";
    c->channel_param = apr_pstrdup(cmd->pool, arg);
    c->channel_param_set = 1;
    return NULL;
}

/* SSEMaxChannels N
 * Context: server config, virtual host, directory (<Location> etc.).
 * Default: 8; 1..32. Most channels one stream may follow (fixed plus
 * client-chosen); beyond it the request gets 400. */
const char *sse_cmd_max_channels(cmd_parms *cmd, void *dc, const char *arg)
{
    sse_dir_conf_t *c = dc;
    const char *err = parse_int(cmd, arg, 1, SSE_MAX_CHANNELS_LIMIT,
                                &c->max_channels);
    if (!err)
        c->max_channels_set = 1;
    return err;
}

/* SSERetry MS
 * Context: server config, virtual host, directory (<Location> etc.).
 * Default: 3000; 0 = do not send. Reconnect delay sent as "retry:" at the
 * start of each stream and when a stream is ended by the server. */
const char *sse_cmd_retry(cmd_parms *cmd, void *dc, const char *arg)
{
    sse_dir_conf_t *c = dc;
    const char *err = parse_int(cmd, arg, 0, 86400000, &c->retry_ms);
    if (!err)
        c->retry_ms_set = 1;
    return err;
}

/* SSEHeartbeat SECONDS
 * Context: server config, virtual host, directory (<Location> etc.).
 * Default: 15; 0 = off. After this long without sending anything, a
 * ": hb" comment is sent; it keeps proxies from closing the connection and
 * is how a dead idle client is found. */
const char *sse_cmd_heartbeat(cmd_parms *cmd, void *dc, const char *arg)
{
    sse_dir_conf_t *c = dc;
    const char *err = parse_int(cmd, arg, 0, 86400, &c->heartbeat_s);
    if (!err)
        c->heartbeat_s_set = 1;
    return err;
}

/* SSEWriteTimeout SECONDS
 * Context: server config, virtual host, directory (<Location> etc.).
 * Default: 30; 1..86400. How long one write may block before the stream is
 * closed. It replaces httpd's Timeout for the stream's socket: a stream has
 * no total lifetime cap. */
const char *sse_cmd_write_timeout(cmd_parms *cmd, void *dc, const char *arg)
{
    sse_dir_conf_t *c = dc;
    const char *err = parse_int(cmd, arg, 1, 86400, &c->write_timeout_s);
    if (!err)
        c->write_timeout_s_set = 1;
    return err;
}

/* SSEBufferSize SIZE
 * Context: server config, virtual host, directory (<Location> etc.).
 * Default: 64k; 4k..64M; suffixes k, M. Fixed per-stream copy buffer (one
 * pass of events); raised to the bus's max record size if smaller. */
const char *sse_cmd_buffer_size(cmd_parms *cmd, void *dc, const char *arg)
{
    sse_dir_conf_t *c = dc;
    apr_uint64_t v;
    if (sse_parse_size(arg, &v) || v < SSE_MIN_BUFFER_SIZE
        || v > SSE_MAX_BUFFER_SIZE)
        return apr_psprintf(cmd->pool, "SSEBufferSize: '%s' is not a size "
                            "between 4k and 64M (e.g. 64k, 1M)", arg);
    c->buffer_size = (apr_size_t)v;
    c->buffer_size_set = 1;
    return NULL;
}

/* SSESlowClient skip|close
 * Context: server config, virtual host, directory (<Location> etc.).
 * Default: skip. What to do with a client more than SSESlowClientLag
 * behind the bus head: skip ahead to the head (sending ": skipped N
 * events") or close the stream. */
const char *sse_cmd_slow_client(cmd_parms *cmd, void *dc, const char *arg)
{
    sse_dir_conf_t *c = dc;
    (void)cmd;
    if (!strcasecmp(arg, "skip"))
        c->slow_policy = SSE_SLOW_SKIP;
    else if (!strcasecmp(arg, "close"))
        c->slow_policy = SSE_SLOW_CLOSE;
    else
        return "SSESlowClient: expects 'skip' or 'close'";
    c->slow_policy_set = 1;
    return NULL;
}

/* SSESlowClientLag SIZE
 * Context: server config, virtual host, directory (<Location> etc.).
 * Default: 1M; suffixes k, M, G. Bus bytes between a stream's cursor and
 * the head beyond which the client counts as slow. */
const char *sse_cmd_slow_client_lag(cmd_parms *cmd, void *dc, const char *arg)
{
    sse_dir_conf_t *c = dc;
    apr_uint64_t v;
    if (sse_parse_size(arg, &v) || v == 0)
        return apr_psprintf(cmd->pool, "SSESlowClientLag: '%s' is not a "
                            "positive size (e.g. 256k, 1M)", arg);
    c->slow_lag = v;
    c->slow_lag_set = 1;
    return NULL;
}

/* SSEReplay N
 * Context: server config, virtual host, directory (<Location> etc.).
 * Default: 0. A new client without Last-Event-ID starts N events back
 * (counted over all channels of the bus) instead of at the newest. */
const char *sse_cmd_replay(cmd_parms *cmd, void *dc, const char *arg)
{
    sse_dir_conf_t *c = dc;
    const char *err = parse_int(cmd, arg, 0, 1000000, &c->replay);
    if (!err)
        c->replay_set = 1;
    return err;
}

/* SSELastEventIDParam NAME
 * Context: server config, virtual host, directory (<Location> etc.).
 * Default: lastEventId. Query parameter accepted as Last-Event-ID (the
 * header wins when both are present). */
const char *sse_cmd_leid_param(cmd_parms *cmd, void *dc, const char *arg)
{
    sse_dir_conf_t *c = dc;
    if (!*arg || strpbrk(arg, "&=#?"))
        return "SSELastEventIDParam: expects a query parameter name without "
               "'&', '=', '#' or '?'";
    c->leid_param = apr_pstrdup(cmd->pool, arg);
    c->leid_param_set = 1;
    return NULL;
}

/* SSEMaxStreams N
 * Context: server config, virtual host.
 * Default: 0 = unlimited. Concurrent streams per child process; beyond it
 * a request gets 503 with Retry-After. */
const char *sse_cmd_max_streams(cmd_parms *cmd, void *dc, const char *arg)
{
    sse_srv_conf_t *c = ap_get_module_config(cmd->server->module_config,
                                             &sse_module);
    const char *err = ap_check_cmd_context(cmd, NOT_IN_DIR_CONTEXT);
    (void)dc;
    if (err)
        return err;
    err = parse_int(cmd, arg, 0, 1000000, &c->max_streams);
    if (!err)
        c->max_streams_set = 1;
    return err;
}

const char *sse_mode_str(sse_mode_t m)
{
    switch (m) {
    case SSE_MODE_THREADED: return "threaded";
    case SSE_MODE_DETACHED: return "detached";
    case SSE_MODE_AUTO: return "auto";
    }
    return "?";
}

/* SSEMode threaded|detached|auto
 * Context: server config, virtual host, directory (<Location> etc.).
 * Default: threaded. threaded: the stream holds a worker thread for its
 * life. detached: after the headers, the socket is handed to the child's
 * epoll loop (plain HTTP/1.x on the event MPM only; elsewhere the stream
 * stays threaded and the error log says why, once per child and reason).
 * auto: detached wherever that is possible, silently threaded elsewhere. */
const char *sse_cmd_mode(cmd_parms *cmd, void *dc, const char *arg)
{
    sse_dir_conf_t *c = dc;
    (void)cmd;
    if (!strcasecmp(arg, "threaded"))
        c->mode = SSE_MODE_THREADED;
    else if (!strcasecmp(arg, "detached"))
        c->mode = SSE_MODE_DETACHED;
    else if (!strcasecmp(arg, "auto"))
        c->mode = SSE_MODE_AUTO;
    else
        return "SSEMode: expects 'threaded', 'detached' or 'auto'";
    c->mode_set = 1;
    return NULL;
}

/* SSERetrySpread MS
 * Context: server config, virtual host, directory (<Location> etc.).
 * Default: 2000; 0 = none. When a graceful restart or stop ends a stream,
 * its final "retry:" is SSERetry plus a random 0..MS, so that thousands of
 * clients do not reconnect in the same millisecond. */
const char *sse_cmd_retry_spread(cmd_parms *cmd, void *dc, const char *arg)
{
    sse_dir_conf_t *c = dc;
    const char *err = parse_int(cmd, arg, 0, 3600000, &c->retry_spread_ms);
    if (!err)
        c->retry_spread_ms_set = 1;
    return err;
}

/* SSEDetachedThreads N
 * Context: server config (global).
 * Default: 1; 1..64. Event-loop threads per child serving detached
 * streams; streams are spread across them round-robin. */
const char *sse_cmd_detached_threads(cmd_parms *cmd, void *dc,
                                     const char *arg)
{
    sse_srv_conf_t *c = ap_get_module_config(cmd->server->module_config,
                                             &sse_module);
    (void)dc;
    return global_int(cmd, arg, 1, SSE_MAX_DETACHED_THREADS,
                      &c->detached_threads, &c->detached_threads_set);
}

/* SSEDetachedCoalesce MS
 * Context: server config (global).
 * Default: 0 (off); 0..1000. After a quiet spell (no round for MS) a
 * detached loop writes at once; otherwise what is raised waits until MS
 * after the loop first saw it, with whatever else is raised meanwhile, so
 * each stream gets those events in one write: fewer system calls and TCP
 * segments per event (less CPU) for up to MS more latency. */
const char *sse_cmd_detached_coalesce(cmd_parms *cmd, void *dc,
                                      const char *arg)
{
    sse_srv_conf_t *c = ap_get_module_config(cmd->server->module_config,
                                             &sse_module);
    (void)dc;
    return global_int(cmd, arg, 0, SSE_MAX_DETACHED_COALESCE_MS,
                      &c->detached_coalesce_ms, &c->detached_coalesce_ms_set);
}

/* SSEDetachedIOUring On|Off
 * Context: server config (global).
 * Default: On. A detached loop hands the writes of a round to the kernel
 * in one io_uring submission instead of one sendmsg per stream, where
 * mod_sse was built with liburing and the kernel allows io_uring (else it
 * uses sendmsg and says why once per child). Off: always sendmsg. */
const char *sse_cmd_detached_uring(cmd_parms *cmd, void *dc, int on)
{
    sse_srv_conf_t *c = ap_get_module_config(cmd->server->module_config,
                                             &sse_module);
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    (void)dc;
    if (err)
        return err;
    c->detached_uring = on;
    c->detached_uring_set = 1;
    return NULL;
}

/* ----------------------------------------------------- start-up validation */

/* What a scope (the server, a <VirtualHost>, a <Location>...) provides. */
typedef struct {
    int has_bus;
    int has_channel;
} scope_t;

static int is_conditional(const ap_directive_t *d)
{
    /* <IfModule>, <IfDefine>, <IfFile>, <IfDirective>, <IfSection>, <If>,
     * <Else>...: their contents belong to the enclosing scope. */
    return d->directive[0] == '<'
           && (!strncasecmp(d->directive + 1, "If", 2)
               || !strncasecmp(d->directive + 1, "Else", 4));
}

static int is_section(const ap_directive_t *d)
{
    return d->directive[0] == '<' && !is_conditional(d);
}

static void scan_scope(const ap_directive_t *d, scope_t *sc)
{
    for (; d; d = d->next) {
        if (is_conditional(d))
            scan_scope(d->first_child, sc);
        else if (!strcasecmp(d->directive, "SSEBus"))
            sc->has_bus = 1;
        else if (!strcasecmp(d->directive, "SSEChannel")
                 || !strcasecmp(d->directive, "SSEChannelAllow"))
            sc->has_channel = 1;
    }
}

static int is_sse_sethandler(const ap_directive_t *d)
{
    const char *a = d->args;
    size_t n = strlen(SSE_HANDLER_STREAM);
    if (strcasecmp(d->directive, "SetHandler") || !a)
        return 0;
    if (*a == '"' || *a == '\'')
        a++;
    return !strncasecmp(a, SSE_HANDLER_STREAM, n)
           && (a[n] == '\0' || a[n] == '"' || a[n] == '\''
               || apr_isspace(a[n]));
}

static int check_scope(const ap_directive_t *first, scope_t inherited,
                       server_rec *s, apr_pool_t *ptemp)
{
    scope_t sc = inherited;
    const ap_directive_t *d;
    int bad = 0;

    scan_scope(first, &sc);
    for (d = first; d; d = d->next) {
        if (is_conditional(d)) {
            /* Same scope: check its SetHandlers against sc, recurse into
             * its sections with sc. */
            bad |= check_scope(d->first_child, sc, s, ptemp);
        }
        else if (is_section(d)) {
            bad |= check_scope(d->first_child, sc, s, ptemp);
        }
        else if (is_sse_sethandler(d) && (!sc.has_bus || !sc.has_channel)) {
            const char *sect = d->parent ? apr_pstrcat(ptemp,
                d->parent->directive, " ", d->parent->args, NULL)
                : "server config";
            ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s, APLOGNO(10500)
                "%s line %d: `SetHandler sse-stream` in %s has no %s: add "
                "%s to the same section (or an enclosing one)",
                d->filename, d->line_num, sect,
                !sc.has_bus ? "SSEBus" : "SSEChannel or SSEChannelAllow",
                !sc.has_bus
                    ? "`SSEBus /run/sse/main.bus` (create the bus with "
                      "`sse-pub create PATH --group www-data`)"
                    : "`SSEChannel NAME` (fixed channels) or "
                      "`SSEChannelAllow PATTERN` (client-chosen)");
            bad = 1;
        }
    }
    return bad;
}

int sse_check_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp,
                     server_rec *s)
{
    scope_t top = { 0, 0 };
    (void)pconf;
    (void)plog;
    if (check_scope(ap_conftree, top, s, ptemp))
        return HTTP_INTERNAL_SERVER_ERROR;
    return OK;
}

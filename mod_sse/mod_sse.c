/*
 * mod_sse.c - module record for mod_sse: Server-Sent Events for httpd 2.4,
 * fed by the shared-memory event bus (include/sse_bus.h).
 *
 * Only wiring lives here: the directive table (parsers in sse_config.c),
 * and every hook, registered in one register_hooks:
 *   check_config    refuse `SetHandler sse-stream` without SSEBus/channels
 *                   (runs on `apache2 -t` too, unlike post_config);
 *   child_init      set up the per-child dispatcher registry and its
 *                   shutdown cleanup (dispatcher threads start lazily, one
 *                   per bus, on the first stream that needs them);
 *   child_stopping  graceful restart/stop: wake every stream so it sends
 *                   "retry:" and ends now, not at GracefulShutdownTimeout;
 *   post_config     create (or find again after a restart) the shared
 *                   statistics (sse_stats.c);
 *   handler         sse_handler (sse_handler.c), sse_metrics_handler
 *                   (sse_metrics.c);
 *   status_hook     mod_status's optional hook: the SSE section of
 *                   server-status (sse_status.c).
 */
#define SSE_MODULE_MAIN 1
#include "httpd.h"
#include "http_config.h"
#include "http_request.h"
#include "http_core.h"
#include "http_main.h"
#include "mpm_common.h"
#include "mod_status.h"

#include "mod_sse.h"
#include "sse_config.h"
#include "sse_detach.h"
#include "sse_dispatch.h"
#include "sse_stats.h"

static void sse_child_init(apr_pool_t *pchild, server_rec *s)
{
    sse_stats_child_init(pchild, s); /* before anything can count */
    sse_dispatch_child_init(pchild, s);
    sse_detach_child_init(pchild, s); /* after: its pre-cleanup runs first */
}

static int sse_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                           apr_pool_t *ptemp, server_rec *s)
{
    int rv = sse_stats_post_config(pconf, plog, ptemp, s);
    if (rv == OK && ap_state_query(AP_SQ_MAIN_STATE)
                        != AP_SQ_MS_CREATE_PRE_CONFIG)
        sse_detach_check_mpm(s);
    return rv;
}

static void sse_child_stopping(apr_pool_t *pchild, int graceful)
{
    (void)pchild;
    (void)graceful;
    sse_dispatch_child_stopping();
}

static const command_rec sse_cmds[] = {
    AP_INIT_TAKE1("SSEBus", sse_cmd_bus, NULL, RSRC_CONF | ACCESS_CONF,
                  "path of the bus file created by `sse-pub create`"),
    AP_INIT_ITERATE("SSEChannel", sse_cmd_channel, NULL,
                    RSRC_CONF | ACCESS_CONF,
                    "fixed channel(s) streamed by this location"),
    AP_INIT_ITERATE("SSEChannelAllow", sse_cmd_channel_allow, NULL,
                    RSRC_CONF | ACCESS_CONF,
                    "fnmatch patterns of channels a client may choose"),
    AP_INIT_TAKE1("SSEChannelParam", sse_cmd_channel_param, NULL,
                  RSRC_CONF | ACCESS_CONF,
                  "query parameter naming client-chosen channels "
                  "(default channel)"),
    AP_INIT_TAKE1("SSEMaxChannels", sse_cmd_max_channels, NULL,
                  RSRC_CONF | ACCESS_CONF,
                  "most channels per stream, 1-32 (default 8)"),
    AP_INIT_TAKE1("SSERetry", sse_cmd_retry, NULL, RSRC_CONF | ACCESS_CONF,
                  "reconnect delay in ms sent as retry: (default 3000, "
                  "0 = none)"),
    AP_INIT_TAKE1("SSEHeartbeat", sse_cmd_heartbeat, NULL,
                  RSRC_CONF | ACCESS_CONF,
                  "seconds of idleness before a heartbeat comment "
                  "(default 15, 0 = off)"),
    AP_INIT_TAKE1("SSEWriteTimeout", sse_cmd_write_timeout, NULL,
                  RSRC_CONF | ACCESS_CONF,
                  "seconds one write may block before the stream is closed "
                  "(default 30)"),
    AP_INIT_TAKE1("SSEBufferSize", sse_cmd_buffer_size, NULL,
                  RSRC_CONF | ACCESS_CONF,
                  "per-stream copy buffer, e.g. 64k (default 64k)"),
    AP_INIT_TAKE1("SSESlowClient", sse_cmd_slow_client, NULL,
                  RSRC_CONF | ACCESS_CONF,
                  "skip or close a client that falls behind (default skip)"),
    AP_INIT_TAKE1("SSESlowClientLag", sse_cmd_slow_client_lag, NULL,
                  RSRC_CONF | ACCESS_CONF,
                  "bus backlog that makes a client slow, e.g. 1M "
                  "(default 1M)"),
    AP_INIT_TAKE1("SSEReplay", sse_cmd_replay, NULL, RSRC_CONF | ACCESS_CONF,
                  "events replayed to a new client without Last-Event-ID "
                  "(default 0)"),
    AP_INIT_TAKE1("SSELastEventIDParam", sse_cmd_leid_param, NULL,
                  RSRC_CONF | ACCESS_CONF,
                  "query parameter accepted as Last-Event-ID "
                  "(default lastEventId)"),
    AP_INIT_TAKE1("SSEMaxStreams", sse_cmd_max_streams, NULL, RSRC_CONF,
                  "concurrent streams per child process (default 0 = "
                  "unlimited)"),
    AP_INIT_TAKE1("SSEMode", sse_cmd_mode, NULL, RSRC_CONF | ACCESS_CONF,
                  "threaded, detached or auto: who serves an open stream "
                  "(default threaded)"),
    AP_INIT_TAKE1("SSERetrySpread", sse_cmd_retry_spread, NULL,
                  RSRC_CONF | ACCESS_CONF,
                  "ms of random spread added to retry: when a restart ends "
                  "streams (default 2000)"),
    AP_INIT_TAKE1("SSEDetachedThreads", sse_cmd_detached_threads, NULL,
                  RSRC_CONF,
                  "event-loop threads per child for detached streams "
                  "(default 1)"),
    AP_INIT_TAKE1("SSEDetachedCoalesce", sse_cmd_detached_coalesce, NULL,
                  RSRC_CONF,
                  "ms a detached loop gathers new events before writing "
                  "them, one write per stream (default 0 = at once)"),
    AP_INIT_FLAG("SSEDetachedIOUring", sse_cmd_detached_uring, NULL,
                 RSRC_CONF,
                 "On: a detached loop submits a round's writes through "
                 "io_uring where the kernel allows it (default On)"),
    { NULL }
};

static void sse_register_hooks(apr_pool_t *p)
{
    (void)p;
    ap_hook_check_config(sse_check_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(sse_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(sse_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_stopping(sse_child_stopping, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(sse_handler, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(sse_metrics_handler, NULL, NULL, APR_HOOK_MIDDLE);
    APR_OPTIONAL_HOOK(ap, status_hook, sse_status_hook, NULL, NULL,
                      APR_HOOK_MIDDLE);
}

AP_DECLARE_MODULE(sse) = {
    STANDARD20_MODULE_STUFF,
    sse_create_dir_conf,
    sse_merge_dir_conf,
    sse_create_srv_conf,
    sse_merge_srv_conf,
    sse_cmds,
    sse_register_hooks,
    AP_MODULE_FLAG_NONE
};

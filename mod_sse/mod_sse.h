/*
 * mod_sse.h - declarations shared by the parts of the httpd module.
 *
 * The module is thin glue over the bus library (include/sse_bus.h):
 *   sse_config.c    directives, per-dir/server config, start-up validation
 *   sse_dispatch.c  per-child registry of mapped buses + one dispatcher
 *                   thread per bus that wakes the streams of each channel
 *   sse_stream.c    what a stream sends (cursor, filter, policies, stats),
 *                   independent of how bytes reach the client (the sink)
 *   sse_handler.c   the request handler and the threaded brigade sink
 *   sse_detach.c    detached streams: per-child epoll loops, the
 *                   non-blocking sink, the hand-off from the handler
 *   mod_sse.c       module record, directive table, hook registration
 *
 * Log message numbers: this module uses APLOGNO(10500) .. APLOGNO(10599),
 * a private range chosen so as not to collide with httpd's own numbers.
 */
#ifndef MOD_SSE_H
#define MOD_SSE_H

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"

#include "apr_pools.h"

/* mod_sse.c declares the module itself (AP_DECLARE_MODULE includes this). */
#if defined(APLOG_USE_MODULE) && !defined(SSE_MODULE_MAIN)
APLOG_USE_MODULE(sse);
#endif

extern module AP_MODULE_DECLARE_DATA sse_module;

/* Handler names (SetHandler ...). */
#define SSE_HANDLER_STREAM "sse-stream"

/* Request handler (sse_handler.c). */
int sse_handler(request_rec *r);

#endif /* MOD_SSE_H */

/*
 * sse_detach.h - detached streams: plain HTTP/1.x SSE streams handed from
 * an httpd worker thread to a per-child epoll loop, so that an idle client
 * costs one small record instead of a worker thread.
 *
 * The stream logic (cursor, filter, resume, policies, heartbeats, stats) is
 * sse_stream.c's, unchanged: a detached stream is an sse_stream_t with a
 * second sink (non-blocking sendmsg of the same wire format: one HTTP/1.1
 * chunk per flush, "0\r\n\r\n" at a server-side end). See sse_detach.c for
 * the loop, its locking and the lifetime rules.
 *
 * Callers: sse_handler.c (eligibility, hand-off), mod_sse.c (child_init,
 * post_config), sse_status.c / sse_metrics.c (through sse_stats only).
 */
#ifndef SSE_DETACH_H
#define SSE_DETACH_H

#include "httpd.h"
#include "apr_atomic.h"

#include "sse_dispatch.h"
#include "sse_stream.h"

/* Why a request may not be detached; NULL when it may. Static strings.
 * Checked before the first byte (protocol, TLS, h2, MPM) and again after
 * the first flush (output filters, bytes still held by httpd). */
const char *sse_detach_ineligible(request_rec *r);
const char *sse_detach_ineligible_after_flush(request_rec *r);

/* What the hand-off moves out of the request; everything the loop keeps
 * is copied (r and c die when the handler returns). */
typedef struct sse_detach_args {
    request_rec *r;
    sse_stream_t *stream;       /* begun and pumped; s->used == 0 */
    sse_busref_t *ref;          /* reference passed to the loop */
    apr_uint32_t *open_counter; /* decremented when the stream ends */
    int write_timeout_s;
} sse_detach_args_t;

/* Hand the stream's socket to a loop thread. On APR_SUCCESS the loop owns
 * a duplicate of the socket, the bus reference, one open_counter slot and
 * one streams_active count; the caller has marked nothing yet and must set
 * c->aborted / c->keepalive (done here) and forget the reference and the
 * counts. On failure nothing was taken and the stream goes on threaded. */
apr_status_t sse_detach_handoff(sse_detach_args_t *a);

/* child_init: remember the child pool and the loop count; loops start
 * lazily on the first hand-off. Registers the pre-cleanup that ends every
 * detached stream (retry:, terminating chunk) and joins the loops. Call
 * after sse_dispatch_child_init (pre-cleanups run in reverse order). */
void sse_detach_child_init(apr_pool_t *pchild, server_rec *s);

/* post_config: warn about MPM settings that retire children holding
 * detached streams (MaxConnectionsPerChild, MaxSpareThreads). */
void sse_detach_check_mpm(server_rec *s);

#endif /* SSE_DETACH_H */

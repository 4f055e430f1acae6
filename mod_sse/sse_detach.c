/*
 * sse_detach.c - detached streams: after the headers and first bytes went
 * out through httpd's filters, a plain HTTP/1.x stream's socket is
 * duplicated and handed to one of the child's event-loop threads; the
 * worker thread returns to httpd's pool. The loop writes the same wire
 * format with non-blocking sendmsg (one HTTP/1.1 chunk per flush pass,
 * "0\r\n\r\n" when the server ends the stream), reads and discards what the
 * client sends, and sees FIN/RST/HUP at once through epoll.
 *
 * Shape (per child): SSEDetachedThreads loops, started on the first
 * hand-off; each owns an epoll set, an eventfd and a ready list. The bus
 * dispatcher raises a detached stream's waiter as for any stream; the
 * waiter's notify hook (sse_dispatch.h) puts the stream on its loop's
 * ready list (loop->mu) and writes the eventfd when the list was empty.
 * The loop takes the ready list in batches (one hold of loop->mu per
 * batch) and pumps each stream through sse_stream.c - the same stream
 * logic as threaded mode, with this file's sink. With SSEDetachedCoalesce
 * the loop serves ready streams at most once per window, so a stream gets
 * the events of a window in one sendmsg: the profile of a loop is ~85 %
 * kernel TCP send (on loopback including the receiver's softirq), a fixed
 * cost per segment, so fewer segments is what saves CPU.
 *
 * io_uring (SSEDetachedIOUring, default on where built with liburing and
 * allowed by the kernel): instead of one sendmsg per stream, a write is
 * copied into the loop's arena and queued as an IORING_OP_SEND with
 * MSG_DONTWAIT; at the end of each loop phase (epoll events, ready batch,
 * tick: loop_settle) one io_uring_enter submits them all. Non-blocking
 * sends complete inside that call, so each result is applied at once, as
 * sendmsg's would be: short or EAGAIN -> the rest to pending, an error ->
 * the stream is marked and finished after the flush (never from inside
 * it: a flush can run in the middle of another stream's pump). A stream
 * has at most one queued send (a later pass grows it while it is the
 * newest, else the ring is flushed first) and a stream's queued send is
 * flushed before anything else is written to or done with its socket
 * (finish), so bytes stay in order. This saves the per-stream system
 * call and socket lookup, ~20 % of a loop's CPU at 1000 streams.
 *
 * Memory per stream: one malloc'd record (sse_dstream_t) holding the
 * stream's sse_stream_t itself (a few hundred bytes: the bus filter is
 * compact, its names live in the same allocation, after the waiter), the
 * waiter with only the subscriptions it uses, and the log id. The
 * stream's copy buffer is the loop's scratch buffer, lent per call (the busy()
 * sink hook guarantees nothing stays staged in it between calls); bytes
 * the socket does not take are copied into a
 * per-stream pending buffer, malloc'd when a send is partial and freed when
 * it drains. While pending is not empty the stream is "busy": it is not
 * pumped (its cursor stays behind in the bus, where the slow-client policy
 * sees the lag once it can write again), it gets no heartbeats, and it is
 * closed when no byte could be written for SSEWriteTimeout or when pending
 * would exceed two passes (slow client closed). When the last stream of a
 * loop has gone the scratch buffer is unmapped; ends (and hand-offs, after
 * which httpd frees the connection's pools) are reported to sse_trim.c,
 * which trims malloc once they are over; a child that may detach also
 * makes glibc return arena tops on free (sse_trim_child_init).
 *
 * Lifetime and locking:
 *   - loop->mu guards the ready list, each record's queued/fresh flags and
 *     loop->quit; never held while calling into the dispatcher. Lock order
 *     (from sse_dispatch.c): ref->mu -> w->mu is released -> loop->mu;
 *   - everything else of a record and of the loop (the all list, epoll,
 *     pending buffer, the stream itself) belongs to the loop thread once
 *     the hand-off pushed the record as "fresh";
 *   - a stream that ends is unregistered from the dispatcher first (after
 *     that no notify can name it: raises run under the busref's mutex),
 *     unlinked from the ready list, its fd closed, and the record put on
 *     the dead list; dead records are freed only after the whole epoll
 *     batch (which may still hold events naming them) is done.
 *   - counts: the hand-off moves the request's SSEMaxStreams slot
 *     (open_counter), its streams_active count and the bus reference to
 *     the record; finish() gives them back exactly once.
 *   - stopping: child_stopping raises STOP on every waiter (and the tick
 *     checks sse_dispatch_stopping()): every stream ends with "retry:"
 *     (SSERetry + random SSERetrySpread) and the terminating chunk. The
 *     pchild pre-cleanup sets quit, which ends whatever is left, and joins
 *     the loops before the dispatcher's cleanup runs.
 *
 * Callers: sse_handler.c (sse_detach_ineligible*, sse_detach_handoff),
 * mod_sse.c (child_init, post_config).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#ifdef SSE_HAVE_URING
#include <liburing.h>
#endif

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_ssl.h"
#include "ap_mpm.h"
#include "mpm_common.h"
#include "util_filter.h"
#include "apr_portable.h"
#include "apr_strings.h"

#include "mod_sse.h"
#include "sse_config.h"
#include "sse_detach.h"
#include "sse_trim.h"

#define SSE_DETACH_TICK apr_time_from_msec(250) /* heartbeats, timeouts */
/* A stream behind the bus head is pumped at least this often even without
 * a wake-up (as a threaded stream's timed wait does): a subscription that
 * could not be made (out of memory) or a missed wake-up costs latency,
 * never events. */
#define SSE_DETACH_REPUMP apr_time_from_sec(1)
#define SSE_DETACH_MAX_EVENTS 256
#define SSE_DETACH_READY_BATCH 1024 /* ready streams per loop round */
/* io_uring sends: SQ entries per loop (one round of a full ready batch
 * fits in one submission) and the arena the round's bytes are copied to
 * until they are submitted. */
#define SSE_DETACH_RING_ENTRIES 1024
#define SSE_DETACH_ARENA (256 * 1024)

/* queue_send() outcomes */
#define SSE_Q_QUEUED 0   /* in the ring; its result comes with the flush */
#define SSE_Q_FLUSHED 1  /* the ring was flushed first: look at d again */
#define SSE_Q_DIRECT 2   /* not queued: send it with sendmsg */

typedef struct sse_loop sse_loop_t;

typedef struct sse_dstream {
    sse_loop_t *loop;
    sse_busref_t *ref;
    apr_uint32_t *open_counter;
    int fd;
    int chunked;                /* HTTP/1.1 chunked, else close-delimited */
    int attached;               /* in epoll and on the all list */
    int want_out;               /* EPOLLOUT is in the epoll mask */
    int peer_gone;
    int overflow;               /* pending would exceed pend_max */
    int closed;                 /* finished; on the dead list */
    int queued, fresh;          /* loop->mu */
    int bfresh;                 /* loop thread: fresh, in the served batch */
    struct sse_dstream *bnext;  /* loop thread: the batch being served */
    struct sse_dstream *rnext, *rprev;  /* ready list, loop->mu */
    struct sse_dstream *anext, *aprev;  /* all list, loop thread */
    struct sse_dstream *dnext;          /* dead list, loop thread */
    char *pend;                 /* unsent bytes [pend_off, pend_len) */
    size_t pend_off, pend_len, pend_cap, pend_max;
    apr_time_t blocked_since;   /* last progress while busy */
    apr_interval_time_t write_timeout;
    apr_time_t started;
    apr_time_t last_pump;       /* see SSE_DETACH_REPUMP */
    server_rec *server;
    char *log_id;               /* "client-ip URI", in this allocation */
    /* io_uring (loop thread): this stream's send queued in the loop's ring
     * and not reaped yet, bytes [q_buf, q_buf + q_len) of the arena; at
     * most one per stream (a second pass grows it while it is the newest,
     * else the ring is flushed first), so bytes stay in order. */
    char *q_buf;
    size_t q_len;
    struct sse_dstream *qnext;  /* loop->queued list */
    /* A send result ended the stream (reset, overflow): finished by
     * finish_failed() at the next safe point, with send_err. */
    int failed;
    apr_status_t send_err;
    struct sse_dstream *fnext;  /* loop->failed list */
    /* The stream; st.buf is NULL except while lent (stream_lend);
     * st.filter's names live in this allocation, after the waiter. */
    sse_stream_t st;
    /* Last: allocated with only the subscriptions the stream uses. */
    sse_waiter_t waiter;        /* notify -> loop ready list */
} sse_dstream_t;

_Static_assert(offsetof(sse_waiter_t, subs)
               + sizeof(((sse_waiter_t *)0)->subs) == sizeof(sse_waiter_t),
               "sse_waiter_t: subs must be its last member");

struct sse_loop {
    int index;
    int epfd, evfd;
    pthread_t thread;
    int started;

    pthread_mutex_t mu;          /* guards the three fields below */
    sse_dstream_t *ready_head, *ready_tail;
    int quit;

    /* loop thread only */
    sse_dstream_t *all, *dead;
    unsigned nstreams;
    char *scratch;
    size_t scratch_size;
    apr_time_t last_tick;
    apr_time_t now;              /* this round's clock (one read per round) */
    apr_interval_time_t coalesce; /* SSEDetachedCoalesce */
    apr_time_t last_serve;       /* when ready streams were last served */
    apr_time_t ready_since;      /* when the loop first saw the ready list
                                    non-empty since it last served it */

    /* io_uring sends (loop thread only): while uring is set, a stream's
     * write is copied into the arena and queued in the ring; loop_flush()
     * submits the round's sends in one io_uring_enter and applies each
     * result as sendmsg's would be (short or EAGAIN -> pending, error ->
     * failed). Nothing stays queued across a loop phase or a close. */
#ifdef SSE_HAVE_URING
    struct io_uring ring;
    struct io_uring_sqe *last_sqe; /* loop->queued's, until submitted */
#endif
    int uring;                   /* the ring is usable */
    int ring_made;               /* io_uring_queue_exit is due */
    int arena_pinned;            /* a flush failed: the kernel may still
                                    read the arena; keep it until exit */
    char *arena;
    size_t arena_size, arena_used;
    unsigned nq;                 /* sends queued since the last flush */
    sse_dstream_t *queued;       /* streams with q_len > 0 */
    sse_dstream_t *failed;       /* see sse_dstream_t.failed */
};

static pthread_mutex_t loops_mu = PTHREAD_MUTEX_INITIALIZER;
static sse_loop_t *loops;       /* nloops entries, created lazily */
static int nloops_conf = 1;
static int coalesce_ms_conf;    /* SSEDetachedCoalesce */
static int uring_conf = 1;      /* SSEDetachedIOUring */
static int loops_ready;         /* loops_mu; 1 started, -1 failed */
static unsigned next_loop;      /* round robin (atomic) */
static server_rec *main_server;

/* ------------------------------------------------------------ eligibility */

/* Output filters a detached stream may bypass: httpd's own protocol
 * filters (headers are out, the loop does the chunking) and mod_logio's
 * counter. Anything else (mod_deflate still present, mod_ssl, a buffering
 * or rewriting filter) keeps the stream threaded. */
static const char *const transparent_filters[] = {
    "byterange", "content_length", "http_header", "http_outerror", "chunk",
    "core", "log_input_output", "req_core", NULL
};

static int filter_is_transparent(const char *name)
{
    int i;
    for (i = 0; transparent_filters[i]; i++)
        if (!strcasecmp(name, transparent_filters[i]))
            return 1;
    return 0;
}

const char *sse_detach_ineligible(request_rec *r)
{
    conn_rec *c = r->connection;
    int async = 0;
    const char *mpm = ap_show_mpm();

    if (c->master)
        return "HTTP/2 (the stream's frames are built by the main "
               "connection)";
    if (ap_ssl_conn_is_ssl(c))
        return "TLS (the TLS state belongs to httpd's connection)";
    if (r->proto_num < HTTP_VERSION(1, 0) || r->proto_num >= HTTP_VERSION(2, 0))
        return "not HTTP/1.x";
    if (!mpm || strcmp(mpm, "event")
        || ap_mpm_query(AP_MPMQ_IS_ASYNC, &async) != APR_SUCCESS || !async)
        return "not the event MPM";
    if (!ap_get_conn_socket(c))
        return "no socket on the connection";
    return NULL;
}

const char *sse_detach_ineligible_after_flush(request_rec *r)
{
    conn_rec *c = r->connection;
    ap_filter_t *f;

    for (f = r->output_filters; f; f = f->next)
        if (!filter_is_transparent(f->frec->name))
            return apr_psprintf(r->pool, "output filter '%s' would be "
                                "bypassed", f->frec->name);
    if (c->data_in_output_filters)
        return "httpd still holds unsent bytes";
    if (r->proto_num >= HTTP_VERSION(1, 1) && !r->chunked)
        return "HTTP/1.1 response is not chunked";
    return NULL;
}

/* ------------------------------------------------------------ the sink */

static int dsink_busy(void *ctx)
{
    sse_dstream_t *d = ctx;
    return d->pend_len > d->pend_off;
}

static int dsink_closed(void *ctx)
{
    sse_dstream_t *d = ctx;
    return d->peer_gone;
}

static apr_status_t errno_status(int e)
{
    if (e == ECONNRESET)
        return APR_ECONNRESET;
    return APR_FROM_OS_ERROR(e);
}

static void set_out_interest(sse_dstream_t *d, int on)
{
    struct epoll_event ev;
    if (!d->attached || d->want_out == on)
        return;
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN | EPOLLRDHUP | (on ? EPOLLOUT : 0);
    ev.data.ptr = d;
    if (epoll_ctl(d->loop->epfd, EPOLL_CTL_MOD, d->fd, &ev) == 0)
        d->want_out = on;
}

/* Append n bytes to the pending buffer (grown up to pend_max). */
static int pend_append(sse_dstream_t *d, const char *p, size_t n)
{
    size_t live = d->pend_len - d->pend_off;
    if (live + n > d->pend_max) {
        d->overflow = 1;
        return -1;
    }
    if (d->pend_off && d->pend_len + n > d->pend_cap) {
        memmove(d->pend, d->pend + d->pend_off, live);
        d->pend_off = 0;
        d->pend_len = live;
    }
    if (d->pend_len + n > d->pend_cap) {
        size_t cap = d->pend_cap ? d->pend_cap : 4096;
        char *np;
        while (cap < d->pend_len + n)
            cap *= 2;
        if (cap > d->pend_max)
            cap = d->pend_max;
        np = realloc(d->pend, cap);
        if (!np) {
            d->overflow = 1;
            return -1;
        }
        d->pend = np;
        d->pend_cap = cap;
    }
    memcpy(d->pend + d->pend_len, p, n);
    d->pend_len += n;
    return 0;
}

static void pend_release(sse_dstream_t *d)
{
    free(d->pend);
    d->pend = NULL;
    d->pend_off = d->pend_len = d->pend_cap = 0;
}

/* Send what is pending. Returns APR_SUCCESS (drained or not: see busy),
 * or the error that ended the connection. */
static apr_status_t send_pending(sse_dstream_t *d)
{
    int progress = 0;

    while (d->pend_len > d->pend_off) {
        ssize_t n = send(d->fd, d->pend + d->pend_off,
                         d->pend_len - d->pend_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            return errno_status(errno);
        }
        d->pend_off += (size_t)n;
        progress = 1;
    }
    if (d->pend_len == d->pend_off) {
        pend_release(d);
        d->blocked_since = 0;
        set_out_interest(d, 0);
    }
    else if (progress) {
        d->blocked_since = apr_time_now();
    }
    return APR_SUCCESS;
}

/* "<len in hex>\r\n" into out (at least 20 bytes); returns its length. */
static size_t chunk_header(char *out, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    char tmp[16];
    size_t n = 0, i;
    do {
        tmp[n++] = hex[len & 15];
        len >>= 4;
    } while (len);
    for (i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    out[n] = '\r';
    out[n + 1] = '\n';
    return n + 2;
}

/* ------------------------------------------------------------ io_uring */

/* A send result ended d (connection error, or pending full): d stops
 * writing at once (peer_gone for errors; the stream logic sees the sink
 * closed or the write fail) and is finished by finish_failed() at the
 * next safe point, never from inside a flush that may run in the middle
 * of another stream's pump. */
static void mark_failed(sse_dstream_t *d, apr_status_t err)
{
    sse_loop_t *loop = d->loop;
    if (err != APR_ENOSPC)
        d->peer_gone = 1;
    if (d->failed)
        return;
    d->failed = 1;
    d->send_err = err;
    d->fnext = loop->failed;
    loop->failed = d;
}

/* Keep bytes the socket did not take (after older pending bytes). */
static void keep_unsent(sse_dstream_t *d, const char *p, size_t n)
{
    if (!d->blocked_since)
        d->blocked_since = apr_time_now();
    if (pend_append(d, p, n) < 0) {
        mark_failed(d, APR_ENOSPC);
        return;
    }
    set_out_interest(d, 1);
}

#ifdef SSE_HAVE_URING
/* Apply one reaped send result to its stream, as dsink_write does with
 * what sendmsg returns. */
static void send_done(sse_dstream_t *d, int res)
{
    char *p = d->q_buf;
    size_t len = d->q_len;

    d->q_buf = NULL;
    d->q_len = 0;
    if (res == -EAGAIN || res == -EWOULDBLOCK || res == -EINTR)
        res = 0;
    if (res < 0) {
        mark_failed(d, errno_status(-res));
        return;
    }
    if ((size_t)res < len)
        keep_unsent(d, p + res, len - (size_t)res);
}

/* Submit every queued send in one go and apply the results. Sends on a
 * non-blocking socket (MSG_DONTWAIT) complete inside the submission, so
 * the results are there when it returns; the wait is only a bound. */
static void loop_flush(sse_loop_t *loop)
{
    unsigned want = loop->nq, submitted = 0, got = 0;
    sse_dstream_t *d;

    if (!want)
        return;
    while (submitted < want) {
        int rc = io_uring_submit(&loop->ring);
        if (rc == -EINTR)
            continue;
        if (rc <= 0)
            break;
        submitted += (unsigned)rc;
    }
    while (got < submitted) {
        struct io_uring_cqe *cqe;
        struct __kernel_timespec ts = { 1, 0 };
        int rc = io_uring_peek_cqe(&loop->ring, &cqe);
        if (rc == -EAGAIN)
            rc = io_uring_wait_cqe_timeout(&loop->ring, &cqe, &ts);
        if (rc == -EINTR)
            continue;
        if (rc < 0)
            break;
        d = io_uring_cqe_get_data(cqe);
        rc = cqe->res;
        io_uring_cqe_seen(&loop->ring, cqe);
        got++;
        if (d && d->q_len)
            send_done(d, rc);
    }
    if (got < want) {
        /* Cannot happen with non-blocking sockets; if it does, the kernel
         * may still read the arena: stop using the ring in this loop,
         * keep the arena until exit and end the streams whose result is
         * unknown (they resume with Last-Event-ID). */
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, main_server, APLOGNO(10595)
                     "detached-stream loop %d: io_uring returned %u of %u "
                     "send results; sending with sendmsg from now on",
                     loop->index, got, want);
        loop->uring = 0;
        loop->arena_pinned = 1;
    }
    for (d = loop->queued; d; d = d->qnext)
        if (d->q_len) {
            d->q_buf = NULL;
            d->q_len = 0;
            mark_failed(d, APR_EGENERAL);
        }
    loop->queued = NULL;
    loop->last_sqe = NULL;
    loop->nq = 0;
    loop->arena_used = 0;
}

/* Queue this pass of d in the ring (copied into the arena). */
static int queue_send(sse_dstream_t *d, const struct iovec *iov, int niov,
                      size_t total)
{
    sse_loop_t *loop = d->loop;
    struct io_uring_sqe *sqe;
    char *p;
    int i;

    if (d->q_len) {
        /* A later pass of the newest queued send: it is still in the SQ
         * ring, so it can grow (contiguous in the arena) up to what the
         * pending buffer could take back if the socket refuses it. */
        if (loop->queued != d || d->q_len + total > d->pend_max / 2
            || loop->arena_used + total > loop->arena_size) {
            loop_flush(loop);
            return SSE_Q_FLUSHED;
        }
        sqe = NULL;
    }
    else {
        if (!loop->arena) {
            void *m = mmap(NULL, SSE_DETACH_ARENA, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (m == MAP_FAILED)
                return SSE_Q_DIRECT;
            loop->arena = m;
            loop->arena_size = SSE_DETACH_ARENA;
        }
        if (total > loop->arena_size)
            return SSE_Q_DIRECT;
        if (loop->arena_used + total > loop->arena_size) {
            loop_flush(loop);
            return SSE_Q_FLUSHED;
        }
        if (!(sqe = io_uring_get_sqe(&loop->ring))) {
            loop_flush(loop);
            return SSE_Q_FLUSHED;
        }
    }
    p = loop->arena + loop->arena_used;
    for (i = 0; i < niov; i++) {
        memcpy(p, iov[i].iov_base, iov[i].iov_len);
        p += iov[i].iov_len;
    }
    if (sqe) {
        d->q_buf = loop->arena + loop->arena_used;
        io_uring_prep_send(sqe, d->fd, d->q_buf, total,
                           MSG_NOSIGNAL | MSG_DONTWAIT);
        io_uring_sqe_set_data(sqe, d);
        loop->last_sqe = sqe;
        d->qnext = loop->queued;
        loop->queued = d;
        loop->nq++;
    }
    else {
        loop->last_sqe->len += (unsigned)total; /* d's, the newest */
    }
    d->q_len += total;
    loop->arena_used += total;
    return SSE_Q_QUEUED;
}

/* Make the loop's ring (in the loop thread: it is the only submitter). */
static void loop_ring_init(sse_loop_t *loop)
{
    struct io_uring_params p;
    int rc;

    if (!uring_conf)
        return;
    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    rc = io_uring_queue_init_params(SSE_DETACH_RING_ENTRIES, &loop->ring, &p);
    if (rc == -EINVAL) { /* kernel older than 6.1: no such flags */
        memset(&p, 0, sizeof(p));
        rc = io_uring_queue_init_params(SSE_DETACH_RING_ENTRIES,
                                        &loop->ring, &p);
    }
    if (rc < 0) {
        ap_log_error(APLOG_MARK, APLOG_NOTICE, -rc, main_server,
                     APLOGNO(10596)
                     "detached-stream loop %d: io_uring is not available "
                     "(kernel.io_uring_disabled, a seccomp filter or an old "
                     "kernel?); sending with sendmsg",
                     loop->index);
        return;
    }
    loop->ring_made = 1;
    loop->uring = 1;
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, main_server, APLOGNO(10597)
                 "detached-stream loop %d sends through io_uring",
                 loop->index);
}

static void loop_ring_exit(sse_loop_t *loop)
{
    loop_flush(loop);
    if (loop->ring_made)
        io_uring_queue_exit(&loop->ring);
    loop->ring_made = loop->uring = 0;
}
#else
static void loop_flush(sse_loop_t *loop)
{
    (void)loop;
}

static int queue_send(sse_dstream_t *d, const struct iovec *iov, int niov,
                      size_t total)
{
    (void)d;
    (void)iov;
    (void)niov;
    (void)total;
    return SSE_Q_DIRECT;
}

static void loop_ring_init(sse_loop_t *loop)
{
    if (uring_conf)
        ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, main_server, APLOGNO(10598)
                     "detached-stream loop %d: mod_sse was built without "
                     "liburing; sending with sendmsg", loop->index);
}

static void loop_ring_exit(sse_loop_t *loop)
{
    (void)loop;
}
#endif

/* The detached sink's write: one chunk (or raw bytes under HTTP/1.0),
 * sent at once if the socket takes it (or queued in the loop's ring: the
 * result is applied when the round is flushed), else the rest kept in
 * pending. */
static apr_status_t dsink_write(void *ctx, const char *buf, apr_size_t len)
{
    sse_dstream_t *d = ctx;
    char hdr[24];
    struct iovec iov[3];
    struct msghdr mh;
    size_t total = 0, sent, skip;
    int niov = 0, i;
    ssize_t n;

    if (d->peer_gone)
        return d->send_err ? d->send_err : APR_ECONNABORTED;
    if (len == 0)
        return APR_SUCCESS; /* headers went out before the hand-off */
    if (d->chunked) {
        iov[niov].iov_base = hdr;
        iov[niov++].iov_len = chunk_header(hdr, len);
    }
    iov[niov].iov_base = (void *)buf;
    iov[niov++].iov_len = len;
    if (d->chunked) {
        iov[niov].iov_base = (void *)"\r\n";
        iov[niov++].iov_len = 2;
    }
    for (i = 0; i < niov; i++)
        total += iov[i].iov_len;

again:
    if (d->peer_gone)
        return d->send_err ? d->send_err : APR_ECONNABORTED;
    if (d->overflow)
        return APR_ENOSPC;
    if (dsink_busy(d)) {
        apr_status_t rv = send_pending(d);
        if (rv != APR_SUCCESS)
            return rv;
    }
    sent = 0;
    if (!dsink_busy(d) && d->loop->uring) {
        switch (queue_send(d, iov, niov, total)) {
        case SSE_Q_QUEUED:
            return APR_SUCCESS;
        case SSE_Q_FLUSHED:
            goto again; /* d's earlier send may have left pending bytes */
        default:
            break;
        }
    }
    if (!dsink_busy(d)) {
        memset(&mh, 0, sizeof(mh));
        mh.msg_iov = iov;
        mh.msg_iovlen = (size_t)niov;
        do {
            n = sendmsg(d->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        } while (n < 0 && errno == EINTR);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return errno_status(errno);
            n = 0;
        }
        sent = (size_t)n;
        if (sent == total)
            return APR_SUCCESS;
        if (!d->blocked_since)
            d->blocked_since = apr_time_now();
    }
    /* Keep the unsent tail of this pass, in order, after older bytes. */
    skip = sent;
    for (i = 0; i < niov; i++) {
        size_t l = iov[i].iov_len;
        if (skip >= l) {
            skip -= l;
            continue;
        }
        if (pend_append(d, (const char *)iov[i].iov_base + skip, l - skip)
            < 0)
            return APR_ENOSPC;
        skip = 0;
    }
    set_out_interest(d, 1);
    return APR_SUCCESS;
}

/* ------------------------------------------------------------ ending */

static void loop_grow_scratch(sse_loop_t *loop, size_t need)
{
    void *p;
    if (loop->scratch_size >= need)
        return;
    if (loop->scratch)
        munmap(loop->scratch, loop->scratch_size);
    p = mmap(NULL, need, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
             -1, 0);
    loop->scratch = p == MAP_FAILED ? NULL : p;
    loop->scratch_size = p == MAP_FAILED ? 0 : need;
}

/* Lend the loop's scratch buffer to d's stream for one sse_stream_* call
 * that may stage bytes. NULL if there is no scratch memory. */
static sse_stream_t *stream_lend(sse_dstream_t *d)
{
    sse_loop_t *loop = d->loop;
    sse_stream_t *st = &d->st;

    loop_grow_scratch(loop, st->buf_size);
    if (!loop->scratch)
        return NULL;
    st->buf = loop->scratch;
    st->used = 0;
    st->staged_events = 0;
    return st;
}

/* Take the buffer back (the busy() hook guarantees nothing is staged). */
static void stream_unlend(sse_dstream_t *d)
{
    d->st.buf = NULL;
    d->st.used = 0;
}

static void ready_unlink_locked(sse_loop_t *loop, sse_dstream_t *d)
{
    if (!d->queued)
        return;
    if (d->rprev)
        d->rprev->rnext = d->rnext;
    else
        loop->ready_head = d->rnext;
    if (d->rnext)
        d->rnext->rprev = d->rprev;
    else
        loop->ready_tail = d->rprev;
    d->rnext = d->rprev = NULL;
    d->queued = 0;
}

/* Comma-separated channel names of the stream, for the end line. */
static void channel_list(const sse_stream_t *s, char *out, size_t size)
{
    size_t o = 0;
    unsigned i;
    out[0] = '\0';
    for (i = 0; i < s->filter.n && o + 2 < size; i++) {
        size_t l;
        const char *name = sse_bus_filter_name(&s->filter, i, &l);
        if (i)
            out[o++] = ',';
        if (l > size - o - 1)
            l = size - o - 1;
        memcpy(out + o, name, l);
        o += l;
        out[o] = '\0';
    }
}

/* The stream is over: its end reason, or why if none was set yet. Give
 * everything back, exactly once. The record itself is freed after the
 * current batch (free_dead). Not with the buffer lent. */
static void finish(sse_dstream_t *d, sse_end_t why)
{
    sse_loop_t *loop = d->loop;
    sse_stream_t *st;
    sse_end_t end;
    char chans[512];
    char drain[512];
    apr_time_t dur = apr_time_now() - d->started;

    if (d->closed)
        return;
    /* Its queued send goes first (and may tell that the peer is gone). */
    if (d->q_len)
        loop_flush(loop);
    d->closed = 1;
    st = &d->st;
    if (st->end == SSE_END_NONE && d->failed && d->send_err != APR_ENOSPC)
        st->end = APR_STATUS_IS_ECONNRESET(d->send_err) ? SSE_END_CLIENT_RESET
                  : d->send_err == APR_EGENERAL ? SSE_END_ERROR /* no result */
                  : SSE_END_CLIENT_CLOSED;
    if (st->end == SSE_END_NONE)
        st->end = why;
    if (st->end == SSE_END_NONE)
        st->end = SSE_END_ERROR;
    if (d->overflow && st->end != SSE_END_SERVER_STOPPING)
        st->end = SSE_END_SLOW_CLOSE;
    end = st->end;

    /* The server ends it (not the client, not a dead write): finish the
     * response as httpd would have, best effort, whatever the socket
     * takes now. */
    if (!d->peer_gone && end != SSE_END_CLIENT_CLOSED
        && end != SSE_END_CLIENT_RESET && end != SSE_END_WRITE_TIMEOUT) {
        if (d->chunked && (!dsink_busy(d) || send_pending(d) == APR_SUCCESS)) {
            if (dsink_busy(d)) {
                if (pend_append(d, "0\r\n\r\n", 5) == 0)
                    send_pending(d);
            }
            else {
                ssize_t n = send(d->fd, "0\r\n\r\n", 5,
                                 MSG_NOSIGNAL | MSG_DONTWAIT);
                (void)n;
            }
        }
        shutdown(d->fd, SHUT_WR);
    }

    sse_dispatch_unregister(&d->waiter); /* no notify after this */
    pthread_mutex_lock(&loop->mu);
    ready_unlink_locked(loop, d);
    d->fresh = 0;
    pthread_mutex_unlock(&loop->mu);

    if (d->attached) {
        epoll_ctl(loop->epfd, EPOLL_CTL_DEL, d->fd, NULL);
        if (d->aprev)
            d->aprev->anext = d->anext;
        else
            loop->all = d->anext;
        if (d->anext)
            d->anext->aprev = d->aprev;
        loop->nstreams--;
        d->attached = 0;
    }
    /* Unread input would turn close() into an RST that can destroy the
     * last bytes we sent (the retry line): read it first. */
    if (!d->peer_gone)
        while (recv(d->fd, drain, sizeof(drain), MSG_DONTWAIT) > 0)
            ;
    close(d->fd);
    d->fd = -1;

    sse_stream_count_end(st);
    SSE_STAT_SUB(streams_active, 1);
    SSE_STAT_SUB(streams_detached, 1);
    apr_atomic_dec32(d->open_counter);
    sse_dispatch_release(d->ref);
    d->ref = NULL;
    pend_release(d);
    sse_waiter_destroy(&d->waiter);
    sse_trim_note_end(); /* the dispatcher trims malloc once quiet */

    /* This replaces the access-log entry, which httpd wrote at hand-off
     * time with only the first bytes. */
    channel_list(st, chans, sizeof(chans));
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, d->server, APLOGNO(10585)
                 "detached stream %s ended (%s): channels %s, %"
                 APR_TIME_T_FMT ".%03d s, %" APR_UINT64_T_FMT " bytes, %"
                 APR_UINT64_T_FMT " events, %" APR_UINT64_T_FMT " skipped, %"
                 APR_UINT64_T_FMT " missed",
                 d->log_id, sse_end_reason_str(end), chans,
                 apr_time_sec(dur), (int)(apr_time_msec(dur) % 1000),
                 (apr_uint64_t)st->bytes_sent,
                 (apr_uint64_t)st->events_sent,
                 (apr_uint64_t)st->skipped, (apr_uint64_t)st->missed);

    d->dnext = loop->dead;
    loop->dead = d;
}

static void free_dead(sse_loop_t *loop)
{
    int freed = loop->dead != NULL;
    while (loop->dead) {
        sse_dstream_t *d = loop->dead;
        loop->dead = d->dnext;
        free(d);
    }
    /* The last stream left: the scratch buffer goes back to the kernel
     * too (mapped again by the next stream's first pass). */
    if (freed && !loop->all && loop->scratch) {
        munmap(loop->scratch, loop->scratch_size);
        loop->scratch = NULL;
        loop->scratch_size = 0;
    }
    if (freed && !loop->all && loop->arena && !loop->arena_pinned) {
        munmap(loop->arena, loop->arena_size);
        loop->arena = NULL;
        loop->arena_size = 0;
    }
}

/* finish(), saying why first when the client's pending output was full. */
static void finish_logged(sse_dstream_t *d, sse_end_t why)
{
    if (d->closed)
        return;
    if (d->overflow)
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, d->server, APLOGNO(10586)
                     "detached stream %s: client does not read and its "
                     "pending output is full (%lu bytes); closing",
                     d->log_id, (unsigned long)d->pend_max);
    finish(d, why);
}

/* Server-side end: "retry:" (spread), then finish (terminating chunk). */
static void end_stream(sse_dstream_t *d, sse_end_t why)
{
    sse_stream_t *st;

    if (d->closed)
        return;
    if ((st = stream_lend(d))) {
        sse_stream_end(st, why);
        stream_unlend(d);
    }
    finish(d, why);
}

/* Send what is pending on the bus; finish the stream if it is over. */
static void pump(sse_dstream_t *d)
{
    sse_stream_t *st;
    int rc;

    if (d->closed || dsink_busy(d))
        return;
    if (!(st = stream_lend(d))) {
        /* No scratch memory: try again on the next wake-up or tick. */
        return;
    }
    rc = sse_stream_pump(st);
    d->last_pump = d->loop->now;
    stream_unlend(d);
    if (rc < 0 || d->overflow)
        finish_logged(d, SSE_END_ERROR);
}

/* Streams a send result ended (mark_failed): finish them now that no
 * stream is being pumped. Before free_dead (the list may name records
 * that were finished meanwhile; they are skipped). */
static void finish_failed(sse_loop_t *loop)
{
    while (loop->failed) {
        sse_dstream_t *d = loop->failed;
        loop->failed = d->fnext;
        d->fnext = NULL;
        finish_logged(d, SSE_END_ERROR);
    }
}

/* The end of a loop phase: what it queued goes out, and what that ended
 * is finished. */
static void loop_settle(sse_loop_t *loop)
{
    loop_flush(loop);
    finish_failed(loop);
}

/* ------------------------------------------------------------ events */

static void on_io(sse_dstream_t *d, uint32_t ev)
{
    char buf[4096];
    int rounds;

    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        /* Read and discard (a pipelined request, garbage): bounded per
         * round so that a flooding client cannot starve the loop. */
        for (rounds = 0; rounds < 16; rounds++) {
            ssize_t n = recv(d->fd, buf, sizeof(buf), MSG_DONTWAIT);
            if (n > 0)
                continue;
            if (n == 0) {
                d->peer_gone = 1;
                finish(d, SSE_END_CLIENT_CLOSED);
                return;
            }
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            d->peer_gone = 1;
            finish(d, errno == ECONNRESET ? SSE_END_CLIENT_RESET
                                          : SSE_END_CLIENT_CLOSED);
            return;
        }
        if (ev & (EPOLLHUP | EPOLLERR)) {
            int err = 0;
            socklen_t el = sizeof(err);
            getsockopt(d->fd, SOL_SOCKET, SO_ERROR, &err, &el);
            d->peer_gone = 1;
            finish(d, err == ECONNRESET ? SSE_END_CLIENT_RESET
                                        : SSE_END_CLIENT_CLOSED);
            return;
        }
    }
    if ((ev & EPOLLOUT) && dsink_busy(d)) {
        apr_status_t rv = send_pending(d);
        if (rv != APR_SUCCESS) {
            d->peer_gone = 1;
            finish(d, APR_STATUS_IS_ECONNRESET(rv) ? SSE_END_CLIENT_RESET
                                                   : SSE_END_CLIENT_CLOSED);
            return;
        }
        if (!dsink_busy(d))
            pump(d); /* catch up with what the bus got meanwhile */
    }
}

static void attach(sse_dstream_t *d)
{
    sse_loop_t *loop = d->loop;
    struct epoll_event ev;

    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.ptr = d;
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, d->fd, &ev) != 0) {
        ap_log_error(APLOG_MARK, APLOG_ERR, errno, d->server,
                     APLOGNO(10587)
                     "detached stream %s: epoll_ctl ADD failed; ending it",
                     d->log_id);
        finish(d, SSE_END_ERROR);
        return;
    }
    d->attached = 1;
    d->aprev = NULL;
    d->anext = loop->all;
    if (loop->all)
        loop->all->aprev = d;
    loop->all = d;
    loop->nstreams++;
}

/* One ready stream: what the dispatcher raised, or a fresh hand-off. */
static void on_ready(sse_dstream_t *d, int fresh, int stopping)
{
    unsigned flags;

    /* Raised by the dispatcher between registration and the hand-off's
     * push: the fresh push that follows does the catching up. */
    if (!fresh && !d->attached)
        return;
    flags = sse_waiter_take(&d->waiter);
    if (fresh) {
        attach(d);
        flags |= SSE_WAKE_PENDING; /* catch up since the worker's pass */
    }
    if (d->closed)
        return;
    if ((flags & SSE_WAKE_STOP) || stopping) {
        end_stream(d, SSE_END_SERVER_STOPPING);
    }
    else if (flags & SSE_WAKE_BUS_GONE) {
        pump(d);
        if (!d->closed)
            end_stream(d, SSE_END_BUS_REPLACED);
    }
    else if (flags & SSE_WAKE_PENDING) {
        pump(d);
    }
}

/* Take up to SSE_DETACH_READY_BATCH ready streams off the list under one
 * hold of loop->mu, then serve them. A stream raised again while the batch
 * is served goes back on the list (queued was cleared when it was taken),
 * to the next round. Returns 1 if more are waiting; *served is the number
 * of streams served. */
static int serve_ready(sse_loop_t *loop, int stopping, unsigned *served)
{
    sse_dstream_t *batch = NULL, **tail = &batch, *d;
    unsigned n = 0;
    int more;

    pthread_mutex_lock(&loop->mu);
    while (n < SSE_DETACH_READY_BATCH && (d = loop->ready_head)) {
        d->bfresh = d->fresh;
        d->fresh = 0;
        ready_unlink_locked(loop, d);
        d->bnext = NULL;
        *tail = d;
        tail = &d->bnext;
        n++;
    }
    more = loop->ready_head != NULL;
    pthread_mutex_unlock(&loop->mu);
    *served = n;
    for (d = batch; d; d = d->bnext)
        on_ready(d, d->bfresh, stopping);
    return more;
}

/* Heartbeats, write timeouts, stopping; every SSE_DETACH_TICK. */
static void tick(sse_loop_t *loop, apr_time_t now, int stopping)
{
    sse_dstream_t *d, *next;

    for (d = loop->all; d; d = next) {
        next = d->anext;
        if (stopping) {
            end_stream(d, SSE_END_SERVER_STOPPING);
        }
        else if (dsink_busy(d)) {
            if (d->blocked_since
                && now - d->blocked_since >= d->write_timeout) {
                ap_log_error(APLOG_MARK, APLOG_INFO, 0, d->server,
                             APLOGNO(10588)
                             "detached stream %s: nothing could be written "
                             "for SSEWriteTimeout (%" APR_TIME_T_FMT " s); "
                             "closing", d->log_id,
                             apr_time_sec(d->write_timeout));
                finish(d, SSE_END_WRITE_TIMEOUT);
            }
        }
        else {
            sse_stream_t *st;
            apr_time_t hb_due;
            if (now - d->last_pump >= SSE_DETACH_REPUMP
                && sse_bus_head_pos(d->st.bus) > d->st.cursor.pos) {
                pump(d);
                if (d->closed || dsink_busy(d))
                    continue;
            }
            hb_due = sse_stream_next_heartbeat(&d->st);
            if (hb_due && now >= hb_due && (st = stream_lend(d))) {
                int rc = sse_stream_idle(st, now);
                stream_unlend(d);
                if (rc < 0)
                    finish(d, SSE_END_ERROR);
            }
        }
    }
}

/* epoll_wait with a microsecond timeout (epoll_pwait2, Linux 5.11 and
 * glibc 2.35; else rounded up to milliseconds): a coalescing window of a
 * few ms must not grow by a rounding millisecond. */
static int loop_wait(sse_loop_t *loop, struct epoll_event *evs,
                     apr_interval_time_t us)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 35)
    static int no_pwait2; /* ENOSYS once: every loop falls back */
    if (!__atomic_load_n(&no_pwait2, __ATOMIC_RELAXED)) {
        struct timespec ts;
        int n;
        ts.tv_sec = (time_t)(us / APR_USEC_PER_SEC);
        ts.tv_nsec = (long)(us % APR_USEC_PER_SEC) * 1000;
        n = epoll_pwait2(loop->epfd, evs, SSE_DETACH_MAX_EVENTS, &ts, NULL);
        if (n >= 0 || errno != ENOSYS)
            return n;
        __atomic_store_n(&no_pwait2, 1, __ATOMIC_RELAXED);
    }
#endif
    return epoll_wait(loop->epfd, evs, SSE_DETACH_MAX_EVENTS,
                      (int)((us + 999) / 1000));
}

static void *loop_main(void *arg)
{
    sse_loop_t *loop = arg;
    struct epoll_event evs[SSE_DETACH_MAX_EVENTS];
    int more = 0;
    apr_interval_time_t hold = -1;

    loop->last_tick = loop->now = apr_time_now();
    loop_ring_init(loop);
    for (;;) {
        int n, i, quit, stopping, have_ready;

        n = loop_wait(loop, evs, more ? 0 : hold >= 0 ? hold
                                                      : SSE_DETACH_TICK);
        if (n < 0)
            n = 0; /* EINTR */
        pthread_mutex_lock(&loop->mu);
        quit = loop->quit;
        have_ready = loop->ready_head != NULL;
        pthread_mutex_unlock(&loop->mu);
        loop->now = apr_time_now();
        stopping = quit || sse_dispatch_stopping();
        for (i = 0; i < n; i++) {
            sse_dstream_t *d = evs[i].data.ptr;
            if (!d) {
                uint64_t v;
                ssize_t r = read(loop->evfd, &v, sizeof(v));
                (void)r;
                continue;
            }
            if (!d->closed)
                on_io(d, evs[i].events);
        }
        loop_settle(loop);
        /* SSEDetachedCoalesce W: after a quiet spell (no round for W)
         * ready streams are served at once; otherwise what is raised waits
         * until W after the loop first saw it, gathering what else is
         * raised meanwhile, and then goes out in one write per stream. No
         * event waits longer than W for company, and a steady flow of
         * events closer than W goes out in batches (at 200 events/s and
         * W = 6 ms: two per write). The dispatcher does not write the
         * eventfd again meanwhile (the list is not empty), so the loop
         * sleeps until then. */
        if (have_ready && !loop->ready_since)
            loop->ready_since = loop->now;
        hold = -1;
        if (have_ready && loop->coalesce > 0 && !stopping && !more
            && loop->now - loop->last_serve < loop->coalesce
            && loop->now - loop->ready_since < loop->coalesce) {
            hold = loop->ready_since + loop->coalesce - loop->now;
        }
        else {
            unsigned served;
            more = serve_ready(loop, stopping, &served);
            if (served)
                loop->last_serve = loop->now;
            if (!more)
                loop->ready_since = 0;
            loop_settle(loop);
        }
        if (stopping || loop->now - loop->last_tick >= SSE_DETACH_TICK) {
            loop->last_tick = loop->now;
            tick(loop, loop->now, stopping);
            /* After a burst of ends: malloc back to the kernel once quiet
             * (sse_trim.c; the dispatcher ticks it too, once a second). */
            if (!stopping)
                sse_trim_tick();
            loop_settle(loop);
        }
        free_dead(loop);
        if (quit && !more && !loop->all)
            break;
    }
    loop_ring_exit(loop);
    if (loop->scratch)
        munmap(loop->scratch, loop->scratch_size);
    loop->scratch = NULL;
    if (loop->arena)
        munmap(loop->arena, loop->arena_size);
    loop->arena = NULL;
    return NULL;
}

/* ------------------------------------------------------------ loops */

static void wake_loop(sse_loop_t *loop)
{
    uint64_t one = 1;
    ssize_t r = write(loop->evfd, &one, sizeof(one));
    (void)r; /* EAGAIN: the counter is already non-zero, the loop wakes */
}

/* Append d to its loop's ready list unless it is queued already; caller
 * holds loop->mu. Returns 1 if the list was empty (the loop must be woken). */
static int ready_push_locked(sse_loop_t *loop, sse_dstream_t *d)
{
    if (d->queued)
        return 0;
    d->queued = 1;
    d->rnext = NULL;
    d->rprev = loop->ready_tail;
    if (loop->ready_tail)
        loop->ready_tail->rnext = d;
    else
        loop->ready_head = d;
    loop->ready_tail = d;
    return d->rprev == NULL;
}

/* Waiter notify hook: queue d for its loop (any thread). */
static void dstream_notify(void *arg)
{
    sse_dstream_t *d = arg;
    sse_loop_t *loop = d->loop;
    int wake = 0;

    pthread_mutex_lock(&loop->mu);
    if (!d->closed)
        wake = ready_push_locked(loop, d);
    pthread_mutex_unlock(&loop->mu);
    if (wake)
        wake_loop(loop);
}

static int start_loops_locked(void)
{
    int i;

    loops = calloc((size_t)nloops_conf, sizeof(*loops));
    if (!loops)
        return -1;
    for (i = 0; i < nloops_conf; i++) {
        sse_loop_t *loop = &loops[i];
        struct epoll_event ev;

        loop->index = i;
        loop->coalesce = apr_time_from_msec(coalesce_ms_conf);
        loop->epfd = epoll_create1(EPOLL_CLOEXEC);
        loop->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        pthread_mutex_init(&loop->mu, NULL);
        if (loop->epfd < 0 || loop->evfd < 0)
            return -1;
        memset(&ev, 0, sizeof(ev));
        ev.events = EPOLLIN;
        ev.data.ptr = NULL;
        if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->evfd, &ev) != 0)
            return -1;
        if (sse_thread_start(&loop->thread, loop_main, loop) != 0)
            return -1;
        loop->started = 1;
    }
    return 0;
}

static sse_loop_t *pick_loop(server_rec *s)
{
    int ready;

    pthread_mutex_lock(&loops_mu);
    if (loops_ready == 0) {
        loops_ready = start_loops_locked() == 0 ? 1 : -1;
        if (loops_ready < 0)
            ap_log_error(APLOG_MARK, APLOG_ERR, errno, s, APLOGNO(10589)
                         "cannot start the detached-stream loop threads; "
                         "streams of this child stay threaded (check the "
                         "process limits on threads and descriptors)");
        else
            ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, APLOGNO(10590)
                         "started %d detached-stream loop thread(s)",
                         nloops_conf);
    }
    ready = loops_ready;
    pthread_mutex_unlock(&loops_mu);
    if (ready < 0)
        return NULL;
    return &loops[__atomic_fetch_add(&next_loop, 1, __ATOMIC_RELAXED)
                  % (unsigned)nloops_conf];
}

/* ------------------------------------------------------------ hand-off */

apr_status_t sse_detach_handoff(sse_detach_args_t *a)
{
    request_rec *r = a->r;
    conn_rec *c = r->connection;
    apr_socket_t *sock = ap_get_conn_socket(c);
    apr_os_sock_t fd;
    sse_loop_t *loop;
    sse_dstream_t *d;
    sse_stream_t *src = a->stream;
    char *names;
    size_t idlen, wsize, fsize;
    unsigned nsubs;
    int nfd, fl, wake = 0;

    if (sse_dispatch_stopping() || !sock || a->stream->used != 0)
        return APR_EINVAL;
    if (apr_os_sock_get(&fd, sock) != APR_SUCCESS)
        return APR_EINVAL;
    if (!(loop = pick_loop(r->server)))
        return APR_EGENERAL;

    /* One allocation: the record with a waiter of nsubs subscriptions,
     * the filter's names, the log id. */
    idlen = strlen(src->log_id ? src->log_id : "?") + 1;
    nsubs = src->filter.n < SSE_BUS_FILTER_MAX ? src->filter.n
                                               : SSE_BUS_FILTER_MAX;
    wsize = offsetof(sse_dstream_t, waiter) + offsetof(sse_waiter_t, subs)
            + nsubs * sizeof(sse_sub_t);
    fsize = sse_bus_filter_space(&src->filter);
    d = malloc(wsize + fsize + idlen);
    if (!d)
        return APR_ENOMEM;
    nfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (nfd < 0) {
        apr_status_t rv = errno;
        free(d);
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, rv, r, APLOGNO(10591)
                      "cannot duplicate the stream's socket; it stays "
                      "threaded (raise the descriptor limit: ulimit -n)");
        return rv;
    }
    /* O_NONBLOCK lives in the open file description, shared with httpd's
     * descriptor; httpd already uses it non-blocking and is done with it. */
    fl = fcntl(nfd, F_GETFL);
    if (fl >= 0)
        fcntl(nfd, F_SETFL, fl | O_NONBLOCK);

    memset(d, 0, offsetof(sse_dstream_t, waiter));
    names = (char *)d + wsize;
    d->log_id = names + fsize;
    memcpy(d->log_id, src->log_id ? src->log_id : "?", idlen);
    /* The stream as the loop will run it: our sink, our log id, the names
     * in this record, no buffer (lent per call from the loop's scratch).
     * src itself is left as it was; the caller destroys it. */
    d->st = *src;
    sse_bus_filter_copy(&d->st.filter, &src->filter, names);
    d->st.sink.ctx = d;
    d->st.sink.write = dsink_write;
    d->st.sink.closed = dsink_closed;
    d->st.sink.busy = dsink_busy;
    d->st.log_id = d->log_id;
    d->st.buf = NULL;
    d->last_pump = apr_time_now();
    d->server = src->server;
    d->loop = loop;
    d->ref = a->ref;
    d->open_counter = a->open_counter;
    d->fd = nfd;
    d->chunked = r->chunked;
    /* Two passes' worth: the one the socket did not take and one more. */
    d->pend_max = 2 * (d->st.buf_size + 32);
    d->write_timeout = apr_time_from_sec(a->write_timeout_s);
    d->started = r->request_time;
    if (sse_waiter_init(&d->waiter) != APR_SUCCESS) {
        close(nfd);
        free(d);
        return APR_EGENERAL;
    }
    d->waiter.notify = dstream_notify;
    d->waiter.notify_arg = d;

    /* httpd must neither finish the response on the wire (the terminating
     * chunk: the core output filter drops output once aborted) nor shut
     * the socket down (lingering close skips shutdown() when aborted).
     * Set before the loop can write a byte. */
    c->aborted = 1;
    c->keepalive = AP_CONN_CLOSE;

    /* Subscribe before the loop may touch the record: once it is on the
     * ready list the loop owns it and may end it (and unregister). */
    sse_dispatch_register(d->ref, &d->waiter, &d->st.filter);
    pthread_mutex_lock(&loop->mu);
    if (loop->quit) {
        /* The child is going away: undo; the stream ends threaded. */
        pthread_mutex_unlock(&loop->mu);
        sse_dispatch_unregister(&d->waiter);
        pthread_mutex_lock(&loop->mu);
        ready_unlink_locked(loop, d);
        pthread_mutex_unlock(&loop->mu);
        sse_waiter_destroy(&d->waiter);
        close(nfd);
        free(d);
        c->aborted = 0;
        return APR_EINVAL;
    }
    SSE_STAT_ADD(streams_detached, 1);
    /* Logged before the push: once pushed and unlocked, the loop may end
     * the stream and free d (ASan found this log line reading freed d). */
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, APLOGNO(10592)
                  "stream %s detached to loop %d (fd %d, %s)", d->log_id,
                  loop->index, nfd, d->chunked ? "chunked" : "raw");
    /* httpd releases this connection's pools once the handler returns:
     * a burst of hand-offs is followed by a trim, as a burst of ends is. */
    sse_trim_note_end();
    d->fresh = 1;
    wake = ready_push_locked(loop, d);
    pthread_mutex_unlock(&loop->mu);
    if (wake)
        wake_loop(loop);
    return APR_SUCCESS;
}

/* ------------------------------------------------------------ child */

static apr_status_t detach_shutdown(void *data)
{
    int i;
    (void)data;

    pthread_mutex_lock(&loops_mu);
    if (loops_ready > 0) {
        for (i = 0; i < nloops_conf; i++) {
            pthread_mutex_lock(&loops[i].mu);
            loops[i].quit = 1;
            pthread_mutex_unlock(&loops[i].mu);
            wake_loop(&loops[i]);
        }
        for (i = 0; i < nloops_conf; i++) {
            if (loops[i].started) {
                pthread_join(loops[i].thread, NULL);
                loops[i].started = 0;
            }
            close(loops[i].epfd);
            close(loops[i].evfd);
        }
    }
    loops_ready = -1; /* no hand-off after this */
    pthread_mutex_unlock(&loops_mu);
    return APR_SUCCESS;
}

static int config_may_detach(const ap_directive_t *d);

void sse_detach_child_init(apr_pool_t *pchild, server_rec *s)
{
    sse_srv_conf_t *sc = ap_get_module_config(s->module_config, &sse_module);

    main_server = s;
    nloops_conf = sc->detached_threads > 0 ? sc->detached_threads : 1;
    coalesce_ms_conf = sc->detached_coalesce_ms;
    uring_conf = sc->detached_uring;
    if (config_may_detach(ap_conftree))
        sse_trim_child_init();
    loops_ready = 0;
    apr_pool_pre_cleanup_register(pchild, NULL, detach_shutdown);
}

/* ------------------------------------------------------------ start-up */

/* Could any stream of this configuration be detached? (an SSEMode
 * detached/auto anywhere, or a default that is not threaded) */
static int config_may_detach(const ap_directive_t *d)
{
    for (; d; d = d->next) {
        if (!strcasecmp(d->directive, "SSEMode") && d->args
            && strncasecmp(d->args, "threaded", 8))
            return 1;
        if (SSE_DEFAULT_MODE != SSE_MODE_THREADED
            && !strcasecmp(d->directive, "SetHandler") && d->args
            && strstr(d->args, SSE_HANDLER_STREAM))
            return 1;
        if (d->first_child && config_may_detach(d->first_child))
            return 1;
    }
    return 0;
}

void sse_detach_check_mpm(server_rec *s)
{
    const char *mpm = ap_show_mpm();
    int spare = 0, threads = 0, daemons = 0;

    if (!mpm || strcmp(mpm, "event") || !config_may_detach(ap_conftree))
        return;
    if (ap_max_requests_per_child > 0)
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, APLOGNO(10593)
                     "MaxConnectionsPerChild %d retires a child after that "
                     "many connections, ending the detached SSE streams it "
                     "holds (clients reconnect and resume); set "
                     "MaxConnectionsPerChild 0 where SSEMode is detached or "
                     "auto", ap_max_requests_per_child);
    if (ap_mpm_query(AP_MPMQ_MAX_SPARE_THREADS, &spare) == APR_SUCCESS
        && ap_mpm_query(AP_MPMQ_MAX_THREADS, &threads) == APR_SUCCESS
        && ap_mpm_query(AP_MPMQ_MAX_DAEMONS, &daemons) == APR_SUCCESS
        && spare > 0 && threads > 0 && daemons > 0
        && spare < threads * daemons)
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, APLOGNO(10594)
                     "MaxSpareThreads %d is below MaxRequestWorkers %d: "
                     "children that hold only detached SSE streams look "
                     "idle to httpd and are retired, ending those streams "
                     "(clients reconnect and resume); set MaxSpareThreads "
                     "to at least MaxRequestWorkers where SSEMode is "
                     "detached or auto", spare, threads * daemons);
}

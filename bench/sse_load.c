/*
 * sse_load.c - SSE load client for the benchmarks (bench/run-bench drives it).
 *
 * Opens N HTTP/1.1 EventSource streams to one URL on 127.0.0.1 with a single
 * epoll loop, decodes each response (chunked transfer coding, or a raw body
 * up to close: nchan and mod_sse differ), parses the SSE stream per the HTML
 * spec far enough to find each event's data, and checks what the paced
 * publisher (bench/sse_pace.c) put there: "seq=<n> ts=<CLOCK_REALTIME ns> ".
 *
 * Per stream it keeps the next expected seq; a higher seq counts the
 * difference as gaps, a lower one as a duplicate. Publish->receive latency
 * (now - ts, both CLOCK_REALTIME on this host) goes into a histogram with
 * 1 us buckets up to 100 ms and 1 ms buckets up to 60 s, so percentiles are
 * exact to 1 us where it matters and memory is fixed.
 *
 * Streams chosen with --slow K stop reading right after their headers (a
 * client that stalls); they are reported apart and never in the latency.
 *
 * More than ~28,000 streams: one (source address, destination) pair has only
 * the ephemeral ports of net.ipv4.ip_local_port_range (32768-60999 here), so
 * --src-addrs K binds the client sockets round-robin to 127.0.0.2 ..
 * 127.0.0.(K+1) (all of 127/8 is local) with IP_BIND_ADDRESS_NO_PORT, which
 * lets the kernel pick the port at connect() time per 4-tuple.
 *
 * Invariants: loopback only (the server address is 127.0.0.1, sources are in
 * 127/8; neither can be set to anything else);
 * bounded in count (--conns <= 100000) and time (--duration, plus
 * --connect-timeout for the connect phase); nothing is allocated per event.
 * Output: one JSON line on stdout at the end; progress lines on stderr.
 * When every stream has its headers it writes "ready" to --ready-file, which
 * is how run-bench knows when to start the publisher or sample memory.
 *
 * Callers: bench/run-bench (also usable by hand; see usage()).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RBUF 65536          /* per-read scratch buffer (shared) */
#define LINE_MAX_B 16384    /* longest SSE line we keep */
#define HDR_MAX 8192
#define H_FINE 100000       /* 1 us buckets: 0..100 ms */
#define H_COARSE 60000      /* 1 ms buckets: 100 ms..60.1 s */

enum { ST_CONNECTING, ST_HEADERS, ST_BODY, ST_DONE };
enum { CK_SIZE, CK_SIZE_EXT, CK_DATA, CK_DATA_CR, CK_DATA_LF, CK_END };

typedef struct conn {
    int fd, state, slow, chunked, ck_state;
    uint64_t ck_left;
    char *hdr;  size_t hdr_len;
    char *line; size_t line_len; int line_trunc, saw_cr;
    /* current event */
    int have_data; uint64_t ev_seq; int64_t ev_ts; int ev_ok;
    /* results */
    int status;
    int64_t next_seq;   /* -1: none seen yet */
    uint64_t events, gaps, dups, bad, comments, skipped_comments, bytes;
    int eof, err;
} conn_t;

static struct {
    const char *path; int port, conns, slow, duration, connect_timeout;
    int64_t expect; int first_seq_known; int rcvbuf; const char *ready_file;
    const char *hist_file; int quiet; int connect_batch; int src_addrs;
    int delayed_ack;
} opt = {"/", 0, 1, 0, 10, 30, -1, 1, 0, NULL, NULL, 0, 200, 0, 0};

static uint64_t hist_fine[H_FINE], hist_coarse[H_COARSE + 1];
static uint64_t lat_n, lat_neg; static int64_t lat_max_ns;
static char rbuf[RBUF];
static volatile sig_atomic_t stop_flag;

static int64_t now_ns(clockid_t c)
{
    struct timespec t;
    clock_gettime(c, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void usage(void)
{
    fprintf(stderr,
        "usage: sse_load --port P --path /events [--conns N] [--duration S]\n"
        "                [--slow K] [--expect N] [--rcvbuf BYTES]\n"
        "                [--ready-file F] [--hist-file F] [--connect-timeout S]\n"
        "                [--src-addrs K]   (bind to 127.0.0.2..127.0.0.K+1, K <= 200)\n"
        "                [--delayed-ack]   (TCP_QUICKACK 0 after every read)\n"
        "Opens N SSE streams to 127.0.0.1:P, reads until --duration seconds\n"
        "after all are open (or until every stream has --expect events),\n"
        "then prints one JSON line. Data must be 'seq=<n> ts=<ns> ...'.\n");
    exit(2);
}

static void record_latency(int64_t ns)
{
    if (ns < 0) { lat_neg++; ns = 0; }
    if (ns > lat_max_ns) lat_max_ns = ns;
    uint64_t us = (uint64_t)ns / 1000;
    if (us < H_FINE) hist_fine[us]++;
    else {
        uint64_t ms = (us - H_FINE) / 1000;
        hist_coarse[ms < H_COARSE ? ms : H_COARSE]++;
    }
    lat_n++;
}

/* Latency (us) at quantile q, from the histogram. */
static double quantile_us(double q)
{
    if (!lat_n) return -1;
    uint64_t want = (uint64_t)(q * (double)lat_n);
    if (want >= lat_n) want = lat_n - 1;
    uint64_t acc = 0;
    for (int i = 0; i < H_FINE; i++) {
        acc += hist_fine[i];
        if (acc > want) return i;
    }
    for (int i = 0; i <= H_COARSE; i++) {
        acc += hist_coarse[i];
        if (acc > want) return H_FINE + (double)i * 1000;
    }
    return -1;
}

/* One complete event: check its seq, record its latency. */
static void dispatch_event(conn_t *c, int64_t now)
{
    if (!c->have_data) return;
    c->have_data = 0;
    if (!c->ev_ok) { c->bad++; return; }
    c->events++;
    int64_t s = (int64_t)c->ev_seq;
    if (c->next_seq < 0) {
        /* first event: with --expect the publisher starts at 0 after every
         * stream is open, so anything before it is a gap */
        if (opt.first_seq_known && s > 0) c->gaps += (uint64_t)s;
        c->next_seq = s + 1;
    } else if (s == c->next_seq) {
        c->next_seq++;
    } else if (s > c->next_seq) {
        c->gaps += (uint64_t)(s - c->next_seq);
        c->next_seq = s + 1;
    } else {
        c->dups++;
    }
    record_latency(now - c->ev_ts);
}

/* "seq=123 ts=456 xxxx" -> fields; anything else marks the event bad. */
static void parse_data(conn_t *c, const char *v, size_t n)
{
    c->have_data = 1;
    c->ev_ok = 0;
    char tmp[64];
    size_t k = n < sizeof tmp - 1 ? n : sizeof tmp - 1;
    memcpy(tmp, v, k);
    tmp[k] = 0;
    unsigned long long s; long long t;
    if (sscanf(tmp, "seq=%llu ts=%lld", &s, &t) == 2) {
        c->ev_seq = s; c->ev_ts = t; c->ev_ok = 1;
    }
}

static void sse_line(conn_t *c, int64_t now)
{
    const char *l = c->line; size_t n = c->line_len;
    if (n == 0) { dispatch_event(c, now); return; }
    if (l[0] == ':') {
        c->comments++;
        if (n >= 9 && (memcmp(l, ": skipped", 9) == 0 || memcmp(l, ": missed ", 9) == 0))
            c->skipped_comments++;
        return;
    }
    if (n >= 5 && memcmp(l, "data:", 5) == 0) {
        size_t o = 5;
        if (o < n && l[o] == ' ') o++;
        /* only the first data line carries seq/ts; our events have one */
        if (!c->have_data) parse_data(c, l + o, n - o);
    }
    /* id:, event:, retry: need nothing here */
}

/* Feed decoded body bytes to the SSE line splitter (CR, LF, CRLF). */
static void sse_feed(conn_t *c, const char *p, size_t n, int64_t now)
{
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (c->saw_cr) {
            c->saw_cr = 0;
            if (ch == '\n') continue;
        }
        if (ch == '\r' || ch == '\n') {
            if (ch == '\r') c->saw_cr = 1;
            sse_line(c, now);
            c->line_len = 0;
            continue;
        }
        /* fast path: copy up to the next line end */
        const char *e1 = memchr(p + i, '\n', n - i);
        const char *e2 = memchr(p + i, '\r', (e1 ? (size_t)(e1 - p) : n) - i);
        const char *end = e2 ? e2 : (e1 ? e1 : p + n);
        size_t run = (size_t)(end - (p + i));
        size_t room = LINE_MAX_B - c->line_len;
        size_t take = run < room ? run : room;
        memcpy(c->line + c->line_len, p + i, take);
        c->line_len += take;
        i += run - 1;
    }
}

/* End of a chunk-size line: 0 is the last chunk (returns 1). */
static int chunk_size_done(conn_t *c)
{
    if (c->ck_left == 0) { c->ck_state = CK_END; return 1; }
    c->ck_state = CK_DATA;
    return 0;
}

/* Chunked decoder: a small state machine, bytes in, body bytes out. */
static int chunked_feed(conn_t *c, const char *p, size_t n, int64_t now)
{
    size_t i = 0;
    while (i < n) {
        char ch = p[i];
        switch (c->ck_state) {
        case CK_SIZE:
            i++;
            if (ch >= '0' && ch <= '9') c->ck_left = c->ck_left * 16 + (uint64_t)(ch - '0');
            else if (ch >= 'a' && ch <= 'f') c->ck_left = c->ck_left * 16 + (uint64_t)(ch - 'a' + 10);
            else if (ch >= 'A' && ch <= 'F') c->ck_left = c->ck_left * 16 + (uint64_t)(ch - 'A' + 10);
            else if (ch == ';' || ch == '\r') c->ck_state = CK_SIZE_EXT;
            else if (ch == '\n') { if (chunk_size_done(c)) return 1; }
            else return -1;
            break;
        case CK_SIZE_EXT:
            i++;
            if (ch == '\n' && chunk_size_done(c)) return 1;
            break;
        case CK_DATA: {
            size_t take = n - i < c->ck_left ? n - i : (size_t)c->ck_left;
            sse_feed(c, p + i, take, now);
            c->bytes += take;
            i += take;
            c->ck_left -= take;
            if (c->ck_left == 0) c->ck_state = CK_DATA_CR;
            break;
        }
        case CK_DATA_CR:
            if (ch == '\r') { c->ck_state = CK_DATA_LF; i++; }
            else if (ch == '\n') { c->ck_state = CK_SIZE; i++; }
            else return -1;
            break;
        case CK_DATA_LF:
            if (ch != '\n') return -1;
            c->ck_state = CK_SIZE; i++;
            break;
        default:
            return 1;
        }
    }
    return 0;
}

static int ci_has(const char *hay, const char *needle)
{
    return strcasestr(hay, needle) != NULL;
}

/* Returns bytes consumed from p into headers, or -1 on error; sets state. */
static long headers_feed(conn_t *c, const char *p, size_t n)
{
    size_t room = HDR_MAX - 1 - c->hdr_len;
    size_t take = n < room ? n : room;
    memcpy(c->hdr + c->hdr_len, p, take);
    size_t old = c->hdr_len;
    c->hdr_len += take;
    c->hdr[c->hdr_len] = 0;
    char *end = strstr(c->hdr, "\r\n\r\n");
    if (!end) {
        if (c->hdr_len >= HDR_MAX - 1) return -1;
        return (long)take;
    }
    size_t hlen = (size_t)(end - c->hdr) + 4;
    *end = 0;
    if (sscanf(c->hdr, "HTTP/1.%*d %d", &c->status) != 1) return -1;
    c->chunked = ci_has(c->hdr, "\r\ntransfer-encoding: chunked");
    c->state = ST_BODY;
    return (long)(hlen - old);
}

static int nconn_open, nready, nclosed, npending, nfail_early;
static conn_t *conns;
static int epfd;

static void conn_close(conn_t *c, int err)
{
    if (c->state == ST_DONE) return;
    if (c->state != ST_BODY || c->status == 0) {
        c->err = err ? err : -1;
        if (c->state != ST_BODY) { npending--; nfail_early++; }
    }
    c->state = ST_DONE;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    nclosed++;
}

static void on_readable(conn_t *c)
{
    for (int loops = 0; loops < 16; loops++) {
        ssize_t r = read(c->fd, rbuf, sizeof rbuf);
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (errno == EINTR) continue;
            conn_close(c, errno);
            return;
        }
        if (r == 0) { c->eof = 1; conn_close(c, 0); return; }
        if (opt.delayed_ack) {
            /* stay in delayed-ACK mode (Linux leaves it whenever a delayed
             * ACK times out): ACK about every second segment, not every
             * read of a small pushed one */
            int zero = 0;
            setsockopt(c->fd, IPPROTO_TCP, TCP_QUICKACK, &zero, sizeof zero);
        }
        int64_t now = now_ns(CLOCK_REALTIME);
        const char *p = rbuf; size_t n = (size_t)r;
        if (c->state == ST_HEADERS) {
            long used = headers_feed(c, p, n);
            if (used < 0) { conn_close(c, EPROTO); return; }
            p += used; n -= (size_t)used;
            if (c->state == ST_BODY) {
                nready++;
                npending--;
                if (c->status != 200) { conn_close(c, EPROTO); return; }
                if (c->slow) {
                    /* stall: never read again, keep the socket open */
                    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
                    return;
                }
            }
        }
        if (c->state == ST_BODY && n) {
            if (c->chunked) {
                int rc = chunked_feed(c, p, n, now);
                if (rc < 0) { conn_close(c, EPROTO); return; }
                if (rc > 0) { conn_close(c, 0); return; }
            } else {
                sse_feed(c, p, n, now);
                c->bytes += n;
            }
        }
        if ((size_t)r < sizeof rbuf) return;
    }
}

static int start_connect(conn_t *c, int idx, struct sockaddr_in *sa, const char *req, size_t reqlen)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) { fprintf(stderr, "sse_load: socket: %s (raise ulimit -n?)\n", strerror(errno)); return -1; }
    if (opt.src_addrs > 0) {
        /* source 127.0.0.(2 + idx % K), port chosen by connect() */
        int one = 1;
        if (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one) < 0) {
            fprintf(stderr, "sse_load: IP_BIND_ADDRESS_NO_PORT: %s\n", strerror(errno));
            close(fd); return -1;
        }
        struct sockaddr_in src = {.sin_family = AF_INET, .sin_port = 0};
        src.sin_addr.s_addr = htonl(INADDR_LOOPBACK + 1 + (uint32_t)(idx % opt.src_addrs));
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
            fprintf(stderr, "sse_load: bind 127.0.0.%d: %s\n", 2 + idx % opt.src_addrs, strerror(errno));
            close(fd); return -1;
        }
    }
    if (c->slow && opt.rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &opt.rcvbuf, sizeof opt.rcvbuf);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->state = ST_CONNECTING;
    int rc = connect(fd, (struct sockaddr *)sa, sizeof *sa);
    if (rc < 0 && errno != EINPROGRESS) {
        fprintf(stderr, "sse_load: connect: %s\n", strerror(errno));
        c->err = errno; close(fd); c->fd = -1; c->state = ST_DONE; nclosed++; nfail_early++;
        return 0;
    }
    (void)req; (void)reqlen;
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
    nconn_open++;
    npending++;
    return 0;
}

static void on_sigint(int s) { (void)s; stop_flag = 1; }

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0 && v && (i++, 1))
        if (ARG("--port")) opt.port = atoi(v);
        else if (ARG("--path")) opt.path = v;
        else if (ARG("--conns")) opt.conns = atoi(v);
        else if (ARG("--slow")) opt.slow = atoi(v);
        else if (ARG("--duration")) opt.duration = atoi(v);
        else if (ARG("--connect-timeout")) opt.connect_timeout = atoi(v);
        else if (ARG("--expect")) opt.expect = atoll(v);
        else if (ARG("--rcvbuf")) opt.rcvbuf = atoi(v);
        else if (ARG("--ready-file")) opt.ready_file = v;
        else if (ARG("--hist-file")) opt.hist_file = v;
        else if (ARG("--src-addrs")) opt.src_addrs = atoi(v);
        else if (strcmp(a, "--quiet") == 0) opt.quiet = 1;
        else if (strcmp(a, "--delayed-ack") == 0) opt.delayed_ack = 1;
        else usage();
#undef ARG
    }
    if (opt.port <= 0 || opt.port > 65535 || opt.conns < 1 || opt.conns > 100000 ||
        opt.src_addrs < 0 || opt.src_addrs > 200 ||
        opt.slow < 0 || opt.slow > opt.conns || opt.duration < 1 || opt.duration > 600)
        usage();

    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < (rlim_t)opt.conns + 32) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < (rlim_t)opt.conns + 32) {
            fprintf(stderr, "sse_load: %d streams need %d descriptors, the hard "
                    "limit is %lu: raise it (ulimit -Hn)\n", opt.conns, opt.conns + 32,
                    (unsigned long)rl.rlim_max);
            return 1;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_sigint);
    signal(SIGTERM, on_sigint);

    conns = calloc((size_t)opt.conns, sizeof *conns);
    char *mem = malloc((size_t)opt.conns * (HDR_MAX + LINE_MAX_B));
    if (!conns || !mem) { fprintf(stderr, "sse_load: out of memory\n"); return 1; }
    for (int i = 0; i < opt.conns; i++) {
        conns[i].hdr = mem + (size_t)i * (HDR_MAX + LINE_MAX_B);
        conns[i].line = conns[i].hdr + HDR_MAX;
        conns[i].next_seq = -1;
        conns[i].fd = -1;
        /* spread the stalled ones over the set */
        conns[i].slow = opt.slow && (i % (opt.conns / opt.slow) == 0) &&
                        (i / (opt.conns / opt.slow)) < opt.slow;
    }
    char req[2048];
    int reqlen = snprintf(req, sizeof req,
        "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAccept: text/event-stream\r\n"
        "Cache-Control: no-cache\r\nUser-Agent: sse_load\r\n\r\n", opt.path, opt.port);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    epfd = epoll_create1(EPOLL_CLOEXEC);
    int64_t t_start = now_ns(CLOCK_MONOTONIC);
    int64_t connect_deadline = t_start + (int64_t)opt.connect_timeout * 1000000000;
    int64_t t_ready = 0, deadline = 0;
    int next = 0;
    struct epoll_event evs[512];
    int64_t last_progress = t_start;

    while (!stop_flag) {
        int64_t now = now_ns(CLOCK_MONOTONIC);
        /* open connections in batches so the listen backlog never overflows */
        if (next < opt.conns && npending < opt.connect_batch) {
            int room = opt.connect_batch - npending;
            for (int k = 0; k < room && next < opt.conns; k++, next++)
                if (start_connect(&conns[next], next, &sa, req, (size_t)reqlen) < 0) { stop_flag = 1; break; }
        }
        if (!t_ready && nready + nfail_early >= opt.conns) {
            t_ready = now;
            deadline = now + (int64_t)opt.duration * 1000000000;
            if (!opt.quiet)
                fprintf(stderr, "sse_load: %d streams open (%d failed) in %.2f s\n",
                        nready, nfail_early, (double)(now - t_start) / 1e9);
            if (opt.ready_file) {
                FILE *f = fopen(opt.ready_file, "w");
                if (f) { fprintf(f, "ready %d\n", nready); fclose(f); }
            }
        }
        if (!t_ready && now > connect_deadline) {
            fprintf(stderr, "sse_load: only %d of %d streams open after %d s: giving up\n",
                    nready, opt.conns, opt.connect_timeout);
            break;
        }
        if (t_ready && now >= deadline) break;
        if (t_ready && opt.expect > 0) {
            /* done early when every reading stream has seen the last seq */
            int all = 1;
            for (int i = 0; i < opt.conns && all; i++)
                if (!conns[i].slow && conns[i].state == ST_BODY && conns[i].next_seq < opt.expect) all = 0;
            if (all) break;
        }
        if (!opt.quiet && now - last_progress > 2000000000LL) {
            last_progress = now;
            uint64_t e = 0;
            for (int i = 0; i < opt.conns; i++) e += conns[i].events;
            fprintf(stderr, "sse_load: %.1f s, %" PRIu64 " events, %d open, %d closed\n",
                    (double)(now - t_start) / 1e9, e, nready - nclosed, nclosed);
        }
        int n = epoll_wait(epfd, evs, 512, 100);
        for (int k = 0; k < n; k++) {
            conn_t *c = evs[k].data.ptr;
            if (c->state == ST_DONE) continue;
            if (c->state == ST_CONNECTING) {
                int e = 0; socklen_t el = sizeof e;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &el);
                if (e) { conn_close(c, e); continue; }
                if (!(evs[k].events & EPOLLOUT)) continue;
                /* the request is small: one write fits the send buffer */
                if (write(c->fd, req, (size_t)reqlen) != reqlen) { conn_close(c, errno ? errno : EIO); continue; }
                c->state = ST_HEADERS;
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
                continue;
            }
            if (evs[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(c);
        }
    }
    int64_t t_end = now_ns(CLOCK_MONOTONIC);

    /* summary over reading streams; stalled ones apart */
    uint64_t ev = 0, gaps = 0, dups = 0, bad = 0, comments = 0, skipc = 0, bytes = 0, missing = 0;
    int reading = 0, failed = 0, eofs = 0, slow_open = 0, non200 = 0, first_status = 0;
    for (int i = 0; i < opt.conns; i++) {
        conn_t *c = &conns[i];
        if (c->status && !first_status) first_status = c->status;
        if (c->status && c->status != 200) non200++;
        if (c->err) { failed++; continue; }
        if (c->slow) { if (c->state == ST_BODY) slow_open++; continue; }
        reading++;
        ev += c->events; gaps += c->gaps; dups += c->dups; bad += c->bad;
        comments += c->comments; skipc += c->skipped_comments; bytes += c->bytes;
        if (c->eof) eofs++;
        if (opt.expect > 0 && c->next_seq < opt.expect)
            missing += (uint64_t)(opt.expect - (c->next_seq < 0 ? 0 : c->next_seq));
    }
    if (opt.hist_file) {
        FILE *f = fopen(opt.hist_file, "w");
        if (f) {
            fprintf(f, "# latency_us count\n");
            for (int i = 0; i < H_FINE; i++) if (hist_fine[i]) fprintf(f, "%d %" PRIu64 "\n", i, hist_fine[i]);
            for (int i = 0; i <= H_COARSE; i++) if (hist_coarse[i]) fprintf(f, "%d %" PRIu64 "\n", H_FINE + i * 1000, hist_coarse[i]);
            fclose(f);
        }
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double client_cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                        (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    printf("{\"client_cpu_s\":%.3f,\"conns\":%d,\"reading\":%d,\"slow\":%d,\"slow_open\":%d,\"failed\":%d,"
           "\"non200\":%d,\"status\":%d,\"eof\":%d,\"events\":%" PRIu64 ",\"bytes\":%" PRIu64 ","
           "\"gaps\":%" PRIu64 ",\"dups\":%" PRIu64 ",\"bad\":%" PRIu64 ",\"missing_at_end\":%" PRIu64 ","
           "\"comments\":%" PRIu64 ",\"skip_comments\":%" PRIu64 ",\"lat_n\":%" PRIu64 ",\"lat_negative\":%" PRIu64 ","
           "\"p50_us\":%.0f,\"p90_us\":%.0f,\"p99_us\":%.0f,\"p999_us\":%.0f,\"max_us\":%.0f,"
           "\"connect_s\":%.3f,\"run_s\":%.3f}\n",
           client_cpu, opt.conns, reading, opt.slow, slow_open, failed, non200, first_status, eofs, ev, bytes,
           gaps, dups, bad, missing, comments, skipc, lat_n, lat_neg,
           quantile_us(0.50), quantile_us(0.90), quantile_us(0.99), quantile_us(0.999),
           (double)lat_max_ns / 1000.0,
           t_ready ? (double)(t_ready - t_start) / 1e9 : -1.0,
           t_ready ? (double)(t_end - t_ready) / 1e9 : 0.0);
    return t_ready ? 0 : 1;
}

/*
 * sse_pace.c - paced event source for the benchmarks (bench/run-bench).
 *
 * Emits --count events at --rate per second, each carrying
 * "seq=<n> ts=<CLOCK_REALTIME ns> " padded with 'x' to exactly --size bytes
 * of data, seq counting from 0. The timestamp is taken when the event is
 * handed on, so the latency sse_load measures includes the publish path of
 * each server (pipe + `sse-pub stream` for mod_sse, an HTTP POST for nchan).
 *
 *   --mode lines: one event per line on stdout, for `| sse-pub stream BUS`;
 *   --mode http:  POST each event to 127.0.0.1:PORT PATH over one keep-alive
 *                 connection (nchan_publisher), waiting for each response.
 *
 * Schedule: event i is due at t0 + i/rate (absolute, CLOCK_MONOTONIC), so a
 * late wake-up is caught up instead of slowing the whole run; all events due
 * at a wake-up go out back to back. If the server is slower than the rate
 * (http mode waits for each response) the lag is reported, not hidden.
 *
 * Invariants: loopback only; bounded by --count and by --max-seconds.
 * Output: one JSON summary line on stderr.
 * Callers: bench/run-bench.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ns(clockid_t c)
{
    struct timespec t;
    clock_gettime(c, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w; n -= (size_t)w;
    }
    return 0;
}

/* Read one HTTP response (headers + Content-Length body); return status. */
static int read_response(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    for (;;) {
        if (len == cap - 1) return -1;
        ssize_t r = read(fd, buf + len, cap - 1 - len);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        len += (size_t)r;
        buf[len] = 0;
        char *end = strstr(buf, "\r\n\r\n");
        if (!end) continue;
        int status = 0;
        sscanf(buf, "HTTP/1.%*d %d", &status);
        long clen = 0;
        char *cl = strcasestr(buf, "\r\ncontent-length:");
        if (cl) clen = atol(cl + 17);
        size_t need = (size_t)(end - buf) + 4 + (size_t)clen;
        while (len < need) {
            if (len == cap - 1) return -1;
            r = read(fd, buf + len, cap - 1 - len);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) return -1;
            len += (size_t)r;
        }
        return status;
    }
}

static int connect_local(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        fprintf(stderr, "sse_pace: cannot connect to 127.0.0.1:%d: %s\n", port, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

int main(int argc, char **argv)
{
    double rate = 200; long count = 2000; int size = 128, port = 0, http = 0;
    int max_seconds = 300; const char *path = "/pub";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) goto usage;
        if (!strcmp(a, "--rate")) rate = atof(v);
        else if (!strcmp(a, "--count")) count = atol(v);
        else if (!strcmp(a, "--size")) size = atoi(v);
        else if (!strcmp(a, "--port")) port = atoi(v);
        else if (!strcmp(a, "--path")) path = v;
        else if (!strcmp(a, "--max-seconds")) max_seconds = atoi(v);
        else if (!strcmp(a, "--mode")) {
            if (!strcmp(v, "http")) http = 1;
            else if (strcmp(v, "lines")) goto usage;
        } else goto usage;
        i++;
    }
    if (rate <= 0 || rate > 1e6 || count < 1 || size < 48 || size > 1 << 20 ||
        (http && port <= 0))
        goto usage;
    signal(SIGPIPE, SIG_IGN);

    int fd = 1;
    if (http && (fd = connect_local(port)) < 0) return 1;
    size_t hdr_cap = 512;
    char *msg = malloc(hdr_cap + (size_t)size + 1);
    char *resp = malloc(65536);
    if (!msg || !resp) return 1;

    const int64_t t0 = now_ns(CLOCK_MONOTONIC);
    const int64_t limit = t0 + (int64_t)max_seconds * 1000000000;
    int64_t max_lag = 0;
    long sent = 0, errors = 0;
    int last_status = 0;
    while (sent < count) {
        int64_t due = t0 + (int64_t)((double)sent * 1e9 / rate);
        int64_t now = now_ns(CLOCK_MONOTONIC);
        if (now > limit) break;
        if (due > now) {
            struct timespec ts = {due / 1000000000, due % 1000000000};
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
            now = now_ns(CLOCK_MONOTONIC);
        }
        if (now - due > max_lag) max_lag = now - due;
        /* build: [headers] data (size bytes) [\n in lines mode] */
        char *body = msg + hdr_cap;
        int n = snprintf(body, (size_t)size + 1, "seq=%ld ts=%" PRId64 " ", sent,
                         now_ns(CLOCK_REALTIME));
        memset(body + n, 'x', (size_t)(size - n));
        if (!http) {
            body[size] = '\n';
            if (write_all(1, body, (size_t)size + 1)) {
                fprintf(stderr, "sse_pace: stdout closed after %ld events: %s\n", sent, strerror(errno));
                break;
            }
        } else {
            char hdr[512];
            int hl = snprintf(hdr, sizeof hdr,
                "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
                "Content-Length: %d\r\n\r\n", path, size);
            char *start = body - hl;
            memcpy(start, hdr, (size_t)hl);
            if (write_all(fd, start, (size_t)hl + (size_t)size)) {
                fprintf(stderr, "sse_pace: POST failed: %s\n", strerror(errno));
                break;
            }
            last_status = read_response(fd, resp, 65536);
            if (last_status < 200 || last_status > 299) {
                errors++;
                if (last_status < 0) {
                    fprintf(stderr, "sse_pace: publisher connection closed after %ld events\n", sent);
                    break;
                }
            }
        }
        sent++;
    }
    double el = (double)(now_ns(CLOCK_MONOTONIC) - t0) / 1e9;
    fprintf(stderr, "{\"sent\":%ld,\"errors\":%ld,\"last_status\":%d,\"elapsed_s\":%.3f,"
            "\"rate\":%.1f,\"max_lag_ms\":%.3f}\n", sent, errors, last_status, el,
            el > 0 ? (double)sent / el : 0, (double)max_lag / 1e6);
    return sent == count && errors == 0 ? 0 : 1;
usage:
    fprintf(stderr, "usage: sse_pace [--mode lines|http] [--rate R] [--count N] [--size B]\n"
                    "                [--port P --path /pub/ch] [--max-seconds S]\n");
    return 2;
}

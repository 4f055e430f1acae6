/*
 * sse_bus_relay.c - reading the status file that sse-relay keeps beside a
 * bus (BUS.relay-status), for `sse-pub info` and the module's metrics and
 * mod_status section: one parser, used by both.
 *
 * The file is written by another process (sse-relay, maybe another user):
 * nothing in it is trusted. It is read with a bounded read (at most
 * SSE_BUS_RELAY_STATUS_MAX bytes, a regular file only, never following a
 * symlink, never blocking on a FIFO); every line must be key=value with a
 * lower-case key and printable ASCII value; numbers are plain decimal that
 * fit their type; ids must be MS-SEQ. Anything else makes the whole file
 * "garbage" (SSE_BUS_EFORMAT): callers show nothing rather than something
 * wrong. Unknown keys are ignored, so the relay can add fields.
 *
 * The relay replaces the file atomically (write a temp file, rename) at
 * most once a second and at least every stale_after_ms (a field it writes:
 * its read timeout plus its longest back-off); older than that, the status
 * is "stale": the relay is probably dead.
 *
 * Callers: bus/sse_pub.c (info), mod_sse/sse_metrics.c, sse_status.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sse_bus_format.h"

/* Default when the file does not say (relays before the field). */
#define RELAY_STALE_AFTER_MS_DEFAULT 10000u

static int parse_u64(const char *v, size_t n, uint64_t *out)
{
    uint64_t x = 0;
    if (n == 0 || n > 20)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        if (x > (UINT64_MAX - (uint64_t)(v[i] - '0')) / 10)
            return -1;
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    *out = x;
    return 0;
}

static int copy_str(char *dst, size_t cap, const char *v, size_t n)
{
    if (n >= cap)
        return -1;
    memcpy(dst, v, n);
    dst[n] = '\0';
    return 0;
}

/* "" or an ordered id (MS-SEQ). */
static int copy_id(char *dst, size_t cap, const char *v, size_t n)
{
    uint64_t ms;
    uint32_t seq;
    if (n && sse_bus_parse_ordered_id(v, n, &ms, &seq) != SSE_BUS_OK)
        return -1;
    return copy_str(dst, cap, v, n);
}

/* One key=value line; 0, or -1 if the value is not what the key needs. */
static int field(sse_bus_relay_status_t *st, const char *k, size_t kn,
                 const char *v, size_t vn, unsigned *seen)
{
    static const struct {
        const char *key;
        size_t off;
    } nums[] = {
        {"lag_ms", offsetof(sse_bus_relay_status_t, lag_ms)},
        {"events_relayed", offsetof(sse_bus_relay_status_t, relayed)},
        {"events_skipped", offsetof(sse_bus_relay_status_t, skipped)},
        {"gaps", offsetof(sse_bus_relay_status_t, gaps)},
        {"reconnects", offsetof(sse_bus_relay_status_t, reconnects)},
        {"id_repairs", offsetof(sse_bus_relay_status_t, id_repairs)},
        {"master_changes", offsetof(sse_bus_relay_status_t, master_changes)},
        {"down_since", offsetof(sse_bus_relay_status_t, down_since)},
        {"updated", offsetof(sse_bus_relay_status_t, updated)},
        {"stale_after_ms", offsetof(sse_bus_relay_status_t, stale_after_ms)},
    };
    uint64_t x;

#define KEY(s) (kn == sizeof(s) - 1 && memcmp(k, s, kn) == 0)
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++)
        if (kn == strlen(nums[i].key) && memcmp(k, nums[i].key, kn) == 0) {
            if (parse_u64(v, vn, &x) < 0)
                return -1;
            *(uint64_t *)((char *)st + nums[i].off) = x;
            if (KEY("updated"))
                *seen |= 4;
            return 0;
        }
    if (KEY("pid")) {
        if (parse_u64(v, vn, &x) < 0 || x == 0 || x > 0x7fffffff)
            return -1;
        st->pid = (long)x;
        *seen |= 1;
        return 0;
    }
    if (KEY("connected")) {
        if (vn != 1 || (v[0] != '0' && v[0] != '1'))
            return -1;
        st->connected = v[0] == '1';
        *seen |= 2;
        return 0;
    }
    if (KEY("lag_events")) { /* empty: not known yet */
        if (vn == 0) {
            st->lag_events_known = 0;
            return 0;
        }
        if (parse_u64(v, vn, &st->lag_events) < 0)
            return -1;
        st->lag_events_known = 1;
        return 0;
    }
    if (KEY("redis"))
        return copy_str(st->redis, sizeof st->redis, v, vn);
    if (KEY("master"))
        return copy_str(st->master, sizeof st->master, v, vn);
    if (KEY("stream_key"))
        return copy_str(st->stream_key, sizeof st->stream_key, v, vn);
    if (KEY("cursor"))
        return copy_id(st->cursor, sizeof st->cursor, v, vn);
    if (KEY("redis_last_id"))
        return copy_id(st->redis_last_id, sizeof st->redis_last_id, v, vn);
#undef KEY
    return 0; /* a field of a newer relay */
}

int sse_bus_relay_status_parse(const char *buf, size_t len, int64_t now,
                               sse_bus_relay_status_t *st,
                               sse_bus_error_t *err)
{
    const char *p = buf, *end = buf + len;
    unsigned seen = 0, lineno = 0;

    memset(st, 0, sizeof *st);
    if (len > SSE_BUS_RELAY_STATUS_MAX)
        return sse_bus__fail(err, SSE_BUS_EFORMAT, 0, "relay status is "
                             "larger than %u bytes: not written by "
                             "sse-relay", SSE_BUS_RELAY_STATUS_MAX);
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p)), *eq, *q;
        size_t n;
        lineno++;
        if (!nl)
            return sse_bus__fail(err, SSE_BUS_EFORMAT, 0, "relay status "
                                 "line %u is not terminated (a partial "
                                 "write?)", lineno);
        n = (size_t)(nl - p);
        eq = memchr(p, '=', n);
        if (!eq || eq == p)
            return sse_bus__fail(err, SSE_BUS_EFORMAT, 0, "relay status "
                                 "line %u is not key=value", lineno);
        for (q = p; q < eq; q++)
            if (!((*q >= 'a' && *q <= 'z') || *q == '_'
                  || (*q >= '0' && *q <= '9')))
                return sse_bus__fail(err, SSE_BUS_EFORMAT, 0, "relay "
                                     "status line %u: bad key", lineno);
        for (q = eq + 1; q < nl; q++)
            if ((unsigned char)*q < 0x20 || (unsigned char)*q > 0x7e)
                return sse_bus__fail(err, SSE_BUS_EFORMAT, 0, "relay "
                                     "status line %u: value is not "
                                     "printable ASCII", lineno);
        if (field(st, p, (size_t)(eq - p), eq + 1, (size_t)(nl - eq - 1),
                  &seen) < 0)
            return sse_bus__fail(err, SSE_BUS_EFORMAT, 0, "relay status "
                                 "line %u: bad value for '%.*s'", lineno,
                                 (int)(eq - p), p);
        p = nl + 1;
    }
    if ((seen & 7) != 7 || st->updated == 0)
        return sse_bus__fail(err, SSE_BUS_EFORMAT, 0, "relay status lacks "
                             "pid, connected or updated: not written by "
                             "sse-relay");
    if (st->updated > (uint64_t)INT64_MAX || st->down_since
        > (uint64_t)INT64_MAX)
        return sse_bus__fail(err, SSE_BUS_EFORMAT, 0, "relay status: "
                             "time out of range");
    if (st->stale_after_ms == 0)
        st->stale_after_ms = RELAY_STALE_AFTER_MS_DEFAULT;
    /* A clock step backwards must not make a live relay look dead, nor a
     * future stamp look fresh for ever: age is clamped at 0. */
    st->age_s = now > (int64_t)st->updated ? now - (int64_t)st->updated : 0;
    st->stale = (uint64_t)st->age_s * 1000u > st->stale_after_ms;
    return SSE_BUS_OK;
}

int sse_bus_relay_status_read(const char *bus_path,
                              sse_bus_relay_status_t *st,
                              sse_bus_error_t *err)
{
    char path[4096 + 16], buf[SSE_BUS_RELAY_STATUS_MAX + 1];
    struct stat sb;
    ssize_t n;
    size_t got = 0;
    int fd, e;

    memset(st, 0, sizeof *st);
    if ((size_t)snprintf(path, sizeof path, "%s.relay-status", bus_path)
        >= sizeof path)
        return sse_bus__fail(err, SSE_BUS_EINVAL, 0, "bus path too long");
    /* O_NONBLOCK: a FIFO planted at the path must not hang the reader. */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) {
        e = errno;
        if (e == ENOENT)
            return sse_bus__fail(err, SSE_BUS_ENOENT, e, "no relay status "
                                 "at %s (no sse-relay has served this bus)",
                                 path);
        return sse_bus__fail(err, e == EACCES ? SSE_BUS_EACCES
                             : SSE_BUS_ESYS, e, "cannot open %s: %s", path,
                             strerror(e));
    }
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)
        || sb.st_size > SSE_BUS_RELAY_STATUS_MAX) {
        close(fd);
        return sse_bus__fail(err, SSE_BUS_EFORMAT, 0, "%s is not a relay "
                             "status (not a regular file of at most %u "
                             "bytes)", path, SSE_BUS_RELAY_STATUS_MAX);
    }
    while (got < sizeof buf) {
        n = read(fd, buf + got, sizeof buf - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    return sse_bus_relay_status_parse(buf, got, (int64_t)time(NULL), st,
                                      err);
}

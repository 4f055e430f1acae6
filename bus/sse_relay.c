/*
 * sse_relay.c - `sse-relay`: copies a Redis stream into this host's bus, so
 * that every httpd host behind a load balancer serves the same events under
 * the same ids (the Redis stream ids, MS-SEQ), and a client can resume on
 * any host with Last-Event-ID.
 *
 * A thin user of the bus library (include/sse_bus.h) and hiredis. One relay
 * per bus (an flock on BUS.relay-lock enforces it), one stream per relay.
 *
 * Invariants:
 *   - the cursor is the greatest ordered id already in the bus
 *     (sse_bus_last_ordered_id), read at start and whenever the bus is
 *     replaced: no state file, and a relay killed at any instant restarts
 *     where the bus says. Batches are published under one lock hold, so
 *     the bus never holds half a batch;
 *   - only entries with an id above the cursor are appended, in stream
 *     order: ids in the bus are strictly increasing and never duplicated;
 *   - loss is never silent. Every read runs a Lua script in the same
 *     transaction as its XRANGE, which checks that Redis still holds what
 *     follows the cursor (see RELAY_SCRIPT). If it does not (trimmed past
 *     a stalled relay, FLUSHALL, a failover that lost writes, a history
 *     already trimmed when an empty bus is filled), the relay writes a gap
 *     marker before the next entry: a broadcast event (every stream gets it),
 *     type "sse-reset", whose id is the predecessor of that entry's id, so
 *     a client that resumes from before the gap reads it and one that
 *     resumes after it does not. If the stream's last id went below the
 *     cursor, the same script raises it (XSETID, compare-and-set) so new
 *     ids are never below ids already delivered;
 *   - Redis going away never stops the bus from serving: the relay
 *     reconnects with backoff (50 ms doubling to 2 s) and catches up. Its
 *     blocking reads have a timeout longer than XREAD BLOCK and the socket
 *     has TCP keepalive, so a silently dead connection is noticed. With
 *     --sentinel the master is found again (and checked with ROLE) at
 *     every reconnection, and a sentinel is asked about once a second
 *     whether it moved (ensure_connected).
 *
 * Reading: catch up with the script (XRANGE (cursor + COUNT n); when it
 * returns nothing, wait with XREAD BLOCK ms COUNT 1 STREAMS key cursor
 * (never `$`: the cursor is always explicit), then read with the script
 * again. XREAD serves only as the wake-up; the script does the reading so
 * every read is gap-checked.
 *
 * State for operators and tests: a status file (default BUS.relay-status,
 * key=value lines, replaced atomically about once a second).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "sse_bus.h"
#include "sse_redis.h"

#define RELAY_BATCH_DEFAULT 1000
#define RELAY_BATCH_MAX 10000
#define RELAY_CATCH_UP_FACTOR 4 /* reads sent ahead ask for 4 x --batch */
#define RELAY_BLOCK_MS_DEFAULT 1000
#define RELAY_BACKOFF_MIN_MS 50
#define RELAY_BACKOFF_MAX_MS 2000
#define RELAY_MASTER_CHECK_MS 1000     /* --sentinel: ask where the master is */
#define RELAY_SENTINEL_TIMEOUT_MS 1000 /* ... and wait this long at most */
#define RELAY_GAP_CHANNEL "sse.relay"
#define RELAY_RESET_EVENT "sse-reset"

/* The gap check, run atomically with the read (MULTI / EVAL this / XRANGE /
 * EXEC, see send_read). KEYS[1] stream; ARGV[1] cursor ("" = the bus holds
 * no ordered id yet); ARGV[2] the cursor's offset ("" = unknown) and
 * ARGV[3] the stream's mark it is valid for (see below); ARGV[4] a fresh
 * random mark. Returns {flag, last-generated-id, entries-added, length,
 * mark, 1 if the cursor's entry is in the stream}, flag:
 *   0 nothing lost;
 *   1 the cursor's entry is no longer in the stream while later ids were
 *     generated: what followed it may be gone (trimmed past a stalled
 *     relay, lost in a failover, XDEL);
 *   2 the stream was gone (FLUSHALL, empty replica promoted): recreated
 *     with its last id at the cursor;
 *   3 the stream's last id was below the cursor (failover lost writes):
 *     raised to the cursor with XSETID;
 *   4 first fill of an empty bus and the stream's history was trimmed.
 * Trimming removes a prefix, so if the cursor's entry is still there so is
 * everything after it, and the XRANGE queued behind this script in the
 * same transaction sees exactly that. The converse is conservative: a
 * cursor trimmed while its successor survived also reads as a gap, but
 * then the marker (the successor's predecessor) is not above the cursor
 * and none is written (make_gap_marker). The entries themselves are read
 * by a plain XRANGE, not by the script: a script's reply is converted to
 * Lua tables and back, which cost Redis more than the read itself
 * (bench/RESULTS.md). Lua numbers are doubles: exact for millisecond
 * times (< 2^53).
 *
 * Exact check when the cursor's entry is gone (flag 1 turned into 0). A
 * trim that ends exactly at the relay's last entry loses nothing, yet the
 * cursor's entry is gone. The relay knows the cursor's offset `off`
 * (relay_t.off): with E = entries-added when it was computed, entries
 * after the cursor then numbered E - off, and every entry added since
 * counts in entries-added. So if nothing after the cursor was removed,
 * the entries after it now number entries-added - off; and if the oldest
 * entry held is above the cursor, that number is the stream's length.
 * Length == entries-added - off means nothing after the cursor was
 * removed: no gap. It is trusted only for the same stream object (a
 * stream deleted and re-created counts entries-added from 0 again): the
 * first relay to read a stream marks it with a consumer group named
 * sse-relay-mark-<random> (no reader uses it; consumer groups live and die
 * with the stream and replicate with it), and `off` is used only with the
 * mark it was computed under, on the same connection. Never trusted, so
 * conservative as before: after a relay's start, a reconnect (failover),
 * a gap, reads sent ahead while catching up, FLUSHALL (the stream is
 * gone: what was added after the last read cannot be known), a cursor
 * whose own entry alone was deleted (older entries still held), and a
 * server that refuses the mark (a replica: read-only). */
static const char RELAY_SCRIPT[] =
    "local key, cur, off, tok, new = KEYS[1], ARGV[1], ARGV[2], ARGV[3],"
    " ARGV[4]\n"
    "local function cmp(x, y)\n"
    "  local xm, xs = string.match(x, '^(%d+)-(%d+)$')\n"
    "  local ym, ys = string.match(y, '^(%d+)-(%d+)$')\n"
    "  xm, xs, ym, ys = tonumber(xm), tonumber(xs), tonumber(ym), tonumber(ys)\n"
    "  if xm ~= ym then return xm < ym and -1 or 1 end\n"
    "  if xs ~= ys then return xs < ys and -1 or 1 end\n"
    "  return 0\n"
    "end\n"
    "local function token()\n"
    "  for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do\n"
    "    for i = 1, #g, 2 do\n"
    "      if g[i] == 'name' and string.sub(g[i + 1], 1, 15) =="
    " 'sse-relay-mark-' then return string.sub(g[i + 1], 16) end\n"
    "    end\n"
    "  end\n"
    "  local r = redis.pcall('XGROUP', 'CREATE', key, 'sse-relay-mark-' .."
    " new, '$')\n"
    "  if type(r) == 'table' and r.err then return '' end\n"
    "  return new\n"
    "end\n"
    "if redis.call('EXISTS', key) == 0 then\n"
    "  if cur == '' then return {0, '', 0, 0, '', 0} end\n"
    "  redis.call('XGROUP', 'CREATE', key, 'sse-relay-init', '$', 'MKSTREAM')\n"
    "  redis.call('XGROUP', 'DESTROY', key, 'sse-relay-init')\n"
    "  redis.call('XSETID', key, cur)\n"
    "  return {2, cur, 0, 0, token(), 0}\n"
    "end\n"
    "local info = redis.call('XINFO', 'STREAM', key)\n"
    "local f = {}\n"
    "for i = 1, #info, 2 do f[info[i]] = info[i + 1] end\n"
    "local last, added = f['last-generated-id'], f['entries-added'] or -1\n"
    "local tk = token()\n"
    "if cur == '' then\n"
    "  local flag = 0\n"
    "  if added > f['length'] then flag = 4 end\n"
    "  return {flag, last, added, f['length'], tk, 0}\n"
    "end\n"
    "local flag = 0\n"
    "if cmp(last, cur) < 0 then\n"
    "  redis.call('XSETID', key, cur)\n"
    "  return {3, cur, added, f['length'], tk, 0}\n"
    "end\n"
    "local have = #redis.call('XRANGE', key, cur, cur)\n"
    "if cmp(last, cur) > 0 and have == 0 then\n"
    "  flag = 1\n"
    "  local first = f['first-entry']\n"
    "  if off ~= '' and tok ~= '' and tok == tk and added >= 0\n"
    "     and (not first or cmp(first[1], cur) > 0)\n"
    "     and f['length'] == added - tonumber(off) then\n"
    "    flag = 0\n"
    "  end\n"
    "end\n"
    "return {flag, last, added, f['length'], tk, have}\n";

static const char *const flag_reason[] = {
    "none",
    "the cursor's entry is gone from the stream (trimmed past it, lost in "
    "a failover, or deleted)",
    "the stream was gone (FLUSHALL or an empty server promoted)",
    "the stream's last id was below the cursor (failover lost writes)",
    "the stream's older history was trimmed before this bus was filled"};

typedef struct {
    /* options */
    const char *bus_path, *url, *key, *status_path;
    const char *sentinels, *master; /* --sentinel, --master */
    /* tgt.addr: the server (--redis), or the master found last through
     * Sentinel (--sentinel), see ensure_connected */
    sse_redis_target_t tgt;
    long long master_checked_ms; /* Sentinel last asked (monotonic) */
    uint64_t master_changes;     /* connections to another master */
    unsigned batch;
    int block_ms, timeout_ms;

    /* bus */
    sse_bus_t *bus;
    int have_cur;
    uint64_t cur_ms;
    uint32_t cur_seq;
    char cur_txt[48];

    /* Redis */
    redisContext *c;
    int backoff_ms;
    time_t down_since, last_down_log;
    char last_id[48]; /* stream's last-generated-id at the last read */
    /* A read sent ahead (pipelined while catching up) whose reply is not
     * read yet, and the cursor it was sent with. */
    int inflight, inflight_have_cur;
    unsigned inflight_count;
    char inflight_cur[48];
    /* Lag in events: the cursor's offset in the stream's entries-added
     * numbering, known once a read reached the stream's end (then it is
     * entries-added) and carried forward by the entries read after;
     * unknown after a gap or a new connection until the next time. */
    int off_known;
    uint64_t off, lag_events, off_connects;
    char mark[40];  /* the stream's mark `off` is valid for ("": none) */
    char off_cur[48]; /* the cursor `off` is the offset of */
    uint64_t rng;   /* fresh marks (splitmix64) */

    /* gap marker to write before the next entry */
    int gap_pending;
    int gap_flag;

    /* counters (status file) */
    uint64_t relayed, skipped, gaps, reconnects, repairs, connects;
    time_t status_written;

    /* a batch */
    sse_bus_event_t *evs;
    char gap_id[48], gap_data[256];
} relay_t;

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logmsg(const char *fmt, ...)
{
    char ts[32];
    time_t now = time(NULL);
    struct tm tm;
    va_list ap;
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", gmtime_r(&now, &tm));
    fprintf(stderr, "%sZ sse-relay: ", ts);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ------------------------------------------------------------- status */

static void write_status(relay_t *R, int force)
{
    char tmp[4096 + 8];
    time_t now = time(NULL);
    FILE *f;
    uint64_t lms = 0, lag_ms = 0;
    uint32_t lseq;

    if (!force && now == R->status_written)
        return;
    R->status_written = now;
    if (R->last_id[0] && R->have_cur
        && sse_bus_parse_ordered_id(R->last_id, strlen(R->last_id), &lms,
                                    &lseq) == SSE_BUS_OK
        && lms > R->cur_ms)
        lag_ms = lms - R->cur_ms;
    snprintf(tmp, sizeof tmp, "%s.tmp", R->status_path);
    if (!(f = fopen(tmp, "w")))
        return;
    fprintf(f, "pid=%ld\nredis=%s:%d\nstream_key=%s\nconnected=%d\n"
            "cursor=%s\nredis_last_id=%s\nlag_ms=%" PRIu64 "\n"
            "events_relayed=%" PRIu64 "\nevents_skipped=%" PRIu64 "\n"
            "gaps=%" PRIu64 "\nreconnects=%" PRIu64 "\nid_repairs=%" PRIu64
            "\ndown_since=%ld\nupdated=%ld\n", (long)getpid(), R->tgt.addr.host,
            R->tgt.addr.port, R->key, R->c != NULL,
            R->have_cur ? R->cur_txt : "", R->last_id, lag_ms, R->relayed,
            R->skipped, R->gaps, R->reconnects, R->repairs,
            R->c ? 0L : (long)R->down_since, (long)now);
    /* lag_events: empty while unknown (see relay_t.off_known).
     * stale_after_ms: beyond it a reader calls this status stale (the
     * relay is probably dead). The loop rewrites the file at least once
     * per read, and a read, connect or back-off lasts at most the socket
     * timeout plus the longest back-off. */
    if (R->off_known)
        fprintf(f, "lag_events=%" PRIu64 "\n", R->lag_events);
    else
        fputs("lag_events=\n", f);
    fprintf(f, "stale_after_ms=%d\n",
            R->timeout_ms + RELAY_BACKOFF_MAX_MS + 2000);
    /* master: the server read from now ("" while disconnected);
     * master_changes: connections to a server other than the one before
     * (failovers followed, --sentinel). */
    if (R->c)
        fprintf(f, "master=%s:%d\n", R->tgt.addr.host, R->tgt.addr.port);
    else
        fputs("master=\n", f);
    fprintf(f, "master_changes=%" PRIu64 "\n", R->master_changes);
    if (fclose(f) == 0)
        rename(tmp, R->status_path);
    else
        unlink(tmp);
}

/* ---------------------------------------------------------------- bus */

static void load_cursor(relay_t *R)
{
    R->have_cur = sse_bus_last_ordered_id(R->bus, &R->cur_ms, &R->cur_seq);
    if (R->have_cur)
        snprintf(R->cur_txt, sizeof R->cur_txt, "%" PRIu64 "-%" PRIu32,
                 R->cur_ms, R->cur_seq);
    else
        R->cur_txt[0] = '\0';
    /* A new bus starts clean: whatever gap was pending concerned the old
     * one's clients; the new bus' own check happens on the next read. */
    R->gap_pending = 0;
}

/* Open (or reopen) the bus; waits for it to exist. 0, or -1 on stop. */
static int open_bus(relay_t *R)
{
    sse_bus_error_t err;
    int logged = 0;
    if (R->bus) {
        sse_bus_close(R->bus);
        R->bus = NULL;
    }
    while (!stop_flag) {
        memset(&err, 0, sizeof err);
        int rc = sse_bus_open(R->bus_path, SSE_BUS_RDWR, &R->bus, &err);
        if (rc == SSE_BUS_OK) {
            load_cursor(R);
            logmsg("bus %s open; cursor %s", R->bus_path,
                   R->have_cur ? R->cur_txt : "(none: filling from the "
                                              "oldest entry in Redis)");
            return 0;
        }
        if (!logged++)
            logmsg("%s; retrying every second", err.msg[0] ? err.msg
                   : sse_bus_strerror(rc));
        sleep_ms(1000);
    }
    return -1;
}

/* ------------------------------------------------------------- Redis */

/* Also backs off, so that a server that answers every read with an error
 * (LOADING, READONLY replica...) is not hammered by reconnects. */
static void drop_connection(relay_t *R, const char *why)
{
    if (R->c) {
        logmsg("lost Redis at %s:%d (%s); the bus keeps serving, "
               "reconnecting", R->tgt.addr.host, R->tgt.addr.port, why);
        redisFree(R->c);
        R->c = NULL;
        R->inflight = 0; /* a read sent ahead died with the connection */
        R->down_since = time(NULL);
    }
    if (!stop_flag)
        sleep_ms(R->backoff_ms);
    R->backoff_ms = R->backoff_ms * 2 > RELAY_BACKOFF_MAX_MS
                        ? RELAY_BACKOFF_MAX_MS : R->backoff_ms * 2;
}

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Connect when not connected: to the URL, or (--sentinel) to the master
 * the sentinels name, checked with ROLE (sse_redis_target_connect). While
 * connected through Sentinel, ask a sentinel about once a second whether
 * the master moved: after a graceful failover the old master stays up and
 * answering (Sentinel demotes it only later), so without asking the relay
 * would keep reading a stream nobody writes to any more. */
static int ensure_connected(relay_t *R)
{
    char err[1024], was[300];
    if (R->c && R->tgt.master_name[0]
        && mono_ms() - R->master_checked_ms >= RELAY_MASTER_CHECK_MS) {
        R->master_checked_ms = mono_ms();
        if (sse_redis_target_moved(&R->tgt, RELAY_SENTINEL_TIMEOUT_MS) == 1) {
            R->backoff_ms = RELAY_BACKOFF_MIN_MS;
            drop_connection(R, "the sentinels name another master now");
        }
    }
    if (R->c)
        return 0;
    snprintf(was, sizeof was, "%s:%d", R->tgt.addr.host, R->tgt.addr.port);
    R->c = sse_redis_target_connect(&R->tgt, R->timeout_ms, err, sizeof err);
    if (!R->c) {
        time_t now = time(NULL);
        if (!R->down_since)
            R->down_since = now;
        if (now - R->last_down_log >= 30) {
            logmsg("%s; retrying", err);
            R->last_down_log = now;
        }
        sleep_ms(R->backoff_ms);
        R->backoff_ms = R->backoff_ms * 2 > RELAY_BACKOFF_MAX_MS
                            ? RELAY_BACKOFF_MAX_MS : R->backoff_ms * 2;
        return -1;
    }
    if (R->connects++) {
        char now_at[300];
        R->reconnects++;
        snprintf(now_at, sizeof now_at, "%s:%d", R->tgt.addr.host,
                 R->tgt.addr.port);
        if (strcmp(was, now_at) != 0)
            R->master_changes++;
    }
    R->master_checked_ms = mono_ms();
    R->last_down_log = 0;
    if (R->tgt.master_name[0])
        logmsg("connected to Redis at %s:%d (master '%s' per the sentinels), "
               "stream '%s'", R->tgt.addr.host, R->tgt.addr.port,
               R->tgt.master_name, R->key);
    else
        logmsg("connected to Redis at %s:%d, stream '%s'", R->tgt.addr.host,
               R->tgt.addr.port, R->key);
    write_status(R, 1);
    return 0;
}

/* ---------------------------------------------------------- relaying */

static const redisReply *field(const redisReply *kv, const char *name)
{
    for (size_t i = 0; i + 1 < kv->elements; i += 2)
        if (kv->element[i]->type == REDIS_REPLY_STRING
            && kv->element[i]->len == strlen(name)
            && memcmp(kv->element[i]->str, name, kv->element[i]->len) == 0)
            return kv->element[i + 1];
    return NULL;
}

/* Fill the gap marker event placed before the entry with id (ms, seq). 1 if
 * there is a gap to mark (the predecessor is above the cursor). */
static int make_gap_marker(relay_t *R, uint64_t ms, uint32_t seq,
                           const char *next_txt, sse_bus_event_t *ev)
{
    uint64_t pms = seq ? ms : ms - 1;
    uint32_t pseq = seq ? seq - 1 : UINT32_MAX;
    if (R->have_cur && (pms < R->cur_ms
                        || (pms == R->cur_ms && pseq <= R->cur_seq)))
        return 0; /* the entry directly follows the cursor: nothing lost */
    snprintf(R->gap_id, sizeof R->gap_id, "%" PRIu64 "-%" PRIu32, pms, pseq);
    snprintf(R->gap_data, sizeof R->gap_data,
             "{\"reason\":\"gap\",\"after\":\"%s\",\"before\":\"%s\"}",
             R->have_cur ? R->cur_txt : "", next_txt);
    memset(ev, 0, sizeof *ev);
    ev->channel = RELAY_GAP_CHANNEL;
    ev->channel_len = strlen(RELAY_GAP_CHANNEL);
    ev->event = RELAY_RESET_EVENT;
    ev->event_len = strlen(RELAY_RESET_EVENT);
    ev->id = R->gap_id;
    ev->id_len = strlen(R->gap_id);
    ev->data = R->gap_data;
    ev->data_len = strlen(R->gap_data);
    ev->flags = SSE_BUS_EVF_BROADCAST;
    return 1;
}

/* Append the entries of one read. Returns how many entries were read
 * (relayed or skipped), or -1 if the bus must be reopened. */
static long append_entries(relay_t *R, const redisReply *entries)
{
    size_t n = 0, i;
    uint64_t ms = 0, last_ms = R->cur_ms;
    uint32_t seq = 0, last_seq = R->cur_seq;
    char last_txt[48];
    const redisReply *last_id = NULL;
    int have_last = R->have_cur, gap_written = 0;
    sse_bus_error_t err;

    strcpy(last_txt, R->cur_txt);
    for (i = 0; i < entries->elements; i++) {
        const redisReply *e = entries->element[i], *id, *kv, *ch, *et, *d;
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 2
            || (id = e->element[0])->type != REDIS_REPLY_STRING
            || (kv = e->element[1])->type != REDIS_REPLY_ARRAY)
            continue;
        if (sse_bus_parse_ordered_id(id->str, id->len, &ms, &seq)
            != SSE_BUS_OK) {
            /* Only explicit XADD ids with SEQ >= 2^32 get here. */
            logmsg("entry %s: id is not MS-SEQ with SEQ < 2^32; skipped",
                   id->str);
            R->skipped++;
            continue;
        }
        if (have_last && (ms < last_ms || (ms == last_ms && seq <= last_seq)))
            continue; /* already in the bus */
        if (R->gap_pending) {
            /* Before the first entry after the cursor, or not at all (it
             * directly follows the cursor: nothing was lost). */
            if (make_gap_marker(R, ms, seq, id->str, &R->evs[n]))
                n++, gap_written = 1;
            R->gap_pending = 0;
        }
        ch = field(kv, SSE_REDIS_F_CHANNEL);
        et = field(kv, SSE_REDIS_F_EVENT);
        d = field(kv, SSE_REDIS_F_DATA);
        sse_bus_event_t *ev = &R->evs[n];
        memset(ev, 0, sizeof *ev);
        ev->channel = ch && ch->type == REDIS_REPLY_STRING ? ch->str : "";
        ev->channel_len = ch && ch->type == REDIS_REPLY_STRING ? ch->len : 0;
        if (et && et->type == REDIS_REPLY_STRING) {
            ev->event = et->str;
            ev->event_len = et->len;
        }
        if (d && d->type == REDIS_REPLY_STRING) {
            ev->data = d->str;
            ev->data_len = d->len;
        }
        ev->id = id->str;
        ev->id_len = id->len;
        memset(&err, 0, sizeof err);
        int rc = sse_bus_event_check(R->bus, ev, &err);
        if (rc == SSE_BUS_OK)
            n++;
        else {
            logmsg("entry %s cannot go into the bus (%s); skipped: publish "
                   "with sse-pub --redis, which checks events first",
                   id->str, err.msg[0] ? err.msg : sse_bus_strerror(rc));
            R->skipped++;
        }
        last_ms = ms;
        last_seq = seq;
        have_last = 1;
        last_id = id;
    }
    if (last_id) /* copied once per batch, not per entry */
        snprintf(last_txt, sizeof last_txt, "%.*s", (int)last_id->len,
                 last_id->str);
    if (n) {
        size_t bad = 0;
        memset(&err, 0, sizeof err);
        int rc = sse_bus_publish_batch(R->bus, R->evs, n, NULL, &bad, &err);
        if (rc != SSE_BUS_OK) {
            logmsg("publishing to bus %s failed: %s; reopening it",
                   R->bus_path, err.msg[0] ? err.msg : sse_bus_strerror(rc));
            return -1;
        }
        R->relayed += n - (size_t)gap_written;
    }
    if (gap_written) {
        R->gaps++;
        logmsg("gap marker %s written (%s)", R->gap_id, R->gap_data);
        write_status(R, 1);
    }
    R->have_cur = have_last;
    R->cur_ms = last_ms;
    R->cur_seq = last_seq;
    strcpy(R->cur_txt, last_txt);
    return (long)i;
}

/* Queue one gap-checked read from the current cursor (see RELAY_SCRIPT)
 * and push it to the socket: MULTI, EVAL, XRANGE, EXEC. 0, or -1 on a
 * connection problem (the caller drops the connection). */
static int send_read(relay_t *R, const char *cur, int have_cur,
                     unsigned n, int with_off)
{
    char count[16], start[52], off[24] = "", fresh[24];
    const char *ev[8] = {"EVAL", RELAY_SCRIPT, "1", R->key, cur, off,
                         R->mark, fresh};
    const char *xr[6] = {"XRANGE", R->key, start, "+", "COUNT", count};
    const char *multi = "MULTI", *exec = "EXEC";
    size_t evl[8], xrl[6], ml = 5, el = 4;
    int done = 0;
    uint64_t z;

    /* The offset only goes with a read from the cursor it belongs to (not
     * with reads sent ahead), and only with a mark. */
    if (with_off && have_cur && R->off_known && R->mark[0]
        && R->off_connects == R->connects && strcmp(R->off_cur, cur) == 0)
        snprintf(off, sizeof off, "%" PRIu64, R->off);
    z = (R->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    snprintf(fresh, sizeof fresh, "%016" PRIx64, z ^ (z >> 31));

    snprintf(count, sizeof count, "%u", n);
    /* "(" = exclusive: the entries after the cursor ("-": all of them). */
    snprintf(start, sizeof start, have_cur ? "(%s" : "-", cur);
    for (int i = 0; i < 8; i++)
        evl[i] = strlen(ev[i]);
    for (int i = 0; i < 6; i++)
        xrl[i] = strlen(xr[i]);
    if (redisAppendCommandArgv(R->c, 1, &multi, &ml) != REDIS_OK
        || redisAppendCommandArgv(R->c, 8, ev, evl) != REDIS_OK
        || redisAppendCommandArgv(R->c, 6, xr, xrl) != REDIS_OK
        || redisAppendCommandArgv(R->c, 1, &exec, &el) != REDIS_OK)
        return -1;
    while (!done)
        if (redisBufferWrite(R->c, &done) != REDIS_OK)
            return -1;
    R->inflight = 1;
    R->inflight_count = n;
    R->inflight_have_cur = have_cur;
    snprintf(R->inflight_cur, sizeof R->inflight_cur, "%s", cur);
    return 0;
}

/* The EXEC reply of the read in flight (NULL on a connection problem:
 * R->c->errstr says why). MULTI's +OK and the two +QUEUED are read and
 * dropped here; an error in one of them comes back as EXEC's -EXECABORT. */
static redisReply *recv_read(relay_t *R)
{
    void *rep = NULL;
    R->inflight = 0;
    for (int i = 0; i < 4; i++) {
        if (rep)
            freeReplyObject(rep);
        rep = NULL;
        if (redisGetReply(R->c, &rep) != REDIS_OK)
            return NULL;
    }
    return rep;
}

/* The id the cursor will have once entries are appended: the greatest
 * parseable id above the cursor, i.e. the last one (the stream is
 * ordered). Into buf; 0 if there is none. */
static int next_cursor(const relay_t *R, const redisReply *entries,
                       char *buf, size_t len)
{
    for (size_t i = entries->elements; i-- > 0;) {
        const redisReply *e = entries->element[i], *id;
        uint64_t ms;
        uint32_t seq;
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 2
            || (id = e->element[0])->type != REDIS_REPLY_STRING
            || id->len >= len
            || sse_bus_parse_ordered_id(id->str, id->len, &ms, &seq)
                   != SSE_BUS_OK)
            continue;
        if (R->have_cur && (ms < R->cur_ms
                            || (ms == R->cur_ms && seq <= R->cur_seq)))
            return 0;
        memcpy(buf, id->str, id->len);
        buf[id->len] = '\0';
        return 1;
    }
    return 0;
}

/* The cursor's offset (relay_t.off) after appending a read of k entries
 * (n asked) whose check returned chk (flag, entries-added E, length L,
 * mark, cursor's entry held), and the lag in events it gives. */
static void update_lag(relay_t *R, const redisReply *chk, size_t k,
                       unsigned n, long long flag)
{
    long long added = chk->element[2]->integer;
    long long len = chk->element[3]->type == REDIS_REPLY_INTEGER
                        ? chk->element[3]->integer : -1;
    const redisReply *mark = chk->element[4];
    int carried, sound;

    if (R->off_connects != R->connects      /* another server, maybe */
        || mark->len >= sizeof R->mark      /* or another stream */
        || strcmp(R->mark, mark->str) != 0) {
        R->off_known = 0;
        R->off_connects = R->connects;
        snprintf(R->mark, sizeof R->mark, "%s",
                 mark->len < sizeof R->mark ? mark->str : "");
    }
    /* An offset may start from this read only if nothing that followed
     * the cursor can have been lost unseen before it: the cursor's entry
     * is held (trimming removes a prefix, so all after it is too), or this
     * read flagged a gap (its marker covers what came before), or the bus
     * is being filled from empty. Not after a reconnect whose stream lacks
     * the cursor's entry without a flag (its last id at the cursor). */
    carried = R->off_known && strcmp(R->off_cur, R->cur_txt) == 0;
    sound = carried || chk->element[5]->integer == 1 || flag != 0
            || !R->have_cur;
    if (added < 0 || !sound) {       /* Redis < 7: no entries-added */
        R->off_known = 0;
    }
    else if (k < n) {                /* the read reached the end */
        R->off = (uint64_t)added;
        R->off_known = 1;
    }
    else if (!R->have_cur && len >= (long long)k) { /* first fill */
        R->off = (uint64_t)added - (uint64_t)(len - (long long)k);
        R->off_known = 1;
    }
    else if (carried) {
        R->off += k;
    }
    else {
        R->off_known = 0;
    }
    if (R->off_known)
        R->lag_events = (uint64_t)added > R->off ? (uint64_t)added - R->off
                                                 : 0;
}

/* One gap-checked read: the one sent ahead if it was sent from the
 * current cursor, else a new one. While a batch comes back full, the read
 * of the next batch is sent before this one is appended. Returns entries
 * read, 0 if none, -1 on a connection problem, -2 if the bus must be
 * reopened. */
static long read_once(relay_t *R)
{
    redisReply *rep, *chk, *entries;
    char next[48];
    unsigned n, ahead;
    long got;

    if (R->inflight && (R->inflight_have_cur != R->have_cur
                        || strcmp(R->inflight_cur, R->cur_txt) != 0)) {
        /* Sent from a cursor that is no longer ours (the bus was
         * reopened): drop its answer. */
        rep = recv_read(R);
        if (!rep) {
            drop_connection(R, R->c->errstr);
            return -1;
        }
        freeReplyObject(rep);
    }
    if (!R->inflight
        && send_read(R, R->cur_txt, R->have_cur, R->batch, 1) < 0) {
        R->inflight = 0;
        drop_connection(R, R->c->errstr);
        return -1;
    }
    n = R->inflight_count;
    rep = recv_read(R);
    if (!rep) {
        drop_connection(R, R->c->errstr);
        return -1;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        /* LOADING, READONLY (a replica), MASTERDOWN...: try again later
         * on a fresh connection. */
        logmsg("Redis answered the read with an error: %s", rep->str);
        freeReplyObject(rep);
        drop_connection(R, "error reply");
        return -1;
    }
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2
        || (chk = rep->element[0])->type != REDIS_REPLY_ARRAY
        || chk->elements != 6
        || chk->element[0]->type != REDIS_REPLY_INTEGER
        || chk->element[2]->type != REDIS_REPLY_INTEGER
        || chk->element[4]->type != REDIS_REPLY_STRING
        || chk->element[5]->type != REDIS_REPLY_INTEGER
        || (entries = rep->element[1])->type != REDIS_REPLY_ARRAY) {
        /* EXEC answers each queued command: an error of the script
         * (READONLY on a replica, say) comes back in its place. */
        const redisReply *bad = NULL;
        for (size_t i = 0; rep->type == REDIS_REPLY_ARRAY
                           && i < rep->elements; i++)
            if (rep->element[i]->type == REDIS_REPLY_ERROR)
                bad = rep->element[i];
        if (bad)
            logmsg("Redis answered the read with an error: %s", bad->str);
        else
            logmsg("unexpected answer to the read; reconnecting");
        freeReplyObject(rep);
        drop_connection(R, bad ? "error reply" : "protocol");
        return -1;
    }
    R->backoff_ms = RELAY_BACKOFF_MIN_MS; /* a good read: Redis is back */
    if (chk->element[1]->type == REDIS_REPLY_STRING)
        snprintf(R->last_id, sizeof R->last_id, "%s", chk->element[1]->str);
    long long flag = chk->element[0]->integer;
    if (flag > 0 && flag <= 4) {
        if (!R->gap_pending)
            logmsg("possible gap at cursor %s: %s; a gap marker (event "
                   RELAY_RESET_EVENT ") goes before the next entry unless "
                   "it directly follows the cursor",
                   R->have_cur ? R->cur_txt : "(none)", flag_reason[flag]);
        R->gap_pending = 1;
        R->gap_flag = (int)flag;
        R->off_known = 0;
        if (flag == 2 || flag == 3) {
            R->repairs++;
            logmsg("stream '%s' last id raised to %s so that new ids stay "
                   "above those already delivered", R->key, R->cur_txt);
        }
        write_status(R, 1);
    }
    /* Catching up (a full batch): ask for the next one now, larger, and
     * append this one while Redis reads it. */
    ahead = R->batch * RELAY_CATCH_UP_FACTOR;
    if (ahead > RELAY_BATCH_MAX)
        ahead = RELAY_BATCH_MAX;
    if (entries->elements >= n
        && next_cursor(R, entries, next, sizeof next)
        && send_read(R, next, 1, ahead, 0) < 0) {
        R->inflight = 0;
        freeReplyObject(rep);
        drop_connection(R, R->c->errstr);
        return -1;
    }
    update_lag(R, chk, entries->elements, n, flag);
    got = append_entries(R, entries);
    if (got >= 0) /* the cursor the offset now belongs to */
        snprintf(R->off_cur, sizeof R->off_cur, "%s", R->cur_txt);
    else
        R->off_known = 0;
    freeReplyObject(rep);
    return got < 0 ? -2 : got;
}

/* Wait for entries past the cursor (XREAD BLOCK, a wake-up only).
 * 0 on entries or timeout, -1 on a connection problem. */
static int wait_entries(relay_t *R)
{
    char block[16];
    const char *argv[8];
    size_t lens[8];
    redisReply *rep;

    snprintf(block, sizeof block, "%d", R->block_ms);
    argv[0] = "XREAD"; argv[1] = "BLOCK"; argv[2] = block;
    argv[3] = "COUNT"; argv[4] = "1"; argv[5] = "STREAMS";
    argv[6] = R->key;
    argv[7] = R->have_cur ? R->cur_txt : "0-0";
    for (int i = 0; i < 8; i++)
        lens[i] = strlen(argv[i]);
    rep = redisCommandArgv(R->c, 8, argv, lens);
    if (!rep) {
        drop_connection(R, R->c->errstr);
        return -1;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        logmsg("Redis answered XREAD with an error: %s", rep->str);
        freeReplyObject(rep);
        drop_connection(R, "error reply");
        return -1;
    }
    freeReplyObject(rep);
    return 0;
}

static int run(relay_t *R)
{
    if (open_bus(R) < 0)
        return 0;
    while (!stop_flag) {
        if (sse_bus_is_stale(R->bus)) {
            logmsg("bus %s was replaced; reopening it and refilling from "
                   "Redis", R->bus_path);
            if (open_bus(R) < 0)
                break;
        }
        write_status(R, 0);
        if (ensure_connected(R) < 0)
            continue;
        long got = read_once(R);
        if (got == -2) {
            sleep_ms(200);
            if (open_bus(R) < 0)
                break;
            continue;
        }
        if (got == 0 && R->c)
            wait_entries(R);
    }
    write_status(R, 1);
    return 0;
}

static const char relay_help[] =
    "usage: sse-relay BUS --redis URL [--stream-key K] [--batch N]\n"
    "                 [--block-ms MS] [--timeout-ms MS] [--status FILE]\n"
    "       sse-relay BUS --sentinel HOST:PORT[,...] --master NAME ...\n"
    "Copy the Redis stream K (default 'sse', written by `sse-pub publish|\n"
    "stream --redis`) into the bus BUS, with the Redis ids as event ids.\n"
    "Resumes from the newest id in BUS; writes an 'sse-reset' gap marker\n"
    "when Redis no longer holds what follows it. One relay per bus.\n"
    "  --batch N       entries per read (default 1000)\n"
    "  --block-ms MS   XREAD BLOCK time (default 1000)\n"
    "  --timeout-ms MS socket timeout (default block + 3000)\n"
    "  --status FILE   state for monitoring (default BUS.relay-status)\n"
    "  --sentinel HOST:PORT[,...] --master NAME  instead of --redis: read\n"
    "                  from the master the sentinels name (checked with\n"
    "                  ROLE), found again after every lost connection and\n"
    "                  when a sentinel names another one (checked each s)\n"
    "Stops on SIGTERM/SIGINT.\n";

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"redis", required_argument, 0, 'r'},
        {"sentinel", required_argument, 0, 'S'},
        {"master", required_argument, 0, 'm'},
        {"stream-key", required_argument, 0, 'k'},
        {"batch", required_argument, 0, 'b'},
        {"block-ms", required_argument, 0, 'B'},
        {"timeout-ms", required_argument, 0, 't'},
        {"status", required_argument, 0, 's'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    static relay_t R;
    char err[512], lockpath[4096];
    struct sigaction sa;
    int c, lockfd;

    R.key = SSE_REDIS_KEY_DEFAULT;
    R.batch = RELAY_BATCH_DEFAULT;
    R.block_ms = RELAY_BLOCK_MS_DEFAULT;
    R.timeout_ms = -1;
    R.backoff_ms = RELAY_BACKOFF_MIN_MS;
    if (getrandom(&R.rng, sizeof R.rng, 0) != (ssize_t)sizeof R.rng)
        R.rng = (uint64_t)time(NULL) * 1000003u ^ (uint64_t)getpid();
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'r': R.url = optarg; break;
        case 'S': R.sentinels = optarg; break;
        case 'm': R.master = optarg; break;
        case 'k': R.key = optarg; break;
        case 'b': R.batch = (unsigned)atoi(optarg); break;
        case 'B': R.block_ms = atoi(optarg); break;
        case 't': R.timeout_ms = atoi(optarg); break;
        case 's': R.status_path = optarg; break;
        case 'h': fputs(relay_help, stdout); return 0;
        default:
            fprintf(stderr, "sse-relay: bad option: see `sse-relay --help`\n");
            return 2;
        }
    }
    if (optind != argc - 1 || !(R.url || R.sentinels || R.master)) {
        fprintf(stderr, "sse-relay: BUS and --redis URL (or --sentinel "
                "HOST:PORT[,...] --master NAME) are required: see "
                "`sse-relay --help`\n");
        return 2;
    }
    if (R.batch < 1 || R.batch > RELAY_BATCH_MAX || R.block_ms < 1
        || strlen(R.key) == 0 || strlen(R.key) > 200) {
        fprintf(stderr, "sse-relay: --batch must be 1..%d, --block-ms > 0, "
                "--stream-key 1..200 bytes\n", RELAY_BATCH_MAX);
        return 2;
    }
    if (R.timeout_ms < 0)
        R.timeout_ms = R.block_ms + 3000;
    if (R.timeout_ms <= R.block_ms) {
        fprintf(stderr, "sse-relay: --timeout-ms must be larger than "
                "--block-ms (a blocked read would time out)\n");
        return 2;
    }
    if (sse_redis_target_parse(&R.tgt, R.url, R.sentinels, R.master, err,
                               sizeof err) < 0) {
        fprintf(stderr, "sse-relay: %s\n", err);
        return 2;
    }
    R.bus_path = argv[optind];
    static char status_default[4096];
    if (!R.status_path) {
        snprintf(status_default, sizeof status_default, "%s.relay-status",
                 R.bus_path);
        R.status_path = status_default;
    }
    /* Two relays on one bus would race on "greater than the cursor". */
    snprintf(lockpath, sizeof lockpath, "%s.relay-lock", R.bus_path);
    lockfd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (lockfd < 0 || flock(lockfd, LOCK_EX | LOCK_NB) < 0) {
        fprintf(stderr, "sse-relay: %s: %s: %s\n", lockpath, strerror(errno),
                errno == EWOULDBLOCK ? "another sse-relay serves this bus; "
                "run one relay per bus" : "check the directory's permissions");
        return 1;
    }
    R.evs = calloc(RELAY_BATCH_MAX + 1, sizeof *R.evs);
    if (!R.evs) {
        fprintf(stderr, "sse-relay: out of memory\n");
        return 1;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: a blocked read returns */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    run(&R);
    logmsg("stopping: %" PRIu64 " events relayed, %" PRIu64 " gaps, %"
           PRIu64 " reconnects", R.relayed, R.gaps, R.reconnects);
    if (R.c)
        redisFree(R.c);
    sse_redis_target_close(&R.tgt);
    if (R.bus)
        sse_bus_close(R.bus);
    free(R.evs);
    return 0;
}

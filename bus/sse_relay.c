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
 *   - loss is never silent. Every read is a Lua script that, atomically
 *     with the XRANGE, checks that Redis still holds what follows the
 *     cursor (see RELAY_SCRIPT). If it does not (trimmed past a stalled
 *     relay, FLUSHALL, a failover that lost writes, a history already
 *     trimmed when an empty bus is filled), the relay writes a gap marker
 *     before the next entry: a broadcast event (every stream gets it),
 *     type "sse-reset", whose id is the predecessor of that entry's id, so
 *     a client that resumes from before the gap reads it and one that
 *     resumes after it does not. If the stream's last id went below the
 *     cursor, the same script raises it (XSETID, compare-and-set) so new
 *     ids are never below ids already delivered;
 *   - Redis going away never stops the bus from serving: the relay
 *     reconnects with backoff (50 ms doubling to 2 s) and catches up. Its
 *     blocking reads have a timeout longer than XREAD BLOCK and the socket
 *     has TCP keepalive, so a silently dead connection is noticed.
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
#include <time.h>
#include <unistd.h>

#include "sse_bus.h"
#include "sse_redis.h"

#define RELAY_BATCH_DEFAULT 1000
#define RELAY_BATCH_MAX 10000
#define RELAY_BLOCK_MS_DEFAULT 1000
#define RELAY_BACKOFF_MIN_MS 50
#define RELAY_BACKOFF_MAX_MS 2000
#define RELAY_GAP_CHANNEL "sse.relay"
#define RELAY_RESET_EVENT "sse-reset"

/* KEYS[1] stream; ARGV[1] cursor ("" = the bus holds no ordered id yet);
 * ARGV[2] COUNT. Returns {flag, entries, last-generated-id}, flag:
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
 * everything after it. The converse is conservative: a cursor trimmed
 * while its successor survived also reads as a gap, but then the marker
 * (the successor's predecessor) is not above the cursor and none is
 * written (make_gap_marker). Lua numbers are doubles: exact for millisecond times (< 2^53). */
static const char RELAY_SCRIPT[] =
    "local key, cur, n = KEYS[1], ARGV[1], tonumber(ARGV[2])\n"
    "local function cmp(x, y)\n"
    "  local xm, xs = string.match(x, '^(%d+)-(%d+)$')\n"
    "  local ym, ys = string.match(y, '^(%d+)-(%d+)$')\n"
    "  xm, xs, ym, ys = tonumber(xm), tonumber(xs), tonumber(ym), tonumber(ys)\n"
    "  if xm ~= ym then return xm < ym and -1 or 1 end\n"
    "  if xs ~= ys then return xs < ys and -1 or 1 end\n"
    "  return 0\n"
    "end\n"
    "if redis.call('EXISTS', key) == 0 then\n"
    "  if cur == '' then return {0, {}, ''} end\n"
    "  redis.call('XGROUP', 'CREATE', key, 'sse-relay-init', '$', 'MKSTREAM')\n"
    "  redis.call('XGROUP', 'DESTROY', key, 'sse-relay-init')\n"
    "  redis.call('XSETID', key, cur)\n"
    "  return {2, {}, cur}\n"
    "end\n"
    "local info = redis.call('XINFO', 'STREAM', key)\n"
    "local f = {}\n"
    "for i = 1, #info, 2 do f[info[i]] = info[i + 1] end\n"
    "local last = f['last-generated-id']\n"
    "if cur == '' then\n"
    "  local flag = 0\n"
    "  if f['entries-added'] and f['entries-added'] > f['length'] then\n"
    "    flag = 4\n"
    "  end\n"
    "  return {flag, redis.call('XRANGE', key, '-', '+', 'COUNT', n), last}\n"
    "end\n"
    "local flag = 0\n"
    "if cmp(last, cur) < 0 then\n"
    "  redis.call('XSETID', key, cur)\n"
    "  return {3, {}, cur}\n"
    "end\n"
    "if cmp(last, cur) > 0 and #redis.call('XRANGE', key, cur, cur) == 0 then\n"
    "  flag = 1\n"
    "end\n"
    "return {flag, redis.call('XRANGE', key, '(' .. cur, '+', 'COUNT', n),"
    " last}\n";

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
    sse_redis_addr_t addr;
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
            "\ndown_since=%ld\nupdated=%ld\n", (long)getpid(), R->addr.host,
            R->addr.port, R->key, R->c != NULL,
            R->have_cur ? R->cur_txt : "", R->last_id, lag_ms, R->relayed,
            R->skipped, R->gaps, R->reconnects, R->repairs,
            R->c ? 0L : (long)R->down_since, (long)now);
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
               "reconnecting", R->addr.host, R->addr.port, why);
        redisFree(R->c);
        R->c = NULL;
        R->down_since = time(NULL);
    }
    if (!stop_flag)
        sleep_ms(R->backoff_ms);
    R->backoff_ms = R->backoff_ms * 2 > RELAY_BACKOFF_MAX_MS
                        ? RELAY_BACKOFF_MAX_MS : R->backoff_ms * 2;
}

static int ensure_connected(relay_t *R)
{
    char err[512];
    if (R->c)
        return 0;
    R->c = sse_redis_connect(&R->addr, R->timeout_ms, err, sizeof err);
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
    if (R->connects++)
        R->reconnects++;
    R->last_down_log = 0;
    logmsg("connected to Redis at %s:%d, stream '%s'", R->addr.host,
           R->addr.port, R->key);
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
        snprintf(last_txt, sizeof last_txt, "%.*s", (int)id->len, id->str);
    }
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

/* One gap-checked read (RELAY_SCRIPT). Returns entries read, 0 if none,
 * -1 on a connection problem, -2 if the bus must be reopened. */
static long read_once(relay_t *R)
{
    char count[16];
    const char *argv[6];
    size_t lens[6];
    redisReply *rep;
    long got;

    snprintf(count, sizeof count, "%u", R->batch);
    argv[0] = "EVAL"; argv[1] = RELAY_SCRIPT; argv[2] = "1";
    argv[3] = R->key; argv[4] = R->cur_txt; argv[5] = count;
    for (int i = 0; i < 6; i++)
        lens[i] = strlen(argv[i]);
    rep = redisCommandArgv(R->c, 6, argv, lens);
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
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 3
        || rep->element[0]->type != REDIS_REPLY_INTEGER
        || rep->element[1]->type != REDIS_REPLY_ARRAY) {
        logmsg("unexpected answer to the read script; reconnecting");
        freeReplyObject(rep);
        drop_connection(R, "protocol");
        return -1;
    }
    R->backoff_ms = RELAY_BACKOFF_MIN_MS; /* a good read: Redis is back */
    if (rep->element[2]->type == REDIS_REPLY_STRING)
        snprintf(R->last_id, sizeof R->last_id, "%s", rep->element[2]->str);
    long long flag = rep->element[0]->integer;
    if (flag > 0 && flag <= 4) {
        if (!R->gap_pending)
            logmsg("possible gap at cursor %s: %s; a gap marker (event "
                   RELAY_RESET_EVENT ") goes before the next entry unless "
                   "it directly follows the cursor",
                   R->have_cur ? R->cur_txt : "(none)", flag_reason[flag]);
        R->gap_pending = 1;
        R->gap_flag = (int)flag;
        if (flag == 2 || flag == 3) {
            R->repairs++;
            logmsg("stream '%s' last id raised to %s so that new ids stay "
                   "above those already delivered", R->key, R->cur_txt);
        }
        write_status(R, 1);
    }
    got = append_entries(R, rep->element[1]);
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
    "Copy the Redis stream K (default 'sse', written by `sse-pub publish|\n"
    "stream --redis`) into the bus BUS, with the Redis ids as event ids.\n"
    "Resumes from the newest id in BUS; writes an 'sse-reset' gap marker\n"
    "when Redis no longer holds what follows it. One relay per bus.\n"
    "  --batch N       entries per read (default 1000)\n"
    "  --block-ms MS   XREAD BLOCK time (default 1000)\n"
    "  --timeout-ms MS socket timeout (default block + 3000)\n"
    "  --status FILE   state for monitoring (default BUS.relay-status)\n"
    "Stops on SIGTERM/SIGINT.\n";

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"redis", required_argument, 0, 'r'},
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
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'r': R.url = optarg; break;
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
    if (optind != argc - 1 || !R.url) {
        fprintf(stderr, "sse-relay: BUS and --redis URL are required: see "
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
    if (sse_redis_parse_url(R.url, &R.addr, err, sizeof err) < 0) {
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
    if (R.bus)
        sse_bus_close(R.bus);
    free(R.evs);
    return 0;
}

/*
 * sse_pub_redis.c - sse-pub's Redis target (see sse_pub_redis.h).
 *
 * Each event is one XADD <key> MAXLEN ~ <n> * c <channel> [e <type>]
 * d <data> (or MINID ~ <now - max age> instead of MAXLEN), sent with the binary-safe argv interface (data may hold any
 * byte; the relay splits it into data: lines like the bus does). A batch
 * is pipelined: all commands are appended, then all replies read, so a
 * stream of small events costs one round trip per batch, not per event.
 * Events are checked against the bus's default limits before they are
 * sent, so what Redis stores a default bus can carry.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sse_pub_redis.h"

#ifdef SSE_HAVE_HIREDIS

#include "sse_redis.h"

struct sse_pub_redis {
    redisContext *c;
    sse_redis_target_t tgt;
    char key[256];
    char maxlen[24];
    uint64_t max_age_ms; /* > 0: trim by age (MINID), not by length */
    int wait_replicas;   /* > 0: WAIT for that many replicas per batch */
    char minid[24];      /* MINID for the batch being sent */
};

#define PUB_TIMEOUT_MS 10000
/* Through Sentinel: how long to keep looking for a master (a failover
 * takes down-after-milliseconds plus an election, seconds) and the pause
 * between attempts, doubling. */
#define PUB_FAILOVER_WAIT_MS 10000
#define PUB_BACKOFF_MIN_MS 50
#define PUB_BACKOFF_MAX_MS 1000
/* --wait-replicas: how long one WAIT may take, and how long to keep
 * waiting for confirmation (ms): after a failover the new master has no
 * replica until Sentinel turns the old master into one (about 10 s: its
 * INFO period), so acknowledging waits that long. */
#define PUB_WAIT_TIMEOUT_MS 1000
#define PUB_WAIT_DEADLINE_MS 30000
#define PUB_ID_MAX 48 /* "<u64>-<u64>" and a NUL */

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* (Re)connect; through Sentinel keep trying until deadline (ms, monotonic).
 * 0, or 1 after printing why. */
static int pub_connect(sse_pub_redis_t *r, long long deadline)
{
    char err[1024];
    int backoff = PUB_BACKOFF_MIN_MS;
    if (r->c) {
        redisFree(r->c);
        r->c = NULL;
    }
    for (;;) {
        r->c = sse_redis_target_connect(&r->tgt, PUB_TIMEOUT_MS, err,
                                        sizeof err);
        if (r->c)
            return 0;
        if (!r->tgt.master_name[0] || now_ms() + backoff > deadline)
            break;
        struct timespec ts = {0, (long)backoff * 1000000L};
        nanosleep(&ts, NULL);
        backoff = backoff * 2 > PUB_BACKOFF_MAX_MS ? PUB_BACKOFF_MAX_MS
                                                   : backoff * 2;
    }
    fprintf(stderr, "sse-pub: %s%s\n", err, r->tgt.master_name[0]
            ? " (kept trying for 10 s)" : "");
    return 1;
}

int sse_pub_redis_open(const char *url, const char *sentinels,
                       const char *master, const char *key, uint64_t maxlen,
                       uint64_t max_age_ms, int wait_replicas,
                       sse_pub_redis_t **out)
{
    char err[512];
    sse_pub_redis_t *r = calloc(1, sizeof *r);
    if (!r) {
        fprintf(stderr, "sse-pub: out of memory\n");
        return 1;
    }
    if (strlen(key) == 0 || strlen(key) >= sizeof r->key) {
        fprintf(stderr, "sse-pub: --stream-key must be 1 to %zu bytes\n",
                sizeof r->key - 1);
        free(r);
        return 2;
    }
    if (sse_redis_target_parse(&r->tgt, url, sentinels, master, err,
                               sizeof err) < 0) {
        fprintf(stderr, "sse-pub: %s\n", err);
        free(r);
        return 2;
    }
    strcpy(r->key, key);
    snprintf(r->maxlen, sizeof r->maxlen, "%llu", (unsigned long long)maxlen);
    r->max_age_ms = max_age_ms;
    r->wait_replicas = wait_replicas;
    if (pub_connect(r, now_ms() + PUB_FAILOVER_WAIT_MS)) {
        free(r);
        return 1;
    }
    *out = r;
    return 0;
}

static void append_xadd(sse_pub_redis_t *r, const sse_bus_event_t *ev)
{
    const char *argv[12];
    size_t lens[12];
    int n = 0;
#define ARG(p, l) (argv[n] = (p), lens[n] = (l), n++)
    ARG("XADD", 4);
    ARG(r->key, strlen(r->key));
    if (r->max_age_ms) {
        ARG("MINID", 5);
        ARG("~", 1);
        ARG(r->minid, strlen(r->minid));
    } else {
        ARG("MAXLEN", 6);
        ARG("~", 1);
        ARG(r->maxlen, strlen(r->maxlen));
    }
    ARG("*", 1);
    ARG(SSE_REDIS_F_CHANNEL, 1);
    ARG(ev->channel, ev->channel_len);
    if (ev->event_len) {
        ARG(SSE_REDIS_F_EVENT, 1);
        ARG(ev->event, ev->event_len);
    }
    ARG(SSE_REDIS_F_DATA, 1);
    ARG(ev->data ? ev->data : "", ev->data_len);
#undef ARG
    redisAppendCommandArgv(r->c, n, argv, lens);
}

/* An error reply that means "not stored, ask another master". */
static int refused_by_non_master(const redisReply *rep)
{
    static const char *const codes[] = {"READONLY", "NOREPLICAS",
                                        "MASTERDOWN", "LOADING"};
    if (rep->type != REDIS_REPLY_ERROR)
        return 0;
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (strncmp(rep->str, codes[i], strlen(codes[i])) == 0)
            return 1;
    return 0;
}

/* WAIT for r->wait_replicas replicas: how many confirmed, -1 if the
 * connection failed. */
static long long confirmed_replicas(sse_pub_redis_t *r)
{
    redisReply *rep = redisCommand(r->c, "WAIT %d %d", r->wait_replicas,
                                   PUB_WAIT_TIMEOUT_MS);
    long long k = rep && rep->type == REDIS_REPLY_INTEGER ? rep->integer : -1;
    if (rep)
        freeReplyObject(rep);
    return k;
}

/* After a failover: the first of ids[from..n) that the master now in use
 * does not hold (n: it holds them all). Writes are replicated in order, so
 * what is missing is a suffix; anything else is reported and gives -1. */
static long first_missing(sse_pub_redis_t *r, char (*ids)[PUB_ID_MAX],
                          size_t from, size_t n)
{
    size_t i;
    long first = (long)n;
    int ok = 1;
    for (i = from; i < n; i++)
        redisAppendCommand(r->c, "XRANGE %s %s %s", r->key, ids[i], ids[i]);
    for (i = from; i < n; i++) {
        redisReply *rep = NULL;
        if (redisGetReply(r->c, (void **)&rep) != REDIS_OK || !rep)
            return -1;
        if (rep->type != REDIS_REPLY_ARRAY)
            ok = 0;
        else if (rep->elements == 0 && first == (long)n)
            first = (long)i;
        else if (rep->elements != 0 && first != (long)n)
            ok = 0; /* a hole, not a suffix */
        freeReplyObject(rep);
    }
    return ok ? first : -1;
}

/* XADD evs[0..n) (see sse_pub_redis_add); ids (may be NULL) receives
 * each event's id. */
static int add_batch(sse_pub_redis_t *r, const sse_bus_event_t *evs,
                     size_t n, char *last_id, size_t len,
                     char (*ids)[PUB_ID_MAX])
{
    size_t i, off = 0, stored = 0;
    long long deadline = now_ms() + PUB_FAILOVER_WAIT_MS;
    int rc = 0;
    if (r->max_age_ms) {
        /* Redis ids start with the server's wall-clock ms: entries older
         * than max age have ids below now - max age (by this host's clock;
         * a skew between the clocks shifts the retention by as much). */
        struct timespec ts;
        unsigned long long wall;
        clock_gettime(CLOCK_REALTIME, &ts);
        wall = (unsigned long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
        snprintf(r->minid, sizeof r->minid, "%llu",
                 wall > r->max_age_ms ? wall - r->max_age_ms : 0);
    }
    for (;;) {
        size_t refused_from = n; /* first event refused by a non-master */
        int stored_after = 0;
        for (i = off; i < n; i++)
            append_xadd(r, &evs[i]);
        for (i = off; i < n; i++) {
            redisReply *rep = NULL;
            if (redisGetReply(r->c, (void **)&rep) != REDIS_OK || !rep) {
                fprintf(stderr, "sse-pub: Redis at %s:%d stopped answering "
                        "(%s) after %zu of %zu events were stored; the next "
                        "may or may not have been: check the stream before "
                        "publishing again (a retry stores duplicates under "
                        "new ids)\n", r->tgt.addr.host, r->tgt.addr.port,
                        r->c->errstr, stored, n);
                return 1;
            }
            if (rep->type == REDIS_REPLY_STRING) {
                stored++;
                if (refused_from < n)
                    stored_after = 1;
                if (ids)
                    snprintf(ids[i], PUB_ID_MAX, "%s", rep->str);
                if (last_id && len)
                    snprintf(last_id, len, "%s", rep->str);
            }
            else if (r->tgt.master_name[0] && refused_by_non_master(rep)) {
                if (refused_from == n)
                    refused_from = i;
            }
            else if (!rc) {
                fprintf(stderr, "sse-pub: Redis refused XADD to '%s': %s: "
                        "check that the key holds a stream\n", r->key,
                        rep->type == REDIS_REPLY_ERROR ? rep->str : "?");
                rc = 1;
            }
            freeReplyObject(rep);
        }
        if (rc || refused_from == n)
            return rc;
        if (stored_after) {
            fprintf(stderr, "sse-pub: %s:%d refused some events (not a "
                    "master any more?) and stored later ones: the stream "
                    "now lacks events %zu and after of this batch of %zu; "
                    "publish them again\n", r->tgt.addr.host,
                    r->tgt.addr.port, refused_from + 1, n);
            return 1;
        }
        if (now_ms() >= deadline) {
            fprintf(stderr, "sse-pub: master %s:%d refused writes (demoted "
                    "or min-replicas-to-write not met) for 10 s; %zu of %zu "
                    "events were stored: check the sentinels and the "
                    "replicas\n", r->tgt.addr.host, r->tgt.addr.port,
                    stored, n);
            return 1;
        }
        /* Not stored: safe to send them again, to the master found anew. */
        struct timespec ts = {0, PUB_BACKOFF_MIN_MS * 1000000L};
        nanosleep(&ts, NULL);
        if (pub_connect(r, deadline))
            return 1;
        off = refused_from;
    }
}

int sse_pub_redis_add(sse_pub_redis_t *r, const sse_bus_event_t *evs,
                      size_t n, char *last_id, size_t len)
{
    char (*ids)[PUB_ID_MAX];
    long long deadline = now_ms() + PUB_WAIT_DEADLINE_MS, k;
    size_t from = 0;
    long m;
    int rc, failed_over = 0;

    if (!r->wait_replicas)
        return add_batch(r, evs, n, last_id, len, NULL);
    if (!(ids = calloc(n ? n : 1, sizeof *ids))) {
        fprintf(stderr, "sse-pub: out of memory\n");
        return 1;
    }
    /* Acknowledged = stored on the master and on --wait-replicas replicas:
     * then a failover cannot lose it. A shortfall is either a slow replica
     * (the events stand: WAIT again) or a failover under way (the new
     * master lacks a suffix of them: send that suffix again). Once the
     * master promoted by a failover holds them all they are acknowledged.
     * Until the deadline; never a duplicate: ids[] tells what the new
     * master holds. */
    while ((rc = add_batch(r, evs + from, n - from, last_id, len,
                           ids + from)) == 0) {
        if ((k = confirmed_replicas(r)) >= r->wait_replicas)
            break;
        for (;;) {
            if (!r->tgt.master_name[0] || now_ms() >= deadline) {
                fprintf(stderr, "sse-pub: %s:%d stored the events but only "
                        "%lld of the %d replicas asked for (--wait-replicas) "
                        "confirmed them%s: they may be lost if it fails "
                        "before the replicas catch up\n", r->tgt.addr.host,
                        r->tgt.addr.port, k < 0 ? 0 : k, r->wait_replicas,
                        r->tgt.master_name[0] ? " for 30 s" : "");
                rc = 1;
                goto out;
            }
            struct timespec ts = {0, PUB_BACKOFF_MIN_MS * 1000000L};
            nanosleep(&ts, NULL);
            char was[sizeof r->tgt.addr.host];
            int was_port = r->tgt.addr.port;
            snprintf(was, sizeof was, "%s", r->tgt.addr.host);
            if (pub_connect(r, deadline)) {
                rc = 1;
                goto out;
            }
            if (r->tgt.addr.port != was_port || strcmp(r->tgt.addr.host, was))
                failed_over = 1;
            if ((m = first_missing(r, ids, 0, n)) < 0) {
                fprintf(stderr, "sse-pub: after a failover, master %s:%d "
                        "holds some of this batch's events but not the "
                        "ones before them: check the stream\n",
                        r->tgt.addr.host, r->tgt.addr.port);
                rc = 1;
                goto out;
            }
            if ((size_t)m < n) {
                from = (size_t)m; /* lost in the failover: send again */
                break;
            }
            /* The master promoted in a failover holds them all: they have
             * survived it (it has no replica until Sentinel turns the old
             * master into one, seconds later). */
            if (failed_over || (k = confirmed_replicas(r)) >= r->wait_replicas)
                goto out;
        }
    }
out:
    free(ids);
    return rc;
}

void sse_pub_redis_close(sse_pub_redis_t *r)
{
    if (!r)
        return;
    if (r->c)
        redisFree(r->c);
    sse_redis_target_close(&r->tgt);
    free(r);
}

#else /* !SSE_HAVE_HIREDIS */

int sse_pub_redis_open(const char *url, const char *sentinels,
                       const char *master, const char *key, uint64_t maxlen,
                       uint64_t max_age_ms, int wait_replicas,
                       sse_pub_redis_t **out)
{
    (void)url; (void)sentinels; (void)master; (void)key; (void)maxlen;
    (void)max_age_ms; (void)wait_replicas; (void)out;
    fprintf(stderr, "sse-pub: this sse-pub was built without hiredis, so "
            "--redis and --sentinel are not available: install it (Debian: apt-get install "
            "libhiredis-dev) and re-run ./configure && make\n");
    return 1;
}

int sse_pub_redis_add(sse_pub_redis_t *r, const sse_bus_event_t *evs,
                      size_t n, char *last_id, size_t len)
{
    (void)r; (void)evs; (void)n; (void)last_id; (void)len;
    return 1;
}

void sse_pub_redis_close(sse_pub_redis_t *r)
{
    (void)r;
}

#endif

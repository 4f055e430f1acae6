/*
 * sse_pub_redis.c - sse-pub's Redis target (see sse_pub_redis.h).
 *
 * Each event is one XADD <key> MAXLEN ~ <n> * c <channel> [e <type>]
 * d <data>, sent with the binary-safe argv interface (data may hold any
 * byte; the relay splits it into data: lines like the bus does). A batch
 * is pipelined: all commands are appended, then all replies read, so a
 * stream of small events costs one round trip per batch, not per event.
 * Events are checked against the bus's default limits before they are
 * sent, so what Redis stores a default bus can carry.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sse_pub_redis.h"

#ifdef SSE_HAVE_HIREDIS

#include "sse_redis.h"

struct sse_pub_redis {
    redisContext *c;
    sse_redis_addr_t addr;
    char key[256];
    char maxlen[24];
};

#define PUB_TIMEOUT_MS 10000

int sse_pub_redis_open(const char *url, const char *key, uint64_t maxlen,
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
    if (sse_redis_parse_url(url, &r->addr, err, sizeof err) < 0) {
        fprintf(stderr, "sse-pub: %s\n", err);
        free(r);
        return 2;
    }
    strcpy(r->key, key);
    snprintf(r->maxlen, sizeof r->maxlen, "%llu", (unsigned long long)maxlen);
    r->c = sse_redis_connect(&r->addr, PUB_TIMEOUT_MS, err, sizeof err);
    if (!r->c) {
        fprintf(stderr, "sse-pub: %s\n", err);
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
    ARG("MAXLEN", 6);
    ARG("~", 1);
    ARG(r->maxlen, strlen(r->maxlen));
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

int sse_pub_redis_add(sse_pub_redis_t *r, const sse_bus_event_t *evs,
                      size_t n, char *last_id, size_t len)
{
    size_t i, stored = 0;
    int rc = 0;
    for (i = 0; i < n; i++)
        append_xadd(r, &evs[i]);
    for (i = 0; i < n; i++) {
        redisReply *rep = NULL;
        if (redisGetReply(r->c, (void **)&rep) != REDIS_OK || !rep) {
            fprintf(stderr, "sse-pub: Redis at %s:%d stopped answering "
                    "(%s) after %zu of %zu events were stored; the next "
                    "may or may not have been: check the stream before "
                    "publishing again (a retry stores duplicates under new "
                    "ids)\n", r->addr.host, r->addr.port, r->c->errstr,
                    stored, n);
            return 1;
        }
        if (rep->type == REDIS_REPLY_STRING) {
            stored++;
            if (last_id && len)
                snprintf(last_id, len, "%s", rep->str);
        }
        else if (!rc) {
            fprintf(stderr, "sse-pub: Redis refused XADD to '%s': %s: "
                    "check that the key holds a stream\n", r->key,
                    rep->type == REDIS_REPLY_ERROR ? rep->str : "?");
            rc = 1;
        }
        freeReplyObject(rep);
    }
    return rc;
}

void sse_pub_redis_close(sse_pub_redis_t *r)
{
    if (!r)
        return;
    if (r->c)
        redisFree(r->c);
    free(r);
}

#else /* !SSE_HAVE_HIREDIS */

int sse_pub_redis_open(const char *url, const char *key, uint64_t maxlen,
                       sse_pub_redis_t **out)
{
    (void)url; (void)key; (void)maxlen; (void)out;
    fprintf(stderr, "sse-pub: this sse-pub was built without hiredis, so "
            "--redis is not available: install it (Debian: apt-get install "
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

/*
 * sse_redis.h - what sse-pub's Redis target and sse-relay share: the
 * address syntax, the connection (timeouts, TCP keepalive, AUTH, SELECT)
 * and the layout of an event in the Redis stream.
 *
 * Stream entry layout (one stream for all channels, default key "sse"):
 *   XADD <key> MAXLEN ~ <n> * c <channel> [e <event type>] d <data>
 * Redis assigns the id (MS-SEQ) in the same command that stores the event;
 * the relay frames the event with that id as the SSE id, so an id means
 * the same event on every host. Unknown fields are ignored (room to grow).
 *
 * Failover: with Redis Sentinel the master is discovered at every
 * (re)connection and checked with ROLE; see sse_redis_target_*.
 *
 * Only built when configure found hiredis (SSE_HAVE_HIREDIS).
 * Callers: bus/sse_pub_redis.c, bus/sse_relay.c.
 */
#ifndef SSE_REDIS_H
#define SSE_REDIS_H

#include <stddef.h>

#include <hiredis/hiredis.h>

#define SSE_REDIS_KEY_DEFAULT "sse"
#define SSE_REDIS_MAXLEN_DEFAULT 1000000ull

/* Parsed redis://[:password@]host[:port][/db] */
typedef struct sse_redis_addr {
    char host[256];
    int port;          /* default 6379 */
    int db;            /* default 0 */
    char password[256]; /* "" = no AUTH */
} sse_redis_addr_t;

/* 0 on success; -1 with a sentence in err (what to write instead). */
int sse_redis_parse_url(const char *url, sse_redis_addr_t *a, char *err,
                        size_t errlen);

/* Connect with a connect timeout of timeout_ms, set the read/write timeout
 * to timeout_ms too (a relay passes more than its XREAD BLOCK time, so a
 * silently dead server is noticed), enable TCP keepalive (10 s idle, 5 s
 * interval, 3 probes), then AUTH and SELECT as the address says.
 * NULL with a sentence in err on failure. */
redisContext *sse_redis_connect(const sse_redis_addr_t *a, int timeout_ms,
                                char *err, size_t errlen);

/* Where to find the server: a fixed URL (--redis) or a master found
 * through Redis Sentinel (--sentinel HOST:PORT[,...] --master NAME). */
#define SSE_REDIS_SENTINELS_MAX 16

typedef struct sse_redis_target {
    /* URL form: the server. Sentinel form: the master of the last
     * successful connection (host and port only: no AUTH, database 0). */
    sse_redis_addr_t addr;
    char master_name[128]; /* "" = URL form */
    int nsentinels;
    struct {
        char host[256];
        int port; /* default 26379 */
    } sentinel[SSE_REDIS_SENTINELS_MAX];
    int next_sentinel;  /* asked first: the last one that answered */
    redisContext *sc;   /* kept open by sse_redis_target_moved */
} sse_redis_target_t;

/* Exactly one of url and sentinels (a comma-separated HOST:PORT list, with
 * master the name the sentinels monitor) must be given. 0, or -1 with a
 * sentence in err saying what to write instead. */
int sse_redis_target_parse(sse_redis_target_t *t, const char *url,
                           const char *sentinels, const char *master,
                           char *err, size_t errlen);

/* Connect (sse_redis_connect's timeouts and keepalive). Sentinel form: ask
 * each sentinel in turn (SENTINEL get-master-addr-by-name), connect to the
 * address it names and accept it only if ROLE says "master" (a demoted old
 * master or a not yet promoted replica is refused); t->addr then holds the
 * master. NULL with a sentence in err when no sentinel named a master that
 * answered as one: the caller backs off and calls again. */
redisContext *sse_redis_target_connect(sse_redis_target_t *t, int timeout_ms,
                                       char *err, size_t errlen);

/* Sentinel form: ask one sentinel (over a connection kept in t->sc, the
 * next sentinel after a failure) where the master is now. 1 if that is not
 * t->addr (a failover happened: reconnect), 0 if it is, -1 if the sentinel
 * did not answer within timeout_ms. URL form: always 0. */
int sse_redis_target_moved(sse_redis_target_t *t, int timeout_ms);

/* Frees t->sc. */
void sse_redis_target_close(sse_redis_target_t *t);

/* Field names in a stream entry. */
#define SSE_REDIS_F_CHANNEL "c"
#define SSE_REDIS_F_EVENT "e"
#define SSE_REDIS_F_DATA "d"

#endif /* SSE_REDIS_H */

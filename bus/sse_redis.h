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

/* Field names in a stream entry. */
#define SSE_REDIS_F_CHANNEL "c"
#define SSE_REDIS_F_EVENT "e"
#define SSE_REDIS_F_DATA "d"

#endif /* SSE_REDIS_H */

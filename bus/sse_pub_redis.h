/*
 * sse_pub_redis.h - sse-pub's Redis target: `sse-pub publish|stream
 * --redis URL` appends events to a Redis stream (XADD, id assigned by
 * Redis) instead of a local bus; sse-relay on each host copies the stream
 * into that host's bus. Layout of an entry: bus/sse_redis.h.
 *
 * Errors are printed here (one "sse-pub: ..." line saying what to do);
 * functions return sse-pub exit codes (0 ok, 1 runtime). Without hiredis at
 * build time sse_pub_redis_open explains how to get it and returns 1.
 * Caller: bus/sse_pub.c.
 */
#ifndef SSE_PUB_REDIS_H
#define SSE_PUB_REDIS_H

#include <stddef.h>
#include <stdint.h>

#include "sse_bus.h"

typedef struct sse_pub_redis sse_pub_redis_t;

/* Connect to url, or (url NULL) to the master that the sentinels (a
 * comma-separated HOST:PORT list) name for `master`; events go to stream
 * `key`, trimmed approximately to `maxlen` entries (MAXLEN ~) or, when
 * max_age_ms > 0, to the entries younger than that (MINID ~, by this
 * host's wall clock, set for each batch). Through
 * Sentinel, a master that cannot be found is looked for again with backoff
 * for up to 10 s (a failover in progress). */
int sse_pub_redis_open(const char *url, const char *sentinels,
                       const char *master, const char *key, uint64_t maxlen,
                       uint64_t max_age_ms, int wait_replicas,
                       sse_pub_redis_t **out);

/* XADD evs[0..n) in one pipeline (ev->id is ignored: Redis assigns ids).
 * With wait_replicas > 0 (open), the batch is acknowledged only once that
 * many replicas hold it (WAIT): a failover cannot lose it then. If they do
 * not confirm and the master has changed (Sentinel), the events the new
 * master lacks are sent again to it (their ids say which: no duplicate).
 * last_id (may be NULL, lenth len) receives the id of the last event.
 * A failure part-way leaves the events before it stored: a caller that
 * retries the whole batch duplicates them (under new ids). Through
 * Sentinel, events that the server refused without storing them (READONLY:
 * it was demoted; NOREPLICAS: min-replicas-to-write not met, e.g. its
 * replica was just promoted) are sent again to the master found anew, for
 * up to 10 s; a lost connection is not retried (the events in flight may
 * or may not be stored). */
int sse_pub_redis_add(sse_pub_redis_t *r, const sse_bus_event_t *evs,
                      size_t n, char *last_id, size_t len);

void sse_pub_redis_close(sse_pub_redis_t *r);

#endif /* SSE_PUB_REDIS_H */

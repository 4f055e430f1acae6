/*
 * sse_redis.c - Redis address parsing and connection set-up shared by
 * sse-pub's Redis target and sse-relay (see sse_redis.h).
 *
 * The connection is blocking (hiredis' synchronous API): both users do one
 * thing at a time. What keeps a blocking client from hanging for ever is
 * the read timeout (set by the caller above its longest BLOCK) and TCP
 * keepalive, which finds a peer that vanished without a FIN or RST.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "sse_redis.h"

int sse_redis_parse_url(const char *url, sse_redis_addr_t *a, char *err,
                        size_t errlen)
{
    const char *p, *at, *slash, *colon, *hend;
    size_t hl;

    memset(a, 0, sizeof *a);
    a->port = 6379;
    if (strncmp(url, "redis://", 8) != 0) {
        snprintf(err, errlen, "Redis address '%s' must look like "
                 "redis://HOST:PORT/ or redis://:PASSWORD@HOST:PORT/DB", url);
        return -1;
    }
    p = url + 8;
    slash = strchr(p, '/');
    at = strchr(p, '@');
    if (at && (!slash || at < slash)) {
        const char *pw = memchr(p, ':', (size_t)(at - p));
        pw = pw ? pw + 1 : p;
        if ((size_t)(at - pw) >= sizeof a->password) {
            snprintf(err, errlen, "Redis password in '%s' is too long", url);
            return -1;
        }
        memcpy(a->password, pw, (size_t)(at - pw));
        p = at + 1;
    }
    hend = slash ? slash : p + strlen(p);
    colon = memchr(p, ':', (size_t)(hend - p));
    if (colon) {
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (end != hend || port <= 0 || port > 65535) {
            snprintf(err, errlen, "bad port in Redis address '%s': write "
                     "redis://HOST:PORT/ with PORT 1..65535", url);
            return -1;
        }
        a->port = (int)port;
    }
    hl = (size_t)((colon ? colon : hend) - p);
    if (hl == 0 || hl >= sizeof a->host) {
        snprintf(err, errlen, "no host in Redis address '%s': write "
                 "redis://127.0.0.1:6379/", url);
        return -1;
    }
    memcpy(a->host, p, hl);
    if (slash && slash[1]) {
        char *end;
        long db = strtol(slash + 1, &end, 10);
        if (*end || db < 0 || db > 65535) {
            snprintf(err, errlen, "bad database number in Redis address "
                     "'%s': write redis://HOST:PORT/0", url);
            return -1;
        }
        a->db = (int)db;
    }
    return 0;
}

static void keepalive(int fd)
{
    int on = 1, idle = 10, intvl = 5, cnt = 3;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
}

/* Run one command that must answer +OK. */
static int expect_ok(redisContext *c, const char *what, char *err,
                     size_t errlen, const char *fmt, ...)
{
    redisReply *r;
    va_list ap;
    int ok;
    va_start(ap, fmt);
    r = redisvCommand(c, fmt, ap);
    va_end(ap);
    ok = r && r->type == REDIS_REPLY_STATUS;
    if (!ok)
        snprintf(err, errlen, "Redis refused %s: %s", what,
                 r && r->type == REDIS_REPLY_ERROR ? r->str
                 : c->errstr[0] ? c->errstr : "no answer");
    if (r)
        freeReplyObject(r);
    return ok ? 0 : -1;
}

redisContext *sse_redis_connect(const sse_redis_addr_t *a, int timeout_ms,
                                char *err, size_t errlen)
{
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(a->host, a->port, tv);

    if (!c || c->err) {
        snprintf(err, errlen, "cannot connect to Redis at %s:%d: %s: start "
                 "redis-server or fix the address", a->host, a->port,
                 c ? c->errstr : "out of memory");
        if (c)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    keepalive(c->fd);
    if (a->password[0]
        && expect_ok(c, "AUTH (check the password in the address)", err,
                     errlen, "AUTH %s", a->password) < 0) {
        redisFree(c);
        return NULL;
    }
    if (a->db && expect_ok(c, "SELECT", err, errlen, "SELECT %d", a->db) < 0) {
        redisFree(c);
        return NULL;
    }
    return c;
}

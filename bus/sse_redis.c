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

/* --------------------------------------------------------- Sentinel */

static int parse_sentinel(const char *s, size_t len, sse_redis_target_t *t,
                          char *err, size_t errlen)
{
    const char *host = s, *colon = NULL, *end = s + len;
    size_t hl;
    long port = 26379;
    int i = t->nsentinels;

    if (len && s[0] == '[') { /* [IPv6]:PORT */
        const char *rb = memchr(s, ']', len);
        if (!rb)
            goto bad;
        host = s + 1;
        hl = (size_t)(rb - host);
        if (rb + 1 < end) {
            if (rb[1] != ':')
                goto bad;
            colon = rb + 1;
        }
    } else {
        colon = memchr(s, ':', len);
        hl = (size_t)((colon ? colon : end) - s);
    }
    if (colon) {
        char num[8], *e;
        size_t nl = (size_t)(end - colon - 1);
        if (nl == 0 || nl >= sizeof num)
            goto bad;
        memcpy(num, colon + 1, nl);
        num[nl] = '\0';
        port = strtol(num, &e, 10);
        if (*e || port <= 0 || port > 65535)
            goto bad;
    }
    if (hl == 0 || hl >= sizeof t->sentinel[0].host)
        goto bad;
    if (i == SSE_REDIS_SENTINELS_MAX) {
        snprintf(err, errlen, "--sentinel lists more than %d sentinels: "
                 "name at most %d (any one that answers is enough)",
                 SSE_REDIS_SENTINELS_MAX, SSE_REDIS_SENTINELS_MAX);
        return -1;
    }
    memcpy(t->sentinel[i].host, host, hl);
    t->sentinel[i].host[hl] = '\0';
    t->sentinel[i].port = (int)port;
    t->nsentinels++;
    return 0;
bad:
    snprintf(err, errlen, "bad sentinel address '%.*s' in --sentinel: write "
             "HOST:PORT[,HOST:PORT...], e.g. 10.0.0.5:26379,10.0.0.6:26379",
             (int)len, s);
    return -1;
}

int sse_redis_target_parse(sse_redis_target_t *t, const char *url,
                           const char *sentinels, const char *master,
                           char *err, size_t errlen)
{
    const char *p;

    memset(t, 0, sizeof *t);
    if (url && (sentinels || master)) {
        snprintf(err, errlen, "use either --redis URL (one fixed server) or "
                 "--sentinel HOST:PORT[,...] --master NAME (failover), not "
                 "both");
        return -1;
    }
    if (url)
        return sse_redis_parse_url(url, &t->addr, err, errlen);
    if (!sentinels || !master) {
        snprintf(err, errlen, sentinels ? "--sentinel needs --master NAME: "
                 "the name in the sentinels' `sentinel monitor NAME ...` line"
                 : master ? "--master needs --sentinel HOST:PORT[,...]: the "
                 "sentinels to ask for the master" : "say where Redis is: "
                 "--redis URL or --sentinel HOST:PORT[,...] --master NAME");
        return -1;
    }
    if (!master[0] || strlen(master) >= sizeof t->master_name
        || strpbrk(master, " \t\r\n")) {
        snprintf(err, errlen, "--master must be the monitored master's name "
                 "(1 to %zu characters, no spaces)",
                 sizeof t->master_name - 1);
        return -1;
    }
    strcpy(t->master_name, master);
    for (p = sentinels;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (parse_sentinel(p, len, t, err, errlen) < 0)
            return -1;
        if (!comma)
            break;
        p = comma + 1;
    }
    t->addr.port = 6379;
    return 0;
}

static redisContext *sentinel_connect(const sse_redis_target_t *t, int i,
                                      int timeout_ms, char *err,
                                      size_t errlen)
{
    sse_redis_addr_t a;
    memset(&a, 0, sizeof a);
    snprintf(a.host, sizeof a.host, "%s", t->sentinel[i].host);
    a.port = t->sentinel[i].port;
    redisContext *c = sse_redis_connect(&a, timeout_ms, err, errlen);
    if (!c)
        snprintf(err, errlen, "sentinel %s:%d does not answer",
                 t->sentinel[i].host, t->sentinel[i].port);
    return c;
}

/* SENTINEL get-master-addr-by-name on c. 0 and host/port, or -1 with err. */
static int ask_master(redisContext *c, const sse_redis_target_t *t, int i,
                      char *host, size_t hostlen, int *port, char *err,
                      size_t errlen)
{
    redisReply *r = redisCommand(c, "SENTINEL get-master-addr-by-name %s",
                                 t->master_name);
    int ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2
             && r->element[0]->type == REDIS_REPLY_STRING
             && r->element[1]->type == REDIS_REPLY_STRING
             && r->element[0]->len < hostlen;
    if (ok) {
        memcpy(host, r->element[0]->str, r->element[0]->len + 1);
        *port = atoi(r->element[1]->str);
        ok = *port > 0 && *port <= 65535;
    }
    if (!ok)
        snprintf(err, errlen, "sentinel %s:%d %s", t->sentinel[i].host,
                 t->sentinel[i].port,
                 !r ? "stopped answering"
                 : r->type == REDIS_REPLY_NIL
                     ? "knows no master by that name: check --master"
                 : r->type == REDIS_REPLY_ERROR ? r->str
                 : "gave an unexpected answer");
    if (r)
        freeReplyObject(r);
    return ok ? 0 : -1;
}

/* 1 if ROLE's first element is "master". */
static int is_master(redisContext *c)
{
    redisReply *r = redisCommand(c, "ROLE");
    int ok = r && r->type == REDIS_REPLY_ARRAY && r->elements > 0
             && r->element[0]->type == REDIS_REPLY_STRING
             && strcmp(r->element[0]->str, "master") == 0;
    if (r)
        freeReplyObject(r);
    return ok;
}

redisContext *sse_redis_target_connect(sse_redis_target_t *t, int timeout_ms,
                                       char *err, size_t errlen)
{
    char why[512] = "", failed_host[256] = "";
    int k, failed_port = 0;

    if (!t->master_name[0])
        return sse_redis_connect(&t->addr, timeout_ms, err, errlen);
    for (k = 0; k < t->nsentinels; k++) {
        int i = (t->next_sentinel + k) % t->nsentinels;
        sse_redis_addr_t a;
        redisContext *sc, *c;

        memset(&a, 0, sizeof a);
        if (!(sc = sentinel_connect(t, i, timeout_ms, why, sizeof why)))
            continue;
        if (ask_master(sc, t, i, a.host, sizeof a.host, &a.port, why,
                       sizeof why) < 0) {
            redisFree(sc);
            continue;
        }
        redisFree(sc);
        /* Several sentinels name the same server: try it once a round (a
         * stopped server costs a whole timeout). */
        if (a.port == failed_port && strcmp(a.host, failed_host) == 0)
            continue;
        if (!(c = sse_redis_connect(&a, timeout_ms, why, sizeof why))
            || !is_master(c)) {
            if (c)
                snprintf(why, sizeof why, "%s:%d, named master '%s' by "
                         "sentinel %s:%d, does not answer ROLE as a master "
                         "(failover in progress?)", a.host, a.port,
                         t->master_name, t->sentinel[i].host,
                         t->sentinel[i].port);
            snprintf(failed_host, sizeof failed_host, "%s", a.host);
            failed_port = a.port;
            if (c)
                redisFree(c);
            continue;
        }
        t->next_sentinel = i;
        t->addr = a;
        return c;
    }
    snprintf(err, errlen, "no master '%s' found through %d sentinel%s (last: "
             "%s): check that the sentinels run and monitor that name",
             t->master_name, t->nsentinels, t->nsentinels == 1 ? "" : "s",
             why);
    return NULL;
}

int sse_redis_target_moved(sse_redis_target_t *t, int timeout_ms)
{
    char host[256], err[512];
    int port, i = t->next_sentinel;

    if (!t->master_name[0])
        return 0;
    if (!t->sc && !(t->sc = sentinel_connect(t, i, timeout_ms, err,
                                             sizeof err))) {
        t->next_sentinel = (i + 1) % t->nsentinels;
        return -1;
    }
    if (ask_master(t->sc, t, i, host, sizeof host, &port, err,
                   sizeof err) < 0) {
        redisFree(t->sc);
        t->sc = NULL;
        t->next_sentinel = (i + 1) % t->nsentinels;
        return -1;
    }
    return port != t->addr.port || strcmp(host, t->addr.host) != 0;
}

void sse_redis_target_close(sse_redis_target_t *t)
{
    if (t->sc)
        redisFree(t->sc);
    t->sc = NULL;
}

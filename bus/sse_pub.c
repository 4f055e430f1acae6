/*
 * sse_pub.c - the `sse-pub` command line tool: create a bus, publish to it,
 * stream stdin into it, look at it (info) and follow it (tail).
 *
 * A thin user of the bus library: it knows only include/sse_bus.h, never
 * the file layout. Every error is one line on stderr,
 *   sse-pub: <what happened>: <what to do>
 * and the exit code says what kind of failure it was:
 *   0 ok, 1 runtime error (bus missing/corrupt/...), 2 usage error,
 *   3 an event was rejected (bad channel/event/id, too big).
 * A failed command never loses what is already in the bus: the library
 * checks every event before it takes the lock.
 *
 * `stream` is the hot path (relays pipe thousands of events per second into
 * it): stdin is read in big blocks, lines are cut with memchr and published
 * in place (no copy) in batches of up to STREAM_BATCH_MAX events or
 * STREAM_BATCH_BYTES bytes, one lock hold and one wake-up per batch. A
 * partial batch is flushed as soon as stdin has nothing more ready
 * (poll with a 0 timeout), so a slow producer's events are never held back.
 * The input buffer is only compacted after the pending batch is published,
 * because the batch's events point into it.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sse_bus.h"
#include "sse_pub_redis.h"

#define EXIT_RUNTIME 1
#define EXIT_USAGE 2
#define EXIT_REJECTED 3

#define STREAM_BATCH_MAX 256
#define STREAM_BATCH_BYTES (64u * 1024u)
#define STREAM_BUF_INIT (1u << 20)      /* input buffer, grows for long lines */
#define STREAM_LINE_MAX (256u << 20)    /* longest input line accepted */

static const char *prog = "sse-pub";

/* ------------------------------------------------------------ messages */

static void msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void msg(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static int usage_error(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, ": see `%s %s--help`\n", prog, cmd ? cmd : "");
    return EXIT_USAGE;
}

/* Exit code for a library result: rejected events are 3, the rest 1. */
static int exit_code_for(int rc)
{
    switch (rc) {
    case SSE_BUS_ECHANNEL:
    case SSE_BUS_EEVENT:
    case SSE_BUS_EID:
    case SSE_BUS_ETOOBIG:
        return EXIT_REJECTED;
    default:
        return EXIT_RUNTIME;
    }
}

/* One line for a library error. The library's msg already says what to do;
 * if it is empty we fall back to the fixed description and a generic hint. */
static int bus_error(int rc, const sse_bus_error_t *err, const char *what)
{
    if (err && err->msg[0])
        msg("%s", err->msg);
    else
        msg("%s: %s: check the path and the bus with `%s info PATH`", what,
            sse_bus_strerror(rc), prog);
    return exit_code_for(rc);
}

/* --------------------------------------------------------------- parsing */

/* "16M", "64k", "4096", "1G" -> bytes (binary multiples). */
static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!isdigit((unsigned char)*s))
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    unsigned shift = 0;
    switch (*end) {
    case '\0': break;
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    default: return -1;
    }
    if (*end == 'i' && shift)   /* accept "16Mi" too */
        end++;
    if (*end == 'B' || *end == 'b')
        end++;
    if (*end)
        return -1;
    if (shift && v > (UINT64_MAX >> shift))
        return -1;
    *out = (uint64_t)v << shift;
    return 0;
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    if (!isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

static int parse_seconds(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || end == s || !(v >= 0) || v > 1e9)
        return -1;
    *out = v;
    return 0;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int open_bus(const char *path, int mode, sse_bus_t **bus)
{
    sse_bus_error_t err;
    memset(&err, 0, sizeof err);
    int rc = sse_bus_open(path, mode, bus, &err);
    if (rc != SSE_BUS_OK)
        return bus_error(rc, &err, path);
    return 0;
}

/* ---------------------------------------------------------------- create */

static const char create_help[] =
    "usage: sse-pub create PATH [--capacity SIZE] [--max-record SIZE]\n"
    "                           [--mode MODE] [--owner USER] [--group GROUP]\n"
    "                           [--force]\n"
    "Create a bus file (written to a temporary file, then renamed).\n"
    "  --capacity SIZE    ring size, k/M/G suffixes (default 16M)\n"
    "  --max-record SIZE  largest event record (default min(64k, capacity/4))\n"
    "  --mode MODE        octal file mode (default 0640)\n"
    "  --owner USER       owner (name or uid)\n"
    "  --group GROUP      group (name or gid), e.g. www-data so httpd can read\n"
    "  --force            replace an existing bus (new epoch; readers of the\n"
    "                     old one are told to move on)\n";

static int cmd_create(int argc, char **argv)
{
    static const struct option opts[] = {
        {"capacity", required_argument, 0, 'c'},
        {"max-record", required_argument, 0, 'r'},
        {"mode", required_argument, 0, 'm'},
        {"owner", required_argument, 0, 'o'},
        {"group", required_argument, 0, 'g'},
        {"force", no_argument, 0, 'f'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    sse_bus_create_opts_t co;
    sse_bus_create_opts_init(&co);
    int c;
    uint64_t v;
    char *end;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            if (parse_size(optarg, &v) || v < SSE_BUS_CAPACITY_MIN ||
                v > SSE_BUS_CAPACITY_MAX)
                return usage_error("create ",
                                   "--capacity '%s' is not a size between "
                                   "64k and 1T (e.g. 16M)", optarg);
            co.capacity = v;
            break;
        case 'r':
            if (parse_size(optarg, &v) || v == 0 || v > UINT32_MAX)
                return usage_error("create ",
                                   "--max-record '%s' is not a size below 4G "
                                   "(e.g. 64k)", optarg);
            co.max_record = (uint32_t)v;
            break;
        case 'm': {
            errno = 0;
            unsigned long m = strtoul(optarg, &end, 8);
            if (errno || *end || end == optarg || m > 07777)
                return usage_error("create ",
                                   "--mode '%s' is not an octal mode "
                                   "(e.g. 0640)", optarg);
            co.mode = (mode_t)m;
            break;
        }
        case 'o': {
            struct passwd *pw = getpwnam(optarg);
            if (pw)
                co.uid = pw->pw_uid;
            else if (parse_u64(optarg, &v) == 0 && v < (uid_t)-1)
                co.uid = (uid_t)v;
            else
                return usage_error("create ", "--owner: no user '%s'",
                                   optarg);
            break;
        }
        case 'g': {
            struct group *gr = getgrnam(optarg);
            if (gr)
                co.gid = gr->gr_gid;
            else if (parse_u64(optarg, &v) == 0 && v < (gid_t)-1)
                co.gid = (gid_t)v;
            else
                return usage_error("create ", "--group: no group '%s'",
                                   optarg);
            break;
        }
        case 'f':
            co.replace = 1;
            break;
        case 'h':
            fputs(create_help, stdout);
            return 0;
        default:
            return usage_error("create ", "bad option");
        }
    }
    if (optind != argc - 1)
        return usage_error("create ", "create takes exactly one PATH");
    const char *path = argv[optind];
    sse_bus_error_t err;
    memset(&err, 0, sizeof err);
    int rc = sse_bus_create(path, &co, &err);
    if (rc == SSE_BUS_EEXIST && !err.msg[0]) {
        msg("%s already exists: use --force to replace it (readers move to "
            "the new bus)", path);
        return EXIT_RUNTIME;
    }
    if (rc != SSE_BUS_OK)
        return bus_error(rc, &err, path);
    return 0;
}

/* --------------------------------------------------------------- publish */

static const char publish_help[] =
    "usage: sse-pub publish PATH --channel C [--event T] [--id ID] [DATA | -]\n"
    "       sse-pub publish --redis URL [--stream-key K]\n"
    "                       [--maxlen N | --max-age SECONDS]\n"
    "                       --channel C [--event T] [DATA | -]\n"
    "       sse-pub publish --sentinel HOST:PORT[,...] --master NAME ...\n"
    "Publish one event and print its id. DATA '-' reads the data from stdin\n"
    "(one trailing newline is dropped); no DATA publishes empty data.\n"
    "Newlines (CR, LF, CRLF) in the data become separate data: lines.\n"
    "--redis redis://[:PASSWORD@]HOST:PORT[/DB] appends to a Redis stream\n"
    "(XADD, default key 'sse', trimmed to about --maxlen entries, default\n"
    "1000000, or with --max-age to about the entries of the last SECONDS by\n"
    "this host's clock) instead of a bus; Redis assigns the id, which is\n"
    "printed.\n"
    "--sentinel HOST:PORT[,...] --master NAME instead of --redis: the\n"
    "master is asked from the sentinels (each in turn) and checked with\n"
    "ROLE; during a failover it is looked for again for up to 10 s, and\n"
    "events a demoted master refused (READONLY, NOREPLICAS) are resent.\n"
    "--wait-replicas N: acknowledge (print the id, exit 0) only once N\n"
    "replicas hold the event (WAIT); through Sentinel, events a failover\n"
    "lost are sent again to the new master: nothing acknowledged is lost.\n"
    "sse-relay copies the stream into each host's bus.\n";

/* Options shared by publish and stream for the Redis target. */
typedef struct {
    const char *url, *key;
    uint64_t maxlen;
    const char *sentinels, *master; /* --sentinel, --master */
    const char *remote; /* non-NULL: to Redis (url, sentinels or master) */
    uint64_t max_age_s; /* --max-age: trim by age (MINID) instead */
    int maxlen_set;
    uint64_t wait_replicas; /* --wait-replicas */
} redis_opts_t;

#define REDIS_OPTS_DEFAULT {NULL, "sse", 1000000, NULL, NULL, NULL, 0, 0, 0}

enum { OPT_REDIS = 1000, OPT_STREAM_KEY, OPT_MAXLEN, OPT_SENTINEL,
       OPT_MASTER, OPT_MAX_AGE, OPT_WAIT_REPLICAS };

/* The getopt_long entries of the Redis target, for publish and stream. */
#define REDIS_LONG_OPTS \
    {"redis", required_argument, 0, OPT_REDIS}, \
    {"stream-key", required_argument, 0, OPT_STREAM_KEY}, \
    {"maxlen", required_argument, 0, OPT_MAXLEN}, \
    {"max-age", required_argument, 0, OPT_MAX_AGE}, \
    {"wait-replicas", required_argument, 0, OPT_WAIT_REPLICAS}, \
    {"sentinel", required_argument, 0, OPT_SENTINEL}, \
    {"master", required_argument, 0, OPT_MASTER},

static int redis_opt(const char *cmd, int c, redis_opts_t *ro)
{
    switch (c) {
    case OPT_REDIS: ro->url = ro->remote = optarg; return 0;
    case OPT_SENTINEL: ro->sentinels = ro->remote = optarg; return 0;
    case OPT_MASTER: ro->master = optarg; ro->remote = optarg; return 0;
    case OPT_STREAM_KEY: ro->key = optarg; return 0;
    case OPT_MAXLEN:
        if (parse_u64(optarg, &ro->maxlen) || ro->maxlen == 0)
            return usage_error(cmd, "--maxlen must be a positive number");
        ro->maxlen_set = 1;
        break;
    case OPT_MAX_AGE:
        if (parse_u64(optarg, &ro->max_age_s) || ro->max_age_s == 0
            || ro->max_age_s > 100ull * 365 * 86400)
            return usage_error(cmd, "--max-age must be a number of seconds "
                                    "from 1 to 3153600000");
        break;
    case OPT_WAIT_REPLICAS:
        if (parse_u64(optarg, &ro->wait_replicas) || ro->wait_replicas > 64)
            return usage_error(cmd, "--wait-replicas must be a number of "
                                    "replicas from 0 to 64");
        break;
    default:
        return usage_error(cmd, "bad option");
    }
    if (ro->maxlen_set && ro->max_age_s)
        return usage_error(cmd, "use either --maxlen N (keep about N "
                                "entries) or --max-age SECONDS (keep about "
                                "that much time), not both");
    return 0;
}

/* Read all of stdin into a malloc'd buffer. */
static char *slurp_stdin(size_t *len)
{
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap);
    if (!buf)
        return NULL;
    for (;;) {
        if (n == cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(0, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            free(buf);
            return NULL;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    *len = n;
    return buf;
}

static int cmd_publish(int argc, char **argv)
{
    static const struct option opts[] = {
        {"channel", required_argument, 0, 'c'},
        {"event", required_argument, 0, 'e'},
        {"id", required_argument, 0, 'i'},
        REDIS_LONG_OPTS
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *channel = NULL, *event = NULL, *id = NULL;
    redis_opts_t ro = REDIS_OPTS_DEFAULT;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': channel = optarg; break;
        case 'e': event = optarg; break;
        case 'i': id = optarg; break;
        case 'h': fputs(publish_help, stdout); return 0;
        case OPT_REDIS: case OPT_STREAM_KEY: case OPT_MAXLEN:
        case OPT_MAX_AGE: case OPT_WAIT_REPLICAS:
        case OPT_SENTINEL: case OPT_MASTER:
            if (redis_opt("publish ", c, &ro))
                return EXIT_USAGE;
            break;
        default: return usage_error("publish ", "bad option");
        }
    }
    int nargs = argc - optind, npath = ro.remote ? 0 : 1;
    if (nargs < npath || nargs > npath + 1)
        return usage_error("publish ", ro.remote ? "publish --redis takes at "
                           "most one DATA argument and no PATH"
                           : "publish takes PATH and at most one DATA "
                             "argument");
    if (!channel)
        return usage_error("publish ", "--channel is required");
    if (ro.remote && id)
        return usage_error("publish ", "--id cannot be used with --redis: "
                                       "Redis assigns the id");
    const char *path = ro.remote ? ro.remote : argv[optind];
    const char *data = nargs == npath + 1 ? argv[optind + npath] : "";
    size_t data_len = strlen(data);
    char *owned = NULL;
    if (nargs == npath + 1 && strcmp(data, "-") == 0) {
        owned = slurp_stdin(&data_len);
        if (!owned) {
            msg("cannot read the data from stdin: %s", strerror(errno));
            return EXIT_RUNTIME;
        }
        /* `echo x | sse-pub publish ... -` means "x", not "x" + empty line */
        if (data_len && owned[data_len - 1] == '\n')
            data_len--;
        if (data_len && owned[data_len - 1] == '\r')
            data_len--;
        data = owned;
    }

    int rc;
    if (ro.remote) {
        sse_bus_event_t rev = {
            .channel = channel, .channel_len = strlen(channel),
            .event = event, .event_len = event ? strlen(event) : 0,
            .data = data, .data_len = data_len};
        sse_bus_error_t rerr;
        sse_pub_redis_t *r;
        char rid[64] = "";
        memset(&rerr, 0, sizeof rerr);
        rc = sse_bus_event_check(NULL, &rev, &rerr);
        if (rc != SSE_BUS_OK)
            rc = bus_error(rc, &rerr, "event");
        else if ((rc = sse_pub_redis_open(ro.url, ro.sentinels, ro.master,
                                         ro.key, ro.maxlen,
                                         ro.max_age_s * 1000,
                                         (int)ro.wait_replicas, &r))
                 == 0) {
            rc = sse_pub_redis_add(r, &rev, 1, rid, sizeof rid);
            sse_pub_redis_close(r);
            if (rc == 0)
                printf("%s\n", rid);
        }
        free(owned);
        return rc;
    }
    sse_bus_t *bus;
    rc = open_bus(path, SSE_BUS_RDWR, &bus);
    if (rc) {
        free(owned);
        return rc;
    }
    sse_bus_event_t ev = {
        .channel = channel, .channel_len = strlen(channel),
        .event = event, .event_len = event ? strlen(event) : 0,
        .id = id, .id_len = id ? strlen(id) : 0,
        .data = data, .data_len = data_len};
    sse_bus_error_t err;
    memset(&err, 0, sizeof err);
    uint64_t seq = 0;
    rc = sse_bus_publish(bus, &ev, &seq, &err);
    if (rc != SSE_BUS_OK) {
        rc = bus_error(rc, &err, path);
    } else {
        if (id) {
            printf("%s\n", id);
        } else {
            sse_bus_info_t info;
            char buf[SSE_BUS_NATIVE_ID_MAX + 1];
            sse_bus_info(bus, &info);
            sse_bus_format_id(info.epoch, seq, buf);
            printf("%s\n", buf);
        }
        if (fflush(stdout) != 0) {
            msg("cannot print the event id: %s (the event was published)",
                strerror(errno));
            rc = EXIT_RUNTIME;
        }
    }
    sse_bus_close(bus);
    free(owned);
    return rc;
}

/* ---------------------------------------------------------------- stream */

static const char stream_help[] =
    "usage: sse-pub stream PATH [--channel C] [--event T]"
    " [--format lines|ndjson]\n"
    "       sse-pub stream --redis URL [--stream-key K]\n"
    "                      [--maxlen N | --max-age SECONDS] ...\n"
    "       sse-pub stream --sentinel HOST:PORT[,...] --master NAME ...\n"
    "Publish one event per stdin line until end of input (to a Redis\n"
    "stream with --redis: see `sse-pub publish --help`; ndjson ids are\n"
    "then ignored, Redis assigns them).\n"
    "  lines   the line is the data (a trailing CR is dropped); --channel\n"
    "          is required, --event optional\n"
    "  ndjson  {\"channel\":\"c\",\"event\":\"t\",\"id\":\"x\",\"data\":\"...\"}"
    " per line;\n"
    "          channel/event default to --channel/--event; blank lines are\n"
    "          ignored; an invalid line is reported with its number and\n"
    "          skipped (exit code 3 at the end)\n";

/* A strict parser for one flat JSON object whose values are strings.
 * Strings are decoded in place (a decoded string is never longer than its
 * escaped form), so the event points into the input buffer. Returns NULL on
 * success or a static description of the first problem. */
typedef struct {
    char *p, *end;
} json_in_t;

static void json_ws(json_in_t *j)
{
    while (j->p < j->end &&
           (*j->p == ' ' || *j->p == '\t' || *j->p == '\r' || *j->p == '\n'))
        j->p++;
}

static int hex4(const char *s, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

static char *utf8_put(char *o, unsigned cp)
{
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xC0 | (cp >> 6));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xE0 | (cp >> 12));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *o++ = (char)(0xF0 | (cp >> 18));
        *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    }
    return o;
}

/* At an opening quote: decode the string in place. */
static const char *json_string(json_in_t *j, const char **s, size_t *len)
{
    if (j->p >= j->end || *j->p != '"')
        return "expected a string";
    char *in = ++j->p, *out = in;
    const char *start = in;
    for (;;) {
        if (in >= j->end)
            return "unterminated string";
        unsigned char ch = (unsigned char)*in;
        if (ch == '"')
            break;
        if (ch < 0x20)
            return "control character in a string (escape it)";
        if (ch != '\\') {
            *out++ = *in++;
            continue;
        }
        if (in + 1 >= j->end)
            return "unterminated escape";
        char e = in[1];
        in += 2;
        switch (e) {
        case '"': *out++ = '"'; break;
        case '\\': *out++ = '\\'; break;
        case '/': *out++ = '/'; break;
        case 'b': *out++ = '\b'; break;
        case 'f': *out++ = '\f'; break;
        case 'n': *out++ = '\n'; break;
        case 'r': *out++ = '\r'; break;
        case 't': *out++ = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (j->end - in < 4 || hex4(in, &cp))
                return "bad \\u escape (needs 4 hex digits)";
            in += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return "lone low surrogate in \\u escape";
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (j->end - in < 6 || in[0] != '\\' || in[1] != 'u' ||
                    hex4(in + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                    return "high surrogate not followed by a low surrogate";
                in += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            out = utf8_put(out, cp);
            break;
        }
        default:
            return "unknown escape in a string";
        }
    }
    j->p = in + 1;
    *s = start;
    *len = (size_t)(out - start);
    return NULL;
}

typedef struct {
    const char *v[4];
    size_t len[4];
} ndjson_fields_t;

static const char *const ndjson_keys[4] = {"channel", "event", "id", "data"};

static const char *ndjson_parse(char *line, size_t n, ndjson_fields_t *f)
{
    json_in_t j = {line, line + n};
    memset(f, 0, sizeof *f);
    json_ws(&j);
    if (j.p >= j.end || *j.p != '{')
        return "expected a JSON object";
    j.p++;
    json_ws(&j);
    if (j.p < j.end && *j.p == '}') {
        j.p++;
    } else {
        for (;;) {
            const char *k, *v, *err;
            size_t klen, vlen;
            json_ws(&j);
            if ((err = json_string(&j, &k, &klen)))
                return err[0] == 'e' ? "expected a key string" : err;
            json_ws(&j);
            if (j.p >= j.end || *j.p != ':')
                return "expected ':' after a key";
            j.p++;
            json_ws(&j);
            if ((err = json_string(&j, &v, &vlen)))
                return err[0] == 'e' ? "values must be strings" : err;
            int slot = -1;
            for (int i = 0; i < 4; i++)
                if (klen == strlen(ndjson_keys[i]) &&
                    memcmp(k, ndjson_keys[i], klen) == 0)
                    slot = i;
            if (slot < 0)
                return "unknown key (allowed: channel, event, id, data)";
            if (f->v[slot])
                return "duplicate key";
            f->v[slot] = v;
            f->len[slot] = vlen;
            json_ws(&j);
            if (j.p < j.end && *j.p == ',') {
                j.p++;
                continue;
            }
            if (j.p < j.end && *j.p == '}') {
                j.p++;
                break;
            }
            return "expected ',' or '}'";
        }
    }
    json_ws(&j);
    if (j.p != j.end)
        return "trailing characters after the object";
    return NULL;
}

typedef struct {
    sse_bus_t *bus;
    sse_pub_redis_t *redis; /* --redis: events go there, bus is NULL */
    const char *path;
    sse_bus_event_t evs[STREAM_BATCH_MAX];
    size_t n, bytes;
    uint64_t published;
    int failed; /* runtime failure: stop */
} batch_t;

static int batch_flush(batch_t *b)
{
    if (b->n == 0)
        return 0;
    sse_bus_error_t err;
    memset(&err, 0, sizeof err);
    uint64_t first;
    size_t bad = 0;
    if (b->redis) {
        if (sse_pub_redis_add(b->redis, b->evs, b->n, NULL, 0)) {
            b->failed = 1;
            return -1;
        }
    } else {
        int rc = sse_bus_publish_batch(b->bus, b->evs, b->n, &first, &bad,
                                       &err);
        if (rc != SSE_BUS_OK) {
            /* every event was checked before it joined the batch, so this
             * is a runtime failure (or the bus changed under us) */
            bus_error(rc, &err, b->path);
            b->failed = 1;
            return -1;
        }
    }
    b->published += b->n;
    b->n = 0;
    b->bytes = 0;
    return 0;
}

static int stdin_ready(void)
{
    struct pollfd p = {.fd = 0, .events = POLLIN};
    return poll(&p, 1, 0) > 0;
}

static int cmd_stream(int argc, char **argv)
{
    static const struct option opts[] = {
        {"channel", required_argument, 0, 'c'},
        {"event", required_argument, 0, 'e'},
        {"format", required_argument, 0, 'F'},
        REDIS_LONG_OPTS
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *channel = NULL, *event = NULL;
    redis_opts_t ro = REDIS_OPTS_DEFAULT;
    int ndjson = 0, c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': channel = optarg; break;
        case 'e': event = optarg; break;
        case 'F':
            if (strcmp(optarg, "lines") == 0) ndjson = 0;
            else if (strcmp(optarg, "ndjson") == 0) ndjson = 1;
            else return usage_error("stream ", "--format must be lines or "
                                               "ndjson, not '%s'", optarg);
            break;
        case 'h': fputs(stream_help, stdout); return 0;
        case OPT_REDIS: case OPT_STREAM_KEY: case OPT_MAXLEN:
        case OPT_MAX_AGE: case OPT_WAIT_REPLICAS:
        case OPT_SENTINEL: case OPT_MASTER:
            if (redis_opt("stream ", c, &ro))
                return EXIT_USAGE;
            break;
        default: return usage_error("stream ", "bad option");
        }
    }
    if (optind != argc - (ro.remote ? 0 : 1))
        return usage_error("stream ", ro.remote ? "stream --redis takes no PATH"
                                             : "stream takes exactly one "
                                               "PATH");
    if (!ndjson && !channel)
        return usage_error("stream ", "--channel is required with "
                                      "--format lines");
    static batch_t b; /* large (evs); one per process */
    int rc;
    if (ro.remote) {
        b.path = ro.remote;
        if ((rc = sse_pub_redis_open(ro.url, ro.sentinels, ro.master, ro.key,
                                     ro.maxlen, ro.max_age_s * 1000,
                                     (int)ro.wait_replicas, &b.redis)))
            return rc;
    } else {
        b.path = argv[optind];
        if ((rc = open_bus(b.path, SSE_BUS_RDWR, &b.bus)))
            return rc;
    }

    size_t cap = STREAM_BUF_INIT;
    char *buf = malloc(cap);
    if (!buf) {
        msg("out of memory for the input buffer: free some memory");
        if (b.bus)
            sse_bus_close(b.bus);
        sse_pub_redis_close(b.redis);
        return EXIT_RUNTIME;
    }
    size_t start = 0, fill = 0; /* unparsed bytes are buf[start, fill) */
    uint64_t lineno = 0, rejected = 0;
    int eof = 0, discarding = 0;
    const size_t chan_len = channel ? strlen(channel) : 0;
    const size_t event_len = event ? strlen(event) : 0;

    while (!b.failed) {
        char *nl = fill > start ? memchr(buf + start, '\n', fill - start)
                                : NULL;
        if (!nl && eof && fill > start)
            nl = buf + fill; /* last line without a newline */
        if (!nl) {
            if (eof)
                break;
            /* No complete line. Publish what we have if nothing more is
             * ready right now, so a slow producer's events go out at once. */
            if (b.n && !stdin_ready() && batch_flush(&b))
                break;
            if (fill == cap) {
                /* need room: the batch points into buf, publish it first */
                if (batch_flush(&b))
                    break;
                if (start > 0) {
                    memmove(buf, buf + start, fill - start);
                    fill -= start;
                    start = 0;
                } else if (cap < STREAM_LINE_MAX) {
                    char *nb = realloc(buf, cap * 2);
                    if (!nb) {
                        msg("out of memory for a %zu-byte line: "
                            "split the input", cap);
                        b.failed = 1;
                        break;
                    }
                    buf = nb;
                    cap *= 2;
                } else {
                    /* a line longer than STREAM_LINE_MAX: drop it */
                    if (!discarding) {
                        msg("line %" PRIu64 ": longer than %u bytes: "
                            "skipped", lineno + 1, STREAM_LINE_MAX);
                        rejected++;
                    }
                    discarding = 1;
                    start = fill = 0;
                }
            }
            ssize_t r = read(0, buf + fill, cap - fill);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0) {
                msg("cannot read stdin: %s", strerror(errno));
                b.failed = 1;
                break;
            }
            if (r == 0)
                eof = 1;
            fill += (size_t)r;
            continue;
        }

        char *line = buf + start;
        size_t len = (size_t)(nl - line);
        start = (size_t)(nl - buf) + (nl < buf + fill ? 1 : 0);
        lineno++;
        if (discarding) { /* tail of an over-long line */
            discarding = 0;
            continue;
        }
        if (len && line[len - 1] == '\r')
            len--;

        sse_bus_event_t ev = {
            .channel = channel, .channel_len = chan_len,
            .event = event, .event_len = event_len,
            .data = line, .data_len = len};
        if (ndjson) {
            size_t k = 0;
            while (k < len && (line[k] == ' ' || line[k] == '\t'))
                k++;
            if (k == len)
                continue; /* blank line */
            ndjson_fields_t f;
            const char *why = ndjson_parse(line, len, &f);
            if (!why && !f.v[0] && !channel)
                why = "no \"channel\" (and no --channel default)";
            if (why) {
                msg("line %" PRIu64 ": %s: fix the line; it was skipped",
                    lineno, why);
                rejected++;
                continue;
            }
            if (f.v[0]) { ev.channel = f.v[0]; ev.channel_len = f.len[0]; }
            if (f.v[1]) { ev.event = f.v[1]; ev.event_len = f.len[1]; }
            if (f.v[2] && !b.redis) { ev.id = f.v[2]; ev.id_len = f.len[2]; }
            ev.data = f.v[3] ? f.v[3] : "";
            ev.data_len = f.v[3] ? f.len[3] : 0;
        }
        sse_bus_error_t err;
        memset(&err, 0, sizeof err);
        int crc = sse_bus_event_check(b.bus, &ev, &err);
        if (crc != SSE_BUS_OK) {
            msg("line %" PRIu64 ": %s: it was skipped", lineno,
                err.msg[0] ? err.msg : sse_bus_strerror(crc));
            if (exit_code_for(crc) != EXIT_REJECTED) {
                b.failed = 1;
                break;
            }
            rejected++;
            continue;
        }
        b.evs[b.n++] = ev;
        b.bytes += ev.data_len;
        if ((b.n == STREAM_BATCH_MAX || b.bytes >= STREAM_BATCH_BYTES) &&
            batch_flush(&b))
            break;
    }
    if (!b.failed)
        batch_flush(&b);
    free(buf);
    if (b.bus)
        sse_bus_close(b.bus);
    sse_pub_redis_close(b.redis);
    if (b.failed)
        return EXIT_RUNTIME;
    if (rejected) {
        msg("%" PRIu64 " line(s) rejected, %" PRIu64 " event(s) published: "
            "fix the lines reported above", rejected, b.published);
        return EXIT_REJECTED;
    }
    return 0;
}

/* ------------------------------------------------------------------ info */

static const char info_help[] =
    "usage: sse-pub info PATH [--json]\n"
    "Print the bus header: format, size, fill, counters; and, if an\n"
    "sse-relay serves the bus (PATH.relay-status exists), the relay's\n"
    "state: connected or not, cursor, lag, gaps, reconnects, and how old\n"
    "its status is (\"stale\" when older than the relay promises to\n"
    "rewrite it: the relay may be dead).\n";

/* A string for JSON output (relay status strings are printable ASCII,
 * validated by the library; quotes and backslashes still need escaping). */
static void json_put_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20) printf("\\u%04x", *s);
        else putchar(*s);
    }
    putchar('"');
}

/* The relay part of `info` (sse_bus_relay_status_read). */
static void info_relay(const char *path, int json)
{
    sse_bus_relay_status_t st;
    sse_bus_error_t err;
    memset(&err, 0, sizeof err);
    int rc = sse_bus_relay_status_read(path, &st, &err);
    if (json) {
        if (rc != SSE_BUS_OK) {
            printf(",\"relay\":null");
            if (rc != SSE_BUS_ENOENT) {
                printf(",\"relay_error\":");
                json_put_str(err.msg);
            }
            return;
        }
        printf(",\"relay\":{\"connected\":%s,\"stale\":%s,\"age_s\":%"
               PRId64 ",\"stale_after_ms\":%" PRIu64 ",\"pid\":%ld,"
               "\"redis\":", st.connected ? "true" : "false",
               st.stale ? "true" : "false", st.age_s, st.stale_after_ms,
               st.pid);
        json_put_str(st.redis);
        printf(",\"master\":");
        json_put_str(st.master);
        printf(",\"stream_key\":");
        json_put_str(st.stream_key);
        printf(",\"cursor\":");
        json_put_str(st.cursor);
        printf(",\"redis_last_id\":");
        json_put_str(st.redis_last_id);
        if (st.lag_events_known)
            printf(",\"lag_events\":%" PRIu64, st.lag_events);
        else
            printf(",\"lag_events\":null");
        printf(",\"lag_ms\":%" PRIu64 ",\"events_relayed\":%" PRIu64
               ",\"events_skipped\":%" PRIu64 ",\"gaps\":%" PRIu64
               ",\"reconnects\":%" PRIu64 ",\"id_repairs\":%" PRIu64
               ",\"master_changes\":%" PRIu64 ",\"down_since\":%" PRIu64
               ",\"updated\":%" PRIu64 "}", st.lag_ms, st.relayed,
               st.skipped, st.gaps, st.reconnects, st.id_repairs,
               st.master_changes, st.down_since, st.updated);
        return;
    }
    if (rc == SSE_BUS_ENOENT)
        return;
    if (rc != SSE_BUS_OK) {
        printf("relay        status ignored: %s\n", err.msg);
        return;
    }
    char lag[48] = "unknown (not yet at the stream's end)";
    if (st.lag_events_known)
        snprintf(lag, sizeof lag, "%" PRIu64 " events", st.lag_events);
    if (st.stale)
        printf("relay        STALE: status written %" PRId64 " s ago (the "
               "relay rewrites it within %" PRIu64 " s): sse-relay pid %ld "
               "may be dead; what it said last:\n", st.age_s,
               (st.stale_after_ms + 999) / 1000, st.pid);
    if (st.connected)
        printf("relay        connected to %s, stream '%s' (pid %ld, status "
               "%" PRId64 " s old)\n", st.master[0] ? st.master : st.redis,
               st.stream_key, st.pid, st.age_s);
    else
        printf("relay        NOT connected to Redis (%s) since %" PRIu64
               " (unix s); the bus keeps serving what it holds (pid %ld, "
               "status %" PRId64 " s old)\n", st.redis, st.down_since,
               st.pid, st.age_s);
    printf("relay cursor %s (Redis last id %s)\n",
           st.cursor[0] ? st.cursor : "(none)",
           st.redis_last_id[0] ? st.redis_last_id : "(unknown)");
    printf("relay lag    %s, %" PRIu64 " ms\n", lag, st.lag_ms);
    printf("relay counts %" PRIu64 " relayed, %" PRIu64 " skipped, %" PRIu64
           " gaps written, %" PRIu64 " reconnects, %" PRIu64 " id repairs, %"
           PRIu64 " master changes\n", st.relayed, st.skipped, st.gaps,
           st.reconnects, st.id_repairs, st.master_changes);
}

static void fmt_time(uint64_t ns, char *out, size_t n)
{
    time_t t = (time_t)(ns / 1000000000ull);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int cmd_info(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int json = 0, c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'j': json = 1; break;
        case 'h': fputs(info_help, stdout); return 0;
        default: return usage_error("info ", "bad option");
        }
    }
    if (optind != argc - 1)
        return usage_error("info ", "info takes exactly one PATH");
    const char *path = argv[optind];
    sse_bus_t *bus;
    int rc = open_bus(path, SSE_BUS_RDONLY, &bus);
    if (rc)
        return rc;
    sse_bus_info_t in;
    sse_bus_info(bus, &in);
    /* the library leaves tail_seq at 0 until the ring first wraps; nothing
     * has been dropped then, so the oldest event held is the first one */
    if (in.tail_seq == 0 && in.head_seq > 0 && in.tail_pos == 0)
        in.tail_seq = 1;
    uint64_t used = in.head_pos - in.tail_pos;
    double fill = in.capacity ? 100.0 * (double)used / (double)in.capacity
                              : 0.0;
    uint64_t events = in.head_seq && in.tail_seq && in.head_seq >= in.tail_seq
                          ? in.head_seq - in.tail_seq + 1 : 0;
    char head_id[SSE_BUS_NATIVE_ID_MAX + 1] = "", tail_id[sizeof head_id] = "";
    if (in.head_seq)
        sse_bus_format_id(in.epoch, in.head_seq, head_id);
    if (in.tail_seq)
        sse_bus_format_id(in.epoch, in.tail_seq, tail_id);
    char created[64];
    fmt_time(in.created_ns, created, sizeof created);
    int stale = sse_bus_is_stale(bus);
    if (json) {
        printf("{\"path\":\"");
        for (const char *p = path; *p; p++) {
            if (*p == '"' || *p == '\\') printf("\\%c", *p);
            else if ((unsigned char)*p < 0x20) printf("\\u%04x", *p);
            else putchar(*p);
        }
        printf("\",\"version\":%" PRIu32 ",\"epoch\":\"%08" PRIx32 "\","
               "\"capacity\":%" PRIu64 ",\"max_record\":%" PRIu32 ","
               "\"retired\":%s,\"stale\":%s,\"created_ns\":%" PRIu64 ","
               "\"head_seq\":%" PRIu64 ",\"tail_seq\":%" PRIu64 ","
               "\"head_id\":\"%s\",\"tail_id\":\"%s\",\"events_held\":%"
               PRIu64 ",\"head_pos\":%" PRIu64 ",\"tail_pos\":%" PRIu64 ","
               "\"bytes_used\":%" PRIu64 ",\"fill_percent\":%.2f,"
               "\"bytes_total\":%" PRIu64 ",\"recoveries\":%" PRIu64 ","
               "\"waiters\":%" PRIu32 ",\"wake_ok\":%s,"
               "\"index_slots\":%" PRIu64 ","
               "\"file_size\":%" PRIu64,
               in.version, in.epoch, in.capacity, in.max_record,
               in.retired ? "true" : "false", stale ? "true" : "false",
               in.created_ns, in.head_seq, in.tail_seq, head_id, tail_id,
               events, in.head_pos, in.tail_pos, used, fill, in.bytes_total,
               in.recoveries, in.waiters, in.wake_ok ? "true" : "false",
               in.index_slots, in.file_size);
        info_relay(path, 1);
        printf("}\n");
    } else {
        printf("bus          %s%s\n", path,
               in.retired ? " (retired: replaced by a newer bus)"
               : stale    ? " (stale: the file at this path is another bus)"
                          : "");
        printf("version      %" PRIu32 "\n", in.version);
        printf("epoch        %08" PRIx32 "\n", in.epoch);
        printf("created      %s (%" PRIu64 " ns)\n", created, in.created_ns);
        printf("capacity     %" PRIu64 " bytes\n", in.capacity);
        printf("max record   %" PRIu32 " bytes\n", in.max_record);
        printf("file size    %" PRIu64 " bytes\n", in.file_size);
        printf("index slots  %" PRIu64 "\n", in.index_slots);
        printf("fill         %.1f%% (%" PRIu64 " of %" PRIu64 " bytes)\n",
               fill, used, in.capacity);
        printf("events held  %" PRIu64 "\n", events);
        printf("head seq     %" PRIu64 "%s%s\n", in.head_seq,
               head_id[0] ? "  id " : "", head_id);
        printf("tail seq     %" PRIu64 "%s%s\n", in.tail_seq,
               tail_id[0] ? "  id " : "", tail_id);
        printf("head pos     %" PRIu64 "\n", in.head_pos);
        printf("tail pos     %" PRIu64 "\n", in.tail_pos);
        printf("bytes total  %" PRIu64 "\n", in.bytes_total);
        printf("recoveries   %" PRIu64 "\n", in.recoveries);
        printf("waiters      %" PRIu32 "\n", in.waiters);
        printf("wake file    %s\n",
               in.wake_ok ? "yes (publishers wake only registered waiters)"
                          : "not usable here (publishers always wake; "
                            "readers poll)");
        info_relay(path, 0);
    }
    sse_bus_close(bus);
    if (fflush(stdout) != 0)
        return EXIT_RUNTIME;
    return 0;
}

/* ------------------------------------------------------------------ tail */

static const char tail_help[] =
    "usage: sse-pub tail PATH [--channel C ...] [--from ID | --oldest |"
    " --last N]\n"
    "                         [--count N] [--timeout SEC]\n"
    "Print events as a subscriber gets them (SSE frames).\n"
    "  --channel C   only channel C (repeatable; default all channels)\n"
    "  --from ID     resume after event ID (like Last-Event-ID)\n"
    "  --oldest      start at the oldest event the bus holds\n"
    "  --last N      start with the last N events (all channels count)\n"
    "                (default: only events published from now on)\n"
    "  --count N     exit after N events\n"
    "  --timeout SEC exit after SEC seconds without an event (exit code 1\n"
    "                if --count was given and not reached)\n";

static int cmd_tail(int argc, char **argv)
{
    static const struct option opts[] = {
        {"channel", required_argument, 0, 'c'},
        {"from", required_argument, 0, 'f'},
        {"oldest", no_argument, 0, 'o'},
        {"last", required_argument, 0, 'l'},
        {"count", required_argument, 0, 'n'},
        {"timeout", required_argument, 0, 't'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    static sse_bus_filter_t filter;
    static unsigned char filter_space[SSE_BUS_FILTER_SPACE_MAX];
    sse_bus_filter_init(&filter, filter_space, sizeof(filter_space));
    const char *from = NULL;
    int start_mode = 0; /* 0 newest, 1 oldest, 2 last, 3 from */
    uint64_t last_n = 0, count = 0;
    double timeout = -1;
    int c, starts = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': {
            int rc = sse_bus_filter_add(&filter, optarg, strlen(optarg));
            if (rc == SSE_BUS_ETOOBIG)
                return usage_error("tail ", "at most %d --channel options",
                                   SSE_BUS_FILTER_MAX);
            if (rc != SSE_BUS_OK) {
                msg("--channel '%s' is not a valid channel name (empty, too "
                    "long or has CR/LF/NUL): fix the name", optarg);
                return EXIT_REJECTED;
            }
            break;
        }
        case 'f': from = optarg; start_mode = 3; starts++; break;
        case 'o': start_mode = 1; starts++; break;
        case 'l':
            if (parse_u64(optarg, &last_n))
                return usage_error("tail ", "--last needs a number, not "
                                            "'%s'", optarg);
            start_mode = 2;
            starts++;
            break;
        case 'n':
            if (parse_u64(optarg, &count) || count == 0)
                return usage_error("tail ", "--count needs a positive "
                                            "number, not '%s'", optarg);
            break;
        case 't':
            if (parse_seconds(optarg, &timeout))
                return usage_error("tail ", "--timeout needs seconds, not "
                                            "'%s'", optarg);
            break;
        case 'h': fputs(tail_help, stdout); return 0;
        default: return usage_error("tail ", "bad option");
        }
    }
    if (optind != argc - 1)
        return usage_error("tail ", "tail takes exactly one PATH");
    if (starts > 1)
        return usage_error("tail ", "use only one of --from, --oldest, "
                                    "--last");
    const char *path = argv[optind];
    sse_bus_t *bus;
    int rc = open_bus(path, SSE_BUS_RDONLY, &bus);
    if (rc)
        return rc;
    const sse_bus_filter_t *fp = filter.n ? &filter : NULL;

    sse_bus_cursor_t cur;
    switch (start_mode) {
    case 1: sse_bus_cursor_oldest(&cur, bus); break;
    case 2: sse_bus_cursor_last(&cur, bus, last_n); break;
    case 3: {
        uint64_t missed = 0;
        sse_bus_resume_t r =
            sse_bus_cursor_resume(&cur, bus, from, strlen(from), &missed);
        if (r == SSE_BUS_RESUME_STALE)
            msg("id %s is older than the ring: %" PRIu64 " event(s) missed; "
                "starting at the oldest event", from, missed);
        else if (r == SSE_BUS_RESUME_EPOCH)
            msg("id %s is from an earlier bus (the bus was reset): starting "
                "at the oldest event", from);
        else if (r == SSE_BUS_RESUME_FUTURE)
            msg("id %s is newer than the newest event: starting with new "
                "events", from);
        else if (r == SSE_BUS_RESUME_UNKNOWN)
            msg("id %s is not in the bus: starting at the oldest event",
                from);
        break;
    }
    default: sse_bus_cursor_newest(&cur, bus); break;
    }

    sse_bus_info_t info;
    sse_bus_info(bus, &info);
    size_t cap = info.max_record ? info.max_record : 65536;
    char *buf = malloc(cap);
    if (!buf) {
        msg("out of memory for a %zu-byte frame buffer", cap);
        sse_bus_close(bus);
        return EXIT_RUNTIME;
    }
    uint64_t seen = 0;
    uint64_t idle_since = mono_ns();
    int result = 0;
    for (;;) {
        sse_bus_record_t rec;
        rc = sse_bus_next(&cur, fp, buf, cap, &rec, 0);
        if (rc == SSE_BUS_OK) {
            fwrite(rec.frame, 1, rec.frame_len, stdout);
            idle_since = mono_ns();
            if (count && ++seen >= count)
                break;
            continue;
        }
        if (rc == SSE_BUS_LAPPED) {
            printf(": missed %" PRIu64 " events\n\n", cur.lost);
            continue;
        }
        if (rc == SSE_BUS_ENOBUFS) {
            size_t want = rec.frame_len > cap ? rec.frame_len : cap * 2;
            char *nb = realloc(buf, want);
            if (!nb) {
                msg("out of memory for a %zu-byte frame", want);
                result = EXIT_RUNTIME;
                break;
            }
            buf = nb;
            cap = want;
            continue;
        }
        if (rc == SSE_BUS_EFORMAT) {
            msg("a record in %s is corrupt; skipped to the newest event: "
                "check who writes to the bus", path);
            continue;
        }
        if (rc == SSE_BUS_ERETIRED) {
            /* replaced by `create --force`: follow the new bus from its
             * first event, as the module does */
            fflush(stdout);
            sse_bus_t *nbus;
            sse_bus_error_t err;
            memset(&err, 0, sizeof err);
            int orc = sse_bus_open(path, SSE_BUS_RDONLY, &nbus, &err);
            if (orc != SSE_BUS_OK) {
                result = bus_error(orc, &err, path);
                break;
            }
            msg("%s was replaced by a new bus: following it from its oldest "
                "event", path);
            sse_bus_close(bus);
            bus = nbus;
            sse_bus_cursor_oldest(&cur, bus);
            continue;
        }
        if (rc != SSE_BUS_EMPTY) {
            msg("reading %s failed: %s: check the bus with `sse-pub info`",
                path, sse_bus_strerror(rc));
            result = EXIT_RUNTIME;
            break;
        }
        /* EMPTY: nothing new; wait (bounded, so --timeout is honoured) */
        if (fflush(stdout) != 0) {
            result = EXIT_RUNTIME;
            break;
        }
        int wait_ms = 1000;
        if (timeout >= 0) {
            uint64_t now = mono_ns();
            uint64_t limit = (uint64_t)(timeout * 1e9);
            if (now - idle_since >= limit) {
                if (count && seen < count) {
                    msg("timed out after %g s idle with %" PRIu64 " of %"
                        PRIu64 " events", timeout, seen, count);
                    result = EXIT_RUNTIME;
                }
                break;
            }
            uint64_t left_ms = (limit - (now - idle_since) + 999999) / 1000000;
            if (left_ms < (uint64_t)wait_ms)
                wait_ms = (int)left_ms;
        }
        rc = sse_bus_wait(bus, cur.pos, wait_ms);
        if (rc < 0) {
            msg("waiting on %s failed: %s", path, sse_bus_strerror(rc));
            result = EXIT_RUNTIME;
            break;
        }
        if (rc == SSE_BUS_TIMEOUT && sse_bus_is_stale(bus)) {
            /* the path now holds another bus without the old being marked
             * retired (e.g. deleted and recreated): say so and move on */
            sse_bus_t *nbus;
            sse_bus_error_t err;
            memset(&err, 0, sizeof err);
            if (sse_bus_open(path, SSE_BUS_RDONLY, &nbus, &err) ==
                SSE_BUS_OK) {
                msg("%s is now another bus: following it from its oldest "
                    "event", path);
                sse_bus_close(bus);
                bus = nbus;
                sse_bus_cursor_oldest(&cur, bus);
            }
        }
    }
    if (fflush(stdout) != 0 && result == 0)
        result = EXIT_RUNTIME;
    free(buf);
    sse_bus_close(bus);
    return result;
}

/* ------------------------------------------------------------------ main */

/* test/fuzz/fuzz_ndjson.c includes this file with SSE_PUB_NO_MAIN defined
 * to reach the static NDJSON parser; sse-pub itself is built without it. */
#ifndef SSE_PUB_NO_MAIN
static const char main_help[] =
    "usage: sse-pub COMMAND [ARGS]   (sse-pub COMMAND --help for details)\n"
    "  create PATH [--capacity SIZE] [--max-record SIZE] [--mode 0640]\n"
    "              [--owner USER] [--group GROUP] [--force]\n"
    "  publish PATH --channel C [--event T] [--id ID] [DATA | -]\n"
    "  stream PATH [--channel C] [--event T] [--format lines|ndjson]\n"
    "  publish|stream --redis URL [--stream-key K]\n"
    "              [--maxlen N | --max-age SECONDS] ...\n"
    "  publish|stream --sentinel HOST:PORT[,...] --master NAME ...\n"
    "              (to a Redis stream; sse-relay feeds each host's bus)\n"
    "  info PATH [--json]\n"
    "  tail PATH [--channel C ...] [--from ID | --oldest | --last N]\n"
    "            [--count N] [--timeout SEC]\n"
    "Exit codes: 0 ok, 1 runtime error, 2 usage error, 3 event rejected.\n";

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage_error(NULL, "no command given");
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 ||
        strcmp(cmd, "help") == 0) {
        fputs(main_help, stdout);
        return 0;
    }
    /* each command parses argv[1..] with getopt: argv[0] becomes the cmd */
    argc--;
    argv++;
    optind = 1;
    if (strcmp(cmd, "create") == 0) return cmd_create(argc, argv);
    if (strcmp(cmd, "publish") == 0) return cmd_publish(argc, argv);
    if (strcmp(cmd, "stream") == 0) return cmd_stream(argc, argv);
    if (strcmp(cmd, "info") == 0) return cmd_info(argc, argv);
    if (strcmp(cmd, "tail") == 0) return cmd_tail(argc, argv);
    return usage_error(NULL, "unknown command '%s'", cmd);
}
#endif /* SSE_PUB_NO_MAIN */

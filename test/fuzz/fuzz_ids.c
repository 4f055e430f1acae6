/*
 * fuzz_ids.c - libFuzzer target: event ids, Last-Event-ID resume, channel
 * names and filters.
 *
 * The input is what a client controls: a Last-Event-ID header and channel
 * names from a URL. Properties:
 *   - sse_bus_parse_id accepts exactly the ids of the form "8 hex digits ':'
 *     1-20 decimal digits fitting 64 bits" (reference parser in
 *     fuzz_common.h) with the same values, and format/parse round-trips;
 *   - sse_bus_cursor_resume on a bus that has wrapped (so old ids are
 *     stale) gives the outcome the id calls for and leaves the cursor where
 *     it says: EXACT -> the next event read is seq + 1 (or nothing if seq is
 *     the newest), FUTURE -> nothing, STALE/EPOCH/UNKNOWN -> the oldest
 *     event, with `missed` counting exactly the events gone; a publisher id
 *     resumes after the newest record carrying it;
 *   - a channel name is accepted by the filter exactly when the framing
 *     rules accept it for publishing, an accepted name then matches, a
 *     filter holds at most SSE_BUS_FILTER_MAX names, and matching is exact.
 */
#include "fuzz_common.h"

#define NEVENTS 3000

static sse_bus_t *rw, *ro;
static sse_bus_info_t info;
static uint64_t oldest_seq, newest_seq;
static void index_pub_ids(void);

static void setup(void)
{
    char id[32], data[64];
    rw = fuzz_bus("ids.bus", 64u * 1024u, 0, SSE_BUS_RDWR);
    ro = fuzz_bus("ids.bus", 64u * 1024u, 0, SSE_BUS_RDONLY);
    for (int i = 1; i <= NEVENTS; i++) {
        sse_bus_event_t ev;
        sse_bus_error_t err;
        memset(&ev, 0, sizeof ev);
        ev.channel = i % 2 ? "a" : "news";
        ev.channel_len = strlen(ev.channel);
        snprintf(data, sizeof data, "event %d", i);
        ev.data = data;
        ev.data_len = strlen(data);
        if (i % 5 == 0) { /* publisher ids, some repeated */
            snprintf(id, sizeof id, "p-%d", i % 400);
            ev.id = id;
            ev.id_len = strlen(id);
        }
        fuzz_assert(sse_bus_publish(rw, &ev, NULL, &err) == SSE_BUS_OK);
    }
    sse_bus_info(ro, &info);
    newest_seq = info.head_seq;
    sse_bus_cursor_t c;
    sse_bus_record_t rec;
    char buf[256];
    sse_bus_cursor_oldest(&c, ro);
    fuzz_assert(sse_bus_next(&c, NULL, buf, sizeof buf, &rec, 0)
                == SSE_BUS_OK);
    oldest_seq = rec.seq;
    fuzz_assert(oldest_seq > 1 && newest_seq == NEVENTS); /* it wrapped */
    index_pub_ids();
}

/* seq of the next event the cursor reads, 0 if none. */
static uint64_t next_seq_read(sse_bus_cursor_t *c)
{
    sse_bus_record_t rec;
    int rc = sse_bus_next(c, NULL, NULL, 0, &rec, 0);
    fuzz_assert(rc == SSE_BUS_OK || rc == SSE_BUS_EMPTY);
    return rc == SSE_BUS_OK ? rec.seq : 0;
}

/* Newest seq carrying publisher id "p-K" (K < 400) still in the ring,
 * found once by reading the ring; only such ids were published. */
static uint64_t pub_newest[400];

static void index_pub_ids(void)
{
    sse_bus_cursor_t c;
    sse_bus_record_t rec;
    char buf[256];
    uint32_t ep;
    uint64_t q;
    sse_bus_cursor_oldest(&c, ro);
    while (sse_bus_next(&c, NULL, buf, sizeof buf, &rec, 0) == SSE_BUS_OK) {
        if (rec.id_len > 2 && memcmp(rec.id, "p-", 2) == 0
            && !ref_parse_id(rec.id, rec.id_len, &ep, &q))
            pub_newest[atoi(rec.id + 2)] = rec.seq;
    }
}

/* seq of the newest record whose publisher id is id, 0 if none. */
static uint64_t newest_with_pub_id(const char *id, size_t n)
{
    char num[8];
    if (n < 3 || n > 5 || memcmp(id, "p-", 2) != 0)
        return 0;
    memcpy(num, id + 2, n - 2);
    num[n - 2] = '\0';
    for (size_t i = 0; i < n - 2; i++)
        if (num[i] < '0' || num[i] > '9' || (i == 0 && num[0] == '0' && n > 3))
            return 0;
    int k = atoi(num);
    return k < 400 ? pub_newest[k] : 0;
}

static int looks_ordered(const char *s, size_t n)
{
    const char *dash = memchr(s, '-', n);
    if (!dash || dash == s || dash == s + n - 1)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s + i != dash && (s[i] < '0' || s[i] > '9'))
            return 0;
    return 1;
}

static void check_resume(const char *id, size_t n)
{
    sse_bus_cursor_t c;
    uint64_t missed = 12345, seq, got;
    uint32_t epoch;
    sse_bus_resume_t r = sse_bus_cursor_resume(&c, ro, id, n, &missed);
    got = next_seq_read(&c);
    if (ref_parse_id(id, n, &epoch, &seq)) {
        if (epoch != info.epoch) {
            fuzz_assert(r == SSE_BUS_RESUME_EPOCH && got == oldest_seq);
        } else if (seq > newest_seq) {
            fuzz_assert(r == SSE_BUS_RESUME_FUTURE && got == 0);
        } else if (seq + 1 >= oldest_seq) {
            fuzz_assert(r == SSE_BUS_RESUME_EXACT);
            fuzz_assert(got == (seq == newest_seq ? 0 : seq + 1));
        } else {
            fuzz_assert(r == SSE_BUS_RESUME_STALE && got == oldest_seq);
            fuzz_assert(missed == oldest_seq - (seq + 1));
        }
        if (r != SSE_BUS_RESUME_STALE)
            fuzz_assert(missed == 0);
        return;
    }
    if (looks_ordered(id, n)) /* ordered ids: no record here carries one */
        return;
    fuzz_assert(missed == 0);
    uint64_t carrier = newest_with_pub_id(id, n);
    if (carrier) {
        fuzz_assert(r == SSE_BUS_RESUME_EXACT);
        fuzz_assert(got == (carrier == newest_seq ? 0 : carrier + 1));
    } else {
        fuzz_assert(r == SSE_BUS_RESUME_UNKNOWN && got == oldest_seq);
    }
}

static void check_ids(const uint8_t *d, size_t n)
{
    const char *s = (const char *)d;
    uint32_t e1 = 0, e2 = 0;
    uint64_t q1 = 0, q2 = 0;
    char buf[SSE_BUS_NATIVE_ID_MAX + 1];
    int ok = sse_bus_parse_id(s, n, &e1, &q1) == SSE_BUS_OK;
    int ref = ref_parse_id(s, n, &e2, &q2);
    fuzz_assert(ok == ref);
    if (ok) {
        fuzz_assert(e1 == e2 && q1 == q2);
        size_t l = sse_bus_format_id(e1, q1, buf);
        fuzz_assert(l <= SSE_BUS_NATIVE_ID_MAX && buf[l] == '\0');
        fuzz_assert(sse_bus_parse_id(buf, l, &e2, &q2) == SSE_BUS_OK);
        fuzz_assert(e1 == e2 && q1 == q2);
    }
    if (n >= 12) { /* any epoch/seq formats and parses back */
        uint32_t e;
        uint64_t q;
        memcpy(&e, d, 4);
        memcpy(&q, d + 4, 8);
        size_t l = sse_bus_format_id(e, q, buf);
        fuzz_assert(l <= SSE_BUS_NATIVE_ID_MAX);
        fuzz_assert(sse_bus_parse_id(buf, l, &e2, &q2) == SSE_BUS_OK);
        fuzz_assert(e2 == e && q2 == q);
    }
}

static void check_channels(const uint8_t *d, size_t n)
{
    static sse_bus_filter_t f;
    static unsigned char fspace[SSE_BUS_FILTER_SPACE_MAX];
    const char *s = (const char *)d;
    size_t start = 0;
    unsigned added = 0;
    sse_bus_filter_init(&f, fspace, sizeof fspace);
    /* names separated by ',' (as in ?channel=a,b) */
    for (size_t i = 0; i <= n; i++) {
        if (i < n && s[i] != ',')
            continue;
        const char *name = s + start;
        size_t len = i - start;
        int was = f.n ? sse_bus_filter_match(&f, name, len) : 0;
        int rc = sse_bus_filter_add(&f, name, len);
        if (!ref_channel_ok(name, len)) {
            fuzz_assert(rc == SSE_BUS_ECHANNEL);
        } else if (was) {
            fuzz_assert(rc == SSE_BUS_OK);
        } else if (added == SSE_BUS_FILTER_MAX) {
            fuzz_assert(rc == SSE_BUS_ETOOBIG);
        } else {
            fuzz_assert(rc == SSE_BUS_OK);
            added++;
        }
        if (rc == SSE_BUS_OK)
            fuzz_assert(sse_bus_filter_match(&f, name, len));
        /* a strict prefix or extension of a name never matches by it */
        if (rc == SSE_BUS_OK && len > 1 && f.n == 1)
            fuzz_assert(!sse_bus_filter_match(&f, name, len - 1));
        /* publishing agrees on what a channel name is */
        sse_bus_event_t ev;
        sse_bus_error_t err;
        memset(&ev, 0, sizeof ev);
        ev.channel = name;
        ev.channel_len = len;
        fuzz_assert((sse_bus_event_check(ro, &ev, &err) == SSE_BUS_OK)
                    == ref_channel_ok(name, len));
        start = i + 1;
    }
    fuzz_assert(f.n == added && f.n <= SSE_BUS_FILTER_MAX);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!rw)
        setup();
    check_ids(data, size);
    check_resume((const char *)data, size);
    check_channels(data, size);
    return 0;
}

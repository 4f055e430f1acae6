/*
 * sse_bus_frame.c - SSE framing, validation, ids and channel filters.
 *
 * The frame stored in a record is exactly what goes on the wire:
 *
 *     id: <id>\n
 *     event: <type>\n          (only if a type was given)
 *     data: <line>\n           (one per line of data; "data:\n" if empty)
 *     \n
 *
 * Data is split on CR, LF and CRLF (the three line ends the SSE parser
 * accepts), so no byte of data can end a field early or start a new one:
 * framing is injection-proof by construction. Channel, type and id cannot
 * be split, so CR, LF and NUL are refused there (and, for channels, every
 * other control character, since channel names end up in URLs and logs).
 *
 * Bus-assigned ids are "<epoch as 8 hex digits>:<sequence>". Publisher ids
 * of that shape are refused so that the two kinds can never be confused.
 */
#include <string.h>

#include "sse_bus_format.h"

uint32_t sse_bus_channel_hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    while (n--) {
        h ^= (unsigned char)*s++;
        h *= 16777619u;
    }
    return h;
}

static int has_line_break(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
            return 1;
    return 0;
}

static int channel_ok(const char *s, size_t n)
{
    if (!s || n == 0 || n > SSE_BUS_CHANNEL_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 0;
    return 1;
}

size_t sse_bus_format_id(uint32_t epoch, uint64_t seq, char *buf)
{
    static const char hex[] = "0123456789abcdef";
    char digits[20];
    size_t n = 0, len;
    for (int i = 0; i < 8; i++)
        buf[i] = hex[(epoch >> (28 - 4 * i)) & 0xf];
    buf[8] = ':';
    do {
        digits[n++] = (char)('0' + seq % 10);
        seq /= 10;
    } while (seq);
    len = 9;
    while (n)
        buf[len++] = digits[--n];
    buf[len] = '\0';
    return len;
}

int sse_bus_parse_id(const char *s, size_t len, uint32_t *epoch, uint64_t *seq)
{
    uint32_t e = 0;
    uint64_t q = 0;
    size_t i;
    if (!s || len < 10 || len > SSE_BUS_NATIVE_ID_MAX || s[8] != ':')
        return SSE_BUS_EID;
    for (i = 0; i < 8; i++) {
        char c = s[i];
        unsigned v;
        if (c >= '0' && c <= '9') v = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v = (unsigned)(c - 'A' + 10);
        else return SSE_BUS_EID;
        e = e << 4 | v;
    }
    for (i = 9; i < len; i++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (d > 9 || q > (UINT64_MAX - d) / 10)
            return SSE_BUS_EID;
        q = q * 10 + d;
    }
    *epoch = e;
    *seq = q;
    return SSE_BUS_OK;
}

/* MS-SEQ, decimal, MS < 2^64, SEQ < 2^32 (see sse_bus.h: ordered ids). */
int sse_bus_parse_ordered_id(const char *s, size_t len, uint64_t *ms,
                             uint32_t *seq)
{
    uint64_t v[2] = {0, 0}, lim[2] = {UINT64_MAX, UINT32_MAX};
    size_t i = 0;
    if (!s || len < 3 || len > 31)
        return SSE_BUS_EID;
    for (int part = 0; part < 2; part++) {
        size_t start = i;
        for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
            unsigned d = (unsigned)(s[i] - '0');
            if (v[part] > (lim[part] - d) / 10)
                return SSE_BUS_EID;
            v[part] = v[part] * 10 + d;
        }
        if (i == start)
            return SSE_BUS_EID;
        if (part == 0 && (i == len || s[i++] != '-'))
            return SSE_BUS_EID;
    }
    if (i != len)
        return SSE_BUS_EID;
    *ms = v[0];
    *seq = (uint32_t)v[1];
    return SSE_BUS_OK;
}

/* Iterates over the lines of data, split on CR, LF and CRLF. memchr is
 * vectorised; the next CR and next LF are each searched for once. */
struct lines {
    const char *d, *end, *cr, *lf;
};

static void lines_init(struct lines *l, const char *d, size_t n)
{
    l->d = d;
    l->end = d + n;
    l->cr = memchr(d, '\r', n);
    l->lf = memchr(d, '\n', n);
}

/* Next line as [*s, *s + *len); 0 when there is none left. */
static int lines_next(struct lines *l, const char **s, size_t *len)
{
    const char *brk;
    if (!l->d)
        return 0;
    if (l->cr && l->cr < l->d)
        l->cr = memchr(l->d, '\r', (size_t)(l->end - l->d));
    if (l->lf && l->lf < l->d)
        l->lf = memchr(l->d, '\n', (size_t)(l->end - l->d));
    brk = !l->cr ? l->lf : !l->lf ? l->cr : l->cr < l->lf ? l->cr : l->lf;
    *s = l->d;
    if (!brk) { /* last line */
        *len = (size_t)(l->end - l->d);
        l->d = NULL;
        return 1;
    }
    *len = (size_t)(brk - l->d);
    l->d = brk + (brk[0] == '\r' && brk + 1 < l->end && brk[1] == '\n' ? 2 : 1);
    return 1;
}

/* Bytes of the "data:" lines for data (see the file comment). */
static size_t data_lines_len(const char *d, size_t n)
{
    struct lines l;
    const char *s;
    size_t len, total = 0;
    lines_init(&l, d, n);
    while (lines_next(&l, &s, &len))
        total += 5 + (len ? 1 + len : 0) + 1;
    return total;
}

static char *put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

static char *write_data_lines(char *p, const char *d, size_t n)
{
    struct lines l;
    const char *s;
    size_t len;
    lines_init(&l, d, n);
    while (lines_next(&l, &s, &len)) {
        p = put(p, "data:", 5);
        if (len) {
            *p++ = ' ';
            p = put(p, s, len);
        }
        *p++ = '\n';
    }
    return p;
}

/* Frame bytes for ev, given the length of its id text. */
size_t sse_bus__frame_len(const sse_bus_event_t *ev, size_t id_len)
{
    return 4 + id_len + 1 + (ev->event_len ? 7 + ev->event_len + 1 : 0)
           + data_lines_len(ev->data ? ev->data : "", ev->data_len) + 1;
}

/* Write the frame of ev with id text id into dst (sse_bus__frame_len
 * bytes). Returns the end. */
char *sse_bus__frame_write(char *dst, const sse_bus_event_t *ev,
                           const char *id, size_t id_len)
{
    char *p = put(dst, "id: ", 4);
    p = put(p, id, id_len);
    *p++ = '\n';
    if (ev->event_len) {
        p = put(p, "event: ", 7);
        p = put(p, ev->event, ev->event_len);
        *p++ = '\n';
    }
    p = write_data_lines(p, ev->data ? ev->data : "", ev->data_len);
    *p++ = '\n';
    return p;
}

/* Validate ev; on success *rec_len is its record size (aligned) assuming
 * a bus id when the event carries none. */
int sse_bus__event_validate(uint32_t max_record, const sse_bus_event_t *ev,
                            uint32_t *rec_len, sse_bus_error_t *err)
{
    uint32_t e;
    uint64_t q, len;
    if (!ev)
        return sse_bus__fail(err, SSE_BUS_EINVAL, 0, "no event given");
    if (!channel_ok(ev->channel, ev->channel_len))
        return sse_bus__fail(err, SSE_BUS_ECHANNEL, 0,
            "channel name must be 1 to %d bytes without control characters "
            "(CR, LF, NUL, ...)", SSE_BUS_CHANNEL_MAX);
    if (ev->event_len && (!ev->event || ev->event_len > SSE_BUS_EVENT_MAX
                          || has_line_break(ev->event, ev->event_len)))
        return sse_bus__fail(err, SSE_BUS_EEVENT, 0,
            "event type must be at most %d bytes without CR, LF or NUL",
            SSE_BUS_EVENT_MAX);
    if (ev->id_len) {
        if (!ev->id || ev->id_len > SSE_BUS_ID_MAX
            || has_line_break(ev->id, ev->id_len))
            return sse_bus__fail(err, SSE_BUS_EID, 0,
                "event id must be at most %d bytes without CR, LF or NUL",
                SSE_BUS_ID_MAX);
        if (sse_bus_parse_id(ev->id, ev->id_len, &e, &q) == SSE_BUS_OK)
            return sse_bus__fail(err, SSE_BUS_EID, 0,
                "event id '%.*s' has the form of a bus-assigned id "
                "(8 hex digits ':' number), which is reserved: choose another "
                "form or let the bus assign ids", (int)ev->id_len, ev->id);
    }
    if (ev->data_len && !ev->data)
        return sse_bus__fail(err, SSE_BUS_EINVAL, 0, "data pointer missing");
    if (ev->data_len > max_record)
        return sse_bus__fail(err, SSE_BUS_ETOOBIG, 0,
            "event of %zu bytes is larger than this bus's maximum record of "
            "%u bytes: split it, or recreate the bus with a larger "
            "--max-record", ev->data_len, max_record);
    len = sse_bus_align(SSE_BUS_REC_HDR + ev->channel_len
        + sse_bus__frame_len(ev, ev->id_len ? ev->id_len
                                            : SSE_BUS_NATIVE_ID_MAX));
    if (len > max_record)
        return sse_bus__fail(err, SSE_BUS_ETOOBIG, 0,
            "event needs %llu bytes once framed, more than this bus's "
            "maximum record of %u bytes: split it, or recreate the bus with a "
            "larger --max-record", (unsigned long long)len, max_record);
    *rec_len = (uint32_t)len;
    return SSE_BUS_OK;
}

int sse_bus_event_check(const sse_bus_t *b, const sse_bus_event_t *ev,
                        sse_bus_error_t *err)
{
    uint32_t len;
    return sse_bus__event_validate(b ? b->hdr->max_record
                                     : SSE_BUS_RECORD_DEFAULT, ev, &len, err);
}

/* Filter entries, packed in f->space: [len: 1 byte][hash: 4 bytes, host
 * order, unaligned][name: len bytes]. len <= SSE_BUS_CHANNEL_MAX fits a
 * byte; the hash is compared first, the name only on a hash hit. */
void sse_bus_filter_init(sse_bus_filter_t *f, void *space, size_t size)
{
    f->n = 0;
    f->used = 0;
    f->size = size > UINT32_MAX ? UINT32_MAX : (uint32_t)size;
    f->space = space;
}

int sse_bus_filter_add(sse_bus_filter_t *f, const char *name, size_t len)
{
    unsigned char *e;
    uint32_t h;
    if (!channel_ok(name, len))
        return SSE_BUS_ECHANNEL;
    if (sse_bus_filter_match(f, name, len))
        return SSE_BUS_OK;
    if (f->n == SSE_BUS_FILTER_MAX || !f->space
        || f->size - f->used < SSE_BUS_FILTER_ENTRY(len))
        return SSE_BUS_ETOOBIG;
    h = sse_bus_channel_hash(name, len);
    e = f->space + f->used;
    e[0] = (unsigned char)len;
    memcpy(e + 1, &h, 4);
    memcpy(e + 5, name, len);
    f->used += SSE_BUS_FILTER_ENTRY(len);
    f->n++;
    return SSE_BUS_OK;
}

/* Match by hash first; names only on a hash hit. */
int sse_bus__filter_match_hash(const sse_bus_filter_t *f, uint32_t hash,
                               const char *name, size_t len)
{
    const unsigned char *e = f->space, *end = e + f->used;
    while (e < end) {
        uint32_t h;
        size_t l = e[0];
        memcpy(&h, e + 1, 4);
        if (h == hash && l == len && memcmp(e + 5, name, len) == 0)
            return 1;
        e += 5 + l;
    }
    return 0;
}

int sse_bus_filter_match(const sse_bus_filter_t *f, const char *name,
                         size_t len)
{
    return sse_bus__filter_match_hash(f, sse_bus_channel_hash(name, len), name,
                                      len);
}

size_t sse_bus_filter_space(const sse_bus_filter_t *f)
{
    return f->used;
}

void sse_bus_filter_copy(sse_bus_filter_t *dst, const sse_bus_filter_t *src,
                         void *space)
{
    uint32_t used = src->used;
    unsigned n = src->n;
    if (used)
        memmove(space, src->space, used);
    dst->n = n;
    dst->used = used;
    dst->size = used;
    dst->space = space;
}

const char *sse_bus_filter_name(const sse_bus_filter_t *f, unsigned i,
                                size_t *len)
{
    const unsigned char *e = f->space;
    if (i >= f->n)
        return NULL;
    while (i--)
        e += 5 + e[0];
    *len = e[0];
    return (const char *)e + 5;
}

/*
 * fuzz_framer.c - libFuzzer target: the SSE framer is injection-proof and
 * loses nothing.
 *
 * Each input is one event (channel, event type, id, data) published into a
 * real bus and read back; the stored frame is then parsed by a reference
 * SSE parser written here from the HTML spec's "event stream
 * interpretation" (not from bus/sse_bus_frame.c), and must give back:
 *   - exactly one event, ending exactly at the frame's end;
 *   - only the fields id, event, data (no retry, no comment, no unknown
 *     field, so nothing was injected through any of the four inputs);
 *   - data equal to the input with CRLF and CR turned into LF;
 *   - the event type given (if any) and the id given, or the bus id
 *     "<epoch>:<seq>" when none was given.
 * An event is refused exactly when the framing rules say so (channel empty,
 * too long or with a control character; event type or id with CR, LF or
 * NUL or too long; an id of the bus's own form), with the matching code,
 * and sse_bus_event_check agrees with sse_bus_publish.
 *
 * Input: byte 0 % 140 = channel length, byte 1 % 70 = event type length,
 * byte 2 % 70 = id length (0: bus id), then those bytes, then the data.
 */
#include "fuzz_common.h"

struct ref_event {
    int dispatched, fields_other, has_id, has_event;
    size_t id_len, event_len, data_len;
    char id[128], event[128];
    char *data;
};

/* HTML "event stream interpretation" over a whole frame. Returns the
 * number of bytes consumed up to and including the first dispatch. */
static size_t ref_parse(const char *s, size_t n, struct ref_event *e,
                        size_t data_cap)
{
    size_t i = 0;
    memset(e, 0, offsetof(struct ref_event, data));
    while (i < n) {
        size_t start = i, end;
        while (i < n && s[i] != '\r' && s[i] != '\n')
            i++;
        if (i == n) /* a line without its end: not a complete line */
            return start;
        end = i;
        i += s[i] == '\r' && i + 1 < n && s[i + 1] == '\n' ? 2 : 1;
        if (end == start) { /* blank line: dispatch */
            e->dispatched = 1;
            if (e->data_len && e->data[e->data_len - 1] == '\n')
                e->data_len--;
            return i;
        }
        if (s[start] == ':') {
            e->fields_other++; /* comment */
            continue;
        }
        const char *colon = memchr(s + start, ':', end - start);
        size_t flen = colon ? (size_t)(colon - (s + start)) : end - start;
        const char *v = colon ? colon + 1 : s + end;
        if (v < s + end && *v == ' ')
            v++;
        size_t vlen = (size_t)(s + end - v);
        if (flen == 4 && memcmp(s + start, "data", 4) == 0) {
            fuzz_assert(e->data_len + vlen + 1 <= data_cap);
            memcpy(e->data + e->data_len, v, vlen);
            e->data_len += vlen;
            e->data[e->data_len++] = '\n';
        } else if (flen == 5 && memcmp(s + start, "event", 5) == 0) {
            fuzz_assert(vlen < sizeof e->event);
            memcpy(e->event, v, vlen);
            e->event_len = vlen;
            e->has_event++;
        } else if (flen == 2 && memcmp(s + start, "id", 2) == 0) {
            fuzz_assert(vlen < sizeof e->id);
            memcpy(e->id, v, vlen);
            e->id_len = vlen;
            e->has_id++;
        } else {
            e->fields_other++; /* retry or anything else */
        }
    }
    return i;
}

/* data with CRLF and CR as LF: what an SSE client must see. */
static size_t normalise(const char *d, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (d[i] == '\r') {
            out[o++] = '\n';
            if (i + 1 < n && d[i + 1] == '\n')
                i++;
        } else {
            out[o++] = d[i];
        }
    }
    return o;
}

static sse_bus_t *rw, *ro;
static sse_bus_info_t info;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char frame[1 << 18], parsed[1 << 18], want[1 << 16];
    sse_bus_event_t ev;
    sse_bus_error_t err;
    sse_bus_cursor_t c;
    sse_bus_record_t rec;
    struct ref_event pe;
    uint32_t ep;
    uint64_t seq = 0, q;
    int rc, valid, want_rc;

    if (!rw) {
        rw = fuzz_bus("f.bus", 1u << 20, 1u << 16, SSE_BUS_RDWR);
        ro = fuzz_bus("f.bus", 1u << 20, 1u << 16, SSE_BUS_RDONLY);
        sse_bus_info(ro, &info);
    }
    if (size < 3)
        return 0;
    size_t cl = data[0] % 140, el = data[1] % 70, il = data[2] % 70;
    data += 3;
    size -= 3;
    if (cl + el + il > size)
        return 0;
    memset(&ev, 0, sizeof ev);
    ev.channel = (const char *)data;
    ev.channel_len = cl;
    ev.event = (const char *)data + cl;
    ev.event_len = el;
    ev.id = (const char *)data + cl + el;
    ev.id_len = il;
    ev.data = (const char *)data + cl + el + il;
    ev.data_len = size - cl - el - il;

    /* what the framing rules say */
    if (!ref_channel_ok(ev.channel, cl))
        want_rc = SSE_BUS_ECHANNEL;
    else if (el && (el > SSE_BUS_EVENT_MAX || !ref_no_breaks(ev.event, el)))
        want_rc = SSE_BUS_EEVENT;
    else if (il && (il > SSE_BUS_ID_MAX || !ref_no_breaks(ev.id, il)
                    || ref_parse_id(ev.id, il, &ep, &q)))
        want_rc = SSE_BUS_EID;
    else
        want_rc = SSE_BUS_OK;
    valid = want_rc == SSE_BUS_OK;

    rc = sse_bus_event_check(ro, &ev, &err);
    fuzz_assert(rc == want_rc);
    sse_bus_cursor_newest(&c, ro);
    rc = sse_bus_publish(rw, &ev, &seq, &err);
    fuzz_assert(rc == want_rc);
    if (!valid) {
        fuzz_assert(err.msg[0] != '\0');
        return 0;
    }

    /* header-only read, then the frame */
    sse_bus_cursor_t c2 = c;
    memset(&rec, 0, sizeof rec);
    fuzz_assert(sse_bus_next(&c2, NULL, NULL, 0, &rec, 0) == SSE_BUS_OK);
    fuzz_assert(rec.seq == seq && !rec.frame);
    memset(&rec, 0, sizeof rec);
    rc = sse_bus_next(&c, NULL, frame, sizeof frame, &rec, 0);
    fuzz_assert(rc == SSE_BUS_OK);
    fuzz_assert(rec.seq == seq && c.pos == c2.pos);
    fuzz_assert(rec.channel_len == cl && memcmp(rec.channel, ev.channel, cl) == 0);
    fuzz_assert(sse_bus_next(&c, NULL, frame + rec.frame_len,
                             sizeof frame - rec.frame_len, &rec, 0)
                == SSE_BUS_EMPTY);

    pe.data = parsed;
    size_t used = ref_parse(frame, rec.frame_len, &pe, sizeof parsed);
    fuzz_assert(pe.dispatched && used == rec.frame_len);
    fuzz_assert(pe.fields_other == 0 && pe.has_id == 1);
    fuzz_assert(pe.has_event == (el ? 1 : 0));
    if (el)
        fuzz_assert(pe.event_len == el && memcmp(pe.event, ev.event, el) == 0);
    if (il) {
        fuzz_assert(pe.id_len == il && memcmp(pe.id, ev.id, il) == 0);
    } else {
        char bid[SSE_BUS_NATIVE_ID_MAX + 1];
        size_t bl = sse_bus_format_id(info.epoch, seq, bid);
        fuzz_assert(pe.id_len == bl && memcmp(pe.id, bid, bl) == 0);
    }
    fuzz_assert(rec.id_len == pe.id_len
                && memcmp(frame + 4, pe.id, pe.id_len) == 0);
    size_t wl = normalise(ev.data, ev.data_len, want);
    fuzz_assert(pe.data_len == wl && memcmp(pe.data, want, wl) == 0);
    return 0;
}

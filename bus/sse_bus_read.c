/*
 * sse_bus_read.c - cursors: following the bus without ever blocking or
 * trusting a publisher.
 *
 * Every read follows "copy, validate, then use": bytes are copied out of
 * the shared ring, an acquire fence is issued, and only if tail_pos has not
 * passed the record's position is the copy used (sse_bus_format.h explains
 * why that is enough). Anything that fails the check is discarded and the
 * cursor resynchronises at the tail, counting exactly how many events it
 * lost (the sequence of the first event it can still read minus the one it
 * expected). Nothing here writes to the bus: readers map it read-only. The
 * only thing a reader writes is the waiter count in the wake file.
 *
 * Sequences are found in O(1) through the index (seq -> position), whose
 * slots are hints: a slot is believed only if the record it points to is
 * below the head, still intact, and carries that very sequence. When the
 * index cannot answer, a bounded linear walk from the tail does.
 *
 * Ordered ids (MS-SEQ, e.g. Redis stream ids carried by sse-relay) are
 * resumed by numeric order, not equality: a binary search over sequence
 * numbers (positions from the index) finds the first record above the id
 * in O(log records), falling back on a linear walk from the tail when the
 * index or the ring does not allow it (see seek_ordered); the cursor keeps
 * the id as a floor so that records at or below it appended later are
 * never sent again.
 */
#include <errno.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "sse_bus_format.h"

int sse_bus__filter_match_hash(const sse_bus_filter_t *f, uint32_t hash,
                               const char *name, size_t len);

/* Longest sleep of a reader that cannot register in the wake file. */
#define SSE_BUS_POLL_MS 10

enum { PEEK_OK = 0, PEEK_LAPPED = 1, PEEK_CORRUPT = 2 };

/* The head, as far as walks may go. An honest bus never has more than its
 * capacity between tail and head (tail, loaded after head, only grows), so
 * a larger span is a corrupt header: clamp it, so that every walk from the
 * tail ends within capacity / 8 records instead of going round the ring for
 * ever (found by test/fuzz/fuzz_bus_reader.c: a full ring and head_pos
 * 2^40 made sse_bus_cursor_oldest spin). */
static uint64_t head_acquire(const sse_bus_t *b)
{
    uint64_t head = atomic_load_explicit(&b->hdr->head_pos,
                                         memory_order_acquire);
    uint64_t tail = atomic_load_explicit(&b->hdr->tail_pos,
                                         memory_order_relaxed);
    if (tail <= head && head - tail > b->mask + 1)
        head = tail + b->mask + 1;
    return head;
}

/* After a copy of bytes at pos: were they intact? (see the file comment) */
static int intact(const sse_bus_t *b, uint64_t pos)
{
    atomic_thread_fence(memory_order_acquire);
    return atomic_load_explicit(&b->hdr->tail_pos, memory_order_relaxed) <= pos;
}

/* Copy the header of the record at pos (< head) into *r and validate it. */
static int peek(const sse_bus_t *b, uint64_t pos, struct sse_bus_rec *r)
{
    const unsigned char *p = b->ring + (pos & b->mask);
    uint64_t room = b->mask + 1 - (pos & b->mask);
    int sane;

    /* Records start 8-aligned, so 8 bytes always fit before the ring's end;
     * an unaligned position (corrupt head/tail/index) could read past it.
     * Found by test/fuzz/fuzz_bus_reader.c. */
    if (pos % SSE_BUS_ALIGN != 0)
        return PEEK_CORRUPT;
    memcpy(r, p, 8); /* len and type: all a padding record is sure to have */
    if (r->type == SSE_BUS_REC_EVENT && room >= SSE_BUS_REC_HDR)
        memcpy(r, p, SSE_BUS_REC_HDR);
    if (!intact(b, pos))
        return PEEK_LAPPED;
    sane = r->len >= SSE_BUS_ALIGN && r->len % SSE_BUS_ALIGN == 0
           && r->len <= room && r->len <= b->hdr->max_record;
    if (sane && r->type == SSE_BUS_REC_EVENT)
        sane = room >= SSE_BUS_REC_HDR && r->chan_len >= 1
               && r->chan_len <= SSE_BUS_CHANNEL_MAX
               && (uint64_t)SSE_BUS_REC_HDR + r->chan_len + r->frame_len <= r->len
               && r->frame_len >= 4u + r->id_len && r->seq != 0;
    else if (sane)
        sane = r->type == SSE_BUS_REC_PAD;
    return sane ? PEEK_OK : PEEK_CORRUPT;
}

static uint64_t tail_acquire(const sse_bus_t *b)
{
    return atomic_load_explicit(&b->hdr->tail_pos, memory_order_acquire);
}

/* Sequence of the last event below pos, walking from the tail. */
static uint64_t walk_last_seq(const sse_bus_t *b, uint64_t pos)
{
    struct sse_bus_rec r;
    for (int tries = 0; tries < 8; tries++) {
        uint64_t p = tail_acquire(b), last = 0;
        int rv = PEEK_OK;
        if (p >= pos) { /* no intact record below pos */
            uint64_t t = atomic_load_explicit(&b->hdr->tail_seq,
                                              memory_order_relaxed);
            return t ? t - 1 : 0;
        }
        while (p < pos && (rv = peek(b, p, &r)) == PEEK_OK) {
            if (r.type == SSE_BUS_REC_EVENT)
                last = r.seq;
            p += r.len;
        }
        if (rv == PEEK_OK)
            return last;
        if (rv == PEEK_CORRUPT)
            break;
    }
    return atomic_load_explicit(&b->hdr->head_seq, memory_order_relaxed);
}

/* Exact sequence of the last event below pos, given hint >= it (head_seq
 * read after acquiring head_pos; publishers store head_seq first). Also
 * used by publisher recovery, where the dead publisher may have raised
 * head_seq beyond head_pos. */
uint64_t sse_bus__last_seq_below(const sse_bus_t *b, uint64_t pos,
                                 uint64_t hint)
{
    struct sse_bus_rec r;
    uint64_t slots = b->index_mask + 1;
    if (pos == 0)
        return 0;
    for (int i = 0; i < 64 && hint > 0; i++, hint--) {
        uint64_t p = atomic_load_explicit(&b->index[hint & (slots - 1)],
                                          memory_order_relaxed);
        if (p < pos && peek(b, p, &r) == PEEK_OK
            && r.type == SSE_BUS_REC_EVENT && r.seq == hint)
            return hint;
    }
    return walk_last_seq(b, pos);
}

/* Set c->next_seq from c->pos: the first event at or after it. */
static void settle(sse_bus_cursor_t *c)
{
    const sse_bus_t *b = c->bus;
    struct sse_bus_rec r;
    uint64_t head = head_acquire(b), p = c->pos;
    int rv = PEEK_OK;
    while (p < head && (rv = peek(b, p, &r)) == PEEK_OK) {
        if (r.type == SSE_BUS_REC_EVENT) {
            c->next_seq = r.seq;
            return;
        }
        p += r.len;
    }
    if (p >= head) {
        c->next_seq = sse_bus__last_seq_below(b, head,
            atomic_load_explicit(&b->hdr->head_seq, memory_order_relaxed)) + 1;
        return;
    }
    c->next_seq = 0; /* lapped while looking, or corrupt: unknown */
}

static void cursor_init(sse_bus_cursor_t *c, const sse_bus_t *b)
{
    memset(c, 0, sizeof *c);
    c->bus = b;
}

void sse_bus_cursor_newest(sse_bus_cursor_t *c, const sse_bus_t *b)
{
    uint64_t head;
    cursor_init(c, b);
    head = head_acquire(b);
    c->pos = head;
    c->next_seq = sse_bus__last_seq_below(b, head,
        atomic_load_explicit(&b->hdr->head_seq, memory_order_relaxed)) + 1;
}

/* Move c to the oldest record, keeping its counters. */
static void seek_oldest(sse_bus_cursor_t *c)
{
    for (int tries = 0; tries < 8; tries++) {
        c->pos = tail_acquire(c->bus);
        settle(c);
        if (c->next_seq)
            return;
    }
}

void sse_bus_cursor_oldest(sse_bus_cursor_t *c, const sse_bus_t *b)
{
    cursor_init(c, b);
    seek_oldest(c);
}

/* Position of the event with sequence seq (< head), or UINT64_MAX. */
static uint64_t find_seq(const sse_bus_t *b, uint64_t seq, uint64_t head)
{
    struct sse_bus_rec r;
    uint64_t p = atomic_load_explicit(
        &b->index[seq & b->index_mask], memory_order_relaxed);
    if (p < head && peek(b, p, &r) == PEEK_OK && r.type == SSE_BUS_REC_EVENT
        && r.seq == seq)
        return p;
    /* Slot reused (records smaller than SSE_BUS_INDEX_DIVISOR): walk. */
    for (p = tail_acquire(b); p < head; p += r.len) {
        if (peek(b, p, &r) != PEEK_OK)
            return UINT64_MAX;
        if (r.type == SSE_BUS_REC_EVENT && r.seq >= seq)
            return r.seq == seq ? p : UINT64_MAX;
    }
    return UINT64_MAX;
}

void sse_bus_cursor_last(sse_bus_cursor_t *c, const sse_bus_t *b, uint64_t n)
{
    uint64_t head, last, p;
    sse_bus_cursor_newest(c, b);
    if (n == 0)
        return;
    head = c->pos;
    last = c->next_seq - 1;
    if (n < last && (p = find_seq(b, last - n + 1, head)) != UINT64_MAX) {
        c->pos = p;
        c->next_seq = last - n + 1;
        return;
    }
    sse_bus_cursor_oldest(c, b);
}

/* Resume after a publisher-supplied id: the newest record carrying it. */
static int find_pub_id(sse_bus_cursor_t *c, const char *id, size_t len)
{
    const sse_bus_t *b = c->bus;
    struct sse_bus_rec r;
    char copy[SSE_BUS_ID_MAX];
    uint64_t head = head_acquire(b), p, found = UINT64_MAX, found_seq = 0;

    if (len == 0 || len > SSE_BUS_ID_MAX)
        return 0;
    for (p = tail_acquire(b); p < head; p += r.len) {
        if (peek(b, p, &r) != PEEK_OK)
            return 0;
        if (r.type != SSE_BUS_REC_EVENT || !(r.flags & SSE_BUS_RECF_PUB_ID)
            || r.id_len != len)
            continue;
        memcpy(copy, b->ring + (p & b->mask) + SSE_BUS_REC_HDR + r.chan_len + 4,
               len);
        if (!intact(b, p))
            return 0;
        if (memcmp(copy, id, len) == 0) {
            found = p + r.len;
            found_seq = r.seq + 1;
        }
    }
    if (found == UINT64_MAX)
        return 0;
    c->pos = found;
    c->next_seq = found_seq;
    return 1;
}

/* Walk the ring from the tail over ordered records. With want_after set,
 * stop at the first one above (ms, seq) and put c there; always report the
 * oldest and greatest ordered ids seen. Returns 1 if the walk completed (or
 * stopped at its target), 0 if it was lapped 8 times or met corruption. */
typedef struct {
    int seen;
    uint64_t old_ms, max_ms;
    uint32_t old_seq, max_seq;
} ord_walk_t;

static int walk_ordered(const sse_bus_t *b, sse_bus_cursor_t *c, uint64_t ms,
                        uint32_t seq, ord_walk_t *w)
{
    struct sse_bus_rec r;
    for (int tries = 0; tries < 8; tries++) {
        uint64_t head = head_acquire(b), p = tail_acquire(b);
        int rv = PEEK_OK;
        memset(w, 0, sizeof *w);
        for (; p < head && (rv = peek(b, p, &r)) == PEEK_OK; p += r.len) {
            if (r.type != SSE_BUS_REC_EVENT
                || !(r.flags & SSE_BUS_RECF_ORDERED))
                continue;
            if (!w->seen) {
                w->seen = 1;
                w->old_ms = w->max_ms = r.ord_ms;
                w->old_seq = w->max_seq = r.ord_seq;
            }
            if (sse_bus_ord_cmp(r.ord_ms, r.ord_seq, w->max_ms,
                                w->max_seq) > 0) {
                w->max_ms = r.ord_ms;
                w->max_seq = r.ord_seq;
            }
            if (c && sse_bus_ord_cmp(r.ord_ms, r.ord_seq, ms, seq) > 0) {
                c->pos = p;
                c->next_seq = r.seq;
                return 1;
            }
        }
        if (rv == PEEK_OK) {
            if (c) { /* nothing above it yet: wait at the head */
                c->pos = head;
                c->next_seq = sse_bus__last_seq_below(b, head,
                    atomic_load_explicit(&b->hdr->head_seq,
                                         memory_order_relaxed)) + 1;
            }
            return 1;
        }
        if (rv == PEEK_CORRUPT)
            return 0;
    }
    return 0;
}

int sse_bus_last_ordered_id(const sse_bus_t *b, uint64_t *ms, uint32_t *seq)
{
    ord_walk_t w;
    if (!walk_ordered(b, NULL, 0, 0, &w) || !w.seen)
        return 0;
    *ms = w.max_ms;
    *seq = w.max_seq;
    return 1;
}

/* Records looked at from a probe to the next ordered record (seek_ordered)
 * before the search gives up for the walk: a ring whose ordered records
 * are sparse among bus-id records is searched by walking. */
#define ORD_SCAN_MAX 64

/* Position of the event with sequence seq (< head) from its index slot
 * alone (no walk), or UINT64_MAX if the slot does not lead to it. */
static uint64_t index_pos(const sse_bus_t *b, uint64_t seq, uint64_t head)
{
    struct sse_bus_rec r;
    uint64_t p = atomic_load_explicit(&b->index[seq & b->index_mask],
                                      memory_order_relaxed);
    if (p < head && peek(b, p, &r) == PEEK_OK && r.type == SSE_BUS_REC_EVENT
        && r.seq == seq)
        return p;
    return UINT64_MAX;
}

/* The first ordered record at or after position p (< head), in *rp, *r.
 * 1 found; 0 none before head; -1 lapped (retry); -2 corrupt, or more than
 * ORD_SCAN_MAX records to look at (walk instead). */
static int ordered_from(const sse_bus_t *b, uint64_t p, uint64_t head,
                        uint64_t *rp, struct sse_bus_rec *r)
{
    for (int n = 0; p < head; n++, p += r->len) {
        int rv;
        if (n >= ORD_SCAN_MAX)
            return -2;
        if ((rv = peek(b, p, r)) != PEEK_OK)
            return rv == PEEK_LAPPED ? -1 : -2;
        if (r->type == SSE_BUS_REC_EVENT
            && (r->flags & SSE_BUS_RECF_ORDERED)) {
            *rp = p;
            return 1;
        }
    }
    return 0;
}

/* What walk_ordered does for a resume, in O(log records): a binary search
 * over sequence numbers (found in O(1) through the index) for the first
 * ordered record above (ms, seq). Exact when ordered ids increase along
 * the ring, which is how sse-relay writes them (only ids above the bus's
 * greatest are appended); with ids published out of order it finds some
 * record above the id, and the floor still keeps out everything at or
 * below it. f(s) = the first ordered record at or after sequence s; "f(s)
 * above the id" is false then true as s grows: search for the first s
 * where it is true. Fills w->seen and w->old_* (the oldest ordered record)
 * like the walk. Returns 1 when c is placed, 0 if the walk must do it
 * (lapped 8 times, an index slot reused, sparse ordered records, corrupt
 * records). */
static int seek_ordered(const sse_bus_t *b, sse_bus_cursor_t *c, uint64_t ms,
                        uint32_t seq, ord_walk_t *w)
{
    struct sse_bus_rec r;
    for (int tries = 0; tries < 8; tries++) {
        uint64_t head = head_acquire(b), tail = tail_acquire(b);
        uint64_t last = sse_bus__last_seq_below(b, head,
            atomic_load_explicit(&b->hdr->head_seq, memory_order_relaxed));
        uint64_t p, lo, hi, found_p = head, found_seq = last + 1;
        int rv, lapped = 0;

        memset(w, 0, sizeof *w);
        rv = ordered_from(b, tail, head, &p, &r);
        if (rv == -1)
            continue;
        if (rv == -2)
            return 0;
        if (rv == 1) {
            w->seen = 1;
            w->old_ms = w->max_ms = r.ord_ms;
            w->old_seq = w->max_seq = r.ord_seq;
            if (sse_bus_ord_cmp(r.ord_ms, r.ord_seq, ms, seq) > 0) {
                found_p = p; /* the oldest is already above the id */
                found_seq = r.seq;
            }
        }
        /* Invariant: f(lo) is at or below the id; f(hi) above it, hi =
         * last + 1 standing for "nothing above it yet" (the head). */
        lo = rv == 1 ? r.seq : 0;
        hi = last + 1;
        if (lo > last) /* a sequence beyond the head: corrupt, walk */
            return 0;
        while (rv == 1 && found_p == head && hi - lo > 1) {
            uint64_t mid = lo + (hi - lo) / 2, mp = index_pos(b, mid, head);
            int fr;
            if (mp == UINT64_MAX) {
                /* Overwritten meanwhile (retry) or the slot was reused by
                 * a later sequence (small records: walk). */
                if (tail_acquire(b) != tail) {
                    lapped = 1;
                    break;
                }
                return 0;
            }
            fr = ordered_from(b, mp, head, &p, &r);
            if (fr == -1) {
                lapped = 1;
                break;
            }
            if (fr == -2)
                return 0;
            if (fr == 0 || sse_bus_ord_cmp(r.ord_ms, r.ord_seq, ms, seq) > 0) {
                hi = mid;
                c->pos = fr ? p : head;
                c->next_seq = fr ? r.seq : last + 1;
            }
            else {
                lo = mid;
            }
        }
        if (lapped)
            continue;
        if (rv == 1 && found_p == head && hi <= last) {
            /* c was set by the probe that last lowered hi */
            return 1;
        }
        c->pos = found_p;
        c->next_seq = found_seq;
        return 1;
    }
    return 0;
}

/* Resume after an ordered id (see sse_bus.h): before the first record
 * with a greater ordered id, with a floor so that records at or below it
 * that a lagging relay appends later are skipped too. GAP when the ring's
 * oldest ordered record is already above the id: what came between may be
 * gone (a relay that knows better writes a gap marker instead). Found by
 * a binary search (seek_ordered), or by walking the ring when the search
 * cannot be trusted to. */
static sse_bus_resume_t resume_ordered(sse_bus_cursor_t *c,
                                       const sse_bus_t *b, uint64_t ms,
                                       uint32_t seq)
{
    ord_walk_t w;
    cursor_init(c, b);
    if (!seek_ordered(b, c, ms, seq, &w) && !walk_ordered(b, c, ms, seq, &w))
        sse_bus_cursor_oldest(c, b);
    c->floor_set = 1;
    c->floor_ms = ms;
    c->floor_seq = seq;
    if (w.seen && sse_bus_ord_cmp(w.old_ms, w.old_seq, ms, seq) > 0)
        return SSE_BUS_RESUME_GAP;
    return SSE_BUS_RESUME_EXACT;
}

sse_bus_resume_t sse_bus_cursor_resume(sse_bus_cursor_t *c,
                                       const sse_bus_t *b, const char *id,
                                       size_t id_len, uint64_t *missed)
{
    uint32_t epoch, oseq;
    uint64_t seq, last, head, p, oms;

    if (missed)
        *missed = 0;
    if (id && sse_bus_parse_ordered_id(id, id_len, &oms, &oseq) == SSE_BUS_OK)
        return resume_ordered(c, b, oms, oseq);
    if (!id || sse_bus_parse_id(id, id_len, &epoch, &seq) != SSE_BUS_OK) {
        cursor_init(c, b);
        if (id && find_pub_id(c, id, id_len))
            return SSE_BUS_RESUME_EXACT;
        sse_bus_cursor_oldest(c, b);
        return SSE_BUS_RESUME_UNKNOWN;
    }
    if (epoch != b->hdr->epoch) {
        sse_bus_cursor_oldest(c, b);
        return SSE_BUS_RESUME_EPOCH;
    }
    sse_bus_cursor_newest(c, b);
    head = c->pos;
    last = c->next_seq - 1;
    if (seq > last)
        return SSE_BUS_RESUME_FUTURE;
    if (seq == last)
        return SSE_BUS_RESUME_EXACT;
    p = find_seq(b, seq + 1, head);
    if (p != UINT64_MAX) {
        c->pos = p;
        c->next_seq = seq + 1;
        return SSE_BUS_RESUME_EXACT;
    }
    sse_bus_cursor_oldest(c, b);
    if (missed && c->next_seq > seq + 1)
        *missed = c->next_seq - (seq + 1);
    return SSE_BUS_RESUME_STALE;
}

/* The cursor was overtaken: move it to the tail and count the loss (the
 * first sequence still held minus the one expected). */
static int lapped(sse_bus_cursor_t *c)
{
    uint64_t expected = c->next_seq;
    seek_oldest(c);
    if (!c->next_seq)
        c->next_seq = expected;
    c->lost = expected && c->next_seq > expected ? c->next_seq - expected : 0;
    c->lost_total += c->lost;
    return SSE_BUS_LAPPED;
}

static int empty(const sse_bus_cursor_t *c)
{
    return atomic_load_explicit(&c->bus->hdr->flags, memory_order_relaxed)
           & SSE_BUS_F_RETIRED ? SSE_BUS_ERETIRED : SSE_BUS_EMPTY;
}

int sse_bus_next(sse_bus_cursor_t *c, const sse_bus_filter_t *f, char *dst,
                 size_t dst_len, sse_bus_record_t *rec, unsigned max_scan)
{
    const sse_bus_t *b = c->bus;
    uint64_t head = head_acquire(b);
    unsigned scanned = 0;
    struct sse_bus_rec r;

    while (c->pos < head) {
        const unsigned char *p = b->ring + (c->pos & b->mask);
        int rv = peek(b, c->pos, &r);
        if (rv == PEEK_LAPPED)
            return lapped(c);
        if (rv == PEEK_CORRUPT) {
            sse_bus_cursor_newest(c, b);
            return SSE_BUS_EFORMAT;
        }
        if (r.type == SSE_BUS_REC_PAD) {
            c->pos += r.len;
            continue;
        }
        if (c->floor_set && (r.flags & SSE_BUS_RECF_ORDERED)) {
            /* Resumed from an ordered id: the client has everything at or
             * below the floor (from another host, maybe). */
            if (sse_bus_ord_cmp(r.ord_ms, r.ord_seq, c->floor_ms,
                                c->floor_seq) <= 0) {
                c->pos += r.len;
                c->next_seq = r.seq + 1;
                if (max_scan && ++scanned >= max_scan)
                    return SSE_BUS_EMPTY;
                continue;
            }
            c->floor_set = 0;
        }
        memcpy(rec->channel, p + SSE_BUS_REC_HDR, r.chan_len);
        if (!intact(b, c->pos))
            return lapped(c);
        if (f && !(r.flags & SSE_BUS_RECF_BROADCAST)
            && !sse_bus__filter_match_hash(f, r.chan_hash, rec->channel,
                                           r.chan_len)) {
            c->pos += r.len;
            c->next_seq = r.seq + 1;
            if (max_scan && ++scanned >= max_scan)
                return SSE_BUS_EMPTY;
            continue;
        }
        rec->frame_len = r.frame_len;
        if (dst) {
            if (r.frame_len > dst_len)
                return SSE_BUS_ENOBUFS;
            memcpy(dst, p + SSE_BUS_REC_HDR + r.chan_len, r.frame_len);
            if (!intact(b, c->pos))
                return lapped(c);
        }
        rec->seq = r.seq;
        rec->time_ns = r.time_ns;
        rec->channel_len = r.chan_len;
        rec->id_len = r.id_len;
        rec->flags = r.flags & SSE_BUS_RECF_BROADCAST ? SSE_BUS_EVF_BROADCAST
                                                      : 0;
        rec->frame = dst;
        rec->id = dst ? dst + 4 : NULL;
        c->pos += r.len;
        c->next_seq = r.seq + 1;
        return SSE_BUS_OK;
    }
    return empty(c);
}

int sse_bus_skip(sse_bus_cursor_t *c)
{
    struct sse_bus_rec r;
    if (c->pos >= head_acquire(c->bus))
        return empty(c);
    switch (peek(c->bus, c->pos, &r)) {
    case PEEK_LAPPED:
        return lapped(c);
    case PEEK_CORRUPT:
        sse_bus_cursor_newest(c, c->bus);
        return SSE_BUS_EFORMAT;
    }
    if (r.type == SSE_BUS_REC_EVENT)
        c->next_seq = r.seq + 1;
    c->pos += r.len;
    return SSE_BUS_OK;
}

int sse_bus_pending(const sse_bus_cursor_t *c)
{
    return head_acquire(c->bus) > c->pos;
}

int sse_bus_wait(const sse_bus_t *b, uint64_t pos, int timeout_ms)
{
    struct timespec ts, *tsp = NULL;
    uint32_t v = atomic_load_explicit(&b->hdr->futex, memory_order_acquire);
    long r;
    int e;

    if (head_acquire(b) != pos
        || (atomic_load_explicit(&b->hdr->flags, memory_order_relaxed)
            & SSE_BUS_F_RETIRED))
        return SSE_BUS_OK;
    /* Publishers that use the wake file wake only readers registered in
     * it; a reader without it (not writable, say) must poll. */
    if (!b->wake && (timeout_ms < 0 || timeout_ms > SSE_BUS_POLL_MS))
        timeout_ms = SSE_BUS_POLL_MS;
    if (timeout_ms >= 0) {
        ts.tv_sec = timeout_ms / 1000;
        ts.tv_nsec = (long)(timeout_ms % 1000) * 1000000L;
        tsp = &ts;
    }
    if (b->wake)
        atomic_fetch_add_explicit(&b->wake->waiters, 1, memory_order_seq_cst);
    r = syscall(SYS_futex, (uint32_t *)&b->hdr->futex, FUTEX_WAIT, v, tsp,
                NULL, 0);
    e = errno;
    if (b->wake)
        atomic_fetch_sub_explicit(&b->wake->waiters, 1, memory_order_seq_cst);
    if (r == 0 || e == EAGAIN || e == EINTR || head_acquire(b) != pos)
        return SSE_BUS_OK;
    if (e == ETIMEDOUT)
        return SSE_BUS_TIMEOUT;
    return SSE_BUS_ESYS;
}

/*
 * sse_bus_publish.c - appending events (publishers only).
 *
 * Publishers serialise on the robust process-shared mutex in the header and
 * hold it for the copy of their records into the ring and nothing else:
 * events are validated and measured before the lock is taken; the frame is
 * written straight into the ring (one copy). The steps and their memory
 * orderings are described in sse_bus_format.h; each step below says which
 * one it is.
 *
 * A publisher killed while holding the lock leaves head_pos untouched, so
 * nothing it wrote is visible. The next publisher gets EOWNERDEAD and, in
 * recover(), re-derives head_seq from the committed records (the dead one
 * may have stored it before dying), writes a padding record where the
 * dead writer's bytes start, and makes the mutex consistent again.
 */
#include <errno.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sse_bus_format.h"

/* From sse_bus_frame.c and sse_bus_read.c. */
size_t sse_bus__frame_len(const sse_bus_event_t *ev, size_t id_len);
char *sse_bus__frame_write(char *dst, const sse_bus_event_t *ev,
                           const char *id, size_t id_len);
int sse_bus__event_validate(uint32_t max_record, const sse_bus_event_t *ev,
                            uint32_t *rec_len, sse_bus_error_t *err);
uint64_t sse_bus__last_seq_below(const sse_bus_t *b, uint64_t pos,
                                 uint64_t hint);

void sse_bus__futex_wake(_Atomic uint32_t *addr)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
}

static struct sse_bus_rec *wrec_at(sse_bus_t *b, uint64_t pos)
{
    return (struct sse_bus_rec *)(b->ring + (pos & b->mask));
}

/* Step 1: drop the oldest records until [0, end - capacity) holds none.
 * Records below head_pos were committed by a publisher that held the lock,
 * so their len fields are trustworthy unless the file is corrupt; a bad one
 * drops everything (readers resynchronise at the new tail). */
static void make_room(sse_bus_t *b, uint64_t end, uint64_t head)
{
    struct sse_bus_hdr *h = b->hdr;
    uint64_t tail = atomic_load_explicit(&h->tail_pos, memory_order_relaxed);
    uint64_t tail_seq = atomic_load_explicit(&h->tail_seq, memory_order_relaxed);
    uint64_t cap = b->mask + 1;

    if (end <= cap || tail >= end - cap)
        return;
    while (tail < end - cap && tail < head) {
        const struct sse_bus_rec *r = wrec_at(b, tail);
        uint32_t len = r->len;
        if (len < SSE_BUS_ALIGN || len % SSE_BUS_ALIGN
            || len > h->max_record || (tail & b->mask) + len > cap) {
            tail = head; /* corrupt: drop all */
            break;
        }
        if (r->type == SSE_BUS_REC_EVENT)
            tail_seq = r->seq + 1;
        tail += len;
    }
    atomic_store_explicit(&h->tail_seq, tail_seq, memory_order_relaxed);
    atomic_store_explicit(&h->tail_pos, tail, memory_order_relaxed);
    /* Readers that copy the bytes we write next, then fence, see tail. */
    atomic_thread_fence(memory_order_release);
}

static void write_pad(sse_bus_t *b, uint64_t pos, uint32_t len)
{
    struct sse_bus_rec *r = wrec_at(b, pos);
    r->type = SSE_BUS_REC_PAD;
    __atomic_store_n(&r->len, len, __ATOMIC_RELEASE);
}

/* Append one validated event at *pos with sequence seq. */
static void append(sse_bus_t *b, const sse_bus_event_t *ev, uint64_t seq,
                   uint64_t *pos, uint64_t now)
{
    struct sse_bus_hdr *h = b->hdr;
    char idbuf[SSE_BUS_NATIVE_ID_MAX + 1];
    const char *id = ev->id;
    size_t id_len = ev->id_len;
    uint64_t cap = b->mask + 1, off;
    uint32_t len, frame_len;
    struct sse_bus_rec *r;

    if (!id_len) {
        id_len = sse_bus_format_id(h->epoch, seq, idbuf);
        id = idbuf;
    }
    frame_len = (uint32_t)sse_bus__frame_len(ev, id_len);
    len = (uint32_t)sse_bus_align(SSE_BUS_REC_HDR + ev->channel_len + frame_len);
    off = *pos & b->mask;
    if (off + len > cap) { /* never straddle the end: pad to it */
        make_room(b, *pos + (cap - off), *pos);
        write_pad(b, *pos, (uint32_t)(cap - off));
        *pos += cap - off;
    }
    make_room(b, *pos + len, *pos);

    /* Step 2: body, then len (release) = the record's commit. */
    r = wrec_at(b, *pos);
    r->type = SSE_BUS_REC_EVENT;
    r->chan_len = (uint16_t)ev->channel_len;
    r->seq = seq;
    r->time_ns = now;
    r->chan_hash = sse_bus_channel_hash(ev->channel, ev->channel_len);
    r->id_len = (uint16_t)id_len;
    r->flags = ev->id_len ? SSE_BUS_RECF_PUB_ID : 0;
    r->frame_len = frame_len;
    r->ord_seq = 0;
    r->ord_ms = 0;
    if (ev->id_len && sse_bus_parse_ordered_id(ev->id, ev->id_len, &r->ord_ms,
                                               &r->ord_seq) == SSE_BUS_OK)
        r->flags |= SSE_BUS_RECF_ORDERED;
    if (ev->flags & SSE_BUS_EVF_BROADCAST)
        r->flags |= SSE_BUS_RECF_BROADCAST;
    memcpy((char *)(r + 1), ev->channel, ev->channel_len);
    sse_bus__frame_write((char *)(r + 1) + ev->channel_len, ev, id, id_len);
    __atomic_store_n(&r->len, len, __ATOMIC_RELEASE);

    /* Step 3 (part): index slot; readers validate what they find there. */
    atomic_store_explicit(&b->index[seq & b->index_mask], *pos,
                          memory_order_relaxed);
    atomic_fetch_add_explicit(&h->bytes_total, frame_len, memory_order_relaxed);
    *pos += len;
}

/* Called with the lock held after EOWNERDEAD. */
static void recover(sse_bus_t *b)
{
    struct sse_bus_hdr *h = b->hdr;
    uint64_t head = atomic_load_explicit(&h->head_pos, memory_order_relaxed);
    uint64_t seq = atomic_load_explicit(&h->head_seq, memory_order_relaxed);

    seq = sse_bus__last_seq_below(b, head, seq);
    atomic_store_explicit(&h->head_seq, seq, memory_order_relaxed);
    /* Whatever the dead writer left at and after head was never visible
     * (readers stop at head_pos) and the next append overwrites it; mark it
     * uncommitted so that tools reading the raw file are not misled. */
    wrec_at(b, head)->len = 0;
    atomic_fetch_add_explicit(&h->recoveries, 1, memory_order_relaxed);
}

static int lock_bus(sse_bus_t *b, sse_bus_error_t *err)
{
    int rv = pthread_mutex_lock(&b->hdr->lock);
    if (rv == EOWNERDEAD) {
        recover(b);
        rv = pthread_mutex_consistent(&b->hdr->lock);
    }
    if (rv != 0)
        return sse_bus__fail(err, SSE_BUS_ESYS, rv,
            "cannot take the publishers' lock of %s: %s; recreate the bus "
            "with `sse-pub create --force %s`", b->path, strerror(rv),
            b->path);
    return SSE_BUS_OK;
}

/* Step 4: tell waiting readers. */
static void wake_readers(sse_bus_t *b)
{
    atomic_fetch_add_explicit(&b->hdr->futex, 1, memory_order_seq_cst);
    if (!b->wake
        || atomic_load_explicit(&b->wake->waiters, memory_order_seq_cst) != 0)
        sse_bus__futex_wake(&b->hdr->futex);
}

/* Record bytes ev needs in the ring, counting a worst-case padding. */
static uint64_t ring_bytes(const sse_bus_t *b, const sse_bus_event_t *ev)
{
    uint32_t len = 0;
    sse_bus__event_validate(b->hdr->max_record, ev, &len, NULL);
    return 2ull * len;
}

/* Append evs[0..n) under one lock hold; the caller checked them all. */
static int append_locked(sse_bus_t *b, const sse_bus_event_t *evs, size_t n,
                         uint64_t now, uint64_t *first_seq,
                         sse_bus_error_t *err)
{
    struct sse_bus_hdr *h = b->hdr;
    uint64_t pos, seq;
    int rv;

    if ((rv = lock_bus(b, err)) != 0)
        return rv;
    pos = atomic_load_explicit(&h->head_pos, memory_order_relaxed);
    seq = atomic_load_explicit(&h->head_seq, memory_order_relaxed);
    if (first_seq)
        *first_seq = seq + 1;
    if (atomic_load_explicit(&h->tail_seq, memory_order_relaxed) == 0)
        atomic_store_explicit(&h->tail_seq, seq + 1, memory_order_relaxed);
    for (size_t i = 0; i < n; i++)
        append(b, &evs[i], ++seq, &pos, now);
    /* Step 3: head_seq before head_pos, so that a reader acquiring
     * head_pos finds head_seq >= the last sequence below it. */
    atomic_store_explicit(&h->head_seq, seq, memory_order_relaxed);
    atomic_store_explicit(&h->head_pos, pos, memory_order_release);
    pthread_mutex_unlock(&h->lock);
    wake_readers(b);
    return SSE_BUS_OK;
}

int sse_bus_publish_batch(sse_bus_t *b, const sse_bus_event_t *evs, size_t n,
                          uint64_t *first_seq, size_t *bad,
                          sse_bus_error_t *err)
{
    uint64_t total = 0, half = (b->mask + 1) / 2, now;
    uint32_t len;
    int rv;

    if (!b->writable)
        return sse_bus__fail(err, SSE_BUS_ERDONLY, 0,
            "bus %s is open read-only; publishers open it with SSE_BUS_RDWR",
            b->path);
    for (size_t i = 0; i < n; i++) {
        rv = sse_bus__event_validate(b->hdr->max_record, &evs[i], &len, err);
        if (rv != SSE_BUS_OK) {
            if (bad)
                *bad = i;
            return rv;
        }
        total += 2ull * len;
    }
    if (n == 0)
        return SSE_BUS_OK;
    now = sse_bus__now_ns();
    if (total <= half)
        return append_locked(b, evs, n, now, first_seq, err);
    /* A batch larger than half the ring goes in slices, so that no lock
     * hold overwrites records it has not yet committed. */
    for (size_t i = 0; i < n;) {
        size_t end = i + 1;
        uint64_t bytes = ring_bytes(b, &evs[i]);
        while (end < n && bytes + ring_bytes(b, &evs[end]) <= half)
            bytes += ring_bytes(b, &evs[end++]);
        rv = append_locked(b, evs + i, end - i, now, i ? NULL : first_seq,
                           err);
        if (rv != SSE_BUS_OK)
            return rv;
        i = end;
    }
    return SSE_BUS_OK;
}

int sse_bus_publish(sse_bus_t *b, const sse_bus_event_t *ev, uint64_t *seq,
                    sse_bus_error_t *err)
{
    return sse_bus_publish_batch(b, ev, 1, seq, NULL, err);
}

void sse_bus_wake_all(const sse_bus_t *b)
{
    /* No futex bump: readers may hold the bus read-only. Woken waiters
     * return and re-check whatever made the caller wake them. */
    sse_bus__futex_wake(&b->hdr->futex);
}

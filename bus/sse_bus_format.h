/*
 * sse_bus_format.h - the on-disk (and in-memory) layout of a bus file.
 * Private to bus/; users of the library see only include/sse_bus.h.
 *
 *   offset 0                 struct sse_bus_hdr (SSE_BUS_HDR_SIZE bytes)
 *   offset index_off         uint64_t index[index_slots]   seq -> position
 *   offset ring_off          the record ring, `capacity` bytes (power of 2)
 *
 * Positions are byte counts since creation: they only grow (64 bits do not
 * wrap in practice) and a position p lives at ring[p & (capacity - 1)].
 * Records start on 8-byte boundaries, never straddle the end of the ring
 * (a padding record fills the gap), and are at most max_record bytes.
 *
 * Publication protocol (one publisher at a time, under hdr->lock):
 *   1. if the new record would overwrite bytes still holding records, move
 *      tail_pos past them (relaxed store), then a release fence: any reader
 *      that copies bytes written after the fence and then does an acquire
 *      fence will see the new tail_pos and throw the copy away (the seqlock
 *      pattern of Boehm, "Can seqlocks get along with programming language
 *      memory models?", and of Aeron's broadcast buffer);
 *   2. write the record body, then its len with a release store (the
 *      record's commit; recovery and `sse-pub info` rely on it);
 *   3. update the index slot, head_seq, bytes_total (relaxed), then head_pos
 *      with a release store: readers acquire head_pos and may read every
 *      record below it;
 *   4. bump futex (seq_cst) and FUTEX_WAKE only if waiters != 0.
 *
 * Reading (any number of processes, no lock, read-only mapping):
 *   acquire head_pos; for a cursor at pos < head_pos copy the record header,
 *   channel and frame; acquire fence; relaxed load of tail_pos; if
 *   tail_pos > pos the copy may be torn: discard it, the cursor is lapped.
 *
 * Recovery: a publisher that dies holding the lock leaves head_pos where it
 * was (it is stored last), so nothing it wrote is visible. The next locker
 * gets EOWNERDEAD, marks the mutex consistent, counts the recovery and
 * writes a padding record over whatever the dead writer committed past
 * head_pos; the half-written bytes are then simply overwritten.
 */
#ifndef SSE_BUS_FORMAT_H
#define SSE_BUS_FORMAT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "sse_bus.h"

#define SSE_BUS_MAGIC 0x3153554245535353ull /* "SSSEBUS1" little-endian */
#define SSE_BUS_HDR_SIZE 4096u
#define SSE_BUS_ALIGN 8u
#define SSE_BUS_INDEX_DIVISOR 64u /* one index slot per 64 ring bytes */

#define SSE_BUS_F_RETIRED 1u

/* Header. Fields are grouped by writer so that readers polling the head do
 * not share a cache line with the mutex that publishers hammer. */
struct sse_bus_hdr {
    /* ---- immutable after creation: written once by create, before the
     * rename that makes the file visible; read by everyone, plain loads. */
    uint64_t magic;        /* SSE_BUS_MAGIC */
    uint32_t version;      /* SSE_BUS_VERSION */
    uint32_t hdr_size;     /* SSE_BUS_HDR_SIZE */
    uint64_t capacity;     /* ring bytes, power of two */
    uint64_t index_slots;  /* power of two */
    uint64_t index_off;    /* file offset of the index */
    uint64_t ring_off;     /* file offset of the ring */
    uint64_t file_size;    /* ring_off + capacity */
    uint64_t created_ns;   /* CLOCK_REALTIME at creation */
    uint32_t epoch;        /* random, nonzero; part of every bus id */
    uint32_t max_record;   /* largest record, bytes */
    uint8_t pad0[64 - 72 % 64];

    /* ---- publication state (cache line 2).
     * head_pos:  writer: publisher under lock, release store (step 3);
     *            readers: acquire load. Everything below it is committed.
     * head_seq:  writer: publisher under lock, relaxed, before head_pos;
     *            readers: relaxed, only as a hint (info, cursor_last).
     * tail_pos:  position of the oldest intact record. writer: publisher
     *            under lock, relaxed store followed by a release fence
     *            (step 1); readers: relaxed load after an acquire fence.
     * tail_seq:  sequence of the first event at or after tail_pos (0: none).
     *            writer as tail_pos; readers: hint only (info, stale count).
     * bytes_total, recoveries: publisher under lock, relaxed; readers
     *            relaxed (statistics). */
    _Atomic uint64_t head_pos;
    _Atomic uint64_t head_seq;
    _Atomic uint64_t tail_pos;
    _Atomic uint64_t tail_seq;
    _Atomic uint64_t bytes_total;
    _Atomic uint64_t recoveries;
    _Atomic uint32_t flags;  /* SSE_BUS_F_RETIRED: publisher (create
                                --replace) seq_cst; readers relaxed */
    uint8_t pad1[64 - 52];

    /* ---- wake-ups (cache line 3).
     * futex:   bumped (seq_cst fetch_add) by a publisher after each commit;
     *          readers load it (acquire) before checking head_pos, then
     *          FUTEX_WAIT on the value they saw (FUTEX_WAIT works on a
     *          read-only mapping). Not FUTEX_PRIVATE: the key is the file
     *          page, shared by every process that maps it.
     * The count of waiting readers cannot live here (readers cannot write
     * the bus): it is in the wake file, see struct sse_bus_wake. */
    _Atomic uint32_t futex;
    uint8_t pad2[64 - 4];

    /* ---- publishers' lock (cache line 4+): robust, process-shared. Only
     * publishers touch it; readers map the file read-only and never do. */
    pthread_mutex_t lock;
};

/* Record header, at an 8-aligned ring position. Followed by the channel
 * name (chan_len bytes, no NUL) and the SSE frame (frame_len bytes), then
 * padding to SSE_BUS_ALIGN. Every field is written by the publisher under
 * the lock before `len`; readers copy the whole record and validate after.
 */
struct sse_bus_rec {
    uint32_t len;         /* total bytes incl. header and padding; written
                             last with a release store (the commit) */
    uint16_t type;        /* SSE_BUS_REC_EVENT or SSE_BUS_REC_PAD */
    uint16_t chan_len;
    uint64_t seq;         /* event sequence, 1-based, +1 per event */
    uint64_t time_ns;     /* CLOCK_REALTIME at publish */
    uint32_t chan_hash;   /* sse_bus_channel_hash(channel) */
    uint16_t id_len;      /* id text at frame + 4 ("id: ") */
    uint16_t flags;       /* SSE_BUS_RECF_* */
    uint32_t frame_len;
    uint32_t ord_seq;     /* ordered id MS-SEQ (SSE_BUS_RECF_ORDERED): SEQ; */
    uint64_t ord_ms;      /* and MS. Both 0 when the flag is clear. Parsed
                             from the publisher's id at publish time (was
                             reserved0/ext_key, always 0, before ordered
                             ids: files stay compatible both ways) */
};

#define SSE_BUS_REC_EVENT 1
#define SSE_BUS_REC_PAD 2
#define SSE_BUS_RECF_PUB_ID 1    /* id supplied by the publisher */
#define SSE_BUS_RECF_ORDERED 2   /* ...and it is an ordered id: ord_ms/seq */
#define SSE_BUS_RECF_BROADCAST 4 /* SSE_BUS_EVF_BROADCAST: every filter */

/* Compare ordered ids (a, b) numerically: <0, 0, >0. */
static inline int sse_bus_ord_cmp(uint64_t ams, uint32_t aseq, uint64_t bms,
                                  uint32_t bseq)
{
    if (ams != bms)
        return ams < bms ? -1 : 1;
    return aseq < bseq ? -1 : aseq > bseq;
}

#define SSE_BUS_REC_HDR ((uint32_t)sizeof(struct sse_bus_rec))

/* The wake file, PATH.wake: the one page readers may write. It holds only
 * the number of readers blocked in FUTEX_WAIT, so that publishers make the
 * FUTEX_WAKE system call (~200 ns here) only when someone waits. A reader
 * that could corrupt it can only cause needless wake-ups or make readers
 * fall back on their wait timeouts; it can never touch an event.
 * waiters: readers fetch_add(+1, seq_cst) before FUTEX_WAIT and -1 after;
 *          publishers load it (seq_cst) after their futex bump. Dekker:
 *          either the publisher sees the waiter and wakes it, or the
 *          waiter's FUTEX_WAIT sees the new futex value and returns. */
#define SSE_BUS_WAKE_MAGIC 0x454b4157455353ull /* "SSEWAKE" */
#define SSE_BUS_WAKE_SIZE 4096u
struct sse_bus_wake {
    uint64_t magic;           /* immutable after create */
    uint32_t epoch;           /* the bus's epoch; a mismatch means stale */
    _Atomic uint32_t waiters;
};

/* Per-mapping state (process-local). */
struct sse_bus {
    struct sse_bus_hdr *hdr;
    const unsigned char *ring;
    _Atomic uint64_t *index;
    struct sse_bus_wake *wake; /* NULL: no usable wake file (see wait) */
    uint64_t mask;
    uint64_t index_mask; /* index_slots - 1 from the header as validated at
                            open; never re-read from the shared header, which
                            a corrupt writer may change under a reader (found
                            by test/fuzz/fuzz_bus_reader.c) */
    size_t map_len;
    int fd;
    int writable;
    dev_t dev;
    ino_t ino;
    char *path;
    int guard_slot;      /* sse_bus_guard.c slot of the mapping, or -1 */
    int wake_guard_slot; /* same for the wake file's mapping */
};

static inline uint64_t sse_bus_align(uint64_t n)
{
    return (n + SSE_BUS_ALIGN - 1) & ~(uint64_t)(SSE_BUS_ALIGN - 1);
}

static inline const struct sse_bus_rec *sse_bus_rec_at(const sse_bus_t *b,
                                                      uint64_t pos)
{
    return (const struct sse_bus_rec *)(b->ring + (pos & b->mask));
}

/* Shared by the files of bus/. */
int sse_bus__fail(sse_bus_error_t *err, int code, int sys_errno,
                  const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
uint64_t sse_bus__now_ns(void);
void sse_bus__futex_wake(_Atomic uint32_t *addr);
/* sse_bus_guard.c: record/forget a mapping; was it replaced after SIGBUS? */
int sse_bus__guard_add(void *base, size_t len, int prot, int is_bus);
void sse_bus__guard_remove(int slot);
int sse_bus__guard_faulted(int slot);

#endif /* SSE_BUS_FORMAT_H */

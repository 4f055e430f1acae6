/*
 * fuzz_bus_reader.c - libFuzzer target: the bus reader over arbitrary file
 * contents.
 *
 * A reader (httpd child, `sse-pub tail`) maps a bus that any publisher, a
 * bug or a disk error may have filled with anything. Whatever the bytes,
 * opening and reading must never crash, read outside the mapping, loop
 * forever, or return a record that breaks the documented limits.
 *
 * Input: byte 0 chooses the mode, the next bytes drive a script of cursor
 * operations, the rest is file content.
 *   mode A (bit 0 clear): a valid header (capacity 64 KiB) whose publication
 *     state (head/tail position and sequence, flags), 8 index slots and the
 *     ring bytes come from the input. The bus stays open read-only for the
 *     whole run and the bytes are rewritten under it, which is also what a
 *     corrupting publisher does to a running httpd. Control bit 5 tiles the
 *     ring bytes over the whole ring (a full ring from a short input); bit
 *     6 also overwrites index_slots and max_record, fields a reader
 *     validated at open and must not trust again.
 *   mode B (bit 0 set): the header itself is fuzzed (overlaid on a valid
 *     one; bits 1 and 2 keep magic and version valid so the checks behind
 *     them are reached) and the file size is chosen by bits 3-4 (as the
 *     header says, one byte short, only what was written, less than a
 *     header). The file is opened afresh each time.
 * After every successful open a PROT_NONE guard page is placed right after
 * the mapping, so a read past the ring's end faults instead of silently
 * reading whatever is mapped next.
 *
 * Script operations (one byte each, up to 16): cursor oldest / newest /
 * last N / resume with a bus id / resume with arbitrary text, then next()
 * in a loop with a buffer, with a channel filter, header-only (dst NULL),
 * or skip() in a loop. Each loop is bounded by what an honest bus of that
 * capacity can hold; going past it means the reader would spin for ever.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "fuzz_common.h"
#include "sse_bus_format.h"

#define CAP (64u * 1024u)

/* The last sse_bus_resume_t value (GAP came with ordered ids). */
#ifdef SSE_BUS_EVF_BROADCAST
#define RESUME_LAST SSE_BUS_RESUME_GAP
#else
#define RESUME_LAST SSE_BUS_RESUME_UNKNOWN
#endif
#define MAX_FILE (64ull << 20)

/* Move the bus's mapping (mremap) into a reserved region with a PROT_NONE
 * page after it, so that any read past the end of the ring faults. Returns
 * the guard page (unmap it before sse_bus_close). */
static void *guard_after(sse_bus_t *b)
{
    struct sse_bus_hdr *h = b->hdr;
    size_t len = b->map_len;
    char *region = mmap(NULL, len + 4096, PROT_NONE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    fuzz_assert(region != MAP_FAILED);
    void *moved = mremap(h, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, region);
    fuzz_assert(moved == region);
    b->hdr = (struct sse_bus_hdr *)region;
    b->index = (_Atomic uint64_t *)(region + b->hdr->index_off);
    b->ring = (const unsigned char *)region + b->hdr->ring_off;
    return region + len;
}

typedef struct {
    const uint8_t *p;
    size_t n;
} src_t;

static uint8_t take8(src_t *s)
{
    if (!s->n)
        return 0;
    s->n--;
    return *s->p++;
}

static uint64_t take64(src_t *s)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)take8(s) << (8 * i);
    return v;
}

static void check_record(const sse_bus_record_t *rec, const char *dst,
                         size_t dst_len, const sse_bus_filter_t *f)
{
    fuzz_assert(rec->channel_len >= 1
                && rec->channel_len <= SSE_BUS_CHANNEL_MAX);
    fuzz_assert(rec->seq != 0);
    if (dst) {
        fuzz_assert(rec->frame == dst && rec->frame_len <= dst_len);
        fuzz_assert(rec->id == dst + 4);
        fuzz_assert((size_t)rec->id_len + 4 <= rec->frame_len);
    } else {
        fuzz_assert(!rec->frame && !rec->id);
    }
#ifdef SSE_BUS_EVF_BROADCAST
    if (f && !(rec->flags & SSE_BUS_EVF_BROADCAST))
#else
    if (f)
#endif
        fuzz_assert(sse_bus_filter_match(f, rec->channel, rec->channel_len));
}

/* next() until nothing is left; bounded by the records the ring can hold. */
static void drain(sse_bus_cursor_t *c, const sse_bus_filter_t *f, int how,
                  uint64_t cap)
{
    static char buf[CAP * 4];
    sse_bus_record_t rec;
    size_t dst_len = how == 1 ? 64 : sizeof buf;
    uint64_t limit = cap / SSE_BUS_ALIGN + 64;
    int lapped_in_row = 0;
    for (uint64_t i = 0;; i++) {
        int rv;
        fuzz_assert(i <= limit); /* a reader must not spin */
        if (how == 3) {
            rv = sse_bus_skip(c);
            fuzz_assert(rv == SSE_BUS_OK || rv == SSE_BUS_EMPTY
                        || rv == SSE_BUS_LAPPED || rv == SSE_BUS_EFORMAT
                        || rv == SSE_BUS_ERETIRED);
        } else {
            char *dst = how == 2 ? NULL : buf;
            memset(&rec, 0, sizeof rec);
            rv = sse_bus_next(c, f, dst, dst ? dst_len : 0, &rec,
                              how == 1 ? 3 : 0);
            if (rv == SSE_BUS_OK)
                check_record(&rec, dst, dst_len, f);
            else if (rv == SSE_BUS_ENOBUFS)
                rv = sse_bus_skip(c);
            else
                fuzz_assert(rv == SSE_BUS_EMPTY || rv == SSE_BUS_LAPPED
                            || rv == SSE_BUS_EFORMAT
                            || rv == SSE_BUS_ERETIRED);
        }
        /* Nobody writes while we read: lapping twice in a row would mean
         * the cursor's resynchronisation does not resynchronise. */
        lapped_in_row = rv == SSE_BUS_LAPPED ? lapped_in_row + 1 : 0;
        fuzz_assert(lapped_in_row < 3);
        if (rv == SSE_BUS_EMPTY || rv == SSE_BUS_ERETIRED)
            return;
        if (rv == SSE_BUS_EFORMAT) {
            /* the cursor moved to the newest: nothing more to read */
            rv = sse_bus_next(c, f, buf, sizeof buf, &rec, 0);
            fuzz_assert(rv != SSE_BUS_OK && rv != SSE_BUS_LAPPED);
            return;
        }
    }
}

static void run_script(const sse_bus_t *bus, src_t *s)
{
    sse_bus_cursor_t c;
    sse_bus_filter_t f;
    unsigned char fspace[SSE_BUS_FILTER_SPACE_MAX];
    sse_bus_info_t info;
    uint64_t missed;
    char id[80];
    unsigned nops = take8(s) % 17;

    sse_bus_info(bus, &info);
    sse_bus_filter_init(&f, fspace, sizeof fspace);
    sse_bus_filter_add(&f, "a", 1);
    sse_bus_filter_add(&f, "news", 4);
    sse_bus_cursor_oldest(&c, bus);
    for (unsigned k = 0; k < nops; k++) {
        uint8_t op = take8(s);
        switch (op & 7) {
        case 0: sse_bus_cursor_oldest(&c, bus); break;
        case 1: sse_bus_cursor_newest(&c, bus); break;
        case 2: sse_bus_cursor_last(&c, bus, take64(s)); break;
        case 3: {
            uint32_t ep = op & 8 ? info.epoch : (uint32_t)take64(s);
            size_t n = sse_bus_format_id(ep, take64(s) >> (take8(s) & 63), id);
            sse_bus_resume_t r = sse_bus_cursor_resume(&c, bus, id, n,
                                                       &missed);
            fuzz_assert(r <= RESUME_LAST);
            break;
        }
        case 4: {
            size_t n = take8(s) % sizeof id;
            for (size_t i = 0; i < n; i++)
                id[i] = (char)take8(s);
            sse_bus_resume_t r = sse_bus_cursor_resume(&c, bus, id, n,
                                                       &missed);
            fuzz_assert(r <= RESUME_LAST);
            break;
        }
        case 5: drain(&c, NULL, op & 8 ? 1 : 0, info.capacity); break;
        case 6: drain(&c, &f, op & 8 ? 1 : 0, info.capacity); break;
        case 7: drain(&c, op & 8 ? &f : NULL, op & 16 ? 3 : 2,
                      info.capacity); break;
        }
        (void)sse_bus_pending(&c);
    }
    (void)sse_bus_is_stale(bus);
    (void)sse_bus_wait(bus, c.pos, 0);
}

/* ---------------------------------------------------------------- mode A */

static sse_bus_t *a_rw, *a_ro;
static size_t a_dirty_off, a_dirty_len;

static void mode_a(src_t *s)
{
    struct sse_bus_hdr *h;
    uint8_t ctl;
    uint64_t head, tail;
    if (!a_rw) {
        a_rw = fuzz_bus("a.bus", CAP, 0, SSE_BUS_RDWR);
        a_ro = fuzz_bus("a.bus", CAP, 0, SSE_BUS_RDONLY);
        guard_after(a_ro);
    }
    h = a_rw->hdr;
    ctl = take8(s);
    head = take64(s);
    tail = take64(s);
    if (ctl & 1) { /* plausible positions: the interesting case */
        head &= 0x7fff8 | (ctl & 2 ? 7 : 0);
        tail = head - (tail & 0xffff);
        if (tail > head)
            tail = 0;
    }
    atomic_store(&h->head_pos, head);
    atomic_store(&h->tail_pos, tail);
    atomic_store(&h->head_seq, ctl & 4 ? take64(s) : take8(s));
    atomic_store(&h->tail_seq, ctl & 8 ? take64(s) : take8(s));
    atomic_store(&h->flags, ctl & 16 ? SSE_BUS_F_RETIRED : 0);
    static uint64_t dirty_slot[8], slots;
    if (!slots)
        slots = h->index_slots;
    /* bit 6: a corrupting writer also changes the immutable header fields
     * after readers validated them at open */
    h->index_slots = ctl & 64 ? take64(s) : slots;
    h->max_record = ctl & 64 ? (uint32_t)take64(s) : CAP / 4;
    for (int i = 0; i < 8; i++)
        atomic_store(&a_rw->index[dirty_slot[i]], 0);
    for (int i = 0; i < 8; i++) {
        dirty_slot[i] = (take8(s) * 8u + (unsigned)i) & (slots - 1);
        atomic_store(&a_rw->index[dirty_slot[i]], take64(s) & 0xfffff);
    }
    /* ring bytes: clear last time's, then copy at an offset, wrapping */
    unsigned char *ring = (unsigned char *)a_rw->ring;
    for (size_t i = 0; i < a_dirty_len; i++)
        ring[(a_dirty_off + i) & (CAP - 1)] = 0;
    size_t off = (size_t)(take8(s) | take8(s) << 8) * 8u & (CAP - 1);
    size_t script = take8(s) % 48; /* bytes kept back for the script */
    size_t body = s->n > script ? s->n - script : 0;
    if (body > CAP)
        body = CAP;
    for (size_t i = 0; i < body; i++)
        ring[(off + i) & (CAP - 1)] = s->p[i];
    a_dirty_off = off;
    a_dirty_len = body;
    if ((ctl & 32) && body >= SSE_BUS_ALIGN) {
        /* tile the body over the whole ring: a full ring of valid records,
         * which a short input cannot spell out */
        size_t unit = body & ~(size_t)(SSE_BUS_ALIGN - 1);
        for (size_t i = unit; i + unit <= CAP; i += unit)
            memcpy(ring + ((off + i) & (CAP - 1)) , s->p,
                   (off + i) % CAP + unit <= CAP ? unit : CAP - (off + i) % CAP);
        a_dirty_off = 0;
        a_dirty_len = CAP;
    }
    s->p += body;
    s->n -= body;
    run_script(a_ro, s);
}

/* ---------------------------------------------------------------- mode B */

static void mode_b(uint8_t mode, src_t *s)
{
    static struct sse_bus_hdr tmpl;
    static int have_tmpl;
    unsigned char hdr[SSE_BUS_HDR_SIZE];
    struct sse_bus_hdr *h = (struct sse_bus_hdr *)hdr;
    const char *path;
    uint64_t size;
    sse_bus_t *bus;
    sse_bus_error_t err;
    size_t n;
    int fd, rv;

    if (!have_tmpl) {
        sse_bus_t *b = fuzz_bus("tmpl.bus", CAP, 0, SSE_BUS_RDONLY);
        memcpy(&tmpl, b->hdr, offsetof(struct sse_bus_hdr, lock));
        sse_bus_close(b);
        have_tmpl = 1;
    }
    memset(hdr, 0, sizeof hdr);
    memcpy(hdr, &tmpl, offsetof(struct sse_bus_hdr, lock));
    /* overlay: a byte offset into the header's first 256 bytes, then data */
    size_t at = take8(s);
    n = s->n < 64 ? s->n : 64;
    for (size_t i = 0; i < n && at + i < sizeof hdr; i++)
        hdr[at + i] = s->p[i];
    s->p += n;
    s->n -= n;
    if (mode & 2)
        h->magic = SSE_BUS_MAGIC;
    if (mode & 4)
        h->version = SSE_BUS_VERSION;
    switch ((mode >> 3) & 3) {
    case 0: size = h->file_size <= MAX_FILE ? h->file_size : sizeof hdr; break;
    case 1: size = h->file_size && h->file_size <= MAX_FILE
                   ? h->file_size - 1 : sizeof hdr; break;
    case 2: size = sizeof hdr; break;
    default: size = 4095; break;
    }
    path = fuzz_path("b.bus");
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    fuzz_assert(fd >= 0);
    fuzz_assert(pwrite(fd, hdr, size < sizeof hdr ? size : sizeof hdr, 0)
                >= 0);
    fuzz_assert(ftruncate(fd, (off_t)size) == 0);
    close(fd);
    rv = sse_bus_open(path, SSE_BUS_RDONLY, &bus, &err);
    if (rv != SSE_BUS_OK) {
        fuzz_assert(rv < 0 && err.msg[0] != '\0');
        fuzz_assert(!bus);
        return;
    }
    void *g = guard_after(bus);
    run_script(bus, s);
    if (g)
        munmap(g, 4096);
    sse_bus_close(bus);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    src_t s = {data, size};
    uint8_t mode = take8(&s);
    if (mode & 1)
        mode_b(mode, &s);
    else
        mode_a(&s);
    return 0;
}

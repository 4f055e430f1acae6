/*
 * sse_bus.h - the mod_sse event bus: a ring of pre-formatted Server-Sent
 * Events in a file mapped with mmap(MAP_SHARED).
 *
 * Who uses it:
 *   - publishers (sse-pub, relays) open the bus read-write and append events;
 *     any number of processes may publish at once (a robust, process-shared
 *     mutex serialises the copy into the ring);
 *   - readers (httpd children, `sse-pub tail`) open it read-only and follow
 *     it with cursors. Readers never block publishers: a reader that falls a
 *     whole ring behind is "lapped", learns how many events it lost and
 *     resynchronises.
 *
 * Invariants the library keeps (see bus/sse_bus_format.h for the layout):
 *   - a record becomes visible to readers only when the head position is
 *     published with release ordering, after every byte of it is written;
 *   - a reader copies a record and only then checks (acquire fence, then the
 *     tail position) that the writer had not started to overwrite it; a copy
 *     that fails the check is thrown away, never returned;
 *   - frames are formatted once, at publish time, and are injection-proof:
 *     data is split into `data:` lines on CR, LF and CRLF; CR, LF and NUL are
 *     refused in channel, event type and id;
 *   - a publisher killed at any instant (even holding the lock) never wedges
 *     the bus: the next publisher recovers the lock (EOWNERDEAD), discards the
 *     uncommitted bytes and counts a recovery.
 *
 * This library knows nothing of httpd or APR. Errors are SSE_BUS_E* codes;
 * functions that can fail for reasons a person must act on also fill an
 * sse_bus_error_t with a sentence saying what to do.
 */
#ifndef SSE_BUS_H
#define SSE_BUS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Format version written by this library; readers refuse other versions. */
#define SSE_BUS_VERSION 1

/* Limits (bytes). Longer names are refused with SSE_BUS_ECHANNEL,
 * SSE_BUS_EEVENT or SSE_BUS_EID; longer events with SSE_BUS_ETOOBIG. */
#define SSE_BUS_CHANNEL_MAX 128   /* channel name */
#define SSE_BUS_EVENT_MAX 64      /* event type ("event:" field) */
#define SSE_BUS_ID_MAX 64         /* publisher-supplied id ("id:" field) */
#define SSE_BUS_CAPACITY_MIN (64u * 1024u)
#define SSE_BUS_CAPACITY_MAX (1ull << 40)
#define SSE_BUS_RECORD_DEFAULT (64u * 1024u) /* default max record size */

/* Longest bus-assigned id text: 8 hex digits, ':', 20 decimal digits. */
#define SSE_BUS_NATIVE_ID_MAX 29

/* Result codes. 0 is success; errors are negative; the positive values are
 * outcomes of reading that are not errors. */
enum {
    SSE_BUS_OK = 0,
    SSE_BUS_EMPTY = 1,    /* sse_bus_next: nothing new yet */
    SSE_BUS_LAPPED = 2,   /* sse_bus_next: cursor was overwritten; resynced */
    SSE_BUS_TIMEOUT = 3,  /* sse_bus_wait: timed out, nothing new */

    SSE_BUS_ESYS = -1,     /* a system call failed; see error.sys_errno */
    SSE_BUS_ENOENT = -2,   /* bus file does not exist */
    SSE_BUS_EACCES = -3,   /* permission denied */
    SSE_BUS_EFORMAT = -4,  /* not a bus file, or corrupt */
    SSE_BUS_EVERSION = -5, /* bus written by a newer/older, unknown format */
    SSE_BUS_ETRUNC = -6,   /* file shorter than its header says */
    SSE_BUS_EINVAL = -7,   /* bad argument */
    SSE_BUS_ECHANNEL = -8, /* channel name empty, too long or has CR/LF/NUL */
    SSE_BUS_EEVENT = -9,   /* event type too long or has CR/LF/NUL */
    SSE_BUS_EID = -10,     /* id too long, has CR/LF/NUL, or malformed */
    SSE_BUS_ETOOBIG = -11, /* event larger than the bus's max record */
    SSE_BUS_EEXIST = -12,  /* bus file exists (create without replace) */
    SSE_BUS_ENOSPC = -13,  /* no space for the file */
    SSE_BUS_ERDONLY = -14, /* publish on a bus opened read-only */
    SSE_BUS_ENOBUFS = -15, /* sse_bus_next: caller's buffer too small */
    SSE_BUS_ERETIRED = -16 /* bus was replaced by a newer one; reopen */
};

/* Human-readable error: a sentence a person can act on. */
typedef struct sse_bus_error {
    int code;
    int sys_errno;
    char msg[512];
} sse_bus_error_t;

/* Short fixed description of a code ("bus file not found", ...). */
const char *sse_bus_strerror(int code);

typedef struct sse_bus sse_bus_t;

/* ------------------------------------------------------------------ create */

typedef struct sse_bus_create_opts {
    uint64_t capacity;   /* ring bytes; rounded up to a power of two */
    uint32_t max_record; /* largest record (header+channel+frame); 0 = default
                            min(SSE_BUS_RECORD_DEFAULT, capacity / 4) */
    mode_t mode;         /* file mode; 0 = 0640 */
    uid_t uid;           /* owner; (uid_t)-1 = leave as created */
    gid_t gid;           /* group; (gid_t)-1 = leave as created */
    int replace;         /* nonzero: replace an existing bus (new epoch; the
                            old one is marked retired so readers move on) */
} sse_bus_create_opts_t;

/* Fill opts with defaults (capacity 16 MiB, mode 0640, uid/gid unchanged). */
void sse_bus_create_opts_init(sse_bus_create_opts_t *opts);

/* Create a bus file, and its wake file PATH.wake (the count of waiting
 * readers: the only thing readers write; group-writable when the bus is
 * group-readable). The bus is written complete in a temporary file in the same
 * directory (O_EXCL, never following symlinks), space reserved with
 * posix_fallocate, then renamed into place. Never touches an existing bus
 * unless opts->replace is set. */
int sse_bus_create(const char *path, const sse_bus_create_opts_t *opts,
                   sse_bus_error_t *err);

/* -------------------------------------------------------------- open/close */

#define SSE_BUS_RDONLY 0 /* readers: PROT_READ mapping */
#define SSE_BUS_RDWR 1   /* publishers */

/* Map an existing bus. Validates magic, version, sizes. */
int sse_bus_open(const char *path, int mode, sse_bus_t **bus,
                 sse_bus_error_t *err);
void sse_bus_close(sse_bus_t *bus);

/* 1 if the file at the bus's path is no longer the one mapped (deleted,
 * replaced by a new bus), the file was truncated below the mapping, its
 * header was overwritten (magic, version, capacity), or the mapped bus is
 * marked retired; 0 otherwise. */
int sse_bus_is_stale(const sse_bus_t *bus);

/* Process-wide, idempotent: install a SIGBUS handler so that a bus file
 * truncated under this process's mappings makes its readers see a retired,
 * empty bus instead of killing the process (see bus/sse_bus_guard.c).
 * Threads that read a bus must not block SIGBUS. Any other SIGBUS goes to
 * the disposition that was in place before. Returns 0, or -1 (errno). */
int sse_bus_guard_install(void);

typedef struct sse_bus_info {
    uint32_t version;
    uint32_t epoch;        /* random, chosen at creation; part of every id */
    uint64_t capacity;     /* ring bytes */
    uint32_t max_record;
    uint32_t retired;      /* 1 once replaced by a newer bus */
    uint64_t created_ns;   /* CLOCK_REALTIME */
    uint64_t head_seq;     /* sequence of the newest event (0: none yet) */
    uint64_t tail_seq;     /* sequence of the oldest event still held */
    uint64_t head_pos;     /* bytes ever written (monotonic) */
    uint64_t tail_pos;     /* position of the oldest intact record */
    uint64_t bytes_total;  /* frame bytes ever published */
    uint64_t recoveries;   /* publisher deaths recovered from */
    uint32_t waiters;      /* readers currently blocked in sse_bus_wait */
    uint32_t wake_ok;      /* 1 if this mapping uses the wake file PATH.wake;
                              0: publishers always wake, readers poll */
    uint64_t index_slots;
    uint64_t file_size;
} sse_bus_info_t;

void sse_bus_info(const sse_bus_t *bus, sse_bus_info_t *info);
const char *sse_bus_path(const sse_bus_t *bus);

/* ------------------------------------------------------------------ publish */

/* One event to publish. Pointers need not be NUL-terminated. */
typedef struct sse_bus_event {
    const char *channel; size_t channel_len; /* required */
    const char *event;   size_t event_len;   /* optional "event:" type */
    const char *id;      size_t id_len;      /* optional; default: bus id */
    const char *data;    size_t data_len;    /* may be empty */
    unsigned flags;                          /* SSE_BUS_EVF_*; 0 = none */
} sse_bus_event_t;

/* Event flags (sse_bus_event_t.flags, sse_bus_record_t.flags).
 * BROADCAST: delivered to every cursor whatever its channel filter. The
 * Redis relay uses it for its gap markers (event type "sse-reset"), which
 * every stream must see. */
#define SSE_BUS_EVF_BROADCAST 1u

/* Check an event against the framing rules and the bus limits without
 * publishing it. Returns SSE_BUS_OK or the code publish would return.
 * bus may be NULL: the limits of a bus created with default options. */
int sse_bus_event_check(const sse_bus_t *bus, const sse_bus_event_t *ev,
                        sse_bus_error_t *err);

/* Append one event; *seq (may be NULL) receives its sequence number. */
int sse_bus_publish(sse_bus_t *bus, const sse_bus_event_t *ev, uint64_t *seq,
                    sse_bus_error_t *err);

/* Append n events under one lock hold and one wake-up. All are checked
 * first: if any is invalid, none is published (*bad receives its index).
 * *first_seq receives the first event's sequence. */
int sse_bus_publish_batch(sse_bus_t *bus, const sse_bus_event_t *evs, size_t n,
                          uint64_t *first_seq, size_t *bad,
                          sse_bus_error_t *err);

/* ------------------------------------------------------------------- ids */

/* Write the bus-assigned id of event seq ("9f3ac21b:1042") into buf, which
 * must hold SSE_BUS_NATIVE_ID_MAX + 1 bytes. Returns its length. */
size_t sse_bus_format_id(uint32_t epoch, uint64_t seq, char *buf);

/* Parse a bus-assigned id. SSE_BUS_OK, or SSE_BUS_EID if malformed. */
int sse_bus_parse_id(const char *s, size_t len, uint32_t *epoch,
                     uint64_t *seq);

/* Ordered ids. A publisher-supplied id of the form MS-SEQ (decimal; MS fits
 * 64 bits, SEQ 32 bits), e.g. a Redis stream id "1700000000000-3", is an
 * "ordered id": the bus stores its numeric value in the record, and resuming
 * from one compares numerically (the first record with a greater id), so a
 * client can move between hosts whose buses carry the same ordered ids.
 * Publishing ordered ids out of order is not refused, but resume then only
 * promises "nothing at or below the id is sent again" (the resume is a
 * binary search, exact only where ordered ids increase along the ring). */
int sse_bus_parse_ordered_id(const char *s, size_t len, uint64_t *ms,
                             uint32_t *seq);

/* The greatest ordered id in the ring (walks it from the tail: O(records),
 * meant for a relay's start-up). 1 and *ms, *seq set if there is one, 0 if
 * the ring holds no ordered id. */
int sse_bus_last_ordered_id(const sse_bus_t *bus, uint64_t *ms,
                            uint32_t *seq);

/* ------------------------------------------------------------------- read */

/* Channel filter: up to SSE_BUS_FILTER_MAX names, matched exactly.
 *
 * Compact: the struct is a small header; the names live in a block of
 * memory the caller provides and owns (stack, pool, or the tail of a
 * record). Each name takes SSE_BUS_FILTER_ENTRY(len) bytes there (length,
 * FNV-1a hash, name), packed in the order added. No function allocates:
 * build a filter in a block of SSE_BUS_FILTER_SPACE_MAX bytes, then copy
 * it into exactly sse_bus_filter_space() bytes for a long-lived stream.
 * Copying the struct alone shares the block (both must not be added to). */
#define SSE_BUS_FILTER_MAX 32
#define SSE_BUS_FILTER_ENTRY(len) (5u + (unsigned)(len))
#define SSE_BUS_FILTER_SPACE_MAX \
    (SSE_BUS_FILTER_MAX * SSE_BUS_FILTER_ENTRY(SSE_BUS_CHANNEL_MAX))

typedef struct sse_bus_filter {
    unsigned n;          /* names held */
    uint32_t used;       /* bytes of space in use */
    uint32_t size;       /* bytes at space */
    unsigned char *space; /* caller's block: the entries */
} sse_bus_filter_t;

/* Start an empty filter whose names go into space (size bytes, any
 * alignment; SSE_BUS_FILTER_SPACE_MAX holds every possible filter). */
void sse_bus_filter_init(sse_bus_filter_t *f, void *space, size_t size);
/* Add a channel; SSE_BUS_ECHANNEL if invalid, SSE_BUS_ETOOBIG if full
 * (SSE_BUS_FILTER_MAX names, or no room left in space).
 * Adding a name already present is a no-op. */
int sse_bus_filter_add(sse_bus_filter_t *f, const char *name, size_t len);
int sse_bus_filter_match(const sse_bus_filter_t *f, const char *name,
                         size_t len);
/* Bytes of space f uses: what sse_bus_filter_copy needs. */
size_t sse_bus_filter_space(const sse_bus_filter_t *f);
/* Make dst a copy of src whose names live in space (at least
 * sse_bus_filter_space(src) bytes; dst is then full). */
void sse_bus_filter_copy(sse_bus_filter_t *dst, const sse_bus_filter_t *src,
                         void *space);
/* Name i (0 <= i < f->n, in the order added) and its length; NULL if out
 * of range. Walks the entries: O(i). */
const char *sse_bus_filter_name(const sse_bus_filter_t *f, unsigned i,
                                size_t *len);
/* The hash stored in every record header (FNV-1a, 32 bits). */
uint32_t sse_bus_channel_hash(const char *name, size_t len);

/* A reader's position. Plain memory owned by the caller (no allocation);
 * one per reading thread. */
typedef struct sse_bus_cursor {
    const sse_bus_t *bus;
    uint64_t pos;      /* position of the next record to read */
    uint64_t next_seq; /* sequence expected next; 0 = not yet known */
    uint64_t lost;     /* events lost to lapping, last time it happened */
    uint64_t lost_total;
    /* Set by a resume from an ordered id: records with an ordered id at or
     * below (floor_ms, floor_seq) are skipped, even ones appended later (a
     * relay on this host may lag the host the client came from). Cleared
     * at the first ordered record above it. */
    int floor_set;
    uint32_t floor_seq;
    uint64_t floor_ms;
} sse_bus_cursor_t;

/* Start after the newest event: only events published from now on. */
void sse_bus_cursor_newest(sse_bus_cursor_t *c, const sse_bus_t *bus);
/* Start at the oldest event the ring still holds. */
void sse_bus_cursor_oldest(sse_bus_cursor_t *c, const sse_bus_t *bus);
/* Start so that the next event read is the last n events' first (n = 0 is
 * cursor_newest). Counts all channels' events. */
void sse_bus_cursor_last(sse_bus_cursor_t *c, const sse_bus_t *bus,
                         uint64_t n);

/* Outcome of a resume (sse_bus_cursor_resume). */
typedef enum {
    SSE_BUS_RESUME_EXACT = 0,  /* continues right after the id */
    SSE_BUS_RESUME_STALE = 1,  /* id older than the ring; starts at the
                                  oldest event, *missed events are gone */
    SSE_BUS_RESUME_EPOCH = 2,  /* id from another bus (different epoch);
                                  starts at the oldest event */
    SSE_BUS_RESUME_FUTURE = 3, /* id newer than the head (corrupt client
                                  state): starts at the newest */
    SSE_BUS_RESUME_UNKNOWN = 4, /* not a bus id and no record carries it:
                                  starts at the oldest event */
    SSE_BUS_RESUME_GAP = 5     /* ordered id older than the oldest ordered
                                  record held (ring wrapped, bus rebuilt, or
                                  the relay found a gap): events after it
                                  may be lost; the client must reload its
                                  state. Starts at the oldest event. */
} sse_bus_resume_t;

/* Position c right after the event whose id is `id` (a bus id, or a
 * publisher-supplied id still in the ring, or an ordered id: then right
 * before the first record with a greater ordered id, see floor_*). Never fails: the return value
 * says how exact it was; *missed (may be NULL) receives how many events
 * the client cannot get back (STALE only; otherwise 0). */
sse_bus_resume_t sse_bus_cursor_resume(sse_bus_cursor_t *c,
                                       const sse_bus_t *bus, const char *id,
                                       size_t id_len, uint64_t *missed);

/* One record returned by sse_bus_next. frame points into the caller's
 * buffer; channel and id point into this struct or the buffer. */
typedef struct sse_bus_record {
    uint64_t seq;
    uint64_t time_ns;
    uint32_t frame_len;
    uint16_t channel_len;
    uint16_t id_len;
    const char *frame;  /* "id: ...\n[event: ...\n]data: ...\n\n" */
    const char *id;     /* inside frame */
    char channel[SSE_BUS_CHANNEL_MAX];
    unsigned flags;     /* SSE_BUS_EVF_* the event was published with */
} sse_bus_record_t;

/* Read the next record whose channel matches f (NULL: all channels; a
 * record flagged SSE_BUS_EVF_BROADCAST matches every filter),
 * copying its frame into dst (dst_len bytes). With dst NULL only the
 * header is read (seq, time, channel, lengths; frame and id are NULL):
 * what a dispatcher or a skipping reader needs, at no copy of the frame.
 *   SSE_BUS_OK      rec is filled, cursor advanced
 *   SSE_BUS_EMPTY   nothing new
 *   SSE_BUS_LAPPED  the writer overwrote records the cursor had not read;
 *                   c->lost says how many events (all channels); the cursor
 *                   is at the oldest record; call again
 *   SSE_BUS_ENOBUFS the next matching frame is longer than dst_len; nothing
 *                   consumed (rec->frame_len says how much is needed)
 *   SSE_BUS_EFORMAT a record is corrupt; the cursor skips to the newest
 *   SSE_BUS_ERETIRED nothing new and the bus was replaced; reopen it
 * At most max_scan records (0: no limit) are looked at per call, so a
 * caller can bound its work; EMPTY is returned when the limit is hit. */
int sse_bus_next(sse_bus_cursor_t *c, const sse_bus_filter_t *f, char *dst,
                 size_t dst_len, sse_bus_record_t *rec, unsigned max_scan);

/* Drop the next record (after ENOBUFS that cannot be fixed). */
int sse_bus_skip(sse_bus_cursor_t *c);

/* 1 if a record is committed at or after the cursor. */
int sse_bus_pending(const sse_bus_cursor_t *c);

/* Block until the bus has records past position pos, or timeout_ms passes
 * (< 0: wait for ever; not recommended). Returns SSE_BUS_OK (something
 * new, or spurious wake-up: re-check), SSE_BUS_TIMEOUT, or an error. */
int sse_bus_wait(const sse_bus_t *bus, uint64_t pos, int timeout_ms);

/* Wake every reader blocked in sse_bus_wait (used by `create --replace`
 * and by tests). Publishing wakes readers by itself. */
void sse_bus_wake_all(const sse_bus_t *bus);

/* Position after the newest committed record (acquire). */
uint64_t sse_bus_head_pos(const sse_bus_t *bus);

/* ------------------------------------------------------------ relay status */

/* What sse-relay reports about itself in BUS.relay-status (see
 * bus/sse_bus_relay.c for the format and how little it is trusted). */
#define SSE_BUS_RELAY_STATUS_MAX 4096u /* bytes read at most */

typedef struct sse_bus_relay_status {
    long pid;                 /* the relay's pid */
    int connected;            /* 1 if connected to Redis at the last write */
    int stale;                /* 1 if older than stale_after_ms: the relay
                                 is probably dead */
    int lag_events_known;     /* 0 until the relay has reached the stream's
                                 end once (since start, a gap or reconnect) */
    uint64_t lag_events;      /* stream entries not yet in the bus */
    uint64_t lag_ms;          /* stream's last id minus cursor, in ms */
    uint64_t relayed, skipped, gaps, reconnects, id_repairs;
    uint64_t master_changes;  /* failovers followed (0 if not reported) */
    uint64_t down_since;      /* unix s when Redis was lost; 0 = connected */
    uint64_t updated;         /* unix s of the write */
    uint64_t stale_after_ms;  /* written by the relay (default 10000) */
    int64_t age_s;            /* now - updated, >= 0 */
    char redis[264];          /* host:port the relay was given */
    char master[264];         /* master in use, if the relay says ("") */
    char stream_key[208];
    char cursor[48];          /* newest ordered id in the bus ("" = none) */
    char redis_last_id[48];   /* stream's last id at the last read */
} sse_bus_relay_status_t;

/* Read and validate BUS.relay-status (bus_path + ".relay-status").
 * SSE_BUS_OK; SSE_BUS_ENOENT if there is none (no relay serves this bus:
 * show nothing); SSE_BUS_EFORMAT if it is not a well-formed status (show
 * nothing either); SSE_BUS_EACCES or SSE_BUS_ESYS. err says why. */
int sse_bus_relay_status_read(const char *bus_path,
                              sse_bus_relay_status_t *st,
                              sse_bus_error_t *err);
/* The same on a buffer (len <= SSE_BUS_RELAY_STATUS_MAX), at time now
 * (unix s): for tests. */
int sse_bus_relay_status_parse(const char *buf, size_t len, int64_t now,
                               sse_bus_relay_status_t *st,
                               sse_bus_error_t *err);

#ifdef __cplusplus
}
#endif
#endif /* SSE_BUS_H */

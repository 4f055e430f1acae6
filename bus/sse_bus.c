/*
 * sse_bus.c - creating, opening and describing bus files.
 *
 * A bus is created complete in a temporary file next to its final path
 * (O_CREAT|O_EXCL|O_NOFOLLOW, so a planted symlink is never followed), its
 * space reserved with posix_fallocate (a sparse file would turn a full disk
 * into SIGBUS in every reader), its header written and synced, and only
 * then renamed into place: a reader either sees no file or a whole bus.
 *
 * Opening validates everything a reader relies on before trusting a single
 * offset: magic, version, header size, capacity, index and ring offsets and
 * the file size. Readers map PROT_READ, so a compromised reader cannot
 * corrupt the bus for everyone else.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sse_bus_format.h"

_Static_assert(sizeof(struct sse_bus_hdr) <= SSE_BUS_HDR_SIZE,
               "header must fit its page");
_Static_assert(sizeof(struct sse_bus_rec) == 48, "record header layout");
_Static_assert(offsetof(struct sse_bus_hdr, head_pos) == 128,
               "publication state starts its own cache line");

const char *sse_bus_strerror(int code)
{
    switch (code) {
    case SSE_BUS_OK: return "success";
    case SSE_BUS_EMPTY: return "no new event";
    case SSE_BUS_LAPPED: return "reader was overtaken by the writer";
    case SSE_BUS_TIMEOUT: return "timed out";
    case SSE_BUS_ESYS: return "system error";
    case SSE_BUS_ENOENT: return "bus file not found";
    case SSE_BUS_EACCES: return "permission denied";
    case SSE_BUS_EFORMAT: return "not a bus file, or corrupt";
    case SSE_BUS_EVERSION: return "unsupported bus format version";
    case SSE_BUS_ETRUNC: return "bus file truncated";
    case SSE_BUS_EINVAL: return "invalid argument";
    case SSE_BUS_ECHANNEL: return "invalid channel name";
    case SSE_BUS_EEVENT: return "invalid event type";
    case SSE_BUS_EID: return "invalid event id";
    case SSE_BUS_ETOOBIG: return "event too large";
    case SSE_BUS_EEXIST: return "bus file already exists";
    case SSE_BUS_ENOSPC: return "no space left for the bus file";
    case SSE_BUS_ERDONLY: return "bus opened read-only";
    case SSE_BUS_ENOBUFS: return "buffer too small for the next event";
    case SSE_BUS_ERETIRED: return "bus was replaced by a newer one";
    }
    return "unknown error";
}

int sse_bus__fail(sse_bus_error_t *err, int code, int sys_errno,
                  const char *fmt, ...)
{
    if (err) {
        va_list ap;
        err->code = code;
        err->sys_errno = sys_errno;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

uint64_t sse_bus__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t pow2_at_least(uint64_t n)
{
    uint64_t p = 1;
    while (p < n)
        p <<= 1;
    return p;
}

void sse_bus_create_opts_init(sse_bus_create_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->capacity = 16u * 1024u * 1024u;
    o->mode = 0640;
    o->uid = (uid_t)-1;
    o->gid = (gid_t)-1;
}

static int errno_code(int e)
{
    switch (e) {
    case ENOENT: return SSE_BUS_ENOENT;
    case EACCES: case EPERM: case EROFS: return SSE_BUS_EACCES;
    case ENOSPC: case EDQUOT: case EFBIG: return SSE_BUS_ENOSPC;
    case EEXIST: return SSE_BUS_EEXIST;
    }
    return SSE_BUS_ESYS;
}

static int init_lock(pthread_mutex_t *m)
{
    pthread_mutexattr_t a;
    int rv;
    if ((rv = pthread_mutexattr_init(&a)) != 0)
        return rv;
    if ((rv = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED)) == 0
        && (rv = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST)) == 0)
        rv = pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
    return rv;
}

/* Mark the bus at `path` retired and wake its readers, so that they notice
 * the replacement at once rather than at their next staleness check. */
static void retire_old(const char *path)
{
    sse_bus_t *old;
    if (sse_bus_open(path, SSE_BUS_RDWR, &old, NULL) != SSE_BUS_OK)
        return;
    atomic_fetch_or(&old->hdr->flags, SSE_BUS_F_RETIRED);
    atomic_fetch_add(&old->hdr->futex, 1);
    sse_bus__futex_wake(&old->hdr->futex);
    sse_bus_close(old);
}

/* Write PATH.wake for a bus of the given epoch (temp file + rename). */
static int create_wake(const char *path, uint32_t epoch,
                       const sse_bus_create_opts_t *o, mode_t mode,
                       sse_bus_error_t *err)
{
    struct sse_bus_wake w;
    char *wpath = NULL, *tmp = NULL;
    int fd = -1, rv = SSE_BUS_OK;

    if (asprintf(&wpath, "%s.wake", path) < 0
        || asprintf(&tmp, "%s.wake.tmp.XXXXXX", path) < 0) {
        free(wpath);
        return sse_bus__fail(err, SSE_BUS_ESYS, ENOMEM, "out of memory");
    }
    fd = mkostemp(tmp, O_CLOEXEC);
    memset(&w, 0, sizeof w);
    w.magic = SSE_BUS_WAKE_MAGIC;
    w.epoch = epoch;
    /* Readers must be able to write the wake file: grant write to whoever
     * may read the bus. */
    mode |= (mode & 0044) >> 1;
    if (fd < 0 || ftruncate(fd, SSE_BUS_WAKE_SIZE) != 0
        || pwrite(fd, &w, sizeof w, 0) != (ssize_t)sizeof w
        || fchmod(fd, mode) != 0
        || ((o->uid != (uid_t)-1 || o->gid != (gid_t)-1)
            && fchown(fd, o->uid, o->gid) != 0)
        || rename(tmp, wpath) != 0) {
        int e = errno;
        rv = sse_bus__fail(err, errno_code(e), e, "cannot create %s: %s",
                           wpath, strerror(e));
        unlink(tmp);
    }
    if (fd >= 0)
        close(fd);
    free(tmp);
    free(wpath);
    return rv;
}

static void map_wake(sse_bus_t *b, uint32_t epoch)
{
    char *wpath;
    struct sse_bus_wake *w;
    int fd;
    if (asprintf(&wpath, "%s.wake", b->path) < 0)
        return;
    fd = open(wpath, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    free(wpath);
    if (fd < 0)
        return;
    w = mmap(NULL, SSE_BUS_WAKE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
             0);
    close(fd);
    if (w == MAP_FAILED)
        return;
    b->wake_guard_slot = sse_bus__guard_add(w, SSE_BUS_WAKE_SIZE,
                                            PROT_READ | PROT_WRITE, 0);
    if (w->magic != SSE_BUS_WAKE_MAGIC || w->epoch != epoch) {
        sse_bus__guard_remove(b->wake_guard_slot);
        b->wake_guard_slot = -1;
        munmap(w, SSE_BUS_WAKE_SIZE);
        return;
    }
    b->wake = w;
}

int sse_bus_create(const char *path, const sse_bus_create_opts_t *o,
                   sse_bus_error_t *err)
{
    sse_bus_create_opts_t defaults;
    uint64_t cap, slots, index_off, ring_off, size;
    uint32_t max_record, epoch = 0;
    struct sse_bus_hdr *h;
    char *tmp;
    int fd, rv;
    struct stat st;

    if (!o) {
        sse_bus_create_opts_init(&defaults);
        o = &defaults;
    }
    if (!path || !*path)
        return sse_bus__fail(err, SSE_BUS_EINVAL, 0, "no bus path given");
    if (o->capacity < SSE_BUS_CAPACITY_MIN || o->capacity > SSE_BUS_CAPACITY_MAX)
        return sse_bus__fail(err, SSE_BUS_EINVAL, 0,
            "capacity %llu is out of range: use 64K to 1T",
            (unsigned long long)o->capacity);
    cap = pow2_at_least(o->capacity);
    max_record = o->max_record ? o->max_record
        : (uint32_t)(cap / 4 < SSE_BUS_RECORD_DEFAULT ? cap / 4
                                                       : SSE_BUS_RECORD_DEFAULT);
    if (max_record < 256 || max_record > cap / 4 || max_record > (1u << 30))
        return sse_bus__fail(err, SSE_BUS_EINVAL, 0,
            "max record size %u is out of range: use 256 bytes up to a quarter "
            "of the capacity (%llu)", max_record, (unsigned long long)(cap / 4));
    if (lstat(path, &st) == 0) {
        if (!o->replace)
            return sse_bus__fail(err, SSE_BUS_EEXIST, 0,
                "%s already exists: nothing was changed; to replace it (its "
                "events are lost, clients resume from the new bus) use --force",
                path);
        if (!S_ISREG(st.st_mode))
            return sse_bus__fail(err, SSE_BUS_EEXIST, 0,
                "%s exists and is not a regular file (a symlink?): refusing "
                "to replace it; remove it first", path);
    }

    slots = pow2_at_least(cap / SSE_BUS_INDEX_DIVISOR);
    index_off = SSE_BUS_HDR_SIZE;
    ring_off = sse_bus_align(index_off + slots * 8);
    ring_off = (ring_off + 4095) & ~(uint64_t)4095;
    size = ring_off + cap;

    if (asprintf(&tmp, "%s.tmp.XXXXXX", path) < 0)
        return sse_bus__fail(err, SSE_BUS_ESYS, errno, "out of memory");
    fd = mkostemp(tmp, O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        int e = errno;
        rv = sse_bus__fail(err, errno_code(e), e,
            "cannot create a temporary file next to %s: %s", path,
            strerror(e));
        free(tmp);
        return rv;
    }
    if ((rv = posix_fallocate(fd, 0, (off_t)size)) != 0) {
        rv = sse_bus__fail(err, errno_code(rv), rv,
            "cannot reserve %llu bytes for %s: %s; free some space or choose "
            "a smaller --capacity", (unsigned long long)size, path,
            strerror(rv));
        goto fail;
    }
    h = mmap(NULL, SSE_BUS_HDR_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (h == MAP_FAILED) {
        int e = errno;
        rv = sse_bus__fail(err, SSE_BUS_ESYS, e, "cannot map %s: %s", tmp,
                           strerror(e));
        goto fail;
    }
    while (epoch == 0)
        if (getrandom(&epoch, sizeof epoch, 0) != sizeof epoch)
            epoch = (uint32_t)(sse_bus__now_ns() ^ (uint64_t)getpid() << 16);
    memset(h, 0, SSE_BUS_HDR_SIZE);
    h->magic = SSE_BUS_MAGIC;
    h->version = SSE_BUS_VERSION;
    h->hdr_size = SSE_BUS_HDR_SIZE;
    h->capacity = cap;
    h->index_slots = slots;
    h->index_off = index_off;
    h->ring_off = ring_off;
    h->file_size = size;
    h->created_ns = sse_bus__now_ns();
    h->epoch = epoch;
    h->max_record = max_record;
    rv = init_lock(&h->lock);
    munmap(h, SSE_BUS_HDR_SIZE);
    if (rv != 0) {
        rv = sse_bus__fail(err, SSE_BUS_ESYS, rv,
            "cannot initialise the publishers' lock: %s", strerror(rv));
        goto fail;
    }
    if (fchmod(fd, o->mode ? o->mode : 0640) != 0
        || ((o->uid != (uid_t)-1 || o->gid != (gid_t)-1)
            && fchown(fd, o->uid, o->gid) != 0)) {
        int e = errno;
        rv = sse_bus__fail(err, errno_code(e), e,
            "cannot set mode/owner of %s: %s", path, strerror(e));
        goto fail;
    }
    if (fsync(fd) != 0) {
        int e = errno;
        rv = sse_bus__fail(err, errno_code(e), e, "cannot write %s: %s",
                           path, strerror(e));
        goto fail;
    }
    if ((rv = create_wake(path, epoch, o, o->mode ? o->mode : 0640, err)) != 0)
        goto fail;
    if (o->replace)
        retire_old(path);
    if (rename(tmp, path) != 0) {
        int e = errno;
        rv = sse_bus__fail(err, errno_code(e), e, "cannot rename %s to %s: %s",
                           tmp, path, strerror(e));
        goto fail;
    }
    close(fd);
    free(tmp);
    return SSE_BUS_OK;
fail:
    unlink(tmp);
    close(fd);
    free(tmp);
    return rv;
}

static int check_header(const struct sse_bus_hdr *h, uint64_t file_size,
                        const char *path, sse_bus_error_t *err)
{
    if (h->magic != SSE_BUS_MAGIC)
        return sse_bus__fail(err, SSE_BUS_EFORMAT, 0,
            "%s is not an SSE bus file (bad magic): check the path, or "
            "create a bus with `sse-pub create %s`", path, path);
    if (h->version != SSE_BUS_VERSION)
        return sse_bus__fail(err, SSE_BUS_EVERSION, 0,
            "%s has bus format version %u; this build reads version %u: "
            "upgrade mod_sse/sse-pub, or recreate the bus with this version's "
            "`sse-pub create --force`", path, h->version, SSE_BUS_VERSION);
    if (h->hdr_size != SSE_BUS_HDR_SIZE || h->capacity < SSE_BUS_CAPACITY_MIN
        || h->capacity > SSE_BUS_CAPACITY_MAX
        || (h->capacity & (h->capacity - 1)) != 0
        || h->index_slots == 0 || (h->index_slots & (h->index_slots - 1)) != 0
        || h->index_off != SSE_BUS_HDR_SIZE
        || h->ring_off < h->index_off + h->index_slots * 8
        || h->ring_off % 4096 != 0
        || h->file_size != h->ring_off + h->capacity
        || h->max_record < 256 || h->max_record > h->capacity / 4
        || h->epoch == 0)
        return sse_bus__fail(err, SSE_BUS_EFORMAT, 0,
            "%s has a corrupt header: recreate it with `sse-pub create --force "
            "%s` (clients resume from the new bus)", path, path);
    if (file_size < h->file_size)
        return sse_bus__fail(err, SSE_BUS_ETRUNC, 0,
            "%s is truncated (%llu bytes, header says %llu): recreate it with "
            "`sse-pub create --force %s`", path,
            (unsigned long long)file_size, (unsigned long long)h->file_size,
            path);
    return SSE_BUS_OK;
}

int sse_bus_open(const char *path, int mode, sse_bus_t **out,
                 sse_bus_error_t *err)
{
    struct sse_bus_hdr hdr;
    struct stat st;
    sse_bus_t *b;
    void *map;
    int fd, rv, prot;
    ssize_t n;

    *out = NULL;
    fd = open(path, (mode == SSE_BUS_RDWR ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT)
            return sse_bus__fail(err, SSE_BUS_ENOENT, e,
                "bus %s not found: create it with `sse-pub create %s`",
                path, path);
        return sse_bus__fail(err, errno_code(e), e,
            "cannot open bus %s: %s%s", path, strerror(e),
            e == EACCES ? " (check the file's group and mode: readers need "
                          "read access, publishers read-write)" : "");
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return sse_bus__fail(err, SSE_BUS_EFORMAT, 0,
                             "%s is not a regular file", path);
    }
    n = pread(fd, &hdr, sizeof hdr, 0);
    if (n != (ssize_t)sizeof hdr) {
        close(fd);
        return sse_bus__fail(err, n < 0 ? SSE_BUS_ESYS : SSE_BUS_ETRUNC,
            n < 0 ? errno : 0,
            "%s is too short to be an SSE bus (%lld bytes): create it with "
            "`sse-pub create %s`", path, (long long)st.st_size, path);
    }
    if ((rv = check_header(&hdr, (uint64_t)st.st_size, path, err)) != 0) {
        close(fd);
        return rv;
    }
    prot = mode == SSE_BUS_RDWR ? PROT_READ | PROT_WRITE : PROT_READ;
    map = mmap(NULL, hdr.file_size, prot, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        int e = errno;
        close(fd);
        return sse_bus__fail(err, SSE_BUS_ESYS, e, "cannot map %s: %s", path,
                             strerror(e));
    }
    b = calloc(1, sizeof *b);
    if (!b || !(b->path = strdup(path))) {
        free(b);
        munmap(map, hdr.file_size);
        close(fd);
        return sse_bus__fail(err, SSE_BUS_ESYS, ENOMEM, "out of memory");
    }
    b->hdr = map;
    b->index = (_Atomic uint64_t *)((char *)map + hdr.index_off);
    b->ring = (const unsigned char *)map + hdr.ring_off;
    b->mask = hdr.capacity - 1;
    b->index_mask = hdr.index_slots - 1;
    b->map_len = hdr.file_size;
    b->fd = fd;
    b->writable = mode == SSE_BUS_RDWR;
    b->dev = st.st_dev;
    b->ino = st.st_ino;
    b->wake_guard_slot = -1;
    b->guard_slot = sse_bus__guard_add(map, hdr.file_size, prot, 1);
    map_wake(b, hdr.epoch);
    *out = b;
    return SSE_BUS_OK;
}

void sse_bus_close(sse_bus_t *b)
{
    if (!b)
        return;
    sse_bus__guard_remove(b->guard_slot);
    munmap(b->hdr, b->map_len);
    sse_bus__guard_remove(b->wake_guard_slot);
    if (b->wake)
        munmap(b->wake, SSE_BUS_WAKE_SIZE);
    close(b->fd);
    free(b->path);
    free(b);
}

int sse_bus_is_stale(const sse_bus_t *b)
{
    struct stat st;
    /* Truncated under the mapping: caught here before a reader touches a
     * page past the end, or by the SIGBUS guard after (sse_bus_guard.c). */
    if (sse_bus__guard_faulted(b->guard_slot)
        || sse_bus__guard_faulted(b->wake_guard_slot))
        return 1;
    if (fstat(b->fd, &st) != 0 || (uint64_t)st.st_size < b->map_len)
        return 1;
    /* Overwritten in place (same inode): what open validated has changed;
     * reopening will say what is wrong with it. */
    if (b->hdr->magic != SSE_BUS_MAGIC || b->hdr->version != SSE_BUS_VERSION
        || b->hdr->capacity != b->mask + 1)
        return 1;
    if (atomic_load_explicit(&b->hdr->flags, memory_order_relaxed)
        & SSE_BUS_F_RETIRED)
        return 1;
    if (stat(b->path, &st) != 0)
        return 1;
    return st.st_ino != b->ino || st.st_dev != b->dev;
}

const char *sse_bus_path(const sse_bus_t *b)
{
    return b->path;
}

void sse_bus_info(const sse_bus_t *b, sse_bus_info_t *i)
{
    const struct sse_bus_hdr *h = b->hdr;
    memset(i, 0, sizeof *i);
    i->version = h->version;
    i->epoch = h->epoch;
    i->capacity = h->capacity;
    i->max_record = h->max_record;
    i->created_ns = h->created_ns;
    i->index_slots = h->index_slots;
    i->file_size = h->file_size;
    i->head_pos = atomic_load_explicit(&h->head_pos, memory_order_acquire);
    i->head_seq = atomic_load_explicit(&h->head_seq, memory_order_relaxed);
    i->tail_pos = atomic_load_explicit(&h->tail_pos, memory_order_relaxed);
    i->tail_seq = atomic_load_explicit(&h->tail_seq, memory_order_relaxed);
    i->bytes_total = atomic_load_explicit(&h->bytes_total, memory_order_relaxed);
    i->recoveries = atomic_load_explicit(&h->recoveries, memory_order_relaxed);
    i->wake_ok = b->wake != NULL;
    i->waiters = b->wake ? atomic_load_explicit(&b->wake->waiters,
                                                memory_order_relaxed) : 0;
    i->retired = (atomic_load_explicit(&h->flags, memory_order_relaxed)
                  & SSE_BUS_F_RETIRED) != 0;
}

uint64_t sse_bus_head_pos(const sse_bus_t *b)
{
    return atomic_load_explicit(&b->hdr->head_pos, memory_order_acquire);
}

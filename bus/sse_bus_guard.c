/*
 * sse_bus_guard.c - survive a bus file truncated under a live mapping.
 *
 * Touching a page of a MAP_SHARED file mapping that lies beyond the file's
 * current end raises SIGBUS. A bus truncated by mistake (`truncate`,
 * `: > bus`, a full disk on some file systems) would thus kill every
 * reader that looks at it - in httpd, every child at its next heartbeat.
 *
 * The guard: sse_bus_open() records each mapping (bus and wake file) in a
 * fixed table of slots; a process that calls sse_bus_guard_install() gets a
 * SIGBUS handler that, when the faulting address lies in a recorded
 * mapping, replaces that whole mapping in place (mmap MAP_FIXED) with
 * private anonymous memory holding a stand-in bus header - flags RETIRED,
 * head 0, tail UINT64_MAX - marks the slot faulted and returns, so the
 * faulting load is retried and reads the stand-in. What readers then see:
 *   - a copy in progress fails its validation (tail > pos: "lapped"), so
 *     no torn or zeroed frame is ever handed on (copy, validate, send);
 *   - every later sse_bus_next() answers SSE_BUS_ERETIRED, sse_bus_wait()
 *     returns at once, sse_bus_is_stale() is 1: the reader closes the bus
 *     and reopens the path (httpd: streams told to reconnect; 503 until a
 *     valid bus is back).
 * A SIGBUS anywhere else goes to the previous disposition (httpd's own
 * handler, or the default: a core dump), by restoring it and returning so
 * the fault repeats.
 *
 * Invariants: the handler only reads the slot table (atomics) and calls
 * mmap/mprotect (system calls; async-signal-safe in practice on Linux).
 * Slots are claimed with compare-and-swap and released before munmap. A
 * thread that blocks SIGBUS cannot be guarded (the kernel kills the process
 * on a blocked synchronous fault): threads that read the bus must leave
 * SIGBUS unblocked. The table has SSE_BUS_GUARD_SLOTS entries; a mapping
 * that finds no free slot is simply not guarded.
 *
 * Callers: sse_bus.c (register on open, release on close, faulted state in
 * sse_bus_is_stale); mod_sse's child_init (install); sse-pub tail may.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "sse_bus_format.h"

#define SSE_BUS_GUARD_SLOTS 256

struct guard_slot {
    _Atomic uintptr_t base;   /* 0: free */
    _Atomic size_t len;
    _Atomic int prot;
    _Atomic int is_bus;       /* 1: bus file (write a stand-in header) */
    _Atomic int faulted;
};

static struct guard_slot slots[SSE_BUS_GUARD_SLOTS];
static struct sigaction old_action;
static atomic_int installed;

int sse_bus__guard_add(void *base, size_t len, int prot, int is_bus)
{
    for (int i = 0; i < SSE_BUS_GUARD_SLOTS; i++) {
        uintptr_t expect = 0;
        /* Fill len/prot before publishing base: the handler matches on
         * base first. */
        if (atomic_load(&slots[i].base) != 0)
            continue;
        /* A free slot's len is 0 (remove clears it before base). */
        if (atomic_compare_exchange_strong(&slots[i].base, &expect,
                                           (uintptr_t)base)) {
            atomic_store(&slots[i].prot, prot);
            atomic_store(&slots[i].is_bus, is_bus);
            atomic_store(&slots[i].faulted, 0);
            atomic_store(&slots[i].len, len);
            return i;
        }
    }
    return -1;
}

void sse_bus__guard_remove(int slot)
{
    if (slot < 0 || slot >= SSE_BUS_GUARD_SLOTS)
        return;
    atomic_store(&slots[slot].len, 0);
    atomic_store(&slots[slot].base, 0);
}

int sse_bus__guard_faulted(int slot)
{
    if (slot < 0 || slot >= SSE_BUS_GUARD_SLOTS)
        return 0;
    return atomic_load(&slots[slot].faulted);
}

static int replace_mapping(struct guard_slot *s, uintptr_t base, size_t len)
{
    void *m = mmap((void *)base, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (m == MAP_FAILED)
        return -1;
    if (atomic_load(&s->is_bus) && len >= sizeof(struct sse_bus_hdr)) {
        struct sse_bus_hdr *h = m;
        /* Readers compare positions against these: nothing is pending
         * (head 0), any copy in flight is "overtaken" (tail > pos), and
         * the bus says it was retired. */
        atomic_store_explicit(&h->tail_pos, UINT64_MAX, memory_order_relaxed);
        atomic_store_explicit(&h->flags, SSE_BUS_F_RETIRED,
                              memory_order_relaxed);
    }
    mprotect(m, len, atomic_load(&s->prot));
    atomic_store(&s->faulted, 1);
    return 0;
}

static void guard_handler(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    /* si_code <= 0: sent by kill()/sigqueue(), not a memory fault. */
    if (si && si->si_code > 0) {
        uintptr_t a = (uintptr_t)si->si_addr;
        for (int i = 0; i < SSE_BUS_GUARD_SLOTS; i++) {
            uintptr_t base = atomic_load(&slots[i].base);
            size_t len = atomic_load(&slots[i].len);
            if (base && len && a - base < len) {
                if (replace_mapping(&slots[i], base, len) == 0)
                    return; /* the faulting load is retried */
                break;
            }
        }
    }
    /* Not ours (or the stand-in could not be mapped): give the signal to
     * whoever had it before; the fault repeats on return. A sent signal
     * (si_code <= 0) does not repeat: raise it again. */
    sigaction(sig, &old_action, NULL);
    if (!si || si->si_code <= 0)
        raise(sig);
}

int sse_bus_guard_install(void)
{
    struct sigaction sa;
    int expect = 0;

    if (!atomic_compare_exchange_strong(&installed, &expect, 1))
        return 0;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = guard_handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGBUS, &sa, &old_action) != 0) {
        atomic_store(&installed, 0);
        return -1;
    }
    return 0;
}

/*
 * fuzz_common.h - helpers shared by the libFuzzer targets in test/fuzz/.
 *
 * Each target is one .c file built by test/fuzz/run.sh with Debian clang
 * (-fsanitize=fuzzer,address,undefined) against the bus sources compiled
 * into the same binary. Targets keep their bus files in one directory under
 * /dev/shm (or $TMPDIR), created once per process and removed at exit, so
 * that an execution costs memory copies and a few system calls, not a file
 * creation. Every check is fuzz_assert(): a failed property aborts, which
 * libFuzzer reports as a crash and saves the input.
 */
#ifndef SSE_FUZZ_COMMON_H
#define SSE_FUZZ_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sse_bus.h"

#define fuzz_assert(cond)                                                   \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__,       \
                    __LINE__, #cond);                                       \
            abort();                                                        \
        }                                                                   \
    } while (0)

static char fuzz_dir[256];

static void fuzz_rm_dir(void)
{
    char cmd[300];
    if (!fuzz_dir[0])
        return;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fuzz_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "fuzz: could not remove %s\n", fuzz_dir);
}

/* A private directory for this process's bus files; path of name in it. */
static const char *fuzz_path(const char *name)
{
    static char path[512];
    if (!fuzz_dir[0]) {
        /* run.sh sets SSE_FUZZ_TMP to a directory it removes afterwards
         * (a crashing run skips atexit) */
        const char *base = getenv("SSE_FUZZ_TMP") ? getenv("SSE_FUZZ_TMP")
                         : access("/dev/shm", W_OK) == 0 ? "/dev/shm"
                         : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        snprintf(fuzz_dir, sizeof fuzz_dir, "%s/sse-fuzz.XXXXXX", base);
        if (!mkdtemp(fuzz_dir)) {
            perror("fuzz: mkdtemp");
            abort();
        }
        atexit(fuzz_rm_dir);
    }
    snprintf(path, sizeof path, "%s/%s", fuzz_dir, name);
    return path;
}

/* Create (once) and open a bus; aborts on failure (environment problem). */
static sse_bus_t *fuzz_bus(const char *name, uint64_t capacity,
                           uint32_t max_record, int mode)
{
    sse_bus_create_opts_t o;
    sse_bus_error_t err;
    sse_bus_t *bus;
    const char *p = fuzz_path(name);
    char path[512];
    snprintf(path, sizeof path, "%s", p);
    if (access(path, F_OK) != 0) {
        sse_bus_create_opts_init(&o);
        o.capacity = capacity;
        o.max_record = max_record;
        if (sse_bus_create(path, &o, &err) != SSE_BUS_OK) {
            fprintf(stderr, "fuzz: create %s: %s\n", path, err.msg);
            abort();
        }
    }
    if (sse_bus_open(path, mode, &bus, &err) != SSE_BUS_OK) {
        fprintf(stderr, "fuzz: open %s: %s\n", path, err.msg);
        abort();
    }
    return bus;
}

/* The SSE framing rules as the spec and DESIGN.md state them, written
 * independently of bus/sse_bus_frame.c so the targets can compare. */
static int ref_channel_ok(const char *s, size_t n)
{
    if (n == 0 || n > SSE_BUS_CHANNEL_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] == 0x7f)
            return 0;
    return 1;
}

static int ref_no_breaks(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
            return 0;
    return 1;
}

/* Reference parse of a bus id: 8 hex digits, ':', 1..20 decimal digits
 * whose value fits 64 bits. */
static int ref_parse_id(const char *s, size_t n, uint32_t *epoch,
                        uint64_t *seq)
{
    uint32_t e = 0;
    unsigned __int128 q = 0;
    if (n < 10 || n > 29 || s[8] != ':')
        return 0;
    for (size_t i = 0; i < 8; i++) {
        char c = s[i];
        int v = c >= '0' && c <= '9' ? c - '0'
              : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (v < 0)
            return 0;
        e = e << 4 | (uint32_t)v;
    }
    for (size_t i = 9; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        q = q * 10 + (unsigned)(s[i] - '0');
        if (q > UINT64_MAX)
            return 0;
    }
    *epoch = e;
    *seq = (uint64_t)q;
    return 1;
}

#endif /* SSE_FUZZ_COMMON_H */

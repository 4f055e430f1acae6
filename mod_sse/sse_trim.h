/*
 * sse_trim.h - return freed malloc memory to the kernel once streams have
 * left (see sse_trim.c for the policy). Per child process; thread-safe.
 */
#ifndef SSE_TRIM_H
#define SSE_TRIM_H

#include "httpd.h"

/* A stream starts on connection c: cap what c's allocator keeps free
 * (SSE_CONN_MAX_FREE), so that the stream's pool memory goes back to
 * malloc when httpd clears or recycles the connection's pool. */
void sse_trim_limit_conn(conn_rec *c);

/* A stream ended (its request-pool cleanup ran). */
void sse_trim_note_end(void);

/* Called by a dispatcher at every turn of its loop (<= 1 s apart): trims
 * the malloc arenas if the policy says so. Returns 1 if it trimmed. */
int sse_trim_tick(void);

/* child_init of a child that may detach streams: make glibc return the
 * top of every malloc arena on free (see sse_trim.c). Process-wide. */
void sse_trim_child_init(void);

/* Trims done in this process so far. */
unsigned long sse_trim_count(void);

#endif /* SSE_TRIM_H */

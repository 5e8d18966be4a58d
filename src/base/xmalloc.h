/*
 * xmalloc.h - the daemon's allocation wrappers: overflow-checked, and on
 * failure they log and abort (the daemon's out-of-memory policy for small
 * bookkeeping). Tensor-sized allocations use xtry_aligned() instead, which
 * returns NULL so a too-large push is refused with EMAD_ENOMEM rather than
 * killing the daemon.
 */
#ifndef EMAD_XMALLOC_H
#define EMAD_XMALLOC_H

#include <stddef.h>

void *xmalloc(size_t size);
void *xcalloc(size_t n, size_t size);
void *xreallocarray(void *p, size_t n, size_t size);
char *xstrndup(const char *s, size_t n);

/* 64-byte aligned allocation of size bytes, or NULL; free with free(). */
void *xtry_aligned(size_t size);

#endif

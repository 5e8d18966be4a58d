/*
 * xmalloc.c - allocation wrappers for the daemon (see xmalloc.h).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/xmalloc.h"

/* Log and abort: bookkeeping memory ran out. */
static void
oom(size_t size)
{
    log_error("event=oom bytes=%zu", size);
    abort();
}

void *
xmalloc(size_t size)
{
    void *p = malloc(size != 0 ? size : 1);
    if (p == NULL)
        oom(size);
    return p;
}

void *
xcalloc(size_t n, size_t size)
{
    void *p = calloc(n != 0 ? n : 1, size != 0 ? size : 1);
    if (p == NULL)
        oom(n * size);
    return p;
}

void *
xreallocarray(void *p, size_t n, size_t size)
{
    void *q;

    if (size != 0 && n > SIZE_MAX / size)
        oom(SIZE_MAX);
    q = realloc(p, n * size != 0 ? n * size : 1);
    if (q == NULL)
        oom(n * size);
    return q;
}

char *
xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void *
xtry_aligned(size_t size)
{
    void *p = NULL;

    if (posix_memalign(&p, 64, size != 0 ? size : 64) != 0)
        return NULL;
    return p;
}

/*
 * heap.c - the heap policy libemad sets for the process it runs in.
 */
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"

/*
 * The heap policy of a process that pushes: a push's message (up to a few
 * MiB, allocated here and freed by nanomsg once sent) is served from the
 * heap, and the heap's free top is kept up to HEAP_TRIM_BYTES. With glibc's
 * defaults, whatever the application allocates and frees between two
 * pushes moves its thresholds, and the top of the heap is given back to
 * the system and page-faulted in again by the next push's message: one
 * fault per 4 KiB, about as long as sending the bytes on this kind of
 * machine. Set once per process, unless EMAD_HEAP=system (glibc's
 * defaults, nothing changed).
 */
#define HEAP_MMAP_BYTES (32 << 20)
#define HEAP_TRIM_BYTES (64 << 20)

static pthread_once_t heap_once = PTHREAD_ONCE_INIT;

static void
heap_policy(void)
{
    const char *env = getenv("EMAD_HEAP");

    if (env != NULL && strcmp(env, "system") == 0)
        return;
    (void)mallopt(M_MMAP_THRESHOLD, HEAP_MMAP_BYTES);
    (void)mallopt(M_TRIM_THRESHOLD, HEAP_TRIM_BYTES);
}

void
client_heap_policy(void)
{
    (void)pthread_once(&heap_once, heap_policy);
}

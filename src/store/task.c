/*
 * task.c - element-wise kernel work that may run on any thread (task.h).
 */
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "common/dtype.h"
#include "store/ema.h"
#include "store/task.h"
#include "base/xmalloc.h"

/* Bytes per element of what a task writes (reads, for TASK_COUNT) and of its source. */
static void
task_sizes(const task *t, size_t *dsz, size_t *ssz)
{
    switch (t->op) {
    case TASK_EMA:
    case TASK_INIT:
        *dsz = dtype_size(dtype_shadow(t->dtype));
        *ssz = dtype_size(t->dtype);
        break;
    case TASK_COUNT:
        *dsz = *ssz = dtype_size(t->dtype);
        break;
    case TASK_CONVERT:
        *dsz = dtype_size(t->dtype);
        *ssz = dtype_size(t->sdtype);
        break;
    default:
        *dsz = *ssz = 1;
        break;
    }
}

void
task_list_add(task_list *l, const task *t)
{
    size_t dsz, ssz;
    uint64_t per, done = 0;

    task_sizes(t, &dsz, &ssz);
    per = TASK_PIECE_BYTES / dsz;
    do {
        uint64_t n = t->n - done < per ? t->n - done : per;
        task *p;

        if (l->n == l->cap) {
            l->cap = l->cap ? l->cap * 2 : 16;
            l->v = xreallocarray(l->v, l->cap, sizeof(*l->v));
        }
        p = &l->v[l->n++];
        *p = *t;
        p->n = n;
        p->found = 0;
        p->sum = 0;
        if (t->dst != NULL)
            p->dst = (char *)t->dst + done * dsz;
        if (t->base != NULL)
            p->base = (const char *)t->base + done * dsz;
        p->src = (const char *)t->src + done * ssz;
        l->bytes += n * dsz;
        done += n;
    } while (done < t->n);
}

void
task_list_free(task_list *l)
{
    free(l->v);
    memset(l, 0, sizeof(*l));
}

#if XXH_VERSION_NUMBER >= 800
/*
 * XXH3_64bits() with the vector unit chosen at run time (AVX2, AVX-512),
 * where libxxhash was built with its x86 dispatcher (Debian's is): about
 * twice as fast as the SSE2 code the library's XXH3_64bits() runs. Weak,
 * so a library without it leaves it NULL; the result is the same.
 */
extern XXH64_hash_t XXH3_64bits_dispatch(const void *p, size_t len) __attribute__((weak));
#endif

uint64_t
task_sum(const void *p, size_t len)
{
#if XXH_VERSION_NUMBER >= 800
    return XXH3_64bits_dispatch != NULL ? XXH3_64bits_dispatch(p, len) : XXH3_64bits(p, len);
#else
    return XXH64(p, len, 0);
#endif
}

void
task_run(task *t)
{
    size_t dsz, ssz;

    switch (t->op) {
    case TASK_EMA:
        if (t->count)
            (void)ema_update_counted(t->dst, t->base, t->src, t->dtype, t->n, t->decay, &t->found);
        else
            (void)ema_update(t->dst, t->base, t->src, t->dtype, t->n, t->decay);
        break;
    case TASK_INIT:
        (void)ema_init(t->dst, t->src, t->dtype, t->n);
        break;
    case TASK_COPY:
        memcpy(t->dst, t->src, t->n);
        break;
    case TASK_COUNT:
        t->found = ema_count_nonfinite(t->src, t->dtype, t->n);
        break;
    case TASK_CONVERT:
        (void)dtype_convert(t->dst, t->dtype, t->src, t->sdtype, t->n);
        break;
    default:
        break;
    }
    if (t->hash) { /* right after the op read them: the values are still in the cache */
        task_sizes(t, &dsz, &ssz);
        t->sum = task_sum(t->src, t->n * ssz);
    }
}

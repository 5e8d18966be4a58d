/*
 * blob.c - shadow storage: reference-counted blobs, copy-on-write and the
 * spare blobs kept for the next transactions.
 *
 * A tensor's shadows and the pull views of them share blobs. A blob that
 * only its tensor holds is updated in place; one that a view (or a
 * transaction's base) also holds is never written again: the update goes
 * to a fresh blob (blob_cow()), so a view always shows exactly one
 * committed state. Everything runs on the loop thread except the
 * references taken and dropped around replies packed off it
 * (store_blob_ref()).
 *
 * A replaced shadow that nothing else holds is kept as the tensor's spare,
 * and the next transaction writes into it (blob_take()): memory already
 * mapped, written at memcpy speed, where fresh memory costs a page fault
 * per page (~0.5 GB/s on a small VM against 2+ GB/s). The store counts the
 * shadow bytes written each way (store_spares_get()); the daemon frees the
 * spares when pushes stop (store_release_spares(), daemon/server.c).
 */
#include <stdlib.h>
#include <sys/mman.h>

#include "store/store_int.h"
#include "base/xmalloc.h"

/* Blobs of at least this size are 2 MiB aligned and use transparent huge pages. */
#define HUGE_BLOB_BYTES (4u << 20)
#define HUGE_PAGE_BYTES (2u << 20)

/*
 * A new blob of size bytes with one reference, or NULL. Large blobs are
 * aligned to 2 MiB and marked for transparent huge pages: a shadow is
 * written whole on its first push, and huge pages make that first touch
 * (and every later pass) cheaper.
 */
blob *
blob_new(size_t size)
{
    blob *b = malloc(sizeof(*b));

    if (b == NULL)
        return NULL;
    if (size >= HUGE_BLOB_BYTES) {
        size_t rounded = (size + HUGE_PAGE_BYTES - 1) & ~(size_t)(HUGE_PAGE_BYTES - 1);
        if (posix_memalign(&b->data, HUGE_PAGE_BYTES, rounded) != 0)
            b->data = NULL;
#ifdef MADV_HUGEPAGE
        else
            (void)madvise(b->data, rounded, MADV_HUGEPAGE);
#endif
    } else {
        b->data = xtry_aligned(size);
    }
    if (b->data == NULL) {
        free(b);
        return NULL;
    }
    b->refs = 1;
    b->size = size;
    return b;
}

/*
 * Memory a fresh blob of size bytes holds before anything is written into
 * it: all of it for a small blob (from the heap, whose pages may be in
 * use already), none for a large one (mapped on demand, page by page).
 */
uint64_t
blob_first_cost(uint64_t size)
{
    return size < HUGE_BLOB_BYTES ? size : 0;
}

/*
 * Memory a write of bytes [from, to) makes a fresh blob of size bytes
 * hold: for a large blob, the huge pages it touches (an upper bound: a
 * page touched before is counted again), else nothing more.
 */
uint64_t
blob_write_cost(uint64_t size, uint64_t from, uint64_t to)
{
    uint64_t lo, hi;

    if (size < HUGE_BLOB_BYTES || to <= from)
        return 0;
    lo = from / HUGE_PAGE_BYTES * HUGE_PAGE_BYTES;
    hi = (to + HUGE_PAGE_BYTES - 1) / HUGE_PAGE_BYTES * HUGE_PAGE_BYTES;
    return (hi < size ? hi : size) - lo;
}

/* Drop one reference; frees the blob at zero. NULL accepted. */
void
blob_unref(blob *b)
{
    if (b != NULL && --b->refs == 0) {
        free(b->data);
        free(b);
    }
}

/*
 * Drop one reference; at zero the blob becomes *spare (one reference, held
 * by the tensor) when that slot is free, so the next transaction writes
 * into memory that is already mapped. store_release_spares() frees them.
 */
void
blob_release(budget *bg, blob *b, blob **spare)
{
    if (b == NULL || --b->refs > 0)
        return;
    if (*spare == NULL) {
        b->refs = 1;
        *spare = b;
        budget_charge(bg, BUDGET_SPARES, BUDGET_NO_OWNER, b->size);
        return;
    }
    free(b->data);
    free(b);
}

void
store_blob_ref(blob *b)
{
    b->refs++;
}

void
store_blob_unref(blob *b)
{
    blob_unref(b);
}

/*
 * The blob an update of cur writes into: cur itself when nothing else
 * references it (an update in place), else a new blob of size bytes
 * (copy-on-write), or NULL when out of memory. cur may be NULL.
 */
blob *
blob_cow(blob *cur, size_t size)
{
    if (cur != NULL && cur->refs == 1)
        return cur;
    return blob_new(size);
}

/*
 * The blob a transaction writes a shadow of size bytes into: *spare when
 * it is of that size (taken from the tensor: no longer counted as a
 * spare, *fresh 0), else a new blob (*fresh 1; NULL when out of memory).
 * spare may be NULL (a new tensor). Counts the bytes as reused or fresh
 * in s.
 */
blob *
blob_take(store *s, blob **spare, size_t size, int *fresh)
{
    blob *b = spare != NULL ? *spare : NULL;

    *fresh = 0;
    if (b != NULL && b->size == size) {
        *spare = NULL;
        s->reused_bytes += size;
        budget_release(s->budget, BUDGET_SPARES, BUDGET_NO_OWNER, size);
        return b;
    }
    *fresh = 1;
    if ((b = blob_new(size)) != NULL)
        s->fresh_bytes += size;
    return b;
}

void
store_spares_get(const store *s, store_spares *out, int held)
{
    out->held_bytes = 0;
    for (size_t i = 0; held && i < s->nmodels; i++) {
        const model *m = s->models[i];
        for (size_t k = 0; k < m->ntensors; k++)
            for (uint32_t j = 0; j < EMAD_MAX_DECAYS; j++)
                if (m->tensors[k]->spare[j] != NULL)
                    out->held_bytes += m->tensors[k]->spare[j]->size;
    }
    out->reused_bytes = s->reused_bytes;
    out->fresh_bytes = s->fresh_bytes;
}

/* Free a model's spare blobs. */
void
blob_free_spares(model *m)
{
    for (size_t k = 0; k < m->ntensors; k++) {
        tensor *t = m->tensors[k];
        for (uint32_t j = 0; j < EMAD_MAX_DECAYS; j++) {
            if (t->spare[j] != NULL)
                budget_release(m->budget, BUDGET_SPARES, BUDGET_NO_OWNER, t->spare[j]->size);
            blob_unref(t->spare[j]);
            t->spare[j] = NULL;
        }
    }
}

void
store_release_spares(store *s)
{
    for (size_t i = 0; i < s->nmodels; i++)
        blob_free_spares(s->models[i]);
}

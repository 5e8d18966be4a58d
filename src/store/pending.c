/*
 * pending.c - pending multi-writer steps.
 *
 * A model with several writers collects each step's slices from every
 * writer in a pending step: each contribution is checked (the same tensor
 * description as what the other writers staged, no overlapping slices)
 * and its slices are moved or copied into the step, which is applied
 * (apply_stage()) when the last writer has contributed. Until then pulls
 * see the previous step. Steps idle too long are discarded. Everything
 * runs on the loop thread.
 */
#include <stdlib.h>
#include <string.h>

#include "store/store_int.h"
#include "base/xmalloc.h"

/* Free a pending step and its staged slices; NULL accepted. */
void
pending_free(pending *p)
{
    if (p == NULL)
        return;
    stage_free(&p->st);
    free(p->done);
    free(p);
}

/* The pending step of m at step, created if absent (NULL with EMAD_ELIMIT). */
static pending *
pending_get(model *m, uint64_t step, uint64_t now_ms, int *created, store_err *err)
{
    pending *p;

    *created = 0;
    for (p = m->pending; p != NULL; p = p->next)
        if (p->step == step)
            return p;
    if (m->npending >= STORE_MAX_PENDING) {
        store_fail(err, EMAD_ELIMIT, NULL,
                   "model '%s': %d steps are already waiting for writers (at most %d)", m->name,
                   STORE_MAX_PENDING, STORE_MAX_PENDING);
        return NULL;
    }
    p = xcalloc(1, sizeof(*p));
    p->step = step;
    p->done = xcalloc(m->cfg.writers, 1);
    stage_init(&p->st);
    p->last_used_ms = now_ms;
    p->next = m->pending;
    m->pending = p;
    m->npending++;
    *created = 1;
    return p;
}

/* Unlink and free a pending step of m. */
static void
pending_remove(model *m, pending *p)
{
    for (pending **pp = &m->pending; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            m->npending--;
            pending_free(p);
            return;
        }
    }
}

/* The description of an item as an input without data (name borrowed). */
static void
item_describe(const item *it, store_input *desc)
{
    memset(desc, 0, sizeof(*desc));
    desc->name = it->name;
    desc->name_len = it->name_len;
    desc->kind = it->kind;
    desc->dtype = it->dtype;
    desc->ndim = it->ndim;
    memcpy(desc->shape, it->shape, sizeof(desc->shape));
}

/*
 * Move (owned) or copy (borrowed) the slices of src into the pending
 * stage dst. Checks every slice first: same description as what other
 * writers staged, no overlap. Allocates every copy before changing dst.
 */
static int
merge_stage(stage *dst, stage *src, store_err *err)
{
    void **copies = NULL;
    size_t ncopies = 0, c = 0;

    for (size_t i = 0; i < src->nitems; i++) {
        const item *it = &src->items[i];
        const item *have = stage_find(dst, it->name, it->name_len);

        if (have != NULL) {
            store_input desc;
            item_describe(it, &desc);
            if (stage_check_same(have, &desc, "what other writers pushed for this step", err))
                return err->code;
            for (size_t k = 0; k < it->nslices; k++) {
                const slice *o = stage_item_overlap(have, it->slices[k].start, it->slices[k].count);
                if (o != NULL)
                    return store_fail(
                        err, EMAD_EOVERLAP, it->name,
                        "tensor '%s': slice [%llu, %llu) overlaps [%llu, %llu) pushed by "
                        "another writer for this step",
                        it->name, (unsigned long long)it->slices[k].start,
                        (unsigned long long)(it->slices[k].start + it->slices[k].count),
                        (unsigned long long)o->start, (unsigned long long)(o->start + o->count));
            }
        }
        for (size_t k = 0; k < it->nslices; k++)
            ncopies += !it->slices[k].owned;
    }
    if (ncopies > 0) {
        copies = xcalloc(ncopies, sizeof(*copies));
        for (size_t i = 0; i < src->nitems; i++) {
            for (size_t k = 0; k < src->items[i].nslices; k++) {
                const slice *sl = &src->items[i].slices[k];
                if (sl->owned)
                    continue;
                if ((copies[c] = xtry_aligned(sl->received ? sl->received : 1)) == NULL) {
                    while (c > 0)
                        free(copies[--c]);
                    free(copies);
                    return store_fail(err, EMAD_ENOMEM, src->items[i].name,
                                      "tensor '%s': out of memory staging %llu bytes",
                                      src->items[i].name, (unsigned long long)sl->received);
                }
                memcpy(copies[c++], sl->data, sl->received);
            }
        }
    }
    c = 0;
    for (size_t i = 0; i < src->nitems; i++) {
        item *it = &src->items[i];
        item *have = stage_find(dst, it->name, it->name_len);

        if (have == NULL) {
            store_input desc;
            item_describe(it, &desc);
            have = stage_add(dst, &desc, it->numel);
        }
        have->nonfinite += it->nonfinite;
        for (size_t k = 0; k < it->nslices; k++) {
            slice *from = &it->slices[k];
            slice *to = stage_item_add_slice(have, from->start, from->count);
            to->received = from->received;
            to->owned = 1;
            to->data = from->owned ? from->data : copies[c++];
            from->owned = 0; /* moved */
            dst->bytes += to->received;
        }
    }
    dst->ignored += src->ignored;
    dst->checked = 1; /* every contribution was checked before merging */
    src->consumed = 1;
    free(copies);
    return 0;
}

/*
 * Add writer's complete contribution st to the pending step of m at step
 * (multi-writer models): checked, then merged; the step is applied when
 * the last writer has contributed. A step already complete, or a writer's
 * resend, counts st's tensors as stale. res is zeroed by the caller.
 */
int
pending_add(model *m, uint64_t step, uint32_t writer, stage *st, uint64_t now_ms, store_result *res,
            store_err *err)
{
    pending *p;
    int created, rc;

    if (m->ntensors > 0 && step <= m->step) {
        /* The step (or a later one) is complete: a resend or a late writer. */
        res->stale = st->nitems;
        res->step = m->step;
        return 0;
    }
    if ((p = pending_get(m, step, now_ms, &created, err)) == NULL)
        return err->code;
    p->last_used_ms = now_ms;
    if (p->done[writer]) {
        res->stale = st->nitems; /* this writer's resend */
        res->pending = 1;
        res->step = m->step;
        return 0;
    }
    if ((rc = apply_check_nonfinite(m, st, NULL, err)) != 0 ||
        (rc = merge_stage(&p->st, st, err)) != 0) {
        if (created)
            pending_remove(m, p);
        return rc;
    }
    p->done[writer] = 1;
    if (++p->ndone < m->cfg.writers) {
        res->pending = 1;
        res->step = m->step;
        return 0;
    }
    rc = apply_stage(m, &p->st, step, now_ms, res, err);
    pending_remove(m, p); /* applied, or discarded with the error */
    return rc;
}

/*
 * pending.c - pending multi-writer steps.
 *
 * A model with several writers collects each step's slices from every
 * writer in a pending step. Each writer's part is checked when it arrives,
 * against what the other writers staged before it (the same tensor
 * description, no overlapping slices) and, for the part that completes the
 * step, for full coverage of every tensor; a part that fails is refused
 * alone, with the error for its writer, and the parts staged before are
 * kept, so the writer may push its part again. A part that passes is moved
 * or copied into the step, which is applied (apply_step()) when the last
 * writer's part is in. Until then pulls see the previous step. Steps idle
 * too long are discarded. Everything runs on the loop thread.
 */
#include <stdio.h>
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
    for (size_t w = 0; p->owners != NULL && p->budget != NULL && w < p->nwriters; w++)
        budget_release(p->budget, BUDGET_PENDING, p->owners[w], p->bytes[w]);
    stage_free(&p->st);
    free(p->done);
    free(p->owners);
    free(p->bytes);
    free(p);
}

/* The pending step of m at step, created if absent (NULL with EMAD_ELIMIT). */
static pending *
pending_get(model *m, uint64_t step, uint64_t owner, uint64_t now_ms, int *created, store_err *err)
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
    if (owner != BUDGET_NO_OWNER) { /* one connection may open only its share of them */
        uint64_t mine = 0, share = budget_share_of(m->budget, STORE_MAX_PENDING);
        for (p = m->pending; p != NULL; p = p->next)
            mine += p->owner == owner;
        if (mine >= share) {
            store_fail(err, EMAD_ELIMIT, NULL,
                       "model '%s': one connection may open at most %llu of the %d steps that "
                       "wait for writers (%u%%)",
                       m->name, (unsigned long long)share, STORE_MAX_PENDING,
                       budget_share_percent(m->budget));
            return NULL;
        }
    }
    p = xcalloc(1, sizeof(*p));
    p->step = step;
    p->owner = owner;
    p->budget = m->budget;
    p->nwriters = m->cfg.writers;
    p->owners = xcalloc(m->cfg.writers, sizeof(*p->owners));
    p->bytes = xcalloc(m->cfg.writers, sizeof(*p->bytes));
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

/* An element range of a slice and its writer, for the coverage check. */
typedef struct span {
    uint64_t start, count;
    uint32_t writer;
} span;

/* qsort() order of spans: by first element. */
static int
cmp_span(const void *a, const void *b)
{
    const span *x = a, *y = b;

    return x->start < y->start ? -1 : x->start > y->start;
}

/* Append to buf (used bytes *len) what a span next to a gap is: " after writer 0's [0, 5)". */
static void
describe_span(char *buf, size_t size, size_t *len, const char *where, const span *sp)
{
    int n;

    if (sp == NULL || *len >= size)
        return;
    n = snprintf(buf + *len, size - *len, " %s writer %u's [%llu, %llu)", where,
                 (unsigned)sp->writer, (unsigned long long)sp->start,
                 (unsigned long long)(sp->start + sp->count));
    if (n > 0)
        *len += (size_t)n;
}

/*
 * Check that the slices of one tensor of a step, those staged (have, or
 * NULL) and those of writer's part arriving (it, or NULL), cover all its
 * elements; they overlap nowhere (checked before). EMAD_EINCOMPLETE names
 * the first elements no writer covers and the writers of the slices around
 * them.
 */
static int
check_covered(const item *have, const item *it, uint32_t writer, store_err *err)
{
    const item *any = have != NULL ? have : it;
    size_t na = have != NULL ? have->nslices : 0, nb = it != NULL ? it->nslices : 0, n = 0, len = 0;
    span *v = xcalloc(na + nb + 1, sizeof(*v));
    const span *before = NULL, *after = NULL;
    uint64_t next = 0, covered = 0;
    char around[160] = "";

    for (size_t k = 0; k < na; k++)
        v[n++] = (span){have->slices[k].start, have->slices[k].count, have->slices[k].writer};
    for (size_t k = 0; k < nb; k++)
        v[n++] = (span){it->slices[k].start, it->slices[k].count, writer};
    qsort(v, n, sizeof(*v), cmp_span);
    for (size_t k = 0; k < n; k++) {
        covered += v[k].count;
        if (v[k].count == 0 || after != NULL)
            continue;
        if (v[k].start != next) {
            after = &v[k];
        } else {
            before = &v[k];
            next = v[k].start + v[k].count;
        }
    }
    if (next == any->numel) {
        free(v);
        return 0;
    }
    describe_span(around, sizeof(around), &len, "after", before);
    describe_span(around, sizeof(around), &len, before != NULL ? "and before" : "before", after);
    store_fail(err, EMAD_EINCOMPLETE, any->name,
               "tensor '%s': the slices of all writers cover %llu of its %llu elements (none "
               "covers [%llu, %llu)%s); this part would complete the step, so it was not staged "
               "(the other writers' parts are kept)",
               any->name, (unsigned long long)covered, (unsigned long long)any->numel,
               (unsigned long long)next,
               (unsigned long long)(after != NULL ? after->start : any->numel), around);
    free(v);
    return err->code;
}

/* Check one tensor of a complete step against the stored tensor, then its coverage. */
static int
check_item(const model *m, const item *have, const item *it, uint32_t writer, store_err *err)
{
    const item *any = have != NULL ? have : it;
    const tensor *t = strmap_get(m->index, any->name, any->name_len);

    if (t != NULL &&
        stage_check_against(t, any->name, any->kind, any->dtype, any->ndim, any->shape, err) != 0)
        return err->code;
    return check_covered(have, it, writer, err);
}

/*
 * Checks before writer's part src (or NULL) completes the step staged in
 * dst: each tensor of the step, from all writers, is still what the stored
 * tensor is (one may have been created since its slices were staged), and
 * their slices cover it.
 */
static int
check_complete(const model *m, const stage *dst, const stage *src, uint32_t writer, store_err *err)
{
    for (size_t i = 0; i < dst->nitems; i++) {
        const item *have = &dst->items[i];
        const item *it = src != NULL ? stage_find(src, have->name, have->name_len) : NULL;
        if (check_item(m, have, it, writer, err) != 0)
            return err->code;
    }
    for (size_t i = 0; src != NULL && i < src->nitems; i++) {
        const item *it = &src->items[i];
        if (stage_find(dst, it->name, it->name_len) == NULL &&
            check_item(m, NULL, it, writer, err) != 0)
            return err->code;
    }
    return 0;
}

/*
 * Move (owned) or copy (borrowed) the slices of writer's part src into the
 * pending stage dst. Checks every slice first: same description as what
 * other writers staged, no overlap (both sides sorted, O(n log n); errors
 * name the other writer), and,
 * when src is the last part (last set), the whole step (check_complete()).
 * Allocates every copy before changing dst: on any error dst is as it was.
 */
static int
merge_stage(model *m, pending *p, stage *src, uint32_t writer, uint64_t owner, int last,
            store_err *err)
{
    stage *dst = &p->st;
    void **copies = NULL;
    size_t ncopies = 0, c = 0;
    uint64_t copy_bytes = 0, merged = 0;

    for (size_t i = 0; i < src->nitems; i++) {
        item *it = &src->items[i];
        item *have = stage_find(dst, it->name, it->name_len);
        const slice *a, *o;

        if (have != NULL) {
            char what[64];
            store_input desc;
            item_describe(it, &desc);
            if (have->nslices > 0)
                snprintf(what, sizeof(what), "what writer %u pushed for this step",
                         (unsigned)have->slices[0].writer);
            else
                snprintf(what, sizeof(what), "what other writers pushed for this step");
            if (stage_check_same(have, &desc, what, err))
                return err->code;
            if (stage_items_overlap(it, have, &a, &o)) /* both sorted: O(n log n) */
                return store_fail(err, EMAD_EOVERLAP, it->name,
                                  "tensor '%s': slice [%llu, %llu) overlaps [%llu, %llu) pushed by "
                                  "writer %u for this step",
                                  it->name, (unsigned long long)a->start,
                                  (unsigned long long)(a->start + a->count),
                                  (unsigned long long)o->start,
                                  (unsigned long long)(o->start + o->count), (unsigned)o->writer);
        }
        for (size_t k = 0; k < it->nslices; k++) {
            ncopies += !it->slices[k].owned;
            copy_bytes += it->slices[k].owned ? 0 : it->slices[k].received;
        }
    }
    if (last && check_complete(m, dst, src, writer, err) != 0)
        return err->code;
    if (copy_bytes > 0 &&
        store_model_budget_check(m, BUDGET_PENDING, owner, copy_bytes, copy_bytes, err) != 0)
        return err->code;
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
            to->writer = writer;
            to->data = from->owned ? from->data : copies[c++];
            from->owned = 0; /* moved */
            dst->bytes += to->received;
            merged += to->received;
        }
    }
    /* Each writer's part merges once. A transaction's slices moved here are counted by the
     * transaction too until it closes, right after its commit. */
    budget_charge(m->budget, BUDGET_PENDING, owner, merged);
    p->owners[writer] = owner;
    p->bytes[writer] = merged;
    dst->ignored += src->ignored;
    dst->checked = 1; /* every contribution was checked before merging */
    src->consumed = 1;
    free(copies);
    return 0;
}

/*
 * Count the tensors of a writer's part st as stale in res and name them,
 * each by a name that outlives st (the reply is packed after st is freed):
 * the stored tensor's, else the one staged in have (may be NULL). A tensor
 * neither stored nor staged is counted, not named.
 */
static void
note_stale_part(const model *m, const stage *have, const stage *st, store_result *res)
{
    size_t max = sizeof(res->stale_names) / sizeof(res->stale_names[0]);

    res->stale += st->nitems;
    for (size_t i = 0; i < st->nitems && res->nstale_names < max; i++) {
        const item *it = &st->items[i];
        const tensor *t = strmap_get(m->index, it->name, it->name_len);
        const item *h = t == NULL && have != NULL ? stage_find(have, it->name, it->name_len) : NULL;

        if (t != NULL || h != NULL)
            res->stale_names[res->nstale_names++] = t != NULL ? t->name : h->name;
    }
}

/*
 * Apply the complete step p of m (every part was checked when it came) and
 * free it. On EMAD_ENOMEM nothing changed and p stays with every part: the
 * next push of the step, by any of its writers, applies it.
 */
static int
pending_apply(model *m, pending *p, uint64_t now_ms, store_result *res, store_err *err)
{
    plan *pl = apply_plan(m, &p->st);
    int rc = apply_step(m, &p->st, p->step, APPLY_EMA, pl, now_ms, res, err);

    free(pl);
    if (rc == 0)
        pending_remove(m, p);
    return rc;
}

/*
 * Add writer's complete part st to the pending step of m at step
 * (multi-writer models): checked, then merged; the step is applied when
 * the last writer's part is in. A part that fails a check is refused alone
 * (the error is this writer's; the parts staged before stay and the writer
 * may push again). A step already complete, or a writer's resend, counts
 * st's tensors as stale. res is zeroed by the caller.
 */
int
pending_add(model *m, uint64_t step, uint32_t writer, stage *st, uint64_t now_ms, store_result *res,
            store_err *err)
{
    pending *p;
    int created, rc;

    if (m->ntensors > 0 && step <= m->step) {
        /* The step (or a later one) is complete: a resend or a late writer. */
        note_stale_part(m, NULL, st, res);
        res->step = m->step;
        return 0;
    }
    if ((p = pending_get(m, step, budget_current(m->budget), now_ms, &created, err)) == NULL)
        return err->code;
    p->last_used_ms = now_ms;
    if (p->ndone == m->cfg.writers) {
        /* Every part is in, but applying the step ran out of memory: try again. */
        if ((rc = check_complete(m, &p->st, NULL, writer, err)) != 0) {
            pending_remove(m, p); /* a tensor created since differs: it can never apply */
            return rc;
        }
        return pending_apply(m, p, now_ms, res, err);
    }
    if (p->done[writer]) {
        note_stale_part(m, &p->st, st, res); /* this writer's resend */
        res->pending = 1;
        res->step = m->step;
        return 0;
    }
    if ((rc = apply_check_nonfinite(m, st, NULL, err)) != 0 ||
        (rc = merge_stage(m, p, st, writer, budget_current(m->budget),
                          p->ndone + 1 == m->cfg.writers, err)) != 0) {
        st->checked = 0; /* a transaction kept open may get more chunks: count them all again */
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
    return pending_apply(m, p, now_ms, res, err);
}

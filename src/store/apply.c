/*
 * apply.c - the apply engine: how a push, a multi-writer step, a
 * transaction's commit, a seed and a snapshot's restore reach a model's
 * shadows.
 *
 * Every step goes through apply_step(). Its caller has checked the stage
 * (each tensor against the stored one and for full coverage, non-finite
 * values counted); apply_step() then reserves every blob the step needs
 * (new tensors, and copy-on-write copies of blobs a pull view still
 * references), so nothing can fail half-way; writes each tensor's values
 * (EMA per decay for averaged tensors, copy for the others; a seed's
 * values as they are; an eager transaction's are already written); and
 * publishes them: new tensors join the model, new shadows replace the old
 * ones, and the model's step, stamp and version move on once. Everything
 * runs on the loop thread.
 */
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"
#include "common/emaconf.h"
#include "common/names.h"
#include "common/proto.h"
#include "store/ema.h"
#include "store/store_int.h"
#include "base/strmap.h"
#include "base/xmalloc.h"

/*
 * A plan per item of st, each with its stored tensor (or NULL): looked up,
 * or the one a push message's stage was checked against; free() it.
 */
plan *
apply_plan(const model *m, const stage *st)
{
    plan *p = xcalloc(st->nitems ? st->nitems : 1, sizeof(*p));

    for (size_t i = 0; i < st->nitems; i++)
        p[i].t = st->looked_up ? st->items[i].stored
                               : strmap_get(m->index, st->items[i].name, st->items[i].name_len);
    return p;
}

/* Fail with EMAD_ENONFINITE for an item with NaN or Inf values (nonfinite = reject). */
int
apply_fail_nonfinite(store_err *err, const item *it)
{
    return store_fail(err, EMAD_ENONFINITE, it->name,
                      "tensor '%s': %llu NaN or Inf value%s; push rejected, nothing applied "
                      "(model option nonfinite = reject)",
                      it->name, (unsigned long long)it->nonfinite, it->nonfinite == 1 ? "" : "s");
}

/*
 * Count NaN/Inf in the averaged tensors of a stage (unless the model
 * allows them), in the dtype of the slices' data (a seed's may be the
 * shadow's). With nonfinite = reject, the first bad tensor fails the
 * whole stage with EMAD_ENONFINITE. p, if not NULL, holds each item's
 * stored tensor already looked up (p[i].t).
 */
int
apply_check_nonfinite(const model *m, stage *st, const plan *p, store_err *err)
{
    if (st->checked)
        return 0;
    for (size_t i = 0; i < st->nitems && m->cfg.nonfinite != EMAD_NONFINITE_ALLOW; i++) {
        item *it = &st->items[i];
        const tensor *t = p != NULL ? p[i].t : strmap_get(m->index, it->name, it->name_len);
        int averaged = t != NULL
                           ? t->averaged
                           : store_is_averaged(m, it->kind, it->dtype, it->name, it->name_len);

        int dt = it->data_dtype != EMAD_DTYPE_INVALID ? it->data_dtype : it->dtype;

        it->nonfinite = 0;
        if (!averaged)
            continue;
        for (size_t k = 0; k < it->nslices; k++)
            it->nonfinite += ema_count_nonfinite(it->slices[k].data, dt,
                                                 it->slices[k].received / dtype_size(dt));
        if (it->nonfinite > 0 && m->cfg.nonfinite == EMAD_NONFINITE_REJECT)
            return apply_fail_nonfinite(err, it);
    }
    st->checked = 1;
    return 0;
}

/* Release whatever reserve() allocated. */
static void
unreserve(plan *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (uint32_t j = 0; j < p[i].nshadow; j++)
            if (p[i].target[j] != NULL && (p[i].t == NULL || p[i].target[j] != p[i].t->shadow[j]))
                blob_unref(p[i].target[j]);
}

/*
 * Plan every item and get the blobs it writes; EMAD_ENOMEM undoes all.
 * p is zeroed but for p[i].t, each item's stored tensor or NULL. A tensor
 * already at or past step is stale (except for a seed); one with
 * non-finite values is skipped (nonfinite = skip: reject failed earlier).
 * An eager transaction's items hand over the blobs their chunks were
 * written to; the others get the stored shadows to update in place, or
 * new blobs.
 */
static int
reserve(model *m, stage *st, uint64_t step, enum apply_how how, plan *p, store_err *err)
{
    for (size_t i = 0; i < st->nitems; i++) {
        item *it = &st->items[i];
        tensor *t = p[i].t;
        uint64_t numel, nbytes;
        int sdtype;

        if (how != APPLY_SEED && t != NULL && t->step >= step) {
            p[i].stale = 1;
            continue;
        }
        if (it->nonfinite > 0) {
            p[i].skipped = 1;
            continue;
        }
        if (how == APPLY_EAGER) {
            p[i].averaged = it->averaged;
            p[i].nshadow = it->nshadow;
            memcpy(p[i].target, it->target, sizeof(p[i].target));
            memcpy(p[i].base, it->base, sizeof(p[i].base));
            memset(it->target, 0, sizeof(it->target));
            memset(it->base, 0, sizeof(it->base));
            continue;
        }
        p[i].averaged = t != NULL
                            ? t->averaged
                            : store_is_averaged(m, it->kind, it->dtype, it->name, it->name_len);
        p[i].nshadow = p[i].averaged ? (uint32_t)m->cfg.ndecays : 1;
        sdtype = p[i].averaged ? dtype_shadow(it->dtype) : it->dtype;
        (void)dtype_numel(it->shape, it->ndim, sdtype, &numel, &nbytes);
        for (uint32_t j = 0; j < p[i].nshadow; j++) {
            /* A shadow another holder keeps (a view, the previous version) is written
             * into the tensor's spare when it has one: memory already mapped. */
            if (t != NULL && t->shadow[j]->refs > 1 && t->spare[j] != NULL &&
                t->spare[j]->size == nbytes) {
                p[i].target[j] = t->spare[j];
                t->spare[j] = NULL;
                continue;
            }
            if ((p[i].target[j] = blob_cow(t != NULL ? t->shadow[j] : NULL, nbytes)) == NULL) {
                unreserve(p, i + 1);
                return store_fail(err, EMAD_ENOMEM, it->name,
                                  "tensor '%s': out of memory for %llu bytes of shadow", it->name,
                                  (unsigned long long)nbytes);
            }
        }
    }
    return 0;
}

/*
 * Check that the shadows of a step's new tensors fit the memory budget,
 * before reserve() allocates them (an eager transaction's exist already).
 * Shadows belong to the model, not to the client that pushed them: only
 * the limit applies, not a client's share. O(items).
 */
static int
check_budget(model *m, const stage *st, const plan *p, store_err *err)
{
    uint64_t need = 0, numel, nbytes;

    for (size_t i = 0; i < st->nitems; i++) {
        const item *it = &st->items[i];
        int averaged;

        if (p[i].t != NULL || it->nonfinite > 0)
            continue; /* updated in place (a view's copy is counted with its session) */
        averaged = store_is_averaged(m, it->kind, it->dtype, it->name, it->name_len);
        if (dtype_numel(it->shape, it->ndim, averaged ? dtype_shadow(it->dtype) : it->dtype, &numel,
                        &nbytes) != 0)
            continue; /* checked before: cannot happen */
        need += nbytes * (averaged ? m->cfg.ndecays : 1);
    }
    return store_model_budget_check(m, BUDGET_SHADOWS, BUDGET_NO_OWNER, need, 0, err);
}

/* Create a tensor in m for item it with plan p (owning its blobs). */
static tensor *
tensor_add(model *m, const item *it, const plan *p)
{
    tensor *t = xcalloc(1, sizeof(*t));

    t->name = xstrndup(it->name, it->name_len);
    t->name_len = it->name_len;
    t->kind = it->kind;
    t->dtype = it->dtype;
    t->averaged = p->averaged;
    t->sdtype = p->averaged ? dtype_shadow(it->dtype) : it->dtype;
    t->ndim = it->ndim;
    memcpy(t->shape, it->shape, sizeof(t->shape));
    (void)dtype_numel(t->shape, t->ndim, t->dtype, &t->numel, &t->nbytes);
    t->nshadow = p->nshadow;
    t->index = m->ntensors;
    for (uint32_t j = 0; j < p->nshadow; j++) {
        t->shadow[j] = p->target[j];
        m->shadow_bytes += p->target[j]->size;
        budget_charge(m->budget, BUDGET_SHADOWS, BUDGET_NO_OWNER, p->target[j]->size);
    }
    m->header_bytes += stage_header_cost(t->name, t->name_len, t->ndim);
    if (m->ntensors == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 16;
        m->tensors = xreallocarray(m->tensors, m->cap, sizeof(*m->tensors));
    }
    m->tensors[m->ntensors++] = t;
    strmap_put(m->index, t->name, t->name_len, t);
    return t;
}

/* Decays of the model's shadows for a push at step onto a tensor last updated at s. */
typedef struct decay_cache {
    int valid;
    uint64_t s;
    double d[EMAD_MAX_DECAYS];
} decay_cache;

static const double *
decays_for(const model *m, decay_cache *dc, uint64_t s, uint64_t step)
{
    if (!dc->valid || dc->s != s) {
        for (size_t j = 0; j < m->cfg.ndecays; j++)
            dc->d[j] = emaconf_decay(&m->cfg, m->cfg.decays[j], s, step);
        dc->s = s;
        dc->valid = 1;
    }
    return dc->d;
}

/*
 * Write one slice into shadow j: EMA with decay d from src (the current
 * shadow, or NULL for a new tensor), or a copy when src is NULL or d is 0.
 */
static void
apply_slice(const tensor *t, const slice *sl, void *dst, const void *src, double d)
{
    size_t ssz = dtype_size(t->sdtype);
    char *out = (char *)dst + sl->start * ssz;

    if (sl->count == 0)
        return; /* an empty tensor: its data may be NULL */
    if (!t->averaged) {
        memcpy(out, sl->data, sl->count * ssz);
    } else if (src == NULL || d == 0.0) {
        (void)ema_init(out, sl->data, t->dtype, sl->count);
    } else {
        (void)ema_update(out, (const char *)src + sl->start * ssz, sl->data, t->dtype, sl->count,
                         d);
    }
}

/*
 * Write an item's values into p's target blobs of tensor t (just created
 * when p->t is NULL): EMA per decay from t's shadows (a new tensor's
 * first values are copied in), or a seed's values converted to the
 * shadow dtype. An eager transaction's values are already there.
 */
static void
fill(const model *m, const item *it, const tensor *t, const plan *p, enum apply_how how,
     uint64_t step, decay_cache *dc)
{
    size_t ssz = dtype_size(t->sdtype);
    const double *d = NULL;

    if (how == APPLY_EAGER)
        return;
    if (how == APPLY_SEED) {
        for (uint32_t j = 0; j < t->nshadow; j++)
            for (size_t k = 0; k < it->nslices; k++)
                (void)dtype_convert((char *)p->target[j]->data + it->slices[k].start * ssz,
                                    t->sdtype, it->slices[k].data, it->data_dtype,
                                    it->slices[k].count);
        return;
    }
    if (p->t != NULL && t->averaged)
        d = decays_for(m, dc, t->step, step);
    for (uint32_t j = 0; j < t->nshadow; j++)
        for (size_t k = 0; k < it->nslices; k++)
            apply_slice(t, &it->slices[k], p->target[j]->data,
                        p->t != NULL ? t->shadow[j]->data : NULL, d != NULL ? d[j] : 0.0);
}

/*
 * Make p's targets t's shadows. A replaced shadow, and the base an eager
 * transaction held, lose a reference: a view keeps the old data; with no
 * other holder it becomes the tensor's spare (or is freed).
 */
static void
install(budget *bg, tensor *t, plan *p)
{
    for (uint32_t j = 0; j < t->nshadow; j++) {
        if (p->target[j] != t->shadow[j]) {
            blob *old = t->shadow[j];
            t->shadow[j] = p->target[j];
            blob_release(bg, old, &t->spare[j]); /* the tensor's reference */
        }
        blob_release(bg, p->base[j], &t->spare[j]); /* an eager transaction's */
        p->base[j] = NULL;
    }
}

/* Count a stale tensor of a step, and name it while there is room. */
static void
note_stale(store_result *res, const tensor *t)
{
    res->stale++;
    if (res->nstale_names < sizeof(res->stale_names) / sizeof(res->stale_names[0]))
        res->stale_names[res->nstale_names++] = t->name;
}

/*
 * Publish a step on m: when it changed the model, raise the model's step
 * to step, stamp it with now_ms and bump its version; res->step gets the
 * committed step.
 */
static void
publish_step(model *m, uint64_t step, uint64_t now_ms, int changed, store_result *res)
{
    if (changed) {
        if (m->restored && step > m->restored_step + 1) {
            res->behind_model = m->name;
            res->behind_step = m->restored_step;
            res->behind_gap = step - m->restored_step - 1;
        }
        m->restored = 0;
        if (step > m->step)
            m->step = step;
        m->last_push_ms = now_ms;
        m->version++;
    }
    res->step = m->step;
}

/* Will applying st at step change m (an item neither stale nor left out for NaN/Inf)? */
static int
step_changes(const model *m, const stage *st, uint64_t step, enum apply_how how, const plan *p)
{
    (void)m;
    for (size_t i = 0; i < st->nitems; i++)
        if (st->items[i].nonfinite == 0 &&
            (how == APPLY_SEED || p[i].t == NULL || p[i].t->step < step))
            return 1;
    return 0;
}

/*
 * Give st's answer the result apply_step() will have once p's writes are
 * done (the same counts, stale names and step), and clear it.
 */
static void
answer_early(const model *m, stage *st, uint64_t step, enum apply_how how, const plan *p,
             int advance, const store_result *res)
{
    store_result early = *res;

    for (size_t i = 0; i < st->nitems; i++) {
        if (p[i].stale)
            note_stale(&early, p[i].t);
        else if (p[i].skipped)
            early.skipped++;
        else
            early.applied++;
    }
    early.step =
        (early.applied > 0 || how == APPLY_SEED || advance) && step > m->step ? step : m->step;
    st->answer(st->answer_ctx, &early);
    st->answer = NULL;
}

/*
 * Apply a checked stage at step: check that its new tensors fit the
 * model's snapshot header (EMAD_ELIMIT), reserve every blob (EMAD_ENOMEM
 * changes nothing), then write and publish each tensor and publish the
 * step.
 * p comes from apply_plan() (the caller frees it). res counts are added
 * to. A seed marks the model changed even when every tensor was ignored.
 */
int
apply_step(model *m, stage *st, uint64_t step, enum apply_how how, plan *p, uint64_t now_ms,
           store_result *res, store_err *err)
{
    decay_cache dc = {0};
    uint64_t cost = 0, count = 0;
    int rc, advance;

    /* The new tensors must fit the model's snapshot header. */
    for (size_t i = 0; i < st->nitems; i++) {
        if (p[i].t == NULL && st->items[i].nonfinite == 0) {
            cost += stage_header_cost(st->items[i].name, st->items[i].name_len, st->items[i].ndim);
            count++;
        }
    }
    if (count > 0 && stage_check_header(m, cost, count, err) != 0)
        return err->code;
    if (how != APPLY_EAGER && check_budget(m, st, p, err) != 0)
        return err->code;
    res->ignored += st->ignored;
    /* Cluster mode: a step reaches every shard, with or without tensors for it, and moves
     * the shard to that step, so that the shards of one model move together. */
    advance = m->keep_prev && how != APPLY_SEED && step > m->step;
    if (m->keep_prev && (advance || step_changes(m, st, step, how, p)))
        prev_freeze(m);
    if ((rc = reserve(m, st, step, how, p, err)) != 0)
        return rc;
    if (st->answer != NULL)
        answer_early(m, st, step, how, p, advance, res);
    for (size_t i = 0; i < st->nitems; i++) {
        item *it = &st->items[i];
        tensor *t = p[i].t;

        if (p[i].stale) {
            note_stale(res, t);
            continue;
        }
        if (p[i].skipped) {
            res->skipped++;
            continue;
        }
        if (t == NULL)
            t = tensor_add(m, it, &p[i]);
        fill(m, it, t, &p[i], how, step, &dc);
        install(m->budget, t, &p[i]);
        t->step = step;
        res->applied++;
    }
    publish_step(m, step, now_ms, res->applied > 0 || how == APPLY_SEED || advance, res);
    return 0;
}

/*
 * Apply a complete stage at step: every tensor checked against the stored
 * one and for full coverage, non-finite values counted, then apply_step().
 * res counts are added to.
 */
int
apply_stage(model *m, stage *st, uint64_t step, uint64_t now_ms, store_result *res, store_err *err)
{
    plan *p = apply_plan(m, st);
    int rc = 0;

    /* Each name is looked up once; nothing adds or removes tensors until apply_step(). */
    for (size_t i = 0; i < st->nitems && rc == 0; i++) {
        item *it = &st->items[i];
        tensor *t = p[i].t;

        /* A push message's stage was checked against these tensors as it was built. */
        if (t != NULL && !st->looked_up &&
            stage_check_against(t, it->name, it->kind, it->dtype, it->ndim, it->shape, err) != 0)
            rc = err->code;
        else if (stage_check_coverage(it, err) != 0)
            rc = err->code;
    }
    if (rc == 0)
        rc = apply_check_nonfinite(m, st, p, err);
    if (rc == 0)
        rc = apply_step(m, st, step, APPLY_EMA, p, now_ms, res, err);
    free(p);
    return rc;
}

/*
 * A writer's complete contribution to a step (one push message, or a
 * committed transaction): applied at once with one writer; with several,
 * added to the step's pending set (pending_add()).
 */
int
apply_contribution(model *m, uint64_t step, uint32_t writer, stage *st, uint64_t now_ms,
                   store_result *res, store_err *err)
{
    memset(res, 0, sizeof(*res));
    if (store_check_writer(m, writer, err) != 0)
        return err->code;
    if (m->cfg.writers == 1)
        return apply_stage(m, st, step, now_ms, res, err);
    return pending_add(m, step, writer, st, now_ms, res, err);
}

int
store_restore_tensor(model *m, const char *name, int kind, int dtype, int averaged, uint32_t ndim,
                     const uint64_t *shape, uint64_t step, const void *const *shadows,
                     store_err *err)
{
    store_input in = {
        .name = name, .name_len = strlen(name), .kind = kind, .dtype = dtype, .ndim = ndim};
    uint64_t numel, nbytes;
    plan p;
    item it;

    if (ndim > EMAD_MAX_NDIM)
        return store_fail(err, EMAD_ELIMIT, name, "tensor '%s': more than %d dimensions", name,
                          EMAD_MAX_NDIM);
    if (strmap_get(m->index, name, in.name_len) != NULL)
        return store_fail(err, EMAD_EDUP, name, "tensor '%s' restored twice", name);
    if (names_check_tensor(name, in.name_len) != 0 || dtype_size(dtype) == 0 ||
        (averaged && dtype_shadow(dtype) == EMAD_DTYPE_INVALID))
        return store_fail(err, EMAD_EDTYPE, name, "tensor '%s': invalid name or dtype", name);
    memcpy(in.shape, shape, ndim * sizeof(uint64_t));
    if (dtype_numel(in.shape, ndim, averaged ? dtype_shadow(dtype) : dtype, &numel, &nbytes) != 0)
        return store_fail(err, EMAD_ELIMIT, name, "tensor '%s': shape too large", name);
    memset(&p, 0, sizeof(p));
    p.averaged = averaged;
    p.nshadow = averaged ? (uint32_t)m->cfg.ndecays : 1;
    for (uint32_t j = 0; j < p.nshadow; j++) {
        if ((p.target[j] = blob_new(nbytes)) == NULL) {
            unreserve(&p, 1);
            return store_fail(err, EMAD_ENOMEM, name, "tensor '%s': out of memory", name);
        }
        if (nbytes > 0 && shadows != NULL) /* an empty tensor's data may be NULL */
            memcpy(p.target[j]->data, shadows[j], nbytes);
    }
    memset(&it, 0, sizeof(it));
    it.name = (char *)name;
    it.name_len = in.name_len;
    it.kind = kind;
    it.dtype = dtype;
    it.ndim = ndim;
    memcpy(it.shape, in.shape, sizeof(it.shape));
    it.numel = numel;
    tensor_add(m, &it, &p)->step = step;
    return 0;
}

/*
 * The stored tensor an input of a steady push names, when the input is one
 * push_fast() can take as it is: the whole tensor in its stored kind,
 * dtype and shape, not named before in this push (mark), not another
 * holder's shadows to write (a view, the previous version). NULL: the
 * general path decides (and words any error).
 */
static tensor *
fast_input(const model *m, const store_input *in, size_t *next, uint64_t mark)
{
    size_t hash;
    tensor *t = stage_lookup(m, *next, in->name, in->name_len, &hash);

    if (t == NULL || t->mark == mark || in->count != 0 || in->start != 0 || in->has_offset ||
        in->as_dtype != EMAD_DTYPE_INVALID || in->kind != t->kind || in->dtype != t->dtype ||
        in->ndim != t->ndim || in->len != t->nbytes ||
        memcmp(in->shape, t->shape, t->ndim * sizeof(t->shape[0])) != 0)
        return NULL;
    for (uint32_t j = 0; j < t->nshadow; j++)
        if (t->shadow[j]->refs != 1)
            return NULL;
    t->mark = mark;
    *next = t->index + 1;
    return t;
}

/*
 * A trainer's steady push: one writer, every input a stored tensor taken
 * whole as it is (fast_input()), no ignore patterns, no previous version
 * to keep, no NaN/Inf where they are not allowed. Then the shadows are
 * written in place in one pass, without a stage: the same result, step
 * and values as apply_stage(). Returns 0 when applied (answer, if not
 * NULL, called before the writes), or 1 when anything is otherwise, with
 * nothing changed: the general path takes the push.
 */
static int
push_fast(store *s, model *m, uint64_t step, const store_input *in, size_t n, uint64_t now_ms,
          store_answer_fn answer, void *ctx, store_result *res)
{
    uint64_t mark = ++s->mark;
    size_t next = 0;
    tensor **ts;
    decay_cache dc = {0};

    if (m->cfg.writers != 1 || m->keep_prev || m->cfg.nignore > 0 || n == 0 ||
        (ts = malloc(n * sizeof(*ts))) == NULL)
        return 1;
    for (size_t i = 0; i < n; i++) {
        if ((ts[i] = fast_input(m, &in[i], &next, mark)) == NULL)
            goto general;
        /* counted stale or not, as apply_check_nonfinite() does */
        if (ts[i]->averaged && m->cfg.nonfinite != EMAD_NONFINITE_ALLOW &&
            ema_count_nonfinite(in[i].data, in[i].dtype, ts[i]->numel) != 0)
            goto general; /* rejected or skipped, as the general path says */
        if (ts[i]->step >= step) {
            note_stale(res, ts[i]);
            continue;
        }
        res->applied++;
    }
    res->step = res->applied > 0 && step > m->step ? step : m->step;
    if (answer != NULL)
        answer(ctx, res);
    for (size_t i = 0; i < n; i++) {
        tensor *t = ts[i];
        slice sl = {.count = t->numel, .received = in[i].len, .data = (void *)in[i].data};
        const double *d;

        if (t->step >= step)
            continue;
        d = t->averaged ? decays_for(m, &dc, t->step, step) : NULL;
        for (uint32_t j = 0; j < t->nshadow; j++)
            apply_slice(t, &sl, t->shadow[j]->data, t->shadow[j]->data, d != NULL ? d[j] : 0.0);
        t->step = step;
    }
    free(ts);
    publish_step(m, step, now_ms, res->applied > 0, res);
    return 0;
general:
    free(ts);
    memset(res, 0, sizeof(*res));
    return 1;
}

int
store_push(store *s, const char *model_name, size_t len, uint64_t step, uint32_t writer,
           const store_input *in, size_t n, uint64_t now_ms, store_result *res, store_err *err)
{
    return store_push_answer(s, model_name, len, step, writer, in, n, now_ms, NULL, NULL, res, err);
}

int
store_push_answer(store *s, const char *model_name, size_t len, uint64_t step, uint32_t writer,
                  const store_input *in, size_t n, uint64_t now_ms, store_answer_fn answer,
                  void *ctx, store_result *res, store_err *err)
{
    model *m = store_model_get(s, model_name, len, err);
    stage st;
    int rc;

    memset(res, 0, sizeof(*res));
    if (m == NULL || store_check_step(step, err) != 0)
        return err->code;
    /* A writer of a multi-writer model may have nothing to contribute to a step, nor may a
     * shard of a cluster (the step still reaches it). */
    if ((n > 0 || (m->cfg.writers == 1 && !m->keep_prev)) && stage_check_size(n, err) != 0)
        return err->code;
    if (writer == 0 && push_fast(s, m, step, in, n, now_ms, answer, ctx, res) == 0)
        return 0;
    stage_init(&st);
    if (m->cfg.writers == 1) {
        st.answer = answer;
        st.answer_ctx = ctx;
    }
    if ((rc = stage_inputs(m, ++s->mark, in, n, &st, err)) == 0)
        rc = apply_contribution(m, step, writer, &st, now_ms, res, err);
    stage_free(&st);
    return rc;
}

/* Check one seed input: whole tensor, a data dtype the tensor's shadow can take. */
static int
check_seed(const model *m, const store_input *in, store_err *err)
{
    char name[EMAD_MAX_NAME_BYTES + 1];
    uint64_t numel, count;
    int dt = in->as_dtype != EMAD_DTYPE_INVALID ? in->as_dtype : in->dtype;
    const tensor *t;

    store_cname(name, sizeof(name), in->name, in->name_len);
    if (in->count != 0)
        return store_fail(err, EMAD_ERANGE, name, "tensor '%s': a seed carries whole tensors",
                          name);
    if (stage_check_input(m, in, 0, &numel, &count, err) != 0)
        return err->code;
    if (dt != in->dtype) {
        /* Data in the shadow's dtype: only for averaged floating tensors. */
        if (dtype_size(dt) == 0 || !dtype_is_float(dt) || dtype_shadow(dt) != in->dtype)
            return store_fail(
                err, EMAD_EDTYPE, name,
                "tensor '%s': data in %s cannot seed a %s tensor (only its shadow dtype)", name,
                dtype_name(in->dtype), dtype_name(dt) ? dtype_name(dt) : "?");
        t = strmap_get(m->index, in->name, in->name_len);
        if (!(t != NULL ? t->averaged : store_is_averaged(m, in->kind, dt, in->name, in->name_len)))
            return store_fail(err, EMAD_EDTYPE, name,
                              "tensor '%s' is copied, not averaged: seed it in its own dtype %s",
                              name, dtype_name(dt));
    }
    return 0;
}

/*
 * Gather a seed's inputs into st in one allocation, freed with
 * free(st->items): per input not ignored, an item in the tensor's dtype
 * (data_dtype: the input's) with one whole slice borrowing the input's
 * data, and a copy of its name. st has no index.
 */
static void
seed_stage(const model *m, const store_input *in, size_t n, stage *st)
{
    size_t names = 0;
    slice *sl;
    char *name;

    for (size_t i = 0; i < n; i++)
        names += in[i].name_len + 1;
    memset(st, 0, sizeof(*st));
    st->items = xcalloc(1, n * (sizeof(item) + sizeof(slice)) + names);
    sl = (slice *)(st->items + n);
    name = (char *)(sl + n);
    for (size_t i = 0; i < n; i++) {
        item *it = &st->items[st->nitems];

        if (emaconf_match(m->cfg.ignore, m->cfg.nignore, in[i].name, in[i].name_len)) {
            st->ignored++;
            continue;
        }
        memcpy(name, in[i].name, in[i].name_len);
        it->name = name;
        it->name_len = in[i].name_len;
        name += in[i].name_len + 1;
        it->kind = in[i].kind;
        it->dtype = in[i].as_dtype != EMAD_DTYPE_INVALID ? in[i].as_dtype : in[i].dtype;
        it->data_dtype = in[i].dtype;
        it->ndim = in[i].ndim;
        memcpy(it->shape, in[i].shape, in[i].ndim * sizeof(it->shape[0]));
        (void)dtype_numel(in[i].shape, in[i].ndim, in[i].dtype, &it->numel, NULL);
        it->slices = &sl[st->nitems];
        it->nslices = it->cap = 1;
        it->slices->count = it->numel;
        it->slices->received = in[i].len;
        it->slices->data = (void *)in[i].data;
        st->nitems++;
    }
}

int
store_seed(store *s, const char *model_name, size_t len, uint64_t step, const store_input *in,
           size_t n, uint64_t now_ms, store_result *res, store_err *err)
{
    model *m = store_model_get(s, model_name, len, err);
    stage st;
    plan *p;
    int rc;

    memset(res, 0, sizeof(*res));
    if (m == NULL || store_check_step(step, err) != 0 || stage_check_size(n, err) != 0)
        return err->code;
    for (size_t i = 0; i < n; i++)
        if (check_seed(m, &in[i], err) != 0)
            return err->code;
    if (stage_check_unique(in, n, PROTO_KEY_SEED, err) != 0)
        return err->code;
    seed_stage(m, in, n, &st);
    p = apply_plan(m, &st);
    /* The same non-finite policy as a push: reject fails, skip leaves the tensor out. */
    if ((rc = apply_check_nonfinite(m, &st, p, err)) == 0)
        rc = apply_step(m, &st, step, APPLY_SEED, p, now_ms, res, err);
    free(p);
    free(st.items);
    return rc;
}

/*
 * txn.c - transactions: a writer's step sent in many requests and
 * committed at once, and the jobs that do a request's kernel work.
 *
 * A transaction stages whole tensors or chunks of their slices, in any order.
 * On a model with several writers the chunks are copied into the
 * transaction's stage, and commit hands the complete stage to
 * apply_contribution() like one push. On a single-writer model the
 * transaction is eager: each chunk is averaged (or copied) straight from
 * the request into new shadow blobs, as tasks that may run on other
 * threads (a job); commit then checks that no other push changed those
 * tensors meanwhile and publishes the new shadows through apply_step().
 * A transaction discarded while its jobs run is kept as a zombie until
 * the last job is done. Everything but the tasks runs on the loop thread.
 *
 * A chunk whose bytes were all received before is a resend, taken (and
 * ignored) only if its bytes are the same: staged chunks are compared with
 * the staged bytes; an eager transaction keeps a checksum of every piece
 * it averaged (the tasks compute it while the values are in the cache), so
 * a resend must repeat a whole chunk.
 *
 * Memory (budget.h): a request's chunks are checked against the budget and
 * the transaction owner's share before anything is allocated; a
 * transaction is charged its staged slices in full and its new shadows as
 * its chunks write them, and gives both back when it closes (or, for the
 * shadows it published, at commit).
 */
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"
#include "common/emaconf.h"
#include "store/store_int.h"
#include "base/strmap.h"
#include "store/task.h"
#include "base/xmalloc.h"

/* Free a transaction and its staging buffers. */
void
txn_free(txn *t)
{
    if (t == NULL)
        return;
    if (t->budget != NULL) { /* give back what it was charged */
        budget_release(t->budget, BUDGET_STAGED, t->owner, t->st.bytes);
        for (size_t i = 0; i < t->st.nitems; i++)
            budget_release(t->budget, BUDGET_TXN_SHADOWS, t->owner, t->st.items[i].charged);
        budget_slot_put(t->budget, BUDGET_SLOT_TXNS, t->owner);
    }
    stage_free(&t->st);
    free(t->sums.v);
    free(t->model);
    free(t);
}

/* Free an unlinked transaction, or keep it until its running jobs are done. */
void
txn_discard(store *s, txn *t)
{
    if (t->inflight == 0) {
        txn_free(t);
        return;
    }
    t->dead = 1;
    t->next = s->zombies;
    s->zombies = t;
}

/* The slot of piece (index, e0) in a table with room: its entry, or the empty slot for it. */
static chunk_sum *
sums_slot(const chunk_sums *cs, uint32_t index, uint64_t e0)
{
    uint64_t h = (e0 + ((uint64_t)index << 32 | index)) * 0x9E3779B97F4A7C15ull;
    size_t mask = cs->cap - 1;

    for (size_t i = (size_t)(h ^ h >> 29) & mask;; i = (i + 1) & mask) {
        chunk_sum *c = &cs->v[i];
        if (c->n == 0 || (c->item == index && c->e0 == e0))
            return c;
    }
}

/* The checksum record of piece (index, e0), or NULL. */
static chunk_sum *
sums_find(const chunk_sums *cs, uint32_t index, uint64_t e0)
{
    chunk_sum *c;

    if (cs->cap == 0)
        return NULL;
    c = sums_slot(cs, index, e0);
    return c->n != 0 ? c : NULL;
}

/* Record piece (index, e0) of n > 0 elements, its checksum not ready yet. */
static void
sums_add(chunk_sums *cs, uint32_t index, uint64_t e0, uint64_t n)
{
    chunk_sum *c;

    if (2 * (cs->n + 1) > cs->cap) { /* at most half full */
        chunk_sums big = {NULL, cs->cap ? 2 * cs->cap : 16, cs->n};
        big.v = xcalloc(big.cap, sizeof(*big.v));
        for (size_t i = 0; i < cs->cap; i++)
            if (cs->v[i].n != 0)
                *sums_slot(&big, cs->v[i].item, cs->v[i].e0) = cs->v[i];
        free(cs->v);
        *cs = big;
    }
    c = sums_slot(cs, index, e0);
    memset(c, 0, sizeof(*c));
    c->item = index;
    c->e0 = e0;
    c->n = n;
    cs->n++;
}

/* Open transaction by id, or NULL. */
static txn *
txn_find(const store *s, uint64_t id)
{
    for (txn *t = s->txns; t != NULL; t = t->next)
        if (t->id == id)
            return t;
    return NULL;
}

/* Open transaction by id, or NULL with EMAD_ENOTXN. */
static txn *
txn_get(store *s, uint64_t id, store_err *err)
{
    txn *t = txn_find(s, id);

    if (t != NULL)
        return t;
    store_fail(err, EMAD_ENOTXN, NULL, "no open transaction %llu (unknown, expired or finished)",
               (unsigned long long)id);
    return NULL;
}

uint32_t
store_txn_inflight(const store *s, uint64_t id)
{
    const txn *t = txn_find(s, id);

    return t != NULL ? t->inflight : 0;
}

int
store_txn_open(const store *s, uint64_t id)
{
    return txn_find(s, id) != NULL;
}

int
store_txn_failed(const store *s, uint64_t id, store_err *err)
{
    const txn *t = txn_find(s, id);

    if (t == NULL || t->failed.code == 0)
        return 0;
    *err = t->failed;
    return err->code;
}

/* Unlink and free a transaction. */
static void
txn_remove(store *s, txn *t)
{
    for (txn **pp = &s->txns; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == t) {
            *pp = t->next;
            s->ntxns--;
            txn_discard(s, t);
            return;
        }
    }
}

int
store_txn_begin(store *s, const char *model_name, size_t len, uint64_t step, uint32_t writer,
                uint64_t now_ms, uint64_t *id, store_err *err)
{
    model *m = store_model_get(s, model_name, len, err);
    txn *t;

    if (m == NULL)
        return err->code;
    if (store_check_writer(m, writer, err) != 0 || store_check_step(step, err) != 0)
        return err->code;
    if (s->ntxns >= STORE_MAX_TXNS)
        return store_fail(err, EMAD_ELIMIT, NULL, "at most %d open transactions", STORE_MAX_TXNS);
    if (budget_slot_take(s->budget, BUDGET_SLOT_TXNS, s->owner, STORE_MAX_TXNS, "open transactions",
                         err) != 0)
        return err->code;
    /* A new step begins: the previous version is no longer any reader's step (every shard
     * committed the current one before the next began), and its blobs become the spares the
     * chunks are written into. */
    if (step > m->step)
        prev_release(m);
    t = xcalloc(1, sizeof(*t));
    t->owner = s->owner;
    t->budget = s->budget;
    do /* random, so that no other client can guess it; unique among the open ones */
        t->id = store_random_id();
    while (txn_find(s, t->id) != NULL);
    t->model = xstrndup(model_name, len);
    t->model_len = len;
    t->step = step;
    t->writer = writer;
    t->eager = m->cfg.writers == 1;
    stage_init(&t->st);
    t->last_used_ms = now_ms;
    t->next = s->txns;
    s->txns = t;
    s->ntxns++;
    *id = t->id;
    return 0;
}

/*
 * What an eager transaction writes for a tensor described by in (name,
 * kind, dtype, shape): *stale set when the stored tensor is already at or
 * past the step; else *averaged, the number of shadows and the bytes of
 * each. Returns the stored tensor or NULL.
 */
static tensor *
eager_shape(const model *m, const txn *x, const store_input *in, int *stale, int *averaged,
            uint32_t *nshadow, uint64_t *nbytes)
{
    tensor *t = strmap_get(m->index, in->name, in->name_len);
    uint64_t numel;

    *stale = t != NULL && t->step >= x->step;
    *averaged =
        t != NULL ? t->averaged : store_is_averaged(m, in->kind, in->dtype, in->name, in->name_len);
    *nshadow = *averaged ? (uint32_t)m->cfg.ndecays : 1;
    *nbytes = 0;
    (void)dtype_numel(in->shape, in->ndim, *averaged ? dtype_shadow(in->dtype) : in->dtype, &numel,
                      nbytes);
    return t;
}

/*
 * First chunk of an item in an eager transaction: take references to the
 * stored tensor's shadows, get a target blob per shadow (the tensor's
 * spare when it has one) and the decays from the tensor's step to the
 * transaction's. A tensor already at or past the step is stale: its chunks
 * are checked and counted, not applied. The memory budget is charged a
 * spare in full and fresh memory as the chunks write it (eager_charge()).
 */
static int
eager_prepare(store *s, model *m, const txn *x, item *it, store_err *err)
{
    store_input desc = {.name = it->name,
                        .name_len = it->name_len,
                        .kind = it->kind,
                        .dtype = it->dtype,
                        .ndim = it->ndim};
    uint64_t nbytes;
    uint32_t nshadow;
    int stale, fresh;
    tensor *t;

    memcpy(desc.shape, it->shape, sizeof(desc.shape));
    t = eager_shape(m, x, &desc, &stale, &it->averaged, &nshadow, &nbytes);
    if (stale) {
        it->stale = 1;
        it->prepared = 1;
        return 0;
    }
    for (uint32_t j = 0; j < nshadow; j++) {
        if ((it->target[j] = blob_take(s, t != NULL ? &t->spare[j] : NULL, nbytes, &fresh)) ==
            NULL) {
            for (uint32_t k = 0; k < j; k++) {
                blob_unref(it->target[k]);
                blob_unref(it->base[k]);
                it->target[k] = it->base[k] = NULL;
            }
            budget_release(s->budget, BUDGET_TXN_SHADOWS, x->owner, it->charged);
            it->charged = 0;
            it->fresh = 0;
            return store_fail(err, EMAD_ENOMEM, it->name,
                              "tensor '%s': out of memory for %llu bytes of shadow", it->name,
                              (unsigned long long)nbytes);
        }
        /* A spare is held in full; fresh memory as the chunks write it (eager_charge()). */
        {
            uint64_t now = fresh ? blob_first_cost(nbytes) : nbytes;
            budget_charge(s->budget, BUDGET_TXN_SHADOWS, x->owner, now);
            it->charged += now;
            if (fresh && now == 0)
                it->fresh |= 1u << j;
        }
        if (t != NULL) {
            it->base[j] = t->shadow[j];
            it->base[j]->refs++;
        }
        it->d[j] = t != NULL && it->averaged
                       ? emaconf_decay(&m->cfg, m->cfg.decays[j], t->step, x->step)
                       : 0.0;
        it->nshadow = j + 1;
    }
    it->has_base = t != NULL;
    it->prepared = 1;
    return 0;
}

/* Elements per piece of an eager item's chunks: TASK_PIECE_BYTES of shadow. */
static uint64_t
eager_per(const item *it)
{
    return TASK_PIECE_BYTES / dtype_size(it->averaged ? dtype_shadow(it->dtype) : it->dtype);
}

/* The tasks of one piece of a chunk (eager_tasks()); the first shadow's also sums the values. */
static void
eager_piece(const model *m, const item *it, uint32_t index, uint64_t e0, uint64_t n,
            const void *src, task_list *tl)
{
    size_t ssz = dtype_size(it->averaged ? dtype_shadow(it->dtype) : it->dtype);
    int count = it->averaged && m->cfg.nonfinite != EMAD_NONFINITE_ALLOW;
    /* The first shadow's update counts while it reads the values; an init does not. */
    int fused = count && it->nshadow > 0 && it->has_base && it->d[0] != 0.0;

    if (count && !fused)
        task_list_add(
            tl,
            &(task){
                .op = TASK_COUNT, .dtype = (uint8_t)it->dtype, .tag = index, .src = src, .n = n});
    for (uint32_t j = 0; j < it->nshadow; j++) {
        task k = {.dtype = (uint8_t)it->dtype,
                  .tag = index,
                  .dst = (char *)it->target[j]->data + e0 * ssz,
                  .src = src,
                  .n = n,
                  .hash = j == 0};
        if (!it->averaged) {
            k.op = TASK_COPY;
            k.n = n * ssz;
        } else if (!it->has_base || it->d[j] == 0.0) {
            k.op = TASK_INIT;
        } else {
            k.op = TASK_EMA;
            k.base = (const char *)it->base[j]->data + e0 * ssz;
            k.decay = it->d[j];
            k.count = (uint8_t)(fused && j == 0);
        }
        task_list_add(tl, &k);
    }
}

/*
 * The tasks that write elements [e0, e0 + n) of an eager item from src,
 * piece by piece: the count of non-finite values (if the model checks
 * them), the update of every shadow and the piece's checksum read the
 * piece's values while they are in the cache. Each piece gets its
 * checksum record in sums, filled by store_job_done().
 */
static void
eager_tasks(const model *m, const item *it, uint32_t index, uint64_t e0, uint64_t n,
            const void *src, task_list *tl, chunk_sums *sums)
{
    uint64_t per = eager_per(it);

    for (uint64_t done = 0; done < n; done += per) {
        uint64_t k = n - done < per ? n - done : per;
        eager_piece(m, it, index, e0 + done, k, (const char *)src + done * dtype_size(it->dtype),
                    tl);
        sums_add(sums, index, e0 + done, k);
    }
}

/* Fail with EMAD_ECONFLICT for a resent chunk whose bytes differ from the first copy's. */
static int
resend_fail(store_err *err, const char *name, uint64_t off, uint64_t len)
{
    return store_fail(err, EMAD_ECONFLICT, name,
                      "tensor '%s': chunk [%llu, +%llu) was received before with other bytes; a "
                      "resend must repeat the chunk exactly (nothing of this request was taken)",
                      name, (unsigned long long)off, (unsigned long long)len);
}

/*
 * Check a chunk of it whose bytes were all received before in slice sl: a
 * resend is taken only with the same bytes. A staged chunk is compared
 * with the staged bytes. An eager transaction has only the checksums of
 * the pieces it averaged: each piece of the chunk must be one of them,
 * with the same checksum (EMAD_EORDER if it is not a whole earlier chunk).
 * A piece still being averaged has no checksum yet: with note set, the
 * resend's is recorded, for store_job_done() to compare. A stale item's
 * chunks are not applied, so not compared.
 */
static int
check_resend(txn *t, item *it, const slice *sl, const store_input *in, int note, store_err *err)
{
    uint64_t isz = dtype_size(it->dtype), per, e0, n;
    uint32_t index = (uint32_t)(it - t->st.items);

    if (!t->eager) {
        if (memcmp((const char *)sl->data + in->offset, in->data, in->len) != 0)
            return resend_fail(err, it->name, in->offset, in->len);
        return 0;
    }
    if (it->stale)
        return 0;
    per = eager_per(it);
    e0 = sl->start + in->offset / isz;
    n = in->len / isz;
    for (uint64_t done = 0; done < n; done += per) {
        uint64_t k = n - done < per ? n - done : per, sum;
        chunk_sum *c = sums_find(&t->sums, index, e0 + done);

        if (c == NULL || c->n != k)
            return store_fail(err, EMAD_EORDER, it->name,
                              "tensor '%s': chunk [%llu, +%llu) repeats bytes received in other "
                              "chunks but is not one of them; only a chunk resent whole can be "
                              "checked against what was averaged",
                              it->name, (unsigned long long)in->offset,
                              (unsigned long long)in->len);
        if (note && c->ready)
            continue;
        sum = task_sum((const char *)in->data + done * isz, k * isz);
        if (c->ready ? sum != c->sum : c->has_expect && sum != c->expect)
            return resend_fail(err, it->name, in->offset, in->len);
        if (note) {
            c->expect = sum;
            c->has_expect = 1;
        }
    }
    return 0;
}

/*
 * Take the checksum a job's task computed for its piece. Returns the
 * piece's record if a resend which came while the piece was being
 * averaged had other bytes, else NULL.
 */
static const chunk_sum *
sum_done(txn *t, const task *k)
{
    const item *it = &t->st.items[k->tag];
    size_t ssz = dtype_size(it->averaged ? dtype_shadow(it->dtype) : it->dtype);
    uint64_t e0 = (uint64_t)((const char *)k->dst - (const char *)it->target[0]->data) / ssz;
    chunk_sum *c = sums_find(&t->sums, k->tag, e0);

    if (c == NULL)
        return NULL;
    c->sum = k->sum;
    c->ready = 1;
    return c->has_expect && c->expect != c->sum ? c : NULL;
}

/* Bytes of shadow memory elements [e0, e0 + n) of an item's fresh targets make it hold. */
static uint64_t
eager_write_cost(const item *it, uint64_t e0, uint64_t n)
{
    uint64_t size, ssz, cost, cap;

    if (it->fresh == 0 || it->stale)
        return 0;
    size = it->target[0]->size;
    ssz = dtype_size(it->averaged ? dtype_shadow(it->dtype) : it->dtype);
    cost =
        blob_write_cost(size, e0 * ssz, (e0 + n) * ssz) * (uint64_t)__builtin_popcount(it->fresh);
    cap = (uint64_t)it->nshadow * size - it->charged; /* never more than the whole shadows */
    return cost < cap ? cost : cap;
}

/*
 * What the chunk in (of a slice starting at element `start`) would make an
 * eager transaction hold, before anything is allocated: for a tensor not
 * prepared yet, as if every shadow were fresh memory (a spare taken
 * instead costs nothing more).
 */
static uint64_t
eager_chunk_cost(const model *m, const txn *x, const item *it, const store_input *in,
                 uint64_t start)
{
    uint64_t isz = dtype_size(in->dtype), e0 = start + in->offset / isz, n = in->len / isz;
    uint64_t nbytes, ssz;
    uint32_t nshadow;
    int stale, averaged;

    if (it != NULL && it->prepared)
        return eager_write_cost(it, e0, n);
    (void)eager_shape(m, x, in, &stale, &averaged, &nshadow, &nbytes);
    if (stale)
        return 0;
    ssz = dtype_size(averaged ? dtype_shadow(in->dtype) : in->dtype);
    return nshadow * (blob_first_cost(nbytes) + blob_write_cost(nbytes, e0 * ssz, (e0 + n) * ssz));
}

/* Charge the transaction for the memory a chunk's elements [e0, e0 + n) make it hold. */
static void
eager_charge(budget *bg, const txn *x, item *it, uint64_t e0, uint64_t n)
{
    uint64_t c = eager_write_cost(it, e0, n);

    budget_charge(bg, BUDGET_TXN_SHADOWS, x->owner, c);
    it->charged += c;
}

/*
 * Fail with EMAD_ELIMIT when the shadows of a tensor a transaction begins
 * to write could never fit the memory budget: it could not be committed,
 * and its memory is reserved (if not used) at its first chunk.
 */
static int
eager_too_large(const store *s, const model *m, const txn *x, const store_input *in, store_err *err)
{
    char name[EMAD_MAX_NAME_BYTES + 1];
    uint64_t nbytes, limit = budget_limit(s->budget);
    uint32_t nshadow;
    int stale, averaged;

    (void)eager_shape(m, x, in, &stale, &averaged, &nshadow, &nbytes);
    if (stale || limit == 0 || nbytes <= limit / nshadow)
        return 0;
    store_cname(name, sizeof(name), in->name, in->name_len);
    return store_fail(err, EMAD_ELIMIT, name,
                      "tensor '%s': its %u shadow%s of %llu bytes would exceed the memory budget "
                      "(--max-memory %llu bytes)",
                      name, nshadow, nshadow == 1 ? "" : "s", (unsigned long long)nbytes,
                      (unsigned long long)limit);
}

/*
 * The bytes a request's chunks would make transaction t hold (staged
 * slices are allocated whole at their first chunk), checked against the
 * budget and t's owner's share before anything is allocated.
 */
static int
txn_check_budget(store *s, const model *m, const txn *t, const store_input *in, size_t n,
                 const uint64_t *counts, const uint8_t *skip, store_err *err)
{
    uint64_t need = 0;

    for (size_t i = 0; i < n; i++) {
        item *it;

        if (skip[i])
            continue;
        it = stage_find(&t->st, in[i].name, in[i].name_len);
        if (t->eager && (it == NULL || !it->prepared) && eager_too_large(s, m, t, &in[i], err) != 0)
            return err->code;
        if (t->eager)
            need += eager_chunk_cost(m, t, it, &in[i], in[i].start);
        else if (it == NULL || stage_item_slice_at(it, in[i].start, counts[i]) == NULL)
            need += counts[i] * dtype_size(in[i].dtype);
    }
    return store_budget_check(s, t->eager ? BUDGET_TXN_SHADOWS : BUDGET_STAGED, t->owner, need,
                              err);
}

int
store_txn_push_job(store *s, uint64_t id, const char *model_name, size_t len, int has_step,
                   uint64_t step, const store_input *in, size_t n, uint64_t now_ms,
                   uint64_t *staged_n, store_job **job, store_err *err)
{
    txn *t = txn_get(s, id, err);
    uint64_t *counts;
    uint8_t *skip;
    task_list tl = {0};
    model *m;

    *staged_n = 0;
    *job = NULL;
    if (t == NULL)
        return err->code;
    if (model_name != NULL && (len != t->model_len || memcmp(model_name, t->model, len) != 0))
        return store_fail(err, EMAD_EMALFORMED, NULL, "transaction %llu belongs to model '%s'",
                          (unsigned long long)id, t->model);
    if (has_step && step != t->step)
        return store_fail(err, EMAD_EMALFORMED, NULL, "transaction %llu is for step %llu, not %llu",
                          (unsigned long long)id, (unsigned long long)t->step,
                          (unsigned long long)step);
    if (t->failed.code != 0) {
        *err = t->failed;
        return err->code;
    }
    if ((m = store_model_get(s, t->model, t->model_len, err)) == NULL)
        return err->code;
    if (stage_check_size(n, err) != 0)
        return err->code;
    if (stage_check_unique(in, n, "request", err) != 0)
        return err->code;
    /* Check every chunk, against the stored tensor and what is staged, before touching any. */
    counts = xcalloc(n, sizeof(*counts));
    skip = xcalloc(n, 1);
    for (size_t i = 0; i < n; i++) {
        uint64_t numel, isz = dtype_size(in[i].dtype);
        item *it;
        slice *sl;

        if (stage_check_input(m, &in[i], 1, &numel, &counts[i], err) != 0)
            goto fail;
        if (emaconf_match(m->cfg.ignore, m->cfg.nignore, in[i].name, in[i].name_len)) {
            skip[i] = 1;
            continue;
        }
        if (t->eager && (in[i].offset % isz != 0 || in[i].len % isz != 0)) {
            char name[EMAD_MAX_NAME_BYTES + 1];
            store_cname(name, sizeof(name), in[i].name, in[i].name_len);
            store_fail(err, EMAD_ESIZE, name,
                       "tensor '%s': chunk [%llu, +%llu) does not hold whole %zu-byte elements",
                       name, (unsigned long long)in[i].offset, (unsigned long long)in[i].len,
                       (size_t)isz);
            goto fail;
        }
        it = stage_find(&t->st, in[i].name, in[i].name_len);
        if (stage_check_chunk(it, &in[i], counts[i], err))
            goto fail;
        if (it != NULL && in[i].len > 0 &&
            (sl = stage_item_slice_at(it, in[i].start, counts[i])) != NULL &&
            stage_slice_seen(sl, in[i].offset, in[i].len) > 0 &&
            check_resend(t, it, sl, &in[i], 0, err) != 0)
            goto fail;
    }
    if (txn_check_budget(s, m, t, in, n, counts, skip, err) != 0)
        goto fail;
    /* Allocate new slices (and, eager, the new shadows), then take the chunks. */
    for (size_t i = 0; i < n; i++) {
        item *it;
        slice *sl;
        uint64_t numel = 0, bytes = counts[i] * dtype_size(in[i].dtype);

        if (skip[i])
            continue;
        it = stage_find(&t->st, in[i].name, in[i].name_len);
        if (it != NULL && stage_item_slice_at(it, in[i].start, counts[i]) != NULL)
            continue;
        if (it == NULL) {
            (void)dtype_numel(in[i].shape, in[i].ndim, in[i].dtype, &numel, NULL);
            it = stage_add(&t->st, &in[i], numel);
        }
        if (t->eager) {
            if (!it->prepared && eager_prepare(s, m, t, it, err) != 0)
                goto fail;
            (void)stage_item_add_slice(it, in[i].start, counts[i]);
            continue;
        }
        sl = stage_item_add_slice(it, in[i].start, counts[i]);
        sl->owned = 1;
        if ((sl->data = xtry_aligned(bytes ? bytes : 1)) == NULL) {
            char name[EMAD_MAX_NAME_BYTES + 1];
            it->nslices--; /* staged earlier in this loop: empty slices are dropped */
            store_fail(
                err, EMAD_ENOMEM, store_cname(name, sizeof(name), in[i].name, in[i].name_len),
                "tensor '%s': out of memory staging %llu bytes", name, (unsigned long long)bytes);
            goto fail;
        }
        t->st.bytes += bytes;
        budget_charge(s->budget, BUDGET_STAGED, t->owner, bytes);
    }
    for (size_t i = 0; i < n; i++) {
        item *it;
        slice *sl;
        if (skip[i]) {
            t->st.ignored += in[i].offset == 0;
            continue;
        }
        it = stage_find(&t->st, in[i].name, in[i].name_len);
        sl = stage_item_slice_at(it, in[i].start, counts[i]);
        if (in[i].len > 0 && stage_slice_seen(sl, in[i].offset, in[i].len) > 0) {
            /* A resend with the same bytes (checked above): note what pieces still being
             * averaged must turn out to be. */
            (void)check_resend(t, it, sl, &in[i], 1, err);
            continue;
        }
        if (!t->eager)
            memcpy((char *)sl->data + in[i].offset, in[i].data, in[i].len);
        else if (!it->stale && in[i].len > 0) {
            uint64_t e0 = sl->start + in[i].offset / dtype_size(it->dtype);
            eager_charge(s->budget, t, it, e0, in[i].len / dtype_size(it->dtype));
            eager_tasks(m, it, (uint32_t)(it - t->st.items), e0, in[i].len / dtype_size(it->dtype),
                        in[i].data, &tl, &t->sums);
        }
        stage_slice_got(sl, in[i].offset, in[i].len);
        (*staged_n)++;
    }
    free(counts);
    free(skip);
    t->last_used_ms = now_ms;
    if (tl.n > 0) {
        *job = xcalloc(1, sizeof(**job));
        (*job)->tasks = tl;
        (*job)->txn = t;
        t->inflight++;
    }
    return 0;
fail:
    free(counts);
    free(skip);
    return err->code;
}

int
store_job_done(store *s, store_job *job, uint64_t now_ms, store_err *err)
{
    txn *t = job->txn;
    const model *m;
    int rc = 0;

    t->inflight--;
    if (!t->dead && (m = store_model_find(s, t->model, t->model_len)) != NULL) {
        const item *bad = NULL, *resent = NULL;
        const chunk_sum *c;
        uint64_t from = 0, count = 0;
        t->last_used_ms = now_ms;
        for (size_t i = 0; i < job->tasks.n; i++) {
            const task *k = &job->tasks.v[i];
            item *it = &t->st.items[k->tag];
            if (k->hash && (c = sum_done(t, k)) != NULL && resent == NULL) {
                resent = it;
                from = c->e0;
                count = c->n;
            }
            if (k->found == 0) /* only counts (COUNT, EMA with count) set it */
                continue;
            it->nonfinite += k->found;
            if (bad == NULL)
                bad = it;
        }
        if (bad != NULL && m->cfg.nonfinite == EMAD_NONFINITE_REJECT && t->failed.code == 0) {
            rc = apply_fail_nonfinite(&t->failed, bad);
            *err = t->failed;
        }
        if (resent != NULL && t->failed.code == 0) {
            rc =
                store_fail(&t->failed, EMAD_ECONFLICT, resent->name,
                           "tensor '%s': a chunk with elements [%llu, %llu) was resent with other "
                           "bytes while the first copy was being averaged; transaction %llu fails, "
                           "nothing applied",
                           resent->name, (unsigned long long)from,
                           (unsigned long long)(from + count), (unsigned long long)t->id);
            *err = t->failed;
        }
    }
    if (t->dead && t->inflight == 0) {
        for (txn **pp = &s->zombies; *pp != NULL; pp = &(*pp)->next) {
            if (*pp == t) {
                *pp = t->next;
                txn_free(t);
                break;
            }
        }
    }
    task_list_free(&job->tasks);
    free(job);
    return rc;
}

int
store_txn_push(store *s, uint64_t id, const char *model_name, size_t len, int has_step,
               uint64_t step, const store_input *in, size_t n, uint64_t now_ms, uint64_t *staged_n,
               store_err *err)
{
    store_job *job;
    int rc = store_txn_push_job(s, id, model_name, len, has_step, step, in, n, now_ms, staged_n,
                                &job, err);

    return rc != 0 || job == NULL ? rc : store_job_run(s, job, now_ms, err);
}

int
store_job_run(store *s, store_job *job, uint64_t now_ms, store_err *err)
{
    for (size_t i = 0; i < job->tasks.n; i++)
        task_run(&job->tasks.v[i]);
    return store_job_done(s, job, now_ms, err);
}

/*
 * Commit of an eager transaction: every item complete, no job running, and
 * each tensor still the one its chunks were averaged from; then
 * apply_step() publishes the new shadows all at once (the old ones become
 * spares).
 */
static int
eager_commit(model *m, txn *x, uint64_t now_ms, store_result *res, store_err *err)
{
    stage *st = &x->st;
    plan *p;
    int rc = 0;

    if (x->inflight > 0)
        return store_fail(err, EMAD_EINCOMPLETE, NULL,
                          "transaction %llu: %u request%s still being applied; commit after their "
                          "replies",
                          (unsigned long long)x->id, x->inflight,
                          x->inflight == 1 ? " is" : "s are");
    if (x->failed.code != 0) {
        *err = x->failed;
        return err->code;
    }
    for (size_t i = 0; i < st->nitems; i++)
        if (stage_check_coverage(&st->items[i], err) != 0)
            return err->code;
    p = apply_plan(m, st);
    for (size_t i = 0; i < st->nitems && rc == 0; i++) {
        const item *it = &st->items[i];
        const tensor *t = p[i].t;
        if (t != NULL && t->step >= x->step)
            continue; /* stale now: nothing to publish */
        if (!it->stale && (it->has_base ? t != NULL && t->shadow[0] == it->base[0] : t == NULL))
            continue;
        rc = store_fail(err, EMAD_ECONFLICT, it->name,
                        "tensor '%s' was changed by another push while transaction %llu was open; "
                        "nothing applied",
                        it->name, (unsigned long long)x->id);
    }
    if (rc == 0)
        rc = apply_step(m, st, x->step, APPLY_EAGER, p, now_ms, res, err);
    for (size_t i = 0; i < st->nitems && rc == 0; i++) {
        item *it = &st->items[i];
        if (it->nshadow > 0 && it->target[0] == NULL) { /* published: counted as shadows now */
            budget_release(x->budget, BUDGET_TXN_SHADOWS, x->owner, it->charged);
            it->charged = 0;
        }
    }
    free(p);
    return rc;
}

int
store_txn_commit(store *s, uint64_t id, uint64_t now_ms, store_result *res, store_err *err)
{
    txn *t = txn_get(s, id, err);
    model *m;
    int rc;

    memset(res, 0, sizeof(*res));
    if (t == NULL)
        return err->code;
    t->last_used_ms = now_ms;
    if ((m = store_model_get(s, t->model, t->model_len, err)) == NULL)
        return err->code;
    if (t->eager) {
        rc = eager_commit(m, t, now_ms, res, err);
        if (rc != EMAD_EINCOMPLETE && rc != EMAD_ENOMEM)
            txn_remove(s, t);
        return rc;
    }
    for (size_t i = 0; i < t->st.nitems; i++)
        if ((rc = stage_check_received(&t->st.items[i], err)) != 0)
            return rc; /* the transaction stays open: the missing chunks may still come */
    rc = apply_contribution(m, t->step, t->writer, &t->st, now_ms, res, err);
    /*
     * Stale names point into the model's tensors, not the transaction: safe
     * to free. Missing slices may still come, and memory may free up: the
     * transaction stays open then, unless its slices went to a pending step.
     */
    if ((rc != EMAD_ENOMEM && rc != EMAD_EINCOMPLETE) || t->st.consumed)
        txn_remove(s, t);
    return rc;
}

int
store_txn_abort(store *s, uint64_t id, store_err *err)
{
    txn *t = txn_get(s, id, err);

    if (t == NULL)
        return err->code;
    txn_remove(s, t);
    return 0;
}

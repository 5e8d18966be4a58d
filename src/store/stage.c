/*
 * stage.c - stages: the tensors of one writer's push, a transaction, a
 * pending step or a seed, each a list of flat element slices, and the
 * checks that run before anything is applied.
 *
 * A push's inputs are checked on their own and against the stored tensor
 * (name, kind, dtype, shape, slice bounds, data length), then gathered
 * into a stage; slices of one tensor in the same step must not overlap.
 * Transactions receive slices in chunks: each slice records the byte
 * ranges it has, so a chunk may arrive in any order and a resend is
 * recognised. Before a stage is applied, every tensor's slices must cover
 * it exactly.
 */
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"
#include "common/emaconf.h"
#include "common/names.h"
#include "common/proto.h"
#include "store/store_int.h"
#include "base/strmap.h"
#include "base/xmalloc.h"

/* Start an empty stage. */
void
stage_init(stage *st)
{
    memset(st, 0, sizeof(*st));
    st->index = strmap_create();
}

/* Free a stage's items, owned slice data and index. */
void
stage_free(stage *st)
{
    for (size_t i = 0; i < st->nitems; i++) {
        item *it = &st->items[i];
        for (size_t k = 0; k < it->nslices; k++) {
            if (it->slices[k].owned)
                free(it->slices[k].data);
            free(it->slices[k].got);
        }
        for (uint32_t j = 0; j < it->nshadow; j++) {
            blob_unref(it->base[j]);
            blob_unref(it->target[j]);
        }
        if (!it->slab)
            free(it->slices);
        if ((uintptr_t)it->name - (uintptr_t)st->names >= st->names_len) /* not in the block */
            free(it->name);
    }
    free(st->items);
    free(st->names);
    free(st->slab);
    strmap_destroy(st->index);
    memset(st, 0, sizeof(*st));
}

/* The item of a stage named (name, len), or NULL. */
item *
stage_find(const stage *st, const char *name, size_t len)
{
    size_t slot;

    if (st->unindexed) { /* a push message's stage indexes its stored tensors' items on demand */
        stage *w = (stage *)(uintptr_t)st;
        for (size_t i = 0; i < w->nitems; i++)
            if (w->items[i].stored != NULL)
                strmap_put(w->index, w->items[i].name, w->items[i].name_len,
                           (void *)(uintptr_t)(i + 1));
        w->unindexed = 0;
    }
    slot = (size_t)(uintptr_t)strmap_get(st->index, name, len);

    return slot != 0 ? &st->items[slot - 1] : NULL;
}

/* Make room for n more items without growing the items array or the index again. */
void
stage_reserve(stage *st, size_t n)
{
    size_t cap = st->cap ? st->cap : 16;

    while (cap < st->nitems + n)
        cap *= 2;
    if (cap != st->cap) {
        st->items = xreallocarray(st->items, cap, sizeof(*st->items));
        st->cap = cap;
    }
    strmap_reserve(st->index, st->nitems + n);
}

/* Add an item described by in (no slices yet); numel already computed. */
item *
stage_add(stage *st, const store_input *in, uint64_t numel)
{
    item *it;

    if (st->nitems == st->cap) {
        st->cap = st->cap ? st->cap * 2 : 16;
        st->items = xreallocarray(st->items, st->cap, sizeof(*st->items));
    }
    it = &st->items[st->nitems];
    memset(it, 0, sizeof(*it));
    it->name = xstrndup(in->name, in->name_len);
    it->name_len = in->name_len;
    it->kind = in->kind;
    it->dtype = in->dtype;
    it->ndim = in->ndim;
    memcpy(it->shape, in->shape, in->ndim * sizeof(it->shape[0])); /* the rest stays 0 */
    it->numel = numel;
    strmap_put(st->index, it->name, it->name_len, (void *)(uintptr_t)(st->nitems + 1));
    st->nitems++;
    return it;
}

/* Add the slice [start, start + count) to an item (no data yet). */
slice *
stage_item_add_slice(item *it, uint64_t start, uint64_t count)
{
    slice *sl;

    if (it->nslices == it->cap) {
        slice *from = it->slab ? it->slices : NULL; /* a slab entry is copied, not grown */
        it->cap = it->cap ? it->cap * 2 : 2;
        it->slices = xreallocarray(from != NULL ? NULL : it->slices, it->cap, sizeof(*it->slices));
        if (from != NULL)
            memcpy(it->slices, from, it->nslices * sizeof(*it->slices));
        it->slab = 0;
    }
    if (it->nslices > 0 && start < it->slices[it->nslices - 1].start)
        it->unsorted = 1;
    sl = &it->slices[it->nslices++];
    memset(sl, 0, sizeof(*sl));
    sl->start = start;
    sl->count = count;
    return sl;
}

/* In an item whose slices are in order: the index of the first slice starting at or after e. */
static size_t
first_from(const item *it, uint64_t e)
{
    size_t lo = 0, hi = it->nslices;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (it->slices[mid].start < e)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/*
 * A slice of it overlapping [start, start + count), or NULL. Empty slices
 * overlap nothing. The item's own slices must not overlap each other
 * (transactions and pending steps): when they are in order, only the last
 * one starting before start + count can overlap (binary search).
 */
const slice *
stage_item_overlap(const item *it, uint64_t start, uint64_t count)
{
    if (count == 0)
        return NULL;
    if (!it->unsorted) {
        for (size_t k = first_from(it, start + count); k-- > 0;) {
            const slice *sl = &it->slices[k];
            if (sl->count > 0)
                return start < sl->start + sl->count ? sl : NULL;
        }
        return NULL;
    }
    for (size_t k = 0; k < it->nslices; k++) {
        const slice *sl = &it->slices[k];
        if (sl->count > 0 && start < sl->start + sl->count && sl->start < start + count)
            return sl;
    }
    return NULL;
}

/* The slice of an item that is exactly [start, start + count), or NULL (bisected if in order). */
slice *
stage_item_slice_at(item *it, uint64_t start, uint64_t count)
{
    for (size_t k = it->unsorted ? 0 : first_from(it, start); k < it->nslices; k++) {
        if (it->slices[k].start == start && it->slices[k].count == count)
            return &it->slices[k];
        if (!it->unsorted && it->slices[k].start > start)
            break;
    }
    return NULL;
}

/* Does a stored tensor differ from (kind, dtype, shape)? Fills err if so. */
int
stage_check_against(const tensor *t, const char *name, int kind, int dtype, uint32_t ndim,
                    const uint64_t *shape, store_err *err)
{
    char a[256], b[256];

    if (t->kind != kind)
        return store_fail(err, EMAD_EKIND, name, "tensor '%s': stored as a %s, pushed as a %s",
                          name, names_kind_name(t->kind), names_kind_name(kind));
    if (t->dtype != dtype)
        return store_fail(err, EMAD_EKIND, name, "tensor '%s': dtype %s differs from stored %s",
                          name, dtype_name(dtype), dtype_name(t->dtype));
    if (t->ndim != ndim || memcmp(t->shape, shape, ndim * sizeof(uint64_t)) != 0)
        return store_fail(err, EMAD_ESHAPE, name, "tensor '%s': shape %s differs from stored %s",
                          name, dtype_fmt_shape(a, sizeof(a), shape, ndim),
                          dtype_fmt_shape(b, sizeof(b), t->shape, t->ndim));
    return 0;
}

static int check_input(const model *m, const store_input *in, size_t next, int chunked,
                       uint64_t *numel, uint64_t *count, size_t *hash, tensor **found,
                       store_err *err);

tensor *
stage_lookup(const model *m, size_t next, const char *name, size_t len, size_t *hash)
{
    tensor *t = next < m->ntensors ? m->tensors[next] : NULL;

    /* The tensors a trainer's list names next: their structs, then their names. */
    if (next + 8 < m->ntensors)
        __builtin_prefetch(m->tensors[next + 8]);
    if (next + 4 < m->ntensors)
        __builtin_prefetch(m->tensors[next + 4]->name);
    if (t != NULL && t->name_len == len && memcmp(t->name, name, len) == 0)
        return t;
    *hash = strmap_hash(name, len);
    return strmap_get_hashed(m->index, name, len, *hash);
}

/*
 * Check one input on its own and against the stored tensor (if any):
 * name, kind, dtype, shape, the slice [start, start + count) within the
 * tensor and the data length (the whole slice, or with chunked set a chunk
 * at offset within it). *numel and *count get the tensor's element count
 * and the slice's.
 */
int
stage_check_input(const model *m, const store_input *in, int chunked, uint64_t *numel,
                  uint64_t *count, store_err *err)
{
    size_t hash;
    tensor *t;

    return check_input(m, in, m->ntensors, chunked, numel, count, &hash, &t, err);
}

/*
 * stage_check_input(), also giving the stored tensor (or NULL) and, for a
 * new one, the name's strmap_hash(); the tensor is looked up with
 * stage_lookup() from position next.
 */
static int
check_input(const model *m, const store_input *in, size_t next, int chunked, uint64_t *numel,
            uint64_t *count, size_t *hash, tensor **found, store_err *err)
{
    char name[EMAD_MAX_NAME_BYTES + 1], a[256];
    tensor *t;
    uint64_t nbytes, sbytes, isz;

    if (names_check_tensor(in->name, in->name_len) != 0) {
        /* The name itself may be unprintable: quote at most a prefix. */
        return store_fail(err, EMAD_ENAME, NULL,
                          "tensor name must be 1..%d bytes of UTF-8 without control characters "
                          "(got %zu bytes)",
                          EMAD_MAX_NAME_BYTES, in->name_len);
    }
    store_cname(name, sizeof(name), in->name, in->name_len);
    if (in->name_len == sizeof(STORE_RESERVED_NAME) - 1 &&
        memcmp(in->name, STORE_RESERVED_NAME, in->name_len) == 0)
        return store_fail(err, EMAD_ENAME, NULL,
                          "tensor name '%s' is reserved (a snapshot file's metadata entry)", name);
    if (in->kind != EMAD_PARAM && in->kind != EMAD_BUFFER)
        return store_fail(err, EMAD_EMALFORMED, name, "tensor '%s': kind must be param or buffer",
                          name);
    if ((isz = dtype_size(in->dtype)) == 0)
        return store_fail(err, EMAD_EDTYPE, name, "tensor '%s': unknown dtype", name);
    if (in->kind == EMAD_PARAM && dtype_shadow(in->dtype) == EMAD_DTYPE_INVALID)
        return store_fail(
            err, EMAD_EDTYPE, name,
            "tensor '%s': a param must be F32, F16, BF16 or F64, not %s (push it as a "
            "buffer to copy it)",
            name, dtype_name(in->dtype));
    if (in->ndim > EMAD_MAX_NDIM)
        return store_fail(err, EMAD_ELIMIT, name, "tensor '%s': more than %d dimensions", name,
                          EMAD_MAX_NDIM);
    if (dtype_numel(in->shape, in->ndim, in->dtype, numel, &nbytes) != 0)
        return store_fail(err, EMAD_ELIMIT, name, "tensor '%s': shape %s is too large", name,
                          dtype_fmt_shape(a, sizeof(a), in->shape, in->ndim));
    if (in->count == 0 && in->start != 0)
        return store_fail(err, EMAD_ERANGE, name,
                          "tensor '%s': a slice at element %llu needs a count > 0", name,
                          (unsigned long long)in->start);
    *count = in->count != 0 ? in->count : *numel;
    if (in->start > *numel || *count > *numel - in->start)
        return store_fail(err, EMAD_ERANGE, name,
                          "tensor '%s': slice [%llu, %llu) is outside its %llu elements", name,
                          (unsigned long long)in->start, (unsigned long long)(in->start + *count),
                          (unsigned long long)*numel);
    sbytes = *count * isz;
    if (!chunked && in->len != sbytes)
        return store_fail(err, EMAD_ESIZE, name,
                          "tensor '%s': data has %llu bytes but %s %s of %s needs %llu", name,
                          (unsigned long long)in->len, in->count != 0 ? "the slice of" : PROTO_KEY_SHAPE,
                          dtype_fmt_shape(a, sizeof(a), in->shape, in->ndim), dtype_name(in->dtype),
                          (unsigned long long)sbytes);
    if (chunked && (in->offset > sbytes || in->len > sbytes - in->offset))
        return store_fail(err, EMAD_ESIZE, name,
                          "tensor '%s': chunk [%llu, +%llu) runs past the %llu bytes of its %s",
                          name, (unsigned long long)in->offset, (unsigned long long)in->len,
                          (unsigned long long)sbytes, in->count != 0 ? PROTO_KEY_SLICE : PROTO_KEY_TENSOR);
    if ((*found = t = stage_lookup(m, next, in->name, in->name_len, hash)) == NULL)
        return stage_check_header(m, stage_header_cost(in->name, in->name_len, in->ndim), 1, err);
    return stage_check_against(t, name, in->kind,
                               in->as_dtype != EMAD_DTYPE_INVALID ? in->as_dtype : in->dtype,
                               in->ndim, in->shape, err);
}

/*
 * The most bytes a tensor named (name, len) with ndim dimensions adds to
 * the header of a snapshot file: its safetensors entry
 * "NAME":{"dtype":"BF16","shape":[..],"data_offsets":[B,E]}, (the name
 * JSON-escaped once; each dimension and offset at most 20 digits) and its
 * description in the emad_tensors metadata,
 * "NAME":{"kind":"buffer","dtype":"BF16","step":S,"update":"average"},
 * (S at most 19 digits) escaped once inside that JSON text and once more
 * as a metadata string. JSON escapes only '"', '\' and control
 * characters (not allowed in names): 90 + 21 * ndim + (len + q) for the
 * entry and 98 + (len + 3q) for the description, q counting the name's
 * quotes and backslashes (STORE_HEADER_FIXED covers both constants).
 */
uint64_t
stage_header_cost(const char *name, size_t len, uint32_t ndim)
{
    uint64_t q = 0;

    for (size_t i = 0; i < len; i++)
        q += name[i] == '"' || name[i] == '\\';
    return STORE_HEADER_FIXED + 21 * (uint64_t)ndim + 2 * (uint64_t)len + 4 * q;
}

/*
 * Fail with EMAD_ELIMIT if m cannot take count more tensors that add
 * cost bytes to its snapshot header (STORE_MAX_HEADER_BYTES in all).
 */
int
stage_check_header(const model *m, uint64_t cost, uint64_t count, store_err *err)
{
    if (m->header_bytes <= STORE_MAX_HEADER_BYTES &&
        cost <= STORE_MAX_HEADER_BYTES - m->header_bytes)
        return 0;
    return store_fail(err, EMAD_ELIMIT, NULL,
                      "model '%s' cannot take %llu more tensor%s: with its %zu tensors its "
                      "snapshot header would exceed %llu bytes (the safetensors limit is "
                      "100000000; docs/PROTOCOL.md, Limits)",
                      m->name, (unsigned long long)count, count == 1 ? "" : "s", m->ntensors,
                      (unsigned long long)STORE_MAX_HEADER_BYTES);
}

/*
 * The per-message tensor limit, checked by store_push() and store_txn_push()
 * only: a transaction may stage more tensors than one message carries, and
 * its commit must still apply them all.
 */
int
stage_check_size(size_t n, store_err *err)
{
    if (n == 0)
        return store_fail(err, EMAD_EMALFORMED, NULL, "push has no tensors");
    if (n > PROTO_MAX_TENSORS)
        return store_fail(err, EMAD_ELIMIT, NULL, "push has %zu tensors, at most %d", n,
                          PROTO_MAX_TENSORS);
    return 0;
}

/* Does an input or item of this description match an item already staged? */
int
stage_check_same(const item *it, const store_input *in, const char *what, store_err *err)
{
    char name[EMAD_MAX_NAME_BYTES + 1], a[256], b[256];

    store_cname(name, sizeof(name), in->name, in->name_len);
    if (it->kind != in->kind || it->dtype != in->dtype)
        return store_fail(err, EMAD_EKIND, name, "tensor '%s': kind or dtype differs from %s", name,
                          what);
    if (it->ndim != in->ndim || memcmp(it->shape, in->shape, it->ndim * sizeof(uint64_t)) != 0)
        return store_fail(err, EMAD_ESHAPE, name, "tensor '%s': shape %s differs from %s %s", name,
                          dtype_fmt_shape(a, sizeof(a), in->shape, in->ndim), what,
                          dtype_fmt_shape(b, sizeof(b), it->shape, it->ndim));
    return 0;
}

/* Fail with EMAD_EDUP (the same whole tensor twice) or EMAD_EOVERLAP for two slices of a step. */
static int
overlap_error(const char *name, uint64_t start, uint64_t count, const slice *other, store_err *err)
{
    if (start == 0 && other->start == 0 && count == other->count)
        return store_fail(err, EMAD_EDUP, name, "tensor '%s' appears twice in one push", name);
    return store_fail(err, EMAD_EOVERLAP, name,
                      "tensor '%s': slice [%llu, %llu) overlaps [%llu, %llu) of the same step",
                      name, (unsigned long long)start, (unsigned long long)(start + count),
                      (unsigned long long)other->start,
                      (unsigned long long)(other->start + other->count));
}

/* qsort() order of slices: by first element. */
static int
cmp_slice(const void *a, const void *b)
{
    const slice *x = a, *y = b;

    return x->start < y->start ? -1 : x->start > y->start;
}

/* Sort an item's slices by first element (O(n log n)), unless they are in order already. */
void
stage_item_sort(item *it)
{
    if (it->unsorted)
        qsort(it->slices, it->nslices, sizeof(*it->slices), cmp_slice);
    it->unsorted = 0;
}

/*
 * Two overlapping slices of an item, found by sorting its slices and
 * comparing each with the one reaching furthest before it: *a (later
 * start) and *b; 0 if none (empty slices overlap nothing).
 */
static int
item_self_overlap(item *it, const slice **a, const slice **b)
{
    const slice *reach = NULL;

    stage_item_sort(it);
    for (size_t k = 0; k < it->nslices; k++) {
        const slice *sl = &it->slices[k];
        if (sl->count == 0)
            continue;
        if (reach != NULL && sl->start < reach->start + reach->count) {
            *a = sl;
            *b = reach;
            return 1;
        }
        if (reach == NULL || sl->start + sl->count > reach->start + reach->count)
            reach = sl;
    }
    return 0;
}

/*
 * Do two items' slices overlap? Each item's own slices must not overlap
 * each other. Sorts both and walks them together (O(n log n)); *a gets
 * the slice of x and *b the slice of y of the first overlap found.
 */
int
stage_items_overlap(item *x, item *y, const slice **a, const slice **b)
{
    size_t i = 0, j = 0;

    stage_item_sort(x);
    stage_item_sort(y);
    while (i < x->nslices && j < y->nslices) {
        const slice *p = &x->slices[i], *q = &y->slices[j];
        if (p->count == 0) {
            i++;
        } else if (q->count == 0) {
            j++;
        } else if (p->start < q->start + q->count && q->start < p->start + p->count) {
            *a = p;
            *b = q;
            return 1;
        } else if (p->start + p->count <= q->start + q->count) {
            i++;
        } else {
            j++;
        }
    }
    return 0;
}

/*
 * Check the inputs of one push message and gather them into a stage whose
 * slices borrow the message's data. Inputs matching an ignore pattern are
 * checked on their own and counted, not staged. Slices of one tensor are
 * checked for overlaps once all are staged, by sorting (O(n log n)). The
 * stage is built with a few allocations whatever the number of tensors
 * (the names in one block, each item's first slice in a slab), each name
 * hashed once, and each item keeps the stored tensor it was checked
 * against (st->looked_up), for apply_plan(). A stored tensor given twice
 * is found by its mark (a fresh store mark per push), a new one by the
 * stage's index; stage_find() indexes the others when first asked.
 */
int
stage_inputs(const model *m, uint64_t mark, const store_input *in, size_t n, stage *st,
             store_err *err)
{
    const slice *a, *b;
    size_t names = 0, next = 0; /* next: the stored tensor after the previous input's */
    char *name;

    stage_reserve(st, n);
    for (size_t i = 0; i < n; i++)
        names += in[i].name_len + 1;
    st->names = name = xmalloc(names ? names : 1);
    st->names_len = names;
    st->slab = xmalloc((n ? n : 1) * sizeof(*st->slab));
    st->looked_up = 1;
    st->unindexed = 1;
    for (size_t i = 0; i < n; i++) {
        uint64_t numel, count;
        size_t hash, slot;
        tensor *t;
        item *it;
        slice *sl;

        if (check_input(m, &in[i], next, 0, &numel, &count, &hash, &t, err) != 0)
            return err->code;
        if (t != NULL)
            next = t->index + 1;
        if (emaconf_match(m->cfg.ignore, m->cfg.nignore, in[i].name, in[i].name_len)) {
            st->ignored++;
            continue;
        }
        memcpy(name, in[i].name, in[i].name_len);
        name[in[i].name_len] = '\0';
        if (t == NULL) { /* a new tensor: the index tells if it came before */
            slot = (size_t)(uintptr_t)strmap_add_hashed(st->index, name, in[i].name_len, hash,
                                                        (void *)(uintptr_t)(st->nitems + 1));
        } else if (t->mark == mark) { /* a stored one: its mark does */
            slot = t->item + 1;
        } else {
            slot = 0;
            t->mark = mark;
            t->item = st->nitems;
        }
        if (slot != 0) {
            it = &st->items[slot - 1];
            if (stage_check_same(it, &in[i], "another slice in this push", err) != 0)
                return err->code;
        } else {
            it = &st->items[st->nitems++];
            memset(it, 0, sizeof(*it));
            it->name = name;
            it->name_len = in[i].name_len;
            it->kind = in[i].kind;
            it->dtype = in[i].dtype;
            it->ndim = in[i].ndim;
            memcpy(it->shape, in[i].shape, in[i].ndim * sizeof(it->shape[0]));
            it->numel = numel;
            it->stored = t;
            it->slices = &st->slab[i];
            it->cap = 1;
            it->slab = 1;
            name += in[i].name_len + 1;
        }
        sl = stage_item_add_slice(it, in[i].start, count);
        sl->data = (void *)in[i].data;
        sl->received = in[i].len;
    }
    for (size_t i = 0; i < st->nitems; i++)
        if (st->items[i].nslices > 1 && item_self_overlap(&st->items[i], &a, &b))
            return overlap_error(st->items[i].name, a->start, a->count, b, err);
    return 0;
}

/* Check every slice of an item has all its bytes (transactions receive them in chunks). */
int
stage_check_received(const item *it, store_err *err)
{
    uint64_t isz = dtype_size(it->dtype);

    for (size_t k = 0; k < it->nslices; k++) {
        const slice *sl = &it->slices[k];
        if (sl->received != sl->count * isz)
            return store_fail(
                err, EMAD_EINCOMPLETE, it->name,
                "tensor '%s': slice [%llu, %llu) has %llu of %llu bytes", it->name,
                (unsigned long long)sl->start, (unsigned long long)(sl->start + sl->count),
                (unsigned long long)sl->received, (unsigned long long)(sl->count * isz));
    }
    return 0;
}

/* Sort an item's slices and check they cover it exactly, each one complete. */
int
stage_check_coverage(item *it, store_err *err)
{
    uint64_t next = 0;

    if (stage_check_received(it, err) != 0)
        return err->code;
    stage_item_sort(it);
    for (size_t k = 0; k < it->nslices; k++) {
        const slice *sl = &it->slices[k];
        if (sl->count == 0)
            continue;
        if (sl->start != next)
            break;
        next = sl->start + sl->count;
    }
    if (next != it->numel) {
        uint64_t covered = 0;
        for (size_t k = 0; k < it->nslices; k++)
            covered += it->slices[k].count;
        return store_fail(err, EMAD_EINCOMPLETE, it->name,
                          "tensor '%s': slices cover %llu of its %llu elements", it->name,
                          (unsigned long long)covered, (unsigned long long)it->numel);
    }
    return 0;
}

/* The index of the first input whose name an earlier input has, or -1. */
static long
find_duplicate(const store_input *in, size_t n)
{
    strmap *seen = strmap_create();
    long dup = -1;

    for (size_t i = 0; i < n && dup < 0; i++) {
        if (strmap_get(seen, in[i].name, in[i].name_len) != NULL)
            dup = (long)i;
        else
            strmap_put(seen, in[i].name, in[i].name_len, (void *)&in[i]);
    }
    strmap_destroy(seen);
    return dup;
}

/*
 * Check no two of n inputs have the same name; EMAD_EDUP for the first
 * repeated one ("appears twice in one <what>").
 */
int
stage_check_unique(const store_input *in, size_t n, const char *what, store_err *err)
{
    char name[EMAD_MAX_NAME_BYTES + 1];
    long dup = find_duplicate(in, n);

    if (dup < 0)
        return 0;
    store_cname(name, sizeof(name), in[dup].name, in[dup].name_len);
    return store_fail(err, EMAD_EDUP, name, "tensor '%s' appears twice in one %s", name, what);
}

/*
 * Where bytes [off, off + len) of a slice stand against the ranges already
 * received: 0 all new, 1 all received before (a resend), -1 partly.
 */
int
stage_slice_seen(const slice *sl, uint64_t off, uint64_t len)
{
    for (size_t k = 0; k < sl->ngot; k++) {
        uint64_t a = sl->got[k][0], b = sl->got[k][1];
        if (off >= a && off + len <= b)
            return 1;
        if (off < b && a < off + len)
            return -1;
    }
    return 0;
}

/* Record bytes [off, off + len) of a slice as received (new bytes only). */
void
stage_slice_got(slice *sl, uint64_t off, uint64_t len)
{
    size_t k = 0;

    if (len == 0)
        return;
    while (k < sl->ngot && sl->got[k][1] < off)
        k++;
    sl->received += len;
    if (k < sl->ngot && sl->got[k][1] == off) { /* extends range k */
        sl->got[k][1] = off + len;
        if (k + 1 < sl->ngot && sl->got[k + 1][0] == off + len) { /* and closes the gap */
            sl->got[k][1] = sl->got[k + 1][1];
            memmove(&sl->got[k + 1], &sl->got[k + 2], (sl->ngot - k - 2) * sizeof(*sl->got));
            sl->ngot--;
        }
        return;
    }
    if (k < sl->ngot && sl->got[k][0] == off + len) { /* extends range k downwards */
        sl->got[k][0] = off;
        return;
    }
    if (sl->ngot == sl->capgot) {
        sl->capgot = sl->capgot ? sl->capgot * 2 : 4;
        sl->got = xreallocarray(sl->got, sl->capgot, sizeof(*sl->got));
    }
    memmove(&sl->got[k + 1], &sl->got[k], (sl->ngot - k) * sizeof(*sl->got));
    sl->got[k][0] = off;
    sl->got[k][1] = off + len;
    sl->ngot++;
}

/*
 * Check a chunk against what the transaction holds: the same tensor
 * description, and bytes of an existing slice not received yet (or all
 * received before: a resend, accepted and ignored), or a new slice that
 * overlaps no other. Chunks may come in any order (several connections).
 */
int
stage_check_chunk(item *it, const store_input *in, uint64_t count, store_err *err)
{
    char name[EMAD_MAX_NAME_BYTES + 1];
    const slice *sl, *o;

    store_cname(name, sizeof(name), in->name, in->name_len);
    if (it == NULL)
        return 0;
    if (stage_check_same(it, in, "earlier chunks", err) != 0)
        return err->code;
    if ((sl = stage_item_slice_at(it, in->start, count)) == NULL) {
        if ((o = stage_item_overlap(it, in->start, count)) != NULL)
            return overlap_error(name, in->start, count, o, err);
        return 0;
    }
    if (stage_slice_seen(sl, in->offset, in->len) < 0)
        return store_fail(
            err, EMAD_EORDER, name,
            "tensor '%s': chunk [%llu, +%llu) overlaps bytes received in another chunk", name,
            (unsigned long long)in->offset, (unsigned long long)in->len);
    return 0;
}

/*
 * store.c - models, tensors, shadows, transactions, pending multi-writer
 * steps and pull views.
 *
 * Everything runs on the loop thread. A push becomes a stage: its tensors,
 * each a list of flat element slices (one slice for a whole tensor). The
 * apply path is: check every tensor of the stage against the stored one
 * and for full coverage; count non-finite values of averaged tensors;
 * reserve every blob the step needs (new tensors, and copy-on-write copies
 * of blobs a pull view still references), so the apply pass cannot fail
 * half-way; then apply each slice straight from its buffer (EMA per decay
 * for averaged tensors, copy for the others). A single push's stage
 * borrows the request buffer; transactions and pending multi-writer steps
 * own their slices.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>

#include "common/dtype.h"
#include "store/ema.h"
#include "common/emaconf.h"
#include "common/proto.h"
#include "store/store.h"
#include "base/strmap.h"
#include "store/task.h"
#include "base/xmalloc.h"

/* Blobs of at least this size are 2 MiB aligned and use transparent huge pages. */
#define HUGE_BLOB_BYTES (4u << 20)
#define HUGE_PAGE_BYTES (2u << 20)

/* A flat element range of a tensor and its bytes. */
typedef struct slice {
    uint64_t start, count;
    uint64_t received;  /* bytes received so far (transactions); count * itemsize when full */
    uint64_t (*got)[2]; /* transactions: byte ranges received, sorted, disjoint, not adjacent */
    size_t ngot, capgot;
    void *data;
    int owned; /* data is ours to free */
} slice;

/* One tensor of a stage: its description and its slices. */
typedef struct item {
    char *name;
    size_t name_len;
    int kind, dtype;
    uint32_t ndim;
    uint64_t shape[EMAD_MAX_NDIM];
    uint64_t numel;
    slice *slices;
    size_t nslices, cap;
    uint64_t nonfinite; /* NaN/Inf values found by check_nonfinite() or chunk jobs */
    /* Transactions applied as their chunks arrive (see eager_prepare()): */
    int prepared;                  /* the fields below are set */
    int stale;                     /* stored tensor already at or past the step */
    int has_base;                  /* the tensor existed: base holds its shadows */
    int averaged;                  /* EMA per decay (else copied) */
    uint32_t nshadow;              /* blobs in base and target */
    blob *base[EMAD_MAX_DECAYS];   /* the shadows averaged from (references held) */
    blob *target[EMAD_MAX_DECAYS]; /* the shadows being written, published at commit */
    double d[EMAD_MAX_DECAYS];     /* decay per shadow (0: copy the values) */
} item;

/* The tensors of one writer's push, a transaction, or a pending step. */
typedef struct stage {
    item *items;
    size_t nitems, cap;
    strmap *index;    /* name -> index + 1 */
    uint64_t bytes;   /* owned slice bytes */
    uint64_t ignored; /* inputs dropped by ignore patterns */
    int checked;      /* non-finite counts are filled in */
    int consumed;     /* slices moved into a pending step */
} stage;

typedef struct txn {
    uint64_t id;
    char *model;
    size_t model_len;
    uint64_t step;
    uint32_t writer;
    stage st;
    uint64_t last_used_ms;
    int eager;         /* single writer: chunks are averaged into new shadows as they arrive */
    uint32_t inflight; /* jobs handed out and not done */
    int dead;          /* discarded while jobs ran: the last store_job_done() frees it */
    store_err failed;  /* failed.code != 0: a chunk was rejected and commit fails with it */
    struct txn *next;
} txn;

/* A multi-writer step waiting for its writers. */
typedef struct pending {
    uint64_t step;
    uint8_t *done; /* one flag per writer */
    uint32_t ndone;
    stage st;
    uint64_t last_used_ms;
    struct pending *next;
} pending;

struct store {
    model **models; /* creation order */
    size_t nmodels, cap;
    strmap *index;
    txn *txns;
    size_t ntxns;
    txn *zombies; /* discarded transactions whose jobs still run */
    store_view *views;
    size_t nviews;
    uint64_t next_id;
};

/* printf into err and return its code. */
__attribute__((format(printf, 4, 5))) static int
fail(store_err *err, int code, const char *tensor_name, const char *fmt, ...)
{
    va_list ap;

    err->code = code;
    err->tensor[0] = '\0';
    if (tensor_name != NULL)
        snprintf(err->tensor, sizeof(err->tensor), "%s", tensor_name);
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    return code;
}

/* Copy a (ptr, len) name into a NUL-terminated buffer for messages. */
static const char *
cname(char *buf, size_t size, const char *name, size_t len)
{
    if (len >= size)
        len = size - 1;
    memcpy(buf, name, len);
    buf[len] = '\0';
    return buf;
}

/*
 * A new blob of size bytes with one reference, or NULL. Large blobs are
 * aligned to 2 MiB and marked for transparent huge pages: a shadow is
 * written whole on its first push, and huge pages make that first touch
 * (and every later pass) cheaper.
 */
static blob *
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

/* Drop one reference; frees the blob at zero. NULL accepted. */
static void
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
static void
blob_release(blob *b, blob **spare)
{
    if (b == NULL || --b->refs > 0)
        return;
    if (*spare == NULL) {
        b->refs = 1;
        *spare = b;
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

static uint64_t
random_id_base(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 16);
}

store *
store_create(void)
{
    store *s = xcalloc(1, sizeof(*s));

    s->index = strmap_create();
    s->next_id = (random_id_base() & 0x7fffffffffffULL) + 1;
    return s;
}

static void
stage_init(stage *st)
{
    memset(st, 0, sizeof(*st));
    st->index = strmap_create();
}

/* Free a stage's items, owned slice data and index. */
static void
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
        free(it->slices);
        free(it->name);
    }
    free(st->items);
    strmap_destroy(st->index);
    memset(st, 0, sizeof(*st));
}

static item *
stage_find(const stage *st, const char *name, size_t len)
{
    size_t slot = (size_t)(uintptr_t)strmap_get(st->index, name, len);

    return slot != 0 ? &st->items[slot - 1] : NULL;
}

/* Make room for n more items without growing the items array or the index again. */
static void
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
static item *
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
    memcpy(it->shape, in->shape, sizeof(it->shape));
    it->numel = numel;
    strmap_put(st->index, it->name, it->name_len, (void *)(uintptr_t)(st->nitems + 1));
    st->nitems++;
    return it;
}

static slice *
item_add_slice(item *it, uint64_t start, uint64_t count)
{
    slice *sl;

    if (it->nslices == it->cap) {
        it->cap = it->cap ? it->cap * 2 : 2;
        it->slices = xreallocarray(it->slices, it->cap, sizeof(*it->slices));
    }
    sl = &it->slices[it->nslices++];
    memset(sl, 0, sizeof(*sl));
    sl->start = start;
    sl->count = count;
    return sl;
}

/* A slice of it overlapping [start, start + count), or NULL. Empty slices overlap nothing. */
static const slice *
item_overlap(const item *it, uint64_t start, uint64_t count)
{
    for (size_t k = 0; k < it->nslices; k++) {
        const slice *sl = &it->slices[k];
        if (count > 0 && sl->count > 0 && start < sl->start + sl->count &&
            sl->start < start + count)
            return sl;
    }
    return NULL;
}

static slice *
item_slice_at(item *it, uint64_t start, uint64_t count)
{
    for (size_t k = 0; k < it->nslices; k++)
        if (it->slices[k].start == start && it->slices[k].count == count)
            return &it->slices[k];
    return NULL;
}

/* Free one tensor and its shadow references. */
static void
tensor_free(tensor *t)
{
    if (t == NULL)
        return;
    for (uint32_t j = 0; j < t->nshadow; j++) {
        blob_unref(t->shadow[j]);
        blob_unref(t->spare[j]);
    }
    free(t->name);
    free(t);
}

static void
pending_free(pending *p)
{
    if (p == NULL)
        return;
    stage_free(&p->st);
    free(p->done);
    free(p);
}

/* Free a model, its tensors and pending steps. */
static void
model_free(model *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->ntensors; i++)
        tensor_free(m->tensors[i]);
    while (m->pending != NULL) {
        pending *p = m->pending;
        m->pending = p->next;
        pending_free(p);
    }
    free(m->tensors);
    strmap_destroy(m->index);
    emaconf_free(&m->cfg);
    free(m->name);
    free(m);
}

/* Free a transaction and its staging buffers. */
static void
txn_free(txn *t)
{
    if (t == NULL)
        return;
    stage_free(&t->st);
    free(t->model);
    free(t);
}

/* Free an unlinked transaction, or keep it until its running jobs are done. */
static void
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

void
store_view_free(store_view *v)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < v->ntensors; i++) {
        free((char *)v->tensors[i].name);
        blob_unref(v->tensors[i].data);
    }
    free(v->tensors);
    free(v->model);
    free(v);
}

void
store_destroy(store *s)
{
    if (s == NULL)
        return;
    while (s->txns != NULL) {
        txn *t = s->txns;
        s->txns = t->next;
        txn_free(t);
    }
    while (s->zombies != NULL) {
        txn *t = s->zombies;
        s->zombies = t->next;
        txn_free(t);
    }
    while (s->views != NULL) {
        store_view *v = s->views;
        s->views = v->next;
        store_view_free(v);
    }
    for (size_t i = 0; i < s->nmodels; i++)
        model_free(s->models[i]);
    free(s->models);
    strmap_destroy(s->index);
    free(s);
}

void
store_gauges_get(const store *s, store_gauges *g)
{
    memset(g, 0, sizeof(*g));
    g->models = s->nmodels;
    for (size_t i = 0; i < s->nmodels; i++) {
        const model *m = s->models[i];
        g->tensors += m->ntensors;
        g->shadow_bytes += m->shadow_bytes;
        g->steps_pending += m->npending;
        for (const pending *p = m->pending; p != NULL; p = p->next)
            g->staged_bytes += p->st.bytes;
    }
    for (const txn *t = s->txns; t != NULL; t = t->next)
        g->staged_bytes += t->st.bytes;
    g->txn_open = s->ntxns;
    g->views_open = s->nviews;
}

model *
store_model_find(store *s, const char *name, size_t len)
{
    return strmap_get(s->index, name, len);
}

model *
store_model_at(store *s, size_t i)
{
    return i < s->nmodels ? s->models[i] : NULL;
}

/* Look up a model or fail with EMAD_ENOMODEL. */
static model *
model_get(store *s, const char *name, size_t len, store_err *err)
{
    char buf[EMAD_MAX_MODEL_NAME_BYTES + 1];
    model *m = store_model_find(s, name, len);

    if (m == NULL)
        fail(err, EMAD_ENOMODEL, NULL, "no model '%s'", cname(buf, sizeof(buf), name, len));
    return m;
}

/* Check a configuration; EMAD_ERANGE with the reason. */
static int
check_config(const emad_model_config *cfg, store_err *err)
{
    char why[256];

    if (emaconf_check(cfg, why, sizeof(why)) != 0)
        return fail(err, EMAD_ERANGE, NULL, "%s", why);
    return 0;
}

int
store_create_model(store *s, const char *name, size_t len, const emad_model_config *cfg,
                   int exist_ok, int *created, store_err *err)
{
    char buf[EMAD_MAX_MODEL_NAME_BYTES + 1];
    const char *diff;
    model *m;

    *created = 0;
    if (proto_check_model_name(name, len) != 0)
        return fail(err, EMAD_ENAME, NULL,
                    "model name must be 1..%d bytes of A-Z a-z 0-9 . _ - and not start with '.'",
                    EMAD_MAX_MODEL_NAME_BYTES);
    if (check_config(cfg, err) != 0)
        return err->code;
    cname(buf, sizeof(buf), name, len);
    if ((m = store_model_find(s, name, len)) != NULL) {
        if ((diff = emaconf_diff(&m->cfg, cfg, 0)) != NULL)
            return fail(err, EMAD_EEXIST, NULL,
                        "model '%s' exists with a different %s (see emactl list %s)", buf, diff,
                        buf);
        if (!exist_ok)
            return fail(err, EMAD_EEXIST, NULL, "model '%s' already exists", buf);
        return 0;
    }
    if (s->nmodels >= STORE_MAX_MODELS)
        return fail(err, EMAD_ELIMIT, NULL, "at most %d models", STORE_MAX_MODELS);
    m = xcalloc(1, sizeof(*m));
    m->name = xstrndup(name, len);
    m->uid = s->next_id++;
    m->version = 1;
    emaconf_copy(&m->cfg, cfg);
    m->index = strmap_create();
    if (s->nmodels == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 8;
        s->models = xreallocarray(s->models, s->cap, sizeof(*s->models));
    }
    s->models[s->nmodels++] = m;
    strmap_put(s->index, m->name, len, m);
    *created = 1;
    return 0;
}

int
store_configure(store *s, const char *name, size_t len, const emad_model_config *cfg,
                store_err *err)
{
    model *m = model_get(s, name, len, err);
    const char *diff;

    if (m == NULL || check_config(cfg, err) != 0)
        return err->code;
    if ((diff = emaconf_diff(&m->cfg, cfg, 1)) != NULL)
        return fail(err, EMAD_EIMMUTABLE, NULL,
                    "model '%s': %s cannot change on an existing model (drop and create it)",
                    m->name, strcmp(diff, "decays") == 0 ? "the number of decays" : diff);
    memcpy(m->cfg.decays, cfg->decays, sizeof(m->cfg.decays));
    m->cfg.schedule = cfg->schedule;
    m->cfg.update_after_step = cfg->update_after_step;
    m->cfg.inv_gamma = cfg->inv_gamma;
    m->cfg.power = cfg->power;
    m->cfg.min_decay = cfg->min_decay;
    m->cfg.step_gap = cfg->step_gap;
    m->cfg.nonfinite = cfg->nonfinite;
    m->version++;
    return 0;
}

int
store_drop_model(store *s, const char *name, size_t len, store_err *err)
{
    model *m = model_get(s, name, len, err);
    txn **pp;

    if (m == NULL)
        return err->code;
    for (pp = &s->txns; *pp != NULL;) {
        txn *t = *pp;
        if (t->model_len == len && memcmp(t->model, name, len) == 0) {
            *pp = t->next;
            s->ntxns--;
            txn_discard(s, t);
        } else {
            pp = &t->next;
        }
    }
    strmap_del(s->index, m->name, len);
    for (size_t i = 0; i < s->nmodels; i++) {
        if (s->models[i] == m) {
            memmove(&s->models[i], &s->models[i + 1], (s->nmodels - i - 1) * sizeof(*s->models));
            s->nmodels--;
            break;
        }
    }
    model_free(m);
    return 0;
}

/* Is a tensor of this kind, dtype and name averaged under m's configuration? */
static int
is_averaged(const model *m, int kind, int dtype, const char *name, size_t len)
{
    if (kind == EMAD_BUFFER && (m->cfg.buffers != EMAD_BUFFERS_AVERAGE || !dtype_is_float(dtype)))
        return 0;
    return !emaconf_match(m->cfg.copy, m->cfg.ncopy, name, len);
}

/* Does a stored tensor differ from (kind, dtype, shape)? Fills err if so. */
static int
check_against(const tensor *t, const char *name, int kind, int dtype, uint32_t ndim,
              const uint64_t *shape, store_err *err)
{
    char a[256], b[256];

    if (t->kind != kind)
        return fail(err, EMAD_EKIND, name, "tensor '%s': stored as a %s, pushed as a %s", name,
                    proto_kind_name(t->kind), proto_kind_name(kind));
    if (t->dtype != dtype)
        return fail(err, EMAD_EKIND, name, "tensor '%s': dtype %s differs from stored %s", name,
                    dtype_name(dtype), dtype_name(t->dtype));
    if (t->ndim != ndim || memcmp(t->shape, shape, ndim * sizeof(uint64_t)) != 0)
        return fail(err, EMAD_ESHAPE, name, "tensor '%s': shape %s differs from stored %s", name,
                    dtype_fmt_shape(a, sizeof(a), shape, ndim),
                    dtype_fmt_shape(b, sizeof(b), t->shape, t->ndim));
    return 0;
}

/*
 * Check one input on its own and against the stored tensor (if any):
 * name, kind, dtype, shape, the slice [start, start + count) within the
 * tensor and the data length (the whole slice, or with chunked set a chunk
 * at offset within it). *numel and *count get the tensor's element count
 * and the slice's.
 */
static int
check_input(const model *m, const store_input *in, int chunked, uint64_t *numel, uint64_t *count,
            store_err *err)
{
    char name[EMAD_MAX_NAME_BYTES + 1], a[256];
    const tensor *t;
    uint64_t nbytes, sbytes, isz;

    if (proto_check_tensor_name(in->name, in->name_len) != 0) {
        /* The name itself may be unprintable: quote at most a prefix. */
        return fail(err, EMAD_ENAME, NULL,
                    "tensor name must be 1..%d bytes of UTF-8 without control characters "
                    "(got %zu bytes)",
                    EMAD_MAX_NAME_BYTES, in->name_len);
    }
    cname(name, sizeof(name), in->name, in->name_len);
    if (in->kind != EMAD_PARAM && in->kind != EMAD_BUFFER)
        return fail(err, EMAD_EMALFORMED, name, "tensor '%s': kind must be param or buffer", name);
    if ((isz = dtype_size(in->dtype)) == 0)
        return fail(err, EMAD_EDTYPE, name, "tensor '%s': unknown dtype", name);
    if (in->kind == EMAD_PARAM && dtype_shadow(in->dtype) == EMAD_DTYPE_INVALID)
        return fail(err, EMAD_EDTYPE, name,
                    "tensor '%s': a param must be F32, F16, BF16 or F64, not %s (push it as a "
                    "buffer to copy it)",
                    name, dtype_name(in->dtype));
    if (in->ndim > EMAD_MAX_NDIM)
        return fail(err, EMAD_ELIMIT, name, "tensor '%s': more than %d dimensions", name,
                    EMAD_MAX_NDIM);
    if (dtype_numel(in->shape, in->ndim, in->dtype, numel, &nbytes) != 0)
        return fail(err, EMAD_ELIMIT, name, "tensor '%s': shape %s is too large", name,
                    dtype_fmt_shape(a, sizeof(a), in->shape, in->ndim));
    if (in->count == 0 && in->start != 0)
        return fail(err, EMAD_ERANGE, name,
                    "tensor '%s': a slice at element %llu needs a count > 0", name,
                    (unsigned long long)in->start);
    *count = in->count != 0 ? in->count : *numel;
    if (in->start > *numel || *count > *numel - in->start)
        return fail(err, EMAD_ERANGE, name,
                    "tensor '%s': slice [%llu, %llu) is outside its %llu elements", name,
                    (unsigned long long)in->start, (unsigned long long)(in->start + *count),
                    (unsigned long long)*numel);
    sbytes = *count * isz;
    if (!chunked && in->len != sbytes)
        return fail(err, EMAD_ESIZE, name,
                    "tensor '%s': data has %llu bytes but %s %s of %s needs %llu", name,
                    (unsigned long long)in->len, in->count != 0 ? "the slice of" : "shape",
                    dtype_fmt_shape(a, sizeof(a), in->shape, in->ndim), dtype_name(in->dtype),
                    (unsigned long long)sbytes);
    if (chunked && (in->offset > sbytes || in->len > sbytes - in->offset))
        return fail(err, EMAD_ESIZE, name,
                    "tensor '%s': chunk [%llu, +%llu) runs past the %llu bytes of its %s", name,
                    (unsigned long long)in->offset, (unsigned long long)in->len,
                    (unsigned long long)sbytes, in->count != 0 ? "slice" : "tensor");
    if ((t = strmap_get(m->index, in->name, in->name_len)) == NULL)
        return 0;
    return check_against(t, name, in->kind,
                         in->as_dtype != EMAD_DTYPE_INVALID ? in->as_dtype : in->dtype, in->ndim,
                         in->shape, err);
}

/*
 * The per-message tensor limit, checked by store_push() and store_txn_push()
 * only: a transaction may stage more tensors than one message carries, and
 * its commit must still apply them all.
 */
static int
check_message_size(size_t n, store_err *err)
{
    if (n == 0)
        return fail(err, EMAD_EMALFORMED, NULL, "push has no tensors");
    if (n > PROTO_MAX_TENSORS)
        return fail(err, EMAD_ELIMIT, NULL, "push has %zu tensors, at most %d", n,
                    PROTO_MAX_TENSORS);
    return 0;
}

/* Does an input or item of this description match an item already staged? */
static int
check_same_tensor(const item *it, const store_input *in, const char *what, store_err *err)
{
    char name[EMAD_MAX_NAME_BYTES + 1], a[256], b[256];

    cname(name, sizeof(name), in->name, in->name_len);
    if (it->kind != in->kind || it->dtype != in->dtype)
        return fail(err, EMAD_EKIND, name, "tensor '%s': kind or dtype differs from %s", name,
                    what);
    if (it->ndim != in->ndim || memcmp(it->shape, in->shape, it->ndim * sizeof(uint64_t)) != 0)
        return fail(err, EMAD_ESHAPE, name, "tensor '%s': shape %s differs from %s %s", name,
                    dtype_fmt_shape(a, sizeof(a), in->shape, in->ndim), what,
                    dtype_fmt_shape(b, sizeof(b), it->shape, it->ndim));
    return 0;
}

static int
overlap_error(const char *name, uint64_t start, uint64_t count, const slice *other, store_err *err)
{
    if (start == 0 && other->start == 0 && count == other->count)
        return fail(err, EMAD_EDUP, name, "tensor '%s' appears twice in one push", name);
    return fail(err, EMAD_EOVERLAP, name,
                "tensor '%s': slice [%llu, %llu) overlaps [%llu, %llu) of the same step", name,
                (unsigned long long)start, (unsigned long long)(start + count),
                (unsigned long long)other->start,
                (unsigned long long)(other->start + other->count));
}

/*
 * Check the inputs of one push message and gather them into a stage whose
 * slices borrow the message's data. Inputs matching an ignore pattern are
 * checked on their own and counted, not staged.
 */
static int
stage_inputs(const model *m, const store_input *in, size_t n, stage *st, store_err *err)
{
    char name[EMAD_MAX_NAME_BYTES + 1];
    const slice *other;

    stage_reserve(st, n);
    for (size_t i = 0; i < n; i++) {
        uint64_t numel, count;
        item *it;
        slice *sl;

        if (check_input(m, &in[i], 0, &numel, &count, err) != 0)
            return err->code;
        if (emaconf_match(m->cfg.ignore, m->cfg.nignore, in[i].name, in[i].name_len)) {
            st->ignored++;
            continue;
        }
        cname(name, sizeof(name), in[i].name, in[i].name_len);
        if ((it = stage_find(st, in[i].name, in[i].name_len)) != NULL) {
            if (check_same_tensor(it, &in[i], "another slice in this push", err) != 0)
                return err->code;
            if ((other = item_overlap(it, in[i].start, count)) != NULL)
                return overlap_error(name, in[i].start, count, other, err);
        } else {
            it = stage_add(st, &in[i], numel);
        }
        sl = item_add_slice(it, in[i].start, count);
        sl->data = (void *)in[i].data;
        sl->received = in[i].len;
    }
    return 0;
}

static int
cmp_slice(const void *a, const void *b)
{
    const slice *x = a, *y = b;

    return x->start < y->start ? -1 : x->start > y->start;
}

/* Check every slice of an item has all its bytes (transactions receive them in chunks). */
static int
check_received(const item *it, store_err *err)
{
    uint64_t isz = dtype_size(it->dtype);

    for (size_t k = 0; k < it->nslices; k++) {
        const slice *sl = &it->slices[k];
        if (sl->received != sl->count * isz)
            return fail(err, EMAD_EINCOMPLETE, it->name,
                        "tensor '%s': slice [%llu, %llu) has %llu of %llu bytes", it->name,
                        (unsigned long long)sl->start, (unsigned long long)(sl->start + sl->count),
                        (unsigned long long)sl->received, (unsigned long long)(sl->count * isz));
    }
    return 0;
}

/* Sort an item's slices and check they cover it exactly, each one complete. */
static int
check_coverage(item *it, store_err *err)
{
    uint64_t next = 0;

    if (check_received(it, err) != 0)
        return err->code;
    qsort(it->slices, it->nslices, sizeof(*it->slices), cmp_slice);
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
        return fail(err, EMAD_EINCOMPLETE, it->name,
                    "tensor '%s': slices cover %llu of its %llu elements", it->name,
                    (unsigned long long)covered, (unsigned long long)it->numel);
    }
    return 0;
}

/* Per-item plan made before applying. */
typedef struct plan {
    tensor *t; /* existing tensor, or NULL for a new one */
    int averaged;
    uint32_t nshadow;
    blob *target[EMAD_MAX_DECAYS]; /* blobs to write (new ones for new tensors and copy-on-write) */
    int stale, skipped;
} plan;

/*
 * Count NaN/Inf in the averaged tensors of a stage (unless the model
 * allows them). With nonfinite = reject, the first bad tensor fails the
 * whole stage with EMAD_ENONFINITE. p, if not NULL, holds each item's
 * stored tensor already looked up (p[i].t).
 */
static int
check_nonfinite(const model *m, stage *st, const plan *p, store_err *err)
{
    if (st->checked)
        return 0;
    for (size_t i = 0; i < st->nitems && m->cfg.nonfinite != EMAD_NONFINITE_ALLOW; i++) {
        item *it = &st->items[i];
        const tensor *t = p != NULL ? p[i].t : strmap_get(m->index, it->name, it->name_len);
        int averaged =
            t != NULL ? t->averaged : is_averaged(m, it->kind, it->dtype, it->name, it->name_len);

        it->nonfinite = 0;
        if (!averaged)
            continue;
        for (size_t k = 0; k < it->nslices; k++)
            it->nonfinite += ema_count_nonfinite(it->slices[k].data, it->dtype,
                                                 it->slices[k].received / dtype_size(it->dtype));
        if (it->nonfinite > 0 && m->cfg.nonfinite == EMAD_NONFINITE_REJECT)
            return fail(err, EMAD_ENONFINITE, it->name,
                        "tensor '%s': %llu NaN or Inf value%s; push rejected, nothing applied "
                        "(model option nonfinite = reject)",
                        it->name, (unsigned long long)it->nonfinite, it->nonfinite == 1 ? "" : "s");
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
 * Plan every item and allocate the blobs it needs; EMAD_ENOMEM undoes all.
 * p is zeroed but for p[i].t, each item's stored tensor or NULL.
 */
static int
reserve(model *m, const stage *st, uint64_t step, plan *p, store_err *err)
{
    for (size_t i = 0; i < st->nitems; i++) {
        const item *it = &st->items[i];
        tensor *t = p[i].t;
        uint64_t numel, nbytes;
        int sdtype;

        if (t != NULL && t->step >= step) {
            p[i].stale = 1;
            continue;
        }
        if (it->nonfinite > 0) {
            p[i].skipped = 1; /* nonfinite = skip: reject failed earlier */
            continue;
        }
        p[i].averaged =
            t != NULL ? t->averaged : is_averaged(m, it->kind, it->dtype, it->name, it->name_len);
        p[i].nshadow = p[i].averaged ? (uint32_t)m->cfg.ndecays : 1;
        sdtype = p[i].averaged ? dtype_shadow(it->dtype) : it->dtype;
        (void)dtype_numel(it->shape, it->ndim, sdtype, &numel, &nbytes);
        for (uint32_t j = 0; j < p[i].nshadow; j++) {
            if (t != NULL && t->shadow[j]->refs == 1) {
                p[i].target[j] = t->shadow[j]; /* update in place */
                continue;
            }
            if ((p[i].target[j] = blob_new(nbytes)) == NULL) {
                unreserve(p, i + 1);
                return fail(err, EMAD_ENOMEM, it->name,
                            "tensor '%s': out of memory for %llu bytes of shadow", it->name,
                            (unsigned long long)nbytes);
            }
        }
    }
    return 0;
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
    for (uint32_t j = 0; j < p->nshadow; j++) {
        t->shadow[j] = p->target[j];
        m->shadow_bytes += p->target[j]->size;
    }
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

    if (!t->averaged) {
        memcpy(out, sl->data, sl->count * ssz);
    } else if (src == NULL || d == 0.0) {
        (void)ema_init(out, sl->data, t->dtype, sl->count);
    } else {
        (void)ema_update(out, (const char *)src + sl->start * ssz, sl->data, t->dtype, sl->count,
                         d);
    }
}

/* Apply a checked, reserved stage; cannot fail. */
static void
apply(model *m, const stage *st, uint64_t step, plan *p, uint64_t now_ms, store_result *res)
{
    decay_cache dc = {0};

    for (size_t i = 0; i < st->nitems; i++) {
        const item *it = &st->items[i];
        tensor *t = p[i].t;
        const double *d = NULL;

        if (p[i].stale) {
            res->stale++;
            if (res->nstale_names < sizeof(res->stale_names) / sizeof(res->stale_names[0]))
                res->stale_names[res->nstale_names++] = t->name;
            continue;
        }
        if (p[i].skipped) {
            res->skipped++;
            continue;
        }
        if (t == NULL) {
            t = tensor_add(m, it, &p[i]);
            for (uint32_t j = 0; j < t->nshadow; j++)
                for (size_t k = 0; k < it->nslices; k++)
                    apply_slice(t, &it->slices[k], t->shadow[j]->data, NULL, 0.0);
        } else {
            if (t->averaged)
                d = decays_for(m, &dc, t->step, step);
            for (uint32_t j = 0; j < t->nshadow; j++) {
                for (size_t k = 0; k < it->nslices; k++)
                    apply_slice(t, &it->slices[k], p[i].target[j]->data, t->shadow[j]->data,
                                d != NULL ? d[j] : 0.0);
                if (p[i].target[j] != t->shadow[j]) {
                    blob_unref(t->shadow[j]); /* a view keeps the old data */
                    t->shadow[j] = p[i].target[j];
                }
            }
        }
        t->step = step;
        res->applied++;
    }
    if (res->applied > 0) {
        if (step > m->step)
            m->step = step;
        m->last_push_ms = now_ms;
        m->version++;
    }
    res->step = m->step;
}

/*
 * Apply a complete stage at step: every tensor checked against the stored
 * one and for full coverage, non-finite values counted, blobs reserved,
 * then applied all at once. res counts are added to.
 */
static int
apply_stage(model *m, stage *st, uint64_t step, uint64_t now_ms, store_result *res, store_err *err)
{
    plan *p = xcalloc(st->nitems ? st->nitems : 1, sizeof(*p));
    int rc = 0;

    /* Each name is looked up once; nothing adds or removes tensors until apply(). */
    for (size_t i = 0; i < st->nitems && rc == 0; i++) {
        item *it = &st->items[i];
        tensor *t = p[i].t = strmap_get(m->index, it->name, it->name_len);

        if (t != NULL &&
            check_against(t, it->name, it->kind, it->dtype, it->ndim, it->shape, err) != 0)
            rc = err->code;
        else if (check_coverage(it, err) != 0)
            rc = err->code;
    }
    if (rc == 0)
        rc = check_nonfinite(m, st, p, err);
    if (rc == 0) {
        res->ignored += st->ignored;
        if (st->nitems == 0)
            res->step = m->step;
        else if ((rc = reserve(m, st, step, p, err)) == 0)
            apply(m, st, step, p, now_ms, res);
    }
    free(p);
    return rc;
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
        fail(err, EMAD_ELIMIT, NULL,
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
            store_input desc = {.name = it->name,
                                .name_len = it->name_len,
                                .kind = it->kind,
                                .dtype = it->dtype,
                                .ndim = it->ndim};
            memcpy(desc.shape, it->shape, sizeof(desc.shape));
            if (check_same_tensor(have, &desc, "what other writers pushed for this step", err))
                return err->code;
            for (size_t k = 0; k < it->nslices; k++) {
                const slice *o = item_overlap(have, it->slices[k].start, it->slices[k].count);
                if (o != NULL)
                    return fail(err, EMAD_EOVERLAP, it->name,
                                "tensor '%s': slice [%llu, %llu) overlaps [%llu, %llu) pushed by "
                                "another writer for this step",
                                it->name, (unsigned long long)it->slices[k].start,
                                (unsigned long long)(it->slices[k].start + it->slices[k].count),
                                (unsigned long long)o->start,
                                (unsigned long long)(o->start + o->count));
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
                    return fail(err, EMAD_ENOMEM, src->items[i].name,
                                "tensor '%s': out of memory staging %llu bytes", src->items[i].name,
                                (unsigned long long)sl->received);
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
            store_input desc = {.name = it->name,
                                .name_len = it->name_len,
                                .kind = it->kind,
                                .dtype = it->dtype,
                                .ndim = it->ndim};
            memcpy(desc.shape, it->shape, sizeof(desc.shape));
            have = stage_add(dst, &desc, it->numel);
        }
        have->nonfinite += it->nonfinite;
        for (size_t k = 0; k < it->nslices; k++) {
            slice *from = &it->slices[k];
            slice *to = item_add_slice(have, from->start, from->count);
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
 * A writer's complete contribution to a step (one push message, or a
 * committed transaction): applied at once with one writer; with several,
 * merged into the step's pending set, which is applied when the last
 * writer has contributed.
 */
static int
contribute(model *m, uint64_t step, uint32_t writer, stage *st, uint64_t now_ms, store_result *res,
           store_err *err)
{
    pending *p;
    int created, rc;

    memset(res, 0, sizeof(*res));
    if (writer >= m->cfg.writers)
        return fail(err, EMAD_ERANGE, NULL, "model '%s' has %u writer%s: writer %u is out of range",
                    m->name, m->cfg.writers, m->cfg.writers == 1 ? "" : "s", writer);
    if (m->cfg.writers == 1)
        return apply_stage(m, st, step, now_ms, res, err);
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
    if ((rc = check_nonfinite(m, st, NULL, err)) != 0 || (rc = merge_stage(&p->st, st, err)) != 0) {
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
        return fail(err, EMAD_ELIMIT, name, "tensor '%s': more than %d dimensions", name,
                    EMAD_MAX_NDIM);
    if (strmap_get(m->index, name, in.name_len) != NULL)
        return fail(err, EMAD_EDUP, name, "tensor '%s' restored twice", name);
    if (proto_check_tensor_name(name, in.name_len) != 0 || dtype_size(dtype) == 0 ||
        (averaged && dtype_shadow(dtype) == EMAD_DTYPE_INVALID))
        return fail(err, EMAD_EDTYPE, name, "tensor '%s': invalid name or dtype", name);
    memcpy(in.shape, shape, ndim * sizeof(uint64_t));
    if (dtype_numel(in.shape, ndim, averaged ? dtype_shadow(dtype) : dtype, &numel, &nbytes) != 0)
        return fail(err, EMAD_ELIMIT, name, "tensor '%s': shape too large", name);
    memset(&p, 0, sizeof(p));
    p.averaged = averaged;
    p.nshadow = averaged ? (uint32_t)m->cfg.ndecays : 1;
    for (uint32_t j = 0; j < p.nshadow; j++) {
        if ((p.target[j] = blob_new(nbytes)) == NULL) {
            unreserve(&p, 1);
            return fail(err, EMAD_ENOMEM, name, "tensor '%s': out of memory", name);
        }
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

void
store_restore_done(model *m, uint64_t step)
{
    m->step = step;
    m->snap_version = m->version;
    m->snap_step = step;
}

int
store_push(store *s, const char *model_name, size_t len, uint64_t step, uint32_t writer,
           const store_input *in, size_t n, uint64_t now_ms, store_result *res, store_err *err)
{
    model *m = model_get(s, model_name, len, err);
    stage st;
    int rc;

    memset(res, 0, sizeof(*res));
    if (m == NULL)
        return err->code;
    /* A writer of a multi-writer model may have nothing to contribute to a step. */
    if ((n > 0 || m->cfg.writers == 1) && check_message_size(n, err) != 0)
        return err->code;
    stage_init(&st);
    if ((rc = stage_inputs(m, in, n, &st, err)) == 0)
        rc = contribute(m, step, writer, &st, now_ms, res, err);
    stage_free(&st);
    return rc;
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

/* Check one seed input: whole tensor, a data dtype the tensor's shadow can take. */
static int
check_seed(const model *m, const store_input *in, store_err *err)
{
    char name[EMAD_MAX_NAME_BYTES + 1];
    uint64_t numel, count;
    int dt = in->as_dtype != EMAD_DTYPE_INVALID ? in->as_dtype : in->dtype;
    const tensor *t;

    cname(name, sizeof(name), in->name, in->name_len);
    if (in->count != 0)
        return fail(err, EMAD_ERANGE, name, "tensor '%s': a seed carries whole tensors", name);
    if (check_input(m, in, 0, &numel, &count, err) != 0)
        return err->code;
    if (dt != in->dtype) {
        /* Data in the shadow's dtype: only for averaged floating tensors. */
        if (dtype_size(dt) == 0 || !dtype_is_float(dt) || dtype_shadow(dt) != in->dtype)
            return fail(err, EMAD_EDTYPE, name,
                        "tensor '%s': data in %s cannot seed a %s tensor (only its shadow dtype)",
                        name, dtype_name(in->dtype), dtype_name(dt) ? dtype_name(dt) : "?");
        t = strmap_get(m->index, in->name, in->name_len);
        if (!(t != NULL ? t->averaged : is_averaged(m, in->kind, dt, in->name, in->name_len)))
            return fail(err, EMAD_EDTYPE, name,
                        "tensor '%s' is copied, not averaged: seed it in its own dtype %s", name,
                        dtype_name(dt));
    }
    return 0;
}

int
store_seed(store *s, const char *model_name, size_t len, uint64_t step, const store_input *in,
           size_t n, uint64_t now_ms, store_result *res, store_err *err)
{
    model *m = model_get(s, model_name, len, err);
    plan *p;
    long dup;
    size_t i;

    memset(res, 0, sizeof(*res));
    if (m == NULL || check_message_size(n, err) != 0)
        return err->code;
    for (i = 0; i < n; i++)
        if (check_seed(m, &in[i], err) != 0)
            return err->code;
    if ((dup = find_duplicate(in, n)) >= 0) {
        char name[EMAD_MAX_NAME_BYTES + 1];
        cname(name, sizeof(name), in[dup].name, in[dup].name_len);
        return fail(err, EMAD_EDUP, name, "tensor '%s' appears twice in one seed", name);
    }
    p = xcalloc(n, sizeof(*p));
    for (i = 0; i < n; i++) {
        int dt = in[i].as_dtype != EMAD_DTYPE_INVALID ? in[i].as_dtype : in[i].dtype;
        tensor *t = strmap_get(m->index, in[i].name, in[i].name_len);
        uint64_t numel, nbytes;

        if (emaconf_match(m->cfg.ignore, m->cfg.nignore, in[i].name, in[i].name_len)) {
            p[i].skipped = 1;
            continue;
        }
        p[i].t = t;
        p[i].averaged =
            t != NULL ? t->averaged : is_averaged(m, in[i].kind, dt, in[i].name, in[i].name_len);
        p[i].nshadow = p[i].averaged ? (uint32_t)m->cfg.ndecays : 1;
        (void)dtype_numel(in[i].shape, in[i].ndim, p[i].averaged ? dtype_shadow(dt) : dt, &numel,
                          &nbytes);
        for (uint32_t j = 0; j < p[i].nshadow; j++) {
            if (t != NULL && t->shadow[j]->refs == 1) {
                p[i].target[j] = t->shadow[j];
            } else if ((p[i].target[j] = blob_new(nbytes)) == NULL) {
                unreserve(p, i + 1);
                free(p);
                return fail(err, EMAD_ENOMEM, NULL, "out of memory for %llu bytes of shadow",
                            (unsigned long long)nbytes);
            }
        }
    }
    for (i = 0; i < n; i++) {
        tensor *t = p[i].t;
        item it;

        if (p[i].skipped) {
            res->ignored++;
            continue;
        }
        if (t == NULL) {
            memset(&it, 0, sizeof(it));
            it.name = (char *)in[i].name;
            it.name_len = in[i].name_len;
            it.kind = in[i].kind;
            it.dtype = in[i].as_dtype != EMAD_DTYPE_INVALID ? in[i].as_dtype : in[i].dtype;
            it.ndim = in[i].ndim;
            memcpy(it.shape, in[i].shape, sizeof(it.shape));
            t = tensor_add(m, &it, &p[i]);
        }
        for (uint32_t j = 0; j < t->nshadow; j++) {
            (void)dtype_convert(p[i].target[j]->data, t->sdtype, in[i].data, in[i].dtype, t->numel);
            if (p[i].target[j] != t->shadow[j]) {
                blob_unref(t->shadow[j]);
                t->shadow[j] = p[i].target[j];
            }
        }
        t->step = step;
        res->applied++;
    }
    free(p);
    if (step > m->step)
        m->step = step;
    m->last_push_ms = now_ms;
    m->version++;
    res->step = m->step;
    return 0;
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
    fail(err, EMAD_ENOTXN, NULL, "no open transaction %llu (unknown, expired or finished)",
         (unsigned long long)id);
    return NULL;
}

uint32_t
store_txn_inflight(const store *s, uint64_t id)
{
    const txn *t = txn_find(s, id);

    return t != NULL ? t->inflight : 0;
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
    model *m = model_get(s, model_name, len, err);
    txn *t;

    if (m == NULL)
        return err->code;
    if (writer >= m->cfg.writers)
        return fail(err, EMAD_ERANGE, NULL, "model '%s' has %u writer%s: writer %u is out of range",
                    m->name, m->cfg.writers, m->cfg.writers == 1 ? "" : "s", writer);
    if (s->ntxns >= STORE_MAX_TXNS)
        return fail(err, EMAD_ELIMIT, NULL, "at most %d open transactions", STORE_MAX_TXNS);
    t = xcalloc(1, sizeof(*t));
    t->id = s->next_id++;
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
 * Where bytes [off, off + len) of a slice stand against the ranges already
 * received: 0 all new, 1 all received before (a resend), -1 partly.
 */
static int
slice_seen(const slice *sl, uint64_t off, uint64_t len)
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
static void
slice_got(slice *sl, uint64_t off, uint64_t len)
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
static int
check_chunk(item *it, const store_input *in, uint64_t count, store_err *err)
{
    char name[EMAD_MAX_NAME_BYTES + 1];
    const slice *sl, *o;

    cname(name, sizeof(name), in->name, in->name_len);
    if (it == NULL)
        return 0;
    if (check_same_tensor(it, in, "earlier chunks", err) != 0)
        return err->code;
    if ((sl = item_slice_at(it, in->start, count)) == NULL) {
        if ((o = item_overlap(it, in->start, count)) != NULL)
            return overlap_error(name, in->start, count, o, err);
        return 0;
    }
    if (slice_seen(sl, in->offset, in->len) < 0)
        return fail(err, EMAD_EORDER, name,
                    "tensor '%s': chunk [%llu, +%llu) overlaps bytes received in another chunk",
                    name, (unsigned long long)in->offset, (unsigned long long)in->len);
    return 0;
}

/*
 * First chunk of an item in an eager transaction: take references to the
 * stored tensor's shadows, get a target blob per shadow (the tensor's
 * spare when it has one) and the decays from the tensor's step to the
 * transaction's. A tensor already at or past the step is stale: its chunks
 * are checked and counted, not applied.
 */
static int
eager_prepare(model *m, const txn *x, item *it, store_err *err)
{
    tensor *t = strmap_get(m->index, it->name, it->name_len);
    uint64_t numel, nbytes;
    int sdtype;

    if (t != NULL && t->step >= x->step) {
        it->stale = 1;
        it->prepared = 1;
        return 0;
    }
    it->averaged =
        t != NULL ? t->averaged : is_averaged(m, it->kind, it->dtype, it->name, it->name_len);
    sdtype = it->averaged ? dtype_shadow(it->dtype) : it->dtype;
    (void)dtype_numel(it->shape, it->ndim, sdtype, &numel, &nbytes);
    for (uint32_t j = 0; j < (it->averaged ? (uint32_t)m->cfg.ndecays : 1); j++) {
        if (t != NULL && t->spare[j] != NULL && t->spare[j]->size == nbytes) {
            it->target[j] = t->spare[j];
            t->spare[j] = NULL;
        } else if ((it->target[j] = blob_new(nbytes)) == NULL) {
            for (uint32_t k = 0; k < j; k++) {
                blob_unref(it->target[k]);
                blob_unref(it->base[k]);
                it->target[k] = it->base[k] = NULL;
            }
            return fail(err, EMAD_ENOMEM, it->name,
                        "tensor '%s': out of memory for %llu bytes of shadow", it->name,
                        (unsigned long long)nbytes);
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

/* The tasks of one piece of a chunk (eager_tasks()). */
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
                  .n = n};
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
 * them) and the update of every shadow read the piece's values while they
 * are in the cache.
 */
static void
eager_tasks(const model *m, const item *it, uint32_t index, uint64_t e0, uint64_t n,
            const void *src, task_list *tl)
{
    uint64_t per =
        TASK_PIECE_BYTES / dtype_size(it->averaged ? dtype_shadow(it->dtype) : it->dtype);

    for (uint64_t done = 0; done < n; done += per) {
        uint64_t k = n - done < per ? n - done : per;
        eager_piece(m, it, index, e0 + done, k, (const char *)src + done * dtype_size(it->dtype),
                    tl);
    }
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
    long dup;

    *staged_n = 0;
    *job = NULL;
    if (t == NULL)
        return err->code;
    if (model_name != NULL && (len != t->model_len || memcmp(model_name, t->model, len) != 0))
        return fail(err, EMAD_EMALFORMED, NULL, "transaction %llu belongs to model '%s'",
                    (unsigned long long)id, t->model);
    if (has_step && step != t->step)
        return fail(err, EMAD_EMALFORMED, NULL, "transaction %llu is for step %llu, not %llu",
                    (unsigned long long)id, (unsigned long long)t->step, (unsigned long long)step);
    if (t->failed.code != 0) {
        *err = t->failed;
        return err->code;
    }
    if ((m = model_get(s, t->model, t->model_len, err)) == NULL)
        return err->code;
    if (check_message_size(n, err) != 0)
        return err->code;
    if ((dup = find_duplicate(in, n)) >= 0) {
        char name[EMAD_MAX_NAME_BYTES + 1];
        cname(name, sizeof(name), in[dup].name, in[dup].name_len);
        return fail(err, EMAD_EDUP, name, "tensor '%s' appears twice in one request", name);
    }
    /* Check every chunk, against the stored tensor and what is staged, before touching any. */
    counts = xcalloc(n, sizeof(*counts));
    skip = xcalloc(n, 1);
    for (size_t i = 0; i < n; i++) {
        uint64_t numel, isz = dtype_size(in[i].dtype);
        if (check_input(m, &in[i], 1, &numel, &counts[i], err) != 0)
            goto fail;
        if (emaconf_match(m->cfg.ignore, m->cfg.nignore, in[i].name, in[i].name_len)) {
            skip[i] = 1;
            continue;
        }
        if (t->eager && (in[i].offset % isz != 0 || in[i].len % isz != 0)) {
            char name[EMAD_MAX_NAME_BYTES + 1];
            cname(name, sizeof(name), in[i].name, in[i].name_len);
            fail(err, EMAD_ESIZE, name,
                 "tensor '%s': chunk [%llu, +%llu) does not hold whole %zu-byte elements", name,
                 (unsigned long long)in[i].offset, (unsigned long long)in[i].len, (size_t)isz);
            goto fail;
        }
        if (check_chunk(stage_find(&t->st, in[i].name, in[i].name_len), &in[i], counts[i], err))
            goto fail;
    }
    /* Allocate new slices (and, eager, the new shadows), then take the chunks. */
    for (size_t i = 0; i < n; i++) {
        item *it;
        slice *sl;
        uint64_t numel = 0, bytes = counts[i] * dtype_size(in[i].dtype);

        if (skip[i])
            continue;
        it = stage_find(&t->st, in[i].name, in[i].name_len);
        if (it != NULL && item_slice_at(it, in[i].start, counts[i]) != NULL)
            continue;
        if (it == NULL) {
            (void)dtype_numel(in[i].shape, in[i].ndim, in[i].dtype, &numel, NULL);
            it = stage_add(&t->st, &in[i], numel);
        }
        if (t->eager) {
            if (!it->prepared && eager_prepare(m, t, it, err) != 0)
                goto fail;
            (void)item_add_slice(it, in[i].start, counts[i]);
            continue;
        }
        sl = item_add_slice(it, in[i].start, counts[i]);
        sl->owned = 1;
        if ((sl->data = xtry_aligned(bytes ? bytes : 1)) == NULL) {
            char name[EMAD_MAX_NAME_BYTES + 1];
            it->nslices--; /* staged earlier in this loop: empty slices are dropped */
            fail(err, EMAD_ENOMEM, cname(name, sizeof(name), in[i].name, in[i].name_len),
                 "tensor '%s': out of memory staging %llu bytes", name, (unsigned long long)bytes);
            goto fail;
        }
        t->st.bytes += bytes;
    }
    for (size_t i = 0; i < n; i++) {
        item *it;
        slice *sl;
        if (skip[i]) {
            t->st.ignored += in[i].offset == 0;
            continue;
        }
        it = stage_find(&t->st, in[i].name, in[i].name_len);
        sl = item_slice_at(it, in[i].start, counts[i]);
        if (in[i].len > 0 && slice_seen(sl, in[i].offset, in[i].len) > 0)
            continue; /* a resent chunk: already have these bytes */
        if (!t->eager)
            memcpy((char *)sl->data + in[i].offset, in[i].data, in[i].len);
        else if (!it->stale && in[i].len > 0)
            eager_tasks(m, it, (uint32_t)(it - t->st.items),
                        sl->start + in[i].offset / dtype_size(it->dtype),
                        in[i].len / dtype_size(it->dtype), in[i].data, &tl);
        slice_got(sl, in[i].offset, in[i].len);
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
        const item *bad = NULL;
        t->last_used_ms = now_ms;
        for (size_t i = 0; i < job->tasks.n; i++) {
            const task *k = &job->tasks.v[i];
            item *it = &t->st.items[k->tag];
            if (k->found == 0) /* only counts (COUNT, EMA with count) set it */
                continue;
            it->nonfinite += k->found;
            if (bad == NULL)
                bad = it;
        }
        if (bad != NULL && m->cfg.nonfinite == EMAD_NONFINITE_REJECT && t->failed.code == 0) {
            rc =
                fail(&t->failed, EMAD_ENONFINITE, bad->name,
                     "tensor '%s': %llu NaN or Inf value%s; push rejected, nothing applied "
                     "(model option nonfinite = reject)",
                     bad->name, (unsigned long long)bad->nonfinite, bad->nonfinite == 1 ? "" : "s");
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
 * each tensor still the one its chunks were averaged from; then the new
 * shadows replace the old ones (which become spares), all at once.
 */
static int
eager_commit(model *m, txn *x, uint64_t now_ms, store_result *res, store_err *err)
{
    stage *st = &x->st;

    if (x->inflight > 0)
        return fail(err, EMAD_EINCOMPLETE, NULL,
                    "transaction %llu: %u request%s still being applied; commit after their "
                    "replies",
                    (unsigned long long)x->id, x->inflight, x->inflight == 1 ? " is" : "s are");
    if (x->failed.code != 0) {
        *err = x->failed;
        return err->code;
    }
    for (size_t i = 0; i < st->nitems; i++)
        if (check_coverage(&st->items[i], err) != 0)
            return err->code;
    for (size_t i = 0; i < st->nitems; i++) {
        const item *it = &st->items[i];
        const tensor *t = strmap_get(m->index, it->name, it->name_len);
        if (t != NULL && t->step >= x->step)
            continue; /* stale now: nothing to publish */
        if (!it->stale && (it->has_base ? t != NULL && t->shadow[0] == it->base[0] : t == NULL))
            continue;
        return fail(err, EMAD_ECONFLICT, it->name,
                    "tensor '%s' was changed by another push while transaction %llu was open; "
                    "nothing applied",
                    it->name, (unsigned long long)x->id);
    }
    res->ignored += st->ignored;
    for (size_t i = 0; i < st->nitems; i++) {
        item *it = &st->items[i];
        tensor *t = strmap_get(m->index, it->name, it->name_len);

        if (t != NULL && t->step >= x->step) {
            res->stale++;
            if (res->nstale_names < sizeof(res->stale_names) / sizeof(res->stale_names[0]))
                res->stale_names[res->nstale_names++] = t->name;
            continue;
        }
        if (it->nonfinite > 0) {
            res->skipped++; /* nonfinite = skip (reject failed the transaction) */
            continue;
        }
        if (t == NULL) {
            plan p = {.averaged = it->averaged, .nshadow = it->nshadow};
            memcpy(p.target, it->target, sizeof(p.target));
            t = tensor_add(m, it, &p);
            memset(it->target, 0, sizeof(it->target));
        } else {
            for (uint32_t j = 0; j < t->nshadow; j++) {
                blob *old = t->shadow[j];
                t->shadow[j] = it->target[j];
                it->target[j] = NULL;
                blob_release(old, &t->spare[j]);         /* the tensor's reference */
                blob_release(it->base[j], &t->spare[j]); /* ours */
                it->base[j] = NULL;
            }
        }
        t->step = x->step;
        res->applied++;
    }
    if (res->applied > 0) {
        if (x->step > m->step)
            m->step = x->step;
        m->last_push_ms = now_ms;
        m->version++;
    }
    res->step = m->step;
    return 0;
}

void
store_release_spares(store *s)
{
    for (size_t i = 0; i < s->nmodels; i++) {
        model *m = s->models[i];
        for (size_t k = 0; k < m->ntensors; k++) {
            tensor *t = m->tensors[k];
            for (uint32_t j = 0; j < EMAD_MAX_DECAYS; j++) {
                blob_unref(t->spare[j]);
                t->spare[j] = NULL;
            }
        }
    }
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
    if ((m = model_get(s, t->model, t->model_len, err)) == NULL)
        return err->code;
    if (t->eager) {
        rc = eager_commit(m, t, now_ms, res, err);
        if (rc != EMAD_EINCOMPLETE && rc != EMAD_ENOMEM)
            txn_remove(s, t);
        return rc;
    }
    for (size_t i = 0; i < t->st.nitems; i++)
        if ((rc = check_received(&t->st.items[i], err)) != 0)
            return rc; /* the transaction stays open: the missing chunks may still come */
    rc = contribute(m, t->step, t->writer, &t->st, now_ms, res, err);
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

int
store_view_create(store *s, const char *model_name, size_t len, const char *const *names,
                  const size_t *name_lens, size_t n, const view_options *opts, store_view **out,
                  store_err *err)
{
    model *m = model_get(s, model_name, len, err);
    store_view *v;
    size_t count, j = 0;
    int odt = opts != NULL ? opts->dtype : EMAD_DTYPE_INVALID;

    *out = NULL;
    if (m == NULL)
        return err->code;
    if (opts != NULL && opts->has_decay) {
        for (j = 0; j < m->cfg.ndecays && m->cfg.decays[j] != opts->decay; j++)
            ;
        if (j == m->cfg.ndecays) {
            char list[256], want[32], d[32];
            int off = 0;
            for (size_t i = 0; i < m->cfg.ndecays && off < (int)sizeof(list); i++)
                off += snprintf(list + off, sizeof(list) - (size_t)off, "%s%s", i ? ", " : "",
                                emaconf_fmt_double(d, sizeof(d), m->cfg.decays[i]));
            return fail(err, EMAD_ERANGE, NULL, "model '%s' has no decay %s (it has %s)", m->name,
                        emaconf_fmt_double(want, sizeof(want), opts->decay), list);
        }
    }
    if (odt != EMAD_DTYPE_INVALID && odt != VIEW_DTYPE_SHADOW && odt != EMAD_F32 &&
        odt != EMAD_BF16 && odt != EMAD_F16)
        return fail(err, EMAD_EDTYPE, NULL, "a pull may convert to F32, BF16 or F16, not %s",
                    dtype_name(odt) != NULL ? dtype_name(odt) : "that");
    count = names != NULL ? n : m->ntensors;
    if (names != NULL) {
        for (size_t i = 0; i < n; i++) {
            if (strmap_get(m->index, names[i], name_lens[i]) == NULL) {
                char name[EMAD_MAX_NAME_BYTES + 1];
                cname(name, sizeof(name), names[i], name_lens[i]);
                /* Only a valid name goes into error.tensor: the request may hold any bytes. */
                return fail(err, EMAD_ENOTENSOR,
                            proto_check_tensor_name(names[i], name_lens[i]) == 0 ? name : NULL,
                            "model '%s' has no tensor '%s'", m->name, name);
            }
        }
    }
    v = xcalloc(1, sizeof(*v));
    v->model = xstrndup(m->name, len);
    v->step = m->step;
    v->tensors = xcalloc(count, sizeof(*v->tensors));
    v->ntensors = count;
    for (size_t i = 0; i < count; i++) {
        const tensor *t =
            names != NULL ? strmap_get(m->index, names[i], name_lens[i]) : m->tensors[i];
        view_tensor *vt = &v->tensors[i];
        uint32_t k = t->averaged ? (uint32_t)j : 0;

        vt->name = xstrndup(t->name, t->name_len);
        vt->name_len = t->name_len;
        vt->kind = t->kind;
        if (odt == VIEW_DTYPE_SHADOW)
            vt->dtype = t->sdtype;
        else
            vt->dtype = odt != EMAD_DTYPE_INVALID && dtype_is_float(t->dtype) ? odt : t->dtype;
        vt->sdtype = t->sdtype;
        vt->averaged = t->averaged;
        vt->ndim = t->ndim;
        memcpy(vt->shape, t->shape, sizeof(vt->shape));
        vt->numel = t->numel;
        vt->nbytes = t->numel * dtype_size(vt->dtype);
        vt->step = t->step;
        vt->data = t->shadow[k];
        t->shadow[k]->refs++;
    }
    *out = v;
    return 0;
}

int
store_view_register(store *s, store_view *v, uint64_t now_ms, store_err *err)
{
    if (s->nviews >= STORE_MAX_VIEWS)
        return fail(err, EMAD_ELIMIT, NULL, "at most %d open pull sessions", STORE_MAX_VIEWS);
    v->id = s->next_id++;
    v->last_used_ms = now_ms;
    v->next = s->views;
    s->views = v;
    s->nviews++;
    return 0;
}

store_view *
store_view_get(store *s, uint64_t id, uint64_t now_ms)
{
    for (store_view *v = s->views; v != NULL; v = v->next) {
        if (v->id == id) {
            v->last_used_ms = now_ms;
            return v;
        }
    }
    return NULL;
}

int
store_view_release(store *s, uint64_t id, store_err *err)
{
    for (store_view **pp = &s->views; *pp != NULL; pp = &(*pp)->next) {
        store_view *v = *pp;
        if (v->id == id) {
            *pp = v->next;
            s->nviews--;
            store_view_free(v);
            return 0;
        }
    }
    return fail(err, EMAD_ENOSESSION, NULL, "no pull session %llu (unknown, expired or released)",
                (unsigned long long)id);
}

/* Has something last used at `used` been idle for timeout_ms at now_ms? */
static int
idle(uint64_t used, uint64_t now_ms, uint64_t timeout_ms)
{
    return now_ms >= used && now_ms - used >= timeout_ms;
}

void
store_expire(store *s, uint64_t now_ms, uint64_t timeout_ms, uint64_t *txns, uint64_t *views,
             uint64_t *steps)
{
    for (txn **pp = &s->txns; *pp != NULL;) {
        txn *t = *pp;
        if (idle(t->last_used_ms, now_ms, timeout_ms)) {
            *pp = t->next;
            s->ntxns--;
            txn_discard(s, t);
            (*txns)++;
        } else {
            pp = &t->next;
        }
    }
    for (store_view **pp = &s->views; *pp != NULL;) {
        store_view *v = *pp;
        if (idle(v->last_used_ms, now_ms, timeout_ms)) {
            *pp = v->next;
            s->nviews--;
            store_view_free(v);
            (*views)++;
        } else {
            pp = &v->next;
        }
    }
    for (size_t i = 0; i < s->nmodels; i++) {
        model *m = s->models[i];
        for (pending **pp = &m->pending; *pp != NULL;) {
            pending *p = *pp;
            if (idle(p->last_used_ms, now_ms, timeout_ms)) {
                *pp = p->next;
                m->npending--;
                pending_free(p);
                (*steps)++;
            } else {
                pp = &p->next;
            }
        }
    }
}

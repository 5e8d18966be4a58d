/*
 * store.c - models, tensors, shadows, transactions and pull views.
 *
 * Everything runs on the loop thread. The push path is: validate every
 * input against the limits and the stored tensors; reserve every blob the
 * push needs (new tensors, and copy-on-write copies of blobs a pull view
 * still references), so the apply pass cannot fail half-way; then apply
 * each input straight from the request buffer (EMA for params, copy for
 * buffers). Transactions stage their data in their own buffers and go
 * through the same validate/reserve/apply path at commit.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dtype.h"
#include "ema.h"
#include "proto.h"
#include "store.h"
#include "strmap.h"
#include "xmalloc.h"

/* A tensor staged in a transaction. */
typedef struct staged {
    char *name;
    size_t name_len;
    int kind, dtype;
    uint32_t ndim;
    uint64_t shape[EMAD_MAX_NDIM];
    uint64_t nbytes, received;
    void *data;
} staged;

typedef struct txn {
    uint64_t id;
    char *model;
    size_t model_len;
    uint64_t step;
    staged *items;
    size_t nitems, cap;
    strmap *index; /* name -> index + 1 */
    uint64_t last_used_ms;
    struct txn *next;
} txn;

struct store {
    model **models; /* creation order */
    size_t nmodels, cap;
    strmap *index;
    txn *txns;
    size_t ntxns;
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

/* Format a shape as "[2, 3]". */
static const char *
fmt_shape(char *buf, size_t size, const uint64_t *shape, uint32_t ndim)
{
    size_t off = 0;

    off += (size_t)snprintf(buf, size, "[");
    for (uint32_t i = 0; i < ndim && off < size; i++)
        off += (size_t)snprintf(buf + off, size - off, "%s%llu", i ? ", " : "",
                                (unsigned long long)shape[i]);
    if (off < size)
        snprintf(buf + off, size - off, "]");
    return buf;
}

/* A new blob of size bytes with one reference, or NULL. */
static blob *
blob_new(size_t size)
{
    blob *b = malloc(sizeof(*b));

    if (b == NULL)
        return NULL;
    b->data = xtry_aligned(size);
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

/* Free one tensor and its shadow reference. */
static void
tensor_free(tensor *t)
{
    if (t == NULL)
        return;
    blob_unref(t->shadow);
    free(t->name);
    free(t);
}

/* Free a model and its tensors. */
static void
model_free(model *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->ntensors; i++)
        tensor_free(m->tensors[i]);
    free(m->tensors);
    strmap_destroy(m->index);
    free(m->name);
    free(m);
}

/* Free a transaction and its staging buffers. */
static void
txn_free(txn *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->nitems; i++) {
        free(t->items[i].name);
        free(t->items[i].data);
    }
    free(t->items);
    strmap_destroy(t->index);
    free(t->model);
    free(t);
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
        g->tensors += s->models[i]->ntensors;
        g->shadow_bytes += s->models[i]->shadow_bytes;
    }
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

int
store_create_model(store *s, const char *name, size_t len, double decay, int exist_ok, int *created,
                   store_err *err)
{
    char buf[EMAD_MAX_MODEL_NAME_BYTES + 1];
    model *m;

    *created = 0;
    if (proto_check_model_name(name, len) != 0)
        return fail(err, EMAD_ENAME, NULL,
                    "model name must be 1..%d bytes of A-Z a-z 0-9 . _ - and not start with '.'",
                    EMAD_MAX_MODEL_NAME_BYTES);
    if (!(decay >= 0.0 && decay <= 1.0))
        return fail(err, EMAD_ERANGE, NULL, "decay %g is outside [0, 1]", decay);
    cname(buf, sizeof(buf), name, len);
    if ((m = store_model_find(s, name, len)) != NULL) {
        if (m->decay != decay)
            return fail(err, EMAD_EEXIST, NULL, "model '%s' exists with decay %.15g, not %.15g",
                        buf, m->decay, decay);
        if (!exist_ok)
            return fail(err, EMAD_EEXIST, NULL, "model '%s' already exists", buf);
        return 0;
    }
    if (s->nmodels >= STORE_MAX_MODELS)
        return fail(err, EMAD_ELIMIT, NULL, "at most %d models", STORE_MAX_MODELS);
    m = xcalloc(1, sizeof(*m));
    m->name = xstrndup(name, len);
    m->decay = decay;
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
            txn_free(t);
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

/*
 * Check one input on its own and against the stored tensor (if any).
 * whole: data must be the whole tensor (no transaction). *nbytes gets the
 * tensor's full size.
 */
static int
check_input(const model *m, const store_input *in, int whole, uint64_t *nbytes, store_err *err)
{
    char name[EMAD_MAX_NAME_BYTES + 1], a[256], b[256];
    const tensor *t;
    uint64_t numel;

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
    if (dtype_size(in->dtype) == 0)
        return fail(err, EMAD_EDTYPE, name, "tensor '%s': unknown dtype", name);
    if (in->kind == EMAD_PARAM && dtype_shadow(in->dtype) == EMAD_DTYPE_INVALID)
        return fail(err, EMAD_EDTYPE, name,
                    "tensor '%s': a param must be F32, F16, BF16 or F64, not %s (push it as a "
                    "buffer to copy it)",
                    name, dtype_name(in->dtype));
    if (in->ndim > EMAD_MAX_NDIM)
        return fail(err, EMAD_ELIMIT, name, "tensor '%s': more than %d dimensions", name,
                    EMAD_MAX_NDIM);
    if (dtype_numel(in->shape, in->ndim, in->dtype, &numel, nbytes) != 0)
        return fail(err, EMAD_ELIMIT, name, "tensor '%s': shape %s is too large", name,
                    fmt_shape(a, sizeof(a), in->shape, in->ndim));
    if (whole && in->len != *nbytes)
        return fail(err, EMAD_ESIZE, name,
                    "tensor '%s': data has %llu bytes but shape %s of %s needs %llu", name,
                    (unsigned long long)in->len, fmt_shape(a, sizeof(a), in->shape, in->ndim),
                    dtype_name(in->dtype), (unsigned long long)*nbytes);
    if (!whole && (in->offset > *nbytes || in->len > *nbytes - in->offset))
        return fail(err, EMAD_ESIZE, name,
                    "tensor '%s': chunk [%llu, +%llu) runs past the tensor's %llu bytes", name,
                    (unsigned long long)in->offset, (unsigned long long)in->len,
                    (unsigned long long)*nbytes);
    if ((t = strmap_get(m->index, in->name, in->name_len)) == NULL)
        return 0;
    if (t->kind != in->kind)
        return fail(err, EMAD_EKIND, name, "tensor '%s': stored as a %s, pushed as a %s", name,
                    proto_kind_name(t->kind), proto_kind_name(in->kind));
    if (t->dtype != in->dtype)
        return fail(err, EMAD_EKIND, name, "tensor '%s': dtype %s differs from stored %s", name,
                    dtype_name(in->dtype), dtype_name(t->dtype));
    if (t->ndim != in->ndim || memcmp(t->shape, in->shape, t->ndim * sizeof(uint64_t)) != 0)
        return fail(err, EMAD_ESHAPE, name, "tensor '%s': shape %s differs from stored %s", name,
                    fmt_shape(a, sizeof(a), in->shape, in->ndim),
                    fmt_shape(b, sizeof(b), t->shape, t->ndim));
    return 0;
}

/* Find a duplicate name among the inputs; its index or -1. */
static long
find_duplicate(const store_input *in, size_t n)
{
    strmap *seen;
    long dup = -1;

    if (n < 2)
        return -1;
    seen = strmap_create();
    for (size_t i = 0; i < n; i++) {
        if (strmap_get(seen, in[i].name, in[i].name_len) != NULL) {
            dup = (long)i;
            break;
        }
        strmap_put(seen, in[i].name, in[i].name_len, (void *)&in[i]);
    }
    strmap_destroy(seen);
    return dup;
}

/*
 * The per-message tensor limit, checked by store_push() and store_txn_push()
 * only: a transaction may stage more tensors than one message carries, and
 * its commit must still apply them all.
 */
static int
check_message_size(size_t n, store_err *err)
{
    if (n > PROTO_MAX_TENSORS)
        return fail(err, EMAD_ELIMIT, NULL, "push has %zu tensors, at most %d", n,
                    PROTO_MAX_TENSORS);
    return 0;
}

/* Validate a whole push against model m. */
static int
validate(const model *m, const store_input *in, size_t n, int whole, store_err *err)
{
    char name[EMAD_MAX_NAME_BYTES + 1];
    uint64_t nbytes;
    long dup;

    if (n == 0)
        return fail(err, EMAD_EMALFORMED, NULL, "push has no tensors");
    /* PROTO_MAX_TENSORS bounds one message, not a commit: see check_message_size(). */
    for (size_t i = 0; i < n; i++) {
        int rc = check_input(m, &in[i], whole, &nbytes, err);
        if (rc != 0)
            return rc;
    }
    if ((dup = find_duplicate(in, n)) >= 0) {
        cname(name, sizeof(name), in[dup].name, in[dup].name_len);
        return fail(err, EMAD_EDUP, name, "tensor '%s' appears twice in one push", name);
    }
    return 0;
}

/* Per-input plan made before applying: the tensor and the blob to write. */
typedef struct plan {
    tensor *t;    /* existing tensor, or NULL for a new one */
    blob *target; /* blob to write into (new for new tensors and copy-on-write) */
    int stale;
} plan;

/* Release whatever reserve() allocated. */
static void
unreserve(plan *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i].target != NULL && (p[i].t == NULL || p[i].target != p[i].t->shadow))
            blob_unref(p[i].target);
    }
}

/* Plan every input and allocate the blobs it needs; EMAD_ENOMEM undoes all. */
static int
reserve(model *m, const store_input *in, size_t n, uint64_t step, plan *p, store_err *err)
{
    char name[EMAD_MAX_NAME_BYTES + 1];

    memset(p, 0, n * sizeof(*p));
    for (size_t i = 0; i < n; i++) {
        tensor *t = strmap_get(m->index, in[i].name, in[i].name_len);
        uint64_t numel, nbytes;
        int sdtype = in[i].kind == EMAD_PARAM ? dtype_shadow(in[i].dtype) : in[i].dtype;

        p[i].t = t;
        if (t != NULL && t->step >= step) {
            p[i].stale = 1;
            continue;
        }
        if (t != NULL && t->shadow->refs == 1) {
            p[i].target = t->shadow; /* update in place */
            continue;
        }
        (void)dtype_numel(in[i].shape, in[i].ndim, sdtype, &numel, &nbytes);
        if ((p[i].target = blob_new(nbytes)) == NULL) {
            unreserve(p, i);
            return fail(err, EMAD_ENOMEM, cname(name, sizeof(name), in[i].name, in[i].name_len),
                        "tensor '%s': out of memory for %llu bytes of shadow", name,
                        (unsigned long long)nbytes);
        }
    }
    return 0;
}

/* Create a tensor in m for input in, owning blob b. */
static tensor *
tensor_add(model *m, const store_input *in, blob *b)
{
    tensor *t = xcalloc(1, sizeof(*t));

    t->name = xstrndup(in->name, in->name_len);
    t->name_len = in->name_len;
    t->kind = in->kind;
    t->dtype = in->dtype;
    t->sdtype = in->kind == EMAD_PARAM ? dtype_shadow(in->dtype) : in->dtype;
    t->ndim = in->ndim;
    memcpy(t->shape, in->shape, sizeof(t->shape));
    (void)dtype_numel(t->shape, t->ndim, t->dtype, &t->numel, &t->nbytes);
    t->shadow = b;
    if (m->ntensors == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 16;
        m->tensors = xreallocarray(m->tensors, m->cap, sizeof(*m->tensors));
    }
    m->tensors[m->ntensors++] = t;
    strmap_put(m->index, t->name, t->name_len, t);
    m->shadow_bytes += b->size;
    return t;
}

/* Apply validated, reserved inputs; cannot fail. */
static void
apply(model *m, const store_input *in, size_t n, uint64_t step, plan *p, uint64_t now_ms,
      store_result *res)
{
    memset(res, 0, sizeof(*res));
    for (size_t i = 0; i < n; i++) {
        tensor *t = p[i].t;

        if (p[i].stale) {
            res->stale++;
            if (res->nstale_names < sizeof(res->stale_names) / sizeof(res->stale_names[0]))
                res->stale_names[res->nstale_names++] = t->name;
            continue;
        }
        if (t == NULL) {
            t = tensor_add(m, &in[i], p[i].target);
            if (t->kind == EMAD_PARAM)
                (void)ema_init(t->shadow->data, in[i].data, t->dtype, t->numel);
            else
                memcpy(t->shadow->data, in[i].data, t->nbytes);
        } else {
            if (t->kind == EMAD_PARAM)
                (void)ema_update(p[i].target->data, t->shadow->data, in[i].data, t->dtype, t->numel,
                                 m->decay);
            else
                memcpy(p[i].target->data, in[i].data, t->nbytes);
            if (p[i].target != t->shadow) {
                blob_unref(t->shadow); /* a view keeps the old data */
                t->shadow = p[i].target;
            }
        }
        t->step = step;
        res->applied++;
    }
    if (res->applied > 0) {
        if (step > m->step)
            m->step = step;
        m->last_push_ms = now_ms;
    }
    res->step = m->step;
}

/* Validate, reserve and apply whole inputs to m. */
static int
push_model(model *m, uint64_t step, const store_input *in, size_t n, uint64_t now_ms,
           store_result *res, store_err *err)
{
    plan *p;
    int rc;

    if ((rc = validate(m, in, n, 1, err)) != 0)
        return rc;
    p = xcalloc(n, sizeof(*p));
    if ((rc = reserve(m, in, n, step, p, err)) == 0)
        apply(m, in, n, step, p, now_ms, res);
    free(p);
    return rc;
}

int
store_push(store *s, const char *model_name, size_t len, uint64_t step, const store_input *in,
           size_t n, uint64_t now_ms, store_result *res, store_err *err)
{
    model *m = model_get(s, model_name, len, err);

    if (m == NULL || check_message_size(n, err) != 0)
        return err->code;
    return push_model(m, step, in, n, now_ms, res, err);
}

/* Open transaction by id, or NULL with EMAD_ENOTXN. */
static txn *
txn_get(store *s, uint64_t id, store_err *err)
{
    for (txn *t = s->txns; t != NULL; t = t->next)
        if (t->id == id)
            return t;
    fail(err, EMAD_ENOTXN, NULL, "no open transaction %llu (unknown, expired or finished)",
         (unsigned long long)id);
    return NULL;
}

/* Unlink and free a transaction. */
static void
txn_remove(store *s, txn *t)
{
    for (txn **pp = &s->txns; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == t) {
            *pp = t->next;
            s->ntxns--;
            txn_free(t);
            return;
        }
    }
}

int
store_txn_begin(store *s, const char *model_name, size_t len, uint64_t step, uint64_t now_ms,
                uint64_t *id, store_err *err)
{
    txn *t;

    if (model_get(s, model_name, len, err) == NULL)
        return err->code;
    if (s->ntxns >= STORE_MAX_TXNS)
        return fail(err, EMAD_ELIMIT, NULL, "at most %d open transactions", STORE_MAX_TXNS);
    t = xcalloc(1, sizeof(*t));
    t->id = s->next_id++;
    t->model = xstrndup(model_name, len);
    t->model_len = len;
    t->step = step;
    t->index = strmap_create();
    t->last_used_ms = now_ms;
    t->next = s->txns;
    s->txns = t;
    s->ntxns++;
    *id = t->id;
    return 0;
}

/* Check a chunk against the tensor staged so far under the same name. */
static int
check_staged(const staged *st, const store_input *in, store_err *err)
{
    char name[EMAD_MAX_NAME_BYTES + 1], a[256], b[256];

    cname(name, sizeof(name), in->name, in->name_len);
    if (st->kind != in->kind || st->dtype != in->dtype)
        return fail(err, EMAD_EKIND, name, "tensor '%s': kind or dtype differs from earlier chunks",
                    name);
    if (st->ndim != in->ndim || memcmp(st->shape, in->shape, st->ndim * sizeof(uint64_t)) != 0)
        return fail(err, EMAD_ESHAPE, name, "tensor '%s': shape %s differs from earlier chunks %s",
                    name, fmt_shape(a, sizeof(a), in->shape, in->ndim),
                    fmt_shape(b, sizeof(b), st->shape, st->ndim));
    if (in->offset > st->received)
        return fail(err, EMAD_EORDER, name,
                    "tensor '%s': chunk at offset %llu but only %llu bytes received", name,
                    (unsigned long long)in->offset, (unsigned long long)st->received);
    if (in->offset < st->received && in->offset + in->len > st->received)
        return fail(err, EMAD_EORDER, name,
                    "tensor '%s': chunk [%llu, +%llu) overlaps the %llu bytes received", name,
                    (unsigned long long)in->offset, (unsigned long long)in->len,
                    (unsigned long long)st->received);
    return 0;
}

int
store_txn_push(store *s, uint64_t id, const char *model_name, size_t len, int has_step,
               uint64_t step, const store_input *in, size_t n, uint64_t now_ms, uint64_t *staged_n,
               store_err *err)
{
    txn *t = txn_get(s, id, err);
    model *m;
    size_t *slot;

    *staged_n = 0;
    if (t == NULL)
        return err->code;
    if (model_name != NULL && (len != t->model_len || memcmp(model_name, t->model, len) != 0))
        return fail(err, EMAD_EMALFORMED, NULL, "transaction %llu belongs to model '%s'",
                    (unsigned long long)id, t->model);
    if (has_step && step != t->step)
        return fail(err, EMAD_EMALFORMED, NULL, "transaction %llu is for step %llu, not %llu",
                    (unsigned long long)id, (unsigned long long)t->step, (unsigned long long)step);
    if ((m = model_get(s, t->model, t->model_len, err)) == NULL)
        return err->code;
    if (check_message_size(n, err) != 0 || validate(m, in, n, 0, err) != 0)
        return err->code;
    /* Check every chunk against its staged tensor before touching any. */
    slot = xcalloc(n, sizeof(*slot));
    for (size_t i = 0; i < n; i++) {
        slot[i] = (size_t)(uintptr_t)strmap_get(t->index, in[i].name, in[i].name_len);
        if (slot[i] != 0 && check_staged(&t->items[slot[i] - 1], &in[i], err) != 0)
            goto fail;
        if (slot[i] == 0 && in[i].offset != 0) {
            char name[EMAD_MAX_NAME_BYTES + 1];
            cname(name, sizeof(name), in[i].name, in[i].name_len);
            fail(err, EMAD_EORDER, name, "tensor '%s': first chunk must be at offset 0", name);
            goto fail;
        }
    }
    /* Allocate staging for new tensors. */
    for (size_t i = 0; i < n; i++) {
        staged *st;
        uint64_t numel, nbytes;

        if (slot[i] != 0)
            continue;
        (void)dtype_numel(in[i].shape, in[i].ndim, in[i].dtype, &numel, &nbytes);
        if (t->nitems == t->cap) {
            t->cap = t->cap ? t->cap * 2 : 16;
            t->items = xreallocarray(t->items, t->cap, sizeof(*t->items));
        }
        st = &t->items[t->nitems];
        memset(st, 0, sizeof(*st));
        if ((st->data = xtry_aligned(nbytes)) == NULL) {
            char name[EMAD_MAX_NAME_BYTES + 1];
            cname(name, sizeof(name), in[i].name, in[i].name_len);
            fail(err, EMAD_ENOMEM, name, "tensor '%s': out of memory staging %llu bytes", name,
                 (unsigned long long)nbytes);
            goto fail; /* tensors staged earlier in this loop stay, empty: harmless */
        }
        st->name = xstrndup(in[i].name, in[i].name_len);
        st->name_len = in[i].name_len;
        st->kind = in[i].kind;
        st->dtype = in[i].dtype;
        st->ndim = in[i].ndim;
        memcpy(st->shape, in[i].shape, sizeof(st->shape));
        st->nbytes = nbytes;
        strmap_put(t->index, st->name, st->name_len, (void *)(uintptr_t)(t->nitems + 1));
        slot[i] = ++t->nitems;
    }
    for (size_t i = 0; i < n; i++) {
        staged *st = &t->items[slot[i] - 1];
        if (in[i].offset + in[i].len <= st->received)
            continue; /* a resent chunk: already have these bytes */
        memcpy((char *)st->data + in[i].offset, in[i].data, in[i].len);
        st->received += in[i].len;
        (*staged_n)++;
    }
    free(slot);
    t->last_used_ms = now_ms;
    return 0;
fail:
    free(slot);
    return err->code;
}

int
store_txn_commit(store *s, uint64_t id, uint64_t now_ms, store_result *res, store_err *err)
{
    txn *t = txn_get(s, id, err);
    store_input *in;
    model *m;
    int rc;

    if (t == NULL)
        return err->code;
    t->last_used_ms = now_ms;
    if ((m = model_get(s, t->model, t->model_len, err)) == NULL)
        return err->code;
    for (size_t i = 0; i < t->nitems; i++) {
        if (t->items[i].received != t->items[i].nbytes)
            return fail(err, EMAD_EINCOMPLETE, t->items[i].name,
                        "tensor '%s': %llu of %llu bytes received", t->items[i].name,
                        (unsigned long long)t->items[i].received,
                        (unsigned long long)t->items[i].nbytes);
    }
    if (t->nitems == 0) {
        memset(res, 0, sizeof(*res));
        res->step = m->step;
        txn_remove(s, t);
        return 0;
    }
    in = xcalloc(t->nitems, sizeof(*in));
    for (size_t i = 0; i < t->nitems; i++) {
        const staged *st = &t->items[i];
        in[i] = (store_input){.name = st->name,
                              .name_len = st->name_len,
                              .kind = st->kind,
                              .dtype = st->dtype,
                              .ndim = st->ndim,
                              .data = st->data,
                              .len = st->nbytes};
        memcpy(in[i].shape, st->shape, sizeof(in[i].shape));
    }
    rc = push_model(m, t->step, in, t->nitems, now_ms, res, err);
    free(in);
    /* Stale names point into the model's tensors, not the transaction: safe to free. */
    if (rc != EMAD_ENOMEM)
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
                  const size_t *name_lens, size_t n, store_view **out, store_err *err)
{
    model *m = model_get(s, model_name, len, err);
    store_view *v;
    size_t count;

    *out = NULL;
    if (m == NULL)
        return err->code;
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

        vt->name = xstrndup(t->name, t->name_len);
        vt->name_len = t->name_len;
        vt->kind = t->kind;
        vt->dtype = t->dtype;
        vt->sdtype = t->sdtype;
        vt->ndim = t->ndim;
        memcpy(vt->shape, t->shape, sizeof(vt->shape));
        vt->numel = t->numel;
        vt->nbytes = t->nbytes;
        vt->step = t->step;
        vt->data = t->shadow;
        t->shadow->refs++;
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

void
store_expire(store *s, uint64_t now_ms, uint64_t timeout_ms, uint64_t *txns, uint64_t *views)
{
    for (txn **pp = &s->txns; *pp != NULL;) {
        txn *t = *pp;
        if (now_ms - t->last_used_ms >= timeout_ms && now_ms >= t->last_used_ms) {
            *pp = t->next;
            s->ntxns--;
            txn_free(t);
            (*txns)++;
        } else {
            pp = &t->next;
        }
    }
    for (store_view **pp = &s->views; *pp != NULL;) {
        store_view *v = *pp;
        if (now_ms - v->last_used_ms >= timeout_ms && now_ms >= v->last_used_ms) {
            *pp = v->next;
            s->nviews--;
            store_view_free(v);
            (*views)++;
        } else {
            pp = &v->next;
        }
    }
}

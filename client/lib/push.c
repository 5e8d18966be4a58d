/*
 * push.c - pushes of libemad: emad_push, emad_push_as and emad_seed. The
 * arguments are checked before anything is sent. A push that fits one
 * message (the client's chunk size, at most the daemon's limit) is one
 * request; a larger push becomes a transaction (begin, messages of whole
 * tensors and chunks, commit) whose messages are pipelined over the
 * client's connections, and is aborted if anything fails. Each message is
 * sized by computation (src/common/codec.c sizes the tensor maps) and
 * packed once, the tensor data copied from the caller's buffers straight
 * into the message.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "common/dtype.h"
#include "common/names.h"

/* Do not start a chunk smaller than this in a message that holds other tensors. */
#define MIN_CHUNK_BYTES (64u << 10)

/* Abort of a failed transaction: best effort, with a short timeout. */
#define ABORT_TIMEOUT_MS 2000

/* One piece of a push message: bytes [offset, offset + len) of tensor index. */
typedef struct push_item {
    size_t index;
    uint64_t offset, len;
} push_item;

/* A push message: either a whole push or one message of a transaction. */
typedef struct push_req {
    const char *model;
    uint64_t step;
    int has_writer; /* single-message pushes of emad_push_as() */
    uint32_t writer;
    int seed;             /* emad_seed() */
    const int *as_dtypes; /* emad_seed(): per tensor, or NULL */
    int has_txn;
    uint64_t txn;
    const emad_tensor *tensors;
    const push_item *items;
    size_t nitems;
    uint64_t size;       /* the packed size when already computed, else 0 */
    int keep_layout;     /* ask the daemon to keep the tensors' layout */
    push_layout *layout; /* send the data alone, with this kept layout's id */
} push_req;

/* The tensor map of bytes [offset, offset + len) of t, with an offset entry if txn. */
static void
tensor_map(const emad_tensor *t, uint64_t offset, uint64_t len, int txn, int as_dtype,
           codec_tensor *m)
{
    m->name = t->name;
    m->name_len = strlen(t->name);
    m->kind = t->kind;
    m->dtype = t->dtype;
    m->ndim = t->ndim;
    memcpy(m->shape, t->shape, t->ndim * sizeof(m->shape[0]));
    m->data = (const char *)t->data + offset;
    m->len = len;
    m->start = t->offset;
    m->count = t->count;
    m->offset = offset;
    m->has_offset = txn;
    m->as_dtype = as_dtype;
}

/* The tensor map of push item it of q. */
static void
push_item_map(const push_req *q, const push_item *it, codec_tensor *m)
{
    int as = q->as_dtypes != NULL ? q->as_dtypes[it->index] : EMAD_DTYPE_INVALID;

    tensor_map(&q->tensors[it->index], it->offset, it->len, q->has_txn, as, m);
}

/* Pack a push request: tensor maps with their data copied from the caller's buffers. */
void
build_push(msgpack_packer *pk, const void *vctx)
{
    const push_req *q = vctx;

    pk_head(pk, PROTO_OP_PUSH,
            3 + q->has_txn + q->has_writer + q->seed + q->keep_layout + (q->layout != NULL));
    if (q->seed) {
        proto_pack_str(pk, PROTO_KEY_SEED);
        msgpack_pack_true(pk);
    }
    pk_kv_str(pk, PROTO_KEY_MODEL, q->model);
    proto_pack_kv_u64(pk, PROTO_KEY_STEP, q->step);
    if (q->has_txn)
        proto_pack_kv_u64(pk, PROTO_KEY_TXN, q->txn);
    if (q->has_writer)
        proto_pack_kv_u64(pk, PROTO_KEY_WRITER, q->writer);
    if (q->layout != NULL) { /* every tensor whole, in the layout's order */
        proto_pack_kv_u64(pk, PROTO_KEY_LAYOUT, layout_id(q->layout));
        proto_pack_str(pk, PROTO_KEY_DATA);
        msgpack_pack_bin(pk, layout_bytes(q->layout));
        for (size_t i = 0; i < q->nitems; i++)
            if (q->tensors[i].nbytes > 0)
                (void)pk->callback(pk->data, q->tensors[i].data, q->tensors[i].nbytes);
        return;
    }
    if (q->keep_layout) {
        proto_pack_str(pk, PROTO_KEY_LAYOUT);
        msgpack_pack_true(pk);
    }
    proto_pack_str(pk, PROTO_KEY_TENSORS);
    msgpack_pack_array(pk, q->nitems);
    for (size_t i = 0; i < q->nitems; i++) {
        codec_tensor m;

        push_item_map(q, &q->items[i], &m);
        codec_tensor_pack(pk, &m);
    }
}

/*
 * Encoded size of the push header (everything but the tensor maps) for
 * nitems tensors; of a whole push of data alone with q->layout.
 */
static uint64_t
push_header_size(const push_req *q, uint64_t nitems)
{
    uint64_t n = 1 + CODEC_SIZE_KEY(PROTO_KEY_V) + 1 + CODEC_SIZE_KEY(PROTO_KEY_OP) +
                 codec_size_str(strlen(proto_op_name(PROTO_OP_PUSH))) +
                 CODEC_SIZE_KEY(PROTO_KEY_MODEL) + codec_size_str(strlen(q->model)) +
                 CODEC_SIZE_KEY(PROTO_KEY_STEP) + codec_size_uint(q->step);

    if (q->has_txn)
        n += CODEC_SIZE_KEY(PROTO_KEY_TXN) + codec_size_uint(q->txn);
    if (q->has_writer)
        n += CODEC_SIZE_KEY(PROTO_KEY_WRITER) + codec_size_uint(q->writer);
    if (q->seed)
        n += CODEC_SIZE_KEY(PROTO_KEY_SEED) + 1;
    if (q->layout != NULL)
        return n + CODEC_SIZE_KEY(PROTO_KEY_LAYOUT) + codec_size_uint(layout_id(q->layout)) +
               CODEC_SIZE_KEY(PROTO_KEY_DATA) + codec_size_bin(layout_bytes(q->layout));
    if (q->keep_layout)
        n += CODEC_SIZE_KEY(PROTO_KEY_LAYOUT) + 1;
    return n + CODEC_SIZE_KEY(PROTO_KEY_TENSORS) + codec_size_container(nitems);
}

/* Encoded size of the tensor map of len bytes of t (at offset, in a transaction), without as_dtype.
 */
static uint64_t
tensor_entry_size(const emad_tensor *t, uint64_t len, int txn, uint64_t offset)
{
    codec_tensor m;

    tensor_map(t, offset, len, txn, EMAD_DTYPE_INVALID, &m);
    return codec_tensor_size(&m);
}

/* Encoded size of build_push(q), item by item as build_push() packs it. */
size_t
push_packed_size(const void *vctx)
{
    const push_req *q = vctx;
    uint64_t n;

    if (q->size != 0)
        return (size_t)q->size;
    n = push_header_size(q, q->nitems);
    if (q->layout != NULL)
        return (size_t)n;
    for (size_t i = 0; i < q->nitems; i++) {
        codec_tensor m;

        push_item_map(q, &q->items[i], &m);
        n += codec_tensor_size(&m);
    }
    return (size_t)n;
}

/* Order tensors by name, then slice start, for qsort. */
static int
cmp_tensors(const void *a, const void *b)
{
    const emad_tensor *x = *(const emad_tensor *const *)a, *y = *(const emad_tensor *const *)b;
    int d = strcmp(x->name, y->name);

    if (d != 0)
        return d;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/*
 * Does any name appear more than once among the n tensors? An open-addressing
 * set of tensor indices keyed by the names' FNV-1a hash: one pass, where
 * sorting the names costs some n log n string comparisons. Returns 1, 0,
 * or EMAD_ENOMEM.
 */
static int
names_repeat(const emad_tensor *tensors, size_t n)
{
    size_t cap = 16, *slots;
    int found = 0;

    while (cap < 2 * n)
        cap *= 2;
    if ((slots = malloc(cap * sizeof(*slots))) == NULL)
        return EMAD_ENOMEM;
    memset(slots, 0xff, cap * sizeof(*slots)); /* SIZE_MAX: empty */
    for (size_t i = 0; i < n && !found; i++) {
        uint64_t h = 1469598103934665603ULL;
        size_t k;

        for (const unsigned char *p = (const unsigned char *)tensors[i].name; *p != '\0'; p++)
            h = (h ^ *p) * 1099511628211ULL;
        for (k = (size_t)(h ^ (h >> 32)) & (cap - 1); slots[k] != SIZE_MAX; k = (k + 1) & (cap - 1))
            if (strcmp(tensors[slots[k]].name, tensors[i].name) == 0)
                found = 1;
        slots[k] = i;
    }
    free(slots);
    return found;
}

/* Validate push arguments before anything is sent. */
static int
push_validate(emad_client *c, const char *model, const emad_tensor *tensors, size_t n,
              int allow_empty)
{
    const emad_tensor **sorted;
    int rc;

    if ((rc = check_model(c, model)) != 0)
        return rc;
    if (n == 0 && allow_empty)
        return 0;
    if (tensors == NULL || n == 0)
        return fail(c, EMAD_EINVAL, "push of no tensors");
    for (size_t i = 0; i < n; i++) {
        const emad_tensor *t = &tensors[i];
        uint64_t numel, nbytes;

        if ((rc = check_tensor_name(c, t->name, i)) != 0)
            return rc;
        if (names_kind_name(t->kind) == NULL)
            return fail(c, EMAD_EINVAL, "tensor '%.200s': kind %d is not EMAD_PARAM or EMAD_BUFFER",
                        t->name, t->kind);
        if (dtype_size(t->dtype) == 0)
            return fail(c, EMAD_EDTYPE, "tensor '%.200s': invalid dtype %d", t->name, t->dtype);
        if (t->kind == EMAD_PARAM && !dtype_is_float(t->dtype))
            return fail(c, EMAD_EDTYPE,
                        "tensor '%.200s': a param must be F32, F16, BF16 or F64, not %s", t->name,
                        dtype_name(t->dtype));
        if (t->ndim > EMAD_MAX_NDIM)
            return fail(c, EMAD_ELIMIT, "tensor '%.200s': %u dimensions, at most %d", t->name,
                        t->ndim, EMAD_MAX_NDIM);
        if (dtype_numel(t->shape, t->ndim, t->dtype, &numel, &nbytes) != 0)
            return fail(c, EMAD_ELIMIT, "tensor '%.200s': shape too large", t->name);
        if (t->count > 0) {
            if (t->offset > numel || t->count > numel - t->offset)
                return fail(c, EMAD_ERANGE,
                            "tensor '%.200s': slice [%llu, +%llu) is outside its %llu elements",
                            t->name, (unsigned long long)t->offset, (unsigned long long)t->count,
                            (unsigned long long)numel);
            numel = t->count;
            nbytes = t->count * dtype_size(t->dtype);
        } else if (t->offset != 0) {
            return fail(c, EMAD_EINVAL, "tensor '%.200s': offset %llu without a count", t->name,
                        (unsigned long long)t->offset);
        }
        if (nbytes != t->nbytes)
            return fail(
                c, EMAD_ESIZE,
                "tensor '%.200s': nbytes %llu differs from %llu elements of %s (%llu bytes)",
                t->name, (unsigned long long)t->nbytes, (unsigned long long)numel,
                dtype_name(t->dtype), (unsigned long long)nbytes);
        if (t->data == NULL && nbytes > 0)
            return fail(c, EMAD_EINVAL, "tensor '%.200s': data is NULL", t->name);
        if (nbytes > SIZE_MAX / 2)
            return fail(c, EMAD_ELIMIT, "tensor '%.200s': too large", t->name);
    }
    /* Names usually differ: the sort that tells a slice from a duplicate only when not. */
    if ((rc = names_repeat(tensors, n)) <= 0) {
        if (rc == EMAD_ENOMEM)
            return fail(c, EMAD_ENOMEM, "out of memory checking %zu tensor names", n);
        return 0;
    }
    if ((sorted = malloc(n * sizeof(*sorted))) == NULL)
        return fail(c, EMAD_ENOMEM, "out of memory checking %zu tensor names", n);
    rc = 0;
    for (size_t i = 0; i < n; i++)
        sorted[i] = &tensors[i];
    qsort(sorted, n, sizeof(*sorted), cmp_tensors);
    /* The same name twice: only as disjoint slices. */
    for (size_t i = 1; i < n; i++) {
        const emad_tensor *a = sorted[i - 1], *b = sorted[i];
        if (strcmp(a->name, b->name) != 0)
            continue;
        if (a->count == 0 || b->count == 0) {
            rc = fail(c, EMAD_EDUP, "tensor '%.200s': appears twice in the push", b->name);
            break;
        }
        if (b->offset < a->offset + a->count) {
            rc = fail(c, EMAD_EOVERLAP, "tensor '%.200s': slices at %llu and %llu overlap", b->name,
                      (unsigned long long)a->offset, (unsigned long long)b->offset);
            break;
        }
    }
    free(sorted);
    return rc;
}

/* Fill a push result from a push or commit reply. */
int
push_result(emad_client *c, const reply *r, emad_push_result *res)
{
    int rc;

    const msgpack_object *o;

    if ((rc = rget_u64(c, r->root, PROTO_KEY_APPLIED, &res->applied)) != 0 ||
        (rc = rget_u64(c, r->root, PROTO_KEY_STALE, &res->stale)) != 0 ||
        (rc = rget_u64(c, r->root, PROTO_KEY_SKIPPED, &res->skipped)) != 0 ||
        (rc = rget_u64(c, r->root, PROTO_KEY_IGNORED, &res->ignored)) != 0 ||
        (rc = rget_u64(c, r->root, PROTO_KEY_STEP, &res->step)) != 0)
        return rc;
    if ((o = proto_map_get(r->root, PROTO_KEY_PENDING)) == NULL ||
        o->type != MSGPACK_OBJECT_BOOLEAN)
        return fail(c, EMAD_EPROTO, "reply key 'pending' is missing or not a boolean");
    res->pending = o->via.boolean;
    return 0;
}

/*
 * Plan the next message of a transaction starting at tensor *ti, byte *toff:
 * whole tensors while they fit in the push limit, then a chunk of the next
 * one. Fills q->items / q->nitems and advances the cursor.
 */
static int
push_plan(emad_client *c, push_req *q, push_item *items, size_t *ti, uint64_t *toff, size_t n)
{
    const emad_tensor *ts = q->tensors;
    uint64_t limit = c->push_limit < TXN_CHUNK_BYTES ? c->push_limit : TXN_CHUNK_BYTES;
    uint64_t size = push_header_size(q, PROTO_MAX_TENSORS);
    size_t k = 0;

    while (*ti < n && k < PROTO_MAX_TENSORS) {
        const emad_tensor *t = &ts[*ti];
        uint64_t rem = t->nbytes - *toff;
        uint64_t full = tensor_entry_size(t, rem, 1, *toff);
        uint64_t ovh, room, isz = dtype_size(t->dtype);
        codec_tensor m;

        if (size + full <= limit) {
            items[k++] = (push_item){*ti, *toff, rem};
            size += full;
            (*ti)++;
            *toff = 0;
            continue;
        }
        /* Worst-case overhead of a chunk: its map without the data bytes. */
        tensor_map(t, *toff, rem, 1, EMAD_DTYPE_INVALID, &m);
        ovh = codec_tensor_chunk_overhead(&m);
        room = size + ovh < limit ? limit - size - ovh : 0;
        room -= room % isz;
        if (room > rem)
            room = rem;
        if (room == 0 || (k > 0 && room < MIN_CHUNK_BYTES && room < rem))
            break;
        items[k++] = (push_item){*ti, *toff, room};
        *toff += room;
        if (*toff == t->nbytes) {
            (*ti)++;
            *toff = 0;
        }
        break; /* the message is full */
    }
    if (k == 0)
        return fail(c, EMAD_EINTERNAL, "push: cannot fit tensor '%.200s' in a %llu-byte message",
                    ts[*ti].name, (unsigned long long)limit);
    q->items = items;
    q->nitems = k;
    return 0;
}

/* Best-effort abort of transaction txn (errors ignored; the daemon also expires it). */
static void
push_abort(emad_client *c, uint64_t txn)
{
    simple_req q = {.op = PROTO_OP_ABORT, .key = PROTO_KEY_TXN, .value = txn};
    char saved[sizeof(c->err)];
    int timeout = c->opts.timeout_ms < ABORT_TIMEOUT_MS ? c->opts.timeout_ms : ABORT_TIMEOUT_MS;
    reply r;

    memcpy(saved, c->err, sizeof(saved));
    if (call(c, PROTO_OP_ABORT, build_simple, &q, timeout, &r) == 0)
        reply_free(&r);
    memcpy(c->err, saved, sizeof(saved));
}

/* Push as a transaction: begin, messages of whole tensors and chunks, commit. */
static int
push_txn(emad_client *c, const char *model, uint64_t step, const push_req *single,
         const emad_tensor *tensors, size_t n, emad_push_result *res)
{
    simple_req bq = {.op = PROTO_OP_BEGIN, .model = model, .key = PROTO_KEY_STEP, .value = step};
    simple_req cq = {.op = PROTO_OP_COMMIT, .key = PROTO_KEY_TXN};
    push_req q = {.model = model, .step = step, .has_txn = 1, .tensors = tensors};
    size_t ti = 0, cap = n < PROTO_MAX_TENSORS ? n : PROTO_MAX_TENSORS;
    uint64_t toff = 0, txn = 0, nsent = 0, ndone = 0;
    int planned = 0; /* q holds the next message */
    uint32_t id;
    push_item *items;
    reply r;
    int rc;

    if (single->has_writer) {
        bq.key2 = PROTO_KEY_WRITER;
        bq.value2 = single->writer;
    }
    if ((items = malloc(cap * sizeof(*items))) == NULL)
        return fail(c, EMAD_ENOMEM, "push: out of memory planning %zu tensors", n);
    if ((rc = call_simple(c, &bq, &r)) != 0)
        goto out;
    res->messages++;
    rc = rget_u64(c, r.root, PROTO_KEY_TXN, &txn);
    reply_free(&r);
    if (rc != 0)
        goto out;
    q.txn = cq.value = txn;
    /* Chunks are pipelined: message j goes on connection j % c->depth, whose previous
     * reply is checked first. With authentication each message's pieces are tagged as it is
     * packed, in the same pass over memory as the copy (bench/RESULTS.md, "bench_auth"). */
    while (ti < n || planned || nsent > ndone) {
        size_t k = nsent % c->depth;
        uint64_t staged;

        if (!planned && ti < n) {
            if ((rc = push_plan(c, &q, items, &ti, &toff, n)) != 0)
                goto fail_abort;
            planned = 1;
            continue;
        }
        if (planned && nsent - ndone < c->depth) {
            if ((rc = req_send(c, k, PROTO_OP_PUSH, build_push, &q, now_ms() + c->opts.timeout_ms,
                               c->opts.timeout_ms, &id)) != 0)
                goto fail_abort;
            planned = 0;
            nsent++;
            continue;
        }
        if ((rc = req_wait(c, ndone % c->depth, PROTO_OP_PUSH, now_ms() + c->opts.timeout_ms,
                           c->opts.timeout_ms, &r)) != 0)
            goto fail_abort;
        ndone++;
        res->messages++;
        rc = rget_u64(c, r.root, PROTO_KEY_STAGED, &staged);
        reply_free(&r);
        if (rc != 0)
            goto fail_abort;
    }
    if ((rc = call_simple(c, &cq, &r)) != 0)
        goto fail_abort;
    res->messages++;
    rc = push_result(c, &r, res);
    reply_free(&r);
    goto out;
fail_abort:
    forget_inflight(c);
    push_abort(c, txn);
out:
    free(items);
    return rc;
}

/* Validate, then push as one message or as a transaction; *res (may be NULL) gets the outcome. */
static int
push(emad_client *c, const char *model, uint64_t step, int has_writer, uint32_t writer,
     const emad_tensor *tensors, size_t n, emad_push_result *res)
{
    emad_push_result local;
    push_layout *l;
    push_req q = {.model = model,
                  .step = step,
                  .has_writer = has_writer,
                  .writer = writer,
                  .tensors = tensors};
    push_item *items = NULL;
    uint64_t size;
    reply r;
    int rc;

    if (res == NULL)
        res = &local;
    memset(res, 0, sizeof(*res));
    l = n > 0 && layouts_on(c) ? layout_match(c, model, tensors, n) : NULL;
    if (l != NULL && layout_id(l) != 0) {
        q.layout = l;
        q.nitems = n;
        if (push_header_size(&q, n) <= c->push_limit) {
            if ((rc = call(c, PROTO_OP_PUSH, build_push, &q, c->opts.timeout_ms, &r)) == 0) {
                res->messages = 1;
                rc = push_result(c, &r, res);
                reply_free(&r);
                return rc;
            }
            /* Another error is the push's own (a NaN, a stale step, a timeout): the layout
             * stays. A daemon that does not know layouts would refuse the push as malformed. */
            if (rc != EMAD_ELAYOUT && rc != EMAD_EMALFORMED)
                return rc;
            c->err[0] = '\0'; /* the daemon gave the layout up: send the tensors, kept again */
        }
        layout_set_id(l, 0);
    }
    q.layout = NULL;
    /* A cluster sends every shard every step, with or without tensors for it. */
    if ((rc = push_validate(c, model, tensors, n, has_writer || c->routed)) != 0)
        return rc;
    q.keep_layout = l != NULL; /* the same tensors a second time: a trainer's steady push */
    size = push_header_size(&q, n);
    for (size_t i = 0; i < n && size <= c->push_limit; i++)
        size += tensor_entry_size(&tensors[i], tensors[i].nbytes, 0, 0);
    if (n > PROTO_MAX_TENSORS || size > c->push_limit) {
        q.keep_layout = 0;
        return push_txn(c, model, step, &q, tensors, n, res);
    }
    if ((items = malloc((n ? n : 1) * sizeof(*items))) == NULL)
        return fail(c, EMAD_ENOMEM, "push: out of memory for %zu tensors", n);
    for (size_t i = 0; i < n; i++)
        items[i] = (push_item){i, 0, tensors[i].nbytes};
    q.items = items;
    q.nitems = n;
    q.size = size; /* every tensor whole, as sized above */
    rc = call(c, PROTO_OP_PUSH, build_push, &q, c->opts.timeout_ms, &r);
    free(items);
    if (rc == 0) {
        const msgpack_object *o = proto_map_get(r.root, PROTO_KEY_LAYOUT);

        res->messages = 1;
        rc = push_result(c, &r, res);
        if (rc == 0 && l == NULL && n > 0 && layouts_on(c))
            layout_remember(c, model, tensors, n);
        else if (rc == 0 && l != NULL && o != NULL && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            layout_set_id(l, o->via.u64);
        reply_free(&r);
    }
    return rc;
}

/* Push tensors of one step (one message, or a transaction when large). */
EMAD_EXTERN int
emad_push(emad_client *c, const char *model, uint64_t step, const emad_tensor *tensors, size_t n,
          emad_push_result *res)
{
    if (c == NULL)
        return EMAD_EINVAL;
    call_begin(c);
    if (c->cl != NULL)
        return call_end(c, cluster_push(c, model, step, 0, 0, 0, tensors, NULL, n, res));
    return call_end(c, push(c, model, step, 0, 0, tensors, n, res));
}

/* Seed shadows with whole tensors, in as many single messages as they need. */
EMAD_EXTERN int
emad_seed(emad_client *c, const char *model, uint64_t step, const emad_tensor *tensors,
          const int *as_dtypes, size_t n, emad_push_result *res)
{
    emad_push_result local;
    push_req q = {
        .model = model, .step = step, .seed = 1, .as_dtypes = as_dtypes, .tensors = tensors};
    push_item *items;
    size_t i = 0;
    reply r;
    int rc;

    if (c == NULL)
        return EMAD_EINVAL;
    call_begin(c);
    if (c->cl != NULL)
        return call_end(c, cluster_push(c, model, step, 0, 0, 1, tensors, as_dtypes, n, res));
    if (res == NULL)
        res = &local;
    memset(res, 0, sizeof(*res));
    if ((rc = push_validate(c, model, tensors, n, c->routed)) != 0)
        return call_end(c, rc);
    for (size_t k = 0; k < n; k++) {
        if (tensors[k].count != 0)
            return call_end(c, fail(c, EMAD_EINVAL, "tensor '%.200s': a seed takes whole tensors",
                                    tensors[k].name));
        if (as_dtypes != NULL && as_dtypes[k] != EMAD_DTYPE_INVALID &&
            emad_dtype_size(as_dtypes[k]) == 0)
            return call_end(c, fail(c, EMAD_EDTYPE, "tensor '%.200s': invalid as_dtype %d",
                                    tensors[k].name, as_dtypes[k]));
    }
    if ((items = malloc(n * sizeof(*items))) == NULL)
        return call_end(c, fail(c, EMAD_ENOMEM, "seed: out of memory"));
    while (i < n && rc == 0) {
        uint64_t size = push_header_size(&q, PROTO_MAX_TENSORS) + 16;
        size_t k = 0;
        emad_push_result part;

        while (i < n && k < PROTO_MAX_TENSORS) {
            uint64_t e = tensor_entry_size(&tensors[i], tensors[i].nbytes, 0, 0) + 16;
            if (size + e > c->push_limit)
                break;
            items[k++] = (push_item){i, 0, tensors[i].nbytes};
            size += e;
            i++;
        }
        if (k == 0) {
            rc = fail(c, EMAD_ELIMIT,
                      "tensor '%.200s' (%llu bytes) does not fit in one %llu-byte message: a "
                      "seed cannot split it",
                      tensors[i].name, (unsigned long long)tensors[i].nbytes,
                      (unsigned long long)c->push_limit);
            break;
        }
        q.items = items;
        q.nitems = k;
        if ((rc = call(c, PROTO_OP_PUSH, build_push, &q, c->opts.timeout_ms, &r)) == 0) {
            rc = push_result(c, &r, &part);
            reply_free(&r);
            res->applied += part.applied;
            res->ignored += part.ignored;
            res->step = part.step;
            res->messages++;
        }
    }
    free(items);
    return call_end(c, rc);
}

/* Push as writer `writer` of a model with several writers. */
EMAD_EXTERN int
emad_push_as(emad_client *c, const char *model, uint64_t step, uint32_t writer,
             const emad_tensor *tensors, size_t n, emad_push_result *res)
{
    if (c == NULL)
        return EMAD_EINVAL;
    call_begin(c);
    if (c->cl != NULL)
        return call_end(c, cluster_push(c, model, step, 1, writer, 0, tensors, NULL, n, res));
    return call_end(c, push(c, model, step, 1, writer, tensors, n, res));
}

/*
 * store_int.h - the store's private types and the functions its files
 * share; included only by files in src/store/.
 *
 * A push becomes a stage: its tensors (items), each a list of flat element
 * slices (one slice for a whole tensor). A single push's stage borrows the
 * request buffer; transactions and pending multi-writer steps own their
 * slices. Every push, multi-writer step, commit and seed reaches a model's
 * shadows through one engine, apply_step() (apply.c): reserve every blob,
 * write the values, publish.
 *
 * Files: store.c (registry of models, their lifecycle, expiry), blob.c
 * (shadow blobs, copy-on-write, spares), stage.c (stages and their
 * checks), apply.c (the apply engine, push, seed, restore), pending.c
 * (multi-writer steps), txn.c (transactions and their jobs), view.c (pull
 * views and sessions).
 */
#ifndef EMAD_STORE_INT_H
#define EMAD_STORE_INT_H

#include <stddef.h>
#include <stdint.h>

#include "base/strmap.h"
#include "store/store.h"

/* A flat element range of a tensor and its bytes. */
typedef struct slice {
    uint64_t start, count;
    uint64_t received;  /* bytes received so far (transactions); count * itemsize when full */
    uint64_t (*got)[2]; /* transactions: byte ranges received, sorted, disjoint, not adjacent */
    size_t ngot, capgot;
    void *data;
    int owned;       /* data is ours to free */
    uint32_t writer; /* pending steps: the writer whose part it is */
} slice;

/* One tensor of a stage: its description and its slices. */
typedef struct item {
    char *name;
    size_t name_len;
    int kind, dtype;
    int data_dtype; /* seeds: dtype of the slices' data (the tensor's or its shadow's) */
    uint32_t ndim;
    uint64_t shape[EMAD_MAX_NDIM];
    uint64_t numel;
    slice *slices;
    size_t nslices, cap;
    int slab;           /* slices is the stage's slab entry (stage_inputs()): not freed here */
    int unsorted;       /* slices are not in order of first element (stage_item_sort()) */
    uint64_t nonfinite; /* NaN/Inf values found by apply_check_nonfinite() or chunk jobs */
    /* Transactions applied as their chunks arrive (see eager_prepare()): */
    int prepared;                  /* the fields below are set */
    int stale;                     /* stored tensor already at or past the step */
    int has_base;                  /* the tensor existed: base holds its shadows */
    int averaged;                  /* EMA per decay (else copied) */
    uint32_t nshadow;              /* blobs in base and target */
    blob *base[EMAD_MAX_DECAYS];   /* the shadows averaged from (references held) */
    blob *target[EMAD_MAX_DECAYS]; /* the shadows being written, published at commit */
    double d[EMAD_MAX_DECAYS];     /* decay per shadow (0: copy the values) */
    uint32_t fresh;                /* bit j: target[j] is new memory, charged as chunks arrive */
    uint64_t charged;              /* txn_shadows bytes charged for the targets */
    tensor *stored; /* stage_inputs(): the stored tensor when staged (NULL: a new one) */
} item;

/* The tensors of one writer's push, a transaction, a pending step or a seed. */
typedef struct stage {
    item *items;
    size_t nitems, cap;
    strmap *index;    /* name -> index + 1 */
    uint64_t bytes;   /* owned slice bytes */
    uint64_t ignored; /* inputs dropped by ignore patterns */
    int checked;      /* non-finite counts are filled in */
    int consumed;     /* slices moved into a pending step */
    /* stage_inputs(): one push message's stage, applied before the model changes. */
    int looked_up; /* each item's stored tensor is in item.stored */
    int unindexed; /* items of stored tensors are not in index yet (stage_find() adds them) */
    char *names;   /* one block holding the items' names */
    size_t names_len;
    slice *slab; /* the first slice of each item */
    /* store_push_answer(): the push's result, given once it cannot fail, before the writes */
    store_answer_fn answer;
    void *answer_ctx;
} stage;

/*
 * The checksum of one piece of a chunk an eager transaction averaged
 * (txn.c), kept to tell an exact resend of the chunk from one with other
 * bytes: the request's bytes are not kept once averaged.
 */
typedef struct chunk_sum {
    uint64_t e0;     /* first element of the piece in its tensor */
    uint64_t n;      /* its elements; 0 marks an empty slot */
    uint64_t sum;    /* task_sum() of its bytes, once ready */
    uint64_t expect; /* has_expect: a resend's sum, while the piece is still being averaged */
    uint32_t item;   /* index of the tensor in the transaction's stage */
    uint8_t ready, has_expect;
} chunk_sum;

/* Open-addressing table of chunk_sums keyed by (item, e0); cap is 0 or a power of two. */
typedef struct chunk_sums {
    chunk_sum *v;
    size_t cap, n;
} chunk_sums;

/* An open transaction. */
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
    chunk_sums sums; /* eager: checksums of the averaged chunks' pieces */
    uint64_t owner;  /* charged for its slot, staged bytes and new shadows */
    budget *budget;
} txn;

/* A multi-writer step waiting for its writers. */
typedef struct pending {
    uint64_t step;
    uint8_t *done; /* one flag per writer */
    uint32_t ndone;
    stage st;
    uint64_t last_used_ms;
    struct pending *next;
    uint64_t owner; /* whose push opened it (its share of the model's pending steps) */
    budget *budget; /* charged the parts' bytes: bytes[w] to owners[w], per writer */
    uint64_t *owners, *bytes;
    size_t nwriters;
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
    uint64_t next_id;      /* model uids */
    uint64_t mark;         /* the last tensor mark handed out (view.c) */
    uint64_t reused_bytes; /* shadow bytes pushes wrote into spares (blob.c) */
    uint64_t fresh_bytes;  /* shadow bytes pushes wrote into new blobs (blob.c) */
    budget *budget;        /* what clients make the store hold (budget.c) */
    uint64_t owner;        /* charged for the current request (store_set_owner()) */
    int keep_prev;         /* cluster mode: models keep their previous version (prev.c) */
};

/* What one item of a step does, planned before anything changes (apply.c). */
typedef struct plan {
    tensor *t; /* existing tensor, or NULL for a new one */
    int averaged;
    uint32_t nshadow;
    blob *target[EMAD_MAX_DECAYS]; /* blobs to write (new ones for new tensors and copy-on-write) */
    blob *base[EMAD_MAX_DECAYS];   /* references dropped once published (eager transactions) */
    int stale, skipped;
} plan;

/* How apply_step() writes a step's values into the target blobs. */
enum apply_how {
    APPLY_EMA,   /* averaged per decay from the slices (copied for copied tensors) */
    APPLY_SEED,  /* every shadow set to the slices' values, converted */
    APPLY_EAGER, /* already written by a transaction's chunk jobs */
};

/* store.c */
__attribute__((format(printf, 4, 5))) int store_fail(store_err *err, int code,
                                                     const char *tensor_name, const char *fmt, ...);
const char *store_cname(char *buf, size_t size, const char *name, size_t len);
model *store_model_get(store *s, const char *name, size_t len, store_err *err);
int store_is_averaged(const model *m, int kind, int dtype, const char *name, size_t len);
int store_check_writer(const model *m, uint32_t writer, store_err *err);
int store_check_step(uint64_t step, store_err *err);
uint64_t store_random_id(void);
int store_model_budget_check(model *m, int part, uint64_t owner, uint64_t bytes, uint64_t own,
                             store_err *err);

/* blob.c */
blob *blob_new(size_t size);
void blob_unref(blob *b);
void blob_release(budget *bg, blob *b, blob **spare);
blob *blob_cow(blob *cur, size_t size);
blob *blob_take(store *s, blob **spare, size_t size, int *fresh);
void blob_free_spares(model *m);
uint64_t blob_first_cost(uint64_t size);
uint64_t blob_write_cost(uint64_t size, uint64_t from, uint64_t to);

/* prev.c: the previous committed version of a model (cluster mode). */
void prev_release(model *m);
void prev_free(model *m);
void prev_freeze(model *m);
int prev_tensor(const model *m, const tensor *t, uint32_t k, uint64_t *step, blob **data);
size_t prev_ntensors(const model *m);

/* stage.c */
void stage_init(stage *st);
void stage_free(stage *st);
item *stage_find(const stage *st, const char *name, size_t len);
void stage_reserve(stage *st, size_t n);
item *stage_add(stage *st, const store_input *in, uint64_t numel);
slice *stage_item_add_slice(item *it, uint64_t start, uint64_t count);
const slice *stage_item_overlap(const item *it, uint64_t start, uint64_t count);
void stage_item_sort(item *it);
int stage_items_overlap(item *x, item *y, const slice **a, const slice **b);
slice *stage_item_slice_at(item *it, uint64_t start, uint64_t count);
int stage_slice_seen(const slice *sl, uint64_t off, uint64_t len);
void stage_slice_got(slice *sl, uint64_t off, uint64_t len);
int stage_check_input(const model *m, const store_input *in, int chunked, uint64_t *numel,
                      uint64_t *count, store_err *err);
int stage_check_against(const tensor *t, const char *name, int kind, int dtype, uint32_t ndim,
                        const uint64_t *shape, store_err *err);
int stage_check_size(size_t n, store_err *err);
uint64_t stage_header_cost(const char *name, size_t len, uint32_t ndim);
int stage_check_header(const model *m, uint64_t cost, uint64_t count, store_err *err);
int stage_check_same(const item *it, const store_input *in, const char *what, store_err *err);
int stage_check_chunk(item *it, const store_input *in, uint64_t count, store_err *err);
int stage_check_received(const item *it, store_err *err);
int stage_check_coverage(item *it, store_err *err);
int stage_check_unique(const store_input *in, size_t n, const char *what, store_err *err);

/*
 * The stored tensor named (name, len), or NULL: first the one at position
 * next of m's tensors (a trainer pushes the same list every step, so the
 * one after the previous input's), compared by name, else through the
 * index, which also sets *hash (strmap_hash() of the name). Prefetches the
 * tensors after next.
 */
tensor *stage_lookup(const model *m, size_t next, const char *name, size_t len, size_t *hash);

int stage_inputs(const model *m, uint64_t mark, const store_input *in, size_t n, stage *st,
                 store_err *err);

/* apply.c */
plan *apply_plan(const model *m, const stage *st);
int apply_fail_nonfinite(store_err *err, const item *it);
int apply_check_nonfinite(const model *m, stage *st, const plan *p, store_err *err);
int apply_step(model *m, stage *st, uint64_t step, enum apply_how how, plan *p, uint64_t now_ms,
               store_result *res, store_err *err);
int apply_stage(model *m, stage *st, uint64_t step, uint64_t now_ms, store_result *res,
                store_err *err);
int apply_contribution(model *m, uint64_t step, uint32_t writer, stage *st, uint64_t now_ms,
                       store_result *res, store_err *err);

/* pending.c */
void pending_free(pending *p);
int pending_add(model *m, uint64_t step, uint32_t writer, stage *st, uint64_t now_ms,
                store_result *res, store_err *err);

/* txn.c */
void txn_free(txn *t);
void txn_discard(store *s, txn *t);

#endif

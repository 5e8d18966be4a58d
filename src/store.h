/*
 * store.h - the daemon's state: models, their tensors and shadows, open
 * transactions and pull views.
 *
 * The store is owned by the loop thread; nothing here locks. A push is
 * validated completely before anything is applied. Shadow data lives in
 * reference-counted blobs: a pull view takes references, and an update of
 * a blob that a view still holds writes a fresh blob (copy-on-write), so
 * a view always shows exactly one committed state while pushes go on.
 */
#ifndef EMAD_STORE_H
#define EMAD_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "emad.h"

#define STORE_MAX_MODELS 4096
#define STORE_MAX_TXNS 1024
#define STORE_MAX_VIEWS 1024

/* Shadow storage shared between a tensor and pull views. */
typedef struct blob {
    uint32_t refs;
    size_t size;
    void *data; /* 64-byte aligned */
} blob;

/* A stored tensor. Read-only outside store.c. */
typedef struct tensor {
    char *name;
    size_t name_len;
    int kind;   /* enum emad_kind */
    int dtype;  /* dtype it is pushed and pulled in */
    int sdtype; /* dtype of the shadow data (F32 for F16/BF16 params) */
    uint32_t ndim;
    uint64_t shape[EMAD_MAX_NDIM];
    uint64_t numel;
    uint64_t nbytes; /* numel * dtype size: bytes on the wire */
    blob *shadow;
    uint64_t step;
} tensor;

/* A model. Read-only outside store.c. */
typedef struct model {
    char *name;
    double decay;
    uint64_t step;    /* committed step: highest step applied */
    tensor **tensors; /* first-push order */
    size_t ntensors;
    size_t cap;
    struct strmap *index;
    uint64_t shadow_bytes;
    uint64_t last_push_ms;
} model;

/* One tensor of a push request; borrows name and data from the request. */
typedef struct store_input {
    const char *name;
    size_t name_len;
    int kind;
    int dtype;
    uint32_t ndim;
    uint64_t shape[EMAD_MAX_NDIM];
    const void *data; /* any alignment */
    uint64_t len;
    uint64_t offset; /* transactions only */
} store_input;

/* Why an operation failed: code, message and (if one) the tensor at fault. */
typedef struct store_err {
    int code;
    char message[512];
    char tensor[EMAD_MAX_NAME_BYTES + 1];
} store_err;

/* Outcome of a push or commit. */
typedef struct store_result {
    uint64_t applied;
    uint64_t stale;
    uint64_t step;               /* model's committed step afterwards */
    const char *stale_names[64]; /* borrowed from the store's tensors */
    size_t nstale_names;
} store_result;

/* One tensor of a pull view: a frozen copy of the tensor's metadata. */
typedef struct view_tensor {
    const char *name; /* owned by the view */
    size_t name_len;
    int kind, dtype, sdtype;
    uint32_t ndim;
    uint64_t shape[EMAD_MAX_NDIM];
    uint64_t numel, nbytes, step;
    blob *data; /* reference held by the view */
} view_tensor;

/* A consistent view of (part of) a model at one moment. */
typedef struct store_view {
    uint64_t id;
    char *model;
    uint64_t step;
    view_tensor *tensors;
    size_t ntensors;
    uint64_t max_reply; /* reply cap the client asked for */
    uint64_t last_used_ms;
    struct store_view *next;
} store_view;

/* Gauges. */
typedef struct store_gauges {
    uint64_t models, tensors, shadow_bytes, txn_open, views_open;
} store_gauges;

typedef struct store store;

/* Create an empty store (aborts on out of memory). */
store *store_create(void);

/* Free the store, all models, transactions and views; NULL accepted. */
void store_destroy(store *s);

void store_gauges_get(const store *s, store_gauges *g);

/* Model lookup by name (len bytes); NULL if absent. */
model *store_model_find(store *s, const char *name, size_t len);

/* Models in creation order: the i-th, or NULL past the end. */
model *store_model_at(store *s, size_t i);

/*
 * Create a model. *created is 1 if created, 0 if it existed with the same
 * decay and exist_ok is set. Errors: EMAD_ENAME, EMAD_ERANGE, EMAD_EEXIST,
 * EMAD_ELIMIT.
 */
int store_create_model(store *s, const char *name, size_t len, double decay, int exist_ok,
                       int *created, store_err *err);

/* Drop a model; aborts its open transactions. EMAD_ENOMODEL if absent. */
int store_drop_model(store *s, const char *name, size_t len, store_err *err);

/*
 * Validate then apply a push of n inputs at step to a model. Nothing is
 * applied unless every input is valid. Input data is read in place (no
 * copy) and may have any alignment. now_ms stamps the model's last push.
 * Returns 0 or an EMAD_E* code with err filled.
 */
int store_push(store *s, const char *model_name, size_t len, uint64_t step, const store_input *in,
               size_t n, uint64_t now_ms, store_result *res, store_err *err);

/* Open a transaction on a model at step; *id receives its id. */
int store_txn_begin(store *s, const char *model_name, size_t len, uint64_t step, uint64_t now_ms,
                    uint64_t *id, store_err *err);

/*
 * Stage n inputs (whole tensors or in-order chunks) into a transaction.
 * If model_name is not NULL / has_step is set, they must match the
 * transaction's. Data is copied into the transaction's staging buffers.
 */
int store_txn_push(store *s, uint64_t id, const char *model_name, size_t len, int has_step,
                   uint64_t step, const store_input *in, size_t n, uint64_t now_ms,
                   uint64_t *staged, store_err *err);

/* Apply a complete transaction at once and close it. */
int store_txn_commit(store *s, uint64_t id, uint64_t now_ms, store_result *res, store_err *err);

/* Discard a transaction. EMAD_ENOTXN if it is not open. */
int store_txn_abort(store *s, uint64_t id, store_err *err);

/*
 * Freeze a view of a model (all tensors if names is NULL, else the n
 * names given as (ptr, len) pairs). The view is not registered: free it
 * with store_view_free() or hand it to store_view_register().
 */
int store_view_create(store *s, const char *model_name, size_t len, const char *const *names,
                      const size_t *name_lens, size_t n, store_view **out, store_err *err);

/* Register a view as a pull session (the store takes ownership); sets view->id. */
int store_view_register(store *s, store_view *v, uint64_t now_ms, store_err *err);

/* A registered view by id, touched at now_ms; NULL if unknown or expired. */
store_view *store_view_get(store *s, uint64_t id, uint64_t now_ms);

/* Release a registered view. EMAD_ENOSESSION if unknown. */
int store_view_release(store *s, uint64_t id, store_err *err);

/* Free an unregistered view (drops its blob references). NULL accepted. */
void store_view_free(store_view *v);

/*
 * Discard transactions and views idle since before now_ms - timeout_ms.
 * Adds the counts discarded to *txns and *views.
 */
void store_expire(store *s, uint64_t now_ms, uint64_t timeout_ms, uint64_t *txns, uint64_t *views);

#endif

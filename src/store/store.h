/*
 * store.h - the daemon's state: models, their tensors and shadows, open
 * transactions and pull views.
 *
 * The store is owned by the loop thread; nothing here locks. A push is
 * validated completely before anything is applied. Shadow data lives in
 * reference-counted blobs: a pull view takes references, and an update of
 * a blob that a view still holds writes a fresh blob (copy-on-write), so
 * a view always shows exactly one committed state while pushes go on.
 *
 * A push is a set of tensors, each as one or more flat element slices;
 * whole tensors are single slices. Every model has an EMA configuration
 * (emaconf.h): one shadow per decay for averaged tensors, one copy for
 * copied ones. A model with several writers collects each step's slices
 * from every writer in a pending step and applies it when the last writer
 * has pushed; until then pulls see the previous step.
 *
 * The struct bodies below are the ones the daemon reads (server.c packs
 * models, tensors, views and blobs into replies; persist.c writes views to
 * snapshots); the store's own types (stages, transactions, pending steps,
 * the store itself) are private to src/store/ (store_int.h).
 */
#ifndef EMAD_STORE_H
#define EMAD_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "emad.h"
#include "common/codec.h"
#include "store/budget.h"
#include "store/task.h"

#define STORE_MAX_MODELS 4096
#define STORE_MAX_TXNS 1024
#define STORE_MAX_VIEWS 1024
#define STORE_MAX_PENDING 64 /* pending multi-writer steps per model */
/* Largest step of a push, seed or transaction: a snapshot keeps steps as JSON integers. */
#define STORE_MAX_STEP ((uint64_t)INT64_MAX)
/*
 * What a model's tensors may add to the header of one snapshot file (the
 * safetensors limit of 100,000,000 bytes less 1,000,000 for the rest of
 * the header: configuration, model name, checksums); each tensor counts
 * STORE_HEADER_FIXED + 21 * ndim + 2 * name bytes + 4 * its quotes and
 * backslashes (stage.c).
 */
#define STORE_MAX_HEADER_BYTES 99000000u
#define STORE_HEADER_FIXED 188u
/* The one tensor name a snapshot file cannot hold: the metadata entry of safetensors. */
#define STORE_RESERVED_NAME "__metadata__"

/* Shadow storage shared between a tensor and pull views. */
typedef struct blob {
    uint32_t refs;
    size_t size;
    void *data; /* 64-byte aligned */
} blob;

/* A stored tensor. Read-only outside src/store/. */
typedef struct tensor {
    char *name;
    size_t name_len;
    int kind;     /* enum emad_kind */
    int dtype;    /* dtype it is pushed and pulled in */
    int sdtype;   /* dtype of the shadow data (F32 for averaged F16/BF16) */
    int averaged; /* 1: EMA per decay; 0: copied (buffers, copy patterns) */
    uint32_t ndim;
    uint64_t shape[EMAD_MAX_NDIM];
    uint64_t numel;
    uint64_t nbytes;               /* numel * dtype size: bytes on the wire */
    uint32_t nshadow;              /* model's decay count if averaged, else 1 */
    blob *shadow[EMAD_MAX_DECAYS]; /* one per decay (averaged) or the copy */
    blob *spare[EMAD_MAX_DECAYS];  /* a free blob of the shadow's size, or NULL */
    uint64_t step;
    uint64_t mark; /* the store's scratch mark (repeated names in a pull or a push) */
    size_t item;   /* with mark: its item in the push being staged (stage_inputs()) */
    size_t index;  /* position in the model's tensors */
} tensor;

/* A model. Read-only outside src/store/ (store_model_snapshotted() records snapshots). */
typedef struct model {
    char *name;
    emad_model_config cfg; /* owns its pattern strings */
    uint64_t step;         /* committed step: highest step applied */
    tensor **tensors;      /* first-push order */
    size_t ntensors;
    size_t cap;
    struct strmap *index;
    uint64_t shadow_bytes;
    uint64_t header_bytes; /* most bytes its tensors add to a snapshot header */
    uint64_t last_push_ms;
    struct pending *pending; /* multi-writer steps not yet complete */
    size_t npending;
    uint64_t uid;          /* unique per created model (a re-created model differs) */
    uint64_t version;      /* bumped by every change: create, applied push, configure */
    uint64_t snap_version; /* version of the last durable snapshot (0: none) */
    uint64_t snap_step;    /* its step */
    int restored;          /* loaded from a snapshot and not pushed since */
    uint64_t restored_step; /* the step it was loaded at */
    struct budget *budget;  /* the store's: charged for the shadows and spares */
    int keep_prev;          /* cluster mode: keep the previous committed version (prev.c) */
    struct prev_version *prev; /* that version, or NULL */
    int resyncing;             /* cluster resync (install.c): 1 installing, 2 loaded, unconfirmed */
    uint64_t install_bytes;    /* shadow bytes installed so far */
} model;

/*
 * One tensor of a push request; borrows name and data from the request.
 * It is the wire's tensor map as the shared codec decodes it (common/codec.h):
 * name, kind, dtype, shape, data and len; start and count of a slice
 * (count 0: the whole tensor); offset of a transaction's chunk; as_dtype
 * for store_seed() (the tensor's dtype when data is in its shadow's).
 */
typedef codec_tensor store_input;

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
    uint64_t skipped;            /* non-finite tensors left out (nonfinite = skip) */
    uint64_t ignored;            /* tensors matching an ignore pattern */
    int pending;                 /* staged for a multi-writer step not complete yet */
    uint64_t step;               /* model's committed step afterwards */
    const char *stale_names[64]; /* borrowed from the store's tensors */
    size_t nstale_names;
    /*
     * The first push applied to a model loaded from a snapshot, when its step
     * is more than one past the loaded step (the daemon restarted behind its
     * trainers): the model (borrowed), the loaded step and the steps between.
     */
    const char *behind_model;
    uint64_t behind_step, behind_gap;
} store_result;

/* One tensor of a pull view: a frozen copy of the tensor's metadata. */
typedef struct view_tensor {
    const char *name; /* owned by the view */
    size_t name_len;
    int kind;
    int dtype;  /* dtype sent to the client */
    int sdtype; /* dtype of data */
    int averaged;
    uint32_t ndim;
    uint64_t shape[EMAD_MAX_NDIM];
    uint64_t numel, nbytes, step; /* nbytes: numel * size of dtype */
    blob *data;                   /* reference held by the view */
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
    struct budget *budget; /* registered: charged `charged` bytes of sessions to owner */
    uint64_t owner, charged;
} store_view;

/* Gauges. */
typedef struct store_gauges {
    uint64_t models, tensors, shadow_bytes, txn_open, views_open, steps_pending, staged_bytes;
    uint64_t memory[BUDGET_PART_COUNT];  /* bytes held per part of the memory budget */
    uint64_t memory_total, memory_limit; /* their sum, and --max-memory (0: none) */
} store_gauges;

typedef struct store store;

/* Create an empty store (aborts on out of memory). */
store *store_create(void);

/* Free the store, all models, transactions and views; NULL accepted. */
void store_destroy(store *s);

void store_gauges_get(const store *s, store_gauges *g);

/*
 * Limit what clients can make the store hold to `limit` bytes (0: no
 * limit), and each owner to share_percent of it and of the transaction,
 * pull-session and pending-step slots (budget.h).
 */
void store_set_budget(store *s, uint64_t limit, unsigned share_percent);

/*
 * The owner charged for the requests that follow (a connection; 0: the
 * daemon's own, no share). Loop thread; set before each request.
 */
void store_set_owner(store *s, uint64_t owner);

/* The store's memory budget (the daemon charges replies in flight to it). */
budget *store_budget(store *s);

/*
 * Check that `bytes` more of part fit the budget and owner's share; when
 * they do not, free the spare shadows and check again. 0 or EMAD_ELIMIT
 * with err filled.
 */
int store_budget_check(store *s, int part, uint64_t owner, uint64_t bytes, store_err *err);

/* Model lookup by name (len bytes); NULL if absent. */
model *store_model_find(store *s, const char *name, size_t len);

/* Models in creation order: the i-th, or NULL past the end. */
model *store_model_at(store *s, size_t i);

/*
 * Create a model with configuration cfg (copied). *created is 1 if
 * created, 0 if it existed with the same configuration and exist_ok is
 * set. Errors: EMAD_ENAME, EMAD_ERANGE, EMAD_EEXIST, EMAD_ELIMIT.
 */
int store_create_model(store *s, const char *name, size_t len, const emad_model_config *cfg,
                       int exist_ok, int *created, store_err *err);

/*
 * Change a model's decays (same count) and schedule options from the next
 * push on. EMAD_EIMMUTABLE if buffers, writers, patterns or the number of
 * decays differ; EMAD_ERANGE for invalid values.
 */
int store_configure(store *s, const char *name, size_t len, const emad_model_config *cfg,
                    store_err *err);

/*
 * Restore one tensor of a model loaded from a snapshot: shadows[j] holds
 * the data of shadow j (numel * size of the shadow dtype bytes), for each
 * of the model's decays if averaged, else one (shadows NULL: left to be
 * written, by install.c). The model must not have the tensor yet. Returns 0, EMAD_EDUP,
 * EMAD_EDTYPE, EMAD_ELIMIT or EMAD_ENOMEM.
 */
int store_restore_tensor(model *m, const char *name, int kind, int dtype, int averaged,
                         uint32_t ndim, const uint64_t *shape, uint64_t step,
                         const void *const *shadows, store_err *err);

/* Set a restored model's committed step and mark it as snapshotted at that step. */
void store_restore_done(model *m, uint64_t step);

/* Record a durable snapshot of m at version and step, unless a later one is recorded. */
void store_model_snapshotted(model *m, uint64_t version, uint64_t step);

/* Drop a model; aborts its open transactions. EMAD_ENOMODEL if absent. */
int store_drop_model(store *s, const char *name, size_t len, store_err *err);

/*
 * Validate then apply a push of n inputs at step to a model, as writer
 * `writer`. Nothing is applied unless every input is valid. With one
 * writer, input data is read in place (no copy) and may have any
 * alignment; with several, it is copied into the step's pending set.
 * now_ms stamps the model's last push. Returns 0 or an EMAD_E* code with
 * err filled.
 */
int store_push(store *s, const char *model_name, size_t len, uint64_t step, uint32_t writer,
               const store_input *in, size_t n, uint64_t now_ms, store_result *res, store_err *err);

/* A push's result, given before its values are written (store_push_answer()). */
typedef void (*store_answer_fn)(void *ctx, const store_result *res);

/*
 * store_push(), which on a model with one writer calls answer(ctx, result)
 * once nothing can fail any more and before the shadows are written: the
 * caller can reply while the averaging runs. The result given is the one
 * *res gets. Nothing else may look at the store before this returns. With
 * several writers, or when the push fails, answer is not called.
 */
int store_push_answer(store *s, const char *model_name, size_t len, uint64_t step, uint32_t writer,
                      const store_input *in, size_t n, uint64_t now_ms, store_answer_fn answer,
                      void *ctx, store_result *res, store_err *err);

/*
 * Seed a model's shadows: every input (whole tensors) becomes the value of
 * every shadow of its tensor, converted to the shadow dtype, whatever the
 * tensor's stored step; the tensor's step becomes `step` and the model's
 * step at least `step`. Tensors are created as by a first push. Validated
 * and allocated completely before anything changes.
 */
int store_seed(store *s, const char *model_name, size_t len, uint64_t step, const store_input *in,
               size_t n, uint64_t now_ms, store_result *res, store_err *err);

/* Open a transaction on a model at step for a writer; *id receives its id. */
int store_txn_begin(store *s, const char *model_name, size_t len, uint64_t step, uint32_t writer,
                    uint64_t now_ms, uint64_t *id, store_err *err);

/*
 * Add n inputs (whole tensors or in-order chunks) to a transaction. If
 * model_name is not NULL / has_step is set, they must match the
 * transaction's. On a model with several writers the data is copied into
 * the transaction's staging buffers; on a single-writer model each chunk
 * is averaged (or copied) straight from the input into the transaction's
 * new shadows, which commit publishes. This runs that work inline.
 */
int store_txn_push(store *s, uint64_t id, const char *model_name, size_t len, int has_step,
                   uint64_t step, const store_input *in, size_t n, uint64_t now_ms,
                   uint64_t *staged, store_err *err);

/* The kernel work of one transaction request (store_txn_push_job()). */
typedef struct store_job {
    task_list tasks;
    struct txn *txn;
} store_job;

/*
 * store_txn_push() without running the work: *job gets it (NULL when there
 * is none). The caller runs every task (on any threads, in any order)
 * while the inputs' memory stays alive, then calls store_job_done() on
 * the store's thread. Meanwhile the store may serve other requests; the
 * transaction cannot commit until its jobs are done.
 */
int store_txn_push_job(store *s, uint64_t id, const char *model_name, size_t len, int has_step,
                       uint64_t step, const store_input *in, size_t n, uint64_t now_ms,
                       uint64_t *staged, store_job **job, store_err *err);

/*
 * Finish a job whose tasks have all run: count non-finite values found,
 * and with nonfinite = reject fail (EMAD_ENONFINITE) the request and the
 * transaction. Frees the job.
 */
int store_job_done(store *s, store_job *job, uint64_t now_ms, store_err *err);

/*
 * A job without tasks of open single-writer transaction id (NULL if there
 * is none, or it has several writers): counted in its inflight jobs, so a
 * commit waits for it, until store_job_done().
 */
store_job *store_txn_job(store *s, uint64_t id);

/* Fail the job's transaction with why (unless it failed already): its commit reports it. */
void store_job_fail(store_job *job, const store_err *why);

/* Jobs of open transaction id handed out and not done (0 if no such transaction). */
uint32_t store_txn_inflight(const store *s, uint64_t id);

/* Is transaction id open? (Read only: does not touch its idle time.) */
int store_txn_open(const store *s, uint64_t id);

/*
 * 0, or the error that failed open transaction id (a non-finite value or a
 * resend with other bytes found by one of its jobs), copied into *err.
 */
int store_txn_failed(const store *s, uint64_t id, store_err *err);

/* Run every task of a job on this thread, then store_job_done(). */
int store_job_run(store *s, store_job *job, uint64_t now_ms, store_err *err);

/* Free the spare shadow blobs kept for the next transactions (when idle). */
void store_release_spares(store *s);

/*
 * The shadow bytes written into spares and fresh memory, and with held set
 * the spare bytes held now (a walk over every tensor; else held_bytes is 0).
 */
typedef struct store_spares {
    uint64_t held_bytes;   /* bytes of spare blobs held now */
    uint64_t reused_bytes; /* shadow bytes pushes wrote into spares, since the start */
    uint64_t fresh_bytes;  /* shadow bytes pushes wrote into newly allocated memory */
} store_spares;

void store_spares_get(const store *s, store_spares *out, int held);

/* Take or drop a reference to a blob (a reply being packed off the store's thread). */
void store_blob_ref(blob *b);
void store_blob_unref(blob *b);

/* Apply a complete transaction at once and close it. */
int store_txn_commit(store *s, uint64_t id, uint64_t now_ms, store_result *res, store_err *err);

/* Discard a transaction. EMAD_ENOTXN if it is not open. */
int store_txn_abort(store *s, uint64_t id, store_err *err);

/* view_options.dtype: every tensor in its shadow's own dtype (full precision). */
#define VIEW_DTYPE_SHADOW (-1)

/* Which shadow and dtype a view shows. */
typedef struct view_options {
    int has_decay; /* 0: the model's first decay */
    double decay;
    int dtype; /* floating tensors converted to this; EMAD_DTYPE_INVALID: as pushed */
} view_options;

/*
 * Cluster resync (install.c): create model name anew with cfg and mark it
 * resyncing; install one tensor's bytes [in->offset, +in->len) of shadow
 * `shadow` (data in the shadow dtype, as_dtype the tensor's dtype when it
 * differs) with the tensor's step; publish the model at step once every
 * shadow byte came (EMAD_EINCOMPLETE otherwise); accept a loaded model's
 * state as it is; mark every model resyncing (a restart with peers).
 */
int store_install_begin(store *s, const char *name, size_t len, const emad_model_config *cfg,
                        store_err *err);
int store_install_data(store *s, const char *name, size_t len, uint32_t shadow,
                       const store_input *in, uint64_t step, store_err *err);
int store_install_end(store *s, const char *name, size_t len, uint64_t step, store_err *err);
int store_install_accept(store *s, const char *name, size_t len, store_err *err);
void store_mark_resyncing(store *s);

/*
 * Cluster mode: every model (existing and new) keeps its previous committed
 * version, at most one more reference to each shadow (prev.c).
 */
void store_keep_previous(store *s, int on);

/* Step of a model's previous committed version, or 0 with *has 0 if it keeps none. */
uint64_t store_prev_step(const model *m, int *has);

/*
 * store_view_create() of the model's version at exactly `step`: the current
 * one or the kept previous one; EMAD_ESPLIT if neither is at that step.
 */
int store_view_create_at(store *s, const char *model_name, size_t len, const char *const *names,
                         const size_t *name_lens, size_t n, const view_options *opts, uint64_t step,
                         store_view **out, store_err *err);

/*
 * Freeze a view of a model (all tensors if names is NULL, else the n
 * names given as (ptr, len) pairs). opts may be NULL. The view is not
 * registered: free it with store_view_free() or hand it to
 * store_view_register(). EMAD_ERANGE for a decay the model does not have,
 * EMAD_EDTYPE for an output dtype other than F32, BF16 or F16,
 * EMAD_ENOTENSOR for an unknown name, EMAD_EDUP for a name given twice.
 */
int store_view_create(store *s, const char *model_name, size_t len, const char *const *names,
                      const size_t *name_lens, size_t n, const view_options *opts, store_view **out,
                      store_err *err);

/*
 * The decay of a model that a decay sent as a float32 (f, widened) means:
 * the one decay whose float32 rounding equals f. EMAD_ENOMODEL, or
 * EMAD_ERANGE when no decay or more than one rounds to f.
 */
int store_decay_from_f32(store *s, const char *model_name, size_t len, double f, double *decay,
                         store_err *err);

/* Register a view as a pull session (the store takes ownership); sets view->id. */
int store_view_register(store *s, store_view *v, uint64_t now_ms, store_err *err);

/* A registered view by id, touched at now_ms; NULL if unknown or expired. */
store_view *store_view_get(store *s, uint64_t id, uint64_t now_ms);

/* Is pull session id registered? (Read only: does not touch its idle time.) */
int store_view_open(const store *s, uint64_t id);

/* Release a registered view. EMAD_ENOSESSION if unknown. */
int store_view_release(store *s, uint64_t id, store_err *err);

/* Free an unregistered view (drops its blob references). NULL accepted. */
void store_view_free(store_view *v);

/*
 * Discard transactions, views and pending multi-writer steps idle since
 * before now_ms - timeout_ms. Adds the counts discarded to *txns, *views
 * and *steps.
 */
void store_expire(store *s, uint64_t now_ms, uint64_t timeout_ms, uint64_t *txns, uint64_t *views,
                  uint64_t *steps);

#endif

/*
 * emad.h - client library for emad, the EMA parameter server.
 *
 * libemad talks to an emad daemon over nanomsg (REQ/REP, msgpack payloads;
 * see docs/PROTOCOL.md). It creates models, pushes parameters and buffers
 * (splitting large pushes into transactions of chunks), pulls the averaged
 * model into caller-provided or library-allocated buffers, and reads lists
 * and counters.
 *
 * Errors: every function returning int returns 0 on success or a negative
 * code: one of the EMAD_E* values below (the daemon's error codes are the
 * same numbers, negated) or a negated errno value. emad_strerror() turns any
 * of them into text; emad_last_error() gives the detailed message of the
 * last failed call on a client (for daemon errors: the daemon's message,
 * naming the tensor at fault).
 *
 * Thread safety: an emad_client is not thread-safe; use one client per
 * thread, or serialize calls on a shared client with a lock. Different
 * clients are fully independent. emad_strerror() is thread-safe.
 */
#ifndef EMAD_H
#define EMAD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define EMAD_EXTERN __attribute__((visibility("default")))
#else
#define EMAD_EXTERN
#endif

/* Version of the wire protocol this library speaks. */
#define EMAD_PROTOCOL_VERSION 1

/* Default daemon endpoint. */
#define EMAD_DEFAULT_URL "tcp://127.0.0.1:7470"

/* Limits shared by the daemon and the client (see docs/PROTOCOL.md). */
#define EMAD_MAX_NDIM 16
#define EMAD_MAX_NAME_BYTES 1024
#define EMAD_MAX_MODEL_NAME_BYTES 128
#define EMAD_DEFAULT_DECAY 0.999
#define EMAD_MAX_DECAYS 8       /* shadows (decays) per model */
#define EMAD_MAX_GLOBS 32       /* copy / ignore patterns per model, each */
#define EMAD_MAX_GLOB_BYTES 256 /* longest pattern */
#define EMAD_MAX_WRITERS 1024   /* writers per model */

/*
 * Error codes, one XX(name, code, text) entry each: EMAD_<name> is -code
 * (the daemon sends the positive code on the wire), emad_errname() gives
 * "EMAD_<name>" and emad_strerror() the text. The daemon's codes are
 * EMAD_ERRNO_FIRST..EMAD_ERRNO_LAST (docs/PROTOCOL.md), the client
 * library's own EMAD_ERRNO_CLIENT_FIRST..EMAD_ERRNO_CLIENT_LAST; neither
 * range has gaps, and every code lies in 1001..1199 (bindings may scan that
 * span with emad_errname()). A comment gives more detail where the text is short.
 */
#define EMAD_ERRNO_MAP(XX)                                                                         \
    XX(EMALFORMED, 1001, "malformed request") /* not a valid message */                            \
    XX(EVERSION, 1002, "protocol version not supported")                                           \
    XX(EOP, 1003, "unknown operation")                                                             \
    XX(EDTYPE, 1004, "unknown or unsuitable dtype")                                                \
    XX(ESIZE, 1005, "data length does not match shape and dtype")                                  \
    XX(ENAME, 1006, "invalid name") /* empty, over-long or invalid */                              \
    XX(ESHAPE, 1007, "shape differs from the stored tensor")                                       \
    XX(EKIND, 1008, "kind or dtype differs from the stored tensor") /* kind: param/buffer */       \
    XX(ELIMIT, 1009, "limit exceeded")                              /* a documented limit */       \
    XX(ENOMODEL, 1010, "no such model")                                                            \
    XX(EEXIST, 1011, "model already exists") /* with a different configuration */                  \
    XX(ENOTENSOR, 1012, "no such tensor")                                                          \
    XX(ENOTXN, 1013, "no such open transaction")                /* unknown, expired or finished */ \
    XX(EINCOMPLETE, 1014, "transaction has incomplete tensors") /* commit with missing chunks */   \
    XX(EDUP, 1015, "duplicate tensor name") /* the same tensor twice in one push */                \
    XX(ERANGE, 1016, "value out of range")                                                         \
    XX(ENOSESSION, 1017, "no such pull session") /* unknown or expired */                          \
    XX(ENOMEM, 1018, "out of memory")                                                              \
    XX(EINTERNAL, 1019, "internal error")                                                          \
    XX(EORDER, 1020, "transaction chunk out of order")                                             \
    XX(ENONFINITE, 1021, "NaN or Inf in an averaged tensor")                                       \
    XX(EOVERLAP, 1022, "slice overlaps another slice of the tensor") /* of the same step */        \
    XX(EIMMUTABLE, 1023, "option cannot change on an existing model")                              \
    XX(ENOSTATE, 1024, "the daemon has no state directory") /* runs without --state-dir */         \
    XX(ESNAPSHOT, 1025, "snapshot could not be written")    /* disk full, permissions */           \
    XX(ECONFLICT, 1026, "tensor changed by another push during the transaction")                   \
    XX(EAUTH, 1027, "authentication failed") /* no or expired session, bad tag, replay */          \
    XX(EDENIED, 1028, "not permitted")       /* the user's grants do not allow it */               \
    XX(EMOVED, 1029, "shard map is stale or the request is for another shard; refresh the map")    \
    XX(ESPLIT, 1030, "cluster not at one step") /* no version at the asked step */                 \
    XX(ELAYOUT, 1031, "push layout not known")  /* given up or restarted: send the tensors */      \
    /* Client-side only. */                                                                        \
    XX(ETIMEDOUT, 1101, "timed out waiting for the daemon") /* no reply within the timeout */      \
    XX(ECONNECT, 1102, "cannot connect to the daemon") /* cannot open or connect the socket */     \
    XX(EPROTO, 1103, "reply from the daemon not understood")                                       \
    XX(EINVAL, 1104, "invalid argument")                                                           \
    XX(EFORMAT, 1105, "malformed safetensors file")                                                \
    XX(EIO, 1106, "I/O error") /* file I/O */

#define EMAD_ERRNO_FIRST 1001        /* EMAD_EMALFORMED */
#define EMAD_ERRNO_LAST 1031         /* EMAD_ELAYOUT */
#define EMAD_ERRNO_CLIENT_FIRST 1101 /* EMAD_ETIMEDOUT */
#define EMAD_ERRNO_CLIENT_LAST 1106  /* EMAD_EIO */

enum {
    EMAD_OK = 0,
#define EMAD__ERRNO_ENUM(name, code, text) EMAD_##name = -(code),
    EMAD_ERRNO_MAP(EMAD__ERRNO_ENUM)
#undef EMAD__ERRNO_ENUM
};

/* Tensor kinds. */
enum emad_kind {
    EMAD_PARAM = 0,  /* trainable parameter: averaged */
    EMAD_BUFFER = 1, /* buffer (BatchNorm stats, counters): copied */
};

/* Data types; the names are the safetensors names ("F32", "BF16", ...). */
enum emad_dtype {
    EMAD_DTYPE_INVALID = 0,
    EMAD_BOOL,
    EMAD_U8,
    EMAD_I8,
    EMAD_I16,
    EMAD_U16,
    EMAD_F16,
    EMAD_BF16,
    EMAD_I32,
    EMAD_U32,
    EMAD_F32,
    EMAD_F64,
    EMAD_I64,
    EMAD_U64,
    EMAD_DTYPE_COUNT
};

/* Decay schedules (see docs/EMA.md for the formulas). */
enum emad_schedule {
    EMAD_SCHEDULE_CONSTANT = 0, /* d */
    EMAD_SCHEDULE_NUM_UPDATES,  /* min(d, (1 + n) / (10 + n)) (TensorFlow, torch_ema) */
    EMAD_SCHEDULE_WARMUP,       /* 1 - (1 + e / inv_gamma) ** -power (timm, ema-pytorch) */
};

/* What a push at step t does to a shadow last updated at step s < t - 1. */
enum emad_step_gap {
    EMAD_STEP_GAP_IGNORE = 0, /* one step's decay, whatever the gap */
    EMAD_STEP_GAP_COMPENSATE, /* the product of the decays of steps s+1 .. t */
};

/* What happens to floating-point buffers (integer and bool buffers are always copied). */
enum emad_buffers {
    EMAD_BUFFERS_COPY = 0, /* copied (the reference example) */
    EMAD_BUFFERS_AVERAGE,  /* averaged like params (AveragedModel(use_buffers=True)) */
};

/* What a push with NaN or Inf in an averaged tensor does. */
enum emad_nonfinite {
    EMAD_NONFINITE_REJECT = 0, /* refuse the whole push, nothing applied */
    EMAD_NONFINITE_SKIP,       /* leave out the bad tensors, apply the rest */
    EMAD_NONFINITE_ALLOW,      /* no check */
};

/*
 * A model's EMA configuration; initialize with emad_config_init() (the
 * defaults: one decay 0.999, constant schedule, everything else off).
 * Pattern strings are borrowed by emad_create_config(); in a configuration
 * returned by emad_get_config() they are owned by the struct (free with
 * emad_config_free()).
 */
typedef struct emad_model_config {
    size_t ndecays;                   /* 1..EMAD_MAX_DECAYS */
    double decays[EMAD_MAX_DECAYS];   /* each in [0, 1]; the first is the default for pulls */
    int schedule;                     /* enum emad_schedule */
    uint64_t update_after_step;       /* pushes at steps <= this copy instead of average */
    double inv_gamma;                 /* warmup: > 0, default 1 */
    double power;                     /* warmup: > 0, default 2/3 */
    double min_decay;                 /* lower clamp of scheduled decays, default 0 */
    int step_gap;                     /* enum emad_step_gap */
    int buffers;                      /* enum emad_buffers */
    int nonfinite;                    /* enum emad_nonfinite */
    uint32_t writers;                 /* 1..EMAD_MAX_WRITERS, default 1 */
    size_t ncopy;                     /* tensors matching these are copied, not averaged */
    const char *copy[EMAD_MAX_GLOBS]; /* fnmatch(3) patterns, no flags */
    size_t nignore;                   /* tensors matching these are accepted, not stored */
    const char *ignore[EMAD_MAX_GLOBS];
} emad_model_config;

/*
 * One tensor. For a push, the library reads name, kind, dtype, ndim, shape,
 * offset, count and data; data is borrowed for the duration of the call
 * and never written. count == 0 pushes the whole tensor (nbytes must equal
 * numel * itemsize); count > 0 pushes the flat element slice [offset,
 * offset + count) of a tensor of the full shape `shape` (nbytes must equal
 * count * itemsize). For a pull, the library fills every field (offset and
 * count 0); see emad_pull() and emad_pull_into() for who owns data.
 */
typedef struct emad_tensor {
    const char *name;
    int kind;  /* enum emad_kind */
    int dtype; /* enum emad_dtype */
    uint32_t ndim;
    uint64_t shape[EMAD_MAX_NDIM];
    void *data;
    uint64_t nbytes;
    uint64_t step;   /* pull: training step of the tensor's last update */
    uint64_t offset; /* push: first element of a slice */
    uint64_t count;  /* push: elements in the slice; 0 = the whole tensor */
} emad_tensor;

/* A push larger than one message is a transaction of chunks of at most this. */
#define EMAD_TXN_CHUNK_BYTES (4ULL << 20)

/* Connection options; initialize with emad_options_init(). */
typedef struct emad_options {
    int timeout_ms;           /* per request (send + reply); default 30000 */
    int connect_timeout_ms;   /* first contact with the daemon; default 5000 */
    uint64_t chunk_bytes;     /* largest message the client sends; default 20 MiB,
                                 lowered automatically to what the daemon accepts.
                                 A push that fits is sent whole; a larger one is a
                                 transaction of chunks of at most
                                 EMAD_TXN_CHUNK_BYTES (or this, if smaller) */
    uint64_t max_reply_bytes; /* largest reply the client accepts; default 64 MiB.
                                 Pulls of more than 16 MiB are read in replies of
                                 at most 4 MiB whatever this is */
    const char *user;         /* authenticate as this user (docs/SECURITY.md); default NULL:
                                 the user named in the key file */
    const char *key_file;     /* the user's key file (mode 0600, `emactl keygen`); when user
                                 and key_file are both NULL, $EMAD_USER and $EMAD_KEY_FILE
                                 are used; with neither, requests are not authenticated */
} emad_options;

/* Result of a push. */
typedef struct emad_push_result {
    uint64_t applied;  /* tensors applied (averaged or copied) */
    uint64_t stale;    /* tensors left alone: their step was >= the pushed step */
    uint64_t step;     /* the model's committed step after the push */
    uint32_t messages; /* messages sent (1 unless the push was chunked) */
    uint64_t skipped;  /* tensors left out for NaN/Inf (nonfinite = skip) */
    uint64_t ignored;  /* tensors matching an ignore pattern */
    int pending;       /* 1: staged for a multi-writer step that other writers have not
                          finished; step is still the previous committed step */
} emad_push_result;

/* emad_pull_options.dtype: every tensor in the dtype of the daemon's shadow (full precision). */
#define EMAD_PULL_SHADOW (-1)

/* Pull options; initialize with emad_pull_options_init(). */
typedef struct emad_pull_options {
    double decay; /* which shadow: one of the model's decays; < 0 (default) = the first */
    int dtype;    /* floating tensors converted to EMAD_F32, EMAD_BF16 or EMAD_F16 (round to
                     nearest even); EMAD_PULL_SHADOW: each tensor in its shadow's dtype (F32 for
                     averaged F16/BF16); EMAD_DTYPE_INVALID (default) = as pushed */
} emad_pull_options;

/* A pulled model owned by the library; free with emad_model_free(). */
typedef struct emad_model {
    char *name;
    uint64_t step; /* the model's committed step */
    size_t ntensors;
    emad_tensor *tensors; /* names and data owned by this struct */
} emad_model;

/* Summary of one model, as listed. */
typedef struct emad_model_info {
    char name[EMAD_MAX_MODEL_NAME_BYTES + 1];
    double decay; /* the first decay */
    uint64_t step;
    uint64_t ntensors;
    uint64_t shadow_bytes;
    uint64_t snapshot_step;   /* step of the last durable snapshot (0: none) */
    int64_t last_push_age_ms; /* milliseconds since the last applied push; -1: none since start */
} emad_model_info;

/* One named counter from the daemon's stats. */
typedef struct emad_stat {
    char name[64];
    uint64_t value;
} emad_stat;

typedef struct emad_client emad_client;

/* Library version string ("0.1.0"). */
EMAD_EXTERN const char *emad_version(void);

/*
 * sizeof() of a public struct of this library, by its name ("emad_tensor",
 * "emad_model_config", ...), or 0 for an unknown name. Bindings that lay
 * the structs out themselves (Python's ctypes) check their layout with it.
 */
EMAD_EXTERN size_t emad_struct_size(const char *name);

/* Text for any code returned by this library (static storage). */
EMAD_EXTERN const char *emad_strerror(int code);

/* Short name for a code ("EMAD_ESHAPE"), or NULL if unknown. */
EMAD_EXTERN const char *emad_errname(int code);

/* dtype helpers: safetensors name <-> enum, element size in bytes (0 if invalid). */
EMAD_EXTERN const char *emad_dtype_name(int dtype);
EMAD_EXTERN int emad_dtype_from_name(const char *name); /* EMAD_DTYPE_INVALID if unknown */
EMAD_EXTERN size_t emad_dtype_size(int dtype);

EMAD_EXTERN void emad_options_init(emad_options *opts);

/*
 * Connect to the daemon at url (NULL: EMAD_DEFAULT_URL). opts may be NULL
 * for defaults. Contacts the daemon once ("hello") to check the protocol
 * version and learn its limits; with credentials (opts->user, opts->key_file
 * or the environment), reads the key file and authenticates (a handshake on
 * each connection the client opens). On success *out owns a client to
 * release with emad_close(); on failure emad_last_error(NULL) says why.
 */
EMAD_EXTERN int emad_connect(emad_client **out, const char *url, const emad_options *opts);
/* (url "cluster:PATH" is emad_connect_cluster(PATH): see "Clusters" below.) */

/* Close the client and free it; NULL is accepted. */
EMAD_EXTERN void emad_close(emad_client *c);

/*
 * Detailed message of the last failed call on c ("" if none). Valid until the next call.
 * With c NULL: the message of the last failed emad_connect() of this thread ("" if none).
 */
EMAD_EXTERN const char *emad_last_error(const emad_client *c);

/* Largest message the daemon accepts (learned at connect). */
EMAD_EXTERN uint64_t emad_server_max_message_bytes(const emad_client *c);

/*
 * Create a model with the given decay (0 <= decay <= 1). With exist_ok, an
 * existing model with the same decay is not an error; a different decay is
 * EMAD_EEXIST either way.
 */
EMAD_EXTERN int emad_create(emad_client *c, const char *model, double decay, int exist_ok);

EMAD_EXTERN void emad_config_init(emad_model_config *cfg);

/*
 * Create a model with a full configuration (NULL: defaults). With
 * exist_ok, an existing model with the same configuration is not an error;
 * a different configuration is EMAD_EEXIST either way.
 */
EMAD_EXTERN int emad_create_config(emad_client *c, const char *model, const emad_model_config *cfg,
                                   int exist_ok);

/*
 * Change a live model's decays (same count) and schedule options
 * (schedule, update_after_step, inv_gamma, power, min_decay, step_gap,
 * nonfinite); they apply from the next push on. Changing buffers, writers,
 * copy or ignore patterns, or the number of decays is EMAD_EIMMUTABLE.
 */
EMAD_EXTERN int emad_configure(emad_client *c, const char *model, const emad_model_config *cfg);

/* A model's configuration; free the pattern strings with emad_config_free(). */
EMAD_EXTERN int emad_get_config(emad_client *c, const char *model, emad_model_config *cfg);
EMAD_EXTERN void emad_config_free(emad_model_config *cfg);

/* Names for the option enums ("warmup", "compensate", ...); NULL if out of range. */
EMAD_EXTERN const char *emad_schedule_name(int schedule);
EMAD_EXTERN const char *emad_step_gap_name(int step_gap);
EMAD_EXTERN const char *emad_buffers_name(int buffers);
EMAD_EXTERN const char *emad_nonfinite_name(int nonfinite);
/* The enum value for a name, or -1. */
EMAD_EXTERN int emad_option_from_name(const char *option, const char *name);

/* Drop a model and all its tensors. */
EMAD_EXTERN int emad_drop(emad_client *c, const char *model);

/*
 * Push n tensors at training step `step`. If the request fits in one
 * message it is sent as one push; otherwise it is sent as a transaction
 * (begin, chunks, commit) that the daemon applies all at once or not at
 * all. res may be NULL.
 */
EMAD_EXTERN int emad_push(emad_client *c, const char *model, uint64_t step,
                          const emad_tensor *tensors, size_t n, emad_push_result *res);

/*
 * Push as writer `writer` (0..writers-1) of a model declared with several
 * writers: the step becomes visible to pulls when every writer has pushed
 * it (res->pending tells whether this push completed it). Each writer
 * pushes whole tensors or slices (emad_tensor.offset/count); slices of one
 * tensor from all writers must not overlap and must cover it.
 */
EMAD_EXTERN int emad_push_as(emad_client *c, const char *model, uint64_t step, uint32_t writer,
                             const emad_tensor *tensors, size_t n, emad_push_result *res);

/*
 * Seed a model's shadows (e.g. from a checkpoint): each tensor's value
 * becomes every shadow of that tensor, whatever its stored step; its step
 * becomes `step`. Whole tensors only. as_dtypes (may be NULL) gives, per
 * tensor, the tensor's dtype when the data is in its shadow's dtype (an
 * F32 shadow of a BF16 param: data F32, as_dtype EMAD_BF16); 0 otherwise.
 * Tensors are sent in as few messages as fit the daemon's limit; each
 * message is applied at once (a tensor larger than one message is
 * EMAD_ELIMIT).
 */
EMAD_EXTERN int emad_seed(emad_client *c, const char *model, uint64_t step,
                          const emad_tensor *tensors, const int *as_dtypes, size_t n,
                          emad_push_result *res);

EMAD_EXTERN void emad_pull_options_init(emad_pull_options *opts);

/*
 * Pull a model (all tensors if names is NULL, else the n_names named ones).
 * On success *out owns the result; free it with emad_model_free(). Large
 * models are fetched in chunks from a consistent view of one committed step.
 */
EMAD_EXTERN int emad_pull(emad_client *c, const char *model, const char *const *names,
                          size_t n_names, emad_model **out);

/*
 * Pull the n named tensors into caller-provided buffers: tensors[i].name
 * selects the tensor, tensors[i].data/nbytes is the buffer (must be at
 * least the tensor's size). The library fills kind, dtype, ndim, shape,
 * step and sets nbytes to the tensor's size. *step (may be NULL) gets the
 * model's committed step. A buffer too small is EMAD_ESIZE, nothing written.
 * After any other error the buffers may hold part of the pull (with
 * authentication, possibly data of a reply whose tag did not verify, which
 * is checked as it is copied): use them only after success.
 */
EMAD_EXTERN int emad_pull_into(emad_client *c, const char *model, emad_tensor *tensors, size_t n,
                               uint64_t *step);

/* emad_pull() and emad_pull_into() with options (opts NULL: defaults). */
EMAD_EXTERN int emad_pull_ex(emad_client *c, const char *model, const char *const *names,
                             size_t n_names, const emad_pull_options *opts, emad_model **out);
EMAD_EXTERN int emad_pull_into_ex(emad_client *c, const char *model, emad_tensor *tensors, size_t n,
                                  const emad_pull_options *opts, uint64_t *step);

EMAD_EXTERN void emad_model_free(emad_model *m);

/* List models. *out is malloc'd (free with free()), *n its length. */
EMAD_EXTERN int emad_list(emad_client *c, emad_model_info **out, size_t *n);

/*
 * Describe one model: *info filled, *tensors a malloc'd array of *n tensor
 * descriptions (data NULL; names owned by the array: free it with
 * emad_tensors_free()).
 */
EMAD_EXTERN int emad_describe(emad_client *c, const char *model, emad_model_info *info,
                              emad_tensor **tensors, size_t *n);
EMAD_EXTERN void emad_tensors_free(emad_tensor *tensors, size_t n);

/*
 * Write a durable snapshot of model (NULL: every model) into the daemon's
 * --state-dir and return once the files are on disk (fsync'd). *step (may
 * be NULL) gets the model's snapshotted step (the highest for all models).
 * EMAD_ENOSTATE if the daemon has no state directory, EMAD_ESNAPSHOT if
 * the write failed (the previous snapshot is kept).
 */
EMAD_EXTERN int emad_snapshot(emad_client *c, const char *model, uint64_t *step);

/* Daemon counters. *out is malloc'd (free with free()), *n its length. */
EMAD_EXTERN int emad_stats(emad_client *c, emad_stat **out, size_t *n);

/*
 * Clusters (docs/PROTOCOL.md, "Cluster mode"). A cluster is S shards x R
 * replicas of ordinary daemons described by a shard map, a small text:
 *
 *     # emad shard map
 *     epoch 3          # >= 1, bumped on every reshard
 *     ack 1            # replicas of each shard that must apply a push (1..R, default 1)
 *     shard 0 tcp://10.0.0.1:7470 tcp://10.0.0.2:7470
 *     shard 1 tcp://10.0.0.3:7470 tcp://10.0.0.4:7470
 *
 * (one directive per line, or ';' between directives on one line). A client
 * from emad_connect_cluster() (or emad_connect() with "cluster:PATH") works
 * with every emad_* call: each tensor is placed on a shard by the placement
 * (emad_cluster_plan), tensors of at least EMAD_CLUSTER_SPLIT_BYTES are cut
 * into one element range per shard; writes go to every replica of the
 * shards concerned and succeed when `ack` replicas of every shard applied
 * them; pulls return the original names and shapes, all from one committed
 * step (or EMAD_ESPLIT).
 */
#define EMAD_CLUSTER_SPLIT_BYTES (4ULL << 20) /* tensors this large are cut across shards */
#define EMAD_CLUSTER_MAX_SHARDS 1024
#define EMAD_CLUSTER_MAX_REPLICAS 16
#define EMAD_CLUSTER_MAX_URL_BYTES 255
#define EMAD_CLUSTER_MAX_MAP_BYTES (1u << 20) /* a shard map file or string */

/* One piece of a placement: elements [offset, offset + count) of tensor `tensor` on `shard`. */
typedef struct emad_piece {
    size_t tensor;  /* index into the tensor list given to the plan */
    uint32_t shard; /* 0..S-1 */
    int whole;      /* 1: the tensor goes whole to the shard (offset 0, count = numel) */
    uint64_t offset;
    uint64_t count;
} emad_piece;

/* The state of one replica, from emad_cluster_status(). */
typedef struct emad_replica_status {
    uint32_t shard;
    uint32_t replica; /* position in the map's shard line, 0..R-1 */
    char url[EMAD_CLUSTER_MAX_URL_BYTES + 1];
    int reachable;  /* answered hello with this map's epoch and shard */
    int error;      /* 0, or the code of the failure reaching or asking it */
    uint64_t epoch; /* the daemon's epoch (0 if unreachable or not in cluster mode) */
    int has_model;  /* the model exists there (model given) */
    uint64_t step;  /* the model's committed step there */
    uint64_t lag;   /* highest step among the shard's replicas minus step */
    int resyncing;  /* refusing reads until it has copied its state from a peer */
} emad_replica_status;

/*
 * Connect to a cluster: map is a shard-map file path or inline text (text
 * is recognized by a newline, a ';' or a leading "epoch"/"shard"/"ack"/"#").
 * Every replica is contacted once; a replica that does not answer is not
 * an error as long as `ack` replicas of every shard answered (it is tried
 * again on each later call). Map errors are EMAD_EINVAL with the line in
 * emad_last_error() (of the returned client when *out is set, else of
 * nothing: use emad_cluster_check_map() for the text). On success *out
 * owns a client to release with emad_close().
 */
EMAD_EXTERN int emad_connect_cluster(emad_client **out, const char *map, const emad_options *opts);

/*
 * Check a shard map (path or inline text, as above). Returns 0, or
 * EMAD_EINVAL / EMAD_EIO with a message naming the line in msg[0..size).
 */
EMAD_EXTERN int emad_cluster_check_map(const char *map, char *msg, size_t size);

/*
 * The shape of a cluster client's map: any pointer may be NULL. Returns
 * EMAD_EINVAL if c is not a cluster client.
 */
EMAD_EXTERN int emad_cluster_info(const emad_client *c, uint32_t *shards, uint32_t *replicas,
                                  uint64_t *epoch, uint32_t *ack);

/*
 * Status of every replica (S x R entries, shard-major) and, if model is not
 * NULL, of the model on it. Unreachable replicas are reported, not an
 * error. *out is malloc'd: free with emad_cluster_status_free().
 */
EMAD_EXTERN int emad_cluster_status(emad_client *c, const char *model, emad_replica_status **out,
                                    size_t *n);
EMAD_EXTERN void emad_cluster_status_free(emad_replica_status *s, size_t n);

/*
 * The placement of a tensor list on the client's shards (see
 * emad_cluster_plan_shards()).
 */
EMAD_EXTERN int emad_cluster_plan(emad_client *c, const emad_tensor *tensors, size_t n,
                                  emad_piece **out, size_t *npieces);

/*
 * The placement of a tensor list on `shards` shards, a pure function of
 * its arguments (docs/PROTOCOL.md gives the rule): pieces in the order of
 * the tensors, the pieces of one tensor by offset. Only name, dtype, ndim
 * and shape are read. *out is malloc'd (free with free()).
 */
EMAD_EXTERN int emad_cluster_plan_shards(uint32_t shards, const emad_tensor *tensors, size_t n,
                                         emad_piece **out, size_t *npieces);

/*
 * Bring behind replicas of model (NULL: every model on any replica) up to
 * date: in every shard, a replica whose step is lower than the highest, that
 * lacks the model, or that reports it is resyncing gets the complete state
 * of the model (shadows, buffers, steps, configuration) of the
 * most advanced reachable replica. *copied (may be NULL) gets the number of
 * replicas brought up to date. Pushes also do this for the replicas that
 * refuse a step they cannot apply exactly.
 */
EMAD_EXTERN int emad_cluster_resync(emad_client *c, const char *model, size_t *copied);

/*
 * Copy model from `from` (a cluster client or a single daemon's client)
 * into the cluster of `to` (a cluster client), placed by to's map: the
 * configuration, every decay's shadows (read at one step, in the shadow
 * dtype) and every tensor's step, so that `to` holds the same EMA bit for
 * bit and goes on from the same step. The model is replaced on every
 * replica of `to`. For resharding (a new map with a higher epoch, new
 * daemons) and for moving a single daemon's model into a cluster. *step
 * (may be NULL) gets the step copied. Errors are on `to`.
 */
EMAD_EXTERN int emad_cluster_copy(emad_client *from, emad_client *to, const char *model,
                                  uint64_t *step);

/*
 * Replicas skipped by the last call of a cluster client although it
 * succeeded (a replica down, with `ack` still met): one line per replica
 * "shard S replica R URL: message", or "" if none. Valid until the next call.
 */
EMAD_EXTERN const char *emad_cluster_warnings(const emad_client *c);

#ifdef __cplusplus
}
#endif
#endif /* EMAD_H */

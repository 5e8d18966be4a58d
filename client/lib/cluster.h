/*
 * cluster.h - the inside of libemad's cluster client, shared by its files:
 * - cluster.c: the map, one inner client per replica, their health, the
 *   parallel fan-out of jobs, warnings, status, plan, connect;
 * - cluster_ops.c: writes (create, configure, drop, snapshot, push, seed)
 *   sent to every replica and acknowledged by `ack` replicas of every shard;
 * - cluster_read.c: reads (pull, pull_into, list, describe, get_config,
 *   stats) from one replica per shard, reassembled, all at one step;
 * - cluster_sync.c: bringing a behind replica up to date from a peer.
 * An inner client is an ordinary client with `routed` set: its requests
 * carry the map's epoch and its shard. A cluster client is not
 * thread-safe; during a fan-out each thread uses only its own replica.
 */
#ifndef EMAD_CLUSTER_H
#define EMAD_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "client.h"
#include "common/shardmap.h"

/* A replica that failed is tried again after this long (milliseconds). */
#define CLUSTER_RETRY_MS 2000

/* Attempts of a cluster pull to find one step on every shard. */
#define CLUSTER_PULL_ATTEMPTS 8

/* One replica of one shard. */
typedef struct replica {
    emad_client *c; /* inner client (routed) */
    uint32_t shard, index;
    int up;           /* answered hello, no transport failure since */
    int behind;       /* may have missed writes: resynced before it is used again */
    int64_t retry_at; /* a down replica is tried again from then on (now_ms) */
} replica;

struct cluster {
    shardmap *map;
    emad_options opts;
    replica *reps;  /* shards * replicas, shard-major */
    uint64_t reads; /* reads begun, to spread them over the replicas */
    char warn[4096];
    size_t warn_len;
};

/* A piece of work on one replica, run in parallel with the others of a fan-out. */
typedef struct cl_job {
    replica *r;
    int (*run)(struct cl_job *j); /* runs on its own thread; returns a code */
    const void *arg;
    void *out;
    int rc;
    char err[512]; /* the replica's last error when rc != 0 */
} cl_job;

/* Replica k of shard s. */
replica *cl_rep(struct cluster *cl, uint32_t s, uint32_t k);

/* Transport failure (the replica is unreachable or misbehaving), rather than a daemon's answer? */
int cl_is_transport(int rc);

/*
 * Make r usable: say hello if it is down and its retry time has come.
 * 0, or a code (EMAD_ECONNECT while it waits for its retry time).
 */
int cl_ready(struct cluster *cl, replica *r);

/*
 * Record a failure of r (rc, what) as a warning; a transport failure marks
 * it down, and of a write (write set; with peers to copy from) behind.
 */
void cl_failed(struct cluster *cl, replica *r, int rc, int write, const char *what,
               const char *msg);

/* Append a line to the warnings of the current call. */
__attribute__((format(printf, 2, 3))) void cl_warn(struct cluster *cl, const char *fmt, ...);

/* Run jobs[0..n) in parallel (one thread each; inline when n == 1); each gets rc and err. */
void cl_run(cl_job *jobs, size_t n);

/*
 * Check the outcome of a fan-out over every replica of every shard: each
 * shard needs `ack` successes. A daemon's error (not a transport failure)
 * is returned as the call's error; transport failures are warnings while
 * ack is met. Marks failed replicas. Returns 0 or the code, with c's error.
 */
int cl_acked(emad_client *c, cl_job *jobs, size_t n, const char *what);

/* One chunk of an install message: bytes [off, off + len) of tensor index. */
typedef struct inst_item {
    size_t index;
    uint64_t off, len;
} inst_item;

/* An install request (cluster_sync.c): anew/end/accept, or data of one shadow. */
typedef struct inst_req {
    const char *model;
    int what; /* 0 data, 1 anew, 2 end, 3 accept */
    const emad_model_config *cfg;
    uint64_t step;
    uint32_t shadow;
    const emad_tensor *t; /* the tensors, their data in the shadow dtype */
    const int *dtypes;    /* each tensor's own dtype */
    const inst_item *items;
    size_t n;
} inst_req;

/* Send one install request q to c. */
int install_call(emad_client *c, const inst_req *q);

/* Send shadow q->shadow of t[0..n) (q->dtypes set) to c in messages within its limit. */
int install_shadow(emad_client *c, inst_req *q, const emad_tensor *t, size_t n);

/* A model's step on r and whether r resyncs it; *has 0 if r lacks the model. */
int cl_model_state(replica *r, const char *model, int *has, uint64_t *step, int *resyncing);

/*
 * Make every reachable replica of every shard that is behind its shard's
 * most advanced one for model (NULL: every model) equal to it; *copied
 * (may be NULL) counts the replicas brought up to date.
 */
int cl_resync(emad_client *c, const char *model, size_t *copied);

/*
 * Run fn on one replica of every shard s with want[s] (NULL: all), in
 * parallel; outs[s] is given to fn as j->out. Replicas in sync are tried in
 * turn, then those marked behind. 0, or the error of a shard no replica
 * could serve (cluster_read.c).
 */
int cl_read_each(emad_client *c, int (*fn)(cl_job *), const void *arg, void **outs,
                 const char *want);

/* Arguments of the pulls of one cluster read, one job per shard (cl_run_pull). */
typedef struct pull_args {
    const char *model;
    const emad_pull_options *opts;
    const char *shard_step; /* per shard: pull at `step` (NULL: none) */
    uint64_t step;
    int into; /* j->out is a shard_reads (pull_into), else an emad_model ** (whole shard) */
} pull_args;

/* What a shard is asked for by a pull_into: stored names and where their data goes. */
typedef struct shard_reads {
    emad_tensor *t;
    size_t n;
    uint64_t step;
} shard_reads;

/* Job: pull a shard (at the step, if asked). */
int cl_run_pull(cl_job *j);

/* One stored tensor of a shard, by its original name and first element (cluster_read.c). */
typedef struct part {
    emad_tensor *t;  /* in a shard's model or description */
    uint32_t shard;  /* whose */
    size_t name_len; /* the original name is t->name[0..name_len) */
    int piece;       /* a piece of a cut tensor */
    uint64_t offset; /* its first element */
    uint32_t ndim;   /* the whole tensor's shape */
    uint64_t shape[EMAD_MAX_NDIM];
} part;

/* Collect per-shard tensor arrays ts[s][0..ns[s]) into parts sorted by original name, offset. */
int cl_collect(emad_client *c, emad_tensor **ts, const size_t *ns, uint32_t S, part **out,
               size_t *np);

/* Elements of a shape. */
uint64_t cl_numel(uint32_t ndim, const uint64_t *shape);

/* A shard's description (cl_run_describe: its job, j->arg the model, j->out a desc). */
typedef struct desc {
    emad_model_info info;
    emad_tensor *t;
    size_t n;
} desc;
int cl_run_describe(cl_job *j);

/*
 * A pull that reads each shard's tensors straight into their final
 * buffers: the caller's (user[0..n_names), pull_into) or new ones of *out
 * (names NULL: every tensor). The shards are described first, then read
 * with one pull_into each, at one step (cluster_pull.c). Not for
 * EMAD_PULL_SHADOW, whose dtypes a description does not give.
 */
int cl_pull_direct(emad_client *c, const char *model, const char *const *names, size_t n_names,
                   const emad_pull_options *opts, emad_tensor *user, emad_model **out,
                   uint64_t *step);

/* Bring replica dst of its shard up to date for model (NULL: every model) from a healthy peer. */
int cl_sync_replica(emad_client *c, replica *dst, const char *model);

/* Resync every up replica marked behind (for model, or every model); failures are warnings. */
void cl_sync_behind(emad_client *c, const char *model);

#endif

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

/* Record a failure of r (rc, what) as a warning; a transport failure marks it down and behind. */
void cl_failed(struct cluster *cl, replica *r, int rc, const char *what, const char *msg);

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

/* A model's step on r and whether r resyncs it; *has 0 if r lacks the model. */
int cl_model_state(replica *r, const char *model, int *has, uint64_t *step, int *resyncing);

/*
 * Make every reachable replica of every shard that is behind its shard's
 * most advanced one for model (NULL: every model) equal to it; *copied
 * (may be NULL) counts the replicas brought up to date.
 */
int cl_resync(emad_client *c, const char *model, size_t *copied);

/* Bring replica dst of its shard up to date for model (NULL: every model) from a healthy peer. */
int cl_sync_replica(emad_client *c, replica *dst, const char *model);

/* Resync every up replica marked behind (for model, or every model); failures are warnings. */
void cl_sync_behind(emad_client *c, const char *model);

#endif

/*
 * cluster.c - libemad's cluster client (include/emad.h, "Clusters"): the
 * shard map, one inner client per replica and its health, the parallel
 * fan-out of work to replicas, warnings, status and the placement. The
 * calls themselves are routed in cluster_ops.c (writes) and cluster_read.c
 * (reads); see cluster.h.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "common/placement.h"

replica *
cl_rep(struct cluster *cl, uint32_t s, uint32_t k)
{
    return &cl->reps[(size_t)s * cl->map->replicas + k];
}

int
cl_is_transport(int rc)
{
    return rc == EMAD_ETIMEDOUT || rc == EMAD_ECONNECT || rc == EMAD_EPROTO;
}

void
cluster_call_begin(struct cluster *cl)
{
    cl->warn_len = 0;
    cl->warn[0] = '\0';
}

/* Append a line to the warnings of the current call. */
void
cl_warn(struct cluster *cl, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (cl->warn_len >= sizeof(cl->warn) - 1)
        return;
    va_start(ap, fmt);
    n = vsnprintf(cl->warn + cl->warn_len, sizeof(cl->warn) - cl->warn_len, fmt, ap);
    va_end(ap);
    if (n > 0)
        cl->warn_len += (size_t)n;
    if (cl->warn_len < sizeof(cl->warn) - 1)
        cl->warn[cl->warn_len++] = '\n';
    if (cl->warn_len >= sizeof(cl->warn))
        cl->warn_len = sizeof(cl->warn) - 1;
    cl->warn[cl->warn_len] = '\0';
}

/* Make r usable: hello when it is down and its retry time has come. */
int
cl_ready(struct cluster *cl, replica *r)
{
    int rc;

    if (r->up)
        return 0;
    if (now_ms() < r->retry_at)
        return fail(r->c, EMAD_ECONNECT, "replica down, tried again after %d ms", CLUSTER_RETRY_MS);
    forget_inflight(r->c);
    if ((rc = client_hello(r->c)) != 0) {
        r->retry_at = now_ms() + CLUSTER_RETRY_MS;
        return rc;
    }
    r->up = 1;
    (void)cl;
    return 0;
}

/* Record a failure of r. */
void
cl_failed(struct cluster *cl, replica *r, int rc, int write, const char *what, const char *msg)
{
    if (cl_is_transport(rc)) {
        if (r->up) /* a new failure: a replica already down keeps its retry time */
            r->retry_at = now_ms() + CLUSTER_RETRY_MS;
        r->up = 0;
        if (write && cl->map->replicas > 1)
            r->behind = 1;
    }
    cl_warn(cl, "shard %u replica %u %s: %s: %s", r->shard, r->index, r->c->url, what,
            msg != NULL && msg[0] != '\0' ? msg : emad_strerror(rc));
}

/* Thread body of a job. */
static void *
job_main(void *arg)
{
    cl_job *j = arg;

    j->rc = j->run(j);
    if (j->rc != 0)
        snprintf(j->err, sizeof(j->err), "%s", emad_last_error(j->r->c));
    return NULL;
}

/* Run jobs in parallel, one thread each (a job that cannot get a thread runs inline). */
void
cl_run(cl_job *jobs, size_t n)
{
    pthread_t *th = n > 1 ? calloc(n, sizeof(*th)) : NULL;
    char *started = n > 1 ? calloc(n, 1) : NULL;

    for (size_t i = 0; i < n; i++) {
        if (th != NULL && started != NULL && i + 1 < n &&
            pthread_create(&th[i], NULL, job_main, &jobs[i]) == 0) {
            started[i] = 1;
            continue;
        }
        job_main(&jobs[i]);
    }
    for (size_t i = 0; i < n; i++)
        if (started != NULL && started[i])
            pthread_join(th[i], NULL);
    free(th);
    free(started);
}

/* Check that every shard got `ack` successes. */
int
cl_acked(emad_client *c, cl_job *jobs, size_t n, const char *what)
{
    struct cluster *cl = c->cl;
    uint32_t S = cl->map->shards;
    uint32_t *ok = calloc(S, sizeof(*ok));
    int rc = 0, first_transport = 0;
    const cl_job *ft = NULL;

    if (ok == NULL)
        return fail(c, EMAD_ENOMEM, "%s: out of memory", what);
    for (size_t i = 0; i < n; i++)
        ok[jobs[i].r->shard] += jobs[i].rc == 0;
    for (size_t i = 0; i < n; i++) {
        cl_job *j = &jobs[i];

        if (j->rc == 0)
            continue;
        /* A replica that lacks the model or is resyncing while a peer applied the write: it
         * missed writes, and is brought up to date from that peer. */
        if ((j->rc == EMAD_EMOVED || j->rc == EMAD_ENOMODEL) && ok[j->r->shard] > 0) {
            j->r->behind = 1;
            cl_warn(cl, "shard %u replica %u %s: %s: %s (resynced from a peer)", j->r->shard,
                    j->r->index, j->r->c->url, what, j->err);
            continue;
        }
        if (!cl_is_transport(j->rc)) {
            if (rc == 0)
                rc = fail(c, j->rc, "%s", j->err);
            continue;
        }
        cl_failed(cl, j->r, j->rc, 1, what, j->err);
        if (ft == NULL) {
            ft = j;
            first_transport = j->rc;
        }
    }
    for (uint32_t s = 0; rc == 0 && s < S; s++)
        if (ok[s] < cl->map->ack)
            rc = fail(c, first_transport != 0 ? first_transport : EMAD_ECONNECT,
                      "%s: shard %u: %u of %u replicas applied it, %u needed%s%s", what, s, ok[s],
                      cl->map->replicas, cl->map->ack, ft != NULL ? "; " : "",
                      ft != NULL ? ft->err : "");
    free(ok);
    return rc;
}

/* Free a cluster and its inner clients; NULL accepted. */
void
cluster_free(struct cluster *cl)
{
    if (cl == NULL)
        return;
    if (cl->reps != NULL)
        for (size_t i = 0; i < (size_t)cl->map->shards * cl->map->replicas; i++)
            emad_close(cl->reps[i].c);
    free(cl->reps);
    shardmap_destroy(cl->map);
    free(cl);
}

/* Job: hello on a replica. */
static int
run_hello(cl_job *j)
{
    return client_hello(j->r->c);
}

/* Connect to a cluster from a map (path or text). */
EMAD_EXTERN int
emad_connect_cluster(emad_client **out, const char *map, const emad_options *opts)
{
    emad_options o;

    if (out == NULL || map == NULL)
        return EMAD_EINVAL;
    *out = NULL;
    if (opts != NULL)
        o = *opts;
    else
        emad_options_init(&o);
    return cluster_connect_url(out, map, &o);
}

/* Connect to the cluster of a shard map (opts given). */
int
cluster_connect_url(emad_client **out, const char *map, const emad_options *opts)
{
    struct cluster *cl;
    emad_client *c;
    cl_job *jobs = NULL;
    char *cause = NULL;
    size_t n;
    int rc;

    *out = NULL;
    if (opts->timeout_ms <= 0 || opts->connect_timeout_ms <= 0 ||
        opts->chunk_bytes < PROTO_MIN_MAX_MESSAGE ||
        opts->max_reply_bytes < PROTO_MIN_MAX_MESSAGE ||
        opts->max_reply_bytes > PROTO_MAX_MAX_MESSAGE)
        return EMAD_EINVAL;
    if ((c = calloc(1, sizeof(*c))) == NULL || (cl = calloc(1, sizeof(*cl))) == NULL) {
        free(c);
        return EMAD_ENOMEM;
    }
    c->sock = -1;
    for (size_t k = 0; k < PIPELINE_MAX; k++)
        c->socks[k] = -1;
    c->opts = *opts;
    c->cl = cl;
    cl->opts = *opts;
    if ((rc = shardmap_load(map, &cl->map, &cause)) != 0) {
        free(cause); /* emad_cluster_check_map() tells why */
        emad_close(c);
        return rc == EMAD_EIO ? EMAD_EIO : EMAD_EINVAL;
    }
    if ((c->url = strdup(map)) == NULL) {
        emad_close(c);
        return EMAD_ENOMEM;
    }
    n = (size_t)cl->map->shards * cl->map->replicas;
    if ((cl->reps = calloc(n, sizeof(*cl->reps))) == NULL ||
        (jobs = calloc(n, sizeof(*jobs))) == NULL) {
        emad_close(c);
        return EMAD_ENOMEM;
    }
    for (uint32_t s = 0; s < cl->map->shards; s++)
        for (uint32_t k = 0; k < cl->map->replicas; k++) {
            replica *r = cl_rep(cl, s, k);

            r->shard = s;
            r->index = k;
            if ((rc = client_open(&r->c, shardmap_url(cl->map, s, k), opts, 0)) != 0) {
                free(jobs);
                emad_close(c);
                return rc;
            }
            r->c->routed = 1;
            r->c->route_epoch = cl->map->epoch;
            r->c->route_shard = s;
            jobs[(size_t)s * cl->map->replicas + k] = (cl_job){.r = r, .run = run_hello};
        }
    cl_run(jobs, n);
    c->server_max = UINT64_MAX;
    for (size_t i = 0; i < n; i++) {
        replica *r = jobs[i].r;

        if (jobs[i].rc == 0) {
            r->up = 1;
            if (r->c->server_max < c->server_max)
                c->server_max = r->c->server_max;
        } else {
            /* It may have missed writes of other clients while unreachable: a write of this
             * client resyncs it first (reads use it only when no other replica answers). */
            r->behind = cl->map->replicas > 1;
            r->retry_at = now_ms() + CLUSTER_RETRY_MS;
        }
    }
    /* Reads need one replica of each shard; writes check `ack` as they go. */
    rc = 0;
    for (uint32_t s = 0; s < cl->map->shards && rc == 0; s++) {
        uint32_t up = 0;
        const cl_job *last = NULL;

        for (uint32_t k = 0; k < cl->map->replicas; k++) {
            const cl_job *j = &jobs[(size_t)s * cl->map->replicas + k];

            up += j->rc == 0;
            if (j->rc != 0)
                last = j;
        }
        if (up == 0)
            rc = fail(c, last->rc, "connect: no replica of shard %u answered: %s", s, last->err);
    }
    free(jobs);
    if (rc != 0) {
        emad_close(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* The shape of a cluster client's map. */
EMAD_EXTERN int
emad_cluster_info(const emad_client *c, uint32_t *shards, uint32_t *replicas, uint64_t *epoch,
                  uint32_t *ack)
{
    if (c == NULL || c->cl == NULL)
        return EMAD_EINVAL;
    if (shards != NULL)
        *shards = c->cl->map->shards;
    if (replicas != NULL)
        *replicas = c->cl->map->replicas;
    if (epoch != NULL)
        *epoch = c->cl->map->epoch;
    if (ack != NULL)
        *ack = c->cl->map->ack;
    return 0;
}

/* Warnings of the last call. */
EMAD_EXTERN const char *
emad_cluster_warnings(const emad_client *c)
{
    return c != NULL && c->cl != NULL ? c->cl->warn : "";
}

/* The placement of a tensor list on the client's shards. */
EMAD_EXTERN int
emad_cluster_plan(emad_client *c, const emad_tensor *tensors, size_t n, emad_piece **out,
                  size_t *npieces)
{
    if (c == NULL || c->cl == NULL || out == NULL || npieces == NULL)
        return EMAD_EINVAL;
    return placement_plan(c->cl->map->shards, tensors, n, out, npieces);
}

/* The placement of a tensor list on `shards` shards. */
EMAD_EXTERN int
emad_cluster_plan_shards(uint32_t shards, const emad_tensor *tensors, size_t n, emad_piece **out,
                         size_t *npieces)
{
    if (out == NULL || npieces == NULL)
        return EMAD_EINVAL;
    return placement_plan(shards, tensors, n, out, npieces);
}

/* Check a shard map (path or text); the cause goes into msg. */
EMAD_EXTERN int
emad_cluster_check_map(const char *map, char *msg, size_t size)
{
    shardmap *m = NULL;
    char *cause = NULL;
    int rc = shardmap_load(map, &m, &cause);

    if (msg != NULL && size > 0)
        snprintf(msg, size, "%s", rc == 0 ? "" : cause != NULL ? cause : emad_strerror(rc));
    free(cause);
    shardmap_destroy(m);
    return rc;
}

/* Pack a hello request. */
static void
build_hello_req(msgpack_packer *pk, const void *ctx)
{
    (void)ctx;
    pk_head(pk, PROTO_OP_HELLO, 0);
}

/* Pack a list request for one model's summary. */
static void
build_list_one(msgpack_packer *pk, const void *ctx)
{
    pk_head(pk, PROTO_OP_LIST, 2);
    pk_kv_str(pk, PROTO_KEY_MODEL, ctx);
    proto_pack_kv_u64(pk, PROTO_KEY_LIMIT, 1);
}

/* A model's step on r and whether r resyncs it; *has 0 if r lacks the model. */
int
cl_model_state(replica *r, const char *model, int *has, uint64_t *step, int *resyncing)
{
    const msgpack_object *m, *o;
    reply rep;
    int rc;

    *has = *resyncing = 0;
    *step = 0;
    rc = call(r->c, PROTO_OP_LIST, build_list_one, model, r->c->opts.timeout_ms, &rep);
    if (rc == EMAD_ENOMODEL)
        return 0;
    if (rc != 0)
        return rc;
    *has = 1;
    if ((m = proto_map_get(rep.root, PROTO_KEY_MODEL)) != NULL) {
        if ((o = proto_map_get(m, PROTO_KEY_STEP)) != NULL &&
            o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            *step = o->via.u64;
        if ((o = proto_map_get(m, PROTO_KEY_RESYNCING)) != NULL &&
            o->type == MSGPACK_OBJECT_BOOLEAN)
            *resyncing = o->via.boolean;
    }
    reply_free(&rep);
    return 0;
}

/* Job: a replica's status (hello, then the model's step and whether it resyncs). */
static int
run_status(cl_job *j)
{
    emad_replica_status *st = j->out;
    emad_client *c = j->r->c;
    const msgpack_object *o;
    uint64_t v;
    reply r;
    int rc;

    if ((rc = call(c, PROTO_OP_HELLO, build_hello_req, NULL, c->opts.connect_timeout_ms, &r)) != 0)
        return rc;
    if ((o = proto_map_get(r.root, PROTO_KEY_EPOCH)) != NULL &&
        o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        st->epoch = o->via.u64;
    if ((o = proto_map_get(r.root, PROTO_KEY_SHARD)) != NULL &&
        o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        v = o->via.u64;
    else
        v = UINT64_MAX;
    reply_free(&r);
    st->reachable = st->epoch == c->route_epoch && v == c->route_shard;
    if (!st->reachable)
        return fail(c, EMAD_EMOVED, "the daemon is shard %llu at epoch %llu", (unsigned long long)v,
                    (unsigned long long)st->epoch);
    if (j->arg == NULL)
        return 0;
    return cl_model_state(j->r, j->arg, &st->has_model, &st->step, &st->resyncing);
}

/* Status of every replica. */
EMAD_EXTERN int
emad_cluster_status(emad_client *c, const char *model, emad_replica_status **out, size_t *n)
{
    struct cluster *cl;
    emad_replica_status *st;
    cl_job *jobs;
    size_t count;
    int rc;

    if (c == NULL || c->cl == NULL || out == NULL || n == NULL)
        return EMAD_EINVAL;
    call_begin(c);
    cl = c->cl;
    *out = NULL;
    *n = 0;
    if (model != NULL && (rc = check_model(c, model)) != 0)
        return call_end(c, rc);
    count = (size_t)cl->map->shards * cl->map->replicas;
    st = calloc(count, sizeof(*st));
    jobs = calloc(count, sizeof(*jobs));
    if (st == NULL || jobs == NULL) {
        free(st);
        free(jobs);
        return call_end(c, fail(c, EMAD_ENOMEM, "cluster status: out of memory"));
    }
    for (size_t i = 0; i < count; i++) {
        replica *r = &cl->reps[i];

        st[i].shard = r->shard;
        st[i].replica = r->index;
        snprintf(st[i].url, sizeof(st[i].url), "%s", r->c->url);
        forget_inflight(r->c);
        jobs[i] = (cl_job){.r = r, .run = run_status, .arg = model, .out = &st[i]};
    }
    cl_run(jobs, count);
    for (uint32_t s = 0; s < cl->map->shards; s++) {
        uint64_t top = 0;

        for (uint32_t k = 0; k < cl->map->replicas; k++) {
            size_t i = (size_t)s * cl->map->replicas + k;

            st[i].error = jobs[i].rc;
            if (jobs[i].rc != 0)
                st[i].reachable = 0;
            if (st[i].reachable && st[i].has_model && st[i].step > top)
                top = st[i].step;
        }
        for (uint32_t k = 0; k < cl->map->replicas; k++) {
            size_t i = (size_t)s * cl->map->replicas + k;

            if (st[i].reachable && st[i].has_model)
                st[i].lag = top - st[i].step;
        }
    }
    free(jobs);
    *out = st;
    *n = count;
    return call_end(c, 0);
}

/* Free a status array. */
EMAD_EXTERN void
emad_cluster_status_free(emad_replica_status *s, size_t n)
{
    (void)n;
    free(s);
}

/*
 * cluster_ops.c - the writes of a cluster client (see cluster.h): create,
 * configure, drop and snapshot go to every replica; a push or seed is cut
 * by the placement into one tensor list per shard (pieces of large tensors
 * point into the caller's buffers: the data is copied once, into each
 * replica's messages) and sent to every replica of every shard in
 * parallel, each replica's transfer pipelined as for a single daemon.
 * Every shard gets every step, with or without tensors, so that all shards
 * move from one step to the next together. A write succeeds when `ack`
 * replicas of every shard applied it; replicas that missed it are marked
 * behind and brought up to date from a peer (cluster_sync.c).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "common/placement.h"

/* Arguments of an admin write on every replica. */
typedef struct admin_req {
    int op; /* PROTO_OP_CREATE, _CONFIGURE, _DROP, _SNAPSHOT */
    const char *model;
    const emad_model_config *cfg;
    int exist_ok;
} admin_req;

/* Job: an admin write on one replica (out: the snapshot's step). */
static int
run_admin(cl_job *j)
{
    const admin_req *q = j->arg;
    emad_client *c = j->r->c;
    int rc;

    if ((rc = cl_ready(NULL, j->r)) != 0)
        return rc;
    switch (q->op) {
    case PROTO_OP_CREATE:
        return emad_create_config(c, q->model, q->cfg, q->exist_ok);
    case PROTO_OP_CONFIGURE:
        return emad_configure(c, q->model, q->cfg);
    case PROTO_OP_DROP:
        return emad_drop(c, q->model);
    default:
        return emad_snapshot(c, q->model, j->out);
    }
}

/* An admin write on every replica, acknowledged by `ack` of each shard. */
static int
admin_all(emad_client *c, const admin_req *q, uint64_t *min_step)
{
    struct cluster *cl = c->cl;
    size_t n = (size_t)cl->map->shards * cl->map->replicas;
    cl_job *jobs = calloc(n, sizeof(*jobs));
    uint64_t *steps = calloc(n, sizeof(*steps));
    int rc;

    if (jobs == NULL || steps == NULL) {
        free(jobs);
        free(steps);
        return fail(c, EMAD_ENOMEM, "%s: out of memory", proto_op_name(q->op));
    }
    cl_sync_behind(c, NULL);
    for (size_t i = 0; i < n; i++)
        jobs[i] = (cl_job){.r = &cl->reps[i], .run = run_admin, .arg = q, .out = &steps[i]};
    cl_run(jobs, n);
    rc = cl_acked(c, jobs, n, proto_op_name(q->op));
    if (rc == 0 && min_step != NULL) {
        *min_step = UINT64_MAX;
        for (size_t i = 0; i < n; i++)
            if (jobs[i].rc == 0 && steps[i] < *min_step)
                *min_step = steps[i];
    }
    free(jobs);
    free(steps);
    if (rc == 0 && q->op != PROTO_OP_SNAPSHOT)
        cl_sync_behind(c, q->model);
    return rc;
}

int
cluster_create(emad_client *c, const char *model, const emad_model_config *cfg, int exist_ok)
{
    admin_req q = {PROTO_OP_CREATE, model, cfg, exist_ok};

    return admin_all(c, &q, NULL);
}

int
cluster_configure(emad_client *c, const char *model, const emad_model_config *cfg)
{
    admin_req q = {PROTO_OP_CONFIGURE, model, cfg, 0};

    return admin_all(c, &q, NULL);
}

int
cluster_drop(emad_client *c, const char *model)
{
    admin_req q = {PROTO_OP_DROP, model, NULL, 0};

    return admin_all(c, &q, NULL);
}

int
cluster_snapshot(emad_client *c, const char *model, uint64_t *step)
{
    admin_req q = {PROTO_OP_SNAPSHOT, model, NULL, 0};
    uint64_t s = 0;
    int rc = admin_all(c, &q, &s);

    if (rc == 0 && step != NULL)
        *step = s;
    return rc;
}

/* The tensors of one push for one shard. */
typedef struct shard_part {
    emad_tensor *t;
    int *as; /* seed: as_dtypes, or NULL */
    size_t n;
} shard_part;

/* A push cut by the placement: parts[shard], and the storage of the piece names. */
typedef struct routed {
    shard_part *parts;
    char *names;
} routed;

/* Free a routed push. */
static void
routed_free(routed *rt, uint32_t shards)
{
    if (rt->parts != NULL)
        for (uint32_t s = 0; s < shards; s++) {
            free(rt->parts[s].t);
            free(rt->parts[s].as);
        }
    free(rt->parts);
    free(rt->names);
}

/*
 * The piece p of t (p not whole) as a tensor of its shard, into *o: the
 * elements of t's slice (or all of t) that fall in the piece, pointing into
 * t's data; 0 if none do. name receives the stored piece name.
 */
static int
piece_of(const emad_tensor *t, const emad_piece *p, char *name, emad_tensor *o)
{
    size_t es = emad_dtype_size(t->dtype);
    uint64_t lo = p->offset, hi = p->offset + p->count, first = 0;

    if (t->count != 0) { /* a writer's slice [offset, offset + count) */
        first = t->offset;
        lo = lo > t->offset ? lo : t->offset;
        hi = hi < t->offset + t->count ? hi : t->offset + t->count;
        if (lo >= hi)
            return 0;
    }
    memset(o, 0, sizeof(*o));
    o->name = name;
    o->kind = t->kind;
    o->dtype = t->dtype;
    o->ndim = 1;
    o->shape[0] = p->count;
    o->data = (char *)t->data + (lo - first) * es;
    o->nbytes = (hi - lo) * es;
    if (lo != p->offset || hi != p->offset + p->count) {
        o->offset = lo - p->offset;
        o->count = hi - lo;
    }
    return 1;
}

/* Cut tensors[0..n) by the placement into rt->parts. */
static int
route(emad_client *c, const emad_tensor *tensors, const int *as_dtypes, size_t n, routed *rt)
{
    uint32_t S = c->cl->map->shards;
    emad_piece *pc = NULL;
    size_t np = 0, nsplit = 0, used = 0;
    int rc;

    memset(rt, 0, sizeof(*rt));
    for (size_t i = 0; i < n; i++) {
        if (tensors[i].name == NULL)
            return fail(c, EMAD_EINVAL, "push: tensor %zu has no name", i);
        if (strstr(tensors[i].name, PLACEMENT_PIECE_MARK) != NULL)
            return fail(c, EMAD_ENAME,
                        "tensor '%.200s': names holding '" PLACEMENT_PIECE_MARK
                        "' are reserved for the pieces of cut tensors in a cluster",
                        tensors[i].name);
    }
    if ((rc = placement_plan(S, tensors, n, &pc, &np)) != 0)
        return fail(c, rc, "push: a tensor has an invalid dtype or shape");
    for (size_t i = 0; i < np; i++)
        nsplit += !pc[i].whole;
    if ((rt->parts = calloc(S, sizeof(*rt->parts))) == NULL ||
        (nsplit > 0 && (rt->names = malloc(nsplit * (PLACEMENT_PIECE_NAME_MAX + 1))) == NULL))
        goto nomem;
    for (uint32_t s = 0; s < S; s++) {
        size_t k = 0;

        for (size_t i = 0; i < np; i++)
            k += pc[i].shard == s;
        if ((rt->parts[s].t = calloc(k ? k : 1, sizeof(emad_tensor))) == NULL ||
            (as_dtypes != NULL && (rt->parts[s].as = calloc(k ? k : 1, sizeof(int))) == NULL))
            goto nomem;
    }
    for (size_t i = 0; i < np; i++) {
        const emad_tensor *t = &tensors[pc[i].tensor];
        shard_part *sp = &rt->parts[pc[i].shard];
        emad_tensor *o = &sp->t[sp->n];

        if (pc[i].whole) {
            *o = *t;
        } else {
            char *name = rt->names + used * (PLACEMENT_PIECE_NAME_MAX + 1);

            used++;
            if (placement_piece_name(name, PLACEMENT_PIECE_NAME_MAX + 1, t->name, pc[i].offset,
                                     t->ndim, t->shape) < 0) {
                free(pc);
                routed_free(rt, S);
                return fail(c, EMAD_ENAME,
                            "tensor '%.200s': name too long for the name of its pieces in a "
                            "cluster",
                            t->name);
            }
            if (!piece_of(t, &pc[i], name, o))
                continue;
        }
        if (sp->as != NULL)
            sp->as[sp->n] = as_dtypes[pc[i].tensor];
        sp->n++;
    }
    free(pc);
    return 0;
nomem:
    free(pc);
    routed_free(rt, S);
    return fail(c, EMAD_ENOMEM, "push: out of memory");
}

/* Arguments of a push on one replica. */
typedef struct push_job {
    const char *model;
    uint64_t step;
    int has_writer, seed;
    uint32_t writer;
    const routed *rt;
} push_job;

/* Job: the shard's part of a push on one replica (out: its result). */
static int
run_push(cl_job *j)
{
    const push_job *q = j->arg;
    const shard_part *p = &q->rt->parts[j->r->shard];
    int rc;

    if ((rc = cl_ready(NULL, j->r)) != 0)
        return rc;
    if (q->seed && p->n > 0)
        return emad_seed(j->r->c, q->model, q->step, p->t, p->as, p->n, j->out);
    /* A shard with no part of a seed still moves to its step, with an empty push. */
    if (q->has_writer)
        return emad_push_as(j->r->c, q->model, q->step, q->writer, p->t, p->n, j->out);
    return emad_push(j->r->c, q->model, q->step, p->t, p->n, j->out);
}

/* Add the result of one shard's push to the cluster's. */
static void
add_result(emad_push_result *res, const emad_push_result *r, int first)
{
    res->applied += r->applied;
    res->stale += r->stale;
    res->skipped += r->skipped;
    res->ignored += r->ignored;
    res->messages += r->messages;
    res->pending |= r->pending;
    if (first || r->step < res->step)
        res->step = r->step;
}

int
cluster_push(emad_client *c, const char *model, uint64_t step, int has_writer, uint32_t writer,
             int seed, const emad_tensor *tensors, const int *as_dtypes, size_t n,
             emad_push_result *res)
{
    struct cluster *cl = c->cl;
    uint32_t S = cl->map->shards, R = cl->map->replicas;
    push_job q = {model, step, has_writer, seed, writer, NULL};
    emad_push_result local, *out;
    cl_job *jobs = NULL;
    routed rt;
    int rc;

    if (res == NULL)
        res = &local;
    memset(res, 0, sizeof(*res));
    if ((rc = check_model(c, model)) != 0)
        return rc;
    if (tensors == NULL && n > 0)
        return fail(c, EMAD_EINVAL, "push: no tensors");
    if ((rc = route(c, tensors, as_dtypes, n, &rt)) != 0)
        return rc;
    q.rt = &rt;
    out = calloc((size_t)S * R, sizeof(*out));
    jobs = calloc((size_t)S * R, sizeof(*jobs));
    if (out == NULL || jobs == NULL) {
        rc = fail(c, EMAD_ENOMEM, "push: out of memory");
        goto done;
    }
    cl_sync_behind(c, model);
    for (int attempt = 0; attempt < 2; attempt++) {
        for (size_t i = 0; i < (size_t)S * R; i++)
            jobs[i] = (cl_job){.r = &cl->reps[i], .run = run_push, .arg = &q, .out = &out[i]};
        cl_run(jobs, (size_t)S * R);
        rc = cl_acked(c, jobs, (size_t)S * R, seed ? PROTO_KEY_SEED : proto_op_name(PROTO_OP_PUSH));
        /* Every replica of a shard resyncing (all restarted from snapshots): the most
         * advanced keeps its state, the others copy it, and the push is sent again. */
        if (rc != EMAD_EMOVED || attempt > 0 || cl_resync(c, model, NULL) != 0)
            break;
        c->err[0] = '\0';
    }
    if (rc != 0)
        goto done;
    for (uint32_t s = 0; s < S; s++)
        for (uint32_t k = 0; k < R; k++)
            if (jobs[(size_t)s * R + k].rc == 0) {
                add_result(res, &out[(size_t)s * R + k], s == 0);
                break;
            }
    cl_sync_behind(c, model);
done:
    free(jobs);
    free(out);
    routed_free(&rt, S);
    return rc;
}

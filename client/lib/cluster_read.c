/*
 * cluster_read.c - the reads of a cluster client (see cluster.h): each
 * shard is read from one of its replicas (spread over them, never one
 * marked behind; the next replica when one fails), in parallel. A pull
 * takes every shard at its current step, then re-reads the shards that are
 * ahead at the lowest step (the daemons keep the previous version for
 * that), so every tensor comes from one committed step, or the call fails
 * with EMAD_ESPLIT. Pieces of cut tensors are put back together under
 * their original names and shapes; tensors come back sorted by name.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "common/placement.h"

/*
 * The replica of shard s to read at attempt k (0..R-1): the replicas in
 * sync in turn from `first`, then those marked behind (they may have missed
 * this client's writes: read only when no other replica answers).
 */
static replica *
read_order(struct cluster *cl, uint32_t s, uint32_t first, uint32_t k)
{
    uint32_t R = cl->map->replicas;

    for (int behind = 0; behind < 2; behind++)
        for (uint32_t i = 0; i < R; i++) {
            replica *r = cl_rep(cl, s, (first + i) % R);

            if (r->behind == behind && k-- == 0)
                return r;
        }
    return NULL;
}

/*
 * Run fn on one replica of every shard s with want[s] (NULL: all): outs[s]
 * (given to fn as j->out) gets each result. Tries the shard's replicas in
 * turn, starting at a rotating one. 0, or the error of a shard that no
 * replica could serve.
 */
int
cl_read_each(emad_client *c, int (*fn)(cl_job *), const void *arg, void **outs, const char *want)
{
    struct cluster *cl = c->cl;
    uint32_t S = cl->map->shards, R = cl->map->replicas;
    cl_job *jobs = calloc(S, sizeof(*jobs));
    char *done = calloc(S, 1);
    uint32_t start = (uint32_t)(cl->reads++ % R);
    int rc = 0;

    if (jobs == NULL || done == NULL) {
        free(jobs);
        free(done);
        return fail(c, EMAD_ENOMEM, "cluster read: out of memory");
    }
    for (uint32_t s = 0; s < S; s++) {
        done[s] = want != NULL && !want[s];
        jobs[s].rc = EMAD_ECONNECT;
        snprintf(jobs[s].err, sizeof(jobs[s].err), "no replica of shard %u answered", s);
    }
    for (uint32_t attempt = 0; attempt < R; attempt++) {
        cl_job *run = calloc(S, sizeof(*run));
        size_t n = 0;

        if (run == NULL) {
            rc = fail(c, EMAD_ENOMEM, "cluster read: out of memory");
            break;
        }
        for (uint32_t s = 0; s < S; s++) {
            replica *r = read_order(cl, s, start + s, attempt);

            if (done[s] || r == NULL)
                continue;
            run[n++] = (cl_job){.r = r, .run = fn, .arg = arg, .out = outs[s]};
        }
        cl_run(run, n);
        for (size_t i = 0; i < n; i++) {
            uint32_t s = run[i].r->shard;

            jobs[s] = run[i];
            if (run[i].rc == 0)
                done[s] = 1;
            else if (cl_is_transport(run[i].rc))
                cl_failed(cl, run[i].r, run[i].rc, 0, "reading", run[i].err);
        }
        free(run);
    }
    for (uint32_t s = 0; s < S && rc == 0; s++)
        if (!done[s])
            rc = fail(c, jobs[s].rc, "shard %u: %s", s, jobs[s].err);
    free(jobs);
    free(done);
    return rc;
}

/* Job: pull a shard (at the step, if asked): the whole of it, or its reads (cluster.h). */
int
cl_run_pull(cl_job *j)
{
    const pull_args *q = j->arg;
    emad_client *c = j->r->c;
    int rc;

    if ((rc = cl_ready(NULL, j->r)) != 0)
        return rc;
    c->has_pull_step = q->shard_step != NULL && q->shard_step[j->r->shard];
    c->pull_step = q->step;
    if (q->into) {
        shard_reads *sr = j->out;

        rc = emad_pull_into_ex(c, q->model, sr->t, sr->n, q->opts, &sr->step);
    } else {
        rc = emad_pull_ex(c, q->model, NULL, 0, q->opts, j->out);
    }
    c->has_pull_step = 0;
    return rc;
}

/* Free tensors[0..n): their names, their data and the array. */
static void
tensors_free_all(emad_tensor *tensors, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free((char *)tensors[i].name);
        free(tensors[i].data);
    }
    free(tensors);
}

/* Order parts by original name, then offset, for qsort. */
static int
cmp_parts(const void *a, const void *b)
{
    const part *x = a, *y = b;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int d = memcmp(x->t->name, y->t->name, n);

    if (d != 0)
        return d;
    if (x->name_len != y->name_len)
        return x->name_len < y->name_len ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Collect the tensors of per-shard arrays ts[s][0..ns[s]) into sorted parts. */
int
cl_collect(emad_client *c, emad_tensor **ts, const size_t *ns, uint32_t S, part **out, size_t *np)
{
    size_t n = 0, k = 0;
    part *p;

    for (uint32_t s = 0; s < S; s++)
        n += ns[s];
    if ((p = calloc(n ? n : 1, sizeof(*p))) == NULL)
        return fail(c, EMAD_ENOMEM, "cluster read: out of memory");
    for (uint32_t s = 0; s < S; s++)
        for (size_t i = 0; i < ns[s]; i++) {
            part *q = &p[k++];
            size_t len = strlen(ts[s][i].name);

            q->t = &ts[s][i];
            q->shard = s;
            q->name_len = len;
            q->piece = placement_parse_piece(q->t->name, len, &q->name_len, &q->offset, &q->ndim,
                                             q->shape);
            if (!q->piece)
                q->name_len = len;
        }
    qsort(p, n, sizeof(*p), cmp_parts);
    *out = p;
    *np = n;
    return 0;
}

/* Elements of a shape. */
uint64_t
cl_numel(uint32_t ndim, const uint64_t *shape)
{
    uint64_t n = 1;

    for (uint32_t d = 0; d < ndim; d++)
        n *= shape[d];
    return n;
}

/*
 * The pieces p[0..k) of one cut tensor as a whole tensor o: name, shape,
 * kind, dtype, step, nbytes; with data, the pieces' data copied into a new
 * buffer. Checks that the pieces cover the tensor exactly.
 */
static int
join_pieces(emad_client *c, const part *p, size_t k, int with_data, emad_tensor *o)
{
    uint64_t numel = cl_numel(p[0].ndim, p[0].shape), next = 0;
    size_t es = emad_dtype_size(p[0].t->dtype);

    memset(o, 0, sizeof(*o));
    if ((o->name = strndup(p[0].t->name, p[0].name_len)) == NULL)
        return fail(c, EMAD_ENOMEM, "cluster read: out of memory");
    o->kind = p[0].t->kind;
    o->dtype = p[0].t->dtype;
    o->ndim = p[0].ndim;
    memcpy(o->shape, p[0].shape, sizeof(o->shape));
    o->nbytes = numel * es;
    if (with_data && (o->data = malloc(o->nbytes ? o->nbytes : 1)) == NULL)
        return fail(c, EMAD_ENOMEM, "cluster read: out of memory for '%.200s'", o->name);
    for (size_t i = 0; i < k; i++) {
        uint64_t cnt = p[i].t->shape[0];

        if (p[i].offset != next || p[i].t->ndim != 1 || p[i].t->dtype != o->dtype ||
            cnt > numel - next || (with_data && p[i].t->nbytes != cnt * es))
            return fail(c, EMAD_EPROTO, "tensor '%.200s': its pieces on the shards do not fit",
                        o->name);
        if (with_data)
            memcpy((char *)o->data + next * es, p[i].t->data, cnt * es);
        next += cnt;
        if (p[i].t->step > o->step)
            o->step = p[i].t->step;
    }
    if (next != numel)
        return fail(c, EMAD_EPROTO, "tensor '%.200s': pieces missing on the shards", o->name);
    return 0;
}

/*
 * Merge per-shard tensor arrays into whole tensors *out[0..*n), sorted by
 * name: a whole tensor is moved (its name and data now owned by the
 * result), pieces are joined (copied). The per-shard arrays keep only what
 * was not moved.
 */
static int
merge(emad_client *c, emad_tensor **ts, const size_t *ns, uint32_t S, int with_data,
      emad_tensor **out, size_t *n)
{
    part *p = NULL;
    size_t np = 0, k = 0;
    emad_tensor *o;
    int rc;

    *out = NULL;
    *n = 0;
    if ((rc = cl_collect(c, ts, ns, S, &p, &np)) != 0)
        return rc;
    if ((o = calloc(np ? np : 1, sizeof(*o))) == NULL) {
        free(p);
        return fail(c, EMAD_ENOMEM, "cluster read: out of memory");
    }
    for (size_t i = 0; i < np && rc == 0;) {
        size_t j = i + 1;

        if (!p[i].piece) {
            o[k] = *p[i].t;
            p[i].t->name = NULL;
            p[i].t->data = NULL;
            k++;
            i = j;
            continue;
        }
        while (j < np && p[j].piece && p[j].name_len == p[i].name_len &&
               memcmp(p[j].t->name, p[i].t->name, p[i].name_len) == 0)
            j++;
        rc = join_pieces(c, &p[i], j - i, with_data, &o[k]);
        k++;
        i = j;
    }
    free(p);
    if (rc != 0) {
        tensors_free_all(o, k);
        return rc;
    }
    *out = o;
    *n = k;
    return 0;
}

/* Pull every shard at one step into models[0..S); *step gets it. */
static int
pull_one_step(emad_client *c, const char *model, const emad_pull_options *opts, emad_model **models,
              uint64_t *step)
{
    uint32_t S = c->cl->map->shards;
    char *ahead = calloc(S, 1);
    void **outs = calloc(S, sizeof(*outs));
    pull_args q = {model, opts, NULL, 0, 0};
    int rc = 0;

    if (ahead == NULL || outs == NULL) {
        free(ahead);
        free(outs);
        return fail(c, EMAD_ENOMEM, "pull: out of memory");
    }
    for (uint32_t s = 0; s < S; s++)
        outs[s] = &models[s];
    if (c->has_pull_step) { /* a given step (emad_cluster_copy reads each decay at one step) */
        memset(ahead, 1, S);
        q.shard_step = ahead;
        q.step = *step = c->pull_step;
        rc = cl_read_each(c, cl_run_pull, &q, outs, NULL);
        free(ahead);
        free(outs);
        return rc;
    }
    for (int attempt = 0; attempt < CLUSTER_PULL_ATTEMPTS; attempt++) {
        uint64_t lo = UINT64_MAX;
        size_t nahead = 0;

        for (uint32_t s = 0; s < S; s++) {
            emad_model_free(models[s]);
            models[s] = NULL;
        }
        q.shard_step = NULL;
        if ((rc = cl_read_each(c, cl_run_pull, &q, outs, NULL)) != 0)
            break;
        for (uint32_t s = 0; s < S; s++)
            if (models[s]->step < lo)
                lo = models[s]->step;
        for (uint32_t s = 0; s < S; s++) {
            ahead[s] = models[s]->step != lo;
            nahead += ahead[s];
            if (ahead[s]) {
                emad_model_free(models[s]);
                models[s] = NULL;
            }
        }
        *step = lo;
        if (nahead == 0)
            break;
        /* The shards ahead give their previous version, at the lowest step. */
        q.shard_step = ahead;
        q.step = lo;
        rc = cl_read_each(c, cl_run_pull, &q, outs, ahead);
        if (rc == 0) {
            for (uint32_t s = 0; s < S && rc == 0; s++)
                if (models[s]->step != lo)
                    rc = fail(c, EMAD_ESPLIT, "shard %u answered step %llu for step %llu", s,
                              (unsigned long long)models[s]->step, (unsigned long long)lo);
            if (rc == 0)
                break;
        }
        if (rc != EMAD_ESPLIT)
            break;
    }
    if (rc == EMAD_ESPLIT)
        rc = fail(c, EMAD_ESPLIT,
                  "pull: model '%s': the shards were not at one step in %d attempts (%s)", model,
                  CLUSTER_PULL_ATTEMPTS, c->err);
    free(ahead);
    free(outs);
    return rc;
}

/* Keep the named tensors of all[0..n) (in the order named) in *out; frees the rest. */
static int
select_named(emad_client *c, const char *model, emad_tensor *all, size_t n,
             const char *const *names, size_t n_names, emad_tensor **out)
{
    emad_tensor *o = calloc(n_names ? n_names : 1, sizeof(*o));
    int rc = 0;

    if (o == NULL)
        return fail(c, EMAD_ENOMEM, "pull: out of memory");
    for (size_t i = 0; i < n_names && rc == 0; i++) {
        size_t k = 0;

        while (k < n && (all[k].name == NULL || strcmp(all[k].name, names[i]) != 0))
            k++;
        if (k == n) {
            rc = fail(c, EMAD_ENOTENSOR, "model '%s' has no tensor '%.200s'", model, names[i]);
            break;
        }
        o[i] = all[k];
        all[k].name = NULL;
        all[k].data = NULL;
    }
    tensors_free_all(all, n);
    if (rc != 0) {
        tensors_free_all(o, n_names);
        return rc;
    }
    *out = o;
    return 0;
}

/* A pull of whole shards, joined after (for EMAD_PULL_SHADOW, see cl_pull_direct()). */
static int
pull_whole(emad_client *c, const char *model, const char *const *names, size_t n_names,
           const emad_pull_options *opts, emad_model **out)
{
    uint32_t S = c->cl->map->shards;
    emad_model **models = calloc(S, sizeof(*models));
    emad_tensor **ts = calloc(S, sizeof(*ts));
    size_t *ns = calloc(S, sizeof(*ns));
    emad_model *m = NULL;
    uint64_t step = 0;
    int rc;

    if (models == NULL || ts == NULL || ns == NULL || (m = calloc(1, sizeof(*m))) == NULL ||
        (m->name = strdup(model)) == NULL) {
        rc = fail(c, EMAD_ENOMEM, "pull: out of memory");
        goto done;
    }
    if ((rc = check_model(c, model)) != 0 ||
        (rc = pull_one_step(c, model, opts, models, &step)) != 0)
        goto done;
    for (uint32_t s = 0; s < S; s++) {
        ts[s] = models[s]->tensors;
        ns[s] = models[s]->ntensors;
    }
    m->step = step;
    if ((rc = merge(c, ts, ns, S, 1, &m->tensors, &m->ntensors)) != 0)
        goto done;
    if (names != NULL) {
        emad_tensor *sel = NULL;

        rc = select_named(c, model, m->tensors, m->ntensors, names, n_names, &sel);
        m->tensors = sel;
        m->ntensors = rc == 0 ? n_names : 0;
        if (rc != 0)
            goto done;
    }
    *out = m;
    m = NULL;
done:
    if (models != NULL)
        for (uint32_t s = 0; s < S; s++)
            emad_model_free(models[s]);
    emad_model_free(m);
    free(models);
    free(ts);
    free(ns);
    return rc;
}

/* pull_into through pull_whole(): the data copied once more. */
static int
pull_into_whole(emad_client *c, const char *model, emad_tensor *tensors, size_t n,
                const emad_pull_options *opts, uint64_t *step)
{
    const char **names = calloc(n ? n : 1, sizeof(*names));
    emad_model *m = NULL;
    int rc;

    if (names == NULL)
        return fail(c, EMAD_ENOMEM, "pull_into: out of memory");
    for (size_t i = 0; i < n; i++)
        names[i] = tensors[i].name;
    rc = pull_whole(c, model, names, n, opts, &m);
    free(names);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < n && rc == 0; i++)
        if (tensors[i].data == NULL || tensors[i].nbytes < m->tensors[i].nbytes)
            rc = fail(c, EMAD_ESIZE, "tensor '%.200s': buffer of %llu bytes for %llu",
                      tensors[i].name, (unsigned long long)tensors[i].nbytes,
                      (unsigned long long)m->tensors[i].nbytes);
    for (size_t i = 0; i < n && rc == 0; i++) {
        const emad_tensor *t = &m->tensors[i];
        emad_tensor *d = &tensors[i];

        memcpy(d->data, t->data, t->nbytes);
        d->kind = t->kind;
        d->dtype = t->dtype;
        d->ndim = t->ndim;
        memcpy(d->shape, t->shape, sizeof(d->shape));
        d->nbytes = t->nbytes;
        d->step = t->step;
        d->offset = d->count = 0;
    }
    if (rc == 0 && step != NULL)
        *step = m->step;
    emad_model_free(m);
    return rc;
}

int
cluster_pull(emad_client *c, const char *model, const char *const *names, size_t n_names,
             const emad_pull_options *opts, emad_model **out)
{
    int rc;

    if ((rc = check_model(c, model)) != 0)
        return rc;
    if (opts != NULL && opts->dtype == EMAD_PULL_SHADOW)
        return pull_whole(c, model, names, n_names, opts, out);
    return cl_pull_direct(c, model, names, n_names, opts, NULL, out, NULL);
}

int
cluster_pull_into(emad_client *c, const char *model, emad_tensor *tensors, size_t n,
                  const emad_pull_options *opts, uint64_t *step)
{
    const char **names;
    int rc;

    if ((rc = check_model(c, model)) != 0)
        return rc;
    if (opts != NULL && opts->dtype == EMAD_PULL_SHADOW)
        return pull_into_whole(c, model, tensors, n, opts, step);
    if ((names = calloc(n ? n : 1, sizeof(*names))) == NULL)
        return fail(c, EMAD_ENOMEM, "pull_into: out of memory");
    for (size_t i = 0; i < n; i++)
        names[i] = tensors[i].name;
    rc = cl_pull_direct(c, model, names, n, opts, tensors, NULL, step);
    free(names);
    return rc;
}

/* Job: describe the model on one replica. */
int
cl_run_describe(cl_job *j)
{
    desc *d = j->out;
    int rc;

    if ((rc = cl_ready(NULL, j->r)) != 0)
        return rc;
    emad_tensors_free(d->t, d->n);
    d->t = NULL;
    d->n = 0;
    return emad_describe(j->r->c, j->arg, &d->info, &d->t, &d->n);
}

int
cluster_describe(emad_client *c, const char *model, emad_model_info *info, emad_tensor **tensors,
                 size_t *n)
{
    uint32_t S = c->cl->map->shards;
    desc *d = calloc(S, sizeof(*d));
    void **outs = calloc(S, sizeof(*outs));
    emad_tensor **ts = calloc(S, sizeof(*ts));
    size_t *ns = calloc(S, sizeof(*ns));
    int rc = 0;

    if (d == NULL || outs == NULL || ts == NULL || ns == NULL)
        rc = fail(c, EMAD_ENOMEM, "describe: out of memory");
    for (uint32_t s = 0; rc == 0 && s < S; s++)
        outs[s] = &d[s];
    if (rc == 0 && (rc = cl_read_each(c, cl_run_describe, model, outs, NULL)) == 0) {
        *info = d[0].info;
        info->shadow_bytes = 0;
        for (uint32_t s = 0; s < S; s++) {
            const emad_model_info *x = &d[s].info;

            ts[s] = d[s].t;
            ns[s] = d[s].n;
            info->shadow_bytes += x->shadow_bytes;
            if (x->step < info->step)
                info->step = x->step;
            if (x->snapshot_step < info->snapshot_step)
                info->snapshot_step = x->snapshot_step;
            if (x->last_push_age_ms >= 0 &&
                (info->last_push_age_ms < 0 || x->last_push_age_ms < info->last_push_age_ms))
                info->last_push_age_ms = x->last_push_age_ms;
        }
        if ((rc = merge(c, ts, ns, S, 0, tensors, n)) == 0)
            info->ntensors = *n;
    }
    for (uint32_t s = 0; d != NULL && s < S; s++)
        emad_tensors_free(d[s].t, d[s].n);
    free(d);
    free(outs);
    free(ts);
    free(ns);
    return rc;
}

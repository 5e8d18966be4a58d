/*
 * cluster_copy.c - emad_cluster_copy(): a model's complete state read from
 * one deployment (a cluster client or a single daemon's client) at one
 * step and installed into a cluster placed by that cluster's own map: for
 * resharding (a new map, a higher epoch) and for moving a single daemon's
 * model into a cluster. Each decay's shadows are read in the shadow dtype
 * (nothing rounded), each tensor keeps its step, and every replica of the
 * target gets the model anew through `install`, so the target holds the
 * same EMA bit for bit and goes on from the same step.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "common/placement.h"

/* A model read at one step: configuration, and per decay the tensors in the shadow dtype. */
typedef struct source {
    emad_model_config cfg;
    emad_model *m[EMAD_MAX_DECAYS];
    int *dtypes; /* each tensor's own dtype (m[0]'s order) */
    uint64_t step;
} source;

/* Free a source. */
static void
source_free(source *s)
{
    for (size_t j = 0; j < EMAD_MAX_DECAYS; j++) {
        emad_model_free(s->m[j]);
        s->m[j] = NULL;
    }
    free(s->dtypes);
    s->dtypes = NULL;
    emad_config_free(&s->cfg);
}

/* Read model from `from` at one step into *s. */
static int
read_source(emad_client *c, emad_client *from, const char *model, source *s)
{
    emad_model_info info;
    emad_tensor *dsc = NULL;
    size_t nd = 0;
    int rc = 0;

    for (int attempt = 0; attempt < CLUSTER_PULL_ATTEMPTS; attempt++) {
        source_free(s);
        if ((rc = emad_get_config(from, model, &s->cfg)) != 0 ||
            (rc = emad_describe(from, model, &info, &dsc, &nd)) != 0)
            break;
        for (size_t j = 0; j < s->cfg.ndecays && rc == 0; j++) {
            emad_pull_options po = {s->cfg.decays[j], EMAD_PULL_SHADOW};

            from->has_pull_step = j > 0;
            from->pull_step = j > 0 ? s->m[0]->step : 0;
            rc = emad_pull_ex(from, model, NULL, 0, &po, &s->m[j]);
            from->has_pull_step = 0;
            if (rc == 0 && s->m[j]->ntensors != nd)
                rc = fail(c, EMAD_EPROTO, "copy: the source's tensor list changed");
        }
        if (rc == 0 && (s->dtypes = calloc(nd ? nd : 1, sizeof(int))) == NULL)
            rc = fail(c, EMAD_ENOMEM, "copy: out of memory");
        for (size_t i = 0; rc == 0 && i < nd; i++) {
            size_t k = i < nd && strcmp(dsc[i].name, s->m[0]->tensors[i].name) == 0 ? i : 0;

            while (k < nd && strcmp(dsc[k].name, s->m[0]->tensors[i].name) != 0)
                k++;
            if (k == nd)
                rc = fail(c, EMAD_EPROTO, "copy: tensor '%.200s' not described",
                          s->m[0]->tensors[i].name);
            else
                s->dtypes[i] = dsc[k].dtype;
        }
        emad_tensors_free(dsc, nd);
        dsc = NULL;
        nd = 0;
        if (rc != EMAD_ESPLIT)
            break;
    }
    if (rc != 0) {
        if (c != from)
            (void)fail(c, rc, "copy: reading '%s': %s", model, emad_last_error(from));
        return rc;
    }
    s->step = s->m[0]->step;
    return 0;
}

/* The target's tensors of one shard for one decay: pieces pointing into the source's data. */
typedef struct target {
    emad_tensor *t[EMAD_MAX_DECAYS]; /* per decay */
    int *dtypes;
    size_t n;
} target;

/* Cut the source by the target's placement into tg[0..S). */
static int
place_source(emad_client *c, const source *src, uint32_t S, target *tg, char **names)
{
    const emad_model *m0 = src->m[0];
    emad_tensor *plan = calloc(m0->ntensors ? m0->ntensors : 1, sizeof(*plan));
    emad_piece *pc = NULL;
    size_t np = 0, used = 0, nsplit = 0;
    int rc;

    if (plan == NULL)
        return fail(c, EMAD_ENOMEM, "copy: out of memory");
    for (size_t i = 0; i < m0->ntensors; i++) { /* placed by the tensors' own dtypes */
        plan[i] = m0->tensors[i];
        plan[i].dtype = src->dtypes[i];
    }
    rc = placement_plan(S, plan, m0->ntensors, &pc, &np);
    free(plan);
    if (rc != 0)
        return fail(c, rc, "copy: cannot place the tensors");
    for (size_t i = 0; i < np; i++)
        nsplit += !pc[i].whole;
    if ((*names = malloc((nsplit ? nsplit : 1) * (PLACEMENT_PIECE_NAME_MAX + 1))) == NULL)
        goto nomem;
    for (uint32_t s = 0; s < S; s++) {
        for (size_t j = 0; j < src->cfg.ndecays; j++)
            if ((tg[s].t[j] = calloc(np ? np : 1, sizeof(emad_tensor))) == NULL)
                goto nomem;
        if ((tg[s].dtypes = calloc(np ? np : 1, sizeof(int))) == NULL)
            goto nomem;
    }
    for (size_t i = 0; i < np; i++) {
        target *g = &tg[pc[i].shard];
        const emad_tensor *w = &m0->tensors[pc[i].tensor];
        char *name = (char *)w->name;

        if (!pc[i].whole) {
            name = *names + used++ * (PLACEMENT_PIECE_NAME_MAX + 1);
            if (placement_piece_name(name, PLACEMENT_PIECE_NAME_MAX + 1, w->name, pc[i].offset,
                                     w->ndim, w->shape) < 0) {
                free(pc);
                return fail(c, EMAD_ENAME, "copy: tensor '%.200s': name too long for its pieces",
                            w->name);
            }
        }
        for (size_t j = 0; j < src->cfg.ndecays; j++) {
            const emad_tensor *x = &src->m[j]->tensors[pc[i].tensor];
            emad_tensor *o = &g->t[j][g->n];
            size_t es = emad_dtype_size(x->dtype);

            *o = *x;
            o->name = name;
            if (!pc[i].whole) {
                o->ndim = 1;
                o->shape[0] = pc[i].count;
                o->data = (char *)x->data + pc[i].offset * es;
                o->nbytes = pc[i].count * es;
            }
        }
        g->dtypes[g->n++] = src->dtypes[pc[i].tensor];
    }
    free(pc);
    return 0;
nomem:
    free(pc);
    return fail(c, EMAD_ENOMEM, "copy: out of memory");
}

/* Arguments of the install of a model on one replica. */
typedef struct copy_job {
    const char *model;
    const source *src;
    const target *tg;
} copy_job;

/* Job: install the model anew on one replica of the target. */
static int
run_copy(cl_job *j)
{
    const copy_job *q = j->arg;
    const target *g = &q->tg[j->r->shard];
    inst_req r = {.model = q->model, .cfg = &q->src->cfg, .dtypes = g->dtypes};
    int rc;

    if ((rc = cl_ready(NULL, j->r)) != 0)
        return rc;
    r.what = 1;
    if ((rc = install_call(j->r->c, &r)) != 0)
        return rc;
    for (size_t d = 0; d < q->src->cfg.ndecays; d++) {
        r.shadow = (uint32_t)d;
        if ((rc = install_shadow(j->r->c, &r, g->t[d], g->n)) != 0)
            return rc;
    }
    r.what = 2;
    r.step = q->src->step;
    return install_call(j->r->c, &r);
}

/* Copy a model into a cluster, placed by its map. */
EMAD_EXTERN int
emad_cluster_copy(emad_client *from, emad_client *to, const char *model, uint64_t *step)
{
    struct cluster *cl;
    source src;
    target *tg = NULL;
    char *names = NULL;
    cl_job *jobs = NULL;
    copy_job q = {model, &src, NULL};
    size_t n;
    int rc;

    if (from == NULL || to == NULL || to->cl == NULL || from == to)
        return EMAD_EINVAL;
    call_begin(to);
    if ((rc = check_model(to, model)) != 0)
        return call_end(to, rc);
    cl = to->cl;
    n = (size_t)cl->map->shards * cl->map->replicas;
    memset(&src, 0, sizeof(src));
    emad_config_init(&src.cfg);
    if ((rc = read_source(to, from, model, &src)) != 0)
        goto done;
    if ((tg = calloc(cl->map->shards, sizeof(*tg))) == NULL ||
        (jobs = calloc(n, sizeof(*jobs))) == NULL) {
        rc = fail(to, EMAD_ENOMEM, "copy: out of memory");
        goto done;
    }
    if ((rc = place_source(to, &src, cl->map->shards, tg, &names)) != 0)
        goto done;
    q.tg = tg;
    for (size_t i = 0; i < n; i++)
        jobs[i] = (cl_job){.r = &cl->reps[i], .run = run_copy, .arg = &q};
    cl_run(jobs, n);
    if ((rc = cl_acked(to, jobs, n, "cluster copy")) == 0 && step != NULL)
        *step = src.step;
done:
    for (uint32_t s = 0; tg != NULL && s < cl->map->shards; s++) {
        for (size_t j = 0; j < EMAD_MAX_DECAYS; j++)
            free(tg[s].t[j]);
        free(tg[s].dtypes);
    }
    free(tg);
    free(jobs);
    free(names);
    source_free(&src);
    return call_end(to, rc);
}

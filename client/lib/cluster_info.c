/*
 * cluster_info.c - the small reads of a cluster client (see cluster.h):
 * list (one entry per model, the lowest step of its shards, their tensors
 * and bytes added up), get_config (from shard 0) and stats (the counters of
 * every replica that answers, added up by name).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdlib.h>
#include <string.h>

#include "cluster.h"

/* A shard's list. */
typedef struct listing {
    emad_model_info *m;
    size_t n;
} listing;

/* Job: list the models of one replica. */
static int
run_list(cl_job *j)
{
    listing *l = j->out;
    int rc;

    if ((rc = cl_ready(NULL, j->r)) != 0)
        return rc;
    free(l->m);
    l->m = NULL;
    l->n = 0;
    return emad_list(j->r->c, &l->m, &l->n);
}

int
cluster_list(emad_client *c, emad_model_info **out, size_t *n)
{
    uint32_t S = c->cl->map->shards;
    listing *l = calloc(S, sizeof(*l));
    void **outs = calloc(S, sizeof(*outs));
    emad_model_info *o = NULL;
    size_t total = 0, k = 0;
    int rc = 0;

    if (l == NULL || outs == NULL)
        rc = fail(c, EMAD_ENOMEM, "list: out of memory");
    for (uint32_t s = 0; rc == 0 && s < S; s++)
        outs[s] = &l[s];
    if (rc == 0 && (rc = cl_read_each(c, run_list, NULL, outs, NULL)) == 0) {
        for (uint32_t s = 0; s < S; s++)
            total += l[s].n;
        if ((o = calloc(total ? total : 1, sizeof(*o))) == NULL)
            rc = fail(c, EMAD_ENOMEM, "list: out of memory");
    }
    /* One entry per model: the lowest step, the shards' tensors and bytes added up. */
    for (uint32_t s = 0; rc == 0 && s < S; s++)
        for (size_t i = 0; i < l[s].n; i++) {
            const emad_model_info *x = &l[s].m[i];
            size_t j = 0;

            while (j < k && strcmp(o[j].name, x->name) != 0)
                j++;
            if (j == k) {
                o[k++] = *x;
                continue;
            }
            o[j].ntensors += x->ntensors;
            o[j].shadow_bytes += x->shadow_bytes;
            if (x->step < o[j].step)
                o[j].step = x->step;
            if (x->snapshot_step < o[j].snapshot_step)
                o[j].snapshot_step = x->snapshot_step;
        }
    for (uint32_t s = 0; l != NULL && s < S; s++)
        free(l[s].m);
    free(l);
    free(outs);
    if (rc != 0) {
        free(o);
        return rc;
    }
    *out = o;
    *n = k;
    return 0;
}

/* Job: a model's configuration from one replica. */
static int
run_config(cl_job *j)
{
    int rc;

    if ((rc = cl_ready(NULL, j->r)) != 0)
        return rc;
    emad_config_free(j->out);
    return emad_get_config(j->r->c, j->arg, j->out);
}

int
cluster_get_config(emad_client *c, const char *model, emad_model_config *cfg)
{
    uint32_t S = c->cl->map->shards;
    char *want = calloc(S, 1);
    void **outs = calloc(S, sizeof(*outs));
    int rc;

    if (want == NULL || outs == NULL) {
        free(want);
        free(outs);
        return fail(c, EMAD_ENOMEM, "get_config: out of memory");
    }
    want[0] = 1;
    outs[0] = cfg;
    rc = cl_read_each(c, run_config, model, outs, want);
    free(want);
    free(outs);
    return rc;
}

/* A replica's counters. */
typedef struct counters {
    emad_stat *s;
    size_t n;
} counters;

/* Job: the counters of one replica. */
static int
run_stats(cl_job *j)
{
    counters *l = j->out;
    int rc;

    if ((rc = cl_ready(NULL, j->r)) != 0)
        return rc;
    return emad_stats(j->r->c, &l->s, &l->n);
}

int
cluster_stats(emad_client *c, emad_stat **out, size_t *n)
{
    struct cluster *cl = c->cl;
    size_t count = (size_t)cl->map->shards * cl->map->replicas, total = 0, k = 0;
    cl_job *jobs = calloc(count, sizeof(*jobs));
    counters *l = calloc(count, sizeof(*l));
    emad_stat *o = NULL;
    int rc = 0;

    if (jobs == NULL || l == NULL)
        rc = fail(c, EMAD_ENOMEM, "stats: out of memory");
    for (size_t i = 0; rc == 0 && i < count; i++)
        jobs[i] = (cl_job){.r = &cl->reps[i], .run = run_stats, .out = &l[i]};
    if (rc == 0)
        cl_run(jobs, count);
    for (size_t i = 0; rc == 0 && i < count; i++)
        total += jobs[i].rc == 0 ? l[i].n : 0;
    if (rc == 0 && (o = calloc(total ? total : 1, sizeof(*o))) == NULL)
        rc = fail(c, EMAD_ENOMEM, "stats: out of memory");
    /* Counters of every replica that answered, added up by name. */
    for (size_t i = 0; rc == 0 && i < count; i++) {
        const emad_stat *x = l[i].s;

        if (jobs[i].rc != 0) {
            cl_failed(cl, jobs[i].r, jobs[i].rc, 0, proto_op_name(PROTO_OP_STATS), jobs[i].err);
            continue;
        }
        for (size_t e = 0; e < l[i].n; e++) {
            size_t j = 0;

            while (j < k && strcmp(o[j].name, x[e].name) != 0)
                j++;
            if (j == k)
                o[k++] = x[e];
            else
                o[j].value += x[e].value;
        }
    }
    for (size_t i = 0; l != NULL && i < count; i++)
        free(l[i].s);
    free(l);
    free(jobs);
    if (rc != 0) {
        free(o);
        return rc;
    }
    *out = o;
    *n = k;
    return 0;
}

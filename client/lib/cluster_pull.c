/*
 * cluster_pull.c - the pull of a cluster client that copies each tensor
 * once, as a single daemon's pull does: the shards' tensor lists are read
 * first (one `list` of the model per shard), the result's tensors are laid
 * out under their original names and shapes (the caller's buffers for
 * pull_into, new ones otherwise), and each shard is read with one
 * pull_into whose buffers point at its pieces' places in them. The shards
 * are read at their current step, then those ahead again at the lowest one
 * (each shard's parts are disjoint, so a second read only overwrites its
 * own), so every tensor comes from one committed step, or EMAD_ESPLIT.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "common/dtype.h"

/* Read every shard with something to read at one step; *step gets it. */
static int
reads_one_step(emad_client *c, const pull_args *base, shard_reads *sr, uint64_t *step)
{
    uint32_t S = c->cl->map->shards;
    char *want = calloc(S, 1), *ahead = calloc(S, 1);
    void **outs = calloc(S, sizeof(*outs));
    pull_args q = *base;
    int rc = 0;

    if (want == NULL || ahead == NULL || outs == NULL) {
        rc = fail(c, EMAD_ENOMEM, "pull: out of memory");
        goto done;
    }
    for (uint32_t s = 0; s < S; s++) {
        want[s] = sr[s].n > 0;
        outs[s] = &sr[s];
    }
    for (int attempt = 0; attempt < CLUSTER_PULL_ATTEMPTS; attempt++) {
        uint64_t lo = UINT64_MAX;
        size_t nahead = 0;

        q.shard_step = NULL;
        if ((rc = cl_read_each(c, cl_run_pull, &q, outs, want)) != 0)
            break;
        for (uint32_t s = 0; s < S; s++)
            if (want[s] && sr[s].step < lo)
                lo = sr[s].step;
        for (uint32_t s = 0; s < S; s++) {
            ahead[s] = want[s] && sr[s].step != lo;
            nahead += ahead[s];
        }
        *step = lo;
        if (nahead == 0)
            break;
        q.shard_step = ahead;
        q.step = lo;
        if ((rc = cl_read_each(c, cl_run_pull, &q, outs, ahead)) == 0)
            break;
        if (rc != EMAD_ESPLIT)
            break;
    }
    if (rc == EMAD_ESPLIT)
        rc = fail(c, EMAD_ESPLIT,
                  "pull: model '%s': the shards were not at one step in %d attempts (%s)", q.model,
                  CLUSTER_PULL_ATTEMPTS, c->err);
done:
    free(want);
    free(ahead);
    free(outs);
    return rc;
}

/* A tensor of the result: its parts p[first .. first + n) among the sorted parts. */
typedef struct whole {
    size_t first, n;
} whole;

/* The dtype a pull with opts gives a tensor stored in `stored` (as the daemon converts). */
static int
pulled_dtype(int stored, const emad_pull_options *o)
{
    if (o == NULL || o->dtype == EMAD_DTYPE_INVALID || !dtype_is_float(stored))
        return stored;
    return o->dtype;
}

/* Group sorted parts p[0..np) into tensors *w[0..*nw). */
static int
group(emad_client *c, const part *p, size_t np, whole **w, size_t *nw)
{
    size_t k = 0;

    if ((*w = calloc(np ? np : 1, sizeof(**w))) == NULL)
        return fail(c, EMAD_ENOMEM, "pull: out of memory");
    for (size_t i = 0; i < np;) {
        size_t j = i + 1;

        while (p[i].piece && j < np && p[j].piece && p[j].name_len == p[i].name_len &&
               memcmp(p[j].t->name, p[i].t->name, p[i].name_len) == 0)
            j++;
        (*w)[k++] = (whole){i, j - i};
        i = j;
    }
    *nw = k;
    return 0;
}

/* The tensor named name among w[0..nw) (sorted by name), or -1. */
static long
find_whole(const part *p, const whole *w, size_t nw, const char *name)
{
    size_t lo = 0, hi = nw, len = strlen(name);

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const part *x = &p[w[mid].first];
        size_t n = x->name_len < len ? x->name_len : len;
        int d = memcmp(x->t->name, name, n);

        if (d == 0)
            d = x->name_len < len ? -1 : x->name_len > len;
        if (d == 0)
            return (long)mid;
        if (d < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* Fill o (name not set) with the description of tensor g, as pulled with opts. */
static int
describe_whole(emad_client *c, const part *p, const whole *g, const emad_pull_options *opts,
               emad_tensor *o)
{
    const part *f = &p[g->first];
    uint64_t numel = f->piece ? cl_numel(f->ndim, f->shape) : cl_numel(f->t->ndim, f->t->shape);
    uint64_t next = 0;

    o->kind = f->t->kind;
    o->dtype = pulled_dtype(f->t->dtype, opts);
    o->ndim = f->piece ? f->ndim : f->t->ndim;
    memcpy(o->shape, f->piece ? f->shape : f->t->shape, sizeof(o->shape));
    o->nbytes = numel * emad_dtype_size(o->dtype);
    o->offset = o->count = 0;
    for (size_t i = 0; f->piece && i < g->n; i++) {
        if (p[g->first + i].offset != next || p[g->first + i].t->ndim != 1 ||
            p[g->first + i].t->dtype != f->t->dtype)
            return fail(c, EMAD_EPROTO, "tensor '%.*s': its pieces on the shards do not fit",
                        (int)f->name_len, f->t->name);
        next += p[g->first + i].t->shape[0];
    }
    if (f->piece && next != numel)
        return fail(c, EMAD_EPROTO, "tensor '%.*s': pieces missing on the shards", (int)f->name_len,
                    f->t->name);
    return 0;
}

/* Add the reads of tensor g, into data (laid out as o), to the shards' lists. */
static void
add_reads(const part *p, const whole *g, const emad_tensor *o, void *data, shard_reads *sr)
{
    size_t es = emad_dtype_size(o->dtype);

    for (size_t i = 0; i < g->n; i++) {
        const part *x = &p[g->first + i];
        shard_reads *r = &sr[x->shard];
        emad_tensor *t = &r->t[r->n++];

        memset(t, 0, sizeof(*t));
        t->name = x->t->name;
        t->data = (char *)data + (x->piece ? x->offset * es : 0);
        t->nbytes = x->piece ? x->t->shape[0] * es : o->nbytes;
    }
}

/* The tensors' steps: the latest of their parts' (each part's step from its shard's reads). */
static void
note_steps(const part *p, const whole *w, const size_t *sel, size_t n, shard_reads *sr,
           emad_tensor *o)
{
    for (size_t i = 0; i < n; i++) {
        const whole *g = &w[sel[i]];

        o[i].step = 0;
        for (size_t k = 0; k < g->n; k++) {
            const part *x = &p[g->first + k];
            const shard_reads *r = &sr[x->shard];

            for (size_t e = 0; e < r->n; e++)
                if (r->t[e].name == x->t->name && r->t[e].step > o[i].step)
                    o[i].step = r->t[e].step;
        }
    }
}

int
cl_pull_direct(emad_client *c, const char *model, const char *const *names, size_t n_names,
               const emad_pull_options *opts, emad_tensor *user, emad_model **out, uint64_t *step)
{
    uint32_t S = c->cl->map->shards;
    desc *d = calloc(S, sizeof(*d));
    void **outs = calloc(S, sizeof(*outs));
    emad_tensor **ts = calloc(S, sizeof(*ts));
    size_t *ns = calloc(S, sizeof(*ns)), *sel = NULL, nsel = 0, np = 0, nw = 0;
    shard_reads *sr = calloc(S, sizeof(*sr));
    part *p = NULL;
    whole *w = NULL;
    emad_model *m = NULL;
    emad_tensor *o = user;
    pull_args q = {model, opts, NULL, 0, 1};
    uint64_t lo = UINT64_MAX;
    int rc = 0;

    if (d == NULL || outs == NULL || ts == NULL || ns == NULL || sr == NULL) {
        rc = fail(c, EMAD_ENOMEM, "pull: out of memory");
        goto done;
    }
    for (uint32_t s = 0; s < S; s++)
        outs[s] = &d[s];
    if ((rc = cl_read_each(c, cl_run_describe, model, outs, NULL)) != 0)
        goto done;
    for (uint32_t s = 0; s < S; s++) {
        ts[s] = d[s].t;
        ns[s] = d[s].n;
        if (d[s].info.step < lo)
            lo = d[s].info.step;
        if ((sr[s].t = calloc(d[s].n ? d[s].n : 1, sizeof(emad_tensor))) == NULL) {
            rc = fail(c, EMAD_ENOMEM, "pull: out of memory");
            goto done;
        }
    }
    if ((rc = cl_collect(c, ts, ns, S, &p, &np)) != 0 || (rc = group(c, p, np, &w, &nw)) != 0)
        goto done;
    /* The tensors asked for, in order (every one, sorted by name, without names). */
    nsel = names != NULL ? n_names : nw;
    if ((sel = calloc(nsel ? nsel : 1, sizeof(*sel))) == NULL) {
        rc = fail(c, EMAD_ENOMEM, "pull: out of memory");
        goto done;
    }
    for (size_t i = 0; i < nsel; i++) {
        long k = names != NULL ? find_whole(p, w, nw, names[i]) : (long)i;

        if (k < 0) {
            rc = fail(c, EMAD_ENOTENSOR, "model '%s' has no tensor '%.200s'", model, names[i]);
            goto done;
        }
        for (size_t j = 0; j < i; j++)
            if (sel[j] == (size_t)k) {
                rc = fail(c, EMAD_EDUP, "tensor '%.200s' is named twice in one pull", names[i]);
                goto done;
            }
        sel[i] = (size_t)k;
    }
    if (user == NULL) {
        if ((m = calloc(1, sizeof(*m))) == NULL || (m->name = strdup(model)) == NULL ||
            (m->tensors = calloc(nsel ? nsel : 1, sizeof(*m->tensors))) == NULL) {
            rc = fail(c, EMAD_ENOMEM, "pull: out of memory");
            goto done;
        }
        o = m->tensors;
        m->ntensors = nsel;
    }
    /* Lay the result out, check the caller's buffers, and point the shards' reads at them. */
    for (size_t i = 0; i < nsel; i++) {
        emad_tensor want;
        const part *f = &p[w[sel[i]].first];

        memset(&want, 0, sizeof(want));
        if ((rc = describe_whole(c, p, &w[sel[i]], opts, &want)) != 0)
            goto done;
        if (user != NULL && (user[i].data == NULL || user[i].nbytes < want.nbytes)) {
            rc = fail(c, EMAD_ESIZE, "tensor '%.200s': buffer of %llu bytes for %llu", user[i].name,
                      (unsigned long long)user[i].nbytes, (unsigned long long)want.nbytes);
            goto done;
        }
        if (user == NULL) {
            want.name = strndup(f->t->name, f->name_len);
            want.data = malloc(want.nbytes ? want.nbytes : 1);
            o[i] = want;
            if (o[i].name == NULL || o[i].data == NULL) {
                rc = fail(c, EMAD_ENOMEM, "pull: out of memory for '%.*s'", (int)f->name_len,
                          f->t->name);
                goto done;
            }
        } else {
            want.name = user[i].name;
            want.data = user[i].data;
            user[i] = want;
        }
    }
    for (size_t i = 0; i < nsel; i++)
        add_reads(p, &w[sel[i]], &o[i], o[i].data, sr);
    if (nsel > 0 && (rc = reads_one_step(c, &q, sr, &lo)) != 0)
        goto done;
    note_steps(p, w, sel, nsel, sr, o);
    if (m != NULL) {
        m->step = lo;
        *out = m;
        m = NULL;
    }
    if (step != NULL)
        *step = lo;
done:
    emad_model_free(m);
    for (uint32_t s = 0; d != NULL && s < S; s++) {
        emad_tensors_free(d[s].t, d[s].n);
        if (sr != NULL)
            free(sr[s].t);
    }
    free(d);
    free(outs);
    free(ts);
    free(ns);
    free(sr);
    free(p);
    free(w);
    free(sel);
    return rc;
}

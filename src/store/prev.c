/*
 * prev.c - the previous committed version of a model, kept in cluster mode
 * so that a pull can ask for one exact step while a push of the next step
 * is being applied across shards (docs/PROTOCOL.md, "Every reader sees one
 * step"). The version is a reference to every shadow blob of every tensor
 * as it was before the step that replaced it: pushes then write into other
 * blobs (the tensor's spare, else a new one), so the cost is at most one
 * more copy of the model's shadows. It is taken when a step is about to
 * change the model and let go when the next step begins (or is applied),
 * its blobs going back to the tensors as spares. Loop thread only.
 */
#include <stdlib.h>
#include <string.h>

#include "store/store_int.h"
#include "base/xmalloc.h"

/* One tensor of the previous version. */
typedef struct prev_entry {
    uint64_t step;
    uint32_t nshadow;
    blob *shadow[EMAD_MAX_DECAYS];
} prev_entry;

struct prev_version {
    uint64_t step;  /* the model's committed step then */
    size_t n;       /* tensors m->tensors[0..n) existed then (tensors are only appended) */
    uint64_t bytes; /* its shadows' bytes, charged to the budget's "previous" part */
    prev_entry *e;
};

/* Drop m's previous version; with spares its blobs become the tensors' spares (else freed). */
static void
prev_drop(model *m, int spares)
{
    struct prev_version *p = m->prev;

    if (p == NULL)
        return;
    for (size_t i = 0; i < p->n; i++)
        for (uint32_t j = 0; j < p->e[i].nshadow; j++) {
            if (spares)
                blob_release(m->budget, p->e[i].shadow[j], &m->tensors[i]->spare[j]);
            else
                blob_unref(p->e[i].shadow[j]);
        }
    budget_release(m->budget, BUDGET_PREVIOUS, BUDGET_NO_OWNER, p->bytes);
    free(p->e);
    free(p);
    m->prev = NULL;
}

/* Let go of m's previous version: its blobs become the tensors' spares (or are freed). */
void
prev_release(model *m)
{
    prev_drop(m, 1);
}

/* Free m's previous version without giving spares back (the model is being freed). */
void
prev_free(model *m)
{
    prev_drop(m, 0);
}

/* Keep m's current version as its previous one (replacing an older one), if m keeps one. */
void
prev_freeze(model *m)
{
    struct prev_version *p;

    if (!m->keep_prev)
        return;
    prev_release(m);
    p = xcalloc(1, sizeof(*p));
    p->step = m->step;
    p->n = m->ntensors;
    p->e = xcalloc(m->ntensors ? m->ntensors : 1, sizeof(*p->e));
    for (size_t i = 0; i < m->ntensors; i++) {
        const tensor *t = m->tensors[i];

        p->e[i].step = t->step;
        p->e[i].nshadow = t->nshadow;
        for (uint32_t j = 0; j < t->nshadow; j++) {
            p->e[i].shadow[j] = t->shadow[j];
            t->shadow[j]->refs++;
            p->bytes += t->shadow[j]->size;
        }
    }
    /* Counted in full while it is still the current version too: the bound the budget
     * holds is the one the design states, one more copy of the shadows. */
    budget_charge(m->budget, BUDGET_PREVIOUS, BUDGET_NO_OWNER, p->bytes);
    m->prev = p;
}

void
store_keep_previous(store *s, int on)
{
    s->keep_prev = on;
    for (size_t i = 0; i < s->nmodels; i++) {
        s->models[i]->keep_prev = on;
        if (!on)
            prev_release(s->models[i]);
    }
}

uint64_t
store_prev_step(const model *m, int *has)
{
    *has = m->prev != NULL;
    return m->prev != NULL ? m->prev->step : 0;
}

/* The previous version's step and data of tensor t; 0, or -1 if t did not exist then. */
int
prev_tensor(const model *m, const tensor *t, uint32_t k, uint64_t *step, blob **data)
{
    const struct prev_version *p = m->prev;

    if (p == NULL || t->index >= p->n)
        return -1;
    *step = p->e[t->index].step;
    *data = p->e[t->index].shadow[k];
    return 0;
}

/* Tensors that existed in m's previous version. */
size_t
prev_ntensors(const model *m)
{
    return m->prev != NULL ? m->prev->n : 0;
}

/*
 * view.c - pull views and pull sessions.
 *
 * A view freezes a consistent copy of (part of) a model at one moment:
 * the tensors' metadata and a reference to one shadow blob each, for the
 * decay asked for. Later pushes write fresh blobs instead of the ones a
 * view holds (copy-on-write, blob.c), so the view keeps showing exactly
 * one committed step. A registered view is a pull session, read in parts
 * by later requests and expired when idle. Everything runs on the loop
 * thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"
#include "common/emaconf.h"
#include "common/names.h"
#include "store/store_int.h"
#include "base/strmap.h"
#include "base/xmalloc.h"

void
store_view_free(store_view *v)
{
    if (v == NULL)
        return;
    if (v->budget != NULL) {
        budget_release(v->budget, BUDGET_SESSIONS, v->owner, v->charged);
        budget_slot_put(v->budget, BUDGET_SLOT_SESSIONS, v->owner);
    }
    for (size_t i = 0; i < v->ntensors; i++) {
        free((char *)v->tensors[i].name);
        blob_unref(v->tensors[i].data);
    }
    free(v->tensors);
    free(v->model);
    free(v);
}

/* The decays of m as text: "0.999, 0.9999". */
static const char *
decay_list(char *buf, size_t size, const model *m)
{
    char d[32];
    int off = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < m->cfg.ndecays && off >= 0 && (size_t)off < size; i++)
        off += snprintf(buf + off, size - (size_t)off, "%s%s", i ? ", " : "",
                        emaconf_fmt_double(d, sizeof(d), m->cfg.decays[i]));
    return buf;
}

int
store_decay_from_f32(store *s, const char *model_name, size_t len, double f, double *decay,
                     store_err *err)
{
    const model *m = store_model_get(s, model_name, len, err);
    char list[256], want[32];
    size_t found = 0;

    if (m == NULL)
        return err->code;
    for (size_t i = 0; i < m->cfg.ndecays; i++)
        if ((float)m->cfg.decays[i] == (float)f && found++ == 0)
            *decay = m->cfg.decays[i];
    if (found == 1)
        return 0;
    emaconf_fmt_double(want, sizeof(want), (float)f);
    if (found == 0)
        return store_fail(err, EMAD_ERANGE, NULL,
                          "model '%s' has no decay that rounds to the float32 %s (it has %s)",
                          m->name, want, decay_list(list, sizeof(list), m));
    return store_fail(err, EMAD_ERANGE, NULL,
                      "%zu decays of model '%s' round to the float32 %s (it has %s): send the "
                      "decay as a float64",
                      found, m->name, want, decay_list(list, sizeof(list), m));
}

/*
 * The tensors of m named by names[0..n), in that order (malloc'd), or
 * NULL with EMAD_ENOTENSOR for an unknown name or EMAD_EDUP for a name
 * given twice. One hash lookup per name; repeats are found by marking
 * each tensor with a number new to this call (O(n)).
 */
static tensor **
pick(store *s, model *m, const char *const *names, const size_t *name_lens, size_t n,
     store_err *err)
{
    tensor **out = xcalloc(n ? n : 1, sizeof(*out));
    uint64_t mark = ++s->mark;
    char name[EMAD_MAX_NAME_BYTES + 1];

    for (size_t i = 0; i < n; i++) {
        tensor *t = strmap_get(m->index, names[i], name_lens[i]);

        if (t != NULL && t->mark != mark) {
            t->mark = mark;
            out[i] = t;
            continue;
        }
        free(out);
        store_cname(name, sizeof(name), names[i], name_lens[i]);
        if (t != NULL)
            store_fail(err, EMAD_EDUP, name, "tensor '%s' is named twice in one pull", name);
        else /* Only a valid name goes into error.tensor: the request may hold any bytes. */
            store_fail(err, EMAD_ENOTENSOR,
                       names_check_tensor(names[i], name_lens[i]) == 0 ? name : NULL,
                       "model '%s' has no tensor '%s'", m->name, name);
        return NULL;
    }
    return out;
}

/*
 * A view of m (see store_view_create), of its current version, or with
 * from_prev of its kept previous version (a named tensor that did not exist
 * then is EMAD_ENOTENSOR).
 */
static int
view_make(store *s, model *m, size_t len, const char *const *names, const size_t *name_lens,
          size_t n, const view_options *opts, int from_prev, store_view **out, store_err *err)
{
    store_view *v;
    tensor **picked = NULL;
    size_t count, j = 0;
    int odt = opts != NULL ? opts->dtype : EMAD_DTYPE_INVALID;

    *out = NULL;
    if (opts != NULL && opts->has_decay) {
        char list[256], want[32];
        for (j = 0; j < m->cfg.ndecays && m->cfg.decays[j] != opts->decay; j++)
            ;
        if (j == m->cfg.ndecays)
            return store_fail(err, EMAD_ERANGE, NULL, "model '%s' has no decay %s (it has %s)",
                              m->name, emaconf_fmt_double(want, sizeof(want), opts->decay),
                              decay_list(list, sizeof(list), m));
    }
    if (odt != EMAD_DTYPE_INVALID && odt != VIEW_DTYPE_SHADOW && odt != EMAD_F32 &&
        odt != EMAD_BF16 && odt != EMAD_F16)
        return store_fail(err, EMAD_EDTYPE, NULL, "a pull may convert to F32, BF16 or F16, not %s",
                          dtype_name(odt) != NULL ? dtype_name(odt) : "that");
    count = names != NULL ? n : from_prev ? prev_ntensors(m) : m->ntensors;
    if (names != NULL && (picked = pick(s, m, names, name_lens, n, err)) == NULL)
        return err->code;
    if (names != NULL && from_prev)
        for (size_t i = 0; i < n; i++)
            if (picked[i]->index >= prev_ntensors(m)) {
                store_fail(err, EMAD_ENOTENSOR, picked[i]->name,
                           "model '%s' had no tensor '%s' at step %llu", m->name, picked[i]->name,
                           (unsigned long long)store_prev_step(m, &(int){0}));
                free(picked);
                return err->code;
            }
    v = xcalloc(1, sizeof(*v));
    v->model = xstrndup(m->name, len);
    v->step = from_prev ? store_prev_step(m, &(int){0}) : m->step;
    v->tensors = xcalloc(count, sizeof(*v->tensors));
    v->ntensors = count;
    for (size_t i = 0; i < count; i++) {
        const tensor *t = names != NULL ? picked[i] : m->tensors[i];
        view_tensor *vt = &v->tensors[i];
        uint32_t k = t->averaged ? (uint32_t)j : 0;

        vt->name = xstrndup(t->name, t->name_len);
        vt->name_len = t->name_len;
        vt->kind = t->kind;
        if (odt == VIEW_DTYPE_SHADOW)
            vt->dtype = t->sdtype;
        else
            vt->dtype = odt != EMAD_DTYPE_INVALID && dtype_is_float(t->dtype) ? odt : t->dtype;
        vt->sdtype = t->sdtype;
        vt->averaged = t->averaged;
        vt->ndim = t->ndim;
        memcpy(vt->shape, t->shape, sizeof(vt->shape));
        vt->numel = t->numel;
        vt->nbytes = t->numel * dtype_size(vt->dtype);
        vt->step = t->step;
        vt->data = t->shadow[k];
        if (from_prev)
            (void)prev_tensor(m, t, k, &vt->step, &vt->data);
        vt->data->refs++;
    }
    free(picked);
    *out = v;
    return 0;
}

int
store_view_create(store *s, const char *model_name, size_t len, const char *const *names,
                  const size_t *name_lens, size_t n, const view_options *opts, store_view **out,
                  store_err *err)
{
    model *m = store_model_get(s, model_name, len, err);

    *out = NULL;
    if (m == NULL)
        return err->code;
    return view_make(s, m, len, names, name_lens, n, opts, 0, out, err);
}

int
store_view_create_at(store *s, const char *model_name, size_t len, const char *const *names,
                     const size_t *name_lens, size_t n, const view_options *opts, uint64_t step,
                     store_view **out, store_err *err)
{
    model *m = store_model_get(s, model_name, len, err);
    int has = 0;
    uint64_t prev;

    *out = NULL;
    if (m == NULL)
        return err->code;
    if (m->step == step)
        return view_make(s, m, len, names, name_lens, n, opts, 0, out, err);
    prev = store_prev_step(m, &has);
    if (has && prev == step)
        return view_make(s, m, len, names, name_lens, n, opts, 1, out, err);
    if (has)
        return store_fail(err, EMAD_ESPLIT, NULL,
                          "model '%s' is at step %llu (previous version: step %llu), not at "
                          "step %llu",
                          m->name, (unsigned long long)m->step, (unsigned long long)prev,
                          (unsigned long long)step);
    return store_fail(err, EMAD_ESPLIT, NULL,
                      "model '%s' is at step %llu (no previous version kept), not at step %llu",
                      m->name, (unsigned long long)m->step, (unsigned long long)step);
}

/* The registered view with this id, or NULL. */
static store_view *
view_find(const store *s, uint64_t id)
{
    for (store_view *v = s->views; v != NULL; v = v->next)
        if (v->id == id)
            return v;
    return NULL;
}

int
store_view_register(store *s, store_view *v, uint64_t now_ms, store_err *err)
{
    uint64_t cost = 0;

    if (s->nviews >= STORE_MAX_VIEWS)
        return store_fail(err, EMAD_ELIMIT, NULL, "at most %d open pull sessions", STORE_MAX_VIEWS);
    /* Any push meanwhile turns the version a session holds into a copy: count it in full. */
    for (size_t i = 0; i < v->ntensors; i++)
        cost += v->tensors[i].data->size;
    if (store_budget_check(s, BUDGET_SESSIONS, s->owner, cost, err) != 0 ||
        budget_slot_take(s->budget, BUDGET_SLOT_SESSIONS, s->owner, STORE_MAX_VIEWS,
                         "open pull sessions", err) != 0)
        return err->code;
    v->budget = s->budget;
    v->owner = s->owner;
    v->charged = cost;
    budget_charge(s->budget, BUDGET_SESSIONS, s->owner, cost);
    do /* random, so that no other client can guess it; unique among the open ones */
        v->id = store_random_id();
    while (view_find(s, v->id) != NULL);
    v->last_used_ms = now_ms;
    v->next = s->views;
    s->views = v;
    s->nviews++;
    return 0;
}

store_view *
store_view_get(store *s, uint64_t id, uint64_t now_ms)
{
    store_view *v = view_find(s, id);

    if (v != NULL)
        v->last_used_ms = now_ms;
    return v;
}

int
store_view_open(const store *s, uint64_t id)
{
    return view_find(s, id) != NULL;
}

int
store_view_release(store *s, uint64_t id, store_err *err)
{
    for (store_view **pp = &s->views; *pp != NULL; pp = &(*pp)->next) {
        store_view *v = *pp;
        if (v->id == id) {
            *pp = v->next;
            s->nviews--;
            store_view_free(v);
            return 0;
        }
    }
    return store_fail(err, EMAD_ENOSESSION, NULL,
                      "no pull session %llu (unknown, expired or released)",
                      (unsigned long long)id);
}

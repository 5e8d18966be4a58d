/*
 * store.c - the registry of models: create, configure, drop, the store's
 * own lifecycle, gauges and the expiry of idle transactions, views and
 * pending steps.
 *
 * Everything runs on the loop thread. The rest of the store lives in the
 * other files of src/store/ (store_int.h lists them): blobs, stages, the
 * apply engine, pending multi-writer steps, transactions and views.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "common/dtype.h"
#include "common/emaconf.h"
#include "common/names.h"
#include "store/store_int.h"
#include "base/log.h"
#include "base/strmap.h"
#include "base/xmalloc.h"

/* printf into err and return its code. */
int
store_fail(store_err *err, int code, const char *tensor_name, const char *fmt, ...)
{
    va_list ap;

    err->code = code;
    err->tensor[0] = '\0';
    if (tensor_name != NULL)
        snprintf(err->tensor, sizeof(err->tensor), "%s", tensor_name);
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    return code;
}

/* Copy a (ptr, len) name into a NUL-terminated buffer for messages. */
const char *
store_cname(char *buf, size_t size, const char *name, size_t len)
{
    if (len >= size)
        len = size - 1;
    memcpy(buf, name, len);
    buf[len] = '\0';
    return buf;
}

static uint64_t
random_id_base(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 16);
}

/* Fill *v from /dev/urandom; 0 or -1. */
static int
urandom(uint64_t *v)
{
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    ssize_t got = fd >= 0 ? read(fd, v, sizeof(*v)) : -1;

    if (fd >= 0)
        (void)close(fd);
    return got == (ssize_t)sizeof(*v) ? 0 : -1;
}

/*
 * A random transaction or pull-session id: 64 bits from the kernel's
 * generator (getrandom(2), or /dev/urandom where the call is missing),
 * never 0. Aborts if neither gives bytes: an id that another client can
 * guess would let it write into someone else's transaction.
 */
uint64_t
store_random_id(void)
{
    uint64_t id = 0;

    while (id == 0) {
        ssize_t got = getrandom(&id, sizeof(id), 0);

        if (got == (ssize_t)sizeof(id) || (got < 0 && errno == EINTR))
            continue;
        if (urandom(&id) != 0) {
            log_error("event=random_failed error=\"%s\"", strerror(errno));
            abort();
        }
    }
    return id;
}

/* Fail with EMAD_ERANGE unless step is one a snapshot can hold (0 .. 2^63 - 1). */
int
store_check_step(uint64_t step, store_err *err)
{
    if (step > STORE_MAX_STEP)
        return store_fail(err, EMAD_ERANGE, NULL,
                          "step %llu is out of range: steps are 0..%llu (2^63 - 1)",
                          (unsigned long long)step, (unsigned long long)STORE_MAX_STEP);
    return 0;
}

store *
store_create(void)
{
    store *s = xcalloc(1, sizeof(*s));

    s->index = strmap_create();
    s->next_id = (random_id_base() & 0x7fffffffffffULL) + 1;
    s->budget = budget_create();
    return s;
}

void
store_set_budget(store *s, uint64_t limit, unsigned share_percent)
{
    budget_configure(s->budget, limit, share_percent);
}

void
store_set_owner(store *s, uint64_t owner)
{
    s->owner = owner;
    budget_set_current(s->budget, owner);
}

budget *
store_budget(store *s)
{
    return s->budget;
}

int
store_budget_check(store *s, int part, uint64_t owner, uint64_t bytes, store_err *err)
{
    if (budget_check(s->budget, part, owner, bytes, bytes, err) == 0)
        return 0;
    if (budget_used(s->budget, BUDGET_SPARES) == 0)
        return err->code;
    store_release_spares(s); /* memory kept only to be fast: give it back first */
    return budget_check(s->budget, part, owner, bytes, bytes, err);
}

/*
 * The budget check of memory a model's step needs (budget_check()); when
 * it fails, the model's spares are freed and it is checked again.
 */
int
store_model_budget_check(model *m, int part, uint64_t owner, uint64_t bytes, uint64_t own,
                         store_err *err)
{
    if (budget_check(m->budget, part, owner, bytes, own, err) == 0)
        return 0;
    if (budget_used(m->budget, BUDGET_SPARES) == 0)
        return err->code;
    blob_free_spares(m); /* memory kept only to be fast: give it back first */
    return budget_check(m->budget, part, owner, bytes, own, err);
}

/* Free one tensor and its shadow references; its spares are no longer counted in bg. */
static void
tensor_free(budget *bg, tensor *t)
{
    if (t == NULL)
        return;
    for (uint32_t j = 0; j < t->nshadow; j++) {
        blob_unref(t->shadow[j]);
        if (t->spare[j] != NULL)
            budget_release(bg, BUDGET_SPARES, BUDGET_NO_OWNER, t->spare[j]->size);
        blob_unref(t->spare[j]);
    }
    free(t->name);
    free(t);
}

/* Free a model, its tensors and pending steps. */
static void
model_free(model *m)
{
    if (m == NULL)
        return;
    prev_free(m);
    for (size_t i = 0; i < m->ntensors; i++)
        tensor_free(m->budget, m->tensors[i]);
    budget_release(m->budget, BUDGET_SHADOWS, BUDGET_NO_OWNER, m->shadow_bytes);
    while (m->pending != NULL) {
        pending *p = m->pending;
        m->pending = p->next;
        pending_free(p);
    }
    free(m->tensors);
    strmap_destroy(m->index);
    emaconf_free(&m->cfg);
    free(m->name);
    free(m);
}

void
store_destroy(store *s)
{
    if (s == NULL)
        return;
    while (s->txns != NULL) {
        txn *t = s->txns;
        s->txns = t->next;
        txn_free(t);
    }
    while (s->zombies != NULL) {
        txn *t = s->zombies;
        s->zombies = t->next;
        txn_free(t);
    }
    while (s->views != NULL) {
        store_view *v = s->views;
        s->views = v->next;
        store_view_free(v);
    }
    for (size_t i = 0; i < s->nmodels; i++)
        model_free(s->models[i]);
    free(s->models);
    strmap_destroy(s->index);
    budget_destroy(s->budget);
    free(s);
}

void
store_gauges_get(const store *s, store_gauges *g)
{
    memset(g, 0, sizeof(*g));
    g->models = s->nmodels;
    for (size_t i = 0; i < s->nmodels; i++) {
        const model *m = s->models[i];
        g->tensors += m->ntensors;
        g->shadow_bytes += m->shadow_bytes;
        g->steps_pending += m->npending;
    }
    /* What is held, as charged by its holders (a slice moved from a transaction to a pending
     * step is counted once, where it is). */
    g->staged_bytes =
        budget_used(s->budget, BUDGET_STAGED) + budget_used(s->budget, BUDGET_PENDING);
    for (int p = 0; p < BUDGET_PART_COUNT; p++)
        g->memory[p] = budget_used(s->budget, p);
    g->memory_total = budget_total(s->budget);
    g->memory_limit = budget_limit(s->budget);
    g->txn_open = s->ntxns;
    g->views_open = s->nviews;
}

model *
store_model_find(store *s, const char *name, size_t len)
{
    return strmap_get(s->index, name, len);
}

model *
store_model_at(store *s, size_t i)
{
    return i < s->nmodels ? s->models[i] : NULL;
}

/* Look up a model or fail with EMAD_ENOMODEL. */
model *
store_model_get(store *s, const char *name, size_t len, store_err *err)
{
    char buf[EMAD_MAX_MODEL_NAME_BYTES + 1];
    model *m = store_model_find(s, name, len);

    if (m == NULL)
        store_fail(err, EMAD_ENOMODEL, NULL, "no model '%s'",
                   store_cname(buf, sizeof(buf), name, len));
    return m;
}

/* Check a configuration; EMAD_ERANGE with the reason. */
static int
check_config(const emad_model_config *cfg, store_err *err)
{
    char why[256];

    if (emaconf_check(cfg, why, sizeof(why)) != 0)
        return store_fail(err, EMAD_ERANGE, NULL, "%s", why);
    return 0;
}

int
store_create_model(store *s, const char *name, size_t len, const emad_model_config *cfg,
                   int exist_ok, int *created, store_err *err)
{
    char buf[EMAD_MAX_MODEL_NAME_BYTES + 1];
    const char *diff;
    model *m;

    *created = 0;
    if (names_check_model(name, len) != 0)
        return store_fail(
            err, EMAD_ENAME, NULL,
            "model name must be 1..%d bytes of A-Z a-z 0-9 . _ - and not start with '.' or '-'",
            EMAD_MAX_MODEL_NAME_BYTES);
    if (check_config(cfg, err) != 0)
        return err->code;
    store_cname(buf, sizeof(buf), name, len);
    if ((m = store_model_find(s, name, len)) != NULL) {
        if ((diff = emaconf_diff(&m->cfg, cfg, 0)) != NULL)
            return store_fail(err, EMAD_EEXIST, NULL,
                              "model '%s' exists with a different %s (see emactl list %s)", buf,
                              diff, buf);
        if (!exist_ok)
            return store_fail(err, EMAD_EEXIST, NULL, "model '%s' already exists", buf);
        return 0;
    }
    if (s->nmodels >= STORE_MAX_MODELS)
        return store_fail(err, EMAD_ELIMIT, NULL, "at most %d models", STORE_MAX_MODELS);
    m = xcalloc(1, sizeof(*m));
    m->name = xstrndup(name, len);
    m->uid = s->next_id++;
    m->keep_prev = s->keep_prev;
    m->version = 1;
    m->budget = s->budget;
    emaconf_copy(&m->cfg, cfg);
    m->index = strmap_create();
    if (s->nmodels == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 8;
        s->models = xreallocarray(s->models, s->cap, sizeof(*s->models));
    }
    s->models[s->nmodels++] = m;
    strmap_put(s->index, m->name, len, m);
    *created = 1;
    return 0;
}

int
store_configure(store *s, const char *name, size_t len, const emad_model_config *cfg,
                store_err *err)
{
    model *m = store_model_get(s, name, len, err);
    const char *diff;

    if (m == NULL || check_config(cfg, err) != 0)
        return err->code;
    if ((diff = emaconf_diff(&m->cfg, cfg, 1)) != NULL)
        return store_fail(err, EMAD_EIMMUTABLE, NULL,
                          "model '%s': %s cannot change on an existing model (drop and create it)",
                          m->name, strcmp(diff, "decays") == 0 ? "the number of decays" : diff);
    memcpy(m->cfg.decays, cfg->decays, sizeof(m->cfg.decays));
    m->cfg.schedule = cfg->schedule;
    m->cfg.update_after_step = cfg->update_after_step;
    m->cfg.inv_gamma = cfg->inv_gamma;
    m->cfg.power = cfg->power;
    m->cfg.min_decay = cfg->min_decay;
    m->cfg.step_gap = cfg->step_gap;
    m->cfg.nonfinite = cfg->nonfinite;
    m->version++;
    return 0;
}

int
store_drop_model(store *s, const char *name, size_t len, store_err *err)
{
    model *m = store_model_get(s, name, len, err);
    txn **pp;

    if (m == NULL)
        return err->code;
    for (pp = &s->txns; *pp != NULL;) {
        txn *t = *pp;
        if (t->model_len == len && memcmp(t->model, name, len) == 0) {
            *pp = t->next;
            s->ntxns--;
            txn_discard(s, t);
        } else {
            pp = &t->next;
        }
    }
    strmap_del(s->index, m->name, len);
    for (size_t i = 0; i < s->nmodels; i++) {
        if (s->models[i] == m) {
            memmove(&s->models[i], &s->models[i + 1], (s->nmodels - i - 1) * sizeof(*s->models));
            s->nmodels--;
            break;
        }
    }
    model_free(m);
    return 0;
}

/* Is a tensor of this kind, dtype and name averaged under m's configuration? */
int
store_is_averaged(const model *m, int kind, int dtype, const char *name, size_t len)
{
    if (kind == EMAD_BUFFER && (m->cfg.buffers != EMAD_BUFFERS_AVERAGE || !dtype_is_float(dtype)))
        return 0;
    return !emaconf_match(m->cfg.copy, m->cfg.ncopy, name, len);
}

/* Check writer is one of m's writers; EMAD_ERANGE if not. */
int
store_check_writer(const model *m, uint32_t writer, store_err *err)
{
    if (writer >= m->cfg.writers)
        return store_fail(err, EMAD_ERANGE, NULL,
                          "model '%s' has %u writer%s: writer %u is out of range", m->name,
                          m->cfg.writers, m->cfg.writers == 1 ? "" : "s", writer);
    return 0;
}

void
store_restore_done(model *m, uint64_t step)
{
    m->step = step;
    m->snap_version = m->version;
    m->snap_step = step;
    m->restored = 1;
    m->restored_step = step;
}

void
store_model_snapshotted(model *m, uint64_t version, uint64_t step)
{
    if (version > m->snap_version) {
        m->snap_version = version;
        m->snap_step = step;
    }
}

/* Has something last used at `used` been idle for timeout_ms at now_ms? */
static int
idle(uint64_t used, uint64_t now_ms, uint64_t timeout_ms)
{
    return now_ms >= used && now_ms - used >= timeout_ms;
}

void
store_expire(store *s, uint64_t now_ms, uint64_t timeout_ms, uint64_t *txns, uint64_t *views,
             uint64_t *steps)
{
    for (txn **pp = &s->txns; *pp != NULL;) {
        txn *t = *pp;
        if (idle(t->last_used_ms, now_ms, timeout_ms)) {
            *pp = t->next;
            s->ntxns--;
            txn_discard(s, t);
            (*txns)++;
        } else {
            pp = &t->next;
        }
    }
    for (store_view **pp = &s->views; *pp != NULL;) {
        store_view *v = *pp;
        if (idle(v->last_used_ms, now_ms, timeout_ms)) {
            *pp = v->next;
            s->nviews--;
            store_view_free(v);
            (*views)++;
        } else {
            pp = &v->next;
        }
    }
    for (size_t i = 0; i < s->nmodels; i++) {
        model *m = s->models[i];
        for (pending **pp = &m->pending; *pp != NULL;) {
            pending *p = *pp;
            if (idle(p->last_used_ms, now_ms, timeout_ms)) {
                *pp = p->next;
                m->npending--;
                pending_free(p);
                (*steps)++;
            } else {
                pp = &p->next;
            }
        }
    }
}

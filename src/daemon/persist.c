/*
 * persist.c - snapshot scheduling on the loop, writing on the threadpool,
 * and loading at startup (see persist.h).
 *
 * One snapshot job runs at a time: a queue of model names feeds it. A job
 * holds views of every decay of its model (blob references), a copy of the
 * configuration and the model's version; the work callback writes the
 * files and prunes old ones, the after-work callback releases the views,
 * records the outcome and answers the requests waiting for it.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "common/cause.h"
#include "common/dtype.h"
#include "common/emaconf.h"
#include "base/log.h"
#include "daemon/persist.h"
#include "common/snapshot.h"
#include "files/snapdir.h"
#include "base/xmalloc.h"

/* Requests answered together ("snapshot every model"). */
typedef struct group {
    persist_cb cb;
    void *arg;
    size_t left;
    int rc;
    char message[256];
    uint64_t step;
} group;

/* A request waiting for a model's snapshot of at least `version`. */
typedef struct waiter {
    char *model;
    uint64_t version;
    persist_cb cb; /* or grp */
    void *arg;
    group *grp;
    struct waiter *next;
} waiter;

typedef struct job {
    uv_work_t work;
    persist *p;
    char *model;
    uint64_t uid, version, step;
    emad_model_config cfg;
    store_view *views[EMAD_MAX_DECAYS];
    size_t nviews;
    int rc;
    char *cause;
    uint64_t bytes, start_ms;
} job;

struct persist {
    uv_loop_t *loop;
    store *s;
    persist_config cfg;
    char *state_dir;
    uv_timer_t timer;
    char **queue;
    size_t nqueue, capqueue;
    job *running;
    waiter *waiters;
    persist_stats st;
    int shutting;
    void (*done)(void *arg);
    void *done_arg;
};

static uint64_t
unix_ms(void)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

static int
is_dirty(const model *m)
{
    return m->version != m->snap_version;
}

/* Add a model to the queue unless it is queued already. */
static void
enqueue(persist *p, const char *name)
{
    for (size_t i = 0; i < p->nqueue; i++)
        if (strcmp(p->queue[i], name) == 0)
            return;
    if (p->nqueue == p->capqueue) {
        p->capqueue = p->capqueue ? p->capqueue * 2 : 16;
        p->queue = xreallocarray(p->queue, p->capqueue, sizeof(*p->queue));
    }
    p->queue[p->nqueue++] = xstrndup(name, strlen(name));
}

/* Answer one waiter (and its group when the group is complete). */
static void
answer(waiter *w, int rc, const char *message, uint64_t step)
{
    group *g = w->grp;

    if (g == NULL) {
        w->cb(w->arg, rc, message, step);
        return;
    }
    if (rc != 0 && g->rc == 0) {
        g->rc = rc;
        snprintf(g->message, sizeof(g->message), "%s", message);
    }
    if (step > g->step)
        g->step = step;
    if (--g->left == 0) {
        g->cb(g->arg, g->rc, g->message, g->step);
        free(g);
    }
}

/*
 * Answer the waiters of a model: with rc != 0 all of them; with rc == 0
 * those satisfied by `version` (the others need a newer snapshot: the
 * model is queued again).
 */
static void
answer_model(persist *p, const char *name, int rc, const char *message, uint64_t version,
             uint64_t step)
{
    int again = 0;

    for (waiter **pp = &p->waiters; *pp != NULL;) {
        waiter *w = *pp;
        if (strcmp(w->model, name) != 0 || (rc == 0 && w->version > version)) {
            again |= strcmp(w->model, name) == 0;
            pp = &w->next;
            continue;
        }
        *pp = w->next;
        answer(w, rc, message, step);
        free(w->model);
        free(w);
    }
    if (again)
        enqueue(p, name);
}

/* Remove a model's snapshot directory and everything in it. */
static void
remove_model_dir(const persist *p, const char *name)
{
    int rc = snapdir_remove_model(p->state_dir, name);

    if (rc != 0)
        log_warn("event=snapshot_remove_failed model=%s error=\"%s\"", name, strerror(-rc));
}

/* Threadpool: write one file per decay, then prune. */
static void
job_work(uv_work_t *req)
{
    job *jb = req->data;
    const persist *p = jb->p;

    for (size_t j = 0; j < jb->nviews && jb->rc == 0; j++) {
        const store_view *v = jb->views[j];
        snapshot_tensor *t = xcalloc(v->ntensors ? v->ntensors : 1, sizeof(*t));
        snapshot_meta meta = {jb->model, jb->step, j, &jb->cfg};
        uint64_t bytes = 0;

        for (size_t i = 0; i < v->ntensors; i++) {
            const view_tensor *vt = &v->tensors[i];
            t[i] = (snapshot_tensor){.name = vt->name,
                                     .kind = vt->kind,
                                     .dtype = vt->dtype,
                                     .sdtype = vt->sdtype,
                                     .averaged = vt->averaged,
                                     .ndim = vt->ndim,
                                     .step = vt->step,
                                     .data = vt->data->data,
                                     .nbytes = vt->numel * dtype_size(vt->sdtype)};
            memcpy(t[i].shape, vt->shape, sizeof(t[i].shape));
        }
        jb->rc = snapdir_write(p->state_dir, &meta, t, v->ntensors, &bytes, &jb->cause);
        jb->bytes += bytes;
        free(t);
    }
    if (jb->rc == 0) {
        char *dir = snapdir_model_dir(p->state_dir, jb->model);
        (void)snapdir_prune(dir, jb->nviews, p->cfg.keep);
        free(dir);
    }
}

static void kick(persist *p);

/* Loop thread: release the views, record the outcome, answer waiters, go on. */
static void
job_done(uv_work_t *req, int status)
{
    job *jb = req->data;
    persist *p = jb->p;
    model *m = store_model_find(p->s, jb->model, strlen(jb->model));
    uint64_t dur = unix_ms() - jb->start_ms;

    if (status != 0 && jb->rc == 0)
        jb->rc = status;
    for (size_t j = 0; j < jb->nviews; j++)
        store_view_free(jb->views[j]);
    p->running = NULL;
    if (m == NULL || m->uid != jb->uid) {
        /* Dropped while the files were written: they must not bring it back. */
        remove_model_dir(p, jb->model);
        answer_model(p, jb->model, EMAD_ENOMODEL, "the model was dropped", 0, 0);
    } else if (jb->rc == 0) {
        store_model_snapshotted(m, jb->version, jb->step);
        p->st.written++;
        p->st.bytes += jb->bytes;
        p->st.last_success_unix_ms = unix_ms();
        p->st.last_duration_ms = dur;
        log_info("event=snapshot_written model=%s step=%llu files=%zu bytes=%llu duration_ms=%llu",
                 jb->model, (unsigned long long)jb->step, jb->nviews, (unsigned long long)jb->bytes,
                 (unsigned long long)dur);
        answer_model(p, jb->model, 0, "", jb->version, jb->step);
    } else {
        p->st.failed++;
        log_error("event=snapshot_failed model=%s step=%llu error=\"%s\" (previous snapshots kept; "
                  "retried at the next interval)",
                  jb->model, (unsigned long long)jb->step,
                  jb->cause != NULL ? jb->cause : "unknown");
        answer_model(p, jb->model, jb->rc, jb->cause != NULL ? jb->cause : "snapshot failed", 0, 0);
    }
    emaconf_free(&jb->cfg);
    free(jb->cause);
    free(jb->model);
    free(jb);
    kick(p);
}

/* Start a job for model m: freeze one view per decay. */
static int
start_job(persist *p, model *m)
{
    job *jb = xcalloc(1, sizeof(*jb));
    store_err err;
    int rc;

    jb->p = p;
    jb->model = xstrndup(m->name, strlen(m->name));
    jb->uid = m->uid;
    jb->version = m->version;
    jb->step = m->step;
    jb->start_ms = unix_ms();
    emaconf_copy(&jb->cfg, &m->cfg);
    for (size_t j = 0; j < m->cfg.ndecays; j++) {
        view_options vo = {1, m->cfg.decays[j], EMAD_DTYPE_INVALID};
        if (store_view_create(p->s, m->name, strlen(m->name), NULL, NULL, 0, &vo, &jb->views[j],
                              &err) != 0) {
            log_error("event=snapshot_failed model=%s error=\"%s\"", m->name, err.message);
            for (size_t k = 0; k < j; k++)
                store_view_free(jb->views[k]);
            emaconf_free(&jb->cfg);
            free(jb->model);
            free(jb);
            return err.code;
        }
        jb->nviews++;
    }
    jb->work.data = jb;
    if ((rc = uv_queue_work(p->loop, &jb->work, job_work, job_done)) != 0) {
        for (size_t k = 0; k < jb->nviews; k++)
            store_view_free(jb->views[k]);
        emaconf_free(&jb->cfg);
        free(jb->model);
        free(jb);
        return rc;
    }
    p->running = jb;
    return 0;
}

/* Start the next job if none runs; finish a shutdown when all is written. */
static void
kick(persist *p)
{
    while (p->running == NULL && p->nqueue > 0) {
        char *name = p->queue[0];
        model *m;
        int rc;

        memmove(p->queue, p->queue + 1, (p->nqueue - 1) * sizeof(*p->queue));
        p->nqueue--;
        m = store_model_find(p->s, name, strlen(name));
        if (m == NULL) {
            answer_model(p, name, EMAD_ENOMODEL, "the model was dropped", 0, 0);
        } else if (!is_dirty(m)) {
            answer_model(p, name, 0, "", m->snap_version, m->snap_step);
        } else if ((rc = start_job(p, m)) != 0) {
            p->st.failed++;
            answer_model(p, name, rc, "cannot start the snapshot", 0, 0);
        }
        free(name);
    }
    if (p->shutting && p->running == NULL && p->nqueue == 0 && p->done != NULL) {
        void (*done)(void *) = p->done;
        p->done = NULL;
        done(p->done_arg);
    }
}

/* Queue every model that changed since its last snapshot. */
static void
enqueue_dirty(persist *p)
{
    model *m;

    for (size_t i = 0; (m = store_model_at(p->s, i)) != NULL; i++)
        if (is_dirty(m))
            enqueue(p, m->name);
}

static void
on_interval(uv_timer_t *t)
{
    persist *p = t->data;

    enqueue_dirty(p);
    kick(p);
}

persist *
persist_create(uv_loop_t *loop, store *s, const persist_config *cfg, const persist_stats *loaded)
{
    persist *p = xcalloc(1, sizeof(*p));

    p->loop = loop;
    p->s = s;
    p->cfg = *cfg;
    p->state_dir = xstrndup(cfg->state_dir, strlen(cfg->state_dir));
    p->cfg.state_dir = p->state_dir;
    if (loaded != NULL) {
        p->st.loaded = loaded->loaded;
        p->st.broken = loaded->broken;
    }
    uv_timer_init(loop, &p->timer);
    p->timer.data = p;
    if (cfg->interval_ms > 0)
        uv_timer_start(&p->timer, on_interval, cfg->interval_ms, cfg->interval_ms);
    return p;
}

/* Add a waiter for model's current version. */
static void
wait_for(persist *p, const model *m, persist_cb cb, void *arg, group *grp)
{
    waiter *w = xcalloc(1, sizeof(*w));

    w->model = xstrndup(m->name, strlen(m->name));
    w->version = m->version;
    w->cb = cb;
    w->arg = arg;
    w->grp = grp;
    w->next = p->waiters;
    p->waiters = w;
    enqueue(p, m->name);
}

void
persist_request(persist *p, const char *name, persist_cb cb, void *arg)
{
    model *m;

    if (name != NULL) {
        if ((m = store_model_find(p->s, name, strlen(name))) == NULL) {
            cb(arg, EMAD_ENOMODEL, "no such model", 0);
            return;
        }
        if (!is_dirty(m)) {
            cb(arg, 0, "", m->snap_step);
            return;
        }
        wait_for(p, m, cb, arg, NULL);
    } else {
        group *g = xcalloc(1, sizeof(*g));
        g->cb = cb;
        g->arg = arg;
        g->left = 1; /* held until every waiter is added */
        for (size_t i = 0; (m = store_model_at(p->s, i)) != NULL; i++) {
            if (is_dirty(m)) {
                g->left++;
                wait_for(p, m, NULL, NULL, g);
            } else if (m->snap_step > g->step) {
                g->step = m->snap_step;
            }
        }
        waiter self = {.grp = g};
        answer(&self, 0, "", 0);
    }
    kick(p);
}

void
persist_forget(persist *p, const char *name)
{
    for (size_t i = 0; i < p->nqueue; i++) {
        if (strcmp(p->queue[i], name) == 0) {
            free(p->queue[i]);
            memmove(&p->queue[i], &p->queue[i + 1], (p->nqueue - i - 1) * sizeof(*p->queue));
            p->nqueue--;
            break;
        }
    }
    answer_model(p, name, EMAD_ENOMODEL, "the model was dropped", 0, 0);
    remove_model_dir(p, name); /* a running job for it cleans up again when it ends */
}

void
persist_shutdown(persist *p, void (*done)(void *arg), void *arg)
{
    p->done = done;
    p->done_arg = arg;
    if (!p->shutting) {
        p->shutting = 1;
        uv_timer_stop(&p->timer);
        uv_close((uv_handle_t *)&p->timer, NULL);
    }
    enqueue_dirty(p);
    kick(p);
}

void
persist_set_interval(persist *p, uint64_t interval_ms)
{
    if (p->shutting || interval_ms == p->cfg.interval_ms)
        return;
    p->cfg.interval_ms = interval_ms;
    uv_timer_stop(&p->timer);
    if (interval_ms > 0)
        uv_timer_start(&p->timer, on_interval, interval_ms, interval_ms);
}

void
persist_stats_get(const persist *p, persist_stats *st)
{
    *st = p->st;
    st->running = p->running != NULL;
}

void
persist_destroy(persist *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->nqueue; i++)
        free(p->queue[i]);
    free(p->queue);
    while (p->waiters != NULL) {
        waiter *w = p->waiters;
        p->waiters = w->next;
        free(w->model);
        free(w);
    }
    free(p->state_dir);
    free(p);
}

/* ---- loading -------------------------------------------------------------------------------- */

/* Restore a model from a verified set of files (one per decay). */
static int
restore(store *s, snapshot_file *const *files, size_t n, char **cause)
{
    const snapshot_file *f0 = files[0];
    store_err err;
    model *m;
    int created;

    if (store_create_model(s, f0->model, strlen(f0->model), &f0->cfg, 0, &created, &err) != 0)
        return cause_set(cause, err.code, "%s", err.message);
    m = store_model_find(s, f0->model, strlen(f0->model));
    for (size_t i = 0; i < f0->ntensors; i++) {
        const snapshot_tensor *t = &f0->tensors[i];
        const void *shadows[EMAD_MAX_DECAYS] = {t->data};

        for (size_t j = 1; t->averaged && j < n; j++) {
            const snapshot_tensor *o = NULL;
            for (size_t k = 0; k < files[j]->ntensors && o == NULL; k++)
                if (strcmp(files[j]->tensors[k].name, t->name) == 0)
                    o = &files[j]->tensors[k];
            if (o == NULL || o->nbytes != t->nbytes || o->sdtype != t->sdtype) {
                (void)store_drop_model(s, f0->model, strlen(f0->model), &err);
                return cause_set(cause, EMAD_EFORMAT, "decay %zu has no matching tensor '%s'", j,
                                 t->name);
            }
            shadows[j] = o->data;
        }
        if (store_restore_tensor(m, t->name, t->kind, t->dtype, t->averaged, t->ndim, t->shape,
                                 t->step, shadows, &err) != 0) {
            (void)store_drop_model(s, f0->model, strlen(f0->model), &err);
            return cause_set(cause, EMAD_EFORMAT, "%s", err.message);
        }
    }
    store_restore_done(m, f0->step);
    return 0;
}

/*
 * Try one step of a model: read every decay's file. 0 when restored; 1
 * when the set is incomplete (a file missing); -1 when a file is bad (it
 * is renamed *.broken).
 */
static int
try_step(const char *dir, const char *name, uint64_t step, store *s, persist_stats *st)
{
    snapshot_file *files[EMAD_MAX_DECAYS] = {0};
    size_t n = 1, got = 0;
    int result = 0;

    for (size_t j = 0; j < n; j++) {
        char *path = snapdir_path(dir, step, j), *cause = NULL;
        int rc;

        if (access(path, F_OK) != 0) {
            log_warn("event=snapshot_incomplete model=%s step=%llu missing=%s", name,
                     (unsigned long long)step, path);
            free(path);
            result = 1;
            break;
        }
        rc = snapshot_read(path, &files[j], &cause);
        if (rc == 0 && (strcmp(files[j]->model, name) != 0 || files[j]->step != step ||
                        files[j]->decay_index != j ||
                        (j > 0 && emaconf_diff(&files[0]->cfg, &files[j]->cfg, 0) != NULL))) {
            rc = EMAD_EFORMAT;
            free(cause);
            cause = xstrndup("metadata does not match the file's name or its set",
                             strlen("metadata does not match the file's name or its set"));
        }
        if (rc != 0) {
            st->broken++;
            log_error(
                "event=snapshot_broken model=%s step=%llu file=%s error=\"%s\" action=renamed "
                "to %s.broken; trying the previous snapshot",
                name, (unsigned long long)step, path, cause != NULL ? cause : "?", path);
            (void)snapdir_mark_broken(path);
            free(cause);
            free(path);
            result = -1;
            break;
        }
        if (j == 0)
            n = files[0]->cfg.ndecays;
        got++;
        free(path);
    }
    if (result == 0) {
        char *cause = NULL;
        if (restore(s, files, n, &cause) != 0) {
            log_error("event=snapshot_unusable model=%s step=%llu error=\"%s\"", name,
                      (unsigned long long)step, cause != NULL ? cause : "?");
            result = -1;
        }
        free(cause);
    }
    for (size_t j = 0; j < got; j++)
        snapshot_file_free(files[j]);
    return result;
}

int
persist_load(const persist_config *cfg, store *s, persist_stats *st, char **cause)
{
    char **names = NULL;
    size_t n = 0, loaded = 0, failed = 0;
    int rc;

    memset(st, 0, sizeof(*st));
    *cause = NULL;
    if ((rc = snapdir_list_models(cfg->state_dir, &names, &n)) != 0 && rc != -ENOENT) {
        return cause_set(cause, rc, "cannot list snapshots in %s: %s", cfg->state_dir,
                         strerror(-rc));
    }
    for (size_t i = 0; i < n; i++) {
        char *dir = snapdir_model_dir(cfg->state_dir, names[i]);
        uint64_t *steps = NULL;
        size_t nsteps = 0, k;
        int ok = 0;

        size_t temps = snapdir_remove_temps(dir);
        if (temps > 0)
            log_info("event=snapshot_temps_removed model=%s count=%zu (left by a write that did "
                     "not finish)",
                     names[i], temps);
        if (snapdir_list_steps(dir, &steps, &nsteps) == 0) {
            for (k = 0; k < nsteps && !ok; k++)
                ok = try_step(dir, names[i], steps[k], s, st) == 0;
        }
        if (ok) {
            const model *m = store_model_find(s, names[i], strlen(names[i]));
            loaded++;
            st->loaded++;
            log_info("event=snapshot_loaded model=%s step=%llu tensors=%zu decays=%zu%s", names[i],
                     (unsigned long long)m->step, m->ntensors, m->cfg.ndecays,
                     k > 1 ? " (newer snapshots were unusable: see above)" : "");
        } else if (nsteps > 0) {
            failed++;
            log_error("event=snapshot_unloadable model=%s dir=%s (no usable snapshot; the model "
                      "starts empty unless --require-snapshot)",
                      names[i], dir);
        }
        free(steps);
        free(dir);
        free(names[i]);
    }
    free(names);
    if (cfg->require && (failed > 0 || loaded == 0)) {
        return cause_set(cause, EMAD_EFORMAT, "--require-snapshot: %s",
                         loaded == 0 && failed == 0
                             ? "no snapshot found in the state directory"
                             : "a model has no loadable snapshot (see the log)");
    }
    return 0;
}

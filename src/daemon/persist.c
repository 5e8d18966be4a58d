/*
 * persist.c - snapshot scheduling on the loop, writing on the threadpool,
 * and loading at startup (see persist.h).
 *
 * Every model the scheduler knows has an entry (a strmap from its name).
 * An entry is in at most one of two queues: `urgent` (a `snapshot`
 * request waits for it) and `periodic` (the interval timer). Jobs start
 * from the head of `urgent` first, so a request never waits behind
 * periodic work (but after PERSIST_URGENT_RUN urgent jobs in a row one
 * periodic job goes first, so a client that keeps asking cannot starve
 * the other models); a model queued twice is written once, and a model is
 * never written by two jobs at a time (a request that comes while its job
 * runs queues it again when that job ends, if it then still needs a newer
 * snapshot). Up to PERSIST_JOBS jobs run at a time on the threadpool
 * (PERSIST_JOBS_SHUTDOWN once SIGTERM came, when nothing else needs the
 * pool), at most one of them for a large model (a large job's views can
 * make pushes copy its tensors: one at a time bounds that memory), so one
 * slow model never holds up the others.
 *
 * A job holds views of every decay of its model (blob references), a copy
 * of the configuration and the model's version; the work callback writes
 * the files and prunes old ones, the after-work callback releases the
 * views, records the outcome and answers the requests waiting for it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "base/log.h"
#include "base/strmap.h"
#include "base/xmalloc.h"
#include "common/cause.h"
#include "common/dtype.h"
#include "common/emaconf.h"
#include "common/snapshot.h"
#include "daemon/persist.h"
#include "files/snapdir.h"

/* Requests answered together ("snapshot every model"). */
typedef struct group {
    persist_cb cb;
    void *arg;
    size_t left;
    int rc;
    char message[256];
    uint64_t step;
} group;

/* A request waiting for its model's snapshot of at least `version`. */
typedef struct waiter {
    uint64_t version;
    persist_cb cb; /* or grp */
    void *arg;
    group *grp;
    struct waiter *next;
} waiter;

enum { Q_NONE, Q_PERIODIC, Q_URGENT };

/* What the scheduler knows of one model (by name). */
typedef struct pentry {
    char *name;
    int queued;  /* Q_NONE or the queue it is in */
    int running; /* a job writes it now */
    int requeue; /* asked for again while running: Q_PERIODIC or Q_URGENT */
    waiter *waiters;
    struct pentry *prev, *next; /* in its queue */
} pentry;

typedef struct queue {
    pentry *head, *tail;
} queue;

typedef struct job {
    uv_work_t work;
    persist *p;
    char *model;
    uint64_t uid, version, step;
    emad_model_config cfg;
    store_view *views[EMAD_MAX_DECAYS];
    size_t nviews;
    int large;
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
    strmap *entries;
    queue urgent, periodic;
    size_t running, running_large;
    unsigned urgent_run; /* urgent entries taken in a row */
    persist_stats st;
    int shutting, stopped;
    persist_done_cb done;
    void *done_arg;
};

static uint64_t
unix_ms(void)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

/*
 * Has m changed since its last snapshot? A model being installed from a peer
 * (cluster resync) is not written until it is complete: its snapshot keeps
 * the state it had before, which a restart then resyncs anyway.
 */
static int
is_dirty(const model *m)
{
    return m->version != m->snap_version && m->resyncing != 1;
}

/* Is m large: its jobs run one at a time? */
static int
is_large(const model *m)
{
    return m->shadow_bytes > PERSIST_LARGE_BYTES;
}

/* The entry of a model, created if missing. */
static pentry *
entry_get(persist *p, const char *name)
{
    size_t len = strlen(name);
    pentry *e = strmap_get(p->entries, name, len);

    if (e == NULL) {
        e = xcalloc(1, sizeof(*e));
        e->name = xstrndup(name, len);
        strmap_put(p->entries, e->name, len, e);
    }
    return e;
}

/* Free an entry that is idle: not queued, not running, nobody waiting. */
static void
entry_release(persist *p, pentry *e)
{
    if (e->queued != Q_NONE || e->running || e->waiters != NULL)
        return;
    (void)strmap_del(p->entries, e->name, strlen(e->name));
    free(e->name);
    free(e);
}

static void
queue_push(queue *q, pentry *e)
{
    e->next = NULL;
    e->prev = q->tail;
    if (q->tail != NULL)
        q->tail->next = e;
    else
        q->head = e;
    q->tail = e;
}

static void
queue_unlink(queue *q, pentry *e)
{
    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        q->head = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    else
        q->tail = e->prev;
    e->prev = e->next = NULL;
}

/* The queue an entry is in. */
static queue *
queue_of(persist *p, const pentry *e)
{
    return e->queued == Q_URGENT ? &p->urgent : &p->periodic;
}

/*
 * Queue a model (urgent: ahead of periodic work). Already queued: it stays
 * where it is (moved to urgent if asked urgently); running: queued again
 * when its job ends.
 */
static void
enqueue(persist *p, pentry *e, int urgent)
{
    int want = urgent ? Q_URGENT : Q_PERIODIC;

    if (p->stopped)
        return;
    if (e->running) {
        if (want > e->requeue)
            e->requeue = want;
        return;
    }
    if (e->queued >= want)
        return;
    if (e->queued != Q_NONE)
        queue_unlink(queue_of(p, e), e);
    e->queued = want;
    queue_push(queue_of(p, e), e);
}

/* Answer one waiter (and its group when the group is complete); frees w. */
static void
answer(waiter *w, int rc, const char *message, uint64_t step)
{
    group *g = w->grp;

    if (g == NULL) {
        w->cb(w->arg, rc, message, step);
    } else {
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
    free(w);
}

/*
 * Answer the waiters of an entry: with rc != 0 all of them; with rc == 0
 * those satisfied by `version`. Returns 1 if some wait for a newer one.
 */
static int
answer_entry(pentry *e, int rc, const char *message, uint64_t version, uint64_t step)
{
    int again = 0;

    for (waiter **pp = &e->waiters; *pp != NULL;) {
        waiter *w = *pp;
        if (rc == 0 && w->version > version) {
            again = 1;
            pp = &w->next;
            continue;
        }
        *pp = w->next;
        answer(w, rc, message, step);
    }
    return again;
}

/* Remove a model's snapshot directory (its own files; anything else is left and logged). */
static void
remove_model_dir(const persist *p, const char *name)
{
    int rc = snapdir_remove_model(p->state_dir, name);

    if (rc != 0 && rc != -ENOTEMPTY && rc != -ELOOP && rc != -ENOTDIR) /* those are logged */
        log_warn("event=snapshot_remove_failed model=%s error=\"%s\"", name, strerror(-rc));
}

/* Threadpool: write one file per decay, then prune. */
static void
job_work(uv_work_t *req)
{
    job *jb = req->data;
    const persist *p = jb->p;
    int mfd;

    if (p->cfg.write_hook != NULL)
        p->cfg.write_hook(p->cfg.write_hook_arg, jb->model);
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
    if (jb->rc == 0 && (mfd = snapdir_open_model(p->state_dir, jb->model, 0)) >= 0) {
        (void)snapdir_prune(mfd, jb->nviews, p->cfg.keep);
        (void)close(mfd);
    }
}

static void kick(persist *p);

/* Free a job and release its views. */
static void
job_free(job *jb)
{
    for (size_t j = 0; j < jb->nviews; j++)
        store_view_free(jb->views[j]);
    emaconf_free(&jb->cfg);
    free(jb->cause);
    free(jb->model);
    free(jb);
}

/* Loop thread: release the views, record the outcome, answer waiters, go on. */
static void
job_done(uv_work_t *req, int status)
{
    job *jb = req->data;
    persist *p = jb->p;
    model *m = store_model_find(p->s, jb->model, strlen(jb->model));
    pentry *e = entry_get(p, jb->model);
    uint64_t dur = unix_ms() - jb->start_ms;
    int again = 0;

    if (status != 0 && jb->rc == 0)
        jb->rc = status;
    p->running--;
    p->running_large -= (size_t)jb->large;
    e->running = 0;
    if (m == NULL || m->uid != jb->uid) {
        /* Dropped while the files were written: they must not bring it back. */
        remove_model_dir(p, jb->model);
        again = e->waiters != NULL; /* the old model's were answered by persist_forget */
    } else if (jb->rc == 0) {
        store_model_snapshotted(m, jb->version, jb->step);
        p->st.written++;
        p->st.bytes += jb->bytes;
        p->st.last_success_unix_ms = unix_ms();
        p->st.last_duration_ms = dur;
        log_info("event=snapshot_written model=%s step=%llu files=%zu bytes=%llu duration_ms=%llu",
                 jb->model, (unsigned long long)jb->step, jb->nviews, (unsigned long long)jb->bytes,
                 (unsigned long long)dur);
        again = answer_entry(e, 0, "", jb->version, jb->step);
    } else {
        p->st.failed++;
        log_error("event=snapshot_failed model=%s step=%llu error=%s (previous snapshots kept; "
                  "%s)",
                  jb->model, (unsigned long long)jb->step,
                  LOG_STR(jb->cause != NULL ? jb->cause : "unknown"),
                  p->shutting ? "not written at shutdown" : "retried at the next interval");
        (void)answer_entry(e, jb->rc, jb->cause != NULL ? jb->cause : "snapshot failed", 0, 0);
        e->requeue = Q_NONE; /* a failed write is retried by the timer, not at once */
    }
    if (again || e->requeue != Q_NONE)
        enqueue(p, e, again || e->requeue == Q_URGENT);
    e->requeue = Q_NONE;
    entry_release(p, e);
    job_free(jb);
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
    jb->large = is_large(m);
    jb->start_ms = unix_ms();
    emaconf_copy(&jb->cfg, &m->cfg);
    for (size_t j = 0; j < m->cfg.ndecays; j++) {
        view_options vo = {1, m->cfg.decays[j], EMAD_DTYPE_INVALID};
        if (store_view_create(p->s, m->name, strlen(m->name), NULL, NULL, 0, &vo, &jb->views[j],
                              &err) != 0) {
            log_error("event=snapshot_failed model=%s error=%s", m->name, LOG_STR(err.message));
            job_free(jb);
            return err.code;
        }
        jb->nviews++;
    }
    jb->work.data = jb;
    if ((rc = uv_queue_work(p->loop, &jb->work, job_work, job_done)) != 0) {
        job_free(jb);
        return rc;
    }
    p->running++;
    p->running_large += (size_t)jb->large;
    return 0;
}

/*
 * The next entry to write: the first of the urgent queue, else of the
 * periodic one, that can start now (a large model waits while another
 * large one is written); after PERSIST_URGENT_RUN urgent ones in a row,
 * periodic work goes first once, so requests cannot starve it. NULL if none.
 */
static pentry *
next_entry(persist *p)
{
    int periodic_first = p->urgent_run >= PERSIST_URGENT_RUN;
    queue *qs[2] = {periodic_first ? &p->periodic : &p->urgent,
                    periodic_first ? &p->urgent : &p->periodic};

    for (int q = 0; q < 2; q++) {
        for (pentry *e = qs[q]->head; e != NULL; e = e->next) {
            const model *m = store_model_find(p->s, e->name, strlen(e->name));

            if (m == NULL || p->running_large == 0 || !is_large(m))
                return e;
        }
    }
    return NULL;
}

/* Jobs that may run at once now. */
static size_t
job_limit(const persist *p)
{
    return p->shutting ? PERSIST_JOBS_SHUTDOWN : PERSIST_JOBS;
}

/* Start jobs while there is room; finish a shutdown when all is written. */
static void
kick(persist *p)
{
    pentry *e;

    while (p->running < job_limit(p) && (e = next_entry(p)) != NULL) {
        model *m;
        int rc;

        p->urgent_run = e->queued == Q_URGENT ? p->urgent_run + 1 : 0;
        queue_unlink(queue_of(p, e), e);
        e->queued = Q_NONE;
        m = store_model_find(p->s, e->name, strlen(e->name));
        if (m == NULL) {
            (void)answer_entry(e, EMAD_ENOMODEL, "the model was dropped", 0, 0);
        } else if (!is_dirty(m)) {
            (void)answer_entry(e, 0, "", m->snap_version, m->snap_step);
        } else if ((rc = start_job(p, m)) != 0) {
            p->st.failed++;
            (void)answer_entry(e, rc, "cannot start the snapshot", 0, 0);
        } else {
            e->running = 1;
            continue;
        }
        entry_release(p, e);
    }
    if (p->shutting && p->running == 0 && p->urgent.head == NULL && p->periodic.head == NULL &&
        p->done != NULL) {
        persist_done_cb done = p->done;
        p->done = NULL;
        done(p->done_arg, persist_unwritten(p, NULL, 0));
    }
}

/* Queue every model that changed since its last snapshot. */
static void
enqueue_dirty(persist *p)
{
    model *m;

    for (size_t i = 0; (m = store_model_at(p->s, i)) != NULL; i++)
        if (is_dirty(m))
            enqueue(p, entry_get(p, m->name), 0);
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
    p->entries = strmap_create();
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

/* Add a waiter for model's current version and queue the model urgently. */
static void
wait_for(persist *p, const model *m, persist_cb cb, void *arg, group *grp)
{
    pentry *e = entry_get(p, m->name);
    waiter *w = xcalloc(1, sizeof(*w));

    w->version = m->version;
    w->cb = cb;
    w->arg = arg;
    w->grp = grp;
    w->next = e->waiters;
    e->waiters = w;
    enqueue(p, e, 1);
}

void
persist_request(persist *p, const char *name, persist_cb cb, void *arg)
{
    model *m;

    if (p->stopped) {
        cb(arg, EMAD_EINVAL, "the daemon is shutting down", 0);
        return;
    }
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
        waiter *self = xcalloc(1, sizeof(*self));
        self->grp = g;
        answer(self, 0, "", 0);
    }
    kick(p);
}

void
persist_forget(persist *p, const char *name)
{
    pentry *e = strmap_get(p->entries, name, strlen(name));

    if (e != NULL) {
        if (e->queued != Q_NONE) {
            queue_unlink(queue_of(p, e), e);
            e->queued = Q_NONE;
        }
        (void)answer_entry(e, EMAD_ENOMODEL, "the model was dropped", 0, 0);
        entry_release(p, e);
    }
    remove_model_dir(p, name); /* a running job for it cleans up again when it ends */
}

/* Empty both queues, answering their waiters with rc. */
static void
drop_queued(persist *p, int rc, const char *message)
{
    queue *qs[2] = {&p->urgent, &p->periodic};

    for (int q = 0; q < 2; q++) {
        pentry *e;
        while ((e = qs[q]->head) != NULL) {
            queue_unlink(qs[q], e);
            e->queued = Q_NONE;
            (void)answer_entry(e, rc, message, 0, 0);
            entry_release(p, e);
        }
    }
}

void
persist_shutdown(persist *p, persist_done_cb done, void *arg)
{
    p->done = done;
    p->done_arg = arg;
    if (!p->shutting) {
        p->shutting = 1;
        uv_timer_stop(&p->timer);
        uv_close((uv_handle_t *)&p->timer, NULL);
    }
    if (done == NULL) {
        /* Stop: the running writes end, nothing new starts. */
        p->stopped = 1;
        drop_queued(p, EMAD_EINVAL, "the daemon is shutting down");
        return;
    }
    enqueue_dirty(p);
    kick(p);
}

size_t
persist_unwritten(persist *p, char *names, size_t size)
{
    size_t n = 0, used = 0;
    model *m;

    if (names != NULL && size > 0)
        names[0] = '\0';
    for (size_t i = 0; (m = store_model_at(p->s, i)) != NULL; i++) {
        if (!is_dirty(m))
            continue;
        if (names != NULL && used < size) {
            int w = snprintf(names + used, size - used, "%s%s", n > 0 ? "," : "", m->name);
            used += w > 0 ? (size_t)w : 0;
            if (used >= size && size > 4)
                memcpy(names + size - 4, "...", 4);
        }
        n++;
    }
    return n;
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
    st->running = p->running;
}

void
persist_destroy(persist *p)
{
    if (p == NULL)
        return;
    p->stopped = 1;
    drop_queued(p, EMAD_EINVAL, "the daemon is shutting down");
    strmap_destroy(p->entries); /* every entry was released with its queue and its job */
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
 * Try one step of a model in the directory open on mfd (dir names it in
 * messages): read every decay's file. 0 when restored; 1 when the set is
 * incomplete (a file missing); -1 when a file is bad (it is renamed
 * *.broken).
 */
static int
try_step(int mfd, const char *dir, const char *name, uint64_t step, store *s, persist_stats *st)
{
    snapshot_file *files[EMAD_MAX_DECAYS] = {0};
    size_t n = 1, got = 0;
    int result = 0;

    for (size_t j = 0; j < n; j++) {
        char file[64], *cause = NULL;
        int rc;

        snprintf(file, sizeof(file), SNAPSHOT_NAME_FMT, step, j);
        if (faccessat(mfd, file, F_OK, AT_SYMLINK_NOFOLLOW) != 0) {
            log_warn("event=snapshot_incomplete model=%s step=%llu missing=%s/%s", name,
                     (unsigned long long)step, dir, file);
            result = 1;
            break;
        }
        rc = snapshot_read_at(mfd, file, &files[j], &cause);
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
            log_error("event=snapshot_broken model=%s step=%llu file=%s/%s error=%s action=renamed "
                      "to %s.broken; trying the previous snapshot",
                      name, (unsigned long long)step, dir, file,
                      LOG_STR(cause != NULL ? cause : "?"), file);
            (void)snapdir_mark_broken(mfd, file);
            free(cause);
            result = -1;
            break;
        }
        if (j == 0)
            n = files[0]->cfg.ndecays;
        got++;
    }
    if (result == 0) {
        char *cause = NULL;
        if (restore(s, files, n, &cause) != 0) {
            log_error("event=snapshot_unusable model=%s step=%llu error=%s", name,
                      (unsigned long long)step, LOG_STR(cause != NULL ? cause : "?"));
            result = -1;
        }
        free(cause);
    }
    for (size_t j = 0; j < got; j++)
        snapshot_file_free(files[j]);
    return result;
}

/*
 * Load one model from the newest usable step in its directory. Returns 1
 * if loaded, 0 if it has no snapshot file, -1 if none of its steps loads.
 */
static int
load_model(const persist_config *cfg, const char *name, store *s, persist_stats *st)
{
    char *dir = snapdir_model_dir(cfg->state_dir, name);
    uint64_t *steps = NULL;
    size_t nsteps = 0, k, temps;
    int ok = 0, mfd;

    if ((mfd = snapdir_open_model(cfg->state_dir, name, 0)) < 0) {
        log_error("event=snapshot_unloadable model=%s dir=%s error=\"%s\"", name, dir,
                  strerror(-mfd));
        free(dir);
        return -1;
    }
    if ((temps = snapdir_remove_temps(mfd)) > 0)
        log_info("event=snapshot_temps_removed model=%s count=%zu (left by a write that did "
                 "not finish)",
                 name, temps);
    if (snapdir_list_steps(mfd, &steps, &nsteps) == 0) {
        for (k = 0; k < nsteps && !ok; k++)
            ok = try_step(mfd, dir, name, steps[k], s, st) == 0;
    }
    if (ok) {
        const model *m = store_model_find(s, name, strlen(name));
        log_info("event=snapshot_loaded model=%s step=%llu tensors=%zu decays=%zu%s", name,
                 (unsigned long long)m->step, m->ntensors, m->cfg.ndecays,
                 k > 1 ? " (newer snapshots were unusable: see above)" : "");
    } else if (nsteps > 0) {
        log_error("event=snapshot_unloadable model=%s dir=%s (no usable snapshot; the model "
                  "starts empty unless --require-snapshot)",
                  name, dir);
    }
    (void)close(mfd);
    free(steps);
    free(dir);
    return ok ? 1 : nsteps > 0 ? -1 : 0;
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
        rc = load_model(cfg, names[i], s, st);
        loaded += rc > 0;
        failed += rc < 0;
        free(names[i]);
    }
    st->loaded = loaded;
    free(names);
    if (cfg->require && (failed > 0 || loaded == 0)) {
        return cause_set(cause, EMAD_EFORMAT, "--require-snapshot: %s",
                         loaded == 0 && failed == 0
                             ? "no snapshot found in the state directory"
                             : "a model has no loadable snapshot (see the log)");
    }
    return 0;
}

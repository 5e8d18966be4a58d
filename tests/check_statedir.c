/*
 * check_statedir.c - the state directory is the daemon's alone, and its
 * snapshots are written fairly and never silently lost:
 *  - files/snapdir.c and common/snapshot.c facing a hostile directory: a
 *    model directory or a snapshot file that is a symlink, a FIFO named
 *    like a snapshot file, foreign files: nothing outside is written,
 *    read or removed, and nothing blocks;
 *  - daemon/persist.c's scheduler on a real loop and store: a request is
 *    not delayed by another model's slow write, goes ahead of periodic
 *    work and is written once, requests cannot starve periodic work,
 *    shutdown writes models in parallel and reports the ones it could not
 *    write;
 *  - the real emad: thousands of small models all come back after SIGTERM
 *    and a restart; a failed final snapshot exits with status 3 and names
 *    the model.
 * Timeouts are generous and scaled by EMAD_TEST_TIMEOUT_SCALE.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "emad.h"
#include "common/emaconf.h"
#include "common/snapshot.h"
#include "daemon/persist.h"
#include "files/snapdir.h"
#include "store/store.h"
#include "testutil.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* EMAD_TEST_TIMEOUT_SCALE (default 1) times seconds. */
static double
scaled(double seconds)
{
    const char *s = getenv("EMAD_TEST_TIMEOUT_SCALE");
    double k = s != NULL ? atof(s) : 1.0;

    return seconds * (k > 0 ? k : 1.0);
}

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* dir/name in one of four static buffers (so two can be arguments of one call). */
static const char *
pathf(const char *dir, const char *name)
{
    static char buf[4][1024];
    static int next;
    char *b = buf[next++ % 4];

    snprintf(b, sizeof(buf[0]), "%s/%s", dir, name);
    return b;
}

/* A symlink or a non-directory where a directory is opened with O_NOFOLLOW: -ELOOP or -ENOTDIR. */
static int
refused(int rc)
{
    return rc == -ELOOP || rc == -ENOTDIR;
}

/* Every entry below dir with size, mode and mtime (ns), one per line (malloc'd). */
static char *
tree_state(const char *dir)
{
    char cmd[1200], *out = NULL;

    snprintf(cmd, sizeof(cmd), "cd '%s' && find . -printf '%%p %%y %%s %%m %%T@ %%l\\n' | sort",
             dir);
    ck_assert_int_eq(tu_run(cmd, &out), 0);
    return out;
}

/* One model configuration: decay 0.5. */
static void
small_config(emad_model_config *cfg)
{
    emaconf_init(cfg);
    cfg->ndecays = 1;
    cfg->decays[0] = 0.5;
}

static const float small_data[4] = {1, 2, 3, 4};

/*
 * A files-layer test's setup: TOP/victim (outside the state dir) with two
 * files, its tree state before, TOP/state (not created), and one model's
 * configuration and one tensor to write.
 */
typedef struct hostile {
    char *top, victim[600], state[600], *before;
    emad_model_config cfg;
    snapshot_tensor t;
} hostile;

static void
hostile_init(hostile *h)
{
    memset(h, 0, sizeof(*h));
    h->top = tu_tmpdir();
    snprintf(h->victim, sizeof(h->victim), "%s/victim", h->top);
    snprintf(h->state, sizeof(h->state), "%s/state", h->top);
    ck_assert_int_eq(mkdir(h->victim, 0700), 0);
    ck_assert_int_eq(tu_write_file(pathf(h->victim, "precious.txt"), "keep me", 7), 0);
    ck_assert_int_eq(
        tu_write_file(pathf(h->victim, "00000000000000000003.d0.safetensors"), "x", 1), 0);
    h->before = tree_state(h->victim);
    small_config(&h->cfg);
    h->t = (snapshot_tensor){.name = "w",
                             .kind = EMAD_PARAM,
                             .dtype = EMAD_F32,
                             .sdtype = EMAD_F32,
                             .averaged = 1,
                             .ndim = 1,
                             .shape = {4},
                             .step = 5,
                             .data = small_data,
                             .nbytes = sizeof(small_data)};
}

/* Take the victim's state again (after the test moved a file there on purpose). */
static void
hostile_rebase(hostile *h)
{
    free(h->before);
    h->before = tree_state(h->victim);
}

/* Assert nothing in the victim changed (names, types, sizes, modes, mtimes), then clean up. */
static void
hostile_finish(hostile *h)
{
    char *after = tree_state(h->victim);

    ck_assert_str_eq(after, h->before);
    free(after);
    free(h->before);
    tu_rmtree(h->top);
    free(h->top);
}

/* ---- the files layer facing a hostile directory ------------------------------------------ */

START_TEST(test_statedir_write_never_goes_through_a_symlinked_model_dir)
{
    hostile h;
    snapshot_meta m = {"linked", 5, 0, &h.cfg};
    char *cause = NULL;

    hostile_init(&h);
    ck_assert_int_eq(mkdir(h.state, 0700), 0);
    ck_assert_int_eq(mkdir(pathf(h.state, "snapshots"), 0700), 0);
    ck_assert_int_eq(symlink(h.victim, pathf(h.state, "snapshots/linked")), 0);

    ck_assert_int_eq(snapdir_write(h.state, &m, &h.t, 1, NULL, &cause), EMAD_EIO);
    ck_assert_msg(strstr(cause, "snapshots/linked") != NULL &&
                      strstr(cause, "symbolic links are never followed") != NULL,
                  "%s", cause);
    free(cause);
    ck_assert(refused(snapdir_open_model(h.state, "linked", 0)));
    ck_assert(refused(snapdir_open_model(h.state, "linked", 1)));

    /* The snapshots directory itself as a symlink is refused the same way. */
    ck_assert_int_eq(rename(pathf(h.state, "snapshots"), pathf(h.top, "moved")), 0);
    ck_assert_int_eq(symlink(h.victim, pathf(h.state, "snapshots")), 0);
    m.model = "fresh";
    cause = NULL;
    ck_assert_int_eq(snapdir_write(h.state, &m, &h.t, 1, NULL, &cause), EMAD_EIO);
    free(cause);
    hostile_finish(&h);
}
END_TEST

START_TEST(test_statedir_remove_model_removes_only_its_own_files)
{
    hostile h;
    snapshot_meta m = {"own", 5, 0, &h.cfg};
    char mdir[700], *list, *cause = NULL, cmd[900];

    hostile_init(&h);
    ck_assert_int_eq(snapdir_write(h.state, &m, &h.t, 1, NULL, &cause), 0);
    snprintf(mdir, sizeof(mdir), "%s/snapshots/own", h.state);
    /* A foreign file, a snapshot-named symlink to the victim, a .broken, a temp, a subdir. */
    ck_assert_int_eq(tu_write_file(pathf(mdir, "notes.txt"), "mine", 4), 0);
    ck_assert_int_eq(symlink(pathf(h.victim, "00000000000000000003.d0.safetensors"),
                             pathf(mdir, "00000000000000000003.d0.safetensors")),
                     0);
    ck_assert_int_eq(tu_write_file(pathf(mdir, "00000000000000000002.d0.safetensors.broken"), "b",
                                   1),
                     0);
    ck_assert_int_eq(tu_write_file(pathf(mdir, ".00000000000000000009.d0.safetensors.tmp.Ab12Cd"),
                                   "t", 1),
                     0);
    ck_assert_int_eq(mkdir(pathf(mdir, "00000000000000000004.d0.safetensors"), 0700), 0);

    ck_assert_int_eq(snapdir_remove_model(h.state, "own"), -ENOTEMPTY);
    snprintf(cmd, sizeof(cmd), "ls -A '%s' | tr '\\n' ,", mdir);
    ck_assert_int_eq(tu_run(cmd, &list), 0);
    ck_assert_str_eq(list, "00000000000000000003.d0.safetensors,00000000000000000004.d0.safetensors,"
                           "notes.txt,");
    free(list);

    /* A model directory that is a symlink is left as it is, and so is its target. */
    ck_assert_int_eq(symlink(h.victim, pathf(h.state, "snapshots/linked")), 0);
    ck_assert(refused(snapdir_remove_model(h.state, "linked")));
    ck_assert_int_eq(access(pathf(h.state, "snapshots/linked"), F_OK), 0);
    /* An invalid name never reaches the file system. */
    ck_assert_int_eq(snapdir_remove_model(h.state, ".."), -EINVAL);
    hostile_finish(&h);
}
END_TEST

START_TEST(test_statedir_fifos_and_symlinks_are_never_read)
{
    hostile h;
    snapshot_meta m = {"m", 7, 0, &h.cfg};
    char mdir[700], *cause = NULL, **names = NULL;
    snapshot_file *f = NULL;
    uint64_t *steps = NULL;
    size_t n = 0;
    int mfd;
    double t0;

    hostile_init(&h);
    ck_assert_int_eq(snapdir_write(h.state, &m, &h.t, 1, NULL, &cause), 0);
    snprintf(mdir, sizeof(mdir), "%s/snapshots/m", h.state);
    /* A valid snapshot moved to the victim, linked back under a newer step; a FIFO newer still. */
    ck_assert_int_eq(rename(pathf(mdir, "00000000000000000007.d0.safetensors"),
                            pathf(h.victim, "real.safetensors")),
                     0);
    hostile_rebase(&h);
    ck_assert_int_eq(symlink(pathf(h.victim, "real.safetensors"),
                             pathf(mdir, "00000000000000000008.d0.safetensors")),
                     0);
    ck_assert_int_eq(mkfifo(pathf(mdir, "00000000000000000009.d0.safetensors"), 0600), 0);
    ck_assert_int_eq(symlink(h.victim, pathf(h.state, "snapshots/linked")), 0);

    mfd = snapdir_open_model(h.state, "m", 0);
    ck_assert_int_ge(mfd, 0);
    ck_assert_int_eq(snapdir_list_steps(mfd, &steps, &n), 0);
    ck_assert_uint_eq(n, 0); /* neither the link nor the FIFO counts */
    free(steps);
    t0 = now_s();
    ck_assert_int_eq(snapshot_read_at(mfd, "00000000000000000009.d0.safetensors", &f, &cause),
                     EMAD_EIO);
    ck_assert_msg(strstr(cause, "not a regular file") != NULL, "%s", cause);
    free(cause);
    ck_assert_int_eq(snapshot_read_at(mfd, "00000000000000000008.d0.safetensors", &f, &cause),
                     EMAD_EIO);
    ck_assert_msg(strstr(cause, "symbolic link") != NULL, "%s", cause);
    free(cause);
    ck_assert(now_s() - t0 < scaled(30)); /* a FIFO never blocks the reader */
    ck_assert_ptr_null(f);
    /* A temp-named symlink is not removed as a temp, nor followed. */
    ck_assert_int_eq(symlink(pathf(h.victim, "precious.txt"),
                             pathf(mdir, ".00000000000000000010.d0.safetensors.tmp.Ab12Cd")),
                     0);
    ck_assert_uint_eq(snapdir_remove_temps(mfd), 0);
    ck_assert_uint_eq(snapdir_prune(mfd, 1, 1), 0);
    close(mfd);
    /* The symlinked model directory is not listed. */
    ck_assert_int_eq(snapdir_list_models(h.state, &names, &n), 0);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(names[0], "m");
    free(names[0]);
    free(names);
    hostile_finish(&h);
}
END_TEST

/* ---- the scheduler on a real loop and store ------------------------------------------------ */

/* What the write hook sees and controls (threadpool threads and the test). */
typedef struct sched {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char blocked[4][32]; /* models whose write waits until released (name cleared) */
    char order[64][32]; /* models in the order their writes started */
    int norder;
    int inside, max_inside, barrier; /* barrier: the first writes wait until this many run */
} sched;

static sched g_sched;

static void
sched_init(void)
{
    memset(&g_sched, 0, sizeof(g_sched));
    pthread_mutex_init(&g_sched.mu, NULL);
    pthread_cond_init(&g_sched.cv, NULL);
}

/* persist_config.write_hook: record, then wait while the model is blocked or at the barrier. */
static void
hook(void *arg, const char *mname)
{
    sched *s = arg;
    struct timespec until;
    int blocked = 0;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)scaled(60);
    pthread_mutex_lock(&s->mu);
    if (s->norder < (int)NELEM(s->order))
        snprintf(s->order[s->norder++], sizeof(s->order[0]), "%s", mname);
    s->inside++;
    if (s->inside > s->max_inside)
        s->max_inside = s->inside;
    pthread_cond_broadcast(&s->cv);
    for (;;) {
        blocked = 0;
        for (size_t i = 0; i < NELEM(s->blocked); i++)
            blocked |= strcmp(s->blocked[i], mname) == 0;
        if (!blocked && (s->barrier == 0 || s->max_inside >= s->barrier))
            break;
        if (pthread_cond_timedwait(&s->cv, &s->mu, &until) == ETIMEDOUT)
            break;
    }
    s->inside--;
    pthread_mutex_unlock(&s->mu);
}

/* Let the blocked write of model (NULL: of every model) go on. */
static void
sched_release(const char *mname)
{
    pthread_mutex_lock(&g_sched.mu);
    for (size_t i = 0; i < NELEM(g_sched.blocked); i++)
        if (mname == NULL || strcmp(g_sched.blocked[i], mname) == 0)
            g_sched.blocked[i][0] = '\0';
    pthread_cond_broadcast(&g_sched.cv);
    pthread_mutex_unlock(&g_sched.mu);
}

/* Position of model in the write order, or -1. */
static int
sched_pos(const char *mname)
{
    int pos = -1;

    pthread_mutex_lock(&g_sched.mu);
    for (int i = 0; i < g_sched.norder && pos < 0; i++)
        if (strcmp(g_sched.order[i], mname) == 0)
            pos = i;
    pthread_mutex_unlock(&g_sched.mu);
    return pos;
}

/* Times model's write started. */
static int
sched_count(const char *mname)
{
    int n = 0;

    pthread_mutex_lock(&g_sched.mu);
    for (int i = 0; i < g_sched.norder; i++)
        n += strcmp(g_sched.order[i], mname) == 0;
    pthread_mutex_unlock(&g_sched.mu);
    return n;
}

/* A request's outcome. */
typedef struct answer_rec {
    int calls, rc;
    uint64_t step;
} answer_rec;

static void
on_answer(void *arg, int rc, const char *message, uint64_t step)
{
    answer_rec *a = arg;

    (void)message;
    a->calls++;
    a->rc = rc;
    a->step = step;
}

/* Run the loop until *flag is non-zero (or fail after the scaled timeout). */
static void
run_until(uv_loop_t *loop, const int *flag, const char *what)
{
    double limit = now_s() + scaled(60);

    while (*flag == 0) {
        ck_assert_msg(now_s() < limit, "timed out waiting for %s", what);
        (void)uv_run(loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
}

/* A store with models named NAME-i (i < n), each with no tensors (dirty until written). */
static store *
make_store(const char *const *names, size_t n)
{
    store *s = store_create();
    emad_model_config cfg;
    store_err err;
    int created;

    small_config(&cfg);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(
            store_create_model(s, names[i], strlen(names[i]), &cfg, 0, &created, &err), 0);
    return s;
}

/* Close persist's handles and the loop. */
static void
finish(uv_loop_t *loop, persist *p, store *s)
{
    persist_shutdown(p, NULL, NULL);
    while (uv_run(loop, UV_RUN_NOWAIT) != 0)
        usleep(1000);
    persist_destroy(p);
    store_destroy(s);
    ck_assert_int_eq(uv_loop_close(loop), 0);
}

START_TEST(test_persist_request_is_not_delayed_by_a_slow_model)
{
    static const char *const names[] = {"slow", "fast"};
    char *state = tu_tmpdir();
    store *s = make_store(names, 2);
    persist_config pc = {.state_dir = state, .keep = 2, .write_hook = hook,
                         .write_hook_arg = &g_sched};
    answer_rec slow = {0}, fast = {0};
    uv_loop_t loop;
    persist *p;

    sched_init();
    snprintf(g_sched.blocked[0], sizeof(g_sched.blocked[0]), "slow");
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    p = persist_create(&loop, s, &pc, NULL);
    persist_request(p, "slow", on_answer, &slow);
    persist_request(p, "fast", on_answer, &fast);
    run_until(&loop, &fast.calls, "the fast model's snapshot");
    ck_assert_int_eq(fast.rc, 0);
    ck_assert_int_eq(slow.calls, 0); /* still blocked in its write */
    ck_assert_int_eq(access(pathf(state, "snapshots/fast/00000000000000000000.d0.safetensors"),
                            F_OK),
                     0);
    sched_release(NULL);
    run_until(&loop, &slow.calls, "the slow model's snapshot");
    ck_assert_int_eq(slow.rc, 0);
    finish(&loop, p, s);
    tu_rmtree(state);
    free(state);
}
END_TEST

/*
 * A scheduler on loop over s whose interval (1 ms) queues every model as
 * periodic work, with the writes of "busy1" and "busy2" blocked: returns
 * once both have started, when they hold every slot.
 */
static persist *
busy_start(uv_loop_t *loop, store *s, const char *state)
{
    persist_config pc = {.state_dir = state, .keep = 2, .interval_ms = 1, .write_hook = hook,
                         .write_hook_arg = &g_sched};
    persist *p;

    ck_assert_int_eq(PERSIST_JOBS, 2);
    sched_init();
    snprintf(g_sched.blocked[0], sizeof(g_sched.blocked[0]), "busy1");
    snprintf(g_sched.blocked[1], sizeof(g_sched.blocked[1]), "busy2");
    ck_assert_int_eq(uv_loop_init(loop), 0);
    p = persist_create(loop, s, &pc, NULL);
    while (sched_pos("busy2") < 0)
        (void)uv_run(loop, UV_RUN_ONCE);
    return p;
}

START_TEST(test_persist_request_goes_ahead_of_periodic_work_and_is_written_once)
{
    static const char *const names[] = {"busy1", "busy2", "p1", "p2", "p3", "asked"};
    char *state = tu_tmpdir();
    store *s = make_store(names, NELEM(names));
    answer_rec a[3] = {{0}};
    uv_loop_t loop;
    persist *p = busy_start(&loop, s, state);

    ck_assert_int_eq(sched_pos("p1"), -1);
    /* Three requests for the same model while it waits behind periodic work. */
    for (int i = 0; i < 3; i++)
        persist_request(p, "asked", on_answer, &a[i]);
    /* One slot frees (busy2 stays blocked): the next write must be the requested model. */
    sched_release("busy1");
    run_until(&loop, &a[2].calls, "the requested snapshot");
    run_until(&loop, &a[0].calls, "the first request");
    ck_assert_int_eq(sched_pos("asked"), 2);
    /* It was written once for the three requests, all answered. */
    ck_assert_int_eq(sched_count("asked"), 1);
    ck_assert_int_eq(a[0].calls + a[1].calls + a[2].calls, 3);
    ck_assert_int_eq(a[0].rc | a[1].rc | a[2].rc, 0);
    /* The periodic work goes on afterwards. */
    while (sched_pos("p3") < 0)
        (void)uv_run(&loop, UV_RUN_ONCE);
    ck_assert_int_lt(sched_pos("asked"), sched_pos("p1"));
    sched_release(NULL);
    finish(&loop, p, s);
    tu_rmtree(state);
    free(state);
}
END_TEST

START_TEST(test_persist_requests_do_not_starve_periodic_work)
{
    static const char *const names[] = {"busy1", "busy2", "p1", "u0", "u1", "u2", "u3",
                                        "u4",    "u5",    "u6", "u7", "u8", "u9"};
    char *state = tu_tmpdir();
    store *s = make_store(names, NELEM(names));
    answer_rec a[10] = {{0}};
    uv_loop_t loop;
    persist *p = busy_start(&loop, s, state);

    for (int i = 0; i < 10; i++)
        persist_request(p, names[3 + i], on_answer, &a[i]);
    sched_release("busy1"); /* one slot: the writes run one after another */
    run_until(&loop, &a[9].calls, "the last request");
    /* PERSIST_URGENT_RUN requested writes, then the periodic one, then the other requests. */
    ck_assert_int_eq(PERSIST_URGENT_RUN, 8);
    ck_assert_int_eq(sched_pos("u7"), 2 + 7);
    ck_assert_int_eq(sched_pos("p1"), 2 + 8);
    ck_assert_int_eq(sched_pos("u8"), 2 + 9);
    sched_release(NULL);
    finish(&loop, p, s);
    tu_rmtree(state);
    free(state);
}
END_TEST

/* What the shutdown reported. */
typedef struct done_rec {
    int calls;
    size_t unwritten;
} done_rec;

/* persist_done_cb of the shutdown test. */
static void
on_done(void *arg, size_t unwritten)
{
    done_rec *d = arg;

    d->calls++;
    d->unwritten = unwritten;
}

START_TEST(test_persist_shutdown_writes_in_parallel_and_reports_what_failed)
{
    enum { N = 200 };
    char *state = tu_tmpdir(), *names[N + 1], listed[256];
    store *s;
    persist_config pc = {.state_dir = state, .keep = 2, .write_hook = hook,
                         .write_hook_arg = &g_sched};
    done_rec done = {0};
    size_t count = 0;
    uv_loop_t loop;
    persist *p;
    DIR *d;
    struct dirent *de;

    for (int i = 0; i < N; i++)
        ck_assert_int_ge(asprintf(&names[i], "m%03d", i), 0);
    names[N] = strdup("bad");
    s = make_store((const char *const *)names, N + 1);
    /* bad's directory is a file: its final snapshot cannot be written. */
    ck_assert_int_eq(mkdir(pathf(state, "snapshots"), 0750), 0);
    ck_assert_int_eq(tu_write_file(pathf(state, "snapshots/bad"), "", 0), 0);
    sched_init();
    g_sched.barrier = 2; /* the first writes wait until two run at once */
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    p = persist_create(&loop, s, &pc, NULL);
    persist_shutdown(p, on_done, &done);
    run_until(&loop, &done.calls, "the shutdown writes");
    ck_assert_int_eq(done.calls, 1);
    ck_assert_uint_eq(done.unwritten, 1);
    ck_assert_int_ge(g_sched.max_inside, 2);
    ck_assert_int_le(g_sched.max_inside, PERSIST_JOBS_SHUTDOWN);
    ck_assert_uint_eq(persist_unwritten(p, listed, sizeof(listed)), 1);
    ck_assert_str_eq(listed, "bad");
    ck_assert_ptr_nonnull(d = opendir(pathf(state, "snapshots")));
    while ((de = readdir(d)) != NULL)
        count += de->d_name[0] == 'm';
    closedir(d);
    ck_assert_uint_eq(count, N);
    finish(&loop, p, s);
    for (int i = 0; i <= N; i++)
        free(names[i]);
    tu_rmtree(state);
    free(state);
}
END_TEST

/* ---- the real daemon ---------------------------------------------------------------------- */

/* A daemon of these tests: our own state dir, kept across restarts. */
typedef struct daemon_proc {
    pid_t pid;
    char url[64], log[700];
} daemon_proc;

/* Start emad on state with --snapshot-interval 0; waits until it serves. */
static void
proc_start(daemon_proc *d, const char *state, const char *log_name)
{
    char bin[1024];
    int port = tu_free_port();
    double limit = now_s() + scaled(60);

    snprintf(d->url, sizeof(d->url), "tcp://127.0.0.1:%d", port);
    snprintf(d->log, sizeof(d->log), "%s/../%s", state, log_name);
    snprintf(bin, sizeof(bin), "%s/emad", tu_builddir());
    d->pid = fork();
    ck_assert_int_ge(d->pid, 0);
    if (d->pid == 0) {
        int fd = open(d->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
        execl(bin, bin, "--listen", d->url, "--state-dir", state, "--http", "off",
              "--snapshot-interval", "0", (char *)NULL);
        _exit(127);
    }
    for (;;) {
        emad_client *c;
        emad_options o;

        emad_options_init(&o);
        o.connect_timeout_ms = 200;
        if (emad_connect(&c, d->url, &o) == 0) {
            emad_close(c);
            return;
        }
        ck_assert_msg(now_s() < limit && waitpid(d->pid, NULL, WNOHANG) == 0,
                      "emad did not start");
        usleep(20000);
    }
}

/* SIGTERM and wait; returns the exit status (-1: killed by a signal or not in time). */
static int
proc_stop(daemon_proc *d, double *seconds)
{
    double t0 = now_s(), limit = t0 + scaled(240);
    int status;

    (void)kill(d->pid, SIGTERM);
    while (waitpid(d->pid, &status, WNOHANG) == 0) {
        if (now_s() > limit) {
            (void)kill(d->pid, SIGKILL);
            (void)waitpid(d->pid, &status, 0);
            return -1;
        }
        usleep(10000);
    }
    if (seconds != NULL)
        *seconds = now_s() - t0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static emad_client *
connect_to(const daemon_proc *d)
{
    emad_client *c;
    emad_options o;

    emad_options_init(&o);
    o.timeout_ms = (int)(scaled(120) * 1000);
    ck_assert_int_eq(emad_connect(&c, d->url, &o), 0);
    return c;
}

/* Create model name and push one 4-float tensor at step. */
static void
push_small(emad_client *c, const char *name, uint64_t step)
{
    float v[4] = {(float)step, 1, 2, 3};
    emad_tensor t = {.name = "w", .kind = EMAD_PARAM, .dtype = EMAD_F32, .ndim = 1,
                     .shape = {4}, .data = v, .nbytes = sizeof(v)};

    ck_assert_msg(emad_create(c, name, 0.5, 0) == 0, "create %s: %s", name, emad_last_error(c));
    ck_assert_msg(emad_push(c, name, step, &t, 1, NULL) == 0, "push %s: %s", name,
                  emad_last_error(c));
}

START_TEST(test_statedir_every_small_model_comes_back_after_sigterm)
{
    enum { N = 4096 }; /* the store's model limit */
    char *top = tu_tmpdir(), state[600], name[32];
    daemon_proc d;
    emad_client *c;
    emad_model_info *info;
    size_t n;
    double took = 0;

    snprintf(state, sizeof(state), "%s/state", top);
    ck_assert_int_eq(mkdir(state, 0750), 0);
    proc_start(&d, state, "emad1.log");
    c = connect_to(&d);
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "m%04d", i);
        push_small(c, name, (uint64_t)i + 1);
    }
    emad_close(c);
    ck_assert_int_eq(proc_stop(&d, &took), 0);
    fprintf(stderr, "check_statedir: SIGTERM wrote %d models in %.2f s\n", N, took);

    proc_start(&d, state, "emad2.log");
    c = connect_to(&d);
    ck_assert_int_eq(emad_list(c, &info, &n), 0);
    ck_assert_uint_eq(n, N);
    for (size_t i = 0; i < n; i++) {
        unsigned k;
        ck_assert_int_eq(sscanf(info[i].name, "m%u", &k), 1);
        ck_assert_msg(info[i].step == (uint64_t)k + 1 && info[i].snapshot_step == info[i].step,
                      "%s at step %llu", info[i].name, (unsigned long long)info[i].step);
    }
    free(info);
    emad_close(c);
    ck_assert_int_eq(proc_stop(&d, NULL), 0); /* nothing changed: nothing to write */
    tu_rmtree(top);
    free(top);
}
END_TEST

START_TEST(test_statedir_failed_final_snapshot_exits_3_naming_the_model)
{
    char *top = tu_tmpdir(), state[600], *log;
    daemon_proc d;
    emad_client *c;
    emad_model_info *info;
    size_t n, len;

    snprintf(state, sizeof(state), "%s/state", top);
    ck_assert_int_eq(mkdir(state, 0750), 0);
    ck_assert_int_eq(mkdir(pathf(state, "snapshots"), 0750), 0);
    /* The directory of model "lost" is a file (works as root too, unlike chmod). */
    ck_assert_int_eq(tu_write_file(pathf(state, "snapshots/lost"), "", 0), 0);
    proc_start(&d, state, "emad1.log");
    c = connect_to(&d);
    push_small(c, "kept", 7);
    push_small(c, "lost", 9);
    ck_assert_int_ne(emad_snapshot(c, "lost", NULL), 0); /* the request says so, too */
    emad_close(c);
    ck_assert_int_eq(proc_stop(&d, NULL), 3);
    log = tu_read_file(d.log, &len);
    ck_assert_ptr_nonnull(log);
    log = realloc(log, len + 1);
    log[len] = '\0';
    ck_assert_msg(strstr(log, "snapshots=written") == NULL, "%s", log);
    ck_assert_msg(strstr(log, "event=shutdown snapshots=failed unwritten=1 models=lost") != NULL,
                  "%s", log);
    ck_assert_msg(strstr(log, "event=snapshot_failed model=lost") != NULL, "%s", log);
    ck_assert_msg(strstr(log, "exit_status=3") != NULL, "%s", log);
    free(log);

    /* The model that could be written is back; the daemon serves. */
    proc_start(&d, state, "emad2.log");
    c = connect_to(&d);
    ck_assert_int_eq(emad_list(c, &info, &n), 0);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(info[0].name, "kept");
    ck_assert_uint_eq(info[0].step, 7);
    free(info);
    emad_close(c);
    ck_assert_int_eq(proc_stop(&d, NULL), 0);
    tu_rmtree(top);
    free(top);
}
END_TEST

static Suite *
statedir_suite(void)
{
    Suite *s = suite_create("statedir");
    TCase *files = tcase_create("files"), *tsched = tcase_create("scheduler"),
          *daemon = tcase_create("daemon");

    tcase_add_test(files, test_statedir_write_never_goes_through_a_symlinked_model_dir);
    tcase_add_test(files, test_statedir_remove_model_removes_only_its_own_files);
    tcase_add_test(files, test_statedir_fifos_and_symlinks_are_never_read);
    tcase_set_timeout(files, scaled(60));
    tcase_add_test(tsched, test_persist_request_is_not_delayed_by_a_slow_model);
    tcase_add_test(tsched, test_persist_request_goes_ahead_of_periodic_work_and_is_written_once);
    tcase_add_test(tsched, test_persist_requests_do_not_starve_periodic_work);
    tcase_add_test(tsched, test_persist_shutdown_writes_in_parallel_and_reports_what_failed);
    tcase_set_timeout(tsched, scaled(120));
    tcase_add_test(daemon, test_statedir_every_small_model_comes_back_after_sigterm);
    tcase_add_test(daemon, test_statedir_failed_final_snapshot_exits_3_naming_the_model);
    tcase_set_timeout(daemon, scaled(600));
    suite_add_tcase(s, files);
    suite_add_tcase(s, tsched);
    suite_add_tcase(s, daemon);
    return s;
}

int
main(void)
{
    SRunner *r = srunner_create(statedir_suite());
    int failed;

    srunner_run_all(r, CK_NORMAL);
    failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/*
 * check_persist.c - tests for src/daemon/persist.c through persist.h only:
 * requested, periodic and shutdown snapshots of a real store on a real
 * libuv loop, pruning to `keep`, forgetting a dropped model, a failed
 * write and its retry, and loading (newest valid snapshot, a broken file
 * renamed and the previous one used, --require-snapshot).
 *
 * Expected values are independent of the daemon: shadows at decay 0.5 and
 * 0.75 of small integers are exact (0 then 4 gives 2 and 1), and snapshot
 * file names are built here from the layout documented in snapshot.h
 * (STATE/snapshots/MODEL/STEP as 20 digits.dK.safetensors). Each test has
 * its own state directory; every loop is closed with uv_loop_close() == 0,
 * so a leaked handle fails the test.
 */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "base/log.h"
#include "common/emaconf.h"
#include "common/snapshot.h"
#include "daemon/persist.h"
#include "store/store.h"
#include "testutil.h"

/* One test's world: a state dir, a store, a loop and the persister. */
typedef struct world {
    char *dir;
    store *s;
    uv_loop_t loop;
    persist *p;
} world;

/* What a persist_cb received. */
typedef struct answer {
    int calls, rc;
    uint64_t step;
    char message[256];
} answer;

static void
on_answer(void *arg, int rc, const char *message, uint64_t step)
{
    answer *a = arg;

    a->calls++;
    a->rc = rc;
    a->step = step;
    snprintf(a->message, sizeof(a->message), "%s", message);
}

static void
on_done(void *arg, size_t unwritten)
{
    (void)unwritten;
    (*(int *)arg)++;
}

/* A persist_config for dir. */
static persist_config
config(const char *dir, uint64_t interval_ms, size_t keep, int require)
{
    persist_config c = {.state_dir = dir, .interval_ms = interval_ms, .keep = keep, .require = require};

    return c;
}

/* Set up a world: empty state dir and store, loop, persister (interval_ms, keep). */
static void
world_up(world *w, uint64_t interval_ms, size_t keep)
{
    persist_config c;

    w->dir = tu_tmpdir();
    w->s = store_create();
    ck_assert_int_eq(uv_loop_init(&w->loop), 0);
    c = config(w->dir, interval_ms, keep, 0);
    w->p = persist_create(&w->loop, w->s, &c, NULL);
    ck_assert_ptr_nonnull(w->p);
}

/* Shut the persister down (it writes what changed) and run the loop until it is done. */
static void
world_shutdown(world *w)
{
    int done = 0;

    persist_shutdown(w->p, on_done, &done);
    ck_assert_int_eq(uv_run(&w->loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(done, 1);
}

/* After world_shutdown(): close the loop (no handle may be left) and free everything. */
static void
world_free(world *w)
{
    persist_destroy(w->p);
    ck_assert_int_eq(uv_loop_close(&w->loop), 0);
    store_destroy(w->s);
    tu_rmtree(w->dir);
    free(w->dir);
}

/* world_shutdown() then world_free(). */
static void
world_down(world *w)
{
    world_shutdown(w);
    world_free(w);
}

/* Create model name with the given decays (n of them; constant schedule). */
static void
create(store *s, const char *name, const double *decays, size_t n)
{
    emad_model_config cfg;
    store_err err;
    int created;

    emaconf_init(&cfg);
    cfg.ndecays = n;
    for (size_t i = 0; i < n; i++)
        cfg.decays[i] = decays[i];
    ck_assert_msg(store_create_model(s, name, strlen(name), &cfg, 0, &created, &err) == 0, "%s",
                  err.message);
    ck_assert_int_eq(created, 1);
}

/* Push the 3-element F32 param "w", every element v, to model name at step. */
static void
push_w(store *s, const char *name, uint64_t step, float v)
{
    float data[3] = {v, v, v};
    store_input in;
    store_result res;
    store_err err;

    memset(&in, 0, sizeof(in));
    in.name = "w";
    in.name_len = 1;
    in.kind = EMAD_PARAM;
    in.dtype = EMAD_F32;
    in.ndim = 1;
    in.shape[0] = 3;
    in.data = data;
    in.len = sizeof(data);
    ck_assert_msg(store_push(s, name, strlen(name), step, 0, &in, 1, 1000, &res, &err) == 0, "%s",
                  err.message);
    ck_assert_uint_eq(res.applied, 1);
}

/* Path of a snapshot file as snapshot.h documents it (malloc'd). */
static char *
file_path(const char *dir, const char *mname, uint64_t step, unsigned decay_index)
{
    char *path = malloc(1024);

    ck_assert_ptr_nonnull(path);
    snprintf(path, 1024, "%s/snapshots/%s/%020llu.d%u.safetensors", dir, mname,
             (unsigned long long)step, decay_index);
    return path;
}

/* 1 if the snapshot file of (mname, step, decay index) exists. */
static int
has_file(const char *dir, const char *mname, uint64_t step, unsigned decay_index)
{
    char *path = file_path(dir, mname, step, decay_index);
    int ok = access(path, F_OK) == 0;

    free(path);
    return ok;
}

/* Number of directory entries of dir/snapshots/MNAME that do not start with '.'. */
static size_t
count_files(const char *dir, const char *mname)
{
    char path[1024];
    struct dirent *e;
    size_t n = 0;
    DIR *d;

    snprintf(path, sizeof(path), "%s/snapshots/%s", dir, mname);
    if ((d = opendir(path)) == NULL)
        return 0;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* Assert the snapshot file of (mname, step, k) holds "w" = {v, v, v} in float32. */
static void
assert_file_w(const char *dir, const char *mname, uint64_t step, unsigned k, float v)
{
    char *path = file_path(dir, mname, step, k), *cause = NULL;
    snapshot_file *f = NULL;
    float got[3];

    ck_assert_msg(snapshot_read(path, &f, &cause) == 0, "%s: %s", path,
                  cause != NULL ? cause : "?");
    ck_assert_str_eq(f->model, mname);
    ck_assert_uint_eq(f->step, step);
    ck_assert_uint_eq(f->decay_index, k);
    ck_assert_uint_eq(f->ntensors, 1);
    ck_assert_str_eq(f->tensors[0].name, "w");
    ck_assert_uint_eq(f->tensors[0].nbytes, sizeof(got));
    memcpy(got, f->tensors[0].data, sizeof(got));
    for (int i = 0; i < 3; i++)
        ck_assert_uint_eq(tu_f32_bits(got[i]), tu_f32_bits(v));
    snapshot_file_free(f);
    free(path);
}

/* Assert model name in s is at step and its shadow of decay d holds "w" = {v, v, v}. */
static void
assert_store_w(store *s, const char *name, uint64_t step, double d, float v)
{
    view_options vo = {1, d, VIEW_DTYPE_SHADOW};
    store_view *view = NULL;
    store_err err;
    float got[3];

    ck_assert_ptr_nonnull(store_model_find(s, name, strlen(name)));
    ck_assert_uint_eq(store_model_find(s, name, strlen(name))->step, step);
    ck_assert_msg(store_view_create(s, name, strlen(name), NULL, NULL, 0, &vo, &view, &err) == 0,
                  "%s", err.message);
    ck_assert_uint_eq(view->ntensors, 1);
    ck_assert_uint_eq(view->tensors[0].sdtype, EMAD_F32);
    memcpy(got, view->tensors[0].data->data, sizeof(got));
    for (int i = 0; i < 3; i++)
        ck_assert_uint_eq(tu_f32_bits(got[i]), tu_f32_bits(v));
    store_view_free(view);
}

/* Request a snapshot of model (NULL: all), run the loop until answered; the answer. */
static answer
request(world *w, const char *mname)
{
    answer a = {0};

    persist_request(w->p, mname, on_answer, &a);
    ck_assert_int_eq(uv_run(&w->loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(a.calls, 1);
    return a;
}

/* Load dir into a new store (require as given); returns persist_load()'s code. */
static int
load(const char *dir, int require, store **out, persist_stats *st, char **cause)
{
    persist_config c = config(dir, 0, 2, require);

    *out = store_create();
    return persist_load(&c, *out, st, cause);
}

static const double half[] = {0.5}, two[] = {0.5, 0.75};

START_TEST(test_persist_request_writes_a_snapshot_that_loads_back)
{
    world w;
    answer a;
    persist_stats st;
    store *s2;
    char *cause = NULL;

    world_up(&w, 0, 2);
    create(w.s, "m", half, 1);
    push_w(w.s, "m", 1, 0.0f);
    push_w(w.s, "m", 2, 4.0f); /* decay 0.5: 0 + 0.5 * (4 - 0) = 2 */
    a = request(&w, "m");
    ck_assert_int_eq(a.rc, 0);
    ck_assert_uint_eq(a.step, 2);
    persist_stats_get(w.p, &st);
    ck_assert_uint_eq(st.written, 1);
    ck_assert_uint_eq(st.failed, 0);
    ck_assert_uint_gt(st.bytes, 12);
    ck_assert_uint_eq(st.running, 0);
    ck_assert_uint_gt(st.last_success_unix_ms, 0);
    ck_assert(has_file(w.dir, "m", 2, 0));
    ck_assert_uint_eq(count_files(w.dir, "m"), 1);
    assert_file_w(w.dir, "m", 2, 0, 2.0f);

    ck_assert_int_eq(load(w.dir, 1, &s2, &st, &cause), 0);
    ck_assert_ptr_null(cause);
    ck_assert_uint_eq(st.loaded, 1);
    ck_assert_uint_eq(st.broken, 0);
    assert_store_w(s2, "m", 2, 0.5, 2.0f);
    store_destroy(s2);
    world_down(&w);
}
END_TEST

START_TEST(test_persist_clean_or_missing_model_is_answered_at_once)
{
    world w;
    answer a = {0};
    persist_stats st;

    world_up(&w, 0, 2);
    create(w.s, "m", half, 1);
    push_w(w.s, "m", 7, 1.0f);
    ck_assert_uint_eq(request(&w, "m").step, 7);
    /* Nothing changed since: answered inside the call, nothing written again. */
    persist_request(w.p, "m", on_answer, &a);
    ck_assert_int_eq(a.calls, 1);
    ck_assert_int_eq(a.rc, 0);
    ck_assert_uint_eq(a.step, 7);
    memset(&a, 0, sizeof(a));
    persist_request(w.p, "nosuch", on_answer, &a);
    ck_assert_int_eq(a.calls, 1);
    ck_assert_int_eq(a.rc, EMAD_ENOMODEL);
    ck_assert_int_eq(uv_run(&w.loop, UV_RUN_DEFAULT), 0);
    persist_stats_get(w.p, &st);
    ck_assert_uint_eq(st.written, 1);
    world_down(&w);
}
END_TEST

START_TEST(test_persist_request_of_every_model_answers_once_with_the_highest_step)
{
    world w;
    answer a;
    persist_stats st;

    world_up(&w, 0, 2);
    create(w.s, "a", half, 1);
    create(w.s, "b", half, 1);
    push_w(w.s, "a", 3, 1.0f);
    push_w(w.s, "b", 9, 5.0f);
    a = request(&w, NULL);
    ck_assert_int_eq(a.rc, 0);
    ck_assert_uint_eq(a.step, 9);
    persist_stats_get(w.p, &st);
    ck_assert_uint_eq(st.written, 2);
    assert_file_w(w.dir, "a", 3, 0, 1.0f);
    assert_file_w(w.dir, "b", 9, 0, 5.0f);
    world_down(&w);
}
END_TEST

START_TEST(test_persist_two_decays_give_one_file_each)
{
    world w;
    persist_stats st;
    store *s2;
    char *cause = NULL;

    world_up(&w, 0, 2);
    create(w.s, "m", two, 2);
    push_w(w.s, "m", 1, 0.0f);
    push_w(w.s, "m", 2, 4.0f); /* 0.5: 2; 0.75: 0 + 0.25 * 4 = 1 */
    ck_assert_int_eq(request(&w, "m").rc, 0);
    ck_assert_uint_eq(count_files(w.dir, "m"), 2);
    assert_file_w(w.dir, "m", 2, 0, 2.0f);
    assert_file_w(w.dir, "m", 2, 1, 1.0f);
    ck_assert_int_eq(load(w.dir, 0, &s2, &st, &cause), 0);
    ck_assert_uint_eq(st.loaded, 1);
    ck_assert_uint_eq(store_model_find(s2, "m", 1)->cfg.ndecays, 2);
    assert_store_w(s2, "m", 2, 0.5, 2.0f);
    assert_store_w(s2, "m", 2, 0.75, 1.0f);
    store_destroy(s2);
    world_down(&w);
}
END_TEST

START_TEST(test_persist_keeps_the_newest_snapshots_only)
{
    world w;

    world_up(&w, 0, 2);
    create(w.s, "m", half, 1);
    for (uint64_t step = 1; step <= 4; step++) {
        push_w(w.s, "m", step, (float)step);
        ck_assert_int_eq(request(&w, "m").rc, 0);
    }
    ck_assert_uint_eq(count_files(w.dir, "m"), 2);
    ck_assert(!has_file(w.dir, "m", 1, 0));
    ck_assert(!has_file(w.dir, "m", 2, 0));
    ck_assert(has_file(w.dir, "m", 3, 0));
    ck_assert(has_file(w.dir, "m", 4, 0));
    world_down(&w);
}
END_TEST

START_TEST(test_persist_load_renames_a_broken_file_and_uses_the_previous_snapshot)
{
    world w;
    persist_stats st;
    store *s2;
    char *cause = NULL, *path, broken[1100];
    unsigned char *buf;
    size_t len;

    world_up(&w, 0, 2);
    create(w.s, "m", half, 1);
    push_w(w.s, "m", 1, 6.0f);
    ck_assert_int_eq(request(&w, "m").rc, 0);
    push_w(w.s, "m", 2, 2.0f); /* 6 + 0.5 * (2 - 6) = 4 */
    ck_assert_int_eq(request(&w, "m").rc, 0);
    assert_file_w(w.dir, "m", 2, 0, 4.0f);
    /* Flip one bit of the last data byte of step 2: its checksum no longer matches. */
    path = file_path(w.dir, "m", 2, 0);
    buf = tu_read_file(path, &len);
    ck_assert_ptr_nonnull(buf);
    buf[len - 1] ^= 1;
    ck_assert_int_eq(tu_write_file(path, buf, len), 0);
    free(buf);

    ck_assert_int_eq(load(w.dir, 1, &s2, &st, &cause), 0);
    ck_assert_uint_eq(st.loaded, 1);
    ck_assert_uint_eq(st.broken, 1);
    assert_store_w(s2, "m", 1, 0.5, 6.0f);
    snprintf(broken, sizeof(broken), "%s.broken", path);
    ck_assert_int_eq(access(path, F_OK), -1);
    ck_assert_int_eq(access(broken, F_OK), 0);
    free(path);
    store_destroy(s2);
    world_down(&w);
}
END_TEST

START_TEST(test_persist_load_require_fails_without_a_usable_snapshot)
{
    char *dir = tu_tmpdir(), *cause = NULL, path[1024];
    persist_stats st;
    store *s2;

    /* Nothing at all: fine without require, an error with it. */
    ck_assert_int_eq(load(dir, 0, &s2, &st, &cause), 0);
    ck_assert_uint_eq(st.loaded, 0);
    ck_assert_ptr_null(store_model_at(s2, 0));
    store_destroy(s2);
    ck_assert_int_ne(load(dir, 1, &s2, &st, &cause), 0);
    ck_assert_ptr_nonnull(cause);
    free(cause);
    cause = NULL;
    store_destroy(s2);
    /* A model whose only snapshot is garbage: renamed, not loaded, an error with require. */
    snprintf(path, sizeof(path), "%s/snapshots", dir);
    ck_assert_int_eq(mkdir(path, 0755), 0);
    snprintf(path, sizeof(path), "%s/snapshots/m", dir);
    ck_assert_int_eq(mkdir(path, 0755), 0);
    snprintf(path, sizeof(path), "%s/snapshots/m/%020d.d0.safetensors", dir, 5);
    ck_assert_int_eq(tu_write_file(path, "not a safetensors file", 22), 0);
    ck_assert_int_ne(load(dir, 1, &s2, &st, &cause), 0);
    ck_assert_ptr_nonnull(cause);
    ck_assert_uint_eq(st.loaded, 0);
    ck_assert_uint_eq(st.broken, 1);
    ck_assert_ptr_null(store_model_find(s2, "m", 1));
    free(cause);
    store_destroy(s2);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_persist_forget_removes_a_dropped_models_files)
{
    world w;
    store_err err;

    world_up(&w, 0, 2);
    create(w.s, "m", half, 1);
    create(w.s, "k", half, 1);
    push_w(w.s, "m", 1, 1.0f);
    push_w(w.s, "k", 1, 1.0f);
    ck_assert_int_eq(request(&w, NULL).rc, 0);
    ck_assert(has_file(w.dir, "m", 1, 0));
    ck_assert_int_eq(store_drop_model(w.s, "m", 1, &err), 0);
    persist_forget(w.p, "m");
    ck_assert_uint_eq(count_files(w.dir, "m"), 0);
    ck_assert(!has_file(w.dir, "m", 1, 0));
    ck_assert(has_file(w.dir, "k", 1, 0));
    world_down(&w);
}
END_TEST

START_TEST(test_persist_failed_write_is_counted_and_retried)
{
    world w;
    answer a;
    persist_stats st;
    char path[1024];

    world_up(&w, 0, 2);
    create(w.s, "m", half, 1);
    push_w(w.s, "m", 1, 3.0f);
    /* A regular file where the snapshots directory should be: the write fails. */
    snprintf(path, sizeof(path), "%s/snapshots", w.dir);
    ck_assert_int_eq(tu_write_file(path, "x", 1), 0);
    a = request(&w, "m");
    ck_assert_int_ne(a.rc, 0);
    ck_assert_str_ne(a.message, "");
    persist_stats_get(w.p, &st);
    ck_assert_uint_eq(st.failed, 1);
    ck_assert_uint_eq(st.written, 0);
    /* The obstacle gone, the next request writes the model (it is still changed). */
    ck_assert_int_eq(unlink(path), 0);
    a = request(&w, "m");
    ck_assert_int_eq(a.rc, 0);
    ck_assert_uint_eq(a.step, 1);
    persist_stats_get(w.p, &st);
    ck_assert_uint_eq(st.failed, 1);
    ck_assert_uint_eq(st.written, 1);
    assert_file_w(w.dir, "m", 1, 0, 3.0f);
    world_down(&w);
}
END_TEST

/* tu_wait_until() condition: the persister (arg: world) has written a snapshot. */
static int
written_once(void *arg)
{
    world *w = arg;
    persist_stats st;

    (void)uv_run(&w->loop, UV_RUN_NOWAIT);
    persist_stats_get(w->p, &st);
    return st.written >= 1;
}

START_TEST(test_persist_interval_writes_changed_models_until_set_to_zero)
{
    world w;
    persist_stats st;

    world_up(&w, 5, 2);
    create(w.s, "m", half, 1);
    push_w(w.s, "m", 1, 1.0f);
    ck_assert_msg(tu_wait_until(written_once, &w, 120), "no periodic snapshot");
    ck_assert(has_file(w.dir, "m", 1, 0));
    /* Interval 0: the timer stops, so the loop has nothing left to wait for. */
    persist_set_interval(w.p, 0);
    ck_assert_int_eq(uv_run(&w.loop, UV_RUN_DEFAULT), 0);
    push_w(w.s, "m", 2, 3.0f); /* 1 + 0.5 * (3 - 1) = 2 */
    ck_assert_int_eq(uv_run(&w.loop, UV_RUN_DEFAULT), 0);
    persist_stats_get(w.p, &st);
    ck_assert_uint_eq(st.written, 1);
    ck_assert(!has_file(w.dir, "m", 2, 0));
    /* Shutdown still writes what changed. */
    world_shutdown(&w);
    assert_file_w(w.dir, "m", 2, 0, 2.0f);
    world_free(&w);
}
END_TEST

START_TEST(test_persist_shutdown_writes_every_changed_model_then_calls_done)
{
    world w;

    world_up(&w, 0, 2);
    create(w.s, "a", half, 1);
    create(w.s, "b", two, 2);
    push_w(w.s, "a", 4, 8.0f);
    push_w(w.s, "b", 5, 2.0f); /* a first push initializes every shadow to the value */
    world_shutdown(&w);
    assert_file_w(w.dir, "a", 4, 0, 8.0f);
    assert_file_w(w.dir, "b", 5, 0, 2.0f);
    assert_file_w(w.dir, "b", 5, 1, 2.0f);
    world_free(&w);
}
END_TEST

/* Run the persist suite; exit status 0 if every test passed. */
int
main(void)
{
    const TTest *const tests[] = {
        test_persist_request_writes_a_snapshot_that_loads_back,
        test_persist_clean_or_missing_model_is_answered_at_once,
        test_persist_request_of_every_model_answers_once_with_the_highest_step,
        test_persist_two_decays_give_one_file_each,
        test_persist_keeps_the_newest_snapshots_only,
        test_persist_load_renames_a_broken_file_and_uses_the_previous_snapshot,
        test_persist_load_require_fails_without_a_usable_snapshot,
        test_persist_forget_removes_a_dropped_models_files,
        test_persist_failed_write_is_counted_and_retried,
        test_persist_interval_writes_changed_models_until_set_to_zero,
        test_persist_shutdown_writes_every_changed_model_then_calls_done,
        NULL,
    };

    log_set_level(LOG_ERROR); /* the broken and failed snapshots the tests make */
    return tu_run_tests("persist", tests);
}

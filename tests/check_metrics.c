/*
 * check_metrics.c - tests for src/daemon/metrics.c: histogram buckets, the
 * Prometheus and JSON renderings of known figures (every value checked
 * against the figures put in), and the board's hand-over from a loop
 * thread to readers: a reader gets figures filled after it asked, the loop
 * fills one copy for many readers, and a stalled loop delays a reader by at
 * most METRICS_REFRESH_WAIT_MS. The server's figures (server_figures) are
 * checked against requests sent to an offline server.
 */
#include <check.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <msgpack.h>
#include <uv.h>

#include "daemon/metrics.h"
#include "daemon/server.h"
#include "reqpack.h"
#include "testutil.h"

/* Count the lines of text equal to line. */
static int
count_lines(const char *text, const char *line)
{
    size_t n = strlen(line);
    int count = 0;

    for (const char *p = text; (p = strstr(p, line)) != NULL; p += n)
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            count++;
    return count;
}

/* Assert text has exactly one line equal to line. */
#define ck_has_line(text, line)                                                                    \
    ck_assert_msg(count_lines((text), (line)) == 1, "expected the line '%s' once in:\n%s", (line), \
                  (text))

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

START_TEST(test_metrics_hist_bucket_bounds_are_inclusive)
{
    metrics_hist h;

    memset(&h, 0, sizeof(h));
    metrics_hist_observe(&h, 0.0001);   /* == first bound: first bucket */
    metrics_hist_observe(&h, 0.000101); /* just above: second */
    metrics_hist_observe(&h, 0);        /* first */
    metrics_hist_observe(&h, 10);       /* == last bound: last finite bucket */
    metrics_hist_observe(&h, 11);       /* +Inf */
    ck_assert_uint_eq(h.counts[0], 2);
    ck_assert_uint_eq(h.counts[1], 1);
    ck_assert_uint_eq(h.counts[METRICS_HIST_BUCKETS - 1], 1);
    ck_assert_uint_eq(h.counts[METRICS_HIST_BUCKETS], 1);
    ck_assert_double_eq_tol(h.sum, 0.0001 + 0.000101 + 10 + 11, 1e-12);
}
END_TEST

/* Figures with two models, one never pushed, and known counters. */
static metrics_figures *
sample_figures(void)
{
    metrics_figures *f = metrics_figures_create(2);

    f->requests_ok[PROTO_OP_PUSH] = 7;
    f->requests_error[PROTO_OP_PUSH] = 3;
    f->requests_error[0] = 2;
    f->errors[-EMAD_ESHAPE - METRICS_ERR_FIRST] = 2;
    f->push_rejected[-EMAD_ESHAPE - METRICS_ERR_FIRST] = 2;
    f->push_rejected[-EMAD_ENONFINITE - METRICS_ERR_FIRST] = 1;
    f->pushes_stale = 4;
    f->counters[COUNTER_BYTES_IN] = 123456789012ULL;
    f->counters[COUNTER_TENSORS_APPLIED] = 14;
    f->counters[COUNTER_TXN_COMMITTED] = 5;
    f->store.models = 2;
    f->has_state_dir = 1;
    f->snap.last_success_unix_ms = 1700000000500ULL;
    f->push_apply.counts[0] = 1;
    f->push_apply.counts[2] = 2;
    f->push_apply.counts[METRICS_HIST_BUCKETS] = 1;
    f->push_apply.sum = 12.5;
    snprintf(f->model[0].name, sizeof(f->model[0].name), "run1");
    f->model[0].step = 42;
    f->model[0].pushed = 1;
    f->model[0].seconds_since_push = 1.5;
    f->model[0].has_snapshot = 1;
    f->model[0].snapshot_step = 40;
    f->model[0].decay = 0.999;
    snprintf(f->model[1].name, sizeof(f->model[1].name), "run2");
    f->model[1].step = 0;
    return f;
}

START_TEST(test_metrics_prometheus_text_shows_every_figure)
{
    metrics_figures *f = sample_figures();
    metrics_process p = {.resident_bytes = 4096, .start_time_unix = 1700000000.25};
    size_t len;
    char *t = metrics_render_prometheus(f, METRICS_SERVING, &p, 0.5, &len);

    ck_assert_uint_eq(len, strlen(t));
    ck_has_line(t, "emad_state{state=\"serving\"} 1");
    ck_has_line(t, "emad_state{state=\"loading\"} 0");
    ck_has_line(t, "process_resident_memory_bytes 4096");
    ck_has_line(t, "emad_requests_total{op=\"push\",result=\"ok\"} 7");
    ck_has_line(t, "emad_requests_total{op=\"push\",result=\"error\"} 3");
    ck_has_line(t, "emad_requests_total{op=\"invalid\",result=\"error\"} 2");
    ck_assert_int_eq(count_lines(t, "emad_requests_total{op=\"invalid\",result=\"ok\"} 0"), 0);
    ck_has_line(t, "emad_request_errors_total{code=\"EMAD_ESHAPE\"} 2");
    ck_has_line(t, "emad_pushes_rejected_total{reason=\"shape\"} 2");
    ck_has_line(t, "emad_pushes_rejected_total{reason=\"nonfinite\"} 1");
    ck_has_line(t, "emad_pushes_rejected_total{reason=\"stale\"} 4");
    ck_has_line(t, "emad_pushes_rejected_total{reason=\"malformed\"} 0");
    ck_has_line(t, "emad_received_bytes_total 123456789012");
    ck_has_line(t, "emad_tensor_updates_total{result=\"applied\"} 14");
    ck_has_line(t, "emad_transactions_ended_total{result=\"committed\"} 5");
    ck_has_line(t, "emad_models 2");
    ck_has_line(t, "emad_model_step{model=\"run1\"} 42");
    ck_has_line(t, "emad_model_step{model=\"run2\"} 0");
    ck_has_line(t, "emad_model_seconds_since_push{model=\"run1\"} 1.500");
    ck_assert_ptr_null(strstr(t, "emad_model_seconds_since_push{model=\"run2\"}"));
    ck_has_line(t, "emad_model_snapshot_step{model=\"run1\"} 40");
    ck_has_line(t, "emad_snapshot_last_success_timestamp_seconds 1700000000.5");
    ck_has_line(t, "emad_figures_age_seconds 0.5");
    /* Buckets are cumulative; +Inf and _count are the total. */
    ck_has_line(t, "emad_push_apply_duration_seconds_bucket{le=\"0.0001\"} 1");
    ck_has_line(t, "emad_push_apply_duration_seconds_bucket{le=\"0.00025\"} 1");
    ck_has_line(t, "emad_push_apply_duration_seconds_bucket{le=\"0.0005\"} 3");
    ck_has_line(t, "emad_push_apply_duration_seconds_bucket{le=\"10\"} 3");
    ck_has_line(t, "emad_push_apply_duration_seconds_bucket{le=\"+Inf\"} 4");
    ck_has_line(t, "emad_push_apply_duration_seconds_count 4");
    ck_has_line(t, "emad_push_apply_duration_seconds_sum 12.5");
    ck_has_line(t, "# TYPE emad_push_apply_duration_seconds histogram");
    ck_has_line(t, "# TYPE emad_requests_total counter");
    ck_has_line(t, "# TYPE emad_models gauge");
    ck_assert_int_eq(t[len - 1], '\n');
    free(t);
    metrics_figures_destroy(f);
}
END_TEST

/* Every sample line belongs to the family of the # TYPE line before it, each family once. */
START_TEST(test_metrics_prometheus_families_are_declared_once_before_samples)
{
    metrics_figures *f = sample_figures();
    metrics_process p = {0};
    size_t len;
    char *t = metrics_render_prometheus(f, METRICS_SERVING, &p, 0, &len), *save = NULL;
    char family[128] = "", seen[16384] = " ";

    for (char *line = strtok_r(t, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        char name[128], key[140];
        if (strncmp(line, "# HELP ", 7) == 0)
            continue;
        if (sscanf(line, "# TYPE %127s", name) == 1) {
            snprintf(key, sizeof(key), " %s ", name);
            ck_assert_msg(strstr(seen, key) == NULL, "family %s declared twice", name);
            strncat(seen, key + 1, sizeof(seen) - strlen(seen) - 1);
            snprintf(family, sizeof(family), "%s", name);
            continue;
        }
        ck_assert_msg(strncmp(line, family, strlen(family)) == 0 &&
                          strchr("{ _", line[strlen(family)]) != NULL,
                      "sample '%s' outside its family %s", line, family);
    }
    free(t);
    metrics_figures_destroy(f);
}
END_TEST

START_TEST(test_metrics_prometheus_before_first_figures_has_state_only)
{
    metrics_process p = {.resident_bytes = 1};
    size_t len;
    char *t = metrics_render_prometheus(NULL, METRICS_LOADING, &p, 0, &len);

    ck_has_line(t, "emad_state{state=\"loading\"} 1");
    ck_has_line(t, "emad_state{state=\"serving\"} 0");
    ck_assert_ptr_null(strstr(t, "emad_requests_total"));
    free(t);
}
END_TEST

START_TEST(test_metrics_json_has_counters_and_models)
{
    metrics_figures *f = sample_figures();
    metrics_process p = {0};
    json_error_t jerr;
    size_t len;
    char *t = metrics_render_json(f, METRICS_SERVING, &p, 0, &len);
    json_t *root = json_loads(t, 0, &jerr), *c, *m;

    ck_assert_msg(root != NULL, "invalid JSON: %s\n%s", jerr.text, t);
    ck_assert_str_eq(json_string_value(json_object_get(root, "state")), "serving");
    c = json_object_get(root, "counters");
    ck_assert_int_eq(json_integer_value(json_object_get(c, "requests_push")), 10);
    ck_assert_int_eq(json_integer_value(json_object_get(c, "requests")), 12);
    ck_assert_int_eq(json_integer_value(json_object_get(c, "errors")), 5);
    ck_assert_int_eq(json_integer_value(json_object_get(c, "errors_EMAD_ESHAPE")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(c, "pushes_rejected")), 3);
    ck_assert_int_eq(json_integer_value(json_object_get(c, "pushes_rejected_nonfinite")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(c, "bytes_in")), 123456789012LL);
    m = json_object_get(root, "models");
    ck_assert_uint_eq(json_array_size(m), 2);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(m, 0), "name")), "run1");
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(m, 0), "step")), 42);
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(m, 0), "snapshot_step")),
                     40);
    ck_assert(json_is_null(json_object_get(json_array_get(m, 1), "seconds_since_push")));
    ck_assert_int_eq(json_integer_value(json_object_get(
                         json_object_get(json_object_get(root, "latency"), "push_apply"), "count")),
                     4);
    json_decref(root);
    free(t);
    metrics_figures_destroy(f);
}
END_TEST

/* A loop running on its own thread, with the board attached and a fill counter. */
typedef struct loop_fixture {
    uv_loop_t loop;
    uv_async_t stop;
    uv_async_t stall; /* makes the loop thread wait until the test sets release */
    pthread_t thread;
    metrics_board *board;
    atomic_int fills;
    atomic_int counter;  /* what fill copies into bytes_in */
    atomic_int release;  /* ends the stall */
    atomic_int stalling; /* set by the loop thread while it is stalled */
} loop_fixture;

static metrics_figures *
fill(void *arg)
{
    loop_fixture *x = arg;
    metrics_figures *f = metrics_figures_create(0);

    x->fills++;
    f->counters[COUNTER_BYTES_IN] = (uint64_t)x->counter;
    return f;
}

static void
on_stop(uv_async_t *a)
{
    loop_fixture *x = a->data;

    metrics_board_detach(x->board);
    uv_close((uv_handle_t *)&x->stop, NULL);
    uv_close((uv_handle_t *)&x->stall, NULL);
}

static void
on_stall(uv_async_t *a)
{
    loop_fixture *x = a->data;

    x->stalling = 1;
    while (!x->release)
        usleep(1000);
    x->stalling = 0;
}

static void *
loop_main(void *arg)
{
    loop_fixture *x = arg;
    uv_run(&x->loop, UV_RUN_DEFAULT);
    return NULL;
}

static void
fixture_start(loop_fixture *x)
{
    metrics_source src = {fill, x};

    memset(x, 0, sizeof(*x));
    ck_assert_int_eq(uv_loop_init(&x->loop), 0);
    metrics_board_create(&x->board);
    ck_assert_int_eq(metrics_board_attach(x->board, &x->loop, &src), 0);
    ck_assert_int_eq(x->fills, 1); /* attach publishes a first copy */
    uv_async_init(&x->loop, &x->stop, on_stop);
    x->stop.data = x;
    uv_async_init(&x->loop, &x->stall, on_stall);
    x->stall.data = x;
    pthread_create(&x->thread, NULL, loop_main, x);
}

static void
fixture_stop(loop_fixture *x)
{
    uv_async_send(&x->stop);
    pthread_join(x->thread, NULL);
    ck_assert_int_eq(uv_loop_close(&x->loop), 0);
    metrics_board_destroy(x->board);
}

START_TEST(test_metrics_board_reader_gets_figures_filled_after_asking)
{
    loop_fixture x;
    const metrics_figures *f;
    double age;

    fixture_start(&x);
    for (int i = 1; i <= 20; i++) {
        x.counter = i; /* set before asking: the copy must show it */
        f = metrics_board_acquire(x.board, &age);
        ck_assert_ptr_nonnull(f);
        ck_assert_uint_eq(f->counters[COUNTER_BYTES_IN], (uint64_t)i);
        ck_assert(age >= 0 && age < 60); /* a copy made after asking, not a stale one */
        metrics_board_release(x.board, f);
    }
    fixture_stop(&x);
}
END_TEST

/* Many readers at once: every one gets fresh figures, the loop fills far fewer copies. */
typedef struct reader_arg {
    loop_fixture *x;
    int bad;
} reader_arg;

static void *
reader(void *arg)
{
    reader_arg *r = arg;
    double age;

    for (int i = 0; i < 50; i++) {
        int want = r->x->counter;
        const metrics_figures *f = metrics_board_acquire(r->x->board, &age);
        if (f == NULL || f->counters[COUNTER_BYTES_IN] < (uint64_t)want)
            r->bad++;
        metrics_board_release(r->x->board, f);
    }
    return NULL;
}

START_TEST(test_metrics_board_coalesces_concurrent_readers)
{
    loop_fixture x;
    pthread_t t[8];
    reader_arg r[8];
    double t0;

    fixture_start(&x);
    x.counter = 5;
    t0 = now_s();
    for (int i = 0; i < 8; i++) {
        r[i].x = &x;
        r[i].bad = 0;
        pthread_create(&t[i], NULL, reader, &r[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        ck_assert_int_eq(r[i].bad, 0);
    }
    /* 400 reads; fills are limited to one per METRICS_MIN_REFRESH_MS (plus the first). */
    ck_assert_int_le(x.fills, 2 + (int)((now_s() - t0) * 1000 / METRICS_MIN_REFRESH_MS) + 1);
    ck_assert_int_lt(x.fills, 400);
    fixture_stop(&x);
}
END_TEST

START_TEST(test_metrics_board_stalled_loop_delays_reader_boundedly)
{
    loop_fixture x;
    const metrics_figures *f;
    double age, t0, waited;

    fixture_start(&x);
    x.counter = 1;
    uv_async_send(&x.stall); /* the loop thread stalls until release is set */
    while (!x.stalling)
        usleep(1000);
    usleep(100 * 1000); /* the copy made at attach is now at least 0.1 s old */
    x.counter = 2;
    t0 = now_s();
    f = metrics_board_acquire(x.board, &age);
    waited = now_s() - t0;
    /*
     * The stale copy (counter 0 at attach), after at least about
     * METRICS_REFRESH_WAIT_MS, and while the loop is still stalled: the
     * reader's wait is bounded by the board, not by the loop.
     */
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(f->counters[COUNTER_BYTES_IN], 0);
    ck_assert(waited >= METRICS_REFRESH_WAIT_MS / 1000.0 * 0.9);
    ck_assert_int_eq(x.stalling, 1);
    ck_assert(age >= 0.1);
    metrics_board_release(x.board, f);
    x.release = 1;
    fixture_stop(&x);
}
END_TEST

START_TEST(test_metrics_board_detached_answers_at_once_with_last_copy)
{
    loop_fixture x;
    const metrics_figures *f;
    double age, t0;

    fixture_start(&x);
    x.counter = 9;
    f = metrics_board_acquire(x.board, &age);
    metrics_board_release(x.board, f);
    uv_async_send(&x.stop); /* detaches on the loop thread */
    pthread_join(x.thread, NULL);
    x.counter = 10;
    /*
     * Twenty acquires that each waited METRICS_REFRESH_WAIT_MS would take
     * twenty times that; answering at once leaves ten of them spare for a
     * busy machine's scheduling.
     */
    t0 = now_s();
    for (int i = 0; i < 20; i++) {
        f = metrics_board_acquire(x.board, &age);
        ck_assert_uint_eq(f->counters[COUNTER_BYTES_IN], 9);
        metrics_board_release(x.board, f);
    }
    ck_assert(now_s() - t0 < 10 * METRICS_REFRESH_WAIT_MS / 1000.0);
    ck_assert_int_eq(uv_loop_close(&x.loop), 0);
    metrics_board_destroy(x.board);
}
END_TEST

START_TEST(test_metrics_board_without_loop_has_no_figures)
{
    metrics_board *b;
    double age;

    metrics_board_create(&b);
    ck_assert_int_eq(metrics_board_get_state(b), METRICS_LOADING);
    ck_assert_ptr_null(metrics_board_acquire(b, &age));
    metrics_board_set_state(b, METRICS_STOPPING);
    ck_assert_int_eq(metrics_board_get_state(b), METRICS_STOPPING);
    metrics_board_destroy(b);
}
END_TEST

START_TEST(test_metrics_process_reads_own_figures)
{
    metrics_process p;
    time_t now = time(NULL);

    metrics_process_get(&p);
    ck_assert_uint_gt(p.resident_bytes, 0);
    ck_assert_uint_ge(p.open_fds, 3);
    ck_assert_msg(p.start_time_unix > (double)now - 3600 && p.start_time_unix < (double)now + 5,
                  "start time %f, now %ld", p.start_time_unix, (long)now);
}
END_TEST

/* Hand one request packed by fn to the offline server; returns 1 if the reply is ok. */
static int
request(server *srv, void (*fn)(rq *r, const void *arg), const void *arg)
{
    rq r;
    void *reply;
    size_t len;
    int ok;

    rq_init(&r);
    fn(&r, arg);
    server_process(srv, r.sb.data, r.sb.size, &reply, &len);
    ck_assert_ptr_nonnull(reply);
    /* Replies are maps whose "ok" is the second entry: v, ok, ... */
    ok = memmem(reply, len, "\xa2ok\xc3", 4) != NULL;
    free(reply);
    rq_free(&r);
    return ok;
}

static void
pack_create(rq *r, const void *arg)
{
    (void)arg;
    rq_begin(r, "create", 2);
    rq_kv_str(r, "model", "m");
    rq_kv_double(r, "decay", 0.5);
}

/* A push of one F32 param "w" at step (shape [n]). */
typedef struct push_arg {
    uint64_t step, n;
} push_arg;

static void
pack_push(rq *r, const void *arg)
{
    const push_arg *a = arg;
    float data[8] = {1, 2, 3, 4, 5, 6, 7, 8};

    rq_begin_push(r, "m", a->step, 1);
    rq_tensor(r, 5, "w", "param", "F32", &a->n, 1, data, a->n * 4);
}

static void
pack_pull(rq *r, const void *arg)
{
    (void)arg;
    rq_begin(r, "pull", 1);
    rq_kv_str(r, "model", "m");
}

static void
pack_garbage(rq *r, const void *arg)
{
    (void)arg;
    msgpack_pack_array(&r->pk, 2);
    msgpack_pack_uint64(&r->pk, 1);
    msgpack_pack_uint64(&r->pk, 2);
}

START_TEST(test_metrics_server_figures_count_what_was_sent)
{
    server_config cfg;
    server *srv;
    metrics_figures *f;
    push_arg p1 = {1, 4}, p2 = {2, 4}, shape = {3, 8};

    server_config_init(&cfg);
    srv = server_create_offline(&cfg);
    ck_assert(request(srv, pack_create, NULL));
    ck_assert(request(srv, pack_push, &p1));      /* applied */
    ck_assert(request(srv, pack_push, &p1));      /* every tensor stale */
    ck_assert(request(srv, pack_push, &p2));      /* applied */
    ck_assert(!request(srv, pack_push, &shape));  /* EMAD_ESHAPE */
    ck_assert(!request(srv, pack_garbage, NULL)); /* EMAD_EMALFORMED, op unknown */
    ck_assert(request(srv, pack_pull, NULL));

    f = server_figures(srv);
    ck_assert_uint_eq(f->requests_ok[PROTO_OP_CREATE], 1);
    ck_assert_uint_eq(f->requests_ok[PROTO_OP_PUSH], 3);
    ck_assert_uint_eq(f->requests_error[PROTO_OP_PUSH], 1);
    ck_assert_uint_eq(f->requests_error[0], 1);
    ck_assert_uint_eq(f->requests_ok[PROTO_OP_PULL], 1);
    ck_assert_uint_eq(f->push_rejected[-EMAD_ESHAPE - METRICS_ERR_FIRST], 1);
    ck_assert_uint_eq(f->errors[-EMAD_EMALFORMED - METRICS_ERR_FIRST], 1);
    ck_assert_uint_eq(f->push_rejected[-EMAD_EMALFORMED - METRICS_ERR_FIRST], 0);
    ck_assert_uint_eq(f->pushes_stale, 1);
    ck_assert_uint_eq(f->counters[COUNTER_TENSORS_APPLIED], 2);
    ck_assert_uint_eq(f->counters[COUNTER_TENSORS_STALE], 1);
    ck_assert_uint_eq(f->store.models, 1);
    ck_assert_uint_eq(f->store.shadow_bytes, 16);
    ck_assert_uint_eq(f->nmodels, 1);
    ck_assert_str_eq(f->model[0].name, "m");
    ck_assert_uint_eq(f->model[0].step, 2);
    ck_assert_uint_eq(f->model[0].tensors, 1);
    ck_assert_double_eq(f->model[0].decay, 0.5);
    ck_assert_int_eq(f->has_state_dir, 0);
    /* Latency: the accepted pushes and the pull, nothing for the refused ones. */
    {
        uint64_t pushes = 0, pulls = 0;
        for (int i = 0; i <= METRICS_HIST_BUCKETS; i++) {
            pushes += f->push_apply.counts[i];
            pulls += f->pull.counts[i];
        }
        ck_assert_uint_eq(pushes, 3);
        ck_assert_uint_eq(pulls, 1);
    }
    metrics_figures_destroy(f);
    server_destroy(srv);
}
END_TEST

static Suite *
metrics_suite(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("render");
    TCase *tb = tcase_create("board");

    tcase_add_test(tc, test_metrics_hist_bucket_bounds_are_inclusive);
    tcase_add_test(tc, test_metrics_prometheus_text_shows_every_figure);
    tcase_add_test(tc, test_metrics_prometheus_families_are_declared_once_before_samples);
    tcase_add_test(tc, test_metrics_prometheus_before_first_figures_has_state_only);
    tcase_add_test(tc, test_metrics_json_has_counters_and_models);
    tcase_add_test(tc, test_metrics_process_reads_own_figures);
    tcase_add_test(tc, test_metrics_server_figures_count_what_was_sent);
    suite_add_tcase(s, tc);
    tcase_add_test(tb, test_metrics_board_reader_gets_figures_filled_after_asking);
    tcase_add_test(tb, test_metrics_board_coalesces_concurrent_readers);
    tcase_add_test(tb, test_metrics_board_stalled_loop_delays_reader_boundedly);
    tcase_add_test(tb, test_metrics_board_detached_answers_at_once_with_last_copy);
    tcase_add_test(tb, test_metrics_board_without_loop_has_no_figures);
    tcase_set_timeout(tb, TU_TCASE_TIMEOUT);
    suite_add_tcase(s, tb);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(metrics_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

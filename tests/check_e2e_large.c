/*
 * check_e2e_large.c - end-to-end suite for several clients at once,
 * pipelined transfers and models larger than one message: the real emad
 * binary driven by libemad and by raw nanomsg REQ sockets.
 *
 * Covers several clients at once, pipelined chunks and reads over several
 * connections, inline pulls up to 16 MiB and sessions beyond, models larger
 * than one message and chunks answered before they are averaged.
 *
 * Every test starts its own daemon on a free port with a private state
 * directory (tests/testutil.c) and stops it at the end, asserting a clean
 * exit. Expected values are computed here, independently of the daemon:
 * by hand for exactly representable numbers (decay 0.5 halves the
 * distance, so averages of small integers stay exact in every float type),
 * and with the documented float32 formula elsewhere.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>
#include <nanomsg/nn.h>

#include "e2eutil.h"

#define NPUSHERS 4
#define CONC_STEPS 10
#define CONC_N 4096

/* One pusher thread: its own client and model; pushes steps 1..CONC_STEPS. */
typedef struct pusher {
    const char *url;
    int id;
    int rc;
    char err[512];
} pusher;

/* Pusher thread: step k pushes w = k (all elements) and counter = k. */
static void *
pusher_main(void *arg)
{
    pusher *p = arg;
    emad_client *c = NULL;
    char model[32];
    float *w = malloc(CONC_N * sizeof(float));

    snprintf(model, sizeof(model), "conc%d", p->id);
    if (w == NULL || (p->rc = e2e_connect(&c, p->url)) != 0) {
        snprintf(p->err, sizeof(p->err), "connect: %s", emad_strerror(p->rc));
        goto out;
    }
    if ((p->rc = emad_create(c, model, 0.5, 1)) != 0)
        goto fail;
    for (int k = 1; k <= CONC_STEPS; k++) {
        int64_t counter = k;
        emad_tensor t[2] = {
            e2e_tensor("w", EMAD_PARAM, EMAD_F32, w, CONC_N * sizeof(float), 1, CONC_N, 0),
            e2e_tensor("counter", EMAD_BUFFER, EMAD_I64, &counter, 8, 0, 0, 0)};
        emad_push_result res;

        for (size_t i = 0; i < CONC_N; i++)
            w[i] = (float)k;
        if ((p->rc = emad_push(c, model, (uint64_t)k, t, 2, &res)) != 0)
            goto fail;
        if (res.applied != 2 || res.step != (uint64_t)k) {
            p->rc = -1;
            snprintf(p->err, sizeof(p->err), "step %d: applied %llu step %llu", k,
                     (unsigned long long)res.applied, (unsigned long long)res.step);
            goto out;
        }
    }
    goto out;
fail:
    snprintf(p->err, sizeof(p->err), "%s: %s", emad_strerror(p->rc), emad_last_error(c));
out:
    emad_close(c);
    free(w);
    return NULL;
}

/* Shadow after steps 1..k of pushes w = step with decay 0.5 (exact in float). */
static float
conc_expected(int k)
{
    double s = 1.0;

    for (int i = 2; i <= k; i++)
        s = (s + i) / 2.0;
    return (float)s;
}

/* The puller thread's state. */
typedef struct puller {
    const char *url;
    atomic_int *stop;
    int rc;
    long pulls;
    char err[512];
} puller;

/* Puller thread: pull every model until told to stop; each view must be one whole step. */
static void *
puller_main(void *arg)
{
    puller *p = arg;
    emad_client *c = NULL;

    if ((p->rc = e2e_connect(&c, p->url)) != 0) {
        snprintf(p->err, sizeof(p->err), "connect: %s", emad_strerror(p->rc));
        return NULL;
    }
    while (!*p->stop && p->rc == 0) {
        for (int id = 0; id < NPUSHERS && p->rc == 0; id++) {
            char model[32];
            emad_model *m = NULL;
            int rc;

            snprintf(model, sizeof(model), "conc%d", id);
            rc = emad_pull(c, model, NULL, 0, &m);
            if (rc == EMAD_ENOMODEL)
                continue; /* not created yet */
            if (rc != 0) {
                p->rc = rc;
                snprintf(p->err, sizeof(p->err), "pull %s: %s", model, emad_last_error(c));
                break;
            }
            p->pulls++;
            if (m->ntensors == 2) {
                int64_t counter;
                memcpy(&counter, m->tensors[1].data, 8);
                if (counter != (int64_t)m->step || m->tensors[0].step != m->step ||
                    !e2e_all_equal(m->tensors[0].data, CONC_N, conc_expected((int)m->step))) {
                    p->rc = -1;
                    snprintf(p->err, sizeof(p->err), "%s: inconsistent view at step %llu", model,
                             (unsigned long long)m->step);
                }
            } else if (m->ntensors != 0) {
                p->rc = -1;
                snprintf(p->err, sizeof(p->err), "%s: %zu tensors", model, m->ntensors);
            }
            emad_model_free(m);
        }
    }
    emad_close(c);
    return NULL;
}

/* Four pushers and a puller at once: every view consistent, every result exact. */
START_TEST(test_e2e_concurrent_clients)
{
    tu_daemon d;
    pthread_t th[NPUSHERS + 1];
    pusher ps[NPUSHERS];
    puller pl;
    atomic_int stop = 0;
    emad_client *c;

    e2e_daemon_up(&d, NULL);
    memset(&pl, 0, sizeof(pl));
    pl.url = d.url;
    pl.stop = &stop;
    ck_assert_int_eq(pthread_create(&th[NPUSHERS], NULL, puller_main, &pl), 0);
    for (int i = 0; i < NPUSHERS; i++) {
        memset(&ps[i], 0, sizeof(ps[i]));
        ps[i].url = d.url;
        ps[i].id = i;
        ck_assert_int_eq(pthread_create(&th[i], NULL, pusher_main, &ps[i]), 0);
    }
    for (int i = 0; i < NPUSHERS; i++)
        pthread_join(th[i], NULL);
    stop = 1;
    pthread_join(th[NPUSHERS], NULL);
    for (int i = 0; i < NPUSHERS; i++)
        ck_assert_msg(ps[i].rc == 0, "pusher %d: %s", i, ps[i].err);
    ck_assert_msg(pl.rc == 0, "puller: %s", pl.err);
    ck_assert_int_gt(pl.pulls, 0);

    /* Final state of every model, against the hand-computed average. */
    c = e2e_client_open(&d, NULL);
    for (int i = 0; i < NPUSHERS; i++) {
        char model[32];
        emad_model *m;
        int64_t counter;

        snprintf(model, sizeof(model), "conc%d", i);
        OK(c, emad_pull(c, model, NULL, 0, &m));
        ck_assert_uint_eq(m->step, CONC_STEPS);
        ck_assert(e2e_all_equal(m->tensors[0].data, CONC_N, conc_expected(CONC_STEPS)));
        memcpy(&counter, m->tensors[1].data, 8);
        ck_assert_int_eq(counter, CONC_STEPS);
        emad_model_free(m);
    }
    ck_assert_uint_eq(e2e_stat(c, "tensors_applied"), NPUSHERS * CONC_STEPS * 2);
    emad_close(c);
    e2e_daemon_down(&d);
}
END_TEST

/*
 * EMAD_PIPELINE_DEPTH=3: chunks and reads spread over three connections, so
 * the daemon sees a tensor's chunks in any order and answers them from its
 * threadpool (chunks of 1 MiB and more). The averages must match a push
 * over one connection bit for bit, and a pull must return them exactly.
 */
START_TEST(test_e2e_pipelined_push_and_pull)
{
    enum { N = 3 * 1024 * 1024 + 17 }; /* 12 MiB + 68 B: 13 chunks of 1 MiB */
    float *a = malloc(N * sizeof(float)), *b = malloc(N * sizeof(float));
    float *got1 = malloc(N * sizeof(float)), *got3 = malloc(N * sizeof(float));
    uint64_t rng = 3, step;
    tu_daemon d;
    emad_client *c1, *c3, *bad;
    emad_push_result res;
    emad_tensor t, into;

    ck_assert(a != NULL && b != NULL && got1 != NULL && got3 != NULL);
    for (size_t i = 0; i < N; i++) {
        a[i] = tu_randf(&rng);
        b[i] = tu_randf(&rng);
    }
    e2e_daemon_up(&d, e2e_small_msg_args);
    c1 = e2e_client_open(&d, NULL);
    ck_assert_int_eq(setenv("EMAD_PIPELINE_DEPTH", "3", 1), 0);
    c3 = e2e_client_open(&d, NULL);
    ck_assert_int_eq(setenv("EMAD_PIPELINE_DEPTH", "9", 1), 0);
    ck_assert_int_eq(emad_connect(&bad, d.url, NULL), EMAD_EINVAL);
    ck_assert_int_eq(unsetenv("EMAD_PIPELINE_DEPTH"), 0);
    OK(c1, emad_create(c1, "one", 0.9, 0));
    OK(c1, emad_create(c1, "three", 0.9, 0));
    for (int s = 1; s <= 3; s++) {
        t = e2e_tensor("w", EMAD_PARAM, EMAD_F32, s == 2 ? b : a, N * sizeof(float), 1, N, 0);
        OK(c1, emad_push(c1, "one", (uint64_t)s, &t, 1, &res));
        ck_assert_uint_eq(res.applied, 1);
        OK(c3, emad_push(c3, "three", (uint64_t)s, &t, 1, &res));
        ck_assert_uint_eq(res.applied, 1);
        ck_assert_uint_ge(res.messages, 14);
    }
    into = (emad_tensor){.name = "w", .data = got1, .nbytes = N * sizeof(float)};
    OK(c1, emad_pull_into(c1, "one", &into, 1, &step));
    into.data = got3;
    OK(c3, emad_pull_into(c3, "three", &into, 1, &step));
    ck_assert_uint_eq(step, 3);
    ck_assert_int_eq(memcmp(got1, got3, N * sizeof(float)), 0);
    /* The pulled bits are the float32 EMA of a, b, a computed here. */
    for (size_t i = 0; i < N; i++) {
        float sh = a[i];
        for (int s = 2; s <= 3; s++) {
            volatile float diff = sh - (s == 2 ? b[i] : a[i]);
            volatile float tt = 0.1f * diff;
            sh = sh - tt;
        }
        if (memcmp(&sh, &got3[i], 4) != 0)
            ck_abort_msg("element %zu: %.9g, expected %.9g", i, got3[i], sh);
    }
    ck_assert_uint_eq(e2e_stat(c1, "replies_dropped"), 0);
    ck_assert_uint_eq(e2e_stat(c1, "sessions_open"), 0);
    ck_assert_uint_eq(e2e_stat(c1, "txn_open"), 0);
    emad_close(c3);
    emad_close(c1);
    tu_daemon_stop(&d);
    free(a);
    free(b);
    free(got1);
    free(got3);
}
END_TEST

/*
 * libemad pulls a model of up to 16 MiB in one reply and a larger one
 * through a session of reads: replies of 32 MiB and more are fresh
 * mappings on each side, page-faulted in on every pull. The daemon allows
 * 64 MiB messages here, so both models would fit in one reply.
 */
START_TEST(test_e2e_pull_inline_up_to_16_mib)
{
    enum { NSMALL = 3 * 1024 * 1024 + 512 * 1024, NLARGE = 5 * 1024 * 1024 }; /* 14, 20 MiB */
    float *a = malloc(NLARGE * sizeof(float)), *b = malloc(NLARGE * sizeof(float));
    float *expect = malloc(NLARGE * sizeof(float)), *got = malloc(NLARGE * sizeof(float));
    const char *names[2] = {"small", "large"};
    const size_t counts[2] = {NSMALL, NLARGE};
    uint64_t rng = 11, step, reads, releases;
    tu_daemon d;
    emad_client *c;
    emad_model *m;
    emad_tensor t, into;

    ck_assert(a != NULL && b != NULL && expect != NULL && got != NULL);
    for (size_t i = 0; i < NLARGE; i++) {
        volatile float diff, tt;
        a[i] = tu_randf(&rng);
        b[i] = tu_randf(&rng);
        diff = a[i] - b[i];
        tt = 0.5f * diff;
        expect[i] = a[i] - tt;
    }
    e2e_daemon_up(&d, NULL);
    c = e2e_client_open(&d, NULL);
    for (int k = 0; k < 2; k++) {
        OK(c, emad_create(c, names[k], 0.5, 0));
        for (int s = 1; s <= 2; s++) {
            t = e2e_tensor("w", EMAD_PARAM, EMAD_F32, s == 1 ? a : b, counts[k] * sizeof(float), 1,
                           counts[k], 0);
            OK(c, emad_push(c, names[k], (uint64_t)s, &t, 1, NULL));
        }
    }
    for (int k = 0; k < 2; k++) {
        reads = e2e_stat(c, "requests_read");
        releases = e2e_stat(c, "requests_release");
        memset(got, 0, counts[k] * sizeof(float));
        into = (emad_tensor){.name = "w", .data = got, .nbytes = counts[k] * sizeof(float)};
        OK(c, emad_pull_into(c, names[k], &into, 1, &step));
        ck_assert_uint_eq(step, 2);
        ck_assert_int_eq(memcmp(got, expect, counts[k] * sizeof(float)), 0);
        OK(c, emad_pull(c, names[k], NULL, 0, &m));
        ck_assert_uint_eq(m->tensors[0].nbytes, counts[k] * sizeof(float));
        ck_assert_int_eq(memcmp(m->tensors[0].data, expect, counts[k] * sizeof(float)), 0);
        emad_model_free(m);
        if (k == 0) { /* inline: no reads, no release */
            ck_assert_uint_eq(e2e_stat(c, "requests_read"), reads);
            ck_assert_uint_eq(e2e_stat(c, "requests_release"), releases);
        } else { /* 20 MiB in reads of at most 4 MiB, twice; each session released */
            ck_assert_uint_ge(e2e_stat(c, "requests_read"), reads + 2 * 5);
            ck_assert_uint_eq(e2e_stat(c, "requests_release"), releases + 2);
        }
    }
    ck_assert_uint_eq(e2e_stat(c, "sessions_open"), 0);
    emad_close(c);
    e2e_daemon_down(&d);
    free(a);
    free(b);
    free(expect);
    free(got);
}
END_TEST

/* A model larger than one message goes as chunks and comes back bit-exact. */
START_TEST(test_e2e_chunked_push_and_pull)
{
    tu_daemon d;
    emad_client *c, *c2;
    emad_options o;
    emad_push_result res;
    emad_model *m;
    enum { NBIG = 1300000, NHALF = 300001, NSMALL = 100 }; /* ~5 MiB, ~0.6 MiB, 400 B */
    float *big = malloc(NBIG * sizeof(float)), *big2 = malloc(NBIG * sizeof(float));
    float *expect = malloc(NBIG * sizeof(float));
    uint16_t *half = malloc(NHALF * sizeof(uint16_t));
    float small[NSMALL];
    int64_t counters[10];
    uint64_t rng = 99;
    emad_tensor t[4];

    ck_assert(big != NULL && big2 != NULL && expect != NULL && half != NULL);
    for (size_t i = 0; i < NBIG; i++) {
        big[i] = tu_randf(&rng);
        big2[i] = tu_randf(&rng);
    }
    for (size_t i = 0; i < NHALF; i++)
        half[i] = (uint16_t)(tu_rand(&rng) & 0x3bff); /* finite F16 values below 1.0 */
    for (size_t i = 0; i < NSMALL; i++)
        small[i] = (float)i;
    for (size_t i = 0; i < 10; i++)
        counters[i] = (int64_t)tu_rand(&rng);

    e2e_daemon_up(&d, e2e_small_msg_args);
    c = e2e_client_open(&d, NULL);
    OK(c, emad_create(c, "big", 0.5, 0));
    t[0] = e2e_tensor("small", EMAD_PARAM, EMAD_F32, small, sizeof(small), 1, NSMALL, 0);
    t[1] = e2e_tensor("big", EMAD_PARAM, EMAD_F32, big, NBIG * sizeof(float), 2, NBIG / 100, 100);
    t[2] = e2e_tensor("half", EMAD_PARAM, EMAD_F16, half, NHALF * 2, 1, NHALF, 0);
    t[3] = e2e_tensor("counters", EMAD_BUFFER, EMAD_I64, counters, sizeof(counters), 1, 10, 0);
    OK(c, emad_push(c, "big", 1, t, 4, &res));
    ck_assert_uint_eq(res.applied, 4);
    ck_assert_uint_eq(res.step, 1);
    ck_assert_uint_gt(res.messages, 1);
    ck_assert_uint_ge(res.messages, (NBIG * 4 + NHALF * 2) / MIB + 2);
    ck_assert_uint_eq(e2e_stat(c, "txn_begun"), 1);
    ck_assert_uint_eq(e2e_stat(c, "txn_committed"), 1);

    /* Pulled back bit-exact, through a pull session (the model exceeds one reply). */
    OK(c, emad_pull(c, "big", NULL, 0, &m));
    ck_assert_uint_eq(m->ntensors, 4);
    ck_assert_uint_eq(m->step, 1);
    ck_assert_int_eq(memcmp(e2e_find(m, "small")->data, small, sizeof(small)), 0);
    ck_assert_int_eq(memcmp(e2e_find(m, "big")->data, big, NBIG * sizeof(float)), 0);
    ck_assert_int_eq(memcmp(e2e_find(m, "half")->data, half, NHALF * 2), 0);
    ck_assert_int_eq(memcmp(e2e_find(m, "counters")->data, counters, sizeof(counters)), 0);
    emad_model_free(m);
    ck_assert_uint_eq(e2e_stat(c, "sessions_open"), 0);

    /* A second client with small messages and replies: many chunks and reads. */
    e2e_options(&o);
    o.chunk_bytes = 256 * 1024;
    o.max_reply_bytes = 128 * 1024;
    c2 = e2e_client_open(&d, &o);
    t[1].data = big2;
    OK(c2, emad_push(c2, "big", 2, t, 4, &res));
    ck_assert_uint_eq(res.applied, 4);
    ck_assert_uint_ge(res.messages, NBIG * 4 / (256 * 1024) + 2);
    for (size_t i = 0; i < NBIG; i++) {
        volatile float diff = big[i] - big2[i];
        volatile float tt = 0.5f * diff;
        expect[i] = big[i] - tt;
    }
    memset(big, 0, NBIG * sizeof(float));
    {
        emad_tensor into = {.name = "big", .data = big, .nbytes = NBIG * sizeof(float)};
        uint64_t step;
        OK(c2, emad_pull_into(c2, "big", &into, 1, &step));
        ck_assert_uint_eq(step, 2);
        ck_assert_uint_eq(into.shape[0], NBIG / 100);
        ck_assert_int_eq(memcmp(big, expect, NBIG * sizeof(float)), 0);
    }
    ck_assert_uint_eq(e2e_stat(c2, "sessions_open"), 0);
    ck_assert_uint_eq(e2e_stat(c2, "txn_open"), 0);
    emad_close(c2);
    emad_close(c);
    free(big);
    free(big2);
    free(expect);
    free(half);
    e2e_daemon_down(&d);
}
END_TEST

/*
 * Big chunks are answered before they are averaged and the commit waits for
 * the averaging: steps of a 40 MiB tensor in 4 MiB chunks give the float32
 * EMA computed here; a commit sent right after the early reply to a
 * transaction's only chunk (32 MiB) waits and applies it. A NaN in a chunk
 * answered early still fails the push (at a later request or the commit)
 * with nothing applied, and the daemon goes on serving.
 */
START_TEST(test_e2e_chunks_answered_before_averaging)
{
    enum { N = 10 * 1024 * 1024 }; /* 40 MiB of float32: ten 4 MiB chunks */
    float *v[3], *expect = malloc(N * sizeof(float)), *got = malloc(N * sizeof(float));
    uint64_t rng = 17, step;
    tu_daemon d;
    emad_client *c;
    emad_options o;
    emad_push_result res;
    emad_tensor t, into;
    int rc, s;

    ck_assert(expect != NULL && got != NULL);
    for (int k = 0; k < 3; k++) {
        ck_assert((v[k] = malloc(N * sizeof(float))) != NULL);
        for (size_t i = 0; i < N; i++)
            v[k][i] = tu_randf(&rng);
    }
    e2e_daemon_up(&d, NULL);
    e2e_options(&o);
    o.chunk_bytes = 20 * MIB;
    c = e2e_client_open(&d, &o);
    OK(c, emad_create(c, "m", 0.75, 0));
    for (s = 1; s <= 3; s++) {
        const float *x = v[s - 1];
        t = e2e_tensor("w", EMAD_PARAM, EMAD_F32, x, N * sizeof(float), 2, N / 1024, 1024);
        OK(c, emad_push(c, "m", (uint64_t)s, &t, 1, &res));
        ck_assert_uint_eq(res.applied, 1);
        ck_assert_uint_ge(res.messages, 12); /* begin, ten chunks, commit */
        for (size_t i = 0; i < N; i++) {
            volatile float diff = expect[i] - x[i];
            volatile float tt = 0.25f * diff;
            expect[i] = s == 1 ? x[i] : expect[i] - tt;
        }
    }
    into = (emad_tensor){.name = "w", .data = got, .nbytes = N * sizeof(float)};
    OK(c, emad_pull_into(c, "m", &into, 1, &step));
    ck_assert_uint_eq(step, 3);
    ck_assert_int_eq(memcmp(got, expect, N * sizeof(float)), 0);

    /*
     * begin, one chunk holding all of a 32 MiB tensor, commit at once: the
     * chunk is answered while its averaging runs (milliseconds), so the
     * commit waits for it. Steps go on until a wait was counted (at most 32:
     * a busy machine may deschedule the client between reply and commit
     * long enough for one averaging to finish); each commit applies its
     * chunk exactly.
     */
    {
        enum { NS = 8 * 1024 * 1024 };
        int sock = e2e_raw_open(&d, e2e_reply_wait_ms());
        rq q;
        e2e_reply r;
        uint64_t k, txn;
        float *sexp = malloc(NS * sizeof(float));
        emad_tensor uin = {.name = "u", .data = got, .nbytes = NS * sizeof(float)};

        ck_assert(sexp != NULL);
        rq_init(&q);
        OK(c, emad_create(c, "solo", 0.75, 0));
        memcpy(sexp, v[0], NS * sizeof(float));
        for (k = 1; k <= 32 && (k <= 2 || e2e_stat(c, "commits_waited") == 0); k++) {
            const float *x = v[(k - 1) % 3];
            txn = e2e_raw_begin(sock, &q, "solo", k);
            e2e_txn_push(&q, txn);
            e2e_tensor_1d(&q, "u", "param", "F32", NS, x, NS * sizeof(float), 1, 0);
            e2e_raw_expect(sock, &q, 0);
            e2e_txn_end(&q, "commit", txn);
            e2e_raw_send(sock, &q, &r);
            ck_assert_int_eq(r.code, 0);
            ck_assert_uint_eq(e2e_obj_u64(r.root, "applied"), 1);
            e2e_raw_free(&r);
            for (size_t i = 0; k > 1 && i < NS; i++) {
                volatile float diff = sexp[i] - x[i];
                volatile float tt = 0.25f * diff;
                sexp[i] = sexp[i] - tt;
            }
        }
        ck_assert_uint_ge(e2e_stat(c, "commits_waited"), 1);
        OK(c, emad_pull_into(c, "solo", &uin, 1, &step));
        ck_assert_uint_eq(step, k - 1);
        ck_assert_int_eq(memcmp(got, sexp, NS * sizeof(float)), 0);
        rq_free(&q);
        nn_close(sock);
        free(sexp);
    }

    /* A NaN in the first chunk: the push fails, nothing applied, step unchanged. */
    v[1][12345] = NAN;
    t = e2e_tensor("w", EMAD_PARAM, EMAD_F32, v[1], N * sizeof(float), 2, N / 1024, 1024);
    rc = emad_push(c, "m", (uint64_t)s, &t, 1, &res);
    ck_assert_int_eq(rc, EMAD_ENONFINITE);
    ck_assert_ptr_nonnull(strstr(emad_last_error(c), "'w'"));
    OK(c, emad_pull_into(c, "m", &into, 1, &step));
    ck_assert_uint_eq(step, (uint64_t)s - 1);
    ck_assert_int_eq(memcmp(got, expect, N * sizeof(float)), 0);
    ck_assert_uint_eq(e2e_stat(c, "txn_open"), 0);

    /* Still serving: the same step with finite values is applied exactly. */
    v[1][12345] = 0.5f;
    OK(c, emad_push(c, "m", (uint64_t)s, &t, 1, &res));
    ck_assert_uint_eq(res.applied, 1);
    for (size_t i = 0; i < N; i++) {
        volatile float diff = expect[i] - v[1][i];
        volatile float tt = 0.25f * diff;
        expect[i] = expect[i] - tt;
    }
    OK(c, emad_pull_into(c, "m", &into, 1, &step));
    ck_assert_uint_eq(step, (uint64_t)s);
    ck_assert_int_eq(memcmp(got, expect, N * sizeof(float)), 0);
    emad_close(c);
    e2e_daemon_down(&d);
    for (int k = 0; k < 3; k++)
        free(v[k]);
    free(expect);
    free(got);
}
END_TEST

/* Run the e2e_large suite; exit status 0 if every test passed. */
int
main(void)
{
    const TTest *const tests[] = {
        test_e2e_concurrent_clients,
        test_e2e_pipelined_push_and_pull,
        test_e2e_pull_inline_up_to_16_mib,
        test_e2e_chunked_push_and_pull,
        test_e2e_chunks_answered_before_averaging,
        NULL,
    };

    return tu_run_tests("e2e_large", tests);
}

/*
 * check_e2e_txn.c - end-to-end suite for transactions (pulls see whole
 * committed pushes, abandoned transactions expire): the real emad binary
 * driven by libemad and by raw nanomsg REQ sockets.
 *
 * Covers transactions: concurrent pulls see only whole committed pushes, a pull
 * session keeps its view, staged chunks are invisible, an incomplete commit
 * fails, and an abandoned transaction expires without changing anything.
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

#define TXN_N (512 * 1024) /* 2 MiB of float32 per tensor */
#define TXN_STEPS 8

/* State shared by the transaction-consistency threads. */
typedef struct txn_shared {
    const char *url;
    atomic_int pulled_once;
    atomic_int done;
    int rc;
    long pulls;
    uint64_t steps_seen;
    char err[512];
} txn_shared;

/* Pull repeatedly while a pusher commits chunked pushes; every view must be one step. */
static void *
txn_puller_main(void *arg)
{
    txn_shared *s = arg;
    emad_client *c = NULL;
    emad_options o;
    int last = 0;

    e2e_options(&o);
    o.max_reply_bytes = 256 * 1024; /* many reads per pull */
    if ((s->rc = emad_connect(&c, s->url, &o)) != 0) {
        snprintf(s->err, sizeof(s->err), "connect: %s", emad_strerror(s->rc));
        s->pulled_once = 1;
        return NULL;
    }
    while (s->rc == 0 && !last) {
        emad_model *m = NULL;

        last = s->done;
        if ((s->rc = emad_pull(c, "tx", NULL, 0, &m)) != 0) {
            snprintf(s->err, sizeof(s->err), "pull: %s", emad_last_error(c));
            break;
        }
        s->pulls++;
        s->pulled_once = 1;
        if (m->ntensors != 0 && m->ntensors != 3) {
            s->rc = -1;
            snprintf(s->err, sizeof(s->err), "%zu tensors", m->ntensors);
        }
        for (size_t i = 0; s->rc == 0 && i < m->ntensors; i++) {
            if (m->tensors[i].step != m->step ||
                !e2e_all_equal(m->tensors[i].data, TXN_N, (float)m->step)) {
                s->rc = -1;
                snprintf(s->err, sizeof(s->err), "tensor %zu not all at step %llu", i,
                         (unsigned long long)m->step);
            }
        }
        if (m->step < 64)
            s->steps_seen |= 1ULL << m->step;
        emad_model_free(m);
    }
    emad_close(c);
    return NULL;
}

/* Pulls see whole committed pushes only: concurrently, through sessions, around open transactions.
 */
START_TEST(test_e2e_transaction_consistency)
{
    tu_daemon d;
    emad_client *c;
    emad_push_result res;
    emad_model *m;
    pthread_t th;
    txn_shared sh;
    float *v = e2e_floats(TXN_N, 0);
    emad_tensor t[3];
    int s;
    e2e_reply r;
    rq q;
    uint64_t session, txn;

    e2e_daemon_up(&d, e2e_small_msg_args);
    c = e2e_client_open(&d, NULL);
    OK(c, emad_create(c, "tx", 0.0, 0)); /* decay 0: the shadow is the last push */
    t[0] = e2e_tensor("t0", EMAD_PARAM, EMAD_F32, v, TXN_N * 4, 1, TXN_N, 0);
    t[1] = e2e_tensor("t1", EMAD_PARAM, EMAD_F32, v, TXN_N * 4, 1, TXN_N, 0);
    t[2] = e2e_tensor("t2", EMAD_PARAM, EMAD_F32, v, TXN_N * 4, 1, TXN_N, 0);

    /* Concurrent: a puller against chunked pushes of steps 1..TXN_STEPS. */
    memset(&sh, 0, sizeof(sh));
    sh.url = d.url;
    ck_assert_int_eq(pthread_create(&th, NULL, txn_puller_main, &sh), 0);
    while (!sh.pulled_once)
        tu_sleep_ms(1);
    for (int k = 1; k <= TXN_STEPS; k++) {
        for (size_t i = 0; i < TXN_N; i++)
            v[i] = (float)k;
        OK(c, emad_push(c, "tx", (uint64_t)k, t, 3, &res));
        ck_assert_uint_eq(res.applied, 3);
        ck_assert_uint_gt(res.messages, 3);
    }
    sh.done = 1;
    pthread_join(th, NULL);
    ck_assert_msg(sh.rc == 0, "puller: %s", sh.err);
    ck_assert_int_ge(sh.pulls, 2);
    ck_assert(sh.steps_seen & 1);                   /* the empty model before step 1 */
    ck_assert(sh.steps_seen & (1ULL << TXN_STEPS)); /* and the last step */

    /* Deterministic: a pull session keeps its view while a push commits. */
    s = e2e_raw_open(&d, e2e_reply_wait_ms());
    rq_init(&q);
    rq_begin(&q, "pull", 2);
    rq_kv_str(&q, "model", "tx");
    rq_kv_u64(&q, "max_reply_bytes", 65536);
    e2e_raw_send(s, &q, &r);
    ck_assert_int_eq(r.code, 0);
    session = e2e_obj_u64(r.root, "session");
    ck_assert_uint_eq(e2e_obj_u64(r.root, "step"), TXN_STEPS);
    e2e_raw_free(&r);

    for (size_t i = 0; i < TXN_N; i++)
        v[i] = (float)(TXN_STEPS + 1);
    OK(c, emad_push(c, "tx", TXN_STEPS + 1, t, 3, &res));
    ck_assert_uint_eq(res.applied, 3);

    rq_begin(&q, "read", 2);
    rq_kv_u64(&q, "session", session);
    rq_str(&q, "ranges");
    msgpack_pack_array(&q.pk, 2);
    msgpack_pack_array(&q.pk, 3);
    msgpack_pack_uint64(&q.pk, 0);
    msgpack_pack_uint64(&q.pk, 0);
    msgpack_pack_uint64(&q.pk, 4096);
    msgpack_pack_array(&q.pk, 3);
    msgpack_pack_uint64(&q.pk, 2);
    msgpack_pack_uint64(&q.pk, TXN_N * 4 - 4096);
    msgpack_pack_uint64(&q.pk, 4096);
    e2e_raw_send(s, &q, &r);
    ck_assert_int_eq(r.code, 0);
    {
        const msgpack_object *data = proto_map_get(r.root, "data");
        ck_assert(data != NULL && data->type == MSGPACK_OBJECT_ARRAY);
        ck_assert_uint_eq(data->via.array.size, 2);
        for (int i = 0; i < 2; i++) {
            ck_assert_int_eq(data->via.array.ptr[i].type, MSGPACK_OBJECT_BIN);
            ck_assert_uint_eq(data->via.array.ptr[i].via.bin.size, 4096);
            ck_assert(e2e_all_equal(data->via.array.ptr[i].via.bin.ptr, 1024, (float)TXN_STEPS));
        }
    }
    e2e_raw_free(&r);
    rq_begin(&q, "release", 1);
    rq_kv_u64(&q, "session", session);
    e2e_raw_expect(s, &q, 0);

    /* Deterministic: staged chunks of an open transaction are invisible. */
    txn = e2e_raw_begin(s, &q, "tx", 100);
    {
        float *chunk = e2e_floats(TXN_N / 4, 100.0f);
        e2e_txn_push(&q, txn);
        e2e_tensor_1d(&q, "t0", "param", "F32", TXN_N, chunk, TXN_N, 1, 0);
        e2e_raw_send(s, &q, &r);
        ck_assert_int_eq(r.code, 0);
        ck_assert_uint_eq(e2e_obj_u64(r.root, "staged"), 1);
        e2e_raw_free(&r);
        free(chunk);
    }
    OK(c, emad_pull(c, "tx", NULL, 0, &m));
    ck_assert_uint_eq(m->step, TXN_STEPS + 1);
    for (size_t i = 0; i < 3; i++)
        ck_assert(e2e_all_equal(m->tensors[i].data, TXN_N, (float)(TXN_STEPS + 1)));
    emad_model_free(m);
    /* Commit of an incomplete tensor fails and names it; abort discards. */
    e2e_txn_end(&q, "commit", txn);
    e2e_raw_send(s, &q, &r);
    ck_assert_int_eq(r.code, EMAD_EINCOMPLETE);
    {
        const msgpack_object *tn = proto_map_get(proto_map_get(r.root, "error"), "tensor");
        ck_assert(tn != NULL && tn->type == MSGPACK_OBJECT_STR && tn->via.str.size == 2 &&
                  memcmp(tn->via.str.ptr, "t0", 2) == 0);
    }
    e2e_raw_free(&r);
    e2e_txn_end(&q, "abort", txn);
    e2e_raw_expect(s, &q, 0);
    e2e_raw_expect(s, &q, EMAD_ENOTXN); /* already gone */
    OK(c, emad_pull(c, "tx", NULL, 0, &m));
    ck_assert_uint_eq(m->step, TXN_STEPS + 1);
    ck_assert(e2e_all_equal(m->tensors[0].data, TXN_N, (float)(TXN_STEPS + 1)));
    emad_model_free(m);
    ck_assert_uint_eq(e2e_stat(c, "txn_open"), 0);
    ck_assert_uint_eq(e2e_stat(c, "sessions_open"), 0);

    rq_free(&q);
    nn_close(s);
    free(v);
    emad_close(c);
    e2e_daemon_down(&d);
}
END_TEST

/* tu_wait_until() condition: the daemon (client arg) has expired a transaction. */
static int
txn_expired(void *arg)
{
    return e2e_stat(arg, "txn_expired") != 0;
}

/*
 * A transaction abandoned after one chunk expires and changes nothing. The
 * timeout (3 s, scaled) only has to outlast the two requests between begin
 * and the first look at txn_open; the test then waits for the expiry itself.
 */
START_TEST(test_e2e_abandoned_transaction_expires)
{
    char timeout[32];
    const char *const args[] = {"--txn-timeout", timeout, NULL};
    tu_daemon d;
    emad_client *c;
    emad_model *m;
    float a[1024], chunk[256];
    emad_tensor t;
    int s;
    e2e_reply r;
    rq q;
    uint64_t txn;

    snprintf(timeout, sizeof(timeout), "%.3f", 3.0 * tu_timeout_scale());
    for (size_t i = 0; i < 1024; i++)
        a[i] = (float)i;
    for (size_t i = 0; i < 256; i++)
        chunk[i] = -1.0f;
    e2e_daemon_up(&d, args);
    c = e2e_client_open(&d, NULL);
    OK(c, emad_create(c, "m", 0.5, 0));
    t = e2e_tensor("w", EMAD_PARAM, EMAD_F32, a, sizeof(a), 1, 1024, 0);
    OK(c, emad_push(c, "m", 1, &t, 1, NULL));

    /* A writer that begins, sends one chunk and disappears. */
    s = e2e_raw_open(&d, e2e_reply_wait_ms());
    rq_init(&q);
    txn = e2e_raw_begin(s, &q, "m", 2);
    e2e_txn_push(&q, txn);
    e2e_tensor_1d(&q, "w", "param", "F32", 1024, chunk, sizeof(chunk), 1, 0);
    e2e_raw_send(s, &q, &r);
    ck_assert_int_eq(r.code, 0);
    e2e_raw_free(&r);
    ck_assert_uint_eq(e2e_stat(c, "txn_open"), 1);

    ck_assert_msg(tu_wait_until(txn_expired, c, 120), "the transaction did not expire");
    ck_assert_uint_eq(e2e_stat(c, "txn_expired"), 1);
    ck_assert_uint_eq(e2e_stat(c, "txn_open"), 0);
    OK(c, emad_pull(c, "m", NULL, 0, &m));
    ck_assert_uint_eq(m->step, 1);
    ck_assert_int_eq(memcmp(m->tensors[0].data, a, sizeof(a)), 0);
    emad_model_free(m);

    /* The writer comes back: its transaction is gone. */
    e2e_txn_end(&q, "commit", txn);
    e2e_raw_expect(s, &q, EMAD_ENOTXN);
    rq_free(&q);
    nn_close(s);
    emad_close(c);
    e2e_daemon_down(&d);
}
END_TEST

/* Run the e2e_txn suite; exit status 0 if every test passed. */
int
main(void)
{
    const TTest *const tests[] = {
        test_e2e_transaction_consistency,
        test_e2e_abandoned_transaction_expires,
        NULL,
    };

    return tu_run_tests("e2e_txn", tests);
}

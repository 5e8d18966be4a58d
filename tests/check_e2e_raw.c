/*
 * check_e2e_raw.c - end-to-end suite for hostile and malformed requests on
 * a raw socket: the real emad binary driven by libemad and by raw nanomsg
 * REQ sockets.
 *
 * Covers hostile and malformed requests on a raw REQ socket (garbage, wrong
 * versions, unknown operations, bad pushes) get the documented error codes,
 * and an oversize message is dropped while the daemon keeps serving.
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

/* Garbage, wrong versions, unknown ops and bad pushes get the documented codes. */
START_TEST(test_e2e_raw_bad_requests_get_errors)
{
    tu_daemon d;
    emad_client *c;
    int s;
    e2e_reply r;
    rq q;
    float fv[2] = {1, 2};
    int32_t iv[2] = {1, 2};

    e2e_daemon_up(&d, e2e_small_msg_args);
    c = e2e_client_open(&d, NULL);
    OK(c, emad_create(c, "m", 0.5, 0));
    s = e2e_raw_open(&d, e2e_reply_wait_ms());
    rq_init(&q);

    /* Random bytes, truncated maps, huge counts, non-maps, trailing bytes. */
    {
        static const unsigned char garbage[] = {0xc1, 0x00, 0xff, 0x13, 0x37};
        static const unsigned char truncated[] = {0x83, 0xa1, 0x76, 0x01};
        static const unsigned char huge[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 0x76};
        static const unsigned char array[] = {0x92, 0x01, 0x02};
        static const unsigned char deep[] = {0x91, 0x91, 0x91, 0x91, 0x91, 0x91,
                                             0x91, 0x91, 0x91, 0x91, 0x91, 0xc0};
        uint64_t rng = 7;
        unsigned char noise[512];

        e2e_raw_call(s, garbage, sizeof(garbage), &r);
        ck_assert_int_eq(r.code, EMAD_EMALFORMED);
        e2e_raw_free(&r);
        e2e_raw_call(s, truncated, sizeof(truncated), &r);
        ck_assert_int_eq(r.code, EMAD_EMALFORMED);
        e2e_raw_free(&r);
        e2e_raw_call(s, huge, sizeof(huge), &r);
        ck_assert(r.code == EMAD_EMALFORMED || r.code == EMAD_ELIMIT);
        e2e_raw_free(&r);
        e2e_raw_call(s, array, sizeof(array), &r);
        ck_assert_int_eq(r.code, EMAD_EMALFORMED);
        e2e_raw_free(&r);
        e2e_raw_call(s, deep, sizeof(deep), &r);
        ck_assert(r.code == EMAD_EMALFORMED || r.code == EMAD_ELIMIT);
        e2e_raw_free(&r);
        for (int round = 0; round < 20; round++) {
            for (size_t i = 0; i < sizeof(noise); i++)
                noise[i] = (unsigned char)tu_rand(&rng);
            noise[0] = 0xc1; /* never valid msgpack */
            e2e_raw_call(s, noise, sizeof(noise), &r);
            ck_assert_int_eq(r.code, EMAD_EMALFORMED);
            e2e_raw_free(&r);
        }
        rq_begin(&q, "hello", 0);
        msgpack_pack_nil(&q.pk); /* trailing byte */
        e2e_raw_expect(s, &q, EMAD_EMALFORMED);
    }
    /* Wrong version: EMAD_EVERSION with the supported list. */
    rq_begin_v(&q, 2, "hello", 0);
    e2e_raw_send(s, &q, &r);
    ck_assert_int_eq(r.code, EMAD_EVERSION);
    {
        const msgpack_object *sup = proto_map_get(proto_map_get(r.root, "error"), "supported");
        ck_assert(sup != NULL && sup->type == MSGPACK_OBJECT_ARRAY && sup->via.array.size == 1);
        ck_assert_uint_eq(sup->via.array.ptr[0].via.u64, 1);
    }
    e2e_raw_free(&r);
    /* Unknown op, missing op, mistyped key. */
    rq_begin(&q, "frobnicate", 0);
    e2e_raw_expect(s, &q, EMAD_EOP);
    rq_clear(&q);
    msgpack_pack_map(&q.pk, 1);
    rq_kv_u64(&q, "v", 1);
    e2e_raw_expect(s, &q, EMAD_EMALFORMED);
    rq_begin(&q, "drop", 1);
    rq_kv_u64(&q, "model", 5);
    e2e_raw_expect(s, &q, EMAD_EMALFORMED);
    /* A push the client library would refuse: integer param, unknown dtype, duplicates. */
    rq_begin_push(&q, "m", 1, 1);
    e2e_tensor_1d(&q, "ints", "param", "I32", 2, iv, sizeof(iv), 0, 0);
    e2e_raw_send(s, &q, &r);
    ck_assert_int_eq(r.code, EMAD_EDTYPE);
    e2e_raw_free(&r);
    rq_begin_push(&q, "m", 1, 1);
    e2e_tensor_1d(&q, "x", "buffer", "F8", 2, iv, sizeof(iv), 0, 0);
    e2e_raw_expect(s, &q, EMAD_EDTYPE);
    rq_begin_push(&q, "m", 1, 2);
    e2e_tensor_1d(&q, "w", "param", "F32", 2, fv, sizeof(fv), 0, 0);
    e2e_tensor_1d(&q, "w", "param", "F32", 2, fv, sizeof(fv), 0, 0);
    e2e_raw_send(s, &q, &r);
    ck_assert_int_eq(r.code, EMAD_EDUP);
    {
        const msgpack_object *tn = proto_map_get(proto_map_get(r.root, "error"), "tensor");
        ck_assert(tn != NULL && tn->type == MSGPACK_OBJECT_STR && tn->via.str.size == 1 &&
                  tn->via.str.ptr[0] == 'w');
    }
    e2e_raw_free(&r);
    /* Wrong data length for the shape. */
    rq_begin_push(&q, "m", 1, 1);
    e2e_tensor_1d(&q, "w", "param", "F32", 3, fv, sizeof(fv), 0, 0);
    e2e_raw_expect(s, &q, EMAD_ESIZE);
    /* Unknown transaction and session. */
    e2e_txn_end(&q, "commit", 424242);
    e2e_raw_expect(s, &q, EMAD_ENOTXN);
    rq_begin(&q, "read", 2);
    rq_kv_u64(&q, "session", 424242);
    rq_str(&q, "ranges");
    msgpack_pack_array(&q.pk, 0);
    e2e_raw_expect(s, &q, EMAD_ENOSESSION);

    /* Nothing was applied, and the daemon still serves everyone. */
    {
        emad_model *m;
        OK(c, emad_pull(c, "m", NULL, 0, &m));
        ck_assert_uint_eq(m->ntensors, 0);
        emad_model_free(m);
    }
    ck_assert_uint_ge(e2e_stat(c, "errors_EMAD_EMALFORMED"), 26);
    ck_assert_uint_eq(e2e_stat(c, "errors_EMAD_EVERSION"), 1);
    ck_assert_uint_eq(e2e_stat(c, "errors_EMAD_EOP"), 1);
    ck_assert_uint_eq(e2e_stat(c, "errors_EMAD_EDTYPE"), 2);
    ck_assert_uint_eq(e2e_stat(c, "errors_EMAD_EDUP"), 1);
    ck_assert_uint_eq(e2e_stat(c, "tensors_applied"), 0);
    rq_begin(&q, "hello", 0);
    e2e_raw_send(s, &q, &r);
    ck_assert_int_eq(r.code, 0);
    ck_assert_uint_eq(e2e_obj_u64(r.root, "protocol"), 1);
    e2e_raw_free(&r);
    rq_free(&q);
    nn_close(s);
    emad_close(c);
    ck_assert(tu_daemon_alive(&d));
    e2e_daemon_down(&d);
}
END_TEST

/* An oversize message is dropped without a reply and the daemon keeps serving. */
START_TEST(test_e2e_oversize_message_dropped_daemon_serves)
{
    tu_daemon d;
    emad_client *c;
    int s;
    size_t len = 2 * MIB;
    char *big = calloc(1, len);
    void *buf;

    ck_assert_ptr_nonnull(big);
    e2e_daemon_up(&d, e2e_small_msg_args);
    /* Larger than --max-message-bytes: nanomsg drops the connection, no reply. */
    s = e2e_raw_open(&d, 1000);
    ck_assert_int_eq(nn_send(s, big, len, 0), (int)len);
    ck_assert_int_lt(nn_recv(s, &buf, NN_MSG, 0), 0);
    ck_assert_int_eq(nn_errno(), ETIMEDOUT);
    nn_close(s);
    c = e2e_client_open(&d, NULL);
    OK(c, emad_create(c, "still-here", 0.5, 0));
    emad_close(c);
    free(big);
    ck_assert(tu_daemon_alive(&d));
    e2e_daemon_down(&d);
}
END_TEST

/* Run the e2e_raw suite; exit status 0 if every test passed. */
int
main(void)
{
    const TTest *const tests[] = {
        test_e2e_raw_bad_requests_get_errors,
        test_e2e_oversize_message_dropped_daemon_serves,
        NULL,
    };

    return tu_run_tests("e2e_raw", tests);
}

/*
 * check_e2e_push.c - end-to-end suite for pushes and pulls of every kind of
 * tensor, stale steps and rejected pushes: the real emad binary driven by
 * libemad.
 *
 * Covers pushes and pulls of every dtype and kind of tensor, the default decay
 * against the float32 formula, stale steps, shape changes and pull_into's
 * buffer checks.
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

/* Every param dtype is averaged and every buffer copied, with hand-computed results. */
START_TEST(test_e2e_push_pull_all_dtypes)
{
    tu_daemon d;
    emad_client *c;
    emad_push_result res;
    emad_model *m;
    emad_model_info info;
    emad_tensor *desc, t[8];
    size_t n;
    /* Step 1 and step 2 values; with decay 0.5 the average is (s + p) / 2, exact here. */
    float f32a[4] = {1, 2, 3, 4}, f32b[4] = {3, 4, 5, 6}, f32e[4] = {2, 3, 4, 5};
    uint16_t f16a[3] = {0x3C00, 0xC000, 0x3800}; /* 1.0, -2.0, 0.5 */
    uint16_t f16b[3] = {0x4200, 0x4400, 0x4100}; /* 3.0, 4.0, 2.5 */
    uint16_t f16e[3] = {0x4000, 0x3C00, 0x3E00}; /* 2.0, 1.0, 1.5 */
    uint16_t bf16a[2] = {0x3F80, 0x40C0};        /* 1.0, 6.0 */
    uint16_t bf16b[2] = {0x4040, 0xBF80};        /* 3.0, -1.0 */
    uint16_t bf16e[2] = {0x4000, 0x4020};        /* 2.0, 2.5 */
    double f64a[2] = {1.0, 0.1}, f64b[2] = {2.0, 0.3}, f64e[2];
    int64_t i64a[2] = {-5, INT64_C(1) << 40}, i64b[2] = {7, -(INT64_C(1) << 50)};
    uint8_t boola[3] = {1, 0, 1}, boolb[3] = {0, 1, 1};
    int32_t i32a = 42, i32b = -43;
    uint16_t u16a[2] = {65535, 1}, u16b[2] = {3, 65534};
    const char *order[8] = {"fc.weight", "fc.h", "fc.bf",  "fc.d",
                            "bn.count",  "mask", "scalar", "u16"};

    {
        /* The F64 expectation, from the documented formula in float64. */
        volatile double s0 = 0.1, p0 = 0.3, c0 = 1.0 - 0.5;
        volatile double diff = s0 - p0, tt = c0 * diff;
        f64e[0] = 1.5;
        f64e[1] = s0 - tt;
    }
    e2e_daemon_up(&d, NULL);
    c = e2e_client_open(&d, NULL);
    OK(c, emad_create(c, "m", 0.5, 0));
    t[0] = e2e_tensor(order[0], EMAD_PARAM, EMAD_F32, f32a, sizeof(f32a), 2, 2, 2);
    t[1] = e2e_tensor(order[1], EMAD_PARAM, EMAD_F16, f16a, sizeof(f16a), 1, 3, 0);
    t[2] = e2e_tensor(order[2], EMAD_PARAM, EMAD_BF16, bf16a, sizeof(bf16a), 1, 2, 0);
    t[3] = e2e_tensor(order[3], EMAD_PARAM, EMAD_F64, f64a, sizeof(f64a), 1, 2, 0);
    t[4] = e2e_tensor(order[4], EMAD_BUFFER, EMAD_I64, i64a, sizeof(i64a), 1, 2, 0);
    t[5] = e2e_tensor(order[5], EMAD_BUFFER, EMAD_BOOL, boola, sizeof(boola), 1, 3, 0);
    t[6] = e2e_tensor(order[6], EMAD_BUFFER, EMAD_I32, &i32a, sizeof(i32a), 0, 0, 0);
    t[7] = e2e_tensor(order[7], EMAD_BUFFER, EMAD_U16, u16a, sizeof(u16a), 1, 2, 0);
    OK(c, emad_push(c, "m", 1, t, 8, &res));
    ck_assert_uint_eq(res.applied, 8);
    ck_assert_uint_eq(res.stale, 0);
    ck_assert_uint_eq(res.step, 1);
    ck_assert_uint_eq(res.messages, 1);

    /* The first push initializes every shadow to the pushed values. */
    OK(c, emad_pull(c, "m", NULL, 0, &m));
    ck_assert_uint_eq(m->ntensors, 8);
    ck_assert_int_eq(memcmp(e2e_find(m, "fc.h")->data, f16a, sizeof(f16a)), 0);
    ck_assert_int_eq(memcmp(e2e_find(m, "fc.bf")->data, bf16a, sizeof(bf16a)), 0);
    emad_model_free(m);

    t[0].data = f32b;
    t[1].data = f16b;
    t[2].data = bf16b;
    t[3].data = f64b;
    t[4].data = i64b;
    t[5].data = boolb;
    t[6].data = &i32b;
    t[7].data = u16b;
    OK(c, emad_push(c, "m", 2, t, 8, &res));
    ck_assert_uint_eq(res.applied, 8);
    ck_assert_uint_eq(res.step, 2);

    OK(c, emad_pull(c, "m", NULL, 0, &m));
    ck_assert_str_eq(m->name, "m");
    ck_assert_uint_eq(m->step, 2);
    ck_assert_uint_eq(m->ntensors, 8);
    for (size_t i = 0; i < 8; i++) {
        ck_assert_str_eq(m->tensors[i].name, order[i]); /* first-push order */
        ck_assert_int_eq(m->tensors[i].kind, t[i].kind);
        ck_assert_int_eq(m->tensors[i].dtype, t[i].dtype); /* F16/BF16 come back as pushed */
        ck_assert_uint_eq(m->tensors[i].ndim, t[i].ndim);
        for (uint32_t k = 0; k < t[i].ndim; k++)
            ck_assert_uint_eq(m->tensors[i].shape[k], t[i].shape[k]);
        ck_assert_uint_eq(m->tensors[i].nbytes, t[i].nbytes);
        ck_assert_uint_eq(m->tensors[i].step, 2);
    }
    ck_assert_int_eq(memcmp(m->tensors[0].data, f32e, sizeof(f32e)), 0);
    ck_assert_int_eq(memcmp(m->tensors[1].data, f16e, sizeof(f16e)), 0);
    ck_assert_int_eq(memcmp(m->tensors[2].data, bf16e, sizeof(bf16e)), 0);
    ck_assert_int_eq(memcmp(m->tensors[3].data, f64e, sizeof(f64e)), 0);
    /* Buffers are copied, never averaged. */
    ck_assert_int_eq(memcmp(m->tensors[4].data, i64b, sizeof(i64b)), 0);
    ck_assert_int_eq(memcmp(m->tensors[5].data, boolb, sizeof(boolb)), 0);
    ck_assert_int_eq(memcmp(m->tensors[6].data, &i32b, sizeof(i32b)), 0);
    ck_assert_int_eq(memcmp(m->tensors[7].data, u16b, sizeof(u16b)), 0);
    emad_model_free(m);

    /* A partial push at step 3 moves only fc.weight and the committed step. */
    {
        float f32c[4] = {4, 5, 6, 7}, f32e3[4] = {3, 4, 5, 6};
        const char *names[2] = {"fc.weight", "bn.count"};

        t[0].data = f32c;
        OK(c, emad_push(c, "m", 3, t, 1, &res));
        ck_assert_uint_eq(res.applied, 1);
        ck_assert_uint_eq(res.step, 3);
        OK(c, emad_pull(c, "m", names, 2, &m));
        ck_assert_uint_eq(m->ntensors, 2);
        ck_assert_uint_eq(m->step, 3);
        ck_assert_str_eq(m->tensors[0].name, "fc.weight");
        ck_assert_str_eq(m->tensors[1].name, "bn.count");
        ck_assert_uint_eq(m->tensors[0].step, 3);
        ck_assert_uint_eq(m->tensors[1].step, 2);
        ck_assert_int_eq(memcmp(m->tensors[0].data, f32e3, sizeof(f32e3)), 0);
        ck_assert_int_eq(memcmp(m->tensors[1].data, i64b, sizeof(i64b)), 0);
        emad_model_free(m);
    }

    OK(c, emad_describe(c, "m", &info, &desc, &n));
    ck_assert_str_eq(info.name, "m");
    ck_assert(info.decay == 0.5);
    ck_assert_uint_eq(info.step, 3);
    ck_assert_uint_eq(info.ntensors, 8);
    ck_assert_uint_eq(n, 8);
    for (size_t i = 0; i < 8; i++) {
        ck_assert_str_eq(desc[i].name, order[i]);
        ck_assert_int_eq(desc[i].kind, t[i].kind);
        ck_assert_int_eq(desc[i].dtype, t[i].dtype);
        ck_assert_uint_eq(desc[i].nbytes, t[i].nbytes);
        ck_assert_uint_eq(desc[i].step, i == 0 ? 3 : 2);
        ck_assert_ptr_null(desc[i].data);
    }
    ck_assert_uint_eq(desc[0].ndim, 2);
    ck_assert_uint_eq(desc[6].ndim, 0);
    emad_tensors_free(desc, n);
    ck_assert_uint_eq(e2e_stat(c, "tensors_applied"), 17);
    emad_close(c);
    e2e_daemon_down(&d);
}
END_TEST

/* Decay 0.999 matches the documented float32 update bit for bit. */
START_TEST(test_e2e_default_decay_matches_float32_formula)
{
    tu_daemon d;
    emad_client *c;
    emad_model *m;
    enum { N = 1000, STEPS = 5 };
    float *s = malloc(N * sizeof(float)), *p = malloc(N * sizeof(float));
    uint64_t rng = 12345;
    const float cf = (float)(1.0 - 0.999);

    ck_assert(s != NULL && p != NULL);
    e2e_daemon_up(&d, NULL);
    c = e2e_client_open(&d, NULL);
    OK(c, emad_create(c, "ref", 0.999, 0));
    for (int step = 1; step <= STEPS; step++) {
        emad_tensor t = e2e_tensor("w", EMAD_PARAM, EMAD_F32, p, N * sizeof(float), 1, N, 0);

        for (size_t i = 0; i < N; i++)
            p[i] = tu_randf(&rng) * 10.0f;
        OK(c, emad_push(c, "ref", (uint64_t)step, &t, 1, NULL));
        for (size_t i = 0; i < N; i++) {
            if (step == 1) {
                s[i] = p[i];
            } else {
                volatile float diff = s[i] - p[i];
                volatile float tt = cf * diff;
                s[i] = s[i] - tt;
            }
        }
    }
    OK(c, emad_pull(c, "ref", NULL, 0, &m));
    ck_assert_int_eq(memcmp(m->tensors[0].data, s, N * sizeof(float)), 0);
    emad_model_free(m);
    free(s);
    free(p);
    emad_close(c);
    e2e_daemon_down(&d);
}
END_TEST

/* A repeated or older step is stale: counted, and the data stay as they were. */
START_TEST(test_e2e_stale_step_changes_nothing)
{
    tu_daemon d;
    emad_client *c;
    emad_push_result res;
    emad_model *m;
    float a[3] = {1, 2, 3}, b[3] = {9, 9, 9};
    int64_t ca = 5, cb = 6;
    emad_tensor t[2];

    e2e_daemon_up(&d, NULL);
    c = e2e_client_open(&d, NULL);
    OK(c, emad_create(c, "m", 0.5, 0));
    t[0] = e2e_tensor("w", EMAD_PARAM, EMAD_F32, a, sizeof(a), 1, 3, 0);
    t[1] = e2e_tensor("n", EMAD_BUFFER, EMAD_I64, &ca, sizeof(ca), 0, 0, 0);
    OK(c, emad_push(c, "m", 5, t, 2, &res));
    ck_assert_uint_eq(res.applied, 2);

    /* The same step again (a resend, or another replica): nothing applied. */
    t[0].data = b;
    t[1].data = &cb;
    OK(c, emad_push(c, "m", 5, t, 2, &res));
    ck_assert_uint_eq(res.applied, 0);
    ck_assert_uint_eq(res.stale, 2);
    ck_assert_uint_eq(res.step, 5);
    /* An older step too. */
    OK(c, emad_push(c, "m", 4, t, 2, &res));
    ck_assert_uint_eq(res.applied, 0);
    ck_assert_uint_eq(res.stale, 2);
    ck_assert_uint_eq(res.step, 5);

    OK(c, emad_pull(c, "m", NULL, 0, &m));
    ck_assert_uint_eq(m->step, 5);
    ck_assert_int_eq(memcmp(e2e_find(m, "w")->data, a, sizeof(a)), 0);
    ck_assert_int_eq(memcmp(e2e_find(m, "n")->data, &ca, sizeof(ca)), 0);
    emad_model_free(m);
    ck_assert_uint_eq(e2e_stat(c, "tensors_stale"), 4);
    ck_assert_uint_eq(e2e_stat(c, "tensors_applied"), 2);
    emad_close(c);
    e2e_daemon_down(&d);
}
END_TEST

/* A changed shape, dtype or kind rejects the whole push; the daemon keeps serving. */
START_TEST(test_e2e_shape_change_rejected)
{
    tu_daemon d;
    emad_client *c;
    emad_push_result res;
    emad_model *m;
    float w[8] = {1, 2, 3, 4, 5, 6, 7, 8}, w12[12] = {0}, b[2] = {1, 1}, b2[2] = {3, 3};
    double wd[8] = {0};
    emad_tensor t[2];

    e2e_daemon_up(&d, NULL);
    c = e2e_client_open(&d, NULL);
    OK(c, emad_create(c, "m", 0.5, 0));
    t[0] = e2e_tensor("bias", EMAD_PARAM, EMAD_F32, b, sizeof(b), 1, 2, 0);
    t[1] = e2e_tensor("fc.weight", EMAD_PARAM, EMAD_F32, w, sizeof(w), 2, 2, 4);
    OK(c, emad_push(c, "m", 1, t, 2, &res));

    /* fc.weight as [3, 4]: the whole push is rejected, bias included. */
    t[0].data = b2;
    t[1] = e2e_tensor("fc.weight", EMAD_PARAM, EMAD_F32, w12, sizeof(w12), 2, 3, 4);
    ck_assert_int_eq(emad_push(c, "m", 2, t, 2, &res), EMAD_ESHAPE);
    ck_assert_ptr_nonnull(strstr(emad_last_error(c), "'fc.weight'"));
    ck_assert_ptr_nonnull(strstr(emad_last_error(c), "[3, 4]"));

    /* Same shape, other dtype or kind: EMAD_EKIND. */
    t[1] = e2e_tensor("fc.weight", EMAD_PARAM, EMAD_F64, wd, sizeof(wd), 2, 2, 4);
    ck_assert_int_eq(emad_push(c, "m", 2, t, 2, &res), EMAD_EKIND);
    t[1] = e2e_tensor("fc.weight", EMAD_BUFFER, EMAD_F32, w, sizeof(w), 2, 2, 4);
    ck_assert_int_eq(emad_push(c, "m", 2, t, 2, &res), EMAD_EKIND);
    ck_assert_ptr_nonnull(strstr(emad_last_error(c), "fc.weight"));

    OK(c, emad_pull(c, "m", NULL, 0, &m));
    ck_assert_uint_eq(m->step, 1);
    ck_assert_int_eq(memcmp(e2e_find(m, "bias")->data, b, sizeof(b)), 0);
    ck_assert_uint_eq(e2e_find(m, "fc.weight")->shape[0], 2);
    emad_model_free(m);

    /* The daemon still serves, and a correct push goes through. */
    t[1] = e2e_tensor("fc.weight", EMAD_PARAM, EMAD_F32, w, sizeof(w), 2, 2, 4);
    OK(c, emad_push(c, "m", 2, t, 2, &res));
    ck_assert_uint_eq(res.applied, 2);
    ck_assert_uint_eq(e2e_stat(c, "errors_EMAD_ESHAPE"), 1);
    ck_assert_uint_eq(e2e_stat(c, "errors_EMAD_EKIND"), 2);
    ck_assert_uint_eq(e2e_stat(c, "pushes_rejected"), 3);
    emad_close(c);
    e2e_daemon_down(&d);
}
END_TEST

/* pull_into refuses a small buffer before writing and fills every field otherwise. */
START_TEST(test_e2e_pull_into_checks_buffer_sizes)
{
    tu_daemon d;
    emad_client *c;
    float w[4] = {1, 2, 3, 4}, out[6];
    int64_t n = 77, nout = 0;
    emad_tensor t[2], into[2];
    uint64_t step = 0;

    e2e_daemon_up(&d, NULL);
    c = e2e_client_open(&d, NULL);
    OK(c, emad_create(c, "m", 0.5, 0));
    t[0] = e2e_tensor("w", EMAD_PARAM, EMAD_F32, w, sizeof(w), 2, 2, 2);
    t[1] = e2e_tensor("n", EMAD_BUFFER, EMAD_I64, &n, sizeof(n), 0, 0, 0);
    OK(c, emad_push(c, "m", 9, t, 2, NULL));

    /* Too small: EMAD_ESIZE, nothing written. */
    for (size_t i = 0; i < 6; i++)
        out[i] = -1;
    memset(into, 0, sizeof(into));
    into[0].name = "n";
    into[0].data = &nout;
    into[0].nbytes = sizeof(nout);
    into[1].name = "w";
    into[1].data = out;
    into[1].nbytes = 3 * sizeof(float);
    ck_assert_int_eq(emad_pull_into(c, "m", into, 2, &step), EMAD_ESIZE);
    ck_assert_ptr_nonnull(strstr(emad_last_error(c), "'w'"));
    ck_assert_int_eq(nout, 0);
    ck_assert(out[0] == -1 && out[3] == -1);
    ck_assert_uint_eq(step, 0);
    ck_assert_uint_eq(into[1].nbytes, 12);

    /* Larger than needed: filled, nbytes set to the tensor's size, the rest untouched. */
    into[1].nbytes = sizeof(out);
    OK(c, emad_pull_into(c, "m", into, 2, &step));
    ck_assert_uint_eq(step, 9);
    ck_assert_int_eq(nout, 77);
    ck_assert_int_eq(memcmp(out, w, sizeof(w)), 0);
    ck_assert(out[4] == -1 && out[5] == -1);
    ck_assert_uint_eq(into[1].nbytes, sizeof(w));
    ck_assert_int_eq(into[1].kind, EMAD_PARAM);
    ck_assert_int_eq(into[1].dtype, EMAD_F32);
    ck_assert_uint_eq(into[1].ndim, 2);
    ck_assert_uint_eq(into[1].shape[0], 2);
    ck_assert_uint_eq(into[1].shape[1], 2);
    ck_assert_uint_eq(into[1].step, 9);
    ck_assert_int_eq(into[0].kind, EMAD_BUFFER);
    ck_assert_uint_eq(into[0].ndim, 0);
    ck_assert_uint_eq(into[0].nbytes, 8);
    emad_close(c);
    e2e_daemon_down(&d);
}
END_TEST

/* Run the e2e_push suite; exit status 0 if every test passed. */
int
main(void)
{
    const TTest *const tests[] = {
        test_e2e_push_pull_all_dtypes,          test_e2e_default_decay_matches_float32_formula,
        test_e2e_stale_step_changes_nothing,    test_e2e_shape_change_rejected,
        test_e2e_pull_into_checks_buffer_sizes, NULL,
    };

    return tu_run_tests("e2e_push", tests);
}

/*
 * check_e2e_basic.c - end-to-end suite for connecting, names and models:
 * the real emad binary driven by libemad.
 *
 * Covers connecting (hello, limits, bad URLs and options), creating, listing,
 * describing and dropping models, the EMA options of a model, and the
 * arguments and names libemad refuses before sending anything.
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

/* hello learns the limit; no daemon, bad URLs and bad options fail cleanly. */
START_TEST(test_e2e_connect_hello)
{
    tu_daemon d, d2;
    emad_client *c, *bad = (emad_client *)1;
    emad_options o;
    int port;

    e2e_daemon_up(&d, NULL);
    c = e2e_client_open(&d, NULL);
    ck_assert_uint_eq(emad_server_max_message_bytes(c), 67108864);
    ck_assert_str_eq(emad_last_error(c), "");
    emad_close(c);

    e2e_daemon_up(&d2, e2e_small_msg_args);
    c = e2e_client_open(&d2, NULL);
    ck_assert_uint_eq(emad_server_max_message_bytes(c), 1048576);
    emad_close(c);
    e2e_daemon_down(&d2);

    /* Nobody listening: a connect error within the connect timeout, and no client. */
    e2e_options(&o);
    o.connect_timeout_ms = 300;
    port = tu_free_port();
    {
        char url[64];
        snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", port);
        ck_assert_int_eq(emad_connect(&bad, url, &o), EMAD_ECONNECT);
        ck_assert_ptr_null(bad);
    }
    ck_assert_int_eq(emad_connect(&bad, "nonsense://x", NULL), EMAD_EINVAL);
    o.timeout_ms = 0;
    ck_assert_int_eq(emad_connect(&bad, d.url, &o), EMAD_EINVAL);

    /* Library helpers. */
    ck_assert_str_eq(emad_version(), "0.1.0");
    ck_assert_str_eq(emad_errname(EMAD_ESHAPE), "EMAD_ESHAPE");
    ck_assert_ptr_null(emad_errname(12345));
    ck_assert_str_eq(emad_strerror(EMAD_ENOMODEL), "no such model");
    ck_assert_str_eq(emad_strerror(-ENOENT), strerror(ENOENT));
    ck_assert_str_eq(emad_dtype_name(EMAD_BF16), "BF16");
    ck_assert_int_eq(emad_dtype_from_name("I64"), EMAD_I64);
    ck_assert_int_eq(emad_dtype_from_name("F8"), EMAD_DTYPE_INVALID);
    ck_assert_uint_eq(emad_dtype_size(EMAD_F64), 8);
    ck_assert_uint_eq(emad_dtype_size(EMAD_DTYPE_INVALID), 0);
    e2e_daemon_down(&d);
}
END_TEST

/* Models are created, listed with their decay, described and dropped; errors name the model. */
START_TEST(test_e2e_create_list_drop)
{
    tu_daemon d;
    emad_client *c;
    emad_model_info *info;
    emad_tensor *ts;
    emad_model *m;
    size_t n;

    e2e_daemon_up(&d, NULL);
    c = e2e_client_open(&d, NULL);
    OK(c, emad_create(c, "run-a", 0.5, 0));
    OK(c, emad_create(c, "run_b.2", EMAD_DEFAULT_DECAY, 0));
    ck_assert_int_eq(emad_create(c, "run-a", 0.5, 0), EMAD_EEXIST);
    ck_assert_str_ne(emad_last_error(c), "");
    OK(c, emad_create(c, "run-a", 0.5, 1));
    ck_assert_int_eq(emad_create(c, "run-a", 0.25, 1), EMAD_EEXIST);
    ck_assert_int_eq(emad_create(c, ".hidden", 0.5, 0), EMAD_ENAME);
    ck_assert_int_eq(emad_create(c, "a b", 0.5, 0), EMAD_ENAME);
    ck_assert_int_eq(emad_create(c, "x", 1.5, 0), EMAD_ERANGE);
    ck_assert_int_eq(emad_create(c, "x", -0.1, 0), EMAD_ERANGE);
    ck_assert_int_eq(emad_create(c, NULL, 0.5, 0), EMAD_EINVAL);

    OK(c, emad_list(c, &info, &n));
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(info[0].name, "run-a");
    ck_assert(info[0].decay == 0.5);
    ck_assert_str_eq(info[1].name, "run_b.2");
    ck_assert(info[1].decay == 0.999);
    ck_assert_uint_eq(info[0].step, 0);
    ck_assert_uint_eq(info[0].ntensors, 0);
    ck_assert_uint_eq(info[0].shadow_bytes, 0);
    free(info);

    {
        emad_model_info mi;
        OK(c, emad_describe(c, "run-a", &mi, &ts, &n));
        ck_assert_str_eq(mi.name, "run-a");
        ck_assert(mi.decay == 0.5);
        ck_assert_uint_eq(n, 0);
        emad_tensors_free(ts, n);
    }

    OK(c, emad_drop(c, "run-a"));
    OK(c, emad_list(c, &info, &n));
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(info[0].name, "run_b.2");
    free(info);
    ck_assert_int_eq(emad_drop(c, "run-a"), EMAD_ENOMODEL);
    ck_assert_ptr_nonnull(strstr(emad_last_error(c), "run-a"));
    {
        emad_model_info mi;
        ck_assert_int_eq(emad_describe(c, "run-a", &mi, &ts, &n), EMAD_ENOMODEL);
    }
    ck_assert_int_eq(emad_pull(c, "run-a", NULL, 0, &m), EMAD_ENOMODEL);
    ck_assert_ptr_null(m);
    ck_assert_uint_eq(e2e_stat(c, "models"), 1);
    emad_close(c);
    e2e_daemon_down(&d);
}
END_TEST

/* The EMA options through libemad: configuration round trip, writers with slices, pull options. */
START_TEST(test_e2e_ema_options)
{
    tu_daemon d;
    emad_client *c;
    emad_model_config cfg, got;
    emad_push_result res;
    emad_pull_options po;
    emad_model *m;
    emad_tensor t, into;
    float a[4] = {0, 0, 0, 0}, b[4] = {4, 8, -4, 1.00390625f}, nan = __builtin_nanf("");
    uint16_t bf[4];
    uint64_t step;

    e2e_daemon_up(&d, NULL);
    c = e2e_client_open(&d, NULL);
    emad_config_init(&cfg);
    cfg.ndecays = 2;
    cfg.decays[0] = 0.5;
    cfg.decays[1] = 0.75;
    cfg.schedule = emad_option_from_name("schedule", "warmup");
    cfg.update_after_step = 3;
    cfg.power = 0.75;
    cfg.writers = 2;
    cfg.copy[0] = "bn.*";
    cfg.ncopy = 1;
    cfg.ignore[0] = "tmp.*";
    cfg.nignore = 1;
    OK(c, emad_create_config(c, "m", &cfg, 0));
    OK(c, emad_create_config(c, "m", &cfg, 1)); /* same configuration: fine with exist_ok */
    OK(c, emad_get_config(c, "m", &got));
    ck_assert_uint_eq(got.ndecays, 2);
    ck_assert_double_eq(got.decays[1], 0.75);
    ck_assert_int_eq(got.schedule, EMAD_SCHEDULE_WARMUP);
    ck_assert_uint_eq(got.update_after_step, 3);
    ck_assert_double_eq(got.power, 0.75);
    ck_assert_uint_eq(got.writers, 2);
    ck_assert_uint_eq(got.ncopy, 1);
    ck_assert_str_eq(got.copy[0], "bn.*");
    ck_assert_str_eq(got.ignore[0], "tmp.*");
    emad_config_free(&got);
    cfg.decays[1] = 0.8;
    ck_assert_int_eq(emad_create_config(c, "m", &cfg, 1), EMAD_EEXIST);

    /* Make it a constant schedule again, live; writers cannot change. */
    cfg.decays[1] = 0.75;
    cfg.schedule = EMAD_SCHEDULE_CONSTANT;
    cfg.update_after_step = 0;
    OK(c, emad_configure(c, "m", &cfg));
    cfg.writers = 3;
    ck_assert_int_eq(emad_configure(c, "m", &cfg), EMAD_EIMMUTABLE);
    ck_assert_ptr_nonnull(strstr(emad_last_error(c), "writers"));

    /* Two writers, each half of w; the step shows once both pushed. */
    t = e2e_tensor("w", EMAD_PARAM, EMAD_F32, a, 8, 1, 4, 0);
    t.count = 2;
    OK(c, emad_push_as(c, "m", 1, 0, &t, 1, &res));
    ck_assert_int_eq(res.pending, 1);
    t.offset = 2;
    t.data = &a[2];
    OK(c, emad_push_as(c, "m", 1, 1, &t, 1, &res));
    ck_assert_int_eq(res.pending, 0);
    ck_assert_uint_eq(res.step, 1);
    t.data = &b[2];
    OK(c, emad_push_as(c, "m", 2, 1, &t, 1, &res));
    OK(c, emad_pull(c, "m", NULL, 0, &m));
    ck_assert_uint_eq(m->step, 1);
    emad_model_free(m);
    t.offset = 0;
    t.data = b;
    OK(c, emad_push_as(c, "m", 2, 0, &t, 1, &res));
    ck_assert_uint_eq(res.step, 2);
    ck_assert_int_eq(emad_push_as(c, "m", 3, 2, &t, 1, &res), EMAD_ERANGE);
    t.count = 3; /* overlaps writer 0's earlier slice? no: a new step, but nbytes is wrong */
    ck_assert_int_eq(emad_push_as(c, "m", 3, 0, &t, 1, &res), EMAD_ESIZE);

    /* Pull the second decay (0 - 0.25 * (0 - b)) and the first as BF16. */
    emad_pull_options_init(&po);
    po.decay = 0.75;
    OK(c, emad_pull_ex(c, "m", NULL, 0, &po, &m));
    ck_assert_float_eq(((const float *)e2e_find(m, "w")->data)[0], 1.0f);
    ck_assert_float_eq(((const float *)e2e_find(m, "w")->data)[1], 2.0f);
    emad_model_free(m);
    emad_pull_options_init(&po);
    po.dtype = EMAD_BF16;
    into = (emad_tensor){.name = "w", .data = bf, .nbytes = sizeof(bf)};
    OK(c, emad_pull_into_ex(c, "m", &into, 1, &po, &step));
    ck_assert_int_eq(into.dtype, EMAD_BF16);
    ck_assert_uint_eq(into.nbytes, 8);
    /* 0 - 0.5 * (0 - b): 2, 4, -2, 0.501953125 -> BF16 0x4000, 0x4080, 0xc000, 0x3f00 (RNE). */
    ck_assert_uint_eq(bf[0], 0x4000);
    ck_assert_uint_eq(bf[1], 0x4080);
    ck_assert_uint_eq(bf[2], 0xc000);
    ck_assert_uint_eq(bf[3], 0x3f00);
    po.decay = 0.6;
    ck_assert_int_eq(emad_pull_ex(c, "m", NULL, 0, &po, &m), EMAD_ERANGE);

    /* A NaN param: rejected as a whole, with the daemon's code and message. */
    OK(c, emad_create(c, "n", 0.5, 0));
    t = e2e_tensor("w", EMAD_PARAM, EMAD_F32, &nan, 4, 0, 0, 0);
    ck_assert_int_eq(emad_push(c, "n", 1, &t, 1, &res), EMAD_ENONFINITE);
    ck_assert_ptr_nonnull(strstr(emad_last_error(c), "tensor 'w': 1 NaN or Inf value"));
    ck_assert_uint_eq(e2e_stat(c, "errors_EMAD_ENONFINITE"), 1);
    ck_assert_str_eq(emad_errname(EMAD_ENONFINITE), "EMAD_ENONFINITE");
    emad_close(c);
    e2e_daemon_down(&d);
}
END_TEST

/* Invalid arguments are refused by the library without any request. */
START_TEST(test_e2e_bad_arguments_rejected_before_sending)
{
    tu_daemon d;
    emad_client *c;
    emad_push_result res;
    int32_t iv[2] = {1, 2};
    float fv[2] = {1, 2};
    emad_tensor t[2];
    uint64_t requests;

    e2e_daemon_up(&d, NULL);
    c = e2e_client_open(&d, NULL);
    OK(c, emad_create(c, "m", 0.5, 0));
    requests = e2e_stat(c, "requests");

    /* An integer param. */
    t[0] = e2e_tensor("counts", EMAD_PARAM, EMAD_I32, iv, sizeof(iv), 1, 2, 0);
    ck_assert_int_eq(emad_push(c, "m", 1, t, 1, &res), EMAD_EDTYPE);
    ck_assert_ptr_nonnull(strstr(emad_last_error(c), "counts"));
    /* Unknown dtype and kind. */
    t[0] = e2e_tensor("w", EMAD_PARAM, 99, fv, sizeof(fv), 1, 2, 0);
    ck_assert_int_eq(emad_push(c, "m", 1, t, 1, &res), EMAD_EDTYPE);
    t[0] = e2e_tensor("w", 7, EMAD_F32, fv, sizeof(fv), 1, 2, 0);
    ck_assert_int_eq(emad_push(c, "m", 1, t, 1, &res), EMAD_EINVAL);
    /* nbytes that do not match the shape. */
    t[0] = e2e_tensor("w", EMAD_PARAM, EMAD_F32, fv, 4, 1, 2, 0);
    ck_assert_int_eq(emad_push(c, "m", 1, t, 1, &res), EMAD_ESIZE);
    ck_assert_ptr_nonnull(strstr(emad_last_error(c), "'w'"));
    /* The same name twice. */
    t[0] = e2e_tensor("w", EMAD_PARAM, EMAD_F32, fv, sizeof(fv), 1, 2, 0);
    t[1] = e2e_tensor("w", EMAD_BUFFER, EMAD_I32, iv, sizeof(iv), 1, 2, 0);
    ck_assert_int_eq(emad_push(c, "m", 1, t, 2, &res), EMAD_EDUP);
    /* Bad names, NULLs, nothing to push, too many dimensions. */
    t[0] = e2e_tensor("", EMAD_PARAM, EMAD_F32, fv, sizeof(fv), 1, 2, 0);
    ck_assert_int_eq(emad_push(c, "m", 1, t, 1, &res), EMAD_ENAME);
    t[0] = e2e_tensor("a\nb", EMAD_PARAM, EMAD_F32, fv, sizeof(fv), 1, 2, 0);
    ck_assert_int_eq(emad_push(c, "m", 1, t, 1, &res), EMAD_ENAME);
    t[0] = e2e_tensor(NULL, EMAD_PARAM, EMAD_F32, fv, sizeof(fv), 1, 2, 0);
    ck_assert_int_eq(emad_push(c, "m", 1, t, 1, &res), EMAD_EINVAL);
    t[0] = e2e_tensor("w", EMAD_PARAM, EMAD_F32, NULL, sizeof(fv), 1, 2, 0);
    ck_assert_int_eq(emad_push(c, "m", 1, t, 1, &res), EMAD_EINVAL);
    t[0] = e2e_tensor("w", EMAD_PARAM, EMAD_F32, fv, sizeof(fv), 17, 2, 0);
    ck_assert_int_eq(emad_push(c, "m", 1, t, 1, &res), EMAD_ELIMIT);
    ck_assert_int_eq(emad_push(c, "m", 1, t, 0, &res), EMAD_EINVAL);
    ck_assert_int_eq(emad_push(c, "bad name", 1, t, 1, &res), EMAD_ENAME);
    ck_assert_int_eq(emad_push(NULL, "m", 1, t, 1, &res), EMAD_EINVAL);
    {
        const char *names[1] = {"a\tb"};
        emad_model *m;
        ck_assert_int_eq(emad_pull(c, "m", names, 1, &m), EMAD_ENAME);
    }

    /* None of these reached the daemon (the stats call itself is one request). */
    ck_assert_uint_eq(e2e_stat(c, "requests"), requests + 1);
    emad_close(c);
    e2e_daemon_down(&d);
}
END_TEST

/* Unknown models and tensors get EMAD_ENOMODEL / EMAD_ENOTENSOR naming them. */
START_TEST(test_e2e_unknown_model_and_tensor)
{
    tu_daemon d;
    emad_client *c;
    emad_push_result res;
    emad_model *m = NULL;
    float fv[2] = {1, 2};
    emad_tensor t = e2e_tensor("w", EMAD_PARAM, EMAD_F32, fv, sizeof(fv), 1, 2, 0);
    const char *names[2] = {"w", "nope"};

    e2e_daemon_up(&d, NULL);
    c = e2e_client_open(&d, NULL);
    ck_assert_int_eq(emad_push(c, "ghost", 1, &t, 1, &res), EMAD_ENOMODEL);
    ck_assert_ptr_nonnull(strstr(emad_last_error(c), "ghost"));
    ck_assert_int_eq(emad_pull_into(c, "ghost", &t, 1, NULL), EMAD_ENOMODEL);
    ck_assert_int_eq(emad_drop(c, "ghost"), EMAD_ENOMODEL);
    OK(c, emad_create(c, "m", 0.5, 0));
    OK(c, emad_push(c, "m", 1, &t, 1, &res));
    ck_assert_int_eq(emad_pull(c, "m", names, 2, &m), EMAD_ENOTENSOR);
    ck_assert_ptr_null(m);
    ck_assert_ptr_nonnull(strstr(emad_last_error(c), "nope"));
    ck_assert_uint_eq(e2e_stat(c, "errors_EMAD_ENOMODEL"), 3);
    emad_close(c);
    e2e_daemon_down(&d);
}
END_TEST

/* Run the e2e_basic suite; exit status 0 if every test passed. */
int
main(void)
{
    const TTest *const tests[] = {
        test_e2e_connect_hello,
        test_e2e_create_list_drop,
        test_e2e_ema_options,
        test_e2e_bad_arguments_rejected_before_sending,
        test_e2e_unknown_model_and_tensor,
        NULL,
    };

    return tu_run_tests("e2e_basic", tests);
}

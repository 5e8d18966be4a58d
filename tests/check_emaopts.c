/*
 * check_emaopts.c - tests for the per-model EMA options: the decay
 * schedules of src/common/emaconf.c, and what src/store/store.c does with several
 * decays, buffer policies, name patterns, the non-finite guard, element
 * slices, multi-writer steps, live reconfiguration and pull conversions.
 *
 * Expected values are computed by hand: decays 0.5, 0.75 and 0.25 on
 * small integers keep every float32 operation exact, and the schedule
 * values are fractions written out with their derivation.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"
#include "common/emaconf.h"
#include "common/proto.h"
#include "store/store.h"

static store *s;
static store_err err;
static store_result res;

static void
setup(void)
{
    s = store_create();
}

static void
teardown(void)
{
    store_destroy(s);
}

/* Create model name with cfg; asserts success. */
static void
create(const char *name, const emad_model_config *cfg)
{
    int created;

    ck_assert_msg(store_create_model(s, name, strlen(name), cfg, 0, &created, &err) == 0, "%s",
                  err.message);
}

/* A configuration with the given decays and defaults otherwise. */
static emad_model_config
config(size_t n, const double *decays)
{
    emad_model_config cfg;

    emaconf_init(&cfg);
    cfg.ndecays = n;
    memcpy(cfg.decays, decays, n * sizeof(double));
    return cfg;
}

/* A 1-D input of n elements of dtype. */
static store_input
input(const char *name, int kind, int dtype, const void *data, size_t n)
{
    store_input in;

    memset(&in, 0, sizeof(in));
    in.name = name;
    in.name_len = strlen(name);
    in.kind = kind;
    in.dtype = dtype;
    in.ndim = 1;
    in.shape[0] = n;
    in.data = data;
    in.len = n * dtype_size(dtype);
    return in;
}

/* The same input restricted to elements [start, start + count) of data (the whole tensor). */
static store_input
slice_of(store_input in, uint64_t start, uint64_t count)
{
    in.start = start;
    in.count = count;
    in.data = (const char *)in.data + start * dtype_size(in.dtype);
    in.len = count * dtype_size(in.dtype);
    return in;
}

static const tensor *
find_tensor(const char *mname, const char *name)
{
    const model *m = store_model_find(s, mname, strlen(mname));

    for (size_t i = 0; m != NULL && i < m->ntensors; i++)
        if (strcmp(m->tensors[i]->name, name) == 0)
            return m->tensors[i];
    return NULL;
}

/* Element i of shadow j of a float32 tensor. */
static float
sh(const char *mname, const char *name, uint32_t j, size_t i)
{
    const tensor *t = find_tensor(mname, name);
    float f;

    ck_assert_ptr_nonnull(t);
    ck_assert_uint_lt(j, t->nshadow);
    memcpy(&f, (const char *)t->shadow[j]->data + 4 * i, 4);
    return f;
}

static int
push(const char *mname, uint64_t step, uint32_t writer, const store_input *in, size_t n)
{
    return store_push(s, mname, strlen(mname), step, writer, in, n, 1000, &res, &err);
}

/* ---- schedules ------------------------------------------------------------------------------ */

START_TEST(test_schedule_constant_and_update_after_step)
{
    emad_model_config c;

    emaconf_init(&c);
    ck_assert_double_eq(emaconf_step_decay(&c, 0.9, 1), 0.9);
    c.update_after_step = 3;
    ck_assert_double_eq(emaconf_step_decay(&c, 0.9, 3), 0.0); /* t <= uas: copy */
    ck_assert_double_eq(emaconf_step_decay(&c, 0.9, 4), 0.9);
}
END_TEST

START_TEST(test_schedule_num_updates)
{
    emad_model_config c;

    emaconf_init(&c);
    c.schedule = EMAD_SCHEDULE_NUM_UPDATES;
    /* n = t: (1 + 1) / (10 + 1) = 2/11; (1 + 5) / 15 = 0.4; large n clamps to d. */
    ck_assert_double_eq(emaconf_step_decay(&c, 0.999, 1), 2.0 / 11.0);
    ck_assert_double_eq(emaconf_step_decay(&c, 0.999, 5), 0.4);
    ck_assert_double_eq(emaconf_step_decay(&c, 0.999, 100000), 0.999);
    /* n = t - uas: t = 5, uas = 2 -> n = 3 -> 4/13. */
    c.update_after_step = 2;
    ck_assert_double_eq(emaconf_step_decay(&c, 0.999, 5), 4.0 / 13.0);
    ck_assert_double_eq(emaconf_step_decay(&c, 0.999, 2), 0.0);
    /* min_decay raises the early values. */
    c.update_after_step = 0;
    c.min_decay = 0.5;
    ck_assert_double_eq(emaconf_step_decay(&c, 0.999, 1), 0.5);
}
END_TEST

START_TEST(test_schedule_warmup)
{
    emad_model_config c;

    emaconf_init(&c);
    c.schedule = EMAD_SCHEDULE_WARMUP;
    /* e = t - 1: e = 0 copies; e = 7: 1 - 8^(-2/3) = 1 - 1/4 = 0.75 (exact). */
    ck_assert_double_eq(emaconf_step_decay(&c, 0.999, 1), 0.0);
    ck_assert_double_eq_tol(emaconf_step_decay(&c, 0.999, 8), 0.75, 1e-15);
    /* inv_gamma 2, power 1: e = 3 -> 1 - 1 / (1 + 1.5) = 0.6. */
    c.inv_gamma = 2.0;
    c.power = 1.0;
    ck_assert_double_eq_tol(emaconf_step_decay(&c, 0.999, 4), 0.6, 1e-15);
    /* Clamped to [min_decay, d]. */
    ck_assert_double_eq(emaconf_step_decay(&c, 0.5, 4), 0.5);
    c.min_decay = 0.7;
    ck_assert_double_eq(emaconf_step_decay(&c, 0.999, 4), 0.7);
    /* update_after_step 10: t = 11 is e = 0 (copy), t = 12 is e = 1: 1 - 1/1.5 = 1/3 -> 0.7. */
    c.min_decay = 0.0;
    c.update_after_step = 10;
    ck_assert_double_eq(emaconf_step_decay(&c, 0.999, 10), 0.0);
    ck_assert_double_eq(emaconf_step_decay(&c, 0.999, 11), 0.0);
    ck_assert_double_eq_tol(emaconf_step_decay(&c, 0.999, 12), 1.0 / 3.0, 1e-15);
}
END_TEST

START_TEST(test_step_gap_compensate)
{
    emad_model_config c;

    emaconf_init(&c);
    /* ignore: one step's decay whatever the gap. */
    ck_assert_double_eq(emaconf_decay(&c, 0.5, 1, 4), 0.5);
    c.step_gap = EMAD_STEP_GAP_COMPENSATE;
    ck_assert_double_eq(emaconf_decay(&c, 0.5, 1, 4), 0.125);
    ck_assert_double_eq(emaconf_decay(&c, 0.5, 3, 4), 0.5);
    /* num_updates: decay(2) * decay(3) = 3/12 * 4/13 = 1/13. */
    c.schedule = EMAD_SCHEDULE_NUM_UPDATES;
    ck_assert_double_eq_tol(emaconf_decay(&c, 0.999, 1, 3), 1.0 / 13.0, 1e-15);
    /* Past the point where the schedule reaches d: (1+n)/(10+n) >= 0.5 from n = 8 on. */
    ck_assert_double_eq_tol(emaconf_decay(&c, 0.5, 10, 14), 0.0625, 1e-15);
    /* A copying step in the gap makes the whole push a copy. */
    c.update_after_step = 2;
    ck_assert_double_eq(emaconf_decay(&c, 0.999, 1, 5), 0.0);
    /* A huge gap ends up at (almost) zero without looping forever. */
    c.update_after_step = 0;
    ck_assert(emaconf_decay(&c, 0.9999, 1, 1ull << 40) < 1e-17);
}
END_TEST

START_TEST(test_config_check_and_names)
{
    emad_model_config c;
    char why[256];

    emaconf_init(&c);
    ck_assert_int_eq(emaconf_check(&c, why, sizeof(why)), 0);
    c.decays[0] = 1.5;
    ck_assert_int_eq(emaconf_check(&c, why, sizeof(why)), EMAD_ERANGE);
    ck_assert_ptr_nonnull(strstr(why, "decay"));
    emaconf_init(&c);
    c.ndecays = 2;
    c.decays[1] = c.decays[0];
    ck_assert_int_eq(emaconf_check(&c, why, sizeof(why)), EMAD_ERANGE);
    emaconf_init(&c);
    c.writers = 0;
    ck_assert_int_eq(emaconf_check(&c, why, sizeof(why)), EMAD_ERANGE);
    emaconf_init(&c);
    c.power = 0.0;
    ck_assert_int_eq(emaconf_check(&c, why, sizeof(why)), EMAD_ERANGE);
    emaconf_init(&c);
    c.schedule = 7;
    ck_assert_int_eq(emaconf_check(&c, why, sizeof(why)), EMAD_ERANGE);
    /* update_after_step: what a snapshot's JSON holds, 0 .. 2^63 - 1. */
    emaconf_init(&c);
    c.update_after_step = (1ull << 63) - 1;
    ck_assert_int_eq(emaconf_check(&c, why, sizeof(why)), 0);
    c.update_after_step = 1ull << 63;
    ck_assert_int_eq(emaconf_check(&c, why, sizeof(why)), EMAD_ERANGE);
    ck_assert_ptr_nonnull(strstr(why, "update_after_step 9223372036854775808 is out of range"));
    /* Patterns: UTF-8 without control characters, or no snapshot could hold them. */
    emaconf_init(&c);
    c.ncopy = 1;
    c.copy[0] = "bn.*";
    ck_assert_int_eq(emaconf_check(&c, why, sizeof(why)), 0);
    c.copy[0] = "bn\xff*";
    ck_assert_int_eq(emaconf_check(&c, why, sizeof(why)), EMAD_ERANGE);
    ck_assert_ptr_nonnull(strstr(why, "copy: a pattern must have 1..256 bytes of UTF-8"));
    c.copy[0] = "bn\n*";
    ck_assert_int_eq(emaconf_check(&c, why, sizeof(why)), EMAD_ERANGE);
    ck_assert_int_eq(emaconf_from_name("schedule", "warmup", 6), EMAD_SCHEDULE_WARMUP);
    ck_assert_int_eq(emaconf_from_name("nonfinite", "skip", 4), EMAD_NONFINITE_SKIP);
    ck_assert_int_eq(emaconf_from_name("schedule", "warm", 4), -1);
    ck_assert_int_eq(emaconf_from_name("bogus", "copy", 4), -1);
    ck_assert_str_eq(emaconf_step_gap_name(EMAD_STEP_GAP_COMPENSATE), "compensate");
    ck_assert_ptr_null(emaconf_buffers_name(2));
}
END_TEST

/* ---- store semantics ------------------------------------------------------------------------ */

START_TEST(test_several_decays_and_view_choice)
{
    double d[2] = {0.5, 0.75};
    emad_model_config cfg = config(2, d);
    float v1 = 0.0f, v2 = 4.0f;
    store_input in = input("w", EMAD_PARAM, EMAD_F32, &v1, 1);
    view_options vo = {1, 0.75, EMAD_DTYPE_INVALID};
    store_view *v;
    float got;

    create("m", &cfg);
    ck_assert_int_eq(push("m", 1, 0, &in, 1), 0);
    in.data = &v2;
    ck_assert_int_eq(push("m", 2, 0, &in, 1), 0);
    /* 0 - 0.5 * (0 - 4) = 2; 0 - 0.25 * (0 - 4) = 1. */
    ck_assert_float_eq(sh("m", "w", 0, 0), 2.0f);
    ck_assert_float_eq(sh("m", "w", 1, 0), 1.0f);
    ck_assert_uint_eq(store_model_find(s, "m", 1)->shadow_bytes, 8);
    ck_assert_int_eq(store_view_create(s, "m", 1, NULL, NULL, 0, &vo, &v, &err), 0);
    memcpy(&got, v->tensors[0].data->data, 4);
    ck_assert_float_eq(got, 1.0f);
    store_view_free(v);
    ck_assert_int_eq(store_view_create(s, "m", 1, NULL, NULL, 0, NULL, &v, &err), 0);
    memcpy(&got, v->tensors[0].data->data, 4);
    ck_assert_float_eq(got, 2.0f);
    store_view_free(v);
    vo.decay = 0.6;
    ck_assert_int_eq(store_view_create(s, "m", 1, NULL, NULL, 0, &vo, &v, &err), EMAD_ERANGE);
    ck_assert_ptr_nonnull(strstr(err.message, "0.5, 0.75"));
}
END_TEST

START_TEST(test_buffers_copy_or_average)
{
    double d = 0.5;
    emad_model_config avg = config(1, &d), cp = config(1, &d);
    float b1 = 2.0f, b2 = 4.0f;
    int64_t n1 = 7, n2 = 9;
    store_input in[2] = {input("bn.mean", EMAD_BUFFER, EMAD_F32, &b1, 1),
                         input("bn.count", EMAD_BUFFER, EMAD_I64, &n1, 1)};

    avg.buffers = EMAD_BUFFERS_AVERAGE;
    create("avg", &avg);
    create("cp", &cp);
    ck_assert_int_eq(push("avg", 1, 0, in, 2), 0);
    ck_assert_int_eq(push("cp", 1, 0, in, 2), 0);
    in[0].data = &b2;
    in[1].data = &n2;
    ck_assert_int_eq(push("avg", 2, 0, in, 2), 0);
    ck_assert_int_eq(push("cp", 2, 0, in, 2), 0);
    ck_assert_float_eq(sh("avg", "bn.mean", 0, 0), 3.0f); /* 2 - 0.5 * (2 - 4) */
    ck_assert_float_eq(sh("cp", "bn.mean", 0, 0), 4.0f);
    ck_assert_int_eq(find_tensor("avg", "bn.mean")->averaged, 1);
    /* Integer buffers are copied under both policies. */
    ck_assert_int_eq(find_tensor("avg", "bn.count")->averaged, 0);
    ck_assert_int_eq(*(const int64_t *)find_tensor("avg", "bn.count")->shadow[0]->data, 9);
    ck_assert_int_eq(*(const int64_t *)find_tensor("cp", "bn.count")->shadow[0]->data, 9);
}
END_TEST

START_TEST(test_copy_and_ignore_patterns)
{
    double d = 0.5;
    emad_model_config cfg = config(1, &d);
    float a1 = 0.0f, a2 = 4.0f;
    store_input in[3] = {input("w", EMAD_PARAM, EMAD_F32, &a1, 1),
                         input("bn.weight", EMAD_PARAM, EMAD_F32, &a1, 1),
                         input("tmp.grad", EMAD_PARAM, EMAD_F32, &a1, 1)};

    cfg.copy[0] = "bn.*";
    cfg.ncopy = 1;
    cfg.ignore[0] = "tmp.*";
    cfg.ignore[1] = "*.momentum";
    cfg.nignore = 2;
    create("m", &cfg);
    ck_assert_int_eq(push("m", 1, 0, in, 3), 0);
    ck_assert_uint_eq(res.applied, 2);
    ck_assert_uint_eq(res.ignored, 1);
    in[0].data = in[1].data = in[2].data = &a2;
    ck_assert_int_eq(push("m", 2, 0, in, 3), 0);
    ck_assert_float_eq(sh("m", "w", 0, 0), 2.0f);
    ck_assert_float_eq(sh("m", "bn.weight", 0, 0), 4.0f); /* copied */
    ck_assert_ptr_null(find_tensor("m", "tmp.grad"));
    /* An ignored tensor is still checked on its own. */
    in[2].len = 3;
    ck_assert_int_eq(push("m", 3, 0, in, 3), EMAD_ESIZE);
}
END_TEST

START_TEST(test_nonfinite_reject_skip_allow)
{
    double d = 0.5;
    emad_model_config rej = config(1, &d), skip = config(1, &d), allow = config(1, &d);
    float one = 1.0f, nan = NAN, inf = -INFINITY, two = 2.0f;
    store_input good[2] = {input("w", EMAD_PARAM, EMAD_F32, &one, 1),
                           input("v", EMAD_PARAM, EMAD_F32, &one, 1)};
    store_input bad[3] = {input("w", EMAD_PARAM, EMAD_F32, &nan, 1),
                          input("v", EMAD_PARAM, EMAD_F32, &two, 1),
                          input("mask", EMAD_BUFFER, EMAD_F32, &inf, 1)};
    uint32_t before, after;

    skip.nonfinite = EMAD_NONFINITE_SKIP;
    allow.nonfinite = EMAD_NONFINITE_ALLOW;
    create("rej", &rej);
    create("skip", &skip);
    create("allow", &allow);
    ck_assert_int_eq(push("rej", 1, 0, good, 2), 0);
    ck_assert_int_eq(push("skip", 1, 0, good, 2), 0);
    ck_assert_int_eq(push("allow", 1, 0, good, 2), 0);
    memcpy(&before, find_tensor("rej", "w")->shadow[0]->data, 4);

    /* reject: nothing applied, the error names the tensor and the count. */
    ck_assert_int_eq(push("rej", 2, 0, bad, 3), EMAD_ENONFINITE);
    ck_assert_str_eq(err.tensor, "w");
    ck_assert_ptr_nonnull(strstr(err.message, "1 NaN or Inf value"));
    memcpy(&after, find_tensor("rej", "w")->shadow[0]->data, 4);
    ck_assert_uint_eq(before, after);
    ck_assert_float_eq(sh("rej", "v", 0, 0), 1.0f);
    ck_assert_ptr_null(find_tensor("rej", "mask"));
    ck_assert_uint_eq(store_model_find(s, "rej", 3)->step, 1);

    /* skip: the bad tensor keeps its shadow and step; the rest applies (a copied -inf buffer too).
     */
    ck_assert_int_eq(push("skip", 2, 0, bad, 3), 0);
    ck_assert_uint_eq(res.applied, 2);
    ck_assert_uint_eq(res.skipped, 1);
    ck_assert_float_eq(sh("skip", "w", 0, 0), 1.0f);
    ck_assert_uint_eq(find_tensor("skip", "w")->step, 1);
    ck_assert_float_eq(sh("skip", "v", 0, 0), 1.5f);
    ck_assert(isinf(sh("skip", "mask", 0, 0)));

    /* allow: NaN goes in. */
    ck_assert_int_eq(push("allow", 2, 0, bad, 3), 0);
    ck_assert(isnan(sh("allow", "w", 0, 0)));
}
END_TEST

START_TEST(test_slices_one_writer)
{
    double d = 0.5;
    emad_model_config cfg = config(1, &d);
    float a[4] = {0, 0, 0, 0}, b[4] = {4, 8, -4, 2};
    store_input whole = input("w", EMAD_PARAM, EMAD_F32, a, 4);
    store_input parts[2];

    create("m", &cfg);
    ck_assert_int_eq(push("m", 1, 0, &whole, 1), 0);
    whole.data = b;
    parts[0] = slice_of(whole, 2, 2);
    parts[1] = slice_of(whole, 0, 2);
    ck_assert_int_eq(push("m", 2, 0, parts, 2), 0);
    ck_assert_float_eq(sh("m", "w", 0, 0), 2.0f);
    ck_assert_float_eq(sh("m", "w", 0, 1), 4.0f);
    ck_assert_float_eq(sh("m", "w", 0, 2), -2.0f);
    ck_assert_float_eq(sh("m", "w", 0, 3), 1.0f);
    /* Missing elements, overlaps, out-of-range slices and a zero-count start. */
    ck_assert_int_eq(push("m", 3, 0, parts, 1), EMAD_EINCOMPLETE);
    ck_assert_str_eq(err.tensor, "w");
    parts[1] = slice_of(whole, 1, 2);
    ck_assert_int_eq(push("m", 3, 0, parts, 2), EMAD_EOVERLAP);
    parts[0] = whole;
    parts[0].start = 3;
    parts[0].count = 2;
    parts[0].len = 8;
    ck_assert_int_eq(push("m", 3, 0, parts, 1), EMAD_ERANGE);
    parts[0] = whole;
    parts[0].start = 1;
    ck_assert_int_eq(push("m", 3, 0, parts, 1), EMAD_ERANGE);
    ck_assert_float_eq(sh("m", "w", 0, 0), 2.0f); /* nothing applied by the failures */
    ck_assert_uint_eq(store_model_find(s, "m", 1)->step, 2);
}
END_TEST

START_TEST(test_writers_make_a_step_visible_together)
{
    double d = 0.5;
    emad_model_config cfg = config(1, &d);
    float a[4] = {0, 0, 0, 0}, b[4] = {4, 8, -4, 2};
    store_input w = input("w", EMAD_PARAM, EMAD_F32, a, 4), p;
    store_view *v;
    store_gauges g;
    uint64_t txns = 0, views = 0, steps = 0;

    cfg.writers = 2;
    create("m", &cfg);
    p = slice_of(w, 0, 2);
    ck_assert_int_eq(push("m", 1, 0, &p, 1), 0);
    ck_assert_int_eq(res.pending, 1);
    ck_assert_uint_eq(res.applied, 0);
    ck_assert_ptr_null(find_tensor("m", "w")); /* not visible yet */
    store_gauges_get(s, &g);
    ck_assert_uint_eq(g.steps_pending, 1);
    ck_assert_uint_eq(g.staged_bytes, 8);
    /* A resend by the same writer is ignored; an unknown writer is refused. */
    ck_assert_int_eq(push("m", 1, 0, &p, 1), 0);
    ck_assert_uint_eq(res.stale, 1);
    ck_assert_int_eq(push("m", 1, 2, &p, 1), EMAD_ERANGE);
    /* Writer 1 overlapping writer 0's slice is refused, nothing staged for it. */
    p = slice_of(w, 1, 3);
    ck_assert_int_eq(push("m", 1, 1, &p, 1), EMAD_EOVERLAP);
    p = slice_of(w, 2, 2);
    ck_assert_int_eq(push("m", 1, 1, &p, 1), 0);
    ck_assert_int_eq(res.pending, 0);
    ck_assert_uint_eq(res.applied, 1);
    ck_assert_uint_eq(res.step, 1);

    /* Step 2, writer 1 first: a view taken in between still shows step 1. */
    w.data = b;
    p = slice_of(w, 2, 2);
    ck_assert_int_eq(push("m", 2, 1, &p, 1), 0);
    ck_assert_int_eq(store_view_create(s, "m", 1, NULL, NULL, 0, NULL, &v, &err), 0);
    ck_assert_uint_eq(v->step, 1);
    p = slice_of(w, 0, 2);
    ck_assert_int_eq(push("m", 2, 0, &p, 1), 0);
    ck_assert_uint_eq(res.step, 2);
    ck_assert_float_eq(((const float *)v->tensors[0].data->data)[0], 0.0f); /* frozen view */
    store_view_free(v);
    ck_assert_float_eq(sh("m", "w", 0, 0), 2.0f);
    ck_assert_float_eq(sh("m", "w", 0, 3), 1.0f);
    /* A late writer of a complete step is stale. */
    ck_assert_int_eq(push("m", 2, 0, &p, 1), 0);
    ck_assert_uint_eq(res.stale, 1);

    /* Writers that leave elements uncovered: the last one gets EINCOMPLETE, its part is not
     * staged, the step keeps writer 0's part and waits. */
    p = slice_of(w, 0, 1);
    ck_assert_int_eq(push("m", 3, 0, &p, 1), 0);
    p = slice_of(w, 2, 2);
    ck_assert_int_eq(push("m", 3, 1, &p, 1), EMAD_EINCOMPLETE);
    ck_assert_ptr_nonnull(strstr(err.message, "3 of its 4 elements"));
    ck_assert_uint_eq(store_model_find(s, "m", 1)->step, 2);
    store_gauges_get(s, &g);
    ck_assert_uint_eq(g.steps_pending, 1);
    ck_assert_uint_eq(g.staged_bytes, 4);

    /* An abandoned step expires. An empty contribution is allowed with several writers. */
    ck_assert_int_eq(push("m", 4, 0, NULL, 0), 0);
    ck_assert_int_eq(res.pending, 1);
    store_expire(s, 1999, 1000, &txns, &views, &steps);
    ck_assert_uint_eq(steps, 0);
    store_expire(s, 2000, 1000, &txns, &views, &steps);
    ck_assert_uint_eq(steps, 2); /* steps 3 and 4 */
}
END_TEST

START_TEST(test_writer_transaction_moves_into_the_step)
{
    double d = 0.5;
    emad_model_config cfg = config(1, &d);
    float a[4] = {1, 2, 3, 4};
    store_input w = input("w", EMAD_PARAM, EMAD_F32, a, 4), p;
    uint64_t id, staged;

    cfg.writers = 2;
    create("m", &cfg);
    ck_assert_int_eq(store_txn_begin(s, "m", 1, 1, 1, 0, &id, &err), 0);
    p = slice_of(w, 2, 2);
    p.len = 4; /* first of two chunks */
    ck_assert_int_eq(store_txn_push(s, id, NULL, 0, 0, 0, &p, 1, 0, &staged, &err), 0);
    ck_assert_int_eq(store_txn_commit(s, id, 0, &res, &err), EMAD_EINCOMPLETE);
    p.offset = 4;
    p.data = &a[3];
    ck_assert_int_eq(store_txn_push(s, id, NULL, 0, 0, 0, &p, 1, 0, &staged, &err), 0);
    ck_assert_int_eq(store_txn_commit(s, id, 0, &res, &err), 0);
    ck_assert_int_eq(res.pending, 1);
    p = slice_of(w, 0, 2);
    ck_assert_int_eq(push("m", 1, 0, &p, 1), 0);
    ck_assert_uint_eq(res.applied, 1);
    for (int i = 0; i < 4; i++)
        ck_assert_float_eq(sh("m", "w", 0, (size_t)i), a[i]);
    /* A transaction for a writer the model does not have. */
    ck_assert_int_eq(store_txn_begin(s, "m", 1, 2, 5, 0, &id, &err), EMAD_ERANGE);
}
END_TEST

START_TEST(test_configure_live_and_immutable)
{
    double d[2] = {0.5, 0.25};
    emad_model_config cfg = config(2, d), next;
    float v0 = 0.0f, v4 = 4.0f;
    store_input in = input("w", EMAD_PARAM, EMAD_F32, &v0, 1);

    create("m", &cfg);
    ck_assert_int_eq(push("m", 1, 0, &in, 1), 0);
    next = cfg;
    next.decays[0] = 0.75;
    next.schedule = EMAD_SCHEDULE_NUM_UPDATES;
    next.schedule = EMAD_SCHEDULE_CONSTANT;
    ck_assert_int_eq(store_configure(s, "m", 1, &next, &err), 0);
    in.data = &v4;
    ck_assert_int_eq(push("m", 2, 0, &in, 1), 0);
    ck_assert_float_eq(sh("m", "w", 0, 0), 1.0f); /* 0 - 0.25 * (0 - 4) with the new 0.75 */
    ck_assert_float_eq(sh("m", "w", 1, 0), 3.0f); /* 0 - 0.75 * (0 - 4) */
    next.ndecays = 1;
    ck_assert_int_eq(store_configure(s, "m", 1, &next, &err), EMAD_EIMMUTABLE);
    ck_assert_ptr_nonnull(strstr(err.message, "number of decays"));
    next = cfg;
    next.writers = 2;
    ck_assert_int_eq(store_configure(s, "m", 1, &next, &err), EMAD_EIMMUTABLE);
    next = cfg;
    next.buffers = EMAD_BUFFERS_AVERAGE;
    ck_assert_int_eq(store_configure(s, "m", 1, &next, &err), EMAD_EIMMUTABLE);
    next = cfg;
    next.power = -1.0;
    ck_assert_int_eq(store_configure(s, "m", 1, &next, &err), EMAD_ERANGE);
    ck_assert_int_eq(store_configure(s, "zz", 2, &cfg, &err), EMAD_ENOMODEL);
    /* create with exist_ok compares the whole configuration. */
    int created;
    ck_assert_int_eq(store_create_model(s, "m", 1, &cfg, 1, &created, &err), EMAD_EEXIST);
    ck_assert_ptr_nonnull(strstr(err.message, "decays"));
}
END_TEST

START_TEST(test_update_after_step_and_compensate_in_store)
{
    double d = 0.5;
    emad_model_config cfg = config(1, &d), gap = config(1, &d);
    float v[4] = {0.0f, 8.0f, 2.0f, 6.0f};
    store_input in = input("w", EMAD_PARAM, EMAD_F32, &v[0], 1);

    cfg.update_after_step = 2;
    gap.step_gap = EMAD_STEP_GAP_COMPENSATE;
    create("uas", &cfg);
    create("gap", &gap);
    for (int t = 1; t <= 3; t++) {
        in.data = &v[t];
        ck_assert_int_eq(push("uas", (uint64_t)t, 0, &in, 1), 0);
    }
    /* Steps 1 and 2 copy (8, then 2); step 3 averages: 2 - 0.5 * (2 - 6) = 4. */
    ck_assert_float_eq(sh("uas", "w", 0, 0), 4.0f);
    in.data = &v[0];
    ck_assert_int_eq(push("gap", 1, 0, &in, 1), 0);
    in.data = &v[1];
    ck_assert_int_eq(push("gap", 3, 0, &in, 1), 0);
    /* Gap of 2 steps: decay 0.25, c = 0.75: 0 - 0.75 * (0 - 8) = 6. */
    ck_assert_float_eq(sh("gap", "w", 0, 0), 6.0f);
}
END_TEST

START_TEST(test_view_dtype_conversion)
{
    double d = 0.5;
    emad_model_config cfg = config(1, &d);
    float w = 1.00390625f; /* 1 + 2^-8: halfway between BF16 1.0 and 1.0078125 -> even 1.0 */
    int64_t count = 5;
    store_input in[2] = {input("w", EMAD_PARAM, EMAD_F32, &w, 1),
                         input("n", EMAD_BUFFER, EMAD_I64, &count, 1)};
    view_options vo = {0, 0.0, EMAD_BF16};
    store_view *v;

    create("m", &cfg);
    ck_assert_int_eq(push("m", 1, 0, in, 2), 0);
    ck_assert_int_eq(store_view_create(s, "m", 1, NULL, NULL, 0, &vo, &v, &err), 0);
    ck_assert_int_eq(v->tensors[0].dtype, EMAD_BF16);
    ck_assert_int_eq(v->tensors[0].sdtype, EMAD_F32);
    ck_assert_uint_eq(v->tensors[0].nbytes, 2);
    ck_assert_int_eq(v->tensors[1].dtype, EMAD_I64); /* integer tensors are not converted */
    ck_assert_uint_eq(v->tensors[1].nbytes, 8);
    store_view_free(v);
    vo.dtype = EMAD_I32;
    ck_assert_int_eq(store_view_create(s, "m", 1, NULL, NULL, 0, &vo, &v, &err), EMAD_EDTYPE);
}
END_TEST

static Suite *
emaopts_suite(void)
{
    Suite *su = suite_create("emaopts");
    TCase *tc = tcase_create("core");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_schedule_constant_and_update_after_step);
    tcase_add_test(tc, test_schedule_num_updates);
    tcase_add_test(tc, test_schedule_warmup);
    tcase_add_test(tc, test_step_gap_compensate);
    tcase_add_test(tc, test_config_check_and_names);
    tcase_add_test(tc, test_several_decays_and_view_choice);
    tcase_add_test(tc, test_buffers_copy_or_average);
    tcase_add_test(tc, test_copy_and_ignore_patterns);
    tcase_add_test(tc, test_nonfinite_reject_skip_allow);
    tcase_add_test(tc, test_slices_one_writer);
    tcase_add_test(tc, test_writers_make_a_step_visible_together);
    tcase_add_test(tc, test_writer_transaction_moves_into_the_step);
    tcase_add_test(tc, test_configure_live_and_immutable);
    tcase_add_test(tc, test_update_after_step_and_compensate_in_store);
    tcase_add_test(tc, test_view_dtype_conversion);
    suite_add_tcase(su, tc);
    return su;
}

int
main(void)
{
    SRunner *sr = srunner_create(emaopts_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

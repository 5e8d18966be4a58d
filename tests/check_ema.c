/*
 * check_ema.c - tests for src/store/ema.c: the EMA update kernels and shadow
 * initialization. Hand-computed cases pin the order of operations and the
 * float32 rounding after each one; long runs are compared bit for bit with
 * an independent numpy reference (tests/reference.py, which needs Python 3
 * with numpy: without it those tests fail, they do not skip). Also covered:
 * in place versus out of place, unaligned value pointers, n = 0, and the
 * dtypes the kernels refuse.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"
#include "store/ema.h"
#include "testutil.h"

/* Bit pattern of a double. */
static uint64_t
bits_of_d(double d)
{
    uint64_t u;

    memcpy(&u, &d, sizeof(u));
    return u;
}

/* Little-endian u32 at p. */
static uint32_t
load_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Double stored little-endian at p. */
static double
load_f64(const unsigned char *p)
{
    uint64_t u = tu_load_u64le(p);
    double d;

    memcpy(&d, &u, sizeof(d));
    return d;
}

/* Size of one shadow element for values of dtype. */
static size_t
shadow_size(int dtype)
{
    return dtype_size(dtype_shadow(dtype));
}

/* One float32 shadow step with one value, through the dispatcher. */
static float
step_f32(float shadow, float value, double decay)
{
    float out = -12345.0f;

    ck_assert_int_eq(ema_update(&out, &shadow, &value, EMAD_F32, 1, decay), 0);
    return out;
}

START_TEST(test_ema_coef_is_one_minus_decay_in_double_then_rounded_to_float)
{
    ck_assert_uint_eq(tu_f32_bits(ema_coef_f32(0.5)), tu_f32_bits(0.5f));
    ck_assert_uint_eq(tu_f32_bits(ema_coef_f32(0.75)), tu_f32_bits(0.25f));
    ck_assert_uint_eq(tu_f32_bits(ema_coef_f32(1.0)), tu_f32_bits(0.0f));
    ck_assert_uint_eq(tu_f32_bits(ema_coef_f32(0.0)), tu_f32_bits(1.0f));
    /*
     * 0.9 is 0x1.ccccccccccccdp-1, so 1.0 - 0.9 = 0x1.9999999999998p-4
     * (exact, Sterbenz) = 0.09999999999999998. The float32 neighbours are
     * 0x3dcccccc = 0.099999994 and 0x3dcccccd = 0.100000001; the second is
     * nearer, so c is 0x3dcccccd (the same float as 0.1f).
     */
    ck_assert_uint_eq(tu_f32_bits(ema_coef_f32(0.9)), 0x3dcccccdu);
    /*
     * 1.0 - 0.999 = 0x1.0624dd2f1aap-10 = 0.0010000000000000009; rounded to
     * float32 (24 bits: 0x1.0624dep-10) that is 0x3a83126f = 0.0010000000475.
     * Subtracting in float instead, 1.0f - 0.999f = 0x3a830000 = 0.00099998713,
     * which is not what PyTorch computes.
     */
    ck_assert_uint_eq(tu_f32_bits(ema_coef_f32(0.999)), 0x3a83126fu);
}
END_TEST

START_TEST(test_ema_decay_half_moves_one_halfway_to_three)
{
    /* c = 0.5: diff = 1 - 3 = -2, t = 0.5 * -2 = -1, shadow = 1 - (-1) = 2; all exact. */
    float s32 = 1.0f, out32 = 0.0f, v32 = 3.0f;
    double s64 = 1.0, out64 = 0.0, v64 = 3.0;
    uint16_t v16 = 0x4200, vb16 = 0x4040; /* 3.0 in binary16 and in bfloat16 */

    ck_assert_uint_eq(tu_f32_bits(step_f32(1.0f, 3.0f, 0.5)), tu_f32_bits(2.0f));
    ck_assert_int_eq(ema_update(&out32, &s32, &v32, EMAD_F32, 1, 0.5), 0);
    ck_assert_uint_eq(tu_f32_bits(out32), tu_f32_bits(2.0f));
    ck_assert_uint_eq(tu_f32_bits(s32), tu_f32_bits(1.0f)); /* out of place: shadow untouched */
    ck_assert_int_eq(ema_update(&out32, &s32, &v16, EMAD_F16, 1, 0.5), 0);
    ck_assert_uint_eq(tu_f32_bits(out32), tu_f32_bits(2.0f));
    ck_assert_int_eq(ema_update(&out32, &s32, &vb16, EMAD_BF16, 1, 0.5), 0);
    ck_assert_uint_eq(tu_f32_bits(out32), tu_f32_bits(2.0f));
    ck_assert_int_eq(ema_update(&out64, &s64, &v64, EMAD_F64, 1, 0.5), 0);
    ck_assert_uint_eq(bits_of_d(out64), bits_of_d(2.0));
    ck_assert_int_eq(ema_update(&s32, &s32, &v32, EMAD_F32, 1, 0.5), 0); /* in place */
    ck_assert_uint_eq(tu_f32_bits(s32), tu_f32_bits(2.0f));
}
END_TEST

START_TEST(test_ema_decay_0_9_f32_hand_computed_with_rounding_after_each_op)
{
    float s;

    /*
     * c = 0x3dcccccd = 13421773 * 2^-27 (see the coefficient test).
     *
     * Shadow 1, value 0: diff = 1, t = c, shadow = 1 - c = 120795955 * 2^-27
     * exactly. In [0.5, 1) floats are multiples of 2^-24 = 8 * 2^-27, and
     * 120795955 / 8 = 15099494.375 rounds to 15099494 = 0xe66666, i.e.
     * 0x3f666666 = 0.899999976 (the float 0.9f).
     */
    ck_assert_uint_eq(tu_f32_bits(step_f32(1.0f, 0.0f, 0.9)), 0x3f666666u);
    /*
     * Shadow 2, value 1: 2 - c = 255013683 * 2^-27; in [1, 2) the spacing is
     * 16 * 2^-27, 255013683 / 16 = 15938355.1875 rounds to 15938355 =
     * 0xf33333: 0x3ff33333 = 1.89999998.
     */
    ck_assert_uint_eq(tu_f32_bits(step_f32(2.0f, 1.0f, 0.9)), 0x3ff33333u);
    /*
     * Two steps from shadow 0 toward value 1.
     * Step 1: diff = -1, t = -c, shadow = 0 + c = 0x3dcccccd exactly.
     */
    s = step_f32(0.0f, 1.0f, 0.9);
    ck_assert_uint_eq(tu_f32_bits(s), 0x3dcccccdu);
    /*
     * Step 2: diff = c - 1 = -120795955 * 2^-27, rounded as above to
     * -15099494 * 2^-24. t = c * diff = -(13421773 * 15099494) * 2^-51 =
     * -202661980882862 * 2^-51; that integer is in [2^47, 2^48), so floats
     * there are multiples of 2^24 and 202661980882862 / 2^24 = 12079595.38
     * rounds to 12079595: t = -12079595 * 2^-27. shadow = c - t =
     * (13421773 + 12079595) * 2^-27 = 25501368 * 2^-27 = 3187671 * 2^-24,
     * exact in float32: 0x3e428f5c = 0.189999998.
     */
    s = step_f32(s, 1.0f, 0.9);
    ck_assert_uint_eq(tu_f32_bits(s), 0x3e428f5cu);
}
END_TEST

START_TEST(test_ema_decay_0_9_f64_hand_computed)
{
    /*
     * c = 1.0 - 0.9 is exact in double (Sterbenz: 0.9 is within a factor 2
     * of 1), so with shadow 1 and value 0, shadow = 1 - c*1 = 1 - (1 - 0.9)
     * = 0.9 exactly (again Sterbenz). With shadow 0 and value 1 the result
     * is c itself: 0x1.9999999999998p-4, two ulps below the double 0.1.
     */
    double s = 1.0, v = 0.0, out;

    ck_assert_int_eq(ema_update(&out, &s, &v, EMAD_F64, 1, 0.9), 0);
    ck_assert_uint_eq(bits_of_d(out), bits_of_d(0.9));
    s = 0.0;
    v = 1.0;
    ck_assert_int_eq(ema_update(&out, &s, &v, EMAD_F64, 1, 0.9), 0);
    ck_assert_uint_eq(bits_of_d(out), bits_of_d(0x1.9999999999998p-4));
    ck_assert_uint_ne(bits_of_d(out), bits_of_d(0.1));
}
END_TEST

START_TEST(test_ema_decay_zero_is_not_an_exact_copy_and_decay_one_keeps_the_shadow)
{
    /*
     * decay 0 gives c = 1 and shadow - (shadow - value), which is the value
     * only if shadow - value is exact: with shadow 1 and value 1e-30,
     * diff rounds to 1 and the result is 0, as in PyTorch.
     */
    ck_assert_uint_eq(tu_f32_bits(step_f32(1.0f, 1e-30f, 0.0)), tu_f32_bits(0.0f));
    ck_assert_uint_eq(tu_f32_bits(step_f32(1.0f, 0.375f, 0.0)), tu_f32_bits(0.375f));
    /* decay 1: c = 0, t = 0, the shadow stays (finite values). */
    ck_assert_uint_eq(tu_f32_bits(step_f32(1.5f, -7.0f, 1.0)), tu_f32_bits(1.5f));
    /* ... except the sign of a zero: t = 0 * -3 = -0 and (-0) - (-0) = +0. */
    ck_assert_uint_eq(tu_f32_bits(step_f32(-0.0f, 3.0f, 1.0)), tu_f32_bits(0.0f));
}
END_TEST

START_TEST(test_ema_f16_and_bf16_values_are_widened_exactly)
{
    float s[4] = {0.0f, 0.0f, 1.0f, -1.0f}, out[4];
    /* binary16: smallest subnormal 2^-24, largest finite 65504, 0x3555 = 0.333251953125, -0 */
    uint16_t h[4] = {0x0001, 0x7bff, 0x3555, 0x8000};
    /* bfloat16: 2^-133 (a float32 subnormal), 1 + 2^-7, 0.5, the largest finite 0x7f7f */
    uint16_t b[4] = {0x0001, 0x3f81, 0x3f00, 0x7f7f};

    /* c = 1 (decay 0) and shadow 0: the result is the widened value itself. */
    ck_assert_int_eq(ema_update(out, s, h, EMAD_F16, 2, 0.0), 0);
    ck_assert_uint_eq(tu_f32_bits(out[0]), tu_f32_bits(0x1p-24f));
    ck_assert_uint_eq(tu_f32_bits(out[1]), tu_f32_bits(65504.0f));
    ck_assert_int_eq(ema_update(out, s, b, EMAD_BF16, 2, 0.0), 0);
    ck_assert_uint_eq(tu_f32_bits(out[0]), 0x00010000u);
    ck_assert_uint_eq(tu_f32_bits(out[1]), tu_f32_bits(1.0078125f));
    /*
     * Decay 0.5 from shadow 1 toward 0.333251953125 (exact with 11 bits):
     * diff = 0.666748046875, t = 0.3333740234375, shadow = 0.6666259765625,
     * all exact in float32. From shadow -1 toward -0: diff = -1, t = -0.5,
     * shadow = -0.5.
     */
    ck_assert_int_eq(ema_update(out + 2, s + 2, h + 2, EMAD_F16, 2, 0.5), 0);
    ck_assert_uint_eq(tu_f32_bits(out[2]), tu_f32_bits(0.6666259765625f));
    ck_assert_uint_eq(tu_f32_bits(out[3]), tu_f32_bits(-0.5f));
    /*
     * bfloat16 0.5 from shadow 1: 0.75. 0x7f7f = 0x1.fep127 from shadow -1:
     * diff = -1 - 0x1.fep127 rounds to -0x1.fep127, t = -0x1.fep126, and
     * -1 - t rounds to 0x1.fep126.
     */
    ck_assert_int_eq(ema_update(out + 2, s + 2, b + 2, EMAD_BF16, 2, 0.5), 0);
    ck_assert_uint_eq(tu_f32_bits(out[2]), tu_f32_bits(0.75f));
    ck_assert_uint_eq(tu_f32_bits(out[3]), tu_f32_bits(0x1.fep126f));
}
END_TEST

START_TEST(test_ema_nan_value_poisons_only_its_own_element)
{
    float s[3] = {1.0f, 1.0f, 1.0f}, v[3] = {3.0f, NAN, 3.0f};

    ck_assert_int_eq(ema_update(s, s, v, EMAD_F32, 3, 0.5), 0);
    ck_assert_uint_eq(tu_f32_bits(s[0]), tu_f32_bits(2.0f));
    ck_assert(isnan(s[1]));
    ck_assert_uint_eq(tu_f32_bits(s[2]), tu_f32_bits(2.0f));
}
END_TEST

/* Fill n value elements of dtype at p with random finite values in [-1, 1). */
static void
random_values(void *p, int dtype, size_t n, uint64_t *state)
{
    unsigned char *out = p;

    for (size_t i = 0; i < n; i++) {
        float f = tu_randf(state);
        double d = (double)f * 3.0 + (double)tu_randf(state) * 1e-9;
        uint16_t h;

        switch (dtype) {
        case EMAD_F32:
            memcpy(out + 4 * i, &f, 4);
            break;
        case EMAD_F16:
            h = dtype_f32_to_f16(f);
            memcpy(out + 2 * i, &h, 2);
            break;
        case EMAD_BF16:
            h = dtype_f32_to_bf16(f);
            memcpy(out + 2 * i, &h, 2);
            break;
        default:
            memcpy(out + 8 * i, &d, 8);
        }
    }
}

/* Random shadow of n elements for values of dtype (float32, or float64 for F64). */
static void
random_shadow(void *p, int dtype, size_t n, uint64_t *state)
{
    random_values(p, dtype == EMAD_F64 ? EMAD_F64 : EMAD_F32, n, state);
}

static const int float_dtypes[] = {EMAD_F32, EMAD_F16, EMAD_BF16, EMAD_F64};

START_TEST(test_ema_in_place_and_out_of_place_give_the_same_bits)
{
    enum { N = 2500 }; /* more than two of ema.c's widening blocks */

    for (size_t k = 0; k < sizeof(float_dtypes) / sizeof(float_dtypes[0]); k++) {
        int dt = float_dtypes[k];
        size_t ss = shadow_size(dt);
        unsigned char *shadow = malloc(N * ss), *orig = malloc(N * ss), *inplace = malloc(N * ss);
        unsigned char *outp = malloc(N * ss), *value = malloc(N * 8);
        uint64_t state = 777 + k;

        random_shadow(shadow, dt, N, &state);
        random_values(value, dt, N, &state);
        memcpy(orig, shadow, N * ss);
        memcpy(inplace, shadow, N * ss);
        ck_assert_int_eq(ema_update(inplace, inplace, value, dt, N, 0.7), 0);
        ck_assert_int_eq(ema_update(outp, shadow, value, dt, N, 0.7), 0);
        ck_assert_mem_eq(inplace, outp, N * ss);
        ck_assert_mem_eq(shadow, orig, N * ss); /* out of place leaves the shadow alone */
        ck_assert(memcmp(outp, orig, N * ss) != 0);
        /* Element by element against the formula written out here. */
        for (size_t i = 0; i < N; i++) {
            if (dt == EMAD_F64) {
                double s, v, d, c = 1.0 - 0.7;

                memcpy(&s, orig + 8 * i, 8);
                memcpy(&v, value + 8 * i, 8);
                memcpy(&d, outp + 8 * i, 8);
                double diff = s - v;
                double t = c * diff;
                ck_assert_uint_eq(bits_of_d(d), bits_of_d(s - t));
            } else {
                float s, v, d, c = (float)(1.0 - 0.7);
                uint16_t h;

                memcpy(&s, orig + 4 * i, 4);
                memcpy(&d, outp + 4 * i, 4);
                if (dt == EMAD_F32) {
                    memcpy(&v, value + 4 * i, 4);
                } else {
                    memcpy(&h, value + 2 * i, 2);
                    v = dt == EMAD_F16 ? dtype_f16_to_f32(h) : dtype_bf16_to_f32(h);
                }
                float diff = s - v;
                float t = c * diff;
                ck_assert_uint_eq(tu_f32_bits(d), tu_f32_bits(s - t));
            }
        }
        free(shadow);
        free(orig);
        free(inplace);
        free(outp);
        free(value);
    }
}
END_TEST

START_TEST(test_ema_accepts_value_pointers_at_any_alignment)
{
    enum { N = 2111 };

    for (size_t k = 0; k < sizeof(float_dtypes) / sizeof(float_dtypes[0]); k++) {
        int dt = float_dtypes[k];
        size_t ss = shadow_size(dt), vs = dtype_size(dt);
        unsigned char *shadow = malloc(N * ss), *want = malloc(N * ss), *got = malloc(N * ss);
        unsigned char *init = malloc(N * ss), *value = malloc(N * vs), *raw = malloc(N * vs + 8);
        uint64_t state = 4242 + k;

        random_shadow(shadow, dt, N, &state);
        random_values(value, dt, N, &state);
        ck_assert_int_eq(ema_update(want, shadow, value, dt, N, 0.99), 0);
        ck_assert_int_eq(ema_init(init, value, dt, N), 0);
        for (size_t off = 1; off < 8; off++) {
            memcpy(raw + off, value, N * vs);
            memset(got, 0, N * ss);
            ck_assert_int_eq(ema_update(got, shadow, raw + off, dt, N, 0.99), 0);
            ck_assert_msg(memcmp(got, want, N * ss) == 0, "dtype %s, value offset %zu",
                          dtype_name(dt), off);
            memcpy(got, shadow, N * ss);
            ck_assert_int_eq(ema_update(got, got, raw + off, dt, N, 0.99), 0);
            ck_assert_msg(memcmp(got, want, N * ss) == 0, "in place, dtype %s, offset %zu",
                          dtype_name(dt), off);
            ck_assert_int_eq(ema_init(got, raw + off, dt, N), 0);
            ck_assert_msg(memcmp(got, init, N * ss) == 0, "init, dtype %s, offset %zu",
                          dtype_name(dt), off);
        }
        free(init);
        free(shadow);
        free(want);
        free(got);
        free(value);
        free(raw);
    }
}
END_TEST

START_TEST(test_ema_zero_elements_write_nothing)
{
    unsigned char dst[64], canary[64], shadow[64] = {0}, value[64] = {0};

    memset(canary, 0xa5, sizeof(canary));
    for (size_t k = 0; k < sizeof(float_dtypes) / sizeof(float_dtypes[0]); k++) {
        memcpy(dst, canary, sizeof(dst));
        ck_assert_int_eq(ema_update(dst, shadow, value, float_dtypes[k], 0, 0.5), 0);
        ck_assert_int_eq(ema_init(dst, value, float_dtypes[k], 0), 0);
        ck_assert_mem_eq(dst, canary, sizeof(dst));
    }
}
END_TEST

START_TEST(test_ema_init_converts_values_to_the_shadow_dtype)
{
    uint16_t h[3] = {0x3c00, 0x0001, 0xc000};             /* binary16 1, 2^-24, -2 */
    uint16_t b[3] = {0x3f80, 0x4049, 0xff80};             /* bfloat16 1, 3.140625, -inf */
    uint32_t f[3] = {0x3f800000, 0x7fa00001, 0x80000001}; /* 1, a signaling NaN, -tiny */
    double d[2] = {0.1, -1e300}, d_out[2];
    float out[3];

    ck_assert_int_eq(ema_init(out, h, EMAD_F16, 3), 0);
    ck_assert_uint_eq(tu_f32_bits(out[0]), tu_f32_bits(1.0f));
    ck_assert_uint_eq(tu_f32_bits(out[1]), tu_f32_bits(0x1p-24f));
    ck_assert_uint_eq(tu_f32_bits(out[2]), tu_f32_bits(-2.0f));
    ck_assert_int_eq(ema_init(out, b, EMAD_BF16, 3), 0);
    ck_assert_uint_eq(tu_f32_bits(out[0]), tu_f32_bits(1.0f));
    ck_assert_uint_eq(tu_f32_bits(out[1]), tu_f32_bits(3.140625f));
    ck_assert_uint_eq(tu_f32_bits(out[2]), 0xff800000u);
    /* F32 is a bit copy, NaN payloads included. */
    ck_assert_int_eq(ema_init(out, f, EMAD_F32, 3), 0);
    ck_assert_mem_eq(out, f, sizeof(f));
    ck_assert_int_eq(ema_init(d_out, d, EMAD_F64, 2), 0);
    ck_assert_mem_eq(d_out, d, sizeof(d));
}
END_TEST

START_TEST(test_ema_rejects_non_float_dtypes_and_writes_nothing)
{
    static const int bad[] = {EMAD_DTYPE_INVALID, EMAD_BOOL, EMAD_U8,  EMAD_I8,  EMAD_I16,
                              EMAD_U16,           EMAD_I32,  EMAD_U32, EMAD_I64, EMAD_U64,
                              EMAD_DTYPE_COUNT,   -1,        99};
    unsigned char dst[64], canary[64], shadow[64] = {0}, value[64] = {1};

    memset(canary, 0x3c, sizeof(canary));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memcpy(dst, canary, sizeof(dst));
        ck_assert_int_eq(ema_update(dst, shadow, value, bad[i], 4, 0.5), EMAD_EDTYPE);
        ck_assert_int_eq(ema_init(dst, value, bad[i], 4), EMAD_EDTYPE);
        ck_assert_mem_eq(dst, canary, sizeof(dst));
    }
}
END_TEST

/*
 * Run tests/reference.py ema for (seed, n, steps, decay, dtype), replay the
 * same steps with ema_update() -- alternating in place and out of place,
 * with the value pointer at an odd address -- and require the final shadow
 * to equal numpy's bit for bit. Fails the test if numpy is unavailable.
 */
static void
check_against_numpy(unsigned seed, size_t n, size_t steps, double decay, int dtype)
{
    char *dir = tu_tmpdir();
    char cmd[2048], path[1024], *out = NULL;
    unsigned char *buf, *a, *b, *cur, *next, *vbuf;
    const unsigned char *shadow0, *values, *expected;
    size_t len, ss = shadow_size(dtype), vs = dtype_size(dtype), mismatches = 0;
    int status;

    snprintf(path, sizeof(path), "%s/ema.bin", dir);
    snprintf(cmd, sizeof(cmd), "'%s' '%s/tests/reference.py' ema %u %zu %zu %.17g %s '%s'",
             tu_python(), tu_srcdir(), seed, n, steps, decay, dtype_name(dtype), path);
    status = tu_run(cmd, &out);
    if (status != 0)
        ck_abort_msg("the numpy reference failed (exit status %d): %s\n%s\n"
                     "This test needs Python 3 with numpy: install python3-numpy, or set "
                     "PYTHON3 to an interpreter that has it.",
                     status, cmd, out != NULL ? out : "");
    free(out);
    buf = tu_read_file(path, &len);
    ck_assert_msg(buf != NULL, "cannot read %s", path);

    /* Header: see tests/reference.py. */
    ck_assert_msg(len >= 48 && memcmp(buf, "EMADEMA1", 8) == 0, "bad reference file");
    ck_assert_uint_eq(tu_load_u64le(buf + 8), n);
    ck_assert_uint_eq(tu_load_u64le(buf + 16), steps);
    ck_assert_uint_eq(bits_of_d(load_f64(buf + 24)), bits_of_d(decay));
    ck_assert_uint_eq(load_u32(buf + 40), vs);
    ck_assert_uint_eq(load_u32(buf + 44), ss);
    ck_assert_uint_eq(len, 48 + n * ss + steps * n * vs + n * ss);
    if (dtype == EMAD_F64)
        ck_assert_uint_eq(bits_of_d(load_f64(buf + 32)), bits_of_d(1.0 - decay));
    else
        ck_assert_uint_eq(bits_of_d(load_f64(buf + 32)), bits_of_d((double)ema_coef_f32(decay)));
    shadow0 = buf + 48;
    values = shadow0 + n * ss;
    expected = values + steps * n * vs;
    /* The run must actually move the shadow, or equality would prove little. */
    ck_assert(memcmp(shadow0, expected, n * ss) != 0);

    a = malloc(n * ss);
    b = malloc(n * ss);
    vbuf = malloc(n * vs + 8);
    memcpy(a, shadow0, n * ss);
    cur = a;
    next = b;
    for (size_t k = 0; k < steps; k++) {
        const unsigned char *v = values + k * n * vs;

        if (k % 3 == 2) {
            memcpy(vbuf + 1 + k % 7, v, n * vs); /* misaligned copy */
            v = vbuf + 1 + k % 7;
        }
        if (k % 2 == 0) {
            ck_assert_int_eq(ema_update(cur, cur, v, dtype, n, decay), 0);
        } else {
            unsigned char *tmp = cur;

            ck_assert_int_eq(ema_update(next, cur, v, dtype, n, decay), 0);
            cur = next;
            next = tmp;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (memcmp(cur + i * ss, expected + i * ss, ss) != 0) {
            if (mismatches++ < 5) {
                uint64_t got = 0, want = 0;

                memcpy(&got, cur + i * ss, ss);
                memcpy(&want, expected + i * ss, ss);
                fprintf(stderr, "%s decay %.17g element %zu: got 0x%llx, numpy 0x%llx\n",
                        dtype_name(dtype), decay, i, (unsigned long long)got,
                        (unsigned long long)want);
            }
        }
    }
    ck_assert_msg(mismatches == 0, "%s, decay %.17g: %zu of %zu elements differ from numpy",
                  dtype_name(dtype), decay, mismatches, n);

    if (dtype == EMAD_F32) {
        /*
         * The comparison has teeth: the same steps with the last two
         * operations fused (fmaf(-c, diff, s), what FMA contraction would
         * produce), or as the algebraically equal decay * s + c * v, must
         * not match numpy everywhere.
         */
        float c = ema_coef_f32(decay), d = (float)decay;
        size_t differ_fma = 0, differ_lerp = 0;

        memcpy(a, shadow0, n * ss);
        memcpy(b, shadow0, n * ss);
        for (size_t k = 0; k < steps; k++) {
            for (size_t i = 0; i < n; i++) {
                float s, v;

                memcpy(&v, values + (k * n + i) * 4, 4);
                memcpy(&s, a + 4 * i, 4);
                s = fmaf(-c, s - v, s);
                memcpy(a + 4 * i, &s, 4);
                memcpy(&s, b + 4 * i, 4);
                s = d * s + c * v;
                memcpy(b + 4 * i, &s, 4);
            }
        }
        for (size_t i = 0; i < n; i++) {
            differ_fma += memcmp(a + 4 * i, expected + 4 * i, 4) != 0;
            differ_lerp += memcmp(b + 4 * i, expected + 4 * i, 4) != 0;
        }
        ck_assert_uint_gt(differ_fma, 0);
        ck_assert_uint_gt(differ_lerp, 0);
    }
    free(a);
    free(b);
    free(vbuf);
    free(buf);
    tu_rmtree(dir);
    free(dir);
}

/* Every instruction set gives the bits of the portable kernel: odd lengths, unaligned, specials. */
START_TEST(test_ema_every_isa_gives_the_same_bits)
{
    enum { N = 4099 };
    static const char *const isas[] = {"sse2", "avx2", "avx512"};
    static const int dtypes[] = {EMAD_F32, EMAD_BF16, EMAD_F16, EMAD_F64};
    unsigned char *val = malloc(8 * N + 1), *sh = malloc(8 * N), *ref = malloc(8 * N),
                  *out = malloc(8 * N);
    const char *before = ema_isa();
    uint64_t rng = 20261124;

    for (size_t i = 0; i < 8 * N + 1; i++)
        val[i] = (unsigned char)tu_rand(&rng); /* includes NaN, Inf and subnormal bit patterns */
    for (size_t d = 0; d < sizeof(dtypes) / sizeof(dtypes[0]); d++) {
        int dt = dtypes[d];
        size_t ssz = dt == EMAD_F64 ? 8 : 4;

        /* Shadows: finite values from random values, plus specials at fixed places. */
        for (size_t i = 0; i < N; i++) {
            if (ssz == 4) {
                float f = (float)((int)(tu_rand(&rng) % 20001) - 10000) / 77.0f;
                memcpy(sh + 4 * i, &f, 4);
            } else {
                double f = (double)((int)(tu_rand(&rng) % 20001) - 10000) / 77.0;
                memcpy(sh + 8 * i, &f, 8);
            }
        }
        for (size_t k = 0; k < sizeof(isas) / sizeof(isas[0]); k++) {
            ema_set_isa(isas[k]);
            /* value at an odd address: unaligned for every dtype */
            ck_assert_int_eq(ema_update(out, sh, val + 1, dt, N, 0.999), 0);
            if (k == 0)
                memcpy(ref, out, ssz * N);
            else
                ck_assert_msg(memcmp(ref, out, ssz * N) == 0, "%s differs from sse2 for dtype %d",
                              ema_isa(), dt);
            /* In place: the same bits again. */
            memcpy(out, sh, ssz * N);
            ck_assert_int_eq(ema_update(out, out, val + 1, dt, N, 0.999), 0);
            ck_assert_msg(memcmp(ref, out, ssz * N) == 0, "%s in place differs for dtype %d",
                          ema_isa(), dt);
        }
    }
    ema_set_isa(before);
    free(val);
    free(sh);
    free(ref);
    free(out);
}
END_TEST

/*
 * The count of NaN/Inf values: every instruction set against an independent
 * per-element check (exponent field all ones, written out per dtype), on
 * random bit patterns (about one in 256 F32 values and one in 32 F16 values
 * are non-finite) at every alignment and odd lengths, and on hand-placed
 * values at the edges of the vector loops. The update that counts while it
 * averages (ema_update_counted) gives the same count and the same bits as
 * ema_update.
 */
static uint64_t
count_ref(const unsigned char *v, int dt, size_t n)
{
    uint64_t bad = 0;

    for (size_t i = 0; i < n; i++) {
        const unsigned char *e = v + i * dtype_size(dt);
        switch (dt) {
        case EMAD_F32: /* little-endian: exponent in bits 23..30 */
            bad += ((e[3] & 0x7f) == 0x7f) && (e[2] & 0x80);
            break;
        case EMAD_F64: /* bits 52..62 */
            bad += ((e[7] & 0x7f) == 0x7f) && ((e[6] & 0xf0) == 0xf0);
            break;
        case EMAD_F16: /* bits 10..14 */
            bad += (e[1] & 0x7c) == 0x7c;
            break;
        case EMAD_BF16: /* the top half of a float32 */
            bad += ((e[1] & 0x7f) == 0x7f) && (e[0] & 0x80);
            break;
        }
    }
    return bad;
}

START_TEST(test_ema_count_nonfinite_every_isa)
{
    enum { N = 1031 };
    static const char *const isas[] = {"sse2", "avx2", "avx512"};
    static const int dtypes[] = {EMAD_F32, EMAD_BF16, EMAD_F16, EMAD_F64};
    unsigned char *val = malloc(8 * N + 8);
    double *shadow = malloc(N * sizeof(double)), *plain = malloc(N * sizeof(double));
    double *fused = malloc(N * sizeof(double));
    const char *before = ema_isa();
    uint64_t rng = 7, got;

    ck_assert(val != NULL && shadow != NULL && plain != NULL && fused != NULL);
    for (size_t i = 0; i < N; i++)
        shadow[i] = (double)tu_randf(&rng);
    for (size_t i = 0; i < 8 * N + 8; i++)
        val[i] = (unsigned char)tu_rand(&rng);
    for (size_t at = 100; at + 16 < 8 * N; at += 1500)
        memset(val + at, 0xff, 16); /* NaN whatever the dtype and alignment */
    for (size_t d = 0; d < sizeof(dtypes) / sizeof(dtypes[0]); d++) {
        int dt = dtypes[d];
        for (size_t k = 0; k < sizeof(isas) / sizeof(isas[0]); k++) {
            ema_set_isa(isas[k]);
            for (size_t align = 0; align < 8; align++) {
                for (size_t n = 0; n <= N; n += n < 70 ? 1 : 97) {
                    uint64_t want = count_ref(val + align, dt, n);
                    ck_assert_msg(ema_count_nonfinite(val + align, dt, n) == want,
                                  "%s dtype %d n %zu align %zu: expected %llu", ema_isa(), dt, n,
                                  align, (unsigned long long)want);
                    if (dt == EMAD_F64)
                        memcpy(plain, shadow, n * sizeof(double));
                    else
                        for (size_t i = 0; i < n; i++)
                            ((float *)plain)[i] = (float)shadow[i];
                    memset(fused, 0xa5, N * sizeof(double));
                    ck_assert_int_eq(
                        ema_update_counted(fused, plain, val + align, dt, n, 0.9, &got), 0);
                    ck_assert_msg(
                        got == want, "%s dtype %d n %zu align %zu: fused count %llu, expected %llu",
                        ema_isa(), dt, n, align, (unsigned long long)got, (unsigned long long)want);
                    ck_assert_int_eq(ema_update(plain, plain, val + align, dt, n, 0.9), 0);
                    ck_assert_msg(memcmp(fused, plain, n * dtype_size(dtype_shadow(dt))) == 0,
                                  "%s dtype %d n %zu align %zu: fused update differs", ema_isa(),
                                  dt, n, align);
                }
            }
        }
        ck_assert_uint_gt(count_ref(val, dt, N), 0); /* the data does hold some */
    }
    {
        /* Hand-placed: NaN, +Inf, -Inf at the first, a vector-boundary and the last element
         * of 37 finite F32 values; the largest finite value is not counted. */
        float f[37];
        for (size_t i = 0; i < 37; i++)
            f[i] = 3.4028235e38f;
        f[0] = NAN;
        f[16] = INFINITY;
        f[36] = -INFINITY;
        for (size_t k = 0; k < sizeof(isas) / sizeof(isas[0]); k++) {
            ema_set_isa(isas[k]);
            ck_assert_uint_eq(ema_count_nonfinite(f, EMAD_F32, 37), 3);
            ck_assert_uint_eq(ema_count_nonfinite(f + 1, EMAD_F32, 35), 1);
            ck_assert_uint_eq(ema_count_nonfinite(f, EMAD_I32, 37), 0);
            ck_assert_int_eq(ema_update_counted(f, f, f, EMAD_I32, 37, 0.5, &got), EMAD_EDTYPE);
            ck_assert_uint_eq(got, 0);
        }
    }
    ema_set_isa(before);
    free(shadow);
    free(plain);
    free(fused);
    free(val);
}
END_TEST

/* Number of the n bytes at p that differ from byte (one assertion per buffer, not per byte). */
static size_t
bytes_other_than(const unsigned char *p, size_t n, unsigned char byte)
{
    size_t k = 0;

    for (size_t i = 0; i < n; i++)
        k += p[i] != byte;
    return k;
}

/*
 * Elements of the streamed-update tests: the fewest that make a float32
 * destination stream (STREAM_MIN_BYTES, 64 KiB, in ema.c), plus an odd
 * tail that the plain kernel finishes.
 */
#define STREAM_N ((64u << 10) / 4 + 27)

/* aligned_alloc() with size rounded up to a multiple of align, as C11 requires. */
static void *
alloc_aligned(size_t align, size_t size)
{
    return aligned_alloc(align, (size + align - 1) / align * align);
}

/* n shadow values of ssz bytes (float32 or float64), multiples of 1/77 in [-130, 130]. */
static void
fill_shadow(unsigned char *sh, size_t ssz, size_t n, uint64_t *rng)
{
    for (size_t i = 0; i < n; i++) {
        double f = (double)((int)(tu_rand(rng) % 20001) - 10000) / 77.0;
        if (ssz == 4) {
            float g = (float)f;
            memcpy(sh + 4 * i, &g, 4);
        } else {
            memcpy(sh + 8 * i, &f, 8);
        }
    }
}

/*
 * An update into a separate buffer of 64 KiB or more streams its stores
 * (AVX2, AVX-512): the same bits and the same count of non-finite values
 * as the portable kernel and as the in-place update (which stores
 * plainly), for every dtype, with dst starting at every element offset
 * from a 64-byte boundary (the head before the boundary and the tail take
 * the plain kernel), the old shadow at varying offsets too (its lines are
 * evicted as they are read), values at an odd address, nothing written
 * outside dst's n elements and the old shadow left as it was.
 */
START_TEST(test_ema_streamed_update_into_a_separate_buffer_gives_the_same_bits_and_count)
{
    enum { N = STREAM_N, GUARD = 32 };
    static const char *const isas[] = {"sse2", "avx2", "avx512"};
    static const int dtypes[] = {EMAD_F32, EMAD_BF16, EMAD_F64};
    unsigned char *val = malloc(8 * N + 1), *sh = alloc_aligned(64, 8 * N),
                  *ref = alloc_aligned(64, 8 * N), *inplace = alloc_aligned(64, 8 * N),
                  *out = alloc_aligned(64, 8 * (N + 2 * GUARD)),
                  *shm = alloc_aligned(64, 8 * N + 64);
    const char *before = ema_isa();
    uint64_t rng = 1124, got, want;

    ck_assert(val != NULL && sh != NULL && ref != NULL && inplace != NULL && out != NULL &&
              shm != NULL);
    for (size_t i = 0; i < 8 * N + 1; i++)
        val[i] = (unsigned char)tu_rand(&rng); /* NaN, Inf and subnormal bit patterns too */
    for (size_t d = 0; d < sizeof(dtypes) / sizeof(dtypes[0]); d++) {
        int dt = dtypes[d];
        size_t ssz = dt == EMAD_F64 ? 8 : 4;

        ck_assert_uint_ge(ssz * N, 64 << 10); /* large enough to stream */
        fill_shadow(sh, ssz, N, &rng);
        want = count_ref(val + 1, dt, N);
        ck_assert_uint_gt(want, 0);
        ema_set_isa("sse2");
        ck_assert_int_eq(ema_update_counted(ref, sh, val + 1, dt, N, 0.999, &got), 0);
        ck_assert_uint_eq(got, want);
        for (size_t k = 0; k < sizeof(isas) / sizeof(isas[0]); k++) {
            ema_set_isa(isas[k]);
            memcpy(inplace, sh, ssz * N);
            ck_assert_int_eq(ema_update_counted(inplace, inplace, val + 1, dt, N, 0.999, &got), 0);
            ck_assert_uint_eq(got, want);
            ck_assert_msg(memcmp(inplace, ref, ssz * N) == 0, "%s in place, dtype %d", ema_isa(),
                          dt);
            for (size_t off = 0; off <= 64 / ssz; off++) {
                unsigned char *dst = out + ssz * (GUARD + off);
                unsigned char *old = shm + ssz * ((off * 5) % (64 / ssz));
                memset(out, 0xa5, 8 * (N + 2 * GUARD));
                memcpy(old, sh, ssz * N);
                ck_assert_int_eq(ema_update_counted(dst, old, val + 1, dt, N, 0.999, &got), 0);
                ck_assert_msg(memcmp(old, sh, ssz * N) == 0,
                              "%s dtype %d offset %zu: shadow changed", ema_isa(), dt, off);
                ck_assert_msg(got == want, "%s dtype %d offset %zu: count %llu, expected %llu",
                              ema_isa(), dt, off, (unsigned long long)got,
                              (unsigned long long)want);
                ck_assert_msg(memcmp(dst, ref, ssz * N) == 0, "%s dtype %d offset %zu differs",
                              ema_isa(), dt, off);
                ck_assert_uint_eq(bytes_other_than(out, ssz * (GUARD + off), 0xa5), 0);
                ck_assert_uint_eq(bytes_other_than(dst + ssz * N,
                                                   8 * (N + 2 * GUARD) - ssz * (GUARD + off + N),
                                                   0xa5),
                                  0);
            }
        }
    }
    ema_set_isa(before);
    free(val);
    free(sh);
    free(ref);
    free(inplace);
    free(out);
    free(shm);
}
END_TEST

/*
 * Values a little below dst modulo 4 KiB and not at dst's offset in a
 * 64-byte line make the streaming kernels run backward (a forward loop's
 * loads would wait on its own stores): the same bits and count as the
 * portable kernel, for F32 and F64 values (and BF16, which never runs
 * backward), every ISA, values 4 to 2048 bytes below dst, dst at a
 * 64-byte boundary or a few elements past one, nothing written outside
 * dst's n elements and the old shadow unchanged.
 */
START_TEST(test_ema_streamed_update_with_values_just_below_dst_gives_the_same_bits)
{
    enum { N = STREAM_N, GUARD = 32 };
    static const char *const isas[] = {"sse2", "avx2", "avx512"};
    static const int dtypes[] = {EMAD_F32, EMAD_F64, EMAD_BF16};
    static const size_t below[] = {4, 8, 36, 60, 64, 100, 696, 1020, 1028, 2048};
    unsigned char *vbuf = malloc(8 * N + 8192), *src = malloc(8 * N),
                  *sh = alloc_aligned(64, 8 * N), *old = alloc_aligned(64, 8 * N),
                  *ref = alloc_aligned(64, 8 * N),
                  *out = alloc_aligned(4096, 8 * (N + 2 * GUARD) + 4096);
    const char *before = ema_isa();
    uint64_t rng = 4096, got, want;

    ck_assert(vbuf != NULL && src != NULL && sh != NULL && old != NULL && ref != NULL &&
              out != NULL);
    for (size_t i = 0; i < 8 * N; i++)
        src[i] = (unsigned char)tu_rand(&rng); /* NaN, Inf and subnormal bit patterns too */
    for (size_t d = 0; d < sizeof(dtypes) / sizeof(dtypes[0]); d++) {
        int dt = dtypes[d];
        size_t ssz = dt == EMAD_F64 ? 8 : 4, vsz = dt == EMAD_BF16 ? 2 : ssz;

        fill_shadow(sh, ssz, N, &rng);
        want = count_ref(src, dt, N);
        ck_assert_uint_gt(want, 0);
        ema_set_isa("sse2");
        ck_assert_int_eq(ema_update_counted(ref, sh, src, dt, N, 0.999, &got), 0);
        ck_assert_uint_eq(got, want);
        for (size_t k = 0; k < sizeof(isas) / sizeof(isas[0]); k++) {
            ema_set_isa(isas[k]);
            for (size_t b = 0; b < sizeof(below) / sizeof(below[0]); b++) {
                for (size_t off = 0; off < 4; off += 3) {
                    unsigned char *dst = out + 64 * GUARD / 8 + ssz * off;
                    /* vals: below[b] bytes below dst modulo 4096 */
                    unsigned char *vals =
                        vbuf + (((uintptr_t)dst - below[b] - (uintptr_t)vbuf) & 4095);
                    ck_assert_uint_eq(((uintptr_t)dst - (uintptr_t)vals) & 4095, below[b]);
                    memcpy(vals, src, vsz * N);
                    memcpy(old, sh, ssz * N);
                    memset(out, 0xa5, 8 * (N + 2 * GUARD) + 4096);
                    ck_assert_int_eq(ema_update_counted(dst, old, vals, dt, N, 0.999, &got), 0);
                    ck_assert_msg(got == want, "%s dtype %d below %zu offset %zu: count %llu",
                                  ema_isa(), dt, below[b], off, (unsigned long long)got);
                    ck_assert_msg(memcmp(dst, ref, ssz * N) == 0,
                                  "%s dtype %d below %zu offset %zu differs", ema_isa(), dt,
                                  below[b], off);
                    ck_assert_msg(memcmp(old, sh, ssz * N) == 0, "%s: shadow changed", ema_isa());
                    ck_assert_uint_eq(bytes_other_than(out, (size_t)(dst - out), 0xa5), 0);
                    ck_assert_uint_eq(
                        bytes_other_than(dst + ssz * N,
                                         (size_t)(out + 8 * (N + 2 * GUARD) + 4096 - dst) - ssz * N,
                                         0xa5),
                        0);
                }
            }
        }
    }
    ema_set_isa(before);
    free(vbuf);
    free(src);
    free(sh);
    free(old);
    free(ref);
    free(out);
}
END_TEST

START_TEST(test_ema_f32_matches_numpy_reference_over_1000_steps)
{
    check_against_numpy(1, 1031, 1000, 0.999, EMAD_F32);
    check_against_numpy(2, 1031, 1000, 0.9, EMAD_F32);
    check_against_numpy(3, 517, 1000, 0.123456789, EMAD_F32);
}
END_TEST

START_TEST(test_ema_f16_values_match_numpy_reference_over_1000_steps)
{
    check_against_numpy(4, 1031, 1000, 0.999, EMAD_F16);
    check_against_numpy(5, 2053, 300, 0.75, EMAD_F16);
}
END_TEST

START_TEST(test_ema_bf16_values_match_numpy_reference_over_1000_steps)
{
    check_against_numpy(6, 1031, 1000, 0.999, EMAD_BF16);
    check_against_numpy(7, 2053, 300, 0.6, EMAD_BF16);
}
END_TEST

START_TEST(test_ema_f64_matches_numpy_reference_over_1000_steps)
{
    check_against_numpy(8, 1031, 1000, 0.999, EMAD_F64);
    check_against_numpy(9, 517, 1000, 0.9, EMAD_F64);
}
END_TEST

/* The ema suite: hand-computed cases, then the numpy comparisons. */
static Suite *
ema_suite(void)
{
    Suite *s = suite_create("ema");
    TCase *tc = tcase_create("kernels");
    TCase *ref = tcase_create("numpy");

    tcase_add_test(tc, test_ema_coef_is_one_minus_decay_in_double_then_rounded_to_float);
    tcase_add_test(tc, test_ema_decay_half_moves_one_halfway_to_three);
    tcase_add_test(tc, test_ema_decay_0_9_f32_hand_computed_with_rounding_after_each_op);
    tcase_add_test(tc, test_ema_decay_0_9_f64_hand_computed);
    tcase_add_test(tc, test_ema_decay_zero_is_not_an_exact_copy_and_decay_one_keeps_the_shadow);
    tcase_add_test(tc, test_ema_f16_and_bf16_values_are_widened_exactly);
    tcase_add_test(tc, test_ema_nan_value_poisons_only_its_own_element);
    tcase_add_test(tc, test_ema_in_place_and_out_of_place_give_the_same_bits);
    tcase_add_test(tc, test_ema_accepts_value_pointers_at_any_alignment);
    tcase_add_test(tc, test_ema_zero_elements_write_nothing);
    tcase_add_test(tc, test_ema_init_converts_values_to_the_shadow_dtype);
    tcase_add_test(tc, test_ema_rejects_non_float_dtypes_and_writes_nothing);
    tcase_add_test(tc, test_ema_every_isa_gives_the_same_bits);
    tcase_add_test(tc, test_ema_count_nonfinite_every_isa);
    tcase_add_test(tc,
                   test_ema_streamed_update_into_a_separate_buffer_gives_the_same_bits_and_count);
    tcase_add_test(tc, test_ema_streamed_update_with_values_just_below_dst_gives_the_same_bits);
    tcase_set_timeout(tc, TU_TCASE_TIMEOUT);
    suite_add_tcase(s, tc);

    tcase_add_test(ref, test_ema_f32_matches_numpy_reference_over_1000_steps);
    tcase_add_test(ref, test_ema_f16_values_match_numpy_reference_over_1000_steps);
    tcase_add_test(ref, test_ema_bf16_values_match_numpy_reference_over_1000_steps);
    tcase_add_test(ref, test_ema_f64_matches_numpy_reference_over_1000_steps);
    tcase_set_timeout(ref, TU_TCASE_TIMEOUT);
    suite_add_tcase(s, ref);
    return s;
}

/* Run the ema suite; exit status 0 if every test passed. */
int
main(void)
{
    SRunner *sr = srunner_create(ema_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

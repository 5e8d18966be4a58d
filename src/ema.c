/*
 * ema.c - the EMA update kernels: the scalar reference for every shadow
 * and value dtype.
 *
 * Each kernel makes one pass: dst[i] = s - c * (s - v) with s = shadow[i],
 * evaluated as diff = s - v; t = c * diff; dst[i] = s - t, each operation
 * rounded to the shadow's type (this file is built with -ffp-contract=off,
 * so no FMA). That is bit for bit what PyTorch's
 * shadow.sub_((1. - decay) * (shadow - param)) computes on float32 tensors.
 * The loops are plain so that the compiler can vectorize them: values are
 * loaded with memcpy (any alignment), dst may be shadow itself or a
 * separate buffer, so only the value pointer is restrict. F16 and BF16
 * values are widened in blocks through dtype_convert() (exact) and then go
 * through the float32 kernel, so there is one conversion routine and one
 * arithmetic routine. The functions touch only their arguments and may
 * run on any thread.
 */
#include <string.h>

#include "dtype.h"
#include "ema.h"

/* Elements of F16/BF16 values widened at a time (a stack buffer of 4 KiB). */
#define WIDEN_BLOCK 1024

/* The float32 coefficient c = (float)(1.0 - decay), with the subtraction done in double. */
float
ema_coef_f32(double decay)
{
    return (float)(1.0 - decay);
}

/* dst[i] = shadow[i] - c * (shadow[i] - value[i]) for n float32 values at any alignment. */
void
ema_update_f32(float *dst, const float *shadow, const void *value, size_t n, float c)
{
    const unsigned char *restrict v = value;

    for (size_t i = 0; i < n; i++) {
        float s = shadow[i];
        float x;

        memcpy(&x, v + i * sizeof(float), sizeof(float));
        float diff = s - x;
        float t = c * diff;
        dst[i] = s - t;
    }
}

/* Float32 update with n values of dtype from (F16 or BF16), widened exactly block by block. */
static void
update_widened(float *dst, const float *shadow, const unsigned char *value, size_t n, float c,
               int from)
{
    float buf[WIDEN_BLOCK];

    for (size_t off = 0; off < n; off += WIDEN_BLOCK) {
        size_t m = n - off < WIDEN_BLOCK ? n - off : WIDEN_BLOCK;

        (void)dtype_convert(buf, EMAD_F32, value + off * 2, from, m);
        ema_update_f32(dst + off, shadow + off, buf, m, c);
    }
}

/* Float32 update with n F16 values at any alignment. */
void
ema_update_f16(float *dst, const float *shadow, const void *value, size_t n, float c)
{
    update_widened(dst, shadow, value, n, c, EMAD_F16);
}

/* Float32 update with n BF16 values at any alignment. */
void
ema_update_bf16(float *dst, const float *shadow, const void *value, size_t n, float c)
{
    update_widened(dst, shadow, value, n, c, EMAD_BF16);
}

/* dst[i] = shadow[i] - c * (shadow[i] - value[i]) in float64 for n values at any alignment. */
void
ema_update_f64(double *dst, const double *shadow, const void *value, size_t n, double c)
{
    const unsigned char *restrict v = value;

    for (size_t i = 0; i < n; i++) {
        double s = shadow[i];
        double x;

        memcpy(&x, v + i * sizeof(double), sizeof(double));
        double diff = s - x;
        double t = c * diff;
        dst[i] = s - t;
    }
}

/*
 * Update n elements of the shadow for values of value_dtype: F32, F16 and
 * BF16 into float32 shadow/dst, F64 into float64. dst is shadow or a
 * buffer not overlapping it. Returns 0, or EMAD_EDTYPE (nothing written).
 */
int
ema_update(void *dst, const void *shadow, const void *value, int value_dtype, size_t n,
           double decay)
{
    switch (value_dtype) {
    case EMAD_F32:
        ema_update_f32(dst, shadow, value, n, ema_coef_f32(decay));
        return 0;
    case EMAD_F16:
        ema_update_f16(dst, shadow, value, n, ema_coef_f32(decay));
        return 0;
    case EMAD_BF16:
        ema_update_bf16(dst, shadow, value, n, ema_coef_f32(decay));
        return 0;
    case EMAD_F64:
        ema_update_f64(dst, shadow, value, n, 1.0 - decay);
        return 0;
    default:
        return EMAD_EDTYPE;
    }
}

/*
 * Set n shadow elements from the first pushed value: F16/BF16/F32 values
 * become float32, F64 stays float64. Returns 0, or EMAD_EDTYPE (nothing
 * written) for a non-float dtype.
 */
int
ema_init(void *shadow, const void *value, int value_dtype, size_t n)
{
    int sdtype = dtype_shadow(value_dtype);

    if (sdtype == EMAD_DTYPE_INVALID)
        return EMAD_EDTYPE;
    return dtype_convert(shadow, sdtype, value, value_dtype, n);
}

/*
 * Count NaN and Inf among n floating values of dtype (any alignment): an
 * exponent field of all ones. Returns 0 for non-float dtypes.
 */
uint64_t
ema_count_nonfinite(const void *value, int dtype, size_t n)
{
    const unsigned char *v = value;
    uint64_t bad = 0;

    switch (dtype) {
    case EMAD_F32:
        for (size_t i = 0; i < n; i++) {
            uint32_t x;
            memcpy(&x, v + 4 * i, 4);
            bad += (x & 0x7f800000u) == 0x7f800000u;
        }
        break;
    case EMAD_F64:
        for (size_t i = 0; i < n; i++) {
            uint64_t x;
            memcpy(&x, v + 8 * i, 8);
            bad += (x & 0x7ff0000000000000ull) == 0x7ff0000000000000ull;
        }
        break;
    case EMAD_F16:
    case EMAD_BF16: {
        uint16_t mask = dtype == EMAD_F16 ? 0x7c00 : 0x7f80;
        for (size_t i = 0; i < n; i++) {
            uint16_t x;
            memcpy(&x, v + 2 * i, 2);
            bad += (x & mask) == mask;
        }
        break;
    }
    default:
        break;
    }
    return bad;
}

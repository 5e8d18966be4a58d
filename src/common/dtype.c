/*
 * dtype.c - element types: the name and size tables for enum emad_dtype,
 * and the float16/bfloat16 <-> float32 conversions.
 *
 * Shared by the daemon, libemad and emactl (libemadcore). The tables are
 * indexed by enum emad_dtype and follow the safetensors names. Widening
 * F16/BF16 to float32 is exact; narrowing float32 to F16/BF16 rounds to
 * nearest, ties to even, with overflow to infinity and correct subnormals.
 * A NaN stays a NaN of the same sign with its payload's top bits kept and
 * the quiet bit set (what x86 F16C and ARM FCVT do). Everything is portable
 * C on bit patterns; buffers of any alignment go through memcpy.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/dtype.h"

/* Names, their lengths and sizes, indexed by enum emad_dtype. */
#define DT(name, size)                                                                             \
    {                                                                                              \
        name, sizeof(name) - 1, size                                                               \
    }
static const struct {
    const char *name;
    size_t len;
    size_t size;
} dtypes[EMAD_DTYPE_COUNT] = {
    [EMAD_DTYPE_INVALID] = {NULL, 0, 0},
    [EMAD_BOOL] = DT("BOOL", 1),
    [EMAD_U8] = DT("U8", 1),
    [EMAD_I8] = DT("I8", 1),
    [EMAD_I16] = DT("I16", 2),
    [EMAD_U16] = DT("U16", 2),
    [EMAD_F16] = DT("F16", 2),
    [EMAD_BF16] = DT("BF16", 2),
    [EMAD_I32] = DT("I32", 4),
    [EMAD_U32] = DT("U32", 4),
    [EMAD_F32] = DT("F32", 4),
    [EMAD_F64] = DT("F64", 8),
    [EMAD_I64] = DT("I64", 8),
    [EMAD_U64] = DT("U64", 8),
};
#undef DT

/* Largest element count or byte size a shape may describe. */
#define NUMEL_LIMIT (UINT64_C(1) << 62)

/* Safetensors name of a dtype, or NULL if dtype is not a valid enum emad_dtype. */
const char *
dtype_name(int dtype)
{
    if (dtype <= EMAD_DTYPE_INVALID || dtype >= EMAD_DTYPE_COUNT)
        return NULL;
    return dtypes[dtype].name;
}

/* The dtype whose name is exactly the len bytes at name (no NUL needed), or EMAD_DTYPE_INVALID. */
int
dtype_from_name(const char *name, size_t len)
{
    if (name == NULL)
        return EMAD_DTYPE_INVALID;
    for (int i = EMAD_DTYPE_INVALID + 1; i < EMAD_DTYPE_COUNT; i++) {
        if (dtypes[i].len == len && dtypes[i].name[0] == name[0] &&
            memcmp(dtypes[i].name, name, len) == 0)
            return i;
    }
    return EMAD_DTYPE_INVALID;
}

/* Element size in bytes, 0 if dtype is invalid. */
size_t
dtype_size(int dtype)
{
    if (dtype <= EMAD_DTYPE_INVALID || dtype >= EMAD_DTYPE_COUNT)
        return 0;
    return dtypes[dtype].size;
}

/* 1 for the floating-point dtypes F16, BF16, F32 and F64, else 0. */
int
dtype_is_float(int dtype)
{
    return dtype == EMAD_F16 || dtype == EMAD_BF16 || dtype == EMAD_F32 || dtype == EMAD_F64;
}

/* The dtype a param's shadow is kept in (F32 or F64), or EMAD_DTYPE_INVALID for non-floats. */
int
dtype_shadow(int dtype)
{
    switch (dtype) {
    case EMAD_F16:
    case EMAD_BF16:
    case EMAD_F32:
        return EMAD_F32;
    case EMAD_F64:
        return EMAD_F64;
    default:
        return EMAD_DTYPE_INVALID;
    }
}

/* Bit pattern of a float. */
static inline uint32_t
f32_bits(float f)
{
    uint32_t u;

    memcpy(&u, &f, sizeof(u));
    return u;
}

/* Float with bit pattern u. */
static inline float
f32_from_bits(uint32_t u)
{
    float f;

    memcpy(&f, &u, sizeof(f));
    return f;
}

/*
 * Bits of the float32 equal to the binary16 with bits h; a NaN keeps its
 * payload and gets the quiet bit. Written with masks instead of branches
 * so that the loops calling it can be vectorized.
 */
static inline uint32_t
f16_widen_bits(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t em = h & 0x7fffu; /* exponent and mantissa */
    /* Normal: rebias the exponent from 15 to 127. */
    uint32_t normal = (em << 13) + ((127u - 15u) << 23);
    /* Inf or NaN: maximum exponent, same payload, quiet bit for a NaN. */
    uint32_t special = 0x7f800000u | ((em & 0x3ffu) << 13) | ((uint32_t)(em > 0x7c00u) << 22);
    /* Zero or subnormal: em * 2^-24, exact in float32 (em < 2^10). */
    uint32_t tiny = f32_bits((float)(int32_t)em * 0x1p-24f);
    /* All-ones masks choosing one of the three. */
    uint32_t is_special = -(uint32_t)(em >= 0x7c00u);
    uint32_t is_tiny = -(uint32_t)(em < 0x0400u);
    uint32_t is_normal = ~(is_special | is_tiny);

    return sign | (special & is_special) | (normal & is_normal) | (tiny & is_tiny);
}

/* Widen an IEEE binary16 to float32, exactly; a NaN comes back quiet. */
float
dtype_f16_to_f32(uint16_t h)
{
    return f32_from_bits(f16_widen_bits(h));
}

/* Narrow float32 to IEEE binary16, rounding to nearest even. */
uint16_t
dtype_f32_to_f16(float f)
{
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;

    if (ax > 0x7f800000u) /* NaN: top 10 payload bits, quiet bit set */
        return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
    if (ax >= 0x477ff000u) /* >= 65520, halfway from 65504 (odd) to 2^16: infinity */
        return (uint16_t)(sign | 0x7c00u);
    if (ax >= 0x38800000u) {
        /* Normal binary16 (>= 2^-14): rebias, then round away 13 mantissa bits. */
        uint32_t r = ax - ((127u - 15u) << 23);
        r += 0x0fffu + ((r >> 13) & 1u);
        return (uint16_t)(sign | (r >> 13));
    }
    if (ax <= 0x33000000u) /* <= 2^-25, at most half the smallest subnormal: zero */
        return sign;
    /*
     * Subnormal binary16: the result is round(|f| * 2^24). |f| = m * 2^(e-150)
     * with the 24-bit significand m, so shift m right by 126 - e (14..24 here).
     */
    uint32_t e = ax >> 23;
    uint32_t m = (ax & 0x007fffffu) | 0x00800000u;
    uint32_t shift = 126u - e;
    uint32_t r = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1u);

    if (rem > half || (rem == half && (r & 1u)))
        r++; /* may carry into 0x0400, the smallest normal: still the right encoding */
    return (uint16_t)(sign | r);
}

/* Bits of the float32 equal to the bfloat16 with bits b; a NaN gets the quiet bit. */
static inline uint32_t
bf16_widen_bits(uint16_t b)
{
    uint32_t x = (uint32_t)b << 16;

    return (x & 0x7fffffffu) > 0x7f800000u ? x | 0x00400000u : x;
}

/* Widen a bfloat16 to float32, exactly; a NaN comes back quiet. */
float
dtype_bf16_to_f32(uint16_t b)
{
    return f32_from_bits(bf16_widen_bits(b));
}

/* Narrow float32 to bfloat16, rounding to nearest even (overflow gives infinity). */
uint16_t
dtype_f32_to_bf16(float f)
{
    uint32_t x = f32_bits(f);

    if ((x & 0x7fffffffu) > 0x7f800000u) /* NaN: keep the top payload bits, set quiet */
        return (uint16_t)((x >> 16) | 0x0040u);
    /* Adding 0x7fff plus the kept lsb carries exactly when the dropped half rounds up. */
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

/* Widen n F16 elements at src to float32 at dst (both any alignment). */
static void
widen_f16(unsigned char *dst, const unsigned char *src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        uint32_t x;

        memcpy(&h, src + 2 * i, sizeof(h));
        x = f16_widen_bits(h);
        memcpy(dst + 4 * i, &x, sizeof(x));
    }
}

/* Widen n BF16 elements at src to float32 at dst (both any alignment). */
static void
widen_bf16(unsigned char *dst, const unsigned char *src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        uint32_t x;

        memcpy(&h, src + 2 * i, sizeof(h));
        x = bf16_widen_bits(h);
        memcpy(dst + 4 * i, &x, sizeof(x));
    }
}

/* Narrow n float32 elements at src to F16 or BF16 at dst (both any alignment). */
static void
narrow16(unsigned char *dst, const unsigned char *src, size_t n, int to)
{
    for (size_t i = 0; i < n; i++) {
        float f;
        uint16_t h;

        memcpy(&f, src + 4 * i, sizeof(f));
        h = to == EMAD_F16 ? dtype_f32_to_f16(f) : dtype_f32_to_bf16(f);
        memcpy(dst + 2 * i, &h, sizeof(h));
    }
}

/*
 * Convert n elements from src (dtype from) to dst (dtype to), both of any
 * alignment: a copy for identical types, F16/BF16 -> F32 and F32 ->
 * F16/BF16. Returns 0, or EMAD_EDTYPE for any other pair.
 */
/* A float64 rounded to float32 with round-to-odd: narrowing that further rounds once, correctly. */
static float
f64_to_f32_odd(double x)
{
    float f = (float)x;
    uint32_t bits;

    if ((double)f == x || isnan(x))
        return f;
    if (fabs((double)f) > fabs(x))
        f = nextafterf(f, 0.0f);
    memcpy(&bits, &f, 4);
    bits |= 1;
    memcpy(&f, &bits, 4);
    return f;
}

/* One element of a float dtype at p, as a double (exact). */
static double
load_float(const unsigned char *p, int dtype)
{
    uint16_t h;
    float f;
    double d;

    switch (dtype) {
    case EMAD_F16:
        memcpy(&h, p, 2);
        return dtype_f16_to_f32(h);
    case EMAD_BF16:
        memcpy(&h, p, 2);
        return dtype_bf16_to_f32(h);
    case EMAD_F32:
        memcpy(&f, p, 4);
        return f;
    default:
        memcpy(&d, p, 8);
        return d;
    }
}

/* Any float dtype to any other, element by element, each rounded once to nearest even. */
static void
convert_float(void *dst, int to, const void *src, int from, size_t n)
{
    const unsigned char *s = src;
    unsigned char *d = dst;
    size_t is = dtype_size(from), os = dtype_size(to);

    for (size_t i = 0; i < n; i++) {
        double x = load_float(s + i * is, from);
        float f;
        uint16_t h;

        switch (to) {
        case EMAD_F64:
            memcpy(d + i * os, &x, 8);
            break;
        case EMAD_F32:
            f = (float)x;
            memcpy(d + i * os, &f, 4);
            break;
        default:
            f = from == EMAD_F64 ? f64_to_f32_odd(x) : (float)x;
            h = to == EMAD_F16 ? dtype_f32_to_f16(f) : dtype_f32_to_bf16(f);
            memcpy(d + i * os, &h, 2);
            break;
        }
    }
}

int
dtype_convert(void *dst, int to, const void *src, int from, size_t n)
{
    if (to == from && dtype_size(to) != 0) {
        if (n > 0)
            memmove(dst, src, n * dtype_size(to));
        return 0;
    }
    if (to == EMAD_F32 && from == EMAD_F16) {
        widen_f16(dst, src, n);
        return 0;
    }
    if (to == EMAD_F32 && from == EMAD_BF16) {
        widen_bf16(dst, src, n);
        return 0;
    }
    if (from == EMAD_F32 && (to == EMAD_F16 || to == EMAD_BF16)) {
        narrow16(dst, src, n, to);
        return 0;
    }
    if (dtype_is_float(to) && dtype_is_float(from)) {
        convert_float(dst, to, src, from, n);
        return 0;
    }
    return EMAD_EDTYPE;
}

const char *
dtype_fmt_shape(char *buf, size_t size, const uint64_t *shape, uint32_t ndim)
{
    size_t off = 0;

    off += (size_t)snprintf(buf, size, "[");
    for (uint32_t i = 0; i < ndim && off < size; i++)
        off += (size_t)snprintf(buf + off, size - off, "%s%llu", i ? ", " : "",
                                (unsigned long long)shape[i]);
    if (off < size)
        snprintf(buf + off, size - off, "]");
    return buf;
}

/*
 * Element count and byte size of a shape: *numel is the product of
 * shape[0..ndim) (1 for a scalar, 0 if any dimension is 0) and *nbytes is
 * numel * dtype_size(dtype) (0 for an invalid dtype). Returns 0, or
 * EMAD_ELIMIT if a dimension, the count or the size exceeds 2^62 (then
 * both outputs are 0). A zero dimension makes the count 0 whatever the
 * others are, as long as each of them is within the limit. Either output
 * pointer may be NULL.
 */
int
dtype_numel(const uint64_t *shape, uint32_t ndim, int dtype, uint64_t *numel, uint64_t *nbytes)
{
    uint64_t count = 1, size = dtype_size(dtype);
    int empty = 0;

    for (uint32_t i = 0; i < ndim; i++) {
        if (shape[i] > NUMEL_LIMIT)
            goto fail;
        empty |= shape[i] == 0;
    }
    if (empty) {
        count = 0;
    } else {
        for (uint32_t i = 0; i < ndim; i++) {
            if (count > NUMEL_LIMIT / shape[i])
                goto fail;
            count *= shape[i];
        }
    }
    if (size != 0 && count > NUMEL_LIMIT / size)
        goto fail;
    if (numel != NULL)
        *numel = count;
    if (nbytes != NULL)
        *nbytes = count * size;
    return 0;

fail:
    if (numel != NULL)
        *numel = 0;
    if (nbytes != NULL)
        *nbytes = 0;
    return EMAD_ELIMIT;
}

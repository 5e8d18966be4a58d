/*
 * ema.c - the EMA update kernels for every shadow and value dtype.
 *
 * Each kernel makes one fused pass: dst[i] = s - c * (s - v) with
 * s = shadow[i], evaluated as diff = s - v; t = c * diff; dst[i] = s - t,
 * each operation rounded to the shadow's type (this file is built with
 * -ffp-contract=off, so no FMA). That is bit for bit what PyTorch's
 * shadow.sub_((1. - decay) * (shadow - param)) computes on float32 tensors.
 * F16 and BF16 values are widened exactly to float32 in the same pass.
 * Each kernel exists for SSE2, AVX2 and AVX-512 and the best one the CPU
 * runs is chosen at first use (EMAD_ISA=sse2|avx2|avx512 forces one); all
 * give the same bits. An update into a separate buffer of 64 KiB or more
 * (a transaction's spare shadow) writes it with streaming stores on AVX2
 * and AVX-512. The functions touch only their arguments and may run on any
 * thread.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define EMA_X86 1
#endif

#include "common/dtype.h"
#include "store/ema.h"

/* Elements of F16 values widened at a time by the portable kernel (a stack buffer of 4 KiB). */
#define WIDEN_BLOCK 1024

/* Bytes of a separate destination from which the update streams its stores (see below). */
#define STREAM_MIN_BYTES (64u << 10)

/* The float32 coefficient c = (float)(1.0 - decay), with the subtraction done in double. */
float
ema_coef_f32(double decay)
{
    return (float)(1.0 - decay);
}

/*
 * The kernels, written once as plain loops and compiled once per
 * instruction set (the target attribute lets GCC vectorize each for SSE2,
 * AVX2 or AVX-512). Every variant performs the same IEEE operations on
 * each element, in the same order, with -ffp-contract=off: the results
 * are bit-identical whichever runs. Values are loaded with memcpy (any
 * alignment); dst may equal shadow, so only the value pointer is restrict.
 */
#define EMA_KERNELS(SFX, TARGET)                                                                   \
    TARGET static uint64_t f32_##SFX(float *dst, const float *shadow,                              \
                                     const unsigned char *restrict v, size_t n, float c)           \
    {                                                                                              \
        uint64_t bad = 0;                                                                          \
        for (size_t i = 0; i < n; i++) {                                                           \
            uint32_t b;                                                                            \
            float s = shadow[i], x;                                                                \
            memcpy(&b, v + 4 * i, 4);                                                              \
            memcpy(&x, &b, 4);                                                                     \
            bad += (b & 0x7f800000u) == 0x7f800000u;                                               \
            float diff = s - x;                                                                    \
            float t = c * diff;                                                                    \
            dst[i] = s - t;                                                                        \
        }                                                                                          \
        return bad;                                                                                \
    }                                                                                              \
    TARGET static uint64_t bf16_##SFX(float *dst, const float *shadow,                             \
                                      const unsigned char *restrict v, size_t n, float c)          \
    {                                                                                              \
        uint64_t bad = 0;                                                                          \
        for (size_t i = 0; i < n; i++) {                                                           \
            uint16_t h;                                                                            \
            uint32_t b;                                                                            \
            float s = shadow[i], x;                                                                \
            memcpy(&h, v + 2 * i, 2);                                                              \
            bad += (h & 0x7f80u) == 0x7f80u;                                                       \
            b = (uint32_t)h << 16; /* BF16 is the top half of a float32: exact */                  \
            memcpy(&x, &b, 4);                                                                     \
            float diff = s - x;                                                                    \
            float t = c * diff;                                                                    \
            dst[i] = s - t;                                                                        \
        }                                                                                          \
        return bad;                                                                                \
    }                                                                                              \
    TARGET static uint64_t f64_##SFX(double *dst, const double *shadow,                            \
                                     const unsigned char *restrict v, size_t n, double c)          \
    {                                                                                              \
        uint64_t bad = 0;                                                                          \
        for (size_t i = 0; i < n; i++) {                                                           \
            uint64_t b;                                                                            \
            double s = shadow[i], x;                                                               \
            memcpy(&b, v + 8 * i, 8);                                                              \
            memcpy(&x, &b, 8);                                                                     \
            bad += (b & 0x7ff0000000000000ull) == 0x7ff0000000000000ull;                           \
            double diff = s - x;                                                                   \
            double t = c * diff;                                                                   \
            dst[i] = s - t;                                                                        \
        }                                                                                          \
        return bad;                                                                                \
    }

EMA_KERNELS(base, )

/* Portable F16: widen a block exactly (dtype_convert), then the float32 kernel. */
static void
f16_base(float *dst, const float *shadow, const unsigned char *v, size_t n, float c)
{
    float buf[WIDEN_BLOCK];

    for (size_t off = 0; off < n; off += WIDEN_BLOCK) {
        size_t m = n - off < WIDEN_BLOCK ? n - off : WIDEN_BLOCK;

        (void)dtype_convert(buf, EMAD_F32, v + off * 2, EMAD_F16, m);
        (void)f32_base(dst + off, shadow + off, (const unsigned char *)buf, m, c);
    }
}

/* Portable count of NaN/Inf values (exponent all ones) of a float dtype. */
static uint64_t
count_base(const unsigned char *v, int dtype, size_t n)
{
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

#ifdef EMA_X86
EMA_KERNELS(avx2, __attribute__((target("avx2"))))
EMA_KERNELS(avx512, __attribute__((target("avx512f,avx512bw"))))

/* The count with AVX2: compare the exponent bits of 32 bytes at a time, popcount the mask. */
__attribute__((target("avx2,popcnt"))) static uint64_t
count_avx2(const unsigned char *v, int dtype, size_t n)
{
    uint64_t bad = 0;
    size_t i = 0, w = dtype_size(dtype), lanes = w != 0 ? 32 / w : 0;

    switch (dtype) {
    case EMAD_F32: {
        __m256i m = _mm256_set1_epi32(0x7f800000);
        for (; i + lanes <= n; i += lanes) {
            __m256i x =
                _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(const void *)(v + 4 * i)), m);
            bad += (uint64_t)__builtin_popcount(
                (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(x, m))));
        }
        break;
    }
    case EMAD_F64: {
        __m256i m = _mm256_set1_epi64x(0x7ff0000000000000ll);
        for (; i + lanes <= n; i += lanes) {
            __m256i x =
                _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(const void *)(v + 8 * i)), m);
            bad += (uint64_t)__builtin_popcount(
                (unsigned)_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpeq_epi64(x, m))));
        }
        break;
    }
    case EMAD_F16:
    case EMAD_BF16: {
        __m256i m = _mm256_set1_epi16(dtype == EMAD_F16 ? 0x7c00 : 0x7f80);
        for (; i + lanes <= n; i += lanes) {
            __m256i x =
                _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(const void *)(v + 2 * i)), m);
            bad += (uint64_t)__builtin_popcount(
                       (unsigned)_mm256_movemask_epi8(_mm256_cmpeq_epi16(x, m))) /
                   2;
        }
        break;
    }
    default:
        return 0;
    }
    return bad + (i < n ? count_base(v + w * i, dtype, n - i) : 0);
}

/* The count with AVX-512: 64 bytes at a time into a mask register. */
__attribute__((target("avx512f,avx512bw,popcnt"))) static uint64_t
count_avx512(const unsigned char *v, int dtype, size_t n)
{
    uint64_t bad = 0;
    size_t i = 0, w = dtype_size(dtype), lanes = w != 0 ? 64 / w : 0;

    switch (dtype) {
    case EMAD_F32: {
        __m512i m = _mm512_set1_epi32(0x7f800000);
        for (; i + lanes <= n; i += lanes) {
            __m512i x = _mm512_and_si512(_mm512_loadu_si512(v + 4 * i), m);
            bad += (uint64_t)__builtin_popcount(_mm512_cmpeq_epi32_mask(x, m));
        }
        break;
    }
    case EMAD_F64: {
        __m512i m = _mm512_set1_epi64(0x7ff0000000000000ll);
        for (; i + lanes <= n; i += lanes) {
            __m512i x = _mm512_and_si512(_mm512_loadu_si512(v + 8 * i), m);
            bad += (uint64_t)__builtin_popcount(_mm512_cmpeq_epi64_mask(x, m));
        }
        break;
    }
    case EMAD_F16:
    case EMAD_BF16: {
        __m512i m = _mm512_set1_epi16(dtype == EMAD_F16 ? 0x7c00 : 0x7f80);
        for (; i + lanes <= n; i += lanes) {
            __m512i x = _mm512_and_si512(_mm512_loadu_si512(v + 2 * i), m);
            bad += (uint64_t)__builtin_popcountll(_mm512_cmpeq_epi16_mask(x, m));
        }
        break;
    }
    default:
        return 0;
    }
    return bad + (i < n ? count_base(v + w * i, dtype, n - i) : 0);
}

/* F16 with the F16C conversion (exact, like the portable one), 8 lanes at a time. */
__attribute__((target("avx2,f16c"))) static void
f16_avx2(float *dst, const float *shadow, const unsigned char *v, size_t n, float c)
{
    __m256 vc = _mm256_set1_ps(c);
    size_t i = 0;

    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(v + 2 * i)));
        __m256 s = _mm256_loadu_ps(shadow + i);
        __m256 t = _mm256_mul_ps(vc, _mm256_sub_ps(s, x));
        _mm256_storeu_ps(dst + i, _mm256_sub_ps(s, t));
    }
    if (i < n)
        f16_base(dst + i, shadow + i, v + 2 * i, n - i, c);
}

/* F16 with AVX-512's conversion, 16 lanes at a time. */
__attribute__((target("avx512f,avx512bw"))) static void
f16_avx512(float *dst, const float *shadow, const unsigned char *v, size_t n, float c)
{
    __m512 vc = _mm512_set1_ps(c);
    size_t i = 0;

    for (; i + 16 <= n; i += 16) {
        __m512 x = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(v + 2 * i)));
        __m512 s = _mm512_loadu_ps(shadow + i);
        __m512 t = _mm512_mul_ps(vc, _mm512_sub_ps(s, x));
        _mm512_storeu_ps(dst + i, _mm512_sub_ps(s, t));
    }
    if (i < n)
        f16_base(dst + i, shadow + i, v + 2 * i, n - i, c);
}

/*
 * Streaming kernels: the same operations, for an update into a separate
 * buffer (a transaction's spare shadow) of at least STREAM_MIN_BYTES. The
 * new shadow is written with non-temporal stores, straight to memory:
 * without them every line of the spare is first read in (it was last
 * written a whole push ago) and then evicts something from the cache,
 * such as the next chunk's values arriving from the socket. Measured on a
 * 4 MiB piece out of a 256 MiB shadow (AVX-512, one thread): 0.23 ms with
 * plain stores, 0.17 ms streamed, 0.16 ms for the in-place update. The
 * elements before dst's first 64-byte boundary and the tail go through the
 * plain kernel; the count of non-finite values is taken in the same loop.
 *
 * The old shadow is dead once read: commit makes it the spare, which the
 * next transaction overwrites with streaming stores. Each of its lines is
 * evicted (clflushopt) as soon as it has been read, so that it does not
 * push the receive buffers and socket data out of the shared cache; the
 * lines are clean when the shadow was itself written by streaming stores,
 * and are then dropped without a write-back. Memory contents are not
 * affected. The eviction follows the loads of each 64 bytes of the old
 * shadow, so the line holding their first byte has been read whole. A/B
 * of two daemon builds (alternating rounds of 8 pushes of a 256 MiB F32
 * model, raw nanomsg in each round): median 1.03-1.07 x the pushes
 * without the eviction (bench/RESULTS.md). Alone, the eviction costs the
 * kernel about a tenth of its rate (bench_kernel `sep 1`), and for BF16
 * values on AVX2 two fifths: BF16 kernels stream without evicting. CPUs
 * without clflushopt store plainly into a separate buffer.
 */

/* Elements of size esize before dst reaches a 64-byte boundary (n if it never does). */
static size_t
stream_head(const void *dst, size_t esize, size_t n)
{
    size_t mis = (uintptr_t)dst & 63, h;

    if (mis % esize != 0)
        return n;
    h = ((64 - mis) & 63) / esize;
    return h < n ? h : n;
}

/*
 * 4K aliasing: a load whose address equals a pending store's in its low 12
 * bits waits for that store. F32 and F64 values advance as fast as dst;
 * when they sit a little below dst modulo 4 KiB, and not at dst's offset
 * in a 64-byte line, each (line-splitting) load of the values meets a
 * store the loop has just issued to dst. A forward AVX-512 loop then runs
 * at half its rate and an AVX2 one at about three quarters, for values
 * 8 to about 700 bytes below dst: a sixth of the placements that msgpack
 * BIN payloads in received messages can have (measured on a 2 MiB piece
 * for every value offset in steps of 8 bytes). For those placements the
 * streaming loop runs from the end backward: the stores it has issued are
 * then above the values it loads. The results are the same bits either
 * way (each element is computed alone; the count is a sum).
 */
#define ALIAS_SPAN 1024

/* Should a streaming loop over values v (as wide as dst's elements) run backward? */
static int
stream_backward(const void *dst, const void *v)
{
    uintptr_t below = ((uintptr_t)dst - (uintptr_t)v) & 4095;

    return (below & 63) != 0 && below < ALIAS_SPAN;
}

/*
 * A float32-shadow streaming kernel NAME (plain kernel PLAIN for head and
 * tail) over values of VSIZE bytes; LOAD(p) gives the values at p as the
 * bits of float32 lanes (F32 as they are, BF16 shifted into the top half:
 * exact).
 */
#define STREAM_F32_AVX512(NAME, PLAIN, VSIZE, LOAD, EVICT)                                         \
    __attribute__((target("avx512f,avx512bw,popcnt,clflushopt"))) static uint64_t NAME(            \
        float *dst, const float *shadow, const unsigned char *restrict v, size_t n, float c)       \
    {                                                                                              \
        size_t h = stream_head(dst, 4, n), end = h + (n - h) / 16 * 16;                            \
        uint64_t bad = PLAIN(dst, shadow, v, h, c) +                                               \
                       PLAIN(dst + end, shadow + end, v + VSIZE * end, n - end, c);                \
        __m512 vc = _mm512_set1_ps(c);                                                             \
        __m512i em = _mm512_set1_epi32(0x7f800000);                                                \
        int back = VSIZE == 4 && stream_backward(dst, v);                                          \
                                                                                                   \
        for (size_t k = h; k < end; k += 16) {                                                     \
            size_t i = back ? h + end - 16 - k : k;                                                \
            __m512i xb = LOAD(v + VSIZE * i);                                                      \
            __m512 s = _mm512_loadu_ps(shadow + i);                                                \
            __m512 t = _mm512_mul_ps(vc, _mm512_sub_ps(s, _mm512_castsi512_ps(xb)));               \
            __mmask16 e = _mm512_cmpeq_epi32_mask(_mm512_and_si512(xb, em), em);                   \
            bad += (uint64_t)__builtin_popcount(e);                                                \
            _mm512_stream_ps(dst + i, _mm512_sub_ps(s, t));                                        \
            if (EVICT) /* this line has been read whole: its other bytes came before */            \
                _mm_clflushopt((void *)(shadow + (back ? i + 15 : i)));                            \
        }                                                                                          \
        _mm_sfence();                                                                              \
        return bad;                                                                                \
    }
#define LOAD_F32_512(p) _mm512_loadu_si512((const void *)(p))
#define LOAD_BF16_512(p)                                                                           \
    _mm512_slli_epi32(                                                                             \
        _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(p))), 16)
STREAM_F32_AVX512(f32s_avx512, f32_avx512, 4, LOAD_F32_512, 1)
STREAM_F32_AVX512(bf16s_avx512, bf16_avx512, 2, LOAD_BF16_512, 0)

__attribute__((target("avx512f,avx512bw,popcnt,clflushopt"))) static uint64_t
f64s_avx512(double *dst, const double *shadow, const unsigned char *restrict v, size_t n, double c)
{
    size_t h = stream_head(dst, 8, n), end = h + (n - h) / 8 * 8;
    uint64_t bad = f64_avx512(dst, shadow, v, h, c) +
                   f64_avx512(dst + end, shadow + end, v + 8 * end, n - end, c);
    __m512d vc = _mm512_set1_pd(c);
    __m512i em = _mm512_set1_epi64(0x7ff0000000000000ll);
    int back = stream_backward(dst, v);

    for (size_t k = h; k < end; k += 8) {
        size_t i = back ? h + end - 8 - k : k;
        __m512i xb = _mm512_loadu_si512((const void *)(v + 8 * i));
        __m512d s = _mm512_loadu_pd(shadow + i);
        __m512d t = _mm512_mul_pd(vc, _mm512_sub_pd(s, _mm512_castsi512_pd(xb)));
        bad += (uint64_t)__builtin_popcount(_mm512_cmpeq_epi64_mask(_mm512_and_si512(xb, em), em));
        _mm512_stream_pd(dst + i, _mm512_sub_pd(s, t));
        _mm_clflushopt((void *)(shadow + (back ? i + 7 : i)));
    }
    _mm_sfence();
    return bad;
}

/* The same with AVX2, 8 lanes; the count from the compare's sign-bit mask. */
#define STREAM_F32_AVX2(NAME, PLAIN, VSIZE, LOAD, EVICT)                                           \
    __attribute__((target("avx2,popcnt,clflushopt"))) static uint64_t NAME(                        \
        float *dst, const float *shadow, const unsigned char *restrict v, size_t n, float c)       \
    {                                                                                              \
        size_t h = stream_head(dst, 4, n), end = h + (n - h) / 16 * 16;                            \
        uint64_t bad = PLAIN(dst, shadow, v, h, c) +                                               \
                       PLAIN(dst + end, shadow + end, v + VSIZE * end, n - end, c);                \
        __m256 vc = _mm256_set1_ps(c);                                                             \
        __m256i em = _mm256_set1_epi32(0x7f800000);                                                \
        int back = VSIZE == 4 && stream_backward(dst, v);                                          \
                                                                                                   \
        for (size_t k = h; k < end; k += 16) { /* 64 bytes of shadow: two vectors, one eviction */ \
            size_t i = back ? h + end - 16 - k : k;                                                \
            for (size_t jj = 0; jj < 16; jj += 8) {                                                \
                size_t j = back ? i + 8 - jj : i + jj;                                             \
                __m256i xb = LOAD(v + VSIZE * j);                                                  \
                __m256 s = _mm256_loadu_ps(shadow + j);                                            \
                __m256 t = _mm256_mul_ps(vc, _mm256_sub_ps(s, _mm256_castsi256_ps(xb)));           \
                __m256i e = _mm256_cmpeq_epi32(_mm256_and_si256(xb, em), em);                      \
                bad += (uint64_t)__builtin_popcount(                                               \
                    (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(e)));                         \
                _mm256_stream_ps(dst + j, _mm256_sub_ps(s, t));                                    \
            }                                                                                      \
            if (EVICT)                                                                             \
                _mm_clflushopt((void *)(shadow + (back ? i + 15 : i)));                            \
        }                                                                                          \
        _mm_sfence();                                                                              \
        return bad;                                                                                \
    }
#define LOAD_F32_256(p) _mm256_loadu_si256((const __m256i *)(const void *)(p))
#define LOAD_BF16_256(p)                                                                           \
    _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)(p))),  \
                      16)
STREAM_F32_AVX2(f32s_avx2, f32_avx2, 4, LOAD_F32_256, 1)
STREAM_F32_AVX2(bf16s_avx2, bf16_avx2, 2, LOAD_BF16_256, 0)

/* F64 values into a float64 shadow, 8 and 4 lanes. */
__attribute__((target("avx2,popcnt,clflushopt"))) static uint64_t
f64s_avx2(double *dst, const double *shadow, const unsigned char *restrict v, size_t n, double c)
{
    size_t h = stream_head(dst, 8, n), end = h + (n - h) / 8 * 8;
    uint64_t bad =
        f64_avx2(dst, shadow, v, h, c) + f64_avx2(dst + end, shadow + end, v + 8 * end, n - end, c);
    __m256d vc = _mm256_set1_pd(c);
    __m256i em = _mm256_set1_epi64x(0x7ff0000000000000ll);
    int back = stream_backward(dst, v);

    for (size_t k = h; k < end; k += 8) {
        size_t i = back ? h + end - 8 - k : k;
        for (size_t jj = 0; jj < 8; jj += 4) {
            size_t j = back ? i + 4 - jj : i + jj;
            __m256i xb = _mm256_loadu_si256((const __m256i *)(const void *)(v + 8 * j));
            __m256d s = _mm256_loadu_pd(shadow + j);
            __m256d t = _mm256_mul_pd(vc, _mm256_sub_pd(s, _mm256_castsi256_pd(xb)));
            __m256i e = _mm256_cmpeq_epi64(_mm256_and_si256(xb, em), em);
            bad +=
                (uint64_t)__builtin_popcount((unsigned)_mm256_movemask_pd(_mm256_castsi256_pd(e)));
            _mm256_stream_pd(dst + j, _mm256_sub_pd(s, t));
        }
        _mm_clflushopt((void *)(shadow + (back ? i + 7 : i)));
    }
    _mm_sfence();
    return bad;
}
#endif

/* One instruction set's kernels. */
typedef struct kernels {
    const char *name;
    /* The F32, BF16 and F64 updates also count the non-finite values they read. */
    uint64_t (*f32)(float *, const float *, const unsigned char *, size_t, float);
    uint64_t (*bf16)(float *, const float *, const unsigned char *, size_t, float);
    void (*f16)(float *, const float *, const unsigned char *, size_t, float);
    uint64_t (*f64)(double *, const double *, const unsigned char *, size_t, double);
    uint64_t (*count)(const unsigned char *, int, size_t);
    /* F32, BF16 and F64 into a separate buffer of at least STREAM_MIN_BYTES. */
    uint64_t (*f32s)(float *, const float *, const unsigned char *, size_t, float);
    uint64_t (*bf16s)(float *, const float *, const unsigned char *, size_t, float);
    uint64_t (*f64s)(double *, const double *, const unsigned char *, size_t, double);
} kernels;

/* The portable kernels store plainly, whatever the destination. */
static const kernels k_base = {"sse2",     f32_base, bf16_base, f16_base, f64_base,
                               count_base, f32_base, bf16_base, f64_base};
#ifdef EMA_X86
static const kernels k_avx2 = {"avx2",     f32_avx2,  bf16_avx2,  f16_avx2, f64_avx2,
                               count_avx2, f32s_avx2, bf16s_avx2, f64s_avx2};
/* AVX2 without clflushopt (before Skylake): plain stores into a separate buffer too. */
static const kernels k_avx2_plain = {"avx2",     f32_avx2, bf16_avx2, f16_avx2, f64_avx2,
                                     count_avx2, f32_avx2, bf16_avx2, f64_avx2};
static const kernels k_avx512 = {"avx512",     f32_avx512,  bf16_avx512,  f16_avx512, f64_avx512,
                                 count_avx512, f32s_avx512, bf16s_avx512, f64s_avx512};
#endif

/* The kernels in use: chosen on first use (read-only afterwards; a race picks the same). */
static const kernels *active;

#ifdef EMA_X86
/*
 * Bit `bit` of register reg (0 EAX, 1 EBX, 2 ECX, 3 EDX) of CPUID leaf
 * `leaf` (subleaf 0): read directly for the features that clang's
 * __builtin_cpu_supports() does not name (f16c, clflushopt).
 */
static int
cpuid_bit(unsigned leaf, int reg, int bit)
{
    unsigned r[4] = {0, 0, 0, 0};

    if (leaf > (unsigned)__get_cpuid_max(0, NULL) ||
        !__get_cpuid_count(leaf, 0, &r[0], &r[1], &r[2], &r[3]))
        return 0;
    return (int)((r[reg] >> bit) & 1u);
}
#endif

/* The best kernels this CPU runs, or those EMAD_ISA names (if this CPU runs them). */
static const kernels *
choose(const char *want)
{
#ifdef EMA_X86
    int has512, has2, flush;
    const kernels *k2;

    __builtin_cpu_init();
    flush = cpuid_bit(7, 1, 23); /* CPUID.(7,0):EBX.CLFLUSHOPT */
    /* Every AVX-512BW CPU has clflushopt; one that does not is run as AVX2. */
    has512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && flush;
    has2 = __builtin_cpu_supports("avx2") && cpuid_bit(1, 2, 29); /* CPUID.1:ECX.F16C */
    k2 = flush ? &k_avx2 : &k_avx2_plain;
    if (want != NULL && strcmp(want, "sse2") == 0)
        return &k_base;
    if (want != NULL && strcmp(want, "avx2") == 0 && has2)
        return k2;
    if (has512 && (want == NULL || strcmp(want, "avx512") == 0 || strcmp(want, "auto") == 0))
        return &k_avx512;
    if (has2)
        return k2;
#else
    (void)want;
#endif
    return &k_base;
}

static const kernels *
get(void)
{
    if (active == NULL)
        active = choose(getenv("EMAD_ISA"));
    return active;
}

const char *
ema_isa(void)
{
    return get()->name;
}

const char *
ema_set_isa(const char *name)
{
    active = choose(name);
    return active->name;
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
    uint64_t ignored;

    if (value_dtype == EMAD_F16) { /* without the count ema_update_counted() adds for F16 */
        get()->f16(dst, shadow, value, n, ema_coef_f32(decay));
        return 0;
    }
    return ema_update_counted(dst, shadow, value, value_dtype, n, decay, &ignored);
}

int
ema_update_counted(void *dst, const void *shadow, const void *value, int value_dtype, size_t n,
                   double decay, uint64_t *nonfinite)
{
    const kernels *k = get();
    size_t ssz = value_dtype == EMAD_F64 ? 8 : 4;
    int stream = dst != shadow && n * ssz >= STREAM_MIN_BYTES; /* a separate, large dst */

    *nonfinite = 0;
    switch (value_dtype) {
    case EMAD_F32:
        *nonfinite = (stream ? k->f32s : k->f32)(dst, shadow, value, n, ema_coef_f32(decay));
        return 0;
    case EMAD_BF16:
        *nonfinite = (stream ? k->bf16s : k->bf16)(dst, shadow, value, n, ema_coef_f32(decay));
        return 0;
    case EMAD_F64:
        *nonfinite = (stream ? k->f64s : k->f64)(dst, shadow, value, n, 1.0 - decay);
        return 0;
    case EMAD_F16: /* the conversion kernels do not count: two passes */
        *nonfinite = k->count(value, value_dtype, n);
        k->f16(dst, shadow, value, n, ema_coef_f32(decay));
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
    return get()->count(value, dtype, n);
}

/*
 * check_dtype.c - tests for src/common/dtype.c: the name and size tables, shape
 * arithmetic with its overflow limit, and the float16/bfloat16 conversions.
 * Conversions are checked against hand-derived bit patterns and against
 * vectors computed by numpy in tests/reference.py (float16 rounding by
 * numpy itself, bfloat16 rounding in numpy integer arithmetic), covering
 * every float16 value, the ties between neighbours, subnormals, infinities
 * and NaNs. The numpy tests fail, not skip, without Python 3 and numpy.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"
#include "testutil.h"

/* Float with bit pattern u. */
static float
float_of(uint32_t u)
{
    float f;

    memcpy(&f, &u, sizeof(f));
    return f;
}

/* 1 if the float32 bit pattern u is a NaN. */
static int
is_nan_bits(uint32_t u)
{
    return (u & 0x7fffffffu) > 0x7f800000u;
}

/*
 * Run tests/reference.py with args (its output file is dir/name) and
 * return the file's contents (malloc'd, length in *len). Fails the test
 * with an explanation if Python 3 with numpy cannot run it.
 */
static unsigned char *
run_reference(const char *dir, const char *args, const char *name, size_t *len)
{
    char cmd[2048], path[1024];
    char *out = NULL;
    unsigned char *buf;
    int status;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    snprintf(cmd, sizeof(cmd), "'%s' '%s/tests/reference.py' %s '%s'", tu_python(), tu_srcdir(),
             args, path);
    status = tu_run(cmd, &out);
    if (status != 0)
        ck_abort_msg("the numpy reference failed (exit status %d): %s\n%s\n"
                     "This test needs Python 3 with numpy: install python3-numpy, or set "
                     "PYTHON3 to an interpreter that has it.",
                     status, cmd, out != NULL ? out : "");
    free(out);
    buf = tu_read_file(path, len);
    ck_assert_msg(buf != NULL, "cannot read %s", path);
    return buf;
}

START_TEST(test_dtype_names_round_trip_for_every_dtype)
{
    for (int d = EMAD_DTYPE_INVALID + 1; d < EMAD_DTYPE_COUNT; d++) {
        const char *name = dtype_name(d);

        ck_assert_ptr_nonnull(name);
        ck_assert_int_eq(dtype_from_name(name, strlen(name)), d);
    }
    ck_assert_ptr_null(dtype_name(EMAD_DTYPE_INVALID));
    ck_assert_ptr_null(dtype_name(EMAD_DTYPE_COUNT));
    ck_assert_ptr_null(dtype_name(-1));
    ck_assert_ptr_null(dtype_name(1000));
}
END_TEST

START_TEST(test_dtype_names_and_sizes_match_the_protocol_table)
{
    /* docs/PROTOCOL.md, "Dtypes", in the order of enum emad_dtype. */
    static const struct {
        int dtype;
        const char *name;
        size_t size;
    } table[] = {
        {EMAD_BOOL, "BOOL", 1}, {EMAD_U8, "U8", 1},   {EMAD_I8, "I8", 1},     {EMAD_I16, "I16", 2},
        {EMAD_U16, "U16", 2},   {EMAD_F16, "F16", 2}, {EMAD_BF16, "BF16", 2}, {EMAD_I32, "I32", 4},
        {EMAD_U32, "U32", 4},   {EMAD_F32, "F32", 4}, {EMAD_F64, "F64", 8},   {EMAD_I64, "I64", 8},
        {EMAD_U64, "U64", 8},
    };

    ck_assert_int_eq(sizeof(table) / sizeof(table[0]), EMAD_DTYPE_COUNT - 1);
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        ck_assert_str_eq(dtype_name(table[i].dtype), table[i].name);
        ck_assert_uint_eq(dtype_size(table[i].dtype), table[i].size);
    }
    ck_assert_uint_eq(dtype_size(EMAD_DTYPE_INVALID), 0);
    ck_assert_uint_eq(dtype_size(EMAD_DTYPE_COUNT), 0);
    ck_assert_uint_eq(dtype_size(-3), 0);
}
END_TEST

START_TEST(test_dtype_from_name_matches_exact_bytes_only)
{
    ck_assert_int_eq(dtype_from_name("F32 trailing", 3), EMAD_F32); /* not NUL-terminated */
    ck_assert_int_eq(dtype_from_name("BF16", 4), EMAD_BF16);
    ck_assert_int_eq(dtype_from_name("BF16", 3), EMAD_DTYPE_INVALID); /* "BF1" */
    ck_assert_int_eq(dtype_from_name("F1", 2), EMAD_DTYPE_INVALID);
    ck_assert_int_eq(dtype_from_name("f32", 3), EMAD_DTYPE_INVALID); /* case matters */
    ck_assert_int_eq(dtype_from_name("F32\0", 4), EMAD_DTYPE_INVALID);
    ck_assert_int_eq(dtype_from_name("", 0), EMAD_DTYPE_INVALID);
    ck_assert_int_eq(dtype_from_name(NULL, 0), EMAD_DTYPE_INVALID);
    ck_assert_int_eq(dtype_from_name("F8_E4M3", 7), EMAD_DTYPE_INVALID);
}
END_TEST

START_TEST(test_dtype_only_floats_have_a_shadow)
{
    for (int d = EMAD_DTYPE_INVALID; d <= EMAD_DTYPE_COUNT; d++) {
        int is_float = d == EMAD_F16 || d == EMAD_BF16 || d == EMAD_F32 || d == EMAD_F64;
        int shadow = d == EMAD_F64 ? EMAD_F64 : is_float ? EMAD_F32 : EMAD_DTYPE_INVALID;

        ck_assert_int_eq(dtype_is_float(d), is_float);
        ck_assert_int_eq(dtype_shadow(d), shadow);
    }
}
END_TEST

START_TEST(test_dtype_numel_of_scalars_empty_and_regular_shapes)
{
    const uint64_t s234[] = {2, 3, 4}, s305[] = {3, 0, 5};
    const uint64_t huge_empty[] = {0, UINT64_C(1) << 62, UINT64_C(1) << 62};
    uint64_t numel = 99, nbytes = 99;

    ck_assert_int_eq(dtype_numel(NULL, 0, EMAD_F64, &numel, &nbytes), 0); /* scalar */
    ck_assert_uint_eq(numel, 1);
    ck_assert_uint_eq(nbytes, 8);
    ck_assert_int_eq(dtype_numel(s234, 3, EMAD_F32, &numel, &nbytes), 0);
    ck_assert_uint_eq(numel, 24);
    ck_assert_uint_eq(nbytes, 96);
    ck_assert_int_eq(dtype_numel(s234, 3, EMAD_BF16, &numel, NULL), 0);
    ck_assert_uint_eq(numel, 24);
    ck_assert_int_eq(dtype_numel(s305, 3, EMAD_I64, &numel, &nbytes), 0);
    ck_assert_uint_eq(numel, 0);
    ck_assert_uint_eq(nbytes, 0);
    /* Empty whatever the other dimensions, even where their product would overflow. */
    ck_assert_int_eq(dtype_numel(huge_empty, 3, EMAD_F64, &numel, &nbytes), 0);
    ck_assert_uint_eq(numel, 0);
    ck_assert_uint_eq(nbytes, 0);
    /* An invalid dtype has size 0. */
    ck_assert_int_eq(dtype_numel(s234, 3, EMAD_DTYPE_INVALID, &numel, &nbytes), 0);
    ck_assert_uint_eq(numel, 24);
    ck_assert_uint_eq(nbytes, 0);
}
END_TEST

START_TEST(test_dtype_numel_rejects_shapes_beyond_two_to_the_62)
{
    const uint64_t p31 = UINT64_C(1) << 31, p32 = UINT64_C(1) << 32, p62 = UINT64_C(1) << 62;
    const uint64_t at_limit[] = {p31, p31};      /* 2^62 elements */
    const uint64_t wraps_to_zero[] = {p32, p32}; /* 2^64: 0 in naive uint64 arithmetic */
    const uint64_t over[] = {p31, p31, 2};       /* 2^63 */
    const uint64_t three[] = {1u << 21, 1u << 21, 1u << 21}; /* 2^63 */
    const uint64_t big_dim_empty[] = {p62 + 1, 0};           /* one dimension alone is too large */
    const uint64_t max_dim[] = {UINT64_MAX};
    const uint64_t not_power[] = {3037000500u, 3037000500u}; /* 9.22e18 > 2^62 */
    uint64_t numel, nbytes;

    ck_assert_int_eq(dtype_numel(at_limit, 2, EMAD_U8, &numel, &nbytes), 0);
    ck_assert_uint_eq(numel, p62);
    ck_assert_uint_eq(nbytes, p62);
    /* 2^62 elements of 4 bytes is 2^64 bytes. */
    numel = nbytes = 7;
    ck_assert_int_eq(dtype_numel(at_limit, 2, EMAD_F32, &numel, &nbytes), EMAD_ELIMIT);
    ck_assert_uint_eq(numel, 0);
    ck_assert_uint_eq(nbytes, 0);
    ck_assert_int_eq(dtype_numel(wraps_to_zero, 2, EMAD_U8, &numel, &nbytes), EMAD_ELIMIT);
    ck_assert_int_eq(dtype_numel(over, 3, EMAD_U8, &numel, &nbytes), EMAD_ELIMIT);
    ck_assert_int_eq(dtype_numel(three, 3, EMAD_BOOL, &numel, &nbytes), EMAD_ELIMIT);
    ck_assert_int_eq(dtype_numel(big_dim_empty, 2, EMAD_U8, &numel, &nbytes), EMAD_ELIMIT);
    ck_assert_int_eq(dtype_numel(max_dim, 1, EMAD_U8, &numel, &nbytes), EMAD_ELIMIT);
    ck_assert_int_eq(dtype_numel(not_power, 2, EMAD_U8, &numel, &nbytes), EMAD_ELIMIT);
}
END_TEST

START_TEST(test_dtype_f32_to_f16_rounds_hand_vectors_to_nearest_even)
{
    /* binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits. */
    static const struct {
        uint32_t in;
        uint16_t out;
    } v[] = {
        {0x3f800000, 0x3c00}, /* 1.0 */
        {0xc0000000, 0xc000}, /* -2.0 */
        {0x00000000, 0x0000}, /* +0 */
        {0x80000000, 0x8000}, /* -0 keeps its sign */
        {0x3dcccccd, 0x2e66}, /* 0.1f: mantissa 0x4ccccd >> 13 = 0x266, rest 0xccd < half */
        {0x477fe000, 0x7bff}, /* 65504, the largest binary16 */
        {0x477fef00, 0x7bff}, /* 65519: below the halfway point 65520 */
        {0x477ff000, 0x7c00}, /* 65520: tie between 65504 (odd mantissa) and 2^16: inf */
        {0x47800000, 0x7c00}, /* 65536 overflows */
        {0x7f7fffff, 0x7c00}, /* FLT_MAX overflows */
        {0xc77ff000, 0xfc00}, /* -65520 to -inf */
        {0x7f800000, 0x7c00}, /* +inf */
        {0xff800000, 0xfc00}, /* -inf */
        {0x3f801000, 0x3c00}, /* 1 + 2^-11: tie between 1 and 1 + 2^-10, even is 1 */
        {0x3f803000, 0x3c02}, /* 1 + 3*2^-11: tie between 0x3c01 and 0x3c02, even is 0x3c02 */
        {0x3f801001, 0x3c01}, /* just above the tie rounds up */
        {0x38800000, 0x0400}, /* 2^-14, the smallest normal */
        {0x387fffff, 0x0400}, /* 2^-14 - 2^-38 = 1024 - 2^-14 units of 2^-24: up to normal */
        {0x33800000, 0x0001}, /* 2^-24, the smallest subnormal */
        {0x33000000, 0x0000}, /* 2^-25: tie between 0 and 2^-24, even is 0 */
        {0x33000001, 0x0001}, /* just above 2^-25 */
        {0x33c00000, 0x0002}, /* 3*2^-25: tie between 1 and 2 units, even is 2 */
        {0x34200000, 0x0002}, /* 5*2^-25: tie between 2 and 3 units, even is 2 */
        {0xb3c00000, 0x8002}, /* -3*2^-25 */
        {0x00000001, 0x0000}, /* the smallest float32 subnormal underflows to 0 */
        {0x80000001, 0x8000}, /* ... keeping its sign */
        {0x7fc00000, 0x7e00}, /* quiet NaN */
        {0xffc00000, 0xfe00}, /* negative quiet NaN */
        {0x7f800001, 0x7e00}, /* signaling NaN, payload below bit 13: quiet NaN */
        {0x7fa00000, 0x7f00}, /* signaling NaN: top payload bit 0x100 kept, quiet bit set */
    };

    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        ck_assert_msg(dtype_f32_to_f16(float_of(v[i].in)) == v[i].out,
                      "f32 0x%08x -> f16 0x%04x, expected 0x%04x", v[i].in,
                      dtype_f32_to_f16(float_of(v[i].in)), v[i].out);
}
END_TEST

START_TEST(test_dtype_f32_to_bf16_rounds_hand_vectors_to_nearest_even)
{
    /* bfloat16 is the top half of a float32; the dropped half decides the rounding. */
    static const struct {
        uint32_t in;
        uint16_t out;
    } v[] = {
        {0x3f800000, 0x3f80}, /* 1.0 */
        {0x3f808000, 0x3f80}, /* 1 + 2^-8: tie, 0x3f80 is even */
        {0x3f818000, 0x3f82}, /* 1 + 3*2^-8: tie, up to the even 0x3f82 */
        {0x3f808001, 0x3f81}, /* just above the tie */
        {0x3f807fff, 0x3f80}, /* just below the tie */
        {0xbf818000, 0xbf82}, /* negative tie */
        {0x7f7f7fff, 0x7f7f}, /* stays the largest finite bfloat16 */
        {0x7f7f8000, 0x7f80}, /* tie with odd 0x7f7f: up, to infinity */
        {0x7f7e8000, 0x7f7e}, /* tie with even 0x7f7e: stays */
        {0x7f7fffff, 0x7f80}, /* FLT_MAX overflows */
        {0xff7fffff, 0xff80}, /* -FLT_MAX to -inf */
        {0x00008000, 0x0000}, /* subnormal tie, even 0 */
        {0x00018000, 0x0002}, /* subnormal tie, odd 0x0001 rounds up */
        {0x0000ffff, 0x0001}, /* subnormal, above the tie */
        {0x007fffff, 0x0080}, /* largest float32 subnormal rounds up to the smallest normal */
        {0x80000000, 0x8000}, /* -0 */
        {0x7f800000, 0x7f80}, /* +inf */
        {0xff800000, 0xff80}, /* -inf */
        {0x7fc00000, 0x7fc0}, /* quiet NaN */
        {0x7f800001, 0x7fc0}, /* signaling NaN with a low payload: quiet, not infinity */
        {0xff810000, 0xffc1}, /* signaling NaN: payload kept, quiet bit set */
        {0x7fffffff, 0x7fff}, /* all-ones NaN must not carry into the sign */
    };

    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        ck_assert_msg(dtype_f32_to_bf16(float_of(v[i].in)) == v[i].out,
                      "f32 0x%08x -> bf16 0x%04x, expected 0x%04x", v[i].in,
                      dtype_f32_to_bf16(float_of(v[i].in)), v[i].out);
}
END_TEST

START_TEST(test_dtype_f16_to_f32_widens_hand_vectors_exactly)
{
    ck_assert_uint_eq(tu_f32_bits(dtype_f16_to_f32(0x3c00)), tu_f32_bits(1.0f));
    ck_assert_uint_eq(tu_f32_bits(dtype_f16_to_f32(0xc000)), tu_f32_bits(-2.0f));
    ck_assert_uint_eq(tu_f32_bits(dtype_f16_to_f32(0x7bff)), tu_f32_bits(65504.0f));
    ck_assert_uint_eq(tu_f32_bits(dtype_f16_to_f32(0x0400)), tu_f32_bits(0x1p-14f));
    ck_assert_uint_eq(tu_f32_bits(dtype_f16_to_f32(0x0001)), tu_f32_bits(0x1p-24f));
    ck_assert_uint_eq(tu_f32_bits(dtype_f16_to_f32(0x03ff)), tu_f32_bits(1023 * 0x1p-24f));
    ck_assert_uint_eq(tu_f32_bits(dtype_f16_to_f32(0x8001)), tu_f32_bits(-0x1p-24f));
    ck_assert_uint_eq(tu_f32_bits(dtype_f16_to_f32(0x0000)), 0x00000000u);
    ck_assert_uint_eq(tu_f32_bits(dtype_f16_to_f32(0x8000)), 0x80000000u);
    ck_assert_uint_eq(tu_f32_bits(dtype_f16_to_f32(0x7c00)), 0x7f800000u);
    ck_assert_uint_eq(tu_f32_bits(dtype_f16_to_f32(0xfc00)), 0xff800000u);
    ck_assert_uint_eq(tu_f32_bits(dtype_f16_to_f32(0x7e00)), 0x7fc00000u);
    /* Signaling NaN 0x7d00: payload 0x100 << 13 kept, quiet bit added. */
    ck_assert_uint_eq(tu_f32_bits(dtype_f16_to_f32(0x7d00)), 0x7fe00000u);
    ck_assert_uint_eq(tu_f32_bits(dtype_f16_to_f32(0xfc01)), 0xffc02000u);
}
END_TEST

START_TEST(test_dtype_bf16_widens_and_round_trips_every_pattern)
{
    for (uint32_t h = 0; h <= 0xffff; h++) {
        uint32_t expected = h << 16;
        uint32_t got = tu_f32_bits(dtype_bf16_to_f32((uint16_t)h));

        if (is_nan_bits(expected))
            expected |= 0x00400000u; /* NaN: quiet bit set, the rest kept */
        ck_assert_msg(got == expected, "bf16 0x%04x -> 0x%08x, expected 0x%08x", h, got, expected);
        /* Narrowing an exact value gives it back; a NaN comes back quiet. */
        uint16_t back = dtype_f32_to_bf16(float_of(got));
        ck_assert_uint_eq(back, is_nan_bits(h << 16) ? (h | 0x40u) : h);
    }
}
END_TEST

START_TEST(test_dtype_f16_matches_numpy_for_every_pattern_and_rounding_vector)
{
    char *dir = tu_tmpdir();
    size_t len, count;
    unsigned char *buf = run_reference(dir, "vectors", "vectors.bin", &len);
    const unsigned char *in, *f16, *widen;

    ck_assert_msg(len >= 16 && memcmp(buf, "EMADVEC1", 8) == 0, "bad vectors file");
    count = tu_load_u64le(buf + 8);
    ck_assert_uint_gt(count, 100000);
    ck_assert_uint_eq(len, 16 + count * 8 + 65536 * 4);
    in = buf + 16;
    f16 = in + count * 4;
    widen = f16 + count * 4;

    for (size_t i = 0; i < count; i++) {
        uint32_t x;
        uint16_t np, got;

        memcpy(&x, in + 4 * i, 4);
        memcpy(&np, f16 + 2 * i, 2);
        got = dtype_f32_to_f16(float_of(x));
        if (is_nan_bits(x)) {
            /* numpy may leave a NaN signaling; ours: sign, top payload bits, quiet bit. */
            uint16_t want = (uint16_t)(((x >> 16) & 0x8000u) | 0x7e00u | ((x >> 13) & 0x3ffu));
            ck_assert_msg((np & 0x7fffu) > 0x7c00u && (np & 0x8000u) == (want & 0x8000u),
                          "numpy did not give a NaN for 0x%08x", x);
            ck_assert_msg(got == want, "NaN 0x%08x -> 0x%04x, expected 0x%04x", x, got, want);
        } else {
            ck_assert_msg(got == np, "f32 0x%08x (%.9g) -> f16 0x%04x, numpy says 0x%04x", x,
                          (double)float_of(x), got, np);
        }
    }
    for (uint32_t h = 0; h <= 0xffff; h++) {
        uint32_t np, got = tu_f32_bits(dtype_f16_to_f32((uint16_t)h));

        memcpy(&np, widen + 4 * h, 4);
        if (is_nan_bits(np))
            np |= 0x00400000u; /* numpy keeps a signaling NaN; we quiet it */
        ck_assert_msg(got == np, "f16 0x%04x -> 0x%08x, numpy says 0x%08x", h, got, np);
        /* Every binary16 value survives the round trip (a NaN comes back quiet). */
        ck_assert_uint_eq(dtype_f32_to_f16(float_of(got)),
                          (h & 0x7fffu) > 0x7c00u ? (h | 0x200u) : h);
    }
    free(buf);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_dtype_bf16_matches_numpy_rounding_vectors)
{
    char *dir = tu_tmpdir();
    size_t len, count, ties = 0;
    unsigned char *buf = run_reference(dir, "vectors", "vectors.bin", &len);
    const unsigned char *in, *bf16;

    ck_assert_msg(len >= 16 && memcmp(buf, "EMADVEC1", 8) == 0, "bad vectors file");
    count = tu_load_u64le(buf + 8);
    ck_assert_uint_eq(len, 16 + count * 8 + 65536 * 4);
    in = buf + 16;
    bf16 = in + count * 6;
    for (size_t i = 0; i < count; i++) {
        uint32_t x;
        uint16_t np, got;

        memcpy(&x, in + 4 * i, 4);
        memcpy(&np, bf16 + 2 * i, 2);
        got = dtype_f32_to_bf16(float_of(x));
        ck_assert_msg(got == np, "f32 0x%08x -> bf16 0x%04x, numpy reference says 0x%04x", x, got,
                      np);
        ties += (x & 0xffffu) == 0x8000u;
    }
    ck_assert_uint_gt(ties, 10000); /* the vectors really exercise ties */
    free(buf);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_dtype_convert_handles_unaligned_buffers)
{
    enum { N = 37 };
    unsigned char src[N * 8 + 8], dst[N * 8 + 8], ref[N * 8];
    uint64_t state = 12345;

    for (size_t i = 0; i < sizeof(src); i++)
        src[i] = (unsigned char)tu_rand(&state);
    for (int off = 0; off < 4; off++) {
        /* F32 -> F16 and BF16 at odd offsets equal the scalar functions. */
        for (int to = EMAD_F16; to <= EMAD_BF16; to++) {
            memset(dst, 0xee, sizeof(dst));
            ck_assert_int_eq(dtype_convert(dst + off + 1, to, src + off, EMAD_F32, N), 0);
            for (int i = 0; i < N; i++) {
                float f;
                uint16_t h, want;

                memcpy(&f, src + off + 4 * i, 4);
                memcpy(&h, dst + off + 1 + 2 * i, 2);
                want = to == EMAD_F16 ? dtype_f32_to_f16(f) : dtype_f32_to_bf16(f);
                ck_assert_uint_eq(h, want);
            }
            ck_assert_uint_eq(dst[off], 0xee); /* nothing written outside */
            ck_assert_uint_eq(dst[off + 1 + 2 * N], 0xee);
        }
        /* F16 and BF16 -> F32. */
        for (int from = EMAD_F16; from <= EMAD_BF16; from++) {
            ck_assert_int_eq(dtype_convert(dst + 3 - off, EMAD_F32, src + off, from, N), 0);
            for (int i = 0; i < N; i++) {
                uint16_t h;
                float f;

                memcpy(&h, src + off + 2 * i, 2);
                memcpy(&f, dst + 3 - off + 4 * i, 4);
                ck_assert_uint_eq(
                    tu_f32_bits(f),
                    tu_f32_bits(from == EMAD_F16 ? dtype_f16_to_f32(h) : dtype_bf16_to_f32(h)));
            }
        }
        /* Identical types are a byte copy, any dtype. */
        memcpy(ref, src + off, N * 8);
        ck_assert_int_eq(dtype_convert(dst + 5, EMAD_I64, src + off, EMAD_I64, N), 0);
        ck_assert_mem_eq(dst + 5, ref, N * 8);
        ck_assert_int_eq(dtype_convert(dst + 1, EMAD_BOOL, src + off, EMAD_BOOL, N), 0);
        ck_assert_mem_eq(dst + 1, ref, N);
    }
}
END_TEST

START_TEST(test_dtype_convert_rejects_unsupported_pairs_and_writes_nothing)
{
    static const int pairs[][2] = {
        {EMAD_I16, EMAD_F16},
        {EMAD_F16, EMAD_I16},
        {EMAD_U64, EMAD_F64},
        {EMAD_F64, EMAD_I64},
        {EMAD_BOOL, EMAD_BF16},
        {EMAD_I32, EMAD_F32},
        {EMAD_F32, EMAD_I32},
        {EMAD_DTYPE_INVALID, EMAD_DTYPE_INVALID},
        {EMAD_DTYPE_COUNT, EMAD_DTYPE_COUNT},
        {99, 99},
    };
    unsigned char src[64] = {1, 2, 3}, dst[64], canary[64];

    memset(canary, 0x5a, sizeof(canary));
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        memcpy(dst, canary, sizeof(dst));
        ck_assert_int_eq(dtype_convert(dst, pairs[i][0], src, pairs[i][1], 4), EMAD_EDTYPE);
        ck_assert_mem_eq(dst, canary, sizeof(dst));
    }
    /* n = 0 is fine for supported pairs and writes nothing. */
    ck_assert_int_eq(dtype_convert(dst, EMAD_F32, src, EMAD_F16, 0), 0);
    ck_assert_int_eq(dtype_convert(dst, EMAD_BF16, src, EMAD_F32, 0), 0);
    ck_assert_int_eq(dtype_convert(dst, EMAD_U8, src, EMAD_U8, 0), 0);
    ck_assert_mem_eq(dst, canary, sizeof(dst));
}
END_TEST

START_TEST(test_dtype_convert_f64_to_half_rounds_once)
{
    /*
     * 1 + 2^-11 + 2^-40 lies just above the F16 halfway point between 1 and
     * 1 + 2^-10, so it rounds up (0x3c01); rounding to float32 first would
     * land exactly on the halfway point and round to even (0x3c00). Same
     * for BF16 with 1 + 2^-8 + 2^-40 (0x3f81, not 0x3f80). numpy agrees:
     * np.float64(1 + 2**-11 + 2**-40).astype(np.float16).view(np.uint16)
     * == 0x3c01.
     */
    double x[2] = {1.0 + 0x1p-11 + 0x1p-40, 1.0 + 0x1p-8 + 0x1p-40};
    double y[3] = {-2.5, 65520.0, 0.1}; /* exact, overflow to inf, RNE of 0.1 */
    uint16_t h[3];
    float f[3];

    ck_assert_int_eq(dtype_convert(h, EMAD_F16, &x[0], EMAD_F64, 1), 0);
    ck_assert_uint_eq(h[0], 0x3c01);
    ck_assert_int_eq(dtype_convert(h, EMAD_BF16, &x[1], EMAD_F64, 1), 0);
    ck_assert_uint_eq(h[0], 0x3f81);
    ck_assert_int_eq(dtype_convert(h, EMAD_F16, y, EMAD_F64, 3), 0);
    ck_assert_uint_eq(h[0], 0xc100);
    ck_assert_uint_eq(h[1], 0x7c00);
    ck_assert_uint_eq(h[2], 0x2e66); /* np.float16(0.1) */
    ck_assert_int_eq(dtype_convert(f, EMAD_F32, y, EMAD_F64, 3), 0);
    ck_assert_float_eq(f[0], -2.5f);
    ck_assert_float_eq(f[2], 0.1f);
    /* F16 -> BF16 through an exact widening: 1 + 2^-10 rounds down to 1.0. */
    h[0] = 0x3c01;
    ck_assert_int_eq(dtype_convert(&h[1], EMAD_BF16, &h[0], EMAD_F16, 1), 0);
    ck_assert_uint_eq(h[1], 0x3f80);
}
END_TEST

/* The dtype suite. */
static Suite *
dtype_suite(void)
{
    Suite *s = suite_create("dtype");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_dtype_names_round_trip_for_every_dtype);
    tcase_add_test(tc, test_dtype_names_and_sizes_match_the_protocol_table);
    tcase_add_test(tc, test_dtype_from_name_matches_exact_bytes_only);
    tcase_add_test(tc, test_dtype_only_floats_have_a_shadow);
    tcase_add_test(tc, test_dtype_numel_of_scalars_empty_and_regular_shapes);
    tcase_add_test(tc, test_dtype_numel_rejects_shapes_beyond_two_to_the_62);
    tcase_add_test(tc, test_dtype_f32_to_f16_rounds_hand_vectors_to_nearest_even);
    tcase_add_test(tc, test_dtype_f32_to_bf16_rounds_hand_vectors_to_nearest_even);
    tcase_add_test(tc, test_dtype_f16_to_f32_widens_hand_vectors_exactly);
    tcase_add_test(tc, test_dtype_bf16_widens_and_round_trips_every_pattern);
    tcase_add_test(tc, test_dtype_f16_matches_numpy_for_every_pattern_and_rounding_vector);
    tcase_add_test(tc, test_dtype_bf16_matches_numpy_rounding_vectors);
    tcase_add_test(tc, test_dtype_convert_handles_unaligned_buffers);
    tcase_add_test(tc, test_dtype_convert_rejects_unsupported_pairs_and_writes_nothing);
    tcase_add_test(tc, test_dtype_convert_f64_to_half_rounds_once);
    tcase_set_timeout(tc, TU_TCASE_TIMEOUT);
    suite_add_tcase(s, tc);
    return s;
}

/* Run the dtype suite; exit status 0 if every test passed. */
int
main(void)
{
    SRunner *sr = srunner_create(dtype_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/*
 * check_task.c - tests for src/store/task.c: how task_list_add() cuts a
 * task into pieces of at most TASK_PIECE_BYTES (counts, offsets of dst,
 * base and src for every op and dtype width, the bytes total, found reset,
 * the caller's fields kept) and what task_run() computes for each op.
 * Expected values are computed here: piece sizes from the element widths
 * written out per dtype, averages at decay 0.5 of small integers (exact in
 * float32), and bit patterns of binary16 and bfloat16 by hand.
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"
#include "store/task.h"
#include "testutil.h"

/* A task of op over n elements with the given dtypes and pointers; every other field zero. */
static task
mk(int op, int dtype, int sdtype, void *dst, const void *base, const void *src, uint64_t n)
{
    task t;

    memset(&t, 0, sizeof(t));
    t.op = (uint8_t)op;
    t.dtype = (uint8_t)dtype;
    t.sdtype = (uint8_t)sdtype;
    t.dst = dst;
    t.base = base;
    t.src = src;
    t.n = n;
    return t;
}

/*
 * Add t to an empty list and check the pieces: each holds at most
 * TASK_PIECE_BYTES / dsz elements, all but the last exactly that many;
 * dst and base advance by dsz bytes per element, src by ssz; the bytes
 * total is n * dsz. dsz and ssz are the widths the caller expects.
 */
static void
check_pieces(const task *t, size_t dsz, size_t ssz)
{
    task_list l = {0};
    uint64_t per = TASK_PIECE_BYTES / dsz, want = t->n == 0 ? 1 : (t->n + per - 1) / per, done = 0;

    task_list_add(&l, t);
    ck_assert_uint_eq(l.n, want);
    ck_assert_uint_ge(l.cap, l.n);
    ck_assert_uint_eq(l.bytes, t->n * dsz);
    for (size_t i = 0; i < l.n; i++) {
        const task *p = &l.v[i];
        uint64_t n = i + 1 < l.n ? per : t->n - done;

        ck_assert_uint_eq(p->n, n);
        ck_assert_uint_le(p->n * dsz, TASK_PIECE_BYTES);
        ck_assert_uint_eq(p->op, t->op);
        ck_assert_uint_eq(p->dtype, t->dtype);
        ck_assert_uint_eq(p->sdtype, t->sdtype);
        ck_assert_uint_eq(p->count, t->count);
        ck_assert_uint_eq(p->tag, t->tag);
        ck_assert(p->decay == t->decay);
        ck_assert_uint_eq(p->found, 0);
        ck_assert_ptr_eq(p->src, (const char *)t->src + done * ssz);
        if (t->dst == NULL)
            ck_assert_ptr_null(p->dst);
        else
            ck_assert_ptr_eq(p->dst, (char *)t->dst + done * dsz);
        if (t->base == NULL)
            ck_assert_ptr_null(p->base);
        else
            ck_assert_ptr_eq(p->base, (const char *)t->base + done * dsz);
        done += p->n;
    }
    ck_assert_uint_eq(done, t->n);
    task_list_free(&l);
    ck_assert_ptr_null(l.v);
    ck_assert_uint_eq(l.n, 0);
    ck_assert_uint_eq(l.cap, 0);
    ck_assert_uint_eq(l.bytes, 0);
}

/* Addresses only: the pieces are checked, never run, so no memory is behind them. */
static char fake[16];

START_TEST(test_task_ema_pieces_advance_by_shadow_and_value_widths)
{
    /* F32 values: shadow 4 bytes, value 4; 65536 elements per piece. */
    task t = mk(TASK_EMA, EMAD_F32, 0, fake, fake + 4, fake + 8, 3 * 65536 + 5);

    t.decay = 0.999;
    t.tag = 77;
    t.count = 1;
    t.found = 123; /* pieces start with found 0 */
    check_pieces(&t, 4, 4);
    /* BF16 and F16 values: float32 shadow (4 bytes), values of 2. */
    t.dtype = EMAD_BF16;
    check_pieces(&t, 4, 2);
    t.dtype = EMAD_F16;
    check_pieces(&t, 4, 2);
    /* F64: float64 shadow and values, 32768 elements per piece. */
    t.dtype = EMAD_F64;
    check_pieces(&t, 8, 8);
    /* TASK_INIT has the same widths. */
    t = mk(TASK_INIT, EMAD_BF16, 0, fake, NULL, fake + 8, 65536 * 2);
    check_pieces(&t, 4, 2);
}
END_TEST

START_TEST(test_task_count_copy_and_convert_pieces)
{
    /* COUNT: the bytes read; 131072 F16 values per piece, no dst or base. */
    task t = mk(TASK_COUNT, EMAD_F16, 0, NULL, NULL, fake, 131072 * 2 + 1);

    t.tag = 5;
    check_pieces(&t, 2, 2);
    t.dtype = EMAD_F64;
    check_pieces(&t, 8, 8);
    /* COPY: n is bytes, one byte per "element". */
    t = mk(TASK_COPY, 0, 0, fake, NULL, fake + 1, TASK_PIECE_BYTES * 2 + 3);
    check_pieces(&t, 1, 1);
    /* CONVERT: dst of dtype, src of sdtype. */
    t = mk(TASK_CONVERT, EMAD_BF16, EMAD_F32, fake, NULL, fake + 2, 131072 + 9);
    check_pieces(&t, 2, 4);
    t = mk(TASK_CONVERT, EMAD_F32, EMAD_F16, fake, NULL, fake + 2, 65536 * 3);
    check_pieces(&t, 4, 2);
}
END_TEST

START_TEST(test_task_small_and_empty_tasks_are_one_piece)
{
    task t = mk(TASK_EMA, EMAD_F32, 0, fake, fake, fake, 1);

    check_pieces(&t, 4, 4);
    t.n = 65536; /* exactly one full piece */
    check_pieces(&t, 4, 4);
    t.n = 0; /* an empty tensor still gets its (empty) piece */
    check_pieces(&t, 4, 4);
}
END_TEST

START_TEST(test_task_list_grows_and_appends_in_order)
{
    task_list l = {0};
    task t = mk(TASK_COPY, 0, 0, fake, NULL, fake, 10);

    for (uint32_t i = 0; i < 100; i++) {
        t.tag = i;
        task_list_add(&l, &t);
    }
    ck_assert_uint_eq(l.n, 100);
    ck_assert_uint_ge(l.cap, 100);
    ck_assert_uint_eq(l.bytes, 1000);
    for (uint32_t i = 0; i < 100; i++)
        ck_assert_uint_eq(l.v[i].tag, i);
    task_list_free(&l);
}
END_TEST

START_TEST(test_task_run_ema_f32_at_half_decay)
{
    /* decay 0.5: the new shadow is (shadow + value) / 2, exact for these values. */
    float shadow[5] = {1, 2, -4, 0, 100}, value[5] = {3, 2, 4, 1, -100}, dst[5];
    float want[5] = {2, 2, 0, 0.5f, 0};
    task t = mk(TASK_EMA, EMAD_F32, 0, dst, shadow, value, 5);

    t.decay = 0.5;
    task_run(&t);
    for (int i = 0; i < 5; i++)
        ck_assert_uint_eq(tu_f32_bits(dst[i]), tu_f32_bits(want[i]));
    ck_assert_uint_eq(tu_f32_bits(shadow[0]), tu_f32_bits(1.0f)); /* base left alone */
    ck_assert_uint_eq(t.found, 0);
    /* In place (dst == base). */
    t.dst = shadow;
    task_run(&t);
    ck_assert_mem_eq(shadow, want, sizeof(want));
}
END_TEST

START_TEST(test_task_run_ema_counts_nonfinite_only_when_asked)
{
    float shadow[4] = {1, 1, 1, 1}, value[4] = {3, NAN, INFINITY, 3}, dst[4];
    task t = mk(TASK_EMA, EMAD_F32, 0, dst, shadow, value, 4);

    t.decay = 0.5;
    task_run(&t);
    ck_assert_uint_eq(t.found, 0); /* count not asked for */
    t.count = 1;
    task_run(&t);
    ck_assert_uint_eq(t.found, 2);
    ck_assert_uint_eq(tu_f32_bits(dst[0]), tu_f32_bits(2.0f));
    ck_assert(isnan(dst[1]));
    ck_assert_uint_eq(tu_f32_bits(dst[3]), tu_f32_bits(2.0f));
}
END_TEST

START_TEST(test_task_run_init_copy_count_convert)
{
    uint16_t bf[3] = {0x3f80, 0xc040, 0x3e80}; /* bfloat16 1, -3, 0.25 */
    float f[3], big[4] = {1.0f, NAN, -INFINITY, 3.4028235e38f};
    uint16_t h[4];
    unsigned char src[7] = {1, 2, 3, 4, 5, 6, 7}, cdst[7] = {0};
    task t = mk(TASK_INIT, EMAD_BF16, 0, f, NULL, bf, 3);

    task_run(&t);
    ck_assert_uint_eq(tu_f32_bits(f[0]), tu_f32_bits(1.0f));
    ck_assert_uint_eq(tu_f32_bits(f[1]), tu_f32_bits(-3.0f));
    ck_assert_uint_eq(tu_f32_bits(f[2]), tu_f32_bits(0.25f));

    t = mk(TASK_COPY, 0, 0, cdst, NULL, src, 5);
    task_run(&t);
    ck_assert_mem_eq(cdst, src, 5);
    ck_assert_uint_eq(cdst[5], 0); /* n bytes, no more */

    /* NaN and -Inf are counted, the largest finite float is not. */
    t = mk(TASK_COUNT, EMAD_F32, 0, NULL, NULL, big, 4);
    task_run(&t);
    ck_assert_uint_eq(t.found, 2);

    /* float32 to binary16: 1 = 0x3c00, 0.5 = 0x3800, 65504 = 0x7bff, -2 = 0xc000. */
    {
        float in[4] = {1.0f, 0.5f, 65504.0f, -2.0f};
        t = mk(TASK_CONVERT, EMAD_F16, EMAD_F32, h, NULL, in, 4);
        task_run(&t);
        ck_assert_uint_eq(h[0], 0x3c00);
        ck_assert_uint_eq(h[1], 0x3800);
        ck_assert_uint_eq(h[2], 0x7bff);
        ck_assert_uint_eq(h[3], 0xc000);
    }
}
END_TEST

START_TEST(test_task_unknown_op_does_nothing)
{
    float dst[2] = {7, 7}, src[2] = {1, 2};
    task t = mk(200, EMAD_F32, 0, dst, src, src, 2);

    task_run(&t);
    ck_assert_uint_eq(tu_f32_bits(dst[0]), tu_f32_bits(7.0f));
    ck_assert_uint_eq(tu_f32_bits(dst[1]), tu_f32_bits(7.0f));
    ck_assert_uint_eq(t.found, 0);
}
END_TEST

/*
 * The pieces of a big task, run in reverse order, give what the formula
 * gives element by element: decay 0.5 over small integers (exact), and
 * the counts of the pieces of a COUNT add up to the NaNs placed.
 */
START_TEST(test_task_pieces_run_in_any_order_cover_the_whole_task)
{
    enum { N = 3 * 65536 + 11 };
    float *shadow = malloc(N * sizeof(float)), *value = malloc(N * sizeof(float));
    float *dst = malloc(N * sizeof(float));
    task_list l = {0};
    task t = mk(TASK_EMA, EMAD_F32, 0, dst, shadow, value, N);
    uint64_t found = 0, nans = 0;

    ck_assert(shadow != NULL && value != NULL && dst != NULL);
    for (size_t i = 0; i < N; i++) {
        shadow[i] = (float)(i % 1000);
        value[i] = (float)((i * 7) % 1000);
        dst[i] = -1.0f;
    }
    t.decay = 0.5;
    task_list_add(&l, &t);
    ck_assert_uint_eq(l.n, 4);
    for (size_t i = l.n; i-- > 0;)
        task_run(&l.v[i]);
    for (size_t i = 0; i < N; i++) {
        float want = (float)(i % 1000) / 2 + (float)((i * 7) % 1000) / 2;
        if (tu_f32_bits(dst[i]) != tu_f32_bits(want))
            ck_abort_msg("element %zu: got %g, expected %g", i, dst[i], want);
    }
    task_list_free(&l);

    for (size_t i = 5; i < N; i += 9973) {
        value[i] = NAN;
        nans++;
    }
    t = mk(TASK_COUNT, EMAD_F32, 0, NULL, NULL, value, N);
    task_list_add(&l, &t);
    ck_assert_uint_eq(l.n, 4);
    for (size_t i = l.n; i-- > 0;) {
        task_run(&l.v[i]);
        found += l.v[i].found;
    }
    ck_assert_uint_eq(nans, 20); /* at 5, 5 + 9973, ..., 5 + 19 * 9973 = 189492: every piece */
    ck_assert_uint_eq(found, nans);
    task_list_free(&l);
    free(shadow);
    free(value);
    free(dst);
}
END_TEST

/* Run the task suite; exit status 0 if every test passed. */
int
main(void)
{
    const TTest *const tests[] = {
        test_task_ema_pieces_advance_by_shadow_and_value_widths,
        test_task_count_copy_and_convert_pieces,
        test_task_small_and_empty_tasks_are_one_piece,
        test_task_list_grows_and_appends_in_order,
        test_task_run_ema_f32_at_half_decay,
        test_task_run_ema_counts_nonfinite_only_when_asked,
        test_task_run_init_copy_count_convert,
        test_task_unknown_op_does_nothing,
        test_task_pieces_run_in_any_order_cover_the_whole_task,
        NULL,
    };

    return tu_run_tests("task", tests);
}

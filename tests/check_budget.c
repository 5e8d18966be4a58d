/*
 * check_budget.c - the memory budget (src/store/budget.c) and what the
 * store charges to it:
 * - the gauges are exact: each part equals the bytes computed here by
 *   hand after every step (push, transaction, commit, session, pending
 *   step, drop) and all come back to zero when everything is gone;
 * - a transaction's new shadows are counted as its chunks arrive (one
 *   element of a tensor with 8 decays holds 8 huge pages, not the 8
 *   declared shadows), and a tensor whose shadows cannot fit is refused;
 * - F16 params with 8 decays (16 bytes held per byte sent): the push that
 *   would exceed the budget is EMAD_ELIMIT naming the budget and the part,
 *   before anything is allocated, and a smaller one is applied right;
 * - multi-writer transaction chunks are charged the slices they allocate
 *   (staged_bytes never exceeds the budget);
 * - per-owner shares of bytes, transactions, pull sessions and pending
 *   steps: one owner is refused at its share, another is still served;
 * - replies in flight: the largest reply per connection, until it is idle;
 * - --max-memory and --client-share parse, with their errors.
 * Expected values are computed independently in each test.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/emaconf.h"
#include "daemon/settings.h"
#include "store/store.h"
#include "testutil.h"

#define MIB (1ULL << 20)
#define HUGE_PAGE (2 * MIB)

static store_err err;
static store_result res;

/* A store with a budget of limit bytes (share percent) and model name: ndecays, writers. */
static store *
make_store(uint64_t limit, unsigned share, const char *name, size_t ndecays, uint32_t writers)
{
    store *s = store_create();
    emad_model_config cfg;
    int created;

    store_set_budget(s, limit, share);
    emaconf_init(&cfg);
    cfg.ndecays = ndecays;
    for (size_t j = 0; j < ndecays; j++)
        cfg.decays[j] = 0.5 + 0.05 * (double)j;
    cfg.writers = writers;
    ck_assert_int_eq(store_create_model(s, name, strlen(name), &cfg, 0, &created, &err), 0);
    return s;
}

/* An input of dtype (F32 or F16) with n elements of data for elements [start, start + n)
 * of a 1-D tensor of numel elements. */
static store_input
input(const char *name, int dtype, const void *data, uint64_t numel, uint64_t start, uint64_t n)
{
    store_input in = {.name = name, .name_len = strlen(name), .kind = EMAD_PARAM};

    in.dtype = dtype;
    in.ndim = 1;
    in.shape[0] = numel;
    in.start = start;
    in.count = n == numel && start == 0 ? 0 : n;
    in.data = data;
    in.len = n * (dtype == EMAD_F16 ? 2 : 4);
    return in;
}

/* Bytes held in one part now. */
static uint64_t
part(store *s, int p)
{
    store_gauges g;

    store_gauges_get(s, &g);
    return g.memory[p];
}

/* Every part's gauge equals want[part], and the total is their sum. */
static void
assert_parts(store *s, const uint64_t *want)
{
    store_gauges g;
    uint64_t sum = 0;

    store_gauges_get(s, &g);
    for (int p = 0; p < BUDGET_PART_COUNT; p++) {
        ck_assert_msg(g.memory[p] == want[p], "part %s: %llu bytes, expected %llu",
                      budget_part_name(p), (unsigned long long)g.memory[p],
                      (unsigned long long)want[p]);
        sum += want[p];
    }
    ck_assert_uint_eq(g.memory_total, sum);
    ck_assert_uint_le(g.memory_total, g.memory_limit);
}

/* err is EMAD_ELIMIT naming the memory budget (and `what`, if not NULL). */
static void
assert_budget_error(int rc, const char *what)
{
    ck_assert_int_eq(rc, EMAD_ELIMIT);
    ck_assert_msg(strstr(err.message, "memory budget") != NULL, "%s", err.message);
    ck_assert_msg(strstr(err.message, "--max-memory") != NULL, "%s", err.message);
    if (what != NULL)
        ck_assert_msg(strstr(err.message, what) != NULL, "expected '%s' in: %s", what, err.message);
}

START_TEST(test_budget_gauges_exact_and_back_to_zero)
{
    /* 3 decays, a 1,000-element F32 tensor: 12,000 bytes of shadows. */
    store *s = make_store(64 * MIB, 50, "m", 3, 1);
    float v[1000];
    uint64_t want[BUDGET_PART_COUNT] = {0}, id;
    store_input in;
    store_view *view;

    for (int i = 0; i < 1000; i++)
        v[i] = (float)i;
    store_set_owner(s, 7);
    in = input("w", EMAD_F32, v, 1000, 0, 1000);
    ck_assert_int_eq(store_push(s, "m", 1, 1, 0, &in, 1, 0, &res, &err), 0);
    want[BUDGET_SHADOWS] = 3 * 4000;
    assert_parts(s, want);
    /* A pull session holds the version it shows: counted in full (the 3 shadows? no: the one
     * decay it shows, 4,000 bytes). */
    ck_assert_int_eq(store_view_create(s, "m", 1, NULL, NULL, 0, NULL, &view, &err), 0);
    ck_assert_int_eq(store_view_register(s, view, 0, &err), 0);
    want[BUDGET_SESSIONS] = 4000;
    assert_parts(s, want);
    ck_assert_uint_eq(budget_owner_bytes(store_budget(s), 7), 4000);
    /* A transaction over two chunks: small shadows (under 4 MiB) are held whole from the first
     * chunk; committed, they become the shadows and the old ones spares (none is held by the
     * session except decay 0's, which stays with it). */
    ck_assert_int_eq(store_txn_begin(s, "m", 1, 2, 0, 0, &id, &err), 0);
    in = input("w", EMAD_F32, v, 1000, 0, 1000);
    in.len = 2000;
    {
        uint64_t staged;
        store_input second = in;
        ck_assert_int_eq(store_txn_push(s, id, NULL, 0, 0, 0, &in, 1, 0, &staged, &err), 0);
        want[BUDGET_TXN_SHADOWS] = 3 * 4000;
        assert_parts(s, want);
        second.offset = 2000;
        second.data = (const char *)v + 2000;
        ck_assert_int_eq(store_txn_push(s, id, NULL, 0, 0, 0, &second, 1, 0, &staged, &err), 0);
        assert_parts(s, want);
    }
    ck_assert_int_eq(store_txn_commit(s, id, 0, &res, &err), 0);
    want[BUDGET_TXN_SHADOWS] = 0;
    want[BUDGET_SPARES] = 2 * 4000; /* decays 1 and 2; decay 0's old shadow is the session's */
    assert_parts(s, want);
    ck_assert_int_eq(store_view_release(s, view->id, &err), 0);
    want[BUDGET_SESSIONS] = 0;
    assert_parts(s, want);
    ck_assert_uint_eq(budget_owner_bytes(store_budget(s), 7), 0);
    store_release_spares(s);
    want[BUDGET_SPARES] = 0;
    assert_parts(s, want);
    ck_assert_int_eq(store_drop_model(s, "m", 1, &err), 0);
    want[BUDGET_SHADOWS] = 0;
    assert_parts(s, want);
    store_destroy(s);
}
END_TEST

START_TEST(test_budget_txn_shadows_counted_as_data_arrives)
{
    /* 8 decays of a 4M-element F32 tensor: 8 x 16 MiB declared. One element written holds one
     * huge page per shadow: 8 x 2 MiB, not 128 MiB. */
    uint64_t numel = 4 * MIB, id, staged, want[BUDGET_PART_COUNT] = {0};
    store *s = make_store(256 * MIB, 100, "m", 8, 1);
    float one = 1.0f;
    store_input in = input("w", EMAD_F32, &one, numel, 0, 1);

    in.count = 0; /* a chunk of the whole tensor at offset 0 */
    store_set_owner(s, 1);
    ck_assert_int_eq(store_txn_begin(s, "m", 1, 1, 0, 0, &id, &err), 0);
    ck_assert_int_eq(store_txn_push(s, id, NULL, 0, 0, 0, &in, 1, 0, &staged, &err), 0);
    want[BUDGET_TXN_SHADOWS] = 8 * HUGE_PAGE;
    assert_parts(s, want);
    /* A chunk 10 MiB further on touches another page of each shadow. */
    in.offset = 10 * MIB;
    ck_assert_int_eq(store_txn_push(s, id, NULL, 0, 0, 0, &in, 1, 0, &staged, &err), 0);
    want[BUDGET_TXN_SHADOWS] = 16 * HUGE_PAGE;
    assert_parts(s, want);
    /* Aborted: everything is given back. */
    ck_assert_int_eq(store_txn_abort(s, id, &err), 0);
    want[BUDGET_TXN_SHADOWS] = 0;
    assert_parts(s, want);
    /* A tensor whose 8 shadows could never fit a 64 MiB budget is refused at its first chunk. */
    store_set_budget(s, 64 * MIB, 100);
    ck_assert_int_eq(store_txn_begin(s, "m", 1, 1, 0, 0, &id, &err), 0);
    in.offset = 0;
    ck_assert_int_eq(store_txn_push(s, id, NULL, 0, 0, 0, &in, 1, 0, &staged, &err), EMAD_ELIMIT);
    ck_assert_msg(strstr(err.message, "memory budget") != NULL, "%s", err.message);
    ck_assert_str_eq(err.tensor, "w");
    assert_parts(s, want);
    /* The budget still serves a tensor that fits: 8 shadows of 1 MiB, pushed whole. */
    {
        float *v = calloc(MIB / 4, sizeof(float));
        in = input("small", EMAD_F32, v, MIB / 4, 0, MIB / 4);
        ck_assert_int_eq(store_txn_push(s, id, NULL, 0, 0, 0, &in, 1, 0, &staged, &err), 0);
        ck_assert_int_eq(store_txn_commit(s, id, 0, &res, &err), 0);
        ck_assert_uint_eq(res.applied, 1);
        want[BUDGET_SHADOWS] = 8 * MIB;
        assert_parts(s, want);
        free(v);
    }
    store_destroy(s);
}
END_TEST

/* float -> IEEE half (values used here are exact in half). */
static uint16_t
to_half(float f)
{
    uint32_t x;
    uint32_t sign, e, m;

    memcpy(&x, &f, 4);
    sign = (x >> 16) & 0x8000;
    e = (x >> 23) & 0xff;
    m = x & 0x7fffff;
    if (e == 0)
        return (uint16_t)sign;
    return (uint16_t)(sign | ((e - 127 + 15) << 10) | (m >> 13));
}

START_TEST(test_budget_f16_with_8_decays)
{
    /* F16 params, 8 decays: each element holds 8 F32 shadows, 32 bytes per 2 bytes sent. A
     * 1 MiB push needs 16 MiB; with an 8 MiB budget it is refused before anything is held. */
    store *s = make_store(8 * MIB, 50, "m", 8, 1);
    uint64_t n = MIB / 2, want[BUDGET_PART_COUNT] = {0};
    uint16_t *h = calloc(n, 2);
    store_input in = input("big", EMAD_F16, h, n, 0, n);
    const model *m;

    store_set_owner(s, 3);
    assert_budget_error(store_push(s, "m", 1, 1, 0, &in, 1, 0, &res, &err), "shadows");
    assert_parts(s, want);
    ck_assert_uint_eq(store_model_find(s, "m", 1)->ntensors, 0);
    /* 1,024 elements (64 KiB of shadows) fit; the values are right: every decay starts at the
     * first value, then EMA with d: x = d * x + (1 - d) * v. */
    for (int i = 0; i < 1024; i++)
        h[i] = to_half((float)(i % 16));
    in = input("small", EMAD_F16, h, 1024, 0, 1024);
    ck_assert_int_eq(store_push(s, "m", 1, 1, 0, &in, 1, 0, &res, &err), 0);
    for (int i = 0; i < 1024; i++)
        h[i] = to_half(2.0f);
    ck_assert_int_eq(store_push(s, "m", 1, 2, 0, &in, 1, 0, &res, &err), 0);
    want[BUDGET_SHADOWS] = 8 * 1024 * 4;
    assert_parts(s, want);
    m = store_model_find(s, "m", 1);
    for (uint32_t j = 0; j < 8; j++) {
        double d = 0.5 + 0.05 * j;
        float got, expect = (float)(d * 5.0 + (1 - d) * 2.0); /* element 5: 5, then 2 */
        memcpy(&got, (const char *)m->tensors[0]->shadow[j]->data + 5 * 4, 4);
        ck_assert_msg(fabsf(got - expect) < 1e-5f, "decay %u: %g, expected %g", j, got, expect);
    }
    free(h);
    store_destroy(s);
}
END_TEST

START_TEST(test_budget_multiwriter_chunks_charged_what_they_allocate)
{
    /* Two writers; a transaction chunk declaring a slice of 1G elements would allocate 4 GiB:
     * refused before allocating, staged_bytes stays 0. A real one is charged its slice. */
    store *s = make_store(16 * MIB, 50, "m", 1, 2);
    float v[4] = {1, 2, 3, 4};
    uint64_t id, staged, want[BUDGET_PART_COUNT] = {0};
    store_input in = input("w", EMAD_F32, v, 1ULL << 30, 0, 1ULL << 29);
    store_gauges g;

    store_set_owner(s, 5);
    ck_assert_int_eq(store_txn_begin(s, "m", 1, 1, 0, 0, &id, &err), 0);
    in.len = 16;
    assert_budget_error(store_txn_push(s, id, NULL, 0, 0, 0, &in, 1, 0, &staged, &err), "staged");
    store_gauges_get(s, &g);
    ck_assert_uint_eq(g.staged_bytes, 0);
    assert_parts(s, want);
    /* Writer 0's half of an 8-element tensor, in two chunks; writer 1 pushes the other half. */
    in = input("w", EMAD_F32, v, 8, 0, 4);
    in.len = 8;
    ck_assert_int_eq(store_txn_push(s, id, NULL, 0, 0, 0, &in, 1, 0, &staged, &err), 0);
    want[BUDGET_STAGED] = 16;
    assert_parts(s, want);
    in.offset = 8;
    in.data = v + 2;
    ck_assert_int_eq(store_txn_push(s, id, NULL, 0, 0, 0, &in, 1, 0, &staged, &err), 0);
    assert_parts(s, want);
    ck_assert_int_eq(store_txn_commit(s, id, 0, &res, &err), 0);
    ck_assert_int_eq(res.pending, 1);
    want[BUDGET_STAGED] = 0; /* the transaction is closed: its slice moved to the step */
    want[BUDGET_PENDING] = 16;
    assert_parts(s, want);
    store_gauges_get(s, &g);
    ck_assert_uint_eq(g.staged_bytes, 16);
    in = input("w", EMAD_F32, v, 8, 4, 4);
    store_set_owner(s, 6);
    ck_assert_int_eq(store_push(s, "m", 1, 1, 1, &in, 1, 0, &res, &err), 0);
    ck_assert_int_eq(res.pending, 0);
    want[BUDGET_PENDING] = 0;
    want[BUDGET_SHADOWS] = 32;
    assert_parts(s, want);
    store_destroy(s);
}
END_TEST

START_TEST(test_budget_owner_shares_of_slots)
{
    /* Share 50%: an owner may open 512 of the 1,024 transactions and 32 of a model's 64
     * waiting steps; the next is EMAD_ELIMIT, and another owner is still served. */
    store *s = make_store(64 * MIB, 50, "m", 1, 2);
    float v = 1;
    uint64_t id;
    store_input in = input("w", EMAD_F32, &v, 2, 0, 1);

    store_set_owner(s, 11);
    for (int i = 0; i < 512; i++)
        ck_assert_int_eq(store_txn_begin(s, "m", 1, 1, 0, 0, &id, &err), 0);
    ck_assert_int_eq(store_txn_begin(s, "m", 1, 1, 0, 0, &id, &err), EMAD_ELIMIT);
    ck_assert_msg(strstr(err.message, "one connection may hold at most 512 of the 1024 open "
                                      "transactions") != NULL,
                  "%s", err.message);
    store_set_owner(s, 12);
    ck_assert_int_eq(store_txn_begin(s, "m", 1, 1, 0, 0, &id, &err), 0);
    ck_assert_int_eq(store_txn_abort(s, id, &err), 0);
    /* Pending steps: writer 0's half of steps 1..32 from owner 11. */
    store_set_owner(s, 11);
    for (uint64_t step = 1; step <= 32; step++)
        ck_assert_int_eq(store_push(s, "m", 1, step, 0, &in, 1, 0, &res, &err), 0);
    ck_assert_int_eq(store_push(s, "m", 1, 33, 0, &in, 1, 0, &res, &err), EMAD_ELIMIT);
    ck_assert_msg(strstr(err.message, "at most 32 of the 64 steps") != NULL, "%s", err.message);
    /* Owner 12 completes step 1 (writer 1's half) and opens step 40. */
    store_set_owner(s, 12);
    in = input("w", EMAD_F32, &v, 2, 1, 1);
    ck_assert_int_eq(store_push(s, "m", 1, 1, 1, &in, 1, 0, &res, &err), 0);
    ck_assert_int_eq(res.pending, 0);
    ck_assert_uint_eq(res.applied, 1);
    ck_assert_int_eq(store_push(s, "m", 1, 40, 1, &in, 1, 0, &res, &err), 0);
    ck_assert_int_eq(res.pending, 1);
    store_destroy(s);
}
END_TEST

START_TEST(test_budget_owner_share_of_bytes)
{
    /* A 4 MiB budget, share 50%, a 1 MiB tensor (1 MiB of shadows) and sessions of it (1 MiB
     * each). Owner 21 may hold two (2 MiB); its third is refused naming the connection's share.
     * Owner 22 opens one: the budget is full (4 MiB), so owner 23 is refused naming the part;
     * when owner 21 releases one, owner 23 gets it. */
    store *s = make_store(4 * MIB, 50, "m", 1, 1);
    float *v = calloc(MIB / 4, sizeof(float));
    store_input in = input("w", EMAD_F32, v, MIB / 4, 0, MIB / 4);
    store_view *views[6];

    store_set_owner(s, 21);
    ck_assert_int_eq(store_push(s, "m", 1, 1, 0, &in, 1, 0, &res, &err), 0);
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(store_view_create(s, "m", 1, NULL, NULL, 0, NULL, &views[i], &err), 0);
    ck_assert_int_eq(store_view_register(s, views[0], 0, &err), 0);
    ck_assert_int_eq(store_view_register(s, views[1], 0, &err), 0);
    assert_budget_error(store_view_register(s, views[2], 0, &err), "one connection");
    store_view_free(views[2]);
    ck_assert_uint_eq(part(s, BUDGET_SESSIONS), 2 * MIB);
    store_set_owner(s, 22);
    ck_assert_int_eq(store_view_register(s, views[3], 0, &err), 0);
    store_set_owner(s, 23);
    assert_budget_error(store_view_register(s, views[4], 0, &err), "sessions");
    store_view_free(views[4]);
    ck_assert_uint_eq(part(s, BUDGET_SESSIONS), 3 * MIB);
    ck_assert_int_eq(store_view_release(s, views[0]->id, &err), 0);
    ck_assert_int_eq(store_view_register(s, views[5], 0, &err), 0);
    ck_assert_uint_eq(budget_owner_bytes(store_budget(s), 21), MIB);
    ck_assert_uint_eq(budget_owner_bytes(store_budget(s), 22), MIB);
    ck_assert_uint_eq(budget_owner_bytes(store_budget(s), 23), MIB);
    free(v);
    store_destroy(s);
}
END_TEST

START_TEST(test_budget_replies_in_flight)
{
    /* One reply held per connection: the largest since it was last idle. */
    budget *b = budget_create();

    budget_configure(b, 10 * MIB, 50);
    budget_reply_sent(b, 1, 3 * MIB, 100);
    budget_reply_sent(b, 1, 1 * MIB, 200); /* nanomsg drops it while the first is held */
    ck_assert_uint_eq(budget_used(b, BUDGET_REPLIES), 3 * MIB);
    ck_assert_uint_eq(budget_reply_need(b, 1, 4 * MIB), MIB);
    ck_assert_uint_eq(budget_reply_need(b, 1, 2 * MIB), 0);
    budget_reply_sent(b, 2, 5 * MIB, 300);
    ck_assert_uint_eq(budget_total(b), 8 * MIB);
    /* 3 MiB more for connection 3 exceed the 10 MiB budget; 2 MiB fit. */
    ck_assert_int_eq(budget_check(b, BUDGET_REPLIES, 3, 3 * MIB, 3 * MIB, &err), EMAD_ELIMIT);
    ck_assert_msg(strstr(err.message, "replies_in_flight") != NULL, "%s", err.message);
    ck_assert_int_eq(budget_check(b, BUDGET_REPLIES, 3, 2 * MIB, 2 * MIB, &err), 0);
    /* Connection 1 stays active; connection 2 is idle for the timeout: its reply is dropped. */
    budget_owner_seen(b, 1, 1000);
    budget_reply_expire(b, 1350, 1000);
    ck_assert_uint_eq(budget_used(b, BUDGET_REPLIES), 3 * MIB);
    budget_reply_expire(b, 2000, 1000);
    ck_assert_uint_eq(budget_used(b, BUDGET_REPLIES), 0);
    ck_assert_uint_eq(budget_total(b), 0);
    /* Models loaded beyond the budget: a request that adds nothing still passes, one byte not. */
    budget_charge(b, BUDGET_SHADOWS, BUDGET_NO_OWNER, 12 * MIB);
    ck_assert_int_eq(budget_check(b, BUDGET_REPLIES, 1, 0, 0, &err), 0);
    ck_assert_int_eq(budget_check(b, BUDGET_REPLIES, 1, 1, 1, &err), EMAD_ELIMIT);
    budget_release(b, BUDGET_SHADOWS, BUDGET_NO_OWNER, 12 * MIB);
    ck_assert_uint_eq(budget_total(b), 0);
    budget_destroy(b);
}
END_TEST

/* Settings from one flag; 0 or the error. */
static int
parse_flag(const char *flag, const char *value, settings *c)
{
    char prog[] = "emad", f[32], v[32];
    char *argv[] = {prog, f, v, NULL};
    settings_args a;
    char *cause = NULL;
    int rc;

    snprintf(f, sizeof(f), "%s", flag);
    snprintf(v, sizeof(v), "%s", value);
    rc = settings_parse_args(&a, 3, argv, &cause);
    if (rc == 0)
        rc = settings_build(c, &a, &cause); /* initializes c */
    else
        settings_init(c);
    settings_args_free(&a);
    free(cause);
    return rc;
}

START_TEST(test_budget_settings)
{
    settings c;

    ck_assert_int_eq(parse_flag("--max-memory", "2G", &c), 0);
    ck_assert_uint_eq(c.max_memory, 2ULL << 30);
    settings_free(&c);
    ck_assert_int_eq(parse_flag("--max-memory", "1T", &c), 0);
    ck_assert_uint_eq(c.max_memory, 1ULL << 40);
    settings_free(&c);
    ck_assert_int_eq(parse_flag("--max-memory", "auto", &c), 0);
    ck_assert_uint_eq(c.max_memory, 0);
    settings_free(&c);
    ck_assert_int_ne(parse_flag("--max-memory", "100K", &c), 0); /* below 1 MiB */
    settings_free(&c);
    ck_assert_int_ne(parse_flag("--max-memory", "lots", &c), 0);
    settings_free(&c);
    ck_assert_int_eq(parse_flag("--client-share", "25", &c), 0);
    ck_assert_uint_eq(c.client_share, 25);
    settings_free(&c);
    ck_assert_int_ne(parse_flag("--client-share", "0", &c), 0);
    settings_free(&c);
    ck_assert_int_ne(parse_flag("--client-share", "101", &c), 0);
    settings_free(&c);
}
END_TEST

int
main(void)
{
    const TTest *const tests[] = {test_budget_gauges_exact_and_back_to_zero,
                                  test_budget_txn_shadows_counted_as_data_arrives,
                                  test_budget_f16_with_8_decays,
                                  test_budget_multiwriter_chunks_charged_what_they_allocate,
                                  test_budget_owner_shares_of_slots,
                                  test_budget_owner_share_of_bytes,
                                  test_budget_replies_in_flight,
                                  test_budget_settings,
                                  NULL};

    return tu_run_tests("budget", tests);
}

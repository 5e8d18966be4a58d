/*
 * check_store_limits.c - what the store refuses at the door so that one
 * client can neither stall the loop nor leave a model that cannot be
 * snapshotted, and how those refusals look over the wire:
 * - slice overlaps found by sorting: one push of 65,536 one-element
 *   slices, and six writers' interleaved slices, are checked and applied
 *   (values checked), and an overlap among many slices is still found;
 * - a pull naming a tensor twice is EMAD_EDUP;
 * - seed obeys the model's nonfinite policy like a push;
 * - transaction and pull-session ids are random, and a wrong id is
 *   EMAD_ENOTXN / EMAD_ENOSESSION;
 * - a decay sent as a float32 selects the one decay that rounds to it;
 * - steps and update_after_step >= 2^63, the tensor name __metadata__,
 *   and tensors beyond a model's snapshot header budget are refused, and
 *   a model filled up to that budget with the costliest names is written
 *   as a snapshot and read back.
 * After every refusal the store (or the server) is checked to go on
 * working. Timings are not asserted: bench/bench_checks measures them.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "common/emaconf.h"
#include "common/safetensors.h"
#include "common/snapshot.h"
#include "daemon/server.h"
#include "store/store.h"
#include "reqpack.h"
#include "testutil.h"

static store *s;
static store_err err;
static store_result res;

/* A store with model "m": decay 0.5, `writers` writers, nonfinite policy nf. */
static void
make_store(uint32_t writers, int nf)
{
    emad_model_config cfg;
    int created;

    emaconf_init(&cfg);
    cfg.decays[0] = 0.5;
    cfg.writers = writers;
    cfg.nonfinite = nf;
    s = store_create();
    ck_assert_int_eq(store_create_model(s, "m", 1, &cfg, 0, &created, &err), 0);
}

/* An F32 param input: elements [start, start + n) of a 1-D tensor of numel elements. */
static store_input
f32(const char *name, const float *data, uint64_t numel, uint64_t start, uint64_t n)
{
    store_input in = {.name = name, .name_len = strlen(name), .kind = EMAD_PARAM};

    in.dtype = EMAD_F32;
    in.ndim = 1;
    in.shape[0] = numel;
    in.start = start;
    in.count = n == numel ? 0 : n;
    in.data = data;
    in.len = n * sizeof(float);
    return in;
}

/* Element i of tensor name's first shadow in model "m". */
static float
shadow(const char *name, size_t i)
{
    const model *m = store_model_find(s, "m", 1);
    float f = NAN;

    for (size_t k = 0; k < m->ntensors; k++)
        if (strcmp(m->tensors[k]->name, name) == 0)
            memcpy(&f, (const char *)m->tensors[k]->shadow[0]->data + 4 * i, 4);
    return f;
}

/* The store still takes a push of a new tensor at step (and its value is there). */
static void
assert_store_works(const char *name, uint64_t step)
{
    float v = 42;
    store_input in = f32(name, &v, 1, 0, 1);

    ck_assert_int_eq(store_push(s, "m", 1, step, 0, &in, 1, 0, &res, &err), 0);
    ck_assert_uint_eq(res.applied, 1);
    ck_assert_float_eq(shadow(name, 0), 42);
}

#define NSLICES 65536

START_TEST(test_limits_many_slices_in_one_push)
{
    /* 65,536 one-element slices, last first: checked by sorting, applied in full. */
    float *v = malloc(NSLICES * sizeof(float));
    store_input *in = malloc(NSLICES * sizeof(*in));

    make_store(1, EMAD_NONFINITE_REJECT);
    for (size_t i = 0; i < NSLICES; i++) {
        v[i] = (float)i;
        in[NSLICES - 1 - i] = f32("t", &v[i], NSLICES, i, 1);
    }
    ck_assert_int_eq(store_push(s, "m", 1, 1, 0, in, NSLICES, 0, &res, &err), 0);
    ck_assert_uint_eq(res.applied, 1);
    for (size_t i = 0; i < NSLICES; i += 4099)
        ck_assert_float_eq(shadow("t", i), (float)i);
    /* One slice among them moved onto its neighbour: EMAD_EOVERLAP naming both, nothing applied. */
    in[100] = f32("t", &v[10], NSLICES, NSLICES - 100, 2);
    ck_assert_int_eq(store_push(s, "m", 1, 2, 0, in, NSLICES, 0, &res, &err), EMAD_EOVERLAP);
    ck_assert_str_eq(err.tensor, "t");
    ck_assert_msg(strstr(err.message, "[65436, 65438) overlaps [65436, 65437)") != NULL ||
                      strstr(err.message, "[65436, 65437) overlaps [65436, 65438)") != NULL,
                  "%s", err.message);
    ck_assert_float_eq(shadow("t", 65436), 65436.0f);
    assert_store_works("after", 3);
    free(in);
    free(v);
    store_destroy(s);
}
END_TEST

#define NWRITERS 6
#define PER_WRITER 8192

START_TEST(test_limits_writers_slices_interleaved)
{
    /* Six writers, each every sixth element, last first; then an overlap across writers. */
    uint64_t numel = (uint64_t)NWRITERS * PER_WRITER;
    float *v = malloc(numel * sizeof(float));
    store_input *in = malloc(PER_WRITER * sizeof(*in));

    make_store(NWRITERS, EMAD_NONFINITE_REJECT);
    for (uint64_t i = 0; i < numel; i++)
        v[i] = (float)i;
    for (uint32_t w = 0; w < NWRITERS; w++) {
        for (size_t k = 0; k < PER_WRITER; k++) {
            uint64_t e = w + (PER_WRITER - 1 - k) * NWRITERS;
            in[k] = f32("t", &v[e], numel, e, 1);
        }
        if (w == 3) { /* a writer whose last slice lands on writer 0's element 0 */
            store_input bad = in[PER_WRITER - 1];
            in[PER_WRITER - 1] = f32("t", &v[0], numel, 0, 4);
            ck_assert_int_eq(store_push(s, "m", 1, 1, w, in, PER_WRITER, 0, &res, &err),
                             EMAD_EOVERLAP);
            ck_assert_ptr_nonnull(strstr(err.message, "[0, 4) overlaps [0, 1) pushed by writer 0"));
            in[PER_WRITER - 1] = bad;
        }
        ck_assert_int_eq(store_push(s, "m", 1, 1, w, in, PER_WRITER, 0, &res, &err), 0);
        ck_assert_int_eq(res.pending, w + 1 < NWRITERS);
    }
    ck_assert_uint_eq(res.applied, 1);
    for (uint64_t i = 0; i < numel; i += 997)
        ck_assert_float_eq(shadow("t", i), (float)i);
    free(in);
    free(v);
    store_destroy(s);
}
END_TEST

START_TEST(test_limits_txn_slices_in_order_and_not)
{
    /* A transaction's slices looked up by bisection while in order, by scanning once not. */
    float v[64];
    uint64_t id, staged;
    store_input in;

    make_store(1, EMAD_NONFINITE_REJECT);
    for (size_t i = 0; i < 64; i++)
        v[i] = (float)i;
    ck_assert_int_eq(store_txn_begin(s, "m", 1, 1, 0, 0, &id, &err), 0);
    for (size_t i = 0; i < 64; i += 4) {
        if (i == 32)
            continue; /* sent last, out of order */
        in = f32("t", &v[i], 64, i, 4);
        ck_assert_int_eq(store_txn_push(s, id, NULL, 0, 0, 0, &in, 1, 0, &staged, &err), 0);
        ck_assert_uint_eq(staged, 1);
    }
    in = f32("t", &v[8], 64, 8, 4); /* a resend */
    ck_assert_int_eq(store_txn_push(s, id, NULL, 0, 0, 0, &in, 1, 0, &staged, &err), 0);
    ck_assert_uint_eq(staged, 0);
    in = f32("t", &v[30], 64, 30, 4); /* over [28, 32) and the missing [32, 36) */
    ck_assert_int_eq(store_txn_push(s, id, NULL, 0, 0, 0, &in, 1, 0, &staged, &err), EMAD_EOVERLAP);
    ck_assert_ptr_nonnull(strstr(err.message, "[30, 34) overlaps [28, 32)"));
    in = f32("t", &v[62], 64, 62, 2); /* over the last slice */
    ck_assert_int_eq(store_txn_push(s, id, NULL, 0, 0, 0, &in, 1, 0, &staged, &err), EMAD_EOVERLAP);
    in = f32("t", &v[32], 64, 32, 4);
    ck_assert_int_eq(store_txn_push(s, id, NULL, 0, 0, 0, &in, 1, 0, &staged, &err), 0);
    in = f32("t", &v[33], 64, 33, 2); /* now out of order: found by the scan */
    ck_assert_int_eq(store_txn_push(s, id, NULL, 0, 0, 0, &in, 1, 0, &staged, &err), EMAD_EOVERLAP);
    in = f32("t", &v[32], 64, 32, 4); /* and its resend */
    ck_assert_int_eq(store_txn_push(s, id, NULL, 0, 0, 0, &in, 1, 0, &staged, &err), 0);
    ck_assert_uint_eq(staged, 0);
    ck_assert_int_eq(store_txn_commit(s, id, 0, &res, &err), 0);
    ck_assert_uint_eq(res.applied, 1);
    for (size_t i = 0; i < 64; i++)
        ck_assert_float_eq(shadow("t", i), (float)i);
    store_destroy(s);
}
END_TEST

START_TEST(test_limits_pull_refuses_repeated_names)
{
    const char *names[4] = {"a", "b", "a", "zz"};
    size_t lens[4] = {1, 1, 1, 2};
    float v = 1;
    store_input in[2] = {f32("a", &v, 1, 0, 1), f32("b", &v, 1, 0, 1)};
    store_view *view;

    make_store(1, EMAD_NONFINITE_REJECT);
    ck_assert_int_eq(store_push(s, "m", 1, 1, 0, in, 2, 0, &res, &err), 0);
    ck_assert_int_eq(store_view_create(s, "m", 1, names, lens, 3, NULL, &view, &err), EMAD_EDUP);
    ck_assert_str_eq(err.tensor, "a");
    ck_assert_ptr_nonnull(strstr(err.message, "named twice in one pull"));
    ck_assert_ptr_null(view);
    /* An unknown name is still EMAD_ENOTENSOR, naming it. */
    ck_assert_int_eq(store_view_create(s, "m", 1, names + 1, lens + 1, 3, NULL, &view, &err),
                     EMAD_ENOTENSOR);
    ck_assert_str_eq(err.tensor, "zz");
    /* The same names one at a time, and again in a later pull, are fine. */
    for (int rep = 0; rep < 2; rep++) {
        ck_assert_int_eq(store_view_create(s, "m", 1, names, lens, 2, NULL, &view, &err), 0);
        ck_assert_uint_eq(view->ntensors, 2);
        ck_assert_str_eq(view->tensors[1].name, "b");
        store_view_free(view);
    }
    store_destroy(s);
}
END_TEST

/* Seed t (2 elements) with data in dtype dt (F32, or as_dtype tensor in its shadow dtype). */
static int
seed2(const char *name, const float *data, uint64_t step)
{
    store_input in = f32(name, data, 2, 0, 2);

    in.as_dtype = EMAD_DTYPE_INVALID;
    return store_seed(s, "m", 1, step, &in, 1, 0, &res, &err);
}

START_TEST(test_limits_seed_obeys_nonfinite)
{
    float good[2] = {1, 2}, bad[2] = {3, NAN}, inf[2] = {INFINITY, 4};
    store_input in;

    /* reject: EMAD_ENONFINITE, the shadow keeps its values. */
    make_store(1, EMAD_NONFINITE_REJECT);
    ck_assert_int_eq(seed2("t", good, 1), 0);
    ck_assert_int_eq(seed2("t", bad, 2), EMAD_ENONFINITE);
    ck_assert_str_eq(err.tensor, "t");
    ck_assert_ptr_nonnull(strstr(err.message, "1 NaN or Inf value"));
    ck_assert_float_eq(shadow("t", 1), 2);
    /* The same for data in the shadow's dtype of a BF16 tensor (as_dtype). */
    in = f32("h", inf, 2, 0, 2);
    in.as_dtype = EMAD_BF16;
    ck_assert_int_eq(store_seed(s, "m", 1, 3, &in, 1, 0, &res, &err), EMAD_ENONFINITE);
    ck_assert_str_eq(err.tensor, "h");
    ck_assert_int_eq(seed2("t", good, 4), 0);
    ck_assert_uint_eq(res.applied, 1);
    store_destroy(s);

    /* skip: counted as skipped, the shadow keeps its values. */
    make_store(1, EMAD_NONFINITE_SKIP);
    ck_assert_int_eq(seed2("t", good, 1), 0);
    ck_assert_int_eq(seed2("t", bad, 2), 0);
    ck_assert_uint_eq(res.skipped, 1);
    ck_assert_uint_eq(res.applied, 0);
    ck_assert_float_eq(shadow("t", 0), 1);
    ck_assert_float_eq(shadow("t", 1), 2);
    store_destroy(s);

    /* allow: the values are taken. */
    make_store(1, EMAD_NONFINITE_ALLOW);
    ck_assert_int_eq(seed2("t", bad, 1), 0);
    ck_assert_uint_eq(res.applied, 1);
    ck_assert(isnan(shadow("t", 1)));
    store_destroy(s);
}
END_TEST

#define NIDS 16

START_TEST(test_limits_ids_are_random)
{
    uint64_t ids[NIDS], sessions[NIDS], staged;
    int sequential = 0;
    float v = 1;
    store_input in = f32("t", &v, 1, 0, 1);
    store_view *view;

    make_store(1, EMAD_NONFINITE_REJECT);
    ck_assert_int_eq(store_push(s, "m", 1, 1, 0, &in, 1, 0, &res, &err), 0);
    for (size_t i = 0; i < NIDS; i++) {
        ck_assert_int_eq(store_txn_begin(s, "m", 1, 10 + i, 0, 0, &ids[i], &err), 0);
        ck_assert_int_eq(store_view_create(s, "m", 1, NULL, NULL, 0, NULL, &view, &err), 0);
        ck_assert_int_eq(store_view_register(s, view, 0, &err), 0);
        sessions[i] = view->id;
    }
    for (size_t i = 0; i < NIDS; i++) {
        ck_assert_uint_ne(ids[i], 0);
        ck_assert_uint_ne(sessions[i], 0);
        for (size_t j = 0; j < i; j++) {
            ck_assert_uint_ne(ids[i], ids[j]);
            ck_assert_uint_ne(sessions[i], sessions[j]);
            /* Sequential ids differ by small amounts; random ones (almost) never do. */
            sequential += ids[i] - ids[j] + 1024 < 2048 || sessions[i] - sessions[j] + 1024 < 2048;
        }
        sequential += ids[i] - sessions[i] + 1024 < 2048;
    }
    ck_assert_int_eq(sequential, 0);
    /* A wrong id is unknown, and the victim's transaction and session are untouched. */
    ck_assert_int_eq(store_txn_push(s, ids[0] ^ 1, NULL, 0, 0, 0, &in, 1, 0, &staged, &err),
                     EMAD_ENOTXN);
    ck_assert_int_eq(store_txn_push(s, ids[0] + 1, NULL, 0, 0, 0, &in, 1, 0, &staged, &err),
                     EMAD_ENOTXN);
    ck_assert_int_eq(store_txn_commit(s, ids[0] - 1, 0, &res, &err), EMAD_ENOTXN);
    ck_assert_int_eq(store_txn_abort(s, 0, &err), EMAD_ENOTXN);
    ck_assert_ptr_null(store_view_get(s, sessions[0] + 1, 0));
    ck_assert_int_eq(store_view_release(s, sessions[0] ^ 1, &err), EMAD_ENOSESSION);
    ck_assert_int_eq(store_txn_push(s, ids[0], NULL, 0, 0, 0, &in, 1, 0, &staged, &err), 0);
    ck_assert_int_eq(store_txn_commit(s, ids[0], 0, &res, &err), 0);
    ck_assert_uint_eq(res.applied, 1);
    ck_assert_int_eq(store_view_release(s, sessions[0], &err), 0);
    store_destroy(s);
}
END_TEST

START_TEST(test_limits_float32_decay_selects_its_decay)
{
    emad_model_config cfg;
    double d;
    int created;

    s = store_create();
    emaconf_init(&cfg);
    cfg.ndecays = 3;
    cfg.decays[0] = 0.999;
    cfg.decays[1] = 0.9999;
    cfg.decays[2] = 0.5;
    ck_assert_int_eq(store_create_model(s, "m", 1, &cfg, 0, &created, &err), 0);
    /* float32(0.9999) is 0.9998999834060669: it selects the decay 0.9999. */
    ck_assert_int_eq(store_decay_from_f32(s, "m", 1, (double)0.9999f, &d, &err), 0);
    ck_assert(d == 0.9999);
    ck_assert_int_eq(store_decay_from_f32(s, "m", 1, (double)0.999f, &d, &err), 0);
    ck_assert(d == 0.999);
    ck_assert_int_eq(store_decay_from_f32(s, "m", 1, 0.5, &d, &err), 0);
    ck_assert(d == 0.5);
    ck_assert_int_eq(store_decay_from_f32(s, "m", 1, (double)0.99f, &d, &err), EMAD_ERANGE);
    ck_assert_ptr_nonnull(strstr(err.message, "no decay that rounds to the float32 0.99"));
    ck_assert_int_eq(store_decay_from_f32(s, "x", 1, 0.5, &d, &err), EMAD_ENOMODEL);
    /* Two decays that round to the same float32: ambiguous. */
    cfg.ndecays = 2;
    cfg.decays[0] = 0.9999;
    cfg.decays[1] = 0.99990001;
    ck_assert_int_eq(store_create_model(s, "two", 3, &cfg, 0, &created, &err), 0);
    ck_assert_int_eq(store_decay_from_f32(s, "two", 3, (double)0.9999f, &d, &err), EMAD_ERANGE);
    ck_assert_ptr_nonnull(strstr(err.message, "2 decays of model 'two' round to the float32"));
    ck_assert_ptr_nonnull(strstr(err.message, "send the decay as a float64"));
    store_destroy(s);
}
END_TEST

START_TEST(test_limits_steps_names_and_update_after_step)
{
    float v[2] = {1, 2};
    store_input in = f32("t", v, 1, 0, 1), meta = f32("__metadata__", v, 1, 0, 1);
    emad_model_config cfg;
    uint64_t id, staged;
    int created;

    make_store(1, EMAD_NONFINITE_REJECT);
    /* Steps: 2^63 and above are refused by push, seed and begin; 2^63 - 1 is the last. */
    ck_assert_int_eq(store_push(s, "m", 1, 1ULL << 63, 0, &in, 1, 0, &res, &err), EMAD_ERANGE);
    ck_assert_ptr_nonnull(strstr(err.message, "step 9223372036854775808 is out of range"));
    ck_assert_int_eq(store_push(s, "m", 1, UINT64_MAX, 0, &in, 1, 0, &res, &err), EMAD_ERANGE);
    ck_assert_int_eq(store_seed(s, "m", 1, 1ULL << 63, &in, 1, 0, &res, &err), EMAD_ERANGE);
    ck_assert_int_eq(store_txn_begin(s, "m", 1, 1ULL << 63, 0, 0, &id, &err), EMAD_ERANGE);
    ck_assert_uint_eq(store_model_find(s, "m", 1)->ntensors, 0);
    ck_assert_int_eq(store_push(s, "m", 1, (1ULL << 63) - 1, 0, &in, 1, 0, &res, &err), 0);
    ck_assert_uint_eq(res.step, (1ULL << 63) - 1);
    ck_assert_int_eq(store_txn_begin(s, "m", 1, (1ULL << 63) - 1, 0, 0, &id, &err), 0);
    /* __metadata__ is refused by push, seed and a transaction's chunk. */
    ck_assert_int_eq(store_push(s, "m", 1, 5, 0, &meta, 1, 0, &res, &err), EMAD_ENAME);
    ck_assert_ptr_nonnull(strstr(err.message, "'__metadata__' is reserved"));
    ck_assert_int_eq(store_seed(s, "m", 1, 5, &meta, 1, 0, &res, &err), EMAD_ENAME);
    ck_assert_int_eq(store_txn_push(s, id, NULL, 0, 0, 0, &meta, 1, 0, &staged, &err), EMAD_ENAME);
    meta.name_len = 11; /* "__metadata_" is an ordinary name */
    ck_assert_int_eq(store_push(s, "m", 1, 5, 0, &meta, 1, 0, &res, &err), 0);
    /* update_after_step: 2^63 - 1 at most, for create and configure. */
    emaconf_init(&cfg);
    cfg.update_after_step = 1ULL << 63;
    ck_assert_int_eq(store_create_model(s, "u", 1, &cfg, 0, &created, &err), EMAD_ERANGE);
    ck_assert_ptr_nonnull(strstr(err.message, "update_after_step 9223372036854775808"));
    ck_assert_int_eq(store_configure(s, "m", 1, &cfg, &err), EMAD_ERANGE);
    cfg.update_after_step = (1ULL << 63) - 1;
    ck_assert_int_eq(store_create_model(s, "u", 1, &cfg, 0, &created, &err), 0);
    assert_store_works("after", 7);
    store_destroy(s);
}
END_TEST

/*
 * The costliest tensors for a snapshot header: 1,024-byte names that are
 * mostly quotes and backslashes (escaped twice in emad_tensors), 16
 * dimensions of 19 digits (one of them 0: no data).
 */
static void
costly_input(store_input *in, char *name, size_t i)
{
    int len = snprintf(name, 16, "%07zu", i);

    for (size_t k = (size_t)len; k < EMAD_MAX_NAME_BYTES; k++)
        name[k] = k % 2 ? '"' : '\\';
    memset(in, 0, sizeof(*in));
    in->name = name;
    in->name_len = EMAD_MAX_NAME_BYTES;
    in->kind = EMAD_BUFFER;
    in->dtype = EMAD_BF16;
    in->ndim = EMAD_MAX_NDIM;
    for (uint32_t d = 1; d < EMAD_MAX_NDIM; d++)
        in->shape[d] = 1ULL << 62;
}

#define BATCH 1024

START_TEST(test_limits_full_model_still_snapshots)
{
    char *names = malloc((size_t)BATCH * EMAD_MAX_NAME_BYTES), *dir = tu_tmpdir(), path[512];
    char *cause = NULL;
    store_input *in = malloc(BATCH * sizeof(*in));
    emad_model_config cfg;
    snapshot_tensor *st;
    snapshot_file *f;
    unsigned char *file;
    size_t next = 0, n, flen;
    const model *m;
    int created;

    /* The rest of the header as large as it gets: 32 + 32 patterns of 256 escaped bytes. */
    emaconf_init(&cfg);
    cfg.ncopy = cfg.nignore = EMAD_MAX_GLOBS;
    for (size_t k = 0; k < EMAD_MAX_GLOBS; k++) {
        char *p = calloc(1, EMAD_MAX_GLOB_BYTES + 1);
        memset(p, '"', EMAD_MAX_GLOB_BYTES);
        p[0] = 'Z';
        p[1] = (char)('A' + k % 26);
        p[2] = (char)('A' + k / 26);
        cfg.copy[k] = cfg.ignore[k] = p;
    }
    s = store_create();
    ck_assert_int_eq(store_create_model(s, "m", 1, &cfg, 0, &created, &err), 0);
    m = store_model_find(s, "m", 1);
    /* Fill the model in batches, then one by one, until it refuses. */
    for (size_t batch = BATCH; batch > 0;) {
        for (size_t k = 0; k < batch; k++)
            costly_input(&in[k], names + k * EMAD_MAX_NAME_BYTES, next + k);
        if (store_push(s, "m", 1, (1ULL << 63) - 1, 0, in, batch, 0, &res, &err) == 0) {
            next += batch;
            continue;
        }
        ck_assert_int_eq(err.code, EMAD_ELIMIT);
        ck_assert_ptr_nonnull(strstr(err.message, "snapshot header would exceed 99000000"));
        batch = batch > 1 ? 1 : 0;
    }
    n = m->ntensors;
    ck_assert_uint_eq(n, next);
    ck_assert_uint_gt(n, 14000);
    ck_assert_uint_le(m->header_bytes, STORE_MAX_HEADER_BYTES);
    /* The full model is written as a snapshot (header under the limit) and reads back. */
    st = calloc(n, sizeof(*st));
    for (size_t i = 0; i < n; i++) {
        const tensor *t = m->tensors[i];
        st[i] = (snapshot_tensor){.name = t->name,
                                  .kind = t->kind,
                                  .dtype = t->dtype,
                                  .sdtype = t->sdtype,
                                  .averaged = t->averaged,
                                  .ndim = t->ndim,
                                  .step = t->step,
                                  .data = t->shadow[0]->data,
                                  .nbytes = 0};
        memcpy(st[i].shape, t->shape, sizeof(st[i].shape));
    }
    snprintf(path, sizeof(path), "%s/full.safetensors", dir);
    ck_assert_msg(snapshot_write_path(path, &(snapshot_meta){"m", m->step, 0, &m->cfg}, st, n, NULL,
                                      &cause) == 0,
                  "%s", cause);
    file = tu_read_file(path, &flen);
    ck_assert_ptr_nonnull(file);
    printf("full model: %zu tensors, header %llu bytes, counted %llu\n", n,
           (unsigned long long)tu_load_u64le(file), (unsigned long long)m->header_bytes);
    ck_assert_uint_le(tu_load_u64le(file), SAFETENSORS_MAX_HEADER);
    /* The count is an upper bound of what the tensors take: the rest fits in 1,000,000. */
    ck_assert_uint_le(tu_load_u64le(file), m->header_bytes + 1000000);
    free(file);
    ck_assert_msg(snapshot_read(path, &f, &cause) == 0, "%s", cause);
    ck_assert_uint_eq(f->ntensors, n);
    snapshot_file_free(f);
    /* Existing tensors still take pushes; other models still take new tensors. */
    costly_input(&in[0], names, 0);
    ck_assert_int_eq(store_push(s, "m", 1, (1ULL << 63) - 1, 0, in, 1, 0, &res, &err), 0);
    ck_assert_uint_eq(res.stale, 1);
    ck_assert_int_eq(store_create_model(s, "n", 1, &cfg, 0, &created, &err), 0);
    ck_assert_int_eq(store_push(s, "n", 1, 1, 0, in, 1, 0, &res, &err), 0);
    ck_assert_uint_eq(res.applied, 1);
    free(st);
    free(in);
    free(names);
    store_destroy(s);
    for (size_t k = 0; k < EMAD_MAX_GLOBS; k++)
        free((char *)cfg.copy[k]);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

/* Over the wire: requests packed with reqpack, handled by an offline server (server_process()). */
static server *srv;
static rq w;
static msgpack_unpacked wr;
static void *wr_buf;
static char wmsg[600];

/* A value of a reply map, or NULL. */
static const msgpack_object *
w_get(const msgpack_object *map, const char *key)
{
    for (uint32_t i = 0; map->type == MSGPACK_OBJECT_MAP && i < map->via.map.size; i++)
        if (map->via.map.ptr[i].key.via.str.size == strlen(key) &&
            memcmp(map->via.map.ptr[i].key.via.str.ptr, key, strlen(key)) == 0)
            return &map->via.map.ptr[i].val;
    return NULL;
}

/* Send the request; the reply stays in wr. Returns 0 if ok, else -code (message in wmsg). */
static int
w_send(void)
{
    const msgpack_object *e;
    size_t len = 0, off = 0;

    free(wr_buf);
    wr_buf = NULL;
    server_process(srv, w.sb.data, w.sb.size, &wr_buf, &len);
    ck_assert_int_eq(msgpack_unpack_next(&wr, wr_buf, len, &off), MSGPACK_UNPACK_SUCCESS);
    if (w_get(&wr.data, "ok")->via.boolean)
        return 0;
    e = w_get(&wr.data, "error");
    snprintf(wmsg, sizeof(wmsg), "%.*s", (int)w_get(e, "message")->via.str.size,
             w_get(e, "message")->via.str.ptr);
    return -(int)w_get(e, "code")->via.u64;
}

/* The server answers hello. */
static void
w_serving(void)
{
    rq_begin(&w, "hello", 0);
    ck_assert_int_eq(w_send(), 0);
}

/* Push one F32 param `name` of one element v at step. */
static int
w_push(const char *name, uint64_t step, float v)
{
    rq_begin_push(&w, "m", step, 1);
    rq_tensor(&w, 5, name, "param", "F32", NULL, 0, &v, sizeof(v));
    return w_send();
}

static void
w_setup(void)
{
    server_config cfg;

    server_config_init(&cfg);
    cfg.max_message_bytes = 1 << 20;
    srv = server_create_offline(&cfg);
    rq_init(&w);
    msgpack_unpacked_init(&wr);
    rq_begin(&w, "create", 2);
    rq_kv_str(&w, "model", "m");
    rq_str(&w, "decays");
    msgpack_pack_array(&w.pk, 2);
    msgpack_pack_double(&w.pk, 0.999);
    msgpack_pack_double(&w.pk, 0.9999);
    ck_assert_int_eq(w_send(), 0);
}

static void
w_teardown(void)
{
    msgpack_unpacked_destroy(&wr);
    free(wr_buf);
    wr_buf = NULL;
    rq_free(&w);
    server_destroy(srv);
}

/* Pull tensor w of model m with this decay, sent as a float32 when f32: its value, or NAN. */
static float
w_pull(double decay, int f32)
{
    const msgpack_object *t;
    float v = NAN;

    rq_begin(&w, "pull", 2);
    rq_kv_str(&w, "model", "m");
    rq_str(&w, "decay");
    if (f32)
        msgpack_pack_float(&w.pk, (float)decay);
    else
        msgpack_pack_double(&w.pk, decay);
    if (w_send() != 0)
        return NAN;
    t = w_get(&w_get(&wr.data, "tensors")->via.array.ptr[0], "data");
    ck_assert_uint_eq(t->via.bin.size, 4);
    memcpy(&v, t->via.bin.ptr, 4);
    return v;
}

START_TEST(test_limits_wire_float32_decay)
{
    float d64, d32;

    ck_assert_int_eq(w_push("w", 1, 1), 0);
    ck_assert_int_eq(w_push("w", 2, 3), 0);
    /* float32 0.9999 selects the 0.9999 shadow, not the 0.999 one. */
    d64 = w_pull(0.9999, 0);
    d32 = w_pull(0.9999, 1);
    ck_assert(!isnan(d32));
    ck_assert_uint_eq(tu_f32_bits(d32), tu_f32_bits(d64));
    ck_assert_uint_ne(tu_f32_bits(d32), tu_f32_bits(w_pull(0.999, 0)));
    ck_assert_uint_eq(tu_f32_bits(w_pull(0.999, 1)), tu_f32_bits(w_pull(0.999, 0)));
    /* A float32 no decay rounds to: EMAD_ERANGE, and the server goes on. */
    ck_assert(isnan(w_pull(0.99, 1)));
    ck_assert_int_eq(-(int)w_get(w_get(&wr.data, "error"), "code")->via.u64, EMAD_ERANGE);
    ck_assert_ptr_nonnull(strstr(wmsg, "rounds to the float32"));
    w_serving();
}
END_TEST

START_TEST(test_limits_wire_refusals_keep_serving)
{
    ck_assert_int_eq(w_push("w", 1ULL << 63, 1), EMAD_ERANGE);
    ck_assert_ptr_nonnull(strstr(wmsg, "step 9223372036854775808 is out of range"));
    w_serving();
    ck_assert_int_eq(w_push("__metadata__", 1, 1), EMAD_ENAME);
    w_serving();
    rq_begin(&w, "begin", 2);
    rq_kv_str(&w, "model", "m");
    rq_kv_u64(&w, "step", UINT64_MAX);
    ck_assert_int_eq(w_send(), EMAD_ERANGE);
    w_serving();
    rq_begin(&w, "create", 2);
    rq_kv_str(&w, "model", "u");
    rq_kv_u64(&w, "update_after_step", 1ULL << 63);
    ck_assert_int_eq(w_send(), EMAD_ERANGE);
    ck_assert_ptr_nonnull(strstr(wmsg, "update_after_step"));
    w_serving();
    ck_assert_int_eq(w_push("w", 1, 1), 0);
    /* A pull naming w twice: EMAD_EDUP. */
    rq_begin(&w, "pull", 2);
    rq_kv_str(&w, "model", "m");
    rq_str(&w, "tensors");
    msgpack_pack_array(&w.pk, 3);
    for (int k = 0; k < 3; k++)
        rq_str(&w, "w");
    ck_assert_int_eq(w_send(), EMAD_EDUP);
    ck_assert_ptr_nonnull(strstr(wmsg, "named twice"));
    w_serving();
    /* A commit or a release of an id nobody was given: EMAD_ENOTXN, EMAD_ENOSESSION. */
    rq_begin(&w, "commit", 1);
    rq_kv_u64(&w, "txn", 1);
    ck_assert_int_eq(w_send(), EMAD_ENOTXN);
    rq_begin(&w, "release", 1);
    rq_kv_u64(&w, "session", 2);
    ck_assert_int_eq(w_send(), EMAD_ENOSESSION);
    w_serving();
    ck_assert_int_eq(w_push("w", 2, 3), 0);
    ck_assert(w_pull(0.999, 0) > 1.0f);
}
END_TEST

static Suite *
limits_suite(void)
{
    Suite *su = suite_create("store_limits");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_limits_many_slices_in_one_push);
    tcase_add_test(tc, test_limits_writers_slices_interleaved);
    tcase_add_test(tc, test_limits_txn_slices_in_order_and_not);
    tcase_add_test(tc, test_limits_pull_refuses_repeated_names);
    tcase_add_test(tc, test_limits_seed_obeys_nonfinite);
    tcase_add_test(tc, test_limits_ids_are_random);
    tcase_add_test(tc, test_limits_float32_decay_selects_its_decay);
    tcase_add_test(tc, test_limits_steps_names_and_update_after_step);
    tcase_add_test(tc, test_limits_full_model_still_snapshots);
    suite_add_tcase(su, tc);
    tc = tcase_create("wire");
    tcase_add_checked_fixture(tc, w_setup, w_teardown);
    tcase_add_test(tc, test_limits_wire_float32_decay);
    tcase_add_test(tc, test_limits_wire_refusals_keep_serving);
    suite_add_tcase(su, tc);
    return su;
}

int
main(void)
{
    SRunner *sr = srunner_create(limits_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

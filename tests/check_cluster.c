/*
 * check_cluster.c - unit tests of the cluster building blocks shared by the
 * daemon and libemad: the shard-map parser (src/common/shardmap.c) and the
 * placement (src/common/placement.c). Expected placements were computed by
 * tests/placement_ref.py, a separate implementation of the documented rule
 * (the arguments are in each test's comment); FNV-1a values are the
 * published test vectors.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/placement.h"
#include "common/shardmap.h"
#include "testutil.h"

/* Parse text, expect success. */
static shardmap *
parse_ok(const char *text)
{
    shardmap *m = NULL;
    char *cause = NULL;
    int rc = shardmap_parse(text, strlen(text), &m, &cause);

    ck_assert_msg(rc == 0, "parse failed: %s", cause ? cause : "?");
    free(cause);
    return m;
}

/* Parse text, expect EMAD_EINVAL with a cause containing want. */
static void
parse_bad(const char *text, const char *want)
{
    shardmap *m = NULL;
    char *cause = NULL;

    ck_assert_int_eq(shardmap_parse(text, strlen(text), &m, &cause), EMAD_EINVAL);
    ck_assert_ptr_null(m);
    ck_assert_ptr_nonnull(cause);
    ck_assert_msg(strstr(cause, want) != NULL, "cause '%s' lacks '%s'", cause, want);
    free(cause);
}

START_TEST(test_shardmap_parses_the_documented_example)
{
    shardmap *m = parse_ok("# emad shard map\n"
                           "epoch 3                 # bumped on every reshard\n"
                           "ack 1\n"
                           "shard 1 tcp://10.0.0.3:7470 tcp://10.0.0.4:7470\n"
                           "\n"
                           "shard 0 tcp://10.0.0.1:7470\ttcp://10.0.0.2:7470\r\n");
    uint32_t s, r;

    ck_assert_uint_eq(m->epoch, 3);
    ck_assert_uint_eq(m->ack, 1);
    ck_assert_uint_eq(m->shards, 2);
    ck_assert_uint_eq(m->replicas, 2);
    ck_assert_str_eq(shardmap_url(m, 0, 0), "tcp://10.0.0.1:7470");
    ck_assert_str_eq(shardmap_url(m, 0, 1), "tcp://10.0.0.2:7470");
    ck_assert_str_eq(shardmap_url(m, 1, 0), "tcp://10.0.0.3:7470");
    ck_assert_str_eq(shardmap_url(m, 1, 1), "tcp://10.0.0.4:7470");
    ck_assert_int_eq(shardmap_find(m, "tcp://10.0.0.4:7470", &s, &r), 0);
    ck_assert_uint_eq(s, 1);
    ck_assert_uint_eq(r, 1);
    ck_assert_int_eq(shardmap_find(m, "tcp://10.0.0.5:7470", &s, &r), -1);
    shardmap_destroy(m);
}
END_TEST

START_TEST(test_shardmap_inline_form_and_defaults)
{
    shardmap *m = parse_ok("epoch 18446744073709551615; shard 0 ipc:///tmp/a;shard 1 ipc:///tmp/b");

    ck_assert_uint_eq(m->epoch, UINT64_MAX);
    ck_assert_uint_eq(m->ack, 1);
    ck_assert_uint_eq(m->shards, 2);
    ck_assert_uint_eq(m->replicas, 1);
    ck_assert_str_eq(shardmap_url(m, 1, 0), "ipc:///tmp/b");
    shardmap_destroy(m);
}
END_TEST

START_TEST(test_shardmap_errors_name_the_line)
{
    parse_bad("epoch 1\nshard 0 tcp://a:1\nshard 0 tcp://b:1\n", "line 3: shard 0 is listed twice");
    parse_bad("epoch 0\nshard 0 tcp://a:1\n", "line 1: 'epoch' needs one number");
    parse_bad("epoch -1\nshard 0 tcp://a:1\n", "line 1:");
    parse_bad("epoch 1x\nshard 0 tcp://a:1\n", "line 1:");
    parse_bad("epoch 18446744073709551616\nshard 0 tcp://a:1\n", "line 1:");
    parse_bad("epoch 1\nepoch 2\nshard 0 tcp://a:1\n", "line 2: 'epoch' given twice");
    parse_bad("epoch 1\n\n\nbogus 3\n", "line 4: unknown directive 'bogus'");
    parse_bad("epoch 1\nshard 0\n", "line 2: 'shard' needs an index");
    parse_bad("epoch 1\nshard x tcp://a:1\n", "line 2: shard index 'x'");
    parse_bad("epoch 1\nshard 1024 tcp://a:1\n", "line 2: shard index '1024'");
    parse_bad("epoch 1\nshard 0 localhost:7470\n", "line 2: 'localhost:7470' is not a URL");
    parse_bad("epoch 1\nshard 0 tcp://a:1 tcp://b:1 tcp://c:1 tcp://d:1 tcp://e:1 tcp://f:1 "
              "tcp://g:1 tcp://h:1 tcp://i:1 tcp://j:1 tcp://k:1 tcp://l:1 tcp://m:1 tcp://n:1 "
              "tcp://o:1 tcp://p:1 tcp://q:1\n",
              "line 2: more than 16 replicas");
    parse_bad("epoch 1\nack 0\nshard 0 tcp://a:1\n", "line 2: 'ack' needs one number");
    parse_bad("shard 0 tcp://a:1\n", "no 'epoch' line");
    parse_bad("epoch 1\n", "no 'shard' line");
    parse_bad("", "no 'epoch' line");
    parse_bad("epoch 1\nshard 0 tcp://a:1\nshard 2 tcp://c:1\n", "shard 1 is missing");
    parse_bad("epoch 1\nshard 0 tcp://a:1 tcp://b:1\nshard 1 tcp://c:1\n",
              "shard 1 has 1 replicas but shard 0 has 2");
    parse_bad("epoch 1\nack 3\nshard 0 tcp://a:1 tcp://b:1\n", "ack 3 is more than the 2");
    parse_bad("epoch 1\nshard 0 tcp://a:1\nshard 1 tcp://a:1\n", "URL tcp://a:1 appears twice");
    parse_bad("epoch 1; shard 0 tcp://a:1 tcp://a:1", "URL tcp://a:1 appears twice");
}
END_TEST

START_TEST(test_shardmap_rejects_nul_and_oversize)
{
    static const char text[] = "epoch 1\nshard 0 tcp://a:1\0\n";
    size_t big = EMAD_CLUSTER_MAX_MAP_BYTES + 1;
    char *buf = malloc(big);
    shardmap *m = NULL;
    char *cause = NULL;

    ck_assert_int_eq(shardmap_parse(text, sizeof(text) - 1, &m, &cause), EMAD_EINVAL);
    ck_assert_ptr_nonnull(strstr(cause, "NUL"));
    memset(buf, '\n', big);
    ck_assert_int_eq(shardmap_parse(buf, big, &m, &cause), EMAD_EINVAL);
    ck_assert_ptr_nonnull(strstr(cause, "at most"));
    free(cause);
    free(buf);
}
END_TEST

START_TEST(test_shardmap_load_reads_files_and_inline_text)
{
    char *dir = tu_tmpdir(), path[512], *cause = NULL;
    shardmap *m = NULL;
    static const char text[] = "epoch 2\nack 2\nshard 0 tcp://127.0.0.1:1 tcp://127.0.0.1:2\n";

    snprintf(path, sizeof(path), "%s/map", dir);
    ck_assert_int_eq(tu_write_file(path, text, strlen(text)), 0);
    ck_assert_int_eq(shardmap_load(path, &m, &cause), 0);
    ck_assert_uint_eq(m->epoch, 2);
    ck_assert_uint_eq(m->ack, 2);
    ck_assert_uint_eq(m->replicas, 2);
    shardmap_destroy(m);
    ck_assert_int_eq(shardmap_load("epoch 4; shard 0 tcp://x:1", &m, &cause), 0);
    ck_assert_uint_eq(m->epoch, 4);
    shardmap_destroy(m);
    snprintf(path, sizeof(path), "%s/missing", dir);
    ck_assert_int_eq(shardmap_load(path, &m, &cause), EMAD_EIO);
    ck_assert_ptr_nonnull(strstr(cause, "cannot open shard map"));
    snprintf(path, sizeof(path), "%s/bad", dir);
    ck_assert_int_eq(tu_write_file(path, "epoch 1\nshard 0 nope\n", 21), 0);
    ck_assert_int_eq(shardmap_load(path, &m, &cause), EMAD_EINVAL);
    ck_assert_msg(strstr(cause, "/bad: line 2:") != NULL, "%s", cause);
    free(cause);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_placement_hash_is_fnv1a_64)
{
    ck_assert_uint_eq(placement_hash("", 0), 0xcbf29ce484222325ULL);
    ck_assert_uint_eq(placement_hash("a", 1), 0xaf63dc4c8601ec8cULL);
    ck_assert_uint_eq(placement_hash("foobar", 6), 0x85944171f73967e8ULL);
    ck_assert_uint_eq(placement_hash("layer.0.weight", 14), 0x7b3e0c79a947673aULL);
}
END_TEST

/* A 1-D tensor of numel elements of dtype. */
static emad_tensor
tensor(const char *name, int dtype, uint64_t numel)
{
    emad_tensor t = {0};

    t.name = name;
    t.dtype = dtype;
    t.ndim = 1;
    t.shape[0] = numel;
    return t;
}

/* Expected piece: tensor index, shard, offset, count, whole. */
typedef struct want {
    size_t tensor;
    uint32_t shard;
    uint64_t offset, count;
    int whole;
} want;

/* Plan ts on shards and compare with w[0..nw). */
static void
check_plan(uint32_t shards, const emad_tensor *ts, size_t n, const want *w, size_t nw)
{
    emad_piece *p = NULL;
    size_t np = 0;

    ck_assert_int_eq(placement_plan(shards, ts, n, &p, &np), 0);
    ck_assert_uint_eq(np, nw);
    for (size_t i = 0; i < nw; i++) {
        ck_assert_uint_eq(p[i].tensor, w[i].tensor);
        ck_assert_uint_eq(p[i].shard, w[i].shard);
        ck_assert_uint_eq(p[i].offset, w[i].offset);
        ck_assert_uint_eq(p[i].count, w[i].count);
        ck_assert_int_eq(p[i].whole, w[i].whole);
    }
    free(p);
}

START_TEST(test_placement_matches_the_reference_on_four_and_three_shards)
{
    /* placement_ref.py 4|3 layer.0.weight:4:1048577 bn.running_mean:4:64
       model.embed_tokens.weight:2:3000001 w:4:1048575 b:8:524288 */
    emad_tensor ts[5];
    static const want w4[] = {
        {0, 2, 0, 262145, 0},      {0, 3, 262145, 262144, 0},  {0, 0, 524289, 262144, 0},
        {0, 1, 786433, 262144, 0}, {1, 0, 0, 64, 1},           {2, 2, 0, 750001, 0},
        {2, 3, 750001, 750000, 0}, {2, 0, 1500001, 750000, 0}, {2, 1, 2250001, 750000, 0},
        {3, 2, 0, 1048575, 1},     {4, 1, 0, 131072, 0},       {4, 2, 131072, 131072, 0},
        {4, 3, 262144, 131072, 0}, {4, 0, 393216, 131072, 0},
    };
    static const want w3[] = {
        {0, 2, 0, 349526, 0},        {0, 0, 349526, 349526, 0},
        {0, 1, 699052, 349525, 0},   {1, 0, 0, 64, 1},
        {2, 1, 0, 1000001, 0},       {2, 2, 1000001, 1000000, 0},
        {2, 0, 2000001, 1000000, 0}, {3, 0, 0, 1048575, 1},
        {4, 1, 0, 174763, 0},        {4, 2, 174763, 174763, 0},
        {4, 0, 349526, 174762, 0},
    };

    ts[0] = tensor("layer.0.weight", EMAD_F32, 1048577);
    ts[1] = tensor("bn.running_mean", EMAD_F32, 64);
    ts[2] = tensor("model.embed_tokens.weight", EMAD_BF16, 3000001);
    ts[3] = tensor("w", EMAD_F32, 1048575); /* one element under 4 MiB: whole */
    ts[4] = tensor("b", EMAD_F64, 524288);  /* exactly 4 MiB: cut */
    check_plan(4, ts, 5, w4, sizeof(w4) / sizeof(w4[0]));
    check_plan(3, ts, 5, w3, sizeof(w3) / sizeof(w3[0]));
}
END_TEST

START_TEST(test_placement_one_shard_and_shapes)
{
    emad_tensor ts[2];
    static const want w1[] = {{0, 0, 0, 2097152, 1}, {1, 0, 0, 1, 1}};
    /* placement_ref.py 2 layer.0.weight:4:2097152 a:4:1 */
    static const want w2[] = {{0, 0, 0, 1048576, 0}, {0, 1, 1048576, 1048576, 0}, {1, 0, 0, 1, 1}};

    /* A 2-D tensor counts its elements: 1024 x 2048 F32 = 8 MiB. */
    ts[0] = tensor("layer.0.weight", EMAD_F32, 1024);
    ts[0].ndim = 2;
    ts[0].shape[1] = 2048;
    ts[1] = tensor("a", EMAD_F32, 0);
    ts[1].ndim = 0; /* a scalar: one element */
    check_plan(1, ts, 2, w1, 2);
    check_plan(2, ts, 2, w2, 3);
}
END_TEST

START_TEST(test_placement_rejects_bad_input)
{
    emad_tensor t = tensor("x", EMAD_F32, 4);
    emad_piece *p = (emad_piece *)&t;
    size_t np = 7;

    ck_assert_int_eq(placement_plan(0, &t, 1, &p, &np), EMAD_EINVAL);
    ck_assert_ptr_null(p);
    ck_assert_uint_eq(np, 0);
    ck_assert_int_eq(placement_plan(EMAD_CLUSTER_MAX_SHARDS + 1, &t, 1, &p, &np), EMAD_EINVAL);
    t.dtype = EMAD_DTYPE_INVALID;
    ck_assert_int_eq(placement_plan(2, &t, 1, &p, &np), EMAD_EINVAL);
    t = tensor("x", EMAD_F64, UINT64_MAX / 4);
    ck_assert_int_eq(placement_plan(2, &t, 1, &p, &np), EMAD_EINVAL);
    t.name = NULL;
    ck_assert_int_eq(placement_plan(2, &t, 1, &p, &np), EMAD_EINVAL);
    ck_assert_int_eq(placement_plan(2, NULL, 0, &p, &np), 0);
    ck_assert_uint_eq(np, 0);
    free(p);
}
END_TEST

START_TEST(test_piece_names_round_trip)
{
    char buf[EMAD_MAX_NAME_BYTES + 1], big[EMAD_MAX_NAME_BYTES + 1];
    uint64_t shape[EMAD_MAX_NDIM] = {1024, 2048, 3}, off = 0, got[EMAD_MAX_NDIM];
    size_t name_len = 0;
    uint32_t nd = 0;
    int n = placement_piece_name(buf, sizeof(buf), "enc#piece/x", 524289, 3, shape);

    ck_assert_int_eq(n, (int)strlen("enc#piece/x#piece/524289/1024x2048x3"));
    ck_assert_str_eq(buf, "enc#piece/x#piece/524289/1024x2048x3");
    ck_assert_int_eq(placement_parse_piece(buf, (size_t)n, &name_len, &off, &nd, got), 1);
    ck_assert_uint_eq(name_len, strlen("enc#piece/x"));
    ck_assert_uint_eq(off, 524289);
    ck_assert_uint_eq(nd, 3);
    ck_assert_uint_eq(got[0], 1024);
    ck_assert_uint_eq(got[1], 2048);
    ck_assert_uint_eq(got[2], 3);
    /* Ordinary names and near misses are not pieces. */
    ck_assert_int_eq(placement_parse_piece("layer.weight", 12, &name_len, &off, &nd, got), 0);
    ck_assert_int_eq(placement_parse_piece("#piece/1/2", 10, &name_len, &off, &nd, got), 0);
    ck_assert_int_eq(placement_parse_piece("w#piece/1/2x", 12, &name_len, &off, &nd, got), 0);
    ck_assert_int_eq(placement_parse_piece("w#piece/1/2y3", 13, &name_len, &off, &nd, got), 0);
    ck_assert_int_eq(placement_parse_piece("w#piece//2", 10, &name_len, &off, &nd, got), 0);
    ck_assert_int_eq(
        placement_parse_piece("w#piece/99999999999999999999/2", 30, &name_len, &off, &nd, got), 0);
    /* A name too long for the suffix is refused. */
    memset(big, 'n', EMAD_MAX_NAME_BYTES - 5);
    big[EMAD_MAX_NAME_BYTES - 5] = '\0';
    ck_assert_int_eq(placement_piece_name(buf, sizeof(buf), big, 0, 1, shape), -1);
}
END_TEST

int
main(void)
{
    const TTest *const tests[] = {
        test_shardmap_parses_the_documented_example,
        test_shardmap_inline_form_and_defaults,
        test_shardmap_errors_name_the_line,
        test_shardmap_rejects_nul_and_oversize,
        test_shardmap_load_reads_files_and_inline_text,
        test_placement_hash_is_fnv1a_64,
        test_placement_matches_the_reference_on_four_and_three_shards,
        test_placement_one_shard_and_shapes,
        test_placement_rejects_bad_input,
        test_piece_names_round_trip,
        NULL,
    };

    return tu_run_tests("cluster", tests);
}

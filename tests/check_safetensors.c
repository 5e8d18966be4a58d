/*
 * check_safetensors.c - tests for src/common/safetensors.c: round trips of every
 * dtype (scalars and empty tensors included) and of metadata, the writer's
 * layout (metadata first, dtype size then name order, padding, alignment)
 * and atomicity, every malformed-file rule of the reader with its error
 * message, and cross-checks against tests/safetensors_np.py, an
 * independent numpy reader/writer: the C reader parses files numpy wrote
 * and numpy parses files C wrote. The numpy tests fail, not skip, without
 * Python 3 and numpy.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common/dtype.h"
#include "common/safetensors.h"
#include "testutil.h"

/* An safetensors_meta initializer from string literals (safetensors_meta's fields are not const).
 */
#define META(k, v)                                                                                 \
    {                                                                                              \
        (char *)(k), (char *)(v)                                                                   \
    }

/*
 * A file image: 8-byte little-endian length n, then the header text, then
 * data_len data bytes (0x5a). The caller frees it; its length is *len.
 */
static unsigned char *
image_n(uint64_t n, const char *header, size_t data_len, size_t *len)
{
    size_t hlen = strlen(header);
    unsigned char *buf = malloc(8 + hlen + data_len + 1);

    ck_assert_ptr_nonnull(buf);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(n >> (8 * i));
    memcpy(buf + 8, header, hlen);
    memset(buf + 8 + hlen, 0x5a, data_len);
    *len = 8 + hlen + data_len;
    return buf;
}

/* A file image whose length field is the header's real length. */
static unsigned char *
image(const char *header, size_t data_len, size_t *len)
{
    return image_n(strlen(header), header, data_len, len);
}

/* Assert that parsing buf fails with EMAD_EFORMAT and a message containing needle. */
static void
expect_error_buf(const void *buf, size_t len, const char *needle)
{
    safetensors_file *f = (safetensors_file *)1;
    char *cause = NULL;
    int rc = safetensors_parse(&f, buf, len, &cause);

    ck_assert_msg(rc == EMAD_EFORMAT, "expected EMAD_EFORMAT (\"%s\"), got %d", needle, rc);
    ck_assert_ptr_null(f);
    ck_assert_ptr_nonnull(cause);
    ck_assert_msg(strstr(cause, needle) != NULL, "message \"%s\" lacks \"%s\"", cause, needle);
    free(cause);
}

/* Assert that header + data_len data bytes fail to parse with a message containing needle. */
static void
expect_error(const char *header, size_t data_len, const char *needle)
{
    size_t len;
    unsigned char *buf = image(header, data_len, &len);

    expect_error_buf(buf, len, needle);
    free(buf);
}

/* Parse header + data_len data bytes, asserting success; the caller frees the result. */
static safetensors_file *
expect_ok(const char *header, size_t data_len)
{
    size_t len;
    unsigned char *buf = image(header, data_len, &len);
    safetensors_file *f = NULL;
    char *cause = NULL;
    int rc = safetensors_parse(&f, buf, len, &cause);

    ck_assert_msg(rc == 0, "header %s: unexpected error %d: %s", header, rc,
                  cause != NULL ? cause : "(no message)");
    ck_assert_ptr_null(cause);
    ck_assert_ptr_nonnull(f);
    free(buf);
    return f;
}

/* Fill buf[0..n) with pseudo-random bytes from *state. */
static void
fill_random(void *buf, size_t n, uint64_t *state)
{
    unsigned char *p = buf;

    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(tu_rand(state) >> 56);
}

/* A tensor description for the tests; data malloc'd (freed by free_tensors). */
static safetensors_tensor
make_tensor(const char *name, int dtype, uint32_t ndim, const uint64_t *shape, uint64_t *rng)
{
    safetensors_tensor t;
    uint64_t nbytes = dtype_size(dtype);

    memset(&t, 0, sizeof(t));
    t.name = (char *)name;
    t.dtype = dtype;
    t.ndim = ndim;
    for (uint32_t i = 0; i < ndim; i++) {
        t.shape[i] = shape[i];
        nbytes *= shape[i];
    }
    t.nbytes = nbytes;
    t.data = malloc(nbytes > 0 ? (size_t)nbytes : 1);
    ck_assert_ptr_nonnull(t.data);
    fill_random((void *)t.data, (size_t)nbytes, rng);
    return t;
}

/* Free the data of n tensors made by make_tensor. */
static void
free_tensors(safetensors_tensor *t, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free((void *)t[i].data);
}

/* Assert that got describes the same tensor as want (name, dtype, shape, bytes). */
static void
assert_same_tensor(const safetensors_tensor *got, const safetensors_tensor *want)
{
    ck_assert_ptr_nonnull(got);
    ck_assert_str_eq(got->name, want->name);
    ck_assert_int_eq(got->dtype, want->dtype);
    ck_assert_uint_eq(got->ndim, want->ndim);
    for (uint32_t i = 0; i < want->ndim; i++)
        ck_assert_uint_eq(got->shape[i], want->shape[i]);
    ck_assert_uint_eq(got->nbytes, want->nbytes);
    if (want->nbytes > 0)
        ck_assert_int_eq(memcmp(got->data, want->data, (size_t)want->nbytes), 0);
}

/* Assert that every tensor of f points into f->map, inside it. */
static void
assert_points_into_map(const safetensors_file *f)
{
    const unsigned char *lo = f->map, *hi = lo + f->map_len;

    for (size_t i = 0; i < f->ntensors; i++) {
        const unsigned char *d = f->tensors[i].data;
        ck_assert(d >= lo && d <= hi && f->tensors[i].nbytes <= (uint64_t)(hi - d));
    }
}

/* Number of entries in dir other than . and .. */
static int
count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    ck_assert_ptr_nonnull(d);
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    }
    closedir(d);
    return n;
}

START_TEST(test_st_round_trips_every_dtype_scalar_and_empty)
{
    static const uint64_t s23[] = {2, 3}, s5[] = {5}, s413[] = {4, 1, 3}, s03[] = {0, 3},
                          s50[] = {5, 0};
    static const char *const names[EMAD_DTYPE_COUNT] = {
        NULL,     "t.bool", "t.u8",  "t.i8",  "t.i16", "t.u16", "t.f16",
        "t.bf16", "t.i32",  "t.u32", "t.f32", "t.f64", "t.i64", "t.u64",
    };
    safetensors_tensor t[EMAD_DTYPE_COUNT + 4];
    uint64_t rng = 42;
    size_t n = 0;
    char *dir = tu_tmpdir(), path[512], *cause = NULL;
    safetensors_file *f = NULL;

    for (int dt = EMAD_DTYPE_INVALID + 1; dt < EMAD_DTYPE_COUNT; dt++) {
        switch (dt % 3) {
        case 0:
            t[n++] = make_tensor(names[dt], dt, 2, s23, &rng);
            break;
        case 1:
            t[n++] = make_tensor(names[dt], dt, 1, s5, &rng);
            break;
        default:
            t[n++] = make_tensor(names[dt], dt, 3, s413, &rng);
            break;
        }
    }
    t[n++] = make_tensor("scalar.f32", EMAD_F32, 0, NULL, &rng);
    t[n++] = make_tensor("scalar.i64", EMAD_I64, 0, NULL, &rng);
    t[n++] = make_tensor("empty.f32", EMAD_F32, 2, s03, &rng);
    t[n++] = make_tensor("empty.u8", EMAD_U8, 2, s50, &rng);

    snprintf(path, sizeof(path), "%s/all.safetensors", dir);
    ck_assert_int_eq(safetensors_write(path, t, n, NULL, 0, &cause), 0);
    ck_assert_ptr_null(cause);
    ck_assert_int_eq(safetensors_read(&f, path, &cause), 0);
    ck_assert_ptr_null(cause);
    ck_assert_uint_eq(f->ntensors, n);
    ck_assert_uint_eq(f->nmeta, 0);
    for (size_t i = 0; i < n; i++)
        assert_same_tensor(safetensors_find(f, t[i].name), &t[i]);
    ck_assert_uint_eq(safetensors_find(f, "scalar.f32")->ndim, 0);
    ck_assert_uint_eq(safetensors_find(f, "scalar.f32")->nbytes, 4);
    ck_assert_uint_eq(safetensors_find(f, "empty.u8")->nbytes, 0);
    ck_assert_ptr_null(safetensors_find(f, "t.missing"));
    assert_points_into_map(f);
    safetensors_free(f);
    free_tensors(t, n);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_st_metadata_round_trips)
{
    static const uint64_t s2[] = {2};
    const safetensors_meta meta[] = {
        META("format", "pt"),
        META("step", "20"),
        META("note", "caf\xc3\xa9 \"quoted\" \\ back\nslash"),
        META("empty", ""),
    };
    uint64_t rng = 7;
    safetensors_tensor t = make_tensor("w", EMAD_F32, 1, s2, &rng);
    char *dir = tu_tmpdir(), path[512], *cause = NULL;
    safetensors_file *f = NULL;

    snprintf(path, sizeof(path), "%s/meta.safetensors", dir);
    ck_assert_int_eq(safetensors_write(path, &t, 1, meta, 4, &cause), 0);
    ck_assert_int_eq(safetensors_read(&f, path, &cause), 0);
    ck_assert_uint_eq(f->nmeta, 4);
    for (size_t i = 0; i < 4; i++)
        ck_assert_str_eq(safetensors_meta_get(f, meta[i].key), meta[i].value);
    ck_assert_ptr_null(safetensors_meta_get(f, "missing"));
    assert_same_tensor(safetensors_find(f, "w"), &t);
    safetensors_free(f);

    /* Metadata alone, no tensors: the file is the header and nothing else. */
    ck_assert_int_eq(safetensors_write(path, NULL, 0, meta, 1, &cause), 0);
    ck_assert_int_eq(safetensors_read(&f, path, &cause), 0);
    ck_assert_uint_eq(f->ntensors, 0);
    ck_assert_str_eq(safetensors_meta_get(f, "format"), "pt");
    ck_assert_uint_eq(f->map_len, 8 + tu_load_u64le(f->map));
    safetensors_free(f);
    free_tensors(&t, 1);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_st_writer_orders_by_size_then_name_pads_and_aligns)
{
    /* Names in an order unrelated to sizes; the expected order is by hand. */
    static const uint64_t s3[] = {3}, s1[] = {1};
    static const char *const expected[] = {"b", "f", "d", "c", "g", "a", "e"};
    static const size_t sizes[] = {8, 8, 4, 2, 2, 1, 1};
    const safetensors_meta meta[] = {META("format", "pt")};
    uint64_t rng = 9;
    safetensors_tensor t[7];
    char *dir = tu_tmpdir(), path[512], *cause = NULL, *text, *prev = NULL, key[16];
    unsigned char *raw;
    size_t len;
    uint64_t n, pos = 0;
    safetensors_file *f = NULL;

    t[0] = make_tensor("a", EMAD_U8, 1, s3, &rng);
    t[1] = make_tensor("b", EMAD_F64, 1, s1, &rng);
    t[2] = make_tensor("c", EMAD_F16, 1, s3, &rng);
    t[3] = make_tensor("d", EMAD_I32, 1, s1, &rng);
    t[4] = make_tensor("e", EMAD_BOOL, 1, s1, &rng);
    t[5] = make_tensor("f", EMAD_I64, 1, s3, &rng);
    t[6] = make_tensor("g", EMAD_BF16, 1, s1, &rng);
    snprintf(path, sizeof(path), "%s/order.safetensors", dir);
    ck_assert_int_eq(safetensors_write(path, t, 7, meta, 1, &cause), 0);

    raw = tu_read_file(path, &len);
    ck_assert_ptr_nonnull(raw);
    n = tu_load_u64le(raw);
    ck_assert_uint_eq(n % 8, 0);
    text = strndup((const char *)raw + 8, (size_t)n);
    ck_assert_msg(strncmp(text, "{\"__metadata__\":{\"format\":\"pt\"}", 31) == 0, "%s", text);
    ck_assert_ptr_nonnull(strrchr(text, '}'));
    for (const char *p = strrchr(text, '}') + 1; *p != '\0'; p++)
        ck_assert_int_eq(*p, ' ');
    ck_assert_uint_lt(strlen(strrchr(text, '}') + 1), 8); /* padding only to a multiple of 8 */
    for (size_t i = 0; i < 7; i++) {                      /* header order */
        char *at;
        snprintf(key, sizeof(key), "\"%s\":{", expected[i]);
        at = strstr(text, key);
        ck_assert_msg(at != NULL && (prev == NULL || at > prev), "%s out of order", key);
        prev = at;
    }

    ck_assert_int_eq(safetensors_read(&f, path, &cause), 0);
    ck_assert_uint_eq(f->ntensors, 7);
    for (size_t i = 0; i < 7; i++) { /* data order, contiguity and alignment */
        const safetensors_tensor *g = &f->tensors[i];
        ck_assert_str_eq(g->name, expected[i]);
        ck_assert_uint_eq(dtype_size(g->dtype), sizes[i]);
        ck_assert_uint_eq(g->offset, pos);
        ck_assert_uint_eq((8 + n + g->offset) % sizes[i], 0);
        ck_assert_uint_eq(
            (size_t)((const unsigned char *)g->data - (unsigned char *)f->map) % sizes[i], 0);
        pos += g->nbytes;
    }
    ck_assert_uint_eq(len, 8 + n + pos);
    for (size_t i = 0; i < 7; i++)
        assert_same_tensor(safetensors_find(f, t[i].name), &t[i]);
    safetensors_free(f);
    free(text);
    free(raw);
    free_tensors(t, 7);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_st_write_rejects_bad_tensors_and_writes_nothing)
{
    static const uint64_t s2[] = {2}, s1[] = {1};
    const safetensors_meta dup_meta[] = {META("k", "1"), META("k", "2")};
    uint64_t rng = 11;
    safetensors_tensor t[2];
    char *dir = tu_tmpdir(), path[512], *cause = NULL;
    struct {
        const char *name0, *name1;
        int dtype1;
        uint64_t nbytes_delta;
        const char *needle;
    } cases[] = {
        {"w", "w", EMAD_F32, 0, "tensor 'w' appears twice"},
        {"w", "w", EMAD_U8, 0, "tensor 'w' appears twice"}, /* not adjacent when sorted */
        {"w", "v", EMAD_F32, 4, "tensor 'v': 12 bytes of data but shape [2] of F32 needs 8"},
        {"w", "v", 99, 0, "tensor 'v': invalid dtype 99"},
        {"w", "__metadata__", EMAD_F32, 0, "'__metadata__' is reserved"},
        {"w", "bad\xff", EMAD_F32, 0, "not valid UTF-8"},
    };

    snprintf(path, sizeof(path), "%s/bad.safetensors", dir);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        t[0] = make_tensor(cases[i].name0, EMAD_F32, 1, s2, &rng);
        t[1] = make_tensor(cases[i].name1, EMAD_F32, 1, s2, &rng);
        t[1].dtype = cases[i].dtype1;
        t[1].nbytes = dtype_size(cases[i].dtype1) * 2 + cases[i].nbytes_delta;
        free((void *)t[1].data);
        t[1].data = calloc(1, (size_t)t[1].nbytes + 1);
        ck_assert_int_eq(safetensors_write(path, t, 2, NULL, 0, &cause), EMAD_EINVAL);
        ck_assert_msg(cause != NULL && strstr(cause, cases[i].needle) != NULL,
                      "case %zu: \"%s\" lacks \"%s\"", i, cause, cases[i].needle);
        free(cause);
        cause = NULL;
        free_tensors(t, 2);
    }

    t[0] = make_tensor("deep", EMAD_U8, 1, s1, &rng);
    t[0].ndim = EMAD_MAX_NDIM + 1; /* the writer must not read shape[] past its end */
    ck_assert_int_eq(safetensors_write(path, t, 1, NULL, 0, &cause), EMAD_EINVAL);
    ck_assert_ptr_nonnull(strstr(cause, "17 dimensions"));
    free(cause);
    cause = NULL;
    t[0].ndim = 1;
    t[0].nbytes = 1;
    ck_assert_int_eq(safetensors_write(path, t, 1, dup_meta, 2, &cause), EMAD_EINVAL);
    ck_assert_ptr_nonnull(strstr(cause, "metadata key 'k' appears twice"));
    free(cause);
    free_tensors(t, 1);
    ck_assert_int_eq(count_entries(dir), 0);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_st_write_replaces_atomically_and_cleans_up_on_failure)
{
    static const uint64_t s2[] = {2}, big[] = {65536};
    uint64_t rng = 13;
    safetensors_tensor small = make_tensor("w", EMAD_F32, 1, s2, &rng);
    safetensors_tensor large = make_tensor("w", EMAD_F32, 1, big, &rng);
    char *dir = tu_tmpdir(), path[512], missing[600], *cause = NULL;
    unsigned char *before, *after;
    size_t len_before, len_after;
    struct rlimit rl = {4096, 4096}, saved;

    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    ck_assert_int_eq(safetensors_write(path, &small, 1, NULL, 0, &cause), 0);
    before = tu_read_file(path, &len_before);
    ck_assert_ptr_nonnull(before);
    ck_assert_int_eq(count_entries(dir), 1);

    /* A directory that does not exist: EMAD_EIO naming the path. */
    snprintf(missing, sizeof(missing), "%s/no/such/dir/x.safetensors", dir);
    ck_assert_int_eq(safetensors_write(missing, &small, 1, NULL, 0, &cause), EMAD_EIO);
    ck_assert_ptr_nonnull(strstr(cause, missing));
    free(cause);
    cause = NULL;

    /* A write that fails half-way (file size limit): target untouched, no temp file left. */
    ck_assert(signal(SIGXFSZ, SIG_IGN) != SIG_ERR);
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &saved), 0);
    rl.rlim_max = saved.rlim_max;
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    ck_assert_int_eq(safetensors_write(path, &large, 1, NULL, 0, &cause), EMAD_EIO);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &saved), 0);
    ck_assert_msg(strstr(cause, strerror(EFBIG)) != NULL, "%s", cause);
    free(cause);
    cause = NULL;
    after = tu_read_file(path, &len_after);
    ck_assert_ptr_nonnull(after);
    ck_assert_uint_eq(len_after, len_before);
    ck_assert_int_eq(memcmp(after, before, len_before), 0);
    ck_assert_int_eq(count_entries(dir), 1);
    free(after);

    /* A successful write replaces the file. */
    small.dtype = EMAD_I32;
    ck_assert_int_eq(safetensors_write(path, &small, 1, NULL, 0, &cause), 0);
    after = tu_read_file(path, &len_after);
    ck_assert_ptr_nonnull(strstr((char *)after + 8, "\"I32\""));
    ck_assert_int_eq(count_entries(dir), 1);
    ck_assert_int_eq(access(path, R_OK), 0);
    free(after);
    free(before);
    free_tensors(&small, 1);
    free_tensors(&large, 1);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_st_parse_copies_input_and_points_into_its_map)
{
    const char *h = "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}";
    size_t len;
    unsigned char *buf = image(h, 4, &len);
    safetensors_file *f = NULL;

    buf[len - 1] = 0x11;
    ck_assert_int_eq(safetensors_parse(&f, buf, len, NULL), 0);
    memset(buf, 0, len);
    free(buf);
    ck_assert_uint_eq(f->map_len, len);
    ck_assert_ptr_eq(f->tensors[0].data, (unsigned char *)f->map + 8 + strlen(h));
    ck_assert_int_eq(((const unsigned char *)f->tensors[0].data)[0], 0x5a);
    ck_assert_int_eq(((const unsigned char *)f->tensors[0].data)[3], 0x11);
    safetensors_free(f);
    safetensors_free(NULL);
}
END_TEST

START_TEST(test_st_accepts_trailing_spaces_and_sorts_by_offset)
{
    safetensors_file *f = expect_ok("{}      ", 0);

    ck_assert_uint_eq(f->ntensors, 0);
    safetensors_free(f);
    /* Header order b, a; data order a, b; an empty tensor at the end. */
    f = expect_ok("{\"b\":{\"dtype\":\"I16\",\"shape\":[2],\"data_offsets\":[8,12]},"
                  "\"z\":{\"data_offsets\":[12,12],\"shape\":[0,7],\"dtype\":\"F64\"},"
                  "\"a\":{\"shape\":[2],\"dtype\":\"F32\",\"data_offsets\":[0,8]}}   ",
                  12);
    ck_assert_uint_eq(f->ntensors, 3);
    ck_assert_str_eq(f->tensors[0].name, "a");
    ck_assert_str_eq(f->tensors[1].name, "b");
    ck_assert_str_eq(f->tensors[2].name, "z");
    ck_assert_uint_eq(f->tensors[1].offset, 8);
    ck_assert_uint_eq(f->tensors[1].nbytes, 4);
    ck_assert_int_eq(f->tensors[1].dtype, EMAD_I16);
    ck_assert_uint_eq(f->tensors[2].ndim, 2);
    ck_assert_uint_eq(f->tensors[2].shape[1], 7);
    ck_assert_ptr_eq((const char *)f->tensors[1].data, (const char *)f->tensors[0].data + 8);
    assert_points_into_map(f);
    safetensors_free(f);
}
END_TEST

START_TEST(test_st_rejects_truncated_header_length)
{
    unsigned char buf[8] = {2, 0, 0, 0, 0, 0, 0, 0};

    for (size_t len = 0; len < 8; len++)
        expect_error_buf(len == 0 ? NULL : buf, len, "too short for the 8-byte header length");
}
END_TEST

START_TEST(test_st_rejects_header_length_over_limit)
{
    size_t len;
    unsigned char *buf = image_n(100000001, "{}", 0, &len);

    expect_error_buf(buf, len, "header length 100000001 exceeds the limit of 100000000");
    free(buf);
    buf = image_n(UINT64_MAX, "{}", 0, &len);
    expect_error_buf(buf, len, "header length 18446744073709551615 exceeds the limit");
    free(buf);
    /* Exactly the limit is allowed by the limit check (fails later, on the file length). */
    buf = image_n(100000000, "{}", 0, &len);
    expect_error_buf(buf, len, "header length 100000000 exceeds the 2 bytes that follow");
    free(buf);
}
END_TEST

START_TEST(test_st_rejects_header_length_past_end_of_file)
{
    size_t len;
    unsigned char *buf = image_n(3, "{}", 0, &len);

    expect_error_buf(buf, len, "file is truncated: header length 3 exceeds the 2 bytes");
    free(buf);
    buf = image_n(2, "{}", 0, &len); /* the same image with the right length parses */
    safetensors_file *f = NULL;
    ck_assert_int_eq(safetensors_parse(&f, buf, len, NULL), 0);
    safetensors_free(f);
    free(buf);
}
END_TEST

START_TEST(test_st_rejects_header_that_is_not_json)
{
    size_t len;
    unsigned char *buf;

    expect_error("{abc}", 0, "header is not valid JSON");
    expect_error("{\"a\":1} x", 0, "header is not valid JSON");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}", 4,
                 "header is not valid JSON");
    expect_error("{\"\xff\":1}", 0, "header is not valid JSON"); /* not UTF-8 */
    expect_error("{}\t\r\n x", 0, "header is not valid JSON");
    /* NUL padding instead of spaces. */
    buf = image("{}......", 0, &len);
    memset(buf + 10, 0, 6);
    expect_error_buf(buf, len, "header is not valid JSON");
    free(buf);
    /* An integer past int64 is not accepted as a shape. */
    expect_error(
        "{\"a\":{\"dtype\":\"U8\",\"shape\":[18446744073709551616],\"data_offsets\":[0,0]}}", 0,
        "header is not valid JSON");
}
END_TEST

START_TEST(test_st_rejects_header_that_is_not_an_object)
{
    expect_error("[1, 2]", 0, "header does not start with '{'");
    expect_error("  {}", 0, "header does not start with '{'");
    expect_error("\"{}\"", 0, "header does not start with '{'");
    expect_error("", 0, "header does not start with '{'");
}
END_TEST

START_TEST(test_st_rejects_missing_and_mistyped_fields)
{
    static const struct {
        const char *entry, *needle;
    } cases[] = {
        {"5", "tensor 'a': entry is not an object"},
        {"[\"F32\", [1], [0, 4]]", "tensor 'a': entry is not an object"},
        {"{\"shape\":[1],\"data_offsets\":[0,4]}", "tensor 'a': missing key 'dtype'"},
        {"{\"dtype\":\"F32\",\"data_offsets\":[0,4]}", "tensor 'a': missing key 'shape'"},
        {"{\"dtype\":\"F32\",\"shape\":[1]}", "tensor 'a': missing key 'data_offsets'"},
        {"{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"extra\":0}",
         "tensor 'a': unexpected key 'extra'"},
        {"{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}", "tensor 'a': dtype is not a string"},
        {"{\"dtype\":null,\"shape\":[1],\"data_offsets\":[0,4]}", "dtype is not a string"},
        {"{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}",
         "tensor 'a': shape is not an array"},
        {"{\"dtype\":\"F32\",\"shape\":[1,-1],\"data_offsets\":[0,4]}",
         "tensor 'a': shape[1] is not a non-negative integer"},
        {"{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}",
         "tensor 'a': shape[0] is not a non-negative integer"},
        {"{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}",
         "shape[0] is not a non-negative integer"},
        {"{\"dtype\":\"F32\",\"shape\":[true],\"data_offsets\":[0,4]}",
         "shape[0] is not a non-negative integer"},
        {"{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4]}",
         "tensor 'a': data_offsets is not an array of two non-negative integers"},
        {"{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}",
         "data_offsets is not an array of two"},
        {"{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,\"4\"]}",
         "data_offsets is not an array of two"},
        {"{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}",
         "data_offsets is not an array of two"},
        {"{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{\"0\":4}}",
         "data_offsets is not an array of two"},
        {"{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,0]}",
         "tensor 'a': data_offsets [4, 0] end before they begin"},
    };
    char header[512];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(header, sizeof(header), "{\"a\":%s}", cases[i].entry);
        expect_error(header, 4, cases[i].needle);
    }
    /* The well-formed version of the same entry parses. */
    safetensors_free(
        expect_ok("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4));
}
END_TEST

START_TEST(test_st_rejects_unknown_dtype)
{
    expect_error("{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4,
                 "tensor 'a': unknown or unsupported dtype 'F8_E4M3'");
    expect_error("{\"a\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                 "unknown or unsupported dtype 'f32'");
    expect_error("{\"a\":{\"dtype\":\"F32 \",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                 "unknown or unsupported dtype 'F32 '");
    expect_error("{\"a\":{\"dtype\":\"\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                 "unknown or unsupported dtype ''");
}
END_TEST

START_TEST(test_st_rejects_wrong_byte_count)
{
    safetensors_file *f = NULL;
    char *cause = NULL;
    size_t len;
    unsigned char *buf = image(
        "{\"fc.weight\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}", 12, &len);

    ck_assert_int_eq(safetensors_parse(&f, buf, len, &cause), EMAD_EFORMAT);
    ck_assert_str_eq(cause, "tensor 'fc.weight': data_offsets [0, 12] hold 12 bytes but shape "
                            "[2, 2] of F32 needs 16");
    free(cause);
    free(buf);
    expect_error("{\"s\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[0,4]}}", 4,
                 "tensor 's': data_offsets [0, 4] hold 4 bytes but shape [] of F64 needs 8");
    expect_error("{\"e\":{\"dtype\":\"I32\",\"shape\":[3,0],\"data_offsets\":[0,4]}}", 4,
                 "hold 4 bytes but shape [3, 0] of I32 needs 0");
    /* Shapes whose byte count overflows are rejected, not wrapped around. */
    expect_error("{\"h\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],"
                 "\"data_offsets\":[0,0]}}",
                 0, "tensor 'h': shape [4294967296, 4294967296] of F32 is too large");
    expect_error("{\"h\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],"
                 "\"data_offsets\":[0,0]}}",
                 0, "is too large");
}
END_TEST

START_TEST(test_st_rejects_hole_between_tensors)
{
    expect_error("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
                 "\"b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[12,20]}}",
                 20,
                 "tensor 'b': data_offsets [12, 20] leave a hole of 4 bytes after tensor 'a', "
                 "which ends at 8");
}
END_TEST

START_TEST(test_st_rejects_overlapping_tensors)
{
    expect_error("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
                 "\"b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[4,12]}}",
                 12, "tensor 'b': data_offsets [4, 12] overlap tensor 'a', which ends at 8");
    /* Two tensors sharing the same bytes. */
    expect_error("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
                 "\"b\":{\"dtype\":\"I8\",\"shape\":[8],\"data_offsets\":[0,8]}}",
                 8, "overlap tensor 'a'");
}
END_TEST

START_TEST(test_st_rejects_offsets_not_starting_at_zero)
{
    expect_error("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[4,12]}}", 12,
                 "tensor 'a': data_offsets [4, 12] do not start at 0");
}
END_TEST

START_TEST(test_st_rejects_trailing_or_missing_data_bytes)
{
    const char *h = "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}";

    expect_error(h, 9, "1 trailing bytes after the last tensor");
    expect_error(h, 7,
                 "file is truncated: the tensors end at byte 8 of the data buffer but only "
                 "7 bytes follow the header");
    expect_error("{}", 1, "1 trailing bytes");
    safetensors_free(expect_ok(h, 8));
    /* Sizes beyond 4 GiB are reported without truncation. */
    expect_error(
        "{\"a\":{\"dtype\":\"U8\",\"shape\":[5000000000],\"data_offsets\":[0,5000000000]}}", 16,
        "the tensors end at byte 5000000000 of the data buffer but only 16 bytes");
}
END_TEST

START_TEST(test_st_rejects_every_truncation_of_a_valid_file)
{
    static const uint64_t s3[] = {3};
    uint64_t rng = 17;
    safetensors_tensor t[2] = {make_tensor("a", EMAD_F32, 1, s3, &rng),
                               make_tensor("b", EMAD_U8, 1, s3, &rng)};
    const safetensors_meta meta[] = {META("format", "pt")};
    char *dir = tu_tmpdir(), path[512], *cause = NULL;
    unsigned char *raw;
    size_t len;
    safetensors_file *f = NULL;

    snprintf(path, sizeof(path), "%s/full.safetensors", dir);
    ck_assert_int_eq(safetensors_write(path, t, 2, meta, 1, NULL), 0);
    raw = tu_read_file(path, &len);
    for (size_t cut = 0; cut < len; cut++) {
        ck_assert_int_eq(tu_write_file(path, raw, cut), 0);
        ck_assert_msg(safetensors_read(&f, path, &cause) == EMAD_EFORMAT, "prefix %zu parsed", cut);
        ck_assert_ptr_null(f);
        ck_assert_msg(strstr(cause, "truncated") != NULL || strstr(cause, "too short") != NULL,
                      "prefix %zu: %s", cut, cause);
        free(cause);
        cause = NULL;
    }
    ck_assert_int_eq(tu_write_file(path, raw, len), 0);
    ck_assert_int_eq(safetensors_read(&f, path, NULL), 0);
    safetensors_free(f);
    free(raw);
    free_tensors(t, 2);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_st_rejects_duplicate_names)
{
    expect_error("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                 "\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}",
                 8, "duplicate object key");
    expect_error("{\"__metadata__\":{},\"__metadata__\":{}}", 0, "duplicate object key");
    expect_error("{\"a\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}",
                 4, "duplicate object key");
}
END_TEST

START_TEST(test_st_rejects_non_string_metadata)
{
    safetensors_file *f;

    expect_error("{\"__metadata__\":{\"format\":\"pt\",\"step\":20}}", 0,
                 "__metadata__ key 'step': value is not a string");
    expect_error("{\"__metadata__\":{\"k\":{\"x\":\"y\"}}}", 0,
                 "__metadata__ key 'k': value is not a string");
    expect_error("{\"__metadata__\":{\"k\":null}}", 0, "value is not a string");
    expect_error("{\"__metadata__\":\"pt\"}", 0, "__metadata__ is not an object");
    expect_error("{\"__metadata__\":[\"format\",\"pt\"]}", 0, "__metadata__ is not an object");
    f = expect_ok("{\"__metadata__\":{}}", 0);
    ck_assert_uint_eq(f->nmeta, 0);
    ck_assert_uint_eq(f->ntensors, 0);
    safetensors_free(f);
}
END_TEST

START_TEST(test_st_rejects_too_many_dims)
{
    safetensors_file *f;

    expect_error("{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],"
                 "\"data_offsets\":[0,1]}}",
                 1, "tensor 'a': shape has 17 dimensions, more than the maximum of 16");
    f = expect_ok("{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,2],"
                  "\"data_offsets\":[0,2]}}",
                  2);
    ck_assert_uint_eq(f->tensors[0].ndim, 16);
    ck_assert_uint_eq(f->tensors[0].shape[15], 2);
    safetensors_free(f);
}
END_TEST

START_TEST(test_st_read_reports_io_errors_with_the_path)
{
    char *dir = tu_tmpdir(), path[512], *cause = NULL;
    safetensors_file *f = (safetensors_file *)1;

    snprintf(path, sizeof(path), "%s/missing.safetensors", dir);
    ck_assert_int_eq(safetensors_read(&f, path, &cause), EMAD_EIO);
    ck_assert_ptr_null(f);
    ck_assert_ptr_nonnull(strstr(cause, path));
    ck_assert_ptr_nonnull(strstr(cause, strerror(ENOENT)));
    free(cause);
    ck_assert_int_eq(safetensors_read(&f, dir, &cause), EMAD_EIO);
    ck_assert_ptr_nonnull(strstr(cause, "not a regular file"));
    free(cause);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

/*
 * The sample tensors of tests/safetensors_np.py (see sample_tensors()
 * there), computed here independently: name "t.<DTYPE>" with the shape
 * below; element k of an integer tensor of B bits has bit pattern
 * (37k + 11) mod 2^B, BOOL k % 3 == 0, floats (k - 5) * 0.25 (BF16: the
 * upper half of the float32 bits).
 */
static const struct {
    int dtype;
    uint32_t ndim;
    uint64_t shape[2];
} sample_shapes[] = {
    {EMAD_BOOL, 1, {3}},   {EMAD_U8, 2, {2, 3}},  {EMAD_I8, 1, {5}},   {EMAD_I16, 2, {2, 2}},
    {EMAD_U16, 1, {7}},    {EMAD_F16, 2, {3, 1}}, {EMAD_BF16, 1, {4}}, {EMAD_I32, 1, {3}},
    {EMAD_U32, 1, {2}},    {EMAD_F32, 2, {2, 3}}, {EMAD_F64, 1, {3}},  {EMAD_I64, 1, {2}},
    {EMAD_U64, 2, {1, 2}},
};
#define NSAMPLE (sizeof(sample_shapes) / sizeof(sample_shapes[0]))

/* Fill the 16 sample tensors (names in names[], 32 bytes each); the caller frees the data. */
static void
sample_tensors(safetensors_tensor *t, char names[][32])
{
    static const float scalar = -1.25f;

    for (size_t i = 0; i < NSAMPLE; i++) {
        int dt = sample_shapes[i].dtype;
        size_t sz = dtype_size(dt), numel = 1;
        unsigned char *d;

        for (uint32_t j = 0; j < sample_shapes[i].ndim; j++)
            numel *= (size_t)sample_shapes[i].shape[j];
        d = malloc(numel * sz);
        ck_assert_ptr_nonnull(d);
        for (size_t k = 0; k < numel; k++) {
            float v = ((float)k - 5.0f) * 0.25f;
            uint64_t pat = 37 * (uint64_t)k + 11;
            uint32_t fb;
            double dv = v;

            memcpy(&fb, &v, 4);
            if (dt == EMAD_BOOL)
                pat = k % 3 == 0;
            else if (dt == EMAD_F16)
                pat = dtype_f32_to_f16(v);
            else if (dt == EMAD_BF16)
                pat = fb >> 16;
            else if (dt == EMAD_F32)
                pat = fb;
            else if (dt == EMAD_F64)
                memcpy(&pat, &dv, 8);
            for (size_t b = 0; b < sz; b++) /* little-endian, low bytes of pat */
                d[k * sz + b] = (unsigned char)(pat >> (8 * b));
        }
        snprintf(names[i], 32, "t.%s", dtype_name(dt));
        memset(&t[i], 0, sizeof(t[i]));
        t[i].name = names[i];
        t[i].dtype = dt;
        t[i].ndim = sample_shapes[i].ndim;
        memcpy(t[i].shape, sample_shapes[i].shape, sizeof(sample_shapes[i].shape));
        t[i].data = d;
        t[i].nbytes = numel * sz;
    }
    memset(&t[NSAMPLE], 0, 3 * sizeof(t[0]));
    snprintf(names[NSAMPLE], 32, "scalar");
    t[NSAMPLE].name = names[NSAMPLE];
    t[NSAMPLE].dtype = EMAD_F32;
    t[NSAMPLE].data = malloc(4);
    memcpy((void *)t[NSAMPLE].data, &scalar, 4);
    t[NSAMPLE].nbytes = 4;
    snprintf(names[NSAMPLE + 1], 32, "empty");
    t[NSAMPLE + 1].name = names[NSAMPLE + 1];
    t[NSAMPLE + 1].dtype = EMAD_F32;
    t[NSAMPLE + 1].ndim = 2;
    t[NSAMPLE + 1].shape[1] = 4;
    t[NSAMPLE + 1].data = malloc(1);
    snprintf(names[NSAMPLE + 2], 32, "empty.i64");
    t[NSAMPLE + 2].name = names[NSAMPLE + 2];
    t[NSAMPLE + 2].dtype = EMAD_I64;
    t[NSAMPLE + 2].ndim = 1;
    t[NSAMPLE + 2].data = malloc(1);
}

/* Run tests/safetensors_np.py with args; returns its exit status, output in *out. */
static int
run_numpy(const char *args, char **out)
{
    char cmd[2048];

    snprintf(cmd, sizeof(cmd), "'%s' '%s/tests/safetensors_np.py' %s", tu_python(), tu_srcdir(),
             args);
    return tu_run(cmd, out);
}

/* Check that the C reader reads numpy's sample file written in the given mode. */
static void
check_numpy_sample(const char *mode)
{
    safetensors_tensor want[NSAMPLE + 3];
    char names[NSAMPLE + 3][32], *dir = tu_tmpdir(), path[512], args[1024], *out = NULL;
    char *cause = NULL;
    safetensors_file *f = NULL;
    int status;

    snprintf(path, sizeof(path), "%s/numpy-%s.safetensors", dir, mode);
    snprintf(args, sizeof(args), "sample %s '%s'", mode, path);
    status = run_numpy(args, &out);
    ck_assert_msg(status == 0, "safetensors_np.py failed (%d): %s", status, out);
    free(out);
    ck_assert_msg(safetensors_read(&f, path, &cause) == 0, "%s", cause);
    sample_tensors(want, names);
    ck_assert_uint_eq(f->ntensors, NSAMPLE + 3);
    for (size_t i = 0; i < NSAMPLE + 3; i++)
        assert_same_tensor(safetensors_find(f, want[i].name), &want[i]);
    ck_assert_uint_eq(f->nmeta, 2);
    ck_assert_str_eq(safetensors_meta_get(f, "format"), "pt");
    ck_assert_str_eq(safetensors_meta_get(f, "source"), "numpy");
    safetensors_free(f);
    free_tensors(want, NSAMPLE + 3);
    tu_rmtree(dir);
    free(dir);
}

START_TEST(test_st_reads_aligned_files_written_by_numpy)
{
    check_numpy_sample("aligned");
}
END_TEST

START_TEST(test_st_reads_unaligned_files_written_by_numpy)
{
    check_numpy_sample("unaligned");
}
END_TEST

/* qsort order of tensor pointers by name (strcmp). */
static int
cmp_name(const void *a, const void *b)
{
    return strcmp((*(const safetensors_tensor *const *)a)->name,
                  (*(const safetensors_tensor *const *)b)->name);
}

START_TEST(test_st_files_written_by_c_are_read_by_numpy)
{
    safetensors_tensor t[NSAMPLE + 3];
    const safetensors_tensor *sorted[NSAMPLE + 3];
    const safetensors_meta meta[] = {META("step", "20"), META("format", "pt")};
    char names[NSAMPLE + 3][32], *dir = tu_tmpdir(), path[512], args[1024], *out = NULL;
    char *want, *p;
    size_t cap = 65536;
    int status;

    sample_tensors(t, names);
    snprintf(path, sizeof(path), "%s/c.safetensors", dir);
    ck_assert_int_eq(safetensors_write(path, t, NSAMPLE + 3, meta, 2, NULL), 0);
    snprintf(args, sizeof(args), "dump --layout '%s'", path);
    status = run_numpy(args, &out);
    ck_assert_msg(status == 0, "safetensors_np.py failed (%d): %s", status, out);

    /* The dump format of safetensors_np.py, built from what C wrote. */
    want = p = malloc(cap);
    p += sprintf(p, "meta format pt\nmeta step 20\n");
    for (size_t i = 0; i < NSAMPLE + 3; i++)
        sorted[i] = &t[i];
    qsort(sorted, NSAMPLE + 3, sizeof(sorted[0]), cmp_name);
    for (size_t i = 0; i < NSAMPLE + 3; i++) {
        const safetensors_tensor *s = sorted[i];
        p += sprintf(p, "tensor %s %s [", s->name, dtype_name(s->dtype));
        for (uint32_t j = 0; j < s->ndim; j++)
            p += sprintf(p, "%s%llu", j ? "," : "", (unsigned long long)s->shape[j]);
        p += sprintf(p, "] ");
        for (uint64_t b = 0; b < s->nbytes; b++)
            p += sprintf(p, "%02x", ((const unsigned char *)s->data)[b]);
        p += sprintf(p, "%s\n", s->nbytes == 0 ? "-" : "");
    }
    p += sprintf(p, "layout ok\n");
    ck_assert_str_eq(out, want);
    free(want);
    free(out);
    free_tensors(t, NSAMPLE + 3);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

/* The safetensors suite. */
static Suite *
safetensors_suite(void)
{
    Suite *s = suite_create("safetensors");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_st_round_trips_every_dtype_scalar_and_empty);
    tcase_add_test(tc, test_st_metadata_round_trips);
    tcase_add_test(tc, test_st_writer_orders_by_size_then_name_pads_and_aligns);
    tcase_add_test(tc, test_st_write_rejects_bad_tensors_and_writes_nothing);
    tcase_add_test(tc, test_st_write_replaces_atomically_and_cleans_up_on_failure);
    tcase_add_test(tc, test_st_parse_copies_input_and_points_into_its_map);
    tcase_add_test(tc, test_st_accepts_trailing_spaces_and_sorts_by_offset);
    tcase_add_test(tc, test_st_rejects_truncated_header_length);
    tcase_add_test(tc, test_st_rejects_header_length_over_limit);
    tcase_add_test(tc, test_st_rejects_header_length_past_end_of_file);
    tcase_add_test(tc, test_st_rejects_header_that_is_not_json);
    tcase_add_test(tc, test_st_rejects_header_that_is_not_an_object);
    tcase_add_test(tc, test_st_rejects_missing_and_mistyped_fields);
    tcase_add_test(tc, test_st_rejects_unknown_dtype);
    tcase_add_test(tc, test_st_rejects_wrong_byte_count);
    tcase_add_test(tc, test_st_rejects_hole_between_tensors);
    tcase_add_test(tc, test_st_rejects_overlapping_tensors);
    tcase_add_test(tc, test_st_rejects_offsets_not_starting_at_zero);
    tcase_add_test(tc, test_st_rejects_trailing_or_missing_data_bytes);
    tcase_add_test(tc, test_st_rejects_every_truncation_of_a_valid_file);
    tcase_add_test(tc, test_st_rejects_duplicate_names);
    tcase_add_test(tc, test_st_rejects_non_string_metadata);
    tcase_add_test(tc, test_st_rejects_too_many_dims);
    tcase_add_test(tc, test_st_read_reports_io_errors_with_the_path);
    tcase_add_test(tc, test_st_reads_aligned_files_written_by_numpy);
    tcase_add_test(tc, test_st_reads_unaligned_files_written_by_numpy);
    tcase_add_test(tc, test_st_files_written_by_c_are_read_by_numpy);
    tcase_set_timeout(tc, TU_TCASE_TIMEOUT);
    suite_add_tcase(s, tc);
    return s;
}

/* Run the safetensors suite; exit status 0 if every test passed. */
int
main(void)
{
    SRunner *sr = srunner_create(safetensors_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

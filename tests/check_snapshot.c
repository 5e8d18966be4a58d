/*
 * check_snapshot.c - tests for the snapshot format (src/common/snapshot.c,
 * snapshot_meta.c) and directory (src/files/snapdir.c): file names and paths, a
 * round trip of every kind of tensor (averaged BF16 kept as F32, F64, a
 * copied I64 buffer, a scalar, an empty tensor) with the full
 * configuration, the metadata keys and their values, both checksums
 * computed here independently with XXH64 over hand-laid-out bytes, every
 * rule of the reader (files written here with one thing wrong and valid
 * checksums), corruption (truncation, wrong header length, every single
 * bit flip of the header and of the data), disk full through a file size
 * limit in a forked child, listing steps and models, pruning and
 * snapdir_mark_broken.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <xxhash.h>

#include "config.h"
#include "common/dtype.h"
#include "common/emaconf.h"
#include "common/safetensors.h"
#include "common/snapshot.h"
#include "files/snapdir.h"
#include "testutil.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* The example model's tensors: data, and the same tensors as snapshot_tensor. */
static const float w_data[6] = {0.1f, -0.25f, 3.0f, 1e-8f, -7.5f, 65504.0f};
static const double d_data[4] = {0.1, -2.5, 1e300, -0.0};
static const int64_t count_data[3] = {1, -2, INT64_C(1) << 40};
static const float scale_data[1] = {3.5f};

/* The example tensors at model step 50 (in an order that is not by name). */
static void
example_tensors(snapshot_tensor t[5])
{
    memset(t, 0, 5 * sizeof(*t));
    t[0] = (snapshot_tensor){.name = "w",
                             .kind = EMAD_PARAM,
                             .dtype = EMAD_BF16,
                             .sdtype = EMAD_F32,
                             .averaged = 1,
                             .ndim = 2,
                             .shape = {2, 3},
                             .step = 40,
                             .data = w_data,
                             .nbytes = sizeof(w_data)};
    t[1] = (snapshot_tensor){.name = "d",
                             .kind = EMAD_PARAM,
                             .dtype = EMAD_F64,
                             .sdtype = EMAD_F64,
                             .averaged = 1,
                             .ndim = 1,
                             .shape = {4},
                             .step = 50,
                             .data = d_data,
                             .nbytes = sizeof(d_data)};
    t[2] = (snapshot_tensor){.name = "bn.count",
                             .kind = EMAD_BUFFER,
                             .dtype = EMAD_I64,
                             .sdtype = EMAD_I64,
                             .averaged = 0,
                             .ndim = 1,
                             .shape = {3},
                             .step = 50,
                             .data = count_data,
                             .nbytes = sizeof(count_data)};
    t[3] = (snapshot_tensor){.name = "scale",
                             .kind = EMAD_PARAM,
                             .dtype = EMAD_F32,
                             .sdtype = EMAD_F32,
                             .averaged = 1,
                             .ndim = 0,
                             .step = 50,
                             .data = scale_data,
                             .nbytes = sizeof(scale_data)};
    t[4] = (snapshot_tensor){.name = "empty",
                             .kind = EMAD_BUFFER,
                             .dtype = EMAD_U8,
                             .sdtype = EMAD_U8,
                             .averaged = 0,
                             .ndim = 1,
                             .shape = {0},
                             .step = 7,
                             .data = NULL,
                             .nbytes = 0};
}

/* A configuration with every field away from its default. */
static void
example_config(emad_model_config *cfg)
{
    emaconf_init(cfg);
    cfg->ndecays = 2;
    cfg->decays[0] = 0.999;
    cfg->decays[1] = 0.9;
    cfg->schedule = EMAD_SCHEDULE_WARMUP;
    cfg->update_after_step = 10;
    cfg->inv_gamma = 1.5;
    cfg->power = 2.0 / 3.0;
    cfg->min_decay = 0.1;
    cfg->step_gap = EMAD_STEP_GAP_COMPENSATE;
    cfg->buffers = EMAD_BUFFERS_AVERAGE;
    cfg->nonfinite = EMAD_NONFINITE_SKIP;
    cfg->writers = 3;
    cfg->ncopy = 2;
    cfg->copy[0] = "*.num_batches_tracked";
    cfg->copy[1] = "bn.*";
    cfg->nignore = 1;
    cfg->ignore[0] = "aux.[ab]?";
}

/* Write the example snapshot (model "m", step 50, decay index k) into state_dir; its path. */
static char *
write_example(const char *state_dir, uint64_t step, size_t k)
{
    emad_model_config cfg;
    snapshot_tensor t[5];
    snapshot_meta m = {"m", step, k, &cfg};
    char *cause = NULL, *dir, *path;
    int rc;

    example_config(&cfg);
    example_tensors(t);
    rc = snapdir_write(state_dir, &m, t, NELEM(t), NULL, &cause);
    ck_assert_msg(rc == 0, "snapdir_write: %d %s", rc, cause ? cause : "");
    dir = snapdir_model_dir(state_dir, "m");
    path = snapdir_path(dir, step, k);
    free(dir);
    return path;
}

/* Open a directory for the fd-based snapdir functions; aborts the test on failure. */
static int
open_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
    return fd;
}

/* Entries of a directory other than . and .., as one sorted "a,b,c" string (static buffer). */
static const char *
dir_listing(const char *dir)
{
    static char out[4096];
    char *names[256];
    size_t n = 0, off = 0;
    struct dirent *e;
    DIR *d = opendir(dir);

    ck_assert_ptr_nonnull(d);
    while ((e = readdir(d)) != NULL && n < NELEM(names))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            names[n++] = strdup(e->d_name);
    closedir(d);
    for (size_t i = 1; i < n; i++) /* insertion sort: few names */
        for (size_t j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            char *x = names[j];
            names[j] = names[j - 1];
            names[j - 1] = x;
        }
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        off += (size_t)snprintf(out + off, sizeof(out) - off, "%s%s", i ? "," : "", names[i]);
        free(names[i]);
    }
    return out;
}

/* The tensor named name in f, or fail. */
static const snapshot_tensor *
find(const snapshot_file *f, const char *name)
{
    for (size_t i = 0; i < f->ntensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0)
            return &f->tensors[i];
    ck_abort_msg("tensor %s not in the file", name);
    return NULL;
}

/* Assert two tensors have the same name, kind, dtypes, update, shape, step and data bytes. */
static void
assert_same_tensor(const snapshot_tensor *a, const snapshot_tensor *b)
{
    ck_assert_str_eq(a->name, b->name);
    ck_assert_int_eq(a->kind, b->kind);
    ck_assert_int_eq(a->dtype, b->dtype);
    ck_assert_int_eq(a->sdtype, b->sdtype);
    ck_assert_int_eq(a->averaged, b->averaged);
    ck_assert_uint_eq(a->ndim, b->ndim);
    for (uint32_t i = 0; i < a->ndim; i++)
        ck_assert_uint_eq(a->shape[i], b->shape[i]);
    ck_assert_uint_eq(a->step, b->step);
    ck_assert_uint_eq(a->nbytes, b->nbytes);
    if (a->nbytes > 0)
        ck_assert_int_eq(memcmp(a->data, b->data, (size_t)a->nbytes), 0);
}

/* Assert f is exactly the example snapshot at step 50, decay index 1. */
static void
assert_example(const snapshot_file *f)
{
    emad_model_config cfg;
    snapshot_tensor t[5];

    example_config(&cfg);
    example_tensors(t);
    ck_assert_str_eq(f->model, "m");
    ck_assert_uint_eq(f->step, 50);
    ck_assert_uint_eq(f->decay_index, 1);
    ck_assert_ptr_null(emaconf_diff(&f->cfg, &cfg, 0));
    ck_assert_uint_eq(f->ntensors, NELEM(t));
    for (size_t i = 0; i < NELEM(t); i++)
        assert_same_tensor(find(f, t[i].name), &t[i]);
}

/* Assert snapshot_read of path fails with EMAD_EFORMAT and a message naming path and holding
 * needle. */
static void
expect_read_error(const char *path, const char *needle)
{
    snapshot_file *f = (snapshot_file *)1;
    char *cause = NULL;
    int rc = snapshot_read(path, &f, &cause);

    ck_assert_msg(rc == EMAD_EFORMAT, "expected EMAD_EFORMAT (\"%s\"), got %d (%s)", needle, rc,
                  cause ? cause : "");
    ck_assert_ptr_null(f);
    ck_assert_ptr_nonnull(cause);
    ck_assert_msg(strstr(cause, path) != NULL, "message \"%s\" does not name the file", cause);
    ck_assert_msg(strstr(cause, needle) != NULL, "message \"%s\" lacks \"%s\"", cause, needle);
    free(cause);
}

/* A growable byte buffer for laying out checksum input by hand. */
typedef struct bytes {
    unsigned char *p;
    size_t len;
} bytes;

static void
put(bytes *b, const void *p, size_t n)
{
    b->p = realloc(b->p, b->len + n + 1);
    ck_assert_ptr_nonnull(b->p);
    if (n > 0)
        memcpy(b->p + b->len, p, n);
    b->len += n;
}

/* A string with its terminating NUL. */
static void
put_str(bytes *b, const char *s)
{
    put(b, s, strlen(s) + 1);
}

/* A uint64, little-endian, one byte at a time. */
static void
put_u64(bytes *b, uint64_t v)
{
    unsigned char le[8];

    for (int i = 0; i < 8; i++)
        le[i] = (unsigned char)(v >> (8 * i));
    put(b, le, 8);
}

/* "xxh64:" + 16 hex digits of XXH64 (seed 0) of b, into out; frees b. */
static void
sum_of(bytes *b, char out[32])
{
    snprintf(out, 32, "xxh64:%016llx", (unsigned long long)XXH64(b->p, b->len, 0));
    free(b->p);
    b->p = NULL;
    b->len = 0;
}

/* One tensor's part of the data checksum: name, dtype name, ndim, dims, data. */
static void
put_tensor(bytes *b, const snapshot_tensor *t, const char *dtype)
{
    put_str(b, t->name);
    put_str(b, dtype);
    put_u64(b, t->ndim);
    for (uint32_t i = 0; i < t->ndim; i++)
        put_u64(b, t->shape[i]);
    put(b, t->data, (size_t)t->nbytes);
}

/* The metadata checksum of md[0..n) (emad_meta_checksum left out), by sorting keys here. */
static void
meta_sum(const safetensors_meta *md, size_t n, char out[32])
{
    const safetensors_meta *p[32];
    size_t k = 0;
    bytes b = {NULL, 0};

    for (size_t i = 0; i < n; i++)
        if (strcmp(md[i].key, "emad_meta_checksum") != 0)
            p[k++] = &md[i];
    for (size_t i = 1; i < k; i++)
        for (size_t j = i; j > 0 && strcmp(p[j - 1]->key, p[j]->key) > 0; j--) {
            const safetensors_meta *x = p[j];
            p[j] = p[j - 1];
            p[j - 1] = x;
        }
    for (size_t i = 0; i < k; i++) {
        put_str(&b, p[i]->key);
        put_str(&b, p[i]->value);
    }
    sum_of(&b, out);
}

START_TEST(test_snap_paths_are_zero_padded_under_snapshots)
{
    char *dir = snapdir_model_dir("/var/lib/emad", "resnet-50.v2");
    char *p1 = snapdir_path("/d", 50, 1), *p2 = snapdir_path("/d", UINT64_MAX, 0);

    ck_assert_str_eq(dir, "/var/lib/emad/snapshots/resnet-50.v2");
    ck_assert_str_eq(p1, "/d/00000000000000000050.d1.safetensors");
    ck_assert_str_eq(p2, "/d/18446744073709551615.d0.safetensors");
    free(dir);
    free(p1);
    free(p2);
}
END_TEST

START_TEST(test_snap_names_parse_only_the_snapshot_form)
{
    static const struct {
        const char *name;
        int ok;
        uint64_t step;
        size_t k;
    } cases[] = {
        {"00000000000000000050.d1.safetensors", 1, 50, 1},
        {"18446744073709551615.d7.safetensors", 1, UINT64_MAX, 7},
        {"00000000000000000000.d0.safetensors", 1, 0, 0},
        {"18446744073709551616.d0.safetensors", 0, 0, 0}, /* above UINT64_MAX */
        {"0000000000000000050.d1.safetensors", 0, 0, 0},  /* 19 digits */
        {"00000000000000000050.d8.safetensors", 0, 0, 0}, /* index >= EMAD_MAX_DECAYS */
        {"00000000000000000050.d01.safetensors", 0, 0, 0},
        {"00000000000000000050.d.safetensors", 0, 0, 0},
        {"00000000000000000050.d1.safetensors.broken", 0, 0, 0},
        {"00000000000000000050.d1.safetensor", 0, 0, 0},
        {"0000000000000000005x.d1.safetensors", 0, 0, 0},
    };
    char buf[64];
    uint64_t step;
    size_t k;

    for (size_t i = 0; i < NELEM(cases); i++) {
        step = 12345;
        k = 99;
        ck_assert_msg(snapshot_is_name(cases[i].name, &step, &k) == cases[i].ok, "%s",
                      cases[i].name);
        if (!cases[i].ok)
            continue;
        ck_assert_uint_eq(step, cases[i].step);
        ck_assert_uint_eq(k, cases[i].k);
        snprintf(buf, sizeof(buf), SNAPSHOT_NAME_FMT, step, k);
        ck_assert_str_eq(buf, cases[i].name);
    }
    /* A temp file name continues after the parsed part. */
    ck_assert_str_eq(
        snapshot_parse_name("00000000000000000050.d1.safetensors.tmp.AbC123", &step, &k),
        ".tmp.AbC123");
    ck_assert_ptr_null(snapshot_parse_name("x0000000000000000050.d1.safetensors", &step, &k));
}
END_TEST

START_TEST(test_snap_round_trip_keeps_bytes_shapes_steps_kinds_and_config)
{
    char *state = tu_tmpdir(), *sub, *path, *cause = NULL, *mdir;
    emad_model_config cfg;
    snapshot_tensor t[5];
    snapshot_meta m = {"m", 50, 1, &cfg};
    snapshot_file *f = NULL;
    uint64_t nbytes = 0;
    struct stat sb;

    /* The state dir does not exist yet: snapdir_write creates it and its subdirectories. */
    ck_assert_int_ne(asprintf(&sub, "%s/state/x", state), -1);
    example_config(&cfg);
    example_tensors(t);
    ck_assert_int_eq(snapdir_write(sub, &m, t, NELEM(t), &nbytes, &cause), 0);
    ck_assert_ptr_null(cause);
    mdir = snapdir_model_dir(sub, "m");
    path = snapdir_path(mdir, 50, 1);
    ck_assert_int_eq(stat(path, &sb), 0);
    ck_assert_uint_eq(nbytes, (uint64_t)sb.st_size);
    ck_assert_int_eq(stat(mdir, &sb), 0);
    ck_assert_int_eq(sb.st_mode & 0777, 0750);
    ck_assert_str_eq(dir_listing(mdir), "00000000000000000050.d1.safetensors");

    ck_assert_int_eq(snapshot_read(path, &f, &cause), 0);
    ck_assert_ptr_null(cause);
    assert_example(f);
    /* The configuration's patterns are owned copies, not the writer's strings. */
    ck_assert_uint_eq(f->cfg.ncopy, 2);
    ck_assert_str_eq(f->cfg.copy[0], "*.num_batches_tracked");
    ck_assert_str_eq(f->cfg.copy[1], "bn.*");
    ck_assert_ptr_ne(f->cfg.copy[0], cfg.copy[0]);
    ck_assert_uint_eq(f->cfg.nignore, 1);
    ck_assert_str_eq(f->cfg.ignore[0], "aux.[ab]?");
    ck_assert(f->cfg.decays[0] == 0.999 && f->cfg.decays[1] == 0.9);
    ck_assert(f->cfg.power == 2.0 / 3.0 && f->cfg.inv_gamma == 1.5 && f->cfg.min_decay == 0.1);
    ck_assert_uint_eq(f->cfg.update_after_step, 10);
    ck_assert_uint_eq(f->cfg.writers, 3);
    ck_assert_int_eq(f->cfg.schedule, EMAD_SCHEDULE_WARMUP);
    ck_assert_int_eq(f->cfg.step_gap, EMAD_STEP_GAP_COMPENSATE);
    ck_assert_int_eq(f->cfg.buffers, EMAD_BUFFERS_AVERAGE);
    ck_assert_int_eq(f->cfg.nonfinite, EMAD_NONFINITE_SKIP);
    /* Tensors come back in byte order of their names. */
    ck_assert_str_eq(f->tensors[0].name, "bn.count");
    ck_assert_str_eq(f->tensors[4].name, "w");
    snapshot_file_free(f);
    snapshot_file_free(NULL);

    /* Rewriting the same step replaces the file (no second file, no temp). */
    ck_assert_int_eq(snapdir_write(sub, &m, t, NELEM(t), NULL, &cause), 0);
    ck_assert_str_eq(dir_listing(mdir), "00000000000000000050.d1.safetensors");
    free(path);
    free(mdir);
    free(sub);
    tu_rmtree(state);
    free(state);
}
END_TEST

START_TEST(test_snap_metadata_has_every_key_and_format_pt)
{
    static const char *const keys[] = {"format",        "emad_model",        "emad_step",
                                       "emad_decay",    "emad_decay_index",  "emad_decays",
                                       "emad_config",   "emad_tensors",      "emad_version",
                                       "emad_checksum", "emad_meta_checksum"};
    char *state = tu_tmpdir(), *path = write_example(state, 50, 1), *cause = NULL;
    safetensors_file *sf;
    json_t *cfg, *tens, *w;
    json_error_t jerr;

    ck_assert_int_eq(safetensors_read(&sf, path, &cause), 0);
    ck_assert_uint_eq(sf->nmeta, NELEM(keys));
    for (size_t i = 0; i < NELEM(keys); i++)
        ck_assert_msg(safetensors_meta_get(sf, keys[i]) != NULL, "metadata key %s missing",
                      keys[i]);
    ck_assert_str_eq(safetensors_meta_get(sf, "format"), "pt");
    ck_assert_str_eq(safetensors_meta_get(sf, "emad_model"), "m");
    ck_assert_str_eq(safetensors_meta_get(sf, "emad_step"), "50");
    ck_assert_str_eq(safetensors_meta_get(sf, "emad_decay"), "0.9");
    ck_assert_str_eq(safetensors_meta_get(sf, "emad_decay_index"), "1");
    ck_assert_str_eq(safetensors_meta_get(sf, "emad_decays"), "2");
    ck_assert_str_eq(safetensors_meta_get(sf, "emad_version"), PACKAGE_VERSION);

    /* The configuration is a JSON object with the keys of the create request. */
    cfg = json_loads(safetensors_meta_get(sf, "emad_config"), 0, &jerr);
    ck_assert_ptr_nonnull(cfg);
    ck_assert_uint_eq(json_object_size(cfg), 12);
    ck_assert_uint_eq(json_array_size(json_object_get(cfg, "decays")), 2);
    ck_assert(json_real_value(json_array_get(json_object_get(cfg, "decays"), 0)) == 0.999);
    ck_assert(json_real_value(json_array_get(json_object_get(cfg, "decays"), 1)) == 0.9);
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "schedule")), "warmup");
    ck_assert_int_eq(json_integer_value(json_object_get(cfg, "update_after_step")), 10);
    ck_assert(json_real_value(json_object_get(cfg, "inv_gamma")) == 1.5);
    ck_assert(json_real_value(json_object_get(cfg, "power")) == 2.0 / 3.0);
    ck_assert(json_real_value(json_object_get(cfg, "min_decay")) == 0.1);
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "step_gap")), "compensate");
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "buffers")), "average");
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "nonfinite")), "skip");
    ck_assert_int_eq(json_integer_value(json_object_get(cfg, "writers")), 3);
    ck_assert_str_eq(json_string_value(json_array_get(json_object_get(cfg, "copy"), 1)), "bn.*");
    ck_assert_str_eq(json_string_value(json_array_get(json_object_get(cfg, "ignore"), 0)),
                     "aux.[ab]?");
    json_decref(cfg);

    /* Each tensor's description; the averaged BF16 param is stored as F32. */
    tens = json_loads(safetensors_meta_get(sf, "emad_tensors"), 0, &jerr);
    ck_assert_ptr_nonnull(tens);
    ck_assert_uint_eq(json_object_size(tens), 5);
    w = json_object_get(tens, "w");
    ck_assert_str_eq(json_string_value(json_object_get(w, "kind")), "param");
    ck_assert_str_eq(json_string_value(json_object_get(w, "dtype")), "BF16");
    ck_assert_int_eq(json_integer_value(json_object_get(w, "step")), 40);
    ck_assert_str_eq(json_string_value(json_object_get(w, "update")), "average");
    w = json_object_get(tens, "bn.count");
    ck_assert_str_eq(json_string_value(json_object_get(w, "kind")), "buffer");
    ck_assert_str_eq(json_string_value(json_object_get(w, "dtype")), "I64");
    ck_assert_str_eq(json_string_value(json_object_get(w, "update")), "copy");
    json_decref(tens);
    ck_assert_int_eq(safetensors_find(sf, "w")->dtype, EMAD_F32);
    ck_assert_int_eq(safetensors_find(sf, "d")->dtype, EMAD_F64);
    ck_assert_int_eq(safetensors_find(sf, "bn.count")->dtype, EMAD_I64);
    ck_assert_uint_eq(safetensors_find(sf, "scale")->ndim, 0);
    safetensors_free(sf);
    free(path);
    tu_rmtree(state);
    free(state);
}
END_TEST

START_TEST(test_snap_checksums_are_xxh64_of_the_documented_layout)
{
    /* Names whose byte order ("B.x" < "a" < "a.b" < "a_b") is neither the order given nor the
     * writer's dtype-size order. */
    static const uint8_t u8[3] = {1, 2, 255};
    static const double f64[2] = {1.5, -0.0};
    static const int32_t i32[1] = {-7};
    static const float f32[4] = {1, 2, 3, 4};
    snapshot_tensor t[4] = {
        {.name = "a_b",
         .kind = EMAD_PARAM,
         .dtype = EMAD_F16,
         .sdtype = EMAD_F32,
         .averaged = 1,
         .ndim = 2,
         .shape = {2, 2},
         .step = 3,
         .data = f32,
         .nbytes = sizeof(f32)},
        {.name = "a",
         .kind = EMAD_PARAM,
         .dtype = EMAD_F64,
         .sdtype = EMAD_F64,
         .averaged = 1,
         .ndim = 1,
         .shape = {2},
         .step = 3,
         .data = f64,
         .nbytes = sizeof(f64)},
        {.name = "B.x",
         .kind = EMAD_BUFFER,
         .dtype = EMAD_U8,
         .sdtype = EMAD_U8,
         .ndim = 1,
         .shape = {3},
         .step = 2,
         .data = u8,
         .nbytes = sizeof(u8)},
        {.name = "a.b",
         .kind = EMAD_BUFFER,
         .dtype = EMAD_I32,
         .sdtype = EMAD_I32,
         .ndim = 0,
         .step = 3,
         .data = i32,
         .nbytes = sizeof(i32)},
    };
    emad_model_config cfg;
    snapshot_meta m = {"m", 3, 0, &cfg};
    char *state = tu_tmpdir(), *dir, *path, *cause = NULL, want[32];
    unsigned char raw[8];
    safetensors_file *sf;
    bytes b = {NULL, 0};

    emaconf_init(&cfg);
    ck_assert_int_eq(snapdir_write(state, &m, t, 4, NULL, &cause), 0);
    dir = snapdir_model_dir(state, "m");
    path = snapdir_path(dir, 3, 0);
    ck_assert_int_eq(safetensors_read(&sf, path, &cause), 0);

    /* Data checksum: laid out here tensor by tensor in name order. */
    put(&b, "B.x", 4);
    put(&b, "U8", 3);
    put_u64(&b, 1);
    put_u64(&b, 3);
    put(&b, u8, 3);
    put(&b, "a", 2);
    put(&b, "F64", 4);
    put_u64(&b, 1);
    put_u64(&b, 2);
    put(&b, f64, 16);
    put(&b, "a.b\0I32", 8);
    put_u64(&b, 0);
    memcpy(raw, i32, 4);
    put(&b, raw, 4);
    put(&b, "a_b\0F32", 8);
    put_u64(&b, 2);
    put_u64(&b, 2);
    put_u64(&b, 2);
    put(&b, f32, 16);
    sum_of(&b, want);
    ck_assert_str_eq(safetensors_meta_get(sf, "emad_checksum"), want);

    /* Metadata checksum: every other entry by key, key NUL value NUL. */
    meta_sum(sf->meta, sf->nmeta, want);
    ck_assert_str_eq(safetensors_meta_get(sf, "emad_meta_checksum"), want);
    safetensors_free(sf);
    free(path);
    free(dir);
    tu_rmtree(state);
    free(state);
}
END_TEST

/* The metadata of a hand-made example file (step 50, decay index 1); checksums added on write. */
static const char example_config_json[] =
    "{\"decays\":[0.999,0.9],\"schedule\":\"warmup\",\"update_after_step\":10,"
    "\"inv_gamma\":1.5,\"power\":0.66666666666666663,\"min_decay\":0.1,"
    "\"step_gap\":\"compensate\",\"buffers\":\"average\",\"nonfinite\":\"skip\","
    "\"writers\":3,\"copy\":[\"*.num_batches_tracked\",\"bn.*\"],\"ignore\":[\"aux.[ab]?\"]}";
static const char example_tensors_json[] =
    "{\"bn.count\":{\"kind\":\"buffer\",\"dtype\":\"I64\",\"step\":50,\"update\":\"copy\"},"
    "\"d\":{\"kind\":\"param\",\"dtype\":\"F64\",\"step\":50,\"update\":\"average\"},"
    "\"empty\":{\"kind\":\"buffer\",\"dtype\":\"U8\",\"step\":7,\"update\":\"copy\"},"
    "\"scale\":{\"kind\":\"param\",\"dtype\":\"F32\",\"step\":50,\"update\":\"average\"},"
    "\"w\":{\"kind\":\"param\",\"dtype\":\"BF16\",\"step\":40,\"update\":\"average\"}}";

typedef struct kv {
    const char *key, *value;
} kv;

static const kv example_meta[] = {
    {"format", "pt"},
    {"emad_model", "m"},
    {"emad_step", "50"},
    {"emad_decay", "0.9"},
    {"emad_decay_index", "1"},
    {"emad_decays", "2"},
    {"emad_config", example_config_json},
    {"emad_tensors", example_tensors_json},
    {"emad_version", "9.9.9"},
};

/*
 * Write a snapshot file by hand with safetensors_write: the example tensors t[0..n)
 * as given (data in sdtype), the example metadata with `key` set to value
 * (removed if value is NULL; key NULL: no change), and the two checksums
 * computed here (unless `key` is one of them).
 */
static void
write_custom(const char *path, const snapshot_tensor *t, size_t n, const char *key,
             const char *value)
{
    safetensors_meta md[16];
    safetensors_tensor st[8];
    size_t k = 0, order[8];
    char data_sum[32], msum[32], *cause = NULL;
    int have_key = 0;
    bytes b = {NULL, 0};

    for (size_t i = 0; i < n; i++)
        order[i] = i;
    for (size_t i = 1; i < n; i++) /* name order for the data checksum */
        for (size_t j = i; j > 0 && strcmp(t[order[j - 1]].name, t[order[j]].name) > 0; j--) {
            size_t x = order[j];
            order[j] = order[j - 1];
            order[j - 1] = x;
        }
    for (size_t i = 0; i < n; i++)
        put_tensor(&b, &t[order[i]], dtype_name(t[order[i]].sdtype));
    sum_of(&b, data_sum);
    for (size_t i = 0; i < NELEM(example_meta); i++) {
        const char *v = example_meta[i].value;

        if (key != NULL && strcmp(key, example_meta[i].key) == 0) {
            have_key = 1;
            if ((v = value) == NULL)
                continue;
        }
        md[k++] = (safetensors_meta){(char *)example_meta[i].key, (char *)v};
    }
    if (key != NULL && !have_key && value != NULL && strcmp(key, "emad_checksum") != 0 &&
        strcmp(key, "emad_meta_checksum") != 0)
        md[k++] = (safetensors_meta){(char *)key, (char *)value};
    if (key == NULL || strcmp(key, "emad_checksum") != 0)
        md[k++] = (safetensors_meta){(char *)"emad_checksum", data_sum};
    else if (value != NULL)
        md[k++] = (safetensors_meta){(char *)"emad_checksum", (char *)value};
    meta_sum(md, k, msum);
    if (key == NULL || strcmp(key, "emad_meta_checksum") != 0)
        md[k++] = (safetensors_meta){(char *)"emad_meta_checksum", msum};
    else if (value != NULL)
        md[k++] = (safetensors_meta){(char *)"emad_meta_checksum", (char *)value};
    for (size_t i = 0; i < n; i++) {
        memset(&st[i], 0, sizeof(st[i]));
        st[i].name = (char *)t[i].name;
        st[i].dtype = t[i].sdtype;
        st[i].ndim = t[i].ndim;
        memcpy(st[i].shape, t[i].shape, sizeof(st[i].shape));
        st[i].data = t[i].data;
        st[i].nbytes = t[i].nbytes;
    }
    ck_assert_msg(safetensors_write(path, st, n, md, k, &cause) == 0, "safetensors_write: %s",
                  cause);
}

START_TEST(test_snap_reads_a_file_written_by_hand_from_the_spec)
{
    char *dir = tu_tmpdir(), path[512], *cause = NULL;
    snapshot_tensor t[5];
    snapshot_file *f = NULL;

    example_tensors(t);
    snprintf(path, sizeof(path), "%s/export.safetensors", dir);
    write_custom(path, t, 5, NULL, NULL);
    ck_assert_msg(snapshot_read(path, &f, &cause) == 0, "%s", cause);
    assert_example(f);
    snapshot_file_free(f);

    /* An extra metadata key is not an error (covered by the metadata checksum). */
    write_custom(path, t, 5, "note", "hello");
    ck_assert_msg(snapshot_read(path, &f, &cause) == 0, "%s", cause);
    snapshot_file_free(f);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_snap_read_rejects_missing_or_invalid_metadata)
{
    static const kv bad[] = {
        {"format", NULL},        {"emad_model", NULL},         {"emad_step", NULL},
        {"emad_decay", NULL},    {"emad_decay_index", NULL},   {"emad_decays", NULL},
        {"emad_config", NULL},   {"emad_tensors", NULL},       {"emad_version", NULL},
        {"emad_checksum", NULL}, {"emad_meta_checksum", NULL},
    };
    static const struct {
        const char *key, *value, *needle;
    } wrong[] = {
        {"format", "tf", "not 'pt'"},
        {"emad_model", ".hidden", "not a valid model name"},
        {"emad_step", "050", "not a decimal integer"},
        {"emad_step", "-1", "not a decimal integer"},
        {"emad_step", "18446744073709551616", "not a decimal integer"},
        {"emad_step", "49", "step 50 is after the model's step 49"},
        {"emad_decay_index", "2", "do not match the configuration's 2 decays"},
        {"emad_decays", "3", "do not match the configuration's 2 decays"},
        {"emad_decay", "0.99", "is not decay 1 of the configuration"},
        {"emad_decay", "0.9x", "is not decay 1 of the configuration"},
        {"emad_checksum", "xxh64:0123456789ABCDEF", "is not xxh64: and 16 lowercase hex"},
        {"emad_checksum", "crc32:01234567", "is not xxh64: and 16 lowercase hex"},
        {"emad_checksum", "xxh64:0123456789abcdef", "data checksum mismatch"},
        {"emad_meta_checksum", "xxh64:0123456789abcdef", "metadata checksum mismatch"},
        {"emad_config", "[1]", "emad_config is not a JSON object"},
        {"emad_config", "{", "emad_config is not valid JSON"},
        {"emad_tensors", "[]", "emad_tensors is not a JSON object"},
    };
    char *dir = tu_tmpdir(), path[512];
    snapshot_tensor t[5];

    example_tensors(t);
    snprintf(path, sizeof(path), "%s/export.safetensors", dir);
    for (size_t i = 0; i < NELEM(bad); i++) {
        char needle[128];

        write_custom(path, t, 5, bad[i].key, NULL);
        snprintf(needle, sizeof(needle), "metadata key '%s' is missing", bad[i].key);
        expect_read_error(path, needle);
    }
    for (size_t i = 0; i < NELEM(wrong); i++) {
        write_custom(path, t, 5, wrong[i].key, wrong[i].value);
        expect_read_error(path, wrong[i].needle);
    }
    tu_rmtree(dir);
    free(dir);
}
END_TEST

/* example_config_json with the text `from` replaced by `to` (static buffer). */
static const char *
config_with(const char *from, const char *to)
{
    static char buf[2048];
    const char *p = strstr(example_config_json, from);

    ck_assert_ptr_nonnull(p);
    snprintf(buf, sizeof(buf), "%.*s%s%s", (int)(p - example_config_json), example_config_json, to,
             p + strlen(from));
    return buf;
}

/* example_tensors_json with the text `from` replaced by `to` (static buffer). */
static const char *
tensors_with(const char *from, const char *to)
{
    static char buf[2048];
    const char *p = strstr(example_tensors_json, from);

    ck_assert_ptr_nonnull(p);
    snprintf(buf, sizeof(buf), "%.*s%s%s", (int)(p - example_tensors_json), example_tensors_json,
             to, p + strlen(from));
    return buf;
}

START_TEST(test_snap_read_rejects_invalid_configuration)
{
    static const struct {
        const char *from, *to, *needle;
    } cases[] = {
        {"[0.999,0.9]", "[0.999,1.5]", "not a valid configuration"},
        {"[0.999,0.9]", "[0.9,0.9]", "not a valid configuration"},
        {"[0.999,0.9]", "[]", "'decays' is not an array of 1..8 numbers"},
        {"[0.999,0.9]", "[0.999,\"0.9\"]", "'decays'[1] is not a number"},
        {"\"warmup\"", "\"cosine\"", "'schedule' is not a valid schedule name"},
        {"\"compensate\"", "\"fill\"", "'step_gap' is not a valid step_gap name"},
        {"\"average\"", "7", "'buffers' is not a valid buffers name"},
        {"\"skip\"", "\"drop\"", "'nonfinite' is not a valid nonfinite name"},
        {"\"writers\":3", "\"writers\":0", "not a valid configuration"},
        {"\"writers\":3", "\"writers\":-3", "not an integer in range"},
        {"\"update_after_step\":10", "\"update_after_step\":1.5", "not an integer in range"},
        {"\"inv_gamma\":1.5", "\"inv_gamma\":-1", "not a valid configuration"},
        {"\"power\":0.66666666666666663", "\"power\":\"2/3\"", "'power' is not a number"},
        {"\"min_decay\":0.1", "\"min_decay\":2", "not a valid configuration"},
        {"\"min_decay\":0.1,", "", "key 'min_decay' is missing"},
        {"\"writers\":3", "\"writers\":3,\"extra\":1", "unknown key 'extra'"},
        {"[\"aux.[ab]?\"]", "[\"\"]", "not a valid configuration"},
        {"[\"aux.[ab]?\"]", "[1]", "'ignore'[0] is not a string"},
        {"[\"aux.[ab]?\"]", "\"aux\"", "'ignore' is not an array"},
    };
    char *dir = tu_tmpdir(), path[512];
    snapshot_tensor t[5];

    example_tensors(t);
    snprintf(path, sizeof(path), "%s/export.safetensors", dir);
    for (size_t i = 0; i < NELEM(cases); i++) {
        write_custom(path, t, 5, "emad_config", config_with(cases[i].from, cases[i].to));
        expect_read_error(path, cases[i].needle);
    }
    tu_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_snap_read_rejects_tensors_that_do_not_match_their_descriptions)
{
    static const struct {
        const char *from, *to, *needle;
    } cases[] = {
        /* A description with no tensor, a tensor with no description. */
        {"\"empty\":", "\"ghost\":", "emad_tensors describes 'ghost', but the file has no such"},
        {"\"empty\":{\"kind\":\"buffer\",\"dtype\":\"U8\",\"step\":7,\"update\":\"copy\"},", "",
         "tensor 'empty' has no description in emad_tensors"},
        /* Kinds, dtypes, steps, update. */
        {"\"kind\":\"buffer\",\"dtype\":\"I64\"", "\"kind\":\"weight\",\"dtype\":\"I64\"",
         "'bn.count': bad kind or dtype"},
        {"\"dtype\":\"BF16\"", "\"dtype\":\"BF8\"", "'w': bad kind or dtype"},
        {"\"step\":40", "\"step\":51", "'w': step 51 is after the model's step 50"},
        {"\"step\":40", "\"step\":-1", "'w' is not {kind, dtype, step, update}"},
        {"\"update\":\"copy\"}", "\"update\":\"mean\"}", "'bn.count': update is neither"},
        {"\"update\":\"copy\"}", "\"update\":\"copy\",\"x\":1}", "'bn.count' is not {kind"},
        /* The averaged BF16 param is stored as F32, its shadow dtype. */
        {"\"dtype\":\"BF16\"", "\"dtype\":\"F64\"",
         "tensor 'w' is stored as F32, but an averaged tensor pushed as F64 is stored as F64"},
        /* A copied tensor is stored in its pushed dtype. */
        {"\"dtype\":\"I64\"", "\"dtype\":\"U64\"",
         "tensor 'bn.count' is stored as I64, but a copied tensor pushed as U64 is stored as U64"},
        /* An integer tensor cannot be averaged. */
        {"\"dtype\":\"I64\",\"step\":50,\"update\":\"copy\"",
         "\"dtype\":\"I64\",\"step\":50,\"update\":\"average\"", "cannot be averaged"},
    };
    char *dir = tu_tmpdir(), path[512];
    snapshot_tensor t[5];

    example_tensors(t);
    snprintf(path, sizeof(path), "%s/export.safetensors", dir);
    for (size_t i = 0; i < NELEM(cases); i++) {
        write_custom(path, t, 5, "emad_tensors", tensors_with(cases[i].from, cases[i].to));
        expect_read_error(path, cases[i].needle);
    }

    /* The BF16 param stored as BF16 (the shadow must be F32). */
    {
        static const uint16_t bf[6] = {0x3f80, 0, 0, 0, 0, 0};
        t[0].sdtype = EMAD_BF16;
        t[0].data = bf;
        t[0].nbytes = sizeof(bf);
        write_custom(path, t, 5, NULL, NULL);
        expect_read_error(path, "tensor 'w' is stored as BF16, but an averaged tensor pushed as "
                                "BF16 is stored as F32");
    }
    /* The I64 buffer stored as I32. */
    {
        static const int32_t i32[3] = {1, 2, 3};
        example_tensors(t);
        t[2].sdtype = EMAD_I32;
        t[2].data = i32;
        t[2].nbytes = sizeof(i32);
        write_custom(path, t, 5, NULL, NULL);
        expect_read_error(path, "tensor 'bn.count' is stored as I32");
    }
    /* A tensor name the daemon would refuse. */
    {
        example_tensors(t);
        t[4].name = "bad\tname";
        write_custom(path, t, 5, "emad_tensors", tensors_with("\"empty\":", "\"bad\\tname\":"));
        expect_read_error(path, "is not valid");
    }
    tu_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_snap_read_rejects_a_file_name_that_contradicts_the_metadata)
{
    char *dir = tu_tmpdir(), path[512], *cause = NULL;
    snapshot_tensor t[5];
    snapshot_file *f;

    example_tensors(t);
    snprintf(path, sizeof(path), "%s/00000000000000000051.d1.safetensors", dir);
    write_custom(path, t, 5, NULL, NULL);
    expect_read_error(path, "the file name says step 51 decay 1, the metadata step 50 decay 1");
    snprintf(path, sizeof(path), "%s/00000000000000000050.d0.safetensors", dir);
    write_custom(path, t, 5, NULL, NULL);
    expect_read_error(path, "the file name says step 50 decay 0, the metadata step 50 decay 1");
    /* The right name reads; the metadata, not the name, gives step and decay. */
    snprintf(path, sizeof(path), "%s/00000000000000000050.d1.safetensors", dir);
    write_custom(path, t, 5, NULL, NULL);
    ck_assert_int_eq(snapshot_read(path, &f, &cause), 0);
    assert_example(f);
    snapshot_file_free(f);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_snap_read_rejects_truncated_files_and_mark_broken_sets_them_aside)
{
    char *state = tu_tmpdir(), *path = write_example(state, 50, 1), broken[600], *cause = NULL;
    size_t len, cuts[6];
    unsigned char *orig = tu_read_file(path, &len), *got;
    uint64_t n = tu_load_u64le(orig);
    snapshot_file *f = NULL;

    cuts[0] = 0;
    cuts[1] = 5;
    cuts[2] = 8;
    cuts[3] = 8 + (size_t)n / 2;
    cuts[4] = 8 + (size_t)n;
    cuts[5] = len - 1;
    for (size_t i = 0; i < NELEM(cuts); i++) {
        ck_assert_int_eq(tu_write_file(path, orig, cuts[i]), 0);
        expect_read_error(path, i == NELEM(cuts) - 1 ? "file is truncated" : "");
    }

    /* snapdir_mark_broken renames to .broken, replacing an older one. */
    snprintf(broken, sizeof(broken), "%s.broken", path);
    ck_assert_int_eq(tu_write_file(broken, "old", 3), 0);
    {
        char *slash = strrchr(path, '/');
        int dfd;

        *slash = '\0';
        dfd = open_dir(path);
        *slash = '/';
        ck_assert_int_eq(snapdir_mark_broken(dfd, slash + 1), 0);
        ck_assert_int_eq(access(path, F_OK), -1);
        ck_assert_int_eq(snapdir_mark_broken(dfd, slash + 1), -ENOENT);
        close(dfd);
    }
    got = tu_read_file(broken, &len);
    ck_assert_uint_eq(len, cuts[5]);
    ck_assert_int_eq(memcmp(got, orig, len), 0);
    free(got);
    /* A missing file is EMAD_EIO naming it. */
    ck_assert_int_eq(snapshot_read(path, &f, &cause), EMAD_EIO);
    ck_assert_ptr_null(f);
    ck_assert_ptr_nonnull(strstr(cause, path));
    free(cause);
    free(orig);
    free(path);
    tu_rmtree(state);
    free(state);
}
END_TEST

START_TEST(test_snap_read_rejects_wrong_header_length)
{
    static const int64_t deltas[] = {-1, 1, -8, 8, -200};
    char *state = tu_tmpdir(), *path = write_example(state, 50, 1);
    size_t len;
    unsigned char *orig = tu_read_file(path, &len);
    uint64_t n = tu_load_u64le(orig);

    for (size_t i = 0; i < NELEM(deltas) + 2; i++) {
        unsigned char *b = malloc(len);
        uint64_t v = i < NELEM(deltas)    ? n + (uint64_t)deltas[i]
                     : i == NELEM(deltas) ? 0
                                          : UINT64_MAX;

        memcpy(b, orig, len);
        for (int k = 0; k < 8; k++)
            b[k] = (unsigned char)(v >> (8 * k));
        ck_assert_int_eq(tu_write_file(path, b, len), 0);
        expect_read_error(path, "");
        free(b);
    }
    free(orig);
    free(path);
    tu_rmtree(state);
    free(state);
}
END_TEST

/*
 * Flip bit `bit` of byte pos of image orig (len bytes), write it to path
 * and read it. Returns 1 if snapshot_read rejected it with EMAD_EFORMAT (and a
 * message containing needle, unless NULL); 0 if the file read back is
 * exactly the example (asserted); -1 for anything else, described in
 * why[size]. The thousands of flips of a test are counted and asserted
 * once: a Check assertion per flip costs more than the flip.
 */
static int
flip_and_read(const char *path, const unsigned char *orig, size_t len, size_t pos, int bit,
              const char *needle, char *why, size_t size)
{
    unsigned char *b = malloc(len);
    snapshot_file *f = NULL;
    char *cause = NULL;
    int rc, result = 1;

    memcpy(b, orig, len);
    b[pos] ^= (unsigned char)(1u << bit);
    rc = tu_write_file(path, b, len);
    free(b);
    if (rc != 0) {
        snprintf(why, size, "byte %zu bit %d: cannot write %s", pos, bit, path);
        return -1;
    }
    rc = snapshot_read(path, &f, &cause);
    if (rc == 0) {
        assert_example(f);
        snapshot_file_free(f);
        return 0;
    }
    if (rc != EMAD_EFORMAT || (needle != NULL && strstr(cause, needle) == NULL)) {
        snprintf(why, size, "byte %zu bit %d: %d %s", pos, bit, rc, cause);
        result = -1;
    }
    free(cause);
    return result;
}

START_TEST(test_snap_read_rejects_every_bit_flip_of_header_and_data)
{
    char *state = tu_tmpdir(), *path = write_example(state, 50, 1), copy[600], *cause = NULL;
    char why[700] = "", first[700] = "";
    size_t len, rejected = 0, total = 0, n, bad = 0;
    unsigned char *orig = tu_read_file(path, &len);

    n = (size_t)tu_load_u64le(orig);
    /* Not at the snapshot name: only the content can give a flip away. */
    snprintf(copy, sizeof(copy), "%s/flipped.safetensors", state);

    /* Data bytes: every bit of every byte is a data checksum mismatch, expected vs got. */
    for (size_t pos = 8 + n; pos < len; pos++)
        for (int bit = 0; bit < 8; bit++)
            if (flip_and_read(copy, orig, len, pos, bit,
                              "data checksum mismatch: expected xxh64:", why, sizeof(why)) != 1 &&
                bad++ == 0)
                snprintf(first, sizeof(first), "%s", why[0] != '\0' ? why : "read back unchanged");
    ck_assert_msg(bad == 0, "%zu data bit flips not rejected; the first: %s", bad, first);
    /* One data flip in full: the message has the stored and the computed checksum. */
    {
        safetensors_file *sf;
        snapshot_file *f;
        char want[64];

        ck_assert_int_eq(safetensors_read(&sf, path, &cause), 0);
        snprintf(want, sizeof(want), "expected %s (emad_checksum), got xxh64:",
                 safetensors_meta_get(sf, "emad_checksum"));
        safetensors_free(sf);
        orig[len - 1] ^= 1;
        ck_assert_int_eq(tu_write_file(copy, orig, len), 0);
        orig[len - 1] ^= 1;
        ck_assert_int_eq(snapshot_read(copy, &f, &cause), EMAD_EFORMAT);
        ck_assert_msg(strstr(cause, want) != NULL, "%s", cause);
        free(cause);
    }
    /* Header bytes: every flip is rejected, or (harmless) reads back exactly the example. */
    bad = 0;
    for (size_t pos = 8; pos < 8 + n; pos++) {
        for (int bit = 0; bit < 8; bit++, total++) {
            int r = flip_and_read(copy, orig, len, pos, bit, NULL, why, sizeof(why));

            if (r < 0 && bad++ == 0)
                snprintf(first, sizeof(first), "%s", why);
            rejected += r == 1;
        }
    }
    ck_assert_msg(bad == 0, "%zu header bit flips failed otherwise; the first: %s", bad, first);
    ck_assert_msg(rejected == total, "%zu of %zu header bit flips read back unchanged",
                  total - rejected, total);
    /* A flip in the metadata: the metadata checksum catches it. */
    {
        const char *p = memmem(orig, len, "\"emad_version\":\"", 16);

        ck_assert_ptr_nonnull(p);
        why[0] = '\0';
        ck_assert_msg(flip_and_read(copy, orig, len, (size_t)(p - (const char *)orig) + 16, 0,
                                    "metadata checksum mismatch", why, sizeof(why)) == 1,
                      "%s", why);
    }
    free(orig);
    free(path);
    tu_rmtree(state);
    free(state);
}
END_TEST

/* What the disk-full child reports: snapdir_write's code and message. */
typedef struct child_result {
    int rc;
    char cause[512];
} child_result;

/*
 * In a forked child with SIGXFSZ ignored and a file size limit of `limit`
 * bytes, write the example model at step 60 with a 64 KiB tensor; returns
 * what snapdir_write returned there.
 */
static child_result
write_with_size_limit(const char *state, rlim_t limit)
{
    static double big[8192];
    child_result r;
    int pfd[2], status;
    pid_t pid;

    ck_assert_int_eq(pipe(pfd), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        emad_model_config cfg;
        snapshot_tensor t = {.name = "big",
                             .kind = EMAD_PARAM,
                             .dtype = EMAD_F64,
                             .sdtype = EMAD_F64,
                             .averaged = 1,
                             .ndim = 1,
                             .shape = {8192},
                             .step = 60,
                             .data = big,
                             .nbytes = sizeof(big)};
        snapshot_meta m = {"m", 60, 1, &cfg};
        struct rlimit rl = {limit, limit};
        char *cause = NULL;

        memset(&r, 0, sizeof(r));
        example_config(&cfg);
        if (signal(SIGXFSZ, SIG_IGN) == SIG_ERR || setrlimit(RLIMIT_FSIZE, &rl) != 0)
            _exit(3);
        r.rc = snapdir_write(state, &m, &t, 1, NULL, &cause);
        snprintf(r.cause, sizeof(r.cause), "%s", cause != NULL ? cause : "");
        if (write(pfd[1], &r, sizeof(r)) != (ssize_t)sizeof(r))
            _exit(4);
        _exit(0);
    }
    close(pfd[1]);
    ck_assert_int_eq(read(pfd[0], &r, sizeof(r)), (ssize_t)sizeof(r));
    close(pfd[0]);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    return r;
}

START_TEST(test_snap_write_disk_full_fails_cleanly_and_keeps_the_previous_snapshot)
{
    static const rlim_t limits[] = {1, 300, 16384};
    char *state = tu_tmpdir(), *path = write_example(state, 50, 1), *dir, *cause = NULL, *p60;
    size_t len, len2;
    unsigned char *before = tu_read_file(path, &len), *after;
    snapshot_file *f;

    dir = snapdir_model_dir(state, "m");
    p60 = snapdir_path(dir, 60, 1);
    for (size_t i = 0; i < NELEM(limits); i++) {
        child_result r = write_with_size_limit(state, limits[i]);

        ck_assert_msg(r.rc == -EFBIG, "limit %zu: %d %s", (size_t)limits[i], r.rc, r.cause);
        ck_assert_msg(strstr(r.cause, p60) != NULL && strstr(r.cause, strerror(EFBIG)) != NULL,
                      "%s", r.cause);
        /* No temp file, no step-60 file; step 50 is byte for byte the same and reads back. */
        ck_assert_str_eq(dir_listing(dir), "00000000000000000050.d1.safetensors");
        after = tu_read_file(path, &len2);
        ck_assert_uint_eq(len2, len);
        ck_assert_int_eq(memcmp(after, before, len), 0);
        free(after);
        ck_assert_int_eq(snapshot_read(path, &f, &cause), 0);
        assert_example(f);
        snapshot_file_free(f);
    }
    /* The next attempt without the limit succeeds. */
    {
        child_result r = write_with_size_limit(state, RLIM_INFINITY);
        ck_assert_msg(r.rc == 0, "%s", r.cause);
        ck_assert_str_eq(dir_listing(dir), "00000000000000000050.d1.safetensors,"
                                           "00000000000000000060.d1.safetensors");
    }
    free(before);
    free(p60);
    free(dir);
    free(path);
    tu_rmtree(state);
    free(state);
}
END_TEST

START_TEST(test_snap_write_reports_io_errors_and_rejects_bad_arguments)
{
    char *state = tu_tmpdir(), *cause = NULL, file[600];
    emad_model_config cfg;
    snapshot_tensor t[5], dup[5];
    snapshot_meta m = {"m", 50, 1, &cfg};

    example_config(&cfg);
    /* The model's directory is a file: EMAD_EIO naming the directory. */
    snprintf(file, sizeof(file), "%s/snapshots", state);
    ck_assert_int_eq(tu_write_file(file, "x", 1), 0);
    example_tensors(t);
    ck_assert_int_eq(snapdir_write(state, &m, t, 5, NULL, &cause), EMAD_EIO);
    ck_assert_msg(strstr(cause, "snapshots/m") != NULL && strstr(cause, strerror(ENOTDIR)), "%s",
                  cause);
    free(cause);
    cause = NULL;
    ck_assert_int_eq(unlink(file), 0);

#define EXPECT_BAD(code, needle)                                                                   \
    do {                                                                                           \
        ck_assert_int_eq(snapdir_write(state, &m, t, 5, NULL, &cause), (code));                    \
        ck_assert_msg(strstr(cause, (needle)) != NULL, "%s", cause);                               \
        free(cause);                                                                               \
        cause = NULL;                                                                              \
        example_tensors(t);                                                                        \
        example_config(&cfg);                                                                      \
        m = (snapshot_meta){"m", 50, 1, &cfg};                                                     \
    } while (0)

    m.model = "a/b";
    EXPECT_BAD(EMAD_EINVAL, "invalid model name");
    m.decay_index = 2;
    EXPECT_BAD(EMAD_EINVAL, "decay index 2, but the model has 2 decays");
    cfg.decays[1] = 2.0;
    EXPECT_BAD(EMAD_EINVAL, "invalid configuration");
    cfg.update_after_step = UINT64_MAX;
    /* emaconf_check() refuses what the snapshot's JSON cannot hold. */
    EXPECT_BAD(EMAD_EINVAL, "update_after_step 18446744073709551615 is out of range");
    t[0].sdtype = EMAD_BF16;
    EXPECT_BAD(
        EMAD_EINVAL,
        "tensor 'w': stored as BF16, but an averaged tensor pushed as BF16 is stored as F32");
    t[2].sdtype = EMAD_I32;
    EXPECT_BAD(
        EMAD_EINVAL,
        "tensor 'bn.count': stored as I32, but a copied tensor pushed as I64 is stored as I64");
    t[2].averaged = 1;
    EXPECT_BAD(EMAD_EINVAL, "tensor 'bn.count': stored as I64, but an averaged tensor pushed as "
                            "I64 is stored as (nothing: it cannot be averaged)");
    t[1].step = 51;
    EXPECT_BAD(EMAD_EINVAL, "tensor 'd': step 51 is after the model's step 50");
    m.step = UINT64_MAX;
    t[1].step = UINT64_C(1) << 63;
    EXPECT_BAD(EMAD_ERANGE, "tensor 'd': step 9223372036854775808 is above 2^63-1");
    t[1].nbytes = 8;
    EXPECT_BAD(EMAD_EINVAL, "tensor 'd': 8 bytes of data do not match its shape");
    t[3].data = NULL;
    EXPECT_BAD(EMAD_EINVAL, "tensor 'scale'");
    t[3].name = "";
    EXPECT_BAD(EMAD_EINVAL, "invalid tensor name");
    t[4].kind = 7;
    EXPECT_BAD(EMAD_EINVAL, "bad kind");
#undef EXPECT_BAD

    example_tensors(dup);
    dup[1] = dup[0];
    ck_assert_int_eq(snapdir_write(state, &m, dup, 2, NULL, &cause), EMAD_EINVAL);
    ck_assert_msg(strstr(cause, "tensor 'w' twice") != NULL, "%s", cause);
    free(cause);
    /* Nothing was written by any of them. */
    ck_assert_str_eq(dir_listing(state), "");
    tu_rmtree(state);
    free(state);
}
END_TEST

/* Create an empty regular file dir/name. */
static void
touch(const char *dir, const char *name)
{
    char p[600];

    snprintf(p, sizeof(p), "%s/%s", dir, name);
    ck_assert_int_eq(tu_write_file(p, "", 0), 0);
}

START_TEST(test_snap_list_steps_newest_first_numeric_ignoring_junk)
{
    static const char *const files[] = {
        "00000000000000000009.d0.safetensors",
        "00000000000000000010.d0.safetensors",
        "00000000000000000010.d1.safetensors",
        "00000000000000000100.d0.safetensors",
        "00000000000000000002.d3.safetensors",
        "18446744073709551615.d0.safetensors",
        /* junk */
        "123.d0.safetensors",
        "00000000000000000007.d0.safetensors.broken",
        ".00000000000000000008.d0.safetensors.tmp.a1B2c3",
        "00000000000000000011.d0.safetensor",
        "0000000000000000001x.d0.safetensors",
        "99999999999999999999.d0.safetensors",
        "00000000000000000012.d01.safetensors",
        "00000000000000000013.d8.safetensors",
        "00000000000000000015.D0.safetensors",
        "00000000000000000016.d.safetensors",
        "000000000000000000017.d0.safetensors",
        "notes.txt",
    };
    static const uint64_t want[] = {UINT64_MAX, 100, 10, 9, 2};
    char *dir = tu_tmpdir(), sub[600], missing[600];
    uint64_t *steps;
    size_t n;
    int fd;

    for (size_t i = 0; i < NELEM(files); i++)
        touch(dir, files[i]);
    snprintf(sub, sizeof(sub), "%s/00000000000000000014.d0.safetensors", dir);
    ck_assert_int_eq(mkdir(sub, 0700), 0); /* a directory, not a file */
    fd = open_dir(dir);
    ck_assert_int_eq(snapdir_list_steps(fd, &steps, &n), 0);
    ck_assert_uint_eq(n, NELEM(want));
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(steps[i] == want[i], "steps[%zu] = %llu", i, (unsigned long long)steps[i]);
    free(steps);
    /* A second walk over the same fd sees the same files. */
    ck_assert_int_eq(snapdir_list_steps(fd, &steps, &n), 0);
    ck_assert_uint_eq(n, NELEM(want));
    free(steps);
    close(fd);

    /* A missing model directory is -ENOENT; a file where it should be, -ENOTDIR. */
    snprintf(missing, sizeof(missing), "%s/snapshots", dir);
    ck_assert_int_eq(mkdir(missing, 0700), 0);
    ck_assert_int_eq(snapdir_open_model(dir, "none", 0), -ENOENT);
    touch(missing, "afile");
    ck_assert_int_eq(snapdir_open_model(dir, "afile", 0), -ENOTDIR);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_snap_prune_keeps_newest_complete_steps_and_removes_temps)
{
    static const char *const files[] = {
        "00000000000000000010.d0.safetensors",
        "00000000000000000010.d1.safetensors",
        "00000000000000000010.d2.safetensors",
        "00000000000000000020.d0.safetensors",
        "00000000000000000020.d1.safetensors",
        "00000000000000000025.d0.safetensors",
        "00000000000000000030.d0.safetensors",
        "00000000000000000030.d1.safetensors",
        "00000000000000000040.d0.safetensors",
        ".00000000000000000040.d1.safetensors.tmp.Ab12Cd",
        ".00000000000000000030.d1.safetensors.Ab12Cd",
        "00000000000000000005.d0.safetensors.broken",
        "notes.txt",
    };
    char *dir = tu_tmpdir();
    int fd;

    for (size_t i = 0; i < NELEM(files); i++)
        touch(dir, files[i]);
    fd = open_dir(dir);
    /*
     * Complete (both decays): 10, 20, 30. 25 and 40 miss d1. Keeping 2: 30 and 20; 10 goes
     * (with its stray d2), 25 goes (incomplete, older than the newest complete step), 40 stays
     * (a set possibly being written), the temp goes; other files are not ours.
     */
    ck_assert_uint_eq(snapdir_prune(fd, 2, 2), 5);
    ck_assert_str_eq(dir_listing(dir), ".00000000000000000030.d1.safetensors.Ab12Cd,"
                                       "00000000000000000005.d0.safetensors.broken,"
                                       "00000000000000000020.d0.safetensors,"
                                       "00000000000000000020.d1.safetensors,"
                                       "00000000000000000030.d0.safetensors,"
                                       "00000000000000000030.d1.safetensors,"
                                       "00000000000000000040.d0.safetensors,"
                                       "notes.txt");
    /* Nothing more to do. */
    ck_assert_uint_eq(snapdir_prune(fd, 2, 2), 0);
    /* keep 0 still keeps the newest complete step. */
    ck_assert_uint_eq(snapdir_prune(fd, 2, 0), 2);
    ck_assert_str_eq(dir_listing(dir), ".00000000000000000030.d1.safetensors.Ab12Cd,"
                                       "00000000000000000005.d0.safetensors.broken,"
                                       "00000000000000000030.d0.safetensors,"
                                       "00000000000000000030.d1.safetensors,"
                                       "00000000000000000040.d0.safetensors,"
                                       "notes.txt");
    /* With three decays no step is complete: nothing is removed. */
    ck_assert_uint_eq(snapdir_prune(fd, 3, 1), 0);
    /* Once 40 is complete, 30 is superseded with keep 1. */
    touch(dir, "00000000000000000040.d1.safetensors");
    ck_assert_uint_eq(snapdir_prune(fd, 2, 1), 2);
    ck_assert_str_eq(dir_listing(dir), ".00000000000000000030.d1.safetensors.Ab12Cd,"
                                       "00000000000000000005.d0.safetensors.broken,"
                                       "00000000000000000040.d0.safetensors,"
                                       "00000000000000000040.d1.safetensors,"
                                       "notes.txt");
    ck_assert_uint_eq(snapdir_prune(-1, 2, 1), 0);
    close(fd);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_snap_prune_keeps_what_snap_write_wrote)
{
    char *state = tu_tmpdir(), *dir;
    uint64_t *steps;
    size_t n;
    int fd;

    for (uint64_t s = 1; s <= 5; s++) {
        free(write_example(state, s * 50, 0));
        free(write_example(state, s * 50, 1));
    }
    dir = snapdir_model_dir(state, "m");
    fd = open_dir(dir);
    ck_assert_uint_eq(snapdir_prune(fd, 2, 2), 6);
    ck_assert_int_eq(snapdir_list_steps(fd, &steps, &n), 0);
    close(fd);
    ck_assert_uint_eq(n, 2);
    ck_assert_uint_eq(steps[0], 250);
    ck_assert_uint_eq(steps[1], 200);
    free(steps);
    free(dir);
    tu_rmtree(state);
    free(state);
}
END_TEST

START_TEST(test_snap_list_models_skips_invalid_names_and_files)
{
    char *state = tu_tmpdir(), p[600], **names;
    size_t n;

    ck_assert_int_eq(snapdir_list_models(state, &names, &n), 0); /* no snapshots dir yet */
    ck_assert_uint_eq(n, 0);
    free(names);
    free(write_example(state, 50, 0));
    snprintf(p, sizeof(p), "%s/snapshots/model-b.v2", state);
    ck_assert_int_eq(mkdir(p, 0700), 0);
    snprintf(p, sizeof(p), "%s/snapshots/.hidden", state);
    ck_assert_int_eq(mkdir(p, 0700), 0);
    snprintf(p, sizeof(p), "%s/snapshots/bad name", state);
    ck_assert_int_eq(mkdir(p, 0700), 0);
    snprintf(p, sizeof(p), "%s/snapshots/A_file", state);
    ck_assert_int_eq(tu_write_file(p, "", 0), 0);
    snprintf(p, sizeof(p), "%s/snapshots/Zeta", state);
    ck_assert_int_eq(mkdir(p, 0700), 0);
    ck_assert_int_eq(snapdir_list_models(state, &names, &n), 0);
    ck_assert_uint_eq(n, 3);
    ck_assert_str_eq(names[0], "Zeta");
    ck_assert_str_eq(names[1], "m");
    ck_assert_str_eq(names[2], "model-b.v2");
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    tu_rmtree(state);
    free(state);
}
END_TEST

/* The snapshot suite. */
static Suite *
snapshot_suite(void)
{
    Suite *s = suite_create("snapshot");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_snap_paths_are_zero_padded_under_snapshots);
    tcase_add_test(tc, test_snap_names_parse_only_the_snapshot_form);
    tcase_add_test(tc, test_snap_round_trip_keeps_bytes_shapes_steps_kinds_and_config);
    tcase_add_test(tc, test_snap_metadata_has_every_key_and_format_pt);
    tcase_add_test(tc, test_snap_checksums_are_xxh64_of_the_documented_layout);
    tcase_add_test(tc, test_snap_reads_a_file_written_by_hand_from_the_spec);
    tcase_add_test(tc, test_snap_read_rejects_missing_or_invalid_metadata);
    tcase_add_test(tc, test_snap_read_rejects_invalid_configuration);
    tcase_add_test(tc, test_snap_read_rejects_tensors_that_do_not_match_their_descriptions);
    tcase_add_test(tc, test_snap_read_rejects_a_file_name_that_contradicts_the_metadata);
    tcase_add_test(tc, test_snap_read_rejects_truncated_files_and_mark_broken_sets_them_aside);
    tcase_add_test(tc, test_snap_read_rejects_wrong_header_length);
    tcase_add_test(tc, test_snap_read_rejects_every_bit_flip_of_header_and_data);
    tcase_add_test(tc, test_snap_write_disk_full_fails_cleanly_and_keeps_the_previous_snapshot);
    tcase_add_test(tc, test_snap_write_reports_io_errors_and_rejects_bad_arguments);
    tcase_add_test(tc, test_snap_list_steps_newest_first_numeric_ignoring_junk);
    tcase_add_test(tc, test_snap_prune_keeps_newest_complete_steps_and_removes_temps);
    tcase_add_test(tc, test_snap_prune_keeps_what_snap_write_wrote);
    tcase_add_test(tc, test_snap_list_models_skips_invalid_names_and_files);
    tcase_set_timeout(tc, TU_TCASE_TIMEOUT);
    suite_add_tcase(s, tc);
    return s;
}

/* Run the snapshot suite; exit status 0 if every test passed. */
int
main(void)
{
    SRunner *sr = srunner_create(snapshot_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

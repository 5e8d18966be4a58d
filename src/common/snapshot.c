/*
 * snapshot.c - durable snapshots of a model's shadows as safetensors files.
 *
 * snapshot.h describes the file names and the metadata. This module turns
 * a model's tensors and configuration into one safetensors file per decay
 * (the configuration and the tensor descriptions as JSON built with
 * jansson, an XXH64 checksum over names, dtypes, shapes and data, and a
 * second one, emad_meta_checksum, over the other metadata entries), writes
 * it with st_write_ex() (temp file .NAME.tmp.XXXXXX in the model's
 * directory, fsync, rename, fsync of the directory), and reads it back
 * with every check a loader needs before it trusts a file. It also lists
 * and prunes the files of a model's directory and sets bad files aside.
 *
 * Decisions:
 * - emad_meta_checksum (an addition to snapshot.h's list): "xxh64:" + 16
 *   hex digits of XXH64 (seed 0) over every other __metadata__ entry in
 *   byte order of its key: the key, a NUL, the value, a NUL. Without it a
 *   flipped byte in the header (model name, a step, a config value) could
 *   load silently; with it every single-bit flip of a file is rejected
 *   (tests/check_snapshot.c tries them all).
 * - Uint64 values that travel as JSON integers (a tensor's step and
 *   update_after_step) must be <= 2^63 - 1, the largest integer jansson
 *   reads back; larger ones make snap_write fail with EMAD_ERANGE. The
 *   model's step travels as a decimal string (any uint64).
 * - Out of space (ENOSPC, EDQUOT, EFBIG) is returned as the negated errno,
 *   any other I/O failure as EMAD_EIO, bad arguments as EMAD_EINVAL.
 * - snap_read trusts the metadata, not the file name; but a file whose
 *   name has the snapshot form STEP.dK.safetensors and disagrees with its
 *   metadata is rejected (EMAD_EFORMAT), so a loader never mixes steps.
 * - Prune: an incomplete step never counts towards `keep`; it is removed
 *   once a newer complete step exists, and left alone while it is newer
 *   than every complete step (a set being written). The newest complete
 *   step is always kept (keep 0 counts as 1). .broken files are left for
 *   a human to look at.
 *
 * Nothing here keeps state or locks; all functions may run on any thread.
 * snap_prune removes every temp file of the directory, so it must not run
 * while a snap_write to the same model is in progress.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <xxhash.h>

#include "config.h"
#include "common/dtype.h"
#include "common/emaconf.h"
#include "common/proto.h"
#include "common/safetensors.h"
#include "common/snapshot.h"

#define SNAP_SUBDIR "snapshots"
#define SNAP_SUFFIX ".safetensors"
#define SNAP_STEP_DIGITS 20
#define SNAP_TMP_TAG "tmp"
#define SNAP_DIR_MODE 0750
#define SNAP_CHECKSUM_PREFIX "xxh64:"
#define SNAP_JSON_INT_MAX ((uint64_t)INT64_MAX)

/* Number of __metadata__ entries a snapshot file carries. */
#define SNAP_NMETA 11
/* The metadata key of the checksum over the other metadata entries. */
#define SNAP_META_SUM_KEY "emad_meta_checksum"
/* Length of "xxh64:" + 16 hex digits. */
#define SNAP_SUM_LEN 22

_Static_assert(sizeof(json_int_t) >= sizeof(int64_t), "jansson must have 64-bit integers");

/* Replace *cause with "PREFIX: *cause" (kept as it is if memory runs out); returns code. */
static int
prefix_cause(char **cause, int code, const char *prefix)
{
    char *old;

    if (cause == NULL || *cause == NULL)
        return code;
    old = *cause;
    *cause = NULL;
    proto_cause(cause, code, "%s: %s", prefix, old);
    if (*cause == NULL)
        *cause = old;
    else
        free(old);
    return code;
}

/* A malloc'd printf string, or NULL if memory runs out. */
__attribute__((format(printf, 1, 2))) static char *
strfmt(const char *fmt, ...)
{
    va_list ap;
    char *s;
    int len;

    va_start(ap, fmt);
    len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (len < 0 || (s = malloc((size_t)len + 1)) == NULL)
        return NULL;
    va_start(ap, fmt);
    (void)vsnprintf(s, (size_t)len + 1, fmt, ap);
    va_end(ap);
    return s;
}

/* Store v little-endian at p. */
static void
store_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* The code snap_write returns for errno e: the negated errno when out of space, else EMAD_EIO. */
static int
io_code(int e)
{
    if (e == ENOSPC || e == EDQUOT || e == EFBIG || e == ENOMEM)
        return -e;
    return EMAD_EIO;
}

/*
 * Parse a strict decimal uint64 (digits only, no sign, no leading zero but
 * in "0") from s[0..len). Returns 0, or -1 if s is anything else or overflows.
 */
static int
parse_u64(const char *s, size_t len, uint64_t *v)
{
    uint64_t x = 0;

    if (len == 0 || (len > 1 && s[0] == '0'))
        return -1;
    for (size_t i = 0; i < len; i++) {
        unsigned d = (unsigned)(s[i] - '0');

        if (d > 9 || x > (UINT64_MAX - d) / 10)
            return -1;
        x = x * 10 + d;
    }
    *v = x;
    return 0;
}

/*
 * Parse the snapshot file name at the start of s: 20 digits, ".d", the
 * decay index, ".safetensors". Returns a pointer just past it, or NULL if
 * s does not start with one.
 */
static const char *
parse_name(const char *s, uint64_t *step, size_t *decay_index)
{
    const char *p = s + SNAP_STEP_DIGITS, *q;
    uint64_t k;
    size_t sl = strlen(SNAP_SUFFIX);

    for (size_t i = 0; i < SNAP_STEP_DIGITS; i++)
        if (s[i] < '0' || s[i] > '9')
            return NULL;
    for (q = s; q < p - 1 && *q == '0'; q++) /* the zero padding */
        ;
    if (parse_u64(q, (size_t)(p - q), step) < 0) /* above UINT64_MAX */
        return NULL;
    if (p[0] != '.' || p[1] != 'd')
        return NULL;
    p += 2;
    for (q = p; *q >= '0' && *q <= '9'; q++)
        ;
    if (q - p > 3 || parse_u64(p, (size_t)(q - p), &k) < 0 || k >= EMAD_MAX_DECAYS)
        return NULL;
    if (strncmp(q, SNAP_SUFFIX, sl) != 0)
        return NULL;
    *decay_index = (size_t)k;
    return q + sl;
}

/* Is name exactly a snapshot file name STEP.dK.safetensors? */
static int
is_snapshot_name(const char *name, uint64_t *step, size_t *decay_index)
{
    const char *end = parse_name(name, step, decay_index);

    return end != NULL && *end == '\0';
}

/* Is name a snapshot temp file, .STEP.dK.safetensors.tmp.XXXXXX (see st_write_ex)? */
static int
is_temp_name(const char *name)
{
    const char *end;
    uint64_t step;
    size_t k;

    if (name[0] != '.' || (end = parse_name(name + 1, &step, &k)) == NULL)
        return 0;
    return strncmp(end, "." SNAP_TMP_TAG ".", strlen(SNAP_TMP_TAG) + 2) == 0 &&
           end[strlen(SNAP_TMP_TAG) + 2] != '\0';
}

/* The last path component of path (after the last '/'). */
static const char *
base_name(const char *path)
{
    const char *slash = strrchr(path, '/');

    return slash != NULL ? slash + 1 : path;
}

/* fsync a directory; 0 or a negative errno (EINVAL/ENOTSUP: the fs cannot, counts as done). */
static int
sync_dir(const char *dir)
{
    int fd, rc = 0;

    if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        return -errno;
    if (fsync(fd) < 0 && errno != EINVAL && errno != ENOTSUP)
        rc = -errno;
    (void)close(fd);
    return rc;
}

/* fsync the directory that holds path; 0 or a negative errno. */
static int
sync_parent(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir;
    int rc;

    if (slash == NULL)
        return sync_dir(".");
    if (slash == path)
        return sync_dir("/");
    if ((dir = strndup(path, (size_t)(slash - path))) == NULL)
        return -ENOMEM;
    rc = sync_dir(dir);
    free(dir);
    return rc;
}

/* Create one directory (its parent exists); a new one is made durable. 0 or a negative errno. */
static int
make_dir(const char *path)
{
    struct stat sb;

    if (mkdir(path, SNAP_DIR_MODE) == 0)
        return sync_parent(path);
    if (errno != EEXIST)
        return -errno;
    if (stat(path, &sb) < 0)
        return -errno;
    return S_ISDIR(sb.st_mode) ? 0 : -ENOTDIR;
}

/* mkdir -p: create path and its missing parents. 0 or a negative errno. */
static int
make_dirs(const char *path)
{
    char *p, *s;
    int rc = 0;

    if (path[0] == '\0')
        return -ENOENT;
    if ((p = strdup(path)) == NULL)
        return -ENOMEM;
    for (s = p + 1; rc == 0; s++) {
        char c = *s;

        if (c != '/' && c != '\0')
            continue;
        *s = '\0';
        if (s[-1] != '/')
            rc = make_dir(p);
        *s = c;
        if (c == '\0')
            break;
    }
    free(p);
    return rc;
}

/* Path of a model's snapshot directory (malloc'd, NULL if memory runs out). */
char *
snap_model_dir(const char *state_dir, const char *model)
{
    return strfmt("%s/" SNAP_SUBDIR "/%s", state_dir, model);
}

/* Path of one file of a set (malloc'd, NULL if memory runs out). */
char *
snap_path(const char *model_dir, uint64_t step, size_t decay_index)
{
    return strfmt("%s/%020" PRIu64 ".d%zu" SNAP_SUFFIX, model_dir, step, decay_index);
}

/* qsort order of snap_tensor by name (bytes compared as unsigned, as strcmp does). */
static int
cmp_tensor_name(const void *a, const void *b)
{
    return strcmp(((const snap_tensor *)a)->name, ((const snap_tensor *)b)->name);
}

/*
 * XXH64 (seed 0) of tensors t[0..n), which are sorted by name: per tensor
 * the name and a NUL, the dtype name of the data and a NUL, ndim and the
 * dimensions as little-endian uint64, the data. Returns 0 or -ENOMEM.
 */
static int
checksum(const snap_tensor *t, size_t n, uint64_t *out)
{
    XXH64_state_t *st = XXH64_createState();
    unsigned char le[8];

    if (st == NULL || XXH64_reset(st, 0) != XXH_OK) {
        XXH64_freeState(st);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const char *dn = dtype_name(t[i].sdtype);

        (void)XXH64_update(st, t[i].name, strlen(t[i].name) + 1);
        (void)XXH64_update(st, dn, strlen(dn) + 1);
        store_le64(le, t[i].ndim);
        (void)XXH64_update(st, le, sizeof(le));
        for (uint32_t d = 0; d < t[i].ndim; d++) {
            store_le64(le, t[i].shape[d]);
            (void)XXH64_update(st, le, sizeof(le));
        }
        if (t[i].nbytes > 0)
            (void)XXH64_update(st, t[i].data, (size_t)t[i].nbytes);
    }
    *out = XXH64_digest(st);
    XXH64_freeState(st);
    return 0;
}

/* qsort order of metadata entry pointers by key. */
static int
cmp_meta_key(const void *a, const void *b)
{
    return strcmp((*(const st_meta *const *)a)->key, (*(const st_meta *const *)b)->key);
}

/*
 * XXH64 (seed 0) of the metadata md[0..n) but emad_meta_checksum itself:
 * for each entry in byte order of its key, the key, a NUL, the value, a
 * NUL. Returns 0 or -ENOMEM.
 */
static int
meta_checksum(const st_meta *md, size_t n, uint64_t *out)
{
    const st_meta **p = malloc((n > 0 ? n : 1) * sizeof(*p));
    XXH64_state_t *st = XXH64_createState();
    size_t k = 0;

    if (p == NULL || st == NULL || XXH64_reset(st, 0) != XXH_OK) {
        free(p);
        XXH64_freeState(st);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        if (strcmp(md[i].key, SNAP_META_SUM_KEY) != 0)
            p[k++] = &md[i];
    qsort(p, k, sizeof(*p), cmp_meta_key);
    for (size_t i = 0; i < k; i++) {
        (void)XXH64_update(st, p[i]->key, strlen(p[i]->key) + 1);
        (void)XXH64_update(st, p[i]->value, strlen(p[i]->value) + 1);
    }
    *out = XXH64_digest(st);
    XXH64_freeState(st);
    free(p);
    return 0;
}

/* A checksum as text, "xxh64:" and 16 lowercase hex digits (malloc'd), or NULL. */
static char *
sum_text(uint64_t sum)
{
    return strfmt(SNAP_CHECKSUM_PREFIX "%016" PRIx64, sum);
}

/* A JSON array of n reals, or NULL (no memory, or a value JSON cannot hold). */
static json_t *
real_array(const double *v, size_t n)
{
    json_t *a = json_array();

    for (size_t i = 0; a != NULL && i < n; i++) {
        if (json_array_append_new(a, json_real(v[i])) < 0) {
            json_decref(a);
            a = NULL;
        }
    }
    return a;
}

/* A JSON array of n strings, or NULL (no memory or invalid UTF-8). */
static json_t *
string_array(const char *const *p, size_t n)
{
    json_t *a = json_array();

    for (size_t i = 0; a != NULL && i < n; i++) {
        if (json_array_append_new(a, json_string(p[i])) < 0) {
            json_decref(a);
            a = NULL;
        }
    }
    return a;
}

/* JSON text of a checked configuration (malloc'd), or NULL if memory runs out. */
static char *
config_text(const emad_model_config *cfg)
{
    json_t *o = json_object();
    char *text = NULL;
    int bad = o == NULL;

    bad = bad || json_object_set_new(o, "decays", real_array(cfg->decays, cfg->ndecays)) < 0;
    bad = bad ||
          json_object_set_new(o, "schedule", json_string(emaconf_schedule_name(cfg->schedule))) < 0;
    bad = bad || json_object_set_new(o, "update_after_step",
                                     json_integer((json_int_t)cfg->update_after_step)) < 0;
    bad = bad || json_object_set_new(o, "inv_gamma", json_real(cfg->inv_gamma)) < 0;
    bad = bad || json_object_set_new(o, "power", json_real(cfg->power)) < 0;
    bad = bad || json_object_set_new(o, "min_decay", json_real(cfg->min_decay)) < 0;
    bad = bad ||
          json_object_set_new(o, "step_gap", json_string(emaconf_step_gap_name(cfg->step_gap))) < 0;
    bad = bad ||
          json_object_set_new(o, "buffers", json_string(emaconf_buffers_name(cfg->buffers))) < 0;
    bad = bad || json_object_set_new(o, "nonfinite",
                                     json_string(emaconf_nonfinite_name(cfg->nonfinite))) < 0;
    bad = bad || json_object_set_new(o, "writers", json_integer((json_int_t)cfg->writers)) < 0;
    bad = bad || json_object_set_new(o, "copy", string_array(cfg->copy, cfg->ncopy)) < 0;
    bad = bad || json_object_set_new(o, "ignore", string_array(cfg->ignore, cfg->nignore)) < 0;
    if (!bad)
        text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    return text;
}

/* JSON text of the tensor descriptions of t[0..n) (malloc'd), or NULL if memory runs out. */
static char *
tensors_text(const snap_tensor *t, size_t n)
{
    json_t *o = json_object();
    char *text = NULL;
    int bad = o == NULL;

    for (size_t i = 0; !bad && i < n; i++) {
        json_t *e = json_object();

        bad = e == NULL ||
              json_object_set_new(e, "kind", json_string(proto_kind_name(t[i].kind))) < 0 ||
              json_object_set_new(e, "dtype", json_string(dtype_name(t[i].dtype))) < 0 ||
              json_object_set_new(e, "step", json_integer((json_int_t)t[i].step)) < 0 ||
              json_object_set_new(e, "update", json_string(t[i].averaged ? "average" : "copy")) < 0;
        if (bad)
            json_decref(e);
        else
            bad = json_object_set_new(o, t[i].name, e) < 0;
    }
    if (!bad)
        text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    return text;
}

/* Check what snap_write is asked to write: model, decay index, configuration. */
static int
check_meta(const snap_meta *m, char **cause)
{
    char why[256];

    if (m->model == NULL || proto_check_model_name(m->model, strlen(m->model)) != 0)
        return proto_cause(cause, EMAD_EINVAL, "snapshot: invalid model name '%.128s'",
                           m->model != NULL ? m->model : "(null)");
    if (m->cfg == NULL)
        return proto_cause(cause, EMAD_EINVAL, "snapshot of model %s: no configuration", m->model);
    if (emaconf_check(m->cfg, why, sizeof(why)) != 0)
        return proto_cause(cause, EMAD_EINVAL, "snapshot of model %s: invalid configuration: %s",
                           m->model, why);
    if (m->decay_index >= m->cfg->ndecays)
        return proto_cause(cause, EMAD_EINVAL,
                           "snapshot of model %s: decay index %zu, but the model has %zu decays",
                           m->model, m->decay_index, m->cfg->ndecays);
    if (m->cfg->update_after_step > SNAP_JSON_INT_MAX)
        return proto_cause(cause, EMAD_ERANGE,
                           "snapshot of model %s: update_after_step %" PRIu64
                           " exceeds 2^63-1, the largest the snapshot's JSON holds",
                           m->model, m->cfg->update_after_step);
    return 0;
}

/* The dtype a tensor's data has in a snapshot: the shadow's if averaged, else the pushed one. */
static int
stored_dtype(int dtype, int averaged)
{
    return averaged ? dtype_shadow(dtype) : dtype;
}

/*
 * Message for a tensor whose data dtype sdtype does not fit: what a tensor
 * pushed as dtype is stored as. Written into buf; returns buf.
 */
static const char *
dtype_mismatch(char *buf, size_t size, int sdtype, int dtype, int averaged)
{
    int want = stored_dtype(dtype, averaged);

    snprintf(buf, size, "stored as %s, but a%s tensor pushed as %s is stored as %s",
             dtype_name(sdtype) != NULL ? dtype_name(sdtype) : "?",
             averaged ? "n averaged" : " copied", dtype_name(dtype),
             want != EMAD_DTYPE_INVALID ? dtype_name(want) : "(nothing: it cannot be averaged)");
    return buf;
}

/* Check one tensor to write: name, kind, dtypes, step, size. */
static int
check_tensor(const snap_meta *m, const snap_tensor *t, char **cause)
{
    uint64_t nbytes;
    char msg[160];

    if (t->name == NULL || proto_check_tensor_name(t->name, strlen(t->name)) != 0)
        return proto_cause(cause, EMAD_EINVAL, "snapshot of model %s: invalid tensor name '%.200s'",
                           m->model, t->name != NULL ? t->name : "(null)");
    if (proto_kind_name(t->kind) == NULL || dtype_size(t->dtype) == 0)
        return proto_cause(cause, EMAD_EINVAL,
                           "snapshot of model %s: tensor '%.200s': bad kind %d or dtype %d",
                           m->model, t->name, t->kind, t->dtype);
    if (t->sdtype != stored_dtype(t->dtype, t->averaged) || t->sdtype == EMAD_DTYPE_INVALID)
        return proto_cause(cause, EMAD_EINVAL, "snapshot of model %s: tensor '%.200s': %s",
                           m->model, t->name,
                           dtype_mismatch(msg, sizeof(msg), t->sdtype, t->dtype, t->averaged));
    if (t->step > m->step)
        return proto_cause(cause, EMAD_EINVAL,
                           "snapshot of model %s: tensor '%.200s': step %" PRIu64
                           " is after the model's step %" PRIu64,
                           m->model, t->name, t->step, m->step);
    if (t->step > SNAP_JSON_INT_MAX)
        return proto_cause(cause, EMAD_ERANGE,
                           "snapshot of model %s: tensor '%.200s': step %" PRIu64
                           " is above 2^63-1, the largest the snapshot's JSON holds",
                           m->model, t->name, t->step);
    if (t->ndim > EMAD_MAX_NDIM || dtype_numel(t->shape, t->ndim, t->sdtype, NULL, &nbytes) < 0 ||
        nbytes != t->nbytes || (nbytes > 0 && t->data == NULL))
        return proto_cause(cause, EMAD_EINVAL,
                           "snapshot of model %s: tensor '%.200s': %" PRIu64
                           " bytes of data do not match its shape",
                           m->model, t->name, t->nbytes);
    return 0;
}

/*
 * Copy t[0..n) sorted by name into *sorted (malloc'd) after checking each
 * and that no name repeats. Returns 0, EMAD_EINVAL, EMAD_ERANGE or -ENOMEM.
 */
static int
sort_tensors(const snap_meta *m, const snap_tensor *t, size_t n, snap_tensor **sorted, char **cause)
{
    snap_tensor *s;
    int rc;

    *sorted = NULL;
    for (size_t i = 0; i < n; i++)
        if ((rc = check_tensor(m, &t[i], cause)) < 0)
            return rc;
    if ((s = malloc((n > 0 ? n : 1) * sizeof(*s))) == NULL)
        return proto_cause(cause, -ENOMEM, "out of memory");
    if (n > 0)
        memcpy(s, t, n * sizeof(*s));
    qsort(s, n, sizeof(*s), cmp_tensor_name);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(s[i - 1].name, s[i].name) == 0) {
            rc = proto_cause(cause, EMAD_EINVAL, "snapshot of model %s: tensor '%.200s' twice",
                             m->model, s[i].name);
            free(s);
            return rc;
        }
    }
    *sorted = s;
    return 0;
}

/* Free the values of the metadata snap_write built. */
static void
free_meta(st_meta *md, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(md[i].value);
}

/*
 * Build the __metadata__ entries (keys static, values malloc'd) for
 * tensors s[0..n) sorted by name; the metadata checksum comes last, over
 * the others. Returns 0 or -ENOMEM.
 */
static int
build_meta(const snap_meta *m, const snap_tensor *s, size_t n, st_meta md[SNAP_NMETA])
{
    static const char *const keys[SNAP_NMETA] = {
        "format",           "emad_model",    "emad_step",      "emad_decay",
        "emad_decay_index", "emad_decays",   "emad_config",    "emad_tensors",
        "emad_version",     "emad_checksum", SNAP_META_SUM_KEY};
    char dec[32];
    uint64_t sum;

    if (checksum(s, n, &sum) < 0)
        return -ENOMEM;
    md[0].value = strdup("pt");
    md[1].value = strdup(m->model);
    md[2].value = strfmt("%" PRIu64, m->step);
    md[3].value = strdup(emaconf_fmt_double(dec, sizeof(dec), m->cfg->decays[m->decay_index]));
    md[4].value = strfmt("%zu", m->decay_index);
    md[5].value = strfmt("%zu", m->cfg->ndecays);
    md[6].value = config_text(m->cfg);
    md[7].value = tensors_text(s, n);
    md[8].value = strdup(PACKAGE_VERSION);
    md[9].value = sum_text(sum);
    for (size_t i = 0; i < SNAP_NMETA; i++) {
        md[i].key = (char *)keys[i]; /* st_write_ex only reads it */
        if (i < SNAP_NMETA - 1 && md[i].value == NULL)
            return -ENOMEM;
    }
    if (meta_checksum(md, SNAP_NMETA - 1, &sum) < 0 || (md[10].value = sum_text(sum)) == NULL)
        return -ENOMEM;
    return 0;
}

/* Write one snapshot file to path atomically and durably; its directory must exist. */
int
snap_write_path(const char *path, const snap_meta *m, const snap_tensor *t, size_t n,
                uint64_t *bytes, char **cause)
{
    st_write_opts opts = {SNAP_TMP_TAG, 1, bytes};
    st_meta md[SNAP_NMETA] = {{NULL, NULL}};
    snap_tensor *s = NULL;
    st_tensor *st = NULL;
    int rc;

    if (cause != NULL)
        *cause = NULL;
    if ((rc = check_meta(m, cause)) < 0 || (rc = sort_tensors(m, t, n, &s, cause)) < 0)
        return rc;
    if ((st = calloc(n > 0 ? n : 1, sizeof(*st))) == NULL) {
        rc = proto_cause(cause, -ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = build_meta(m, s, n, md)) < 0) {
        rc = proto_cause(cause, rc, "%s: out of memory", path);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        st[i].name = (char *)s[i].name; /* st_write_ex only reads it */
        st[i].dtype = s[i].sdtype;
        st[i].ndim = s[i].ndim;
        memcpy(st[i].shape, s[i].shape, sizeof(st[i].shape));
        st[i].data = s[i].data;
        st[i].nbytes = s[i].nbytes;
    }
    rc = st_write_ex(path, st, n, md, SNAP_NMETA, &opts, cause);
    if (rc < 0 && rc > EMAD_EMALFORMED) /* a negated errno, not one of the EMAD_E* codes */
        rc = io_code(-rc);
out:
    free_meta(md, SNAP_NMETA);
    free(st);
    free(s);
    return rc;
}

/* Write one snapshot file into the model's directory (see snapshot.h). */
int
snap_write(const char *state_dir, const snap_meta *m, const snap_tensor *t, size_t n,
           uint64_t *bytes, char **cause)
{
    char *dir = NULL, *path = NULL;
    snap_tensor *s = NULL;
    int rc;

    if (cause != NULL)
        *cause = NULL;
    /* Check everything before creating directories. */
    if ((rc = check_meta(m, cause)) < 0 || (rc = sort_tensors(m, t, n, &s, cause)) < 0)
        return rc;
    free(s);
    if ((dir = snap_model_dir(state_dir, m->model)) == NULL ||
        (path = snap_path(dir, m->step, m->decay_index)) == NULL) {
        rc = proto_cause(cause, -ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = make_dirs(dir)) < 0) {
        rc = proto_cause(cause, io_code(-rc), "%s: cannot create the directory: %s", dir,
                         strerror(-rc));
        goto out;
    }
    rc = snap_write_path(path, m, t, n, bytes, cause);
out:
    free(path);
    free(dir);
    return rc;
}

/* Free a snapshot file read by snap_read; NULL accepted. */
void
snap_file_free(snap_file *f)
{
    if (f == NULL)
        return;
    free(f->model);
    emaconf_free(&f->cfg);
    free(f->tensors);
    st_free(f->priv);
    free(f);
}

/* A metadata value that must be present; NULL with *cause set if missing. */
static const char *
need_meta(const st_file *sf, const char *key, char **cause)
{
    const char *v = st_meta_get(sf, key);

    if (v == NULL)
        proto_cause(cause, EMAD_EFORMAT, "metadata key '%s' is missing", key);
    return v;
}

/* A metadata value that must be a decimal uint64; 0 or EMAD_EFORMAT. */
static int
meta_u64(const st_file *sf, const char *key, uint64_t *v, char **cause)
{
    const char *s = need_meta(sf, key, cause);

    if (s == NULL)
        return EMAD_EFORMAT;
    if (parse_u64(s, strlen(s), v) < 0)
        return proto_cause(cause, EMAD_EFORMAT,
                           "metadata key '%s': '%.40s' is not a decimal integer", key, s);
    return 0;
}

/* A non-negative JSON integer; 0 or -1. */
static int
json_u64(const json_t *j, uint64_t *v)
{
    if (!json_is_integer(j) || json_integer_value(j) < 0)
        return -1;
    *v = (uint64_t)json_integer_value(j);
    return 0;
}

/* Read an enum option of the configuration object by name; 0 or EMAD_EFORMAT. */
static int
config_enum(const json_t *o, const char *key, int *v, char **cause)
{
    const json_t *j = json_object_get(o, key);

    if (!json_is_string(j) ||
        (*v = emaconf_from_name(key, json_string_value(j), json_string_length(j))) < 0)
        return proto_cause(cause, EMAD_EFORMAT, "emad_config: '%s' is not a valid %s name", key,
                           key);
    return 0;
}

/* Read a number of the configuration object; 0 or EMAD_EFORMAT. */
static int
config_real(const json_t *o, const char *key, double *v, char **cause)
{
    const json_t *j = json_object_get(o, key);

    if (!json_is_number(j))
        return proto_cause(cause, EMAD_EFORMAT, "emad_config: '%s' is not a number", key);
    *v = json_number_value(j);
    return 0;
}

/* Read a pattern list (strings borrowed from o); 0 or EMAD_EFORMAT. */
static int
config_patterns(const json_t *o, const char *key, const char **p, size_t *n, char **cause)
{
    const json_t *a = json_object_get(o, key);

    if (!json_is_array(a) || json_array_size(a) > EMAD_MAX_GLOBS)
        return proto_cause(cause, EMAD_EFORMAT,
                           "emad_config: '%s' is not an array of at most %d "
                           "strings",
                           key, EMAD_MAX_GLOBS);
    for (size_t i = 0; i < json_array_size(a); i++) {
        const json_t *s = json_array_get(a, i);

        if (!json_is_string(s) || strlen(json_string_value(s)) != json_string_length(s))
            return proto_cause(cause, EMAD_EFORMAT, "emad_config: '%s'[%zu] is not a string", key,
                               i);
        p[i] = json_string_value(s);
    }
    *n = json_array_size(a);
    return 0;
}

/* Check the configuration object has exactly the keys of the create request; 0 or EMAD_EFORMAT. */
static int
config_keys(const json_t *o, char **cause)
{
    static const char *const keys[] = {
        "decays",   "schedule", "update_after_step", "inv_gamma", "power", "min_decay",
        "step_gap", "buffers",  "nonfinite",         "writers",   "copy",  "ignore"};
    const size_t nkeys = sizeof(keys) / sizeof(keys[0]);
    const char *key;
    json_t *v;

    for (size_t i = 0; i < nkeys; i++)
        if (json_object_get(o, keys[i]) == NULL)
            return proto_cause(cause, EMAD_EFORMAT, "emad_config: key '%s' is missing", keys[i]);
    json_object_foreach((json_t *)o, key, v)
    {
        size_t i = 0;

        while (i < nkeys && strcmp(keys[i], key) != 0)
            i++;
        if (i == nkeys)
            return proto_cause(cause, EMAD_EFORMAT, "emad_config: unknown key '%.64s'", key);
    }
    return 0;
}

/*
 * Parse the emad_config JSON text into cfg (pattern strings copied, free
 * with emaconf_free) and check it with emaconf_check. 0 or EMAD_EFORMAT.
 */
static int
parse_config(const char *text, emad_model_config *cfg, char **cause)
{
    emad_model_config c;
    json_t *o, *decays;
    json_error_t jerr;
    uint64_t u, w;
    char why[256];
    int rc;

    emaconf_init(&c);
    if ((o = json_loads(text, JSON_REJECT_DUPLICATES, &jerr)) == NULL)
        return proto_cause(cause, EMAD_EFORMAT, "emad_config is not valid JSON: %s", jerr.text);
    if (!json_is_object(o)) {
        rc = proto_cause(cause, EMAD_EFORMAT, "emad_config is not a JSON object");
        goto out;
    }
    if ((rc = config_keys(o, cause)) < 0)
        goto out;
    decays = json_object_get(o, "decays");
    if (!json_is_array(decays) || json_array_size(decays) < 1 ||
        json_array_size(decays) > EMAD_MAX_DECAYS) {
        rc = proto_cause(cause, EMAD_EFORMAT,
                         "emad_config: 'decays' is not an array of 1..%d "
                         "numbers",
                         EMAD_MAX_DECAYS);
        goto out;
    }
    c.ndecays = json_array_size(decays);
    for (size_t i = 0; i < c.ndecays; i++) {
        if (!json_is_number(json_array_get(decays, i))) {
            rc = proto_cause(cause, EMAD_EFORMAT, "emad_config: 'decays'[%zu] is not a number", i);
            goto out;
        }
        c.decays[i] = json_number_value(json_array_get(decays, i));
    }
    if (json_u64(json_object_get(o, "update_after_step"), &u) < 0 ||
        json_u64(json_object_get(o, "writers"), &w) < 0 || w > EMAD_MAX_WRITERS) {
        rc = proto_cause(cause, EMAD_EFORMAT,
                         "emad_config: 'update_after_step' or 'writers' is "
                         "not an integer in range");
        goto out;
    }
    c.update_after_step = u;
    c.writers = (uint32_t)w;
    if ((rc = config_enum(o, "schedule", &c.schedule, cause)) < 0 ||
        (rc = config_enum(o, "step_gap", &c.step_gap, cause)) < 0 ||
        (rc = config_enum(o, "buffers", &c.buffers, cause)) < 0 ||
        (rc = config_enum(o, "nonfinite", &c.nonfinite, cause)) < 0 ||
        (rc = config_real(o, "inv_gamma", &c.inv_gamma, cause)) < 0 ||
        (rc = config_real(o, "power", &c.power, cause)) < 0 ||
        (rc = config_real(o, "min_decay", &c.min_decay, cause)) < 0 ||
        (rc = config_patterns(o, "copy", c.copy, &c.ncopy, cause)) < 0 ||
        (rc = config_patterns(o, "ignore", c.ignore, &c.nignore, cause)) < 0)
        goto out;
    if (emaconf_check(&c, why, sizeof(why)) != 0) {
        rc = proto_cause(cause, EMAD_EFORMAT, "emad_config is not a valid configuration: %s", why);
        goto out;
    }
    emaconf_copy(cfg, &c);
out:
    json_decref(o);
    return rc;
}

/*
 * Compare the checksum got with the one the metadata key holds; what
 * names what the checksum covers, for the message. 0 or EMAD_EFORMAT.
 */
static int
check_sum(const st_file *sf, const char *key, uint64_t got, const char *what, char **cause)
{
    const char *want = need_meta(sf, key, cause);
    const size_t plen = strlen(SNAP_CHECKSUM_PREFIX);
    char text[SNAP_SUM_LEN + 1];

    if (want == NULL)
        return EMAD_EFORMAT;
    if (strlen(want) != SNAP_SUM_LEN || strncmp(want, SNAP_CHECKSUM_PREFIX, plen) != 0 ||
        strspn(want + plen, "0123456789abcdef") != SNAP_SUM_LEN - plen)
        return proto_cause(cause, EMAD_EFORMAT,
                           "metadata key '%s': '%.40s' is not xxh64: and 16 lowercase hex digits",
                           key, want);
    snprintf(text, sizeof(text), SNAP_CHECKSUM_PREFIX "%016" PRIx64, got);
    if (strcmp(text, want) != 0)
        return proto_cause(cause, EMAD_EFORMAT,
                           "%s checksum mismatch: expected %s (%s), got %s (the file was damaged "
                           "or changed)",
                           what, want, key, text);
    return 0;
}

/* Verify the checksum over the metadata entries; 0, EMAD_EFORMAT or -ENOMEM. */
static int
verify_meta(const st_file *sf, char **cause)
{
    uint64_t sum;

    if (meta_checksum(sf->meta, sf->nmeta, &sum) < 0)
        return proto_cause(cause, -ENOMEM, "out of memory");
    return check_sum(sf, SNAP_META_SUM_KEY, sum, "metadata", cause);
}

/*
 * Build f->tensors from the file's tensors, sorted by name (names and
 * data point into the file), and verify the data checksum over them.
 * 0, EMAD_EFORMAT or -ENOMEM.
 */
static int
collect_tensors(snap_file *f, const st_file *sf, char **cause)
{
    uint64_t sum;

    if ((f->tensors = calloc(sf->ntensors > 0 ? sf->ntensors : 1, sizeof(*f->tensors))) == NULL)
        return proto_cause(cause, -ENOMEM, "out of memory");
    for (size_t i = 0; i < sf->ntensors; i++) {
        snap_tensor *t = &f->tensors[i];
        const st_tensor *s = &sf->tensors[i];

        t->name = s->name;
        t->sdtype = s->dtype;
        t->ndim = s->ndim;
        memcpy(t->shape, s->shape, sizeof(t->shape));
        t->data = s->data;
        t->nbytes = s->nbytes;
    }
    f->ntensors = sf->ntensors;
    qsort(f->tensors, f->ntensors, sizeof(*f->tensors), cmp_tensor_name);
    if (checksum(f->tensors, f->ntensors, &sum) < 0)
        return proto_cause(cause, -ENOMEM, "out of memory");
    return check_sum(sf, "emad_checksum", sum, "data", cause);
}

/*
 * Fill t from the description d of a tensor of the file, checking it:
 * kind, pushed dtype, step (<= the model's), update, and that the file's
 * dtype fits. 0 or EMAD_EFORMAT.
 */
static int
describe_tensor(snap_tensor *t, const json_t *d, uint64_t model_step, char **cause)
{
    const json_t *kind = json_object_get(d, "kind"), *dtype = json_object_get(d, "dtype");
    const json_t *update = json_object_get(d, "update");
    const char *q = t->name;
    char msg[160];

    if (!json_is_object(d) || json_object_size(d) != 4 || !json_is_string(kind) ||
        !json_is_string(dtype) || !json_is_string(update) ||
        json_u64(json_object_get(d, "step"), &t->step) < 0)
        return proto_cause(cause, EMAD_EFORMAT,
                           "emad_tensors: '%.200s' is not {kind, dtype, step, update}", q);
    t->kind = proto_kind_from_name(json_string_value(kind), json_string_length(kind));
    t->dtype = dtype_from_name(json_string_value(dtype), json_string_length(dtype));
    if (t->kind < 0 || t->dtype == EMAD_DTYPE_INVALID)
        return proto_cause(cause, EMAD_EFORMAT, "emad_tensors: '%.200s': bad kind or dtype", q);
    if (strcmp(json_string_value(update), "average") == 0)
        t->averaged = 1;
    else if (strcmp(json_string_value(update), "copy") == 0)
        t->averaged = 0;
    else
        return proto_cause(cause, EMAD_EFORMAT,
                           "emad_tensors: '%.200s': update is neither average nor copy", q);
    if (t->step > model_step)
        return proto_cause(cause, EMAD_EFORMAT,
                           "emad_tensors: '%.200s': step %" PRIu64 " is after the model's step "
                           "%" PRIu64,
                           q, t->step, model_step);
    if (t->sdtype != stored_dtype(t->dtype, t->averaged) || t->sdtype == EMAD_DTYPE_INVALID)
        return proto_cause(cause, EMAD_EFORMAT, "tensor '%.200s' is %s", q,
                           dtype_mismatch(msg, sizeof(msg), t->sdtype, t->dtype, t->averaged));
    return 0;
}

/*
 * Check every tensor of f has a valid name and a description in
 * emad_tensors that fits it, and every description a tensor. 0,
 * EMAD_EFORMAT or -ENOMEM.
 */
static int
describe_tensors(snap_file *f, const st_file *sf, char **cause)
{
    const char *text = need_meta(sf, "emad_tensors", cause);
    json_t *o, *d;
    json_error_t jerr;
    const char *key;
    int rc = 0;

    if (text == NULL)
        return EMAD_EFORMAT;
    if ((o = json_loads(text, JSON_REJECT_DUPLICATES, &jerr)) == NULL || !json_is_object(o)) {
        json_decref(o);
        return proto_cause(cause, EMAD_EFORMAT, "emad_tensors is not a JSON object");
    }
    json_object_foreach(o, key, d)
    {
        if (st_find(sf, key) == NULL) {
            rc = proto_cause(cause, EMAD_EFORMAT,
                             "emad_tensors describes '%.200s', but the file has no such tensor",
                             key);
            goto out;
        }
    }
    for (size_t i = 0; i < f->ntensors && rc == 0; i++) {
        snap_tensor *t = &f->tensors[i];

        if (proto_check_tensor_name(t->name, strlen(t->name)) != 0)
            rc = proto_cause(cause, EMAD_EFORMAT, "tensor name '%.200s' is not valid", t->name);
        else if ((d = json_object_get(o, t->name)) == NULL)
            rc = proto_cause(cause, EMAD_EFORMAT,
                             "tensor '%.200s' has no description in emad_tensors", t->name);
        else
            rc = describe_tensor(t, d, f->step, cause);
    }
out:
    json_decref(o);
    return rc;
}

/*
 * Read the model, step, decay index, decays count, decay and configuration
 * from the metadata into f, checking they agree with each other and with
 * the file's name when it has the snapshot form. 0, EMAD_EFORMAT or -ENOMEM.
 */
static int
read_header(snap_file *f, const st_file *sf, const char *path, char **cause)
{
    const char *fmt, *model, *decay, *config;
    uint64_t index, ndecays, name_step;
    size_t name_index;
    char *end;
    double d;
    int rc;

    if ((fmt = need_meta(sf, "format", cause)) == NULL ||
        (model = need_meta(sf, "emad_model", cause)) == NULL ||
        (decay = need_meta(sf, "emad_decay", cause)) == NULL ||
        (config = need_meta(sf, "emad_config", cause)) == NULL ||
        need_meta(sf, "emad_version", cause) == NULL)
        return EMAD_EFORMAT;
    if (strcmp(fmt, "pt") != 0)
        return proto_cause(cause, EMAD_EFORMAT, "metadata 'format' is '%.40s', not 'pt'", fmt);
    if (proto_check_model_name(model, strlen(model)) != 0)
        return proto_cause(cause, EMAD_EFORMAT, "metadata 'emad_model' is not a valid model name");
    if ((rc = meta_u64(sf, "emad_step", &f->step, cause)) < 0 ||
        (rc = meta_u64(sf, "emad_decay_index", &index, cause)) < 0 ||
        (rc = meta_u64(sf, "emad_decays", &ndecays, cause)) < 0)
        return rc;
    if ((rc = parse_config(config, &f->cfg, cause)) < 0)
        return rc;
    if ((f->model = strdup(model)) == NULL)
        return proto_cause(cause, -ENOMEM, "out of memory");
    if (ndecays != f->cfg.ndecays || index >= ndecays)
        return proto_cause(cause, EMAD_EFORMAT,
                           "emad_decay_index %" PRIu64 " / emad_decays %" PRIu64
                           " do not match the configuration's %zu decays",
                           index, ndecays, f->cfg.ndecays);
    f->decay_index = (size_t)index;
    errno = 0;
    d = strtod(decay, &end);
    if (errno != 0 || end == decay || *end != '\0' || d != f->cfg.decays[index])
        return proto_cause(cause, EMAD_EFORMAT,
                           "emad_decay '%.40s' is not decay %zu of the configuration", decay,
                           f->decay_index);
    if (is_snapshot_name(base_name(path), &name_step, &name_index) &&
        (name_step != f->step || name_index != f->decay_index))
        return proto_cause(cause, EMAD_EFORMAT,
                           "the file name says step %" PRIu64 " decay %zu, the metadata step "
                           "%" PRIu64 " decay %zu",
                           name_step, name_index, f->step, f->decay_index);
    return 0;
}

/* Read and verify a snapshot file (see snapshot.h); messages start with the path. */
int
snap_read(const char *path, snap_file **out, char **cause)
{
    st_file *sf;
    snap_file *f;
    int rc;

    if (cause != NULL)
        *cause = NULL;
    *out = NULL;
    if ((rc = st_read(&sf, path, cause)) < 0)
        return rc == EMAD_EFORMAT ? prefix_cause(cause, rc, path) : rc;
    if ((f = calloc(1, sizeof(*f))) == NULL) {
        st_free(sf);
        return proto_cause(cause, -ENOMEM, "%s: out of memory", path);
    }
    f->priv = sf;
    if ((rc = verify_meta(sf, cause)) < 0 || (rc = collect_tensors(f, sf, cause)) < 0 ||
        (rc = read_header(f, sf, path, cause)) < 0 || (rc = describe_tensors(f, sf, cause)) < 0) {
        snap_file_free(f);
        return prefix_cause(cause, rc, path);
    }
    *out = f;
    return 0;
}

/* qsort order of steps: descending. */
static int
cmp_step_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? 1 : x > y ? -1 : 0;
}

/* Is the entry name of directory fd a regular file (symlinks followed)? */
static int
is_regular(int dfd, const char *name)
{
    struct stat sb;

    return fstatat(dfd, name, &sb, 0) == 0 && S_ISREG(sb.st_mode);
}

/* A growable array of (step, decay index) pairs found in a directory. */
typedef struct snap_entry {
    uint64_t step;
    size_t decay_index;
} snap_entry;

/*
 * Collect the snapshot files (regular files named STEP.dK.safetensors) of
 * an open directory into *out (malloc'd, *n entries); with remove_temps,
 * unlink the temp files and count them in *removed. 0 or -ENOMEM.
 */
static int
scan_dir(DIR *dir, snap_entry **out, size_t *n, int remove_temps, size_t *removed)
{
    snap_entry *e = NULL, *ne;
    size_t cap = 0;
    struct dirent *de;

    *n = 0;
    while ((de = readdir(dir)) != NULL) {
        snap_entry x;

        if (remove_temps && is_temp_name(de->d_name)) {
            if (unlinkat(dirfd(dir), de->d_name, 0) == 0)
                (*removed)++;
            continue;
        }
        if (!is_snapshot_name(de->d_name, &x.step, &x.decay_index) ||
            !is_regular(dirfd(dir), de->d_name))
            continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            if ((ne = realloc(e, cap * sizeof(*e))) == NULL) {
                free(e);
                return -ENOMEM;
            }
            e = ne;
        }
        e[(*n)++] = x;
    }
    *out = e;
    return 0;
}

/* Steps with at least one snapshot file, newest first (see snapshot.h). */
int
snap_list_steps(const char *model_dir, uint64_t **steps, size_t *n)
{
    DIR *dir;
    snap_entry *e;
    uint64_t *s;
    size_t ne, k = 0;
    int rc;

    *steps = NULL;
    *n = 0;
    if ((dir = opendir(model_dir)) == NULL)
        return errno == ENOENT ? 0 : -errno;
    rc = scan_dir(dir, &e, &ne, 0, NULL);
    (void)closedir(dir);
    if (rc < 0)
        return rc;
    if ((s = malloc((ne > 0 ? ne : 1) * sizeof(*s))) == NULL) {
        free(e);
        return -ENOMEM;
    }
    for (size_t i = 0; i < ne; i++)
        s[i] = e[i].step;
    free(e);
    qsort(s, ne, sizeof(*s), cmp_step_desc);
    for (size_t i = 0; i < ne; i++)
        if (k == 0 || s[k - 1] != s[i])
            s[k++] = s[i];
    *steps = s;
    *n = k;
    return 0;
}

/* Does e[0..n) hold every decay 0..ndecays-1 of step? */
static int
step_complete(const snap_entry *e, size_t n, uint64_t step, size_t ndecays)
{
    uint32_t have = 0;

    if (ndecays == 0 || ndecays > EMAD_MAX_DECAYS)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (e[i].step == step && e[i].decay_index < ndecays)
            have |= UINT32_C(1) << e[i].decay_index;
    return have == (UINT32_C(1) << ndecays) - 1;
}

/*
 * The steps prune keeps from: *newest gets the newest complete step and
 * *oldest the keep-th newest one (or the oldest complete one). Returns 0
 * if there is no complete step.
 */
static int
kept_range(const snap_entry *e, size_t n, size_t ndecays, size_t keep, uint64_t *newest,
           uint64_t *oldest)
{
    uint64_t *s = malloc((n > 0 ? n : 1) * sizeof(*s));
    size_t found = 0;

    if (s == NULL)
        return 0;
    for (size_t i = 0; i < n; i++)
        s[i] = e[i].step;
    qsort(s, n, sizeof(*s), cmp_step_desc);
    for (size_t i = 0; i < n && found < keep; i++) {
        if ((i > 0 && s[i] == s[i - 1]) || !step_complete(e, n, s[i], ndecays))
            continue;
        if (found++ == 0)
            *newest = s[i];
        *oldest = s[i];
    }
    free(s);
    return found > 0;
}

/*
 * Keep the newest `keep` complete steps (at least one); remove the files
 * of older steps, of incomplete steps older than the newest complete one,
 * and every temp file. Returns the number of files removed.
 */
size_t
snap_prune(const char *model_dir, size_t ndecays, size_t keep)
{
    DIR *dir;
    snap_entry *e;
    size_t n, removed = 0;
    uint64_t newest = 0, oldest = 0;

    if ((dir = opendir(model_dir)) == NULL)
        return 0;
    if (scan_dir(dir, &e, &n, 1, &removed) < 0) {
        (void)closedir(dir);
        return removed;
    }
    if (kept_range(e, n, ndecays, keep > 0 ? keep : 1, &newest, &oldest)) {
        for (size_t i = 0; i < n; i++) {
            char name[64];

            if (e[i].step >= oldest &&
                (e[i].step >= newest || step_complete(e, n, e[i].step, ndecays)))
                continue;
            snprintf(name, sizeof(name), "%020" PRIu64 ".d%zu" SNAP_SUFFIX, e[i].step,
                     e[i].decay_index);
            if (unlinkat(dirfd(dir), name, 0) == 0)
                removed++;
        }
    }
    free(e);
    if (removed > 0)
        (void)fsync(dirfd(dir));
    (void)closedir(dir);
    return removed;
}

/* Rename a bad file to PATH.broken (replacing an older one) and sync its directory. */
int
snap_mark_broken(const char *path)
{
    char *to = strfmt("%s.broken", path);
    int rc = 0;

    if (to == NULL)
        return -ENOMEM;
    if (rename(path, to) < 0)
        rc = -errno;
    else
        (void)sync_parent(path);
    free(to);
    return rc;
}

/* qsort order of C strings. */
static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Free names[0..n) and the array. */
static void
free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/*
 * Model directories under STATE_DIR/snapshots, sorted by name: entries
 * that are directories with a valid model name (others skipped). A
 * missing snapshots directory is no models. 0 or a negative errno.
 */
int
snap_list_models(const char *state_dir, char ***names, size_t *n)
{
    char *path = strfmt("%s/" SNAP_SUBDIR, state_dir), **v = NULL, **nv;
    size_t cap = 0, k = 0;
    struct dirent *de;
    struct stat sb;
    DIR *dir;

    *names = NULL;
    *n = 0;
    if (path == NULL)
        return -ENOMEM;
    dir = opendir(path);
    free(path);
    if (dir == NULL)
        return errno == ENOENT ? 0 : -errno;
    while ((de = readdir(dir)) != NULL) {
        if (proto_check_model_name(de->d_name, strlen(de->d_name)) != 0 ||
            fstatat(dirfd(dir), de->d_name, &sb, 0) < 0 || !S_ISDIR(sb.st_mode))
            continue;
        if (k == cap) {
            size_t ncap = cap ? 2 * cap : 8;

            if ((nv = realloc(v, ncap * sizeof(*v))) == NULL)
                goto fail;
            v = nv;
            cap = ncap;
        }
        if ((v[k] = strdup(de->d_name)) == NULL)
            goto fail;
        k++;
    }
    (void)closedir(dir);
    if (k > 1)
        qsort(v, k, sizeof(*v), cmp_str);
    *names = v;
    *n = k;
    return 0;

fail:
    free_names(v, k);
    (void)closedir(dir);
    return -ENOMEM;
}

/* Remove the temp files a dead writer left in a model's directory; returns how many. */
size_t
snap_remove_temps(const char *model_dir)
{
    DIR *dir = opendir(model_dir);
    snap_entry *e = NULL;
    size_t n = 0, removed = 0;

    if (dir == NULL)
        return 0;
    (void)scan_dir(dir, &e, &n, 1, &removed);
    free(e);
    closedir(dir);
    return removed;
}

/* Remove a model's snapshot directory and every file in it; 0 or a negative errno. */
int
snap_remove_model(const char *state_dir, const char *model)
{
    char *path = snap_model_dir(state_dir, model);
    DIR *dir;
    struct dirent *de;
    int rc = 0;

    if (path == NULL)
        return -ENOMEM;
    if ((dir = opendir(path)) != NULL) {
        while ((de = readdir(dir)) != NULL)
            if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
                (void)unlinkat(dirfd(dir), de->d_name, 0);
        closedir(dir);
    }
    if (rmdir(path) != 0)
        rc = errno == ENOENT ? 0 : -errno;
    else
        rc = sync_parent(path);
    free(path);
    return rc;
}

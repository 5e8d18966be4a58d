/*
 * snapshot.c - the snapshot file format (snapshot.h): writing one file and
 * reading one back.
 *
 * This module turns a model's tensors and configuration into one
 * safetensors file per decay (an XXH64 checksum over names, dtypes, shapes
 * and data computed here; the other metadata, the configuration and the
 * tensor descriptions as JSON and a second checksum over the metadata, is
 * built by snapshot_meta.c), writes it with safetensors_write_at() (temp file
 * .NAME.tmp.XXXXXX in the same directory, fsync, rename, fsync of the
 * directory, all relative to the directory's fd), and reads it back with
 * every check a loader needs before it trusts a file. Reading opens only a
 * regular file, with O_NOFOLLOW|O_NONBLOCK: a symlink is refused and a FIFO
 * cannot block the reader. Where the daemon keeps the files, and listing and pruning them,
 * is files/snapdir.c.
 *
 * Decisions:
 * - Uint64 values that travel as JSON integers (a tensor's step and
 *   update_after_step) must be <= 2^63 - 1, the largest integer jansson
 *   reads back; larger ones make snapshot_write_at fail with EMAD_ERANGE.
 *   The model's step travels as a decimal string (any uint64).
 * - Out of space (ENOSPC, EDQUOT, EFBIG) is returned as the negated errno,
 *   any other I/O failure as EMAD_EIO, bad arguments as EMAD_EINVAL.
 * - snapshot_read checks, in this order: the safetensors structure, the
 *   metadata checksum, the data checksum, the header, the tensor
 *   descriptions; the first failure is the one reported.
 *
 * Nothing here keeps state or locks; all functions may run on any thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "common/cause.h"
#include "common/dtype.h"
#include "common/emaconf.h"
#include "common/names.h"
#include "common/safetensors.h"
#include "common/snapshot.h"
#include "common/snapshot_meta.h"

#define SNAP_JSON_INT_MAX ((uint64_t)INT64_MAX)

/* Replace *cause with "PREFIX: *cause" (kept as it is if memory runs out); returns code. */
static int
prefix_cause(char **cause, int code, const char *prefix)
{
    char *old;

    if (cause == NULL || *cause == NULL)
        return code;
    old = *cause;
    *cause = NULL;
    cause_set(cause, code, "%s: %s", prefix, old);
    if (*cause == NULL)
        *cause = old;
    else
        free(old);
    return code;
}

/* Store v little-endian at p. */
static void
store_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* The code the writers return for errno e: the negated errno when out of space, else EMAD_EIO. */
int
snapshot_io_code(int e)
{
    if (e == ENOSPC || e == EDQUOT || e == EFBIG || e == ENOMEM)
        return -e;
    return EMAD_EIO;
}

/* qsort order of snapshot_tensor by name (bytes compared as unsigned, as strcmp does). */
static int
cmp_tensor_name(const void *a, const void *b)
{
    return strcmp(((const snapshot_tensor *)a)->name, ((const snapshot_tensor *)b)->name);
}

/*
 * XXH64 (seed 0) of tensors t[0..n), which are sorted by name: per tensor
 * the name and a NUL, the dtype name of the data and a NUL, ndim and the
 * dimensions as little-endian uint64, the data. Returns 0 or -ENOMEM.
 */
static int
checksum(const snapshot_tensor *t, size_t n, uint64_t *out)
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

/* Check what snapshot_write_at is asked to write: model, decay index, configuration. */
static int
check_meta(const snapshot_meta *m, char **cause)
{
    char why[256];

    if (m->model == NULL || names_check_model(m->model, strlen(m->model)) != 0)
        return cause_set(cause, EMAD_EINVAL, "snapshot: invalid model name '%.128s'",
                         m->model != NULL ? m->model : "(null)");
    if (m->cfg == NULL)
        return cause_set(cause, EMAD_EINVAL, "snapshot of model %s: no configuration", m->model);
    if (emaconf_check(m->cfg, why, sizeof(why)) != 0)
        return cause_set(cause, EMAD_EINVAL, "snapshot of model %s: invalid configuration: %s",
                         m->model, why);
    if (m->decay_index >= m->cfg->ndecays)
        return cause_set(cause, EMAD_EINVAL,
                         "snapshot of model %s: decay index %zu, but the model has %zu decays",
                         m->model, m->decay_index, m->cfg->ndecays);
    if (m->cfg->update_after_step > SNAP_JSON_INT_MAX)
        return cause_set(cause, EMAD_ERANGE,
                         "snapshot of model %s: update_after_step %" PRIu64
                         " exceeds 2^63-1, the largest the snapshot's JSON holds",
                         m->model, m->cfg->update_after_step);
    return 0;
}

/* Check one tensor to write: name, kind, dtypes, step, size. */
static int
check_tensor(const snapshot_meta *m, const snapshot_tensor *t, char **cause)
{
    uint64_t nbytes;
    char msg[160];

    if (t->name == NULL || names_check_tensor(t->name, strlen(t->name)) != 0)
        return cause_set(cause, EMAD_EINVAL, "snapshot of model %s: invalid tensor name '%.200s'",
                         m->model, t->name != NULL ? t->name : "(null)");
    if (names_kind_name(t->kind) == NULL || dtype_size(t->dtype) == 0)
        return cause_set(cause, EMAD_EINVAL,
                         "snapshot of model %s: tensor '%.200s': bad kind %d or dtype %d", m->model,
                         t->name, t->kind, t->dtype);
    if (snapshot_meta_check_dtype(t->sdtype, t->dtype, t->averaged, msg, sizeof(msg)) < 0)
        return cause_set(cause, EMAD_EINVAL, "snapshot of model %s: tensor '%.200s': %s", m->model,
                         t->name, msg);
    if (t->step > m->step)
        return cause_set(cause, EMAD_EINVAL,
                         "snapshot of model %s: tensor '%.200s': step %" PRIu64
                         " is after the model's step %" PRIu64,
                         m->model, t->name, t->step, m->step);
    if (t->step > SNAP_JSON_INT_MAX)
        return cause_set(cause, EMAD_ERANGE,
                         "snapshot of model %s: tensor '%.200s': step %" PRIu64
                         " is above 2^63-1, the largest the snapshot's JSON holds",
                         m->model, t->name, t->step);
    if (t->ndim > EMAD_MAX_NDIM || dtype_numel(t->shape, t->ndim, t->sdtype, NULL, &nbytes) < 0 ||
        nbytes != t->nbytes || (nbytes > 0 && t->data == NULL))
        return cause_set(cause, EMAD_EINVAL,
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
sort_tensors(const snapshot_meta *m, const snapshot_tensor *t, size_t n, snapshot_tensor **sorted,
             char **cause)
{
    snapshot_tensor *s;
    int rc;

    *sorted = NULL;
    for (size_t i = 0; i < n; i++)
        if ((rc = check_tensor(m, &t[i], cause)) < 0)
            return rc;
    if ((s = malloc((n > 0 ? n : 1) * sizeof(*s))) == NULL)
        return cause_set(cause, -ENOMEM, "out of memory");
    if (n > 0)
        memcpy(s, t, n * sizeof(*s));
    qsort(s, n, sizeof(*s), cmp_tensor_name);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(s[i - 1].name, s[i].name) == 0) {
            rc = cause_set(cause, EMAD_EINVAL, "snapshot of model %s: tensor '%.200s' twice",
                           m->model, s[i].name);
            free(s);
            return rc;
        }
    }
    *sorted = s;
    return 0;
}

/* Check what snapshot_write_at would write, without writing (see snapshot.h). */
int
snapshot_check_write(const snapshot_meta *m, const snapshot_tensor *t, size_t n, char **cause)
{
    snapshot_tensor *s = NULL;
    int rc;

    if ((rc = check_meta(m, cause)) < 0 || (rc = sort_tensors(m, t, n, &s, cause)) < 0)
        return rc;
    free(s);
    return 0;
}

/* Write one snapshot file dfd/name atomically and durably (see snapshot.h). */
int
snapshot_write_at(int dfd, const char *name, const snapshot_meta *m, const snapshot_tensor *t,
                  size_t n, uint64_t *bytes, char **cause)
{
    safetensors_write_opts opts = {SNAPSHOT_TMP_TAG, 1, bytes};
    safetensors_meta md[SNAPSHOT_NMETA] = {{NULL, NULL}};
    snapshot_tensor *s = NULL;
    safetensors_tensor *st = NULL;
    uint64_t sum;
    int rc;

    if (cause != NULL)
        *cause = NULL;
    if ((rc = check_meta(m, cause)) < 0 || (rc = sort_tensors(m, t, n, &s, cause)) < 0)
        return rc;
    if ((st = calloc(n > 0 ? n : 1, sizeof(*st))) == NULL) {
        rc = cause_set(cause, -ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = checksum(s, n, &sum)) < 0 || (rc = snapshot_meta_build(m, s, n, sum, md)) < 0) {
        rc = cause_set(cause, rc, "%s: out of memory", name);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        st[i].name = (char *)s[i].name; /* safetensors_write_ex only reads it */
        st[i].dtype = s[i].sdtype;
        st[i].ndim = s[i].ndim;
        memcpy(st[i].shape, s[i].shape, sizeof(st[i].shape));
        st[i].data = s[i].data;
        st[i].nbytes = s[i].nbytes;
    }
    rc = safetensors_write_at(dfd, name, st, n, md, SNAPSHOT_NMETA, &opts, cause);
    if (rc < 0 && rc > EMAD_EMALFORMED) /* a negated errno, not one of the EMAD_E* codes */
        rc = snapshot_io_code(-rc);
out:
    snapshot_meta_free(md, SNAPSHOT_NMETA);
    free(st);
    free(s);
    return rc;
}

/* Write one snapshot file at path (a user's path: followed as given); see snapshot.h. */
int
snapshot_write_path(const char *path, const snapshot_meta *m, const snapshot_tensor *t, size_t n,
                    uint64_t *bytes, char **cause)
{
    const char *slash = strrchr(path, '/');
    char *dir;
    int dfd, rc, e;

    if (cause != NULL)
        *cause = NULL;
    if ((dir = slash == NULL    ? strdup(".")
               : slash == path ? strdup("/")
                               : strndup(path, (size_t)(slash - path))) == NULL)
        return cause_set(cause, -ENOMEM, "out of memory");
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    e = errno;
    free(dir);
    if (dfd < 0)
        return cause_set(cause, snapshot_io_code(e), "%s: cannot open its directory: %s", path,
                         strerror(e));
    rc = snapshot_write_at(dfd, slash != NULL ? slash + 1 : path, m, t, n, bytes, cause);
    (void)close(dfd);
    if (rc < 0 && slash != NULL && cause != NULL && *cause != NULL) {
        char *old = *cause;

        *cause = NULL;
        cause_set(cause, rc, "%.*s/%s", (int)(slash - path), path, old);
        if (*cause == NULL)
            *cause = old;
        else
            free(old);
    }
    return rc;
}

/* Free a snapshot file read by snapshot_read; NULL accepted. */
void
snapshot_file_free(snapshot_file *f)
{
    if (f == NULL)
        return;
    free(f->model);
    emaconf_free(&f->cfg);
    free(f->tensors);
    safetensors_free(f->priv);
    free(f);
}

/*
 * Build f->tensors from the file's tensors, sorted by name (names and
 * data point into the file), and verify the data checksum over them.
 * 0, EMAD_EFORMAT or -ENOMEM.
 */
static int
collect_tensors(snapshot_file *f, const safetensors_file *sf, char **cause)
{
    uint64_t sum;

    if ((f->tensors = calloc(sf->ntensors > 0 ? sf->ntensors : 1, sizeof(*f->tensors))) == NULL)
        return cause_set(cause, -ENOMEM, "out of memory");
    for (size_t i = 0; i < sf->ntensors; i++) {
        snapshot_tensor *t = &f->tensors[i];
        const safetensors_tensor *s = &sf->tensors[i];

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
        return cause_set(cause, -ENOMEM, "out of memory");
    return snapshot_meta_check_data(sf, sum, cause);
}

/* Read and verify the snapshot file open on fd (left open); messages start with path. */
static int
read_fd(int fd, const char *path, snapshot_file **out, char **cause)
{
    safetensors_file *sf;
    snapshot_file *f;
    int rc;

    if ((rc = safetensors_read_fd(&sf, fd, path, cause)) < 0)
        return rc == EMAD_EFORMAT ? prefix_cause(cause, rc, path) : rc;
    if ((f = calloc(1, sizeof(*f))) == NULL) {
        safetensors_free(sf);
        return cause_set(cause, -ENOMEM, "%s: out of memory", path);
    }
    f->priv = sf;
    if ((rc = snapshot_meta_verify(sf, cause)) < 0 || (rc = collect_tensors(f, sf, cause)) < 0 ||
        (rc = snapshot_meta_read(f, sf, path, cause)) < 0) {
        snapshot_file_free(f);
        return prefix_cause(cause, rc, path);
    }
    *out = f;
    return 0;
}

/*
 * Open name in directory dfd (AT_FDCWD: a path) for reading: never through
 * a symlink in its last component, never blocking (a FIFO), and only a
 * regular file. Returns the fd or EMAD_EIO with *cause set.
 */
static int
open_regular(int dfd, const char *name, char **cause)
{
    struct stat sb;
    int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);

    if (fd < 0)
        return cause_set(cause, EMAD_EIO, "%s: %s", name,
                         errno == ELOOP ? "a symbolic link (not followed)" : strerror(errno));
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        int rc = cause_set(cause, EMAD_EIO, "%s: not a regular file", name);
        (void)close(fd);
        return rc;
    }
    return fd;
}

/* Read and verify a snapshot file at path (see snapshot.h); messages start with the path. */
int
snapshot_read(const char *path, snapshot_file **out, char **cause)
{
    return snapshot_read_at(AT_FDCWD, path, out, cause);
}

/* Read and verify the snapshot file name in directory dfd (see snapshot.h). */
int
snapshot_read_at(int dfd, const char *name, snapshot_file **out, char **cause)
{
    int fd, rc;

    if (cause != NULL)
        *cause = NULL;
    *out = NULL;
    if ((fd = open_regular(dfd, name, cause)) < 0)
        return fd;
    rc = read_fd(fd, name, out, cause);
    (void)close(fd);
    return rc;
}

/*
 * snapdir.c - the daemon's snapshot directory (see snapdir.h): paths of a
 * model's directory and files, writing a file into it (creating the
 * directories), listing the steps and the models it holds, pruning old
 * steps, removing temp files a dead writer left, and setting bad files
 * aside. The file format and the atomic write are common/snapshot.c.
 *
 * Decisions:
 * - snapdir_write checks everything (snapshot_check_write) before it creates a
 *   directory, so a bad request leaves no trace on disk.
 * - Prune: an incomplete step never counts towards `keep`; it is removed
 *   once a newer complete step exists, and left alone while it is newer
 *   than every complete step (a set being written). The newest complete
 *   step is always kept (keep 0 counts as 1). .broken files are left for
 *   a human to look at.
 *
 * - The directory is the daemon's alone, and nothing in it is trusted to
 *   be what its name says: below STATE_DIR every directory is opened with
 *   O_DIRECTORY|O_NOFOLLOW and walked relative to its fd (openat,
 *   fstatat(AT_SYMLINK_NOFOLLOW), unlinkat, renameat), files are read only
 *   if they are regular (O_NOFOLLOW|O_NONBLOCK, fstat). A symlink is never
 *   followed, a FIFO never blocks. Removing a model removes only the names
 *   the daemon writes (snapshot files, their temp files, *.broken) and
 *   leaves, and logs, anything else; --state-dir itself may be a symlink
 *   (the operator's choice).
 *
 * Nothing here keeps state or locks; all functions may run on any thread.
 * snapdir_prune removes every temp file of the directory, so it must not run
 * while a snapdir_write to the same model is in progress.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "common/cause.h"
#include "common/names.h"
#include "common/snapshot.h"
#include "files/fileio.h"
#include "files/snapdir.h"

#define SNAP_SUBDIR "snapshots"
#define SNAP_DIR_MODE 0750
#define BROKEN_SUFFIX ".broken"

/* Names of foreign files logged when a model's directory is removed; the rest are counted. */
#define SNAP_LOG_LEFT_MAX 16

/* Is name a snapshot temp file, .STEP.dK.safetensors.tmp.XXXXXX (see safetensors_write_at)? */
static int
is_temp_name(const char *name)
{
    const char *end;
    uint64_t step;
    size_t k;

    if (name[0] != '.' || (end = snapshot_parse_name(name + 1, &step, &k)) == NULL)
        return 0;
    return strncmp(end, "." SNAPSHOT_TMP_TAG ".", strlen(SNAPSHOT_TMP_TAG) + 2) == 0 &&
           end[strlen(SNAPSHOT_TMP_TAG) + 2] != '\0';
}

/* Is name one the daemon writes: a snapshot file, its temp file, or a STEP.dK.safetensors.broken? */
static int
is_own_name(const char *name)
{
    const char *end;
    uint64_t step;
    size_t k;

    if (snapshot_is_name(name, &step, &k) || is_temp_name(name))
        return 1;
    return (end = snapshot_parse_name(name, &step, &k)) != NULL && strcmp(end, BROKEN_SUFFIX) == 0;
}

/* Is the entry name of directory dfd a regular file (a symlink is not)? */
static int
is_regular(int dfd, const char *name)
{
    struct stat sb;

    return fstatat(dfd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(sb.st_mode);
}

/* A file name for a log field: quotes, backslashes and unprintable bytes as '?'; returns buf. */
static const char *
printable(char *buf, size_t size, const char *name)
{
    size_t i;

    for (i = 0; name[i] != '\0' && i + 1 < size; i++) {
        unsigned char c = (unsigned char)name[i];
        buf[i] = c < 0x20 || c >= 0x7f || c == '"' || c == '\\' ? '?' : (char)c;
    }
    buf[i] = '\0';
    return buf;
}

/* Path of a model's snapshot directory (malloc'd, NULL if memory runs out). */
char *
snapdir_model_dir(const char *state_dir, const char *model)
{
    char *s;

    return asprintf(&s, "%s/" SNAP_SUBDIR "/%s", state_dir, model) < 0 ? NULL : s;
}

/* Path of one file of a set (malloc'd, NULL if memory runs out). */
char *
snapdir_path(const char *model_dir, uint64_t step, size_t decay_index)
{
    char *s;

    return asprintf(&s, "%s/" SNAPSHOT_NAME_FMT, model_dir, step, decay_index) < 0 ? NULL : s;
}

/*
 * Open STATE_DIR/snapshots (with create, made with STATE_DIR and its
 * parents if missing), not through a symlink; fd or a negative errno.
 */
static int
open_root(const char *state_dir, int create)
{
    int sfd, fd;

    if (create && (fd = fileio_make_dirs(state_dir, SNAP_DIR_MODE)) < 0)
        return fd;
    if ((sfd = open(state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        return -errno;
    fd = fileio_open_dir_at(sfd, SNAP_SUBDIR, create, SNAP_DIR_MODE);
    (void)close(sfd);
    return fd;
}

/* Open a model's directory, never through a symlink (see snapdir.h). */
int
snapdir_open_model(const char *state_dir, const char *model, int create)
{
    int root, fd;

    if (names_check_model(model, strlen(model)) != 0)
        return -EINVAL;
    if ((root = open_root(state_dir, create)) < 0)
        return root;
    fd = fileio_open_dir_at(root, model, create, SNAP_DIR_MODE);
    (void)close(root);
    return fd;
}

/* Write one snapshot file into the model's directory (see snapdir.h). */
int
snapdir_write(const char *state_dir, const snapshot_meta *m, const snapshot_tensor *t, size_t n,
              uint64_t *bytes, char **cause)
{
    char *dir = NULL, name[64];
    int rc, mfd;

    if (cause != NULL)
        *cause = NULL;
    /* Check everything before creating directories. */
    if ((rc = snapshot_check_write(m, t, n, cause)) < 0)
        return rc;
    if ((dir = snapdir_model_dir(state_dir, m->model)) == NULL)
        return cause_set(cause, -ENOMEM, "out of memory");
    if ((mfd = snapdir_open_model(state_dir, m->model, 1)) < 0) {
        rc = cause_set(cause, snapshot_io_code(-mfd),
                       "%s: cannot create or open the directory: %s%s", dir, strerror(-mfd),
                       mfd == -ELOOP || mfd == -ENOTDIR ? " (symbolic links are never followed)"
                                                        : "");
        free(dir);
        return rc;
    }
    snprintf(name, sizeof(name), SNAPSHOT_NAME_FMT, m->step, m->decay_index);
    rc = snapshot_write_at(mfd, name, m, t, n, bytes, cause);
    (void)close(mfd);
    if (rc < 0 && cause != NULL && *cause != NULL) {
        char *full; /* messages name the path */

        if (asprintf(&full, "%s/%s", dir, *cause) >= 0) {
            free(*cause);
            *cause = full;
        }
    }
    free(dir);
    return rc;
}

/* qsort order of steps: descending. */
static int
cmp_step_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? 1 : x > y ? -1 : 0;
}

/* A DIR stream over the directory open on fd (fd itself stays open); NULL with errno set. */
static DIR *
open_stream(int fd)
{
    int d = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    DIR *dir;

    if (d < 0)
        return NULL;
    if ((dir = fdopendir(d)) == NULL) {
        int e = errno;
        (void)close(d);
        errno = e;
        return NULL;
    }
    rewinddir(dir); /* the duplicate shares the offset of earlier walks */
    return dir;
}

/* A growable array of (step, decay index) pairs found in a directory. */
typedef struct snapdir_entry {
    uint64_t step;
    size_t decay_index;
} snapdir_entry;

/*
 * Collect the snapshot files (regular files named STEP.dK.safetensors) of
 * an open directory into *out (malloc'd, *n entries); with remove_temps,
 * unlink the temp files (regular files only) and count them in *removed.
 * 0 or -ENOMEM.
 */
static int
scan_dir(DIR *dir, snapdir_entry **out, size_t *n, int remove_temps, size_t *removed)
{
    snapdir_entry *e = NULL, *ne;
    size_t cap = 0;
    struct dirent *de;

    *n = 0;
    while ((de = readdir(dir)) != NULL) {
        snapdir_entry x;

        if (remove_temps && is_temp_name(de->d_name)) {
            if (is_regular(dirfd(dir), de->d_name) && unlinkat(dirfd(dir), de->d_name, 0) == 0)
                (*removed)++;
            continue;
        }
        if (!snapshot_is_name(de->d_name, &x.step, &x.decay_index) ||
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

/* Steps with at least one snapshot file, newest first (see snapdir.h). */
int
snapdir_list_steps(int mfd, uint64_t **steps, size_t *n)
{
    DIR *dir;
    snapdir_entry *e;
    uint64_t *s;
    size_t ne, k = 0;
    int rc;

    *steps = NULL;
    *n = 0;
    if ((dir = open_stream(mfd)) == NULL)
        return -errno;
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
step_complete(const snapdir_entry *e, size_t n, uint64_t step, size_t ndecays)
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
kept_range(const snapdir_entry *e, size_t n, size_t ndecays, size_t keep, uint64_t *newest,
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
snapdir_prune(int mfd, size_t ndecays, size_t keep)
{
    DIR *dir;
    snapdir_entry *e;
    size_t n, removed = 0;
    uint64_t newest = 0, oldest = 0;

    if ((dir = open_stream(mfd)) == NULL)
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
            snprintf(name, sizeof(name), SNAPSHOT_NAME_FMT, e[i].step, e[i].decay_index);
            if (unlinkat(mfd, name, 0) == 0)
                removed++;
        }
    }
    free(e);
    (void)closedir(dir);
    /*
     * No fsync of the directory: a removal that a crash undoes leaves an
     * older snapshot, which the next prune removes again.
     */
    return removed;
}

/* Rename a bad file to NAME.broken (replacing an older one) and sync its directory. */
int
snapdir_mark_broken(int mfd, const char *name)
{
    char *to;
    int rc = 0;

    if (asprintf(&to, "%s" BROKEN_SUFFIX, name) < 0)
        return -ENOMEM;
    if (renameat(mfd, name, mfd, to) < 0)
        rc = -errno;
    else
        (void)fileio_sync_dirfd(mfd);
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
 * that are directories (not symlinks) with a valid model name; a symlink
 * or other non-directory with a model's name is logged and skipped. A
 * missing snapshots directory is no models. 0 or a negative errno.
 */
int
snapdir_list_models(const char *state_dir, char ***names, size_t *n)
{
    char **v = NULL, **nv, buf[128];
    size_t cap = 0, k = 0;
    struct dirent *de;
    struct stat sb;
    DIR *dir;
    int root;

    *names = NULL;
    *n = 0;
    if ((root = open_root(state_dir, 0)) < 0)
        return root == -ENOENT ? 0 : root;
    dir = fdopendir(root);
    if (dir == NULL) {
        int e = errno;
        (void)close(root);
        return -e;
    }
    while ((de = readdir(dir)) != NULL) {
        if (names_check_model(de->d_name, strlen(de->d_name)) != 0 ||
            fstatat(dirfd(dir), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        if (!S_ISDIR(sb.st_mode)) {
            log_warn("event=snapshot_entry_ignored dir=%s/" SNAP_SUBDIR " name=\"%s\" reason=\"%s\"",
                     state_dir, printable(buf, sizeof(buf), de->d_name),
                     S_ISLNK(sb.st_mode) ? "a symbolic link (never followed)" : "not a directory");
            continue;
        }
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
snapdir_remove_temps(int mfd)
{
    DIR *dir = open_stream(mfd);
    snapdir_entry *e = NULL;
    size_t n = 0, removed = 0;

    if (dir == NULL)
        return 0;
    (void)scan_dir(dir, &e, &n, 1, &removed);
    free(e);
    (void)closedir(dir);
    return removed;
}

/*
 * Unlink the daemon's own regular files in the model directory open on
 * mfd; log the names of other entries (up to SNAP_LOG_LEFT_MAX). Returns
 * the number of entries left.
 */
static size_t
remove_own_files(int mfd, const char *model)
{
    DIR *dir = open_stream(mfd);
    struct dirent *de;
    size_t left = 0;
    char buf[128];

    if (dir == NULL)
        return 1;
    while ((de = readdir(dir)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (is_own_name(de->d_name) && is_regular(mfd, de->d_name) &&
            unlinkat(mfd, de->d_name, 0) == 0)
            continue;
        if (left++ < SNAP_LOG_LEFT_MAX)
            log_warn("event=snapshot_file_kept model=%s file=\"%s\" reason=\"not a file emad "
                     "writes: left as it is\"",
                     model, printable(buf, sizeof(buf), de->d_name));
    }
    (void)closedir(dir);
    return left;
}

/* Remove a model's own snapshot files and its directory if then empty (see snapdir.h). */
int
snapdir_remove_model(const char *state_dir, const char *model)
{
    int root, mfd, rc = 0;
    size_t left;

    if (names_check_model(model, strlen(model)) != 0)
        return -EINVAL;
    if ((root = open_root(state_dir, 0)) < 0)
        return root == -ENOENT ? 0 : root;
    if ((mfd = fileio_open_dir_at(root, model, 0, 0)) < 0) {
        if (mfd == -ELOOP || mfd == -ENOTDIR)
            log_warn("event=snapshot_dir_kept model=%s reason=\"not a directory (a symbolic link "
                     "is never followed): left as it is\"",
                     model);
        (void)close(root);
        return mfd == -ENOENT ? 0 : mfd;
    }
    left = remove_own_files(mfd, model);
    (void)fileio_sync_dirfd(mfd);
    (void)close(mfd);
    if (left > 0) {
        log_warn("event=snapshot_dir_kept model=%s left=%zu (files emad did not write are never "
                 "removed)",
                 model, left);
        rc = -ENOTEMPTY;
    } else if (unlinkat(root, model, AT_REMOVEDIR) != 0) {
        rc = errno == ENOENT ? 0 : -errno;
    } else {
        rc = fileio_sync_dirfd(root);
    }
    (void)close(root);
    return rc;
}

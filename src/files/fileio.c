/*
 * fileio.c - directory fsync and durable mkdir -p (see fileio.h).
 *
 * A file created or renamed into a directory survives a crash only once
 * the directory itself is synced; these helpers do that for the snapshot
 * writer and the snapshot directory's housekeeping. The *_at helpers open
 * what lies below the state directory relative to an open directory and
 * never through a symlink, so a link planted there cannot send the daemon
 * outside it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "files/fileio.h"

/* fsync a directory open on fd; 0 or a negative errno (EINVAL/ENOTSUP count as done). */
int
fileio_sync_dirfd(int fd)
{
    if (fsync(fd) < 0 && errno != EINVAL && errno != ENOTSUP)
        return -errno;
    return 0;
}

/* fsync a directory; 0 or a negative errno (EINVAL/ENOTSUP: the fs cannot, counts as done). */
int
fileio_sync_dir(const char *dir)
{
    int fd, rc;

    if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        return -errno;
    rc = fileio_sync_dirfd(fd);
    (void)close(fd);
    return rc;
}

/* fsync the directory that holds path; 0 or a negative errno. */
int
fileio_sync_parent(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir;
    int rc;

    if (slash == NULL)
        return fileio_sync_dir(".");
    if (slash == path)
        return fileio_sync_dir("/");
    if ((dir = strndup(path, (size_t)(slash - path))) == NULL)
        return -ENOMEM;
    rc = fileio_sync_dir(dir);
    free(dir);
    return rc;
}

/* Create one directory (its parent exists); a new one is made durable. 0 or a negative errno. */
static int
make_dir(const char *path, mode_t mode)
{
    struct stat sb;

    if (mkdir(path, mode) == 0)
        return fileio_sync_parent(path);
    if (errno != EEXIST)
        return -errno;
    if (stat(path, &sb) < 0)
        return -errno;
    return S_ISDIR(sb.st_mode) ? 0 : -ENOTDIR;
}

/* mkdir -p: create path and its missing parents. 0 or a negative errno. */
int
fileio_make_dirs(const char *path, mode_t mode)
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
            rc = make_dir(p, mode);
        *s = c;
        if (c == '\0')
            break;
    }
    free(p);
    return rc;
}

/* Open (and with create, make) the directory dfd/name without following a symlink. */
int
fileio_open_dir_at(int dfd, const char *name, int create, mode_t mode)
{
    const int flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
    int fd = openat(dfd, name, flags);

    if (fd >= 0)
        return fd;
    if (errno != ENOENT || !create)
        return -errno;
    if (mkdirat(dfd, name, mode) == 0)
        (void)fileio_sync_dirfd(dfd);
    else if (errno != EEXIST)
        return -errno;
    return (fd = openat(dfd, name, flags)) >= 0 ? fd : -errno;
}

/* Open dfd/name for reading if it is a regular file: no symlink, no blocking on a FIFO. */
int
fileio_open_regular_at(int dfd, const char *name)
{
    struct stat sb;
    int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);

    if (fd < 0)
        return -errno;
    if (fstat(fd, &sb) < 0) {
        int e = errno;
        (void)close(fd);
        return -e;
    }
    if (!S_ISREG(sb.st_mode)) {
        (void)close(fd);
        return -EINVAL;
    }
    return fd;
}

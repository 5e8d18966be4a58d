/*
 * fileio.h - small file-system helpers of the daemon: making a directory
 * (and its parents) durable, fsync of a directory after a rename or an
 * unlink in it, and opening directories and files below the state
 * directory without following symlinks. Each returns 0 (or an fd) or a
 * negative errno and keeps no state; they may run on any thread.
 */
#ifndef EMAD_FILEIO_H
#define EMAD_FILEIO_H

#include <sys/types.h>

/*
 * fsync a directory; 0 or a negative errno. EINVAL and ENOTSUP (a file
 * system that cannot sync directories) count as done.
 */
int fileio_sync_dir(const char *dir);

/* fsync_dir() of a directory open on fd; 0 or a negative errno. */
int fileio_sync_dirfd(int fd);

/* fsync the directory that holds path ("." for a bare name); 0 or a negative errno. */
int fileio_sync_parent(const char *path);

/*
 * mkdir -p: create path and its missing parents with mode; each new
 * directory is made durable (fsync of its parent). An existing directory
 * is fine, an existing non-directory is -ENOTDIR. 0 or a negative errno.
 */
int fileio_make_dirs(const char *path, mode_t mode);

/*
 * Open the directory name in the directory open on dfd (O_DIRECTORY |
 * O_NOFOLLOW | O_CLOEXEC): a symlink is -ELOOP and anything else that is
 * not a directory -ENOTDIR, never followed or opened. With create, a
 * missing one is made with mode and made durable (fsync of dfd). Returns
 * the fd or a negative errno (-ENOENT: missing and not created).
 */
int fileio_open_dir_at(int dfd, const char *name, int create, mode_t mode);

/*
 * Open the file name in the directory open on dfd for reading, only if it
 * is a regular file: O_NOFOLLOW (a symlink is -ELOOP) and O_NONBLOCK (a
 * FIFO or a device cannot block the open; it is then -EINVAL). Returns the
 * fd or a negative errno.
 */
int fileio_open_regular_at(int dfd, const char *name);

#endif

/*
 * fileio.h - small file-system helpers of the daemon: making a directory
 * (and its parents) durable, and fsync of a directory after a rename or
 * an unlink in it. Each returns 0 or a negative errno and keeps no state;
 * they may run on any thread.
 */
#ifndef EMAD_FILEIO_H
#define EMAD_FILEIO_H

#include <sys/types.h>

/*
 * fsync a directory; 0 or a negative errno. EINVAL and ENOTSUP (a file
 * system that cannot sync directories) count as done.
 */
int fileio_sync_dir(const char *dir);

/* fsync the directory that holds path ("." for a bare name); 0 or a negative errno. */
int fileio_sync_parent(const char *path);

/*
 * mkdir -p: create path and its missing parents with mode; each new
 * directory is made durable (fsync of its parent). An existing directory
 * is fine, an existing non-directory is -ENOTDIR. 0 or a negative errno.
 */
int fileio_make_dirs(const char *path, mode_t mode);

#endif

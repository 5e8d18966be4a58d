/*
 * safetensors.h - reader and writer for the safetensors file format.
 *
 * Follows the format of huggingface/safetensors exactly: 8-byte
 * little-endian header length N, N bytes of JSON (an object; may be padded
 * with trailing spaces), then the data buffer. The reader enforces the
 * reference rules: N <= 100,000,000; every entry has dtype, shape and
 * data_offsets; END - BEGIN == numel * itemsize; sorted offsets start at 0
 * and are contiguous (no holes, no overlap); file length == 8 + N + last
 * END; no duplicate names; "__metadata__" is a map of string to string.
 * The writer pads the header to a multiple of 8 and orders tensors by
 * dtype size (largest first) then name, so every tensor is aligned to its
 * element size. Used by emactl and by daemon snapshots.
 */
#ifndef EMAD_SAFETENSORS_H
#define EMAD_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "emad.h"

#define SAFETENSORS_MAX_HEADER 100000000u

typedef struct safetensors_tensor {
    char *name;
    int dtype; /* enum emad_dtype */
    uint32_t ndim;
    uint64_t shape[EMAD_MAX_NDIM];
    uint64_t offset; /* from the start of the data buffer */
    uint64_t nbytes;
    const void *data; /* points into safetensors_file's data (reader) */
} safetensors_tensor;

typedef struct safetensors_meta {
    char *key;
    char *value;
} safetensors_meta;

/* A parsed file: tensors in file order of their offsets; owns everything. */
typedef struct safetensors_file {
    safetensors_tensor *tensors;
    size_t ntensors;
    safetensors_meta *meta;
    size_t nmeta;
    void *map; /* whole file contents */
    size_t map_len;
} safetensors_file;

/*
 * Parse a safetensors image held in buf[0..len). buf is copied (the result
 * does not borrow it). On error returns EMAD_EFORMAT (or -ENOMEM) and, if
 * cause is not NULL, sets *cause to a malloc'd message the caller frees.
 */
int safetensors_parse(safetensors_file **out, const void *buf, size_t len, char **cause);

/*
 * Read and parse a file. Errors as safetensors_parse, plus EMAD_EIO for I/O
 * (message says which) and for anything but a regular file (a FIFO is
 * refused at once: the open does not block).
 */
int safetensors_read(safetensors_file **out, const char *path, char **cause);

/*
 * Read and parse the file open on fd (left open); what names it in
 * messages. Errors as safetensors_read().
 */
int safetensors_read_fd(safetensors_file **out, int fd, const char *what, char **cause);

/* Free a parsed file; NULL accepted. */
void safetensors_free(safetensors_file *f);

/* Value of a metadata key, or NULL. */
const char *safetensors_meta_get(const safetensors_file *f, const char *key);

/* Find a tensor by name, or NULL. */
const safetensors_tensor *safetensors_find(const safetensors_file *f, const char *name);

/*
 * Write tensors (name, dtype, ndim, shape, data, nbytes read; offset
 * ignored) and metadata to path via a temp file in the same directory,
 * fsync and rename (atomic). nbytes must equal numel * itemsize. Returns 0,
 * EMAD_EINVAL (bad tensor, duplicate name) or EMAD_EIO with *cause set.
 */
int safetensors_write(const char *path, const safetensors_tensor *tensors, size_t n,
                      const safetensors_meta *meta, size_t nmeta, char **cause);

/* Options of safetensors_write_ex(); all zero/NULL gives safetensors_write()'s behaviour. */
typedef struct safetensors_write_opts {
    const char *tmp_tag; /* temp file DIR/.NAME.TAG.XXXXXX (NULL: DIR/.NAME.XXXXXX) */
    int errno_codes;     /* 1: an I/O failure returns its negated errno (-ENOSPC, -EFBIG,
                            -EACCES, ...) instead of EMAD_EIO */
    uint64_t *bytes;     /* if not NULL, gets the file's size on success */
} safetensors_write_opts;

/*
 * safetensors_write() with options (opts NULL: the defaults). If the rename
 * succeeded but the directory fsync failed, the new file is in place and
 * the error is still returned (its durability is in doubt).
 */
int safetensors_write_ex(const char *path, const safetensors_tensor *tensors, size_t n,
                         const safetensors_meta *meta, size_t nmeta,
                         const safetensors_write_opts *opts, char **cause);

/*
 * safetensors_write_ex() of the file name in the directory open on dfd:
 * the temp file is created there with O_EXCL|O_NOFOLLOW and renamed with
 * renameat(), so no path is resolved again. Messages name the file.
 */
int safetensors_write_at(int dfd, const char *name, const safetensors_tensor *tensors, size_t n,
                         const safetensors_meta *meta, size_t nmeta,
                         const safetensors_write_opts *opts, char **cause);

#endif

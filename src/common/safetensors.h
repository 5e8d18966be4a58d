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

#define ST_MAX_HEADER 100000000u

typedef struct st_tensor {
    char *name;
    int dtype; /* enum emad_dtype */
    uint32_t ndim;
    uint64_t shape[EMAD_MAX_NDIM];
    uint64_t offset; /* from the start of the data buffer */
    uint64_t nbytes;
    const void *data; /* points into st_file's data (reader) */
} st_tensor;

typedef struct st_meta {
    char *key;
    char *value;
} st_meta;

/* A parsed file: tensors in file order of their offsets; owns everything. */
typedef struct st_file {
    st_tensor *tensors;
    size_t ntensors;
    st_meta *meta;
    size_t nmeta;
    void *map; /* whole file contents */
    size_t map_len;
} st_file;

/*
 * Parse a safetensors image held in buf[0..len). buf is copied (the result
 * does not borrow it). On error returns EMAD_EFORMAT (or -ENOMEM) and, if
 * cause is not NULL, sets *cause to a malloc'd message the caller frees.
 */
int st_parse(st_file **out, const void *buf, size_t len, char **cause);

/* Read and parse a file. Errors as st_parse, plus EMAD_EIO for I/O (message says which). */
int st_read(st_file **out, const char *path, char **cause);

/* Free a parsed file; NULL accepted. */
void st_free(st_file *f);

/* Value of a metadata key, or NULL. */
const char *st_meta_get(const st_file *f, const char *key);

/* Find a tensor by name, or NULL. */
const st_tensor *st_find(const st_file *f, const char *name);

/*
 * Write tensors (name, dtype, ndim, shape, data, nbytes read; offset
 * ignored) and metadata to path via a temp file in the same directory,
 * fsync and rename (atomic). nbytes must equal numel * itemsize. Returns 0,
 * EMAD_EINVAL (bad tensor, duplicate name) or EMAD_EIO with *cause set.
 */
int st_write(const char *path, const st_tensor *tensors, size_t n, const st_meta *meta,
             size_t nmeta, char **cause);

/* Options of st_write_ex(); all zero/NULL gives st_write()'s behaviour. */
typedef struct st_write_opts {
    const char *tmp_tag; /* temp file DIR/.NAME.TAG.XXXXXX (NULL: DIR/.NAME.XXXXXX) */
    int errno_codes;     /* 1: an I/O failure returns its negated errno (-ENOSPC, -EFBIG,
                            -EACCES, ...) instead of EMAD_EIO */
    uint64_t *bytes;     /* if not NULL, gets the file's size on success */
} st_write_opts;

/*
 * st_write() with options (opts NULL: the defaults). If the rename
 * succeeded but the directory fsync failed, the new file is in place and
 * the error is still returned (its durability is in doubt).
 */
int st_write_ex(const char *path, const st_tensor *tensors, size_t n, const st_meta *meta,
                size_t nmeta, const st_write_opts *opts, char **cause);

#endif

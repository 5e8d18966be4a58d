/*
 * snapshot.h - the snapshot file format: one decay of one model's shadows
 * at one committed step, as a safetensors file. Shared by the daemon
 * (which keeps them in its snapshot directory, files/snapdir.h) and
 * emactl (export and inspection).
 *
 * A snapshot file is named STEP.dDECAYINDEX.safetensors, with STEP as 20
 * decimal digits (so names sort by step) and DECAYINDEX the index of the
 * decay in the model's configuration (0 for the first). It is a plain
 * safetensors file (PyTorch's safetensors.torch.load_file loads it as a
 * state dict): averaged tensors hold that decay's shadow (float32 for
 * F32/F16/BF16 params, float64 for F64), copied tensors their last pushed
 * value. Its __metadata__ holds (all strings):
 *
 *     format          "pt"
 *     emad_model      model name
 *     emad_step       the model's committed step (decimal)
 *     emad_decay      this file's decay (shortest round-trip decimal)
 *     emad_decay_index, emad_decays (count)
 *     emad_config     the model's EMA configuration as a JSON object (the
 *                     keys of the `create` request, docs/PROTOCOL.md)
 *     emad_tensors    JSON object: name -> {"kind": "param"|"buffer",
 *                     "dtype": pushed dtype, "step": N, "update":
 *                     "average"|"copy"}
 *     emad_version    daemon version
 *     emad_checksum   "xxh64:" + 16 lowercase hex digits: XXH64 (seed 0)
 *                     over, for each tensor in byte order of its name: the
 *                     name bytes, a NUL, the dtype name of the data as
 *                     in the file (F32 for an averaged BF16 param), a
 *                     NUL, ndim and each dimension as little-endian
 *                     uint64, then the data bytes.
 *     emad_meta_checksum  "xxh64:" + 16 lowercase hex digits: XXH64 (seed
 *                     0) over every other __metadata__ entry in byte order
 *                     of its key: the key, a NUL, the value, a NUL.
 *
 * Writes are atomic and durable: a temp file in the same directory
 * (.STEP.dK.safetensors.tmp.XXXXXX), fsync, rename over the target, fsync
 * of the directory. These functions do no locking and touch only the
 * files named; they may run on any thread.
 */
#ifndef EMAD_SNAPSHOT_H
#define EMAD_SNAPSHOT_H

#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>

#include "emad.h"

/* The end of a snapshot file's name, and the tag of its temp files (NAME.tmp.XXXXXX). */
#define SNAPSHOT_SUFFIX ".safetensors"
#define SNAPSHOT_TMP_TAG "tmp"

/* printf format of a snapshot file's name, for a uint64_t step and a size_t decay index. */
#define SNAPSHOT_NAME_FMT "%020" PRIu64 ".d%zu" SNAPSHOT_SUFFIX

/* One tensor to write (data borrowed) or read (data points into the file's buffer). */
typedef struct snapshot_tensor {
    const char *name;
    int kind;     /* enum emad_kind */
    int dtype;    /* dtype the tensor is pushed in */
    int sdtype;   /* dtype of data (the shadow's) */
    int averaged; /* 1: EMA shadow; 0: copied value */
    uint32_t ndim;
    uint64_t shape[EMAD_MAX_NDIM];
    uint64_t step;
    const void *data;
    uint64_t nbytes; /* numel * size of sdtype */
} snapshot_tensor;

/* Description of one snapshot file (one decay of one model at one step). */
typedef struct snapshot_meta {
    const char *model;
    uint64_t step;
    size_t decay_index;
    const emad_model_config *cfg;
} snapshot_meta;

/* A snapshot file read back and verified. */
typedef struct snapshot_file {
    char *model;
    uint64_t step;
    size_t decay_index;
    emad_model_config cfg; /* pattern strings owned (emaconf_free) */
    snapshot_tensor *tensors; /* names and data owned by this struct */
    size_t ntensors;
    void *priv; /* the parsed file */
} snapshot_file;

/*
 * Write one snapshot file for decay m->decay_index as name in the
 * directory open on dfd, atomically and durably (temp file, fsync,
 * renameat, fsync of dfd; nothing is resolved by path). *bytes (may be
 * NULL) gets the file size. Returns 0, or a negative code with *cause set
 * to a malloc'd message naming the file: -ENOSPC, -EDQUOT or -EFBIG when
 * out of space, EMAD_EIO for other I/O errors, EMAD_EINVAL for bad
 * arguments, EMAD_ERANGE for a tensor step or update_after_step above
 * 2^63-1 (JSON integers), -ENOMEM. On failure no temp file is left and a
 * file already named name is untouched.
 */
int snapshot_write_at(int dfd, const char *name, const snapshot_meta *m, const snapshot_tensor *t,
                      size_t n, uint64_t *bytes, char **cause);

/*
 * snapshot_write_at() in the directory of path (followed as given: a
 * user's path, e.g. emactl export); messages name the path.
 */
int snapshot_write_path(const char *path, const snapshot_meta *m, const snapshot_tensor *t,
                        size_t n, uint64_t *bytes, char **cause);

/*
 * Read and verify a snapshot file: safetensors structure, every metadata
 * key above, a valid configuration, a description for every tensor, and
 * both checksums. The metadata, not the file name, gives model, step and
 * decay index, but a name of the form STEP.dK.safetensors that disagrees
 * with them is EMAD_EFORMAT. Tensors are in byte order of their names;
 * their data has the file's alignment. Only a regular file is read: a
 * symlink as the last component of path, a FIFO or a device is EMAD_EIO
 * at once (the open never blocks). Returns 0, or EMAD_EFORMAT / EMAD_EIO
 * (-ENOMEM) with *cause set to a message starting with the path.
 */
int snapshot_read(const char *path, snapshot_file **out, char **cause);

/* snapshot_read() of the file name in the directory open on dfd (AT_FDCWD: a path). */
int snapshot_read_at(int dfd, const char *name, snapshot_file **out, char **cause);

/* Free a snapshot file read by snapshot_read; NULL accepted. */
void snapshot_file_free(snapshot_file *f);

/*
 * Check what snapshot_write_at() would be asked to write (the model, its
 * configuration, every tensor, no name twice) without writing anything.
 * Returns 0 or the code snapshot_write_at() would return, with *cause set.
 */
int snapshot_check_write(const snapshot_meta *m, const snapshot_tensor *t, size_t n, char **cause);

/* The code snapshot writers return for errno e: -e when out of space or memory, else EMAD_EIO. */
int snapshot_io_code(int e);

/*
 * Parse the snapshot file name at the start of s: 20 digits, ".d", the
 * decay index (below EMAD_MAX_DECAYS), ".safetensors". Returns a pointer
 * just past it, or NULL if s does not start with one.
 */
const char *snapshot_parse_name(const char *s, uint64_t *step, size_t *decay_index);

/* Is name exactly a snapshot file name STEP.dK.safetensors? Fills step and decay index. */
int snapshot_is_name(const char *name, uint64_t *step, size_t *decay_index);

#endif

/*
 * snapshot.h - durable snapshots of a model's shadows as safetensors files.
 *
 * A snapshot of a model at one committed step is one file per decay:
 *
 *     STATE_DIR/snapshots/MODEL/STEP.dDECAYINDEX.safetensors
 *
 * with STEP as 20 decimal digits (so names sort by step) and DECAYINDEX the
 * index of the decay in the model's configuration (0 for the first). Each
 * file is a plain safetensors file (PyTorch's safetensors.torch.load_file
 * loads it as a state dict): averaged tensors hold that decay's shadow
 * (float32 for F32/F16/BF16 params, float64 for F64), copied tensors their
 * last pushed value. Its __metadata__ holds (all strings):
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
 * of the directory. A set is the files of one step for every decay; it is
 * complete when all of them exist. These functions do no locking and
 * touch only the files named; they may run on any thread.
 */
#ifndef EMAD_SNAPSHOT_H
#define EMAD_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "emad.h"

/* One tensor to write (data borrowed) or read (data points into the file's buffer). */
typedef struct snap_tensor {
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
} snap_tensor;

/* Description of one snapshot file (one decay of one model at one step). */
typedef struct snap_meta {
    const char *model;
    uint64_t step;
    size_t decay_index;
    const emad_model_config *cfg;
} snap_meta;

/* A snapshot file read back and verified. */
typedef struct snap_file {
    char *model;
    uint64_t step;
    size_t decay_index;
    emad_model_config cfg; /* pattern strings owned (emaconf_free) */
    snap_tensor *tensors;  /* names and data owned by this struct */
    size_t ntensors;
    void *priv; /* the parsed file */
} snap_file;

/* Path of a model's snapshot directory (malloc'd): STATE_DIR/snapshots/MODEL. */
char *snap_model_dir(const char *state_dir, const char *model);

/*
 * Write one snapshot file for decay m->decay_index into the model's
 * directory (created if missing, with the snapshots directory), atomically
 * and durably. *bytes (may be NULL) gets the file size. Returns 0, or a
 * negative code with *cause set to a malloc'd message naming the file:
 * -ENOSPC, -EDQUOT or -EFBIG when out of space, EMAD_EIO for other I/O
 * errors, EMAD_EINVAL for bad arguments, EMAD_ERANGE for a tensor step or
 * update_after_step above 2^63-1 (JSON integers), -ENOMEM. On failure no
 * temp file is left and the previous snapshots are untouched.
 */
int snap_write(const char *state_dir, const snap_meta *m, const snap_tensor *t, size_t n,
               uint64_t *bytes, char **cause);

/*
 * The same file written at any path (whose directory must exist), e.g. an
 * export. Same codes as snap_write().
 */
int snap_write_path(const char *path, const snap_meta *m, const snap_tensor *t, size_t n,
                    uint64_t *bytes, char **cause);

/*
 * Read and verify a snapshot file: safetensors structure, every metadata
 * key above, a valid configuration, a description for every tensor, and
 * both checksums. The metadata, not the file name, gives model, step and
 * decay index, but a name of the form STEP.dK.safetensors that disagrees
 * with them is EMAD_EFORMAT. Tensors are in byte order of their names;
 * their data has the file's alignment. Returns 0, or EMAD_EFORMAT /
 * EMAD_EIO (-ENOMEM) with *cause set to a message starting with the path.
 */
int snap_read(const char *path, snap_file **out, char **cause);
void snap_file_free(snap_file *f);

/*
 * Steps that have at least one snapshot file in a model's directory,
 * newest first (malloc'd into *steps, count in *n). Files that are not
 * STEP.dK.safetensors are ignored. A missing directory has no steps.
 * Returns 0 or a negative errno.
 */
int snap_list_steps(const char *model_dir, uint64_t **steps, size_t *n);

/* Path of one file of a set (malloc'd). */
char *snap_path(const char *model_dir, uint64_t step, size_t decay_index);

/*
 * Keep the newest `keep` complete steps of a model (ndecays files each);
 * remove older snapshot files and any stale temp files. Returns the number
 * of files removed. An incomplete step does not count towards keep: it is
 * removed once a newer complete step exists, and kept while it is newer
 * than every complete one. The newest complete step is never removed
 * (keep 0 counts as 1); *.broken and unknown files are left alone. Must
 * not run during a snap_write to the same model (it removes every temp).
 */
size_t snap_prune(const char *model_dir, size_t ndecays, size_t keep);

/*
 * Remove temp files left in a model's directory by a writer that died
 * (call only when no write to it can be running: at startup). Returns the
 * number removed.
 */
size_t snap_remove_temps(const char *model_dir);

/* Remove a model's snapshot directory and every file in it (a dropped model); 0 or -errno. */
int snap_remove_model(const char *state_dir, const char *model);

/* Rename a bad file to PATH.broken (replacing an older .broken); 0 or a negative errno. */
int snap_mark_broken(const char *path);

/*
 * Model directories under STATE_DIR/snapshots with valid model names,
 * sorted (malloc'd names, free each then the array); none if the
 * directory is missing. 0 or a negative errno.
 */
int snap_list_models(const char *state_dir, char ***names, size_t *n);

#endif

/*
 * snapdir.h - the daemon's snapshot directory: where the snapshot files of
 * each model live, listing them, pruning old ones and setting bad ones
 * aside. The file format itself is common/snapshot.h.
 *
 * A snapshot of a model at one committed step is one file per decay:
 *
 *     STATE_DIR/snapshots/MODEL/STEP.dDECAYINDEX.safetensors
 *
 * with STEP as 20 decimal digits (so names sort by step) and DECAYINDEX the
 * index of the decay in the model's configuration (0 for the first). A set
 * is the files of one step for every decay; it is complete when all of
 * them exist. Writes go through snapshot_write_path() (temp file
 * .STEP.dK.safetensors.tmp.XXXXXX in the same directory, fsync, rename,
 * fsync of the directory). These functions do no locking and touch only
 * the files named; they may run on any thread.
 */
#ifndef EMAD_SNAPDIR_H
#define EMAD_SNAPDIR_H

#include <stddef.h>
#include <stdint.h>

#include "common/snapshot.h"

/* Path of a model's snapshot directory (malloc'd): STATE_DIR/snapshots/MODEL. */
char *snapdir_model_dir(const char *state_dir, const char *model);

/* Path of one file of a set (malloc'd). */
char *snapdir_path(const char *model_dir, uint64_t step, size_t decay_index);

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
int snapdir_write(const char *state_dir, const snapshot_meta *m, const snapshot_tensor *t, size_t n,
                  uint64_t *bytes, char **cause);

/*
 * Steps that have at least one snapshot file in a model's directory,
 * newest first (malloc'd into *steps, count in *n). Files that are not
 * STEP.dK.safetensors are ignored. A missing directory has no steps.
 * Returns 0 or a negative errno.
 */
int snapdir_list_steps(const char *model_dir, uint64_t **steps, size_t *n);

/*
 * Keep the newest `keep` complete steps of a model (ndecays files each);
 * remove older snapshot files and any stale temp files. Returns the number
 * of files removed. An incomplete step does not count towards keep: it is
 * removed once a newer complete step exists, and kept while it is newer
 * than every complete one. The newest complete step is never removed
 * (keep 0 counts as 1); *.broken and unknown files are left alone. Must
 * not run during a snapdir_write to the same model (it removes every temp).
 */
size_t snapdir_prune(const char *model_dir, size_t ndecays, size_t keep);

/*
 * Remove temp files left in a model's directory by a writer that died
 * (call only when no write to it can be running: at startup). Returns the
 * number removed.
 */
size_t snapdir_remove_temps(const char *model_dir);

/* Remove a model's snapshot directory and every file in it (a dropped model); 0 or -errno. */
int snapdir_remove_model(const char *state_dir, const char *model);

/* Rename a bad file to PATH.broken (replacing an older .broken); 0 or a negative errno. */
int snapdir_mark_broken(const char *path);

/*
 * Model directories under STATE_DIR/snapshots with valid model names,
 * sorted (malloc'd names, free each then the array); none if the
 * directory is missing. 0 or a negative errno.
 */
int snapdir_list_models(const char *state_dir, char ***names, size_t *n);

#endif

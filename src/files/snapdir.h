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
 * them exist. Writes go through snapshot_write_at() (temp file
 * .STEP.dK.safetensors.tmp.XXXXXX in the same directory, fsync, rename,
 * fsync of the directory). Below STATE_DIR nothing is opened through a
 * symlink and only regular files are read or removed. These functions do
 * no locking and touch only the files named; they may run on any thread.
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
 * Open a model's directory STATE_DIR/snapshots/MODEL; with create, make
 * the missing directories (durably). Neither snapshots nor MODEL is ever
 * opened through a symlink. Returns the fd (the caller closes it) or a
 * negative errno: -ENOENT missing, -ELOOP or -ENOTDIR a symlink or not a
 * directory, -EINVAL an invalid model name.
 */
int snapdir_open_model(const char *state_dir, const char *model, int create);

/*
 * Write one snapshot file for decay m->decay_index into the model's
 * directory (created if missing, with the snapshots directory), atomically
 * and durably. *bytes (may be NULL) gets the file size. Returns 0, or a
 * negative code with *cause set to a malloc'd message naming the file:
 * -ENOSPC, -EDQUOT or -EFBIG when out of space, EMAD_EIO for other I/O
 * errors (a model directory that is a symlink, too), EMAD_EINVAL for bad
 * arguments, EMAD_ERANGE for a tensor step or update_after_step above
 * 2^63-1 (JSON integers), -ENOMEM. On failure no temp file is left and the
 * previous snapshots are untouched.
 */
int snapdir_write(const char *state_dir, const snapshot_meta *m, const snapshot_tensor *t, size_t n,
                  uint64_t *bytes, char **cause);

/*
 * Steps that have at least one snapshot file (a regular file named
 * STEP.dK.safetensors) in the model directory open on mfd, newest first
 * (malloc'd into *steps, count in *n). Returns 0 or a negative errno.
 */
int snapdir_list_steps(int mfd, uint64_t **steps, size_t *n);

/*
 * Keep the newest `keep` complete steps of a model (ndecays files each);
 * remove older snapshot files and any stale temp files. Returns the number
 * of files removed. An incomplete step does not count towards keep: it is
 * removed once a newer complete step exists, and kept while it is newer
 * than every complete one. The newest complete step is never removed
 * (keep 0 counts as 1); *.broken and unknown files are left alone. Must
 * not run during a snapdir_write to the same model (it removes every temp).
 */
size_t snapdir_prune(int mfd, size_t ndecays, size_t keep);

/*
 * Remove temp files left in the model directory open on mfd by a writer
 * that died (call only when no write to it can be running: at startup).
 * Returns the number removed.
 */
size_t snapdir_remove_temps(int mfd);

/*
 * A model was dropped: remove the files emad writes in its directory
 * (snapshot files, their temp files, *.broken; regular files only) and
 * the directory once empty. Anything else is left and logged (then
 * -ENOTEMPTY); a MODEL that is a symlink or not a directory is left
 * untouched and logged (-ELOOP or -ENOTDIR). A missing one is 0.
 */
int snapdir_remove_model(const char *state_dir, const char *model);

/* Rename the bad file name in mfd to NAME.broken (replacing an older .broken); 0 or -errno. */
int snapdir_mark_broken(int mfd, const char *name);

/*
 * Model directories under STATE_DIR/snapshots with valid model names,
 * sorted (malloc'd names, free each then the array); none if the
 * directory is missing. Symlinks and other non-directories are logged and
 * skipped. 0 or a negative errno.
 */
int snapdir_list_models(const char *state_dir, char ***names, size_t *n);

#endif

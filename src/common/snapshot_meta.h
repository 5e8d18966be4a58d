/*
 * snapshot_meta.h - the __metadata__ of a snapshot file (the keys are
 * listed in snapshot.h): building it for a write, and reading and
 * checking it back. Internal to the snapshot format: snapshot.c and the
 * fuzz target use it, nothing else should.
 */
#ifndef EMAD_SNAPSHOT_META_H
#define EMAD_SNAPSHOT_META_H

#include <stddef.h>
#include <stdint.h>

#include "common/safetensors.h"
#include "common/snapshot.h"

/* Number of __metadata__ entries a snapshot file carries. */
#define SNAPSHOT_NMETA 11

/*
 * Build the __metadata__ entries (keys static, values malloc'd: free with
 * snapshot_meta_free) of a file of the checked m holding tensors s[0..n),
 * sorted by name, whose data checksum is data_sum; the metadata checksum
 * comes last, over the others. Returns 0 or -ENOMEM.
 */
int snapshot_meta_build(const snapshot_meta *m, const snapshot_tensor *s, size_t n,
                        uint64_t data_sum, safetensors_meta md[SNAPSHOT_NMETA]);

/* Free the values of the metadata snapshot_meta_build built. */
void snapshot_meta_free(safetensors_meta *md, size_t n);

/* Verify emad_meta_checksum over the other metadata entries; 0, EMAD_EFORMAT or -ENOMEM. */
int snapshot_meta_verify(const safetensors_file *sf, char **cause);

/* Compare emad_checksum with the data checksum sum computed over the file; 0 or EMAD_EFORMAT. */
int snapshot_meta_check_data(const safetensors_file *sf, uint64_t sum, char **cause);

/*
 * Read the header of a parsed snapshot file into f: model, step, decay
 * index, decays count, decay and configuration (checked against each
 * other and against the name of path when it has the snapshot form), then
 * the description of every tensor of f->tensors (whose name and sdtype
 * are set), which fills kind, dtype, step and averaged. Checksums are not
 * looked at. 0, EMAD_EFORMAT or -ENOMEM with *cause set; f->model and
 * f->cfg may be set even on failure (snapshot_file_free frees them).
 */
int snapshot_meta_read(snapshot_file *f, const safetensors_file *sf, const char *path,
                       char **cause);

/*
 * Check that a tensor pushed as dtype, averaged or copied, has data of
 * dtype sdtype in a snapshot (the shadow's dtype if averaged, else the
 * pushed one). Returns 0, or -1 with msg (size bytes) saying what it is
 * and what it should be.
 */
int snapshot_meta_check_dtype(int sdtype, int dtype, int averaged, char *msg, size_t size);

#endif

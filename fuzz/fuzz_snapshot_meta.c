/*
 * fuzz_snapshot_meta.c - libFuzzer target for the snapshot metadata
 * reader (snapshot_meta_read: the header keys, the emad_config JSON, the
 * emad_tensors descriptions, the file name check) and the checksum text
 * check of snapshot_meta_verify.
 *
 * An input is the JSON header of a safetensors file; the target prepends
 * its 8-byte length and gives it no data, so tensors of zero elements
 * (shape [0], [2, 0], ...) parse and the mutations reach the metadata.
 * The checksums are not required to match (snapshot_read checks them first,
 * which would stop almost every mutation): the reader must hold up on
 * its own. The file is read as 00000000000000000007.d0.safetensors, so
 * the seeds in fuzz/corpus/snapshot_meta are step 7, decay 0.
 *
 * An accepted header must describe a consistent snapshot (valid model
 * name and configuration, decay index in range, every tensor with a kind,
 * a pushed dtype its data fits, a step not after the model's); a rejected
 * one must come with EMAD_EFORMAT (or -ENOMEM) and a message. Anything
 * else aborts; leaks are reported by the fuzzer.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"
#include "common/emaconf.h"
#include "common/names.h"
#include "common/safetensors.h"
#include "common/snapshot.h"
#include "common/snapshot_meta.h"

#define FUZZ_PATH "/fuzz/00000000000000000007.d0.safetensors"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Abort unless a rejection has the documented code and a message; frees the message. */
static void
check_rejected(int rc, char *cause)
{
    if ((rc != EMAD_EFORMAT && rc != -ENOMEM) || cause == NULL || cause[0] == '\0')
        abort();
    free(cause);
}

/* Abort unless the accepted file f keeps every promise of snapshot_meta_read. */
static void
check_accepted(const snapshot_file *f)
{
    char why[256];

    if (f->model == NULL || names_check_model(f->model, strlen(f->model)) != 0)
        abort();
    if (emaconf_check(&f->cfg, why, sizeof(why)) != 0 || f->decay_index >= f->cfg.ndecays)
        abort();
    for (size_t i = 0; i < f->ntensors; i++) {
        const snapshot_tensor *t = &f->tensors[i];

        if (names_kind_name(t->kind) == NULL || dtype_name(t->dtype) == NULL || t->step > f->step)
            abort();
        if (snapshot_meta_check_dtype(t->sdtype, t->dtype, t->averaged, why, sizeof(why)) != 0)
            abort();
    }
}

/* Parse the framed header, then read its metadata as a snapshot would. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    safetensors_file *sf = NULL;
    snapshot_file *f;
    char *cause = NULL;
    uint8_t *img;
    int rc;

    if ((img = malloc(size + 8)) == NULL)
        return 0;
    for (int i = 0; i < 8; i++)
        img[i] = (uint8_t)((uint64_t)size >> (8 * i));
    if (size > 0)
        memcpy(img + 8, data, size);
    rc = safetensors_parse(&sf, img, size + 8, &cause);
    free(img);
    if (rc < 0) {
        free(cause);
        return 0;
    }
    if ((rc = snapshot_meta_verify(sf, &cause)) < 0)
        check_rejected(rc, cause);
    cause = NULL;
    if ((f = calloc(1, sizeof(*f))) == NULL ||
        (f->tensors = calloc(sf->ntensors > 0 ? sf->ntensors : 1, sizeof(*f->tensors))) == NULL) {
        free(f);
        safetensors_free(sf);
        return 0;
    }
    f->priv = sf;
    f->ntensors = sf->ntensors;
    for (size_t i = 0; i < sf->ntensors; i++) {
        f->tensors[i].name = sf->tensors[i].name;
        f->tensors[i].sdtype = sf->tensors[i].dtype;
    }
    if ((rc = snapshot_meta_read(f, sf, FUZZ_PATH, &cause)) == 0) {
        if (cause != NULL)
            abort();
        check_accepted(f);
    } else {
        check_rejected(rc, cause);
    }
    snapshot_file_free(f);
    return 0;
}

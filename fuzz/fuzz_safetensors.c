/*
 * fuzz_safetensors.c - libFuzzer target for the safetensors reader: every
 * input is parsed with safetensors_parse twice, once as it is and once "framed":
 * its first two bytes (little-endian) say how many of its last bytes are
 * the data buffer, the bytes between are the header, and the target
 * prepends the matching 8-byte length, so mutations reach the JSON rules
 * instead of dying on the length field. An accepted file must be internally
 * consistent (tensors sorted by offset, contiguous from 0, inside the map,
 * sizes matching shapes and dtypes, metadata findable); a rejected one
 * must come with a message. Anything else aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"
#include "common/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Abort unless the parsed file f of an input of size bytes keeps every promise of
 * safetensors_parse. */
static void
check_file(const safetensors_file *f, size_t size)
{
    const unsigned char *map = f->map;
    uint64_t n = 0, pos = 0, nbytes;

    if (f->map_len != size || size < 8)
        abort();
    for (int i = 7; i >= 0; i--)
        n = n << 8 | map[i];
    if (n > SAFETENSORS_MAX_HEADER || n > size - 8 || map[8] != '{')
        abort();
    for (size_t i = 0; i < f->ntensors; i++) {
        const safetensors_tensor *t = &f->tensors[i];

        if (t->offset != pos || t->ndim > EMAD_MAX_NDIM || dtype_size(t->dtype) == 0)
            abort();
        if (dtype_numel(t->shape, t->ndim, t->dtype, NULL, &nbytes) < 0 || nbytes != t->nbytes)
            abort();
        if ((const unsigned char *)t->data != map + 8 + n + t->offset)
            abort();
        if (safetensors_find(f, t->name) == NULL ||
            strcmp(safetensors_find(f, t->name)->name, t->name) != 0)
            abort();
        pos += t->nbytes;
    }
    if (8 + n + pos != size)
        abort();
    for (size_t i = 0; i < f->nmeta; i++) {
        if (safetensors_meta_get(f, f->meta[i].key) != f->meta[i].value)
            abort();
    }
}

/* Parse one image and check the result: accepted and consistent, or rejected with a message. */
static void
parse_and_check(const uint8_t *data, size_t size)
{
    safetensors_file *f = NULL;
    char *cause = NULL;
    int rc = safetensors_parse(&f, data, size, &cause);

    if (rc == 0) {
        if (f == NULL || cause != NULL)
            abort();
        check_file(f, size);
    } else if (f != NULL || rc != EMAD_EFORMAT || cause == NULL || cause[0] == '\0') {
        abort();
    }
    safetensors_free(f);
    free(cause);
}

/* Parse the input as it is, then framed with a correct header length. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t data_len, hdr_len;
    uint8_t *img;

    parse_and_check(data, size);
    if (size < 2)
        return 0;
    data_len = (size_t)(data[0] | data[1] << 8);
    if (data_len > size - 2)
        data_len = size - 2;
    hdr_len = size - 2 - data_len;
    if ((img = malloc(size + 6)) == NULL)
        return 0;
    for (int i = 0; i < 8; i++)
        img[i] = (uint8_t)((uint64_t)hdr_len >> (8 * i));
    memcpy(img + 8, data + 2, size - 2);
    parse_and_check(img, size + 6);
    free(img);
    return 0;
}

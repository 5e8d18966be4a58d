/*
 * codec.h - the tensor map of the wire protocol, encoded and decoded in
 * one place for the daemon and the clients (docs/PROTOCOL.md, `push` and
 * `pull`). Two maps describe a tensor on the wire: the tensor map of a
 * push request (name, kind, dtype, shape, data, and optionally offset,
 * slice and as_dtype) and the tensor description of a pull or list reply
 * (name, kind, dtype, shape, step, nbytes, update, and data when inline).
 * This module owns their encoded sizes (computed, never counted by a dry
 * run, so a request is sized before it is packed and its data copied once),
 * their packing and their decoding with every structural check and error
 * message. It works on the neutral struct codec_tensor and never aborts:
 * out of memory is EMAD_ENOMEM.
 */
#ifndef EMAD_CODEC_H
#define EMAD_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "emad.h"
#include "common/proto_keys.h"

struct msgpack_object;
struct msgpack_packer;

/*
 * One tensor as a tensor map carries it. The first fields have the names
 * and meaning of the daemon's store input. Decoded names and data point
 * into the msgpack objects (and so into the received message): any
 * alignment, not NUL-terminated.
 */
typedef struct codec_tensor {
    const char *name;
    size_t name_len;
    int kind;  /* EMAD_PARAM or EMAD_BUFFER */
    int dtype; /* EMAD_F32 ... */
    uint32_t ndim;
    uint64_t shape[EMAD_MAX_NDIM];
    const void *data; /* the bytes this map carries; a description without data: NULL */
    uint64_t len;     /* bytes at data */
    uint64_t start;   /* slice: first element */
    uint64_t count;   /* slice: elements; 0 = no slice (the whole tensor) */
    uint64_t offset;  /* push in a transaction: byte offset of this chunk */
    int as_dtype;     /* seed: the tensor's dtype when data is in another; EMAD_DTYPE_INVALID */
    int has_offset;   /* push: the map has an `offset` entry */
    uint64_t step;    /* description: the tensor's step */
    uint64_t nbytes;  /* description: the tensor's size in bytes */
    int averaged;     /* description: `update` is "average" (else "copy") */
} codec_tensor;

/* Why a decode failed: an EMAD_E* code, a message and (if one) the tensor at fault. */
typedef struct codec_err {
    int code;
    char message[512];
    char tensor[EMAD_MAX_NAME_BYTES + 1];
} codec_err;

/* Encoded size of a msgpack str of n bytes (msgpack-c picks the smallest header). */
static inline uint64_t
codec_size_str(uint64_t n)
{
    return (n < 32 ? 1 : n < 256 ? 2 : n < 65536 ? 3 : 5) + n;
}

/* Encoded size of a string literal key, such as PROTO_KEY_TENSORS. */
#define CODEC_SIZE_KEY(k) codec_size_str(PROTO_KEY_LEN(k))

/* Encoded size of a msgpack bin of n bytes. */
static inline uint64_t
codec_size_bin(uint64_t n)
{
    return (n < 256 ? 2 : n < 65536 ? 3 : 5) + n;
}

/* Encoded size of an array or map header for n items. */
static inline uint64_t
codec_size_container(uint64_t n)
{
    return n < 16 ? 1 : n < 65536 ? 3 : 5;
}

/* Encoded size of an unsigned integer. */
static inline uint64_t
codec_size_uint(uint64_t v)
{
    return v < 128 ? 1 : v < 256 ? 2 : v < 65536 ? 3 : v <= UINT32_MAX ? 5 : 9;
}

/*
 * Encoded size of t's push tensor map without its data (bin header and
 * bytes) and without its offset entry; t's kind and dtypes must be valid.
 */
uint64_t codec_tensor_meta_size(const codec_tensor *t);

/* Encoded size of t's push tensor map carrying t->len data bytes: what codec_tensor_pack() writes.
 */
uint64_t codec_tensor_size(const codec_tensor *t);

/*
 * Largest encoded size of t's push tensor map without its data bytes, for
 * any data length and any offset: the room a chunk of t needs besides its
 * bytes.
 */
uint64_t codec_tensor_chunk_overhead(const codec_tensor *t);

/*
 * Pack t as a push tensor map: as_dtype (if valid), name, kind, dtype,
 * shape, data (t->len bytes copied from t->data, the only copy), offset
 * (if has_offset) and slice (if count > 0).
 */
void codec_tensor_pack(struct msgpack_packer *pk, const codec_tensor *t);

/*
 * Decode the `tensors` array of the push request root into (*out)[0..*n),
 * malloc'd (free() it; names and data point into the request; the shape
 * entries past ndim are not set). Structural
 * checks only: types, known kind and dtypes, at most PROTO_MAX_TENSORS
 * tensors and EMAD_MAX_NDIM dimensions, `offset` other than 0 only when
 * txn is set, a slice count above 0. Returns 0, or err->code (EMAD_E*) with
 * err filled; a message about a tensor whose name decoded and is valid
 * starts with "tensor 'NAME': " and names it in err->tensor.
 */
int codec_tensors_decode(const struct msgpack_object *root, int txn, codec_tensor **out, size_t *n,
                         codec_err *err);

/*
 * Pack a description's map header and its entries up to the `data` key
 * (included when with_data is set), for a caller that packs the data bin
 * itself (the daemon copies it from a shadow as it packs).
 */
void codec_desc_pack_head(struct msgpack_packer *pk, const codec_tensor *t, int with_data);

/*
 * Pack t as a tensor description of a pull or list reply: name, kind,
 * dtype, shape, step, nbytes, update and, when with_data, data (t->len
 * bytes from t->data).
 */
void codec_desc_pack(struct msgpack_packer *pk, const codec_tensor *t, int with_data);

/*
 * Decode the tensor description o, element idx of a reply's `tensors`,
 * into *t (pointers into o). Checks every key's type, the name, kind and
 * dtype, at most EMAD_MAX_NDIM dimensions, that nbytes matches the shape
 * and dtype, and that data, if present, is bin of nbytes (t->data, else
 * NULL). Returns 0 or EMAD_EPROTO with err filled.
 */
int codec_desc_decode(const struct msgpack_object *o, size_t idx, codec_tensor *t, codec_err *err);

#endif

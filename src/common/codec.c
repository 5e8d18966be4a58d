/*
 * codec.c - the tensor map of the wire protocol: encoded sizes, packing and
 * decoding of the push tensor map and of the pull/list tensor description
 * (see codec.h and docs/PROTOCOL.md). Sizes are computed from the same
 * fields the packers write, so a message is sized exactly before it is
 * packed. Decoders look every key up in one pass over the map (the first
 * of duplicate keys wins, as with proto_map_get()).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "common/codec.h"
#include "common/dtype.h"
#include "common/names.h"
#include "common/proto.h"

/* The values of a tensor map, by key: NULL when absent, the first of duplicates. */
typedef struct tensor_keys {
    const msgpack_object *name, *kind, *dtype, *shape, *data, *offset, *as_dtype, *slice, *step,
        *nbytes;
} tensor_keys;

/* One pass over a tensor map's keys, instead of a proto_map_get() per key. */
static void
tensor_keys_get(const msgpack_object *map, tensor_keys *k)
{
    /* clang-format off */
#define TENSOR_KEY(f, key) {key, PROTO_KEY_LEN(key), offsetof(tensor_keys, f)}
    /* clang-format on */
    static const struct {
        const char *key;
        size_t len, field;
    } known[] = {
        TENSOR_KEY(name, PROTO_KEY_NAME),         TENSOR_KEY(kind, PROTO_KEY_KIND),
        TENSOR_KEY(dtype, PROTO_KEY_DTYPE),       TENSOR_KEY(shape, PROTO_KEY_SHAPE),
        TENSOR_KEY(data, PROTO_KEY_DATA),         TENSOR_KEY(offset, PROTO_KEY_OFFSET),
        TENSOR_KEY(as_dtype, PROTO_KEY_AS_DTYPE), TENSOR_KEY(slice, PROTO_KEY_SLICE),
        TENSOR_KEY(step, PROTO_KEY_STEP),         TENSOR_KEY(nbytes, PROTO_KEY_NBYTES),
    };
#undef TENSOR_KEY

    const size_t nknown = sizeof(known) / sizeof(known[0]);
    size_t next = 0; /* libemad packs the keys in known's order: try the next one first */

    memset(k, 0, sizeof(*k));
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *key = &map->via.map.ptr[i].key;

        if (key->type != MSGPACK_OBJECT_STR)
            continue;
        for (size_t jj = 0, j = next; jj < nknown; jj++, j = j + 1 < nknown ? j + 1 : 0) {
            if (key->via.str.size == known[j].len && key->via.str.ptr[0] == known[j].key[0] &&
                memcmp(key->via.str.ptr, known[j].key, known[j].len) == 0) {
                const msgpack_object **slot =
                    (const msgpack_object **)(void *)((char *)k + known[j].field);
                if (*slot == NULL)
                    *slot = &map->via.map.ptr[i].val;
                next = j + 1 < nknown ? j + 1 : 0;
                break;
            }
        }
    }
}

/* Fill err (no tensor named) and return its code. */
__attribute__((format(printf, 3, 4))) static int
codec_fail(codec_err *err, int code, const char *fmt, ...)
{
    va_list ap;

    err->code = code;
    err->tensor[0] = '\0';
    va_start(ap, fmt);
    (void)vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    return code;
}

/* Pack a string of len bytes. */
static void
pack_strn(msgpack_packer *pk, const char *s, size_t len)
{
    msgpack_pack_str(pk, len);
    msgpack_pack_str_body(pk, s, len);
}

/* Pack "key": "value". */
static void
pack_kv_str(msgpack_packer *pk, const char *key, const char *value)
{
    proto_pack_str(pk, key);
    proto_pack_str(pk, value);
}

/* Pack "key": [u64...] of n elements. */
static void
pack_kv_uints(msgpack_packer *pk, const char *key, const uint64_t *v, uint32_t n)
{
    proto_pack_str(pk, key);
    msgpack_pack_array(pk, n);
    for (uint32_t d = 0; d < n; d++)
        msgpack_pack_uint64(pk, v[d]);
}

/* Encoded size of "key": [u64...] of n elements (key given by its encoded size). */
static uint64_t
size_kv_uints(uint64_t key_size, const uint64_t *v, uint32_t n)
{
    uint64_t size = key_size + codec_size_container(n);

    for (uint32_t d = 0; d < n; d++)
        size += codec_size_uint(v[d]);
    return size;
}

/* Entries of t's push tensor map. */
static uint32_t
tensor_entries(const codec_tensor *t)
{
    return 5 + (t->has_offset != 0) + (t->count > 0) + (t->as_dtype != EMAD_DTYPE_INVALID);
}

uint64_t
codec_tensor_meta_size(const codec_tensor *t)
{
    uint64_t n = codec_size_container(tensor_entries(t)) + CODEC_SIZE_KEY(PROTO_KEY_NAME) +
                 codec_size_str(t->name_len) + CODEC_SIZE_KEY(PROTO_KEY_KIND) +
                 codec_size_str(strlen(names_kind_name(t->kind))) +
                 CODEC_SIZE_KEY(PROTO_KEY_DTYPE) + codec_size_str(strlen(dtype_name(t->dtype))) +
                 size_kv_uints(CODEC_SIZE_KEY(PROTO_KEY_SHAPE), t->shape, t->ndim) +
                 CODEC_SIZE_KEY(PROTO_KEY_DATA);

    if (t->count > 0)
        n += CODEC_SIZE_KEY(PROTO_KEY_SLICE) + codec_size_container(2) + codec_size_uint(t->start) +
             codec_size_uint(t->count);
    if (t->as_dtype != EMAD_DTYPE_INVALID)
        n += CODEC_SIZE_KEY(PROTO_KEY_AS_DTYPE) + codec_size_str(strlen(dtype_name(t->as_dtype)));
    return n;
}

uint64_t
codec_tensor_size(const codec_tensor *t)
{
    uint64_t n = codec_tensor_meta_size(t) + codec_size_bin(t->len);

    if (t->has_offset)
        n += CODEC_SIZE_KEY(PROTO_KEY_OFFSET) + codec_size_uint(t->offset);
    return n;
}

uint64_t
codec_tensor_chunk_overhead(const codec_tensor *t)
{
    /* Worst case: a 5-byte bin header, a 9-byte offset. */
    return codec_tensor_meta_size(t) + 5 + CODEC_SIZE_KEY(PROTO_KEY_OFFSET) + 9;
}

/* Bytes of a msgpack header: type byte c, then the n-byte big-endian v (n may be 0). */
static char *
put_head(char *p, unsigned c, uint64_t v, unsigned n)
{
    *p++ = (char)c;
    while (n-- > 0)
        *p++ = (char)(v >> (8 * n));
    return p;
}

/* A str header for n bytes, as msgpack_pack_str() writes it (codec_size_str()). */
static char *
put_str_head(char *p, uint64_t n)
{
    return n < 32      ? put_head(p, 0xa0 | (unsigned)n, 0, 0)
           : n < 256   ? put_head(p, 0xd9, n, 1)
           : n < 65536 ? put_head(p, 0xda, n, 2)
                       : put_head(p, 0xdb, n, 4);
}

/* A str of n bytes at s. */
static char *
put_str(char *p, const char *s, size_t n)
{
    p = put_str_head(p, n);
    memcpy(p, s, n);
    return p + n;
}

/* A string literal key such as PROTO_KEY_NAME, its length known at compile time. */
#define PUT_KEY(p, k) put_str(p, k, PROTO_KEY_LEN(k))

/* An unsigned integer as msgpack_pack_uint64() writes it (codec_size_uint()). */
static char *
put_uint(char *p, uint64_t v)
{
    return v < 128           ? put_head(p, (unsigned)v, 0, 0)
           : v < 256         ? put_head(p, 0xcc, v, 1)
           : v < 65536       ? put_head(p, 0xcd, v, 2)
           : v <= UINT32_MAX ? put_head(p, 0xce, v, 4)
                             : put_head(p, 0xcf, v, 8);
}

/* An array or map header (fix at 0x90 or 0x80) for n items (codec_size_container()). */
static char *
put_container(char *p, unsigned fix, uint64_t n)
{
    int map = fix == 0x80;

    return n < 16      ? put_head(p, fix | (unsigned)n, 0, 0)
           : n < 65536 ? put_head(p, map ? 0xde : 0xdc, n, 2)
                       : put_head(p, map ? 0xdf : 0xdd, n, 4);
}

/* Hand the bytes [start, end) to the packer's writer at once. */
static void
put_flush(msgpack_packer *pk, const char *start, const char *end)
{
    if (end > start)
        (void)pk->callback(pk->data, start, (size_t)(end - start));
}

/*
 * The bytes msgpack-c's packers would write, built in a local buffer and
 * handed to the packer's writer in three writes (the map up to the data's
 * bin header, the data, the entries after it; a name over 64 bytes is
 * written on its own) rather than a dozen small ones per tensor: a push of thousands of small
 * tensors spends its packing time here.
 */
void
codec_tensor_pack(msgpack_packer *pk, const codec_tensor *t)
{
    /* Room for every entry but the name's and the data's bytes: 16 dimensions, the keys. */
    char buf[256 + EMAD_MAX_NDIM * 9], *p = buf;
    const char *kind = names_kind_name(t->kind), *dtype = dtype_name(t->dtype);

    p = put_container(p, 0x80, tensor_entries(t));
    if (t->as_dtype != EMAD_DTYPE_INVALID) {
        const char *as = dtype_name(t->as_dtype);
        p = PUT_KEY(p, PROTO_KEY_AS_DTYPE);
        p = put_str(p, as, strlen(as));
    }
    p = PUT_KEY(p, PROTO_KEY_NAME);
    if (t->name_len <= 64) {
        p = put_str(p, t->name, t->name_len);
    } else { /* a long name goes straight from the caller's bytes */
        p = put_str_head(p, t->name_len);
        put_flush(pk, buf, p);
        (void)pk->callback(pk->data, t->name, t->name_len);
        p = buf;
    }
    p = PUT_KEY(p, PROTO_KEY_KIND);
    p = put_str(p, kind, strlen(kind));
    p = PUT_KEY(p, PROTO_KEY_DTYPE);
    p = put_str(p, dtype, strlen(dtype));
    p = PUT_KEY(p, PROTO_KEY_SHAPE);
    p = put_container(p, 0x90, t->ndim);
    for (uint32_t d = 0; d < t->ndim; d++)
        p = put_uint(p, t->shape[d]);
    p = PUT_KEY(p, PROTO_KEY_DATA);
    p = t->len < 256     ? put_head(p, 0xc4, t->len, 1)
        : t->len < 65536 ? put_head(p, 0xc5, t->len, 2)
                         : put_head(p, 0xc6, t->len, 4);
    put_flush(pk, buf, p);
    if (t->len > 0)
        (void)pk->callback(pk->data, t->data, t->len);
    p = buf;
    if (t->has_offset) {
        p = PUT_KEY(p, PROTO_KEY_OFFSET);
        p = put_uint(p, t->offset);
    }
    if (t->count > 0) {
        p = PUT_KEY(p, PROTO_KEY_SLICE);
        p = put_container(p, 0x90, 2);
        p = put_uint(p, t->start);
        p = put_uint(p, t->count);
    }
    put_flush(pk, buf, p);
}

/* Required string value o of key; EMAD_EMALFORMED if missing or not a string. */
static int
str_of(const msgpack_object *o, const char *key, const char **p, size_t *len, codec_err *err)
{
    *p = NULL;
    *len = 0;
    if (o == NULL || o->type != MSGPACK_OBJECT_STR)
        return codec_fail(err, EMAD_EMALFORMED, "key '%s' is %s (expected a string)", key,
                          o == NULL ? "missing" : "not a string");
    *p = o->via.str.ptr;
    *len = o->via.str.size;
    return 0;
}

/* Decode one push tensor map t into *in; 0 or the error code (err's message not yet named). */
static int
tensor_decode(const msgpack_object *t, uint32_t i, int txn, codec_tensor *in, codec_err *err)
{
    const msgpack_object *o;
    tensor_keys k;
    const char *s;
    size_t len;
    char buf[32];

    /* Every field but the shape's entries past ndim (the array is not zeroed: 2,000 tensors
     * would be 460 KB to clear). */
    in->name = NULL;
    in->name_len = 0;
    in->kind = in->dtype = 0;
    in->ndim = 0;
    in->data = NULL;
    in->len = in->start = in->count = in->offset = in->step = in->nbytes = 0;
    in->has_offset = in->averaged = 0;
    in->as_dtype = EMAD_DTYPE_INVALID;
    if (t->type != MSGPACK_OBJECT_MAP)
        return codec_fail(err, EMAD_EMALFORMED, "tensors[%u] is not a map", i);
    tensor_keys_get(t, &k);
    if (str_of(k.name, PROTO_KEY_NAME, &in->name, &in->name_len, err) != 0 ||
        str_of(k.kind, PROTO_KEY_KIND, &s, &len, err) != 0)
        return err->code;
    if ((in->kind = names_kind_from_name(s, len)) < 0)
        return codec_fail(err, EMAD_EMALFORMED, "kind '%s' is not param or buffer",
                          names_printable(buf, sizeof(buf), s, len));
    if (str_of(k.dtype, PROTO_KEY_DTYPE, &s, &len, err) != 0)
        return err->code;
    if ((in->dtype = dtype_from_name(s, len)) == EMAD_DTYPE_INVALID)
        return codec_fail(err, EMAD_EDTYPE, "unknown dtype '%s'",
                          names_printable(buf, sizeof(buf), s, len));
    if ((o = k.shape) == NULL || o->type != MSGPACK_OBJECT_ARRAY)
        return codec_fail(err, EMAD_EMALFORMED, "key 'shape' is %s (expected an array)",
                          o == NULL ? "missing" : "not an array");
    if (o->via.array.size > EMAD_MAX_NDIM)
        return codec_fail(err, EMAD_ELIMIT, "shape has %u dimensions, at most %d",
                          o->via.array.size, EMAD_MAX_NDIM);
    in->ndim = o->via.array.size;
    for (uint32_t d = 0; d < in->ndim; d++) {
        if (o->via.array.ptr[d].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            return codec_fail(err, EMAD_EMALFORMED, "shape[%u] is not an unsigned integer", d);
        in->shape[d] = o->via.array.ptr[d].via.u64;
    }
    if ((o = k.data) == NULL || o->type != MSGPACK_OBJECT_BIN)
        return codec_fail(err, EMAD_EMALFORMED, "key 'data' is %s (expected bin)",
                          o == NULL ? "missing" : "not bin");
    in->data = o->via.bin.ptr; /* points into the request: any alignment */
    in->len = o->via.bin.size;
    if ((in->has_offset = k.offset != NULL)) {
        if (k.offset->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            return codec_fail(
                err, EMAD_EMALFORMED,
                "key 'offset' is not an unsigned integer (expected an unsigned integer)");
        in->offset = k.offset->via.u64;
    }
    if (in->has_offset && !txn && in->offset != 0)
        return codec_fail(err, EMAD_EMALFORMED, "'offset' is only allowed in a transaction");
    if ((o = k.as_dtype) != NULL &&
        (o->type != MSGPACK_OBJECT_STR ||
         (in->as_dtype = dtype_from_name(o->via.str.ptr, o->via.str.size)) == EMAD_DTYPE_INVALID))
        return codec_fail(err, EMAD_EDTYPE, "key 'as_dtype' is not a dtype name");
    if ((o = k.slice) != NULL) {
        if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 2 ||
            o->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
            o->via.array.ptr[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            return codec_fail(err, EMAD_EMALFORMED, "key 'slice' is not [start, count]");
        in->start = o->via.array.ptr[0].via.u64;
        in->count = o->via.array.ptr[1].via.u64;
        if (in->count == 0)
            return codec_fail(err, EMAD_ERANGE, "a slice needs a count > 0");
    }
    return 0;
}

/* Name the tensor at fault in err when its name decoded and is a valid name (not raw bytes). */
static void
name_fault(const codec_tensor *in, codec_err *err)
{
    char msg[sizeof(err->message)];
    size_t nl;
    int shown;

    if (in->name == NULL || names_check_tensor(in->name, in->name_len) != 0)
        return;
    nl = in->name_len < sizeof(err->tensor) - 1 ? in->name_len : sizeof(err->tensor) - 1;
    shown = nl > 200 ? 200 : (int)nl;
    memcpy(err->tensor, in->name, nl);
    err->tensor[nl] = '\0';
    (void)snprintf(msg, sizeof(msg), "tensor '%.*s': %.300s", shown, err->tensor, err->message);
    memcpy(err->message, msg, sizeof(msg));
}

int
codec_tensors_decode(const msgpack_object *root, int txn, codec_tensor **out, size_t *n,
                     codec_err *err)
{
    const msgpack_object *arr = proto_map_get(root, PROTO_KEY_TENSORS);
    codec_tensor *in;

    *out = NULL;
    if (arr == NULL || arr->type != MSGPACK_OBJECT_ARRAY)
        return codec_fail(err, EMAD_EMALFORMED, "key 'tensors' is %s (expected an array)",
                          arr == NULL ? "missing" : "not an array");
    if (arr->via.array.size > PROTO_MAX_TENSORS)
        return codec_fail(err, EMAD_ELIMIT, "push has %u tensors, at most %d", arr->via.array.size,
                          PROTO_MAX_TENSORS);
    if ((in = malloc((arr->via.array.size ? arr->via.array.size : 1) * sizeof(*in))) == NULL)
        return codec_fail(err, EMAD_ENOMEM, "out of memory decoding %u tensors",
                          arr->via.array.size);
    for (uint32_t i = 0; i < arr->via.array.size; i++) {
        if (tensor_decode(&arr->via.array.ptr[i], i, txn, &in[i], err) != 0) {
            name_fault(&in[i], err);
            free(in);
            return err->code;
        }
    }
    *out = in;
    *n = arr->via.array.size;
    return 0;
}

void
codec_desc_pack_head(msgpack_packer *pk, const codec_tensor *t, int with_data)
{
    msgpack_pack_map(pk, 7 + (with_data != 0));
    proto_pack_str(pk, PROTO_KEY_NAME);
    pack_strn(pk, t->name, t->name_len);
    pack_kv_str(pk, PROTO_KEY_KIND, names_kind_name(t->kind));
    pack_kv_str(pk, PROTO_KEY_DTYPE, dtype_name(t->dtype));
    pack_kv_uints(pk, PROTO_KEY_SHAPE, t->shape, t->ndim);
    proto_pack_kv_u64(pk, PROTO_KEY_STEP, t->step);
    proto_pack_kv_u64(pk, PROTO_KEY_NBYTES, t->nbytes);
    pack_kv_str(pk, PROTO_KEY_UPDATE,
                t->averaged ? PROTO_VAL_UPDATE_AVERAGE : PROTO_VAL_UPDATE_COPY);
    if (with_data)
        proto_pack_str(pk, PROTO_KEY_DATA);
}

void
codec_desc_pack(msgpack_packer *pk, const codec_tensor *t, int with_data)
{
    codec_desc_pack_head(pk, t, with_data);
    if (with_data) {
        msgpack_pack_bin(pk, t->len);
        msgpack_pack_bin_body(pk, t->data, t->len);
    }
}

/* A description's required value o of key of the given type; EMAD_EPROTO if not. */
static int
desc_need(const msgpack_object *o, const char *key, msgpack_object_type type, codec_err *err)
{
    const char *what = type == MSGPACK_OBJECT_STR     ? "a string"
                       : type == MSGPACK_OBJECT_ARRAY ? "an array"
                                                      : "an unsigned integer";

    if (o == NULL || o->type != type)
        return codec_fail(err, EMAD_EPROTO, "reply key '%s' is %s%s (expected %s)", key,
                          o == NULL ? "missing" : "not ", o == NULL ? "" : what, what);
    return 0;
}

int
codec_desc_decode(const msgpack_object *o, size_t idx, codec_tensor *t, codec_err *err)
{
    tensor_keys k;
    uint64_t numel, nbytes;

    memset(t, 0, sizeof(*t));
    t->as_dtype = EMAD_DTYPE_INVALID;
    if (o->type != MSGPACK_OBJECT_MAP)
        return codec_fail(err, EMAD_EPROTO, "reply tensors[%zu] is not a map", idx);
    tensor_keys_get(o, &k);
    if (desc_need(k.name, PROTO_KEY_NAME, MSGPACK_OBJECT_STR, err) != 0)
        return err->code;
    t->name = k.name->via.str.ptr;
    t->name_len = k.name->via.str.size;
    if (names_check_tensor(t->name, t->name_len) != 0)
        return codec_fail(err, EMAD_EPROTO, "reply tensors[%zu] has an invalid name", idx);
    if (desc_need(k.kind, PROTO_KEY_KIND, MSGPACK_OBJECT_STR, err) != 0)
        return err->code;
    if ((t->kind = names_kind_from_name(k.kind->via.str.ptr, k.kind->via.str.size)) < 0)
        return codec_fail(err, EMAD_EPROTO, "reply tensors[%zu] has an unknown kind", idx);
    if (desc_need(k.dtype, PROTO_KEY_DTYPE, MSGPACK_OBJECT_STR, err) != 0)
        return err->code;
    if ((t->dtype = dtype_from_name(k.dtype->via.str.ptr, k.dtype->via.str.size)) ==
        EMAD_DTYPE_INVALID)
        return codec_fail(err, EMAD_EPROTO, "reply tensors[%zu] has an unknown dtype", idx);
    if (desc_need(k.shape, PROTO_KEY_SHAPE, MSGPACK_OBJECT_ARRAY, err) != 0)
        return err->code;
    if (k.shape->via.array.size > EMAD_MAX_NDIM)
        return codec_fail(err, EMAD_EPROTO, "reply tensors[%zu] has too many dimensions", idx);
    t->ndim = k.shape->via.array.size;
    for (uint32_t d = 0; d < t->ndim; d++) {
        if (k.shape->via.array.ptr[d].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            return codec_fail(err, EMAD_EPROTO, "reply tensors[%zu].shape[%u] is not a uint", idx,
                              d);
        t->shape[d] = k.shape->via.array.ptr[d].via.u64;
    }
    if (desc_need(k.step, PROTO_KEY_STEP, MSGPACK_OBJECT_POSITIVE_INTEGER, err) != 0 ||
        desc_need(k.nbytes, PROTO_KEY_NBYTES, MSGPACK_OBJECT_POSITIVE_INTEGER, err) != 0)
        return err->code;
    t->step = k.step->via.u64;
    t->nbytes = k.nbytes->via.u64;
    if (dtype_numel(t->shape, t->ndim, t->dtype, &numel, &nbytes) != 0 || nbytes != t->nbytes ||
        nbytes > SIZE_MAX / 2)
        return codec_fail(err, EMAD_EPROTO,
                          "reply tensors[%zu]: nbytes does not match shape and dtype", idx);
    if (k.data != NULL) {
        if (k.data->type != MSGPACK_OBJECT_BIN || k.data->via.bin.size != t->nbytes)
            return codec_fail(err, EMAD_EPROTO, "reply tensors[%zu]: data is not bin of nbytes",
                              idx);
        t->data = k.data->via.bin.ptr;
        t->len = t->nbytes;
    }
    return 0;
}

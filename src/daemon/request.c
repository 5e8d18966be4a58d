/*
 * request.c - decoding of request fields, in place (see server_int.h).
 *
 * Requests are decoded where nn_recvmsg left them: strings and tensor data
 * (msgpack BIN) point into the received message, which the server keeps
 * until the request has been handled. Every decoder checks types and
 * limits and reports the first problem as an EMAD_E* code with a message.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"
#include "base/xmalloc.h"
#include "daemon/server_int.h"

/* Fill err and return its code. */
__attribute__((format(printf, 3, 4))) int
req_fail(store_err *err, int code, const char *fmt, ...)
{
    va_list ap;

    err->code = code;
    err->tensor[0] = '\0';
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    return code;
}

/* Required string field: the value o of key (NULL if absent). */
int
req_str(const msgpack_object *o, const char *key, const char **p, size_t *len, store_err *err)
{
    *p = NULL;
    *len = 0;
    if (o == NULL || o->type != MSGPACK_OBJECT_STR)
        return req_fail(err, EMAD_EMALFORMED, "key '%s' is %s (expected a string)", key,
                        o == NULL ? "missing" : "not a string");
    *p = o->via.str.ptr;
    *len = o->via.str.size;
    return 0;
}

/* Required string field of a map. */
int
req_get_str(const msgpack_object *map, const char *key, const char **p, size_t *len, store_err *err)
{
    return req_str(proto_map_get(map, key), key, p, len, err);
}

/* Unsigned field; *present tells if it was there (NULL: required). */
int
req_get_u64(const msgpack_object *map, const char *key, uint64_t *v, int *present, store_err *err)
{
    const msgpack_object *o = proto_map_get(map, key);

    if (present != NULL)
        *present = o != NULL;
    if (o == NULL && present != NULL)
        return 0;
    if (o == NULL || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return req_fail(err, EMAD_EMALFORMED, "key '%s' is %s (expected an unsigned integer)", key,
                        o == NULL ? "missing" : "not an unsigned integer");
    *v = o->via.u64;
    return 0;
}

/* Optional float field (float32, float64 or integer). */
int
req_get_float(const msgpack_object *map, const char *key, double *v, store_err *err)
{
    const msgpack_object *o = proto_map_get(map, key);

    if (o != NULL && proto_number(o, v) != 0)
        return req_fail(err, EMAD_EMALFORMED, "key '%s' is not a number", key);
    return 0;
}

/* Optional bool field. */
int
req_get_bool(const msgpack_object *map, const char *key, int *v, store_err *err)
{
    const msgpack_object *o = proto_map_get(map, key);

    if (o == NULL)
        return 0;
    if (o->type != MSGPACK_OBJECT_BOOLEAN)
        return req_fail(err, EMAD_EMALFORMED, "key '%s' is not a boolean", key);
    *v = o->via.boolean;
    return 0;
}

/* Copy a possibly unprintable wire string for a message. */
const char *
req_printable(char *buf, size_t size, const char *s, size_t len)
{
    size_t n = len < size - 1 ? len : size - 1;

    for (size_t i = 0; i < n; i++)
        buf[i] = (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '"') ? s[i] : '?';
    buf[n] = '\0';
    return buf;
}

/* The values of a push's tensor map, by key: NULL when absent, the first of duplicates. */
typedef struct tensor_keys {
    const msgpack_object *name, *kind, *dtype, *shape, *data, *offset, *as_dtype, *slice;
} tensor_keys;

/* One pass over a tensor map's keys, instead of a proto_map_get() per key (eight per tensor). */
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
    };
#undef TENSOR_KEY

    memset(k, 0, sizeof(*k));
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *key = &map->via.map.ptr[i].key;

        if (key->type != MSGPACK_OBJECT_STR)
            continue;
        for (size_t j = 0; j < sizeof(known) / sizeof(known[0]); j++) {
            if (key->via.str.size == known[j].len &&
                memcmp(key->via.str.ptr, known[j].key, known[j].len) == 0) {
                const msgpack_object **slot =
                    (const msgpack_object **)(void *)((char *)k + known[j].field);
                if (*slot == NULL)
                    *slot = &map->via.map.ptr[i].val;
                break;
            }
        }
    }
}

/*
 * Decode the `tensors` array of a push into in[0..*n) (malloc'd into *out;
 * names and data point into the request). Structural errors only; the
 * store checks semantics.
 */
int
req_decode_tensors(const msgpack_object *root, int txn, store_input **out, size_t *n,
                   store_err *err)
{
    const msgpack_object *arr = proto_map_get(root, PROTO_KEY_TENSORS);
    store_input *in;
    uint32_t bad = 0;

    *out = NULL;
    if (arr == NULL || arr->type != MSGPACK_OBJECT_ARRAY)
        return req_fail(err, EMAD_EMALFORMED,
                        "key '" PROTO_KEY_TENSORS "' is %s (expected an array)",
                        arr == NULL ? "missing" : "not an array");
    if (arr->via.array.size > PROTO_MAX_TENSORS)
        return req_fail(err, EMAD_ELIMIT, "push has %u tensors, at most %d", arr->via.array.size,
                        PROTO_MAX_TENSORS);
    in = xcalloc(arr->via.array.size ? arr->via.array.size : 1, sizeof(*in));
    for (uint32_t i = 0; i < arr->via.array.size; i++) {
        const msgpack_object *t = &arr->via.array.ptr[i], *o;
        tensor_keys k;

        bad = i;
        const char *s;
        size_t len;
        int present;

        if (t->type != MSGPACK_OBJECT_MAP) {
            req_fail(err, EMAD_EMALFORMED, PROTO_KEY_TENSORS "[%u] is not a map", i);
            goto fail;
        }
        tensor_keys_get(t, &k);
        if (req_str(k.name, PROTO_KEY_NAME, &in[i].name, &in[i].name_len, err) != 0)
            goto fail_named;
        if (req_str(k.kind, PROTO_KEY_KIND, &s, &len, err) != 0)
            goto fail_named;
        in[i].kind = proto_kind_from_name(s, len);
        if (in[i].kind < 0) {
            char buf[32];
            req_fail(err, EMAD_EMALFORMED, "kind '%s' is not param or buffer",
                     req_printable(buf, sizeof(buf), s, len));
            goto fail_named;
        }
        if (req_str(k.dtype, PROTO_KEY_DTYPE, &s, &len, err) != 0)
            goto fail_named;
        if ((in[i].dtype = dtype_from_name(s, len)) == EMAD_DTYPE_INVALID) {
            char buf[32];
            req_fail(err, EMAD_EDTYPE, "unknown dtype '%s'",
                     req_printable(buf, sizeof(buf), s, len));
            goto fail_named;
        }
        o = k.shape;
        if (o == NULL || o->type != MSGPACK_OBJECT_ARRAY) {
            req_fail(err, EMAD_EMALFORMED, "key '" PROTO_KEY_SHAPE "' is %s (expected an array)",
                     o == NULL ? "missing" : "not an array");
            goto fail_named;
        }
        if (o->via.array.size > EMAD_MAX_NDIM) {
            req_fail(err, EMAD_ELIMIT, "shape has %u dimensions, at most %d", o->via.array.size,
                     EMAD_MAX_NDIM);
            goto fail_named;
        }
        in[i].ndim = o->via.array.size;
        for (uint32_t d = 0; d < in[i].ndim; d++) {
            if (o->via.array.ptr[d].type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
                req_fail(err, EMAD_EMALFORMED, PROTO_KEY_SHAPE "[%u] is not an unsigned integer",
                         d);
                goto fail_named;
            }
            in[i].shape[d] = o->via.array.ptr[d].via.u64;
        }
        o = k.data;
        if (o == NULL || o->type != MSGPACK_OBJECT_BIN) {
            req_fail(err, EMAD_EMALFORMED, "key '" PROTO_KEY_DATA "' is %s (expected bin)",
                     o == NULL ? "missing" : "not bin");
            goto fail_named;
        }
        in[i].data = o->via.bin.ptr; /* points into the request: any alignment */
        in[i].len = o->via.bin.size;
        if ((present = k.offset != NULL)) {
            if (k.offset->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
                req_fail(err, EMAD_EMALFORMED,
                         "key '" PROTO_KEY_OFFSET
                         "' is not an unsigned integer (expected an unsigned integer)");
                goto fail_named;
            }
            in[i].offset = k.offset->via.u64;
        }
        if (present && !txn && in[i].offset != 0) {
            req_fail(err, EMAD_EMALFORMED,
                     "'" PROTO_KEY_OFFSET "' is only allowed in a transaction");
            goto fail_named;
        }
        if ((o = k.as_dtype) != NULL) {
            if (o->type != MSGPACK_OBJECT_STR ||
                (in[i].as_dtype = dtype_from_name(o->via.str.ptr, o->via.str.size)) ==
                    EMAD_DTYPE_INVALID) {
                req_fail(err, EMAD_EDTYPE, "key '" PROTO_KEY_AS_DTYPE "' is not a dtype name");
                goto fail_named;
            }
        }
        if ((o = k.slice) != NULL) {
            if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 2 ||
                o->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
                o->via.array.ptr[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
                req_fail(err, EMAD_EMALFORMED, "key '" PROTO_KEY_SLICE "' is not [start, count]");
                goto fail_named;
            }
            in[i].start = o->via.array.ptr[0].via.u64;
            in[i].count = o->via.array.ptr[1].via.u64;
            if (in[i].count == 0) {
                req_fail(err, EMAD_ERANGE, "a slice needs a count > 0");
                goto fail_named;
            }
        }
    }
    *out = in;
    *n = arr->via.array.size;
    return 0;

fail_named:
    /* Name the tensor at fault when its name decoded and is a valid name (not raw bytes). */
    if (in[bad].name != NULL && proto_check_tensor_name(in[bad].name, in[bad].name_len) == 0) {
        char msg[sizeof(err->message)];
        size_t nl =
            in[bad].name_len < sizeof(err->tensor) - 1 ? in[bad].name_len : sizeof(err->tensor) - 1;
        int shown = nl > 200 ? 200 : (int)nl;

        memcpy(err->tensor, in[bad].name, nl);
        err->tensor[nl] = '\0';
        snprintf(msg, sizeof(msg), "tensor '%.*s': %.300s", shown, err->tensor, err->message);
        memcpy(err->message, msg, sizeof(msg));
    }
fail:
    free(in);
    return err->code;
}

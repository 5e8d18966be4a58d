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

#include <nanomsg/nn.h>

#include "common/dtype.h"
#include "base/xmalloc.h"
#include "daemon/server_int.h"

/* Fill err and return its code. */
__attribute__((format(printf, 3, 4))) int
request_fail(store_err *err, int code, const char *fmt, ...)
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
request_str(const msgpack_object *o, const char *key, const char **p, size_t *len, store_err *err)
{
    *p = NULL;
    *len = 0;
    if (o == NULL || o->type != MSGPACK_OBJECT_STR)
        return request_fail(err, EMAD_EMALFORMED, "key '%s' is %s (expected a string)", key,
                            o == NULL ? "missing" : "not a string");
    *p = o->via.str.ptr;
    *len = o->via.str.size;
    return 0;
}

/* Required string field of a map. */
int
request_get_str(const msgpack_object *map, const char *key, const char **p, size_t *len,
                store_err *err)
{
    return request_str(proto_map_get(map, key), key, p, len, err);
}

/* Unsigned field; *present tells if it was there (NULL: required). */
int
request_get_u64(const msgpack_object *map, const char *key, uint64_t *v, int *present,
                store_err *err)
{
    const msgpack_object *o = proto_map_get(map, key);

    if (present != NULL)
        *present = o != NULL;
    if (o == NULL && present != NULL)
        return 0;
    if (o == NULL || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return request_fail(err, EMAD_EMALFORMED, "key '%s' is %s (expected an unsigned integer)",
                            key, o == NULL ? "missing" : "not an unsigned integer");
    *v = o->via.u64;
    return 0;
}

/* Optional float field (float32, float64 or integer). */
int
request_get_float(const msgpack_object *map, const char *key, double *v, store_err *err)
{
    const msgpack_object *o = proto_map_get(map, key);

    if (o != NULL && proto_number(o, v) != 0)
        return request_fail(err, EMAD_EMALFORMED, "key '%s' is not a number", key);
    return 0;
}

/* Optional bool field. */
int
request_get_bool(const msgpack_object *map, const char *key, int *v, store_err *err)
{
    const msgpack_object *o = proto_map_get(map, key);

    if (o == NULL)
        return 0;
    if (o->type != MSGPACK_OBJECT_BOOLEAN)
        return request_fail(err, EMAD_EMALFORMED, "key '%s' is not a boolean", key);
    *v = o->via.boolean;
    return 0;
}

/*
 * Decode the `tensors` array of a push into in[0..*n) (malloc'd into *out;
 * names and data point into the request) with the shared tensor-map codec
 * (common/codec.h), so the daemon and libemad read one definition of the
 * map. Structural errors only; the store checks semantics.
 */
int
request_decode_tensors(const msgpack_object *root, int txn, store_input **out, size_t *n,
                       store_err *err)
{
    codec_err cerr;

    if (codec_tensors_decode(root, txn, out, n, &cerr) != 0) {
        _Static_assert(sizeof(cerr.message) == sizeof(err->message), "message sizes differ");
        _Static_assert(sizeof(cerr.tensor) == sizeof(err->tensor), "tensor name sizes differ");
        err->code = cerr.code;
        memcpy(err->message, cerr.message, sizeof(err->message));
        memcpy(err->tensor, cerr.tensor, sizeof(err->tensor));
        return err->code;
    }
    return 0;
}

/*
 * The owner a request is charged to (store_set_owner()): the connection it
 * came on. A raw REP socket hands over the SP header as control data: a
 * nn_cmsghdr, the header's size as a size_t, then the header, whose first
 * 4 bytes are the key nanomsg gave the connection (its pipe), unique while
 * the connection lives. Without one (tests), 0: no owner.
 */
uint64_t
request_owner(const void *ctrl)
{
    const struct nn_cmsghdr *h = ctrl;
    const unsigned char *p;
    size_t len;

    if (h == NULL || h->cmsg_level != PROTO_SP || h->cmsg_type != SP_HDR ||
        h->cmsg_len < NN_CMSG_LEN(sizeof(size_t) + 4))
        return 0;
    p = NN_CMSG_DATA(h);
    memcpy(&len, p, sizeof(len));
    if (len < 4)
        return 0;
    p += sizeof(len);
    return 1ULL << 32 | (uint64_t)p[0] << 24 | (uint64_t)p[1] << 16 | (uint64_t)p[2] << 8 | p[3];
}

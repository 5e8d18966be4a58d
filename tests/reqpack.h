/*
 * reqpack.h - the one msgpack request packer of the tests: builds wire
 * requests (docs/PROTOCOL.md) with msgpack-c into a growing buffer, for
 * the suites that hand them to server_process() and for the ones that send
 * them over a raw nanomsg socket. Anything unusual (a wrong type, a
 * missing key, a repeated one) is packed through the embedded packer pk.
 */
#ifndef EMAD_TESTS_REQPACK_H
#define EMAD_TESTS_REQPACK_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

/* A request being packed: the bytes are sb.data[0 .. sb.size). */
typedef struct rq {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} rq;

/* Set up an empty request buffer; rq_free() releases it. */
void rq_init(rq *r);

/* Release the buffer (the struct may be initialized again). */
void rq_free(rq *r);

/* Empty the buffer, keeping its memory. */
void rq_clear(rq *r);

/* Empty the buffer and start a request map of protocol version 1: v, op and n more entries. */
void rq_begin(rq *r, const char *op, size_t n);

/* rq_begin() with protocol version v. */
void rq_begin_v(rq *r, uint64_t v, const char *op, size_t n);

/*
 * Start a push of ntensors tensors to model at step (map keys v, op, model,
 * step, tensors): the caller packs the ntensors tensor maps.
 */
void rq_begin_push(rq *r, const char *model, uint64_t step, uint32_t ntensors);

/* Pack a string (a key or a value). */
void rq_str(rq *r, const char *s);

/* Pack a key and a string value. */
void rq_kv_str(rq *r, const char *key, const char *value);

/* Pack a key and an unsigned value. */
void rq_kv_u64(rq *r, const char *key, uint64_t value);

/* Pack a key and a double value. */
void rq_kv_double(rq *r, const char *key, double value);

/*
 * Pack a tensor map of nkeys keys, the first five name, kind, dtype, shape
 * (ndim dimensions) and data (a BIN of len bytes); the caller packs the
 * other nkeys - 5.
 */
void rq_tensor(rq *r, size_t nkeys, const char *name, const char *kind, const char *dtype,
               const uint64_t *shape, uint32_t ndim, const void *data, size_t len);

#endif

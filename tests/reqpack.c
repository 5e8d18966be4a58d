/*
 * reqpack.c - the tests' msgpack request packer (reqpack.h): request
 * heads, keys with values and tensor maps, packed with msgpack-c.
 */
#include <string.h>

#include "reqpack.h"

void
rq_init(rq *r)
{
    msgpack_sbuffer_init(&r->sb);
    msgpack_packer_init(&r->pk, &r->sb, msgpack_sbuffer_write);
}

void
rq_free(rq *r)
{
    msgpack_sbuffer_destroy(&r->sb);
}

void
rq_clear(rq *r)
{
    msgpack_sbuffer_clear(&r->sb);
}

void
rq_begin_v(rq *r, uint64_t v, const char *op, size_t n)
{
    rq_clear(r);
    msgpack_pack_map(&r->pk, (uint32_t)(2 + n));
    rq_kv_u64(r, "v", v);
    rq_kv_str(r, "op", op);
}

void
rq_begin(rq *r, const char *op, size_t n)
{
    rq_begin_v(r, 1, op, n);
}

void
rq_begin_push(rq *r, const char *model, uint64_t step, uint32_t ntensors)
{
    rq_begin(r, "push", 3);
    rq_kv_str(r, "model", model);
    rq_kv_u64(r, "step", step);
    rq_str(r, "tensors");
    msgpack_pack_array(&r->pk, ntensors);
}

void
rq_str(rq *r, const char *s)
{
    msgpack_pack_str_with_body(&r->pk, s, strlen(s));
}

void
rq_kv_str(rq *r, const char *key, const char *value)
{
    rq_str(r, key);
    rq_str(r, value);
}

void
rq_kv_u64(rq *r, const char *key, uint64_t value)
{
    rq_str(r, key);
    msgpack_pack_uint64(&r->pk, value);
}

void
rq_kv_double(rq *r, const char *key, double value)
{
    rq_str(r, key);
    msgpack_pack_double(&r->pk, value);
}

void
rq_tensor(rq *r, size_t nkeys, const char *name, const char *kind, const char *dtype,
          const uint64_t *shape, uint32_t ndim, const void *data, size_t len)
{
    msgpack_pack_map(&r->pk, (uint32_t)nkeys);
    rq_kv_str(r, "name", name);
    rq_kv_str(r, "kind", kind);
    rq_kv_str(r, "dtype", dtype);
    rq_str(r, "shape");
    msgpack_pack_array(&r->pk, ndim);
    for (uint32_t i = 0; i < ndim; i++)
        msgpack_pack_uint64(&r->pk, shape[i]);
    rq_str(r, "data");
    msgpack_pack_bin_with_body(&r->pk, data, len);
}

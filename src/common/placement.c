/*
 * placement.c - the placement of a model's tensors on the shards of a
 * cluster, and the stored names of tensor pieces (see placement.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"
#include "common/placement.h"

/* 64-bit FNV-1a. */
uint64_t
placement_hash(const char *s, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* Pieces of one tensor into p[0..shards). */
size_t
placement_tensor(uint32_t shards, const char *name, uint64_t numel, size_t esize, emad_piece *p)
{
    uint64_t h = placement_hash(name, strlen(name));
    uint64_t base, extra, offset = 0;

    if (shards <= 1 || numel * esize < EMAD_CLUSTER_SPLIT_BYTES || numel < shards) {
        p[0] = (emad_piece){.shard = (uint32_t)(h % (shards == 0 ? 1 : shards)),
                            .whole = 1,
                            .offset = 0,
                            .count = numel};
        return 1;
    }
    base = numel / shards;
    extra = numel % shards;
    for (uint32_t k = 0; k < shards; k++) {
        uint64_t count = base + (k < extra);

        p[k] = (emad_piece){.shard = (uint32_t)((k + h % shards) % shards),
                            .whole = 0,
                            .offset = offset,
                            .count = count};
        offset += count;
    }
    return shards;
}

/* Elements of a shape, or -1 if the product overflows bytes of esize. */
static int
numel_of(const emad_tensor *t, size_t esize, uint64_t *numel)
{
    uint64_t n = 1;

    if (t->ndim > EMAD_MAX_NDIM)
        return -1;
    for (uint32_t d = 0; d < t->ndim; d++) {
        if (t->shape[d] != 0 && n > UINT64_MAX / t->shape[d])
            return -1;
        n *= t->shape[d];
    }
    if (esize != 0 && n > UINT64_MAX / esize)
        return -1;
    *numel = n;
    return 0;
}

/* The placement of n tensors. */
int
placement_plan(uint32_t shards, const emad_tensor *tensors, size_t n, emad_piece **out,
               size_t *npieces)
{
    emad_piece *p = NULL, *tmp;
    size_t np = 0;

    *out = NULL;
    *npieces = 0;
    if (shards == 0 || shards > EMAD_CLUSTER_MAX_SHARDS || (tensors == NULL && n > 0))
        return EMAD_EINVAL;
    if ((tmp = malloc(shards * sizeof(*tmp))) == NULL)
        return EMAD_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const emad_tensor *t = &tensors[i];
        size_t esize = dtype_size(t->dtype), k;
        uint64_t numel;
        emad_piece *grown;

        if (t->name == NULL || esize == 0 || numel_of(t, esize, &numel) != 0) {
            free(tmp);
            free(p);
            return EMAD_EINVAL;
        }
        k = placement_tensor(shards, t->name, numel, esize, tmp);
        if ((grown = realloc(p, (np + k) * sizeof(*p))) == NULL) {
            free(tmp);
            free(p);
            return EMAD_ENOMEM;
        }
        p = grown;
        for (size_t j = 0; j < k; j++) {
            p[np + j] = tmp[j];
            p[np + j].tensor = i;
        }
        np += k;
    }
    free(tmp);
    *out = p;
    *npieces = np;
    return 0;
}

/* Stored name of a piece. */
int
placement_piece_name(char *buf, size_t size, const char *name, uint64_t offset, uint32_t ndim,
                     const uint64_t *shape)
{
    int n =
        snprintf(buf, size, "%s" PLACEMENT_PIECE_MARK "%llu/", name, (unsigned long long)offset);

    if (n < 0 || (size_t)n >= size)
        return -1;
    for (uint32_t d = 0; d < ndim; d++) {
        int m = snprintf(buf + n, size - (size_t)n, d == 0 ? "%llu" : "x%llu",
                         (unsigned long long)shape[d]);

        if (m < 0 || (size_t)m >= size - (size_t)n)
            return -1;
        n += m;
    }
    return n > PLACEMENT_PIECE_NAME_MAX ? -1 : n;
}

/* Parse decimal digits at *p (at least one) into *v, advancing *p; -1 on none or overflow. */
static int
digits(const char **p, const char *end, uint64_t *v)
{
    uint64_t x = 0;
    const char *s = *p;

    if (s == end || *s < '0' || *s > '9')
        return -1;
    for (; s < end && *s >= '0' && *s <= '9'; s++) {
        if (x > (UINT64_MAX - 9) / 10)
            return -1;
        x = x * 10 + (uint64_t)(*s - '0');
    }
    *p = s;
    *v = x;
    return 0;
}

/* Parse a stored name: 1 if it is a piece name. */
int
placement_parse_piece(const char *stored, size_t len, size_t *name_len, uint64_t *offset,
                      uint32_t *ndim, uint64_t *shape)
{
    const size_t ml = strlen(PLACEMENT_PIECE_MARK);
    const char *end = stored + len, *p = NULL;
    uint32_t nd = 0;

    for (size_t i = len; i-- > 0;)
        if (i + ml <= len && memcmp(stored + i, PLACEMENT_PIECE_MARK, ml) == 0) {
            p = stored + i;
            break;
        }
    if (p == NULL || p == stored)
        return 0;
    *name_len = (size_t)(p - stored);
    p += ml;
    if (digits(&p, end, offset) != 0 || p == end || *p++ != '/')
        return 0;
    while (p < end) {
        if (nd == EMAD_MAX_NDIM || (nd > 0 && *p++ != 'x') || digits(&p, end, &shape[nd]) != 0)
            return 0;
        nd++;
    }
    *ndim = nd;
    return 1;
}

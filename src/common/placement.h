/*
 * placement.h - where the tensors of a model live in a cluster of S shards
 * (docs/PROTOCOL.md, "Placement"): a pure function of S and the tensor
 * list, so every client computes the same one; and the names under which
 * a shard stores the piece of a tensor that was cut across shards. Shared
 * by libemad (routing) and the tests; never aborts.
 */
#ifndef EMAD_PLACEMENT_H
#define EMAD_PLACEMENT_H

#include <stddef.h>
#include <stdint.h>

#include "emad.h"

/* Marker between a tensor's name and its piece description in a stored piece name. */
#define PLACEMENT_PIECE_MARK "#piece/"

/* Longest stored piece name: the tensor name plus the marker, offset and shape. */
#define PLACEMENT_PIECE_NAME_MAX EMAD_MAX_NAME_BYTES

/* 64-bit FNV-1a of len bytes of s (offset basis 0xcbf29ce484222325, prime 0x100000001b3). */
uint64_t placement_hash(const char *s, size_t len);

/*
 * Pieces of one tensor of numel elements of esize bytes named name on S
 * shards into p[0..S) (room for S): returns how many (1 for a whole tensor,
 * S for a cut one). A tensor of at least EMAD_CLUSTER_SPLIT_BYTES with
 * S > 1 is cut into S contiguous ranges, the first numel % S one element
 * longer, range k on shard (k + h) % S; a smaller one goes whole to shard
 * h % S; h = placement_hash(name).
 */
size_t placement_tensor(uint32_t shards, const char *name, uint64_t numel, size_t esize,
                        emad_piece *p);

/*
 * The placement of n tensors (see emad_cluster_plan_shards): *out malloc'd
 * with *npieces entries. EMAD_EINVAL for shards outside
 * 1..EMAD_CLUSTER_MAX_SHARDS or a tensor without a name, with an invalid
 * dtype or a shape whose size overflows; EMAD_ENOMEM.
 */
int placement_plan(uint32_t shards, const emad_tensor *tensors, size_t n, emad_piece **out,
                   size_t *npieces);

/*
 * Stored name of the piece of tensor `name` starting at element offset, of
 * a tensor of shape[0..ndim): "NAME#piece/OFFSET/D0xD1x..." ("NAME#piece/OFFSET/"
 * for a scalar). Returns its length, or -1 if it does not fit in size bytes
 * (NUL included) or exceeds PLACEMENT_PIECE_NAME_MAX.
 */
int placement_piece_name(char *buf, size_t size, const char *name, uint64_t offset, uint32_t ndim,
                         const uint64_t *shape);

/*
 * Parse a stored name: 1 if it is a piece name (the tensor name is
 * stored[0..*name_len), *offset, *ndim and shape[0..*ndim) set), 0 if not.
 */
int placement_parse_piece(const char *stored, size_t len, size_t *name_len, uint64_t *offset,
                          uint32_t *ndim, uint64_t *shape);

#endif

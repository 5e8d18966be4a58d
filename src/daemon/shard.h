/*
 * shard.h - the daemon's cluster mode (docs/PROTOCOL.md, "Cluster mode"):
 * with --shard-map and --self the daemon is one replica of one shard of a
 * cluster. Every request but hello must then carry the map's epoch and the
 * daemon's shard; anything else is refused with EMAD_EMOVED so that the
 * client refreshes its map. Loop thread only.
 */
#ifndef EMAD_SHARD_H
#define EMAD_SHARD_H

#include <stdint.h>

#include <msgpack.h>

#include "common/shardmap.h"
#include "store/store.h"

/* This daemon's place in the cluster. */
typedef struct shard_place {
    shardmap *map;
    uint32_t shard, replica;
} shard_place;

/*
 * Load the map (file or text) and find self in it: 0 with *out a new place
 * (free with shard_destroy), or a negative code with *cause set.
 */
int shard_create(shard_place **out, const char *map, const char *self, char **cause);

/* Free a place; NULL is accepted. */
void shard_destroy(shard_place *p);

/*
 * Check the routing keys of a request of op (any op but hello) against
 * place p (NULL: not in cluster mode): 0, or EMAD_EMOVED / EMAD_EMALFORMED
 * with err filled.
 */
int shard_check(const shard_place *p, const msgpack_object *root, int op, store_err *err);

/*
 * Refuse a push, transaction or pull of a model that is resyncing
 * (EMAD_EMOVED: the client reads another replica, or installs a peer's
 * state). 0 otherwise.
 */
int shard_check_model(store *s, const msgpack_object *root, int op, store_err *err);

/* Entries shard_pack_hello() adds to a hello reply (0 outside cluster mode). */
size_t shard_hello_count(const shard_place *p);

/* Pack the hello entries of cluster mode: epoch, shard, shards, replica. */
void shard_pack_hello(msgpack_packer *pk, const shard_place *p);

/* Entries shard_pack_moved() adds to the error map of EMAD_EMOVED (0 outside cluster mode). */
size_t shard_moved_count(const shard_place *p);

/* Pack the daemon's epoch and shard into an EMAD_EMOVED error map. */
void shard_pack_moved(msgpack_packer *pk, const shard_place *p);

#endif

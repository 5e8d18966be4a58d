/*
 * shard.c - the daemon's cluster mode (see shard.h): its place in the
 * shard map, the routing check of every request, and the cluster fields of
 * hello replies and EMAD_EMOVED errors.
 */
#include <stdlib.h>
#include <string.h>

#include "common/cause.h"
#include "common/proto.h"
#include "base/xmalloc.h"
#include "daemon/server_int.h"
#include "daemon/shard.h"

int
shard_create(shard_place **out, const char *map, const char *self, char **cause)
{
    shard_place *p = xcalloc(1, sizeof(*p));
    int rc;

    *out = NULL;
    if ((rc = shardmap_load(map, &p->map, cause)) != 0) {
        free(p);
        return rc;
    }
    if (shardmap_find(p->map, self, &p->shard, &p->replica) != 0) {
        shard_destroy(p);
        return cause_set(cause, EMAD_EINVAL, "self '%s' is not one of the shard map's URLs", self);
    }
    *out = p;
    return 0;
}

void
shard_destroy(shard_place *p)
{
    if (p == NULL)
        return;
    shardmap_destroy(p->map);
    free(p);
}

int
shard_check(const shard_place *p, const msgpack_object *root, int op, store_err *err)
{
    uint64_t epoch = 0, shard = 0;
    int has_epoch = 0, has_shard = 0;

    if (request_get_u64(root, PROTO_KEY_EPOCH, &epoch, &has_epoch, err) != 0 ||
        request_get_u64(root, PROTO_KEY_SHARD, &shard, &has_shard, err) != 0)
        return err->code;
    if (p == NULL) {
        if (has_epoch || has_shard)
            return request_fail(err, EMAD_EMOVED,
                                "%s: this daemon is not part of a cluster (no shard map) but "
                                "the request names epoch %llu shard %llu; refresh the map",
                                proto_op_name(op), (unsigned long long)epoch,
                                (unsigned long long)shard);
        return 0;
    }
    if (!has_epoch || !has_shard)
        return request_fail(err, EMAD_EMOVED,
                            "%s: this daemon is shard %u of a cluster at epoch %llu: requests "
                            "must name their epoch and shard; refresh the map",
                            proto_op_name(op), p->shard, (unsigned long long)p->map->epoch);
    if (epoch != p->map->epoch || shard != p->shard)
        return request_fail(err, EMAD_EMOVED,
                            "%s: request for epoch %llu shard %llu, but this daemon is shard %u "
                            "at epoch %llu; refresh the map",
                            proto_op_name(op), (unsigned long long)epoch, (unsigned long long)shard,
                            p->shard, (unsigned long long)p->map->epoch);
    return 0;
}

int
shard_check_model(store *s, const msgpack_object *root, int op, store_err *err)
{
    const msgpack_object *o = proto_map_get(root, PROTO_KEY_MODEL);
    const model *m;

    if ((op != PROTO_OP_PUSH && op != PROTO_OP_BEGIN && op != PROTO_OP_PULL) || o == NULL ||
        o->type != MSGPACK_OBJECT_STR)
        return 0;
    if ((m = store_model_find(s, o->via.str.ptr, o->via.str.size)) == NULL || !m->resyncing)
        return 0;
    return request_fail(err, EMAD_EMOVED,
                        "%s: model '%s' is resyncing (it waits for a peer replica's state); "
                        "use another replica",
                        proto_op_name(op), m->name);
}

size_t
shard_hello_count(const shard_place *p)
{
    return p != NULL ? 4 : 0;
}

void
shard_pack_hello(msgpack_packer *pk, const shard_place *p)
{
    if (p == NULL)
        return;
    proto_pack_kv_u64(pk, PROTO_KEY_EPOCH, p->map->epoch);
    proto_pack_kv_u64(pk, PROTO_KEY_SHARD, p->shard);
    proto_pack_kv_u64(pk, PROTO_KEY_SHARDS, p->map->shards);
    proto_pack_kv_u64(pk, PROTO_KEY_REPLICA, p->replica);
}

size_t
shard_moved_count(const shard_place *p)
{
    return p != NULL ? 2 : 0;
}

void
shard_pack_moved(msgpack_packer *pk, const shard_place *p)
{
    if (p == NULL)
        return;
    proto_pack_kv_u64(pk, PROTO_KEY_EPOCH, p->map->epoch);
    proto_pack_kv_u64(pk, PROTO_KEY_SHARD, p->shard);
}

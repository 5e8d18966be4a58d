/*
 * cluster.c - libemad's cluster client: the shard map, the placement and
 * the replica status (include/emad.h, "Clusters"). A cluster client is an
 * emad_client whose calls are routed to one inner client per replica.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "common/placement.h"
#include "common/shardmap.h"

/* Check a shard map (path or text); the cause goes into msg. */
EMAD_EXTERN int
emad_cluster_check_map(const char *map, char *msg, size_t size)
{
    shardmap *m = NULL;
    char *cause = NULL;
    int rc = shardmap_load(map, &m, &cause);

    if (msg != NULL && size > 0)
        snprintf(msg, size, "%s", rc == 0 ? "" : cause != NULL ? cause : emad_strerror(rc));
    free(cause);
    shardmap_destroy(m);
    return rc;
}

/* The placement of a tensor list on `shards` shards. */
EMAD_EXTERN int
emad_cluster_plan_shards(uint32_t shards, const emad_tensor *tensors, size_t n, emad_piece **out,
                         size_t *npieces)
{
    if (out == NULL || npieces == NULL)
        return EMAD_EINVAL;
    return placement_plan(shards, tensors, n, out, npieces);
}

/* Free a status array. */
EMAD_EXTERN void
emad_cluster_status_free(emad_replica_status *s, size_t n)
{
    (void)n;
    free(s);
}

/*
 * cluster_stub.c - placeholders of the cluster calls whose implementation
 * follows; each returns EMAD_EINVAL.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "client.h"

EMAD_EXTERN int
emad_connect_cluster(emad_client **out, const char *map, const emad_options *opts)
{
    (void)map;
    (void)opts;
    if (out != NULL)
        *out = NULL;
    return EMAD_EINVAL;
}

EMAD_EXTERN int
emad_cluster_info(const emad_client *c, uint32_t *shards, uint32_t *replicas, uint64_t *epoch,
                  uint32_t *ack)
{
    (void)c, (void)shards, (void)replicas, (void)epoch, (void)ack;
    return EMAD_EINVAL;
}

EMAD_EXTERN int
emad_cluster_status(emad_client *c, const char *model, emad_replica_status **out, size_t *n)
{
    (void)c, (void)model, (void)out, (void)n;
    return EMAD_EINVAL;
}

EMAD_EXTERN int
emad_cluster_plan(emad_client *c, const emad_tensor *tensors, size_t n, emad_piece **out,
                  size_t *npieces)
{
    (void)c, (void)tensors, (void)n, (void)out, (void)npieces;
    return EMAD_EINVAL;
}

EMAD_EXTERN int
emad_cluster_resync(emad_client *c, const char *model, size_t *copied)
{
    (void)c, (void)model, (void)copied;
    return EMAD_EINVAL;
}

EMAD_EXTERN const char *
emad_cluster_warnings(const emad_client *c)
{
    (void)c;
    return "";
}

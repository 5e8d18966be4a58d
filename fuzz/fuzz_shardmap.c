/*
 * fuzz_shardmap.c - libFuzzer target for the cluster shard-map parser
 * (shardmap_parse) and the stored piece names of the placement
 * (placement_parse_piece).
 *
 * An accepted map must be consistent: an epoch of at least 1, 1..1024
 * shards of the same 1..16 replicas, 1 <= ack <= replicas, every URL
 * distinct and findable by shardmap_find at its own place. A rejected one
 * must come with EMAD_EINVAL (or EMAD_ENOMEM) and a message. A piece name
 * that parses must print back to the same bytes. Anything else aborts;
 * leaks are reported by the fuzzer.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/placement.h"
#include "common/shardmap.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Check an accepted map. */
static void
check_map(const shardmap *m)
{
    if (m->epoch < 1 || m->shards < 1 || m->shards > EMAD_CLUSTER_MAX_SHARDS || m->replicas < 1 ||
        m->replicas > EMAD_CLUSTER_MAX_REPLICAS || m->ack < 1 || m->ack > m->replicas)
        abort();
    for (uint32_t s = 0; s < m->shards; s++)
        for (uint32_t r = 0; r < m->replicas; r++) {
            uint32_t fs, fr;

            if (shardmap_find(m, shardmap_url(m, s, r), &fs, &fr) != 0 || fs != s || fr != r)
                abort();
        }
}

/* Check that a piece name that parses prints back the same. */
static void
check_piece(const char *s, size_t len)
{
    uint64_t offset, shape[EMAD_MAX_NDIM];
    uint32_t ndim;
    size_t name_len;
    char name[EMAD_MAX_NAME_BYTES + 1], back[EMAD_MAX_NAME_BYTES + 1];

    if (len > EMAD_MAX_NAME_BYTES || memchr(s, '\0', len) != NULL ||
        !placement_parse_piece(s, len, &name_len, &offset, &ndim, shape))
        return;
    memcpy(name, s, name_len);
    name[name_len] = '\0';
    /* Leading zeros and '+' do not print back: only canonical forms must. */
    if (placement_piece_name(back, sizeof(back), name, offset, ndim, shape) == (int)len &&
        memcmp(back, s, len) != 0)
        abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    shardmap *m = NULL;
    char *cause = NULL;
    int rc = shardmap_parse((const char *)data, size, &m, &cause);

    if (rc == 0) {
        if (m == NULL || cause != NULL)
            abort();
        check_map(m);
        shardmap_destroy(m);
    } else if ((rc != EMAD_EINVAL && rc != EMAD_ENOMEM) || m != NULL || cause == NULL) {
        abort();
    }
    free(cause);
    check_piece((const char *)data, size);
    return 0;
}

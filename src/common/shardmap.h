/*
 * shardmap.h - the shard map of a cluster (docs/PROTOCOL.md, "Cluster
 * mode"): which daemons hold which shard, under which epoch, and how many
 * replicas of a shard must apply a push. Parsed from text by the daemon
 * (--shard-map) and by libemad (emad_connect_cluster), so both read one
 * definition of the format. Never aborts: errors are returned with a cause.
 */
#ifndef EMAD_SHARDMAP_H
#define EMAD_SHARDMAP_H

#include <stddef.h>
#include <stdint.h>

#include "emad.h"

/* A parsed shard map: shards x replicas URLs, row-major. */
typedef struct shardmap {
    uint64_t epoch;    /* >= 1 */
    uint32_t ack;      /* 1..replicas */
    uint32_t shards;   /* S >= 1 */
    uint32_t replicas; /* R >= 1, the same for every shard */
    char **urls;       /* shards * replicas strings: urls[shard * replicas + replica] */
} shardmap;

/*
 * Parse map text of len bytes (lines, or ';'-separated directives) into a
 * new map *out (free with shardmap_destroy). Returns 0, or EMAD_EINVAL /
 * EMAD_ENOMEM with a malloc'd *cause naming the line ("line 3: ...").
 */
int shardmap_parse(const char *text, size_t len, shardmap **out, char **cause);

/*
 * Parse a map given as a file path or as inline text (text when it holds a
 * newline or ';' or starts with a directive or '#'). File errors are EMAD_EIO.
 */
int shardmap_load(const char *path_or_text, shardmap **out, char **cause);

/* Free a map; NULL is accepted. */
void shardmap_destroy(shardmap *m);

/* URL of replica r of shard s (borrowed from m). */
const char *shardmap_url(const shardmap *m, uint32_t s, uint32_t r);

/* Find url in the map: 0 with *shard and *replica set, or -1 if it is not there. */
int shardmap_find(const shardmap *m, const char *url, uint32_t *shard, uint32_t *replica);

#endif

/*
 * shardmap.c - parser of the cluster shard map (see shardmap.h). The text
 * is split into directives at newlines and ';'; '#' starts a comment to the
 * end of the directive. Directives: `epoch N` (required, N >= 1), `ack N`
 * (optional, 1..R, default 1), `shard I URL...` (each shard 0..S-1 exactly
 * once, the same number of URLs on every line, no URL twice in the map).
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cause.h"
#include "common/proto_keys.h"
#include "common/shardmap.h"

/* Most words on one directive line: `shard`, its index and the replicas. */
#define MAX_WORDS (2 + EMAD_CLUSTER_MAX_REPLICAS + 1)

/* A map under construction: shard lines by index before they are checked. */
typedef struct building {
    shardmap *m;
    char **rows;     /* per shard index: its URLs, or NULL if not seen yet */
    uint32_t *nrows; /* per shard index: URLs on its line */
    uint32_t cap;    /* entries of rows / nrows */
    int has_epoch, has_ack;
    uint32_t max_index; /* highest shard index + 1 */
} building;

/* Free a map; NULL is accepted. */
void
shardmap_destroy(shardmap *m)
{
    if (m == NULL)
        return;
    if (m->urls != NULL)
        for (size_t i = 0; i < (size_t)m->shards * m->replicas; i++)
            free(m->urls[i]);
    free(m->urls);
    free(m);
}

/* URL of replica r of shard s. */
const char *
shardmap_url(const shardmap *m, uint32_t s, uint32_t r)
{
    return m->urls[(size_t)s * m->replicas + r];
}

/* Find url in the map. */
int
shardmap_find(const shardmap *m, const char *url, uint32_t *shard, uint32_t *replica)
{
    for (uint32_t s = 0; s < m->shards; s++)
        for (uint32_t r = 0; r < m->replicas; r++)
            if (strcmp(shardmap_url(m, s, r), url) == 0) {
                *shard = s;
                *replica = r;
                return 0;
            }
    return -1;
}

/* Parse a decimal unsigned integer word into *v (no sign, no junk, no overflow). */
static int
parse_uint(const char *w, uint64_t max, uint64_t *v)
{
    char *end;
    unsigned long long x;

    if (!isdigit((unsigned char)w[0]))
        return -1;
    errno = 0;
    x = strtoull(w, &end, 10);
    if (errno != 0 || *end != '\0' || x > max)
        return -1;
    *v = x;
    return 0;
}

/* Split line (modified in place) into at most MAX_WORDS words; the count, or -1 if too many. */
static int
split_words(char *line, char **words)
{
    int n = 0;
    char *p = line;

    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\r')
            p++;
        if (*p == '\0')
            return n;
        if (n == MAX_WORDS)
            return -1;
        words[n++] = p;
        while (*p != '\0' && *p != ' ' && *p != '\t' && *p != '\r')
            p++;
        if (*p != '\0')
            *p++ = '\0';
    }
}

/* A URL word is acceptable: scheme://something, printable ASCII, not too long. */
static int
url_ok(const char *u)
{
    size_t len = strlen(u);
    const char *sep = strstr(u, "://");

    if (len > EMAD_CLUSTER_MAX_URL_BYTES || sep == NULL || sep == u || sep[3] == '\0')
        return 0;
    for (size_t i = 0; i < len; i++)
        if (u[i] <= ' ' || u[i] > '~')
            return 0;
    return 1;
}

/* The `shard I URL...` directive of line number lineno. */
static int
parse_shard(building *b, char **w, int nw, unsigned lineno, char **cause)
{
    uint64_t index;
    char *row, *p;
    size_t bytes = 0;

    if (nw < 3)
        return cause_set(cause, EMAD_EINVAL, "line %u: 'shard' needs an index and replica URLs",
                         lineno);
    if (parse_uint(w[1], EMAD_CLUSTER_MAX_SHARDS - 1, &index) != 0)
        return cause_set(cause, EMAD_EINVAL, "line %u: shard index '%s' is not 0..%d", lineno, w[1],
                         EMAD_CLUSTER_MAX_SHARDS - 1);
    if (nw - 2 > EMAD_CLUSTER_MAX_REPLICAS)
        return cause_set(cause, EMAD_EINVAL, "line %u: more than %d replicas", lineno,
                         EMAD_CLUSTER_MAX_REPLICAS);
    if (index < b->cap && b->rows[index] != NULL)
        return cause_set(cause, EMAD_EINVAL, "line %u: shard %llu is listed twice", lineno,
                         (unsigned long long)index);
    for (int i = 2; i < nw; i++) {
        if (!url_ok(w[i]))
            return cause_set(cause, EMAD_EINVAL,
                             "line %u: '%s' is not a URL (scheme://address, at most %d bytes)",
                             lineno, w[i], EMAD_CLUSTER_MAX_URL_BYTES);
        bytes += strlen(w[i]) + 1;
    }
    if (index >= b->cap) {
        uint32_t cap = (uint32_t)index + 1;
        char **rows = realloc(b->rows, cap * sizeof(*rows));
        uint32_t *nrows;

        if (rows == NULL)
            return cause_set(cause, EMAD_ENOMEM, "out of memory");
        b->rows = rows;
        if ((nrows = realloc(b->nrows, cap * sizeof(*nrows))) == NULL)
            return cause_set(cause, EMAD_ENOMEM, "out of memory");
        b->nrows = nrows;
        for (uint32_t i = b->cap; i < cap; i++) {
            b->rows[i] = NULL;
            b->nrows[i] = 0;
        }
        b->cap = cap;
    }
    if ((row = malloc(bytes)) == NULL)
        return cause_set(cause, EMAD_ENOMEM, "out of memory");
    p = row;
    for (int i = 2; i < nw; i++) {
        size_t n = strlen(w[i]) + 1;

        memcpy(p, w[i], n);
        p += n;
    }
    b->rows[index] = row;
    b->nrows[index] = (uint32_t)(nw - 2);
    if (index + 1 > b->max_index)
        b->max_index = (uint32_t)index + 1;
    return 0;
}

/* One directive (a line without its comment) of line number lineno. */
static int
parse_directive(building *b, char *line, unsigned lineno, char **cause)
{
    char *w[MAX_WORDS];
    int nw = split_words(line, w);
    uint64_t v;

    if (nw == 0)
        return 0;
    if (nw < 0)
        return cause_set(cause, EMAD_EINVAL, "line %u: too many words (at most %d replicas)",
                         lineno, EMAD_CLUSTER_MAX_REPLICAS);
    if (strcmp(w[0], PROTO_KEY_EPOCH) == 0 || strcmp(w[0], "ack") == 0) {
        int is_epoch = w[0][0] == 'e';
        int *seen = is_epoch ? &b->has_epoch : &b->has_ack;

        if (nw != 2 ||
            parse_uint(w[1], is_epoch ? UINT64_MAX : EMAD_CLUSTER_MAX_REPLICAS, &v) != 0 || v == 0)
            return cause_set(cause, EMAD_EINVAL, "line %u: '%s' needs one number %s", lineno, w[0],
                             is_epoch ? ">= 1" : "1..replicas");
        if (*seen)
            return cause_set(cause, EMAD_EINVAL, "line %u: '%s' given twice", lineno, w[0]);
        *seen = 1;
        if (is_epoch)
            b->m->epoch = v;
        else
            b->m->ack = (uint32_t)v;
        return 0;
    }
    if (strcmp(w[0], PROTO_KEY_SHARD) == 0)
        return parse_shard(b, w, nw, lineno, cause);
    return cause_set(cause, EMAD_EINVAL,
                     "line %u: unknown directive '%.64s' (expected epoch, ack or shard)", lineno,
                     w[0]);
}

/* Check the complete map and move the rows into b->m->urls. */
static int
finish(building *b, char **cause)
{
    shardmap *m = b->m;
    size_t n;

    if (!b->has_epoch)
        return cause_set(cause, EMAD_EINVAL, "no 'epoch' line");
    if (b->max_index == 0)
        return cause_set(cause, EMAD_EINVAL, "no 'shard' line");
    for (uint32_t s = 0; s < b->max_index; s++)
        if (b->rows[s] == NULL)
            return cause_set(cause, EMAD_EINVAL, "shard %u is missing (shards are 0..%u)", s,
                             b->max_index - 1);
    m->shards = b->max_index;
    m->replicas = b->nrows[0];
    for (uint32_t s = 1; s < m->shards; s++)
        if (b->nrows[s] != m->replicas)
            return cause_set(cause, EMAD_EINVAL,
                             "shard %u has %u replicas but shard 0 has %u (all must have the same)",
                             s, b->nrows[s], m->replicas);
    if (!b->has_ack)
        m->ack = 1;
    if (m->ack > m->replicas)
        return cause_set(cause, EMAD_EINVAL, "ack %u is more than the %u replicas of a shard",
                         m->ack, m->replicas);
    n = (size_t)m->shards * m->replicas;
    if ((m->urls = calloc(n, sizeof(*m->urls))) == NULL)
        return cause_set(cause, EMAD_ENOMEM, "out of memory");
    for (uint32_t s = 0; s < m->shards; s++) {
        const char *p = b->rows[s];

        for (uint32_t r = 0; r < m->replicas; r++) {
            size_t len = strlen(p) + 1;

            for (size_t i = 0; i < (size_t)s * m->replicas + r; i++)
                if (strcmp(m->urls[i], p) == 0)
                    return cause_set(cause, EMAD_EINVAL, "URL %s appears twice in the map", p);
            if ((m->urls[(size_t)s * m->replicas + r] = malloc(len)) == NULL)
                return cause_set(cause, EMAD_ENOMEM, "out of memory");
            memcpy(m->urls[(size_t)s * m->replicas + r], p, len);
            p += len;
        }
    }
    return 0;
}

/* Parse map text into *out. */
int
shardmap_parse(const char *text, size_t len, shardmap **out, char **cause)
{
    building b = {0};
    char *copy = NULL, *line;
    unsigned lineno = 1;
    int rc = 0;

    *out = NULL;
    if (len > EMAD_CLUSTER_MAX_MAP_BYTES)
        return cause_set(cause, EMAD_EINVAL, "shard map of %zu bytes (at most %u)", len,
                         EMAD_CLUSTER_MAX_MAP_BYTES);
    if (memchr(text, '\0', len) != NULL)
        return cause_set(cause, EMAD_EINVAL, "shard map holds a NUL byte");
    if ((b.m = calloc(1, sizeof(*b.m))) == NULL || (copy = malloc(len + 1)) == NULL) {
        rc = cause_set(cause, EMAD_ENOMEM, "out of memory");
        goto done;
    }
    memcpy(copy, text, len);
    copy[len] = '\0';
    line = copy;
    while (rc == 0 && line != NULL) {
        char *end = line + strcspn(line, "\n;"), *hash;
        char sep = *end;

        *end = '\0';
        if ((hash = strchr(line, '#')) != NULL)
            *hash = '\0';
        rc = parse_directive(&b, line, lineno, cause);
        if (sep == '\n')
            lineno++;
        line = sep == '\0' ? NULL : end + 1;
    }
    if (rc == 0)
        rc = finish(&b, cause);
done:
    for (uint32_t s = 0; s < b.cap; s++)
        free(b.rows[s]);
    free(b.rows);
    free(b.nrows);
    free(copy);
    if (rc != 0)
        shardmap_destroy(b.m);
    else
        *out = b.m;
    return rc;
}

/* True if s is inline map text rather than a path. */
static int
looks_inline(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return strpbrk(s, "\n;") != NULL || s[0] == '#' || strncmp(s, PROTO_KEY_EPOCH " ", 6) == 0 ||
           strncmp(s, PROTO_KEY_SHARD " ", 6) == 0 || strncmp(s, "ack ", 4) == 0;
}

/* Parse a map given as a file path or as inline text. */
int
shardmap_load(const char *path_or_text, shardmap **out, char **cause)
{
    FILE *f;
    char *buf;
    size_t n;
    int rc;

    *out = NULL;
    if (path_or_text == NULL)
        return cause_set(cause, EMAD_EINVAL, "no shard map given");
    if (looks_inline(path_or_text))
        return shardmap_parse(path_or_text, strlen(path_or_text), out, cause);
    if ((f = fopen(path_or_text, "r")) == NULL)
        return cause_set(cause, EMAD_EIO, "cannot open shard map %s: %s", path_or_text,
                         strerror(errno));
    if ((buf = malloc(EMAD_CLUSTER_MAX_MAP_BYTES + 1)) == NULL) {
        fclose(f);
        return cause_set(cause, EMAD_ENOMEM, "out of memory");
    }
    n = fread(buf, 1, EMAD_CLUSTER_MAX_MAP_BYTES + 1, f);
    if (ferror(f)) {
        rc = cause_set(cause, EMAD_EIO, "cannot read shard map %s", path_or_text);
    } else {
        rc = shardmap_parse(buf, n, out, cause);
        if (rc != 0 && cause != NULL && *cause != NULL) {
            char *inner = *cause;

            *cause = NULL;
            rc = cause_set(cause, rc, "%s: %s", path_or_text, inner);
            free(inner);
        }
    }
    free(buf);
    fclose(f);
    return rc;
}

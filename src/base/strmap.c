/*
 * strmap.c - open-addressing (linear probing) hash map from byte strings
 * to pointers, with backward-shift deletion so no tombstones build up.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/strmap.h"
#include "base/xmalloc.h"

struct slot {
    const char *key;
    size_t len;
    size_t hash;
    void *value;
};

struct strmap {
    struct slot *slots;
    size_t cap; /* power of two */
    size_t count;
};

/* 64-bit hash of a byte string (FNV-1a). */
size_t
strmap_hash(const char *key, size_t len)
{
    uint64_t h = 1469598103934665603ULL;

    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 1099511628211ULL;
    }
    return (size_t)(h ^ (h >> 32));
}

strmap *
strmap_create(void)
{
    strmap *m = xcalloc(1, sizeof(*m));

    m->cap = 16;
    m->slots = xcalloc(m->cap, sizeof(*m->slots));
    return m;
}

void
strmap_destroy(strmap *m)
{
    if (m == NULL)
        return;
    free(m->slots);
    free(m);
}

/* Index of key's slot, or of the empty slot where it would go. */
static size_t
find_slot(const strmap *m, const char *key, size_t len, size_t hash)
{
    size_t mask = m->cap - 1, i = hash & mask;

    while (m->slots[i].key != NULL) {
        const struct slot *s = &m->slots[i];
        if (s->hash == hash && s->len == len && memcmp(s->key, key, len) == 0)
            break;
        i = (i + 1) & mask;
    }
    return i;
}

/* Rehash into a table of cap slots (a power of two, above the count). */
static void
resize(strmap *m, size_t cap)
{
    struct slot *old = m->slots;
    size_t oldcap = m->cap;

    m->cap = cap;
    m->slots = xcalloc(m->cap, sizeof(*m->slots));
    for (size_t i = 0; i < oldcap; i++) {
        if (old[i].key != NULL) {
            size_t j = find_slot(m, old[i].key, old[i].len, old[i].hash);
            m->slots[j] = old[i];
        }
    }
    free(old);
}

void *
strmap_get(const strmap *m, const char *key, size_t len)
{
    return strmap_get_hashed(m, key, len, strmap_hash(key, len));
}

void *
strmap_get_hashed(const strmap *m, const char *key, size_t len, size_t hash)
{
    size_t i = find_slot(m, key, len, hash);
    return m->slots[i].key != NULL ? m->slots[i].value : NULL;
}

void *
strmap_add_hashed(strmap *m, const char *key, size_t len, size_t hash, void *value)
{
    size_t i;

    if ((m->count + 1) * 4 > m->cap * 3)
        resize(m, m->cap * 2);
    i = find_slot(m, key, len, hash);
    if (m->slots[i].key != NULL)
        return m->slots[i].value;
    m->count++;
    m->slots[i] = (struct slot){key, len, hash, value};
    return NULL;
}

void
strmap_put(strmap *m, const char *key, size_t len, void *value)
{
    size_t hash = strmap_hash(key, len), i;

    if ((m->count + 1) * 4 > m->cap * 3)
        resize(m, m->cap * 2);
    i = find_slot(m, key, len, hash);
    if (m->slots[i].key == NULL)
        m->count++;
    m->slots[i] = (struct slot){key, len, hash, value};
}

void
strmap_reserve(strmap *m, size_t n)
{
    size_t cap = m->cap;

    while (n * 4 > cap * 3) /* the load factor strmap_put() keeps */
        cap *= 2;
    if (cap != m->cap)
        resize(m, cap);
}

void *
strmap_del(strmap *m, const char *key, size_t len)
{
    size_t mask = m->cap - 1, i = find_slot(m, key, len, strmap_hash(key, len)), j;
    void *value;

    if (m->slots[i].key == NULL)
        return NULL;
    value = m->slots[i].value;
    m->slots[i].key = NULL;
    m->count--;
    /* Backward-shift the following cluster so lookups never stop early. */
    j = i;
    for (;;) {
        size_t home;
        j = (j + 1) & mask;
        if (m->slots[j].key == NULL)
            break;
        home = m->slots[j].hash & mask;
        /* Move slot j to i if its home is not cyclically in (i, j]. */
        if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
            m->slots[i] = m->slots[j];
            m->slots[j].key = NULL;
            i = j;
        }
    }
    return value;
}

/*
 * strmap.c - open-addressing (linear probing) hash map from byte strings
 * to pointers, with backward-shift deletion so no tombstones build up.
 *
 * Keys come from clients (model and tensor names), so the hash is keyed:
 * SipHash-1-3 with a key drawn at random once per process. With a fixed
 * hash a client could pick 65,536 names that share a few home slots and make
 * one push probe billions of slots (measured: 5.8 s on the event loop).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>

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

/* The process's hash key: written once by hash_key_init(), read-only after. */
static uint64_t hash_key[2];
static pthread_once_t hash_key_once = PTHREAD_ONCE_INIT;

/* Draw the hash key from the kernel (a clock-based key if it has none to give). */
static void
hash_key_init(void)
{
    if (getrandom(hash_key, sizeof(hash_key), GRND_NONBLOCK) != (ssize_t)sizeof(hash_key)) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        hash_key[0] = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL ^ (uint64_t)getpid();
        hash_key[1] = (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)&ts;
    }
}

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND(v0, v1, v2, v3)                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

/* SipHash-1-3 of a byte string under the process's key (little-endian words). */
size_t
strmap_hash(const char *key, size_t len)
{
    const unsigned char *p = (const unsigned char *)key;
    uint64_t v0 = 0x736f6d6570736575ULL ^ hash_key[0], v1 = 0x646f72616e646f6dULL ^ hash_key[1];
    uint64_t v2 = 0x6c7967656e657261ULL ^ hash_key[0], v3 = 0x7465646279746573ULL ^ hash_key[1];
    uint64_t m, b = (uint64_t)len << 56;
    size_t i, tail = len & 7;

    (void)pthread_once(&hash_key_once, hash_key_init); /* before any map: a caller hashing first */
    for (i = 0; i + 8 <= len; i += 8) {
        m = 0;
        for (int k = 7; k >= 0; k--)
            m = (m << 8) | p[i + (size_t)k];
        v3 ^= m;
        SIPROUND(v0, v1, v2, v3);
        v0 ^= m;
    }
    for (size_t k = 0; k < tail; k++)
        b |= (uint64_t)p[i + k] << (8 * k);
    v3 ^= b;
    SIPROUND(v0, v1, v2, v3);
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND(v0, v1, v2, v3);
    SIPROUND(v0, v1, v2, v3);
    SIPROUND(v0, v1, v2, v3);
    return (size_t)(v0 ^ v1 ^ v2 ^ v3);
}

strmap *
strmap_create(void)
{
    strmap *m = xcalloc(1, sizeof(*m));

    (void)pthread_once(&hash_key_once, hash_key_init);
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

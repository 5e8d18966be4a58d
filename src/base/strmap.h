/*
 * strmap.h - open-addressing hash map from byte strings to pointers.
 *
 * Keys are borrowed: the caller keeps each key's bytes alive while it is in
 * the map (the store points them at the tensor's or model's own name).
 * Used for model and tensor lookup by name on the push path.
 */
#ifndef EMAD_STRMAP_H
#define EMAD_STRMAP_H

#include <stddef.h>

typedef struct strmap strmap;

/* New empty map (aborts on out of memory). */
strmap *strmap_create(void);

/* Free the map (not the keys or values); NULL accepted. */
void strmap_destroy(strmap *m);

/* Value for key, or NULL. */
void *strmap_get(const strmap *m, const char *key, size_t len);

/* Insert or replace. */
void strmap_put(strmap *m, const char *key, size_t len, void *value);

/*
 * The hash of a key, for the _hashed calls below: a caller that looks one
 * name up in several maps hashes it once.
 */
size_t strmap_hash(const char *key, size_t len);

/* strmap_get() of a key whose strmap_hash() is hash. */
void *strmap_get_hashed(const strmap *m, const char *key, size_t len, size_t hash);

/*
 * Insert key (strmap_hash() hash) unless it is there: returns the value it
 * has, or NULL after inserting value. One probe where a get and a put take two.
 */
void *strmap_add_hashed(strmap *m, const char *key, size_t len, size_t hash, void *value);

/* Make room for n keys in all without growing again (aborts on out of memory). */
void strmap_reserve(strmap *m, size_t n);

/* Remove a key; returns its value or NULL. */
void *strmap_del(strmap *m, const char *key, size_t len);

#endif

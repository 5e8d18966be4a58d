/*
 * gmac.h - the MAC of authenticated frames (docs/PROTOCOL.md,
 * "Authentication"): the tag of AES-256-GCM with an empty plaintext, the
 * MACed bytes as additional data, under a key derived for each sequence
 * number.
 *
 * The result is always that of OpenSSL's AES-256-GCM. Where the CPU has
 * VPCLMULQDQ with AVX-512 or AVX2, GHASH runs here instead, 32 blocks per
 * reduction (with AVX-512 about 1.5 times the speed of OpenSSL's Poly1305
 * per core on the machines this was measured on); tests/check_auth.c
 * compares them all.
 */
#ifndef EMAD_GMAC_H
#define EMAD_GMAC_H

#include <stddef.h>
#include <stdint.h>

#define GMAC_KEY_BYTES 32
#define GMAC_TAG_BYTES 16

typedef struct gmac gmac;

/*
 * Start the tag of nonce u32le(index) || u64le(seq) under the key derived
 * from key and seq: BLAKE2b-256 keyed with key over "emad-mac" ||
 * u64le(seq). NULL if out of memory or if OpenSSL fails.
 */
gmac *gmac_begin(const unsigned char key[GMAC_KEY_BYTES], uint64_t seq, uint32_t index);

/* Feed len more bytes of the additional data. */
void gmac_update(gmac *g, const void *data, size_t len);

/*
 * The same, and copy them to dst (which must not overlap data): with the
 * fast GHASH in one pass over memory, which costs little more than the
 * copy alone.
 */
void gmac_update_copy(gmac *g, void *dst, const void *data, size_t len);

/* The tag (0), or -1 if OpenSSL failed; g is freed either way. */
int gmac_final(gmac *g, unsigned char tag[GMAC_TAG_BYTES]);

/* Free g without a tag; safe on NULL. */
void gmac_abort(gmac *g);

/* Where GHASH runs: here with AVX-512, here with AVX2 (and VPCLMULQDQ), or in OpenSSL. */
#define GMAC_PORTABLE 0
#define GMAC_AVX2 1
#define GMAC_AVX512 2

/* The GHASH used from now on: the best the CPU has, at most gmac_set_limit()'s. */
int gmac_level(void);

/* Tests and benchmarks: use at most level (GMAC_AVX512 by default). */
void gmac_set_limit(int level);

#endif

/*
 * bench_mac.c - the MAC of authenticated frames, per core: the piece tags
 * of src/common/auth.c (GMAC) with each GHASH the CPU can run (VPCLMULQDQ
 * with AVX-512, with AVX2, and OpenSSL's AES-256-GCM), and OpenSSL's
 * Poly1305 (what the frames used before, for comparison),
 * over the same buffer in 1 MiB pieces, next to memcpy of that buffer and
 * to the copy that tags as it copies (auth_piece_stream_copy, what a
 * client's packer does), with the best GHASH.
 * Best of --runs passes over --mib MiB, once from memory and once over one
 * piece that stays in the cache.
 *
 *     bench_mac [--mib N] [--runs R]
 */
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/auth.h"
#include "common/gmac.h"

#define PIECE AUTH_PIECE_BYTES

static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* OpenSSL's Poly1305 of one piece under a fixed one-time key. */
static void
poly1305(const unsigned char *key, const unsigned char *p, size_t n, unsigned char tag[16])
{
    EVP_MAC *m = EVP_MAC_fetch(NULL, "POLY1305", NULL);
    EVP_MAC_CTX *c = m != NULL ? EVP_MAC_CTX_new(m) : NULL;
    OSSL_PARAM params[2];
    size_t out = 0;

    params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)key, 32);
    params[1] = OSSL_PARAM_construct_end();
    if (c == NULL || EVP_MAC_init(c, NULL, 0, params) != 1 || EVP_MAC_update(c, p, n) != 1 ||
        EVP_MAC_final(c, tag, &out, 16) != 1)
        memset(tag, 0, 16);
    EVP_MAC_CTX_free(c);
    EVP_MAC_free(m);
}

enum { K_MEMCPY, K_COPYTAG, K_AVX512, K_AVX2, K_GCM, K_POLY, K_COUNT };
static const char *const names[K_COUNT] = {
    "memcpy (reads and writes)", "memcpy + piece tags, 1 pass", "piece tags, AVX-512 GHASH",
    "piece tags, AVX2 GHASH",    "piece tags, OpenSSL's GCM",   "OpenSSL Poly1305 (before)",
};
static const int levels[K_COUNT] = {0, GMAC_AVX512, GMAC_AVX512, GMAC_AVX2, GMAC_PORTABLE, 0};

/* GB/s of kernel k over total bytes of buf, in pieces; one piece over and over if cached. */
static double
pass(int k, unsigned char *buf, unsigned char *dst, size_t total, int cached, int runs)
{
    unsigned char key[32] = {1, 2, 3}, tag[16];
    double best = 1e30;
    uint64_t seq = 1;

    for (int r = 0; r < runs; r++) {
        double t0 = now();

        gmac_set_limit(levels[k]);
        for (size_t off = 0; off < total; off += PIECE) {
            unsigned char *p = buf + (cached ? 0 : off);

            if (k == K_MEMCPY) {
                memcpy(dst + (cached ? 0 : off), p, PIECE);
            } else if (k == K_COPYTAG) {
                auth_piece_stream ps;

                if (auth_piece_stream_begin(&ps, key, seq++, (uint32_t)(off / PIECE)) == 0) {
                    auth_piece_stream_copy(&ps, dst + (cached ? 0 : off), p, PIECE);
                    (void)auth_piece_stream_final(&ps, tag);
                }
            } else if (k == K_POLY)
                poly1305(key, p, PIECE, tag);
            else
                auth_piece_tag(key, seq++, (uint32_t)(off / PIECE), p, PIECE, tag);
        }
        t0 = now() - t0;
        if (t0 < best)
            best = t0;
    }
    gmac_set_limit(GMAC_AVX512);
    return (double)total / best / 1e9;
}

int
main(int argc, char **argv)
{
    long mib = 256, runs = 5;
    unsigned char *buf, *dst;
    size_t total;
    int top;

    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--mib") == 0)
            mib = strtol(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--runs") == 0)
            runs = strtol(argv[i + 1], NULL, 10);
    }
    if (argc % 2 == 0 || mib < 1 || mib > 65536 || runs < 1 || runs > 100) {
        fprintf(stderr, "usage: bench_mac [--mib N] [--runs R]\n");
        return 2;
    }
    total = (size_t)mib << 20;
    if (auth_init() != 0 || (buf = malloc(total)) == NULL || (dst = malloc(total)) == NULL) {
        fprintf(stderr, "bench_mac: out of memory or no libsodium\n");
        return 1;
    }
    for (size_t i = 0; i < total; i++)
        buf[i] = (unsigned char)(i * 131 + (i >> 12));
    memcpy(dst, buf, total); /* both buffers faulted in before timing */
    top = gmac_level();
    printf("emad bench_mac: %ld MiB in 1 MiB pieces, best of %ld; the frames use %s\n", mib, runs,
           top == GMAC_AVX512 ? "the AVX-512 GHASH (src/common/gmac.c)"
           : top == GMAC_AVX2 ? "the AVX2 GHASH (src/common/gmac.c)"
                              : "OpenSSL's AES-256-GCM");
    printf("  %-28s %12s %12s   (GB/s per core; 1 GB = 1e9 bytes)\n", "", "from memory",
           "in cache");
    for (int k = 0; k < K_COUNT; k++)
        if ((k != K_AVX512 && k != K_AVX2) || levels[k] <= top)
            printf("  %-28s %12.1f %12.1f\n", names[k], pass(k, buf, dst, total, 0, (int)runs),
               pass(k, buf, dst, total, 1, (int)runs));
    free(buf);
    free(dst);
    return 0;
}

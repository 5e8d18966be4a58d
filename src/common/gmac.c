/*
 * gmac.c - the MAC of authenticated frames (see gmac.h): AES-256-GCM's
 * tag over additional data only, from OpenSSL, or with GHASH computed here
 * on CPUs with VPCLMULQDQ, four blocks per register with AVX-512, two with
 * AVX2 (the two loops are one algorithm at two widths).
 *
 * GHASH here follows RFC 8452, appendix A: GHASH(H, X) is the byte
 * reversal of POLYVAL(mulX(reverse(H)), reverse(X_1), ...), and POLYVAL's
 * products are reduced Montgomery style (a * b * x^-128), so that the
 * partial products of 32 blocks, each multiplied by its power of H, are
 * summed before one reduction. AES (H, the masks) and the portable path
 * stay OpenSSL's.
 */
#include "common/gmac.h"

#include <openssl/evp.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define GMAC_X86 1
#include <cpuid.h>
#include <immintrin.h>
#define XMM __attribute__((target("pclmul,ssse3")))
#define YMM __attribute__((target("avx2,vpclmulqdq,pclmul,ssse3")))
#define ZMM __attribute__((target("avx512f,avx512bw,avx512vl,vpclmulqdq,pclmul,ssse3")))
#endif

#define GROUP_BLOCKS 32 /* 16-byte blocks per reduction */
/* _mm_shuffle_epi8's mask that reverses the bytes of a block */
#define BYTE_REVERSE _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
#define DERIVE_LABEL "emad-mac"

struct gmac {
    EVP_CIPHER_CTX *gcm;    /* the portable path: OpenSSL's GCM; NULL on the fast path */
    int level;              /* fast: GMAC_AVX512 or GMAC_AVX2 */
    unsigned char mask[16]; /* fast: AES(K, J0), added to the hash at the end */
    unsigned char s[16];    /* fast: the POLYVAL accumulator */
    unsigned char buf[16];  /* fast: a block not yet complete */
    size_t nbuf;
    uint64_t total;                         /* bytes fed */
    int failed;                             /* OpenSSL refused some data: no tag */
    unsigned char h[16];                    /* fast: H (POLYVAL form) */
    unsigned char pw[GROUP_BLOCKS * 16];    /* fast: H^32 .. H^1, the power each block of a group
                                               is multiplied by, in the blocks' order */
};

static int limit = GMAC_AVX512; /* gmac_set_limit() */

/* The per-sequence-number key: BLAKE2b-256 keyed with key over "emad-mac" || u64le(seq). */
static void
derive(unsigned char out[GMAC_KEY_BYTES], const unsigned char key[GMAC_KEY_BYTES], uint64_t seq)
{
    unsigned char msg[sizeof(DERIVE_LABEL) - 1 + 8];

    memcpy(msg, DERIVE_LABEL, sizeof(DERIVE_LABEL) - 1);
    for (int b = 0; b < 8; b++)
        msg[sizeof(DERIVE_LABEL) - 1 + (size_t)b] = (unsigned char)(seq >> (8 * b));
    (void)crypto_generichash(out, GMAC_KEY_BYTES, msg, sizeof(msg), key, GMAC_KEY_BYTES);
}

/* GCM's 12-byte nonce u32le(index) || u64le(seq). */
static void
nonce(unsigned char out[12], uint32_t index, uint64_t seq)
{
    for (int b = 0; b < 4; b++)
        out[b] = (unsigned char)(index >> (8 * b));
    for (int b = 0; b < 8; b++)
        out[4 + b] = (unsigned char)(seq >> (8 * b));
}

#ifdef GMAC_X86
/* The GHASH the CPU can run here: GMAC_AVX512, GMAC_AVX2 or GMAC_PORTABLE. */
static int
cpu_level(void)
{
    unsigned int a, b, c, d, lo, hi;

    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 1)) || !(c & (1u << 9)) ||
        !(c & (1u << 27)))
        return GMAC_PORTABLE; /* PCLMULQDQ, SSSE3, OSXSAVE */
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    (void)hi;
    if ((lo & 0x6) != 0x6 || !__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(c & (1u << 10)) ||
        !(b & (1u << 5)))
        return GMAC_PORTABLE; /* the XMM and YMM state, VPCLMULQDQ, AVX2 */
    if ((lo & 0xe6) == 0xe6 && (b & (1u << 16)) && (b & (1u << 30)) && (b & (1u << 31)))
        return GMAC_AVX512; /* the ZMM state, AVX-512 F, BW and VL */
    return GMAC_AVX2;
}

/* Reduce the unreduced sums lo, hi, mid of 128x128-bit products to one POLYVAL value. */
static XMM __m128i
reduce(__m128i lo, __m128i hi, __m128i mid)
{
    const __m128i poly = _mm_set_epi64x((long long)0xc200000000000000ULL, 1);
    __m128i t;

    lo = _mm_xor_si128(lo, _mm_slli_si128(mid, 8));
    hi = _mm_xor_si128(hi, _mm_srli_si128(mid, 8));
    t = _mm_clmulepi64_si128(lo, poly, 0x10);
    lo = _mm_xor_si128(_mm_shuffle_epi32(lo, 78), t);
    t = _mm_clmulepi64_si128(lo, poly, 0x10);
    lo = _mm_xor_si128(_mm_shuffle_epi32(lo, 78), t);
    return _mm_xor_si128(lo, hi);
}

/* POLYVAL's product a * b * x^-128. */
static XMM __m128i
dot(__m128i a, __m128i b)
{
    return reduce(_mm_clmulepi64_si128(a, b, 0x00), _mm_clmulepi64_si128(a, b, 0x11),
                  _mm_xor_si128(_mm_clmulepi64_si128(a, b, 0x10), _mm_clmulepi64_si128(a, b, 0x01)));
}

static XMM __m128i
bswap(__m128i v)
{
    return _mm_shuffle_epi8(v, BYTE_REVERSE);
}

/* The powers of H (16 bytes, as GCM's AES gives it) that the blocks are multiplied by. */
static XMM void
powers(gmac *g, const unsigned char hb[16])
{
    unsigned char r[16];
    uint64_t lo, hi, carry;
    __m128i h1, hk;

    for (int i = 0; i < 16; i++) /* mulX_POLYVAL(ByteReverse(H)) */
        r[i] = hb[15 - i];
    memcpy(&lo, r, 8);
    memcpy(&hi, r + 8, 8);
    carry = hi >> 63;
    hi = (hi << 1) | (lo >> 63);
    lo <<= 1;
    if (carry) {
        lo ^= 1;
        hi ^= 0xc200000000000000ULL;
    }
    h1 = _mm_set_epi64x((long long)hi, (long long)lo);
    _mm_storeu_si128((__m128i *)(void *)g->h, h1);
    hk = h1;
    for (int k = 1; k <= GROUP_BLOCKS; k++) { /* block j of a group: H^(GROUP_BLOCKS - j) */
        _mm_storeu_si128((__m128i *)(void *)(g->pw + 16 * (GROUP_BLOCKS - k)), hk);
        hk = dot(hk, h1);
    }
    sodium_memzero(r, sizeof(r));
}

/* The XOR of the two 128-bit lanes of v. */
static YMM __m128i
fold2(__m256i v)
{
    return _mm_xor_si128(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
}

/* The XOR of the four 128-bit lanes of v. */
static ZMM __m128i
fold4(__m512i v)
{
    return fold2(_mm256_xor_si256(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1)));
}

/*
 * Hash n groups of GROUP_BLOCKS blocks at p into s, four blocks per
 * register; with copy, also store them at q as they are loaded (one pass
 * over memory: the product work hides behind the copy's).
 */
static inline __attribute__((always_inline)) ZMM __m128i
groups_avx512_impl(const gmac *g, __m128i s, const unsigned char *p, unsigned char *q, size_t n,
                   const int copy)
{
    const __m512i bs = _mm512_broadcast_i32x4(BYTE_REVERSE);

    for (; n > 0; n--, p += 16 * GROUP_BLOCKS, q += copy ? 16 * GROUP_BLOCKS : 0) {
        __m512i lo = _mm512_setzero_si512(), hi = lo, mid = lo;

        for (int z = 0; z < GROUP_BLOCKS / 4; z++) {
            __m512i raw = _mm512_loadu_si512((const void *)(p + 64 * z));
            __m512i d = _mm512_shuffle_epi8(raw, bs);
            __m512i k = _mm512_loadu_si512((const void *)(g->pw + 64 * z));

            if (copy)
                _mm512_storeu_si512((void *)(q + 64 * z), raw);
            if (z == 0)
                d = _mm512_xor_si512(d, _mm512_zextsi128_si512(s));
            lo = _mm512_xor_si512(lo, _mm512_clmulepi64_epi128(d, k, 0x00));
            hi = _mm512_xor_si512(hi, _mm512_clmulepi64_epi128(d, k, 0x11));
            mid = _mm512_ternarylogic_epi64(mid, _mm512_clmulepi64_epi128(d, k, 0x01),
                                            _mm512_clmulepi64_epi128(d, k, 0x10), 0x96);
        }
        s = reduce(fold4(lo), fold4(hi), fold4(mid));
    }
    return s;
}

/* groups_avx512_impl() with the copy to q, or without when q is NULL. */
static ZMM __m128i
groups_avx512(const gmac *g, __m128i s, const unsigned char *p, unsigned char *q, size_t n)
{
    return q != NULL ? groups_avx512_impl(g, s, p, q, n, 1)
                     : groups_avx512_impl(g, s, p, NULL, n, 0);
}

/* The same, two blocks per register (AVX2 and VPCLMULQDQ, without AVX-512). */
static inline __attribute__((always_inline)) YMM __m128i
groups_avx2_impl(const gmac *g, __m128i s, const unsigned char *p, unsigned char *q, size_t n,
                 const int copy)
{
    const __m256i bs = _mm256_broadcastsi128_si256(BYTE_REVERSE);

    for (; n > 0; n--, p += 16 * GROUP_BLOCKS, q += copy ? 16 * GROUP_BLOCKS : 0) {
        __m256i lo = _mm256_setzero_si256(), hi = lo, mid = lo;

        for (int z = 0; z < GROUP_BLOCKS / 2; z++) {
            __m256i raw = _mm256_loadu_si256((const __m256i *)(const void *)(p + 32 * z));
            __m256i d = _mm256_shuffle_epi8(raw, bs);
            __m256i k = _mm256_loadu_si256((const __m256i *)(const void *)(g->pw + 32 * z));

            if (copy)
                _mm256_storeu_si256((__m256i *)(void *)(q + 32 * z), raw);
            if (z == 0)
                d = _mm256_xor_si256(d, _mm256_zextsi128_si256(s));
            lo = _mm256_xor_si256(lo, _mm256_clmulepi64_epi128(d, k, 0x00));
            hi = _mm256_xor_si256(hi, _mm256_clmulepi64_epi128(d, k, 0x11));
            mid = _mm256_xor_si256(mid, _mm256_xor_si256(_mm256_clmulepi64_epi128(d, k, 0x01),
                                                         _mm256_clmulepi64_epi128(d, k, 0x10)));
        }
        s = reduce(fold2(lo), fold2(hi), fold2(mid));
    }
    return s;
}

static YMM __m128i
groups_avx2(const gmac *g, __m128i s, const unsigned char *p, unsigned char *q, size_t n)
{
    return q != NULL ? groups_avx2_impl(g, s, p, q, n, 1) : groups_avx2_impl(g, s, p, NULL, n, 0);
}

/*
 * Hash n whole blocks at p into g->s (and copy them to q unless it is
 * NULL): whole groups on the wide registers, then one by one.
 */
static XMM void
blocks(gmac *g, const unsigned char *p, unsigned char *q, size_t n)
{
    __m128i s = _mm_loadu_si128((const __m128i *)(const void *)g->s);
    __m128i h1 = _mm_loadu_si128((const __m128i *)(const void *)g->h);
    size_t groups = n / GROUP_BLOCKS;

    if (groups > 0) {
        s = g->level == GMAC_AVX512 ? groups_avx512(g, s, p, q, groups)
                                    : groups_avx2(g, s, p, q, groups);
        p += 16 * GROUP_BLOCKS * groups;
        q = q != NULL ? q + 16 * GROUP_BLOCKS * groups : NULL;
        n -= GROUP_BLOCKS * groups;
    }
    for (; n > 0; n--, p += 16) {
        __m128i d = _mm_loadu_si128((const __m128i *)(const void *)p);

        if (q != NULL) {
            _mm_storeu_si128((__m128i *)(void *)q, d);
            q += 16;
        }
        s = dot(_mm_xor_si128(s, bswap(d)), h1);
    }
    _mm_storeu_si128((__m128i *)(void *)g->s, s);
}

/* The tag: the length block, then GHASH (the byte reversal of POLYVAL) plus the mask. */
static XMM void
finish(gmac *g, unsigned char tag[GMAC_TAG_BYTES])
{
    unsigned char len[16] = {0};
    uint64_t bits = g->total * 8;
    __m128i s;

    if (g->nbuf > 0) {
        memset(g->buf + g->nbuf, 0, 16 - g->nbuf);
        blocks(g, g->buf, NULL, 1);
    }
    for (int b = 0; b < 8; b++) /* [bit length of the data, big-endian] [0: no ciphertext] */
        len[7 - b] = (unsigned char)(bits >> (8 * b));
    blocks(g, len, NULL, 1);
    s = bswap(_mm_loadu_si128((const __m128i *)(const void *)g->s));
    s = _mm_xor_si128(s, _mm_loadu_si128((const __m128i *)(const void *)g->mask));
    _mm_storeu_si128((__m128i *)(void *)tag, s);
}
#endif

int
gmac_level(void)
{
#ifdef GMAC_X86
    static int has = -1;
    int v = __atomic_load_n(&has, __ATOMIC_RELAXED), l = __atomic_load_n(&limit, __ATOMIC_RELAXED);

    if (v < 0) {
        v = cpu_level();
        __atomic_store_n(&has, v, __ATOMIC_RELAXED);
    }
    return v < l ? v : l;
#else
    return GMAC_PORTABLE;
#endif
}

void
gmac_set_limit(int level)
{
    __atomic_store_n(&limit, level, __ATOMIC_RELAXED);
}

/* The fast path's set-up: H and the mask from AES under k, then the powers of H. */
static int
fast_begin(gmac *g, const unsigned char k[GMAC_KEY_BYTES], const unsigned char iv[12], int level)
{
#ifdef GMAC_X86
    unsigned char in[32] = {0}, out[32 + 16];
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int n = 0, ok;

    memcpy(in + 16, iv, 12); /* J0 = nonce || u32be(1) */
    in[31] = 1;
    ok = c != NULL && EVP_EncryptInit_ex(c, EVP_aes_256_ecb(), NULL, k, NULL) == 1 &&
         EVP_CIPHER_CTX_set_padding(c, 0) == 1 && EVP_EncryptUpdate(c, out, &n, in, 32) == 1 &&
         n == 32;
    EVP_CIPHER_CTX_free(c);
    if (ok) {
        g->level = level;
        memcpy(g->mask, out + 16, 16);
        powers(g, out);
    }
    sodium_memzero(out, sizeof(out));
    return ok ? 0 : -1;
#else
    (void)g;
    (void)k;
    (void)iv;
    (void)level;
    return -1;
#endif
}

gmac *
gmac_begin(const unsigned char key[GMAC_KEY_BYTES], uint64_t seq, uint32_t index)
{
    unsigned char k[GMAC_KEY_BYTES], iv[12];
    gmac *g = calloc(1, sizeof(*g));
    int ok, level = gmac_level();

    if (g == NULL)
        return NULL;
    derive(k, key, seq);
    nonce(iv, index, seq);
    if (level != GMAC_PORTABLE) {
        ok = fast_begin(g, k, iv, level) == 0;
    } else {
        ok = (g->gcm = EVP_CIPHER_CTX_new()) != NULL &&
             EVP_EncryptInit_ex(g->gcm, EVP_aes_256_gcm(), NULL, k, iv) == 1;
    }
    sodium_memzero(k, sizeof(k));
    if (!ok) {
        gmac_abort(g);
        return NULL;
    }
    return g;
}

void
gmac_update(gmac *g, const void *data, size_t len)
{
    gmac_update_copy(g, NULL, data, len);
}

void
gmac_update_copy(gmac *g, void *dst, const void *data, size_t len)
{
    const unsigned char *p = data;
    unsigned char *q = dst;

    g->total += len;
    if (g->gcm != NULL) {
        if (q != NULL) { /* copied first, then hashed from the cache */
            memcpy(q, p, len);
            p = q;
        }
        while (len > 0) { /* OpenSSL takes the additional data in parts, as ints */
            int n = len > (1u << 30) ? 1 << 30 : (int)len, out = 0;

            if (EVP_EncryptUpdate(g->gcm, NULL, &out, p, n) != 1)
                g->failed = 1;
            p += n;
            len -= (size_t)n;
        }
        return;
    }
#ifdef GMAC_X86
    if (g->nbuf > 0) {
        size_t take = 16 - g->nbuf < len ? 16 - g->nbuf : len;

        memcpy(g->buf + g->nbuf, p, take);
        if (q != NULL) {
            memcpy(q, p, take);
            q += take;
        }
        g->nbuf += take;
        p += take;
        len -= take;
        if (g->nbuf < 16)
            return;
        blocks(g, g->buf, NULL, 1);
        g->nbuf = 0;
    }
    if (len >= 16)
        blocks(g, p, q, len / 16);
    p += len / 16 * 16;
    if (q != NULL) {
        q += len / 16 * 16;
        memcpy(q, p, len % 16);
    }
    len %= 16;
    memcpy(g->buf, p, len);
    g->nbuf = len;
#endif
}

int
gmac_final(gmac *g, unsigned char tag[GMAC_TAG_BYTES])
{
    int ok = 1;

    if (g->gcm != NULL) {
        unsigned char none[16];
        int out = 0;

        ok = !g->failed && EVP_EncryptFinal_ex(g->gcm, none, &out) == 1 &&
             EVP_CIPHER_CTX_ctrl(g->gcm, EVP_CTRL_GCM_GET_TAG, GMAC_TAG_BYTES, tag) == 1;
    } else {
#ifdef GMAC_X86
        finish(g, tag);
#else
        ok = 0;
#endif
    }
    gmac_abort(g);
    return ok ? 0 : -1;
}

void
gmac_abort(gmac *g)
{
    if (g == NULL)
        return;
    EVP_CIPHER_CTX_free(g->gcm);
    sodium_memzero(g, sizeof(*g));
    free(g);
}

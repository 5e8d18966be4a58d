/*
 * auth.c - key formats, handshake transcript, session keys and frame tags
 * (see auth.h and docs/PROTOCOL.md "Authentication"). libsodium does the
 * cryptography (OpenSSL's faster Poly1305 for large pieces); this file
 * fixes how its inputs are laid out.
 */
#include "common/auth.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <sodium.h>
#include <string.h>

/*
 * Pieces of at least this many bytes are MACed with OpenSSL's Poly1305
 * (AVX2/AVX-512 code: 11.9 GB/s per core here against libsodium 1.0.18's
 * 3.9 for 1 MiB pieces, in CPU time); shorter ones with libsodium, where
 * OpenSSL's per-call set-up (a method fetch, a context) would dominate.
 * Both compute RFC 8439's Poly1305 over the same input, so the tags are
 * the same (tests/check_auth.c compares them around this size).
 */
#define OPENSSL_MIN_BYTES 16384

int
auth_init(void)
{
    return sodium_init() < 0 ? -1 : 0;
}

int
auth_user_valid(const char *user, size_t len)
{
    if (len == 0 || len > AUTH_USER_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)user[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '_' || c == '-' || c == '@';
        if (!ok)
            return 0;
    }
    return 1;
}

/* Decode exactly 32 bytes of standard base64 (with padding) from s[0..len). */
static int
b64_decode32(const char *s, size_t len, unsigned char out[32])
{
    size_t got = 0;
    const char *end = NULL;
    if (len != AUTH_B64_32 - 1)
        return -1;
    if (sodium_base642bin(out, 32, s, len, NULL, &got, &end, sodium_base64_VARIANT_ORIGINAL) != 0)
        return -1;
    return got == 32 && end == s + len ? 0 : -1;
}

int
auth_keyfile_parse(const char *text, size_t len, char user[AUTH_USER_MAX + 1],
                   unsigned char seed[AUTH_SEED_BYTES], const char **why)
{
    size_t tag = sizeof AUTH_KEYFILE_TAG - 1;
    if (len > 0 && text[len - 1] == '\n')
        len--;
    if (len > 0 && text[len - 1] == '\r')
        len--;
    if (len < tag + 1 || memcmp(text, AUTH_KEYFILE_TAG " ", tag + 1) != 0) {
        *why = "not an emad key file (expected \"" AUTH_KEYFILE_TAG " USER KEY\")";
        return -1;
    }
    const char *u = text + tag + 1;
    const char *sp = memchr(u, ' ', len - (size_t)(u - text));
    if (sp == NULL) {
        *why = "key file has no key after the user name";
        return -1;
    }
    size_t ulen = (size_t)(sp - u);
    if (!auth_user_valid(u, ulen)) {
        *why = "key file names an invalid user (1-64 of A-Z a-z 0-9 . _ @ -)";
        return -1;
    }
    const char *k = sp + 1;
    if (b64_decode32(k, len - (size_t)(k - text), seed) != 0) {
        *why = "key file's key is not the base64 of 32 bytes";
        return -1;
    }
    memcpy(user, u, ulen);
    user[ulen] = '\0';
    return 0;
}

int
auth_keyfile_format(char *out, size_t cap, const char *user,
                    const unsigned char seed[AUTH_SEED_BYTES])
{
    char b64[AUTH_B64_32];
    size_t ulen = strlen(user);
    if (!auth_user_valid(user, ulen))
        return -1;
    sodium_bin2base64(b64, sizeof b64, seed, AUTH_SEED_BYTES, sodium_base64_VARIANT_ORIGINAL);
    size_t n = sizeof AUTH_KEYFILE_TAG - 1 + 1 + ulen + 1 + strlen(b64) + 1;
    if (n + 1 > cap) {
        sodium_memzero(b64, sizeof b64);
        return -1;
    }
    char *p = out;
    memcpy(p, AUTH_KEYFILE_TAG " ", sizeof AUTH_KEYFILE_TAG);
    p += sizeof AUTH_KEYFILE_TAG;
    memcpy(p, user, ulen);
    p += ulen;
    *p++ = ' ';
    memcpy(p, b64, strlen(b64));
    p += strlen(b64);
    *p++ = '\n';
    *p = '\0';
    sodium_memzero(b64, sizeof b64);
    return (int)n;
}

int
auth_pubkey_parse(const char *text, unsigned char pk[AUTH_PK_BYTES], const char **why)
{
    size_t pre = sizeof AUTH_PUBKEY_PREFIX - 1;
    if (strncmp(text, AUTH_PUBKEY_PREFIX, pre) != 0) {
        *why = "public key does not start with \"" AUTH_PUBKEY_PREFIX "\"";
        return -1;
    }
    if (b64_decode32(text + pre, strlen(text + pre), pk) != 0) {
        *why = "public key is not the base64 of 32 bytes";
        return -1;
    }
    return 0;
}

int
auth_pubkey_format(char *out, size_t cap, const unsigned char pk[AUTH_PK_BYTES])
{
    size_t pre = sizeof AUTH_PUBKEY_PREFIX - 1;
    if (cap < AUTH_PUBKEY_TEXT_MAX)
        return -1;
    memcpy(out, AUTH_PUBKEY_PREFIX, pre);
    sodium_bin2base64(out + pre, cap - pre, pk, AUTH_PK_BYTES, sodium_base64_VARIANT_ORIGINAL);
    return (int)strlen(out);
}

int
auth_sign_keypair(unsigned char pk[AUTH_PK_BYTES], unsigned char sk[AUTH_SK_BYTES],
                  const unsigned char seed[AUTH_SEED_BYTES])
{
    return crypto_sign_seed_keypair(pk, sk, seed) == 0 ? 0 : -1;
}

void
auth_token_hash(const char *token, size_t len, unsigned char out[AUTH_TOKEN_HASH_BYTES])
{
    crypto_generichash(out, AUTH_TOKEN_HASH_BYTES, (const unsigned char *)token, len, NULL, 0);
}

int
auth_token_hash_parse(const char *text, unsigned char out[AUTH_TOKEN_HASH_BYTES], const char **why)
{
    size_t pre = sizeof AUTH_TOKEN_PREFIX - 1;
    size_t got = 0;
    const char *end = NULL;
    if (strncmp(text, AUTH_TOKEN_PREFIX, pre) != 0) {
        *why = "stats token does not start with \"" AUTH_TOKEN_PREFIX "\"";
        return -1;
    }
    const char *hex = text + pre;
    size_t len = strlen(hex);
    if (len != 2 * AUTH_TOKEN_HASH_BYTES ||
        sodium_hex2bin(out, AUTH_TOKEN_HASH_BYTES, hex, len, NULL, &got, &end) != 0 ||
        got != AUTH_TOKEN_HASH_BYTES || end != hex + len) {
        *why = "stats token hash is not 64 hex digits (BLAKE2b-256)";
        return -1;
    }
    return 0;
}

/* Store v little-endian in 8 bytes. */
static void
put_u64le(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t
get_u64le(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

size_t
auth_transcript(unsigned char out[AUTH_TRANSCRIPT_MAX], const char *user, size_t user_len,
                const unsigned char client_eph[AUTH_EPH_BYTES],
                const unsigned char server_eph[AUTH_EPH_BYTES],
                const unsigned char challenge[AUTH_CHALLENGE_BYTES], uint64_t hs)
{
    if (!auth_user_valid(user, user_len))
        return 0;
    unsigned char *p = out;
    memcpy(p, AUTH_TRANSCRIPT_LABEL, AUTH_TRANSCRIPT_LABEL_BYTES);
    p += AUTH_TRANSCRIPT_LABEL_BYTES;
    *p++ = (unsigned char)user_len;
    memcpy(p, user, user_len);
    p += user_len;
    memcpy(p, client_eph, AUTH_EPH_BYTES);
    p += AUTH_EPH_BYTES;
    memcpy(p, server_eph, AUTH_EPH_BYTES);
    p += AUTH_EPH_BYTES;
    memcpy(p, challenge, AUTH_CHALLENGE_BYTES);
    p += AUTH_CHALLENGE_BYTES;
    put_u64le(p, hs);
    p += 8;
    return (size_t)(p - out);
}

void
auth_sign(unsigned char sig[AUTH_SIG_BYTES], const unsigned char *transcript, size_t len,
          const unsigned char sk[AUTH_SK_BYTES])
{
    (void)crypto_sign_detached(sig, NULL, transcript, len, sk);
}

int
auth_sign_verify(const unsigned char sig[AUTH_SIG_BYTES], const unsigned char *transcript,
                 size_t len, const unsigned char pk[AUTH_PK_BYTES])
{
    return crypto_sign_verify_detached(sig, transcript, len, pk) == 0 ? 0 : -1;
}

void
auth_eph_keypair(unsigned char pk[AUTH_EPH_BYTES], unsigned char sk[AUTH_EPH_SK_BYTES])
{
    (void)crypto_kx_keypair(pk, sk);
}

int
auth_client_keys(unsigned char rx[AUTH_KEY_BYTES], unsigned char tx[AUTH_KEY_BYTES],
                 const unsigned char client_pk[AUTH_EPH_BYTES],
                 const unsigned char client_sk[AUTH_EPH_SK_BYTES],
                 const unsigned char server_pk[AUTH_EPH_BYTES])
{
    return crypto_kx_client_session_keys(rx, tx, client_pk, client_sk, server_pk) == 0 ? 0 : -1;
}

int
auth_server_keys(unsigned char rx[AUTH_KEY_BYTES], unsigned char tx[AUTH_KEY_BYTES],
                 const unsigned char server_pk[AUTH_EPH_BYTES],
                 const unsigned char server_sk[AUTH_EPH_SK_BYTES],
                 const unsigned char client_pk[AUTH_EPH_BYTES])
{
    return crypto_kx_server_session_keys(rx, tx, server_pk, server_sk, client_pk) == 0 ? 0 : -1;
}

int
auth_is_frame(const void *msg, size_t len)
{
    return len >= AUTH_MAGIC_BYTES && memcmp(msg, AUTH_MAGIC, AUTH_MAGIC_BYTES) == 0;
}

int
auth_header_decode(const void *msg, size_t len, struct auth_header *h)
{
    const unsigned char *p = msg;
    if (len <= AUTH_FRAME_HEADER || memcmp(p, AUTH_MAGIC, AUTH_MAGIC_BYTES) != 0)
        return -1;
    h->session = get_u64le(p + AUTH_OFF_SESSION);
    h->seq = get_u64le(p + AUTH_OFF_SEQ);
    memcpy(h->tag, p + AUTH_OFF_TAG, AUTH_TAG_BYTES);
    return 0;
}

void
auth_header_encode(void *out, uint64_t session, uint64_t seq,
                   const unsigned char tag[AUTH_TAG_BYTES])
{
    unsigned char *p = out;
    memcpy(p, AUTH_MAGIC, AUTH_MAGIC_BYTES);
    put_u64le(p + AUTH_OFF_SESSION, session);
    put_u64le(p + AUTH_OFF_SEQ, seq);
    memcpy(p + AUTH_OFF_TAG, tag, AUTH_TAG_BYTES);
}

size_t
auth_piece_count(size_t len)
{
    return (len + AUTH_PIECE_BYTES - 1) / AUTH_PIECE_BYTES;
}

/*
 * The 16-byte tag of ChaCha20-Poly1305-IETF with empty plaintext and ad as
 * additional data, through OpenSSL's Poly1305: the one-time key is the
 * first 32 bytes of ChaCha20 block 0 under nonce, and the MAC input is
 * ad || zeros to a multiple of 16 || u64le(ad_len) || u64le(0) (RFC 8439,
 * 2.8). Returns -1 if OpenSSL fails (the caller falls back to libsodium).
 */
static int
mac_openssl(const unsigned char key[AUTH_KEY_BYTES], const unsigned char *nonce,
            const unsigned char *ad, size_t ad_len, unsigned char tag[AUTH_TAG_BYTES])
{
    static const unsigned char pad[16];
    unsigned char otk[32], lens[16];
    EVP_MAC *m = EVP_MAC_fetch(NULL, "POLY1305", NULL);
    EVP_MAC_CTX *c = m != NULL ? EVP_MAC_CTX_new(m) : NULL;
    OSSL_PARAM params[2];
    size_t out = 0;
    int ok;

    crypto_stream_chacha20_ietf(otk, sizeof(otk), nonce, key);
    params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, otk, sizeof(otk));
    params[1] = OSSL_PARAM_construct_end();
    put_u64le(lens, ad_len);
    put_u64le(lens + 8, 0);
    ok = c != NULL && EVP_MAC_init(c, NULL, 0, params) == 1 && EVP_MAC_update(c, ad, ad_len) == 1 &&
         (ad_len % 16 == 0 || EVP_MAC_update(c, pad, 16 - ad_len % 16) == 1) &&
         EVP_MAC_update(c, lens, sizeof(lens)) == 1 &&
         EVP_MAC_final(c, tag, &out, AUTH_TAG_BYTES) == 1 && out == AUTH_TAG_BYTES;
    EVP_MAC_CTX_free(c);
    EVP_MAC_free(m);
    sodium_memzero(otk, sizeof(otk));
    return ok ? 0 : -1;
}

/* The 16-byte tag of ChaCha20-Poly1305-IETF with empty plaintext and ad as additional data. */
static void
mac(const unsigned char key[AUTH_KEY_BYTES], uint32_t index, uint64_t seq, const unsigned char *ad,
    size_t ad_len, unsigned char tag[AUTH_TAG_BYTES])
{
    unsigned char nonce[crypto_aead_chacha20poly1305_IETF_NPUBBYTES];
    unsigned char none[1] = {0};
    unsigned long long tag_len = 0;
    for (int i = 0; i < 4; i++)
        nonce[i] = (unsigned char)(index >> (8 * i));
    put_u64le(nonce + 4, seq);
    if (ad_len >= OPENSSL_MIN_BYTES && mac_openssl(key, nonce, ad, ad_len, tag) == 0)
        return;
    (void)crypto_aead_chacha20poly1305_ietf_encrypt_detached(none, tag, &tag_len, none, 0, ad,
                                                             ad_len, NULL, nonce, key);
}

void
auth_piece_tag(const unsigned char key[AUTH_KEY_BYTES], uint64_t seq, uint32_t i, const void *data,
               size_t len, unsigned char tag[AUTH_TAG_BYTES])
{
    mac(key, i, seq, data, len, tag);
}

int
auth_piece_stream_begin(auth_piece_stream *s, const unsigned char key[AUTH_KEY_BYTES], uint64_t seq,
                        uint32_t i)
{
    unsigned char nonce[crypto_aead_chacha20poly1305_IETF_NPUBBYTES], otk[32];
    EVP_MAC *m = EVP_MAC_fetch(NULL, "POLY1305", NULL);
    EVP_MAC_CTX *c = m != NULL ? EVP_MAC_CTX_new(m) : NULL;
    OSSL_PARAM params[2];
    int ok;

    EVP_MAC_free(m); /* the context holds its own reference */
    for (int b = 0; b < 4; b++)
        nonce[b] = (unsigned char)(i >> (8 * b));
    put_u64le(nonce + 4, seq);
    crypto_stream_chacha20_ietf(otk, sizeof(otk), nonce, key);
    params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, otk, sizeof(otk));
    params[1] = OSSL_PARAM_construct_end();
    ok = c != NULL && EVP_MAC_init(c, NULL, 0, params) == 1;
    sodium_memzero(otk, sizeof(otk));
    if (!ok) {
        EVP_MAC_CTX_free(c);
        return -1;
    }
    s->ctx = c;
    s->len = 0;
    return 0;
}

void
auth_piece_stream_update(auth_piece_stream *s, const void *data, size_t len)
{
    if (s->ctx != NULL && len > 0 && EVP_MAC_update(s->ctx, data, len) != 1)
        auth_piece_stream_abort(s); /* final then fails */
    s->len += len;
}

int
auth_piece_stream_final(auth_piece_stream *s, unsigned char tag[AUTH_TAG_BYTES])
{
    static const unsigned char pad[16];
    unsigned char lens[16];
    size_t out = 0;
    int ok;

    if (s->ctx == NULL)
        return -1;
    put_u64le(lens, s->len);
    put_u64le(lens + 8, 0);
    ok = (s->len % 16 == 0 || EVP_MAC_update(s->ctx, pad, 16 - s->len % 16) == 1) &&
         EVP_MAC_update(s->ctx, lens, sizeof(lens)) == 1 &&
         EVP_MAC_final(s->ctx, tag, &out, AUTH_TAG_BYTES) == 1 && out == AUTH_TAG_BYTES;
    auth_piece_stream_abort(s);
    return ok ? 0 : -1;
}

void
auth_piece_stream_abort(auth_piece_stream *s)
{
    EVP_MAC_CTX_free(s->ctx);
    s->ctx = NULL;
}

/* The final MAC over H || t_0 || ... || t_{n-1}, fed incrementally (RFC 8439's AEAD with an
   empty plaintext: Poly1305 keyed by ChaCha20 block 0, over ad || pad16 || u64le(len ad) || 0). */
struct final_mac {
    crypto_onetimeauth_poly1305_state st;
    uint64_t ad_len;
};

static void
final_init(struct final_mac *m, const unsigned char key[AUTH_KEY_BYTES],
           const unsigned char header[AUTH_HEADER_MACED])
{
    unsigned char nonce[crypto_aead_chacha20poly1305_IETF_NPUBBYTES];
    unsigned char block0[64] = {0};
    for (int i = 0; i < 4; i++)
        nonce[i] = (unsigned char)(AUTH_FINAL_PIECE >> (8 * i));
    put_u64le(nonce + 4, get_u64le(header + AUTH_OFF_SEQ));
    crypto_stream_chacha20_ietf(block0, sizeof block0, nonce, key);
    crypto_onetimeauth_poly1305_init(&m->st, block0);
    sodium_memzero(block0, sizeof block0);
    crypto_onetimeauth_poly1305_update(&m->st, header, AUTH_HEADER_MACED);
    m->ad_len = AUTH_HEADER_MACED;
}

static void
final_update(struct final_mac *m, const unsigned char *tags, size_t n)
{
    crypto_onetimeauth_poly1305_update(&m->st, tags, n * AUTH_TAG_BYTES);
    m->ad_len += n * AUTH_TAG_BYTES;
}

static void
final_finish(struct final_mac *m, unsigned char tag[AUTH_TAG_BYTES])
{
    static const unsigned char pad[16];
    unsigned char lens[16];
    if (m->ad_len % 16 != 0)
        crypto_onetimeauth_poly1305_update(&m->st, pad, 16 - m->ad_len % 16);
    put_u64le(lens, m->ad_len);
    put_u64le(lens + 8, 0);
    crypto_onetimeauth_poly1305_update(&m->st, lens, sizeof lens);
    crypto_onetimeauth_poly1305_final(&m->st, tag);
    sodium_memzero(&m->st, sizeof m->st);
}

void
auth_frame_tag(const unsigned char key[AUTH_KEY_BYTES],
               const unsigned char header[AUTH_HEADER_MACED], const unsigned char *piece_tags,
               size_t n, unsigned char tag[AUTH_TAG_BYTES])
{
    struct final_mac m;
    final_init(&m, key, header);
    if (n > 0)
        final_update(&m, piece_tags, n);
    final_finish(&m, tag);
}

/* Compute in this thread the tag a frame of len bytes should carry (its H written). */
static int
frame_tag_serial(const unsigned char key[AUTH_KEY_BYTES], const unsigned char *f, size_t len,
                 unsigned char tag[AUTH_TAG_BYTES])
{
    if (len <= AUTH_FRAME_HEADER)
        return -1;
    const unsigned char *body = f + AUTH_FRAME_HEADER;
    size_t body_len = len - AUTH_FRAME_HEADER;
    size_t n = auth_piece_count(body_len);
    uint64_t seq = get_u64le(f + AUTH_OFF_SEQ);
    struct final_mac m;
    final_init(&m, key, f);
    for (size_t i = 0; i < n; i++) {
        unsigned char t[AUTH_TAG_BYTES];
        size_t off = i * AUTH_PIECE_BYTES;
        size_t l = body_len - off < AUTH_PIECE_BYTES ? body_len - off : AUTH_PIECE_BYTES;
        auth_piece_tag(key, seq, (uint32_t)i, body + off, l, t);
        final_update(&m, t, 1);
    }
    final_finish(&m, tag);
    return 0;
}

int
auth_frame_seal(const unsigned char key[AUTH_KEY_BYTES], void *frame, size_t len)
{
    unsigned char *f = frame;
    return frame_tag_serial(key, f, len, f + AUTH_OFF_TAG);
}

int
auth_frame_verify(const unsigned char key[AUTH_KEY_BYTES], const void *frame, size_t len)
{
    unsigned char tag[AUTH_TAG_BYTES];
    const unsigned char *f = frame;
    if (len <= AUTH_FRAME_HEADER || memcmp(f, AUTH_MAGIC, AUTH_MAGIC_BYTES) != 0)
        return -1;
    if (frame_tag_serial(key, f, len, tag) != 0)
        return -1;
    return auth_tag_equal(tag, f + AUTH_OFF_TAG);
}

int
auth_tag_equal(const unsigned char a[AUTH_TAG_BYTES], const unsigned char b[AUTH_TAG_BYTES])
{
    return crypto_verify_16(a, b) == 0 ? 0 : -1;
}

uint64_t
auth_random_id(void)
{
    uint64_t v;
    do
        randombytes_buf(&v, sizeof v);
    while (v == 0);
    return v;
}

void
auth_random(void *buf, size_t len)
{
    randombytes_buf(buf, len);
}

void
auth_wipe(void *buf, size_t len)
{
    sodium_memzero(buf, len);
}

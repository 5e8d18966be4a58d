/*
 * auth.c - key formats, handshake transcript, session keys and frame tags
 * (see auth.h and docs/PROTOCOL.md "Authentication"). libsodium does the
 * cryptography of the keys and the handshake, gmac.c the tags; this file
 * fixes how their inputs are laid out.
 */
#include "common/auth.h"

#include <sodium.h>
#include <string.h>

#include "common/gmac.h"

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

/* A tag that matches nothing: what a MAC that could not be computed (out of memory) gives. */
static void
tag_unusable(unsigned char tag[AUTH_TAG_BYTES])
{
    randombytes_buf(tag, AUTH_TAG_BYTES);
}

void
auth_piece_tag(const unsigned char key[AUTH_KEY_BYTES], uint64_t seq, uint32_t i, const void *data,
               size_t len, unsigned char tag[AUTH_TAG_BYTES])
{
    gmac *g = gmac_begin(key, seq, i);

    if (g == NULL) {
        tag_unusable(tag);
        return;
    }
    gmac_update(g, data, len);
    if (gmac_final(g, tag) != 0)
        tag_unusable(tag);
}

int
auth_piece_stream_begin(auth_piece_stream *s, const unsigned char key[AUTH_KEY_BYTES], uint64_t seq,
                        uint32_t i)
{
    s->ctx = gmac_begin(key, seq, i);
    return s->ctx != NULL ? 0 : -1;
}

void
auth_piece_stream_update(auth_piece_stream *s, const void *data, size_t len)
{
    if (s->ctx != NULL && len > 0)
        gmac_update(s->ctx, data, len);
}

void
auth_piece_stream_copy(auth_piece_stream *s, void *dst, const void *data, size_t len)
{
    if (s->ctx != NULL && len > 0)
        gmac_update_copy(s->ctx, dst, data, len);
    else if (len > 0)
        memcpy(dst, data, len);
}

int
auth_piece_stream_final(auth_piece_stream *s, unsigned char tag[AUTH_TAG_BYTES])
{
    gmac *g = s->ctx;

    s->ctx = NULL;
    return g != NULL ? gmac_final(g, tag) : -1;
}

void
auth_piece_stream_abort(auth_piece_stream *s)
{
    gmac_abort(s->ctx);
    s->ctx = NULL;
}

/* The final tag over H || t_0 || ... || t_{n-1}, fed incrementally. */
static gmac *
final_init(const unsigned char key[AUTH_KEY_BYTES], const unsigned char header[AUTH_HEADER_MACED])
{
    gmac *g = gmac_begin(key, get_u64le(header + AUTH_OFF_SEQ), AUTH_FINAL_PIECE);

    if (g != NULL)
        gmac_update(g, header, AUTH_HEADER_MACED);
    return g;
}

static void
final_finish(gmac *g, unsigned char tag[AUTH_TAG_BYTES])
{
    if (g == NULL || gmac_final(g, tag) != 0)
        tag_unusable(tag);
}

void
auth_frame_tag(const unsigned char key[AUTH_KEY_BYTES],
               const unsigned char header[AUTH_HEADER_MACED], const unsigned char *piece_tags,
               size_t n, unsigned char tag[AUTH_TAG_BYTES])
{
    gmac *g = final_init(key, header);

    if (g != NULL && n > 0)
        gmac_update(g, piece_tags, n * AUTH_TAG_BYTES);
    final_finish(g, tag);
}

int
auth_frame_check_begin(auth_frame_check *k, const unsigned char key[AUTH_KEY_BYTES],
                       const void *frame, size_t len)
{
    memset(k, 0, sizeof(*k));
    if (len <= AUTH_FRAME_HEADER || memcmp(frame, AUTH_MAGIC, AUTH_MAGIC_BYTES) != 0)
        return -1;
    k->frame = frame;
    k->len = len - AUTH_FRAME_HEADER;
    memcpy(k->key, key, AUTH_KEY_BYTES);
    if ((k->final = final_init(key, k->frame)) == NULL) {
        auth_wipe(k->key, sizeof(k->key));
        return -1;
    }
    return 0;
}

/* Feed n body bytes at p (the next ones), copying them to dst unless it is NULL. */
static void
check_feed(auth_frame_check *k, const unsigned char *p, size_t n, unsigned char *dst)
{
    uint64_t seq = get_u64le(k->frame + AUTH_OFF_SEQ);

    while (n > 0) {
        size_t i = k->pos / AUTH_PIECE_BYTES, end = (i + 1) * AUTH_PIECE_BYTES;
        size_t take;

        if (end > k->len)
            end = k->len;
        take = end - k->pos < n ? end - k->pos : n;
        if (k->pos == i * AUTH_PIECE_BYTES &&
            auth_piece_stream_begin(&k->ps, k->key, seq, (uint32_t)i) != 0)
            k->failed = 1;
        if (dst != NULL) {
            auth_piece_stream_copy(&k->ps, dst, p, take); /* a plain copy if begin failed */
            dst += take;
        } else {
            auth_piece_stream_update(&k->ps, p, take);
        }
        k->pos += take;
        p += take;
        n -= take;
        if (k->pos == end) {
            unsigned char t[AUTH_TAG_BYTES];

            if (auth_piece_stream_final(&k->ps, t) != 0)
                k->failed = 1;
            else
                gmac_update(k->final, t, AUTH_TAG_BYTES);
        }
    }
}

int
auth_frame_check_copy(auth_frame_check *k, const void *at, size_t n, void *dst)
{
    const unsigned char *body = k->frame + AUTH_FRAME_HEADER, *p = at;

    if (k->final == NULL || p < body + k->pos || (size_t)(p - body) > k->len ||
        n > k->len - (size_t)(p - body)) {
        k->failed = 1;
        return -1;
    }
    check_feed(k, body + k->pos, (size_t)(p - body) - k->pos, NULL);
    check_feed(k, p, n, dst);
    return 0;
}

/* Feed the rest of k's body and compute the frame's tag (unusable if a MAC failed). */
static void
check_tag(auth_frame_check *k, unsigned char tag[AUTH_TAG_BYTES])
{
    check_feed(k, k->frame + AUTH_FRAME_HEADER + k->pos, k->len - k->pos, NULL);
    final_finish(k->final, tag);
    k->final = NULL;
    if (k->failed)
        tag_unusable(tag);
}

int
auth_frame_check_end(auth_frame_check *k)
{
    unsigned char tag[AUTH_TAG_BYTES];
    int ok;

    if (k->final == NULL)
        return -1;
    check_tag(k, tag);
    ok = !k->failed && auth_tag_equal(tag, k->frame + AUTH_OFF_TAG) == 0;
    auth_frame_check_abort(k);
    return ok ? 0 : -1;
}

void
auth_frame_check_abort(auth_frame_check *k)
{
    auth_piece_stream_abort(&k->ps);
    gmac_abort(k->final);
    k->final = NULL;
    auth_wipe(k->key, sizeof(k->key));
}

int
auth_frame_seal(const unsigned char key[AUTH_KEY_BYTES], void *frame, size_t len)
{
    unsigned char *f = frame;
    auth_frame_check k;

    if (len <= AUTH_FRAME_HEADER)
        return -1;
    if (auth_frame_check_begin(&k, key, f, len) != 0) {
        tag_unusable(f + AUTH_OFF_TAG);
        return 0;
    }
    check_tag(&k, f + AUTH_OFF_TAG);
    auth_frame_check_abort(&k);
    return 0;
}

int
auth_frame_verify(const unsigned char key[AUTH_KEY_BYTES], const void *frame, size_t len)
{
    auth_frame_check k;

    return auth_frame_check_begin(&k, key, frame, len) == 0 ? auth_frame_check_end(&k) : -1;
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

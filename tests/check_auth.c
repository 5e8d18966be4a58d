/*
 * check_auth.c - src/common/auth.c: the key formats, the handshake and the
 * frame tags against the test vectors of docs/PROTOCOL.md (which
 * tests/auth_vectors.py recomputes with PyNaCl), and the bad inputs.
 */
#include <check.h>
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "common/auth.h"
#include "common/gmac.h"
#include "testutil.h"

/* hex (2n digits) into n bytes. */
static void
unhex(const char *hex, unsigned char *out, size_t n)
{
    ck_assert_uint_eq(strlen(hex), 2 * n);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        ck_assert_int_eq(sscanf(hex + 2 * i, "%2x", &v), 1);
        out[i] = (unsigned char)v;
    }
}

static void
ck_bytes(const unsigned char *got, const char *hex)
{
    size_t n = strlen(hex) / 2;
    unsigned char *want = malloc(n);
    unhex(hex, want, n);
    ck_assert_msg(memcmp(got, want, n) == 0, "bytes differ from %s", hex);
    free(want);
}

static void
fill_range(unsigned char *p, size_t n, unsigned first)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(first + i);
}

#define V_PUBLIC_KEY "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
#define V_CLIENT_EPH "99f4674ecc87c0b8e712f192b8f49e7442a9376b4875967ababa28471019a93e"
#define V_SERVER_EPH "20243c2fa724ef40cdd0a518dd546e05b914cad065b4e8a3958079080aac6607"
#define V_TRANSCRIPT                                                                               \
    "656d61642d617574682d763105616c69636599f4674ecc87c0b8e712f192b8f49e7442a9376b4875967ababa28"   \
    "471019a93e20243c2fa724ef40cdd0a518dd546e05b914cad065b4e8a3958079080aac6607606162636465666768" \
    "696a6b6c6d6e6f707172737475767778797a7b7c7d7e7fefcdab8967452301"
#define V_SIGNATURE                                                                                \
    "a4f11595b86c9c40c3157065a79ee54108e4af0a3a0b2d7d8715735e7ca8345574e77c0485d1ea3758ac22471fb"  \
    "ee9ac5d1c3f4e9efd88ceaf2a743987b1ff0b"
#define V_CLIENT_TX "f35497f452c34b17e79c76fade8cfce3c5fdc626ba39bb5a6cf9806b6c47c576"
#define V_SERVER_TX "d5aeed7140c5470cc77ba9dbba2292b24c736897398c0cd3ec3c3014abcf07cb"
#define V_SESSION 0x1122334455667788ull
#define V_HELLO "82a17601a26f70a568656c6c6f"
#define V_HELLO_REQUEST_TAG "8554db710fdc4b79cd097f01e316feb3"
#define V_HELLO_REPLY_TAG "eb5a98b544f4545edafce3c2a2f7beb3"
#define V_BIG_REQUEST_TAG "e0c42d47a862d6744f6d32f459218958"
#define V_TOKEN_HASH "6f12bbc907b0048e2534e75bee53ec900aa42aafc3856b1b49fbb5ae23d0cef2"
#define V_KEY_FILE "emad-key-v1 alice AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define V_PUBLIC_KEY_TEXT "ed25519:A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="

/* The handshake of the test vectors: keys, transcript, signature, session keys. */
START_TEST(test_auth_handshake_matches_vectors)
{
    unsigned char seed[32], pk[32], sk[64], sig[64], cpk[32], csk[32], spk[32], ssk[32], ch[32];
    unsigned char tr[AUTH_TRANSCRIPT_MAX], crx[32], ctx[32], srx[32], stx[32];
    ck_assert_int_eq(auth_init(), 0);
    fill_range(seed, 32, 0);
    fill_range(ch, 32, 96);
    ck_assert_int_eq(auth_sign_keypair(pk, sk, seed), 0);
    ck_bytes(pk, V_PUBLIC_KEY);
    /* The ephemeral keys of the vectors come from fixed seeds (crypto_kx_seed_keypair). */
    {
        unsigned char s1[32], s2[32];
        fill_range(s1, 32, 32);
        fill_range(s2, 32, 64);
        ck_assert_int_eq(crypto_kx_seed_keypair(cpk, csk, s1), 0);
        ck_assert_int_eq(crypto_kx_seed_keypair(spk, ssk, s2), 0);
    }
    ck_bytes(cpk, V_CLIENT_EPH);
    ck_bytes(spk, V_SERVER_EPH);
    size_t n = auth_transcript(tr, "alice", 5, cpk, spk, ch, 0x0123456789abcdefull);
    ck_assert_uint_eq(n, 12 + 1 + 5 + 32 + 32 + 32 + 8);
    ck_bytes(tr, V_TRANSCRIPT);
    auth_sign(sig, tr, n, sk);
    ck_bytes(sig, V_SIGNATURE);
    ck_assert_int_eq(auth_sign_verify(sig, tr, n, pk), 0);
    tr[n - 1] ^= 1; /* another hs */
    ck_assert_int_eq(auth_sign_verify(sig, tr, n, pk), -1);
    ck_assert_int_eq(auth_client_keys(crx, ctx, cpk, csk, spk), 0);
    ck_assert_int_eq(auth_server_keys(srx, stx, spk, ssk, cpk), 0);
    ck_bytes(ctx, V_CLIENT_TX);
    ck_bytes(stx, V_SERVER_TX);
    ck_assert_mem_eq(ctx, srx, 32);
    ck_assert_mem_eq(crx, stx, 32);
    ck_assert_uint_eq(auth_transcript(tr, "al ice", 6, cpk, spk, ch, 1), 0);
}
END_TEST

/* A sealed frame of len bytes (header + body) with the given session and seq. */
static unsigned char *
frame(const unsigned char *body, size_t len, uint64_t seq)
{
    static const unsigned char zero[AUTH_TAG_BYTES];
    unsigned char *f = malloc(AUTH_FRAME_HEADER + len);
    auth_header_encode(f, V_SESSION, seq, zero);
    memcpy(f + AUTH_FRAME_HEADER, body, len);
    return f;
}

/* The tags of the sample frames, one-call and piece by piece, and what verification refuses. */
START_TEST(test_auth_frame_tags_match_vectors)
{
    unsigned char ctx[32], stx[32], hello[13], tag[16];
    struct auth_header h;
    ck_assert_int_eq(auth_init(), 0);
    unhex(V_CLIENT_TX, ctx, 32);
    unhex(V_SERVER_TX, stx, 32);
    unhex(V_HELLO, hello, sizeof hello);
    unsigned char *f = frame(hello, sizeof hello, 1);
    size_t flen = AUTH_FRAME_HEADER + sizeof hello;
    ck_assert_int_eq(auth_frame_seal(ctx, f, flen), 0);
    ck_bytes(f + AUTH_OFF_TAG, V_HELLO_REQUEST_TAG);
    ck_assert_int_eq(auth_frame_verify(ctx, f, flen), 0);
    ck_assert_int_eq(auth_frame_verify(stx, f, flen), -1); /* a request is not a reply */
    ck_assert_int_eq(auth_header_decode(f, flen, &h), 0);
    ck_assert_uint_eq(h.session, V_SESSION);
    ck_assert_uint_eq(h.seq, 1);
    ck_bytes(h.tag, V_HELLO_REQUEST_TAG);
    ck_assert_int_eq(auth_is_frame(f, flen), 1);
    ck_assert_int_eq(auth_is_frame(hello, sizeof hello), 0);
    ck_assert_int_eq(auth_is_frame("\xc1"
                                   "EM",
                                   3),
                     0);
    ck_assert_int_eq(auth_is_frame("\xc1"
                                   "EMB",
                                   4),
                     0);
    ck_assert_int_eq(auth_is_frame("\xc1"
                                   "EMA",
                                   4),
                     1);
    /* Every single-bit change anywhere in the frame is refused. */
    for (size_t i = 0; i < flen * 8; i++) {
        f[i / 8] ^= (unsigned char)(1u << (i % 8));
        ck_assert_int_eq(auth_frame_verify(ctx, f, flen), -1);
        f[i / 8] ^= (unsigned char)(1u << (i % 8));
    }
    ck_assert_int_eq(auth_frame_verify(ctx, f, flen - 1), -1);          /* truncated */
    ck_assert_int_eq(auth_frame_verify(ctx, f, AUTH_FRAME_HEADER), -1); /* no body */
    ck_assert_int_eq(auth_header_decode(f, AUTH_FRAME_HEADER, &h), -1);
    ck_assert_int_eq(auth_frame_seal(stx, f, flen), 0);
    ck_bytes(f + AUTH_OFF_TAG, V_HELLO_REPLY_TAG);
    free(f);

    /* 2.5 MiB body (byte j = j mod 251) at seq 2: three pieces, also computed piece by piece. */
    size_t blen = 5 * AUTH_PIECE_BYTES / 2;
    unsigned char *body = malloc(blen);
    for (size_t j = 0; j < blen; j++)
        body[j] = (unsigned char)(j % 251);
    f = frame(body, blen, 2);
    ck_assert_int_eq(auth_frame_seal(ctx, f, AUTH_FRAME_HEADER + blen), 0);
    ck_bytes(f + AUTH_OFF_TAG, V_BIG_REQUEST_TAG);
    ck_assert_uint_eq(auth_piece_count(blen), 3);
    unsigned char tags[3 * 16];
    for (uint32_t i = 0; i < 3; i++) {
        size_t off = i * AUTH_PIECE_BYTES,
               l = blen - off < AUTH_PIECE_BYTES ? blen - off : AUTH_PIECE_BYTES;
        auth_piece_tag(ctx, 2, i, body + off, l, tags + 16 * i);
    }
    auth_frame_tag(ctx, f, tags, 3, tag);
    ck_bytes(tag, V_BIG_REQUEST_TAG);
    /* A flipped bit deep in the last piece. */
    f[AUTH_FRAME_HEADER + blen - 7] ^= 0x10;
    ck_assert_int_eq(auth_frame_verify(ctx, f, AUTH_FRAME_HEADER + blen), -1);
    ck_assert_uint_eq(auth_piece_count(AUTH_PIECE_BYTES), 1);
    ck_assert_uint_eq(auth_piece_count(AUTH_PIECE_BYTES + 1), 2);
    free(f);
    free(body);
}
END_TEST

/*
 * The tag a piece should have, computed apart from src/common: the key
 * derived with libsodium's keyed BLAKE2b, then OpenSSL's AES-256-GCM in one
 * call with the piece as additional data.
 */
static void
want_tag(const unsigned char key[32], uint64_t seq, uint32_t i, const unsigned char *data,
         size_t len, unsigned char tag[16])
{
    unsigned char msg[16], k[32], iv[12], none[16];
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int out = 0;

    memcpy(msg, "emad-mac", 8);
    for (int b = 0; b < 8; b++)
        msg[8 + b] = iv[4 + b] = (unsigned char)(seq >> (8 * b));
    for (int b = 0; b < 4; b++)
        iv[b] = (unsigned char)(i >> (8 * b));
    ck_assert_int_eq(crypto_generichash(k, sizeof k, msg, sizeof msg, key, 32), 0);
    ck_assert_ptr_nonnull(c);
    ck_assert_int_eq(EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, k, iv), 1);
    if (len > 0)
        ck_assert_int_eq(EVP_EncryptUpdate(c, NULL, &out, data, (int)len), 1);
    ck_assert_int_eq(EVP_EncryptFinal_ex(c, none, &out), 1);
    ck_assert_int_eq(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, tag), 1);
    EVP_CIPHER_CTX_free(c);
}

/*
 * Piece tags, whole and streamed over uneven fragments, equal AES-256-GCM's
 * for every size around the 16-byte blocks and the 512-byte groups the
 * GHASH here reduces at once, on each path the CPU has (AVX-512, AVX2,
 * OpenSSL's).
 */
START_TEST(test_auth_piece_tags_equal_openssl_gcm)
{
    static const size_t sizes[] = {0,
                                   1,
                                   15,
                                   16,
                                   17,
                                   511,
                                   512,
                                   513,
                                   527,
                                   1024,
                                   1039,
                                   4096 + 7,
                                   65536,
                                   65551,
                                   100001,
                                   AUTH_PIECE_BYTES - 1,
                                   AUTH_PIECE_BYTES};
    unsigned char key[32], *data = malloc(AUTH_PIECE_BYTES + 64), got[16], want[16];
    unsigned char *out = malloc(AUTH_PIECE_BYTES + 64);
    int top;

    ck_assert_int_eq(auth_init(), 0);
    randombytes_buf(key, sizeof key);
    randombytes_buf(data, AUTH_PIECE_BYTES + 64);
    gmac_set_limit(GMAC_AVX512);
    top = gmac_level();
    for (int path = GMAC_PORTABLE; path <= top; path++) {
        gmac_set_limit(path);
        ck_assert_int_eq(gmac_level(), path);
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            uint32_t i = (uint32_t)k * 77;
            uint64_t seq = 0x0102030405060708ull + k;
            auth_piece_tag(key, seq, i, data + k, sizes[k], got);
            want_tag(key, seq, i, data + k, sizes[k], want);
            ck_assert_msg(memcmp(got, want, 16) == 0, "piece tag of %zu bytes differs (path %d)",
                          sizes[k], path);
            /* The incremental form over uneven fragments (1, 16, 61, ... bytes) gives the same. */
            {
                auth_piece_stream ps;
                size_t off = 0, step = 1, len = sizes[k];
                ck_assert_int_eq(auth_piece_stream_begin(&ps, key, seq, i), 0);
                while (off < len) {
                    size_t n = len - off < step ? len - off : step;
                    auth_piece_stream_update(&ps, data + k + off, n);
                    off += n;
                    step = step * 3 + 13;
                }
                ck_assert_int_eq(auth_piece_stream_final(&ps, got), 0);
                ck_assert_msg(memcmp(got, want, 16) == 0,
                              "streamed piece tag of %zu bytes differs (path %d)", sizes[k], path);
            }
            /* Streamed with the copy (as a sender packs): the same tag, and the bytes copied
             * whole to an unaligned destination whose neighbours stay untouched. */
            {
                auth_piece_stream ps;
                size_t off = 0, step = 5, len = sizes[k];
                memset(out, 0xa5, AUTH_PIECE_BYTES + 64);
                ck_assert_int_eq(auth_piece_stream_begin(&ps, key, seq, i), 0);
                while (off < len) {
                    size_t n = len - off < step ? len - off : step;
                    auth_piece_stream_copy(&ps, out + 3 + off, data + k + off, n);
                    off += n;
                    step = step * 5 + 11;
                }
                ck_assert_int_eq(auth_piece_stream_final(&ps, got), 0);
                ck_assert_msg(memcmp(got, want, 16) == 0,
                              "copied piece tag of %zu bytes differs (path %d)", sizes[k], path);
                ck_assert(memcmp(out + 3, data + k, len) == 0);
                ck_assert(out[2] == 0xa5 && out[3 + len] == 0xa5);
            }
        }
        /* Another key, sequence number or index gives another tag. */
        auth_piece_tag(key, 7, 1, data, 1000, got);
        auth_piece_tag(key, 8, 1, data, 1000, want);
        ck_assert_int_ne(memcmp(got, want, 16), 0);
        auth_piece_tag(key, 7, 2, data, 1000, want);
        ck_assert_int_ne(memcmp(got, want, 16), 0);
        key[31] ^= 1;
        auth_piece_tag(key, 7, 1, data, 1000, want);
        ck_assert_int_ne(memcmp(got, want, 16), 0);
        key[31] ^= 1;
    }
    gmac_set_limit(GMAC_AVX512);
    free(data);
    free(out);
}
END_TEST

/* Run a frame check over f copying ranges [off[j], off[j] + len[j]) of the body into out. */
static int
check_copying(const unsigned char *key, const unsigned char *f, size_t flen, const size_t *off,
              const size_t *len, size_t n, unsigned char *out)
{
    auth_frame_check k;

    if (auth_frame_check_begin(&k, key, f, flen) != 0)
        return -2;
    for (size_t j = 0; j < n; j++)
        if (auth_frame_check_copy(&k, f + AUTH_FRAME_HEADER + off[j], len[j], out + off[j]) != 0) {
            auth_frame_check_abort(&k);
            return -3;
        }
    return auth_frame_check_end(&k);
}

/*
 * A frame checked while parts of its body are copied out: the same verdict
 * as auth_frame_verify() (which a second implementation checks against the
 * vectors above), every copied byte equal, nothing else written.
 */
START_TEST(test_auth_frame_check_while_copying)
{
    /* 3 pieces and a tail; the ranges cross piece boundaries, touch, and leave gaps. */
    const size_t blen = 3 * AUTH_PIECE_BYTES + 4099, flen = AUTH_FRAME_HEADER + blen;
    const size_t off[] = {0, 17, 1000, AUTH_PIECE_BYTES - 5, 2 * AUTH_PIECE_BYTES + 6, blen - 1},
                 len[] = {17, 0, AUTH_PIECE_BYTES - 1005, AUTH_PIECE_BYTES + 11, 4096, 1};
    const size_t n = sizeof off / sizeof off[0];
    unsigned char key[32], *body = malloc(blen), *out = malloc(blen), *f;
    int top;

    ck_assert_int_eq(auth_init(), 0);
    randombytes_buf(key, sizeof key);
    randombytes_buf(body, blen);
    f = frame(body, blen, 9);
    ck_assert_int_eq(auth_frame_seal(key, f, flen), 0);
    gmac_set_limit(GMAC_AVX512);
    top = gmac_level();
    for (int path = GMAC_PORTABLE; path <= top; path++) {
        gmac_set_limit(path);
        memset(out, 0x5a, blen);
        ck_assert_int_eq(check_copying(key, f, flen, off, len, n, out), 0);
        for (size_t j = 0, at = 0; j < n; j++) {
            for (; at < off[j]; at++) /* the gaps stay as they were */
                ck_assert_msg(out[at] == 0x5a, "byte %zu written (path %d)", at, path);
            ck_assert(memcmp(out + off[j], body + off[j], len[j]) == 0);
            at = off[j] + len[j] > at ? off[j] + len[j] : at;
        }
        /* One flipped bit in a copied range, in a gap, in the tail, in the header. */
        {
            const size_t flips[] = {AUTH_FRAME_HEADER + 5,
                                    AUTH_FRAME_HEADER + 20,
                                    AUTH_FRAME_HEADER + 2 * AUTH_PIECE_BYTES,
                                    AUTH_FRAME_HEADER + blen - 100,
                                    AUTH_OFF_TAG + 3,
                                    9};
            for (size_t j = 0; j < sizeof flips / sizeof flips[0]; j++) {
                f[flips[j]] ^= 0x10;
                ck_assert_int_eq(auth_frame_verify(key, f, flen), -1);
                ck_assert_int_ne(check_copying(key, f, flen, off, len, n, out), 0);
                f[flips[j]] ^= 0x10;
            }
        }
        /* Another key; parts out of order or past the body; a frame without a body. */
        key[0] ^= 1;
        ck_assert_int_eq(check_copying(key, f, flen, off, len, n, out), -1);
        key[0] ^= 1;
        {
            const size_t back[] = {1000, 17}, blen2[] = {10, 10}, past[] = {blen - 10},
                         plen[] = {11};
            ck_assert_int_eq(check_copying(key, f, flen, back, blen2, 2, out), -3);
            ck_assert_int_eq(check_copying(key, f, flen, past, plen, 1, out), -3);
            ck_assert_int_eq(check_copying(key, f, AUTH_FRAME_HEADER, off, len, 0, out), -2);
        }
        ck_assert_int_eq(check_copying(key, f, flen, off, len, n, out), 0); /* unchanged */
    }
    gmac_set_limit(GMAC_AVX512);
    free(f);
    free(body);
    free(out);
}
END_TEST

START_TEST(test_auth_key_file_and_public_key_text)
{
    unsigned char seed[32], got[32], pk[32], sk[64];
    char user[AUTH_USER_MAX + 1], text[AUTH_KEYFILE_MAX];
    const char *why = NULL;
    ck_assert_int_eq(auth_init(), 0);
    fill_range(seed, 32, 0);
    int n = auth_keyfile_format(text, sizeof text, "alice", seed);
    ck_assert_int_eq(n, (int)strlen(V_KEY_FILE) + 1);
    ck_assert_str_eq(text, V_KEY_FILE "\n");
    ck_assert_int_eq(auth_keyfile_parse(text, (size_t)n, user, got, &why), 0);
    ck_assert_str_eq(user, "alice");
    ck_assert_mem_eq(got, seed, 32);
    ck_assert_int_eq(auth_keyfile_parse(V_KEY_FILE "\r\n", strlen(V_KEY_FILE) + 2, user, got, &why),
                     0);
    static const char *bad[] = {
        "",
        "emad-key-v2 alice AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        "emad-key-v1 alice",
        "emad-key-v1  AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        "emad-key-v1 al/ce AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        "emad-key-v1 alice AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
        "emad-key-v1 alice AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=x",
        "emad-key-v1 alice AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8= ",
        "emad-key-v1 alice AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n\n",
        "emad-key-v1 alice !AECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why = NULL;
        ck_assert_msg(auth_keyfile_parse(bad[i], strlen(bad[i]), user, got, &why) == -1,
                      "accepted: %s", bad[i]);
        ck_assert_ptr_nonnull(why);
    }
    ck_assert_int_eq(auth_keyfile_format(text, 20, "alice", seed), -1);
    ck_assert_int_eq(auth_keyfile_format(text, sizeof text, "a b", seed), -1);

    ck_assert_int_eq(auth_sign_keypair(pk, sk, seed), 0);
    ck_assert_int_eq(auth_pubkey_format(text, sizeof text, pk), (int)strlen(V_PUBLIC_KEY_TEXT));
    ck_assert_str_eq(text, V_PUBLIC_KEY_TEXT);
    memset(got, 0, 32);
    ck_assert_int_eq(auth_pubkey_parse(V_PUBLIC_KEY_TEXT, got, &why), 0);
    ck_assert_mem_eq(got, pk, 32);
    ck_assert_int_eq(
        auth_pubkey_parse("ed25519:A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg", got, &why), -1);
    ck_assert_int_eq(
        auth_pubkey_parse("rsa:A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=", got, &why), -1);

    /* user names */
    ck_assert_int_eq(auth_user_valid("svc.eval-1@team_a", 17), 1);
    ck_assert_int_eq(auth_user_valid("", 0), 0);
    ck_assert_int_eq(auth_user_valid("a\0b", 3), 0);
    char longname[AUTH_USER_MAX + 2];
    memset(longname, 'u', sizeof longname);
    ck_assert_int_eq(auth_user_valid(longname, AUTH_USER_MAX), 1);
    ck_assert_int_eq(auth_user_valid(longname, AUTH_USER_MAX + 1), 0);
}
END_TEST

START_TEST(test_auth_token_hash)
{
    unsigned char h[32], p[32];
    const char *why = NULL;
    ck_assert_int_eq(auth_init(), 0);
    auth_token_hash("secret-token", 12, h);
    ck_bytes(h, V_TOKEN_HASH);
    ck_assert_int_eq(auth_token_hash_parse("blake2b:" V_TOKEN_HASH, p, &why), 0);
    ck_assert_mem_eq(p, h, 32);
    ck_assert_int_eq(auth_token_hash_parse(V_TOKEN_HASH, p, &why), -1);
    ck_assert_int_eq(auth_token_hash_parse("blake2b:6f12", p, &why), -1);
    ck_assert_int_eq(auth_token_hash_parse("blake2b:" V_TOKEN_HASH "00", p, &why), -1);
    ck_assert_int_eq(auth_token_hash_parse("blake2b:zz12bbc907b0048e2534e75bee53ec900aa42aafc3856"
                                           "b1b49fbb5ae23d0cef2",
                                           p, &why),
                     -1);
    ck_assert_uint_ne(auth_random_id(), 0);
}
END_TEST

static Suite *
auth_suite(void)
{
    Suite *s = suite_create("auth");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_auth_handshake_matches_vectors);
    tcase_add_test(tc, test_auth_frame_tags_match_vectors);
    tcase_add_test(tc, test_auth_piece_tags_equal_openssl_gcm);
    tcase_add_test(tc, test_auth_frame_check_while_copying);
    tcase_add_test(tc, test_auth_key_file_and_public_key_text);
    tcase_add_test(tc, test_auth_token_hash);
    tcase_set_timeout(tc, TU_TCASE_TIMEOUT);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(auth_suite());
    int failed;
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

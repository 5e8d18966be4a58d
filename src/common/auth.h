/*
 * auth.h - authentication shared by the daemon and the clients.
 *
 * docs/PROTOCOL.md ("Authentication") is the normative description and
 * docs/SECURITY.md the operator's view. This module owns the formats and
 * the cryptography both sides must compute identically: the client key
 * file (`emad-key-v1 USER BASE64(seed)`), the public key text
 * (`ed25519:BASE64`), the stats token hash (`blake2b:HEX`), the handshake
 * transcript that the client signs, the session keys (crypto_kx), and the
 * authenticated frame: a 36-byte header (magic, session, sequence number,
 * tag) in front of an unchanged msgpack body, whose tag is a GMAC
 * (AES-256-GCM's tag, gmac.h) over the header and the tags of the body's
 * 1 MiB pieces, so the pieces of a large message can be checked in
 * parallel.
 *
 * Everything here is pure computation over caller buffers (the tags'
 * state aside, a small allocation per piece), no I/O, thread-safe once
 * auth_init() has returned 0.
 */
#ifndef EMAD_AUTH_H
#define EMAD_AUTH_H

#include <stddef.h>
#include <stdint.h>

/* Sizes in bytes. */
#define AUTH_SEED_BYTES 32       /* Ed25519 seed (the secret in the key file) */
#define AUTH_PK_BYTES 32         /* Ed25519 public key */
#define AUTH_SK_BYTES 64         /* Ed25519 secret key (libsodium's seed || pk) */
#define AUTH_SIG_BYTES 64        /* Ed25519 signature */
#define AUTH_EPH_BYTES 32        /* X25519 ephemeral public key (crypto_kx) */
#define AUTH_EPH_SK_BYTES 32     /* X25519 ephemeral secret key */
#define AUTH_CHALLENGE_BYTES 32  /* server challenge */
#define AUTH_KEY_BYTES 32        /* session key (crypto_kx session key) */
#define AUTH_TAG_BYTES 16        /* GMAC tag */
#define AUTH_TOKEN_HASH_BYTES 32 /* BLAKE2b-256 of a stats bearer token */
#define AUTH_USER_MAX 64         /* bytes in a user name */

/* The frame: magic (4), session (u64le), seq (u64le), tag (16), body. */
#define AUTH_MAGIC0 0xC1 /* never the first byte of a msgpack object */
#define AUTH_MAGIC                                                                                 \
    "\xC1"                                                                                         \
    "EMA"
#define AUTH_MAGIC_BYTES 4
#define AUTH_HEADER_MACED 20 /* H: bytes 0..19 (magic, session, seq) */
#define AUTH_FRAME_HEADER 36 /* bytes in front of the body */
#define AUTH_OFF_SESSION 4
#define AUTH_OFF_SEQ 12
#define AUTH_OFF_TAG 20
#define AUTH_PIECE_BYTES ((size_t)1 << 20) /* the body is MACed in pieces of 1 MiB */
#define AUTH_FINAL_PIECE 0xFFFFFFFFu       /* nonce index of the final tag */

/* The signed transcript: "emad-auth-v1" || u8 len || user || eph_c || eph_s || challenge || hs. */
#define AUTH_TRANSCRIPT_LABEL "emad-auth-v1"
#define AUTH_TRANSCRIPT_LABEL_BYTES 12
#define AUTH_TRANSCRIPT_MAX                                                                        \
    (AUTH_TRANSCRIPT_LABEL_BYTES + 1 + AUTH_USER_MAX + 2 * AUTH_EPH_BYTES + AUTH_CHALLENGE_BYTES + \
     8)

/* Text forms. */
#define AUTH_KEYFILE_TAG "emad-key-v1"
#define AUTH_PUBKEY_PREFIX "ed25519:"
#define AUTH_TOKEN_PREFIX "blake2b:"
#define AUTH_B64_32 45 /* base64 of 32 bytes with padding, plus NUL */
#define AUTH_KEYFILE_MAX (sizeof AUTH_KEYFILE_TAG + AUTH_USER_MAX + AUTH_B64_32 + 2)
#define AUTH_PUBKEY_TEXT_MAX (sizeof AUTH_PUBKEY_PREFIX + AUTH_B64_32)

/* Initialize libsodium (idempotent, thread-safe): 0, or -1 if it cannot be used. */
int auth_init(void);

/* 1 if user (len bytes) is a valid user name: 1..64 bytes of [A-Za-z0-9._@-]. */
int auth_user_valid(const char *user, size_t len);

/*
 * Parse a key file's contents (text, len bytes): one line
 * `emad-key-v1 USER BASE64(seed)`, optionally ending in a newline. Fills
 * user (NUL-terminated, at most AUTH_USER_MAX bytes) and seed. Returns 0, or
 * -1 with *why set to a static message.
 */
int auth_keyfile_parse(const char *text, size_t len, char user[AUTH_USER_MAX + 1],
                       unsigned char seed[AUTH_SEED_BYTES], const char **why);

/* Write the key file line (with its newline) into out; returns its length, or -1 if it does not
 * fit. */
int auth_keyfile_format(char *out, size_t cap, const char *user,
                        const unsigned char seed[AUTH_SEED_BYTES]);

/* Parse `ed25519:BASE64` (NUL-terminated) into pk: 0, or -1 with *why. */
int auth_pubkey_parse(const char *text, unsigned char pk[AUTH_PK_BYTES], const char **why);

/* Write `ed25519:BASE64` into out: its length, or -1 if it does not fit. */
int auth_pubkey_format(char *out, size_t cap, const unsigned char pk[AUTH_PK_BYTES]);

/* The Ed25519 key pair of a seed (crypto_sign_seed_keypair): 0 or -1. */
int auth_sign_keypair(unsigned char pk[AUTH_PK_BYTES], unsigned char sk[AUTH_SK_BYTES],
                      const unsigned char seed[AUTH_SEED_BYTES]);

/* BLAKE2b-256 of a bearer token. */
void auth_token_hash(const char *token, size_t len, unsigned char out[AUTH_TOKEN_HASH_BYTES]);

/* Parse `blake2b:HEX(32 bytes)` (NUL-terminated): 0, or -1 with *why. */
int auth_token_hash_parse(const char *text, unsigned char out[AUTH_TOKEN_HASH_BYTES],
                          const char **why);

/*
 * Build the handshake transcript into out (AUTH_TRANSCRIPT_MAX bytes);
 * returns its length, or 0 if the user name is not valid.
 */
size_t auth_transcript(unsigned char out[AUTH_TRANSCRIPT_MAX], const char *user, size_t user_len,
                       const unsigned char client_eph[AUTH_EPH_BYTES],
                       const unsigned char server_eph[AUTH_EPH_BYTES],
                       const unsigned char challenge[AUTH_CHALLENGE_BYTES], uint64_t hs);

/* Sign a transcript with an Ed25519 secret key (crypto_sign_detached). */
void auth_sign(unsigned char sig[AUTH_SIG_BYTES], const unsigned char *transcript, size_t len,
               const unsigned char sk[AUTH_SK_BYTES]);

/* Check a transcript's signature: 0 if valid, -1 otherwise. */
int auth_sign_verify(const unsigned char sig[AUTH_SIG_BYTES], const unsigned char *transcript,
                     size_t len, const unsigned char pk[AUTH_PK_BYTES]);

/* A fresh X25519 key pair (crypto_kx_keypair). */
void auth_eph_keypair(unsigned char pk[AUTH_EPH_BYTES], unsigned char sk[AUTH_EPH_SK_BYTES]);

/*
 * Session keys. rx MACs what this side receives, tx what it sends: the
 * client's tx is the server's rx (requests), the server's tx the client's
 * rx (replies). Return 0, or -1 if the peer's key is unacceptable.
 */
int auth_client_keys(unsigned char rx[AUTH_KEY_BYTES], unsigned char tx[AUTH_KEY_BYTES],
                     const unsigned char client_pk[AUTH_EPH_BYTES],
                     const unsigned char client_sk[AUTH_EPH_SK_BYTES],
                     const unsigned char server_pk[AUTH_EPH_BYTES]);
int auth_server_keys(unsigned char rx[AUTH_KEY_BYTES], unsigned char tx[AUTH_KEY_BYTES],
                     const unsigned char server_pk[AUTH_EPH_BYTES],
                     const unsigned char server_sk[AUTH_EPH_SK_BYTES],
                     const unsigned char client_pk[AUTH_EPH_BYTES]);

/* A frame's header fields. */
struct auth_header {
    uint64_t session;
    uint64_t seq;
    unsigned char tag[AUTH_TAG_BYTES];
};

/*
 * 1 if a message (len bytes) starts like a frame: with the 4-byte magic
 * (whose first byte, 0xC1, never starts msgpack). Other bytes after 0xC1
 * are a malformed message, not a frame.
 */
int auth_is_frame(const void *msg, size_t len);

/*
 * Decode the header of a frame of len bytes: 0, or -1 if the message is
 * shorter than a header plus one body byte or the magic is wrong.
 */
int auth_header_decode(const void *msg, size_t len, struct auth_header *h);

/* Write magic, session, seq and tag into the first AUTH_FRAME_HEADER bytes of out. */
void auth_header_encode(void *out, uint64_t session, uint64_t seq,
                        const unsigned char tag[AUTH_TAG_BYTES]);

/* Number of 1 MiB pieces of a body of len bytes (len > 0). */
size_t auth_piece_count(size_t len);

/*
 * Tag t_i of piece i (data, len bytes) of the body of the frame with
 * sequence number seq, under key: the tag of AES-256-GCM under the key
 * derived from key and seq (gmac.h), with nonce u32le(i) || u64le(seq),
 * empty plaintext and the piece as additional data. Any thread. (A tag
 * that cannot be computed, out of memory, is random: it matches nothing.)
 */
void auth_piece_tag(const unsigned char key[AUTH_KEY_BYTES], uint64_t seq, uint32_t i,
                    const void *data, size_t len, unsigned char tag[AUTH_TAG_BYTES]);

/*
 * The same tag computed incrementally: begin, any number of updates whose
 * concatenation is the piece, final. Lets a sender tag a piece while it
 * packs it from scattered buffers (auth_piece_stream_copy: one pass).
 * begin returns 0, or -1 if no MAC context could be made (nothing to free);
 * after a successful begin, final (0, or -1 on failure) or abort must be
 * called. Any thread.
 */
typedef struct auth_piece_stream {
    void *ctx; /* the MAC state (gmac.h) */
} auth_piece_stream;
int auth_piece_stream_begin(auth_piece_stream *s, const unsigned char key[AUTH_KEY_BYTES],
                            uint64_t seq, uint32_t i);
void auth_piece_stream_update(auth_piece_stream *s, const void *data, size_t len);
/* The same, and copy the bytes to dst (not overlapping data) in the same pass. */
void auth_piece_stream_copy(auth_piece_stream *s, void *dst, const void *data, size_t len);
int auth_piece_stream_final(auth_piece_stream *s, unsigned char tag[AUTH_TAG_BYTES]);
void auth_piece_stream_abort(auth_piece_stream *s);

/*
 * The frame's tag: the same AEAD with nonce u32le(0xFFFFFFFF) || u64le(seq)
 * over H (the first AUTH_HEADER_MACED bytes of the frame, whose seq it
 * reads) followed by the n piece tags (n * AUTH_TAG_BYTES bytes).
 */
void auth_frame_tag(const unsigned char key[AUTH_KEY_BYTES],
                    const unsigned char header[AUTH_HEADER_MACED], const unsigned char *piece_tags,
                    size_t n, unsigned char tag[AUTH_TAG_BYTES]);

/*
 * One call for a whole frame of len bytes whose first AUTH_HEADER_MACED
 * bytes are written: computes every piece tag in this thread and stores
 * the frame's tag at offset AUTH_OFF_TAG. Returns 0, or -1 if the frame
 * has no body.
 */
int auth_frame_seal(const unsigned char key[AUTH_KEY_BYTES], void *frame, size_t len);

/* Check a whole frame's tag in this thread: 0 if it matches, -1 otherwise. */
int auth_frame_verify(const unsigned char key[AUTH_KEY_BYTES], const void *frame, size_t len);

/*
 * Check a frame's tag while copying parts of its body out (a reply's data
 * into the caller's buffers): one pass over memory for both. begin (0, or
 * -1 if len has no body, the magic is wrong or out of memory: nothing to
 * free); then copy for each part, in increasing order of address (the
 * bytes between parts are hashed, not copied; -1 if at is before the bytes
 * already fed or n runs past the body); then end: 0 if the tag matches, -1
 * otherwise (the copies are made either way). abort instead of end frees
 * without an answer. The frame must stay unchanged until then.
 */
typedef struct auth_frame_check {
    const unsigned char *frame;
    size_t len, pos; /* body bytes, and how many are fed */
    unsigned char key[AUTH_KEY_BYTES];
    auth_piece_stream ps; /* the piece being fed */
    void *final;          /* the frame tag's MAC state (gmac.h) */
    int failed;
} auth_frame_check;
int auth_frame_check_begin(auth_frame_check *k, const unsigned char key[AUTH_KEY_BYTES],
                           const void *frame, size_t len);
int auth_frame_check_copy(auth_frame_check *k, const void *at, size_t n, void *dst);
int auth_frame_check_end(auth_frame_check *k);
void auth_frame_check_abort(auth_frame_check *k);

/* Constant-time comparison of two tags: 0 if equal, -1 otherwise. */
int auth_tag_equal(const unsigned char a[AUTH_TAG_BYTES], const unsigned char b[AUTH_TAG_BYTES]);

/* A random 64-bit value, never 0. */
uint64_t auth_random_id(void);

/* Fill buf with len random bytes. */
void auth_random(void *buf, size_t len);

/* Overwrite len bytes of secret data with zeros. */
void auth_wipe(void *buf, size_t len);

#endif

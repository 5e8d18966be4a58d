/*
 * authsess.h - the daemon's authentication state: the user table from the
 * auth file, pending handshakes, sessions and what they own.
 *
 * A handshake (auth_begin) is kept until auth_finish or for
 * AUTHSESS_HANDSHAKE_MS, at most AUTHSESS_MAX_HANDSHAKES (the oldest is
 * dropped). A session holds the two crypto_kx keys, its expiry, the last
 * accepted sequence number and tag, and the last reply (kept for an exact
 * resend when small). Sessions form lineages: a renewed session has the
 * lineage of the one it renews. Transactions and pull sessions of the
 * store are owned by the user who opened them (the owner table here: the
 * store knows nothing of users). Loop thread only.
 */
#ifndef EMAD_AUTHSESS_H
#define EMAD_AUTHSESS_H

#include <stddef.h>
#include <stdint.h>

#include "emad.h"
#include "common/auth.h"
#include "daemon/authfile.h"

#define AUTHSESS_MAX_HANDSHAKES 4096
#define AUTHSESS_HANDSHAKE_MS 30000
#define AUTHSESS_MAX_SESSIONS 65536
#define AUTHSESS_MAX_PER_USER 4096          /* a user's oldest session is closed beyond this */
#define AUTHSESS_KEEP_REPLY_MAX (64u << 10) /* larger replies are not kept for resends */
/* An expired session is kept this long, so its client is told `expired` rather than `no_session`.
 */
#define AUTHSESS_EXPIRED_KEEP_MS 60000

/* What the session knows of the reply to its last accepted request. */
enum authsess_reply {
    AUTHSESS_REPLY_NONE,    /* no request accepted yet */
    AUTHSESS_REPLY_PENDING, /* being computed: a resend is dropped, the reply answers it */
    AUTHSESS_REPLY_KEPT,    /* kept: a resend gets it again */
    AUTHSESS_REPLY_GONE,    /* sent but too large to keep: a resend is handled again */
};

typedef struct authsess {
    uint64_t id;
    uint64_t lineage; /* the id of the first session of a renewal chain */
    char user[AUTH_USER_MAX + 1];
    unsigned char pk[AUTH_PK_BYTES]; /* the user's key when the session was made */
    unsigned char rx[AUTH_KEY_BYTES], tx[AUTH_KEY_BYTES];
    uint64_t expires_ms;
    uint64_t last_seq;
    unsigned char last_tag[AUTH_TAG_BYTES];
    int reply_state; /* enum authsess_reply */
    void *reply;     /* AUTHSESS_REPLY_KEPT: the whole reply frame (malloc'd) */
    size_t reply_len;
    struct authsess *prev, *next; /* every session, newest first */
} authsess;

typedef struct authsess_hs {
    uint64_t hs;
    uint64_t created_ms;
    char user[AUTH_USER_MAX + 1];
    int known; /* the user was in the table at auth_begin */
    unsigned char client_eph[AUTH_EPH_BYTES];
    unsigned char server_eph[AUTH_EPH_BYTES], server_sk[AUTH_EPH_SK_BYTES];
    unsigned char challenge[AUTH_CHALLENGE_BYTES];
} authsess_hs;

typedef struct authsess_table authsess_table;

/* A table using the users of a (which it takes) and session lifetime_ms. */
authsess_table *authsess_create(authfile *a, uint64_t lifetime_ms);

/* Free everything. NULL accepted. */
void authsess_destroy(authsess_table *t);

/* The current user table. */
const authfile *authsess_users(const authsess_table *t);

/* The session lifetime in milliseconds; set it (applies to sessions made from now). */
uint64_t authsess_lifetime(const authsess_table *t);
void authsess_set_lifetime(authsess_table *t, uint64_t lifetime_ms);

/*
 * Swap in a new user table (taking it): sessions of removed users and of
 * users whose key changed are dropped, the others kept. Returns the number
 * of sessions dropped.
 */
size_t authsess_reload(authsess_table *t, authfile *a);

/*
 * A new pending handshake for user[0..len) with the client's ephemeral key:
 * fresh hs id, challenge and daemon key pair. Evicts the oldest beyond
 * AUTHSESS_MAX_HANDSHAKES. The pointer is valid until the next call here.
 */
const authsess_hs *authsess_begin(authsess_table *t, const char *user, size_t len,
                                  const unsigned char client_eph[AUTH_EPH_BYTES], uint64_t now_ms);

/*
 * Take the pending handshake hs (removed from the table; the caller frees
 * it with authsess_hs_free), or NULL if unknown or older than
 * AUTHSESS_HANDSHAKE_MS.
 */
authsess_hs *authsess_take_hs(authsess_table *t, uint64_t hs, uint64_t now_ms);

/* Wipe and free a handshake. */
void authsess_hs_free(authsess_hs *h);

/*
 * Make a session for handshake h, whose signature was checked: keys from
 * h's ephemeral keys, lineage from `renew` (a live session of the same
 * user) or new. A user's oldest session is closed when the user has
 * AUTHSESS_MAX_PER_USER already (a client that reconnects in a loop cannot
 * crowd out the others). NULL if the table is full or the keys are
 * unacceptable.
 */
authsess *authsess_open(authsess_table *t, const authsess_hs *h, const authsess *renew,
                        uint64_t now_ms);

/* The session with id, or NULL (expired ones too: see authsess_expired). */
authsess *authsess_find(authsess_table *t, uint64_t id);

/* Has s expired at now_ms? */
int authsess_expired(const authsess *s, uint64_t now_ms);

/* Remove and free session s. */
void authsess_close(authsess_table *t, authsess *s);

/* Keep a copy of reply frame msg[0..len) in s, or note that it was too large. */
void authsess_keep_reply(authsess *s, const void *msg, size_t len);

/*
 * Drop sessions expired for AUTHSESS_EXPIRED_KEEP_MS and handshakes older
 * than AUTHSESS_HANDSHAKE_MS; the number of sessions dropped.
 */
size_t authsess_expire(authsess_table *t, uint64_t now_ms);

/* Number of live sessions. */
size_t authsess_count(const authsess_table *t);

/*
 * Record the owner of a transaction ('t'), pull session ('s') or
 * multi-writer part ('w', id: authsess_part_id()) opened at now_ms.
 */
void authsess_own(authsess_table *t, int kind, uint64_t id, const char *user, const char *model,
                  uint64_t now_ms);

/* The id of the part of writer `writer` of step `step` of model name[0..len). */
uint64_t authsess_part_id(const char *name, size_t len, uint64_t step, uint32_t writer);

/* The owner of (kind, id) and the model it was opened on, or NULL if none was recorded. */
const char *authsess_owner(const authsess_table *t, int kind, uint64_t id, const char **model);

/* Forget the owner of (kind, id). */
void authsess_disown(authsess_table *t, int kind, uint64_t id);

/* Forget owners for which alive(arg, kind, id, recorded at_ms) says the object is gone. */
void authsess_sweep_owners(authsess_table *t,
                           int (*alive)(void *arg, int kind, uint64_t id, uint64_t at_ms),
                           void *arg);

#endif

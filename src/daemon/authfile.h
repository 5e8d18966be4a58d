/*
 * authfile.h - the daemon's auth file (--auth-file): users, their Ed25519
 * public keys, their grants and denials of roles on model-name patterns,
 * and the hashes of their HTTP /stats bearer tokens. docs/SECURITY.md
 * describes the format:
 *
 *     [user alice]
 *     key = ed25519:BASE64
 *     grant = push team-a-*
 *     deny = admin team-a-prod
 *     stats_token = blake2b:HEX
 *
 * A table is immutable once parsed; a reload parses a new one and swaps it
 * (authsess.c decides which sessions survive). Loop thread only, except
 * authfile_token_ok(), which the HTTP threads call on a table that the
 * loop keeps alive for them (http.c holds its own copy of the hashes).
 */
#ifndef EMAD_AUTHFILE_H
#define EMAD_AUTHFILE_H

#include <stddef.h>
#include <stdint.h>

#include "common/auth.h"

/* The roles a grant or a deny names ("*" in the file: every role). */
enum authfile_role { AUTHFILE_PUSH, AUTHFILE_PULL, AUTHFILE_ADMIN, AUTHFILE_ROLES };

#define AUTHFILE_MAX_USERS 4096
#define AUTHFILE_MAX_RULES 256 /* grants plus denies of one user */
#define AUTHFILE_MAX_FILE_BYTES (1 << 20)

/* One rule: a role (or all) and a model-name pattern (fnmatch, no flags). */
typedef struct authfile_rule {
    int role; /* enum authfile_role, or -1: every role */
    int deny;
    char *pattern;
} authfile_rule;

typedef struct authfile_user {
    char name[AUTH_USER_MAX + 1];
    unsigned char pk[AUTH_PK_BYTES];
    int has_key;
    int has_token;
    unsigned char token_hash[AUTH_TOKEN_HASH_BYTES];
    authfile_rule *rules;
    size_t nrules;
} authfile_user;

typedef struct authfile {
    authfile_user *users;
    size_t nusers;
} authfile;

/* The name of a role ("push", "pull", "admin"). */
const char *authfile_role_name(int role);

/*
 * Parse the auth file text buf[0..len) named `name` in messages. Returns 0
 * with *out (authfile_destroy), or -EINVAL with *cause = "NAME:LINE: why".
 */
int authfile_parse(authfile **out, const char *name, const char *buf, size_t len, char **cause);

/* Read and parse the file at path (at most AUTHFILE_MAX_FILE_BYTES). */
int authfile_load(authfile **out, const char *path, char **cause);

/* Free a table. NULL accepted. */
void authfile_destroy(authfile *a);

/* The user named name[0..len), or NULL. */
const authfile_user *authfile_find(const authfile *a, const char *name, size_t len);

/*
 * May user u act in role on the model named model[0..len)? Yes iff a grant
 * of the role (or of every role) matches and no deny of it matches.
 */
int authfile_allows(const authfile_user *u, int role, const char *model, size_t len);

/* The user whose stats token hashes to hash, or NULL. */
const authfile_user *authfile_token_user(const authfile *a,
                                         const unsigned char hash[AUTH_TOKEN_HASH_BYTES]);

#endif

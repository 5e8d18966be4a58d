/*
 * creds.c - the credentials of a libemad client: which user and key file
 * (emad_options.user / key_file, else $EMAD_USER / $EMAD_KEY_FILE), reading
 * the key file (`emad-key-v1 USER BASE64(seed)`, parsed by src/common/auth)
 * after checking that neither its group nor others may access it, and the
 * Ed25519 secret key derived from its seed, kept in the client until
 * emad_close() wipes it. Also the message of a failed emad_connect(), kept
 * per thread (emad_last_error(NULL)) since no client survives the failure.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client.h"

/* The message of the last failed emad_connect() of this thread. */
static _Thread_local char connect_err[sizeof(((emad_client *)0)->err)];

/* Record the message of a failed emad_connect() and return code. */
int
creds_connect_fail(int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    (void)vsnprintf(connect_err, sizeof(connect_err), fmt, ap);
    va_end(ap);
    return code;
}

/* Clear the message of a failed emad_connect() (a new attempt starts). */
void
creds_connect_clear(void)
{
    connect_err[0] = '\0';
}

/* The message of the last failed emad_connect() of this thread ("" if none). */
const char *
creds_connect_error(void)
{
    return connect_err;
}

/* Read the key file at path (at most AUTH_KEYFILE_MAX bytes) after checking its mode. */
static int
read_key_file(emad_client *c, const char *path, char *text, size_t cap, size_t *len)
{
    struct stat st;
    ssize_t n;
    int fd, e;

    if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) < 0)
        return fail(c, EMAD_EIO, "key file %s: %s", path, strerror(errno));
    if (fstat(fd, &st) != 0) {
        e = errno;
        (void)close(fd);
        return fail(c, EMAD_EIO, "key file %s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        (void)close(fd);
        return fail(c, EMAD_EINVAL, "key file %s: not a regular file", path);
    }
    if ((st.st_mode & 077) != 0) {
        (void)close(fd);
        return fail(c, EMAD_EINVAL,
                    "key file %s: permissions %04o are too open: group and others must have no "
                    "access (chmod 600 %s)",
                    path, (unsigned)(st.st_mode & 07777), path);
    }
    n = read(fd, text, cap);
    e = errno;
    (void)close(fd);
    if (n < 0)
        return fail(c, EMAD_EIO, "key file %s: %s", path, strerror(e));
    if ((size_t)n == cap)
        return fail(c, EMAD_EINVAL, "key file %s: longer than a key file (%zu bytes or more)", path,
                    cap);
    *len = (size_t)n;
    return 0;
}

/*
 * Load the credentials of options o (or of the environment when o names
 * neither a user nor a key file) into c. No credentials: c->auth stays 0.
 * A user without a key file, an unreadable or too open key file, a
 * malformed one, or one of another user is an error with a message.
 */
int
creds_load(emad_client *c, const emad_options *o)
{
    const char *user = o->user, *path = o->key_file, *why = NULL;
    char text[AUTH_KEYFILE_MAX + 64], fuser[AUTH_USER_MAX + 1];
    unsigned char seed[AUTH_SEED_BYTES], pk[AUTH_PK_BYTES];
    size_t len = 0;
    int rc;

    if (user == NULL && path == NULL) {
        user = getenv("EMAD_USER");
        path = getenv("EMAD_KEY_FILE");
        if (user != NULL && *user == '\0')
            user = NULL;
        if (path != NULL && *path == '\0')
            path = NULL;
        if (user != NULL && path == NULL)
            return fail(c, EMAD_EINVAL, "EMAD_USER is set (%.64s) but EMAD_KEY_FILE is not", user);
    }
    if (user == NULL && path == NULL)
        return 0;
    if (path == NULL)
        return fail(c, EMAD_EINVAL, "user %.64s given without a key file", user);
    if (user != NULL && !auth_user_valid(user, strlen(user)))
        return fail(c, EMAD_EINVAL, "invalid user name '%.64s': 1..%d bytes of A-Z a-z 0-9 . _ @ -",
                    user, AUTH_USER_MAX);
    if (auth_init() != 0)
        return fail(c, EMAD_EINTERNAL, "libsodium cannot be initialized");
    if ((rc = read_key_file(c, path, text, sizeof(text), &len)) != 0)
        return rc;
    rc = auth_keyfile_parse(text, len, fuser, seed, &why);
    auth_wipe(text, sizeof(text));
    if (rc != 0)
        return fail(c, EMAD_EINVAL, "key file %s: %s", path, why != NULL ? why : "malformed");
    if (user != NULL && strcmp(user, fuser) != 0) {
        auth_wipe(seed, sizeof(seed));
        return fail(c, EMAD_EINVAL, "key file %s is the key of user %s, not of %s", path, fuser,
                    user);
    }
    rc = auth_sign_keypair(pk, c->sk, seed);
    auth_wipe(seed, sizeof(seed));
    if (rc != 0)
        return fail(c, EMAD_EINTERNAL, "key file %s: cannot derive the key pair", path);
    memcpy(c->user, fuser, sizeof(c->user));
    c->auth = 1;
    return 0;
}

/* Forget the credentials of c (wipes the secret key and the session keys). */
void
creds_wipe(emad_client *c)
{
    auth_wipe(c->sk, sizeof(c->sk));
    auth_wipe(c->sess, sizeof(c->sess));
    c->auth = 0;
}

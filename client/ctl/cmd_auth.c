/*
 * cmd_auth.c - the emactl command that makes credentials: keygen.
 *
 * keygen makes a user's Ed25519 key pair, writes the secret seed into a
 * new key file (mode 0600, never over an existing file; the format is
 * src/common/auth's) and prints the entry of the daemon's auth file with
 * the public key, so that `emactl keygen alice >> auth.ini` is all an
 * operator needs besides the grants (docs/SECURITY.md).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/auth.h"
#include "common/proto.h"
#include "ctl.h"

/* --grant "ROLE PATTERN" of keygen: one more grant line of the printed entry. */
static int
args_set_grant(ctl *g, const ctl_opt *o, const char *v, ctl_args *a)
{
    /* The roles of the auth file; push and pull are named like the ops they allow. */
    const char *const roles[] = {proto_op_name(PROTO_OP_PUSH), proto_op_name(PROTO_OP_PULL),
                                 "admin", NULL};
    const char *sp = v != NULL ? strchr(v, ' ') : NULL;
    int known = 0;

    for (size_t i = 0; sp != NULL && roles[i] != NULL; i++)
        known |= (size_t)(sp - v) == strlen(roles[i]) && strncmp(v, roles[i], sp - v) == 0;
    if (!known || sp[1] == '\0' || strpbrk(sp + 1, " \t\r\n") != NULL)
        return ctl_usage_error(g, "%s needs %s, not '%s'", o->name, o->what, v != NULL ? v : "");
    if (a->ngrants == ARGS_MAXGRANTS)
        return ctl_usage_error(g, "at most %d %s options", ARGS_MAXGRANTS, o->name);
    a->grants[a->ngrants++] = v;
    return 0;
}

/* Create the missing directories above path (mode 0700, like ~/.ssh); 0 or -1 (errno set). */
static int
make_parents(const char *path)
{
    char dir[4096];
    size_t n = strlen(path);

    if (n >= sizeof(dir)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(dir, path, n + 1);
    for (char *p = dir + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(dir, 0700) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return 0;
}

/* Write text (len bytes) into a new file at path, mode 0600; 0 or -1 with *why (errno text). */
static int
write_new_file(const char *path, const char *text, size_t len, const char **why)
{
    size_t done = 0;
    int fd, e;

    if (make_parents(path) != 0) {
        *why = strerror(errno);
        return -1;
    }
    if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600)) < 0) {
        *why = errno == EEXIST ? "the file exists; keygen never overwrites a key (remove it first "
                                 "to replace the key)"
                               : strerror(errno);
        return -1;
    }
    if (fchmod(fd, 0600) != 0)
        goto fail;
    while (done < len) {
        ssize_t n = write(fd, text + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            goto fail;
        done += (size_t)n;
    }
    if (fsync(fd) != 0)
        goto fail;
    if (close(fd) != 0) {
        fd = -1;
        goto fail;
    }
    return 0;
fail:
    e = errno;
    if (fd >= 0)
        (void)close(fd);
    (void)unlink(path);
    *why = strerror(e);
    return -1;
}

/* keygen USER [--out FILE] [--grant "ROLE PATTERN"]...: make a key pair, print the entry. */
static int
cmd_keygen(ctl *g, const ctl_cmd *self, ctl_args *a)
{
    const char *user = a->pos[0], *why = NULL;
    unsigned char seed[AUTH_SEED_BYTES], pk[AUTH_PK_BYTES], sk[AUTH_SK_BYTES];
    char line[AUTH_KEYFILE_MAX], pub[AUTH_PUBKEY_TEXT_MAX], defpath[AUTH_USER_MAX + 8];
    const char *path = a->out;
    int len, rc;

    if (!auth_user_valid(user, strlen(user)))
        return ctl_usage_error(g, "invalid user name '%s': 1 to %d bytes of A-Z a-z 0-9 . _ @ -",
                               user, AUTH_USER_MAX);
    if (auth_init() != 0) {
        ctl_errorf(g, "libsodium cannot be initialized");
        return EXIT_FAIL;
    }
    if (path == NULL) {
        (void)snprintf(defpath, sizeof(defpath), "%s.key", user);
        path = defpath;
    }
    auth_random(seed, sizeof(seed));
    len = auth_keyfile_format(line, sizeof(line), user, seed);
    rc = len < 0 || auth_sign_keypair(pk, sk, seed) != 0 ||
         auth_pubkey_format(pub, sizeof(pub), pk) < 0;
    auth_wipe(seed, sizeof(seed));
    auth_wipe(sk, sizeof(sk));
    if (rc != 0) {
        auth_wipe(line, sizeof(line));
        ctl_errorf(g, "cannot make the key of user %s", user);
        return EXIT_FAIL;
    }
    rc = write_new_file(path, line, (size_t)len, &why);
    auth_wipe(line, sizeof(line));
    if (rc != 0) {
        ctl_errorf(g, "%s: %s", path, why);
        return EXIT_FAIL;
    }
    printf("# The key of user %s is in %s (mode 0600; keep it secret).\n"
           "# Add this entry to the daemon's auth file and reload it (SIGHUP):\n"
           "[user %s]\n"
           "key = %s\n",
           user, path, user, pub);
    for (size_t i = 0; i < a->ngrants; i++)
        printf("grant = %s\n", a->grants[i]);
    if (a->ngrants == 0)
        printf("# grant = pull PATTERN\n# grant = push PATTERN\n# grant = admin PATTERN\n");
    return fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_FAIL;
}

/* clang-format off */
static const ctl_opt keygen_opts[] = {
    {ARGS_OPT("--out", args_set_string, out), .min = 1, .what = "a file"},
    {.name = "--grant", .has_arg = 1, .set = args_set_grant,
     .what = "\"ROLE PATTERN\" (ROLE: push, pull or admin)"},
    {.name = NULL},
};
/* clang-format on */

const ctl_cmd ctl_cmd_keygen = {
    .name = "keygen",
    .usage = "keygen USER [--out FILE] [--grant \"ROLE PATTERN\"]...",
    .help = "Make a key pair for USER: write the secret key into FILE (default USER.key),\n"
            "a new file of mode 0600 (an existing file is never overwritten; missing\n"
            "directories are made with mode 0700), and print\n"
            "the entry of the daemon's auth file with the public key, and a grant line\n"
            "for each --grant (ROLE push, pull or admin; PATTERN a glob of model names).\n"
            "Needs no daemon.\n",
    .args = {"USER"},
    .nreq = 1,
    .opts = {keygen_opts},
    .exec = cmd_keygen,
};

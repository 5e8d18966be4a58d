/*
 * authfile.c - parsing and querying the auth file (see authfile.h). The
 * text goes to libinih line by line through the daemon's INI line reader
 * (base/inilines.h), which numbers the lines and refuses NUL bytes,
 * overlong and, here, indented lines (inih would take an indented line as
 * the continuation of the previous value), so every error names its line.
 */
#include <errno.h>
#include <fnmatch.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/inilines.h"
#include "common/cause.h"
#include "common/proto.h"
#include "base/log.h"
#include "base/xmalloc.h"
#include "daemon/authfile.h"

#define SECTION_PREFIX "user "
#define LINE_MAX_BYTES 1024

/* The role names: push and pull are named like the ops they allow. */
const char *
authfile_role_name(int role)
{
    switch (role) {
    case AUTHFILE_PUSH:
        return proto_op_name(PROTO_OP_PUSH);
    case AUTHFILE_PULL:
        return proto_op_name(PROTO_OP_PULL);
    case AUTHFILE_ADMIN:
        return "admin";
    default:
        return "*";
    }
}

/* State of one parse. */
typedef struct parse_ctx {
    authfile *a;
    inilines lines;   /* the reader of the text and the first error */
    int user_section; /* the header count at the last user's section */
} parse_ctx;

/* The user of section `section` (created on its first key), or NULL after an error. */
static authfile_user *
section_user(parse_ctx *x, const char *section)
{
    size_t pre = sizeof(SECTION_PREFIX) - 1, len;
    const char *name = section + pre;
    authfile *a = x->a;

    if (strncmp(section, SECTION_PREFIX, pre) != 0) {
        inilines_fail(&x->lines, "unknown section [%s] (expected [user NAME])", section);
        return NULL;
    }
    len = strlen(name);
    if (!auth_user_valid(name, len)) {
        inilines_fail(&x->lines, "[%s]: a user name is 1 to %d of A-Z a-z 0-9 . _ @ -", section,
                      AUTH_USER_MAX);
        return NULL;
    }
    if (a->nusers > 0 && x->user_section == x->lines.sections)
        return &a->users[a->nusers - 1]; /* another key of the same section */
    if (authfile_find(a, name, len) != NULL) {
        inilines_fail(&x->lines, "user '%s' is defined twice", name);
        return NULL;
    }
    if (a->nusers == AUTHFILE_MAX_USERS) {
        inilines_fail(&x->lines, "more than %d users", AUTHFILE_MAX_USERS);
        return NULL;
    }
    a->users = xreallocarray(a->users, a->nusers + 1, sizeof(*a->users));
    memset(&a->users[a->nusers], 0, sizeof(a->users[0]));
    memcpy(a->users[a->nusers].name, name, len + 1);
    x->user_section = x->lines.sections;
    return &a->users[a->nusers++];
}

/* Add `ROLE PATTERN...` (a grant or a deny) to u. */
static void
add_rules(parse_ctx *x, authfile_user *u, int deny, const char *value)
{
    char *copy = xstrndup(value, strlen(value)), *save = NULL;
    const char *role_word = strtok_r(copy, " \t", &save), *pat;
    int role = -2, npat = 0;

    for (int r = 0; role_word != NULL && r < AUTHFILE_ROLES; r++)
        if (strcmp(role_word, authfile_role_name(r)) == 0)
            role = r;
    if (role_word != NULL && strcmp(role_word, "*") == 0)
        role = -1;
    if (role == -2) {
        inilines_fail(&x->lines,
                      "%s = '%s': expected a role (push, pull, admin or *) and model patterns",
                      deny ? "deny" : "grant", value);
        free(copy);
        return;
    }
    while ((pat = strtok_r(NULL, " \t", &save)) != NULL) {
        if (u->nrules == AUTHFILE_MAX_RULES) {
            inilines_fail(&x->lines, "user '%s' has more than %d rules", u->name,
                          AUTHFILE_MAX_RULES);
            break;
        }
        u->rules = xreallocarray(u->rules, u->nrules + 1, sizeof(*u->rules));
        u->rules[u->nrules++] = (authfile_rule){role, deny, xstrndup(pat, strlen(pat))};
        npat++;
    }
    if (npat == 0)
        inilines_fail(&x->lines,
                      "%s = '%s': no model pattern after the role (use * for every model)",
                      deny ? "deny" : "grant", value);
    free(copy);
}

/* inih handler: one `name = value` of a section. */
static int
on_key(void *user, const char *section, const char *name, const char *value)
{
    parse_ctx *x = user;
    authfile_user *u;
    const char *why = NULL;

    if (x->lines.err_line != 0)
        return 0;
    if (section[0] == '\0') {
        inilines_fail(&x->lines, "'%s' outside a [user NAME] section", name);
        return 0;
    }
    if ((u = section_user(x, section)) == NULL)
        return 0;
    if (strcmp(name, "key") == 0) {
        if (u->has_key)
            inilines_fail(&x->lines, "user '%s' has two keys (one key per user)", u->name);
        else if (auth_pubkey_parse(value, u->pk, &why) != 0)
            inilines_fail(&x->lines, "key = '%s': %s", value, why);
        u->has_key = 1;
    } else if (strcmp(name, "grant") == 0 || strcmp(name, "deny") == 0) {
        add_rules(x, u, name[0] == 'd', value);
    } else if (strcmp(name, "stats_token") == 0) {
        if (u->has_token)
            inilines_fail(&x->lines, "user '%s' has two stats tokens", u->name);
        else if (auth_token_hash_parse(value, u->token_hash, &why) != 0)
            inilines_fail(&x->lines, "stats_token: %s", why);
        u->has_token = 1;
    } else {
        inilines_fail(&x->lines, "unknown key '%s' (expected key, grant, deny or stats_token)",
                      name);
    }
    return x->lines.err_line == 0;
}

int
authfile_parse(authfile **out, const char *name, const char *buf, size_t len, char **cause)
{
    parse_ctx x;
    inilines *l = &x.lines;
    int rc;

    *out = NULL;
    memset(&x, 0, sizeof(x));
    x.a = xcalloc(1, sizeof(*x.a));
    inilines_init(l, buf, len, LINE_MAX_BYTES, 1);
    rc = ini_parse_stream(inilines_read, l, on_key, &x);
    if (l->err_line == 0 && rc > 0) {
        l->err_line = rc;
        snprintf(l->err, sizeof(l->err), "syntax error (expected 'key = value' or '[user NAME]')");
    }
    for (size_t i = 0; l->err_line == 0 && i < x.a->nusers; i++) {
        if (!x.a->users[i].has_key) {
            l->err_line = l->lineno;
            snprintf(l->err, sizeof(l->err), "user '%s' has no key", x.a->users[i].name);
        }
    }
    if (l->err_line != 0) {
        authfile_destroy(x.a);
        return cause_set(cause, -EINVAL, "%s:%d: %s", name, l->err_line, l->err);
    }
    if (rc < 0) {
        authfile_destroy(x.a);
        return cause_set(cause, -ENOMEM, "%s: out of memory", name);
    }
    *out = x.a;
    return 0;
}

int
authfile_load(authfile **out, const char *path, char **cause)
{
    FILE *fp = fopen(path, "re");
    struct stat sb;
    char *buf;
    size_t n;
    int rc;

    *out = NULL;
    if (fp == NULL)
        return cause_set(cause, -errno, "cannot read %s: %s", path, strerror(errno));
    if (fstat(fileno(fp), &sb) == 0 && (sb.st_mode & (S_IWGRP | S_IWOTH)) != 0)
        log_warn("event=auth_file_writable path=%s mode=%04o (anyone who can write it can add "
                 "users: chmod go-w)",
                 path, (unsigned)(sb.st_mode & 07777));
    buf = xmalloc(AUTHFILE_MAX_FILE_BYTES + 1);
    n = fread(buf, 1, AUTHFILE_MAX_FILE_BYTES + 1, fp);
    if (ferror(fp))
        rc = cause_set(cause, -EIO, "cannot read %s: %s", path, strerror(errno));
    else if (n > AUTHFILE_MAX_FILE_BYTES)
        rc = cause_set(cause, -EFBIG, "%s: larger than %d bytes", path, AUTHFILE_MAX_FILE_BYTES);
    else
        rc = authfile_parse(out, path, buf, n, cause);
    free(buf);
    fclose(fp);
    return rc;
}

void
authfile_destroy(authfile *a)
{
    if (a == NULL)
        return;
    for (size_t i = 0; i < a->nusers; i++) {
        for (size_t j = 0; j < a->users[i].nrules; j++)
            free(a->users[i].rules[j].pattern);
        free(a->users[i].rules);
    }
    free(a->users);
    free(a);
}

const authfile_user *
authfile_find(const authfile *a, const char *name, size_t len)
{
    for (size_t i = 0; a != NULL && i < a->nusers; i++)
        if (strlen(a->users[i].name) == len && memcmp(a->users[i].name, name, len) == 0)
            return &a->users[i];
    return NULL;
}

int
authfile_allows(const authfile_user *u, int role, const char *model, size_t len)
{
    char name[256];
    int granted = 0;

    if (u == NULL || len >= sizeof(name) || memchr(model, '\0', len) != NULL)
        return 0;
    memcpy(name, model, len);
    name[len] = '\0';
    for (size_t i = 0; i < u->nrules; i++) {
        const authfile_rule *r = &u->rules[i];
        if ((r->role == role || r->role == -1) && fnmatch(r->pattern, name, 0) == 0) {
            if (r->deny)
                return 0;
            granted = 1;
        }
    }
    return granted;
}

const authfile_user *
authfile_token_user(const authfile *a, const unsigned char hash[AUTH_TOKEN_HASH_BYTES])
{
    for (size_t i = 0; a != NULL && i < a->nusers; i++)
        if (a->users[i].has_token && auth_tag_equal(a->users[i].token_hash, hash) == 0 &&
            auth_tag_equal(a->users[i].token_hash + 16, hash + 16) == 0)
            return &a->users[i];
    return NULL;
}

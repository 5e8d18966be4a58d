/*
 * check_authfile.c - src/daemon/authfile.c: the auth file's format (every
 * error names its line), grants and denials with fnmatch patterns (deny
 * wins, `*` roles), stats tokens, and the example of docs/SECURITY.md.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/authfile.h"
#include "testutil.h"

#define KEY_A "ed25519:A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="

static authfile *
parse_ok(const char *text)
{
    authfile *a = NULL;
    char *cause = NULL;
    int rc = authfile_parse(&a, "t.ini", text, strlen(text), &cause);
    ck_assert_msg(rc == 0, "refused: %s", cause ? cause : "?");
    free(cause);
    return a;
}

/* The file is refused with a message that contains `want` (and the line). */
static void
parse_bad_len(const char *text, size_t len, const char *want)
{
    authfile *a = NULL;
    char *cause = NULL;
    ck_assert_msg(authfile_parse(&a, "t.ini", text, len, &cause) != 0, "accepted: %s", text);
    ck_assert_ptr_null(a);
    ck_assert_ptr_nonnull(cause);
    ck_assert_msg(strstr(cause, want) != NULL, "'%s' lacks '%s'", cause, want);
    free(cause);
}

static void
parse_bad(const char *text, const char *want)
{
    parse_bad_len(text, strlen(text), want);
}

static int
allows(const authfile *a, const char *user, int role, const char *model)
{
    return authfile_allows(authfile_find(a, user, strlen(user)), role, model, strlen(model));
}

START_TEST(test_authfile_grants_patterns_and_deny_wins)
{
    authfile *a = parse_ok("# users\n"
                           "[user alice]\n"
                           "key = " KEY_A "\n"
                           "grant = push team-a-*\n"
                           "grant = pull * \n"
                           "grant = admin team-a-* team-c-run\n"
                           "deny = admin team-a-prod\n"
                           "[user bob]\n"
                           "key = " KEY_A "\n"
                           "grant = * run-[0-9]\n"
                           "deny = * run-7\n"
                           "[user carol]\n"
                           "key = " KEY_A "\n");
    ck_assert_uint_eq(a->nusers, 3);
    ck_assert_int_eq(allows(a, "alice", AUTHFILE_PUSH, "team-a-run"), 1);
    ck_assert_int_eq(allows(a, "alice", AUTHFILE_PUSH, "team-b-run"), 0);
    ck_assert_int_eq(allows(a, "alice", AUTHFILE_PULL, "team-b-run"), 1);
    ck_assert_int_eq(allows(a, "alice", AUTHFILE_ADMIN, "team-a-run"), 1);
    ck_assert_int_eq(allows(a, "alice", AUTHFILE_ADMIN, "team-a-prod"), 0); /* deny wins */
    ck_assert_int_eq(allows(a, "alice", AUTHFILE_PUSH, "team-a-prod"), 1);  /* other role */
    ck_assert_int_eq(allows(a, "alice", AUTHFILE_ADMIN, "team-c-run"), 1);
    ck_assert_int_eq(allows(a, "alice", AUTHFILE_ADMIN, "team-c-runs"), 0); /* whole name */
    ck_assert_int_eq(allows(a, "bob", AUTHFILE_ADMIN, "run-3"), 1);
    ck_assert_int_eq(allows(a, "bob", AUTHFILE_PULL, "run-7"), 0);
    ck_assert_int_eq(allows(a, "bob", AUTHFILE_PULL, "run-10"), 0);
    ck_assert_int_eq(allows(a, "carol", AUTHFILE_PULL, "run-3"), 0); /* no grant */
    ck_assert_int_eq(allows(a, "dave", AUTHFILE_PULL, "run-3"), 0);  /* no user */
    ck_assert_ptr_null(authfile_find(a, "alic", 4));
    ck_assert_str_eq(authfile_role_name(AUTHFILE_PUSH), "push");
    ck_assert_str_eq(authfile_role_name(AUTHFILE_PULL), "pull");
    ck_assert_str_eq(authfile_role_name(AUTHFILE_ADMIN), "admin");
    authfile_destroy(a);
}
END_TEST

START_TEST(test_authfile_refuses_with_the_line)
{
    parse_bad("key = " KEY_A "\n", "t.ini:1: 'key' outside a [user NAME] section");
    parse_bad("[users alice]\nkey = " KEY_A "\n", "t.ini:2: unknown section [users alice]");
    parse_bad("[user al ice]\nkey = " KEY_A "\n", "t.ini:2: [user al ice]: a user name");
    parse_bad("[user alice]\nkey = ed25519:AAAA\n", "t.ini:2: key = 'ed25519:AAAA': public key");
    parse_bad("[user alice]\nkey = " KEY_A "\nkey = " KEY_A "\n",
              "t.ini:3: user 'alice' has two keys");
    parse_bad("[user alice]\nkey = " KEY_A "\ngrant = write *\n", "t.ini:3: grant = 'write *'");
    parse_bad("[user alice]\nkey = " KEY_A "\ndeny = push\n", "t.ini:3: deny = 'push': no model");
    parse_bad("[user alice]\nkey = " KEY_A "\ngrnat = push *\n", "t.ini:3: unknown key 'grnat'");
    parse_bad("[user alice]\nkey = " KEY_A "\n  grant = push *\n", "t.ini:3: indented line");
    parse_bad("[user alice]\nkey = " KEY_A "\n[user alice]\nkey = " KEY_A "\n",
              "t.ini:4: user 'alice' is defined twice");
    parse_bad("[user alice]\ngrant = pull *\n", "user 'alice' has no key");
    parse_bad("[user alice]\nkey = " KEY_A "\nstats_token = blake2b:12\n", "t.ini:3: stats_token");
    parse_bad("[user alice]\nkey = " KEY_A "\nthis is not ini\n", "t.ini:3: syntax error");
    {
        static const char nul[] = "[user alice]\nkey = " KEY_A "\ngrant = pull a\0b\n";
        parse_bad_len(nul, sizeof(nul) - 1, "t.ini:3: the line contains a NUL");
    }
    {
        char line[1200];
        memset(line, 'x', sizeof(line));
        memcpy(line, "[user alice]\ngrant = pull ", 26);
        line[sizeof(line) - 1] = '\0';
        parse_bad(line, "t.ini:2: the line is longer");
    }
    /* an empty file is a table of no users */
    authfile *a = parse_ok("");
    ck_assert_uint_eq(a->nusers, 0);
    authfile_destroy(a);
}
END_TEST

START_TEST(test_authfile_stats_tokens)
{
    unsigned char h[AUTH_TOKEN_HASH_BYTES];
    authfile *a = parse_ok(
        "[user prom]\nkey = " KEY_A "\n"
        "stats_token = blake2b:6f12bbc907b0048e2534e75bee53ec900aa42aafc3856b1b49fbb5ae23d0cef2\n"
        "[user other]\nkey = " KEY_A "\n");
    ck_assert_int_eq(auth_init(), 0);
    auth_token_hash("secret-token", 12, h);
    ck_assert_ptr_eq(authfile_token_user(a, h), authfile_find(a, "prom", 4));
    auth_token_hash("secret-tokem", 12, h);
    ck_assert_ptr_null(authfile_token_user(a, h));
    authfile_destroy(a);
}
END_TEST

/* The auth file example of docs/SECURITY.md parses and means what the page says. */
START_TEST(test_authfile_security_md_example)
{
    char path[4096], *text = NULL, *start, *end;
    size_t cap = 0;
    FILE *f;
    authfile *a;

    snprintf(path, sizeof(path), "%s/docs/SECURITY.md",
             getenv("top_srcdir") ? getenv("top_srcdir") : ".");
    f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_gt(getdelim(&text, &cap, '\0', f), 0);
    fclose(f);
    start = strstr(text, "```ini\n# team A");
    ck_assert_ptr_nonnull(start);
    start += 7;
    end = strstr(start, "```");
    *end = '\0';
    a = parse_ok(start);
    ck_assert_uint_eq(a->nusers, 3);
    ck_assert_int_eq(allows(a, "alice", AUTHFILE_ADMIN, "team-a-run"), 1);
    ck_assert_int_eq(allows(a, "alice", AUTHFILE_ADMIN, "team-a-prod"), 0);
    ck_assert_int_eq(allows(a, "alice", AUTHFILE_PUSH, "team-b-run"), 0);
    ck_assert_int_eq(allows(a, "alice", AUTHFILE_PULL, "team-b-run"), 1);
    ck_assert_int_eq(allows(a, "eval-svc", AUTHFILE_PULL, "team-b-run"), 1);
    ck_assert_int_eq(allows(a, "eval-svc", AUTHFILE_PUSH, "team-b-run"), 0);
    ck_assert_int_eq(authfile_find(a, "prometheus", 10)->has_token, 1);
    authfile_destroy(a);
    free(text);
}
END_TEST

static Suite *
authfile_suite(void)
{
    Suite *s = suite_create("authfile");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_authfile_grants_patterns_and_deny_wins);
    tcase_add_test(tc, test_authfile_refuses_with_the_line);
    tcase_add_test(tc, test_authfile_stats_tokens);
    tcase_add_test(tc, test_authfile_security_md_example);
    tcase_set_timeout(tc, TU_TCASE_TIMEOUT);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(authfile_suite());
    int failed;
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

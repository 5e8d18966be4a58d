/*
 * check_settings.c - tests for src/daemon/settings.c: the defaults, every key
 * from a file, errors naming the file, line and key (typos with a
 * suggestion, bad values, keys set twice, syntax errors, indented lines,
 * unknown sections, NUL bytes and overlong lines), flags overriding the
 * file, --print-config output read back to the same settings, and the
 * reload diff telling live keys from those needing a restart.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "base/log.h"
#include "daemon/settings.h"

/* Load text over fresh settings; returns the cause (malloc'd) or NULL on success. */
static char *
load(settings *c, const char *text)
{
    char *cause = NULL;

    settings_init(c);
    if (settings_load_string(c, "t.conf", text, strlen(text), &cause) == 0) {
        ck_assert_ptr_null(cause);
        return NULL;
    }
    ck_assert_ptr_nonnull(cause);
    return cause;
}

/* Assert that text is refused with exactly the message want. */
static void
refused(const char *text, const char *want)
{
    settings c;
    char *cause = load(&c, text);

    ck_assert_msg(cause != NULL, "accepted: %s", text);
    ck_assert_str_eq(cause, want);
    free(cause);
    settings_free(&c);
}

/* settings_print into a malloc'd string. */
static char *
printed(const settings *c)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    settings_print(c, f);
    fclose(f);
    return buf;
}

START_TEST(test_settings_defaults)
{
    settings c;
    server_config sc;
    char *p;

    settings_init(&c);
    ck_assert_uint_eq(c.max_message_bytes, 64u << 20);
    ck_assert_uint_eq(c.txn_timeout_ms, 60000);
    ck_assert_uint_eq(c.snapshot_interval_ms, 60000);
    ck_assert_uint_eq(c.snapshot_keep, 2);
    ck_assert_int_eq(c.log_level, LOG_INFO);
    ck_assert_str_eq(c.http, "127.0.0.1:7471");
    ck_assert_int_eq(c.http_is_default, 1);
    settings_server(&c, &sc);
    ck_assert_int_eq(sc.nlisten, 1);
    ck_assert_str_eq(sc.listen[0], "tcp://127.0.0.1:7470");
    ck_assert_ptr_null(sc.state_dir);
    ck_assert_int_eq(c.io_cpu, SERVER_IO_CPU_AUTO);
    ck_assert_int_eq(sc.io_cpu, SERVER_IO_CPU_AUTO);
    ck_assert_uint_eq(c.idle_release_ms, 5000);
    ck_assert_uint_eq(sc.idle_release_ms, 5000);
    ck_assert_uint_eq(c.idle_release_max_ms, 30000);
    ck_assert_uint_eq(sc.idle_release_max_ms, 30000);
    ck_assert_ptr_null(sc.auth_file);
    ck_assert_int_eq(sc.insecure, 0);
    ck_assert_uint_eq(sc.auth_session_lifetime_ms, 3600000);
    ck_assert_uint_eq(sc.max_memory, 0); /* auto: the server reads the machine */
    ck_assert_uint_eq(sc.client_share, 50);
    p = printed(&c);
    ck_assert_str_eq(p, "# emad " PACKAGE_VERSION
                        ": effective settings (defaults, then --config, then flags)\n"
                        "listen = tcp://127.0.0.1:7470\n"
                        "# state-dir = (none: state is kept in memory only)\n"
                        "max-message-bytes = 64M\n"
                        "txn-timeout = 60\n"
                        "snapshot-interval = 60\n"
                        "snapshot-keep = 2\n"
                        "require-snapshot = no\n"
                        "log-level = info\n"
                        "http = 127.0.0.1:7471\n"
                        "io-cpu = auto\n"
                        "idle-release = 5\n"
                        "idle-release-max = 30\n"
                        "# auth-file = (none: requests are not authenticated)\n"
                        "insecure = no\n"
                        "auth-session-lifetime = 3600\n"
                        "max-memory = auto\n"
                        "client-share = 50\n"
                        "# shard-map = (none: not part of a cluster)\n"
                        "# self = (none: not part of a cluster)\n");
    free(p);
    settings_free(&c);
}
END_TEST

START_TEST(test_settings_file_sets_every_key)
{
    settings c;
    char *cause = load(&c, "\xef\xbb\xbf# comment\n"
                           "; another comment\n"
                           "\n"
                           "listen = tcp://127.0.0.1:1\n"
                           "listen = ipc:///tmp/x.sock\n"
                           "[emad]\n"
                           "state-dir = /var/lib/emad\n"
                           "max-message-bytes = 1048577\n"
                           "txn-timeout = 1.5\n"
                           "snapshot-interval = 0\n"
                           "snapshot-keep = 7\n"
                           "require-snapshot = Yes\n"
                           "log-level = debug ; inline comment\n"
                           "http = [::1]:9000\n"
                           "io-cpu = 1\n"
                           "idle-release = 0.5\n"
                           "idle-release-max = 12.5\n");

    ck_assert_msg(cause == NULL, "%s", cause);
    ck_assert_int_eq(c.nlisten, 2);
    ck_assert_str_eq(c.listen[0], "tcp://127.0.0.1:1");
    ck_assert_str_eq(c.listen[1], "ipc:///tmp/x.sock");
    ck_assert_str_eq(c.state_dir, "/var/lib/emad");
    ck_assert_uint_eq(c.max_message_bytes, 1048577);
    ck_assert_uint_eq(c.txn_timeout_ms, 1500);
    ck_assert_uint_eq(c.snapshot_interval_ms, 0);
    ck_assert_uint_eq(c.snapshot_keep, 7);
    ck_assert_int_eq(c.require_snapshot, 1);
    ck_assert_int_eq(c.log_level, LOG_DEBUG);
    ck_assert_str_eq(c.http, "[::1]:9000");
    ck_assert_int_eq(c.http_is_default, 0);
    ck_assert_int_eq(c.io_cpu, 1);
    ck_assert_uint_eq(c.idle_release_ms, 500);
    ck_assert_uint_eq(c.idle_release_max_ms, 12500);
    settings_free(&c);

    cause = load(&c, "http = off\nio-cpu = off\n");
    ck_assert_ptr_null(cause);
    ck_assert_ptr_null(c.http);
    ck_assert_int_eq(c.io_cpu, SERVER_IO_CPU_OFF);
    settings_free(&c);
}
END_TEST

START_TEST(test_settings_errors_name_file_line_and_key)
{
    refused("log-level = info\nsnapshot_interval = 5\n",
            "t.conf:2: unknown key 'snapshot_interval' (did you mean 'snapshot-interval'?)");
    refused("\n\nsnapshot-intervl = 5\n",
            "t.conf:3: unknown key 'snapshot-intervl' (did you mean 'snapshot-interval'?)");
    refused("colour = blue\n", "t.conf:1: unknown key 'colour'");
    refused("log-level = loud\n",
            "t.conf:1: log-level = 'loud': expected error, warn, info or debug");
    refused("# ok\nsnapshot-keep = 0\n",
            "t.conf:2: snapshot-keep = '0': expected a whole number from 1 to 1000");
    refused("max-message-bytes = 2G\n", "t.conf:1: max-message-bytes = '2G': expected a size "
                                        "from 64K to 1G (bytes, or with a K/M/G suffix)");
    refused("txn-timeout = 0\n", "t.conf:1: txn-timeout = '0': expected a positive number of "
                                 "seconds");
    refused("txn-timeout = -1\n", "t.conf:1: txn-timeout = '-1': expected a positive number of "
                                  "seconds");
    refused("snapshot-interval = soon\n",
            "t.conf:1: snapshot-interval = 'soon': expected a number of seconds (0: off)");
    refused("require-snapshot = maybe\n",
            "t.conf:1: require-snapshot = 'maybe': expected yes or no");
    refused("http = 7471\n", "t.conf:1: http = '7471': expected HOST:PORT (or off)");
    refused("http = localhost:http\n",
            "t.conf:1: http = 'localhost:http': the port must be a number from 0 to 65535");
    refused("idle-release = 0\n",
            "t.conf:1: idle-release = '0': expected a positive number of seconds, at most 86400");
    refused("idle-release = 90000\n", "t.conf:1: idle-release = '90000': expected a positive "
                                       "number of seconds, at most 86400");
    refused("idle-release-max = 0\n", "t.conf:1: idle-release-max = '0': expected a positive "
                                       "number of seconds, at most 86400");
    refused("idle-release = soon\n", "t.conf:1: idle-release = 'soon': expected a positive "
                                      "number of seconds, at most 86400");
    refused("io-cpu = fast\n",
            "t.conf:1: io-cpu = 'fast': expected auto, off or a CPU number from 0 to 1023");
    refused("io-cpu = 1024\n",
            "t.conf:1: io-cpu = '1024': expected auto, off or a CPU number from 0 to 1023");
    refused("io-cpu = -1\n",
            "t.conf:1: io-cpu = '-1': expected auto, off or a CPU number from 0 to 1023");
    refused("io-cpu = 99999999999\n", "t.conf:1: io-cpu = '99999999999': expected auto, off or "
                                      "a CPU number from 0 to 1023");
    refused("state-dir =\n", "t.conf:1: state-dir = '': expected a directory (it must not be "
                             "empty)");
    refused("log-level = info\nlog-level = debug\n", "t.conf:2: 'log-level' is set twice");
    refused("log-level = info\nthis is not a setting\n",
            "t.conf:2: syntax error (expected 'key = value', '[section]' or a comment)");
    refused("log-level = info\n  snapshot-keep = 3\n",
            "t.conf:2: indented line: write each 'key = value' at the start of a line");
    refused("[server]\nlog-level = info\n",
            "t.conf:2: unknown section [server] (settings go at the top or under [emad])");
    {
        static const char nul[] = "log-level = info\nhttp = off\0\n";
        settings c;
        char *cause = NULL;

        settings_init(&c);
        ck_assert_int_ne(settings_load_string(&c, "t.conf", nul, sizeof(nul) - 1, &cause), 0);
        ck_assert_str_eq(cause, "t.conf:2: the line contains a NUL byte");
        free(cause);
        settings_free(&c);
    }
}
END_TEST

START_TEST(test_settings_overlong_line_is_refused_with_its_number)
{
    char text[20000];
    settings c;
    char *cause;

    snprintf(text, sizeof(text), "log-level = info\nstate-dir = /");
    memset(text + strlen(text), 'x', 15000);
    strcpy(text + strlen("log-level = info\nstate-dir = /") + 15000, "\n");
    cause = load(&c, text);
    ck_assert_ptr_nonnull(cause);
    ck_assert_msg(strncmp(cause, "t.conf:2: the line is longer than ", 34) == 0, "%s", cause);
    free(cause);
    settings_free(&c);
}
END_TEST

/* A writable argv {"emad", args..., NULL} (free with freeargv); *argc gets its length. */
static char **
mkargv(int *argc, const char *const *args)
{
    int n = 0;
    char **argv;

    while (args[n] != NULL)
        n++;
    argv = calloc((size_t)n + 2, sizeof(*argv));
    argv[0] = strdup("emad");
    for (int i = 0; i < n; i++)
        argv[i + 1] = strdup(args[i]);
    *argc = n + 1;
    return argv;
}

static void
freeargv(char **argv)
{
    for (int i = 0; argv[i] != NULL; i++)
        free(argv[i]);
    free(argv);
}

#define ARGV(argc, ...) mkargv(&(argc), (const char *const[]){__VA_ARGS__, NULL})

START_TEST(test_settings_flags_override_the_file)
{
    char path[] = "/tmp/check_settings_XXXXXX";
    int fd = mkstemp(path);
    const char *text = "listen = tcp://127.0.0.1:1\nlisten = tcp://127.0.0.1:2\n"
                       "log-level = warn\nsnapshot-keep = 5\nhttp = 127.0.0.1:9\n";
    int argc;
    char **argv = ARGV(argc, "--config", path, "--log-level", "debug", "--listen",
                       "tcp://127.0.0.1:3", "--http", "off");
    settings_args a;
    settings c;
    char *cause = NULL;

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    ck_assert_int_eq(settings_parse_args(&a, argc, argv, &cause), 0);
    ck_assert_str_eq(a.config_path, path);
    ck_assert_int_eq(settings_build(&c, &a, &cause), 0);
    ck_assert_int_eq(c.log_level, LOG_DEBUG); /* flag */
    ck_assert_uint_eq(c.snapshot_keep, 5);    /* file */
    ck_assert_int_eq(c.nlisten, 1);           /* flags replace the file's list */
    ck_assert_str_eq(c.listen[0], "tcp://127.0.0.1:3");
    ck_assert_ptr_null(c.http);
    settings_free(&c);
    settings_args_free(&a);
    freeargv(argv);
    unlink(path);
}
END_TEST

/* Build settings from flags; 0 or the error, with its cause checked to hold want. */
static int
build_flags(char **argv, int argc, const char *want)
{
    settings_args a;
    settings c;
    char *cause = NULL;
    int rc;

    ck_assert_int_eq(settings_parse_args(&a, argc, argv, &cause), 0);
    rc = settings_build(&c, &a, &cause);
    if (want != NULL)
        ck_assert_msg(cause != NULL && strstr(cause, want) != NULL, "cause '%s' lacks '%s'",
                      cause ? cause : "", want);
    free(cause);
    settings_free(&c);
    settings_args_free(&a);
    freeargv(argv);
    return rc;
}

START_TEST(test_settings_shard_map_needs_self_in_it)
{
    static const char map[] = "epoch 1; shard 0 tcp://127.0.0.1:5";
    int n;
    char **v;

    v = ARGV(n, "--shard-map", map, "--self", "tcp://127.0.0.1:5");
    ck_assert_int_eq(build_flags(v, n, NULL), 0);
    v = ARGV(n, "--shard-map", map);
    ck_assert_int_ne(build_flags(v, n, "shard-map and self go together"), 0);
    v = ARGV(n, "--self", "tcp://127.0.0.1:5");
    ck_assert_int_ne(build_flags(v, n, "shard-map and self go together"), 0);
    v = ARGV(n, "--shard-map", map, "--self", "tcp://127.0.0.1:6");
    ck_assert_int_ne(
        build_flags(v, n, "self 'tcp://127.0.0.1:6' is not one of the shard map's URLs"), 0);
    v = ARGV(n, "--shard-map", "epoch 0; shard 0 tcp://127.0.0.1:5", "--self", "tcp://127.0.0.1:5");
    ck_assert_int_ne(build_flags(v, n, "shard-map: line 1: 'epoch' needs one number"), 0);
}
END_TEST

START_TEST(test_settings_bad_flags_are_reported_as_flags)
{
    settings_args a;
    char *cause = NULL;
    int nbad, nunknown, nstray, nmissing;
    char **bad = ARGV(nbad, "--snapshot-keep", "0");
    char **unknown = ARGV(nunknown, "--snapshot-kep", "3");
    char **stray = ARGV(nstray, "extra");
    char **missing = ARGV(nmissing, "--log-level");

    ck_assert_int_ne(settings_parse_args(&a, nbad, bad, &cause), 0);
    ck_assert_str_eq(cause, "--snapshot-keep '0': expected a whole number from 1 to 1000");
    ck_assert_int_eq(a.usage_error, 0);
    free(cause);
    cause = NULL;
    settings_args_free(&a);
    ck_assert_int_ne(settings_parse_args(&a, nunknown, unknown, &cause), 0);
    ck_assert_str_eq(cause, "unknown option '--snapshot-kep'");
    ck_assert_int_eq(a.usage_error, 1);
    free(cause);
    cause = NULL;
    settings_args_free(&a);
    ck_assert_int_ne(settings_parse_args(&a, nstray, stray, &cause), 0);
    ck_assert_str_eq(cause, "unexpected argument 'extra'");
    free(cause);
    cause = NULL;
    settings_args_free(&a);
    ck_assert_int_ne(settings_parse_args(&a, nmissing, missing, &cause), 0);
    ck_assert_str_eq(cause, "option '--log-level' needs an argument");
    free(cause);
    cause = NULL;
    settings_args_free(&a);
    freeargv(bad);
    freeargv(unknown);
    freeargv(stray);
    freeargv(missing);
}
END_TEST

START_TEST(test_settings_missing_file_and_require_without_state_dir)
{
    settings_args a;
    settings c;
    char *cause = NULL;
    int nnofile, nreq;
    char **nofile = ARGV(nnofile, "--config", "/nonexistent/emad.conf");
    char **req = ARGV(nreq, "--require-snapshot");

    ck_assert_int_eq(settings_parse_args(&a, nnofile, nofile, &cause), 0);
    ck_assert_int_ne(settings_build(&c, &a, &cause), 0);
    ck_assert_str_eq(cause, "cannot read /nonexistent/emad.conf: No such file or directory");
    free(cause);
    cause = NULL;
    settings_free(&c);
    settings_args_free(&a);
    ck_assert_int_eq(settings_parse_args(&a, nreq, req, &cause), 0);
    ck_assert_int_ne(settings_build(&c, &a, &cause), 0);
    ck_assert_str_eq(cause, "require-snapshot needs state-dir");
    free(cause);
    settings_free(&c);
    settings_args_free(&a);
    freeargv(nofile);
    freeargv(req);
}
END_TEST

START_TEST(test_settings_print_reads_back_the_same)
{
    settings c, d;
    char *cause, *p1, *p2;

    cause = load(&c, "listen = tcp://127.0.0.1:1\nlisten = tcp://127.0.0.1:2\nstate-dir = /s\n"
                     "max-message-bytes = 3M\ntxn-timeout = 0.25\nsnapshot-interval = 90\n"
                     "snapshot-keep = 9\nrequire-snapshot = on\nlog-level = warn\nhttp = off\n");
    ck_assert_ptr_null(cause);
    p1 = printed(&c);
    cause = load(&d, p1);
    ck_assert_msg(cause == NULL, "%s\n%s", cause, p1);
    p2 = printed(&d);
    ck_assert_str_eq(p1, p2);
    ck_assert_ptr_nonnull(strstr(p1, "txn-timeout = 0.25\n"));
    ck_assert_ptr_nonnull(strstr(p1, "max-message-bytes = 3M\n"));
    ck_assert_uint_eq(d.max_message_bytes, 3u << 20);
    free(p1);
    free(p2);
    settings_free(&c);
    settings_free(&d);
}
END_TEST

typedef struct diff_log {
    char text[1024];
} diff_log;

static void
on_diff(void *arg, const char *key, const char *was, const char *now, int live)
{
    diff_log *l = arg;
    size_t n = strlen(l->text);

    snprintf(l->text + n, sizeof(l->text) - n, "%s:%s->%s:%s;", key, was, now,
             live ? "live" : "restart");
}

START_TEST(test_settings_diff_tells_live_keys_from_restart_keys)
{
    settings a, b;
    diff_log l = {""};

    ck_assert_ptr_null(load(&a, "log-level = info\nsnapshot-interval = 60\n"));
    ck_assert_ptr_null(load(&b, "log-level = debug\nsnapshot-interval = 0.5\ntxn-timeout = 30\n"
                                "max-message-bytes = 1M\nlisten = tcp://127.0.0.1:1\n"));
    settings_diff(&a, &b, on_diff, &l);
    ck_assert_str_eq(l.text, "listen:tcp://127.0.0.1:7470->tcp://127.0.0.1:1:restart;"
                             "max-message-bytes:64M->1M:restart;"
                             "txn-timeout:60->30:live;"
                             "snapshot-interval:60->0.5:live;"
                             "log-level:info->debug:live;");
    l.text[0] = '\0';
    settings_diff(&a, &a, on_diff, &l);
    ck_assert_str_eq(l.text, "");
    settings_free(&a);
    settings_free(&b);
}
END_TEST

static Suite *
settings_suite(void)
{
    Suite *s = suite_create("settings");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_settings_defaults);
    tcase_add_test(tc, test_settings_file_sets_every_key);
    tcase_add_test(tc, test_settings_errors_name_file_line_and_key);
    tcase_add_test(tc, test_settings_overlong_line_is_refused_with_its_number);
    tcase_add_test(tc, test_settings_flags_override_the_file);
    tcase_add_test(tc, test_settings_bad_flags_are_reported_as_flags);
    tcase_add_test(tc, test_settings_shard_map_needs_self_in_it);
    tcase_add_test(tc, test_settings_missing_file_and_require_without_state_dir);
    tcase_add_test(tc, test_settings_print_reads_back_the_same);
    tcase_add_test(tc, test_settings_diff_tells_live_keys_from_restart_keys);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(settings_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

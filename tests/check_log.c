/*
 * check_log.c - tests for src/base/log.c: log_str() leaves plain values
 * as they are and quotes and escapes the rest (quotes, backslashes,
 * '=', spaces, C0, DEL, C1 controls, U+2028/U+2029, invalid UTF-8),
 * cuts long values at a character boundary, and log_msg() escapes
 * control characters that reach a line through any other field.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "testutil.h"

/* log_str of s (NUL-terminated) into a static buffer of LOG_STR_MAX bytes. */
static const char *
fmt(const char *s)
{
    static char buf[LOG_STR_MAX];
    return log_str(buf, sizeof(buf), s, (size_t)-1);
}

START_TEST(test_log_str_keeps_plain_values)
{
    ck_assert_str_eq(fmt("run-1_a.b"), "run-1_a.b");
    ck_assert_str_eq(fmt("layer1.0.weight"), "layer1.0.weight");
    ck_assert_str_eq(fmt("a/b:c"), "a/b:c");
}
END_TEST

START_TEST(test_log_str_quotes_what_could_forge_a_field)
{
    /* A quote cannot end the value, so ` code=EMAD_OK` stays inside it. */
    ck_assert_str_eq(fmt("w\" code=EMAD_OK x=\""), "\"w\\\" code=EMAD_OK x=\\\"\"");
    ck_assert_str_eq(fmt("a b"), "\"a b\"");
    ck_assert_str_eq(fmt("k=v"), "\"k=v\"");
    ck_assert_str_eq(fmt("back\\slash"), "\"back\\\\slash\"");
    ck_assert_str_eq(fmt(""), "\"\"");
    ck_assert_str_eq(log_str((char[32]){0}, 32, NULL, (size_t)-1), "\"\"");
    ck_assert_str_eq(log_str((char[32]){0}, 32, "abcdef", 3), "abc");
}
END_TEST

START_TEST(test_log_str_escapes_every_control_character)
{
    ck_assert_str_eq(fmt("a\nb\rc\td"), "\"a\\nb\\rc\\td\"");
    ck_assert_str_eq(fmt("\x1b[31m"), "\"\\x1b[31m\"");
    ck_assert_str_eq(fmt("del\x7f"), "\"del\\x7f\"");
    ck_assert_str_eq(fmt("nel\xc2\x85"), "\"nel\\u0085\""); /* U+0085 */
    ck_assert_str_eq(fmt("csi\xc2\x9b"
                         "2J"),
                     "\"csi\\u009b2J\""); /* U+009B */
    ck_assert_str_eq(fmt("\xe2\x80\xa8|\xe2\x80\xa9"), "\"\\u2028|\\u2029\"");
    /* Valid UTF-8 stays readable; invalid bytes become \xNN. */
    ck_assert_str_eq(fmt("caf\xc3\xa9"), "\"caf\xc3\xa9\"");
    ck_assert_str_eq(fmt("\xff\xc3"), "\"\\xff\\xc3\"");
    ck_assert_str_eq(fmt("\xc0\xaf"), "\"\\xc0\\xaf\"");          /* overlong '/' */
    ck_assert_str_eq(fmt("\xed\xa0\x80"), "\"\\xed\\xa0\\x80\""); /* surrogate */
    ck_assert_str_eq(log_str((char[32]){0}, 32, "a\0b", 3), "\"a\\x00b\"");
}
END_TEST

START_TEST(test_log_str_cuts_long_values_at_a_character)
{
    char buf[16], big[100];

    /* 16 bytes: quote, at most 10 bytes of value, then ..." and NUL. */
    ck_assert_str_eq(log_str(buf, sizeof(buf), "0123456789abcdefghij", (size_t)-1),
                     "\"0123456789...\"");
    /* A 2-byte character that does not fit whole is left out. */
    ck_assert_str_eq(log_str(buf, sizeof(buf), "0123456789\xc3\xa9", (size_t)-1),
                     "\"0123456789...\"");
    ck_assert_str_eq(log_str(buf, sizeof(buf), "012345678\xc3\xa9x", (size_t)-1),
                     "\"012345678...\"");
    /* An escape that does not fit whole is left out too. */
    ck_assert_str_eq(log_str(buf, sizeof(buf), "01234567\n", (size_t)-1), "\"01234567\\n\"");
    ck_assert_str_eq(log_str(buf, sizeof(buf), "012345678\nabc", (size_t)-1), "\"012345678...\"");
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    ck_assert_uint_eq(strlen(log_str(buf, sizeof(buf), big, (size_t)-1)), sizeof(buf) - 1);
    ck_assert_str_eq(LOG_STR(big), big); /* fits in LOG_STR_MAX: as is */
}
END_TEST

/* Run log_msg with `cause="%s"` (which 0) or `tensor=%s` (1) and stderr sent to a file; return
 * what was written (malloc'd). */
static char *
capture(int which, const char *arg)
{
    char path[] = "/tmp/check_log.XXXXXX", *line = malloc(8192);
    int fd = mkstemp(path), saved = dup(2);
    FILE *f;
    size_t n;

    ck_assert_int_ge(fd, 0);
    fflush(stderr);
    dup2(fd, 2);
    if (which == 0)
        log_msg(LOG_ERROR, "event=x cause=\"%s\" end=1", arg);
    else
        log_msg(LOG_ERROR, "event=x tensor=%s end=1", arg);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(fd);
    f = fopen(path, "r");
    n = fread(line, 1, 8191, f);
    line[n] = '\0';
    fclose(f);
    unlink(path);
    return line;
}

START_TEST(test_log_msg_escapes_controls_in_any_field)
{
    char *line = capture(0, "a\nfake=1\xc2\x85\xe2\x80\xa8\x1b[2J\xff");
    const char *nl = strchr(line, '\n');

    /* One line, ending with its own newline, with every control escaped. */
    ck_assert_ptr_nonnull(nl);
    ck_assert_str_eq(nl + 1, "");
    ck_assert_ptr_nonnull(
        strstr(line, " error event=x cause=\"a\\nfake=1\\u0085\\u2028\\x1b[2J\\xff\" end=1\n"));
    free(line);
    line = capture(1, LOG_STR("t\" end=2"));
    ck_assert_ptr_nonnull(strstr(line, " error event=x tensor=\"t\\\" end=2\" end=1\n"));
    free(line);
}
END_TEST

int
main(void)
{
    const TTest *const tests[] = {
        test_log_str_keeps_plain_values,
        test_log_str_quotes_what_could_forge_a_field,
        test_log_str_escapes_every_control_character,
        test_log_str_cuts_long_values_at_a_character,
        test_log_msg_escapes_controls_in_any_field,
        NULL,
    };

    return tu_run_tests("log", tests);
}

/*
 * check_proto.c - tests for src/common/proto.c (op table, msgpack pre-scan
 * that guards the decoder against hostile input) and the two small tables
 * split from it: src/common/errors.c (error names and texts) and
 * src/common/names.c (name rules).
 */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "common/errors.h"
#include "common/names.h"
#include "common/proto.h"
#include "testutil.h"

START_TEST(test_proto_op_names_round_trip)
{
    for (int op = PROTO_OP_INVALID + 1; op < PROTO_OP_COUNT; op++) {
        const char *name = proto_op_name(op);
        ck_assert_ptr_nonnull(name);
        ck_assert_int_eq(proto_op_from_name(name, strlen(name)), op);
    }
    ck_assert_int_eq(proto_op_from_name("pus", 3), PROTO_OP_INVALID);
    ck_assert_int_eq(proto_op_from_name("pushx", 5), PROTO_OP_INVALID);
    ck_assert_ptr_null(proto_op_name(PROTO_OP_COUNT));
}
END_TEST

START_TEST(test_proto_error_names_and_texts)
{
    ck_assert_str_eq(errors_name(EMAD_ESHAPE), "EMAD_ESHAPE");
    ck_assert_str_eq(errors_name(EMAD_EORDER), "EMAD_EORDER");
    ck_assert_ptr_null(errors_name(-5));
    ck_assert_str_eq(errors_text(0), "success");
    ck_assert_str_eq(errors_text(EMAD_ENOMODEL), "no such model");
    /* Negated errno values fall through to strerror. */
    ck_assert_str_eq(errors_text(-ENOENT), strerror(ENOENT));
    ck_assert_str_eq(errors_name(EMAD_ECONFLICT), "EMAD_ECONFLICT");
    ck_assert_str_eq(errors_text(EMAD_EIO), "I/O error");
    ck_assert_int_eq(EMAD_ESHAPE, -1007);
    ck_assert_int_eq(EMAD_EIO, -1106);
    /* Every code of both ranges has a name and its own text (not errno's); none between. */
    for (int c = EMAD_ERRNO_FIRST; c <= EMAD_ERRNO_CLIENT_LAST; c++) {
        int named = c <= EMAD_ERRNO_LAST || c >= EMAD_ERRNO_CLIENT_FIRST;
        ck_assert_int_eq(errors_name(-c) != NULL, named);
        char text[256]; /* a copy: glibc's text of an unknown errno lives until the next call */

        (void)snprintf(text, sizeof(text), "%s", errors_text(-c));
        ck_assert_int_eq(strcmp(text, strerror(c)) != 0, named);
    }
    ck_assert_ptr_null(errors_name(-(EMAD_ERRNO_FIRST - 1)));
    ck_assert_ptr_null(errors_name(-(EMAD_ERRNO_CLIENT_LAST + 1)));
    ck_assert_int_eq(EMAD_ERRNO_LAST, 1031);
    ck_assert_str_eq(errors_name(EMAD_ELAYOUT), "EMAD_ELAYOUT");
    ck_assert_int_eq(EMAD_ELAYOUT, -1031);
    ck_assert_str_eq(errors_name(EMAD_EMOVED), "EMAD_EMOVED");
    ck_assert_str_eq(errors_text(EMAD_ESPLIT), "cluster not at one step");
    ck_assert_str_eq(errors_name(EMAD_EAUTH), "EMAD_EAUTH");
    ck_assert_int_eq(EMAD_EDENIED, -1028);
}
END_TEST

START_TEST(test_proto_model_names)
{
    ck_assert_int_eq(names_check_model("run-1_a.b", 9), 0);
    ck_assert_int_eq(names_check_model("", 0), EMAD_ENAME);
    ck_assert_int_eq(names_check_model(".hidden", 7), EMAD_ENAME);
    ck_assert_int_eq(names_check_model("a/b", 3), EMAD_ENAME);
    ck_assert_int_eq(names_check_model("a b", 3), EMAD_ENAME);
    ck_assert_int_eq(names_check_model("-rf", 3), EMAD_ENAME); /* read as an option */
    ck_assert_int_eq(names_check_model("-", 1), EMAD_ENAME);
    ck_assert_int_eq(names_check_model("a-", 2), 0);
    ck_assert_int_eq(names_check_model("a\"b", 3), EMAD_ENAME);
    char longname[EMAD_MAX_MODEL_NAME_BYTES + 2];
    memset(longname, 'a', sizeof(longname));
    ck_assert_int_eq(names_check_model(longname, EMAD_MAX_MODEL_NAME_BYTES), 0);
    ck_assert_int_eq(names_check_model(longname, EMAD_MAX_MODEL_NAME_BYTES + 1), EMAD_ENAME);
}
END_TEST

START_TEST(test_proto_tensor_names_utf8)
{
    ck_assert_int_eq(names_check_tensor("layer1.0.bn1.running_mean", 25), 0);
    ck_assert_int_eq(names_check_tensor("caf\xc3\xa9", 5), 0);      /* é */
    ck_assert_int_eq(names_check_tensor("\xe2\x82\xac", 3), 0);     /* € */
    ck_assert_int_eq(names_check_tensor("\xf0\x9f\x98\x80", 4), 0); /* emoji */
    ck_assert_int_eq(names_check_tensor("", 0), EMAD_ENAME);
    ck_assert_int_eq(names_check_tensor("a\nb", 3), EMAD_ENAME);         /* control */
    ck_assert_int_eq(names_check_tensor("a\0b", 3), EMAD_ENAME);         /* NUL */
    ck_assert_int_eq(names_check_tensor("\xc3", 1), EMAD_ENAME);         /* truncated */
    ck_assert_int_eq(names_check_tensor("\xc0\xaf", 2), EMAD_ENAME);     /* overlong */
    ck_assert_int_eq(names_check_tensor("\xed\xa0\x80", 3), EMAD_ENAME); /* surrogate */
    ck_assert_int_eq(names_check_tensor("\xff", 1), EMAD_ENAME);
    ck_assert_int_eq(names_check_tensor("a\x7f", 2), EMAD_ENAME); /* DEL */
    /* Quotes, backslashes and '=' are fine in names: logs quote them. */
    ck_assert_int_eq(names_check_tensor("a\" b=\\", 6), 0);
}
END_TEST

/* Every C1 control (U+0080..U+009F) and U+2028/U+2029 are refused; their neighbours are not. */
START_TEST(test_proto_tensor_names_refuse_c1_and_separators)
{
    char s[8];

    for (unsigned cp = 0x80; cp <= 0xa0; cp++) {
        s[0] = 'w';
        s[1] = (char)(0xc0 | (cp >> 6));
        s[2] = (char)(0x80 | (cp & 0x3f));
        ck_assert_msg(names_check_tensor(s, 3) == (cp <= 0x9f ? EMAD_ENAME : 0), "U+%04X", cp);
    }
    for (unsigned cp = 0x2027; cp <= 0x202a; cp++) {
        s[0] = (char)(0xe0 | (cp >> 12));
        s[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        s[2] = (char)(0x80 | (cp & 0x3f));
        s[3] = 'x';
        ck_assert_msg(names_check_tensor(s, 4) == (cp == 0x2028 || cp == 0x2029 ? EMAD_ENAME : 0),
                      "U+%04X", cp);
    }
    ck_assert_int_eq(names_check_tensor("nel\xc2\x85", 5), EMAD_ENAME);
    ck_assert_int_eq(names_check_tensor("csi\xc2\x9b"
                                        "31m",
                                        8),
                     EMAD_ENAME);
    ck_assert_int_eq(names_check_tensor("\xe2\x80\xa8", 3), EMAD_ENAME);
    ck_assert_int_eq(names_check_tensor("\xc2\xa0", 2), 0); /* U+00A0, not a control */
}
END_TEST

START_TEST(test_proto_tensor_names_longest)
{
    char *big = malloc(EMAD_MAX_NAME_BYTES + 1);
    memset(big, 'x', EMAD_MAX_NAME_BYTES + 1);
    ck_assert_int_eq(names_check_tensor(big, EMAD_MAX_NAME_BYTES), 0);
    ck_assert_int_eq(names_check_tensor(big, EMAD_MAX_NAME_BYTES + 1), EMAD_ENAME);
    free(big);
}
END_TEST

/* Pack a small valid request into sbuf. */
static void
pack_request(msgpack_sbuffer *sb)
{
    msgpack_packer pk;
    const char data[5] = {1, 2, 3, 4, 5};

    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    msgpack_pack_str_with_body(&pk, "v", 1);
    msgpack_pack_uint64(&pk, 1);
    msgpack_pack_str_with_body(&pk, "op", 2);
    msgpack_pack_str_with_body(&pk, "push", 4);
    msgpack_pack_str_with_body(&pk, "d", 1);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_bin_with_body(&pk, data, sizeof(data));
    msgpack_pack_double(&pk, 0.5);
    msgpack_pack_int64(&pk, -7);
    msgpack_pack_nil(&pk);
}

START_TEST(test_proto_prescan_accepts_valid_and_rejects_every_truncation)
{
    msgpack_sbuffer sb;
    const char *why;

    pack_request(&sb);
    ck_assert_int_eq(proto_prescan(sb.data, sb.size, &why), 0);
    /* Every proper prefix is truncated msgpack. */
    for (size_t n = 0; n < sb.size; n++)
        ck_assert_int_eq(proto_prescan(sb.data, n, &why), EMAD_EMALFORMED);
    msgpack_sbuffer_destroy(&sb);
}
END_TEST

START_TEST(test_proto_prescan_rejects_trailing_bytes)
{
    msgpack_sbuffer sb;
    const char *why;

    pack_request(&sb);
    msgpack_sbuffer_write(&sb, "\xc0", 1);
    ck_assert_int_eq(proto_prescan(sb.data, sb.size, &why), EMAD_EMALFORMED);
    ck_assert_str_eq(why, "trailing bytes after the msgpack map");
    msgpack_sbuffer_destroy(&sb);
}
END_TEST

START_TEST(test_proto_prescan_rejects_huge_container_counts)
{
    /* array 32 with 2^32-1 elements: msgpack-c would allocate ~96 GB first. */
    const unsigned char arr[] = {0xdd, 0xff, 0xff, 0xff, 0xff, 0x01};
    const unsigned char map[] = {0xdf, 0x7f, 0xff, 0xff, 0xff, 0x01, 0x02};
    const unsigned char bin[] = {0xc6, 0x00, 0x00, 0x10, 0x00, 0x01};
    const char *why;

    ck_assert_int_eq(proto_prescan(arr, sizeof(arr), &why), EMAD_EMALFORMED);
    ck_assert_str_eq(why, "msgpack container count exceeds the message");
    ck_assert_int_eq(proto_prescan(map, sizeof(map), &why), EMAD_EMALFORMED);
    ck_assert_int_eq(proto_prescan(bin, sizeof(bin), &why), EMAD_EMALFORMED);
}
END_TEST

START_TEST(test_proto_prescan_limits_depth)
{
    unsigned char deep[64];
    const char *why;

    /* PROTO_MAX_DEPTH + 1 nested fixarrays of one element, then nil. */
    memset(deep, 0x91, sizeof(deep));
    deep[PROTO_MAX_DEPTH + 1] = 0xc0;
    ck_assert_int_eq(proto_prescan(deep, PROTO_MAX_DEPTH + 2, &why), EMAD_ELIMIT);
    deep[PROTO_MAX_DEPTH] = 0xc0;
    ck_assert_int_eq(proto_prescan(deep, PROTO_MAX_DEPTH + 1, &why), 0);
}
END_TEST

START_TEST(test_proto_prescan_limits_object_count)
{
    /* An array of PROTO_MAX_OBJECTS nils plus its own header is one too many. */
    size_t n = PROTO_MAX_OBJECTS;
    unsigned char *buf = malloc(n + 5);
    const char *why;

    buf[0] = 0xdd;
    buf[1] = (unsigned char)(n >> 24);
    buf[2] = (unsigned char)(n >> 16);
    buf[3] = (unsigned char)(n >> 8);
    buf[4] = (unsigned char)n;
    memset(buf + 5, 0xc0, n);
    ck_assert_int_eq(proto_prescan(buf, n + 5, &why), EMAD_ELIMIT);
    n -= 1;
    buf[1] = (unsigned char)(n >> 24);
    buf[2] = (unsigned char)(n >> 16);
    buf[3] = (unsigned char)(n >> 8);
    buf[4] = (unsigned char)n;
    ck_assert_int_eq(proto_prescan(buf, n + 5, &why), 0);
    free(buf);
}
END_TEST

START_TEST(test_proto_prescan_rejects_reserved_byte_and_empty)
{
    const unsigned char c1[] = {0xc1};
    const char *why;

    ck_assert_int_eq(proto_prescan(c1, 1, &why), EMAD_EMALFORMED);
    ck_assert_int_eq(proto_prescan(c1, 0, &why), EMAD_EMALFORMED);
}
END_TEST

START_TEST(test_proto_prescan_random_bytes_never_crash)
{
    /* Whatever the bytes, prescan answers; if it accepts, msgpack-c agrees. */
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    unsigned char buf[64];

    for (int iter = 0; iter < 200000; iter++) {
        size_t len = (size_t)(iter % 64) + 1;
        const char *why;
        for (size_t i = 0; i < len; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf[i] = (unsigned char)x;
        }
        if (proto_prescan(buf, len, &why) == 0) {
            msgpack_unpacked u;
            size_t off = 0;
            msgpack_unpacked_init(&u);
            ck_assert_int_eq(msgpack_unpack_next(&u, (const char *)buf, len, &off),
                             MSGPACK_UNPACK_SUCCESS);
            ck_assert_uint_eq(off, len);
            msgpack_unpacked_destroy(&u);
        }
    }
}
END_TEST

static Suite *
proto_suite(void)
{
    Suite *s = suite_create("proto");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_proto_op_names_round_trip);
    tcase_add_test(tc, test_proto_error_names_and_texts);
    tcase_add_test(tc, test_proto_model_names);
    tcase_add_test(tc, test_proto_tensor_names_utf8);
    tcase_add_test(tc, test_proto_tensor_names_refuse_c1_and_separators);
    tcase_add_test(tc, test_proto_tensor_names_longest);
    tcase_add_test(tc, test_proto_prescan_accepts_valid_and_rejects_every_truncation);
    tcase_add_test(tc, test_proto_prescan_rejects_trailing_bytes);
    tcase_add_test(tc, test_proto_prescan_rejects_huge_container_counts);
    tcase_add_test(tc, test_proto_prescan_limits_depth);
    tcase_add_test(tc, test_proto_prescan_limits_object_count);
    tcase_add_test(tc, test_proto_prescan_rejects_reserved_byte_and_empty);
    tcase_add_test(tc, test_proto_prescan_random_bytes_never_crash);
    tcase_set_timeout(tc, TU_TCASE_TIMEOUT);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(proto_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

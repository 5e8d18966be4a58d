/*
 * check_strmap.c - tests for src/base/strmap.c: insert, replace, insert
 * unless present, lookup and deletion (backward shift) against a plain
 * array as the reference, with enough keys to force many resizes and long
 * probe clusters.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/strmap.h"
#include "testutil.h"

#define NKEYS 5000

START_TEST(test_strmap_matches_reference_under_random_ops)
{
    static char keys[NKEYS][16];
    static int present[NKEYS];
    strmap *m = strmap_create();
    uint64_t x = 88172645463325252ULL;
    size_t count = 0;

    for (int i = 0; i < NKEYS; i++)
        snprintf(keys[i], sizeof(keys[i]), "k%d", i);
    for (int iter = 0; iter < 100000; iter++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int k = (int)(x % NKEYS);
        size_t len = strlen(keys[k]);
        switch ((x >> 32) % 4) {
        case 0:
            strmap_put(m, keys[k], len, &present[k]);
            count += !present[k];
            present[k] = 1;
            break;
        case 3: /* insert unless there: the value it had, or NULL when added */
            ck_assert_ptr_eq(
                strmap_add_hashed(m, keys[k], len, strmap_hash(keys[k], len), &present[k]),
                present[k] ? &present[k] : NULL);
            ck_assert_ptr_eq(strmap_get_hashed(m, keys[k], len, strmap_hash(keys[k], len)),
                             &present[k]);
            count += !present[k];
            present[k] = 1;
            break;
        case 1:
            ck_assert_ptr_eq(strmap_del(m, keys[k], len), present[k] ? &present[k] : NULL);
            count -= present[k];
            present[k] = 0;
            break;
        default:
            ck_assert_ptr_eq(strmap_get(m, keys[k], len), present[k] ? &present[k] : NULL);
        }
        if (iter % 997 == 0) /* rehash into a larger table now and then */
            strmap_reserve(m, count + (size_t)(x >> 40) % 3000);
    }
    for (int k = 0; k < NKEYS; k++)
        ck_assert_ptr_eq(strmap_get(m, keys[k], strlen(keys[k])), present[k] ? &present[k] : NULL);
    strmap_destroy(m);
}
END_TEST

START_TEST(test_strmap_keys_with_embedded_nul_and_prefixes)
{
    strmap *m = strmap_create();
    int a, b, c;

    strmap_put(m, "ab\0c", 4, &a);
    strmap_put(m, "ab", 2, &b);
    strmap_put(m, "", 0, &c);
    ck_assert_ptr_eq(strmap_get(m, "ab\0c", 4), &a);
    ck_assert_ptr_eq(strmap_get(m, "ab", 2), &b);
    ck_assert_ptr_eq(strmap_get(m, "", 0), &c);
    ck_assert_ptr_null(strmap_get(m, "ab\0", 3));
    strmap_put(m, "ab", 2, &a); /* replace */
    ck_assert_ptr_eq(strmap_get(m, "ab", 2), &a);
    strmap_destroy(m);
}
END_TEST

/* Room made ahead keeps every key; later puts and deletes behave as without it. */
START_TEST(test_strmap_reserve_keeps_keys)
{
    static char keys[NKEYS][16];
    strmap *m = strmap_create();

    for (int i = 0; i < NKEYS; i++)
        snprintf(keys[i], sizeof(keys[i]), "layer.%d.bias", i);
    for (int i = 0; i < 100; i++)
        strmap_put(m, keys[i], strlen(keys[i]), keys[i]);
    strmap_reserve(m, 10);    /* below the count: nothing lost */
    strmap_reserve(m, NKEYS); /* one rehash of the 100 keys */
    for (int i = 0; i < NKEYS; i++)
        ck_assert_ptr_eq(strmap_get(m, keys[i], strlen(keys[i])), i < 100 ? keys[i] : NULL);
    for (int i = 100; i < NKEYS; i++)
        strmap_put(m, keys[i], strlen(keys[i]), keys[i]);
    for (int i = 0; i < NKEYS; i += 2)
        ck_assert_ptr_eq(strmap_del(m, keys[i], strlen(keys[i])), keys[i]);
    for (int i = 0; i < NKEYS; i++)
        ck_assert_ptr_eq(strmap_get(m, keys[i], strlen(keys[i])), i % 2 ? keys[i] : NULL);
    strmap_destroy(m);
}
END_TEST

static Suite *
strmap_suite(void)
{
    Suite *s = suite_create("strmap");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_strmap_matches_reference_under_random_ops);
    tcase_add_test(tc, test_strmap_keys_with_embedded_nul_and_prefixes);
    tcase_add_test(tc, test_strmap_reserve_keeps_keys);
    tcase_set_timeout(tc, TU_TCASE_TIMEOUT);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(strmap_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

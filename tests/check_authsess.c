/*
 * check_authsess.c - src/daemon/authsess.c: pending handshakes (bounded,
 * oldest evicted, expiring), sessions (keys agree with the client's,
 * expiry, lineage), a reload that keeps unchanged users' sessions and drops
 * removed or re-keyed ones, kept replies, and the owner table.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/authsess.h"
#include "testutil.h"

/* A table of users u0..u(n-1) whose seeds are byte i repeated; key of user i in pk[i]. */
static authfile *
users(int n, unsigned char pk[][AUTH_PK_BYTES], unsigned char first_seed)
{
    char text[8192], b64[AUTH_PUBKEY_TEXT_MAX];
    size_t off = 0;
    authfile *a = NULL;
    char *cause = NULL;

    for (int i = 0; i < n; i++) {
        unsigned char seed[32], sk[64];
        memset(seed, first_seed + i, sizeof(seed));
        ck_assert_int_eq(auth_sign_keypair(pk[i], sk, seed), 0);
        ck_assert_int_gt(auth_pubkey_format(b64, sizeof(b64), pk[i]), 0);
        off += (size_t)snprintf(text + off, sizeof(text) - off,
                                "[user u%d]\nkey = %s\ngrant = * *\n", i, b64);
    }
    ck_assert_int_eq(authfile_parse(&a, "t.ini", text, off, &cause), 0);
    return a;
}

START_TEST(test_authsess_handshakes_bounded_and_expiring)
{
    unsigned char pk[1][32], eph[32] = {9};
    authsess_table *t;
    uint64_t first, last = 0;

    ck_assert_int_eq(auth_init(), 0);
    t = authsess_create(users(1, pk, 1), 3600000);
    first = authsess_begin(t, "u0", 2, eph, 1000)->hs;
    for (int i = 0; i < AUTHSESS_MAX_HANDSHAKES; i++)
        last = authsess_begin(t, "ghost", 5, eph, 1000)->hs;
    ck_assert_ptr_null(authsess_take_hs(t, first, 1000)); /* evicted: the oldest */
    authsess_hs *h = authsess_take_hs(t, last, 1000);
    ck_assert_ptr_nonnull(h);
    ck_assert_int_eq(h->known, 0);
    ck_assert_str_eq(h->user, "ghost");
    authsess_hs_free(h);
    ck_assert_ptr_null(authsess_take_hs(t, last, 1000)); /* taken once */
    first = authsess_begin(t, "u0", 2, eph, 5000)->hs;
    ck_assert_ptr_null(authsess_take_hs(t, first, 5000 + AUTHSESS_HANDSHAKE_MS + 1));
    first = authsess_begin(t, "u0", 2, eph, 5000)->hs;
    (void)authsess_expire(t, 5000 + AUTHSESS_HANDSHAKE_MS + 1);
    ck_assert_ptr_null(authsess_take_hs(t, first, 5000));
    authsess_destroy(t);
}
END_TEST

/* Open a session of user (index i) at now; the client's keys go to crx/ctx. */
static authsess *
open_session(authsess_table *t, const char *user, uint64_t now, const authsess *renew,
             unsigned char crx[32], unsigned char ctx[32])
{
    unsigned char cpk[32], csk[32];
    authsess_hs *h;
    authsess *s;

    auth_eph_keypair(cpk, csk);
    h = authsess_take_hs(t, authsess_begin(t, user, strlen(user), cpk, now)->hs, now);
    ck_assert_ptr_nonnull(h);
    ck_assert_int_eq(auth_client_keys(crx, ctx, cpk, csk, h->server_eph), 0);
    s = authsess_open(t, h, renew, now);
    authsess_hs_free(h);
    return s;
}

START_TEST(test_authsess_sessions_keys_expiry_lineage)
{
    unsigned char pk[2][32], crx[32], ctx[32], rx2[32], tx2[32];
    authsess_table *t;
    authsess *s, *s2;

    ck_assert_int_eq(auth_init(), 0);
    t = authsess_create(users(2, pk, 1), 10000);
    s = open_session(t, "u0", 1000, NULL, crx, ctx);
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_ne(s->id, 0);
    ck_assert_mem_eq(s->rx, ctx, 32); /* requests: client tx = daemon rx */
    ck_assert_mem_eq(s->tx, crx, 32);
    ck_assert_uint_eq(s->lineage, s->id);
    ck_assert_ptr_eq(authsess_find(t, s->id), s);
    s2 = open_session(t, "u0", 2000, s, rx2, tx2);
    ck_assert_uint_eq(s2->lineage, s->id);
    ck_assert_mem_ne(s2->rx, s->rx, 32);
    ck_assert_int_eq(authsess_expired(s, 10999), 0);
    ck_assert_int_eq(authsess_expired(s, 11000), 1);
    {
        uint64_t id = s->id;
        ck_assert_uint_eq(authsess_expire(t, 11000), 0); /* kept to say `expired` */
        ck_assert_ptr_eq(authsess_find(t, id), s);
        ck_assert_uint_eq(authsess_expire(t, 11000 + AUTHSESS_EXPIRED_KEEP_MS), 1);
        ck_assert_ptr_null(authsess_find(t, id));
    }
    ck_assert_ptr_eq(authsess_find(t, s2->id), s2); /* lives until 12000 */
    ck_assert_uint_eq(authsess_count(t), 1);
    /* replies: small ones kept, large ones only noted */
    authsess_keep_reply(s2, "abc", 3);
    ck_assert_int_eq(s2->reply_state, AUTHSESS_REPLY_KEPT);
    ck_assert_mem_eq(s2->reply, "abc", 3);
    {
        char *big = calloc(1, AUTHSESS_KEEP_REPLY_MAX + 1);
        authsess_keep_reply(s2, big, AUTHSESS_KEEP_REPLY_MAX + 1);
        free(big);
    }
    ck_assert_int_eq(s2->reply_state, AUTHSESS_REPLY_GONE);
    ck_assert_ptr_null(s2->reply);
    /* an unknown user's handshake opens nothing */
    {
        unsigned char cpk[32], csk[32];
        auth_eph_keypair(cpk, csk);
        authsess_hs *h = authsess_take_hs(t, authsess_begin(t, "zz", 2, cpk, 1)->hs, 1);
        ck_assert_ptr_null(authsess_open(t, h, NULL, 1));
        authsess_hs_free(h);
    }
    authsess_destroy(t);
}
END_TEST

START_TEST(test_authsess_reload_keeps_unchanged_users)
{
    unsigned char pk[3][32], pk2[3][32], rx[32], tx[32];
    authsess_table *t;
    authsess *a, *b, *c;
    uint64_t ida, idb, idc;
    authfile *next;

    ck_assert_int_eq(auth_init(), 0);
    t = authsess_create(users(3, pk, 1), 3600000);
    a = open_session(t, "u0", 1, NULL, rx, tx);
    b = open_session(t, "u1", 1, NULL, rx, tx);
    c = open_session(t, "u2", 1, NULL, rx, tx);
    ida = a->id, idb = b->id, idc = c->id;
    /* the new file: u0 as it was, u1 with another key, u2 gone */
    {
        char text[2048], k0[AUTH_PUBKEY_TEXT_MAX], k1[AUTH_PUBKEY_TEXT_MAX];
        char *cause = NULL;
        unsigned char seed[32], sk[64];
        memset(seed, 77, 32);
        ck_assert_int_eq(auth_sign_keypair(pk2[1], sk, seed), 0);
        ck_assert_int_gt(auth_pubkey_format(k0, sizeof(k0), pk[0]), 0);
        ck_assert_int_gt(auth_pubkey_format(k1, sizeof(k1), pk2[1]), 0);
        snprintf(text, sizeof(text), "[user u0]\nkey = %s\ngrant = pull x\n[user u1]\nkey = %s\n",
                 k0, k1);
        ck_assert_int_eq(authfile_parse(&next, "t.ini", text, strlen(text), &cause), 0);
    }
    ck_assert_uint_eq(authsess_reload(t, next), 2);
    ck_assert_ptr_nonnull(authsess_find(t, ida));
    ck_assert_ptr_null(authsess_find(t, idb));
    ck_assert_ptr_null(authsess_find(t, idc));
    ck_assert_uint_eq(authsess_users(t)->nusers, 2);
    authsess_destroy(t);
}
END_TEST

/* A user's sessions beyond AUTHSESS_MAX_PER_USER push out that user's oldest, not others'. */
START_TEST(test_authsess_per_user_cap)
{
    unsigned char pk[2][32], rx[32], tx[32];
    authsess_table *t;
    uint64_t first, other;

    ck_assert_int_eq(auth_init(), 0);
    t = authsess_create(users(2, pk, 1), 3600000);
    other = open_session(t, "u1", 1, NULL, rx, tx)->id;
    first = open_session(t, "u0", 1, NULL, rx, tx)->id;
    for (int i = 1; i < AUTHSESS_MAX_PER_USER; i++)
        ck_assert_ptr_nonnull(open_session(t, "u0", 2, NULL, rx, tx));
    ck_assert_ptr_nonnull(authsess_find(t, first));
    ck_assert_ptr_nonnull(open_session(t, "u0", 3, NULL, rx, tx));
    ck_assert_ptr_null(authsess_find(t, first));
    ck_assert_ptr_nonnull(authsess_find(t, other));
    ck_assert_uint_eq(authsess_count(t), AUTHSESS_MAX_PER_USER + 1);
    authsess_destroy(t);
}
END_TEST

static int
sweep_keep_odd(void *arg, int kind, uint64_t id, uint64_t at_ms)
{
    (void)arg;
    (void)kind;
    (void)at_ms;
    return id % 2 == 1;
}

START_TEST(test_authsess_owners)
{
    unsigned char pk[1][32];
    authsess_table *t;
    const char *model = NULL;

    ck_assert_int_eq(auth_init(), 0);
    t = authsess_create(users(1, pk, 1), 3600000);
    for (uint64_t id = 1; id <= 100; id++)
        authsess_own(t, 't', id, "u0", "m", 5);
    authsess_own(t, 's', 7, "u1", "pulled", 5);
    ck_assert_str_eq(authsess_owner(t, 't', 7, &model), "u0");
    ck_assert_str_eq(model, "m");
    ck_assert_str_eq(authsess_owner(t, 's', 7, &model), "u1");
    ck_assert_str_eq(model, "pulled");
    ck_assert_ptr_null(authsess_owner(t, 's', 8, NULL));
    authsess_disown(t, 't', 7);
    ck_assert_ptr_null(authsess_owner(t, 't', 7, NULL));
    authsess_sweep_owners(t, sweep_keep_odd, NULL);
    ck_assert_ptr_null(authsess_owner(t, 't', 8, NULL));
    ck_assert_str_eq(authsess_owner(t, 't', 9, NULL), "u0");
    ck_assert_str_eq(authsess_owner(t, 's', 7, NULL), "u1");
    ck_assert_uint_ne(authsess_part_id("m", 1, 5, 0), authsess_part_id("m", 1, 5, 1));
    ck_assert_uint_ne(authsess_part_id("m", 1, 5, 0), authsess_part_id("m", 1, 6, 0));
    ck_assert_uint_ne(authsess_part_id("m", 1, 5, 0), authsess_part_id("n", 1, 5, 0));
    ck_assert_uint_eq(authsess_part_id("m", 1, 5, 0), authsess_part_id("m", 1, 5, 0));
    authsess_destroy(t);
}
END_TEST

static Suite *
authsess_suite(void)
{
    Suite *s = suite_create("authsess");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_authsess_handshakes_bounded_and_expiring);
    tcase_add_test(tc, test_authsess_sessions_keys_expiry_lineage);
    tcase_add_test(tc, test_authsess_reload_keeps_unchanged_users);
    tcase_add_test(tc, test_authsess_owners);
    tcase_add_test(tc, test_authsess_per_user_cap);
    tcase_set_timeout(tc, TU_TCASE_TIMEOUT);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(authsess_suite());
    int failed;
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

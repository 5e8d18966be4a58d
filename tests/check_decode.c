/*
 * check_decode.c - tests for src/common/decode.c, the one-pass request
 * decoder, against a second implementation: msgpack-c's own
 * msgpack_unpack_next() guarded by proto_prescan(). Random messages use
 * every msgpack format (non-minimal integer widths, float 32 and 64, ext
 * and fixext, str and bin of each length width, nested arrays and maps);
 * each one, every prefix of it and random one-byte changes of it must get
 * the same verdict and message as the pre-scan, and when accepted the same
 * objects as msgpack-c, pointing at the same bytes.
 */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "common/decode.h"
#include "common/proto.h"
#include "testutil.h"

/* A growing byte buffer for generated messages. */
typedef struct gbuf {
    unsigned char *p;
    size_t len, cap;
} gbuf;

static void
put(gbuf *b, const void *src, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        ck_assert_ptr_nonnull(b->p);
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void
put_byte(gbuf *b, unsigned c)
{
    unsigned char x = (unsigned char)c;

    put(b, &x, 1);
}

/* n-byte big-endian v. */
static void
put_be(gbuf *b, uint64_t v, size_t n)
{
    for (size_t i = n; i-- > 0;)
        put_byte(b, (unsigned)(v >> (8 * i)) & 0xff);
}

static uint64_t
rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* A header for a str (0), bin (1) or ext (2) of n bytes in a random valid width, then bytes. */
static void
gen_bytes(gbuf *b, uint64_t *s, int kind, size_t n)
{
    int w = (int)(rnd(s) % 3); /* 8, 16, 32-bit length */

    if (kind == 0 && n < 32 && rnd(s) % 2)
        put_byte(b, 0xa0 | (unsigned)n);
    else if (kind == 2 && (n == 1 || n == 2 || n == 4 || n == 8 || n == 16) && rnd(s) % 2)
        put_byte(b, 0xd4 + (n == 1 ? 0 : n == 2 ? 1 : n == 4 ? 2 : n == 8 ? 3 : 4));
    else {
        static const unsigned base[3] = {0xd9, 0xc4, 0xc7};
        if (n > 255 && w == 0)
            w = 1;
        put_byte(b, base[kind] + (unsigned)w);
        put_be(b, n, (size_t)1 << w);
    }
    if (kind == 2)
        put_byte(b, (unsigned)(rnd(s) & 0xff)); /* ext type */
    for (size_t i = 0; i < n; i++)
        put_byte(b, (unsigned)(rnd(s) & 0xff));
}

/* Objects a generated message may still have: keeps each one to a few hundred. */
static int budget;

/* One random object of at most depth levels. */
static void
gen(gbuf *b, uint64_t *s, int depth)
{
    unsigned kind = (unsigned)(rnd(s) % (depth > 0 && budget > 0 ? 12 : 9));
    uint64_t v = rnd(s);

    switch (kind) {
    case 0: /* fixints, nil, bools */
        put_byte(b, (const unsigned[]){0x00, 0x7f, 0x2a, 0xe0, 0xff, 0xc0, 0xc2, 0xc3}[v % 8]);
        break;
    case 1: /* uint 8..64 */
        put_byte(b, 0xcc + (unsigned)(v % 4));
        put_be(b, rnd(s), (size_t)1 << (v % 4));
        break;
    case 2: /* int 8..64, positive or negative */
        put_byte(b, 0xd0 + (unsigned)(v % 4));
        put_be(b, rnd(s), (size_t)1 << (v % 4));
        break;
    case 3: /* float 32 and 64 (any bits, NaN included) */
        put_byte(b, v % 2 ? 0xca : 0xcb);
        put_be(b, rnd(s), v % 2 ? 4 : 8);
        break;
    case 4:
    case 5:
    case 6: /* str, bin, ext */
        gen_bytes(b, s, (int)kind - 4, (size_t)(v % 40));
        break;
    case 7: /* a larger bin now and then */
        gen_bytes(b, s, 1, (size_t)(v % 700));
        break;
    case 8: /* empty containers in every width */
        put_byte(b, (const unsigned[]){0x90, 0x80, 0xdc, 0xde}[v % 4]);
        if (v % 4 >= 2)
            put_be(b, 0, 2);
        break;
    default: { /* array or map of up to 20 entries, fix or 16/32-bit count */
        int map = kind == 9;
        size_t n = (size_t)(rnd(s) % 21), w = (size_t)(rnd(s) % 3);
        budget -= (int)n;
        if (w == 0 && n < 16)
            put_byte(b, (map ? 0x80 : 0x90) | (unsigned)n);
        else {
            put_byte(b, (map ? 0xde : 0xdc) + (w == 2 ? 1 : 0));
            put_be(b, n, w == 2 ? 4 : 2);
        }
        for (size_t i = 0; i < n * (map ? 2 : 1); i++)
            gen(b, s, depth - 1);
    }
    }
}

/* Are two decoded objects the same, str/bin/ext payloads at the same address (if not empty)? */
static int
same(const msgpack_object *a, const msgpack_object *b)
{
    if (a->type != b->type)
        return 0;
    switch (a->type) {
    case MSGPACK_OBJECT_NIL:
        return 1;
    case MSGPACK_OBJECT_BOOLEAN:
        return a->via.boolean == b->via.boolean;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return a->via.u64 == b->via.u64;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return a->via.i64 == b->via.i64;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return memcmp(&a->via.f64, &b->via.f64, sizeof(double)) == 0;
    case MSGPACK_OBJECT_STR:
        return a->via.str.size == b->via.str.size &&
               (a->via.str.size == 0 || a->via.str.ptr == b->via.str.ptr);
    case MSGPACK_OBJECT_BIN:
        return a->via.bin.size == b->via.bin.size &&
               (a->via.bin.size == 0 || a->via.bin.ptr == b->via.bin.ptr);
    case MSGPACK_OBJECT_EXT:
        return a->via.ext.type == b->via.ext.type && a->via.ext.size == b->via.ext.size &&
               a->via.ext.ptr == b->via.ext.ptr;
    case MSGPACK_OBJECT_ARRAY:
        if (a->via.array.size != b->via.array.size)
            return 0;
        for (uint32_t i = 0; i < a->via.array.size; i++)
            if (!same(&a->via.array.ptr[i], &b->via.array.ptr[i]))
                return 0;
        return 1;
    case MSGPACK_OBJECT_MAP:
        if (a->via.map.size != b->via.map.size)
            return 0;
        for (uint32_t i = 0; i < a->via.map.size; i++)
            if (!same(&a->via.map.ptr[i].key, &b->via.map.ptr[i].key) ||
                !same(&a->via.map.ptr[i].val, &b->via.map.ptr[i].val))
                return 0;
        return 1;
    default:
        return 0;
    }
}

/*
 * Decode buf[0..len) both ways (decode_message into arena a, and
 * proto_prescan + msgpack_unpack_next) and check they agree. Returns 1 if
 * the message was accepted.
 */
static int
agree(decode_arena *a, const unsigned char *buf, size_t len)
{
    const char *why_pre = NULL, *why_dec = NULL;
    int pre = proto_prescan(buf, len, &why_pre);
    msgpack_object root;
    int dec = decode_message(a, buf, len, &root, &why_dec);
    msgpack_unpacked u;
    size_t off = 0;

    ck_assert_int_eq(dec, pre);
    if (pre != 0) {
        ck_assert_str_eq(why_dec, why_pre);
        return 0;
    }
    ck_assert_ptr_null(why_dec);
    msgpack_unpacked_init(&u);
    /* What msgpack-c decodes, all of the message, is what decode_message() gave. */
    ck_assert(msgpack_unpack_next(&u, (const char *)buf, len, &off) == MSGPACK_UNPACK_SUCCESS &&
              off == len && same(&root, &u.data));
    msgpack_unpacked_destroy(&u);
    return 1;
}

START_TEST(test_decode_matches_msgpack_c)
{
    decode_arena a;
    uint64_t s = 0x9e3779b97f4a7c15ULL;
    int accepted = 0;

    decode_arena_init(&a);
    for (int m = 0; m < 3000; m++) {
        gbuf b = {0};
        budget = 400;
        gen(&b, &s, 1 + m % 6);
        accepted += agree(&a, b.p, b.len);
        free(b.p);
    }
    ck_assert_int_eq(accepted, 3000); /* all generated messages are valid */
    decode_arena_fini(&a);
}
END_TEST

START_TEST(test_decode_errors_match_prescan)
{
    decode_arena a;
    uint64_t s = 12345;
    int accepted = 0, refused = 0;

    decode_arena_init(&a);
    for (int m = 0; m < 300; m++) {
        gbuf b = {0};
        budget = 60;
        gen(&b, &s, 1 + m % 5);
        /* Every prefix: truncated messages and, for the empty one, "empty message". */
        for (size_t n = 0; n < b.len; n++) {
            int ok = agree(&a, b.p, n);
            accepted += ok;
            refused += !ok;
        }
        /* One changed byte (type bytes, lengths and counts among them), and a byte too many. */
        for (int k = 0; k < 40 && b.len > 0; k++) {
            size_t at = (size_t)(rnd(&s) % b.len);
            unsigned char old = b.p[at];
            b.p[at] = (unsigned char)(rnd(&s) & 0xff);
            if (agree(&a, b.p, b.len))
                accepted++;
            else
                refused++;
            b.p[at] = old;
        }
        put_byte(&b, 0xc0);
        ck_assert_int_eq(agree(&a, b.p, b.len), 0);
        free(b.p);
    }
    ck_assert_int_gt(refused, 1000);
    ck_assert_int_gt(accepted, 100);
    decode_arena_fini(&a);
}
END_TEST

START_TEST(test_decode_refuses_bombs_and_depth)
{
    static const unsigned char bomb[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    static const unsigned char mapbomb[] = {0x81, 0xa1, 'k', 0xdf, 0x7f, 0xff, 0xff, 0xff, 0x01};
    unsigned char deep[16];
    const char *why;
    decode_arena a;
    msgpack_object o;

    decode_arena_init(&a);
    ck_assert_int_eq(decode_message(&a, bomb, sizeof(bomb), &o, &why), EMAD_EMALFORMED);
    ck_assert_str_eq(why, "msgpack container count exceeds the message");
    ck_assert_int_eq(decode_message(&a, mapbomb, sizeof(mapbomb), &o, &why), EMAD_EMALFORMED);
    ck_assert_str_eq(why, "msgpack container count exceeds the message");
    memset(deep, 0x91, sizeof(deep)); /* [[[[...]]]] nested deeper than PROTO_MAX_DEPTH */
    deep[sizeof(deep) - 1] = 0x01;
    ck_assert_int_eq(decode_message(&a, deep, sizeof(deep), &o, &why), EMAD_ELIMIT);
    ck_assert_str_eq(why, "msgpack nesting too deep");
    ck_assert_int_eq(decode_message(&a, deep, 0, &o, &why), EMAD_EMALFORMED);
    ck_assert_str_eq(why, "empty message");
    ck_assert_int_eq(decode_message(&a, (const unsigned char[]){0xc1}, 1, &o, &why),
                     EMAD_EMALFORMED);
    ck_assert_str_eq(why, "invalid msgpack type byte");
    /* Within the depth limit it decodes. */
    ck_assert_int_eq(decode_message(&a, deep + sizeof(deep) - 1 - PROTO_MAX_DEPTH,
                                    PROTO_MAX_DEPTH + 1, &o, &why),
                     0);
    ck_assert_int_eq(o.type, MSGPACK_OBJECT_ARRAY);
    decode_arena_fini(&a);
}
END_TEST

/*
 * A message of more objects than one arena chunk holds, then small ones:
 * the arena keeps one chunk of the size the large one needed, and objects
 * of each message stay valid until the next decode.
 */
START_TEST(test_decode_arena_reuse)
{
    decode_arena a;
    gbuf big = {0};
    uint64_t s = 7;
    msgpack_object o;
    const char *why;

    decode_arena_init(&a);
    put_byte(&big, 0xdd);
    put_be(&big, 20000, 4);
    for (int i = 0; i < 20000; i++) { /* [{"k": i}, ...]: 48 bytes of map per element */
        put_byte(&big, 0x81);
        put_byte(&big, 0xa1);
        put_byte(&big, 'k');
        put_byte(&big, 0xce);
        put_be(&big, (uint64_t)i, 4);
    }
    for (int round = 0; round < 3; round++) {
        ck_assert_int_eq(decode_message(&a, big.p, big.len, &o, &why), 0);
        ck_assert_uint_eq(o.via.array.size, 20000);
        for (uint32_t i = 0; i < o.via.array.size; i++)
            ck_assert_uint_eq(o.via.array.ptr[i].via.map.ptr[0].val.via.u64, i);
        if (round > 0) /* from the second round on, one chunk holds it */
            ck_assert_int_eq(decode_arena_chunks(&a), 1);
        for (int m = 0; m < 20; m++) {
            gbuf b = {0};
            budget = 100;
            gen(&b, &s, 3);
            ck_assert_int_eq(agree(&a, b.p, b.len), 1);
            free(b.p);
        }
    }
    free(big.p);
    decode_arena_fini(&a);
    ck_assert_int_eq(decode_arena_chunks(&a), 0);
}
END_TEST

int
main(void)
{
    const TTest *const tests[] = {
        test_decode_matches_msgpack_c,
        test_decode_errors_match_prescan,
        test_decode_refuses_bombs_and_depth,
        test_decode_arena_reuse,
        NULL,
    };

    return tu_run_tests("decode", tests);
}

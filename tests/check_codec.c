/*
 * check_codec.c - tests for src/common/codec.c, the tensor map of the wire
 * protocol: computed sizes equal the packed bytes for many shapes, name
 * and data lengths; packing then decoding gives the tensor back (push
 * tensor maps and pull tensor descriptions); and every malformed tensor map
 * is rejected with the code and message the daemon has always sent.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "common/codec.h"
#include "common/dtype.h"
#include "common/proto.h"

/* Start packing into a fresh buffer sb. */
static void
pack_begin(msgpack_sbuffer *sb, msgpack_packer *pk)
{
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(pk, sb, msgpack_sbuffer_write);
}

/* Unpack the one object packed into sb (in place: it points into sb). */
static const msgpack_object *
unpack(const msgpack_sbuffer *sb, msgpack_unpacked *u)
{
    size_t off = 0;

    msgpack_unpacked_init(u);
    ck_assert_int_eq(msgpack_unpack_next(u, sb->data, sb->size, &off), MSGPACK_UNPACK_SUCCESS);
    ck_assert_uint_eq(off, sb->size);
    return &u->data;
}

/* Free what pack_begin() and unpack() made. */
static void
pack_end(msgpack_sbuffer *sb, msgpack_unpacked *u)
{
    msgpack_unpacked_destroy(u);
    msgpack_sbuffer_destroy(sb);
}

/* Bytes msgpack-c writes for t's push tensor map. */
static size_t
packed_len(const codec_tensor *t)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    size_t n;

    pack_begin(&sb, &pk);
    codec_tensor_pack(&pk, t);
    n = sb.size;
    msgpack_sbuffer_destroy(&sb);
    return n;
}

/* Pack "key": str of n bytes with msgpack-c's packers. */
static void
ref_kv_str(msgpack_packer *pk, const char *key, const char *v, size_t n)
{
    proto_pack_str(pk, key);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, v, n);
}

/*
 * A second implementation of the push tensor map with msgpack-c's own
 * packers, entry by entry in the order of docs/PROTOCOL.md:
 * codec_tensor_pack() must write the same bytes.
 */
static void
ref_pack(msgpack_packer *pk, const codec_tensor *t)
{
    msgpack_pack_map(pk, 5 + (t->has_offset != 0) + (t->count > 0) +
                             (t->as_dtype != EMAD_DTYPE_INVALID));
    if (t->as_dtype != EMAD_DTYPE_INVALID)
        ref_kv_str(pk, PROTO_KEY_AS_DTYPE, dtype_name(t->as_dtype),
                   strlen(dtype_name(t->as_dtype)));
    ref_kv_str(pk, PROTO_KEY_NAME, t->name, t->name_len);
    ref_kv_str(pk, PROTO_KEY_KIND, t->kind == EMAD_PARAM ? "param" : "buffer",
               t->kind == EMAD_PARAM ? 5 : 6);
    ref_kv_str(pk, PROTO_KEY_DTYPE, dtype_name(t->dtype), strlen(dtype_name(t->dtype)));
    proto_pack_str(pk, PROTO_KEY_SHAPE);
    msgpack_pack_array(pk, t->ndim);
    for (uint32_t d = 0; d < t->ndim; d++)
        msgpack_pack_uint64(pk, t->shape[d]);
    proto_pack_str(pk, PROTO_KEY_DATA);
    msgpack_pack_bin(pk, t->len);
    msgpack_pack_bin_body(pk, t->data, t->len);
    if (t->has_offset)
        proto_pack_kv_u64(pk, PROTO_KEY_OFFSET, t->offset);
    if (t->count > 0) {
        proto_pack_str(pk, PROTO_KEY_SLICE);
        msgpack_pack_array(pk, 2);
        msgpack_pack_uint64(pk, t->start);
        msgpack_pack_uint64(pk, t->count);
    }
}

/* codec_tensor_pack(t) writes exactly the bytes of ref_pack(t). */
static void
assert_packs_like_msgpack_c(const codec_tensor *t)
{
    msgpack_sbuffer a, b;
    msgpack_packer pa, pb;

    pack_begin(&a, &pa);
    pack_begin(&b, &pb);
    codec_tensor_pack(&pa, t);
    ref_pack(&pb, t);
    ck_assert_uint_eq(a.size, b.size);
    ck_assert_int_eq(memcmp(a.data, b.data, a.size), 0);
    msgpack_sbuffer_destroy(&a);
    msgpack_sbuffer_destroy(&b);
}

/* A valid tensor: name of name_len bytes 'a'..'z', F32 [2, 3], len data bytes. */
static codec_tensor
sample(char *name, size_t name_len, const void *data, uint64_t len)
{
    codec_tensor t = {0};

    for (size_t i = 0; i < name_len; i++)
        name[i] = (char)('a' + i % 26);
    t.name = name;
    t.name_len = name_len;
    t.kind = EMAD_PARAM;
    t.dtype = EMAD_F32;
    t.ndim = 2;
    t.shape[0] = 2;
    t.shape[1] = 3;
    t.data = data;
    t.len = len;
    t.as_dtype = EMAD_DTYPE_INVALID;
    return t;
}

START_TEST(test_codec_size_equals_packed_bytes)
{
    static const size_t names[] = {1, 2, 31, 32, 100, 255, 256, 1024, 65535, 65536, 70000};
    static const uint64_t lens[] = {0, 1, 255, 256, 65535, 65536, 100000};
    static const uint64_t vals[] = {
        0, 1, 127, 128, 255, 256, 65535, 65536, UINT32_MAX, 1ULL + UINT32_MAX, UINT64_MAX};
    const size_t nv = sizeof(vals) / sizeof(vals[0]);
    char *name = malloc(70000), *data = calloc(1, 100000);
    size_t checked = 0;

    ck_assert_ptr_nonnull(name);
    ck_assert_ptr_nonnull(data);
    for (size_t a = 0; a < sizeof(names) / sizeof(names[0]); a++) {
        for (size_t b = 0; b < sizeof(lens) / sizeof(lens[0]); b++) {
            for (uint32_t ndim = 0; ndim <= EMAD_MAX_NDIM; ndim++) {
                codec_tensor t = sample(name, names[a], data, lens[b]);
                size_t k = a + b + ndim;

                t.ndim = ndim;
                for (uint32_t d = 0; d < ndim; d++)
                    t.shape[d] = vals[(k + d) % nv];
                t.kind = (int)(k % 2);
                t.dtype = EMAD_BOOL + (int)(k % (EMAD_DTYPE_COUNT - 1));
                ck_assert_ptr_nonnull(dtype_name(t.dtype));
                t.has_offset = (int)(k % 3 == 0);
                t.offset = vals[k % nv];
                t.count = k % 4 == 0 ? 0 : vals[(k + 1) % nv] | 1;
                t.start = vals[(k + 2) % nv];
                t.as_dtype = k % 5 == 0 ? EMAD_BF16 : EMAD_DTYPE_INVALID;
                ck_assert_uint_eq(codec_tensor_size(&t), packed_len(&t));
                assert_packs_like_msgpack_c(&t);
                /* The chunk overhead bounds the map without its data bytes, whatever the offset. */
                t.has_offset = 1;
                t.offset = UINT64_MAX;
                ck_assert_uint_ge(codec_tensor_chunk_overhead(&t), packed_len(&t) - t.len);
                checked++;
            }
        }
    }
    ck_assert_uint_eq(checked, 11 * 7 * 17);
    free(name);
    free(data);
}
END_TEST

/* A request {"tensors": [maps of t[0..n)]} unpacked into *u (the buffer in *sb). */
static const msgpack_object *
pack_push(const codec_tensor *t, size_t n, msgpack_sbuffer *sb, msgpack_unpacked *u)
{
    msgpack_packer pk;

    pack_begin(sb, &pk);
    msgpack_pack_map(&pk, 1);
    proto_pack_str(&pk, PROTO_KEY_TENSORS);
    msgpack_pack_array(&pk, n);
    for (size_t i = 0; i < n; i++)
        codec_tensor_pack(&pk, &t[i]);
    return unpack(sb, u);
}

/* The fields a push tensor map carries are equal in a and b. */
static void
assert_same_push(const codec_tensor *a, const codec_tensor *b)
{
    ck_assert_uint_eq(a->name_len, b->name_len);
    ck_assert_int_eq(memcmp(a->name, b->name, a->name_len), 0);
    ck_assert_int_eq(a->kind, b->kind);
    ck_assert_int_eq(a->dtype, b->dtype);
    ck_assert_uint_eq(a->ndim, b->ndim);
    for (uint32_t d = 0; d < a->ndim; d++)
        ck_assert_uint_eq(a->shape[d], b->shape[d]);
    ck_assert_uint_eq(a->len, b->len);
    ck_assert_int_eq(a->len == 0 || memcmp(a->data, b->data, a->len) == 0, 1);
    ck_assert_int_eq(a->has_offset, b->has_offset);
    ck_assert_uint_eq(a->has_offset ? a->offset : 0, b->has_offset ? b->offset : 0);
    ck_assert_uint_eq(a->count, b->count);
    ck_assert_uint_eq(a->count ? a->start : 0, b->count ? b->start : 0);
    ck_assert_int_eq(a->as_dtype, b->as_dtype);
}

START_TEST(test_codec_push_round_trip)
{
    char names[4][8] = {"w", "b", "layer.0", "\xc3\xa9t\xc3\xa9"};
    unsigned char data[64];
    codec_tensor t[4], *out = NULL;
    msgpack_sbuffer sb;
    msgpack_unpacked u;
    codec_err err;
    size_t n = 0;

    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (unsigned char)(i * 7);
    t[0] = sample(names[0], 0, data, 24);
    t[0].name_len = 1;
    t[1] = sample(names[1], 0, data + 8, 8);
    t[1].name_len = 1;
    t[1].kind = EMAD_BUFFER;
    t[1].dtype = EMAD_I64;
    t[1].ndim = 0;
    t[2] = sample(names[2], 0, data, 12);
    t[2].name_len = 7;
    t[2].count = 3;
    t[2].start = 2;
    t[2].has_offset = 1;
    t[2].offset = 4;
    t[3] = sample(names[3], 0, data, 0);
    t[3].name_len = strlen(names[3]);
    t[3].as_dtype = EMAD_BF16;
    t[3].shape[0] = 0;
    ck_assert_int_eq(codec_tensors_decode(pack_push(t, 4, &sb, &u), 1, &out, &n, &err), 0);
    ck_assert_uint_eq(n, 4);
    for (size_t i = 0; i < 4; i++)
        assert_same_push(&t[i], &out[i]);
    free(out);
    pack_end(&sb, &u);

    /* An empty array decodes to no tensors. */
    ck_assert_int_eq(codec_tensors_decode(pack_push(t, 0, &sb, &u), 0, &out, &n, &err), 0);
    ck_assert_uint_eq(n, 0);
    free(out);
    pack_end(&sb, &u);
}
END_TEST

START_TEST(test_codec_desc_round_trip)
{
    static const uint64_t shape[3] = {4, 1, 3};
    unsigned char data[12 * 2];
    codec_tensor t = {0}, d;
    codec_err err;

    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (unsigned char)(255 - i);
    t.name = "blocks.0.attn";
    t.name_len = strlen(t.name);
    t.kind = EMAD_BUFFER;
    t.dtype = EMAD_BF16;
    t.ndim = 3;
    memcpy(t.shape, shape, sizeof(shape));
    t.step = 1ULL << 40;
    t.nbytes = sizeof(data);
    t.data = data;
    t.len = sizeof(data);
    for (int with_data = 0; with_data <= 1; with_data++) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_unpacked u;

        pack_begin(&sb, &pk);
        codec_desc_pack(&pk, &t, with_data);
        ck_assert_int_eq(codec_desc_decode(unpack(&sb, &u), 0, &d, &err), 0);
        ck_assert_uint_eq(d.name_len, t.name_len);
        ck_assert_int_eq(memcmp(d.name, t.name, t.name_len), 0);
        ck_assert_int_eq(d.kind, t.kind);
        ck_assert_int_eq(d.dtype, t.dtype);
        ck_assert_uint_eq(d.ndim, 3);
        ck_assert_int_eq(memcmp(d.shape, shape, sizeof(shape)), 0);
        ck_assert_uint_eq(d.step, t.step);
        ck_assert_uint_eq(d.nbytes, t.nbytes);
        if (with_data) {
            ck_assert_uint_eq(d.len, sizeof(data));
            ck_assert_int_eq(memcmp(d.data, data, sizeof(data)), 0);
        } else {
            ck_assert_ptr_null(d.data);
        }
        ck_assert_ptr_null(proto_map_get(&u.data, PROTO_KEY_OFFSET));
        ck_assert_ptr_nonnull(proto_map_get(&u.data, PROTO_KEY_UPDATE));
        pack_end(&sb, &u);
    }
}
END_TEST

/*
 * A malformed tensor map: the valid map {name: "w", kind: "param", dtype:
 * "F32", shape: [2, 3], data: bin 24} with one key replaced (or added, or
 * with how == OMIT removed).
 */
enum how { OMIT, NIL, STR, UINT, UINTS, MIXED, BIN };

typedef struct bad_case {
    const char *key;
    enum how how;
    const char *str; /* STR */
    uint64_t v;      /* UINT; UINTS/MIXED: the number of elements */
    int txn;
    int code;
    const char *message;
    const char *tensor; /* err.tensor */
} bad_case;

/* Pack v as the value the case asks for. */
static void
pack_value(msgpack_packer *pk, const bad_case *c)
{
    switch (c->how) {
    case NIL:
        msgpack_pack_nil(pk);
        break;
    case STR:
        msgpack_pack_str(pk, strlen(c->str));
        msgpack_pack_str_body(pk, c->str, strlen(c->str));
        break;
    case UINT:
        msgpack_pack_uint64(pk, c->v);
        break;
    case UINTS:
    case MIXED:
        msgpack_pack_array(pk, c->v);
        for (uint64_t i = 0; i < c->v; i++) {
            if (c->how == MIXED && i == 1)
                msgpack_pack_int64(pk, -1);
            else
                msgpack_pack_uint64(pk, 2);
        }
        break;
    case BIN:
        msgpack_pack_bin(pk, 4);
        msgpack_pack_bin_body(pk, "abcd", 4);
        break;
    case OMIT:
        break;
    }
}

/* Pack the valid map with the case's change. */
static void
pack_bad(msgpack_packer *pk, const bad_case *c, const char *name)
{
    static const char *const keys[] = {PROTO_KEY_NAME, PROTO_KEY_KIND, PROTO_KEY_DTYPE,
                                       PROTO_KEY_SHAPE, PROTO_KEY_DATA};
    static const char zeros[24];
    int replaced = 0;

    for (size_t i = 0; i < 5; i++)
        replaced |= strcmp(keys[i], c->key) == 0;
    msgpack_pack_map(pk, !replaced ? 6 : c->how == OMIT ? 4 : 5);
    for (size_t i = 0; i < 5; i++) {
        if (strcmp(keys[i], c->key) == 0) {
            if (c->how != OMIT) {
                proto_pack_str(pk, keys[i]);
                pack_value(pk, c);
            }
            continue;
        }
        proto_pack_str(pk, keys[i]);
        if (i == 0)
            proto_pack_str(pk, name);
        else if (i == 1)
            proto_pack_str(pk, "param");
        else if (i == 2)
            proto_pack_str(pk, "F32");
        else if (i == 3) {
            msgpack_pack_array(pk, 2);
            msgpack_pack_uint64(pk, 2);
            msgpack_pack_uint64(pk, 3);
        } else {
            msgpack_pack_bin(pk, 24);
            msgpack_pack_bin_body(pk, zeros, 24);
        }
    }
    if (!replaced) {
        proto_pack_str(pk, c->key);
        pack_value(pk, c);
    }
}

/* Decode {"tensors": [extra valid maps..., the bad map]} with the case's txn. */
static int
decode_bad(const bad_case *c, const char *name, int before, codec_err *err)
{
    static const bad_case valid = {.key = "none", .how = UINT, .v = 0};
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_unpacked u;
    codec_tensor *out = NULL;
    size_t n = 99;
    int rc;

    pack_begin(&sb, &pk);
    msgpack_pack_map(&pk, 1);
    proto_pack_str(&pk, PROTO_KEY_TENSORS);
    msgpack_pack_array(&pk, before + 1);
    for (int i = 0; i < before; i++)
        pack_bad(&pk, &valid, "ok");
    pack_bad(&pk, c, name);
    rc = codec_tensors_decode(unpack(&sb, &u), c->txn, &out, &n, err);
    if (rc != 0) {
        ck_assert_ptr_null(out);
        ck_assert_uint_eq(n, 99);
    }
    free(rc == 0 ? out : NULL);
    pack_end(&sb, &u);
    return rc;
}

static const bad_case bad_cases[] = {
    {"name", OMIT, .code = EMAD_EMALFORMED, .message = "key 'name' is missing (expected a string)"},
    {"name", UINT, .v = 3, .code = EMAD_EMALFORMED,
     .message = "key 'name' is not a string (expected a string)"},
    {"kind", OMIT, .code = EMAD_EMALFORMED,
     .message = "tensor 'w': key 'kind' is missing (expected a string)", .tensor = "w"},
    {"kind", NIL, .code = EMAD_EMALFORMED,
     .message = "tensor 'w': key 'kind' is not a string (expected a string)", .tensor = "w"},
    {"kind", STR, .str = "we\"\x01ight", .code = EMAD_EMALFORMED,
     .message = "tensor 'w': kind 'we??ight' is not param or buffer", .tensor = "w"},
    {"dtype", OMIT, .code = EMAD_EMALFORMED,
     .message = "tensor 'w': key 'dtype' is missing (expected a string)", .tensor = "w"},
    {"dtype", STR, .str = "F31", .code = EMAD_EDTYPE, .message = "tensor 'w': unknown dtype 'F31'",
     .tensor = "w"},
    {"dtype", STR, .str = "A-dtype-name-far-longer-than-31-bytes", .code = EMAD_EDTYPE,
     .message = "tensor 'w': unknown dtype 'A-dtype-name-far-longer-than-31'", .tensor = "w"},
    {"shape", OMIT, .code = EMAD_EMALFORMED,
     .message = "tensor 'w': key 'shape' is missing (expected an array)", .tensor = "w"},
    {"shape", UINT, .v = 6, .code = EMAD_EMALFORMED,
     .message = "tensor 'w': key 'shape' is not an array (expected an array)", .tensor = "w"},
    {"shape", UINTS, .v = 17, .code = EMAD_ELIMIT,
     .message = "tensor 'w': shape has 17 dimensions, at most 16", .tensor = "w"},
    {"shape", MIXED, .v = 3, .code = EMAD_EMALFORMED,
     .message = "tensor 'w': shape[1] is not an unsigned integer", .tensor = "w"},
    {"data", OMIT, .code = EMAD_EMALFORMED,
     .message = "tensor 'w': key 'data' is missing (expected bin)", .tensor = "w"},
    {"data", STR, .str = "abcd", .code = EMAD_EMALFORMED,
     .message = "tensor 'w': key 'data' is not bin (expected bin)", .tensor = "w"},
    {"offset", STR, .str = "0", .txn = 1, .code = EMAD_EMALFORMED,
     .message = "tensor 'w': key 'offset' is not an unsigned integer (expected an unsigned "
                "integer)",
     .tensor = "w"},
    {"offset", UINT, .v = 8, .code = EMAD_EMALFORMED,
     .message = "tensor 'w': 'offset' is only allowed in a transaction", .tensor = "w"},
    {"as_dtype", STR, .str = "F99", .code = EMAD_EDTYPE,
     .message = "tensor 'w': key 'as_dtype' is not a dtype name", .tensor = "w"},
    {"as_dtype", UINT, .v = 1, .code = EMAD_EDTYPE,
     .message = "tensor 'w': key 'as_dtype' is not a dtype name", .tensor = "w"},
    {"slice", UINT, .v = 1, .code = EMAD_EMALFORMED,
     .message = "tensor 'w': key 'slice' is not [start, count]", .tensor = "w"},
    {"slice", UINTS, .v = 3, .code = EMAD_EMALFORMED,
     .message = "tensor 'w': key 'slice' is not [start, count]", .tensor = "w"},
    {"slice", MIXED, .v = 2, .code = EMAD_EMALFORMED,
     .message = "tensor 'w': key 'slice' is not [start, count]", .tensor = "w"},
    {"slice", BIN, .code = EMAD_EMALFORMED,
     .message = "tensor 'w': key 'slice' is not [start, count]", .tensor = "w"},
};

START_TEST(test_codec_rejects_malformed_tensor_map)
{
    const bad_case *c = &bad_cases[_i];
    codec_err err;

    ck_assert_int_eq(decode_bad(c, "w", 0, &err), c->code);
    ck_assert_int_eq(err.code, c->code);
    ck_assert_str_eq(err.message, c->message);
    ck_assert_str_eq(err.tensor, c->tensor != NULL ? c->tensor : "");
    /* The same fault in the third tensor: the same error. */
    ck_assert_int_eq(decode_bad(c, "w", 2, &err), c->code);
    ck_assert_str_eq(err.message, c->message);
}
END_TEST

START_TEST(test_codec_names_only_valid_names)
{
    static const bad_case c = {"dtype", STR, .str = "F31"};
    codec_err err;

    /* A name with a control character is not quoted back. */
    ck_assert_int_eq(decode_bad(&c, "a\tb", 0, &err), EMAD_EDTYPE);
    ck_assert_str_eq(err.message, "unknown dtype 'F31'");
    ck_assert_str_eq(err.tensor, "");
}
END_TEST

START_TEST(test_codec_accepts_optional_keys)
{
    static const bad_case ok[] = {
        {"offset", UINT, .v = 0},           /* offset 0 outside a transaction */
        {"offset", UINT, .v = 8, .txn = 1}, /* any offset in one */
        {"slice", UINTS, .v = 2},           /* [2, 2] */
        {"as_dtype", STR, .str = "BF16"},   /* a dtype name */
        {"update", STR, .str = "whatever"}, /* unknown keys are ignored */
    };
    codec_err err;

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        ck_assert_int_eq(decode_bad(&ok[i], "w", 1, &err), 0);
}
END_TEST

/* Decode the request packed by pack(pk) with codec_tensors_decode(). */
static int
decode_root(void (*pack)(msgpack_packer *pk), codec_err *err)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_unpacked u;
    codec_tensor *out = NULL;
    size_t n = 0;
    int rc;

    pack_begin(&sb, &pk);
    pack(&pk);
    rc = codec_tensors_decode(unpack(&sb, &u), 0, &out, &n, err);
    free(out);
    pack_end(&sb, &u);
    return rc;
}

static void
pack_no_tensors(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    proto_pack_kv_u64(pk, PROTO_KEY_STEP, 1);
}

static void
pack_tensors_not_array(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    proto_pack_kv_u64(pk, PROTO_KEY_TENSORS, 1);
}

static void
pack_too_many_tensors(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    proto_pack_str(pk, PROTO_KEY_TENSORS);
    msgpack_pack_array(pk, PROTO_MAX_TENSORS + 1);
    for (int i = 0; i <= PROTO_MAX_TENSORS; i++)
        msgpack_pack_nil(pk);
}

static void
pack_tensor_not_map(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    proto_pack_str(pk, PROTO_KEY_TENSORS);
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 0);
}

START_TEST(test_codec_rejects_malformed_tensors_array)
{
    codec_err err;

    ck_assert_int_eq(decode_root(pack_no_tensors, &err), EMAD_EMALFORMED);
    ck_assert_str_eq(err.message, "key 'tensors' is missing (expected an array)");
    ck_assert_int_eq(decode_root(pack_tensors_not_array, &err), EMAD_EMALFORMED);
    ck_assert_str_eq(err.message, "key 'tensors' is not an array (expected an array)");
    ck_assert_int_eq(decode_root(pack_too_many_tensors, &err), EMAD_ELIMIT);
    ck_assert_str_eq(err.message, "push has 65537 tensors, at most 65536");
    ck_assert_int_eq(decode_root(pack_tensor_not_map, &err), EMAD_EMALFORMED);
    ck_assert_str_eq(err.message, "tensors[0] is not a map");
    ck_assert_str_eq(err.tensor, "");
}
END_TEST

START_TEST(test_codec_first_of_duplicate_keys_wins)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_unpacked u;
    codec_tensor *out = NULL;
    codec_err err;
    size_t n = 0;

    pack_begin(&sb, &pk);
    msgpack_pack_map(&pk, 1);
    proto_pack_str(&pk, PROTO_KEY_TENSORS);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_map(&pk, 6);
    proto_pack_str(&pk, "name");
    proto_pack_str(&pk, "first");
    proto_pack_str(&pk, "name");
    proto_pack_str(&pk, "second");
    proto_pack_str(&pk, "kind");
    proto_pack_str(&pk, "buffer");
    proto_pack_str(&pk, "dtype");
    proto_pack_str(&pk, "U8");
    proto_pack_str(&pk, "shape");
    msgpack_pack_array(&pk, 0);
    proto_pack_str(&pk, "data");
    msgpack_pack_bin(&pk, 1);
    msgpack_pack_bin_body(&pk, "x", 1);
    ck_assert_int_eq(codec_tensors_decode(unpack(&sb, &u), 0, &out, &n, &err), 0);
    ck_assert_uint_eq(out[0].name_len, 5);
    ck_assert_int_eq(memcmp(out[0].name, "first", 5), 0);
    ck_assert_int_eq(out[0].kind, EMAD_BUFFER);
    ck_assert_int_eq(out[0].dtype, EMAD_U8);
    ck_assert_int_eq(out[0].as_dtype, EMAD_DTYPE_INVALID);
    ck_assert_int_eq(out[0].has_offset, 0);
    ck_assert_uint_eq(out[0].count, 0);
    free(out);
    pack_end(&sb, &u);
}
END_TEST

/* A description: name "w", kind "param", dtype "F32", shape [2, 3], step 5, nbytes 24, data bin 24
 * with one key replaced as the case says. */
static int
decode_bad_desc(const bad_case *c, codec_err *err)
{
    static const char *const keys[] = {PROTO_KEY_NAME,  PROTO_KEY_KIND, PROTO_KEY_DTYPE,
                                       PROTO_KEY_SHAPE, PROTO_KEY_STEP, PROTO_KEY_NBYTES,
                                       PROTO_KEY_DATA};
    static const char zeros[24];
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_unpacked u;
    codec_tensor t;
    int rc;

    pack_begin(&sb, &pk);
    msgpack_pack_map(&pk, c->how == OMIT ? 6 : 7);
    for (size_t i = 0; i < 7; i++) {
        if (strcmp(keys[i], c->key) == 0) {
            if (c->how != OMIT) {
                proto_pack_str(&pk, keys[i]);
                pack_value(&pk, c);
            }
            continue;
        }
        proto_pack_str(&pk, keys[i]);
        switch (i) {
        case 0:
            proto_pack_str(&pk, "w");
            break;
        case 1:
            proto_pack_str(&pk, "param");
            break;
        case 2:
            proto_pack_str(&pk, "F32");
            break;
        case 3:
            msgpack_pack_array(&pk, 2);
            msgpack_pack_uint64(&pk, 2);
            msgpack_pack_uint64(&pk, 3);
            break;
        case 4:
            msgpack_pack_uint64(&pk, 5);
            break;
        case 5:
            msgpack_pack_uint64(&pk, 24);
            break;
        default:
            msgpack_pack_bin(&pk, 24);
            msgpack_pack_bin_body(&pk, zeros, 24);
        }
    }
    rc = codec_desc_decode(unpack(&sb, &u), 3, &t, err);
    if (rc == 0) {
        ck_assert_uint_eq(t.nbytes, 24);
        ck_assert_uint_eq(t.step, 5);
    }
    pack_end(&sb, &u);
    return rc;
}

static const bad_case bad_descs[] = {
    {"name", OMIT, .message = "reply key 'name' is missing (expected a string)"},
    {"name", STR, .str = "a\nb", .message = "reply tensors[3] has an invalid name"},
    {"kind", UINT, .v = 0, .message = "reply key 'kind' is not a string (expected a string)"},
    {"kind", STR, .str = "weights", .message = "reply tensors[3] has an unknown kind"},
    {"dtype", STR, .str = "F31", .message = "reply tensors[3] has an unknown dtype"},
    {"shape", STR, .str = "[2, 3]",
     .message = "reply key 'shape' is not an array (expected an array)"},
    {"shape", UINTS, .v = 17, .message = "reply tensors[3] has too many dimensions"},
    {"shape", MIXED, .v = 2, .message = "reply tensors[3].shape[1] is not a uint"},
    {"step", OMIT, .message = "reply key 'step' is missing (expected an unsigned integer)"},
    {"nbytes", STR, .str = "24",
     .message = "reply key 'nbytes' is not an unsigned integer (expected an unsigned integer)"},
    {"nbytes", UINT, .v = 23, .message = "reply tensors[3]: nbytes does not match shape and dtype"},
    {"data", BIN, .message = "reply tensors[3]: data is not bin of nbytes"},
    {"data", STR, .str = "x", .message = "reply tensors[3]: data is not bin of nbytes"},
};

START_TEST(test_codec_rejects_malformed_desc)
{
    const bad_case *c = &bad_descs[_i];
    codec_err err;

    ck_assert_int_eq(decode_bad_desc(c, &err), EMAD_EPROTO);
    ck_assert_str_eq(err.message, c->message);
}
END_TEST

START_TEST(test_codec_desc_without_data)
{
    static const bad_case c = {.key = "data", .how = OMIT};
    codec_err err;
    msgpack_object nil = {.type = MSGPACK_OBJECT_NIL};
    codec_tensor t;

    ck_assert_int_eq(decode_bad_desc(&c, &err), 0);
    ck_assert_int_eq(codec_desc_decode(&nil, 7, &t, &err), EMAD_EPROTO);
    ck_assert_str_eq(err.message, "reply tensors[7] is not a map");
}
END_TEST

static Suite *
codec_suite(void)
{
    Suite *s = suite_create("codec");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_codec_size_equals_packed_bytes);
    tcase_add_test(tc, test_codec_push_round_trip);
    tcase_add_test(tc, test_codec_desc_round_trip);
    tcase_add_loop_test(tc, test_codec_rejects_malformed_tensor_map, 0,
                        (int)(sizeof(bad_cases) / sizeof(bad_cases[0])));
    tcase_add_test(tc, test_codec_names_only_valid_names);
    tcase_add_test(tc, test_codec_accepts_optional_keys);
    tcase_add_test(tc, test_codec_rejects_malformed_tensors_array);
    tcase_add_test(tc, test_codec_first_of_duplicate_keys_wins);
    tcase_add_loop_test(tc, test_codec_rejects_malformed_desc, 0,
                        (int)(sizeof(bad_descs) / sizeof(bad_descs[0])));
    tcase_add_test(tc, test_codec_desc_without_data);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(codec_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

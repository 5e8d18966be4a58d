/*
 * check_server.c - tests for the request server (src/daemon/server.c and the
 * modules it dispatches to) without sockets: requests are
 * packed with msgpack-c, handled by server_process() exactly as if they
 * came off the wire, and the replies decoded and checked. Covers every
 * op's round trip and every rejection path of the decoder, and that the
 * server keeps answering after each bad request.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "common/errors.h"
#include "common/names.h"
#include "common/proto.h"
#include "daemon/server.h"
#include "reqpack.h"
#include "testutil.h"

static server *srv;
static rq req; /* the request being packed */
static msgpack_unpacked reply;
static void *reply_buf;
static size_t reply_len;

static void
setup(void)
{
    server_config cfg;

    server_config_init(&cfg);
    cfg.max_message_bytes = 1 << 20;
    srv = server_create_offline(&cfg);
    msgpack_unpacked_init(&reply);
    rq_init(&req);
}

static void
teardown(void)
{
    msgpack_unpacked_destroy(&reply);
    free(reply_buf);
    reply_buf = NULL;
    server_destroy(srv);
    rq_free(&req);
}

/* Send raw bytes; decode the reply into `reply`. */
static const msgpack_object *
send_raw(const void *buf, size_t len)
{
    size_t rlen, off = 0;

    free(reply_buf);
    msgpack_unpacked_destroy(&reply);
    msgpack_unpacked_init(&reply);
    server_process(srv, buf, len, &reply_buf, &rlen);
    ck_assert_ptr_nonnull(reply_buf);
    ck_assert_int_eq(msgpack_unpack_next(&reply, reply_buf, rlen, &off), MSGPACK_UNPACK_SUCCESS);
    ck_assert_uint_eq(off, rlen);
    ck_assert_int_eq(reply.data.type, MSGPACK_OBJECT_MAP);
    reply_len = rlen;
    return &reply.data;
}

/* Send the packed request. */
static const msgpack_object *
send_req(void)
{
    return send_raw(req.sb.data, req.sb.size);
}

static uint64_t
get_u(const msgpack_object *map, const char *k)
{
    const msgpack_object *o = proto_map_get(map, k);
    ck_assert_ptr_nonnull(o);
    ck_assert_int_eq(o->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    return o->via.u64;
}

/* Assert the reply is ok. */
static void
assert_ok(const msgpack_object *r)
{
    const msgpack_object *ok = proto_map_get(r, "ok");
    ck_assert_ptr_nonnull(ok);
    if (!ok->via.boolean) {
        const msgpack_object *m = proto_map_get(proto_map_get(r, "error"), "message");
        ck_abort_msg("request failed: %.*s", (int)m->via.str.size, m->via.str.ptr);
    }
    ck_assert_uint_eq(get_u(r, "v"), 1);
}

/* Assert the reply is an error with this code, and its message contains text. */
static void
assert_err(const msgpack_object *r, int code, const char *text)
{
    const msgpack_object *e = proto_map_get(r, "error"), *m, *name;
    char buf[600];

    ck_assert_int_eq(proto_map_get(r, "ok")->via.boolean, 0);
    ck_assert_ptr_nonnull(e);
    ck_assert_uint_eq(get_u(e, "code"), (uint64_t)-code);
    name = proto_map_get(e, "name");
    snprintf(buf, sizeof(buf), "%.*s", (int)name->via.str.size, name->via.str.ptr);
    ck_assert_str_eq(buf, errors_name(code));
    m = proto_map_get(e, "message");
    snprintf(buf, sizeof(buf), "%.*s", (int)m->via.str.size, m->via.str.ptr);
    if (text != NULL)
        ck_assert_msg(strstr(buf, text) != NULL, "message '%s' lacks '%s'", buf, text);
}

/* The server still serves: a hello answers ok. */
static void
assert_serving(void)
{
    rq_begin(&req, "hello", 0);
    assert_ok(send_req());
}

static void
create_model(const char *name, double decay)
{
    rq_begin(&req, "create", 2);
    rq_kv_str(&req, "model", name);
    rq_kv_double(&req, "decay", decay);
    assert_ok(send_req());
}

/* A tensor map of exactly these five keys. */
static void
pack_tensor(const char *name, const char *kind, const char *dtype, const uint64_t *shape,
            uint32_t ndim, const void *data, size_t len)
{
    rq_tensor(&req, 5, name, kind, dtype, shape, ndim, data, len);
}

/* Push one F32 param of n elements at step. */
static const msgpack_object *
push_f32(const char *mname, uint64_t step, const char *name, const float *v, uint64_t n)
{
    rq_begin_push(&req, mname, step, 1);
    pack_tensor(name, "param", "F32", &n, 1, v, n * 4);
    return send_req();
}

START_TEST(test_server_hello_reports_limits)
{
    const msgpack_object *r;

    rq_begin(&req, "hello", 0);
    r = send_req();
    assert_ok(r);
    ck_assert_uint_eq(get_u(r, "protocol"), 1);
    ck_assert_uint_eq(get_u(r, "max_message_bytes"), 1 << 20);
    ck_assert_uint_eq(get_u(r, "max_tensors"), PROTO_MAX_TENSORS);
    ck_assert_uint_eq(get_u(r, "txn_timeout_ms"), 60000);
}
END_TEST

START_TEST(test_server_push_pull_round_trip)
{
    float v1[3] = {1, 2, 3}, v2[3] = {3, 2, 1};
    const msgpack_object *r, *t, *data;
    float out[3];

    create_model("m", 0.5);
    assert_ok(push_f32("m", 1, "w", v1, 3));
    r = push_f32("m", 2, "w", v2, 3);
    assert_ok(r);
    ck_assert_uint_eq(get_u(r, "applied"), 1);
    ck_assert_uint_eq(get_u(r, "step"), 2);
    rq_begin(&req, "pull", 1);
    rq_kv_str(&req, "model", "m");
    r = send_req();
    assert_ok(r);
    ck_assert_uint_eq(get_u(r, "step"), 2);
    ck_assert_ptr_null(proto_map_get(r, "session"));
    t = &proto_map_get(r, "tensors")->via.array.ptr[0];
    ck_assert_uint_eq(get_u(t, "step"), 2);
    ck_assert_uint_eq(get_u(t, "nbytes"), 12);
    data = proto_map_get(t, "data");
    ck_assert_int_eq(data->type, MSGPACK_OBJECT_BIN);
    memcpy(out, data->via.bin.ptr, 12);
    /* decay 0.5: (1+3)/2, (2+2)/2, (3+1)/2 exactly. */
    ck_assert_float_eq(out[0], 2.0f);
    ck_assert_float_eq(out[1], 2.0f);
    ck_assert_float_eq(out[2], 2.0f);
}
END_TEST

START_TEST(test_server_push_same_step_is_stale)
{
    float v[1] = {1};
    const msgpack_object *r, *names;

    create_model("m", 0.5);
    assert_ok(push_f32("m", 7, "w", v, 1));
    r = push_f32("m", 7, "w", v, 1);
    assert_ok(r);
    ck_assert_uint_eq(get_u(r, "applied"), 0);
    ck_assert_uint_eq(get_u(r, "stale"), 1);
    names = proto_map_get(r, "stale_names");
    ck_assert_uint_eq(names->via.array.size, 1);
    ck_assert_int_eq(memcmp(names->via.array.ptr[0].via.str.ptr, "w", 1), 0);
}
END_TEST

START_TEST(test_server_rejects_garbage_and_keeps_serving)
{
    const char junk[] = "\x17\x99garbage that is not msgpack\xc1";
    const unsigned char huge_array[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    const unsigned char not_map[] = {0x93, 0x01, 0x02, 0x03};

    assert_err(send_raw(junk, sizeof(junk)), EMAD_EMALFORMED, "msgpack");
    assert_serving();
    assert_err(send_raw(huge_array, sizeof(huge_array)), EMAD_EMALFORMED, "count");
    assert_serving();
    assert_err(send_raw(not_map, sizeof(not_map)), EMAD_EMALFORMED, "not a msgpack map");
    assert_serving();
    assert_err(send_raw("", 0), EMAD_EMALFORMED, "empty");
    assert_serving();
}
END_TEST

START_TEST(test_server_rejects_version_and_op)
{
    const msgpack_object *r, *sup;

    rq_clear(&req);
    msgpack_pack_map(&req.pk, 2);
    rq_kv_u64(&req, "v", 2);
    rq_kv_str(&req, "op", "hello");
    r = send_req();
    assert_err(r, EMAD_EVERSION, "version 2");
    sup = proto_map_get(proto_map_get(r, "error"), "supported");
    ck_assert_ptr_nonnull(sup);
    ck_assert_uint_eq(sup->via.array.ptr[0].via.u64, 1);
    assert_serving();

    rq_begin(&req, "explode", 0);
    assert_err(send_req(), EMAD_EOP, "explode");
    assert_serving();

    rq_clear(&req);
    msgpack_pack_map(&req.pk, 1);
    rq_kv_str(&req, "op", "hello");
    assert_err(send_req(), EMAD_EMALFORMED, "'v'");
    assert_serving();
}
END_TEST

START_TEST(test_server_rejects_malformed_push_fields)
{
    float v[2] = {1, 2};
    uint64_t shape = 2;

    create_model("m", 0.5);
    rq_begin(&req, "push", 2); /* no step */
    rq_kv_str(&req, "model", "m");
    rq_str(&req, "tensors");
    msgpack_pack_array(&req.pk, 1);
    pack_tensor("w", "param", "F32", &shape, 1, v, 8);
    assert_err(send_req(), EMAD_EMALFORMED, "'step'");

    rq_begin(&req, "push", 3); /* tensors not an array */
    rq_kv_str(&req, "model", "m");
    rq_kv_u64(&req, "step", 1);
    rq_kv_u64(&req, "tensors", 5);
    assert_err(send_req(), EMAD_EMALFORMED, "'tensors'");

    rq_begin_push(&req, "m", 1, 1); /* unknown dtype */
    pack_tensor("w", "param", "F17", &shape, 1, v, 8);
    assert_err(send_req(), EMAD_EDTYPE, "tensor 'w'");

    rq_begin_push(&req, "m", 1, 1); /* unknown kind */
    pack_tensor("w", "weight", "F32", &shape, 1, v, 8);
    assert_err(send_req(), EMAD_EMALFORMED, "kind");

    rq_begin_push(&req, "m", 1, 1); /* data length wrong */
    pack_tensor("w", "param", "F32", &shape, 1, v, 7);
    assert_err(send_req(), EMAD_ESIZE, "needs 8");

    rq_begin_push(&req, "m", 1, 1); /* data as str, not bin */
    msgpack_pack_map(&req.pk, 5);
    rq_kv_str(&req, "name", "w");
    rq_kv_str(&req, "kind", "param");
    rq_kv_str(&req, "dtype", "F32");
    rq_str(&req, "shape");
    msgpack_pack_array(&req.pk, 1);
    msgpack_pack_uint64(&req.pk, 2);
    rq_kv_str(&req, "data", "abcdefgh");
    assert_err(send_req(), EMAD_EMALFORMED, "'data'");

    rq_begin_push(&req, "m", 1, 1); /* 17 dimensions */
    {
        uint64_t sh[17];
        for (int i = 0; i < 17; i++)
            sh[i] = 1;
        pack_tensor("w", "param", "F32", sh, 17, v, 4);
    }
    assert_err(send_req(), EMAD_ELIMIT, "dimensions");

    rq_begin_push(&req, "m", 1, 1); /* offset outside a transaction */
    {
        uint64_t one = 1;
        rq_tensor(&req, 6, "w", "param", "F32", &one, 1, v, 4); /* and one more key: */
    }
    rq_kv_u64(&req, "offset", 4);
    assert_err(send_req(), EMAD_EMALFORMED, "transaction");

    rq_begin_push(&req, "m", 1, 1); /* offset not an unsigned integer */
    {
        uint64_t one = 1;
        rq_tensor(&req, 6, "w", "param", "F32", &one, 1, v, 4); /* and one more key: */
    }
    rq_kv_str(&req, "offset", "4");
    assert_err(
        send_req(), EMAD_EMALFORMED,
        "tensor 'w': key 'offset' is not an unsigned integer (expected an unsigned integer)");

    rq_begin_push(&req, "m", 1,
                  1); /* no key "name": only the integer key 7, whose value is "name" */
    msgpack_pack_map(&req.pk, 5);
    msgpack_pack_uint64(&req.pk, 7); /* an integer key is no key of ours */
    msgpack_pack_str_with_body(&req.pk, "name", 4);
    rq_kv_str(&req, "kind", "param");
    rq_kv_str(&req, "dtype", "F32");
    rq_str(&req, "shape");
    msgpack_pack_array(&req.pk, 1);
    msgpack_pack_uint64(&req.pk, 1);
    rq_str(&req, "data");
    msgpack_pack_bin_with_body(&req.pk, v, 4);
    assert_err(send_req(), EMAD_EMALFORMED, "key 'name' is missing (expected a string)");

    /* Nothing was stored, and the server still serves. */
    rq_begin(&req, "list", 1);
    rq_kv_str(&req, "model", "m");
    {
        const msgpack_object *r = send_req();
        assert_ok(r);
        ck_assert_uint_eq(proto_map_get(r, "tensors")->via.array.size, 0);
    }
    assert_serving();
}
END_TEST

/* A tensor map's keys in any order; of a repeated key the first counts (as for every map). */
START_TEST(test_server_tensor_map_keys_any_order_first_wins)
{
    float v[2] = {1, 2}, w[2] = {5, 6};
    const msgpack_object *r, *d;

    create_model("m", 0.5);
    rq_begin_push(&req, "m", 1, 1);
    msgpack_pack_map(&req.pk, 7);
    rq_str(&req, "data");
    msgpack_pack_bin_with_body(&req.pk, v, 8);
    rq_str(&req, "shape");
    msgpack_pack_array(&req.pk, 1);
    msgpack_pack_uint64(&req.pk, 2);
    rq_kv_str(&req, "dtype", "F32");
    rq_kv_str(&req, "name", "w");
    rq_kv_str(&req, "kind", "param");
    rq_kv_str(&req, "name", "other"); /* ignored: "name" came first */
    rq_str(&req, "data");             /* ignored too */
    msgpack_pack_bin_with_body(&req.pk, w, 8);
    r = send_req();
    assert_ok(r);
    ck_assert_uint_eq(get_u(r, "applied"), 1);
    rq_begin(&req, "pull", 1);
    rq_kv_str(&req, "model", "m");
    r = send_req();
    assert_ok(r);
    ck_assert_uint_eq(proto_map_get(r, "tensors")->via.array.size, 1);
    d = proto_map_get(&proto_map_get(r, "tensors")->via.array.ptr[0], "data");
    ck_assert_uint_eq(d->via.bin.size, 8);
    ck_assert_int_eq(memcmp(d->via.bin.ptr, v, 8), 0);
    assert_serving();
}
END_TEST

START_TEST(test_server_error_names_tensor_for_shape_change)
{
    float v[3] = {1, 2, 3};
    const msgpack_object *r, *t;

    create_model("m", 0.5);
    assert_ok(push_f32("m", 1, "layer.weight", v, 2));
    r = push_f32("m", 2, "layer.weight", v, 3);
    assert_err(r, EMAD_ESHAPE, "shape [3] differs from stored [2]");
    t = proto_map_get(proto_map_get(r, "error"), "tensor");
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->via.str.size, 12);
    ck_assert_int_eq(memcmp(t->via.str.ptr, "layer.weight", 12), 0);
    assert_serving();
}
END_TEST

/* Pull model "m" with one unsigned key k = v; assert a session came back, without data. */
static const msgpack_object *
pull_session(const char *k, uint64_t v, uint64_t *session)
{
    const msgpack_object *r, *t;

    rq_begin(&req, "pull", 2);
    rq_kv_str(&req, "model", "m");
    rq_kv_u64(&req, k, v);
    r = send_req();
    assert_ok(r);
    *session = get_u(r, "session");
    t = &proto_map_get(r, "tensors")->via.array.ptr[0];
    ck_assert_ptr_null(proto_map_get(t, "data"));
    return t; /* the first tensor's metadata */
}

START_TEST(test_server_large_pull_uses_session_and_read)
{
    /* 128 Ki floats = 512 KiB; ask for replies of at most 64 KiB. */
    size_t n = 128 * 1024;
    float *v = malloc(n * 4), *back = malloc(n * 4);
    const msgpack_object *r, *t;
    uint64_t session, idx_nbytes, off = 0;

    for (size_t i = 0; i < n; i++)
        v[i] = (float)i * 0.25f;
    create_model("m", 0.5);
    assert_ok(push_f32("m", 1, "big", v, n));
    t = pull_session("max_reply_bytes", 65536, &session);
    idx_nbytes = get_u(t, "nbytes");
    ck_assert_uint_eq(idx_nbytes, n * 4);
    /* A push now must not change what the session returns. */
    {
        float *z = calloc(n, 4);
        assert_ok(push_f32("m", 2, "big", z, n));
        free(z);
    }
    while (off < idx_nbytes) {
        uint64_t len = idx_nbytes - off < 32768 ? idx_nbytes - off : 32768;
        const msgpack_object *d;
        rq_begin(&req, "read", 2);
        rq_kv_u64(&req, "session", session);
        rq_str(&req, "ranges");
        msgpack_pack_array(&req.pk, 1);
        msgpack_pack_array(&req.pk, 3);
        msgpack_pack_uint64(&req.pk, 0);
        msgpack_pack_uint64(&req.pk, off);
        msgpack_pack_uint64(&req.pk, len);
        r = send_req();
        assert_ok(r);
        d = &proto_map_get(r, "data")->via.array.ptr[0];
        ck_assert_uint_eq(d->via.bin.size, len);
        memcpy((char *)back + off, d->via.bin.ptr, len);
        off += len;
    }
    ck_assert_int_eq(memcmp(back, v, n * 4), 0);
    /* Too big a read, a range past the end, then release. */
    rq_begin(&req, "read", 2);
    rq_kv_u64(&req, "session", session);
    rq_str(&req, "ranges");
    msgpack_pack_array(&req.pk, 1);
    msgpack_pack_array(&req.pk, 3);
    msgpack_pack_uint64(&req.pk, 0);
    msgpack_pack_uint64(&req.pk, 0);
    msgpack_pack_uint64(&req.pk, 65536);
    assert_err(send_req(), EMAD_ELIMIT, "per read");
    rq_begin(&req, "read", 2);
    rq_kv_u64(&req, "session", session);
    rq_str(&req, "ranges");
    msgpack_pack_array(&req.pk, 1);
    msgpack_pack_array(&req.pk, 3);
    msgpack_pack_uint64(&req.pk, 0);
    msgpack_pack_uint64(&req.pk, idx_nbytes - 4);
    msgpack_pack_uint64(&req.pk, 8);
    assert_err(send_req(), EMAD_ERANGE, "past");
    rq_begin(&req, "release", 1);
    rq_kv_u64(&req, "session", session);
    assert_ok(send_req());
    rq_begin(&req, "release", 1);
    rq_kv_u64(&req, "session", session);
    assert_err(send_req(), EMAD_ENOSESSION, NULL);
    free(v);
    free(back);
}
END_TEST

/* inline_bytes caps the replies that carry data; larger pulls become sessions. */
START_TEST(test_server_pull_inline_bytes)
{
    /* 64 Ki floats = 256 KiB, well inside the 1 MiB limit. */
    size_t n = 64 * 1024;
    float *v = malloc(n * 4);
    const msgpack_object *r, *t, *d;
    uint64_t session;

    for (size_t i = 0; i < n; i++)
        v[i] = (float)i * 0.5f;
    create_model("m", 0.5);
    assert_ok(push_f32("m", 1, "w", v, n));

    /* Below the reply: a session, no data. */
    t = pull_session("inline_bytes", 65536, &session);
    ck_assert_uint_eq(get_u(t, "nbytes"), n * 4);
    rq_begin(&req, "release", 1);
    rq_kv_u64(&req, "session", session);
    assert_ok(send_req());

    /* Above the reply (and above max_reply_bytes, which still rules): inline. */
    rq_begin(&req, "pull", 3);
    rq_kv_str(&req, "model", "m");
    rq_kv_u64(&req, "inline_bytes", 1ULL << 40);
    rq_kv_u64(&req, "max_reply_bytes", 512 * 1024);
    r = send_req();
    assert_ok(r);
    ck_assert_ptr_null(proto_map_get(r, "session"));
    d = proto_map_get(&proto_map_get(r, "tensors")->via.array.ptr[0], "data");
    ck_assert_ptr_nonnull(d);
    ck_assert_uint_eq(d->via.bin.size, n * 4);
    ck_assert_int_eq(memcmp(d->via.bin.ptr, v, n * 4), 0);

    /* Not an unsigned integer: refused, nothing opened, still serving. */
    rq_begin(&req, "pull", 2);
    rq_kv_str(&req, "model", "m");
    rq_kv_str(&req, "inline_bytes", "16M");
    assert_err(send_req(), EMAD_EMALFORMED, "inline_bytes");
    rq_begin(&req, "pull", 2);
    rq_kv_str(&req, "model", "m");
    rq_str(&req, "inline_bytes");
    msgpack_pack_int64(&req.pk, -1);
    assert_err(send_req(), EMAD_EMALFORMED, "inline_bytes");
    rq_begin(&req, "stats", 0);
    r = send_req();
    assert_ok(r);
    ck_assert_uint_eq(get_u(proto_map_get(r, "stats"), "sessions_open"), 0);
    assert_serving();
    free(v);
}
END_TEST

START_TEST(test_server_transaction_over_the_wire)
{
    float v[4] = {1, 2, 3, 4};
    uint64_t shape = 4, txn;
    const msgpack_object *r;

    create_model("m", 0.5);
    rq_begin(&req, "begin", 2);
    rq_kv_str(&req, "model", "m");
    rq_kv_u64(&req, "step", 5);
    r = send_req();
    assert_ok(r);
    txn = get_u(r, "txn");
    for (int part = 0; part < 2; part++) {
        rq_begin(&req, "push", 2);
        rq_kv_u64(&req, "txn", txn);
        rq_str(&req, "tensors");
        msgpack_pack_array(&req.pk, 1);
        msgpack_pack_map(&req.pk, 6);
        rq_kv_str(&req, "name", "w");
        rq_kv_str(&req, "kind", "param");
        rq_kv_str(&req, "dtype", "F32");
        rq_str(&req, "shape");
        msgpack_pack_array(&req.pk, 1);
        msgpack_pack_uint64(&req.pk, shape);
        rq_str(&req, "data");
        msgpack_pack_bin_with_body(&req.pk, (const char *)v + 8 * part, 8);
        rq_kv_u64(&req, "offset", 8 * (uint64_t)part);
        r = send_req();
        assert_ok(r);
        ck_assert_uint_eq(get_u(r, "staged"), 1);
    }
    rq_begin(&req, "commit", 1);
    rq_kv_u64(&req, "txn", txn);
    r = send_req();
    assert_ok(r);
    ck_assert_uint_eq(get_u(r, "applied"), 1);
    ck_assert_uint_eq(get_u(r, "step"), 5);
    rq_begin(&req, "abort", 1);
    rq_kv_u64(&req, "txn", txn);
    assert_err(send_req(), EMAD_ENOTXN, NULL);
}
END_TEST

START_TEST(test_server_create_list_drop_stats)
{
    const msgpack_object *r, *m, *st;

    create_model("a", 0.9);
    create_model("b", 0.99);
    rq_begin(&req, "create", 1);
    rq_kv_str(&req, "model", "a");
    assert_err(send_req(), EMAD_EEXIST, "decay");
    rq_begin(&req, "create", 1);
    rq_kv_str(&req, "model", "../etc");
    assert_err(send_req(), EMAD_ENAME, NULL);
    rq_begin(&req, "create", 2);
    rq_kv_str(&req, "model", "c");
    rq_kv_str(&req, "decay", "high");
    assert_err(send_req(), EMAD_EMALFORMED, "'decay'");
    rq_begin(&req, "list", 0);
    r = send_req();
    assert_ok(r);
    m = proto_map_get(r, "models");
    ck_assert_uint_eq(m->via.array.size, 2);
    ck_assert_double_eq(proto_map_get(&m->via.array.ptr[1], "decay")->via.f64, 0.99);
    rq_begin(&req, "drop", 1);
    rq_kv_str(&req, "model", "a");
    assert_ok(send_req());
    rq_begin(&req, "drop", 1);
    rq_kv_str(&req, "model", "a");
    assert_err(send_req(), EMAD_ENOMODEL, "'a'");
    rq_begin(&req, "stats", 0);
    r = send_req();
    assert_ok(r);
    st = proto_map_get(r, "stats");
    ck_assert_uint_eq(get_u(st, "models"), 1);
    ck_assert_uint_eq(get_u(st, "errors"), 4);
    ck_assert_uint_eq(get_u(st, "errors_EMAD_EEXIST"), 1);
    ck_assert_uint_eq(get_u(st, "errors_EMAD_ENOMODEL"), 1);
    ck_assert_uint_eq(get_u(st, "requests_create"), 5);
}
END_TEST

START_TEST(test_server_pull_f16_param_rounds_to_pushed_dtype)
{
    /* F16 1.0 then 0x3c03 (1 + 3*2^-10) with decay 0.5: the float32 shadow is
     * 1 + 1.5*2^-10, a tie between F16 0x3c01 and 0x3c02; nearest even gives 0x3c02
     * (numpy: np.float16(np.float32(1.0014648)) -> 0x3c02). */
    uint16_t h1 = 0x3c00, h2 = 0x3c03, out;
    uint64_t shape = 1;
    const msgpack_object *r, *t;

    create_model("m", 0.5);
    for (int step = 1; step <= 2; step++) {
        rq_begin_push(&req, "m", (uint64_t)step, 1);
        pack_tensor("h", "param", "F16", &shape, 1, step == 1 ? &h1 : &h2, 2);
        assert_ok(send_req());
    }
    rq_begin(&req, "pull", 1);
    rq_kv_str(&req, "model", "m");
    r = send_req();
    assert_ok(r);
    t = &proto_map_get(r, "tensors")->via.array.ptr[0];
    ck_assert_int_eq(proto_map_get(t, "dtype")->via.str.ptr[0], 'F');
    ck_assert_uint_eq(proto_map_get(t, "data")->via.bin.size, 2);
    memcpy(&out, proto_map_get(t, "data")->via.bin.ptr, 2);
    ck_assert_uint_eq(out, 0x3c02);
}
END_TEST

/* 1 if the msgpack str o is valid UTF-8 without control characters. */
static int
str_is_utf8(const msgpack_object *o)
{
    ck_assert_int_eq(o->type, MSGPACK_OBJECT_STR);
    /* names_check_tensor() is a strict UTF-8 check for strings of 1..1024 bytes. */
    ck_assert_uint_le(o->via.str.size, EMAD_MAX_NAME_BYTES);
    return o->via.str.size == 0 || names_check_tensor(o->via.str.ptr, o->via.str.size) == 0;
}

START_TEST(test_server_error_strings_are_utf8_whatever_the_request_holds)
{
    /* Error messages quote names from the request; replies must still hold UTF-8
     * strings only (docs/PROTOCOL.md), or clients that decode str fail on them. */
    static const char bad_model[] = "m\xff\xfe";
    const msgpack_object *r, *e;
    float v[2] = {1, 2};
    uint64_t shape = 2;
    char name[1000];

    create_model("m", 0.5);
    /* Unknown model given as invalid UTF-8: the message quotes it. */
    rq_begin(&req, "pull", 1);
    rq_str(&req, "model");
    msgpack_pack_str_with_body(&req.pk, bad_model, 3);
    r = send_req();
    assert_err(r, EMAD_ENOMODEL, "no model 'm");
    ck_assert(str_is_utf8(proto_map_get(proto_map_get(r, "error"), "message")));

    /* Unknown tensor with an invalid name: no `tensor` key, a clean message. */
    rq_begin(&req, "pull", 2);
    rq_kv_str(&req, "model", "m");
    rq_str(&req, "tensors");
    msgpack_pack_array(&req.pk, 1);
    msgpack_pack_str_with_body(&req.pk, "\xc0\x80", 2);
    r = send_req();
    assert_err(r, EMAD_ENOTENSOR, NULL);
    e = proto_map_get(r, "error");
    ck_assert_ptr_null(proto_map_get(e, "tensor"));
    ck_assert(str_is_utf8(proto_map_get(e, "message")));
    /* A valid unknown name is named. */
    rq_begin(&req, "pull", 2);
    rq_kv_str(&req, "model", "m");
    rq_str(&req, "tensors");
    msgpack_pack_array(&req.pk, 1);
    msgpack_pack_str_with_body(&req.pk, "nope", 4);
    r = send_req();
    assert_err(r, EMAD_ENOTENSOR, "'nope'");
    ck_assert_int_eq(
        memcmp(proto_map_get(proto_map_get(r, "error"), "tensor")->via.str.ptr, "nope", 4), 0);

    /* A decode error on a tensor whose name is raw bytes: not named. */
    rq_begin_push(&req, "m", 1, 1);
    msgpack_pack_map(&req.pk, 5);
    rq_str(&req, "name");
    msgpack_pack_str_with_body(&req.pk, "w\xff", 2);
    rq_kv_str(&req, "kind", "weight");
    rq_kv_str(&req, "dtype", "F32");
    rq_str(&req, "shape");
    msgpack_pack_array(&req.pk, 1);
    msgpack_pack_uint64(&req.pk, 2);
    rq_str(&req, "data");
    msgpack_pack_bin_with_body(&req.pk, v, 8);
    r = send_req();
    assert_err(r, EMAD_EMALFORMED, "kind");
    e = proto_map_get(r, "error");
    ck_assert_ptr_null(proto_map_get(e, "tensor"));
    ck_assert(str_is_utf8(proto_map_get(e, "message")));

    /* A valid 999-byte name of 3-byte characters: the 512-byte message cuts one
     * in two, yet stays UTF-8, and `tensor` carries the whole name. */
    for (size_t i = 0; i < sizeof(name) - 1; i += 3)
        memcpy(name + i, "\xe2\x82\xac", 3); /* U+20AC EURO SIGN */
    name[sizeof(name) - 1] = '\0';
    assert_ok(push_f32("m", 1, name, v, 2));
    rq_begin_push(&req, "m", 2, 1);
    shape = 1;
    pack_tensor(name, "param", "F32", &shape, 1, v, 4);
    r = send_req();
    assert_err(r, EMAD_ESHAPE, NULL);
    e = proto_map_get(r, "error");
    ck_assert(str_is_utf8(proto_map_get(e, "message")));
    ck_assert_uint_eq(proto_map_get(e, "tensor")->via.str.size, 999);
    ck_assert_int_eq(memcmp(proto_map_get(e, "tensor")->via.str.ptr, name, 999), 0);
    assert_serving();
}
END_TEST

START_TEST(test_server_stats_count_bytes_in_and_out)
{
    const msgpack_object *r, *st;
    size_t hello_req, hello_reply, stats_req;

    rq_begin(&req, "hello", 0);
    hello_req = req.sb.size;
    assert_ok(send_req());
    hello_reply = reply_len;
    rq_begin(&req, "stats", 0);
    stats_req = req.sb.size;
    r = send_req();
    assert_ok(r);
    st = proto_map_get(r, "stats");
    ck_assert_uint_eq(get_u(st, "requests"), 2);
    ck_assert_uint_eq(get_u(st, "bytes_in"), hello_req + stats_req);
    /* The stats reply is built before it is counted: only the hello reply so far. */
    ck_assert_uint_eq(get_u(st, "bytes_out"), hello_reply);
}
END_TEST

static Suite *
server_suite(void)
{
    Suite *s = suite_create("server");
    TCase *tc = tcase_create("core");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_server_hello_reports_limits);
    tcase_add_test(tc, test_server_push_pull_round_trip);
    tcase_add_test(tc, test_server_push_same_step_is_stale);
    tcase_add_test(tc, test_server_rejects_garbage_and_keeps_serving);
    tcase_add_test(tc, test_server_rejects_version_and_op);
    tcase_add_test(tc, test_server_rejects_malformed_push_fields);
    tcase_add_test(tc, test_server_tensor_map_keys_any_order_first_wins);
    tcase_add_test(tc, test_server_error_names_tensor_for_shape_change);
    tcase_add_test(tc, test_server_large_pull_uses_session_and_read);
    tcase_add_test(tc, test_server_pull_inline_bytes);
    tcase_add_test(tc, test_server_transaction_over_the_wire);
    tcase_add_test(tc, test_server_create_list_drop_stats);
    tcase_add_test(tc, test_server_pull_f16_param_rounds_to_pushed_dtype);
    tcase_add_test(tc, test_server_error_strings_are_utf8_whatever_the_request_holds);
    tcase_add_test(tc, test_server_stats_count_bytes_in_and_out);
    tcase_set_timeout(tc, TU_TCASE_TIMEOUT);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(server_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/*
 * check_e2e.c - end-to-end suite: the real emad binary driven by libemad
 * and by raw nanomsg REQ sockets.
 *
 * Every test starts its own daemon on a free port with a private state
 * directory (tests/testutil.c) and stops it at the end, asserting a clean
 * exit. Expected values are computed here, independently of the daemon:
 * by hand for exactly representable numbers (decay 0.5 halves the distance,
 * so averages of small integers stay exact in every float type), and with
 * the documented float32 formula elsewhere. The raw-socket tests speak the
 * wire protocol of docs/PROTOCOL.md directly: garbage, wrong versions,
 * unknown operations, abandoned transactions and pull sessions read while
 * pushes go on.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <msgpack.h>
#include <nanomsg/nn.h>
#include <nanomsg/reqrep.h>

#include "emad.h"
#include "testutil.h"

#define MIB (1024u * 1024u)

static const char *const small_msg_args[] = {"--max-message-bytes", "1048576", NULL};

/* ---- helpers -------------------------------------------------------------------------------- */

/* Start a daemon with extra arguments (may be NULL) or fail the test. */
static void
daemon_up(tu_daemon *d, const char *const *argv)
{
    ck_assert_msg(tu_daemon_start(d, argv) == 0, "emad did not start");
}

/* Stop a daemon and assert it shut down cleanly. */
static void
daemon_down(tu_daemon *d)
{
    ck_assert_int_eq(tu_daemon_stop(d), 0);
}

/* Connect a client with options (NULL: defaults) or fail the test. */
static emad_client *
client_open(const tu_daemon *d, const emad_options *opts)
{
    emad_client *c = NULL;
    int rc = emad_connect(&c, d->url, opts);

    ck_assert_msg(rc == 0, "emad_connect(%s): %s", d->url, emad_strerror(rc));
    ck_assert_ptr_nonnull(c);
    return c;
}

/* Assert a libemad call succeeded, showing the client's last error if not. */
#define OK(c, call)                                                                                \
    do {                                                                                           \
        int ok_rc_ = (call);                                                                       \
        ck_assert_msg(ok_rc_ == 0, "%s: %s (%s)", #call, emad_strerror(ok_rc_),                    \
                      emad_last_error(c));                                                         \
    } while (0)

/* Value of a daemon counter; fails the test if the counter is missing. */
static uint64_t
stat_get(emad_client *c, const char *name)
{
    emad_stat *st = NULL;
    size_t n = 0;
    uint64_t v = 0;
    int found = 0;

    OK(c, emad_stats(c, &st, &n));
    for (size_t i = 0; i < n; i++) {
        if (strcmp(st[i].name, name) == 0) {
            v = st[i].value;
            found = 1;
        }
    }
    free(st);
    ck_assert_msg(found, "no counter '%s' in stats", name);
    return v;
}

/* A tensor description for a push. */
static emad_tensor
tensor(const char *name, int kind, int dtype, const void *data, uint64_t nbytes, uint32_t ndim,
       uint64_t d0, uint64_t d1)
{
    emad_tensor t;

    memset(&t, 0, sizeof(t));
    t.name = name;
    t.kind = kind;
    t.dtype = dtype;
    t.data = (void *)data;
    t.nbytes = nbytes;
    t.ndim = ndim;
    t.shape[0] = d0;
    t.shape[1] = d1;
    return t;
}

/* Find a pulled tensor by name or fail. */
static const emad_tensor *
model_find(const emad_model *m, const char *name)
{
    for (size_t i = 0; i < m->ntensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0)
            return &m->tensors[i];
    ck_abort_msg("pulled model has no tensor '%s'", name);
    return NULL;
}

/* Sleep for ms milliseconds. */
static void
sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A float buffer of n elements all equal to v (malloc'd). */
static float *
floats(size_t n, float v)
{
    float *p = malloc(n * sizeof(*p));

    ck_assert_ptr_nonnull(p);
    for (size_t i = 0; i < n; i++)
        p[i] = v;
    return p;
}

/* 1 if all n floats at p (any alignment) equal v. */
static int
all_equal(const void *p, size_t n, float v)
{
    for (size_t i = 0; i < n; i++) {
        float x;
        memcpy(&x, (const char *)p + i * sizeof(float), sizeof(x));
        if (x != v)
            return 0;
    }
    return 1;
}

/* ---- raw wire-protocol helpers -------------------------------------------------------------- */

/* A reply received on a raw socket, decoded in place. */
typedef struct raw_reply {
    void *msg;
    msgpack_unpacked u;
    const msgpack_object *root;
    int code; /* 0 if ok, else the error code (positive, as on the wire) */
} raw_reply;

/* Open a raw REQ socket connected to the daemon. */
static int
raw_open(const tu_daemon *d, int rcvtimeo_ms)
{
    int s = nn_socket(AF_SP, NN_REQ), max = 256 * MIB;

    ck_assert_int_ge(s, 0);
    ck_assert_int_eq(nn_setsockopt(s, NN_SOL_SOCKET, NN_RCVMAXSIZE, &max, sizeof(max)), 0);
    ck_assert_int_eq(
        nn_setsockopt(s, NN_SOL_SOCKET, NN_RCVTIMEO, &rcvtimeo_ms, sizeof(rcvtimeo_ms)), 0);
    ck_assert_int_ge(nn_connect(s, d->url), 0);
    return s;
}

/* Value of key in a msgpack map, or NULL. */
static const msgpack_object *
obj_get(const msgpack_object *map, const char *key)
{
    size_t klen = strlen(key);

    if (map == NULL || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == klen &&
            memcmp(k->via.str.ptr, key, klen) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

/* Unsigned value of key in map; fails the test if absent. */
static uint64_t
obj_u64(const msgpack_object *map, const char *key)
{
    const msgpack_object *o = obj_get(map, key);

    ck_assert_msg(o != NULL && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER, "reply has no uint '%s'",
                  key);
    return o->via.u64;
}

/* Send len bytes and decode the reply into *r (fails the test on transport errors). */
static void
raw_call(int s, const void *buf, size_t len, raw_reply *r)
{
    size_t off = 0;
    const msgpack_object *ok, *err;
    int n;

    memset(r, 0, sizeof(*r));
    ck_assert_int_eq(nn_send(s, buf, len, 0), (int)len);
    n = nn_recv(s, &r->msg, NN_MSG, 0);
    ck_assert_msg(n >= 0, "no reply: %s", nn_strerror(nn_errno()));
    msgpack_unpacked_init(&r->u);
    ck_assert_int_eq(msgpack_unpack_next(&r->u, r->msg, (size_t)n, &off), MSGPACK_UNPACK_SUCCESS);
    ck_assert_uint_eq(off, (size_t)n);
    r->root = &r->u.data;
    ck_assert_int_eq(r->root->type, MSGPACK_OBJECT_MAP);
    ck_assert_uint_eq(obj_u64(r->root, "v"), 1);
    ok = obj_get(r->root, "ok");
    ck_assert(ok != NULL && ok->type == MSGPACK_OBJECT_BOOLEAN);
    if (!ok->via.boolean) {
        const msgpack_object *name;
        err = obj_get(r->root, "error");
        ck_assert(err != NULL);
        r->code = (int)obj_u64(err, "code");
        name = obj_get(err, "name");
        ck_assert(name != NULL && name->type == MSGPACK_OBJECT_STR);
        ck_assert(obj_get(err, "message") != NULL);
    }
}

/* Free a raw reply. */
static void
raw_reply_free(raw_reply *r)
{
    msgpack_unpacked_destroy(&r->u);
    if (r->msg != NULL)
        nn_freemsg(r->msg);
    r->msg = NULL;
}

/* Send a packed sbuffer, expect error code `code` (0: success), and free the reply. */
static void
raw_expect(int s, const msgpack_sbuffer *sb, int code)
{
    raw_reply r;

    raw_call(s, sb->data, sb->size, &r);
    ck_assert_msg(r.code == code, "expected error %d, got %d", code, r.code);
    raw_reply_free(&r);
}

/* Pack a string. */
static void
pstr(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

/* Start a request map with v and op plus n more entries. */
static void
phead(msgpack_packer *pk, unsigned v, const char *op, size_t n)
{
    msgpack_pack_map(pk, 2 + n);
    pstr(pk, "v");
    msgpack_pack_uint64(pk, v);
    pstr(pk, "op");
    pstr(pk, op);
}

/* Start a raw transaction push of one tensor in sb: the tensor (ptensor()) follows. */
static void
ptxn_push(msgpack_sbuffer *sb, msgpack_packer *pk, uint64_t txn)
{
    msgpack_sbuffer_clear(sb);
    phead(pk, 1, "push", 2);
    pstr(pk, "txn");
    msgpack_pack_uint64(pk, txn);
    pstr(pk, "tensors");
    msgpack_pack_array(pk, 1);
}

/* Pack a request of op ("commit" or "abort") for transaction txn into sb. */
static void
ptxn_end(msgpack_sbuffer *sb, msgpack_packer *pk, const char *op, uint64_t txn)
{
    msgpack_sbuffer_clear(sb);
    phead(pk, 1, op, 1);
    pstr(pk, "txn");
    msgpack_pack_uint64(pk, txn);
}

/* Open a transaction on model at step over a raw socket (pk packs into sb); its id. */
static uint64_t
raw_begin(int s, msgpack_sbuffer *sb, msgpack_packer *pk, const char *model, uint64_t step)
{
    raw_reply r;
    uint64_t txn;

    msgpack_sbuffer_clear(sb);
    phead(pk, 1, "begin", 2);
    pstr(pk, "model");
    pstr(pk, model);
    pstr(pk, "step");
    msgpack_pack_uint64(pk, step);
    raw_call(s, sb->data, sb->size, &r);
    ck_assert_int_eq(r.code, 0);
    txn = obj_u64(r.root, "txn");
    raw_reply_free(&r);
    return txn;
}

/* Pack one tensor map (1-D) for a raw push; with_offset adds "offset". */
static void
ptensor(msgpack_packer *pk, const char *name, const char *kind, const char *dtype, uint64_t dim,
        const void *data, size_t len, int with_offset, uint64_t offset)
{
    msgpack_pack_map(pk, 5 + with_offset);
    pstr(pk, "name");
    pstr(pk, name);
    pstr(pk, "kind");
    pstr(pk, kind);
    pstr(pk, "dtype");
    pstr(pk, dtype);
    pstr(pk, "shape");
    msgpack_pack_array(pk, 1);
    msgpack_pack_uint64(pk, dim);
    pstr(pk, "data");
    msgpack_pack_bin(pk, len);
    msgpack_pack_bin_body(pk, data, len);
    if (with_offset) {
        pstr(pk, "offset");
        msgpack_pack_uint64(pk, offset);
    }
}

/* ---- connect, names, models ----------------------------------------------------------------- */

/* hello learns the limit; no daemon, bad URLs and bad options fail cleanly. */
START_TEST(test_e2e_connect_hello)
{
    tu_daemon d, d2;
    emad_client *c, *bad = (emad_client *)1;
    emad_options o;
    int port;

    daemon_up(&d, NULL);
    c = client_open(&d, NULL);
    ck_assert_uint_eq(emad_server_max_message_bytes(c), 67108864);
    ck_assert_str_eq(emad_last_error(c), "");
    emad_close(c);

    daemon_up(&d2, small_msg_args);
    c = client_open(&d2, NULL);
    ck_assert_uint_eq(emad_server_max_message_bytes(c), 1048576);
    emad_close(c);
    daemon_down(&d2);

    /* Nobody listening: a connect error within the connect timeout, and no client. */
    emad_options_init(&o);
    o.connect_timeout_ms = 300;
    port = tu_free_port();
    {
        char url[64];
        snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", port);
        ck_assert_int_eq(emad_connect(&bad, url, &o), EMAD_ECONNECT);
        ck_assert_ptr_null(bad);
    }
    ck_assert_int_eq(emad_connect(&bad, "nonsense://x", NULL), EMAD_EINVAL);
    o.timeout_ms = 0;
    ck_assert_int_eq(emad_connect(&bad, d.url, &o), EMAD_EINVAL);

    /* Library helpers. */
    ck_assert_str_eq(emad_version(), "0.1.0");
    ck_assert_str_eq(emad_errname(EMAD_ESHAPE), "EMAD_ESHAPE");
    ck_assert_ptr_null(emad_errname(12345));
    ck_assert_str_eq(emad_strerror(EMAD_ENOMODEL), "no such model");
    ck_assert_str_eq(emad_strerror(-ENOENT), strerror(ENOENT));
    ck_assert_str_eq(emad_dtype_name(EMAD_BF16), "BF16");
    ck_assert_int_eq(emad_dtype_from_name("I64"), EMAD_I64);
    ck_assert_int_eq(emad_dtype_from_name("F8"), EMAD_DTYPE_INVALID);
    ck_assert_uint_eq(emad_dtype_size(EMAD_F64), 8);
    ck_assert_uint_eq(emad_dtype_size(EMAD_DTYPE_INVALID), 0);
    daemon_down(&d);
}
END_TEST

/* Models are created, listed with their decay, described and dropped; errors name the model. */
START_TEST(test_e2e_create_list_drop)
{
    tu_daemon d;
    emad_client *c;
    emad_model_info *info;
    emad_tensor *ts;
    emad_model *m;
    size_t n;

    daemon_up(&d, NULL);
    c = client_open(&d, NULL);
    OK(c, emad_create(c, "run-a", 0.5, 0));
    OK(c, emad_create(c, "run_b.2", EMAD_DEFAULT_DECAY, 0));
    ck_assert_int_eq(emad_create(c, "run-a", 0.5, 0), EMAD_EEXIST);
    ck_assert_str_ne(emad_last_error(c), "");
    OK(c, emad_create(c, "run-a", 0.5, 1));
    ck_assert_int_eq(emad_create(c, "run-a", 0.25, 1), EMAD_EEXIST);
    ck_assert_int_eq(emad_create(c, ".hidden", 0.5, 0), EMAD_ENAME);
    ck_assert_int_eq(emad_create(c, "a b", 0.5, 0), EMAD_ENAME);
    ck_assert_int_eq(emad_create(c, "x", 1.5, 0), EMAD_ERANGE);
    ck_assert_int_eq(emad_create(c, "x", -0.1, 0), EMAD_ERANGE);
    ck_assert_int_eq(emad_create(c, NULL, 0.5, 0), EMAD_EINVAL);

    OK(c, emad_list(c, &info, &n));
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(info[0].name, "run-a");
    ck_assert(info[0].decay == 0.5);
    ck_assert_str_eq(info[1].name, "run_b.2");
    ck_assert(info[1].decay == 0.999);
    ck_assert_uint_eq(info[0].step, 0);
    ck_assert_uint_eq(info[0].ntensors, 0);
    ck_assert_uint_eq(info[0].shadow_bytes, 0);
    free(info);

    {
        emad_model_info mi;
        OK(c, emad_describe(c, "run-a", &mi, &ts, &n));
        ck_assert_str_eq(mi.name, "run-a");
        ck_assert(mi.decay == 0.5);
        ck_assert_uint_eq(n, 0);
        emad_tensors_free(ts, n);
    }

    OK(c, emad_drop(c, "run-a"));
    OK(c, emad_list(c, &info, &n));
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(info[0].name, "run_b.2");
    free(info);
    ck_assert_int_eq(emad_drop(c, "run-a"), EMAD_ENOMODEL);
    ck_assert_ptr_nonnull(strstr(emad_last_error(c), "run-a"));
    {
        emad_model_info mi;
        ck_assert_int_eq(emad_describe(c, "run-a", &mi, &ts, &n), EMAD_ENOMODEL);
    }
    ck_assert_int_eq(emad_pull(c, "run-a", NULL, 0, &m), EMAD_ENOMODEL);
    ck_assert_ptr_null(m);
    ck_assert_uint_eq(stat_get(c, "models"), 1);
    emad_close(c);
    daemon_down(&d);
}
END_TEST

/* ---- push and pull of every kind of tensor -------------------------------------------------- */

/* Every param dtype is averaged and every buffer copied, with hand-computed results. */
START_TEST(test_e2e_push_pull_all_dtypes)
{
    tu_daemon d;
    emad_client *c;
    emad_push_result res;
    emad_model *m;
    emad_model_info info;
    emad_tensor *desc, t[8];
    size_t n;
    /* Step 1 and step 2 values; with decay 0.5 the average is (s + p) / 2, exact here. */
    float f32a[4] = {1, 2, 3, 4}, f32b[4] = {3, 4, 5, 6}, f32e[4] = {2, 3, 4, 5};
    uint16_t f16a[3] = {0x3C00, 0xC000, 0x3800}; /* 1.0, -2.0, 0.5 */
    uint16_t f16b[3] = {0x4200, 0x4400, 0x4100}; /* 3.0, 4.0, 2.5 */
    uint16_t f16e[3] = {0x4000, 0x3C00, 0x3E00}; /* 2.0, 1.0, 1.5 */
    uint16_t bf16a[2] = {0x3F80, 0x40C0};        /* 1.0, 6.0 */
    uint16_t bf16b[2] = {0x4040, 0xBF80};        /* 3.0, -1.0 */
    uint16_t bf16e[2] = {0x4000, 0x4020};        /* 2.0, 2.5 */
    double f64a[2] = {1.0, 0.1}, f64b[2] = {2.0, 0.3}, f64e[2];
    int64_t i64a[2] = {-5, INT64_C(1) << 40}, i64b[2] = {7, -(INT64_C(1) << 50)};
    uint8_t boola[3] = {1, 0, 1}, boolb[3] = {0, 1, 1};
    int32_t i32a = 42, i32b = -43;
    uint16_t u16a[2] = {65535, 1}, u16b[2] = {3, 65534};
    const char *order[8] = {"fc.weight", "fc.h", "fc.bf",  "fc.d",
                            "bn.count",  "mask", "scalar", "u16"};

    {
        /* The F64 expectation, from the documented formula in float64. */
        volatile double s0 = 0.1, p0 = 0.3, c0 = 1.0 - 0.5;
        volatile double diff = s0 - p0, tt = c0 * diff;
        f64e[0] = 1.5;
        f64e[1] = s0 - tt;
    }
    daemon_up(&d, NULL);
    c = client_open(&d, NULL);
    OK(c, emad_create(c, "m", 0.5, 0));
    t[0] = tensor(order[0], EMAD_PARAM, EMAD_F32, f32a, sizeof(f32a), 2, 2, 2);
    t[1] = tensor(order[1], EMAD_PARAM, EMAD_F16, f16a, sizeof(f16a), 1, 3, 0);
    t[2] = tensor(order[2], EMAD_PARAM, EMAD_BF16, bf16a, sizeof(bf16a), 1, 2, 0);
    t[3] = tensor(order[3], EMAD_PARAM, EMAD_F64, f64a, sizeof(f64a), 1, 2, 0);
    t[4] = tensor(order[4], EMAD_BUFFER, EMAD_I64, i64a, sizeof(i64a), 1, 2, 0);
    t[5] = tensor(order[5], EMAD_BUFFER, EMAD_BOOL, boola, sizeof(boola), 1, 3, 0);
    t[6] = tensor(order[6], EMAD_BUFFER, EMAD_I32, &i32a, sizeof(i32a), 0, 0, 0);
    t[7] = tensor(order[7], EMAD_BUFFER, EMAD_U16, u16a, sizeof(u16a), 1, 2, 0);
    OK(c, emad_push(c, "m", 1, t, 8, &res));
    ck_assert_uint_eq(res.applied, 8);
    ck_assert_uint_eq(res.stale, 0);
    ck_assert_uint_eq(res.step, 1);
    ck_assert_uint_eq(res.messages, 1);

    /* The first push initializes every shadow to the pushed values. */
    OK(c, emad_pull(c, "m", NULL, 0, &m));
    ck_assert_uint_eq(m->ntensors, 8);
    ck_assert_int_eq(memcmp(model_find(m, "fc.h")->data, f16a, sizeof(f16a)), 0);
    ck_assert_int_eq(memcmp(model_find(m, "fc.bf")->data, bf16a, sizeof(bf16a)), 0);
    emad_model_free(m);

    t[0].data = f32b;
    t[1].data = f16b;
    t[2].data = bf16b;
    t[3].data = f64b;
    t[4].data = i64b;
    t[5].data = boolb;
    t[6].data = &i32b;
    t[7].data = u16b;
    OK(c, emad_push(c, "m", 2, t, 8, &res));
    ck_assert_uint_eq(res.applied, 8);
    ck_assert_uint_eq(res.step, 2);

    OK(c, emad_pull(c, "m", NULL, 0, &m));
    ck_assert_str_eq(m->name, "m");
    ck_assert_uint_eq(m->step, 2);
    ck_assert_uint_eq(m->ntensors, 8);
    for (size_t i = 0; i < 8; i++) {
        ck_assert_str_eq(m->tensors[i].name, order[i]); /* first-push order */
        ck_assert_int_eq(m->tensors[i].kind, t[i].kind);
        ck_assert_int_eq(m->tensors[i].dtype, t[i].dtype); /* F16/BF16 come back as pushed */
        ck_assert_uint_eq(m->tensors[i].ndim, t[i].ndim);
        for (uint32_t k = 0; k < t[i].ndim; k++)
            ck_assert_uint_eq(m->tensors[i].shape[k], t[i].shape[k]);
        ck_assert_uint_eq(m->tensors[i].nbytes, t[i].nbytes);
        ck_assert_uint_eq(m->tensors[i].step, 2);
    }
    ck_assert_int_eq(memcmp(m->tensors[0].data, f32e, sizeof(f32e)), 0);
    ck_assert_int_eq(memcmp(m->tensors[1].data, f16e, sizeof(f16e)), 0);
    ck_assert_int_eq(memcmp(m->tensors[2].data, bf16e, sizeof(bf16e)), 0);
    ck_assert_int_eq(memcmp(m->tensors[3].data, f64e, sizeof(f64e)), 0);
    /* Buffers are copied, never averaged. */
    ck_assert_int_eq(memcmp(m->tensors[4].data, i64b, sizeof(i64b)), 0);
    ck_assert_int_eq(memcmp(m->tensors[5].data, boolb, sizeof(boolb)), 0);
    ck_assert_int_eq(memcmp(m->tensors[6].data, &i32b, sizeof(i32b)), 0);
    ck_assert_int_eq(memcmp(m->tensors[7].data, u16b, sizeof(u16b)), 0);
    emad_model_free(m);

    /* A partial push at step 3 moves only fc.weight and the committed step. */
    {
        float f32c[4] = {4, 5, 6, 7}, f32e3[4] = {3, 4, 5, 6};
        const char *names[2] = {"fc.weight", "bn.count"};

        t[0].data = f32c;
        OK(c, emad_push(c, "m", 3, t, 1, &res));
        ck_assert_uint_eq(res.applied, 1);
        ck_assert_uint_eq(res.step, 3);
        OK(c, emad_pull(c, "m", names, 2, &m));
        ck_assert_uint_eq(m->ntensors, 2);
        ck_assert_uint_eq(m->step, 3);
        ck_assert_str_eq(m->tensors[0].name, "fc.weight");
        ck_assert_str_eq(m->tensors[1].name, "bn.count");
        ck_assert_uint_eq(m->tensors[0].step, 3);
        ck_assert_uint_eq(m->tensors[1].step, 2);
        ck_assert_int_eq(memcmp(m->tensors[0].data, f32e3, sizeof(f32e3)), 0);
        ck_assert_int_eq(memcmp(m->tensors[1].data, i64b, sizeof(i64b)), 0);
        emad_model_free(m);
    }

    OK(c, emad_describe(c, "m", &info, &desc, &n));
    ck_assert_str_eq(info.name, "m");
    ck_assert(info.decay == 0.5);
    ck_assert_uint_eq(info.step, 3);
    ck_assert_uint_eq(info.ntensors, 8);
    ck_assert_uint_eq(n, 8);
    for (size_t i = 0; i < 8; i++) {
        ck_assert_str_eq(desc[i].name, order[i]);
        ck_assert_int_eq(desc[i].kind, t[i].kind);
        ck_assert_int_eq(desc[i].dtype, t[i].dtype);
        ck_assert_uint_eq(desc[i].nbytes, t[i].nbytes);
        ck_assert_uint_eq(desc[i].step, i == 0 ? 3 : 2);
        ck_assert_ptr_null(desc[i].data);
    }
    ck_assert_uint_eq(desc[0].ndim, 2);
    ck_assert_uint_eq(desc[6].ndim, 0);
    emad_tensors_free(desc, n);
    ck_assert_uint_eq(stat_get(c, "tensors_applied"), 17);
    emad_close(c);
    daemon_down(&d);
}
END_TEST

/* Decay 0.999 matches the documented float32 update bit for bit. */
START_TEST(test_e2e_default_decay_matches_float32_formula)
{
    tu_daemon d;
    emad_client *c;
    emad_model *m;
    enum { N = 1000, STEPS = 5 };
    float *s = malloc(N * sizeof(float)), *p = malloc(N * sizeof(float));
    uint64_t rng = 12345;
    const float cf = (float)(1.0 - 0.999);

    ck_assert(s != NULL && p != NULL);
    daemon_up(&d, NULL);
    c = client_open(&d, NULL);
    OK(c, emad_create(c, "ref", 0.999, 0));
    for (int step = 1; step <= STEPS; step++) {
        emad_tensor t = tensor("w", EMAD_PARAM, EMAD_F32, p, N * sizeof(float), 1, N, 0);

        for (size_t i = 0; i < N; i++)
            p[i] = tu_randf(&rng) * 10.0f;
        OK(c, emad_push(c, "ref", (uint64_t)step, &t, 1, NULL));
        for (size_t i = 0; i < N; i++) {
            if (step == 1) {
                s[i] = p[i];
            } else {
                volatile float diff = s[i] - p[i];
                volatile float tt = cf * diff;
                s[i] = s[i] - tt;
            }
        }
    }
    OK(c, emad_pull(c, "ref", NULL, 0, &m));
    ck_assert_int_eq(memcmp(m->tensors[0].data, s, N * sizeof(float)), 0);
    emad_model_free(m);
    free(s);
    free(p);
    emad_close(c);
    daemon_down(&d);
}
END_TEST

/* ---- stale steps and rejected pushes -------------------------------------------------------- */

/* A repeated or older step is stale: counted, and the data stay as they were. */
START_TEST(test_e2e_stale_step_changes_nothing)
{
    tu_daemon d;
    emad_client *c;
    emad_push_result res;
    emad_model *m;
    float a[3] = {1, 2, 3}, b[3] = {9, 9, 9};
    int64_t ca = 5, cb = 6;
    emad_tensor t[2];

    daemon_up(&d, NULL);
    c = client_open(&d, NULL);
    OK(c, emad_create(c, "m", 0.5, 0));
    t[0] = tensor("w", EMAD_PARAM, EMAD_F32, a, sizeof(a), 1, 3, 0);
    t[1] = tensor("n", EMAD_BUFFER, EMAD_I64, &ca, sizeof(ca), 0, 0, 0);
    OK(c, emad_push(c, "m", 5, t, 2, &res));
    ck_assert_uint_eq(res.applied, 2);

    /* The same step again (a resend, or another replica): nothing applied. */
    t[0].data = b;
    t[1].data = &cb;
    OK(c, emad_push(c, "m", 5, t, 2, &res));
    ck_assert_uint_eq(res.applied, 0);
    ck_assert_uint_eq(res.stale, 2);
    ck_assert_uint_eq(res.step, 5);
    /* An older step too. */
    OK(c, emad_push(c, "m", 4, t, 2, &res));
    ck_assert_uint_eq(res.applied, 0);
    ck_assert_uint_eq(res.stale, 2);
    ck_assert_uint_eq(res.step, 5);

    OK(c, emad_pull(c, "m", NULL, 0, &m));
    ck_assert_uint_eq(m->step, 5);
    ck_assert_int_eq(memcmp(model_find(m, "w")->data, a, sizeof(a)), 0);
    ck_assert_int_eq(memcmp(model_find(m, "n")->data, &ca, sizeof(ca)), 0);
    emad_model_free(m);
    ck_assert_uint_eq(stat_get(c, "tensors_stale"), 4);
    ck_assert_uint_eq(stat_get(c, "tensors_applied"), 2);
    emad_close(c);
    daemon_down(&d);
}
END_TEST

/* The EMA options through libemad: configuration round trip, writers with slices, pull options. */
START_TEST(test_e2e_ema_options)
{
    tu_daemon d;
    emad_client *c;
    emad_model_config cfg, got;
    emad_push_result res;
    emad_pull_options po;
    emad_model *m;
    emad_tensor t, into;
    float a[4] = {0, 0, 0, 0}, b[4] = {4, 8, -4, 1.00390625f}, nan = __builtin_nanf("");
    uint16_t bf[4];
    uint64_t step;

    daemon_up(&d, NULL);
    c = client_open(&d, NULL);
    emad_config_init(&cfg);
    cfg.ndecays = 2;
    cfg.decays[0] = 0.5;
    cfg.decays[1] = 0.75;
    cfg.schedule = emad_option_from_name("schedule", "warmup");
    cfg.update_after_step = 3;
    cfg.power = 0.75;
    cfg.writers = 2;
    cfg.copy[0] = "bn.*";
    cfg.ncopy = 1;
    cfg.ignore[0] = "tmp.*";
    cfg.nignore = 1;
    OK(c, emad_create_config(c, "m", &cfg, 0));
    OK(c, emad_create_config(c, "m", &cfg, 1)); /* same configuration: fine with exist_ok */
    OK(c, emad_get_config(c, "m", &got));
    ck_assert_uint_eq(got.ndecays, 2);
    ck_assert_double_eq(got.decays[1], 0.75);
    ck_assert_int_eq(got.schedule, EMAD_SCHEDULE_WARMUP);
    ck_assert_uint_eq(got.update_after_step, 3);
    ck_assert_double_eq(got.power, 0.75);
    ck_assert_uint_eq(got.writers, 2);
    ck_assert_uint_eq(got.ncopy, 1);
    ck_assert_str_eq(got.copy[0], "bn.*");
    ck_assert_str_eq(got.ignore[0], "tmp.*");
    emad_config_free(&got);
    cfg.decays[1] = 0.8;
    ck_assert_int_eq(emad_create_config(c, "m", &cfg, 1), EMAD_EEXIST);

    /* Make it a constant schedule again, live; writers cannot change. */
    cfg.decays[1] = 0.75;
    cfg.schedule = EMAD_SCHEDULE_CONSTANT;
    cfg.update_after_step = 0;
    OK(c, emad_configure(c, "m", &cfg));
    cfg.writers = 3;
    ck_assert_int_eq(emad_configure(c, "m", &cfg), EMAD_EIMMUTABLE);
    ck_assert_ptr_nonnull(strstr(emad_last_error(c), "writers"));

    /* Two writers, each half of w; the step shows once both pushed. */
    t = tensor("w", EMAD_PARAM, EMAD_F32, a, 8, 1, 4, 0);
    t.count = 2;
    OK(c, emad_push_as(c, "m", 1, 0, &t, 1, &res));
    ck_assert_int_eq(res.pending, 1);
    t.offset = 2;
    t.data = &a[2];
    OK(c, emad_push_as(c, "m", 1, 1, &t, 1, &res));
    ck_assert_int_eq(res.pending, 0);
    ck_assert_uint_eq(res.step, 1);
    t.data = &b[2];
    OK(c, emad_push_as(c, "m", 2, 1, &t, 1, &res));
    OK(c, emad_pull(c, "m", NULL, 0, &m));
    ck_assert_uint_eq(m->step, 1);
    emad_model_free(m);
    t.offset = 0;
    t.data = b;
    OK(c, emad_push_as(c, "m", 2, 0, &t, 1, &res));
    ck_assert_uint_eq(res.step, 2);
    ck_assert_int_eq(emad_push_as(c, "m", 3, 2, &t, 1, &res), EMAD_ERANGE);
    t.count = 3; /* overlaps writer 0's earlier slice? no: a new step, but nbytes is wrong */
    ck_assert_int_eq(emad_push_as(c, "m", 3, 0, &t, 1, &res), EMAD_ESIZE);

    /* Pull the second decay (0 - 0.25 * (0 - b)) and the first as BF16. */
    emad_pull_options_init(&po);
    po.decay = 0.75;
    OK(c, emad_pull_ex(c, "m", NULL, 0, &po, &m));
    ck_assert_float_eq(((const float *)model_find(m, "w")->data)[0], 1.0f);
    ck_assert_float_eq(((const float *)model_find(m, "w")->data)[1], 2.0f);
    emad_model_free(m);
    emad_pull_options_init(&po);
    po.dtype = EMAD_BF16;
    into = (emad_tensor){.name = "w", .data = bf, .nbytes = sizeof(bf)};
    OK(c, emad_pull_into_ex(c, "m", &into, 1, &po, &step));
    ck_assert_int_eq(into.dtype, EMAD_BF16);
    ck_assert_uint_eq(into.nbytes, 8);
    /* 0 - 0.5 * (0 - b): 2, 4, -2, 0.501953125 -> BF16 0x4000, 0x4080, 0xc000, 0x3f00 (RNE). */
    ck_assert_uint_eq(bf[0], 0x4000);
    ck_assert_uint_eq(bf[1], 0x4080);
    ck_assert_uint_eq(bf[2], 0xc000);
    ck_assert_uint_eq(bf[3], 0x3f00);
    po.decay = 0.6;
    ck_assert_int_eq(emad_pull_ex(c, "m", NULL, 0, &po, &m), EMAD_ERANGE);

    /* A NaN param: rejected as a whole, with the daemon's code and message. */
    OK(c, emad_create(c, "n", 0.5, 0));
    t = tensor("w", EMAD_PARAM, EMAD_F32, &nan, 4, 0, 0, 0);
    ck_assert_int_eq(emad_push(c, "n", 1, &t, 1, &res), EMAD_ENONFINITE);
    ck_assert_ptr_nonnull(strstr(emad_last_error(c), "tensor 'w': 1 NaN or Inf value"));
    ck_assert_uint_eq(stat_get(c, "errors_EMAD_ENONFINITE"), 1);
    ck_assert_str_eq(emad_errname(EMAD_ENONFINITE), "EMAD_ENONFINITE");
    emad_close(c);
    daemon_down(&d);
}
END_TEST

/* A changed shape, dtype or kind rejects the whole push; the daemon keeps serving. */
START_TEST(test_e2e_shape_change_rejected)
{
    tu_daemon d;
    emad_client *c;
    emad_push_result res;
    emad_model *m;
    float w[8] = {1, 2, 3, 4, 5, 6, 7, 8}, w12[12] = {0}, b[2] = {1, 1}, b2[2] = {3, 3};
    double wd[8] = {0};
    emad_tensor t[2];

    daemon_up(&d, NULL);
    c = client_open(&d, NULL);
    OK(c, emad_create(c, "m", 0.5, 0));
    t[0] = tensor("bias", EMAD_PARAM, EMAD_F32, b, sizeof(b), 1, 2, 0);
    t[1] = tensor("fc.weight", EMAD_PARAM, EMAD_F32, w, sizeof(w), 2, 2, 4);
    OK(c, emad_push(c, "m", 1, t, 2, &res));

    /* fc.weight as [3, 4]: the whole push is rejected, bias included. */
    t[0].data = b2;
    t[1] = tensor("fc.weight", EMAD_PARAM, EMAD_F32, w12, sizeof(w12), 2, 3, 4);
    ck_assert_int_eq(emad_push(c, "m", 2, t, 2, &res), EMAD_ESHAPE);
    ck_assert_ptr_nonnull(strstr(emad_last_error(c), "'fc.weight'"));
    ck_assert_ptr_nonnull(strstr(emad_last_error(c), "[3, 4]"));

    /* Same shape, other dtype or kind: EMAD_EKIND. */
    t[1] = tensor("fc.weight", EMAD_PARAM, EMAD_F64, wd, sizeof(wd), 2, 2, 4);
    ck_assert_int_eq(emad_push(c, "m", 2, t, 2, &res), EMAD_EKIND);
    t[1] = tensor("fc.weight", EMAD_BUFFER, EMAD_F32, w, sizeof(w), 2, 2, 4);
    ck_assert_int_eq(emad_push(c, "m", 2, t, 2, &res), EMAD_EKIND);
    ck_assert_ptr_nonnull(strstr(emad_last_error(c), "fc.weight"));

    OK(c, emad_pull(c, "m", NULL, 0, &m));
    ck_assert_uint_eq(m->step, 1);
    ck_assert_int_eq(memcmp(model_find(m, "bias")->data, b, sizeof(b)), 0);
    ck_assert_uint_eq(model_find(m, "fc.weight")->shape[0], 2);
    emad_model_free(m);

    /* The daemon still serves, and a correct push goes through. */
    t[1] = tensor("fc.weight", EMAD_PARAM, EMAD_F32, w, sizeof(w), 2, 2, 4);
    OK(c, emad_push(c, "m", 2, t, 2, &res));
    ck_assert_uint_eq(res.applied, 2);
    ck_assert_uint_eq(stat_get(c, "errors_EMAD_ESHAPE"), 1);
    ck_assert_uint_eq(stat_get(c, "errors_EMAD_EKIND"), 2);
    ck_assert_uint_eq(stat_get(c, "pushes_rejected"), 3);
    emad_close(c);
    daemon_down(&d);
}
END_TEST

/* Invalid arguments are refused by the library without any request. */
START_TEST(test_e2e_bad_arguments_rejected_before_sending)
{
    tu_daemon d;
    emad_client *c;
    emad_push_result res;
    int32_t iv[2] = {1, 2};
    float fv[2] = {1, 2};
    emad_tensor t[2];
    uint64_t requests;

    daemon_up(&d, NULL);
    c = client_open(&d, NULL);
    OK(c, emad_create(c, "m", 0.5, 0));
    requests = stat_get(c, "requests");

    /* An integer param. */
    t[0] = tensor("counts", EMAD_PARAM, EMAD_I32, iv, sizeof(iv), 1, 2, 0);
    ck_assert_int_eq(emad_push(c, "m", 1, t, 1, &res), EMAD_EDTYPE);
    ck_assert_ptr_nonnull(strstr(emad_last_error(c), "counts"));
    /* Unknown dtype and kind. */
    t[0] = tensor("w", EMAD_PARAM, 99, fv, sizeof(fv), 1, 2, 0);
    ck_assert_int_eq(emad_push(c, "m", 1, t, 1, &res), EMAD_EDTYPE);
    t[0] = tensor("w", 7, EMAD_F32, fv, sizeof(fv), 1, 2, 0);
    ck_assert_int_eq(emad_push(c, "m", 1, t, 1, &res), EMAD_EINVAL);
    /* nbytes that do not match the shape. */
    t[0] = tensor("w", EMAD_PARAM, EMAD_F32, fv, 4, 1, 2, 0);
    ck_assert_int_eq(emad_push(c, "m", 1, t, 1, &res), EMAD_ESIZE);
    ck_assert_ptr_nonnull(strstr(emad_last_error(c), "'w'"));
    /* The same name twice. */
    t[0] = tensor("w", EMAD_PARAM, EMAD_F32, fv, sizeof(fv), 1, 2, 0);
    t[1] = tensor("w", EMAD_BUFFER, EMAD_I32, iv, sizeof(iv), 1, 2, 0);
    ck_assert_int_eq(emad_push(c, "m", 1, t, 2, &res), EMAD_EDUP);
    /* Bad names, NULLs, nothing to push, too many dimensions. */
    t[0] = tensor("", EMAD_PARAM, EMAD_F32, fv, sizeof(fv), 1, 2, 0);
    ck_assert_int_eq(emad_push(c, "m", 1, t, 1, &res), EMAD_ENAME);
    t[0] = tensor("a\nb", EMAD_PARAM, EMAD_F32, fv, sizeof(fv), 1, 2, 0);
    ck_assert_int_eq(emad_push(c, "m", 1, t, 1, &res), EMAD_ENAME);
    t[0] = tensor(NULL, EMAD_PARAM, EMAD_F32, fv, sizeof(fv), 1, 2, 0);
    ck_assert_int_eq(emad_push(c, "m", 1, t, 1, &res), EMAD_EINVAL);
    t[0] = tensor("w", EMAD_PARAM, EMAD_F32, NULL, sizeof(fv), 1, 2, 0);
    ck_assert_int_eq(emad_push(c, "m", 1, t, 1, &res), EMAD_EINVAL);
    t[0] = tensor("w", EMAD_PARAM, EMAD_F32, fv, sizeof(fv), 17, 2, 0);
    ck_assert_int_eq(emad_push(c, "m", 1, t, 1, &res), EMAD_ELIMIT);
    ck_assert_int_eq(emad_push(c, "m", 1, t, 0, &res), EMAD_EINVAL);
    ck_assert_int_eq(emad_push(c, "bad name", 1, t, 1, &res), EMAD_ENAME);
    ck_assert_int_eq(emad_push(NULL, "m", 1, t, 1, &res), EMAD_EINVAL);
    {
        const char *names[1] = {"a\tb"};
        emad_model *m;
        ck_assert_int_eq(emad_pull(c, "m", names, 1, &m), EMAD_ENAME);
    }

    /* None of these reached the daemon (the stats call itself is one request). */
    ck_assert_uint_eq(stat_get(c, "requests"), requests + 1);
    emad_close(c);
    daemon_down(&d);
}
END_TEST

/* Unknown models and tensors get EMAD_ENOMODEL / EMAD_ENOTENSOR naming them. */
START_TEST(test_e2e_unknown_model_and_tensor)
{
    tu_daemon d;
    emad_client *c;
    emad_push_result res;
    emad_model *m = NULL;
    float fv[2] = {1, 2};
    emad_tensor t = tensor("w", EMAD_PARAM, EMAD_F32, fv, sizeof(fv), 1, 2, 0);
    const char *names[2] = {"w", "nope"};

    daemon_up(&d, NULL);
    c = client_open(&d, NULL);
    ck_assert_int_eq(emad_push(c, "ghost", 1, &t, 1, &res), EMAD_ENOMODEL);
    ck_assert_ptr_nonnull(strstr(emad_last_error(c), "ghost"));
    ck_assert_int_eq(emad_pull_into(c, "ghost", &t, 1, NULL), EMAD_ENOMODEL);
    ck_assert_int_eq(emad_drop(c, "ghost"), EMAD_ENOMODEL);
    OK(c, emad_create(c, "m", 0.5, 0));
    OK(c, emad_push(c, "m", 1, &t, 1, &res));
    ck_assert_int_eq(emad_pull(c, "m", names, 2, &m), EMAD_ENOTENSOR);
    ck_assert_ptr_null(m);
    ck_assert_ptr_nonnull(strstr(emad_last_error(c), "nope"));
    ck_assert_uint_eq(stat_get(c, "errors_EMAD_ENOMODEL"), 3);
    emad_close(c);
    daemon_down(&d);
}
END_TEST

/* pull_into refuses a small buffer before writing and fills every field otherwise. */
START_TEST(test_e2e_pull_into_checks_buffer_sizes)
{
    tu_daemon d;
    emad_client *c;
    float w[4] = {1, 2, 3, 4}, out[6];
    int64_t n = 77, nout = 0;
    emad_tensor t[2], into[2];
    uint64_t step = 0;

    daemon_up(&d, NULL);
    c = client_open(&d, NULL);
    OK(c, emad_create(c, "m", 0.5, 0));
    t[0] = tensor("w", EMAD_PARAM, EMAD_F32, w, sizeof(w), 2, 2, 2);
    t[1] = tensor("n", EMAD_BUFFER, EMAD_I64, &n, sizeof(n), 0, 0, 0);
    OK(c, emad_push(c, "m", 9, t, 2, NULL));

    /* Too small: EMAD_ESIZE, nothing written. */
    for (size_t i = 0; i < 6; i++)
        out[i] = -1;
    memset(into, 0, sizeof(into));
    into[0].name = "n";
    into[0].data = &nout;
    into[0].nbytes = sizeof(nout);
    into[1].name = "w";
    into[1].data = out;
    into[1].nbytes = 3 * sizeof(float);
    ck_assert_int_eq(emad_pull_into(c, "m", into, 2, &step), EMAD_ESIZE);
    ck_assert_ptr_nonnull(strstr(emad_last_error(c), "'w'"));
    ck_assert_int_eq(nout, 0);
    ck_assert(out[0] == -1 && out[3] == -1);
    ck_assert_uint_eq(step, 0);
    ck_assert_uint_eq(into[1].nbytes, 12);

    /* Larger than needed: filled, nbytes set to the tensor's size, the rest untouched. */
    into[1].nbytes = sizeof(out);
    OK(c, emad_pull_into(c, "m", into, 2, &step));
    ck_assert_uint_eq(step, 9);
    ck_assert_int_eq(nout, 77);
    ck_assert_int_eq(memcmp(out, w, sizeof(w)), 0);
    ck_assert(out[4] == -1 && out[5] == -1);
    ck_assert_uint_eq(into[1].nbytes, sizeof(w));
    ck_assert_int_eq(into[1].kind, EMAD_PARAM);
    ck_assert_int_eq(into[1].dtype, EMAD_F32);
    ck_assert_uint_eq(into[1].ndim, 2);
    ck_assert_uint_eq(into[1].shape[0], 2);
    ck_assert_uint_eq(into[1].shape[1], 2);
    ck_assert_uint_eq(into[1].step, 9);
    ck_assert_int_eq(into[0].kind, EMAD_BUFFER);
    ck_assert_uint_eq(into[0].ndim, 0);
    ck_assert_uint_eq(into[0].nbytes, 8);
    emad_close(c);
    daemon_down(&d);
}
END_TEST

/* ---- several clients at once ---------------------------------------------------------------- */

#define NPUSHERS 4
#define CONC_STEPS 10
#define CONC_N 4096

/* One pusher thread: its own client and model; pushes steps 1..CONC_STEPS. */
typedef struct pusher {
    const char *url;
    int id;
    int rc;
    char err[512];
} pusher;

/* Pusher thread: step k pushes w = k (all elements) and counter = k. */
static void *
pusher_main(void *arg)
{
    pusher *p = arg;
    emad_client *c = NULL;
    char model[32];
    float *w = malloc(CONC_N * sizeof(float));

    snprintf(model, sizeof(model), "conc%d", p->id);
    if (w == NULL || (p->rc = emad_connect(&c, p->url, NULL)) != 0) {
        snprintf(p->err, sizeof(p->err), "connect: %s", emad_strerror(p->rc));
        goto out;
    }
    if ((p->rc = emad_create(c, model, 0.5, 1)) != 0)
        goto fail;
    for (int k = 1; k <= CONC_STEPS; k++) {
        int64_t counter = k;
        emad_tensor t[2] = {
            tensor("w", EMAD_PARAM, EMAD_F32, w, CONC_N * sizeof(float), 1, CONC_N, 0),
            tensor("counter", EMAD_BUFFER, EMAD_I64, &counter, 8, 0, 0, 0)};
        emad_push_result res;

        for (size_t i = 0; i < CONC_N; i++)
            w[i] = (float)k;
        if ((p->rc = emad_push(c, model, (uint64_t)k, t, 2, &res)) != 0)
            goto fail;
        if (res.applied != 2 || res.step != (uint64_t)k) {
            p->rc = -1;
            snprintf(p->err, sizeof(p->err), "step %d: applied %llu step %llu", k,
                     (unsigned long long)res.applied, (unsigned long long)res.step);
            goto out;
        }
    }
    goto out;
fail:
    snprintf(p->err, sizeof(p->err), "%s: %s", emad_strerror(p->rc), emad_last_error(c));
out:
    emad_close(c);
    free(w);
    return NULL;
}

/* Shadow after steps 1..k of pushes w = step with decay 0.5 (exact in float). */
static float
conc_expected(int k)
{
    double s = 1.0;

    for (int i = 2; i <= k; i++)
        s = (s + i) / 2.0;
    return (float)s;
}

/* The puller thread's state. */
typedef struct puller {
    const char *url;
    atomic_int *stop;
    int rc;
    long pulls;
    char err[512];
} puller;

/* Puller thread: pull every model until told to stop; each view must be one whole step. */
static void *
puller_main(void *arg)
{
    puller *p = arg;
    emad_client *c = NULL;

    if ((p->rc = emad_connect(&c, p->url, NULL)) != 0) {
        snprintf(p->err, sizeof(p->err), "connect: %s", emad_strerror(p->rc));
        return NULL;
    }
    while (!*p->stop && p->rc == 0) {
        for (int id = 0; id < NPUSHERS && p->rc == 0; id++) {
            char model[32];
            emad_model *m = NULL;
            int rc;

            snprintf(model, sizeof(model), "conc%d", id);
            rc = emad_pull(c, model, NULL, 0, &m);
            if (rc == EMAD_ENOMODEL)
                continue; /* not created yet */
            if (rc != 0) {
                p->rc = rc;
                snprintf(p->err, sizeof(p->err), "pull %s: %s", model, emad_last_error(c));
                break;
            }
            p->pulls++;
            if (m->ntensors == 2) {
                int64_t counter;
                memcpy(&counter, m->tensors[1].data, 8);
                if (counter != (int64_t)m->step || m->tensors[0].step != m->step ||
                    !all_equal(m->tensors[0].data, CONC_N, conc_expected((int)m->step))) {
                    p->rc = -1;
                    snprintf(p->err, sizeof(p->err), "%s: inconsistent view at step %llu", model,
                             (unsigned long long)m->step);
                }
            } else if (m->ntensors != 0) {
                p->rc = -1;
                snprintf(p->err, sizeof(p->err), "%s: %zu tensors", model, m->ntensors);
            }
            emad_model_free(m);
        }
    }
    emad_close(c);
    return NULL;
}

/* Four pushers and a puller at once: every view consistent, every result exact. */
START_TEST(test_e2e_concurrent_clients)
{
    tu_daemon d;
    pthread_t th[NPUSHERS + 1];
    pusher ps[NPUSHERS];
    puller pl;
    atomic_int stop = 0;
    emad_client *c;

    daemon_up(&d, NULL);
    memset(&pl, 0, sizeof(pl));
    pl.url = d.url;
    pl.stop = &stop;
    ck_assert_int_eq(pthread_create(&th[NPUSHERS], NULL, puller_main, &pl), 0);
    for (int i = 0; i < NPUSHERS; i++) {
        memset(&ps[i], 0, sizeof(ps[i]));
        ps[i].url = d.url;
        ps[i].id = i;
        ck_assert_int_eq(pthread_create(&th[i], NULL, pusher_main, &ps[i]), 0);
    }
    for (int i = 0; i < NPUSHERS; i++)
        pthread_join(th[i], NULL);
    stop = 1;
    pthread_join(th[NPUSHERS], NULL);
    for (int i = 0; i < NPUSHERS; i++)
        ck_assert_msg(ps[i].rc == 0, "pusher %d: %s", i, ps[i].err);
    ck_assert_msg(pl.rc == 0, "puller: %s", pl.err);
    ck_assert_int_gt(pl.pulls, 0);

    /* Final state of every model, against the hand-computed average. */
    c = client_open(&d, NULL);
    for (int i = 0; i < NPUSHERS; i++) {
        char model[32];
        emad_model *m;
        int64_t counter;

        snprintf(model, sizeof(model), "conc%d", i);
        OK(c, emad_pull(c, model, NULL, 0, &m));
        ck_assert_uint_eq(m->step, CONC_STEPS);
        ck_assert(all_equal(m->tensors[0].data, CONC_N, conc_expected(CONC_STEPS)));
        memcpy(&counter, m->tensors[1].data, 8);
        ck_assert_int_eq(counter, CONC_STEPS);
        emad_model_free(m);
    }
    ck_assert_uint_eq(stat_get(c, "tensors_applied"), NPUSHERS * CONC_STEPS * 2);
    emad_close(c);
    daemon_down(&d);
}
END_TEST

/* ---- pipelined transfers --------------------------------------------------------------------- */

/*
 * EMAD_PIPELINE_DEPTH=3: chunks and reads spread over three connections, so
 * the daemon sees a tensor's chunks in any order and answers them from its
 * threadpool (chunks of 1 MiB and more). The averages must match a push
 * over one connection bit for bit, and a pull must return them exactly.
 */
START_TEST(test_e2e_pipelined_push_and_pull)
{
    enum { N = 3 * 1024 * 1024 + 17 }; /* 12 MiB + 68 B: 13 chunks of 1 MiB */
    float *a = malloc(N * sizeof(float)), *b = malloc(N * sizeof(float));
    float *got1 = malloc(N * sizeof(float)), *got3 = malloc(N * sizeof(float));
    uint64_t rng = 3, step;
    tu_daemon d;
    emad_client *c1, *c3, *bad;
    emad_push_result res;
    emad_tensor t, into;

    ck_assert(a != NULL && b != NULL && got1 != NULL && got3 != NULL);
    for (size_t i = 0; i < N; i++) {
        a[i] = tu_randf(&rng);
        b[i] = tu_randf(&rng);
    }
    daemon_up(&d, small_msg_args);
    c1 = client_open(&d, NULL);
    ck_assert_int_eq(setenv("EMAD_PIPELINE_DEPTH", "3", 1), 0);
    c3 = client_open(&d, NULL);
    ck_assert_int_eq(setenv("EMAD_PIPELINE_DEPTH", "9", 1), 0);
    ck_assert_int_eq(emad_connect(&bad, d.url, NULL), EMAD_EINVAL);
    ck_assert_int_eq(unsetenv("EMAD_PIPELINE_DEPTH"), 0);
    OK(c1, emad_create(c1, "one", 0.9, 0));
    OK(c1, emad_create(c1, "three", 0.9, 0));
    for (int s = 1; s <= 3; s++) {
        t = tensor("w", EMAD_PARAM, EMAD_F32, s == 2 ? b : a, N * sizeof(float), 1, N, 0);
        OK(c1, emad_push(c1, "one", (uint64_t)s, &t, 1, &res));
        ck_assert_uint_eq(res.applied, 1);
        OK(c3, emad_push(c3, "three", (uint64_t)s, &t, 1, &res));
        ck_assert_uint_eq(res.applied, 1);
        ck_assert_uint_ge(res.messages, 14);
    }
    into = (emad_tensor){.name = "w", .data = got1, .nbytes = N * sizeof(float)};
    OK(c1, emad_pull_into(c1, "one", &into, 1, &step));
    into.data = got3;
    OK(c3, emad_pull_into(c3, "three", &into, 1, &step));
    ck_assert_uint_eq(step, 3);
    ck_assert_int_eq(memcmp(got1, got3, N * sizeof(float)), 0);
    /* The pulled bits are the float32 EMA of a, b, a computed here. */
    for (size_t i = 0; i < N; i++) {
        float sh = a[i];
        for (int s = 2; s <= 3; s++) {
            volatile float diff = sh - (s == 2 ? b[i] : a[i]);
            volatile float tt = 0.1f * diff;
            sh = sh - tt;
        }
        if (memcmp(&sh, &got3[i], 4) != 0)
            ck_abort_msg("element %zu: %.9g, expected %.9g", i, got3[i], sh);
    }
    ck_assert_uint_eq(stat_get(c1, "replies_dropped"), 0);
    ck_assert_uint_eq(stat_get(c1, "sessions_open"), 0);
    ck_assert_uint_eq(stat_get(c1, "txn_open"), 0);
    emad_close(c3);
    emad_close(c1);
    tu_daemon_stop(&d);
    free(a);
    free(b);
    free(got1);
    free(got3);
}
END_TEST

/*
 * libemad pulls a model of up to 16 MiB in one reply and a larger one
 * through a session of reads: replies of 32 MiB and more are fresh
 * mappings on each side, page-faulted in on every pull. The daemon allows
 * 64 MiB messages here, so both models would fit in one reply.
 */
START_TEST(test_e2e_pull_inline_up_to_16_mib)
{
    enum { NSMALL = 3 * 1024 * 1024 + 512 * 1024, NLARGE = 5 * 1024 * 1024 }; /* 14, 20 MiB */
    float *a = malloc(NLARGE * sizeof(float)), *b = malloc(NLARGE * sizeof(float));
    float *expect = malloc(NLARGE * sizeof(float)), *got = malloc(NLARGE * sizeof(float));
    const char *names[2] = {"small", "large"};
    const size_t counts[2] = {NSMALL, NLARGE};
    uint64_t rng = 11, step, reads, releases;
    tu_daemon d;
    emad_client *c;
    emad_model *m;
    emad_tensor t, into;

    ck_assert(a != NULL && b != NULL && expect != NULL && got != NULL);
    for (size_t i = 0; i < NLARGE; i++) {
        volatile float diff, tt;
        a[i] = tu_randf(&rng);
        b[i] = tu_randf(&rng);
        diff = a[i] - b[i];
        tt = 0.5f * diff;
        expect[i] = a[i] - tt;
    }
    daemon_up(&d, NULL);
    c = client_open(&d, NULL);
    for (int k = 0; k < 2; k++) {
        OK(c, emad_create(c, names[k], 0.5, 0));
        for (int s = 1; s <= 2; s++) {
            t = tensor("w", EMAD_PARAM, EMAD_F32, s == 1 ? a : b, counts[k] * sizeof(float), 1,
                       counts[k], 0);
            OK(c, emad_push(c, names[k], (uint64_t)s, &t, 1, NULL));
        }
    }
    for (int k = 0; k < 2; k++) {
        reads = stat_get(c, "requests_read");
        releases = stat_get(c, "requests_release");
        memset(got, 0, counts[k] * sizeof(float));
        into = (emad_tensor){.name = "w", .data = got, .nbytes = counts[k] * sizeof(float)};
        OK(c, emad_pull_into(c, names[k], &into, 1, &step));
        ck_assert_uint_eq(step, 2);
        ck_assert_int_eq(memcmp(got, expect, counts[k] * sizeof(float)), 0);
        OK(c, emad_pull(c, names[k], NULL, 0, &m));
        ck_assert_uint_eq(m->tensors[0].nbytes, counts[k] * sizeof(float));
        ck_assert_int_eq(memcmp(m->tensors[0].data, expect, counts[k] * sizeof(float)), 0);
        emad_model_free(m);
        if (k == 0) { /* inline: no reads, no release */
            ck_assert_uint_eq(stat_get(c, "requests_read"), reads);
            ck_assert_uint_eq(stat_get(c, "requests_release"), releases);
        } else { /* 20 MiB in reads of at most 4 MiB, twice; each session released */
            ck_assert_uint_ge(stat_get(c, "requests_read"), reads + 2 * 5);
            ck_assert_uint_eq(stat_get(c, "requests_release"), releases + 2);
        }
    }
    ck_assert_uint_eq(stat_get(c, "sessions_open"), 0);
    emad_close(c);
    daemon_down(&d);
    free(a);
    free(b);
    free(expect);
    free(got);
}
END_TEST

/* ---- models larger than one message --------------------------------------------------------- */

/* A model larger than one message goes as chunks and comes back bit-exact. */
START_TEST(test_e2e_chunked_push_and_pull)
{
    tu_daemon d;
    emad_client *c, *c2;
    emad_options o;
    emad_push_result res;
    emad_model *m;
    enum { NBIG = 1300000, NHALF = 300001, NSMALL = 100 }; /* ~5 MiB, ~0.6 MiB, 400 B */
    float *big = malloc(NBIG * sizeof(float)), *big2 = malloc(NBIG * sizeof(float));
    float *expect = malloc(NBIG * sizeof(float));
    uint16_t *half = malloc(NHALF * sizeof(uint16_t));
    float small[NSMALL];
    int64_t counters[10];
    uint64_t rng = 99;
    emad_tensor t[4];

    ck_assert(big != NULL && big2 != NULL && expect != NULL && half != NULL);
    for (size_t i = 0; i < NBIG; i++) {
        big[i] = tu_randf(&rng);
        big2[i] = tu_randf(&rng);
    }
    for (size_t i = 0; i < NHALF; i++)
        half[i] = (uint16_t)(tu_rand(&rng) & 0x3bff); /* finite F16 values below 1.0 */
    for (size_t i = 0; i < NSMALL; i++)
        small[i] = (float)i;
    for (size_t i = 0; i < 10; i++)
        counters[i] = (int64_t)tu_rand(&rng);

    daemon_up(&d, small_msg_args);
    c = client_open(&d, NULL);
    OK(c, emad_create(c, "big", 0.5, 0));
    t[0] = tensor("small", EMAD_PARAM, EMAD_F32, small, sizeof(small), 1, NSMALL, 0);
    t[1] = tensor("big", EMAD_PARAM, EMAD_F32, big, NBIG * sizeof(float), 2, NBIG / 100, 100);
    t[2] = tensor("half", EMAD_PARAM, EMAD_F16, half, NHALF * 2, 1, NHALF, 0);
    t[3] = tensor("counters", EMAD_BUFFER, EMAD_I64, counters, sizeof(counters), 1, 10, 0);
    OK(c, emad_push(c, "big", 1, t, 4, &res));
    ck_assert_uint_eq(res.applied, 4);
    ck_assert_uint_eq(res.step, 1);
    ck_assert_uint_gt(res.messages, 1);
    ck_assert_uint_ge(res.messages, (NBIG * 4 + NHALF * 2) / MIB + 2);
    ck_assert_uint_eq(stat_get(c, "txn_begun"), 1);
    ck_assert_uint_eq(stat_get(c, "txn_committed"), 1);

    /* Pulled back bit-exact, through a pull session (the model exceeds one reply). */
    OK(c, emad_pull(c, "big", NULL, 0, &m));
    ck_assert_uint_eq(m->ntensors, 4);
    ck_assert_uint_eq(m->step, 1);
    ck_assert_int_eq(memcmp(model_find(m, "small")->data, small, sizeof(small)), 0);
    ck_assert_int_eq(memcmp(model_find(m, "big")->data, big, NBIG * sizeof(float)), 0);
    ck_assert_int_eq(memcmp(model_find(m, "half")->data, half, NHALF * 2), 0);
    ck_assert_int_eq(memcmp(model_find(m, "counters")->data, counters, sizeof(counters)), 0);
    emad_model_free(m);
    ck_assert_uint_eq(stat_get(c, "sessions_open"), 0);

    /* A second client with small messages and replies: many chunks and reads. */
    emad_options_init(&o);
    o.chunk_bytes = 256 * 1024;
    o.max_reply_bytes = 128 * 1024;
    c2 = client_open(&d, &o);
    t[1].data = big2;
    OK(c2, emad_push(c2, "big", 2, t, 4, &res));
    ck_assert_uint_eq(res.applied, 4);
    ck_assert_uint_ge(res.messages, NBIG * 4 / (256 * 1024) + 2);
    for (size_t i = 0; i < NBIG; i++) {
        volatile float diff = big[i] - big2[i];
        volatile float tt = 0.5f * diff;
        expect[i] = big[i] - tt;
    }
    memset(big, 0, NBIG * sizeof(float));
    {
        emad_tensor into = {.name = "big", .data = big, .nbytes = NBIG * sizeof(float)};
        uint64_t step;
        OK(c2, emad_pull_into(c2, "big", &into, 1, &step));
        ck_assert_uint_eq(step, 2);
        ck_assert_uint_eq(into.shape[0], NBIG / 100);
        ck_assert_int_eq(memcmp(big, expect, NBIG * sizeof(float)), 0);
    }
    ck_assert_uint_eq(stat_get(c2, "sessions_open"), 0);
    ck_assert_uint_eq(stat_get(c2, "txn_open"), 0);
    emad_close(c2);
    emad_close(c);
    free(big);
    free(big2);
    free(expect);
    free(half);
    daemon_down(&d);
}
END_TEST

/*
 * Big chunks are answered before they are averaged and the commit waits for
 * the averaging: steps of a 40 MiB tensor in 20 MiB chunks give the float32
 * EMA computed here; a commit sent right after the early reply to a
 * transaction's only chunk (32 MiB) waits and applies it. A NaN in a chunk
 * answered early still fails the push (at a later request or the commit)
 * with nothing applied, and the daemon goes on serving.
 */
START_TEST(test_e2e_chunks_answered_before_averaging)
{
    enum { N = 10 * 1024 * 1024 }; /* 40 MiB of float32: two 20 MiB chunks */
    float *v[3], *expect = malloc(N * sizeof(float)), *got = malloc(N * sizeof(float));
    uint64_t rng = 17, step;
    tu_daemon d;
    emad_client *c;
    emad_options o;
    emad_push_result res;
    emad_tensor t, into;
    int rc, s;

    ck_assert(expect != NULL && got != NULL);
    for (int k = 0; k < 3; k++) {
        ck_assert((v[k] = malloc(N * sizeof(float))) != NULL);
        for (size_t i = 0; i < N; i++)
            v[k][i] = tu_randf(&rng);
    }
    daemon_up(&d, NULL);
    emad_options_init(&o);
    o.chunk_bytes = 20 * MIB;
    c = client_open(&d, &o);
    OK(c, emad_create(c, "m", 0.75, 0));
    for (s = 1; s <= 3; s++) {
        const float *x = v[s - 1];
        t = tensor("w", EMAD_PARAM, EMAD_F32, x, N * sizeof(float), 2, N / 1024, 1024);
        OK(c, emad_push(c, "m", (uint64_t)s, &t, 1, &res));
        ck_assert_uint_eq(res.applied, 1);
        ck_assert_uint_ge(res.messages, 4); /* begin, two chunks, commit */
        for (size_t i = 0; i < N; i++) {
            volatile float diff = expect[i] - x[i];
            volatile float tt = 0.25f * diff;
            expect[i] = s == 1 ? x[i] : expect[i] - tt;
        }
    }
    into = (emad_tensor){.name = "w", .data = got, .nbytes = N * sizeof(float)};
    OK(c, emad_pull_into(c, "m", &into, 1, &step));
    ck_assert_uint_eq(step, 3);
    ck_assert_int_eq(memcmp(got, expect, N * sizeof(float)), 0);

    /*
     * begin, one chunk holding all of a 32 MiB tensor, commit at once: the
     * chunk is answered while its averaging runs (milliseconds), so the
     * commit waits for it. Steps go on (at most 8) until a wait was counted;
     * each commit applies its chunk exactly.
     */
    {
        enum { NS = 8 * 1024 * 1024 };
        int sock = raw_open(&d, 20000);
        msgpack_sbuffer sb;
        msgpack_packer pk;
        raw_reply r;
        uint64_t k, txn;
        float *sexp = malloc(NS * sizeof(float));
        emad_tensor uin = {.name = "u", .data = got, .nbytes = NS * sizeof(float)};

        ck_assert(sexp != NULL);
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        OK(c, emad_create(c, "solo", 0.75, 0));
        memcpy(sexp, v[0], NS * sizeof(float));
        for (k = 1; k <= 8 && (k <= 2 || stat_get(c, "commits_waited") == 0); k++) {
            const float *x = v[(k - 1) % 3];
            txn = raw_begin(sock, &sb, &pk, "solo", k);
            ptxn_push(&sb, &pk, txn);
            ptensor(&pk, "u", "param", "F32", NS, x, NS * sizeof(float), 1, 0);
            raw_expect(sock, &sb, 0);
            ptxn_end(&sb, &pk, "commit", txn);
            raw_call(sock, sb.data, sb.size, &r);
            ck_assert_int_eq(r.code, 0);
            ck_assert_uint_eq(obj_u64(r.root, "applied"), 1);
            raw_reply_free(&r);
            for (size_t i = 0; k > 1 && i < NS; i++) {
                volatile float diff = sexp[i] - x[i];
                volatile float tt = 0.25f * diff;
                sexp[i] = sexp[i] - tt;
            }
        }
        ck_assert_uint_ge(stat_get(c, "commits_waited"), 1);
        OK(c, emad_pull_into(c, "solo", &uin, 1, &step));
        ck_assert_uint_eq(step, k - 1);
        ck_assert_int_eq(memcmp(got, sexp, NS * sizeof(float)), 0);
        msgpack_sbuffer_destroy(&sb);
        nn_close(sock);
        free(sexp);
    }

    /* A NaN in the first chunk: the push fails, nothing applied, step unchanged. */
    v[1][12345] = NAN;
    t = tensor("w", EMAD_PARAM, EMAD_F32, v[1], N * sizeof(float), 2, N / 1024, 1024);
    rc = emad_push(c, "m", (uint64_t)s, &t, 1, &res);
    ck_assert_int_eq(rc, EMAD_ENONFINITE);
    ck_assert_ptr_nonnull(strstr(emad_last_error(c), "'w'"));
    OK(c, emad_pull_into(c, "m", &into, 1, &step));
    ck_assert_uint_eq(step, (uint64_t)s - 1);
    ck_assert_int_eq(memcmp(got, expect, N * sizeof(float)), 0);
    ck_assert_uint_eq(stat_get(c, "txn_open"), 0);

    /* Still serving: the same step with finite values is applied exactly. */
    v[1][12345] = 0.5f;
    OK(c, emad_push(c, "m", (uint64_t)s, &t, 1, &res));
    ck_assert_uint_eq(res.applied, 1);
    for (size_t i = 0; i < N; i++) {
        volatile float diff = expect[i] - v[1][i];
        volatile float tt = 0.25f * diff;
        expect[i] = expect[i] - tt;
    }
    OK(c, emad_pull_into(c, "m", &into, 1, &step));
    ck_assert_uint_eq(step, (uint64_t)s);
    ck_assert_int_eq(memcmp(got, expect, N * sizeof(float)), 0);
    emad_close(c);
    daemon_down(&d);
    for (int k = 0; k < 3; k++)
        free(v[k]);
    free(expect);
    free(got);
}
END_TEST

#define TXN_N (512 * 1024) /* 2 MiB of float32 per tensor */
#define TXN_STEPS 8

/* State shared by the transaction-consistency threads. */
typedef struct txn_shared {
    const char *url;
    atomic_int pulled_once;
    atomic_int done;
    int rc;
    long pulls;
    uint64_t steps_seen;
    char err[512];
} txn_shared;

/* Pull repeatedly while a pusher commits chunked pushes; every view must be one step. */
static void *
txn_puller_main(void *arg)
{
    txn_shared *s = arg;
    emad_client *c = NULL;
    emad_options o;
    int last = 0;

    emad_options_init(&o);
    o.max_reply_bytes = 256 * 1024; /* many reads per pull */
    if ((s->rc = emad_connect(&c, s->url, &o)) != 0) {
        snprintf(s->err, sizeof(s->err), "connect: %s", emad_strerror(s->rc));
        s->pulled_once = 1;
        return NULL;
    }
    while (s->rc == 0 && !last) {
        emad_model *m = NULL;

        last = s->done;
        if ((s->rc = emad_pull(c, "tx", NULL, 0, &m)) != 0) {
            snprintf(s->err, sizeof(s->err), "pull: %s", emad_last_error(c));
            break;
        }
        s->pulls++;
        s->pulled_once = 1;
        if (m->ntensors != 0 && m->ntensors != 3) {
            s->rc = -1;
            snprintf(s->err, sizeof(s->err), "%zu tensors", m->ntensors);
        }
        for (size_t i = 0; s->rc == 0 && i < m->ntensors; i++) {
            if (m->tensors[i].step != m->step ||
                !all_equal(m->tensors[i].data, TXN_N, (float)m->step)) {
                s->rc = -1;
                snprintf(s->err, sizeof(s->err), "tensor %zu not all at step %llu", i,
                         (unsigned long long)m->step);
            }
        }
        if (m->step < 64)
            s->steps_seen |= 1ULL << m->step;
        emad_model_free(m);
    }
    emad_close(c);
    return NULL;
}

/* Pulls see whole committed pushes only: concurrently, through sessions, around open transactions.
 */
START_TEST(test_e2e_transaction_consistency)
{
    tu_daemon d;
    emad_client *c;
    emad_push_result res;
    emad_model *m;
    pthread_t th;
    txn_shared sh;
    float *v = floats(TXN_N, 0);
    emad_tensor t[3];
    int s;
    raw_reply r;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    uint64_t session, txn;

    daemon_up(&d, small_msg_args);
    c = client_open(&d, NULL);
    OK(c, emad_create(c, "tx", 0.0, 0)); /* decay 0: the shadow is the last push */
    t[0] = tensor("t0", EMAD_PARAM, EMAD_F32, v, TXN_N * 4, 1, TXN_N, 0);
    t[1] = tensor("t1", EMAD_PARAM, EMAD_F32, v, TXN_N * 4, 1, TXN_N, 0);
    t[2] = tensor("t2", EMAD_PARAM, EMAD_F32, v, TXN_N * 4, 1, TXN_N, 0);

    /* Concurrent: a puller against chunked pushes of steps 1..TXN_STEPS. */
    memset(&sh, 0, sizeof(sh));
    sh.url = d.url;
    ck_assert_int_eq(pthread_create(&th, NULL, txn_puller_main, &sh), 0);
    while (!sh.pulled_once)
        sleep_ms(1);
    for (int k = 1; k <= TXN_STEPS; k++) {
        for (size_t i = 0; i < TXN_N; i++)
            v[i] = (float)k;
        OK(c, emad_push(c, "tx", (uint64_t)k, t, 3, &res));
        ck_assert_uint_eq(res.applied, 3);
        ck_assert_uint_gt(res.messages, 3);
    }
    sh.done = 1;
    pthread_join(th, NULL);
    ck_assert_msg(sh.rc == 0, "puller: %s", sh.err);
    ck_assert_int_ge(sh.pulls, 2);
    ck_assert(sh.steps_seen & 1);                   /* the empty model before step 1 */
    ck_assert(sh.steps_seen & (1ULL << TXN_STEPS)); /* and the last step */

    /* Deterministic: a pull session keeps its view while a push commits. */
    s = raw_open(&d, 5000);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    phead(&pk, 1, "pull", 2);
    pstr(&pk, "model");
    pstr(&pk, "tx");
    pstr(&pk, "max_reply_bytes");
    msgpack_pack_uint64(&pk, 65536);
    raw_call(s, sb.data, sb.size, &r);
    ck_assert_int_eq(r.code, 0);
    session = obj_u64(r.root, "session");
    ck_assert_uint_eq(obj_u64(r.root, "step"), TXN_STEPS);
    raw_reply_free(&r);

    for (size_t i = 0; i < TXN_N; i++)
        v[i] = (float)(TXN_STEPS + 1);
    OK(c, emad_push(c, "tx", TXN_STEPS + 1, t, 3, &res));
    ck_assert_uint_eq(res.applied, 3);

    msgpack_sbuffer_clear(&sb);
    phead(&pk, 1, "read", 2);
    pstr(&pk, "session");
    msgpack_pack_uint64(&pk, session);
    pstr(&pk, "ranges");
    msgpack_pack_array(&pk, 2);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint64(&pk, 0);
    msgpack_pack_uint64(&pk, 0);
    msgpack_pack_uint64(&pk, 4096);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint64(&pk, 2);
    msgpack_pack_uint64(&pk, TXN_N * 4 - 4096);
    msgpack_pack_uint64(&pk, 4096);
    raw_call(s, sb.data, sb.size, &r);
    ck_assert_int_eq(r.code, 0);
    {
        const msgpack_object *data = obj_get(r.root, "data");
        ck_assert(data != NULL && data->type == MSGPACK_OBJECT_ARRAY);
        ck_assert_uint_eq(data->via.array.size, 2);
        for (int i = 0; i < 2; i++) {
            ck_assert_int_eq(data->via.array.ptr[i].type, MSGPACK_OBJECT_BIN);
            ck_assert_uint_eq(data->via.array.ptr[i].via.bin.size, 4096);
            ck_assert(all_equal(data->via.array.ptr[i].via.bin.ptr, 1024, (float)TXN_STEPS));
        }
    }
    raw_reply_free(&r);
    msgpack_sbuffer_clear(&sb);
    phead(&pk, 1, "release", 1);
    pstr(&pk, "session");
    msgpack_pack_uint64(&pk, session);
    raw_expect(s, &sb, 0);

    /* Deterministic: staged chunks of an open transaction are invisible. */
    txn = raw_begin(s, &sb, &pk, "tx", 100);
    {
        float *chunk = floats(TXN_N / 4, 100.0f);
        ptxn_push(&sb, &pk, txn);
        ptensor(&pk, "t0", "param", "F32", TXN_N, chunk, TXN_N, 1, 0);
        raw_call(s, sb.data, sb.size, &r);
        ck_assert_int_eq(r.code, 0);
        ck_assert_uint_eq(obj_u64(r.root, "staged"), 1);
        raw_reply_free(&r);
        free(chunk);
    }
    OK(c, emad_pull(c, "tx", NULL, 0, &m));
    ck_assert_uint_eq(m->step, TXN_STEPS + 1);
    for (size_t i = 0; i < 3; i++)
        ck_assert(all_equal(m->tensors[i].data, TXN_N, (float)(TXN_STEPS + 1)));
    emad_model_free(m);
    /* Commit of an incomplete tensor fails and names it; abort discards. */
    ptxn_end(&sb, &pk, "commit", txn);
    raw_call(s, sb.data, sb.size, &r);
    ck_assert_int_eq(r.code, 1014);
    {
        const msgpack_object *tn = obj_get(obj_get(r.root, "error"), "tensor");
        ck_assert(tn != NULL && tn->type == MSGPACK_OBJECT_STR && tn->via.str.size == 2 &&
                  memcmp(tn->via.str.ptr, "t0", 2) == 0);
    }
    raw_reply_free(&r);
    ptxn_end(&sb, &pk, "abort", txn);
    raw_expect(s, &sb, 0);
    raw_expect(s, &sb, 1013); /* already gone */
    OK(c, emad_pull(c, "tx", NULL, 0, &m));
    ck_assert_uint_eq(m->step, TXN_STEPS + 1);
    ck_assert(all_equal(m->tensors[0].data, TXN_N, (float)(TXN_STEPS + 1)));
    emad_model_free(m);
    ck_assert_uint_eq(stat_get(c, "txn_open"), 0);
    ck_assert_uint_eq(stat_get(c, "sessions_open"), 0);

    msgpack_sbuffer_destroy(&sb);
    nn_close(s);
    free(v);
    emad_close(c);
    daemon_down(&d);
}
END_TEST

/* A transaction abandoned after one chunk expires and changes nothing. */
START_TEST(test_e2e_abandoned_transaction_expires)
{
    static const char *const args[] = {"--txn-timeout", "1", NULL};
    tu_daemon d;
    emad_client *c;
    emad_model *m;
    float a[1024], chunk[256];
    emad_tensor t;
    int s;
    raw_reply r;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    uint64_t txn;

    for (size_t i = 0; i < 1024; i++)
        a[i] = (float)i;
    for (size_t i = 0; i < 256; i++)
        chunk[i] = -1.0f;
    daemon_up(&d, args);
    c = client_open(&d, NULL);
    OK(c, emad_create(c, "m", 0.5, 0));
    t = tensor("w", EMAD_PARAM, EMAD_F32, a, sizeof(a), 1, 1024, 0);
    OK(c, emad_push(c, "m", 1, &t, 1, NULL));

    /* A writer that begins, sends one chunk and disappears. */
    s = raw_open(&d, 5000);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    txn = raw_begin(s, &sb, &pk, "m", 2);
    ptxn_push(&sb, &pk, txn);
    ptensor(&pk, "w", "param", "F32", 1024, chunk, sizeof(chunk), 1, 0);
    raw_call(s, sb.data, sb.size, &r);
    ck_assert_int_eq(r.code, 0);
    raw_reply_free(&r);
    ck_assert_uint_eq(stat_get(c, "txn_open"), 1);

    sleep_ms(2200);
    ck_assert_uint_eq(stat_get(c, "txn_expired"), 1);
    ck_assert_uint_eq(stat_get(c, "txn_open"), 0);
    OK(c, emad_pull(c, "m", NULL, 0, &m));
    ck_assert_uint_eq(m->step, 1);
    ck_assert_int_eq(memcmp(m->tensors[0].data, a, sizeof(a)), 0);
    emad_model_free(m);

    /* The writer comes back: its transaction is gone. */
    ptxn_end(&sb, &pk, "commit", txn);
    raw_expect(s, &sb, 1013);
    msgpack_sbuffer_destroy(&sb);
    nn_close(s);
    emad_close(c);
    daemon_down(&d);
}
END_TEST

/* ---- hostile and malformed requests --------------------------------------------------------- */

/* Garbage, wrong versions, unknown ops and bad pushes get the documented codes. */
START_TEST(test_e2e_raw_bad_requests_get_errors)
{
    tu_daemon d;
    emad_client *c;
    int s;
    raw_reply r;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    float fv[2] = {1, 2};
    int32_t iv[2] = {1, 2};

    daemon_up(&d, small_msg_args);
    c = client_open(&d, NULL);
    OK(c, emad_create(c, "m", 0.5, 0));
    s = raw_open(&d, 5000);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);

    /* Random bytes, truncated maps, huge counts, non-maps, trailing bytes. */
    {
        static const unsigned char garbage[] = {0xc1, 0x00, 0xff, 0x13, 0x37};
        static const unsigned char truncated[] = {0x83, 0xa1, 0x76, 0x01};
        static const unsigned char huge[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 0x76};
        static const unsigned char array[] = {0x92, 0x01, 0x02};
        static const unsigned char deep[] = {0x91, 0x91, 0x91, 0x91, 0x91, 0x91,
                                             0x91, 0x91, 0x91, 0x91, 0x91, 0xc0};
        uint64_t rng = 7;
        unsigned char noise[512];

        raw_call(s, garbage, sizeof(garbage), &r);
        ck_assert_int_eq(r.code, 1001);
        raw_reply_free(&r);
        raw_call(s, truncated, sizeof(truncated), &r);
        ck_assert_int_eq(r.code, 1001);
        raw_reply_free(&r);
        raw_call(s, huge, sizeof(huge), &r);
        ck_assert(r.code == 1001 || r.code == 1009);
        raw_reply_free(&r);
        raw_call(s, array, sizeof(array), &r);
        ck_assert_int_eq(r.code, 1001);
        raw_reply_free(&r);
        raw_call(s, deep, sizeof(deep), &r);
        ck_assert(r.code == 1001 || r.code == 1009);
        raw_reply_free(&r);
        for (int round = 0; round < 20; round++) {
            for (size_t i = 0; i < sizeof(noise); i++)
                noise[i] = (unsigned char)tu_rand(&rng);
            noise[0] = 0xc1; /* never valid msgpack */
            raw_call(s, noise, sizeof(noise), &r);
            ck_assert_int_eq(r.code, 1001);
            raw_reply_free(&r);
        }
        phead(&pk, 1, "hello", 0);
        msgpack_pack_nil(&pk); /* trailing byte */
        raw_expect(s, &sb, 1001);
    }
    /* Wrong version: EMAD_EVERSION with the supported list. */
    msgpack_sbuffer_clear(&sb);
    phead(&pk, 2, "hello", 0);
    raw_call(s, sb.data, sb.size, &r);
    ck_assert_int_eq(r.code, 1002);
    {
        const msgpack_object *sup = obj_get(obj_get(r.root, "error"), "supported");
        ck_assert(sup != NULL && sup->type == MSGPACK_OBJECT_ARRAY && sup->via.array.size == 1);
        ck_assert_uint_eq(sup->via.array.ptr[0].via.u64, 1);
    }
    raw_reply_free(&r);
    /* Unknown op, missing op, mistyped key. */
    msgpack_sbuffer_clear(&sb);
    phead(&pk, 1, "frobnicate", 0);
    raw_expect(s, &sb, 1003);
    msgpack_sbuffer_clear(&sb);
    msgpack_pack_map(&pk, 1);
    pstr(&pk, "v");
    msgpack_pack_uint64(&pk, 1);
    raw_expect(s, &sb, 1001);
    msgpack_sbuffer_clear(&sb);
    phead(&pk, 1, "drop", 1);
    pstr(&pk, "model");
    msgpack_pack_uint64(&pk, 5);
    raw_expect(s, &sb, 1001);
    /* A push the client library would refuse: integer param, unknown dtype, duplicates. */
    msgpack_sbuffer_clear(&sb);
    phead(&pk, 1, "push", 3);
    pstr(&pk, "model");
    pstr(&pk, "m");
    pstr(&pk, "step");
    msgpack_pack_uint64(&pk, 1);
    pstr(&pk, "tensors");
    msgpack_pack_array(&pk, 1);
    ptensor(&pk, "ints", "param", "I32", 2, iv, sizeof(iv), 0, 0);
    raw_call(s, sb.data, sb.size, &r);
    ck_assert_int_eq(r.code, 1004);
    raw_reply_free(&r);
    msgpack_sbuffer_clear(&sb);
    phead(&pk, 1, "push", 3);
    pstr(&pk, "model");
    pstr(&pk, "m");
    pstr(&pk, "step");
    msgpack_pack_uint64(&pk, 1);
    pstr(&pk, "tensors");
    msgpack_pack_array(&pk, 1);
    ptensor(&pk, "x", "buffer", "F8", 2, iv, sizeof(iv), 0, 0);
    raw_expect(s, &sb, 1004);
    msgpack_sbuffer_clear(&sb);
    phead(&pk, 1, "push", 3);
    pstr(&pk, "model");
    pstr(&pk, "m");
    pstr(&pk, "step");
    msgpack_pack_uint64(&pk, 1);
    pstr(&pk, "tensors");
    msgpack_pack_array(&pk, 2);
    ptensor(&pk, "w", "param", "F32", 2, fv, sizeof(fv), 0, 0);
    ptensor(&pk, "w", "param", "F32", 2, fv, sizeof(fv), 0, 0);
    raw_call(s, sb.data, sb.size, &r);
    ck_assert_int_eq(r.code, 1015);
    {
        const msgpack_object *tn = obj_get(obj_get(r.root, "error"), "tensor");
        ck_assert(tn != NULL && tn->type == MSGPACK_OBJECT_STR && tn->via.str.size == 1 &&
                  tn->via.str.ptr[0] == 'w');
    }
    raw_reply_free(&r);
    /* Wrong data length for the shape. */
    msgpack_sbuffer_clear(&sb);
    phead(&pk, 1, "push", 3);
    pstr(&pk, "model");
    pstr(&pk, "m");
    pstr(&pk, "step");
    msgpack_pack_uint64(&pk, 1);
    pstr(&pk, "tensors");
    msgpack_pack_array(&pk, 1);
    ptensor(&pk, "w", "param", "F32", 3, fv, sizeof(fv), 0, 0);
    raw_expect(s, &sb, 1005);
    /* Unknown transaction and session. */
    ptxn_end(&sb, &pk, "commit", 424242);
    raw_expect(s, &sb, 1013);
    msgpack_sbuffer_clear(&sb);
    phead(&pk, 1, "read", 2);
    pstr(&pk, "session");
    msgpack_pack_uint64(&pk, 424242);
    pstr(&pk, "ranges");
    msgpack_pack_array(&pk, 0);
    raw_expect(s, &sb, 1017);

    /* Nothing was applied, and the daemon still serves everyone. */
    {
        emad_model *m;
        OK(c, emad_pull(c, "m", NULL, 0, &m));
        ck_assert_uint_eq(m->ntensors, 0);
        emad_model_free(m);
    }
    ck_assert_uint_ge(stat_get(c, "errors_EMAD_EMALFORMED"), 26);
    ck_assert_uint_eq(stat_get(c, "errors_EMAD_EVERSION"), 1);
    ck_assert_uint_eq(stat_get(c, "errors_EMAD_EOP"), 1);
    ck_assert_uint_eq(stat_get(c, "errors_EMAD_EDTYPE"), 2);
    ck_assert_uint_eq(stat_get(c, "errors_EMAD_EDUP"), 1);
    ck_assert_uint_eq(stat_get(c, "tensors_applied"), 0);
    msgpack_sbuffer_clear(&sb);
    phead(&pk, 1, "hello", 0);
    raw_call(s, sb.data, sb.size, &r);
    ck_assert_int_eq(r.code, 0);
    ck_assert_uint_eq(obj_u64(r.root, "protocol"), 1);
    raw_reply_free(&r);
    msgpack_sbuffer_destroy(&sb);
    nn_close(s);
    emad_close(c);
    ck_assert(tu_daemon_alive(&d));
    daemon_down(&d);
}
END_TEST

/* An oversize message is dropped without a reply and the daemon keeps serving. */
START_TEST(test_e2e_oversize_message_dropped_daemon_serves)
{
    tu_daemon d;
    emad_client *c;
    int s;
    size_t len = 2 * MIB;
    char *big = calloc(1, len);
    void *buf;

    ck_assert_ptr_nonnull(big);
    daemon_up(&d, small_msg_args);
    /* Larger than --max-message-bytes: nanomsg drops the connection, no reply. */
    s = raw_open(&d, 1000);
    ck_assert_int_eq(nn_send(s, big, len, 0), (int)len);
    ck_assert_int_lt(nn_recv(s, &buf, NN_MSG, 0), 0);
    ck_assert_int_eq(nn_errno(), ETIMEDOUT);
    nn_close(s);
    c = client_open(&d, NULL);
    OK(c, emad_create(c, "still-here", 0.5, 0));
    emad_close(c);
    free(big);
    ck_assert(tu_daemon_alive(&d));
    daemon_down(&d);
}
END_TEST

/* The suite: one test case per area, each with a timeout that fits its work. */
static Suite *
e2e_suite(void)
{
    Suite *s = suite_create("e2e");
    TCase *tc;

    tc = tcase_create("basics");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_e2e_connect_hello);
    tcase_add_test(tc, test_e2e_create_list_drop);
    tcase_add_test(tc, test_e2e_ema_options);
    tcase_add_test(tc, test_e2e_bad_arguments_rejected_before_sending);
    tcase_add_test(tc, test_e2e_unknown_model_and_tensor);
    suite_add_tcase(s, tc);

    tc = tcase_create("push_pull");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_e2e_push_pull_all_dtypes);
    tcase_add_test(tc, test_e2e_default_decay_matches_float32_formula);
    tcase_add_test(tc, test_e2e_stale_step_changes_nothing);
    tcase_add_test(tc, test_e2e_shape_change_rejected);
    tcase_add_test(tc, test_e2e_pull_into_checks_buffer_sizes);
    suite_add_tcase(s, tc);

    tc = tcase_create("concurrency");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_e2e_concurrent_clients);
    tcase_add_test(tc, test_e2e_transaction_consistency);
    suite_add_tcase(s, tc);

    tc = tcase_create("large");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_e2e_chunked_push_and_pull);
    tcase_add_test(tc, test_e2e_pipelined_push_and_pull);
    tcase_add_test(tc, test_e2e_pull_inline_up_to_16_mib);
    tcase_add_test(tc, test_e2e_chunks_answered_before_averaging);
    suite_add_tcase(s, tc);

    tc = tcase_create("robustness");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_e2e_abandoned_transaction_expires);
    tcase_add_test(tc, test_e2e_raw_bad_requests_get_errors);
    tcase_add_test(tc, test_e2e_oversize_message_dropped_daemon_serves);
    suite_add_tcase(s, tc);
    return s;
}

/* Run the suite; exit status 0 if every test passed. */
int
main(void)
{
    SRunner *sr = srunner_create(e2e_suite());
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}

/*
 * e2eutil.c - helpers of the end-to-end suites (e2eutil.h): daemons and
 * clients with generous scaled time limits, counters, tensor descriptions,
 * and the raw REQ socket side of the wire protocol.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nanomsg/nn.h>
#include <nanomsg/reqrep.h>

#include "e2eutil.h"

const char *const e2e_small_msg_args[] = {"--max-message-bytes", "1048576", NULL};

/* ms milliseconds multiplied by EMAD_TEST_TIMEOUT_SCALE, at most INT_MAX. */
static int
scaled_ms(double ms)
{
    double v = ms * tu_timeout_scale();

    return v >= (double)INT_MAX ? INT_MAX : (int)v;
}

void
e2e_daemon_up(tu_daemon *d, const char *const *argv)
{
    ck_assert_msg(tu_daemon_start(d, argv) == 0, "emad did not start");
}

void
e2e_daemon_down(tu_daemon *d)
{
    ck_assert_int_eq(tu_daemon_stop(d), 0);
}

void
e2e_options(emad_options *o)
{
    emad_options_init(o);
    o->timeout_ms = scaled_ms(300000);
    o->connect_timeout_ms = scaled_ms(60000);
}

emad_client *
e2e_client_open(const tu_daemon *d, const emad_options *opts)
{
    emad_client *c = NULL;
    emad_options def;
    int rc;

    if (opts == NULL) {
        e2e_options(&def);
        opts = &def;
    }
    rc = emad_connect(&c, d->url, opts);
    ck_assert_msg(rc == 0, "emad_connect(%s): %s", d->url, emad_strerror(rc));
    ck_assert_ptr_nonnull(c);
    return c;
}

int
e2e_connect(emad_client **c, const char *url)
{
    emad_options o;

    e2e_options(&o);
    return emad_connect(c, url, &o);
}

uint64_t
e2e_stat(emad_client *c, const char *name)
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

emad_tensor
e2e_tensor(const char *name, int kind, int dtype, const void *data, uint64_t nbytes, uint32_t ndim,
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

const emad_tensor *
e2e_find(const emad_model *m, const char *name)
{
    for (size_t i = 0; i < m->ntensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0)
            return &m->tensors[i];
    ck_abort_msg("pulled model has no tensor '%s'", name);
    return NULL;
}

float *
e2e_floats(size_t n, float v)
{
    float *p = malloc(n * sizeof(*p));

    ck_assert_ptr_nonnull(p);
    for (size_t i = 0; i < n; i++)
        p[i] = v;
    return p;
}

int
e2e_all_equal(const void *p, size_t n, float v)
{
    for (size_t i = 0; i < n; i++) {
        float x;
        memcpy(&x, (const char *)p + i * sizeof(float), sizeof(x));
        if (x != v)
            return 0;
    }
    return 1;
}

int
e2e_reply_wait_ms(void)
{
    return scaled_ms(120000);
}

int
e2e_raw_open(const tu_daemon *d, int rcvtimeo_ms)
{
    int s = nn_socket(AF_SP, NN_REQ), max = 256 * MIB;

    ck_assert_int_ge(s, 0);
    ck_assert_int_eq(nn_setsockopt(s, NN_SOL_SOCKET, NN_RCVMAXSIZE, &max, sizeof(max)), 0);
    ck_assert_int_eq(
        nn_setsockopt(s, NN_SOL_SOCKET, NN_RCVTIMEO, &rcvtimeo_ms, sizeof(rcvtimeo_ms)), 0);
    ck_assert_int_ge(nn_connect(s, d->url), 0);
    return s;
}

uint64_t
e2e_obj_u64(const msgpack_object *map, const char *key)
{
    const msgpack_object *o = proto_map_get(map, key);

    ck_assert_msg(o != NULL && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER, "reply has no uint '%s'",
                  key);
    return o->via.u64;
}

void
e2e_raw_call(int s, const void *buf, size_t len, e2e_reply *r)
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
    ck_assert_uint_eq(e2e_obj_u64(r->root, "v"), 1);
    ok = proto_map_get(r->root, "ok");
    ck_assert(ok != NULL && ok->type == MSGPACK_OBJECT_BOOLEAN);
    if (!ok->via.boolean) {
        const msgpack_object *name;
        err = proto_map_get(r->root, "error");
        ck_assert(err != NULL);
        r->code = -(int)e2e_obj_u64(err, "code");
        name = proto_map_get(err, "name");
        ck_assert(name != NULL && name->type == MSGPACK_OBJECT_STR);
        ck_assert(proto_map_get(err, "message") != NULL);
    }
}

void
e2e_raw_send(int s, const rq *q, e2e_reply *r)
{
    e2e_raw_call(s, q->sb.data, q->sb.size, r);
}

void
e2e_raw_free(e2e_reply *r)
{
    msgpack_unpacked_destroy(&r->u);
    if (r->msg != NULL)
        nn_freemsg(r->msg);
    r->msg = NULL;
}

void
e2e_raw_expect(int s, const rq *q, int code)
{
    e2e_reply r;

    e2e_raw_send(s, q, &r);
    ck_assert_msg(r.code == code, "expected error %d (%s), got %d (%s)", code,
                  code != 0 ? emad_errname(code) : "ok", r.code,
                  r.code != 0 ? emad_errname(r.code) : "ok");
    e2e_raw_free(&r);
}

uint64_t
e2e_raw_begin(int s, rq *q, const char *model, uint64_t step)
{
    e2e_reply r;
    uint64_t txn;

    rq_begin(q, "begin", 2);
    rq_kv_str(q, "model", model);
    rq_kv_u64(q, "step", step);
    e2e_raw_send(s, q, &r);
    ck_assert_int_eq(r.code, 0);
    txn = e2e_obj_u64(r.root, "txn");
    e2e_raw_free(&r);
    return txn;
}

void
e2e_txn_push(rq *q, uint64_t txn)
{
    rq_begin(q, "push", 2);
    rq_kv_u64(q, "txn", txn);
    rq_str(q, "tensors");
    msgpack_pack_array(&q->pk, 1);
}

void
e2e_txn_end(rq *q, const char *op, uint64_t txn)
{
    rq_begin(q, op, 1);
    rq_kv_u64(q, "txn", txn);
}

void
e2e_tensor_1d(rq *q, const char *name, const char *kind, const char *dtype, uint64_t dim,
              const void *data, size_t len, int with_offset, uint64_t offset)
{
    rq_tensor(q, 5 + (with_offset != 0), name, kind, dtype, &dim, 1, data, len);
    if (with_offset)
        rq_kv_u64(q, "offset", offset);
}

int
e2e_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}

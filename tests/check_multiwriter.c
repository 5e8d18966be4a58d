/*
 * check_multiwriter.c - multi-writer steps and resent transaction chunks,
 * driven through the request server (server_process(), no sockets).
 *
 * A writer's faulty part is refused alone: that writer gets the error
 * naming its tensor, the parts the other writers were told were staged
 * stay, the writer pushes its part again and the step applies. Stale
 * pushes name their tensors. A resent chunk is taken with the same bytes
 * and refused with others. Every result is compared bit for bit with a
 * reference EMA computed here by a scalar float32 loop (the formula of
 * docs/PROTOCOL.md: diff = shadow - value; shadow -= float32(1 - decay) *
 * diff), and the server must answer a hello after every refusal. A last
 * case runs the real daemon over loopback with one libemad client per
 * writer.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "emad.h"
#include "daemon/server.h"
#include "testutil.h"

static server *srv;
static msgpack_sbuffer sb;
static msgpack_packer pk;
static msgpack_unpacked rep;
static void *rep_buf;

/* A server with room for the 600 KB chunks and pulls below. */
static void
up(void)
{
    server_config cfg;

    server_config_init(&cfg);
    cfg.max_message_bytes = 1 << 20;
    srv = server_create_offline(&cfg);
}

/* The last reply (msgpack_unpack_next() frees the one before) and the server. */
static void
down(void)
{
    msgpack_unpacked_destroy(&rep);
    free(rep_buf);
    server_destroy(srv);
}

/* Pack a string. */
static void
pstr(const char *s)
{
    msgpack_pack_str_with_body(&pk, s, strlen(s));
}

/* Pack key k with an unsigned value. */
static void
pu64(const char *k, uint64_t v)
{
    pstr(k);
    msgpack_pack_uint64(&pk, v);
}

/* Start a request of op with n keys after "v" and "op". */
static void
req(const char *op, uint32_t n)
{
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, n + 2);
    pu64("v", 1);
    pstr("op");
    pstr(op);
}

/* Hand the packed request to the server; its decoded reply (valid until the next call). */
static const msgpack_object *
call(void)
{
    size_t len, off = 0;

    free(rep_buf);
    server_process(srv, sb.data, sb.size, &rep_buf, &len);
    msgpack_sbuffer_destroy(&sb);
    ck_assert_int_eq(msgpack_unpack_next(&rep, rep_buf, len, &off), MSGPACK_UNPACK_SUCCESS);
    ck_assert_int_eq(rep.data.type, MSGPACK_OBJECT_MAP);
    return &rep.data;
}

/* The value of key k in map o, or NULL. */
static const msgpack_object *
at(const msgpack_object *o, const char *k)
{
    size_t n = strlen(k);

    for (uint32_t i = 0; o != NULL && i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        if (kv->key.via.str.size == n && memcmp(kv->key.via.str.ptr, k, n) == 0)
            return &kv->val;
    }
    return NULL;
}

/* An unsigned value of map o. */
static uint64_t
num(const msgpack_object *o, const char *k)
{
    const msgpack_object *v = at(o, k);

    ck_assert_msg(v != NULL && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER, "no uint '%s'", k);
    return v->via.u64;
}

/* Does the msgpack string s equal c? */
static int
str_is(const msgpack_object *s, const char *c)
{
    return s != NULL && s->type == MSGPACK_OBJECT_STR && s->via.str.size == strlen(c) &&
           memcmp(s->via.str.ptr, c, s->via.str.size) == 0;
}

/* Assert the reply is ok. */
static const msgpack_object *
ok(const msgpack_object *r)
{
    const msgpack_object *m = at(at(r, "error"), "message");

    ck_assert_msg(at(r, "ok")->via.boolean, "refused: %.*s", m ? (int)m->via.str.size : 0,
                  m ? m->via.str.ptr : "");
    return r;
}

/*
 * Assert the reply is error code, naming tensor, its message holding text
 * (NULL: not checked); then that the server still answers a hello.
 */
static void
refused(const msgpack_object *r, int code, const char *tname, const char *text)
{
    const msgpack_object *e = at(r, "error");
    char msg[600];

    ck_assert_int_eq(at(r, "ok")->via.boolean, 0);
    snprintf(msg, sizeof(msg), "%.*s", (int)at(e, "message")->via.str.size,
             at(e, "message")->via.str.ptr);
    ck_assert_msg(num(e, "code") == (uint64_t)-code, "code %llu, not %d: %s",
                  (unsigned long long)num(e, "code"), -code, msg);
    ck_assert_msg(str_is(at(e, "tensor"), tname), "error names no tensor '%s': %s", tname, msg);
    ck_assert_msg(text == NULL || strstr(msg, text) != NULL, "'%s' lacks '%s'", msg, text);
    req("hello", 0);
    ok(call());
}

/* Assert a push reply: applied and stale counts, pending, committed step. */
static void
outcome(const msgpack_object *r, uint64_t applied, uint64_t stale, int pending, uint64_t step)
{
    ok(r);
    ck_assert_uint_eq(num(r, "applied"), applied);
    ck_assert_uint_eq(num(r, "stale"), stale);
    ck_assert_int_eq(at(r, "pending")->via.boolean, pending);
    ck_assert_uint_eq(num(r, "step"), step);
}

/* Assert the stale_names of a push reply are the n names given. */
static void
stale_names(const msgpack_object *r, const char *const *names, uint32_t n)
{
    const msgpack_object *a = at(r, "stale_names");

    ck_assert_uint_eq(a->via.array.size, n);
    for (uint32_t i = 0; i < n; i++)
        ck_assert_msg(str_is(&a->via.array.ptr[i], names[i]), "stale name %u is not '%s'", i,
                      names[i]);
}

/* Create model with writers writers and nd decays. */
static void
create(const char *mname, uint32_t writers, const double *decays, uint32_t nd)
{
    req("create", 3);
    pstr("model");
    pstr(mname);
    pu64("writers", writers);
    pstr("decays");
    msgpack_pack_array(&pk, nd);
    for (uint32_t i = 0; i < nd; i++)
        msgpack_pack_double(&pk, decays[i]);
    ok(call());
}

/*
 * A writer's part of one 1-D F32 param of numel elements whose values are
 * v: elements [start, start + count) (count 0: the whole tensor); shape
 * is numel unless set.
 */
typedef struct part {
    const char *name;
    uint64_t numel, start, count, shape;
    const float *v;
} part;

/*
 * Pack a part's tensor map: its data, or for a transaction's chunk (chunk
 * set) the bytes [off, off + len) of it with its offset.
 */
static void
pack_part(const part *p, int chunk, uint64_t off, uint64_t len)
{
    uint64_t n = p->count != 0 ? p->count : p->numel;

    msgpack_pack_map(&pk, 5 + (p->count != 0) + (chunk != 0));
    pstr("name");
    pstr(p->name);
    pstr("kind");
    pstr("param");
    pstr("dtype");
    pstr("F32");
    pstr("shape");
    msgpack_pack_array(&pk, 1);
    msgpack_pack_uint64(&pk, p->shape ? p->shape : p->numel);
    pstr("data");
    msgpack_pack_bin_with_body(&pk, (const char *)(p->v + p->start) + off, chunk ? len : n * 4);
    if (p->count != 0) {
        pstr("slice");
        msgpack_pack_array(&pk, 2);
        msgpack_pack_uint64(&pk, p->start);
        msgpack_pack_uint64(&pk, p->count);
    }
    if (chunk)
        pu64("offset", off);
}

/* Push n parts as writer w of model at step. */
static const msgpack_object *
push(const char *mname, uint64_t step, uint32_t w, const part *p, uint32_t n)
{
    req("push", 4);
    pstr("model");
    pstr(mname);
    pu64("step", step);
    pu64("writer", w);
    pstr("tensors");
    msgpack_pack_array(&pk, n);
    for (uint32_t i = 0; i < n; i++)
        pack_part(&p[i], 0, 0, 0);
    return call();
}

/* Open a transaction of writer w on model at step; its id. */
static uint64_t
begin(const char *mname, uint64_t step, uint32_t w)
{
    req("begin", 3);
    pstr("model");
    pstr(mname);
    pu64("step", step);
    pu64("writer", w);
    return num(ok(call()), "txn");
}

/* Send bytes [off, off + len) of part p as a chunk of transaction id. */
static const msgpack_object *
chunk(uint64_t id, const part *p, uint64_t off, uint64_t len)
{
    req("push", 2);
    pu64("txn", id);
    pstr("tensors");
    msgpack_pack_array(&pk, 1);
    pack_part(p, 1, off, len);
    return call();
}

static const msgpack_object *
commit(uint64_t id)
{
    req("commit", 1);
    pu64("txn", id);
    return call();
}

/* The reference: shadow <- the EMA update with values v at decay (a copy first). */
static void
ref_update(float *shadow, const float *v, size_t n, double decay, int first)
{
    float c = (float)(1.0 - decay);

    for (size_t i = 0; i < n; i++) {
        float diff = shadow[i] - v[i];
        float t = c * diff;
        shadow[i] = first ? v[i] : shadow[i] - t;
    }
}

/*
 * Pull tensor name of model at decay and assert it is, bit for bit, the n
 * reference values want, at the model's committed step.
 */
static void
pulled_equals(const char *mname, const char *name, double decay, const float *want, size_t n,
              uint64_t step)
{
    const msgpack_object *r, *data;

    req("pull", 3);
    pstr("model");
    pstr(mname);
    pstr("decay");
    msgpack_pack_double(&pk, decay);
    pstr("tensors");
    msgpack_pack_array(&pk, 1);
    pstr(name);
    r = ok(call());
    ck_assert_uint_eq(num(r, "step"), step);
    data = at(&at(r, "tensors")->via.array.ptr[0], "data");
    ck_assert_uint_eq(data->via.bin.size, n * 4);
    for (size_t i = 0; i < n; i++) {
        float got;
        memcpy(&got, data->via.bin.ptr + 4 * i, 4);
        ck_assert_msg(tu_f32_bits(got) == tu_f32_bits(want[i]),
                      "%s[%zu] at decay %g: %a, reference %a", name, i, decay, (double)got,
                      (double)want[i]);
    }
}

/* n pseudo-random values in [-1, 1). */
static void
fill(float *v, size_t n, uint64_t *seed)
{
    for (size_t i = 0; i < n; i++)
        v[i] = tu_randf(seed);
}

#define W2 10 /* elements of "w" on the 2-writer model: writer 0 [0, 5), writer 1 [5, 10) */
#define V2 3  /* elements of "v", pushed whole by writer 1 */

/*
 * Two writers, decays 0.9 and 0.75. Step 2: the last part leaves element
 * 5 uncovered. Step 3: the first part holds a NaN. Each faulty writer
 * gets the error, the other writer's part stays (it never pushes again),
 * the faulty writer pushes again and the step applies.
 */
START_TEST(test_mw_two_writers_faulty_part_pushed_again)
{
    const double d[2] = {0.9, 0.75};
    float w[W2], v[V2], rw[2][W2], rv[2][V2];
    uint64_t seed = 42;
    part w0 = {"w", W2, 0, 5, 0, w}, w1[2] = {{"w", W2, 5, 5, 0, w}, {"v", V2, 0, 0, 0, v}};
    part gap[2] = {{"w", W2, 6, 4, 0, w}, {"v", V2, 0, 0, 0, v}};
    const char *const wv[2] = {"w", "v"}, *const only_w[1] = {"w"};

    create("m", 2, d, 2);
    for (uint64_t step = 1; step <= 4; step++) {
        fill(w, W2, &seed);
        fill(v, V2, &seed);
        if (step == 3) {
            float good = w[2];
            w[2] = __builtin_nanf("");
            refused(push("m", 3, 0, &w0, 1), EMAD_ENONFINITE, "w", "NaN");
            w[2] = good;
            outcome(push("m", 3, 1, w1, 2), 0, 0, 1, 2); /* waits for writer 0's part */
            outcome(push("m", 3, 0, &w0, 1), 2, 0, 0, 3);
        } else {
            outcome(push("m", step, 0, &w0, 1), 0, 0, 1, step - 1);
            if (step == 2) { /* the reference still holds step 1 */
                refused(push("m", 2, 1, gap, 2), EMAD_EINCOMPLETE, "w",
                        "none covers [5, 6) after writer 0's [0, 5) and before writer 1's [6, 10)");
                pulled_equals("m", "w", 0.75, rw[1], W2, 1);
            }
            if (step == 4) { /* writer 0 again: a resend, its tensor named */
                const msgpack_object *r = push("m", 4, 0, &w0, 1);
                outcome(r, 0, 1, 1, 3);
                stale_names(r, only_w, 1);
            }
            outcome(push("m", step, 1, w1, 2), 2, 0, 0, step);
        }
        for (int j = 0; j < 2; j++) {
            ref_update(rw[j], w, W2, d[j], step == 1);
            ref_update(rv[j], v, V2, d[j], step == 1);
        }
    }
    for (int j = 0; j < 2; j++) {
        pulled_equals("m", "w", d[j], rw[j], W2, 4);
        pulled_equals("m", "v", d[j], rv[j], V2, 4);
    }
    /* Late pushes of complete steps are stale, their tensors named. */
    {
        const msgpack_object *r = push("m", 3, 1, w1, 2);
        outcome(r, 0, 2, 0, 4);
        stale_names(r, wv, 2);
        r = push("m", 4, 0, &w0, 1);
        outcome(r, 0, 1, 0, 4);
        stale_names(r, only_w, 1);
    }
    pulled_equals("m", "w", 0.9, rw[0], W2, 4);
}
END_TEST

#define W3 12 /* elements of "w" on the 3-writer model: writer k has [4k, 4k + 4) */
#define U3 5  /* elements of "u", pushed whole by writer 2 */

/*
 * Three writers, decay 0.9. Step 1: a description that differs from the
 * one writer 2 staged. Step 2: an overlap into writer 0's slice, a shape
 * that differs from the stored one. Step 3: writer 1 sends its part as a
 * transaction (a chunk resent with the same bytes is taken, with other
 * bytes refused) and writer 2's part leaves an element of "u" uncovered.
 */
START_TEST(test_mw_three_writers_faulty_parts_and_a_transaction)
{
    const double d = 0.9;
    float w[W3], u[U3], alt[W3], rw[W3], ru[U3];
    uint64_t seed = 7, id;
    part p0 = {"w", W3, 0, 4, 0, w}, p1 = {"w", W3, 4, 4, 0, w}, p1alt = {"w", W3, 4, 4, 0, alt};
    part p2[2] = {{"w", W3, 8, 4, 0, w}, {"u", U3, 0, 0, 0, u}};
    part over[2] = {{"w", W3, 3, 9, 0, w}, {"u", U3, 0, 0, 0, u}};
    part short2[2] = {{"w", W3, 8, 4, 0, w}, {"u", U3, 0, 4, 0, u}};
    part wide0 = {"w", W3, 0, 4, 13, w}, wide1 = {"w", W3, 4, 4, 13, w};

    create("m3", 3, &d, 1);
    for (uint64_t step = 1; step <= 3; step++) {
        fill(w, W3, &seed);
        fill(u, U3, &seed);
        if (step == 1) {
            outcome(push("m3", 1, 2, p2, 2), 0, 0, 1, 0);
            refused(push("m3", 1, 0, &wide0, 1), EMAD_ESHAPE, "w", "writer 2");
            outcome(push("m3", 1, 0, &p0, 1), 0, 0, 1, 0);
            outcome(push("m3", 1, 1, &p1, 1), 2, 0, 0, 1);
        } else if (step == 2) {
            outcome(push("m3", 2, 0, &p0, 1), 0, 0, 1, 1);
            refused(push("m3", 2, 2, over, 2), EMAD_EOVERLAP, "w", "writer 0");
            refused(push("m3", 2, 1, &wide1, 1), EMAD_ESHAPE, "w", "stored");
            outcome(push("m3", 2, 1, &p1, 1), 0, 0, 1, 1);
            outcome(push("m3", 2, 2, p2, 2), 2, 0, 0, 2);
        } else {
            id = begin("m3", 3, 1);
            ck_assert_uint_eq(num(ok(chunk(id, &p1, 8, 8)), "staged"), 1);
            ck_assert_uint_eq(num(ok(chunk(id, &p1, 0, 8)), "staged"), 1);
            ck_assert_uint_eq(num(ok(chunk(id, &p1, 0, 8)), "staged"), 0); /* a resend */
            ck_assert_uint_eq(num(ok(chunk(id, &p1, 4, 8)), "staged"), 0); /* same bytes */
            memcpy(alt, w, sizeof(alt));
            alt[5] = -alt[5] + 0.5f;
            refused(chunk(id, &p1alt, 0, 8), EMAD_ECONFLICT, "w", "other bytes");
            outcome(commit(id), 0, 0, 1, 2);
            outcome(push("m3", 3, 0, &p0, 1), 0, 0, 1, 2);
            refused(push("m3", 3, 2, short2, 2), EMAD_EINCOMPLETE, "u", "none covers [4, 5)");
            outcome(push("m3", 3, 2, p2, 2), 2, 0, 0, 3);
        }
        ref_update(rw, w, W3, d, step == 1);
        ref_update(ru, u, U3, d, step == 1);
        pulled_equals("m3", "w", d, rw, W3, step);
        pulled_equals("m3", "u", d, ru, U3, step);
    }
}
END_TEST

#define N1 150000 /* elements of the single-writer tensor */
#define A1 400000 /* bytes of its first chunk: two pieces of the daemon's work */

/*
 * A single-writer transaction averages each chunk as it arrives: a resend
 * with the same bytes is taken and ignored, one with a changed element in
 * either chunk is refused, a part of a chunk cannot be checked; the commit
 * applies exactly the bytes first received.
 */
START_TEST(test_mw_resent_chunk_same_bytes_taken_other_bytes_refused)
{
    const double d = 0.9;
    float *v = malloc(N1 * 4), *alt = malloc(N1 * 4), *ref = malloc(N1 * 4);
    part p = {"w", N1, 0, 0, 0, v}, pa = {"w", N1, 0, 0, 0, alt};
    uint64_t seed = 99, id;

    create("s", 1, &d, 1);
    fill(v, N1, &seed);
    outcome(push("s", 1, 0, &p, 1), 1, 0, 0, 1);
    ref_update(ref, v, N1, d, 1);
    fill(v, N1, &seed);
    id = begin("s", 2, 0);
    ck_assert_uint_eq(num(ok(chunk(id, &p, 0, A1)), "staged"), 1);
    ck_assert_uint_eq(num(ok(chunk(id, &p, A1, N1 * 4 - A1)), "staged"), 1);
    ck_assert_uint_eq(num(ok(chunk(id, &p, 0, A1)), "staged"), 0);
    ck_assert_uint_eq(num(ok(chunk(id, &p, A1, N1 * 4 - A1)), "staged"), 0);
    memcpy(alt, v, N1 * 4);
    alt[70000] = 2.0f; /* in the second piece of the first chunk */
    refused(chunk(id, &pa, 0, A1), EMAD_ECONFLICT, "w", "other bytes");
    memcpy(alt, v, N1 * 4);
    alt[N1 - 1] = 2.0f;
    refused(chunk(id, &pa, A1, N1 * 4 - A1), EMAD_ECONFLICT, "w", "other bytes");
    refused(chunk(id, &p, 4, 8), EMAD_EORDER, "w", "resent whole");
    outcome(commit(id), 1, 0, 0, 2);
    ref_update(ref, v, N1, d, 0);
    pulled_equals("s", "w", d, ref, N1, 2);
    free(v);
    free(alt);
    free(ref);
}
END_TEST

/*
 * Over loopback, the real daemon and libemad, one client per writer: the
 * faulty writer's call returns the error, the other writer's result
 * stands, and the pulled model equals the reference.
 */
START_TEST(test_mw_loopback_one_client_per_writer)
{
    tu_daemon dm;
    emad_client *c[2];
    emad_model_config cfg;
    emad_push_result r;
    emad_model *m;
    float w[8], ref[8];
    uint64_t seed = 5;
    emad_tensor t = {.name = "w", .kind = EMAD_PARAM, .dtype = EMAD_F32, .ndim = 1, .shape = {8}};

    ck_assert_int_eq(tu_daemon_start(&dm, NULL), 0);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(emad_connect(&c[i], dm.url, NULL), 0);
    emad_config_init(&cfg);
    cfg.decays[0] = 0.9;
    cfg.writers = 2;
    ck_assert_int_eq(emad_create_config(c[0], "lb", &cfg, 0), 0);
    for (uint64_t step = 1; step <= 2; step++) {
        fill(w, 8, &seed);
        t.data = w;
        t.offset = 0;
        t.count = 4;
        t.nbytes = 16;
        ck_assert_int_eq(emad_push_as(c[0], "lb", step, 0, &t, 1, &r), 0);
        ck_assert_int_eq(r.pending, 1);
        if (step == 2) { /* writer 1 leaves element 4 out */
            t.data = w + 5;
            t.offset = 5;
            t.count = 3;
            t.nbytes = 12;
            ck_assert_int_eq(emad_push_as(c[1], "lb", 2, 1, &t, 1, &r), EMAD_EINCOMPLETE);
            ck_assert_ptr_nonnull(strstr(emad_last_error(c[1]), "none covers [4, 5)"));
        }
        t.data = w + 4;
        t.offset = t.count = 4;
        t.nbytes = 16;
        ck_assert_int_eq(emad_push_as(c[1], "lb", step, 1, &t, 1, &r), 0);
        ck_assert_int_eq(r.pending, 0);
        ck_assert_uint_eq(r.applied, 1);
        ck_assert_uint_eq(r.step, step);
        ref_update(ref, w, 8, 0.9, step == 1);
    }
    ck_assert_int_eq(emad_pull(c[0], "lb", NULL, 0, &m), 0);
    ck_assert_uint_eq(m->step, 2);
    ck_assert_uint_eq(m->tensors[0].nbytes, sizeof(ref));
    ck_assert_int_eq(memcmp(m->tensors[0].data, ref, sizeof(ref)), 0);
    emad_model_free(m);
    for (int i = 0; i < 2; i++)
        emad_close(c[i]);
    ck_assert_int_eq(tu_daemon_stop(&dm), 0);
}
END_TEST

/* EMAD_TEST_TIMEOUT_SCALE (default 1) times seconds. */
static int
scaled(int seconds)
{
    const char *e = getenv("EMAD_TEST_TIMEOUT_SCALE");
    int k = e != NULL ? atoi(e) : 1;

    return seconds * (k > 0 ? k : 1);
}

int
main(void)
{
    Suite *su = suite_create("multiwriter");
    TCase *tc = tcase_create("core");
    SRunner *sr;
    int failed;

    tcase_add_checked_fixture(tc, up, down);
    tcase_add_test(tc, test_mw_two_writers_faulty_part_pushed_again);
    tcase_add_test(tc, test_mw_three_writers_faulty_parts_and_a_transaction);
    tcase_add_test(tc, test_mw_resent_chunk_same_bytes_taken_other_bytes_refused);
    tcase_set_timeout(tc, scaled(30));
    suite_add_tcase(su, tc);
    tc = tcase_create("loopback");
    tcase_add_test(tc, test_mw_loopback_one_client_per_writer);
    tcase_set_timeout(tc, scaled(60));
    suite_add_tcase(su, tc);
    sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/*
 * check_e2e_layout.c - end-to-end suite for push layouts (a push asks the
 * daemon to keep its tensors' layout with `layout: true`, which libemad
 * does when it pushes the same tensors a second time; the next pushes of
 * them carry the layout's id and the data alone): the real emad binary
 * driven by libemad and by raw nanomsg REQ sockets.
 *
 * Covers libemad's data-only pushes over several steps and with
 * EMAD_PUSH_LAYOUTS=off (the same shadows bit for bit), descriptor changes
 * that make libemad send the tensors, the transparent resend when the
 * daemon gave a layout up (64 other layouts kept, or a restart), the raw
 * wire form with every error it documents, and several writers.
 *
 * Every test starts its own daemon on a free port with a private state
 * directory (tests/testutil.c) and stops it at the end, asserting a clean
 * exit. Expected values are computed here by hand: decay 0.5 halves the
 * distance, so averages of small integers over a few steps stay exact in
 * float32 and the shadows can be compared bit for bit.
 */
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <check.h>
#include <nanomsg/nn.h>

#include "e2eutil.h"

/* ---- a model of 40 tensors of mixed sizes and kinds ---- */

#define NT 40   /* tensors of the big model */
#define MAXE 32 /* elements of its largest tensor */

typedef struct mdl {
    emad_tensor t[NT];
    char names[NT][24];
    float f[NT][MAXE];
    int64_t i64[2];
    float ref[NT][MAXE]; /* the expected shadow */
    int64_t ref_i64[2];
    int pushed; /* 1 once the first step is in the reference */
} mdl;

/* Elements of tensor i of the model. */
static size_t
mdl_numel(const mdl *m, size_t i)
{
    return m->t[i].dtype == EMAD_F32 ? m->t[i].nbytes / sizeof(float) : 0;
}

/* A small integer, the value of element j of tensor i at step s (exact in float32). */
static float
val(uint64_t s, size_t i, size_t j)
{
    return (float)((int)((i * 7 + j * 3 + s * 5) % 17) - 8);
}

/*
 * Describe the model: a 2-D param "fc.weight" [3, 4], an I64 buffer
 * "bn.num_batches" (copied), an empty param "empty" [0] and 37 1-D params
 * of 1 to 23 elements.
 */
static void
mdl_init(mdl *m)
{
    memset(m, 0, sizeof(*m));
    for (size_t i = 0; i < NT; i++) {
        if (i == 0) {
            snprintf(m->names[i], sizeof(m->names[i]), "fc.weight");
            m->t[i] =
                e2e_tensor(m->names[i], EMAD_PARAM, EMAD_F32, m->f[i], 12 * sizeof(float), 2, 3, 4);
        } else if (i == 1) {
            snprintf(m->names[i], sizeof(m->names[i]), "bn.num_batches");
            m->t[i] =
                e2e_tensor(m->names[i], EMAD_BUFFER, EMAD_I64, m->i64, sizeof(m->i64), 1, 2, 0);
        } else if (i == 2) {
            snprintf(m->names[i], sizeof(m->names[i]), "empty");
            m->t[i] = e2e_tensor(m->names[i], EMAD_PARAM, EMAD_F32, m->f[i], 0, 1, 0, 0);
        } else {
            size_t numel = (i * 5) % 23 + 1;
            snprintf(m->names[i], sizeof(m->names[i]), "layer%02zu.w", i);
            m->t[i] = e2e_tensor(m->names[i], EMAD_PARAM, EMAD_F32, m->f[i], numel * sizeof(float),
                                 1, numel, 0);
        }
    }
}

/* Fill the model's values for step s and fold them into the reference. */
static void
mdl_step(mdl *m, uint64_t s)
{
    m->i64[0] = (int64_t)s * 1000;
    m->i64[1] = (INT64_C(1) << 40) + (int64_t)s;
    m->ref_i64[0] = m->i64[0];
    m->ref_i64[1] = m->i64[1];
    for (size_t i = 0; i < NT; i++) {
        for (size_t j = 0; j < mdl_numel(m, i); j++) {
            m->f[i][j] = val(s, i, j);
            /* the first push is the shadow; later ones halve the distance */
            m->ref[i][j] =
                m->pushed ? (float)(((double)m->ref[i][j] + m->f[i][j]) / 2.0) : m->f[i][j];
        }
    }
    m->pushed = 1;
}

/* Push steps first..last of the model (ref updated), each applied whole in one message. */
static void
mdl_push(emad_client *c, const char *model, mdl *m, uint64_t first, uint64_t last)
{
    for (uint64_t s = first; s <= last; s++) {
        emad_push_result res;

        mdl_step(m, s);
        OK(c, emad_push(c, model, s, m->t, NT, &res));
        ck_assert_uint_eq(res.applied, NT);
        ck_assert_uint_eq(res.stale, 0);
        ck_assert_uint_eq(res.step, s);
        ck_assert_uint_eq(res.messages, 1);
    }
}

/* Assert the pulled model equals the reference bit for bit, at step. */
static void
mdl_check(emad_client *c, const char *model, const mdl *m, uint64_t step)
{
    emad_model *p;

    OK(c, emad_pull(c, model, NULL, 0, &p));
    ck_assert_uint_eq(p->step, step);
    ck_assert_uint_eq(p->ntensors, NT);
    for (size_t i = 0; i < NT; i++) {
        const emad_tensor *t = e2e_find(p, m->names[i]);
        const void *want = i == 1 ? (const void *)m->ref_i64 : (const void *)m->ref[i];

        ck_assert_int_eq(t->dtype, m->t[i].dtype);
        ck_assert_uint_eq(t->ndim, m->t[i].ndim);
        ck_assert_uint_eq(t->shape[0], m->t[i].shape[0]);
        ck_assert_uint_eq(t->nbytes, m->t[i].nbytes);
        ck_assert_msg(t->nbytes == 0 || memcmp(t->data, want, t->nbytes) == 0,
                      "tensor '%s' differs from the reference", m->names[i]);
    }
    emad_model_free(p);
}

/* Assert two pulled models hold the same tensors, bit for bit. */
static void
same_models(emad_client *c, const char *a, const char *b)
{
    emad_model *pa, *pb;

    OK(c, emad_pull(c, a, NULL, 0, &pa));
    OK(c, emad_pull(c, b, NULL, 0, &pb));
    ck_assert_uint_eq(pa->ntensors, pb->ntensors);
    ck_assert_uint_eq(pa->step, pb->step);
    for (size_t i = 0; i < pa->ntensors; i++) {
        const emad_tensor *t = e2e_find(pb, pa->tensors[i].name);

        ck_assert_uint_eq(t->nbytes, pa->tensors[i].nbytes);
        ck_assert(t->nbytes == 0 || memcmp(t->data, pa->tensors[i].data, t->nbytes) == 0);
    }
    emad_model_free(pa);
    emad_model_free(pb);
}

/* Assert the three layout counters. */
static void
counters_are(emad_client *c, uint64_t kept, uint64_t pushes, uint64_t unknown)
{
    ck_assert_uint_eq(e2e_stat(c, "layouts_kept"), kept);
    ck_assert_uint_eq(e2e_stat(c, "layout_pushes"), pushes);
    ck_assert_uint_eq(e2e_stat(c, "layout_unknown"), unknown);
}

/*
 * 40 tensors over 5 steps: the first push is only remembered by the
 * client, the second (the same tensors again) keeps a layout, the three
 * next are data alone, and the shadows equal the reference; with
 * EMAD_PUSH_LAYOUTS=off another client gets the same shadows bit for bit
 * without asking for a layout.
 */
START_TEST(test_layout_libemad_five_steps_and_turned_off)
{
    tu_daemon d;
    emad_client *c, *off;
    static mdl m, m2;

    e2e_daemon_up(&d, NULL);
    c = e2e_client_open(&d, NULL);
    OK(c, emad_create(c, "m", 0.5, 0));
    OK(c, emad_create(c, "m-off", 0.5, 0));
    counters_are(c, 0, 0, 0);
    mdl_init(&m);
    mdl_push(c, "m", &m, 1, 1);
    counters_are(c, 0, 0, 0); /* remembered by the client only */
    mdl_push(c, "m", &m, 2, 2);
    counters_are(c, 1, 0, 0); /* the same tensors again: kept */
    mdl_push(c, "m", &m, 3, 5);
    counters_are(c, 1, 3, 0);
    mdl_check(c, "m", &m, 5);

    ck_assert_int_eq(setenv("EMAD_PUSH_LAYOUTS", "off", 1), 0);
    off = e2e_client_open(&d, NULL);
    mdl_init(&m2);
    mdl_push(off, "m-off", &m2, 1, 5);
    ck_assert_int_eq(unsetenv("EMAD_PUSH_LAYOUTS"), 0);
    counters_are(c, 1, 3, 0);
    mdl_check(off, "m-off", &m2, 5);
    same_models(c, "m", "m-off");
    /* The first client, which read the environment before, still sends data alone. */
    mdl_push(c, "m", &m, 6, 6);
    counters_are(c, 1, 4, 0);
    mdl_check(c, "m", &m, 6);
    emad_close(off);
    emad_close(c);
    e2e_daemon_down(&d);
}
END_TEST

/* ---- three small tensors ---- */

/* An expected F32 tensor: pushed once at least (set), its shadow. */
typedef struct shadow {
    int set;
    float v[8];
} shadow;

/* Fold the n values v into the expected shadow e. */
static void
fold(shadow *e, const float *v, size_t n)
{
    for (size_t j = 0; j < n; j++)
        e->v[j] = e->set ? (float)(((double)e->v[j] + v[j]) / 2.0) : v[j];
    e->set = 1;
}

/* Fill n values of step s for the tensor seeded k. */
static void
fill(float *v, size_t n, uint64_t s, int k)
{
    for (size_t j = 0; j < n; j++)
        v[j] = (float)((int)((s * 3 + j * 5 + (size_t)k * 11) % 13) - 6);
}

/* Assert tensor name of model pulled equals e (n floats), bit for bit. */
static void
pulled_is(emad_client *c, const char *model, const char *name, const shadow *e, size_t n)
{
    emad_model *p;
    const emad_tensor *t;

    OK(c, emad_pull(c, model, NULL, 0, &p));
    t = e2e_find(p, name);
    ck_assert_uint_eq(t->nbytes, n * sizeof(float));
    ck_assert_msg(memcmp(t->data, e->v, n * sizeof(float)) == 0, "tensor '%s' differs", name);
    emad_model_free(p);
}

/* Four small tensors, their values at each step and their expected shadows. */
typedef struct small {
    float a[4], b[6], c[2], d[2];
    shadow ea, eb, ec, ed;
} small;

/* Does one of t[0..n) name name? */
static int
names(const emad_tensor *t, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(t[i].name, name) == 0)
            return 1;
    return 0;
}

/* Push t[0..n) (over sm's buffers) at step s, expecting applied tensors; fold them in. */
static void
small_push(emad_client *c, small *sm, uint64_t s, const emad_tensor *t, size_t n, uint64_t applied)
{
    emad_push_result res;

    fill(sm->a, 4, s, 0);
    fill(sm->b, 6, s, 1);
    fill(sm->c, 2, s, 2);
    fill(sm->d, 2, s, 3);
    OK(c, emad_push(c, "m", s, t, n, &res));
    ck_assert_uint_eq(res.applied, applied);
    ck_assert_uint_eq(res.step, s);
    if (names(t, n, "a"))
        fold(&sm->ea, sm->a, 4);
    if (names(t, n, "b"))
        fold(&sm->eb, sm->b, 6);
    if (names(t, n, "c"))
        fold(&sm->ec, sm->c, 2);
    if (names(t, n, "d"))
        fold(&sm->ed, sm->d, 2);
}

/*
 * Another shape (the daemon sees the tensors and refuses it), one tensor
 * fewer, a renamed tensor and slices are each sent whole, then kept anew
 * when they come again; the third time they are data alone; the client
 * remembers four layouts, the least recently used replaced.
 */
START_TEST(test_layout_changed_descriptors_sent_whole)
{
    tu_daemon d;
    emad_client *c;
    emad_push_result res;
    static small sm;
    emad_tensor abc[3], ab[2], abd[3], sl[4], bad[3];
    emad_model *before, *after;

    e2e_daemon_up(&d, NULL);
    c = e2e_client_open(&d, NULL);
    OK(c, emad_create(c, "m", 0.5, 0));
    abc[0] = e2e_tensor("a", EMAD_PARAM, EMAD_F32, sm.a, sizeof(sm.a), 1, 4, 0);
    abc[1] = e2e_tensor("b", EMAD_PARAM, EMAD_F32, sm.b, sizeof(sm.b), 2, 2, 3);
    abc[2] = e2e_tensor("c", EMAD_PARAM, EMAD_F32, sm.c, sizeof(sm.c), 1, 2, 0);
    memcpy(ab, abc, sizeof(ab));
    memcpy(abd, abc, sizeof(abd));
    abd[2] = e2e_tensor("d", EMAD_PARAM, EMAD_F32, sm.d, sizeof(sm.d), 1, 2, 0);
    sl[0] = sl[1] = abc[0];
    sl[0].nbytes = sl[1].nbytes = 2 * sizeof(float);
    sl[0].count = sl[1].count = 2;
    sl[1].data = sm.a + 2;
    sl[1].offset = 2;
    sl[2] = abc[1];
    sl[3] = abc[2];
    memcpy(bad, abc, sizeof(bad));
    bad[1].shape[0] = 3; /* [3, 2]: the same bytes */
    bad[1].shape[1] = 2;

    /* Steps 1 to 3: remembered, kept, then data alone. */
    small_push(c, &sm, 1, abc, 3, 3);
    small_push(c, &sm, 2, abc, 3, 3);
    small_push(c, &sm, 3, abc, 3, 3);
    counters_are(c, 1, 1, 0);
    /* Another shape of the same bytes: sent whole, so the daemon refuses it; nothing changes. */
    OK(c, emad_pull(c, "m", NULL, 0, &before));
    ck_assert_int_eq(emad_push(c, "m", 4, bad, 3, &res), EMAD_ESHAPE);
    counters_are(c, 1, 1, 0);
    OK(c, emad_pull(c, "m", NULL, 0, &after));
    ck_assert_uint_eq(after->step, before->step);
    for (size_t i = 0; i < before->ntensors; i++)
        ck_assert_int_eq(memcmp(e2e_find(after, before->tensors[i].name)->data,
                                before->tensors[i].data, before->tensors[i].nbytes),
                         0);
    emad_model_free(before);
    emad_model_free(after);
    /* One tensor fewer, three times. */
    small_push(c, &sm, 4, ab, 2, 2);
    small_push(c, &sm, 5, ab, 2, 2);
    small_push(c, &sm, 6, ab, 2, 2);
    counters_are(c, 2, 2, 0);
    /* A renamed tensor (d is new), three times. */
    small_push(c, &sm, 7, abd, 3, 3);
    small_push(c, &sm, 8, abd, 3, 3);
    small_push(c, &sm, 9, abd, 3, 3);
    counters_are(c, 3, 3, 0);
    /* a as two slices, three times. */
    small_push(c, &sm, 10, sl, 4, 3);
    small_push(c, &sm, 11, sl, 4, 3);
    small_push(c, &sm, 12, sl, 4, 3);
    counters_are(c, 4, 4, 0);
    /* The first tensors again: still remembered (four per client), data alone. */
    small_push(c, &sm, 13, abc, 3, 3);
    counters_are(c, 4, 5, 0);
    /* A fifth set replaces the least recently used (a, b) on the client... */
    small_push(c, &sm, 14, abc, 1, 1);
    counters_are(c, 4, 5, 0);
    /* ... so a and b are sent whole again, then kept again. */
    small_push(c, &sm, 15, ab, 2, 2);
    counters_are(c, 4, 5, 0);
    small_push(c, &sm, 16, ab, 2, 2);
    counters_are(c, 5, 5, 0);
    /* NaN in a push of data alone is refused as in any push; nothing changes. */
    fill(sm.a, 4, 17, 0);
    fill(sm.b, 6, 17, 1);
    sm.a[1] = NAN;
    ck_assert_int_eq(emad_push(c, "m", 17, ab, 2, &res), EMAD_ENONFINITE);
    counters_are(c, 5, 6, 0);
    pulled_is(c, "m", "a", &sm.ea, 4);
    pulled_is(c, "m", "b", &sm.eb, 6);
    small_push(c, &sm, 17, ab, 2, 2);
    counters_are(c, 5, 7, 0);
    ck_assert_uint_eq(e2e_stat(c, "layout_unknown"), 0);
    pulled_is(c, "m", "a", &sm.ea, 4);
    pulled_is(c, "m", "b", &sm.eb, 6);
    pulled_is(c, "m", "c", &sm.ec, 2);
    pulled_is(c, "m", "d", &sm.ed, 2);
    emad_close(c);
    e2e_daemon_down(&d);
}
END_TEST

/* ---- raw pushes ---- */

/* Start a push of model at step with more keys after v, op, model and step. */
static void
push_head(rq *q, const char *model, uint64_t step, size_t more)
{
    rq_begin(q, "push", 2 + more);
    rq_kv_str(q, "model", model);
    rq_kv_u64(q, "step", step);
}

/* Pack a push of one 1-D F32 tensor to model at step asking for its layout. */
static void
keep_push(rq *q, const char *model, uint64_t step, const char *name, const float *v, size_t n)
{
    push_head(q, model, step, 2);
    rq_str(q, "layout");
    msgpack_pack_true(&q->pk);
    rq_str(q, "tensors");
    msgpack_pack_array(&q->pk, 1);
    e2e_tensor_1d(q, name, "param", "F32", n, v, n * sizeof(float), 0, 0);
}

/* Pack a push of data alone (len bytes) to model at step with layout id. */
static void
data_push(rq *q, const char *model, uint64_t step, uint64_t id, const void *data, size_t len)
{
    push_head(q, model, step, 2);
    rq_kv_u64(q, "layout", id);
    rq_str(q, "data");
    msgpack_pack_bin_with_body(&q->pk, data, len);
}

/* Send q, expect success; the reply's nonzero layout id. */
static uint64_t
kept_id(int s, const rq *q)
{
    e2e_reply r;
    uint64_t id;

    e2e_raw_send(s, q, &r);
    ck_assert_int_eq(r.code, 0);
    id = e2e_obj_u64(r.root, "layout");
    ck_assert_uint_ne(id, 0);
    e2e_raw_free(&r);
    return id;
}

/* Send q, expect error code and no layout in the reply. */
static void
refused(int s, const rq *q, int code)
{
    e2e_reply r;

    e2e_raw_send(s, q, &r);
    ck_assert_msg(r.code == code, "expected %s, got %s", emad_errname(code),
                  r.code != 0 ? emad_errname(r.code) : "ok");
    ck_assert_ptr_null(proto_map_get(r.root, "layout"));
    e2e_raw_free(&r);
}

/* The reaping of a daemon being stopped. */
typedef struct reap {
    pid_t pid;
    int status;
} reap;

/* Has the daemon exited (reaped into status)? */
static int
reaped(void *arg)
{
    reap *r = arg;

    return waitpid(r->pid, &r->status, WNOHANG) == r->pid;
}

/* Stop the daemon with SIGTERM, keep its state directory, start it again on the same port. */
static void
restart(tu_daemon *d)
{
    reap r = {d->pid, 0};
    char *dir = d->state_dir;
    int port = d->port;

    ck_assert_int_eq(kill(d->pid, SIGTERM), 0);
    ck_assert_msg(tu_wait_until(reaped, &r, TU_DAEMON_WAIT_S), "emad did not stop");
    ck_assert(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0);
    d->pid = 0;
    ck_assert_msg(tu_daemon_start_at(d, port, dir, NULL) == 0, "emad did not restart");
    free(dir);
}

/*
 * Create models "m" and "other" (decay 0.5) and push steps first..last of
 * m to "m".
 */
static void
mdl_push_created(emad_client *c, mdl *m, uint64_t first, uint64_t last)
{
    OK(c, emad_create(c, "m", 0.5, 0));
    OK(c, emad_create(c, "other", 0.5, 0));
    mdl_push(c, "m", m, first, last);
}

/* Over a raw socket of its own, have count layouts kept for model "other" (t00, t01, ...). */
static void
other_layouts(const tu_daemon *d, int count)
{
    float one = 1;
    int s = e2e_raw_open(d, e2e_reply_wait_ms());
    rq q;

    rq_init(&q);
    for (int k = 0; k < count; k++) {
        char name[16];

        snprintf(name, sizeof(name), "t%02d", k);
        keep_push(&q, "other", (uint64_t)k + 1, name, &one, 1);
        (void)kept_id(s, &q);
    }
    rq_free(&q);
    nn_close(s);
}

/*
 * A second client has 64 other layouts kept, so the daemon gives up the
 * first client's: its next push gets EMAD_ELAYOUT, sends the tensors again
 * within the same call and returns 0; the next one is data alone again.
 * The same after a restart of the daemon on the same port.
 */
START_TEST(test_layout_given_up_sent_again_transparently)
{
    tu_daemon d;
    emad_client *c;
    static mdl m;

    e2e_daemon_up(&d, NULL);
    c = e2e_client_open(&d, NULL);
    mdl_init(&m);
    mdl_push_created(c, &m, 1, 3);
    counters_are(c, 1, 1, 0);
    other_layouts(&d, 64);
    counters_are(c, 65, 1, 0);
    mdl_push(c, "m", &m, 4, 4);
    ck_assert_str_eq(emad_last_error(c), "");
    counters_are(c, 66, 1, 1);
    mdl_push(c, "m", &m, 5, 5);
    counters_are(c, 66, 2, 1);
    mdl_check(c, "m", &m, 5);

    /* A restarted daemon knows no layout: the same, from its fresh counters. */
    restart(&d);
    mdl_check(c, "m", &m, 5);
    counters_are(c, 0, 0, 0);
    mdl_push(c, "m", &m, 6, 6);
    counters_are(c, 1, 0, 1);
    mdl_push(c, "m", &m, 7, 7);
    counters_are(c, 1, 1, 1);
    mdl_check(c, "m", &m, 7);
    emad_close(c);
    e2e_daemon_down(&d);
}
END_TEST

/*
 * With 64 layouts kept, a push asking for one that fails (a stored
 * tensor's shape) changes nothing: it gives up no other layout, so the
 * oldest client's next push is still data alone.
 */
START_TEST(test_layout_failed_keep_gives_up_none)
{
    tu_daemon d;
    emad_client *c;
    static mdl m;
    float two[2] = {1, 2};
    int s;
    rq q;

    e2e_daemon_up(&d, NULL);
    c = e2e_client_open(&d, NULL);
    mdl_init(&m);
    mdl_push_created(c, &m, 1, 2);
    other_layouts(&d, 63);
    counters_are(c, 64, 0, 0);
    s = e2e_raw_open(&d, e2e_reply_wait_ms());
    rq_init(&q);
    keep_push(&q, "other", 100, "t00", two, 2); /* t00 has 1 element */
    refused(s, &q, EMAD_ESHAPE);
    counters_are(c, 64, 0, 0);
    rq_free(&q);
    nn_close(s);
    mdl_push(c, "m", &m, 3, 3);
    counters_are(c, 64, 1, 0);
    mdl_check(c, "m", &m, 3);
    emad_close(c);
    e2e_daemon_down(&d);
}
END_TEST

/* Assert model r pulled holds a = ea (4 floats) and b = eb (2 floats) at step, bit for bit. */
static void
raw_model_is(emad_client *c, uint64_t step, const float *ea, const float *eb)
{
    emad_model *p;

    OK(c, emad_pull(c, "r", NULL, 0, &p));
    ck_assert_uint_eq(p->step, step);
    ck_assert_uint_eq(p->ntensors, 2);
    ck_assert_uint_eq(e2e_find(p, "a")->nbytes, 4 * sizeof(float));
    ck_assert_uint_eq(e2e_find(p, "b")->nbytes, 2 * sizeof(float));
    ck_assert(memcmp(e2e_find(p, "a")->data, ea, 4 * sizeof(float)) == 0);
    ck_assert(memcmp(e2e_find(p, "b")->data, eb, 2 * sizeof(float)) == 0);
    emad_model_free(p);
}

/* The state of the raw test: the layout, the step, the expected a and b. */
typedef struct rawst {
    emad_client *c;
    int s;
    uint64_t id, step;
    float ea[4], eb[2];
} rawst;

/* The model is as expected; then a good push of data alone applies (the daemon serves). */
static void
unchanged_then_good(rawst *st)
{
    rq q;
    e2e_reply r;
    float data[6];

    raw_model_is(st->c, st->step, st->ea, st->eb);
    st->step++;
    for (size_t j = 0; j < 6; j++) {
        data[j] = (float)((int)((st->step * 3 + j) % 7) - 3);
        if (j < 4)
            st->ea[j] = (float)(((double)st->ea[j] + data[j]) / 2.0);
        else
            st->eb[j - 4] = (float)(((double)st->eb[j - 4] + data[j]) / 2.0);
    }
    rq_init(&q);
    data_push(&q, "r", st->step, st->id, data, sizeof(data));
    e2e_raw_send(st->s, &q, &r);
    ck_assert_int_eq(r.code, 0);
    ck_assert_uint_eq(e2e_obj_u64(r.root, "applied"), 2);
    ck_assert_uint_eq(e2e_obj_u64(r.root, "step"), st->step);
    ck_assert_ptr_null(proto_map_get(r.root, "layout"));
    e2e_raw_free(&r);
    rq_free(&q);
    raw_model_is(st->c, st->step, st->ea, st->eb);
}

/* The daemon's /metrics on 127.0.0.1:port and the lines it should hold. */
typedef struct prom {
    int port;
    char want[3][80];
} prom;

/* Does /metrics hold every wanted line (the board is refreshed by the daemon's loop)? */
static int
prom_shows(void *arg)
{
    const prom *p = arg;
    char cmd[160], *out = NULL;
    int ok;

    snprintf(cmd, sizeof(cmd), "curl -s -m %d http://127.0.0.1:%d/metrics",
             (int)(60 * tu_timeout_scale()) + 1, p->port);
    ok = tu_run(cmd, &out) == 0 && out != NULL;
    for (size_t i = 0; ok && i < 3; i++)
        ok = strstr(out, p->want[i]) != NULL;
    free(out);
    return ok;
}

/*
 * Pack the last two keys of a push: with id, `layout: id` and 24 bytes of
 * data; else `layout: true` and tensor a of 4 floats (a chunk at offset 0
 * if txn).
 */
static void
layout_keys(rq *q, uint64_t id, int txn)
{
    static const float a[6] = {1, 2, 3, 4, 5, 6};

    if (id != 0) {
        rq_kv_u64(q, "layout", id);
        rq_str(q, "data");
        msgpack_pack_bin_with_body(&q->pk, a, sizeof(a));
        return;
    }
    rq_str(q, "layout");
    msgpack_pack_true(&q->pk);
    rq_str(q, "tensors");
    msgpack_pack_array(&q->pk, 1);
    e2e_tensor_1d(q, "a", "param", "F32", 4, a, 4 * sizeof(float), txn, 0);
}

/*
 * Pack a push of model at step with `layout: keep` of a (a_numel of its 4
 * floats 1, 2, 3, 4) and, if with_b, b (5, 6).
 */
static void
ab_push(rq *q, const char *model, uint64_t step, int keep, uint64_t a_numel, int with_b)
{
    static const float a[4] = {1, 2, 3, 4}, b[2] = {5, 6};

    push_head(q, model, step, 2);
    rq_str(q, "layout");
    if (keep)
        msgpack_pack_true(&q->pk);
    else
        msgpack_pack_false(&q->pk);
    rq_str(q, "tensors");
    msgpack_pack_array(&q->pk, 1 + (with_b != 0));
    e2e_tensor_1d(q, "a", "param", "F32", a_numel, a, a_numel * sizeof(float), 0, 0);
    if (with_b)
        e2e_tensor_1d(q, "b", "param", "F32", 2, b, sizeof(b), 0, 0);
}

/*
 * The wire form: `layout: true` gives a nonzero id, data alone with it is
 * applied; every bad form gets its code, after which the model is the
 * same bit for bit and a good push applies. A push asking for a layout
 * that fails keeps none.
 */
START_TEST(test_layout_raw_wire_form_and_errors)
{
    tu_daemon d;
    rawst st = {.step = 1, .ea = {1, 2, 3, 4}, .eb = {5, 6}};
    float data[7] = {0};
    uint64_t pushes = 0;
    e2e_reply r;
    rq q;
    prom pm = {.port = tu_free_port()};
    char http[32];
    const char *args[] = {"--http", http, NULL};

    snprintf(http, sizeof(http), "127.0.0.1:%d", pm.port);
    e2e_daemon_up(&d, args);
    st.c = e2e_client_open(&d, NULL);
    OK(st.c, emad_create(st.c, "r", 0.5, 0));
    OK(st.c, emad_create(st.c, "r2", 0.5, 0));
    st.s = e2e_raw_open(&d, e2e_reply_wait_ms());
    rq_init(&q);
    ab_push(&q, "r", 1, 1, 4, 1);
    e2e_raw_send(st.s, &q, &r);
    ck_assert_int_eq(r.code, 0);
    ck_assert_uint_eq(e2e_obj_u64(r.root, "applied"), 2);
    st.id = e2e_obj_u64(r.root, "layout");
    ck_assert_uint_ne(st.id, 0);
    e2e_raw_free(&r);
    counters_are(st.c, 1, 0, 0);
    unchanged_then_good(&st);
    counters_are(st.c, 1, ++pushes, 0);

    /* An unknown id, and the layout of another model: EMAD_ELAYOUT. */
    data_push(&q, "r", st.step + 1, st.id ^ 1, data, 6 * sizeof(float));
    refused(st.s, &q, EMAD_ELAYOUT);
    unchanged_then_good(&st);
    data_push(&q, "r2", st.step + 1, st.id, data, 6 * sizeof(float));
    refused(st.s, &q, EMAD_ELAYOUT);
    unchanged_then_good(&st);
    pushes += 2;
    counters_are(st.c, 1, pushes, 2);
    ck_assert_uint_eq(e2e_stat(st.c, "errors_EMAD_ELAYOUT"), 2);

    /* Not the layout's bytes: EMAD_ESIZE (counted neither used nor unknown). */
    static const size_t lens[] = {0, 4, 23, 25, 28};
    for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
        data_push(&q, "r", st.step + 1, st.id, data, lens[k]);
        refused(st.s, &q, EMAD_ESIZE);
        unchanged_then_good(&st);
        pushes++;
    }
    counters_are(st.c, 1, pushes, 2);

    /* An id with tensors; data missing, or not bin. */
    for (int with_data = 0; with_data < 2; with_data++) {
        push_head(&q, "r", st.step + 1, 2 + (size_t)with_data);
        rq_kv_u64(&q, "layout", st.id);
        if (with_data) {
            rq_str(&q, "data");
            msgpack_pack_bin_with_body(&q.pk, data, 6 * sizeof(float));
        }
        rq_str(&q, "tensors");
        msgpack_pack_array(&q.pk, 1);
        e2e_tensor_1d(&q, "a", "param", "F32", 4, data, 4 * sizeof(float), 0, 0);
        refused(st.s, &q, EMAD_EMALFORMED);
        unchanged_then_good(&st);
    }
    push_head(&q, "r", st.step + 1, 1);
    rq_kv_u64(&q, "layout", st.id);
    refused(st.s, &q, EMAD_EMALFORMED);
    unchanged_then_good(&st);
    push_head(&q, "r", st.step + 1, 2);
    rq_kv_u64(&q, "layout", st.id);
    rq_kv_str(&q, "data", "abcdefghijklmnopqrstuvwx"); /* 24 bytes, a str */
    refused(st.s, &q, EMAD_EMALFORMED);
    unchanged_then_good(&st);
    pushes += 4;
    counters_are(st.c, 1, pushes, 2);

    /* `layout` neither true/false nor a uint: a str, a negative int, a float, nil, an array. */
    for (int kind = 0; kind < 5; kind++) {
        push_head(&q, "r", st.step + 1, 2);
        rq_str(&q, "layout");
        if (kind == 0)
            rq_str(&q, "1");
        else if (kind == 1)
            msgpack_pack_int64(&q.pk, -1);
        else if (kind == 2)
            msgpack_pack_double(&q.pk, 1.0);
        else if (kind == 3)
            msgpack_pack_nil(&q.pk);
        else
            msgpack_pack_array(&q.pk, 0);
        rq_str(&q, "data");
        msgpack_pack_bin_with_body(&q.pk, data, 6 * sizeof(float));
        refused(st.s, &q, EMAD_EMALFORMED);
        unchanged_then_good(&st);
        pushes++;
    }
    counters_are(st.c, 1, pushes, 2);

    /* `layout` in a seed: true with tensors, or an id with data. */
    for (int with_id = 0; with_id < 2; with_id++) {
        push_head(&q, "r", st.step + 1, 3);
        rq_str(&q, "seed");
        msgpack_pack_true(&q.pk);
        layout_keys(&q, with_id ? st.id : 0, 0);
        refused(st.s, &q, EMAD_EMALFORMED);
        unchanged_then_good(&st);
        pushes++;
    }

    /* `layout` in a transaction's push: true with tensors, or an id with data. */
    for (int with_id = 0; with_id < 2; with_id++) {
        uint64_t txn = e2e_raw_begin(st.s, &q, "r", st.step + 1);

        rq_begin(&q, "push", 3);
        rq_kv_u64(&q, "txn", txn);
        layout_keys(&q, with_id ? st.id : 0, 1);
        refused(st.s, &q, EMAD_EMALFORMED);
        e2e_txn_end(&q, "abort", txn);
        e2e_raw_expect(st.s, &q, 0);
        unchanged_then_good(&st);
        pushes++;
    }
    counters_are(st.c, 1, pushes, 2);

    /* A push asking for a layout that fails (a's shape is 4, not 3) keeps none. */
    ab_push(&q, "r", st.step + 1, 1, 3, 1);
    refused(st.s, &q, EMAD_ESHAPE);
    unchanged_then_good(&st);
    pushes++;
    counters_are(st.c, 1, pushes, 2);
    /* `layout: false` is a plain push: no id in the reply, none kept. */
    ab_push(&q, "r2", 1, 0, 4, 0);
    e2e_raw_send(st.s, &q, &r);
    ck_assert_int_eq(r.code, 0);
    ck_assert_ptr_null(proto_map_get(r.root, "layout"));
    e2e_raw_free(&r);
    counters_are(st.c, 1, pushes, 2);
    unchanged_then_good(&st);
    counters_are(st.c, 1, pushes + 1, 2);
    /* The same counts in Prometheus' family. */
    snprintf(pm.want[0], sizeof(pm.want[0]), "\nemad_push_layouts_total{result=\"kept\"} 1\n");
    snprintf(pm.want[1], sizeof(pm.want[1]), "\nemad_push_layouts_total{result=\"used\"} %llu\n",
             (unsigned long long)pushes + 1);
    snprintf(pm.want[2], sizeof(pm.want[2]), "\nemad_push_layouts_total{result=\"unknown\"} 2\n");
    ck_assert_msg(tu_wait_until(prom_shows, &pm, 60), "/metrics lacks %s%s%s", pm.want[0],
                  pm.want[1], pm.want[2]);

    rq_free(&q);
    nn_close(st.s);
    emad_close(st.c);
    ck_assert(tu_daemon_alive(&d));
    e2e_daemon_down(&d);
}
END_TEST

/*
 * Two writers, one client each: writer 0 pushes the first half of w and
 * all of b, writer 1 the second half of w. The second step keeps a layout
 * per writer (the first is only remembered by each client), the next ones
 * are data alone; the step applies when both parts are in, with the
 * hand-computed values.
 */
START_TEST(test_layout_two_writers)
{
    tu_daemon d;
    emad_client *c[2];
    emad_model_config cfg;
    emad_push_result res;
    emad_model *p;
    float w[8], b[2];
    shadow ew = {0}, eb = {0};
    emad_tensor part0[2], part1[1];

    e2e_daemon_up(&d, NULL);
    for (int i = 0; i < 2; i++)
        c[i] = e2e_client_open(&d, NULL);
    emad_config_init(&cfg);
    cfg.decays[0] = 0.5;
    cfg.writers = 2;
    OK(c[0], emad_create_config(c[0], "mw", &cfg, 0));
    part0[0] = e2e_tensor("w", EMAD_PARAM, EMAD_F32, w, 4 * sizeof(float), 1, 8, 0);
    part0[0].count = 4;
    part0[1] = e2e_tensor("b", EMAD_PARAM, EMAD_F32, b, sizeof(b), 1, 2, 0);
    part1[0] = e2e_tensor("w", EMAD_PARAM, EMAD_F32, w + 4, 4 * sizeof(float), 1, 8, 0);
    part1[0].offset = 4;
    part1[0].count = 4;
    for (uint64_t s = 1; s <= 4; s++) {
        fill(w, 6, s, 0);
        fill(w + 6, 2, s, 1);
        fill(b, 2, s, 2);
        OK(c[0], emad_push_as(c[0], "mw", s, 0, part0, 2, &res));
        ck_assert_int_eq(res.pending, 1);
        ck_assert_uint_eq(res.step, s - 1);
        OK(c[1], emad_push_as(c[1], "mw", s, 1, part1, 1, &res));
        ck_assert_int_eq(res.pending, 0);
        ck_assert_uint_eq(res.applied, 2);
        ck_assert_uint_eq(res.step, s);
        fold(&ew, w, 6);
        for (size_t j = 6; j < 8; j++)
            ew.v[j] = s == 1 ? w[j] : (float)(((double)ew.v[j] + w[j]) / 2.0);
        fold(&eb, b, 2);
        /* remembered at step 1, kept at step 2, data alone from step 3 */
        counters_are(c[0], s >= 2 ? 2 : 0, s >= 3 ? 2 * (s - 2) : 0, 0);
    }
    OK(c[0], emad_pull(c[0], "mw", NULL, 0, &p));
    ck_assert_uint_eq(p->step, 4);
    ck_assert_uint_eq(e2e_find(p, "w")->nbytes, sizeof(w));
    ck_assert(memcmp(e2e_find(p, "w")->data, ew.v, sizeof(w)) == 0);
    ck_assert(memcmp(e2e_find(p, "b")->data, eb.v, sizeof(b)) == 0);
    emad_model_free(p);
    for (int i = 0; i < 2; i++)
        emad_close(c[i]);
    e2e_daemon_down(&d);
}
END_TEST

/* Run the e2e_layout suite; exit status 0 if every test passed. */
int
main(void)
{
    const TTest *const tests[] = {
        test_layout_libemad_five_steps_and_turned_off,
        test_layout_changed_descriptors_sent_whole,
        test_layout_given_up_sent_again_transparently,
        test_layout_failed_keep_gives_up_none,
        test_layout_raw_wire_form_and_errors,
        test_layout_two_writers,
        NULL,
    };

    return tu_run_tests("e2e_layout", tests);
}

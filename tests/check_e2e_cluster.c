/*
 * check_e2e_cluster.c - end-to-end tests of cluster mode: real emad daemons
 * on 127.0.0.1 started with --shard-map/--self, driven by libemad's
 * cluster client and by raw sockets. The reference for every pushed model
 * is a single daemon (no map) that receives the same pushes: the cluster's
 * pulls must equal its pulls bit for bit (every decay, in the shadow dtype
 * too), also after a replica was killed and resynced.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <nanomsg/nn.h>

#include "e2eutil.h"

#define EPOCH 7
#define MAXD 5
/* libemad tries a failed replica again after 2 s (CLUSTER_RETRY_MS): wait longer. */
#define CLUSTER_RETRY_TEST_MS 2500

/* A cluster of S x R daemons (shard-major) and its map. */
typedef struct tcluster {
    uint32_t shards, replicas;
    int port[MAXD];
    tu_daemon d[MAXD];
    char map[2048];
} tcluster;

/* A port not used by any daemon of k so far. */
static int
fresh_port(const tcluster *k, size_t n)
{
    for (;;) {
        int p = tu_free_port(), dup = 0;

        for (size_t i = 0; i < n; i++)
            dup |= k->port[i] == p;
        if (!dup)
            return p;
    }
}

/* Start daemon i of k (again: on its port, with state_dir if not NULL). */
static void
start_replica(tcluster *k, size_t i, const char *state_dir)
{
    char self[64];
    const char *argv[] = {"--shard-map", k->map, "--self", self, "--snapshot-interval", "0", NULL};

    snprintf(self, sizeof(self), "tcp://127.0.0.1:%d", k->port[i]);
    ck_assert_msg(tu_daemon_start_at(&k->d[i], k->port[i], state_dir, argv) == 0,
                  "replica %zu did not start", i);
}

/* Start S x R daemons with a map at epoch and `ack`. */
static void
cluster_up_epoch(tcluster *k, unsigned epoch, uint32_t S, uint32_t R, uint32_t ack)
{
    int off;

    memset(k, 0, sizeof(*k));
    k->shards = S;
    k->replicas = R;
    off = snprintf(k->map, sizeof(k->map), "# test\nepoch %u\nack %u\n", epoch, ack);
    for (uint32_t s = 0; s < S; s++) {
        off += snprintf(k->map + off, sizeof(k->map) - (size_t)off, "shard %u", s);
        for (uint32_t r = 0; r < R; r++) {
            size_t i = (size_t)s * R + r;

            k->port[i] = fresh_port(k, i);
            off += snprintf(k->map + off, sizeof(k->map) - (size_t)off, " tcp://127.0.0.1:%d",
                            k->port[i]);
        }
        off += snprintf(k->map + off, sizeof(k->map) - (size_t)off, "\n");
    }
    for (size_t i = 0; i < (size_t)S * R; i++)
        start_replica(k, i, NULL);
}

/* Start S x R daemons with a map at epoch EPOCH and `ack`. */
static void
cluster_up(tcluster *k, uint32_t S, uint32_t R, uint32_t ack)
{
    cluster_up_epoch(k, EPOCH, S, R, ack);
}

/* Stop every daemon of k that runs. */
static void
cluster_down(tcluster *k)
{
    for (size_t i = 0; i < (size_t)k->shards * k->replicas; i++)
        if (k->d[i].pid > 0)
            e2e_daemon_down(&k->d[i]);
}

/* A cluster client for map text, or fail. */
static emad_client *
cluster_client(const char *map)
{
    emad_client *c = NULL;
    emad_options o;
    char why[512];
    int rc;

    e2e_options(&o);
    o.connect_timeout_ms = 2000; /* a dead replica costs this much per retry */
    rc = emad_connect_cluster(&c, map, &o);
    ck_assert_msg(rc == 0, "emad_connect_cluster: %s (%s)", emad_strerror(rc),
                  emad_cluster_check_map(map, why, sizeof(why)) == 0 ? "map ok" : why);
    return c;
}

/* The map of k with only replica r of every shard: reads of exactly those daemons. */
static void
replica_map(const tcluster *k, uint32_t r, char *buf, size_t size)
{
    int off = snprintf(buf, size, "epoch %d", EPOCH);

    for (uint32_t s = 0; s < k->shards; s++)
        off += snprintf(buf + off, size - (size_t)off, "; shard %u tcp://127.0.0.1:%d", s,
                        k->port[(size_t)s * k->replicas + r]);
}

/* The test model: tensors cut across shards (F32, BF16 with an odd count) and small ones. */
#define NT 5
static const char *const tnames[NT] = {"layer.0.weight", "embed", "bias", "bn.running_mean",
                                       "bn.num_batches_tracked"};

/* Tensor buffers of one step. */
typedef struct tstep {
    float w[1024 * 1280]; /* 5 MiB: cut */
    uint16_t e[3000001];  /* BF16, 6 MB: cut, odd count */
    float b[100];
    float rm[64];
    int64_t nbt;
    emad_tensor t[NT];
} tstep;

/* Fill s with the values of step `step` (deterministic). */
static void
fill_step(tstep *s, uint64_t step)
{
    uint64_t r = 0x9e3779b97f4a7c15ULL * (step + 1);

    for (size_t i = 0; i < sizeof(s->w) / sizeof(s->w[0]); i++)
        s->w[i] = tu_randf(&r);
    for (size_t i = 0; i < sizeof(s->e) / sizeof(s->e[0]); i++) {
        float f = tu_randf(&r);
        uint32_t u;

        memcpy(&u, &f, 4);
        s->e[i] = (uint16_t)(u >> 16);
    }
    for (size_t i = 0; i < 100; i++)
        s->b[i] = tu_randf(&r);
    for (size_t i = 0; i < 64; i++)
        s->rm[i] = tu_randf(&r);
    s->nbt = (int64_t)step * 3;
    s->t[0] = e2e_tensor(tnames[0], EMAD_PARAM, EMAD_F32, s->w, sizeof(s->w), 2, 1024, 1280);
    s->t[1] = e2e_tensor(tnames[1], EMAD_PARAM, EMAD_BF16, s->e, sizeof(s->e), 1, 3000001, 0);
    s->t[2] = e2e_tensor(tnames[2], EMAD_PARAM, EMAD_F32, s->b, sizeof(s->b), 1, 100, 0);
    s->t[3] = e2e_tensor(tnames[3], EMAD_BUFFER, EMAD_F32, s->rm, sizeof(s->rm), 1, 64, 0);
    s->t[4] = e2e_tensor(tnames[4], EMAD_BUFFER, EMAD_I64, &s->nbt, 8, 0, 0, 0);
}

/* The model configuration: two decays, warm-up schedule, copied first steps. */
static void
test_config(emad_model_config *cfg)
{
    emad_config_init(cfg);
    cfg->ndecays = 2;
    cfg->decays[0] = 0.9;
    cfg->decays[1] = 0.999;
    cfg->schedule = EMAD_SCHEDULE_WARMUP;
    cfg->update_after_step = 1;
    cfg->step_gap = EMAD_STEP_GAP_COMPENSATE;
}

/* Push step into every client of cs[0..n). */
static void
push_all(emad_client **cs, size_t n, tstep *buf, uint64_t step)
{
    fill_step(buf, step);
    for (size_t i = 0; i < n; i++) {
        emad_push_result res;

        OK(cs[i], emad_push(cs[i], "m", step, buf->t, NT, &res));
        ck_assert_uint_eq(res.step, step);
    }
}

/* Assert pulls of a and b (decay, dtype) hold the same tensors, bit for bit, at one step. */
static void
assert_same_pull(emad_client *a, emad_client *b, double decay, int dtype, uint64_t want_step)
{
    emad_pull_options po;
    emad_model *ma = NULL, *mb = NULL;

    emad_pull_options_init(&po);
    po.decay = decay;
    po.dtype = dtype;
    OK(a, emad_pull_ex(a, "m", NULL, 0, &po, &ma));
    OK(b, emad_pull_ex(b, "m", NULL, 0, &po, &mb));
    ck_assert_uint_eq(ma->step, want_step);
    ck_assert_uint_eq(mb->step, want_step);
    ck_assert_uint_eq(ma->ntensors, NT);
    ck_assert_uint_eq(mb->ntensors, NT);
    for (size_t i = 0; i < NT; i++) {
        const emad_tensor *x = e2e_find(ma, tnames[i]), *y = e2e_find(mb, tnames[i]);

        ck_assert_int_eq(x->dtype, y->dtype);
        ck_assert_int_eq(x->kind, y->kind);
        ck_assert_uint_eq(x->ndim, y->ndim);
        for (uint32_t d = 0; d < x->ndim; d++)
            ck_assert_uint_eq(x->shape[d], y->shape[d]);
        ck_assert_uint_eq(x->nbytes, y->nbytes);
        ck_assert_uint_eq(x->step, y->step);
        ck_assert_msg(memcmp(x->data, y->data, x->nbytes) == 0,
                      "tensor %s differs (decay %g, dtype %d)", x->name, decay, dtype);
    }
    emad_model_free(ma);
    emad_model_free(mb);
}

/* Every decay, as pushed and in the shadow dtype. */
static void
assert_same_model(emad_client *a, emad_client *b, uint64_t want_step)
{
    assert_same_pull(a, b, 0.9, EMAD_DTYPE_INVALID, want_step);
    assert_same_pull(a, b, 0.999, EMAD_DTYPE_INVALID, want_step);
    assert_same_pull(a, b, 0.9, EMAD_PULL_SHADOW, want_step);
    assert_same_pull(a, b, 0.999, EMAD_PULL_SHADOW, want_step);
}

/* Send a raw request on s and expect code; with a map, the error carries the daemon's place. */
static void
raw_list(int s, int routed, uint64_t epoch, uint64_t shard, int code)
{
    rq q;
    e2e_reply r;

    rq_init(&q);
    rq_begin(&q, "list", routed ? 2 : 0);
    if (routed) {
        rq_kv_u64(&q, "epoch", epoch);
        rq_kv_u64(&q, "shard", shard);
    }
    e2e_raw_send(s, &q, &r);
    ck_assert_int_eq(r.code, code);
    if (code == EMAD_EMOVED && !routed) {
        const msgpack_object *e = proto_map_get(r.root, "error");

        ck_assert_uint_eq(e2e_obj_u64(e, "epoch"), EPOCH);
        ck_assert_uint_eq(e2e_obj_u64(e, "shard"), 0);
        ck_assert_ptr_nonnull(strstr(proto_map_get(e, "message")->via.str.ptr, "refresh the map"));
    }
    e2e_raw_free(&r);
    rq_free(&q);
}

/* Pack an install request of model "i" at step 1 with flag (anew, end) set, routed to shard 0. */
static void
install_flag(rq *q, const char *flag)
{
    rq_begin(q, "install", 5);
    rq_kv_u64(q, "epoch", EPOCH);
    rq_kv_u64(q, "shard", 0);
    rq_kv_str(q, "model", "i");
    rq_kv_u64(q, "step", 1);
    rq_str(q, flag);
    msgpack_pack_true(&q->pk);
}

START_TEST(test_cluster_daemon_refuses_stale_epoch_and_wrong_shard)
{
    tcluster k;
    tu_daemon plain;
    e2e_reply r;
    rq q;
    int s, p;

    cluster_up(&k, 2, 1, 1);
    e2e_daemon_up(&plain, NULL);
    s = e2e_raw_open(&k.d[0], e2e_reply_wait_ms());
    rq_init(&q);
    rq_begin(&q, "hello", 0);
    e2e_raw_send(s, &q, &r);
    ck_assert_int_eq(r.code, 0);
    ck_assert_uint_eq(e2e_obj_u64(r.root, "epoch"), EPOCH);
    ck_assert_uint_eq(e2e_obj_u64(r.root, "shard"), 0);
    ck_assert_uint_eq(e2e_obj_u64(r.root, "shards"), 2);
    ck_assert_uint_eq(e2e_obj_u64(r.root, "replica"), 0);
    e2e_raw_free(&r);
    raw_list(s, 0, 0, 0, EMAD_EMOVED);         /* no routing keys */
    raw_list(s, 1, EPOCH - 1, 0, EMAD_EMOVED); /* a stale map */
    raw_list(s, 1, EPOCH + 1, 0, EMAD_EMOVED); /* a newer map */
    raw_list(s, 1, EPOCH, 1, EMAD_EMOVED);     /* another shard */
    raw_list(s, 1, EPOCH, 0, 0);               /* and it still serves */
    /* install out of order: data without decay_index, end of a model not being installed,
     * an incomplete one; the daemon serves on. */
    rq_begin(&q, "install", 4);
    rq_kv_u64(&q, "epoch", EPOCH);
    rq_kv_u64(&q, "shard", 0);
    rq_kv_str(&q, "model", "i");
    rq_kv_u64(&q, "step", 1);
    e2e_raw_expect(s, &q, EMAD_EMALFORMED);
    install_flag(&q, "end");
    e2e_raw_expect(s, &q, EMAD_ENOMODEL);
    install_flag(&q, "anew");
    e2e_raw_expect(s, &q, 0);
    {
        float v[4] = {1, 2, 3, 4};

        rq_begin(&q, "install", 6);
        rq_kv_u64(&q, "epoch", EPOCH);
        rq_kv_u64(&q, "shard", 0);
        rq_kv_str(&q, "model", "i");
        rq_kv_u64(&q, "decay_index", 0);
        rq_str(&q, "steps");
        msgpack_pack_array(&q.pk, 1);
        msgpack_pack_uint64(&q.pk, 1);
        rq_str(&q, "tensors");
        msgpack_pack_array(&q.pk, 1);
        e2e_tensor_1d(&q, "t", "param", "F32", 8, v, sizeof(v), 1, 0); /* half of 8 floats */
        e2e_raw_expect(s, &q, 0);
    }
    install_flag(&q, "end");
    e2e_raw_expect(s, &q, EMAD_EINCOMPLETE);
    /* A half-installed model refuses pulls; the daemon serves the rest. */
    rq_begin(&q, "pull", 3);
    rq_kv_u64(&q, "epoch", EPOCH);
    rq_kv_u64(&q, "shard", 0);
    rq_kv_str(&q, "model", "i");
    e2e_raw_expect(s, &q, EMAD_EMOVED);
    raw_list(s, 1, EPOCH, 0, 0);
    /* A daemon without a map refuses routed requests, and still serves plain ones. */
    p = e2e_raw_open(&plain, e2e_reply_wait_ms());
    raw_list(p, 1, EPOCH, 0, EMAD_EMOVED);
    raw_list(p, 0, 0, 0, 0);
    rq_begin(&q, "install", 2);
    rq_kv_str(&q, "model", "i");
    rq_kv_u64(&q, "step", 1);
    e2e_raw_expect(p, &q, EMAD_EMOVED); /* install is for cluster mode only */
    raw_list(p, 0, 0, 0, 0);
    rq_free(&q);
    nn_close(s);
    nn_close(p);
    e2e_daemon_down(&plain);
    cluster_down(&k);
}
END_TEST

/* Push an empty step to one daemon of the cluster over a raw socket (a trainer that died). */
static void
raw_empty_push(const tu_daemon *d, uint64_t shard, uint64_t step)
{
    int s = e2e_raw_open(d, e2e_reply_wait_ms());
    rq q;

    rq_init(&q);
    rq_begin(&q, "push", 5);
    rq_kv_str(&q, "model", "m");
    rq_kv_u64(&q, "step", step);
    rq_kv_u64(&q, "epoch", EPOCH);
    rq_kv_u64(&q, "shard", shard);
    rq_str(&q, "tensors");
    msgpack_pack_array(&q.pk, 0);
    e2e_raw_expect(s, &q, 0);
    rq_free(&q);
    nn_close(s);
}

/* A SIGKILL sent from another thread a little later. */
typedef struct killer {
    pid_t pid;
    int rc;
} killer;

/* Thread: wait 30 ms, then SIGKILL the daemon. */
static void *
kill_soon(void *arg)
{
    killer *k = arg;

    tu_sleep_ms(30);
    k->rc = kill(k->pid, SIGKILL);
    return NULL;
}

/* A cluster, a single reference daemon, a client of each, and model "m" on both. */
typedef struct fixture {
    tcluster k;
    tu_daemon ref;
    emad_client *cs[2]; /* the cluster's client, the reference's */
} fixture;

/* Set f up with an S x R cluster acknowledging with ack. */
static void
fixture_up(fixture *f, uint32_t S, uint32_t R, uint32_t ack)
{
    emad_model_config cfg;

    cluster_up(&f->k, S, R, ack);
    e2e_daemon_up(&f->ref, NULL);
    f->cs[0] = cluster_client(f->k.map);
    f->cs[1] = e2e_client_open(&f->ref, NULL);
    test_config(&cfg);
    OK(f->cs[0], emad_create_config(f->cs[0], "m", &cfg, 0));
    OK(f->cs[1], emad_create_config(f->cs[1], "m", &cfg, 0));
}

/* Close the clients, stop every daemon. */
static void
fixture_down(fixture *f)
{
    emad_close(f->cs[0]);
    emad_close(f->cs[1]);
    e2e_daemon_down(&f->ref);
    cluster_down(&f->k);
}

START_TEST(test_cluster_pull_is_from_one_step_or_esplit)
{
    static tstep buf;
    fixture f;
    emad_client *c, *single, **cs = f.cs;
    emad_model *m = NULL;

    fixture_up(&f, 2, 1, 1);
    c = f.cs[0];
    single = f.cs[1];
    push_all(cs, 2, &buf, 1);
    push_all(cs, 2, &buf, 2);
    /* A trainer died after shard 0 took step 3: readers get step 2 from both shards. */
    raw_empty_push(&f.k.d[0], 0, 3);
    assert_same_model(c, single, 2);
    /* Shard 0 two steps ahead: no step both shards have. */
    raw_empty_push(&f.k.d[0], 0, 4);
    ck_assert_int_eq(emad_pull(c, "m", NULL, 0, &m), EMAD_ESPLIT);
    ck_assert_ptr_null(m);
    ck_assert_ptr_nonnull(strstr(emad_last_error(c), "not at one step"));
    /* The next step reaches every shard, and the cluster reads at one step again. */
    push_all(cs, 2, &buf, 5);
    assert_same_model(c, single, 5);
    fixture_down(&f);
}
END_TEST

START_TEST(test_cluster_pushes_equal_a_single_daemon_bit_for_bit)
{
    static tstep buf;
    fixture f;
    emad_client *c, *single, **cs = f.cs;
    emad_model_info info, *list = NULL;
    emad_tensor *desc = NULL, into[2];
    emad_replica_status *st = NULL;
    emad_piece *pieces = NULL;
    size_t n = 0, np = 0;
    uint64_t step = 0;
    static float w[1024 * 1280];
    float b[100];

    fixture_up(&f, 2, 2, 2);
    c = f.cs[0];
    single = f.cs[1];
    /* Steps with a gap (compensated), the first copied. */
    push_all(cs, 2, &buf, 1);
    push_all(cs, 2, &buf, 2);
    push_all(cs, 2, &buf, 3);
    push_all(cs, 2, &buf, 6);
    assert_same_model(c, single, 6);
    ck_assert_str_eq(emad_cluster_warnings(c), "");
    ck_assert_uint_eq(emad_struct_size("emad_piece"), sizeof(emad_piece));
    ck_assert_uint_eq(emad_struct_size("emad_replica_status"), sizeof(emad_replica_status));
    /* Each shard holds only its part: the two big tensors are cut, the others whole. */
    OK(c, emad_cluster_plan(c, buf.t, NT, &pieces, &np));
    ck_assert_uint_eq(np, 2 + 2 + 3);
    free(pieces);
    /* pull_into, describe and list through the cluster. */
    into[0] = (emad_tensor){.name = "layer.0.weight", .data = w, .nbytes = sizeof(w)};
    into[1] = (emad_tensor){.name = "bias", .data = b, .nbytes = sizeof(b)};
    OK(c, emad_pull_into(c, "m", into, 2, &step));
    ck_assert_uint_eq(step, 6);
    ck_assert_uint_eq(into[0].ndim, 2);
    ck_assert_uint_eq(into[0].shape[1], 1280);
    {
        emad_model *m = NULL;
        const char *names[] = {"layer.0.weight", "bias"};

        OK(single, emad_pull(single, "m", names, 2, &m));
        ck_assert_int_eq(memcmp(w, m->tensors[0].data, sizeof(w)), 0);
        ck_assert_int_eq(memcmp(b, m->tensors[1].data, sizeof(b)), 0);
        emad_model_free(m);
    }
    OK(c, emad_describe(c, "m", &info, &desc, &n));
    ck_assert_uint_eq(n, NT);
    ck_assert_uint_eq(info.step, 6);
    ck_assert_str_eq(desc[1].name, "bn.num_batches_tracked"); /* sorted by name */
    ck_assert_str_eq(desc[3].name, "embed");
    ck_assert_uint_eq(desc[3].shape[0], 3000001);
    emad_tensors_free(desc, n);
    OK(c, emad_list(c, &list, &n));
    ck_assert_uint_eq(n, 1);
    ck_assert_uint_eq(list[0].step, 6);
    free(list);
    OK(c, emad_cluster_status(c, "m", &st, &n));
    ck_assert_uint_eq(n, 4);
    for (size_t i = 0; i < n; i++) {
        ck_assert_int_eq(st[i].reachable, 1);
        ck_assert_uint_eq(st[i].epoch, EPOCH);
        ck_assert_uint_eq(st[i].step, 6);
        ck_assert_uint_eq(st[i].lag, 0);
        ck_assert_int_eq(st[i].resyncing, 0);
    }
    emad_cluster_status_free(st, n);
    /* Bad reads: an unknown name, a name twice, a buffer too small; the cluster still serves. */
    {
        const char *unknown[] = {"bias", "nope"}, *twice[] = {"embed", "embed"};
        emad_model *m = NULL;

        ck_assert_int_eq(emad_pull(c, "m", unknown, 2, &m), EMAD_ENOTENSOR);
        ck_assert_ptr_nonnull(strstr(emad_last_error(c), "'nope'"));
        ck_assert_int_eq(emad_pull(c, "m", twice, 2, &m), EMAD_EDUP);
        ck_assert_ptr_null(m);
        into[0].nbytes = sizeof(w) - 4;
        ck_assert_int_eq(emad_pull_into(c, "m", into, 2, &step), EMAD_ESIZE);
        ck_assert_int_eq(emad_pull(c, "nomodel", NULL, 0, &m), EMAD_ENOMODEL);
        OK(c, emad_pull(c, "m", twice, 1, &m));
        ck_assert_uint_eq(m->ntensors, 1);
        ck_assert_uint_eq(m->tensors[0].shape[0], 3000001);
        emad_model_free(m);
    }
    /* A name reserved for pieces is refused, and the cluster still serves. */
    {
        emad_tensor bad = e2e_tensor("x#piece/0/4", EMAD_PARAM, EMAD_F32, b, 16, 1, 4, 0);

        ck_assert_int_eq(emad_push(c, "m", 7, &bad, 1, NULL), EMAD_ENAME);
        assert_same_pull(c, single, 0.9, EMAD_DTYPE_INVALID, 6);
    }
    OK(c, emad_drop(c, "m"));
    ck_assert_int_eq(emad_pull(c, "m", NULL, 0, &(emad_model *){NULL}), EMAD_ENOMODEL);
    fixture_down(&f);
}
END_TEST

START_TEST(test_cluster_killed_replica_is_skipped_then_resynced_bit_for_bit)
{
    static tstep buf;
    fixture f;
    tcluster *k = &f.k;
    emad_client *c, *single, **cs = f.cs, *ra, *rb;
    emad_replica_status *st = NULL;
    char map_a[512], map_b[512], *dir;
    size_t n = 0, copied = 0;
    uint64_t snap = 0;
    int status;

    fixture_up(&f, 2, 2, 1);
    c = f.cs[0];
    single = f.cs[1];
    for (uint64_t s = 1; s <= 3; s++)
        push_all(cs, 2, &buf, s);
    OK(c, emad_snapshot(c, "m", &snap));
    ck_assert_uint_eq(snap, 3);
    push_all(cs, 2, &buf, 4);
    /* SIGKILL replica 1 of shard 0 in the middle of the run: ack 1 keeps the trainer going. */
    ck_assert_int_eq(kill(k->d[1].pid, SIGKILL), 0);
    ck_assert_int_eq(waitpid(k->d[1].pid, &status, 0), k->d[1].pid);
    k->d[1].pid = 0;
    for (uint64_t s = 5; s <= 8; s++) {
        push_all(cs, 2, &buf, s);
        ck_assert_ptr_nonnull(strstr(emad_cluster_warnings(c), "shard 0 replica 1"));
    }
    assert_same_model(c, single, 8);
    /* SIGKILL replica 1 of shard 1 while pushes are in flight: whenever it dies (before, during
     * or after a transfer), no push fails. */
    {
        pthread_t th;
        killer kl = {k->d[3].pid, 0};

        ck_assert_int_eq(pthread_create(&th, NULL, kill_soon, &kl), 0);
        for (uint64_t s = 9; s <= 12; s++)
            push_all(cs, 2, &buf, s);
        pthread_join(th, NULL);
        ck_assert_int_eq(kl.rc, 0);
        ck_assert_int_eq(waitpid(k->d[3].pid, &status, 0), k->d[3].pid);
        k->d[3].pid = 0;
        push_all(cs, 2, &buf, 13);
        ck_assert_ptr_nonnull(strstr(emad_cluster_warnings(c), "shard 1 replica 1"));
    }
    assert_same_model(c, single, 13);
    /* Restart both from their snapshots (step 3): they refuse reads until they have a peer's
     * state, and the next push brings them up to date. */
    dir = k->d[1].state_dir;
    start_replica(k, 1, dir);
    free(dir);
    dir = k->d[3].state_dir;
    start_replica(k, 3, dir);
    free(dir);
    tu_sleep_ms(CLUSTER_RETRY_TEST_MS);
    push_all(cs, 2, &buf, 14);
    ck_assert_msg(strstr(emad_cluster_warnings(c), "model 'm' copied from replica 0 at step") !=
                      NULL,
                  "%s", emad_cluster_warnings(c));
    push_all(cs, 2, &buf, 15);
    ck_assert_str_eq(emad_cluster_warnings(c), "");
    OK(c, emad_cluster_status(c, "m", &st, &n));
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(st[i].reachable && st[i].step == 15 && st[i].lag == 0 && !st[i].resyncing,
                      "replica %zu: reachable %d step %llu resyncing %d", i, st[i].reachable,
                      (unsigned long long)st[i].step, st[i].resyncing);
    }
    emad_cluster_status_free(st, n);
    OK(c, emad_cluster_resync(c, NULL, &copied));
    ck_assert_uint_eq(copied, 0); /* nothing left behind */
    /* Each replica line on its own equals the other and the single daemon: no step lost. */
    replica_map(k, 0, map_a, sizeof(map_a));
    replica_map(k, 1, map_b, sizeof(map_b));
    ra = cluster_client(map_a);
    rb = cluster_client(map_b);
    assert_same_model(ra, rb, 15);
    assert_same_model(rb, single, 15);
    emad_close(ra);
    emad_close(rb);
    fixture_down(&f);
}
END_TEST

START_TEST(test_cluster_writers_push_slices_across_the_pieces)
{
    enum { N = 1500001, CUT = 700000 };
    tcluster k;
    tu_daemon ref;
    emad_client *cs[2];
    emad_model_config cfg;
    float *w = malloc(N * sizeof(float)), small[10];
    uint64_t r = 42;

    cluster_up(&k, 2, 1, 1);
    e2e_daemon_up(&ref, NULL);
    cs[0] = cluster_client(k.map);
    cs[1] = e2e_client_open(&ref, NULL);
    emad_config_init(&cfg);
    cfg.decays[0] = 0.5;
    cfg.writers = 2;
    for (size_t i = 0; i < 2; i++)
        OK(cs[i], emad_create_config(cs[i], "m", &cfg, 0));
    for (uint64_t step = 1; step <= 3; step++) {
        for (size_t i = 0; i < N; i++)
            w[i] = tu_randf(&r);
        for (size_t i = 0; i < 10; i++)
            small[i] = tu_randf(&r);
        for (size_t i = 0; i < 2; i++) {
            /* Writer 0: elements [0, CUT) of the cut tensor and the small one; writer 1 the rest
             * (across the boundary of the two pieces at element 750001). */
            emad_tensor t0[2] = {e2e_tensor("w", EMAD_PARAM, EMAD_F32, w, CUT * 4, 1, N, 0),
                                 e2e_tensor("s", EMAD_PARAM, EMAD_F32, small, 40, 1, 10, 0)};
            emad_tensor t1 = e2e_tensor("w", EMAD_PARAM, EMAD_F32, w + CUT, (N - CUT) * 4, 1, N, 0);
            emad_push_result res;

            t0[0].count = CUT;
            t1.offset = CUT;
            t1.count = N - CUT;
            OK(cs[i], emad_push_as(cs[i], "m", step, 0, t0, 2, &res));
            ck_assert_int_eq(res.pending, 1);
            OK(cs[i], emad_push_as(cs[i], "m", step, 1, &t1, 1, &res));
            ck_assert_int_eq(res.pending, 0);
            ck_assert_uint_eq(res.step, step);
        }
    }
    {
        emad_model *a = NULL, *b = NULL;

        OK(cs[0], emad_pull(cs[0], "m", NULL, 0, &a));
        OK(cs[1], emad_pull(cs[1], "m", NULL, 0, &b));
        ck_assert_uint_eq(a->step, 3);
        for (size_t i = 0; i < 2; i++) {
            const emad_tensor *x = e2e_find(a, b->tensors[i].name);

            ck_assert_uint_eq(x->nbytes, b->tensors[i].nbytes);
            ck_assert_int_eq(memcmp(x->data, b->tensors[i].data, x->nbytes), 0);
        }
        emad_model_free(a);
        emad_model_free(b);
    }
    free(w);
    emad_close(cs[0]);
    emad_close(cs[1]);
    e2e_daemon_down(&ref);
    cluster_down(&k);
}
END_TEST

/* SIGTERM daemon i of k (it writes its snapshots) and wait, keeping its state directory. */
static char *
stop_keeping_state(tcluster *k, size_t i)
{
    int status;

    ck_assert_int_eq(kill(k->d[i].pid, SIGTERM), 0);
    ck_assert_int_eq(waitpid(k->d[i].pid, &status, 0), k->d[i].pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    k->d[i].pid = 0;
    return k->d[i].state_dir;
}

START_TEST(test_cluster_whole_shard_restarted_from_snapshots_goes_on)
{
    static tstep buf;
    fixture f;
    emad_client *c, *single;
    emad_model *m = NULL;
    char *dir[2];

    fixture_up(&f, 1, 2, 2);
    c = f.cs[0];
    single = f.cs[1];
    for (uint64_t s = 1; s <= 2; s++)
        push_all(f.cs, 2, &buf, s);
    /* Both replicas stop (snapshots at step 2) and come back: each waits for a peer. */
    for (size_t i = 0; i < 2; i++)
        dir[i] = stop_keeping_state(&f.k, i);
    for (size_t i = 0; i < 2; i++) {
        start_replica(&f.k, i, dir[i]);
        free(dir[i]);
    }
    tu_sleep_ms(CLUSTER_RETRY_TEST_MS);
    ck_assert_int_eq(emad_pull(c, "m", NULL, 0, &m), EMAD_EMOVED);
    ck_assert_ptr_nonnull(strstr(emad_last_error(c), "resyncing"));
    /* The next push finds no replica ahead: one keeps its state, the other copies it. */
    push_all(f.cs, 2, &buf, 3);
    ck_assert_ptr_nonnull(strstr(emad_cluster_warnings(c), "kept at step 2"));
    assert_same_model(c, single, 3);
    fixture_down(&f);
}
END_TEST

START_TEST(test_cluster_reshard_by_copy_keeps_the_ema_bit_for_bit)
{
    static tstep buf;
    fixture f;
    tcluster k2;
    emad_client *c, *single, *c2, *stale, *both[2];
    char map_stale[1024];
    uint64_t step = 0;
    emad_model *m = NULL;

    fixture_up(&f, 2, 1, 1);
    c = f.cs[0];
    single = f.cs[1];
    for (uint64_t s = 1; s <= 3; s++)
        push_all(f.cs, 2, &buf, s);
    /* Reshard 2 -> 3 shards under a new epoch: the copy holds the same EMA. */
    cluster_up_epoch(&k2, EPOCH + 1, 3, 1, 1);
    c2 = cluster_client(k2.map);
    OK(c2, emad_cluster_copy(c, c2, "m", &step));
    ck_assert_uint_eq(step, 3);
    assert_same_model(c2, single, 3);
    /* ... and goes on from there exactly like the single daemon. */
    both[0] = c2;
    both[1] = single;
    push_all(both, 2, &buf, 4);
    assert_same_model(c2, single, 4);
    /* A client still holding the old epoch for the new daemons is told to refresh its map. */
    snprintf(map_stale, sizeof(map_stale),
             "epoch %d; shard 0 tcp://127.0.0.1:%d; "
             "shard 1 tcp://127.0.0.1:%d; shard 2 tcp://127.0.0.1:%d",
             EPOCH, k2.port[0], k2.port[1], k2.port[2]);
    stale = cluster_client(map_stale);
    ck_assert_int_eq(emad_pull(stale, "m", NULL, 0, &m), EMAD_EMOVED);
    ck_assert_ptr_nonnull(strstr(emad_last_error(stale), "refresh the map"));
    fill_step(&buf, 5);
    ck_assert_int_eq(emad_push(stale, "m", 5, buf.t, NT, NULL), EMAD_EMOVED);
    assert_same_model(c2, single, 4); /* nothing changed, and the new cluster serves */
    /* A single daemon's model moves into a cluster the same way. */
    OK(c2, emad_drop(c2, "m"));
    OK(c2, emad_cluster_copy(single, c2, "m", &step));
    ck_assert_uint_eq(step, 4);
    assert_same_model(c2, single, 4);
    emad_close(stale);
    emad_close(c2);
    cluster_down(&k2);
    fixture_down(&f);
}
END_TEST

int
main(void)
{
    const TTest *const tests[] = {
        test_cluster_daemon_refuses_stale_epoch_and_wrong_shard,
        test_cluster_pull_is_from_one_step_or_esplit,
        test_cluster_pushes_equal_a_single_daemon_bit_for_bit,
        test_cluster_killed_replica_is_skipped_then_resynced_bit_for_bit,
        test_cluster_reshard_by_copy_keeps_the_ema_bit_for_bit,
        test_cluster_whole_shard_restarted_from_snapshots_goes_on,
        test_cluster_writers_push_slices_across_the_pieces,
        NULL,
    };

    return tu_run_tests("e2e_cluster", tests);
}

/*
 * ops_push.c - the ops that change shadows: push (one message, a seed, or
 * a transaction's chunk), begin, commit and abort, and the commits parked
 * until their transaction's chunks have been averaged.
 */
#include <stdlib.h>
#include <string.h>

#include <nanomsg/nn.h>

#include "common/names.h"
#include "base/log.h"
#include "base/xmalloc.h"
#include "daemon/server_int.h"

/*
 * A commit, or the reply to a chunk, that came while chunks of its
 * transaction were still being averaged.
 */
typedef struct parked {
    uint64_t txn;
    req_auth auth; /* the reply is a frame of this session when auth.session != 0 */
    void *ctrl;    /* the request's routing header */
    uint64_t t0;
    int chunk;       /* 1: a chunk's reply (staged), 0: a commit */
    uint64_t staged; /* chunk: the reply's count */
    struct parked *next;
} parked;

/* Park r's reply (taking its routing header) until txn's jobs are done, after those parked. */
static void
park(req *r, uint64_t txn, int chunk, uint64_t staged)
{
    parked *p = xcalloc(1, sizeof(*p)), **pp;

    p->txn = txn;
    p->auth = r->auth;
    p->auth.verify = NULL;
    p->ctrl = r->ctrl;
    p->t0 = r->t0;
    p->chunk = chunk;
    p->staged = staged;
    r->ctrl = NULL;
    r->deferred = 1;
    for (pp = &r->srv->parked; *pp != NULL; pp = &(*pp)->next)
        ; /* in arrival order */
    *pp = p;
}

/* A transaction's failure: one that a chunk's tag check found is reported as bad_tag. */
static int
txn_failure(req *r, const store_err *err)
{
    if (err->code == EMAD_EAUTH)
        r->auth_reason = AUTHGATE_BAD_TAG;
    return err->code;
}

int
ops_push_reply_staged(req *r, uint64_t txn, uint64_t staged, store_err *err)
{
    server *srv = r->srv;

    if (r->capture == NULL && srv->loop != NULL && !srv->closing &&
        store_txn_inflight(srv->store, txn) > 0) {
        park(r, txn, 1, staged);
        return 0;
    }
    if (store_txn_failed(srv->store, txn, err) != 0)
        return txn_failure(r, err);
    reply_send(r, ops_push_pack_staged, &staged);
    return 0;
}

/* Pack a push/commit result, with the id of the push's kept layout unless 0. */
static void
pack_result(msgpack_packer *pk, const store_result *res, uint64_t layout_id)
{
    reply_pack_head(pk, 1, 7 + (layout_id != 0));
    proto_pack_kv_u64(pk, PROTO_KEY_APPLIED, res->applied);
    proto_pack_kv_u64(pk, PROTO_KEY_STALE, res->stale);
    proto_pack_kv_u64(pk, PROTO_KEY_SKIPPED, res->skipped);
    proto_pack_kv_u64(pk, PROTO_KEY_IGNORED, res->ignored);
    proto_pack_str(pk, PROTO_KEY_PENDING);
    if (res->pending)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
    proto_pack_str(pk, PROTO_KEY_STALE_NAMES);
    msgpack_pack_array(pk, res->nstale_names);
    for (size_t i = 0; i < res->nstale_names; i++)
        proto_pack_str(pk, res->stale_names[i]);
    proto_pack_kv_u64(pk, PROTO_KEY_STEP, res->step);
    if (layout_id != 0)
        proto_pack_kv_u64(pk, PROTO_KEY_LAYOUT, layout_id);
}

/* Pack a commit result. */
static void
build_result(msgpack_packer *pk, const void *ctx)
{
    pack_result(pk, ctx, 0);
}

/* A push's result and the id of the layout kept for it (0: none). */
typedef struct push_answer {
    const store_result *res;
    uint64_t layout;
} push_answer;

static void
build_answer(msgpack_packer *pk, const void *ctx)
{
    const push_answer *a = ctx;

    pack_result(pk, a->res, a->layout);
}

/* Count a push's outcome. */
static void
count_result(server *srv, const store_result *res)
{
    srv->counters[COUNTER_TENSORS_APPLIED] += res->applied;
    srv->counters[COUNTER_TENSORS_STALE] += res->stale;
    srv->counters[COUNTER_TENSORS_SKIPPED_NONFINITE] += res->skipped;
    srv->counters[COUNTER_TENSORS_IGNORED] += res->ignored;
    srv->counters[COUNTER_WRITER_PUSHES_PENDING] += res->pending != 0;
    srv->pushes_stale += res->applied == 0 && res->stale > 0;
    if (res->behind_model != NULL) {
        srv->counters[COUNTER_MODELS_RESTORED_BEHIND]++;
        log_warn("event=model_restored_behind model=%s restored_step=%llu step=%llu "
                 "steps_between=%llu",
                 LOG_STR(res->behind_model), (unsigned long long)res->behind_step,
                 (unsigned long long)res->step, (unsigned long long)res->behind_gap);
    }
}

/* Pack a transaction chunk's reply: the bytes staged so far. */
void
ops_push_pack_staged(msgpack_packer *pk, const void *ctx)
{
    reply_pack_head(pk, 1, 1);
    proto_pack_kv_u64(pk, PROTO_KEY_STAGED, *(const uint64_t *)ctx);
}

/*
 * A push's result, sent before its values are written (store_push_answer()),
 * and the layout of its tensors when it asked for one (`layout: true`).
 */
typedef struct early_answer {
    req *r;
    uint64_t layout; /* the id of the layout kept, 0: none */
    int sent;
    int keep; /* keep the layout of in[0..n) of model_name once the push is known to succeed */
    const char *model_name;
    size_t len;
    const store_input *in;
    size_t n;
} early_answer;

/* Keep a's layout if asked: only for a push that succeeds, which so gives no other up. */
static void
keep_layout(early_answer *a)
{
    server *srv = a->r->srv;

    if (a->keep && (a->layout = layouts_keep(&srv->layouts, a->model_name, a->len, a->in, a->n)))
        srv->counters[COUNTER_LAYOUTS_KEPT]++;
    a->keep = 0;
}

static void
answer_now(void *ctx, const store_result *res)
{
    early_answer *a = ctx;
    push_answer pa;

    keep_layout(a);
    pa = (push_answer){res, a->layout};

    reply_send(a->r, build_answer, &pa);
    a->sent = 1;
}

/* A push's `layout` key: keep the tensors' layout, or the inputs of a push of data alone. */
typedef struct push_layout_req {
    int keep;              /* `layout: true`: keep the layout of `tensors` */
    const store_input *in; /* `layout: id`: the layout's inputs, pointing into `data` */
    size_t n;
} push_layout_req;

/* Read r's `layout` key into *l (refused unless a push of one message that is not a seed). */
static int
push_layout(req *r, int not_one_message, const char *model_name, size_t len, push_layout_req *l,
            store_err *err)
{
    const msgpack_object *o = proto_map_get(r->root, PROTO_KEY_LAYOUT), *d;
    int rc;

    memset(l, 0, sizeof(*l));
    if (o == NULL)
        return 0;
    if (not_one_message)
        return request_fail(err, EMAD_EMALFORMED,
                            "'" PROTO_KEY_LAYOUT "' is for a push of one message, not for a seed "
                            "or a transaction's push");
    if (o->type == MSGPACK_OBJECT_BOOLEAN) {
        l->keep = o->via.boolean;
        return 0;
    }
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return request_fail(err, EMAD_EMALFORMED,
                            "key '" PROTO_KEY_LAYOUT "' is neither true nor a layout id");
    if (proto_map_get(r->root, PROTO_KEY_TENSORS) != NULL)
        return request_fail(err, EMAD_EMALFORMED,
                            "a push with a layout id carries '" PROTO_KEY_DATA
                            "', not '" PROTO_KEY_TENSORS "'");
    if ((d = proto_map_get(r->root, PROTO_KEY_DATA)) == NULL || d->type != MSGPACK_OBJECT_BIN)
        return request_fail(err, EMAD_EMALFORMED, "key '" PROTO_KEY_DATA "' is %s (expected bin)",
                            d == NULL ? "missing" : "not bin");
    rc = layouts_inputs(&r->srv->layouts, o->via.u64, model_name, len, d->via.bin.ptr,
                        d->via.bin.size, &l->in, &l->n, err);
    r->srv->counters[rc == 0 ? COUNTER_LAYOUT_PUSHES : COUNTER_LAYOUT_UNKNOWN] +=
        rc == 0 || rc == EMAD_ELAYOUT;
    return rc;
}

/* push: one message, a seed, or a chunk of a transaction (averaged on the threadpool if large). */
int
ops_push_push(req *r, store_err *err)
{
    const char *model_name = NULL;
    size_t len = 0, n = 0;
    uint64_t step = 0, txn = 0, writer = 0;
    int has_txn = 0, has_step = 0, has_writer = 0, seed = 0, rc;
    store_input *in = NULL;        /* decoded from `tensors` */
    const store_input *use = NULL; /* in, or a layout's inputs */
    push_layout_req lay;

    if (request_get_u64(r->root, PROTO_KEY_TXN, &txn, &has_txn, err) != 0 ||
        request_get_u64(r->root, PROTO_KEY_WRITER, &writer, &has_writer, err) != 0)
        return err->code;
    if (has_writer && has_txn)
        return request_fail(err, EMAD_EMALFORMED,
                            "'" PROTO_KEY_WRITER "' belongs in %s, not in a transaction's push",
                            proto_op_name(PROTO_OP_BEGIN));
    if (request_get_bool(r->root, PROTO_KEY_SEED, &seed, err) != 0)
        return err->code;
    if (seed && (has_txn || has_writer))
        return request_fail(err, EMAD_EMALFORMED,
                            "a seed is one message, without '" PROTO_KEY_TXN
                            "' or '" PROTO_KEY_WRITER "'");
    if (writer > UINT32_MAX)
        return request_fail(err, EMAD_ERANGE, "writer %llu is out of range",
                            (unsigned long long)writer);
    if (!has_txn && (request_get_str(r->root, PROTO_KEY_MODEL, &model_name, &len, err) ||
                     request_get_u64(r->root, PROTO_KEY_STEP, &step, NULL, err)))
        return err->code;
    if (has_txn) {
        const msgpack_object *o = proto_map_get(r->root, PROTO_KEY_MODEL);
        if (o != NULL && request_get_str(r->root, PROTO_KEY_MODEL, &model_name, &len, err) != 0)
            return err->code;
        if (request_get_u64(r->root, PROTO_KEY_STEP, &step, &has_step, err) != 0)
            return err->code;
    }
    if ((rc = push_layout(r, has_txn || seed, model_name, len, &lay, err)) != 0)
        return rc;
    if (lay.in != NULL) {
        use = lay.in;
        n = lay.n;
    } else if (request_decode_tensors(r->root, has_txn, &in, &n, err) != 0) {
        return err->code;
    } else {
        use = in;
    }
    /* as_dtype says how a seed's data relates to its tensor: refused in any other push, for
     * new tensors as for stored ones (a layout's inputs passed this when it was kept). */
    for (size_t i = 0; in != NULL && i < n && !seed; i++) {
        if (in[i].as_dtype != EMAD_DTYPE_INVALID) {
            char name[EMAD_MAX_NAME_BYTES + 1];
            request_fail(err, EMAD_EDTYPE,
                         "tensor '%s': '" PROTO_KEY_AS_DTYPE
                         "' is only for a seed ('" PROTO_KEY_SEED "': true)",
                         names_printable(name, sizeof(name), in[i].name, in[i].name_len));
            free(in);
            return err->code;
        }
    }
    if (has_txn) {
        uint64_t staged = 0;
        store_job *job = NULL;
        rc = store_txn_push_job(r->srv->store, txn, model_name, len, has_step, step, in, n,
                                r->now_ms, &staged, &job, err);
        free(in); /* the job's tasks point into the request message, not into `in` */
        if (rc != 0)
            return txn_failure(r, err);
        if (job != NULL && async_push(r, job, staged, txn))
            return 0;
        if (job != NULL && (rc = store_job_run(r->srv->store, job, r->now_ms, err)) != 0)
            return rc;
        return ops_push_reply_staged(r, txn, staged, err);
    }
    store_result res;
    /* The reply goes out before the averaging: the client's next request travels meanwhile,
     * and is read once this one is done. */
    early_answer early = {r, 0, 0, lay.keep, model_name, len, in, n};
    if (seed)
        rc = store_seed(r->srv->store, model_name, len, step, in, n, r->now_ms, &res, err);
    else
        rc = store_push_answer(r->srv->store, model_name, len, step, (uint32_t)writer, use, n,
                               r->now_ms, answer_now, &early, &res, err);
    if (rc == 0 && seed)
        log_info("event=model_seeded model=%.*s step=%llu tensors=%llu", (int)len, model_name,
                 (unsigned long long)step, (unsigned long long)res.applied);
    if (rc == 0)
        keep_layout(&early); /* unless answered early */
    free(in);
    if (rc != 0)
        return rc;
    if (res.pending)
        ops_auth_own_part(r, model_name, len, step, (uint32_t)writer);
    count_result(r->srv, &res);
    log_debug("event=push model=%.*s step=%llu applied=%llu stale=%llu", (int)len, model_name,
              (unsigned long long)step, (unsigned long long)res.applied,
              (unsigned long long)res.stale);
    if (!early.sent) {
        push_answer pa = {&res, early.layout};
        reply_send(r, build_answer, &pa);
    }
    return 0;
}

/* Pack a begin reply: the transaction id. */
static void
build_txn(msgpack_packer *pk, const void *ctx)
{
    reply_pack_head(pk, 1, 1);
    proto_pack_kv_u64(pk, PROTO_KEY_TXN, *(const uint64_t *)ctx);
}

/* begin: open a transaction for a model's step. */
int
ops_push_begin(req *r, store_err *err)
{
    const char *name;
    size_t len;
    uint64_t step, id, writer = 0;
    int has_writer;

    if (request_get_str(r->root, PROTO_KEY_MODEL, &name, &len, err) ||
        request_get_u64(r->root, PROTO_KEY_STEP, &step, NULL, err) ||
        request_get_u64(r->root, PROTO_KEY_WRITER, &writer, &has_writer, err))
        return err->code;
    if (writer > UINT32_MAX)
        return request_fail(err, EMAD_ERANGE, "writer %llu is out of range",
                            (unsigned long long)writer);
    if (store_txn_begin(r->srv->store, name, len, step, (uint32_t)writer, r->now_ms, &id, err))
        return err->code;
    r->srv->counters[COUNTER_TXN_BEGUN]++;
    ops_auth_own(r, 't', id, name, len);
    log_debug("event=txn_begin model=%.*s step=%llu txn=%llu", (int)len, name,
              (unsigned long long)step, (unsigned long long)id);
    reply_send(r, build_txn, &id);
    return 0;
}

/* Commit transaction id and answer r. */
static int
commit_txn(req *r, uint64_t id, store_err *err)
{
    store_result res;

    if (store_txn_commit(r->srv->store, id, r->now_ms, &res, err) != 0)
        return txn_failure(r, err);
    r->srv->counters[COUNTER_TXN_COMMITTED]++;
    count_result(r->srv, &res);
    log_debug("event=txn_commit txn=%llu applied=%llu stale=%llu step=%llu", (unsigned long long)id,
              (unsigned long long)res.applied, (unsigned long long)res.stale,
              (unsigned long long)res.step);
    reply_send(r, build_result, &res);
    return 0;
}

/* commit: apply a transaction, or park it while its chunks are still being averaged. */
int
ops_push_commit(req *r, store_err *err)
{
    uint64_t id;

    if (request_get_u64(r->root, PROTO_KEY_TXN, &id, NULL, err) != 0)
        return err->code;
    if (async_can_defer(r) && store_txn_inflight(r->srv->store, id) > 0) {
        r->srv->counters[COUNTER_COMMITS_WAITED]++;
        park(r, id, 0, 0);
        return 0;
    }
    return commit_txn(r, id, err);
}

/* Answer the parked requests whose transaction's jobs are all done (or that are gone). */
void
ops_push_run_parked(server *srv)
{
    parked **pp = &srv->parked;

    while (*pp != NULL) {
        parked *p = *pp;
        store_err err;
        req r;

        if (store_txn_inflight(srv->store, p->txn) > 0) {
            pp = &p->next;
            continue;
        }
        *pp = p->next;
        async_late_begin(&r, &err, srv, p->chunk ? PROTO_OP_PUSH : PROTO_OP_COMMIT, p->ctrl, p->t0);
        async_late_auth(&r, &p->auth);
        async_late_end(&r,
                       p->chunk ? ops_push_reply_staged(&r, p->txn, p->staged, &err)
                                : commit_txn(&r, p->txn, &err),
                       &err);
        free(p);
    }
}

void
ops_push_unseal(server *srv, const req_auth *auth)
{
    for (parked *p = srv->parked; p != NULL; p = p->next)
        if (p->chunk && p->auth.session == auth->session && p->auth.seq == auth->seq)
            p->auth.session = 0;
}

/* abort: discard a transaction. */
int
ops_push_abort(req *r, store_err *err)
{
    uint64_t id;

    if (request_get_u64(r->root, PROTO_KEY_TXN, &id, NULL, err) ||
        store_txn_abort(r->srv->store, id, err))
        return err->code;
    r->srv->counters[COUNTER_TXN_ABORTED]++;
    reply_send(r, reply_build_empty, NULL);
    return 0;
}

/* Free the requests still parked and their routing headers (the server is going away). */
void
ops_push_free_parked(server *srv)
{
    while (srv->parked != NULL) {
        parked *p = srv->parked;
        srv->parked = p->next;
        nn_freemsg(p->ctrl);
        free(p);
    }
}

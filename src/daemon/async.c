/*
 * async.c - a request's data work on the libuv threadpool (see server_int.h).
 *
 * Work of one request run on the libuv threadpool: the averaging of a
 * transaction's chunks (straight from the request message, which is kept
 * until the work is done), or the copying of tensor data into a large read
 * or pull reply (from shadows whose blobs are referenced meanwhile). The
 * tasks are split in contiguous runs among up to ASYNC_MAX_PARTS work
 * items, one per CPU, so one big request keeps every core busy while the loop goes on
 * serving other requests. The request is answered, and counted, when its
 * last part is done (async_done, on the loop).
 */
#include <stdlib.h>
#include <string.h>

#include <nanomsg/nn.h>

#include "base/xmalloc.h"
#include "daemon/server_int.h"

#define ASYNC_MIN_BYTES (1u << 20) /* smaller work runs inline on the loop */

/*
 * A transaction chunk is answered as soon as its averaging is queued, while
 * fewer than this many such chunks are still being averaged: the client
 * sends its next chunk while the threadpool works on this one. Beyond it
 * chunks are answered when their work is done, which bounds the request
 * bodies held. A value found non-finite fails the transaction's later
 * requests and its commit: each is answered once every job of the
 * transaction before it is done (ops_push_reply_staged), and a chunk is
 * answered early only while no other job of its transaction runs.
 */
#define EARLY_MAX 1

/* One request's work on the threadpool. */
typedef struct async_req {
    server *srv;
    int op;
    req_auth auth; /* the reply is a frame of this session when auth.session != 0 */
    void *ctrl, *body;
    uint64_t t0;
    task_list *tl;   /* the tasks: the job's, or tasks */
    task_list tasks; /* reply: the copies of tensor data */
    store_job *job;  /* push: the store's job */
    uint64_t txn;    /* push: the job's transaction */
    int early;       /* push: answered already */
    uint64_t staged; /* push: the reply's count */
    void *msg;       /* reply: the packed message, data filled by the tasks */
    size_t len;
    blob **blobs; /* reply: references taken for the tasks */
    size_t nblobs;
    int parts, left;
    uv_work_t work[ASYNC_MAX_PARTS];
} async_req;

/* A request answered after its handler returned: op with routing header ctrl, begun at t0. */
void
async_late_begin(req *r, store_err *err, server *srv, int op, void *ctrl, uint64_t t0)
{
    memset(r, 0, sizeof(*r));
    r->srv = srv;
    r->op = op;
    r->ctrl = ctrl;
    r->owner = request_owner(ctrl);
    r->now_ms = uv_now(srv->loop);
    r->t0 = t0;
    r->auth_reason = -1;
    err->tensor[0] = '\0';
}

/* A late request's authentication: its frame and its owner (a user with authentication). */
void
async_late_auth(req *r, const req_auth *auth)
{
    r->auth = *auth;
    r->owner = ops_auth_owner_id(r->srv, auth, r->owner);
}

/* Finish a late request: report err if rc != 0, else count it; free the unused header. */
void
async_late_end(req *r, int rc, const store_err *err)
{
    reply_finish(r, rc, err);
    if (r->ctrl != NULL)
        nn_freemsg(r->ctrl);
}

/* Can this request be answered later, from a threadpool callback? */
int
async_can_defer(const req *r)
{
    return r->capture == NULL && r->body != NULL && r->srv->loop != NULL && !r->srv->closing;
}

/* Threadpool: run this part's share of the tasks. */
static void
async_work(uv_work_t *w)
{
    async_req *a = w->data;
    size_t part = (size_t)(w - a->work);
    const task_list *tl = a->tl;
    size_t lo = tl->n * part / (size_t)a->parts, hi = tl->n * (part + 1) / (size_t)a->parts;

    for (size_t i = lo; i < hi; i++) /* in order: a piece's tasks share its values in cache */
        task_run(&tl->v[i]);
}

/* Loop: one part is done; after the last, answer the request. */
static void
async_done(uv_work_t *w, int status)
{
    async_req *a = w->data;
    server *srv = a->srv;
    store_err err;
    req r;
    int rc = 0;

    (void)status; /* never cancelled */
    if (--a->left > 0)
        return;
    uv_update_time(srv->loop);
    async_late_begin(&r, &err, srv, a->op, a->ctrl, a->t0);
    async_late_auth(&r, &a->auth);
    if (a->job != NULL) {
        rc = store_job_done(srv->store, a->job, r.now_ms, &err);
        nn_freemsg(a->body);
        if (a->early) {
            /* Answered already; a failure is kept by the transaction for its commit. */
            srv->early--;
            free(a);
            ops_push_run_parked(srv);
            return;
        }
        if (rc == 0 && (rc = ops_push_reply_staged(&r, a->txn, a->staged, &err)) == 0 &&
            r.deferred) {
            free(a); /* parked until the transaction's other jobs are done */
            ops_push_run_parked(srv);
            return;
        }
    } else {
        for (size_t i = 0; i < a->nblobs; i++)
            store_blob_unref(a->blobs[i]);
        free(a->blobs);
        task_list_free(&a->tasks);
        reply_send_msg(&r, a->msg, a->len);
    }
    async_late_end(&r, rc, &err);
    srv->last_request_ms = uv_now(srv->loop);
    srv->trimmed = 0;
    if (a->job != NULL)
        ops_push_run_parked(srv);
    free(a);
}

/* Hand a's tasks to the threadpool, one part per CPU; the request is answered by async_done. */
static void
async_start(req *r, async_req *a)
{
    server *srv = r->srv;
    size_t ntasks = a->tl->n;

    a->srv = srv;
    a->op = r->op;
    a->auth = r->auth;
    a->ctrl = r->ctrl;
    r->ctrl = NULL;
    a->t0 = r->t0;
    r->deferred = 1;
    a->parts = srv->parts;
    if ((size_t)a->parts > ntasks)
        a->parts = ntasks > 0 ? (int)ntasks : 1;
    a->left = a->parts;
    for (int k = 0; k < a->parts; k++) {
        a->work[k].data = a;
        (void)uv_queue_work(srv->loop, &a->work[k], async_work, async_done);
    }
}

/*
 * Send a reply carrying data_bytes of tensor data with the data copied on
 * the threadpool: the message is sized and its headers packed here, the
 * blobs referenced until the copies are done. Returns 0 (nothing done)
 * when the reply should be sent inline instead.
 */
int
async_reply(req *r, build_fn build, const void *ctx, uint64_t data_bytes)
{
    async_req *a;
    wbuf w = {NULL, 0, NULL, NULL, 0, 0};
    size_t len;
    void *msg;

    if (!async_can_defer(r) || data_bytes < ASYNC_MIN_BYTES)
        return 0;
    a = xcalloc(1, sizeof(*a));
    w.defer = &a->tasks;
    if ((msg = reply_pack(build, ctx, &w, reply_head(r), &len)) == NULL) {
        free(a);
        return 0; /* the inline reply reports it */
    }
    a->tl = &a->tasks;
    a->msg = msg;
    a->len = len;
    budget_reply_sent(store_budget(r->srv->store), r->owner, len, r->now_ms); /* held from now */
    a->blobs = w.blobs;
    a->nblobs = w.nblobs;
    async_start(r, a);
    return 1;
}

/*
 * Queue a transaction chunk's averaging on the threadpool when it is large
 * enough, holding the I/O thread on its CPU; the chunk is answered now
 * while fewer than EARLY_MAX chunks are early and no other job of its
 * transaction is running, else when every job of the transaction is done
 * (so a value found non-finite reaches the first later request).
 */
int
async_push(req *r, store_job *job, uint64_t staged, uint64_t txn)
{
    async_req *a;

    if (!async_can_defer(r) || job->tasks.bytes < ASYNC_MIN_BYTES)
        return 0;
    a = xcalloc(1, sizeof(*a));
    iocpu_hold(&r->srv->io, 1);
    a->job = job;
    a->tl = &job->tasks;
    a->staged = staged;
    a->txn = txn;
    a->body = *r->body; /* kept until the tasks have read it */
    *r->body = NULL;
    if ((a->early = r->srv->early < EARLY_MAX && store_txn_inflight(r->srv->store, txn) == 1)) {
        r->srv->early++;
        reply_send(r, ops_push_pack_staged, &staged);
    }
    async_start(r, a);
    r->deferred = !a->early; /* an early reply is counted now, by the dispatcher */
    return 1;
}

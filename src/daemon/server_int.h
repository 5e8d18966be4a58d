/*
 * server_int.h - what the files of the request server share (see server.h).
 *
 * server.c owns the loop side (socket, poll, timers, signals) and the
 * dispatch table; request.c decodes request fields in place; reply.c packs
 * replies in two passes and is the one error-reply path; async.c runs a
 * request's data work on the libuv threadpool and answers it afterwards;
 * iocpu.c holds nanomsg's I/O thread on a CPU; ops_model.c, ops_push.c and
 * ops_pull.c hold the op handlers. Everything here runs on the loop thread
 * unless a comment says otherwise.
 */
#ifndef EMAD_SERVER_INT_H
#define EMAD_SERVER_INT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include <msgpack.h>

#include "common/counters.h"
#include "common/proto.h"
#include "daemon/iocpu.h"
#include "daemon/metrics.h"
#include "daemon/persist.h"
#include "daemon/server.h"
#include "daemon/shard.h"
#include "store/store.h"
#include "store/task.h"


/*
 * The threadpool work of one request is split among up to this many work
 * items, one per CPU (async.c).
 */
#define ASYNC_MAX_PARTS 8

struct server {
    uv_loop_t *loop;
    server_config cfg;
    int sock;
    uv_poll_t poll;
    uv_timer_t timer;
    uv_signal_t sigint, sigterm;
    int closing;
    store *store;
    persist *persist; /* NULL without --state-dir */
    shard_place *shard; /* cluster mode, or NULL */
    int stopping;     /* SIGTERM seen: writing snapshots before closing */
    uint64_t start_ms;
    uint64_t last_request_ms; /* for giving freed memory back when idle */
    int trimmed;              /* idle for server_idle_hold_ms(): spares freed, heap trimmed */
    uint64_t pushes_seen;     /* pushes begun: one-message pushes and transactions */
    uint64_t pushes_noted;    /* pushes_seen when idle_note_request() last learned the cadence */
    uint64_t last_push_ms;    /* when the latest of them came */
    uint64_t push_gap_ms;     /* the push cadence: recent time between two of them */
    uint64_t counters[COUNTER_COUNT];
    uint64_t op_counts[PROTO_OP_COUNT];
    /* Error codes counted one by one in the stats (index: -code - EMAD_ERRNO_FIRST). */
    uint64_t err_counts[EMAD_ERRNO_LAST - EMAD_ERRNO_FIRST + 1];
    /* For metrics (server_figures): */
    uint64_t op_ok[PROTO_OP_COUNT];                  /* ok replies per op */
    uint64_t op_errors[PROTO_OP_COUNT];              /* error replies per op */
    uint64_t push_rejects[EMAD_ERRNO_LAST - EMAD_ERRNO_FIRST + 1]; /* push/commit errors per code */
    uint64_t pushes_stale;                           /* accepted, every tensor stale */
    metrics_hist push_hist, pull_hist;               /* handling time of accepted requests */
    uint32_t early;        /* chunks answered before their averaging ran */
    int parts;             /* threadpool parts of one request: CPUs online, read once */
    iocpu io;              /* nanomsg's I/O thread */
    struct parked *parked; /* commits waiting for their chunks' jobs (ops_push.c) */
};

/* One request being handled. */
typedef struct req {
    server *srv;
    const msgpack_object *root; /* the request map */
    int op;
    void *ctrl;  /* routing header chunk, handed back with the reply */
    void **body; /* the request message; a handler that keeps it sets *body to NULL */
    uint64_t now_ms;
    uint64_t t0;  /* uv_hrtime() when handling began */
    int deferred; /* answered later (and counted then) by the handler's callback */
    size_t reply_len;
    void **capture; /* server_process(): the reply goes here instead of the socket */
} req;

/* Milliseconds on the loop's clock (0 without a loop). */
uint64_t server_now(const server *srv);

/*
 * request.c: decoding of request fields. Each returns 0, or an error code
 * with err filled (the request's reply then reports it). Strings and data
 * point into the request message.
 */

/* Fill err and return its code. */
__attribute__((format(printf, 3, 4))) int request_fail(store_err *err, int code, const char *fmt,
                                                       ...);

/* Required string field: the value o of key (NULL if absent). */
int request_str(const msgpack_object *o, const char *key, const char **p, size_t *len,
                store_err *err);

/* Required string field of a map. */
int request_get_str(const msgpack_object *map, const char *key, const char **p, size_t *len,
                    store_err *err);

/* Unsigned field; *present tells if it was there (NULL: required). */
int request_get_u64(const msgpack_object *map, const char *key, uint64_t *v, int *present,
                    store_err *err);

/* Optional float field (float32, float64 or integer). */
int request_get_float(const msgpack_object *map, const char *key, double *v, store_err *err);

/* Optional bool field. */
int request_get_bool(const msgpack_object *map, const char *key, int *v, store_err *err);

/*
 * Decode the `tensors` array of a push into (*out)[0..*n) (malloc'd, the
 * caller frees; names and data point into the request).
 */
int request_decode_tensors(const msgpack_object *root, int txn, store_input **out, size_t *n,
                           store_err *err);

/*
 * reply.c: the two-pass reply packer. A build_fn packs a whole reply from
 * its context; it runs twice, once to count and once to write.
 */
typedef void (*build_fn)(msgpack_packer *pk, const void *ctx);

/*
 * Output of the two-pass packer: counts when p is NULL, writes otherwise.
 * With defer set, tensor data is not copied: reply_pack_data() adds a task
 * that copies it later (and references its blob in blobs).
 */
typedef struct wbuf {
    char *p;
    size_t len;
    task_list *defer;
    blob **blobs;
    size_t nblobs, cap;
} wbuf;

/* Pack the reply map header and its "v" and "ok" entries; nextra entries follow. */
void reply_pack_head(msgpack_packer *pk, int ok, size_t nextra);

/* Size of the reply build() produces. */
size_t reply_size(build_fn build, const void *ctx);

/*
 * Pack build(ctx) into a new nanomsg message of exactly its size (with
 * w->defer set, tensor data is left to tasks); NULL if out of memory.
 */
void *reply_pack(build_fn build, const void *ctx, wbuf *w, size_t *len);

/* Send a packed reply message (which it takes) with the request's routing header. */
void reply_send_msg(req *r, void *msg, size_t len);

/* Build the reply into a message and send it with the request's routing header. */
void reply_send(req *r, build_fn build, const void *ctx);

/* The one error path: log, count and reply. */
void reply_error(req *r, const store_err *err);

/*
 * Count an answered request: an error (rc != 0) is replied through
 * reply_error(); success counts the op and its handling time since r->t0.
 */
void reply_finish(req *r, int rc, const store_err *err);

/* A reply with no keys beyond v and ok. */
void reply_build_empty(msgpack_packer *pk, const void *ctx);

/* Pack `len` bytes of a view tensor's data from byte offset `off`, in its pull dtype. */
void reply_pack_data(msgpack_packer *pk, const view_tensor *vt, uint64_t off, uint64_t len);

/* async.c: threadpool fan-out of a request's data work. */

/* Can this request be answered later, from a threadpool callback? */
int async_can_defer(const req *r);

/*
 * Send a reply carrying data_bytes of tensor data with the data copied on
 * the threadpool. Returns 0 (nothing done) when the reply should be sent
 * inline instead.
 */
int async_reply(req *r, build_fn build, const void *ctx, uint64_t data_bytes);

/*
 * Average a transaction chunk's job on the threadpool, keeping the request
 * message until it is done. Returns 0 (nothing done) when the job should
 * run inline instead.
 */
int async_push(req *r, store_job *job, uint64_t staged);

/* A request answered after its handler returned: op with routing header ctrl, begun at t0. */
void async_late_begin(req *r, store_err *err, server *srv, int op, void *ctrl, uint64_t t0);

/* Finish a late request: report err if rc != 0, else count it; free the unused header. */
void async_late_end(req *r, int rc, const store_err *err);

/*
 * Op handlers (the dispatch table in server.c). Each answers r, or leaves
 * it to a callback (r->deferred), and returns 0; or returns an error code
 * with err filled, which server.c replies.
 */
int ops_model_hello(req *r, store_err *err);
int ops_model_create(req *r, store_err *err);
int ops_model_configure(req *r, store_err *err);
int ops_model_drop(req *r, store_err *err);
int ops_model_list(req *r, store_err *err);
int ops_model_stats(req *r, store_err *err);
int ops_model_snapshot(req *r, store_err *err);
int ops_model_install(req *r, store_err *err);

int ops_push_push(req *r, store_err *err);
int ops_push_begin(req *r, store_err *err);
int ops_push_commit(req *r, store_err *err);
int ops_push_abort(req *r, store_err *err);

/* Pack a transaction chunk's reply: ctx is the uint64_t staged count. */
void ops_push_pack_staged(msgpack_packer *pk, const void *ctx);

/* Commit the parked transactions whose jobs are all done (or that are gone). */
void ops_push_run_parked(server *srv);

/* Free the commits still parked, with their routing headers (server_destroy). */
void ops_push_free_parked(server *srv);

int ops_pull_pull(req *r, store_err *err);
int ops_pull_read(req *r, store_err *err);
int ops_pull_release(req *r, store_err *err);

/* Pack one tensor's description (and its data when with_data). */
void ops_pull_pack_tensor(msgpack_packer *pk, const view_tensor *vt, int with_data);

#endif

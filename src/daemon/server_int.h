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
#include "common/decode.h"
#include "common/proto.h"
#include "daemon/authsess.h"
#include "daemon/iocpu.h"
#include "daemon/layouts.h"
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

/*
 * Why authentication failed (the `reason` of EMAD_EAUTH, and `denied` for
 * EMAD_EDENIED): the labels of emad_auth_failures_total.
 */
#define AUTHGATE_REASON_MAP(XX)                                                                    \
    XX(REQUIRED, PROTO_VAL_AUTH_REQUIRED)                                                          \
    XX(NO_SESSION, PROTO_VAL_AUTH_NO_SESSION)                                                      \
    XX(EXPIRED, PROTO_VAL_AUTH_EXPIRED)                                                            \
    XX(BAD_TAG, PROTO_VAL_AUTH_BAD_TAG)                                                            \
    XX(REPLAY, PROTO_VAL_AUTH_REPLAY)                                                              \
    XX(BAD_SIGNATURE, PROTO_VAL_AUTH_BAD_SIGNATURE)                                                \
    XX(UNKNOWN_HANDSHAKE, PROTO_VAL_AUTH_UNKNOWN_HANDSHAKE)                                        \
    XX(DENIED, PROTO_VAL_AUTH_DENIED)

enum authgate_reason {
#define XX(id, name) AUTHGATE_##id,
    AUTHGATE_REASON_MAP(XX)
#undef XX
        AUTHGATE_REASONS
};

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
    authsess_table *auth;  /* users and sessions; NULL without --auth-file (authgate.c) */
    uint64_t auth_log_ms[AUTHGATE_REASONS];      /* when each failure reason was last logged */
    uint64_t auth_log_skipped[AUTHGATE_REASONS]; /* lines not logged since then */
    decode_arena arena;                          /* the objects of the request being handled */
    layouts layouts;                             /* push layouts kept for clients (layouts.h) */
    int decoding; /* handle() is running (a nested one decodes into an arena of its own) */
};

/* The authentication of a request: session 0 for a plain (unauthenticated) one. */
struct mac_job;
struct async_req;

typedef struct req_auth {
    uint64_t session;
    uint64_t seq;
    struct mac_job *verify; /* a transaction chunk staged while its tag is verified (authgate.c) */
} req_auth;

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
    req_auth auth;  /* the reply is a frame of this session and seq when session != 0 */
    const authfile_user *user; /* with --auth-file: the session's user, or NULL (plain) */
    int auth_reason;           /* enum authgate_reason of an EMAD_EAUTH/EDENIED reply, or -1 */
    uint64_t owner; /* charged for what the request makes the daemon hold (request_owner()) */
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

/* The owner of a request with routing header ctrl: its connection (0: none). */
uint64_t request_owner(const void *ctrl);

/*
 * Check that a reply of `bytes` fits the memory budget (as a reply in
 * flight to r's connection) before packing it; 0 or EMAD_ELIMIT.
 */
int reply_check_budget(req *r, uint64_t bytes, store_err *err);

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
 * The number of items from first (of total) a page holds: at most limit,
 * as many as fit in max_reply bytes after the used ones (at least one).
 * item(items, i) points to item i, which pack_item packs. One pass over
 * the page's items only (list and paged pull replies).
 */
size_t reply_page_count(size_t first, size_t total, uint64_t limit, uint64_t max_reply, size_t used,
                        build_fn pack_item, const void *(*item)(const void *items, size_t i),
                        const void *items);

/*
 * Pack build(ctx) into a new nanomsg message of exactly its size plus head
 * bytes in front (room for a frame header; with w->defer set, tensor data
 * is left to tasks); NULL if out of memory. *len counts the head.
 */
void *reply_pack(build_fn build, const void *ctx, wbuf *w, size_t head, size_t *len);

/*
 * Send a packed reply message (which it takes) with the request's routing
 * header; for an authenticated request the message starts with
 * AUTH_FRAME_HEADER bytes of room (reply_head()), which authgate fills.
 */
void reply_send_msg(req *r, void *msg, size_t len);

/* Bytes of room a reply to r needs in front of its body (0, or AUTH_FRAME_HEADER). */
size_t reply_head(const req *r);

/*
 * Hand msg (taken) to nanomsg with routing header *ctrl, which becomes NULL
 * once nanomsg owns it, and charge it to owner as a reply in flight; a
 * failure is logged and counted as a dropped reply for op. Returns 0 or -1.
 */
int reply_transmit(server *srv, int op, uint64_t owner, void *msg, size_t len, void **ctrl);

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
 * Average a chunk's job of transaction txn on the threadpool, keeping the
 * request message until it is done. Returns 0 (nothing done) when the job
 * should run inline instead.
 */
int async_push(req *r, store_job *job, uint64_t staged, uint64_t txn);

/* A request answered after its handler returned: op with routing header ctrl, begun at t0. */
void async_late_begin(req *r, store_err *err, server *srv, int op, void *ctrl, uint64_t t0);

/* Finish a late request: report err if rc != 0, else count it; free the unused header. */
void async_late_end(req *r, int rc, const store_err *err);

/*
 * server.c: decode and dispatch one request body buf[0..len) (authenticated
 * as *auth, or plain when auth is NULL); *ctrl and *body as for handle().
 */
void server_handle(server *srv, const char *buf, size_t len, void **ctrl, void **body,
                   const req_auth *auth);

/*
 * authgate.c: the authenticated frame. authgate_receive() takes one message
 * from the socket (the daemon has an auth file, or the message is a frame):
 * checks the session and sequence number, verifies the tag (on the
 * threadpool for a large body, then continuing on the loop) and hands the
 * body to server_handle(). It may take *body and *ctrl (setting them NULL).
 */
void authgate_receive(server *srv, void **body, size_t len, void **ctrl);

/* Seal a reply frame msg[0..len) to r (on the threadpool when large) and send it. */
void authgate_send(req *r, void *msg, size_t len);

/*
 * Fail r with EMAD_EAUTH (or EMAD_EDENIED for AUTHGATE_DENIED) for reason:
 * fills err, counts the failure, logs it (at most once a second per
 * reason) and returns the code.
 */
__attribute__((format(printf, 4, 5))) int authgate_fail(req *r, store_err *err, int reason,
                                                        const char *fmt, ...);

/* The wire name of a reason. */
const char *authgate_reason_name(int reason);

/* Expire sessions and handshakes and forget owners of finished objects (the server's timer). */
void authgate_tick(server *srv);

/*
 * A chunk whose tag is verified beside its averaging (r->auth.verify): the
 * averaging job a keeps the frame; authgate_verify_release() gives it back
 * when a is done (the frame is freed once the tag check is done too).
 */
void authgate_verify_held(struct mac_job *j, struct async_req *a);
void authgate_verify_release(struct mac_job *j, void *frame);

/* The chunk being averaged by a failed its tag check: its reply (if any is still due) is plain. */
void async_push_unseal(struct async_req *a);

/*
 * ops_auth.c: the handshake ops, and what a user may do. ops_auth_check()
 * runs before every handler: refuses a plain request (but hello and the
 * handshake) when authentication is on, and a request the user's grants
 * or the ownership of its transaction or pull session do not allow.
 */
int ops_auth_begin(req *r, store_err *err);
int ops_auth_finish(req *r, store_err *err);
int ops_auth_check(req *r, store_err *err);

/* Record that r's user owns a transaction ('t') or pull session ('s') on model. */
void ops_auth_own(req *r, int kind, uint64_t id, const char *model, size_t len);

/* Record that r's user pushed writer's part of a multi-writer step, staged and pending. */
void ops_auth_own_part(req *r, const char *name, size_t len, uint64_t step, uint32_t writer);

/* May r's user see the model named name (in a list)? Always with authentication off. */
int ops_auth_visible(const req *r, const char *name);

/*
 * Who a request is charged to for the per-owner shares of the memory
 * budget and slots: with authentication, the user of session auth->session
 * (one owner for all of a user's connections, a value no connection owner
 * takes: bit 63 set), else `conn`, the connection (request_owner()).
 */
uint64_t ops_auth_owner_id(const server *srv, const req_auth *auth, uint64_t conn);

/* A late request's authentication (async_late_begin's request): its frame and its owner. */
void async_late_auth(req *r, const req_auth *auth);

/* After an admin op (create, configure, drop, snapshot): the audit log line naming the user. */
void ops_auth_audit(const req *r, int rc, const store_err *err);

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

/*
 * Answer a chunk of transaction txn (its own job done) once every job of the
 * transaction is done, so that a value an earlier chunk's job finds
 * non-finite reaches this reply: now (0, or the transaction's failure), or
 * parked until then (0 with r->deferred set).
 */
int ops_push_reply_staged(req *r, uint64_t txn, uint64_t staged, store_err *err);

/* Answer the parked requests whose transaction's jobs are all done (or that are gone). */
void ops_push_run_parked(server *srv);

/* The parked chunk reply to frame (auth->session, auth->seq) is sent plain (its tag failed). */
void ops_push_unseal(server *srv, const req_auth *auth);

/* Free the requests still parked, with their routing headers (server_destroy). */
void ops_push_free_parked(server *srv);

int ops_pull_pull(req *r, store_err *err);
int ops_pull_read(req *r, store_err *err);
int ops_pull_release(req *r, store_err *err);

/* Pack one tensor's description (and its data when with_data). */
void ops_pull_pack_tensor(msgpack_packer *pk, const view_tensor *vt, int with_data);

#endif

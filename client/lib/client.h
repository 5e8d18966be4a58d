/*
 * client.h - the inside of libemad, the client library for emad
 * (include/emad.h), shared by its files and by its fuzz target; nothing
 * here is exported (the library is built with -fvisibility=hidden and
 * exports only emad_*).
 *
 * One emad_client owns raw nanomsg REQ sockets connected to a daemon, the
 * limits learned from the daemon's `hello`, and the text of the last error.
 * Every call is one or more request/reply exchanges as described in
 * docs/PROTOCOL.md:
 * - transport.c: sockets, request ids, packing, pipelining, the round trip
 *   (req_send, req_wait, call), hello, connect and close;
 * - errors.c: the last error, error replies, reply field checks, emad_strerror;
 * - creds.c: the credentials (user, key file, environment) and connect errors;
 * - session.c: the authenticated session of each connection (handshake,
 *   renewal) and the frames around requests and replies (tags, checks);
 * - push.c: push, seed, push_as and the transactions of large pushes;
 * - pull.c: pull and pull_into, pull sessions read in batches;
 * - admin.c: create, configure, drop, list, describe, stats, get_config, snapshot.
 * Tensor maps are sized, packed and parsed by src/common/codec.c.
 *
 * Each public call clears the last error (call_begin), and makes sure a
 * failure has a message (call_end). Replies are decoded in one place
 * (reply_decode), then each op's reply is read by a parser taking the
 * decoded reply (hello_parse, push_result, pull_parse, read_copy,
 * list_parse, describe_parse, stats_parse, config_parse, ...), which the
 * fuzz target drives with arbitrary bytes. A client is not thread-safe.
 */
#ifndef EMAD_CLIENT_H
#define EMAD_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "common/auth.h"
#include "common/codec.h"
#include "common/proto.h"
#include "emad.h"

#define DEFAULT_TIMEOUT_MS 30000
#define DEFAULT_CONNECT_TIMEOUT_MS 5000
#define DEFAULT_CHUNK_BYTES (20ULL << 20)
/*
 * The chunks of a transaction (a push larger than one message) are at most
 * EMAD_TXN_CHUNK_BYTES, so that the daemon averages one chunk while the
 * next is on the wire. A push that fits in one message (chunk_bytes) is
 * sent whole: the daemon answers it before averaging it.
 */
#define TXN_CHUNK_BYTES EMAD_TXN_CHUNK_BYTES
#define DEFAULT_MAX_REPLY_BYTES (64ULL << 20)

/*
 * nanomsg counts the SP header (the 4-byte request id, 4 more bytes per
 * device hop) against NN_RCVMAXSIZE: a body of exactly the limit is
 * dropped. Requests stay this much below the daemon's limit, and the
 * daemon is asked for replies this much below our NN_RCVMAXSIZE.
 */
#define SP_HEADER_SLACK 64

/*
 * Connections (and so requests in flight) of one large push or pull: the
 * environment's EMAD_PIPELINE_DEPTH (1..PIPELINE_MAX), default 1. Over TCP
 * loopback on two cores one connection is fastest: the daemon's
 * threadpool already overlaps the averaging with the transfer, and more
 * connections only share the same cores (bench/RESULTS.md has the sweep).
 * Deeper pipelines pay off on links with a long round trip.
 */
#define PIPELINE_MAX 8
#define PIPELINE_DEFAULT 1

/*
 * A replica's client (routed) waits in slices of this many milliseconds and
 * checks its connection in between: a replica that cannot be reached for
 * connect_timeout_ms, or whose connection broke while a request was in
 * flight (the request is lost), fails at once with EMAD_ECONNECT instead of
 * after timeout_ms, so that the cluster goes on with its other replicas.
 */
#define ROUTED_SLICE_MS 100

/*
 * The authenticated session of one connection (docs/PROTOCOL.md,
 * "Authentication"): id 0 until the handshake is done; seq of the last
 * request sent; keys from crypto_kx (tx MACs requests, rx replies).
 */
typedef struct conn_session {
    uint64_t id;
    uint64_t seq;
    int64_t start_ms;    /* when the handshake finished (monotonic) */
    int64_t lifetime_ms; /* the daemon's session lifetime */
    unsigned char tx[AUTH_KEY_BYTES], rx[AUTH_KEY_BYTES];
} conn_session;

/* Push layouts remembered per client (layout.c). */
#define CLIENT_LAYOUTS 4

struct emad_client {
    int sock;                       /* socks[0]: every request that is not pipelined */
    int socks[PIPELINE_MAX];        /* -1 until first used */
    uint32_t pending[PIPELINE_MAX]; /* request id in flight on each, 0 if none */
    uint64_t lost[PIPELINE_MAX];    /* routed: connections lost on each when its request went */
    size_t depth;                   /* connections used by a pipelined transfer */
    uint32_t next_id;               /* request ids: 31 bits, the top bit is set on the wire */
    char *url;
    emad_options opts;
    uint64_t server_max; /* max_message_bytes from hello */
    uint64_t msg_limit;  /* largest request body we send */
    uint64_t push_limit; /* largest push message: min(chunk_bytes, msg_limit); chunks of a
                            transaction at most TXN_CHUNK_BYTES too */
    uint64_t reply_ask;  /* max_reply_bytes we send with a pull */
    uint64_t reply_eff;  /* what the daemon enforces: min(reply_ask, server_max) */
    char err[2048];
    int auth;                        /* 1: credentials loaded, requests are framed */
    int server_auth;                 /* hello said the daemon requires authentication */
    char user[AUTH_USER_MAX + 1];    /* the user of the key file */
    unsigned char sk[AUTH_SK_BYTES]; /* the user's Ed25519 secret key */
    conn_session sess[PIPELINE_MAX]; /* the session of each connection */
    uint64_t sent_seq[PIPELINE_MAX]; /* seq of the framed request in flight on each, 0: plain */
    int auth_stale;                  /* the last error: EMAD_EAUTH, session expired/unknown */
    unsigned char *tags;             /* piece tags of the message being packed */
    size_t tags_cap;                 /* their room, in tags */
    /* Clusters (cluster*.c): */
    struct cluster *cl;   /* a cluster client: every call is routed to the replicas */
    int routed;           /* a replica's client: requests carry route_epoch and route_shard */
    uint64_t route_epoch; /* the shard map's epoch */
    uint32_t route_shard;
    int has_pull_step; /* the next pulls ask for the version at exactly pull_step */
    uint64_t pull_step;
    /* Push layouts the daemon keeps for this client (layout.c): */
    struct push_layout *layouts[CLIENT_LAYOUTS];
    uint64_t layout_tick;
    int layouts_state; /* 0: not yet read from the environment, 1: on, -1: off */
};

/*
 * A decoded reply: the received message and the msgpack objects pointing
 * into it (BIN payloads included), valid until reply_free().
 */
typedef struct reply {
    void *msg;        /* NN_MSG buffer, freed by reply_free() */
    const char *body; /* the msgpack body in msg (after the frame header, if framed) */
    msgpack_unpacked u;
    const msgpack_object *root;
    /* A successful reply opened with its tag check left to the copy of its data
     * (req_open_unchecked): the frame's length and the key to check it with. */
    int unchecked;
    size_t frame_len;
    unsigned char rx[AUTH_KEY_BYTES];
} reply;

/* Packs one request (of any op) from its arguments ctx. */
typedef void (*build_fn)(msgpack_packer *pk, const void *ctx);

/* A request packed for a connection and not yet sent (req_send_ex). */
typedef struct prepared {
    void *msg; /* NN_MSG buffer; NULL: nothing packed */
    size_t len;
    uint64_t seq; /* its sequence number; 0: plain */
} prepared;

/* A reply taken from a connection, not yet checked or decoded (req_recv, req_open). */
typedef struct received {
    void *msg; /* NN_MSG buffer */
    size_t len;
    uint64_t seq;                     /* the request's sequence number; 0: it was plain */
    uint64_t session;                 /* the connection's session when it was taken */
    unsigned char rx[AUTH_KEY_BYTES]; /* and that session's key for replies */
} received;

/* A request with an optional model name and up to two uint fields. */
typedef struct simple_req {
    int op;            /* PROTO_OP_* */
    const char *model; /* NULL: no model key */
    const char *key;   /* NULL: no uint key */
    uint64_t value;
    const char *key2; /* second uint key, or NULL */
    uint64_t value2;
} simple_req;

/* ---- errors.c ---- */

/* Record a formatted message as the client's last error and return code. */
__attribute__((format(printf, 3, 4))) int fail(emad_client *c, int code, const char *fmt, ...);

/* Record a codec decode error as the last error; returns its code. */
int fail_codec(emad_client *c, const codec_err *err);

/* Start a public call on c: clear the last error. */
void call_begin(emad_client *c);

/* End a public call: make sure a failure has a message; returns rc. */
int call_end(emad_client *c, int rc);

/* Turn a nanomsg errno from op's send or receive into an emad code with a message. */
int nn_fail(emad_client *c, int e, int op, const char *what, int timeout_ms);

/* The negative code of an error reply's `error` map e, its message as the last error. */
int reply_error(emad_client *c, int op, const msgpack_object *e);

/* Required uint / str / array key of a reply map; EMAD_EPROTO if missing or mistyped. */
int rget_u64(emad_client *c, const msgpack_object *map, const char *key, uint64_t *v);
int rget_str(emad_client *c, const msgpack_object *map, const char *key, const char **p,
             size_t *len);
int rget_array(emad_client *c, const msgpack_object *map, const char *key,
               const msgpack_object **arr);

/* Required bin key of exactly n bytes; EMAD_EPROTO if missing, mistyped or of another size. */
int rget_bin(emad_client *c, const msgpack_object *map, const char *key, size_t n,
             const msgpack_object **bin);

/* Check a model / tensor name argument; EMAD_EINVAL for NULL, EMAD_ENAME if invalid. */
int check_model(emad_client *c, const char *model);
int check_tensor_name(emad_client *c, const char *name, size_t index);

/* ---- creds.c ---- */

/* Load the credentials of o (or of the environment) into c; 0 without any. */
int creds_load(emad_client *c, const emad_options *o);

/* Forget the credentials and session keys of c. */
void creds_wipe(emad_client *c);

/* The message of a failed emad_connect(), kept per thread: record (returns code), clear, read. */
__attribute__((format(printf, 2, 3))) int creds_connect_fail(int code, const char *fmt, ...);
void creds_connect_clear(void);
const char *creds_connect_error(void);

/* ---- session.c ---- */

/*
 * Make sure connection k has a session that is not due for renewal: the
 * first request on it does the handshake, one at 3/4 of the lifetime
 * renews it. No-op without credentials. The connection must be idle.
 */
int session_ensure(emad_client *c, size_t k);

/* Forget connection k's session (the daemon said it is expired or unknown). */
void session_drop(emad_client *c, size_t k);

/* Room for the piece tags of a body of len bytes in c->tags. */
int session_tags_reserve(emad_client *c, size_t len);

/*
 * Finish the frame of a packed request: msg holds AUTH_FRAME_HEADER bytes
 * then the body (len bytes), whose pieces have their tags in c->tags (the
 * packer tags them as it writes). Writes the header with the next sequence
 * number of connection k's session and the frame's tag.
 */
void session_seal(emad_client *c, size_t k, void *msg, size_t len);

/*
 * Check the reply m (held in r->msg) to a framed request and point r->body
 * past the header; *body_len gets the body's length. Returns 0, 1 for a
 * plain reply (acceptable only as an EMAD_EAUTH error: the caller checks),
 * or EMAD_EPROTO with a message. Unless check, the frame's tag is not
 * checked: r->unchecked is set, with what checking it later needs.
 */
int session_open_reply(emad_client *c, const received *m, reply *r, size_t *body_len, int check);

/* The message of a reply whose tag does not verify (EMAD_EPROTO). */
int session_bad_tag(emad_client *c, int op);

/*
 * An error rc found in reply r opened unchecked (a failed reply, or a
 * malformed one), believed only once r's tag verifies: rc then, else the
 * bad tag.
 */
int session_unchecked_error(emad_client *c, const reply *r, int op, int rc);

/* 1 if an error reply's map e says the session is expired or unknown (re-handshake). */
int session_error_is_stale(const msgpack_object *e);

/* ---- transport.c ---- */

/* Milliseconds on a monotonic clock. */
int64_t now_ms(void);

/* Pack "key": "value". */
void pk_kv_str(msgpack_packer *pk, const char *key, const char *value);

/* Pack the map header of a request for op with n entries besides v and op, then v and op. */
void pk_head(msgpack_packer *pk, int op, size_t n);

/* Free a reply and its message; safe on a zeroed or already freed reply. */
void reply_free(reply *r);

/*
 * Decode a received message of len bytes held in r->msg (r->u initialised):
 * pre-scan it, unpack it in place, check it is a version-1 reply map and
 * whether it reports success. Returns 0 (r->root set) or an error code;
 * r owns the message either way.
 */
int reply_decode(emad_client *c, int op, reply *r, size_t len);

/* Forget every request in flight: their late replies are dropped when they come. */
void forget_inflight(emad_client *c);

/*
 * Send a request of op packed by build(ctx) on connection k with the next
 * request id (*id), waiting at most until deadline (ms) for the
 * connection to take it. The connection must have no request in flight.
 */
int req_send(emad_client *c, size_t k, int op, build_fn build, const void *ctx, int64_t deadline,
             int timeout_ms, uint32_t *id);

/* req_send(), as a plain (unframed) request if plain (the handshake's ops). */
int req_send_ex(emad_client *c, size_t k, int op, build_fn build, const void *ctx, int64_t deadline,
                int timeout_ms, uint32_t *id, int plain);

/*
 * Take the reply to the request in flight on connection k into *m without
 * checking or decoding it (the connection is idle afterwards), then
 * req_open() it: the next request can be sent in between.
 */
int req_recv(emad_client *c, size_t k, int op, int64_t deadline, int timeout_ms, received *m);
int req_open(emad_client *c, int op, received *m, reply *r);

/*
 * req_open() for a reply whose data the caller copies out with the frame's
 * tag checked in the same pass (read_copy()): a successful reply comes back
 * with r->unchecked set; any other (an error) has had its tag checked
 * before it is believed.
 */
int req_open_unchecked(emad_client *c, int op, received *m, reply *r);

/*
 * Wait until deadline for the reply to the request in flight on
 * connection k and decode it into *r (free with reply_free). Afterwards,
 * successful or not, the connection has no request in flight.
 */
int req_wait(emad_client *c, size_t k, int op, int64_t deadline, int timeout_ms, reply *r);

/*
 * One round trip of op within timeout_ms: 0 with *r holding a successful
 * reply (free with reply_free), or a negative code with the last error set
 * and *r empty.
 */
int call(emad_client *c, int op, build_fn build, const void *ctx, int timeout_ms, reply *r);

/* Pack a simple_req; round trip of one with the client's timeout. */
void build_simple(msgpack_packer *pk, const void *vctx);
int call_simple(emad_client *c, const simple_req *q, reply *r);

/* Read a hello reply: check the protocol and learn the daemon's limits into c. */
int hello_parse(emad_client *c, const reply *r);

/* heap.c: set the process's heap policy for messages, once (EMAD_HEAP=system: leave it). */
void client_heap_policy(void);

/*
 * A new client for url with options o (already checked): sockets open, and
 * with say_hello the daemon contacted once. On failure *out is NULL.
 */
int client_open(emad_client **out, const char *url, const emad_options *o, int say_hello);

/* Say hello on an open client (again): learn the daemon's protocol and limits. */
int client_hello(emad_client *c);

/* Bytes the routing keys (epoch, shard) add to a request of a routed client. */
size_t route_size(const emad_client *c);

/* ---- push.c ---- */

/*
 * layout.c: push layouts. layouts_on(): not turned off by EMAD_PUSH_LAYOUTS=off.
 * layout_match(): the remembered layout of model whose descriptors are t[0..n)'s, or NULL.
 * layout_remember(): remember t[0..n)'s descriptors, not kept by the daemon yet (nothing if
 * out of memory). layout_set_id(): the daemon's id for it (0: not kept). layouts_free():
 * forget them all.
 */
typedef struct push_layout push_layout;
int layouts_on(emad_client *c);
push_layout *layout_match(emad_client *c, const char *model, const emad_tensor *t, size_t n);
void layout_remember(emad_client *c, const char *model, const emad_tensor *t, size_t n);
void layout_set_id(push_layout *l, uint64_t id);
void layouts_free(emad_client *c);
uint64_t layout_id(const push_layout *l);
uint64_t layout_bytes(const push_layout *l); /* the data's bytes */

/* Pack a push request (its encoded size is push_packed_size(), computed, not counted). */
void build_push(msgpack_packer *pk, const void *vctx);
size_t push_packed_size(const void *vctx);

/* Fill a push result from a push or commit reply. */
int push_result(emad_client *c, const reply *r, emad_push_result *res);

/* ---- pull.c ---- */

/*
 * A pull in progress: the reply holding the metadata (and the replies of its
 * later pages, which the names of their tensors point into), and its parsed
 * tensors.
 */
typedef struct pull_state {
    reply r;
    reply *pages; /* pages after the first */
    size_t npages;
    uint64_t step;
    int has_session;
    uint64_t session;
    int has_next; /* more descriptions follow from index next */
    uint64_t next;
    codec_tensor *t;
    size_t n;
} pull_state;

/* One range of a read request. */
typedef struct read_range {
    uint64_t index, offset, len;
} read_range;

/* Arguments of a read request. */
typedef struct read_req {
    uint64_t session;
    const read_range *ranges;
    size_t n;
} read_req;

/* Parse a pull reply held in p->r into *p; on failure p is freed (reply included). */
int pull_parse(emad_client *c, pull_state *p);

/* Free a pull state; safe on a zeroed one. */
void pull_state_free(pull_state *p);

/* Copy the ranges of a read reply for q into dst. */
int read_copy(emad_client *c, const reply *r, const read_req *q, void *const *dst);

/* ---- cluster*.c ---- */

/* A "cluster:PATH" URL: connect to the cluster of that shard map. */
int cluster_connect_url(emad_client **out, const char *map, const emad_options *opts);

/* Cluster versions of the calls (cluster_ops.c); c->cl is set, the call begun. */
int cluster_create(emad_client *c, const char *model, const emad_model_config *cfg, int exist_ok);
int cluster_configure(emad_client *c, const char *model, const emad_model_config *cfg);
int cluster_drop(emad_client *c, const char *model);
int cluster_snapshot(emad_client *c, const char *model, uint64_t *step);
int cluster_push(emad_client *c, const char *model, uint64_t step, int has_writer, uint32_t writer,
                 int seed, const emad_tensor *tensors, const int *as_dtypes, size_t n,
                 emad_push_result *res);
int cluster_pull(emad_client *c, const char *model, const char *const *names, size_t n_names,
                 const emad_pull_options *opts, emad_model **out);
int cluster_pull_into(emad_client *c, const char *model, emad_tensor *tensors, size_t n,
                      const emad_pull_options *opts, uint64_t *step);
int cluster_list(emad_client *c, emad_model_info **out, size_t *n);
int cluster_describe(emad_client *c, const char *model, emad_model_info *info,
                     emad_tensor **tensors, size_t *n);
int cluster_get_config(emad_client *c, const char *model, emad_model_config *cfg);
int cluster_stats(emad_client *c, emad_stat **out, size_t *n);
void cluster_free(struct cluster *cl);

/* A public call begins on a cluster client: forget the previous call's warnings. */
void cluster_call_begin(struct cluster *cl);

/* ---- admin.c ---- */

/* Read a list reply into a malloc'd array *out of *n models. */
int list_parse(emad_client *c, const reply *r, emad_model_info **out, size_t *n);

/* Read a describe (list of one model) reply into *info and a malloc'd *tensors of *n. */
int describe_parse(emad_client *c, const reply *r, emad_model_info *info, emad_tensor **tensors,
                   size_t *n);

/* Read a stats reply into a malloc'd array *out of *n counters. */
int stats_parse(emad_client *c, const reply *r, emad_stat **out, size_t *n);

/* Read the configuration of a list reply of one model into *cfg (which owns its strings). */
int config_parse(emad_client *c, const reply *r, emad_model_config *cfg);

#endif

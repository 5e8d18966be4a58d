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

#include "common/codec.h"
#include "common/proto.h"
#include "emad.h"

#define DEFAULT_TIMEOUT_MS 30000
#define DEFAULT_CONNECT_TIMEOUT_MS 5000
#define DEFAULT_CHUNK_BYTES (4ULL << 20)
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
    uint64_t push_limit; /* largest push message: min(chunk_bytes, msg_limit) */
    uint64_t reply_ask;  /* max_reply_bytes we send with a pull */
    uint64_t reply_eff;  /* what the daemon enforces: min(reply_ask, server_max) */
    char err[2048];
    /* Clusters (cluster*.c): */
    struct cluster *cl;   /* a cluster client: every call is routed to the replicas */
    int routed;           /* a replica's client: requests carry route_epoch and route_shard */
    uint64_t route_epoch; /* the shard map's epoch */
    uint32_t route_shard;
    int has_pull_step; /* the next pulls ask for the version at exactly pull_step */
    uint64_t pull_step;
};

/*
 * A decoded reply: the received message and the msgpack objects pointing
 * into it (BIN payloads included), valid until reply_free().
 */
typedef struct reply {
    void *msg; /* NN_MSG buffer, freed by reply_free() */
    msgpack_unpacked u;
    const msgpack_object *root;
} reply;

/* Packs one request (of any op) from its arguments ctx. */
typedef void (*build_fn)(msgpack_packer *pk, const void *ctx);

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

/* Check a model / tensor name argument; EMAD_EINVAL for NULL, EMAD_ENAME if invalid. */
int check_model(emad_client *c, const char *model);
int check_tensor_name(emad_client *c, const char *name, size_t index);

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

/* Pack a push request (its encoded size is push_packed_size(), computed, not counted). */
void build_push(msgpack_packer *pk, const void *vctx);
size_t push_packed_size(const void *vctx);

/* Fill a push result from a push or commit reply. */
int push_result(emad_client *c, const reply *r, emad_push_result *res);

/* ---- pull.c ---- */

/* A pull in progress: the reply holding the metadata, and its parsed tensors. */
typedef struct pull_state {
    reply r;
    uint64_t step;
    int has_session;
    uint64_t session;
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

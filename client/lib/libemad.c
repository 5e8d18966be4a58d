/*
 * libemad.c - the client library for emad (include/emad.h).
 *
 * One emad_client owns raw nanomsg REQ sockets connected to a daemon, the
 * limits learned from the daemon's `hello`, and the text of the last error.
 * Every call is one or more request/reply exchanges as described in
 * docs/PROTOCOL.md. The chunks of a large push and the reads of a large
 * pull can be pipelined over several connections (EMAD_PIPELINE_DEPTH, at
 * most PIPELINE_MAX; the extra sockets are opened on first use), one
 * request in flight on each, so the daemon averages (or packs) one while
 * the next is on the wire. One request per
 * connection because a nanomsg REP socket silently drops a reply to a
 * connection that is still busy sending the previous one. The sockets are
 * raw so that the client numbers its own requests (the SP header's request
 * id) and nothing is ever resent behind its back; a reply to a request the
 * client gave up on (timed out) is recognised by its id and dropped. Requests are msgpack maps
 * packed with a msgpack_packer whose write callback fills an nn_allocmsg buffer sized exactly by a
 * first, counting pass (header sizes are fixed, and the counting pass copies no data), then sent
 * zero-copy; tensor data is copied once, from the caller's memory into that buffer. Replies are
 * received zero-copy (NN_MSG), checked with proto_prescan() and decoded in place with
 * msgpack_unpack_next(): the decoded objects, including BIN payloads, point into the received
 * buffer, which stays alive until the reply is freed.
 *
 * Large pushes become transactions (begin, chunks, commit) of messages no
 * larger than the client's chunk size; large pulls become sessions read in
 * batches that fit the client's reply cap. Out of memory is returned as
 * EMAD_ENOMEM, never an abort. A client is not thread-safe.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <msgpack.h>
#include <nanomsg/nn.h>
#include <nanomsg/reqrep.h>
#include <nanomsg/tcp.h>

#include "common/dtype.h"
#include "common/emaconf.h"
#include "emad.h"
#include "common/proto.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "0.1.0"
#endif

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

/* The daemon reserves this many bytes per range of a read reply. */
#define READ_RANGE_OVERHEAD 16

/* Largest encoding of one read range [index, offset, length]. */
#define READ_RANGE_WIRE 28

/* Request header room in a read (v, op, session, ranges header). */
#define READ_HEADER_WIRE 64

/* Do not start a chunk smaller than this in a message that holds other tensors. */
#define MIN_CHUNK_BYTES (64u << 10)

/* Abort of a failed transaction: best effort, with a short timeout. */
#define ABORT_TIMEOUT_MS 2000

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

struct emad_client {
    int sock;                       /* socks[0]: every request that is not pipelined */
    int socks[PIPELINE_MAX];        /* -1 until first used */
    uint32_t pending[PIPELINE_MAX]; /* request id in flight on each, 0 if none */
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
};

/* A decoded reply: the received message and the msgpack objects pointing into it. */
typedef struct reply {
    void *msg; /* NN_MSG buffer, freed by reply_free() */
    msgpack_unpacked u;
    const msgpack_object *root;
} reply;

/* One tensor described in a pull or list reply; pointers into the reply. */
typedef struct tdesc {
    const char *name;
    size_t name_len;
    int kind, dtype;
    uint32_t ndim;
    uint64_t shape[EMAD_MAX_NDIM];
    uint64_t step, nbytes;
    const void *data; /* inline data, or NULL */
} tdesc;

/* Output of the two-pass packer: counts when p is NULL, writes into p[0..cap) otherwise. */
typedef struct wbuf {
    char *p;
    size_t len, cap;
    int overflow;
} wbuf;

typedef void (*build_fn)(msgpack_packer *pk, const void *ctx);

/* ---- errors --------------------------------------------------------------------------------- */

/* Record a formatted message as the client's last error and return code. */
__attribute__((format(printf, 3, 4))) static int
fail(emad_client *c, int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    (void)vsnprintf(c->err, sizeof(c->err), fmt, ap);
    va_end(ap);
    return code;
}

/* Start a public call on c: clear the last error. */
static void
call_begin(emad_client *c)
{
    c->err[0] = '\0';
}

/* End a public call: make sure a failure has a message; returns rc. */
static int
call_end(emad_client *c, int rc)
{
    if (rc < 0 && c->err[0] == '\0')
        (void)snprintf(c->err, sizeof(c->err), "%s", proto_strerror(rc));
    return rc;
}

/* Turn a nanomsg errno from op's send or receive into an emad code with a message. */
static int
nn_fail(emad_client *c, int e, const char *op, const char *what, int timeout_ms)
{
    if ((e == ETIMEDOUT || e == EAGAIN) && strcmp(what, "send") == 0)
        return fail(c, EMAD_ETIMEDOUT, "%s: the request could not be sent within %d ms", op,
                    timeout_ms);
    if (e == ETIMEDOUT || e == EAGAIN)
        return fail(c, EMAD_ETIMEDOUT, "%s: no reply from the daemon within %d ms", op, timeout_ms);
    if (e == ETERM || e == EBADF)
        return fail(c, EMAD_ECONNECT, "%s: %s failed: %s", op, what, nn_strerror(e));
    return fail(c, -e, "%s: %s failed: %s", op, what, nn_strerror(e));
}

/* ---- packing -------------------------------------------------------------------------------- */

/* msgpack_packer write callback for wbuf; refuses to write past cap. */
static int
wbuf_write(void *data, const char *buf, size_t len)
{
    wbuf *w = data;

    if (w->p != NULL) {
        if (len > w->cap - w->len) {
            w->overflow = 1;
            return -1;
        }
        if (len > 0)
            memcpy(w->p + w->len, buf, len);
    }
    w->len += len;
    return 0;
}

/* Wire name of PROTO_OP_<id>. */
#define OP_NAME(id) proto_op_name(PROTO_OP_##id)

/* Pack "key": "value". */
static void
pk_kv_str(msgpack_packer *pk, const char *key, const char *value)
{
    proto_pack_str(pk, key);
    proto_pack_str(pk, value);
}

/* Pack the map header of a request with n entries besides v and op, then v and op. */
static void
pk_head(msgpack_packer *pk, const char *op, size_t n)
{
    msgpack_pack_map(pk, 2 + n);
    proto_pack_kv_u64(pk, PROTO_KEY_V, PROTO_VERSION);
    pk_kv_str(pk, PROTO_KEY_OP, op);
}

/* Encoded size of a str or bin header for n bytes (msgpack-c picks the smallest form). */
static uint64_t
mp_str_hdr(uint64_t n)
{
    return n < 32 ? 1 : n < 256 ? 2 : n < 65536 ? 3 : 5;
}

/* Encoded size of a string of n bytes. */
static uint64_t
mp_str(uint64_t n)
{
    return mp_str_hdr(n) + n;
}

/* Encoded size of a string literal key, such as PROTO_KEY_TENSORS. */
#define mp_key(k) mp_str(PROTO_KEY_LEN(k))

/* Encoded size of a bin of n bytes. */
static uint64_t
mp_bin(uint64_t n)
{
    return (n < 256 ? 2 : n < 65536 ? 3 : 5) + n;
}

/* Encoded size of an array or map header for n items. */
static uint64_t
mp_container(uint64_t n)
{
    return n < 16 ? 1 : n < 65536 ? 3 : 5;
}

/* Encoded size of an unsigned integer. */
static uint64_t
mp_uint(uint64_t v)
{
    return v < 128 ? 1 : v < 256 ? 2 : v < 65536 ? 3 : v <= UINT32_MAX ? 5 : 9;
}

static void build_push(msgpack_packer *pk, const void *vctx);
static size_t push_packed_size(const void *vctx);

/*
 * Size of the message build() produces: computed for pushes (a counting
 * pass over 2,000 small tensors visited some 40,000 objects and cost as
 * much as packing them), counted by a dry run of build() otherwise.
 */
static size_t
packed_size(build_fn build, const void *ctx)
{
    wbuf w = {NULL, 0, 0, 0};
    msgpack_packer pk;

    if (build == build_push)
        return push_packed_size(ctx);

    msgpack_packer_init(&pk, &w, wbuf_write);
    build(&pk, ctx);
    return w.len;
}

/* ---- transport ------------------------------------------------------------------------------ */

/* Milliseconds on a monotonic clock. */
static int64_t
now_ms(void)
{
    struct timespec ts;

    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Set an int socket option of level NN_SOL_SOCKET; 0 or -1. */
static int
set_int(int sock, int level, int opt, int v)
{
    return nn_setsockopt(sock, level, opt, &v, sizeof(v));
}

/* Free a reply and its message; safe on a zeroed or already freed reply. */
static void
reply_free(reply *r)
{
    if (r->msg != NULL) {
        msgpack_unpacked_destroy(&r->u);
        nn_freemsg(r->msg);
        r->msg = NULL;
    }
    r->root = NULL;
}

/* Required uint key of a reply map; EMAD_EPROTO if missing or mistyped. */
static int
rget_u64(emad_client *c, const msgpack_object *map, const char *key, uint64_t *v)
{
    const msgpack_object *o = proto_map_get(map, key);

    if (o == NULL || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        (void)fail(c, EMAD_EPROTO, "reply key '%s' is %s (expected an unsigned integer)", key,
                   o == NULL ? "missing" : "not an unsigned integer");
        return EMAD_EPROTO; /* visibly non-zero: callers' outputs stay unset */
    }
    *v = o->via.u64;
    return 0;
}

/* Required str key of a reply map; EMAD_EPROTO if missing or mistyped. */
static int
rget_str(emad_client *c, const msgpack_object *map, const char *key, const char **p, size_t *len)
{
    const msgpack_object *o = proto_map_get(map, key);

    if (o == NULL || o->type != MSGPACK_OBJECT_STR) {
        (void)fail(c, EMAD_EPROTO, "reply key '%s' is %s (expected a string)", key,
                   o == NULL ? "missing" : "not a string");
        return EMAD_EPROTO;
    }
    *p = o->via.str.ptr;
    *len = o->via.str.size;
    return 0;
}

/* Required array key of a reply map; EMAD_EPROTO if missing or mistyped. */
static int
rget_array(emad_client *c, const msgpack_object *map, const char *key, const msgpack_object **arr)
{
    const msgpack_object *o = proto_map_get(map, key);

    if (o == NULL || o->type != MSGPACK_OBJECT_ARRAY) {
        (void)fail(c, EMAD_EPROTO, "reply key '%s' is %s (expected an array)", key,
                   o == NULL ? "missing" : "not an array");
        return EMAD_EPROTO;
    }
    *arr = o;
    return 0;
}

/*
 * Turn an error reply's `error` map into the negative code it carries, with
 * the daemon's message (prefixed with the tensor's name when the message
 * does not already name it) as the last error.
 */
static int
reply_error(emad_client *c, const char *op, const msgpack_object *e)
{
    const msgpack_object *code = proto_map_get(e, PROTO_KEY_CODE), *msg = proto_map_get(e, PROTO_KEY_MESSAGE),
                         *tensor = proto_map_get(e, PROTO_KEY_TENSOR);
    int rc;
    int mlen = 0, tlen = 0;
    const char *m = "", *t = "";

    if (code == NULL || code->type != MSGPACK_OBJECT_POSITIVE_INTEGER || code->via.u64 == 0 ||
        code->via.u64 > 1099)
        return fail(c, EMAD_EPROTO, "%s: error reply without a valid code", op);
    rc = -(int)code->via.u64;
    if (msg != NULL && msg->type == MSGPACK_OBJECT_STR) {
        m = msg->via.str.ptr;
        mlen = msg->via.str.size > 1024 ? 1024 : (int)msg->via.str.size;
    }
    if (tensor != NULL && tensor->type == MSGPACK_OBJECT_STR) {
        t = tensor->via.str.ptr;
        tlen = tensor->via.str.size > EMAD_MAX_NAME_BYTES ? EMAD_MAX_NAME_BYTES
                                                          : (int)tensor->via.str.size;
    }
    if (mlen == 0) {
        m = proto_strerror(rc);
        mlen = (int)strlen(m);
    }
    if (tlen > 0) {
        char quoted[EMAD_MAX_NAME_BYTES + 3];
        int named;

        (void)snprintf(quoted, sizeof(quoted), "'%.*s'", tlen, t);
        named = memmem(m, (size_t)mlen, quoted, strlen(quoted)) != NULL;
        if (!named)
            return fail(c, rc, "tensor %s: %.*s", quoted, mlen, m);
    }
    return fail(c, rc, "%.*s", mlen, m);
}

/*
 * Decode a received message of len bytes held in r->msg: pre-scan it,
 * unpack it in place, check it is a version-1 reply map and whether it
 * reports success. Returns 0 (r->root set) or an error code; r owns the
 * message either way.
 */
static int
reply_decode(emad_client *c, const char *op, reply *r, size_t len)
{
    const msgpack_object *v, *ok, *e;
    const char *why;
    size_t off = 0;
    int rc;

    if ((rc = proto_prescan(r->msg, len, &why)) != 0)
        return fail(c, EMAD_EPROTO, "%s: reply is not a valid msgpack message: %s", op, why);
    rc = msgpack_unpack_next(&r->u, r->msg, len, &off);
    if (rc == MSGPACK_UNPACK_NOMEM_ERROR)
        return fail(c, EMAD_ENOMEM, "%s: out of memory decoding the reply", op);
    if (rc != MSGPACK_UNPACK_SUCCESS || off != len || r->u.data.type != MSGPACK_OBJECT_MAP)
        return fail(c, EMAD_EPROTO, "%s: reply is not a msgpack map", op);
    r->root = &r->u.data;
    v = proto_map_get(r->root, PROTO_KEY_V);
    if (v == NULL || v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return fail(c, EMAD_EPROTO, "%s: reply has no protocol version", op);
    if (v->via.u64 != PROTO_VERSION)
        return fail(c, EMAD_EVERSION, "%s: the daemon replied with protocol version %llu, not %d",
                    op, (unsigned long long)v->via.u64, PROTO_VERSION);
    ok = proto_map_get(r->root, PROTO_KEY_OK);
    if (ok == NULL || ok->type != MSGPACK_OBJECT_BOOLEAN)
        return fail(c, EMAD_EPROTO, "%s: reply has no 'ok'", op);
    if (ok->via.boolean)
        return 0;
    e = proto_map_get(r->root, PROTO_KEY_ERROR);
    if (e == NULL || e->type != MSGPACK_OBJECT_MAP)
        return fail(c, EMAD_EPROTO, "%s: error reply without an 'error' map", op);
    return reply_error(c, op, e);
}

/* Pack build(ctx) into an exactly sized nanomsg message; *len gets its size. */
static int
pack_request(emad_client *c, const char *op, build_fn build, const void *ctx, void **out,
             size_t *out_len)
{
    size_t len = packed_size(build, ctx);
    msgpack_packer pk;
    wbuf w;
    void *msg;

    if (len > c->msg_limit)
        return fail(c, EMAD_ELIMIT, "%s: request of %zu bytes exceeds the daemon's limit (%llu)",
                    op, len, (unsigned long long)c->msg_limit);
    if ((msg = nn_allocmsg(len, 0)) == NULL)
        return fail(c, EMAD_ENOMEM, "%s: cannot allocate a %zu-byte message", op, len);
    w = (wbuf){msg, 0, len, 0};
    msgpack_packer_init(&pk, &w, wbuf_write);
    build(&pk, ctx);
    if (w.overflow || w.len != len) {
        nn_freemsg(msg);
        return fail(c, EMAD_EINTERNAL, "%s: request packed to a different size", op);
    }
    *out = msg;
    *out_len = len;
    return 0;
}

/* Forget every request in flight: their late replies are dropped when they come. */
static void
forget_inflight(emad_client *c)
{
    memset(c->pending, 0, sizeof(c->pending));
}

/* Open and connect a raw REQ socket with the client's options; the socket or -1 (errno set). */
static int
open_socket(const emad_options *o, const char *url)
{
    int s = nn_socket(AF_SP_RAW, NN_REQ), e;

    if (s < 0)
        return -1;
    if (set_int(s, NN_SOL_SOCKET, NN_RCVMAXSIZE, (int)o->max_reply_bytes) < 0 ||
        set_int(s, NN_SOL_SOCKET, NN_SNDTIMEO, o->timeout_ms) < 0 ||
        set_int(s, NN_SOL_SOCKET, NN_RCVTIMEO, o->timeout_ms) < 0 ||
        set_int(s, NN_TCP, NN_TCP_NODELAY, 1) < 0 ||
        set_int(s, NN_SOL_SOCKET, NN_SNDBUF, PROTO_SOCKET_BUFFER_BYTES) < 0 ||
        set_int(s, NN_SOL_SOCKET, NN_RCVBUF, PROTO_SOCKET_BUFFER_BYTES) < 0 ||
        nn_connect(s, url) < 0) {
        e = nn_errno();
        (void)nn_close(s);
        errno = e;
        return -1;
    }
    return s;
}

/* Make sure pipelined connection k is open. */
static int
pipe_open(emad_client *c, size_t k)
{
    if (c->socks[k] >= 0)
        return 0;
    if ((c->socks[k] = open_socket(&c->opts, c->url)) < 0)
        return fail(c, EMAD_ECONNECT, "cannot open connection %zu to %s: %s", k, c->url,
                    nn_strerror(errno));
    return 0;
}

/*
 * Send a request packed by build(ctx) on connection k with the next
 * request id (*id), waiting at most until deadline (ms) for the
 * connection to take it. The connection must have no request in flight.
 */
static int
req_send(emad_client *c, size_t k, const char *op, build_fn build, const void *ctx,
         int64_t deadline, int timeout_ms, uint32_t *id)
{
    unsigned char cbuf[NN_CMSG_SPACE(sizeof(size_t) + sizeof(uint32_t))];
    struct nn_cmsghdr *cm = (struct nn_cmsghdr *)(void *)cbuf;
    unsigned char *hd;
    struct nn_iovec iov;
    struct nn_msghdr hdr;
    size_t len, splen = sizeof(uint32_t);
    int64_t left;
    void *msg;
    int rc;

    if (c->pending[k] != 0)
        return fail(c, EMAD_EINTERNAL, "%s: connection %zu has a request in flight", op, k);
    if ((rc = pipe_open(c, k)) != 0)
        return rc;
    if ((rc = pack_request(c, op, build, ctx, &msg, &len)) != 0)
        return rc;
    c->next_id = (c->next_id + 1) & 0x7fffffffu;
    *id = c->next_id | 0x80000000u;
    /* The SP header as nanomsg's control data carries it: its length, then the big-endian id. */
    memset(cbuf, 0, sizeof(cbuf));
    cm->cmsg_len = NN_CMSG_LEN(sizeof(size_t) + sizeof(uint32_t));
    cm->cmsg_level = PROTO_SP;
    cm->cmsg_type = SP_HDR;
    hd = NN_CMSG_DATA(cm);
    memcpy(hd, &splen, sizeof(splen));
    hd[sizeof(size_t) + 0] = (unsigned char)(*id >> 24);
    hd[sizeof(size_t) + 1] = (unsigned char)(*id >> 16);
    hd[sizeof(size_t) + 2] = (unsigned char)(*id >> 8);
    hd[sizeof(size_t) + 3] = (unsigned char)*id;
    for (;;) {
        left = deadline - now_ms();
        if (left < 1)
            left = 1;
        (void)set_int(c->socks[k], NN_SOL_SOCKET, NN_SNDTIMEO, (int)left);
        iov.iov_base = &msg;
        iov.iov_len = NN_MSG;
        memset(&hdr, 0, sizeof(hdr));
        hdr.msg_iov = &iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = cbuf;
        hdr.msg_controllen = sizeof(cbuf);
        if (nn_sendmsg(c->socks[k], &hdr, 0) >= 0)
            break; /* nanomsg owns msg now */
        rc = nn_errno();
        if (rc == EINTR && now_ms() < deadline)
            continue;
        nn_freemsg(msg);
        return nn_fail(c, rc, op, "send", timeout_ms);
    }
    c->pending[k] = *id;
    return 0;
}

/* The request id in a received control buffer, or 0 if there is none. */
static uint32_t
reply_id(const void *ctrl, size_t ctrl_len)
{
    struct nn_msghdr hdr;
    const struct nn_cmsghdr *cm;

    memset(&hdr, 0, sizeof(hdr));
    hdr.msg_control = (void *)ctrl;
    hdr.msg_controllen = ctrl_len;
    for (cm = NN_CMSG_FIRSTHDR(&hdr); cm != NULL; cm = NN_CMSG_NXTHDR(&hdr, cm)) {
        const unsigned char *d;
        size_t splen;
        if (cm->cmsg_level != PROTO_SP || cm->cmsg_type != SP_HDR)
            continue;
        if (cm->cmsg_len < NN_CMSG_LEN(sizeof(size_t) + sizeof(uint32_t)))
            return 0;
        d = NN_CMSG_DATA(cm);
        memcpy(&splen, d, sizeof(splen));
        if (splen != sizeof(uint32_t))
            return 0;
        d += sizeof(size_t);
        return (uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 | (uint32_t)d[2] << 8 | d[3];
    }
    return 0;
}

/*
 * Wait until deadline for the reply to the request in flight on
 * connection k and decode it into *r (free with reply_free). Replies to
 * earlier requests (given up on) are dropped. Afterwards, successful or
 * not, the connection has no request in flight.
 */
static int
req_wait(emad_client *c, size_t k, const char *op, int64_t deadline, int timeout_ms, reply *r)
{
    uint32_t id = c->pending[k];
    void *buf = NULL;
    int64_t left;
    int n = -1, rc;

    memset(r, 0, sizeof(*r));
    c->pending[k] = 0;
    if (id == 0)
        return fail(c, EMAD_EINTERNAL, "%s: no request in flight on connection %zu", op, k);
    while (buf == NULL) {
        unsigned char ctrl[256];
        struct nn_iovec iov = {&buf, NN_MSG};
        struct nn_msghdr hdr;
        uint32_t got;

        left = deadline - now_ms();
        if (left < 1)
            return nn_fail(c, ETIMEDOUT, op, "receive", timeout_ms);
        (void)set_int(c->socks[k], NN_SOL_SOCKET, NN_RCVTIMEO, (int)left);
        memset(&hdr, 0, sizeof(hdr));
        hdr.msg_iov = &iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = ctrl;
        hdr.msg_controllen = sizeof(ctrl);
        if ((n = nn_recvmsg(c->socks[k], &hdr, 0)) < 0) {
            rc = nn_errno();
            buf = NULL;
            if (rc == EINTR)
                continue;
            return nn_fail(c, rc, op, "receive", timeout_ms);
        }
        got = reply_id(ctrl, sizeof(ctrl));
        if (got == id)
            break;
        nn_freemsg(buf); /* the reply to a request we gave up on */
        buf = NULL;
    }
    r->msg = buf;
    msgpack_unpacked_init(&r->u);
    if ((rc = reply_decode(c, op, r, (size_t)n)) != 0) {
        reply_free(r);
        return rc;
    }
    return 0;
}

/*
 * One round trip: pack build(ctx) into an exactly sized nanomsg message,
 * send it (zero-copy) and wait for the reply, all within timeout_ms.
 * Returns 0 with *r holding a successful reply (free with reply_free), or
 * a negative code with the last error set and *r empty.
 */
static int
call(emad_client *c, const char *op, build_fn build, const void *ctx, int timeout_ms, reply *r)
{
    int64_t deadline = now_ms() + timeout_ms;
    uint32_t id = 0;
    int rc;

    memset(r, 0, sizeof(*r));
    c->pending[0] = 0; /* whatever was in flight was given up on */
    if ((rc = req_send(c, 0, op, build, ctx, deadline, timeout_ms, &id)) != 0)
        return rc;
    return req_wait(c, 0, op, deadline, timeout_ms, r);
}

/* ---- simple requests ------------------------------------------------------------------------ */

/* A request with an optional model name and an optional uint field. */
typedef struct simple_req {
    const char *op;
    const char *model; /* NULL: no model key */
    const char *key;   /* NULL: no uint key */
    uint64_t value;
    const char *key2; /* second uint key, or NULL */
    uint64_t value2;
} simple_req;

/* Pack a simple_req. */
static void
build_simple(msgpack_packer *pk, const void *vctx)
{
    const simple_req *q = vctx;

    pk_head(pk, q->op, (q->model != NULL) + (q->key != NULL) + (q->key2 != NULL));
    if (q->model != NULL)
        pk_kv_str(pk, PROTO_KEY_MODEL, q->model);
    if (q->key != NULL)
        proto_pack_kv_u64(pk, q->key, q->value);
    if (q->key2 != NULL)
        proto_pack_kv_u64(pk, q->key2, q->value2);
}

/* Round trip of a simple request with the client's timeout. */
static int
call_simple(emad_client *c, const simple_req *q, reply *r)
{
    return call(c, q->op, build_simple, q, c->opts.timeout_ms, r);
}

/* Check a model name argument; EMAD_EINVAL for NULL, EMAD_ENAME if invalid. */
static int
check_model(emad_client *c, const char *model)
{
    if (model == NULL)
        return fail(c, EMAD_EINVAL, "model name is NULL");
    if (proto_check_model_name(model, strlen(model)) != 0)
        return fail(c, EMAD_ENAME,
                    "invalid model name '%.200s': 1..%d bytes of A-Z a-z 0-9 . _ -, not "
                    "starting with '.'",
                    model, EMAD_MAX_MODEL_NAME_BYTES);
    return 0;
}

/* Check a tensor name argument; EMAD_EINVAL for NULL, EMAD_ENAME if invalid. */
static int
check_tensor_name(emad_client *c, const char *name, size_t index)
{
    if (name == NULL)
        return fail(c, EMAD_EINVAL, "tensor %zu: name is NULL", index);
    if (proto_check_tensor_name(name, strlen(name)) != 0)
        return fail(c, EMAD_ENAME,
                    "tensor '%.200s': invalid name (1..%d bytes of UTF-8, no control characters)",
                    name, EMAD_MAX_NAME_BYTES);
    return 0;
}

/* ---- public: basics ------------------------------------------------------------------------- */

/* Library version string, from the build (static storage). */
EMAD_EXTERN const char *
emad_version(void)
{
    return PACKAGE_VERSION;
}

EMAD_EXTERN size_t
emad_struct_size(const char *name)
{
    static const struct {
        const char *name;
        size_t size;
    } t[] = {
        {"emad_tensor", sizeof(emad_tensor)},
        {"emad_options", sizeof(emad_options)},
        {"emad_push_result", sizeof(emad_push_result)},
        {"emad_pull_options", sizeof(emad_pull_options)},
        {"emad_model", sizeof(emad_model)},
        {"emad_model_info", sizeof(emad_model_info)},
        {"emad_model_config", sizeof(emad_model_config)},
        {"emad_stat", sizeof(emad_stat)},
    };

    for (size_t i = 0; name != NULL && i < sizeof(t) / sizeof(t[0]); i++)
        if (strcmp(t[i].name, name) == 0)
            return t[i].size;
    return 0;
}

/* Text for a code: delegates to the shared protocol error table. */
EMAD_EXTERN const char *
emad_strerror(int code)
{
    return proto_strerror(code);
}

/* Symbolic name of a code, or NULL: delegates to the shared table. */
EMAD_EXTERN const char *
emad_errname(int code)
{
    return proto_errname(code);
}

/* Safetensors name of a dtype, or NULL. */
EMAD_EXTERN const char *
emad_dtype_name(int dtype)
{
    return dtype_name(dtype);
}

/* dtype for a safetensors name; EMAD_DTYPE_INVALID for NULL or unknown names. */
EMAD_EXTERN int
emad_dtype_from_name(const char *name)
{
    return name != NULL ? dtype_from_name(name, strlen(name)) : EMAD_DTYPE_INVALID;
}

/* Element size of a dtype in bytes, 0 if invalid. */
EMAD_EXTERN size_t
emad_dtype_size(int dtype)
{
    return dtype_size(dtype);
}

/* Largest read reply the client asks for while pulling a session. */
#define READ_BATCH_BYTES (4ULL << 20)

/*
 * Largest pull reply that carries its data inline (the pull's
 * inline_bytes); a larger pull becomes a session read in batches of
 * READ_BATCH_BYTES. A message of 32 MiB or more is received into a fresh
 * mapping under glibc's malloc (its mmap threshold adjusts up to 32 MiB,
 * no further), page-faulted in on every pull: models of 32 and 48 MiB
 * pulled inline moved 0.9-1.0 GB/s against 2.2-3.3 GB/s as sessions
 * (bench/RESULTS.md, "Pull size").
 */
#define PULL_INLINE_BYTES (16ULL << 20)

/* Fill opts with the defaults (30 s requests, 5 s first contact, 4 MiB chunks, 64 MiB replies). */
EMAD_EXTERN void
emad_options_init(emad_options *opts)
{
    if (opts == NULL)
        return;
    memset(opts, 0, sizeof(*opts));
    opts->timeout_ms = DEFAULT_TIMEOUT_MS;
    opts->connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
    opts->chunk_bytes = DEFAULT_CHUNK_BYTES;
    opts->max_reply_bytes = DEFAULT_MAX_REPLY_BYTES;
}

/* Pack a hello request. */
static void
build_hello(msgpack_packer *pk, const void *ctx)
{
    (void)ctx;
    pk_head(pk, OP_NAME(HELLO), 0);
}

/* Send hello and learn the daemon's protocol and limits. */
static int
hello(emad_client *c)
{
    uint64_t proto, max;
    reply r;
    int rc;

    rc = call(c, OP_NAME(HELLO), build_hello, NULL, c->opts.connect_timeout_ms, &r);
    if (rc == EMAD_ETIMEDOUT)
        return fail(c, EMAD_ECONNECT, "no reply to hello within %d ms (is emad running there?)",
                    c->opts.connect_timeout_ms);
    if (rc != 0)
        return rc;
    if ((rc = rget_u64(c, r.root, PROTO_KEY_PROTOCOL, &proto)) != 0 ||
        (rc = rget_u64(c, r.root, PROTO_KEY_MAX_MESSAGE_BYTES, &max)) != 0)
        goto out;
    if (proto != PROTO_VERSION) {
        rc = fail(c, EMAD_EVERSION, "the daemon speaks protocol %llu, this library %d",
                  (unsigned long long)proto, PROTO_VERSION);
        goto out;
    }
    if (max < PROTO_MIN_MAX_MESSAGE) {
        rc = fail(c, EMAD_EPROTO, "the daemon's max_message_bytes %llu is below the minimum %u",
                  (unsigned long long)max, PROTO_MIN_MAX_MESSAGE);
        goto out;
    }
    if (max > PROTO_MAX_MAX_MESSAGE)
        max = PROTO_MAX_MAX_MESSAGE;
    c->server_max = max;
    c->msg_limit = max - SP_HEADER_SLACK;
    c->push_limit = c->opts.chunk_bytes < c->msg_limit ? c->opts.chunk_bytes : c->msg_limit;
    c->reply_eff = c->reply_ask < max ? c->reply_ask : max;
out:
    reply_free(&r);
    return rc;
}

/* Open a REQ socket to url, set its options, say hello; on failure *out is NULL and no detail
 * survives. */
EMAD_EXTERN int
emad_connect(emad_client **out, const char *url, const emad_options *opts)
{
    emad_client *c;
    const char *env;
    emad_options o;
    int rc;

    if (out == NULL)
        return EMAD_EINVAL;
    *out = NULL;
    if (opts != NULL)
        o = *opts;
    else
        emad_options_init(&o);
    if (url == NULL)
        url = EMAD_DEFAULT_URL;
    if (o.timeout_ms <= 0 || o.connect_timeout_ms <= 0 || o.chunk_bytes < PROTO_MIN_MAX_MESSAGE ||
        o.max_reply_bytes < PROTO_MIN_MAX_MESSAGE || o.max_reply_bytes > PROTO_MAX_MAX_MESSAGE)
        return EMAD_EINVAL;
    if (o.chunk_bytes > PROTO_MAX_MAX_MESSAGE)
        o.chunk_bytes = PROTO_MAX_MAX_MESSAGE;
    if ((c = calloc(1, sizeof(*c))) == NULL)
        return EMAD_ENOMEM;
    c->opts = o;
    /* Before hello: requests up to the protocol minimum, replies as asked. */
    c->msg_limit = c->push_limit = PROTO_MIN_MAX_MESSAGE - SP_HEADER_SLACK;
    c->reply_ask = c->reply_eff = o.max_reply_bytes - SP_HEADER_SLACK;
    for (size_t k = 0; k < PIPELINE_MAX; k++)
        c->socks[k] = -1;
    c->depth = PIPELINE_DEFAULT;
    if ((env = getenv("EMAD_PIPELINE_DEPTH")) != NULL && *env != '\0') {
        char *end;
        unsigned long d = strtoul(env, &end, 10);
        if (*end != '\0' || d < 1 || d > PIPELINE_MAX) {
            free(c);
            return EMAD_EINVAL;
        }
        c->depth = d;
    }
    c->next_id = (uint32_t)now_ms() & 0x7fffffffu;
    if ((c->url = strdup(url)) == NULL) {
        free(c);
        return EMAD_ENOMEM;
    }
    /* Raw: requests are numbered here and nothing is ever resent behind our back (a push is
     * not idempotent). */
    if ((c->sock = c->socks[0] = open_socket(&o, url)) < 0) {
        int e = errno;
        rc = (e == EINVAL || e == EPROTONOSUPPORT || e == ENAMETOOLONG || e == ENODEV)
                 ? EMAD_EINVAL
                 : EMAD_ECONNECT;
        goto fail;
    }
    if ((rc = hello(c)) != 0)
        goto fail;
    *out = c;
    return 0;
fail:
    emad_close(c);
    return rc;
}

/* Close the socket (pending messages are dropped) and free the client. */
EMAD_EXTERN void
emad_close(emad_client *c)
{
    if (c == NULL)
        return;
    for (size_t k = 0; k < PIPELINE_MAX; k++)
        if (c->socks[k] >= 0)
            (void)nn_close(c->socks[k]);
    free(c->url);
    free(c);
}

/* Detailed message of the last failed call on c (owned by c). */
EMAD_EXTERN const char *
emad_last_error(const emad_client *c)
{
    return c != NULL ? c->err : "";
}

/* The daemon's max_message_bytes from hello (0 for NULL). */
EMAD_EXTERN uint64_t
emad_server_max_message_bytes(const emad_client *c)
{
    return c != NULL ? c->server_max : 0;
}

/* ---- create / drop -------------------------------------------------------------------------- */

/* Arguments of a create or configure request. */
typedef struct create_req {
    const char *op;
    const char *model;
    const emad_model_config *cfg;
    int exist_ok; /* create only */
} create_req;

/* Pack a create or configure request: the model name and every configuration key. */
static void
build_create(msgpack_packer *pk, const void *vctx)
{
    const create_req *q = vctx;
    int create = strcmp(q->op, OP_NAME(CREATE)) == 0;

    pk_head(pk, q->op, 1 + EMACONF_PACKED_KEYS + create);
    pk_kv_str(pk, PROTO_KEY_MODEL, q->model);
    emaconf_pack(pk, q->cfg);
    if (create) {
        proto_pack_str(pk, PROTO_KEY_EXIST_OK);
        if (q->exist_ok)
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
    }
}

EMAD_EXTERN void
emad_config_init(emad_model_config *cfg)
{
    if (cfg != NULL)
        emaconf_init(cfg);
}

/* Send a create or configure after checking the name and configuration locally. */
static int
send_config(emad_client *c, const char *op, const char *model, const emad_model_config *cfg,
            int exist_ok)
{
    create_req q = {op, model, cfg, exist_ok != 0};
    char why[256];
    reply r;
    int rc;

    if ((rc = check_model(c, model)) != 0)
        return rc;
    if (emaconf_check(cfg, why, sizeof(why)) != 0)
        return fail(c, EMAD_ERANGE, "%s", why);
    if ((rc = call(c, op, build_create, &q, c->opts.timeout_ms, &r)) == 0)
        reply_free(&r);
    return rc;
}

EMAD_EXTERN int
emad_create_config(emad_client *c, const char *model, const emad_model_config *cfg, int exist_ok)
{
    emad_model_config defaults;

    if (c == NULL)
        return EMAD_EINVAL;
    call_begin(c);
    if (cfg == NULL) {
        emaconf_init(&defaults);
        cfg = &defaults;
    }
    return call_end(c, send_config(c, OP_NAME(CREATE), model, cfg, exist_ok));
}

/* Create a model with one decay and the default options. */
EMAD_EXTERN int
emad_create(emad_client *c, const char *model, double decay, int exist_ok)
{
    emad_model_config cfg;

    emaconf_init(&cfg);
    cfg.decays[0] = decay;
    return emad_create_config(c, model, &cfg, exist_ok);
}

EMAD_EXTERN int
emad_configure(emad_client *c, const char *model, const emad_model_config *cfg)
{
    if (c == NULL || cfg == NULL)
        return EMAD_EINVAL;
    call_begin(c);
    return call_end(c, send_config(c, OP_NAME(CONFIGURE), model, cfg, 0));
}

EMAD_EXTERN const char *
emad_schedule_name(int v)
{
    return emaconf_schedule_name(v);
}

EMAD_EXTERN const char *
emad_step_gap_name(int v)
{
    return emaconf_step_gap_name(v);
}

EMAD_EXTERN const char *
emad_buffers_name(int v)
{
    return emaconf_buffers_name(v);
}

EMAD_EXTERN const char *
emad_nonfinite_name(int v)
{
    return emaconf_nonfinite_name(v);
}

EMAD_EXTERN int
emad_option_from_name(const char *option, const char *name)
{
    if (option == NULL || name == NULL)
        return -1;
    return emaconf_from_name(option, name, strlen(name));
}

EMAD_EXTERN void
emad_config_free(emad_model_config *cfg)
{
    emaconf_free(cfg);
}

/* Drop a model. */
EMAD_EXTERN int
emad_drop(emad_client *c, const char *model)
{
    simple_req q = {.op = OP_NAME(DROP), .model = model};
    reply r;
    int rc;

    if (c == NULL)
        return EMAD_EINVAL;
    call_begin(c);
    if ((rc = check_model(c, model)) != 0)
        return call_end(c, rc);
    if ((rc = call_simple(c, &q, &r)) == 0)
        reply_free(&r);
    return call_end(c, rc);
}

/* ---- push ----------------------------------------------------------------------------------- */

/* One piece of a push message: bytes [offset, offset + len) of tensor index. */
typedef struct push_item {
    size_t index;
    uint64_t offset, len;
} push_item;

/* A push message: either a whole push or one message of a transaction. */
typedef struct push_req {
    const char *model;
    uint64_t step;
    int has_writer; /* single-message pushes of emad_push_as() */
    uint32_t writer;
    int seed;             /* emad_seed() */
    const int *as_dtypes; /* emad_seed(): per tensor, or NULL */
    int has_txn;
    uint64_t txn;
    const emad_tensor *tensors;
    const push_item *items;
    size_t nitems;
} push_req;

/* Pack a push request: tensor maps with their data copied from the caller's buffers. */
static void
build_push(msgpack_packer *pk, const void *vctx)
{
    const push_req *q = vctx;

    pk_head(pk, OP_NAME(PUSH), 3 + q->has_txn + q->has_writer + q->seed);
    if (q->seed) {
        proto_pack_str(pk, PROTO_KEY_SEED);
        msgpack_pack_true(pk);
    }
    pk_kv_str(pk, PROTO_KEY_MODEL, q->model);
    proto_pack_kv_u64(pk, PROTO_KEY_STEP, q->step);
    if (q->has_txn)
        proto_pack_kv_u64(pk, PROTO_KEY_TXN, q->txn);
    if (q->has_writer)
        proto_pack_kv_u64(pk, PROTO_KEY_WRITER, q->writer);
    proto_pack_str(pk, PROTO_KEY_TENSORS);
    msgpack_pack_array(pk, q->nitems);
    for (size_t i = 0; i < q->nitems; i++) {
        const push_item *it = &q->items[i];
        const emad_tensor *t = &q->tensors[it->index];

        int as = q->as_dtypes != NULL ? q->as_dtypes[it->index] : EMAD_DTYPE_INVALID;

        msgpack_pack_map(pk, 5 + q->has_txn + (t->count > 0) + (as != EMAD_DTYPE_INVALID));
        if (as != EMAD_DTYPE_INVALID)
            pk_kv_str(pk, PROTO_KEY_AS_DTYPE, dtype_name(as));
        pk_kv_str(pk, PROTO_KEY_NAME, t->name);
        pk_kv_str(pk, PROTO_KEY_KIND, proto_kind_name(t->kind));
        pk_kv_str(pk, PROTO_KEY_DTYPE, dtype_name(t->dtype));
        proto_pack_str(pk, PROTO_KEY_SHAPE);
        msgpack_pack_array(pk, t->ndim);
        for (uint32_t d = 0; d < t->ndim; d++)
            msgpack_pack_uint64(pk, t->shape[d]);
        proto_pack_str(pk, PROTO_KEY_DATA);
        msgpack_pack_bin(pk, it->len);
        msgpack_pack_bin_body(pk, (const char *)t->data + it->offset, it->len);
        if (q->has_txn)
            proto_pack_kv_u64(pk, PROTO_KEY_OFFSET, it->offset);
        if (t->count > 0) {
            proto_pack_str(pk, PROTO_KEY_SLICE);
            msgpack_pack_array(pk, 2);
            msgpack_pack_uint64(pk, t->offset);
            msgpack_pack_uint64(pk, t->count);
        }
    }
}

/* Encoded size of the push header (everything but the tensor maps) for nitems tensors. */
static uint64_t
push_header_size(const push_req *q, uint64_t nitems)
{
    uint64_t n = 1 + mp_key(PROTO_KEY_V) + 1 + mp_key(PROTO_KEY_OP) + mp_str(strlen(OP_NAME(PUSH))) +
                 mp_key(PROTO_KEY_MODEL) + mp_str(strlen(q->model)) + mp_key(PROTO_KEY_STEP) +
                 mp_uint(q->step) + mp_key(PROTO_KEY_TENSORS) + mp_container(nitems);

    if (q->has_txn)
        n += mp_key(PROTO_KEY_TXN) + mp_uint(q->txn);
    if (q->has_writer)
        n += mp_key(PROTO_KEY_WRITER) + mp_uint(q->writer);
    if (q->seed)
        n += mp_key(PROTO_KEY_SEED) + 1;
    return n;
}

/* Encoded size of a tensor map without its data bytes and bin header (and offset). */
static uint64_t
tensor_meta_size(const emad_tensor *t)
{
    uint64_t n = 1 + mp_key(PROTO_KEY_NAME) + mp_str(strlen(t->name)) + mp_key(PROTO_KEY_KIND) +
                 mp_str(strlen(proto_kind_name(t->kind))) + mp_key(PROTO_KEY_DTYPE) +
                 mp_str(strlen(dtype_name(t->dtype))) + mp_key(PROTO_KEY_SHAPE) +
                 mp_container(t->ndim) + mp_key(PROTO_KEY_DATA);

    for (uint32_t d = 0; d < t->ndim; d++)
        n += mp_uint(t->shape[d]);
    if (t->count > 0)
        n += mp_key(PROTO_KEY_SLICE) + mp_container(2) + mp_uint(t->offset) + mp_uint(t->count);
    return n;
}

/* Encoded size of a tensor map carrying len data bytes (at offset, in a transaction). */
static uint64_t
tensor_entry_size(const emad_tensor *t, uint64_t len, int txn, uint64_t offset)
{
    return tensor_meta_size(t) + mp_bin(len) + (txn ? mp_key(PROTO_KEY_OFFSET) + mp_uint(offset) : 0);
}

/* Encoded size of build_push(q), item by item as build_push() packs it. */
static size_t
push_packed_size(const void *vctx)
{
    const push_req *q = vctx;
    uint64_t n = push_header_size(q, q->nitems);

    for (size_t i = 0; i < q->nitems; i++) {
        const push_item *it = &q->items[i];
        const emad_tensor *t = &q->tensors[it->index];
        int as = q->as_dtypes != NULL ? q->as_dtypes[it->index] : EMAD_DTYPE_INVALID;

        n += tensor_entry_size(t, it->len, q->has_txn, it->offset);
        if (as != EMAD_DTYPE_INVALID)
            n += mp_key(PROTO_KEY_AS_DTYPE) + mp_str(strlen(dtype_name(as)));
    }
    return (size_t)n;
}

/* Order tensors by name, then slice start, for qsort. */
static int
cmp_tensors(const void *a, const void *b)
{
    const emad_tensor *x = *(const emad_tensor *const *)a, *y = *(const emad_tensor *const *)b;
    int d = strcmp(x->name, y->name);

    if (d != 0)
        return d;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Validate push arguments before anything is sent. */
static int
push_validate(emad_client *c, const char *model, const emad_tensor *tensors, size_t n,
              int allow_empty)
{
    const emad_tensor **sorted;
    int rc;

    if ((rc = check_model(c, model)) != 0)
        return rc;
    if (n == 0 && allow_empty)
        return 0;
    if (tensors == NULL || n == 0)
        return fail(c, EMAD_EINVAL, "push of no tensors");
    for (size_t i = 0; i < n; i++) {
        const emad_tensor *t = &tensors[i];
        uint64_t numel, nbytes;

        if ((rc = check_tensor_name(c, t->name, i)) != 0)
            return rc;
        if (proto_kind_name(t->kind) == NULL)
            return fail(c, EMAD_EINVAL, "tensor '%.200s': kind %d is not EMAD_PARAM or EMAD_BUFFER",
                        t->name, t->kind);
        if (dtype_size(t->dtype) == 0)
            return fail(c, EMAD_EDTYPE, "tensor '%.200s': invalid dtype %d", t->name, t->dtype);
        if (t->kind == EMAD_PARAM && !dtype_is_float(t->dtype))
            return fail(c, EMAD_EDTYPE,
                        "tensor '%.200s': a param must be F32, F16, BF16 or F64, not %s", t->name,
                        dtype_name(t->dtype));
        if (t->ndim > EMAD_MAX_NDIM)
            return fail(c, EMAD_ELIMIT, "tensor '%.200s': %u dimensions, at most %d", t->name,
                        t->ndim, EMAD_MAX_NDIM);
        if (dtype_numel(t->shape, t->ndim, t->dtype, &numel, &nbytes) != 0)
            return fail(c, EMAD_ELIMIT, "tensor '%.200s': shape too large", t->name);
        if (t->count > 0) {
            if (t->offset > numel || t->count > numel - t->offset)
                return fail(c, EMAD_ERANGE,
                            "tensor '%.200s': slice [%llu, +%llu) is outside its %llu elements",
                            t->name, (unsigned long long)t->offset, (unsigned long long)t->count,
                            (unsigned long long)numel);
            numel = t->count;
            nbytes = t->count * dtype_size(t->dtype);
        } else if (t->offset != 0) {
            return fail(c, EMAD_EINVAL, "tensor '%.200s': offset %llu without a count", t->name,
                        (unsigned long long)t->offset);
        }
        if (nbytes != t->nbytes)
            return fail(
                c, EMAD_ESIZE,
                "tensor '%.200s': nbytes %llu differs from %llu elements of %s (%llu bytes)",
                t->name, (unsigned long long)t->nbytes, (unsigned long long)numel,
                dtype_name(t->dtype), (unsigned long long)nbytes);
        if (t->data == NULL && nbytes > 0)
            return fail(c, EMAD_EINVAL, "tensor '%.200s': data is NULL", t->name);
        if (nbytes > SIZE_MAX / 2)
            return fail(c, EMAD_ELIMIT, "tensor '%.200s': too large", t->name);
    }
    if ((sorted = malloc(n * sizeof(*sorted))) == NULL)
        return fail(c, EMAD_ENOMEM, "out of memory checking %zu tensor names", n);
    rc = 0;
    for (size_t i = 0; i < n; i++)
        sorted[i] = &tensors[i];
    qsort(sorted, n, sizeof(*sorted), cmp_tensors);
    /* The same name twice: only as disjoint slices. */
    for (size_t i = 1; i < n; i++) {
        const emad_tensor *a = sorted[i - 1], *b = sorted[i];
        if (strcmp(a->name, b->name) != 0)
            continue;
        if (a->count == 0 || b->count == 0) {
            rc = fail(c, EMAD_EDUP, "tensor '%.200s': appears twice in the push", b->name);
            break;
        }
        if (b->offset < a->offset + a->count) {
            rc = fail(c, EMAD_EOVERLAP, "tensor '%.200s': slices at %llu and %llu overlap", b->name,
                      (unsigned long long)a->offset, (unsigned long long)b->offset);
            break;
        }
    }
    free(sorted);
    return rc;
}

/* Fill a push result from a push or commit reply. */
static int
push_result(emad_client *c, const reply *r, emad_push_result *res)
{
    int rc;

    const msgpack_object *o;

    if ((rc = rget_u64(c, r->root, PROTO_KEY_APPLIED, &res->applied)) != 0 ||
        (rc = rget_u64(c, r->root, PROTO_KEY_STALE, &res->stale)) != 0 ||
        (rc = rget_u64(c, r->root, PROTO_KEY_SKIPPED, &res->skipped)) != 0 ||
        (rc = rget_u64(c, r->root, PROTO_KEY_IGNORED, &res->ignored)) != 0 ||
        (rc = rget_u64(c, r->root, PROTO_KEY_STEP, &res->step)) != 0)
        return rc;
    if ((o = proto_map_get(r->root, PROTO_KEY_PENDING)) == NULL || o->type != MSGPACK_OBJECT_BOOLEAN)
        return fail(c, EMAD_EPROTO, "reply key 'pending' is missing or not a boolean");
    res->pending = o->via.boolean;
    return 0;
}

/*
 * Plan the next message of a transaction starting at tensor *ti, byte *toff:
 * whole tensors while they fit in the push limit, then a chunk of the next
 * one. Fills q->items / q->nitems and advances the cursor.
 */
static int
push_plan(emad_client *c, push_req *q, push_item *items, size_t *ti, uint64_t *toff, size_t n)
{
    const emad_tensor *ts = q->tensors;
    uint64_t limit = c->push_limit;
    uint64_t size = push_header_size(q, PROTO_MAX_TENSORS);
    size_t k = 0;

    while (*ti < n && k < PROTO_MAX_TENSORS) {
        const emad_tensor *t = &ts[*ti];
        uint64_t rem = t->nbytes - *toff;
        uint64_t full = tensor_entry_size(t, rem, 1, *toff);
        uint64_t ovh, room, isz = dtype_size(t->dtype);

        if (size + full <= limit) {
            items[k++] = (push_item){*ti, *toff, rem};
            size += full;
            (*ti)++;
            *toff = 0;
            continue;
        }
        /* Worst-case overhead of a chunk: 5-byte bin header, 9-byte offset. */
        ovh = tensor_meta_size(t) + 5 + mp_key(PROTO_KEY_OFFSET) + 9;
        room = size + ovh < limit ? limit - size - ovh : 0;
        room -= room % isz;
        if (room > rem)
            room = rem;
        if (room == 0 || (k > 0 && room < MIN_CHUNK_BYTES && room < rem))
            break;
        items[k++] = (push_item){*ti, *toff, room};
        *toff += room;
        if (*toff == t->nbytes) {
            (*ti)++;
            *toff = 0;
        }
        break; /* the message is full */
    }
    if (k == 0)
        return fail(c, EMAD_EINTERNAL, "push: cannot fit tensor '%.200s' in a %llu-byte message",
                    ts[*ti].name, (unsigned long long)limit);
    q->items = items;
    q->nitems = k;
    return 0;
}

/* Best-effort abort of transaction txn (errors ignored; the daemon also expires it). */
static void
push_abort(emad_client *c, uint64_t txn)
{
    simple_req q = {.op = OP_NAME(ABORT), .key = PROTO_KEY_TXN, .value = txn};
    char saved[sizeof(c->err)];
    int timeout = c->opts.timeout_ms < ABORT_TIMEOUT_MS ? c->opts.timeout_ms : ABORT_TIMEOUT_MS;
    reply r;

    memcpy(saved, c->err, sizeof(saved));
    if (call(c, OP_NAME(ABORT), build_simple, &q, timeout, &r) == 0)
        reply_free(&r);
    memcpy(c->err, saved, sizeof(saved));
}

/* Push as a transaction: begin, messages of whole tensors and chunks, commit. */
static int
push_txn(emad_client *c, const char *model, uint64_t step, const push_req *single,
         const emad_tensor *tensors, size_t n, emad_push_result *res)
{
    simple_req bq = {.op = OP_NAME(BEGIN), .model = model, .key = PROTO_KEY_STEP, .value = step};
    simple_req cq = {.op = OP_NAME(COMMIT), .key = PROTO_KEY_TXN};
    push_req q = {.model = model, .step = step, .has_txn = 1, .tensors = tensors};
    size_t ti = 0, cap = n < PROTO_MAX_TENSORS ? n : PROTO_MAX_TENSORS;
    uint64_t toff = 0, txn = 0, nsent = 0, ndone = 0;
    uint32_t id;
    push_item *items;
    reply r;
    int rc;

    if (single->has_writer) {
        bq.key2 = PROTO_KEY_WRITER;
        bq.value2 = single->writer;
    }
    if ((items = malloc(cap * sizeof(*items))) == NULL)
        return fail(c, EMAD_ENOMEM, "push: out of memory planning %zu tensors", n);
    if ((rc = call_simple(c, &bq, &r)) != 0)
        goto out;
    res->messages++;
    rc = rget_u64(c, r.root, PROTO_KEY_TXN, &txn);
    reply_free(&r);
    if (rc != 0)
        goto out;
    q.txn = cq.value = txn;
    /* Chunks are pipelined: message j goes on connection j % c->depth, whose previous
     * reply is checked first. */
    while (ti < n || nsent > ndone) {
        uint64_t staged;

        if (ti < n && nsent - ndone < c->depth) {
            if ((rc = push_plan(c, &q, items, &ti, &toff, n)) != 0)
                goto fail_abort;
            if ((rc = req_send(c, nsent % c->depth, OP_NAME(PUSH), build_push, &q,
                               now_ms() + c->opts.timeout_ms, c->opts.timeout_ms, &id)) != 0)
                goto fail_abort;
            nsent++;
            continue;
        }
        if ((rc = req_wait(c, ndone % c->depth, OP_NAME(PUSH), now_ms() + c->opts.timeout_ms,
                           c->opts.timeout_ms, &r)) != 0)
            goto fail_abort;
        ndone++;
        res->messages++;
        rc = rget_u64(c, r.root, PROTO_KEY_STAGED, &staged);
        reply_free(&r);
        if (rc != 0)
            goto fail_abort;
    }
    if ((rc = call_simple(c, &cq, &r)) != 0)
        goto fail_abort;
    res->messages++;
    rc = push_result(c, &r, res);
    reply_free(&r);
    goto out;
fail_abort:
    forget_inflight(c);
    push_abort(c, txn);
out:
    free(items);
    return rc;
}

/* Validate, then push as one message or as a transaction; *res (may be NULL) gets the outcome. */
static int
push(emad_client *c, const char *model, uint64_t step, int has_writer, uint32_t writer,
     const emad_tensor *tensors, size_t n, emad_push_result *res)
{
    emad_push_result local;
    push_req q = {.model = model,
                  .step = step,
                  .has_writer = has_writer,
                  .writer = writer,
                  .tensors = tensors};
    push_item *items = NULL;
    uint64_t size;
    reply r;
    int rc;

    if (res == NULL)
        res = &local;
    memset(res, 0, sizeof(*res));
    if ((rc = push_validate(c, model, tensors, n, has_writer)) != 0)
        return rc;
    size = push_header_size(&q, n);
    for (size_t i = 0; i < n && size <= c->push_limit; i++)
        size += tensor_entry_size(&tensors[i], tensors[i].nbytes, 0, 0);
    if (n > PROTO_MAX_TENSORS || size > c->push_limit)
        return push_txn(c, model, step, &q, tensors, n, res);
    if ((items = malloc((n ? n : 1) * sizeof(*items))) == NULL)
        return fail(c, EMAD_ENOMEM, "push: out of memory for %zu tensors", n);
    for (size_t i = 0; i < n; i++)
        items[i] = (push_item){i, 0, tensors[i].nbytes};
    q.items = items;
    q.nitems = n;
    rc = call(c, OP_NAME(PUSH), build_push, &q, c->opts.timeout_ms, &r);
    free(items);
    if (rc == 0) {
        res->messages = 1;
        rc = push_result(c, &r, res);
        reply_free(&r);
    }
    return rc;
}

EMAD_EXTERN int
emad_push(emad_client *c, const char *model, uint64_t step, const emad_tensor *tensors, size_t n,
          emad_push_result *res)
{
    if (c == NULL)
        return EMAD_EINVAL;
    call_begin(c);
    return call_end(c, push(c, model, step, 0, 0, tensors, n, res));
}

EMAD_EXTERN int
emad_seed(emad_client *c, const char *model, uint64_t step, const emad_tensor *tensors,
          const int *as_dtypes, size_t n, emad_push_result *res)
{
    emad_push_result local;
    push_req q = {
        .model = model, .step = step, .seed = 1, .as_dtypes = as_dtypes, .tensors = tensors};
    push_item *items;
    size_t i = 0;
    reply r;
    int rc;

    if (c == NULL)
        return EMAD_EINVAL;
    call_begin(c);
    if (res == NULL)
        res = &local;
    memset(res, 0, sizeof(*res));
    if ((rc = push_validate(c, model, tensors, n, 0)) != 0)
        return call_end(c, rc);
    for (size_t k = 0; k < n; k++) {
        if (tensors[k].count != 0)
            return call_end(c, fail(c, EMAD_EINVAL, "tensor '%.200s': a seed takes whole tensors",
                                    tensors[k].name));
        if (as_dtypes != NULL && as_dtypes[k] != EMAD_DTYPE_INVALID &&
            emad_dtype_size(as_dtypes[k]) == 0)
            return call_end(c, fail(c, EMAD_EDTYPE, "tensor '%.200s': invalid as_dtype %d",
                                    tensors[k].name, as_dtypes[k]));
    }
    if ((items = malloc(n * sizeof(*items))) == NULL)
        return call_end(c, fail(c, EMAD_ENOMEM, "seed: out of memory"));
    while (i < n && rc == 0) {
        uint64_t size = push_header_size(&q, PROTO_MAX_TENSORS) + 16;
        size_t k = 0;
        emad_push_result part;

        while (i < n && k < PROTO_MAX_TENSORS) {
            uint64_t e = tensor_entry_size(&tensors[i], tensors[i].nbytes, 0, 0) + 16;
            if (size + e > c->push_limit)
                break;
            items[k++] = (push_item){i, 0, tensors[i].nbytes};
            size += e;
            i++;
        }
        if (k == 0) {
            rc = fail(c, EMAD_ELIMIT,
                      "tensor '%.200s' (%llu bytes) does not fit in one %llu-byte message: a "
                      "seed cannot split it",
                      tensors[i].name, (unsigned long long)tensors[i].nbytes,
                      (unsigned long long)c->push_limit);
            break;
        }
        q.items = items;
        q.nitems = k;
        if ((rc = call(c, OP_NAME(PUSH), build_push, &q, c->opts.timeout_ms, &r)) == 0) {
            rc = push_result(c, &r, &part);
            reply_free(&r);
            res->applied += part.applied;
            res->ignored += part.ignored;
            res->step = part.step;
            res->messages++;
        }
    }
    free(items);
    return call_end(c, rc);
}

EMAD_EXTERN int
emad_push_as(emad_client *c, const char *model, uint64_t step, uint32_t writer,
             const emad_tensor *tensors, size_t n, emad_push_result *res)
{
    if (c == NULL)
        return EMAD_EINVAL;
    call_begin(c);
    return call_end(c, push(c, model, step, 1, writer, tensors, n, res));
}

/* ---- pull ----------------------------------------------------------------------------------- */

/* Arguments of a pull request. */
typedef struct pull_req {
    const char *model;
    const char *const *names; /* NULL: all */
    size_t nnames;
    const emad_tensor *named; /* or names taken from these tensors */
    uint64_t max_reply;
    const emad_pull_options *opts; /* NULL: defaults */
} pull_req;

/* Name i of a pull request. */
static const char *
pull_name(const pull_req *q, size_t i)
{
    return q->names != NULL ? q->names[i] : q->named[i].name;
}

/* Pack a pull request. */
static void
build_pull(msgpack_packer *pk, const void *vctx)
{
    const pull_req *q = vctx;
    int with_names = q->names != NULL || q->named != NULL;
    int with_decay = q->opts != NULL && q->opts->decay >= 0.0;
    int with_dtype = q->opts != NULL && q->opts->dtype != EMAD_DTYPE_INVALID;

    pk_head(pk, OP_NAME(PULL), 3 + with_names + with_decay + with_dtype);
    pk_kv_str(pk, PROTO_KEY_MODEL, q->model);
    if (with_decay) {
        proto_pack_str(pk, PROTO_KEY_DECAY);
        msgpack_pack_double(pk, q->opts->decay);
    }
    if (with_dtype)
        pk_kv_str(pk, PROTO_KEY_DTYPE,
                  q->opts->dtype == EMAD_PULL_SHADOW ? PROTO_VAL_DTYPE_SHADOW : dtype_name(q->opts->dtype));
    if (with_names) {
        proto_pack_str(pk, PROTO_KEY_TENSORS);
        msgpack_pack_array(pk, q->nnames);
        for (size_t i = 0; i < q->nnames; i++)
            proto_pack_str(pk, pull_name(q, i));
    }
    proto_pack_kv_u64(pk, PROTO_KEY_MAX_REPLY_BYTES, q->max_reply);
    proto_pack_kv_u64(pk, PROTO_KEY_INLINE_BYTES, PULL_INLINE_BYTES);
}

/* Parse one tensor map of a pull or list reply into *t; EMAD_EPROTO if malformed. */
static int
parse_tdesc(emad_client *c, const msgpack_object *o, size_t idx, tdesc *t)
{
    const msgpack_object *shape, *data;
    const char *s;
    size_t len;
    uint64_t numel, nbytes;
    int rc;

    memset(t, 0, sizeof(*t));
    if (o->type != MSGPACK_OBJECT_MAP)
        return fail(c, EMAD_EPROTO, "reply tensors[%zu] is not a map", idx);
    if ((rc = rget_str(c, o, PROTO_KEY_NAME, &t->name, &t->name_len)) != 0)
        return rc;
    if (proto_check_tensor_name(t->name, t->name_len) != 0)
        return fail(c, EMAD_EPROTO, "reply tensors[%zu] has an invalid name", idx);
    if ((rc = rget_str(c, o, PROTO_KEY_KIND, &s, &len)) != 0)
        return rc;
    if ((t->kind = proto_kind_from_name(s, len)) < 0)
        return fail(c, EMAD_EPROTO, "reply tensors[%zu] has an unknown kind", idx);
    if ((rc = rget_str(c, o, PROTO_KEY_DTYPE, &s, &len)) != 0)
        return rc;
    if ((t->dtype = dtype_from_name(s, len)) == EMAD_DTYPE_INVALID)
        return fail(c, EMAD_EPROTO, "reply tensors[%zu] has an unknown dtype", idx);
    if ((rc = rget_array(c, o, PROTO_KEY_SHAPE, &shape)) != 0)
        return rc;
    if (shape->via.array.size > EMAD_MAX_NDIM)
        return fail(c, EMAD_EPROTO, "reply tensors[%zu] has too many dimensions", idx);
    t->ndim = shape->via.array.size;
    for (uint32_t d = 0; d < t->ndim; d++) {
        if (shape->via.array.ptr[d].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            return fail(c, EMAD_EPROTO, "reply tensors[%zu].shape[%u] is not a uint", idx, d);
        t->shape[d] = shape->via.array.ptr[d].via.u64;
    }
    if ((rc = rget_u64(c, o, PROTO_KEY_STEP, &t->step)) != 0 ||
        (rc = rget_u64(c, o, PROTO_KEY_NBYTES, &t->nbytes)) != 0)
        return rc;
    if (dtype_numel(t->shape, t->ndim, t->dtype, &numel, &nbytes) != 0 || nbytes != t->nbytes ||
        nbytes > SIZE_MAX / 2)
        return fail(c, EMAD_EPROTO, "reply tensors[%zu]: nbytes does not match shape and dtype",
                    idx);
    data = proto_map_get(o, PROTO_KEY_DATA);
    if (data != NULL) {
        if (data->type != MSGPACK_OBJECT_BIN || data->via.bin.size != t->nbytes)
            return fail(c, EMAD_EPROTO, "reply tensors[%zu]: data is not bin of nbytes", idx);
        t->data = data->via.bin.ptr;
    }
    return 0;
}

/* A pull in progress: the reply holding the metadata, and its parsed tensors. */
typedef struct pull_state {
    reply r;
    uint64_t step;
    int has_session;
    uint64_t session;
    tdesc *t;
    size_t n;
} pull_state;

/* Free a pull state; safe on a zeroed one. */
static void
pull_state_free(pull_state *p)
{
    reply_free(&p->r);
    free(p->t);
    p->t = NULL;
}

/* Send a pull and parse its reply into *p (metadata, and inline data if any). */
static int
pull_start(emad_client *c, const pull_req *q, pull_state *p)
{
    const msgpack_object *arr, *s;
    int rc;

    memset(p, 0, sizeof(*p));
    if ((rc = call(c, OP_NAME(PULL), build_pull, q, c->opts.timeout_ms, &p->r)) != 0)
        return rc;
    if ((rc = rget_u64(c, p->r.root, PROTO_KEY_STEP, &p->step)) != 0 ||
        (rc = rget_array(c, p->r.root, PROTO_KEY_TENSORS, &arr)) != 0)
        goto fail;
    if ((s = proto_map_get(p->r.root, PROTO_KEY_SESSION)) != NULL) {
        if (s->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
            rc = fail(c, EMAD_EPROTO, "reply key 'session' is not an unsigned integer");
            goto fail;
        }
        p->has_session = 1;
        p->session = s->via.u64;
    }
    p->n = arr->via.array.size;
    if ((p->t = calloc(p->n ? p->n : 1, sizeof(*p->t))) == NULL) {
        rc = fail(c, EMAD_ENOMEM, "pull: out of memory for %zu tensors", p->n);
        goto fail;
    }
    for (size_t i = 0; i < p->n; i++) {
        if ((rc = parse_tdesc(c, &arr->via.array.ptr[i], i, &p->t[i])) != 0)
            goto fail;
        if (!p->has_session && p->t[i].data == NULL && p->t[i].nbytes > 0) {
            rc = fail(c, EMAD_EPROTO, "pull: reply has neither inline data nor a session");
            goto fail;
        }
    }
    return 0;
fail:
    pull_state_free(p);
    return rc;
}

/* Best-effort release of a pull session (errors ignored; the daemon also expires it). */
static void
pull_release(emad_client *c, uint64_t session)
{
    simple_req q = {.op = OP_NAME(RELEASE), .key = PROTO_KEY_SESSION, .value = session};
    char saved[sizeof(c->err)];
    reply r;

    memcpy(saved, c->err, sizeof(saved));
    if (call_simple(c, &q, &r) == 0)
        reply_free(&r);
    memcpy(c->err, saved, sizeof(saved));
}

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

/* Pack a read request. */
static void
build_read(msgpack_packer *pk, const void *vctx)
{
    const read_req *q = vctx;

    pk_head(pk, OP_NAME(READ), 2);
    proto_pack_kv_u64(pk, PROTO_KEY_SESSION, q->session);
    proto_pack_str(pk, PROTO_KEY_RANGES);
    msgpack_pack_array(pk, q->n);
    for (size_t i = 0; i < q->n; i++) {
        msgpack_pack_array(pk, 3);
        msgpack_pack_uint64(pk, q->ranges[i].index);
        msgpack_pack_uint64(pk, q->ranges[i].offset);
        msgpack_pack_uint64(pk, q->ranges[i].len);
    }
}

/* Plan the next read batch of a session from cursor (i, off) into q (ranges of room kmax). */
static int
read_plan(emad_client *c, const pull_state *p, uint64_t budget, uint64_t kmax, size_t *i,
          uint64_t *off, read_req *q, read_range *ranges)
{
    uint64_t total = 0;

    q->session = p->session;
    q->ranges = ranges;
    q->n = 0;
    while (*i < p->n && q->n < kmax) {
        uint64_t rem = p->t[*i].nbytes - *off, isz = dtype_size(p->t[*i].dtype), avail, len;

        if (rem == 0) {
            (*i)++;
            *off = 0;
            continue;
        }
        if (total + READ_RANGE_OVERHEAD * (q->n + 1) >= budget)
            break;
        avail = budget - total - READ_RANGE_OVERHEAD * (q->n + 1);
        len = rem < avail ? rem : avail - avail % isz;
        if (len == 0)
            break;
        ranges[q->n++] = (read_range){*i, *off, len};
        total += len;
        *off += len;
        if (*off < p->t[*i].nbytes)
            break; /* the batch is full */
        (*i)++;
        *off = 0;
    }
    if (q->n == 0 && *i < p->n)
        return fail(c, EMAD_EINTERNAL, "pull: read budget too small");
    return 0;
}

/* Copy the ranges of a read reply into dst. */
static int
read_copy(emad_client *c, const reply *r, const read_req *q, void *const *dst)
{
    const msgpack_object *data;
    int rc;

    if ((rc = rget_array(c, r->root, PROTO_KEY_DATA, &data)) != 0)
        return rc;
    if (data->via.array.size != q->n)
        return fail(c, EMAD_EPROTO, "read: reply has %u ranges, asked for %zu",
                    data->via.array.size, q->n);
    for (size_t k = 0; k < q->n; k++) {
        const msgpack_object *b = &data->via.array.ptr[k];
        const read_range *rg = &q->ranges[k];
        if (b->type != MSGPACK_OBJECT_BIN || b->via.bin.size != rg->len)
            return fail(c, EMAD_EPROTO, "read: reply range %zu is not %llu bytes of bin", k,
                        (unsigned long long)rg->len);
        memcpy((char *)dst[rg->index] + rg->offset, b->via.bin.ptr, rg->len);
    }
    return 0;
}

/*
 * Copy every tensor of a pull into dst[i] (dst[i] holds p->t[i].nbytes):
 * from the inline data, or by reading the session in batches that fit the
 * reply cap, c->depth reads in flight, then releasing it.
 */
static int
pull_fetch(emad_client *c, pull_state *p, void *const *dst)
{
    uint64_t budget, kmax, off = 0, nsent = 0, ndone = 0;
    read_req qs[PIPELINE_MAX];
    uint32_t id;
    read_range *ranges;
    size_t i = 0;
    int rc = 0;

    if (!p->has_session) {
        for (size_t k = 0; k < p->n; k++)
            if (p->t[k].nbytes > 0)
                memcpy(dst[k], p->t[k].data, p->t[k].nbytes);
        return 0;
    }
    /* Reads of at most 4 MiB, like pushes: over TCP loopback nanomsg moves 2-4 MiB messages
     * fastest, and messages of 32 MiB and more cost fresh mmap'd buffers and page faults
     * (bench/RESULTS.md). */
    budget =
        (c->reply_eff < READ_BATCH_BYTES ? c->reply_eff : READ_BATCH_BYTES) - PROTO_REPLY_OVERHEAD;
    kmax = (c->msg_limit - READ_HEADER_WIRE) / READ_RANGE_WIRE;
    if (kmax > PROTO_MAX_RANGES)
        kmax = PROTO_MAX_RANGES;
    if (kmax > p->n + 1)
        kmax = p->n + 1; /* a batch holds each tensor at most once, plus one split */
    if ((ranges = malloc((size_t)kmax * c->depth * sizeof(*ranges))) == NULL) {
        pull_release(c, p->session);
        return fail(c, EMAD_ENOMEM, "pull: out of memory for read ranges");
    }
    while (rc == 0 && (i < p->n || nsent > ndone)) {
        if (i < p->n && nsent - ndone < c->depth) {
            size_t slot = nsent % c->depth;
            read_req *q = &qs[slot];
            if ((rc = read_plan(c, p, budget, kmax, &i, &off, q, ranges + slot * kmax)) != 0)
                break;
            if (q->n == 0)
                continue; /* only empty tensors were left */
            if ((rc = req_send(c, slot, OP_NAME(READ), build_read, q, now_ms() + c->opts.timeout_ms,
                               c->opts.timeout_ms, &id)) != 0)
                break;
            nsent++;
            continue;
        }
        {
            size_t slot = ndone % c->depth;
            reply r;
            if ((rc = req_wait(c, slot, OP_NAME(READ), now_ms() + c->opts.timeout_ms, c->opts.timeout_ms,
                               &r)) != 0)
                break;
            ndone++;
            rc = read_copy(c, &r, &qs[slot], dst);
            reply_free(&r);
        }
    }
    if (rc != 0)
        forget_inflight(c);
    free(ranges);
    pull_release(c, p->session);
    return rc;
}

/* Check the names argument of a pull; 0 or an error code. */
static int
check_names(emad_client *c, const char *const *names, size_t n)
{
    int rc;

    for (size_t i = 0; i < n; i++)
        if ((rc = check_tensor_name(c, names[i], i)) != 0)
            return rc;
    return 0;
}

/* Free a pulled model, its names and data; NULL and half-built models accepted. */
EMAD_EXTERN void
emad_model_free(emad_model *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; m->tensors != NULL && i < m->ntensors; i++) {
        free((void *)m->tensors[i].name);
        free(m->tensors[i].data);
    }
    free(m->tensors);
    free(m->name);
    free(m);
}

/* Build the library-owned model for a started pull and fetch its data into it. */
static int
pull_into_model(emad_client *c, const char *model, pull_state *p, emad_model **out)
{
    emad_model *m;
    void **dst = NULL;
    int rc;

    if ((m = calloc(1, sizeof(*m))) == NULL || (m->name = strdup(model)) == NULL ||
        (m->tensors = calloc(p->n ? p->n : 1, sizeof(*m->tensors))) == NULL ||
        (dst = calloc(p->n ? p->n : 1, sizeof(*dst))) == NULL)
        goto nomem;
    m->step = p->step;
    m->ntensors = p->n;
    for (size_t i = 0; i < p->n; i++) {
        emad_tensor *t = &m->tensors[i];
        const tdesc *d = &p->t[i];

        if ((t->name = strndup(d->name, d->name_len)) == NULL ||
            (t->data = malloc(d->nbytes ? d->nbytes : 1)) == NULL)
            goto nomem;
        t->kind = d->kind;
        t->dtype = d->dtype;
        t->ndim = d->ndim;
        memcpy(t->shape, d->shape, sizeof(t->shape));
        t->nbytes = d->nbytes;
        t->step = d->step;
        dst[i] = t->data;
    }
    if ((rc = pull_fetch(c, p, dst)) != 0)
        goto fail;
    free(dst);
    *out = m;
    return 0;
nomem:
    rc = fail(c, EMAD_ENOMEM, "pull: out of memory for the model");
    if (p->has_session)
        pull_release(c, p->session);
fail:
    free(dst);
    emad_model_free(m);
    return rc;
}

EMAD_EXTERN void
emad_pull_options_init(emad_pull_options *opts)
{
    if (opts != NULL) {
        opts->decay = -1.0;
        opts->dtype = EMAD_DTYPE_INVALID;
    }
}

/* Check pull options locally. */
static int
check_pull_options(emad_client *c, const emad_pull_options *o)
{
    if (o == NULL)
        return 0;
    if (o->decay > 1.0 || o->decay != o->decay)
        return fail(c, EMAD_ERANGE, "pull: decay %g is not in [0, 1]", o->decay);
    if (o->dtype != EMAD_DTYPE_INVALID && o->dtype != EMAD_PULL_SHADOW && o->dtype != EMAD_F32 &&
        o->dtype != EMAD_BF16 && o->dtype != EMAD_F16)
        return fail(c, EMAD_EDTYPE,
                    "pull: output dtype must be F32, BF16, F16 or EMAD_PULL_SHADOW");
    return 0;
}

EMAD_EXTERN int
emad_pull(emad_client *c, const char *model, const char *const *names, size_t n_names,
          emad_model **out)
{
    return emad_pull_ex(c, model, names, n_names, NULL, out);
}

EMAD_EXTERN int
emad_pull_into(emad_client *c, const char *model, emad_tensor *tensors, size_t n, uint64_t *step)
{
    return emad_pull_into_ex(c, model, tensors, n, NULL, step);
}

/* Pull into a library-owned model (see pull_into_model()). */
EMAD_EXTERN int
emad_pull_ex(emad_client *c, const char *model, const char *const *names, size_t n_names,
             const emad_pull_options *opts, emad_model **out)
{
    pull_req q = {.model = model, .names = names, .nnames = n_names, .opts = opts};
    pull_state p;
    int rc;

    if (c == NULL || out == NULL)
        return EMAD_EINVAL;
    call_begin(c);
    *out = NULL;
    if ((rc = check_model(c, model)) != 0)
        return call_end(c, rc);
    if (names != NULL && (rc = check_names(c, names, n_names)) != 0)
        return call_end(c, rc);
    if ((rc = check_pull_options(c, opts)) != 0)
        return call_end(c, rc);
    if (names == NULL)
        q.nnames = 0;
    q.max_reply = c->reply_ask;
    if ((rc = pull_start(c, &q, &p)) != 0)
        return call_end(c, rc);
    rc = pull_into_model(c, model, &p, out);
    pull_state_free(&p);
    return call_end(c, rc);
}

/* Pull the named tensors straight into the caller's buffers after checking every size. */
EMAD_EXTERN int
emad_pull_into_ex(emad_client *c, const char *model, emad_tensor *tensors, size_t n,
                  const emad_pull_options *opts, uint64_t *step)
{
    pull_req q = {.model = model, .named = tensors, .nnames = n, .opts = opts};
    pull_state p;
    void **dst;
    int rc;

    if (c == NULL)
        return EMAD_EINVAL;
    call_begin(c);
    if ((rc = check_model(c, model)) != 0)
        return call_end(c, rc);
    if (tensors == NULL || n == 0)
        return call_end(c, fail(c, EMAD_EINVAL, "pull_into of no tensors"));
    if ((rc = check_pull_options(c, opts)) != 0)
        return call_end(c, rc);
    for (size_t i = 0; i < n; i++) {
        if ((rc = check_tensor_name(c, tensors[i].name, i)) != 0)
            return call_end(c, rc);
        if (tensors[i].data == NULL && tensors[i].nbytes > 0)
            return call_end(c,
                            fail(c, EMAD_EINVAL, "tensor '%.200s': data is NULL", tensors[i].name));
    }
    q.max_reply = c->reply_ask;
    if ((rc = pull_start(c, &q, &p)) != 0)
        return call_end(c, rc);
    if (p.n != n) {
        rc = fail(c, EMAD_EPROTO, "pull: reply has %zu tensors, asked for %zu", p.n, n);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const tdesc *d = &p.t[i];
        if (d->name_len != strlen(tensors[i].name) ||
            memcmp(d->name, tensors[i].name, d->name_len) != 0) {
            rc = fail(c, EMAD_EPROTO, "pull: reply tensor %zu is not '%.200s'", i, tensors[i].name);
            goto out;
        }
        if (tensors[i].nbytes < d->nbytes) {
            rc = fail(c, EMAD_ESIZE, "tensor '%.200s': buffer of %llu bytes, the tensor has %llu",
                      tensors[i].name, (unsigned long long)tensors[i].nbytes,
                      (unsigned long long)d->nbytes);
            goto out;
        }
    }
    if ((dst = malloc(n * sizeof(*dst))) == NULL) {
        rc = fail(c, EMAD_ENOMEM, "pull: out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        dst[i] = tensors[i].data;
    rc = pull_fetch(c, &p, dst);
    p.has_session = 0; /* released by pull_fetch */
    free(dst);
    if (rc != 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        const tdesc *d = &p.t[i];
        tensors[i].kind = d->kind;
        tensors[i].dtype = d->dtype;
        tensors[i].ndim = d->ndim;
        memcpy(tensors[i].shape, d->shape, sizeof(tensors[i].shape));
        tensors[i].nbytes = d->nbytes;
        tensors[i].step = d->step;
    }
    if (step != NULL)
        *step = p.step;
out:
    if (p.has_session)
        pull_release(c, p.session);
    pull_state_free(&p);
    return call_end(c, rc);
}

/* ---- list / describe / stats ---------------------------------------------------------------- */

/* Fill an emad_model_info from a model map of a list reply. */
static int
parse_info(emad_client *c, const msgpack_object *o, emad_model_info *info)
{
    const msgpack_object *d;
    const char *name;
    size_t len;
    int rc;

    memset(info, 0, sizeof(*info));
    if (o->type != MSGPACK_OBJECT_MAP)
        return fail(c, EMAD_EPROTO, "list: model entry is not a map");
    if ((rc = rget_str(c, o, PROTO_KEY_NAME, &name, &len)) != 0)
        return rc;
    if (proto_check_model_name(name, len) != 0)
        return fail(c, EMAD_EPROTO, "list: invalid model name in reply");
    memcpy(info->name, name, len);
    info->name[len] = '\0';
    d = proto_map_get(o, PROTO_KEY_DECAY);
    if (d == NULL)
        return fail(c, EMAD_EPROTO, "reply key 'decay' is missing");
    if (d->type == MSGPACK_OBJECT_FLOAT32 || d->type == MSGPACK_OBJECT_FLOAT64)
        info->decay = d->via.f64;
    else if (d->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        info->decay = (double)d->via.u64;
    else
        return fail(c, EMAD_EPROTO, "reply key 'decay' is not a number");
    if ((rc = rget_u64(c, o, PROTO_KEY_STEP, &info->step)) != 0 ||
        (rc = rget_u64(c, o, PROTO_KEY_TENSORS, &info->ntensors)) != 0 ||
        (rc = rget_u64(c, o, PROTO_KEY_SHADOW_BYTES, &info->shadow_bytes)) != 0 ||
        (rc = rget_u64(c, o, PROTO_KEY_SNAPSHOT_STEP, &info->snapshot_step)) != 0)
        return rc;
    d = proto_map_get(o, PROTO_KEY_LAST_PUSH_AGE_MS);
    info->last_push_age_ms = -1;
    if (d != NULL && d->type == MSGPACK_OBJECT_POSITIVE_INTEGER && d->via.u64 <= INT64_MAX)
        info->last_push_age_ms = (int64_t)d->via.u64;
    return 0;
}

/* List the daemon's models into a malloc'd array. */
EMAD_EXTERN int
emad_list(emad_client *c, emad_model_info **out, size_t *n)
{
    simple_req q = {.op = OP_NAME(LIST)};
    const msgpack_object *arr;
    emad_model_info *v = NULL;
    reply r;
    int rc;

    if (c == NULL || out == NULL || n == NULL)
        return EMAD_EINVAL;
    call_begin(c);
    *out = NULL;
    *n = 0;
    if ((rc = call_simple(c, &q, &r)) != 0)
        return call_end(c, rc);
    if ((rc = rget_array(c, r.root, PROTO_KEY_MODELS, &arr)) != 0)
        goto out;
    if ((v = calloc(arr->via.array.size ? arr->via.array.size : 1, sizeof(*v))) == NULL) {
        rc = fail(c, EMAD_ENOMEM, "list: out of memory");
        goto out;
    }
    for (uint32_t i = 0; i < arr->via.array.size; i++)
        if ((rc = parse_info(c, &arr->via.array.ptr[i], &v[i])) != 0)
            goto out;
    *out = v;
    *n = arr->via.array.size;
    v = NULL;
out:
    free(v);
    reply_free(&r);
    return call_end(c, rc);
}

/* Free a tensor array from emad_describe() and its names; NULL accepted. */
EMAD_EXTERN void
emad_tensors_free(emad_tensor *tensors, size_t n)
{
    if (tensors == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free((void *)tensors[i].name);
    free(tensors);
}

/* Describe one model and its tensors (no data). */
EMAD_EXTERN int
emad_describe(emad_client *c, const char *model, emad_model_info *info, emad_tensor **tensors,
              size_t *n)
{
    simple_req q = {.op = OP_NAME(LIST), .model = model};
    const msgpack_object *m, *arr;
    emad_tensor *v = NULL;
    size_t count = 0;
    reply r;
    int rc;

    if (c == NULL || info == NULL || tensors == NULL || n == NULL)
        return EMAD_EINVAL;
    call_begin(c);
    *tensors = NULL;
    *n = 0;
    if ((rc = check_model(c, model)) != 0)
        return call_end(c, rc);
    if ((rc = call_simple(c, &q, &r)) != 0)
        return call_end(c, rc);
    if ((m = proto_map_get(r.root, PROTO_KEY_MODEL)) == NULL) {
        rc = fail(c, EMAD_EPROTO, "reply key 'model' is missing");
        goto out;
    }
    if ((rc = parse_info(c, m, info)) != 0 || (rc = rget_array(c, r.root, PROTO_KEY_TENSORS, &arr)) != 0)
        goto out;
    if ((v = calloc(arr->via.array.size ? arr->via.array.size : 1, sizeof(*v))) == NULL) {
        rc = fail(c, EMAD_ENOMEM, "describe: out of memory");
        goto out;
    }
    for (uint32_t i = 0; i < arr->via.array.size; i++) {
        tdesc d;
        if ((rc = parse_tdesc(c, &arr->via.array.ptr[i], i, &d)) != 0)
            goto out;
        if ((v[i].name = strndup(d.name, d.name_len)) == NULL) {
            rc = fail(c, EMAD_ENOMEM, "describe: out of memory");
            goto out;
        }
        count = i + 1;
        v[i].kind = d.kind;
        v[i].dtype = d.dtype;
        v[i].ndim = d.ndim;
        memcpy(v[i].shape, d.shape, sizeof(v[i].shape));
        v[i].nbytes = d.nbytes;
        v[i].step = d.step;
    }
    *tensors = v;
    *n = arr->via.array.size;
    v = NULL;
out:
    emad_tensors_free(v, count);
    reply_free(&r);
    return call_end(c, rc);
}

/* Read the daemon's counters into a malloc'd array (names longer than 63 bytes are cut). */
EMAD_EXTERN int
emad_stats(emad_client *c, emad_stat **out, size_t *n)
{
    simple_req q = {.op = OP_NAME(STATS)};
    const msgpack_object *m;
    emad_stat *v = NULL;
    size_t k = 0;
    reply r;
    int rc;

    if (c == NULL || out == NULL || n == NULL)
        return EMAD_EINVAL;
    call_begin(c);
    *out = NULL;
    *n = 0;
    if ((rc = call_simple(c, &q, &r)) != 0)
        return call_end(c, rc);
    m = proto_map_get(r.root, PROTO_KEY_STATS);
    if (m == NULL || m->type != MSGPACK_OBJECT_MAP) {
        rc = fail(c, EMAD_EPROTO, "reply key 'stats' is %s (expected a map)",
                  m == NULL ? "missing" : "not a map");
        goto out;
    }
    if ((v = calloc(m->via.map.size ? m->via.map.size : 1, sizeof(*v))) == NULL) {
        rc = fail(c, EMAD_ENOMEM, "stats: out of memory");
        goto out;
    }
    /* Counters with a non-string name or a non-uint value are skipped (later versions). */
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *key = &m->via.map.ptr[i].key, *val = &m->via.map.ptr[i].val;
        size_t len;

        if (key->type != MSGPACK_OBJECT_STR || val->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            continue;
        len = key->via.str.size < sizeof(v[k].name) ? key->via.str.size : sizeof(v[k].name) - 1;
        memcpy(v[k].name, key->via.str.ptr, len);
        v[k].name[len] = '\0';
        v[k].value = val->via.u64;
        k++;
    }
    *out = v;
    *n = k;
    v = NULL;
out:
    free(v);
    reply_free(&r);
    return call_end(c, rc);
}

/* A model's configuration, from `list` with the model's name. */
EMAD_EXTERN int
emad_get_config(emad_client *c, const char *model, emad_model_config *cfg)
{
    simple_req q = {.op = OP_NAME(LIST), .model = model};
    const msgpack_object *m, *conf;
    emaconf_strings *strings = NULL;
    char why[256];
    reply r;
    int rc;

    if (c == NULL || cfg == NULL)
        return EMAD_EINVAL;
    call_begin(c);
    emaconf_init(cfg);
    if ((rc = check_model(c, model)) != 0)
        return call_end(c, rc);
    if ((rc = call_simple(c, &q, &r)) != 0)
        return call_end(c, rc);
    if ((m = proto_map_get(r.root, PROTO_KEY_MODEL)) == NULL ||
        (conf = proto_map_get(m, PROTO_KEY_CONFIG)) == NULL || conf->type != MSGPACK_OBJECT_MAP) {
        rc = fail(c, EMAD_EPROTO, "reply key 'model.config' is missing or not a map");
        goto out;
    }
    if ((strings = malloc(sizeof(*strings))) == NULL) {
        rc = fail(c, EMAD_ENOMEM, "get_config: out of memory");
        goto out;
    }
    if (emaconf_unpack(conf, cfg, strings, why, sizeof(why)) != 0) {
        emaconf_init(cfg);
        rc = fail(c, EMAD_EPROTO, "reply 'model.config': %s", why);
        goto out;
    }
    /* Own the pattern strings (emaconf_copy duplicates them). */
    {
        emad_model_config tmp = *cfg;
        emaconf_copy(cfg, &tmp);
    }
out:
    free(strings);
    reply_free(&r);
    return call_end(c, rc);
}

/* Ask for a durable snapshot and wait for it (the daemon replies once the files are fsync'd). */
EMAD_EXTERN int
emad_snapshot(emad_client *c, const char *model, uint64_t *step)
{
    simple_req q = {.op = OP_NAME(SNAPSHOT), .model = model};
    uint64_t s = 0;
    reply r;
    int rc;

    if (c == NULL)
        return EMAD_EINVAL;
    call_begin(c);
    if (model != NULL && (rc = check_model(c, model)) != 0)
        return call_end(c, rc);
    if ((rc = call_simple(c, &q, &r)) != 0)
        return call_end(c, rc);
    rc = rget_u64(c, r.root, PROTO_KEY_STEP, &s);
    reply_free(&r);
    if (rc == 0 && step != NULL)
        *step = s;
    return call_end(c, rc);
}

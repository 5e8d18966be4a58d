/*
 * transport.c - how libemad talks to the daemon: raw nanomsg REQ sockets,
 * request ids, packing a request into an exactly sized message, sending
 * it, receiving and decoding its reply, pipelining over several
 * connections, and the client's life (connect with hello, close).
 *
 * The chunks of a large push and the reads of a large pull can be
 * pipelined over several connections (EMAD_PIPELINE_DEPTH, at most
 * PIPELINE_MAX; the extra sockets are opened on first use), one request in
 * flight on each, so the daemon averages (or packs) one while the next is
 * on the wire. One request per connection because a nanomsg REP socket
 * silently drops a reply to a connection that is still busy sending the
 * previous one. The sockets are raw so that the client numbers its own
 * requests (the SP header's request id) and nothing is ever resent behind
 * its back; a reply to a request the client gave up on (timed out) is
 * recognised by its id and dropped. Requests are msgpack maps packed with a
 * msgpack_packer whose write callback fills an nn_allocmsg buffer sized
 * exactly beforehand (computed for pushes, by a counting pass that copies
 * no data otherwise), then sent zero-copy; tensor data is copied once, from
 * the caller's memory into that buffer. Replies are received zero-copy
 * (NN_MSG), checked with proto_prescan() and decoded in place with
 * msgpack_unpack_next(): the decoded objects, including BIN payloads,
 * point into the received buffer, which stays alive until the reply is
 * freed.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nanomsg/nn.h>
#include <nanomsg/reqrep.h>
#include <nanomsg/tcp.h>

#include "client.h"
#include "common/dtype.h"

/*
 * Output of the two-pass packer: counts when p is NULL, writes into
 * p[0..cap) otherwise. With a key, the body of a frame: each 1 MiB piece
 * is tagged (into tags) as it is written, in the same pass over memory as
 * the copy (auth_piece_stream_copy).
 */
typedef struct wbuf {
    char *p;
    size_t len, cap;
    int overflow;
    const unsigned char *key; /* NULL: no tags */
    uint64_t seq;
    unsigned char *tags;
    size_t tagged;        /* pieces tagged so far */
    const emad_client *c; /* a routed client's requests carry epoch and shard */
    auth_piece_stream ps; /* the piece being written */
} wbuf;

/*
 * The piece being packed (plen bytes, written) is complete: its tag, from
 * the stream, or (when the stream could not be made) from the bytes written.
 */
static void
wbuf_piece_done(wbuf *w, size_t plen)
{
    unsigned char *tag = w->tags + w->tagged * AUTH_TAG_BYTES;

    if (w->ps.ctx == NULL || auth_piece_stream_final(&w->ps, tag) != 0)
        auth_piece_tag(w->key, w->seq, (uint32_t)w->tagged, w->p + w->tagged * AUTH_PIECE_BYTES,
                       plen, tag);
    w->tagged++;
}

/* msgpack_packer write callback for wbuf; refuses to write past cap, tags full pieces. */
static int
wbuf_write(void *data, const char *buf, size_t len)
{
    wbuf *w = data;

    if (w->p == NULL) {
        w->len += len;
        return 0;
    }
    if (len > w->cap - w->len) {
        w->overflow = 1;
        return -1;
    }
    if (w->key == NULL) {
        memcpy(w->p + w->len, buf, len);
        w->len += len;
        return 0;
    }
    while (len > 0) {
        size_t piece_end = (w->tagged + 1) * AUTH_PIECE_BYTES;
        size_t n = piece_end - w->len < len ? piece_end - w->len : len;

        if (w->len == w->tagged * AUTH_PIECE_BYTES)
            (void)auth_piece_stream_begin(&w->ps, w->key, w->seq, (uint32_t)w->tagged);
        auth_piece_stream_copy(&w->ps, w->p + w->len, buf, n); /* a plain copy if begin failed */
        w->len += n;
        buf += n;
        len -= n;
        if (w->len == piece_end)
            wbuf_piece_done(w, AUTH_PIECE_BYTES);
    }
    return 0;
}

/* Pack "key": "value". */
void
pk_kv_str(msgpack_packer *pk, const char *key, const char *value)
{
    proto_pack_str(pk, key);
    proto_pack_str(pk, value);
}

/* Pack the map header of a request with n entries besides v and op, then v and op. */
void
pk_head(msgpack_packer *pk, int op, size_t n)
{
    const wbuf *w = pk->data;
    int routed = w->c != NULL && w->c->routed;

    msgpack_pack_map(pk, 2 + n + (routed ? 2 : 0));
    proto_pack_kv_u64(pk, PROTO_KEY_V, PROTO_VERSION);
    pk_kv_str(pk, PROTO_KEY_OP, proto_op_name(op));
    if (routed) {
        proto_pack_kv_u64(pk, PROTO_KEY_EPOCH, w->c->route_epoch);
        proto_pack_kv_u64(pk, PROTO_KEY_SHARD, w->c->route_shard);
    }
}

/* Bytes the routing keys add to a request of c (a push map stays a fixmap: under 16 keys). */
size_t
route_size(const emad_client *c)
{
    if (!c->routed)
        return 0;
    return CODEC_SIZE_KEY(PROTO_KEY_EPOCH) + codec_size_uint(c->route_epoch) +
           CODEC_SIZE_KEY(PROTO_KEY_SHARD) + codec_size_uint(c->route_shard);
}

/*
 * Size of the message build() produces: computed for pushes (a counting
 * pass over 2,000 small tensors visited some 40,000 objects and cost as
 * much as packing them), counted by a dry run of build() otherwise.
 */
static size_t
packed_size(const emad_client *c, build_fn build, const void *ctx)
{
    wbuf w = {.c = c};
    msgpack_packer pk;

    if (build == build_push)
        return push_packed_size(ctx) + route_size(c);

    msgpack_packer_init(&pk, &w, wbuf_write);
    build(&pk, ctx);
    return w.len;
}

/* Milliseconds on a monotonic clock. */
int64_t
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
void
reply_free(reply *r)
{
    if (r->msg != NULL) {
        msgpack_unpacked_destroy(&r->u);
        nn_freemsg(r->msg);
        r->msg = NULL;
    }
    r->body = NULL;
    r->root = NULL;
    if (r->unchecked)
        auth_wipe(r->rx, sizeof(r->rx));
    r->unchecked = 0;
}

/*
 * Decode a received message of len bytes held in r->msg: pre-scan it,
 * unpack it in place, check it is a version-1 reply map and whether it
 * reports success. Returns 0 (r->root set) or an error code; r owns the
 * message either way.
 */
int
reply_decode(emad_client *c, int op, reply *r, size_t len)
{
    const msgpack_object *v, *ok, *e;
    const char *why, *data = r->body != NULL ? r->body : r->msg;
    size_t off = 0;
    int rc;

    if ((rc = proto_prescan(data, len, &why)) != 0)
        return fail(c, EMAD_EPROTO, "%s: reply is not a valid msgpack message: %s",
                    proto_op_name(op), why);
    rc = msgpack_unpack_next(&r->u, data, len, &off);
    if (rc == MSGPACK_UNPACK_NOMEM_ERROR)
        return fail(c, EMAD_ENOMEM, "%s: out of memory decoding the reply", proto_op_name(op));
    if (rc != MSGPACK_UNPACK_SUCCESS || off != len || r->u.data.type != MSGPACK_OBJECT_MAP)
        return fail(c, EMAD_EPROTO, "%s: reply is not a msgpack map", proto_op_name(op));
    r->root = &r->u.data;
    v = proto_map_get(r->root, PROTO_KEY_V);
    if (v == NULL || v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return fail(c, EMAD_EPROTO, "%s: reply has no protocol version", proto_op_name(op));
    if (v->via.u64 != PROTO_VERSION)
        return fail(c, EMAD_EVERSION, "%s: the daemon replied with protocol version %llu, not %d",
                    proto_op_name(op), (unsigned long long)v->via.u64, PROTO_VERSION);
    ok = proto_map_get(r->root, PROTO_KEY_OK);
    if (ok == NULL || ok->type != MSGPACK_OBJECT_BOOLEAN)
        return fail(c, EMAD_EPROTO, "%s: reply has no 'ok'", proto_op_name(op));
    if (ok->via.boolean)
        return 0;
    e = proto_map_get(r->root, PROTO_KEY_ERROR);
    if (e == NULL || e->type != MSGPACK_OBJECT_MAP)
        return fail(c, EMAD_EPROTO, "%s: error reply without an 'error' map", proto_op_name(op));
    return reply_error(c, op, e);
}

/*
 * Pack build(ctx) into an exactly sized nanomsg message *out of *out_len
 * bytes. When connection k has a session, the message is a frame: the
 * header, then the body, whose pieces are tagged as they are packed; *seq
 * gets its sequence number (0 for a plain message).
 */
static int
pack_request(emad_client *c, size_t k, int plain, int op, build_fn build, const void *ctx,
             void **out, size_t *out_len, uint64_t *seq)
{
    size_t len = packed_size(c, build, ctx), hdr = 0;
    msgpack_packer pk;
    wbuf w = {.c = c};
    void *msg;
    int rc;

    if (!plain && c->sess[k].id != 0) {
        hdr = AUTH_FRAME_HEADER;
        if ((rc = session_tags_reserve(c, len)) != 0)
            return rc;
        w.key = c->sess[k].tx;
        w.seq = c->sess[k].seq + 1;
        w.tags = c->tags;
    }
    if (len > c->msg_limit)
        return fail(c, EMAD_ELIMIT, "%s: request of %zu bytes exceeds the daemon's limit (%llu)",
                    proto_op_name(op), len, (unsigned long long)c->msg_limit);
    if ((msg = nn_allocmsg(len + hdr, 0)) == NULL)
        return fail(c, EMAD_ENOMEM, "%s: cannot allocate a %zu-byte message", proto_op_name(op),
                    len + hdr);
    w.p = (char *)msg + hdr;
    w.cap = len;
    msgpack_packer_init(&pk, &w, wbuf_write);
    build(&pk, ctx);
    if (w.overflow || w.len != len) {
        auth_piece_stream_abort(&w.ps);
        nn_freemsg(msg);
        return fail(c, EMAD_EINTERNAL, "%s: request packed to a different size", proto_op_name(op));
    }
    if (w.key != NULL && w.tagged < auth_piece_count(len)) /* the last piece: shorter, or empty */
        wbuf_piece_done(&w, w.len - w.tagged * AUTH_PIECE_BYTES);
    *seq = 0;
    if (hdr != 0) {
        session_seal(c, k, msg, len);
        *seq = c->sess[k].seq;
    }
    *out = msg;
    *out_len = len + hdr;
    return 0;
}

/* Forget every request in flight: their late replies are dropped when they come. */
void
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

/* Connections of socket s that broke or were dropped so far. */
static uint64_t
lost_connections(int s)
{
    return nn_get_statistic(s, NN_STAT_BROKEN_CONNECTIONS) +
           nn_get_statistic(s, NN_STAT_DROPPED_CONNECTIONS);
}

/*
 * How long a routed client's next wait on connection k may block (a
 * slice), or -1 with an error when the replica is gone: no connection
 * since `since` for connect_timeout_ms, or (in_flight) a connection lost
 * after the request went.
 */
static int
routed_slice(emad_client *c, size_t k, int op, int in_flight, int64_t *since)
{
    int64_t now = now_ms();

    if (in_flight && lost_connections(c->socks[k]) != c->lost[k])
        return fail(c, EMAD_ECONNECT, "%s: the connection to %s broke: the request is lost",
                    proto_op_name(op), c->url);
    if (nn_get_statistic(c->socks[k], NN_STAT_CURRENT_CONNECTIONS) > 0)
        *since = now;
    else if (now - *since >= c->opts.connect_timeout_ms)
        return fail(c, EMAD_ECONNECT, "%s: no connection to %s for %d ms", proto_op_name(op),
                    c->url, c->opts.connect_timeout_ms);
    return ROUTED_SLICE_MS;
}

/*
 * Send a request packed by build(ctx) on connection k with the next
 * request id (*id), waiting at most until deadline (ms) for the
 * connection to take it. The connection must have no request in flight.
 */
int
req_send(emad_client *c, size_t k, int op, build_fn build, const void *ctx, int64_t deadline,
         int timeout_ms, uint32_t *id)
{
    return req_send_ex(c, k, op, build, ctx, deadline, timeout_ms, id, 0);
}

static int req_transmit(emad_client *c, size_t k, int op, prepared *p, int64_t deadline,
                        int timeout_ms, uint32_t *id);

/* req_send(), as a plain request if plain (the handshake), else framed when k has a session. */
int
req_send_ex(emad_client *c, size_t k, int op, build_fn build, const void *ctx, int64_t deadline,
            int timeout_ms, uint32_t *id, int plain)
{
    prepared p = {0};
    int rc;

    if (c->pending[k] != 0)
        return fail(c, EMAD_EINTERNAL, "%s: connection %zu has a request in flight",
                    proto_op_name(op), k);
    if ((rc = pipe_open(c, k)) != 0)
        return rc;
    if (!plain && (rc = session_ensure(c, k)) != 0)
        return rc;
    if ((rc = pack_request(c, k, plain, op, build, ctx, &p.msg, &p.len, &p.seq)) != 0)
        return rc;
    return req_transmit(c, k, op, &p, deadline, timeout_ms, id);
}

/*
 * Send the packed request p on connection k (idle) with the next request
 * id (*id), waiting at most until deadline for the connection to take it.
 * p is consumed (sent or freed) either way.
 */
static int
req_transmit(emad_client *c, size_t k, int op, prepared *p, int64_t deadline, int timeout_ms,
             uint32_t *id)
{
    unsigned char cbuf[NN_CMSG_SPACE(sizeof(size_t) + sizeof(uint32_t))];
    struct nn_cmsghdr *cm = (struct nn_cmsghdr *)(void *)cbuf;
    unsigned char *hd;
    struct nn_iovec iov;
    struct nn_msghdr hdr;
    size_t splen = sizeof(uint32_t);
    void *msg;
    int64_t left, since = now_ms();
    int rc, slice = ROUTED_SLICE_MS;

    if (c->pending[k] != 0) {
        nn_freemsg(p->msg);
        return fail(c, EMAD_EINTERNAL, "%s: connection %zu has a request in flight",
                    proto_op_name(op), k);
    }
    msg = p->msg;
    p->msg = NULL;
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
        if (c->routed && (slice = routed_slice(c, k, op, 0, &since)) < 0) {
            nn_freemsg(msg);
            return EMAD_ECONNECT;
        }
        if (c->routed && left > slice && left > 1)
            left = slice;
        (void)set_int(c->socks[k], NN_SOL_SOCKET, NN_SNDTIMEO, (int)left);
        iov.iov_base = &msg;
        iov.iov_len = NN_MSG;
        memset(&hdr, 0, sizeof(hdr));
        hdr.msg_iov = &iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = cbuf;
        hdr.msg_controllen = sizeof(cbuf);
        if (c->routed)
            c->lost[k] = lost_connections(c->socks[k]);
        if (nn_sendmsg(c->socks[k], &hdr, 0) >= 0)
            break; /* nanomsg owns msg now */
        rc = nn_errno();
        if ((rc == EINTR || (c->routed && rc == ETIMEDOUT)) && now_ms() < deadline)
            continue;
        nn_freemsg(msg);
        return nn_fail(c, rc, op, "send", timeout_ms);
    }
    c->pending[k] = *id;
    c->sent_seq[k] = p->seq;
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
int
req_wait(emad_client *c, size_t k, int op, int64_t deadline, int timeout_ms, reply *r)
{
    received m;
    int rc;

    memset(r, 0, sizeof(*r));
    if ((rc = req_recv(c, k, op, deadline, timeout_ms, &m)) != 0)
        return rc;
    return req_open(c, op, &m, r);
}

/*
 * Wait until deadline for the reply to the request in flight on
 * connection k and take it as it came (*m, with what checking it needs);
 * the connection is idle afterwards, successful or not, so the next
 * request can go out before this reply is checked and decoded (req_open).
 */
int
req_recv(emad_client *c, size_t k, int op, int64_t deadline, int timeout_ms, received *m)
{
    uint32_t id = c->pending[k];
    void *buf = NULL;
    int64_t left, since = now_ms();
    int n = -1, rc, slice = ROUTED_SLICE_MS;

    memset(m, 0, sizeof(*m));
    m->seq = c->sent_seq[k];
    c->pending[k] = 0;
    c->sent_seq[k] = 0;
    if (id == 0)
        return fail(c, EMAD_EINTERNAL, "%s: no request in flight on connection %zu",
                    proto_op_name(op), k);
    while (buf == NULL) {
        unsigned char ctrl[256];
        struct nn_iovec iov = {&buf, NN_MSG};
        struct nn_msghdr hdr;
        uint32_t got;

        left = deadline - now_ms();
        if (left < 1)
            return nn_fail(c, ETIMEDOUT, op, "receive", timeout_ms);
        if (c->routed) {
            if ((slice = routed_slice(c, k, op, 1, &since)) < 0)
                return EMAD_ECONNECT;
            if (left > slice)
                left = slice;
        }
        (void)set_int(c->socks[k], NN_SOL_SOCKET, NN_RCVTIMEO, (int)left);
        memset(&hdr, 0, sizeof(hdr));
        hdr.msg_iov = &iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = ctrl;
        hdr.msg_controllen = sizeof(ctrl);
        if ((n = nn_recvmsg(c->socks[k], &hdr, 0)) < 0) {
            rc = nn_errno();
            buf = NULL;
            if (rc == EINTR || (c->routed && rc == ETIMEDOUT && now_ms() < deadline))
                continue;
            return nn_fail(c, rc, op, "receive", timeout_ms);
        }
        got = reply_id(ctrl, sizeof(ctrl));
        if (got == id)
            break;
        nn_freemsg(buf); /* the reply to a request we gave up on */
        buf = NULL;
    }
    m->msg = buf;
    m->len = (size_t)n;
    m->session = c->sess[k].id;
    memcpy(m->rx, c->sess[k].rx, sizeof(m->rx));
    return 0;
}

/*
 * Check (when it answers a frame, unless check is 0: req_open_unchecked)
 * and decode a reply taken by req_recv into *r (free with reply_free); m
 * is consumed either way.
 */
static int
open_reply(emad_client *c, int op, received *m, reply *r, int check)
{
    size_t len = m->len;
    int rc, plain = 0;

    memset(r, 0, sizeof(*r));
    r->msg = m->msg;
    m->msg = NULL;
    msgpack_unpacked_init(&r->u);
    c->auth_stale = 0;
    if (m->seq != 0 && (plain = session_open_reply(c, m, r, &len, check)) < 0) {
        auth_wipe(m->rx, sizeof(m->rx));
        reply_free(r);
        return plain;
    }
    auth_wipe(m->rx, sizeof(m->rx));
    rc = reply_decode(c, op, r, len);
    if (rc != 0 && r->unchecked) {
        rc = session_unchecked_error(c, r, op, rc);
        auth_wipe(r->rx, sizeof(r->rx));
        r->unchecked = 0;
    }
    if (plain && rc != EMAD_EAUTH) {
        reply_free(r);
        return fail(c, EMAD_EPROTO, "%s: reply authentication failed: the reply is not a frame",
                    proto_op_name(op));
    }
    if (rc != 0) {
        reply_free(r);
        return rc;
    }
    return 0;
}

int
req_open(emad_client *c, int op, received *m, reply *r)
{
    return open_reply(c, op, m, r, 1);
}

int
req_open_unchecked(emad_client *c, int op, received *m, reply *r)
{
    return open_reply(c, op, m, r, 0);
}

/*
 * One round trip: pack build(ctx) into an exactly sized nanomsg message,
 * send it (zero-copy) and wait for the reply, all within timeout_ms.
 * Returns 0 with *r holding a successful reply (free with reply_free), or
 * a negative code with the last error set and *r empty.
 */
int
call(emad_client *c, int op, build_fn build, const void *ctx, int timeout_ms, reply *r)
{
    int64_t deadline = now_ms() + timeout_ms;
    uint32_t id = 0;
    int rc;

    for (int attempt = 0;; attempt++) {
        memset(r, 0, sizeof(*r));
        c->pending[0] = 0; /* whatever was in flight was given up on */
        if ((rc = req_send(c, 0, op, build, ctx, deadline, timeout_ms, &id)) != 0)
            return rc;
        rc = req_wait(c, 0, op, deadline, timeout_ms, r);
        /* A session the daemon no longer knows (expired, or the daemon restarted): the
         * request was refused before it was looked at, so a new session may send it again. */
        if (rc != EMAD_EAUTH || !c->auth_stale || attempt > 0)
            return rc;
        session_drop(c, 0);
    }
}

/* Pack a simple_req. */
void
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
int
call_simple(emad_client *c, const simple_req *q, reply *r)
{
    return call(c, q->op, build_simple, q, c->opts.timeout_ms, r);
}

/* Pack a hello request. */
static void
build_hello(msgpack_packer *pk, const void *ctx)
{
    (void)ctx;
    pk_head(pk, PROTO_OP_HELLO, 0);
}

/* Read a hello reply: check the protocol and learn the daemon's limits into c. */
int
hello_parse(emad_client *c, const reply *r)
{
    const msgpack_object *auth = proto_map_get(r->root, PROTO_KEY_AUTH);
    uint64_t proto, max, hdr;
    int rc;

    c->server_auth = auth != NULL && auth->type == MSGPACK_OBJECT_BOOLEAN && auth->via.boolean;
    if ((rc = rget_u64(c, r->root, PROTO_KEY_PROTOCOL, &proto)) != 0 ||
        (rc = rget_u64(c, r->root, PROTO_KEY_MAX_MESSAGE_BYTES, &max)) != 0)
        return rc;
    if (proto != PROTO_VERSION)
        return fail(c, EMAD_EVERSION, "the daemon speaks protocol %llu, this library %d",
                    (unsigned long long)proto, PROTO_VERSION);
    if (max < PROTO_MIN_MAX_MESSAGE)
        return fail(c, EMAD_EPROTO, "the daemon's max_message_bytes %llu is below the minimum %u",
                    (unsigned long long)max, PROTO_MIN_MAX_MESSAGE);
    if (max > PROTO_MAX_MAX_MESSAGE)
        max = PROTO_MAX_MAX_MESSAGE;
    c->server_max = max;
    /* A routed client's requests carry the routing keys (route_size(): under 32 bytes); a
     * frame's header comes on top of the body (reply_ask has it taken off already). */
    hdr = c->auth ? AUTH_FRAME_HEADER : 0;
    c->msg_limit = max - SP_HEADER_SLACK - (c->routed ? 32 : 0) - hdr;
    c->push_limit = c->opts.chunk_bytes < c->msg_limit ? c->opts.chunk_bytes : c->msg_limit;
    c->reply_eff = c->reply_ask < max - hdr ? c->reply_ask : max - hdr;
    return 0;
}

/*
 * With credentials, after hello: the daemon must authenticate (talking
 * plain would let whoever answers in its place read and change
 * everything), and connection 0 gets its session now, so that a wrong key
 * fails here.
 */
static int
hello_auth(emad_client *c)
{
    if (!c->auth)
        return 0;
    if (!c->server_auth)
        return fail(c, EMAD_EAUTH,
                    "the daemon does not authenticate (it runs without --auth-file), but "
                    "credentials were given (user %s): refusing to talk to it unauthenticated "
                    "(leave out --key-file / EMAD_KEY_FILE for such a daemon)",
                    c->user);
    return session_ensure(c, 0);
}

/* Send hello and learn the daemon's protocol and limits. */
int
client_hello(emad_client *c)
{
    reply r;
    int rc;

    rc = call(c, PROTO_OP_HELLO, build_hello, NULL, c->opts.connect_timeout_ms, &r);
    if (rc == EMAD_ETIMEDOUT)
        return fail(c, EMAD_ECONNECT, "no reply to hello within %d ms (is emad running there?)",
                    c->opts.connect_timeout_ms);
    if (rc != 0)
        return rc;
    rc = hello_parse(c, &r);
    reply_free(&r);
    return rc != 0 ? rc : hello_auth(c);
}

/* Open a REQ socket to url, set its options, say hello; on failure *out is NULL and no detail
 * survives. */
EMAD_EXTERN int
emad_connect(emad_client **out, const char *url, const emad_options *opts)
{
    emad_options o;

    if (out == NULL)
        return EMAD_EINVAL;
    *out = NULL;
    creds_connect_clear();
    if (opts != NULL)
        o = *opts;
    else
        emad_options_init(&o);
    if (url == NULL)
        url = EMAD_DEFAULT_URL;
    if (o.timeout_ms <= 0 || o.connect_timeout_ms <= 0 || o.chunk_bytes < PROTO_MIN_MAX_MESSAGE ||
        o.max_reply_bytes < PROTO_MIN_MAX_MESSAGE || o.max_reply_bytes > PROTO_MAX_MAX_MESSAGE)
        return creds_connect_fail(EMAD_EINVAL, "invalid emad_options (timeouts, sizes)");
    if (o.chunk_bytes > PROTO_MAX_MAX_MESSAGE)
        o.chunk_bytes = PROTO_MAX_MAX_MESSAGE;
    if (strncmp(url, "cluster:", 8) == 0)
        return cluster_connect_url(out, url + 8, &o);
    return client_open(out, url, &o, 1);
}

/*
 * A new client for url (options checked): sockets open, credentials
 * loaded, and with say_hello the daemon contacted (a cluster says hello
 * to its replicas later, client_hello(), all at once).
 */
int
client_open(emad_client **out, const char *url, const emad_options *opts, int say_hello)
{
    emad_client *c;
    const char *env;
    emad_options o = *opts;
    int rc;

    *out = NULL;
    client_heap_policy();
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
            return creds_connect_fail(EMAD_EINVAL, "EMAD_PIPELINE_DEPTH must be 1..%d, not '%.32s'",
                                      PIPELINE_MAX, env);
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
    if (say_hello && (rc = client_hello(c)) != 0)
        goto fail;
    /* Credentials after hello (which is open to everyone), so that a daemon that is not
     * there is reported as such; the handshake now, so that a wrong key fails here. */
    if ((rc = creds_load(c, &o)) != 0)
        goto fail;
    c->opts.user = c->opts.key_file = NULL; /* borrowed from the caller */
    if (c->auth) {
        c->msg_limit -= AUTH_FRAME_HEADER;
        c->push_limit = c->opts.chunk_bytes < c->msg_limit ? c->opts.chunk_bytes : c->msg_limit;
        c->reply_ask -= AUTH_FRAME_HEADER;
        c->reply_eff -= AUTH_FRAME_HEADER;
    }
    if (say_hello && (rc = hello_auth(c)) != 0)
        goto fail;
    *out = c;
    return 0;
fail:
    if (c->err[0] != '\0')
        (void)creds_connect_fail(rc, "%s", c->err);
    else
        (void)creds_connect_fail(rc, "cannot connect to %s: %s", url, emad_strerror(rc));
    emad_close(c);
    return rc;
}

/* Close the socket (pending messages are dropped) and free the client. */
EMAD_EXTERN void
emad_close(emad_client *c)
{
    if (c == NULL)
        return;
    cluster_free(c->cl);
    layouts_free(c);
    for (size_t k = 0; k < PIPELINE_MAX; k++)
        if (c->socks[k] >= 0)
            (void)nn_close(c->socks[k]);
    creds_wipe(c);
    free(c->tags);
    free(c->url);
    free(c);
}

/* The daemon's max_message_bytes from hello (0 for NULL). */
EMAD_EXTERN uint64_t
emad_server_max_message_bytes(const emad_client *c)
{
    return c != NULL ? c->server_max : 0;
}

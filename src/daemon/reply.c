/*
 * reply.c - replies: the two-pass packer and the one error path.
 *
 * Replies are packed twice with the same code: first into a counting
 * writer to learn the exact size, then into an nn_allocmsg buffer of that
 * size, so a reply is one allocation and tensor data is copied once, from
 * the shadow into the message. The routing header of the request is handed
 * back to nanomsg with the reply (nn_sendmsg takes both chunks on success;
 * on failure the caller frees the header).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nanomsg/nn.h>

#include "common/dtype.h"
#include "common/errors.h"
#include "base/log.h"
#include "common/names.h"
#include "base/xmalloc.h"
#include "daemon/server_int.h"

/* msgpack_packer write callback for wbuf. */
static int
wbuf_write(void *data, const char *buf, size_t len)
{
    wbuf *w = data;

    if (w->p != NULL)
        memcpy(w->p + w->len, buf, len);
    w->len += len;
    return 0;
}

/* Pack the reply map header and its "v" and "ok" entries; nextra entries follow. */
void
reply_pack_head(msgpack_packer *pk, int ok, size_t nextra)
{
    msgpack_pack_map(pk, 2 + nextra);
    proto_pack_kv_u64(pk, PROTO_KEY_V, PROTO_VERSION);
    proto_pack_str(pk, PROTO_KEY_OK);
    if (ok)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
}

/* Size of the reply build() produces. */
size_t
reply_page_count(size_t first, size_t total, uint64_t limit, uint64_t max_reply, size_t used,
                 build_fn pack_item, const void *(*item)(const void *items, size_t i),
                 const void *items)
{
    size_t count = 0;

    while (first + count < total && count < limit) {
        size_t sz = reply_size(pack_item, item(items, first + count));
        if (used + sz > max_reply && count > 0)
            break;
        used += sz;
        count++;
    }
    return count;
}

size_t
reply_size(build_fn build, const void *ctx)
{
    wbuf w = {NULL, 0, NULL, NULL, 0, 0};
    msgpack_packer pk;

    msgpack_packer_init(&pk, &w, wbuf_write);
    build(&pk, ctx);
    return w.len;
}

/* Hand msg (taken) to nanomsg with routing header *ctrl (NULL once nanomsg owns it). */
int
reply_transmit(server *srv, int op, uint64_t owner, void *msg, size_t len, void **ctrl)
{
    struct nn_iovec iov;
    struct nn_msghdr hdr;

    iov.iov_base = &msg;
    iov.iov_len = NN_MSG;
    memset(&hdr, 0, sizeof(hdr));
    hdr.msg_iov = &iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = ctrl;
    hdr.msg_controllen = NN_MSG;
    if (nn_sendmsg(srv->sock, &hdr, NN_DONTWAIT) < 0) {
        log_warn("event=reply_dropped op=%s error=\"%s\"",
                 proto_op_name(op) ? proto_op_name(op) : "?", nn_strerror(nn_errno()));
        nn_freemsg(msg);
        srv->counters[COUNTER_REPLIES_DROPPED]++;
        return -1; /* the routing header stays the caller's */
    }
    *ctrl = NULL; /* nanomsg owns it now */
    budget_reply_sent(store_budget(srv->store), owner, len, server_now(srv));
    srv->counters[COUNTER_BYTES_OUT] += len;
    return 0;
}

/* Bytes of room a reply to r needs in front of its body. */
size_t
reply_head(const req *r)
{
    return r->auth.session != 0 && r->capture == NULL ? AUTH_FRAME_HEADER : 0;
}

/* Send a packed reply message with the request's routing header (which it takes). */
void
reply_send_msg(req *r, void *msg, size_t len)
{
    if (reply_head(r) != 0) {
        authgate_send(r, msg, len);
        return;
    }
    if (reply_transmit(r->srv, r->op, r->owner, msg, len, &r->ctrl) == 0)
        r->reply_len = len;
}

/*
 * Pack build(ctx) into a new nanomsg message of exactly its size (with
 * w->defer set, tensor data is left to tasks); NULL if out of memory.
 */
void *
reply_pack(build_fn build, const void *ctx, wbuf *w, size_t head, size_t *len)
{
    msgpack_packer pk;
    void *msg;

    *len = reply_size(build, ctx) + head;
    if ((msg = nn_allocmsg(*len, 0)) == NULL)
        return NULL;
    w->p = (char *)msg + head;
    w->len = 0;
    msgpack_packer_init(&pk, w, wbuf_write);
    build(&pk, ctx);
    return msg;
}

int
reply_check_budget(req *r, uint64_t bytes, store_err *err)
{
    store *s = r->srv->store;

    return store_budget_check(s, BUDGET_REPLIES, r->owner,
                              budget_reply_need(store_budget(s), r->owner, bytes), err);
}

/* Build the reply into a message and send it with the request's routing header. */
void
reply_send(req *r, build_fn build, const void *ctx)
{
    server *srv = r->srv;
    wbuf w = {NULL, 0, NULL, NULL, 0, 0};
    msgpack_packer pk;
    size_t len;
    void *msg;

    if (r->capture != NULL) {
        len = reply_size(build, ctx);
        w.p = *r->capture = xmalloc(len);
        msgpack_packer_init(&pk, &w, wbuf_write);
        build(&pk, ctx);
        r->reply_len = len;
        srv->counters[COUNTER_BYTES_OUT] += len; /* counted as on the socket, so stats agree */
        return;
    }
    if ((msg = reply_pack(build, ctx, &w, reply_head(r), &len)) == NULL) {
        log_error("event=reply_alloc_failed bytes=%zu", len);
        srv->counters[COUNTER_REPLIES_DROPPED]++;
        return;
    }
    reply_send_msg(r, msg, len);
}

/* Error reply context. */
typedef struct err_ctx {
    const store_err *err;
    int reason; /* enum authgate_reason, or -1 */
    const shard_place *shard; /* cluster mode: its epoch and shard go into EMAD_EMOVED */
} err_ctx;

/* Pack an error reply. */
static void
build_error(msgpack_packer *pk, const void *vctx)
{
    const store_err *e = ((const err_ctx *)vctx)->err;
    const char *name = errors_name(e->code);
    int with_tensor = e->tensor[0] != '\0';
    int with_supported = e->code == EMAD_EVERSION;
    int reason = ((const err_ctx *)vctx)->reason;
    const shard_place *moved = e->code == EMAD_EMOVED ? ((const err_ctx *)vctx)->shard : NULL;

    reply_pack_head(pk, 0, 1);
    proto_pack_str(pk, PROTO_KEY_ERROR);
    msgpack_pack_map(pk,
                     3 + with_tensor + with_supported + (reason >= 0) + shard_moved_count(moved));
    proto_pack_kv_u64(pk, PROTO_KEY_CODE, (uint64_t)-e->code);
    proto_pack_str(pk, PROTO_KEY_NAME);
    proto_pack_str(pk, name != NULL ? name : "EMAD_EINTERNAL");
    proto_pack_str(pk, PROTO_KEY_MESSAGE);
    proto_pack_str(pk, e->message);
    if (with_tensor) {
        proto_pack_str(pk, PROTO_KEY_TENSOR);
        proto_pack_str(pk, e->tensor);
    }
    if (reason >= 0) {
        proto_pack_str(pk, PROTO_KEY_REASON);
        proto_pack_str(pk, authgate_reason_name(reason));
    }
    if (with_supported) {
        proto_pack_str(pk, PROTO_KEY_SUPPORTED);
        msgpack_pack_array(pk, 1);
        msgpack_pack_uint64(pk, PROTO_VERSION);
    }
    shard_pack_moved(pk, moved);
}

/*
 * Make a NUL-terminated reply string valid UTF-8 in place: error messages
 * quote model and tensor names straight from the request, which may be any
 * bytes, and vsnprintf may cut a multi-byte character at the buffer's end.
 * Every byte that does not start a valid character (or is a control
 * character) becomes '?'.
 */
static void
utf8_scrub(char *s)
{
    size_t len = strlen(s);

    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)s[i];
        size_t n = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : 4;

        if (n > len - i || names_check_tensor(s + i, n) != 0)
            s[i++] = '?';
        else
            i += n;
    }
}

/* The one error path: log, count and reply. */
void
reply_error(req *r, const store_err *err)
{
    server *srv = r->srv;
    store_err scrubbed = *err, *e = &scrubbed;
    const char *name = errors_name(e->code);
    int code = -e->code;
    int reason = (e->code == EMAD_EAUTH || e->code == EMAD_EDENIED) ? r->auth_reason : -1;
    err_ctx ctx = {e, reason, srv->shard};

    /* Replies carry UTF-8 strings only (docs/PROTOCOL.md): clean the message, and
     * name a tensor only if its name is a valid one. */
    utf8_scrub(e->message);
    if (names_check_tensor(e->tensor, strlen(e->tensor)) != 0)
        e->tensor[0] = '\0';

    srv->counters[COUNTER_ERRORS]++;
    if (code >= EMAD_ERRNO_FIRST && code <= EMAD_ERRNO_LAST)
        srv->err_counts[code - EMAD_ERRNO_FIRST]++;
    srv->op_errors[r->op]++;
    if (r->op == PROTO_OP_PUSH || r->op == PROTO_OP_COMMIT) {
        srv->counters[COUNTER_PUSHES_REJECTED]++;
        if (code >= EMAD_ERRNO_FIRST && code <= EMAD_ERRNO_LAST)
            srv->push_rejects[code - EMAD_ERRNO_FIRST]++;
    }
    if (reason < 0) /* authentication failures are logged, rate-limited, by authgate_fail() */
        log_warn("event=request_error op=%s code=%s tensor=%s message=%s",
                 proto_op_name(r->op) ? proto_op_name(r->op) : "?", name ? name : "?",
                 LOG_STR(e->tensor), LOG_STR(e->message));
    reply_send(r, build_error, &ctx);
}

/* Count the handling time of an accepted request since t0 (uv_hrtime) in its histogram. */
static void
observe_latency(server *srv, int op, uint64_t t0)
{
    double s = (double)(uv_hrtime() - t0) / 1e9;

    if (op == PROTO_OP_PUSH || op == PROTO_OP_COMMIT)
        metrics_hist_observe(&srv->push_hist, s);
    else if (op == PROTO_OP_PULL || op == PROTO_OP_READ)
        metrics_hist_observe(&srv->pull_hist, s);
}

/* Count an answered request: an error is replied and counted, a success counted and timed. */
void
reply_finish(req *r, int rc, const store_err *err)
{
    if (rc != 0) {
        reply_error(r, err);
        return;
    }
    r->srv->op_ok[r->op]++;
    observe_latency(r->srv, r->op, r->t0);
}

/* A reply with no keys beyond v and ok. */
void
reply_build_empty(msgpack_packer *pk, const void *ctx)
{
    (void)ctx;
    reply_pack_head(pk, 1, 0);
}

/* Pack `len` bytes of a view tensor's data from byte offset `off`, in its pull dtype. */
void
reply_pack_data(msgpack_packer *pk, const view_tensor *vt, uint64_t off, uint64_t len)
{
    wbuf *w = pk->data;

    msgpack_pack_bin(pk, len);
    if (w->p != NULL && w->defer != NULL && len > 0) {
        size_t osz = dtype_size(vt->dtype), ssz = dtype_size(vt->sdtype);
        task t = {.op = TASK_COPY, .dst = w->p + w->len, .n = len};
        if (vt->sdtype == vt->dtype) {
            t.src = (const char *)vt->data->data + off;
        } else {
            t.op = TASK_CONVERT;
            t.dtype = (uint8_t)vt->dtype;
            t.sdtype = (uint8_t)vt->sdtype;
            t.src = (const char *)vt->data->data + off / osz * ssz;
            t.n = len / osz;
        }
        task_list_add(w->defer, &t);
        if (w->nblobs == w->cap) {
            w->cap = w->cap ? w->cap * 2 : 8;
            w->blobs = xreallocarray(w->blobs, w->cap, sizeof(*w->blobs));
        }
        store_blob_ref(vt->data);
        w->blobs[w->nblobs++] = vt->data;
        w->len += len;
        return;
    }
    if (vt->sdtype == vt->dtype) {
        msgpack_pack_bin_body(pk, (const char *)vt->data->data + off, len);
        return;
    }
    /* Another dtype than the data's: convert on the way out (offsets are element-aligned). */
    if (w->p != NULL) {
        size_t osz = dtype_size(vt->dtype), ssz = dtype_size(vt->sdtype);
        const char *src = (const char *)vt->data->data + off / osz * ssz;
        (void)dtype_convert(w->p + w->len, vt->dtype, src, vt->sdtype, len / osz);
    }
    w->len += len;
}

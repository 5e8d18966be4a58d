/*
 * authgate.c - the authenticated frame on the daemon's side (see
 * server_int.h and docs/PROTOCOL.md "Authentication"): what comes in is
 * checked before its body is decoded, what goes out to an authenticated
 * request is sealed, and every authentication failure is answered, counted
 * and logged here.
 *
 * A body of AUTHGATE_ASYNC_BYTES or more is MACed on the libuv threadpool:
 * its 1 MiB pieces are split among up to ASYNC_MAX_PARTS work items (the
 * pieces are independent), queued behind and beside the averaging of
 * earlier chunks, and the loop computes the final tag from the piece tags
 * when the last part is done. The message is held meanwhile; the loop goes
 * on serving. Small bodies are MACed on the loop (a few microseconds).
 *
 * A large chunk of a single-writer transaction the session's user owns is
 * not held: it is staged at once and its MAC is one more job of the
 * transaction (chunk_job(), chunk_checked()), see docs/SECURITY.md: one
 * work item, queued once the chunk has been answered.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nanomsg/nn.h>

#include "base/log.h"
#include "base/xmalloc.h"
#include "daemon/server_int.h"

#define AUTHGATE_ASYNC_BYTES (1u << 20) /* smaller bodies are MACed on the loop */
#define AUTHGATE_LOG_INTERVAL_MS 1000   /* at most one failure line per reason this often */

static const char *const reason_names[AUTHGATE_REASONS] = {
#define XX(id, name) name,
    AUTHGATE_REASON_MAP(XX)
#undef XX
};

static const int reason_counters[AUTHGATE_REASONS] = {
    COUNTER_AUTH_FAIL_REQUIRED,
    COUNTER_AUTH_FAIL_NO_SESSION,
    COUNTER_AUTH_FAIL_EXPIRED,
    COUNTER_AUTH_FAIL_BAD_TAG,
    COUNTER_AUTH_FAIL_REPLAY,
    COUNTER_AUTH_FAIL_BAD_SIGNATURE,
    COUNTER_AUTH_FAIL_UNKNOWN_HANDSHAKE,
    COUNTER_AUTH_FAIL_DENIED,
};

const char *
authgate_reason_name(int reason)
{
    return reason >= 0 && reason < AUTHGATE_REASONS ? reason_names[reason] : "?";
}

int
authgate_fail(req *r, store_err *err, int reason, const char *fmt, ...)
{
    server *srv = r->srv;
    uint64_t now = server_now(srv);
    va_list ap;

    err->code = reason == AUTHGATE_DENIED ? EMAD_EDENIED : EMAD_EAUTH;
    err->tensor[0] = '\0';
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    r->auth_reason = reason;
    srv->counters[reason_counters[reason]]++;
    if (srv->auth_log_ms[reason] == 0 ||
        now - srv->auth_log_ms[reason] >= AUTHGATE_LOG_INTERVAL_MS || srv->loop == NULL) {
        log_warn("event=auth_failed reason=%s op=%s user=%s message=%s suppressed=%llu",
                 reason_names[reason], proto_op_name(r->op) ? proto_op_name(r->op) : "?",
                 r->user != NULL ? r->user->name : "-", LOG_STR(err->message),
                 (unsigned long long)srv->auth_log_skipped[reason]);
        srv->auth_log_ms[reason] = now != 0 ? now : 1;
        srv->auth_log_skipped[reason] = 0;
    } else {
        srv->auth_log_skipped[reason]++;
        srv->counters[COUNTER_AUTH_FAIL_LOGS_SUPPRESSED]++;
    }
    return err->code;
}

/* Answer a message that failed before its body was decoded: a plain error reply. */
static void
gate_reply(server *srv, void **ctrl, size_t len, int code, int reason, const char *message)
{
    store_err err;
    req r;

    memset(&r, 0, sizeof(r));
    r.srv = srv;
    r.ctrl = *ctrl;
    r.now_ms = server_now(srv);
    r.auth_reason = -1;
    srv->counters[COUNTER_REQUESTS]++;
    srv->counters[COUNTER_BYTES_IN] += len;
    if (reason >= 0) {
        (void)authgate_fail(&r, &err, reason, "%s", message);
    } else {
        err.code = code;
        err.tensor[0] = '\0';
        snprintf(err.message, sizeof(err.message), "%s", message);
    }
    reply_error(&r, &err);
    *ctrl = r.ctrl;
}

/*
 * Hand a verified frame's body to the dispatcher as request `seq` of
 * session s (or a transaction chunk's whose tag check `verify` runs beside).
 */
static void
gate_accept(server *srv, authsess *s, const struct auth_header *h, void **body, size_t len,
            void **ctrl, struct mac_job *verify)
{
    req_auth a = {s->id, h->seq, verify};

    if (h->seq > s->last_seq) {
        s->last_seq = h->seq;
        memcpy(s->last_tag, h->tag, AUTH_TAG_BYTES);
        free(s->reply);
        s->reply = NULL;
        s->reply_len = 0;
    } else {
        srv->counters[COUNTER_AUTH_RESENDS]++; /* a resend whose reply was not kept: again */
    }
    s->reply_state = AUTHSESS_REPLY_PENDING;
    server_handle(srv, (const char *)*body + AUTH_FRAME_HEADER, len - AUTH_FRAME_HEADER, ctrl, body,
                  &a);
}

static int gate_resend(server *srv, authsess *s, void **ctrl);

/* A MAC of a frame's body computed on the threadpool. */
typedef struct mac_job {
    server *srv;
    unsigned char key[AUTH_KEY_BYTES];
    unsigned char *frame; /* the nanomsg message */
    size_t len;
    void *ctrl;
    struct auth_header h; /* verify: the received header */
    int seal;             /* 1: a reply to seal and send; 0: a request to verify */
    int op;               /* seal: the reply's op, for the dropped-reply count */
    uint64_t owner;       /* seal: charged for the reply in flight */
    size_t npieces;
    unsigned char *tags; /* npieces piece tags */
    int parts, left;
    /* verify beside staging: a transaction chunk, handled before its tag is known */
    store_job *job;    /* the check's job in the transaction (NULL: verify first) */
    uint64_t prev_seq; /* the session's last accepted frame before this one */
    unsigned char prev_tag[AUTH_TAG_BYTES];
    struct async_req *held; /* the averaging job that holds the frame, or NULL */
    int done;               /* the check is done (the holder frees the frame and the job) */
    uv_work_t work[ASYNC_MAX_PARTS];
} mac_job;

/* Threadpool: the piece tags of this part's share of the pieces. */
static void
mac_work(uv_work_t *w)
{
    mac_job *j = w->data;
    size_t part = (size_t)(w - j->work);
    size_t lo = j->npieces * part / (size_t)j->parts,
           hi = j->npieces * (part + 1) / (size_t)j->parts;
    const unsigned char *body = j->frame + AUTH_FRAME_HEADER;
    size_t blen = j->len - AUTH_FRAME_HEADER;

    for (size_t i = lo; i < hi; i++) {
        size_t off = i * AUTH_PIECE_BYTES;
        size_t n = blen - off < AUTH_PIECE_BYTES ? blen - off : AUTH_PIECE_BYTES;
        auth_piece_tag(j->key, j->h.seq, (uint32_t)i, body + off, n, j->tags + i * AUTH_TAG_BYTES);
    }
}

static void
mac_job_free(mac_job *j)
{
    auth_wipe(j->key, sizeof(j->key));
    free(j->tags);
    free(j);
}

void
authgate_verify_held(mac_job *j, struct async_req *a)
{
    j->held = a;
}

void
authgate_verify_release(mac_job *j, void *frame)
{
    j->held = NULL;
    if (!j->done)
        return; /* mac_done() frees it */
    nn_freemsg(frame);
    mac_job_free(j);
}

/*
 * Loop: the tag check of a transaction chunk that was staged before it
 * (see chunk_job()). A bad tag fails the transaction (nothing of it is
 * ever published), is counted as bad_tag, takes back the frame's sequence
 * number if no later frame was accepted, and makes the frame's reply, if
 * it is still due, the plain EAUTH error. Frees the frame unless the
 * averaging still holds it. Returns 1 if j must not be freed yet.
 */
static int
chunk_checked(server *srv, mac_job *j, const unsigned char tag[AUTH_TAG_BYTES])
{
    authsess *s = authsess_find(srv->auth, j->h.session);
    store_err err;

    if (auth_tag_equal(tag, j->h.tag) != 0) {
        req r;
        req_auth ra = {j->h.session, j->h.seq, NULL};

        memset(&r, 0, sizeof(r));
        r.srv = srv;
        r.op = PROTO_OP_PUSH;
        r.auth_reason = -1;
        (void)authgate_fail(&r, &err, AUTHGATE_BAD_TAG,
                            "a chunk's tag does not verify (altered, or MACed with another key): "
                            "its transaction fails, nothing of it is applied");
        store_job_fail(j->job, &err);
        if (s != NULL && s->last_seq == j->h.seq && auth_tag_equal(s->last_tag, j->h.tag) == 0) {
            s->last_seq = j->prev_seq;
            memcpy(s->last_tag, j->prev_tag, AUTH_TAG_BYTES);
            free(s->reply);
            s->reply = NULL;
            s->reply_len = 0;
            s->reply_state = AUTHSESS_REPLY_NONE;
        }
        ops_push_unseal(srv, &ra);
        if (j->held != NULL)
            async_push_unseal(j->held);
    }
    (void)store_job_done(srv->store, j->job, uv_now(srv->loop), &err);
    j->job = NULL;
    ops_push_run_parked(srv);
    if (j->held != NULL) {
        j->done = 1;
        return 1;
    }
    nn_freemsg(j->frame);
    return 0;
}

/* Loop: a verified (or not) request, or a sealed reply, once every part is done. */
static void
mac_done(uv_work_t *w, int status)
{
    mac_job *j = w->data;
    server *srv = j->srv;
    unsigned char tag[AUTH_TAG_BYTES];
    void *body = j->frame, *ctrl = j->ctrl;
    authsess *s;

    (void)status;
    if (--j->left > 0)
        return;
    uv_update_time(srv->loop);
    auth_frame_tag(j->key, j->frame, j->tags, j->npieces, tag);
    if (j->job != NULL) {
        srv->last_request_ms = uv_now(srv->loop);
        srv->trimmed = 0;
        if (chunk_checked(srv, j, tag))
            auth_wipe(j->key, sizeof(j->key)); /* freed by authgate_verify_release() */
        else
            mac_job_free(j);
        return;
    }
    if (j->seal) {
        memcpy(j->frame + AUTH_OFF_TAG, tag, AUTH_TAG_BYTES);
        if ((s = authsess_find(srv->auth, j->h.session)) != NULL && s->last_seq == j->h.seq)
            authsess_keep_reply(s, j->frame, j->len);
        (void)reply_transmit(srv, j->op, j->owner, j->frame, j->len, &ctrl);
        body = NULL;
    } else if ((s = authsess_find(srv->auth, j->h.session)) == NULL) {
        gate_reply(srv, &ctrl, j->len, 0, AUTHGATE_NO_SESSION, "the session was closed");
    } else if (auth_tag_equal(tag, j->h.tag) != 0) {
        gate_reply(srv, &ctrl, j->len, 0, AUTHGATE_BAD_TAG,
                   "the request's tag does not verify (altered, or MACed with another key)");
    } else if (j->h.seq < s->last_seq ||
               (j->h.seq == s->last_seq && auth_tag_equal(j->h.tag, s->last_tag) != 0)) {
        gate_reply(srv, &ctrl, j->len, 0, AUTHGATE_REPLAY,
                   "sequence number not above the last accepted one (replayed or reordered)");
    } else if (j->h.seq == s->last_seq && s->reply_state != AUTHSESS_REPLY_NONE &&
               gate_resend(srv, s, &ctrl)) {
        /* a resend that came while the first copy was being verified */
    } else {
        gate_accept(srv, s, &j->h, &body, j->len, &ctrl, NULL);
    }
    if (body != NULL)
        nn_freemsg(body);
    if (ctrl != NULL)
        nn_freemsg(ctrl);
    srv->last_request_ms = uv_now(srv->loop);
    srv->trimmed = 0;
    mac_job_free(j);
}

/*
 * Set up the MAC of frame[0..len) under key in parts: as many as the
 * threadpool has CPUs, or one for a check beside staging (chunk_accept()).
 */
static void
mac_prepare(server *srv, mac_job *j, const unsigned char key[AUTH_KEY_BYTES], int parts)
{
    j->srv = srv;
    memcpy(j->key, key, AUTH_KEY_BYTES);
    j->npieces = auth_piece_count(j->len - AUTH_FRAME_HEADER);
    j->tags = xcalloc(j->npieces, AUTH_TAG_BYTES);
    j->parts = parts < 1 ? 1 : parts;
    if ((size_t)j->parts > j->npieces)
        j->parts = (int)j->npieces;
    j->left = j->parts;
}

/* Queue a prepared MAC's parts on the threadpool; mac_done() continues. */
static void
mac_queue(server *srv, mac_job *j)
{
    for (int k = 0; k < j->parts; k++) {
        j->work[k].data = j;
        (void)uv_queue_work(srv->loop, &j->work[k], mac_work, mac_done);
    }
}

/* Start the MAC of frame[0..len) under key, in parts on every CPU; mac_done() continues. */
static void
mac_start(server *srv, mac_job *j, const unsigned char key[AUTH_KEY_BYTES])
{
    mac_prepare(srv, j, key, srv->parts);
    mac_queue(srv, j);
}

/* Send again the kept reply of s to a resent request. */
static void resend_kept(server *srv, authsess *s, void **ctrl);

/*
 * A frame with the last accepted sequence number and tag of s is nanomsg's
 * REQ resend: answered with the kept reply, or dropped while that reply is
 * still coming (it answers the resend too). Returns 1 if done so, 0 if the
 * frame must be handled (again: the reply was too large to keep).
 */
static int
gate_resend(server *srv, authsess *s, void **ctrl)
{
    if (s->reply_state == AUTHSESS_REPLY_PENDING) {
        srv->counters[COUNTER_AUTH_RESENDS]++;
        return 1; /* the caller frees the message and its header */
    }
    if (s->reply_state == AUTHSESS_REPLY_KEPT) {
        srv->counters[COUNTER_AUTH_RESENDS]++;
        resend_kept(srv, s, ctrl);
        return 1;
    }
    return 0;
}

static void
resend_kept(server *srv, authsess *s, void **ctrl)
{
    void *msg = nn_allocmsg(s->reply_len, 0);
    req_auth auth = {s->id, s->last_seq, NULL};

    if (msg == NULL) {
        srv->counters[COUNTER_REPLIES_DROPPED]++;
        return;
    }
    memcpy(msg, s->reply, s->reply_len);
    (void)reply_transmit(srv, PROTO_OP_INVALID, ops_auth_owner_id(srv, &auth, 0), msg, s->reply_len,
                         ctrl);
}

/*
 * A frame whose body is a chunk of a single-writer transaction that s's
 * user owns only writes into the transaction's own unpublished shadows: it
 * is staged at once and its tag checked beside its averaging, as one more
 * job of the transaction (its commit waits for it). Returns that job, or
 * NULL for any other body (verified before it is decoded).
 */
static store_job *
chunk_job(server *srv, const authsess *s, const void *b, size_t n)
{
    decode_arena arena;
    msgpack_object root;
    store_err err;
    const char *why, *op, *owner;
    size_t oplen;
    uint64_t txn;
    int has_txn = 0;
    store_job *job = NULL;

    decode_arena_init(&arena);
    if (decode_message(&arena, b, n, &root, &why) == 0 && root.type == MSGPACK_OBJECT_MAP &&
        request_get_str(&root, PROTO_KEY_OP, &op, &oplen, &err) == 0 &&
        proto_op_from_name(op, oplen) == PROTO_OP_PUSH &&
        request_get_u64(&root, PROTO_KEY_TXN, &txn, &has_txn, &err) == 0 && has_txn &&
        (owner = authsess_owner(srv->auth, 't', txn, NULL)) != NULL && strcmp(owner, s->user) == 0)
        job = store_txn_job(srv->store, txn);
    decode_arena_fini(&arena);
    return job;
}

/*
 * Stage chunk frame j (taken) now and check its tag beside its averaging.
 * Nothing waits for the check but the transaction's commit, so it is
 * queued after the chunk was answered and its averaging queued, as one
 * work item: the reply goes out before any pool thread wakes for the
 * check, and the check takes one CPU, leaving the other to the next
 * chunk's transfer (bench/RESULTS.md, "bench_auth").
 */
static void
chunk_accept(server *srv, authsess *s, mac_job *j)
{
    void *body = j->frame, *ctrl = j->ctrl;

    j->prev_seq = s->last_seq;
    memcpy(j->prev_tag, s->last_tag, AUTH_TAG_BYTES);
    mac_prepare(srv, j, s->rx, 1);
    j->ctrl = NULL;
    gate_accept(srv, s, &j->h, &body, j->len, &ctrl, j);
    if (ctrl != NULL)
        nn_freemsg(ctrl);
    /* body == NULL: the averaging holds the frame (authgate_verify_held()); else j frees it */
    mac_queue(srv, j); /* mac_done() runs on the loop after this returns */
}

void
authgate_receive(server *srv, void **body, size_t len, void **ctrl)
{
    const unsigned char *f = *body;
    struct auth_header h;
    authsess *s;

    if (!auth_is_frame(f, len)) {
        server_handle(srv, *body, len, ctrl, body, NULL); /* refused there unless hello or a
                                                             handshake op */
        return;
    }
    if (srv->auth == NULL) {
        gate_reply(srv, ctrl, len, 0, AUTHGATE_NO_SESSION,
                   "this daemon runs without authentication (no --auth-file): send "
                   "unframed messages");
        return;
    }
    if (auth_header_decode(f, len, &h) != 0) {
        gate_reply(srv, ctrl, len, EMAD_EMALFORMED, -1,
                   "authenticated frame shorter than its 36-byte header and a body, or with a bad "
                   "magic");
        return;
    }
    if (len - AUTH_FRAME_HEADER > srv->cfg.max_message_bytes) {
        gate_reply(srv, ctrl, len, EMAD_ELIMIT, -1, "request body exceeds max_message_bytes");
        return;
    }
    if ((s = authsess_find(srv->auth, h.session)) == NULL) {
        gate_reply(srv, ctrl, len, 0, AUTHGATE_NO_SESSION,
                   "no such session (never opened, closed, or dropped by a key change): "
                   "handshake again");
        return;
    }
    if (authsess_expired(s, server_now(srv))) {
        authsess_close(srv->auth, s);
        gate_reply(srv, ctrl, len, 0, AUTHGATE_EXPIRED, "the session has expired: handshake again");
        return;
    }
    if (h.seq == s->last_seq && s->reply_state != AUTHSESS_REPLY_NONE &&
        auth_tag_equal(h.tag, s->last_tag) == 0) {
        /* nanomsg's REQ resent the request: the same reply, or the one still coming. */
        if (gate_resend(srv, s, ctrl))
            return;
        /* AUTHSESS_REPLY_GONE: verified and handled again (only large read replies get here). */
    } else if (h.seq <= s->last_seq) {
        gate_reply(srv, ctrl, len, 0, AUTHGATE_REPLAY,
                   "sequence number not above the last accepted one (replayed or reordered)");
        return;
    }
    if (len - AUTH_FRAME_HEADER >= AUTHGATE_ASYNC_BYTES && srv->loop != NULL && !srv->closing) {
        mac_job *j = xcalloc(1, sizeof(*j));
        j->frame = *body;
        j->len = len;
        j->ctrl = *ctrl;
        j->h = h;
        *body = NULL;
        *ctrl = NULL;
        if (h.seq > s->last_seq &&
            (j->job = chunk_job(srv, s, f + AUTH_FRAME_HEADER, len - AUTH_FRAME_HEADER)) != NULL) {
            chunk_accept(srv, s, j);
            return;
        }
        mac_start(srv, j, s->rx);
        return;
    }
    if (auth_frame_verify(s->rx, f, len) != 0) {
        gate_reply(srv, ctrl, len, 0, AUTHGATE_BAD_TAG,
                   "the request's tag does not verify (altered, or MACed with another key)");
        return;
    }
    gate_accept(srv, s, &h, body, len, ctrl, NULL);
}

void
authgate_send(req *r, void *msg, size_t len)
{
    server *srv = r->srv;
    static const unsigned char zero[AUTH_TAG_BYTES];
    authsess *s = srv->auth != NULL ? authsess_find(srv->auth, r->auth.session) : NULL;

    if (s == NULL) { /* closed meanwhile (a key change): nothing can MAC the reply */
        log_warn("event=reply_dropped op=%s error=\"session closed\"",
                 proto_op_name(r->op) ? proto_op_name(r->op) : "?");
        nn_freemsg(msg);
        srv->counters[COUNTER_REPLIES_DROPPED]++;
        return;
    }
    auth_header_encode(msg, s->id, r->auth.seq, zero);
    r->reply_len = len;
    if (len - AUTH_FRAME_HEADER >= AUTHGATE_ASYNC_BYTES && srv->loop != NULL) {
        mac_job *j = xcalloc(1, sizeof(*j));
        j->frame = msg;
        j->len = len;
        j->ctrl = r->ctrl;
        j->seal = 1;
        j->op = r->op;
        j->owner = r->owner;
        j->h.session = s->id;
        j->h.seq = r->auth.seq;
        r->ctrl = NULL;
        mac_start(srv, j, s->tx);
        return;
    }
    (void)auth_frame_seal(s->tx, msg, len);
    if (s->last_seq == r->auth.seq)
        authsess_keep_reply(s, msg, len);
    (void)reply_transmit(srv, r->op, r->owner, msg, len, &r->ctrl);
}

/*
 * Is the transaction or pull session (kind, id) still open? A multi-writer
 * part is forgotten AUTHGATE_PART_TIMEOUTS transaction timeouts after it was
 * pushed (its step has been completed or discarded long since).
 */
#define AUTHGATE_PART_TIMEOUTS 4
static int
owner_alive(void *arg, int kind, uint64_t id, uint64_t at_ms)
{
    server *srv = arg;

    if (kind == 'w')
        return server_now(srv) - at_ms < AUTHGATE_PART_TIMEOUTS * srv->cfg.txn_timeout_ms;
    return kind == 't' ? store_txn_open(srv->store, id) : store_view_open(srv->store, id);
}

void
authgate_tick(server *srv)
{
    size_t n;

    if (srv->auth == NULL)
        return;
    n = authsess_expire(srv->auth, server_now(srv));
    if (n > 0)
        log_info("event=auth_sessions_expired count=%zu", n);
    authsess_sweep_owners(srv->auth, owner_alive, srv);
}

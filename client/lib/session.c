/*
 * session.c - the authenticated sessions of libemad (docs/PROTOCOL.md,
 * "Authentication"). Each connection of a client with credentials has its
 * own session, since a REQ connection carries one request at a time and
 * sequence numbers are per session: the first request on a connection runs
 * the handshake (auth_begin, auth_finish: an Ed25519 signature over the
 * transcript, crypto_kx session keys), and a request made once 3/4 of the
 * session's lifetime has passed first renews it (auth_finish with `renew`,
 * so what the old session owns carries over). Every other request is sent
 * as a frame: a 36-byte header (magic, session id, sequence number, tag)
 * in front of the unchanged msgpack body; transport.c packs the body and
 * tags its 1 MiB pieces as they are written, this file finishes the frame
 * and checks the frame of each reply. The formats and the cryptography are
 * src/common/auth's.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "common/errors.h"

/* Arguments of auth_begin. */
typedef struct begin_req {
    const char *user;
    const unsigned char *eph;
} begin_req;

/* Arguments of auth_finish. */
typedef struct finish_req {
    uint64_t hs;
    const unsigned char *sig;
    uint64_t renew; /* 0: none */
} finish_req;

/* Pack "key": bin of n bytes. */
static void
pk_kv_bin(msgpack_packer *pk, const char *key, const unsigned char *p, size_t n)
{
    proto_pack_str(pk, key);
    msgpack_pack_bin(pk, n);
    msgpack_pack_bin_body(pk, p, n);
}

/* Pack an auth_begin request. */
static void
build_begin(msgpack_packer *pk, const void *vctx)
{
    const begin_req *q = vctx;

    pk_head(pk, PROTO_OP_AUTH_BEGIN, 2);
    pk_kv_str(pk, PROTO_KEY_USER, q->user);
    pk_kv_bin(pk, PROTO_KEY_EPH, q->eph, AUTH_EPH_BYTES);
}

/* Pack an auth_finish request. */
static void
build_finish(msgpack_packer *pk, const void *vctx)
{
    const finish_req *q = vctx;

    pk_head(pk, PROTO_OP_AUTH_FINISH, 2 + (q->renew != 0));
    proto_pack_kv_u64(pk, PROTO_KEY_HS, q->hs);
    pk_kv_bin(pk, PROTO_KEY_SIG, q->sig, AUTH_SIG_BYTES);
    if (q->renew != 0)
        proto_pack_kv_u64(pk, PROTO_KEY_RENEW, q->renew);
}

/* One plain round trip of a handshake op on connection k. */
static int
plain_call(emad_client *c, size_t k, int op, build_fn build, const void *ctx, reply *r)
{
    int64_t deadline = now_ms() + c->opts.timeout_ms;
    uint32_t id;
    int rc;

    if ((rc = req_send_ex(c, k, op, build, ctx, deadline, c->opts.timeout_ms, &id, 1)) != 0)
        return rc;
    return req_wait(c, k, op, deadline, c->opts.timeout_ms, r);
}

/* Name the user in a failed handshake's message; returns rc. */
static int
handshake_fail(emad_client *c, int rc)
{
    char detail[sizeof(c->err)];

    memcpy(detail, c->err, sizeof(detail));
    if (rc == EMAD_EAUTH)
        return fail(c, rc, "authentication as user %s failed: %.1900s", c->user, detail);
    return fail(c, rc, "authentication as user %s: %.1900s", c->user, detail);
}

/*
 * The handshake on connection k: auth_begin, then auth_finish signed with
 * the user's key (renewing session `renew` unless 0). On success the
 * connection's session is the new one.
 */
static int
handshake(emad_client *c, size_t k, uint64_t renew)
{
    unsigned char eph[AUTH_EPH_BYTES], eph_sk[AUTH_EPH_SK_BYTES], tr[AUTH_TRANSCRIPT_MAX];
    unsigned char sig[AUTH_SIG_BYTES], rx[AUTH_KEY_BYTES], tx[AUTH_KEY_BYTES];
    const msgpack_object *seph, *chal;
    begin_req bq = {c->user, eph};
    finish_req fq = {0, sig, renew};
    uint64_t lifetime, id;
    size_t trlen;
    reply r;
    int rc;

    auth_eph_keypair(eph, eph_sk);
    if ((rc = plain_call(c, k, PROTO_OP_AUTH_BEGIN, build_begin, &bq, &r)) != 0)
        goto out;
    if ((rc = rget_u64(c, r.root, PROTO_KEY_HS, &fq.hs)) != 0 ||
        (rc = rget_bin(c, r.root, PROTO_KEY_CHALLENGE, AUTH_CHALLENGE_BYTES, &chal)) != 0 ||
        (rc = rget_bin(c, r.root, PROTO_KEY_EPH, AUTH_EPH_BYTES, &seph)) != 0) {
        reply_free(&r);
        goto out;
    }
    trlen =
        auth_transcript(tr, c->user, strlen(c->user), eph, (const unsigned char *)seph->via.bin.ptr,
                        (const unsigned char *)chal->via.bin.ptr, fq.hs);
    rc = trlen == 0 ||
         auth_client_keys(rx, tx, eph, eph_sk, (const unsigned char *)seph->via.bin.ptr) != 0;
    reply_free(&r);
    if (rc != 0) {
        rc = fail(c, EMAD_EPROTO, "auth_begin: the daemon's ephemeral key is not acceptable");
        goto out;
    }
    auth_sign(sig, tr, trlen, c->sk);
    if ((rc = plain_call(c, k, PROTO_OP_AUTH_FINISH, build_finish, &fq, &r)) != 0)
        goto out;
    if ((rc = rget_u64(c, r.root, PROTO_KEY_SESSION, &id)) != 0 ||
        (rc = rget_u64(c, r.root, PROTO_KEY_LIFETIME, &lifetime)) != 0) {
        reply_free(&r);
        goto out;
    }
    reply_free(&r);
    if (id == 0 || lifetime == 0 || lifetime > UINT32_MAX) {
        rc = fail(c, EMAD_EPROTO, "auth_finish: session %llu with a lifetime of %llu s",
                  (unsigned long long)id, (unsigned long long)lifetime);
        goto out;
    }
    c->sess[k].id = id;
    c->sess[k].seq = 0;
    c->sess[k].start_ms = now_ms();
    c->sess[k].lifetime_ms = (int64_t)lifetime * 1000;
    memcpy(c->sess[k].tx, tx, sizeof(tx));
    memcpy(c->sess[k].rx, rx, sizeof(rx));
out:
    auth_wipe(eph_sk, sizeof(eph_sk));
    auth_wipe(rx, sizeof(rx));
    auth_wipe(tx, sizeof(tx));
    return rc != 0 ? handshake_fail(c, rc) : 0;
}

/*
 * Make sure connection k has a usable session: a handshake if it has
 * none or its session has expired by our clock, a renewal once 3/4 of
 * its lifetime has passed.
 */
int
session_ensure(emad_client *c, size_t k)
{
    conn_session *s = &c->sess[k];
    int64_t age;
    int rc;

    if (!c->auth)
        return 0;
    if (s->id == 0)
        return handshake(c, k, 0);
    age = now_ms() - s->start_ms;
    if (age >= s->lifetime_ms) {
        session_drop(c, k);
        return handshake(c, k, 0);
    }
    if (age >= s->lifetime_ms / 4 * 3) {
        /* Renew; if the daemon no longer knows the old session (it restarted, or its clock
         * ran ahead of ours), a new one without what the old one owned. */
        if ((rc = handshake(c, k, s->id)) != EMAD_EAUTH)
            return rc;
        session_drop(c, k);
        return handshake(c, k, 0);
    }
    return 0;
}

/* Forget connection k's session. */
void
session_drop(emad_client *c, size_t k)
{
    auth_wipe(&c->sess[k], sizeof(c->sess[k]));
}

/* Room for the piece tags of a body of len bytes in c->tags. */
int
session_tags_reserve(emad_client *c, size_t len)
{
    size_t n = auth_piece_count(len);
    unsigned char *p;

    if (n <= c->tags_cap)
        return 0;
    if ((p = realloc(c->tags, n * AUTH_TAG_BYTES)) == NULL)
        return fail(c, EMAD_ENOMEM, "out of memory for %zu piece tags", n);
    c->tags = p;
    c->tags_cap = n;
    return 0;
}

/* Finish the frame of a packed request on connection k (see client.h). */
void
session_seal(emad_client *c, size_t k, void *msg, size_t len)
{
    conn_session *s = &c->sess[k];
    unsigned char *frame = msg, tag[AUTH_TAG_BYTES] = {0};
    size_t n = auth_piece_count(len);
    uint64_t seq = s->seq + 1;

    auth_header_encode(frame, s->id, seq, tag);
    auth_frame_tag(s->tx, frame, c->tags, n, tag);
    memcpy(frame + AUTH_OFF_TAG, tag, sizeof(tag));
    s->seq = seq;
}

/* Check the frame of reply m, held in r->msg (see client.h); 1 if plain. */
int
session_open_reply(emad_client *c, const received *m, reply *r, size_t *body_len, int check)
{
    size_t len = m->len;
    uint64_t seq = m->seq;
    struct auth_header h;

    if (!auth_is_frame(r->msg, len)) {
        r->body = r->msg;
        *body_len = len;
        return 1; /* only an EMAD_EAUTH error may come unframed: the caller checks */
    }
    if (auth_header_decode(r->msg, len, &h) != 0)
        return fail(c, EMAD_EPROTO, "reply authentication failed: a frame of %zu bytes", len);
    if (h.session != m->session || h.seq != seq)
        return fail(c, EMAD_EPROTO,
                    "reply authentication failed: reply for session %llu seq %llu, expected "
                    "session %llu seq %llu",
                    (unsigned long long)h.session, (unsigned long long)h.seq,
                    (unsigned long long)m->session, (unsigned long long)seq);
    if (check && auth_frame_verify(m->rx, r->msg, len) != 0)
        return fail(c, EMAD_EPROTO, "reply authentication failed: bad tag");
    if (!check) {
        r->unchecked = 1;
        r->frame_len = len;
        memcpy(r->rx, m->rx, AUTH_KEY_BYTES);
    }
    r->body = (const char *)r->msg + AUTH_FRAME_HEADER;
    *body_len = len - AUTH_FRAME_HEADER;
    return 0;
}

int
session_bad_tag(emad_client *c, int op)
{
    c->auth_stale = 0; /* whatever the unchecked body said */
    return fail(c, EMAD_EPROTO, "%s: reply authentication failed: bad tag", proto_op_name(op));
}

int
session_unchecked_error(emad_client *c, const reply *r, int op, int rc)
{
    return auth_frame_verify(r->rx, r->msg, r->frame_len) != 0 ? session_bad_tag(c, op) : rc;
}

/* 1 if o is the msgpack str s. */
static int
str_is(const msgpack_object *o, const char *s)
{
    return o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(s) &&
           memcmp(o->via.str.ptr, s, o->via.str.size) == 0;
}

/* 1 if an EMAD_EAUTH error map says the session is expired or unknown. */
int
session_error_is_stale(const msgpack_object *e)
{
    const msgpack_object *reason = proto_map_get(e, PROTO_KEY_REASON);

    return reason != NULL &&
           (str_is(reason, PROTO_VAL_AUTH_EXPIRED) || str_is(reason, PROTO_VAL_AUTH_NO_SESSION));
}

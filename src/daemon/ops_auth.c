/*
 * ops_auth.c - the handshake ops (auth_begin, auth_finish) and what an
 * authenticated user may do: the role each op needs on its model, the
 * ownership of transactions and pull sessions, which models a list shows,
 * and the audit line of every admin op (see server_int.h and
 * docs/PROTOCOL.md "Authentication").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/errors.h"
#include "common/names.h"
#include "base/log.h"
#include "daemon/server_int.h"

/* Pack an auth_begin reply: handshake id, challenge, daemon key, lifetime. */
static void
build_begin(msgpack_packer *pk, const void *ctx)
{
    const authsess_hs *h = ((const void *const *)ctx)[0];
    const server *srv = ((const void *const *)ctx)[1];

    reply_pack_head(pk, 1, 4);
    proto_pack_kv_u64(pk, PROTO_KEY_HS, h->hs);
    proto_pack_str(pk, PROTO_KEY_CHALLENGE);
    msgpack_pack_bin(pk, AUTH_CHALLENGE_BYTES);
    msgpack_pack_bin_body(pk, h->challenge, AUTH_CHALLENGE_BYTES);
    proto_pack_str(pk, PROTO_KEY_EPH);
    msgpack_pack_bin(pk, AUTH_EPH_BYTES);
    msgpack_pack_bin_body(pk, h->server_eph, AUTH_EPH_BYTES);
    proto_pack_kv_u64(pk, PROTO_KEY_LIFETIME, authsess_lifetime(srv->auth) / 1000);
}

/* A bin field of exactly n bytes. */
static int
get_bin(const msgpack_object *map, const char *key, size_t n, const char **p, store_err *err)
{
    const msgpack_object *o = proto_map_get(map, key);

    if (o == NULL)
        return request_fail(err, EMAD_EMALFORMED, "missing key '%s'", key);
    if (o->type != MSGPACK_OBJECT_BIN || o->via.bin.size != n)
        return request_fail(err, EMAD_EMALFORMED, "key '%s' must be bin of %zu bytes", key, n);
    *p = o->via.bin.ptr;
    return 0;
}

/* The refusal when the daemon has no auth file. */
static int
auth_off(store_err *err)
{
    return request_fail(
        err, EMAD_EOP,
        "this daemon runs without authentication (no --auth-file): send unframed messages");
}

/* auth_begin: a fresh challenge and daemon key (also for an unknown user, not to reveal it). */
int
ops_auth_begin(req *r, store_err *err)
{
    const char *user, *eph;
    size_t len;
    const void *ctx[2];

    if (r->srv->auth == NULL)
        return auth_off(err);
    if (request_get_str(r->root, PROTO_KEY_USER, &user, &len, err) != 0 ||
        get_bin(r->root, PROTO_KEY_EPH, AUTH_EPH_BYTES, &eph, err) != 0)
        return err->code;
    if (!auth_user_valid(user, len))
        return request_fail(err, EMAD_ENAME, "a user name is 1 to %d of A-Z a-z 0-9 . _ @ -",
                            AUTH_USER_MAX);
    ctx[0] = authsess_begin(r->srv->auth, user, len, (const unsigned char *)eph, r->now_ms);
    ctx[1] = r->srv;
    reply_send(r, build_begin, ctx);
    return 0;
}

/* Pack an auth_finish reply: the session and its lifetime. */
static void
build_finish(msgpack_packer *pk, const void *ctx)
{
    const authsess *s = ((const void *const *)ctx)[0];
    const server *srv = ((const void *const *)ctx)[1];

    reply_pack_head(pk, 1, 2);
    proto_pack_kv_u64(pk, PROTO_KEY_SESSION, s->id);
    proto_pack_kv_u64(pk, PROTO_KEY_LIFETIME, authsess_lifetime(srv->auth) / 1000);
}

/* auth_finish: check the signature of the transcript and open the session. */
int
ops_auth_finish(req *r, store_err *err)
{
    server *srv = r->srv;
    uint64_t hs, renew_id = 0;
    int has_renew = 0;
    const char *sig;
    const authfile_user *u;
    const authsess *renew = NULL;
    authsess_hs *h;
    authsess *s;
    unsigned char tr[AUTH_TRANSCRIPT_MAX];
    size_t n;
    const void *ctx[2];

    if (srv->auth == NULL)
        return auth_off(err);
    if (request_get_u64(r->root, PROTO_KEY_HS, &hs, NULL, err) != 0 ||
        request_get_u64(r->root, PROTO_KEY_RENEW, &renew_id, &has_renew, err) != 0 ||
        get_bin(r->root, PROTO_KEY_SIG, AUTH_SIG_BYTES, &sig, err) != 0)
        return err->code;
    if ((h = authsess_take_hs(srv->auth, hs, r->now_ms)) == NULL)
        return authgate_fail(r, err, AUTHGATE_UNKNOWN_HANDSHAKE,
                             "no pending handshake %llu (expired after %d s, finished, or never "
                             "begun)",
                             (unsigned long long)hs, AUTHSESS_HANDSHAKE_MS / 1000);
    u = h->known ? authfile_find(authsess_users(srv->auth), h->user, strlen(h->user)) : NULL;
    n = auth_transcript(tr, h->user, strlen(h->user), h->client_eph, h->server_eph, h->challenge,
                        h->hs);
    if (u == NULL || n == 0 || auth_sign_verify((const unsigned char *)sig, tr, n, u->pk) != 0) {
        authsess_hs_free(h);
        return authgate_fail(r, err, AUTHGATE_BAD_SIGNATURE,
                             "the handshake's signature does not verify for that user (unknown "
                             "user, or another key)");
    }
    if (has_renew) {
        authsess *old = authsess_find(srv->auth, renew_id);
        if (old == NULL || authsess_expired(old, r->now_ms) || strcmp(old->user, h->user) != 0) {
            authsess_hs_free(h);
            return authgate_fail(r, err, AUTHGATE_NO_SESSION,
                                 "renew: session %llu is not a live session of user '%s'",
                                 (unsigned long long)renew_id, u->name);
        }
        renew = old;
    }
    s = authsess_open(srv->auth, h, renew, r->now_ms);
    authsess_hs_free(h);
    if (s == NULL)
        return request_fail(err, EMAD_ELIMIT, "too many sessions (at most %d)",
                            AUTHSESS_MAX_SESSIONS);
    srv->counters[COUNTER_AUTH_SESSIONS_OPENED]++;
    log_info("event=auth_session user=%s session=%016llx renews=%016llx", s->user,
             (unsigned long long)s->id, (unsigned long long)renew_id);
    ctx[0] = s;
    ctx[1] = srv;
    reply_send(r, build_finish, ctx);
    return 0;
}

/* The role an op needs (enum authfile_role), or -1 for none beyond a session. */
static int
op_role(int op)
{
    switch (op) {
    case PROTO_OP_PUSH:
    case PROTO_OP_BEGIN:
    case PROTO_OP_COMMIT:
    case PROTO_OP_ABORT:
        return AUTHFILE_PUSH;
    case PROTO_OP_PULL:
    case PROTO_OP_READ:
    case PROTO_OP_RELEASE:
    case PROTO_OP_LIST:
        return AUTHFILE_PULL;
    case PROTO_OP_CREATE:
    case PROTO_OP_CONFIGURE:
    case PROTO_OP_DROP:
    case PROTO_OP_SNAPSHOT:
        return AUTHFILE_ADMIN;
    default:
        return -1;
    }
}

/* Refuse r: its user may not act in role on model name[0..len). */
static int
deny(req *r, store_err *err, int role, const char *name, size_t len)
{
    char buf[EMAD_MAX_MODEL_NAME_BYTES + 1];

    return authgate_fail(r, err, AUTHGATE_DENIED, "user '%s' has no %s grant on model '%s'",
                         r->user->name, authfile_role_name(role),
                         names_printable(buf, sizeof(buf), name, len));
}

/*
 * The owner check of a transaction ('t', key txn) or pull session ('s',
 * key session): another user's, or one with no owner, is refused exactly
 * as an unknown id. Sets *opened_on to the model it was opened on.
 */
static int
check_owner(req *r, store_err *err, int kind, const char **opened_on)
{
    uint64_t id;
    const char *owner;

    if (request_get_u64(r->root, kind == 't' ? PROTO_KEY_TXN : PROTO_KEY_SESSION, &id, NULL, err) !=
        0)
        return err->code;
    owner = authsess_owner(r->srv->auth, kind, id, opened_on);
    if (owner != NULL && strcmp(owner, r->user->name) == 0)
        return 0;
    if (kind == 't')
        return request_fail(err, EMAD_ENOTXN,
                            "no open transaction %llu (unknown, expired or finished)",
                            (unsigned long long)id);
    return request_fail(err, EMAD_ENOSESSION, "no pull session %llu (unknown, expired or released)",
                        (unsigned long long)id);
}

/*
 * A push of writer's part of a multi-writer step that another user has
 * staged is refused (the store would take the same bytes as a resend and
 * other bytes as a conflict; neither is for another user to send).
 */
static int
check_part(req *r, store_err *err, const char *name, size_t len)
{
    uint64_t step, writer = 0;
    int has_writer = 0, seed = 0;
    const char *owner;
    char buf[EMAD_MAX_MODEL_NAME_BYTES + 1];

    if (request_get_bool(r->root, PROTO_KEY_SEED, &seed, err) != 0)
        return err->code;
    if (seed)
        return 0; /* a seed replaces the model; it has no writer's part */
    if (request_get_u64(r->root, PROTO_KEY_STEP, &step, NULL, err) != 0 ||
        request_get_u64(r->root, PROTO_KEY_WRITER, &writer, &has_writer, err) != 0)
        return err->code;
    if (writer > UINT32_MAX)
        return 0; /* the handler refuses it */
    owner = authsess_owner(r->srv->auth, 'w', authsess_part_id(name, len, step, (uint32_t)writer),
                           NULL);
    if (owner == NULL || strcmp(owner, r->user->name) == 0)
        return 0;
    return request_fail(err, EMAD_ECONFLICT,
                        "the part of writer %llu for step %llu of model '%s' was pushed by "
                        "another user",
                        (unsigned long long)writer, (unsigned long long)step,
                        names_printable(buf, sizeof(buf), name, len));
}

int
ops_auth_check(req *r, store_err *err)
{
    server *srv = r->srv;
    const msgpack_object *o = proto_map_get(r->root, PROTO_KEY_MODEL);
    const char *name = NULL, *owned = NULL;
    size_t len = 0;
    int role = op_role(r->op), has_txn = 0;
    uint64_t txn;
    authsess *s;

    if (r->op == PROTO_OP_HELLO || r->op == PROTO_OP_AUTH_BEGIN || r->op == PROTO_OP_AUTH_FINISH)
        return 0;
    if (r->auth.session == 0)
        return authgate_fail(r, err, AUTHGATE_REQUIRED,
                             "this daemon requires authentication: handshake (auth_begin, "
                             "auth_finish) and send frames (give the client a user and key file)");
    s = authsess_find(srv->auth, r->auth.session);
    r->user = s != NULL ? authfile_find(authsess_users(srv->auth), s->user, strlen(s->user)) : NULL;
    if (r->user == NULL)
        return authgate_fail(r, err, AUTHGATE_NO_SESSION, "the session's user is gone");
    if (role < 0)
        return 0;
    if (o != NULL && request_get_str(r->root, PROTO_KEY_MODEL, &name, &len, err) != 0)
        return err->code;
    if (r->op == PROTO_OP_PUSH && request_get_u64(r->root, PROTO_KEY_TXN, &txn, &has_txn, err) != 0)
        return err->code;
    if (r->op == PROTO_OP_COMMIT || r->op == PROTO_OP_ABORT || has_txn) {
        if (check_owner(r, err, 't', &owned) != 0)
            return err->code;
        name = owned;
        len = strlen(owned);
    } else if (r->op == PROTO_OP_READ || r->op == PROTO_OP_RELEASE ||
               (r->op == PROTO_OP_PULL && proto_map_get(r->root, PROTO_KEY_SESSION) != NULL)) {
        /* a page of a pull session is the session's owner's too */
        if (check_owner(r, err, 's', &owned) != 0)
            return err->code;
        name = owned;
        len = strlen(owned);
    }
    if (r->op == PROTO_OP_LIST && name == NULL)
        return 0; /* every model the user may see (ops_auth_visible) */
    if (r->op == PROTO_OP_LIST && authfile_allows(r->user, AUTHFILE_ADMIN, name, len))
        return 0;
    if (r->op == PROTO_OP_SNAPSHOT && name == NULL) {
        const model *m;
        for (size_t i = 0; (m = store_model_at(srv->store, i)) != NULL; i++)
            if (!authfile_allows(r->user, role, m->name, strlen(m->name)))
                return deny(r, err, role, m->name, strlen(m->name));
        return 0;
    }
    if (name == NULL) /* the handler reports the missing key */
        return 0;
    if (!authfile_allows(r->user, role, name, len))
        return deny(r, err, role, name, len);
    if (r->op == PROTO_OP_PUSH && !has_txn)
        return check_part(r, err, name, len);
    return 0;
}

void
ops_auth_own(req *r, int kind, uint64_t id, const char *name, size_t len)
{
    char buf[EMAD_MAX_MODEL_NAME_BYTES + 1];

    if (r->srv->auth == NULL || r->user == NULL)
        return;
    snprintf(buf, sizeof(buf), "%.*s", (int)len, name);
    authsess_own(r->srv->auth, kind, id, r->user->name, buf, r->now_ms);
}

void
ops_auth_own_part(req *r, const char *name, size_t len, uint64_t step, uint32_t writer)
{
    ops_auth_own(r, 'w', authsess_part_id(name, len, step, writer), name, len);
}

int
ops_auth_visible(const req *r, const char *name)
{
    size_t len = strlen(name);

    if (r->srv->auth == NULL)
        return 1;
    return authfile_allows(r->user, AUTHFILE_PULL, name, len) ||
           authfile_allows(r->user, AUTHFILE_ADMIN, name, len);
}

uint64_t
ops_auth_owner_id(const server *srv, const req_auth *auth, uint64_t conn)
{
    const authsess *s;

    if (srv->auth == NULL || auth == NULL || auth->session == 0 ||
        (s = authsess_find(srv->auth, auth->session)) == NULL)
        return conn;
    return authsess_part_id(s->user, strlen(s->user), 0, 0) | 1ULL << 63;
}

void
ops_auth_audit(const req *r, int rc, const store_err *err)
{
    const char *name = NULL, *result;
    size_t len = 0;
    store_err scratch;

    if (r->srv->auth == NULL || op_role(r->op) != AUTHFILE_ADMIN)
        return;
    if (proto_map_get(r->root, PROTO_KEY_MODEL) != NULL)
        (void)request_get_str(r->root, PROTO_KEY_MODEL, &name, &len, &scratch);
    result = rc == 0                          ? PROTO_KEY_OK
             : errors_name(err->code) != NULL ? errors_name(err->code)
                                              : "failed";
    log_info("audit user=%s op=%s model=%s result=%s", r->user != NULL ? r->user->name : "-",
             proto_op_name(r->op), name != NULL ? LOG_STRN(name, len) : "*", result);
}

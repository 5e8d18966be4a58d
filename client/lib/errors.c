/*
 * errors.c - how libemad reports failures: the client's last error (a
 * formatted message kept in the client, see emad_last_error()), the code
 * and text of an error reply, the checks of reply fields and of name
 * arguments, and the error text of a code (emad_strerror, emad_errname,
 * from the shared error table). Every failure returns a negative EMAD_E*
 * code (or a negated errno) with a message; out of memory is EMAD_ENOMEM,
 * never an abort.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <nanomsg/nn.h>

#include "client.h"
#include "common/errors.h"
#include "common/names.h"

/* Record a formatted message as the client's last error and return code. */
int
fail(emad_client *c, int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    (void)vsnprintf(c->err, sizeof(c->err), fmt, ap);
    va_end(ap);
    return code;
}

/* Start a public call on c: clear the last error. */
void
call_begin(emad_client *c)
{
    c->err[0] = '\0';
    if (c->cl != NULL)
        cluster_call_begin(c->cl);
}

/* End a public call: make sure a failure has a message; returns rc. */
int
call_end(emad_client *c, int rc)
{
    if (rc < 0 && c->err[0] == '\0')
        (void)snprintf(c->err, sizeof(c->err), "%s", errors_text(rc));
    return rc;
}

/* Turn a nanomsg errno from op's send or receive into an emad code with a message. */
int
nn_fail(emad_client *c, int e, int op, const char *what, int timeout_ms)
{
    const char *name = proto_op_name(op);

    if ((e == ETIMEDOUT || e == EAGAIN) && strcmp(what, "send") == 0)
        return fail(c, EMAD_ETIMEDOUT, "%s: the request could not be sent within %d ms", name,
                    timeout_ms);
    if (e == ETIMEDOUT || e == EAGAIN)
        return fail(c, EMAD_ETIMEDOUT, "%s: no reply from the daemon within %d ms", name,
                    timeout_ms);
    if (e == ETERM || e == EBADF)
        return fail(c, EMAD_ECONNECT, "%s: %s failed: %s", name, what, nn_strerror(e));
    return fail(c, -e, "%s: %s failed: %s", name, what, nn_strerror(e));
}

/* Record a codec decode error as the last error; returns its code. */
int
fail_codec(emad_client *c, const codec_err *err)
{
    return fail(c, err->code, "%s", err->message);
}

/* Required uint key of a reply map; EMAD_EPROTO if missing or mistyped. */
int
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
int
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
int
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

/* Required bin key of exactly n bytes; EMAD_EPROTO if missing, mistyped or of another size. */
int
rget_bin(emad_client *c, const msgpack_object *map, const char *key, size_t n,
         const msgpack_object **bin)
{
    const msgpack_object *o = proto_map_get(map, key);

    if (o == NULL || o->type != MSGPACK_OBJECT_BIN || o->via.bin.size != n) {
        (void)fail(c, EMAD_EPROTO, "reply key '%s' is %s (expected %zu bytes of bin)", key,
                   o == NULL ? "missing" : "not that", n);
        return EMAD_EPROTO;
    }
    *bin = o;
    return 0;
}

/*
 * The message of an EMAD_EAUTH error map e (mlen bytes at m) with its
 * reason when the message does not name it; notes whether the session is
 * stale (expired or unknown: a new handshake may help).
 */
static int
auth_error(emad_client *c, int rc, const msgpack_object *e, const char *m, int mlen)
{
    const msgpack_object *reason = proto_map_get(e, PROTO_KEY_REASON);
    int rlen;

    c->auth_stale = session_error_is_stale(e);
    if (reason == NULL || reason->type != MSGPACK_OBJECT_STR || reason->via.str.size == 0)
        return fail(c, rc, "%.*s", mlen, m);
    rlen = reason->via.str.size > 64 ? 64 : (int)reason->via.str.size;
    if (memmem(m, (size_t)mlen, reason->via.str.ptr, (size_t)rlen) != NULL)
        return fail(c, rc, "%.*s", mlen, m);
    return fail(c, rc, "%.*s (reason: %.*s)", mlen, m, rlen, reason->via.str.ptr);
}

/*
 * Turn an error reply's `error` map into the negative code it carries, with
 * the daemon's message (prefixed with the tensor's name when the message
 * does not already name it) as the last error.
 */
int
reply_error(emad_client *c, int op, const msgpack_object *e)
{
    const msgpack_object *code = proto_map_get(e, PROTO_KEY_CODE),
                         *msg = proto_map_get(e, PROTO_KEY_MESSAGE),
                         *tensor = proto_map_get(e, PROTO_KEY_TENSOR);
    int rc;
    int mlen = 0, tlen = 0;
    const char *m = "", *t = "";

    if (code == NULL || code->type != MSGPACK_OBJECT_POSITIVE_INTEGER || code->via.u64 == 0 ||
        code->via.u64 > 1099)
        return fail(c, EMAD_EPROTO, "%s: error reply without a valid code", proto_op_name(op));
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
        m = errors_text(rc);
        mlen = (int)strlen(m);
    }
    if (rc == EMAD_EAUTH)
        return auth_error(c, rc, e, m, mlen);
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

/* Check a model name argument; EMAD_EINVAL for NULL, EMAD_ENAME if invalid. */
int
check_model(emad_client *c, const char *model)
{
    if (model == NULL)
        return fail(c, EMAD_EINVAL, "model name is NULL");
    if (names_check_model(model, strlen(model)) != 0)
        return fail(c, EMAD_ENAME,
                    "invalid model name '%.200s': 1..%d bytes of A-Z a-z 0-9 . _ -, not "
                    "starting with '.'",
                    model, EMAD_MAX_MODEL_NAME_BYTES);
    return 0;
}

/* Check a tensor name argument; EMAD_EINVAL for NULL, EMAD_ENAME if invalid. */
int
check_tensor_name(emad_client *c, const char *name, size_t index)
{
    if (name == NULL)
        return fail(c, EMAD_EINVAL, "tensor %zu: name is NULL", index);
    if (names_check_tensor(name, strlen(name)) != 0)
        return fail(c, EMAD_ENAME,
                    "tensor '%.200s': invalid name (1..%d bytes of UTF-8, no control characters)",
                    name, EMAD_MAX_NAME_BYTES);
    return 0;
}

/* Text for a code: delegates to the shared protocol error table. */
EMAD_EXTERN const char *
emad_strerror(int code)
{
    return errors_text(code);
}

/* Symbolic name of a code, or NULL: delegates to the shared table. */
EMAD_EXTERN const char *
emad_errname(int code)
{
    return errors_name(code);
}

/* Detailed message of the last failed call on c (owned by c). */
EMAD_EXTERN const char *
emad_last_error(const emad_client *c)
{
    return c != NULL ? c->err : creds_connect_error();
}

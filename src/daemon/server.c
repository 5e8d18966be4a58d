/*
 * server.c - nanomsg request server on the libuv loop (see server.h).
 *
 * Ownership on the request path: nn_recvmsg hands us the request body and
 * its routing header as NN_MSG chunks. The body is decoded in place
 * (msgpack objects, including BIN tensor payloads, point into it) and
 * freed after the request has been handled and the reply built. The
 * routing header is handed back to nanomsg with the reply (nn_sendmsg
 * takes both chunks on success; on failure we free them).
 *
 * Replies are packed twice with the same code: first into a counting
 * writer to learn the exact size, then into an nn_allocmsg buffer of that
 * size, so a reply is one allocation and tensor data is copied once, from
 * the shadow into the message.
 */
#include <dirent.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <msgpack.h>
#include <nanomsg/nn.h>
#include <nanomsg/reqrep.h>
#include <nanomsg/tcp.h>

#include "config.h"
#include "common/dtype.h"
#include "common/emaconf.h"
#include "base/log.h"
#include "daemon/metrics.h"
#include "daemon/persist.h"
#include "common/counters.h"
#include "common/proto.h"
#include "daemon/server.h"
#include "store/store.h"
#include "store/task.h"
#include "base/xmalloc.h"

static const char *const counter_names[COUNTER_COUNT] = {
#define XX(id, name) name,
    COUNTERS_MAP(XX)
#undef XX
};

#define ERR_FIRST 1001
#define ERR_LAST 1026

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
    int stopping;     /* SIGTERM seen: writing snapshots before closing */
    uint64_t start_ms;
    uint64_t last_request_ms; /* for giving freed memory back when idle */
    int trimmed;              /* idle for cfg.idle_release_ms: spares freed, heap trimmed */
    uint64_t counters[COUNTER_COUNT];
    uint64_t op_counts[PROTO_OP_COUNT];
    uint64_t err_counts[ERR_LAST - ERR_FIRST + 1];
    /* For metrics (server_figures): */
    uint64_t op_ok[PROTO_OP_COUNT];                  /* ok replies per op */
    uint64_t op_errors[PROTO_OP_COUNT];              /* error replies per op */
    uint64_t push_rejects[ERR_LAST - ERR_FIRST + 1]; /* push/commit errors per code */
    uint64_t pushes_stale;                           /* accepted, every tensor stale */
    metrics_hist push_hist, pull_hist;               /* handling time of accepted requests */
    uint32_t early; /* chunks answered before their averaging ran */
    int parts;      /* threadpool parts of one request: CPUs online, read once */
    struct {
        pid_t tid;     /* nanomsg's I/O thread; 0: unknown, never pinned */
        int cpu;       /* where io_hold() holds it */
        int held;      /* it is on cpu alone now */
        cpu_set_t all; /* the CPUs the daemon may run on */
    } io;
    struct parked *parked; /* commits waiting for their chunks' jobs */
};

/* A commit that came while chunks of its transaction were still being averaged. */
typedef struct parked {
    uint64_t txn;
    void *ctrl; /* the request's routing header */
    uint64_t t0;
    struct parked *next;
} parked;

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
} req;

/*
 * Work of one request run on the libuv threadpool: the averaging of a
 * transaction's chunks (straight from the request message, which is kept
 * until the work is done), or the copying of tensor data into a large read
 * or pull reply (from shadows whose blobs are referenced meanwhile). The
 * tasks are split in contiguous runs among up to ASYNC_MAX_PARTS work
 * items, one per CPU, so one big request keeps every core busy while the loop goes on
 * serving other requests.
 */
#define ASYNC_MAX_PARTS 8

#define ASYNC_MIN_BYTES (1u << 20) /* smaller work runs inline on the loop */

/*
 * A transaction chunk is answered as soon as its averaging is queued, while
 * fewer than this many such chunks are still being averaged: the client
 * sends its next chunk while the threadpool works on this one. Beyond it
 * chunks are answered when their work is done, which bounds the request
 * bodies held. A value found non-finite fails the transaction's later
 * requests and its commit, which waits for the transaction's jobs.
 */
#define EARLY_MAX 1

typedef struct async_req {
    server *srv;
    int op;
    void *ctrl, *body;
    uint64_t t0;
    task_list *tl;   /* the tasks: the job's, or tasks */
    task_list tasks; /* reply: the copies of tensor data */
    store_job *job;  /* push: the store's job */
    int early;       /* push: answered already */
    uint64_t staged; /* push: the reply's count */
    void *msg;       /* reply: the packed message, data filled by the tasks */
    size_t len;
    blob **blobs; /* reply: references taken for the tasks */
    size_t nblobs;
    int parts, left;
    uv_work_t work[ASYNC_MAX_PARTS];
} async_req;

/* Milliseconds on the loop's clock (0 without a loop). */
static uint64_t
loop_now(const server *srv)
{
    return srv->loop != NULL ? uv_now(srv->loop) : 0;
}

/*
 * Output of the two-pass packer: counts when p is NULL, writes otherwise.
 * With defer set, tensor data is not copied: pack_data() adds a task that
 * copies it later (and references its blob in blobs).
 */
typedef struct wbuf {
    char *p;
    size_t len;
    task_list *defer;
    blob **blobs;
    size_t nblobs, cap;
} wbuf;

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

typedef void (*build_fn)(msgpack_packer *pk, const void *ctx);

/* Pack the reply map header and its "v" and "ok" entries; nextra entries follow. */
static void
pack_head(msgpack_packer *pk, int ok, size_t nextra)
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
static size_t
reply_size(build_fn build, const void *ctx)
{
    wbuf w = {NULL, 0, NULL, NULL, 0, 0};
    msgpack_packer pk;

    msgpack_packer_init(&pk, &w, wbuf_write);
    build(&pk, ctx);
    return w.len;
}

/* Send a packed reply message with the request's routing header (which it takes). */
static void
reply_send_msg(req *r, void *msg, size_t len)
{
    server *srv = r->srv;
    struct nn_iovec iov;
    struct nn_msghdr hdr;

    iov.iov_base = &msg;
    iov.iov_len = NN_MSG;
    memset(&hdr, 0, sizeof(hdr));
    hdr.msg_iov = &iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = &r->ctrl;
    hdr.msg_controllen = NN_MSG;
    if (nn_sendmsg(srv->sock, &hdr, NN_DONTWAIT) < 0) {
        log_warn("event=reply_dropped op=%s error=\"%s\"",
                 proto_op_name(r->op) ? proto_op_name(r->op) : "?", nn_strerror(nn_errno()));
        nn_freemsg(msg);
        srv->counters[COUNTER_REPLIES_DROPPED]++;
        return; /* the routing header is freed by the caller */
    }
    r->ctrl = NULL; /* nanomsg owns it now */
    r->reply_len = len;
    srv->counters[COUNTER_BYTES_OUT] += len;
}

/*
 * Pack build(ctx) into a new nanomsg message of exactly its size (with
 * w->defer set, tensor data is left to tasks); NULL if out of memory.
 */
static void *
reply_pack(build_fn build, const void *ctx, wbuf *w, size_t *len)
{
    msgpack_packer pk;
    void *msg;

    *len = reply_size(build, ctx);
    if ((msg = nn_allocmsg(*len, 0)) == NULL)
        return NULL;
    w->p = msg;
    w->len = 0;
    msgpack_packer_init(&pk, w, wbuf_write);
    build(&pk, ctx);
    return msg;
}

/* Build the reply into a message and send it with the request's routing header. */
static void
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
    if ((msg = reply_pack(build, ctx, &w, &len)) == NULL) {
        log_error("event=reply_alloc_failed bytes=%zu", len);
        srv->counters[COUNTER_REPLIES_DROPPED]++;
        return;
    }
    reply_send_msg(r, msg, len);
}

/* Error reply context. */
typedef struct err_ctx {
    const store_err *err;
} err_ctx;

/* Pack an error reply. */
static void
build_error(msgpack_packer *pk, const void *vctx)
{
    const store_err *e = ((const err_ctx *)vctx)->err;
    const char *name = proto_errname(e->code);
    int with_tensor = e->tensor[0] != '\0';
    int with_supported = e->code == EMAD_EVERSION;

    pack_head(pk, 0, 1);
    proto_pack_str(pk, PROTO_KEY_ERROR);
    msgpack_pack_map(pk, 3 + with_tensor + with_supported);
    proto_pack_kv_u64(pk, PROTO_KEY_CODE, (uint64_t)-e->code);
    proto_pack_str(pk, PROTO_KEY_NAME);
    proto_pack_str(pk, name != NULL ? name : "EMAD_EINTERNAL");
    proto_pack_str(pk, PROTO_KEY_MESSAGE);
    proto_pack_str(pk, e->message);
    if (with_tensor) {
        proto_pack_str(pk, PROTO_KEY_TENSOR);
        proto_pack_str(pk, e->tensor);
    }
    if (with_supported) {
        proto_pack_str(pk, PROTO_KEY_SUPPORTED);
        msgpack_pack_array(pk, 1);
        msgpack_pack_uint64(pk, PROTO_VERSION);
    }
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

        if (n > len - i || proto_check_tensor_name(s + i, n) != 0)
            s[i++] = '?';
        else
            i += n;
    }
}

/* The one error path: log, count and reply. */
static void
reply_error(req *r, const store_err *err)
{
    server *srv = r->srv;
    store_err scrubbed = *err, *e = &scrubbed;
    const char *name = proto_errname(e->code);
    int code = -e->code;
    err_ctx ctx = {e};

    /* Replies carry UTF-8 strings only (docs/PROTOCOL.md): clean the message, and
     * name a tensor only if its name is a valid one. */
    utf8_scrub(e->message);
    if (proto_check_tensor_name(e->tensor, strlen(e->tensor)) != 0)
        e->tensor[0] = '\0';

    srv->counters[COUNTER_ERRORS]++;
    if (code >= ERR_FIRST && code <= ERR_LAST)
        srv->err_counts[code - ERR_FIRST]++;
    srv->op_errors[r->op]++;
    if (r->op == PROTO_OP_PUSH || r->op == PROTO_OP_COMMIT) {
        srv->counters[COUNTER_PUSHES_REJECTED]++;
        if (code >= ERR_FIRST && code <= ERR_LAST)
            srv->push_rejects[code - ERR_FIRST]++;
    }
    log_warn("event=request_error op=%s code=%s tensor=\"%s\" message=\"%s\"",
             proto_op_name(r->op) ? proto_op_name(r->op) : "?", name ? name : "?", e->tensor,
             e->message);
    reply_send(r, build_error, &ctx);
}

/* Fill err and return its code. */
__attribute__((format(printf, 3, 4))) static int
req_fail(store_err *err, int code, const char *fmt, ...)
{
    va_list ap;

    err->code = code;
    err->tensor[0] = '\0';
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    return code;
}

/* Required string field: the value o of key (NULL if absent). */
static int
str_of(const msgpack_object *o, const char *key, const char **p, size_t *len, store_err *err)
{
    *p = NULL;
    *len = 0;
    if (o == NULL || o->type != MSGPACK_OBJECT_STR)
        return req_fail(err, EMAD_EMALFORMED, "key '%s' is %s (expected a string)", key,
                        o == NULL ? "missing" : "not a string");
    *p = o->via.str.ptr;
    *len = o->via.str.size;
    return 0;
}

/* Required string field of a map. */
static int
get_str(const msgpack_object *map, const char *key, const char **p, size_t *len, store_err *err)
{
    return str_of(proto_map_get(map, key), key, p, len, err);
}

/* Unsigned field; *present tells if it was there (NULL: required). */
static int
get_u64(const msgpack_object *map, const char *key, uint64_t *v, int *present, store_err *err)
{
    const msgpack_object *o = proto_map_get(map, key);

    if (present != NULL)
        *present = o != NULL;
    if (o == NULL && present != NULL)
        return 0;
    if (o == NULL || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return req_fail(err, EMAD_EMALFORMED, "key '%s' is %s (expected an unsigned integer)", key,
                        o == NULL ? "missing" : "not an unsigned integer");
    *v = o->via.u64;
    return 0;
}

/* Optional float field (float32, float64 or integer). */
static int
get_float(const msgpack_object *map, const char *key, double *v, store_err *err)
{
    const msgpack_object *o = proto_map_get(map, key);

    if (o != NULL && proto_number(o, v) != 0)
        return req_fail(err, EMAD_EMALFORMED, "key '%s' is not a number", key);
    return 0;
}

/* Optional bool field. */
static int
get_bool(const msgpack_object *map, const char *key, int *v, store_err *err)
{
    const msgpack_object *o = proto_map_get(map, key);

    if (o == NULL)
        return 0;
    if (o->type != MSGPACK_OBJECT_BOOLEAN)
        return req_fail(err, EMAD_EMALFORMED, "key '%s' is not a boolean", key);
    *v = o->via.boolean;
    return 0;
}

/* Copy a possibly unprintable wire string for a message. */
static const char *
printable(char *buf, size_t size, const char *s, size_t len)
{
    size_t n = len < size - 1 ? len : size - 1;

    for (size_t i = 0; i < n; i++)
        buf[i] = (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '"') ? s[i] : '?';
    buf[n] = '\0';
    return buf;
}

/* The values of a push's tensor map, by key: NULL when absent, the first of duplicates. */
typedef struct tensor_keys {
    const msgpack_object *name, *kind, *dtype, *shape, *data, *offset, *as_dtype, *slice;
} tensor_keys;

/* One pass over a tensor map's keys, instead of a proto_map_get() per key (eight per tensor). */
static void
tensor_keys_get(const msgpack_object *map, tensor_keys *k)
{
    /* clang-format off */
#define TENSOR_KEY(f) {#f, sizeof(#f) - 1, offsetof(tensor_keys, f)}
    /* clang-format on */
    static const struct {
        const char *key;
        size_t len, field;
    } known[] = {
        TENSOR_KEY(name), TENSOR_KEY(kind),   TENSOR_KEY(dtype),    TENSOR_KEY(shape),
        TENSOR_KEY(data), TENSOR_KEY(offset), TENSOR_KEY(as_dtype), TENSOR_KEY(slice),
    };
#undef TENSOR_KEY

    memset(k, 0, sizeof(*k));
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *key = &map->via.map.ptr[i].key;

        if (key->type != MSGPACK_OBJECT_STR)
            continue;
        for (size_t j = 0; j < sizeof(known) / sizeof(known[0]); j++) {
            if (key->via.str.size == known[j].len &&
                memcmp(key->via.str.ptr, known[j].key, known[j].len) == 0) {
                const msgpack_object **slot =
                    (const msgpack_object **)(void *)((char *)k + known[j].field);
                if (*slot == NULL)
                    *slot = &map->via.map.ptr[i].val;
                break;
            }
        }
    }
}

/*
 * Decode the `tensors` array of a push into in[0..*n) (malloc'd into *out;
 * names and data point into the request). Structural errors only; the
 * store checks semantics.
 */
static int
decode_tensors(const msgpack_object *root, int txn, store_input **out, size_t *n, store_err *err)
{
    const msgpack_object *arr = proto_map_get(root, PROTO_KEY_TENSORS);
    store_input *in;
    uint32_t bad = 0;

    *out = NULL;
    if (arr == NULL || arr->type != MSGPACK_OBJECT_ARRAY)
        return req_fail(err, EMAD_EMALFORMED, "key 'tensors' is %s (expected an array)",
                        arr == NULL ? "missing" : "not an array");
    if (arr->via.array.size > PROTO_MAX_TENSORS)
        return req_fail(err, EMAD_ELIMIT, "push has %u tensors, at most %d", arr->via.array.size,
                        PROTO_MAX_TENSORS);
    in = xcalloc(arr->via.array.size ? arr->via.array.size : 1, sizeof(*in));
    for (uint32_t i = 0; i < arr->via.array.size; i++) {
        const msgpack_object *t = &arr->via.array.ptr[i], *o;
        tensor_keys k;

        bad = i;
        const char *s;
        size_t len;
        int present;

        if (t->type != MSGPACK_OBJECT_MAP) {
            req_fail(err, EMAD_EMALFORMED, "tensors[%u] is not a map", i);
            goto fail;
        }
        tensor_keys_get(t, &k);
        if (str_of(k.name, PROTO_KEY_NAME, &in[i].name, &in[i].name_len, err) != 0)
            goto fail_named;
        if (str_of(k.kind, PROTO_KEY_KIND, &s, &len, err) != 0)
            goto fail_named;
        in[i].kind = proto_kind_from_name(s, len);
        if (in[i].kind < 0) {
            char buf[32];
            req_fail(err, EMAD_EMALFORMED, "kind '%s' is not param or buffer",
                     printable(buf, sizeof(buf), s, len));
            goto fail_named;
        }
        if (str_of(k.dtype, PROTO_KEY_DTYPE, &s, &len, err) != 0)
            goto fail_named;
        if ((in[i].dtype = dtype_from_name(s, len)) == EMAD_DTYPE_INVALID) {
            char buf[32];
            req_fail(err, EMAD_EDTYPE, "unknown dtype '%s'", printable(buf, sizeof(buf), s, len));
            goto fail_named;
        }
        o = k.shape;
        if (o == NULL || o->type != MSGPACK_OBJECT_ARRAY) {
            req_fail(err, EMAD_EMALFORMED, "key 'shape' is %s (expected an array)",
                     o == NULL ? "missing" : "not an array");
            goto fail_named;
        }
        if (o->via.array.size > EMAD_MAX_NDIM) {
            req_fail(err, EMAD_ELIMIT, "shape has %u dimensions, at most %d", o->via.array.size,
                     EMAD_MAX_NDIM);
            goto fail_named;
        }
        in[i].ndim = o->via.array.size;
        for (uint32_t d = 0; d < in[i].ndim; d++) {
            if (o->via.array.ptr[d].type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
                req_fail(err, EMAD_EMALFORMED, "shape[%u] is not an unsigned integer", d);
                goto fail_named;
            }
            in[i].shape[d] = o->via.array.ptr[d].via.u64;
        }
        o = k.data;
        if (o == NULL || o->type != MSGPACK_OBJECT_BIN) {
            req_fail(err, EMAD_EMALFORMED, "key 'data' is %s (expected bin)",
                     o == NULL ? "missing" : "not bin");
            goto fail_named;
        }
        in[i].data = o->via.bin.ptr; /* points into the request: any alignment */
        in[i].len = o->via.bin.size;
        if ((present = k.offset != NULL)) {
            if (k.offset->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
                req_fail(err, EMAD_EMALFORMED,
                         "key 'offset' is not an unsigned integer (expected an unsigned integer)");
                goto fail_named;
            }
            in[i].offset = k.offset->via.u64;
        }
        if (present && !txn && in[i].offset != 0) {
            req_fail(err, EMAD_EMALFORMED, "'offset' is only allowed in a transaction");
            goto fail_named;
        }
        if ((o = k.as_dtype) != NULL) {
            if (o->type != MSGPACK_OBJECT_STR ||
                (in[i].as_dtype = dtype_from_name(o->via.str.ptr, o->via.str.size)) ==
                    EMAD_DTYPE_INVALID) {
                req_fail(err, EMAD_EDTYPE, "key 'as_dtype' is not a dtype name");
                goto fail_named;
            }
        }
        if ((o = k.slice) != NULL) {
            if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 2 ||
                o->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
                o->via.array.ptr[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
                req_fail(err, EMAD_EMALFORMED, "key 'slice' is not [start, count]");
                goto fail_named;
            }
            in[i].start = o->via.array.ptr[0].via.u64;
            in[i].count = o->via.array.ptr[1].via.u64;
            if (in[i].count == 0) {
                req_fail(err, EMAD_ERANGE, "a slice needs a count > 0");
                goto fail_named;
            }
        }
    }
    *out = in;
    *n = arr->via.array.size;
    return 0;

fail_named:
    /* Name the tensor at fault when its name decoded and is a valid name (not raw bytes). */
    if (in[bad].name != NULL && proto_check_tensor_name(in[bad].name, in[bad].name_len) == 0) {
        char msg[sizeof(err->message)];
        size_t nl =
            in[bad].name_len < sizeof(err->tensor) - 1 ? in[bad].name_len : sizeof(err->tensor) - 1;
        int shown = nl > 200 ? 200 : (int)nl;

        memcpy(err->tensor, in[bad].name, nl);
        err->tensor[nl] = '\0';
        snprintf(msg, sizeof(msg), "tensor '%.*s': %.300s", shown, err->tensor, err->message);
        memcpy(err->message, msg, sizeof(msg));
    }
fail:
    free(in);
    return err->code;
}

/* hello: the daemon's identity and limits. */
static void
build_hello(msgpack_packer *pk, const void *ctx)
{
    const server *srv = ctx;

    msgpack_pack_map(pk, 10);
    proto_pack_kv_u64(pk, PROTO_KEY_V, PROTO_VERSION);
    proto_pack_str(pk, PROTO_KEY_OK);
    msgpack_pack_true(pk);
    proto_pack_str(pk, PROTO_KEY_SERVER);
    proto_pack_str(pk, PROTO_VAL_SERVER_NAME);
    proto_pack_str(pk, PROTO_KEY_VERSION);
    proto_pack_str(pk, PACKAGE_VERSION);
    proto_pack_kv_u64(pk, PROTO_KEY_PROTOCOL, PROTO_VERSION);
    proto_pack_kv_u64(pk, PROTO_KEY_MAX_MESSAGE_BYTES, srv->cfg.max_message_bytes);
    proto_pack_kv_u64(pk, PROTO_KEY_MAX_TENSORS, PROTO_MAX_TENSORS);
    proto_pack_kv_u64(pk, PROTO_KEY_MAX_NAME_BYTES, EMAD_MAX_NAME_BYTES);
    proto_pack_kv_u64(pk, PROTO_KEY_MAX_NDIM, EMAD_MAX_NDIM);
    proto_pack_kv_u64(pk, PROTO_KEY_TXN_TIMEOUT_MS, srv->cfg.txn_timeout_ms);
}

/* Reply with no keys beyond v and ok. */
static void
build_empty(msgpack_packer *pk, const void *ctx)
{
    (void)ctx;
    pack_head(pk, 1, 0);
}

static void
build_created(msgpack_packer *pk, const void *ctx)
{
    pack_head(pk, 1, 1);
    proto_pack_str(pk, PROTO_KEY_CREATED);
    if (*(const int *)ctx)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
}

/* Read the configuration keys of a create or configure request over cfg. */
static int
get_config(const msgpack_object *root, emad_model_config *cfg, emaconf_strings *strings,
           store_err *err)
{
    char why[256];
    int rc = emaconf_unpack(root, cfg, strings, why, sizeof(why));

    if (rc != 0)
        return req_fail(err, rc, "%s", why);
    return 0;
}

/* Log a model's configuration as key=value fields. */
static void
log_config(const char *event, const char *name, size_t len, const emad_model_config *cfg)
{
    char decays[256], g[32], p[32], md[32], d[32];
    int off = 0;

    decays[0] = '\0';
    for (size_t i = 0; i < cfg->ndecays && off < (int)sizeof(decays); i++)
        off += snprintf(decays + off, sizeof(decays) - (size_t)off, "%s%s", i ? "," : "",
                        emaconf_fmt_double(d, sizeof(d), cfg->decays[i]));
    log_info("event=%s model=%.*s decays=%s schedule=%s update_after_step=%llu inv_gamma=%s "
             "power=%s min_decay=%s step_gap=%s buffers=%s nonfinite=%s writers=%u "
             "copy_patterns=%zu ignore_patterns=%zu",
             event, (int)len, name, decays, emaconf_schedule_name(cfg->schedule),
             (unsigned long long)cfg->update_after_step,
             emaconf_fmt_double(g, sizeof(g), cfg->inv_gamma),
             emaconf_fmt_double(p, sizeof(p), cfg->power),
             emaconf_fmt_double(md, sizeof(md), cfg->min_decay),
             emaconf_step_gap_name(cfg->step_gap), emaconf_buffers_name(cfg->buffers),
             emaconf_nonfinite_name(cfg->nonfinite), cfg->writers, cfg->ncopy, cfg->nignore);
}

static int
handle_create(req *r, store_err *err)
{
    const char *name;
    size_t len;
    int exist_ok = 0, created = 0;
    emad_model_config cfg;
    emaconf_strings *strings = xmalloc(sizeof(*strings));

    emaconf_init(&cfg);
    if (get_str(r->root, PROTO_KEY_MODEL, &name, &len, err) || get_config(r->root, &cfg, strings, err) ||
        get_bool(r->root, PROTO_KEY_EXIST_OK, &exist_ok, err) ||
        store_create_model(r->srv->store, name, len, &cfg, exist_ok, &created, err)) {
        free(strings);
        return err->code;
    }
    if (created)
        log_config("model_created", name, len, &cfg);
    free(strings);
    reply_send(r, build_created, &created);
    return 0;
}

static int
handle_configure(req *r, store_err *err)
{
    const char *name;
    size_t len;
    const model *m;
    emad_model_config cfg;
    emaconf_strings *strings;

    if (get_str(r->root, PROTO_KEY_MODEL, &name, &len, err))
        return err->code;
    if ((m = store_model_find(r->srv->store, name, len)) == NULL)
        return req_fail(err, EMAD_ENOMODEL, "no model '%.*s'", (int)(len > 128 ? 128 : len), name);
    cfg = m->cfg; /* absent keys keep their values; patterns borrowed from the model */
    strings = xmalloc(sizeof(*strings));
    if (get_config(r->root, &cfg, strings, err) ||
        store_configure(r->srv->store, name, len, &cfg, err)) {
        free(strings);
        return err->code;
    }
    log_config("model_configured", name, len, &m->cfg);
    free(strings);
    reply_send(r, build_empty, NULL);
    return 0;
}

static int
handle_drop(req *r, store_err *err)
{
    const char *name;
    size_t len;

    if (get_str(r->root, PROTO_KEY_MODEL, &name, &len, err) ||
        store_drop_model(r->srv->store, name, len, err))
        return err->code;
    if (r->srv->persist != NULL) {
        char buf[EMAD_MAX_MODEL_NAME_BYTES + 1];
        persist_forget(r->srv->persist, printable(buf, sizeof(buf), name, len));
    }
    log_info("event=model_dropped model=%.*s", (int)len, name);
    reply_send(r, build_empty, NULL);
    return 0;
}

/* Pack a push/commit result. */
static void
build_result(msgpack_packer *pk, const void *ctx)
{
    const store_result *res = ctx;

    pack_head(pk, 1, 7);
    proto_pack_kv_u64(pk, PROTO_KEY_APPLIED, res->applied);
    proto_pack_kv_u64(pk, PROTO_KEY_STALE, res->stale);
    proto_pack_kv_u64(pk, PROTO_KEY_SKIPPED, res->skipped);
    proto_pack_kv_u64(pk, PROTO_KEY_IGNORED, res->ignored);
    proto_pack_str(pk, PROTO_KEY_PENDING);
    if (res->pending)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
    proto_pack_str(pk, PROTO_KEY_STALE_NAMES);
    msgpack_pack_array(pk, res->nstale_names);
    for (size_t i = 0; i < res->nstale_names; i++)
        proto_pack_str(pk, res->stale_names[i]);
    proto_pack_kv_u64(pk, PROTO_KEY_STEP, res->step);
}

/* Count a push's outcome. */
static void
count_result(server *srv, const store_result *res)
{
    srv->counters[COUNTER_TENSORS_APPLIED] += res->applied;
    srv->counters[COUNTER_TENSORS_STALE] += res->stale;
    srv->counters[COUNTER_TENSORS_SKIPPED_NONFINITE] += res->skipped;
    srv->counters[COUNTER_TENSORS_IGNORED] += res->ignored;
    srv->counters[COUNTER_WRITER_PUSHES_PENDING] += res->pending != 0;
    srv->pushes_stale += res->applied == 0 && res->stale > 0;
}

static void
build_staged(msgpack_packer *pk, const void *ctx)
{
    pack_head(pk, 1, 1);
    proto_pack_kv_u64(pk, PROTO_KEY_STAGED, *(const uint64_t *)ctx);
}

static void observe_latency(server *srv, int op, uint64_t t0);
static void run_parked(server *srv);

/* A request answered after handle() returned: op with routing header ctrl, at the loop's time. */
static void
late_begin(req *r, store_err *err, server *srv, int op, void *ctrl)
{
    memset(r, 0, sizeof(*r));
    r->srv = srv;
    r->op = op;
    r->ctrl = ctrl;
    r->now_ms = uv_now(srv->loop);
    err->tensor[0] = '\0';
}

/* Finish a late request: report err if rc != 0, else count it; free the unused header. */
static void
late_end(req *r, int rc, const store_err *err, uint64_t t0)
{
    if (rc != 0) {
        reply_error(r, err);
    } else {
        r->srv->op_ok[r->op]++;
        observe_latency(r->srv, r->op, t0);
    }
    if (r->ctrl != NULL)
        nn_freemsg(r->ctrl);
}

/*
 * Hold nanomsg's I/O thread on its CPU (on), or let the scheduler place it
 * again (off). Large pushes hold it from their first chunk averaged on the
 * threadpool until the daemon has been idle for cfg.idle_release_ms: left free,
 * the scheduler moved it between CPUs at about every message of a push
 * that followed a pause, and such pushes ran 15-25% slower; held all the
 * time, it lost ~9% to many concurrent small pushes from clients on the
 * same CPUs (docs/OPERATIONS.md#cpus).
 */
static void
io_hold(server *srv, int on)
{
    cpu_set_t one;
    int rc;

    if (srv->io.tid == 0 || srv->io.held == on)
        return;
    CPU_ZERO(&one);
    CPU_SET(srv->io.cpu, &one);
    rc = on ? sched_setaffinity(srv->io.tid, sizeof(one), &one)
            : sched_setaffinity(srv->io.tid, sizeof(srv->io.all), &srv->io.all);
    if (rc != 0) {
        log_warn("event=io_thread_affinity_failed tid=%d error=\"%s\" (left to the scheduler)",
                 (int)srv->io.tid, strerror(errno));
        srv->io.tid = 0;
        return;
    }
    srv->io.held = on;
    log_debug("event=io_thread_%s cpu=%d", on ? "held" : "released", srv->io.cpu);
}

/* Can this request be answered later, from a threadpool callback? */
static int
can_defer(const req *r)
{
    return r->capture == NULL && r->body != NULL && r->srv->loop != NULL && !r->srv->closing;
}

/* Threadpool: run this part's share of the tasks. */
static void
async_work(uv_work_t *w)
{
    async_req *a = w->data;
    size_t part = (size_t)(w - a->work);
    const task_list *tl = a->tl;
    size_t lo = tl->n * part / (size_t)a->parts, hi = tl->n * (part + 1) / (size_t)a->parts;

    for (size_t i = lo; i < hi; i++) /* in order: a piece's tasks share its values in cache */
        task_run(&tl->v[i]);
}

/* Loop: one part is done; after the last, answer the request. */
static void
async_done(uv_work_t *w, int status)
{
    async_req *a = w->data;
    server *srv = a->srv;
    store_err err;
    req r;
    int rc = 0;

    (void)status; /* never cancelled */
    if (--a->left > 0)
        return;
    uv_update_time(srv->loop);
    late_begin(&r, &err, srv, a->op, a->ctrl);
    if (a->job != NULL) {
        rc = store_job_done(srv->store, a->job, r.now_ms, &err);
        nn_freemsg(a->body);
        if (a->early) {
            /* Answered already; a failure is kept by the transaction for its commit. */
            srv->early--;
            free(a);
            run_parked(srv);
            return;
        }
        if (rc == 0)
            reply_send(&r, build_staged, &a->staged);
    } else {
        for (size_t i = 0; i < a->nblobs; i++)
            store_blob_unref(a->blobs[i]);
        free(a->blobs);
        task_list_free(&a->tasks);
        reply_send_msg(&r, a->msg, a->len);
    }
    late_end(&r, rc, &err, a->t0);
    srv->last_request_ms = uv_now(srv->loop);
    srv->trimmed = 0;
    if (a->job != NULL)
        run_parked(srv);
    free(a);
}

/* Hand a's tasks to the threadpool, one part per CPU; the request is answered by async_done. */
static void
async_start(req *r, async_req *a)
{
    server *srv = r->srv;
    size_t ntasks = a->tl->n;

    a->srv = srv;
    a->op = r->op;
    a->ctrl = r->ctrl;
    r->ctrl = NULL;
    a->t0 = r->t0;
    r->deferred = 1;
    a->parts = srv->parts;
    if ((size_t)a->parts > ntasks)
        a->parts = ntasks > 0 ? (int)ntasks : 1;
    a->left = a->parts;
    for (int k = 0; k < a->parts; k++) {
        a->work[k].data = a;
        (void)uv_queue_work(srv->loop, &a->work[k], async_work, async_done);
    }
}

/*
 * Send a reply carrying data_bytes of tensor data with the data copied on
 * the threadpool: the message is sized and its headers packed here, the
 * blobs referenced until the copies are done. Returns 0 (nothing done)
 * when the reply should be sent inline instead.
 */
static int
reply_send_async(req *r, build_fn build, const void *ctx, uint64_t data_bytes)
{
    async_req *a;
    wbuf w = {NULL, 0, NULL, NULL, 0, 0};
    size_t len;
    void *msg;

    if (!can_defer(r) || data_bytes < ASYNC_MIN_BYTES)
        return 0;
    a = xcalloc(1, sizeof(*a));
    w.defer = &a->tasks;
    if ((msg = reply_pack(build, ctx, &w, &len)) == NULL) {
        free(a);
        return 0; /* the inline reply reports it */
    }
    a->tl = &a->tasks;
    a->msg = msg;
    a->len = len;
    a->blobs = w.blobs;
    a->nblobs = w.nblobs;
    async_start(r, a);
    return 1;
}

static int
handle_push(req *r, store_err *err)
{
    const char *model_name = NULL;
    size_t len = 0, n = 0;
    uint64_t step = 0, txn = 0, writer = 0;
    int has_txn = 0, has_step = 0, has_writer = 0, seed = 0, rc;
    store_input *in = NULL;

    if (get_u64(r->root, PROTO_KEY_TXN, &txn, &has_txn, err) != 0 ||
        get_u64(r->root, PROTO_KEY_WRITER, &writer, &has_writer, err) != 0)
        return err->code;
    if (has_writer && has_txn)
        return req_fail(err, EMAD_EMALFORMED,
                        "'writer' belongs in begin, not in a transaction's push");
    if (get_bool(r->root, PROTO_KEY_SEED, &seed, err) != 0)
        return err->code;
    if (seed && (has_txn || has_writer))
        return req_fail(err, EMAD_EMALFORMED, "a seed is one message, without 'txn' or 'writer'");
    if (writer > UINT32_MAX)
        return req_fail(err, EMAD_ERANGE, "writer %llu is out of range",
                        (unsigned long long)writer);
    if (!has_txn && (get_str(r->root, PROTO_KEY_MODEL, &model_name, &len, err) ||
                     get_u64(r->root, PROTO_KEY_STEP, &step, NULL, err)))
        return err->code;
    if (has_txn) {
        const msgpack_object *o = proto_map_get(r->root, PROTO_KEY_MODEL);
        if (o != NULL && get_str(r->root, PROTO_KEY_MODEL, &model_name, &len, err) != 0)
            return err->code;
        if (get_u64(r->root, PROTO_KEY_STEP, &step, &has_step, err) != 0)
            return err->code;
    }
    if (decode_tensors(r->root, has_txn, &in, &n, err) != 0)
        return err->code;
    if (has_txn) {
        uint64_t staged = 0;
        store_job *job = NULL;
        rc = store_txn_push_job(r->srv->store, txn, model_name, len, has_step, step, in, n,
                                r->now_ms, &staged, &job, err);
        free(in); /* the job's tasks point into the request message, not into `in` */
        if (rc != 0)
            return rc;
        if (job != NULL && can_defer(r) && job->tasks.bytes >= ASYNC_MIN_BYTES) {
            async_req *a = xcalloc(1, sizeof(*a));
            io_hold(r->srv, 1);
            a->job = job;
            a->tl = &job->tasks;
            a->staged = staged;
            a->body = *r->body; /* kept until the tasks have read it */
            *r->body = NULL;
            if ((a->early = r->srv->early < EARLY_MAX)) {
                r->srv->early++;
                reply_send(r, build_staged, &staged);
            }
            async_start(r, a);
            r->deferred = !a->early; /* an early reply is counted now, by handle() */
            return 0;
        }
        if (job != NULL && (rc = store_job_run(r->srv->store, job, r->now_ms, err)) != 0)
            return rc;
        reply_send(r, build_staged, &staged);
        return 0;
    }
    store_result res;
    if (seed)
        rc = store_seed(r->srv->store, model_name, len, step, in, n, r->now_ms, &res, err);
    else
        rc = store_push(r->srv->store, model_name, len, step, (uint32_t)writer, in, n, r->now_ms,
                        &res, err);
    if (rc == 0 && seed)
        log_info("event=model_seeded model=%.*s step=%llu tensors=%llu", (int)len, model_name,
                 (unsigned long long)step, (unsigned long long)res.applied);
    free(in);
    if (rc != 0)
        return rc;
    count_result(r->srv, &res);
    log_debug("event=push model=%.*s step=%llu applied=%llu stale=%llu", (int)len, model_name,
              (unsigned long long)step, (unsigned long long)res.applied,
              (unsigned long long)res.stale);
    reply_send(r, build_result, &res);
    return 0;
}

static void
build_txn(msgpack_packer *pk, const void *ctx)
{
    pack_head(pk, 1, 1);
    proto_pack_kv_u64(pk, PROTO_KEY_TXN, *(const uint64_t *)ctx);
}

static int
handle_begin(req *r, store_err *err)
{
    const char *name;
    size_t len;
    uint64_t step, id, writer = 0;
    int has_writer;

    if (get_str(r->root, PROTO_KEY_MODEL, &name, &len, err) || get_u64(r->root, PROTO_KEY_STEP, &step, NULL, err) ||
        get_u64(r->root, PROTO_KEY_WRITER, &writer, &has_writer, err))
        return err->code;
    if (writer > UINT32_MAX)
        return req_fail(err, EMAD_ERANGE, "writer %llu is out of range",
                        (unsigned long long)writer);
    if (store_txn_begin(r->srv->store, name, len, step, (uint32_t)writer, r->now_ms, &id, err))
        return err->code;
    r->srv->counters[COUNTER_TXN_BEGUN]++;
    log_debug("event=txn_begin model=%.*s step=%llu txn=%llu", (int)len, name,
              (unsigned long long)step, (unsigned long long)id);
    reply_send(r, build_txn, &id);
    return 0;
}

/* Commit transaction id and answer r. */
static int
commit_txn(req *r, uint64_t id, store_err *err)
{
    store_result res;

    if (store_txn_commit(r->srv->store, id, r->now_ms, &res, err) != 0)
        return err->code;
    r->srv->counters[COUNTER_TXN_COMMITTED]++;
    count_result(r->srv, &res);
    log_debug("event=txn_commit txn=%llu applied=%llu stale=%llu step=%llu", (unsigned long long)id,
              (unsigned long long)res.applied, (unsigned long long)res.stale,
              (unsigned long long)res.step);
    reply_send(r, build_result, &res);
    return 0;
}

static int
handle_commit(req *r, store_err *err)
{
    uint64_t id;

    if (get_u64(r->root, PROTO_KEY_TXN, &id, NULL, err) != 0)
        return err->code;
    if (can_defer(r) && store_txn_inflight(r->srv->store, id) > 0) {
        parked *p = xcalloc(1, sizeof(*p)), **pp;
        p->txn = id;
        p->ctrl = r->ctrl;
        p->t0 = r->t0;
        r->ctrl = NULL;
        r->deferred = 1;
        r->srv->counters[COUNTER_COMMITS_WAITED]++;
        for (pp = &r->srv->parked; *pp != NULL; pp = &(*pp)->next)
            ; /* in arrival order */
        *pp = p;
        return 0;
    }
    return commit_txn(r, id, err);
}

/* Loop: commit the parked transactions whose jobs are all done (or that are gone). */
static void
run_parked(server *srv)
{
    parked **pp = &srv->parked;

    while (*pp != NULL) {
        parked *p = *pp;
        store_err err;
        req r;

        if (store_txn_inflight(srv->store, p->txn) > 0) {
            pp = &p->next;
            continue;
        }
        *pp = p->next;
        late_begin(&r, &err, srv, PROTO_OP_COMMIT, p->ctrl);
        late_end(&r, commit_txn(&r, p->txn, &err), &err, p->t0);
        free(p);
    }
}

static int
handle_abort(req *r, store_err *err)
{
    uint64_t id;

    if (get_u64(r->root, PROTO_KEY_TXN, &id, NULL, err) || store_txn_abort(r->srv->store, id, err))
        return err->code;
    r->srv->counters[COUNTER_TXN_ABORTED]++;
    reply_send(r, build_empty, NULL);
    return 0;
}

/* Pack `len` bytes of a view tensor's data from byte offset `off`, in its pull dtype. */
static void
pack_data(msgpack_packer *pk, const view_tensor *vt, uint64_t off, uint64_t len)
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

/* Context of a pull reply. */
typedef struct pull_ctx {
    const store_view *view;
    int inline_data;
    uint64_t session;
} pull_ctx;

/* Pack one tensor's description (and data when inline). */
static void
pack_view_tensor(msgpack_packer *pk, const view_tensor *vt, int with_data)
{
    msgpack_pack_map(pk, 7 + with_data);
    proto_pack_str(pk, PROTO_KEY_NAME);
    msgpack_pack_str(pk, vt->name_len);
    msgpack_pack_str_body(pk, vt->name, vt->name_len);
    proto_pack_str(pk, PROTO_KEY_KIND);
    proto_pack_str(pk, proto_kind_name(vt->kind));
    proto_pack_str(pk, PROTO_KEY_DTYPE);
    proto_pack_str(pk, dtype_name(vt->dtype));
    proto_pack_str(pk, PROTO_KEY_SHAPE);
    msgpack_pack_array(pk, vt->ndim);
    for (uint32_t d = 0; d < vt->ndim; d++)
        msgpack_pack_uint64(pk, vt->shape[d]);
    proto_pack_kv_u64(pk, PROTO_KEY_STEP, vt->step);
    proto_pack_kv_u64(pk, PROTO_KEY_NBYTES, vt->nbytes);
    proto_pack_str(pk, PROTO_KEY_UPDATE);
    proto_pack_str(pk, vt->averaged ? PROTO_VAL_UPDATE_AVERAGE : PROTO_VAL_UPDATE_COPY);
    if (with_data) {
        proto_pack_str(pk, PROTO_KEY_DATA);
        pack_data(pk, vt, 0, vt->nbytes);
    }
}

static void
build_pull(msgpack_packer *pk, const void *vctx)
{
    const pull_ctx *ctx = vctx;
    const store_view *v = ctx->view;

    pack_head(pk, 1, ctx->inline_data ? 3 : 4);
    proto_pack_str(pk, PROTO_KEY_MODEL);
    proto_pack_str(pk, v->model);
    proto_pack_kv_u64(pk, PROTO_KEY_STEP, v->step);
    proto_pack_str(pk, PROTO_KEY_TENSORS);
    msgpack_pack_array(pk, v->ntensors);
    for (size_t i = 0; i < v->ntensors; i++)
        pack_view_tensor(pk, &v->tensors[i], ctx->inline_data);
    if (!ctx->inline_data)
        proto_pack_kv_u64(pk, PROTO_KEY_SESSION, ctx->session);
}

static int
handle_pull(req *r, store_err *err)
{
    server *srv = r->srv;
    const msgpack_object *names = proto_map_get(r->root, PROTO_KEY_TENSORS);
    const char **np = NULL;
    size_t *nl = NULL, n = 0, len;
    const char *model_name;
    uint64_t max_reply = srv->cfg.max_message_bytes, max_inline = UINT64_MAX;
    int present;
    store_view *v = NULL;
    pull_ctx ctx;
    view_options vo = {0, 0.0, EMAD_DTYPE_INVALID};

    if (get_str(r->root, PROTO_KEY_MODEL, &model_name, &len, err) ||
        get_u64(r->root, PROTO_KEY_MAX_REPLY_BYTES, &max_reply, &present, err) ||
        get_u64(r->root, PROTO_KEY_INLINE_BYTES, &max_inline, &present, err))
        return err->code;
    if (proto_map_get(r->root, PROTO_KEY_DECAY) != NULL) {
        vo.has_decay = 1;
        if (get_float(r->root, PROTO_KEY_DECAY, &vo.decay, err) != 0)
            return err->code;
    }
    if (proto_map_get(r->root, PROTO_KEY_DTYPE) != NULL) {
        const char *dn;
        size_t dl;
        char buf[32];
        if (get_str(r->root, PROTO_KEY_DTYPE, &dn, &dl, err) != 0)
            return err->code;
        if (dl == PROTO_KEY_LEN(PROTO_VAL_DTYPE_SHADOW) && memcmp(dn, PROTO_VAL_DTYPE_SHADOW, dl) == 0)
            vo.dtype = VIEW_DTYPE_SHADOW;
        else if ((vo.dtype = dtype_from_name(dn, dl)) == EMAD_DTYPE_INVALID)
            return req_fail(err, EMAD_EDTYPE, "unknown dtype '%s'",
                            printable(buf, sizeof(buf), dn, dl));
    }
    if (max_reply > srv->cfg.max_message_bytes)
        max_reply = srv->cfg.max_message_bytes;
    if (max_inline > max_reply)
        max_inline = max_reply;
    if (max_reply < PROTO_REPLY_OVERHEAD * 2)
        return req_fail(err, EMAD_ERANGE, "max_reply_bytes must be at least %d",
                        PROTO_REPLY_OVERHEAD * 2);
    if (names != NULL) {
        if (names->type != MSGPACK_OBJECT_ARRAY)
            return req_fail(err, EMAD_EMALFORMED, "key 'tensors' is not an array");
        n = names->via.array.size;
        np = xcalloc(n ? n : 1, sizeof(*np));
        nl = xcalloc(n ? n : 1, sizeof(*nl));
        for (size_t i = 0; i < n; i++) {
            const msgpack_object *e = &names->via.array.ptr[i];
            if (e->type != MSGPACK_OBJECT_STR) {
                free(np);
                free(nl);
                return req_fail(err, EMAD_EMALFORMED, "tensors[%zu] is not a string", i);
            }
            np[i] = e->via.str.ptr;
            nl[i] = e->via.str.size;
        }
    }
    int rc = store_view_create(srv->store, model_name, len, names != NULL ? np : NULL, nl, n, &vo,
                               &v, err);
    free(np);
    free(nl);
    if (rc != 0)
        return rc;
    ctx.view = v;
    ctx.inline_data = 1;
    ctx.session = 0;
    if (reply_size(build_pull, &ctx) <= max_inline) {
        uint64_t total = 0;
        for (size_t i = 0; i < v->ntensors; i++)
            total += v->tensors[i].nbytes;
        if (!reply_send_async(r, build_pull, &ctx, total))
            reply_send(r, build_pull, &ctx);
        store_view_free(v);
        return 0;
    }
    v->max_reply = max_reply;
    if (store_view_register(srv->store, v, r->now_ms, err) != 0) {
        store_view_free(v);
        return err->code;
    }
    ctx.inline_data = 0;
    ctx.session = v->id;
    if (reply_size(build_pull, &ctx) > max_reply) {
        (void)store_view_release(srv->store, v->id, err);
        return req_fail(err, EMAD_ELIMIT,
                        "the tensor list alone exceeds max_reply_bytes %llu: pull fewer tensors",
                        (unsigned long long)max_reply);
    }
    log_debug("event=pull_session model=%s session=%llu tensors=%zu", v->model,
              (unsigned long long)v->id, v->ntensors);
    reply_send(r, build_pull, &ctx);
    return 0;
}

/* Context of a read reply. */
typedef struct read_ctx {
    const store_view *view;
    const msgpack_object *ranges;
} read_ctx;

static void
build_read(msgpack_packer *pk, const void *vctx)
{
    const read_ctx *ctx = vctx;
    const msgpack_object *rs = ctx->ranges;

    pack_head(pk, 1, 1);
    proto_pack_str(pk, PROTO_KEY_DATA);
    msgpack_pack_array(pk, rs->via.array.size);
    for (uint32_t i = 0; i < rs->via.array.size; i++) {
        const msgpack_object *t = rs->via.array.ptr[i].via.array.ptr;
        pack_data(pk, &ctx->view->tensors[t[0].via.u64], t[1].via.u64, t[2].via.u64);
    }
}

static int
handle_read(req *r, store_err *err)
{
    const msgpack_object *rs = proto_map_get(r->root, PROTO_KEY_RANGES);
    uint64_t id, total = 0;
    store_view *v;
    read_ctx ctx;

    if (get_u64(r->root, PROTO_KEY_SESSION, &id, NULL, err) != 0)
        return err->code;
    if (rs == NULL || rs->type != MSGPACK_OBJECT_ARRAY)
        return req_fail(err, EMAD_EMALFORMED, "key 'ranges' is %s (expected an array)",
                        rs == NULL ? "missing" : "not an array");
    if (rs->via.array.size > PROTO_MAX_RANGES)
        return req_fail(err, EMAD_ELIMIT, "at most %d ranges", PROTO_MAX_RANGES);
    if ((v = store_view_get(r->srv->store, id, r->now_ms)) == NULL)
        return req_fail(err, EMAD_ENOSESSION, "no pull session %llu (unknown, expired or released)",
                        (unsigned long long)id);
    for (uint32_t i = 0; i < rs->via.array.size; i++) {
        const msgpack_object *o = &rs->via.array.ptr[i];
        const view_tensor *vt;
        uint64_t idx, off, len;
        size_t isz;

        if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 3 ||
            o->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
            o->via.array.ptr[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
            o->via.array.ptr[2].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            return req_fail(err, EMAD_EMALFORMED,
                            "ranges[%u] is not an array [index, offset, length] of uints", i);
        idx = o->via.array.ptr[0].via.u64;
        off = o->via.array.ptr[1].via.u64;
        len = o->via.array.ptr[2].via.u64;
        if (idx >= v->ntensors)
            return req_fail(err, EMAD_ERANGE, "ranges[%u]: tensor index %llu >= %zu", i,
                            (unsigned long long)idx, v->ntensors);
        vt = &v->tensors[idx];
        isz = dtype_size(vt->dtype);
        if (off > vt->nbytes || len > vt->nbytes - off)
            return req_fail(err, EMAD_ERANGE,
                            "ranges[%u]: [%llu, +%llu) is past the %llu bytes of '%s'", i,
                            (unsigned long long)off, (unsigned long long)len,
                            (unsigned long long)vt->nbytes, vt->name);
        if (vt->sdtype != vt->dtype && (off % isz != 0 || len % isz != 0))
            return req_fail(err, EMAD_ERANGE,
                            "ranges[%u]: offset and length must be multiples of %zu for '%s'", i,
                            isz, vt->name);
        total += len;
    }
    if (total + PROTO_REPLY_OVERHEAD + 16ULL * rs->via.array.size > v->max_reply)
        return req_fail(err, EMAD_ELIMIT, "ranges total %llu bytes; at most %llu per read",
                        (unsigned long long)total,
                        (unsigned long long)(v->max_reply - PROTO_REPLY_OVERHEAD));
    ctx.view = v;
    ctx.ranges = rs;
    if (!reply_send_async(r, build_read, &ctx, total))
        reply_send(r, build_read, &ctx);
    return 0;
}

static int
handle_release(req *r, store_err *err)
{
    uint64_t id;

    if (get_u64(r->root, PROTO_KEY_SESSION, &id, NULL, err) || store_view_release(r->srv->store, id, err))
        return err->code;
    reply_send(r, build_empty, NULL);
    return 0;
}

/* A snapshot request whose reply waits for the files to be durable. */
typedef struct snap_wait {
    server *srv;
    void *ctrl;  /* routing header of the request */
    int capture; /* server_process(): answered at once, nothing deferred */
} snap_wait;

static void
build_snapshot(msgpack_packer *pk, const void *ctx)
{
    pack_head(pk, 1, 1);
    proto_pack_kv_u64(pk, PROTO_KEY_STEP, *(const uint64_t *)ctx);
}

/* persist_cb: the snapshot is durable (rc 0) or failed: answer the request. */
static void
snapshot_done(void *arg, int rc, const char *message, uint64_t step)
{
    snap_wait *w = arg;
    req r;

    memset(&r, 0, sizeof(r));
    r.srv = w->srv;
    r.op = PROTO_OP_SNAPSHOT;
    r.ctrl = w->ctrl;
    if (rc == 0) {
        w->srv->op_ok[PROTO_OP_SNAPSHOT]++;
        reply_send(&r, build_snapshot, &step);
    } else {
        store_err err;
        req_fail(&err, rc == EMAD_ENOMODEL ? rc : EMAD_ESNAPSHOT, "snapshot failed: %s", message);
        reply_error(&r, &err);
    }
    if (r.ctrl != NULL)
        nn_freemsg(r.ctrl);
    free(w);
}

static int
handle_snapshot(req *r, store_err *err)
{
    const msgpack_object *o = proto_map_get(r->root, PROTO_KEY_MODEL);
    char buf[EMAD_MAX_MODEL_NAME_BYTES + 1];
    const char *name = NULL;
    size_t len = 0;
    snap_wait *w;

    if (r->srv->persist == NULL || r->capture != NULL)
        return req_fail(err, EMAD_ENOSTATE,
                        "this daemon runs without --state-dir: there is nowhere to snapshot to");
    if (o != NULL && get_str(r->root, PROTO_KEY_MODEL, &name, &len, err) != 0)
        return err->code;
    if (name != NULL && store_model_find(r->srv->store, name, len) == NULL)
        return req_fail(err, EMAD_ENOMODEL, "no model '%s'",
                        printable(buf, sizeof(buf), name, len));
    w = xcalloc(1, sizeof(*w));
    w->srv = r->srv;
    w->ctrl = r->ctrl;
    r->ctrl = NULL; /* the reply is sent later, with this header */
    persist_request(r->srv->persist, name != NULL ? printable(buf, sizeof(buf), name, len) : NULL,
                    snapshot_done, w);
    return 0;
}

/* A list reply's context: the store, the time, and one model (or NULL for all). */
typedef struct list_ctx {
    store *s;
    const model *m;
    uint64_t now_ms;
} list_ctx;

/* Pack one model summary. */
static void
pack_model(msgpack_packer *pk, const model *m, uint64_t now_ms)
{
    int pushed = m->last_push_ms != 0;

    msgpack_pack_map(pk, 8 + pushed);
    if (pushed)
        proto_pack_kv_u64(pk, PROTO_KEY_LAST_PUSH_AGE_MS,
                          now_ms >= m->last_push_ms ? now_ms - m->last_push_ms : 0);
    proto_pack_str(pk, PROTO_KEY_NAME);
    proto_pack_str(pk, m->name);
    proto_pack_kv_u64(pk, PROTO_KEY_SNAPSHOT_STEP, m->snap_version != 0 ? m->snap_step : 0);
    proto_pack_str(pk, PROTO_KEY_DECAY);
    msgpack_pack_double(pk, m->cfg.decays[0]);
    proto_pack_kv_u64(pk, PROTO_KEY_STEP, m->step);
    proto_pack_kv_u64(pk, PROTO_KEY_TENSORS, m->ntensors);
    proto_pack_kv_u64(pk, PROTO_KEY_SHADOW_BYTES, m->shadow_bytes);
    proto_pack_kv_u64(pk, PROTO_KEY_STEPS_PENDING, m->npending);
    proto_pack_str(pk, PROTO_KEY_CONFIG);
    msgpack_pack_map(pk, EMACONF_PACKED_KEYS);
    emaconf_pack(pk, &m->cfg);
}

static void
build_list_models(msgpack_packer *pk, const void *vctx)
{
    const list_ctx *ctx = vctx;
    store *s = ctx->s;
    size_t n = 0;
    model *m;

    while (store_model_at(s, n) != NULL)
        n++;
    pack_head(pk, 1, 1);
    proto_pack_str(pk, PROTO_KEY_MODELS);
    msgpack_pack_array(pk, n);
    for (size_t i = 0; (m = store_model_at(s, i)) != NULL; i++)
        pack_model(pk, m, ctx->now_ms);
}

static void
build_list_model(msgpack_packer *pk, const void *vctx)
{
    const list_ctx *ctx = vctx;
    const model *m = ctx->m;

    pack_head(pk, 1, 2);
    proto_pack_str(pk, PROTO_KEY_MODEL);
    pack_model(pk, m, ctx->now_ms);
    proto_pack_str(pk, PROTO_KEY_TENSORS);
    msgpack_pack_array(pk, m->ntensors);
    for (size_t i = 0; i < m->ntensors; i++) {
        const tensor *t = m->tensors[i];
        view_tensor vt = {.name = t->name,
                          .name_len = t->name_len,
                          .kind = t->kind,
                          .dtype = t->dtype,
                          .averaged = t->averaged,
                          .ndim = t->ndim,
                          .nbytes = t->nbytes,
                          .step = t->step};
        memcpy(vt.shape, t->shape, sizeof(vt.shape));
        pack_view_tensor(pk, &vt, 0);
    }
}

static int
handle_list(req *r, store_err *err)
{
    const msgpack_object *o = proto_map_get(r->root, PROTO_KEY_MODEL);
    list_ctx ctx = {r->srv->store, NULL, r->now_ms};
    const char *name;
    size_t len;
    model *m;

    if (o == NULL) {
        reply_send(r, build_list_models, &ctx);
        return 0;
    }
    if (get_str(r->root, PROTO_KEY_MODEL, &name, &len, err) != 0)
        return err->code;
    if ((m = store_model_find(r->srv->store, name, len)) == NULL) {
        char buf[EMAD_MAX_MODEL_NAME_BYTES + 1];
        return req_fail(err, EMAD_ENOMODEL, "no model '%s'",
                        printable(buf, sizeof(buf), name, len));
    }
    ctx.m = m;
    reply_send(r, build_list_model, &ctx);
    return 0;
}

/* Number of entries build_stats packs. */
static size_t
stats_count(const server *srv)
{
    size_t n = COUNTER_COUNT + 9 + 8;

    for (int op = 1; op < PROTO_OP_COUNT; op++)
        n++;
    for (int i = 0; i <= ERR_LAST - ERR_FIRST; i++)
        n += srv->err_counts[i] != 0;
    return n;
}

static void
build_stats(msgpack_packer *pk, const void *ctx)
{
    const server *srv = ctx;
    store_gauges g;
    char name[64];

    store_gauges_get(srv->store, &g);
    pack_head(pk, 1, 1);
    proto_pack_str(pk, PROTO_KEY_STATS);
    msgpack_pack_map(pk, stats_count(srv));
    for (int i = 0; i < COUNTER_COUNT; i++)
        proto_pack_kv_u64(pk, counter_names[i], srv->counters[i]);
    for (int op = 1; op < PROTO_OP_COUNT; op++) {
        snprintf(name, sizeof(name), COUNTERS_OP_PREFIX "%s", proto_op_name(op));
        proto_pack_kv_u64(pk, name, srv->op_counts[op]);
    }
    for (int i = 0; i <= ERR_LAST - ERR_FIRST; i++) {
        if (srv->err_counts[i] == 0)
            continue;
        snprintf(name, sizeof(name), COUNTERS_ERROR_PREFIX "%s", proto_errname(-(ERR_FIRST + i)));
        proto_pack_kv_u64(pk, name, srv->err_counts[i]);
    }
    proto_pack_kv_u64(pk, PROTO_KEY_MODELS, g.models);
    proto_pack_kv_u64(pk, PROTO_KEY_TENSORS, g.tensors);
    proto_pack_kv_u64(pk, PROTO_KEY_SHADOW_BYTES, g.shadow_bytes);
    proto_pack_kv_u64(pk, PROTO_KEY_TXN_OPEN, g.txn_open);
    proto_pack_kv_u64(pk, PROTO_KEY_SESSIONS_OPEN, g.views_open);
    proto_pack_kv_u64(pk, PROTO_KEY_STEPS_PENDING, g.steps_pending);
    proto_pack_kv_u64(pk, PROTO_KEY_STAGED_BYTES, g.staged_bytes);
    persist_stats ps;
    memset(&ps, 0, sizeof(ps));
    if (srv->persist != NULL)
        persist_stats_get(srv->persist, &ps);
    proto_pack_kv_u64(pk, PROTO_KEY_SNAPSHOTS_WRITTEN, ps.written);
    proto_pack_kv_u64(pk, PROTO_KEY_SNAPSHOT_FAILURES, ps.failed);
    proto_pack_kv_u64(pk, PROTO_KEY_SNAPSHOT_BYTES, ps.bytes);
    proto_pack_kv_u64(pk, PROTO_KEY_SNAPSHOT_LAST_SUCCESS_UNIX_SECONDS, ps.last_success_unix_ms / 1000);
    proto_pack_kv_u64(pk, PROTO_KEY_SNAPSHOT_LAST_DURATION_MS, ps.last_duration_ms);
    proto_pack_kv_u64(pk, PROTO_KEY_SNAPSHOT_RUNNING, ps.running);
    proto_pack_kv_u64(pk, PROTO_KEY_SNAPSHOTS_LOADED, ps.loaded);
    proto_pack_kv_u64(pk, PROTO_KEY_SNAPSHOTS_BROKEN, ps.broken);
    proto_pack_kv_u64(pk, PROTO_KEY_UPTIME_SECONDS, (loop_now(srv) - srv->start_ms) / 1000);
    proto_pack_kv_u64(pk, PROTO_KEY_MAX_MESSAGE_BYTES, srv->cfg.max_message_bytes);
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

/* Decode, dispatch and answer one request held in buf[0..len). */
static void
handle(server *srv, const char *buf, size_t len, void **ctrl, void **body, void **capture,
       size_t *capture_len)
{
    msgpack_unpacked u;
    size_t off = 0;
    const char *why, *opname;
    size_t oplen;
    store_err err;
    req r;
    int rc;
    uint64_t t0;

    memset(&r, 0, sizeof(r));
    r.srv = srv;
    r.ctrl = *ctrl;
    r.body = body;
    r.capture = capture;
    r.now_ms = loop_now(srv);
    err.tensor[0] = '\0';
    srv->counters[COUNTER_REQUESTS]++;
    srv->counters[COUNTER_BYTES_IN] += len;
    msgpack_unpacked_init(&u);

    if ((rc = proto_prescan(buf, len, &why)) != 0) {
        req_fail(&err, rc, "request is not a valid msgpack message: %s", why);
        goto error;
    }
    if (msgpack_unpack_next(&u, buf, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len) {
        req_fail(&err, EMAD_EMALFORMED, "request is not a valid msgpack message");
        goto error;
    }
    if (u.data.type != MSGPACK_OBJECT_MAP) {
        req_fail(&err, EMAD_EMALFORMED, "request is not a msgpack map");
        goto error;
    }
    r.root = &u.data;
    {
        uint64_t v;
        if (get_u64(r.root, PROTO_KEY_V, &v, NULL, &err) != 0)
            goto error;
        if (v != PROTO_VERSION) {
            req_fail(&err, EMAD_EVERSION,
                     "protocol version %llu is not supported; this daemon speaks %d",
                     (unsigned long long)v, PROTO_VERSION);
            goto error;
        }
    }
    if (get_str(r.root, PROTO_KEY_OP, &opname, &oplen, &err) != 0)
        goto error;
    if ((r.op = proto_op_from_name(opname, oplen)) == PROTO_OP_INVALID) {
        char pbuf[40];
        req_fail(&err, EMAD_EOP, "unknown op '%s'", printable(pbuf, sizeof(pbuf), opname, oplen));
        goto error;
    }
    srv->op_counts[r.op]++;
    t0 = r.t0 = uv_hrtime();
    switch (r.op) {
    case PROTO_OP_HELLO:
        reply_send(&r, build_hello, srv);
        rc = 0;
        break;
    case PROTO_OP_CREATE:
        rc = handle_create(&r, &err);
        break;
    case PROTO_OP_DROP:
        rc = handle_drop(&r, &err);
        break;
    case PROTO_OP_PUSH:
        rc = handle_push(&r, &err);
        break;
    case PROTO_OP_BEGIN:
        rc = handle_begin(&r, &err);
        break;
    case PROTO_OP_COMMIT:
        rc = handle_commit(&r, &err);
        break;
    case PROTO_OP_ABORT:
        rc = handle_abort(&r, &err);
        break;
    case PROTO_OP_PULL:
        rc = handle_pull(&r, &err);
        break;
    case PROTO_OP_READ:
        rc = handle_read(&r, &err);
        break;
    case PROTO_OP_RELEASE:
        rc = handle_release(&r, &err);
        break;
    case PROTO_OP_LIST:
        rc = handle_list(&r, &err);
        break;
    case PROTO_OP_STATS:
        reply_send(&r, build_stats, srv);
        rc = 0;
        break;
    case PROTO_OP_CONFIGURE:
        rc = handle_configure(&r, &err);
        break;
    case PROTO_OP_SNAPSHOT:
        rc = handle_snapshot(&r, &err);
        break;
    default:
        rc = req_fail(&err, EMAD_EINTERNAL, "op not handled");
        break;
    }
    if (rc == 0) {
        /* Deferred and snapshot requests are counted when they are answered. */
        if (!r.deferred && r.op != PROTO_OP_SNAPSHOT)
            srv->op_ok[r.op]++;
        if (!r.deferred)
            observe_latency(srv, r.op, t0);
        goto done;
    }
error:
    reply_error(&r, &err);
done:
    msgpack_unpacked_destroy(&u);
    *ctrl = r.ctrl; /* NULL if the reply took it */
    if (capture_len != NULL)
        *capture_len = r.reply_len;
}

/* uv_poll callback: drain every pending request (level-triggered NN_RCVFD). */
static void
on_readable(uv_poll_t *h, int status, int events)
{
    server *srv = h->data;

    (void)events;
    if (status < 0) {
        log_error("event=poll_error error=\"%s\"", uv_strerror(status));
        return;
    }
    for (int i = 0; i < 256 && !srv->closing; i++) {
        void *body = NULL, *ctrl = NULL;
        struct nn_iovec iov = {&body, NN_MSG};
        struct nn_msghdr hdr;
        int n;

        memset(&hdr, 0, sizeof(hdr));
        hdr.msg_iov = &iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = &ctrl;
        hdr.msg_controllen = NN_MSG;
        n = nn_recvmsg(srv->sock, &hdr, NN_DONTWAIT);
        if (n < 0) {
            int e = nn_errno();
            if (e == EINTR)
                continue;
            if (e != EAGAIN)
                log_error("event=recv_error error=\"%s\"", nn_strerror(e));
            break;
        }
        uv_update_time(srv->loop); /* requests stamp times (last push, idleness) with it */
        handle(srv, body, (size_t)n, &ctrl, &body, NULL, NULL);
        if (body != NULL)
            nn_freemsg(body);
        srv->last_request_ms = uv_now(srv->loop);
        srv->trimmed = 0;
        if (ctrl != NULL)
            nn_freemsg(ctrl);
    }
}

/* Periodic expiry of idle transactions and pull sessions. */
static void
on_timer(uv_timer_t *h)
{
    server *srv = h->data;
    uint64_t txns = 0, views = 0, steps = 0;

    store_expire(srv->store, uv_now(srv->loop), srv->cfg.txn_timeout_ms, &txns, &views, &steps);
    if (steps > 0)
        log_warn("event=step_expired count=%llu timeout_ms=%llu (a writer never pushed; step "
                 "discarded)",
                 (unsigned long long)steps, (unsigned long long)srv->cfg.txn_timeout_ms);
    srv->counters[COUNTER_STEPS_EXPIRED] += steps;
    if (txns > 0)
        log_warn("event=txn_expired count=%llu timeout_ms=%llu (client gone; nothing applied)",
                 (unsigned long long)txns, (unsigned long long)srv->cfg.txn_timeout_ms);
    if (views > 0)
        log_info("event=session_expired count=%llu", (unsigned long long)views);
    srv->counters[COUNTER_TXN_EXPIRED] += txns;
    srv->counters[COUNTER_SESSIONS_EXPIRED] += views;
    /*
     * Idle for cfg.idle_release_ms: free the spare shadows (the replaced
     * shadows a transaction writes into next time) and give the heap's free
     * memory back. Until then both stay mapped: fresh memory costs page
     * faults (~0.5 GB/s on this class of VM), and a trimmed heap faults in
     * the next push's request buffers again: pushes of a 256 MiB model 1.5 s
     * apart took 1,200 page faults each when the heap was trimmed after one
     * idle second, 0 without.
     */
    if (!srv->trimmed && uv_now(srv->loop) - srv->last_request_ms >= srv->cfg.idle_release_ms) {
        store_release_spares(srv->store);
        (void)malloc_trim(0);
        io_hold(srv, 0);
        srv->trimmed = 1;
        log_debug("event=idle_release idle_ms=%llu", (unsigned long long)srv->cfg.idle_release_ms);
    }
}

/* Every changed model is durable after SIGTERM: close. */
static void
on_persisted(void *arg)
{
    server *srv = arg;

    log_info("event=shutdown snapshots=written");
    server_stop(srv);
}

static void
on_signal(uv_signal_t *h, int signum)
{
    server *srv = h->data;

    const char *name = signum == SIGINT ? "SIGINT" : "SIGTERM";

    if (srv->persist == NULL || srv->stopping) {
        log_info("event=shutdown signal=%s", name);
        server_stop(srv);
        return;
    }
    /* Stop taking requests, make every changed model durable, then close. */
    log_info("event=shutdown signal=%s action=\"writing snapshots first (send again to skip)\"",
             name);
    srv->stopping = 1;
    uv_poll_stop(&srv->poll);
    persist_shutdown(srv->persist, on_persisted, srv);
}

/* Interval of the expiry timer for a transaction timeout. */
static uint64_t
expiry_interval(uint64_t txn_timeout_ms)
{
    uint64_t interval = txn_timeout_ms / 4;

    return interval < 50 ? 50 : interval > 1000 ? 1000 : interval;
}

void
server_config_init(server_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->max_message_bytes = PROTO_DEFAULT_MAX_MESSAGE;
    cfg->txn_timeout_ms = 60000;
    cfg->snapshot_interval_ms = 60000;
    cfg->snapshot_keep = 2;
    cfg->io_cpu = SERVER_IO_CPU_AUTO;
    cfg->idle_release_ms = 5000;
}

/* The CPUs of set as ranges ("0-3,6"), cut short with "..." if they do not fit in buf. */
static const char *
cpu_list(const cpu_set_t *set, char *buf, size_t size)
{
    size_t off = 0;

    buf[0] = '\0';
    for (int c = 0; c < CPU_SETSIZE; c++) {
        int end = c;
        if (!CPU_ISSET(c, set))
            continue;
        while (end + 1 < CPU_SETSIZE && CPU_ISSET(end + 1, set))
            end++;
        int n = end > c ? snprintf(buf + off, size - off, "%s%d-%d", off ? "," : "", c, end)
                        : snprintf(buf + off, size - off, "%s%d", off ? "," : "", c);
        if (n < 0 || (size_t)n >= size - off) {
            snprintf(buf + (off < size - 4 ? off : size - 4), 4, "...");
            break;
        }
        off += (size_t)n;
        c = end;
    }
    return buf;
}

/*
 * Give every thread of this process other than the caller whose affinity
 * is exactly {cpu} the set all back. Returns that thread if there was
 * exactly one, else 0 (none, or a nanomsg with several I/O threads).
 */
static pid_t
free_threads_on(int cpu, const cpu_set_t *all)
{
    pid_t self = (pid_t)syscall(SYS_gettid), found = 0;
    struct dirent *e;
    cpu_set_t set;
    int n = 0;
    DIR *d;

    if ((d = opendir("/proc/self/task")) == NULL)
        return 0;
    while ((e = readdir(d)) != NULL) {
        pid_t tid = (pid_t)atoi(e->d_name);
        if (tid <= 0 || tid == self || sched_getaffinity(tid, sizeof(set), &set) != 0 ||
            CPU_COUNT(&set) != 1 || !CPU_ISSET(cpu, &set))
            continue;
        (void)sched_setaffinity(tid, sizeof(*all), all);
        found = tid;
        n++;
    }
    closedir(d);
    return n == 1 ? found : 0;
}

/*
 * Open the server's socket and find nanomsg's I/O thread (srv->io).
 *
 * nanomsg starts that thread, which receives and sends every message, with
 * the process's first socket, and a new thread inherits its creator's CPU
 * affinity: the calling thread narrows its own affinity to the chosen CPU
 * around nn_socket() and restores it, and the one thread then left on that
 * CPU alone is nanomsg's. free_threads_on() gives it every CPU back at
 * once (io_hold() holds it on its CPU while large pushes arrive); threads
 * created later (the libuv threadpool, HTTP) never see the narrowed set.
 *
 * io_cpu: SERVER_IO_CPU_AUTO picks the highest-numbered CPU this process
 * may run on, and none when it may run on only one or cannot change its
 * affinity (a warning); SERVER_IO_CPU_OFF none; otherwise the CPU number,
 * which must be in the process's set. Without a CPU, or when nanomsg had
 * started before (tests), srv->io.tid stays 0 and nothing is ever held.
 * Returns the socket, or a negative code with *cause set.
 */
static int
open_socket(server *srv, int io_cpu, char **cause)
{
    int sock, cpu = -1, e = 0;
    cpu_set_t one;

    if (io_cpu != SERVER_IO_CPU_OFF &&
        (e = pthread_getaffinity_np(pthread_self(), sizeof(srv->io.all), &srv->io.all)) == 0) {
        if (io_cpu == SERVER_IO_CPU_AUTO) {
            if (CPU_COUNT(&srv->io.all) >= 2)
                for (int c = CPU_SETSIZE - 1; c >= 0 && cpu < 0; c--)
                    if (CPU_ISSET(c, &srv->io.all))
                        cpu = c;
        } else if (io_cpu >= 0 && io_cpu < CPU_SETSIZE && CPU_ISSET(io_cpu, &srv->io.all)) {
            cpu = io_cpu;
        } else {
            char list[128];
            return proto_cause(cause, -EINVAL,
                               "io-cpu %d is not among the CPUs this process may run on (%s)",
                               io_cpu, cpu_list(&srv->io.all, list, sizeof(list)));
        }
        if (cpu >= 0) {
            CPU_ZERO(&one);
            CPU_SET(cpu, &one);
            if ((e = pthread_setaffinity_np(pthread_self(), sizeof(one), &one)) != 0)
                cpu = -1;
        }
    }
    if (e != 0) {
        if (io_cpu != SERVER_IO_CPU_AUTO)
            return proto_cause(cause, -e, "io-cpu %d: cannot set the CPU affinity: %s", io_cpu,
                               strerror(e));
        log_warn("event=io_thread_free error=\"%s\" (cannot set the CPU affinity; io-cpu ignored)",
                 strerror(e));
    }
    sock = nn_socket(AF_SP_RAW, NN_REP);
    e = nn_errno();
    if (cpu >= 0) {
        if (pthread_setaffinity_np(pthread_self(), sizeof(srv->io.all), &srv->io.all) != 0)
            log_warn("event=affinity_restore_failed cpu=%d", cpu); /* the loop stays on cpu */
        if (sock >= 0 && (srv->io.tid = free_threads_on(cpu, &srv->io.all)) != 0) {
            srv->io.cpu = cpu;
            log_info("event=io_thread tid=%d cpu=%d (held there while large pushes arrive)",
                     (int)srv->io.tid, cpu);
        } else if (sock >= 0) {
            log_debug("event=io_thread_not_found cpu=%d (nanomsg started before, or with "
                      "several I/O threads)",
                      cpu);
        }
    }
    if (sock < 0)
        return proto_cause(cause, -e, "nn_socket: %s", nn_strerror(e));
    return sock;
}

int
server_create(server **out, uv_loop_t *loop, const server_config *cfg, char **cause)
{
    server *srv = xcalloc(1, sizeof(*srv));
    int fd, rc, maxsz, one = 1, sockbuf = PROTO_SOCKET_BUFFER_BYTES;
    size_t fdsz = sizeof(fd);
    uint64_t interval;

    *out = NULL;
    srv->loop = loop;
    srv->cfg = *cfg;
    srv->sock = -1;
    srv->store = store_create();
    srv->start_ms = uv_now(loop);
    {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN); /* a file read: not once per request */
        srv->parts = ncpu < 1 ? 1 : ncpu > ASYNC_MAX_PARTS ? ASYNC_MAX_PARTS : (int)ncpu;
    }

    if (cfg->state_dir != NULL) {
        persist_config pc = {cfg->state_dir, cfg->snapshot_interval_ms, cfg->snapshot_keep,
                             cfg->require_snapshot};
        persist_stats loaded;
        if ((rc = persist_load(&pc, srv->store, &loaded, cause)) != 0)
            goto fail;
        srv->persist = persist_create(loop, srv->store, &pc, &loaded);
    }
    if ((srv->sock = open_socket(srv, cfg->io_cpu, cause)) < 0) {
        rc = srv->sock;
        goto fail;
    }
    /* nanomsg counts the REQ routing header (4 bytes per hop) against the cap: leave room so
     * a request of exactly max_message_bytes is accepted. */
    maxsz = (int)cfg->max_message_bytes + 64;
    if (nn_setsockopt(srv->sock, NN_SOL_SOCKET, NN_RCVMAXSIZE, &maxsz, sizeof(maxsz)) < 0 ||
        nn_setsockopt(srv->sock, NN_TCP, NN_TCP_NODELAY, &one, sizeof(one)) < 0 ||
        nn_setsockopt(srv->sock, NN_SOL_SOCKET, NN_SNDBUF, &sockbuf, sizeof(sockbuf)) < 0 ||
        nn_setsockopt(srv->sock, NN_SOL_SOCKET, NN_RCVBUF, &sockbuf, sizeof(sockbuf)) < 0) {
        rc = proto_cause(cause, -nn_errno(), "nn_setsockopt: %s", nn_strerror(nn_errno()));
        goto fail;
    }
    for (int i = 0; i < cfg->nlisten; i++) {
        if (nn_bind(srv->sock, cfg->listen[i]) < 0) {
            rc = proto_cause(cause, -nn_errno(), "cannot listen on %s: %s", cfg->listen[i],
                             nn_strerror(nn_errno()));
            goto fail;
        }
        log_info("event=listening url=%s", cfg->listen[i]);
    }
    if (nn_getsockopt(srv->sock, NN_SOL_SOCKET, NN_RCVFD, &fd, &fdsz) < 0) {
        rc = proto_cause(cause, -nn_errno(), "NN_RCVFD: %s", nn_strerror(nn_errno()));
        goto fail;
    }
    if ((rc = uv_poll_init(loop, &srv->poll, fd)) < 0) {
        rc = proto_cause(cause, rc, "uv_poll_init: %s", uv_strerror(rc));
        goto fail;
    }
    srv->poll.data = srv;
    uv_poll_start(&srv->poll, UV_READABLE, on_readable);
    uv_timer_init(loop, &srv->timer);
    srv->timer.data = srv;
    interval = expiry_interval(cfg->txn_timeout_ms);
    uv_timer_start(&srv->timer, on_timer, interval, interval);
    uv_signal_init(loop, &srv->sigint);
    uv_signal_init(loop, &srv->sigterm);
    srv->sigint.data = srv->sigterm.data = srv;
    uv_signal_start(&srv->sigint, on_signal, SIGINT);
    uv_signal_start(&srv->sigterm, on_signal, SIGTERM);
    *out = srv;
    return 0;

fail:
    if (srv->sock >= 0)
        nn_close(srv->sock);
    if (srv->persist != NULL) {
        persist_shutdown(srv->persist, NULL, NULL);
        uv_run(loop, UV_RUN_NOWAIT); /* let the timer close */
        persist_destroy(srv->persist);
    }
    store_destroy(srv->store);
    free(srv);
    return rc;
}

server *
server_create_offline(const server_config *cfg)
{
    server *srv = xcalloc(1, sizeof(*srv));

    srv->cfg = *cfg;
    srv->sock = -1;
    srv->store = store_create();
    return srv;
}

void
server_process(server *srv, const void *buf, size_t len, void **reply, size_t *reply_len)
{
    void *ctrl = NULL;

    *reply = NULL;
    *reply_len = 0;
    handle(srv, buf, len, &ctrl, NULL, reply, reply_len);
}

void
server_stop(server *srv)
{
    if (srv->closing)
        return;
    srv->closing = 1;
    if (srv->persist != NULL && !srv->stopping) {
        srv->stopping = 1;
        persist_shutdown(srv->persist, NULL, NULL); /* closes its timer; a running write ends */
    }
    uv_poll_stop(&srv->poll);
    uv_close((uv_handle_t *)&srv->poll, NULL);
    uv_close((uv_handle_t *)&srv->timer, NULL);
    uv_close((uv_handle_t *)&srv->sigint, NULL);
    uv_close((uv_handle_t *)&srv->sigterm, NULL);
}

void
server_destroy(server *srv)
{
    if (srv == NULL)
        return;
    while (srv->parked != NULL) {
        parked *p = srv->parked;
        srv->parked = p->next;
        nn_freemsg(p->ctrl);
        free(p);
    }
    if (srv->sock >= 0)
        nn_close(srv->sock);
    persist_destroy(srv->persist);
    store_destroy(srv->store);
    free(srv);
}

void
server_reconfigure(server *srv, uint64_t txn_timeout_ms, uint64_t snapshot_interval_ms)
{
    if (srv->closing || srv->stopping)
        return;
    if (txn_timeout_ms != srv->cfg.txn_timeout_ms) {
        uint64_t interval = expiry_interval(txn_timeout_ms);
        srv->cfg.txn_timeout_ms = txn_timeout_ms;
        uv_timer_start(&srv->timer, on_timer, interval, interval);
    }
    srv->cfg.snapshot_interval_ms = snapshot_interval_ms;
    if (srv->persist != NULL)
        persist_set_interval(srv->persist, snapshot_interval_ms);
}

metrics_figures *
server_figures(server *srv)
{
    size_t n = 0;
    uint64_t now = loop_now(srv);
    metrics_figures *f;
    store_gauges g;
    persist_stats ps;
    model *m;

    while (store_model_at(srv->store, n) != NULL)
        n++;
    f = metrics_figures_create(n);
    f->uptime_seconds = (double)(now - srv->start_ms) / 1000.0;
    for (int op = 0; op < PROTO_OP_COUNT; op++) {
        f->requests_ok[op] = srv->op_ok[op];
        f->requests_error[op] = srv->op_errors[op];
    }
    for (int i = 0; i <= ERR_LAST - ERR_FIRST && i < METRICS_ERR_CODES; i++) {
        f->errors[ERR_FIRST - METRICS_ERR_FIRST + i] = srv->err_counts[i];
        f->push_rejected[ERR_FIRST - METRICS_ERR_FIRST + i] = srv->push_rejects[i];
    }
    f->pushes_stale = srv->pushes_stale;
    f->bytes_in = srv->counters[COUNTER_BYTES_IN];
    f->bytes_out = srv->counters[COUNTER_BYTES_OUT];
    f->tensors_applied = srv->counters[COUNTER_TENSORS_APPLIED];
    f->tensors_stale = srv->counters[COUNTER_TENSORS_STALE];
    f->tensors_skipped_nonfinite = srv->counters[COUNTER_TENSORS_SKIPPED_NONFINITE];
    f->tensors_ignored = srv->counters[COUNTER_TENSORS_IGNORED];
    f->writer_pushes_pending = srv->counters[COUNTER_WRITER_PUSHES_PENDING];
    f->txn_begun = srv->counters[COUNTER_TXN_BEGUN];
    f->txn_committed = srv->counters[COUNTER_TXN_COMMITTED];
    f->txn_aborted = srv->counters[COUNTER_TXN_ABORTED];
    f->txn_expired = srv->counters[COUNTER_TXN_EXPIRED];
    f->sessions_expired = srv->counters[COUNTER_SESSIONS_EXPIRED];
    f->steps_expired = srv->counters[COUNTER_STEPS_EXPIRED];
    f->replies_dropped = srv->counters[COUNTER_REPLIES_DROPPED];
    f->commits_waited = srv->counters[COUNTER_COMMITS_WAITED];
    store_gauges_get(srv->store, &g);
    f->models = g.models;
    f->tensors = g.tensors;
    f->shadow_bytes = g.shadow_bytes;
    f->txn_open = g.txn_open;
    f->sessions_open = g.views_open;
    f->steps_pending = g.steps_pending;
    f->staged_bytes = g.staged_bytes;
    f->max_message_bytes = srv->cfg.max_message_bytes;
    if (srv->sock >= 0) {
        f->connections = nn_get_statistic(srv->sock, NN_STAT_CURRENT_CONNECTIONS);
        f->connections_accepted = nn_get_statistic(srv->sock, NN_STAT_ACCEPTED_CONNECTIONS);
        f->connections_dropped = nn_get_statistic(srv->sock, NN_STAT_DROPPED_CONNECTIONS);
        f->connections_broken = nn_get_statistic(srv->sock, NN_STAT_BROKEN_CONNECTIONS);
        f->endpoint_errors = nn_get_statistic(srv->sock, NN_STAT_CURRENT_EP_ERRORS);
    }
    if (srv->persist != NULL) {
        persist_stats_get(srv->persist, &ps);
        f->has_state_dir = 1;
        f->snapshots_written = ps.written;
        f->snapshot_failures = ps.failed;
        f->snapshot_bytes = ps.bytes;
        f->snapshot_last_success_unix_ms = ps.last_success_unix_ms;
        f->snapshot_last_duration_ms = ps.last_duration_ms;
        f->snapshot_running = ps.running;
        f->snapshots_loaded = ps.loaded;
        f->snapshots_broken = ps.broken;
    }
    f->push_apply = srv->push_hist;
    f->pull = srv->pull_hist;
    for (size_t i = 0; i < n && (m = store_model_at(srv->store, i)) != NULL; i++) {
        metrics_model *mm = &f->model[i];

        snprintf(mm->name, sizeof(mm->name), "%s", m->name);
        mm->step = m->step;
        mm->tensors = m->ntensors;
        mm->shadow_bytes = m->shadow_bytes;
        mm->steps_pending = m->npending;
        mm->has_snapshot = m->snap_version != 0;
        mm->snapshot_step = mm->has_snapshot ? m->snap_step : 0;
        mm->pushed = m->last_push_ms != 0;
        mm->seconds_since_push =
            mm->pushed && now > m->last_push_ms ? (double)(now - m->last_push_ms) / 1000.0 : 0.0;
        mm->decay = m->cfg.decays[0];
    }
    return f;
}

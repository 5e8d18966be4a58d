/*
 * proto.c - protocol tables and checks shared by the daemon and libemad:
 * operation names, the error table, name rules, and the allocation-free
 * msgpack pre-scan that guards msgpack_unpack_next() against hostile input.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "common/proto.h"

static const char *const op_names[PROTO_OP_COUNT] = {
#define XX(id, name) [PROTO_OP_##id] = name,
    PROTO_OP_MAP(XX)
#undef XX
};

struct errinfo {
    int code;
    const char *name;
    const char *text;
};

static const struct errinfo errors[] = {
    {EMAD_EMALFORMED, "EMAD_EMALFORMED", "malformed request"},
    {EMAD_EVERSION, "EMAD_EVERSION", "protocol version not supported"},
    {EMAD_EOP, "EMAD_EOP", "unknown operation"},
    {EMAD_EDTYPE, "EMAD_EDTYPE", "unknown or unsuitable dtype"},
    {EMAD_ESIZE, "EMAD_ESIZE", "data length does not match shape and dtype"},
    {EMAD_ENAME, "EMAD_ENAME", "invalid name"},
    {EMAD_ESHAPE, "EMAD_ESHAPE", "shape differs from the stored tensor"},
    {EMAD_EKIND, "EMAD_EKIND", "kind or dtype differs from the stored tensor"},
    {EMAD_ELIMIT, "EMAD_ELIMIT", "limit exceeded"},
    {EMAD_ENOMODEL, "EMAD_ENOMODEL", "no such model"},
    {EMAD_EEXIST, "EMAD_EEXIST", "model already exists"},
    {EMAD_ENOTENSOR, "EMAD_ENOTENSOR", "no such tensor"},
    {EMAD_ENOTXN, "EMAD_ENOTXN", "no such open transaction"},
    {EMAD_EINCOMPLETE, "EMAD_EINCOMPLETE", "transaction has incomplete tensors"},
    {EMAD_EDUP, "EMAD_EDUP", "duplicate tensor name"},
    {EMAD_ERANGE, "EMAD_ERANGE", "value out of range"},
    {EMAD_ENOSESSION, "EMAD_ENOSESSION", "no such pull session"},
    {EMAD_ENOMEM, "EMAD_ENOMEM", "out of memory"},
    {EMAD_EINTERNAL, "EMAD_EINTERNAL", "internal error"},
    {EMAD_EORDER, "EMAD_EORDER", "transaction chunk out of order"},
    {EMAD_ENONFINITE, "EMAD_ENONFINITE", "NaN or Inf in an averaged tensor"},
    {EMAD_EOVERLAP, "EMAD_EOVERLAP", "slice overlaps another slice of the tensor"},
    {EMAD_EIMMUTABLE, "EMAD_EIMMUTABLE", "option cannot change on an existing model"},
    {EMAD_ENOSTATE, "EMAD_ENOSTATE", "the daemon has no state directory"},
    {EMAD_ESNAPSHOT, "EMAD_ESNAPSHOT", "snapshot could not be written"},
    {EMAD_ECONFLICT, "EMAD_ECONFLICT", "tensor changed by another push during the transaction"},
    {EMAD_ETIMEDOUT, "EMAD_ETIMEDOUT", "timed out waiting for the daemon"},
    {EMAD_ECONNECT, "EMAD_ECONNECT", "cannot connect to the daemon"},
    {EMAD_EPROTO, "EMAD_EPROTO", "reply from the daemon not understood"},
    {EMAD_EINVAL, "EMAD_EINVAL", "invalid argument"},
    {EMAD_EFORMAT, "EMAD_EFORMAT", "malformed safetensors file"},
    {EMAD_EIO, "EMAD_EIO", "I/O error"},
};

/* Table entry for an emad code, or NULL. */
static const struct errinfo *
errinfo_find(int code)
{
    for (size_t i = 0; i < sizeof(errors) / sizeof(errors[0]); i++)
        if (errors[i].code == code)
            return &errors[i];
    return NULL;
}

const msgpack_object *
proto_map_get(const msgpack_object *map, const char *key)
{
    size_t klen = strlen(key);

    if (map == NULL || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == klen &&
            memcmp(k->via.str.ptr, key, klen) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

void
proto_pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);

    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

void
proto_pack_kv_u64(msgpack_packer *pk, const char *key, uint64_t v)
{
    proto_pack_str(pk, key);
    msgpack_pack_uint64(pk, v);
}

int
proto_cause(char **cause, int code, const char *fmt, ...)
{
    va_list ap;
    char *msg;
    int len;

    if (cause == NULL)
        return code;
    free(*cause);
    *cause = NULL;
    va_start(ap, fmt);
    len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (len < 0 || (msg = malloc((size_t)len + 1)) == NULL)
        return code;
    va_start(ap, fmt);
    (void)vsnprintf(msg, (size_t)len + 1, fmt, ap);
    va_end(ap);
    *cause = msg;
    return code;
}

int
proto_number(const msgpack_object *o, double *v)
{
    switch (o->type) {
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        *v = o->via.f64;
        return 0;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        *v = (double)o->via.u64;
        return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        *v = (double)o->via.i64;
        return 0;
    default:
        return -1;
    }
}

const char *
proto_op_name(int op)
{
    if (op <= PROTO_OP_INVALID || op >= PROTO_OP_COUNT)
        return NULL;
    return op_names[op];
}

int
proto_op_from_name(const char *name, size_t len)
{
    for (int op = PROTO_OP_INVALID + 1; op < PROTO_OP_COUNT; op++)
        if (strlen(op_names[op]) == len && memcmp(op_names[op], name, len) == 0)
            return op;
    return PROTO_OP_INVALID;
}

const char *
proto_errname(int code)
{
    const struct errinfo *e = errinfo_find(code);
    return e != NULL ? e->name : NULL;
}

const char *
proto_strerror(int code)
{
    const struct errinfo *e;

    if (code == 0)
        return "success";
    if ((e = errinfo_find(code)) != NULL)
        return e->text;
    if (code < 0 && code > -4096)
        return strerror(-code);
    return "unknown error";
}

const char *
proto_kind_name(int kind)
{
    switch (kind) {
    case EMAD_PARAM:
        return "param";
    case EMAD_BUFFER:
        return "buffer";
    default:
        return NULL;
    }
}

int
proto_kind_from_name(const char *name, size_t len)
{
    if (len == 5 && memcmp(name, "param", 5) == 0)
        return EMAD_PARAM;
    if (len == 6 && memcmp(name, "buffer", 6) == 0)
        return EMAD_BUFFER;
    return -1;
}

int
proto_check_model_name(const char *name, size_t len)
{
    if (len == 0 || len > EMAD_MAX_MODEL_NAME_BYTES || name[0] == '.')
        return EMAD_ENAME;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return EMAD_ENAME;
    }
    return 0;
}

int
proto_check_tensor_name(const char *name, size_t len)
{
    const unsigned char *p = (const unsigned char *)name;
    size_t i = 0;

    if (len == 0 || len > EMAD_MAX_NAME_BYTES)
        return EMAD_ENAME;
    while (i < len) {
        unsigned char c = p[i];
        size_t n;
        uint32_t cp;

        if (c < 0x20 || c == 0x7f)
            return EMAD_ENAME;
        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xe0) == 0xc0) {
            n = 1;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3;
            cp = c & 0x07;
        } else {
            return EMAD_ENAME;
        }
        if (i + n >= len)
            return EMAD_ENAME;
        for (size_t k = 1; k <= n; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return EMAD_ENAME;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        /* Overlong forms, surrogates, beyond U+10FFFF. */
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
            (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
            return EMAD_ENAME;
        i += n + 1;
    }
    return 0;
}

/* State of the pre-scan: cursor and remaining budget. */
struct scan {
    const unsigned char *p;
    size_t left;
    size_t objects;
    const char *why;
};

/* Read an n-byte big-endian length; 0 or -1 if the buffer is short. */
static int
scan_len(struct scan *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;

    if (s->left < n) {
        s->why = "truncated msgpack";
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | s->p[i];
    s->p += n;
    s->left -= n;
    *out = v;
    return 0;
}

/* Skip n payload bytes; -1 if the buffer is short. */
static int
scan_skip(struct scan *s, uint64_t n)
{
    if (s->left < n) {
        s->why = "truncated msgpack";
        return -1;
    }
    s->p += n;
    s->left -= n;
    return 0;
}

/* Scan one object (recursively) at depth; 0 or -1 (EMALFORMED) / -2 (ELIMIT). */
static int
scan_object(struct scan *s, int depth)
{
    unsigned char c;
    uint64_t n = 0, items = 0;

    if (depth > PROTO_MAX_DEPTH) {
        s->why = "msgpack nesting too deep";
        return -2;
    }
    if (++s->objects > PROTO_MAX_OBJECTS) {
        s->why = "too many msgpack objects";
        return -2;
    }
    if (s->left == 0) {
        s->why = "truncated msgpack";
        return -1;
    }
    c = *s->p++;
    s->left--;

    if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3)
        return 0; /* fixint, nil, bool */
    if ((c & 0xe0) == 0xa0)
        return scan_skip(s, c & 0x1f); /* fixstr */
    if ((c & 0xf0) == 0x90) {
        items = c & 0x0f;
        goto container;
    }
    if ((c & 0xf0) == 0x80) {
        items = 2 * (uint64_t)(c & 0x0f);
        goto container;
    }
    switch (c) {
    case 0xc4: /* bin 8 */
    case 0xd9: /* str 8 */
        return scan_len(s, 1, &n) < 0 ? -1 : scan_skip(s, n);
    case 0xc5:
    case 0xda:
        return scan_len(s, 2, &n) < 0 ? -1 : scan_skip(s, n);
    case 0xc6:
    case 0xdb:
        return scan_len(s, 4, &n) < 0 ? -1 : scan_skip(s, n);
    case 0xc7: /* ext 8/16/32: length, type byte, data */
        return scan_len(s, 1, &n) < 0 ? -1 : scan_skip(s, n + 1);
    case 0xc8:
        return scan_len(s, 2, &n) < 0 ? -1 : scan_skip(s, n + 1);
    case 0xc9:
        return scan_len(s, 4, &n) < 0 ? -1 : scan_skip(s, n + 1);
    case 0xca: /* float 32 */
    case 0xce: /* uint 32 */
    case 0xd2: /* int 32 */
        return scan_skip(s, 4);
    case 0xcb:
    case 0xcf:
    case 0xd3:
        return scan_skip(s, 8);
    case 0xcc:
    case 0xd0:
        return scan_skip(s, 1);
    case 0xcd:
    case 0xd1:
        return scan_skip(s, 2);
    case 0xd4: /* fixext 1,2,4,8,16 (+1 type byte) */
        return scan_skip(s, 2);
    case 0xd5:
        return scan_skip(s, 3);
    case 0xd6:
        return scan_skip(s, 5);
    case 0xd7:
        return scan_skip(s, 9);
    case 0xd8:
        return scan_skip(s, 17);
    case 0xdc: /* array 16 */
        if (scan_len(s, 2, &items) < 0)
            return -1;
        goto container;
    case 0xdd:
        if (scan_len(s, 4, &items) < 0)
            return -1;
        goto container;
    case 0xde: /* map 16 */
        if (scan_len(s, 2, &n) < 0)
            return -1;
        items = 2 * n;
        goto container;
    case 0xdf:
        if (scan_len(s, 4, &n) < 0)
            return -1;
        items = 2 * n;
        goto container;
    default:
        s->why = "invalid msgpack type byte";
        return -1; /* 0xc1 is never used */
    }

container:
    /* Every element takes at least one byte: refuse counts the data cannot hold. */
    if (items > s->left) {
        s->why = "msgpack container count exceeds the message";
        return -1;
    }
    if (items > PROTO_MAX_OBJECTS - s->objects) {
        s->why = "too many msgpack objects";
        return -2;
    }
    for (uint64_t i = 0; i < items; i++) {
        int rc = scan_object(s, depth + 1);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int
proto_prescan(const void *buf, size_t len, const char **why)
{
    struct scan s = {.p = buf, .left = len, .objects = 0, .why = NULL};
    int rc;

    if (len == 0) {
        *why = "empty message";
        return EMAD_EMALFORMED;
    }
    rc = scan_object(&s, 0);
    if (rc == -2) {
        *why = s.why;
        return EMAD_ELIMIT;
    }
    if (rc < 0) {
        *why = s.why;
        return EMAD_EMALFORMED;
    }
    if (s.left != 0) {
        *why = "trailing bytes after the msgpack map";
        return EMAD_EMALFORMED;
    }
    *why = NULL;
    return 0;
}

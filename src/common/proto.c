/*
 * proto.c - protocol tables and checks shared by the daemon and libemad:
 * operation names, msgpack helpers, and the allocation-free msgpack
 * pre-scan that guards msgpack_unpack_next() against hostile input.
 */
#include <string.h>

#include <msgpack.h>

#include "common/proto.h"

static const char *const op_names[PROTO_OP_COUNT] = {
#define XX(id, name) [PROTO_OP_##id] = name,
    PROTO_OP_MAP(XX)
#undef XX
};

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

/*
 * decode.c - one-pass msgpack decoding into msgpack-c objects (see
 * decode.h). The checks and their messages are proto_prescan()'s, made in
 * the same order (depth first, each object's checks before its children),
 * so a message gets the same error from either; the objects and their
 * types are msgpack_unpack_next()'s (a signed integer >= 0 is a positive
 * integer, float 32 keeps its type with the value widened to double).
 * The address of an empty str or bin is not defined (msgpack-c gives NULL
 * for some). The arena keeps its memory between messages: after a message that
 * needed several chunks it is remade as one chunk of their size (up to
 * DECODE_KEEP_MAX), so the next message like it needs no malloc at all.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/decode.h"
#include "common/proto.h"

/* The first chunk's size, and the most an arena keeps between messages. */
#define DECODE_CHUNK_MIN (64u << 10)
#define DECODE_KEEP_MAX (8u << 20)

struct decode_chunk {
    struct decode_chunk *next;
    size_t size; /* bytes after the header */
    max_align_t data[];
};

void
decode_arena_init(decode_arena *a)
{
    memset(a, 0, sizeof(*a));
}

void
decode_arena_fini(decode_arena *a)
{
    while (a->chunks != NULL) {
        struct decode_chunk *c = a->chunks;
        a->chunks = c->next;
        free(c);
    }
    memset(a, 0, sizeof(*a));
}

size_t
decode_arena_chunks(const decode_arena *a)
{
    size_t n = 0;

    for (const struct decode_chunk *c = a->chunks; c != NULL; c = c->next)
        n++;
    return n;
}

/* Make a chunk of at least size bytes the newest; 0 or -1 (out of memory). */
static int
arena_grow(decode_arena *a, size_t size)
{
    struct decode_chunk *c;

    if (size > SIZE_MAX - sizeof(*c) || (c = malloc(sizeof(*c) + size)) == NULL)
        return -1;
    c->next = a->chunks;
    c->size = size;
    a->chunks = c;
    a->ptr = (char *)c->data;
    a->free = size;
    return 0;
}

/*
 * Forget what the arena handed out. One chunk is kept: the only one, or a
 * new one as large as everything the last message used (at most
 * DECODE_KEEP_MAX; the smallest chunk if more).
 */
static void
arena_reset(decode_arena *a)
{
    size_t want = a->used;

    a->used = 0;
    if (a->chunks != NULL && a->chunks->next == NULL && a->chunks->size <= DECODE_KEEP_MAX) {
        a->ptr = (char *)a->chunks->data;
        a->free = a->chunks->size;
        return;
    }
    decode_arena_fini(a);
    if (want < DECODE_CHUNK_MIN || want > DECODE_KEEP_MAX)
        want = DECODE_CHUNK_MIN;
    (void)arena_grow(a, want); /* on failure the next allocation tries again */
}

/* n bytes (a multiple of 8) from the arena, or NULL. */
static void *
arena_alloc(decode_arena *a, size_t n)
{
    void *p;

    if (n > a->free) {
        size_t size = a->chunks != NULL ? a->chunks->size * 2 : DECODE_CHUNK_MIN;
        if (size < n)
            size = n;
        if (arena_grow(a, size) < 0)
            return NULL;
    }
    p = a->ptr;
    a->ptr += n;
    a->free -= n;
    a->used += n;
    return p;
}

/* State of a decode: cursor, remaining budget, and where arrays and maps go. */
struct dec {
    const unsigned char *p;
    size_t left;
    size_t objects;
    const char *why;
    decode_arena *a;
};

/* Fail with why: -1 (malformed) or -2 (a limit). */
static int
dec_fail(struct dec *d, int rc, const char *why)
{
    d->why = why;
    return rc;
}

/* Read an n-byte big-endian unsigned integer; 0 or -1 if the buffer is short. */
static int
dec_be(struct dec *d, size_t n, uint64_t *out)
{
    uint64_t v = 0;

    if (d->left < n)
        return dec_fail(d, -1, "truncated msgpack");
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | d->p[i];
    d->p += n;
    d->left -= n;
    *out = v;
    return 0;
}

/* Take n payload bytes at *ptr; 0 or -1 if the buffer is short. */
static int
dec_take(struct dec *d, uint64_t n, const char **ptr)
{
    if (d->left < n)
        return dec_fail(d, -1, "truncated msgpack");
    *ptr = (const char *)d->p;
    d->p += n;
    d->left -= n;
    return 0;
}

/* A str or bin of n bytes (length already read). */
static int
dec_bytes(struct dec *d, msgpack_object *o, msgpack_object_type type, uint64_t n)
{
    const char *ptr;

    if (dec_take(d, n, &ptr) < 0)
        return -1;
    o->type = type;
    if (type == MSGPACK_OBJECT_STR) {
        o->via.str.ptr = ptr;
        o->via.str.size = (uint32_t)n;
    } else {
        o->via.bin.ptr = ptr;
        o->via.bin.size = (uint32_t)n;
        /* What follows a bin (the next tensor's map after its data) was just written by
         * another CPU: ask for it now rather than when the next map is read. */
        if (d->left > 0)
            __builtin_prefetch(d->p);
    }
    return 0;
}

/* An ext of n data bytes after its type byte (length already read). */
static int
dec_ext(struct dec *d, msgpack_object *o, uint64_t n)
{
    const char *ptr;

    if (dec_take(d, n + 1, &ptr) < 0)
        return -1;
    o->type = MSGPACK_OBJECT_EXT;
    o->via.ext.type = (int8_t)(unsigned char)ptr[0];
    o->via.ext.ptr = ptr + 1;
    o->via.ext.size = (uint32_t)n;
    return 0;
}

/* An unsigned integer of n bytes. */
static int
dec_uint(struct dec *d, msgpack_object *o, size_t n)
{
    uint64_t v;

    if (dec_be(d, n, &v) < 0)
        return -1;
    o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
    o->via.u64 = v;
    return 0;
}

/* A signed integer of n bytes: negative, or positive as msgpack-c reports it. */
static int
dec_int(struct dec *d, msgpack_object *o, size_t n)
{
    uint64_t v;
    int64_t x;

    if (dec_be(d, n, &v) < 0)
        return -1;
    x = n == 1 ? (int8_t)v : n == 2 ? (int16_t)v : n == 4 ? (int32_t)v : (int64_t)v;
    if (x < 0) {
        o->type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
        o->via.i64 = x;
    } else {
        o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
        o->via.u64 = (uint64_t)x;
    }
    return 0;
}

/* A float of n bytes (4 or 8). */
static int
dec_float(struct dec *d, msgpack_object *o, size_t n)
{
    uint64_t v;

    if (dec_be(d, n, &v) < 0)
        return -1;
    if (n == 4) {
        uint32_t b = (uint32_t)v;
        float f;
        memcpy(&f, &b, sizeof(f));
        o->type = MSGPACK_OBJECT_FLOAT32;
        o->via.f64 = (double)f;
    } else {
        double f;
        memcpy(&f, &v, sizeof(f));
        o->type = MSGPACK_OBJECT_FLOAT64;
        o->via.f64 = f;
    }
    return 0;
}

static int dec_object(struct dec *d, msgpack_object *o, int depth);

/*
 * dec_object() for an element of a container, the commonest objects of a
 * request (a fixstr whose bytes are all there: a key, a name; a positive
 * fixint) decoded here without a call. Anything else, or anything
 * dec_object() would refuse, goes to dec_object().
 */
static inline int
dec_child(struct dec *d, msgpack_object *o, int depth)
{
    if (depth <= PROTO_MAX_DEPTH && d->objects < PROTO_MAX_OBJECTS && d->left > 0) {
        unsigned char c = *d->p;
        size_t n = c & 0x1f;

        if ((c & 0xe0) == 0xa0 && n < d->left) {
            d->objects++;
            o->type = MSGPACK_OBJECT_STR;
            o->via.str.ptr = (const char *)d->p + 1;
            o->via.str.size = (uint32_t)n;
            d->p += 1 + n;
            d->left -= 1 + n;
            return 0;
        }
        if (c <= 0x7f) {
            d->objects++;
            o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
            o->via.u64 = c;
            d->p++;
            d->left--;
            return 0;
        }
    }
    return dec_object(d, o, depth);
}

/* The elements of an array (map 0) or the pairs of a map (map 1) of n entries. */
static int
dec_container(struct dec *d, msgpack_object *o, int map, uint64_t n, int depth)
{
    uint64_t items = map ? 2 * n : n;

    /* Every element takes at least one byte: refuse counts the data cannot hold. */
    if (items > d->left)
        return dec_fail(d, -1, "msgpack container count exceeds the message");
    if (items > PROTO_MAX_OBJECTS - d->objects)
        return dec_fail(d, -2, "too many msgpack objects");
    if (map) {
        msgpack_object_kv *kv = arena_alloc(d->a, (size_t)n * sizeof(*kv));
        if (kv == NULL && n > 0)
            return dec_fail(d, -3, "out of memory decoding msgpack");
        o->type = MSGPACK_OBJECT_MAP;
        o->via.map.ptr = kv;
        o->via.map.size = (uint32_t)n;
        for (uint64_t i = 0; i < n; i++) {
            int rc = dec_child(d, &kv[i].key, depth + 1);
            if (rc == 0)
                rc = dec_child(d, &kv[i].val, depth + 1);
            if (rc < 0)
                return rc;
        }
    } else {
        msgpack_object *v = arena_alloc(d->a, (size_t)n * sizeof(*v));
        if (v == NULL && n > 0)
            return dec_fail(d, -3, "out of memory decoding msgpack");
        o->type = MSGPACK_OBJECT_ARRAY;
        o->via.array.ptr = v;
        o->via.array.size = (uint32_t)n;
        for (uint64_t i = 0; i < n; i++) {
            int rc = dec_child(d, &v[i], depth + 1);
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

/* Decode one object (recursively) at depth; 0 or -1 (malformed), -2 (a limit), -3 (memory). */
static int
dec_object(struct dec *d, msgpack_object *o, int depth)
{
    unsigned char c;
    uint64_t n;

    if (depth > PROTO_MAX_DEPTH)
        return dec_fail(d, -2, "msgpack nesting too deep");
    if (++d->objects > PROTO_MAX_OBJECTS)
        return dec_fail(d, -2, "too many msgpack objects");
    if (d->left == 0)
        return dec_fail(d, -1, "truncated msgpack");
    c = *d->p++;
    d->left--;

    if (c <= 0x7f) {
        o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
        o->via.u64 = c;
        return 0;
    }
    if (c >= 0xe0) {
        o->type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
        o->via.i64 = (int8_t)c;
        return 0;
    }
    if ((c & 0xe0) == 0xa0)
        return dec_bytes(d, o, MSGPACK_OBJECT_STR, c & 0x1f);
    if ((c & 0xf0) == 0x90)
        return dec_container(d, o, 0, c & 0x0f, depth);
    if ((c & 0xf0) == 0x80)
        return dec_container(d, o, 1, c & 0x0f, depth);
    switch (c) {
    case 0xc0:
        o->type = MSGPACK_OBJECT_NIL;
        return 0;
    case 0xc2:
    case 0xc3:
        o->type = MSGPACK_OBJECT_BOOLEAN;
        o->via.boolean = c == 0xc3;
        return 0;
    case 0xc4: /* bin 8/16/32 */
    case 0xc5:
    case 0xc6:
        return dec_be(d, (size_t)1 << (c - 0xc4), &n) < 0 ? -1
                                                          : dec_bytes(d, o, MSGPACK_OBJECT_BIN, n);
    case 0xd9: /* str 8/16/32 */
    case 0xda:
    case 0xdb:
        return dec_be(d, (size_t)1 << (c - 0xd9), &n) < 0 ? -1
                                                          : dec_bytes(d, o, MSGPACK_OBJECT_STR, n);
    case 0xc7: /* ext 8/16/32: length, type byte, data */
    case 0xc8:
    case 0xc9:
        return dec_be(d, (size_t)1 << (c - 0xc7), &n) < 0 ? -1 : dec_ext(d, o, n);
    case 0xca: /* float 32/64 */
    case 0xcb:
        return dec_float(d, o, c == 0xca ? 4 : 8);
    case 0xcc: /* uint 8/16/32/64 */
    case 0xcd:
    case 0xce:
    case 0xcf:
        return dec_uint(d, o, (size_t)1 << (c - 0xcc));
    case 0xd0: /* int 8/16/32/64 */
    case 0xd1:
    case 0xd2:
    case 0xd3:
        return dec_int(d, o, (size_t)1 << (c - 0xd0));
    case 0xd4: /* fixext 1/2/4/8/16 */
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8:
        return dec_ext(d, o, (uint64_t)1 << (c - 0xd4));
    case 0xdc: /* array 16/32 */
    case 0xdd:
        return dec_be(d, c == 0xdc ? 2 : 4, &n) < 0 ? -1 : dec_container(d, o, 0, n, depth);
    case 0xde: /* map 16/32 */
    case 0xdf:
        return dec_be(d, c == 0xde ? 2 : 4, &n) < 0 ? -1 : dec_container(d, o, 1, n, depth);
    default: /* 0xc1 is never used */
        return dec_fail(d, -1, "invalid msgpack type byte");
    }
}

int
decode_message(decode_arena *a, const void *buf, size_t len, msgpack_object *root, const char **why)
{
    struct dec d = {.p = buf, .left = len, .objects = 0, .why = NULL, .a = a};
    int rc;

    arena_reset(a);
    memset(root, 0, sizeof(*root));
    if (len == 0) {
        *why = "empty message";
        return EMAD_EMALFORMED;
    }
    rc = dec_object(&d, root, 0);
    *why = d.why;
    if (rc == -3)
        return EMAD_ENOMEM;
    if (rc == -2)
        return EMAD_ELIMIT;
    if (rc < 0)
        return EMAD_EMALFORMED;
    if (d.left != 0) {
        *why = "trailing bytes after the msgpack map";
        return EMAD_EMALFORMED;
    }
    *why = NULL;
    return 0;
}

/*
 * proto.h - the emad wire protocol, shared by the daemon and libemad.
 *
 * Every request and reply is one msgpack map carried in one nanomsg
 * message (REQ/REP). docs/PROTOCOL.md is the normative description; this
 * header holds the constants both sides use: protocol version, operation
 * names and limits, with small msgpack helpers and the pre-scan of
 * untrusted messages. Error codes are in common/errors.h, name rules in
 * common/names.h.
 */
#ifndef EMAD_PROTO_H
#define EMAD_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "emad.h"
#include "common/proto_keys.h"

#define PROTO_VERSION EMAD_PROTOCOL_VERSION

/* Operations: the enum and the wire names, one entry each (XX(ID, "name")). */
#define PROTO_OP_MAP(XX)                                                                           \
    XX(HELLO, "hello")                                                                             \
    XX(CREATE, "create")                                                                           \
    XX(DROP, "drop")                                                                               \
    XX(PUSH, "push")                                                                               \
    XX(BEGIN, "begin")                                                                             \
    XX(COMMIT, "commit")                                                                           \
    XX(ABORT, "abort")                                                                             \
    XX(PULL, "pull")                                                                               \
    XX(READ, "read")                                                                               \
    XX(RELEASE, "release")                                                                         \
    XX(LIST, "list")                                                                               \
    XX(STATS, PROTO_KEY_STATS) /* the op is named like its reply's key */                          \
    XX(CONFIGURE, "configure")                                                                     \
    XX(SNAPSHOT, "snapshot")                                                                       \
    XX(AUTH_BEGIN, "auth_begin")                                                                   \
    XX(AUTH_FINISH, "auth_finish")                                                                 \
    XX(INSTALL, "install") /* cluster resync: a model's state from a peer */

enum proto_op {
    PROTO_OP_INVALID = 0,
#define XX(id, name) PROTO_OP_##id,
    PROTO_OP_MAP(XX)
#undef XX
    PROTO_OP_COUNT
};

/* Limits (also in docs/PROTOCOL.md). */
#define PROTO_MAX_TENSORS 65536      /* tensors in one push message */
#define PROTO_MAX_RANGES 65536       /* ranges in one read request */
#define PROTO_LIST_PAGE 65536        /* tensors in one page of a `list` of a model */
#define PROTO_MAX_OBJECTS (1u << 21) /* msgpack objects in one request */
#define PROTO_MAX_DEPTH 8            /* nesting depth of a request */
#define PROTO_DEFAULT_MAX_MESSAGE (64u << 20)
#define PROTO_MIN_MAX_MESSAGE (64u << 10)

/* Bytes in one page of a `list` of a model: quick to build, and sent without waiting. */
#define PROTO_LIST_PAGE_BYTES (512u << 10)

/*
 * Kernel socket buffers (NN_SNDBUF, NN_RCVBUF) of the daemon's and
 * libemad's sockets. nanomsg's default of 128 KiB stalls a pipelined
 * transfer: with 1 MiB the sender keeps writing while the receiver works
 * (bench/RESULTS.md has the sweep; larger buffers gained nothing).
 */
#define PROTO_SOCKET_BUFFER_BYTES (1 << 20)
#define PROTO_MAX_MAX_MESSAGE (1u << 30) /* nanomsg sizes are int */
#define PROTO_REPLY_OVERHEAD 4096        /* room for reply headers around data */

struct msgpack_object;
struct msgpack_packer;

/* Pack a NUL-terminated string; pack "key": uint. */
void proto_pack_str(struct msgpack_packer *pk, const char *s);
void proto_pack_kv_u64(struct msgpack_packer *pk, const char *key, uint64_t v);

/*
 * Value of string key `key` in a msgpack map, or NULL if absent (or if
 * map is NULL or not a map). Used by both sides to read requests/replies.
 */
const struct msgpack_object *proto_map_get(const struct msgpack_object *map, const char *key);

/* A msgpack float32, float64 or integer as a double: 0, or -1 if o is not a number. */
int proto_number(const struct msgpack_object *o, double *v);

/* Wire name of an op, or NULL. */
const char *proto_op_name(int op);

/* Op for a wire name of length len, or PROTO_OP_INVALID. */
int proto_op_from_name(const char *name, size_t len);

/*
 * Scan a msgpack buffer without allocating: exactly one object must fill
 * buf[0..len), every container count must fit in the bytes left, nesting
 * must stay within PROTO_MAX_DEPTH and the total number of objects within
 * PROTO_MAX_OBJECTS. Makes msgpack_unpack_next() safe on untrusted input.
 * Returns 0 or EMAD_EMALFORMED / EMAD_ELIMIT with *why set to a static message.
 */
int proto_prescan(const void *buf, size_t len, const char **why);

#endif

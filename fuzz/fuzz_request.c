/*
 * fuzz_request.c - libFuzzer target for the daemon's request path: every
 * input is handled by one long-lived offline server exactly as if it had
 * arrived on the socket (pre-scan, msgpack decode, validation, store).
 * Each reply must itself be a valid msgpack map whose strings are all
 * valid UTF-8 (docs/PROTOCOL.md: "str" is UTF-8).
 *
 * Two additions let the fuzzer reach the stateful ops:
 *  - Transaction and session ids start at a random base, so the target
 *    remembers the last 8 ids that replies returned ("txn", "session") and
 *    rewrites the 9 bytes `cf 00 00 00 00 00 00 00 0K` (a uint64 K < 8 in
 *    its longest form, which encoders never emit) to the K-th latest id.
 *  - An input starting with 0xc1 (never a valid msgpack byte) is a script:
 *    frames of a 2-byte big-endian length and that many request bytes,
 *    sent in order. One input can then begin, stage, commit, pull and read.
 * The server is rebuilt every 20000 inputs so the model/transaction/session
 * limits are not hit for good, and so teardown runs under the sanitizers.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "base/log.h"
#include "common/proto.h"
#include "daemon/server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define RESET_EVERY 20000
#define NIDS 8

static server *srv;
static uint64_t ids[NIDS]; /* ids[0] is the latest */

/* 1 if s[0..len) is valid UTF-8 (shortest forms, no surrogates, <= U+10FFFF). */
static int
utf8_ok(const unsigned char *s, size_t len)
{
    for (size_t i = 0; i < len;) {
        unsigned char c = s[i];
        size_t n = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : 3;
        uint32_t cp = n == 0 ? c : n == 1 ? c & 0x1f : n == 2 ? c & 0x0f : c & 0x07;

        if ((c >= 0x80 && c < 0xc2) || c > 0xf4 || len - i <= n)
            return 0;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || (cp >= 0xd800 && cp <= 0xdfff) ||
            cp > 0x10ffff)
            return 0;
        i += n + 1;
    }
    return 1;
}

/* 1 if every str in o (recursively, keys included) is valid UTF-8. */
static int
strings_ok(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_STR:
        return utf8_ok((const unsigned char *)o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_ARRAY:
        for (uint32_t i = 0; i < o->via.array.size; i++)
            if (!strings_ok(&o->via.array.ptr[i]))
                return 0;
        return 1;
    case MSGPACK_OBJECT_MAP:
        for (uint32_t i = 0; i < o->via.map.size; i++)
            if (!strings_ok(&o->via.map.ptr[i].key) || !strings_ok(&o->via.map.ptr[i].val))
                return 0;
        return 1;
    default:
        return 1;
    }
}

/* Remember a "txn" or "session" id found at the top of a reply map. */
static void
remember_ids(const msgpack_object *map)
{
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key, *v = &map->via.map.ptr[i].val;
        if (k->type != MSGPACK_OBJECT_STR || v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            continue;
        if ((k->via.str.size == 3 && memcmp(k->via.str.ptr, "txn", 3) == 0) ||
            (k->via.str.size == 7 && memcmp(k->via.str.ptr, "session", 7) == 0)) {
            memmove(&ids[1], &ids[0], (NIDS - 1) * sizeof(ids[0]));
            ids[0] = v->via.u64;
        }
    }
}

/* Handle one request (copied so id placeholders can be rewritten). */
static void
one_request(const uint8_t *data, size_t size)
{
    uint8_t *buf = malloc(size != 0 ? size : 1);
    void *reply;
    size_t len, off = 0;
    msgpack_unpacked u;

    memcpy(buf, data, size);
    for (size_t i = 0; i + 9 <= size; i++) {
        static const uint8_t zeros[7];
        if (buf[i] == 0xcf && memcmp(buf + i + 1, zeros, 7) == 0 && buf[i + 8] < NIDS) {
            uint64_t id = ids[buf[i + 8]];
            for (int b = 0; b < 8; b++)
                buf[i + 1 + b] = (uint8_t)(id >> (56 - 8 * b));
            i += 8;
        }
    }
    server_process(srv, buf, size, &reply, &len);
    free(buf);
    if (reply == NULL)
        abort(); /* every request gets a reply */
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, reply, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len ||
        u.data.type != MSGPACK_OBJECT_MAP)
        abort();
    if (!strings_ok(&u.data))
        abort(); /* a reply string that is not UTF-8 breaks clients that decode it */
    remember_ids(&u.data);
    msgpack_unpacked_destroy(&u);
    free(reply);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned long inputs;
    server_config cfg;

    if (srv == NULL || ++inputs % RESET_EVERY == 0) {
        server_destroy(srv);
        log_set_level(LOG_ERROR); /* one warning per bad request would drown the output */
        server_config_init(&cfg);
        srv = server_create_offline(&cfg);
        memset(ids, 0, sizeof(ids));
    }
    if (size > 0 && data[0] == 0xc1) {
        size_t off = 1;
        while (off + 2 <= size) {
            size_t n = (size_t)data[off] << 8 | data[off + 1];
            off += 2;
            if (n > size - off)
                n = size - off;
            one_request(data + off, n);
            off += n;
        }
        return 0;
    }
    one_request(data, size);
    return 0;
}

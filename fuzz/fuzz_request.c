/*
 * fuzz_request.c - libFuzzer target for the daemon's request path: every
 * input is handled by one long-lived offline server exactly as if it had
 * arrived on the socket (pre-scan, msgpack decode, validation, store).
 * Each reply must itself be a valid msgpack map.
 */
#include <stdint.h>
#include <stdlib.h>

#include <msgpack.h>

#include "proto.h"
#include "server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static server *srv;
    server_config cfg;
    void *reply;
    size_t len, off = 0;
    msgpack_unpacked u;

    if (srv == NULL) {
        server_config_init(&cfg);
        srv = server_create_offline(&cfg);
    }
    server_process(srv, data, size, &reply, &len);
    if (reply == NULL)
        abort(); /* every request gets a reply */
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, reply, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len ||
        u.data.type != MSGPACK_OBJECT_MAP)
        abort();
    msgpack_unpacked_destroy(&u);
    free(reply);
    return 0;
}

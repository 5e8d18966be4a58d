/*
 * bench_checks.c - how long single adversarial requests hold the daemon's
 * loop thread in the request checks (slices, names, pending steps).
 *
 * Each case packs its requests with msgpack-c and hands them to an offline
 * server (server_process(), exactly the handler the loop thread runs), and
 * prints the wall time of the slowest request: that is how long the loop
 * could not answer anyone else. Cases:
 *   slices     one push of 65,536 one-element slices of one tensor, in
 *              reverse order
 *   writers    a model with 6 writers, each pushing 65,536 one-element
 *              slices of one 393,216-element tensor (interleaved)
 *   pull_dup   a pull naming one tensor 800,000 times
 * Usage: bench_checks [CASE...] (default: all).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <msgpack.h>

#include "daemon/server.h"

#define SLICES 65536
#define WRITERS 6
#define PULL_NAMES 800000

static msgpack_sbuffer sb;
static msgpack_packer pk;

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void
str(const char *s)
{
    msgpack_pack_str_with_body(&pk, s, strlen(s));
}

/* Start a request map of n entries besides v and op. */
static void
req(const char *op, size_t n)
{
    msgpack_sbuffer_clear(&sb);
    msgpack_pack_map(&pk, 2 + n);
    str("v");
    msgpack_pack_uint64(&pk, 1);
    str("op");
    str(op);
}

/* Print the message of an error map. */
static void
print_message(const msgpack_object *e)
{
    for (uint32_t i = 0; i < e->via.map.size; i++) {
        const msgpack_object_kv *kv = &e->via.map.ptr[i];
        if (kv->key.via.str.size == 7 && memcmp(kv->key.via.str.ptr, "message", 7) == 0)
            printf("    error: %.*s\n", (int)kv->val.via.str.size, kv->val.via.str.ptr);
    }
}

/* Send the packed request; returns seconds spent and whether the reply said ok. */
static double
run(server *srv, int *ok)
{
    void *reply = NULL;
    size_t rlen = 0, off = 0;
    msgpack_unpacked u;
    double t0 = now_s(), dt;

    server_process(srv, sb.data, sb.size, &reply, &rlen);
    dt = now_s() - t0;
    msgpack_unpacked_init(&u);
    *ok = 0;
    if (msgpack_unpack_next(&u, reply, rlen, &off) == MSGPACK_UNPACK_SUCCESS &&
        u.data.type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < u.data.via.map.size; i++) {
            const msgpack_object_kv *kv = &u.data.via.map.ptr[i];
            if (kv->key.via.str.size == 2 && memcmp(kv->key.via.str.ptr, "ok", 2) == 0)
                *ok = kv->val.via.boolean;
            if (kv->key.via.str.size == 5 && memcmp(kv->key.via.str.ptr, "error", 5) == 0)
                print_message(&kv->val);
        }
    }
    msgpack_unpacked_destroy(&u);
    free(reply);
    return dt;
}

static void
create(server *srv, const char *mname, unsigned writers)
{
    int ok;

    req("create", 2);
    str("model");
    str(mname);
    str("writers");
    msgpack_pack_uint32(&pk, writers);
    (void)run(srv, &ok);
}

/* Start a push of count tensors by writer at step 1. */
static void
push_head(const char *mname, uint64_t writer, size_t count)
{
    req("push", 4);
    str("model");
    str(mname);
    str("step");
    msgpack_pack_uint64(&pk, 1);
    str("writer");
    msgpack_pack_uint64(&pk, writer);
    str("tensors");
    msgpack_pack_array(&pk, count);
}

/* Pack an F32 param of numel elements carrying element `start` (numel 1: the whole tensor). */
static void
pack_element(const char *name, uint64_t numel, uint64_t start)
{
    static const float v = 1.0f;

    msgpack_pack_map(&pk, numel > 1 ? 6 : 5);
    str("name");
    str(name);
    str("kind");
    str("param");
    str("dtype");
    str("F32");
    str("shape");
    msgpack_pack_array(&pk, 1);
    msgpack_pack_uint64(&pk, numel);
    if (numel > 1) {
        str("slice");
        msgpack_pack_array(&pk, 2);
        msgpack_pack_uint64(&pk, start);
        msgpack_pack_uint64(&pk, 1);
    }
    str("data");
    msgpack_pack_bin_with_body(&pk, &v, sizeof(v));
}

/* One push of count one-element tensors t0, t1, ... */
static double
push_tensors(server *srv, const char *mname, size_t count, int *ok)
{
    char name[32];

    push_head(mname, 0, count);
    for (size_t k = 0; k < count; k++) {
        snprintf(name, sizeof(name), "t%zu", k);
        pack_element(name, 1, 0);
    }
    return run(srv, ok);
}

static void
case_tensors(server *srv)
{
    int ok;

    create(srv, "tensors", 1);
    printf("tensors   one push of %d one-element tensors: %.3f s", SLICES,
           push_tensors(srv, "tensors", SLICES, &ok));
    printf(" (%s)\n", ok ? "ok" : "error");
}

/*
 * One push by writer w of count one-element slices of tensor "w" (numel
 * elements): elements w, w + stride, ..., the last first.
 */
static double
push_slices(server *srv, const char *mname, uint64_t writer, uint64_t numel, uint64_t stride,
            size_t count, int *ok)
{
    push_head(mname, writer, count);
    for (size_t k = count; k-- > 0;)
        pack_element("w", numel, writer + k * stride);
    return run(srv, ok);
}

static void
case_slices(server *srv)
{
    int ok;
    double dt;

    create(srv, "slices", 1);
    dt = push_slices(srv, "slices", 0, SLICES, 1, SLICES, &ok);
    printf("slices    one push of %d one-element slices: %.3f s (%s)\n", SLICES, dt,
           ok ? "ok" : "error");
}

static void
case_writers(server *srv)
{
    double worst = 0;
    int ok, all = 1;

    create(srv, "writers", WRITERS);
    for (unsigned w = 0; w < WRITERS; w++) {
        double dt =
            push_slices(srv, "writers", w, (uint64_t)SLICES * WRITERS, WRITERS, SLICES, &ok);
        all = all && ok;
        worst = dt > worst ? dt : worst;
    }
    printf("writers   %d writers x %d one-element slices: slowest push %.3f s (%s)\n", WRITERS,
           SLICES, worst, all ? "ok" : "error");
}

static void
case_pull_dup(server *srv)
{
    int ok;
    double dt;

    create(srv, "pull", 1);
    (void)push_slices(srv, "pull", 0, 1, 1, 1, &ok);
    req("pull", 2);
    str("model");
    str("pull");
    str("tensors");
    msgpack_pack_array(&pk, PULL_NAMES);
    for (size_t i = 0; i < PULL_NAMES; i++)
        str("w");
    dt = run(srv, &ok);
    printf("pull_dup  a pull naming one tensor %d times: %.3f s (%s)\n", PULL_NAMES, dt,
           ok ? "ok" : "error");
}

int
main(int argc, char **argv)
{
    static const struct {
        const char *name;
        void (*run)(server *);
    } cases[] = {{"tensors", case_tensors},
                 {"slices", case_slices},
                 {"writers", case_writers},
                 {"pull_dup", case_pull_dup}};
    server_config cfg;
    server *srv;

    server_config_init(&cfg);
    cfg.max_message_bytes = 64u << 20;
    srv = server_create_offline(&cfg);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        int run = argc < 2;
        for (int a = 1; a < argc; a++)
            run = run || strcmp(argv[a], cases[c].name) == 0;
        if (run)
            cases[c].run(srv);
    }
    msgpack_sbuffer_destroy(&sb);
    server_destroy(srv);
    return 0;
}

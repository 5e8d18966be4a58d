/*
 * bench_small.c - many small tensors: one push of 2,000 float32 tensors of
 * 256 elements (a transformer's LayerNorm weights and biases), repeated,
 * against a daemon started here; then 16 clients pushing such models
 * concurrently (each to its own model).
 *
 * Prints per-push latency p50/p99, tensors applied per second, and the
 * aggregate requests/s of the 16 clients. Everything on 127.0.0.1.
 *
 * Side by side in the same loop, before each push, a raw nanomsg REQ/REP
 * round trip of the same data bytes (one message to a REP server process,
 * bench/raw.c, acked; nanomsg's default socket buffers and emad's, the
 * faster counted), so the ratio emad p50 / raw p50 shows what emad's
 * protocol and averaging of 2,000 tensors cost over the transport. And
 * after each push, the same push by a client with push layouts turned off
 * (EMAD_PUSH_LAYOUTS=off, to a model of its own): every push sends its
 * 2,000 tensor maps.
 *
 *     bench_small --emad PATH [--pushes N] [--clients C]
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "emad.h"
#include "proc.h"
#include "raw.h"

#define NTENSORS 2000
#define NELEM 256

static char url[64];
static int pushes = 200;
static raw_link *raw[RAW_BUFS_COUNT]; /* the raw server's endpoints, for the main loop */

static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* A model of NTENSORS small tensors with names and data. */
typedef struct small_model {
    emad_tensor t[NTENSORS];
    char names[NTENSORS][32];
    float data[NTENSORS][NELEM];
} small_model;

static void
model_init(small_model *m)
{
    for (int i = 0; i < NTENSORS; i++) {
        snprintf(m->names[i], sizeof(m->names[i]), "layer%d.norm.%s", i / 2,
                 i % 2 ? "bias" : "weight");
        for (int k = 0; k < NELEM; k++)
            m->data[i][k] = (float)(i + k) * 0.001f;
        memset(&m->t[i], 0, sizeof(m->t[i]));
        m->t[i].name = m->names[i];
        m->t[i].kind = EMAD_PARAM;
        m->t[i].dtype = EMAD_F32;
        m->t[i].ndim = 1;
        m->t[i].shape[0] = NELEM;
        m->t[i].data = m->data[i];
        m->t[i].nbytes = sizeof(m->data[i]);
    }
}

/*
 * Push `pushes` steps of a small model to `name`; latencies (seconds) into
 * lat if not NULL, and then, before each push, the round trip of the same
 * data bytes over each raw link into rawlat[bufs] (if raw links are set).
 */
static int
push_loop(const char *name, double *lat, double *rawlat[RAW_BUFS_COUNT], double *wholelat)
{
    small_model *m = malloc(sizeof(*m));
    emad_client *c = NULL, *cw = NULL;
    char whole[64];
    int rc;

    if (m == NULL)
        return -1;
    model_init(m);
    (void)snprintf(whole, sizeof(whole), "%s-whole", name);
    if ((rc = emad_connect(&c, url, NULL)) != 0 || (rc = emad_create(c, name, 0.999, 1)) != 0 ||
        (wholelat != NULL && ((rc = emad_connect(&cw, url, NULL)) != 0 ||
                              (rc = emad_create(cw, whole, 0.999, 1)) != 0))) {
        fprintf(stderr, "bench_small: %s: %s\n", name, emad_strerror(rc));
        emad_close(c);
        emad_close(cw);
        free(m);
        return -1;
    }
    /* Each emad push follows a raw round trip and each raw round trip an emad push: a server
     * process that has just served a request answers faster than one woken up, and two raw
     * round trips in a row gave the second that edge over the push after it. */
    for (int s = 1; s <= pushes && rc == 0; s++) {
        for (int b = 0; b < RAW_BUFS_COUNT && rc == 0; b++) {
            double t0 = now();

            if (rawlat != NULL) {
                if (raw_push(raw[b], (const char *)m->data, sizeof(m->data), sizeof(m->data)) < 0) {
                    rc = -1;
                    break;
                }
                rawlat[b][s - 1] = now() - t0;
            }
            if (b == 0) { /* the push with layouts */
                t0 = now();
                if ((rc = emad_push(c, name, (uint64_t)s, m->t, NTENSORS, NULL)) != 0)
                    fprintf(stderr, "bench_small: push: %s (%s)\n", emad_strerror(rc),
                            emad_last_error(c));
                else if (lat != NULL)
                    lat[s - 1] = now() - t0;
            } else if (b == 1 && wholelat != NULL) { /* the push without */
                /* libemad reads EMAD_PUSH_LAYOUTS at a client's first push */
                if (s == 1)
                    setenv("EMAD_PUSH_LAYOUTS", "off", 1);
                t0 = now();
                rc = emad_push(cw, whole, (uint64_t)s, m->t, NTENSORS, NULL);
                wholelat[s - 1] = now() - t0;
                if (s == 1)
                    unsetenv("EMAD_PUSH_LAYOUTS");
                if (rc != 0)
                    fprintf(stderr, "bench_small: push: %s (%s)\n", emad_strerror(rc),
                            emad_last_error(cw));
            }
        }
    }
    emad_close(c);
    emad_close(cw);
    free(m);
    return rc;
}

static void *
client_main(void *arg)
{
    char name[32];

    snprintf(name, sizeof(name), "small%ld", (long)(intptr_t)arg);
    return (void *)(intptr_t)push_loop(name, NULL, NULL, NULL);
}

int
main(int argc, char **argv)
{
    const char *emad = NULL;
    int clients = 16, port, best = 0, status = 1;
    proc daemon = {.pid = -1};
    double *lat, *wholelat, *rawlat[RAW_BUFS_COUNT], t0, el;
    pthread_t th[64];
    raw_server *rs = NULL;

    if (argc > 1 && strcmp(argv[1], RAW_SERVER_ARG) == 0)
        return raw_server_main(argc, argv); /* started by raw_spawn() */

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--emad") == 0 && i + 1 < argc)
            emad = argv[++i];
        else if (strcmp(argv[i], "--pushes") == 0 && i + 1 < argc)
            pushes = atoi(argv[++i]);
        else if (strcmp(argv[i], "--clients") == 0 && i + 1 < argc)
            clients = atoi(argv[++i]);
        else
            emad = NULL, i = argc;
    }
    if (emad == NULL || pushes < 2 || clients < 1 || clients > 64) {
        fprintf(stderr, "usage: bench_small --emad PATH [--pushes N>=2] [--clients 1..64]\n");
        return 2;
    }
    if (proc_init() < 0)
        return 1;
    srand((unsigned)getpid());
    port = 20000 + rand() % 20000;
    snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", port);
    /* proc_spawn() unblocks the signals proc_init() blocked, so SIGTERM stops emad. */
    if (proc_prepare(&daemon, "emad") < 0 ||
        proc_spawn(&daemon, (const char *const[]){emad, "--listen", url, "--log-level", "error",
                                                  "--http", "off", NULL}) < 0)
        goto out;
    /* The raw server before any nanomsg socket exists (it forks). */
    if (raw_spawn(&rs, sizeof(((small_model *)0)->data)) < 0)
        goto out;
    for (int b = 0; b < RAW_BUFS_COUNT; b++)
        if (raw_connect(&raw[b], rs, b) < 0)
            goto out;
    usleep(300000);
    lat = calloc((size_t)pushes, sizeof(*lat));
    wholelat = calloc((size_t)pushes, sizeof(*wholelat));
    for (int b = 0; b < RAW_BUFS_COUNT; b++)
        rawlat[b] = calloc((size_t)pushes, sizeof(double));
    if (push_loop("small", lat, rawlat, wholelat) != 0)
        goto out;
    qsort(lat, (size_t)pushes, sizeof(*lat), cmp_double);
    qsort(wholelat, (size_t)pushes, sizeof(*wholelat), cmp_double);
    for (int b = 0; b < RAW_BUFS_COUNT; b++) {
        qsort(rawlat[b], (size_t)pushes, sizeof(double), cmp_double);
        if (rawlat[b][pushes / 2] < rawlat[best][pushes / 2])
            best = b;
    }
    printf("bench_small: one push of %d float32 tensors x %d elements (%zu KiB), %d pushes\n",
           NTENSORS, NELEM, (size_t)NTENSORS * NELEM * 4 / 1024, pushes);
    printf("  latency p50 %.2f ms, p99 %.2f ms; %.0f tensors applied/s (at p50)\n",
           lat[pushes / 2] * 1e3, lat[(pushes * 99) / 100] * 1e3, NTENSORS / lat[pushes / 2]);
    printf("  raw nanomsg round trip of the same %zu bytes (one message, server process, %s "
           "socket buffers), in the same loop: p50 %.2f ms, p99 %.2f ms\n",
           sizeof(((small_model *)0)->data), best == RAW_BUFS_EMAD ? "emad's" : "default",
           rawlat[best][pushes / 2] * 1e3, rawlat[best][(pushes * 99) / 100] * 1e3);
    printf("  raw p50 with each socket buffer size: default %.2f ms, emad's %.2f ms\n",
           rawlat[RAW_BUFS_DEFAULT][pushes / 2] * 1e3, rawlat[RAW_BUFS_EMAD][pushes / 2] * 1e3);
    printf("  emad p50 / raw p50: %.2f (target <= 1.5: %s)\n",
           lat[pushes / 2] / rawlat[best][pushes / 2],
           lat[pushes / 2] <= 1.5 * rawlat[best][pushes / 2] ? "met" : "NOT MET");
    printf("  without push layouts (EMAD_PUSH_LAYOUTS=off, every push sends its tensor maps): "
           "p50 %.2f ms, p99 %.2f ms; / raw p50: %.2f\n",
           wholelat[pushes / 2] * 1e3, wholelat[(pushes * 99) / 100] * 1e3,
           wholelat[pushes / 2] / rawlat[best][pushes / 2]);
    t0 = now();
    for (long i = 0; i < clients; i++)
        pthread_create(&th[i], NULL, client_main, (void *)(intptr_t)i);
    for (int i = 0; i < clients; i++)
        pthread_join(th[i], NULL);
    el = now() - t0;
    printf("  %d concurrent clients (own model each): %.0f pushes/s aggregate, %.0f tensors/s\n",
           clients, clients * pushes / el, (double)clients * pushes * NTENSORS / el);
    status = 0;
out:
    for (int b = 0; b < RAW_BUFS_COUNT; b++)
        raw_close(raw[b]);
    if (raw_server_stop(rs) < 0)
        status = 1;
    if (proc_stop(&daemon) < 0)
        status = 1;
    return status;
}

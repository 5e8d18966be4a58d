/*
 * bench_pushpull.c - throughput and memory of emad push and pull, against
 * raw nanomsg and redis-server carrying the same bytes.
 *
 * Default run: for each model size (256 MiB and 1 GiB of float32, 4 equal
 * tensors each) the benchmark uses its own emad daemon, and each repetition
 * moves the same model bytes over TCP loopback:
 *
 *   raw push    REQ sends the model in chunk-sized messages; REP acks each.
 *   emad push   emad_push() of the model at a new step: a transaction of
 *               chunks that the daemon stages and, on commit, averages into
 *               the shadows (shadow -= (1 - d) * (shadow - param)).
 *   redis SET   one SET per tensor (one key each) to a redis-server.
 *   raw pull    REQ asks for chunk-sized pieces; REP replies with each.
 *   emad pull   emad_pull_into() into preallocated buffers.
 *   redis GET   one GET per tensor, received into preallocated buffers.
 *
 * The raw REP server is a process of its own, as the daemon is a process
 * apart from the trainer (bench/raw.c). It is measured with nanomsg's
 * default socket buffers and with the daemon's and libemad's
 * (PROTO_SOCKET_BUFFER_BYTES), and the faster of the two is the baseline:
 * raw nanomsg at its best, with the chunk sizes libemad uses and the data
 * copied once on each side as libemad and the daemon do, so the ratio
 * emad/raw is the cost of emad's protocol, staging and averaging. One more
 * line shows raw with the REP server as a thread of the benchmark (default
 * buffers): a reference only, faster because switching between threads of
 * one process is cheaper than between processes, and not the deployment
 * emad serves. Every raw, emad and redis pull is checked against the model.
 * Results: medians over the timed repetitions (after two untimed warm-ups:
 * the first emad push creates the shadows, the second the spare copies a
 * transaction averages into; both write fresh memory, and are printed),
 * in GB/s (10^9 bytes per second), the ratios emad/raw and emad/redis, and
 * the daemon's memory: its peak resident set during the pushes (VmHWM,
 * reset before each push) and at rest, against the limits 2.1 x and
 * 1.1 x the shadow bytes + 64 MiB. --sweep adds raw nanomsg throughput for
 * message sizes from 1 to 64 MiB (the server process, with the faster
 * buffer setting).
 *
 * --scale instead pushes a 1e9-parameter float32 model (8 tensors of
 * 125,000,000 elements, 4 GB) three times and pulls it once, reporting
 * each transfer's throughput and the daemon's memory against the limits.
 *
 * The daemons run with --max-message-bytes 64 MiB, --http off and no
 * --state-dir (no snapshots, as redis runs without persistence). Every
 * server process (the daemons, redis-server, the raw server) is started
 * here on free 127.0.0.1 ports, before any nanomsg socket exists (nanomsg
 * is not fork-safe), and stopped and reaped at the end; their temporary
 * directories are removed, also after a failure or on SIGINT/SIGTERM, and
 * they die with the benchmark if it is killed (see proc.c).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "emad.h"
#include "proc.h"
#include "common/proto.h"
#include "raw.h"
#include "resp.h"

#define MIB (1024ULL * 1024ULL)
#define MAX_TENSORS 8
#define MAX_SIZES 4
#define MAX_REPS 100
#define MODEL_NAME "bench"
#define DAEMON_MAX_MESSAGE "67108864"
#define DEFAULT_TENSORS 4
#define REDIS_DEFAULT_PATH "/usr/bin/redis-server"

/*
 * The daemon gives its spares and free heap back after 5 s idle, or up to
 * 30 s while pushes come at a steady pace (--idle-release-max): memory at
 * rest is read every second for up to 60 s, until it is within its limit.
 */
#define REST_WAIT_MS 60000
#define LIMIT_SLACK (64 * MIB)

/* Scale mode: 1e9 float32 parameters in 8 tensors, pushed 3 times. */
#define SCALE_TENSORS 8
#define SCALE_NUMEL 125000000ULL
#define SCALE_PUSHES 3
#define SCALE_MIN_AVAILABLE 18000000000ULL

/* libemad keeps this much room for nanomsg's SP header below the daemon's limit. */
#define SP_HEADER_ROOM 64
/* Room for the metadata of a pull reply of DEFAULT_TENSORS tensors (a few hundred bytes). */
#define PULL_META_ROOM 4096
/* The largest raw nanomsg message (the daemon's limit). */
#define RAW_MAX_CHUNK (64 * MIB)

/* An emad daemon under test. */
typedef struct bench_daemon {
    proc proc;
    char url[64]; /* tcp://127.0.0.1:PORT */
} bench_daemon;

/* One measured operation: seconds per repetition. */
typedef struct bench_series {
    double sec[MAX_REPS];
    int n;
} bench_series;

/*
 * The raw nanomsg variants: 0 .. RAW_BUFS_COUNT - 1 are the server process
 * with that socket-buffer setting (enum raw_bufs), V_THREAD the server
 * thread in this process (default buffers), a reference only.
 */
enum { V_THREAD = RAW_BUFS_COUNT, V_COUNT };

/* The transfers of a repetition; S_RAW_PUSH + v and S_RAW_PULL + v for raw variant v. */
enum {
    S_RAW_PUSH,
    S_EMAD_PUSH = S_RAW_PUSH + V_COUNT,
    S_REDIS_SET,
    S_RAW_PULL,
    S_EMAD_PULL = S_RAW_PULL + V_COUNT,
    S_REDIS_GET,
    S_COUNT
};
static const char *const series_label[S_COUNT] = {
    [S_RAW_PUSH + RAW_BUFS_DEFAULT] = "raw push: process, default bufs",
    [S_RAW_PUSH + RAW_BUFS_EMAD] = "raw push: process, emad's bufs",
    [S_RAW_PUSH + V_THREAD] = "raw push: in-process thread",
    [S_EMAD_PUSH] = "emad push + apply",
    [S_REDIS_SET] = "redis SET",
    [S_RAW_PULL + RAW_BUFS_DEFAULT] = "raw pull: process, default bufs",
    [S_RAW_PULL + RAW_BUFS_EMAD] = "raw pull: process, emad's bufs",
    [S_RAW_PULL + V_THREAD] = "raw pull: in-process thread",
    [S_EMAD_PULL] = "emad pull_into",
    [S_REDIS_GET] = "redis GET",
};

/* The socket buffers of a raw server process variant, for messages. */
static const char *const bufs_label[RAW_BUFS_COUNT] = {
    [RAW_BUFS_DEFAULT] = "default",
    [RAW_BUFS_EMAD] = "emad's",
};

/* A model: float32 tensors over one source buffer, and a pull buffer of the same size. */
typedef struct bench_model {
    size_t ntensors;
    uint64_t tbytes; /* bytes per tensor */
    uint64_t total;  /* bytes of the model */
    char names[MAX_TENSORS][32];
    emad_tensor tensors[MAX_TENSORS]; /* pushed, over src */
    emad_tensor into[MAX_TENSORS];    /* pulled into, over dst */
    char *src, *dst;
} bench_model;

/* The daemon's memory over a run, in bytes. */
typedef struct bench_mem {
    uint64_t shadow;    /* shadow bytes the daemon reports */
    uint64_t push_peak; /* largest VmHWM over the pushes */
    uint64_t push_base; /* VmRSS at the start of that push */
    uint64_t rest;      /* VmRSS once within its limit, or after REST_WAIT_MS idle */
    double rest_s;      /* seconds idle when rest was read */
} bench_mem;

/* Results for one model size. */
typedef struct size_result {
    long mib;
    int done;
    bench_series s[S_COUNT];
    bench_mem mem;
} size_result;

/* Everything a default run uses. */
typedef struct bench {
    char emad_path[PATH_MAX];
    char redis_path[PATH_MAX];
    long mib[MAX_SIZES];
    int nsizes;
    long reps;
    int sweep;
    int use_redis;
    bench_daemon daemons[MAX_SIZES];
    proc redis;
    int redis_fd;
    raw_server *raw_proc;   /* the raw server process */
    raw_server *raw_thread; /* the in-process reference */
    raw_link *raw[V_COUNT]; /* by raw variant */
    size_result results[MAX_SIZES];
} bench;

/* Start an emad daemon on a free port. Returns 0, or -1 (message printed). */
static int
daemon_start(bench_daemon *d, const char *path)
{
    const char *argv[] = {path,     "--listen", d->url, "--max-message-bytes", DAEMON_MAX_MESSAGE,
                          "--http", "off",      NULL};
    int port;

    if (proc_prepare(&d->proc, "emad") < 0)
        return -1;
    if ((port = proc_free_port()) < 0) {
        perror("bench: no free port");
        return -1;
    }
    (void)snprintf(d->url, sizeof(d->url), "tcp://127.0.0.1:%d", port);
    return proc_spawn(&d->proc, argv);
}

/*
 * Connect a client to the daemon, retrying until it answers (10 s at most).
 * Returns 0 with *out set, or -1 (message and daemon log printed).
 */
static int
daemon_connect(bench_daemon *d, emad_client **out)
{
    emad_options opts;
    double deadline = proc_now() + 10.0;
    int rc = 0;

    emad_options_init(&opts);
    opts.connect_timeout_ms = 200;
    while (proc_now() < deadline) {
        if (!proc_running(&d->proc))
            return -1;
        if ((rc = emad_connect(out, d->url, &opts)) == 0)
            return 0;
        proc_sleep_ms(50);
    }
    fprintf(stderr, "bench: emad at %s did not answer within 10 s: %s\n", d->url,
            emad_strerror(rc));
    proc_dump_file(d->proc.log);
    return -1;
}

/*
 * Start redis-server on a free port with no persistence and connect to it.
 * Returns the connection, or -1 (message printed).
 */
static int
redis_start(proc *p, const char *path)
{
    char port_s[16];
    const char *argv[] = {path,        "--port",
                          port_s,      "--bind",
                          "127.0.0.1", "--save",
                          "",          "--appendonly",
                          "no",        "--daemonize",
                          "no",        "--dir",
                          p->dir,      "--logfile",
                          "",          "--proto-max-bulk-len",
                          "2gb",       "--client-query-buffer-limit",
                          "4gb",       "--loglevel",
                          "warning",   NULL};
    double deadline = proc_now() + 10.0;
    int port, fd;

    if ((port = proc_free_port()) < 0) {
        perror("bench: no free port");
        return -1;
    }
    (void)snprintf(port_s, sizeof(port_s), "%d", port);
    if (proc_spawn(p, argv) < 0)
        return -1;
    while (proc_now() < deadline) {
        if (!proc_running(p))
            return -1;
        if ((fd = resp_connect(port)) >= 0)
            return fd;
        proc_sleep_ms(50);
    }
    fprintf(stderr, "bench: redis-server on port %d did not answer within 10 s\n", port);
    proc_dump_file(p->log);
    return -1;
}

/*
 * Allocate and fill a model of ntensors float32 tensors of numel elements.
 * The pull buffer is zeroed (so its pages exist before the first pull).
 * Returns 0, or -1 (message printed; model_free() cleans up).
 */
static int
model_init(bench_model *m, size_t ntensors, uint64_t numel)
{
    uint64_t k, done, n;
    size_t i;

    memset(m, 0, sizeof(*m));
    m->ntensors = ntensors;
    m->tbytes = numel * sizeof(float);
    m->total = m->tbytes * ntensors;
    if ((m->src = malloc(m->total)) == NULL || (m->dst = malloc(m->total)) == NULL) {
        fprintf(stderr, "bench: out of memory for two buffers of %.1f MiB\n",
                (double)m->total / (double)MIB);
        return -1;
    }
    /* A pattern of finite values in the first MiB, then copies of it. */
    for (k = 0; k < MIB / sizeof(float) && k < m->total / sizeof(float); k++) {
        float v = (float)(k % 2000) * 0.001f - 1.0f;
        memcpy(m->src + k * sizeof(float), &v, sizeof(v));
    }
    for (done = k * sizeof(float); done < m->total; done += n) {
        n = m->total - done < done ? m->total - done : done;
        memcpy(m->src + done, m->src, n);
    }
    memset(m->dst, 0, m->total);
    for (i = 0; i < ntensors; i++) {
        emad_tensor *t = &m->tensors[i];

        (void)snprintf(m->names[i], sizeof(m->names[i]), "layer%zu.weight", i);
        t->name = m->names[i];
        t->kind = EMAD_PARAM;
        t->dtype = EMAD_F32;
        if (numel % 1000 == 0) {
            t->ndim = 2;
            t->shape[0] = numel / 1000;
            t->shape[1] = 1000;
        } else {
            t->ndim = 1;
            t->shape[0] = numel;
        }
        t->data = m->src + i * m->tbytes;
        t->nbytes = m->tbytes;
    }
    return 0;
}

/* Free a model's buffers. */
static void
model_free(bench_model *m)
{
    free(m->src);
    free(m->dst);
    m->src = m->dst = NULL;
}

/* Zero the pull buffer, so that a pull is checked on data it wrote. */
static void
model_clear_dst(bench_model *m)
{
    memset(m->dst, 0, m->total);
}

/* Was the whole model received into dst? Prints a message if not. */
static int
model_check_dst(const bench_model *m, const char *what)
{
    if (memcmp(m->dst, m->src, m->total) != 0) {
        fprintf(stderr, "bench: %s: the data differs from the pushed model\n", what);
        return -1;
    }
    return 0;
}

/*
 * Push the model at step and check that every tensor was applied; *sec is
 * the time of the call. The daemon's peak RSS during it (VmHWM, reset
 * first) goes into mem->push_peak, with the RSS at its start, if higher.
 * Returns 0, or -1 (message printed).
 */
static int
emad_push_timed(emad_client *c, const proc *d, const bench_model *m, uint64_t step, double *sec,
                bench_mem *mem, uint32_t *messages)
{
    emad_push_result res;
    proc_mem base, after;
    double t0;
    int rc;

    if (proc_reset_peak(d) < 0 || proc_read_mem(d, &base) < 0) {
        fprintf(stderr, "bench: cannot reset the peak RSS of pid %d: %s\n", (int)d->pid,
                strerror(errno));
        return -1;
    }
    t0 = proc_now();
    if ((rc = emad_push(c, MODEL_NAME, step, m->tensors, m->ntensors, &res)) < 0) {
        fprintf(stderr, "bench: emad push at step %llu: %s (%s)\n", (unsigned long long)step,
                emad_strerror(rc), emad_last_error(c));
        return -1;
    }
    *sec = proc_now() - t0;
    if (res.applied != m->ntensors || res.stale != 0 || res.step != step) {
        fprintf(stderr, "bench: push at step %llu: applied %llu stale %llu step %llu\n",
                (unsigned long long)step, (unsigned long long)res.applied,
                (unsigned long long)res.stale, (unsigned long long)res.step);
        return -1;
    }
    if (proc_read_mem(d, &after) < 0) {
        fprintf(stderr, "bench: cannot read /proc/%d/status\n", (int)d->pid);
        return -1;
    }
    if (after.hwm > mem->push_peak) {
        mem->push_peak = after.hwm;
        mem->push_base = base.rss;
    }
    *messages = res.messages;
    return 0;
}

/*
 * Pull the model into dst (zeroed first) and check it equals the pushed
 * one at step (every push carries the same values, so the average equals
 * them exactly). *sec is the time of the call. Returns 0, or -1.
 */
static int
emad_pull_timed(emad_client *c, bench_model *m, uint64_t step, double *sec)
{
    uint64_t pulled_step = 0;
    double t0;
    size_t i;
    int rc;

    model_clear_dst(m);
    for (i = 0; i < m->ntensors; i++) {
        memset(&m->into[i], 0, sizeof(m->into[i]));
        m->into[i].name = m->names[i];
        m->into[i].data = m->dst + i * m->tbytes;
        m->into[i].nbytes = m->tbytes;
    }
    t0 = proc_now();
    if ((rc = emad_pull_into(c, MODEL_NAME, m->into, m->ntensors, &pulled_step)) < 0) {
        fprintf(stderr, "bench: emad pull: %s (%s)\n", emad_strerror(rc), emad_last_error(c));
        return -1;
    }
    *sec = proc_now() - t0;
    for (i = 0; i < m->ntensors; i++) {
        if (m->into[i].nbytes != m->tbytes || m->into[i].dtype != EMAD_F32) {
            fprintf(stderr, "bench: pulled %s: %llu bytes of dtype %d\n", m->names[i],
                    (unsigned long long)m->into[i].nbytes, m->into[i].dtype);
            return -1;
        }
    }
    if (pulled_step != step) {
        fprintf(stderr, "bench: pulled step %llu, expected %llu\n", (unsigned long long)pulled_step,
                (unsigned long long)step);
        return -1;
    }
    return model_check_dst(m, "emad pull");
}

/* The model's shadow bytes as the daemon lists them (0 if it does not). */
static uint64_t
daemon_shadow_bytes(emad_client *c)
{
    emad_model_info *models = NULL;
    uint64_t bytes = 0;
    size_t n = 0, i;

    if (emad_list(c, &models, &n) < 0)
        return 0;
    for (i = 0; i < n; i++)
        if (strcmp(models[i].name, MODEL_NAME) == 0)
            bytes = models[i].shadow_bytes;
    free(models);
    return bytes;
}

/*
 * The daemon's VmRSS at rest into mem->rest (0 if unreadable), read every
 * second without requests until it is within 1.1 x mem->shadow + 64 MiB or
 * REST_WAIT_MS have passed; the seconds waited into mem->rest_s.
 */
static void
daemon_rest_rss(const proc *d, bench_mem *mem)
{
    double t0 = proc_now(), limit = 1.1 * (double)mem->shadow + (double)LIMIT_SLACK;
    proc_mem now;

    do {
        proc_sleep_ms(1000);
        mem->rest = proc_read_mem(d, &now) == 0 ? now.rss : 0;
    } while ((double)mem->rest > limit && proc_now() - t0 < REST_WAIT_MS / 1000.0);
    mem->rest_s = proc_now() - t0;
}

/* "PASS" if value <= factor x shadow + LIMIT_SLACK, else "FAIL". */
static const char *
limit_word(uint64_t value, double factor, uint64_t shadow)
{
    return (double)value <= factor * (double)shadow + (double)LIMIT_SLACK ? "PASS" : "FAIL";
}

/* One memory figure against its limit factor x shadow + 64 MiB. */
static void
print_mem_row(const char *label, uint64_t value, double factor, uint64_t shadow)
{
    double limit = factor * (double)shadow + (double)LIMIT_SLACK;

    printf("    %-28s %9.1f MiB = %.2f x shadow   limit %.1f x + 64 MiB = %9.1f MiB  %s\n", label,
           (double)value / (double)MIB, shadow ? (double)value / (double)shadow : 0.0, factor,
           limit / (double)MIB, limit_word(value, factor, shadow));
}

/* The daemon's memory block. */
static void
print_mem(const bench_mem *mem, int pid)
{
    printf("\n  daemon memory (pid %d, /proc/PID/status; shadow %.1f MiB as emad_list reports)\n",
           pid, (double)mem->shadow / (double)MIB);
    print_mem_row("peak RSS during a push", mem->push_peak, 2.1, mem->shadow);
    printf("    %-28s %9.1f MiB\n", "  (RSS at the start of it)",
           (double)mem->push_base / (double)MIB);
    printf("    RSS at rest (read every second, %.0f s idle):\n", mem->rest_s);
    print_mem_row("", mem->rest, 1.1, mem->shadow);
}

/* SET every tensor of the model, one key per tensor. Returns 0 or -1. */
static int
redis_set_model(int fd, const bench_model *m)
{
    size_t i;

    for (i = 0; i < m->ntensors; i++)
        if (resp_set(fd, m->names[i], m->src + i * m->tbytes, m->tbytes) < 0)
            return -1;
    return 0;
}

/* GET every tensor of the model into dst. Returns 0 or -1. */
static int
redis_get_model(int fd, bench_model *m)
{
    size_t i;

    for (i = 0; i < m->ntensors; i++)
        if (resp_get_into(fd, m->names[i], m->dst + i * m->tbytes, m->tbytes) < 0)
            return -1;
    return 0;
}

/* Compare doubles for qsort. */
static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* Median of the series' times, in seconds. */
static double
series_median(const bench_series *s)
{
    double v[MAX_REPS];

    memcpy(v, s->sec, sizeof(double) * (size_t)s->n);
    qsort(v, (size_t)s->n, sizeof(double), cmp_double);
    return s->n % 2 ? v[s->n / 2] : (v[s->n / 2 - 1] + v[s->n / 2]) / 2;
}

/* Median throughput of a series in GB/s for bytes per repetition (0 if empty). */
static double
series_gbps(const bench_series *s, uint64_t bytes)
{
    return s->n > 0 ? (double)bytes / series_median(s) / 1e9 : 0.0;
}

/* One table row: median, worst and best throughput for bytes per repetition. */
static void
print_row(const char *label, const bench_series *s, uint64_t bytes)
{
    double med = series_median(s), lo = s->sec[0], hi = s->sec[0];
    int i;

    for (i = 1; i < s->n; i++) {
        lo = s->sec[i] < lo ? s->sec[i] : lo;
        hi = s->sec[i] > hi ? s->sec[i] : hi;
    }
    printf("  %-31s %9.2f %9.2f %9.2f %10.1f\n", label, (double)bytes / med / 1e9,
           (double)bytes / hi / 1e9, (double)bytes / lo / 1e9, med * 1e3);
}

/* One ratio line: emad's throughput over another's, against a target. */
static void
print_ratio(const char *label, const bench_series *emad, const bench_series *other, double target)
{
    double r = series_median(other) / series_median(emad);

    printf("  %-24s %5.2f   (target >= %.1f: %s)\n", label, r, target,
           r >= target ? "met" : "NOT MET");
}

/*
 * The faster buffer setting of the raw server process: the one with the
 * smaller sum of median times over the series base[0] + v .. base[nbase - 1] + v.
 */
static int
raw_best(const bench_series *s, const int *base, int nbase)
{
    double t, best_t = 0;
    int v, i, best = 0;

    for (v = 0; v < RAW_BUFS_COUNT; v++) {
        for (t = 0, i = 0; i < nbase; i++)
            t += series_median(&s[base[i] + v]);
        if (v == 0 || t < best_t) {
            best = v;
            best_t = t;
        }
    }
    return best;
}

/*
 * Raw nanomsg push and pull throughput over raw (the server process with
 * buffer setting bufs) for chunk sizes from 1 MiB to RAW_MAX_CHUNK: how the
 * message size alone changes the transport's speed.
 */
static int
raw_sweep(raw_link *raw, int bufs, const bench_model *m, long reps)
{
    bench_series push, pull;
    uint64_t chunk;
    double t0;
    long r;

    printf("\n  raw nanomsg by message size (server process, %s socket buffers; median GB/s of %ld "
           "reps)\n",
           bufs_label[bufs], reps);
    printf("  %10s %9s %9s\n", "chunk MiB", "push", "pull");
    for (chunk = MIB; chunk <= RAW_MAX_CHUNK && chunk <= m->total; chunk *= 2) {
        push.n = pull.n = 0;
        for (r = 0; r <= reps; r++) {
            t0 = proc_now();
            if (raw_push(raw, m->src, m->total, chunk) < 0)
                return -1;
            if (r > 0)
                push.sec[push.n++] = proc_now() - t0;
            t0 = proc_now();
            if (raw_pull(raw, m->dst, m->total, chunk) < 0)
                return -1;
            if (r > 0)
                pull.sec[pull.n++] = proc_now() - t0;
        }
        printf("  %10llu %9.2f %9.2f\n", (unsigned long long)(chunk / MIB),
               series_gbps(&push, m->total), series_gbps(&pull, m->total));
    }
    return 0;
}

/*
 * Untimed repetitions before the timed ones, for every transfer alike: the
 * first emad push creates the shadows, the second the spare copies (fresh
 * memory, page faults); from the third on a push writes into the spare of
 * the one before, as it does for the rest of a training run.
 */
#define WARMUPS 2

/* Time call (0 or -1) into series s, kept after the warm-ups; goto fail on -1. */
#define TIMED(s, r, call)                                                                          \
    do {                                                                                           \
        double t0_ = proc_now();                                                                   \
        if ((call) < 0)                                                                            \
            goto fail;                                                                             \
        if ((r) >= WARMUPS)                                                                        \
            (s)->sec[(s)->n++] = proc_now() - t0_;                                                 \
    } while (0)

/*
 * Measure one model size with its own daemon: WARMUPS + reps repetitions of the
 * six transfers, then the daemon's memory at rest. Stops the daemon.
 * Returns 0, or -1 (message printed).
 */
static int
run_size(bench *b, int idx)
{
    bench_daemon *d = &b->daemons[idx];
    size_result *res = &b->results[idx];
    bench_series *s = res->s;
    long mib = b->mib[idx], reps = b->reps, r;
    emad_client *c = NULL;
    emad_options opts;
    bench_model m;
    uint64_t push_chunk, pull_chunk, step;
    uint32_t messages = 0;
    double sec, warm_push[WARMUPS] = {0};
    int rc, v, best_push, best_pull, best_sweep;

    res->mib = mib;
    if (model_init(&m, DEFAULT_TENSORS, (uint64_t)mib * MIB / DEFAULT_TENSORS / sizeof(float)) <
            0 ||
        daemon_connect(d, &c) < 0)
        goto fail;

    /* The message sizes libemad uses: a push in one message of at most chunk_bytes, or a
     * transaction of chunks of at most EMAD_TXN_CHUNK_BYTES; other requests of at most chunk_bytes,
     * replies of at most max_reply_bytes, both capped by the daemon's limit
     * less the room libemad keeps for nanomsg's SP header. libemad pulls
     * a model of up to 16 MiB in one reply (PULL_INLINE_BYTES) and reads
     * a larger one's session 4 MiB at a time (READ_BATCH_BYTES). */
    emad_options_init(&opts);
    push_chunk = opts.chunk_bytes;
    if (emad_server_max_message_bytes(c) - SP_HEADER_ROOM < push_chunk)
        push_chunk = emad_server_max_message_bytes(c) - SP_HEADER_ROOM;
    pull_chunk = opts.max_reply_bytes;
    if (emad_server_max_message_bytes(c) < pull_chunk)
        pull_chunk = emad_server_max_message_bytes(c);
    pull_chunk -= SP_HEADER_ROOM;
    if (pull_chunk > 4 * MIB)
        pull_chunk = m.total + PULL_META_ROOM <= 16 * MIB ? m.total : 4 * MIB;
    push_chunk = raw_push_message(m.total, push_chunk);
    if (push_chunk > RAW_MAX_CHUNK)
        push_chunk = RAW_MAX_CHUNK;
    /* The endpoints of the server process share its copy of the model. */
    if (raw_serve(b->raw[RAW_BUFS_DEFAULT], m.src, m.total, push_chunk) < 0 ||
        raw_serve(b->raw[V_THREAD], m.src, m.total, push_chunk) < 0)
        goto fail;

    if ((rc = emad_create(c, MODEL_NAME, EMAD_DEFAULT_DECAY, 1)) < 0) {
        fprintf(stderr, "bench: create: %s (%s)\n", emad_strerror(rc), emad_last_error(c));
        goto fail;
    }
    printf("\n== %ld MiB float32 model (%zu tensors of %.1f MiB), %ld reps + %d warm-ups ==\n", mib,
           m.ntensors, (double)m.tbytes / (double)MIB, reps, WARMUPS);
    printf("daemon: %s --max-message-bytes %s on %s (pid %d)\n", b->emad_path, DAEMON_MAX_MESSAGE,
           d->url, (int)d->proc.pid);
    printf("chunks: push %.1f MiB, pull %.1f MiB (libemad's, capped by the daemon's limit), for "
           "raw nanomsg too\n",
           (double)push_chunk / (double)MIB, (double)pull_chunk / (double)MIB);
    fflush(stdout);

    for (r = 0, step = 1; r < reps + WARMUPS; r++, step++) {
        for (v = 0; v < V_COUNT; v++)
            TIMED(&s[S_RAW_PUSH + v], r, raw_push(b->raw[v], m.src, m.total, push_chunk));
        if (emad_push_timed(c, &d->proc, &m, step, &sec, &res->mem, &messages) < 0)
            goto fail;
        if (r >= WARMUPS)
            s[S_EMAD_PUSH].sec[s[S_EMAD_PUSH].n++] = sec;
        else
            warm_push[r] = sec;
        if (b->redis_fd >= 0)
            TIMED(&s[S_REDIS_SET], r, redis_set_model(b->redis_fd, &m));

        for (v = 0; v < V_COUNT; v++) {
            model_clear_dst(&m);
            TIMED(&s[S_RAW_PULL + v], r, raw_pull(b->raw[v], m.dst, m.total, pull_chunk));
            if (model_check_dst(&m, series_label[S_RAW_PULL + v]) < 0)
                goto fail;
        }
        if (emad_pull_timed(c, &m, step, &sec) < 0)
            goto fail;
        if (r >= WARMUPS)
            s[S_EMAD_PULL].sec[s[S_EMAD_PULL].n++] = sec;
        if (b->redis_fd >= 0) {
            model_clear_dst(&m);
            TIMED(&s[S_REDIS_GET], r, redis_get_model(b->redis_fd, &m));
            if (model_check_dst(&m, "redis GET") < 0)
                goto fail;
        }
    }

    printf("\n  %-31s %9s %9s %9s %10s\n", "(GB/s = 1e9 bytes/s)", "median", "worst", "best",
           "median ms");
    for (r = 0; r < S_COUNT; r++)
        if (s[r].n > 0 && r != S_RAW_PUSH + V_THREAD && r != S_RAW_PULL + V_THREAD)
            print_row(series_label[r], &s[r], m.total);
    printf("  (raw: a REP server process; bufs: nanomsg's default, or emad's %d KiB NN_SNDBUF/"
           "NN_RCVBUF)\n",
           PROTO_SOCKET_BUFFER_BYTES / 1024);
    printf("  reference only (not emad's deployment, not in the ratios): raw REP thread in this "
           "process, default bufs: push %.2f, pull %.2f GB/s\n",
           series_gbps(&s[S_RAW_PUSH + V_THREAD], m.total),
           series_gbps(&s[S_RAW_PULL + V_THREAD], m.total));
    best_push = raw_best(s, (const int[]){S_RAW_PUSH}, 1);
    best_pull = raw_best(s, (const int[]){S_RAW_PULL}, 1);
    printf("\n  raw at its best (server process): push with %s bufs %.2f GB/s, pull with %s bufs "
           "%.2f GB/s\n",
           bufs_label[best_push], series_gbps(&s[S_RAW_PUSH + best_push], m.total),
           bufs_label[best_pull], series_gbps(&s[S_RAW_PULL + best_pull], m.total));
    print_ratio("emad push / raw push:", &s[S_EMAD_PUSH], &s[S_RAW_PUSH + best_push], 0.9);
    print_ratio("emad pull / raw pull:", &s[S_EMAD_PULL], &s[S_RAW_PULL + best_pull], 0.9);
    if (b->redis_fd >= 0) {
        print_ratio("emad push / redis SET:", &s[S_EMAD_PUSH], &s[S_REDIS_SET], 1.0);
        print_ratio("emad pull / redis GET:", &s[S_EMAD_PULL], &s[S_REDIS_GET], 1.0);
    }
    printf(
        "  (each emad push: %u messages; every pull, raw ones too, verified equal to the model)\n",
        messages);
    printf("  (the warm-ups' emad pushes, which write fresh memory: %.2f GB/s creating the "
           "shadows, %.2f GB/s creating the spare copies)\n",
           (double)m.total / warm_push[0] / 1e9, (double)m.total / warm_push[1] / 1e9);

    res->mem.shadow = daemon_shadow_bytes(c);
    daemon_rest_rss(&d->proc, &res->mem);
    print_mem(&res->mem, (int)d->proc.pid);
    best_sweep = raw_best(s, (const int[]){S_RAW_PUSH, S_RAW_PULL}, 2);
    if (b->sweep && idx == 0 && raw_sweep(b->raw[best_sweep], best_sweep, &m, reps) < 0)
        goto fail;
    emad_close(c);
    c = NULL;
    if (proc_stop(&d->proc) < 0)
        goto fail;
    printf("  daemon stopped cleanly (SIGTERM)\n");
    res->done = 1;
    model_free(&m);
    return 0;
fail:
    fprintf(stderr, "bench: the %ld MiB model failed\n", mib);
    emad_close(c);
    model_free(&m);
    return -1;
}

/* The summary of every size: throughput, ratios and memory side by side. */
static void
print_summary(const bench *b)
{
    static const struct {
        const char *title;
        int raw, emad, redis;
    } dir[2] = {{"push", S_RAW_PUSH, S_EMAD_PUSH, S_REDIS_SET},
                {"pull", S_RAW_PULL, S_EMAD_PULL, S_REDIS_GET}};
    int i, k, best;

    printf("\n== summary (median GB/s; raw: the raw server process with its faster socket "
           "buffers; ratios: emad's throughput over the other's; targets emad/raw >= 0.9, "
           "emad/redis >= 1.0) ==\n");
    for (k = 0; k < 2; k++) {
        printf("  %-4s %8s %9s %9s %9s %9s %11s  %s\n", dir[k].title, "model", "raw", "emad",
               k == 0 ? "redis SET" : "redis GET", "emad/raw", "emad/redis", "raw bufs");
        for (i = 0; i < b->nsizes; i++) {
            const size_result *res = &b->results[i];
            uint64_t bytes = (uint64_t)res->mib * MIB;
            double raw, emad, redis;

            if (!res->done)
                continue;
            best = raw_best(res->s, &dir[k].raw, 1);
            raw = series_gbps(&res->s[dir[k].raw + best], bytes);
            emad = series_gbps(&res->s[dir[k].emad], bytes);
            redis = series_gbps(&res->s[dir[k].redis], bytes);
            printf("  %-4s %4ld MiB %9.2f %9.2f ", "", res->mib, raw, emad);
            if (redis > 0)
                printf("%9.2f %9.2f %11.2f", redis, emad / raw, emad / redis);
            else
                printf("%9s %9.2f %11s", "-", emad / raw, "-");
            printf("  %s\n", bufs_label[best]);
        }
    }
    printf("  %-4s %8s %11s %13s %6s %13s %6s\n", "mem", "model", "shadow MiB", "push peak MiB",
           "<=2.1x", "at rest MiB", "<=1.1x");
    for (i = 0; i < b->nsizes; i++) {
        const bench_mem *mem = &b->results[i].mem;

        if (b->results[i].done)
            printf("  %-4s %4ld MiB %11.1f %13.1f %6s %13.1f %6s\n", "", b->results[i].mib,
                   (double)mem->shadow / (double)MIB, (double)mem->push_peak / (double)MIB,
                   limit_word(mem->push_peak, 2.1, mem->shadow), (double)mem->rest / (double)MIB,
                   limit_word(mem->rest, 1.1, mem->shadow));
    }
}

/* MemAvailable from /proc/meminfo in bytes, or 0. */
static uint64_t
mem_available(void)
{
    char line[256];
    unsigned long long kb = 0;
    FILE *f = fopen("/proc/meminfo", "r");

    if (f == NULL)
        return 0;
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
            break;
    fclose(f);
    return (uint64_t)kb * 1024;
}

/*
 * Scale mode: a 1e9-parameter float32 model pushed SCALE_PUSHES times and
 * pulled once, with the daemon's memory against the limits. Skipped (exit
 * 0) when MemAvailable is under SCALE_MIN_AVAILABLE. Returns the exit status.
 */
static int
run_scale(const char *emad_path)
{
    bench_daemon d;
    bench_model m;
    bench_mem mem = {0};
    proc_mem pull_mem;
    emad_client *c = NULL;
    uint64_t avail = mem_available(), step;
    uint32_t messages = 0;
    double sec;
    int rc, status = 1;

    printf("emad bench_pushpull --scale: 1e9-parameter float32 model (%d tensors of %llu "
           "elements, %.2f GB), %d pushes and a pull\n",
           SCALE_TENSORS, (unsigned long long)SCALE_NUMEL,
           (double)SCALE_TENSORS * SCALE_NUMEL * 4 / 1e9, SCALE_PUSHES);
    if (avail < SCALE_MIN_AVAILABLE) {
        printf("  SKIPPED: MemAvailable is %.1f GB; the scale run needs %.0f GB (4 GB model, 4 GB "
               "pull buffer, up to 8.5 GB in the daemon)\n",
               (double)avail / 1e9, (double)SCALE_MIN_AVAILABLE / 1e9);
        return 0;
    }
    memset(&m, 0, sizeof(m));
    memset(&d, 0, sizeof(d));
    if (daemon_start(&d, emad_path) < 0)
        goto out;
    printf("MemAvailable %.1f GB (needs %.0f GB); daemon: %s on %s (pid %d)\n", (double)avail / 1e9,
           (double)SCALE_MIN_AVAILABLE / 1e9, emad_path, d.url, (int)d.proc.pid);
    fflush(stdout);
    if (model_init(&m, SCALE_TENSORS, SCALE_NUMEL) < 0 || daemon_connect(&d, &c) < 0)
        goto out;
    if ((rc = emad_create(c, MODEL_NAME, EMAD_DEFAULT_DECAY, 1)) < 0) {
        fprintf(stderr, "bench: create: %s (%s)\n", emad_strerror(rc), emad_last_error(c));
        goto out;
    }
    printf("\n  %-22s %8s %8s %22s\n", "(GB/s = 1e9 bytes/s)", "s", "GB/s", "daemon peak RSS MiB");
    for (step = 1; step <= SCALE_PUSHES; step++) {
        bench_mem one = {0};

        if (emad_push_timed(c, &d.proc, &m, step, &sec, &one, &messages) < 0)
            goto out;
        if (one.push_peak > mem.push_peak) {
            mem.push_peak = one.push_peak;
            mem.push_base = one.push_base;
        }
        printf("  emad push step %-7llu %8.2f %8.2f %22.1f\n", (unsigned long long)step, sec,
               (double)m.total / sec / 1e9, (double)one.push_peak / (double)MIB);
        fflush(stdout);
    }
    mem.shadow = daemon_shadow_bytes(c);
    daemon_rest_rss(&d.proc, &mem);
    if (proc_reset_peak(&d.proc) < 0 || emad_pull_timed(c, &m, SCALE_PUSHES, &sec) < 0 ||
        proc_read_mem(&d.proc, &pull_mem) < 0)
        goto out;
    printf("  emad pull_into         %8.2f %8.2f %22.1f\n", sec, (double)m.total / sec / 1e9,
           (double)pull_mem.hwm / (double)MIB);
    printf("  (each push: %u messages; the pulled model verified equal to the pushed one)\n",
           messages);
    print_mem(&mem, (int)d.proc.pid);
    status = 0;
out:
    emad_close(c);
    if (proc_stop(&d.proc) < 0)
        status = 1;
    else if (status == 0)
        printf("  daemon stopped cleanly (SIGTERM)\n");
    model_free(&m);
    return status;
}

/* Print the command-line help to f. */
static void
usage(FILE *f)
{
    fprintf(f,
            "usage: bench_pushpull [--emad PATH] [--mib N]... [--reps N] [--sweep]\n"
            "                      [--redis PATH | --no-redis]\n"
            "       bench_pushpull [--emad PATH] --scale\n"
            "\n"
            "Starts emad (PATH, default ./emad) on free 127.0.0.1 ports, one daemon per\n"
            "model size, and measures push and pull of float32 models of N MiB (default\n"
            "256 and 1024, as 4 tensors) against raw nanomsg REQ/REP and redis-server\n"
            "(default %s, started here without persistence) carrying the same bytes.\n"
            "The raw REP server is a separate process, like the daemon, measured with\n"
            "nanomsg's default socket buffers and with emad's (%d KiB); the faster is\n"
            "the baseline of the ratios. A raw REP thread in this process is shown as a\n"
            "reference only. Prints medians of --reps repetitions (default 11) after two\n"
            "warm-ups, the ratios, and the daemon's memory against its limits. --sweep\n"
            "adds raw nanomsg throughput (server process, faster buffers) for message\n"
            "sizes from 1 to 64 MiB.\n"
            "--scale: push a 1e9-parameter float32 model (4 GB) 3 times and pull it once\n"
            "(needs 18 GB of MemAvailable; skipped otherwise).\n",
            REDIS_DEFAULT_PATH, PROTO_SOCKET_BUFFER_BYTES / 1024);
}

/* Parse a positive integer option no larger than max; -1 if invalid. */
static long
parse_count(const char *s, long max)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 1 || v > max)
        return -1;
    return v;
}

/* Parse the command line into b. Returns -1 to go on, else an exit status. */
static int
parse_args(bench *b, int argc, char **argv, int *scale)
{
    static const struct option longopts[] = {
        {"emad", required_argument, NULL, 'e'},
        {"mib", required_argument, NULL, 'm'},
        {"reps", required_argument, NULL, 'r'},
        {"sweep", no_argument, NULL, 's'},
        {"redis", required_argument, NULL, 'R'},
        {"no-redis", no_argument, NULL, 'n'},
        {"scale", no_argument, NULL, 'S'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int opt;

    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'e':
            (void)snprintf(b->emad_path, sizeof(b->emad_path), "%s", optarg);
            break;
        case 'm':
            if (b->nsizes == MAX_SIZES || (b->mib[b->nsizes++] = parse_count(optarg, 4096)) < 0) {
                fprintf(stderr, "bench: --mib: expected 1..4096, at most %d times\n", MAX_SIZES);
                return 2;
            }
            break;
        case 'r':
            if ((b->reps = parse_count(optarg, MAX_REPS - 1)) < 0) {
                fprintf(stderr, "bench: --reps: expected 1..%d\n", MAX_REPS - 1);
                return 2;
            }
            break;
        case 's':
            b->sweep = 1;
            break;
        case 'R':
            (void)snprintf(b->redis_path, sizeof(b->redis_path), "%s", optarg);
            break;
        case 'n':
            b->use_redis = 0;
            break;
        case 'S':
            *scale = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc || access(b->emad_path, X_OK) != 0) {
        if (optind == argc)
            fprintf(stderr, "bench: %s is not an executable emad (use --emad PATH)\n",
                    b->emad_path);
        usage(stderr);
        return 2;
    }
    if (b->nsizes == 0) {
        b->mib[b->nsizes++] = 256;
        b->mib[b->nsizes++] = 1024;
    }
    return -1;
}

int
main(int argc, char **argv)
{
    bench *b;
    int scale = 0, status = 1, i, rc;

    if (argc > 1 && strcmp(argv[1], RAW_SERVER_ARG) == 0)
        return raw_server_main(argc, argv); /* started by raw_spawn() */
    if ((b = calloc(1, sizeof(*b))) == NULL)
        return 1;
    (void)snprintf(b->emad_path, sizeof(b->emad_path), "./emad");
    (void)snprintf(b->redis_path, sizeof(b->redis_path), "%s", REDIS_DEFAULT_PATH);
    b->use_redis = 1;
    b->redis_fd = -1;
    b->reps = 11;
    if ((rc = parse_args(b, argc, argv, &scale)) >= 0) {
        free(b);
        return rc;
    }
    if (proc_init() < 0) {
        free(b);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    if (scale) {
        status = run_scale(b->emad_path);
        free(b);
        return status;
    }

    printf("emad bench_pushpull: float32 models of");
    for (i = 0; i < b->nsizes; i++)
        printf(" %ld MiB", b->mib[i]);
    printf(", over TCP loopback, against raw nanomsg and redis-server\n");

    /* Every server first: nanomsg sockets must not exist across fork(). */
    for (i = 0; i < b->nsizes; i++) {
        b->daemons[i].proc.pid = -1;
        if (daemon_start(&b->daemons[i], b->emad_path) < 0)
            goto out;
    }
    if (!b->use_redis)
        printf("redis: skipped (--no-redis)\n");
    else if (access(b->redis_path, X_OK) != 0) {
        printf("redis: %s not found (Debian package redis-server; scripts/deps installs it): "
               "the redis rows are skipped\n",
               b->redis_path);
        b->use_redis = 0;
    }
    if (b->use_redis) {
        if (proc_prepare(&b->redis, "redis") < 0 ||
            (b->redis_fd = redis_start(&b->redis, b->redis_path)) < 0)
            goto out;
        printf("redis: %s (pid %d), no persistence, on 127.0.0.1; SET/GET one key per tensor\n",
               b->redis_path, (int)b->redis.pid);
    }
    if (raw_spawn(&b->raw_proc, RAW_MAX_CHUNK) < 0)
        goto out;
    /* From here on nanomsg sockets exist: no more forks. */
    if (raw_start_thread(&b->raw_thread, RAW_MAX_CHUNK) < 0)
        goto out;
    for (i = 0; i < RAW_BUFS_COUNT; i++)
        if (raw_connect(&b->raw[i], b->raw_proc, i) < 0)
            goto out;
    if (raw_connect(&b->raw[V_THREAD], b->raw_thread, RAW_BUFS_DEFAULT) < 0)
        goto out;
    printf("raw nanomsg: REQ/REP, the same message sizes as libemad, to a server process (pid %d) "
           "on %s (default socket buffers) and %s (emad's, %d KiB); reference: a server thread "
           "in this process on %s\n",
           raw_server_pid(b->raw_proc), raw_server_url(b->raw_proc, RAW_BUFS_DEFAULT),
           raw_server_url(b->raw_proc, RAW_BUFS_EMAD), PROTO_SOCKET_BUFFER_BYTES / 1024,
           raw_server_url(b->raw_thread, RAW_BUFS_DEFAULT));
    for (i = 0; i < b->nsizes; i++)
        if (run_size(b, i) < 0)
            goto out;
    print_summary(b);
    status = 0;

out:
    for (i = 0; i < V_COUNT; i++)
        raw_close(b->raw[i]);
    if (raw_server_stop(b->raw_thread) < 0)
        status = 1;
    if (raw_server_stop(b->raw_proc) < 0)
        status = 1;
    else if (status == 0)
        printf("  raw server process stopped cleanly (SIGTERM)\n");
    resp_close(b->redis_fd);
    if (proc_stop(&b->redis) < 0)
        status = 1;
    else if (status == 0 && b->use_redis)
        printf("  redis-server stopped cleanly (SIGTERM)\n");
    for (i = 0; i < b->nsizes; i++)
        if (proc_stop(&b->daemons[i].proc) < 0)
            status = 1;
    free(b);
    return status;
}

/*
 * bench_cadence.c - push throughput at a trainer's cadence, against raw
 * nanomsg at the same cadence, with the machine's anchors printed in the
 * same run.
 *
 * Trainers do not push back to back: they push every step of a few hundred
 * milliseconds, or every few steps (every 5-60 s). A push that comes after
 * the daemon freed its spare shadows writes fresh memory (a page fault per
 * page), which on a small VM is several times slower than writing memory
 * already mapped. This program measures:
 *
 *   anchors      what the machine gives, measured here first: writing fresh
 *                memory (as the daemon allocates shadows: 2 MiB aligned,
 *                MADV_HUGEPAGE) and fresh 4 KiB pages, memcpy of memory
 *                already mapped, and one TCP connection over loopback;
 *   cadence      a float32 model of --mib MiB (default 256, 4 tensors)
 *                pushed back to back, then every 0.2, 2 and 20 s (times
 *                --cadence-scale), each push preceded by a raw nanomsg push
 *                of the same bytes to a REP server process (bench/raw.c),
 *                so raw runs at the same cadence; medians of --pushes
 *                pushes per cadence after one more that lets the daemon
 *                learn the pace (printed apart: the first push after a
 *                change to a slower pace may find its spares freed), the
 *                ratios emad / raw and emad /
 *                emad back to back, and per push the daemon's page faults
 *                (/proc/PID/stat) and the shadow bytes it wrote into fresh
 *                memory (its shadow_fresh_bytes counter);
 *   at rest      the daemon's RSS once it has been idle long enough to
 *                give its spares back (read every second, for at most
 *                60 s), against 1.1 x shadow + 64 MiB;
 *   small        models of 2, 4, 8 and 16 MiB (4 tensors), --small-reps
 *                pushes each with other traffic between pushes (a raw push
 *                of 64 MiB to a REP server process of its own before the
 *                emad push and before the raw push of the same bytes it is
 *                compared with): median emad / raw.
 *
 * The daemon runs on its defaults (--idle-release 5) with --http off and
 * no state directory; everything on 127.0.0.1, processes started here and
 * stopped at the end (proc.c).
 *
 *     bench_cadence [--emad PATH] [--mib N] [--cadence-scale F] [--pushes N]
 *                   [--small-reps N] [--no-small]
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "emad.h"
#include "proc.h"
#include "raw.h"

#define MIB (1024ULL * 1024ULL)
#define NTENSORS 4
#define MAX_PUSHES 64
#define NCADENCES 3
#define ANCHOR_BYTES (256 * MIB)
#define TCP_BYTES (1024 * MIB)
#define TCP_WRITE (1 * MIB)
#define OTHER_BYTES (64 * MIB)
#define LIMIT_SLACK (64 * MIB)
#define REST_MAX_S 60.0 /* not scaled: see rest_memory() */
#define MAX_SMALL_REPS 99

static const double cadence_s[NCADENCES] = {0.2, 2.0, 20.0};
static const long small_mib[] = {2, 4, 8, 16};
#define NSMALL (sizeof(small_mib) / sizeof(small_mib[0]))

/* A float32 model of NTENSORS equal tensors over one buffer. */
typedef struct cmodel {
    char name[32];
    char names[NTENSORS][32];
    emad_tensor t[NTENSORS];
    char *data;
    uint64_t total;
} cmodel;

/* The options and the servers of a run. */
typedef struct run {
    char emad[PATH_MAX];
    long mib;
    double scale;
    int pushes;
    int small_reps;
    int small;
    int cadence; /* 0 with --only-small */
    proc daemon;
    char url[64];
    raw_server *rs;
    raw_link *raw;
    raw_server *rs_other; /* a third process: the other traffic between small pushes */
    raw_link *other;
    emad_client *c;
    uint64_t raw_chunk; /* raw messages: libemad's largest message */
} run;

/* The messages libemad sends a model of total bytes in, for raw nanomsg too. */
static uint64_t
raw_chunk_for(const run *r, uint64_t total)
{
    return raw_push_message(total, r->raw_chunk);
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* Median of n values (sorts them). */
static double
median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ---- anchors -------------------------------------------------------------------------------- */

/* GB/s of writing n bytes of never-touched memory, 2 MiB aligned with MADV_HUGEPAGE if huge. */
static double
anchor_fresh(uint64_t n, int huge)
{
    void *p = NULL;
    double t0, sec;

    if (posix_memalign(&p, 2 * MIB, n) != 0)
        return 0;
#ifdef MADV_HUGEPAGE
    if (huge)
        (void)madvise(p, n, MADV_HUGEPAGE);
#else
    (void)huge;
#endif
    t0 = proc_now();
    memset(p, 1, n);
    sec = proc_now() - t0;
    free(p);
    return (double)n / sec / 1e9;
}

/* GB/s of memcpy between two buffers already mapped: the best of 3. */
static double
anchor_memcpy(uint64_t n)
{
    char *a = malloc(n), *b = malloc(n);
    double best = 0;

    if (a == NULL || b == NULL) {
        free(a);
        free(b);
        return 0;
    }
    memset(a, 1, n);
    memset(b, 2, n);
    for (int i = 0; i < 3; i++) {
        double t0 = proc_now(), gbps;
        memcpy(b, a, n);
        gbps = (double)n / (proc_now() - t0) / 1e9;
        best = gbps > best ? gbps : best;
        a[i] = b[n - 1 - (uint64_t)i]; /* keep the copies */
    }
    free(a);
    free(b);
    return best;
}

/* The receiving end of the TCP anchor: read until EOF. */
static void *
tcp_sink(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char *buf = malloc(TCP_WRITE);
    ssize_t n;

    while (buf != NULL && (n = read(fd, buf, TCP_WRITE)) > 0)
        ;
    free(buf);
    close(fd);
    return NULL;
}

/* GB/s of one TCP connection over 127.0.0.1 carrying TCP_BYTES, or 0. */
static double
anchor_tcp(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int ls = socket(AF_INET, SOCK_STREAM, 0), cs = -1, as = -1;
    char *buf = calloc(1, TCP_WRITE);
    double t0, gbps = 0;
    pthread_t th;

    if (ls < 0 || buf == NULL || bind(ls, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(ls, 1) < 0 || getsockname(ls, (struct sockaddr *)&sa, &len) < 0 ||
        (cs = socket(AF_INET, SOCK_STREAM, 0)) < 0 ||
        connect(cs, (struct sockaddr *)&sa, sizeof(sa)) < 0 || (as = accept(ls, NULL, NULL)) < 0)
        goto out;
    if (pthread_create(&th, NULL, tcp_sink, (void *)(intptr_t)as) != 0)
        goto out;
    as = -1; /* the sink closes it */
    t0 = proc_now();
    for (uint64_t done = 0; done < TCP_BYTES;) {
        ssize_t n = write(cs, buf, TCP_WRITE);
        if (n <= 0)
            break;
        done += (uint64_t)n;
    }
    close(cs);
    cs = -1;
    pthread_join(th, NULL);
    gbps = (double)TCP_BYTES / (proc_now() - t0) / 1e9;
out:
    if (cs >= 0)
        close(cs);
    if (as >= 0)
        close(as);
    if (ls >= 0)
        close(ls);
    free(buf);
    return gbps;
}

/* Print the anchors of this machine. */
static void
print_anchors(void)
{
    printf("anchors of this machine (figures that move with the machine, not with emad):\n");
    printf("  fresh memory written, 2 MiB aligned + MADV_HUGEPAGE (as shadows): %6.2f GB/s\n",
           anchor_fresh(ANCHOR_BYTES, 1));
    printf("  fresh memory written, 4 KiB pages:                                %6.2f GB/s\n",
           anchor_fresh(ANCHOR_BYTES, 0));
    printf("  memcpy of memory already mapped (one thread, best of 3):          %6.2f GB/s\n",
           anchor_memcpy(ANCHOR_BYTES));
    printf("  TCP over loopback, one connection (%llu MiB in 1 MiB writes):     %6.2f GB/s\n",
           (unsigned long long)(TCP_BYTES / MIB), anchor_tcp());
    fflush(stdout);
}

/* ---- models and servers --------------------------------------------------------------------- */

/* Fill m: NTENSORS float32 tensors over total bytes of finite values. Returns 0 or -1. */
static int
cmodel_init(cmodel *m, const char *name, uint64_t total)
{
    uint64_t numel = total / NTENSORS / sizeof(float);

    memset(m, 0, sizeof(*m));
    (void)snprintf(m->name, sizeof(m->name), "%s", name);
    m->total = numel * sizeof(float) * NTENSORS;
    if ((m->data = malloc(m->total)) == NULL)
        return -1;
    for (uint64_t k = 0; k < m->total / sizeof(float); k++)
        ((float *)(void *)m->data)[k] = (float)(k % 2000) * 0.001f;
    for (int i = 0; i < NTENSORS; i++) {
        (void)snprintf(m->names[i], sizeof(m->names[i]), "layer%d.weight", i);
        m->t[i].name = m->names[i];
        m->t[i].kind = EMAD_PARAM;
        m->t[i].dtype = EMAD_F32;
        m->t[i].ndim = 1;
        m->t[i].shape[0] = numel;
        m->t[i].data = m->data + (uint64_t)i * numel * sizeof(float);
        m->t[i].nbytes = numel * sizeof(float);
    }
    return 0;
}

/* The daemon's minor page faults so far (/proc/PID/stat field 10), or 0. */
static uint64_t
daemon_faults(const run *r)
{
    char path[64], buf[1024], *p;
    unsigned long long v = 0;
    FILE *f;

    (void)snprintf(path, sizeof(path), "/proc/%d/stat", (int)r->daemon.pid);
    if ((f = fopen(path, "r")) == NULL)
        return 0;
    if (fgets(buf, sizeof(buf), f) != NULL && (p = strrchr(buf, ')')) != NULL)
        (void)sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %llu", &v);
    fclose(f);
    return v;
}

/* This process's minor page faults so far (the client's; the raw server is another process). */
static long
client_faults(void)
{
    struct rusage ru;

    return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_minflt : 0;
}

/* The daemon's counter name, or 0. */
static uint64_t
daemon_counter(const run *r, const char *name)
{
    emad_stat *st = NULL;
    size_t n = 0;
    uint64_t v = 0;

    if (emad_stats(r->c, &st, &n) < 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(st[i].name, name) == 0)
            v = st[i].value;
    free(st);
    return v;
}

/* One push of m at step; seconds into *sec. Returns 0 or -1 (message printed). */
static int
push_once(run *r, const cmodel *m, uint64_t step, double *sec)
{
    emad_push_result res;
    double t0 = proc_now();
    int rc = emad_push(r->c, m->name, step, m->t, NTENSORS, &res);

    *sec = proc_now() - t0;
    if (rc < 0 || res.applied != NTENSORS) {
        fprintf(stderr, "bench_cadence: push of %s at step %llu: %s (%s)\n", m->name,
                (unsigned long long)step, emad_strerror(rc), emad_last_error(r->c));
        return -1;
    }
    return 0;
}

/* One raw push of the same bytes as m; seconds into *sec. Returns 0 or -1. */
static int
raw_once(run *r, const cmodel *m, double *sec)
{
    double t0 = proc_now();
    int rc = raw_push(r->raw, m->data, m->total, raw_chunk_for(r, m->total));

    *sec = proc_now() - t0;
    return rc;
}

/* ---- the cadence run ------------------------------------------------------------------------ */

/* Figures of one cadence: medians over the pushes. */
typedef struct cad_result {
    int n; /* timed pushes */
    double emad_s, raw_s, faults, fresh_mib;
    /* Every push in order; [0]: the first at a cadence (untimed), 0 back to back. */
    double each_emad[MAX_PUSHES + 1], each_raw[MAX_PUSHES + 1], each_fresh[MAX_PUSHES + 1];
} cad_result;

/* The back-to-back pushes: 3 x --pushes, at least 9, at most MAX_PUSHES. */
static int
b2b_pushes(const run *r)
{
    int n = 3 * r->pushes < 9 ? 9 : 3 * r->pushes;

    return n > MAX_PUSHES ? MAX_PUSHES : n;
}

/*
 * Push m n times every gap seconds (0: back to back), each preceded by a
 * raw push of the same bytes; *step is the next step. Returns 0 or -1.
 */
static int
cadence_once(run *r, const cmodel *m, double gap, int n, uint64_t *step, cad_result *out)
{
    double e[MAX_PUSHES + 1], w[MAX_PUSHES + 1], f[MAX_PUSHES + 1], b[MAX_PUSHES + 1];

    out->n = n;
    /* At a cadence, push 0 is the first after a change of pace: untimed. */
    for (int i = gap > 0 ? 0 : 1; i <= n; i++) {
        uint64_t f0, b0;
        if (gap > 0)
            proc_sleep_ms((long)(gap * 1000));
        if (raw_once(r, m, &w[i]) < 0)
            return -1;
        f0 = daemon_faults(r);
        b0 = daemon_counter(r, "shadow_fresh_bytes");
        if (push_once(r, m, (*step)++, &e[i]) < 0)
            return -1;
        f[i] = (double)(daemon_faults(r) - f0);
        b[i] = (double)(daemon_counter(r, "shadow_fresh_bytes") - b0) / (double)MIB;
        out->each_emad[i] = e[i];
        out->each_raw[i] = w[i];
        out->each_fresh[i] = b[i];
    }
    /* The medians of the timed pushes 1 .. n. */
    e[0] = e[n], w[0] = w[n], f[0] = f[n], b[0] = b[n];
    out->emad_s = median(e, n);
    out->raw_s = median(w, n);
    out->faults = median(f, n);
    out->fresh_mib = median(b, n);
    return 0;
}

/*
 * The daemon's VmRSS once it has given its spares back: read every second
 * until it has dropped by 3/4 of the shadow bytes (the spares) or
 * REST_MAX_S have passed. Not scaled: the daemon keeps its spares for up
 * to --idle-release-max (30 s by default) whatever the cadence.
 */
static int
rest_memory(run *r, uint64_t shadow)
{
    double t0 = proc_now(), limit = 1.1 * (double)shadow + (double)LIMIT_SLACK;
    proc_mem mem = {0, 0}, start = {0, 0};

    (void)proc_read_mem(&r->daemon, &start);
    while (proc_read_mem(&r->daemon, &mem) == 0 && start.rss - mem.rss < shadow / 4 * 3 &&
           proc_now() - t0 < REST_MAX_S)
        proc_sleep_ms(1000);
    printf("\n  at rest: RSS %.1f MiB = %.2f x shadow after %.0f s idle (limit 1.1 x + 64 MiB = "
           "%.1f MiB: %s)\n",
           (double)mem.rss / (double)MIB, (double)mem.rss / (double)shadow, proc_now() - t0,
           limit / (double)MIB, (double)mem.rss <= limit ? "PASS" : "FAIL");
    return 0;
}

/* The model pushed back to back and at each cadence. Returns 0 or -1. */
static int
run_cadence(run *r)
{
    cmodel m;
    cad_result b2b, res[NCADENCES];
    uint64_t step = 1;
    double sec;
    int rc = -1;

    if (cmodel_init(&m, "cadence", (uint64_t)r->mib * MIB) < 0 ||
        emad_create(r->c, m.name, EMAD_DEFAULT_DECAY, 1) < 0)
        goto out;
    printf("\n== %ld MiB float32 model (%d tensors), %d pushes per cadence; raw nanomsg pushes "
           "the same bytes just before each (%.1f MiB messages; back to back: %d) ==\n",
           r->mib, NTENSORS, r->pushes, (double)raw_chunk_for(r, m.total) / (double)MIB,
           b2b_pushes(r));
    /* Two warm-ups: the shadows, then the first spares (fresh memory both). */
    for (int i = 0; i < 2; i++) {
        if (push_once(r, &m, step++, &sec) < 0)
            goto out;
        printf("  warm-up push %d (fresh memory): %.2f GB/s\n", i + 1,
               (double)m.total / sec / 1e9);
    }
    /* Back to back costs little: three times the pushes (at least 9), for a steadier median. */
    if (cadence_once(r, &m, 0, b2b_pushes(r), &step, &b2b) < 0)
        goto out;
    for (int k = 0; k < NCADENCES; k++)
        if (cadence_once(r, &m, cadence_s[k] * r->scale, r->pushes, &step, &res[k]) < 0)
            goto out;
    printf("\n  %-14s %9s %9s %9s %12s %13s %14s\n", "every", "emad GB/s", "raw GB/s", "emad/raw",
           "emad/b2b", "faults/push", "fresh MiB/push");
    printf("  %-14s %9.2f %9.2f %9.2f %12.2f %13.0f %14.1f\n", "back to back",
           (double)m.total / b2b.emad_s / 1e9, (double)m.total / b2b.raw_s / 1e9,
           b2b.raw_s / b2b.emad_s, 1.0, b2b.faults, b2b.fresh_mib);
    for (int k = 0; k < NCADENCES; k++) {
        char label[32];
        (void)snprintf(label, sizeof(label), "%.2g s", cadence_s[k] * r->scale);
        printf("  %-14s %9.2f %9.2f %9.2f %12.2f %13.0f %14.1f\n", label,
               (double)m.total / res[k].emad_s / 1e9, (double)m.total / res[k].raw_s / 1e9,
               res[k].raw_s / res[k].emad_s, b2b.emad_s / res[k].emad_s, res[k].faults,
               res[k].fresh_mib);
    }
    printf("  (medians; target emad/raw >= 0.85 at every cadence; fresh MiB: shadow bytes the "
           "daemon wrote into new memory, its shadow_fresh_bytes counter)\n");
    printf("  every push in order, GB/s emad / raw:\n");
    for (int k = -1; k < NCADENCES; k++) {
        const cad_result *x = k < 0 ? &b2b : &res[k];
        char label[32] = "back to back";
        if (k >= 0)
            (void)snprintf(label, sizeof(label), "every %.2g s", cadence_s[k] * r->scale);
        printf("    %-14s", label);
        if (k >= 0)
            printf(" (first at this pace, untimed: %.2f/%.2f, %.0f MiB fresh)",
                   (double)m.total / x->each_emad[0] / 1e9, (double)m.total / x->each_raw[0] / 1e9,
                   x->each_fresh[0]);
        for (int i = 1; i <= x->n; i++)
            printf(" %.2f/%.2f", (double)m.total / x->each_emad[i] / 1e9,
                   (double)m.total / x->each_raw[i] / 1e9);
        printf("\n");
    }
    fflush(stdout);
    rc = rest_memory(r, m.total);
out:
    if (rc < 0)
        fprintf(stderr, "bench_cadence: the cadence run failed\n");
    free(m.data);
    return rc;
}

/* Small models with other traffic (a 64 MiB raw push) between pushes. Returns 0 or -1. */
static int
run_small(run *r)
{
    static char other[OTHER_BYTES];
    double e[MAX_SMALL_REPS], w[MAX_SMALL_REPS], fd[MAX_SMALL_REPS], fc[MAX_SMALL_REPS], sec;

    memset(other, 3, sizeof(other));
    printf("\n== small models, %d pushes each, a raw push of %llu MiB to a third process before "
           "each (other traffic); raw nanomsg pushes the same bytes before each emad push ==\n",
           r->small_reps, (unsigned long long)(OTHER_BYTES / MIB));
    printf("  %8s %10s %10s %9s %14s %14s\n", "model", "emad ms", "raw ms", "emad/raw",
           "daemon faults", "client faults");
    for (size_t k = 0; k < NSMALL; k++) {
        cmodel m;
        char name[32];
        uint64_t step = 1;

        (void)snprintf(name, sizeof(name), "small%ld", small_mib[k]);
        if (cmodel_init(&m, name, (uint64_t)small_mib[k] * MIB) < 0 ||
            emad_create(r->c, m.name, EMAD_DEFAULT_DECAY, 1) < 0 ||
            push_once(r, &m, step++, &sec) < 0 || push_once(r, &m, step++, &sec) < 0) {
            free(m.data);
            return -1;
        }
        for (int i = 0; i < r->small_reps; i++) {
            uint64_t f0;
            long c0;
            /* The other traffic before each of the two, to a process of its own: the push
             * measured right after a request to the same server would find it warm. */
            if (raw_push(r->other, other, sizeof(other), EMAD_TXN_CHUNK_BYTES) < 0 ||
                raw_once(r, &m, &w[i]) < 0 ||
                raw_push(r->other, other, sizeof(other), EMAD_TXN_CHUNK_BYTES) < 0) {
                free(m.data);
                return -1;
            }
            f0 = daemon_faults(r);
            c0 = client_faults();
            if (push_once(r, &m, step++, &e[i]) < 0) {
                free(m.data);
                return -1;
            }
            fd[i] = (double)(daemon_faults(r) - f0);
            fc[i] = (double)(client_faults() - c0);
        }
        printf("  %5ld MiB %10.2f %10.2f %9.2f %14.0f %14.0f\n", small_mib[k],
               median(e, r->small_reps) * 1e3, median(w, r->small_reps) * 1e3,
               median(w, r->small_reps) / median(e, r->small_reps), median(fd, r->small_reps),
               median(fc, r->small_reps));
        free(m.data);
    }
    printf("  (medians; target emad/raw >= 0.8; faults: minor page faults during the emad push)\n");
    return 0;
}

/* ---- main ----------------------------------------------------------------------------------- */

static void
usage(FILE *f)
{
    fprintf(f, "usage: bench_cadence [--emad PATH] [--mib N] [--cadence-scale F] [--pushes N]\n"
               "                     [--small-reps N] [--no-small | --only-small]\n"
               "Pushes a float32 model of N MiB (default 256) back to back and every 0.2,\n"
               "2 and 20 s times F (default 1; e.g. 0.1 for a quick run), against raw\n"
               "nanomsg at the same cadence, with --pushes pushes per cadence (default 3);\n"
               "then the daemon's memory at rest, and 2-16 MiB models with other traffic\n"
               "between pushes (--small-reps, default 11). Prints the machine's anchors\n"
               "first (fresh-memory writes, memcpy, TCP over loopback). --only-small runs\n"
               "the small models alone.\n");
}

static int
parse(run *r, int argc, char **argv)
{
    static const struct option opts[] = {
        {"emad", required_argument, NULL, 'e'},
        {"mib", required_argument, NULL, 'm'},
        {"cadence-scale", required_argument, NULL, 's'},
        {"pushes", required_argument, NULL, 'p'},
        {"small-reps", required_argument, NULL, 'r'},
        {"no-small", no_argument, NULL, 'n'},
        {"only-small", no_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int o;

    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 's':
            r->scale = strtod(optarg, NULL);
            break;
        case 'm':
            r->mib = strtol(optarg, NULL, 10);
            break;
        case 'e':
            (void)snprintf(r->emad, sizeof(r->emad), "%s", optarg);
            break;
        case 'p':
            r->pushes = (int)strtol(optarg, NULL, 10);
            break;
        case 'r':
            r->small_reps = (int)strtol(optarg, NULL, 10);
            break;
        case 'n':
            r->small = 0;
            break;
        case 'o':
            r->cadence = 0;
            break;
        default: /* --help, or an unknown option */
            usage(o == 'h' ? stdout : stderr);
            return o == 'h' ? 0 : 2;
        }
    }
    if (optind < argc || r->mib < 4 || r->mib > 4096 || !(r->scale > 0 && r->scale <= 10) ||
        r->pushes < 1 || r->pushes > MAX_PUSHES || r->small_reps < 1 ||
        r->small_reps > MAX_SMALL_REPS || access(r->emad, X_OK) != 0) {
        usage(stderr);
        return 2;
    }
    return -1;
}

int
main(int argc, char **argv)
{
    run r = {.mib = 256, .scale = 1.0, .pushes = 3, .small_reps = 11, .small = 1, .cadence = 1};
    emad_options eo;
    int status = 1, rc;

    if (argc > 1 && strcmp(argv[1], RAW_SERVER_ARG) == 0)
        return raw_server_main(argc, argv); /* started by raw_spawn() */
    (void)snprintf(r.emad, sizeof(r.emad), "./emad");
    r.daemon.pid = -1;
    if ((rc = parse(&r, argc, argv)) >= 0)
        return rc;
    if (proc_init() < 0)
        return 1;
    signal(SIGPIPE, SIG_IGN);
    printf("emad bench_cadence: pushes at a trainer's cadence (cadence scale %.3g)\n", r.scale);
    print_anchors();

    /* The servers before any nanomsg socket exists (they fork). */
    int port = proc_free_port();
    (void)snprintf(r.url, sizeof(r.url), "tcp://127.0.0.1:%d", port);
    if (port < 0 || proc_prepare(&r.daemon, "emad") < 0 ||
        proc_spawn(&r.daemon, (const char *const[]){r.emad, "--listen", r.url, "--http", "off",
                                                    NULL}) < 0)
        goto out;
    emad_options_init(&eo);
    r.raw_chunk = eo.chunk_bytes;
    if (raw_spawn(&r.rs, OTHER_BYTES) < 0 || (r.small && raw_spawn(&r.rs_other, OTHER_BYTES) < 0) ||
        raw_connect(&r.raw, r.rs, RAW_BUFS_EMAD) < 0 ||
        (r.small && raw_connect(&r.other, r.rs_other, RAW_BUFS_EMAD) < 0))
        goto out;
    for (int i = 0; i < 100 && (rc = emad_connect(&r.c, r.url, NULL)) != 0; i++)
        proc_sleep_ms(100);
    if (rc != 0) {
        fprintf(stderr, "bench_cadence: emad at %s: %s\n", r.url, emad_strerror(rc));
        goto out;
    }
    printf("daemon: %s on %s (pid %d), defaults (--idle-release 5); raw: REP server process "
           "(pid %d), emad's socket buffers\n",
           r.emad, r.url, (int)r.daemon.pid, raw_server_pid(r.rs));
    if ((r.cadence && run_cadence(&r) < 0) || (r.small && run_small(&r) < 0))
        goto out;
    status = 0;
out:
    emad_close(r.c);
    raw_close(r.raw);
    raw_close(r.other);
    if (raw_server_stop(r.rs) < 0)
        status = 1;
    if (raw_server_stop(r.rs_other) < 0)
        status = 1;
    if (proc_stop(&r.daemon) < 0)
        status = 1;
    return status;
}

/*
 * bench_auth.c - what authentication costs: pushes and pulls of a float32
 * model (256 MiB by default) to a daemon without authentication and to one
 * with --auth-file, in the same run, interleaved repetition by repetition
 * (the order alternates), so that both see the same machine. The key file
 * and the auth file are made by `emactl keygen`, as an operator would.
 * Prints the medians and the ratios authenticated / unauthenticated
 * (target >= 0.85 for the 256 MiB model), and the CPU time each push and
 * pull costs the client (this process, getrusage) and the daemon
 * (/proc/PID/stat), and the client's minor page faults: on a shared
 * machine the figures that depend least on what else runs.
 *
 *   bench_auth --emad PATH --emactl PATH [--mib N] [--reps N] [--rounds N]
 *              [--emad-b PATH | --control]
 *
 * --rounds N runs the repetitions N times, each time with fresh daemons
 * (and fresh clients and keys), and reports on all N x reps pairs, with
 * each round's own medians beside: two daemons of one build differ by up
 * to a tenth for a whole run (--control shows it), so one pair of daemons
 * is one draw of that difference, and fresh pairs average it out.
 *
 * --emad-b adds a third daemon, with --auth-file, from another build (say,
 * the commit before a change), interleaved with the other two: it prints
 * that daemon's ratios too and, repetition by repetition, how it compares
 * with the first one. On a shared machine this A/B in one run is what
 * separates a few percent from the drift of the load between runs.
 *
 * --control adds instead a second daemon without authentication,
 * interleaved the same way, and prints how the two unauthenticated daemons
 * compare: 1.00 would be no difference; how far it is from 1.00 is how much
 * two daemons of one build differ on this machine in one run (where each
 * one's memory landed, what else ran): the noise of the auth/plain ratio.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "emad.h"
#include "proc.h"

#define MODEL_NAME "bench-auth"
#define NTENSORS 4
#define MAX_REPS 99
#define TARGET 0.85

/* One daemon under test and its client. */
typedef struct side {
    const char *label;
    proc p;
    char url[64];
    char auth_file[128]; /* "" for the daemon without authentication */
    char key_file[128];
    emad_client *c;
    double push_s[MAX_REPS], pull_s[MAX_REPS];
    double cpu[2][3]; /* [push, pull][client, daemon, client's page faults]: sums over the reps */
} side;

enum { OP_PUSH, OP_PULL };

/* CPU seconds of the client and of s's daemon so far, and the client's minor page faults. */
static void
cpu_now(const side *s, double v[3])
{
    v[0] = proc_self_cpu(&v[2]);
    if (proc_read_cpu(&s->p, &v[1]) != 0)
        v[1] = 0.0;
}

/* Add the CPU used since t0 (cpu_now) to s's sums for op. */
static void
cpu_add(side *s, int op, const double t0[3])
{
    double t1[3];

    cpu_now(s, t1);
    for (int k = 0; k < 3; k++)
        s->cpu[op][k] += t1[k] - t0[k];
}

/* The model: NTENSORS float32 tensors over one buffer, and a buffer to pull into. */
typedef struct model {
    uint64_t tbytes;
    char names[NTENSORS][32];
    emad_tensor push[NTENSORS], pull[NTENSORS];
    char *src, *dst;
} model;

/* Run `emactl keygen` into s's directory: the key file, and the auth file from its output. */
static int
make_keys(side *s, const char *emactl)
{
    char cmd[1024];

    (void)snprintf(s->key_file, sizeof(s->key_file), "%s/bench.key", s->p.dir);
    (void)snprintf(s->auth_file, sizeof(s->auth_file), "%s/auth.ini", s->p.dir);
    (void)snprintf(cmd, sizeof(cmd),
                   "'%s' keygen bench --out '%s' --grant 'push *' --grant 'pull *' "
                   "--grant 'admin *' > '%s'",
                   emactl, s->key_file, s->auth_file);
    if (system(cmd) != 0) {
        fprintf(stderr, "bench_auth: failed: %s\n", cmd);
        return -1;
    }
    return 0;
}

/* Start s's daemon on a free port (with its auth file if any) and connect. */
static int
side_start(side *s, const char *emad, const char *emactl, int auth)
{
    const char *argv[] = {emad,       "--listen", s->url, "--max-message-bytes",
                          "67108864", "--http",   "off",  NULL,
                          NULL,       NULL};
    emad_options o;
    double deadline;
    int port, rc = 0;

    if (proc_prepare(&s->p, "emad") < 0 || (port = proc_free_port()) < 0)
        return -1;
    (void)snprintf(s->url, sizeof(s->url), "tcp://127.0.0.1:%d", port);
    if (auth) {
        if (make_keys(s, emactl) < 0)
            return -1;
        argv[7] = "--auth-file";
        argv[8] = s->auth_file;
    }
    if (proc_spawn(&s->p, argv) < 0)
        return -1;
    emad_options_init(&o);
    o.connect_timeout_ms = 200;
    if (auth) {
        o.user = "bench";
        o.key_file = s->key_file;
    }
    for (deadline = proc_now() + 10.0; proc_now() < deadline; proc_sleep_ms(50)) {
        if (!proc_running(&s->p))
            return -1;
        if ((rc = emad_connect(&s->c, s->url, &o)) == 0)
            return 0;
    }
    fprintf(stderr, "bench_auth: %s daemon at %s: %s\n", s->label, s->url, emad_last_error(NULL));
    proc_dump_file(s->p.log);
    return -1;
}

/* Make the model's buffers and tensors. */
static int
model_init(model *m, uint64_t mib)
{
    uint64_t total = mib << 20, n;

    m->tbytes = total / NTENSORS;
    if ((m->src = malloc(total)) == NULL || (m->dst = calloc(1, total)) == NULL) {
        fprintf(stderr, "bench_auth: out of memory for %llu MiB\n", (unsigned long long)mib);
        return -1;
    }
    n = total / sizeof(float);
    for (uint64_t k = 0; k < n; k++) {
        float v = (float)(k % 1024) / 1024.0f - 0.5f;
        memcpy(m->src + k * sizeof(float), &v, sizeof(v));
    }
    for (int i = 0; i < NTENSORS; i++) {
        emad_tensor *t = &m->push[i];

        (void)snprintf(m->names[i], sizeof(m->names[i]), "block%d.weight", i);
        memset(t, 0, sizeof(*t));
        t->name = m->names[i];
        t->kind = EMAD_PARAM;
        t->dtype = EMAD_F32;
        t->ndim = 1;
        t->shape[0] = m->tbytes / sizeof(float);
        t->data = m->src + i * m->tbytes;
        t->nbytes = m->tbytes;
    }
    return 0;
}

/* Push the model at step; *sec is the time of the call (NULL: a warm-up, counted nowhere). */
static int
push_once(side *s, model *m, uint64_t step, double *sec)
{
    emad_push_result res;
    double c0[3], t0;
    int rc;

    cpu_now(s, c0);
    t0 = proc_now();
    rc = emad_push(s->c, MODEL_NAME, step, m->push, NTENSORS, &res);
    if (sec != NULL) {
        *sec = proc_now() - t0;
        cpu_add(s, OP_PUSH, c0);
    }
    if (rc != 0 || res.applied != NTENSORS) {
        fprintf(stderr, "bench_auth: %s push at step %llu: %s\n", s->label,
                (unsigned long long)step, rc != 0 ? emad_last_error(s->c) : "not applied");
        return -1;
    }
    return 0;
}

/* Pull the model into dst and check it (every push has the same values); *sec: the call. */
static int
pull_once(side *s, model *m, double *sec)
{
    double c0[3], t0;
    int rc;

    for (int i = 0; i < NTENSORS; i++) {
        memset(&m->pull[i], 0, sizeof(m->pull[i]));
        m->pull[i].name = m->names[i];
        m->pull[i].data = m->dst + i * m->tbytes;
        m->pull[i].nbytes = m->tbytes;
    }
    cpu_now(s, c0);
    t0 = proc_now();
    rc = emad_pull_into(s->c, MODEL_NAME, m->pull, NTENSORS, NULL);
    *sec = proc_now() - t0;
    cpu_add(s, OP_PULL, c0);
    if (rc != 0) {
        fprintf(stderr, "bench_auth: %s pull: %s\n", s->label, emad_last_error(s->c));
        return -1;
    }
    if (memcmp(m->dst, m->src, m->tbytes * NTENSORS) != 0) {
        fprintf(stderr, "bench_auth: %s pull: the data differs from the pushed model\n", s->label);
        return -1;
    }
    memset(m->dst, 0, m->tbytes * NTENSORS);
    return 0;
}

/* Order doubles, for qsort. */
static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* Median of n times (sorts a copy). */
static double
median(const double *v, long n)
{
    double s[MAX_REPS];

    memcpy(s, v, (size_t)n * sizeof(*s));
    qsort(s, (size_t)n, sizeof(*s), cmp_double);
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2.0;
}

/*
 * Print one op's medians for both sides, the ratio of the medians, and the
 * median of the ratios of each repetition's pair (the two sides of one
 * repetition run back to back, so they see the same load of a shared
 * machine; the load drifts between repetitions): the verdict is on that.
 */
static void
report(const char *op, const double *plain, const double *auth, long reps, uint64_t bytes)
{
    double mp = median(plain, reps), ma = median(auth, reps), pairs[MAX_REPS], paired;

    for (long r = 0; r < reps; r++)
        pairs[r] = plain[r] / auth[r];
    paired = median(pairs, reps);
    printf("  %-5s unauthenticated %6.2f GB/s (%7.1f ms)   authenticated %6.2f GB/s (%7.1f ms)\n"
           "        auth/plain: of the medians %.2f, median of the %ld pairs %.3f (target >= %.2f: "
           "%s)\n",
           op, (double)bytes / mp / 1e9, mp * 1e3, (double)bytes / ma / 1e9, ma * 1e3, mp / ma,
           reps, paired, TARGET, paired >= TARGET ? "met" : "NOT MET");
}

/*
 * Print the CPU milliseconds one op cost on average, client and daemon, on
 * both sides, and the ratios unauthenticated / authenticated of the sums.
 */
static void
report_cpu(const char *op, const side *plain, const side *auth, int o, long reps)
{
    double pc = plain->cpu[o][0] * 1e3 / (double)reps, pd = plain->cpu[o][1] * 1e3 / (double)reps,
           ac = auth->cpu[o][0] * 1e3 / (double)reps, ad = auth->cpu[o][1] * 1e3 / (double)reps;

    printf("  %-5s CPU per call: unauthenticated client %6.1f ms + daemon %6.1f ms = %6.1f ms; "
           "authenticated %6.1f + %6.1f = %6.1f ms; plain/auth %.2f\n"
           "        client page faults per call: unauthenticated %.0f, authenticated %.0f\n",
           op, pc, pd, pc + pd, ac, ad, ac + ad, ac + ad > 0 ? (pc + pd) / (ac + ad) : 0.0,
           plain->cpu[o][2] / (double)reps, auth->cpu[o][2] / (double)reps);
}

/* Parse a whole number in [1, max]; -1 if it is not one. */
static long
parse_count(const char *s, long max)
{
    char *end;
    long v = strtol(s, &end, 10);

    return *s != '\0' && *end == '\0' && v >= 1 && v <= max ? v : -1;
}

/* The medians over repetitions [first, first + reps) of a's push and pull times over b's. */
static void
pair_medians(const side *a, const side *b, long first, long reps, double *push, double *pull)
{
    double pu[MAX_REPS], pl[MAX_REPS];

    for (long r = 0; r < reps; r++) {
        pu[r] = a->push_s[first + r] / b->push_s[first + r];
        pl[r] = a->pull_s[first + r] / b->pull_s[first + r];
    }
    *push = median(pu, reps);
    *pull = median(pl, reps);
}

/*
 * With --emad-b: the second authenticated daemon against the first, the
 * median of each repetition's time with the first over the time with it
 * (above 1: it is faster), and its CPU per call.
 */
static void
report_b(const side *a, const side *b, long reps)
{
    double push, pull;

    pair_medians(a, b, 0, reps, &push, &pull);
    printf(
        "  --emad-b against --emad, both authenticated (median of the %ld time_a/time_b; above 1: "
        "b is faster): push %.3f, pull %.3f\n",
        reps, push, pull);
    printf("        CPU per call with b: push client %6.1f ms + daemon %6.1f ms; pull %6.1f + "
           "%6.1f ms\n",
           b->cpu[OP_PUSH][0] * 1e3 / (double)reps, b->cpu[OP_PUSH][1] * 1e3 / (double)reps,
           b->cpu[OP_PULL][0] * 1e3 / (double)reps, b->cpu[OP_PULL][1] * 1e3 / (double)reps);
}

/* With --control: the second unauthenticated daemon against the first (median of the pairs). */
static void
report_control(const side *a, const side *b, long reps)
{
    double push, pull;

    pair_medians(a, b, 0, reps, &push, &pull);
    printf("  control: two daemons without authentication, the first's time over the second's "
           "(median of the %ld pairs; 1.00: no difference): push %.2f, pull %.2f\n",
           reps, push, pull);
}

/*
 * Interleaved repetitions over the n sides, into times [first, first +
 * reps); the warm-ups count in neither the times nor the CPU sums. Returns
 * 0 or -1.
 */
static int
run(side *sides, int n, model *m, long first, long reps)
{
    uint64_t step = 1;

    for (int i = 0; i < 2; i++) /* warm-up: the shadows and the spare copies are written */
        for (int k = 0; k < n; k++)
            if (push_once(&sides[k], m, step + (uint64_t)i, NULL) < 0)
                return -1;
    step += 2;
    for (long r = first; r < first + reps; r++, step++) {
        for (int j = 0; j < n; j++) {
            side *s = &sides[(r + j) % n]; /* rotate which side goes first */

            if (push_once(s, m, step, &s->push_s[r]) < 0 || pull_once(s, m, &s->pull_s[r]) < 0)
                return -1;
        }
    }
    return 0;
}

/* Each round's median of the pairs plain/auth, push then pull, on one line. */
static void
report_rounds(const side *plain, const side *auth, long rounds, long reps)
{
    double push[9], pull[9];

    for (long k = 0; k < rounds; k++)
        pair_medians(plain, auth, k * reps, reps, &push[k], &pull[k]);
    printf("  each round's median of its %ld pairs (fresh daemons each round): push", reps);
    for (long k = 0; k < rounds; k++)
        printf(" %.2f", push[k]);
    printf("; pull");
    for (long k = 0; k < rounds; k++)
        printf(" %.2f", pull[k]);
    printf("\n");
}

/* Start the n sides' daemons, connect, and create the model on each; 0 or -1. */
static int
start_sides(side *sides, int n, const char *emad, const char *emad_b, const char *emactl,
            int control)
{
    if (side_start(&sides[0], emad, emactl, 0) < 0 || side_start(&sides[1], emad, emactl, 1) < 0 ||
        (emad_b != NULL && side_start(&sides[2], emad_b, emactl, 1) < 0) ||
        (control && side_start(&sides[2], emad, emactl, 0) < 0))
        return -1;
    for (int k = 0; k < n; k++)
        if (emad_create(sides[k].c, MODEL_NAME, 0.9, 0) != 0) {
            fprintf(stderr, "bench_auth: create: %s\n", emad_last_error(sides[k].c));
            return -1;
        }
    return 0;
}

/* Close the clients and stop the daemons of every side; 0, or -1 if a daemon failed. */
static int
stop_sides(side *sides)
{
    int rc = 0;

    for (int k = 0; k < 3; k++) {
        emad_close(sides[k].c);
        sides[k].c = NULL;
        if (proc_stop(&sides[k].p) != 0)
            rc = -1;
    }
    return rc;
}

int
main(int argc, char **argv)
{
    const char *emad = NULL, *emactl = NULL, *emad_b = NULL;
    long reps = 9, mib = 256, rounds = 1, total;
    side sides[3] = {{.label = "unauthenticated"},
                     {.label = "authenticated"},
                     {.label = "authenticated (--emad-b)"}};
    int n, control = 0;
    model m = {0};
    int rc = 1;

    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : "";
        if (strcmp(argv[i], "--control") == 0) {
            control = 1;
            sides[2].label = "unauthenticated (--control)";
            continue;
        }
        if (strcmp(argv[i], "--emad") == 0)
            emad = v;
        else if (strcmp(argv[i], "--emad-b") == 0)
            emad_b = v;
        else if (strcmp(argv[i], "--emactl") == 0)
            emactl = v;
        else if (strcmp(argv[i], "--reps") == 0)
            reps = parse_count(v, MAX_REPS);
        else if (strcmp(argv[i], "--rounds") == 0)
            rounds = parse_count(v, 9);
        else if (strcmp(argv[i], "--mib") == 0)
            mib = parse_count(v, 65536);
        else {
            fprintf(stderr, "usage: bench_auth --emad PATH --emactl PATH [--mib N] [--reps N] "
                            "[--rounds N] [--emad-b PATH | --control]\n");
            return 2;
        }
        i++;
    }
    if (emad == NULL || emactl == NULL || reps < 0 || mib < 0 || mib % NTENSORS != 0 ||
        rounds < 0 || reps * rounds > MAX_REPS || (control && emad_b != NULL)) {
        fprintf(stderr, "usage: bench_auth --emad PATH --emactl PATH [--mib N (a multiple of "
                        "4)] [--reps N (1..99)] [--rounds N (1..9; reps x rounds <= 99)] "
                        "[--emad-b PATH | --control]\n");
        return 2;
    }
    total = reps * rounds;
    if (proc_init() < 0 || model_init(&m, (uint64_t)mib) < 0)
        goto out;
    printf("emad bench_auth: float32 model of %ld MiB (%d tensors), %ld round%s of %ld reps + 2 "
           "warm-ups, over TCP loopback; the same pushes and pulls to a daemon without and one "
           "with --auth-file, interleaved\n",
           mib, NTENSORS, rounds, rounds > 1 ? "s (fresh daemons each)" : "", reps);
    n = emad_b != NULL || control ? 3 : 2;
    for (long k = 0; k < rounds; k++)
        if ((k > 0 && stop_sides(sides) < 0) ||
            start_sides(sides, n, emad, emad_b, emactl, control) < 0 ||
            run(sides, n, &m, k * reps, reps) < 0)
            goto out;
    printf("  (medians; GB/s = 1e9 bytes/s)\n");
    report("push", sides[0].push_s, sides[1].push_s, total, (uint64_t)mib << 20);
    report("pull", sides[0].pull_s, sides[1].pull_s, total, (uint64_t)mib << 20);
    if (rounds > 1)
        report_rounds(&sides[0], &sides[1], rounds, reps);
    printf("  (CPU time, user + system, means over the repetitions; the client is this process)\n");
    report_cpu("push", &sides[0], &sides[1], OP_PUSH, total);
    report_cpu("pull", &sides[0], &sides[1], OP_PULL, total);
    if (emad_b != NULL) {
        report("push (b)", sides[0].push_s, sides[2].push_s, total, (uint64_t)mib << 20);
        report("pull (b)", sides[0].pull_s, sides[2].pull_s, total, (uint64_t)mib << 20);
        report_b(&sides[1], &sides[2], total);
    }
    if (control)
        report_control(&sides[0], &sides[2], total);
    rc = 0;
out:
    if (stop_sides(sides) < 0)
        rc = 1;
    free(m.src);
    free(m.dst);
    return rc;
}

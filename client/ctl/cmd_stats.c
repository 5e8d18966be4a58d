/*
 * cmd_stats.c - the emactl commands that show the daemon's figures: stats
 * and watch.
 *
 * Both take a sample (the counters and the list of models) and print the
 * table of models; stats prints every counter once (or everything as one
 * JSON object with --json), watch refreshes the table with steps per
 * second and the rates of the main counters (watch_counters, the only
 * place emactl names counters).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/emaconf.h"
#include "common/counters.h"
#include "common/proto.h"
#include "ctl.h"

/* The counters whose rates watch prints, in its order: a counter, or an op's request count. */
static const struct {
    int counter; /* enum counter, or -1 */
    int op;      /* enum proto_op, when counter is -1 */
} watch_counters[] = {
    {COUNTER_REQUESTS, 0},        {-1, PROTO_OP_PUSH},   {-1, PROTO_OP_PULL},
    {COUNTER_TENSORS_APPLIED, 0}, {COUNTER_ERRORS, 0},   {COUNTER_BYTES_IN, 0},
    {COUNTER_BYTES_OUT, 0},
};

/* The wire name of watch_counters[i], in buf. */
static const char *
watch_counter_name(char *buf, size_t size, size_t i)
{
    if (watch_counters[i].counter >= 0)
        return counters_name(watch_counters[i].counter);
    return counters_op_name(buf, size, watch_counters[i].op) == 0 ? buf : "";
}

/* One sample of the daemon's figures: counters and models. */
typedef struct sample {
    emad_stat *st;
    size_t nst;
    emad_model_info *models;
    size_t nmodels;
    double t; /* seconds, monotonic */
} sample;

/* Free what a sample holds and clear it. */
static void
sample_free(sample *x)
{
    free(x->st);
    free(x->models);
    memset(x, 0, sizeof(*x));
}

/* Take a sample into x; 0, or the exit status after printing the error. */
static int
sample_take(const ctl *g, emad_client *c, sample *x)
{
    struct timespec ts;
    int rc;

    memset(x, 0, sizeof(*x));
    if ((rc = emad_stats(c, &x->st, &x->nst)) != 0 ||
        (rc = emad_list(c, &x->models, &x->nmodels)) != 0) {
        sample_free(x);
        return ctl_fail_rc(g, c, rc);
    }
    clock_gettime(CLOCK_MONOTONIC, &ts);
    x->t = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    return 0;
}

/* A counter of a sample (0 if absent). */
static uint64_t
counter(const sample *x, const char *name)
{
    for (size_t i = 0; i < x->nst; i++)
        if (strcmp(x->st[i].name, name) == 0)
            return x->st[i].value;
    return 0;
}

/* Print the per-model table; with prev, also rates since prev. */
static void
print_models(const sample *x, const sample *prev)
{
    int w = 5;
    char lag[32];

    for (size_t i = 0; i < x->nmodels; i++)
        if ((int)strlen(x->models[i].name) > w)
            w = (int)strlen(x->models[i].name);
    printf("%-*s  %12s  %9s  %8s  %14s  %12s\n", w, "MODEL", "STEP", "LAG(s)", "TENSORS", "BYTES",
           prev != NULL ? "STEPS/s" : "SNAPSHOT");
    for (size_t i = 0; i < x->nmodels; i++) {
        const emad_model_info *m = &x->models[i];
        if (m->last_push_age_ms < 0)
            snprintf(lag, sizeof(lag), "-");
        else
            snprintf(lag, sizeof(lag), "%.1f", (double)m->last_push_age_ms / 1000.0);
        printf("%-*s  %12" PRIu64 "  %9s  %8" PRIu64 "  %14" PRIu64, w, m->name, m->step, lag,
               m->ntensors, m->shadow_bytes);
        if (prev == NULL) {
            printf("  %12" PRIu64 "\n", m->snapshot_step);
            continue;
        }
        double rate = 0.0;
        for (size_t j = 0; j < prev->nmodels; j++)
            if (strcmp(prev->models[j].name, m->name) == 0 && m->step >= prev->models[j].step &&
                x->t > prev->t)
                rate = (double)(m->step - prev->models[j].step) / (x->t - prev->t);
        printf("  %12.1f\n", rate);
    }
}

/* Print rates of the main counters between two samples. */
static void
print_rates(const sample *x, const sample *prev)
{
    double dt = x->t - prev->t;

    printf("\n%-18s %14s %14s\n", "COUNTER", "TOTAL", "PER SECOND");
    for (size_t i = 0; i < sizeof(watch_counters) / sizeof(watch_counters[0]); i++) {
        char buf[64];
        const char *name = watch_counter_name(buf, sizeof(buf), i);
        uint64_t a = counter(prev, name), b = counter(x, name);
        printf("%-18s %14" PRIu64 " %14.1f\n", name, b,
               dt > 0 && b >= a ? (b - a) / dt : 0.0);
    }
}

/* Print a sample as one JSON object. */
static void
print_json(const sample *x)
{
    /* Counter and model names are [A-Za-z0-9._-]: no JSON escaping needed. */
    printf("{\"counters\": {");
    for (size_t i = 0; i < x->nst; i++)
        printf("%s\"%s\": %" PRIu64, i ? ", " : "", x->st[i].name, x->st[i].value);
    printf("}, \"models\": [");
    for (size_t i = 0; i < x->nmodels; i++) {
        const emad_model_info *m = &x->models[i];
        char d[32];
        printf("%s{\"name\": \"%s\", \"decay\": %s, \"step\": %" PRIu64 ", \"tensors\": %" PRIu64
               ", \"shadow_bytes\": %" PRIu64 ", \"snapshot_step\": %" PRIu64
               ", \"last_push_age_ms\": %" PRId64 "}",
               i ? ", " : "", m->name, emaconf_fmt_double(d, sizeof(d), m->decay), m->step,
               m->ntensors, m->shadow_bytes, m->snapshot_step, m->last_push_age_ms);
    }
    printf("]}\n");
}

/* stats [--json] */
static int
cmd_stats(ctl *g, const ctl_cmd *self, ctl_args *a)
{
    emad_client *c;
    sample x;
    int r;

    if ((c = ctl_connect(g)) == NULL)
        return EXIT_FAIL;
    if ((r = sample_take(g, c, &x)) != 0) {
        emad_close(c);
        return r;
    }
    if (a->json) {
        print_json(&x);
    } else {
        print_models(&x, NULL);
        printf("\n");
        for (size_t i = 0; i < x.nst; i++)
            printf("%s %" PRIu64 "\n", x.st[i].name, x.st[i].value);
    }
    sample_free(&x);
    emad_close(c);
    return EXIT_SUCCESS;
}

/* watch [--interval SECONDS] [--count N] */
static int
cmd_watch(ctl *g, const ctl_cmd *self, ctl_args *a)
{
    emad_client *c;
    sample prev, x;
    uint64_t count = a->count;
    double interval = a->interval;
    int r, tty = isatty(STDOUT_FILENO);

    if ((c = ctl_connect(g)) == NULL)
        return EXIT_FAIL;
    if ((r = sample_take(g, c, &prev)) != 0) {
        emad_close(c);
        return r;
    }
    for (uint64_t i = 0; count == 0 || i < count; i++) {
        struct timespec ts = {(time_t)interval,
                              (long)((interval - (double)(time_t)interval) * 1e9)};
        nanosleep(&ts, NULL);
        if ((r = sample_take(g, c, &x)) != 0)
            break;
        if (tty)
            printf("\033[H\033[2J");
        printf("emad at %s, every %.3g s\n\n", g->server, interval);
        print_models(&x, &prev);
        print_rates(&x, &prev);
        fflush(stdout);
        sample_free(&prev);
        prev = x;
    }
    sample_free(&prev);
    emad_close(c);
    return r;
}

/* The options of stats. */
static const ctl_opt stats_opts[] = {
    {.name = "--json", .set = args_set_flag, .off = offsetof(ctl_args, json)},
    {.name = NULL},
};

/* clang-format off */
/* The options of watch. */
static const ctl_opt watch_opts[] = {
    {ARGS_OPT("--interval", args_set_number, interval), .max = 3600,
     .what = "seconds (0 < S <= 3600)"},
    {ARGS_OPT("--count", args_set_u64, count), .min = 1, .max = UINT64_MAX,
     .what = "a whole number > 0"},
    {.name = NULL},
};
/* clang-format on */

const ctl_cmd ctl_cmd_stats = {
    .op = PROTO_OP_STATS,
    .usage = "stats [--json]",
    .help = "Print a table of the models (step, seconds since the last push, tensors,\n"
            "shadow bytes, last snapshot step), then the daemon's counters, one 'name\n"
            "value' per line. --json prints the same figures as one JSON object.\n",
    .opts = {stats_opts},
    .exec = cmd_stats,
};

const ctl_cmd ctl_cmd_watch = {
    .name = "watch",
    .usage = "watch [--interval SECONDS] [--count N]",
    .help = "Refresh the model table every SECONDS (default 1) with steps per second, and\n"
            "the main counters with their rates. --count stops after N refreshes.\n",
    .opts = {watch_opts},
    .exec = cmd_watch,
};

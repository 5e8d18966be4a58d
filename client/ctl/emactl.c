/*
 * emactl.c - the command-line client of emad.
 *
 * emactl creates and drops models, pushes parameters and buffers read from
 * safetensors files, pulls the averaged model into a safetensors file, and
 * prints the daemon's models, tensors and counters. It is a thin layer over
 * libemad (include/emad.h) and the shared safetensors reader and writer
 * (src/common/safetensors.h): it parses the command line, reads files before it
 * talks to the daemon, and turns every failure into one line on stderr,
 * "emactl: COMMAND: MESSAGE (EMAD_ECODE)", and a non-zero exit status
 * (1 for a failed operation, 2 for a usage error).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/dtype.h"
#include "common/emaconf.h"
#include "emad.h"
#include "common/proto.h"
#include "common/safetensors.h"
#include "common/snapshot.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "0.1.0"
#endif

#define EXIT_FAIL 1
#define EXIT_USAGE 2

/* Settings shared by every command. */
typedef struct ctl {
    const char *server;
    int timeout_ms;
    const char *cmd; /* command name, for messages */
} ctl;

/* One command: name, synopsis, description, handler. */
typedef struct command {
    const char *name;
    const char *synopsis;
    const char *help;
    int (*run)(ctl *g, const struct command *self, int argc, char **argv);
} command;

/* ---- messages ------------------------------------------------------------------------------- */

/* Print "emactl: CMD: message" (without a newline) to stderr. */
static void
vprefixed(const ctl *g, const char *fmt, va_list ap)
{
    fprintf(stderr, "emactl: ");
    if (g->cmd != NULL)
        fprintf(stderr, "%s: ", g->cmd);
    vfprintf(stderr, fmt, ap);
}

/* Print "emactl: CMD: message" to stderr. */
__attribute__((format(printf, 2, 3))) static void
errorf(const ctl *g, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vprefixed(g, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* Report a usage error with a hint and return EXIT_USAGE. */
__attribute__((format(printf, 2, 3))) static int
usage_error(const ctl *g, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vprefixed(g, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'emactl %s%s--help'.\n", g->cmd != NULL ? g->cmd : "",
            g->cmd != NULL ? " " : "");
    return EXIT_USAGE;
}

/* Report a failed libemad call on c (NULL: no client) and return EXIT_FAIL. */
static int
fail_rc(const ctl *g, const emad_client *c, int rc)
{
    const char *name = emad_errname(rc);
    const char *msg = c != NULL ? emad_last_error(c) : "";

    if (msg[0] == '\0')
        msg = emad_strerror(rc);
    if (name != NULL)
        errorf(g, "%s (%s)", msg, name);
    else
        errorf(g, "%s", msg);
    return EXIT_FAIL;
}

/* Report a file error: the cause names the path, or is prefixed with it. */
static int
fail_file(const ctl *g, const char *path, int rc, const char *cause)
{
    size_t plen = strlen(path);
    const char *name = emad_errname(rc);
    char suffix[64] = "";

    if (cause == NULL)
        cause = emad_strerror(rc);
    if (name != NULL)
        (void)snprintf(suffix, sizeof(suffix), " (%s)", name);
    if (strncmp(cause, path, plen) == 0 && cause[plen] == ':')
        errorf(g, "%s%s", cause, suffix);
    else
        errorf(g, "%s: %s%s", path, cause, suffix);
    return EXIT_FAIL;
}

/* Print a command's usage to f. */
static void
command_usage(FILE *f, const command *c)
{
    fprintf(f, "usage: emactl [--server URL] [--timeout MS] %s\n\n%s", c->synopsis, c->help);
}

/* ---- argument parsing ----------------------------------------------------------------------- */

/* Parse a decimal uint64 with full checks (no sign, no spaces, no overflow); 0 or -1. */
static int
parse_u64(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;

    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = (uint64_t)v;
    return 0;
}

/* Parse a decay: a finite decimal number in [0, 1]; 0 or -1. */
static int
parse_decay(const char *s, double *out)
{
    char *end;
    double v;

    if (s == NULL || *s == '\0' || *s == ' ')
        return -1;
    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !isfinite(v) || v < 0.0 || v > 1.0)
        return -1;
    *out = v + 0.0; /* -0 is 0 */
    return 0;
}

/* Parse a timeout in milliseconds: 1..INT_MAX; 0 or -1. */
static int
parse_timeout(const char *s, int *out)
{
    uint64_t v;

    if (parse_u64(s, &v) != 0 || v == 0 || v > INT_MAX)
        return -1;
    *out = (int)v;
    return 0;
}

/*
 * Command-line cursor: options (--name VALUE or --name=VALUE) and
 * positional arguments in any order; "--" ends the options.
 */
typedef struct args {
    int argc, i;
    char **argv;
    int no_more_options;
} args;

/*
 * Next argument. Returns 1 with *opt set for an option (its name without
 * the value), 2 with *pos set for a positional, 0 at the end.
 */
static int
args_next(args *a, const char **opt, const char **pos)
{
    while (a->i < a->argc) {
        const char *s = a->argv[a->i++];

        if (!a->no_more_options && strcmp(s, "--") == 0) {
            a->no_more_options = 1;
            continue;
        }
        if (!a->no_more_options && s[0] == '-' && s[1] != '\0') {
            *opt = s;
            return 1;
        }
        *pos = s;
        return 2;
    }
    return 0;
}

/* 1 if option s is --name or --name=VALUE. */
static int
opt_is(const char *s, const char *name)
{
    size_t n = strlen(name);

    return strncmp(s, name, n) == 0 && (s[n] == '\0' || s[n] == '=');
}

/* The value of option s (after '=' or the next argument), or NULL if missing. */
static const char *
opt_value(args *a, const char *s)
{
    const char *eq = strchr(s, '=');

    if (eq != NULL)
        return eq + 1;
    if (a->i >= a->argc)
        return NULL;
    return a->argv[a->i++];
}

/* 1 if option s is a flag given a value (--flag=x), which is an error. */
static int
flag_has_value(const char *s)
{
    return strchr(s, '=') != NULL;
}

/*
 * Handle an option every command accepts (--server, --timeout, --help).
 * Returns 1 if handled, 0 if opt is not one of them, or -1 when the command
 * must exit now with *status (after --help, or a usage error).
 */
static int
common_option(ctl *g, args *a, const char *opt, const command *self, int *status)
{
    const char *v;

    if (strcmp(opt, "--help") == 0 || strcmp(opt, "-h") == 0) {
        command_usage(stdout, self);
        *status = EXIT_SUCCESS;
        return -1;
    }
    if (opt_is(opt, "--server")) {
        if ((v = opt_value(a, opt)) == NULL || *v == '\0') {
            *status = usage_error(g, "--server needs a URL");
            return -1;
        }
        g->server = v;
        return 1;
    }
    if (opt_is(opt, "--timeout")) {
        if (parse_timeout(v = opt_value(a, opt), &g->timeout_ms) != 0) {
            *status = usage_error(g, "--timeout needs a whole number of milliseconds, not '%s'",
                                  v != NULL ? v : "");
            return -1;
        }
        return 1;
    }
    return 0;
}

/* Connect to the daemon; prints the error and returns NULL on failure. */
static emad_client *
connect_or_fail(const ctl *g)
{
    emad_options o;
    emad_client *c = NULL;
    int rc;

    emad_options_init(&o);
    o.timeout_ms = g->timeout_ms;
    if (o.connect_timeout_ms > g->timeout_ms)
        o.connect_timeout_ms = g->timeout_ms;
    if ((rc = emad_connect(&c, g->server, &o)) != 0) {
        const char *name = emad_errname(rc);
        errorf(g, "cannot talk to emad at %s: %s%s%s%s", g->server, emad_strerror(rc),
               name != NULL ? " (" : "", name != NULL ? name : "", name != NULL ? ")" : "");
        return NULL;
    }
    return c;
}

/* Print a decay with the fewest digits that read back as the same double. */
static const char *
fmt_decay(char *buf, size_t size, double d)
{
    return emaconf_fmt_double(buf, size, d);
}

/* Parse a finite number > 0 (strictly) or >= 0; 0 or -1. */
static int
parse_number(const char *s, double *out, int positive)
{
    char *end;
    double v;

    if (s == NULL || *s == '\0' || *s == ' ')
        return -1;
    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !isfinite(v) || v < 0.0 || (positive && v == 0.0))
        return -1;
    *out = v;
    return 0;
}

/* Parse "D[,D2...]" into cfg->decays; 0 or -1. */
static int
parse_decays(const char *s, emad_model_config *cfg)
{
    char buf[512], *p, *save = NULL;
    size_t n = 0;

    if (s == NULL || strlen(s) >= sizeof(buf) || *s == '\0' || s[strlen(s) - 1] == ',')
        return -1;
    strcpy(buf, s);
    for (p = strtok_r(buf, ",", &save); p != NULL; p = strtok_r(NULL, ",", &save)) {
        if (n == EMAD_MAX_DECAYS || parse_decay(p, &cfg->decays[n]) != 0)
            return -1;
        n++;
    }
    if (n == 0 || strstr(s, ",,") != NULL || s[0] == ',')
        return -1;
    cfg->ndecays = n;
    return 0;
}

/*
 * Handle an EMA configuration option of create and configure. Returns 1
 * if handled (applied to cfg), 0 if opt is not one, -1 after a usage
 * error (*status set).
 */
static int
config_option(ctl *g, args *a, const char *opt, emad_model_config *cfg, int *status)
{
    static const struct {
        const char *flag, *option;
        size_t off;
    } enums[] = {
        {"--schedule", "schedule", offsetof(emad_model_config, schedule)},
        {"--step-gap", "step_gap", offsetof(emad_model_config, step_gap)},
        {"--buffers", "buffers", offsetof(emad_model_config, buffers)},
        {"--nonfinite", "nonfinite", offsetof(emad_model_config, nonfinite)},
    };
    static const char *const choices[] = {"constant, num_updates or warmup", "ignore or compensate",
                                          "copy or average", "reject, skip or allow"};
    const char *v;
    uint64_t u;

    for (size_t i = 0; i < sizeof(enums) / sizeof(enums[0]); i++) {
        if (!opt_is(opt, enums[i].flag))
            continue;
        v = opt_value(a, opt);
        int e = v != NULL ? emad_option_from_name(enums[i].option, v) : -1;
        if (e < 0) {
            *status = usage_error(g, "%s must be %s, not '%s'", enums[i].flag, choices[i],
                                  v != NULL ? v : "");
            return -1;
        }
        *(int *)((char *)cfg + enums[i].off) = e;
        return 1;
    }
    if (opt_is(opt, "--decay")) {
        if (parse_decays(v = opt_value(a, opt), cfg) != 0) {
            *status = usage_error(g,
                                  "--decay needs one to %d comma-separated numbers from 0 to 1, "
                                  "not '%s'",
                                  EMAD_MAX_DECAYS, v != NULL ? v : "");
            return -1;
        }
    } else if (opt_is(opt, "--update-after-step")) {
        if (parse_u64(v = opt_value(a, opt), &cfg->update_after_step) != 0) {
            *status = usage_error(g, "--update-after-step needs a whole number, not '%s'",
                                  v != NULL ? v : "");
            return -1;
        }
    } else if (opt_is(opt, "--inv-gamma") || opt_is(opt, "--power")) {
        int gamma = opt_is(opt, "--inv-gamma");
        if (parse_number(v = opt_value(a, opt), gamma ? &cfg->inv_gamma : &cfg->power, 1) != 0) {
            *status = usage_error(g, "%s needs a number > 0, not '%s'",
                                  gamma ? "--inv-gamma" : "--power", v != NULL ? v : "");
            return -1;
        }
    } else if (opt_is(opt, "--min-decay")) {
        if (parse_decay(v = opt_value(a, opt), &cfg->min_decay) != 0) {
            *status = usage_error(g, "--min-decay needs a number from 0 to 1, not '%s'",
                                  v != NULL ? v : "");
            return -1;
        }
    } else if (opt_is(opt, "--writers")) {
        if (parse_u64(v = opt_value(a, opt), &u) != 0 || u < 1 || u > EMAD_MAX_WRITERS) {
            *status = usage_error(g, "--writers needs a whole number from 1 to %d, not '%s'",
                                  EMAD_MAX_WRITERS, v != NULL ? v : "");
            return -1;
        }
        cfg->writers = (uint32_t)u;
    } else if (opt_is(opt, "--copy") || opt_is(opt, "--ignore")) {
        int copy = opt_is(opt, "--copy");
        size_t *n = copy ? &cfg->ncopy : &cfg->nignore;
        const char **p = copy ? cfg->copy : cfg->ignore;
        v = opt_value(a, opt);
        if (v == NULL || *v == '\0' || strlen(v) > EMAD_MAX_GLOB_BYTES) {
            *status = usage_error(g, "%s needs a pattern of 1 to %d bytes",
                                  copy ? "--copy" : "--ignore", EMAD_MAX_GLOB_BYTES);
            return -1;
        }
        if (*n == EMAD_MAX_GLOBS) {
            *status = usage_error(g, "at most %d %s patterns", EMAD_MAX_GLOBS,
                                  copy ? "--copy" : "--ignore");
            return -1;
        }
        p[(*n)++] = v;
    } else {
        return 0;
    }
    return 1;
}

/* Print a configuration as "decays 0.999,0.9999, schedule warmup, ..." lines. */
static void
print_config(const emad_model_config *cfg)
{
    char dbuf[32];

    printf("  decays:            ");
    for (size_t i = 0; i < cfg->ndecays; i++)
        printf("%s%s", i ? "," : "", fmt_decay(dbuf, sizeof(dbuf), cfg->decays[i]));
    printf("\n  schedule:          %s\n", emad_schedule_name(cfg->schedule));
    printf("  update_after_step: %" PRIu64 "\n", cfg->update_after_step);
    printf("  inv_gamma:         %s\n", fmt_decay(dbuf, sizeof(dbuf), cfg->inv_gamma));
    printf("  power:             %s\n", fmt_decay(dbuf, sizeof(dbuf), cfg->power));
    printf("  min_decay:         %s\n", fmt_decay(dbuf, sizeof(dbuf), cfg->min_decay));
    printf("  step_gap:          %s\n", emad_step_gap_name(cfg->step_gap));
    printf("  buffers:           %s\n", emad_buffers_name(cfg->buffers));
    printf("  nonfinite:         %s\n", emad_nonfinite_name(cfg->nonfinite));
    printf("  writers:           %u\n", cfg->writers);
    printf("  copy:              ");
    for (size_t i = 0; i < cfg->ncopy; i++)
        printf("%s%s", i ? " " : "", cfg->copy[i]);
    printf("%s\n  ignore:            ", cfg->ncopy ? "" : "-");
    for (size_t i = 0; i < cfg->nignore; i++)
        printf("%s%s", i ? " " : "", cfg->ignore[i]);
    printf("%s\n", cfg->nignore ? "" : "-");
}

/* ---- commands ------------------------------------------------------------------------------- */

/* create MODEL [EMA options] [--exist-ok] */
static int
cmd_create(ctl *g, const command *self, int argc, char **argv)
{
    args a = {argc, 0, argv, 0};
    const char *opt = NULL, *pos = NULL, *model = NULL;
    emad_model_config cfg;
    int exist_ok = 0, k, r, rc, status = EXIT_SUCCESS;
    emad_client *c;
    char dbuf[32];

    emad_config_init(&cfg);
    while ((k = args_next(&a, &opt, &pos)) != 0) {
        if (k == 2) {
            if (model != NULL)
                return usage_error(g, "unexpected argument '%s'", pos);
            model = pos;
        } else if ((r = common_option(g, &a, opt, self, &status)) != 0 ||
                   (r = config_option(g, &a, opt, &cfg, &status)) != 0) {
            if (r < 0)
                return status;
        } else if (opt_is(opt, "--exist-ok")) {
            if (flag_has_value(opt))
                return usage_error(g, "--exist-ok takes no value");
            exist_ok = 1;
        } else {
            return usage_error(g, "unknown option '%s'", opt);
        }
    }
    if (model == NULL)
        return usage_error(g, "missing MODEL");
    if ((c = connect_or_fail(g)) == NULL)
        return EXIT_FAIL;
    if ((rc = emad_create_config(c, model, &cfg, exist_ok)) != 0) {
        r = fail_rc(g, c, rc);
        emad_close(c);
        return r;
    }
    printf("model %s ready (decay %s", model, fmt_decay(dbuf, sizeof(dbuf), cfg.decays[0]));
    for (size_t i = 1; i < cfg.ndecays; i++)
        printf(",%s", fmt_decay(dbuf, sizeof(dbuf), cfg.decays[i]));
    printf(", schedule %s)\n", emad_schedule_name(cfg.schedule));
    emad_close(c);
    return EXIT_SUCCESS;
}

/* configure MODEL [EMA options] */
static int
cmd_configure(ctl *g, const command *self, int argc, char **argv)
{
    args a = {argc, 0, argv, 0};
    const char *opt = NULL, *pos = NULL, *model = NULL;
    emad_model_config cfg, scratch;
    int k, r, rc, status = EXIT_SUCCESS, nopts = 0;
    emad_client *c;

    /* First pass: check the command line; the second applies it to the current configuration. */
    emad_config_init(&scratch);
    while ((k = args_next(&a, &opt, &pos)) != 0) {
        if (k == 2) {
            if (model != NULL)
                return usage_error(g, "unexpected argument '%s'", pos);
            model = pos;
        } else if ((r = common_option(g, &a, opt, self, &status)) != 0) {
            if (r < 0)
                return status;
        } else if ((r = config_option(g, &a, opt, &scratch, &status)) != 0) {
            if (r < 0)
                return status;
            nopts++;
        } else {
            return usage_error(g, "unknown option '%s'", opt);
        }
    }
    if (model == NULL)
        return usage_error(g, "missing MODEL");
    if ((c = connect_or_fail(g)) == NULL)
        return EXIT_FAIL;
    if ((rc = emad_get_config(c, model, &cfg)) != 0) {
        r = fail_rc(g, c, rc);
        emad_close(c);
        return r;
    }
    scratch = cfg;
    a = (args){argc, 0, argv, 0};
    while ((k = args_next(&a, &opt, &pos)) != 0)
        if (k == 1 && common_option(g, &a, opt, self, &status) == 0)
            (void)config_option(g, &a, opt, &scratch, &status);
    rc = nopts > 0 ? emad_configure(c, model, &scratch) : 0;
    if (rc != 0) {
        r = fail_rc(g, c, rc);
    } else {
        printf("model %s%s:\n", model, nopts > 0 ? " configured" : "");
        print_config(&scratch);
        r = EXIT_SUCCESS;
    }
    emad_config_free(&cfg);
    emad_close(c);
    return r;
}

/* Append the tensors of file f as kind to t[*n] (t has room for them). */
static void
add_tensors(emad_tensor *t, size_t *n, const st_file *f, int kind)
{
    for (size_t i = 0; i < f->ntensors; i++) {
        const st_tensor *s = &f->tensors[i];
        emad_tensor *e = &t[(*n)++];

        memset(e, 0, sizeof(*e));
        e->name = s->name;
        e->kind = kind;
        e->dtype = s->dtype;
        e->ndim = s->ndim;
        memcpy(e->shape, s->shape, sizeof(e->shape));
        e->data = (void *)s->data; /* libemad only reads it */
        e->nbytes = s->nbytes;
    }
}

/* Parse "K/N" with 0 <= K < N <= EMAD_MAX_WRITERS; 0 or -1. */
static int
parse_shard(const char *s, uint64_t *k, uint64_t *n)
{
    char buf[64], *slash;

    if (s == NULL || strlen(s) >= sizeof(buf))
        return -1;
    strcpy(buf, s);
    if ((slash = strchr(buf, '/')) == NULL)
        return -1;
    *slash = '\0';
    if (parse_u64(buf, k) != 0 || parse_u64(slash + 1, n) != 0 || *n == 0 ||
        *n > EMAD_MAX_WRITERS || *k >= *n)
        return -1;
    return 0;
}

/*
 * Keep the K-th of N equal flat slices of each tensor: elements
 * [K * numel / N, (K + 1) * numel / N). Tensors whose slice is empty are
 * left out. Returns the number kept (compacted at the front of t).
 */
static size_t
shard_tensors(emad_tensor *t, size_t n, uint64_t k, uint64_t parts)
{
    size_t kept = 0;

    for (size_t i = 0; i < n; i++) {
        uint64_t numel = 1, isz = emad_dtype_size(t[i].dtype), lo, hi;

        for (uint32_t d = 0; d < t[i].ndim; d++)
            numel *= t[i].shape[d];
        /* numel < 2^62 and parts <= 1024: the products cannot overflow in 128 bits. */
        lo = (uint64_t)((unsigned __int128)numel * k / parts);
        hi = (uint64_t)((unsigned __int128)numel * (k + 1) / parts);
        if (hi == lo)
            continue;
        t[kept] = t[i];
        t[kept].offset = lo;
        t[kept].count = hi - lo;
        t[kept].data = (char *)t[i].data + lo * isz;
        t[kept].nbytes = (hi - lo) * isz;
        kept++;
    }
    return kept;
}

/* push MODEL PARAMS.safetensors --step N [--buffers BUFFERS.safetensors] [--shard K/N] */
static int
cmd_push(ctl *g, const command *self, int argc, char **argv)
{
    args a = {argc, 0, argv, 0};
    const char *opt = NULL, *pos = NULL, *model = NULL, *params = NULL, *buffers = NULL, *v;
    st_file *pf = NULL, *bf = NULL;
    emad_tensor *t = NULL;
    emad_client *c = NULL;
    emad_push_result res;
    uint64_t step = 0, shard_k = 0, shard_n = 0;
    int have_step = 0, k, r, rc, status = EXIT_FAIL;
    char *cause = NULL;
    size_t n = 0;

    while ((k = args_next(&a, &opt, &pos)) != 0) {
        if (k == 2) {
            if (model == NULL)
                model = pos;
            else if (params == NULL)
                params = pos;
            else
                return usage_error(g, "unexpected argument '%s'", pos);
        } else if ((r = common_option(g, &a, opt, self, &status)) != 0) {
            if (r < 0)
                return status;
        } else if (opt_is(opt, "--step")) {
            if (parse_u64(v = opt_value(&a, opt), &step) != 0)
                return usage_error(g, "--step needs a whole number from 0 to %" PRIu64 ", not '%s'",
                                   UINT64_MAX, v != NULL ? v : "");
            have_step = 1;
        } else if (opt_is(opt, "--buffers")) {
            if ((buffers = opt_value(&a, opt)) == NULL || *buffers == '\0')
                return usage_error(g, "--buffers needs a file");
        } else if (opt_is(opt, "--shard")) {
            if (parse_shard(v = opt_value(&a, opt), &shard_k, &shard_n) != 0)
                return usage_error(g, "--shard needs K/N with 0 <= K < N <= %d, not '%s'",
                                   EMAD_MAX_WRITERS, v != NULL ? v : "");
        } else {
            return usage_error(g, "unknown option '%s'", opt);
        }
    }
    if (model == NULL || params == NULL)
        return usage_error(g, "missing %s", model == NULL ? "MODEL" : "PARAMS.safetensors");
    if (!have_step)
        return usage_error(g, "missing --step N");

    /* Files first: a bad file is reported before anything is sent. */
    if ((rc = st_read(&pf, params, &cause)) != 0) {
        status = fail_file(g, params, rc, cause);
        goto out;
    }
    if (buffers != NULL && (rc = st_read(&bf, buffers, &cause)) != 0) {
        status = fail_file(g, buffers, rc, cause);
        goto out;
    }
    n = pf->ntensors + (bf != NULL ? bf->ntensors : 0);
    if (n == 0) {
        errorf(g, "%s%s%s holds no tensors: nothing to push", params,
               buffers != NULL ? " and " : "", buffers != NULL ? buffers : "");
        goto out;
    }
    if ((t = calloc(n, sizeof(*t))) == NULL) {
        errorf(g, "out of memory");
        goto out;
    }
    n = 0;
    add_tensors(t, &n, pf, EMAD_PARAM);
    if (bf != NULL)
        add_tensors(t, &n, bf, EMAD_BUFFER);
    if (shard_n > 0)
        n = shard_tensors(t, n, shard_k, shard_n);
    if ((c = connect_or_fail(g)) == NULL)
        goto out;
    if (shard_n > 0) {
        emad_model_config cfg;
        if ((rc = emad_get_config(c, model, &cfg)) != 0) {
            status = fail_rc(g, c, rc);
            goto out;
        }
        emad_config_free(&cfg);
        if (cfg.writers != shard_n) {
            errorf(g, "--shard %" PRIu64 "/%" PRIu64 ": model %s has %u writer%s, not %" PRIu64,
                   shard_k, shard_n, model, cfg.writers, cfg.writers == 1 ? "" : "s", shard_n);
            goto out;
        }
    }
    rc = shard_n > 0 ? emad_push_as(c, model, step, (uint32_t)shard_k, t, n, &res)
                     : emad_push(c, model, step, t, n, &res);
    if (rc != 0) {
        status = fail_rc(g, c, rc);
        goto out;
    }
    printf("pushed %s step %" PRIu64 ": %" PRIu64 " applied, %" PRIu64 " stale", model, step,
           res.applied, res.stale);
    if (res.skipped > 0)
        printf(", %" PRIu64 " skipped (NaN/Inf)", res.skipped);
    if (res.ignored > 0)
        printf(", %" PRIu64 " ignored", res.ignored);
    if (res.pending)
        printf(", waiting for other writers");
    printf("; model step %" PRIu64 " (%u message%s)\n", res.step, res.messages,
           res.messages == 1 ? "" : "s");
    status = EXIT_SUCCESS;
out:
    emad_close(c);
    free(t);
    free(cause);
    st_free(pf);
    st_free(bf);
    return status;
}

/* Is a tensor averaged under cfg (the daemon's rule, docs/EMA.md)? */
static int
averaged_under(const emad_model_config *cfg, const emad_tensor *t)
{
    if (t->kind == EMAD_BUFFER &&
        (cfg->buffers != EMAD_BUFFERS_AVERAGE || emad_dtype_size(t->dtype) == 0 ||
         !(t->dtype == EMAD_F16 || t->dtype == EMAD_BF16 || t->dtype == EMAD_F32 ||
           t->dtype == EMAD_F64)))
        return 0;
    return !emaconf_match(cfg->copy, cfg->ncopy, t->name, strlen(t->name));
}

/* export MODEL FILE [--decay D] */
static int
cmd_export(ctl *g, const command *self, int argc, char **argv)
{
    args a = {argc, 0, argv, 0};
    const char *opt = NULL, *pos = NULL, *model = NULL, *path = NULL, *v;
    emad_client *c = NULL;
    emad_model_config cfg;
    emad_model_info info;
    emad_tensor *desc = NULL;
    emad_model *m = NULL;
    emad_pull_options po;
    snap_tensor *st = NULL;
    size_t ndesc = 0, j = 0;
    uint64_t bytes = 0;
    char *cause = NULL, dbuf[32];
    int k, r, rc, status = EXIT_FAIL, have_cfg = 0;
    double decay = -1.0;

    while ((k = args_next(&a, &opt, &pos)) != 0) {
        if (k == 2) {
            if (model == NULL)
                model = pos;
            else if (path == NULL)
                path = pos;
            else
                return usage_error(g, "unexpected argument '%s'", pos);
        } else if ((r = common_option(g, &a, opt, self, &status)) != 0) {
            if (r < 0)
                return status;
        } else if (opt_is(opt, "--decay")) {
            if (parse_decay(v = opt_value(&a, opt), &decay) != 0)
                return usage_error(g, "--decay needs one of the model's decays, not '%s'",
                                   v != NULL ? v : "");
        } else {
            return usage_error(g, "unknown option '%s'", opt);
        }
    }
    if (model == NULL || path == NULL)
        return usage_error(g, "missing %s", model == NULL ? "MODEL" : "FILE");
    if ((c = connect_or_fail(g)) == NULL)
        return EXIT_FAIL;
    if ((rc = emad_get_config(c, model, &cfg)) != 0) {
        status = fail_rc(g, c, rc);
        goto out;
    }
    have_cfg = 1;
    if (decay >= 0.0) {
        for (j = 0; j < cfg.ndecays && cfg.decays[j] != decay; j++)
            ;
        if (j == cfg.ndecays) {
            errorf(g, "model %s has no decay %s", model, fmt_decay(dbuf, sizeof(dbuf), decay));
            goto out;
        }
    }
    if ((rc = emad_describe(c, model, &info, &desc, &ndesc)) != 0) {
        status = fail_rc(g, c, rc);
        goto out;
    }
    emad_pull_options_init(&po);
    po.decay = cfg.decays[j];
    po.dtype = EMAD_PULL_SHADOW;
    if ((rc = emad_pull_ex(c, model, NULL, 0, &po, &m)) != 0) {
        status = fail_rc(g, c, rc);
        goto out;
    }
    if ((st = calloc(m->ntensors ? m->ntensors : 1, sizeof(*st))) == NULL) {
        errorf(g, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < m->ntensors; i++) {
        const emad_tensor *t = &m->tensors[i], *d = NULL;
        for (size_t q = 0; q < ndesc && d == NULL; q++)
            if (strcmp(desc[q].name, t->name) == 0)
                d = &desc[q];
        if (d == NULL) {
            errorf(g, "model %s changed while exporting (new tensor '%s'): try again", model,
                   t->name);
            goto out;
        }
        st[i] = (snap_tensor){.name = t->name,
                              .kind = t->kind,
                              .dtype = d->dtype,
                              .sdtype = t->dtype,
                              .averaged = t->dtype != d->dtype || averaged_under(&cfg, d),
                              .ndim = t->ndim,
                              .step = t->step,
                              .data = t->data,
                              .nbytes = t->nbytes};
        memcpy(st[i].shape, t->shape, sizeof(st[i].shape));
    }
    snap_meta meta = {model, m->step, j, &cfg};
    if ((rc = snap_write_path(path, &meta, st, m->ntensors, &bytes, &cause)) != 0) {
        status = fail_file(g, path, rc, cause);
        goto out;
    }
    printf("exported %s step %" PRIu64 " (decay %s): %zu tensor%s, %" PRIu64 " bytes -> %s\n",
           model, m->step, fmt_decay(dbuf, sizeof(dbuf), cfg.decays[j]), m->ntensors,
           m->ntensors == 1 ? "" : "s", bytes, path);
    status = EXIT_SUCCESS;
out:
    free(cause);
    free(st);
    emad_model_free(m);
    emad_tensors_free(desc, ndesc);
    if (have_cfg)
        emad_config_free(&cfg);
    emad_close(c);
    return status;
}

/* import MODEL FILE [--step N] [--buffers BUFFERS.safetensors] */
static int
cmd_import(ctl *g, const command *self, int argc, char **argv)
{
    args a = {argc, 0, argv, 0};
    const char *opt = NULL, *pos = NULL, *model = NULL, *path = NULL, *buffers = NULL, *v;
    emad_client *c = NULL;
    snap_file *sf = NULL;
    st_file *pf = NULL, *bf = NULL;
    emad_tensor *t = NULL;
    int *as = NULL;
    emad_push_result res;
    uint64_t step = 0;
    size_t n = 0;
    char *cause = NULL;
    const char *ms;
    int k, r, rc, status = EXIT_FAIL, have_step = 0;

    while ((k = args_next(&a, &opt, &pos)) != 0) {
        if (k == 2) {
            if (model == NULL)
                model = pos;
            else if (path == NULL)
                path = pos;
            else
                return usage_error(g, "unexpected argument '%s'", pos);
        } else if ((r = common_option(g, &a, opt, self, &status)) != 0) {
            if (r < 0)
                return status;
        } else if (opt_is(opt, "--step")) {
            if (parse_u64(v = opt_value(&a, opt), &step) != 0)
                return usage_error(g, "--step needs a whole number, not '%s'", v != NULL ? v : "");
            have_step = 1;
        } else if (opt_is(opt, "--buffers")) {
            if ((buffers = opt_value(&a, opt)) == NULL || *buffers == '\0')
                return usage_error(g, "--buffers needs a file");
        } else {
            return usage_error(g, "unknown option '%s'", opt);
        }
    }
    if (model == NULL || path == NULL)
        return usage_error(g, "missing %s", model == NULL ? "MODEL" : "FILE");
    /* An emad snapshot (exact shadows, kinds, configuration) or a plain safetensors state dict. */
    if ((rc = st_read(&pf, path, &cause)) != 0) {
        status = fail_file(g, path, rc, cause);
        goto out;
    }
    if (st_meta_get(pf, "emad_checksum") != NULL) {
        if (buffers != NULL) {
            status = usage_error(g, "--buffers is only for plain safetensors files");
            goto out;
        }
        if ((rc = snap_read(path, &sf, &cause)) != 0) {
            status = fail_file(g, path, rc, cause);
            goto out;
        }
        if (!have_step)
            step = sf->step;
        n = sf->ntensors;
    } else {
        if (buffers != NULL && (rc = st_read(&bf, buffers, &cause)) != 0) {
            status = fail_file(g, buffers, rc, cause);
            goto out;
        }
        if (!have_step && ((ms = st_meta_get(pf, "step")) == NULL || parse_u64(ms, &step) != 0)) {
            status = usage_error(g, "%s has no step in its metadata: give --step N", path);
            goto out;
        }
        n = pf->ntensors + (bf != NULL ? bf->ntensors : 0);
    }
    if (n == 0) {
        errorf(g, "%s holds no tensors: nothing to import", path);
        goto out;
    }
    if ((t = calloc(n, sizeof(*t))) == NULL || (as = calloc(n, sizeof(*as))) == NULL) {
        errorf(g, "out of memory");
        goto out;
    }
    if (sf != NULL) {
        for (size_t i = 0; i < n; i++) {
            const snap_tensor *s = &sf->tensors[i];
            t[i] = (emad_tensor){.name = s->name,
                                 .kind = s->kind,
                                 .dtype = s->sdtype,
                                 .ndim = s->ndim,
                                 .data = (void *)s->data,
                                 .nbytes = s->nbytes};
            memcpy(t[i].shape, s->shape, sizeof(t[i].shape));
            as[i] = s->sdtype != s->dtype ? s->dtype : EMAD_DTYPE_INVALID;
        }
    }
    if ((c = connect_or_fail(g)) == NULL)
        goto out;
    if (sf == NULL) {
        /* Kinds: as the model stores them; new tensors float -> param, else buffer. */
        emad_model_info info;
        emad_tensor *desc = NULL;
        size_t ndesc = 0;

        if ((rc = emad_describe(c, model, &info, &desc, &ndesc)) != 0) {
            status = fail_rc(g, c, rc);
            goto out;
        }
        n = 0;
        add_tensors(t, &n, pf, EMAD_PARAM);
        for (size_t i = 0; i < n; i++) {
            int kind = t[i].dtype == EMAD_F16 || t[i].dtype == EMAD_BF16 ||
                               t[i].dtype == EMAD_F32 || t[i].dtype == EMAD_F64
                           ? EMAD_PARAM
                           : EMAD_BUFFER;
            for (size_t q = 0; q < ndesc; q++)
                if (strcmp(desc[q].name, t[i].name) == 0)
                    kind = desc[q].kind;
            t[i].kind = kind;
        }
        emad_tensors_free(desc, ndesc);
        if (bf != NULL)
            add_tensors(t, &n, bf, EMAD_BUFFER);
    }
    if (sf != NULL && (rc = emad_create_config(c, model, &sf->cfg, 1)) != 0 && rc != EMAD_EEXIST) {
        status = fail_rc(g, c, rc);
        goto out;
    }
    if ((rc = emad_seed(c, model, step, t, as, n, &res)) != 0) {
        status = fail_rc(g, c, rc);
        goto out;
    }
    printf("imported %s into %s at step %" PRIu64 ": %" PRIu64 " tensors seeded", path, model, step,
           res.applied);
    if (res.ignored > 0)
        printf(", %" PRIu64 " ignored", res.ignored);
    printf("; model step %" PRIu64 "\n", res.step);
    status = EXIT_SUCCESS;
out:
    emad_close(c);
    free(t);
    free(as);
    free(cause);
    snap_file_free(sf);
    st_free(pf);
    st_free(bf);
    return status;
}

/* Split a comma-separated list into a malloc'd array of pointers into s (modified). */
static int
split_names(char *s, char ***out, size_t *n)
{
    size_t count = 1, k = 0;
    char **v;

    for (const char *p = s; *p != '\0'; p++)
        count += *p == ',';
    if ((v = calloc(count, sizeof(*v))) == NULL)
        return -1;
    for (char *p = s;; p++) {
        char *comma = strchr(p, ',');
        if (comma != NULL)
            *comma = '\0';
        if (*p == '\0') {
            free(v);
            return -1;
        }
        v[k++] = p;
        if (comma == NULL)
            break;
        p = comma;
    }
    *out = v;
    *n = k;
    return 0;
}

/* pull MODEL OUT.safetensors [--tensors A,B,...] */
static int
cmd_pull(ctl *g, const command *self, int argc, char **argv)
{
    args a = {argc, 0, argv, 0};
    const char *opt = NULL, *pos = NULL, *model = NULL, *path = NULL, *v;
    char *list = NULL, **names = NULL, *cause = NULL, stepbuf[32];
    char k_format[] = "format", v_pt[] = "pt", k_step[] = "step", k_model[] = "model";
    size_t nnames = 0;
    emad_client *c = NULL;
    emad_model *m = NULL;
    st_tensor *st = NULL;
    st_meta meta[3];
    uint64_t total = 0;
    int k, r, rc, status = EXIT_FAIL;
    emad_pull_options po;

    emad_pull_options_init(&po);
    while ((k = args_next(&a, &opt, &pos)) != 0) {
        if (k == 2) {
            if (model == NULL)
                model = pos;
            else if (path == NULL)
                path = pos;
            else {
                status = usage_error(g, "unexpected argument '%s'", pos);
                goto out;
            }
        } else if ((r = common_option(g, &a, opt, self, &status)) != 0) {
            if (r < 0)
                goto out;
        } else if (opt_is(opt, "--decay")) {
            if (parse_decay(v = opt_value(&a, opt), &po.decay) != 0) {
                status = usage_error(g, "--decay needs one of the model's decays, not '%s'",
                                     v != NULL ? v : "");
                goto out;
            }
        } else if (opt_is(opt, "--dtype")) {
            v = opt_value(&a, opt);
            po.dtype = v != NULL ? emad_dtype_from_name(v) : EMAD_DTYPE_INVALID;
            if (po.dtype != EMAD_F32 && po.dtype != EMAD_BF16 && po.dtype != EMAD_F16) {
                status = usage_error(g, "--dtype must be F32, BF16 or F16, not '%s'",
                                     v != NULL ? v : "");
                goto out;
            }
        } else if (opt_is(opt, "--tensors")) {
            if ((v = opt_value(&a, opt)) == NULL) {
                status = usage_error(g, "--tensors needs a comma-separated list of names");
                goto out;
            }
            free(list);
            if ((list = strdup(v)) == NULL) {
                errorf(g, "out of memory");
                goto out;
            }
        } else {
            status = usage_error(g, "unknown option '%s'", opt);
            goto out;
        }
    }
    if (model == NULL || path == NULL) {
        status = usage_error(g, "missing %s", model == NULL ? "MODEL" : "OUT.safetensors");
        goto out;
    }
    if (list != NULL && split_names(list, &names, &nnames) != 0) {
        status =
            usage_error(g, "--tensors needs a comma-separated list of names, without empty ones");
        goto out;
    }
    if ((c = connect_or_fail(g)) == NULL)
        goto out;
    if ((rc = emad_pull_ex(c, model, (const char *const *)names, nnames, &po, &m)) != 0) {
        status = fail_rc(g, c, rc);
        goto out;
    }
    if ((st = calloc(m->ntensors ? m->ntensors : 1, sizeof(*st))) == NULL) {
        errorf(g, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < m->ntensors; i++) {
        const emad_tensor *t = &m->tensors[i];
        st[i].name = (char *)t->name;
        st[i].dtype = t->dtype;
        st[i].ndim = t->ndim;
        memcpy(st[i].shape, t->shape, sizeof(st[i].shape));
        st[i].data = t->data;
        st[i].nbytes = t->nbytes;
        total += t->nbytes;
    }
    (void)snprintf(stepbuf, sizeof(stepbuf), "%" PRIu64, m->step);
    meta[0] = (st_meta){k_format, v_pt};
    meta[1] = (st_meta){k_step, stepbuf};
    meta[2] = (st_meta){k_model, m->name};
    if ((rc = st_write(path, st, m->ntensors, meta, 3, &cause)) != 0) {
        status = fail_file(g, path, rc, cause);
        goto out;
    }
    printf("pulled %s step %" PRIu64 ": %zu tensor%s, %" PRIu64 " bytes -> %s\n", model, m->step,
           m->ntensors, m->ntensors == 1 ? "" : "s", total, path);
    status = EXIT_SUCCESS;
out:
    free(st);
    free(cause);
    emad_model_free(m);
    emad_close(c);
    free(names);
    free(list);
    return status;
}

/* Print the table of models. */
static int
list_models(ctl *g, emad_client *c)
{
    emad_model_info *info = NULL;
    size_t n = 0;
    int w = 5, rc;
    char dbuf[32];

    if ((rc = emad_list(c, &info, &n)) != 0)
        return fail_rc(g, c, rc);
    for (size_t i = 0; i < n; i++)
        if ((int)strlen(info[i].name) > w)
            w = (int)strlen(info[i].name);
    printf("%-*s  %-10s  %12s  %8s  %14s\n", w, "MODEL", "DECAY", "STEP", "TENSORS", "BYTES");
    for (size_t i = 0; i < n; i++)
        printf("%-*s  %-10s  %12" PRIu64 "  %8" PRIu64 "  %14" PRIu64 "\n", w, info[i].name,
               fmt_decay(dbuf, sizeof(dbuf), info[i].decay), info[i].step, info[i].ntensors,
               info[i].shadow_bytes);
    free(info);
    return EXIT_SUCCESS;
}

/* Print one model's summary and tensor table. */
static int
list_tensors(ctl *g, emad_client *c, const char *model)
{
    emad_model_info info;
    emad_tensor *t = NULL;
    size_t n = 0;
    int w = 6, ws = 5, rc;
    char dbuf[32], sbuf[EMAD_MAX_NDIM * 22 + 4];

    emad_model_config cfg;

    if ((rc = emad_describe(c, model, &info, &t, &n)) != 0)
        return fail_rc(g, c, rc);
    if ((rc = emad_get_config(c, model, &cfg)) != 0) {
        emad_tensors_free(t, n);
        return fail_rc(g, c, rc);
    }
    printf("model %s: decay %s, step %" PRIu64 ", %" PRIu64 " tensors, %" PRIu64 " shadow bytes\n",
           info.name, fmt_decay(dbuf, sizeof(dbuf), info.decay), info.step, info.ntensors,
           info.shadow_bytes);
    print_config(&cfg);
    emad_config_free(&cfg);
    for (size_t i = 0; i < n; i++) {
        if ((int)strlen(t[i].name) > w)
            w = (int)strlen(t[i].name);
        if ((int)strlen(dtype_fmt_shape(sbuf, sizeof(sbuf), t[i].shape, t[i].ndim)) > ws)
            ws = (int)strlen(sbuf);
    }
    printf("%-*s  %-6s  %-5s  %-*s  %12s  %14s\n", w, "TENSOR", "KIND", "DTYPE", ws, "SHAPE",
           "STEP", "BYTES");
    for (size_t i = 0; i < n; i++)
        printf("%-*s  %-6s  %-5s  %-*s  %12" PRIu64 "  %14" PRIu64 "\n", w, t[i].name,
               proto_kind_name(t[i].kind), dtype_name(t[i].dtype), ws,
               dtype_fmt_shape(sbuf, sizeof(sbuf), t[i].shape, t[i].ndim), t[i].step, t[i].nbytes);
    emad_tensors_free(t, n);
    return EXIT_SUCCESS;
}

/*
 * Parse the arguments of a command that takes at most one MODEL and the
 * common options. Returns -1 to go on (*model set or NULL), else the exit
 * status to return now.
 */
static int
model_args(ctl *g, const command *self, int argc, char **argv, const char **model)
{
    args a = {argc, 0, argv, 0};
    const char *opt = NULL, *pos = NULL;
    int k, r, status = EXIT_SUCCESS;

    *model = NULL;
    while ((k = args_next(&a, &opt, &pos)) != 0) {
        if (k == 2) {
            if (*model != NULL)
                return usage_error(g, "unexpected argument '%s'", pos);
            *model = pos;
        } else if ((r = common_option(g, &a, opt, self, &status)) != 0) {
            if (r < 0)
                return status;
        } else {
            return usage_error(g, "unknown option '%s'", opt);
        }
    }
    return -1;
}

/* list [MODEL] */
static int
cmd_list(ctl *g, const command *self, int argc, char **argv)
{
    const char *model;
    emad_client *c;
    int r;

    if ((r = model_args(g, self, argc, argv, &model)) >= 0)
        return r;
    if ((c = connect_or_fail(g)) == NULL)
        return EXIT_FAIL;
    r = model == NULL ? list_models(g, c) : list_tensors(g, c, model);
    emad_close(c);
    return r;
}

/* drop MODEL */
static int
cmd_drop(ctl *g, const command *self, int argc, char **argv)
{
    const char *model;
    emad_client *c;
    int r, rc;

    if ((r = model_args(g, self, argc, argv, &model)) >= 0)
        return r;
    if (model == NULL)
        return usage_error(g, "missing MODEL");
    if ((c = connect_or_fail(g)) == NULL)
        return EXIT_FAIL;
    if ((rc = emad_drop(c, model)) != 0) {
        r = fail_rc(g, c, rc);
        emad_close(c);
        return r;
    }
    printf("dropped %s\n", model);
    emad_close(c);
    return EXIT_SUCCESS;
}

/* snapshot [MODEL] */
static int
cmd_snapshot(ctl *g, const command *self, int argc, char **argv)
{
    const char *model;
    emad_client *c;
    uint64_t step = 0;
    int r, rc;

    if ((r = model_args(g, self, argc, argv, &model)) >= 0)
        return r;
    if ((c = connect_or_fail(g)) == NULL)
        return EXIT_FAIL;
    if ((rc = emad_snapshot(c, model, &step)) != 0) {
        r = fail_rc(g, c, rc);
        emad_close(c);
        return r;
    }
    printf("snapshot of %s durable at step %" PRIu64 "\n", model != NULL ? model : "every model",
           step);
    emad_close(c);
    return EXIT_SUCCESS;
}

/* One sample of the daemon's figures: counters and models. */
typedef struct sample {
    emad_stat *st;
    size_t nst;
    emad_model_info *models;
    size_t nmodels;
    double t; /* seconds, monotonic */
} sample;

static void
sample_free(sample *x)
{
    free(x->st);
    free(x->models);
    memset(x, 0, sizeof(*x));
}

static int
sample_take(const ctl *g, emad_client *c, sample *x)
{
    struct timespec ts;
    int rc;

    memset(x, 0, sizeof(*x));
    if ((rc = emad_stats(c, &x->st, &x->nst)) != 0 ||
        (rc = emad_list(c, &x->models, &x->nmodels)) != 0) {
        sample_free(x);
        return fail_rc(g, c, rc);
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
    static const char *const names[] = {"requests",        "requests_push", "requests_pull",
                                        "tensors_applied", "errors",        "bytes_in",
                                        "bytes_out"};
    double dt = x->t - prev->t;

    printf("\n%-18s %14s %14s\n", "COUNTER", "TOTAL", "PER SECOND");
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        uint64_t a = counter(prev, names[i]), b = counter(x, names[i]);
        printf("%-18s %14" PRIu64 " %14.1f\n", names[i], b, dt > 0 && b >= a ? (b - a) / dt : 0.0);
    }
}

/* stats [--json] */
static int
cmd_stats(ctl *g, const command *self, int argc, char **argv)
{
    args a = {argc, 0, argv, 0};
    const char *opt = NULL, *pos = NULL;
    emad_client *c;
    sample x;
    int k, r, status = EXIT_SUCCESS, json = 0;

    while ((k = args_next(&a, &opt, &pos)) != 0) {
        if (k == 2)
            return usage_error(g, "unexpected argument '%s'", pos);
        if ((r = common_option(g, &a, opt, self, &status)) != 0) {
            if (r < 0)
                return status;
        } else if (opt_is(opt, "--json")) {
            if (flag_has_value(opt))
                return usage_error(g, "--json takes no value");
            json = 1;
        } else {
            return usage_error(g, "unknown option '%s'", opt);
        }
    }
    if ((c = connect_or_fail(g)) == NULL)
        return EXIT_FAIL;
    if ((r = sample_take(g, c, &x)) != 0) {
        emad_close(c);
        return r;
    }
    if (json) {
        /* Counter and model names are [A-Za-z0-9._-]: no JSON escaping needed. */
        printf("{\"counters\": {");
        for (size_t i = 0; i < x.nst; i++)
            printf("%s\"%s\": %" PRIu64, i ? ", " : "", x.st[i].name, x.st[i].value);
        printf("}, \"models\": [");
        for (size_t i = 0; i < x.nmodels; i++) {
            const emad_model_info *m = &x.models[i];
            char d[32];
            printf("%s{\"name\": \"%s\", \"decay\": %s, \"step\": %" PRIu64
                   ", \"tensors\": %" PRIu64 ", \"shadow_bytes\": %" PRIu64
                   ", \"snapshot_step\": %" PRIu64 ", \"last_push_age_ms\": %" PRId64 "}",
                   i ? ", " : "", m->name, fmt_decay(d, sizeof(d), m->decay), m->step, m->ntensors,
                   m->shadow_bytes, m->snapshot_step, m->last_push_age_ms);
        }
        printf("]}\n");
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
cmd_watch(ctl *g, const command *self, int argc, char **argv)
{
    args a = {argc, 0, argv, 0};
    const char *opt = NULL, *pos = NULL, *v;
    emad_client *c;
    sample prev, x;
    uint64_t count = 0;
    double interval = 1.0;
    int k, r, status = EXIT_SUCCESS, tty = isatty(STDOUT_FILENO);

    while ((k = args_next(&a, &opt, &pos)) != 0) {
        if (k == 2)
            return usage_error(g, "unexpected argument '%s'", pos);
        if ((r = common_option(g, &a, opt, self, &status)) != 0) {
            if (r < 0)
                return status;
        } else if (opt_is(opt, "--interval")) {
            if (parse_number(v = opt_value(&a, opt), &interval, 1) != 0 || interval > 3600)
                return usage_error(g, "--interval needs seconds (0 < S <= 3600), not '%s'",
                                   v != NULL ? v : "");
        } else if (opt_is(opt, "--count")) {
            if (parse_u64(v = opt_value(&a, opt), &count) != 0 || count == 0)
                return usage_error(g, "--count needs a whole number > 0, not '%s'",
                                   v != NULL ? v : "");
        } else {
            return usage_error(g, "unknown option '%s'", opt);
        }
    }
    if ((c = connect_or_fail(g)) == NULL)
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

/* The commands, in the order --help lists them. */
static const command commands[] = {
    {"create",
     "create MODEL [--decay D[,D2...]] [--schedule constant|num_updates|warmup]\n"
     "              [--update-after-step N] [--inv-gamma X] [--power P] [--min-decay M]\n"
     "              [--step-gap ignore|compensate] [--buffers copy|average]\n"
     "              [--copy GLOB]... [--ignore GLOB]... [--nonfinite reject|skip|allow]\n"
     "              [--writers N] [--exist-ok]",
     "Create a model (docs/EMA.md has every formula).\n"
     "  --decay D[,D2...]     EMA decays, 0 <= D <= 1, up to 8: one shadow each\n"
     "                        (default 0.999; pulls default to the first)\n"
     "  --schedule S          constant: D; num_updates: min(D, (1+n)/(10+n));\n"
     "                        warmup: 1 - (1 + e/inv_gamma)^-power (default constant)\n"
     "  --update-after-step N pushes at steps <= N copy instead of average (default 0)\n"
     "  --inv-gamma X, --power P, --min-decay M\n"
     "                        warmup parameters (defaults 1, 2/3, 0)\n"
     "  --step-gap G          compensate: a push after a gap of k steps uses the\n"
     "                        product of the k step decays (default ignore)\n"
     "  --buffers B           average floating buffers too (default copy)\n"
     "  --copy GLOB           copy matching tensors instead of averaging them\n"
     "  --ignore GLOB         accept matching tensors without storing them\n"
     "  --nonfinite P         NaN/Inf in an averaged tensor: reject the push,\n"
     "                        skip the tensor, or allow (default reject)\n"
     "  --writers N           a step is visible when N writers pushed it (default 1)\n"
     "With --exist-ok an existing model with the same configuration is not an error.\n",
     cmd_create},
    {"configure",
     "configure MODEL [--decay D[,D2...]] [--schedule S] [--update-after-step N]\n"
     "              [--inv-gamma X] [--power P] [--min-decay M] [--step-gap G] [--nonfinite P]",
     "Change a live model's decays (same number of them) and schedule options; they\n"
     "apply from the next push on. Without options, print the configuration.\n",
     cmd_configure},
    {"push", "push MODEL PARAMS.safetensors --step N [--buffers BUFFERS.safetensors] [--shard K/N]",
     "Push the tensors of PARAMS as parameters (averaged; F32, F16, BF16 or F64)\n"
     "and those of BUFFERS as buffers (copied; any dtype) at training step N\n"
     "(0 <= N < 2^64). Tensors whose stored step is >= N are left alone and\n"
     "counted as stale. The push is applied all at once or not at all.\n"
     "With --shard K/N, push only the K-th of N equal flat slices of every tensor,\n"
     "as writer K of a model created with --writers N.\n",
     cmd_push},
    {"pull", "pull MODEL OUT.safetensors [--tensors A,B,...] [--decay D] [--dtype F32|BF16|F16]",
     "Pull the averaged model (all tensors, or the named ones) into OUT, written\n"
     "atomically, with metadata format=pt, step=the model's step, model=MODEL.\n"
     "--decay picks the shadow of one of the model's decays (default the first).\n"
     "Floating tensors come back in their pushed dtype, or converted to --dtype\n"
     "(rounded to nearest even).\n",
     cmd_pull},
    {"list", "list [MODEL]",
     "Without MODEL: every model with its decay, committed step, number of\n"
     "tensors and shadow bytes. With MODEL: its EMA configuration, then its\n"
     "tensors with kind, dtype, shape, step and size in bytes.\n",
     cmd_list},
    {"drop", "drop MODEL", "Drop a model, all its tensors and its snapshots.\n", cmd_drop},
    {"export", "export MODEL FILE [--decay D]",
     "Write the model's shadows for one decay (default the first) at full precision\n"
     "(float32 shadows of F16/BF16 params) into FILE, a snapshot file in the\n"
     "daemon's format (docs/SNAPSHOTS.md) that PyTorch loads as a state dict.\n",
     cmd_export},
    {"import", "import MODEL FILE [--step N] [--buffers BUFFERS.safetensors]",
     "Seed a model's shadows from FILE: an emad snapshot or export (exact shadows,\n"
     "kinds and configuration; the model is created if missing, at the file's\n"
     "step) or a plain safetensors state dict (the model must exist; tensors keep\n"
     "the kind the model has for them, new ones are params if floating, else\n"
     "buffers, and those of BUFFERS are buffers; at --step N or the file's 'step'\n"
     "metadata). Every shadow of each tensor becomes the file's value.\n",
     cmd_import},
    {"snapshot", "snapshot [MODEL]",
     "Write a snapshot of MODEL (default: every model that changed) into the\n"
     "daemon's --state-dir and return once it is durable on disk. Prints the\n"
     "snapshotted step.\n",
     cmd_snapshot},
    {"stats", "stats [--json]",
     "Print a table of the models (step, seconds since the last push, tensors,\n"
     "shadow bytes, last snapshot step), then the daemon's counters, one 'name\n"
     "value' per line. --json prints the same figures as one JSON object.\n",
     cmd_stats},
    {"watch", "watch [--interval SECONDS] [--count N]",
     "Refresh the model table every SECONDS (default 1) with steps per second, and\n"
     "the main counters with their rates. --count stops after N refreshes.\n",
     cmd_watch},
    {NULL, NULL, NULL, NULL},
};

/* Print the global usage to f. */
static void
usage(FILE *f)
{
    fprintf(f, "usage: emactl [--server URL] [--timeout MS] COMMAND [ARGS]\n"
               "\n"
               "emactl talks to emad, the EMA parameter server: it creates models, pushes\n"
               "parameters and buffers from safetensors files, pulls the averaged model\n"
               "into a safetensors file and shows what the daemon holds.\n"
               "\n"
               "commands:\n");
    for (const command *c = commands; c->name != NULL; c++)
        fprintf(f, "  %s\n", c->synopsis);
    fprintf(f,
            "\n"
            "options:\n"
            "  --server URL   daemon to talk to (default: $EMAD_SERVER if set, else %s)\n"
            "  --timeout MS   time limit for each request, in milliseconds (default 30000)\n"
            "  --version      print the version and exit\n"
            "  --help         print this help and exit; 'emactl COMMAND --help' for a command\n"
            "\n"
            "Exit status: 0 on success, 1 if the operation failed (daemon error, file\n"
            "error, daemon unreachable), 2 on a usage error. Errors are one line on stderr:\n"
            "  emactl: COMMAND: MESSAGE (EMAD_ECODE)\n",
            EMAD_DEFAULT_URL);
}

/* Parse the global options, then run the command. */
int
main(int argc, char **argv)
{
    ctl g = {NULL, 30000, NULL};
    const char *env = getenv("EMAD_SERVER");
    int i = 1;

    g.server = env != NULL && env[0] != '\0' ? env : EMAD_DEFAULT_URL;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *s = argv[i], *v;

        if (strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0) {
            usage(stdout);
            return EXIT_SUCCESS;
        }
        if (strcmp(s, "--version") == 0) {
            printf("emactl %s (libemad %s, protocol %d)\n", PACKAGE_VERSION, emad_version(),
                   EMAD_PROTOCOL_VERSION);
            return EXIT_SUCCESS;
        }
        if (opt_is(s, "--server")) {
            v = strchr(s, '=') != NULL ? strchr(s, '=') + 1 : (i + 1 < argc ? argv[++i] : NULL);
            if (v == NULL || *v == '\0')
                return usage_error(&g, "--server needs a URL");
            g.server = v;
        } else if (opt_is(s, "--timeout")) {
            v = strchr(s, '=') != NULL ? strchr(s, '=') + 1 : (i + 1 < argc ? argv[++i] : NULL);
            if (parse_timeout(v, &g.timeout_ms) != 0)
                return usage_error(&g, "--timeout needs a whole number of milliseconds, not '%s'",
                                   v != NULL ? v : "");
        } else {
            return usage_error(&g, "unknown option '%s'", s);
        }
    }
    if (i >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[i], "help") == 0) {
        for (const command *c = commands; i + 1 < argc && c->name != NULL; c++) {
            if (strcmp(c->name, argv[i + 1]) == 0) {
                command_usage(stdout, c);
                return EXIT_SUCCESS;
            }
        }
        usage(stdout);
        return EXIT_SUCCESS;
    }
    for (const command *c = commands; c->name != NULL; c++) {
        if (strcmp(c->name, argv[i]) == 0) {
            g.cmd = c->name;
            return c->run(&g, c, argc - i - 1, argv + i + 1);
        }
    }
    return usage_error(&g, "unknown command '%s'", argv[i]);
}

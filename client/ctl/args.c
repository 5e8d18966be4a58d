/*
 * args.c - the argument parser of emactl.
 *
 * Every command's command line goes through one loop (args_parse): options
 * (--name VALUE or --name=VALUE) and positional arguments in any order, "--"
 * ending the options. Options are looked up in the common table (--server,
 * --cluster, --timeout; --help is handled by the loop) and then in the tables the
 * command lists; each option spec names the handler that checks its value
 * and stores it in a ctl_args, printing the usage error (exit status 2)
 * when the value is wrong. This file also owns the value parsers (whole
 * numbers, decays, shards) and the table of EMA configuration options that
 * create and configure share.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

/* The field of a that option o fills. */
#define FIELD(a, o) ((char *)(a) + (o)->off)

/* ---- value parsers -------------------------------------------------------------------------- */

/* Parse a decimal uint64 with full checks (no sign, no spaces, no overflow); 0 or -1. */
int
args_parse_u64(const char *s, uint64_t *out)
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

/* Parse a finite decimal number (no leading space); 0 or -1. */
static int
parse_finite(const char *s, double *out)
{
    char *end;
    double v;

    if (s == NULL || *s == '\0' || *s == ' ')
        return -1;
    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

/* Parse a decay: a finite decimal number in [0, 1]; 0 or -1. */
static int
parse_decay(const char *s, double *out)
{
    double v;

    if (parse_finite(s, &v) != 0 || v < 0.0 || v > 1.0)
        return -1;
    *out = v + 0.0; /* -0 is 0 */
    return 0;
}

/* Parse a timeout in milliseconds: 1..INT_MAX; 0 or -1. */
static int
parse_timeout(const char *s, int *out)
{
    uint64_t v;

    if (args_parse_u64(s, &v) != 0 || v == 0 || v > INT_MAX)
        return -1;
    *out = (int)v;
    return 0;
}

/* Parse a finite number > 0; 0 or -1. */
static int
parse_positive(const char *s, double *out)
{
    double v;

    if (parse_finite(s, &v) != 0 || v <= 0.0)
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
    if (args_parse_u64(buf, k) != 0 || args_parse_u64(slash + 1, n) != 0 || *n == 0 ||
        *n > EMAD_MAX_WRITERS || *k >= *n)
        return -1;
    return 0;
}

/* ---- option handlers ------------------------------------------------------------------------ */

/* Report "NAME needs WHAT, not 'VALUE'" and return EXIT_USAGE. */
static int
bad_value(const ctl *g, const ctl_opt *o, const char *v)
{
    return ctl_usage_error(g, "%s needs %s, not '%s'", o->name, o->what, v != NULL ? v : "");
}

/* Report "NAME must be WHAT, not 'VALUE'" and return EXIT_USAGE. */
static int
bad_choice(const ctl *g, const ctl_opt *o, const char *v)
{
    return ctl_usage_error(g, "%s must be %s, not '%s'", o->name, o->what, v != NULL ? v : "");
}

/* --server URL, --user USER, --key-file FILE: a non-empty string into the field o->off of g. */
static int
args_set_global(ctl *g, const ctl_opt *o, const char *v, ctl_args *a)
{
    if (v == NULL || *v == '\0')
        return ctl_usage_error(g, "%s needs %s", o->name, o->what);
    *(const char **)((char *)g + o->off) = v;
    return 0;
}

/* --server URL: the daemon to talk to (and not a cluster, even with $EMAD_CLUSTER set). */
static int
args_set_server(ctl *g, const ctl_opt *o, const char *v, ctl_args *a)
{
    int r = args_set_global(g, o, v, a);

    if (r == 0)
        g->cluster = NULL;
    return r;
}

/* --cluster MAP: the shard map of the cluster to talk to (wins over --server). */
static int
args_set_cluster(ctl *g, const ctl_opt *o, const char *v, ctl_args *a)
{
    if (v == NULL || *v == '\0')
        return ctl_usage_error(g, "%s needs %s", o->name, o->what);
    g->cluster = v;
    return 0;
}

/* --timeout MS: the time limit of each request. */
static int
args_set_timeout(ctl *g, const ctl_opt *o, const char *v, ctl_args *a)
{
    return parse_timeout(v, &g->timeout_ms) != 0 ? bad_value(g, o, v) : 0;
}

/* A flag: sets its int field to 1. */
int
args_set_flag(ctl *g, const ctl_opt *o, const char *v, ctl_args *a)
{
    *(int *)FIELD(a, o) = 1;
    return 0;
}

/* A string of at least o->min bytes (a file, a list). */
int
args_set_string(ctl *g, const ctl_opt *o, const char *v, ctl_args *a)
{
    if (v == NULL || strlen(v) < o->min)
        return ctl_usage_error(g, "%s needs %s", o->name, o->what);
    *(const char **)FIELD(a, o) = v;
    return 0;
}

/* A whole number from o->min to o->max into a uint64_t field. */
int
args_set_u64(ctl *g, const ctl_opt *o, const char *v, ctl_args *a)
{
    uint64_t u;

    if (args_parse_u64(v, &u) != 0 || u < o->min || u > o->max)
        return bad_value(g, o, v);
    *(uint64_t *)FIELD(a, o) = u;
    return 0;
}

/* A whole number from o->min to o->max (<= UINT32_MAX) into a uint32_t field. */
static int
args_set_u32(ctl *g, const ctl_opt *o, const char *v, ctl_args *a)
{
    uint64_t u;

    if (args_parse_u64(v, &u) != 0 || u < o->min || u > o->max)
        return bad_value(g, o, v);
    *(uint32_t *)FIELD(a, o) = (uint32_t)u;
    return 0;
}

/* A finite number > 0, and <= o->max unless that is 0, into a double field. */
int
args_set_number(ctl *g, const ctl_opt *o, const char *v, ctl_args *a)
{
    double *d = (double *)FIELD(a, o);

    if (parse_positive(v, d) != 0 || (o->max != 0 && *d > (double)o->max))
        return bad_value(g, o, v);
    return 0;
}

/* A decay (a number from 0 to 1) into a double field. */
int
args_set_decay(ctl *g, const ctl_opt *o, const char *v, ctl_args *a)
{
    return parse_decay(v, (double *)FIELD(a, o)) != 0 ? bad_value(g, o, v) : 0;
}

/* --decay D[,D2...] of create and configure. */
static int
args_set_decays(ctl *g, const ctl_opt *o, const char *v, ctl_args *a)
{
    return parse_decays(v, &a->cfg) != 0 ? bad_value(g, o, v) : 0;
}

/* An EMA option named by a word (o->key: "schedule", ...) into an int field. */
static int
args_set_enum(ctl *g, const ctl_opt *o, const char *v, ctl_args *a)
{
    int e = v != NULL ? emad_option_from_name(o->key, v) : -1;

    if (e < 0)
        return bad_choice(g, o, v);
    *(int *)FIELD(a, o) = e;
    return 0;
}

/* --copy GLOB or --ignore GLOB: one more pattern of the configuration. */
static int
args_set_glob(ctl *g, const ctl_opt *o, const char *v, ctl_args *a)
{
    const char **p = (const char **)FIELD(a, o);
    size_t *n = p == a->cfg.copy ? &a->cfg.ncopy : &a->cfg.nignore;

    if (v == NULL || *v == '\0' || strlen(v) > EMAD_MAX_GLOB_BYTES)
        return ctl_usage_error(g, "%s needs a pattern of 1 to %d bytes", o->name,
                               EMAD_MAX_GLOB_BYTES);
    if (*n == EMAD_MAX_GLOBS)
        return ctl_usage_error(g, "at most %d %s patterns", EMAD_MAX_GLOBS, o->name);
    p[(*n)++] = v;
    return 0;
}

/* --shard K/N of push. */
int
args_set_shard(ctl *g, const ctl_opt *o, const char *v, ctl_args *a)
{
    return parse_shard(v, &a->shard_k, &a->shard_n) != 0 ? bad_value(g, o, v) : 0;
}

/* --dtype of pull: a floating dtype to convert to. */
int
args_set_dtype(ctl *g, const ctl_opt *o, const char *v, ctl_args *a)
{
    int d = v != NULL ? emad_dtype_from_name(v) : EMAD_DTYPE_INVALID;

    if (d != EMAD_F32 && d != EMAD_BF16 && d != EMAD_F16)
        return bad_choice(g, o, v);
    a->dtype = d;
    return 0;
}

/* ---- option tables -------------------------------------------------------------------------- */

/* clang-format off */
/* Options every command takes (and emactl itself, before the command). */
static const ctl_opt common_opts[] = {
    {.name = "--server", .has_arg = 1, .set = args_set_server, .off = offsetof(ctl, server),
     .what = "a URL"},
    {.name = "--cluster", .has_arg = 1, .set = args_set_cluster,
     .what = "a shard map (a file, or its text)"},
    {.name = "--user", .has_arg = 1, .set = args_set_global, .off = offsetof(ctl, user),
     .what = "a user name"},
    {.name = "--key-file", .has_arg = 1, .set = args_set_global, .off = offsetof(ctl, key_file),
     .what = "a key file"},
    {.name = "--timeout", .has_arg = 1, .set = args_set_timeout,
     .what = "a whole number of milliseconds"},
    {.name = NULL},
};

/* The first fields of an EMA option spec: it fills cfg.FIELD and counts in nema. */
#define EMA(name_, set_, field_) \
    ARGS_OPT(name_, set_, cfg.field_), .count = offsetof(ctl_args, nema)

/* The EMA configuration options of create and configure (docs/EMA.md). */
const ctl_opt args_ema_opts[] = {
    {EMA("--schedule", args_set_enum, schedule), .key = "schedule",
     .what = "constant, num_updates or warmup"},
    {EMA("--step-gap", args_set_enum, step_gap), .key = "step_gap",
     .what = "ignore or compensate"},
    {EMA("--buffers", args_set_enum, buffers), .key = "buffers", .what = "copy or average"},
    {EMA("--nonfinite", args_set_enum, nonfinite), .key = "nonfinite",
     .what = "reject, skip or allow"},
    {EMA("--decay", args_set_decays, decays),
     .what = "one to " CTL_STR(EMAD_MAX_DECAYS) " comma-separated numbers from 0 to 1"},
    {EMA("--update-after-step", args_set_u64, update_after_step), .max = UINT64_MAX,
     .what = "a whole number"},
    {EMA("--inv-gamma", args_set_number, inv_gamma), .what = "a number > 0"},
    {EMA("--power", args_set_number, power), .what = "a number > 0"},
    {EMA("--min-decay", args_set_decay, min_decay), .what = "a number from 0 to 1"},
    {EMA("--writers", args_set_u32, writers), .min = 1, .max = EMAD_MAX_WRITERS,
     .what = "a whole number from 1 to " CTL_STR(EMAD_MAX_WRITERS)},
    {EMA("--copy", args_set_glob, copy)},
    {EMA("--ignore", args_set_glob, ignore)},
    {.name = NULL},
};
/* clang-format on */

/* ---- the parser ----------------------------------------------------------------------------- */

/* Command-line cursor: the next argument is argv[i]; "--" ends the options. */
typedef struct cursor {
    int argc, i;
    char **argv;
    int no_more_options;
} cursor;

/*
 * Next argument. Returns 1 with *opt set for an option (its name without
 * the value), 2 with *pos set for a positional, 0 at the end.
 */
static int
cursor_next(cursor *c, const char **opt, const char **pos)
{
    while (c->i < c->argc) {
        const char *s = c->argv[c->i++];

        if (!c->no_more_options && strcmp(s, "--") == 0) {
            c->no_more_options = 1;
            continue;
        }
        if (!c->no_more_options && s[0] == '-' && s[1] != '\0') {
            *opt = s;
            return 1;
        }
        *pos = s;
        return 2;
    }
    return 0;
}

/* The value of option s (after '=' or the next argument), or NULL if missing. */
static const char *
cursor_value(cursor *c, const char *s)
{
    const char *eq = strchr(s, '=');

    if (eq != NULL)
        return eq + 1;
    if (c->i >= c->argc)
        return NULL;
    return c->argv[c->i++];
}

/* The spec of option s (--name or --name=VALUE) in table t, or NULL. */
static const ctl_opt *
table_find(const ctl_opt *t, const char *s)
{
    for (; t != NULL && t->name != NULL; t++) {
        size_t n = strlen(t->name);

        if (strncmp(s, t->name, n) == 0 && (s[n] == '\0' || s[n] == '='))
            return t;
    }
    return NULL;
}

/* Take the value of option s (spec o) from c and store it in g or a (NULL: none); 0 or status. */
static int
opt_take(ctl *g, cursor *c, const ctl_opt *o, const char *s, ctl_args *a)
{
    const char *v = NULL;
    int r;

    if (!o->has_arg && strchr(s, '=') != NULL)
        return ctl_usage_error(g, "%s takes no value", o->name);
    if (o->has_arg)
        v = cursor_value(c, s);
    if ((r = o->set(g, o, v, a)) == 0 && o->count != 0)
        (*(int *)((char *)a + o->count))++;
    return r;
}

/* Set every option to its default; argc and argv are the command's arguments. */
void
args_init(ctl_args *a, int argc, char **argv)
{
    memset(a, 0, sizeof(*a));
    a->argc = argc;
    a->argv = argv;
    emad_config_init(&a->cfg);
    a->decay = -1.0;
    a->dtype = EMAD_DTYPE_INVALID;
    a->interval = 1.0;
}

/*
 * Parse the arguments of command cmd into a. Returns -1 to go on, else the
 * exit status to return now (0 after --help, EXIT_USAGE after a usage
 * error, printed). With a->keep_going, a bad option is reported and skipped.
 */
int
args_parse(ctl *g, const ctl_cmd *cmd, ctl_args *a)
{
    cursor c = {a->argc, 0, a->argv, 0};
    const char *opt = NULL, *pos = NULL;
    const ctl_opt *o;
    int k, r;

    while ((k = cursor_next(&c, &opt, &pos)) != 0) {
        if (k == 2) {
            if (cmd->args[a->npos] == NULL) {
                r = ctl_usage_error(g, "unexpected argument '%s'", pos);
            } else {
                a->pos[a->npos++] = pos;
                r = 0;
            }
        } else if (strcmp(opt, "--help") == 0 || strcmp(opt, "-h") == 0) {
            ctl_command_usage(stdout, cmd);
            return EXIT_SUCCESS;
        } else if ((o = table_find(common_opts, opt)) != NULL ||
                   (o = table_find(cmd->opts[0], opt)) != NULL ||
                   (o = table_find(cmd->opts[1], opt)) != NULL) {
            r = opt_take(g, &c, o, opt, a);
        } else {
            r = ctl_usage_error(g, "unknown option '%s'", opt);
        }
        if (r != 0 && !a->keep_going)
            return r;
    }
    if (a->npos < cmd->nreq)
        return ctl_usage_error(g, "missing %s", cmd->args[a->npos]);
    return -1;
}

/*
 * Apply argv[*i], an option before the command (--server, --cluster or --timeout), and
 * move *i to its last argument. Returns -1 to go on, else the exit status.
 */
int
args_global(ctl *g, int argc, char **argv, int *i)
{
    cursor c = {argc, *i + 1, argv, 0};
    const char *s = argv[*i];
    const ctl_opt *o = table_find(common_opts, s);
    int r;

    if (o == NULL)
        return ctl_usage_error(g, "unknown option '%s'", s);
    r = opt_take(g, &c, o, s, NULL);
    *i = c.i - 1;
    return r != 0 ? r : -1;
}

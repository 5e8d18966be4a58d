/*
 * cmd_model.c - the emactl commands that manage models: create, configure,
 * list and drop.
 *
 * create and configure take the EMA configuration options (args.c,
 * args_ema_opts); configure and list print a model's configuration one
 * option per line, and list prints the table of models or of one model's
 * tensors.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"
#include "common/emaconf.h"
#include "common/names.h"
#include "common/proto.h"
#include "ctl.h"

/* Print a configuration as "decays 0.999,0.9999, schedule warmup, ..." lines. */
static void
print_config(const emad_model_config *cfg)
{
    char dbuf[32];

    printf("  decays:            ");
    for (size_t i = 0; i < cfg->ndecays; i++)
        printf("%s%s", i ? "," : "", emaconf_fmt_double(dbuf, sizeof(dbuf), cfg->decays[i]));
    printf("\n  schedule:          %s\n", emad_schedule_name(cfg->schedule));
    printf("  update_after_step: %" PRIu64 "\n", cfg->update_after_step);
    printf("  inv_gamma:         %s\n", emaconf_fmt_double(dbuf, sizeof(dbuf), cfg->inv_gamma));
    printf("  power:             %s\n", emaconf_fmt_double(dbuf, sizeof(dbuf), cfg->power));
    printf("  min_decay:         %s\n", emaconf_fmt_double(dbuf, sizeof(dbuf), cfg->min_decay));
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

/* create MODEL [EMA options] [--exist-ok] */
static int
cmd_create(ctl *g, const ctl_cmd *self, ctl_args *a)
{
    const char *model = a->pos[0];
    emad_client *c;
    int r, rc;
    char dbuf[32];

    if ((c = ctl_connect(g)) == NULL)
        return EXIT_FAIL;
    if ((rc = emad_create_config(c, model, &a->cfg, a->exist_ok)) != 0) {
        r = ctl_fail_rc(g, c, rc);
        emad_close(c);
        return r;
    }
    printf("model %s ready (decay %s", model,
           emaconf_fmt_double(dbuf, sizeof(dbuf), a->cfg.decays[0]));
    for (size_t i = 1; i < a->cfg.ndecays; i++)
        printf(",%s", emaconf_fmt_double(dbuf, sizeof(dbuf), a->cfg.decays[i]));
    printf(", schedule %s)\n", emad_schedule_name(a->cfg.schedule));
    emad_close(c);
    return EXIT_SUCCESS;
}

/* configure MODEL [EMA options] */
static int
cmd_configure(ctl *g, const ctl_cmd *self, ctl_args *a)
{
    const char *model = a->pos[0];
    emad_model_config cfg;
    ctl_args b;
    emad_client *c;
    int r, rc;

    /* a is the checked command line; a second pass applies it to the current configuration. */
    if ((c = ctl_connect(g)) == NULL)
        return EXIT_FAIL;
    if ((rc = emad_get_config(c, model, &cfg)) != 0) {
        r = ctl_fail_rc(g, c, rc);
        emad_close(c);
        return r;
    }
    args_init(&b, a->argc, a->argv);
    b.cfg = cfg;
    b.keep_going = 1;
    (void)args_parse(g, self, &b);
    rc = a->nema > 0 ? emad_configure(c, model, &b.cfg) : 0;
    if (rc != 0) {
        r = ctl_fail_rc(g, c, rc);
    } else {
        printf("model %s%s:\n", model, a->nema > 0 ? " configured" : "");
        print_config(&b.cfg);
        r = EXIT_SUCCESS;
    }
    emad_config_free(&cfg);
    emad_close(c);
    return r;
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
        return ctl_fail_rc(g, c, rc);
    for (size_t i = 0; i < n; i++)
        if ((int)strlen(info[i].name) > w)
            w = (int)strlen(info[i].name);
    printf("%-*s  %-10s  %12s  %8s  %14s\n", w, "MODEL", "DECAY", "STEP", "TENSORS", "BYTES");
    for (size_t i = 0; i < n; i++)
        printf("%-*s  %-10s  %12" PRIu64 "  %8" PRIu64 "  %14" PRIu64 "\n", w, info[i].name,
               emaconf_fmt_double(dbuf, sizeof(dbuf), info[i].decay), info[i].step,
               info[i].ntensors, info[i].shadow_bytes);
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
        return ctl_fail_rc(g, c, rc);
    if ((rc = emad_get_config(c, model, &cfg)) != 0) {
        emad_tensors_free(t, n);
        return ctl_fail_rc(g, c, rc);
    }
    printf("model %s: decay %s, step %" PRIu64 ", %" PRIu64 " tensors, %" PRIu64 " shadow bytes\n",
           info.name, emaconf_fmt_double(dbuf, sizeof(dbuf), info.decay), info.step, info.ntensors,
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
               names_kind_name(t[i].kind), dtype_name(t[i].dtype), ws,
               dtype_fmt_shape(sbuf, sizeof(sbuf), t[i].shape, t[i].ndim), t[i].step, t[i].nbytes);
    emad_tensors_free(t, n);
    return EXIT_SUCCESS;
}

/* list [MODEL] */
static int
cmd_list(ctl *g, const ctl_cmd *self, ctl_args *a)
{
    emad_client *c;
    int r;

    if ((c = ctl_connect(g)) == NULL)
        return EXIT_FAIL;
    r = a->pos[0] == NULL ? list_models(g, c) : list_tensors(g, c, a->pos[0]);
    emad_close(c);
    return r;
}

/* drop MODEL */
static int
cmd_drop(ctl *g, const ctl_cmd *self, ctl_args *a)
{
    const char *model = a->pos[0];
    emad_client *c;
    int r, rc;

    if ((c = ctl_connect(g)) == NULL)
        return EXIT_FAIL;
    if ((rc = emad_drop(c, model)) != 0) {
        r = ctl_fail_rc(g, c, rc);
        emad_close(c);
        return r;
    }
    printf("dropped %s\n", model);
    emad_close(c);
    return EXIT_SUCCESS;
}

/* --exist-ok of create. */
static const ctl_opt create_opts[] = {
    {.name = "--exist-ok", .set = args_set_flag, .off = offsetof(ctl_args, exist_ok)},
    {.name = NULL},
};

const ctl_cmd ctl_cmd_create = {
    .op = PROTO_OP_CREATE,
    .usage = "create MODEL [--decay D[,D2...]] [--schedule constant|num_updates|warmup]\n"
             "              [--update-after-step N] [--inv-gamma X] [--power P] [--min-decay M]\n"
             "              [--step-gap ignore|compensate] [--buffers copy|average]\n"
             "              [--copy GLOB]... [--ignore GLOB]... [--nonfinite reject|skip|allow]\n"
             "              [--writers N] [--exist-ok]",
    .help = "Create a model (docs/EMA.md has every formula).\n"
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
    .args = {"MODEL"},
    .nreq = 1,
    .opts = {args_ema_opts, create_opts},
    .exec = cmd_create,
};

const ctl_cmd ctl_cmd_configure = {
    .op = PROTO_OP_CONFIGURE,
    .usage = "configure MODEL [--decay D[,D2...]] [--schedule S] [--update-after-step N]\n"
             "              [--inv-gamma X] [--power P] [--min-decay M] [--step-gap G] "
             "[--nonfinite P]",
    .help = "Change a live model's decays (same number of them) and schedule options; they\n"
            "apply from the next push on. Without options, print the configuration.\n",
    .args = {"MODEL"},
    .nreq = 1,
    .opts = {args_ema_opts},
    .exec = cmd_configure,
};

const ctl_cmd ctl_cmd_list = {
    .op = PROTO_OP_LIST,
    .usage = "list [MODEL]",
    .help = "Without MODEL: every model with its decay, committed step, number of\n"
            "tensors and shadow bytes. With MODEL: its EMA configuration, then its\n"
            "tensors with kind, dtype, shape, step and size in bytes.\n",
    .args = {"MODEL"},
    .exec = cmd_list,
};

const ctl_cmd ctl_cmd_drop = {
    .op = PROTO_OP_DROP,
    .usage = "drop MODEL",
    .help = "Drop a model, all its tensors and its snapshots.\n",
    .args = {"MODEL"},
    .nreq = 1,
    .exec = cmd_drop,
};

/*
 * cmd_data.c - the emactl commands that move tensors: push and pull.
 *
 * push reads safetensors files (parameters, and buffers with --buffers)
 * before it talks to the daemon, and with --shard K/N sends only the K-th
 * of N equal flat slices of every tensor, as one writer of a model with N
 * writers. pull writes the averaged model into a safetensors file with
 * the metadata format=pt, step and model.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/proto.h"
#include "ctl.h"

/* Append the tensors of file f as kind to t[*n] (t has room for them). */
void
cmd_data_add_tensors(emad_tensor *t, size_t *n, const safetensors_file *f, int kind)
{
    for (size_t i = 0; i < f->ntensors; i++) {
        const safetensors_tensor *s = &f->tensors[i];
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
cmd_push(ctl *g, const ctl_cmd *self, ctl_args *a)
{
    const char *model = a->pos[0], *params = a->pos[1], *buffers = a->buffers;
    safetensors_file *pf = NULL, *bf = NULL;
    emad_tensor *t = NULL;
    emad_client *c = NULL;
    emad_push_result res;
    uint64_t step = a->step, shard_k = a->shard_k, shard_n = a->shard_n;
    int rc, status = EXIT_FAIL;
    char *cause = NULL;
    size_t n = 0;

    if (a->nstep == 0)
        return ctl_usage_error(g, "missing --step N");

    /* Files first: a bad file is reported before anything is sent. */
    if ((rc = safetensors_read(&pf, params, &cause)) != 0) {
        status = ctl_fail_file(g, params, rc, cause);
        goto out;
    }
    if (buffers != NULL && (rc = safetensors_read(&bf, buffers, &cause)) != 0) {
        status = ctl_fail_file(g, buffers, rc, cause);
        goto out;
    }
    n = pf->ntensors + (bf != NULL ? bf->ntensors : 0);
    if (n == 0) {
        ctl_errorf(g, "%s%s%s holds no tensors: nothing to push", params,
                   buffers != NULL ? " and " : "", buffers != NULL ? buffers : "");
        goto out;
    }
    if ((t = calloc(n, sizeof(*t))) == NULL) {
        ctl_errorf(g, "out of memory");
        goto out;
    }
    n = 0;
    cmd_data_add_tensors(t, &n, pf, EMAD_PARAM);
    if (bf != NULL)
        cmd_data_add_tensors(t, &n, bf, EMAD_BUFFER);
    if (shard_n > 0)
        n = shard_tensors(t, n, shard_k, shard_n);
    if ((c = ctl_connect(g)) == NULL)
        goto out;
    if (shard_n > 0) {
        emad_model_config cfg;
        if ((rc = emad_get_config(c, model, &cfg)) != 0) {
            status = ctl_fail_rc(g, c, rc);
            goto out;
        }
        emad_config_free(&cfg);
        if (cfg.writers != shard_n) {
            ctl_errorf(g, "--shard %" PRIu64 "/%" PRIu64 ": model %s has %u writer%s, not %" PRIu64,
                       shard_k, shard_n, model, cfg.writers, cfg.writers == 1 ? "" : "s", shard_n);
            goto out;
        }
    }
    rc = shard_n > 0 ? emad_push_as(c, model, step, (uint32_t)shard_k, t, n, &res)
                     : emad_push(c, model, step, t, n, &res);
    if (rc != 0) {
        status = ctl_fail_rc(g, c, rc);
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
    ctl_warnings(g, c);
    status = EXIT_SUCCESS;
out:
    emad_close(c);
    free(t);
    free(cause);
    safetensors_free(pf);
    safetensors_free(bf);
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

/* pull MODEL OUT.safetensors [--tensors A,B,...] [--decay D] [--dtype F32|BF16|F16] */
static int
cmd_pull(ctl *g, const ctl_cmd *self, ctl_args *a)
{
    const char *model = a->pos[0], *path = a->pos[1];
    char *list = NULL, **names = NULL, *cause = NULL, stepbuf[32];
    char k_format[] = "format", v_pt[] = "pt", k_step[] = PROTO_KEY_STEP,
         k_model[] = PROTO_KEY_MODEL;
    size_t nnames = 0;
    emad_client *c = NULL;
    emad_model *m = NULL;
    safetensors_tensor *st = NULL;
    safetensors_meta meta[3];
    uint64_t total = 0;
    int rc, status = EXIT_FAIL;
    emad_pull_options po;

    emad_pull_options_init(&po);
    if (a->decay >= 0.0)
        po.decay = a->decay;
    if (a->dtype != EMAD_DTYPE_INVALID)
        po.dtype = a->dtype;
    if (a->tensors != NULL && (list = strdup(a->tensors)) == NULL) {
        ctl_errorf(g, "out of memory");
        goto out;
    }
    if (list != NULL && split_names(list, &names, &nnames) != 0) {
        status = ctl_usage_error(
            g, "--tensors needs a comma-separated list of names, without empty ones");
        goto out;
    }
    if ((c = ctl_connect(g)) == NULL)
        goto out;
    if ((rc = emad_pull_ex(c, model, (const char *const *)names, nnames, &po, &m)) != 0) {
        status = ctl_fail_rc(g, c, rc);
        goto out;
    }
    if ((st = calloc(m->ntensors ? m->ntensors : 1, sizeof(*st))) == NULL) {
        ctl_errorf(g, "out of memory");
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
    meta[0] = (safetensors_meta){k_format, v_pt};
    meta[1] = (safetensors_meta){k_step, stepbuf};
    meta[2] = (safetensors_meta){k_model, m->name};
    if ((rc = safetensors_write(path, st, m->ntensors, meta, 3, &cause)) != 0) {
        status = ctl_fail_file(g, path, rc, cause);
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

/* clang-format off */
/* The options of push. */
static const ctl_opt push_opts[] = {
    ARGS_OPT_STEP("a whole number from 0 to 18446744073709551615"), /* UINT64_MAX */
    ARGS_OPT_BUFFERS_FILE,
    {ARGS_OPT("--shard", args_set_shard, shard_n),
     .what = "K/N with 0 <= K < N <= " CTL_STR(EMAD_MAX_WRITERS)},
    {.name = NULL},
};

/* The options of pull. */
static const ctl_opt pull_opts[] = {
    ARGS_OPT_DECAY,
    {ARGS_OPT("--dtype", args_set_dtype, dtype), .what = "F32, BF16 or F16"},
    {ARGS_OPT("--tensors", args_set_string, tensors), .what = "a comma-separated list of names"},
    {.name = NULL},
};
/* clang-format on */

const ctl_cmd ctl_cmd_push = {
    .op = PROTO_OP_PUSH,
    .usage = "push MODEL PARAMS.safetensors --step N [--buffers BUFFERS.safetensors] [--shard K/N]",
    .help = "Push the tensors of PARAMS as parameters (averaged; F32, F16, BF16 or F64)\n"
            "and those of BUFFERS as buffers (copied; any dtype) at training step N\n"
            "(0 <= N < 2^64). Tensors whose stored step is >= N are left alone and\n"
            "counted as stale. The push is applied all at once or not at all.\n"
            "With --shard K/N, push only the K-th of N equal flat slices of every tensor,\n"
            "as writer K of a model created with --writers N.\n",
    .args = {"MODEL", "PARAMS.safetensors"},
    .nreq = 2,
    .opts = {push_opts},
    .exec = cmd_push,
};

const ctl_cmd ctl_cmd_pull = {
    .op = PROTO_OP_PULL,
    .usage = "pull MODEL OUT.safetensors [--tensors A,B,...] [--decay D] [--dtype F32|BF16|F16]",
    .help = "Pull the averaged model (all tensors, or the named ones) into OUT, written\n"
            "atomically, with metadata format=pt, step=the model's step, model=MODEL.\n"
            "--decay picks the shadow of one of the model's decays (default the first).\n"
            "Floating tensors come back in their pushed dtype, or converted to --dtype\n"
            "(rounded to nearest even).\n",
    .args = {"MODEL", "OUT.safetensors"},
    .nreq = 2,
    .opts = {pull_opts},
    .exec = cmd_pull,
};

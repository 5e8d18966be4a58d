/*
 * cmd_snapshot.c - the emactl commands about snapshots: export, import and
 * snapshot.
 *
 * export writes one decay's shadows at full precision into a snapshot file
 * in the daemon's format (src/common/snapshot.h); import seeds a model's
 * shadows from such a file, or from a plain safetensors state dict;
 * snapshot asks the daemon to write its own snapshots and waits until they
 * are durable.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/emaconf.h"
#include "common/snapshot.h"
#include "common/proto.h"
#include "ctl.h"

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
cmd_export(ctl *g, const ctl_cmd *self, ctl_args *a)
{
    const char *model = a->pos[0], *path = a->pos[1];
    emad_client *c = NULL;
    emad_model_config cfg;
    emad_model_info info;
    emad_tensor *desc = NULL;
    emad_model *m = NULL;
    emad_pull_options po;
    snapshot_tensor *st = NULL;
    size_t ndesc = 0, j = 0;
    uint64_t bytes = 0;
    char *cause = NULL, dbuf[32];
    int rc, status = EXIT_FAIL, have_cfg = 0;
    double decay = a->decay;

    if ((c = ctl_connect(g)) == NULL)
        return EXIT_FAIL;
    if ((rc = emad_get_config(c, model, &cfg)) != 0) {
        status = ctl_fail_rc(g, c, rc);
        goto out;
    }
    have_cfg = 1;
    if (decay >= 0.0) {
        for (j = 0; j < cfg.ndecays && cfg.decays[j] != decay; j++)
            ;
        if (j == cfg.ndecays) {
            ctl_errorf(g, "model %s has no decay %s", model,
                       emaconf_fmt_double(dbuf, sizeof(dbuf), decay));
            goto out;
        }
    }
    if ((rc = emad_describe(c, model, &info, &desc, &ndesc)) != 0) {
        status = ctl_fail_rc(g, c, rc);
        goto out;
    }
    emad_pull_options_init(&po);
    po.decay = cfg.decays[j];
    po.dtype = EMAD_PULL_SHADOW;
    if ((rc = emad_pull_ex(c, model, NULL, 0, &po, &m)) != 0) {
        status = ctl_fail_rc(g, c, rc);
        goto out;
    }
    if ((st = calloc(m->ntensors ? m->ntensors : 1, sizeof(*st))) == NULL) {
        ctl_errorf(g, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < m->ntensors; i++) {
        const emad_tensor *t = &m->tensors[i], *d = NULL;
        for (size_t q = 0; q < ndesc && d == NULL; q++)
            if (strcmp(desc[q].name, t->name) == 0)
                d = &desc[q];
        if (d == NULL) {
            ctl_errorf(g, "model %s changed while exporting (new tensor '%s'): try again", model,
                       t->name);
            goto out;
        }
        st[i] = (snapshot_tensor){.name = t->name,
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
    snapshot_meta meta = {model, m->step, j, &cfg};
    if ((rc = snapshot_write_path(path, &meta, st, m->ntensors, &bytes, &cause)) != 0) {
        status = ctl_fail_file(g, path, rc, cause);
        goto out;
    }
    printf("exported %s step %" PRIu64 " (decay %s): %zu tensor%s, %" PRIu64 " bytes -> %s\n",
           model, m->step, emaconf_fmt_double(dbuf, sizeof(dbuf), cfg.decays[j]), m->ntensors,
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

/*
 * Give the tensors of a plain safetensors import their kinds: as the model
 * stores them; new tensors are params if floating, else buffers. The
 * tensors of pf go to t[0..], then those of bf (NULL: none) as buffers;
 * *n is set to their number. Returns 0 or the exit status (printed).
 */
static int
import_kinds(ctl *g, emad_client *c, const char *model, emad_tensor *t, size_t *n,
             const safetensors_file *pf, const safetensors_file *bf)
{
    emad_model_info info;
    emad_tensor *desc = NULL;
    size_t ndesc = 0;
    int rc;

    if ((rc = emad_describe(c, model, &info, &desc, &ndesc)) != 0)
        return ctl_fail_rc(g, c, rc);
    *n = 0;
    cmd_data_add_tensors(t, n, pf, EMAD_PARAM);
    for (size_t i = 0; i < *n; i++) {
        int kind = t[i].dtype == EMAD_F16 || t[i].dtype == EMAD_BF16 || t[i].dtype == EMAD_F32 ||
                           t[i].dtype == EMAD_F64
                       ? EMAD_PARAM
                       : EMAD_BUFFER;
        for (size_t q = 0; q < ndesc; q++)
            if (strcmp(desc[q].name, t[i].name) == 0)
                kind = desc[q].kind;
        t[i].kind = kind;
    }
    emad_tensors_free(desc, ndesc);
    if (bf != NULL)
        cmd_data_add_tensors(t, n, bf, EMAD_BUFFER);
    return 0;
}

/*
 * Check an import before anything is sent: every tensor fits in one
 * message of the daemon (a seed cannot split a tensor) and matches the
 * dtype and shape the model stores for it. *existed is set to whether the
 * model exists. Returns 0 or the exit status (printed).
 */
static int
import_check(ctl *g, emad_client *c, const char *model, const emad_tensor *t, const int *as,
             size_t n, int *existed)
{
    uint64_t room = emad_server_max_message_bytes(c);
    emad_model_info info;
    emad_tensor *desc = NULL;
    size_t ndesc = 0;
    int rc, status = 0;

    /* Room for the request's keys, the model's name and the tensor map's keys (generous). */
    room = room > 4096 ? room - 4096 : 0;
    for (size_t i = 0; i < n; i++) {
        if (t[i].nbytes + strlen(t[i].name) + 16 * (uint64_t)t[i].ndim > room) {
            ctl_errorf(g,
                       "tensor '%s' (%" PRIu64 " bytes) does not fit in one message of the "
                       "daemon (max_message_bytes %" PRIu64 "): nothing imported; restart emad "
                       "with a larger --max-message-bytes",
                       t[i].name, t[i].nbytes, emad_server_max_message_bytes(c));
            return EXIT_FAIL;
        }
    }
    rc = emad_describe(c, model, &info, &desc, &ndesc);
    *existed = rc == 0;
    if (rc != 0)
        return rc == EMAD_ENOMODEL ? 0 : ctl_fail_rc(g, c, rc);
    for (size_t i = 0; i < n && status == 0; i++) {
        int dtype = as != NULL && as[i] != EMAD_DTYPE_INVALID ? as[i] : t[i].dtype;
        for (size_t q = 0; q < ndesc; q++) {
            const emad_tensor *d = &desc[q];
            if (strcmp(d->name, t[i].name) != 0)
                continue;
            if (d->dtype != dtype || d->ndim != t[i].ndim ||
                memcmp(d->shape, t[i].shape, d->ndim * sizeof(d->shape[0])) != 0) {
                ctl_errorf(g,
                           "tensor '%s': the model stores it with another dtype or shape "
                           "(%s, %u dimensions): nothing imported",
                           t[i].name, emad_dtype_name(d->dtype), d->ndim);
                status = EXIT_FAIL;
            }
            break;
        }
    }
    emad_tensors_free(desc, ndesc);
    return status;
}

/* import MODEL FILE [--step N] [--buffers BUFFERS.safetensors] */
static int
cmd_import(ctl *g, const ctl_cmd *self, ctl_args *a)
{
    const char *model = a->pos[0], *path = a->pos[1], *buffers = a->buffers;
    emad_client *c = NULL;
    snapshot_file *sf = NULL;
    safetensors_file *pf = NULL, *bf = NULL;
    emad_tensor *t = NULL;
    int *as = NULL;
    emad_push_result res;
    uint64_t step = a->step;
    size_t n = 0;
    char *cause = NULL;
    const char *ms;
    int rc, status = EXIT_FAIL, have_step = a->nstep > 0, existed = 1;

    /* An emad snapshot (exact shadows, kinds, configuration) or a plain safetensors state dict. */
    if ((rc = safetensors_read(&pf, path, &cause)) != 0) {
        status = ctl_fail_file(g, path, rc, cause);
        goto out;
    }
    if (safetensors_meta_get(pf, "emad_checksum") != NULL) {
        if (buffers != NULL) {
            status = ctl_usage_error(g, "--buffers is only for plain safetensors files");
            goto out;
        }
        if ((rc = snapshot_read(path, &sf, &cause)) != 0) {
            status = ctl_fail_file(g, path, rc, cause);
            goto out;
        }
        if (!have_step)
            step = sf->step;
        n = sf->ntensors;
    } else {
        if (buffers != NULL && (rc = safetensors_read(&bf, buffers, &cause)) != 0) {
            status = ctl_fail_file(g, buffers, rc, cause);
            goto out;
        }
        if (!have_step && ((ms = safetensors_meta_get(pf, PROTO_KEY_STEP)) == NULL ||
                           args_parse_u64(ms, &step) != 0)) {
            status = ctl_usage_error(g, "%s has no step in its metadata: give --step N", path);
            goto out;
        }
        n = pf->ntensors + (bf != NULL ? bf->ntensors : 0);
    }
    if (n == 0) {
        ctl_errorf(g, "%s holds no tensors: nothing to import", path);
        goto out;
    }
    if ((t = calloc(n, sizeof(*t))) == NULL || (as = calloc(n, sizeof(*as))) == NULL) {
        ctl_errorf(g, "out of memory");
        goto out;
    }
    if (sf != NULL) {
        for (size_t i = 0; i < n; i++) {
            const snapshot_tensor *s = &sf->tensors[i];
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
    /*
     * All or nothing: everything is checked before the first message; a model
     * this import creates is dropped again if a seed message fails.
     */
    if ((c = ctl_connect_whole(g)) == NULL)
        goto out;
    if (sf == NULL && (rc = import_kinds(g, c, model, t, &n, pf, bf)) != 0) {
        status = rc;
        goto out;
    }
    if ((rc = import_check(g, c, model, t, sf != NULL ? as : NULL, n, &existed)) != 0) {
        status = rc;
        goto out;
    }
    if (sf != NULL && !existed && (rc = emad_create_config(c, model, &sf->cfg, 0)) != 0) {
        status = ctl_fail_rc(g, c, rc);
        goto out;
    }
    if ((rc = emad_seed(c, model, step, t, as, n, &res)) != 0) {
        status = ctl_fail_rc(g, c, rc);
        if (!existed && emad_drop(c, model) == 0)
            fprintf(stderr, "emactl: model %s dropped again: nothing imported\n", model);
        else if (res.applied > 0)
            fprintf(stderr, "emactl: %" PRIu64 " of %zu tensors were seeded before the failure\n",
                    res.applied, n);
        goto out;
    }
    printf("imported %s into %s at step %" PRIu64 ": %" PRIu64 " tensors seeded", path, model, step,
           res.applied);
    if (res.ignored > 0)
        printf(", %" PRIu64 " ignored", res.ignored);
    printf("; model step %" PRIu64 "\n", res.step);
    ctl_warnings(g, c);
    status = EXIT_SUCCESS;
out:
    emad_close(c);
    free(t);
    free(as);
    free(cause);
    snapshot_file_free(sf);
    safetensors_free(pf);
    safetensors_free(bf);
    return status;
}

/* snapshot [MODEL] */
static int
cmd_snapshot(ctl *g, const ctl_cmd *self, ctl_args *a)
{
    const char *model = a->pos[0];
    emad_client *c;
    uint64_t step = 0;
    int r, rc;

    if ((c = ctl_connect(g)) == NULL)
        return EXIT_FAIL;
    if ((rc = emad_snapshot(c, model, &step)) != 0) {
        r = ctl_fail_rc(g, c, rc);
        emad_close(c);
        return r;
    }
    printf("snapshot of %s durable at step %" PRIu64 "\n", model != NULL ? model : "every model",
           step);
    emad_close(c);
    return EXIT_SUCCESS;
}

/* The options of export. */
static const ctl_opt export_opts[] = {
    ARGS_OPT_DECAY,
    {.name = NULL},
};

/* The options of import. */
static const ctl_opt import_opts[] = {
    ARGS_OPT_STEP("a whole number"),
    ARGS_OPT_BUFFERS_FILE,
    {.name = NULL},
};

const ctl_cmd ctl_cmd_export = {
    .name = "export",
    .usage = "export MODEL FILE [--decay D]",
    .help = "Write the model's shadows for one decay (default the first) at full precision\n"
            "(float32 shadows of F16/BF16 params) into FILE, a snapshot file in the\n"
            "daemon's format (docs/SNAPSHOTS.md) that PyTorch loads as a state dict.\n",
    .args = {"MODEL", "FILE"},
    .nreq = 2,
    .opts = {export_opts},
    .exec = cmd_export,
};

const ctl_cmd ctl_cmd_import = {
    .name = "import",
    .usage = "import MODEL FILE [--step N] [--buffers BUFFERS.safetensors]",
    .help = "Seed a model's shadows from FILE: an emad snapshot or export (exact shadows,\n"
            "kinds and configuration; the model is created if missing, at the file's\n"
            "step) or a plain safetensors state dict (the model must exist; tensors keep\n"
            "the kind the model has for them, new ones are params if floating, else\n"
            "buffers, and those of BUFFERS are buffers; at --step N or the file's 'step'\n"
            "metadata). Every shadow of each tensor becomes the file's value.\n"
            "Every tensor is checked first (it fits in one message of the daemon and\n"
            "matches the model's dtype and shape), so a bad file imports nothing; a\n"
            "model the import creates is dropped again if seeding fails.\n",
    .args = {"MODEL", "FILE"},
    .nreq = 2,
    .opts = {import_opts},
    .exec = cmd_import,
};

const ctl_cmd ctl_cmd_snapshot = {
    .op = PROTO_OP_SNAPSHOT,
    .usage = "snapshot [MODEL]",
    .help = "Write a snapshot of MODEL (default: every model that changed) into the\n"
            "daemon's --state-dir and return once it is durable on disk. Prints the\n"
            "snapshotted step.\n",
    .args = {"MODEL"},
    .exec = cmd_snapshot,
};

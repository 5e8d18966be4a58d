/*
 * cmd_cluster.c - the emactl command for clusters: cluster plan, cluster
 * status, cluster resync and cluster reshard (docs/CLUSTER.md).
 *
 * plan prints where the tensors of a model or of a safetensors file live
 * (per shard: pieces and bytes; per tensor: its pieces), from the
 * placement of libemad (emad_cluster_plan_shards), so it needs no daemon
 * for a file; status prints every replica of every shard with its epoch,
 * the model's step there, its lag behind the shard's most advanced replica
 * and its health; resync brings behind replicas up to date; reshard copies
 * models (every decay, bit for bit, at one step) from the cluster or the
 * daemon emactl talks to into the cluster of another map. plan, status and
 * resync need --cluster MAP (or $EMAD_CLUSTER).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/shardmap.h"
#include "ctl.h"

/* The tensor list a plan is made for: from a file (f) or a model's description (d). */
typedef struct plan_input {
    safetensors_file *f;
    emad_tensor *d; /* from emad_describe: free with emad_tensors_free */
    emad_tensor *t; /* the list: f's tensors as libemad tensors, or d */
    size_t n;
} plan_input;

/* Free what a plan input holds. */
static void
plan_input_free(plan_input *in)
{
    if (in->t != in->d)
        free(in->t);
    emad_tensors_free(in->d, in->n);
    safetensors_free(in->f);
    memset(in, 0, sizeof(*in));
}

/* "2048x1024" (or "scalar") into buf. */
static const char *
shape_text(char *buf, size_t size, const emad_tensor *t)
{
    size_t k = 0;

    if (t->ndim == 0)
        return "scalar";
    buf[0] = '\0';
    for (uint32_t d = 0; d < t->ndim && k < size; d++)
        k += (size_t)snprintf(buf + k, size - k, "%s%" PRIu64, d ? "x" : "", t->shape[d]);
    return buf;
}

/* Print a plan of shards shards: the table of shards, then the table of tensors. */
static void
plan_print(const plan_input *in, uint32_t shards, const emad_piece *p, size_t np)
{
    uint64_t *bytes = calloc(shards, sizeof(*bytes)), *pieces = calloc(shards, sizeof(*pieces));
    uint64_t total = 0;
    size_t w = 6;
    char sbuf[256];

    if (bytes == NULL || pieces == NULL) {
        free(bytes);
        free(pieces);
        fprintf(stderr, "emactl: cluster: out of memory\n");
        return;
    }
    for (size_t i = 0; i < np; i++) {
        uint64_t b = p[i].count * emad_dtype_size(in->t[p[i].tensor].dtype);
        bytes[p[i].shard] += b;
        pieces[p[i].shard]++;
        total += b;
    }
    printf("%-5s  %8s  %14s  %6s\n", "SHARD", "PIECES", "BYTES", "SHARE");
    for (uint32_t s = 0; s < shards; s++)
        printf("%-5u  %8" PRIu64 "  %14" PRIu64 "  %5.1f%%\n", s, pieces[s], bytes[s],
               total > 0 ? 100.0 * (double)bytes[s] / (double)total : 0.0);
    free(bytes);
    free(pieces);
    for (size_t i = 0; i < in->n; i++)
        if (strlen(in->t[i].name) > w)
            w = strlen(in->t[i].name);
    printf("\n%-*s  %-5s  %-16s  %s\n", (int)w, "TENSOR", "DTYPE", "SHAPE", "PIECES");
    for (size_t i = 0, k = 0; i < in->n; i++) {
        const emad_tensor *t = &in->t[i];
        printf("%-*s  %-5s  %-16s ", (int)w, t->name, emad_dtype_name(t->dtype),
               shape_text(sbuf, sizeof(sbuf), t));
        for (; k < np && p[k].tensor == i; k++) {
            if (p[k].whole)
                printf(" shard %u whole", p[k].shard);
            else
                printf(" shard %u [%" PRIu64 ", %" PRIu64 ")", p[k].shard, p[k].offset,
                       p[k].offset + p[k].count);
        }
        printf("\n");
    }
}

/* qsort comparator: tensors by name (byte order, as the placement sorts them). */
static int
by_name(const void *a, const void *b)
{
    return strcmp(((const emad_tensor *)a)->name, ((const emad_tensor *)b)->name);
}

/* Is path an existing regular file? */
static int
is_file(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The number of shards of the map of g, read without contacting a daemon; 0 on error (printed). */
static uint32_t
map_shards(const ctl *g)
{
    shardmap *m = NULL;
    char *cause = NULL;
    uint32_t s;
    int rc;

    if ((rc = shardmap_load(g->cluster, &m, &cause)) != 0) {
        ctl_errorf(g, "shard map: %s (%s)", cause != NULL ? cause : emad_strerror(rc),
                   emad_errname(rc) != NULL ? emad_errname(rc) : "?");
        free(cause);
        return 0;
    }
    s = m->shards;
    shardmap_destroy(m);
    return s;
}

/* cluster plan MODEL|FILE: a file's tensors without a daemon; a model's from the cluster. */
static int
cluster_plan(ctl *g, const char *what)
{
    plan_input in = {0};
    emad_piece *p = NULL;
    emad_client *c = NULL;
    emad_model_info info;
    uint32_t shards;
    size_t np = 0;
    char *cause = NULL;
    int rc, status = EXIT_FAIL;

    if (is_file(what)) {
        if ((shards = map_shards(g)) == 0)
            return EXIT_FAIL;
        if ((rc = safetensors_read(&in.f, what, &cause)) != 0) {
            status = ctl_fail_file(g, what, rc, cause);
            goto out;
        }
        if ((in.t = calloc(in.f->ntensors + 1, sizeof(*in.t))) == NULL) {
            ctl_errorf(g, "out of memory");
            goto out;
        }
        cmd_data_add_tensors(in.t, &in.n, in.f, EMAD_PARAM);
        qsort(in.t, in.n, sizeof(*in.t), by_name);
        rc = emad_cluster_plan_shards(shards, in.t, in.n, &p, &np);
    } else {
        if ((c = ctl_connect(g)) == NULL)
            goto out;
        if ((rc = emad_describe(c, what, &info, &in.d, &in.n)) != 0) {
            status = ctl_fail_rc(g, c, rc);
            goto out;
        }
        in.t = in.d;
        qsort(in.t, in.n, sizeof(*in.t), by_name);
        if ((rc = emad_cluster_info(c, &shards, NULL, NULL, NULL)) == 0)
            rc = emad_cluster_plan(c, in.t, in.n, &p, &np);
    }
    if (rc != 0) {
        status = ctl_fail_rc(g, c, rc);
        goto out;
    }
    printf("%s on %u shard%s: %zu tensor%s, %zu piece%s\n\n", what, shards, shards == 1 ? "" : "s",
           in.n, in.n == 1 ? "" : "s", np, np == 1 ? "" : "s");
    plan_print(&in, shards, p, np);
    status = EXIT_SUCCESS;
out:
    free(p);
    free(cause);
    plan_input_free(&in);
    emad_close(c);
    return status;
}

/* The health word of one replica (see docs/CLUSTER.md, "Status"). */
static const char *
replica_health(const emad_replica_status *r, const char *model, char *buf, size_t size)
{
    const char *name;

    if (!r->reachable && r->error != 0) {
        name = emad_errname(r->error);
        snprintf(buf, size, "down: %s%s%s%s", emad_strerror(r->error), name ? " (" : "",
                 name ? name : "", name ? ")" : "");
        return buf;
    }
    if (!r->reachable)
        return "down";
    if (r->resyncing)
        return "in resync";
    if (model != NULL && !r->has_model)
        return "no model";
    if (model != NULL && r->lag > 0)
        return "behind";
    return "serving";
}

/* cluster status [MODEL]: one line per replica. */
static int
cluster_status(ctl *g, const char *model)
{
    emad_replica_status *st = NULL;
    emad_client *c;
    uint32_t shards = 0, replicas = 0, ack = 0;
    uint64_t epoch = 0;
    size_t n = 0, w = 3, ok = 0;
    char hbuf[160], sbuf[32], lbuf[32];
    int rc;

    if ((c = ctl_connect(g)) == NULL)
        return EXIT_FAIL;
    if ((rc = emad_cluster_info(c, &shards, &replicas, &epoch, &ack)) != 0 ||
        (rc = emad_cluster_status(c, model, &st, &n)) != 0) {
        rc = ctl_fail_rc(g, c, rc);
        emad_close(c);
        return rc;
    }
    for (size_t i = 0; i < n; i++) {
        if (strlen(st[i].url) > w)
            w = strlen(st[i].url);
        ok += st[i].reachable && !st[i].resyncing;
    }
    printf("cluster epoch %" PRIu64 ": %u shard%s x %u replica%s, ack %u; %zu of %zu replicas "
           "serving%s%s\n\n",
           epoch, shards, shards == 1 ? "" : "s", replicas, replicas == 1 ? "" : "s", ack, ok, n,
           model != NULL ? "; model " : "", model != NULL ? model : "");
    printf("%-5s  %-7s  %-*s  %-9s  %6s  %12s  %8s  %s\n", "SHARD", "REPLICA", (int)w, "URL",
           "REACHABLE", "EPOCH", "STEP", "LAG", "HEALTH");
    for (size_t i = 0; i < n; i++) {
        const emad_replica_status *r = &st[i];
        int known = r->reachable && model != NULL && r->has_model;
        snprintf(sbuf, sizeof(sbuf), "%" PRIu64, r->step);
        snprintf(lbuf, sizeof(lbuf), "%" PRIu64, r->lag);
        printf("%-5u  %-7u  %-*s  %-9s  %6" PRIu64 "  %12s  %8s  %s\n", r->shard, r->replica,
               (int)w, r->url, r->reachable ? "yes" : "no", r->epoch, known ? sbuf : "-",
               known ? lbuf : "-", replica_health(r, model, hbuf, sizeof(hbuf)));
    }
    emad_cluster_status_free(st, n);
    emad_close(c);
    return EXIT_SUCCESS;
}

/* cluster resync [MODEL]: bring behind replicas up to date. */
static int
cluster_resync(ctl *g, const char *model)
{
    emad_client *c;
    size_t copied = 0;
    int rc;

    if ((c = ctl_connect(g)) == NULL)
        return EXIT_FAIL;
    if ((rc = emad_cluster_resync(c, model, &copied)) != 0) {
        rc = ctl_fail_rc(g, c, rc);
        emad_close(c);
        return rc;
    }
    printf("%zu replica%s brought up to date\n", copied, copied == 1 ? "" : "s");
    ctl_warnings(g, c);
    emad_close(c);
    return EXIT_SUCCESS;
}

/* cluster reshard NEW-MAP [MODEL]: copy MODEL (default: every model) into the cluster of NEW-MAP. */
static int
cluster_reshard(ctl *g, const char *map, const char *model)
{
    ctl to_g = *g;
    emad_client *from = NULL, *to = NULL;
    emad_model_info *models = NULL;
    size_t n = 0, done = 0;
    uint64_t step = 0;
    int rc, status = EXIT_FAIL;

    to_g.cluster = map;
    if ((from = ctl_connect(g)) == NULL || (to = ctl_connect(&to_g)) == NULL)
        goto out;
    if (model == NULL && (rc = emad_list(from, &models, &n)) != 0) {
        status = ctl_fail_rc(g, from, rc);
        goto out;
    }
    for (size_t i = 0; i < (model != NULL ? 1 : n); i++) {
        const char *name = model != NULL ? model : models[i].name;
        if ((rc = emad_cluster_copy(from, to, name, &step)) != 0) {
            ctl_errorf(g, "%s: %s (%s); %zu model%s copied before", name,
                       emad_last_error(to)[0] != '\0' ? emad_last_error(to) : emad_strerror(rc),
                       emad_errname(rc) != NULL ? emad_errname(rc) : "?", done,
                       done == 1 ? "" : "s");
            goto out;
        }
        printf("copied %s at step %" PRIu64 " into the cluster of %s\n", name, step, map);
        ctl_warnings(&to_g, to);
        done++;
    }
    printf("%zu model%s copied\n", done, done == 1 ? "" : "s");
    status = EXIT_SUCCESS;
out:
    free(models);
    emad_close(to);
    emad_close(from);
    return status;
}

/* cluster plan|status|resync [ARG], cluster reshard NEW-MAP [MODEL] */
static int
cmd_cluster(ctl *g, const ctl_cmd *self, ctl_args *a)
{
    const char *sub = a->pos[0], *arg = a->npos > 1 ? a->pos[1] : NULL;

    if (strcmp(sub, "reshard") == 0) {
        if (arg == NULL)
            return ctl_usage_error(g, "reshard needs the new shard map");
        return cluster_reshard(g, arg, a->npos > 2 ? a->pos[2] : NULL);
    }
    if (a->npos > 2)
        return ctl_usage_error(g, "unexpected argument '%s'", a->pos[2]);
    if (g->cluster == NULL)
        return ctl_usage_error(g, "needs --cluster MAP (or $EMAD_CLUSTER)");
    if (strcmp(sub, "plan") == 0) {
        if (arg == NULL)
            return ctl_usage_error(g, "plan needs a MODEL or a safetensors FILE");
        return cluster_plan(g, arg);
    }
    if (strcmp(sub, "status") == 0)
        return cluster_status(g, arg);
    if (strcmp(sub, "resync") == 0)
        return cluster_resync(g, arg);
    return ctl_usage_error(g, "unknown cluster command '%s' (plan, status, resync or reshard)",
                           sub);
}

const ctl_cmd ctl_cmd_cluster = {
    .name = "cluster",
    .usage = "cluster plan MODEL|FILE.safetensors | cluster status [MODEL]\n"
             "              | cluster resync [MODEL] | cluster reshard NEW-MAP [MODEL]",
    .help = "Commands for a cluster of daemons (--cluster MAP or $EMAD_CLUSTER; see\n"
            "docs/CLUSTER.md).\n"
            "  plan     where the tensors of a model, or of a safetensors file (read\n"
            "           without contacting any daemon), live: bytes and pieces per\n"
            "           shard, and each tensor's pieces (shard and element range)\n"
            "  status   every replica of every shard: URL, reachable, epoch, and for\n"
            "           MODEL its step there, its lag behind the shard's most advanced\n"
            "           replica and its health (serving, behind, in resync, no model, down)\n"
            "  resync   copy the state of MODEL (default: every model) from the most\n"
            "           advanced replica of each shard to the replicas behind it\n"
            "  reshard  copy MODEL (default: every model) from the cluster of --cluster, or\n"
            "           the daemon of --server, into the cluster of NEW-MAP (its daemons\n"
            "           running with a higher epoch and empty state): configuration, every\n"
            "           decay's shadows and every tensor's step at one step, bit for bit,\n"
            "           placed by the new map (docs/CLUSTER.md, \"Reshard\")\n",
    .args = {"plan|status|resync|reshard", "MODEL|NEW-MAP", "MODEL"},
    .nreq = 1,
    .exec = cmd_cluster,
};

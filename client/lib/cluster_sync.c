/*
 * cluster_sync.c - bringing a replica that missed writes up to date from a
 * peer of its shard (docs/PROTOCOL.md, "Resync"). The source's state of a
 * model is read at one step: its configuration, its tensor list, and one
 * pull per decay in the shadow dtype (pulls at that exact step, which the
 * daemons keep while the next step is applied); it is written into the
 * replica with `install` (begin with the configuration, the shadows in
 * messages within the daemon's limit, end at the step), after which the
 * replica holds the source's shadows, buffers and steps bit for bit. When
 * every replica of a shard is resyncing (all restarted from snapshots),
 * the most advanced one is told to keep its own state (`install accept`)
 * and the others copy it.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "common/emaconf.h"

/* The tensor map of an install item. */
static void
item_map(const inst_req *q, const inst_item *it, codec_tensor *m)
{
    const emad_tensor *t = &q->t[it->index];

    memset(m, 0, sizeof(*m));
    m->name = t->name;
    m->name_len = strlen(t->name);
    m->kind = t->kind;
    m->dtype = t->dtype;
    m->ndim = t->ndim;
    memcpy(m->shape, t->shape, sizeof(m->shape));
    m->data = (const char *)t->data + it->off;
    m->len = it->len;
    m->offset = it->off;
    m->has_offset = 1;
    m->as_dtype = q->dtypes[it->index] != t->dtype ? q->dtypes[it->index] : EMAD_DTYPE_INVALID;
}

/* Pack an install request. */
static void
build_install(msgpack_packer *pk, const void *vctx)
{
    const inst_req *q = vctx;

    if (q->what == 1) {
        pk_head(pk, PROTO_OP_INSTALL, 2 + EMACONF_PACKED_KEYS);
        pk_kv_str(pk, PROTO_KEY_MODEL, q->model);
        proto_pack_str(pk, PROTO_KEY_ANEW);
        msgpack_pack_true(pk);
        emaconf_pack(pk, q->cfg);
        return;
    }
    if (q->what == 2 || q->what == 3) {
        pk_head(pk, PROTO_OP_INSTALL, 3);
        pk_kv_str(pk, PROTO_KEY_MODEL, q->model);
        proto_pack_str(pk, q->what == 2 ? PROTO_KEY_END : PROTO_KEY_ACCEPT);
        msgpack_pack_true(pk);
        proto_pack_kv_u64(pk, PROTO_KEY_STEP, q->step);
        return;
    }
    pk_head(pk, PROTO_OP_INSTALL, 4);
    pk_kv_str(pk, PROTO_KEY_MODEL, q->model);
    proto_pack_kv_u64(pk, PROTO_KEY_DECAY_INDEX, q->shadow);
    proto_pack_str(pk, PROTO_KEY_STEPS);
    msgpack_pack_array(pk, q->n);
    for (size_t i = 0; i < q->n; i++)
        msgpack_pack_uint64(pk, q->t[q->items[i].index].step);
    proto_pack_str(pk, PROTO_KEY_TENSORS);
    msgpack_pack_array(pk, q->n);
    for (size_t i = 0; i < q->n; i++) {
        codec_tensor m;

        item_map(q, &q->items[i], &m);
        codec_tensor_pack(pk, &m);
    }
}

/* Send one install request to c. */
int
install_call(emad_client *c, const inst_req *q)
{
    reply r;
    int rc = call(c, PROTO_OP_INSTALL, build_install, q, c->opts.timeout_ms, &r);

    if (rc == 0)
        reply_free(&r);
    return rc;
}

/* Send the shadow `shadow` of the pulled tensors t[0..n) to c, in messages within its limit. */
int
install_shadow(emad_client *c, inst_req *q, const emad_tensor *t, size_t n)
{
    uint64_t budget = c->msg_limit > 8192 ? c->msg_limit - 4096 : c->msg_limit / 2;
    inst_item *items = malloc((n ? n : 1) * sizeof(*items));
    size_t i = 0;
    uint64_t off = 0;
    int rc = 0;

    if (items == NULL)
        return fail(c, EMAD_ENOMEM, "resync: out of memory");
    q->what = 0;
    q->t = t;
    q->items = items;
    while (rc == 0 && i < n) {
        uint64_t used = 256;

        q->n = 0;
        while (i < n) {
            codec_tensor m;
            uint64_t over, len;

            item_map(q, &(inst_item){i, off, 0}, &m);
            over = codec_tensor_chunk_overhead(&m) + 16;
            if (used + over + 1 > budget && q->n > 0)
                break;
            len = t[i].nbytes - off;
            if (used + over + len > budget)
                len = budget > used + over ? budget - used - over : 0;
            items[q->n++] = (inst_item){i, off, len};
            used += over + len;
            off += len;
            if (off == t[i].nbytes) {
                i++;
                off = 0;
            } else {
                break; /* the message is full */
            }
        }
        rc = install_call(c, q);
    }
    free(items);
    return rc;
}

/* Copy model from replica src into dst (both of one shard). */
static int
sync_model(emad_client *c, replica *src, replica *dst, const char *model)
{
    emad_model_config cfg;
    emad_model_info info;
    emad_tensor *dsc = NULL;
    emad_model *m[EMAD_MAX_DECAYS] = {0};
    int *dtypes = NULL;
    size_t nd = 0;
    inst_req q = {.model = model};
    int rc, attempt = 0;

    emad_config_init(&cfg);
again:
    emad_config_free(&cfg);
    emad_tensors_free(dsc, nd);
    dsc = NULL;
    for (size_t j = 0; j < EMAD_MAX_DECAYS; j++) {
        emad_model_free(m[j]);
        m[j] = NULL;
    }
    if ((rc = emad_get_config(src->c, model, &cfg)) != 0 ||
        (rc = emad_describe(src->c, model, &info, &dsc, &nd)) != 0)
        goto done;
    for (size_t j = 0; j < cfg.ndecays; j++) {
        emad_pull_options po = {cfg.decays[j], EMAD_PULL_SHADOW};

        src->c->has_pull_step = 1;
        src->c->pull_step = info.step;
        rc = emad_pull_ex(src->c, model, NULL, 0, &po, &m[j]);
        src->c->has_pull_step = 0;
        if (rc == EMAD_ESPLIT && ++attempt < CLUSTER_PULL_ATTEMPTS)
            goto again; /* the source moved on meanwhile */
        if (rc != 0)
            goto done;
        if (m[j]->ntensors != nd) {
            rc = fail(c, EMAD_EPROTO, "resync: the source's tensor list changed");
            goto done;
        }
    }
    free(dtypes);
    if ((dtypes = calloc(nd ? nd : 1, sizeof(*dtypes))) == NULL) {
        rc = fail(c, EMAD_ENOMEM, "resync: out of memory");
        goto done;
    }
    for (size_t i = 0; i < nd; i++) { /* describe and pull list the tensors in one order */
        if (strcmp(dsc[i].name, m[0]->tensors[i].name) != 0) {
            rc = fail(c, EMAD_EPROTO, "resync: the source's tensor lists differ");
            goto done;
        }
        dtypes[i] = dsc[i].dtype;
    }
    q.cfg = &cfg;
    q.dtypes = dtypes;
    q.what = 1;
    if ((rc = install_call(dst->c, &q)) != 0)
        goto fail_dst;
    for (size_t j = 0; j < cfg.ndecays; j++) {
        q.shadow = (uint32_t)j;
        if ((rc = install_shadow(dst->c, &q, m[j]->tensors, m[j]->ntensors)) != 0)
            goto fail_dst;
    }
    q.what = 2;
    q.step = info.step;
    if ((rc = install_call(dst->c, &q)) != 0)
        goto fail_dst;
    /* Another client may have pushed to the source meanwhile: copy again if it moved on. */
    {
        int has = 0, resyncing = 0;
        uint64_t now = info.step;

        if (cl_model_state(src, model, &has, &now, &resyncing) == 0 && has && now != info.step &&
            ++attempt < CLUSTER_PULL_ATTEMPTS)
            goto again;
    }
    cl_warn(c->cl, "shard %u replica %u %s: model '%s' copied from replica %u at step %llu",
            dst->shard, dst->index, dst->c->url, model, src->index, (unsigned long long)info.step);
    goto done;
fail_dst:
    (void)fail(c, rc, "resync of '%s' into %s: %s", model, dst->c->url, emad_last_error(dst->c));
done:
    if (rc != 0 && c->err[0] == '\0')
        (void)fail(c, rc, "resync of '%s' from %s: %s", model, src->c->url,
                   emad_last_error(src->c));
    for (size_t j = 0; j < EMAD_MAX_DECAYS; j++)
        emad_model_free(m[j]);
    emad_tensors_free(dsc, nd);
    emad_config_free(&cfg);
    free(dtypes);
    return rc;
}

/* One replica's view of a model. */
typedef struct rstate {
    int ok, has, resyncing;
    uint64_t step;
} rstate;

/*
 * Bring the reachable replicas of shard s that are behind for model up to
 * date; dst_only (may be NULL) limits it to one. *copied counts them.
 */
static int
sync_shard_model(emad_client *c, uint32_t s, const char *model, replica *dst_only, size_t *copied)
{
    struct cluster *cl = c->cl;
    uint32_t R = cl->map->replicas;
    rstate st[EMAD_CLUSTER_MAX_REPLICAS];
    replica *src = NULL;
    int rc = 0;

    for (uint32_t k = 0; k < R; k++) {
        replica *r = cl_rep(cl, s, k);

        memset(&st[k], 0, sizeof(st[k]));
        if (cl_ready(cl, r) != 0)
            continue;
        st[k].ok = cl_model_state(r, model, &st[k].has, &st[k].step, &st[k].resyncing) == 0;
    }
    /* The source: the most advanced replica in sync, else the most advanced of all. */
    for (int pass = 0; pass < 2 && src == NULL; pass++)
        for (uint32_t k = 0; k < R; k++) {
            replica *r = cl_rep(cl, s, k);
            uint32_t best = src != NULL ? src->index : 0;

            if (!st[k].ok || !st[k].has || (pass == 0 && (st[k].resyncing || r->behind)))
                continue;
            if (src == NULL || st[k].step > st[best].step)
                src = r;
        }
    if (src == NULL)
        return 0; /* no replica has the model: nothing to copy */
    if (st[src->index].resyncing) {
        inst_req q = {.model = model, .what = 3};

        if ((rc = install_call(src->c, &q)) != 0)
            return fail(c, rc, "resync: %s cannot keep its state: %s", src->c->url,
                        emad_last_error(src->c));
        cl_warn(cl, "shard %u replica %u %s: model '%s' kept at step %llu (no replica was ahead)",
                s, src->index, src->c->url, model, (unsigned long long)st[src->index].step);
    }
    for (uint32_t k = 0; k < R && rc == 0; k++) {
        replica *r = cl_rep(cl, s, k);

        if (r == src || !st[k].ok || (dst_only != NULL && r != dst_only))
            continue;
        if (st[k].has && !st[k].resyncing && st[k].step == st[src->index].step && !r->behind)
            continue;
        if ((rc = sync_model(c, src, r, model)) == 0 && copied != NULL)
            (*copied)++;
    }
    return rc;
}

/* The models of shard s: the union of its reachable replicas' lists (malloc'd). */
static int
shard_models(emad_client *c, uint32_t s, emad_model_info **out, size_t *n)
{
    struct cluster *cl = c->cl;
    emad_model_info *all = NULL;
    size_t total = 0;

    for (uint32_t k = 0; k < cl->map->replicas; k++) {
        replica *r = cl_rep(cl, s, k);
        emad_model_info *l = NULL, *grown;
        size_t ln = 0;

        if (cl_ready(cl, r) != 0 || emad_list(r->c, &l, &ln) != 0)
            continue;
        if ((grown = realloc(all, (total + ln + 1) * sizeof(*all))) == NULL) {
            free(l);
            free(all);
            return fail(c, EMAD_ENOMEM, "resync: out of memory");
        }
        all = grown;
        for (size_t i = 0; i < ln; i++) {
            size_t j = 0;

            while (j < total && strcmp(all[j].name, l[i].name) != 0)
                j++;
            if (j == total)
                all[total++] = l[i];
        }
        free(l);
    }
    *out = all;
    *n = total;
    return 0;
}

/* Bring replica dst (or, with dst NULL, every replica) up to date for model (NULL: all). */
static int
sync_some(emad_client *c, replica *dst, const char *model, size_t *copied)
{
    struct cluster *cl = c->cl;
    int rc = 0;

    for (uint32_t s = 0; s < cl->map->shards && rc == 0; s++) {
        emad_model_info *l = NULL;
        size_t n = 0;

        if (dst != NULL && dst->shard != s)
            continue;
        if (model != NULL) {
            rc = sync_shard_model(c, s, model, dst, copied);
            continue;
        }
        if ((rc = shard_models(c, s, &l, &n)) != 0)
            break;
        for (size_t i = 0; i < n && rc == 0; i++)
            rc = sync_shard_model(c, s, l[i].name, dst, copied);
        free(l);
    }
    return rc;
}

int
cl_sync_replica(emad_client *c, replica *dst, const char *model)
{
    return sync_some(c, dst, model, NULL);
}

void
cl_sync_behind(emad_client *c, const char *model)
{
    struct cluster *cl = c->cl;

    (void)model; /* a replica that missed writes may have missed them for any model */
    for (size_t i = 0; i < (size_t)cl->map->shards * cl->map->replicas; i++) {
        replica *r = &cl->reps[i];
        char saved[sizeof(c->err)];
        int rc;

        if (!r->behind || cl_ready(cl, r) != 0)
            continue;
        memcpy(saved, c->err, sizeof(saved));
        if ((rc = cl_sync_replica(c, r, NULL)) == 0)
            r->behind = 0;
        else
            cl_warn(cl, "shard %u replica %u %s: resync failed: %s", r->shard, r->index, r->c->url,
                    c->err);
        memcpy(c->err, saved, sizeof(saved));
    }
}

int
cl_resync(emad_client *c, const char *model, size_t *copied)
{
    int rc = sync_some(c, NULL, model, copied);

    if (rc == 0 && model == NULL)
        for (size_t i = 0; i < (size_t)c->cl->map->shards * c->cl->map->replicas; i++)
            if (c->cl->reps[i].up)
                c->cl->reps[i].behind = 0;
    return rc;
}

/* Bring behind replicas up to date. */
EMAD_EXTERN int
emad_cluster_resync(emad_client *c, const char *model, size_t *copied)
{
    size_t n = 0;
    int rc;

    if (c == NULL || c->cl == NULL)
        return EMAD_EINVAL;
    call_begin(c);
    if (model != NULL && (rc = check_model(c, model)) != 0)
        return call_end(c, rc);
    rc = cl_resync(c, model, &n);
    if (copied != NULL)
        *copied = n;
    return call_end(c, rc);
}

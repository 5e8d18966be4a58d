/*
 * ops_model.c - the ops about models and the daemon: hello, create,
 * configure, drop, list, stats and snapshot (docs/PROTOCOL.md).
 *
 * A list of one model's tensors comes in pages (offset, limit, next) of at
 * most PROTO_LIST_PAGE tensors and PROTO_LIST_PAGE_BYTES, so any model can
 * be listed and no list holds the loop for long: a page is sized and packed
 * in a few milliseconds and fits in the socket's send buffer, so sending it
 * does not wait for the client to read.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nanomsg/nn.h>

#include "config.h"
#include "common/counters.h"
#include "common/names.h"
#include "common/emaconf.h"
#include "common/errors.h"
#include "base/log.h"
#include "base/xmalloc.h"
#include "daemon/server_int.h"

/* Pack a hello reply: the daemon's identity and limits. */
static void
build_hello(msgpack_packer *pk, const void *ctx)
{
    const server *srv = ctx;

    reply_pack_head(pk, 1, 9 + shard_hello_count(srv->shard));
    proto_pack_str(pk, PROTO_KEY_AUTH);
    if (srv->auth != NULL)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
    proto_pack_str(pk, PROTO_KEY_SERVER);
    proto_pack_str(pk, PROTO_VAL_SERVER_NAME);
    proto_pack_str(pk, PROTO_KEY_VERSION);
    proto_pack_str(pk, PACKAGE_VERSION);
    proto_pack_kv_u64(pk, PROTO_KEY_PROTOCOL, PROTO_VERSION);
    proto_pack_kv_u64(pk, PROTO_KEY_MAX_MESSAGE_BYTES, srv->cfg.max_message_bytes);
    proto_pack_kv_u64(pk, PROTO_KEY_MAX_TENSORS, PROTO_MAX_TENSORS);
    proto_pack_kv_u64(pk, PROTO_KEY_MAX_NAME_BYTES, EMAD_MAX_NAME_BYTES);
    proto_pack_kv_u64(pk, PROTO_KEY_MAX_NDIM, EMAD_MAX_NDIM);
    proto_pack_kv_u64(pk, PROTO_KEY_TXN_TIMEOUT_MS, srv->cfg.txn_timeout_ms);
    shard_pack_hello(pk, srv->shard);
}

/* hello: the daemon's identity and limits. */
int
ops_model_hello(req *r, store_err *err)
{
    (void)err;
    reply_send(r, build_hello, r->srv);
    return 0;
}

/* Pack a create reply: whether the model is new. */
static void
build_created(msgpack_packer *pk, const void *ctx)
{
    reply_pack_head(pk, 1, 1);
    proto_pack_str(pk, PROTO_KEY_CREATED);
    if (*(const int *)ctx)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
}

/* Read the configuration keys of a create or configure request over cfg. */
static int
get_config(const msgpack_object *root, emad_model_config *cfg, emaconf_strings *strings,
           store_err *err)
{
    char why[256];
    int rc = emaconf_unpack(root, cfg, strings, why, sizeof(why));

    if (rc != 0)
        return request_fail(err, rc, "%s", why);
    return 0;
}

/* Log a model's configuration as key=value fields. */
static void
log_config(const char *event, const char *name, size_t len, const emad_model_config *cfg)
{
    char decays[256], g[32], p[32], md[32], d[32];
    int off = 0;

    decays[0] = '\0';
    for (size_t i = 0; i < cfg->ndecays && off < (int)sizeof(decays); i++)
        off += snprintf(decays + off, sizeof(decays) - (size_t)off, "%s%s", i ? "," : "",
                        emaconf_fmt_double(d, sizeof(d), cfg->decays[i]));
    log_info("event=%s model=%.*s decays=%s schedule=%s update_after_step=%llu inv_gamma=%s "
             "power=%s min_decay=%s step_gap=%s buffers=%s nonfinite=%s writers=%u "
             "copy_patterns=%zu ignore_patterns=%zu",
             event, (int)len, name, decays, emaconf_schedule_name(cfg->schedule),
             (unsigned long long)cfg->update_after_step,
             emaconf_fmt_double(g, sizeof(g), cfg->inv_gamma),
             emaconf_fmt_double(p, sizeof(p), cfg->power),
             emaconf_fmt_double(md, sizeof(md), cfg->min_decay),
             emaconf_step_gap_name(cfg->step_gap), emaconf_buffers_name(cfg->buffers),
             emaconf_nonfinite_name(cfg->nonfinite), cfg->writers, cfg->ncopy, cfg->nignore);
}

/* create: a new model, or the existing one with exist_ok. */
int
ops_model_create(req *r, store_err *err)
{
    const char *name;
    size_t len;
    int exist_ok = 0, created = 0;
    emad_model_config cfg;
    emaconf_strings *strings = xmalloc(sizeof(*strings));

    emaconf_init(&cfg);
    if (request_get_str(r->root, PROTO_KEY_MODEL, &name, &len, err) ||
        get_config(r->root, &cfg, strings, err) ||
        request_get_bool(r->root, PROTO_KEY_EXIST_OK, &exist_ok, err) ||
        store_create_model(r->srv->store, name, len, &cfg, exist_ok, &created, err)) {
        free(strings);
        return err->code;
    }
    if (created)
        log_config("model_created", name, len, &cfg);
    free(strings);
    reply_send(r, build_created, &created);
    return 0;
}

/* configure: change a model's configuration keys. */
int
ops_model_configure(req *r, store_err *err)
{
    const char *name;
    size_t len;
    const model *m;
    emad_model_config cfg;
    emaconf_strings *strings;

    if (request_get_str(r->root, PROTO_KEY_MODEL, &name, &len, err))
        return err->code;
    if ((m = store_model_find(r->srv->store, name, len)) == NULL)
        return request_fail(err, EMAD_ENOMODEL, "no model '%.*s'", (int)(len > 128 ? 128 : len),
                            name);
    cfg = m->cfg; /* absent keys keep their values; patterns borrowed from the model */
    strings = xmalloc(sizeof(*strings));
    if (get_config(r->root, &cfg, strings, err) ||
        store_configure(r->srv->store, name, len, &cfg, err)) {
        free(strings);
        return err->code;
    }
    log_config("model_configured", name, len, &m->cfg);
    free(strings);
    reply_send(r, reply_build_empty, NULL);
    return 0;
}

/* drop: delete a model (and, with a state directory, its snapshots). */
int
ops_model_drop(req *r, store_err *err)
{
    const char *name;
    size_t len;

    if (request_get_str(r->root, PROTO_KEY_MODEL, &name, &len, err) ||
        store_drop_model(r->srv->store, name, len, err))
        return err->code;
    if (r->srv->persist != NULL) {
        char buf[EMAD_MAX_MODEL_NAME_BYTES + 1];
        persist_forget(r->srv->persist, names_printable(buf, sizeof(buf), name, len));
    }
    log_info("event=model_dropped model=%.*s", (int)len, name);
    reply_send(r, reply_build_empty, NULL);
    return 0;
}

/* A list reply's context: the store, the time, and one model (or NULL for all) with the page of
 * its tensors [first, first + count) and whether more follow. */
typedef struct list_ctx {
    store *s;
    const model *m;
    uint64_t now_ms;
    size_t first, count;
    int more;
    const req *r; /* whose user may see only some models */
} list_ctx;

/* Pack one model summary. */
static void
pack_model(msgpack_packer *pk, const model *m, uint64_t now_ms)
{
    int pushed = m->last_push_ms != 0;

    msgpack_pack_map(pk, 8 + pushed + (m->resyncing != 0));
    if (m->resyncing) {
        proto_pack_str(pk, PROTO_KEY_RESYNCING);
        msgpack_pack_true(pk);
    }
    if (pushed)
        proto_pack_kv_u64(pk, PROTO_KEY_LAST_PUSH_AGE_MS,
                          now_ms >= m->last_push_ms ? now_ms - m->last_push_ms : 0);
    proto_pack_str(pk, PROTO_KEY_NAME);
    proto_pack_str(pk, m->name);
    proto_pack_kv_u64(pk, PROTO_KEY_SNAPSHOT_STEP, m->snap_version != 0 ? m->snap_step : 0);
    proto_pack_str(pk, PROTO_KEY_DECAY);
    msgpack_pack_double(pk, m->cfg.decays[0]);
    proto_pack_kv_u64(pk, PROTO_KEY_STEP, m->step);
    proto_pack_kv_u64(pk, PROTO_KEY_TENSORS, m->ntensors);
    proto_pack_kv_u64(pk, PROTO_KEY_SHADOW_BYTES, m->shadow_bytes);
    proto_pack_kv_u64(pk, PROTO_KEY_STEPS_PENDING, m->npending);
    proto_pack_str(pk, PROTO_KEY_CONFIG);
    msgpack_pack_map(pk, EMACONF_PACKED_KEYS);
    emaconf_pack(pk, &m->cfg);
}

/* Pack a list reply of every model. */
static void
build_list_models(msgpack_packer *pk, const void *vctx)
{
    const list_ctx *ctx = vctx;
    store *s = ctx->s;
    size_t n = 0;
    model *m;

    for (size_t i = 0; (m = store_model_at(s, i)) != NULL; i++)
        n += ops_auth_visible(ctx->r, m->name);
    reply_pack_head(pk, 1, 1);
    proto_pack_str(pk, PROTO_KEY_MODELS);
    msgpack_pack_array(pk, n);
    for (size_t i = 0; (m = store_model_at(s, i)) != NULL; i++)
        if (ops_auth_visible(ctx->r, m->name))
            pack_model(pk, m, ctx->now_ms);
}

/* Pack the description of a stored tensor (ctx: the tensor). */
static void
pack_desc(msgpack_packer *pk, const void *ctx)
{
    const tensor *t = ctx;
    view_tensor vt = {.name = t->name,
                      .name_len = t->name_len,
                      .kind = t->kind,
                      .dtype = t->dtype,
                      .averaged = t->averaged,
                      .ndim = t->ndim,
                      .nbytes = t->nbytes,
                      .step = t->step};

    memcpy(vt.shape, t->shape, sizeof(vt.shape));
    ops_pull_pack_tensor(pk, &vt, 0);
}

/* Stored tensor i of the array of pointers items. */
static const void *
tensor_item(const void *items, size_t i)
{
    return ((tensor *const *)items)[i];
}

/* Pack a list reply of one model and a page of its tensors. */
static void
build_list_model(msgpack_packer *pk, const void *vctx)
{
    const list_ctx *ctx = vctx;
    const model *m = ctx->m;

    reply_pack_head(pk, 1, 3 + ctx->more);
    proto_pack_str(pk, PROTO_KEY_MODEL);
    pack_model(pk, m, ctx->now_ms);
    proto_pack_kv_u64(pk, PROTO_KEY_OFFSET, ctx->first);
    if (ctx->more)
        proto_pack_kv_u64(pk, PROTO_KEY_NEXT, ctx->first + ctx->count);
    proto_pack_str(pk, PROTO_KEY_TENSORS);
    msgpack_pack_array(pk, ctx->count);
    for (size_t i = ctx->first; i < ctx->first + ctx->count; i++)
        pack_desc(pk, m->tensors[i]);
}

/*
 * Choose the page of ctx->m's tensors a list reply holds: from offset, at
 * most limit tensors, as many as fit in max_reply bytes (at least one).
 * Sizing is one pass over the page's descriptions, never the whole model.
 */
static int
list_page(list_ctx *ctx, uint64_t offset, uint64_t limit, uint64_t max_reply, store_err *err)
{
    const model *m = ctx->m;
    size_t used;

    if (offset > m->ntensors)
        return request_fail(err, EMAD_ERANGE,
                            PROTO_KEY_OFFSET " %llu is beyond the model's %zu tensors",
                            (unsigned long long)offset, m->ntensors);
    ctx->first = (size_t)offset;
    ctx->count = 0;
    ctx->more = 1;
    /* The reply without tensors, with the largest array header (5 bytes) and next value. */
    used = reply_size(build_list_model, ctx) + 5 + 9;
    ctx->count = reply_page_count(ctx->first, m->ntensors, limit, max_reply, used, pack_desc,
                                  tensor_item, m->tensors);
    ctx->more = ctx->first + ctx->count < m->ntensors;
    return 0;
}

/* list: every model's summary, or one model with a page of its tensors. */
int
ops_model_list(req *r, store_err *err)
{
    const msgpack_object *o = proto_map_get(r->root, PROTO_KEY_MODEL);
    list_ctx ctx = {r->srv->store, NULL, r->now_ms, 0, 0, 0, r};
    uint64_t offset = 0, limit = PROTO_LIST_PAGE, max_reply = r->srv->cfg.max_message_bytes;
    int has_offset = 0, has_limit = 0, present;
    const char *name;
    size_t len;
    model *m;

    if (o == NULL) {
        reply_send(r, build_list_models, &ctx);
        return 0;
    }
    if (request_get_str(r->root, PROTO_KEY_MODEL, &name, &len, err) != 0 ||
        request_get_u64(r->root, PROTO_KEY_OFFSET, &offset, &has_offset, err) != 0 ||
        request_get_u64(r->root, PROTO_KEY_LIMIT, &limit, &has_limit, err) != 0 ||
        request_get_u64(r->root, PROTO_KEY_MAX_REPLY_BYTES, &max_reply, &present, err) != 0)
        return err->code;
    if (has_limit && (limit == 0 || limit > PROTO_LIST_PAGE))
        return request_fail(err, EMAD_ERANGE, PROTO_KEY_LIMIT " must be 1 to %d", PROTO_LIST_PAGE);
    if (max_reply < PROTO_REPLY_OVERHEAD * 2)
        return request_fail(err, EMAD_ERANGE, PROTO_KEY_MAX_REPLY_BYTES " must be at least %d",
                            PROTO_REPLY_OVERHEAD * 2);
    if (max_reply > r->srv->cfg.max_message_bytes)
        max_reply = r->srv->cfg.max_message_bytes;
    if (max_reply > PROTO_LIST_PAGE_BYTES)
        max_reply = PROTO_LIST_PAGE_BYTES;
    if ((m = store_model_find(r->srv->store, name, len)) == NULL) {
        char buf[EMAD_MAX_MODEL_NAME_BYTES + 1];
        return request_fail(err, EMAD_ENOMODEL, "no model '%s'",
                            names_printable(buf, sizeof(buf), name, len));
    }
    ctx.m = m;
    if (list_page(&ctx, offset, limit, max_reply, err) != 0)
        return err->code;
    /* A client that does not page (older ones) gets the whole list or a clear error, never a
     * part it would take for the whole. */
    if (ctx.more && !has_offset && !has_limit)
        return request_fail(err, EMAD_ELIMIT,
                            "model '%s' has %zu tensors, more than one list reply holds: list "
                            "them in pages with '" PROTO_KEY_OFFSET "' and '" PROTO_KEY_LIMIT "'",
                            m->name, m->ntensors);
    reply_send(r, build_list_model, &ctx);
    return 0;
}

/* Number of entries build_stats packs. */
static size_t
stats_count(const server *srv)
{
    size_t n = COUNTER_COUNT + 9 + 8 + 2 + BUDGET_PART_COUNT;

    for (int op = 1; op < PROTO_OP_COUNT; op++)
        n++;
    for (int i = 0; i <= EMAD_ERRNO_LAST - EMAD_ERRNO_FIRST; i++)
        n += srv->err_counts[i] != 0;
    return n;
}

/* Pack a stats reply: every counter, per op, per error code, and the gauges. */
static void
build_stats(msgpack_packer *pk, const void *ctx)
{
    const server *srv = ctx;
    store_gauges g;
    char name[64];

    store_gauges_get(srv->store, &g);
    reply_pack_head(pk, 1, 1);
    proto_pack_str(pk, PROTO_KEY_STATS);
    msgpack_pack_map(pk, stats_count(srv));
    for (int i = 0; i < COUNTER_COUNT; i++)
        proto_pack_kv_u64(pk, counters_name(i), srv->counters[i]);
    for (int op = 1; op < PROTO_OP_COUNT; op++) {
        snprintf(name, sizeof(name), COUNTERS_OP_PREFIX "%s", proto_op_name(op));
        proto_pack_kv_u64(pk, name, srv->op_counts[op]);
    }
    for (int i = 0; i <= EMAD_ERRNO_LAST - EMAD_ERRNO_FIRST; i++) {
        if (srv->err_counts[i] == 0)
            continue;
        snprintf(name, sizeof(name), COUNTERS_ERROR_PREFIX "%s", errors_name(-(EMAD_ERRNO_FIRST + i)));
        proto_pack_kv_u64(pk, name, srv->err_counts[i]);
    }
    proto_pack_kv_u64(pk, PROTO_KEY_MODELS, g.models);
    proto_pack_kv_u64(pk, PROTO_KEY_TENSORS, g.tensors);
    proto_pack_kv_u64(pk, PROTO_KEY_SHADOW_BYTES, g.shadow_bytes);
    proto_pack_kv_u64(pk, PROTO_KEY_TXN_OPEN, g.txn_open);
    proto_pack_kv_u64(pk, PROTO_KEY_SESSIONS_OPEN, g.views_open);
    proto_pack_kv_u64(pk, PROTO_KEY_STEPS_PENDING, g.steps_pending);
    proto_pack_kv_u64(pk, PROTO_KEY_STAGED_BYTES, g.staged_bytes);
    proto_pack_kv_u64(pk, PROTO_KEY_MEMORY_BUDGET_BYTES, g.memory_limit);
    proto_pack_kv_u64(pk, PROTO_KEY_MEMORY_BYTES, g.memory_total);
    for (int p = 0; p < BUDGET_PART_COUNT; p++) {
        snprintf(name, sizeof(name), PROTO_KEY_MEMORY_PART_PREFIX "%s" PROTO_KEY_MEMORY_PART_SUFFIX,
                 budget_part_name(p));
        proto_pack_kv_u64(pk, name, g.memory[p]);
    }
    persist_stats ps;
    memset(&ps, 0, sizeof(ps));
    if (srv->persist != NULL)
        persist_stats_get(srv->persist, &ps);
    proto_pack_kv_u64(pk, PROTO_KEY_SNAPSHOTS_WRITTEN, ps.written);
    proto_pack_kv_u64(pk, PROTO_KEY_SNAPSHOT_FAILURES, ps.failed);
    proto_pack_kv_u64(pk, PROTO_KEY_SNAPSHOT_BYTES, ps.bytes);
    proto_pack_kv_u64(pk, PROTO_KEY_SNAPSHOT_LAST_SUCCESS_UNIX_SECONDS,
                      ps.last_success_unix_ms / 1000);
    proto_pack_kv_u64(pk, PROTO_KEY_SNAPSHOT_LAST_DURATION_MS, ps.last_duration_ms);
    proto_pack_kv_u64(pk, PROTO_KEY_SNAPSHOT_RUNNING, ps.running);
    proto_pack_kv_u64(pk, PROTO_KEY_SNAPSHOTS_LOADED, ps.loaded);
    proto_pack_kv_u64(pk, PROTO_KEY_SNAPSHOTS_BROKEN, ps.broken);
    proto_pack_kv_u64(pk, PROTO_KEY_UPTIME_SECONDS, (server_now(srv) - srv->start_ms) / 1000);
    proto_pack_kv_u64(pk, PROTO_KEY_MAX_MESSAGE_BYTES, srv->cfg.max_message_bytes);
}

/* stats: the daemon's counters and gauges. */
int
ops_model_stats(req *r, store_err *err)
{
    (void)err;
    reply_send(r, build_stats, r->srv);
    return 0;
}

/* A snapshot request whose reply waits for the files to be durable. */
typedef struct snap_wait {
    server *srv;
    req_auth auth; /* the reply is a frame of this session when auth.session != 0 */
    void *ctrl; /* routing header of the request */
    uint64_t t0;
} snap_wait;

/* Pack a snapshot reply: the step written. */
static void
build_snapshot(msgpack_packer *pk, const void *ctx)
{
    reply_pack_head(pk, 1, 1);
    proto_pack_kv_u64(pk, PROTO_KEY_STEP, *(const uint64_t *)ctx);
}

/* persist_cb: the snapshot is durable (rc 0) or failed: answer the request. */
static void
snapshot_done(void *arg, int rc, const char *message, uint64_t step)
{
    snap_wait *w = arg;
    store_err err;
    req r;

    async_late_begin(&r, &err, w->srv, PROTO_OP_SNAPSHOT, w->ctrl, w->t0);
    async_late_auth(&r, &w->auth);
    if (rc == 0)
        reply_send(&r, build_snapshot, &step);
    else
        rc = request_fail(&err, rc == EMAD_ENOMODEL ? rc : EMAD_ESNAPSHOT, "snapshot failed: %s",
                          message);
    async_late_end(&r, rc, &err);
    free(w);
}

/* snapshot: write every changed model (or one) and answer once durable. */
int
ops_model_snapshot(req *r, store_err *err)
{
    const msgpack_object *o = proto_map_get(r->root, PROTO_KEY_MODEL);
    char buf[EMAD_MAX_MODEL_NAME_BYTES + 1];
    const char *name = NULL;
    size_t len = 0;
    snap_wait *w;

    if (r->srv->persist == NULL || r->capture != NULL)
        return request_fail(
            err, EMAD_ENOSTATE,
            "this daemon runs without --state-dir: there is nowhere to snapshot to");
    if (o != NULL && request_get_str(r->root, PROTO_KEY_MODEL, &name, &len, err) != 0)
        return err->code;
    if (name != NULL && store_model_find(r->srv->store, name, len) == NULL)
        return request_fail(err, EMAD_ENOMODEL, "no model '%s'",
                            names_printable(buf, sizeof(buf), name, len));
    w = xcalloc(1, sizeof(*w));
    w->srv = r->srv;
    w->auth = r->auth;
    w->ctrl = r->ctrl;
    w->t0 = r->t0;
    r->ctrl = NULL; /* the reply is sent later, with this header, and counted then */
    r->deferred = 1;
    persist_request(r->srv->persist,
                    name != NULL ? names_printable(buf, sizeof(buf), name, len) : NULL,
                    snapshot_done, w);
    return 0;
}

/*
 * install (cluster mode): a model's state copied from a peer replica, in
 * messages: `begin` with the configuration (the model is created anew and
 * refuses pushes and pulls until `end`), data messages (`shadow`, `steps`,
 * `tensors` with byte offsets and as_dtype), `end` at the peer's step; or
 * `accept`: a model loaded from a snapshot keeps its state.
 */
int
ops_model_install(req *r, store_err *err)
{
    store *s = r->srv->store;
    const char *name;
    size_t len, n = 0;
    int begin = 0, end = 0, accept = 0, has_shadow = 0, rc;
    uint64_t step = 0, shadow = 0;
    const msgpack_object *steps;
    store_input *in = NULL;

    if (r->srv->shard == NULL)
        return request_fail(err, EMAD_EMOVED, "install: this daemon is not part of a cluster");
    if (request_get_str(r->root, PROTO_KEY_MODEL, &name, &len, err) ||
        request_get_bool(r->root, PROTO_KEY_ANEW, &begin, err) ||
        request_get_bool(r->root, PROTO_KEY_END, &end, err) ||
        request_get_bool(r->root, PROTO_KEY_ACCEPT, &accept, err) ||
        request_get_u64(r->root, PROTO_KEY_STEP, &step, &(int){0}, err) ||
        request_get_u64(r->root, PROTO_KEY_DECAY_INDEX, &shadow, &has_shadow, err))
        return err->code;
    if (names_check_model(name, len) != 0)
        return request_fail(err, EMAD_ENAME, "install: invalid model name");
    if (begin) {
        emad_model_config cfg;
        emaconf_strings *strings = xmalloc(sizeof(*strings));

        emaconf_init(&cfg);
        rc =
            get_config(r->root, &cfg, strings, err) || store_install_begin(s, name, len, &cfg, err);
        free(strings);
        if (rc != 0)
            return err->code;
        log_info("event=install_begin model=%.*s", (int)len, name);
    } else if (end) {
        if (store_install_end(s, name, len, step, err) != 0)
            return err->code;
        log_info("event=install_end model=%.*s step=%llu", (int)len, name,
                 (unsigned long long)step);
    } else if (accept) {
        if (store_install_accept(s, name, len, err) != 0)
            return err->code;
    } else {
        steps = proto_map_get(r->root, PROTO_KEY_STEPS);
        if (!has_shadow || shadow >= EMAD_MAX_DECAYS)
            return request_fail(err, EMAD_EMALFORMED, "install: 'shadow' missing or too large");
        if (request_decode_tensors(r->root, 1, &in, &n, err) != 0)
            return err->code;
        if (steps == NULL || steps->type != MSGPACK_OBJECT_ARRAY || steps->via.array.size != n) {
            free(in);
            return request_fail(err, EMAD_EMALFORMED,
                                "install: 'steps' must give each tensor's step");
        }
        for (size_t i = 0; i < n; i++) {
            const msgpack_object *o = &steps->via.array.ptr[i];

            if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
                free(in);
                return request_fail(err, EMAD_EMALFORMED, "install: steps[%zu] is not a uint", i);
            }
            if (store_install_data(s, name, len, (uint32_t)shadow, &in[i], o->via.u64, err) != 0) {
                free(in);
                return err->code;
            }
        }
        free(in);
    }
    reply_send(r, reply_build_empty, NULL);
    return 0;
}

/*
 * ops_pull.c - the ops that read shadows: pull (inline, or a session read
 * in ranges), read and release.
 *
 * A pull with `offset` or `limit` (or naming a `session`) is paged like a
 * list: its descriptions come in pages of at most PROTO_LIST_PAGE tensors
 * and PROTO_LIST_PAGE_BYTES, all of one session, so a model of any size can
 * be pulled whole and no reply outgrows a limit or holds the loop for long.
 */
#include <stdlib.h>
#include <string.h>

#include "common/names.h"
#include "common/codec.h"
#include "common/dtype.h"
#include "base/log.h"
#include "base/xmalloc.h"
#include "daemon/server_int.h"

/* Context of a pull reply: the view, and the descriptions [first, first + count) it holds. */
typedef struct pull_ctx {
    const store_view *view;
    int inline_data;
    uint64_t session;
    int paged; /* the reply has offset, and next while more follow */
    size_t first, count;
} pull_ctx;

/* Pack one tensor's description (and data when inline). */
void
ops_pull_pack_tensor(msgpack_packer *pk, const view_tensor *vt, int with_data)
{
    codec_tensor t = {.name = vt->name,
                      .name_len = vt->name_len,
                      .kind = vt->kind,
                      .dtype = vt->dtype,
                      .ndim = vt->ndim,
                      .step = vt->step,
                      .nbytes = vt->nbytes,
                      .averaged = vt->averaged};

    memcpy(t.shape, vt->shape, vt->ndim * sizeof(t.shape[0]));
    codec_desc_pack_head(pk, &t, with_data);
    if (with_data)
        reply_pack_data(pk, vt, 0, vt->nbytes);
}

/* Pack a pull reply: tensors with their data, or their list and the session. */
static void
build_pull(msgpack_packer *pk, const void *vctx)
{
    const pull_ctx *ctx = vctx;
    const store_view *v = ctx->view;
    int more = ctx->paged && ctx->first + ctx->count < v->ntensors;

    reply_pack_head(pk, 1, (ctx->inline_data ? 3 : 4) + (ctx->paged ? 1 + more : 0));
    proto_pack_str(pk, PROTO_KEY_MODEL);
    proto_pack_str(pk, v->model);
    proto_pack_kv_u64(pk, PROTO_KEY_STEP, v->step);
    proto_pack_str(pk, PROTO_KEY_TENSORS);
    msgpack_pack_array(pk, ctx->count);
    for (size_t i = ctx->first; i < ctx->first + ctx->count; i++)
        ops_pull_pack_tensor(pk, &v->tensors[i], ctx->inline_data);
    if (!ctx->inline_data)
        proto_pack_kv_u64(pk, PROTO_KEY_SESSION, ctx->session);
    if (ctx->paged)
        proto_pack_kv_u64(pk, PROTO_KEY_OFFSET, ctx->first);
    if (more)
        proto_pack_kv_u64(pk, PROTO_KEY_NEXT, ctx->first + ctx->count);
}

/* View tensor i of the array items. */
static const void *
view_item(const void *items, size_t i)
{
    return (const view_tensor *)items + i;
}

/* Pack one view tensor's description (ctx: the view tensor), for sizing a page. */
static void
pack_desc(msgpack_packer *pk, const void *ctx)
{
    ops_pull_pack_tensor(pk, ctx, 0);
}

/*
 * Choose the page of descriptions of a session reply: from offset, at most
 * limit tensors, as many as fit in max_reply bytes (at least one). One pass
 * over the page's descriptions, never the whole view.
 */
static int
pull_page(pull_ctx *ctx, uint64_t offset, uint64_t limit, uint64_t max_reply, store_err *err)
{
    const store_view *v = ctx->view;
    size_t used;

    if (offset > v->ntensors)
        return request_fail(err, EMAD_ERANGE,
                            PROTO_KEY_OFFSET " %llu is beyond the pull's %zu tensors",
                            (unsigned long long)offset, v->ntensors);
    ctx->first = (size_t)offset;
    ctx->count = 0;
    /* The reply without tensors, with the largest array header (5 bytes) and next value. */
    used = reply_size(build_pull, ctx) + 5 + 12;
    ctx->count = reply_page_count(ctx->first, v->ntensors, limit, max_reply, used, pack_desc,
                                  view_item, v->tensors);
    return 0;
}

/* A page of descriptions of an open session (pull with `session`). */
static int
pull_more(req *r, uint64_t id, uint64_t offset, uint64_t limit, uint64_t max_reply, store_err *err)
{
    pull_ctx ctx = {NULL, 0, id, 1, 0, 0};

    if ((ctx.view = store_view_get(r->srv->store, id, r->now_ms)) == NULL)
        return request_fail(err, EMAD_ENOSESSION,
                            "no pull session %llu (unknown, expired or released)",
                            (unsigned long long)id);
    if (pull_page(&ctx, offset, limit, max_reply, err) != 0)
        return err->code;
    reply_send(r, build_pull, &ctx);
    return 0;
}

/* pull: a model's tensors inline, or their list and a session to read them from. */
int
ops_pull_pull(req *r, store_err *err)
{
    server *srv = r->srv;
    const msgpack_object *names = proto_map_get(r->root, PROTO_KEY_TENSORS);
    const char **np = NULL;
    size_t *nl = NULL, n = 0, len, size;
    const char *model_name;
    uint64_t max_reply = srv->cfg.max_message_bytes, max_inline = UINT64_MAX, step = 0;
    uint64_t offset = 0, limit = PROTO_LIST_PAGE, session = 0;
    int present, has_offset, has_limit, has_session, has_step = 0;
    store_view *v = NULL;
    pull_ctx ctx;
    view_options vo = {0, 0.0, EMAD_DTYPE_INVALID};
    const msgpack_object *decay = proto_map_get(r->root, PROTO_KEY_DECAY);

    if (request_get_u64(r->root, PROTO_KEY_MAX_REPLY_BYTES, &max_reply, &present, err) ||
        request_get_u64(r->root, PROTO_KEY_INLINE_BYTES, &max_inline, &present, err) ||
        request_get_u64(r->root, PROTO_KEY_OFFSET, &offset, &has_offset, err) ||
        request_get_u64(r->root, PROTO_KEY_LIMIT, &limit, &has_limit, err) ||
        request_get_u64(r->root, PROTO_KEY_SESSION, &session, &has_session, err) ||
        request_get_u64(r->root, PROTO_KEY_STEP, &step, &has_step, err))
        return err->code;
    if (has_limit && (limit == 0 || limit > PROTO_LIST_PAGE))
        return request_fail(err, EMAD_ERANGE, PROTO_KEY_LIMIT " must be 1 to %d", PROTO_LIST_PAGE);
    if (max_reply < PROTO_REPLY_OVERHEAD * 2)
        return request_fail(err, EMAD_ERANGE, PROTO_KEY_MAX_REPLY_BYTES " must be at least %d",
                            PROTO_REPLY_OVERHEAD * 2);
    if (max_reply > srv->cfg.max_message_bytes)
        max_reply = srv->cfg.max_message_bytes;
    if (has_session)
        return pull_more(r, session, offset, limit,
                         max_reply < PROTO_LIST_PAGE_BYTES ? max_reply : PROTO_LIST_PAGE_BYTES,
                         err);
    if (request_get_str(r->root, PROTO_KEY_MODEL, &model_name, &len, err))
        return err->code;
    if (decay != NULL) {
        vo.has_decay = 1;
        if (request_get_float(r->root, PROTO_KEY_DECAY, &vo.decay, err) != 0)
            return err->code;
        /* A float32 cannot hold most decays: it selects the decay that rounds to it. */
        if (decay->type == MSGPACK_OBJECT_FLOAT32 &&
            store_decay_from_f32(srv->store, model_name, len, vo.decay, &vo.decay, err) != 0)
            return err->code;
    }
    if (proto_map_get(r->root, PROTO_KEY_DTYPE) != NULL) {
        const char *dn;
        size_t dl;
        char buf[32];
        if (request_get_str(r->root, PROTO_KEY_DTYPE, &dn, &dl, err) != 0)
            return err->code;
        if (dl == PROTO_KEY_LEN(PROTO_VAL_DTYPE_SHADOW) &&
            memcmp(dn, PROTO_VAL_DTYPE_SHADOW, dl) == 0)
            vo.dtype = VIEW_DTYPE_SHADOW;
        else if ((vo.dtype = dtype_from_name(dn, dl)) == EMAD_DTYPE_INVALID)
            return request_fail(err, EMAD_EDTYPE, "unknown dtype '%s'",
                                names_printable(buf, sizeof(buf), dn, dl));
    }
    if (max_inline > max_reply)
        max_inline = max_reply;
    if (names != NULL) {
        if (names->type != MSGPACK_OBJECT_ARRAY)
            return request_fail(err, EMAD_EMALFORMED,
                                "key '" PROTO_KEY_TENSORS "' is not an array");
        n = names->via.array.size;
        np = xcalloc(n ? n : 1, sizeof(*np));
        nl = xcalloc(n ? n : 1, sizeof(*nl));
        for (size_t i = 0; i < n; i++) {
            const msgpack_object *e = &names->via.array.ptr[i];
            if (e->type != MSGPACK_OBJECT_STR) {
                free(np);
                free(nl);
                return request_fail(err, EMAD_EMALFORMED, PROTO_KEY_TENSORS "[%zu] is not a string",
                                    i);
            }
            np[i] = e->via.str.ptr;
            nl[i] = e->via.str.size;
        }
    }
    /* With a step (cluster mode): the current or the kept previous version at that step. */
    int rc = has_step ? store_view_create_at(srv->store, model_name, len, names != NULL ? np : NULL,
                                             nl, n, &vo, step, &v, err)
                      : store_view_create(srv->store, model_name, len, names != NULL ? np : NULL,
                                          nl, n, &vo, &v, err);
    free(np);
    free(nl);
    if (rc != 0)
        return rc;
    ctx = (pull_ctx){v, 1, 0, has_offset || has_limit, 0, v->ntensors};
    if ((!ctx.paged || (offset == 0 && v->ntensors <= limit)) &&
        (size = reply_size(build_pull, &ctx)) <= max_inline) {
        uint64_t total = 0;
        if (reply_check_budget(r, size, err) != 0) {
            store_view_free(v);
            return err->code;
        }
        for (size_t i = 0; i < v->ntensors; i++)
            total += v->tensors[i].nbytes;
        if (!async_reply(r, build_pull, &ctx, total))
            reply_send(r, build_pull, &ctx);
        store_view_free(v);
        return 0;
    }
    v->max_reply = max_reply;
    if (store_view_register(srv->store, v, r->now_ms, err) != 0) {
        store_view_free(v);
        return err->code;
    }
    ctx.inline_data = 0;
    ctx.session = v->id;
    ops_auth_own(r, 's', v->id, v->model, strlen(v->model));
    if (ctx.paged &&
        pull_page(&ctx, offset, limit,
                  max_reply < PROTO_LIST_PAGE_BYTES ? max_reply : PROTO_LIST_PAGE_BYTES,
                  err) != 0) {
        store_err keep = *err;
        (void)store_view_release(srv->store, v->id, err);
        *err = keep;
        return err->code;
    }
    if (!ctx.paged && reply_size(build_pull, &ctx) > max_reply) {
        (void)store_view_release(srv->store, v->id, err);
        return request_fail(err, EMAD_ELIMIT,
                            "the tensor list alone exceeds " PROTO_KEY_MAX_REPLY_BYTES
                            " %llu: pull fewer tensors, or in pages with '" PROTO_KEY_OFFSET
                            "' and '" PROTO_KEY_LIMIT "'",
                            (unsigned long long)max_reply);
    }
    log_debug("event=pull_session model=%s session=%llu tensors=%zu", v->model,
              (unsigned long long)v->id, v->ntensors);
    reply_send(r, build_pull, &ctx);
    return 0;
}

/* Context of a read reply. */
typedef struct read_ctx {
    const store_view *view;
    const msgpack_object *ranges;
} read_ctx;

/* Pack a read reply: the data of each range. */
static void
build_read(msgpack_packer *pk, const void *vctx)
{
    const read_ctx *ctx = vctx;
    const msgpack_object *rs = ctx->ranges;

    reply_pack_head(pk, 1, 1);
    proto_pack_str(pk, PROTO_KEY_DATA);
    msgpack_pack_array(pk, rs->via.array.size);
    for (uint32_t i = 0; i < rs->via.array.size; i++) {
        const msgpack_object *t = rs->via.array.ptr[i].via.array.ptr;
        reply_pack_data(pk, &ctx->view->tensors[t[0].via.u64], t[1].via.u64, t[2].via.u64);
    }
}

/* read: byte ranges of a pull session's tensors. */
int
ops_pull_read(req *r, store_err *err)
{
    const msgpack_object *rs = proto_map_get(r->root, PROTO_KEY_RANGES);
    uint64_t id, total = 0;
    store_view *v;
    read_ctx ctx;

    if (request_get_u64(r->root, PROTO_KEY_SESSION, &id, NULL, err) != 0)
        return err->code;
    if (rs == NULL || rs->type != MSGPACK_OBJECT_ARRAY)
        return request_fail(err, EMAD_EMALFORMED,
                            "key '" PROTO_KEY_RANGES "' is %s (expected an array)",
                            rs == NULL ? "missing" : "not an array");
    if (rs->via.array.size > PROTO_MAX_RANGES)
        return request_fail(err, EMAD_ELIMIT, "at most %d ranges", PROTO_MAX_RANGES);
    if ((v = store_view_get(r->srv->store, id, r->now_ms)) == NULL)
        return request_fail(err, EMAD_ENOSESSION,
                            "no pull session %llu (unknown, expired or released)",
                            (unsigned long long)id);
    for (uint32_t i = 0; i < rs->via.array.size; i++) {
        const msgpack_object *o = &rs->via.array.ptr[i];
        const view_tensor *vt;
        uint64_t idx, off, len;
        size_t isz;

        if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 3 ||
            o->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
            o->via.array.ptr[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
            o->via.array.ptr[2].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            return request_fail(
                err, EMAD_EMALFORMED,
                PROTO_KEY_RANGES "[%u] is not an array [index, offset, length] of uints", i);
        idx = o->via.array.ptr[0].via.u64;
        off = o->via.array.ptr[1].via.u64;
        len = o->via.array.ptr[2].via.u64;
        if (idx >= v->ntensors)
            return request_fail(err, EMAD_ERANGE, PROTO_KEY_RANGES "[%u]: tensor index %llu >= %zu",
                                i, (unsigned long long)idx, v->ntensors);
        vt = &v->tensors[idx];
        isz = dtype_size(vt->dtype);
        if (off > vt->nbytes || len > vt->nbytes - off)
            return request_fail(err, EMAD_ERANGE,
                                PROTO_KEY_RANGES
                                "[%u]: [%llu, +%llu) is past the %llu bytes of '%s'",
                                i, (unsigned long long)off, (unsigned long long)len,
                                (unsigned long long)vt->nbytes, vt->name);
        if (vt->sdtype != vt->dtype && (off % isz != 0 || len % isz != 0))
            return request_fail(err, EMAD_ERANGE,
                                PROTO_KEY_RANGES
                                "[%u]: offset and length must be multiples of %zu for '%s'",
                                i, isz, vt->name);
        total += len;
    }
    if (total + PROTO_REPLY_OVERHEAD + 16ULL * rs->via.array.size > v->max_reply)
        return request_fail(err, EMAD_ELIMIT, "ranges total %llu bytes; at most %llu per read",
                            (unsigned long long)total,
                            (unsigned long long)(v->max_reply - PROTO_REPLY_OVERHEAD));
    ctx.view = v;
    ctx.ranges = rs;
    if (reply_check_budget(r, reply_size(build_read, &ctx), err) != 0)
        return err->code;
    if (!async_reply(r, build_read, &ctx, total))
        reply_send(r, build_read, &ctx);
    return 0;
}

/* release: end a pull session. */
int
ops_pull_release(req *r, store_err *err)
{
    uint64_t id;

    if (request_get_u64(r->root, PROTO_KEY_SESSION, &id, NULL, err) ||
        store_view_release(r->srv->store, id, err))
        return err->code;
    reply_send(r, reply_build_empty, NULL);
    return 0;
}

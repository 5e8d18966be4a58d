/*
 * admin.c - the model administration calls of libemad: create and
 * configure (with the local check of the EMA configuration), drop, list,
 * describe, stats, get_config and snapshot, and the configuration helpers
 * over src/common/emaconf (names of options, init, free). Each call is one
 * round trip; its reply is read by a parser of its own (list_parse,
 * describe_parse, stats_parse, config_parse).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "common/emaconf.h"
#include "common/names.h"

/* Arguments of a create or configure request. */
typedef struct create_req {
    int op; /* PROTO_OP_CREATE or PROTO_OP_CONFIGURE */
    const char *model;
    const emad_model_config *cfg;
    int exist_ok; /* create only */
} create_req;

/* Pack a create or configure request: the model name and every configuration key. */
static void
build_create(msgpack_packer *pk, const void *vctx)
{
    const create_req *q = vctx;
    int create = q->op == PROTO_OP_CREATE;

    pk_head(pk, q->op, 1 + EMACONF_PACKED_KEYS + create);
    pk_kv_str(pk, PROTO_KEY_MODEL, q->model);
    emaconf_pack(pk, q->cfg);
    if (create) {
        proto_pack_str(pk, PROTO_KEY_EXIST_OK);
        if (q->exist_ok)
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
    }
}

/* Fill cfg with the default configuration (one decay 0.999, constant schedule). */
EMAD_EXTERN void
emad_config_init(emad_model_config *cfg)
{
    if (cfg != NULL)
        emaconf_init(cfg);
}

/* Send a create or configure after checking the name and configuration locally. */
static int
send_config(emad_client *c, int op, const char *model, const emad_model_config *cfg, int exist_ok)
{
    create_req q = {op, model, cfg, exist_ok != 0};
    char why[256];
    reply r;
    int rc;

    if ((rc = check_model(c, model)) != 0)
        return rc;
    if (emaconf_check(cfg, why, sizeof(why)) != 0)
        return fail(c, EMAD_ERANGE, "%s", why);
    if ((rc = call(c, op, build_create, &q, c->opts.timeout_ms, &r)) == 0)
        reply_free(&r);
    return rc;
}

/* Create a model with a configuration (NULL: the defaults), checked locally first. */
EMAD_EXTERN int
emad_create_config(emad_client *c, const char *model, const emad_model_config *cfg, int exist_ok)
{
    emad_model_config defaults;

    if (c == NULL)
        return EMAD_EINVAL;
    call_begin(c);
    if (cfg == NULL) {
        emaconf_init(&defaults);
        cfg = &defaults;
    }
    if (c->cl != NULL)
        return call_end(c, cluster_create(c, model, cfg, exist_ok));
    return call_end(c, send_config(c, PROTO_OP_CREATE, model, cfg, exist_ok));
}

/* Create a model with one decay and the default options. */
EMAD_EXTERN int
emad_create(emad_client *c, const char *model, double decay, int exist_ok)
{
    emad_model_config cfg;

    emaconf_init(&cfg);
    cfg.decays[0] = decay;
    return emad_create_config(c, model, &cfg, exist_ok);
}

/* Change the configuration of an existing model, checked locally first. */
EMAD_EXTERN int
emad_configure(emad_client *c, const char *model, const emad_model_config *cfg)
{
    if (c == NULL || cfg == NULL)
        return EMAD_EINVAL;
    call_begin(c);
    if (c->cl != NULL)
        return call_end(c, cluster_configure(c, model, cfg));
    return call_end(c, send_config(c, PROTO_OP_CONFIGURE, model, cfg, 0));
}

/* Wire name of a schedule value, or NULL. */
EMAD_EXTERN const char *
emad_schedule_name(int v)
{
    return emaconf_schedule_name(v);
}

/* Wire name of a step_gap value, or NULL. */
EMAD_EXTERN const char *
emad_step_gap_name(int v)
{
    return emaconf_step_gap_name(v);
}

/* Wire name of a buffers value, or NULL. */
EMAD_EXTERN const char *
emad_buffers_name(int v)
{
    return emaconf_buffers_name(v);
}

/* Wire name of a nonfinite value, or NULL. */
EMAD_EXTERN const char *
emad_nonfinite_name(int v)
{
    return emaconf_nonfinite_name(v);
}

/* Value of an option's name (option "schedule", "step_gap", "buffers" or "nonfinite"), or -1. */
EMAD_EXTERN int
emad_option_from_name(const char *option, const char *name)
{
    if (option == NULL || name == NULL)
        return -1;
    return emaconf_from_name(option, name, strlen(name));
}

/* Free the pattern strings a configuration owns. */
EMAD_EXTERN void
emad_config_free(emad_model_config *cfg)
{
    emaconf_free(cfg);
}

/* Drop a model. */
EMAD_EXTERN int
emad_drop(emad_client *c, const char *model)
{
    simple_req q = {.op = PROTO_OP_DROP, .model = model};
    reply r;
    int rc;

    if (c == NULL)
        return EMAD_EINVAL;
    call_begin(c);
    if ((rc = check_model(c, model)) != 0)
        return call_end(c, rc);
    if (c->cl != NULL)
        return call_end(c, cluster_drop(c, model));
    if ((rc = call_simple(c, &q, &r)) == 0)
        reply_free(&r);
    return call_end(c, rc);
}

/* Fill an emad_model_info from a model map of a list reply. */
static int
parse_info(emad_client *c, const msgpack_object *o, emad_model_info *info)
{
    const msgpack_object *d;
    const char *name;
    size_t len;
    int rc;

    memset(info, 0, sizeof(*info));
    if (o->type != MSGPACK_OBJECT_MAP)
        return fail(c, EMAD_EPROTO, "list: model entry is not a map");
    if ((rc = rget_str(c, o, PROTO_KEY_NAME, &name, &len)) != 0)
        return rc;
    if (names_check_model(name, len) != 0)
        return fail(c, EMAD_EPROTO, "list: invalid model name in reply");
    memcpy(info->name, name, len);
    info->name[len] = '\0';
    d = proto_map_get(o, PROTO_KEY_DECAY);
    if (d == NULL)
        return fail(c, EMAD_EPROTO, "reply key 'decay' is missing");
    if (d->type == MSGPACK_OBJECT_FLOAT32 || d->type == MSGPACK_OBJECT_FLOAT64)
        info->decay = d->via.f64;
    else if (d->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        info->decay = (double)d->via.u64;
    else
        return fail(c, EMAD_EPROTO, "reply key 'decay' is not a number");
    if ((rc = rget_u64(c, o, PROTO_KEY_STEP, &info->step)) != 0 ||
        (rc = rget_u64(c, o, PROTO_KEY_TENSORS, &info->ntensors)) != 0 ||
        (rc = rget_u64(c, o, PROTO_KEY_SHADOW_BYTES, &info->shadow_bytes)) != 0 ||
        (rc = rget_u64(c, o, PROTO_KEY_SNAPSHOT_STEP, &info->snapshot_step)) != 0)
        return rc;
    d = proto_map_get(o, PROTO_KEY_LAST_PUSH_AGE_MS);
    info->last_push_age_ms = -1;
    if (d != NULL && d->type == MSGPACK_OBJECT_POSITIVE_INTEGER && d->via.u64 <= INT64_MAX)
        info->last_push_age_ms = (int64_t)d->via.u64;
    return 0;
}

/* Read a list reply into a malloc'd array *out of *n models. */
int
list_parse(emad_client *c, const reply *r, emad_model_info **out, size_t *n)
{
    const msgpack_object *arr;
    emad_model_info *v;
    int rc;

    if ((rc = rget_array(c, r->root, PROTO_KEY_MODELS, &arr)) != 0)
        return rc;
    if ((v = calloc(arr->via.array.size ? arr->via.array.size : 1, sizeof(*v))) == NULL)
        return fail(c, EMAD_ENOMEM, "list: out of memory");
    for (uint32_t i = 0; i < arr->via.array.size; i++) {
        if ((rc = parse_info(c, &arr->via.array.ptr[i], &v[i])) != 0) {
            free(v);
            return rc;
        }
    }
    *out = v;
    *n = arr->via.array.size;
    return 0;
}

/* A reply parser that fills a malloc'd array at *out (typed by the parser) and its length. */
typedef int (*array_parse_fn)(emad_client *c, const reply *r, void *out, size_t *n);

/*
 * One round trip of a request without arguments (list of models, stats)
 * whose reply parse() reads into an array; *n is 0 on failure.
 */
static int
call_array(emad_client *c, int op, array_parse_fn parse, void *out, size_t *n)
{
    simple_req q = {.op = op};
    reply r;
    int rc;

    call_begin(c);
    *n = 0;
    if ((rc = call_simple(c, &q, &r)) != 0)
        return call_end(c, rc);
    rc = parse(c, &r, out, n);
    reply_free(&r);
    return call_end(c, rc);
}

/* list_parse() and stats_parse() as array_parse_fn. */
static int
list_parse_any(emad_client *c, const reply *r, void *out, size_t *n)
{
    return list_parse(c, r, out, n);
}

static int
stats_parse_any(emad_client *c, const reply *r, void *out, size_t *n)
{
    return stats_parse(c, r, out, n);
}

/* List the daemon's models into a malloc'd array. */
EMAD_EXTERN int
emad_list(emad_client *c, emad_model_info **out, size_t *n)
{
    if (c == NULL || out == NULL || n == NULL)
        return EMAD_EINVAL;
    *out = NULL;
    if (c->cl != NULL) {
        call_begin(c);
        return call_end(c, cluster_list(c, out, n));
    }
    return call_array(c, PROTO_OP_LIST, list_parse_any, out, n);
}

/* Free a tensor array from emad_describe() and its names; NULL accepted. */
EMAD_EXTERN void
emad_tensors_free(emad_tensor *tensors, size_t n)
{
    if (tensors == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free((void *)tensors[i].name);
    free(tensors);
}

/* Read a describe (list of one model) reply into *info and a malloc'd *tensors of *n. */
int
describe_parse(emad_client *c, const reply *r, emad_model_info *info, emad_tensor **tensors,
               size_t *n)
{
    const msgpack_object *m, *arr;
    emad_tensor *v = NULL;
    size_t count = 0;
    codec_err err;
    int rc;

    if ((m = proto_map_get(r->root, PROTO_KEY_MODEL)) == NULL)
        return fail(c, EMAD_EPROTO, "reply key 'model' is missing");
    if ((rc = parse_info(c, m, info)) != 0 ||
        (rc = rget_array(c, r->root, PROTO_KEY_TENSORS, &arr)) != 0)
        return rc;
    if ((v = calloc(arr->via.array.size ? arr->via.array.size : 1, sizeof(*v))) == NULL)
        return fail(c, EMAD_ENOMEM, "describe: out of memory");
    for (uint32_t i = 0; i < arr->via.array.size; i++) {
        codec_tensor d;

        if (codec_desc_decode(&arr->via.array.ptr[i], i, &d, &err) != 0) {
            rc = fail_codec(c, &err);
            goto fail;
        }
        if ((v[i].name = strndup(d.name, d.name_len)) == NULL) {
            rc = fail(c, EMAD_ENOMEM, "describe: out of memory");
            goto fail;
        }
        count = i + 1;
        v[i].kind = d.kind;
        v[i].dtype = d.dtype;
        v[i].ndim = d.ndim;
        memcpy(v[i].shape, d.shape, sizeof(v[i].shape));
        v[i].nbytes = d.nbytes;
        v[i].step = d.step;
    }
    *tensors = v;
    *n = arr->via.array.size;
    return 0;
fail:
    emad_tensors_free(v, count);
    return rc;
}

/*
 * Read one page of a describe into *all (*n so far, growing) and set *next
 * to the offset of the next page, or 0 if this was the last. The model
 * summary comes from the last page read.
 */
static int
describe_page(emad_client *c, const reply *r, emad_model_info *info, emad_tensor **all, size_t *n,
              uint64_t *next)
{
    const msgpack_object *o = proto_map_get(r->root, PROTO_KEY_NEXT);
    emad_tensor *page = NULL, *grown;
    size_t k = 0;
    int rc;

    if ((rc = describe_parse(c, r, info, &page, &k)) != 0)
        return rc;
    *next = 0;
    if (o != NULL && (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 != *n + k ||
                      k == 0 || o->via.u64 >= info->ntensors)) {
        emad_tensors_free(page, k);
        return fail(c, EMAD_EPROTO, "describe: reply key 'next' does not follow the page");
    }
    if (o != NULL)
        *next = o->via.u64;
    if (*all == NULL) {
        *all = page;
        *n = k;
        return 0;
    }
    if ((grown = realloc(*all, (*n + k ? *n + k : 1) * sizeof(*grown))) == NULL) {
        emad_tensors_free(page, k);
        return fail(c, EMAD_ENOMEM, "describe: out of memory");
    }
    memcpy(grown + *n, page, k * sizeof(*page));
    free(page); /* the names now belong to grown */
    *all = grown;
    *n += k;
    return 0;
}

/*
 * Describe one model and its tensors (no data), reading the list in pages
 * (offset, next) as large as the replies we accept.
 */
EMAD_EXTERN int
emad_describe(emad_client *c, const char *model, emad_model_info *info, emad_tensor **tensors,
              size_t *n)
{
    simple_req q = {.op = PROTO_OP_LIST,
                    .model = model,
                    .key = PROTO_KEY_OFFSET,
                    .value = 0,
                    .key2 = PROTO_KEY_MAX_REPLY_BYTES};
    emad_tensor *all = NULL;
    size_t count = 0;
    reply r;
    int rc;

    if (c == NULL || info == NULL || tensors == NULL || n == NULL)
        return EMAD_EINVAL;
    call_begin(c);
    *tensors = NULL;
    *n = 0;
    if ((rc = check_model(c, model)) != 0)
        return call_end(c, rc);
    if (c->cl != NULL)
        return call_end(c, cluster_describe(c, model, info, tensors, n));
    q.value2 = c->reply_eff;
    do {
        if ((rc = call_simple(c, &q, &r)) != 0)
            break;
        rc = describe_page(c, &r, info, &all, &count, &q.value);
        reply_free(&r);
    } while (rc == 0 && q.value != 0);
    if (rc != 0) {
        emad_tensors_free(all, count);
        return call_end(c, rc);
    }
    *tensors = all;
    *n = count;
    return call_end(c, 0);
}

/* Read a stats reply into a malloc'd array *out of *n counters (names cut to 63 bytes). */
int
stats_parse(emad_client *c, const reply *r, emad_stat **out, size_t *n)
{
    const msgpack_object *m = proto_map_get(r->root, PROTO_KEY_STATS);
    emad_stat *v;
    size_t k = 0;

    if (m == NULL || m->type != MSGPACK_OBJECT_MAP)
        return fail(c, EMAD_EPROTO, "reply key 'stats' is %s (expected a map)",
                    m == NULL ? "missing" : "not a map");
    if ((v = calloc(m->via.map.size ? m->via.map.size : 1, sizeof(*v))) == NULL)
        return fail(c, EMAD_ENOMEM, "stats: out of memory");
    /* Counters with a non-string name or a non-uint value are skipped (later versions). */
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *key = &m->via.map.ptr[i].key, *val = &m->via.map.ptr[i].val;
        size_t len;

        if (key->type != MSGPACK_OBJECT_STR || val->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            continue;
        len = key->via.str.size < sizeof(v[k].name) ? key->via.str.size : sizeof(v[k].name) - 1;
        memcpy(v[k].name, key->via.str.ptr, len);
        v[k].name[len] = '\0';
        v[k].value = val->via.u64;
        k++;
    }
    *out = v;
    *n = k;
    return 0;
}

/* Read the daemon's counters into a malloc'd array (names longer than 63 bytes are cut). */
EMAD_EXTERN int
emad_stats(emad_client *c, emad_stat **out, size_t *n)
{
    if (c == NULL || out == NULL || n == NULL)
        return EMAD_EINVAL;
    *out = NULL;
    if (c->cl != NULL) {
        call_begin(c);
        return call_end(c, cluster_stats(c, out, n));
    }
    return call_array(c, PROTO_OP_STATS, stats_parse_any, out, n);
}

/*
 * Read the configuration of a list reply of one model into *cfg (which
 * owns its strings); on failure *cfg holds the defaults.
 */
int
config_parse(emad_client *c, const reply *r, emad_model_config *cfg)
{
    const msgpack_object *m, *conf;
    emaconf_strings *strings;
    char why[256];

    if ((m = proto_map_get(r->root, PROTO_KEY_MODEL)) == NULL ||
        (conf = proto_map_get(m, PROTO_KEY_CONFIG)) == NULL || conf->type != MSGPACK_OBJECT_MAP)
        return fail(c, EMAD_EPROTO, "reply key 'model.config' is missing or not a map");
    if ((strings = malloc(sizeof(*strings))) == NULL)
        return fail(c, EMAD_ENOMEM, "get_config: out of memory");
    if (emaconf_unpack(conf, cfg, strings, why, sizeof(why)) != 0) {
        free(strings);
        emaconf_init(cfg);
        return fail(c, EMAD_EPROTO, "reply 'model.config': %s", why);
    }
    /* Own the pattern strings (emaconf_copy duplicates them). */
    {
        emad_model_config tmp = *cfg;
        emaconf_copy(cfg, &tmp);
    }
    free(strings);
    return 0;
}

/* A model's configuration, from `list` with the model's name (and one tensor at most). */
EMAD_EXTERN int
emad_get_config(emad_client *c, const char *model, emad_model_config *cfg)
{
    simple_req q = {.op = PROTO_OP_LIST, .model = model, .key = PROTO_KEY_LIMIT, .value = 1};
    reply r;
    int rc;

    if (c == NULL || cfg == NULL)
        return EMAD_EINVAL;
    call_begin(c);
    emaconf_init(cfg);
    if ((rc = check_model(c, model)) != 0)
        return call_end(c, rc);
    if (c->cl != NULL)
        return call_end(c, cluster_get_config(c, model, cfg));
    if ((rc = call_simple(c, &q, &r)) != 0)
        return call_end(c, rc);
    rc = config_parse(c, &r, cfg);
    reply_free(&r);
    return call_end(c, rc);
}

/* Ask for a durable snapshot and wait for it (the daemon replies once the files are fsync'd). */
EMAD_EXTERN int
emad_snapshot(emad_client *c, const char *model, uint64_t *step)
{
    simple_req q = {.op = PROTO_OP_SNAPSHOT, .model = model};
    uint64_t s = 0;
    reply r;
    int rc;

    if (c == NULL)
        return EMAD_EINVAL;
    call_begin(c);
    if (model != NULL && (rc = check_model(c, model)) != 0)
        return call_end(c, rc);
    if (c->cl != NULL)
        return call_end(c, cluster_snapshot(c, model, step));
    if ((rc = call_simple(c, &q, &r)) != 0)
        return call_end(c, rc);
    rc = rget_u64(c, r.root, PROTO_KEY_STEP, &s);
    reply_free(&r);
    if (rc == 0 && step != NULL)
        *step = s;
    return call_end(c, rc);
}

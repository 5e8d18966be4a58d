/*
 * emaconf.c - EMA configuration: defaults, checks, names, msgpack
 * encoding and the decay schedules.
 *
 * The options are the list EMACONF_OPTIONS of emaconf.h; the table
 * `options` below is built from it and drives the msgpack encoding and
 * decoding, so an option's key is spelled once.
 */
#include <fnmatch.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "common/emaconf.h"
#include "common/names.h"
#include "common/proto.h"

/* Below this a product of decays no longer changes c = 1 - product, even in float64. */
#define DECAY_PRODUCT_FLOOR 0x1p-60
/* Most per-step decays multiplied one by one for a gap; beyond, the rest use the last one. */
#define DECAY_PRODUCT_STEPS (1u << 24)

static const char *const schedule_names[] = {"constant", "num_updates", "warmup"};
static const char *const step_gap_names[] = {"ignore", "compensate"};
static const char *const buffers_names[] = {PROTO_VAL_UPDATE_COPY, PROTO_VAL_UPDATE_AVERAGE};
static const char *const nonfinite_names[] = {"reject", "skip", "allow"};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static const char *
name_of(const char *const *names, size_t n, int v)
{
    return v >= 0 && (size_t)v < n ? names[v] : NULL;
}

/* emaconf_schedule_name() and the others: the wire name of an enum value, or NULL. */
#define NAME_OF(what)                                                                              \
    const char *emaconf_##what##_name(int v)                                                       \
    {                                                                                              \
        return name_of(what##_names, NELEM(what##_names), v);                                      \
    }
NAME_OF(schedule)
NAME_OF(step_gap)
NAME_OF(buffers)
NAME_OF(nonfinite)
#undef NAME_OF

/* The value types of the options (the TYPE column of EMACONF_OPTIONS). */
enum option_type { TYPE_DECAYS, TYPE_ENUM, TYPE_U64, TYPE_REAL, TYPE_U32, TYPE_PATTERNS };

/* What an option's type needs besides its value: a count, a name table, pattern buffers. */
#define EXTRA_DECAYS(f) .count = offsetof(emad_model_config, n##f)
#define EXTRA_ENUM(f) .names = f##_names, .nnames = NELEM(f##_names)
#define EXTRA_U64(f) .count = 0
#define EXTRA_REAL(f) .count = 0
#define EXTRA_U32(f) .count = 0
#define EXTRA_PATTERNS(f)                                                                          \
    .count = offsetof(emad_model_config, n##f), .strings = offsetof(emaconf_strings, f)

/* One option: key, type, and where its value (and count) live in emad_model_config. */
typedef struct option_info {
    const char *key;
    enum option_type type;
    size_t offset;            /* of the value */
    size_t count;             /* DECAYS, PATTERNS: of the number of values */
    size_t strings;           /* PATTERNS: of the buffers in emaconf_strings */
    const char *const *names; /* ENUM: the names of the values */
    size_t nnames;
} option_info;

#define OPTION_INFO(id, k, t, f)                                                                   \
    [EMACONF_##id] = {                                                                             \
        .key = k, .type = TYPE_##t, .offset = offsetof(emad_model_config, f), EXTRA_##t(f)},

static const option_info options[EMACONF_NOPTIONS] = {EMACONF_OPTIONS(OPTION_INFO)};

/* The order emaconf_unpack() reads the options in, by type (in list order within a type). */
static const enum option_type unpack_order[] = {TYPE_DECAYS, TYPE_ENUM, TYPE_REAL,
                                                TYPE_U64,    TYPE_U32,  TYPE_PATTERNS};

/* The key of an option, from the table; NULL if out of range. */
const char *
emaconf_key(int option)
{
    return option >= 0 && option < EMACONF_NOPTIONS ? options[option].key : NULL;
}

/* The name table of an option, or NULL. */
static const char *const *
option_names(const char *option, size_t *n)
{
    for (size_t i = 0; i < NELEM(options); i++) {
        if (options[i].type == TYPE_ENUM && strcmp(options[i].key, option) == 0) {
            *n = options[i].nnames;
            return options[i].names;
        }
    }
    return NULL;
}

int
emaconf_from_name(const char *option, const char *name, size_t len)
{
    size_t n = 0;
    const char *const *names = option_names(option, &n);

    for (size_t i = 0; names != NULL && i < n; i++)
        if (strlen(names[i]) == len && memcmp(names[i], name, len) == 0)
            return (int)i;
    return -1;
}

void
emaconf_init(emad_model_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->ndecays = 1;
    cfg->decays[0] = EMAD_DEFAULT_DECAY;
    cfg->schedule = EMAD_SCHEDULE_CONSTANT;
    cfg->inv_gamma = 1.0;
    cfg->power = 2.0 / 3.0;
    cfg->min_decay = 0.0;
    cfg->writers = 1;
}

__attribute__((format(printf, 3, 4))) static int
bad(char *why, size_t size, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, size, fmt, ap);
    va_end(ap);
    return EMAD_ERANGE;
}

/* Check a pattern list. */
static int
check_patterns(const char *option, const char *const *p, size_t n, char *why, size_t size)
{
    if (n > EMAD_MAX_GLOBS)
        return bad(why, size, "%s: at most %d patterns", option, EMAD_MAX_GLOBS);
    for (size_t i = 0; i < n; i++) {
        size_t len = p[i] != NULL ? strlen(p[i]) : 0;
        /* Like a tensor name: a snapshot keeps the patterns as JSON strings. */
        if (len == 0 || len > EMAD_MAX_GLOB_BYTES || names_check_tensor(p[i], len) != 0)
            return bad(why, size,
                       "%s: a pattern must have 1..%d bytes of UTF-8 without control characters",
                       option, EMAD_MAX_GLOB_BYTES);
    }
    return 0;
}

int
emaconf_check(const emad_model_config *cfg, char *why, size_t size)
{
    if (cfg->ndecays < 1 || cfg->ndecays > EMAD_MAX_DECAYS)
        return bad(why, size, "decays: 1..%d values, not %zu", EMAD_MAX_DECAYS, cfg->ndecays);
    for (size_t i = 0; i < cfg->ndecays; i++) {
        if (!(cfg->decays[i] >= 0.0 && cfg->decays[i] <= 1.0))
            return bad(why, size, "decay %g is outside [0, 1]", cfg->decays[i]);
        for (size_t j = 0; j < i; j++)
            if (cfg->decays[j] == cfg->decays[i])
                return bad(why, size, "decay %.17g is given twice", cfg->decays[i]);
    }
    if (emaconf_schedule_name(cfg->schedule) == NULL)
        return bad(why, size, "schedule must be constant, num_updates or warmup");
    if (cfg->update_after_step > EMACONF_MAX_UPDATE_AFTER_STEP)
        return bad(why, size, "update_after_step %llu is out of range: at most %llu (2^63 - 1)",
                   (unsigned long long)cfg->update_after_step,
                   (unsigned long long)EMACONF_MAX_UPDATE_AFTER_STEP);
    if (emaconf_step_gap_name(cfg->step_gap) == NULL)
        return bad(why, size, "step_gap must be ignore or compensate");
    if (emaconf_buffers_name(cfg->buffers) == NULL)
        return bad(why, size, "buffers must be copy or average");
    if (emaconf_nonfinite_name(cfg->nonfinite) == NULL)
        return bad(why, size, "nonfinite must be reject, skip or allow");
    if (!(cfg->inv_gamma > 0.0 && isfinite(cfg->inv_gamma)))
        return bad(why, size, "inv_gamma %g must be finite and > 0", cfg->inv_gamma);
    if (!(cfg->power > 0.0 && isfinite(cfg->power)))
        return bad(why, size, "power %g must be finite and > 0", cfg->power);
    if (!(cfg->min_decay >= 0.0 && cfg->min_decay <= 1.0))
        return bad(why, size, "min_decay %g is outside [0, 1]", cfg->min_decay);
    if (cfg->writers < 1 || cfg->writers > EMAD_MAX_WRITERS)
        return bad(why, size, "writers must be 1..%d, not %u", EMAD_MAX_WRITERS, cfg->writers);
    if (check_patterns(options[EMACONF_COPY].key, cfg->copy, cfg->ncopy, why, size) != 0 ||
        check_patterns(options[EMACONF_IGNORE].key, cfg->ignore, cfg->nignore, why, size) != 0)
        return EMAD_ERANGE;
    return 0;
}

void
emaconf_copy(emad_model_config *dst, const emad_model_config *src)
{
    *dst = *src;
    for (size_t i = 0; i < src->ncopy; i++)
        dst->copy[i] = strdup(src->copy[i]);
    for (size_t i = 0; i < src->nignore; i++)
        dst->ignore[i] = strdup(src->ignore[i]);
    for (size_t i = 0; i < dst->ncopy; i++)
        if (dst->copy[i] == NULL)
            abort();
    for (size_t i = 0; i < dst->nignore; i++)
        if (dst->ignore[i] == NULL)
            abort();
}

void
emaconf_free(emad_model_config *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < cfg->ncopy; i++)
        free((char *)cfg->copy[i]);
    for (size_t i = 0; i < cfg->nignore; i++)
        free((char *)cfg->ignore[i]);
    cfg->ncopy = cfg->nignore = 0;
}

static int
patterns_equal(const char *const *a, size_t na, const char *const *b, size_t nb)
{
    if (na != nb)
        return 0;
    for (size_t i = 0; i < na; i++)
        if (strcmp(a[i], b[i]) != 0)
            return 0;
    return 1;
}

const char *
emaconf_diff(const emad_model_config *a, const emad_model_config *b, int immutable_only)
{
    if (a->ndecays != b->ndecays)
        return options[EMACONF_DECAYS].key;
    if (a->buffers != b->buffers)
        return options[EMACONF_BUFFERS].key;
    if (a->writers != b->writers)
        return options[EMACONF_WRITERS].key;
    if (!patterns_equal(a->copy, a->ncopy, b->copy, b->ncopy))
        return options[EMACONF_COPY].key;
    if (!patterns_equal(a->ignore, a->nignore, b->ignore, b->nignore))
        return options[EMACONF_IGNORE].key;
    if (immutable_only)
        return NULL;
    for (size_t i = 0; i < a->ndecays; i++)
        if (a->decays[i] != b->decays[i])
            return options[EMACONF_DECAYS].key;
    if (a->schedule != b->schedule)
        return options[EMACONF_SCHEDULE].key;
    if (a->update_after_step != b->update_after_step)
        return options[EMACONF_UPDATE_AFTER_STEP].key;
    if (a->inv_gamma != b->inv_gamma)
        return options[EMACONF_INV_GAMMA].key;
    if (a->power != b->power)
        return options[EMACONF_POWER].key;
    if (a->min_decay != b->min_decay)
        return options[EMACONF_MIN_DECAY].key;
    if (a->step_gap != b->step_gap)
        return options[EMACONF_STEP_GAP].key;
    if (a->nonfinite != b->nonfinite)
        return options[EMACONF_NONFINITE].key;
    return NULL;
}

/* The value of an option in cfg (typed by the caller from the option's type). */
static const void *
value_of(const emad_model_config *cfg, const option_info *o)
{
    return (const char *)cfg + o->offset;
}

/* The number of values of a DECAYS or PATTERNS option in cfg. */
static size_t
count_of(const emad_model_config *cfg, const option_info *o)
{
    return *(const size_t *)(const void *)((const char *)cfg + o->count);
}

void
emaconf_pack(msgpack_packer *pk, const emad_model_config *cfg)
{
    for (size_t i = 0; i < NELEM(options); i++) {
        const option_info *o = &options[i];
        const void *v = value_of(cfg, o);

        proto_pack_str(pk, o->key);
        switch (o->type) {
        case TYPE_DECAYS:
            msgpack_pack_array(pk, count_of(cfg, o));
            for (size_t k = 0; k < count_of(cfg, o); k++)
                msgpack_pack_double(pk, ((const double *)v)[k]);
            break;
        case TYPE_ENUM:
            proto_pack_str(pk, name_of(o->names, o->nnames, *(const int *)v));
            break;
        case TYPE_U64:
            msgpack_pack_uint64(pk, *(const uint64_t *)v);
            break;
        case TYPE_REAL:
            msgpack_pack_double(pk, *(const double *)v);
            break;
        case TYPE_U32:
            msgpack_pack_uint32(pk, *(const uint32_t *)v);
            break;
        case TYPE_PATTERNS:
            msgpack_pack_array(pk, count_of(cfg, o));
            for (size_t k = 0; k < count_of(cfg, o); k++)
                proto_pack_str(pk, ((const char *const *)v)[k]);
            break;
        }
    }
}

static int
get_number(const msgpack_object *map, const char *key, double *v, char *why, size_t size)
{
    const msgpack_object *o = proto_map_get(map, key);

    if (o != NULL && proto_number(o, v) != 0) {
        snprintf(why, size, "key '%s' is not a number", key);
        return EMAD_EMALFORMED;
    }
    return 0;
}

static int
get_enum(const msgpack_object *map, const char *key, int *v, char *why, size_t size)
{
    const msgpack_object *o = proto_map_get(map, key);
    int e;

    if (o == NULL)
        return 0;
    if (o->type != MSGPACK_OBJECT_STR) {
        snprintf(why, size, "key '%s' is not a string", key);
        return EMAD_EMALFORMED;
    }
    if ((e = emaconf_from_name(key, o->via.str.ptr, o->via.str.size)) < 0) {
        size_t n = 0;
        const char *const *names = option_names(key, &n);
        int off = snprintf(why, size, "%s must be", key);
        for (size_t i = 0; i < n && off > 0 && (size_t)off < size; i++)
            off += snprintf(why + off, size - (size_t)off, "%s%s",
                            i == 0 ? " " : (i + 1 == n ? " or " : ", "), names[i]);
        return EMAD_ERANGE;
    }
    *v = e;
    return 0;
}

/* Read a pattern list; the strings are NUL-terminated copies in buf. */
static int
get_patterns(const msgpack_object *map, const char *key, const char **p, size_t *n,
             char (*buf)[EMAD_MAX_GLOB_BYTES + 1], char *why, size_t size)
{
    const msgpack_object *o = proto_map_get(map, key);

    if (o == NULL)
        return 0;
    if (o->type != MSGPACK_OBJECT_ARRAY) {
        snprintf(why, size, "key '%s' is not an array of strings", key);
        return EMAD_EMALFORMED;
    }
    if (o->via.array.size > EMAD_MAX_GLOBS) {
        snprintf(why, size, "%s: at most %d patterns", key, EMAD_MAX_GLOBS);
        return EMAD_ERANGE;
    }
    for (uint32_t i = 0; i < o->via.array.size; i++) {
        const msgpack_object *e = &o->via.array.ptr[i];
        if (e->type != MSGPACK_OBJECT_STR) {
            snprintf(why, size, "key '%s' is not an array of strings", key);
            return EMAD_EMALFORMED;
        }
        if (e->via.str.size == 0 || e->via.str.size > EMAD_MAX_GLOB_BYTES ||
            memchr(e->via.str.ptr, '\0', e->via.str.size) != NULL) {
            snprintf(why, size, "%s: a pattern must have 1..%d bytes and no NUL", key,
                     EMAD_MAX_GLOB_BYTES);
            return EMAD_ERANGE;
        }
    }
    *n = o->via.array.size;
    for (uint32_t i = 0; i < o->via.array.size; i++) {
        memcpy(buf[i], o->via.array.ptr[i].via.str.ptr, o->via.array.ptr[i].via.str.size);
        buf[i][o->via.array.ptr[i].via.str.size] = '\0';
        p[i] = buf[i];
    }
    return 0;
}

/* Read the decays, or a single decay under EMACONF_DECAY_KEY, from map into cfg. */
static int
get_decays(const msgpack_object *map, const option_info *opt, emad_model_config *cfg, char *why,
           size_t size)
{
    const msgpack_object *o;
    double d;

    if ((o = proto_map_get(map, opt->key)) != NULL) {
        if (o->type != MSGPACK_OBJECT_ARRAY) {
            snprintf(why, size, "key '%s' is not an array of numbers", opt->key);
            return EMAD_EMALFORMED;
        }
        if (o->via.array.size < 1 || o->via.array.size > EMAD_MAX_DECAYS) {
            snprintf(why, size, "%s: 1..%d values, not %u", opt->key, EMAD_MAX_DECAYS,
                     o->via.array.size);
            return EMAD_ERANGE;
        }
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (proto_number(&o->via.array.ptr[i], &cfg->decays[i]) != 0) {
                snprintf(why, size, "key '%s' is not an array of numbers", opt->key);
                return EMAD_EMALFORMED;
            }
            cfg->decays[i] += 0.0; /* -0 is 0 */
        }
        cfg->ndecays = o->via.array.size;
    } else if ((o = proto_map_get(map, EMACONF_DECAY_KEY)) != NULL) {
        if (proto_number(o, &d) != 0) {
            snprintf(why, size, "key '%s' is not a number", EMACONF_DECAY_KEY);
            return EMAD_EMALFORMED;
        }
        cfg->ndecays = 1;
        cfg->decays[0] = d + 0.0;
    }
    return 0;
}

/* Read an unsigned integer option (U64, or U32: writers, 1..EMAD_MAX_WRITERS) into v. */
static int
get_unsigned(const msgpack_object *map, const option_info *opt, void *v, char *why, size_t size)
{
    const msgpack_object *o = proto_map_get(map, opt->key);

    if (o == NULL)
        return 0;
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        snprintf(why, size, "key '%s' is not an unsigned integer", opt->key);
        return EMAD_EMALFORMED;
    }
    if (opt->type == TYPE_U64) {
        *(uint64_t *)v = o->via.u64;
        return 0;
    }
    if (o->via.u64 < 1 || o->via.u64 > EMAD_MAX_WRITERS) {
        snprintf(why, size, "%s must be 1..%d", opt->key, EMAD_MAX_WRITERS);
        return EMAD_ERANGE;
    }
    *(uint32_t *)v = (uint32_t)o->via.u64;
    return 0;
}

/* Read one option from map into cfg (pattern strings copied into strings), by its type. */
static int
get_option(const msgpack_object *map, const option_info *opt, emad_model_config *cfg,
           emaconf_strings *strings, char *why, size_t size)
{
    void *v = (char *)cfg + opt->offset;

    switch (opt->type) {
    case TYPE_DECAYS:
        return get_decays(map, opt, cfg, why, size);
    case TYPE_ENUM:
        return get_enum(map, opt->key, v, why, size);
    case TYPE_REAL:
        return get_number(map, opt->key, v, why, size);
    case TYPE_U64:
    case TYPE_U32:
        return get_unsigned(map, opt, v, why, size);
    case TYPE_PATTERNS:
        return get_patterns(map, opt->key, v, (void *)((char *)cfg + opt->count),
                            (void *)((char *)strings + opt->strings), why, size);
    }
    return 0;
}

int
emaconf_unpack(const msgpack_object *map, emad_model_config *cfg, emaconf_strings *strings,
               char *why, size_t size)
{
    int rc;

    for (size_t t = 0; t < NELEM(unpack_order); t++) {
        for (size_t i = 0; i < NELEM(options); i++) {
            if (options[i].type == unpack_order[t] &&
                (rc = get_option(map, &options[i], cfg, strings, why, size)) != 0)
                return rc;
        }
    }
    return 0;
}

int
emaconf_match(const char *const *patterns, size_t n, const char *name, size_t len)
{
    char buf[EMAD_MAX_NAME_BYTES + 1];

    if (n == 0 || len > EMAD_MAX_NAME_BYTES)
        return 0;
    memcpy(buf, name, len);
    buf[len] = '\0';
    for (size_t i = 0; i < n; i++)
        if (fnmatch(patterns[i], buf, 0) == 0)
            return 1;
    return 0;
}

const char *
emaconf_fmt_double(char *buf, size_t size, double v)
{
    for (int prec = 1; prec <= 17; prec++) {
        (void)snprintf(buf, size, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    return buf;
}

/* Clamp a scheduled decay to [min_decay, d], min_decay winning if larger. */
static double
clamp_decay(const emad_model_config *cfg, double f, double d)
{
    if (f > d)
        f = d;
    if (f < cfg->min_decay)
        f = cfg->min_decay;
    return f;
}

double
emaconf_step_decay(const emad_model_config *cfg, double d, uint64_t t)
{
    uint64_t uas = cfg->update_after_step;

    if (t <= uas)
        return 0.0;
    switch (cfg->schedule) {
    case EMAD_SCHEDULE_NUM_UPDATES: {
        double n = (double)(t - uas);
        return clamp_decay(cfg, (1.0 + n) / (10.0 + n), d);
    }
    case EMAD_SCHEDULE_WARMUP: {
        uint64_t e = t - uas - 1;
        if (e == 0)
            return 0.0;
        return clamp_decay(cfg, 1.0 - pow(1.0 + (double)e / cfg->inv_gamma, -cfg->power), d);
    }
    default:
        return d;
    }
}

double
emaconf_decay(const emad_model_config *cfg, double d, uint64_t s, uint64_t t)
{
    double prod = 1.0;
    uint64_t k;

    if (cfg->step_gap != EMAD_STEP_GAP_COMPENSATE || t - s <= 1)
        return emaconf_step_decay(cfg, d, t);
    if (s + 1 <= cfg->update_after_step)
        return 0.0; /* a copying step lies in the gap */
    if (cfg->schedule == EMAD_SCHEDULE_CONSTANT)
        return pow(d, (double)(t - s));
    /*
     * Scheduled decays rise with the step until they reach d and stay
     * there: multiply them one by one until then, the rest at once.
     */
    for (k = s + 1; k <= t; k++) {
        double f = emaconf_step_decay(cfg, d, k);

        if (f == 0.0)
            return 0.0;
        if (f >= d || k - s > DECAY_PRODUCT_STEPS)
            return prod * pow(f, (double)(t - k + 1));
        prod *= f;
        if (prod < DECAY_PRODUCT_FLOOR)
            return prod;
    }
    return prod;
}

/*
 * snapshot_meta.c - the __metadata__ of a snapshot file (keys listed in
 * snapshot.h, interface in snapshot_meta.h): building the entries of a
 * file to write (the configuration and the tensor descriptions as JSON
 * built with jansson, the version, the checksum texts and last the
 * checksum over the other entries), and reading every entry back with
 * its checks, including the file name STEP.dK.safetensors that repeats
 * the step and the decay index.
 *
 * Decisions:
 * - emad_meta_checksum (an addition to the original key list): "xxh64:" +
 *   16 hex digits of XXH64 (seed 0) over every other __metadata__ entry in
 *   byte order of its key: the key, a NUL, the value, a NUL. Without it a
 *   flipped byte in the header (model name, a step, a config value) could
 *   load silently; with it every single-bit flip of a file is rejected
 *   (tests/check_snapshot.c tries them all).
 * - The metadata, not the file name, says model, step and decay index;
 *   but a file whose name has the snapshot form STEP.dK.safetensors and
 *   disagrees with its metadata is rejected (EMAD_EFORMAT), so a loader
 *   never mixes steps.
 *
 * Nothing here keeps state or locks; all functions may run on any thread.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <xxhash.h>

#include "config.h"
#include "common/cause.h"
#include "common/dtype.h"
#include "common/emaconf.h"
#include "common/names.h"
#include "common/proto.h"
#include "common/safetensors.h"
#include "common/snapshot.h"
#include "common/snapshot_meta.h"

#define SNAP_STEP_DIGITS 20
#define SNAP_CHECKSUM_PREFIX "xxh64:"

/*
 * The __metadata__ keys of a snapshot file, X(ID, "key"), in the order
 * snapshot_meta_build fills them: the checksum over the others comes last.
 */
#define SNAP_META_KEYS(X)                                                                          \
    X(FORMAT, "format")                                                                            \
    X(MODEL, "emad_model")                                                                         \
    X(STEP, "emad_step")                                                                           \
    X(DECAY, "emad_decay")                                                                         \
    X(DECAY_INDEX, "emad_decay_index")                                                             \
    X(DECAYS, "emad_decays")                                                                       \
    X(CONFIG, "emad_config")                                                                       \
    X(TENSORS, "emad_tensors")                                                                     \
    X(VERSION, "emad_version")                                                                     \
    X(CHECKSUM, "emad_checksum")                                                                   \
    X(META_CHECKSUM, "emad_meta_checksum")

/* Index of each metadata key: MD_FORMAT ... MD_META_CHECKSUM. */
enum meta_key {
#define META_KEY_ENUM(id, key) MD_##id,
    SNAP_META_KEYS(META_KEY_ENUM)
#undef META_KEY_ENUM
        MD_COUNT
};

/* The metadata keys by index. */
static const char *const meta_keys[] = {
#define META_KEY_NAME(id, key) [MD_##id] = key,
    SNAP_META_KEYS(META_KEY_NAME)
#undef META_KEY_NAME
};

_Static_assert(MD_COUNT == SNAPSHOT_NMETA, "SNAPSHOT_NMETA must count the metadata keys");

/* The value of the format key (safetensors' convention for PyTorch files). */
#define SNAP_FORMAT "pt"
/* Length of "xxh64:" + 16 hex digits. */
#define SNAP_SUM_LEN 22

_Static_assert(sizeof(json_int_t) >= sizeof(int64_t), "jansson must have 64-bit integers");

/* A malloc'd printf string, or NULL if memory runs out. */
__attribute__((format(printf, 1, 2))) static char *
strfmt(const char *fmt, ...)
{
    va_list ap;
    char *s;
    int len;

    va_start(ap, fmt);
    len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (len < 0 || (s = malloc((size_t)len + 1)) == NULL)
        return NULL;
    va_start(ap, fmt);
    (void)vsnprintf(s, (size_t)len + 1, fmt, ap);
    va_end(ap);
    return s;
}

/*
 * Parse a strict decimal uint64 (digits only, no sign, no leading zero but
 * in "0") from s[0..len). Returns 0, or -1 if s is anything else or overflows.
 */
static int
parse_u64(const char *s, size_t len, uint64_t *v)
{
    uint64_t x = 0;

    if (len == 0 || (len > 1 && s[0] == '0'))
        return -1;
    for (size_t i = 0; i < len; i++) {
        unsigned d = (unsigned)(s[i] - '0');

        if (d > 9 || x > (UINT64_MAX - d) / 10)
            return -1;
        x = x * 10 + d;
    }
    *v = x;
    return 0;
}

/*
 * Parse the snapshot file name at the start of s: 20 digits, ".d", the
 * decay index, ".safetensors". Returns a pointer just past it, or NULL if
 * s does not start with one.
 */
const char *
snapshot_parse_name(const char *s, uint64_t *step, size_t *decay_index)
{
    const char *p = s + SNAP_STEP_DIGITS, *q;
    uint64_t k;
    size_t sl = strlen(SNAPSHOT_SUFFIX);

    for (size_t i = 0; i < SNAP_STEP_DIGITS; i++)
        if (s[i] < '0' || s[i] > '9')
            return NULL;
    for (q = s; q < p - 1 && *q == '0'; q++) /* the zero padding */
        ;
    if (parse_u64(q, (size_t)(p - q), step) < 0) /* above UINT64_MAX */
        return NULL;
    if (p[0] != '.' || p[1] != 'd')
        return NULL;
    p += 2;
    for (q = p; *q >= '0' && *q <= '9'; q++)
        ;
    if (q - p > 3 || parse_u64(p, (size_t)(q - p), &k) < 0 || k >= EMAD_MAX_DECAYS)
        return NULL;
    if (strncmp(q, SNAPSHOT_SUFFIX, sl) != 0)
        return NULL;
    *decay_index = (size_t)k;
    return q + sl;
}

/* Is name exactly a snapshot file name STEP.dK.safetensors? */
int
snapshot_is_name(const char *name, uint64_t *step, size_t *decay_index)
{
    const char *end = snapshot_parse_name(name, step, decay_index);

    return end != NULL && *end == '\0';
}

/* The last path component of path (after the last '/'). */
static const char *
base_name(const char *path)
{
    const char *slash = strrchr(path, '/');

    return slash != NULL ? slash + 1 : path;
}

/* qsort order of metadata entry pointers by key. */
static int
cmp_meta_key(const void *a, const void *b)
{
    return strcmp((*(const safetensors_meta *const *)a)->key,
                  (*(const safetensors_meta *const *)b)->key);
}

/*
 * XXH64 (seed 0) of the metadata md[0..n) but emad_meta_checksum itself:
 * for each entry in byte order of its key, the key, a NUL, the value, a
 * NUL. Returns 0 or -ENOMEM.
 */
static int
meta_checksum(const safetensors_meta *md, size_t n, uint64_t *out)
{
    const safetensors_meta **p = malloc((n > 0 ? n : 1) * sizeof(*p));
    XXH64_state_t *st = XXH64_createState();
    size_t k = 0;

    if (p == NULL || st == NULL || XXH64_reset(st, 0) != XXH_OK) {
        free(p);
        XXH64_freeState(st);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        if (strcmp(md[i].key, meta_keys[MD_META_CHECKSUM]) != 0)
            p[k++] = &md[i];
    qsort(p, k, sizeof(*p), cmp_meta_key);
    for (size_t i = 0; i < k; i++) {
        (void)XXH64_update(st, p[i]->key, strlen(p[i]->key) + 1);
        (void)XXH64_update(st, p[i]->value, strlen(p[i]->value) + 1);
    }
    *out = XXH64_digest(st);
    XXH64_freeState(st);
    free(p);
    return 0;
}

/* A checksum as text, "xxh64:" and 16 lowercase hex digits (malloc'd), or NULL. */
static char *
sum_text(uint64_t sum)
{
    return strfmt(SNAP_CHECKSUM_PREFIX "%016" PRIx64, sum);
}

/* A JSON array of n reals, or NULL (no memory, or a value JSON cannot hold). */
static json_t *
real_array(const double *v, size_t n)
{
    json_t *a = json_array();

    for (size_t i = 0; a != NULL && i < n; i++) {
        if (json_array_append_new(a, json_real(v[i])) < 0) {
            json_decref(a);
            a = NULL;
        }
    }
    return a;
}

/* A JSON array of n strings, or NULL (no memory or invalid UTF-8). */
static json_t *
string_array(const char *const *p, size_t n)
{
    json_t *a = json_array();

    for (size_t i = 0; a != NULL && i < n; i++) {
        if (json_array_append_new(a, json_string(p[i])) < 0) {
            json_decref(a);
            a = NULL;
        }
    }
    return a;
}

/* The JSON value of an option of cfg, by its type (the TYPE column of EMACONF_OPTIONS). */
#define CONFIG_JSON_DECAYS(cfg, f) real_array((cfg)->f, (cfg)->n##f)
#define CONFIG_JSON_ENUM(cfg, f) json_string(emaconf_##f##_name((cfg)->f))
#define CONFIG_JSON_U64(cfg, f) json_integer((json_int_t)(cfg)->f)
#define CONFIG_JSON_REAL(cfg, f) json_real((cfg)->f)
#define CONFIG_JSON_U32(cfg, f) json_integer((json_int_t)(cfg)->f)
#define CONFIG_JSON_PATTERNS(cfg, f) string_array((cfg)->f, (cfg)->n##f)
#define CONFIG_JSON_SET(id, key, type, f)                                                          \
    bad = bad || json_object_set_new(o, key, CONFIG_JSON_##type(cfg, f)) < 0;

/* JSON text of a checked configuration (malloc'd), or NULL if memory runs out. */
static char *
config_text(const emad_model_config *cfg)
{
    json_t *o = json_object();
    char *text = NULL;
    int bad = o == NULL;

    EMACONF_OPTIONS(CONFIG_JSON_SET)
    if (!bad)
        text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    return text;
}

/* JSON text of the tensor descriptions of t[0..n) (malloc'd), or NULL if memory runs out. */
static char *
tensors_text(const snapshot_tensor *t, size_t n)
{
    json_t *o = json_object();
    char *text = NULL;
    int bad = o == NULL;

    for (size_t i = 0; !bad && i < n; i++) {
        json_t *e = json_object();

        bad = e == NULL ||
              json_object_set_new(e, PROTO_KEY_KIND, json_string(names_kind_name(t[i].kind))) < 0 ||
              json_object_set_new(e, PROTO_KEY_DTYPE, json_string(dtype_name(t[i].dtype))) < 0 ||
              json_object_set_new(e, PROTO_KEY_STEP, json_integer((json_int_t)t[i].step)) < 0 ||
              json_object_set_new(e, PROTO_KEY_UPDATE,
                                  json_string(t[i].averaged ? PROTO_VAL_UPDATE_AVERAGE
                                                            : PROTO_VAL_UPDATE_COPY)) < 0;
        if (bad)
            json_decref(e);
        else
            bad = json_object_set_new(o, t[i].name, e) < 0;
    }
    if (!bad)
        text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    return text;
}

/* The dtype a tensor's data has in a snapshot: the shadow's if averaged, else the pushed one. */
static int
stored_dtype(int dtype, int averaged)
{
    return averaged ? dtype_shadow(dtype) : dtype;
}

/*
 * Check a tensor's data dtype sdtype fits its pushed dtype; if not, -1
 * with a message saying what a tensor pushed as dtype is stored as.
 */
int
snapshot_meta_check_dtype(int sdtype, int dtype, int averaged, char *buf, size_t size)
{
    int want = stored_dtype(dtype, averaged);

    if (sdtype == want && sdtype != EMAD_DTYPE_INVALID)
        return 0;
    snprintf(buf, size, "stored as %s, but a%s tensor pushed as %s is stored as %s",
             dtype_name(sdtype) != NULL ? dtype_name(sdtype) : "?",
             averaged ? "n averaged" : " copied", dtype_name(dtype),
             want != EMAD_DTYPE_INVALID ? dtype_name(want) : "(nothing: it cannot be averaged)");
    return -1;
}

/* Free the values of the metadata snapshot_meta_build built. */
void
snapshot_meta_free(safetensors_meta *md, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(md[i].value);
}

/*
 * Build the __metadata__ entries (keys static, values malloc'd) for
 * tensors s[0..n) sorted by name with data checksum sum; the metadata
 * checksum comes last, over the others. Returns 0 or -ENOMEM.
 */
int
snapshot_meta_build(const snapshot_meta *m, const snapshot_tensor *s, size_t n, uint64_t sum,
                    safetensors_meta md[SNAPSHOT_NMETA])
{
    char dec[32];

    md[MD_FORMAT].value = strdup(SNAP_FORMAT);
    md[MD_MODEL].value = strdup(m->model);
    md[MD_STEP].value = strfmt("%" PRIu64, m->step);
    md[MD_DECAY].value =
        strdup(emaconf_fmt_double(dec, sizeof(dec), m->cfg->decays[m->decay_index]));
    md[MD_DECAY_INDEX].value = strfmt("%zu", m->decay_index);
    md[MD_DECAYS].value = strfmt("%zu", m->cfg->ndecays);
    md[MD_CONFIG].value = config_text(m->cfg);
    md[MD_TENSORS].value = tensors_text(s, n);
    md[MD_VERSION].value = strdup(PACKAGE_VERSION);
    md[MD_CHECKSUM].value = sum_text(sum);
    for (size_t i = 0; i < SNAPSHOT_NMETA; i++) {
        md[i].key = (char *)meta_keys[i]; /* safetensors_write_ex only reads it */
        if (i != MD_META_CHECKSUM && md[i].value == NULL)
            return -ENOMEM;
    }
    if (meta_checksum(md, MD_META_CHECKSUM, &sum) < 0 ||
        (md[MD_META_CHECKSUM].value = sum_text(sum)) == NULL)
        return -ENOMEM;
    return 0;
}

/* A metadata value that must be present; NULL with *cause set if missing. */
static const char *
need_meta(const safetensors_file *sf, const char *key, char **cause)
{
    const char *v = safetensors_meta_get(sf, key);

    if (v == NULL)
        cause_set(cause, EMAD_EFORMAT, "metadata key '%s' is missing", key);
    return v;
}

/* A metadata value that must be a decimal uint64; 0 or EMAD_EFORMAT. */
static int
meta_u64(const safetensors_file *sf, const char *key, uint64_t *v, char **cause)
{
    const char *s = need_meta(sf, key, cause);

    if (s == NULL)
        return EMAD_EFORMAT;
    if (parse_u64(s, strlen(s), v) < 0)
        return cause_set(cause, EMAD_EFORMAT, "metadata key '%s': '%.40s' is not a decimal integer",
                         key, s);
    return 0;
}

/* A non-negative JSON integer; 0 or -1. */
static int
json_u64(const json_t *j, uint64_t *v)
{
    if (!json_is_integer(j) || json_integer_value(j) < 0)
        return -1;
    *v = (uint64_t)json_integer_value(j);
    return 0;
}

/* Read an enum option of the configuration object by name; 0 or EMAD_EFORMAT. */
static int
config_enum(const json_t *o, const char *key, int *v, char **cause)
{
    const json_t *j = json_object_get(o, key);

    if (!json_is_string(j) ||
        (*v = emaconf_from_name(key, json_string_value(j), json_string_length(j))) < 0)
        return cause_set(cause, EMAD_EFORMAT, "emad_config: '%s' is not a valid %s name", key, key);
    return 0;
}

/* Read a number of the configuration object; 0 or EMAD_EFORMAT. */
static int
config_real(const json_t *o, const char *key, double *v, char **cause)
{
    const json_t *j = json_object_get(o, key);

    if (!json_is_number(j))
        return cause_set(cause, EMAD_EFORMAT, "emad_config: '%s' is not a number", key);
    *v = json_number_value(j);
    return 0;
}

/* Read a pattern list (strings borrowed from o); 0 or EMAD_EFORMAT. */
static int
config_patterns(const json_t *o, const char *key, const char **p, size_t *n, char **cause)
{
    const json_t *a = json_object_get(o, key);

    if (!json_is_array(a) || json_array_size(a) > EMAD_MAX_GLOBS)
        return cause_set(cause, EMAD_EFORMAT,
                         "emad_config: '%s' is not an array of at most %d "
                         "strings",
                         key, EMAD_MAX_GLOBS);
    for (size_t i = 0; i < json_array_size(a); i++) {
        const json_t *s = json_array_get(a, i);

        if (!json_is_string(s) || strlen(json_string_value(s)) != json_string_length(s))
            return cause_set(cause, EMAD_EFORMAT, "emad_config: '%s'[%zu] is not a string", key, i);
        p[i] = json_string_value(s);
    }
    *n = json_array_size(a);
    return 0;
}

/* Check the configuration object has exactly the keys of the create request; 0 or EMAD_EFORMAT. */
static int
config_keys(const json_t *o, char **cause)
{
    const char *key;
    json_t *v;

    for (int i = 0; i < EMACONF_NOPTIONS; i++)
        if (json_object_get(o, emaconf_key(i)) == NULL)
            return cause_set(cause, EMAD_EFORMAT, "emad_config: key '%s' is missing",
                             emaconf_key(i));
    json_object_foreach((json_t *)o, key, v)
    {
        int i = 0;

        while (i < EMACONF_NOPTIONS && strcmp(emaconf_key(i), key) != 0)
            i++;
        if (i == EMACONF_NOPTIONS)
            return cause_set(cause, EMAD_EFORMAT, "emad_config: unknown key '%.64s'", key);
    }
    return 0;
}

/*
 * Read an enum, number or pattern-list option of the emad_config object o
 * into c in the pass of its type: the enums first, then the numbers, then
 * the pattern lists (the order of the checks). The decays and the integers
 * are read before, on their own.
 */
#define CONFIG_READ_DECAYS(pass, key, f) 0
#define CONFIG_READ_U64(pass, key, f) 0
#define CONFIG_READ_U32(pass, key, f) 0
#define CONFIG_READ_ENUM(pass, key, f) ((pass) == 0 ? config_enum(o, key, &c.f, cause) : 0)
#define CONFIG_READ_REAL(pass, key, f) ((pass) == 1 ? config_real(o, key, &c.f, cause) : 0)
#define CONFIG_READ_PATTERNS(pass, key, f)                                                         \
    ((pass) == 2 ? config_patterns(o, key, c.f, &c.n##f, cause) : 0)
#define CONFIG_READ(id, key, type, f) || (rc = CONFIG_READ_##type(pass, key, f)) < 0
#define CONFIG_READ_PASSES 3

/*
 * Parse the emad_config JSON text into cfg (pattern strings copied, free
 * with emaconf_free) and check it with emaconf_check. 0 or EMAD_EFORMAT.
 */
static int
parse_config(const char *text, emad_model_config *cfg, char **cause)
{
    emad_model_config c;
    json_t *o, *decays;
    json_error_t jerr;
    uint64_t u, w;
    char why[256];
    int rc;

    emaconf_init(&c);
    if ((o = json_loads(text, JSON_REJECT_DUPLICATES, &jerr)) == NULL)
        return cause_set(cause, EMAD_EFORMAT, "emad_config is not valid JSON: %s", jerr.text);
    if (!json_is_object(o)) {
        rc = cause_set(cause, EMAD_EFORMAT, "emad_config is not a JSON object");
        goto out;
    }
    if ((rc = config_keys(o, cause)) < 0)
        goto out;
    decays = json_object_get(o, emaconf_key(EMACONF_DECAYS));
    if (!json_is_array(decays) || json_array_size(decays) < 1 ||
        json_array_size(decays) > EMAD_MAX_DECAYS) {
        rc = cause_set(cause, EMAD_EFORMAT, "emad_config: '%s' is not an array of 1..%d numbers",
                       emaconf_key(EMACONF_DECAYS), EMAD_MAX_DECAYS);
        goto out;
    }
    c.ndecays = json_array_size(decays);
    for (size_t i = 0; i < c.ndecays; i++) {
        if (!json_is_number(json_array_get(decays, i))) {
            rc = cause_set(cause, EMAD_EFORMAT, "emad_config: '%s'[%zu] is not a number",
                           emaconf_key(EMACONF_DECAYS), i);
            goto out;
        }
        c.decays[i] = json_number_value(json_array_get(decays, i));
    }
    if (json_u64(json_object_get(o, emaconf_key(EMACONF_UPDATE_AFTER_STEP)), &u) < 0 ||
        json_u64(json_object_get(o, emaconf_key(EMACONF_WRITERS)), &w) < 0 ||
        w > EMAD_MAX_WRITERS) {
        rc = cause_set(cause, EMAD_EFORMAT, "emad_config: '%s' or '%s' is not an integer in range",
                       emaconf_key(EMACONF_UPDATE_AFTER_STEP), emaconf_key(EMACONF_WRITERS));
        goto out;
    }
    c.update_after_step = u;
    c.writers = (uint32_t)w;
    for (int pass = 0; pass < CONFIG_READ_PASSES; pass++)
        if (0 EMACONF_OPTIONS(CONFIG_READ))
            goto out;
    if (emaconf_check(&c, why, sizeof(why)) != 0) {
        rc = cause_set(cause, EMAD_EFORMAT, "emad_config is not a valid configuration: %s", why);
        goto out;
    }
    emaconf_copy(cfg, &c);
out:
    json_decref(o);
    return rc;
}

/*
 * Compare the checksum got with the one the metadata key holds; what
 * names what the checksum covers, for the message. 0 or EMAD_EFORMAT.
 */
static int
check_sum(const safetensors_file *sf, const char *key, uint64_t got, const char *what, char **cause)
{
    const char *want = need_meta(sf, key, cause);
    const size_t plen = strlen(SNAP_CHECKSUM_PREFIX);
    char text[SNAP_SUM_LEN + 1];

    if (want == NULL)
        return EMAD_EFORMAT;
    if (strlen(want) != SNAP_SUM_LEN || strncmp(want, SNAP_CHECKSUM_PREFIX, plen) != 0 ||
        strspn(want + plen, "0123456789abcdef") != SNAP_SUM_LEN - plen)
        return cause_set(cause, EMAD_EFORMAT,
                         "metadata key '%s': '%.40s' is not xxh64: and 16 lowercase hex digits",
                         key, want);
    snprintf(text, sizeof(text), SNAP_CHECKSUM_PREFIX "%016" PRIx64, got);
    if (strcmp(text, want) != 0)
        return cause_set(cause, EMAD_EFORMAT,
                         "%s checksum mismatch: expected %s (%s), got %s (the file was damaged "
                         "or changed)",
                         what, want, key, text);
    return 0;
}

/* Verify the checksum over the metadata entries; 0, EMAD_EFORMAT or -ENOMEM. */
int
snapshot_meta_verify(const safetensors_file *sf, char **cause)
{
    uint64_t sum;

    if (meta_checksum(sf->meta, sf->nmeta, &sum) < 0)
        return cause_set(cause, -ENOMEM, "out of memory");
    return check_sum(sf, meta_keys[MD_META_CHECKSUM], sum, "metadata", cause);
}

/* Compare emad_checksum with the data checksum computed over the file; 0 or EMAD_EFORMAT. */
int
snapshot_meta_check_data(const safetensors_file *sf, uint64_t sum, char **cause)
{
    return check_sum(sf, meta_keys[MD_CHECKSUM], sum, PROTO_KEY_DATA, cause);
}

/*
 * Fill t from the description d of a tensor of the file, checking it:
 * kind, pushed dtype, step (<= the model's), update, and that the file's
 * dtype fits. 0 or EMAD_EFORMAT.
 */
static int
describe_tensor(snapshot_tensor *t, const json_t *d, uint64_t model_step, char **cause)
{
    const json_t *kind = json_object_get(d, PROTO_KEY_KIND),
                 *dtype = json_object_get(d, PROTO_KEY_DTYPE);
    const json_t *update = json_object_get(d, PROTO_KEY_UPDATE);
    const char *q = t->name;
    char msg[160];

    if (!json_is_object(d) || json_object_size(d) != 4 || !json_is_string(kind) ||
        !json_is_string(dtype) || !json_is_string(update) ||
        json_u64(json_object_get(d, PROTO_KEY_STEP), &t->step) < 0)
        return cause_set(cause, EMAD_EFORMAT,
                         "emad_tensors: '%.200s' is not {kind, dtype, step, update}", q);
    t->kind = names_kind_from_name(json_string_value(kind), json_string_length(kind));
    t->dtype = dtype_from_name(json_string_value(dtype), json_string_length(dtype));
    if (t->kind < 0 || t->dtype == EMAD_DTYPE_INVALID)
        return cause_set(cause, EMAD_EFORMAT, "emad_tensors: '%.200s': bad kind or dtype", q);
    if (strcmp(json_string_value(update), PROTO_VAL_UPDATE_AVERAGE) == 0)
        t->averaged = 1;
    else if (strcmp(json_string_value(update), PROTO_VAL_UPDATE_COPY) == 0)
        t->averaged = 0;
    else
        return cause_set(cause, EMAD_EFORMAT,
                         "emad_tensors: '%.200s': update is neither average nor copy", q);
    if (t->step > model_step)
        return cause_set(cause, EMAD_EFORMAT,
                         "emad_tensors: '%.200s': step %" PRIu64 " is after the model's step "
                         "%" PRIu64,
                         q, t->step, model_step);
    if (snapshot_meta_check_dtype(t->sdtype, t->dtype, t->averaged, msg, sizeof(msg)) < 0)
        return cause_set(cause, EMAD_EFORMAT, "tensor '%.200s' is %s", q, msg);
    return 0;
}

/*
 * Check every tensor of f has a valid name and a description in
 * emad_tensors that fits it, and every description a tensor. 0,
 * EMAD_EFORMAT or -ENOMEM.
 */
static int
describe_tensors(snapshot_file *f, const safetensors_file *sf, char **cause)
{
    const char *text = need_meta(sf, meta_keys[MD_TENSORS], cause);
    json_t *o, *d;
    json_error_t jerr;
    const char *key;
    int rc = 0;

    if (text == NULL)
        return EMAD_EFORMAT;
    if ((o = json_loads(text, JSON_REJECT_DUPLICATES, &jerr)) == NULL || !json_is_object(o)) {
        json_decref(o);
        return cause_set(cause, EMAD_EFORMAT, "emad_tensors is not a JSON object");
    }
    json_object_foreach(o, key, d)
    {
        if (safetensors_find(sf, key) == NULL) {
            rc = cause_set(cause, EMAD_EFORMAT,
                           "emad_tensors describes '%.200s', but the file has no such tensor", key);
            goto out;
        }
    }
    for (size_t i = 0; i < f->ntensors && rc == 0; i++) {
        snapshot_tensor *t = &f->tensors[i];

        if (names_check_tensor(t->name, strlen(t->name)) != 0)
            rc = cause_set(cause, EMAD_EFORMAT, "tensor name '%.200s' is not valid", t->name);
        else if ((d = json_object_get(o, t->name)) == NULL)
            rc = cause_set(cause, EMAD_EFORMAT,
                           "tensor '%.200s' has no description in emad_tensors", t->name);
        else
            rc = describe_tensor(t, d, f->step, cause);
    }
out:
    json_decref(o);
    return rc;
}

/*
 * Read the model, step, decay index, decays count, decay and configuration
 * from the metadata into f, checking they agree with each other and with
 * the file's name when it has the snapshot form. 0, EMAD_EFORMAT or -ENOMEM.
 */
static int
read_header(snapshot_file *f, const safetensors_file *sf, const char *path, char **cause)
{
    const char *fmt, *model, *decay, *config;
    uint64_t index, ndecays, name_step;
    size_t name_index;
    char *end;
    double d;
    int rc;

    if ((fmt = need_meta(sf, meta_keys[MD_FORMAT], cause)) == NULL ||
        (model = need_meta(sf, meta_keys[MD_MODEL], cause)) == NULL ||
        (decay = need_meta(sf, meta_keys[MD_DECAY], cause)) == NULL ||
        (config = need_meta(sf, meta_keys[MD_CONFIG], cause)) == NULL ||
        need_meta(sf, meta_keys[MD_VERSION], cause) == NULL)
        return EMAD_EFORMAT;
    if (strcmp(fmt, SNAP_FORMAT) != 0)
        return cause_set(cause, EMAD_EFORMAT, "metadata 'format' is '%.40s', not 'pt'", fmt);
    if (names_check_model(model, strlen(model)) != 0)
        return cause_set(cause, EMAD_EFORMAT, "metadata 'emad_model' is not a valid model name");
    if ((rc = meta_u64(sf, meta_keys[MD_STEP], &f->step, cause)) < 0 ||
        (rc = meta_u64(sf, meta_keys[MD_DECAY_INDEX], &index, cause)) < 0 ||
        (rc = meta_u64(sf, meta_keys[MD_DECAYS], &ndecays, cause)) < 0)
        return rc;
    if ((rc = parse_config(config, &f->cfg, cause)) < 0)
        return rc;
    if ((f->model = strdup(model)) == NULL)
        return cause_set(cause, -ENOMEM, "out of memory");
    if (ndecays != f->cfg.ndecays || index >= ndecays)
        return cause_set(cause, EMAD_EFORMAT,
                         "emad_decay_index %" PRIu64 " / emad_decays %" PRIu64
                         " do not match the configuration's %zu decays",
                         index, ndecays, f->cfg.ndecays);
    f->decay_index = (size_t)index;
    errno = 0;
    d = strtod(decay, &end);
    if (errno != 0 || end == decay || *end != '\0' || d != f->cfg.decays[index])
        return cause_set(cause, EMAD_EFORMAT,
                         "emad_decay '%.40s' is not decay %zu of the configuration", decay,
                         f->decay_index);
    if (snapshot_is_name(base_name(path), &name_step, &name_index) &&
        (name_step != f->step || name_index != f->decay_index))
        return cause_set(cause, EMAD_EFORMAT,
                         "the file name says step %" PRIu64 " decay %zu, the metadata step "
                         "%" PRIu64 " decay %zu",
                         name_step, name_index, f->step, f->decay_index);
    return 0;
}

/* Read and check the header and the tensor descriptions of a parsed file (see snapshot_meta.h). */
int
snapshot_meta_read(snapshot_file *f, const safetensors_file *sf, const char *path, char **cause)
{
    int rc;

    if ((rc = read_header(f, sf, path, cause)) < 0)
        return rc;
    return describe_tensors(f, sf, cause);
}

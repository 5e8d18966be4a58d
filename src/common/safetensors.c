/*
 * safetensors.c - reader and writer for the safetensors file format.
 *
 * The reader owns one buffer with the whole file (f->map) and every parsed
 * tensor points into it, so a file is copied once, at most. The header is
 * parsed with jansson (duplicate keys rejected) and checked against every
 * rule of the reference implementation before anything is returned: a
 * parsed safetensors_file is always internally consistent (offsets sorted,
 * contiguous, inside the map, sizes matching shapes). Tensor data in the
 * map has the alignment the file gives it; callers use memcpy or unaligned
 * loads unless they wrote the file with safetensors_write.
 *
 * The writer builds the header with jansson (metadata first, then tensors
 * by dtype size descending and name), pads it with spaces to a multiple of
 * 8 and writes header and data to a temp file in the target's directory,
 * then fsyncs, renames over the target and fsyncs the directory. On any
 * failure the temp file is removed and the target is left untouched.
 * Nothing here keeps global state; all functions are thread-safe.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "common/cause.h"
#include "common/dtype.h"
#include "common/proto.h"
#include "common/safetensors.h"

/* Longest part of a tensor name or key quoted in an error message. */
#define QUOTE_MAX 200

/* Bytes the writer gathers before a write(); larger tensors go out directly. */
#define WBUF_SIZE (1u << 20)

/* Copy at most QUOTE_MAX bytes of s into buf (with "..." if cut) for a message; returns buf. */
static const char *
quote(char *buf, size_t size, const char *s)
{
    size_t len = strlen(s);

    if (len <= QUOTE_MAX)
        snprintf(buf, size, "%s", s);
    else
        snprintf(buf, size, "%.*s...", QUOTE_MAX, s);
    return buf;
}

/* Read a little-endian u64 from p (any alignment). */
static uint64_t
load_le64(const unsigned char *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* Store v little-endian at p. */
static void
store_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* Free a parsed file: names, metadata, arrays and the map; NULL accepted. */
void
safetensors_free(safetensors_file *f)
{
    if (f == NULL)
        return;
    for (size_t i = 0; i < f->ntensors; i++)
        free(f->tensors[i].name);
    for (size_t i = 0; i < f->nmeta; i++) {
        free(f->meta[i].key);
        free(f->meta[i].value);
    }
    free(f->tensors);
    free(f->meta);
    free(f->map);
    free(f);
}

/* Value of a metadata key, or NULL; the string is owned by f. */
const char *
safetensors_meta_get(const safetensors_file *f, const char *key)
{
    for (size_t i = 0; i < f->nmeta; i++) {
        if (strcmp(f->meta[i].key, key) == 0)
            return f->meta[i].value;
    }
    return NULL;
}

/* The tensor named name, or NULL; linear search (files hold few tensors). */
const safetensors_tensor *
safetensors_find(const safetensors_file *f, const char *name)
{
    for (size_t i = 0; i < f->ntensors; i++) {
        if (strcmp(f->tensors[i].name, name) == 0)
            return &f->tensors[i];
    }
    return NULL;
}

/* Non-negative JSON integer j into *v; returns 0, or -1 if j is anything else. */
static int
json_uint(const json_t *j, uint64_t *v)
{
    json_int_t i;

    if (!json_is_integer(j) || (i = json_integer_value(j)) < 0)
        return -1;
    *v = (uint64_t)i;
    return 0;
}

/* Parse the "__metadata__" object into f->meta; returns 0, EMAD_EFORMAT or -ENOMEM. */
static int
parse_meta(safetensors_file *f, json_t *obj, char **cause)
{
    const char *key;
    json_t *val;
    char q[QUOTE_MAX + 8];

    if (!json_is_object(obj))
        return cause_set(cause, EMAD_EFORMAT,
                         "__metadata__ is not an object (it must map strings to strings)");
    if (json_object_size(obj) == 0)
        return 0;
    f->meta = calloc(json_object_size(obj), sizeof(*f->meta));
    if (f->meta == NULL)
        return cause_set(cause, -ENOMEM, "out of memory");
    json_object_foreach(obj, key, val)
    {
        safetensors_meta *m = &f->meta[f->nmeta];

        if (!json_is_string(val))
            return cause_set(cause, EMAD_EFORMAT,
                             "__metadata__ key '%s': value is not a string (metadata maps "
                             "strings to strings)",
                             quote(q, sizeof(q), key));
        m->key = strdup(key);
        m->value = strdup(json_string_value(val));
        f->nmeta++;
        if (m->key == NULL || m->value == NULL)
            return cause_set(cause, -ENOMEM, "out of memory");
    }
    return 0;
}

/* Parse one tensor entry into *t (name already set); returns 0 or EMAD_EFORMAT. */
static int
parse_entry(safetensors_tensor *t, json_t *obj, char **cause)
{
    const char *key;
    json_t *val, *dtype, *shape, *offs;
    uint64_t begin, end, numel, nbytes;
    char q[QUOTE_MAX + 8], sh[EMAD_MAX_NDIM * 24 + 8];
    size_t ndim;

    quote(q, sizeof(q), t->name);
    if (!json_is_object(obj))
        return cause_set(cause, EMAD_EFORMAT,
                         "tensor '%s': entry is not an object with dtype, shape and data_offsets",
                         q);
    json_object_foreach(obj, key, val)
    {
        if (strcmp(key, PROTO_KEY_DTYPE) != 0 && strcmp(key, PROTO_KEY_SHAPE) != 0 &&
            strcmp(key, "data_offsets") != 0) {
            char k[QUOTE_MAX + 8];
            return cause_set(cause, EMAD_EFORMAT,
                             "tensor '%s': unexpected key '%s' (an entry has exactly dtype, "
                             "shape and data_offsets)",
                             q, quote(k, sizeof(k), key));
        }
    }
    if ((dtype = json_object_get(obj, PROTO_KEY_DTYPE)) == NULL)
        return cause_set(cause, EMAD_EFORMAT, "tensor '%s': missing key 'dtype'", q);
    if ((shape = json_object_get(obj, PROTO_KEY_SHAPE)) == NULL)
        return cause_set(cause, EMAD_EFORMAT, "tensor '%s': missing key 'shape'", q);
    if ((offs = json_object_get(obj, "data_offsets")) == NULL)
        return cause_set(cause, EMAD_EFORMAT, "tensor '%s': missing key 'data_offsets'", q);

    if (!json_is_string(dtype))
        return cause_set(cause, EMAD_EFORMAT, "tensor '%s': dtype is not a string", q);
    t->dtype = dtype_from_name(json_string_value(dtype), json_string_length(dtype));
    if (t->dtype == EMAD_DTYPE_INVALID) {
        char d[QUOTE_MAX + 8];
        return cause_set(cause, EMAD_EFORMAT, "tensor '%s': unknown or unsupported dtype '%s'", q,
                         quote(d, sizeof(d), json_string_value(dtype)));
    }

    if (!json_is_array(shape))
        return cause_set(cause, EMAD_EFORMAT,
                         "tensor '%s': shape is not an array of non-negative integers", q);
    ndim = json_array_size(shape);
    if (ndim > EMAD_MAX_NDIM)
        return cause_set(cause, EMAD_EFORMAT,
                         "tensor '%s': shape has %zu dimensions, more than the maximum of %d", q,
                         ndim, EMAD_MAX_NDIM);
    t->ndim = (uint32_t)ndim;
    for (size_t i = 0; i < ndim; i++) {
        if (json_uint(json_array_get(shape, i), &t->shape[i]) < 0)
            return cause_set(cause, EMAD_EFORMAT,
                             "tensor '%s': shape[%zu] is not a non-negative integer", q, i);
    }

    if (!json_is_array(offs) || json_array_size(offs) != 2 ||
        json_uint(json_array_get(offs, 0), &begin) < 0 ||
        json_uint(json_array_get(offs, 1), &end) < 0)
        return cause_set(cause, EMAD_EFORMAT,
                         "tensor '%s': data_offsets is not an array of two non-negative "
                         "integers [BEGIN, END]",
                         q);
    if (end < begin)
        return cause_set(cause, EMAD_EFORMAT,
                         "tensor '%s': data_offsets [%llu, %llu] end before they begin", q,
                         (unsigned long long)begin, (unsigned long long)end);

    dtype_fmt_shape(sh, sizeof(sh), t->shape, t->ndim);
    if (dtype_numel(t->shape, t->ndim, t->dtype, &numel, &nbytes) < 0)
        return cause_set(cause, EMAD_EFORMAT, "tensor '%s': shape %s of %s is too large", q, sh,
                         dtype_name(t->dtype));
    if (end - begin != nbytes)
        return cause_set(cause, EMAD_EFORMAT,
                         "tensor '%s': data_offsets [%llu, %llu] hold %llu bytes but shape %s of "
                         "%s needs %llu",
                         q, (unsigned long long)begin, (unsigned long long)end,
                         (unsigned long long)(end - begin), sh, dtype_name(t->dtype),
                         (unsigned long long)nbytes);
    t->offset = begin;
    t->nbytes = nbytes;
    return 0;
}

/* qsort order of tensors: by begin, then end, then name (so equal empties sort stably). */
static int
cmp_offset(const void *a, const void *b)
{
    const safetensors_tensor *x = a, *y = b;

    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    if (x->nbytes != y->nbytes)
        return x->nbytes < y->nbytes ? -1 : 1;
    return strcmp(x->name, y->name);
}

/*
 * Check the sorted tensors are contiguous from 0 and end exactly at
 * data_len; returns 0 or EMAD_EFORMAT.
 */
static int
check_layout(const safetensors_file *f, size_t data_len, char **cause)
{
    uint64_t pos = 0;
    char q[QUOTE_MAX + 8], p[QUOTE_MAX + 8];

    for (size_t i = 0; i < f->ntensors; i++) {
        const safetensors_tensor *t = &f->tensors[i];
        unsigned long long b = t->offset, e = t->offset + t->nbytes;

        quote(q, sizeof(q), t->name);
        if (i == 0 && b != 0)
            return cause_set(cause, EMAD_EFORMAT,
                             "tensor '%s': data_offsets [%llu, %llu] do not start at 0 (the "
                             "first tensor must begin at byte 0 of the data buffer)",
                             q, b, e);
        if (i > 0 && b > pos)
            return cause_set(cause, EMAD_EFORMAT,
                             "tensor '%s': data_offsets [%llu, %llu] leave a hole of %llu bytes "
                             "after tensor '%s', which ends at %llu",
                             q, b, e, b - (unsigned long long)pos,
                             quote(p, sizeof(p), f->tensors[i - 1].name), (unsigned long long)pos);
        if (i > 0 && b < pos)
            return cause_set(cause, EMAD_EFORMAT,
                             "tensor '%s': data_offsets [%llu, %llu] overlap tensor '%s', which "
                             "ends at %llu",
                             q, b, e, quote(p, sizeof(p), f->tensors[i - 1].name),
                             (unsigned long long)pos);
        pos = e;
    }
    if (pos > data_len)
        return cause_set(cause, EMAD_EFORMAT,
                         "file is truncated: the tensors end at byte %llu of the data buffer but "
                         "only %zu bytes follow the header",
                         (unsigned long long)pos, data_len);
    if (pos < data_len)
        return cause_set(cause, EMAD_EFORMAT,
                         "%llu trailing bytes after the last tensor (the tensors end at byte %llu "
                         "of the data buffer, which holds %zu bytes)",
                         (unsigned long long)(data_len - pos), (unsigned long long)pos, data_len);
    return 0;
}

/*
 * Parse f->map[0..f->map_len) in place: fills f->tensors and f->meta, with
 * tensor data pointing into the map. Returns 0, EMAD_EFORMAT or -ENOMEM;
 * on error f holds whatever was allocated so far (safetensors_free releases it).
 */
static int
parse_map(safetensors_file *f, char **cause)
{
    const unsigned char *map = f->map;
    const char *hdr, *key;
    uint64_t n;
    size_t data_len, count;
    json_t *root, *val;
    json_error_t jerr;
    int rc = 0;

    if (f->map_len < 8)
        return cause_set(cause, EMAD_EFORMAT,
                         "file is %zu bytes, too short for the 8-byte header length", f->map_len);
    n = load_le64(map);
    if (n > SAFETENSORS_MAX_HEADER)
        return cause_set(cause, EMAD_EFORMAT, "header length %llu exceeds the limit of %u bytes",
                         (unsigned long long)n, SAFETENSORS_MAX_HEADER);
    if (n > f->map_len - 8)
        return cause_set(cause, EMAD_EFORMAT,
                         "file is truncated: header length %llu exceeds the %zu bytes that follow "
                         "the length field",
                         (unsigned long long)n, f->map_len - 8);
    hdr = (const char *)map + 8;
    if (n == 0 || hdr[0] != '{')
        return cause_set(cause, EMAD_EFORMAT,
                         "header does not start with '{' (it must be a JSON object)");
    root = json_loadb(hdr, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return cause_set(cause, EMAD_EFORMAT, "header is not valid JSON: %s (line %d, column %d)",
                         jerr.text, jerr.line, jerr.column);
    if (!json_is_object(root)) {
        rc = cause_set(cause, EMAD_EFORMAT, "header is not a JSON object");
        goto out;
    }

    count = json_object_size(root);
    if (json_object_get(root, "__metadata__") != NULL)
        count--;
    if (count > 0 && (f->tensors = calloc(count, sizeof(*f->tensors))) == NULL) {
        rc = cause_set(cause, -ENOMEM, "out of memory");
        goto out;
    }
    json_object_foreach(root, key, val)
    {
        safetensors_tensor *t;

        if (strcmp(key, "__metadata__") == 0) {
            if ((rc = parse_meta(f, val, cause)) < 0)
                goto out;
            continue;
        }
        t = &f->tensors[f->ntensors++];
        if ((t->name = strdup(key)) == NULL) {
            rc = cause_set(cause, -ENOMEM, "out of memory");
            goto out;
        }
        if ((rc = parse_entry(t, val, cause)) < 0)
            goto out;
    }

    if (f->ntensors > 1)
        qsort(f->tensors, f->ntensors, sizeof(*f->tensors), cmp_offset);
    data_len = f->map_len - 8 - (size_t)n;
    if ((rc = check_layout(f, data_len, cause)) < 0)
        goto out;
    for (size_t i = 0; i < f->ntensors; i++)
        f->tensors[i].data = map + 8 + (size_t)n + (size_t)f->tensors[i].offset;

out:
    json_decref(root);
    return rc;
}

/* Parse a file held in a malloc'd buffer that the result takes over (freed on error too). */
static int
parse_owned(safetensors_file **out, void *map, size_t len, char **cause)
{
    safetensors_file *f;
    int rc;

    *out = NULL;
    if ((f = calloc(1, sizeof(*f))) == NULL) {
        free(map);
        return cause_set(cause, -ENOMEM, "out of memory");
    }
    f->map = map;
    f->map_len = len;
    if ((rc = parse_map(f, cause)) < 0) {
        safetensors_free(f);
        return rc;
    }
    *out = f;
    return 0;
}

/* Parse a copy of buf[0..len); *out owns the result (free with safetensors_free). */
int
safetensors_parse(safetensors_file **out, const void *buf, size_t len, char **cause)
{
    void *map;

    if (cause != NULL)
        *cause = NULL;
    *out = NULL;
    if ((map = malloc(len > 0 ? len : 1)) == NULL)
        return cause_set(cause, -ENOMEM, "out of memory");
    if (len > 0)
        memcpy(map, buf, len);
    return parse_owned(out, map, len, cause);
}

/*
 * Read the regular file open on fd whole into memory with read() loops and
 * parse it in place; what names the file in messages. fd stays open.
 */
int
safetensors_read_fd(safetensors_file **out, int fd, const char *what, char **cause)
{
    struct stat sb;
    unsigned char *map;
    size_t len, got = 0;

    if (cause != NULL)
        *cause = NULL;
    *out = NULL;
    if (fstat(fd, &sb) < 0)
        return cause_set(cause, EMAD_EIO, "%s: %s", what, strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return cause_set(cause, EMAD_EIO, "%s: not a regular file", what);
    if ((uint64_t)sb.st_size > (uint64_t)SIZE_MAX - 1)
        return cause_set(cause, EMAD_EIO, "%s: file too large for memory", what);
    len = (size_t)sb.st_size;
    if ((map = malloc(len > 0 ? len : 1)) == NULL)
        return cause_set(cause, -ENOMEM, "%s: out of memory for %zu bytes", what, len);
    while (got < len) {
        ssize_t r = read(fd, map + got, len - got);
        int rc;

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            rc = r < 0 ? cause_set(cause, EMAD_EIO, "%s: read: %s", what, strerror(errno))
                       : cause_set(cause, EMAD_EIO, "%s: file shrank while being read", what);
            free(map);
            return rc;
        }
        got += (size_t)r;
    }
    return parse_owned(out, map, len, cause);
}

/* Open path (a FIFO or device is refused without blocking) and read it whole. */
int
safetensors_read(safetensors_file **out, const char *path, char **cause)
{
    int fd, rc;

    if (cause != NULL)
        *cause = NULL;
    *out = NULL;
    if ((fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)) < 0)
        return cause_set(cause, EMAD_EIO, "%s: %s", path, strerror(errno));
    rc = safetensors_read_fd(out, fd, path, cause);
    (void)close(fd);
    return rc;
}

/* A write-side buffer in front of one file descriptor. */
typedef struct wbuf {
    int fd;
    unsigned char *buf;
    size_t len;
} wbuf;

/* write() all of p[0..n), retrying partial writes and EINTR; 0 or -1 with errno set. */
static int
write_all(int fd, const void *p, size_t n)
{
    const unsigned char *c = p;

    while (n > 0) {
        ssize_t w = write(fd, c, n);

        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        if (w == 0) {
            errno = EIO;
            return -1;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Write out what w holds; 0 or -1 with errno set. */
static int
wbuf_flush(wbuf *w)
{
    int rc = write_all(w->fd, w->buf, w->len);

    w->len = 0;
    return rc;
}

/* Append p[0..n) through the buffer (large blocks go straight out); 0 or -1 with errno set. */
static int
wbuf_put(wbuf *w, const void *p, size_t n)
{
    if (n > WBUF_SIZE - w->len) {
        if (wbuf_flush(w) < 0)
            return -1;
        if (n > WBUF_SIZE / 2)
            return write_all(w->fd, p, n);
    }
    if (n > 0)
        memcpy(w->buf + w->len, p, n);
    w->len += n;
    return 0;
}

/* qsort order for writing: dtype size descending, then name (by strcmp). */
static int
cmp_write(const void *a, const void *b)
{
    const safetensors_tensor *x = *(const safetensors_tensor *const *)a,
                             *y = *(const safetensors_tensor *const *)b;
    size_t sx = dtype_size(x->dtype), sy = dtype_size(y->dtype);

    if (sx != sy)
        return sx > sy ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* One tensor entry {dtype, shape, data_offsets} for the header, or NULL (no memory). */
static json_t *
entry_json(const safetensors_tensor *t, uint64_t begin)
{
    json_t *e = json_object(), *shape = json_array(), *offs = json_array();
    int bad = e == NULL || shape == NULL || offs == NULL;

    for (uint32_t i = 0; !bad && i < t->ndim; i++)
        bad = json_array_append_new(shape, json_integer((json_int_t)t->shape[i])) < 0;
    bad = bad || json_array_append_new(offs, json_integer((json_int_t)begin)) < 0 ||
          json_array_append_new(offs, json_integer((json_int_t)(begin + t->nbytes))) < 0;
    bad = bad || json_object_set_new(e, PROTO_KEY_DTYPE, json_string(dtype_name(t->dtype))) < 0;
    if (bad || json_object_set(e, PROTO_KEY_SHAPE, shape) < 0 ||
        json_object_set(e, "data_offsets", offs) < 0) {
        json_decref(e);
        e = NULL;
    }
    json_decref(shape);
    json_decref(offs);
    return e;
}

/*
 * Validate the tensors and metadata and build the padded header text:
 * *order gets the write order, *hdr the header (length *hdr_len, a
 * multiple of 8). Returns 0, EMAD_EINVAL or -ENOMEM with *cause set.
 */
static int
build_header(const safetensors_tensor *tensors, size_t n, const safetensors_meta *meta,
             size_t nmeta, const safetensors_tensor ***order, char **hdr, size_t *hdr_len,
             char **cause)
{
    json_t *root, *md = NULL;
    const safetensors_tensor **ord = NULL;
    char q[QUOTE_MAX + 8], *text = NULL, *padded;
    uint64_t pos = 0;
    size_t len;
    int rc = 0;

    if ((root = json_object()) == NULL)
        return cause_set(cause, -ENOMEM, "out of memory");
    if (nmeta > 0) {
        if ((md = json_object()) == NULL || json_object_set_new(root, "__metadata__", md) < 0) {
            rc = cause_set(cause, -ENOMEM, "out of memory");
            goto out;
        }
    }
    for (size_t i = 0; i < nmeta; i++) {
        json_t *v;

        if (meta[i].key == NULL || meta[i].value == NULL) {
            rc = cause_set(cause, EMAD_EINVAL, "metadata entry %zu has a NULL key or value", i);
            goto out;
        }
        if (json_object_get(md, meta[i].key) != NULL) {
            rc = cause_set(cause, EMAD_EINVAL, "metadata key '%s' appears twice",
                           quote(q, sizeof(q), meta[i].key));
            goto out;
        }
        if ((v = json_string(meta[i].value)) == NULL || json_object_set_new(md, meta[i].key, v)) {
            rc = cause_set(cause, EMAD_EINVAL, "metadata key '%s': key or value is not valid UTF-8",
                           quote(q, sizeof(q), meta[i].key));
            goto out;
        }
    }

    if (n > 0 && (ord = calloc(n, sizeof(*ord))) == NULL) {
        rc = cause_set(cause, -ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const safetensors_tensor *t = &tensors[i];
        uint64_t nbytes;

        if (t->name == NULL) {
            rc = cause_set(cause, EMAD_EINVAL, "tensor %zu has no name", i);
            goto out;
        }
        quote(q, sizeof(q), t->name);
        if (strcmp(t->name, "__metadata__") == 0) {
            rc = cause_set(cause, EMAD_EINVAL, "tensor name '__metadata__' is reserved");
            goto out;
        }
        if (dtype_size(t->dtype) == 0) {
            rc = cause_set(cause, EMAD_EINVAL, "tensor '%s': invalid dtype %d", q, t->dtype);
            goto out;
        }
        if (t->ndim > EMAD_MAX_NDIM) {
            rc = cause_set(cause, EMAD_EINVAL,
                           "tensor '%s': %u dimensions, more than the maximum of %d", q,
                           (unsigned)t->ndim, EMAD_MAX_NDIM);
            goto out;
        }
        if (dtype_numel(t->shape, t->ndim, t->dtype, NULL, &nbytes) < 0) {
            rc = cause_set(cause, EMAD_EINVAL, "tensor '%s': shape is too large", q);
            goto out;
        }
        if (nbytes != t->nbytes || (nbytes > 0 && t->data == NULL)) {
            char sh[EMAD_MAX_NDIM * 24 + 8];
            rc = cause_set(cause, EMAD_EINVAL,
                           "tensor '%s': %llu bytes of data but shape %s of %s needs %llu", q,
                           (unsigned long long)(t->data != NULL ? t->nbytes : 0),
                           dtype_fmt_shape(sh, sizeof(sh), t->shape, t->ndim), dtype_name(t->dtype),
                           (unsigned long long)nbytes);
            goto out;
        }
        ord[i] = t;
    }
    if (n > 1)
        qsort(ord, n, sizeof(*ord), cmp_write);

    for (size_t i = 0; i < n; i++) {
        const safetensors_tensor *t = ord[i];
        json_t *e;

        quote(q, sizeof(q), t->name);
        if (json_object_get(root, t->name) != NULL) {
            rc = cause_set(cause, EMAD_EINVAL, "tensor '%s' appears twice", q);
            goto out;
        }
        if (pos > (UINT64_C(1) << 62) - t->nbytes) {
            rc = cause_set(cause, EMAD_EINVAL, "tensor '%s': the tensors total too many bytes", q);
            goto out;
        }
        if ((e = entry_json(t, pos)) == NULL) {
            rc = cause_set(cause, -ENOMEM, "out of memory");
            goto out;
        }
        if (json_object_set_new(root, t->name, e) < 0) {
            rc = cause_set(cause, EMAD_EINVAL, "tensor name '%s' is not valid UTF-8", q);
            goto out;
        }
        pos += t->nbytes;
    }

    if ((text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER)) == NULL) {
        rc = cause_set(cause, -ENOMEM, "out of memory");
        goto out;
    }
    len = strlen(text);
    if (len > SAFETENSORS_MAX_HEADER - 8) {
        rc = cause_set(cause, EMAD_EINVAL, "header of %zu bytes exceeds the limit of %u", len,
                       SAFETENSORS_MAX_HEADER);
        goto out;
    }
    if ((padded = malloc(len + 8)) == NULL) {
        rc = cause_set(cause, -ENOMEM, "out of memory");
        goto out;
    }
    memcpy(padded, text, len);
    while (len % 8 != 0)
        padded[len++] = ' ';
    *hdr = padded;
    *hdr_len = len;
    *order = ord;
    ord = NULL;

out:
    free(text);
    free(ord);
    json_decref(root);
    return rc;
}

/*
 * Create a private temp file in directory dfd, named .NAME.XXXXXX, or
 * .NAME.TAG.XXXXXX when tag is not NULL (six random letters and digits;
 * O_EXCL|O_NOFOLLOW, so nothing that exists is opened); *tmp gets its
 * malloc'd name. Returns the fd or -1 with errno set.
 */
static int
open_temp_at(int dfd, const char *name, const char *tag, char **tmp)
{
    static const char letters[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    size_t size = strlen(name) + (tag != NULL ? strlen(tag) + 1 : 0) + 16, len;
    int fd = -1;

    if ((*tmp = malloc(size)) == NULL) {
        errno = ENOMEM;
        return -1;
    }
    len = (size_t)snprintf(*tmp, size, ".%s%s%s.XXXXXX", name, tag != NULL ? "." : "",
                           tag != NULL ? tag : "");
    for (int tries = 0; tries < 100 && fd < 0; tries++) {
        unsigned char rnd[6];

        if (getentropy(rnd, sizeof(rnd)) < 0)
            break;
        for (size_t i = 0; i < sizeof(rnd); i++)
            (*tmp)[len - 6 + i] = letters[rnd[i] % (sizeof(letters) - 1)];
        fd = openat(dfd, *tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0) {
        int e = errno;
        free(*tmp);
        *tmp = NULL;
        errno = e;
    }
    return fd;
}

/* The code for an I/O failure with errno e: EMAD_EIO, or -e with opts->errno_codes. */
static int
io_code(const safetensors_write_opts *opts, int e)
{
    return opts->errno_codes ? -e : EMAD_EIO;
}

/* Write tensors and metadata to dfd/name atomically (temp file, fsync, rename, fsync dir). */
int
safetensors_write_at(int dfd, const char *name, const safetensors_tensor *tensors, size_t n,
                     const safetensors_meta *meta, size_t nmeta, const safetensors_write_opts *opts,
                     char **cause)
{
    static const safetensors_write_opts defaults = {NULL, 0, NULL};
    const safetensors_tensor **order = NULL;
    unsigned char lenbuf[8];
    char *hdr = NULL, *tmp = NULL;
    size_t hdr_len = 0;
    uint64_t size;
    wbuf w = {-1, NULL, 0};
    int rc, e;

    if (cause != NULL)
        *cause = NULL;
    if (opts == NULL)
        opts = &defaults;
    if ((rc = build_header(tensors, n, meta, nmeta, &order, &hdr, &hdr_len, cause)) < 0)
        return rc;
    size = 8 + hdr_len;
    if ((w.buf = malloc(WBUF_SIZE)) == NULL) {
        rc = cause_set(cause, -ENOMEM, "out of memory");
        goto out_hdr;
    }
    if ((w.fd = open_temp_at(dfd, name, opts->tmp_tag, &tmp)) < 0) {
        e = errno;
        rc = cause_set(cause, io_code(opts, e), "%s: cannot create a temp file: %s", name,
                       strerror(e));
        goto out_buf;
    }
    if (fchmod(w.fd, 0644) < 0)
        goto fail_io;
    store_le64(lenbuf, hdr_len);
    if (wbuf_put(&w, lenbuf, sizeof(lenbuf)) < 0 || wbuf_put(&w, hdr, hdr_len) < 0)
        goto fail_io;
    for (size_t i = 0; i < n; i++) {
        if (wbuf_put(&w, order[i]->data, (size_t)order[i]->nbytes) < 0)
            goto fail_io;
        size += order[i]->nbytes;
    }
    if (wbuf_flush(&w) < 0 || fsync(w.fd) < 0)
        goto fail_io;
    rc = close(w.fd);
    w.fd = -1;
    if (rc < 0 || renameat(dfd, tmp, dfd, name) < 0)
        goto fail_io;
    free(tmp);
    tmp = NULL;
    rc = 0;
    if (opts->bytes != NULL)
        *opts->bytes = size;
    if (fsync(dfd) < 0 && errno != EINVAL && errno != ENOTSUP) {
        /* the new file is in place; only its durability is in doubt */
        e = errno;
        rc = cause_set(cause, io_code(opts, e),
                       "%s: written, but fsync of its directory failed: %s", name, strerror(e));
    }
    goto out_buf;

fail_io:
    e = errno;
    rc = cause_set(cause, io_code(opts, e), "%s: write failed: %s", name, strerror(e));
    if (w.fd >= 0)
        (void)close(w.fd);
    (void)unlinkat(dfd, tmp, 0);
out_buf:
    free(tmp);
    free(w.buf);
out_hdr:
    free(hdr);
    free(order);
    return rc;
}

/* Write tensors and metadata to path atomically: safetensors_write_at() in its directory. */
int
safetensors_write_ex(const char *path, const safetensors_tensor *tensors, size_t n,
                     const safetensors_meta *meta, size_t nmeta, const safetensors_write_opts *opts,
                     char **cause)
{
    const char *slash = strrchr(path, '/');
    char *dir;
    int dfd, rc, e;

    if (cause != NULL)
        *cause = NULL;
    if (slash == NULL)
        dir = strdup(".");
    else if (slash == path)
        dir = strdup("/");
    else
        dir = strndup(path, (size_t)(slash - path));
    if (dir == NULL)
        return cause_set(cause, -ENOMEM, "out of memory");
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    e = errno;
    free(dir);
    if (dfd < 0)
        return cause_set(cause, opts != NULL && opts->errno_codes ? -e : EMAD_EIO,
                         "%s: cannot open its directory: %s", path, strerror(e));
    rc = safetensors_write_at(dfd, slash != NULL ? slash + 1 : path, tensors, n, meta, nmeta, opts,
                              cause);
    (void)close(dfd);
    if (rc < 0 && cause != NULL && *cause != NULL && slash != NULL) {
        char *full = NULL; /* messages name the path, not only the file */

        if (asprintf(&full, "%.*s/%s", (int)(slash - path), path, *cause) >= 0) {
            free(*cause);
            *cause = full;
        }
    }
    return rc;
}

/* safetensors_write_ex() with the defaults: temp file .NAME.XXXXXX, I/O failures are EMAD_EIO. */
int
safetensors_write(const char *path, const safetensors_tensor *tensors, size_t n,
                  const safetensors_meta *meta, size_t nmeta, char **cause)
{
    return safetensors_write_ex(path, tensors, n, meta, nmeta, NULL, cause);
}

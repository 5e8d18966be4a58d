/*
 * pull.c - pulls of libemad: emad_pull, emad_pull_ex, emad_pull_into and
 * emad_pull_into_ex. A pull request names the tensors (or all) and the
 * largest reply the client takes; a model small enough comes back inline,
 * a larger one as a session that the client reads in batches of ranges
 * (pipelined over the client's connections) and then releases. Pulls are
 * paged (`offset`): the descriptions of a session come in pages of at most
 * 512 KiB, read one after the other before the data, so a model of any
 * size can be pulled whole. The tensor
 * descriptions of the reply are parsed by src/common/codec.c; tensor data
 * is copied once, from the received message into the caller's (or the
 * library-owned model's) buffers.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "common/dtype.h"

/* The daemon reserves this many bytes per range of a read reply. */
#define READ_RANGE_OVERHEAD 16

/* Largest encoding of one read range [index, offset, length]. */
#define READ_RANGE_WIRE 28

/* Request header room in a read (v, op, session, ranges header). */
#define READ_HEADER_WIRE 64

/* Largest read reply the client asks for while pulling a session. */
#define READ_BATCH_BYTES (4ULL << 20)

/*
 * Largest pull reply that carries its data inline (the pull's
 * inline_bytes); a larger pull becomes a session read in batches of
 * READ_BATCH_BYTES. A message of 32 MiB or more is received into a fresh
 * mapping under glibc's malloc (its mmap threshold adjusts up to 32 MiB,
 * no further), page-faulted in on every pull: models of 32 and 48 MiB
 * pulled inline moved 0.9-1.0 GB/s against 2.2-3.3 GB/s as sessions
 * (bench/RESULTS.md, "Pull size").
 */
#define PULL_INLINE_BYTES (16ULL << 20)

/* Arguments of a pull request. */
typedef struct pull_req {
    const char *model;
    const char *const *names; /* NULL: all */
    size_t nnames;
    const emad_tensor *named; /* or names taken from these tensors */
    uint64_t max_reply;
    const emad_pull_options *opts; /* NULL: defaults */
    int has_step;                  /* the version at exactly step (cluster reads) */
    uint64_t step;
} pull_req;

/* Name i of a pull request. */
static const char *
pull_name(const pull_req *q, size_t i)
{
    return q->names != NULL ? q->names[i] : q->named[i].name;
}

/* Pack a pull request. */
static void
build_pull(msgpack_packer *pk, const void *vctx)
{
    const pull_req *q = vctx;
    int with_names = q->names != NULL || q->named != NULL;
    int with_decay = q->opts != NULL && q->opts->decay >= 0.0;
    int with_dtype = q->opts != NULL && q->opts->dtype != EMAD_DTYPE_INVALID;

    pk_head(pk, PROTO_OP_PULL, 4 + with_names + with_decay + with_dtype + q->has_step);
    pk_kv_str(pk, PROTO_KEY_MODEL, q->model);
    proto_pack_kv_u64(pk, PROTO_KEY_OFFSET, 0);
    if (q->has_step)
        proto_pack_kv_u64(pk, PROTO_KEY_STEP, q->step);
    if (with_decay) {
        proto_pack_str(pk, PROTO_KEY_DECAY);
        msgpack_pack_double(pk, q->opts->decay);
    }
    if (with_dtype)
        pk_kv_str(pk, PROTO_KEY_DTYPE,
                  q->opts->dtype == EMAD_PULL_SHADOW ? PROTO_VAL_DTYPE_SHADOW
                                                     : dtype_name(q->opts->dtype));
    if (with_names) {
        proto_pack_str(pk, PROTO_KEY_TENSORS);
        msgpack_pack_array(pk, q->nnames);
        for (size_t i = 0; i < q->nnames; i++)
            proto_pack_str(pk, pull_name(q, i));
    }
    proto_pack_kv_u64(pk, PROTO_KEY_MAX_REPLY_BYTES, q->max_reply);
    proto_pack_kv_u64(pk, PROTO_KEY_INLINE_BYTES, PULL_INLINE_BYTES);
}

/* Free a pull state; safe on a zeroed one. */
void
pull_state_free(pull_state *p)
{
    reply_free(&p->r);
    for (size_t i = 0; i < p->npages; i++)
        reply_free(&p->pages[i]);
    free(p->pages);
    p->pages = NULL;
    p->npages = 0;
    free(p->t);
    p->t = NULL;
}

/* An optional unsigned key of a reply map into *v (*has set); 0 or EMAD_EPROTO. */
static int
opt_u64(emad_client *c, const msgpack_object *map, const char *key, int *has, uint64_t *v)
{
    const msgpack_object *o = proto_map_get(map, key);

    *has = o != NULL;
    if (o == NULL)
        return 0;
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return fail(c, EMAD_EPROTO, "reply key '%s' is not an unsigned integer", key);
    *v = o->via.u64;
    return 0;
}

/* Append the tensor descriptions of pull reply root (a page from index p->n) to p. */
static int
parse_page(emad_client *c, const msgpack_object *root, pull_state *p)
{
    const msgpack_object *arr;
    codec_tensor *t;
    codec_err err;
    size_t k;
    int rc;

    if ((rc = rget_array(c, root, PROTO_KEY_TENSORS, &arr)) != 0 ||
        (rc = opt_u64(c, root, PROTO_KEY_NEXT, &p->has_next, &p->next)) != 0)
        return rc;
    k = arr->via.array.size;
    if (p->has_next && (!p->has_session || p->next != p->n + k || k == 0))
        return fail(c, EMAD_EPROTO, "pull: reply page of %zu tensors from %zu says next %llu", k,
                    p->n, (unsigned long long)p->next);
    if ((t = realloc(p->t, (p->n + k ? p->n + k : 1) * sizeof(*t))) == NULL)
        return fail(c, EMAD_ENOMEM, "pull: out of memory for %zu tensors", p->n + k);
    p->t = t;
    memset(t + p->n, 0, k * sizeof(*t));
    for (size_t i = 0; i < k; i++, p->n++) {
        if (codec_desc_decode(&arr->via.array.ptr[i], p->n, &t[p->n], &err) != 0)
            return fail_codec(c, &err);
        if (!p->has_session && t[p->n].data == NULL && t[p->n].nbytes > 0)
            return fail(c, EMAD_EPROTO, "pull: reply has neither inline data nor a session");
    }
    return 0;
}

/* Parse a pull reply held in p->r into *p; on failure p is freed (reply included). */
int
pull_parse(emad_client *c, pull_state *p)
{
    int rc;

    if ((rc = rget_u64(c, p->r.root, PROTO_KEY_STEP, &p->step)) != 0 ||
        (rc = opt_u64(c, p->r.root, PROTO_KEY_SESSION, &p->has_session, &p->session)) != 0 ||
        (rc = parse_page(c, p->r.root, p)) != 0)
        pull_state_free(p);
    return rc;
}

/* A request for the page of session descriptions from offset. */
typedef struct page_req {
    uint64_t session, offset, max_reply;
} page_req;

/* Pack a request for a page of a session's descriptions. */
static void
build_page(msgpack_packer *pk, const void *vctx)
{
    const page_req *q = vctx;

    pk_head(pk, PROTO_OP_PULL, 3);
    proto_pack_kv_u64(pk, PROTO_KEY_SESSION, q->session);
    proto_pack_kv_u64(pk, PROTO_KEY_OFFSET, q->offset);
    proto_pack_kv_u64(pk, PROTO_KEY_MAX_REPLY_BYTES, q->max_reply);
}

/* Read the session's remaining pages of descriptions into p (p->r holds the first). */
static int
pull_pages(emad_client *c, const pull_req *pq, pull_state *p)
{
    page_req q = {p->session, 0, pq->max_reply};
    int rc;

    while (p->has_next) {
        reply *pages = realloc(p->pages, (p->npages + 1) * sizeof(*pages)), *r;
        uint64_t step;

        if (pages == NULL)
            return fail(c, EMAD_ENOMEM, "pull: out of memory for a reply page");
        p->pages = pages;
        r = &pages[p->npages];
        q.offset = p->next;
        if ((rc = call(c, PROTO_OP_PULL, build_page, &q, c->opts.timeout_ms, r)) != 0)
            return rc;
        p->npages++;
        if ((rc = rget_u64(c, r->root, PROTO_KEY_STEP, &step)) != 0)
            return rc;
        if (step != p->step)
            return fail(c, EMAD_EPROTO, "pull: a page of session %llu is of step %llu, not %llu",
                        (unsigned long long)p->session, (unsigned long long)step,
                        (unsigned long long)p->step);
        if ((rc = parse_page(c, r->root, p)) != 0)
            return rc;
    }
    return 0;
}

static void pull_release(emad_client *c, uint64_t session);

/* Send a pull and parse its reply into *p (metadata, every page, and inline data if any). */
static int
pull_start(emad_client *c, const pull_req *q, pull_state *p)
{
    int rc;

    memset(p, 0, sizeof(*p));
    if ((rc = call(c, PROTO_OP_PULL, build_pull, q, c->opts.timeout_ms, &p->r)) != 0)
        return rc;
    if ((rc = pull_parse(c, p)) != 0 || !p->has_next)
        return rc;
    if ((rc = pull_pages(c, q, p)) != 0) {
        pull_release(c, p->session);
        pull_state_free(p);
    }
    return rc;
}

/* Best-effort release of a pull session (errors ignored; the daemon also expires it). */
static void
pull_release(emad_client *c, uint64_t session)
{
    simple_req q = {.op = PROTO_OP_RELEASE, .key = PROTO_KEY_SESSION, .value = session};
    char saved[sizeof(c->err)];
    reply r;

    memcpy(saved, c->err, sizeof(saved));
    if (call_simple(c, &q, &r) == 0)
        reply_free(&r);
    memcpy(c->err, saved, sizeof(saved));
}

/* Pack a read request. */
static void
build_read(msgpack_packer *pk, const void *vctx)
{
    const read_req *q = vctx;

    pk_head(pk, PROTO_OP_READ, 2);
    proto_pack_kv_u64(pk, PROTO_KEY_SESSION, q->session);
    proto_pack_str(pk, PROTO_KEY_RANGES);
    msgpack_pack_array(pk, q->n);
    for (size_t i = 0; i < q->n; i++) {
        msgpack_pack_array(pk, 3);
        msgpack_pack_uint64(pk, q->ranges[i].index);
        msgpack_pack_uint64(pk, q->ranges[i].offset);
        msgpack_pack_uint64(pk, q->ranges[i].len);
    }
}

/* Plan the next read batch of a session from cursor (i, off) into q (ranges of room kmax). */
static int
read_plan(emad_client *c, const pull_state *p, uint64_t budget, uint64_t kmax, size_t *i,
          uint64_t *off, read_req *q, read_range *ranges)
{
    uint64_t total = 0;

    q->session = p->session;
    q->ranges = ranges;
    q->n = 0;
    while (*i < p->n && q->n < kmax) {
        uint64_t rem = p->t[*i].nbytes - *off, isz = dtype_size(p->t[*i].dtype), avail, len;

        if (rem == 0) {
            (*i)++;
            *off = 0;
            continue;
        }
        if (total + READ_RANGE_OVERHEAD * (q->n + 1) >= budget)
            break;
        avail = budget - total - READ_RANGE_OVERHEAD * (q->n + 1);
        len = rem < avail ? rem : avail - avail % isz;
        if (len == 0)
            break;
        ranges[q->n++] = (read_range){*i, *off, len};
        total += len;
        *off += len;
        if (*off < p->t[*i].nbytes)
            break; /* the batch is full */
        (*i)++;
        *off = 0;
    }
    if (q->n == 0 && *i < p->n)
        return fail(c, EMAD_EINTERNAL, "pull: read budget too small");
    return 0;
}

/* The ranges of a read reply checked against q: its data array (0), or an error. */
static int
read_ranges(emad_client *c, const reply *r, const read_req *q, const msgpack_object **data)
{
    int rc;

    if ((rc = rget_array(c, r->root, PROTO_KEY_DATA, data)) != 0)
        return rc;
    if ((*data)->via.array.size != q->n)
        return fail(c, EMAD_EPROTO, "read: reply has %u ranges, asked for %zu",
                    (*data)->via.array.size, q->n);
    for (size_t k = 0; k < q->n; k++) {
        const msgpack_object *b = &(*data)->via.array.ptr[k];
        if (b->type != MSGPACK_OBJECT_BIN || b->via.bin.size != q->ranges[k].len)
            return fail(c, EMAD_EPROTO, "read: reply range %zu is not %llu bytes of bin", k,
                        (unsigned long long)q->ranges[k].len);
    }
    return 0;
}

/*
 * Copy the ranges of a read reply into dst. A reply opened unchecked
 * (req_open_unchecked) has its tag checked in the same pass over memory as
 * the copies (auth_frame_check): on a bad tag the copies are made but the
 * read fails; anything else wrong with it is believed only once its tag
 * has been checked.
 */
int
read_copy(emad_client *c, const reply *r, const read_req *q, void *const *dst)
{
    const msgpack_object *data;
    auth_frame_check k;
    int rc = read_ranges(c, r, q, &data);

    if (rc != 0)
        return r->unchecked ? session_unchecked_error(c, r, PROTO_OP_READ, rc) : rc;
    if (r->unchecked && auth_frame_check_begin(&k, r->rx, r->msg, r->frame_len) != 0)
        return session_bad_tag(c, PROTO_OP_READ);
    for (size_t i = 0; i < q->n; i++) {
        const void *from = data->via.array.ptr[i].via.bin.ptr;
        void *to = (char *)dst[q->ranges[i].index] + q->ranges[i].offset;

        if (!r->unchecked) {
            memcpy(to, from, q->ranges[i].len);
        } else if (auth_frame_check_copy(&k, from, q->ranges[i].len, to) != 0) {
            auth_frame_check_abort(&k); /* not in order: no reply of ours */
            return session_bad_tag(c, PROTO_OP_READ);
        }
    }
    return r->unchecked && auth_frame_check_end(&k) != 0 ? session_bad_tag(c, PROTO_OP_READ) : 0;
}

/* The reads of a pull session: the cursor, and a ring of the requests not yet answered. */
typedef struct read_state {
    const pull_state *p;
    uint64_t budget, kmax;
    size_t i;     /* cursor: tensor */
    uint64_t off; /* and byte */
    uint64_t nsent, nrecv;
    read_req ring[PIPELINE_MAX + 1]; /* request j in ring[j % (depth + 1)] */
    read_range *ranges;              /* kmax per ring entry */
} read_state;

/* Plan the next batch of reads and send it on its connection (or move past empty tensors). */
static int
read_next(emad_client *c, read_state *s)
{
    size_t e = s->nsent % (c->depth + 1);
    read_req *q = &s->ring[e];
    uint32_t id;
    int rc;

    rc = read_plan(c, s->p, s->budget, s->kmax, &s->i, &s->off, q, s->ranges + e * s->kmax);
    if (rc != 0 || q->n == 0) /* q->n 0: only empty tensors were left */
        return rc;
    if ((rc = req_send(c, s->nsent % c->depth, PROTO_OP_READ, build_read, q,
                       now_ms() + c->opts.timeout_ms, c->opts.timeout_ms, &id)) != 0)
        return rc;
    s->nsent++;
    return 0;
}

/* Check and decode the reply m to the last read received, and copy its ranges into dst. */
static int
read_take(emad_client *c, read_state *s, received *m, void *const *dst)
{
    reply r;
    int rc;

    if ((rc = req_open_unchecked(c, PROTO_OP_READ, m, &r)) != 0)
        return rc;
    rc = read_copy(c, &r, &s->ring[(s->nrecv - 1) % (c->depth + 1)], dst);
    reply_free(&r);
    return rc;
}

/*
 * Read a pull session in batches that fit the reply cap, c->depth reads in
 * flight, into dst. With authentication, a reply is taken off its
 * connection, the next read goes out on it, and only then is the reply's
 * tag checked and its data copied, so the daemon packs and tags the next
 * reply meanwhile. Without, each reply is copied before the next read
 * goes out (on two cores the copy would compete with the transfer).
 */
static int
read_all(emad_client *c, read_state *s, void *const *dst)
{
    received m = {0};
    int have = 0, rc = 0, rc2;

    for (;;) {
        if (have && !c->auth) {
            have = 0;
            if ((rc = read_take(c, s, &m, dst)) != 0)
                return rc;
        }
        while (rc == 0 && s->i < s->p->n && s->nsent - s->nrecv < c->depth)
            rc = read_next(c, s);
        if (have) {
            have = 0;
            rc2 = read_take(c, s, &m, dst);
            if (rc == 0)
                rc = rc2;
        }
        if (rc != 0 || s->nsent == s->nrecv)
            return rc;
        if ((rc = req_recv(c, s->nrecv % c->depth, PROTO_OP_READ, now_ms() + c->opts.timeout_ms,
                           c->opts.timeout_ms, &m)) != 0)
            return rc;
        s->nrecv++;
        have = 1;
    }
}

/*
 * Copy every tensor of a pull into dst[i] (dst[i] holds p->t[i].nbytes):
 * from the inline data, or by reading the session (read_all), then
 * releasing it.
 */
static int
pull_fetch(emad_client *c, pull_state *p, void *const *dst)
{
    read_state s = {.p = p};
    int rc = 0;

    if (!p->has_session) {
        for (size_t k = 0; k < p->n; k++)
            if (p->t[k].nbytes > 0)
                memcpy(dst[k], p->t[k].data, p->t[k].nbytes);
        return 0;
    }
    /* Reads of at most 4 MiB, like pushes: over TCP loopback nanomsg moves 2-4 MiB messages
     * fastest, and messages of 32 MiB and more cost fresh mmap'd buffers and page faults
     * (bench/RESULTS.md). */
    s.budget =
        (c->reply_eff < READ_BATCH_BYTES ? c->reply_eff : READ_BATCH_BYTES) - PROTO_REPLY_OVERHEAD;
    s.kmax = (c->msg_limit - READ_HEADER_WIRE) / READ_RANGE_WIRE;
    if (s.kmax > PROTO_MAX_RANGES)
        s.kmax = PROTO_MAX_RANGES;
    if (s.kmax > p->n + 1)
        s.kmax = p->n + 1; /* a batch holds each tensor at most once, plus one split */
    if ((s.ranges = malloc((size_t)s.kmax * (c->depth + 1) * sizeof(*s.ranges))) == NULL) {
        pull_release(c, p->session);
        return fail(c, EMAD_ENOMEM, "pull: out of memory for read ranges");
    }
    if ((rc = read_all(c, &s, dst)) != 0)
        forget_inflight(c);
    free(s.ranges);
    pull_release(c, p->session);
    return rc;
}

/* Check the names argument of a pull; 0 or an error code. */
static int
check_names(emad_client *c, const char *const *names, size_t n)
{
    int rc;

    for (size_t i = 0; i < n; i++)
        if ((rc = check_tensor_name(c, names[i], i)) != 0)
            return rc;
    return 0;
}

/* Free a pulled model, its names and data; NULL and half-built models accepted. */
EMAD_EXTERN void
emad_model_free(emad_model *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; m->tensors != NULL && i < m->ntensors; i++) {
        free((void *)m->tensors[i].name);
        free(m->tensors[i].data);
    }
    free(m->tensors);
    free(m->name);
    free(m);
}

/* Build the library-owned model for a started pull and fetch its data into it. */
static int
pull_into_model(emad_client *c, const char *model, pull_state *p, emad_model **out)
{
    emad_model *m;
    void **dst = NULL;
    int rc;

    if ((m = calloc(1, sizeof(*m))) == NULL || (m->name = strdup(model)) == NULL ||
        (m->tensors = calloc(p->n ? p->n : 1, sizeof(*m->tensors))) == NULL ||
        (dst = calloc(p->n ? p->n : 1, sizeof(*dst))) == NULL)
        goto nomem;
    m->step = p->step;
    m->ntensors = p->n;
    for (size_t i = 0; i < p->n; i++) {
        emad_tensor *t = &m->tensors[i];
        const codec_tensor *d = &p->t[i];

        if ((t->name = strndup(d->name, d->name_len)) == NULL ||
            (t->data = malloc(d->nbytes ? d->nbytes : 1)) == NULL)
            goto nomem;
        t->kind = d->kind;
        t->dtype = d->dtype;
        t->ndim = d->ndim;
        memcpy(t->shape, d->shape, sizeof(t->shape));
        t->nbytes = d->nbytes;
        t->step = d->step;
        dst[i] = t->data;
    }
    if ((rc = pull_fetch(c, p, dst)) != 0)
        goto fail;
    free(dst);
    *out = m;
    return 0;
nomem:
    rc = fail(c, EMAD_ENOMEM, "pull: out of memory for the model");
    if (p->has_session)
        pull_release(c, p->session);
fail:
    free(dst);
    emad_model_free(m);
    return rc;
}

/* Fill opts with the defaults: the model's first decay, data as pushed. */
EMAD_EXTERN void
emad_pull_options_init(emad_pull_options *opts)
{
    if (opts != NULL) {
        opts->decay = -1.0;
        opts->dtype = EMAD_DTYPE_INVALID;
    }
}

/* Check pull options locally. */
static int
check_pull_options(emad_client *c, const emad_pull_options *o)
{
    if (o == NULL)
        return 0;
    if (o->decay > 1.0 || o->decay != o->decay)
        return fail(c, EMAD_ERANGE, "pull: decay %g is not in [0, 1]", o->decay);
    if (o->dtype != EMAD_DTYPE_INVALID && o->dtype != EMAD_PULL_SHADOW && o->dtype != EMAD_F32 &&
        o->dtype != EMAD_BF16 && o->dtype != EMAD_F16)
        return fail(c, EMAD_EDTYPE,
                    "pull: output dtype must be F32, BF16, F16 or EMAD_PULL_SHADOW");
    return 0;
}

/* Pull into a library-owned model with the default options. */
EMAD_EXTERN int
emad_pull(emad_client *c, const char *model, const char *const *names, size_t n_names,
          emad_model **out)
{
    return emad_pull_ex(c, model, names, n_names, NULL, out);
}

/* Pull into the caller's buffers with the default options. */
EMAD_EXTERN int
emad_pull_into(emad_client *c, const char *model, emad_tensor *tensors, size_t n, uint64_t *step)
{
    return emad_pull_into_ex(c, model, tensors, n, NULL, step);
}

/* Pull into a library-owned model (see pull_into_model()). */
EMAD_EXTERN int
emad_pull_ex(emad_client *c, const char *model, const char *const *names, size_t n_names,
             const emad_pull_options *opts, emad_model **out)
{
    pull_req q = {.model = model, .names = names, .nnames = n_names, .opts = opts};
    pull_state p;
    int rc;

    if (c == NULL || out == NULL)
        return EMAD_EINVAL;
    call_begin(c);
    *out = NULL;
    if (c->cl != NULL)
        return call_end(c, cluster_pull(c, model, names, n_names, opts, out));
    q.has_step = c->has_pull_step;
    q.step = c->pull_step;
    if ((rc = check_model(c, model)) != 0)
        return call_end(c, rc);
    if (names != NULL && (rc = check_names(c, names, n_names)) != 0)
        return call_end(c, rc);
    if ((rc = check_pull_options(c, opts)) != 0)
        return call_end(c, rc);
    if (names == NULL)
        q.nnames = 0;
    q.max_reply = c->reply_ask;
    if ((rc = pull_start(c, &q, &p)) != 0)
        return call_end(c, rc);
    rc = pull_into_model(c, model, &p, out);
    pull_state_free(&p);
    return call_end(c, rc);
}

/* Pull the named tensors straight into the caller's buffers after checking every size. */
EMAD_EXTERN int
emad_pull_into_ex(emad_client *c, const char *model, emad_tensor *tensors, size_t n,
                  const emad_pull_options *opts, uint64_t *step)
{
    pull_req q = {.model = model, .named = tensors, .nnames = n, .opts = opts};
    pull_state p;
    void **dst;
    int rc;

    if (c == NULL)
        return EMAD_EINVAL;
    call_begin(c);
    if (c->cl != NULL)
        return call_end(c, cluster_pull_into(c, model, tensors, n, opts, step));
    q.has_step = c->has_pull_step;
    q.step = c->pull_step;
    if ((rc = check_model(c, model)) != 0)
        return call_end(c, rc);
    if (tensors == NULL || n == 0)
        return call_end(c, fail(c, EMAD_EINVAL, "pull_into of no tensors"));
    if ((rc = check_pull_options(c, opts)) != 0)
        return call_end(c, rc);
    for (size_t i = 0; i < n; i++) {
        if ((rc = check_tensor_name(c, tensors[i].name, i)) != 0)
            return call_end(c, rc);
        if (tensors[i].data == NULL && tensors[i].nbytes > 0)
            return call_end(c,
                            fail(c, EMAD_EINVAL, "tensor '%.200s': data is NULL", tensors[i].name));
    }
    q.max_reply = c->reply_ask;
    if ((rc = pull_start(c, &q, &p)) != 0)
        return call_end(c, rc);
    if (p.n != n) {
        rc = fail(c, EMAD_EPROTO, "pull: reply has %zu tensors, asked for %zu", p.n, n);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const codec_tensor *d = &p.t[i];
        if (d->name_len != strlen(tensors[i].name) ||
            memcmp(d->name, tensors[i].name, d->name_len) != 0) {
            rc = fail(c, EMAD_EPROTO, "pull: reply tensor %zu is not '%.200s'", i, tensors[i].name);
            goto out;
        }
        if (tensors[i].nbytes < d->nbytes) {
            rc = fail(c, EMAD_ESIZE, "tensor '%.200s': buffer of %llu bytes, the tensor has %llu",
                      tensors[i].name, (unsigned long long)tensors[i].nbytes,
                      (unsigned long long)d->nbytes);
            goto out;
        }
    }
    if ((dst = malloc(n * sizeof(*dst))) == NULL) {
        rc = fail(c, EMAD_ENOMEM, "pull: out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        dst[i] = tensors[i].data;
    rc = pull_fetch(c, &p, dst);
    p.has_session = 0; /* released by pull_fetch */
    free(dst);
    if (rc != 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        const codec_tensor *d = &p.t[i];
        tensors[i].kind = d->kind;
        tensors[i].dtype = d->dtype;
        tensors[i].ndim = d->ndim;
        memcpy(tensors[i].shape, d->shape, sizeof(tensors[i].shape));
        tensors[i].nbytes = d->nbytes;
        tensors[i].step = d->step;
    }
    if (step != NULL)
        *step = p.step;
out:
    if (p.has_session)
        pull_release(c, p.session);
    pull_state_free(&p);
    return call_end(c, rc);
}

/*
 * fuzz_reply.c - libFuzzer target for libemad's reply path: the input's
 * first byte picks an op, the rest is the reply the daemon sent to it,
 * which goes through the code a real reply goes through (reply_decode():
 * pre-scan, msgpack decode in place, version, ok and error checks) and
 * then the op's reply parser (hello_parse, push_result, pull_parse,
 * read_copy, list_parse, describe_parse, stats_parse, config_parse, or a
 * required uint). A parser must return 0 or a negative code with a
 * message, and what it hands back on success must hold: tensors whose data
 * matches their size, valid names, counters with terminated names.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <nanomsg/nn.h>

#include "client.h"
#include "common/dtype.h"
#include "common/emaconf.h"
#include "common/names.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The reply parsers, by the first input byte (modulo their number). */
enum target {
    T_HELLO,
    T_PUSH,
    T_STAGED,
    T_BEGIN,
    T_PULL,
    T_READ,
    T_LIST,
    T_DESCRIBE,
    T_STATS,
    T_CONFIG,
    T_SNAPSHOT,
    T_COUNT
};

/* The op whose reply each target reads. */
static const int target_op[T_COUNT] = {
    [T_HELLO] = PROTO_OP_HELLO, [T_PUSH] = PROTO_OP_PUSH,         [T_STAGED] = PROTO_OP_PUSH,
    [T_BEGIN] = PROTO_OP_BEGIN, [T_PULL] = PROTO_OP_PULL,         [T_READ] = PROTO_OP_READ,
    [T_LIST] = PROTO_OP_LIST,   [T_DESCRIBE] = PROTO_OP_LIST,     [T_STATS] = PROTO_OP_STATS,
    [T_CONFIG] = PROTO_OP_LIST, [T_SNAPSHOT] = PROTO_OP_SNAPSHOT,
};

/* A client as emad_connect() leaves it before hello, without sockets. */
static void
client_init(emad_client *c)
{
    memset(c, 0, sizeof(*c));
    emad_options_init(&c->opts);
    c->msg_limit = c->push_limit = PROTO_MIN_MAX_MESSAGE - SP_HEADER_SLACK;
    c->reply_ask = c->reply_eff = c->opts.max_reply_bytes - SP_HEADER_SLACK;
    for (size_t k = 0; k < PIPELINE_MAX; k++)
        c->socks[k] = -1;
    c->depth = 1;
}

/* A failure must be a negative code with a message (after call_end(), as a public call returns). */
static void
check_rc(const emad_client *c, int rc)
{
    if (rc > 0 || (rc < 0 && c->err[0] == '\0'))
        abort();
}

/* Read every byte of buf, so that the sanitizers see a bad pointer or length. */
static unsigned
touch(const void *buf, size_t len)
{
    const unsigned char *p = buf;
    unsigned sum = 0;

    for (size_t i = 0; i < len; i++)
        sum += p[i];
    return sum;
}

/* Run the pull parser on r (which it takes) and check the tensors it returns. */
static int
run_pull(emad_client *c, reply *r)
{
    pull_state p;
    int rc;

    memset(&p, 0, sizeof(p));
    p.r = *r;
    memset(r, 0, sizeof(*r));
    if ((rc = pull_parse(c, &p)) != 0)
        return rc;
    for (size_t i = 0; i < p.n; i++) {
        const codec_tensor *t = &p.t[i];

        if (names_check_tensor(t->name, t->name_len) != 0 || dtype_size(t->dtype) == 0 ||
            t->ndim > EMAD_MAX_NDIM || (t->data != NULL && t->len != t->nbytes) ||
            (!p.has_session && t->nbytes > 0 && t->data == NULL))
            abort();
        if (t->data != NULL)
            (void)touch(t->data, t->len);
    }
    pull_state_free(&p);
    return 0;
}

/* Run the read parser for two ranges of two tensors of 8 bytes. */
static int
run_read(emad_client *c, const reply *r)
{
    static const read_range ranges[2] = {{0, 0, 3}, {1, 2, 6}};
    read_req q = {.session = 1, .ranges = ranges, .n = 2};
    unsigned char a[8], b[8];
    void *const dst[2] = {a, b};

    return read_copy(c, r, &q, dst);
}

/* Run the list parser and check the models it returns. */
static int
run_list(emad_client *c, const reply *r)
{
    emad_model_info *v = NULL;
    size_t n = 0;
    int rc;

    if ((rc = list_parse(c, r, &v, &n)) != 0)
        return rc;
    for (size_t i = 0; i < n; i++)
        if (names_check_model(v[i].name, strlen(v[i].name)) != 0)
            abort();
    free(v);
    return 0;
}

/* Run the describe parser and check the tensors it returns. */
static int
run_describe(emad_client *c, const reply *r)
{
    emad_model_info info;
    emad_tensor *v = NULL;
    size_t n = 0;
    int rc;

    if ((rc = describe_parse(c, r, &info, &v, &n)) != 0)
        return rc;
    for (size_t i = 0; i < n; i++)
        if (names_check_tensor(v[i].name, strlen(v[i].name)) != 0 || dtype_size(v[i].dtype) == 0)
            abort();
    emad_tensors_free(v, n);
    return 0;
}

/* Run the stats parser and check the counters it returns. */
static int
run_stats(emad_client *c, const reply *r)
{
    emad_stat *v = NULL;
    size_t n = 0;
    int rc;

    if ((rc = stats_parse(c, r, &v, &n)) != 0)
        return rc;
    for (size_t i = 0; i < n; i++)
        if (memchr(v[i].name, '\0', sizeof(v[i].name)) == NULL)
            abort();
    free(v);
    return 0;
}

/* Run the configuration parser and free what it returns. */
static int
run_config(emad_client *c, const reply *r)
{
    emad_model_config cfg;
    int rc;

    emaconf_init(&cfg);
    rc = config_parse(c, r, &cfg);
    emaconf_free(&cfg);
    return rc;
}

/* Run the parser of target t on the decoded reply r (which it may take). */
static int
run(emad_client *c, enum target t, reply *r)
{
    emad_push_result res;
    uint64_t v;

    switch (t) {
    case T_HELLO:
        return hello_parse(c, r);
    case T_PUSH:
        return push_result(c, r, &res);
    case T_STAGED:
        return rget_u64(c, r->root, PROTO_KEY_STAGED, &v);
    case T_BEGIN:
        return rget_u64(c, r->root, PROTO_KEY_TXN, &v);
    case T_PULL:
        return run_pull(c, r);
    case T_READ:
        return run_read(c, r);
    case T_LIST:
        return run_list(c, r);
    case T_DESCRIBE:
        return run_describe(c, r);
    case T_STATS:
        return run_stats(c, r);
    case T_CONFIG:
        return run_config(c, r);
    case T_SNAPSHOT:
    default:
        return rget_u64(c, r->root, PROTO_KEY_STEP, &v);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static emad_client c;
    enum target t;
    reply r;
    int rc;

    if (size < 1)
        return 0;
    t = (enum target)(data[0] % T_COUNT);
    data++;
    size--;
    client_init(&c);
    memset(&r, 0, sizeof(r));
    /* A received message, as nn_recvmsg() hands it over (NN_MSG). */
    if ((r.msg = nn_allocmsg(size, 0)) == NULL)
        return 0;
    if (size > 0)
        memcpy(r.msg, data, size);
    msgpack_unpacked_init(&r.u);
    rc = reply_decode(&c, target_op[t], &r, size);
    if (rc == 0) {
        c.err[0] = '\0';
        rc = run(&c, t, &r);
    }
    check_rc(&c, call_end(&c, rc)); /* as every public call ends */
    if (t == T_HELLO && rc == 0 &&
        (c.server_max < PROTO_MIN_MAX_MESSAGE || c.server_max > PROTO_MAX_MAX_MESSAGE ||
         c.push_limit > c.msg_limit || c.reply_eff > c.server_max))
        abort();
    reply_free(&r);
    return 0;
}

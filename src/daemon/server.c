/*
 * server.c - nanomsg request server on the libuv loop (see server.h): the
 * socket, its polling, the timers and signals, and the dispatch of each
 * request to its op's handler.
 *
 * Ownership on the request path: nn_recvmsg hands us the request body and
 * its routing header as NN_MSG chunks. The body is decoded in place
 * (msgpack objects, including BIN tensor payloads, point into it) and
 * freed after the request has been handled and the reply built. The
 * routing header is handed back to nanomsg with the reply (reply.c).
 */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nanomsg/nn.h>
#include <nanomsg/tcp.h>

#include "common/names.h"
#include "common/cause.h"
#include "common/decode.h"
#include "base/log.h"
#include "base/xmalloc.h"
#include "daemon/server_int.h"
#include "daemon/sysmem.h"

/* Milliseconds on the loop's clock (0 without a loop). */
uint64_t
server_now(const server *srv)
{
    return srv->loop != NULL ? uv_now(srv->loop) : 0;
}

/* An op and its handler (server_int.h). */
typedef struct op_handler {
    int op;
    int (*handle)(req *r, store_err *err);
} op_handler;

/* The handler of every op, indexed by enum proto_op; an entry left out has op 0. */
static const op_handler handlers[PROTO_OP_COUNT] = {
    [PROTO_OP_HELLO] = {PROTO_OP_HELLO, ops_model_hello},
    [PROTO_OP_CREATE] = {PROTO_OP_CREATE, ops_model_create},
    [PROTO_OP_DROP] = {PROTO_OP_DROP, ops_model_drop},
    [PROTO_OP_PUSH] = {PROTO_OP_PUSH, ops_push_push},
    [PROTO_OP_BEGIN] = {PROTO_OP_BEGIN, ops_push_begin},
    [PROTO_OP_COMMIT] = {PROTO_OP_COMMIT, ops_push_commit},
    [PROTO_OP_ABORT] = {PROTO_OP_ABORT, ops_push_abort},
    [PROTO_OP_PULL] = {PROTO_OP_PULL, ops_pull_pull},
    [PROTO_OP_READ] = {PROTO_OP_READ, ops_pull_read},
    [PROTO_OP_RELEASE] = {PROTO_OP_RELEASE, ops_pull_release},
    [PROTO_OP_LIST] = {PROTO_OP_LIST, ops_model_list},
    [PROTO_OP_STATS] = {PROTO_OP_STATS, ops_model_stats},
    [PROTO_OP_CONFIGURE] = {PROTO_OP_CONFIGURE, ops_model_configure},
    [PROTO_OP_SNAPSHOT] = {PROTO_OP_SNAPSHOT, ops_model_snapshot},
    [PROTO_OP_AUTH_BEGIN] = {PROTO_OP_AUTH_BEGIN, ops_auth_begin},
    [PROTO_OP_AUTH_FINISH] = {PROTO_OP_AUTH_FINISH, ops_auth_finish},
    [PROTO_OP_INSTALL] = {PROTO_OP_INSTALL, ops_model_install},
};

/*
 * Decode, dispatch and answer one request held in buf[0..len), which came
 * as a frame authenticated as *auth (NULL: plain).
 */
static void
handle(server *srv, const char *buf, size_t len, void **ctrl, void **body, void **capture,
       size_t *capture_len, const req_auth *auth)
{
    decode_arena local, *arena = srv->decoding ? &local : &srv->arena;
    msgpack_object root;
    const char *why, *opname;
    size_t oplen;
    store_err err;
    req r;
    int rc;

    memset(&r, 0, sizeof(r));
    r.srv = srv;
    r.ctrl = *ctrl;
    r.body = body;
    r.capture = capture;
    r.now_ms = server_now(srv);
    r.auth_reason = -1;
    if (auth != NULL)
        r.auth = *auth;
    r.owner = ops_auth_owner_id(srv, auth, request_owner(*ctrl)); /* a user with auth */
    store_set_owner(srv->store, r.owner);
    budget_owner_seen(store_budget(srv->store), r.owner, r.now_ms);
    err.tensor[0] = '\0';
    srv->counters[COUNTER_REQUESTS]++;
    srv->counters[COUNTER_BYTES_IN] += len;
    decode_arena_init(&local);
    srv->decoding++;

    /* Exact: NN_RCVMAXSIZE leaves room for routing headers, so a body a few bytes over the
     * limit gets here. */
    if (len > srv->cfg.max_message_bytes) {
        request_fail(&err, EMAD_ELIMIT, "request of %zu bytes exceeds max_message_bytes %llu", len,
                     (unsigned long long)srv->cfg.max_message_bytes);
        goto error;
    }
    /* One pass: proto_prescan()'s checks, and the objects msgpack_unpack_next() would build. */
    if ((rc = decode_message(arena, buf, len, &root, &why)) != 0) {
        request_fail(&err, rc, "request is not a valid msgpack message: %s", why);
        goto error;
    }
    if (root.type != MSGPACK_OBJECT_MAP) {
        request_fail(&err, EMAD_EMALFORMED, "request is not a msgpack map");
        goto error;
    }
    r.root = &root;
    {
        uint64_t v;
        if (request_get_u64(r.root, PROTO_KEY_V, &v, NULL, &err) != 0)
            goto error;
        if (v != PROTO_VERSION) {
            request_fail(&err, EMAD_EVERSION,
                         "protocol version %llu is not supported; this daemon speaks %d",
                         (unsigned long long)v, PROTO_VERSION);
            goto error;
        }
    }
    if (request_get_str(r.root, PROTO_KEY_OP, &opname, &oplen, &err) != 0)
        goto error;
    if ((r.op = proto_op_from_name(opname, oplen)) == PROTO_OP_INVALID) {
        char pbuf[40];
        request_fail(&err, EMAD_EOP, "unknown op '%s'",
                     names_printable(pbuf, sizeof(pbuf), opname, oplen));
        goto error;
    }
    srv->op_counts[r.op]++;
    if (r.op != PROTO_OP_HELLO && (shard_check(srv->shard, r.root, r.op, &err) != 0 ||
                                   shard_check_model(srv->store, r.root, r.op, &err) != 0))
        goto error;
    if (r.op == PROTO_OP_BEGIN || r.op == PROTO_OP_PUSH) { /* a push begins, not a chunk */
        store_err scratch;
        uint64_t txn;
        int has_txn = 0;
        (void)request_get_u64(r.root, PROTO_KEY_TXN, &txn, &has_txn, &scratch);
        srv->pushes_seen += r.op == PROTO_OP_BEGIN || !has_txn;
    }
    r.t0 = uv_hrtime();
    if (srv->auth != NULL && (rc = ops_auth_check(&r, &err)) != 0)
        ; /* refused: not authenticated, or not allowed */
    else
        rc = handlers[r.op].op == r.op ? handlers[r.op].handle(&r, &err)
                                       : request_fail(&err, EMAD_EINTERNAL, "op not handled");
    ops_auth_audit(&r, rc, &err);
    if (rc != 0 || !r.deferred) /* deferred requests are counted when they are answered */
        reply_finish(&r, rc, &err);
    goto done;
error:
    reply_error(&r, &err);
done:
    srv->decoding--;
    decode_arena_fini(&local);
    *ctrl = r.ctrl; /* NULL if the reply took it */
    if (capture_len != NULL)
        *capture_len = r.reply_len;
}

void
server_handle(server *srv, const char *buf, size_t len, void **ctrl, void **body,
              const req_auth *auth)
{
    handle(srv, buf, len, ctrl, body, NULL, NULL, auth);
}

/*
 * How long the daemon keeps its spare shadows (and heap) after the last
 * request: cfg.idle_release_ms, or twice the push cadence when that is
 * longer, at most cfg.idle_release_max_ms. A trainer that pushes every
 * 20 s then writes every push into memory already mapped, and memory
 * still goes back within idle_release_max_ms of the last request.
 */
static uint64_t
idle_hold_ms(const server *srv)
{
    uint64_t lo = srv->cfg.idle_release_ms, hi = srv->cfg.idle_release_max_ms;
    uint64_t hold = 2 * srv->push_gap_ms;

    if (hi < lo)
        hi = lo;
    return hold < lo ? lo : hold > hi ? hi : hold;
}

/*
 * After a request (loop thread): note the time, learn the push cadence
 * from the pushes begun (a push in one message or a transaction's begin,
 * counted by handle(); the larger of the latest gap and 7/8
 * of the previous estimate, so that the several writers of a step or a
 * pause for evaluation do not shrink it at once), and copy the store's
 * counts of shadow bytes written into spares and into fresh memory.
 */
static void
idle_note_request(server *srv)
{
    uint64_t now = uv_now(srv->loop);
    store_spares sp;

    if (srv->pushes_seen != srv->pushes_noted) {
        if (srv->pushes_noted != 0) {
            uint64_t gap = now - srv->last_push_ms, kept = srv->push_gap_ms - srv->push_gap_ms / 8;
            srv->push_gap_ms = gap > kept ? gap : kept;
        }
        srv->pushes_noted = srv->pushes_seen;
        srv->last_push_ms = now;
    }
    srv->last_request_ms = now;
    srv->trimmed = 0;
    store_spares_get(srv->store, &sp, 0);
    srv->counters[COUNTER_SHADOW_REUSED_BYTES] = sp.reused_bytes;
    srv->counters[COUNTER_SHADOW_FRESH_BYTES] = sp.fresh_bytes;
}

/* uv_poll callback: drain every pending request (level-triggered NN_RCVFD). */
static void
on_readable(uv_poll_t *h, int status, int events)
{
    server *srv = h->data;

    (void)events;
    if (status < 0) {
        log_error("event=poll_error error=\"%s\"", uv_strerror(status));
        return;
    }
    for (int i = 0; i < 256 && !srv->closing; i++) {
        void *body = NULL, *ctrl = NULL;
        struct nn_iovec iov = {&body, NN_MSG};
        struct nn_msghdr hdr;
        int n;

        memset(&hdr, 0, sizeof(hdr));
        hdr.msg_iov = &iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = &ctrl;
        hdr.msg_controllen = NN_MSG;
        n = nn_recvmsg(srv->sock, &hdr, NN_DONTWAIT);
        if (n < 0) {
            int e = nn_errno();
            if (e == EINTR)
                continue;
            if (e != EAGAIN)
                log_error("event=recv_error error=\"%s\"", nn_strerror(e));
            break;
        }
        uv_update_time(srv->loop); /* requests stamp times (last push, idleness) with it */
        if (srv->auth != NULL || auth_is_frame(body, (size_t)n))
            authgate_receive(srv, &body, (size_t)n, &ctrl);
        else
            handle(srv, body, (size_t)n, &ctrl, &body, NULL, NULL, NULL);
        if (body != NULL)
            nn_freemsg(body);
        idle_note_request(srv);
        if (ctrl != NULL)
            nn_freemsg(ctrl);
    }
}

/* Periodic expiry of idle transactions and pull sessions. */
static void
on_timer(uv_timer_t *h)
{
    server *srv = h->data;
    uint64_t txns = 0, views = 0, steps = 0;

    store_expire(srv->store, uv_now(srv->loop), srv->cfg.txn_timeout_ms, &txns, &views, &steps);
    if (steps > 0)
        log_warn("event=step_expired count=%llu timeout_ms=%llu (a writer never pushed; step "
                 "discarded)",
                 (unsigned long long)steps, (unsigned long long)srv->cfg.txn_timeout_ms);
    srv->counters[COUNTER_STEPS_EXPIRED] += steps;
    if (txns > 0)
        log_warn("event=txn_expired count=%llu timeout_ms=%llu (client gone; nothing applied)",
                 (unsigned long long)txns, (unsigned long long)srv->cfg.txn_timeout_ms);
    if (views > 0)
        log_info("event=session_expired count=%llu", (unsigned long long)views);
    srv->counters[COUNTER_TXN_EXPIRED] += txns;
    srv->counters[COUNTER_SESSIONS_EXPIRED] += views;
    authgate_tick(srv);
    budget_reply_expire(store_budget(srv->store), uv_now(srv->loop), srv->cfg.txn_timeout_ms);
    /*
     * Idle for idle_hold_ms(): free the spare shadows (the replaced shadows
     * a transaction writes into next time) and give the heap's free memory
     * back. Until then both stay mapped: fresh memory costs page faults
     * (~0.5 GB/s on this class of VM), and a trimmed heap faults in the
     * next push's request buffers again: pushes of a 256 MiB model 1.5 s
     * apart took 1,200 page faults each when the heap was trimmed after one
     * idle second, 0 without.
     */
    if (!srv->trimmed && uv_now(srv->loop) - srv->last_request_ms >= idle_hold_ms(srv)) {
        uint64_t hold = idle_hold_ms(srv);
        store_spares sp;

        store_spares_get(srv->store, &sp, 1);
        store_release_spares(srv->store);
        if (!srv->decoding)
            decode_arena_fini(&srv->arena);
        (void)malloc_trim(0);
        iocpu_hold(&srv->io, 0);
        srv->trimmed = 1;
        log_debug("event=idle_release idle_ms=%llu spare_bytes=%llu", (unsigned long long)hold,
                  (unsigned long long)sp.held_bytes);
    }
}

/* The shutdown snapshots are over after SIGTERM: say whether every model is durable, close. */
static void
on_persisted(void *arg, size_t unwritten)
{
    server *srv = arg;
    char names[512];

    if (unwritten == 0) {
        log_info("event=shutdown snapshots=written");
    } else {
        (void)persist_unwritten(srv->persist, names, sizeof(names));
        log_error("event=shutdown snapshots=failed unwritten=%zu models=%s (their last changes "
                  "are lost; see snapshot_failed above)",
                  unwritten, names);
    }
    server_stop(srv);
}

static void
on_signal(uv_signal_t *h, int signum)
{
    server *srv = h->data;

    const char *name = signum == SIGINT ? "SIGINT" : "SIGTERM";

    if (srv->persist == NULL || srv->stopping) {
        log_info("event=shutdown signal=%s", name);
        server_stop(srv);
        return;
    }
    /* Stop taking requests, make every changed model durable, then close. */
    log_info("event=shutdown signal=%s action=\"writing snapshots first (send again to skip)\"",
             name);
    srv->stopping = 1;
    uv_poll_stop(&srv->poll);
    persist_shutdown(srv->persist, on_persisted, srv);
}

/* Interval of the expiry timer for a transaction timeout. */
static uint64_t
expiry_interval(uint64_t txn_timeout_ms)
{
    uint64_t interval = txn_timeout_ms / 4;

    return interval < 50 ? 50 : interval > 1000 ? 1000 : interval;
}

/* Is a listen URL reachable from this host only (ipc://, inproc://, loopback TCP)? */
static int
url_is_local(const char *url)
{
    const char *host;

    if (strncmp(url, "ipc://", 6) == 0 || strncmp(url, "inproc://", 9) == 0)
        return 1;
    if (strncmp(url, "tcp://", 6) != 0)
        return 0;
    host = url + 6;
    if (strchr(host, ';') != NULL) /* tcp://INTERFACE;ADDRESS:PORT binds an interface */
        return 0;
    return strncmp(host, "127.", 4) == 0 || strncmp(host, "[::1]:", 6) == 0 ||
           strncmp(host, "localhost:", 10) == 0;
}

/*
 * Load the auth file (authentication on), or check that every listen URL
 * is local unless cfg->insecure; say which at start.
 */
static int
auth_setup(server *srv, const server_config *cfg, char **cause)
{
    authfile *users = NULL;
    int rc;

    if (cfg->auth_file == NULL) {
        for (int i = 0; i < cfg->nlisten && !cfg->insecure; i++)
            if (!url_is_local(cfg->listen[i]))
                return cause_set(cause, -EPERM,
                                 "refusing to listen on %s without authentication: give "
                                 "--auth-file (docs/SECURITY.md), or --insecure to accept that "
                                 "anyone who reaches it can change or drop any model",
                                 cfg->listen[i]);
        log_warn("event=auth enabled=no insecure=%s (no --auth-file: every client may do "
                 "everything)",
                 cfg->insecure ? "yes" : "no");
        return 0;
    }
    if (auth_init() != 0)
        return cause_set(cause, -EINVAL, "libsodium cannot be initialized");
    if ((rc = authfile_load(&users, cfg->auth_file, cause)) != 0)
        return rc;
    log_info("event=auth enabled=yes auth_file=%s users=%zu session_lifetime_s=%llu",
             cfg->auth_file, users->nusers,
             (unsigned long long)(cfg->auth_session_lifetime_ms / 1000));
    srv->auth = authsess_create(users, cfg->auth_session_lifetime_ms);
    return 0;
}

int
server_reload_auth(server *srv, uint64_t lifetime_ms, char **cause)
{
    authfile *users = NULL;
    size_t dropped;
    int rc;

    if (srv->auth == NULL)
        return 0;
    authsess_set_lifetime(srv->auth, lifetime_ms);
    if ((rc = authfile_load(&users, srv->cfg.auth_file, cause)) != 0) {
        srv->counters[COUNTER_AUTH_RELOAD_FAILURES]++;
        return rc;
    }
    dropped = authsess_reload(srv->auth, users);
    srv->counters[COUNTER_AUTH_SESSIONS_REVOKED] += dropped;
    log_info("event=auth_reloaded auth_file=%s users=%zu sessions_dropped=%zu sessions_kept=%zu",
             srv->cfg.auth_file, users->nusers, dropped, authsess_count(srv->auth));
    return 0;
}

const authfile *
server_auth_users(const server *srv)
{
    return srv->auth != NULL ? authsess_users(srv->auth) : NULL;
}

void
server_config_init(server_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->max_message_bytes = PROTO_DEFAULT_MAX_MESSAGE;
    cfg->txn_timeout_ms = 60000;
    cfg->snapshot_interval_ms = 60000;
    cfg->snapshot_keep = 2;
    cfg->io_cpu = SERVER_IO_CPU_AUTO;
    cfg->idle_release_ms = 5000;
    cfg->idle_release_max_ms = 30000;
    cfg->auth_session_lifetime_ms = 3600000;
    cfg->client_share = BUDGET_DEFAULT_SHARE_PERCENT;
}

/*
 * Give the store its memory budget: --max-memory, or by default a
 * fraction of the machine (sysmem.h). Logged at startup, with a warning
 * when what the state directory loaded exceeds it already.
 */
static void
server_budget_init(server *srv, int announce)
{
    const char *source = "--max-memory";
    uint64_t limit = srv->cfg.max_memory;
    budget *b = store_budget(srv->store);

    if (limit == 0)
        limit = sysmem_default_budget(&source);
    srv->cfg.max_memory = limit;
    store_set_budget(srv->store, limit, srv->cfg.client_share);
    if (!announce)
        return;
    log_info("event=memory_budget bytes=%llu source=\"%s\" client_share_percent=%u",
             (unsigned long long)limit, source, srv->cfg.client_share);
    if (budget_total(b) > limit)
        log_warn("event=memory_budget_exceeded bytes=%llu budget=%llu (the loaded models hold "
                 "more than --max-memory: requests that need memory fail with EMAD_ELIMIT)",
                 (unsigned long long)budget_total(b), (unsigned long long)limit);
}

int
server_create(server **out, uv_loop_t *loop, const server_config *cfg, char **cause)
{
    server *srv = xcalloc(1, sizeof(*srv));
    int fd, rc, maxsz, one = 1, sockbuf = PROTO_SOCKET_BUFFER_BYTES;
    size_t fdsz = sizeof(fd);
    uint64_t interval;

    *out = NULL;
    srv->loop = loop;
    srv->cfg = *cfg;
    srv->sock = -1;
    srv->store = store_create();
    srv->start_ms = uv_now(loop);
    {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN); /* a file read: not once per request */
        srv->parts = ncpu < 1 ? 1 : ncpu > ASYNC_MAX_PARTS ? ASYNC_MAX_PARTS : (int)ncpu;
    }

    if ((rc = auth_setup(srv, cfg, cause)) != 0)
        goto fail;
    if (cfg->shard_map != NULL) {
        if ((rc = shard_create(&srv->shard, cfg->shard_map, cfg->self, cause)) != 0)
            goto fail;
        store_keep_previous(srv->store, 1);
        log_info("event=cluster_mode epoch=%llu shard=%u shards=%u replica=%u replicas=%u",
                 (unsigned long long)srv->shard->map->epoch, srv->shard->shard,
                 srv->shard->map->shards, srv->shard->replica, srv->shard->map->replicas);
    }
    if (cfg->state_dir != NULL) {
        persist_config pc = {.state_dir = cfg->state_dir,
                             .interval_ms = cfg->snapshot_interval_ms,
                             .keep = cfg->snapshot_keep,
                             .require = cfg->require_snapshot};
        persist_stats loaded;
        if ((rc = persist_load(&pc, srv->store, &loaded, cause)) != 0)
            goto fail;
        srv->persist = persist_create(loop, srv->store, &pc, &loaded);
    }
    server_budget_init(srv, 1); /* after loading: the models loaded are counted, not refused */
    /* A replica with peers may have missed pushes while it was down: what it loaded waits
     * for a client to install a peer's state or accept its own. */
    if (srv->shard != NULL && srv->shard->map->replicas > 1)
        store_mark_resyncing(srv->store);
    if ((srv->sock = iocpu_socket(&srv->io, cfg->io_cpu, cause)) < 0) {
        rc = srv->sock;
        goto fail;
    }
    /* nanomsg counts the REQ routing header (4 bytes per hop) against the cap: leave room so
     * a request of exactly max_message_bytes is accepted, even through devices. handle()
     * refuses a body over the limit with EMAD_ELIMIT; larger frames are dropped unanswered. */
    maxsz = (int)cfg->max_message_bytes + 64;
    if (nn_setsockopt(srv->sock, NN_SOL_SOCKET, NN_RCVMAXSIZE, &maxsz, sizeof(maxsz)) < 0 ||
        nn_setsockopt(srv->sock, NN_TCP, NN_TCP_NODELAY, &one, sizeof(one)) < 0 ||
        nn_setsockopt(srv->sock, NN_SOL_SOCKET, NN_SNDBUF, &sockbuf, sizeof(sockbuf)) < 0 ||
        nn_setsockopt(srv->sock, NN_SOL_SOCKET, NN_RCVBUF, &sockbuf, sizeof(sockbuf)) < 0) {
        rc = cause_set(cause, -nn_errno(), "nn_setsockopt: %s", nn_strerror(nn_errno()));
        goto fail;
    }
    for (int i = 0; i < cfg->nlisten; i++) {
        if (nn_bind(srv->sock, cfg->listen[i]) < 0) {
            rc = cause_set(cause, -nn_errno(), "cannot listen on %s: %s", cfg->listen[i],
                           nn_strerror(nn_errno()));
            goto fail;
        }
        log_info("event=listening url=%s", cfg->listen[i]);
    }
    if (nn_getsockopt(srv->sock, NN_SOL_SOCKET, NN_RCVFD, &fd, &fdsz) < 0) {
        rc = cause_set(cause, -nn_errno(), "NN_RCVFD: %s", nn_strerror(nn_errno()));
        goto fail;
    }
    if ((rc = uv_poll_init(loop, &srv->poll, fd)) < 0) {
        rc = cause_set(cause, rc, "uv_poll_init: %s", uv_strerror(rc));
        goto fail;
    }
    srv->poll.data = srv;
    uv_poll_start(&srv->poll, UV_READABLE, on_readable);
    uv_timer_init(loop, &srv->timer);
    srv->timer.data = srv;
    interval = expiry_interval(cfg->txn_timeout_ms);
    uv_timer_start(&srv->timer, on_timer, interval, interval);
    uv_signal_init(loop, &srv->sigint);
    uv_signal_init(loop, &srv->sigterm);
    srv->sigint.data = srv->sigterm.data = srv;
    uv_signal_start(&srv->sigint, on_signal, SIGINT);
    uv_signal_start(&srv->sigterm, on_signal, SIGTERM);
    *out = srv;
    return 0;

fail:
    if (srv->sock >= 0)
        nn_close(srv->sock);
    if (srv->persist != NULL) {
        persist_shutdown(srv->persist, NULL, NULL);
        uv_run(loop, UV_RUN_NOWAIT); /* let the timer close */
        persist_destroy(srv->persist);
    }
    authsess_destroy(srv->auth);
    store_destroy(srv->store);
    shard_destroy(srv->shard);
    free(srv);
    return rc;
}

server *
server_create_offline(const server_config *cfg)
{
    server *srv = xcalloc(1, sizeof(*srv));

    srv->cfg = *cfg;
    srv->sock = -1;
    srv->store = store_create();
    server_budget_init(srv, 0);
    return srv;
}

void
server_process(server *srv, const void *buf, size_t len, void **reply, size_t *reply_len)
{
    void *ctrl = NULL;

    *reply = NULL;
    *reply_len = 0;
    handle(srv, buf, len, &ctrl, NULL, reply, reply_len, NULL);
}

void
server_stop(server *srv)
{
    if (srv->closing)
        return;
    srv->closing = 1;
    if (srv->persist != NULL) {
        /* Also after SIGTERM's writes began (a second signal): the running writes end, no
         * queued one starts. */
        srv->stopping = 1;
        persist_shutdown(srv->persist, NULL, NULL);
    }
    uv_poll_stop(&srv->poll);
    uv_close((uv_handle_t *)&srv->poll, NULL);
    uv_close((uv_handle_t *)&srv->timer, NULL);
    uv_close((uv_handle_t *)&srv->sigint, NULL);
    uv_close((uv_handle_t *)&srv->sigterm, NULL);
}

size_t
server_unwritten(server *srv)
{
    return srv->persist != NULL ? persist_unwritten(srv->persist, NULL, 0) : 0;
}

void
server_destroy(server *srv)
{
    if (srv == NULL)
        return;
    ops_push_free_parked(srv);
    if (srv->sock >= 0)
        nn_close(srv->sock);
    persist_destroy(srv->persist);
    authsess_destroy(srv->auth);
    store_destroy(srv->store);
    decode_arena_fini(&srv->arena);
    layouts_fini(&srv->layouts);
    shard_destroy(srv->shard);
    free(srv);
}

void
server_reconfigure(server *srv, uint64_t txn_timeout_ms, uint64_t snapshot_interval_ms)
{
    if (srv->closing || srv->stopping)
        return;
    if (txn_timeout_ms != srv->cfg.txn_timeout_ms) {
        uint64_t interval = expiry_interval(txn_timeout_ms);
        srv->cfg.txn_timeout_ms = txn_timeout_ms;
        uv_timer_start(&srv->timer, on_timer, interval, interval);
    }
    srv->cfg.snapshot_interval_ms = snapshot_interval_ms;
    if (srv->persist != NULL)
        persist_set_interval(srv->persist, snapshot_interval_ms);
}

metrics_figures *
server_figures(server *srv)
{
    size_t n = 0;
    uint64_t now = server_now(srv);
    metrics_figures *f;
    model *m;

    while (store_model_at(srv->store, n) != NULL)
        n++;
    f = metrics_figures_create(n);
    f->uptime_seconds = (double)(now - srv->start_ms) / 1000.0;
    for (int op = 0; op < PROTO_OP_COUNT; op++) {
        f->requests_ok[op] = srv->op_ok[op];
        f->requests_error[op] = srv->op_errors[op];
    }
    for (int i = 0; i <= EMAD_ERRNO_LAST - EMAD_ERRNO_FIRST && i < METRICS_ERR_CODES; i++) {
        f->errors[EMAD_ERRNO_FIRST - METRICS_ERR_FIRST + i] = srv->err_counts[i];
        f->push_rejected[EMAD_ERRNO_FIRST - METRICS_ERR_FIRST + i] = srv->push_rejects[i];
    }
    f->pushes_stale = srv->pushes_stale;
    memcpy(f->counters, srv->counters, sizeof(f->counters));
    store_gauges_get(srv->store, &f->store);
    f->max_message_bytes = srv->cfg.max_message_bytes;
    if (srv->sock >= 0) {
        f->connections = nn_get_statistic(srv->sock, NN_STAT_CURRENT_CONNECTIONS);
        f->connections_accepted = nn_get_statistic(srv->sock, NN_STAT_ACCEPTED_CONNECTIONS);
        f->connections_dropped = nn_get_statistic(srv->sock, NN_STAT_DROPPED_CONNECTIONS);
        f->connections_broken = nn_get_statistic(srv->sock, NN_STAT_BROKEN_CONNECTIONS);
        f->endpoint_errors = nn_get_statistic(srv->sock, NN_STAT_CURRENT_EP_ERRORS);
    }
    if (srv->persist != NULL) {
        persist_stats_get(srv->persist, &f->snap);
        f->has_state_dir = 1;
    }
    f->push_apply = srv->push_hist;
    f->pull = srv->pull_hist;
    for (size_t i = 0; i < n && (m = store_model_at(srv->store, i)) != NULL; i++) {
        metrics_model *mm = &f->model[i];

        snprintf(mm->name, sizeof(mm->name), "%s", m->name);
        mm->step = m->step;
        mm->tensors = m->ntensors;
        mm->shadow_bytes = m->shadow_bytes;
        mm->steps_pending = m->npending;
        mm->has_snapshot = m->snap_version != 0;
        mm->snapshot_step = mm->has_snapshot ? m->snap_step : 0;
        mm->pushed = m->last_push_ms != 0;
        mm->seconds_since_push =
            mm->pushed && now > m->last_push_ms ? (double)(now - m->last_push_ms) / 1000.0 : 0.0;
        mm->decay = m->cfg.decays[0];
    }
    return f;
}

/*
 * server.h - the daemon's request server: nanomsg sockets on the libuv
 * loop, request decoding, dispatch to the store, replies and counters.
 *
 * One raw REP socket (AF_SP_RAW) bound to every --listen URL, polled
 * through its NN_RCVFD with uv_poll. Each request is decoded in place in
 * the received nanomsg buffer (tensor data is never copied on the way in),
 * handled to completion on the loop thread and answered with one reply
 * packed straight into an nn_allocmsg buffer. server_int.h lists the
 * files the server is made of.
 */
#ifndef EMAD_SERVER_H
#define EMAD_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "daemon/metrics.h"

#define SERVER_MAX_LISTEN 16

/* server_config.io_cpu: choose the CPU (the highest-numbered allowed), or hold on none. */
#define SERVER_IO_CPU_AUTO (-1)
#define SERVER_IO_CPU_OFF (-2)

typedef struct server_config {
    const char *listen[SERVER_MAX_LISTEN];
    int nlisten;
    const char *state_dir;         /* may be NULL */
    const char *shard_map;         /* cluster mode: shard map file or text; NULL: off */
    const char *self;              /* cluster mode: this daemon's URL in the map */
    uint64_t max_message_bytes;    /* PROTO_DEFAULT_MAX_MESSAGE */
    uint64_t txn_timeout_ms;       /* 60000 */
    uint64_t snapshot_interval_ms; /* 60000; 0: only on request and at shutdown */
    size_t snapshot_keep;          /* 2 */
    int require_snapshot;          /* a missing or unloadable state is a startup error */
    int io_cpu; /* CPU that holds nanomsg's I/O thread during large pushes: a number, _AUTO, _OFF */
    uint64_t idle_release_ms; /* 5000: spares freed and heap trimmed after this long idle */
    uint64_t idle_release_max_ms; /* 30000: longest idle time the push cadence extends it to */
    const char *auth_file;        /* NULL: no authentication */
    int insecure;                 /* without auth_file, listen beyond loopback anyway */
    uint64_t auth_session_lifetime_ms; /* 3600000 */
    uint64_t max_memory;               /* memory budget in bytes; 0: sysmem_default_budget() */
    unsigned client_share;             /* percent of the budget and slots one connection may hold */
} server_config;

typedef struct server server;

/* Defaults for every field. */
void server_config_init(server_config *cfg);

/*
 * Create the server on loop: load the snapshots of --state-dir, open the
 * socket, bind every URL, start polling, the expiry and snapshot timers
 * and the SIGINT/SIGTERM handlers (which write snapshots before exit). On failure
 * returns a negative code and sets *cause (malloc'd) to a message.
 */
int server_create(server **out, uv_loop_t *loop, const server_config *cfg, char **cause);

/* A server without sockets or loop, for server_process() (tests, fuzzing). */
server *server_create_offline(const server_config *cfg);

/*
 * Handle one request held in buf[0..len) as if it had arrived on the
 * socket; *reply gets the malloc'd reply (caller frees), *reply_len its size.
 */
void server_process(server *srv, const void *buf, size_t len, void **reply, size_t *reply_len);

/* Begin a clean shutdown: stop polling and close every handle (loop thread). */
void server_stop(server *srv);

/*
 * Apply the settings that can change while running (loop thread): the idle
 * timeout of transactions and sessions, and the snapshot interval (0: only
 * on request and at shutdown; no effect without a state directory).
 */
void server_reconfigure(server *srv, uint64_t txn_timeout_ms, uint64_t snapshot_interval_ms);

/*
 * SIGHUP (loop thread): re-read the auth file; sessions of removed users
 * and of changed keys are dropped, the others kept, and new sessions live
 * lifetime_ms. A file that does not parse keeps the old users: returns a
 * negative code with *cause set (malloc'd) and counts the failure. 0
 * without authentication.
 */
int server_reload_auth(server *srv, uint64_t lifetime_ms, char **cause);

struct authfile;

/* The users of the auth file in force (loop thread), or NULL without authentication. */
const struct authfile *server_auth_users(const server *srv);

/*
 * A copy of every counter and gauge, per model too, for /metrics and
 * /stats (loop thread; the caller owns the result: metrics_figures_destroy).
 */
metrics_figures *server_figures(server *srv);

/*
 * Models whose state is not on disk (changed since their last snapshot)
 * with a state directory; 0 without one. After the loop finished, a
 * non-zero count makes the daemon exit with status 3 (docs/OPERATIONS.md).
 */
size_t server_unwritten(server *srv);

/* Free the server after the loop has finished; closes the socket. NULL accepted. */
void server_destroy(server *srv);

#endif

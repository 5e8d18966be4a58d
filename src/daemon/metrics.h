/*
 * metrics.h - the daemon's figures for operators: a plain copy of every
 * counter and gauge (metrics_figures), latency histograms, and the board
 * that hands the latest copy from the loop thread to the HTTP threads.
 *
 * Threads: the loop thread owns the store and the server's counters and
 * is the only one that reads them. It fills a fresh metrics_figures on
 * request (metrics_board_attach: a uv_async woken by an HTTP thread) and
 * publishes it on the board; HTTP threads take a reference to the latest
 * published copy and format it (Prometheus text or JSON) without touching
 * anything the loop owns. Publishing swaps a pointer under a mutex, so the
 * loop thread never waits for a slow HTTP client, and it fills at most
 * one copy per METRICS_MIN_REFRESH_MS however many clients ask.
 */
#ifndef EMAD_METRICS_H
#define EMAD_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "emad.h"
#include "common/counters.h"
#include "common/proto.h"
#include "daemon/persist.h"
#include "store/store.h"

/* Upper bounds (seconds) of the latency histogram buckets; +Inf is implied. */
#define METRICS_HIST_BUCKETS 16

/* Error codes counted per code: -EMAD_ERRNO_FIRST .. -(EMAD_ERRNO_FIRST - 1 + METRICS_ERR_CODES). */
#define METRICS_ERR_FIRST EMAD_ERRNO_FIRST
#define METRICS_ERR_CODES 64

/* The loop fills at most one copy of the figures this often (milliseconds). */
#define METRICS_MIN_REFRESH_MS 5

/* How long an HTTP request waits for the loop to publish fresh figures (milliseconds). */
#define METRICS_REFRESH_WAIT_MS 250

/* A latency histogram: counts per bucket (not cumulative), the last one +Inf. */
typedef struct metrics_hist {
    uint64_t counts[METRICS_HIST_BUCKETS + 1];
    double sum; /* seconds */
} metrics_hist;

/* The daemon's state as /healthz reports it. */
enum metrics_state { METRICS_LOADING = 0, METRICS_SERVING, METRICS_STOPPING };

/* One model's figures. */
typedef struct metrics_model {
    char name[EMAD_MAX_MODEL_NAME_BYTES + 1];
    uint64_t step; /* committed step */
    uint64_t tensors;
    uint64_t shadow_bytes;
    uint64_t steps_pending; /* multi-writer steps waiting for writers */
    uint64_t snapshot_step; /* step of the last durable snapshot (0: none) */
    int has_snapshot;
    int pushed;                /* a push was applied since the daemon started */
    double seconds_since_push; /* valid when pushed */
    double decay;              /* first decay */
} metrics_model;

/*
 * Every figure the daemon reports, copied on the loop thread at one moment.
 * Counters only grow while the process lives.
 */
typedef struct metrics_figures {
    double uptime_seconds;
    uint64_t fill_ns; /* uv_hrtime() when filled */
    /* Requests: per op (index: enum proto_op; 0 = not decodable), ok and error replies. */
    uint64_t requests_ok[PROTO_OP_COUNT];
    uint64_t requests_error[PROTO_OP_COUNT];
    /* Error replies per code (index: -code - METRICS_ERR_FIRST), for every op ... */
    uint64_t errors[METRICS_ERR_CODES];
    /* ... and for push and commit only: the rejected pushes by reason. */
    uint64_t push_rejected[METRICS_ERR_CODES];
    uint64_t pushes_stale; /* accepted pushes in which every tensor was stale */
    /* The server's counters (index: enum counter); requests, errors and rejected pushes are
     * reported from the per-op and per-code counts above instead. */
    uint64_t counters[COUNTER_COUNT];
    store_gauges store; /* gauges of the store */
    uint64_t max_message_bytes;
    /* Transport (nanomsg socket statistics). */
    uint64_t connections, connections_accepted, connections_dropped, connections_broken,
        endpoint_errors;
    /* Snapshots (all zero without a state directory). */
    int has_state_dir;
    persist_stats snap;
    /* Latency of push and commit handling (decode, validate, apply, reply) and of pulls and reads.
     */
    metrics_hist push_apply, pull;
    /* Models in creation order. */
    metrics_model *model; /* owned */
    size_t nmodels;
    unsigned refs; /* the board's and HTTP threads' references (board mutex) */
} metrics_figures;

/* Count one observation of `seconds` (any thread that owns h). */
void metrics_hist_observe(metrics_hist *h, double seconds);

/* Allocate zeroed figures with room for nmodels models (aborts on out of memory). */
metrics_figures *metrics_figures_create(size_t nmodels);

/* Free figures; NULL accepted. */
void metrics_figures_destroy(metrics_figures *f);

/* Process-wide figures read at render time from /proc (any thread). */
typedef struct metrics_process {
    double start_time_unix; /* 0: unknown */
    double cpu_seconds;
    uint64_t resident_bytes;
    uint64_t open_fds;
    uint64_t max_fds;
} metrics_process;

/* Read the process figures; fields that cannot be read stay 0. */
void metrics_process_get(metrics_process *p);

/*
 * Render f (NULL: nothing published yet) as Prometheus text exposition
 * format 0.0.4 into a malloc'd NUL-terminated string (caller frees) of
 * *len bytes. state is the daemon's state now; age_seconds how old f is.
 */
char *metrics_render_prometheus(const metrics_figures *f, int state, const metrics_process *p,
                                double age_seconds, size_t *len);

/* Render the same figures as one JSON object (malloc'd, caller frees). */
char *metrics_render_json(const metrics_figures *f, int state, const metrics_process *p,
                          double age_seconds, size_t *len);

/* Name of a state: "loading", "serving" or "stopping". */
const char *metrics_state_name(int state);

/*
 * The board: the latest published figures, shared between the loop thread
 * and HTTP threads. Create and destroy on the main thread while no HTTP
 * thread runs.
 */
typedef struct metrics_board metrics_board;

/* Returns fresh figures (metrics_figures_create) on the loop thread; the board takes them. */
typedef struct metrics_source {
    metrics_figures *(*fill)(void *arg);
    void *arg;
} metrics_source;

int metrics_board_create(metrics_board **out);

/* Free the board (after metrics_board_detach and after HTTP threads are gone). NULL accepted. */
void metrics_board_destroy(metrics_board *b);

/* Set the daemon's state (any thread). */
void metrics_board_set_state(metrics_board *b, int state);
int metrics_board_get_state(metrics_board *b);

/*
 * Start serving refresh requests on loop from src (loop thread). The
 * board's handles are unreferenced: they do not keep uv_run() going.
 */
int metrics_board_attach(metrics_board *b, uv_loop_t *loop, const metrics_source *src);

/* Stop refreshing and close the handles (loop thread); HTTP threads keep the last copy. */
void metrics_board_detach(metrics_board *b);

/* Fill and publish a copy now (loop thread, attached). */
void metrics_board_publish(metrics_board *b);

/*
 * A reference to figures filled after this call began, waiting up to
 * METRICS_REFRESH_WAIT_MS for the loop thread; when it does not answer in
 * time (or is not attached), the latest published copy, or NULL if there
 * is none. *age_seconds: how old the copy is. Release with
 * metrics_board_release(). HTTP threads.
 */
const metrics_figures *metrics_board_acquire(metrics_board *b, double *age_seconds);
void metrics_board_release(metrics_board *b, const metrics_figures *f);

#endif

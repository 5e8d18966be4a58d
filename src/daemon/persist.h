/*
 * persist.h - when the daemon writes snapshots and how it loads them.
 *
 * Snapshots (snapshot.h) are taken of one model at a time. Taking one
 * freezes a view of every shadow of the model on the loop thread (blob
 * references, no copy: O(tensors)); the files are then written on the
 * libuv threadpool while pushes and pulls go on. A push that updates a
 * tensor the snapshot still holds writes a fresh blob (copy-on-write), so
 * the snapshot is exactly one committed step; the extra memory is the
 * tensors updated while the write runs, and only until it finishes.
 *
 * A model is written when it changed since its last snapshot: every
 * interval, on request (the `snapshot` op replies once the files are
 * durable), and at shutdown. A failed write leaves the previous snapshots
 * alone, is logged and counted, and is retried at the next interval.
 *
 * Requests go ahead of periodic work, a model is written at most once for
 * any number of requests that came before its job started, and up to
 * PERSIST_JOBS models (PERSIST_JOBS_SHUTDOWN at shutdown) are written at
 * once, at most one of them larger than PERSIST_LARGE_BYTES: a slow model
 * delays no other.
 */
#ifndef EMAD_PERSIST_H
#define EMAD_PERSIST_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "store/store.h"

/* Snapshot jobs at once while serving (the threadpool's other threads average transactions). */
#define PERSIST_JOBS 2
/* ... and once SIGTERM came (libuv's default threadpool has 4 threads). */
#define PERSIST_JOBS_SHUTDOWN 4
/* Urgent (requested) jobs started in a row before one waiting periodic job goes first. */
#define PERSIST_URGENT_RUN 8
/* A model whose shadows take more is large: one large model is written at a time. */
#define PERSIST_LARGE_BYTES (64u << 20)

typedef struct persist_config {
    const char *state_dir;
    uint64_t interval_ms; /* 0: no periodic snapshots */
    size_t keep;          /* snapshots kept per model (>= 1) */
    int require;          /* a missing or unloadable state is a startup error */
    /* Called on the threadpool before a model's files are written (tests); NULL in the daemon. */
    void (*write_hook)(void *arg, const char *model);
    void *write_hook_arg;
} persist_config;

/* Counters for stats (running: jobs writing now). */
typedef struct persist_stats {
    uint64_t written, failed, bytes, last_success_unix_ms, last_duration_ms, loaded, broken,
        running;
} persist_stats;

typedef struct persist persist;

/* Called on the loop thread when a requested snapshot is durable (rc 0) or failed. */
typedef void (*persist_cb)(void *arg, int rc, const char *message, uint64_t step);

/* Called on the loop thread when shutdown writes are over; unwritten: models not durable. */
typedef void (*persist_done_cb)(void *arg, size_t unwritten);

/*
 * Load every model from its newest complete, valid snapshot under
 * state_dir into s. A bad file is renamed *.broken and the previous
 * snapshot is tried. With cfg->require, no model at all, or a model with
 * no loadable snapshot, is an error (*cause set). Logs each decision.
 */
int persist_load(const persist_config *cfg, store *s, persist_stats *st, char **cause);

/* Start periodic snapshots on loop (after persist_load()). */
persist *persist_create(uv_loop_t *loop, store *s, const persist_config *cfg,
                        const persist_stats *loaded);

/*
 * Make the current state of model (NULL: every model) durable; cb runs
 * when it is (at once if nothing changed since the last snapshot).
 */
void persist_request(persist *p, const char *model, persist_cb cb, void *arg);

/* A model was dropped: remove its snapshots. */
void persist_forget(persist *p, const char *model);

/*
 * Write every changed model, then call done (loop thread); no new periodic
 * snapshots. With done NULL: stop instead; the running writes end, nothing
 * new starts, and waiting requests fail.
 */
void persist_shutdown(persist *p, persist_done_cb done, void *arg);

/*
 * Models whose current state is not durable (changed since their last
 * snapshot, or never written); with names, a comma-separated list of them
 * (truncated with "..." to size bytes).
 */
size_t persist_unwritten(persist *p, char *names, size_t size);

/* Change the interval of periodic snapshots (0: none) from now on (loop thread). */
void persist_set_interval(persist *p, uint64_t interval_ms);

void persist_stats_get(const persist *p, persist_stats *st);

/* Free after the loop has stopped. NULL accepted. */
void persist_destroy(persist *p);

#endif

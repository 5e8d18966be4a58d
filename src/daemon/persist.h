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
 */
#ifndef EMAD_PERSIST_H
#define EMAD_PERSIST_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "store/store.h"

typedef struct persist_config {
    const char *state_dir;
    uint64_t interval_ms; /* 0: no periodic snapshots */
    size_t keep;          /* snapshots kept per model (>= 1) */
    int require;          /* a missing or unloadable state is a startup error */
} persist_config;

/* Counters for stats. */
typedef struct persist_stats {
    uint64_t written, failed, bytes, last_success_unix_ms, last_duration_ms, loaded, broken,
        running;
} persist_stats;

typedef struct persist persist;

/* Called on the loop thread when a requested snapshot is durable (rc 0) or failed. */
typedef void (*persist_cb)(void *arg, int rc, const char *message, uint64_t step);

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

/* Write every changed model, then call done (loop thread); no new periodic snapshots. */
void persist_shutdown(persist *p, void (*done)(void *arg), void *arg);

/* Change the interval of periodic snapshots (0: none) from now on (loop thread). */
void persist_set_interval(persist *p, uint64_t interval_ms);

void persist_stats_get(const persist *p, persist_stats *st);

/* Free after the loop has stopped. NULL accepted. */
void persist_destroy(persist *p);

#endif

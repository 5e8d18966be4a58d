/*
 * counters.h - the daemon's counters, listed once.
 *
 * Each entry is XX(ID, "wire name"). The daemon expands the list into its
 * counter enum and the names of the `stats` reply (docs/PROTOCOL.md), and
 * clients that print counters (emactl) take the names from here, so a
 * counter is added in one line.
 */
#ifndef EMAD_COUNTERS_H
#define EMAD_COUNTERS_H

#include <stddef.h>

#define COUNTERS_MAP(XX)                                                                           \
    XX(REQUESTS, "requests")                                                                       \
    XX(ERRORS, "errors")                                                                           \
    XX(BYTES_IN, "bytes_in")                                                                       \
    XX(BYTES_OUT, "bytes_out")                                                                     \
    XX(TENSORS_APPLIED, "tensors_applied")                                                         \
    XX(TENSORS_STALE, "tensors_stale")                                                             \
    XX(PUSHES_REJECTED, "pushes_rejected")                                                         \
    XX(TXN_BEGUN, "txn_begun")                                                                     \
    XX(TXN_COMMITTED, "txn_committed")                                                             \
    XX(TXN_ABORTED, "txn_aborted")                                                                 \
    XX(TXN_EXPIRED, "txn_expired")                                                                 \
    XX(SESSIONS_EXPIRED, "sessions_expired")                                                       \
    XX(REPLIES_DROPPED, "replies_dropped")                                                         \
    XX(TENSORS_SKIPPED_NONFINITE, "tensors_skipped_nonfinite")                                     \
    XX(TENSORS_IGNORED, "tensors_ignored")                                                         \
    XX(WRITER_PUSHES_PENDING, "writer_pushes_pending")                                             \
    XX(STEPS_EXPIRED, "steps_expired")                                                             \
    XX(COMMITS_WAITED, "commits_waited")                                                           \
    XX(SHADOW_REUSED_BYTES, "shadow_reused_bytes")                                                 \
    XX(SHADOW_FRESH_BYTES, "shadow_fresh_bytes")                                                   \
    XX(MODELS_RESTORED_BEHIND, "models_restored_behind")                                           \
    XX(AUTH_FAIL_REQUIRED, "auth_failures_required")                                               \
    XX(AUTH_FAIL_NO_SESSION, "auth_failures_no_session")                                           \
    XX(AUTH_FAIL_EXPIRED, "auth_failures_expired")                                                 \
    XX(AUTH_FAIL_BAD_TAG, "auth_failures_bad_tag")                                                 \
    XX(AUTH_FAIL_REPLAY, "auth_failures_replay")                                                   \
    XX(AUTH_FAIL_BAD_SIGNATURE, "auth_failures_bad_signature")                                     \
    XX(AUTH_FAIL_UNKNOWN_HANDSHAKE, "auth_failures_unknown_handshake")                             \
    XX(AUTH_FAIL_DENIED, "auth_failures_denied")                                                   \
    XX(AUTH_FAIL_LOGS_SUPPRESSED, "auth_failure_logs_suppressed")                                  \
    XX(AUTH_RELOAD_FAILURES, "auth_reload_failures")                                               \
    XX(AUTH_SESSIONS_OPENED, "auth_sessions_opened")                                               \
    XX(AUTH_SESSIONS_REVOKED, "auth_sessions_revoked")                                             \
    XX(AUTH_RESENDS, "auth_resends")                                                               \
    XX(LAYOUTS_KEPT, "layouts_kept")                                                               \
    XX(LAYOUT_PUSHES, "layout_pushes")                                                             \
    XX(LAYOUT_UNKNOWN, "layout_unknown")

/* Counter ids, in the order of the `stats` reply. */
enum counter {
#define XX(id, name) COUNTER_##id,
    COUNTERS_MAP(XX)
#undef XX
    COUNTER_COUNT
};

/* Prefixes of the per-op and per-error counters of the `stats` reply. */
#define COUNTERS_OP_PREFIX "requests_"
#define COUNTERS_ERROR_PREFIX "errors_"

/* The wire name of counter id (enum counter), or NULL. */
const char *counters_name(int id);

/* Write the name of op's request counter ("requests_push") to buf: 0, or -1 if it does not fit. */
int counters_op_name(char *buf, size_t size, int op);

#endif

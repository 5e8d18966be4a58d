/*
 * proto_keys.h - every key of the wire protocol's msgpack maps, and the
 * fixed string values, spelled once (docs/PROTOCOL.md describes each).
 * The daemon and the clients use these names, never literals, so the two
 * sides cannot drift apart; PROTO_KEY_LEN() gives a key's length at compile
 * time for code that sizes messages before packing them.
 */
#ifndef EMAD_PROTO_KEYS_H
#define EMAD_PROTO_KEYS_H

#define PROTO_KEY_LEN(k) (sizeof(k) - 1)

/* Keys of request and reply maps. */
#define PROTO_KEY_V "v"
#define PROTO_KEY_OK "ok"
#define PROTO_KEY_OP "op"
#define PROTO_KEY_ERROR "error"
#define PROTO_KEY_CODE "code"
#define PROTO_KEY_NAME "name"
#define PROTO_KEY_MESSAGE "message"
#define PROTO_KEY_TENSOR "tensor"
#define PROTO_KEY_SUPPORTED "supported"
#define PROTO_KEY_TENSORS "tensors"
#define PROTO_KEY_KIND "kind"
#define PROTO_KEY_DTYPE "dtype"
#define PROTO_KEY_SHAPE "shape"
#define PROTO_KEY_DATA "data"
#define PROTO_KEY_OFFSET "offset"
#define PROTO_KEY_LIMIT "limit"
#define PROTO_KEY_NEXT "next"
#define PROTO_KEY_SLICE "slice"
#define PROTO_KEY_AS_DTYPE "as_dtype"
#define PROTO_KEY_STEP "step"
#define PROTO_KEY_WRITER "writer"
#define PROTO_KEY_TXN "txn"
#define PROTO_KEY_SEED "seed"
#define PROTO_KEY_LAYOUT "layout"
#define PROTO_KEY_MODEL "model"
#define PROTO_KEY_MODELS "models"
#define PROTO_KEY_CONFIG "config"
#define PROTO_KEY_DECAY "decay"
#define PROTO_KEY_EXIST_OK "exist_ok"
#define PROTO_KEY_SERVER "server"
#define PROTO_KEY_VERSION "version"
#define PROTO_KEY_PROTOCOL "protocol"
#define PROTO_KEY_MAX_MESSAGE_BYTES "max_message_bytes"
#define PROTO_KEY_MAX_TENSORS "max_tensors"
#define PROTO_KEY_MAX_NAME_BYTES "max_name_bytes"
#define PROTO_KEY_MAX_NDIM "max_ndim"
#define PROTO_KEY_TXN_TIMEOUT_MS "txn_timeout_ms"
#define PROTO_KEY_CREATED "created"
#define PROTO_KEY_APPLIED "applied"
#define PROTO_KEY_STALE "stale"
#define PROTO_KEY_SKIPPED "skipped"
#define PROTO_KEY_IGNORED "ignored"
#define PROTO_KEY_PENDING "pending"
#define PROTO_KEY_STALE_NAMES "stale_names"
#define PROTO_KEY_STAGED "staged"
#define PROTO_KEY_NBYTES "nbytes"
#define PROTO_KEY_UPDATE "update"
#define PROTO_KEY_SESSION "session"
#define PROTO_KEY_MAX_REPLY_BYTES "max_reply_bytes"
#define PROTO_KEY_INLINE_BYTES "inline_bytes"
#define PROTO_KEY_RANGES "ranges"
#define PROTO_KEY_LAST_PUSH_AGE_MS "last_push_age_ms"
#define PROTO_KEY_SNAPSHOT_STEP "snapshot_step"
#define PROTO_KEY_SHADOW_BYTES "shadow_bytes"
#define PROTO_KEY_STATS "stats"
#define PROTO_KEY_EPOCH "epoch"         /* cluster mode: the shard map's epoch */
#define PROTO_KEY_SHARD "shard"         /* cluster mode: the shard a request is for / a daemon is */
#define PROTO_KEY_SHARDS "shards"       /* cluster mode: shards in the map */
#define PROTO_KEY_REPLICA "replica"     /* cluster mode: the daemon's place in its shard's line */
#define PROTO_KEY_RESYNCING "resyncing" /* cluster mode: a model waiting for a peer's state */
#define PROTO_KEY_ANEW "anew"           /* install: start over with this configuration */
#define PROTO_KEY_END "end"             /* install: complete at this step */
#define PROTO_KEY_ACCEPT "accept"       /* install: keep the state as it is */
#define PROTO_KEY_DECAY_INDEX "decay_index" /* install: which shadow the data is of */
#define PROTO_KEY_STEPS "steps"             /* install: each tensor's step */

/* Gauges of the `stats` reply (counters are in common/counters.h). */
#define PROTO_KEY_TXN_OPEN "txn_open"
#define PROTO_KEY_SESSIONS_OPEN "sessions_open"
#define PROTO_KEY_STEPS_PENDING "steps_pending"
#define PROTO_KEY_STAGED_BYTES "staged_bytes"
/* The memory budget: its limit, what is held in all, and per part PREFIX + part + SUFFIX. */
#define PROTO_KEY_MEMORY_BUDGET_BYTES "memory_budget_bytes"
#define PROTO_KEY_MEMORY_BYTES "memory_bytes"
#define PROTO_KEY_MEMORY_PART_PREFIX "memory_"
#define PROTO_KEY_MEMORY_PART_SUFFIX "_bytes"
/* The parts of the memory budget (store/budget.h), in those keys and as /metrics labels. */
#define PROTO_VAL_MEMORY_SHADOWS "shadows"
#define PROTO_VAL_MEMORY_SPARES "spares"
#define PROTO_VAL_MEMORY_STAGED PROTO_KEY_STAGED
#define PROTO_VAL_MEMORY_PENDING PROTO_KEY_PENDING
#define PROTO_VAL_MEMORY_TXN_SHADOWS "txn_shadows"
#define PROTO_VAL_MEMORY_SESSIONS "sessions"
#define PROTO_VAL_MEMORY_REPLIES "replies_in_flight"
#define PROTO_VAL_MEMORY_PREVIOUS "previous"
#define PROTO_KEY_SNAPSHOTS_WRITTEN "snapshots_written"
#define PROTO_KEY_SNAPSHOT_FAILURES "snapshot_failures"
#define PROTO_KEY_SNAPSHOT_BYTES "snapshot_bytes"
#define PROTO_KEY_SNAPSHOT_LAST_SUCCESS_UNIX_SECONDS "snapshot_last_success_unix_seconds"
#define PROTO_KEY_SNAPSHOT_LAST_DURATION_MS "snapshot_last_duration_ms"
#define PROTO_KEY_SNAPSHOT_RUNNING "snapshot_running"
#define PROTO_KEY_SNAPSHOTS_LOADED "snapshots_loaded"
#define PROTO_KEY_SNAPSHOTS_BROKEN "snapshots_broken"
#define PROTO_KEY_UPTIME_SECONDS "uptime_seconds"

/* Authentication (docs/PROTOCOL.md "Authentication"). */
#define PROTO_KEY_AUTH "auth" /* hello: whether the daemon requires authentication */
#define PROTO_KEY_USER "user"
#define PROTO_KEY_EPH "eph"
#define PROTO_KEY_HS "hs"
#define PROTO_KEY_CHALLENGE "challenge"
#define PROTO_KEY_LIFETIME "lifetime"
#define PROTO_KEY_SIG "sig"
#define PROTO_KEY_RENEW "renew"
#define PROTO_KEY_REASON "reason"
/* Values of `reason` in an EMAD_EAUTH error (and `denied`: the label of EMAD_EDENIED). */
#define PROTO_VAL_AUTH_REQUIRED "required"
#define PROTO_VAL_AUTH_NO_SESSION "no_session"
#define PROTO_VAL_AUTH_EXPIRED "expired"
#define PROTO_VAL_AUTH_BAD_TAG "bad_tag"
#define PROTO_VAL_AUTH_REPLAY "replay"
#define PROTO_VAL_AUTH_BAD_SIGNATURE "bad_signature"
#define PROTO_VAL_AUTH_UNKNOWN_HANDSHAKE "unknown_handshake"
#define PROTO_VAL_AUTH_DENIED "denied"

/* String values with a fixed meaning. */
#define PROTO_VAL_SERVER_NAME "emad"
#define PROTO_VAL_UPDATE_AVERAGE "average"
#define PROTO_VAL_UPDATE_COPY "copy"
#define PROTO_VAL_DTYPE_SHADOW "shadow"

#endif

/*
 * metrics.c - the daemon's figures, their Prometheus and JSON renderings,
 * and the board that hands them from the loop thread to HTTP threads (see
 * metrics.h).
 *
 * Refresh protocol: an HTTP thread that wants figures notes the board's
 * generation, sets `want`, wakes the loop with uv_async_send and waits on
 * the condition variable until a copy filled after it asked is published
 * (or METRICS_REFRESH_WAIT_MS pass). The loop fills one copy for every
 * waiting request, at most once per METRICS_MIN_REFRESH_MS (a one-shot
 * timer defers a refresh asked for sooner), so a client hammering
 * /metrics costs the loop a bounded amount of work.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "config.h"
#include "common/counters.h"
#include "common/errors.h"
#include "daemon/metrics.h"
#include "base/xmalloc.h"

/*
 * The counters of the figures that are exported as they are, in the order of
 * /metrics and of /stats: each with its Prometheus family (several counters
 * may share one, told apart by a result label) and, on a family's first
 * counter, its help text. /stats names them as the `stats` op does.
 * Requests, errors and rejected pushes are exported per op and per code.
 */
static const struct counter_info {
    int id;             /* enum counter */
    const char *family; /* Prometheus metric family */
    const char *result; /* value of the result label; NULL: the family's only sample */
    const char *help;   /* NULL: the family is the previous entry's */
    const char *label;  /* name of the label of `result` (NULL: "result") */
} counter_info[] = {
    {COUNTER_BYTES_IN, "emad_received_bytes_total", NULL, "Bytes of requests received.", NULL},
    {COUNTER_BYTES_OUT, "emad_sent_bytes_total", NULL, "Bytes of replies sent.", NULL},
    {COUNTER_TENSORS_APPLIED, "emad_tensor_updates_total", PROTO_KEY_APPLIED,
     "Tensors in accepted pushes, by outcome: applied to the shadow, stale (step not newer), "
     "skipped_nonfinite (NaN/Inf with nonfinite=skip), ignored (ignore patterns).",
     NULL},
    {COUNTER_TENSORS_STALE, "emad_tensor_updates_total", PROTO_KEY_STALE, NULL, NULL},
    {COUNTER_TENSORS_SKIPPED_NONFINITE, "emad_tensor_updates_total", "skipped_nonfinite", NULL,
     NULL},
    {COUNTER_TENSORS_IGNORED, "emad_tensor_updates_total", PROTO_KEY_IGNORED, NULL, NULL},
    {COUNTER_WRITER_PUSHES_PENDING, "emad_writer_pushes_pending_total", NULL,
     "Pushes staged for a multi-writer step that was not complete yet.", NULL},
    {COUNTER_TXN_BEGUN, "emad_transactions_begun_total", NULL, "Push transactions begun.", NULL},
    {COUNTER_TXN_COMMITTED, "emad_transactions_ended_total", "committed",
     "Push transactions ended, by how: committed, aborted by the client, or expired idle.", NULL},
    {COUNTER_TXN_ABORTED, "emad_transactions_ended_total", "aborted", NULL, NULL},
    {COUNTER_TXN_EXPIRED, "emad_transactions_ended_total", "expired", NULL, NULL},
    {COUNTER_SESSIONS_EXPIRED, "emad_pull_sessions_expired_total", NULL,
     "Pull sessions discarded after the idle timeout.", NULL},
    {COUNTER_STEPS_EXPIRED, "emad_steps_expired_total", NULL,
     "Multi-writer steps discarded because a writer never pushed.", NULL},
    {COUNTER_REPLIES_DROPPED, "emad_replies_dropped_total", NULL,
     "Replies that could not be sent (client gone or out of memory).", NULL},
    {COUNTER_COMMITS_WAITED, "emad_commits_waited_total", NULL,
     "Commits that waited for chunks of their transaction still being averaged.", NULL},
    {COUNTER_SHADOW_REUSED_BYTES, "emad_transaction_shadow_bytes_total", "reused",
     "Shadow bytes transactions wrote, by memory: reused (a spare kept mapped) or fresh (new "
     "memory, a page fault per page).",
     NULL},
    {COUNTER_SHADOW_FRESH_BYTES, "emad_transaction_shadow_bytes_total", "fresh", NULL, NULL},
    {COUNTER_MODELS_RESTORED_BEHIND, "emad_models_restored_behind_total", NULL,
     "Models loaded from a snapshot whose first push came more than one step later (steps "
     "pushed before the restart and not in the snapshot were lost).",
     NULL},
    {COUNTER_AUTH_FAIL_REQUIRED, "emad_auth_failures_total", PROTO_VAL_AUTH_REQUIRED,
     "Requests refused by authentication, by reason (docs/PROTOCOL.md, Authentication); "
     "denied: authenticated, but the user's grants do not allow it.",
     PROTO_KEY_REASON},
    {COUNTER_AUTH_FAIL_NO_SESSION, "emad_auth_failures_total", PROTO_VAL_AUTH_NO_SESSION, NULL,
     PROTO_KEY_REASON},
    {COUNTER_AUTH_FAIL_EXPIRED, "emad_auth_failures_total", PROTO_VAL_AUTH_EXPIRED, NULL,
     PROTO_KEY_REASON},
    {COUNTER_AUTH_FAIL_BAD_TAG, "emad_auth_failures_total", PROTO_VAL_AUTH_BAD_TAG, NULL,
     PROTO_KEY_REASON},
    {COUNTER_AUTH_FAIL_REPLAY, "emad_auth_failures_total", PROTO_VAL_AUTH_REPLAY, NULL,
     PROTO_KEY_REASON},
    {COUNTER_AUTH_FAIL_BAD_SIGNATURE, "emad_auth_failures_total", PROTO_VAL_AUTH_BAD_SIGNATURE,
     NULL, PROTO_KEY_REASON},
    {COUNTER_AUTH_FAIL_UNKNOWN_HANDSHAKE, "emad_auth_failures_total",
     PROTO_VAL_AUTH_UNKNOWN_HANDSHAKE, NULL, PROTO_KEY_REASON},
    {COUNTER_AUTH_FAIL_DENIED, "emad_auth_failures_total", PROTO_VAL_AUTH_DENIED, NULL,
     PROTO_KEY_REASON},
    {COUNTER_AUTH_FAIL_LOGS_SUPPRESSED, "emad_auth_failure_logs_suppressed_total", NULL,
     "Authentication failures not logged (at most one line per second per reason).", NULL},
    {COUNTER_AUTH_RELOAD_FAILURES, "emad_auth_reload_failures_total", NULL,
     "Reloads of the auth file (SIGHUP) refused; the previous users stay in force.", NULL},
    {COUNTER_AUTH_SESSIONS_OPENED, "emad_auth_sessions_opened_total", NULL,
     "Authenticated sessions opened (handshakes finished).", NULL},
    {COUNTER_AUTH_SESSIONS_REVOKED, "emad_auth_sessions_revoked_total", NULL,
     "Sessions dropped by a reload because their user was removed or got another key.", NULL},
    {COUNTER_AUTH_RESENDS, "emad_auth_resends_total", NULL,
     "Exact resends of an authenticated request, answered with the same reply.", NULL},
    {COUNTER_LAYOUTS_KEPT, "emad_push_layouts_total", "kept",
     "Push layouts: kept for a client, used by a push of data alone, or unknown to the "
     "daemon (the client then sends the tensors).",
     NULL},
    {COUNTER_LAYOUT_PUSHES, "emad_push_layouts_total", "used", NULL, NULL},
    {COUNTER_LAYOUT_UNKNOWN, "emad_push_layouts_total", "unknown", NULL, NULL},
};

/* Every counter is in the table but the three exported per op or per code. */
_Static_assert(sizeof(counter_info) / sizeof(counter_info[0]) == COUNTER_COUNT - 3,
               "a counter of COUNTERS_MAP is missing from counter_info");

static const double hist_bounds[METRICS_HIST_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};

void
metrics_hist_observe(metrics_hist *h, double seconds)
{
    int i = 0;

    while (i < METRICS_HIST_BUCKETS && seconds > hist_bounds[i])
        i++;
    h->counts[i]++;
    h->sum += seconds;
}

metrics_figures *
metrics_figures_create(size_t nmodels)
{
    metrics_figures *f = xcalloc(1, sizeof(*f));

    f->model = xcalloc(nmodels ? nmodels : 1, sizeof(*f->model));
    f->nmodels = nmodels;
    return f;
}

void
metrics_figures_destroy(metrics_figures *f)
{
    if (f == NULL)
        return;
    free(f->model);
    free(f);
}

const char *
metrics_state_name(int state)
{
    switch (state) {
    case METRICS_SERVING:
        return "serving";
    case METRICS_STOPPING:
        return "stopping";
    default:
        return "loading";
    }
}

/* Seconds since boot of the process start, from /proc/self/stat field 22 (clock ticks). */
static double
process_start_since_boot(void)
{
    char buf[1024], *p;
    unsigned long long start = 0;
    FILE *fp = fopen("/proc/self/stat", "re");
    size_t n;
    long hz = sysconf(_SC_CLK_TCK);

    if (fp == NULL)
        return -1;
    n = fread(buf, 1, sizeof(buf) - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    /* The command name is in parentheses and may contain spaces: fields start after ')'. */
    if ((p = strrchr(buf, ')')) == NULL || hz <= 0)
        return -1;
    /* Field 3 (state) follows ") "; the start time is field 22, 19 fields further on. */
    p += 2;
    for (int field = 3; field < 22 && p != NULL; field++) {
        p = strchr(p, ' ');
        if (p != NULL)
            p++;
    }
    if (p == NULL || sscanf(p, "%llu", &start) != 1)
        return -1;
    return (double)start / (double)hz;
}

void
metrics_process_get(metrics_process *p)
{
    struct rusage ru;
    struct rlimit rl;
    struct timespec rt, bt;
    unsigned long long size, resident;
    double since_boot;
    FILE *fp;
    DIR *d;

    memset(p, 0, sizeof(*p));
    if ((fp = fopen("/proc/self/statm", "re")) != NULL) {
        if (fscanf(fp, "%llu %llu", &size, &resident) == 2)
            p->resident_bytes = (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
        fclose(fp);
    }
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        p->cpu_seconds = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    if ((d = opendir("/proc/self/fd")) != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            p->open_fds += e->d_name[0] != '.';
        closedir(d);
        if (p->open_fds > 0)
            p->open_fds--; /* the directory's own descriptor */
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        p->max_fds = (uint64_t)rl.rlim_cur;
    since_boot = process_start_since_boot();
    if (since_boot >= 0 && clock_gettime(CLOCK_REALTIME, &rt) == 0 &&
        clock_gettime(CLOCK_BOOTTIME, &bt) == 0)
        p->start_time_unix = (double)rt.tv_sec + (double)rt.tv_nsec / 1e9 -
                             ((double)bt.tv_sec + (double)bt.tv_nsec / 1e9) + since_boot;
}

/* A growing string. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

__attribute__((format(printf, 2, 3))) static void
sb_printf(sbuf *sb, const char *fmt, ...)
{
    va_list ap;
    int n;

    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(sb->p + sb->len, sb->cap - sb->len, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if ((size_t)n < sb->cap - sb->len) {
            sb->len += (size_t)n;
            return;
        }
        sb->cap = sb->cap * 2 + (size_t)n + 1;
        sb->p = xreallocarray(sb->p, sb->cap, 1);
    }
}

/* The reason label for error code `code` (e.g. EMAD_ESHAPE -> shape), in buf. */
static const char *
reason_name(char *buf, size_t size, int code)
{
    const char *name = errors_name(code);
    size_t i = 0;

    if (name == NULL)
        return NULL;
    if (strncmp(name, "EMAD_E", 6) == 0)
        name += 6;
    for (; name[i] != '\0' && i + 1 < size; i++)
        buf[i] = (char)tolower((unsigned char)name[i]);
    buf[i] = '\0';
    return buf;
}

/* Name of op (0: "invalid", for requests whose op could not be decoded). */
static const char *
op_name(int op)
{
    const char *n = proto_op_name(op);
    return n != NULL ? n : "invalid";
}

/* "# HELP" and "# TYPE" lines of a metric family. */
static void
family(sbuf *sb, const char *name, const char *type, const char *help)
{
    sb_printf(sb, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A family with one unlabelled sample. */
static void
single_u64(sbuf *sb, const char *name, const char *type, const char *help, uint64_t v)
{
    family(sb, name, type, help);
    sb_printf(sb, "%s %llu\n", name, (unsigned long long)v);
}

static void
single_double(sbuf *sb, const char *name, const char *type, const char *help, double v)
{
    family(sb, name, type, help);
    sb_printf(sb, "%s %.15g\n", name, v);
}

/* Histogram samples: cumulative buckets, sum and count. */
static void
histogram(sbuf *sb, const char *name, const char *help, const metrics_hist *h)
{
    uint64_t cum = 0;

    family(sb, name, "histogram", help);
    for (int i = 0; i <= METRICS_HIST_BUCKETS; i++) {
        cum += h->counts[i];
        if (i < METRICS_HIST_BUCKETS)
            sb_printf(sb, "%s_bucket{le=\"%g\"} %llu\n", name, hist_bounds[i],
                      (unsigned long long)cum);
        else
            sb_printf(sb, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    }
    sb_printf(sb, "%s_sum %.15g\n%s_count %llu\n", name, h->sum, name, (unsigned long long)cum);
}

/* Model names are [A-Za-z0-9._-] (names_check_model): no escaping is ever needed. */
static void
model_u64(sbuf *sb, const metrics_figures *f, const char *name, const char *type, const char *help,
          size_t field)
{
    family(sb, name, type, help);
    for (size_t i = 0; i < f->nmodels; i++) {
        const uint64_t *v = (const uint64_t *)(const void *)((const char *)&f->model[i] + field);
        sb_printf(sb, "%s{model=\"%s\"} %llu\n", name, f->model[i].name, (unsigned long long)*v);
    }
}

/* The process and build families, present even before the first figures. */
static void
render_process(sbuf *sb, int state, const metrics_process *p)
{
    static const int states[] = {METRICS_LOADING, METRICS_SERVING, METRICS_STOPPING};

    family(sb, "emad_build_info", "gauge", "Version and protocol of this emad; always 1.");
    sb_printf(sb, "emad_build_info{version=\"%s\",protocol=\"%d\"} 1\n", PACKAGE_VERSION,
              PROTO_VERSION);
    family(sb, "emad_state", "gauge",
           "1 for the daemon's current state: loading snapshots, serving, or stopping.");
    for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++)
        sb_printf(sb, "emad_state{state=\"%s\"} %d\n", metrics_state_name(states[i]),
                  state == states[i]);
    single_u64(sb, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
               p->resident_bytes);
    single_double(sb, "process_cpu_seconds_total", "counter",
                  "Total user and system CPU time spent in seconds.", p->cpu_seconds);
    single_u64(sb, "process_open_fds", "gauge", "Number of open file descriptors.", p->open_fds);
    if (p->max_fds > 0)
        single_u64(sb, "process_max_fds", "gauge", "Maximum number of open file descriptors.",
                   p->max_fds);
    if (p->start_time_unix > 0)
        single_double(sb, "process_start_time_seconds", "gauge",
                      "Start time of the process since unix epoch in seconds.", p->start_time_unix);
}

char *
metrics_render_prometheus(const metrics_figures *f, int state, const metrics_process *p,
                          double age_seconds, size_t *len)
{
    sbuf sb = {xmalloc(16384), 0, 16384};
    char rb[32];

    sb.p[0] = '\0';
    render_process(&sb, state, p);
    if (f == NULL)
        goto done;

    single_double(&sb, "emad_figures_age_seconds", "gauge",
                  "How old these figures are: the event loop copies them on request; a large "
                  "value means the loop did not answer in time.",
                  age_seconds);
    single_double(&sb, "emad_uptime_seconds", "gauge", "Seconds since the daemon started.",
                  f->uptime_seconds);

    family(&sb, "emad_requests_total", "counter",
           "Requests handled, by operation and result (op=\"invalid\": the op could not be "
           "decoded).");
    for (int op = 0; op < PROTO_OP_COUNT; op++) {
        if (op != 0)
            sb_printf(&sb, "emad_requests_total{op=\"%s\",result=\"ok\"} %llu\n", op_name(op),
                      (unsigned long long)f->requests_ok[op]);
        sb_printf(&sb, "emad_requests_total{op=\"%s\",result=\"error\"} %llu\n", op_name(op),
                  (unsigned long long)f->requests_error[op]);
    }
    family(&sb, "emad_request_errors_total", "counter", "Error replies, by error code (every op).");
    for (int i = 0; i < METRICS_ERR_CODES; i++) {
        const char *name = errors_name(-(METRICS_ERR_FIRST + i));
        if (name != NULL)
            sb_printf(&sb, "emad_request_errors_total{code=\"%s\"} %llu\n", name,
                      (unsigned long long)f->errors[i]);
    }
    family(&sb, "emad_pushes_rejected_total", "counter",
           "Pushes and commits refused, by reason (the error code without EMAD_E, lower case); "
           "reason=\"stale\" counts accepted pushes in which every tensor was stale, so nothing "
           "changed.");
    sb_printf(&sb, "emad_pushes_rejected_total{reason=\"stale\"} %llu\n",
              (unsigned long long)f->pushes_stale);
    for (int i = 0; i < METRICS_ERR_CODES; i++) {
        if (reason_name(rb, sizeof(rb), -(METRICS_ERR_FIRST + i)) != NULL)
            sb_printf(&sb, "emad_pushes_rejected_total{reason=\"%s\"} %llu\n", rb,
                      (unsigned long long)f->push_rejected[i]);
    }
    for (size_t i = 0; i < sizeof(counter_info) / sizeof(counter_info[0]); i++) {
        const struct counter_info *ci = &counter_info[i];
        unsigned long long v = f->counters[ci->id];

        if (ci->help != NULL)
            family(&sb, ci->family, "counter", ci->help);
        if (ci->result != NULL)
            sb_printf(&sb, "%s{%s=\"%s\"} %llu\n", ci->family,
                      ci->label != NULL ? ci->label : "result", ci->result, v);
        else
            sb_printf(&sb, "%s %llu\n", ci->family, v);
    }

    single_u64(&sb, "emad_models", "gauge", "Models held.", f->store.models);
    single_u64(&sb, "emad_tensors", "gauge", "Tensors held, over all models.", f->store.tensors);
    single_u64(&sb, "emad_shadow_bytes", "gauge", "Bytes of shadow data held, every decay.",
               f->store.shadow_bytes);
    single_u64(&sb, "emad_open_transactions", "gauge", "Push transactions open.",
               f->store.txn_open);
    single_u64(&sb, "emad_open_pull_sessions", "gauge", "Pull sessions open.", f->store.views_open);
    single_u64(&sb, "emad_pending_steps", "gauge", "Multi-writer steps waiting for writers.",
               f->store.steps_pending);
    single_u64(&sb, "emad_staged_bytes", "gauge",
               "Bytes staged in open transactions and pending steps.", f->store.staged_bytes);
    family(
        &sb, "emad_memory_bytes", "gauge",
        "Bytes clients made the daemon hold, by part of the memory budget (docs/OPERATIONS.md).");
    for (int k = 0; k < BUDGET_PART_COUNT; k++)
        sb_printf(&sb, "emad_memory_bytes{part=\"%s\"} %llu\n", budget_part_name(k),
                  (unsigned long long)f->store.memory[k]);
    single_u64(&sb, "emad_memory_budget_bytes", "gauge",
               "The memory budget (--max-memory): requests that would hold more fail with "
               "EMAD_ELIMIT.",
               f->store.memory_limit);
    single_u64(&sb, "emad_max_message_bytes", "gauge", "Largest request accepted, in bytes.",
               f->max_message_bytes);
    single_u64(&sb, "emad_connected_pipes", "gauge",
               "Transport connections currently established with clients.", f->connections);
    single_u64(&sb, "emad_connections_accepted_total", "counter", "Transport connections accepted.",
               f->connections_accepted);
    single_u64(&sb, "emad_connections_dropped_total", "counter",
               "Transport connections dropped by the transport (e.g. a message over "
               "max-message-bytes).",
               f->connections_dropped);
    single_u64(&sb, "emad_connections_broken_total", "counter",
               "Transport connections closed on an error.", f->connections_broken);
    single_u64(&sb, "emad_endpoint_errors", "gauge", "Listening endpoints currently in error.",
               f->endpoint_errors);

    model_u64(&sb, f, "emad_model_step", "gauge", "Committed step of each model.",
              offsetof(metrics_model, step));
    family(&sb, "emad_model_seconds_since_push", "gauge",
           "Seconds since each model last applied a push (absent until one is applied after "
           "start).");
    for (size_t i = 0; i < f->nmodels; i++)
        if (f->model[i].pushed)
            sb_printf(&sb, "emad_model_seconds_since_push{model=\"%s\"} %.3f\n", f->model[i].name,
                      f->model[i].seconds_since_push);
    model_u64(&sb, f, "emad_model_tensors", "gauge", "Tensors of each model.",
              offsetof(metrics_model, tensors));
    model_u64(&sb, f, "emad_model_shadow_bytes", "gauge", "Shadow bytes of each model.",
              offsetof(metrics_model, shadow_bytes));
    model_u64(&sb, f, "emad_model_pending_steps", "gauge",
              "Multi-writer steps of each model waiting for writers.",
              offsetof(metrics_model, steps_pending));
    if (f->has_state_dir)
        model_u64(&sb, f, "emad_model_snapshot_step", "gauge",
                  "Step of each model's newest durable snapshot (0: none).",
                  offsetof(metrics_model, snapshot_step));

    if (f->has_state_dir) {
        single_u64(&sb, "emad_snapshots_written_total", "counter", "Snapshots written.",
                   f->snap.written);
        single_u64(&sb, "emad_snapshot_failures_total", "counter",
                   "Snapshot writes that failed (the previous snapshot is kept).", f->snap.failed);
        single_u64(&sb, "emad_snapshot_written_bytes_total", "counter",
                   "Bytes of snapshot files written.", f->snap.bytes);
        single_double(&sb, "emad_snapshot_last_success_timestamp_seconds", "gauge",
                      "Unix time of the last successful snapshot (0: none since start).",
                      (double)f->snap.last_success_unix_ms / 1000.0);
        single_double(&sb, "emad_snapshot_last_duration_seconds", "gauge",
                      "Duration of the last snapshot write.",
                      (double)f->snap.last_duration_ms / 1000.0);
        single_u64(&sb, "emad_snapshot_running", "gauge", "Snapshot writes in progress.",
                   f->snap.running);
        single_u64(&sb, "emad_snapshots_loaded", "gauge", "Snapshots loaded at startup.",
                   f->snap.loaded);
        single_u64(&sb, "emad_snapshots_broken", "gauge",
                   "Snapshots found corrupt at startup (renamed *.broken).", f->snap.broken);
    }

    histogram(&sb, "emad_push_apply_duration_seconds",
              "Time to handle an accepted push or commit: decode, validate, apply, reply.",
              &f->push_apply);
    histogram(&sb, "emad_pull_duration_seconds",
              "Time to handle an accepted pull or read: freeze the view, pack the reply.",
              &f->pull);
done:
    *len = sb.len;
    return sb.p;
}

/* json_object_set_new for a uint64 (JSON integers are int64 in jansson). */
static void
jset_u64(json_t *o, const char *key, uint64_t v)
{
    json_object_set_new(o, key, json_integer(v > (uint64_t)INT64_MAX ? INT64_MAX : (json_int_t)v));
}

/* Histogram as {"count", "sum_seconds", "buckets": {"le": cumulative}}. */
static json_t *
json_hist(const metrics_hist *h)
{
    json_t *o = json_object(), *b = json_object();
    uint64_t cum = 0;
    char le[32];

    for (int i = 0; i <= METRICS_HIST_BUCKETS; i++) {
        cum += h->counts[i];
        if (i < METRICS_HIST_BUCKETS)
            snprintf(le, sizeof(le), "%g", hist_bounds[i]);
        else
            snprintf(le, sizeof(le), "+Inf");
        jset_u64(b, le, cum);
    }
    jset_u64(o, "count", cum);
    json_object_set_new(o, "sum_seconds", json_real(h->sum));
    json_object_set_new(o, "buckets", b);
    return o;
}

char *
metrics_render_json(const metrics_figures *f, int state, const metrics_process *p,
                    double age_seconds, size_t *len)
{
    json_t *root = json_object(), *c, *g, *models, *lat, *proc;
    char name[64], rb[32];
    char *out;

    json_object_set_new(root, "state", json_string(metrics_state_name(state)));
    json_object_set_new(root, PROTO_KEY_VERSION, json_string(PACKAGE_VERSION));
    jset_u64(root, PROTO_KEY_PROTOCOL, PROTO_VERSION);
    proc = json_object();
    jset_u64(proc, "resident_bytes", p->resident_bytes);
    json_object_set_new(proc, "cpu_seconds", json_real(p->cpu_seconds));
    jset_u64(proc, "open_fds", p->open_fds);
    json_object_set_new(proc, "start_time_unix_seconds", json_real(p->start_time_unix));
    json_object_set_new(root, "process", proc);
    if (f == NULL)
        goto done;
    json_object_set_new(root, "figures_age_seconds", json_real(age_seconds));
    json_object_set_new(root, PROTO_KEY_UPTIME_SECONDS, json_real(f->uptime_seconds));

    /* Counters under the names of the `stats` op (docs/PROTOCOL.md). */
    c = json_object();
    {
        uint64_t requests = 0, errors = 0;
        for (int op = 0; op < PROTO_OP_COUNT; op++) {
            requests += f->requests_ok[op] + f->requests_error[op];
            errors += f->requests_error[op];
        }
        jset_u64(c, counters_name(COUNTER_REQUESTS), requests);
        jset_u64(c, counters_name(COUNTER_ERRORS), errors);
    }
    for (int op = 1; op < PROTO_OP_COUNT; op++) {
        snprintf(name, sizeof(name), COUNTERS_OP_PREFIX "%s", op_name(op));
        jset_u64(c, name, f->requests_ok[op] + f->requests_error[op]);
    }
    for (int i = 0; i < METRICS_ERR_CODES; i++) {
        const char *en = errors_name(-(METRICS_ERR_FIRST + i));
        if (en != NULL && f->errors[i] != 0) {
            snprintf(name, sizeof(name), COUNTERS_ERROR_PREFIX "%s", en);
            jset_u64(c, name, f->errors[i]);
        }
    }
    {
        uint64_t rejected = 0;
        for (int i = 0; i < METRICS_ERR_CODES; i++)
            rejected += f->push_rejected[i];
        jset_u64(c, counters_name(COUNTER_PUSHES_REJECTED), rejected);
    }
    jset_u64(c, "pushes_stale", f->pushes_stale);
    for (int i = 0; i < METRICS_ERR_CODES; i++) {
        if (f->push_rejected[i] != 0 && reason_name(rb, sizeof(rb), -(METRICS_ERR_FIRST + i))) {
            snprintf(name, sizeof(name), "pushes_rejected_%s", rb);
            jset_u64(c, name, f->push_rejected[i]);
        }
    }
    for (size_t i = 0; i < sizeof(counter_info) / sizeof(counter_info[0]); i++)
        jset_u64(c, counters_name(counter_info[i].id), f->counters[counter_info[i].id]);
    jset_u64(c, "connections_accepted", f->connections_accepted);
    jset_u64(c, "connections_dropped", f->connections_dropped);
    jset_u64(c, "connections_broken", f->connections_broken);
    if (f->has_state_dir) {
        jset_u64(c, PROTO_KEY_SNAPSHOTS_WRITTEN, f->snap.written);
        jset_u64(c, PROTO_KEY_SNAPSHOT_FAILURES, f->snap.failed);
        jset_u64(c, PROTO_KEY_SNAPSHOT_BYTES, f->snap.bytes);
    }
    json_object_set_new(root, "counters", c);

    g = json_object();
    jset_u64(g, PROTO_KEY_MODELS, f->store.models);
    jset_u64(g, PROTO_KEY_TENSORS, f->store.tensors);
    jset_u64(g, PROTO_KEY_SHADOW_BYTES, f->store.shadow_bytes);
    jset_u64(g, PROTO_KEY_TXN_OPEN, f->store.txn_open);
    jset_u64(g, PROTO_KEY_SESSIONS_OPEN, f->store.views_open);
    jset_u64(g, PROTO_KEY_STEPS_PENDING, f->store.steps_pending);
    jset_u64(g, PROTO_KEY_STAGED_BYTES, f->store.staged_bytes);
    jset_u64(g, PROTO_KEY_MEMORY_BUDGET_BYTES, f->store.memory_limit);
    jset_u64(g, PROTO_KEY_MEMORY_BYTES, f->store.memory_total);
    for (int k = 0; k < BUDGET_PART_COUNT; k++) {
        snprintf(name, sizeof(name), PROTO_KEY_MEMORY_PART_PREFIX "%s" PROTO_KEY_MEMORY_PART_SUFFIX,
                 budget_part_name(k));
        jset_u64(g, name, f->store.memory[k]);
    }
    jset_u64(g, "connected_pipes", f->connections);
    jset_u64(g, PROTO_KEY_MAX_MESSAGE_BYTES, f->max_message_bytes);
    if (f->has_state_dir) {
        jset_u64(g, PROTO_KEY_SNAPSHOT_LAST_SUCCESS_UNIX_SECONDS,
                 f->snap.last_success_unix_ms / 1000);
        jset_u64(g, PROTO_KEY_SNAPSHOT_LAST_DURATION_MS, f->snap.last_duration_ms);
        jset_u64(g, PROTO_KEY_SNAPSHOT_RUNNING, f->snap.running);
        jset_u64(g, PROTO_KEY_SNAPSHOTS_LOADED, f->snap.loaded);
        jset_u64(g, PROTO_KEY_SNAPSHOTS_BROKEN, f->snap.broken);
    }
    json_object_set_new(root, "gauges", g);

    models = json_array();
    for (size_t i = 0; i < f->nmodels; i++) {
        const metrics_model *m = &f->model[i];
        json_t *o = json_object();
        json_object_set_new(o, PROTO_KEY_NAME, json_string(m->name));
        jset_u64(o, PROTO_KEY_STEP, m->step);
        json_object_set_new(o, PROTO_KEY_DECAY, json_real(m->decay));
        jset_u64(o, PROTO_KEY_TENSORS, m->tensors);
        jset_u64(o, PROTO_KEY_SHADOW_BYTES, m->shadow_bytes);
        jset_u64(o, PROTO_KEY_STEPS_PENDING, m->steps_pending);
        json_object_set_new(o, "seconds_since_push",
                            m->pushed ? json_real(m->seconds_since_push) : json_null());
        json_object_set_new(o, PROTO_KEY_SNAPSHOT_STEP,
                            m->has_snapshot ? json_integer((json_int_t)m->snapshot_step)
                                            : json_null());
        json_array_append_new(models, o);
    }
    json_object_set_new(root, PROTO_KEY_MODELS, models);

    lat = json_object();
    json_object_set_new(lat, "push_apply", json_hist(&f->push_apply));
    json_object_set_new(lat, proto_op_name(PROTO_OP_PULL), json_hist(&f->pull));
    json_object_set_new(root, "latency", lat);
done:
    out = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    json_decref(root);
    if (out == NULL)
        out = xstrndup("{}", 2);
    /* A trailing newline, for curl and shells. */
    *len = strlen(out);
    out = xreallocarray(out, *len + 2, 1);
    out[(*len)++] = '\n';
    out[*len] = '\0';
    return out;
}

struct metrics_board {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int state;            /* enum metrics_state */
    metrics_figures *cur; /* latest published, or NULL */
    uint64_t gen;         /* bumped by every publish */
    int filling;          /* the loop is filling a copy (gen + 1) */
    int want;             /* an HTTP thread waits for a fresh copy */
    int attached;         /* async and timer are live: HTTP threads may wake the loop */
    uv_async_t async;
    uv_timer_t timer;
    uint64_t last_fill_ms; /* loop time of the last fill */
    metrics_source src;
    int timer_armed;
};

int
metrics_board_create(metrics_board **out)
{
    metrics_board *b = xcalloc(1, sizeof(*b));
    pthread_condattr_t ca;

    pthread_mutex_init(&b->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&b->cond, &ca);
    pthread_condattr_destroy(&ca);
    b->state = METRICS_LOADING;
    *out = b;
    return 0;
}

/* Drop one reference to f (board mutex held); frees it at zero. */
static void
unref_locked(metrics_figures *f)
{
    if (f != NULL && --f->refs == 0)
        metrics_figures_destroy(f);
}

void
metrics_board_destroy(metrics_board *b)
{
    if (b == NULL)
        return;
    unref_locked(b->cur);
    pthread_cond_destroy(&b->cond);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

void
metrics_board_set_state(metrics_board *b, int state)
{
    pthread_mutex_lock(&b->mu);
    b->state = state;
    pthread_mutex_unlock(&b->mu);
}

int
metrics_board_get_state(metrics_board *b)
{
    int s;

    pthread_mutex_lock(&b->mu);
    s = b->state;
    pthread_mutex_unlock(&b->mu);
    return s;
}

void
metrics_board_publish(metrics_board *b)
{
    metrics_figures *f, *old;

    pthread_mutex_lock(&b->mu);
    b->filling = 1;
    b->want = 0;
    pthread_mutex_unlock(&b->mu);

    b->last_fill_ms = uv_now(b->async.loop);
    f = b->src.fill(b->src.arg); /* no lock held: HTTP threads keep reading the old copy */
    f->fill_ns = uv_hrtime();
    f->refs = 1;

    pthread_mutex_lock(&b->mu);
    old = b->cur;
    b->cur = f;
    b->gen++;
    b->filling = 0;
    unref_locked(old);
    pthread_cond_broadcast(&b->cond);
    pthread_mutex_unlock(&b->mu);
}

/* One-shot timer: a deferred refresh is due. */
static void
on_refresh_timer(uv_timer_t *t)
{
    metrics_board *b = t->data;

    b->timer_armed = 0;
    metrics_board_publish(b);
}

/* uv_async callback: an HTTP thread wants fresh figures. */
static void
on_refresh(uv_async_t *a)
{
    metrics_board *b = a->data;
    uint64_t now = uv_now(a->loop), next = b->last_fill_ms + METRICS_MIN_REFRESH_MS;

    if (b->timer_armed)
        return;
    if (b->last_fill_ms != 0 && now < next) {
        b->timer_armed = 1;
        uv_timer_start(&b->timer, on_refresh_timer, next - now, 0);
        return;
    }
    metrics_board_publish(b);
}

int
metrics_board_attach(metrics_board *b, uv_loop_t *loop, const metrics_source *src)
{
    int rc;

    b->src = *src;
    if ((rc = uv_async_init(loop, &b->async, on_refresh)) < 0)
        return rc;
    b->async.data = b;
    uv_unref((uv_handle_t *)&b->async);
    uv_timer_init(loop, &b->timer);
    b->timer.data = b;
    uv_unref((uv_handle_t *)&b->timer);
    metrics_board_publish(b);
    pthread_mutex_lock(&b->mu);
    b->attached = 1;
    pthread_mutex_unlock(&b->mu);
    return 0;
}

void
metrics_board_detach(metrics_board *b)
{
    pthread_mutex_lock(&b->mu);
    if (!b->attached) {
        pthread_mutex_unlock(&b->mu);
        return;
    }
    b->attached = 0;
    pthread_cond_broadcast(&b->cond); /* waiters take the last copy */
    pthread_mutex_unlock(&b->mu);
    uv_close((uv_handle_t *)&b->async, NULL);
    uv_close((uv_handle_t *)&b->timer, NULL);
}

const metrics_figures *
metrics_board_acquire(metrics_board *b, double *age_seconds)
{
    metrics_figures *f;
    struct timespec deadline;
    uint64_t target;

    pthread_mutex_lock(&b->mu);
    if (b->attached) {
        /* A copy being filled now may have started before this request: wait for the next. */
        target = b->gen + 1 + (b->filling != 0);
        b->want = 1;
        uv_async_send(&b->async);
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_nsec += (long)METRICS_REFRESH_WAIT_MS * 1000000L;
        deadline.tv_sec += deadline.tv_nsec / 1000000000L;
        deadline.tv_nsec %= 1000000000L;
        while (b->attached && b->gen < target) {
            if (pthread_cond_timedwait(&b->cond, &b->mu, &deadline) == ETIMEDOUT)
                break;
            /* A refresh that started before this request but published after: ask again. */
            if (b->attached && b->gen < target && !b->filling && !b->want) {
                b->want = 1;
                uv_async_send(&b->async);
            }
        }
    }
    if ((f = b->cur) != NULL)
        f->refs++;
    pthread_mutex_unlock(&b->mu);
    if (f != NULL)
        *age_seconds = (double)(uv_hrtime() - f->fill_ns) / 1e9;
    else
        *age_seconds = 0;
    return f;
}

void
metrics_board_release(metrics_board *b, const metrics_figures *f)
{
    if (f == NULL)
        return;
    pthread_mutex_lock(&b->mu);
    unref_locked((metrics_figures *)(uintptr_t)f);
    pthread_mutex_unlock(&b->mu);
}

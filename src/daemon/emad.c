/*
 * emad.c - the daemon's entry point: settings (flags and --config, see
 * settings.h), the state directory lock, the libuv loop with the request
 * server, the HTTP endpoint for operators, systemd notifications, SIGHUP
 * reloads and a clean shutdown on SIGINT/SIGTERM.
 *
 * Exit status: 0 after a clean shutdown with every model durable; 1 when
 * startup fails; 2 for invalid arguments or settings; EXIT_UNWRITTEN when
 * the daemon stopped but some model's last changes are not on disk (a
 * final snapshot failed, or a second signal skipped the writes).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "config.h"
#include "store/ema.h"
#include "base/xmalloc.h"
#include "daemon/authfile.h"
#include "daemon/http.h"
#include "base/log.h"
#include "daemon/metrics.h"
#include "daemon/notify.h"
#include "common/proto.h"
#include "daemon/server.h"
#include "daemon/settings.h"

/* Exit status when the daemon stopped with models whose state is not on disk. */
#define EXIT_UNWRITTEN 3

/* What main() runs, reached from the signal handlers through handle->data. */
typedef struct daemon_ctx {
    uv_loop_t loop;
    settings_args args;
    settings cur; /* effective settings; live ones updated by reloads */
    server *srv;
    metrics_board *board;
    http *http;
    notify *notify;
    uv_signal_t sighup, sigint, sigterm; /* unreferenced: they never keep the loop going */
} daemon_ctx;

/*
 * Create the state directory if needed and take an exclusive lock on
 * DIR/emad.lock for the life of the process. Returns the lock fd or -1.
 */
static int
lock_state_dir(const char *dir)
{
    char path[PATH_MAX];
    struct stat sb;
    int fd;

    if (mkdir(dir, 0750) < 0 && errno != EEXIST) {
        log_error("event=startup_failed error=\"cannot create state dir %s: %s\"", dir,
                  strerror(errno));
        return -1;
    }
    if (snprintf(path, sizeof(path), "%s/emad.lock", dir) >= (int)sizeof(path)) {
        log_error("event=startup_failed error=\"state dir path too long\"");
        return -1;
    }
    /* Never through a symlink, never a FIFO: the lock file is ours, inside the directory. */
    if ((fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0640)) < 0) {
        log_error("event=startup_failed error=\"cannot open %s: %s\"", path,
                  errno == ELOOP ? "a symbolic link (not followed)" : strerror(errno));
        return -1;
    }
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        log_error("event=startup_failed error=\"%s is not a regular file\"", path);
        close(fd);
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        log_error("event=startup_failed error=\"state dir %s is in use by another emad\"", dir);
        close(fd);
        return -1;
    }
    return fd;
}

/* metrics_source: the server's figures (loop thread). */
static metrics_figures *
fill_figures(void *arg)
{
    return server_figures(arg);
}

/* settings_diff callback of a reload: log each change, live or not. */
static void
on_setting_changed(void *arg, const char *key, const char *was, const char *now, int live)
{
    const daemon_ctx *d = arg;

    if (!live)
        log_warn("event=config_not_applied key=%s old=\"%s\" new=\"%s\" "
                 "reason=\"needs a restart\"",
                 key, was, now);
    else if (strcmp(key, "snapshot-interval") == 0 && d->cur.state_dir == NULL)
        log_info("event=config_changed key=%s old=\"%s\" new=\"%s\" note=\"no state-dir: no "
                 "snapshots are written\"",
                 key, was, now);
    else
        log_info("event=config_changed key=%s old=\"%s\" new=\"%s\"", key, was, now);
}

/* Give the HTTP endpoint the stats tokens of the auth file's users (a no-op without HTTP). */
static void
update_tokens(daemon_ctx *d)
{
    const authfile *a = server_auth_users(d->srv);
    unsigned char(*hashes)[AUTH_TOKEN_HASH_BYTES] = NULL;
    size_t n = 0;

    if (d->http == NULL || a == NULL)
        return;
    hashes = xcalloc(a->nusers + 1, sizeof(*hashes));
    for (size_t i = 0; i < a->nusers; i++)
        if (a->users[i].has_token)
            memcpy(hashes[n++], a->users[i].token_hash, AUTH_TOKEN_HASH_BYTES);
    http_set_tokens(d->http, 1, (const unsigned char(*)[AUTH_TOKEN_HASH_BYTES])hashes, n);
    free(hashes);
}

/* SIGHUP: re-read the configuration and apply what can change while running. */
static void
on_sighup(uv_signal_t *h, int signum)
{
    daemon_ctx *d = h->data;
    settings next;
    char *cause = NULL;

    (void)signum;
    if (metrics_board_get_state(d->board) == METRICS_STOPPING) {
        log_info("event=reload_ignored reason=\"shutting down\"");
        return;
    }
    notify_reloading();
    if (settings_build(&next, &d->args, &cause) != 0) {
        log_error("event=reload_failed config=%s error=\"%s\" (settings unchanged)",
                  d->args.config_path != NULL ? d->args.config_path : "-",
                  cause != NULL ? cause : "unknown");
        free(cause);
        cause = NULL;
    } else {
        log_info("event=reload config=%s",
                 d->args.config_path != NULL ? d->args.config_path : "- (no --config)");
        settings_diff(&d->cur, &next, on_setting_changed, d);
        log_set_level(next.log_level);
        server_reconfigure(d->srv, next.txn_timeout_ms, next.snapshot_interval_ms);
        d->cur.auth_session_lifetime_ms = next.auth_session_lifetime_ms;
        d->cur.log_level = next.log_level;
        d->cur.txn_timeout_ms = next.txn_timeout_ms;
        d->cur.snapshot_interval_ms = next.snapshot_interval_ms;
    }
    settings_free(&next);
    /* The auth file is re-read even when the configuration did not change (key rotation). */
    if (server_reload_auth(d->srv, d->cur.auth_session_lifetime_ms, &cause) != 0) {
        log_error("event=auth_reload_failed error=\"%s\" (the previous users stay in force)",
                  cause != NULL ? cause : "unknown");
        free(cause);
        cause = NULL;
    } else {
        update_tokens(d);
    }
    notify_ready("serving");
}

/* SIGINT/SIGTERM, besides the server's own handler: report that we are stopping. */
static void
on_stop_signal(uv_signal_t *h, int signum)
{
    daemon_ctx *d = h->data;

    (void)signum;
    if (metrics_board_get_state(d->board) == METRICS_STOPPING)
        return;
    metrics_board_set_state(d->board, METRICS_STOPPING);
    notify_stopping("shutting down: writing snapshots of changed models");
}

/* Start an unreferenced signal watcher. */
static void
watch_signal(daemon_ctx *d, uv_signal_t *h, uv_signal_cb cb, int signum)
{
    uv_signal_init(&d->loop, h);
    h->data = d;
    uv_signal_start(h, cb, signum);
    uv_unref((uv_handle_t *)h);
}

/* Start the HTTP endpoint if configured. Returns 0, or -1 on a fatal error (logged). */
static int
start_http(daemon_ctx *d)
{
    char *cause = NULL;

    if (d->cur.http == NULL) {
        log_info("event=http_disabled reason=\"http = off\"");
        return 0;
    }
    if (http_create(&d->http, d->cur.http, d->board, &cause) != 0) {
        if (d->cur.http_is_default) {
            /* Only the default address: another emad may hold it; serve without HTTP. */
            log_warn("event=http_disabled error=\"%s\" (set http = HOST:PORT or off)",
                     cause != NULL ? cause : "unknown");
            free(cause);
            return 0;
        }
        log_error("event=startup_failed error=\"%s\"", cause != NULL ? cause : "unknown");
        free(cause);
        return -1;
    }
    log_info("event=http_listening address=%s port=%u paths=/metrics,/healthz,/stats", d->cur.http,
             http_port(d->http));
    return 0;
}

/*
 * Request and reply buffers (messages of up to a few MiB, allocated by
 * nanomsg's I/O thread and freed by the loop) stay in the heap from one
 * push to the next; the heap goes back to the system when the daemon is
 * idle (after idle-release seconds server.c calls malloc_trim). With glibc's
 * defaults a free that leaves more than twice the largest message at the
 * top of a thread's heap gives it back at once: 12 MiB at the end of
 * every push of a 256 MiB model, page-faulted in again by the next push's
 * first chunks. Blocks above MMAP_THRESHOLD_BYTES (large shadows) are
 * still separate mappings, returned when freed.
 */
#define MMAP_THRESHOLD_BYTES (32 << 20)
#define TRIM_THRESHOLD_BYTES INT_MAX

static void
heap_policy(void)
{
    (void)mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
    (void)mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES);
}

/*
 * Raise the soft limit on descriptors to the hard one: every client
 * connection holds a descriptor (nanomsg has no cap on connections), and
 * snapshots and the HTTP endpoint need theirs; the usual soft limit of 1024
 * let idle connections take them all.
 */
static void
raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int
main(int argc, char **argv)
{
    daemon_ctx d;
    server_config cfg;
    metrics_source src;
    char *cause = NULL, status[128];
    int lockfd = -1, rc, exit_code = 1;
    size_t unwritten;

    memset(&d, 0, sizeof(d));
    heap_policy();
    raise_nofile();

    if (settings_parse_args(&d.args, argc, argv, &cause) != 0) {
        fprintf(stderr, "emad: %s\n", cause != NULL ? cause : "bad arguments");
        free(cause);
        if (d.args.usage_error)
            settings_usage(stderr);
        settings_args_free(&d.args);
        return 2;
    }
    if (d.args.help || d.args.version) {
        if (d.args.help)
            settings_usage(stdout);
        else
            printf("emad %s (protocol %d)\n", PACKAGE_VERSION, PROTO_VERSION);
        settings_args_free(&d.args);
        return 0;
    }
    if (settings_build(&d.cur, &d.args, &cause) != 0) {
        fprintf(stderr, "emad: %s\n", cause != NULL ? cause : "invalid settings");
        free(cause);
        settings_free(&d.cur);
        settings_args_free(&d.args);
        return 2;
    }
    if (d.args.print_config) {
        settings_print(&d.cur, stdout);
        settings_free(&d.cur);
        settings_args_free(&d.args);
        return 0;
    }
    log_init_journal();
    log_set_level(d.cur.log_level);
    settings_server(&d.cur, &cfg);

    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN);  /* a reload while snapshots load must not kill us; handled later */
    signal(SIGXFSZ, SIG_IGN); /* a file-size limit fails the write (EFBIG) instead of killing us */
    if (cfg.state_dir != NULL && (lockfd = lock_state_dir(cfg.state_dir)) < 0)
        goto out;
    if (cfg.state_dir == NULL)
        log_warn("event=no_state_dir (state is kept in memory only)");
    /* HTTP first: /healthz answers 503 while snapshots load. */
    metrics_board_create(&d.board);
    if (start_http(&d) < 0)
        goto out;
    if (d.http != NULL && cfg.auth_file != NULL) /* /stats closed until the tokens are known */
        http_set_tokens(d.http, 1, NULL, 0);
    if ((rc = uv_loop_init(&d.loop)) < 0) {
        log_error("event=startup_failed error=\"uv_loop_init: %s\"", uv_strerror(rc));
        goto out;
    }
    if (server_create(&d.srv, &d.loop, &cfg, &cause) < 0) {
        log_error("event=startup_failed error=\"%s\"", cause != NULL ? cause : "unknown");
        free(cause);
        (void)uv_loop_close(&d.loop);
        goto out;
    }
    update_tokens(&d);
    src.fill = fill_figures;
    src.arg = d.srv;
    metrics_board_attach(d.board, &d.loop, &src);
    metrics_board_set_state(d.board, METRICS_SERVING);
    if ((rc = notify_create(&d.notify, &d.loop)) < 0)
        log_warn("event=watchdog_failed error=\"%s\"", uv_strerror(rc));
    watch_signal(&d, &d.sighup, on_sighup, SIGHUP);
    watch_signal(&d, &d.sigint, on_stop_signal, SIGINT);
    watch_signal(&d, &d.sigterm, on_stop_signal, SIGTERM);
    log_info("event=started version=%s protocol=%d max_message_bytes=%llu txn_timeout_ms=%llu "
             "state_dir=%s snapshot_interval_ms=%llu snapshot_keep=%zu kernels=%s http=%s "
             "config=%s pid=%d",
             PACKAGE_VERSION, PROTO_VERSION, (unsigned long long)cfg.max_message_bytes,
             (unsigned long long)cfg.txn_timeout_ms, cfg.state_dir != NULL ? cfg.state_dir : "-",
             (unsigned long long)cfg.snapshot_interval_ms, cfg.snapshot_keep, ema_isa(),
             d.http != NULL ? d.cur.http : "off",
             d.args.config_path != NULL ? d.args.config_path : "-", (int)getpid());
    snprintf(status, sizeof(status), "serving on %s", cfg.listen[0]);
    notify_ready(status);

    uv_run(&d.loop, UV_RUN_DEFAULT);

    /* The server closed its handles; close ours, then let HTTP threads go. */
    metrics_board_set_state(d.board, METRICS_STOPPING);
    metrics_board_detach(d.board);
    notify_close(d.notify);
    uv_close((uv_handle_t *)&d.sighup, NULL);
    uv_close((uv_handle_t *)&d.sigint, NULL);
    uv_close((uv_handle_t *)&d.sigterm, NULL);
    uv_run(&d.loop, UV_RUN_DEFAULT);
    http_destroy(d.http);
    d.http = NULL;
    unwritten = server_unwritten(d.srv);
    server_destroy(d.srv);
    notify_destroy(d.notify);
    rc = uv_loop_close(&d.loop);
    if (rc != 0)
        log_error("event=loop_close_failed error=\"%s\"", uv_strerror(rc));
    else
        exit_code = 0;
    if (unwritten > 0) {
        exit_code = EXIT_UNWRITTEN;
        log_error("event=stopped unwritten=%zu exit_status=%d (the last changes of these models "
                  "are not on disk)",
                  unwritten, exit_code);
    } else {
        log_info("event=stopped");
    }
out:
    http_destroy(d.http);
    metrics_board_destroy(d.board);
    if (lockfd >= 0)
        close(lockfd);
    settings_free(&d.cur);
    settings_args_free(&d.args);
    return exit_code;
}

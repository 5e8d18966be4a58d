/*
 * emad.c - the daemon's entry point: command-line flags, the state
 * directory lock, the libuv loop and a clean shutdown on SIGINT/SIGTERM.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "config.h"
#include "ema.h"
#include "log.h"
#include "proto.h"
#include "server.h"

#define DEFAULT_LISTEN EMAD_DEFAULT_URL

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: emad [options]\n"
            "\n"
            "emad keeps the exponential moving average of model weights pushed by\n"
            "training workers and serves it to evaluation clients (docs/PROTOCOL.md).\n"
            "\n"
            "options:\n"
            "  --listen URL             nanomsg URL to listen on; repeatable\n"
            "                           (default %s; ipc://PATH also works)\n"
            "  --state-dir DIR          directory for the daemon's state (created if\n"
            "                           missing, locked against a second daemon);\n"
            "                           default: none\n"
            "  --max-message-bytes N    largest request accepted, in bytes; K, M, G\n"
            "                           suffixes are KiB, MiB, GiB (default 64M; range\n"
            "                           64K..1G). Larger pushes are sent by clients as\n"
            "                           transactions of chunks.\n"
            "  --txn-timeout SECONDS    discard a transaction, pull session or waiting\n"
            "                           multi-writer step idle this long (default 60;\n"
            "                           fractions allowed)\n"
            "  --snapshot-interval SECONDS\n"
            "                           write a snapshot of every changed model this\n"
            "                           often (default 60; 0: only on request and at\n"
            "                           shutdown). Needs --state-dir.\n"
            "  --snapshot-keep N        snapshots kept per model (default 2)\n"
            "  --require-snapshot       refuse to start unless every model in the state\n"
            "                           directory loads from a snapshot (and one exists)\n"
            "  --log-level LEVEL        error, warn, info or debug (default info)\n"
            "  --version                print the version and exit\n"
            "  --help                   print this help and exit\n"
            "\n"
            "Logs go to stderr. SIGINT or SIGTERM shut the daemon down cleanly, after\n"
            "writing a snapshot of every changed model (a second signal skips that).\n"
            "Exit status: 0 after a clean shutdown, 1 on a startup error, 2 on bad usage.\n",
            DEFAULT_LISTEN);
}

/* Parse a byte count with an optional K/M/G (binary) suffix. */
static int
parse_bytes(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;
    uint64_t mult = 1;

    if (*s == '\0' || *s == '-')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || end == s)
        return -1;
    if (*end == 'K' || *end == 'k')
        mult = 1ULL << 10;
    else if (*end == 'M' || *end == 'm')
        mult = 1ULL << 20;
    else if (*end == 'G' || *end == 'g')
        mult = 1ULL << 30;
    else if (*end != '\0')
        return -1;
    if (mult != 1 && end[1] != '\0')
        return -1;
    if (v > UINT64_MAX / mult)
        return -1;
    *out = v * mult;
    return 0;
}

/* Parse seconds (decimal fractions allowed) into milliseconds. */
static int
parse_seconds(const char *s, uint64_t *ms)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v > 0) || v > 86400.0 * 365)
        return -1;
    *ms = (uint64_t)(v * 1000.0 + 0.5);
    return *ms > 0 ? 0 : -1;
}

/*
 * Create the state directory if needed and take an exclusive lock on
 * DIR/emad.lock for the life of the process. Returns the lock fd or -1.
 */
static int
lock_state_dir(const char *dir)
{
    char path[PATH_MAX];
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
    if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640)) < 0) {
        log_error("event=startup_failed error=\"cannot open %s: %s\"", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        log_error("event=startup_failed error=\"state dir %s is in use by another emad\"", dir);
        close(fd);
        return -1;
    }
    return fd;
}

int
main(int argc, char **argv)
{
    enum {
        OPT_LISTEN = 256,
        OPT_STATE,
        OPT_MAXMSG,
        OPT_TXN,
        OPT_SNAP_INTERVAL,
        OPT_SNAP_KEEP,
        OPT_REQUIRE,
        OPT_LOG,
        OPT_VERSION,
        OPT_HELP
    };
    static const struct option opts[] = {
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"state-dir", required_argument, NULL, OPT_STATE},
        {"max-message-bytes", required_argument, NULL, OPT_MAXMSG},
        {"txn-timeout", required_argument, NULL, OPT_TXN},
        {"snapshot-interval", required_argument, NULL, OPT_SNAP_INTERVAL},
        {"snapshot-keep", required_argument, NULL, OPT_SNAP_KEEP},
        {"require-snapshot", no_argument, NULL, OPT_REQUIRE},
        {"log-level", required_argument, NULL, OPT_LOG},
        {"version", no_argument, NULL, OPT_VERSION},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    server_config cfg;
    uv_loop_t loop;
    server *srv = NULL;
    char *cause = NULL;
    int c, lockfd = -1, rc;

    server_config_init(&cfg);
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case OPT_LISTEN:
            if (cfg.nlisten == SERVER_MAX_LISTEN) {
                fprintf(stderr, "emad: at most %d --listen URLs\n", SERVER_MAX_LISTEN);
                return 2;
            }
            cfg.listen[cfg.nlisten++] = optarg;
            break;
        case OPT_STATE:
            if (optarg[0] == '\0') {
                fprintf(stderr, "emad: --state-dir must not be empty\n");
                return 2;
            }
            cfg.state_dir = optarg;
            break;
        case OPT_MAXMSG:
            if (parse_bytes(optarg, &cfg.max_message_bytes) < 0 ||
                cfg.max_message_bytes < PROTO_MIN_MAX_MESSAGE ||
                cfg.max_message_bytes > PROTO_MAX_MAX_MESSAGE) {
                fprintf(stderr,
                        "emad: --max-message-bytes '%s': expected a size from 64K to 1G "
                        "(bytes, or with a K/M/G suffix)\n",
                        optarg);
                return 2;
            }
            break;
        case OPT_TXN:
            if (parse_seconds(optarg, &cfg.txn_timeout_ms) < 0) {
                fprintf(stderr, "emad: --txn-timeout '%s': expected a positive number of seconds\n",
                        optarg);
                return 2;
            }
            break;
        case OPT_SNAP_INTERVAL:
            if (strcmp(optarg, "0") == 0) {
                cfg.snapshot_interval_ms = 0;
            } else if (parse_seconds(optarg, &cfg.snapshot_interval_ms) < 0) {
                fprintf(stderr,
                        "emad: --snapshot-interval '%s': expected a number of seconds (0: off)\n",
                        optarg);
                return 2;
            }
            break;
        case OPT_SNAP_KEEP: {
            uint64_t keep;
            if (parse_bytes(optarg, &keep) < 0 || keep < 1 || keep > 1000 ||
                strspn(optarg, "0123456789") != strlen(optarg)) {
                fprintf(stderr, "emad: --snapshot-keep '%s': expected a whole number from 1 to 1000\n",
                        optarg);
                return 2;
            }
            cfg.snapshot_keep = (size_t)keep;
            break;
        }
        case OPT_REQUIRE:
            cfg.require_snapshot = 1;
            break;
        case OPT_LOG:
            if (log_set_level_name(optarg) < 0) {
                fprintf(stderr, "emad: --log-level '%s': expected error, warn, info or debug\n",
                        optarg);
                return 2;
            }
            break;
        case OPT_VERSION:
            printf("emad %s (protocol %d)\n", PACKAGE_VERSION, PROTO_VERSION);
            return 0;
        case OPT_HELP:
            usage(stdout);
            return 0;
        default:
            if (optopt != 0)
                fprintf(stderr, "emad: option '%s' needs an argument\n", argv[optind - 1]);
            else
                fprintf(stderr, "emad: unknown option '%s'\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "emad: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (cfg.nlisten == 0)
        cfg.listen[cfg.nlisten++] = DEFAULT_LISTEN;

    if (cfg.require_snapshot && cfg.state_dir == NULL) {
        fprintf(stderr, "emad: --require-snapshot needs --state-dir\n");
        return 2;
    }
    log_init_journal();
    signal(SIGPIPE, SIG_IGN);
    signal(SIGXFSZ, SIG_IGN); /* a file-size limit fails the write (EFBIG) instead of killing us */
    if (cfg.state_dir != NULL && (lockfd = lock_state_dir(cfg.state_dir)) < 0)
        return 1;
    if (cfg.state_dir == NULL)
        log_warn("event=no_state_dir (state is kept in memory only)");
    if ((rc = uv_loop_init(&loop)) < 0) {
        log_error("event=startup_failed error=\"uv_loop_init: %s\"", uv_strerror(rc));
        return 1;
    }
    if (server_create(&srv, &loop, &cfg, &cause) < 0) {
        log_error("event=startup_failed error=\"%s\"", cause != NULL ? cause : "unknown");
        free(cause);
        (void)uv_loop_close(&loop);
        return 1;
    }
    log_info("event=started version=%s protocol=%d max_message_bytes=%llu txn_timeout_ms=%llu "
             "state_dir=%s snapshot_interval_ms=%llu snapshot_keep=%zu kernels=%s pid=%d",
             PACKAGE_VERSION, PROTO_VERSION, (unsigned long long)cfg.max_message_bytes,
             (unsigned long long)cfg.txn_timeout_ms, cfg.state_dir != NULL ? cfg.state_dir : "-",
             (unsigned long long)cfg.snapshot_interval_ms, cfg.snapshot_keep, ema_isa(),
             (int)getpid());

    uv_run(&loop, UV_RUN_DEFAULT);

    server_destroy(srv);
    rc = uv_loop_close(&loop);
    if (rc != 0)
        log_error("event=loop_close_failed error=\"%s\"", uv_strerror(rc));
    if (lockfd >= 0)
        close(lockfd);
    log_info("event=stopped");
    return rc == 0 ? 0 : 1;
}

/*
 * bench_pushpull.c - throughput of emad push and pull, against raw nanomsg.
 *
 * The benchmark starts its own emad (fork/exec of --emad PATH on a free
 * 127.0.0.1 port, --max-message-bytes 67108864, a temporary --state-dir)
 * and a raw nanomsg REP server thread on another free port. Each repetition
 * then moves the same model bytes four ways over TCP loopback:
 *
 *   raw push   REQ sends the model in chunk-sized messages; REP acks each.
 *   emad push  emad_push() of the model at a new step: a transaction of
 *              chunks that the daemon stages and, on commit, averages into
 *              the shadows (shadow -= (1 - d) * (shadow - param)).
 *   raw pull   REQ asks for chunk-sized pieces; REP replies with each.
 *   emad pull  emad_pull_into() into preallocated buffers.
 *
 * The raw runs use the chunk sizes libemad uses, copy the data once on each
 * side as libemad and the daemon do, and set the same socket options, so the
 * ratio emad/raw is the cost of emad's protocol, staging and averaging.
 * Results: medians over --reps repetitions (after one untimed warm-up), in
 * GB/s (10^9 bytes per second). --sweep adds raw nanomsg throughput for
 * message sizes from 1 to 64 MiB. The daemon is stopped with SIGTERM at the
 * end and its temporary directory removed.
 *
 * Everything runs in one process tree: the daemon is forked before any
 * nanomsg socket exists (nanomsg is not fork-safe).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <nanomsg/nn.h>
#include <nanomsg/reqrep.h>
#include <nanomsg/tcp.h>

#include "emad.h"

#define MIB (1024ULL * 1024ULL)
#define NTENSORS 4
#define MAX_REPS 100
#define MODEL_NAME "bench"
#define DAEMON_MAX_MESSAGE "67108864"

/* Raw protocol: a 16-byte header (op, then the requested length at byte 8), then data. */
#define RAW_HDR 16
enum { RAW_PUSH = 'P', RAW_PULL = 'G', RAW_QUIT = 'Q' };
#define RAW_SP_SLACK 64
#define SWEEP_MAX_CHUNK (64 * MIB)

/* The emad daemon under test. */
typedef struct bench_daemon {
    pid_t pid;
    char dir[64];        /* temporary directory: state dir and log */
    char state[128];     /* dir/state */
    char log[128];       /* dir/emad.log: the daemon's stdout and stderr */
    char url[64];        /* tcp://127.0.0.1:PORT */
    char path[PATH_MAX]; /* the emad binary */
} bench_daemon;

/* The raw nanomsg REP server, run on its own thread. */
typedef struct raw_server {
    int sock;
    size_t max_reply;    /* largest pull piece served */
    const char *payload; /* max_reply bytes replied to pulls (borrowed) */
    int failed;          /* set by the thread on an unexpected error */
    pthread_t thread;
} raw_server;

/* One measured operation: seconds per repetition. */
typedef struct bench_series {
    const char *label;
    double sec[MAX_REPS];
    int n;
} bench_series;

/* Monotonic time in seconds. */
static double
now_sec(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Sleep for ms milliseconds. */
static void
sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    (void)nanosleep(&ts, NULL);
}

/* A TCP port on 127.0.0.1 that was free a moment ago, or -1. */
static int
free_port(void)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int fd, port = -1;

    if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

/* nftw callback: remove one entry (children come first with FTW_DEPTH). */
static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Print a file to stderr (the daemon's log after a failure). */
static void
dump_file(const char *path)
{
    char buf[4096];
    size_t n;
    FILE *f = fopen(path, "r");

    if (f == NULL)
        return;
    fprintf(stderr, "--- %s ---\n", path);
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
        (void)fwrite(buf, 1, n, stderr);
    fprintf(stderr, "--- end ---\n");
    fclose(f);
}

/*
 * Fork and exec the daemon on a free port with a private state dir.
 * Returns 0 with d->pid set, or -1 (message printed).
 */
static int
daemon_start(bench_daemon *d)
{
    int port, fd;

    strcpy(d->dir, "/tmp/emad-bench.XXXXXX");
    if (mkdtemp(d->dir) == NULL) {
        perror("bench: mkdtemp");
        return -1;
    }
    (void)snprintf(d->state, sizeof(d->state), "%s/state", d->dir);
    (void)snprintf(d->log, sizeof(d->log), "%s/emad.log", d->dir);
    if ((port = free_port()) < 0) {
        perror("bench: no free port");
        return -1;
    }
    (void)snprintf(d->url, sizeof(d->url), "tcp://127.0.0.1:%d", port);

    fflush(NULL);
    d->pid = fork();
    if (d->pid < 0) {
        perror("bench: fork");
        return -1;
    }
    if (d->pid == 0) {
        fd = open(d->log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            (void)dup2(fd, STDOUT_FILENO);
            (void)dup2(fd, STDERR_FILENO);
            close(fd);
        }
        execl(d->path, d->path, "--listen", d->url, "--state-dir", d->state, "--max-message-bytes",
              DAEMON_MAX_MESSAGE, (char *)NULL);
        fprintf(stderr, "bench: exec %s: %s\n", d->path, strerror(errno));
        _exit(127);
    }
    return 0;
}

/*
 * Connect a client to the daemon, retrying until it answers (10 s at most).
 * Returns 0 with *out set, or -1 (message and daemon log printed).
 */
static int
daemon_connect(bench_daemon *d, const emad_options *base, emad_client **out)
{
    emad_options opts = *base;
    double deadline = now_sec() + 10.0;
    int rc = 0, status;

    opts.connect_timeout_ms = 200;
    while (now_sec() < deadline) {
        if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
            fprintf(stderr, "bench: emad exited during startup (status 0x%x)\n", status);
            d->pid = -1;
            dump_file(d->log);
            return -1;
        }
        if ((rc = emad_connect(out, d->url, &opts)) == 0)
            return 0;
        sleep_ms(50);
    }
    fprintf(stderr, "bench: emad at %s did not answer within 10 s: %s\n", d->url,
            emad_strerror(rc));
    dump_file(d->log);
    return -1;
}

/*
 * Stop the daemon with SIGTERM (SIGKILL after 10 s), reap it and remove its
 * temporary directory. Returns 0 after a clean exit, -1 otherwise.
 */
static int
daemon_stop(bench_daemon *d)
{
    double deadline;
    int status = 0, rc = -1;

    if (d->pid > 0) {
        (void)kill(d->pid, SIGTERM);
        deadline = now_sec() + 10.0;
        while (waitpid(d->pid, &status, WNOHANG) == 0) {
            if (now_sec() > deadline) {
                fprintf(stderr, "bench: emad ignored SIGTERM for 10 s; killing it\n");
                (void)kill(d->pid, SIGKILL);
                (void)waitpid(d->pid, &status, 0);
                break;
            }
            sleep_ms(10);
        }
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
            rc = 0;
        else
            fprintf(stderr, "bench: emad did not exit cleanly (status 0x%x)\n", status);
        if (rc != 0)
            dump_file(d->log);
        d->pid = -1;
    }
    if (d->dir[0] != '\0')
        (void)nftw(d->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}

/*
 * Apply the socket options the daemon and libemad use for big messages.
 * NN_RCVMAXSIZE counts the SP header too (4 bytes of request id on REQ/REP),
 * so a message of exactly max_recv bytes needs a little slack.
 */
static int
raw_socket_setup(int s, size_t max_recv)
{
    int maxsz = (int)max_recv + RAW_SP_SLACK, one = 1, resend = 3600 * 1000, timeout = 60 * 1000;

    if (nn_setsockopt(s, NN_SOL_SOCKET, NN_RCVMAXSIZE, &maxsz, sizeof(maxsz)) < 0 ||
        nn_setsockopt(s, NN_TCP, NN_TCP_NODELAY, &one, sizeof(one)) < 0)
        return -1;
    if (nn_setsockopt(s, NN_SOL_SOCKET, NN_SNDTIMEO, &timeout, sizeof(timeout)) < 0 ||
        nn_setsockopt(s, NN_SOL_SOCKET, NN_RCVTIMEO, &timeout, sizeof(timeout)) < 0)
        return -1;
    (void)nn_setsockopt(s, NN_REQ, NN_REQ_RESEND_IVL, &resend, sizeof(resend));
    return 0;
}

/* Read the u64 stored little-endian at p. */
static uint64_t
get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    int i;

    for (i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* Fill a raw header: op, then len little-endian at byte 8. */
static void
put_header(unsigned char *p, int op, uint64_t len)
{
    int i;

    memset(p, 0, RAW_HDR);
    p[0] = (unsigned char)op;
    for (i = 0; i < 8; i++)
        p[8 + i] = (unsigned char)(len >> (8 * i));
}

/*
 * The raw server thread: answers pushes with a 16-byte ack and pulls with
 * the requested number of payload bytes, copied into a fresh nn_allocmsg
 * buffer (as the daemon packs its replies), until a quit request.
 */
static void *
raw_server_main(void *arg)
{
    raw_server *rs = arg;
    unsigned char ack[RAW_HDR];
    void *msg, *reply;
    uint64_t len;
    int n, op;

    for (;;) {
        if ((n = nn_recv(rs->sock, &msg, NN_MSG, 0)) < 0) {
            if (nn_errno() == ETIMEDOUT || nn_errno() == EAGAIN)
                continue;
            if (nn_errno() != ETERM && nn_errno() != EBADF) {
                fprintf(stderr, "bench: raw server recv: %s\n", nn_strerror(nn_errno()));
                rs->failed = 1;
            }
            return NULL;
        }
        op = n >= RAW_HDR ? ((unsigned char *)msg)[0] : 0;
        len = n >= RAW_HDR ? get_u64((unsigned char *)msg + 8) : 0;
        nn_freemsg(msg);
        if (op == RAW_PULL && len <= rs->max_reply) {
            if ((reply = nn_allocmsg(len, 0)) == NULL) {
                rs->failed = 1;
                return NULL;
            }
            memcpy(reply, rs->payload, len);
            if (nn_send(rs->sock, &reply, NN_MSG, 0) < 0) {
                nn_freemsg(reply);
                rs->failed = 1;
                return NULL;
            }
            continue;
        }
        put_header(ack, op, 0);
        if (nn_send(rs->sock, ack, sizeof(ack), 0) < 0 || op == RAW_QUIT) {
            if (op != RAW_QUIT)
                rs->failed = 1;
            return NULL;
        }
    }
}

/* One raw request: send a header plus len bytes of data (may be NULL), get the reply. */
static int
raw_request(int s, int op, const void *data, uint64_t data_len, uint64_t want, void **reply,
            int *reply_len)
{
    unsigned char *msg;

    if ((msg = nn_allocmsg(RAW_HDR + data_len, 0)) == NULL)
        return -1;
    put_header(msg, op, want);
    if (data_len > 0)
        memcpy(msg + RAW_HDR, data, data_len);
    if (nn_send(s, &msg, NN_MSG, 0) < 0) {
        nn_freemsg(msg);
        return -1;
    }
    if ((*reply_len = nn_recv(s, reply, NN_MSG, 0)) < 0)
        return -1;
    return 0;
}

/* Raw push: the total bytes at src in chunk-sized messages, each acked. */
static int
raw_push(int s, const char *src, uint64_t total, uint64_t chunk)
{
    uint64_t off, n;
    void *reply;
    int len;

    for (off = 0; off < total; off += n) {
        n = total - off < chunk ? total - off : chunk;
        if (raw_request(s, RAW_PUSH, src + off, n, 0, &reply, &len) < 0)
            return -1;
        nn_freemsg(reply);
    }
    return 0;
}

/* Raw pull: total bytes into dst in chunk-sized replies, each copied into place. */
static int
raw_pull(int s, char *dst, uint64_t total, uint64_t chunk)
{
    uint64_t off, n;
    void *reply;
    int len;

    for (off = 0; off < total; off += n) {
        n = total - off < chunk ? total - off : chunk;
        if (raw_request(s, RAW_PULL, NULL, 0, n, &reply, &len) < 0)
            return -1;
        if ((uint64_t)len != n) {
            nn_freemsg(reply);
            errno = EPROTO;
            return -1;
        }
        memcpy(dst + off, reply, n);
        nn_freemsg(reply);
    }
    return 0;
}

/* Compare doubles for qsort. */
static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* Median of the series' times, in seconds. */
static double
series_median(const bench_series *s)
{
    double v[MAX_REPS];

    memcpy(v, s->sec, sizeof(double) * (size_t)s->n);
    qsort(v, (size_t)s->n, sizeof(double), cmp_double);
    return s->n % 2 ? v[s->n / 2] : (v[s->n / 2 - 1] + v[s->n / 2]) / 2;
}

/* Fastest and slowest times of the series. */
static void
series_minmax(const bench_series *s, double *lo, double *hi)
{
    int i;

    *lo = *hi = s->sec[0];
    for (i = 1; i < s->n; i++) {
        if (s->sec[i] < *lo)
            *lo = s->sec[i];
        if (s->sec[i] > *hi)
            *hi = s->sec[i];
    }
}

/* One table row: median, best and worst throughput for bytes per repetition. */
static void
print_row(const bench_series *s, uint64_t bytes)
{
    double med = series_median(s), lo, hi;

    series_minmax(s, &lo, &hi);
    printf("  %-28s %9.2f %9.2f %9.2f %10.1f\n", s->label, (double)bytes / med / 1e9,
           (double)bytes / hi / 1e9, (double)bytes / lo / 1e9, med * 1e3);
}

/*
 * Raw nanomsg push and pull throughput for chunk sizes from 1 MiB to
 * SWEEP_MAX_CHUNK: how the message size alone changes the transport's speed.
 */
static int
raw_sweep(int s, const char *src, char *dst, uint64_t total, long reps)
{
    bench_series push = {"push", {0}, 0}, pull = {"pull", {0}, 0};
    uint64_t chunk;
    double t0;
    long r;

    printf("\n  raw nanomsg by message size (median GB/s of %ld reps)\n", reps);
    printf("  %10s %9s %9s\n", "chunk MiB", "push", "pull");
    for (chunk = MIB; chunk <= SWEEP_MAX_CHUNK && chunk <= total; chunk *= 2) {
        push.n = pull.n = 0;
        for (r = 0; r <= reps; r++) {
            t0 = now_sec();
            if (raw_push(s, src, total, chunk) < 0)
                goto fail;
            if (r > 0)
                push.sec[push.n++] = now_sec() - t0;
            t0 = now_sec();
            if (raw_pull(s, dst, total, chunk) < 0)
                goto fail;
            if (r > 0)
                pull.sec[pull.n++] = now_sec() - t0;
        }
        printf("  %10llu %9.2f %9.2f\n", (unsigned long long)(chunk / MIB),
               (double)total / series_median(&push) / 1e9,
               (double)total / series_median(&pull) / 1e9);
    }
    return 0;
fail:
    fprintf(stderr, "bench: raw sweep at %llu MiB: %s\n", (unsigned long long)(chunk / MIB),
            nn_strerror(nn_errno()));
    return -1;
}

/* Print the command-line help to f. */
static void
usage(FILE *f)
{
    fprintf(f, "usage: bench_pushpull [--emad PATH] [--mib N] [--reps N] [--sweep]\n"
               "\n"
               "Starts emad (PATH, default ./emad) on a free 127.0.0.1 port and measures\n"
               "push and pull of an N MiB float32 model (default 256, as 4 tensors)\n"
               "against raw nanomsg REQ/REP carrying the same bytes; prints the median\n"
               "of --reps repetitions (default 5). --sweep adds raw nanomsg throughput\n"
               "for message sizes from 1 to 64 MiB.\n");
}

/* Parse a positive integer option no larger than max; -1 if invalid. */
static long
parse_count(const char *s, long max)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 1 || v > max)
        return -1;
    return v;
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"emad", required_argument, NULL, 'e'}, {"mib", required_argument, NULL, 'm'},
        {"reps", required_argument, NULL, 'r'}, {"sweep", no_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},       {NULL, 0, NULL, 0},
    };
    bench_daemon d;
    raw_server rs;
    emad_options opts;
    emad_client *c = NULL;
    emad_tensor tensors[NTENSORS], into[NTENSORS];
    emad_push_result res;
    bench_series raw_push_s = {"raw nanomsg push", {0}, 0};
    bench_series emad_push_s = {"emad push + apply", {0}, 0};
    bench_series raw_pull_s = {"raw nanomsg pull", {0}, 0};
    bench_series emad_pull_s = {"emad pull_into", {0}, 0};
    char names[NTENSORS][32], raw_url[64];
    char *model = NULL, *dst = NULL;
    uint64_t total, tbytes, numel, push_chunk, pull_chunk, step = 1, pulled_step;
    uint32_t messages = 0;
    long mib = 256, reps = 5;
    int sweep = 0;
    int opt, rc, raw_port, raw_cli = -1, server_started = 0, status = 1, i, r;
    double t0;
    size_t k;

    memset(&d, 0, sizeof(d));
    memset(&rs, 0, sizeof(rs));
    rs.sock = -1;
    d.pid = -1;
    (void)snprintf(d.path, sizeof(d.path), "./emad");
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'e':
            (void)snprintf(d.path, sizeof(d.path), "%s", optarg);
            break;
        case 'm':
            if ((mib = parse_count(optarg, 4096)) < 0) {
                fprintf(stderr, "bench: --mib: expected 1..4096\n");
                return 2;
            }
            break;
        case 'r':
            if ((reps = parse_count(optarg, MAX_REPS)) < 0) {
                fprintf(stderr, "bench: --reps: expected 1..%d\n", MAX_REPS);
                return 2;
            }
            break;
        case 's':
            sweep = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc || access(d.path, X_OK) != 0) {
        if (optind == argc)
            fprintf(stderr, "bench: %s is not an executable emad (use --emad PATH)\n", d.path);
        usage(stderr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    /* The model: NTENSORS float32 tensors of mib/NTENSORS MiB each. */
    total = (uint64_t)mib * MIB;
    tbytes = total / NTENSORS;
    numel = tbytes / sizeof(float);
    if ((model = malloc(total)) == NULL || (dst = malloc(total)) == NULL) {
        fprintf(stderr, "bench: out of memory for two %ld MiB buffers\n", mib);
        goto out;
    }
    for (k = 0; k < total / sizeof(float); k++) {
        float v = (float)(k % 2000) * 0.001f - 1.0f;
        memcpy(model + k * sizeof(float), &v, sizeof(v));
    }
    memset(dst, 0, total);
    for (i = 0; i < NTENSORS; i++) {
        (void)snprintf(names[i], sizeof(names[i]), "layer%d.weight", i);
        memset(&tensors[i], 0, sizeof(tensors[i]));
        tensors[i].name = names[i];
        tensors[i].kind = EMAD_PARAM;
        tensors[i].dtype = EMAD_F32;
        if (numel % 1024 == 0) {
            tensors[i].ndim = 2;
            tensors[i].shape[0] = numel / 1024;
            tensors[i].shape[1] = 1024;
        } else {
            tensors[i].ndim = 1;
            tensors[i].shape[0] = numel;
        }
        tensors[i].data = model + (size_t)i * tbytes;
        tensors[i].nbytes = tbytes;
    }

    /* The daemon first: nanomsg sockets must not exist across fork(). */
    if (daemon_start(&d) < 0)
        goto out;
    emad_options_init(&opts);
    if (daemon_connect(&d, &opts, &c) < 0)
        goto out;

    /* The message sizes libemad uses: requests of at most chunk_bytes,
     * replies of at most max_reply_bytes, both capped by the daemon's limit
     * less the room libemad keeps for nanomsg's SP header. */
    push_chunk = opts.chunk_bytes;
    if (emad_server_max_message_bytes(c) - RAW_SP_SLACK < push_chunk)
        push_chunk = emad_server_max_message_bytes(c) - RAW_SP_SLACK;
    pull_chunk = opts.max_reply_bytes;
    if (emad_server_max_message_bytes(c) < pull_chunk)
        pull_chunk = emad_server_max_message_bytes(c);
    pull_chunk -= RAW_SP_SLACK;
    if (pull_chunk > (16u << 20))
        pull_chunk = 16u << 20; /* libemad reads pull sessions 16 MiB at a time */

    /* The raw REP server thread and the REQ socket that talks to it. */
    if ((raw_port = free_port()) < 0) {
        perror("bench: no free port");
        goto out;
    }
    (void)snprintf(raw_url, sizeof(raw_url), "tcp://127.0.0.1:%d", raw_port);
    rs.max_reply = SWEEP_MAX_CHUNK > pull_chunk ? SWEEP_MAX_CHUNK : pull_chunk;
    rs.payload = model;
    if ((rs.sock = nn_socket(AF_SP, NN_REP)) < 0 ||
        raw_socket_setup(rs.sock,
                         RAW_HDR + (push_chunk > rs.max_reply ? push_chunk : rs.max_reply)) < 0 ||
        nn_bind(rs.sock, raw_url) < 0 || (raw_cli = nn_socket(AF_SP, NN_REQ)) < 0 ||
        raw_socket_setup(raw_cli, rs.max_reply) < 0 || nn_connect(raw_cli, raw_url) < 0) {
        fprintf(stderr, "bench: raw nanomsg setup on %s: %s\n", raw_url, nn_strerror(nn_errno()));
        goto out;
    }
    if ((errno = pthread_create(&rs.thread, NULL, raw_server_main, &rs)) != 0) {
        perror("bench: pthread_create");
        goto out;
    }
    server_started = 1;

    if ((rc = emad_create(c, MODEL_NAME, EMAD_DEFAULT_DECAY, 1)) < 0) {
        fprintf(stderr, "bench: create: %s (%s)\n", emad_strerror(rc), emad_last_error(c));
        goto out;
    }

    printf("emad bench_pushpull: %ld MiB float32 model (%d tensors of %.1f MiB), %ld reps + 1 "
           "warm-up\n",
           mib, NTENSORS, (double)tbytes / (double)MIB, reps);
    printf("daemon: %s --max-message-bytes %s on %s (pid %d)\n", d.path, DAEMON_MAX_MESSAGE, d.url,
           (int)d.pid);
    printf("chunks: push %.1f MiB, pull %.1f MiB (libemad defaults, capped by the daemon's "
           "limit); raw nanomsg on %s uses the same\n",
           (double)push_chunk / (double)MIB, (double)pull_chunk / (double)MIB, raw_url);
    fflush(stdout);

    /* Repetition 0 is the warm-up (the first emad push allocates the shadows). */
    for (r = 0; r <= reps; r++) {
        t0 = now_sec();
        if (raw_push(raw_cli, model, total, push_chunk) < 0) {
            fprintf(stderr, "bench: raw push: %s\n", nn_strerror(nn_errno()));
            goto out;
        }
        if (r > 0)
            raw_push_s.sec[raw_push_s.n++] = now_sec() - t0;

        t0 = now_sec();
        if ((rc = emad_push(c, MODEL_NAME, step, tensors, NTENSORS, &res)) < 0) {
            fprintf(stderr, "bench: emad push at step %llu: %s (%s)\n", (unsigned long long)step,
                    emad_strerror(rc), emad_last_error(c));
            goto out;
        }
        if (r > 0)
            emad_push_s.sec[emad_push_s.n++] = now_sec() - t0;
        if (res.applied != NTENSORS || res.stale != 0 || res.step != step) {
            fprintf(stderr, "bench: push at step %llu: applied %llu stale %llu step %llu\n",
                    (unsigned long long)step, (unsigned long long)res.applied,
                    (unsigned long long)res.stale, (unsigned long long)res.step);
            goto out;
        }
        messages = res.messages;
        step++;

        t0 = now_sec();
        if (raw_pull(raw_cli, dst, total, pull_chunk) < 0) {
            fprintf(stderr, "bench: raw pull: %s\n", nn_strerror(nn_errno()));
            goto out;
        }
        if (r > 0)
            raw_pull_s.sec[raw_pull_s.n++] = now_sec() - t0;
        memset(dst, 0, total);

        for (i = 0; i < NTENSORS; i++) {
            memset(&into[i], 0, sizeof(into[i]));
            into[i].name = names[i];
            into[i].data = dst + (size_t)i * tbytes;
            into[i].nbytes = tbytes;
        }
        t0 = now_sec();
        if ((rc = emad_pull_into(c, MODEL_NAME, into, NTENSORS, &pulled_step)) < 0) {
            fprintf(stderr, "bench: emad pull: %s (%s)\n", emad_strerror(rc), emad_last_error(c));
            goto out;
        }
        if (r > 0)
            emad_pull_s.sec[emad_pull_s.n++] = now_sec() - t0;

        /* Every push carries the same values, so the average equals them exactly. */
        for (i = 0; i < NTENSORS; i++) {
            if (into[i].nbytes != tbytes || into[i].dtype != EMAD_F32) {
                fprintf(stderr, "bench: pulled %s: %llu bytes of dtype %d\n", names[i],
                        (unsigned long long)into[i].nbytes, into[i].dtype);
                goto out;
            }
        }
        if (pulled_step != step - 1 || memcmp(dst, model, total) != 0) {
            fprintf(stderr, "bench: pulled model (step %llu) differs from the pushed one\n",
                    (unsigned long long)pulled_step);
            goto out;
        }
    }

    printf("\n  %-28s %9s %9s %9s %10s\n", "(GB/s = 1e9 bytes/s)", "median", "worst", "best",
           "median ms");
    print_row(&raw_push_s, total);
    print_row(&emad_push_s, total);
    print_row(&raw_pull_s, total);
    print_row(&emad_pull_s, total);
    printf("\n  emad push / raw push: %.2f   ",
           series_median(&raw_push_s) / series_median(&emad_push_s));
    if (messages > 1)
        printf("(each emad push: begin, chunks, commit = %u messages)\n", messages);
    else
        printf("(each emad push: one message)\n");
    printf("  emad pull / raw pull: %.2f   (pulled data verified equal to the pushed model)\n",
           series_median(&raw_pull_s) / series_median(&emad_pull_s));
    if (sweep && raw_sweep(raw_cli, model, dst, total, reps) < 0)
        goto out;
    status = 0;

out:
    emad_close(c);
    if (server_started) {
        void *reply;
        int len;

        if (raw_request(raw_cli, RAW_QUIT, NULL, 0, 0, &reply, &len) == 0)
            nn_freemsg(reply);
        else
            nn_term(); /* unblocks the server thread */
        (void)pthread_join(rs.thread, NULL);
        if (rs.failed)
            status = 1;
    }
    if (raw_cli >= 0)
        (void)nn_close(raw_cli);
    if (rs.sock >= 0)
        (void)nn_close(rs.sock);
    if (daemon_stop(&d) < 0)
        status = 1;
    else if (status == 0)
        printf("  daemon stopped cleanly (SIGTERM)\n");
    free(model);
    free(dst);
    return status;
}

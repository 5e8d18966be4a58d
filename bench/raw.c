/*
 * raw.c - raw nanomsg REQ/REP carrying model bytes (the transport baseline).
 *
 * Each request is a 24-byte header (op; length at byte 8; offset at byte
 * 16, little-endian) followed, for a push or a load, by the data. The REP
 * side acks a push with a bare header and answers a pull with the
 * requested bytes of its served data, copied into a fresh nn_allocmsg
 * buffer (as the daemon packs its replies); the client packs each push into
 * an nn_allocmsg buffer and copies each pull reply into place (as libemad
 * does). So both sides copy the data once, and what is left out next to
 * emad is its protocol, staging and averaging.
 *
 * The REP side (raw_rep) owns a copy of the served bytes, filled by load
 * requests, and answers requests on one or more sockets from one loop
 * (nn_poll). It runs in the raw server process, which is this program
 * started again with RAW_SERVER_ARG, the deployment emad has (the trainer
 * and the daemon are separate processes), or in a thread of the benchmark,
 * a reference that switches between threads rather than processes.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "raw.h"
#include "proc.h"
#include "common/proto.h"
#include "emad.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nanomsg/nn.h>
#include <nanomsg/reqrep.h>
#include <nanomsg/tcp.h>

#define RAW_HDR 24
#define RAW_SP_SLACK 64 /* NN_RCVMAXSIZE counts the SP header (a 4-byte request id) */
#define RAW_TIMEOUT_MS (60 * 1000)
#define RAW_PING_MS 200    /* send and receive timeouts while waiting for a server */
#define RAW_READY_SEC 10.0 /* how long raw_connect() waits for an answer */
#define RAW_POLL_MS 100    /* how often the REP loop checks its stop flag */
#define RAW_URL_MAX 64

/* Operations; the REP side answers a bad request (or a failed load) with RAW_BAD. */
enum { RAW_PUSH = 'P', RAW_PULL = 'G', RAW_LOAD = 'L', RAW_PING = 'I', RAW_BAD = 'E' };

/* The REP side: its sockets and the bytes it serves. */
typedef struct raw_rep {
    int sock[RAW_BUFS_COUNT]; /* by buffer setting; -1 where there is no endpoint */
    uint64_t max_chunk;       /* largest data part of a message */
    char *data;               /* the served bytes (owned), filled by load requests */
    uint64_t len;
    atomic_int stop; /* set to end rep_serve() (the thread) */
} raw_rep;

struct raw_server {
    uint64_t max_chunk;
    char url[RAW_BUFS_COUNT][RAW_URL_MAX]; /* "" where there is no endpoint */
    proc proc;                             /* the server process; pid -1 for a thread */
    raw_rep *rep;                          /* the thread's REP side; NULL for a process */
    pthread_t thread;
    int thread_started;
    int failed; /* set by the thread on an error */
};

struct raw_link {
    int req;
};

/* Set the send and receive timeouts of socket s to ms. Returns 0 or -1 (nn_errno()). */
static int
set_timeouts(int s, int ms)
{
    if (nn_setsockopt(s, NN_SOL_SOCKET, NN_SNDTIMEO, &ms, sizeof(ms)) < 0 ||
        nn_setsockopt(s, NN_SOL_SOCKET, NN_RCVTIMEO, &ms, sizeof(ms)) < 0)
        return -1;
    return 0;
}

/*
 * Apply the socket options the daemon and libemad use for big messages:
 * NN_RCVMAXSIZE with room for the SP header, NN_TCP_NODELAY, 60 s
 * timeouts and no REQ resend; and with RAW_BUFS_EMAD their socket buffers.
 * Returns 0 or -1 (nn_errno()).
 */
static int
socket_setup(int s, uint64_t max_recv, int bufs)
{
    int maxsz = (int)max_recv + RAW_SP_SLACK, one = 1, resend = 3600 * 1000;
    int sockbuf = PROTO_SOCKET_BUFFER_BYTES;

    if (nn_setsockopt(s, NN_SOL_SOCKET, NN_RCVMAXSIZE, &maxsz, sizeof(maxsz)) < 0 ||
        nn_setsockopt(s, NN_TCP, NN_TCP_NODELAY, &one, sizeof(one)) < 0 ||
        set_timeouts(s, RAW_TIMEOUT_MS) < 0)
        return -1;
    if (bufs == RAW_BUFS_EMAD &&
        (nn_setsockopt(s, NN_SOL_SOCKET, NN_SNDBUF, &sockbuf, sizeof(sockbuf)) < 0 ||
         nn_setsockopt(s, NN_SOL_SOCKET, NN_RCVBUF, &sockbuf, sizeof(sockbuf)) < 0))
        return -1;
    (void)nn_setsockopt(s, NN_REQ, NN_REQ_RESEND_IVL, &resend, sizeof(resend)); /* REQ only */
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

/* Store v little-endian at p. */
static void
put_u64(unsigned char *p, uint64_t v)
{
    int i;

    for (i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* Fill a header: op, len, off. */
static void
put_header(unsigned char *p, int op, uint64_t len, uint64_t off)
{
    memset(p, 0, RAW_HDR);
    p[0] = (unsigned char)op;
    put_u64(p + 8, len);
    put_u64(p + 16, off);
}

/*
 * Open r's REP sockets, one bound to each url[bufs] that is not NULL (an
 * array of RAW_BUFS_COUNT, borrowed), for messages of up to max_chunk bytes
 * of data. Returns 0, or -1 (message printed; rep_close() cleans up).
 */
static int
rep_open(raw_rep *r, uint64_t max_chunk, const char *const *url)
{
    int b;

    memset(r, 0, sizeof(*r));
    r->max_chunk = max_chunk;
    for (b = 0; b < RAW_BUFS_COUNT; b++)
        r->sock[b] = -1;
    for (b = 0; b < RAW_BUFS_COUNT; b++) {
        if (url[b] == NULL)
            continue;
        if ((r->sock[b] = nn_socket(AF_SP, NN_REP)) < 0 ||
            socket_setup(r->sock[b], RAW_HDR + max_chunk, b) < 0 ||
            nn_bind(r->sock[b], url[b]) < 0) {
            fprintf(stderr, "bench: raw REP socket on %s: %s\n", url[b], nn_strerror(nn_errno()));
            return -1;
        }
    }
    return 0;
}

/* Close r's sockets and free its served bytes. */
static void
rep_close(raw_rep *r)
{
    int b;

    for (b = 0; b < RAW_BUFS_COUNT; b++)
        if (r->sock[b] >= 0)
            (void)nn_close(r->sock[b]);
    free(r->data);
    r->data = NULL;
    r->len = 0;
}

/*
 * Store n bytes at data at offset off of the served bytes, which are
 * resized (and their old content dropped) to total first if their size
 * differs. Returns 0, or -1 if out of memory or out of bounds.
 */
static int
rep_load(raw_rep *r, uint64_t total, uint64_t off, const void *data, uint64_t n)
{
    if (total != r->len) {
        free(r->data);
        r->len = 0;
        if ((r->data = malloc(total > 0 ? total : 1)) == NULL)
            return -1;
        r->len = total;
    }
    if (off > r->len || n > r->len - off)
        return -1;
    memcpy(r->data + off, data, n);
    return 0;
}

/*
 * Answer the request waiting on sock (none is fine). Returns 0, or -1 on a
 * nanomsg error (message printed). A bad request gets a RAW_BAD header.
 */
static int
rep_handle(raw_rep *r, int sock)
{
    unsigned char *msg, ack[RAW_HDR];
    void *reply;
    uint64_t len, off, data_len;
    int n, op;

    if ((n = nn_recv(sock, &msg, NN_MSG, NN_DONTWAIT)) < 0) {
        if (nn_errno() == EAGAIN)
            return 0;
        fprintf(stderr, "bench: raw server recv: %s\n", nn_strerror(nn_errno()));
        return -1;
    }
    op = n >= RAW_HDR ? msg[0] : RAW_BAD;
    len = n >= RAW_HDR ? get_u64(msg + 8) : 0;
    off = n >= RAW_HDR ? get_u64(msg + 16) : 0;
    data_len = n >= RAW_HDR ? (uint64_t)n - RAW_HDR : 0;
    if (op == RAW_LOAD && rep_load(r, len, off, msg + RAW_HDR, data_len) < 0)
        op = RAW_BAD;
    nn_freemsg(msg);
    if (op == RAW_PULL && len > 0 && len <= r->max_chunk && off <= r->len && len <= r->len - off) {
        if ((reply = nn_allocmsg(len, 0)) == NULL) {
            fprintf(stderr, "bench: raw server: nn_allocmsg(%llu) failed\n",
                    (unsigned long long)len);
            return -1;
        }
        memcpy(reply, r->data + off, len);
        if (nn_send(sock, &reply, NN_MSG, 0) < 0) {
            fprintf(stderr, "bench: raw server send: %s\n", nn_strerror(nn_errno()));
            nn_freemsg(reply);
            return -1;
        }
        return 0;
    }
    put_header(ack, op == RAW_PULL ? RAW_BAD : op, 0, 0);
    if (nn_send(sock, ack, sizeof(ack), 0) < 0) {
        fprintf(stderr, "bench: raw server send: %s\n", nn_strerror(nn_errno()));
        return -1;
    }
    return 0;
}

/*
 * The REP loop: answer requests on all of r's sockets until r->stop is set
 * (seen within RAW_POLL_MS). Returns 0 then, or -1 on an error (message
 * printed).
 */
static int
rep_serve(raw_rep *r)
{
    struct nn_pollfd pfd[RAW_BUFS_COUNT];
    int n = 0, i;

    for (i = 0; i < RAW_BUFS_COUNT; i++) {
        if (r->sock[i] >= 0) {
            pfd[n].fd = r->sock[i];
            pfd[n].events = NN_POLLIN;
            n++;
        }
    }
    while (!atomic_load(&r->stop)) {
        for (i = 0; i < n; i++)
            pfd[i].revents = 0;
        if (nn_poll(pfd, n, RAW_POLL_MS) < 0) {
            if (nn_errno() == EINTR)
                continue;
            fprintf(stderr, "bench: raw server poll: %s\n", nn_strerror(nn_errno()));
            return -1;
        }
        for (i = 0; i < n; i++)
            if ((pfd[i].revents & NN_POLLIN) && rep_handle(r, pfd[i].fd) < 0)
                return -1;
    }
    return 0;
}

/* The server thread: runs the REP loop of raw_start_thread(). */
static void *
rep_thread(void *arg)
{
    raw_server *s = arg;

    if (rep_serve(s->rep) < 0)
        s->failed = 1;
    return NULL;
}

/* SIGTERM (from proc_stop()) ends the server process: nothing in it needs cleaning up. */
static void
on_sigterm(int sig)
{
    (void)sig;
    _exit(0);
}

int
raw_server_main(int argc, char **argv)
{
    char *end;
    struct sigaction sa;
    unsigned long long max_chunk;
    raw_rep r;
    int rc;

    if (argc != 3 + RAW_BUFS_COUNT || strcmp(argv[1], RAW_SERVER_ARG) != 0) {
        fprintf(stderr, "bench: %s: expected MAX_CHUNK and %d URLs\n", RAW_SERVER_ARG,
                RAW_BUFS_COUNT);
        return 2;
    }
    errno = 0;
    max_chunk = strtoull(argv[2], &end, 10);
    if (errno != 0 || *end != '\0' || max_chunk == 0 ||
        max_chunk > INT_MAX - RAW_HDR - RAW_SP_SLACK) {
        fprintf(stderr, "bench: %s: bad MAX_CHUNK %s\n", RAW_SERVER_ARG, argv[2]);
        return 2;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigterm;
    (void)sigaction(SIGTERM, &sa, NULL);
    rc = rep_open(&r, max_chunk, (const char *const *)argv + 3) < 0 ? -1 : rep_serve(&r);
    rep_close(&r);
    return rc < 0 ? 1 : 0;
}

/* A new server for max_chunk bytes of data per message, with no endpoint yet; NULL if out of
 * memory. */
static raw_server *
server_new(uint64_t max_chunk)
{
    raw_server *s = calloc(1, sizeof(*s));

    if (s == NULL) {
        perror("bench: raw server");
        return NULL;
    }
    s->max_chunk = max_chunk;
    s->proc.pid = -1;
    return s;
}

/* Set url to tcp://127.0.0.1:PORT with a free port. Returns 0 or -1 (message printed). */
static int
free_url(char url[RAW_URL_MAX])
{
    int port;

    if ((port = proc_free_port()) < 0) {
        perror("bench: no free port");
        return -1;
    }
    (void)snprintf(url, RAW_URL_MAX, "tcp://127.0.0.1:%d", port);
    return 0;
}

int
raw_spawn(raw_server **out, uint64_t max_chunk)
{
    char exe[PATH_MAX], chunk_s[24];
    const char *argv[4 + RAW_BUFS_COUNT];
    raw_server *s;
    ssize_t n;
    int b;

    *out = NULL;
    if ((s = server_new(max_chunk)) == NULL)
        return -1;
    if ((n = readlink("/proc/self/exe", exe, sizeof(exe) - 1)) < 0) {
        perror("bench: readlink /proc/self/exe");
        goto fail;
    }
    exe[n] = '\0';
    (void)snprintf(chunk_s, sizeof(chunk_s), "%llu", (unsigned long long)max_chunk);
    argv[0] = exe;
    argv[1] = RAW_SERVER_ARG;
    argv[2] = chunk_s;
    for (b = 0; b < RAW_BUFS_COUNT; b++) {
        if (free_url(s->url[b]) < 0)
            goto fail;
        argv[3 + b] = s->url[b];
    }
    argv[3 + RAW_BUFS_COUNT] = NULL;
    if (proc_prepare(&s->proc, "raw-server") < 0 || proc_spawn(&s->proc, argv) < 0)
        goto fail;
    *out = s;
    return 0;
fail:
    (void)raw_server_stop(s);
    return -1;
}

int
raw_start_thread(raw_server **out, uint64_t max_chunk)
{
    const char *url[RAW_BUFS_COUNT] = {NULL};
    raw_server *s;

    *out = NULL;
    if ((s = server_new(max_chunk)) == NULL)
        return -1;
    url[RAW_BUFS_DEFAULT] = s->url[RAW_BUFS_DEFAULT];
    if (free_url(s->url[RAW_BUFS_DEFAULT]) < 0)
        goto fail;
    if ((s->rep = malloc(sizeof(*s->rep))) == NULL) {
        perror("bench: raw server");
        goto fail;
    }
    if (rep_open(s->rep, max_chunk, url) < 0) /* initializes s->rep first */
        goto fail;
    if ((errno = pthread_create(&s->thread, NULL, rep_thread, s)) != 0) {
        perror("bench: pthread_create");
        goto fail;
    }
    s->thread_started = 1;
    *out = s;
    return 0;
fail:
    (void)raw_server_stop(s);
    return -1;
}

const char *
raw_server_url(const raw_server *s, int bufs)
{
    return bufs >= 0 && bufs < RAW_BUFS_COUNT && s->url[bufs][0] != '\0' ? s->url[bufs] : NULL;
}

int
raw_server_pid(const raw_server *s)
{
    return s->rep == NULL ? (int)s->proc.pid : -1;
}

int
raw_server_stop(raw_server *s)
{
    int rc = 0;

    if (s == NULL)
        return 0;
    if (s->rep != NULL) {
        if (s->thread_started) {
            atomic_store(&s->rep->stop, 1);
            (void)pthread_join(s->thread, NULL);
        }
        rep_close(s->rep);
        free(s->rep);
        rc = s->failed ? -1 : 0;
    } else {
        rc = proc_stop(&s->proc);
    }
    free(s);
    return rc;
}

/*
 * One request: a header (op, len, off) and data_len bytes of data (data may
 * be NULL). The reply, an NN_MSG buffer the caller frees, goes into *reply
 * and its length into *reply_len. Returns 0, or a negative errno-style code.
 */
static int
request(raw_link *l, int op, const void *data, uint64_t data_len, uint64_t len, uint64_t off,
        void **reply, int *reply_len)
{
    unsigned char *msg;
    int rc;

    if ((msg = nn_allocmsg(RAW_HDR + data_len, 0)) == NULL)
        return -nn_errno();
    put_header(msg, op, len, off);
    if (data_len > 0)
        memcpy(msg + RAW_HDR, data, data_len);
    if (nn_send(l->req, &msg, NN_MSG, 0) < 0) {
        rc = -nn_errno();
        nn_freemsg(msg);
        return rc;
    }
    if ((*reply_len = nn_recv(l->req, reply, NN_MSG, 0)) < 0)
        return -nn_errno();
    return 0;
}

/*
 * A request answered by a bare header: checks that the reply echoes op.
 * Returns 0, or a negative errno-style code (-EPROTO for any other reply).
 */
static int
request_ack(raw_link *l, int op, const void *data, uint64_t data_len, uint64_t len, uint64_t off)
{
    unsigned char *reply;
    int n, rc;

    if ((rc = request(l, op, data, data_len, len, off, (void **)&reply, &n)) < 0)
        return rc;
    rc = n == RAW_HDR && reply[0] == op ? 0 : -EPROTO;
    nn_freemsg(reply);
    return rc;
}

int
raw_connect(raw_link **out, raw_server *s, int bufs)
{
    const char *url = raw_server_url(s, bufs);
    double deadline = proc_now() + RAW_READY_SEC;
    raw_link *l;

    *out = NULL;
    if (url == NULL) {
        fprintf(stderr, "bench: the raw server has no endpoint with buffer setting %d\n", bufs);
        return -1;
    }
    if ((l = calloc(1, sizeof(*l))) == NULL) {
        perror("bench: raw link");
        return -1;
    }
    if ((l->req = nn_socket(AF_SP, NN_REQ)) < 0 ||
        socket_setup(l->req, RAW_HDR + s->max_chunk, bufs) < 0 || nn_connect(l->req, url) < 0 ||
        set_timeouts(l->req, RAW_PING_MS) < 0) {
        fprintf(stderr, "bench: raw REQ socket to %s: %s\n", url, nn_strerror(nn_errno()));
        goto fail;
    }
    /* A server process may still be starting: ping it with short timeouts. */
    while (request_ack(l, RAW_PING, NULL, 0, 0, 0) < 0) {
        if (s->rep == NULL && !proc_running(&s->proc))
            goto fail;
        if (proc_now() > deadline) {
            fprintf(stderr, "bench: the raw server at %s did not answer within %.0f s\n", url,
                    RAW_READY_SEC);
            if (s->rep == NULL)
                proc_dump_file(s->proc.log);
            goto fail;
        }
    }
    if (set_timeouts(l->req, RAW_TIMEOUT_MS) < 0) {
        fprintf(stderr, "bench: raw REQ socket to %s: %s\n", url, nn_strerror(nn_errno()));
        goto fail;
    }
    *out = l;
    return 0;
fail:
    raw_close(l);
    return -1;
}

/*
 * Send the total bytes at src as requests op of at most chunk bytes each
 * (header: total, offset), each acked. Returns 0, or -1 (message printed).
 */
static int
send_all(raw_link *l, int op, const char *src, uint64_t total, uint64_t chunk, const char *what)
{
    uint64_t off, n;
    int rc;

    for (off = 0; off < total; off += n) {
        n = total - off < chunk ? total - off : chunk;
        if ((rc = request_ack(l, op, src + off, n, total, off)) < 0) {
            fprintf(stderr, "bench: raw %s at byte %llu: %s\n", what, (unsigned long long)off,
                    nn_strerror(-rc));
            return -1;
        }
    }
    return 0;
}

int
raw_serve(raw_link *l, const char *data, uint64_t len, uint64_t chunk)
{
    return send_all(l, RAW_LOAD, data, len, chunk, "load");
}

uint64_t
raw_push_message(uint64_t total, uint64_t chunk_bytes)
{
    if (total + 64 * 1024 <= chunk_bytes)
        return total;
    return chunk_bytes < EMAD_TXN_CHUNK_BYTES ? chunk_bytes : EMAD_TXN_CHUNK_BYTES;
}

int
raw_push(raw_link *l, const char *src, uint64_t total, uint64_t chunk)
{
    return send_all(l, RAW_PUSH, src, total, chunk, "push");
}

int
raw_pull(raw_link *l, char *dst, uint64_t total, uint64_t chunk)
{
    uint64_t off, n;
    void *reply;
    int len, rc;

    for (off = 0; off < total; off += n) {
        n = total - off < chunk ? total - off : chunk;
        if ((rc = request(l, RAW_PULL, NULL, 0, n, off, &reply, &len)) < 0) {
            fprintf(stderr, "bench: raw pull at byte %llu: %s\n", (unsigned long long)off,
                    nn_strerror(-rc));
            return -1;
        }
        if ((uint64_t)len != n) {
            fprintf(stderr, "bench: raw pull at byte %llu: %d bytes instead of %llu\n",
                    (unsigned long long)off, len, (unsigned long long)n);
            nn_freemsg(reply);
            return -1;
        }
        memcpy(dst + off, reply, n);
        nn_freemsg(reply);
    }
    return 0;
}

void
raw_close(raw_link *l)
{
    if (l == NULL)
        return;
    if (l->req >= 0)
        (void)nn_close(l->req);
    free(l);
}

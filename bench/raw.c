/*
 * raw.c - raw nanomsg REQ/REP carrying model bytes (the transport baseline).
 *
 * Each request is a 24-byte header (op; length at byte 8; offset at byte
 * 16, little-endian) followed, for a push, by the data. The REP thread acks
 * a push with a bare header and answers a pull with the requested bytes of
 * the served data, copied into a fresh nn_allocmsg buffer (as the daemon
 * packs its replies); the client packs each push into an nn_allocmsg buffer
 * and copies each pull reply into place (as libemad does). So both sides
 * copy the data once, and what is left out next to emad is its protocol,
 * staging and averaging.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "raw.h"
#include "proc.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nanomsg/nn.h>
#include <nanomsg/reqrep.h>
#include <nanomsg/tcp.h>

#define RAW_HDR 24
#define RAW_SP_SLACK 64 /* NN_RCVMAXSIZE counts the SP header (a 4-byte request id) */
enum { RAW_PUSH = 'P', RAW_PULL = 'G', RAW_QUIT = 'Q' };

struct raw_link {
    int rep;             /* the server's socket */
    int req;             /* the client's socket */
    uint64_t max_chunk;  /* largest data part of a message */
    const char *payload; /* served to pulls (borrowed) */
    uint64_t payload_len;
    int failed; /* set by the server thread on an unexpected error */
    int started;
    pthread_t thread;
    char url[64];
};

/*
 * Apply the socket options the daemon and libemad use for big messages:
 * NN_RCVMAXSIZE with room for the SP header, NN_TCP_NODELAY, 60 s
 * timeouts, and no REQ resend.
 */
static int
socket_setup(int s, uint64_t max_recv)
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

/* The server thread: answers requests until a quit request or an error. */
static void *
server_main(void *arg)
{
    raw_link *l = arg;
    unsigned char ack[RAW_HDR];
    unsigned char *msg;
    void *reply;
    uint64_t len, off;
    int n, op;

    for (;;) {
        if ((n = nn_recv(l->rep, &msg, NN_MSG, 0)) < 0) {
            if (nn_errno() == ETIMEDOUT || nn_errno() == EAGAIN)
                continue;
            if (nn_errno() != ETERM && nn_errno() != EBADF) {
                fprintf(stderr, "bench: raw server recv: %s\n", nn_strerror(nn_errno()));
                l->failed = 1;
            }
            return NULL;
        }
        op = n >= RAW_HDR ? msg[0] : 0;
        len = n >= RAW_HDR ? get_u64(msg + 8) : 0;
        off = n >= RAW_HDR ? get_u64(msg + 16) : 0;
        nn_freemsg(msg);
        if (op == RAW_PULL && len <= l->max_chunk && off <= l->payload_len &&
            len <= l->payload_len - off) {
            if ((reply = nn_allocmsg(len, 0)) == NULL) {
                l->failed = 1;
                return NULL;
            }
            memcpy(reply, l->payload + off, len);
            if (nn_send(l->rep, &reply, NN_MSG, 0) < 0) {
                nn_freemsg(reply);
                l->failed = 1;
                return NULL;
            }
            continue;
        }
        put_header(ack, op, 0, 0); /* also the answer to a bad pull: too short */
        if (nn_send(l->rep, ack, sizeof(ack), 0) < 0 || op == RAW_QUIT) {
            if (op != RAW_QUIT)
                l->failed = 1;
            return NULL;
        }
    }
}

/* One request: a header plus data_len bytes of data (may be NULL); the reply into *reply. */
static int
request(raw_link *l, int op, const void *data, uint64_t data_len, uint64_t want, uint64_t off,
        void **reply, int *reply_len)
{
    unsigned char *msg;

    if ((msg = nn_allocmsg(RAW_HDR + data_len, 0)) == NULL)
        return -1;
    put_header(msg, op, want, off);
    if (data_len > 0)
        memcpy(msg + RAW_HDR, data, data_len);
    if (nn_send(l->req, &msg, NN_MSG, 0) < 0) {
        nn_freemsg(msg);
        return -1;
    }
    if ((*reply_len = nn_recv(l->req, reply, NN_MSG, 0)) < 0)
        return -1;
    return 0;
}

int
raw_start(raw_link **out, uint64_t max_chunk)
{
    raw_link *l;
    int port;

    *out = NULL;
    if ((l = calloc(1, sizeof(*l))) == NULL)
        return -1;
    l->rep = l->req = -1;
    l->max_chunk = max_chunk;
    if ((port = proc_free_port()) < 0) {
        perror("bench: no free port");
        goto fail;
    }
    (void)snprintf(l->url, sizeof(l->url), "tcp://127.0.0.1:%d", port);
    if ((l->rep = nn_socket(AF_SP, NN_REP)) < 0 || socket_setup(l->rep, RAW_HDR + max_chunk) < 0 ||
        nn_bind(l->rep, l->url) < 0 || (l->req = nn_socket(AF_SP, NN_REQ)) < 0 ||
        socket_setup(l->req, RAW_HDR + max_chunk) < 0 || nn_connect(l->req, l->url) < 0) {
        fprintf(stderr, "bench: raw nanomsg setup on %s: %s\n", l->url, nn_strerror(nn_errno()));
        goto fail;
    }
    if ((errno = pthread_create(&l->thread, NULL, server_main, l)) != 0) {
        perror("bench: pthread_create");
        goto fail;
    }
    l->started = 1;
    *out = l;
    return 0;
fail:
    (void)raw_stop(l);
    return -1;
}

const char *
raw_url(const raw_link *l)
{
    return l->url;
}

void
raw_serve(raw_link *l, const char *data, uint64_t len)
{
    l->payload = data;
    l->payload_len = len;
}

int
raw_push(raw_link *l, const char *src, uint64_t total, uint64_t chunk)
{
    uint64_t off, n;
    void *reply;
    int len;

    for (off = 0; off < total; off += n) {
        n = total - off < chunk ? total - off : chunk;
        if (request(l, RAW_PUSH, src + off, n, 0, 0, &reply, &len) < 0) {
            fprintf(stderr, "bench: raw push: %s\n", nn_strerror(nn_errno()));
            return -1;
        }
        nn_freemsg(reply);
    }
    return 0;
}

int
raw_pull(raw_link *l, char *dst, uint64_t total, uint64_t chunk)
{
    uint64_t off, n;
    void *reply;
    int len;

    for (off = 0; off < total; off += n) {
        n = total - off < chunk ? total - off : chunk;
        if (request(l, RAW_PULL, NULL, 0, n, off, &reply, &len) < 0) {
            fprintf(stderr, "bench: raw pull: %s\n", nn_strerror(nn_errno()));
            return -1;
        }
        if ((uint64_t)len != n) {
            fprintf(stderr, "bench: raw pull at %llu: %d bytes instead of %llu\n",
                    (unsigned long long)off, len, (unsigned long long)n);
            nn_freemsg(reply);
            return -1;
        }
        memcpy(dst + off, reply, n);
        nn_freemsg(reply);
    }
    return 0;
}

int
raw_stop(raw_link *l)
{
    int rc = 0;

    if (l == NULL)
        return 0;
    if (l->started) {
        void *reply;
        int len;

        if (request(l, RAW_QUIT, NULL, 0, 0, 0, &reply, &len) == 0)
            nn_freemsg(reply);
        else
            nn_term(); /* unblocks the server thread */
        (void)pthread_join(l->thread, NULL);
        rc = l->failed ? -1 : 0;
    }
    if (l->req >= 0)
        (void)nn_close(l->req);
    if (l->rep >= 0)
        (void)nn_close(l->rep);
    free(l);
    return rc;
}

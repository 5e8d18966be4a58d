/*
 * resp.c - a minimal blocking Redis client for the benchmarks.
 *
 * Commands go out as RESP arrays of bulk strings with one writev() per
 * command, the value pointing at the caller's buffer; a GET reply's header
 * is read a byte at a time and its payload received straight into the
 * caller's buffer. So the client adds no copy of its own: the figures are
 * the server's and the kernel's (hiredis would copy every reply through
 * its read buffer into a reply object, 16 KiB per read()).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "resp.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#define RESP_MAX_ARGS 3
#define RESP_LINE 128
#define RESP_TIMEOUT_SEC 60

/* Write all of iov[0..n), advancing through partial writes. Returns 0 or -1. */
static int
write_all(int fd, struct iovec *iov, int n)
{
    ssize_t w;

    while (n > 0) {
        if ((w = writev(fd, iov, n)) < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

/* Receive exactly len bytes into dst. Returns 0, or -1 (EPIPE at end of stream). */
static int
read_all(int fd, void *dst, size_t len)
{
    char *p = dst;
    ssize_t r;

    while (len > 0) {
        if ((r = recv(fd, p, len, MSG_WAITALL)) < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0) {
            errno = EPIPE;
            return -1;
        }
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

/*
 * Send one command of n arguments (args[i] is lens[i] bytes, borrowed).
 * Returns 0 or -1.
 */
static int
send_command(int fd, int n, const void *const *args, const size_t *lens)
{
    char head[RESP_MAX_ARGS + 1][32];
    struct iovec iov[1 + 3 * RESP_MAX_ARGS];
    int i, k = 0;

    iov[k].iov_base = head[0];
    iov[k++].iov_len = (size_t)snprintf(head[0], sizeof(head[0]), "*%d\r\n", n);
    for (i = 0; i < n; i++) {
        iov[k].iov_base = head[i + 1];
        iov[k++].iov_len = (size_t)snprintf(head[i + 1], sizeof(head[i + 1]), "$%zu\r\n", lens[i]);
        iov[k].iov_base = (void *)args[i];
        iov[k++].iov_len = lens[i];
        iov[k].iov_base = (void *)"\r\n";
        iov[k++].iov_len = 2;
    }
    return write_all(fd, iov, k);
}

/* Read one reply line, without its CRLF, into line (cap bytes). Returns 0 or -1. */
static int
read_line(int fd, char *line, size_t cap)
{
    size_t n = 0;

    for (;;) {
        if (n + 1 >= cap) {
            errno = EPROTO;
            return -1;
        }
        if (read_all(fd, line + n, 1) < 0)
            return -1;
        if (n > 0 && line[n - 1] == '\r' && line[n] == '\n') {
            line[n - 1] = '\0';
            return 0;
        }
        n++;
    }
}

/* Send a command of string arguments and check the reply line is `expect`. */
static int
simple_command(int fd, int n, const char *const *argv, const char *expect)
{
    const void *args[RESP_MAX_ARGS];
    size_t lens[RESP_MAX_ARGS];
    char line[RESP_LINE];
    int i;

    for (i = 0; i < n; i++) {
        args[i] = argv[i];
        lens[i] = strlen(argv[i]);
    }
    if (send_command(fd, n, args, lens) < 0 || read_line(fd, line, sizeof(line)) < 0)
        return -1;
    if (strcmp(line, expect) != 0) {
        fprintf(stderr, "bench: redis %s: %s\n", argv[0], line);
        errno = EPROTO;
        return -1;
    }
    return 0;
}

int
resp_connect(int port)
{
    static const char *const ping[] = {"PING"};
    struct sockaddr_in sa;
    struct timeval tv = {RESP_TIMEOUT_SEC, 0};
    int fd, one = 1, saved;

    if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)port);
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 ||
        connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        simple_command(fd, 1, ping, "+PONG") < 0) {
        saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int
resp_set(int fd, const char *key, const void *val, size_t len)
{
    const void *args[3] = {"SET", key, val};
    size_t lens[3] = {3, strlen(key), len};
    char line[RESP_LINE];

    if (send_command(fd, 3, args, lens) < 0 || read_line(fd, line, sizeof(line)) < 0) {
        fprintf(stderr, "bench: redis SET %s: %s\n", key, strerror(errno));
        return -1;
    }
    if (strcmp(line, "+OK") != 0) {
        fprintf(stderr, "bench: redis SET %s: %s\n", key, line);
        return -1;
    }
    return 0;
}

int
resp_get_into(int fd, const char *key, void *dst, size_t len)
{
    const void *args[2] = {"GET", key};
    size_t lens[2] = {3, strlen(key)};
    char line[RESP_LINE], crlf[2];
    char *end;
    long long n;

    if (send_command(fd, 2, args, lens) < 0 || read_line(fd, line, sizeof(line)) < 0)
        goto fail;
    errno = 0;
    n = line[0] == '$' ? strtoll(line + 1, &end, 10) : -1;
    if (line[0] != '$' || errno != 0 || *end != '\0' || n < 0 || (unsigned long long)n != len) {
        fprintf(stderr, "bench: redis GET %s: reply %.40s, expected %zu bytes\n", key, line, len);
        return -1;
    }
    if (read_all(fd, dst, len) < 0 || read_all(fd, crlf, 2) < 0)
        goto fail;
    if (crlf[0] != '\r' || crlf[1] != '\n') {
        errno = EPROTO;
        goto fail;
    }
    return 0;
fail:
    fprintf(stderr, "bench: redis GET %s: %s\n", key, strerror(errno));
    return -1;
}

void
resp_close(int fd)
{
    if (fd >= 0)
        close(fd);
}

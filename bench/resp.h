/*
 * resp.h - a minimal blocking Redis client (RESP2 over TCP) for the
 * benchmarks: SET from the caller's buffer and GET into the caller's
 * buffer, with no copy on the client side.
 */
#ifndef BENCH_RESP_H
#define BENCH_RESP_H

#include <stddef.h>

/*
 * Connect to redis on 127.0.0.1:port (TCP_NODELAY, 60 s send and receive
 * timeouts) and check it answers PING. Returns the socket, or -1 with
 * errno set.
 */
int resp_connect(int port);

/* SET key to the len bytes at val (borrowed). Returns 0, or -1 (message printed). */
int resp_set(int fd, const char *key, const void *val, size_t len);

/*
 * GET key into dst, which must be exactly len bytes long: the value is
 * received straight into dst. Returns 0, or -1 (message printed) if the
 * key is missing, has another length, or the connection fails.
 */
int resp_get_into(int fd, const char *key, void *dst, size_t len);

/* Close the connection (fd < 0 is ignored). */
void resp_close(int fd);

#endif /* BENCH_RESP_H */

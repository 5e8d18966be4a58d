/*
 * raw.h - raw nanomsg REQ/REP carrying model bytes, the transport baseline
 * of bench_pushpull: a REP server thread and a REQ socket talking to it
 * over TCP loopback, with the socket options libemad and the daemon use.
 */
#ifndef BENCH_RAW_H
#define BENCH_RAW_H

#include <stdint.h>

typedef struct raw_link raw_link;

/*
 * Start the REP server thread on a free 127.0.0.1 port and connect a REQ
 * socket to it, for messages of up to max_chunk bytes of data. Call after
 * every fork() of the benchmark (nanomsg is not fork-safe). Returns 0 with
 * *out set (free with raw_stop()), or -1 (message printed).
 */
int raw_start(raw_link **out, uint64_t max_chunk);

/* The server's URL (tcp://127.0.0.1:PORT). */
const char *raw_url(const raw_link *l);

/*
 * Serve pulls from the len bytes at data (borrowed until the next call or
 * raw_stop()). Call only between requests.
 */
void raw_serve(raw_link *l, const char *data, uint64_t len);

/*
 * Push: send the total bytes at src in messages of at most chunk bytes; the
 * server acks each. Returns 0, or -1 (message printed).
 */
int raw_push(raw_link *l, const char *src, uint64_t total, uint64_t chunk);

/*
 * Pull: request total bytes in pieces of at most chunk bytes; the server
 * copies each piece of the served data into a fresh message, and each reply
 * is copied into place in dst. Returns 0, or -1 (message printed).
 */
int raw_pull(raw_link *l, char *dst, uint64_t total, uint64_t chunk);

/*
 * Stop the server thread, close both sockets and free l (NULL is ignored).
 * Returns 0, or -1 if the server thread met an error.
 */
int raw_stop(raw_link *l);

#endif /* BENCH_RAW_H */

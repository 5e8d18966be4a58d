/*
 * raw.h - raw nanomsg REQ/REP carrying model bytes, the transport baseline
 * of bench_pushpull. The REP server runs either as a process of its own,
 * as the emad daemon does (raw_spawn(): this program again, with one
 * endpoint per socket-buffer setting), or as a thread of the benchmark
 * (raw_start_thread(): the in-process reference). REQ sockets connect to
 * an endpoint over TCP loopback (raw_connect()), hand the server the bytes
 * it serves (raw_serve()), and push and pull.
 */
#ifndef BENCH_RAW_H
#define BENCH_RAW_H

#include <stdint.h>

/* argv[1] of this program started as the raw server process (raw_server_main()). */
#define RAW_SERVER_ARG "--raw-server"

/* Socket buffers of an endpoint: its REP socket and the REQ sockets connected to it. */
enum raw_bufs {
    RAW_BUFS_DEFAULT, /* nanomsg's default NN_SNDBUF and NN_RCVBUF (128 KiB) */
    RAW_BUFS_EMAD,    /* PROTO_SOCKET_BUFFER_BYTES, as the daemon and libemad set them */
    RAW_BUFS_COUNT
};

/* A REP server, a process or a thread. */
typedef struct raw_server raw_server;

/* A REQ socket connected to one endpoint of a raw_server. */
typedef struct raw_link raw_link;

/*
 * Start the raw server process: this program (/proc/self/exe) with
 * RAW_SERVER_ARG, one REP endpoint per raw_bufs setting on free 127.0.0.1
 * ports, its output in a log file, SIGKILL as its parent-death signal and
 * killed on SIGINT/SIGTERM like every proc (proc.c). Call before any
 * nanomsg socket exists (it forks). Returns 0 with *out set (stop with
 * raw_server_stop()), or -1 (message printed).
 */
int raw_spawn(raw_server **out, uint64_t max_chunk);

/*
 * Start a REP server thread in this process with one endpoint, of
 * RAW_BUFS_DEFAULT, for messages of up to max_chunk bytes of data. Call
 * after every fork() of the benchmark. Returns 0 with *out set (stop with
 * raw_server_stop()), or -1 (message printed).
 */
int raw_start_thread(raw_server **out, uint64_t max_chunk);

/*
 * main() of the raw server process, with the argv raw_spawn() builds.
 * Serves until SIGTERM (exit status 0) or an error (1, message printed).
 */
int raw_server_main(int argc, char **argv);

/* The URL of s's endpoint with buffer setting bufs, or NULL if it has none. */
const char *raw_server_url(const raw_server *s, int bufs);

/* The pid of the server process, or -1 for a thread. */
int raw_server_pid(const raw_server *s);

/*
 * Stop s and free it (NULL is ignored): end the thread, or SIGTERM the
 * process and reap it. Close its links first. Returns 0, or -1 if the
 * server met an error (message printed).
 */
int raw_server_stop(raw_server *s);

/*
 * Connect a REQ socket with buffer setting bufs to s's endpoint of that
 * setting, and wait until the server answers (10 s at most). Returns 0 with
 * *out set (free with raw_close()), or -1 (message printed).
 */
int raw_connect(raw_link **out, raw_server *s, int bufs);

/*
 * Give the server behind l a copy of the len bytes at data, sent in
 * messages of at most chunk bytes; it serves pulls from that copy, on every
 * endpoint, until the next raw_serve(). Returns 0, or -1 (message printed).
 */
int raw_serve(raw_link *l, const char *data, uint64_t len, uint64_t chunk);

/*
 * Push: send the total bytes at src in messages of at most chunk bytes; the
 * server acks each. Returns 0, or -1 (message printed).
 */
int raw_push(raw_link *l, const char *src, uint64_t total, uint64_t chunk);

/*
 * The largest message libemad sends a push of total bytes of tensor data
 * in, its limit being chunk_bytes, for raw nanomsg to send the same: the
 * whole push when it fits (its tensor maps take a few hundred bytes more),
 * else a transaction's chunks of at most EMAD_TXN_CHUNK_BYTES.
 */
uint64_t raw_push_message(uint64_t total, uint64_t chunk_bytes);

/*
 * Pull: request total bytes in pieces of at most chunk bytes; the server
 * copies each piece of its served data into a fresh message, and each reply
 * is copied into place in dst. Returns 0, or -1 (message printed).
 */
int raw_pull(raw_link *l, char *dst, uint64_t total, uint64_t chunk);

/* Close l's socket and free l (NULL is ignored). */
void raw_close(raw_link *l);

#endif /* BENCH_RAW_H */

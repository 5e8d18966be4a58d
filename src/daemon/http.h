/*
 * http.h - the operators' HTTP endpoint: GET /metrics (Prometheus text
 * format 0.0.4), /healthz and /stats (JSON), served by libmicrohttpd.
 *
 * libmicrohttpd runs its own small pool of event-driven threads (epoll),
 * never the loop thread. Handlers only read the metrics board (metrics.h),
 * which hands them a copy of the figures made by the loop thread; so a
 * slow, idle or hostile HTTP client can hold at most an HTTP thread and a
 * connection slot, never a push. Connections are capped in number, per
 * client address, in memory and in idle time, so a client that opens many
 * connections and sends its headers slowly holds at most
 * HTTP_MAX_CONNECTIONS_PER_IP of them and /healthz still answers others.
 */
#ifndef EMAD_HTTP_H
#define EMAD_HTTP_H

#include <stdint.h>

#include "daemon/metrics.h"

#define HTTP_DEFAULT_ADDRESS "127.0.0.1:7471"
#define HTTP_THREADS 2                    /* libmicrohttpd worker threads */
#define HTTP_MAX_CONNECTIONS 128          /* connections open at once */
#define HTTP_MAX_CONNECTIONS_PER_IP 8     /* of them from one client address */
#define HTTP_CONNECTION_TIMEOUT_S 10      /* idle connections are closed after this */
#define HTTP_CONNECTION_MEMORY (32 << 10) /* per connection: request line and headers */

typedef struct http http;

/*
 * Check an address "HOST:PORT" ("[IPV6]:PORT" for IPv6; HOST may be a name;
 * PORT 0 picks a free port). Returns 0, or -EINVAL with *cause set
 * (malloc'd).
 */
int http_check_address(const char *address, char **cause);

/*
 * Listen on address and serve figures from board in libmicrohttpd's own
 * threads. Returns 0, or a negative code with *cause set (malloc'd).
 */
int http_create(http **out, const char *address, metrics_board *board, char **cause);

/*
 * With required set, /stats answers only a request with `Authorization:
 * Bearer TOKEN` whose BLAKE2b-256 is one of hashes[0..n) (copied); 401
 * otherwise. /metrics and /healthz stay open. Any thread; NULL h accepted.
 */
void http_set_tokens(http *h, int required, const unsigned char (*hashes)[32], size_t n);

/* The port actually bound (useful with port 0). */
unsigned http_port(const http *h);

/* Stop listening, close every connection and join the threads. NULL accepted. */
void http_destroy(http *h);

#endif

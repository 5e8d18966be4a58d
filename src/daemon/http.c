/*
 * http.c - the operators' HTTP endpoint on libmicrohttpd (see http.h).
 *
 * Every request is answered on its first call of the access handler:
 * nothing here reads a request body or keeps per-connection state. The
 * response body is rendered into a malloc'd buffer that libmicrohttpd
 * frees after sending it. Paths are routed as sent, byte for byte:
 * percent escapes are not decoded, so "/stats%00x" is not "/stats".
 */
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>
#include <pthread.h>

#include "common/auth.h"
#include "common/cause.h"
#include "daemon/http.h"
#include "base/log.h"
#include "base/xmalloc.h"

struct http {
    struct MHD_Daemon *d;
    metrics_board *board;
    pthread_mutex_t lock; /* guards the tokens: set by the loop, read by HTTP threads */
    int tokens_required;  /* /stats needs a bearer token */
    unsigned char (*tokens)[AUTH_TOKEN_HASH_BYTES];
    size_t ntokens;
    unsigned port;
    char last_error[256]; /* libmicrohttpd's last message, for a startup failure */
};

/* Split "HOST:PORT" / "[HOST]:PORT" into host and port buffers. */
static int
split_address(const char *address, char *host, size_t hsize, char *port, size_t psize, char **cause)
{
    const char *colon, *h = address;
    size_t hlen;
    char *end;
    unsigned long p;

    if (address[0] == '[') {
        const char *close = strchr(address, ']');
        if (close == NULL || close[1] != ':')
            return cause_set(cause, -EINVAL, "'%s': expected [IPV6]:PORT", address);
        h = address + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        if ((colon = strrchr(address, ':')) == NULL)
            return cause_set(cause, -EINVAL, "'%s': expected HOST:PORT (or off)", address);
        hlen = (size_t)(colon - address);
        if (memchr(address, ':', hlen) != NULL)
            return cause_set(cause, -EINVAL, "'%s': write an IPv6 address as [ADDRESS]:PORT",
                             address);
    }
    if (hlen == 0 || hlen >= hsize)
        return cause_set(cause, -EINVAL, "'%s': the host is %s", address,
                         hlen == 0 ? "missing" : "too long");
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    errno = 0;
    p = strtoul(colon + 1, &end, 10);
    if (colon[1] < '0' || colon[1] > '9' || *end != '\0' || errno != 0 || p > 65535 ||
        strlen(colon + 1) >= psize)
        return cause_set(cause, -EINVAL, "'%s': the port must be a number from 0 to 65535",
                         address);
    snprintf(port, psize, "%lu", p);
    return 0;
}

/* Resolve address into *res (freeaddrinfo). */
static int
resolve(const char *address, struct addrinfo **res, char **cause)
{
    char host[256], port[8];
    struct addrinfo hints;
    int rc;

    if ((rc = split_address(address, host, sizeof(host), port, sizeof(port), cause)) != 0)
        return rc;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    if ((rc = getaddrinfo(strcmp(host, "*") == 0 ? NULL : host, port, &hints, res)) != 0)
        return cause_set(cause, -EINVAL, "'%s': cannot resolve '%s': %s", address, host,
                         gai_strerror(rc));
    return 0;
}

int
http_check_address(const char *address, char **cause)
{
    char host[256], port[8];

    return split_address(address, host, sizeof(host), port, sizeof(port), cause);
}

/* libmicrohttpd's error log: keep the last message and log it at debug level. */
__attribute__((format(printf, 2, 0))) static void
on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    http *h = cls;
    size_t n;

    (void)vsnprintf(h->last_error, sizeof(h->last_error), fmt, ap);
    n = strlen(h->last_error);
    while (n > 0 && (h->last_error[n - 1] == '\n' || h->last_error[n - 1] == '.'))
        h->last_error[--n] = '\0';
    log_debug("event=http_error error=%s", LOG_STR(h->last_error));
}

/*
 * libmicrohttpd's unescape callback: leave the path as it came. Every path
 * served is plain ASCII, so routing the raw path is exact; decoding would
 * let "%00" cut a path short before the comparison.
 */
static size_t
keep_escapes(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    return strlen(s);
}

/* Queue a response that takes ownership of body (malloc'd, len bytes). */
static enum MHD_Result
respond(struct MHD_Connection *c, unsigned status, const char *type, char *body, size_t len)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    enum MHD_Result ret;

    if (r == NULL) {
        free(body);
        return MHD_NO;
    }
    (void)MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    (void)MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        (void)MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

/* A short text/plain response. */
static enum MHD_Result
respond_text(struct MHD_Connection *c, unsigned status, const char *text)
{
    size_t n = strlen(text);
    return respond(c, status, "text/plain; charset=utf-8", xstrndup(text, n), n);
}

void
http_set_tokens(http *h, int required, const unsigned char (*hashes)[32], size_t n)
{
    unsigned char(*copy)[AUTH_TOKEN_HASH_BYTES] = NULL, (*old)[AUTH_TOKEN_HASH_BYTES];

    if (h == NULL)
        return;
    if (n > 0) {
        copy = xcalloc(n, sizeof(*copy));
        memcpy(copy, hashes, n * sizeof(*copy));
    }
    pthread_mutex_lock(&h->lock);
    old = h->tokens;
    h->tokens = copy;
    h->ntokens = n;
    h->tokens_required = required;
    pthread_mutex_unlock(&h->lock);
    free(old);
}

/* Does the request carry a bearer token that /stats accepts (or is none needed)? */
static int
token_ok(http *h, struct MHD_Connection *c)
{
    const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    unsigned char hash[AUTH_TOKEN_HASH_BYTES];
    int ok = 0;

    pthread_mutex_lock(&h->lock);
    if (!h->tokens_required) {
        ok = 1;
    } else if (v != NULL && strncmp(v, "Bearer ", 7) == 0 && v[7] != '\0') {
        auth_token_hash(v + 7, strlen(v + 7), hash);
        for (size_t i = 0; i < h->ntokens; i++) /* every entry, equal or not: constant time */
            ok |= auth_tag_equal(h->tokens[i], hash) == 0 &&
                  auth_tag_equal(h->tokens[i] + 16, hash + 16) == 0;
    }
    pthread_mutex_unlock(&h->lock);
    return ok;
}

/* The access handler: every request is answered on the first call. */
static enum MHD_Result
on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
           const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
    http *h = cls;
    const metrics_figures *f;
    metrics_process proc;
    double age;
    size_t len;
    char *body;
    int state, metrics;

    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)con_cls;
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return respond_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    if (strcmp(url, "/healthz") == 0) {
        state = metrics_board_get_state(h->board);
        char text[32];
        snprintf(text, sizeof(text), "%s\n", metrics_state_name(state));
        return respond_text(
            c, state == METRICS_SERVING ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, text);
    }
    metrics = strcmp(url, "/metrics") == 0;
    if (!metrics && strcmp(url, "/stats") != 0) {
        if (strcmp(url, "/") == 0)
            return respond_text(c, MHD_HTTP_OK,
                                "emad: GET /metrics (Prometheus), /healthz, /stats (JSON)\n");
        return respond_text(c, MHD_HTTP_NOT_FOUND, "not found: try /metrics, /healthz or /stats\n");
    }
    if (!metrics && !token_ok(h, c)) {
        struct MHD_Response *resp;
        enum MHD_Result ret;
        static const char text[] = "/stats needs Authorization: Bearer TOKEN (a user's "
                                   "stats_token in the auth file)\n";
        resp =
            MHD_create_response_from_buffer(sizeof(text) - 1, (void *)text, MHD_RESPMEM_PERSISTENT);
        if (resp == NULL)
            return MHD_NO;
        (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
        (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                                      "text/plain; charset=utf-8");
        ret = MHD_queue_response(c, MHD_HTTP_UNAUTHORIZED, resp);
        MHD_destroy_response(resp);
        return ret;
    }
    f = metrics_board_acquire(h->board, &age);
    state = metrics_board_get_state(h->board);
    metrics_process_get(&proc);
    if (metrics)
        body = metrics_render_prometheus(f, state, &proc, age, &len);
    else
        body = metrics_render_json(f, state, &proc, age, &len);
    metrics_board_release(h->board, f);
    return respond(c, MHD_HTTP_OK,
                   metrics ? "text/plain; version=0.0.4; charset=utf-8" : "application/json", body,
                   len);
}

int
http_create(http **out, const char *address, metrics_board *board, char **cause)
{
    http *h = xcalloc(1, sizeof(*h));
    struct addrinfo *res = NULL;
    const union MHD_DaemonInfo *info;
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG;
    int rc;

    *out = NULL;
    h->board = board;
    pthread_mutex_init(&h->lock, NULL);
    if ((rc = resolve(address, &res, cause)) != 0)
        goto fail;
    if (res->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /*
     * The logger goes first: libmicrohttpd reports options before it with its
     * own logger. One option and its value per line.
     */
    /* clang-format off */
    h->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h,
                            MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h,
                            MHD_OPTION_SOCK_ADDR, res->ai_addr,
                            MHD_OPTION_THREAD_POOL_SIZE, (unsigned)HTTP_THREADS,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_MAX_CONNECTIONS,
                            MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)HTTP_MAX_CONNECTIONS_PER_IP,
                            MHD_OPTION_UNESCAPE_CALLBACK, keep_escapes, NULL,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_CONNECTION_TIMEOUT_S,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_CONNECTION_MEMORY,
                            MHD_OPTION_END);
    /* clang-format on */
    freeaddrinfo(res);
    if (h->d == NULL) {
        rc = cause_set(cause, -EADDRNOTAVAIL, "cannot serve HTTP on %s: %s", address,
                       h->last_error[0] != '\0' ? h->last_error : "libmicrohttpd failed");
        goto fail;
    }
    if ((info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT)) != NULL)
        h->port = info->port;
    *out = h;
    return 0;
fail:
    http_destroy(h);
    return rc;
}

unsigned
http_port(const http *h)
{
    return h->port;
}

void
http_destroy(http *h)
{
    if (h == NULL)
        return;
    if (h->d != NULL)
        MHD_stop_daemon(h->d);
    pthread_mutex_destroy(&h->lock);
    free(h->tokens);
    free(h);
}

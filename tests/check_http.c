/*
 * check_http.c - tests for src/daemon/http.c over real loopback sockets: address
 * checking, /healthz following the board's state (503 while loading and
 * stopping), /metrics and /stats content types and bodies, 404 and 405,
 * a port in use refused with a cause, paths routed exactly ("/stats%00x"
 * is not "/stats"), and /healthz still answered while idle and slow-header
 * connections hold the server (the slow-loris case): one client address
 * gets at most HTTP_MAX_CONNECTIONS_PER_IP connections, and others are
 * served meanwhile. Clients on other addresses use 127.0.0.2..127.0.0.N
 * (all of 127/8 is loopback).
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <poll.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "daemon/http.h"
#include "daemon/metrics.h"
#include "testutil.h"

/* Connect from 127.0.0.<from> to 127.0.0.1:port; -1 on failure. */
static int
dial_from(unsigned from, unsigned port)
{
    struct sockaddr_in sa;
    struct timeval tv = {5, 0};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK - 1 + from);
    if (from > 1 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        return -1;
    }
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Connect from 127.0.0.1 to 127.0.0.1:port; -1 on failure. */
static int
dial(unsigned port)
{
    return dial_from(1, port);
}

/* Send one request from 127.0.0.<from> and read the whole response (Connection: close) into a
 * malloc'd string. */
static char *
fetch_from(unsigned from, unsigned port, const char *method, const char *path)
{
    char req[256], *buf = malloc(1 << 20);
    size_t len = 0;
    ssize_t n;
    int fd = dial_from(from, port);

    ck_assert_int_ge(fd, 0);
    snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n", method,
             path);
    ck_assert_int_eq(write(fd, req, strlen(req)), (ssize_t)strlen(req));
    while (len < (1 << 20) - 1 && (n = read(fd, buf + len, (1 << 20) - 1 - len)) > 0)
        len += (size_t)n;
    buf[len] = '\0';
    close(fd);
    return buf;
}

/* fetch_from() 127.0.0.1. */
static char *
fetch(unsigned port, const char *method, const char *path)
{
    return fetch_from(1, port, method, path);
}

/* The status code of a response. */
static int
status_of(const char *resp)
{
    int code = 0;
    ck_assert_int_eq(sscanf(resp, "HTTP/1.1 %d", &code), 1);
    return code;
}

/* The body of a response. */
static const char *
body_of(const char *resp)
{
    const char *p = strstr(resp, "\r\n\r\n");
    ck_assert_ptr_nonnull(p);
    return p + 4;
}

START_TEST(test_http_check_address_accepts_host_port_forms)
{
    static const char *const good[] = {"127.0.0.1:7471", "[::1]:80", "localhost:0", "*:9000",
                                       "0.0.0.0:65535"};
    static const char *const bad[] = {"nope",   ":80",     "127.0.0.1:", "127.0.0.1:65536",
                                      "::1:80", "[::1]80", "host:80x",   "host:-1"};
    char *cause = NULL;

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        ck_assert_msg(http_check_address(good[i], &cause) == 0, "%s refused", good[i]);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(http_check_address(bad[i], &cause) != 0, "%s accepted", bad[i]);
        ck_assert_ptr_nonnull(cause);
        ck_assert_ptr_nonnull(strstr(cause, bad[i]));
        free(cause);
        cause = NULL;
    }
}
END_TEST

START_TEST(test_http_healthz_follows_state)
{
    metrics_board *b;
    http *h;
    char *cause = NULL, *r;

    metrics_board_create(&b);
    ck_assert_int_eq(http_create(&h, "127.0.0.1:0", b, &cause), 0);
    ck_assert_uint_gt(http_port(h), 0);

    r = fetch(http_port(h), "GET", "/healthz");
    ck_assert_int_eq(status_of(r), 503);
    ck_assert_str_eq(body_of(r), "loading\n");
    free(r);
    metrics_board_set_state(b, METRICS_SERVING);
    r = fetch(http_port(h), "GET", "/healthz");
    ck_assert_int_eq(status_of(r), 200);
    ck_assert_str_eq(body_of(r), "serving\n");
    free(r);
    metrics_board_set_state(b, METRICS_STOPPING);
    r = fetch(http_port(h), "GET", "/healthz");
    ck_assert_int_eq(status_of(r), 503);
    ck_assert_str_eq(body_of(r), "stopping\n");
    free(r);
    http_destroy(h);
    metrics_board_destroy(b);
}
END_TEST

START_TEST(test_http_serves_metrics_stats_and_refuses_the_rest)
{
    metrics_board *b;
    http *h;
    char *cause = NULL, *r;

    metrics_board_create(&b);
    ck_assert_int_eq(http_create(&h, "127.0.0.1:0", b, &cause), 0);

    r = fetch(http_port(h), "GET", "/metrics");
    ck_assert_int_eq(status_of(r), 200);
    ck_assert_ptr_nonnull(strstr(r, "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
    ck_assert_ptr_nonnull(strstr(body_of(r), "emad_state{state=\"loading\"} 1\n"));
    free(r);
    r = fetch(http_port(h), "GET", "/metrics?x=1"); /* query strings are ignored */
    ck_assert_int_eq(status_of(r), 200);
    free(r);
    r = fetch(http_port(h), "HEAD", "/metrics");
    ck_assert_int_eq(status_of(r), 200);
    ck_assert_str_eq(body_of(r), "");
    free(r);
    r = fetch(http_port(h), "GET", "/stats");
    ck_assert_int_eq(status_of(r), 200);
    ck_assert_ptr_nonnull(strstr(r, "Content-Type: application/json\r\n"));
    ck_assert_ptr_nonnull(strstr(body_of(r), "\"state\": \"loading\""));
    free(r);
    r = fetch(http_port(h), "GET", "/nope");
    ck_assert_int_eq(status_of(r), 404);
    free(r);
    /* Exact paths: no escape decoding, no prefix, no trailing bytes. */
    static const char *const near[] = {"/stats%00x", "/stats%00",   "/%73tats",      "/stats/",
                                       "//stats",    "/metrics%00", "/healthz%00/x", "/statsx"};
    for (size_t i = 0; i < sizeof(near) / sizeof(near[0]); i++) {
        r = fetch(http_port(h), "GET", near[i]);
        ck_assert_msg(status_of(r) == 404, "%s: %d", near[i], status_of(r));
        ck_assert_ptr_null(strstr(r, "\"state\""));
        free(r);
    }
    r = fetch(http_port(h), "POST", "/metrics");
    ck_assert_int_eq(status_of(r), 405);
    ck_assert_ptr_nonnull(strstr(r, "Allow: GET, HEAD\r\n"));
    free(r);
    http_destroy(h);
    metrics_board_destroy(b);
}
END_TEST

START_TEST(test_http_port_in_use_is_refused_with_cause)
{
    metrics_board *b;
    http *h1, *h2 = NULL;
    char *cause = NULL, addr[64];

    metrics_board_create(&b);
    ck_assert_int_eq(http_create(&h1, "127.0.0.1:0", b, &cause), 0);
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", http_port(h1));
    ck_assert_int_lt(http_create(&h2, addr, b, &cause), 0);
    ck_assert_ptr_null(h2);
    ck_assert_ptr_nonnull(cause);
    ck_assert_msg(strstr(cause, addr) != NULL, "cause '%s' lacks the address", cause);
    free(cause);
    http_destroy(h1);
    metrics_board_destroy(b);
}
END_TEST

START_TEST(test_http_idle_connections_do_not_block_requests)
{
    metrics_board *b;
    http *h;
    char *cause = NULL, *r;
    int fds[60];

    metrics_board_create(&b);
    metrics_board_set_state(b, METRICS_SERVING);
    ck_assert_int_eq(http_create(&h, "127.0.0.1:0", b, &cause), 0);
    /* 60 connections, from 6 addresses, that send half a request line and then nothing. */
    for (int i = 0; i < 60; i++) {
        fds[i] = dial_from(2 + (unsigned)i % 6, http_port(h));
        ck_assert_int_ge(fds[i], 0);
        ck_assert_int_eq(write(fds[i], "GET /metr", 9), 9);
    }
    for (int i = 0; i < 20; i++) {
        r = fetch(http_port(h), "GET", "/healthz");
        ck_assert_int_eq(status_of(r), 200);
        free(r);
    }
    for (int i = 0; i < 60; i++)
        close(fds[i]);
    http_destroy(h);
    metrics_board_destroy(b);
}
END_TEST

/* Wait up to ticks times 100 ms (times tu_timeout_scale()) until `want` of the n fds are
 * closed by the server; return how many were closed (their fds set to -1). */
static int
wait_closed(int *fds, int n, int want, int ticks)
{
    int closed = 0, limit = (int)(ticks * tu_timeout_scale() + 0.5);

    for (int tick = 0; tick < limit && closed < want; tick++) {
        struct pollfd p[HTTP_MAX_CONNECTIONS + 8];
        for (int i = 0; i < n; i++)
            p[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
        (void)poll(p, (nfds_t)n, 100);
        for (int i = 0; i < n; i++) {
            char c;
            if (fds[i] < 0 || !(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            if (read(fds[i], &c, 1) <= 0) {
                close(fds[i]);
                fds[i] = -1;
                closed++;
            }
        }
    }
    return closed;
}

START_TEST(test_http_slow_headers_from_one_address_are_capped)
{
    enum { SLOW = HTTP_MAX_CONNECTIONS + 8 };
    metrics_board *b;
    http *h;
    char *cause = NULL, *r;
    int fds[SLOW], closed;

    metrics_board_create(&b);
    metrics_board_set_state(b, METRICS_SERVING);
    ck_assert_int_eq(http_create(&h, "127.0.0.1:0", b, &cause), 0);
    /*
     * More connections than the server's whole limit from one address, each
     * sending its request line and one header byte at a time: the server keeps
     * HTTP_MAX_CONNECTIONS_PER_IP of them and closes the rest at once.
     */
    for (int i = 0; i < SLOW; i++) {
        fds[i] = dial(http_port(h));
        ck_assert_int_ge(fds[i], 0);
        (void)send(fds[i], "GET /healthz HTTP/1.1\r\nX", 25, MSG_NOSIGNAL);
    }
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < SLOW; i++)
            if (fds[i] >= 0)
                (void)send(fds[i], "x", 1, MSG_NOSIGNAL);
        /* Another address is served at once, every round. */
        r = fetch_from(9, http_port(h), "GET", "/healthz");
        ck_assert_int_eq(status_of(r), 200);
        ck_assert_str_eq(body_of(r), "serving\n");
        free(r);
    }
    closed = wait_closed(fds, SLOW, SLOW - HTTP_MAX_CONNECTIONS_PER_IP, 50);
    ck_assert_int_eq(closed, SLOW - HTTP_MAX_CONNECTIONS_PER_IP);
    /* The ones kept are still open (until the idle timeout). */
    ck_assert_int_eq(wait_closed(fds, SLOW, 1, 3), 0);
    for (int i = 0; i < SLOW; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    http_destroy(h);
    metrics_board_destroy(b);
}
END_TEST

static Suite *
http_suite(void)
{
    Suite *s = suite_create("http");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_http_check_address_accepts_host_port_forms);
    tcase_add_test(tc, test_http_healthz_follows_state);
    tcase_add_test(tc, test_http_serves_metrics_stats_and_refuses_the_rest);
    tcase_add_test(tc, test_http_port_in_use_is_refused_with_cause);
    tcase_add_test(tc, test_http_idle_connections_do_not_block_requests);
    tcase_add_test(tc, test_http_slow_headers_from_one_address_are_capped);
    tcase_set_timeout(tc, TU_TCASE_TIMEOUT);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(http_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/*
 * testutil.c - helpers shared by the test suites: temp dirs, free ports,
 * running commands, starting/stopping the real emad binary on a private
 * endpoint, scaled deadlines (tu_timeout_scale, tu_wait_until) and the
 * one-case suite runner.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

/* Value of an environment variable, or fallback. */
static const char *
env_or(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    return v != NULL && v[0] != '\0' ? v : fallback;
}

const char *
tu_builddir(void)
{
    return env_or("top_builddir", ".");
}

const char *
tu_srcdir(void)
{
    return env_or("top_srcdir", ".");
}

const char *
tu_python(void)
{
    return env_or("PYTHON3", "/usr/bin/python3");
}

double
tu_timeout_scale(void)
{
    const char *v = getenv("EMAD_TEST_TIMEOUT_SCALE");
    char *end;
    double f;

    if (v == NULL || v[0] == '\0')
        return 1.0;
    f = strtod(v, &end);
    if (*end != '\0' || !(f > 0.0)) {
        fprintf(stderr, "EMAD_TEST_TIMEOUT_SCALE='%s' is not a number > 0; using 1\n", v);
        return 1.0;
    }
    return f;
}

uint64_t
tu_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void
tu_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int
tu_wait_until(int (*cond)(void *arg), void *arg, double seconds)
{
    uint64_t end = tu_now_ms() + (uint64_t)(seconds * tu_timeout_scale() * 1000.0);

    for (;;) {
        if (cond(arg))
            return 1;
        if (tu_now_ms() > end)
            return cond(arg) != 0;
        tu_sleep_ms(5);
    }
}

int
tu_run_tests(const char *name, const TTest *const *tests)
{
    Suite *s = suite_create(name);
    TCase *tc = tcase_create("core");
    SRunner *sr;
    int failed;

    tcase_set_timeout(tc, TU_TCASE_TIMEOUT);
    for (size_t i = 0; tests[i] != NULL; i++)
        tcase_add_test(tc, tests[i]);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}

char *
tu_tmpdir(void)
{
    char tmpl[] = "/tmp/emad-test-XXXXXX";
    char *dir = mkdtemp(tmpl);

    if (dir == NULL) {
        perror("mkdtemp");
        abort();
    }
    return strdup(dir);
}

void
tu_rmtree(const char *path)
{
    char cmd[1024];

    if (path == NULL || strncmp(path, "/tmp/emad-test-", 15) != 0)
        return;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
    (void)system(cmd);
}

int
tu_free_port(void)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int port;

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
        perror("tu_free_port");
        abort();
    }
    port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

/* A waitpid() poll: the pid, its result and the status. */
struct reap {
    pid_t pid, r;
    int status;
};

/* 1 if something accepts TCP connections on 127.0.0.1:port. */
static int
port_open(int port)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int ok;

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)port);
    ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

/* Print a file to stderr (the daemon's log after a failure). */
static void
dump_file(const char *path)
{
    size_t len;
    char *buf = tu_read_file(path, &len);

    if (buf != NULL) {
        fprintf(stderr, "---- %s ----\n%.*s---- end ----\n", path, (int)len, buf);
        free(buf);
    }
}

/* tu_wait_until() condition: the daemon accepts connections, or it has exited. */
static int
listening_or_dead(void *arg)
{
    tu_daemon *d = arg;

    return port_open(d->port) || !tu_daemon_alive(d);
}

/* tu_wait_until() condition: the daemon has exited (its status is kept in the struct). */
static int
reaped(void *arg)
{
    struct reap *r = arg;

    r->r = waitpid(r->pid, &r->status, WNOHANG);
    return r->r != 0;
}

int
tu_daemon_start(tu_daemon *d, const char *const *argv)
{
    return tu_daemon_start_at(d, 0, NULL, argv);
}

int
tu_daemon_start_at(tu_daemon *d, int port, const char *state_dir, const char *const *argv)
{
    const char *args[64];
    char bin[1024], port_arg[32];
    int n = 0;

    memset(d, 0, sizeof(*d));
    d->state_dir = state_dir != NULL ? strdup(state_dir) : tu_tmpdir();
    d->port = port > 0 ? port : tu_free_port();
    snprintf(d->url, sizeof(d->url), "tcp://127.0.0.1:%d", d->port);
    snprintf(d->log_path, sizeof(d->log_path), "%s/emad.log", d->state_dir);
    snprintf(bin, sizeof(bin), "%s/emad", tu_builddir());
    snprintf(port_arg, sizeof(port_arg), "%d", d->port);

    args[n++] = bin;
    args[n++] = "--listen";
    args[n++] = d->url;
    args[n++] = "--state-dir";
    args[n++] = d->state_dir;
    args[n++] = "--log-level";
    args[n++] = "debug";
    for (int i = 0; argv != NULL && argv[i] != NULL && n < 62; i++)
        args[n++] = argv[i];
    args[n] = NULL;

    d->pid = fork();
    if (d->pid < 0)
        return -1;
    if (d->pid == 0) {
        int fd = open(d->log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
        execv(bin, (char *const *)args);
        perror("execv emad");
        _exit(127);
    }
    if (tu_wait_until(listening_or_dead, d, TU_DAEMON_WAIT_S) && port_open(d->port))
        return 0;
    fprintf(stderr, "emad did not start on %s\n", d->url);
    dump_file(d->log_path);
    (void)tu_daemon_stop(d);
    return -1;
}

int
tu_daemon_alive(const tu_daemon *d)
{
    return d->pid > 0 && waitpid(d->pid, NULL, WNOHANG) == 0;
}

int
tu_daemon_stop(tu_daemon *d)
{
    int status = 0, result = -1;

    if (d->pid > 0) {
        struct reap r = {d->pid, 0, 0};

        (void)kill(d->pid, SIGTERM);
        if (tu_wait_until(reaped, &r, TU_DAEMON_WAIT_S) && r.r == d->pid) {
            status = r.status;
            result = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        }
        if (result == -1 && waitpid(d->pid, &status, WNOHANG) == 0) {
            (void)kill(d->pid, SIGKILL);
            (void)waitpid(d->pid, &status, 0);
            fprintf(stderr, "emad did not stop on SIGTERM\n");
        }
        if (result != 0)
            dump_file(d->log_path);
        d->pid = 0;
    }
    tu_rmtree(d->state_dir);
    free(d->state_dir);
    d->state_dir = NULL;
    return result;
}

int
tu_run(const char *cmd, char **out)
{
    FILE *p;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int status;
    char full[8192];

    snprintf(full, sizeof(full), "%s 2>&1", cmd);
    if ((p = popen(full, "r")) == NULL)
        return -1;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            buf = realloc(buf, cap);
            if (buf == NULL)
                abort();
        }
        size_t r = fread(buf + len, 1, 4096, p);
        if (r == 0)
            break;
        len += r;
    }
    if (buf != NULL)
        buf[len] = '\0';
    status = pclose(p);
    if (out != NULL)
        *out = buf != NULL ? buf : strdup("");
    else
        free(buf);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void *
tu_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long sz;

    if (f == NULL)
        return NULL;
    if (fseek(f, 0, SEEK_END) != 0 || (sz = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return NULL;
    }
    buf = malloc((size_t)sz + 1);
    if (buf == NULL || fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
        free(buf);
        fclose(f);
        return NULL;
    }
    buf[sz] = '\0';
    fclose(f);
    if (len != NULL)
        *len = (size_t)sz;
    return buf;
}

int
tu_write_file(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    int rc = 0;

    if (f == NULL)
        return -1;
    if (len > 0 && fwrite(buf, 1, len, f) != len)
        rc = -1;
    if (fclose(f) != 0)
        rc = -1;
    return rc;
}

uint64_t
tu_rand(uint64_t *state)
{
    uint64_t x = *state;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

float
tu_randf(uint64_t *state)
{
    return (float)((double)(tu_rand(state) >> 40) / (double)(1ULL << 23)) - 1.0f;
}

uint32_t
tu_f32_bits(float f)
{
    uint32_t u;

    memcpy(&u, &f, sizeof(u));
    return u;
}

uint64_t
tu_load_u64le(const unsigned char *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

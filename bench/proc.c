/*
 * proc.c - server processes started by the benchmarks.
 *
 * Each proc owns a temporary directory (its log, and whatever the server
 * writes there). Every proc between proc_prepare() and proc_stop() is in a
 * registry, so that a SIGINT, SIGTERM or SIGHUP, taken by a thread of its
 * own (the signals are blocked everywhere else), can kill the children and
 * remove the directories before the benchmark exits. Children get SIGKILL
 * as their parent-death signal, so none outlives a benchmark killed with
 * SIGKILL either. The registry is this module's only mutable state.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#define PROC_MAX 8
#define STOP_TIMEOUT_SEC 10.0

/* The procs to clean up on a signal, guarded by lock. */
static struct {
    pthread_mutex_t lock;
    proc *live[PROC_MAX];
    sigset_t signals; /* blocked in every thread, taken by the signal thread */
} reg = {.lock = PTHREAD_MUTEX_INITIALIZER};

double
proc_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void
proc_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    (void)nanosleep(&ts, NULL);
}

int
proc_free_port(void)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int fd, port = -1;

    if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

void
proc_dump_file(const char *path)
{
    char buf[4096];
    size_t n;
    FILE *f = fopen(path, "r");

    if (f == NULL)
        return;
    fprintf(stderr, "--- %s ---\n", path);
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
        (void)fwrite(buf, 1, n, stderr);
    fprintf(stderr, "--- end ---\n");
    fclose(f);
}

/* nftw callback: remove one entry (children come first with FTW_DEPTH). */
static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Remove p's temporary directory and everything in it. */
static void
remove_dir(proc *p)
{
    if (p->dir[0] != '\0')
        (void)nftw(p->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    p->dir[0] = '\0';
}

/* Add p to the registry, or remove it (add 0). Caller holds reg.lock. */
static void
registry_set(proc *p, int add)
{
    int i;

    for (i = 0; i < PROC_MAX; i++) {
        if (add && reg.live[i] == NULL) {
            reg.live[i] = p;
            return;
        }
        if (!add && reg.live[i] == p)
            reg.live[i] = NULL;
    }
}

/*
 * The signal thread: waits for SIGINT, SIGTERM or SIGHUP, then kills and
 * reaps every registered child, removes the directories and exits with
 * 128 + the signal number. Holds the lock to the end, so a concurrent
 * proc_stop() cannot reap or remove the same things.
 */
static void *
signal_main(void *arg)
{
    int sig = 0, i;

    (void)arg;
    if (sigwait(&reg.signals, &sig) != 0)
        return NULL;
    pthread_mutex_lock(&reg.lock);
    fprintf(stderr, "bench: signal %d: stopping the servers and removing their directories\n", sig);
    for (i = 0; i < PROC_MAX; i++) {
        proc *p = reg.live[i];

        if (p == NULL)
            continue;
        if (p->pid > 0) {
            (void)kill(p->pid, SIGKILL);
            (void)waitpid(p->pid, NULL, 0);
        }
        remove_dir(p);
    }
    _exit(128 + sig);
}

int
proc_init(void)
{
    pthread_t th;

    sigemptyset(&reg.signals);
    sigaddset(&reg.signals, SIGINT);
    sigaddset(&reg.signals, SIGTERM);
    sigaddset(&reg.signals, SIGHUP);
    if ((errno = pthread_sigmask(SIG_BLOCK, &reg.signals, NULL)) != 0 ||
        (errno = pthread_create(&th, NULL, signal_main, NULL)) != 0) {
        perror("bench: signal thread");
        return -1;
    }
    (void)pthread_detach(th);
    return 0;
}

int
proc_prepare(proc *p, const char *name)
{
    memset(p, 0, sizeof(*p));
    p->name = name;
    p->pid = -1;
    (void)snprintf(p->dir, sizeof(p->dir), "/tmp/emad-bench-%s.XXXXXX", name);
    pthread_mutex_lock(&reg.lock);
    if (mkdtemp(p->dir) == NULL) {
        pthread_mutex_unlock(&reg.lock);
        fprintf(stderr, "bench: mkdtemp %s: %s\n", p->dir, strerror(errno));
        p->dir[0] = '\0';
        return -1;
    }
    registry_set(p, 1);
    pthread_mutex_unlock(&reg.lock);
    (void)snprintf(p->log, sizeof(p->log), "%s/%s.log", p->dir, name);
    return 0;
}

int
proc_spawn(proc *p, const char *const argv[])
{
    sigset_t none;
    pid_t parent = getpid();
    int fd;

    fflush(NULL);
    pthread_mutex_lock(&reg.lock);
    p->pid = fork();
    if (p->pid == 0) {
        /* The child: only async-signal-safe calls until exec. */
        sigemptyset(&none);
        (void)sigprocmask(SIG_SETMASK, &none, NULL);
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
            _exit(127);
        fd = open(p->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd >= 0) {
            (void)dup2(fd, STDOUT_FILENO);
            (void)dup2(fd, STDERR_FILENO);
        }
        execv(argv[0], (char *const *)argv); /* execv does not write them */
        if (write(STDERR_FILENO, "bench: exec failed\n", 19) < 0)
            _exit(126);
        _exit(127);
    }
    pthread_mutex_unlock(&reg.lock);
    if (p->pid < 0) {
        perror("bench: fork");
        return -1;
    }
    return 0;
}

int
proc_running(proc *p)
{
    int status;

    if (p->pid <= 0)
        return 0;
    if (waitpid(p->pid, &status, WNOHANG) != p->pid)
        return 1;
    fprintf(stderr, "bench: %s (pid %d) exited (status 0x%x)\n", p->name, (int)p->pid, status);
    p->pid = -1;
    proc_dump_file(p->log);
    return 0;
}

int
proc_stop(proc *p)
{
    double deadline;
    int status = 0, rc = 0;

    pthread_mutex_lock(&reg.lock);
    if (p->pid > 0) {
        (void)kill(p->pid, SIGTERM);
        deadline = proc_now() + STOP_TIMEOUT_SEC;
        while (waitpid(p->pid, &status, WNOHANG) == 0) {
            if (proc_now() > deadline) {
                fprintf(stderr, "bench: %s ignored SIGTERM for %.0f s; killing it\n", p->name,
                        STOP_TIMEOUT_SEC);
                (void)kill(p->pid, SIGKILL);
                (void)waitpid(p->pid, &status, 0);
                break;
            }
            proc_sleep_ms(10);
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "bench: %s did not exit cleanly (status 0x%x)\n", p->name, status);
            proc_dump_file(p->log);
            rc = -1;
        }
        p->pid = -1;
    }
    remove_dir(p);
    registry_set(p, 0);
    pthread_mutex_unlock(&reg.lock);
    return rc;
}

int
proc_read_mem(const proc *p, proc_mem *m)
{
    char path[64], line[256];
    unsigned long long kb;
    int found = 0;
    FILE *f;

    (void)snprintf(path, sizeof(path), "/proc/%d/status", (int)p->pid);
    if ((f = fopen(path, "r")) == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (sscanf(line, "VmRSS: %llu kB", &kb) == 1) {
            m->rss = (uint64_t)kb * 1024;
            found |= 1;
        } else if (sscanf(line, "VmHWM: %llu kB", &kb) == 1) {
            m->hwm = (uint64_t)kb * 1024;
            found |= 2;
        }
    }
    fclose(f);
    return found == 3 ? 0 : -1;
}

int
proc_reset_peak(const proc *p)
{
    char path[64];
    int fd, rc = 0;

    (void)snprintf(path, sizeof(path), "/proc/%d/clear_refs", (int)p->pid);
    if ((fd = open(path, O_WRONLY | O_CLOEXEC)) < 0)
        return -1;
    if (write(fd, "5", 1) != 1)
        rc = -1;
    close(fd);
    return rc;
}

int
proc_read_cpu(const proc *p, double *sec)
{
    char path[64], buf[1024], *rp;
    unsigned long long ut = 0, st = 0;
    long hz = sysconf(_SC_CLK_TCK);
    size_t n;
    FILE *f;

    (void)snprintf(path, sizeof(path), "/proc/%d/stat", (int)p->pid);
    if (p->pid <= 0 || hz <= 0 || (f = fopen(path, "r")) == NULL)
        return -1;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* Fields after the command name (which may hold spaces): state is field 3, utime 14,
     * stime 15. */
    if ((rp = strrchr(buf, ')')) == NULL ||
        sscanf(rp + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    *sec = (double)(ut + st) / (double)hz;
    return 0;
}

double
proc_self_cpu(double *faults)
{
    struct rusage u;

    if (getrusage(RUSAGE_SELF, &u) != 0)
        return 0.0;
    if (faults != NULL)
        *faults = (double)u.ru_minflt;
    return (double)u.ru_utime.tv_sec + (double)u.ru_utime.tv_usec / 1e6 +
           (double)u.ru_stime.tv_sec + (double)u.ru_stime.tv_usec / 1e6;
}

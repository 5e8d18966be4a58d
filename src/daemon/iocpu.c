/*
 * iocpu.c - find nanomsg's I/O thread and hold it on a CPU (see iocpu.h).
 *
 * The thread is found once, when the server opens its socket; afterwards
 * the loop thread holds it on its CPU from the first large push averaged on
 * the threadpool until the daemon has been idle for a while. Only the loop
 * thread calls these functions.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <nanomsg/nn.h>
#include <nanomsg/reqrep.h>

#include "common/cause.h"
#include "base/log.h"
#include "daemon/iocpu.h"
#include "daemon/server.h"

/* The CPUs of set as ranges ("0-3,6"), cut short with "..." if they do not fit in buf. */
static const char *
cpu_list(const cpu_set_t *set, char *buf, size_t size)
{
    size_t off = 0;

    buf[0] = '\0';
    for (int c = 0; c < CPU_SETSIZE; c++) {
        int end = c;
        if (!CPU_ISSET(c, set))
            continue;
        while (end + 1 < CPU_SETSIZE && CPU_ISSET(end + 1, set))
            end++;
        int n = end > c ? snprintf(buf + off, size - off, "%s%d-%d", off ? "," : "", c, end)
                        : snprintf(buf + off, size - off, "%s%d", off ? "," : "", c);
        if (n < 0 || (size_t)n >= size - off) {
            snprintf(buf + (off < size - 4 ? off : size - 4), 4, "...");
            break;
        }
        off += (size_t)n;
        c = end;
    }
    return buf;
}

/*
 * Give every thread of this process other than the caller whose affinity
 * is exactly {cpu} the set all back. Returns that thread if there was
 * exactly one, else 0 (none, or a nanomsg with several I/O threads).
 */
static pid_t
free_threads_on(int cpu, const cpu_set_t *all)
{
    pid_t self = (pid_t)syscall(SYS_gettid), found = 0;
    struct dirent *e;
    cpu_set_t set;
    int n = 0;
    DIR *d;

    if ((d = opendir("/proc/self/task")) == NULL)
        return 0;
    while ((e = readdir(d)) != NULL) {
        pid_t tid = (pid_t)atoi(e->d_name);
        if (tid <= 0 || tid == self || sched_getaffinity(tid, sizeof(set), &set) != 0 ||
            CPU_COUNT(&set) != 1 || !CPU_ISSET(cpu, &set))
            continue;
        (void)sched_setaffinity(tid, sizeof(*all), all);
        found = tid;
        n++;
    }
    closedir(d);
    return n == 1 ? found : 0;
}

/*
 * Open the server's socket and find nanomsg's I/O thread (io).
 *
 * nanomsg starts that thread, which receives and sends every message, with
 * the process's first socket, and a new thread inherits its creator's CPU
 * affinity: the calling thread narrows its own affinity to the chosen CPU
 * around nn_socket() and restores it, and the one thread then left on that
 * CPU alone is nanomsg's. free_threads_on() gives it every CPU back at
 * once (iocpu_hold() holds it on its CPU while large pushes arrive); threads
 * created later (the libuv threadpool, HTTP) never see the narrowed set.
 *
 * io_cpu: SERVER_IO_CPU_AUTO picks the highest-numbered CPU this process
 * may run on, and none when it may run on only one or cannot change its
 * affinity (a warning); SERVER_IO_CPU_OFF none; otherwise the CPU number,
 * which must be in the process's set. Without a CPU, or when nanomsg had
 * started before (tests), io->tid stays 0 and nothing is ever held.
 * Returns the socket, or a negative code with *cause set.
 */
int
iocpu_socket(iocpu *io, int io_cpu, char **cause)
{
    int sock, cpu = -1, e = 0;
    cpu_set_t one;

    if (io_cpu != SERVER_IO_CPU_OFF &&
        (e = pthread_getaffinity_np(pthread_self(), sizeof(io->all), &io->all)) == 0) {
        if (io_cpu == SERVER_IO_CPU_AUTO) {
            if (CPU_COUNT(&io->all) >= 2)
                for (int c = CPU_SETSIZE - 1; c >= 0 && cpu < 0; c--)
                    if (CPU_ISSET(c, &io->all))
                        cpu = c;
        } else if (io_cpu >= 0 && io_cpu < CPU_SETSIZE && CPU_ISSET(io_cpu, &io->all)) {
            cpu = io_cpu;
        } else {
            char list[128];
            return cause_set(cause, -EINVAL,
                             "io-cpu %d is not among the CPUs this process may run on (%s)", io_cpu,
                             cpu_list(&io->all, list, sizeof(list)));
        }
        if (cpu >= 0) {
            CPU_ZERO(&one);
            CPU_SET(cpu, &one);
            if ((e = pthread_setaffinity_np(pthread_self(), sizeof(one), &one)) != 0)
                cpu = -1;
        }
    }
    if (e != 0) {
        if (io_cpu != SERVER_IO_CPU_AUTO)
            return cause_set(cause, -e, "io-cpu %d: cannot set the CPU affinity: %s", io_cpu,
                             strerror(e));
        log_warn("event=io_thread_free error=\"%s\" (cannot set the CPU affinity; io-cpu ignored)",
                 strerror(e));
    }
    sock = nn_socket(AF_SP_RAW, NN_REP);
    e = nn_errno();
    if (cpu >= 0) {
        if (pthread_setaffinity_np(pthread_self(), sizeof(io->all), &io->all) != 0)
            log_warn("event=affinity_restore_failed cpu=%d", cpu); /* the loop stays on cpu */
        if (sock >= 0 && (io->tid = free_threads_on(cpu, &io->all)) != 0) {
            io->cpu = cpu;
            log_info("event=io_thread tid=%d cpu=%d (held there while large pushes arrive)",
                     (int)io->tid, cpu);
        } else if (sock >= 0) {
            log_debug("event=io_thread_not_found cpu=%d (nanomsg started before, or with "
                      "several I/O threads)",
                      cpu);
        }
    }
    if (sock < 0)
        return cause_set(cause, -e, "nn_socket: %s", nn_strerror(e));
    return sock;
}

/*
 * Hold nanomsg's I/O thread on its CPU (on), or let the scheduler place it
 * again (off). Large pushes hold it from their first chunk averaged on the
 * threadpool until the daemon has been idle for cfg.idle_release_ms: left free,
 * the scheduler moved it between CPUs at about every message of a push
 * that followed a pause, and such pushes ran 15-25% slower; held all the
 * time, it lost ~9% to many concurrent small pushes from clients on the
 * same CPUs (docs/OPERATIONS.md#cpus).
 */
void
iocpu_hold(iocpu *io, int on)
{
    cpu_set_t one;
    int rc;

    if (io->tid == 0 || io->held == on)
        return;
    CPU_ZERO(&one);
    CPU_SET(io->cpu, &one);
    rc = on ? sched_setaffinity(io->tid, sizeof(one), &one)
            : sched_setaffinity(io->tid, sizeof(io->all), &io->all);
    if (rc != 0) {
        log_warn("event=io_thread_affinity_failed tid=%d error=\"%s\" (left to the scheduler)",
                 (int)io->tid, strerror(errno));
        io->tid = 0;
        return;
    }
    io->held = on;
    log_debug("event=io_thread_%s cpu=%d", on ? "held" : "released", io->cpu);
}

/*
 * iocpu.h - nanomsg's I/O thread and the CPU it is held on.
 *
 * nanomsg receives and sends every message on one I/O thread of its own.
 * The server finds that thread when it opens its socket and holds it on
 * one CPU while large pushes arrive, so the scheduler does not move it
 * between CPUs at every message (docs/OPERATIONS.md#cpus).
 */
#ifndef EMAD_IOCPU_H
#define EMAD_IOCPU_H

#include <sched.h>
#include <sys/types.h>

/* The I/O thread of the server's socket. */
typedef struct iocpu {
    pid_t tid;     /* nanomsg's I/O thread; 0: unknown, never pinned */
    int cpu;       /* where iocpu_hold() holds it */
    int held;      /* it is on cpu alone now */
    cpu_set_t all; /* the CPUs the daemon may run on */
} iocpu;

/*
 * Open the server's raw REP socket and find nanomsg's I/O thread (io, zeroed
 * by the caller). io_cpu is server_config.io_cpu. Returns the socket, or a
 * negative code with *cause set (malloc'd).
 */
int iocpu_socket(iocpu *io, int io_cpu, char **cause);

/* Hold the I/O thread on its CPU (on), or let the scheduler place it again (off). */
void iocpu_hold(iocpu *io, int on);

#endif

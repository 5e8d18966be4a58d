/*
 * proc.h - server processes started by the benchmarks (emad, redis-server,
 * bench_pushpull's raw nanomsg server):
 * a private temporary directory each, fork/exec with the output in a log
 * file there, clean stops, and the memory figures of /proc/PID/status.
 */
#ifndef BENCH_PROC_H
#define BENCH_PROC_H

#include <stdint.h>
#include <sys/types.h>

/* One child server process and its temporary directory. */
typedef struct proc {
    const char *name; /* for messages: "emad", "redis-server" (borrowed) */
    pid_t pid;        /* -1 when not running */
    char dir[64];     /* temporary directory, removed by proc_stop() */
    char log[96];     /* dir/NAME.log: the child's stdout and stderr */
} proc;

/* Memory of a running process, in bytes. */
typedef struct proc_mem {
    uint64_t rss; /* VmRSS: resident now */
    uint64_t hwm; /* VmHWM: peak resident since start or proc_reset_peak() */
} proc_mem;

/*
 * Block SIGINT, SIGTERM and SIGHUP in this and every later thread and start
 * a thread that, on one of them, kills the children and removes the
 * temporary directories of every proc not yet stopped, then exits. Call
 * first in main(), before any other thread exists. Returns 0 or -1.
 */
int proc_init(void);

/*
 * Create p's temporary directory (/tmp/emad-bench-NAME.XXXXXX) and its log
 * path; p is registered for cleanup until proc_stop(). Returns 0 or -1
 * (message printed).
 */
int proc_prepare(proc *p, const char *name);

/*
 * Fork and exec argv[0] with argv (borrowed), stdout and stderr to p->log, signals
 * unblocked, and SIGKILL as its parent-death signal (the child dies with
 * the benchmark). Returns 0 with p->pid set, or -1 (message printed).
 */
int proc_spawn(proc *p, const char *const argv[]);

/* 1 if p is running; 0 if it exited (reaped, status and log printed). */
int proc_running(proc *p);

/*
 * Stop p with SIGTERM (SIGKILL after 10 s), reap it, remove its temporary
 * directory and unregister it. Safe on a proc never spawned. Returns 0 after
 * exit status 0 (or when there was nothing to stop), -1 otherwise (log printed).
 */
int proc_stop(proc *p);

/* Read p's VmRSS and VmHWM. Returns 0 or -1. */
int proc_read_mem(const proc *p, proc_mem *m);

/*
 * CPU time (user + system, every thread) p has used since it started, in
 * seconds, from /proc/PID/stat (clock ticks). Returns 0 or -1.
 */
int proc_read_cpu(const proc *p, double *sec);

/*
 * CPU time (user + system, every thread) this process has used, in seconds,
 * and (if faults is not NULL) its minor page faults so far (getrusage).
 */
double proc_self_cpu(double *faults);

/* Reset p's VmHWM to its current VmRSS (clear_refs 5). Returns 0 or -1. */
int proc_reset_peak(const proc *p);

/* A TCP port on 127.0.0.1 that was free a moment ago, or -1. */
int proc_free_port(void);

/* Print a file to stderr (a child's log after a failure). */
void proc_dump_file(const char *path);

/* Monotonic time in seconds. */
double proc_now(void);

/* Sleep for ms milliseconds. */
void proc_sleep_ms(long ms);

#endif /* BENCH_PROC_H */

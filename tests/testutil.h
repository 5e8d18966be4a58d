/*
 * testutil.h - helpers shared by the test suites: private temp dirs and
 * endpoints, starting/stopping the real emad binary, waiting for a
 * condition against a scaled deadline, and running a suite of one test
 * case.
 *
 * Paths come from the environment that `make check` sets: top_builddir
 * (binaries) and top_srcdir (sources); both default to ".". Every time
 * limit is a safety net of minutes multiplied by EMAD_TEST_TIMEOUT_SCALE:
 * tests wait for conditions, never for a time.
 */
#ifndef EMAD_TESTUTIL_H
#define EMAD_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <check.h>

/* Absolute build / source directory. */
const char *tu_builddir(void);
const char *tu_srcdir(void);

/*
 * Seconds a Check test case may run: a safety net against a hang, never a
 * measure of speed. Check multiplies it by $CK_TIMEOUT_MULTIPLIER, which
 * `make check` sets from EMAD_TEST_TIMEOUT_SCALE.
 */
#define TU_TCASE_TIMEOUT 300

/*
 * Run a suite named name of one test case holding the NULL-terminated
 * tests (TU_TCASE_TIMEOUT each; output as CK_VERBOSITY says, normal by
 * default). Returns the exit status for main: 0 if every test passed.
 */
int tu_run_tests(const char *name, const TTest *const *tests);

/* Python 3 with numpy ($PYTHON3, default /usr/bin/python3). */
const char *tu_python(void);

/*
 * The factor every test deadline is multiplied by: $EMAD_TEST_TIMEOUT_SCALE
 * (a number > 0; default 1). `make check` also passes it to Check as
 * CK_TIMEOUT_MULTIPLIER, which scales every tcase timeout.
 */
double tu_timeout_scale(void);

/* Milliseconds since an arbitrary fixed point (CLOCK_MONOTONIC). */
uint64_t tu_now_ms(void);

/* Sleep for ms milliseconds. */
void tu_sleep_ms(long ms);

/*
 * Poll cond(arg) every few milliseconds until it returns nonzero (1) or
 * seconds * tu_timeout_scale() have passed (0). Deadlines are generous
 * safety nets: a test waits for a condition, never for a time.
 */
int tu_wait_until(int (*cond)(void *arg), void *arg, double seconds);

/* New private temp dir (malloc'd path; removed by tu_rmtree). Aborts on failure. */
char *tu_tmpdir(void);

/* Remove a directory tree (best effort). */
void tu_rmtree(const char *path);

/* A TCP port on 127.0.0.1 that was free a moment ago. */
int tu_free_port(void);

/* Seconds (before scaling) the daemon gets to start listening or to stop. */
#define TU_DAEMON_WAIT_S 120

/* A running emad. */
typedef struct tu_daemon {
    pid_t pid;
    int port;
    char url[128];      /* tcp://127.0.0.1:PORT */
    char *state_dir;    /* private temp dir passed as --state-dir */
    char log_path[512]; /* the daemon's stderr */
} tu_daemon;

/*
 * Start $top_builddir/emad on a free port with a private --state-dir and
 * --log-level debug, plus the NULL-terminated extra arguments in argv
 * (may be NULL). Waits until the port accepts connections (at most
 * TU_DAEMON_WAIT_S seconds, scaled).
 * Returns 0, or -1 if it did not come up (its log is printed).
 */
int tu_daemon_start(tu_daemon *d, const char *const *argv);

/*
 * tu_daemon_start() on a given port (0: a free one) with a given state
 * directory (NULL: a new one; an existing one is reused, e.g. to restart a
 * daemon that was killed).
 */
int tu_daemon_start_at(tu_daemon *d, int port, const char *state_dir, const char *const *argv);

/*
 * SIGTERM the daemon and wait (at most TU_DAEMON_WAIT_S seconds, scaled,
 * then SIGKILL). Returns its exit
 * status (0 for a clean shutdown) or -1 if it had to be killed or died by a
 * signal. Removes the state dir.
 */
int tu_daemon_stop(tu_daemon *d);

/* 1 if the process is still running. */
int tu_daemon_alive(const tu_daemon *d);

/* Run a shell command, capture stdout+stderr into a malloc'd string (*out, may be NULL). Returns
 * exit status. */
int tu_run(const char *cmd, char **out);

/* Read a whole file into a malloc'd buffer; NULL on error. */
void *tu_read_file(const char *path, size_t *len);

/* Write a buffer to a file; 0 on success. */
int tu_write_file(const char *path, const void *buf, size_t len);

/* Bit pattern of a float. */
uint32_t tu_f32_bits(float f);

/* Little-endian u64 at p (any alignment). */
uint64_t tu_load_u64le(const unsigned char *p);

/* Deterministic pseudo-random generator (xorshift64*). */
uint64_t tu_rand(uint64_t *state);
float tu_randf(uint64_t *state); /* uniform in [-1, 1) */

#endif

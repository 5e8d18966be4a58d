/*
 * notify.h - the daemon's side of systemd's service protocol (sd_notify):
 * READY=1 once snapshots are loaded and requests are served, STOPPING=1
 * on shutdown, RELOADING=1 around a SIGHUP reload, STATUS= lines, and
 * WATCHDOG=1 keep-alives sent by a timer on the event loop itself, so a
 * loop that stops turning stops the keep-alives and systemd restarts us.
 *
 * Without $NOTIFY_SOCKET (not started by systemd with Type=notify) every
 * call does nothing.
 */
#ifndef EMAD_NOTIFY_H
#define EMAD_NOTIFY_H

#include <uv.h>

typedef struct notify notify;

/*
 * Start the watchdog keep-alives on loop if systemd asked for them
 * ($WATCHDOG_USEC), at half the interval; the timer is unreferenced so it
 * does not keep uv_run() going. Returns 0 or a negative libuv code.
 */
int notify_create(notify **out, uv_loop_t *loop);

/* Stop the keep-alives and close the timer (loop thread). NULL accepted. */
void notify_close(notify *n);

/* Free after the loop has run the close callback. NULL accepted. */
void notify_destroy(notify *n);

/* Tell systemd we serve requests now. */
void notify_ready(const char *status);

/* Tell systemd we are shutting down (writing the last snapshots). */
void notify_stopping(const char *status);

/* Tell systemd a reload starts; notify_ready() ends it. */
void notify_reloading(void);

#endif

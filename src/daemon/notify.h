/*
 * notify.h - the daemon's side of systemd's service protocol (sd_notify):
 * READY=1 once snapshots are loaded and requests are served, STOPPING=1
 * on shutdown, RELOADING=1 around a SIGHUP reload, STATUS= lines, and
 * WATCHDOG=1 keep-alives, sent by a thread of their own while a heartbeat
 * timer on the event loop shows that the loop turns: a loop that stops
 * turning stops the keep-alives and systemd restarts us.
 *
 * Without $NOTIFY_SOCKET (not started by systemd with Type=notify) every
 * call does nothing.
 */
#ifndef EMAD_NOTIFY_H
#define EMAD_NOTIFY_H

#include <uv.h>

typedef struct notify notify;

/*
 * Start the watchdog keep-alives if systemd asked for them ($WATCHDOG_USEC =
 * W): a heartbeat timer on loop every W/8 (unreferenced, so it does not
 * keep uv_run() going) and a thread that sends WATCHDOG=1 every W/4 while
 * the last heartbeat is at most W/2 old. Returns 0 or a negative code.
 */
int notify_create(notify **out, uv_loop_t *loop);

/* Stop the keep-alives: join the thread, close the timer (loop thread). NULL accepted. */
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

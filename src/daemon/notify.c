/*
 * notify.c - sd_notify messages and the event-loop watchdog (see notify.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <systemd/sd-daemon.h>

#include "base/log.h"
#include "daemon/notify.h"
#include "base/xmalloc.h"

struct notify {
    uv_timer_t timer;
    int started;
};

/* Timer callback: the loop turns, tell the watchdog. */
static void
on_watchdog(uv_timer_t *t)
{
    (void)t;
    (void)sd_notify(0, "WATCHDOG=1");
}

int
notify_create(notify **out, uv_loop_t *loop)
{
    notify *n = xcalloc(1, sizeof(*n));
    uint64_t usec = 0, ms;
    int rc;

    *out = n;
    if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0)
        return 0;
    ms = usec / 2000;
    if (ms == 0)
        ms = 1;
    if ((rc = uv_timer_init(loop, &n->timer)) < 0)
        return rc;
    n->started = 1;
    uv_unref((uv_handle_t *)&n->timer);
    uv_timer_start(&n->timer, on_watchdog, 0, ms);
    log_info("event=watchdog_enabled interval_ms=%llu", (unsigned long long)ms);
    return 0;
}

void
notify_close(notify *n)
{
    if (n == NULL || !n->started)
        return;
    n->started = 0;
    uv_close((uv_handle_t *)&n->timer, NULL);
}

void
notify_destroy(notify *n)
{
    free(n);
}

void
notify_ready(const char *status)
{
    (void)sd_notifyf(0, "READY=1\nSTATUS=%s", status);
}

void
notify_stopping(const char *status)
{
    (void)sd_notifyf(0, "STOPPING=1\nSTATUS=%s", status);
}

void
notify_reloading(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    (void)sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading the configuration",
                     (unsigned long long)ts.tv_sec * 1000000ULL +
                         (unsigned long long)ts.tv_nsec / 1000);
}

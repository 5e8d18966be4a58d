/*
 * notify.c - sd_notify messages and the event-loop watchdog (see notify.h).
 *
 * The watchdog has two halves. On the loop, a heartbeat timer stores the
 * time each time it runs (every WatchdogSec/8). A thread of its own wakes
 * every WatchdogSec/4 and sends WATCHDOG=1 only if the last heartbeat is
 * at most WatchdogSec/2 old. So the keep-alives never depend on when a
 * loop callback happens to run: work on the threadpool, or a request that
 * holds the loop for less than WatchdogSec/2, never costs one, while a
 * loop that stops turning stops them within WatchdogSec/2 and systemd
 * restarts the daemon within WatchdogSec after that.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <systemd/sd-daemon.h>

#include "base/log.h"
#include "daemon/notify.h"
#include "base/xmalloc.h"

struct notify {
    uv_timer_t timer;
    int started;           /* timer and thread running */
    uint64_t interval_ms;  /* systemd's WatchdogSec */
    _Atomic uint64_t beat; /* monotonic ms of the loop's last heartbeat, 0 before the first */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop; /* under mu */
};

/* Monotonic milliseconds (the clock the thread and the loop share). */
static uint64_t
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Loop: the loop turns; record when. */
static void
on_heartbeat(uv_timer_t *t)
{
    notify *n = t->data;

    atomic_store(&n->beat, now_ms());
}

/*
 * Watchdog thread: every interval/4, WATCHDOG=1 if the loop's heartbeat is
 * at most interval/2 old; logs once when it withholds them and when they
 * resume.
 */
static void *
watchdog_main(void *arg)
{
    notify *n = arg;
    uint64_t period = n->interval_ms / 4 > 0 ? n->interval_ms / 4 : 1;
    int withheld = 0;

    pthread_mutex_lock(&n->mu);
    while (!n->stop) {
        struct timespec until;
        uint64_t beat = atomic_load(&n->beat), age = now_ms() - beat;

        if (beat == 0) {
            /* The loop has not run yet: no keep-alive before READY=1. */
        } else if (age <= n->interval_ms / 2) {
            (void)sd_notify(0, "WATCHDOG=1");
            if (withheld)
                log_info("event=watchdog_resumed");
            withheld = 0;
        } else if (!withheld) {
            withheld = 1;
            log_error("event=watchdog_withheld loop_idle_ms=%llu watchdog_ms=%llu (the event "
                      "loop has not turned: keep-alives stop, systemd restarts the daemon)",
                      (unsigned long long)age, (unsigned long long)n->interval_ms);
        }
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += (time_t)(period / 1000);
        until.tv_nsec += (long)(period % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        /* Until the period is over (a wakeup may come early) or notify_close(). */
        while (!n->stop && pthread_cond_timedwait(&n->cv, &n->mu, &until) == 0)
            ;
    }
    pthread_mutex_unlock(&n->mu);
    return NULL;
}

int
notify_create(notify **out, uv_loop_t *loop)
{
    notify *n = xcalloc(1, sizeof(*n));
    uint64_t usec = 0, beat_ms;
    int rc;

    *out = n;
    if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0)
        return 0;
    n->interval_ms = usec / 1000 > 0 ? usec / 1000 : 1;
    beat_ms = n->interval_ms / 8 > 0 ? n->interval_ms / 8 : 1;
    if ((rc = uv_timer_init(loop, &n->timer)) < 0)
        return rc;
    n->timer.data = n;
    atomic_store(&n->beat, 0); /* the first heartbeat comes from the running loop */
    (void)pthread_mutex_init(&n->mu, NULL);
    (void)pthread_cond_init(&n->cv, NULL);
    if ((rc = pthread_create(&n->thread, NULL, watchdog_main, n)) != 0) {
        uv_close((uv_handle_t *)&n->timer, NULL);
        (void)pthread_cond_destroy(&n->cv);
        (void)pthread_mutex_destroy(&n->mu);
        return -rc;
    }
    n->started = 1;
    uv_unref((uv_handle_t *)&n->timer);
    uv_timer_start(&n->timer, on_heartbeat, beat_ms, beat_ms);
    log_info("event=watchdog_enabled watchdog_ms=%llu keepalive_ms=%llu heartbeat_ms=%llu",
             (unsigned long long)n->interval_ms, (unsigned long long)(n->interval_ms / 4),
             (unsigned long long)beat_ms);
    return 0;
}

void
notify_close(notify *n)
{
    if (n == NULL || !n->started)
        return;
    n->started = 0;
    pthread_mutex_lock(&n->mu);
    n->stop = 1;
    pthread_cond_signal(&n->cv);
    pthread_mutex_unlock(&n->mu);
    (void)pthread_join(n->thread, NULL);
    (void)pthread_cond_destroy(&n->cv);
    (void)pthread_mutex_destroy(&n->mu);
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

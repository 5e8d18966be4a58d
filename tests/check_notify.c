/*
 * check_notify.c - the watchdog keep-alives of src/daemon/notify.c, read
 * from a NOTIFY_SOCKET this test binds (as systemd would), with a watchdog
 * interval W of 1 s times EMAD_TEST_TIMEOUT_SCALE: WATCHDOG=1 keeps coming
 * (no gap of W) while the loop turns, also while the threadpool is busy
 * for 3 W; it stops while the loop itself is held for 3 W, and comes back
 * when the loop turns again.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <check.h>
#include <uv.h>

#include "daemon/notify.h"
#include "testutil.h"

#define MAX_PINGS 4096

/* The pings received: times in tu_now_ms(). */
typedef struct pings {
    int fd;
    pthread_mutex_t mu;
    uint64_t at[MAX_PINGS];
    size_t n;
} pings;

/* Reader thread: record the time of every WATCHDOG=1 until "quit" comes. */
static void *
reader(void *arg)
{
    pings *p = arg;
    char buf[512];

    for (;;) {
        ssize_t got = recv(p->fd, buf, sizeof(buf) - 1, 0);
        if (got <= 0)
            break;
        buf[got] = '\0';
        if (strcmp(buf, "quit") == 0)
            break;
        if (strstr(buf, "WATCHDOG=1") == NULL)
            continue;
        pthread_mutex_lock(&p->mu);
        if (p->n < MAX_PINGS)
            p->at[p->n++] = tu_now_ms();
        pthread_mutex_unlock(&p->mu);
    }
    return NULL;
}

/* The longest time without a ping within [from, to] (the window's ends count as pings' bounds). */
static uint64_t
longest_gap(pings *p, uint64_t from, uint64_t to)
{
    uint64_t last = from, gap = 0;

    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < p->n; i++) {
        if (p->at[i] < from || p->at[i] > to)
            continue;
        if (p->at[i] - last > gap)
            gap = p->at[i] - last;
        last = p->at[i];
    }
    pthread_mutex_unlock(&p->mu);
    return to - last > gap ? to - last : gap;
}

/* Pings within [from, to]. */
static size_t
count_pings(pings *p, uint64_t from, uint64_t to)
{
    size_t n = 0;

    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < p->n; i++)
        n += p->at[i] >= from && p->at[i] <= to;
    pthread_mutex_unlock(&p->mu);
    return n;
}

static uint64_t W; /* the watchdog interval, ms */

static void
on_stop(uv_timer_t *t)
{
    uv_stop(t->loop);
}

/* Hold the loop for 3 W, then stop it. */
static void
on_block(uv_timer_t *t)
{
    tu_sleep_ms((long)(3 * W));
    uv_stop(t->loop);
}

static void
busy_work(uv_work_t *w)
{
    (void)w;
    tu_sleep_ms((long)(3 * W));
}

static void
busy_done(uv_work_t *w, int status)
{
    (void)status;
    uv_stop(w->loop);
}

/* Run loop until one timer of ms fires with cb. */
static void
run_for(uv_loop_t *loop, uint64_t ms, uv_timer_cb cb)
{
    uv_timer_t t;

    ck_assert_int_eq(uv_timer_init(loop, &t), 0);
    ck_assert_int_eq(uv_timer_start(&t, cb, ms, 0), 0);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

START_TEST(test_notify_watchdog_follows_the_loop)
{
    char dir[] = "/tmp/emad-notify-XXXXXX", usec[32];
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    pthread_t th;
    pings *p = calloc(1, sizeof(*p));
    notify *n = NULL;
    uv_loop_t loop;
    uv_work_t work;
    uint64_t t0, t1, tb, te;

    W = (uint64_t)(1000 * tu_timeout_scale());
    ck_assert_ptr_nonnull(p);
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/notify", dir);
    p->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(p->fd, 0);
    ck_assert_int_eq(bind(p->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    pthread_mutex_init(&p->mu, NULL);
    ck_assert_int_eq(pthread_create(&th, NULL, reader, p), 0);
    snprintf(usec, sizeof(usec), "%llu", (unsigned long long)W * 1000u);
    setenv("NOTIFY_SOCKET", sa.sun_path, 1);
    setenv("WATCHDOG_USEC", usec, 1);
    unsetenv("WATCHDOG_PID");

    ck_assert_int_eq(uv_loop_init(&loop), 0);
    ck_assert_int_eq(notify_create(&n, &loop), 0);

    /* The loop turns: a ping at least every W/4 (never a gap of W). */
    t0 = tu_now_ms();
    run_for(&loop, 4 * W, on_stop);
    t1 = tu_now_ms();
    ck_assert_uint_lt(longest_gap(p, t0, t1), W);
    ck_assert_uint_ge(count_pings(p, t0, t1), 4);

    /* The threadpool works for 3 W while the loop turns: pings go on. */
    t0 = tu_now_ms();
    ck_assert_int_eq(uv_queue_work(&loop, &work, busy_work, busy_done), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    t1 = tu_now_ms();
    ck_assert_uint_lt(longest_gap(p, t0, t1), W);

    /* The loop itself is held for 3 W: pings stop within W/2 (+ W/4), and resume after. */
    tb = tu_now_ms();
    run_for(&loop, 0, on_block);
    te = tu_now_ms();
    ck_assert_uint_ge(te - tb, 3 * W);
    ck_assert_uint_eq(count_pings(p, tb + W, te), 0);
    run_for(&loop, 2 * W, on_stop);
    t1 = tu_now_ms();
    ck_assert_uint_ge(count_pings(p, te, t1), 1);
    ck_assert_uint_lt(longest_gap(p, te + W / 2, t1), W);

    notify_close(n);
    uv_run(&loop, UV_RUN_DEFAULT);
    notify_destroy(n);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
    ck_assert_int_eq(sendto(p->fd, "quit", 4, 0, (struct sockaddr *)&sa, sizeof(sa)), 4);
    pthread_join(th, NULL);
    close(p->fd);
    unlink(sa.sun_path);
    rmdir(dir);
    free(p);
}
END_TEST

int
main(void)
{
    const TTest *const tests[] = {test_notify_watchdog_follows_the_loop, NULL};

    return tu_run_tests("notify", tests);
}

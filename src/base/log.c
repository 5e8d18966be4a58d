/*
 * log.c - leveled logging to stderr. The level is set at startup (and
 * later on reload) from the loop thread and read from any thread; the
 * output style is chosen once, before any other thread starts.
 *
 * Under systemd, when stderr is the journal stream named by
 * $JOURNAL_STREAM (device:inode), lines carry no timestamp (the journal
 * adds its own) but a "<N>" syslog priority prefix, which journald turns
 * into the entry's priority and strips.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>

#include "base/log.h"

static _Atomic int log_level = LOG_INFO;
static int log_journal; /* stderr is the journal: no timestamps, priority prefixes */

static const char *const level_names[] = {"error", "warn", "info", "debug"};
static const char *const level_prio[] = {"<3>", "<4>", "<6>", "<7>"}; /* sd-daemon.h SD_ERR.. */

void
log_set_level(int level)
{
    log_level = level;
}

int
log_get_level(void)
{
    return log_level;
}

const char *
log_level_name(int level)
{
    return level >= LOG_ERROR && level <= LOG_DEBUG ? level_names[level] : "?";
}

int
log_init_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;

    log_journal = js != NULL && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(2, &st) == 0 &&
                  (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
    return log_journal;
}

void
log_msg(int level, const char *fmt, ...)
{
    char line[2048], ts[32];
    struct timeval tv;
    struct tm tm;
    va_list ap;
    int n;

    if (level > log_level)
        return;
    if (log_journal) {
        n = snprintf(line, sizeof(line), "%s%s ", level_prio[level], level_names[level]);
    } else {
        gettimeofday(&tv, NULL);
        gmtime_r(&tv.tv_sec, &tm);
        strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
        n = snprintf(line, sizeof(line), "%s.%03dZ %s ", ts, (int)(tv.tv_usec / 1000),
                     level_names[level]);
    }
    va_start(ap, fmt);
    if (n >= 0 && (size_t)n < sizeof(line))
        (void)vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line);
}

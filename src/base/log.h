/*
 * log.h - leveled logging to stderr for the daemon.
 *
 * One line per event: "2026-11-24T10:00:00.123Z info push model=run1 ...",
 * or "<6>info push model=run1 ..." when stderr is systemd's journal.
 * Messages below the current level are dropped before formatting.
 */
#ifndef EMAD_LOG_H
#define EMAD_LOG_H

enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

void log_set_level(int level);
int log_get_level(void);
const char *log_level_name(int level);

/*
 * Log without timestamps, with syslog priority prefixes, if stderr is the
 * journal stream named by $JOURNAL_STREAM; returns 1 if so. Call once at
 * startup, before other threads start.
 */
int log_init_journal(void);

void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...)                                                                              \
    do {                                                                                           \
        if (log_get_level() >= LOG_INFO)                                                           \
            log_msg(LOG_INFO, __VA_ARGS__);                                                        \
    } while (0)
#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_get_level() >= LOG_DEBUG)                                                          \
            log_msg(LOG_DEBUG, __VA_ARGS__);                                                       \
    } while (0)

#endif

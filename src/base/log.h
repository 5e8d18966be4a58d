/*
 * log.h - leveled logging to stderr for the daemon.
 *
 * One line per event: "2026-11-24T10:00:00.123Z info push model=run1 ...",
 * or "<6>info push model=run1 ..." when stderr is systemd's journal.
 * Messages below the current level are dropped before formatting. String
 * values from clients are written with LOG_STR()/LOG_STRN():
 *   log_warn("event=x model=%s tensor=%s", LOG_STR(m), LOG_STRN(t, tlen));
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

/*
 * Format a string value for a key=value field: as is when it is a
 * non-empty run of printable ASCII without space, '"', '\\' or '=';
 * otherwise in double quotes with '"', '\\' and every control character
 * (C0, DEL, C1), U+2028, U+2029 and invalid UTF-8 byte escaped
 * (\", \\, \n, \r, \t, \u0085, \u2028, \xNN), cut to fit with "..."
 * before the closing quote. len (size_t)-1 means strlen(s); NULL is "".
 * Writes into buf (size >= 16 bytes) and returns it.
 */
const char *log_str(char *buf, size_t size, const char *s, size_t len);

/* log_str() into a buffer that lives until the end of the enclosing block. */
#define LOG_STR_MAX 768
#define LOG_STR(s) log_str((char[LOG_STR_MAX]){0}, LOG_STR_MAX, (s), (size_t)-1)
#define LOG_STRN(s, n) log_str((char[LOG_STR_MAX]){0}, LOG_STR_MAX, (s), (n))

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

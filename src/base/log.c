/*
 * log.c - leveled logging to stderr. The level is set at startup (and
 * later on reload) from the loop thread and read from any thread; the
 * output style is chosen once, before any other thread starts.
 *
 * Under systemd, when stderr is the journal stream named by
 * $JOURNAL_STREAM (device:inode), lines carry no timestamp (the journal
 * adds its own) but a "<N>" syslog priority prefix, which journald turns
 * into the entry's priority and strips.
 *
 * Nothing a client sends can break a line or forge a field: string values
 * from outside (names, messages) go through log_str(), which quotes and
 * escapes them, and every finished line is passed through the same
 * escaper once more for control characters (C0, DEL, C1, U+2028, U+2029)
 * and invalid UTF-8, whatever put them there.
 */
#include <stdarg.h>
#include <stdint.h>
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

/*
 * Length of the UTF-8 character at s[0..len) that log lines may carry as
 * is (1..4 bytes); 0 for a byte to escape on its own (a C0 control, DEL,
 * or a byte that does not start a valid character); (size_t)-1 for a valid
 * character to escape as \uXXXX (C1 controls, U+2028, U+2029). *cp
 * receives the code point, or the byte for invalid input.
 */
static size_t
char_len(const unsigned char *s, size_t len, uint32_t *cp)
{
    size_t n;
    uint32_t c = s[0];

    *cp = c;
    if (c < 0x80)
        return c < 0x20 || c == 0x7f ? 0 : 1;
    if ((c & 0xe0) == 0xc0) {
        n = 2;
        c &= 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
        n = 3;
        c &= 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
        n = 4;
        c &= 0x07;
    } else {
        return 0;
    }
    if (n > len)
        return 0;
    for (size_t k = 1; k < n; k++) {
        if ((s[k] & 0xc0) != 0x80)
            return 0;
        c = (c << 6) | (s[k] & 0x3f);
    }
    if ((n == 2 && c < 0x80) || (n == 3 && c < 0x800) || (n == 4 && c < 0x10000) ||
        (c >= 0xd800 && c <= 0xdfff) || c > 0x10ffff)
        return 0;
    *cp = c;
    return c <= 0x9f || c == 0x2028 || c == 0x2029 ? (size_t)-1 : n;
}

/*
 * Escape s[0..len) into out (size bytes, size >= 8, NUL-terminated):
 * control characters and invalid bytes always; '"' and '\' too when
 * quote is set. \n, \r, \t for those, \u00XX and \u2028 for C1
 * characters and separators, \xXX for other C0 bytes, DEL and invalid
 * bytes. Returns the number of input bytes consumed (len if all fit;
 * less if out was too small, cut at a character boundary, room being
 * left for `reserve` more bytes).
 */
static size_t
escape(char *out, size_t size, const char *s, size_t len, int quote, size_t reserve)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, o = 0, cap = size - 1 - reserve;

    while (i < len) {
        char tmp[8];
        uint32_t cp;
        size_t n = char_len(p + i, len - i, &cp), k, in;

        if (n != 0 && n != (size_t)-1 && !(quote && (p[i] == '"' || p[i] == '\\'))) {
            memcpy(tmp, p + i, n);
            k = in = n;
        } else if (n == (size_t)-1) { /* a valid C1 control or separator */
            k = (size_t)snprintf(tmp, sizeof(tmp), "\\u%04x", (unsigned)cp);
            in = cp <= 0x9f ? 2 : 3;
        } else if (p[i] == '\n' || p[i] == '\r' || p[i] == '\t' || p[i] == '"' || p[i] == '\\') {
            tmp[0] = '\\';
            tmp[1] = p[i] == '\n' ? 'n' : p[i] == '\r' ? 'r' : p[i] == '\t' ? 't' : (char)p[i];
            k = 2;
            in = 1;
        } else {
            k = (size_t)snprintf(tmp, sizeof(tmp), "\\x%02x", p[i]);
            in = 1;
        }
        if (o + k > cap)
            break;
        memcpy(out + o, tmp, k);
        o += k;
        i += in;
    }
    out[o] = '\0';
    return i;
}

const char *
log_str(char *buf, size_t size, const char *s, size_t len)
{
    size_t o, used;

    if (s == NULL)
        s = "";
    if (len == (size_t)-1)
        len = strlen(s);
    for (o = 0; o < len; o++) {
        unsigned char c = (unsigned char)s[o];
        if (c <= ' ' || c > '~' || c == '"' || c == '\\' || c == '=')
            break;
    }
    if (len > 0 && o == len && len < size) { /* plain: as is */
        memcpy(buf, s, len);
        buf[len] = '\0';
        return buf;
    }
    /* Quoted; a value cut short ends in "..." inside the quotes. */
    buf[0] = '"';
    used = escape(buf + 1, size - 1, s, len, 1, 4);
    o = 1 + strlen(buf + 1);
    memcpy(buf + o, used < len ? "...\"" : "\"", used < len ? 5 : 2);
    return buf;
}

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
    char line[2048], clean[4096], ts[32];
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
    (void)escape(clean, sizeof(clean), line, strlen(line), 0, 0);
    fprintf(stderr, "%s\n", clean);
}

/*
 * inilines.h - the line reader the daemon hands to libinih
 * (ini_parse_stream) for its INI files (settings.c: the configuration;
 * authfile.c: the auth file), and the first error of a parse. It reads
 * from a buffer, counts the lines and the section headers, and stops at a
 * NUL byte or a line that does not fit, and after the first error any
 * handler records, so every error names its line; it also tells whether a
 * line starts with a blank (libinih would take it as the continuation of
 * the previous value, which both files refuse).
 */
#ifndef EMAD_INILINES_H
#define EMAD_INILINES_H

#include <stddef.h>

typedef struct inilines {
    const char *pos, *end; /* what is left of the buffer */
    size_t max;            /* longest line accepted, its newline not counted */
    int refuse_indented;   /* an indented line is an error as soon as it is read */
    int lineno;            /* lines read so far (the last one's number) */
    int indented;          /* the last line starts with a space or tab and is not blank */
    int sections;          /* lines read so far that start with '[' after blanks */
    int err_line;          /* the first error's line, or 0 */
    char err[640];         /* the first error's message */
} inilines;

/*
 * Read from buf[0..len) (borrowed until the reading ends) lines of at most
 * max characters (libinih's buffer limits them too); with refuse_indented,
 * an indented line is an error when it is read, else the handler decides
 * (inilines_refuse_indented()).
 */
void inilines_init(inilines *l, const char *buf, size_t len, size_t max, int refuse_indented);

/*
 * Record an error at the line last read, unless an error was recorded
 * before (the first one is kept and reading stops).
 */
__attribute__((format(printf, 2, 3))) void inilines_fail(inilines *l, const char *fmt, ...);

/* Record the indented-line error if the line last read is indented; returns 1 then, else 0. */
int inilines_refuse_indented(inilines *l);

/*
 * libinih's reader (ini_reader) with stream = the inilines: the next line,
 * with its newline, NUL-terminated in str (num bytes), or NULL at the end
 * or once an error is recorded (a NUL byte, a line of more than
 * min(num - 2, max) characters, an indented one if refused, or any error a
 * handler recorded).
 */
char *inilines_read(char *str, int num, void *stream);

#endif

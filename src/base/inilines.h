/*
 * inilines.h - the line reader the daemon hands to libinih
 * (ini_parse_stream) for its INI files (settings.c: the configuration;
 * authfile.c: the auth file). It reads from a buffer, counts the lines,
 * and stops at a NUL byte or a line that does not fit, with the reason,
 * so every error can name its line; it also tells whether a line starts
 * with a blank (libinih would take it as the continuation of the previous
 * value, which both files refuse).
 */
#ifndef EMAD_INILINES_H
#define EMAD_INILINES_H

#include <stddef.h>

typedef struct inilines {
    const char *pos, *end; /* what is left of the buffer */
    int lineno;            /* lines read so far (the last one's number) */
    int indented;          /* the last line starts with a space or tab and is not blank */
    char error[64];        /* why reading stopped at line lineno, or "" */
} inilines;

/* Read from buf[0..len) (borrowed until the reading ends). */
void inilines_init(inilines *l, const char *buf, size_t len);

/*
 * The next line, with its newline, NUL-terminated in str (num bytes), or
 * NULL at the end or on an error (l->error set: a NUL byte, or a line of
 * more than min(num - 2, max) characters, its newline not counted). The signature of libinih's
 * reader once l is passed as the stream: ini_reader.
 */
char *inilines_next(inilines *l, char *str, int num, size_t max);

#endif

/*
 * inilines.c - the line reader of the daemon's INI files and the first
 * error of a parse (see inilines.h).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/inilines.h"

void
inilines_init(inilines *l, const char *buf, size_t len, size_t max, int refuse_indented)
{
    memset(l, 0, sizeof(*l));
    l->pos = buf;
    l->end = buf + len;
    l->max = max;
    l->refuse_indented = refuse_indented;
}

void
inilines_fail(inilines *l, const char *fmt, ...)
{
    va_list ap;

    if (l->err_line != 0)
        return;
    l->err_line = l->lineno;
    va_start(ap, fmt);
    vsnprintf(l->err, sizeof(l->err), fmt, ap);
    va_end(ap);
}

int
inilines_refuse_indented(inilines *l)
{
    if (!l->indented)
        return 0;
    inilines_fail(l, "indented line: write each 'key = value' at the start of a line");
    return 1;
}

char *
inilines_read(char *str, int num, void *stream)
{
    inilines *l = stream;
    const char *nl;
    size_t len, max = l->max, blank = 0;

    if (l->err_line != 0 || l->pos >= l->end || num < 2)
        return NULL;
    nl = memchr(l->pos, '\n', (size_t)(l->end - l->pos));
    len = nl != NULL ? (size_t)(nl - l->pos) + 1 : (size_t)(l->end - l->pos);
    l->lineno++;
    if (memchr(l->pos, '\0', len) != NULL) {
        inilines_fail(l, "the line contains a NUL byte");
        return NULL;
    }
    if (max > (size_t)num - 2)
        max = (size_t)num - 2;
    if (len > max + 1) {
        inilines_fail(l, "the line is longer than %zu characters", max);
        return NULL;
    }
    memcpy(str, l->pos, len);
    str[len] = '\0';
    l->pos += len;
    while (blank < len && strchr(" \t\r\n", str[blank]) != NULL)
        blank++;
    l->indented = (str[0] == ' ' || str[0] == '\t') && blank < len;
    if (l->refuse_indented && inilines_refuse_indented(l))
        return NULL;
    l->sections += str[strspn(str, " \t")] == '[';
    return str;
}

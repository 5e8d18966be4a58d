/*
 * inilines.c - the line reader of the daemon's INI files (see inilines.h).
 */
#include <stdio.h>
#include <string.h>

#include "base/inilines.h"

void
inilines_init(inilines *l, const char *buf, size_t len)
{
    memset(l, 0, sizeof(*l));
    l->pos = buf;
    l->end = buf + len;
}

char *
inilines_next(inilines *l, char *str, int num, size_t max)
{
    const char *nl;
    size_t len, blank = 0;

    if (l->error[0] != '\0' || l->pos >= l->end || num < 2)
        return NULL;
    nl = memchr(l->pos, '\n', (size_t)(l->end - l->pos));
    len = nl != NULL ? (size_t)(nl - l->pos) + 1 : (size_t)(l->end - l->pos);
    l->lineno++;
    if (memchr(l->pos, '\0', len) != NULL) {
        snprintf(l->error, sizeof(l->error), "the line contains a NUL byte");
        return NULL;
    }
    if (max > (size_t)num - 2)
        max = (size_t)num - 2;
    if (len > max + 1) {
        snprintf(l->error, sizeof(l->error), "the line is longer than %zu characters", max);
        return NULL;
    }
    memcpy(str, l->pos, len);
    str[len] = '\0';
    l->pos += len;
    while (blank < len && strchr(" \t\r\n", str[blank]) != NULL)
        blank++;
    l->indented = (str[0] == ' ' || str[0] == '\t') && blank < len;
    return str;
}

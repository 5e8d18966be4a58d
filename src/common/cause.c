/*
 * cause.c - the error-message convention of the file and startup
 * functions (safetensors, snapshots, settings, persistence, HTTP): a
 * function that fails returns a negative code and, if the caller asked
 * for one, sets a malloc'd message saying why.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/cause.h"

int
cause_set(char **cause, int code, const char *fmt, ...)
{
    va_list ap;
    char *msg;
    int len;

    if (cause == NULL)
        return code;
    free(*cause);
    *cause = NULL;
    va_start(ap, fmt);
    len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (len < 0 || (msg = malloc((size_t)len + 1)) == NULL)
        return code;
    va_start(ap, fmt);
    (void)vsnprintf(msg, (size_t)len + 1, fmt, ap);
    va_end(ap);
    *cause = msg;
    return code;
}

/*
 * errors.c - names and texts of the emad error codes, expanded from the
 * one list of them (EMAD_ERRNO_MAP in include/emad.h), and the text of a
 * negated errno value. Shared by the daemon (error replies, stats) and
 * libemad (emad_errname(), emad_strerror()).
 */
#include <string.h>

#include "common/errors.h"

/*
 * The error list fills its two ranges exactly: its codes are unique (each
 * is a case of a switch below), so counting the codes in each range and in
 * all shows there is no gap and none outside.
 */
#define IN_RANGE(code, lo, hi) ((code) >= (lo) && (code) <= (hi))
#define DAEMON(name, code, text) +IN_RANGE(code, EMAD_ERRNO_FIRST, EMAD_ERRNO_LAST)
#define CLIENT(name, code, text) +IN_RANGE(code, EMAD_ERRNO_CLIENT_FIRST, EMAD_ERRNO_CLIENT_LAST)
#define ANY(name, code, text) +1
_Static_assert(0 EMAD_ERRNO_MAP(DAEMON) == EMAD_ERRNO_LAST - EMAD_ERRNO_FIRST + 1 &&
                   0 EMAD_ERRNO_MAP(CLIENT) ==
                       EMAD_ERRNO_CLIENT_LAST - EMAD_ERRNO_CLIENT_FIRST + 1 &&
                   0 EMAD_ERRNO_MAP(ANY) == 0 EMAD_ERRNO_MAP(DAEMON) EMAD_ERRNO_MAP(CLIENT),
               "EMAD_ERRNO_MAP must fill EMAD_ERRNO_FIRST..LAST and EMAD_ERRNO_CLIENT_FIRST..LAST");
#undef IN_RANGE
#undef DAEMON
#undef CLIENT
#undef ANY

const char *
errors_name(int code)
{
    switch (code) {
#define XX(name, num, text)                                                                        \
    case EMAD_##name:                                                                              \
        return "EMAD_" #name;
        EMAD_ERRNO_MAP(XX)
#undef XX
    default:
        return NULL;
    }
}

/* Text of an emad code from the error list, or NULL. */
static const char *
errtext(int code)
{
    switch (code) {
#define XX(name, num, text)                                                                        \
    case EMAD_##name:                                                                              \
        return text;
        EMAD_ERRNO_MAP(XX)
#undef XX
    default:
        return NULL;
    }
}

const char *
errors_text(int code)
{
    const char *text;

    if (code == 0)
        return "success";
    if ((text = errtext(code)) != NULL)
        return text;
    if (code < 0 && code > -4096)
        return strerror(-code);
    return "unknown error";
}

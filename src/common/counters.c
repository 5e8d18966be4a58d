/*
 * counters.c - the names of the daemon's counters (counters.h), for the
 * daemon's `stats` reply and its metrics, and for clients that print them.
 */
#include <stdio.h>

#include "common/counters.h"
#include "common/proto.h"

static const char *const names[COUNTER_COUNT] = {
#define XX(id, name) name,
    COUNTERS_MAP(XX)
#undef XX
};

const char *
counters_name(int id)
{
    return id >= 0 && id < COUNTER_COUNT ? names[id] : NULL;
}

int
counters_op_name(char *buf, size_t size, int op)
{
    const char *name = proto_op_name(op);
    int n;

    if (name == NULL)
        return -1;
    n = snprintf(buf, size, COUNTERS_OP_PREFIX "%s", name);
    return n >= 0 && (size_t)n < size ? 0 : -1;
}

/*
 * sysmem.c - how much memory this machine gives the daemon: the default
 * of --max-memory (see sysmem.h).
 *
 * The machine's memory is MemTotal from /proc/meminfo, or the memory limit
 * of the daemon's cgroup when that is lower (cgroup v2 memory.max, or v1
 * memory.limit_in_bytes; the cgroup's own directory first, then the root
 * of the mounted hierarchy, which is the cgroup itself in a container).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/sysmem.h"

/* Read one unsigned number from a file ("max" and absurd values: none); 0 if unreadable. */
static uint64_t
read_limit(const char *path)
{
    FILE *f = fopen(path, "re");
    char buf[64];
    unsigned long long v;
    char *end;

    if (f == NULL)
        return 0;
    if (fgets(buf, sizeof(buf), f) == NULL) {
        (void)fclose(f);
        return 0;
    }
    (void)fclose(f);
    v = strtoull(buf, &end, 10);
    if (end == buf || v >= (1ULL << 60)) /* "max", or v1's "no limit" (2^63 rounded to pages) */
        return 0;
    return (uint64_t)v;
}

/* MemTotal in bytes, or 0. */
static uint64_t
mem_total(void)
{
    FILE *f = fopen("/proc/meminfo", "re");
    char line[256];
    unsigned long long kb = 0;

    if (f == NULL)
        return 0;
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "MemTotal: %llu kB", &kb) == 1)
            break;
    (void)fclose(f);
    return (uint64_t)kb * 1024;
}

/* The memory limit of this process's cgroup (v2, else v1), or 0 for none. */
static uint64_t
cgroup_limit(void)
{
    FILE *f = fopen("/proc/self/cgroup", "re");
    char line[1024], path[1200];
    uint64_t v2 = 0, v1 = 0;

    if (f == NULL)
        return 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        char *rel;
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "0::", 3) == 0) {
            rel = line + 3;
            snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.max", rel);
            if ((v2 = read_limit(path)) == 0)
                v2 = read_limit("/sys/fs/cgroup/memory.max");
        } else if ((rel = strstr(line, ":memory:")) != NULL) {
            rel += strlen(":memory:");
            snprintf(path, sizeof(path), "/sys/fs/cgroup/memory%s/memory.limit_in_bytes", rel);
            if ((v1 = read_limit(path)) == 0)
                v1 = read_limit("/sys/fs/cgroup/memory/memory.limit_in_bytes");
        }
    }
    (void)fclose(f);
    if (v2 != 0 && (v1 == 0 || v2 < v1))
        return v2;
    return v1;
}

uint64_t
sysmem_available(const char **source)
{
    uint64_t total = mem_total(), limit = cgroup_limit();

    if (limit != 0 && (total == 0 || limit < total)) {
        *source = "cgroup memory limit";
        return limit;
    }
    *source = "MemTotal";
    return total;
}

uint64_t
sysmem_default_budget(const char **source)
{
    uint64_t avail = sysmem_available(source);

    if (avail == 0) {
        *source = "unknown machine memory";
        return SYSMEM_FALLBACK_BUDGET;
    }
    return avail / SYSMEM_DEFAULT_DEN * SYSMEM_DEFAULT_NUM;
}

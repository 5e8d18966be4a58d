/*
 * sysmem.h - the machine's memory as the daemon may use it, for the
 * default memory budget (--max-memory).
 */
#ifndef EMAD_SYSMEM_H
#define EMAD_SYSMEM_H

#include <stdint.h>

/* The default budget is this fraction of the machine's memory (docs/OPERATIONS.md). */
#define SYSMEM_DEFAULT_NUM 3
#define SYSMEM_DEFAULT_DEN 4

/* The budget when the machine's memory cannot be read: 1 GiB. */
#define SYSMEM_FALLBACK_BUDGET (1ULL << 30)

/*
 * Bytes of memory the daemon may use: MemTotal, or its cgroup's memory
 * limit when lower; 0 if neither can be read. *source names which.
 */
uint64_t sysmem_available(const char **source);

/* The default --max-memory: 3/4 of sysmem_available() (or the fallback); *source says why. */
uint64_t sysmem_default_budget(const char **source);

#endif

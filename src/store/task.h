/*
 * task.h - element-wise kernel work that may run on any thread.
 *
 * A task reads and writes only the memory it points to (shadows, request
 * payloads, reply buffers): no store structures, no reference counts, no
 * allocation. The loop thread builds a list of tasks, keeps every buffer
 * they touch alive, hands them to worker threads in any order, and reads
 * the results (task.found) back once all have run.
 *
 * task_list_add() cuts a large task into pieces of at most TASK_PIECE_BYTES
 * of written (or, for TASK_COUNT, read) data, so the pieces of one big
 * tensor can be spread over several threads. Pieces fit in a core's L2
 * cache: tasks that read the same values one after the other (a count,
 * then the update of each shadow) read them from the cache the second
 * time when they are added piece by piece and run in order.
 */
#ifndef EMAD_TASK_H
#define EMAD_TASK_H

#include <stddef.h>
#include <stdint.h>

#define TASK_PIECE_BYTES (256u << 10)

enum task_op {
    TASK_EMA,     /* dst = EMA of base (shadow dtype) with src (dtype) at decay */
    TASK_INIT,    /* dst (shadow dtype) = src (dtype) converted */
    TASK_COPY,    /* dst = src, n bytes */
    TASK_COUNT,   /* found = NaN/Inf values among n src values of dtype */
    TASK_CONVERT, /* dst (dtype) = src (sdtype) converted, n elements */
};

typedef struct task {
    uint8_t op;
    uint8_t dtype;  /* value dtype (EMA, INIT, COUNT), output dtype (CONVERT) */
    uint8_t sdtype; /* CONVERT: source dtype */
    uint8_t count;  /* EMA: also count NaN/Inf among the values into found (one pass) */
    uint32_t tag;   /* caller's index (e.g. the tensor a COUNT belongs to) */
    void *dst;
    const void *base;
    const void *src;
    uint64_t n; /* elements (bytes for COPY) */
    double decay;
    uint64_t found; /* COUNT, and EMA with count: NaN/Inf values found */
    uint8_t hash;   /* EMA, INIT, COPY: also task_sum() of the src bytes into sum */
    uint64_t sum;
} task;

typedef struct task_list {
    task *v;
    size_t n, cap;
    uint64_t bytes; /* bytes written (read for COUNT) by all tasks */
} task_list;

/* Append t, cut into pieces of at most TASK_PIECE_BYTES. */
void task_list_add(task_list *l, const task *t);

void task_list_free(task_list *l);

/* Run one task. Thread-safe: touches only the task and the memory it points to. */
void task_run(task *t);

/*
 * A fast 64-bit checksum of len bytes (XXH3): what a task with hash set
 * puts in sum, over the src bytes it read. task_list_add() cuts a larger
 * task into pieces that each sum their own bytes: a caller that keeps one
 * sum per task adds tasks of one piece.
 */
uint64_t task_sum(const void *p, size_t len);

#endif

/*
 * decode.h - one-pass decoding of a msgpack message into msgpack-c's
 * object tree, with the checks of proto_prescan() (nesting depth, object
 * count, container counts against the bytes left, truncation, trailing
 * bytes, invalid type bytes) made as it goes. The objects are the ones
 * msgpack_unpack_next() builds: str, bin and ext payloads point into the
 * message, and the arrays and maps are taken from an arena that is reused
 * from one message to the next, so that a request of thousands of tensor
 * maps is decoded without a malloc per message and without a second pass.
 * Never aborts: out of memory is EMAD_ENOMEM.
 */
#ifndef EMAD_DECODE_H
#define EMAD_DECODE_H

#include <stddef.h>

#include <msgpack.h>

struct decode_chunk;

/* Memory for decoded arrays and maps; zero-initialize, or decode_arena_init(). */
typedef struct decode_arena {
    struct decode_chunk *chunks; /* newest first */
    char *ptr;                   /* free space in the newest chunk */
    size_t free;
    size_t used; /* bytes handed out since the last reset */
} decode_arena;

/* An empty arena (it allocates on first use). */
void decode_arena_init(decode_arena *a);

/* Free every chunk of a (the objects decoded into it become invalid). */
void decode_arena_fini(decode_arena *a);

/* The number of memory chunks a holds (for tests). */
size_t decode_arena_chunks(const decode_arena *a);

/*
 * Decode the single msgpack object in buf[0..len) into *root, its arrays
 * and maps in a, which is reset first (objects of the previous message
 * become invalid). Returns 0; EMAD_EMALFORMED or EMAD_ELIMIT with *why set
 * to proto_prescan()'s message for the same input; EMAD_ENOMEM (*why set).
 * buf must outlive the objects.
 */
int decode_message(decode_arena *a, const void *buf, size_t len, msgpack_object *root,
                   const char **why);

#endif

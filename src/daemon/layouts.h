/*
 * layouts.h - push layouts: the tensor maps of a push, kept without their
 * data so that the next pushes of the same tensors can send the data alone
 * (docs/PROTOCOL.md, "Push layouts").
 *
 * A push of one message asks for its layout to be kept (`layout: true`);
 * the daemon copies the decoded maps (names, kinds, dtypes, shapes,
 * slices) under a fresh random 64-bit id, bound to the model's name, and
 * gives the id in the reply. A later push of that model sends `layout: id`
 * and `data`, the tensors' bytes one after the other in the layout's
 * order; layouts_inputs() turns it back into the inputs a `tensors` array
 * would have decoded to, so the store sees no difference. At most
 * LAYOUTS_MAX layouts of LAYOUTS_MAX_BYTES in all are kept, the least
 * recently used given up first: a client whose id is gone gets
 * EMAD_ELAYOUT and sends the tensors again. Loop thread only.
 */
#ifndef EMAD_DAEMON_LAYOUTS_H
#define EMAD_DAEMON_LAYOUTS_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

#define LAYOUTS_MAX 64
#define LAYOUTS_MAX_BYTES (64u << 20)

typedef struct kept_layout kept_layout;

/* The layouts kept; all zero is an empty table. */
typedef struct layouts {
    kept_layout *v[LAYOUTS_MAX];
    size_t n;
    size_t bytes; /* held by the layouts in v */
    uint64_t tick;
} layouts;

void layouts_fini(layouts *ls);

/*
 * Keep the layout of in[0..n) (names copied, data not) for model; its id,
 * or 0 if it cannot be kept (out of memory, or larger than
 * LAYOUTS_MAX_BYTES on its own).
 */
uint64_t layouts_keep(layouts *ls, const char *model_name, size_t model_len, const store_input *in,
                      size_t n);

/*
 * The inputs of a data-only push of model with layout id: *in points at
 * the layout's own inputs, whose data now point into data[0..len) (valid
 * until the next call on ls). 0, or EMAD_ELAYOUT (unknown id, or a layout
 * of another model) or EMAD_ESIZE (len is not the layout's byte count),
 * with err filled.
 */
int layouts_inputs(layouts *ls, uint64_t id, const char *model_name, size_t model_len,
                   const char *data, uint64_t len, const store_input **in, size_t *n,
                   store_err *err);

#endif

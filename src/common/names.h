/*
 * names.h - the rules for names on the wire and in snapshot files: valid
 * model and tensor names, and the names of the tensor kinds. Shared by the
 * daemon, libemad and emactl.
 */
#ifndef EMAD_NAMES_H
#define EMAD_NAMES_H

#include <stddef.h>

#include "emad.h"

/* Kind names: "param", "buffer". */
const char *names_kind_name(int kind);
int names_kind_from_name(const char *name, size_t len); /* -1 if unknown */

/*
 * Check a model name: 1..EMAD_MAX_MODEL_NAME_BYTES bytes of [A-Za-z0-9._-],
 * not starting with '.'. Returns 0 or EMAD_ENAME.
 */
int names_check_model(const char *name, size_t len);

/*
 * Check a tensor name: 1..EMAD_MAX_NAME_BYTES bytes of valid UTF-8 without
 * NUL or control characters. Returns 0 or EMAD_ENAME.
 */
int names_check_tensor(const char *name, size_t len);

#endif

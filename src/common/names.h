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
 * not starting with '.' (hidden files) or '-' (read as an option by
 * command lines). Returns 0 or EMAD_ENAME.
 */
int names_check_model(const char *name, size_t len);

/*
 * Check a tensor name: 1..EMAD_MAX_NAME_BYTES bytes of valid UTF-8 without
 * NUL, control characters (C0, DEL and C1: U+0000..U+001F, U+007F..U+009F)
 * or the line and paragraph separators U+2028 and U+2029, so a name never
 * breaks a log line or a terminal. Returns 0 or EMAD_ENAME.
 */
int names_check_tensor(const char *name, size_t len);

/*
 * Copy a wire string that may hold anything (a name that failed its check,
 * an unknown op) into buf for a message: at most size - 1 bytes, each
 * byte outside printable ASCII and each '"' replaced by '?'. Returns buf.
 */
const char *names_printable(char *buf, size_t size, const char *s, size_t len);

#endif

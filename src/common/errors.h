/*
 * errors.h - names and texts of the emad error codes.
 *
 * The codes are the EMAD_E* values of include/emad.h, listed once in
 * EMAD_ERRNO_MAP; the wire carries their negation (a positive integer).
 * Daemon and libemad share these lookups (emad_errname(), emad_strerror()).
 */
#ifndef EMAD_ERRORS_H
#define EMAD_ERRORS_H

#include "emad.h"

/* "EMAD_ESHAPE" for EMAD_ESHAPE, NULL if code is not an emad code. */
const char *errors_name(int code);

/* Human text for an emad code or a negated errno value (static storage). */
const char *errors_text(int code);

#endif

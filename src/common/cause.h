/*
 * cause.h - the error-message convention of the file and startup functions
 * (safetensors, snapshots, settings, persistence, HTTP): a failing function
 * returns a negative code and, when the caller passes a char **cause, a
 * malloc'd message saying why (the caller frees it).
 */
#ifndef EMAD_CAUSE_H
#define EMAD_CAUSE_H

/*
 * Set *cause (if cause is not NULL; an old message there is freed) to a
 * malloc'd printf message and return code.
 */
__attribute__((format(printf, 3, 4))) int cause_set(char **cause, int code, const char *fmt, ...);

#endif

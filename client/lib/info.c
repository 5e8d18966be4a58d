/*
 * info.c - libemad's answers that need no daemon: its version, the sizes of
 * the public structs (for bindings to check their layouts), the dtype
 * names and sizes, and the default options.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <string.h>

#include "client.h"
#include "common/dtype.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "0.1.0"
#endif

/* Library version string, from the build (static storage). */
EMAD_EXTERN const char *
emad_version(void)
{
    return PACKAGE_VERSION;
}

/* sizeof a public struct by its name, 0 if unknown (for bindings to check their layouts). */
EMAD_EXTERN size_t
emad_struct_size(const char *name)
{
    static const struct {
        const char *name;
        size_t size;
    } t[] = {
        {"emad_tensor", sizeof(emad_tensor)},
        {"emad_options", sizeof(emad_options)},
        {"emad_push_result", sizeof(emad_push_result)},
        {"emad_pull_options", sizeof(emad_pull_options)},
        {"emad_model", sizeof(emad_model)},
        {"emad_model_info", sizeof(emad_model_info)},
        {"emad_model_config", sizeof(emad_model_config)},
        {"emad_stat", sizeof(emad_stat)},
        {"emad_piece", sizeof(emad_piece)},
        {"emad_replica_status", sizeof(emad_replica_status)},
    };

    for (size_t i = 0; name != NULL && i < sizeof(t) / sizeof(t[0]); i++)
        if (strcmp(t[i].name, name) == 0)
            return t[i].size;
    return 0;
}

/* Safetensors name of a dtype, or NULL. */
EMAD_EXTERN const char *
emad_dtype_name(int dtype)
{
    return dtype_name(dtype);
}

/* dtype for a safetensors name; EMAD_DTYPE_INVALID for NULL or unknown names. */
EMAD_EXTERN int
emad_dtype_from_name(const char *name)
{
    return name != NULL ? dtype_from_name(name, strlen(name)) : EMAD_DTYPE_INVALID;
}

/* Element size of a dtype in bytes, 0 if invalid. */
EMAD_EXTERN size_t
emad_dtype_size(int dtype)
{
    return dtype_size(dtype);
}

/* Fill opts with the defaults (30 s requests, 5 s first contact, 20 MiB messages, 64 MiB replies).
 */
EMAD_EXTERN void
emad_options_init(emad_options *opts)
{
    if (opts == NULL)
        return;
    memset(opts, 0, sizeof(*opts));
    opts->timeout_ms = DEFAULT_TIMEOUT_MS;
    opts->connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
    opts->chunk_bytes = DEFAULT_CHUNK_BYTES;
    opts->max_reply_bytes = DEFAULT_MAX_REPLY_BYTES;
}

/*
 * settings.h - the daemon's settings: defaults, the INI configuration file
 * (--config FILE, parsed by libinih) and command-line flags, in that order
 * of precedence (flags win). Every flag but --config, --print-config,
 * --version and --help has a key of the same name in the file.
 *
 * The file is plain `key = value` lines; `#` and `;` start comments; keys
 * outside any section or under `[emad]`; `listen` may repeat (flags
 * replace the file's list). Unknown keys, bad values, keys set twice and
 * syntax errors are refused with the file name and line number.
 *
 * Nothing here reads the environment: the same flags and file give the
 * same settings everywhere.
 */
#ifndef EMAD_SETTINGS_H
#define EMAD_SETTINGS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "daemon/server.h"

#define SETTINGS_MAX_FILE_BYTES (1 << 20)
/* io-cpu accepts CPU numbers below this (glibc's CPU_SETSIZE). */
#define SETTINGS_MAX_CPU 1024
/* Smallest --max-memory accepted: 1 MiB. */
#define SETTINGS_MIN_MAX_MEMORY (1ULL << 20)
/* The longest idle-release: one day. */
#define SETTINGS_MAX_IDLE_RELEASE_MS 86400000

/* Effective settings. Strings are owned (settings_free). */
typedef struct settings {
    char *listen[SERVER_MAX_LISTEN];
    int nlisten;
    char *state_dir; /* NULL: none */
    uint64_t max_message_bytes;
    uint64_t txn_timeout_ms;
    uint64_t snapshot_interval_ms; /* 0: only on request and at shutdown */
    size_t snapshot_keep;
    int require_snapshot;
    int io_cpu; /* a CPU number, SERVER_IO_CPU_AUTO or SERVER_IO_CPU_OFF */
    uint64_t idle_release_ms;
    uint64_t idle_release_max_ms;
    uint64_t max_memory;   /* 0: auto (a fraction of the machine, sysmem.h) */
    unsigned client_share; /* percent */
    int log_level;       /* enum log_level */
    char *http;          /* HOST:PORT, or NULL: off */
    int http_is_default; /* http was not set: failing to bind it is only a warning */
    char *auth_file;     /* NULL: no authentication */
    int insecure;        /* listen beyond loopback without authentication */
    uint64_t auth_session_lifetime_ms;
    char *shard_map; /* cluster mode: shard map file or text, or NULL */
    char *self;      /* cluster mode: this daemon's URL in the map, or NULL */
} settings;

/* What the command line asked for: flags kept as (key, value) pairs to apply over the file. */
typedef struct settings_args {
    const char *config_path; /* --config, or NULL */
    int print_config;        /* --print-config */
    int version;             /* --version */
    int help;                /* --help */
    int usage_error;         /* set with an error: unknown option or stray argument */
    struct settings_flag {
        const char *key;
        const char *value; /* borrowed from argv */
    } * flags;
    size_t nflags;
} settings_args;

/* Defaults for every setting. */
void settings_init(settings *c);

/* Free the strings of c (c itself is the caller's). */
void settings_free(settings *c);

/* Print the usage text. */
void settings_usage(FILE *f);

/*
 * Parse argv into *a (flags' values are borrowed from argv). Returns 0, or
 * -EINVAL with *cause (malloc'd) for an unknown option, a missing or bad
 * argument: values are checked here, so a bad flag is reported as a flag.
 */
int settings_parse_args(settings_args *a, int argc, char **argv, char **cause);

/* Free what settings_parse_args allocated. */
void settings_args_free(settings_args *a);

/*
 * Build the effective settings: defaults, then the file a->config_path (if
 * any), then a's flags. Returns 0, or a negative code with *cause set:
 * "FILE:LINE: message" for a bad file. On failure *c is left initialized
 * (free it with settings_free).
 */
int settings_build(settings *c, const settings_args *a, char **cause);

/*
 * Apply the INI text buf[0..len) (named `name` in messages) over c.
 * Returns 0, or -EINVAL with *cause = "NAME:LINE: message".
 */
int settings_load_string(settings *c, const char *name, const char *buf, size_t len, char **cause);

/* Apply the file at path over c (at most SETTINGS_MAX_FILE_BYTES). */
int settings_load_file(settings *c, const char *path, char **cause);

/* Print c as a configuration file that gives the same settings. */
void settings_print(const settings *c, FILE *f);

/* Fill a server configuration whose strings point into c. */
void settings_server(const settings *c, server_config *out);

/*
 * Report every key whose value differs between old and new: cb gets the
 * key, both values as text, and whether it can change while running
 * (log-level, snapshot-interval, txn-timeout, auth-session-lifetime).
 */
void settings_diff(const settings *old, const settings *new_,
                   void (*cb)(void *arg, const char *key, const char *was, const char *now,
                              int live),
                   void *arg);

#endif

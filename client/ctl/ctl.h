/*
 * ctl.h - the private header of emactl, the command-line client of emad.
 *
 * It declares what the files of client/ctl share: the settings of a run
 * (ctl), the one argument parser (args.c: option specs, the struct they
 * fill, the value parsers), the command entries (cmd_*.c, looked up by
 * main.c) and the error printing and connection helpers of main.c.
 */
#ifndef EMAD_CLIENT_CTL_CTL_H
#define EMAD_CLIENT_CTL_CTL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "emad.h"
#include "common/safetensors.h"

#define EXIT_FAIL 1
#define EXIT_USAGE 2

/* Settings shared by every command. */
typedef struct ctl {
    const char *server;
    const char *cluster; /* shard map (file or text): connect to the cluster, not to server */
    int timeout_ms;
    const char *cmd;      /* command name, for messages */
    const char *user;     /* --user: authenticate as this user (NULL: the key file's) */
    const char *key_file; /* --key-file: the user's key file */
} ctl;

/* The most --grant options of keygen. */
#define ARGS_MAXGRANTS 16

/* The most positional arguments a command takes. */
#define ARGS_MAXPOS 3

/*
 * What the command line of one command says: positional arguments and the
 * value of every option any command takes (each command fills only the
 * fields of its own options; args_init sets the defaults).
 */
typedef struct ctl_args {
    const char *pos[ARGS_MAXPOS]; /* positional arguments, in order */
    size_t npos;
    int argc; /* the command's arguments, for a second pass (configure) */
    char **argv;
    int keep_going;        /* report a bad option and go on instead of stopping */
    int nema;              /* EMA options given (create, configure) */
    int nstep;             /* --step given (push, import) */
    emad_model_config cfg; /* EMA options (create, configure) */
    int exist_ok;          /* --exist-ok (create) */
    int json;              /* --json (stats) */
    uint64_t step;         /* --step N (push, import) */
    const char *buffers;   /* --buffers FILE (push, import) */
    uint64_t shard_k;      /* --shard K/N (push); shard_n 0: not given */
    uint64_t shard_n;
    double decay;        /* --decay D (export, pull); -1: not given */
    int dtype;           /* --dtype (pull); EMAD_DTYPE_INVALID: not given */
    const char *tensors; /* --tensors A,B,... (pull) */
    double interval;     /* --interval SECONDS (watch), default 1 */
    uint64_t count;      /* --count N (watch); 0: until interrupted */
    const char *out;     /* --out FILE (keygen) */
    const char *grants[ARGS_MAXGRANTS]; /* --grant "ROLE PATTERN" (keygen) */
    size_t ngrants;
} ctl_args;

/*
 * One option: its name, whether it takes a value, and the handler that
 * checks the value and stores it in ctl_args (a NULL name ends a table).
 * A handler returns 0, or EXIT_USAGE after printing the usage error.
 */
typedef struct ctl_opt {
    const char *name; /* "--step" */
    int has_arg;      /* 1: --name VALUE or --name=VALUE; 0: a flag */
    int (*set)(ctl *g, const struct ctl_opt *o, const char *v, ctl_args *a);
    size_t off;        /* the field of ctl_args (of ctl, for the common options) it fills */
    size_t count;      /* an int of ctl_args counting the option, or 0 */
    const char *what;  /* what the value must be, for the usage error */
    const char *key;   /* EMA option name for emad_option_from_name */
    uint64_t min, max; /* bounds of a whole number; max also bounds a number */
} ctl_opt;

/* One command: name, synopsis, description, arguments, handler. */
typedef struct ctl_cmd {
    int op;           /* the daemon op of the same name (enum proto_op), or 0 */
    const char *name; /* a command that is not an op: its name (see ctl_cmd_name()) */
    const char *usage;                 /* synopsis */
    const char *help;                  /* description, after the synopsis */
    const char *args[ARGS_MAXPOS + 1]; /* names of the positionals, NULL-terminated */
    size_t nreq;                       /* how many positionals are required */
    const ctl_opt *opts[2];            /* option tables besides the common ones */
    int (*exec)(ctl *g, const struct ctl_cmd *self, ctl_args *a);
} ctl_cmd;

/* The name of a command: its op's wire name, or its own. */
const char *ctl_cmd_name(const ctl_cmd *cmd);

/* A number macro as a string literal, for option descriptions. */
#define CTL_STR_(x) #x
#define CTL_STR(x) CTL_STR_(x)

/* clang-format off */
/* The first fields of an option spec: NAME takes a value that SET checks and puts in FIELD. */
#define ARGS_OPT(name_, set_, field_) \
    .name = (name_), .has_arg = 1, .set = (set_), .off = offsetof(ctl_args, field_)

/* Option specs that more than one command takes. */
#define ARGS_OPT_BUFFERS_FILE {ARGS_OPT("--buffers", args_set_string, buffers), .min = 1, \
                               .what = "a file"}
#define ARGS_OPT_DECAY {ARGS_OPT("--decay", args_set_decay, decay), \
                        .what = "one of the model's decays"}
#define ARGS_OPT_STEP(what_) {ARGS_OPT("--step", args_set_u64, step), \
                              .count = offsetof(ctl_args, nstep), .max = UINT64_MAX, \
                              .what = (what_)}
/* clang-format on */

/* args.c: the argument parser. */
extern const ctl_opt args_ema_opts[];
void args_init(ctl_args *a, int argc, char **argv);
int args_parse(ctl *g, const ctl_cmd *cmd, ctl_args *a);
int args_global(ctl *g, int argc, char **argv, int *i);
int args_parse_u64(const char *s, uint64_t *out);

/* args.c: option handlers, for the option tables of the commands. */
int args_set_flag(ctl *g, const ctl_opt *o, const char *v, ctl_args *a);
int args_set_string(ctl *g, const ctl_opt *o, const char *v, ctl_args *a);
int args_set_u64(ctl *g, const ctl_opt *o, const char *v, ctl_args *a);
int args_set_number(ctl *g, const ctl_opt *o, const char *v, ctl_args *a);
int args_set_decay(ctl *g, const ctl_opt *o, const char *v, ctl_args *a);
int args_set_shard(ctl *g, const ctl_opt *o, const char *v, ctl_args *a);
int args_set_dtype(ctl *g, const ctl_opt *o, const char *v, ctl_args *a);

/* main.c: messages and the connection. */
__attribute__((format(printf, 2, 3))) void ctl_errorf(const ctl *g, const char *fmt, ...);
__attribute__((format(printf, 2, 3))) int ctl_usage_error(const ctl *g, const char *fmt, ...);
int ctl_fail_rc(const ctl *g, const emad_client *c, int rc);
int ctl_fail_file(const ctl *g, const char *path, int rc, const char *cause);
void ctl_command_usage(FILE *f, const ctl_cmd *c);
emad_client *ctl_connect(const ctl *g);

/* ctl_connect() with messages as large as the daemon accepts (not the 4 MiB chunks of pushes). */
emad_client *ctl_connect_whole(const ctl *g);

/* Print the replicas a successful call on a cluster client skipped, one warning line each. */
void ctl_warnings(const ctl *g, const emad_client *c);

/* cmd_data.c: tensors of a safetensors file as libemad tensors. */
void cmd_data_add_tensors(emad_tensor *t, size_t *n, const safetensors_file *f, int kind);

/* The commands. */
extern const ctl_cmd ctl_cmd_create, ctl_cmd_configure, ctl_cmd_list, ctl_cmd_drop;
extern const ctl_cmd ctl_cmd_push, ctl_cmd_pull;
extern const ctl_cmd ctl_cmd_export, ctl_cmd_import, ctl_cmd_snapshot;
extern const ctl_cmd ctl_cmd_stats, ctl_cmd_watch;
extern const ctl_cmd ctl_cmd_cluster, ctl_cmd_keygen;

#endif

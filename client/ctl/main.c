/*
 * main.c - the command-line client of emad: main, the command table and
 * the messages.
 *
 * emactl creates and drops models, pushes parameters and buffers read from
 * safetensors files, pulls the averaged model into a safetensors file, and
 * prints the daemon's models, tensors and counters. It is a thin layer over
 * libemad (include/emad.h) and the shared safetensors reader and writer
 * (src/common/safetensors.h): it parses the command line (args.c), reads
 * files before it talks to the daemon, and turns every failure into one line
 * on stderr, "emactl: COMMAND: MESSAGE (EMAD_ECODE)", and a non-zero exit
 * status (1 for a failed operation, 2 for a usage error). This file holds
 * main, which parses the options before the command and runs the command's
 * entry (the commands live in cmd_*.c), and the error printing and the
 * connection every command shares.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/proto.h"
#include "ctl.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "0.1.0"
#endif

/* The commands, in the order --help lists them. */
static const ctl_cmd *const commands[] = {
    &ctl_cmd_create,   &ctl_cmd_configure,
    &ctl_cmd_push,     &ctl_cmd_pull,
    &ctl_cmd_list,     &ctl_cmd_drop,
    &ctl_cmd_export,   &ctl_cmd_import,
    &ctl_cmd_snapshot, &ctl_cmd_stats,
    &ctl_cmd_watch,    &ctl_cmd_cluster,
    &ctl_cmd_keygen,   NULL,
};

/* ---- messages ------------------------------------------------------------------------------- */

/* Print "emactl: CMD: message" (without a newline) to stderr. */
__attribute__((format(printf, 2, 0))) static void
vprefixed(const ctl *g, const char *fmt, va_list ap)
{
    fprintf(stderr, "emactl: ");
    if (g->cmd != NULL)
        fprintf(stderr, "%s: ", g->cmd);
    vfprintf(stderr, fmt, ap);
}

/* Print "emactl: CMD: message" to stderr. */
void
ctl_errorf(const ctl *g, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vprefixed(g, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* Report a usage error with a hint and return EXIT_USAGE. */
int
ctl_usage_error(const ctl *g, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vprefixed(g, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'emactl %s%s--help'.\n", g->cmd != NULL ? g->cmd : "",
            g->cmd != NULL ? " " : "");
    return EXIT_USAGE;
}

/* Report a failed libemad call on c (NULL: no client) and return EXIT_FAIL. */
int
ctl_fail_rc(const ctl *g, const emad_client *c, int rc)
{
    const char *name = emad_errname(rc);
    const char *msg = c != NULL ? emad_last_error(c) : "";

    if (msg[0] == '\0')
        msg = emad_strerror(rc);
    if (name != NULL)
        ctl_errorf(g, "%s (%s)", msg, name);
    else
        ctl_errorf(g, "%s", msg);
    return EXIT_FAIL;
}

/* Report a file error: the cause names the path, or is prefixed with it. */
int
ctl_fail_file(const ctl *g, const char *path, int rc, const char *cause)
{
    size_t plen = strlen(path);
    const char *name = emad_errname(rc);
    char suffix[64] = "";

    if (cause == NULL)
        cause = emad_strerror(rc);
    if (name != NULL)
        (void)snprintf(suffix, sizeof(suffix), " (%s)", name);
    if (strncmp(cause, path, plen) == 0 && cause[plen] == ':')
        ctl_errorf(g, "%s%s", cause, suffix);
    else
        ctl_errorf(g, "%s: %s%s", path, cause, suffix);
    return EXIT_FAIL;
}

/* Print a command's usage to f. */
void
ctl_command_usage(FILE *f, const ctl_cmd *c)
{
    fprintf(f,
            "usage: emactl [--server URL | --cluster MAP] [--timeout MS] [--user USER --key-file "
            "FILE] %s\n\n%s",
            c->usage, c->help);
}

/* Connect to g's server with g's timeouts and, unless 0, chunk_bytes; NULL (printed) on failure. */
static emad_client *
connect_chunk(const ctl *g, uint64_t chunk_bytes)
{
    emad_options o;
    emad_client *c = NULL;
    int rc;

    emad_options_init(&o);
    if (chunk_bytes != 0)
        o.chunk_bytes = chunk_bytes;
    o.timeout_ms = g->timeout_ms;
    if (o.connect_timeout_ms > g->timeout_ms)
        o.connect_timeout_ms = g->timeout_ms;
    o.user = g->user;
    o.key_file = g->key_file;
    rc = g->cluster != NULL ? emad_connect_cluster(&c, g->cluster, &o)
                            : emad_connect(&c, g->server, &o);
    if (rc != 0) {
        const char *name = emad_errname(rc);
        char msg[512] = "";
        if (c != NULL)
            snprintf(msg, sizeof(msg), "%s", emad_last_error(c));
        else if (g->cluster != NULL)
            (void)emad_cluster_check_map(g->cluster, msg, sizeof(msg));
        else
            snprintf(msg, sizeof(msg), "%s", emad_last_error(NULL));
        if (g->cluster != NULL)
            ctl_errorf(g, "cannot use the cluster: %s%s%s%s", msg[0] ? msg : emad_strerror(rc),
                       name != NULL ? " (" : "", name != NULL ? name : "", name != NULL ? ")" : "");
        else
            ctl_errorf(g, "cannot talk to emad at %s: %s%s%s%s", g->server,
                       msg[0] ? msg : emad_strerror(rc), name != NULL ? " (" : "",
                       name != NULL ? name : "", name != NULL ? ")" : "");
        emad_close(c);
        return NULL;
    }
    return c;
}

/* Connect to the daemon; prints the error and returns NULL on failure. */
emad_client *
ctl_connect(const ctl *g)
{
    return connect_chunk(g, 0);
}

/* ctl_connect() with messages as large as the daemon accepts. */
emad_client *
ctl_connect_whole(const ctl *g)
{
    return connect_chunk(g, PROTO_MAX_MAX_MESSAGE);
}

/* Print the replicas a successful call on a cluster client skipped, one warning line each. */
void
ctl_warnings(const ctl *g, const emad_client *c)
{
    const char *w = g->cluster != NULL && c != NULL ? emad_cluster_warnings(c) : "";

    while (w != NULL && *w != '\0') {
        const char *nl = strchr(w, '\n');
        int len = nl != NULL ? (int)(nl - w) : (int)strlen(w);
        if (len > 0)
            fprintf(stderr, "emactl: %s: warning: %.*s\n", g->cmd != NULL ? g->cmd : "", len, w);
        w = nl != NULL ? nl + 1 : NULL;
    }
}

/* ---- main ----------------------------------------------------------------------------------- */

/* Print the global usage to f. */
static void
usage(FILE *f)
{
    fprintf(f,
            "usage: emactl [--server URL | --cluster MAP] [--timeout MS] [--user USER --key-file "
            "FILE] COMMAND [ARGS]\n"
            "\n"
            "emactl talks to emad, the EMA parameter server: it creates models, pushes\n"
            "parameters and buffers from safetensors files, pulls the averaged model\n"
            "into a safetensors file and shows what the daemon holds.\n"
            "\n"
            "commands:\n");
    for (const ctl_cmd *const *c = commands; *c != NULL; c++)
        fprintf(f, "  %s\n", (*c)->usage);
    fprintf(f,
            "\n"
            "options:\n"
            "  --server URL   daemon to talk to (default: $EMAD_SERVER if set, else %s)\n"
            "  --cluster MAP  talk to the cluster of a shard map (a file, or the text with\n"
            "                 ';' between lines; default: $EMAD_CLUSTER if set): every\n"
            "                 command goes through the map (docs/CLUSTER.md)\n"
            "  --timeout MS   time limit for each request, in milliseconds (default 30000)\n"
            "  --user USER    authenticate as USER (default: the user of the key file)\n"
            "  --key-file FILE  the user's key file, made by 'emactl keygen' (mode 0600);\n"
            "                 default: $EMAD_USER and $EMAD_KEY_FILE if set, else none\n"
            "  --version      print the version and exit\n"
            "  --help         print this help and exit; 'emactl COMMAND --help' for a command\n"
            "\n"
            "Exit status: 0 on success, 1 if the operation failed (daemon error, file\n"
            "error, daemon unreachable), 2 on a usage error. Errors are one line on stderr:\n"
            "  emactl: COMMAND: MESSAGE (EMAD_ECODE)\n",
            EMAD_DEFAULT_URL);
}

/* The name of a command: its op's wire name, or its own. */
const char *
ctl_cmd_name(const ctl_cmd *cmd)
{
    return cmd->op != 0 ? proto_op_name(cmd->op) : cmd->name;
}

/* The command named name, or NULL. */
static const ctl_cmd *
command_find(const char *name)
{
    for (const ctl_cmd *const *c = commands; *c != NULL; c++)
        if (strcmp(ctl_cmd_name(*c), name) == 0)
            return *c;
    return NULL;
}

/* Parse the command's arguments and run it. */
static int
command_run(ctl *g, const ctl_cmd *cmd, int argc, char **argv)
{
    ctl_args a;
    int r;

    g->cmd = ctl_cmd_name(cmd);
    args_init(&a, argc, argv);
    if ((r = args_parse(g, cmd, &a)) >= 0)
        return r;
    return cmd->exec(g, cmd, &a);
}

/* Parse the global options, then run the command. */
int
main(int argc, char **argv)
{
    ctl g = {.timeout_ms = 30000};
    const char *env = getenv("EMAD_SERVER"), *cenv = getenv("EMAD_CLUSTER");
    const ctl_cmd *cmd;
    int i = 1, r;

    g.server = env != NULL && env[0] != '\0' ? env : EMAD_DEFAULT_URL;
    g.cluster = cenv != NULL && cenv[0] != '\0' ? cenv : NULL;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return EXIT_SUCCESS;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("emactl %s (libemad %s, protocol %d)\n", PACKAGE_VERSION, emad_version(),
                   EMAD_PROTOCOL_VERSION);
            return EXIT_SUCCESS;
        }
        if ((r = args_global(&g, argc, argv, &i)) >= 0)
            return r;
    }
    if (i >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[i], "help") == 0) {
        if (i + 1 < argc && (cmd = command_find(argv[i + 1])) != NULL)
            ctl_command_usage(stdout, cmd);
        else
            usage(stdout);
        return EXIT_SUCCESS;
    }
    if ((cmd = command_find(argv[i])) == NULL)
        return ctl_usage_error(&g, "unknown command '%s'", argv[i]);
    return command_run(&g, cmd, argc - i - 1, argv + i + 1);
}

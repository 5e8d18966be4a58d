/*
 * settings.c - defaults, configuration file and flags (see settings.h).
 *
 * One table lists every key: its flag takes the same name, the file uses
 * it as is, --print-config prints it and a reload compares it. The file
 * is read whole into memory (at most SETTINGS_MAX_FILE_BYTES) and handed to
 * libinih line by line through our own reader, which counts lines and
 * refuses overlong ones and NUL bytes, so every error names its line.
 */
#include <errno.h>
#include <getopt.h>
#include <ini.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "common/cause.h"
#include "base/inilines.h"
#include "daemon/http.h"
#include "base/log.h"
#include "common/proto.h"
#include "common/shardmap.h"
#include "daemon/settings.h"
#include "base/xmalloc.h"

enum key {
    K_LISTEN,
    K_STATE_DIR,
    K_MAX_MESSAGE,
    K_TXN_TIMEOUT,
    K_SNAPSHOT_INTERVAL,
    K_SNAPSHOT_KEEP,
    K_REQUIRE_SNAPSHOT,
    K_LOG_LEVEL,
    K_HTTP,
    K_IO_CPU,
    K_IDLE_RELEASE,
    K_IDLE_RELEASE_MAX,
    K_AUTH_FILE,
    K_INSECURE,
    K_AUTH_SESSION_LIFETIME,
    K_MAX_MEMORY,
    K_CLIENT_SHARE,
    K_SHARD_MAP,
    K_SELF,
    K_COUNT
};

static const struct key_info {
    const char *name;
    int flag_arg; /* the flag takes an argument */
    int live;     /* a reload applies it */
} keys[K_COUNT] = {
    [K_LISTEN] = {"listen", 1, 0},
    [K_STATE_DIR] = {"state-dir", 1, 0},
    [K_MAX_MESSAGE] = {"max-message-bytes", 1, 0},
    [K_TXN_TIMEOUT] = {"txn-timeout", 1, 1},
    [K_SNAPSHOT_INTERVAL] = {"snapshot-interval", 1, 1},
    [K_SNAPSHOT_KEEP] = {"snapshot-keep", 1, 0},
    [K_REQUIRE_SNAPSHOT] = {"require-snapshot", 0, 0},
    [K_LOG_LEVEL] = {"log-level", 1, 1},
    [K_HTTP] = {"http", 1, 0},
    [K_IO_CPU] = {"io-cpu", 1, 0},
    [K_IDLE_RELEASE] = {"idle-release", 1, 0},
    [K_IDLE_RELEASE_MAX] = {"idle-release-max", 1, 0},
    [K_AUTH_FILE] = {"auth-file", 1, 0},
    [K_INSECURE] = {"insecure", 0, 0},
    [K_AUTH_SESSION_LIFETIME] = {"auth-session-lifetime", 1, 1},
    [K_MAX_MEMORY] = {"max-memory", 1, 0},
    [K_CLIENT_SHARE] = {"client-share", 1, 0},
    [K_SHARD_MAP] = {"shard-map", 1, 0},
    [K_SELF] = {"self", 1, 0},
};

void
settings_usage(FILE *f)
{
    fprintf(f,
            "usage: emad [options]\n"
            "\n"
            "emad keeps the exponential moving average of model weights pushed by\n"
            "training workers and serves it to evaluation clients (docs/PROTOCOL.md).\n"
            "\n"
            "options:\n"
            "  --config FILE            read settings from FILE (INI: key = value, keys\n"
            "                           named like these flags); flags override it\n"
            "  --print-config           print the effective settings and exit\n"
            "  --listen URL             nanomsg URL to listen on; repeatable\n"
            "                           (default %s; ipc://PATH also works)\n"
            "  --state-dir DIR          directory for the daemon's state (created if\n"
            "                           missing, locked against a second daemon);\n"
            "                           default: none\n"
            "  --max-message-bytes N    largest request accepted, in bytes; K, M, G\n"
            "                           suffixes are KiB, MiB, GiB (default 64M; range\n"
            "                           64K..1G). Larger pushes are sent by clients as\n"
            "                           transactions of chunks.\n"
            "  --txn-timeout SECONDS    discard a transaction, pull session or waiting\n"
            "                           multi-writer step idle this long (default 60;\n"
            "                           fractions allowed)\n"
            "  --snapshot-interval SECONDS\n"
            "                           write a snapshot of every changed model this\n"
            "                           often (default 60; 0: only on request and at\n"
            "                           shutdown). Needs --state-dir.\n"
            "  --snapshot-keep N        snapshots kept per model (default 2)\n"
            "  --require-snapshot       refuse to start unless every model in the state\n"
            "                           directory loads from a snapshot (and one exists)\n"
            "  --log-level LEVEL        error, warn, info or debug (default info)\n"
            "  --http HOST:PORT         serve /metrics, /healthz and /stats over HTTP\n"
            "                           (default %s; [IPV6]:PORT; off: no HTTP)\n"
            "  --io-cpu CPU             hold nanomsg's I/O thread (every message in and\n"
            "                           out) on this CPU while large pushes arrive;\n"
            "                           auto (default): the highest-numbered CPU the\n"
            "                           daemon may use, if it may use two or more;\n"
            "                           off: wherever the scheduler puts it\n"
            "  --idle-release SECONDS   after this long without a request, free the\n"
            "                           spare shadows and return free heap memory\n"
            "                           (default 5; fractions allowed). The next push\n"
            "                           then writes fresh memory, which is slower.\n"
            "  --idle-release-max SECONDS\n"
            "                           while pushes come at a steady pace, keep the\n"
            "                           spares for twice the time between pushes, up to\n"
            "                           this long (default 30; never less than\n"
            "                           --idle-release)\n"
            "  --auth-file FILE         users, their public keys and grants (INI; see\n"
            "                           docs/SECURITY.md): every request but hello\n"
            "                           must then be authenticated. Re-read on SIGHUP.\n"
            "  --insecure               without --auth-file, listen on addresses other\n"
            "                           than loopback and ipc:// anyway (anyone who\n"
            "                           reaches the port can change or drop any model)\n"
            "  --auth-session-lifetime SECONDS\n"
            "                           how long an authenticated session lives before\n"
            "                           the client must renew it (default 3600)\n"
            "  --max-memory N           memory budget: the most bytes clients can make\n"
            "                           the daemon hold (shadows, staged chunks,\n"
            "                           transactions, pull sessions, replies); K, M, G,\n"
            "                           T suffixes; auto (default): 3/4 of MemTotal or\n"
            "                           of the cgroup's memory limit if lower. Requests\n"
            "                           beyond it fail with EMAD_ELIMIT.\n"
            "  --client-share PERCENT   the share of the memory budget, and of the\n"
            "                           transaction, pull-session and waiting-step\n"
            "                           slots, one connection may hold (default 50;\n"
            "                           1..100)\n"
            "  --shard-map MAP          run as one replica of a cluster: MAP is a shard\n"
            "                           map file or its text (docs/PROTOCOL.md, \"Cluster\n"
            "                           mode\"); needs --self\n"
            "  --self URL               this daemon's URL as the shard map lists it\n"
            "  --version                print the version and exit\n"
            "  --help                   print this help and exit\n"
            "\n"
            "Logs go to stderr (without timestamps under systemd's journal).\n"
            "SIGINT or SIGTERM shut the daemon down cleanly, after writing a snapshot\n"
            "of every changed model (a second signal skips that). SIGHUP re-reads the\n"
            "--config file and applies log-level, snapshot-interval, txn-timeout and\n"
            "auth-session-lifetime, and re-reads the --auth-file; other changes are\n"
            "logged as needing a restart.\n"
            "Exit status: 0 after a clean shutdown, 1 on a startup error, 2 on bad\n"
            "usage or an invalid configuration.\n",
            EMAD_DEFAULT_URL, HTTP_DEFAULT_ADDRESS);
}

void
settings_init(settings *c)
{
    server_config d; /* the daemon's defaults */

    server_config_init(&d);
    memset(c, 0, sizeof(*c));
    c->max_message_bytes = d.max_message_bytes;
    c->txn_timeout_ms = d.txn_timeout_ms;
    c->snapshot_interval_ms = d.snapshot_interval_ms;
    c->snapshot_keep = d.snapshot_keep;
    c->io_cpu = d.io_cpu;
    c->idle_release_ms = d.idle_release_ms;
    c->idle_release_max_ms = d.idle_release_max_ms;
    c->auth_session_lifetime_ms = d.auth_session_lifetime_ms;
    c->max_memory = d.max_memory;
    c->client_share = d.client_share;
    c->log_level = LOG_INFO;
    c->http = xstrndup(HTTP_DEFAULT_ADDRESS, strlen(HTTP_DEFAULT_ADDRESS));
    c->http_is_default = 1;
}

/* Drop the listen URLs. */
static void
clear_listen(settings *c)
{
    for (int i = 0; i < c->nlisten; i++)
        free(c->listen[i]);
    c->nlisten = 0;
}

void
settings_free(settings *c)
{
    clear_listen(c);
    free(c->state_dir);
    free(c->http);
    free(c->auth_file);
    free(c->shard_map);
    free(c->self);
    c->state_dir = c->http = c->auth_file = c->shard_map = c->self = NULL;
}

/* Parse a byte count with an optional K/M/G (binary) suffix. */
static int
parse_bytes(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;
    uint64_t mult = 1;

    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || end == s)
        return -1;
    if (*end == 'K' || *end == 'k')
        mult = 1ULL << 10;
    else if (*end == 'M' || *end == 'm')
        mult = 1ULL << 20;
    else if (*end == 'G' || *end == 'g')
        mult = 1ULL << 30;
    else if (*end == 'T' || *end == 't')
        mult = 1ULL << 40;
    else if (*end != '\0')
        return -1;
    if (mult != 1 && end[1] != '\0')
        return -1;
    if (v > UINT64_MAX / mult)
        return -1;
    *out = v * mult;
    return 0;
}

/* Parse seconds (decimal fractions allowed; zero only if allow_zero) into milliseconds. */
static int
parse_seconds(const char *s, int allow_zero, uint64_t *ms)
{
    char *end;
    double v;

    if ((*s < '0' || *s > '9') && *s != '.')
        return -1;
    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v >= 0) || v > 86400.0 * 365)
        return -1;
    *ms = (uint64_t)(v * 1000.0 + 0.5);
    if (*ms == 0)
        return allow_zero && v == 0 ? 0 : -1;
    return 0;
}

/* Parse a boolean: yes/no, true/false, on/off, 1/0. */
static int
parse_bool(const char *s, int *v)
{
    static const char *const yes[] = {"yes", "true", "on", "1"}, *const no[] = {"no", "false",
                                                                                "off", "0"};

    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *v = 1;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *v = 0;
            return 0;
        }
    }
    return -1;
}

/* Look a key up; -1 if unknown. */
static int
key_find(const char *name)
{
    for (int k = 0; k < K_COUNT; k++)
        if (strcmp(keys[k].name, name) == 0)
            return k;
    return -1;
}

/* Set key k from value; 0 or -EINVAL with why filled. */
static int
set_key(settings *c, int k, const char *value, char *why, size_t size)
{
    uint64_t v;
    char *cause = NULL;

    switch (k) {
    case K_LISTEN:
        if (value[0] == '\0') {
            snprintf(why, size, "expected a nanomsg URL such as tcp://127.0.0.1:7470");
            return -EINVAL;
        }
        if (c->nlisten == SERVER_MAX_LISTEN) {
            snprintf(why, size, "at most %d listen URLs", SERVER_MAX_LISTEN);
            return -EINVAL;
        }
        c->listen[c->nlisten++] = xstrndup(value, strlen(value));
        return 0;
    case K_SHARD_MAP:
    case K_SELF:
        if (value[0] == '\0') {
            snprintf(why, size, "expected %s", k == K_SELF ? "a URL" : "a file or map text");
            return -EINVAL;
        }
        {
            char **dst = k == K_SELF ? &c->self : &c->shard_map;
            free(*dst);
            *dst = xstrndup(value, strlen(value));
        }
        return 0;
    case K_STATE_DIR:
        if (value[0] == '\0') {
            snprintf(why, size, "expected a directory (it must not be empty)");
            return -EINVAL;
        }
        free(c->state_dir);
        c->state_dir = xstrndup(value, strlen(value));
        return 0;
    case K_MAX_MESSAGE:
        if (parse_bytes(value, &v) < 0 || v < PROTO_MIN_MAX_MESSAGE || v > PROTO_MAX_MAX_MESSAGE) {
            snprintf(why, size, "expected a size from 64K to 1G (bytes, or with a K/M/G suffix)");
            return -EINVAL;
        }
        c->max_message_bytes = v;
        return 0;
    case K_TXN_TIMEOUT:
        if (parse_seconds(value, 0, &v) < 0) {
            snprintf(why, size, "expected a positive number of seconds");
            return -EINVAL;
        }
        c->txn_timeout_ms = v;
        return 0;
    case K_SNAPSHOT_INTERVAL:
        if (parse_seconds(value, 1, &v) < 0) {
            snprintf(why, size, "expected a number of seconds (0: off)");
            return -EINVAL;
        }
        c->snapshot_interval_ms = v;
        return 0;
    case K_SNAPSHOT_KEEP:
        if (strspn(value, "0123456789") != strlen(value) || parse_bytes(value, &v) < 0 || v < 1 ||
            v > 1000) {
            snprintf(why, size, "expected a whole number from 1 to 1000");
            return -EINVAL;
        }
        c->snapshot_keep = (size_t)v;
        return 0;
    case K_REQUIRE_SNAPSHOT:
        if (parse_bool(value, &c->require_snapshot) < 0) {
            snprintf(why, size, "expected yes or no");
            return -EINVAL;
        }
        return 0;
    case K_LOG_LEVEL:
        for (int l = LOG_ERROR; l <= LOG_DEBUG; l++) {
            if (strcmp(value, log_level_name(l)) == 0) {
                c->log_level = l;
                return 0;
            }
        }
        snprintf(why, size, "expected error, warn, info or debug");
        return -EINVAL;
    case K_HTTP:
        if (strcmp(value, "off") != 0 && http_check_address(value, &cause) != 0) {
            /* The cause quotes the value; keep only what was expected. */
            const char *msg = cause != NULL && strstr(cause, "': ") ? strstr(cause, "': ") + 3
                                                                    : "expected HOST:PORT or off";
            snprintf(why, size, "%s", msg);
            free(cause);
            return -EINVAL;
        }
        free(c->http);
        c->http = strcmp(value, "off") == 0 ? NULL : xstrndup(value, strlen(value));
        c->http_is_default = 0;
        return 0;
    case K_IDLE_RELEASE:
    case K_IDLE_RELEASE_MAX:
        if (parse_seconds(value, 0, &v) < 0 || v > SETTINGS_MAX_IDLE_RELEASE_MS) {
            snprintf(why, size, "expected a positive number of seconds, at most %d",
                     SETTINGS_MAX_IDLE_RELEASE_MS / 1000);
            return -EINVAL;
        }
        if (k == K_IDLE_RELEASE)
            c->idle_release_ms = v;
        else
            c->idle_release_max_ms = v;
        return 0;
    case K_AUTH_FILE:
        if (value[0] == '\0') {
            snprintf(why, size, "expected a file (it must not be empty)");
            return -EINVAL;
        }
        free(c->auth_file);
        c->auth_file = xstrndup(value, strlen(value));
        return 0;
    case K_INSECURE:
        if (parse_bool(value, &c->insecure) < 0) {
            snprintf(why, size, "expected yes or no");
            return -EINVAL;
        }
        return 0;
    case K_AUTH_SESSION_LIFETIME:
        if (parse_seconds(value, 0, &v) < 0 || v < 1000 || v > SETTINGS_MAX_IDLE_RELEASE_MS) {
            snprintf(why, size, "expected a number of seconds from 1 to %d",
                     SETTINGS_MAX_IDLE_RELEASE_MS / 1000);
            return -EINVAL;
        }
        c->auth_session_lifetime_ms = v;
        return 0;
    case K_MAX_MEMORY:
        if (strcmp(value, "auto") == 0) {
            c->max_memory = 0;
            return 0;
        }
        if (parse_bytes(value, &v) < 0 || v < SETTINGS_MIN_MAX_MEMORY) {
            snprintf(why, size,
                     "expected auto or a size of at least 1M (bytes, or with a "
                     "K/M/G/T suffix)");
            return -EINVAL;
        }
        c->max_memory = v;
        return 0;
    case K_CLIENT_SHARE:
        if (strspn(value, "0123456789") != strlen(value) || parse_bytes(value, &v) < 0 || v < 1 ||
            v > 100) {
            snprintf(why, size, "expected a whole percentage from 1 to 100");
            return -EINVAL;
        }
        c->client_share = (unsigned)v;
        return 0;
    case K_IO_CPU:
        if (strcmp(value, "auto") == 0) {
            c->io_cpu = SERVER_IO_CPU_AUTO;
        } else if (strcmp(value, "off") == 0) {
            c->io_cpu = SERVER_IO_CPU_OFF;
        } else if (strspn(value, "0123456789") == strlen(value) && parse_bytes(value, &v) == 0 &&
                   v < SETTINGS_MAX_CPU) {
            c->io_cpu = (int)v;
        } else {
            snprintf(why, size, "expected auto, off or a CPU number from 0 to %d",
                     SETTINGS_MAX_CPU - 1);
            return -EINVAL;
        }
        return 0;
    default:
        snprintf(why, size, "unknown key");
        return -ENOENT;
    }
}

/* Format seconds from milliseconds without trailing zeros. */
static void
fmt_seconds(char *buf, size_t size, uint64_t ms)
{
    if (ms % 1000 == 0)
        snprintf(buf, size, "%llu", (unsigned long long)(ms / 1000));
    else
        snprintf(buf, size, "%llu.%03llu", (unsigned long long)(ms / 1000),
                 (unsigned long long)(ms % 1000));
    /* "1.500" -> "1.5" */
    if (strchr(buf, '.') != NULL) {
        size_t n = strlen(buf);
        while (buf[n - 1] == '0')
            buf[--n] = '\0';
    }
}

/* Format a byte count with the largest exact K/M/G suffix. */
static void
fmt_bytes(char *buf, size_t size, uint64_t v)
{
    if (v != 0 && v % (1ULL << 30) == 0)
        snprintf(buf, size, "%lluG", (unsigned long long)(v >> 30));
    else if (v != 0 && v % (1ULL << 20) == 0)
        snprintf(buf, size, "%lluM", (unsigned long long)(v >> 20));
    else if (v != 0 && v % (1ULL << 10) == 0)
        snprintf(buf, size, "%lluK", (unsigned long long)(v >> 10));
    else
        snprintf(buf, size, "%llu", (unsigned long long)v);
}

/* The value of key k as text ("" when unset; listen URLs separated by spaces). */
static void
format_key(const settings *c, int k, char *buf, size_t size)
{
    size_t off = 0;

    buf[0] = '\0';
    switch (k) {
    case K_LISTEN:
        for (int i = 0; i < c->nlisten && off < size; i++)
            off += (size_t)snprintf(buf + off, size - off, "%s%s", i ? " " : "", c->listen[i]);
        break;
    case K_STATE_DIR:
        snprintf(buf, size, "%s", c->state_dir != NULL ? c->state_dir : "");
        break;
    case K_SHARD_MAP:
        snprintf(buf, size, "%s", c->shard_map != NULL ? c->shard_map : "");
        break;
    case K_SELF:
        snprintf(buf, size, "%s", c->self != NULL ? c->self : "");
        break;
    case K_MAX_MESSAGE:
        fmt_bytes(buf, size, c->max_message_bytes);
        break;
    case K_TXN_TIMEOUT:
        fmt_seconds(buf, size, c->txn_timeout_ms);
        break;
    case K_SNAPSHOT_INTERVAL:
        fmt_seconds(buf, size, c->snapshot_interval_ms);
        break;
    case K_SNAPSHOT_KEEP:
        snprintf(buf, size, "%zu", c->snapshot_keep);
        break;
    case K_REQUIRE_SNAPSHOT:
        snprintf(buf, size, "%s", c->require_snapshot ? "yes" : "no");
        break;
    case K_LOG_LEVEL:
        snprintf(buf, size, "%s", log_level_name(c->log_level));
        break;
    case K_HTTP:
        snprintf(buf, size, "%s", c->http != NULL ? c->http : "off");
        break;
    case K_IDLE_RELEASE:
        fmt_seconds(buf, size, c->idle_release_ms);
        break;
    case K_IDLE_RELEASE_MAX:
        fmt_seconds(buf, size, c->idle_release_max_ms);
        break;
    case K_AUTH_FILE:
        snprintf(buf, size, "%s", c->auth_file != NULL ? c->auth_file : "");
        break;
    case K_INSECURE:
        snprintf(buf, size, "%s", c->insecure ? "yes" : "no");
        break;
    case K_AUTH_SESSION_LIFETIME:
        fmt_seconds(buf, size, c->auth_session_lifetime_ms);
        break;
    case K_MAX_MEMORY:
        if (c->max_memory == 0)
            snprintf(buf, size, "auto");
        else
            fmt_bytes(buf, size, c->max_memory);
        break;
    case K_CLIENT_SHARE:
        snprintf(buf, size, "%u", c->client_share);
        break;
    case K_IO_CPU:
        if (c->io_cpu == SERVER_IO_CPU_AUTO)
            snprintf(buf, size, "auto");
        else if (c->io_cpu == SERVER_IO_CPU_OFF)
            snprintf(buf, size, "off");
        else
            snprintf(buf, size, "%d", c->io_cpu);
        break;
    default:
        break;
    }
}

void
settings_print(const settings *c, FILE *f)
{
    char buf[4096];

    fprintf(f, "# emad %s: effective settings (defaults, then --config, then flags)\n",
            PACKAGE_VERSION);
    for (int k = 0; k < K_COUNT; k++) {
        if (k == K_LISTEN) {
            for (int i = 0; i < c->nlisten; i++)
                fprintf(f, "listen = %s\n", c->listen[i]);
            if (c->nlisten == 0)
                fprintf(f, "listen = %s\n", EMAD_DEFAULT_URL);
            continue;
        }
        if (k == K_STATE_DIR && c->state_dir == NULL) {
            fprintf(f, "# state-dir = (none: state is kept in memory only)\n");
            continue;
        }
        if (k == K_AUTH_FILE && c->auth_file == NULL) {
            fprintf(f, "# auth-file = (none: requests are not authenticated)\n");
            continue;
        }
        if ((k == K_SHARD_MAP && c->shard_map == NULL) || (k == K_SELF && c->self == NULL)) {
            fprintf(f, "# %s = (none: not part of a cluster)\n", keys[k].name);
            continue;
        }
        format_key(c, k, buf, sizeof(buf));
        fprintf(f, "%s = %s\n", keys[k].name, buf);
    }
}

void
settings_server(const settings *c, server_config *out)
{
    server_config_init(out);
    for (int i = 0; i < c->nlisten; i++)
        out->listen[i] = c->listen[i];
    out->nlisten = c->nlisten;
    if (out->nlisten == 0)
        out->listen[out->nlisten++] = EMAD_DEFAULT_URL;
    out->state_dir = c->state_dir;
    out->shard_map = c->shard_map;
    out->self = c->self;
    out->max_message_bytes = c->max_message_bytes;
    out->txn_timeout_ms = c->txn_timeout_ms;
    out->snapshot_interval_ms = c->snapshot_interval_ms;
    out->snapshot_keep = c->snapshot_keep;
    out->require_snapshot = c->require_snapshot;
    out->io_cpu = c->io_cpu;
    out->idle_release_ms = c->idle_release_ms;
    out->idle_release_max_ms = c->idle_release_max_ms;
    out->auth_file = c->auth_file;
    out->insecure = c->insecure;
    out->auth_session_lifetime_ms = c->auth_session_lifetime_ms;
    out->max_memory = c->max_memory;
    out->client_share = c->client_share;
}

void
settings_diff(const settings *old, const settings *new_,
              void (*cb)(void *arg, const char *key, const char *was, const char *now, int live),
              void *arg)
{
    char a[4096], b[4096];

    for (int k = 0; k < K_COUNT; k++) {
        format_key(old, k, a, sizeof(a));
        format_key(new_, k, b, sizeof(b));
        if (k == K_LISTEN && old->nlisten == 0)
            snprintf(a, sizeof(a), "%s", EMAD_DEFAULT_URL);
        if (k == K_LISTEN && new_->nlisten == 0)
            snprintf(b, sizeof(b), "%s", EMAD_DEFAULT_URL);
        if (strcmp(a, b) != 0)
            cb(arg, keys[k].name, a, b, keys[k].live);
    }
}

/* Edit distance of two short strings (for "did you mean"), capped at 9. */
static int
distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    int row[64];

    if (la >= 63 || lb >= 63)
        return 9;
    for (size_t j = 0; j <= lb; j++)
        row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int up = row[j], best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            diag = up;
            row[j] = best;
        }
    }
    return row[lb] > 9 ? 9 : row[lb];
}

/* The known key closest to name, if it is close (underscores for hyphens count as close). */
static const char *
suggest(const char *name)
{
    char norm[64];
    size_t n = strlen(name);
    int best = 3, bestk = -1;

    if (n < sizeof(norm)) {
        for (size_t i = 0; i <= n; i++)
            norm[i] = name[i] == '_'
                          ? '-'
                          : (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] + 32 : name[i]);
        if (key_find(norm) >= 0)
            return keys[key_find(norm)].name;
    }
    for (int k = 0; k < K_COUNT; k++) {
        int d = distance(name, keys[k].name);
        if (d < best) {
            best = d;
            bestk = k;
        }
    }
    return bestk >= 0 ? keys[bestk].name : NULL;
}

/* State of one file load. */
typedef struct load_ctx {
    settings *c;
    const char *name;
    inilines lines; /* the reader of the text and the first error */
    unsigned set;   /* keys set by this file (bit per key) */
} load_ctx;

/* inih handler: one `name = value` in section. Returns 1, or 0 on an error. */
static int
on_key(void *user, const char *section, const char *name, const char *value)
{
    load_ctx *x = user;
    char why[256];
    const char *hint;
    int k;

    if (x->lines.err_line != 0 || inilines_refuse_indented(&x->lines))
        return 0;
    if (section[0] != '\0' && strcmp(section, "emad") != 0) {
        inilines_fail(&x->lines, "unknown section [%s] (settings go at the top or under [emad])",
                      section);
        return 0;
    }
    if ((k = key_find(name)) < 0) {
        if ((hint = suggest(name)) != NULL)
            inilines_fail(&x->lines, "unknown key '%s' (did you mean '%s'?)", name, hint);
        else
            inilines_fail(&x->lines, "unknown key '%s'", name);
        return 0;
    }
    if (k != K_LISTEN && (x->set & (1u << k)) != 0) {
        inilines_fail(&x->lines, "'%s' is set twice", name);
        return 0;
    }
    if (k == K_LISTEN && (x->set & (1u << k)) == 0)
        clear_listen(x->c); /* the file's URLs replace the default */
    x->set |= 1u << k;
    if (set_key(x->c, k, value, why, sizeof(why)) != 0) {
        inilines_fail(&x->lines, "%s = '%s': %s", name, value, why);
        return 0;
    }
    return 1;
}

int
settings_load_string(settings *c, const char *name, const char *buf, size_t len, char **cause)
{
    load_ctx x;
    int rc;

    memset(&x, 0, sizeof(x));
    x.c = c;
    x.name = name;
    /* Lines as long as inih's buffer allows; indented ones are refused by on_key (inih passes
     * an indented comment or section header without calling it). */
    inilines_init(&x.lines, buf, len, SIZE_MAX, 0);
    rc = ini_parse_stream(inilines_read, &x.lines, on_key, &x);
    if (x.lines.err_line != 0 && (rc <= 0 || rc >= x.lines.err_line))
        return cause_set(cause, -EINVAL, "%s:%d: %s", name, x.lines.err_line, x.lines.err);
    if (rc > 0)
        return cause_set(cause, -EINVAL,
                         "%s:%d: syntax error (expected 'key = value', '[section]' or a comment)",
                         name, rc);
    if (rc < 0)
        return cause_set(cause, -ENOMEM, "%s: out of memory", name);
    return 0;
}

int
settings_load_file(settings *c, const char *path, char **cause)
{
    FILE *fp = fopen(path, "re");
    char *buf;
    size_t n;
    int rc;

    if (fp == NULL)
        return cause_set(cause, -errno, "cannot read %s: %s", path, strerror(errno));
    buf = xmalloc(SETTINGS_MAX_FILE_BYTES + 1);
    n = fread(buf, 1, SETTINGS_MAX_FILE_BYTES + 1, fp);
    if (ferror(fp)) {
        rc = cause_set(cause, -EIO, "cannot read %s: %s", path, strerror(errno));
    } else if (n > SETTINGS_MAX_FILE_BYTES) {
        rc = cause_set(cause, -EFBIG, "%s: larger than %d bytes", path, SETTINGS_MAX_FILE_BYTES);
    } else {
        rc = settings_load_string(c, path, buf, n, cause);
    }
    free(buf);
    fclose(fp);
    return rc;
}

int
settings_parse_args(settings_args *a, int argc, char **argv, char **cause)
{
    enum { OPT_CONFIG = 256, OPT_PRINT, OPT_VERSION, OPT_HELP, OPT_KEY };
    struct option opts[K_COUNT + 5];
    settings scratch;
    char why[256];
    int c, n = 0, idx;

    memset(a, 0, sizeof(*a));
    a->flags = xcalloc((size_t)argc + 1, sizeof(*a->flags));
    for (int k = 0; k < K_COUNT; k++)
        opts[n++] = (struct option){
            keys[k].name, keys[k].flag_arg ? required_argument : no_argument, NULL, OPT_KEY + k};
    opts[n++] = (struct option){"config", required_argument, NULL, OPT_CONFIG};
    opts[n++] = (struct option){"print-config", no_argument, NULL, OPT_PRINT};
    opts[n++] = (struct option){"version", no_argument, NULL, OPT_VERSION};
    opts[n++] = (struct option){"help", no_argument, NULL, OPT_HELP};
    opts[n] = (struct option){NULL, 0, NULL, 0};

    settings_init(&scratch);
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, &idx)) != -1) {
        switch (c) {
        case OPT_CONFIG:
            if (optarg[0] == '\0') {
                settings_free(&scratch);
                return cause_set(cause, -EINVAL, "--config must not be empty");
            }
            a->config_path = optarg;
            break;
        case OPT_PRINT:
            a->print_config = 1;
            break;
        case OPT_VERSION:
            a->version = 1;
            break;
        case OPT_HELP:
            a->help = 1;
            break;
        case '?':
        case ':':
            settings_free(&scratch);
            a->usage_error = 1;
            if (optopt != 0)
                return cause_set(cause, -EINVAL, "option '%s' needs an argument", argv[optind - 1]);
            return cause_set(cause, -EINVAL, "unknown option '%s'", argv[optind - 1]);
        default: {
            int k = c - OPT_KEY;
            const char *value = keys[k].flag_arg ? optarg : "yes";
            /* Check the value now, so a bad flag is reported as a flag. */
            if (set_key(&scratch, k, value, why, sizeof(why)) != 0) {
                settings_free(&scratch);
                return cause_set(cause, -EINVAL, "--%s '%s': %s", keys[k].name, value, why);
            }
            if (k == K_LISTEN && scratch.nlisten == SERVER_MAX_LISTEN)
                clear_listen(&scratch); /* the limit is checked when the flags are applied */
            a->flags[a->nflags].key = keys[k].name;
            a->flags[a->nflags].value = value;
            a->nflags++;
            break;
        }
        }
    }
    settings_free(&scratch);
    a->usage_error = optind < argc;
    if (optind < argc)
        return cause_set(cause, -EINVAL, "unexpected argument '%s'", argv[optind]);
    return 0;
}

void
settings_args_free(settings_args *a)
{
    free(a->flags);
    a->flags = NULL;
    a->nflags = 0;
}

int
settings_build(settings *c, const settings_args *a, char **cause)
{
    char why[256];
    int rc, listen_flags = 0;

    settings_init(c);
    if (a->config_path != NULL && (rc = settings_load_file(c, a->config_path, cause)) != 0)
        return rc;
    for (size_t i = 0; i < a->nflags; i++) {
        int k = key_find(a->flags[i].key);
        if (k == K_LISTEN && !listen_flags++)
            clear_listen(c); /* flags replace the file's URLs */
        if (set_key(c, k, a->flags[i].value, why, sizeof(why)) != 0)
            return cause_set(cause, -EINVAL, "--%s '%s': %s", a->flags[i].key, a->flags[i].value,
                             why);
    }
    if (c->require_snapshot && c->state_dir == NULL)
        return cause_set(cause, -EINVAL, "require-snapshot needs state-dir");
    if ((c->shard_map == NULL) != (c->self == NULL))
        return cause_set(cause, -EINVAL, "shard-map and self go together");
    if (c->shard_map != NULL) {
        shardmap *m = NULL;
        char *mcause = NULL;
        uint32_t s, r;
        int found;

        if (shardmap_load(c->shard_map, &m, &mcause) != 0) {
            rc = cause_set(cause, -EINVAL, "shard-map: %s", mcause != NULL ? mcause : "invalid");
            free(mcause);
            return rc;
        }
        found = shardmap_find(m, c->self, &s, &r) == 0;
        shardmap_destroy(m);
        if (!found)
            return cause_set(cause, -EINVAL, "self '%s' is not one of the shard map's URLs",
                             c->self);
    }
    return 0;
}

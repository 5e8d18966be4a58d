/*
 * emaconf.h - a model's EMA configuration: defaults, validation, the
 * option names, the msgpack encoding shared by the daemon and libemad, and
 * the decay schedules (docs/EMA.md has the formulas).
 *
 * The configuration is the public emad_model_config. In the daemon the
 * pattern strings are owned by the struct (emaconf_copy() / emaconf_free());
 * in a caller's struct they are borrowed.
 */
#ifndef EMAD_EMACONF_H
#define EMAD_EMACONF_H

#include <stddef.h>
#include <stdint.h>

#include "emad.h"
#include "common/proto_keys.h"

struct msgpack_object;
struct msgpack_packer;

/*
 * The configuration options, one line each: X(ID, "key", TYPE, field).
 * The key is the option's name in the create and configure requests, in
 * the replies that describe a model, and in a snapshot's emad_config; the
 * order is the order emaconf_pack() and the snapshot write them in, so it
 * is part of both formats. field is the emad_model_config member; a
 * DECAYS or PATTERNS option also has the count member n<field>, and an
 * ENUM option the name function emaconf_<field>_name(). Types: DECAYS (1..
 * EMAD_MAX_DECAYS numbers), ENUM (a name), U64 (an unsigned integer), REAL
 * (a number), U32 (an unsigned integer 1..EMAD_MAX_WRITERS), PATTERNS (up
 * to EMAD_MAX_GLOBS fnmatch(3) patterns).
 */
#define EMACONF_OPTIONS(X)                                                                         \
    X(DECAYS, "decays", DECAYS, decays)                                                            \
    X(SCHEDULE, "schedule", ENUM, schedule)                                                        \
    X(UPDATE_AFTER_STEP, "update_after_step", U64, update_after_step)                              \
    X(INV_GAMMA, "inv_gamma", REAL, inv_gamma)                                                     \
    X(POWER, "power", REAL, power)                                                                 \
    X(MIN_DECAY, "min_decay", REAL, min_decay)                                                     \
    X(STEP_GAP, "step_gap", ENUM, step_gap)                                                        \
    X(BUFFERS, "buffers", ENUM, buffers)                                                           \
    X(NONFINITE, "nonfinite", ENUM, nonfinite)                                                     \
    X(WRITERS, "writers", U32, writers)                                                            \
    X(COPY, PROTO_VAL_UPDATE_COPY, PATTERNS, copy)                                                                \
    X(IGNORE, "ignore", PATTERNS, ignore)

/* A request may give a single decay under this key instead of "decays". */
#define EMACONF_DECAY_KEY PROTO_KEY_DECAY

/* The options by index: EMACONF_DECAYS ... EMACONF_IGNORE, then their count. */
enum emaconf_option {
#define EMACONF_OPTION_ENUM(id, key, type, field) EMACONF_##id,
    EMACONF_OPTIONS(EMACONF_OPTION_ENUM)
#undef EMACONF_OPTION_ENUM
        EMACONF_NOPTIONS
};

/* The key of an option (enum emaconf_option), e.g. "decays"; NULL if out of range. */
const char *emaconf_key(int option);

/* Defaults: one decay 0.999, constant, inv_gamma 1, power 2/3, writers 1. */
void emaconf_init(emad_model_config *cfg);

/* Largest update_after_step: a snapshot keeps it as a JSON integer (int64). */
#define EMACONF_MAX_UPDATE_AFTER_STEP ((uint64_t)INT64_MAX)

/*
 * Check every field: decays in [0, 1] (1..EMAD_MAX_DECAYS of them, no
 * duplicates), enums in range, update_after_step <= 2^63 - 1, inv_gamma
 * and power finite and > 0,
 * min_decay in [0, 1], writers 1..EMAD_MAX_WRITERS, patterns 1..
 * EMAD_MAX_GLOB_BYTES bytes of UTF-8 without control characters. Returns 0 or EMAD_ERANGE with why (a message
 * of up to size bytes) filled.
 */
int emaconf_check(const emad_model_config *cfg, char *why, size_t size);

/* Deep copy (patterns duplicated) into *dst, which must be freed with emaconf_free(). */
void emaconf_copy(emad_model_config *dst, const emad_model_config *src);
void emaconf_free(emad_model_config *cfg);

/*
 * Compare two configurations. Returns NULL if equal, else the name of the
 * first differing option ("decays", "schedule", ...). With live_only, only
 * the options that cannot change on a live model are compared (buffers,
 * writers, copy, ignore and the number of decays).
 */
const char *emaconf_diff(const emad_model_config *a, const emad_model_config *b,
                         int immutable_only);

/* Option names. */
const char *emaconf_schedule_name(int v);
const char *emaconf_step_gap_name(int v);
const char *emaconf_buffers_name(int v);
const char *emaconf_nonfinite_name(int v);

/* Enum value for option ("schedule", "step_gap", "buffers", "nonfinite") and name; -1 if none. */
int emaconf_from_name(const char *option, const char *name, size_t len);

/* Number of map entries emaconf_pack() writes: one per option. */
#define EMACONF_PACKED_KEYS EMACONF_NOPTIONS

/* Pack the configuration as EMACONF_PACKED_KEYS key/value pairs into an open map. */
void emaconf_pack(struct msgpack_packer *pk, const emad_model_config *cfg);

/* Storage for the pattern strings emaconf_unpack() reads. */
typedef struct emaconf_strings {
    char copy[EMAD_MAX_GLOBS][EMAD_MAX_GLOB_BYTES + 1];
    char ignore[EMAD_MAX_GLOBS][EMAD_MAX_GLOB_BYTES + 1];
} emaconf_strings;

/*
 * Read configuration keys from a msgpack map into cfg (which holds the
 * defaults or the current values: absent keys leave fields unchanged). A
 * scalar "decay" is accepted as a single-element "decays". Pattern
 * strings are copied into *strings, which must outlive cfg's use.
 * Returns 0, or EMAD_EMALFORMED (wrong type) / EMAD_ERANGE (unknown enum
 * name, too many entries) with why filled. Does not run emaconf_check().
 */
int emaconf_unpack(const struct msgpack_object *map, emad_model_config *cfg,
                   emaconf_strings *strings, char *why, size_t size);

/* A double with the fewest digits that read back as the same value ("0.999"). */
const char *emaconf_fmt_double(char *buf, size_t size, double v);

/* Does name (len bytes) match any of the n fnmatch(3) patterns? */
int emaconf_match(const char *const *patterns, size_t n, const char *name, size_t len);

/*
 * The decay of one step t for base decay d (0 means: copy the value).
 * Steps <= update_after_step copy; then constant: d; num_updates:
 * min(d, (1 + n) / (10 + n)) with n = t - update_after_step; warmup: copy
 * at e = t - update_after_step - 1 == 0, else 1 - (1 + e / inv_gamma) **
 * -power; both scheduled decays clamped to [min_decay, d] (min_decay wins
 * if larger).
 */
double emaconf_step_decay(const emad_model_config *cfg, double d, uint64_t t);

/*
 * The decay a push at step t applies to a shadow last updated at step s
 * (s < t): the step decay of t, or with step_gap = compensate the product
 * of the step decays of s+1 .. t (0 as soon as one of them copies).
 */
double emaconf_decay(const emad_model_config *cfg, double d, uint64_t s, uint64_t t);

#endif

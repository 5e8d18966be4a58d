/*
 * budget.h - the memory budget: every byte a client can make the daemon
 * hold, counted by part against one limit (--max-memory), and the share
 * of bytes and slots one owner may take.
 *
 * An owner is whoever a request is charged to: the connection it came on
 * (its nanomsg pipe), or 0 for the daemon's own work (loading snapshots),
 * to which no share applies. Once requests are authenticated the owner
 * can be the user instead; nothing here depends on what the key means.
 *
 * Parts: the models' shadows and spares belong to no owner; staged chunks,
 * pending multi-writer steps, transaction shadows, pull sessions and
 * replies in flight belong to the owner whose request made them. Every
 * holder records what it was charged and gives back exactly that, so the
 * gauges are sums of what is held now. Loop thread only.
 */
#ifndef EMAD_BUDGET_H
#define EMAD_BUDGET_H

#include <stddef.h>
#include <stdint.h>

#include "common/proto_keys.h"

struct store_err;

/* X(ID, name in gauges and messages, what it counts) */
#define BUDGET_PARTS(X)                                                                            \
    X(SHADOWS, PROTO_VAL_MEMORY_SHADOWS, "models' shadows, every decay")                           \
    X(SPARES, PROTO_VAL_MEMORY_SPARES, "old shadows kept for reuse")                               \
    X(STAGED, PROTO_VAL_MEMORY_STAGED, "multi-writer transaction chunks")                          \
    X(PENDING, PROTO_VAL_MEMORY_PENDING, "parts of waiting steps")                                 \
    X(TXN_SHADOWS, PROTO_VAL_MEMORY_TXN_SHADOWS, "new shadows of open transactions")               \
    X(SESSIONS, PROTO_VAL_MEMORY_SESSIONS, "versions pull sessions hold")                          \
    X(REPLIES, PROTO_VAL_MEMORY_REPLIES, "replies not yet taken")                                  \
    X(PREVIOUS, PROTO_VAL_MEMORY_PREVIOUS, "previous versions kept in cluster mode")

enum budget_part {
#define BUDGET_ENUM(id, name, help) BUDGET_##id,
    BUDGET_PARTS(BUDGET_ENUM)
#undef BUDGET_ENUM
        BUDGET_PART_COUNT
};

/* Slots counted per owner (pending steps are counted per model, by pending.c). */
enum budget_slot { BUDGET_SLOT_TXNS, BUDGET_SLOT_SESSIONS, BUDGET_SLOT_COUNT };

/* The owner of the daemon's own work: no share applies. */
#define BUDGET_NO_OWNER 0

/* Defaults: no limit until configured; half of everything per owner. */
#define BUDGET_DEFAULT_SHARE_PERCENT 50

typedef struct budget budget;

/* A budget without a limit (aborts on out of memory). */
budget *budget_create(void);

/* Free a budget; NULL accepted. */
void budget_destroy(budget *b);

/* Set the limit in bytes (0: none) and the share of it, in percent, one owner may hold. */
void budget_configure(budget *b, uint64_t limit, unsigned share_percent);

uint64_t budget_limit(const budget *b);
unsigned budget_share_percent(const budget *b);

/* The owner of the request being handled (store_set_owner()), for code that has no store. */
void budget_set_current(budget *b, uint64_t owner);
uint64_t budget_current(const budget *b);

/* Bytes held now in one part, and in all. */
uint64_t budget_used(const budget *b, int part);
uint64_t budget_total(const budget *b);

/* Bytes of the owner's parts held now. */
uint64_t budget_owner_bytes(const budget *b, uint64_t owner);

/* Name of a part ("shadows", ...) and what it counts. */
const char *budget_part_name(int part);
const char *budget_part_help(int part);

/* One owner's share of n slots: n * share / 100, at least 1. */
uint64_t budget_share_of(const budget *b, uint64_t n);

/*
 * Can `bytes` more of part be held, `own` of them by owner? 0, or
 * EMAD_ELIMIT with a message naming the budget, the part and the figures.
 * own counts against the owner's share only (for an owner other than
 * BUDGET_NO_OWNER); bytes against the limit.
 */
int budget_check(const budget *b, int part, uint64_t owner, uint64_t bytes, uint64_t own,
                 struct store_err *err);

/* Count bytes of part as held, by owner (BUDGET_NO_OWNER for the models' own parts). */
void budget_charge(budget *b, int part, uint64_t owner, uint64_t bytes);

/* Give back bytes charged before with the same part and owner. */
void budget_release(budget *b, int part, uint64_t owner, uint64_t bytes);

/*
 * Take one of `total` slots of a kind for owner: EMAD_ELIMIT (naming
 * `what`) when the owner holds its share already. Give it back with
 * budget_slot_put().
 */
int budget_slot_take(budget *b, int slot, uint64_t owner, uint64_t total, const char *what,
                     struct store_err *err);
void budget_slot_put(budget *b, int slot, uint64_t owner);

/*
 * Replies in flight. nanomsg tells nobody when a reply has left, and it
 * holds at most one reply per connection (it drops replies to a
 * connection still sending the previous one): a connection is charged the
 * largest reply sent to it since it was last idle for idle_ms.
 * budget_reply_sent() records a reply; budget_reply_expire() gives back
 * the charges of connections idle that long (the timer).
 */
void budget_reply_sent(budget *b, uint64_t owner, uint64_t bytes, uint64_t now_ms);

/* Bytes a reply of `bytes` to owner would add to the replies in flight. */
uint64_t budget_reply_need(const budget *b, uint64_t owner, uint64_t bytes);
void budget_owner_seen(budget *b, uint64_t owner, uint64_t now_ms);
void budget_reply_expire(budget *b, uint64_t now_ms, uint64_t idle_ms);

#endif

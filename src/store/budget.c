/*
 * budget.c - the memory budget (see budget.h): bytes held per part and
 * per owner, the checks before an allocation, slot shares, and the
 * estimate of replies in flight.
 *
 * Owners are kept in a table (an entry per owner holding anything) indexed
 * by a strmap on the entry's own key bytes; an entry is removed when it
 * holds nothing. Checks and charges are O(1).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "emad.h"
#include "store/budget.h"
#include "store/store_int.h"
#include "base/strmap.h"
#include "base/xmalloc.h"

/* What one owner holds. */
typedef struct owner_entry {
    uint64_t key;
    uint64_t bytes; /* its parts, in all */
    uint64_t slots[BUDGET_SLOT_COUNT];
    uint64_t reply;   /* bytes charged for replies in flight */
    uint64_t seen_ms; /* its latest request */
    size_t pos;       /* index in budget.owners */
} owner_entry;

struct budget {
    uint64_t limit;   /* 0: none */
    uint64_t current; /* owner of the request being handled */
    unsigned share;   /* percent */
    uint64_t used[BUDGET_PART_COUNT];
    uint64_t total;
    owner_entry **owners;
    size_t nowners, cap;
    strmap *index;
};

static const char *const part_names[BUDGET_PART_COUNT] = {
#define BUDGET_NAME(id, name, help) [BUDGET_##id] = name,
    BUDGET_PARTS(BUDGET_NAME)
#undef BUDGET_NAME
};

static const char *const part_helps[BUDGET_PART_COUNT] = {
#define BUDGET_HELP(id, name, help) [BUDGET_##id] = help,
    BUDGET_PARTS(BUDGET_HELP)
#undef BUDGET_HELP
};

budget *
budget_create(void)
{
    budget *b = xcalloc(1, sizeof(*b));

    b->share = BUDGET_DEFAULT_SHARE_PERCENT;
    b->index = strmap_create();
    return b;
}

void
budget_destroy(budget *b)
{
    if (b == NULL)
        return;
    for (size_t i = 0; i < b->nowners; i++)
        free(b->owners[i]);
    free(b->owners);
    strmap_destroy(b->index);
    free(b);
}

void
budget_configure(budget *b, uint64_t limit, unsigned share_percent)
{
    b->limit = limit;
    b->share = share_percent == 0 || share_percent > 100 ? 100 : share_percent;
}

void
budget_set_current(budget *b, uint64_t owner)
{
    b->current = owner;
}

uint64_t
budget_current(const budget *b)
{
    return b->current;
}

uint64_t
budget_limit(const budget *b)
{
    return b->limit;
}

unsigned
budget_share_percent(const budget *b)
{
    return b->share;
}

uint64_t
budget_used(const budget *b, int part)
{
    return part >= 0 && part < BUDGET_PART_COUNT ? b->used[part] : 0;
}

uint64_t
budget_total(const budget *b)
{
    return b->total;
}

const char *
budget_part_name(int part)
{
    return part >= 0 && part < BUDGET_PART_COUNT ? part_names[part] : "?";
}

const char *
budget_part_help(int part)
{
    return part >= 0 && part < BUDGET_PART_COUNT ? part_helps[part] : "?";
}

uint64_t
budget_share_of(const budget *b, uint64_t n)
{
    uint64_t s = n / 100 * b->share + n % 100 * b->share / 100;

    return s > 0 ? s : 1;
}

/* The owner's entry, or NULL. */
static owner_entry *
owner_find(const budget *b, uint64_t key)
{
    return strmap_get(b->index, (const char *)&key, sizeof(key));
}

/* The owner's entry, created if absent. */
static owner_entry *
owner_get(budget *b, uint64_t key)
{
    owner_entry *o = owner_find(b, key);

    if (o != NULL)
        return o;
    o = xcalloc(1, sizeof(*o));
    o->key = key;
    if (b->nowners == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 16;
        b->owners = xreallocarray(b->owners, b->cap, sizeof(*b->owners));
    }
    o->pos = b->nowners;
    b->owners[b->nowners++] = o;
    strmap_put(b->index, (const char *)&o->key, sizeof(o->key), o);
    return o;
}

/* Remove an owner's entry once it holds nothing. */
static void
owner_tidy(budget *b, owner_entry *o)
{
    if (o->bytes != 0 || o->reply != 0)
        return;
    for (int k = 0; k < BUDGET_SLOT_COUNT; k++)
        if (o->slots[k] != 0)
            return;
    (void)strmap_del(b->index, (const char *)&o->key, sizeof(o->key));
    b->owners[o->pos] = b->owners[--b->nowners];
    b->owners[o->pos]->pos = o->pos;
    free(o);
}

uint64_t
budget_owner_bytes(const budget *b, uint64_t key)
{
    const owner_entry *o = owner_find(b, key);

    return o != NULL ? o->bytes : 0;
}

/* A byte count for messages: "512 B", "3.2 MiB". */
static const char *
fmt_size(char *buf, size_t size, uint64_t v)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB"};
    double d = (double)v;
    int u = -1;

    if (v < 1024) {
        snprintf(buf, size, "%llu B", (unsigned long long)v);
        return buf;
    }
    while (d >= 1024.0 && u < 3) {
        d /= 1024.0;
        u++;
    }
    snprintf(buf, size, "%.1f %s", d, units[u]);
    return buf;
}

int
budget_check(const budget *b, int part, uint64_t key, uint64_t bytes, uint64_t own,
             struct store_err *err)
{
    char need[32], used[32], limit[32], mine[32];
    const owner_entry *o;
    uint64_t share, held;

    if (b->limit == 0)
        return 0;
    /* Nothing more (when models loaded at startup exceed the budget, requests that add
     * nothing still pass). */
    if (bytes > 0 && (bytes > b->limit || b->total > b->limit - bytes))
        return store_fail(err, EMAD_ELIMIT, NULL,
                          "memory budget exceeded (--max-memory %s): %s would need %s "
                          "more, %s of the budget is in use (see emad_memory_bytes)",
                          fmt_size(limit, sizeof(limit), b->limit), budget_part_name(part),
                          fmt_size(need, sizeof(need), bytes),
                          fmt_size(used, sizeof(used), b->total));
    if (key == BUDGET_NO_OWNER || own == 0)
        return 0;
    share = budget_share_of(b, b->limit);
    held = (o = owner_find(b, key)) != NULL ? o->bytes + o->reply : 0;
    if (own > share || held > share - own)
        return store_fail(
            err, EMAD_ELIMIT, NULL,
            "memory budget: one connection may hold at most %u%% of --max-memory %s (%s); it "
            "holds %s and %s would need %s more",
            b->share, fmt_size(limit, sizeof(limit), b->limit), fmt_size(used, sizeof(used), share),
            fmt_size(mine, sizeof(mine), held), budget_part_name(part),
            fmt_size(need, sizeof(need), own));
    return 0;
}

/* Is part one that owners are charged for? */
static int
owned_part(int part)
{
    return part != BUDGET_SHADOWS && part != BUDGET_SPARES;
}

void
budget_charge(budget *b, int part, uint64_t key, uint64_t bytes)
{
    if (bytes == 0)
        return;
    b->used[part] += bytes;
    b->total += bytes;
    if (key != BUDGET_NO_OWNER && owned_part(part) && part != BUDGET_REPLIES)
        owner_get(b, key)->bytes += bytes;
}

void
budget_release(budget *b, int part, uint64_t key, uint64_t bytes)
{
    owner_entry *o;

    if (bytes == 0)
        return;
    b->used[part] -= bytes;
    b->total -= bytes;
    if (key != BUDGET_NO_OWNER && owned_part(part) && part != BUDGET_REPLIES &&
        (o = owner_find(b, key)) != NULL) {
        o->bytes -= bytes;
        owner_tidy(b, o);
    }
}

int
budget_slot_take(budget *b, int slot, uint64_t key, uint64_t total, const char *what,
                 struct store_err *err)
{
    owner_entry *o;
    uint64_t share = budget_share_of(b, total);

    if (key == BUDGET_NO_OWNER)
        return 0;
    o = owner_get(b, key);
    if (o->slots[slot] >= share) {
        owner_tidy(b, o);
        return store_fail(err, EMAD_ELIMIT, NULL,
                          "one connection may hold at most %llu of the %llu %s (%u%%); "
                          "finish or release some first",
                          (unsigned long long)share, (unsigned long long)total, what, b->share);
    }
    o->slots[slot]++;
    return 0;
}

void
budget_slot_put(budget *b, int slot, uint64_t key)
{
    owner_entry *o;

    if (key == BUDGET_NO_OWNER || (o = owner_find(b, key)) == NULL || o->slots[slot] == 0)
        return;
    o->slots[slot]--;
    owner_tidy(b, o);
}

void
budget_reply_sent(budget *b, uint64_t key, uint64_t bytes, uint64_t now_ms)
{
    owner_entry *o = owner_get(b, key);

    o->seen_ms = now_ms;
    if (bytes > o->reply) {
        b->used[BUDGET_REPLIES] += bytes - o->reply;
        b->total += bytes - o->reply;
        o->reply = bytes;
    }
    owner_tidy(b, o);
}

uint64_t
budget_reply_need(const budget *b, uint64_t key, uint64_t bytes)
{
    const owner_entry *o = owner_find(b, key);
    uint64_t held = o != NULL ? o->reply : 0;

    return bytes > held ? bytes - held : 0;
}

void
budget_owner_seen(budget *b, uint64_t key, uint64_t now_ms)
{
    owner_entry *o = owner_find(b, key);

    if (o != NULL)
        o->seen_ms = now_ms;
}

void
budget_reply_expire(budget *b, uint64_t now_ms, uint64_t idle_ms)
{
    for (size_t i = 0; i < b->nowners;) {
        owner_entry *o = b->owners[i];
        if (o->reply == 0 || now_ms < o->seen_ms || now_ms - o->seen_ms < idle_ms) {
            i++;
            continue;
        }
        size_t before = b->nowners;
        b->used[BUDGET_REPLIES] -= o->reply;
        b->total -= o->reply;
        o->reply = 0;
        owner_tidy(b, o); /* when it frees o, the last entry moves to i: look at i again */
        if (b->nowners == before)
            i++;
    }
}

/*
 * authsess.c - users, handshakes, sessions and owners (see authsess.h).
 *
 * Each collection is a hash map for lookup (strmap, keyed by the 8 bytes
 * of the id inside the element) and a list for expiry and iteration.
 * Secret material (daemon ephemeral keys, session keys) is wiped before
 * it is freed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/strmap.h"
#include "base/xmalloc.h"
#include "daemon/authsess.h"

/* The owner of a transaction ('t') or pull session ('s'). */
typedef struct owner {
    unsigned char key[9]; /* kind, then the id (host order) */
    char user[AUTH_USER_MAX + 1];
    char model[EMAD_MAX_MODEL_NAME_BYTES + 1];
    uint64_t at_ms;
    struct owner *prev, *next;
} owner;

/* A pending handshake in its list, oldest first. */
typedef struct hs_node {
    authsess_hs h;
    struct hs_node *prev, *next;
} hs_node;

struct authsess_table {
    authfile *users;
    uint64_t lifetime_ms;
    strmap *by_id; /* session id -> authsess */
    authsess *sessions;
    size_t nsessions;
    strmap *hs_by_id; /* hs -> hs_node */
    hs_node *hs_head, *hs_tail;
    size_t nhs;
    strmap *owner_by_key;
    owner *owners;
};

#define ID_KEY(p) ((const char *)(p)), sizeof(uint64_t)

authsess_table *
authsess_create(authfile *a, uint64_t lifetime_ms)
{
    authsess_table *t = xcalloc(1, sizeof(*t));

    t->users = a;
    t->lifetime_ms = lifetime_ms;
    t->by_id = strmap_create();
    t->hs_by_id = strmap_create();
    t->owner_by_key = strmap_create();
    return t;
}

/* Unlink and free a handshake. */
static void
hs_remove(authsess_table *t, hs_node *n)
{
    (void)strmap_del(t->hs_by_id, ID_KEY(&n->h.hs));
    if (n->prev != NULL)
        n->prev->next = n->next;
    else
        t->hs_head = n->next;
    if (n->next != NULL)
        n->next->prev = n->prev;
    else
        t->hs_tail = n->prev;
    t->nhs--;
}

void
authsess_destroy(authsess_table *t)
{
    if (t == NULL)
        return;
    while (t->sessions != NULL)
        authsess_close(t, t->sessions);
    while (t->hs_head != NULL) {
        hs_node *n = t->hs_head;
        hs_remove(t, n);
        authsess_hs_free(&n->h);
    }
    while (t->owners != NULL) {
        owner *o = t->owners;
        t->owners = o->next;
        free(o);
    }
    strmap_destroy(t->by_id);
    strmap_destroy(t->hs_by_id);
    strmap_destroy(t->owner_by_key);
    authfile_destroy(t->users);
    free(t);
}

const authfile *
authsess_users(const authsess_table *t)
{
    return t->users;
}

uint64_t
authsess_lifetime(const authsess_table *t)
{
    return t->lifetime_ms;
}

void
authsess_set_lifetime(authsess_table *t, uint64_t lifetime_ms)
{
    t->lifetime_ms = lifetime_ms;
}

size_t
authsess_reload(authsess_table *t, authfile *a)
{
    size_t dropped = 0;
    authsess *s = t->sessions;

    while (s != NULL) {
        authsess *next = s->next;
        const authfile_user *u = authfile_find(a, s->user, strlen(s->user));
        if (u == NULL || memcmp(u->pk, s->pk, AUTH_PK_BYTES) != 0) {
            authsess_close(t, s);
            dropped++;
        }
        s = next;
    }
    authfile_destroy(t->users);
    t->users = a;
    return dropped;
}

const authsess_hs *
authsess_begin(authsess_table *t, const char *user, size_t len,
               const unsigned char client_eph[AUTH_EPH_BYTES], uint64_t now_ms)
{
    hs_node *n = xcalloc(1, sizeof(*n));

    if (t->nhs >= AUTHSESS_MAX_HANDSHAKES) {
        hs_node *old = t->hs_head;
        hs_remove(t, old);
        authsess_hs_free(&old->h);
    }
    do
        n->h.hs = auth_random_id();
    while (strmap_get(t->hs_by_id, ID_KEY(&n->h.hs)) != NULL);
    n->h.created_ms = now_ms;
    memcpy(n->h.user, user, len); /* len <= AUTH_USER_MAX: the caller checked the name */
    n->h.user[len] = '\0';
    n->h.known = authfile_find(t->users, user, len) != NULL;
    memcpy(n->h.client_eph, client_eph, AUTH_EPH_BYTES);
    auth_eph_keypair(n->h.server_eph, n->h.server_sk);
    auth_random(n->h.challenge, AUTH_CHALLENGE_BYTES);
    n->prev = t->hs_tail;
    if (t->hs_tail != NULL)
        t->hs_tail->next = n;
    else
        t->hs_head = n;
    t->hs_tail = n;
    t->nhs++;
    strmap_put(t->hs_by_id, ID_KEY(&n->h.hs), n);
    return &n->h;
}

authsess_hs *
authsess_take_hs(authsess_table *t, uint64_t hs, uint64_t now_ms)
{
    hs_node *n = strmap_get(t->hs_by_id, ID_KEY(&hs));

    if (n == NULL)
        return NULL;
    hs_remove(t, n);
    if (now_ms - n->h.created_ms > AUTHSESS_HANDSHAKE_MS) {
        authsess_hs_free(&n->h);
        return NULL;
    }
    return &n->h;
}

void
authsess_hs_free(authsess_hs *h)
{
    /* h is the first member of its node. */
    if (h == NULL)
        return;
    auth_wipe(h, sizeof(*h));
    free(h);
}

authsess *
authsess_open(authsess_table *t, const authsess_hs *h, const authsess *renew, uint64_t now_ms)
{
    const authfile_user *u = authfile_find(t->users, h->user, strlen(h->user));
    authsess *s;

    if (u == NULL)
        return NULL;
    {
        authsess *oldest = NULL;
        size_t mine = 0;
        for (authsess *p = t->sessions; p != NULL; p = p->next) {
            if (strcmp(p->user, h->user) == 0 && p != renew) {
                mine++;
                oldest = p; /* newest first: the last one seen is the oldest */
            }
        }
        if (mine >= AUTHSESS_MAX_PER_USER)
            authsess_close(t, oldest);
    }
    if (t->nsessions >= AUTHSESS_MAX_SESSIONS)
        return NULL;
    s = xcalloc(1, sizeof(*s));
    if (auth_server_keys(s->rx, s->tx, h->server_eph, h->server_sk, h->client_eph) != 0) {
        free(s);
        return NULL;
    }
    do
        s->id = auth_random_id();
    while (strmap_get(t->by_id, ID_KEY(&s->id)) != NULL);
    s->lineage = renew != NULL ? renew->lineage : s->id;
    memcpy(s->user, h->user, sizeof(s->user));
    memcpy(s->pk, u->pk, AUTH_PK_BYTES);
    s->expires_ms = now_ms + t->lifetime_ms;
    s->next = t->sessions;
    if (t->sessions != NULL)
        t->sessions->prev = s;
    t->sessions = s;
    t->nsessions++;
    strmap_put(t->by_id, ID_KEY(&s->id), s);
    return s;
}

authsess *
authsess_find(authsess_table *t, uint64_t id)
{
    return strmap_get(t->by_id, ID_KEY(&id));
}

int
authsess_expired(const authsess *s, uint64_t now_ms)
{
    return now_ms >= s->expires_ms;
}

void
authsess_close(authsess_table *t, authsess *s)
{
    (void)strmap_del(t->by_id, ID_KEY(&s->id));
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        t->sessions = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    t->nsessions--;
    free(s->reply);
    auth_wipe(s, sizeof(*s));
    free(s);
}

void
authsess_keep_reply(authsess *s, const void *msg, size_t len)
{
    free(s->reply);
    s->reply = NULL;
    s->reply_len = 0;
    if (len > AUTHSESS_KEEP_REPLY_MAX) {
        s->reply_state = AUTHSESS_REPLY_GONE;
        return;
    }
    s->reply = xmalloc(len);
    memcpy(s->reply, msg, len);
    s->reply_len = len;
    s->reply_state = AUTHSESS_REPLY_KEPT;
}

size_t
authsess_expire(authsess_table *t, uint64_t now_ms)
{
    size_t dropped = 0;
    authsess *s = t->sessions;

    while (s != NULL) {
        authsess *next = s->next;
        if (now_ms >= s->expires_ms + AUTHSESS_EXPIRED_KEEP_MS) {
            authsess_close(t, s);
            dropped++;
        }
        s = next;
    }
    while (t->hs_head != NULL && now_ms - t->hs_head->h.created_ms > AUTHSESS_HANDSHAKE_MS) {
        hs_node *n = t->hs_head;
        hs_remove(t, n);
        authsess_hs_free(&n->h);
    }
    return dropped;
}

size_t
authsess_count(const authsess_table *t)
{
    return t->nsessions;
}

/* The map key of (kind, id). */
static void
owner_key(unsigned char key[9], int kind, uint64_t id)
{
    key[0] = (unsigned char)kind;
    memcpy(key + 1, &id, sizeof(id));
}

uint64_t
authsess_part_id(const char *name, size_t len, uint64_t step, uint32_t writer)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a 64 */
    unsigned char tail[12];

    memcpy(tail, &step, 8);
    memcpy(tail + 8, &writer, 4);
    for (size_t i = 0; i < len + sizeof(tail); i++)
        h = (h ^ (i < len ? (unsigned char)name[i] : tail[i - len])) * 0x100000001b3ull;
    return h;
}

void
authsess_own(authsess_table *t, int kind, uint64_t id, const char *user, const char *model,
             uint64_t now_ms)
{
    owner *o = xcalloc(1, sizeof(*o));

    authsess_disown(t, kind, id);
    owner_key(o->key, kind, id);
    snprintf(o->user, sizeof(o->user), "%s", user);
    snprintf(o->model, sizeof(o->model), "%s", model != NULL ? model : "");
    o->at_ms = now_ms;
    o->next = t->owners;
    if (t->owners != NULL)
        t->owners->prev = o;
    t->owners = o;
    strmap_put(t->owner_by_key, (const char *)o->key, sizeof(o->key), o);
}

const char *
authsess_owner(const authsess_table *t, int kind, uint64_t id, const char **model)
{
    unsigned char key[9];
    const owner *o;

    owner_key(key, kind, id);
    o = strmap_get(t->owner_by_key, (const char *)key, sizeof(key));
    if (o == NULL)
        return NULL;
    if (model != NULL)
        *model = o->model;
    return o->user;
}

void
authsess_disown(authsess_table *t, int kind, uint64_t id)
{
    unsigned char key[9];
    owner *o;

    owner_key(key, kind, id);
    if ((o = strmap_del(t->owner_by_key, (const char *)key, sizeof(key))) == NULL)
        return;
    if (o->prev != NULL)
        o->prev->next = o->next;
    else
        t->owners = o->next;
    if (o->next != NULL)
        o->next->prev = o->prev;
    free(o);
}

void
authsess_sweep_owners(authsess_table *t,
                      int (*alive)(void *arg, int kind, uint64_t id, uint64_t at_ms), void *arg)
{
    owner *o = t->owners;

    while (o != NULL) {
        owner *next = o->next;
        uint64_t id;
        memcpy(&id, o->key + 1, sizeof(id));
        if (!alive(arg, o->key[0], id, o->at_ms))
            authsess_disown(t, o->key[0], id);
        o = next;
    }
}

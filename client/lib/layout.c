/*
 * layout.c - push layouts, the client's side (docs/PROTOCOL.md, "Push
 * layouts"). The tensor descriptors (names, kinds, dtypes, shapes, slices,
 * sizes) of a push of one message are remembered here. A push of the same
 * model whose descriptors are the same again, field by field and name by
 * name, asks the daemon to keep its layout, and the reply's id is noted;
 * from then on such a push sends only the id and the data: neither the
 * checks of push_validate() nor the tensor maps are made again, and the
 * daemon decodes nothing per tensor. A client that pushes once (emactl)
 * makes the daemon keep nothing. A few layouts are remembered per client,
 * the least recently used replaced. EMAD_PUSH_LAYOUTS=off sends every push
 * whole.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdlib.h>
#include <string.h>

#include "client.h"

struct push_layout {
    char *model;
    uint64_t id;   /* the daemon's; 0: pushed once, not (or no longer) kept by the daemon */
    uint64_t used; /* c->layout_tick when last used */
    size_t n;
    uint64_t total;   /* the data's bytes */
    emad_tensor *t;   /* the descriptors; data NULL, names in this allocation */
    size_t *name_len; /* strlen of each name */
};

int
layouts_on(emad_client *c)
{
    if (c->layouts_state == 0) {
        const char *env = getenv("EMAD_PUSH_LAYOUTS");
        c->layouts_state = env != NULL && strcmp(env, "off") == 0 ? -1 : 1;
    }
    return c->layouts_state > 0;
}

/* Does t describe the same tensor as the kept k (data aside)? */
static int
same_tensor(const emad_tensor *t, const emad_tensor *k, size_t name_len)
{
    if (t->kind != k->kind || t->dtype != k->dtype || t->ndim != k->ndim ||
        t->nbytes != k->nbytes || t->offset != k->offset || t->count != k->count ||
        (t->data == NULL && t->nbytes > 0) || t->name == NULL)
        return 0;
    if (memcmp(t->shape, k->shape, k->ndim * sizeof(k->shape[0])) != 0)
        return 0;
    /* k->name ends at name_len: equal up to and with its terminator. */
    return t->name[0] == k->name[0] && strncmp(t->name, k->name, name_len + 1) == 0;
}

push_layout *
layout_match(emad_client *c, const char *model, const emad_tensor *t, size_t n)
{
    for (size_t s = 0; s < CLIENT_LAYOUTS; s++) {
        push_layout *l = c->layouts[s];
        size_t i = 0;

        if (l == NULL || l->n != n || model == NULL || strcmp(l->model, model) != 0)
            continue;
        while (i < n && same_tensor(&t[i], &l->t[i], l->name_len[i]))
            i++;
        if (i == n) {
            l->used = ++c->layout_tick;
            return l;
        }
    }
    return NULL;
}

void
layout_remember(emad_client *c, const char *model, const emad_tensor *t, size_t n)
{
    size_t model_len = strlen(model), names = model_len + 1, slot = 0;
    push_layout *l;
    char *p;

    for (size_t i = 0; i < n; i++)
        names += strlen(t[i].name) + 1;
    if ((l = malloc(sizeof(*l) + n * (sizeof(emad_tensor) + sizeof(size_t)) + names)) == NULL)
        return; /* not remembered: the next push is sent whole */
    l->t = (emad_tensor *)(void *)(l + 1);
    l->name_len = (size_t *)(void *)(l->t + n);
    p = (char *)(l->name_len + n);
    l->model = p;
    memcpy(p, model, model_len + 1);
    p += model_len + 1;
    l->id = 0;
    l->used = ++c->layout_tick;
    l->n = n;
    l->total = 0;
    for (size_t i = 0; i < n; i++) {
        l->t[i] = t[i];
        l->t[i].data = NULL;
        l->t[i].name = p;
        l->name_len[i] = strlen(t[i].name);
        memcpy(p, t[i].name, l->name_len[i] + 1);
        p += l->name_len[i] + 1;
        l->total += t[i].nbytes;
    }
    for (size_t s = 0; s < CLIENT_LAYOUTS; s++) {
        if (c->layouts[s] == NULL) {
            slot = s;
            break;
        }
        if (c->layouts[s]->used < c->layouts[slot]->used)
            slot = s;
    }
    free(c->layouts[slot]);
    c->layouts[slot] = l;
}

void
layout_set_id(push_layout *l, uint64_t id)
{
    l->id = id;
}

void
layouts_free(emad_client *c)
{
    for (size_t s = 0; s < CLIENT_LAYOUTS; s++) {
        free(c->layouts[s]);
        c->layouts[s] = NULL;
    }
}

uint64_t
layout_id(const push_layout *l)
{
    return l->id;
}

uint64_t
layout_bytes(const push_layout *l)
{
    return l->total;
}

/*
 * layouts.c - push layouts (see layouts.h): a small table searched by id,
 * each layout one allocation holding its inputs and their names.
 */
#include <stdlib.h>
#include <string.h>

#include "common/auth.h"
#include "daemon/layouts.h"
#include "daemon/server_int.h"

struct kept_layout {
    uint64_t id;
    uint64_t used; /* ls->tick when last kept or used */
    size_t bytes;  /* of this allocation */
    char *model;
    size_t model_len;
    size_t n;
    uint64_t total;   /* the data's bytes: the sum of in[i].len */
    store_input in[]; /* then the model's name and the tensors' names */
};

void
layouts_fini(layouts *ls)
{
    for (size_t i = 0; i < ls->n; i++)
        free(ls->v[i]);
    memset(ls, 0, sizeof(*ls));
}

/* Remove v[i] (order does not matter). */
static void
drop_at(layouts *ls, size_t i)
{
    ls->bytes -= ls->v[i]->bytes;
    free(ls->v[i]);
    ls->v[i] = ls->v[--ls->n];
}

/* The least recently used layout's index (ls->n > 0). */
static size_t
oldest(const layouts *ls)
{
    size_t k = 0;

    for (size_t i = 1; i < ls->n; i++)
        if (ls->v[i]->used < ls->v[k]->used)
            k = i;
    return k;
}

uint64_t
layouts_keep(layouts *ls, const char *model_name, size_t model_len, const store_input *in, size_t n)
{
    size_t names = 0, bytes;
    uint64_t total = 0;
    kept_layout *l;
    char *p;

    for (size_t i = 0; i < n; i++) {
        names += in[i].name_len;
        total += in[i].len;
    }
    bytes = sizeof(*l) + n * sizeof(store_input) + model_len + names;
    if (bytes > LAYOUTS_MAX_BYTES || (l = malloc(bytes)) == NULL)
        return 0;
    while (ls->n > 0 && (ls->n == LAYOUTS_MAX || ls->bytes + bytes > LAYOUTS_MAX_BYTES))
        drop_at(ls, oldest(ls));
    l->id = auth_random_id();
    l->used = ++ls->tick;
    l->bytes = bytes;
    l->n = n;
    l->total = total;
    p = (char *)(l->in + n);
    l->model = p;
    l->model_len = model_len;
    memcpy(p, model_name, model_len);
    p += model_len;
    for (size_t i = 0; i < n; i++) {
        l->in[i] = in[i];
        l->in[i].data = NULL;
        l->in[i].name = p;
        memcpy(p, in[i].name, in[i].name_len);
        p += in[i].name_len;
    }
    ls->v[ls->n++] = l;
    ls->bytes += bytes;
    return l->id;
}

/* The index of layout id, or ls->n. */
static size_t
find(const layouts *ls, uint64_t id)
{
    size_t i = 0;

    while (i < ls->n && ls->v[i]->id != id)
        i++;
    return i;
}

int
layouts_inputs(layouts *ls, uint64_t id, const char *model_name, size_t model_len, const char *data,
               uint64_t len, const store_input **in, size_t *n, store_err *err)
{
    size_t i = find(ls, id);
    kept_layout *l;

    *in = NULL;
    *n = 0;
    if (i == ls->n)
        return request_fail(err, EMAD_ELAYOUT,
                            "layout %llu is not known (given up, or kept by a daemon since "
                            "restarted): send the tensors",
                            (unsigned long long)id);
    l = ls->v[i];
    if (l->model_len != model_len || memcmp(l->model, model_name, model_len) != 0)
        return request_fail(err, EMAD_ELAYOUT, "layout %llu is another model's: send the tensors",
                            (unsigned long long)id);
    if (len != l->total)
        return request_fail(err, EMAD_ESIZE, "data has %llu bytes, layout %llu's tensors %llu",
                            (unsigned long long)len, (unsigned long long)id,
                            (unsigned long long)l->total);
    for (size_t k = 0; k < l->n; k++) {
        l->in[k].data = data;
        data += l->in[k].len;
    }
    l->used = ++ls->tick;
    *in = l->in;
    *n = l->n;
    return 0;
}

/*
 * install.c - a model's complete state copied in from a peer replica
 * (cluster resync, docs/PROTOCOL.md "install"): the model is created anew
 * with the peer's configuration, receives every shadow of every tensor in
 * the shadow dtype with the tensor's own step, and is published at the
 * peer's step, so that it equals the peer bit for bit. Until then the
 * model is `resyncing`: the daemon refuses pushes and pulls of it. A model
 * loaded from a snapshot by a replica that has peers starts resyncing too,
 * until a client installs a peer's state or accepts its own. Loop thread.
 */
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"
#include "store/store_int.h"

int
store_install_begin(store *s, const char *name, size_t len, const emad_model_config *cfg,
                    store_err *err)
{
    model *m = store_model_find(s, name, len);
    int created = 0;

    if (m != NULL && store_drop_model(s, name, len, err) != 0)
        return err->code;
    if (store_create_model(s, name, len, cfg, 0, &created, err) != 0)
        return err->code;
    m = store_model_find(s, name, len);
    m->resyncing = 1;
    m->install_bytes = 0;
    return 0;
}

/* The model name[0..len) if it is being installed, else NULL with err set. */
static model *
installing(store *s, const char *name, size_t len, store_err *err)
{
    model *m = store_model_get(s, name, len, err);

    if (m != NULL && m->resyncing != 1) {
        store_fail(err, EMAD_ENOTXN, NULL, "model '%s' is not being installed", m->name);
        return NULL;
    }
    return m;
}

int
store_install_data(store *s, const char *name, size_t len, uint32_t shadow, const store_input *in,
                   uint64_t step, store_err *err)
{
    model *m = installing(s, name, len, err);
    char tn[EMAD_MAX_NAME_BYTES + 1];
    int dtype = in->as_dtype != EMAD_DTYPE_INVALID ? in->as_dtype : in->dtype;
    tensor *t;
    blob *b;

    if (m == NULL)
        return err->code;
    store_cname(tn, sizeof(tn), in->name, in->name_len);
    if ((t = strmap_get(m->index, in->name, in->name_len)) == NULL) {
        int averaged = store_is_averaged(m, in->kind, dtype, in->name, in->name_len);
        int rc;

        if (in->dtype != (averaged ? dtype_shadow(dtype) : dtype))
            return store_fail(err, EMAD_EDTYPE, tn, "tensor '%s': data in %s, its shadow is in %s",
                              tn, dtype_name(in->dtype),
                              dtype_name(averaged ? dtype_shadow(dtype) : dtype));
        if ((rc = store_restore_tensor(m, tn, in->kind, dtype, averaged, in->ndim, in->shape, step,
                                       NULL, err)) != 0)
            return rc;
        t = strmap_get(m->index, in->name, in->name_len);
    }
    if (t->kind != in->kind || t->dtype != dtype || t->sdtype != in->dtype)
        return store_fail(err, EMAD_EKIND, tn, "tensor '%s': kind or dtype differs", tn);
    if (t->ndim != in->ndim || memcmp(t->shape, in->shape, in->ndim * sizeof(in->shape[0])) != 0)
        return store_fail(err, EMAD_ESHAPE, tn, "tensor '%s': shape differs", tn);
    t->step = step;
    if (shadow >= t->nshadow) /* a copied tensor has one shadow whatever the decays */
        return 0;
    b = t->shadow[shadow];
    if (in->offset > b->size || in->len > b->size - in->offset)
        return store_fail(err, EMAD_ESIZE, tn, "tensor '%s': bytes %llu..%llu of a %zu-byte shadow",
                          tn, (unsigned long long)in->offset,
                          (unsigned long long)(in->offset + in->len), b->size);
    if (in->len > 0)
        memcpy((char *)b->data + in->offset, in->data, in->len);
    m->install_bytes += in->len;
    return 0;
}

int
store_install_end(store *s, const char *name, size_t len, uint64_t step, store_err *err)
{
    model *m = installing(s, name, len, err);

    if (m == NULL)
        return err->code;
    if (m->install_bytes != m->shadow_bytes)
        return store_fail(
            err, EMAD_EINCOMPLETE, NULL, "model '%s': %llu of its %llu shadow bytes were installed",
            m->name, (unsigned long long)m->install_bytes, (unsigned long long)m->shadow_bytes);
    m->step = step;
    m->resyncing = 0;
    m->restored = 0;
    m->version++;
    return 0;
}

int
store_install_accept(store *s, const char *name, size_t len, store_err *err)
{
    model *m = store_model_get(s, name, len, err);

    if (m == NULL)
        return err->code;
    if (m->resyncing == 1)
        return store_fail(err, EMAD_EINCOMPLETE, NULL,
                          "model '%s' is half installed: install it again", m->name);
    m->resyncing = 0;
    return 0;
}

void
store_mark_resyncing(store *s)
{
    for (size_t i = 0; i < s->nmodels; i++)
        s->models[i]->resyncing = 2;
}

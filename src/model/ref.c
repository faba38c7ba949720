#include "model/ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/ops.h"
#include "tensor/quant.h"

struct sp_ref {
    const sp_model *m;
    int32_t max_ctx;
    bool quant_act;
    void *xq;            // (widest row) activations in the dot-product type
    float *xd;           // (widest row) the same, back in F32
    float *x, *xb, *xb2; // (n_embd) activations; xb2 sized for the widest row
    float *q;            // (n_head * head_dim)
    float *k, *v;        // (n_head_kv * head_dim) of the current token
    float *hb, *hb2;     // (n_ff)
    float *att;          // (max_ctx) attention weights
    float *row;          // (widest input) one dequantized weight row
    float *rope;         // (n_rot)
    float *key_cache;    // (n_layer, max_ctx, n_head_kv * head_dim)
    float *value_cache;  // (n_layer, max_ctx, n_head_kv * head_dim)
};

static int32_t widest(const sp_hparams *hp) {
    int32_t w = hp->n_embd;
    if (hp->n_ff > w)
        w = hp->n_ff;
    if (hp->n_head * hp->head_dim > w)
        w = hp->n_head * hp->head_dim;
    return w;
}

sp_err sp_ref_create(const sp_model *m, int32_t max_ctx, bool quant_act, sp_ref **out) {
    const sp_hparams *hp = &m->hp;
    sp_ref *r = calloc(1, sizeof *r);
    if (!r)
        return SP_ERR_NOMEM;
    r->m = m;
    r->max_ctx = max_ctx;
    r->quant_act = quant_act;
    size_t W = (size_t)widest(hp), nkv = (size_t)hp->n_head_kv * (size_t)hp->head_dim;
    size_t cache = (size_t)hp->n_layer * (size_t)max_ctx * nkv;
    r->x = calloc(W, sizeof(float));
    r->xb = calloc(W, sizeof(float));
    r->xb2 = calloc(W, sizeof(float));
    r->q = calloc(W, sizeof(float));
    r->k = calloc(nkv, sizeof(float));
    r->v = calloc(nkv, sizeof(float));
    r->hb = calloc((size_t)hp->n_ff, sizeof(float));
    r->hb2 = calloc((size_t)hp->n_ff, sizeof(float));
    r->att = calloc((size_t)max_ctx, sizeof(float));
    r->row = calloc(W, sizeof(float));
    r->rope = calloc((size_t)hp->n_rot, sizeof(float));
    r->xq = calloc(W, sizeof(float));
    r->xd = calloc(W, sizeof(float));
    r->key_cache = calloc(cache, sizeof(float));
    r->value_cache = calloc(cache, sizeof(float));
    if (!r->x || !r->xb || !r->xb2 || !r->q || !r->k || !r->v || !r->hb || !r->hb2 || !r->att ||
        !r->row || !r->rope || !r->xq || !r->xd || !r->key_cache || !r->value_cache) {
        sp_ref_destroy(r);
        return SP_ERR_NOMEM;
    }
    *out = r;
    return SP_OK;
}

void sp_ref_destroy(sp_ref *r) {
    if (!r)
        return;
    free(r->x);
    free(r->xb);
    free(r->xb2);
    free(r->q);
    free(r->k);
    free(r->v);
    free(r->hb);
    free(r->hb2);
    free(r->att);
    free(r->row);
    free(r->rope);
    free(r->xq);
    free(r->xd);
    free(r->key_cache);
    free(r->value_cache);
    free(r);
}

/* out (w->ne[1]) = w x: each weight row dequantized to F32, dot accumulated in double. */
static void matvec(sp_ref *r, const sp_weight *w, const float *x, float *out) {
    const uint8_t *data = w->data;
    if (r->quant_act) {
        const sp_dtype vt = sp_dtype_vec_dot_type(w->type);
        sp_quantize_act_row(vt, x, r->xq, w->ne[0]);
        sp_dequantize_row(vt, r->xq, r->xd, w->ne[0]);
        x = r->xd;
    }
    for (int64_t o = 0; o < w->ne[1]; o++) {
        sp_dequantize_row(w->type, data + o * (int64_t)w->row_bytes, r->row, w->ne[0]);
        double s = 0.0;
        for (int64_t i = 0; i < w->ne[0]; i++)
            s += (double)r->row[i] * (double)x[i];
        out[o] = (float)s;
    }
}

sp_err sp_ref_eval(sp_ref *r, int32_t token, int32_t pos, float *logits) {
    const sp_model *m = r->m;
    const sp_hparams *hp = &m->hp;
    if (token < 0 || token >= hp->n_vocab || pos < 0 || pos >= r->max_ctx)
        return SP_ERR_RANGE;
    const int32_t E = hp->n_embd, D = hp->head_dim, F = hp->n_ff;
    const int32_t nkv = hp->n_head_kv * D, group = hp->n_head / hp->n_head_kv;
    float *x = r->x;

    sp_dequantize_row(m->tok_embd.type,
                      (const uint8_t *)m->tok_embd.data + (int64_t)token * (int64_t)m->tok_embd.row_bytes,
                      x, E);
    sp__rope_cache(hp, m->rope_freqs, pos, r->rope);

    for (int32_t l = 0; l < hp->n_layer; l++) {
        const sp_layer *L = &m->layers[l];
        float *kc = r->key_cache + ((size_t)l * (size_t)r->max_ctx + (size_t)pos) * (size_t)nkv;
        float *vc = r->value_cache + ((size_t)l * (size_t)r->max_ctx + (size_t)pos) * (size_t)nkv;

        // Attention: qkv projections, biases, per-head norms, RoPE.
        sp__rms_norm(r->xb, x, L->attn_norm.data, E, hp->norm_eps);
        matvec(r, &L->wq, r->xb, r->q);
        matvec(r, &L->wk, r->xb, kc);
        matvec(r, &L->wv, r->xb, vc);
        if (L->bq.data) {
            sp__add_inplace(r->q, L->bq.data, hp->n_head * D);
            sp__add_inplace(kc, L->bk.data, nkv);
            sp__add_inplace(vc, L->bv.data, nkv);
        }
        for (int32_t h = 0; h < hp->n_head; h++) {
            if (L->q_norm.data)
                sp__rms_norm(r->q + h * D, r->q + h * D, L->q_norm.data, D, hp->norm_eps);
            sp__rope_apply(hp, r->rope, r->q + h * D);
        }
        for (int32_t h = 0; h < hp->n_head_kv; h++) {
            if (L->k_norm.data)
                sp__rms_norm(kc + h * D, kc + h * D, L->k_norm.data, D, hp->norm_eps);
            sp__rope_apply(hp, r->rope, kc + h * D);
        }

        // Each query head attends over positions 0..pos with its KV head.
        const float scale = 1.0f / sqrtf((float)D);
        for (int32_t h = 0; h < hp->n_head; h++) {
            const float *q = r->q + h * D;
            const int32_t g = h / group;
            float maxv = -INFINITY;
            for (int32_t t = 0; t <= pos; t++) {
                const float *k = r->key_cache +
                                 ((size_t)l * (size_t)r->max_ctx + (size_t)t) * (size_t)nkv +
                                 (size_t)g * D;
                double s = 0.0;
                for (int32_t i = 0; i < D; i++)
                    s += (double)q[i] * (double)k[i];
                r->att[t] = (float)s * scale;
                if (r->att[t] > maxv)
                    maxv = r->att[t];
            }
            double sum = 0.0;
            for (int32_t t = 0; t <= pos; t++) {
                r->att[t] = expf(r->att[t] - maxv);
                sum += r->att[t];
            }
            float *out = r->xb2 + h * D;
            for (int32_t i = 0; i < D; i++) {
                double acc = 0.0;
                for (int32_t t = 0; t <= pos; t++) {
                    const float *v = r->value_cache +
                                     ((size_t)l * (size_t)r->max_ctx + (size_t)t) * (size_t)nkv +
                                     (size_t)g * D;
                    acc += (double)r->att[t] * (double)v[i];
                }
                out[i] = (float)(acc / sum);
            }
        }
        matvec(r, &L->wo, r->xb2, r->xb);
        sp__add_inplace(x, r->xb, E);

        // SwiGLU feed-forward.
        sp__rms_norm(r->xb, x, L->ffn_norm.data, E, hp->norm_eps);
        matvec(r, &L->w_gate, r->xb, r->hb);
        matvec(r, &L->w_up, r->xb, r->hb2);
        for (int32_t i = 0; i < F; i++)
            r->hb[i] = sp__silu(r->hb[i]) * r->hb2[i];
        matvec(r, &L->w_down, r->hb, r->xb);
        sp__add_inplace(x, r->xb, E);
    }

    if (logits) {
        sp__rms_norm(r->xb, x, m->output_norm.data, E, hp->norm_eps);
        matvec(r, &m->output, r->xb, logits);
    }
    return SP_OK;
}

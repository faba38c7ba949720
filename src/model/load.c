/* Reading hyper-parameters and weight views from GGUF, with llama.cpp's defaults for absent
 * keys, and checking every tensor's type and shape so the forward pass never reads outside
 * a tensor. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/util.h"
#include "model/model.h"
#include "model/pack.h"

typedef struct loader {
    sp_gguf *g;
    sp_diag *diag;
    const char *arch; // GGUF key prefix
} loader;

static sp_err get_int(loader *l, const char *suffix, bool required, int64_t def, int64_t lo,
                      int64_t hi, int32_t *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", l->arch, suffix);
    int64_t v;
    sp_err err = sp_gguf_get_int(l->g, key, &v, l->diag);
    if (err == SP_ERR_NOT_FOUND) {
        if (required)
            return sp_diag_set(l->diag, SP_ERR_NOT_FOUND, UINT64_MAX,
                               "model metadata lacks the required key '%s'", key);
        v = def;
    } else if (err) {
        return err;
    }
    if (v < lo || v > hi)
        return sp_diag_set(l->diag, SP_ERR_RANGE, UINT64_MAX,
                           "'%s' = %lld is outside [%lld, %lld]", key, (long long)v,
                           (long long)lo, (long long)hi);
    *out = (int32_t)v;
    return SP_OK;
}

static sp_err get_float(loader *l, const char *suffix, double def, double lo, double hi,
                        float *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", l->arch, suffix);
    double v;
    sp_err err = sp_gguf_get_float(l->g, key, &v, l->diag);
    if (err == SP_ERR_NOT_FOUND)
        v = def;
    else if (err)
        return err;
    if (!(v >= lo && v <= hi))
        return sp_diag_set(l->diag, SP_ERR_RANGE, UINT64_MAX, "'%s' = %g is outside [%g, %g]",
                           key, v, lo, hi);
    *out = (float)v;
    return SP_OK;
}

/* Looks up a tensor and checks its shape: ne0 x ne1 (ne1 = 1 for vectors). Vectors (norms,
 * biases) must be F32; matrices any supported type. Absent optional tensors give a NULL view. */
static sp_err get_weight(loader *l, const char *name, int64_t ne0, int64_t ne1, bool required,
                         sp_weight *out) {
    const sp_gguf_tensor *t = sp_gguf_find_tensor(l->g, name);
    memset(out, 0, sizeof *out);
    if (!t) {
        if (required)
            return sp_diag_set(l->diag, SP_ERR_NOT_FOUND, UINT64_MAX,
                               "model file lacks the tensor '%s'", name);
        return SP_OK;
    }
    int64_t got1 = t->n_dims >= 2 ? t->ne[1] : 1;
    bool extra = t->n_dims > 2 && (t->ne[2] != 1 || t->ne[3] != 1);
    if (t->ne[0] != ne0 || got1 != ne1 || extra)
        return sp_diag_set(l->diag, SP_ERR_FORMAT, t->offset,
                           "tensor '%s' has shape [%lld, %lld], expected [%lld, %lld]", name,
                           (long long)t->ne[0], (long long)got1, (long long)ne0, (long long)ne1);
    const sp_dtype_info *info = sp_dtype_get(t->type);
    if (!info || !info->supported || t->type == SP_DTYPE_Q8_K)
        return sp_diag_set(l->diag, SP_ERR_UNSUPPORTED, t->offset,
                           "tensor '%s' has type %s, which Spindle cannot compute with", name,
                           info ? info->name : "unknown");
    if (ne1 == 1 && t->type != SP_DTYPE_F32)
        return sp_diag_set(l->diag, SP_ERR_UNSUPPORTED, t->offset,
                           "vector tensor '%s' must be f32, not %s", name, info->name);
    out->type = t->type;
    out->ne[0] = ne0;
    out->ne[1] = ne1;
    sp_err err = sp_dtype_row_bytes(t->type, (uint64_t)ne0, &out->row_bytes);
    if (err)
        return sp_diag_set(l->diag, err, t->offset, "tensor '%s': bad row size", name);
    out->data = t->data;
    return SP_OK;
}

static sp_err get_layer_weight(loader *l, int il, const char *what, int64_t ne0, int64_t ne1,
                               bool required, sp_weight *out) {
    char name[96];
    snprintf(name, sizeof name, "blk.%d.%s", il, what);
    return get_weight(l, name, ne0, ne1, required, out);
}

/* A view of rows [first, first + n) of a matrix: how fused tensors are split. */
static sp_weight row_view(const sp_weight *w, int64_t first, int64_t n) {
    sp_weight v = *w;
    v.ne[1] = n;
    v.data = (const uint8_t *)w->data + first * (int64_t)w->row_bytes;
    return v;
}

static sp_err read_hparams(loader *l, sp_hparams *hp) {
    sp_err err;
    const int32_t big = 1 << 24;
    if ((err = get_int(l, "embedding_length", true, 0, 1, 1 << 16, &hp->n_embd)) ||
        (err = get_int(l, "block_count", true, 0, 1, 4096, &hp->n_layer)) ||
        (err = get_int(l, "feed_forward_length", true, 0, 1, big, &hp->n_ff)) ||
        (err = get_int(l, "attention.head_count", true, 0, 1, 4096, &hp->n_head)) ||
        (err = get_int(l, "attention.head_count_kv", false, hp->n_head, 1, hp->n_head,
                       &hp->n_head_kv)) ||
        (err = get_int(l, "context_length", false, 2048, 1, 1 << 30, &hp->n_ctx_train)))
        return err;
    if (hp->n_head % hp->n_head_kv)
        return sp_diag_set(l->diag, SP_ERR_FORMAT, UINT64_MAX,
                           "head_count %d is not a multiple of head_count_kv %d", hp->n_head,
                           hp->n_head_kv);
    int32_t def_head = hp->n_embd / hp->n_head;
    if ((err = get_int(l, "attention.key_length", false, def_head, 2, 1024, &hp->head_dim)))
        return err;
    int32_t vlen;
    if ((err = get_int(l, "attention.value_length", false, hp->head_dim, 1, 1024, &vlen)))
        return err;
    if (vlen != hp->head_dim)
        return sp_diag_set(l->diag, SP_ERR_UNSUPPORTED, UINT64_MAX,
                           "key_length %d != value_length %d is not supported", hp->head_dim,
                           vlen);
    if ((err = get_int(l, "rope.dimension_count", false, hp->head_dim, 2, hp->head_dim,
                       &hp->n_rot)))
        return err;
    if (hp->n_rot % 2 || hp->head_dim % 2)
        return sp_diag_set(l->diag, SP_ERR_FORMAT, UINT64_MAX,
                           "rope.dimension_count %d and head size %d must be even", hp->n_rot,
                           hp->head_dim);
    if ((err = get_float(l, "rope.freq_base", 10000.0, 1e-3, 1e12, &hp->rope_freq_base)) ||
        (err = get_float(l, "attention.layer_norm_rms_epsilon", 1e-5, 0.0, 1.0, &hp->norm_eps)))
        return err;
    // Linear RoPE scaling: rope.scaling.factor (or the older rope.scale_linear).
    float factor = 0.0f;
    if ((err = get_float(l, "rope.scale_linear", 0.0, 0.0, 1e6, &factor)))
        return err;
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", l->arch);
    sp_str type = {0};
    bool linear = true;
    if (sp_gguf_get_str(l->g, key, &type, NULL) == SP_OK)
        linear = sp_str_eq(type, "linear");
    if (linear) {
        float f2 = 0.0f;
        if ((err = get_float(l, "rope.scaling.factor", 0.0, 0.0, 1e6, &f2)))
            return err;
        if (f2 != 0.0f)
            factor = f2;
    } else if (!sp_str_eq(type, "none")) {
        SP_WARN("rope scaling type '%.*s' is not supported; using no scaling", (int)type.len,
                type.ptr);
    }
    hp->rope_freq_scale = factor == 0.0f ? 1.0f : 1.0f / factor;
    return SP_OK;
}

static sp_err load_layers(loader *l, sp_model *m) {
    const sp_hparams *hp = &m->hp;
    const int64_t E = hp->n_embd, D = hp->head_dim, F = hp->n_ff;
    const int64_t nq = (int64_t)hp->n_head * D, nkv = (int64_t)hp->n_head_kv * D;
    sp_err err = SP_OK;
    for (int il = 0; il < hp->n_layer; il++) {
        sp_layer *L = &m->layers[il];
        bool phi3 = hp->arch == SP_ARCH_PHI3;
        bool qkv_bias = hp->arch == SP_ARCH_QWEN2;
        if ((err = get_layer_weight(l, il, "attn_norm.weight", E, 1, true, &L->attn_norm)) ||
            (err = get_layer_weight(l, il, "attn_output.weight", nq, E, true, &L->wo)) ||
            (err = get_layer_weight(l, il, "ffn_norm.weight", E, 1, true, &L->ffn_norm)) ||
            (err = get_layer_weight(l, il, "ffn_down.weight", F, E, true, &L->w_down)))
            return err;
        if (phi3) {
            if ((err = get_layer_weight(l, il, "attn_qkv.weight", E, nq + 2 * nkv, true,
                                        &L->wqkv)) ||
                (err = get_layer_weight(l, il, "ffn_up.weight", E, 2 * F, true, &L->w_gate_up)))
                return err;
            // The fused matrices are Q|K|V and gate|up stacked by output rows.
            L->wq = row_view(&L->wqkv, 0, nq);
            L->wk = row_view(&L->wqkv, nq, nkv);
            L->wv = row_view(&L->wqkv, nq + nkv, nkv);
            L->w_gate = row_view(&L->w_gate_up, 0, F);
            L->w_up = row_view(&L->w_gate_up, F, F);
        } else {
            if ((err = get_layer_weight(l, il, "attn_q.weight", E, nq, true, &L->wq)) ||
                (err = get_layer_weight(l, il, "attn_k.weight", E, nkv, true, &L->wk)) ||
                (err = get_layer_weight(l, il, "attn_v.weight", E, nkv, true, &L->wv)) ||
                (err = get_layer_weight(l, il, "ffn_gate.weight", E, F, true, &L->w_gate)) ||
                (err = get_layer_weight(l, il, "ffn_up.weight", E, F, true, &L->w_up)) ||
                (err = get_layer_weight(l, il, "attn_q.bias", nq, 1, qkv_bias, &L->bq)) ||
                (err = get_layer_weight(l, il, "attn_k.bias", nkv, 1, qkv_bias, &L->bk)) ||
                (err = get_layer_weight(l, il, "attn_v.bias", nkv, 1, qkv_bias, &L->bv)))
                return err;
        }
        bool qk_norm = hp->arch == SP_ARCH_QWEN3;
        if ((err = get_layer_weight(l, il, "attn_q_norm.weight", D, 1, qk_norm, &L->q_norm)) ||
            (err = get_layer_weight(l, il, "attn_k_norm.weight", D, 1, qk_norm, &L->k_norm)))
            return err;
    }
    return SP_OK;
}

static const struct {
    const char *name;
    sp_arch arch;
    sp_rope_type rope;
} archs[] = {
    {"llama", SP_ARCH_LLAMA, SP_ROPE_NORM},
    {"qwen2", SP_ARCH_QWEN2, SP_ROPE_NEOX},
    {"qwen3", SP_ARCH_QWEN3, SP_ROPE_NEOX},
    {"phi3", SP_ARCH_PHI3, SP_ROPE_NEOX},
};

sp_err sp_model_load_gguf(sp_gguf *g, sp_model **out, sp_diag *diag) {
    sp_str arch_name;
    sp_err err = sp_gguf_get_str(g, "general.architecture", &arch_name, diag);
    if (err)
        return err == SP_ERR_NOT_FOUND
                   ? sp_diag_set(diag, err, UINT64_MAX,
                                 "model file lacks general.architecture: is it a model GGUF?")
                   : err;
    int ai = -1;
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
        if (sp_str_eq(arch_name, archs[i].name))
            ai = (int)i;
    if (ai < 0)
        return sp_diag_set(diag, SP_ERR_UNSUPPORTED, UINT64_MAX,
                           "architecture '%.*s' is not supported (supported: llama, qwen2, "
                           "qwen3, phi3)",
                           (int)SP_MIN(arch_name.len, 64), arch_name.ptr);

    sp_model *m = calloc(1, sizeof *m);
    if (!m)
        return SP_ERR_NOMEM;
    loader l = {.g = g, .diag = diag, .arch = archs[ai].name};
    m->hp.arch = archs[ai].arch;
    m->hp.rope_type = archs[ai].rope;
    snprintf(m->hp.arch_name, sizeof m->hp.arch_name, "%s", archs[ai].name);
    if ((err = read_hparams(&l, &m->hp)))
        goto fail;

    // The vocabulary size is the embedding's row count.
    const sp_gguf_tensor *te = sp_gguf_find_tensor(g, "token_embd.weight");
    if (!te || te->n_dims < 2) {
        err = sp_diag_set(diag, SP_ERR_NOT_FOUND, UINT64_MAX,
                          "model file lacks a 2-D tensor 'token_embd.weight'");
        goto fail;
    }
    if (te->ne[1] < 1 || te->ne[1] > (1 << 24)) {
        err = sp_diag_set(diag, SP_ERR_RANGE, te->offset, "vocabulary size %lld out of range",
                          (long long)te->ne[1]);
        goto fail;
    }
    m->hp.n_vocab = (int32_t)te->ne[1];
    const int64_t E = m->hp.n_embd, V = m->hp.n_vocab;
    if ((err = get_weight(&l, "token_embd.weight", E, V, true, &m->tok_embd)) ||
        (err = get_weight(&l, "output_norm.weight", E, 1, true, &m->output_norm)) ||
        (err = get_weight(&l, "output.weight", E, V, false, &m->output)))
        goto fail;
    if (!m->output.data)
        m->output = m->tok_embd; // tied head
    sp_weight rf;
    if ((err = get_weight(&l, "rope_freqs.weight", m->hp.n_rot / 2, 1, false, &rf)))
        goto fail;
    m->rope_freqs = rf.data;

    m->layers = calloc((size_t)m->hp.n_layer, sizeof *m->layers);
    if (!m->layers) {
        err = SP_ERR_NOMEM;
        goto fail;
    }
    if ((err = load_layers(&l, m)) || (err = sp__model_pack(m)))
        goto fail;
    m->gguf = g;
    *out = m;
    return SP_OK;
fail:
    free(m->layers);
    free(m);
    return err;
}

sp_err sp_model_load(const char *path, sp_model **out, sp_diag *diag) {
    sp_gguf *g;
    sp_err err = sp_gguf_open(path, &g, diag);
    if (err)
        return err;
    err = sp_model_load_gguf(g, out, diag);
    if (err)
        sp_gguf_close(g);
    return err;
}

void sp_model_destroy(sp_model *m) {
    if (!m)
        return;
    sp__model_unpack(m);
    sp_gguf_close(m->gguf);
    free(m->layers);
    free(m);
}

static uint64_t wbytes(const sp_weight *w) { return w->data ? w->row_bytes * (uint64_t)w->ne[1] : 0; }

uint64_t sp_model_weight_bytes(const sp_model *m) {
    uint64_t n = wbytes(&m->output) + wbytes(&m->output_norm);
    for (int il = 0; il < m->hp.n_layer; il++) {
        const sp_layer *L = &m->layers[il];
        // Fused tensors are counted through their views (wq..wv, w_gate, w_up).
        const sp_weight *ws[] = {&L->attn_norm, &L->wq,     &L->wk,       &L->wv,
                                 &L->bq,        &L->bk,     &L->bv,       &L->q_norm,
                                 &L->k_norm,    &L->wo,     &L->ffn_norm, &L->w_gate,
                                 &L->w_up,      &L->w_down};
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++)
            n += wbytes(ws[i]);
    }
    return n;
}

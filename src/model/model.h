/* Model hyper-parameters and weights, read from a GGUF file.
 *
 * Weights are views into the file's read-only mapping: loading copies nothing but a few small
 * tables, except matrices the CPU's kernels want in a layout of their own, which are rewritten
 * once into memory of the model's (model/pack.h). A loaded sp_model is immutable; any thread may read it. Supported architectures:
 * llama (incl. Mistral-style GQA and Llama-3 rope_freqs), qwen2 (Q/K/V biases, NeoX RoPE),
 * qwen3 (per-head Q/K RMSNorm), phi3 (fused QKV and gate/up). */
#ifndef SP_MODEL_MODEL_H
#define SP_MODEL_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "base/err.h"
#include "gguf/gguf.h"
#include "tensor/dtype.h"

typedef enum sp_arch { SP_ARCH_LLAMA, SP_ARCH_QWEN2, SP_ARCH_QWEN3, SP_ARCH_PHI3 } sp_arch;

typedef enum sp_rope_type {
    SP_ROPE_NORM, // rotate adjacent pairs (x[2i], x[2i+1])
    SP_ROPE_NEOX, // rotate (x[i], x[i + n_rot/2])
} sp_rope_type;

typedef struct sp_hparams {
    sp_arch arch;
    char arch_name[32];
    int32_t n_vocab;
    int32_t n_ctx_train;
    int32_t n_embd;
    int32_t n_layer;
    int32_t n_head;
    int32_t n_head_kv;
    int32_t head_dim; // n_embd_head_k (= n_embd_head_v here)
    int32_t n_ff;
    int32_t n_rot; // rotated dimensions of each head (<= head_dim)
    float rope_freq_base;
    float rope_freq_scale; // 1 / linear scaling factor
    float norm_eps;
    sp_rope_type rope_type;
} sp_hparams;

/* A weight matrix or vector: a view into the mapping. For matrices ne[0] is the input size
 * (contiguous) and ne[1] the number of output rows; vectors have ne[1] = 1. */
typedef struct sp_weight {
    sp_dtype type;
    int64_t ne[2];
    uint64_t row_bytes;
    const void *data;   // NULL when the tensor is absent (optional tensors)
    const void *packed; // the same matrix in the kernels' own layout (see model/pack.h), or NULL
} sp_weight;

typedef struct sp_layer {
    sp_weight attn_norm;          // (n_embd) f32
    sp_weight wq, wk, wv;         // (n_embd -> n_head*head_dim | n_head_kv*head_dim)
    sp_weight wqkv;               // phi3: fused (n_embd -> (n_head + 2*n_head_kv)*head_dim)
    sp_weight bq, bk, bv;         // optional biases (qwen2)
    sp_weight q_norm, k_norm;     // optional per-head RMSNorm weights (qwen3), (head_dim)
    sp_weight wo;                 // (n_head*head_dim -> n_embd)
    sp_weight ffn_norm;           // (n_embd) f32
    sp_weight w_gate, w_up;       // (n_embd -> n_ff)
    sp_weight w_gate_up;          // phi3: fused (n_embd -> 2*n_ff), gate first
    sp_weight w_down;             // (n_ff -> n_embd)
} sp_layer;

typedef struct sp_model {
    sp_gguf *gguf; // owned: the weights point into its mapping
    sp_hparams hp;
    sp_weight tok_embd;    // (n_embd) x n_vocab rows
    sp_weight output_norm; // (n_embd) f32
    sp_weight output;      // (n_embd -> n_vocab); = tok_embd when tied
    const float *rope_freqs; // (n_rot/2) divisors of each pair's angle, or NULL
    sp_layer *layers;      // (n_layer)
    void *packed_mem;      // owned: every weight's packed form (NULL if none)
    size_t packed_size;
} sp_model;

/* Loads a model from an open GGUF, taking ownership of g on success (on failure the caller
 * still owns it). Checks every tensor's presence, type and shape; an unsupported architecture
 * gives SP_ERR_UNSUPPORTED naming it. */
sp_err sp_model_load_gguf(sp_gguf *g, sp_model **out, sp_diag *diag) SP_MUST_USE;

/* Opens and loads a GGUF model file. */
sp_err sp_model_load(const char *path, sp_model **out, sp_diag *diag) SP_MUST_USE;

/* Frees the model and closes its file; NULL is a no-op. */
void sp_model_destroy(sp_model *m);

/* Bytes of weights read per token (all matrices once): for roofline estimates. */
uint64_t sp_model_weight_bytes(const sp_model *m);

#endif

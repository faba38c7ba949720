/* The reference forward pass: one sequence, one token at a time, plain F32 arithmetic on
 * dequantized weights (no activation quantization), a contiguous F32 KV cache. Written to be
 * read top to bottom; it is the oracle the batched forward pass is tested against, not a
 * serving path. */
#ifndef SP_MODEL_REF_H
#define SP_MODEL_REF_H

#include <stdbool.h>
#include <stdint.h>

#include "base/err.h"
#include "model/model.h"

typedef struct sp_ref sp_ref;

/* quant_act: round each matrix product's input activations to the weight's dot-product type
 * first (sp_quantize_act_row), as the batched pass and llama.cpp do; the products are still
 * exact (double). Off, everything stays F32. */
sp_err sp_ref_create(const sp_model *m, int32_t max_ctx, bool quant_act, sp_ref **out) SP_MUST_USE;
void sp_ref_destroy(sp_ref *r);

/* Evaluates `token` at position pos (positions must come in order 0, 1, 2, ... for one
 * sequence; pos 0 restarts it) and writes n_vocab logits, or only fills the cache when logits
 * is NULL (prompt tokens whose logits are not needed). */
sp_err sp_ref_eval(sp_ref *r, int32_t token, int32_t pos, float *logits) SP_MUST_USE;

#endif

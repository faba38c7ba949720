/* Element-wise and row operations of the forward pass (internal to src/model), written to
 * follow llama.cpp's CPU arithmetic where it matters for matching its outputs. */
#ifndef SP_MODEL_OPS_H
#define SP_MODEL_OPS_H

#include <math.h>
#include <stdint.h>

#include "model/model.h"
#include "tensor/quant.h"

/* y = (x * 1/sqrt(mean(x^2) + eps)) * w, the sum of squares taken in double. y may alias x. */
void sp__rms_norm(float *y, const float *x, const float *w, int32_t n, float eps);

/* Fills cs (n_rot floats: cos, sin per rotated pair) for position pos: the angle of pair i is
 * pos * freq_scale * base^(-2i/n_rot) / freq_factors[i], the power built by repeated float
 * multiplication as ggml does. */
void sp__rope_cache(const sp_hparams *hp, const float *freq_factors, int32_t pos, float *cs);

/* Rotates one head (head_dim floats) in place with a cache from sp__rope_cache. */
void sp__rope_apply(const sp_hparams *hp, const float *cs, float *x);

void sp__add_inplace(float *y, const float *x, int32_t n);

static inline float sp__silu(float x) { return x / (1.0f + expf(-x)); }

#endif

/* The scalar kernel table: every output is sp_vec_dot_ref of one weight row and one activation
 * row, so this table is the reference the SIMD tables are tested against, and the fallback on
 * CPUs (and architectures) without them. */
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "tensor/kernels.h"
#include "tensor/quant.h"

static void matmul_ref(sp_dtype t, const void *w, size_t w_row_bytes, const void *x,
                       size_t x_row_bytes, int64_t n_in, int64_t n_rows, float *y, int64_t ldy,
                       int64_t o0, int64_t o1) {
    SP_ASSERT(n_rows >= 0 && o0 <= o1);
    const uint8_t *wb = w, *xb = x;
    for (int64_t o = o0; o < o1; o++)
        for (int64_t r = 0; r < n_rows; r++)
            y[r * ldy + o] =
                sp_vec_dot_ref(t, wb + (size_t)o * w_row_bytes, xb + (size_t)r * x_row_bytes, n_in);
}

#define SCALAR_MATMUL(name, type)                                                                  \
    static void name(const void *w, size_t wrb, const void *x, size_t xrb, int64_t n_in,           \
                     int64_t n_rows, float *y, int64_t ldy, int64_t o0, int64_t o1) {              \
        matmul_ref(type, w, wrb, x, xrb, n_in, n_rows, y, ldy, o0, o1);                            \
    }

SCALAR_MATMUL(matmul_f32, SP_DTYPE_F32)
SCALAR_MATMUL(matmul_f16, SP_DTYPE_F16)
SCALAR_MATMUL(matmul_bf16, SP_DTYPE_BF16)
SCALAR_MATMUL(matmul_q8_0, SP_DTYPE_Q8_0)
SCALAR_MATMUL(matmul_q4_0, SP_DTYPE_Q4_0)
SCALAR_MATMUL(matmul_q4_k, SP_DTYPE_Q4_K)
SCALAR_MATMUL(matmul_q6_k, SP_DTYPE_Q6_K)

static float attn_dot(const float *q, const uint16_t *k, int64_t n) {
    double lane[4] = {0.0, 0.0, 0.0, 0.0};
    for (int64_t d = 0; d < n; d++)
        lane[d % 4] += (double)(q[d] * sp_f16_to_f32(k[d]));
    return (float)((lane[0] + lane[1]) + (lane[2] + lane[3]));
}

static void attn_axpy(double *acc, float w, const uint16_t *v, int64_t n) {
    for (int64_t d = 0; d < n; d++)
        acc[d] += (double)(w * sp_f16_to_f32(v[d]));
}

void sp__kernels_scalar_init(sp_kernels *k) {
    k->matmul[SP_DTYPE_F32] = matmul_f32;
    k->matmul[SP_DTYPE_F16] = matmul_f16;
    k->matmul[SP_DTYPE_BF16] = matmul_bf16;
    k->matmul[SP_DTYPE_Q8_0] = matmul_q8_0;
    k->matmul[SP_DTYPE_Q4_0] = matmul_q4_0;
    k->matmul[SP_DTYPE_Q4_K] = matmul_q4_k;
    k->matmul[SP_DTYPE_Q6_K] = matmul_q6_k;
    k->quantize_act = sp_quantize_act_row;
    k->attn_dot = attn_dot;
    k->attn_axpy = attn_axpy;
}

/* The scalar kernel table: every output is sp_vec_dot_ref of one weight row and one activation
 * row, and the attention and SwiGLU steps are written here operation by operation as kernels.h
 * defines them (fmaf chains, sp__exp), so this table is the reference the SIMD tables must equal
 * bit for bit, and the fallback on CPUs (and architectures) without them. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "tensor/exp.h"
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
SCALAR_MATMUL(matmul_q5_k, SP_DTYPE_Q5_K)
SCALAR_MATMUL(matmul_q6_k, SP_DTYPE_Q6_K)

static float kv_at(const void *base, size_t i, bool f16) {
    return f16 ? sp_f16_to_f32(((const sp_f16 *)base)[i]) : ((const float *)base)[i];
}

/* s[hh][j] = (fma chain over d = 0 .. D-1 of q[d] k[d][j], from +0) * scale. */
static void attn_scores(const float *q, int32_t G, int32_t D, float scale, const void *kt,
                        int32_t ld_k, int32_t n, bool f16, float *s, int64_t ld_s) {
    for (int32_t hh = 0; hh < G; hh++)
        for (int32_t j = 0; j < n; j++) {
            float x = 0.0f;
            for (int32_t d = 0; d < D; d++)
                x = fmaf(q[(size_t)hh * (size_t)D + (size_t)d],
                         kv_at(kt, (size_t)d * (size_t)ld_k + (size_t)j, f16), x);
            s[hh * ld_s + j] = x * scale;
        }
}

/* The maximum (NaNs skipped); e_j = sp__exp(s_j - max); their sum in double in 8 lanes by j mod
 * 8, each in j order from +0, then halves added (8 -> 4 -> 2 -> 1); each weight e_j times
 * (float)(1 / sum), rounded to F16 and back when round_f16. */
static void attn_softmax(float *s, int32_t n, bool round_f16) {
    float mx = -INFINITY;
    for (int32_t j = 0; j < n; j++)
        mx = s[j] > mx ? s[j] : mx;
    double lane[8] = {0};
    for (int32_t j = 0; j < n; j++) {
        s[j] = sp__exp(s[j] - mx);
        lane[j % 8] += (double)s[j];
    }
    for (int h = 4; h >= 1; h /= 2)
        for (int i = 0; i < h; i++)
            lane[i] = lane[i] + lane[i + h];
    const float inv = (float)(1.0 / lane[0]);
    for (int32_t j = 0; j < n; j++)
        s[j] = round_f16 ? sp_f16_to_f32(sp_f32_to_f16(s[j] * inv)) : s[j] * inv;
}

/* acc[hh][d] = fma chain over j = 0 .. n-1 of w[hh][j] v[j][d], from acc[hh][d]. */
static void attn_values(const float *w, int64_t ld_s, int32_t G, int32_t D, const void *v,
                        int32_t n, bool f16, float *acc) {
    for (int32_t hh = 0; hh < G; hh++)
        for (int32_t d = 0; d < D; d++) {
            float x = acc[(size_t)hh * (size_t)D + (size_t)d];
            for (int32_t j = 0; j < n; j++)
                x = fmaf(w[hh * ld_s + j], kv_at(v, (size_t)j * (size_t)D + (size_t)d, f16), x);
            acc[(size_t)hh * (size_t)D + (size_t)d] = x;
        }
}

/* gate = (g / (1 + sp__exp(-g))) * up. */
static void swiglu(float *gate, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        gate[i] = gate[i] / (1.0f + sp__exp(-gate[i])) * up[i];
}

static void round_f16_row(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        x[i] = sp_f16_to_f32(sp_f32_to_f16(x[i]));
}

void sp__kernels_scalar_init(sp_kernels *k) {
    k->matmul[SP_DTYPE_F32] = matmul_f32;
    k->matmul[SP_DTYPE_F16] = matmul_f16;
    k->matmul[SP_DTYPE_BF16] = matmul_bf16;
    k->matmul[SP_DTYPE_Q8_0] = matmul_q8_0;
    k->matmul[SP_DTYPE_Q4_0] = matmul_q4_0;
    k->matmul[SP_DTYPE_Q4_K] = matmul_q4_k;
    k->matmul[SP_DTYPE_Q5_K] = matmul_q5_k;
    k->matmul[SP_DTYPE_Q6_K] = matmul_q6_k;
    k->quantize_act = sp_quantize_act_row;
    k->attn_scores = attn_scores;
    k->attn_softmax = attn_softmax;
    k->attn_values = attn_values;
    k->swiglu = swiglu;
    k->round_f16 = round_f16_row;
}

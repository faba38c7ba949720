/* Scalar reference dot products and matrix multiplication.
 *
 * F32, F16, BF16, Q8_0 and Q4_0 follow the one numerics of every kernel table (kernels.h), so
 * the scalar table, which forwards here, gives the same bits as the SIMD ones. The K-quant dot
 * products reproduce ggml's generic (non-SIMD) kernels in ggml/src/ggml-cpu/quants.c operation
 * for operation, so their results are bit-identical to llama.cpp built without SIMD. Integer
 * sums are exact, so only the float steps are ordered; fmaf is fused (one rounding) wherever it
 * runs. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "base/err.h"
#include "base/util.h"
#include "tensor/quant.h"

sp_dtype sp_dtype_vec_dot_type(sp_dtype w) {
    switch (w) {
    case SP_DTYPE_F32:
    case SP_DTYPE_F16:
    case SP_DTYPE_BF16:
    case SP_DTYPE_Q8_0:
        return w;
    case SP_DTYPE_Q4_0:
        return SP_DTYPE_Q8_0;
    case SP_DTYPE_Q4_K:
    case SP_DTYPE_Q6_K:
        return SP_DTYPE_Q8_K;
    default:
        SP_ASSERT(!"sp_dtype_vec_dot_type: unsupported weight type");
    }
}

static int64_t n_blocks(int64_t n, int64_t block) {
    SP_ASSERT(n >= 0 && n % block == 0);
    return n / block;
}

/* The float dot of kernels.h: DOT_LANES lanes by position mod DOT_LANES, each a chain of
 * fmaf in position order from +0 (lanes past n are left alone, as zero-padded vectors leave
 * them), then halves added: lane i += lane i + h for h = 8, 4, 2, 1. */
enum { DOT_LANES = 16 };

static float lanes_sum(float acc[DOT_LANES]) {
    for (int h = DOT_LANES / 2; h >= 1; h /= 2)
        for (int i = 0; i < h; i++)
            acc[i] = acc[i] + acc[i + h];
    return acc[0];
}

static float dot_f32(const float *x, const float *y, int64_t n) {
    float acc[DOT_LANES] = {0};
    for (int64_t i = 0; i < n; i++)
        acc[i % DOT_LANES] = fmaf(x[i], y[i], acc[i % DOT_LANES]);
    return lanes_sum(acc);
}

static float dot_f16(const sp_f16 *x, const sp_f16 *y, int64_t n) {
    float acc[DOT_LANES] = {0};
    for (int64_t i = 0; i < n; i++)
        acc[i % DOT_LANES] = fmaf(sp_f16_to_f32(x[i]), sp_f16_to_f32(y[i]), acc[i % DOT_LANES]);
    return lanes_sum(acc);
}

static float dot_bf16(const sp_bf16 *x, const sp_bf16 *y, int64_t n) {
    float acc[DOT_LANES] = {0};
    for (int64_t i = 0; i < n; i++)
        acc[i % DOT_LANES] = fmaf(sp_bf16_to_f32(x[i]), sp_bf16_to_f32(y[i]), acc[i % DOT_LANES]);
    return lanes_sum(acc);
}

/* Q8_0 and Q4_0 (x: the weights): per block the exact int32 sum S of the 32 products (Q4_0
 * weights q - 8), then acc = fmaf((float)S, f16(d_w) * f16(d_x), acc) block by block from 0, as
 * the packed kernels of packed.h. */
static float dot_q8_0_q8_0(const sp_block_q8_0 *x, const sp_block_q8_0 *y, int64_t nb) {
    float acc = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        int32_t sumi = 0;
        for (int j = 0; j < SP_QK8_0; j++)
            sumi += x[i].qs[j] * y[i].qs[j];
        acc = fmaf((float)sumi, sp_f16_to_f32(x[i].d) * sp_f16_to_f32(y[i].d), acc);
    }
    return acc;
}

static float dot_q4_0_q8_0(const sp_block_q4_0 *x, const sp_block_q8_0 *y, int64_t nb) {
    float acc = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        int32_t sumi = 0;
        for (int j = 0; j < SP_QK4_0 / 2; j++) {
            sumi += ((x[i].qs[j] & 0x0f) - 8) * y[i].qs[j];
            sumi += ((x[i].qs[j] >> 4) - 8) * y[i].qs[j + SP_QK4_0 / 2];
        }
        acc = fmaf((float)sumi, sp_f16_to_f32(x[i].d) * sp_f16_to_f32(y[i].d), acc);
    }
    return acc;
}

/* ggml's generic K-quant kernels keep eight float partial sums: lane l accumulates, block by
 * block, d * (the exact integer sum of scale * w * x over the positions p with p % 8 == l). The
 * Q4_K min corrections go into the final sum first, block by block, and the eight lanes are
 * added to it last, in lane order. This is reproduced exactly. */

static float dot_q4_k_q8_k(const sp_block_q4_k *x, const sp_block_q8_k *y, int64_t nb) {
    float lanes[8] = {0};
    float sum = 0;
    for (int64_t i = 0; i < nb; i++) {
        uint8_t sc[8], mn[8];
        for (int j = 0; j < 8; j++) {
            // The 6-bit scale and min of sub-block j, unpacked as in dequantization.
            uint8_t s, m;
            if (j < 4) {
                s = x[i].scales[j] & 63;
                m = x[i].scales[j + 4] & 63;
            } else {
                s = (uint8_t)((x[i].scales[j + 4] & 0xf) | ((x[i].scales[j - 4] >> 6) << 4));
                m = (uint8_t)((x[i].scales[j + 4] >> 4) | ((x[i].scales[j] >> 6) << 4));
            }
            sc[j] = s;
            mn[j] = m;
        }
        int32_t acc[8] = {0};
        for (int k = 0; k < SP_QK_K; k++) {
            // Sub-block j = k/32 sits in the low nibbles of qs[32(j/2)..] for even j, in the
            // high nibbles for odd j.
            const int j = k / 32;
            const uint8_t byte = x[i].qs[32 * (j / 2) + k % 32];
            const int q = (j & 1) ? (byte >> 4) : (byte & 0xf);
            acc[k % 8] += sc[j] * (q * y[i].qs[k]);
        }
        int sumi = 0;
        for (int j = 0; j < SP_QK_K / 16; j++)
            sumi += y[i].bsums[j] * mn[j / 2];
        const float d = sp_f16_to_f32(x[i].d) * y[i].d;
        for (int l = 0; l < 8; l++)
            lanes[l] += d * (float)acc[l];
        const float dmin = sp_f16_to_f32(x[i].dmin) * y[i].d;
        sum -= dmin * (float)sumi;
    }
    for (int l = 0; l < 8; l++)
        sum += lanes[l];
    return sum;
}

static float dot_q6_k_q8_k(const sp_block_q6_k *x, const sp_block_q8_k *y, int64_t nb) {
    float lanes[8] = {0};
    for (int64_t i = 0; i < nb; i++) {
        int32_t acc[8] = {0};
        for (int k = 0; k < SP_QK_K; k++) {
            // Same bit layout as dequantization (see quant.c): ql nibble + 2 bits of qh.
            const int half = k / 128, r = k % 128, quarter = r / 32, l = r % 32;
            const uint8_t *ql = x[i].ql + 64 * half;
            const uint8_t *qh = x[i].qh + 32 * half;
            const int lo = (quarter & 1) ? ql[l + 32] : ql[l];
            const int q =
                (((quarter & 2) ? (lo >> 4) : (lo & 0xf)) | (((qh[l] >> (2 * quarter)) & 3) << 4)) -
                32;
            acc[k % 8] += x[i].scales[k / 16] * (q * y[i].qs[k]);
        }
        const float d = sp_f16_to_f32(x[i].d) * y[i].d;
        for (int l = 0; l < 8; l++)
            lanes[l] += d * (float)acc[l];
    }
    float sum = 0;
    for (int l = 0; l < 8; l++)
        sum += lanes[l];
    return sum;
}

float sp_vec_dot_ref(sp_dtype w, const void *w_row, const void *x_row, int64_t n) {
    switch (w) {
    case SP_DTYPE_F32:
        SP_ASSERT(n >= 0);
        return dot_f32(w_row, x_row, n);
    case SP_DTYPE_F16:
        SP_ASSERT(n >= 0);
        return dot_f16(w_row, x_row, n);
    case SP_DTYPE_BF16:
        SP_ASSERT(n >= 0);
        return dot_bf16(w_row, x_row, n);
    case SP_DTYPE_Q8_0:
        return dot_q8_0_q8_0(w_row, x_row, n_blocks(n, SP_QK8_0));
    case SP_DTYPE_Q4_0:
        return dot_q4_0_q8_0(w_row, x_row, n_blocks(n, SP_QK8_0));
    case SP_DTYPE_Q4_K:
        return dot_q4_k_q8_k(w_row, x_row, n_blocks(n, SP_QK_K));
    case SP_DTYPE_Q6_K:
        return dot_q6_k_q8_k(w_row, x_row, n_blocks(n, SP_QK_K));
    default:
        SP_ASSERT(!"sp_vec_dot_ref: unsupported weight type");
    }
}

static size_t row_bytes(sp_dtype type, int64_t n) {
    uint64_t bytes = 0;
    SP_ASSERT(n >= 0);
    sp_err err = sp_dtype_row_bytes(type, (uint64_t)n, &bytes);
    SP_ASSERT(err == SP_OK && bytes <= SIZE_MAX);
    return (size_t)bytes;
}

size_t sp_matmul_ref_scratch_bytes(sp_dtype wtype, int64_t n_in, int64_t n_rows) {
    SP_ASSERT(n_rows >= 0);
    size_t total = 0;
    bool ok = sp_mul_size(row_bytes(sp_dtype_vec_dot_type(wtype), n_in), (size_t)n_rows, &total);
    SP_ASSERT(ok);
    return total;
}

void sp_matmul_ref(sp_dtype wtype, const void *w, int64_t n_in, int64_t n_out, const float *x,
                   int64_t n_rows, float *y, void *scratch) {
    SP_ASSERT(n_out >= 0 && n_rows >= 0);
    const sp_dtype xtype = sp_dtype_vec_dot_type(wtype);
    const size_t w_stride = row_bytes(wtype, n_in);
    const size_t x_stride = row_bytes(xtype, n_in);
    char *xq = scratch;
    for (int64_t r = 0; r < n_rows; r++)
        sp_quantize_row(xtype, x + r * n_in, xq + (size_t)r * x_stride, n_in);
    const char *wb = w;
    for (int64_t o = 0; o < n_out; o++) {
        const void *w_row = wb + (size_t)o * w_stride;
        for (int64_t r = 0; r < n_rows; r++)
            y[r * n_out + o] = sp_vec_dot_ref(wtype, w_row, xq + (size_t)r * x_stride, n_in);
    }
}

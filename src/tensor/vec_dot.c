/* Scalar reference dot products and matrix multiplication.
 *
 * F32, F16, BF16, Q8_0 and Q4_0 follow the one numerics of every kernel table (kernels.h), and
 * the K-quants Spindle's own super-block numerics (quant.h), which every table shares too: the
 * scalar table, which forwards here, gives the same bits as the SIMD ones. Integer sums are
 * exact, so only the float steps are ordered; fmaf is fused (one rounding) wherever it runs. */
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
    case SP_DTYPE_Q5_K:
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

/* The K-quant numerics of quant.h: per super-block the exact int32 sums sumi and (Q4_K, Q5_K)
 * summins, then acc = fmaf((float)sumi, d_w * d_x, acc) and acc = fmaf(-(float)summins,
 * dmin_w * d_x, acc). Every kernel table computes exactly this. */

/* The Q4_K/Q5_K float steps of one super-block. */
static float k_step(float acc, int32_t sumi, int32_t summins, sp_f16 d, sp_f16 dmin, float dx) {
    acc = fmaf((float)sumi, sp_f16_to_f32(d) * dx, acc);
    return fmaf(-(float)summins, sp_f16_to_f32(dmin) * dx, acc);
}

/* summins of quant.h: the mins times the activations' sums over their sub-blocks. */
static int32_t k_summins(const uint8_t s[SP_K_SCALE_SIZE], const sp_block_q8_k *y) {
    int32_t summins = 0;
    for (int j = 0; j < 8; j++) {
        int sc, m;
        sp_k_scale_min(s, j, &sc, &m);
        summins += m * (y->bsums[2 * j] + y->bsums[2 * j + 1]);
    }
    return summins;
}

/* One Q4_K or Q5_K super-block (qh: Q5_K's 5th bits, NULL for Q4_K): sumi, then the float
 * steps. Sub-block j sits in the low nibbles of qs[32(j/2)..] for even j, the high ones for odd
 * j; Q5_K adds bit j of qh[l] as the 5th bit of value 32j + l. */
static float k45_step(float acc, const uint8_t *scales, const uint8_t *qs, const uint8_t *qh,
                      sp_f16 d, sp_f16 dmin, const sp_block_q8_k *y) {
    int32_t sumi = 0;
    for (int j = 0; j < 8; j++) {
        int sc, m, dot = 0;
        sp_k_scale_min(scales, j, &sc, &m);
        for (int l = 0; l < 32; l++) {
            const uint8_t byte = qs[32 * (j / 2) + l];
            int q = (j & 1) ? byte >> 4 : byte & 0xf;
            if (qh)
                q |= ((qh[l] >> j) & 1) << 4;
            dot += q * y->qs[32 * j + l];
        }
        sumi += sc * dot;
    }
    return k_step(acc, sumi, k_summins(scales, y), d, dmin, y->d);
}

static float dot_q4_k_q8_k(const sp_block_q4_k *x, const sp_block_q8_k *y, int64_t nb) {
    float acc = 0;
    for (int64_t i = 0; i < nb; i++)
        acc = k45_step(acc, x[i].scales, x[i].qs, NULL, x[i].d, x[i].dmin, &y[i]);
    return acc;
}

static float dot_q5_k_q8_k(const sp_block_q5_k *x, const sp_block_q8_k *y, int64_t nb) {
    float acc = 0;
    for (int64_t i = 0; i < nb; i++)
        acc = k45_step(acc, x[i].scales, x[i].qs, x[i].qh, x[i].d, x[i].dmin, &y[i]);
    return acc;
}

static float dot_q6_k_q8_k(const sp_block_q6_k *x, const sp_block_q8_k *y, int64_t nb) {
    float acc = 0;
    for (int64_t i = 0; i < nb; i++) {
        int32_t sumi = 0;
        for (int j = 0; j < 16; j++) {
            // The stored quants (q + 32, in 0..63, laid out as in dequantization: see quant.c)
            // times the activations; the 32 comes off with the activations' sum.
            int dot = 0;
            for (int k = 16 * j; k < 16 * j + 16; k++) {
                const int half = k / 128, r = k % 128, quarter = r / 32, l = r % 32;
                const uint8_t *ql = x[i].ql + 64 * half;
                const uint8_t *qh = x[i].qh + 32 * half;
                const int lo = (quarter & 1) ? ql[l + 32] : ql[l];
                const int q = ((quarter & 2) ? (lo >> 4) : (lo & 0xf)) |
                              (((qh[l] >> (2 * quarter)) & 3) << 4);
                dot += q * y[i].qs[k];
            }
            sumi += x[i].scales[j] * (dot - 32 * y[i].bsums[j]);
        }
        acc = fmaf((float)sumi, sp_f16_to_f32(x[i].d) * y[i].d, acc);
    }
    return acc;
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
    case SP_DTYPE_Q5_K:
        return dot_q5_k_q8_k(w_row, x_row, n_blocks(n, SP_QK_K));
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

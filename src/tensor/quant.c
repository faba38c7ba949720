/* Scalar reference quantization and dequantization.
 *
 * Every formula, and the order of every floating-point operation, follows ggml's
 * quantize_row_*_ref and dequantize_row_* (ggml/src/ggml-quants.c), so the bytes and floats
 * produced here are identical to llama.cpp's. The code relies on -ffp-contract=off: a fused
 * multiply-add would change the rounding. */
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "base/err.h"
#include "tensor/quant.h"

#define GROUP_MAX_EPS 1e-15f

static int imin(int a, int b) {
    return a < b ? a : b;
}
static int imax(int a, int b) {
    return a > b ? a : b;
}

/* Round to nearest, ties to even, for |x| < 2^22: adding 1.5*2^23 leaves the integer in the low
 * mantissa bits. Out of that range the result is meaningless but defined, exactly as in ggml,
 * whose search loops can feed it huge values that are clamped afterwards. */
static int nearest_int(float x) {
    float v = x + 12582912.f;
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

static int64_t n_blocks(int64_t n, int64_t block) {
    SP_ASSERT(n >= 0 && n % block == 0);
    return n / block;
}

// ---------------------------------------------------------------- dequantization

static void dequant_q8_0(const sp_block_q8_0 *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        const float d = sp_f16_to_f32(x[i].d);
        for (int j = 0; j < SP_QK8_0; j++)
            y[i * SP_QK8_0 + j] = (float)x[i].qs[j] * d;
    }
}

static void dequant_q4_0(const sp_block_q4_0 *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        const float d = sp_f16_to_f32(x[i].d);
        for (int j = 0; j < SP_QK4_0 / 2; j++) {
            const int x0 = (x[i].qs[j] & 0x0f) - 8;
            const int x1 = (x[i].qs[j] >> 4) - 8;
            y[i * SP_QK4_0 + j] = (float)x0 * d;
            y[i * SP_QK4_0 + j + SP_QK4_0 / 2] = (float)x1 * d;
        }
    }
}

static void dequant_q4_k(const sp_block_q4_k *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *q = x[i].qs;
        const float d = sp_f16_to_f32(x[i].d);
        const float min = sp_f16_to_f32(x[i].dmin);
        // Each 32-byte group of qs holds sub-block is in its low nibbles, is+1 in its high ones.
        for (int is = 0; is < 8; is += 2) {
            int sc, m;
            sp_k_scale_min(x[i].scales, is, &sc, &m);
            const float d1 = d * (float)sc, m1 = min * (float)m;
            sp_k_scale_min(x[i].scales, is + 1, &sc, &m);
            const float d2 = d * (float)sc, m2 = min * (float)m;
            for (int l = 0; l < 32; l++)
                *y++ = d1 * (float)(q[l] & 0xf) - m1;
            for (int l = 0; l < 32; l++)
                *y++ = d2 * (float)(q[l] >> 4) - m2;
            q += 32;
        }
    }
}

/* Q5_K: Q4_K's nibbles and scales, plus a 5th bit per value: value 64i + l (l < 32) takes bit
 * 2i of qh[l], value 64i + 32 + l bit 2i + 1. */
static void dequant_q5_k(const sp_block_q5_k *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *q = x[i].qs;
        const float d = sp_f16_to_f32(x[i].d);
        const float min = sp_f16_to_f32(x[i].dmin);
        for (int is = 0; is < 8; is += 2) {
            int sc, m;
            sp_k_scale_min(x[i].scales, is, &sc, &m);
            const float d1 = d * (float)sc, m1 = min * (float)m;
            sp_k_scale_min(x[i].scales, is + 1, &sc, &m);
            const float d2 = d * (float)sc, m2 = min * (float)m;
            const int lo_bit = 1 << is, hi_bit = 2 << is;
            for (int l = 0; l < 32; l++)
                *y++ = d1 * (float)((q[l] & 0xf) + (x[i].qh[l] & lo_bit ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++)
                *y++ = d2 * (float)((q[l] >> 4) + (x[i].qh[l] & hi_bit ? 16 : 0)) - m2;
            q += 32;
        }
    }
}

/* The 6-bit quant (0..63) at position k (0..255) of a Q6_K block. Each half of 128 values
 * uses 64 bytes of ql and 32 of qh: values l, l+32, l+64, l+96 share ql[l], ql[l+32] (low and
 * high nibbles) and the four 2-bit fields of qh[l]. */
static int q6k_quant(const sp_block_q6_k *b, int k) {
    const int half = k / 128, r = k % 128, quarter = r / 32, l = r % 32;
    const uint8_t *ql = b->ql + 64 * half;
    const uint8_t *qh = b->qh + 32 * half;
    const int lo = (quarter & 1) ? ql[l + 32] : ql[l];
    const int low4 = (quarter & 2) ? (lo >> 4) : (lo & 0xf);
    const int high2 = (qh[l] >> (2 * quarter)) & 3;
    return low4 | (high2 << 4);
}

static void dequant_q6_k(const sp_block_q6_k *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        const float d = sp_f16_to_f32(x[i].d);
        for (int k = 0; k < SP_QK_K; k++) {
            const int q = q6k_quant(&x[i], k) - 32;
            y[i * SP_QK_K + k] = d * (float)x[i].scales[k / 16] * (float)q;
        }
    }
}

static void dequant_q8_k(const sp_block_q8_k *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++)
        for (int j = 0; j < SP_QK_K; j++)
            y[i * SP_QK_K + j] = x[i].d * (float)x[i].qs[j];
}

void sp_dequantize_row(sp_dtype type, const void *src, float *dst, int64_t n) {
    switch (type) {
    case SP_DTYPE_F32:
        SP_ASSERT(n >= 0);
        memcpy(dst, src, (size_t)n * sizeof(float));
        return;
    case SP_DTYPE_F16: {
        SP_ASSERT(n >= 0);
        const sp_f16 *h = src;
        for (int64_t i = 0; i < n; i++)
            dst[i] = sp_f16_to_f32(h[i]);
        return;
    }
    case SP_DTYPE_BF16: {
        SP_ASSERT(n >= 0);
        const sp_bf16 *h = src;
        for (int64_t i = 0; i < n; i++)
            dst[i] = sp_bf16_to_f32(h[i]);
        return;
    }
    case SP_DTYPE_Q8_0:
        dequant_q8_0(src, dst, n_blocks(n, SP_QK8_0));
        return;
    case SP_DTYPE_Q4_0:
        dequant_q4_0(src, dst, n_blocks(n, SP_QK4_0));
        return;
    case SP_DTYPE_Q4_K:
        dequant_q4_k(src, dst, n_blocks(n, SP_QK_K));
        return;
    case SP_DTYPE_Q5_K:
        dequant_q5_k(src, dst, n_blocks(n, SP_QK_K));
        return;
    case SP_DTYPE_Q6_K:
        dequant_q6_k(src, dst, n_blocks(n, SP_QK_K));
        return;
    case SP_DTYPE_Q8_K:
        dequant_q8_k(src, dst, n_blocks(n, SP_QK_K));
        return;
    default:
        SP_ASSERT(!"sp_dequantize_row: unsupported type");
    }
}

// ---------------------------------------------------------------- quantization

static void quant_q8_0(const float *x, sp_block_q8_0 *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += SP_QK8_0) {
        float amax = 0.0f;
        for (int j = 0; j < SP_QK8_0; j++) {
            const float a = fabsf(x[j]);
            amax = amax > a ? amax : a;
        }
        const float d = amax / 127;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = sp_f32_to_f16(d);
        for (int j = 0; j < SP_QK8_0; j++)
            y[i].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

static void quant_q4_0(const float *x, sp_block_q4_0 *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += SP_QK4_0) {
        // The value of largest magnitude, with its sign, maps to -8.
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < SP_QK4_0; j++) {
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        const float d = max / -8;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = sp_f32_to_f16(d);
        for (int j = 0; j < SP_QK4_0 / 2; j++) {
            // Truncation of x + 8.5 rounds half up; x*id lies in [-8, 8].
            const int q0 = imin(15, (int8_t)(x[j] * id + 8.5f));
            const int q1 = imin(15, (int8_t)(x[j + SP_QK4_0 / 2] * id + 8.5f));
            y[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

/* Fits x[i] ~ scale * L[i] - the_min with L in 0..nmax, minimising the weighted squared error
 * over a small grid of candidate scales (ggml's make_qkx2_quants, use_mad = false). Returns the
 * scale; writes the (non-negative) offset to *the_min. */
static float fit_scale_min(int n, int nmax, const float *x, const float *w, uint8_t *L,
                           float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep) {
    float min = x[0], max = x[0];
    float sum_w = w[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min)
            min = x[i];
        if (x[i] > max)
            max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0)
        min = 0;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.f;
    }
    float iscale = (float)nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; i++) {
        const int l = nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)imax(0, imin(nmax, l));
        float diff = scale * (float)L[i] + min - x[i];
        diff = diff * diff;
        best_error += w[i] * diff;
    }
    for (int is = 0; is <= nstep; is++) {
        // min changes as better fits are found, and later candidates are relative to it.
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            const int l = imax(0, imin(nmax, nearest_int(iscale * (x[i] - min))));
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * (float)l;
            sum_l2 += w[i] * (float)l * (float)l;
            sum_xl += w[i] * (float)l * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; i++) {
                float diff = this_scale * (float)Laux[i] + this_min - x[i];
                diff = diff * diff;
                cur_error += w[i] * diff;
            }
            if (cur_error < best_error) {
                memcpy(L, Laux, (size_t)n);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* The scales and mins of one Q4_K or Q5_K super-block of x (ggml's quantize_row_q{4,5}_K_ref
 * up to the packing of the quants): each sub-block of 32 is fitted with fit_scale_min (quants
 * 0..nmax, candidates rmin + 0.1 is for is = 0..nstep), the 8 scales and 8 mins are quantized
 * to 6 bits against the largest of each and packed into scales[12] (bytes 0-3: scales 0-3 and
 * the top 2 bits of scales 4-7; bytes 4-7: the same for the mins; bytes 8-11: the low nibbles of
 * scale and min 4-7), and every value is quantized again against the scales as stored: L[k] in
 * 0..nmax. */
static void fit_k_block(const float *x, int nmax, float rmin, int nstep, uint8_t L[SP_QK_K],
                        uint8_t s[SP_K_SCALE_SIZE], sp_f16 *d_out, sp_f16 *dmin_out) {
    uint8_t Laux[32];
    float weights[32];
    float mins[SP_QK_K / 32];
    float scales[SP_QK_K / 32];
    float max_scale = 0, max_min = 0; // scales and mins are both >= 0 here
    for (int j = 0; j < SP_QK_K / 32; j++) {
        const float *xs = x + 32 * j;
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++)
            sum_x2 += xs[l] * xs[l];
        const float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++)
            weights[l] = av_x + fabsf(xs[l]);
        scales[j] =
            fit_scale_min(32, nmax, xs, weights, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep);
        if (scales[j] > max_scale)
            max_scale = scales[j];
        if (mins[j] > max_min)
            max_min = mins[j];
    }

    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    memset(s, 0, SP_K_SCALE_SIZE);
    for (int j = 0; j < SP_QK_K / 32; j++) {
        uint8_t ls = (uint8_t)nearest_int(inv_scale * scales[j]);
        uint8_t lm = (uint8_t)nearest_int(inv_min * mins[j]);
        ls = ls < 63 ? ls : 63;
        lm = lm < 63 ? lm : 63;
        if (j < 4) {
            s[j] = ls;
            s[j + 4] = lm;
        } else {
            s[j + 4] = (uint8_t)((ls & 0xf) | ((lm & 0xf) << 4));
            s[j - 4] |= (uint8_t)((ls >> 4) << 6);
            s[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    *d_out = sp_f32_to_f16(max_scale / 63.f);
    *dmin_out = sp_f32_to_f16(max_min / 63.f);

    // Requantize against the scales as stored.
    for (int j = 0; j < SP_QK_K / 32; j++) {
        int sc, m;
        sp_k_scale_min(s, j, &sc, &m);
        const float d = sp_f16_to_f32(*d_out) * (float)sc;
        if (d == 0.0f)
            continue;
        const float dm = sp_f16_to_f32(*dmin_out) * (float)m;
        for (int ii = 0; ii < 32; ii++) {
            const int l = nearest_int((x[32 * j + ii] + dm) / d);
            L[32 * j + ii] = (uint8_t)imax(0, imin(nmax, l));
        }
    }
}

static void quant_q4_k(const float *x, sp_block_q4_k *y, int64_t nb) {
    uint8_t L[SP_QK_K];
    for (int64_t i = 0; i < nb; i++, x += SP_QK_K) {
        fit_k_block(x, 15, -1.f, 20, L, y[i].scales, &y[i].d, &y[i].dmin);
        uint8_t *q = y[i].qs;
        for (int j = 0; j < SP_QK_K; j += 64, q += 32)
            for (int l = 0; l < 32; l++)
                q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
    }
}

static void quant_q5_k(const float *x, sp_block_q5_k *y, int64_t nb) {
    uint8_t L[SP_QK_K];
    for (int64_t i = 0; i < nb; i++, x += SP_QK_K) {
        fit_k_block(x, 31, -0.5f, 15, L, y[i].scales, &y[i].d, &y[i].dmin);
        // The low 4 bits as Q4_K's nibbles; the 5th bit of values 64i + l and 64i + 32 + l in
        // bits 2i and 2i + 1 of qh[l].
        memset(y[i].qh, 0, sizeof y[i].qh);
        uint8_t *q = y[i].qs;
        for (int j = 0, bit = 0; j < SP_QK_K; j += 64, q += 32, bit += 2) {
            for (int l = 0; l < 32; l++) {
                const int l1 = L[j + l], l2 = L[j + l + 32];
                q[l] = (uint8_t)((l1 & 15) | ((l2 & 15) << 4));
                y[i].qh[l] |= (uint8_t)(((l1 >> 4) << bit) | ((l2 >> 4) << (bit + 1)));
            }
        }
    }
}

/* Fits x[i] ~ scale * (L[i] - nmax) with L in 0..2*nmax-1 for n values, weighting errors by
 * x[i]^2 and trying 19 candidate scales (ggml's make_qx_quants with rmse_type 1 and no
 * importance weights). Returns the scale. */
static float fit_scale_symmetric(int n, int nmax, const float *x, int8_t *L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        const float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = (float)-nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        const int l = imax(-nmax, imin(nmax - 1, nearest_int(iscale * x[i])));
        L[i] = (int8_t)(l + nmax);
        const float w = x[i] * x[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0)
            continue;
        iscale = -((float)nmax + 0.1f * (float)is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            const int l = imax(-nmax, imin(nmax - 1, nearest_int(iscale * x[i])));
            const float w = x[i] * x[i];
            sumlx += w * x[i] * (float)l;
            suml2 += w * (float)l * (float)l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) {
                const int l = nearest_int(iscale * x[i]);
                L[i] = (int8_t)(nmax + imax(-nmax, imin(nmax - 1, l)));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

static void quant_q6_k(const float *x, sp_block_q6_k *y, int64_t nb) {
    int8_t L[SP_QK_K];
    float scales[SP_QK_K / 16];

    for (int64_t i = 0; i < nb; i++, x += SP_QK_K) {
        float max_scale = 0, max_abs_scale = 0;
        for (int ib = 0; ib < SP_QK_K / 16; ib++) {
            const float scale = fit_scale_symmetric(16, 32, x + 16 * ib, L + 16 * ib);
            scales[ib] = scale;
            if (fabsf(scale) > max_abs_scale) {
                max_abs_scale = fabsf(scale);
                max_scale = scale;
            }
        }
        if (max_abs_scale < GROUP_MAX_EPS) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }

        const float iscale = -128.f / max_scale;
        y[i].d = sp_f32_to_f16(1 / iscale);
        for (int ib = 0; ib < SP_QK_K / 16; ib++)
            y[i].scales[ib] = (int8_t)imin(127, nearest_int(iscale * scales[ib]));

        // Requantize against the scales as stored.
        for (int j = 0; j < SP_QK_K / 16; j++) {
            const float d = sp_f16_to_f32(y[i].d) * (float)y[i].scales[j];
            if (d == 0.0f)
                continue;
            for (int ii = 0; ii < 16; ii++) {
                const int l = nearest_int(x[16 * j + ii] / d);
                L[16 * j + ii] = (int8_t)(imax(-32, imin(31, l)) + 32);
            }
        }

        uint8_t *ql = y[i].ql, *qh = y[i].qh;
        for (int j = 0; j < SP_QK_K; j += 128, ql += 64, qh += 32) {
            for (int l = 0; l < 32; l++) {
                const int q1 = L[j + l], q2 = L[j + l + 32], q3 = L[j + l + 64], q4 = L[j + l + 96];
                ql[l] = (uint8_t)((q1 & 0xf) | ((q3 & 0xf) << 4));
                ql[l + 32] = (uint8_t)((q2 & 0xf) | ((q4 & 0xf) << 4));
                qh[l] =
                    (uint8_t)((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
            }
        }
    }
}

static void quant_q8_k(const float *x, sp_block_q8_k *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += SP_QK_K) {
        float max = 0, amax = 0;
        for (int j = 0; j < SP_QK_K; j++) {
            const float ax = fabsf(x[j]);
            if (ax > amax) {
                amax = ax;
                max = x[j];
            }
        }
        if (amax == 0.0f) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        // The signed extreme maps to -127, so the opposite extreme can round to +128: clamp.
        const float iscale = -127.f / max;
        for (int j = 0; j < SP_QK_K; j++)
            y[i].qs[j] = (int8_t)imin(127, nearest_int(iscale * x[j]));
        for (int j = 0; j < SP_QK_K / 16; j++) {
            int sum = 0;
            for (int ii = 0; ii < 16; ii++)
                sum += y[i].qs[j * 16 + ii];
            y[i].bsums[j] = (int16_t)sum;
        }
        y[i].d = 1 / iscale;
    }
}

void sp_quantize_row(sp_dtype type, const float *src, void *dst, int64_t n) {
    switch (type) {
    case SP_DTYPE_F32:
        SP_ASSERT(n >= 0);
        memmove(dst, src, (size_t)n * sizeof(float));
        return;
    case SP_DTYPE_F16: {
        SP_ASSERT(n >= 0);
        sp_f16 *h = dst;
        for (int64_t i = 0; i < n; i++)
            h[i] = sp_f32_to_f16(src[i]);
        return;
    }
    case SP_DTYPE_BF16: {
        SP_ASSERT(n >= 0);
        sp_bf16 *h = dst;
        for (int64_t i = 0; i < n; i++)
            h[i] = sp_f32_to_bf16(src[i]);
        return;
    }
    case SP_DTYPE_Q8_0:
        quant_q8_0(src, dst, n_blocks(n, SP_QK8_0));
        return;
    case SP_DTYPE_Q4_0:
        quant_q4_0(src, dst, n_blocks(n, SP_QK4_0));
        return;
    case SP_DTYPE_Q4_K:
        quant_q4_k(src, dst, n_blocks(n, SP_QK_K));
        return;
    case SP_DTYPE_Q5_K:
        quant_q5_k(src, dst, n_blocks(n, SP_QK_K));
        return;
    case SP_DTYPE_Q6_K:
        quant_q6_k(src, dst, n_blocks(n, SP_QK_K));
        return;
    case SP_DTYPE_Q8_K:
        quant_q8_k(src, dst, n_blocks(n, SP_QK_K));
        return;
    default:
        SP_ASSERT(!"sp_quantize_row: unsupported type");
    }
}

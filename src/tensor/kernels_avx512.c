/* AVX-512 (F, BW, VL, DQ, VNNI) kernels, chosen at run time. Every entry runs the numerics
 * kernels.h defines for all tables, so it gives the scalar (and avx2) table's bits.
 *
 * Q8_0/Q4_0: weight matrices are packed at load and multiplied by packed_avx512.c; the kernels
 * here multiply rows in their stored layout, for callers that pass them so: kernels_x86.h's
 * tile of block sums with the integer dots on 256-bit vpdpbusd (AVX512VL), one per block pair;
 * the 32 vector registers allow 4 rows by 8 outputs.
 * F32/F16/BF16: kernels.h's 16 lanes are one vector; masked loads for the tail.
 *
 * Tiles and the invariance contract as in kernels_avx2.c: every output (r, o) goes through the
 * same instructions whatever the tile shape, n_rows or [o0, o1). */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "base/err.h"
#include "tensor/exp.h"
#include "tensor/kernels.h"
#include "tensor/kernels_x86.h"
#include "tensor/kquants.h"
#include "tensor/quant.h"

/* 16 lanes, halves added: (l_i + l_{i+8}) for i < 8, then hsum8. */
INLINE float hsum16(__m512 v) {
    return hsum8(_mm256_add_ps(_mm512_extractf32x8_ps(v, 1), _mm512_castps512_ps256(v)));
}

// ---------------------------------------------------------------- Q8_0 / Q4_0 weights

/* q_tile's steps (kernels_x86.h). The exact integer dot of a weight block and an activation
 * block, as 8 int32 lanes (lane l: positions 4l..4l+3), with one vpdpbusd per pair: wv = the
 * weights as unsigned bytes with a bias K (Q8_0: w + 128, Q4_0: the nibble, i.e. w + 8); per
 * activation block xa = -K * (sum of each 4 activations), computed once and shared by the weight
 * rows of a tile; the pair is vpdpbusd(xa, wv, x). Exact for any bytes, and the same integers as
 * the avx2 table's sign trick. */
INLINE __m256i load_wv(const int kind, const uint8_t *blk) {
    if (kind == K_Q4_0) {
        return _mm256_and_si256(q4_nibbles(blk), _mm256_set1_epi8(0x0f));
    }
    return _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(blk + 2)),
                            _mm256_set1_epi8((char)0x80));
}

INLINE __m256i prep_wa(const int kind, __m256i wv) {
    (void)kind;
    return wv;
}

INLINE __m256i prep_xa(const int kind, __m256i xq) {
    const __m256i bias = _mm256_set1_epi8(kind == K_Q4_0 ? 8 : (char)0x80); // K as unsigned
    const __m256i zero = _mm256_setzero_si256();
    return _mm256_sub_epi32(zero, _mm256_dpbusd_epi32(zero, bias, xq));
}

INLINE __m256i int_dot(const int kind, __m256i wv, __m256i wa, __m256i xq, __m256i xa) {
    (void)kind;
    (void)wa;
    return _mm256_dpbusd_epi32(xa, wv, xq);
}

// ---------------------------------------------------------------- F32 / F16 / BF16 weights

enum { K_F32, K_F16, K_BF16 };

INLINE size_t elem_bytes(const int kind) {
    return kind == K_F32 ? 4 : 2;
}

/* The values at element i (lanes not in mask m read as zero, their memory untouched). */
INLINE __m512 load16(const int kind, const uint8_t *row, int64_t i, __mmask16 m) {
    const void *p = row + (size_t)i * elem_bytes(kind);
    if (kind == K_F32)
        return _mm512_maskz_loadu_ps(m, p);
    const __m256i h = _mm256_maskz_loadu_epi16(m, p);
    if (kind == K_F16)
        return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

INLINE void f_tile(const int R, const int O, const int kind, const uint8_t *w, size_t wrb,
                   const uint8_t *x, size_t xrb, int64_t n, float *y, int64_t ldy) {
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int o = 0; o < O; o++)
            acc[r][o] = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 wv[4];
#pragma GCC unroll 4
        for (int o = 0; o < O; o++)
            wv[o] = load16(kind, w + (size_t)o * wrb, i, m);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const __m512 xv = load16(kind, x + (size_t)r * xrb, i, m);
#pragma GCC unroll 4
            for (int o = 0; o < O; o++)
                acc[r][o] = _mm512_fmadd_ps(wv[o], xv, acc[r][o]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int o = 0; o < O; o++)
            y[r * ldy + o] = hsum16(acc[r][o]);
}

DEFINE_TILING(q, q_tile)
DEFINE_TILING(f, f_tile)

INLINE void q_matmul(const int kind, const void *w, size_t wrb, const void *x, size_t xrb,
                     int64_t n_in, int64_t n_rows, float *y, int64_t ldy, int64_t o0, int64_t o1) {
    SP_ASSERT(n_in % SP_QK8_0 == 0 && n_rows >= 0 && o0 <= o1);
    const int64_t nb = n_in / SP_QK8_0;
    if (n_rows == 1)
        q_tiles(1, 8, kind, w, wrb, x, xrb, nb, 1, y, ldy, o0, o1);
    else
        q_tiles(4, 8, kind, w, wrb, x, xrb, nb, n_rows, y, ldy, o0, o1);
}

INLINE void f_matmul(const int kind, const void *w, size_t wrb, const void *x, size_t xrb,
                     int64_t n_in, int64_t n_rows, float *y, int64_t ldy, int64_t o0, int64_t o1) {
    SP_ASSERT(n_in >= 0 && n_rows >= 0 && o0 <= o1);
    if (n_rows == 1)
        f_tiles(1, 4, kind, w, wrb, x, xrb, n_in, 1, y, ldy, o0, o1);
    else
        f_tiles(4, 4, kind, w, wrb, x, xrb, n_in, n_rows, y, ldy, o0, o1);
}

MATMUL(matmul_q8_0, q_matmul, K_Q8_0)
MATMUL(matmul_q4_0, q_matmul, K_Q4_0)
MATMUL(matmul_f32, f_matmul, K_F32)
MATMUL(matmul_f16, f_matmul, K_F16)
MATMUL(matmul_bf16, f_matmul, K_BF16)

// ---------------------------------------------------------------- activation conversion

/* Lane b: the largest |x| of block b of the 16 blocks of 32 values from x. Pairs of vectors are
 * folded into one (128-bit quarters, then pairs and single lanes within them), four times, which
 * leaves block b in lane 4 (b % 4) + b / 4; a permutation puts it in lane b. Without NaNs the
 * maximum does not depend on the order of comparisons (with one, vmaxps may drop it: see
 * quantize_act's contract in kernels.h). */
INLINE __m512 amax16(const float *x) {
    __m512 m[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++)
        m[i] = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + 32 * i)),
                             _mm512_abs_ps(_mm512_loadu_ps(x + 32 * i + 16)));
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++)
        m[i] = _mm512_max_ps(_mm512_shuffle_f32x4(m[2 * i], m[2 * i + 1], 0x44),
                             _mm512_shuffle_f32x4(m[2 * i], m[2 * i + 1], 0xee));
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
        m[i] = _mm512_max_ps(_mm512_shuffle_f32x4(m[2 * i], m[2 * i + 1], 0x88),
                             _mm512_shuffle_f32x4(m[2 * i], m[2 * i + 1], 0xdd));
#pragma GCC unroll 2
    for (int i = 0; i < 2; i++)
        m[i] = _mm512_max_ps(_mm512_shuffle_ps(m[2 * i], m[2 * i + 1], 0x44),
                             _mm512_shuffle_ps(m[2 * i], m[2 * i + 1], 0xee));
    const __m512 r =
        _mm512_max_ps(_mm512_shuffle_ps(m[0], m[1], 0x88), _mm512_shuffle_ps(m[0], m[1], 0xdd));
    return _mm512_permutexvar_ps(
        _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), r);
}

/* As sp_quantize_act_row for Q8_0 (see kernels_avx2.c); vpmovsdb packs in order. Sixteen blocks
 * at a time take their maxima, scales (the same IEEE divisions) and F16 scales (vcvtps2ph rounds
 * to nearest even like sp_f32_to_f16) as vectors. */
static void act_q8_0(const float *x, sp_block_q8_0 *yb, int64_t nb) {
    int64_t i = 0;
    for (; i + 16 <= nb; i += 16, x += 16 * SP_QK8_0) {
        const __m512 amax = amax16(x);
        const __mmask16 nz = _mm512_cmp_ps_mask(amax, _mm512_setzero_ps(), _CMP_NEQ_UQ);
        float id[16];
        sp_f16 d[16];
        _mm512_storeu_ps(id, _mm512_maskz_div_ps(nz, _mm512_set1_ps(127.0f), amax));
        _mm256_storeu_si256((__m256i *)d,
                            _mm512_cvtps_ph(_mm512_div_ps(amax, _mm512_set1_ps(127.0f)),
                                            _MM_FROUND_TO_NEAREST_INT));
#pragma GCC unroll 4
        for (int b = 0; b < 16; b++) {
            const __m512 mul = _mm512_set1_ps(id[b]);
            const float *xb = x + b * SP_QK8_0;
            yb[i + b].d = d[b];
            _mm_storeu_si128(
                (__m128i *)yb[i + b].qs,
                _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xb), mul))));
            _mm_storeu_si128((__m128i *)(yb[i + b].qs + 16),
                             _mm512_cvtsepi32_epi8(
                                 _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xb + 16), mul))));
        }
    }
    for (; i < nb; i++, x += SP_QK8_0) {
        const __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
        const float amax =
            _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        const float d = amax / 127.0f;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        yb[i].d = sp_f32_to_f16(d);
        const __m512 mul = _mm512_set1_ps(id);
        const __m128i q0 = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v0, mul)));
        const __m128i q1 = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v1, mul)));
        _mm_storeu_si128((__m128i *)yb[i].qs, q0);
        _mm_storeu_si128((__m128i *)(yb[i].qs + 16), q1);
    }
}

/* vcvtps2ph rounds to nearest even like sp_f32_to_f16; NaNs go to the scalar conversion. */
static void act_f16(const float *x, sp_f16 *h, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_loadu_ps(x + i);
        if (_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q)) {
            for (int j = 0; j < 16; j++)
                h[i + j] = sp_f32_to_f16(x[i + j]);
            continue;
        }
        _mm256_storeu_si256((__m256i *)(h + i), _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
    }
    for (; i < n; i++)
        h[i] = sp_f32_to_f16(x[i]);
}

/* x through F16 and back (the way back is exact); NaNs through the scalar conversions. */
static void round_f16_row(float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_loadu_ps(x + i);
        if (_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q)) {
            for (int j = 0; j < 16; j++)
                x[i + j] = sp_f16_to_f32(sp_f32_to_f16(x[i + j]));
            continue;
        }
        _mm512_storeu_ps(x + i, _mm512_cvtph_ps(_mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT)));
    }
    for (; i < n; i++)
        x[i] = sp_f16_to_f32(sp_f32_to_f16(x[i]));
}

/* sp_f32_to_bf16 on 16 lanes (round to nearest even by integer addition; NaN made quiet). */
static void act_bf16(const float *x, sp_bf16 *h, int64_t n) {
    const __m512i bias = _mm512_set1_epi32(0x7fff), one = _mm512_set1_epi32(1);
    const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
    const __m512i quiet = _mm512_set1_epi32(0x40);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512i u = _mm512_loadu_si512(x + i);
        const __m512i hi = _mm512_srli_epi32(u, 16);
        const __m512i rounded = _mm512_srli_epi32(
            _mm512_add_epi32(_mm512_add_epi32(u, bias), _mm512_and_si512(hi, one)), 16);
        const __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, abs_mask), inf);
        const __m512i r = _mm512_mask_or_epi32(rounded, nan, hi, quiet);
        _mm256_storeu_si256((__m256i *)(h + i), _mm512_cvtepi32_epi16(r));
    }
    for (; i < n; i++)
        h[i] = sp_f32_to_bf16(x[i]);
}

static void quantize_act(sp_dtype vt, const float *x, void *dst, int64_t n) {
    switch (vt) {
    case SP_DTYPE_Q8_0:
        SP_ASSERT(n >= 0 && n % SP_QK8_0 == 0);
        act_q8_0(x, dst, n / SP_QK8_0);
        break;
    case SP_DTYPE_F16:
        act_f16(x, dst, n);
        break;
    case SP_DTYPE_BF16:
        act_bf16(x, dst, n);
        break;
    case SP_DTYPE_Q8_K:
        sp__quantize_q8_k_avx2(x, dst, n); // kquants_avx2.c
        break;
    default: // F32: a copy
        sp_quantize_act_row(vt, x, dst, n);
        break;
    }
}

// ---------------------------------------------------------------- attention

/* sp__exp (exp.h) on 16 lanes: the same operations in the same order, but for step 5, which
 * vscalefps does in one instruction with the same single rounding. */
INLINE __m512 exp16(__m512 x) {
    x = _mm512_max_ps(_mm512_set1_ps(SP__EXP_LO), x); // max(a, b) gives b when either is NaN
    x = _mm512_min_ps(_mm512_set1_ps(SP__EXP_HI), x);
    const __m512 t =
        _mm512_fmadd_ps(x, _mm512_set1_ps(SP__EXP_LOG2E), _mm512_set1_ps(SP__EXP_SHIFT));
    const __m512 nf = _mm512_sub_ps(t, _mm512_set1_ps(SP__EXP_SHIFT));
    __m512 r = _mm512_fmadd_ps(nf, _mm512_set1_ps(-SP__EXP_LN2_HI), x);
    r = _mm512_fmadd_ps(nf, _mm512_set1_ps(-SP__EXP_LN2_LO), r);
    __m512 p = _mm512_set1_ps(SP__EXP_C8);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(SP__EXP_C7));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(SP__EXP_C6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(SP__EXP_C5));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(SP__EXP_C4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(SP__EXP_C3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(SP__EXP_C2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    // (p 2^n1) 2^n2 rounds p 2^n once (exp.h, step 5), and so does vscalefps: the same bits.
    return _mm512_scalef_ps(p, nf);
}

/* 16 cache values from element i on (lanes outside m read as 0, their memory untouched). */
INLINE __m512 kv_load(const void *base, size_t i, __mmask16 m, bool f16) {
    if (f16)
        return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)base + i));
    return _mm512_maskz_loadu_ps(m, (const float *)base + i);
}

INLINE __mmask16 first_n(int32_t n) {
    return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
}

/* Scores of H heads (from hh0) for the positions j0.. in mask jm: 16 positions per vector, one
 * transposed key row per d, shared by the heads. */
INLINE void scores_h(const int H, const float *q, int32_t hh0, int32_t D, float scale,
                     const void *kt, int32_t ld_k, int32_t j0, __mmask16 jm, bool f16, float *s,
                     int64_t ld_s) {
    __m512 acc[8];
#pragma GCC unroll 8
    for (int h = 0; h < H; h++)
        acc[h] = _mm512_setzero_ps();
    for (int32_t d = 0; d < D; d++) {
        const __m512 k = kv_load(kt, (size_t)d * (size_t)ld_k + (size_t)j0, jm, f16);
#pragma GCC unroll 8
        for (int h = 0; h < H; h++)
            acc[h] = _mm512_fmadd_ps(_mm512_set1_ps(q[(size_t)(hh0 + h) * (size_t)D + (size_t)d]),
                                     k, acc[h]);
    }
#pragma GCC unroll 8
    for (int h = 0; h < H; h++)
        _mm512_mask_storeu_ps(s + (hh0 + h) * ld_s + j0, jm,
                              _mm512_mul_ps(acc[h], _mm512_set1_ps(scale)));
}

static void attn_scores(const float *q, int32_t G, int32_t D, float scale, const void *kt,
                        int32_t ld_k, int32_t n, bool f16, float *s, int64_t ld_s) {
    for (int32_t j0 = 0; j0 < n; j0 += 16) {
        const __mmask16 jm = first_n(n - j0);
        for (int32_t hh = 0; hh < G; hh += 8) {
            switch (G - hh) {
                HEAD_BLOCK_CASES_8(scores_h, q, hh, D, scale, kt, ld_k, j0, jm, f16, s, ld_s)
            }
        }
    }
}

/* kernels.h's softmax: the maximum; e = exp16(s - max) 16 positions at a time (the last ones
 * masked: 0 and not stored), summed in double in one vector of 8 lanes (positions 16k..16k+7,
 * then 16k+8..16k+15: lanes by j mod 8, each in j order), whose halves are then added; then
 * each e times (float)(1 / sum), rounded to F16 by vcvtps2ph when asked. */
static void attn_softmax(float *s, int32_t n, bool round_f16) {
    __m512 mv = _mm512_set1_ps(-INFINITY);
    for (int32_t j = 0; j < n; j += 16) // max(a, b) gives b when either is NaN: NaNs skipped
        mv = _mm512_mask_max_ps(mv, first_n(n - j), _mm512_maskz_loadu_ps(first_n(n - j), s + j),
                                mv);
    const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(mv));
    __m512d sum = _mm512_setzero_pd();
    for (int32_t j = 0; j < n; j += 16) {
        const __mmask16 m = first_n(n - j);
        const __m512 e =
            _mm512_maskz_mov_ps(m, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + j), mx)));
        _mm512_mask_storeu_ps(s + j, m, e);
        sum = _mm512_add_pd(sum, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        sum = _mm512_add_pd(sum, _mm512_cvtps_pd(_mm512_extractf32x8_ps(e, 1)));
    }
    const __m256d s4 = _mm256_add_pd(_mm512_castpd512_pd256(sum), _mm512_extractf64x4_pd(sum, 1));
    __m128d s2 = _mm_add_pd(_mm256_castpd256_pd128(s4), _mm256_extractf128_pd(s4, 1));
    s2 = _mm_add_sd(s2, _mm_unpackhi_pd(s2, s2));
    const __m512 inv = _mm512_set1_ps((float)(1.0 / _mm_cvtsd_f64(s2)));
    for (int32_t j = 0; j < n; j += 16) {
        const __mmask16 m = first_n(n - j);
        __m512 w = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, s + j), inv);
        if (round_f16)
            w = _mm512_cvtph_ps(_mm512_cvtps_ph(w, _MM_FROUND_TO_NEAREST_INT));
        _mm512_mask_storeu_ps(s + j, m, w);
    }
}

/* acc of H heads (from hh0), dimensions d0.. in mask dm (16, or fewer for the last ones of a
 * head size that is not a multiple of 16), += sum_j w_j v_j: per lane the chain of fmas over j
 * in order, as kernels.h defines it. */
INLINE void values_h(const int H, const float *w, int64_t ld_s, int32_t hh0, int32_t D, int32_t d0,
                     __mmask16 dm, const void *v, int32_t n, bool f16, float *acc) {
    __m512 a[8];
#pragma GCC unroll 8
    for (int h = 0; h < H; h++)
        a[h] = _mm512_maskz_loadu_ps(dm, acc + (size_t)(hh0 + h) * (size_t)D + (size_t)d0);
    for (int32_t j = 0; j < n; j++) {
        const __m512 x = kv_load(v, (size_t)j * (size_t)D + (size_t)d0, dm, f16);
#pragma GCC unroll 8
        for (int h = 0; h < H; h++)
            a[h] = _mm512_fmadd_ps(_mm512_set1_ps(w[(hh0 + h) * ld_s + j]), x, a[h]);
    }
#pragma GCC unroll 8
    for (int h = 0; h < H; h++)
        _mm512_mask_storeu_ps(acc + (size_t)(hh0 + h) * (size_t)D + (size_t)d0, dm, a[h]);
}

/* Head sizes that are not a multiple of 16: whole vectors, then the last D % 16 dimensions under
 * a mask. A function of its own, so that the common head sizes' loop keeps its constant mask
 * (plain loads that fold into the fmas). */
static __attribute__((noinline)) void values_masked(const float *w, int64_t ld_s, int32_t G,
                                                    int32_t D, const void *v, int32_t n, bool f16,
                                                    float *acc) {
    for (int32_t d0 = 0; d0 < D; d0 += 16) {
        const __mmask16 dm = first_n(D - d0);
        for (int32_t hh = 0; hh < G; hh += 8) {
            switch (G - hh) { HEAD_BLOCK_CASES_8(values_h, w, ld_s, hh, D, d0, dm, v, n, f16, acc) }
        }
    }
}

static void attn_values(const float *w, int64_t ld_s, int32_t G, int32_t D, const void *v,
                        int32_t n, bool f16, float *acc) {
    if (D % 16) {
        values_masked(w, ld_s, G, D, v, n, f16, acc);
        return;
    }
    for (int32_t d0 = 0; d0 < D; d0 += 16)
        for (int32_t hh = 0; hh < G; hh += 8) {
            switch (G - hh) {
                HEAD_BLOCK_CASES_8(values_h, w, ld_s, hh, D, d0, 0xffff, v, n, f16, acc)
            }
        }
}

/* kernels.h's SwiGLU, 16 at a time (the last ones masked): (g / (1 + exp16(-g))) * up. */
static void swiglu(float *gate, const float *up, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        const __m512 g = _mm512_maskz_loadu_ps(m, gate + i), u = _mm512_maskz_loadu_ps(m, up + i);
        const __m512 e = exp16(_mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(g), sign)));
        _mm512_mask_storeu_ps(gate + i, m,
                              _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(one, e)), u));
    }
}

void sp__kernels_avx512_init(sp_kernels *k) {
    k->matmul[SP_DTYPE_Q8_0] = matmul_q8_0;
    k->matmul[SP_DTYPE_Q4_0] = matmul_q4_0;
    k->matmul[SP_DTYPE_F32] = matmul_f32;
    k->matmul[SP_DTYPE_F16] = matmul_f16;
    k->matmul[SP_DTYPE_BF16] = matmul_bf16;
    k->quantize_act = quantize_act;
    k->attn_scores = attn_scores;
    k->attn_softmax = attn_softmax;
    k->attn_values = attn_values;
    k->swiglu = swiglu;
    k->round_f16 = round_f16_row;
}

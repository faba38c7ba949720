/* AVX2 + FMA + F16C kernels (compiled with -mavx2 -mfma -mf16c; chosen at run time), and the
 * AVX-VNNI variant of the Q8_0/Q4_0 ones. A loaded model's Q8_0/Q4_0 matrices are packed and
 * multiplied by packed_avx2.c; the Q8_0/Q4_0 kernels here serve rows in their stored layout.
 *
 * Products are computed in register tiles of R activation rows by O weight rows: one weight
 * block is loaded once per tile and used for R rows, which is what makes a batch of rows cost
 * far less than that many single rows (weights are streamed from memory once per call and
 * re-read from L1/L2 for each tile of rows). Every output (r, o) has its own accumulator and
 * goes through the same instructions in the same order whatever the tile shape, so results
 * never depend on n_rows or on the [o0, o1) split (the invariance contract of kernels.h).
 * No allocation; under 2 KB of stack. */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "base/err.h"
#include "tensor/kernels.h"
#include "tensor/kernels_x86.h"
#include "tensor/kquants.h"
#include "tensor/quant.h"

// ---------------------------------------------------------------- Q8_0 / Q4_0 weights

/* kind: K_Q8_0 or K_Q4_0 (kernels_x86.h), plus this bit for AVX-VNNI integer dots. */
enum { K_VNNI = 2 };

/* acc + the 8 sums of 4 products of unsigned bytes u by signed bytes s (vpdpbusd, in its VEX
 * encoding: the file is not compiled with -mavxvnni). */
INLINE __m256i dpbusd_vex(__m256i acc, __m256i u, __m256i s) {
    __asm__("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(u), "x"(s));
    return acc;
}

/* q_tile's steps (kernels_x86.h). The exact integer dot of a weight block and an activation
 * block, as 8 int32 lanes (lane l: positions 4l..4l+3); every way below gives the same integers
 * (all sums are exact):
 *  - AVX2 (llama.cpp's sign trick): wv = the signed weights (Q4_0: nibble - 8), wa = |wv|;
 *    the pair is maddubs(wa, x negated where wv < 0) summed by madd. A pair sum is at most
 *    128 * 127 * 2 < 2^15 (activations are never -128), so nothing saturates.
 *  - VNNI: wv = the weights as unsigned bytes with a bias K (Q8_0: w + 128, Q4_0: the nibble,
 *    i.e. (w + 8)); per activation block xa = -K * (sum of each 4 activations), computed once
 *    and shared by all the weight rows of a tile; the pair is one vpdpbusd(xa, wv, x), exact
 *    for any bytes. */
INLINE __m256i load_wv(const int kind, const uint8_t *blk) {
    __m256i q;
    if (kind & K_Q4_0) {
        q = _mm256_and_si256(q4_nibbles(blk), _mm256_set1_epi8(0x0f));
        if (!(kind & K_VNNI))
            q = _mm256_sub_epi8(q, _mm256_set1_epi8(8));
    } else {
        q = _mm256_loadu_si256((const __m256i *)(blk + 2));
        if (kind & K_VNNI)
            q = _mm256_xor_si256(q, _mm256_set1_epi8((char)0x80));
    }
    return q;
}

INLINE __m256i prep_wa(const int kind, __m256i wv) {
    return (kind & K_VNNI) ? wv : _mm256_sign_epi8(wv, wv);
}

INLINE __m256i prep_xa(const int kind, __m256i xq) {
    if (!(kind & K_VNNI))
        return xq;
    const __m256i bias = _mm256_set1_epi8((kind & K_Q4_0) ? 8 : (char)0x80); // K as unsigned
    const __m256i zero = _mm256_setzero_si256();
    return _mm256_sub_epi32(zero, dpbusd_vex(zero, bias, xq));
}

INLINE __m256i int_dot(const int kind, __m256i wv, __m256i wa, __m256i xq, __m256i xa) {
    if (kind & K_VNNI)
        return dpbusd_vex(xa, wv, xq);
    return _mm256_madd_epi16(_mm256_maddubs_epi16(wa, _mm256_sign_epi8(xq, wv)),
                             _mm256_set1_epi16(1));
}

/* The F16 scales of blocks b..b+n-1 (n <= 8; the others 0) of a row, as floats (exact). */
INLINE __m256 load_scales8(const uint8_t *row, int64_t b, int n, const int block_bytes) {
    const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                           _mm256_set1_epi32(block_bytes));
    const int *base = (const int *)(row + (size_t)b * (size_t)block_bytes);
    __m256i g;
    if (n == 8) {
        g = _mm256_i32gather_epi32(base, idx, 1);
    } else {
        const __m256i m =
            _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        g = _mm256_mask_i32gather_epi32(_mm256_setzero_si256(), base, idx, m, 1);
    }
    // The low 16 bits of each lane, in order.
    const __m256i pick = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1,
                                          0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1);
    const __m256i h = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(g, pick), 0x08);
    return _mm256_cvtph_ps(_mm256_castsi256_si128(h));
}

// ---------------------------------------------------------------- F32 / F16 / BF16 weights

enum { K_F32, K_F16, K_BF16 };

INLINE size_t elem_bytes(const int kind) {
    return kind == K_F32 ? 4 : 2;
}

/* 8 values from element i of a row, as floats (F16 and BF16 convert exactly). */
INLINE __m256 load8(const int kind, const uint8_t *row, int64_t i) {
    const uint8_t *p = row + (size_t)i * elem_bytes(kind);
    if (kind == K_F32)
        return _mm256_loadu_ps((const float *)p);
    const __m128i h = _mm_loadu_si128((const __m128i *)p);
    if (kind == K_F16)
        return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* The last n < 8 values from element i, zero-padded (zeros leave the sums unchanged). */
INLINE __m256 load8_tail(const int kind, const uint8_t *row, int64_t i, int64_t n) {
    uint8_t buf[32] = {0};
    memcpy(buf, row + (size_t)i * elem_bytes(kind), (size_t)n * elem_bytes(kind));
    return load8(kind, buf, 0);
}

INLINE void f_tile(const int R, const int O, const int kind, const uint8_t *w, size_t wrb,
                   const uint8_t *x, size_t xrb, int64_t n, float *y, int64_t ldy) {
    __m256 acc[4][4];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int o = 0; o < O; o++)
            acc[r][o] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 wv[4];
#pragma GCC unroll 4
        for (int o = 0; o < O; o++)
            wv[o] = load8(kind, w + (size_t)o * wrb, i);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const __m256 xv = load8(kind, x + (size_t)r * xrb, i);
#pragma GCC unroll 4
            for (int o = 0; o < O; o++)
                acc[r][o] = _mm256_fmadd_ps(wv[o], xv, acc[r][o]);
        }
    }
    if (i < n) {
        __m256 wv[4];
#pragma GCC unroll 4
        for (int o = 0; o < O; o++)
            wv[o] = load8_tail(kind, w + (size_t)o * wrb, i, n - i);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const __m256 xv = load8_tail(kind, x + (size_t)r * xrb, i, n - i);
#pragma GCC unroll 4
            for (int o = 0; o < O; o++)
                acc[r][o] = _mm256_fmadd_ps(wv[o], xv, acc[r][o]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int o = 0; o < O; o++)
            y[r * ldy + o] = hsum8(acc[r][o]);
}

DEFINE_TILING(q, q_tile)
DEFINE_TILING(f, f_tile)

/* One activation row: 4 (AVX2) or 8 (VNNI) weight rows at a time, independent accumulator
 * chains. Several rows: 4 rows per weight block load, with 1 (AVX2) or 2 (VNNI) weight rows
 * (16 ymm registers). */
INLINE void q_matmul(const int kind, const void *w, size_t wrb, const void *x, size_t xrb,
                     int64_t n_in, int64_t n_rows, float *y, int64_t ldy, int64_t o0, int64_t o1) {
    SP_ASSERT(n_in % SP_QK8_0 == 0 && n_rows >= 0 && o0 <= o1);
    const int64_t nb = n_in / SP_QK8_0;
    if (n_rows == 1 && (kind & K_VNNI))
        q_tiles(1, 8, kind, w, wrb, x, xrb, nb, 1, y, ldy, o0, o1);
    else if (n_rows == 1)
        q_tiles(1, 4, kind, w, wrb, x, xrb, nb, 1, y, ldy, o0, o1);
    else if (kind & K_VNNI)
        q_tiles(4, 2, kind, w, wrb, x, xrb, nb, n_rows, y, ldy, o0, o1);
    else
        q_tiles(4, 1, kind, w, wrb, x, xrb, nb, n_rows, y, ldy, o0, o1);
}

INLINE void f_matmul(const int kind, const void *w, size_t wrb, const void *x, size_t xrb,
                     int64_t n_in, int64_t n_rows, float *y, int64_t ldy, int64_t o0, int64_t o1) {
    SP_ASSERT(n_in >= 0 && n_rows >= 0 && o0 <= o1);
    if (n_rows == 1)
        f_tiles(1, 4, kind, w, wrb, x, xrb, n_in, 1, y, ldy, o0, o1);
    else
        f_tiles(4, 2, kind, w, wrb, x, xrb, n_in, n_rows, y, ldy, o0, o1);
}

MATMUL(matmul_q8_0, q_matmul, K_Q8_0)
MATMUL(matmul_q4_0, q_matmul, K_Q4_0)
MATMUL(matmul_q8_0_vnni, q_matmul, K_VNNI)
MATMUL(matmul_q4_0_vnni, q_matmul, K_Q4_0 | K_VNNI)
MATMUL(matmul_f32, f_matmul, K_F32)
MATMUL(matmul_f16, f_matmul, K_F16)
MATMUL(matmul_bf16, f_matmul, K_BF16)

// ---------------------------------------------------------------- activation conversion

/* As sp_quantize_act_row for Q8_0: amax of the block (max is exact in any order), d = amax/127
 * as F16, q = x * (127/amax) rounded to nearest even (cvtps_epi32 in the default rounding mode,
 * like nearbyintf). */
static void act_q8_0(const float *x, sp_block_q8_0 *yb, int64_t nb) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t i = 0; i < nb; i++, x += SP_QK8_0) {
        __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
        __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
        __m256 m =
            _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1)),
                          _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
        __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        const float d = amax / 127.0f;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        yb[i].d = sp_f32_to_f16(d);
        const __m256 mul = _mm256_set1_ps(id);
        const __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v0, mul));
        const __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v1, mul));
        const __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v2, mul));
        const __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v3, mul));
        // The packs work within 128-bit halves: the bytes come out as 32-bit groups
        // 0 2 4 6 1 3 5 7, which the permutation puts back in order.
        const __m256i p =
            _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        const __m256i q = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)yb[i].qs, q);
    }
}

/* F16C rounds to nearest even like sp_f32_to_f16; NaNs (whose payloads F16C keeps) are left
 * to the scalar conversion. */
static void act_f16(const float *x, sp_f16 *h, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        if (_mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q))) {
            for (int j = 0; j < 8; j++)
                h[i + j] = sp_f32_to_f16(x[i + j]);
            continue;
        }
        _mm_storeu_si128((__m128i *)(h + i), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
    }
    for (; i < n; i++)
        h[i] = sp_f32_to_f16(x[i]);
}

/* x through F16 and back: F16C's conversions (the way back is exact), NaNs through the scalar
 * ones as in act_f16. */
static void round_f16_row(float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        if (_mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q))) {
            for (int j = 0; j < 8; j++)
                x[i + j] = sp_f16_to_f32(sp_f32_to_f16(x[i + j]));
            continue;
        }
        _mm256_storeu_ps(x + i, _mm256_cvtph_ps(_mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT)));
    }
    for (; i < n; i++)
        x[i] = sp_f16_to_f32(sp_f32_to_f16(x[i]));
}

/* sp_f32_to_bf16 on 8 lanes: round to nearest even by integer addition; a NaN is truncated and
 * made quiet. */
static void act_bf16(const float *x, sp_bf16 *h, int64_t n) {
    const __m256i bias = _mm256_set1_epi32(0x7fff), one = _mm256_set1_epi32(1);
    const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
    const __m256i quiet = _mm256_set1_epi32(0x40);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i u = _mm256_loadu_si256((const __m256i *)(x + i));
        const __m256i hi = _mm256_srli_epi32(u, 16);
        const __m256i rounded = _mm256_srli_epi32(
            _mm256_add_epi32(_mm256_add_epi32(u, bias), _mm256_and_si256(hi, one)), 16);
        const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs_mask), inf);
        const __m256i r = _mm256_blendv_epi8(rounded, _mm256_or_si256(hi, quiet), nan);
        const __m128i packed =
            _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
        _mm_storeu_si128((__m128i *)(h + i), packed);
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

/* e^x for x <= 0 as kernels_avx512.c's exp_neg, on 8 lanes (2^n built in the exponent bits). */
INLINE __m256 exp_neg8(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    const __m256 y =
        _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

/* 8 cache values from element i on. */
INLINE __m256 kv_load8(const void *base, size_t i, bool f16) {
    if (f16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)base + i)));
    return _mm256_loadu_ps((const float *)base + i);
}

/* The first nj < 8 of the 8 cache values from element i on, the other lanes 0; memory past them
 * is not read (m: the first nj of 8 32-bit lanes set). F16: the whole pairs by a masked load of
 * 32-bit lanes, an odd last value blended into its lane. */
INLINE __m256 kv_load8_part(const void *base, size_t i, __m256i m, int32_t nj, bool f16) {
    if (!f16)
        return _mm256_maskload_ps((const float *)base + i, m);
    const uint16_t *p = (const uint16_t *)base + i;
    const __m128i pairs = _mm_cmpgt_epi32(_mm_set1_epi32(nj / 2), _mm_setr_epi32(0, 1, 2, 3));
    __m128i h = _mm_maskload_epi32((const int *)p, pairs);
    if (nj & 1) {
        const __m128i last = _mm_cmpeq_epi16(_mm_set1_epi16((short)(nj - 1)),
                                             _mm_setr_epi16(0, 1, 2, 3, 4, 5, 6, 7));
        h = _mm_blendv_epi8(h, _mm_set1_epi16((short)p[nj - 1]), last);
    }
    return _mm256_cvtph_ps(h);
}

/* Scores of H heads (from hh0) for the nj <= 8 positions j0..j0+nj-1 (nj is 8 but for the last
 * positions of a partly filled block, which are read zero-padded and stored under a mask). Each
 * position's score is the same chain of fmas whatever nj: the forward pass scores a tile of
 * tokens up to its last token's position and a lone token up to its own, so a position in one
 * call's partly filled vector may be in another call's full one, and must get the same bits. */
INLINE void scores8_h(const int H, const float *q, int32_t hh0, int32_t D, float scale,
                      const void *kt, int32_t ld_k, int32_t j0, int32_t nj, bool f16, float *s,
                      int64_t ld_s) {
    const __m256i m =
        _mm256_cmpgt_epi32(_mm256_set1_epi32(nj), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256 acc[4];
#pragma GCC unroll 4
    for (int h = 0; h < H; h++)
        acc[h] = _mm256_setzero_ps();
    for (int32_t d = 0; d < D; d++) {
        const size_t i = (size_t)d * (size_t)ld_k + (size_t)j0;
        const __m256 k = nj == 8 ? kv_load8(kt, i, f16) : kv_load8_part(kt, i, m, nj, f16);
#pragma GCC unroll 4
        for (int h = 0; h < H; h++)
            acc[h] = _mm256_fmadd_ps(_mm256_set1_ps(q[(size_t)(hh0 + h) * (size_t)D + (size_t)d]),
                                     k, acc[h]);
    }
#pragma GCC unroll 4
    for (int h = 0; h < H; h++) {
        const __m256 x = _mm256_mul_ps(acc[h], _mm256_set1_ps(scale));
        if (nj == 8)
            _mm256_storeu_ps(s + (hh0 + h) * ld_s + j0, x);
        else
            _mm256_maskstore_ps(s + (hh0 + h) * ld_s + j0, m, x);
    }
}

static void attn_scores(const float *q, int32_t G, int32_t D, float scale, const void *kt,
                        int32_t ld_k, int32_t n, bool f16, float *s, int64_t ld_s) {
    int32_t j0 = 0;
    for (; j0 + 8 <= n; j0 += 8)
        for (int32_t hh = 0; hh < G; hh += 4) {
            switch (G - hh) {
                HEAD_BLOCK_CASES_4(scores8_h, q, hh, D, scale, kt, ld_k, j0, 8, f16, s, ld_s)
            }
        }
    if (j0 < n) // the last positions of a partly filled block
        for (int32_t hh = 0; hh < G; hh += 4) {
            switch (G - hh) {
                HEAD_BLOCK_CASES_4(scores8_h, q, hh, D, scale, kt, ld_k, j0, n - j0, f16, s, ld_s)
            }
        }
}

/* As the scalar softmax, with exp_neg8 on whole vectors of 8 and expf on the tail. */
static void attn_softmax(float *s, int32_t n, bool round_f16) {
    float mx = -INFINITY;
    for (int32_t j = 0; j < n; j++)
        mx = s[j] > mx ? s[j] : mx;
    __m256d sum4 = _mm256_setzero_pd();
    int32_t j = 0;
    for (; j + 8 <= n; j += 8) {
        const __m256 e = exp_neg8(_mm256_sub_ps(_mm256_loadu_ps(s + j), _mm256_set1_ps(mx)));
        _mm256_storeu_ps(s + j, e);
        sum4 = _mm256_add_pd(sum4, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        sum4 = _mm256_add_pd(sum4, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    double lane[4];
    _mm256_storeu_pd(lane, sum4);
    double sum = (lane[0] + lane[1]) + (lane[2] + lane[3]);
    for (; j < n; j++) {
        s[j] = expf(s[j] - mx);
        sum += (double)s[j];
    }
    const float inv = (float)(1.0 / sum);
    j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 w = _mm256_mul_ps(_mm256_loadu_ps(s + j), _mm256_set1_ps(inv));
        if (round_f16)
            w = _mm256_cvtph_ps(_mm256_cvtps_ph(w, _MM_FROUND_TO_NEAREST_INT));
        _mm256_storeu_ps(s + j, w);
    }
    for (; j < n; j++)
        s[j] = round_f16 ? sp_f16_to_f32(sp_f32_to_f16(s[j] * inv)) : s[j] * inv;
}

/* acc of H heads (from hh0), dimensions d0..d0+7, += sum_j w_j v_j. */
INLINE void values8_h(const int H, const float *w, int64_t ld_s, int32_t hh0, int32_t D, int32_t d0,
                      const void *v, int32_t n, bool f16, float *acc) {
    __m256 a[4];
#pragma GCC unroll 4
    for (int h = 0; h < H; h++)
        a[h] = _mm256_loadu_ps(acc + (size_t)(hh0 + h) * (size_t)D + (size_t)d0);
    for (int32_t j = 0; j < n; j++) {
        const __m256 x = kv_load8(v, (size_t)j * (size_t)D + (size_t)d0, f16);
#pragma GCC unroll 4
        for (int h = 0; h < H; h++)
            a[h] = _mm256_fmadd_ps(_mm256_set1_ps(w[(hh0 + h) * ld_s + j]), x, a[h]);
    }
#pragma GCC unroll 4
    for (int h = 0; h < H; h++)
        _mm256_storeu_ps(acc + (size_t)(hh0 + h) * (size_t)D + (size_t)d0, a[h]);
}

static void attn_values(const float *w, int64_t ld_s, int32_t G, int32_t D, const void *v,
                        int32_t n, bool f16, float *acc) {
    if (D % 8) {
        sp__attn_values_scalar(w, ld_s, G, D, v, n, f16, acc);
        return;
    }
    for (int32_t d0 = 0; d0 < D; d0 += 8) {
        for (int32_t hh = 0; hh < G; hh += 4) {
            switch (G - hh) { HEAD_BLOCK_CASES_4(values8_h, w, ld_s, hh, D, d0, v, n, f16, acc) }
        }
    }
}

void sp__kernels_avx2_init(sp_kernels *k) {
    k->matmul[SP_DTYPE_Q8_0] = matmul_q8_0;
    k->matmul[SP_DTYPE_Q4_0] = matmul_q4_0;
    k->matmul[SP_DTYPE_F32] = matmul_f32;
    k->matmul[SP_DTYPE_F16] = matmul_f16;
    k->matmul[SP_DTYPE_BF16] = matmul_bf16;
    k->quantize_act = quantize_act;
    k->attn_scores = attn_scores;
    k->attn_softmax = attn_softmax;
    k->attn_values = attn_values;
    k->round_f16 = round_f16_row;
}

void sp__kernels_avxvnni_init(sp_kernels *k) {
    k->matmul[SP_DTYPE_Q8_0] = matmul_q8_0_vnni;
    k->matmul[SP_DTYPE_Q4_0] = matmul_q4_0_vnni;
}

/* AVX2 + FMA + F16C kernels (compiled with -mavx2 -mfma -mf16c; chosen at run time), and the
 * AVX-VNNI variant of the Q8_0/Q4_0 ones. A loaded model's Q8_0/Q4_0 matrices are packed and
 * multiplied by packed_avx2.c; the Q8_0/Q4_0 kernels here serve rows in their stored layout.
 * Every entry runs the numerics kernels.h defines for all tables, so it gives the scalar
 * table's bits.
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
#include "base/util.h"
#include "tensor/exp.h"
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

/* The 16 lanes of kernels.h's float dot as two vectors: h = 0 holds positions 16k..16k+7, h = 1
 * positions 16k+8..16k+15. A step adds the products of 16 positions from element i of each row,
 * lane by lane (rows: O weight rows wrb apart, R activation rows xrb apart). */
INLINE void f_step(const int R, const int O, const int kind, const uint8_t *w, size_t wrb,
                   const uint8_t *x, size_t xrb, int64_t i, __m256 acc[3][4][2]) {
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        __m256 wv[4];
#pragma GCC unroll 4
        for (int o = 0; o < O; o++)
            wv[o] = load8(kind, w + (size_t)o * wrb, i + 8 * h);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            __m256 xv = load8(kind, x + (size_t)r * xrb, i + 8 * h);
            // Loaded once into a register: GCC would fold an F32 load into each of the O fmas
            // as a memory operand, O loads where 1 does (~15% slower on several rows).
            __asm__("" : "+x"(xv));
#pragma GCC unroll 4
            for (int o = 0; o < O; o++)
                acc[r][o][h] = _mm256_fmadd_ps(wv[o], xv, acc[r][o][h]);
        }
    }
}

/* hsum8 of 8 vectors at once, the same additions (halves: lane i + lane i+4, then i + i+2, then
 * 0 + 1) done for two or four vectors per instruction: lane 4 (k % 2) + k / 2 of the result is
 * the sum of v[k]. 21 instructions instead of 48. */
INLINE __m256 sums8(const __m256 v[8]) {
    __m256 a[4], b[2];
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) // [v[2k]: l_i + l_i+4 | v[2k+1]: the same], i < 4
        a[k] = _mm256_add_ps(_mm256_permute2f128_ps(v[2 * k], v[2 * k + 1], 0x20),
                             _mm256_permute2f128_ps(v[2 * k], v[2 * k + 1], 0x31));
#pragma GCC unroll 2
    for (int k = 0; k < 2; k++) // per 128-bit half [m0 + m2, m1 + m3] of two vectors
        b[k] = _mm256_add_ps(_mm256_shuffle_ps(a[2 * k], a[2 * k + 1], 0x44),
                             _mm256_shuffle_ps(a[2 * k], a[2 * k + 1], 0xee));
    return _mm256_add_ps(_mm256_shuffle_ps(b[0], b[1], 0x88), _mm256_shuffle_ps(b[0], b[1], 0xdd));
}

/* One R x O tile (R <= 3, O <= 4, R O <= 8) over n values: 16 lanes by position mod 16, the
 * positions past the last whole 16 zero-padded (a product of zeros leaves a lane as it is), then
 * halves added (the lanes' two vectors, then sums8). */
INLINE void f_tile(const int R, const int O, const int kind, const uint8_t *w, size_t wrb,
                   const uint8_t *x, size_t xrb, int64_t n, float *y, int64_t ldy) {
    __m256 acc[3][4][2];
#pragma GCC unroll 3
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int o = 0; o < O; o++)
            acc[r][o][0] = acc[r][o][1] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        f_step(R, O, kind, w, wrb, x, xrb, i, acc);
    if (i < n) {
        // The rows' last values, copied into zeroed 64-byte rows.
        const size_t es = elem_bytes(kind), tail = (size_t)(n - i) * es;
        uint8_t wt[4][64] = {{0}}, xt[3][64] = {{0}};
#pragma GCC unroll 4
        for (int o = 0; o < O; o++)
            memcpy(wt[o], w + (size_t)o * wrb + (size_t)i * es, tail);
#pragma GCC unroll 3
        for (int r = 0; r < R; r++)
            memcpy(xt[r], x + (size_t)r * xrb + (size_t)i * es, tail);
        f_step(R, O, kind, &wt[0][0], 64, &xt[0][0], 64, 0, acc);
    }
    // The halves of every output at once: (r, o) is vector k = O r + o of sums8's input.
    __m256 v[8];
#pragma GCC unroll 8
    for (int k = 0; k < 8; k++)
        v[k] = k < R * O ? _mm256_add_ps(acc[k / O][k % O][0], acc[k / O][k % O][1])
                         : _mm256_setzero_ps();
    float out[8];
    _mm256_storeu_ps(out, sums8(v));
#pragma GCC unroll 8
    for (int k = 0; k < R * O; k++)
        y[k / O * ldy + k % O] = out[k / 2 + k % 2 * 4];
}

DEFINE_TILING(q, q_tile)
DEFINE_TILING(f, f_tile)

/* Q8_0/Q4_0: 8 outputs (the lanes of a vector) by 1 or 4 activation rows. F32/F16/BF16: one
 * activation row by 4 weight rows (8 accumulators); several rows by 3 rows x 2 weight rows for
 * F32 (12 accumulators, 5 loads per 6 fmas), 2 x 3 for F16/BF16 (each conversion shared by 2 or 3
 * products): the fastest of 2 x 2, 3 x 2, 4 x 1, 2 x 3 and 1 x 4 on 8 and 32 rows of 64 to 2048
 * values (buffers at 8 offsets), 0-20% faster than the 8-lane kernel's 4 x 2 was. */
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
    else if (kind == K_F32)
        f_tiles(3, 2, kind, w, wrb, x, xrb, n_in, n_rows, y, ldy, o0, o1);
    else
        f_tiles(2, 3, kind, w, wrb, x, xrb, n_in, n_rows, y, ldy, o0, o1);
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

/* sp__exp (exp.h) on 8 lanes: the same operations in the same order. */
INLINE __m256 exp8(__m256 x) {
    x = _mm256_max_ps(_mm256_set1_ps(SP__EXP_LO), x); // max(a, b) gives b when either is NaN
    x = _mm256_min_ps(_mm256_set1_ps(SP__EXP_HI), x);
    const __m256 t =
        _mm256_fmadd_ps(x, _mm256_set1_ps(SP__EXP_LOG2E), _mm256_set1_ps(SP__EXP_SHIFT));
    const __m256 nf = _mm256_sub_ps(t, _mm256_set1_ps(SP__EXP_SHIFT));
    __m256 r = _mm256_fmadd_ps(nf, _mm256_set1_ps(-SP__EXP_LN2_HI), x);
    r = _mm256_fmadd_ps(nf, _mm256_set1_ps(-SP__EXP_LN2_LO), r);
    __m256 p = _mm256_set1_ps(SP__EXP_C8);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(SP__EXP_C7));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(SP__EXP_C6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(SP__EXP_C5));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(SP__EXP_C4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(SP__EXP_C3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(SP__EXP_C2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256i n =
        _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32((int)SP__EXP_SHIFT_BITS));
    const __m256i n1 = _mm256_sub_epi32(
        _mm256_srli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(256)), 1), _mm256_set1_epi32(128));
    const __m256i n2 = _mm256_sub_epi32(n, n1);
    const __m256i bias = _mm256_set1_epi32(127);
    const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

/* The first n of 8 32-bit lanes set (all for n >= 8). */
INLINE __m256i first_n8(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n < 8 ? n : 8)),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
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

/* kernels.h's softmax: the maximum; e = exp8(s - max) 8 positions at a time (the last ones
 * masked: their lanes are 0 and are not stored), summed in double in two vectors of 4 lanes
 * (positions 8k..8k+3 and 8k+4..8k+7: lanes by j mod 8), whose halves are then added; then each
 * e times (float)(1 / sum), rounded to F16 by vcvtps2ph when asked. */
static void attn_softmax(float *s, int32_t n, bool round_f16) {
    __m256 mv = _mm256_set1_ps(-INFINITY);
    for (int32_t j = 0; j < n; j += 8) {
        const __m256i m = first_n8(n - j);
        // max(a, b) gives b when either is NaN: NaN scores are skipped, as in the scalar loop.
        mv = _mm256_max_ps(
            _mm256_blendv_ps(mv, _mm256_maskload_ps(s + j, m), _mm256_castsi256_ps(m)), mv);
    }
    __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(mv, 1), _mm256_castps256_ps128(mv));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const __m256 mx = _mm256_set1_ps(_mm_cvtss_f32(m4));
    __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
    for (int32_t j = 0; j < n; j += 8) {
        const __m256i m = first_n8(n - j);
        const __m256 e = _mm256_and_ps(exp8(_mm256_sub_ps(_mm256_maskload_ps(s + j, m), mx)),
                                       _mm256_castsi256_ps(m));
        _mm256_maskstore_ps(s + j, m, e);
        lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    const __m256d l4 = _mm256_add_pd(lo, hi);
    __m128d l2 = _mm_add_pd(_mm256_castpd256_pd128(l4), _mm256_extractf128_pd(l4, 1));
    l2 = _mm_add_sd(l2, _mm_unpackhi_pd(l2, l2));
    const __m256 inv = _mm256_set1_ps((float)(1.0 / _mm_cvtsd_f64(l2)));
    for (int32_t j = 0; j < n; j += 8) {
        const __m256i m = first_n8(n - j);
        __m256 w = _mm256_mul_ps(_mm256_maskload_ps(s + j, m), inv);
        if (round_f16)
            w = _mm256_cvtph_ps(_mm256_cvtps_ph(w, _MM_FROUND_TO_NEAREST_INT));
        _mm256_maskstore_ps(s + j, m, w);
    }
}

/* acc of H heads (from hh0), dimensions d0..d0+nd-1 (nd <= 8: fewer for the last ones of a
 * head size that is not a multiple of 8, read and written under a mask), += sum_j w_j v_j: per
 * lane the chain of fmas over j in order, as kernels.h defines it. */
INLINE void values8_h(const int H, const float *w, int64_t ld_s, int32_t hh0, int32_t D, int32_t d0,
                      int32_t nd, const void *v, int32_t n, bool f16, float *acc) {
    const __m256i m = first_n8(nd);
    __m256 a[4];
#pragma GCC unroll 4
    for (int h = 0; h < H; h++) {
        float *p = acc + (size_t)(hh0 + h) * (size_t)D + (size_t)d0;
        a[h] = nd == 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, m);
    }
    for (int32_t j = 0; j < n; j++) {
        const size_t i = (size_t)j * (size_t)D + (size_t)d0;
        const __m256 x = nd == 8 ? kv_load8(v, i, f16) : kv_load8_part(v, i, m, nd, f16);
#pragma GCC unroll 4
        for (int h = 0; h < H; h++)
            a[h] = _mm256_fmadd_ps(_mm256_set1_ps(w[(hh0 + h) * ld_s + j]), x, a[h]);
    }
#pragma GCC unroll 4
    for (int h = 0; h < H; h++) {
        float *p = acc + (size_t)(hh0 + h) * (size_t)D + (size_t)d0;
        if (nd == 8)
            _mm256_storeu_ps(p, a[h]);
        else
            _mm256_maskstore_ps(p, m, a[h]);
    }
}

/* Head sizes that are not a multiple of 8: whole vectors, then the last D % 8 dimensions under a
 * mask. A function of its own: merged into attn_values, GCC would test the width on every
 * position of the common head sizes too. */
static __attribute__((noinline)) void values_masked(const float *w, int64_t ld_s, int32_t G,
                                                    int32_t D, const void *v, int32_t n, bool f16,
                                                    float *acc) {
    for (int32_t d0 = 0; d0 < D; d0 += 8)
        for (int32_t hh = 0; hh < G; hh += 4) {
            switch (G - hh) {
                HEAD_BLOCK_CASES_4(values8_h, w, ld_s, hh, D, d0, SP_MIN(8, D - d0), v, n, f16, acc)
            }
        }
}

static void attn_values(const float *w, int64_t ld_s, int32_t G, int32_t D, const void *v,
                        int32_t n, bool f16, float *acc) {
    if (D % 8) {
        values_masked(w, ld_s, G, D, v, n, f16, acc);
        return;
    }
    for (int32_t d0 = 0; d0 < D; d0 += 8)
        for (int32_t hh = 0; hh < G; hh += 4) {
            switch (G - hh) { HEAD_BLOCK_CASES_4(values8_h, w, ld_s, hh, D, d0, 8, v, n, f16, acc) }
        }
}

/* kernels.h's SwiGLU, 8 at a time (the last ones masked): (g / (1 + exp8(-g))) * up. */
static void swiglu(float *gate, const float *up, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    for (int64_t i = 0; i < n; i += 8) {
        const __m256i m = first_n8(n - i);
        const __m256 g = _mm256_maskload_ps(gate + i, m), u = _mm256_maskload_ps(up + i, m);
        const __m256 e = exp8(_mm256_xor_ps(g, sign));
        _mm256_maskstore_ps(gate + i, m, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), u));
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
    k->swiglu = swiglu;
    k->round_f16 = round_f16_row;
}

void sp__kernels_avxvnni_init(sp_kernels *k) {
    k->matmul[SP_DTYPE_Q8_0] = matmul_q8_0_vnni;
    k->matmul[SP_DTYPE_Q4_0] = matmul_q4_0_vnni;
}

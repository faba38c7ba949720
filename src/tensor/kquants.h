/* K-quant kernels for x86-64 (kquants_avx2.c, kquants_avx512.c), internal to src/tensor.
 *
 * sp__kquants_avx2_init() and sp__kquants_avx512_init() (declared in kernels.h) fill the
 * Q4_K and Q6_K entries of a kernel table. Both take Q8_K activation rows and follow the
 * integer-dot-then-float-accumulate scheme of llama.cpp's x86 kernels. Per super-block:
 *  - an exact integer sum in 8 int32 lanes: lane l gathers scale * q * x over the positions p
 *    with p % 32 in [4l, 4l + 4) (Q6_K: q stored + 32; lane l then loses
 *    32 * (s[2l] bsums[2l] + s[2l+1] bsums[2l+1]), which takes the offset out exactly);
 *  - acc = fma(d_w * d_x, (float)lane, acc) in 8 float lanes (d_w * d_x rounded once);
 *  - Q4_K only: acc = acc - (dmin_w * d_x) * (float)(min_j * (bsums[2j] + bsums[2j+1])) for
 *    lane j, also fused;
 * then the 8 lanes are summed in the fixed tree of sp__kq_hsum8. The AVX-512 kernels put
 * exactly the same integers in the same lanes, so the two tables give bit-identical results.
 * They differ from sp_vec_dot_ref (lanes by position mod 8, separate roundings) only by float
 * rounding. The matmuls allocate nothing, write only y[r * ldy + o] for o in [o0, o1), and may
 * run on any threads at once on disjoint outputs.
 *
 * Only compiled on x86-64; call the AVX2 functions only when the CPU has AVX2, FMA and F16C. */
#ifndef SP_TENSOR_KQUANTS_H
#define SP_TENSOR_KQUANTS_H

#include <stdint.h>

/* Converts n floats (a multiple of 256, finite) to Q8_K at dst, bit-identical to
 * sp_quantize_act_row(SP_DTYPE_Q8_K, x, dst, n). Any thread. */
void sp__quantize_q8_k_avx2(const float *x, void *dst, int64_t n);

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
/* Pieces shared by the two kernel files (compiled with at least AVX2, FMA and F16C), so that
 * the float steps are written once. */
#include <immintrin.h>
#include <string.h>

#include "base/err.h"
#include "tensor/quant.h"

#define SP__KQ_INLINE static inline __attribute__((always_inline))

/* Sum of the 8 lanes in a fixed tree: (l0+l4 + l2+l6) + (l1+l5 + l3+l7). */
SP__KQ_INLINE float sp__kq_hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The 6-bit scales (bytes 0..7 of *sc) and mins (bytes 0..7 of *mn) of the 8 sub-blocks of a
 * Q4_K super-block, unpacked from its 12 bytes as the reference does one by one. */
SP__KQ_INLINE void sp__kq_q4k_scales(const uint8_t packed[SP_K_SCALE_SIZE], uint64_t *sc,
                                     uint64_t *mn) {
    uint32_t u[3];
    memcpy(&u[0], packed, 4); // three loads, not a copy through the stack
    memcpy(&u[1], packed + 4, 4);
    memcpy(&u[2], packed + 8, 4);
    const uint32_t sc_lo = u[0] & 0x3f3f3f3fu;
    const uint32_t sc_hi = (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4);
    const uint32_t mn_lo = u[1] & 0x3f3f3f3fu;
    const uint32_t mn_hi = ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4);
    *sc = sc_lo | (uint64_t)sc_hi << 32;
    *mn = mn_lo | (uint64_t)mn_hi << 32;
}

/* The 8 mins as 16 int16 lanes m0 m0 m1 m1 ... m7 m7, to pair with the 16 bsums. */
SP__KQ_INLINE __m256i sp__kq_q4k_min_pairs(uint64_t mn) {
    const __m128i pairs = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    return _mm256_cvtepu8_epi16(_mm_shuffle_epi8(_mm_cvtsi64_si128((long long)mn), pairs));
}

/* The two f16 values at p (a Q4_K block's d and dmin), as floats in every lane of *a and *b. */
SP__KQ_INLINE void sp__kq_f16x2(const sp_f16 *p, __m256 *a, __m256 *b) {
    int32_t bits;
    memcpy(&bits, p, sizeof bits);
    const __m128 f = _mm_cvtph_ps(_mm_cvtsi32_si128(bits));
    *a = _mm256_broadcastss_ps(f);
    *b = _mm256_broadcastss_ps(_mm_movehdup_ps(f));
}

/* d_x * d_w in every lane; the same IEEE product as the scalar y->d * dw. dwv: d_w in every
 * lane (one broadcast per weight block, a broadcast load per row). */
SP__KQ_INLINE __m256 sp__kq_scale(const sp_block_q8_k *y, __m256 dwv) {
    return _mm256_mul_ps(_mm256_broadcast_ss(&y->d), dwv);
}

/* The float step of one Q4_K super-block for one activation row: acc += d * sumi, then
 * acc -= dmin * (lane j: min_j * (bsums[2j] + bsums[2j+1])), each with a single rounding
 * (d = d_x * d_w, dmin = d_x * dmin_w, rounded once). */
SP__KQ_INLINE __m256 sp__kq_q4k_finish(__m256 acc, __m256i sumi, __m256i min_pairs, __m256 dwv,
                                       __m256 dminwv, const sp_block_q8_k *y) {
    const __m256i bsums = _mm256_loadu_si256((const __m256i *)y->bsums);
    const __m256i mins = _mm256_madd_epi16(min_pairs, bsums);
    acc = _mm256_fmadd_ps(sp__kq_scale(y, dwv), _mm256_cvtepi32_ps(sumi), acc);
    return _mm256_fnmadd_ps(sp__kq_scale(y, dminwv), _mm256_cvtepi32_ps(mins), acc);
}

/* The float step of one Q6_K super-block for one activation row: the -32 offset of the quants
 * is taken out of sumi with the bsums (lane j loses 32 * (s[2j] b[2j] + s[2j+1] b[2j+1])), then
 * acc += d * sumi with a single rounding. scales16: the 16 sub-block scales as int16. */
SP__KQ_INLINE __m256 sp__kq_q6k_finish(__m256 acc, __m256i sumi, __m256i scales16, __m256 dwv,
                                       const sp_block_q8_k *y) {
    const __m256i bsums = _mm256_loadu_si256((const __m256i *)y->bsums);
    const __m256i off = _mm256_madd_epi16(scales16, bsums);
    sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(off, 5));
    return _mm256_fmadd_ps(sp__kq_scale(y, dwv), _mm256_cvtepi32_ps(sumi), acc);
}

/* Computes activation rows r0..r0+n-1 (n fixed per function) against one weight row:
 * y[k * ldy] = dot(w_row, row r0 + k). */
typedef void (*sp__kq_rows_fn)(const void *w_row, const void *x, size_t x_row_bytes, int64_t r0,
                               int64_t nb, float *y, int64_t ldy);

/* A matmul (sp_matmul_fn arguments) from per-row-count kernels: rows[n] handles n activation
 * rows (1 <= n <= max_rows), all with the same per-row arithmetic. Weight rows go by tiles of
 * `tile`; within a tile, each full group of max_rows activation rows meets every weight row of
 * the tile while it is hot in L1, then the remaining n_rows % max_rows rows are done as one
 * group. Which group a row falls in depends on n_rows, but not what is computed for it. */
SP__KQ_INLINE void sp__kq_matmul(const sp__kq_rows_fn *rows, int64_t max_rows, int64_t tile,
                                 size_t block_bytes, const void *w, size_t w_row_bytes,
                                 const void *x, size_t x_row_bytes, int64_t n_in, int64_t n_rows,
                                 float *y, int64_t ldy, int64_t o0, int64_t o1) {
    SP_ASSERT(n_in >= 0 && n_in % SP_QK_K == 0 && n_rows >= 0 && o0 >= 0 && o0 <= o1);
    SP_ASSERT(w_row_bytes >= (size_t)(n_in / SP_QK_K) * block_bytes);
    const int64_t nb = n_in / SP_QK_K;
    const int64_t r_full = n_rows - n_rows % max_rows, rest = n_rows - r_full;
    for (int64_t ot = o0; ot < o1; ot += tile) {
        const int64_t ot1 = ot + tile < o1 ? ot + tile : o1;
        for (int64_t r = 0; r < r_full; r += max_rows)
            for (int64_t o = ot; o < ot1; o++)
                rows[max_rows]((const char *)w + (size_t)o * w_row_bytes, x, x_row_bytes, r, nb,
                               y + r * ldy + o, ldy);
        if (rest)
            for (int64_t o = ot; o < ot1; o++)
                rows[rest]((const char *)w + (size_t)o * w_row_bytes, x, x_row_bytes, r_full, nb,
                           y + r_full * ldy + o, ldy);
    }
}

/* Defines `static void name_<n>(...)`, an sp__kq_rows_fn running body(w, x, x_row_bytes, r0,
 * nb, n, y, ldy) with the row count n a constant. */
#define SP__KQ_ROWS_FN(name, body, n)                                                              \
    static void name##_##n(const void *w_row, const void *x, size_t x_row_bytes, int64_t r0,       \
                           int64_t nb, float *y, int64_t ldy) {                                    \
        body(w_row, x, x_row_bytes, r0, nb, n, y, ldy);                                            \
    }
#endif

#endif

/* K-quant kernels for x86-64 (kquants_avx2.c, kquants_avx512.c), internal to src/tensor.
 *
 * sp__kquants_avx2_init() and sp__kquants_avx512_init() (declared in kernels.h) fill the
 * Q4_K and Q6_K entries of a kernel table. Both take Q8_K activation rows and follow the
 * integer-dot-then-float-accumulate scheme of llama.cpp's x86 kernels: per super-block an exact
 * integer sum in 8 lanes (lane l gathers positions p with p % 32 in [4l, 4l + 4)), multiplied by
 * d_w * d_x and accumulated with one fused multiply-add per lane; the Q4_K min correction
 * dmin_w * d_x * (mins * bsums), also in 8 lanes (lane j = sub-block j), is subtracted the
 * same way right after; the 8 lanes are summed last in a fixed tree. The AVX-512 kernels put
 * exactly the same integers in the same lanes, so the two tables give bit-identical results.
 * They differ from sp_vec_dot_ref only by float rounding.
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
    memcpy(u, packed, sizeof u);
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

/* The float step of one Q4_K super-block for one activation row: acc += d * sumi, then
 * acc -= dmin * (lane j: min_j * (bsums[2j] + bsums[2j+1])), each with a single rounding. */
SP__KQ_INLINE __m256 sp__kq_q4k_finish(__m256 acc, __m256i sumi, __m256i min_pairs, float dw,
                                       float dminw, const sp_block_q8_k *y) {
    const __m256i bsums = _mm256_loadu_si256((const __m256i *)y->bsums);
    const __m256i mins = _mm256_madd_epi16(min_pairs, bsums);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(y->d * dw), _mm256_cvtepi32_ps(sumi), acc);
    return _mm256_fnmadd_ps(_mm256_set1_ps(y->d * dminw), _mm256_cvtepi32_ps(mins), acc);
}

/* The float step of one Q6_K super-block for one activation row: the -32 offset of the quants
 * is taken out of sumi with the bsums (lane j loses 32 * (s[2j] b[2j] + s[2j+1] b[2j+1])), then
 * acc += d * sumi with a single rounding. scales16: the 16 sub-block scales as int16. */
SP__KQ_INLINE __m256 sp__kq_q6k_finish(__m256 acc, __m256i sumi, __m256i scales16, float dw,
                                       const sp_block_q8_k *y) {
    const __m256i bsums = _mm256_loadu_si256((const __m256i *)y->bsums);
    const __m256i off = _mm256_madd_epi16(scales16, bsums);
    sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(off, 5));
    return _mm256_fmadd_ps(_mm256_set1_ps(y->d * dw), _mm256_cvtepi32_ps(sumi), acc);
}
#endif

#endif

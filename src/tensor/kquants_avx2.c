/* The Q8_K activation quantizer with AVX2 (+FMA, F16C), for the x86 tables' quantize_act: the
 * activations of K-quant weights (Q4_K, Q5_K, Q6_K), whose products are packed_k*.c's. */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "base/err.h"
#include "tensor/kquants.h"
#include "tensor/quant.h"

// ---------------------------------------------------------------- Q8_K activations

void sp__quantize_q8_k_avx2(const float *x, void *dst, int64_t n) {
    SP_ASSERT(n >= 0 && n % SP_QK_K == 0);
    sp_block_q8_k *y = dst;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t i = 0; i < n / SP_QK_K; i++, x += SP_QK_K) {
        __m256 vmax = _mm256_setzero_ps();
        for (int k = 0; k < SP_QK_K; k += 8)
            vmax = _mm256_max_ps(vmax, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + k)));
        __m128 m = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
        m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        m = _mm_max_ss(m, _mm_movehdup_ps(m));
        const float amax = _mm_cvtss_f32(m);
        if (amax == 0.0f) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        // The reference keeps the first value of largest magnitude, with its sign.
        const __m256 va = _mm256_set1_ps(amax);
        int at = 0;
        for (int k = 0; k < SP_QK_K; k += 8) {
            const __m256 ax = _mm256_andnot_ps(sign, _mm256_loadu_ps(x + k));
            const int hit = _mm256_movemask_ps(_mm256_cmp_ps(ax, va, _CMP_EQ_OQ));
            if (hit) {
                at = k + __builtin_ctz((unsigned)hit);
                break;
            }
        }
        const float iscale = -127.f / x[at];
        const __m256 vs = _mm256_set1_ps(iscale);
        for (int k = 0; k < SP_QK_K; k += 32) {
            __m256i q[4];
            for (int c = 0; c < 4; c++) {
                // Round half to even whatever MXCSR says, as the reference does.
                const __m256 v = _mm256_round_ps(_mm256_mul_ps(vs, _mm256_loadu_ps(x + k + 8 * c)),
                                                 _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                q[c] = _mm256_cvttps_epi32(v);
            }
            // Saturating packs clamp +128 (the far extreme) to 127 as the reference does.
            __m256i b =
                _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
            b = _mm256_permutevar8x32_epi32(b, order);
            _mm256_storeu_si256((__m256i *)(y[i].qs + k), b);
            // Sums of 8 bytes each, biased by 8 * 128.
            const __m256i s = _mm256_sad_epu8(_mm256_xor_si256(b, flip), _mm256_setzero_si256());
            y[i].bsums[k / 16] =
                (int16_t)(_mm256_extract_epi64(s, 0) + _mm256_extract_epi64(s, 1) - 2048);
            y[i].bsums[k / 16 + 1] =
                (int16_t)(_mm256_extract_epi64(s, 2) + _mm256_extract_epi64(s, 3) - 2048);
        }
        y[i].d = 1 / iscale;
    }
}

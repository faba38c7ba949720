/* Q4_K and Q6_K weights times Q8_K activations with AVX2 (+FMA, F16C), and the Q8_K activation
 * quantizer. The arithmetic, shared with kquants_avx512.c, is described in kquants.h.
 *
 * q4k_rows/q6k_rows take one weight row against ROWS activation rows at a time, unpacking each
 * weight super-block once for all of them and keeping one integer and one float accumulator
 * per row in registers; sp__kq_matmul walks tiles of weight rows and groups of activation
 * rows. The leftover rows (n_rows % ROWS) run the same code instantiated for fewer rows, so
 * every output gets the same operations in the same order whatever n_rows and [o0, o1) are
 * (the invariance contract of kernels.h). */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "base/err.h"
#include "tensor/kernels.h"
#include "tensor/kquants.h"
#include "tensor/quant.h"

enum { ROWS = 4 }; // activation rows per register block
enum { TILE = 8 }; // weight rows per tile (see sp__kq_matmul)

/* Row r's super-block i of the Q8_K activations. */
#define X_BLOCK(x, x_row_bytes, r, i)                                                              \
    ((const sp_block_q8_k *)((const char *)(x) + (size_t)(r) * (x_row_bytes)) + (i))

// ---------------------------------------------------------------- Q4_K

/* y[k * ldy] = dot(w, activation row r0 + k) for k < nr (a constant after inlining). */
SP__KQ_INLINE void q4k_rows(const sp_block_q4_k *w, const void *x, size_t x_row_bytes, int64_t r0,
                            int64_t nb, int nr, float *y, int64_t ldy) {
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    __m256 acc[ROWS];
#pragma GCC unroll 4
    for (int k = 0; k < nr; k++)
        acc[k] = _mm256_setzero_ps();

    for (int64_t i = 0; i < nb; i++) {
        uint64_t sc, mn;
        sp__kq_q4k_scales(w[i].scales, &sc, &mn);
        // Scales as int16, repeated in both 128-bit halves for the in-lane byte shuffles.
        const __m256i sc16 =
            _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)sc)));
        const __m256i min_pairs = sp__kq_q4k_min_pairs(mn);

        __m256i sumi[ROWS];
#pragma GCC unroll 4
        for (int k = 0; k < nr; k++)
            sumi[k] = _mm256_setzero_si256();

#pragma GCC unroll 4
        // 64 values at a time: sub-block 2j in the low nibbles of qs[32j..32j+31], 2j+1 in the
        // high ones.
        for (int j = 0; j < SP_QK_K / 64; j++) {
            const __m256i bits = _mm256_loadu_si256((const __m256i *)(w[i].qs + 32 * j));
            const __m256i lo = _mm256_and_si256(bits, m4);
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
            const __m256i sl =
                _mm256_shuffle_epi8(sc16, _mm256_set1_epi16((short)(0x0202 * (2 * j) + 0x0100)));
            const __m256i sh = _mm256_shuffle_epi8(
                sc16, _mm256_set1_epi16((short)(0x0202 * (2 * j + 1) + 0x0100)));
#pragma GCC unroll 4
            for (int k = 0; k < nr; k++) {
                const int8_t *q8 = X_BLOCK(x, x_row_bytes, r0 + k, i)->qs + 64 * j;
                const __m256i pl = _mm256_madd_epi16(
                    sl, _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)q8)));
                const __m256i ph = _mm256_madd_epi16(
                    sh, _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(q8 + 32))));
                sumi[k] = _mm256_add_epi32(sumi[k], _mm256_add_epi32(pl, ph));
            }
        }

        __m256 dwv, dminwv;
        sp__kq_f16x2(&w[i].d, &dwv, &dminwv); // d, then dmin
#pragma GCC unroll 4
        for (int k = 0; k < nr; k++)
            acc[k] = sp__kq_q4k_finish(acc[k], sumi[k], min_pairs, dwv, dminwv,
                                       X_BLOCK(x, x_row_bytes, r0 + k, i));
    }
#pragma GCC unroll 4
    for (int k = 0; k < nr; k++)
        y[k * ldy] = sp__kq_hsum8(acc[k]);
}

SP__KQ_ROWS_FN(q4k_rows, q4k_rows, 1)
SP__KQ_ROWS_FN(q4k_rows, q4k_rows, 2)
SP__KQ_ROWS_FN(q4k_rows, q4k_rows, 3)
SP__KQ_ROWS_FN(q4k_rows, q4k_rows, 4)
static const sp__kq_rows_fn q4k_by_rows[ROWS + 1] = {NULL, q4k_rows_1, q4k_rows_2, q4k_rows_3,
                                                     q4k_rows_4};

static void matmul_q4_k(const void *w, size_t w_row_bytes, const void *x, size_t x_row_bytes,
                        int64_t n_in, int64_t n_rows, float *y, int64_t ldy, int64_t o0,
                        int64_t o1) {
    sp__kq_matmul(q4k_by_rows, ROWS, TILE, sizeof(sp_block_q4_k), w, w_row_bytes, x, x_row_bytes,
                  n_in, n_rows, y, ldy, o0, o1);
}

// ---------------------------------------------------------------- Q6_K

/* y[k * ldy] = dot(w, activation row r0 + k) for k < nr (a constant after inlining). */
SP__KQ_INLINE void q6k_rows(const sp_block_q6_k *w, const void *x, size_t x_row_bytes, int64_t r0,
                            int64_t nb, int nr, float *y, int64_t ldy) {
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    __m256 acc[ROWS];
#pragma GCC unroll 4
    for (int k = 0; k < nr; k++)
        acc[k] = _mm256_setzero_ps();

    for (int64_t i = 0; i < nb; i++) {
        const __m256i scales16 =
            _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)w[i].scales));
        __m256i sumi[ROWS];
#pragma GCC unroll 4
        for (int k = 0; k < nr; k++)
            sumi[k] = _mm256_setzero_si256();

#pragma GCC unroll 2
        // Half h holds values 128h..128h+127 in ql[64h..64h+63] and qh[32h..32h+31]; quarter
        // q (32 values) takes the low (q < 2) or high nibbles of ql[64h + 32(q & 1)..] and bits
        // 2q, 2q+1 of qh. Values are stored as q + 32 in 0..63.
        for (int h = 0; h < 2; h++) {
            const __m256i ql0 = _mm256_loadu_si256((const __m256i *)(w[i].ql + 64 * h));
            const __m256i ql1 = _mm256_loadu_si256((const __m256i *)(w[i].ql + 64 * h + 32));
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(w[i].qh + 32 * h));
            // The scales of sub-blocks 8h..8h+7 as int16, in both 128-bit halves.
            const __m256i sc8 = h ? _mm256_permute2x128_si256(scales16, scales16, 0x11)
                                  : _mm256_permute2x128_si256(scales16, scales16, 0x00);
#pragma GCC unroll 4
            for (int q = 0; q < 4; q++) {
                const __m256i lo4 = (q & 1) ? ql1 : ql0;
                const __m256i nib = _mm256_and_si256(q < 2 ? lo4 : _mm256_srli_epi16(lo4, 4), m4);
                // Bits 2q, 2q+1 of qh moved to bits 4, 5 (16-bit shifts: the mask comes first
                // where bits would cross into the next byte).
                const __m256i bits = _mm256_and_si256(qh, _mm256_set1_epi8((char)(3 << (2 * q))));
                const __m256i top = q < 2    ? _mm256_slli_epi16(bits, 4 - 2 * q)
                                    : q == 2 ? bits
                                             : _mm256_srli_epi16(bits, 2);
                const __m256i qv = _mm256_or_si256(nib, top);
                // Sub-block 8h + 2q for int16 lanes 0-7, 8h + 2q + 1 for lanes 8-15.
                const __m256i scv = _mm256_shuffle_epi8(
                    sc8, _mm256_setr_epi16(
                             (short)(0x0202 * (2 * q) + 0x0100), (short)(0x0202 * (2 * q) + 0x0100),
                             (short)(0x0202 * (2 * q) + 0x0100), (short)(0x0202 * (2 * q) + 0x0100),
                             (short)(0x0202 * (2 * q) + 0x0100), (short)(0x0202 * (2 * q) + 0x0100),
                             (short)(0x0202 * (2 * q) + 0x0100), (short)(0x0202 * (2 * q) + 0x0100),
                             (short)(0x0202 * (2 * q + 1) + 0x0100),
                             (short)(0x0202 * (2 * q + 1) + 0x0100),
                             (short)(0x0202 * (2 * q + 1) + 0x0100),
                             (short)(0x0202 * (2 * q + 1) + 0x0100),
                             (short)(0x0202 * (2 * q + 1) + 0x0100),
                             (short)(0x0202 * (2 * q + 1) + 0x0100),
                             (short)(0x0202 * (2 * q + 1) + 0x0100),
                             (short)(0x0202 * (2 * q + 1) + 0x0100)));
#pragma GCC unroll 4
                for (int k = 0; k < nr; k++) {
                    const int8_t *q8 = X_BLOCK(x, x_row_bytes, r0 + k, i)->qs + 128 * h + 32 * q;
                    const __m256i p = _mm256_madd_epi16(
                        scv, _mm256_maddubs_epi16(qv, _mm256_loadu_si256((const __m256i *)q8)));
                    sumi[k] = _mm256_add_epi32(sumi[k], p);
                }
            }
        }

        const __m256 dwv = _mm256_set1_ps(_cvtsh_ss(w[i].d));
#pragma GCC unroll 4
        for (int k = 0; k < nr; k++)
            acc[k] = sp__kq_q6k_finish(acc[k], sumi[k], scales16, dwv,
                                       X_BLOCK(x, x_row_bytes, r0 + k, i));
    }
#pragma GCC unroll 4
    for (int k = 0; k < nr; k++)
        y[k * ldy] = sp__kq_hsum8(acc[k]);
}

SP__KQ_ROWS_FN(q6k_rows, q6k_rows, 1)
SP__KQ_ROWS_FN(q6k_rows, q6k_rows, 2)
SP__KQ_ROWS_FN(q6k_rows, q6k_rows, 3)
SP__KQ_ROWS_FN(q6k_rows, q6k_rows, 4)
static const sp__kq_rows_fn q6k_by_rows[ROWS + 1] = {NULL, q6k_rows_1, q6k_rows_2, q6k_rows_3,
                                                     q6k_rows_4};

static void matmul_q6_k(const void *w, size_t w_row_bytes, const void *x, size_t x_row_bytes,
                        int64_t n_in, int64_t n_rows, float *y, int64_t ldy, int64_t o0,
                        int64_t o1) {
    sp__kq_matmul(q6k_by_rows, ROWS, TILE, sizeof(sp_block_q6_k), w, w_row_bytes, x, x_row_bytes,
                  n_in, n_rows, y, ldy, o0, o1);
}

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

void sp__kquants_avx2_init(sp_kernels *k) {
    k->matmul[SP_DTYPE_Q4_K] = matmul_q4_k;
    k->matmul[SP_DTYPE_Q6_K] = matmul_q6_k;
}

/* Q4_K and Q6_K weights times Q8_K activations with AVX-512 (F, BW, VL, VNNI).
 *
 * Same blocking as kquants_avx2.c, with 64 values per register: a weight super-block is
 * unpacked once per group of ROWS activation rows, and each 64-value slice costs one
 * vpmaddubsw (4-bit or 6-bit unsigned quants times signed activations, exact in int16) and one
 * vpdpwssd (times the sub-block scales, accumulated in int32) per row. The 16 int32 lanes are
 * folded to 8 (lane l + lane l + 8) so that every lane holds exactly the integer the AVX2
 * kernel holds there, and the float steps are the shared ones of kquants.h: results are
 * bit-identical to the AVX2 kernels, and invariant in n_rows and [o0, o1). */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "base/err.h"
#include "tensor/kernels.h"
#include "tensor/kquants.h"
#include "tensor/quant.h"

enum { ROWS = 8 }; // activation rows per register block
enum { TILE = 8 }; // weight rows per tile (see sp__kq_matmul)

#define X_BLOCK(x, x_row_bytes, r, i)                                                              \
    ((const sp_block_q8_k *)((const char *)(x) + (size_t)(r) * (x_row_bytes)) + (i))

/* The 8 int32 lanes an AVX2 kernel would hold: lane l plus lane l + 8. */
SP__KQ_INLINE __m256i fold16(__m512i v) {
    return _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
}

/* 32 bytes in the low half and the same bytes shifted right by `shift` bits (per 16-bit lane)
 * in the high half. */
SP__KQ_INLINE __m512i dup_shift_hi(const uint8_t *p, unsigned shift) {
    const __m512i v = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_mask_srli_epi16(v, (__mmask32)0xffff0000u, v, shift);
}

// ---------------------------------------------------------------- Q4_K

SP__KQ_INLINE void q4k_rows(const sp_block_q4_k *w, const void *x, size_t x_row_bytes, int64_t r0,
                            int64_t nb, int nr, float *y, int64_t ldy) {
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    // Slice j: int16 lanes 0-15 (128-bit lanes 0, 1) take the scale of sub-block 2j, lanes
    // 16-31 that of 2j + 1; the 8 scales sit in every 128-bit lane of sc16.
    __m512i pick[SP_QK_K / 64];
    for (int j = 0; j < SP_QK_K / 64; j++) {
        const short a = (short)(0x0202 * (2 * j) + 0x0100), b = (short)(a + 0x0202);
        pick[j] = _mm512_set_epi16(b, b, b, b, b, b, b, b, b, b, b, b, b, b, b, b, a, a, a, a, a, a,
                                   a, a, a, a, a, a, a, a, a, a);
    }
    __m256 acc[ROWS];
#pragma GCC unroll 8
    for (int k = 0; k < nr; k++)
        acc[k] = _mm256_setzero_ps();

    for (int64_t i = 0; i < nb; i++) {
        uint64_t sc, mn;
        sp__kq_q4k_scales(w[i].scales, &sc, &mn);
        const __m512i sc16 =
            _mm512_broadcast_i32x4(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)sc)));
        const __m256i min_pairs = sp__kq_q4k_min_pairs(mn);

        __m512i sumi[ROWS];
#pragma GCC unroll 8
        for (int k = 0; k < nr; k++)
            sumi[k] = _mm512_setzero_si512();

#pragma GCC unroll 8
        // Slice j: sub-block 2j (low nibbles of qs[32j..]) then 2j + 1 (high nibbles), which
        // is also the order of activations 64j..64j+63.
        for (int j = 0; j < SP_QK_K / 64; j++) {
            const __m512i qv = _mm512_and_si512(dup_shift_hi(w[i].qs + 32 * j, 4), m4);
            const __m512i scv = _mm512_shuffle_epi8(sc16, pick[j]);
#pragma GCC unroll 8
            for (int k = 0; k < nr; k++) {
                const int8_t *q8 = X_BLOCK(x, x_row_bytes, r0 + k, i)->qs + 64 * j;
                const __m512i p = _mm512_maddubs_epi16(qv, _mm512_loadu_si512(q8));
                sumi[k] = _mm512_dpwssd_epi32(sumi[k], scv, p);
            }
        }

        __m256 dwv, dminwv;
        sp__kq_f16x2(&w[i].d, &dwv, &dminwv); // d, then dmin
#pragma GCC unroll 8
        for (int k = 0; k < nr; k++)
            acc[k] = sp__kq_q4k_finish(acc[k], fold16(sumi[k]), min_pairs, dwv, dminwv,
                                       X_BLOCK(x, x_row_bytes, r0 + k, i));
    }
#pragma GCC unroll 8
    for (int k = 0; k < nr; k++)
        y[k * ldy] = sp__kq_hsum8(acc[k]);
}

SP__KQ_ROWS_FN(q4k_rows, q4k_rows, 1)
SP__KQ_ROWS_FN(q4k_rows, q4k_rows, 2)
SP__KQ_ROWS_FN(q4k_rows, q4k_rows, 3)
SP__KQ_ROWS_FN(q4k_rows, q4k_rows, 4)
SP__KQ_ROWS_FN(q4k_rows, q4k_rows, 5)
SP__KQ_ROWS_FN(q4k_rows, q4k_rows, 6)
SP__KQ_ROWS_FN(q4k_rows, q4k_rows, 7)
SP__KQ_ROWS_FN(q4k_rows, q4k_rows, 8)
static const sp__kq_rows_fn q4k_by_rows[ROWS + 1] = {NULL,       q4k_rows_1, q4k_rows_2,
                                                     q4k_rows_3, q4k_rows_4, q4k_rows_5,
                                                     q4k_rows_6, q4k_rows_7, q4k_rows_8};

static void matmul_q4_k(const void *w, size_t w_row_bytes, const void *x, size_t x_row_bytes,
                        int64_t n_in, int64_t n_rows, float *y, int64_t ldy, int64_t o0,
                        int64_t o1) {
    sp__kq_matmul(q4k_by_rows, ROWS, TILE, sizeof(sp_block_q4_k), w, w_row_bytes, x, x_row_bytes,
                  n_in, n_rows, y, ldy, o0, o1);
}

// ---------------------------------------------------------------- Q6_K

SP__KQ_INLINE void q6k_rows(const sp_block_q6_k *w, const void *x, size_t x_row_bytes, int64_t r0,
                            int64_t nb, int nr, float *y, int64_t ldy) {
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    const __m512i m3 = _mm512_set1_epi8(0x03);
    const __m512i m30 = _mm512_set1_epi8(0x30);
    // Slice s (values 64s..64s+63): 128-bit lane L takes the scale of sub-block 4s + L, int16
    // number 4(s & 1) + L of the 8 scales broadcast from sub-block 8(s >> 1) on.
    __m512i pick[2];
    for (int p = 0; p < 2; p++) {
        short c[4];
        for (int l = 0; l < 4; l++)
            c[l] = (short)(0x0202 * (4 * p + l) + 0x0100);
        pick[p] = _mm512_set_epi16(c[3], c[3], c[3], c[3], c[3], c[3], c[3], c[3], c[2], c[2], c[2],
                                   c[2], c[2], c[2], c[2], c[2], c[1], c[1], c[1], c[1], c[1], c[1],
                                   c[1], c[1], c[0], c[0], c[0], c[0], c[0], c[0], c[0], c[0]);
    }
    __m256 acc[ROWS];
#pragma GCC unroll 8
    for (int k = 0; k < nr; k++)
        acc[k] = _mm256_setzero_ps();

    for (int64_t i = 0; i < nb; i++) {
        const __m128i scales = _mm_loadu_si128((const __m128i *)w[i].scales);
        const __m256i scales16 = _mm256_cvtepi8_epi16(scales);
        const __m512i sc16[2] = {_mm512_broadcast_i32x4(_mm256_castsi256_si128(scales16)),
                                 _mm512_broadcast_i32x4(_mm256_extracti128_si256(scales16, 1))};
        __m512i sumi[ROWS];
#pragma GCC unroll 8
        for (int k = 0; k < nr; k++)
            sumi[k] = _mm512_setzero_si512();

#pragma GCC unroll 2
        // Half h: values 128h..128h+63 are the low nibbles of ql[64h..64h+63] with qh bits 0-1
        // (first 32) and 2-3 (next 32); values 128h+64..128h+127 the high nibbles with bits
        // 4-5 and 6-7. The high half of `hb` is qh shifted right by 2, so one mask serves both.
        for (int h = 0; h < 2; h++) {
            const __m512i ql = _mm512_loadu_si512(w[i].ql + 64 * h);
            const __m512i hb = dup_shift_hi(w[i].qh + 32 * h, 2);
            const __m512i q_lo = _mm512_or_si512(_mm512_and_si512(ql, m4),
                                                 _mm512_slli_epi16(_mm512_and_si512(hb, m3), 4));
            const __m512i q_hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                                 _mm512_and_si512(hb, m30));
#pragma GCC unroll 2
            for (int part = 0; part < 2; part++) {
                const __m512i qv = part ? q_hi : q_lo;
                const __m512i scv = _mm512_shuffle_epi8(sc16[h], pick[part]);
#pragma GCC unroll 8
                for (int k = 0; k < nr; k++) {
                    const int8_t *q8 = X_BLOCK(x, x_row_bytes, r0 + k, i)->qs + 128 * h + 64 * part;
                    const __m512i p = _mm512_maddubs_epi16(qv, _mm512_loadu_si512(q8));
                    sumi[k] = _mm512_dpwssd_epi32(sumi[k], scv, p);
                }
            }
        }

        const __m256 dwv = _mm256_set1_ps(_cvtsh_ss(w[i].d));
#pragma GCC unroll 8
        for (int k = 0; k < nr; k++)
            acc[k] = sp__kq_q6k_finish(acc[k], fold16(sumi[k]), scales16, dwv,
                                       X_BLOCK(x, x_row_bytes, r0 + k, i));
    }
#pragma GCC unroll 8
    for (int k = 0; k < nr; k++)
        y[k * ldy] = sp__kq_hsum8(acc[k]);
}

SP__KQ_ROWS_FN(q6k_rows, q6k_rows, 1)
SP__KQ_ROWS_FN(q6k_rows, q6k_rows, 2)
SP__KQ_ROWS_FN(q6k_rows, q6k_rows, 3)
SP__KQ_ROWS_FN(q6k_rows, q6k_rows, 4)
SP__KQ_ROWS_FN(q6k_rows, q6k_rows, 5)
SP__KQ_ROWS_FN(q6k_rows, q6k_rows, 6)
SP__KQ_ROWS_FN(q6k_rows, q6k_rows, 7)
SP__KQ_ROWS_FN(q6k_rows, q6k_rows, 8)
static const sp__kq_rows_fn q6k_by_rows[ROWS + 1] = {NULL,       q6k_rows_1, q6k_rows_2,
                                                     q6k_rows_3, q6k_rows_4, q6k_rows_5,
                                                     q6k_rows_6, q6k_rows_7, q6k_rows_8};

static void matmul_q6_k(const void *w, size_t w_row_bytes, const void *x, size_t x_row_bytes,
                        int64_t n_in, int64_t n_rows, float *y, int64_t ldy, int64_t o0,
                        int64_t o1) {
    sp__kq_matmul(q6k_by_rows, ROWS, TILE, sizeof(sp_block_q6_k), w, w_row_bytes, x, x_row_bytes,
                  n_in, n_rows, y, ldy, o0, o1);
}

void sp__kquants_avx512_init(sp_kernels *k) {
    k->matmul[SP_DTYPE_Q4_K] = matmul_q4_k;
    k->matmul[SP_DTYPE_Q6_K] = matmul_q6_k;
}

/* Packed Q8_0 and Q4_0 (layouts and numerics in packed.h) on AVX2: the avx2 and avxvnni tables'
 * products of those weights, the same bits as the avx512 and amx tables'.
 *
 * Row k4 of a packed block holds the 16 outputs' weights at 4 k4 .. 4 k4 + 3: as two vectors of
 * 8 outputs, so every lane is an output and nothing is summed across lanes. AVX2 has no signed
 * byte product: vpmaddubsw multiplies |w| (unsigned, 0..128) by the activation with w's sign
 * (activations lie in [-127, 127], so negating them is exact), each pair of products at most
 * 2 x 128 x 127 = 32512 (no saturation), and vpmaddwd with ones adds the pairs into the exact
 * int32 sum of 4 products per output; 8 of those make the block's S. With AVX-VNNI (the avxvnni
 * table) one vpdpbusd does the 4 products instead, with the bias trick of packed_avx512.c (the
 * activations go in as x ^ 0x80 and 128 times each output's weight sum comes off again). Then
 * the float step of packed.h. Two activation rows share each weight load. */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "base/err.h"
#include "base/util.h"
#include "tensor/packed.h"

enum {
    MAX_MR = 2, // rows per register block
    K_Q4 = 1,   // kind bits: Q4_0 weights (else Q8_0)
    K_VNNI = 2, //            AVX-VNNI products
};

/* acc + the 8 sums of 4 products of unsigned bytes u by signed bytes s (vpdpbusd in its VEX
 * encoding: the file is compiled for AVX2 only, and the avxvnni table runs only where the CPU
 * has AVX-VNNI). */
SP_PK_INLINE __m256i dpbusd_vex(__m256i acc, __m256i u, __m256i s) {
    __asm__("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(u), "x"(s));
    return acc;
}

/* The 8 tile rows of a packed Q4_0 block as int8 weights q - 8, two halves of 8 outputs each:
 * row k4's half h at row[2 k4 + h]. */
SP_PK_INLINE void q4_rows(const uint8_t *nib, __m256i row[16]) {
    const __m256i mask = _mm256_set1_epi8(15), eight = _mm256_set1_epi8(8);
#pragma GCC unroll 4
    for (int p = 0; p < 4; p++) {
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)(nib + 64 * p + 32 * h));
            row[2 * p + h] = _mm256_sub_epi8(_mm256_and_si256(v, mask), eight);
            row[2 * (p + 4) + h] =
                _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16(v, 4), mask), eight);
        }
    }
}

/* Lanes i of half h with bit 8 h + i of keep set. */
SP_PK_INLINE __m256i lanes_of(uint32_t keep, int h) {
    const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256i k = _mm256_set1_epi32((int)((keep >> (8 * h)) & 0xff));
    return _mm256_cmpeq_epi32(_mm256_and_si256(k, bit), bit);
}

/* Rows [m0, m0 + MR) of slice xs times one packed group over nb blocks; y: row m0 at the group's
 * first output. */
SP_PK_INLINE void rows_avx2(const int kind, const int MR, const uint8_t *ints, const sp_f16 *scales,
                            sp__pk_slice xs, int m0, int64_t nb, float *y, int64_t ldy,
                            uint32_t keep) {
    const int Q4 = kind & K_Q4, VNNI = kind & K_VNNI;
    const size_t BB = sp__pk_block_bytes(Q4);
    const __m256i ones = _mm256_set1_epi16(1), ones8 = _mm256_set1_epi8(1);
    const __m256i bias = _mm256_set1_epi32((int)0x80808080u);
    __m256 acc[MAX_MR][2];
#pragma GCC unroll 2
    for (int m = 0; m < MR; m++)
        acc[m][0] = acc[m][1] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *t = ints + (size_t)b * BB;
        const int8_t *a = xs.ints + ((size_t)b * (size_t)xs.rows + (size_t)m0) * SP_QK8_0;
#pragma GCC unroll 8
        for (size_t l = 0; l < BB / 64; l++)
            _mm_prefetch((const char *)t + SP_PK_PREFETCH_AHEAD * BB + 64 * l, _MM_HINT_T0);
        __m256i rows[16];
        if (Q4)
            q4_rows(t, rows);
        __m256i s[MAX_MR][2], wsum[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
#pragma GCC unroll 2
        for (int m = 0; m < MR; m++)
            s[m][0] = s[m][1] = _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int k4 = 0; k4 < SP_QK8_0 / 4; k4++) {
            __m256i xb[MAX_MR];
#pragma GCC unroll 2
            for (int m = 0; m < MR; m++) {
                int32_t x4;
                memcpy(&x4, a + m * SP_QK8_0 + 4 * k4, 4);
                xb[m] = _mm256_set1_epi32(x4);
                if (VNNI)
                    xb[m] = _mm256_xor_si256(xb[m], bias);
            }
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                const __m256i w = Q4 ? rows[2 * k4 + h]
                                     : _mm256_loadu_si256((const __m256i *)(t + 64 * k4 + 32 * h));
                if (VNNI) {
                    wsum[h] = dpbusd_vex(wsum[h], ones8, w);
#pragma GCC unroll 2
                    for (int m = 0; m < MR; m++)
                        s[m][h] = dpbusd_vex(s[m][h], xb[m], w);
                    continue;
                }
                const __m256i aw = _mm256_abs_epi8(w);
#pragma GCC unroll 2
                for (int m = 0; m < MR; m++) {
                    const __m256i p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(xb[m], w));
                    s[m][h] = _mm256_add_epi32(s[m][h], _mm256_madd_epi16(p, ones));
                }
            }
        }
        const float *dx = xs.scales + b * xs.rows + m0;
        if (VNNI) {
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                const __m256i off = _mm256_slli_epi32(wsum[h], 7);
#pragma GCC unroll 2
                for (int m = 0; m < MR; m++)
                    s[m][h] = _mm256_sub_epi32(s[m][h], off);
            }
        }
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            const __m256 dw = _mm256_cvtph_ps(
                _mm_loadu_si128((const __m128i *)(scales + b * SP_PK_GROUP + 8 * h)));
#pragma GCC unroll 2
            for (int m = 0; m < MR; m++)
                acc[m][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[m][h]),
                                            _mm256_mul_ps(dw, _mm256_set1_ps(dx[m])), acc[m][h]);
        }
    }
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        const __m256i lanes = lanes_of(keep, h);
#pragma GCC unroll 2
        for (int m = 0; m < MR; m++)
            _mm256_maskstore_ps(y + m * ldy + 8 * h, lanes, acc[m][h]);
    }
}

SP_PK_INLINE void group_avx2(const int kind, const uint8_t *ints, const sp_f16 *scales,
                             sp__pk_slice xs, int64_t nb, float *y, int64_t ldy, uint32_t keep) {
    int m0 = 0;
    for (; m0 + 2 <= xs.rows; m0 += 2)
        rows_avx2(kind, 2, ints, scales, xs, m0, nb, y + m0 * ldy, ldy, keep);
    if (m0 < xs.rows)
        rows_avx2(kind, 1, ints, scales, xs, m0, nb, y + m0 * ldy, ldy, keep);
}

SP_PK_INLINE void pk_slice(const sp__pk_slice *xs, int *state) {
    (void)xs, (void)state;
}

SP_PK_INLINE void pk_group(const int kind, const uint8_t *ints, const sp_f16 *scales,
                           sp__pk_slice xs, int64_t nb, float *y, int64_t ldy, uint32_t keep) {
    group_avx2(kind, ints, scales, xs, nb, y, ldy, keep);
}

SP_PK_INLINE void pk_done(int state) {
    (void)state;
}

#include "tensor/packed_walk.h"

SP_PK_MATMUL_ENTRY(matmul_q8_0_vnni, K_VNNI)
SP_PK_MATMUL_ENTRY(matmul_q4_0_vnni, K_VNNI | K_Q4)

void sp__packed_avxvnni_init(sp_kernels *k) {
    k->matmul_packed[SP_DTYPE_Q8_0] = matmul_q8_0_vnni;
    k->matmul_packed[SP_DTYPE_Q4_0] = matmul_q4_0_vnni;
}

void sp__packed_avx2_init(sp_kernels *k) {
    sp__pk_set_layouts(k);
    k->matmul_packed[SP_DTYPE_Q8_0] = sp__pk_matmul_q8_0;
    k->matmul_packed[SP_DTYPE_Q4_0] = sp__pk_matmul_q4_0;
}

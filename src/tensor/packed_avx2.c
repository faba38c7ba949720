/* Packed Q8_0 and Q4_0 (layouts and numerics in packed.h) on AVX2: the avx2 and avxvnni tables'
 * products of those weights, the same bits as the avx512 and amx tables'.
 *
 * Row k4 of a packed block holds the 16 outputs' weights at 4 k4 .. 4 k4 + 3: as two vectors of
 * 8 outputs, so every lane is an output and nothing is summed across lanes. The weights are
 * unsigned, the activations signed, as vpmaddubsw and vpdpbusd take them:
 *  - Q4_0 (q in 0..15): vpmaddubsw of q by a row's 4 activations broadcast gives pairs of
 *    products, added in int16 over the whole block (16 products of at most 15 x 127 per lane:
 *    |sum| <= 30480, exact), then one vpmaddwd with ones per block makes the int32 dot U.
 *  - Q8_0, stored signed on this table (w + 128 would saturate vpmaddubsw's pairs): vpmaddubsw
 *    multiplies |w| by the activation with w's sign (activations lie in [-127, 127], so negating
 *    them is exact), each pair at most 2 x 128 x 127 = 32512; vpmaddwd with ones adds the pairs
 *    into int32. That is the exact S itself, with no offset to take off.
 *  - With AVX-VNNI (the avxvnni table, whose Q8_0 weights are stored unsigned, w + 128), one
 *    vpdpbusd does 4 products of either type's unsigned weights, into U.
 * S = U - sum(x) bias where a U was made (the offsets of packed.h), then the float step of
 * packed.h. Two activation rows share each weight load. */
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

/* Tile row k4 (0..7), half h (outputs 8 h .. 8 h + 7) of a packed block: the weights as stored
 * (Q4_0: the 4-bit values q). */
SP_PK_INLINE __m256i weights(const int Q4, const uint8_t *t, int k4, int h) {
    if (!Q4)
        return _mm256_loadu_si256((const __m256i *)(t + 64 * k4 + 32 * h));
    const __m256i v = _mm256_loadu_si256((const __m256i *)(t + 64 * (k4 % 4) + 32 * h));
    return _mm256_and_si256(k4 < 4 ? v : _mm256_srli_epi16(v, 4), _mm256_set1_epi8(15));
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
    const int Q4 = kind & K_Q4, VNNI = kind & K_VNNI, offset = Q4 || VNNI;
    const size_t BB = sp__pk_block_bytes(Q4);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[MAX_MR][2];
#pragma GCC unroll 2
    for (int m = 0; m < MR; m++)
        acc[m][0] = acc[m][1] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *t = ints + (size_t)b * BB;
        const size_t at = (size_t)b * (size_t)xs.rows + (size_t)m0;
        const int8_t *a = xs.ints + at * SP_QK8_0;
#pragma GCC unroll 8
        for (size_t l = 0; l < BB / 64; l++)
            _mm_prefetch((const char *)t + SP_PK_PREFETCH_AHEAD * BB + 64 * l, _MM_HINT_T0);
        // s: int32 sums (Q8_0 on AVX2, or VNNI), or int16 pair sums (Q4_0 on AVX2).
        __m256i s[MAX_MR][2];
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
            }
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                const __m256i w = weights(Q4, t, k4, h);
                if (VNNI) {
#pragma GCC unroll 2
                    for (int m = 0; m < MR; m++)
                        s[m][h] = dpbusd_vex(s[m][h], w, xb[m]);
                } else if (Q4) {
#pragma GCC unroll 2
                    for (int m = 0; m < MR; m++)
                        s[m][h] = _mm256_add_epi16(s[m][h], _mm256_maddubs_epi16(w, xb[m]));
                } else {
                    const __m256i aw = _mm256_abs_epi8(w);
#pragma GCC unroll 2
                    for (int m = 0; m < MR; m++) {
                        const __m256i p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(xb[m], w));
                        s[m][h] = _mm256_add_epi32(s[m][h], _mm256_madd_epi16(p, ones));
                    }
                }
            }
        }
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            const __m256 dw = _mm256_cvtph_ps(
                _mm_loadu_si128((const __m128i *)(scales + b * SP_PK_GROUP + 8 * h)));
#pragma GCC unroll 2
            for (int m = 0; m < MR; m++) {
                __m256i si = s[m][h];
                if (Q4 && !VNNI)
                    si = _mm256_madd_epi16(si, ones);
                if (offset)
                    si = _mm256_add_epi32(si, _mm256_set1_epi32(xs.off[Q4 != 0][at + m]));
                acc[m][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(si),
                                            _mm256_mul_ps(dw, _mm256_set1_ps(xs.scales[at + m])),
                                            acc[m][h]);
            }
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
    sp__pk_set_layouts(k, 1);
    k->matmul_packed[SP_DTYPE_Q8_0] = matmul_q8_0_vnni;
    k->matmul_packed[SP_DTYPE_Q4_0] = matmul_q4_0_vnni;
}

void sp__packed_avx2_init(sp_kernels *k) {
    sp__pk_set_layouts(k, 0);
    k->matmul_packed[SP_DTYPE_Q8_0] = sp__pk_matmul_q8_0;
    k->matmul_packed[SP_DTYPE_Q4_0] = sp__pk_matmul_q4_0;
}

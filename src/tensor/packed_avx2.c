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
    MAX_MR = 8,     // rows per register block
    MAX_REG_MR = 2, // rows whose float accumulators stay in registers
    K_Q4 = 1,       // kind bits: Q4_0 weights (else Q8_0)
    K_VNNI = 2,     //            AVX-VNNI products
};

/* acc + the 8 sums of 4 products of unsigned bytes u by signed bytes s (vpdpbusd in its VEX
 * encoding: the file is compiled for AVX2 only, and the avxvnni table runs only where the CPU
 * has AVX-VNNI). */
SP_PK_INLINE __m256i dpbusd_vex(__m256i acc, __m256i u, __m256i s) {
    __asm__("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(u), "x"(s));
    return acc;
}

/* Lanes i of half h with bit 8 h + i of keep set. */
SP_PK_INLINE __m256i lanes_of(uint32_t keep, int h) {
    const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256i k = _mm256_set1_epi32((int)((keep >> (8 * h)) & 0xff));
    return _mm256_cmpeq_epi32(_mm256_and_si256(k, bit), bit);
}

/* Rows [m0, m0 + MR) of slice xs times one packed group over nb blocks; y: row m0 at the group's
 * first output. Up to 2 rows keep their float accumulators in registers; more keep them in a
 * buffer in L1, which costs loads and stores but no vector instruction, while each weight load
 * and Q4_0 unpacking serves more rows: up to 4 rows take both halves of the group at once, up to
 * 8 one half at a time (the sums and the weights fill the 16 registers either way). */
SP_PK_INLINE void rows_avx2(const int kind, const int MR, const uint8_t *ints, const sp_f16 *scales,
                            sp__pk_slice xs, int m0, int64_t nb, float *y, int64_t ldy,
                            uint32_t keep) {
    const int Q4 = kind & K_Q4, VNNI = kind & K_VNNI, offset = Q4 || VNNI;
    const int IN_L1 = MR > MAX_REG_MR, NH = MR > 4 ? 1 : 2; // halves per pass
    const size_t BB = sp__pk_block_bytes(Q4);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[MAX_REG_MR][2];
    _Alignas(32) float acc_l1[MAX_MR][SP_PK_GROUP];
#pragma GCC unroll 8
    for (int m = 0; m < MR; m++) {
        if (IN_L1) {
            _mm256_store_ps(acc_l1[m], _mm256_setzero_ps());
            _mm256_store_ps(acc_l1[m] + 8, _mm256_setzero_ps());
        } else {
            acc[m][0] = acc[m][1] = _mm256_setzero_ps();
        }
    }
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *t = ints + (size_t)b * BB;
        const size_t at = (size_t)b * (size_t)xs.rows + (size_t)m0;
        const int8_t *a = xs.ints + at * SP_QK8_0;
#pragma GCC unroll 8
        for (size_t l = 0; l < BB / 64; l++)
            _mm_prefetch((const char *)t + SP_PK_PREFETCH_AHEAD * BB + 64 * l, _MM_HINT_T0);
#pragma GCC unroll 2
        for (int h0 = 0; h0 < 2; h0 += NH) {
            // s: int32 sums (Q8_0 on AVX2, or VNNI), or int16 pair sums (Q4_0 on AVX2), of the
            // pass's halves h0 + i.
            __m256i s[MAX_MR][2];
#pragma GCC unroll 8
            for (int m = 0; m < MR; m++) {
                s[m][0] = s[m][1] = _mm256_setzero_si256();
            }
            // Tile rows k4 and k4 + 4 at a time (for Q4_0 the low and high nibbles of one load),
            // the loop not unrolled further, so that the sums keep their registers.
#pragma GCC unroll 1
            for (int k4 = 0; k4 < SP_QK8_0 / 8; k4++) {
                __m256i w[2][2], aw[2][2];
#pragma GCC unroll 2
                for (int i = 0; i < NH; i++) {
                    const uint8_t *row = t + 64 * k4 + 32 * (h0 + i);
                    if (Q4) {
                        const __m256i v = _mm256_loadu_si256((const __m256i *)row);
                        w[0][i] = _mm256_and_si256(v, _mm256_set1_epi8(15));
                        w[1][i] = _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(15));
                    } else {
#pragma GCC unroll 2
                        for (int j = 0; j < 2; j++)
                            w[j][i] = _mm256_loadu_si256((const __m256i *)(row + 256 * j));
                    }
                }
#pragma GCC unroll 8
                for (int m = 0; m < MR; m++) {
#pragma GCC unroll 2
                    for (int j = 0; j < 2; j++) {
                        int32_t x4;
                        memcpy(&x4, a + m * SP_QK8_0 + 4 * (k4 + 4 * j), 4);
                        const __m256i xb = _mm256_set1_epi32(x4);
#pragma GCC unroll 2
                        for (int i = 0; i < NH; i++) {
                            if (VNNI) {
                                s[m][i] = dpbusd_vex(s[m][i], w[j][i], xb);
                            } else if (Q4) {
                                s[m][i] =
                                    _mm256_add_epi16(s[m][i], _mm256_maddubs_epi16(w[j][i], xb));
                            } else {
                                if (m == 0)
                                    aw[j][i] = _mm256_abs_epi8(w[j][i]);
                                const __m256i p =
                                    _mm256_maddubs_epi16(aw[j][i], _mm256_sign_epi8(xb, w[j][i]));
                                s[m][i] = _mm256_add_epi32(s[m][i], _mm256_madd_epi16(p, ones));
                            }
                        }
                    }
                }
            }
#pragma GCC unroll 2
            for (int i = 0; i < NH; i++) {
                const int h = h0 + i;
                const __m256 dw = _mm256_cvtph_ps(
                    _mm_loadu_si128((const __m128i *)(scales + b * SP_PK_GROUP + 8 * h)));
#pragma GCC unroll 8
                for (int m = 0; m < MR; m++) {
                    __m256i si = s[m][i];
                    if (Q4 && !VNNI)
                        si = _mm256_madd_epi16(si, ones);
                    if (offset)
                        si = _mm256_add_epi32(si, _mm256_set1_epi32(xs.off[Q4 != 0][at + m]));
                    const __m256 sf = _mm256_cvtepi32_ps(si);
                    const __m256 d = _mm256_mul_ps(dw, _mm256_set1_ps(xs.scales[at + m]));
                    if (IN_L1)
                        _mm256_store_ps(acc_l1[m] + 8 * h,
                                        _mm256_fmadd_ps(sf, d, _mm256_load_ps(acc_l1[m] + 8 * h)));
                    else
                        acc[m][h] = _mm256_fmadd_ps(sf, d, acc[m][h]);
                }
            }
        }
    }
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        const __m256i lanes = lanes_of(keep, h);
#pragma GCC unroll 8
        for (int m = 0; m < MR; m++)
            _mm256_maskstore_ps(y + m * ldy + 8 * h, lanes,
                                IN_L1 ? _mm256_load_ps(acc_l1[m] + 8 * h) : acc[m][h]);
    }
}

#define ROWS_CASE(MR)                                                                              \
    case MR:                                                                                       \
        rows_avx2(kind, MR, ints, scales, xs, m0, nb, y + m0 * ldy, ldy, keep);                    \
        break;

SP_PK_INLINE void group_avx2(const int kind, const uint8_t *ints, const sp_f16 *scales,
                             sp__pk_slice xs, int64_t nb, float *y, int64_t ldy, uint32_t keep) {
    for (int m0 = 0; m0 < xs.rows; m0 += MAX_MR) {
        switch (SP_MIN(xs.rows - m0, MAX_MR)) {
            SP_EACH_8(ROWS_CASE)
        default:
            SP_ASSERT(!"row count");
        }
    }
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

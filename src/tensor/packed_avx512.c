/* Packed Q8_0 and Q4_0 (layouts and numerics in packed.h) on AVX512-VNNI: the avx512 table's
 * products of those weights, and the amx table's for one or two rows.
 *
 * Row k4 of a packed block is a vector of the 16 outputs' weights at 4 k4 .. 4 k4 + 3, unsigned
 * (this table stores Q8_0 weights as w + 128; the amx table, which also runs these kernels for
 * one or two rows, stores them signed and they are flipped once per load), so vpdpbusd with a
 * row's 4 activations broadcast (signed) gives each output's products: no horizontal sum
 * anywhere, and one instruction per row and 4 inputs. The offset of the unsigned weights comes
 * off once per block, S = U - sum(x) 2^shift, from the sums the activations carry. Up to 8
 * rows share each weight load (8 accumulators and 8 sums in registers). */
#include <stdint.h>
#include <string.h>

#include "base/err.h"
#include "base/util.h"
#include "tensor/packed_x86.h"

enum {
    MAX_MR = 8,   // rows per register block
    K_Q4 = 1,     // kind bits: Q4_0 weights (else Q8_0)
    K_SIGNED = 2, //            Q8_0 weights stored signed
};

/* The 8 tile rows (64 bytes each: 16 outputs x 4 weights) of a packed Q4_0 block, as the
 * unsigned 4-bit values q. */
SP_PK_INLINE void q4_rows(const uint8_t *nib, __m512i row[8]) {
    const __m512i mask = _mm512_set1_epi8(15);
#pragma GCC unroll 4
    for (int p = 0; p < 4; p++) {
        const __m512i v = _mm512_loadu_si512(nib + 64 * p);
        row[p] = _mm512_and_si512(v, mask);
        row[p + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), mask);
    }
}

/* Rows [m0, m0 + MR) of slice xs times one packed group over nb blocks; y: row m0 at the group's
 * first output. */
SP_PK_INLINE void rows_vnni(const int kind, const int MR, const uint8_t *ints, const sp_f16 *scales,
                            sp__pk_slice xs, int m0, int64_t nb, float *y, int64_t ldy,
                            __mmask16 keep) {
    const int Q4 = kind & K_Q4, SIGNED = kind & K_SIGNED;
    const size_t BB = sp__pk_block_bytes(Q4);
    const int shift = Q4 ? SP_PK_Q4_BIAS_SHIFT : SP_PK_Q8_BIAS_SHIFT;
    __m512 acc[MAX_MR];
#pragma GCC unroll 8
    for (int m = 0; m < MR; m++)
        acc[m] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *t = ints + (size_t)b * BB;
        const int8_t *a = xs.ints + ((size_t)b * (size_t)xs.rows + (size_t)m0) * SP_QK8_0;
        sp__pk_prefetch(t + SP_PK_PREFETCH_AHEAD * BB, (int)(BB / 64));
        __m512i rows[8];
        if (Q4)
            q4_rows(t, rows);
        __m512i s[MAX_MR];
#pragma GCC unroll 8
        for (int m = 0; m < MR; m++)
            s[m] = _mm512_setzero_si512();
#pragma GCC unroll 8
        for (int k4 = 0; k4 < SP_QK8_0 / 4; k4++) {
            __m512i w = Q4 ? rows[k4] : _mm512_loadu_si512(t + 64 * k4);
            if (SIGNED)
                w = _mm512_xor_si512(w, _mm512_set1_epi8((char)0x80));
#pragma GCC unroll 8
            for (int m = 0; m < MR; m++) {
                int32_t x4;
                memcpy(&x4, a + m * SP_QK8_0 + 4 * k4, 4);
                s[m] = _mm512_dpbusd_epi32(s[m], w, _mm512_set1_epi32(x4));
            }
        }
        const __m512 dw = sp__pk_scales(scales, b);
        const size_t at = (size_t)b * (size_t)xs.rows + (size_t)m0;
#pragma GCC unroll 8
        for (int m = 0; m < MR; m++) {
            const __m512i off = _mm512_set1_epi32(xs.sums[at + m] * (1 << shift));
            const __m512 sf = _mm512_cvtepi32_ps(_mm512_sub_epi32(s[m], off));
            acc[m] =
                _mm512_fmadd_ps(sf, _mm512_mul_ps(dw, _mm512_set1_ps(xs.scales[at + m])), acc[m]);
        }
    }
#pragma GCC unroll 8
    for (int m = 0; m < MR; m++)
        _mm512_mask_storeu_ps(y + m * ldy, keep, acc[m]);
}

#define ROWS_CASE(MR)                                                                              \
    case MR:                                                                                       \
        rows_vnni(kind, MR, ints, scales, xs, m0, nb, y + m0 * ldy, ldy, keep);                    \
        break;

SP_PK_INLINE void group_vnni(const int kind, const uint8_t *ints, const sp_f16 *scales,
                             sp__pk_slice xs, int64_t nb, float *y, int64_t ldy, __mmask16 keep) {
    for (int m0 = 0; m0 < xs.rows; m0 += MAX_MR) {
        switch (SP_MIN(xs.rows - m0, MAX_MR)) {
            ROWS_CASE(1)
            ROWS_CASE(2)
            ROWS_CASE(3)
            ROWS_CASE(4)
            ROWS_CASE(5)
            ROWS_CASE(6)
            ROWS_CASE(7)
            ROWS_CASE(8)
        default:
            SP_ASSERT(!"row count");
        }
    }
}

void sp__pk_group_vnni(int q4, const uint8_t *ints, const sp_f16 *scales, sp__pk_slice xs,
                       int64_t nb, float *y, int64_t ldy, __mmask16 keep) {
    if (q4)
        group_vnni(K_Q4, ints, scales, xs, nb, y, ldy, keep);
    else
        group_vnni(K_SIGNED, ints, scales, xs, nb, y, ldy, keep);
}

SP_PK_INLINE void pk_slice(const sp__pk_slice *xs, int *state) {
    (void)xs, (void)state;
}

SP_PK_INLINE void pk_group(const int kind, const uint8_t *ints, const sp_f16 *scales,
                           sp__pk_slice xs, int64_t nb, float *y, int64_t ldy, uint32_t keep) {
    group_vnni(kind, ints, scales, xs, nb, y, ldy, (__mmask16)keep);
}

SP_PK_INLINE void pk_done(int state) {
    (void)state;
}

#include "tensor/packed_walk.h"

void sp__packed_avx512_init(sp_kernels *k) {
    sp__pk_set_layouts(k, 1);
    k->matmul_packed[SP_DTYPE_Q8_0] = sp__pk_matmul_q8_0;
    k->matmul_packed[SP_DTYPE_Q4_0] = sp__pk_matmul_q4_0;
}

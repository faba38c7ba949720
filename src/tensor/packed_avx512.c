/* Packed Q8_0 and Q4_0 (layouts and numerics in packed.h) on AVX512-VNNI: the avx512 table's
 * products of those weights, and the amx table's for one or two rows.
 *
 * Row k4 of a packed block is a vector of the 16 outputs' weights at 4 k4 .. 4 k4 + 3, unsigned
 * (this table stores Q8_0 weights as w + 128; the amx table, which also runs these kernels for
 * one or two rows, stores them signed and they are flipped once per load), so vpdpbusd with a
 * row's 4 activations broadcast (signed) gives each output's products: no horizontal sum
 * anywhere, and one instruction per row and 4 inputs. The offset of the unsigned weights is where
 * each block's sums start, S = -sum(x) bias + U, broadcast from the activations' layout (a load,
 * no vector instruction). Beyond two rows, two groups are taken at once, so that each broadcast
 * activation serves 32 outputs: the loads of the activations, more than the vector instructions,
 * bound this loop. Up to 16 rows of one group, or 8 of two, share each weight load. */
#include <stdint.h>
#include <string.h>

#include "base/err.h"
#include "base/util.h"
#include "tensor/packed_x86.h"

enum {
    MAX_ACC = 16,    // accumulators (rows x groups) per register block
    MAX_REG_ACC = 8, // accumulators that stay in registers
    K_Q4 = 1,        // kind bits: Q4_0 weights (else Q8_0)
    K_SIGNED = 2,    //            Q8_0 weights stored signed
};

/* Rows [m0, m0 + MR) of slice xs times NG (1 or 2) packed groups, gs bytes apart, over nb blocks;
 * y: row m0 at the first group's first output. With two groups each broadcast activation serves
 * both groups' products (loads, not vector instructions, are what bounds this loop). Up to 8
 * accumulators stay in registers; more (up to 16 rows of one group or 8 rows of two, with the
 * sums and the weights taking the registers) are kept in a buffer in L1, which costs loads and
 * stores but no vector instruction. */
SP_PK_INLINE void rows_vnni(const int kind, const int NG, const int MR, const uint8_t *ints,
                            const sp_f16 *scales, size_t gs, sp__pk_slice xs, int m0, int64_t nb,
                            float *y, int64_t ldy, const __mmask16 keep[2]) {
    const int Q4 = kind & K_Q4, SIGNED = kind & K_SIGNED, IN_L1 = NG * MR > MAX_REG_ACC;
    const size_t BB = sp__pk_block_bytes(Q4);
    __m512 acc[MAX_REG_ACC];
    _Alignas(64) float acc_l1[MAX_ACC][SP_PK_GROUP];
#pragma GCC unroll 16
    for (int i = 0; i < NG * MR; i++) {
        if (IN_L1)
            _mm512_store_ps(acc_l1[i], _mm512_setzero_ps());
        else
            acc[i] = _mm512_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *t = ints + (size_t)b * BB;
        const int8_t *a = xs.ints + ((size_t)b * (size_t)xs.rows + (size_t)m0) * SP_QK8_0;
#pragma GCC unroll 2
        for (int g = 0; g < NG; g++)
            sp__pk_prefetch(t + g * gs + SP_PK_PREFETCH_AHEAD * BB, (int)(BB / 64));
        const size_t at = (size_t)b * (size_t)xs.rows + (size_t)m0;
        __m512i s[MAX_ACC];
#pragma GCC unroll 16
        for (int i = 0; i < NG * MR; i++)
            s[i] = _mm512_set1_epi32(xs.off[Q4 != 0][at + i % MR]);
#pragma GCC unroll 8
        for (int k4 = 0; k4 < SP_QK8_0 / 4; k4++) {
            __m512i w[2];
#pragma GCC unroll 2
            for (int g = 0; g < NG; g++) {
                if (Q4) {
                    // Tile rows 0-3 are the low nibbles of the block's 4 rows of 64 bytes, 4-7
                    // the high ones.
                    const __m512i v = _mm512_loadu_si512(t + g * gs + 64 * (k4 % 4));
                    w[g] = _mm512_and_si512(k4 < 4 ? v : _mm512_srli_epi16(v, 4),
                                            _mm512_set1_epi8(15));
                } else {
                    w[g] = _mm512_loadu_si512(t + g * gs + 64 * k4);
                }
                if (SIGNED)
                    w[g] = _mm512_xor_si512(w[g], _mm512_set1_epi8((char)0x80));
            }
#pragma GCC unroll 16
            for (int m = 0; m < MR; m++) {
                int32_t x4;
                memcpy(&x4, a + m * SP_QK8_0 + 4 * k4, 4);
                const __m512i x = _mm512_set1_epi32(x4);
#pragma GCC unroll 2
                for (int g = 0; g < NG; g++)
                    s[g * MR + m] = _mm512_dpbusd_epi32(s[g * MR + m], w[g], x);
            }
        }
#pragma GCC unroll 2
        for (int g = 0; g < NG; g++) {
            const __m512 dw = sp__pk_scales((const sp_f16 *)((const uint8_t *)scales + g * gs), b);
#pragma GCC unroll 16
            for (int m = 0; m < MR; m++) {
                const int i = g * MR + m;
                const __m512 sf = _mm512_cvtepi32_ps(s[i]);
                const __m512 d = _mm512_mul_ps(dw, _mm512_set1_ps(xs.scales[at + m]));
                if (IN_L1)
                    _mm512_store_ps(acc_l1[i], _mm512_fmadd_ps(sf, d, _mm512_load_ps(acc_l1[i])));
                else
                    acc[i] = _mm512_fmadd_ps(sf, d, acc[i]);
            }
        }
    }
#pragma GCC unroll 2
    for (int g = 0; g < NG; g++)
#pragma GCC unroll 16
        for (int m = 0; m < MR; m++) {
            const int i = g * MR + m;
            _mm512_mask_storeu_ps(y + m * ldy + g * SP_PK_GROUP, keep[g],
                                  IN_L1 ? _mm512_load_ps(acc_l1[i]) : acc[i]);
        }
}

#define ROWS_CASE(NG, MR)                                                                          \
    case MR:                                                                                       \
        rows_vnni(kind, NG, MR, ints, scales, gs, xs, m0, nb, y + m0 * ldy, ldy, keep);            \
        break;
#define ROWS_CASE_1(MR) ROWS_CASE(1, MR)
#define ROWS_CASE_2(MR) ROWS_CASE(2, MR)

/* Every row of slice xs times NG groups (rows_vnni), in blocks of up to 16 rows of one group or
 * 8 rows of two. */
SP_PK_INLINE void groups_vnni(const int kind, const int NG, const uint8_t *ints,
                              const sp_f16 *scales, size_t gs, sp__pk_slice xs, int64_t nb,
                              float *y, int64_t ldy, const __mmask16 keep[2]) {
    const int most = MAX_ACC / NG;
    for (int m0 = 0; m0 < xs.rows; m0 += most) {
        if (NG == 1) {
            switch (SP_MIN(xs.rows - m0, most)) {
                SP_EACH_16(ROWS_CASE_1)
            default:
                SP_ASSERT(!"row count");
            }
        } else {
            switch (SP_MIN(xs.rows - m0, most)) {
                SP_EACH_8(ROWS_CASE_2)
            default:
                SP_ASSERT(!"row count");
            }
        }
    }
}

SP_PK_INLINE void group_vnni(const int kind, const uint8_t *ints, const sp_f16 *scales,
                             sp__pk_slice xs, int64_t nb, float *y, int64_t ldy, __mmask16 keep) {
    const __mmask16 k[2] = {keep, 0};
    groups_vnni(kind, 1, ints, scales, 0, xs, nb, y, ldy, k);
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

SP_PK_INLINE void pk_group_pair(const int kind, const uint8_t *ints, const sp_f16 *scales,
                                size_t gs, sp__pk_slice xs, int64_t nb, float *y, int64_t ldy,
                                uint32_t keep0, uint32_t keep1) {
    const __mmask16 k[2] = {(__mmask16)keep0, (__mmask16)keep1};
    groups_vnni(kind, 2, ints, scales, gs, xs, nb, y, ldy, k);
}

#define SP_PK_GROUP_PAIRS
#ifndef SP_PK_PAIR_ROWS
#define SP_PK_PAIR_ROWS 3
#endif

SP_PK_INLINE void pk_done(int state) {
    (void)state;
}

#include "tensor/packed_walk.h"

void sp__packed_avx512_init(sp_kernels *k) {
    sp__pk_set_layouts(k, 1);
    k->matmul_packed[SP_DTYPE_Q8_0] = sp__pk_matmul_q8_0;
    k->matmul_packed[SP_DTYPE_Q4_0] = sp__pk_matmul_q4_0;
}

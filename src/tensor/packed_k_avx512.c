/* Packed Q4_K, Q5_K and Q6_K (layouts and numerics in packed_k.h) on AVX512-VNNI: the avx512 and
 * amx tables' products of those weights.
 *
 * Row r of a packed chunk is a vector of the 16 outputs' quants of 4 inputs, unsigned, so one
 * vpdpbusd with a row's 4 activations broadcast (the signed operand) adds each output's 4
 * products: per sub-block the exact int32 dot of every output, no horizontal sum anywhere and
 * no bias to take off. Each dot is then multiplied by its output's sub-block scale (vpmulld) into
 * sumi; the mins (Q4_K, Q5_K) and the offset of 32 (Q6_K) come from the activations' sums with
 * one vpdpwssd per pair of sub-blocks. Up to 8 activation rows share each weight load, each with
 * its own accumulators, so a row's arithmetic never depends on the others. */
#include <immintrin.h>
#include <stdint.h>

#include "base/err.h"
#include "base/util.h"
#include "tensor/packed_k.h"

enum { MAX_MR = 8 }; // activation rows per register block

/* Row r (0..7) of chunk c of a record: the 16 outputs' quants (0..15, 0..31 or 0..63) of inputs
 * 32c + 4r .. 32c + 4r + 3. The 16-bit shifts carry bits across bytes only below the bits each
 * mask keeps. */
SP_PKK_INLINE __m512i weight_row(const int kind, const uint8_t *rec, int c, int r) {
    const __m512i nib = _mm512_loadu_si512(rec + 256 * c + 64 * (r % 4));
    __m512i q = _mm512_and_si512(r < 4 ? nib : _mm512_srli_epi16(nib, 4), _mm512_set1_epi8(15));
    const uint8_t *high = rec + SP_PKK_NIB_BYTES;
    if (kind == SP_PKK_Q5) {
        // Bit r of each byte to bit 4.
        const __m512i h = _mm512_loadu_si512(high + 64 * c);
        const __m512i at4 = r <= 4 ? _mm512_slli_epi16(h, 4 - r) : _mm512_srli_epi16(h, r - 4);
        q = _mm512_ternarylogic_epi32(q, at4, _mm512_set1_epi8(0x10), 0xf8); // q | (at4 & mask)
    } else if (kind == SP_PKK_Q6) {
        // Bits 2(r % 4), 2(r % 4) + 1 of each byte to bits 4, 5.
        const __m512i h = _mm512_loadu_si512(high + 128 * c + 64 * (r / 4));
        const int s = 2 * (r % 4);
        const __m512i at4 = s <= 4 ? _mm512_slli_epi16(h, 4 - s) : _mm512_srli_epi16(h, s - 4);
        q = _mm512_ternarylogic_epi32(q, at4, _mm512_set1_epi8(0x30), 0xf8);
    }
    return q;
}

/* The 16 outputs' scales of sub-block 2i + odd from pair i (32 bytes) as int32 lanes: unsigned
 * 6-bit (Q4_K, Q5_K) or int8 (Q6_K). */
SP_PKK_INLINE __m512i pair_scale(const int kind, const uint8_t *pair, int odd) {
    const __m256i b = _mm256_loadu_si256((const __m256i *)pair);
    if (kind == SP_PKK_Q6) {
        const __m512i v = _mm512_cvtepi8_epi16(b);
        return _mm512_srai_epi32(odd ? v : _mm512_slli_epi32(v, 16), 16);
    }
    const __m512i v = _mm512_cvtepu8_epi16(b);
    return odd ? _mm512_srli_epi32(v, 16) : _mm512_and_si512(v, _mm512_set1_epi32(0xffff));
}

/* Rows [m0, m0 + MR) of slice xs times one packed group over nb super-blocks; y: row m0 at the
 * group's first output. */
SP_PKK_INLINE void rows_vnni(const int kind, const int MR, const uint8_t *w, int64_t nb,
                             sp__pkk_slice xs, int m0, float *y, int64_t ldy, __mmask16 keep) {
    const size_t rec_bytes = sp__pkk_rec_bytes(kind), sc_at = sp__pkk_sc_at(kind);
    const uint8_t *trailer = w + (size_t)nb * rec_bytes;
    const int n_pairs = kind == SP_PKK_Q6 ? 8 : 4;
    __m512 acc[MAX_MR];
#pragma GCC unroll 8
    for (int m = 0; m < MR; m++)
        acc[m] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *rec = w + (size_t)b * rec_bytes;
        const int8_t *qs[MAX_MR];
        const sp__pkk_aux *aux[MAX_MR];
#pragma GCC unroll 8
        for (int m = 0; m < MR; m++) {
            qs[m] = sp__pkk_act_qs(xs, b, m0 + m);
            aux[m] = sp__pkk_act_aux(xs, b, m0 + m);
        }
        __m512i sumi[MAX_MR];
#pragma GCC unroll 8
        for (int m = 0; m < MR; m++)
            sumi[m] = _mm512_setzero_si512();
        for (int c = 0; c < 8; c++) {
            // The next record, a few lines per chunk, while this one is multiplied.
            const char *next = (const char *)rec + rec_bytes + (size_t)c * (rec_bytes / 8);
            for (size_t l = 0; l < rec_bytes / 8; l += 64)
                _mm_prefetch(next + l, _MM_HINT_T0);
            // One sub-block per chunk (Q4_K, Q5_K) or two, rows 0-3 and 4-7 (Q6_K).
            const int n_sub = kind == SP_PKK_Q6 ? 2 : 1, rows = 8 / n_sub;
#pragma GCC unroll 2
            for (int s = 0; s < n_sub; s++) {
                __m512i dot[MAX_MR];
#pragma GCC unroll 8
                for (int m = 0; m < MR; m++)
                    dot[m] = _mm512_setzero_si512();
#pragma GCC unroll 8
                for (int rr = 0; rr < rows; rr++) {
                    const int r = rows * s + rr; // the packed row
                    const __m512i q = weight_row(kind, rec, c, r);
#pragma GCC unroll 8
                    for (int m = 0; m < MR; m++)
                        dot[m] = _mm512_dpbusd_epi32(
                            dot[m], q, _mm512_set1_epi32(sp__pkk_load4(qs[m] + 32 * c + 4 * r)));
                }
                const int j = n_sub * c + s; // the sub-block
                const __m512i sc = pair_scale(kind, rec + sc_at + 32 * (j / 2), j % 2);
#pragma GCC unroll 8
                for (int m = 0; m < MR; m++)
                    sumi[m] = _mm512_add_epi32(sumi[m], _mm512_mullo_epi32(dot[m], sc));
            }
        }
        // Q4_K, Q5_K: summins; Q6_K: the offset sum_j sc_j bsums_j, 32 times which comes off.
        __m512i sums[MAX_MR];
#pragma GCC unroll 8
        for (int m = 0; m < MR; m++)
            sums[m] = _mm512_setzero_si512();
#pragma GCC unroll 8
        for (int i = 0; i < n_pairs; i++) {
            const uint8_t *p = rec + sc_at + (kind == SP_PKK_Q6 ? 0 : 128) + 32 * i;
            const __m256i pb = _mm256_loadu_si256((const __m256i *)p);
            const __m512i pv =
                kind == SP_PKK_Q6 ? _mm512_cvtepi8_epi16(pb) : _mm512_cvtepu8_epi16(pb);
#pragma GCC unroll 8
            for (int m = 0; m < MR; m++) {
                const int16_t *sums16 = kind == SP_PKK_Q6 ? aux[m]->bsums : aux[m]->bs;
                sums[m] = _mm512_dpwssd_epi32(sums[m], pv,
                                              _mm512_set1_epi32(sp__pkk_load4(sums16 + 2 * i)));
            }
        }
        const sp_f16 *dd = (const sp_f16 *)(trailer + (size_t)b * sp__pkk_dd_bytes(kind));
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)dd));
        if (kind == SP_PKK_Q6) {
#pragma GCC unroll 8
            for (int m = 0; m < MR; m++) {
                const __m512i s = _mm512_sub_epi32(sumi[m], _mm512_slli_epi32(sums[m], 5));
                acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s),
                                         _mm512_mul_ps(dw, _mm512_set1_ps(aux[m]->d)), acc[m]);
            }
        } else {
            const __m512 dmw =
                _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(dd + SP_PKK_GROUP)));
#pragma GCC unroll 8
            for (int m = 0; m < MR; m++) {
                const __m512 dx = _mm512_set1_ps(aux[m]->d);
                acc[m] =
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi[m]), _mm512_mul_ps(dw, dx), acc[m]);
                acc[m] =
                    _mm512_fnmadd_ps(_mm512_cvtepi32_ps(sums[m]), _mm512_mul_ps(dmw, dx), acc[m]);
            }
        }
    }
#pragma GCC unroll 8
    for (int m = 0; m < MR; m++)
        _mm512_mask_storeu_ps(y + m * ldy, keep, acc[m]);
}

#define ROWS_CASE(MR)                                                                              \
    case MR:                                                                                       \
        rows_vnni(kind, MR, w, nb, xs, m0, y + m0 * ldy, ldy, keep);                               \
        break;

SP_PKK_INLINE void pkk_group(const int kind, const uint8_t *w, int64_t nb, sp__pkk_slice xs,
                             float *y, int64_t ldy, uint32_t keep) {
    for (int m0 = 0; m0 < xs.rows; m0 += MAX_MR) {
        switch (SP_MIN(xs.rows - m0, MAX_MR)) {
            SP_EACH_8(ROWS_CASE)
        default:
            SP_ASSERT(!"row count");
        }
    }
}

#include "tensor/packed_k_walk.h"

SP_PKK_MATMUL_ENTRY(matmul_q4_k, SP_PKK_Q4)
SP_PKK_MATMUL_ENTRY(matmul_q5_k, SP_PKK_Q5)
SP_PKK_MATMUL_ENTRY(matmul_q6_k, SP_PKK_Q6)

void sp__packed_k_avx512_init(sp_kernels *k) {
    k->matmul_packed[SP_DTYPE_Q4_K] = matmul_q4_k;
    k->matmul_packed[SP_DTYPE_Q5_K] = matmul_q5_k;
    k->matmul_packed[SP_DTYPE_Q6_K] = matmul_q6_k;
}

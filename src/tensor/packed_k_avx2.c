/* Packed Q4_K, Q5_K and Q6_K (layouts and numerics in packed_k.h) on AVX2: the avx2 and avxvnni
 * tables' products of those weights, the same bits as the avx512 and amx tables'.
 *
 * A packed row (the 16 outputs' quants of 4 inputs) is two vectors of 8 outputs, taken one half
 * at a time, so every lane is an output and nothing is summed across lanes. AVX2: vpmaddubsw
 * multiplies the unsigned quants by a row's 4 activations broadcast (signed) and adds pairs into
 * int16; the int16 sums of G rows are added (vpaddw) before vpmaddwd multiplies them by the
 * sub-block scale (in both int16 of each lane) into int32. Nothing saturates or wraps: with
 * activations in [-128, 127] a pair is at most 2 * qmax * 128 in magnitude, and G is chosen so
 * that G such pairs stay within int16 (Q4_K: 8 * 2 * 15 * 128 = 30720; Q5_K: 4 * 2 * 31 * 128 =
 * 31744; Q6_K: 2 * 2 * 63 * 128 = 32256). With AVX-VNNI (the avxvnni table) one vpdpbusd adds the
 * 4 products of a row into int32 instead, and vpmulld applies the scale per sub-block, as on
 * AVX-512. The mins (Q4_K, Q5_K) and Q6_K's offset of 32 come from the activations' sums with
 * vpmaddwd per pair of sub-blocks; then the float steps of packed_k.h. Up to MAX_MR activation
 * rows share each weight load, each with its own accumulators. */
#include <immintrin.h>
#include <stdint.h>

#include "base/err.h"
#include "base/util.h"
#include "tensor/packed_k.h"

enum {
    MAX_MR = 4, // activation rows per register block
    K_VNNI = 4, // kind bit: AVX-VNNI products (above SP_PKK_TYPE_MASK)
};

/* acc + the 8 sums of 4 products of unsigned bytes u by signed bytes s (vpdpbusd in its VEX
 * encoding: the file is compiled for AVX2 only, and the avxvnni table runs only where the CPU
 * has AVX-VNNI). */
SP_PKK_INLINE __m256i dpbusd_vex(__m256i acc, __m256i u, __m256i s) {
    __asm__("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(u), "x"(s));
    return acc;
}

/* Half h (outputs 8h..8h+7) of row r (0..7) of chunk c of a record: quants of inputs
 * 32c + 4r .. 32c + 4r + 3, unsigned. The 16-bit shifts carry bits across bytes only below the
 * bits each mask keeps. */
SP_PKK_INLINE __m256i weight_row(const int t, const uint8_t *rec, int c, int r, int h) {
    const __m256i nib =
        _mm256_loadu_si256((const __m256i *)(rec + 256 * c + 64 * (r % 4) + 32 * h));
    __m256i q = _mm256_and_si256(r < 4 ? nib : _mm256_srli_epi16(nib, 4), _mm256_set1_epi8(15));
    const uint8_t *high = rec + SP_PKK_NIB_BYTES;
    if (t == SP_PKK_Q5) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)(high + 64 * c + 32 * h));
        const __m256i at4 = r <= 4 ? _mm256_slli_epi16(v, 4 - r) : _mm256_srli_epi16(v, r - 4);
        q = _mm256_or_si256(q, _mm256_and_si256(at4, _mm256_set1_epi8(0x10)));
    } else if (t == SP_PKK_Q6) {
        const __m256i v =
            _mm256_loadu_si256((const __m256i *)(high + 128 * c + 64 * (r / 4) + 32 * h));
        const int s = 2 * (r % 4);
        const __m256i at4 = s <= 4 ? _mm256_slli_epi16(v, 4 - s) : _mm256_srli_epi16(v, s - 4);
        q = _mm256_or_si256(q, _mm256_and_si256(at4, _mm256_set1_epi8(0x30)));
    }
    return q;
}

/* Pair i of a record's scale (or min) pairs, half h, as 8 lanes (even, odd) of int16: unsigned
 * 6-bit (Q4_K, Q5_K) or int8 (Q6_K). */
SP_PKK_INLINE __m256i pair16(const int t, const uint8_t *pair, int h) {
    const __m128i b = _mm_loadu_si128((const __m128i *)(pair + 16 * h));
    return t == SP_PKK_Q6 ? _mm256_cvtepi8_epi16(b) : _mm256_cvtepu8_epi16(b);
}

/* The scale of sub-block 2i + odd in both int16 of each lane (for vpmaddwd), from pair16. */
SP_PKK_INLINE __m256i scale16(__m256i pair, int odd) {
    const __m256i even_idx = _mm256_setr_epi8(0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12, 13, 12, 13, 0,
                                              1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12, 13, 12, 13);
    const __m256i odd_idx = _mm256_add_epi8(even_idx, _mm256_set1_epi8(2));
    return _mm256_shuffle_epi8(pair, odd ? odd_idx : even_idx);
}

/* The scale of sub-block 2i + odd as int32 lanes (for vpmulld), from pair16. */
SP_PKK_INLINE __m256i scale32(const int t, __m256i pair, int odd) {
    if (t == SP_PKK_Q6)
        return _mm256_srai_epi32(odd ? pair : _mm256_slli_epi32(pair, 16), 16);
    return odd ? _mm256_srli_epi32(pair, 16) : _mm256_and_si256(pair, _mm256_set1_epi32(0xffff));
}

/* Half h of the int32 sumi of rows m0.. (qs[m]: each row's quants of the super-block) over one
 * record: per sub-block the dot of each output times its scale. */
SP_PKK_INLINE void sub_blocks(const int kind, const int MR, const uint8_t *rec, int h,
                              const int8_t *const *qs, __m256i *sumi) {
    const int t = kind & SP_PKK_TYPE_MASK, vnni = kind & K_VNNI;
    const int n_sub = t == SP_PKK_Q6 ? 2 : 1;                  // sub-blocks per chunk
    const int rows = 8 / n_sub;                                // packed rows per sub-block
    const int G = t == SP_PKK_Q4 ? 8 : t == SP_PKK_Q5 ? 4 : 2; // rows per int16 sum (AVX2)
    const uint8_t *pairs = rec + sp__pkk_sc_at(t);
#pragma GCC unroll 8
    for (int m = 0; m < MR; m++)
        sumi[m] = _mm256_setzero_si256();
    for (int c = 0; c < 8; c++) {
#pragma GCC unroll 2
        for (int s = 0; s < n_sub; s++) {
            const int j = n_sub * c + s; // the sub-block
            const __m256i pair = pair16(t, pairs + 32 * (j / 2), h);
            if (vnni) {
                __m256i dot[MAX_MR];
#pragma GCC unroll 8
                for (int m = 0; m < MR; m++)
                    dot[m] = _mm256_setzero_si256();
#pragma GCC unroll 8
                for (int r = rows * s; r < rows * s + rows; r++) {
                    const __m256i q = weight_row(t, rec, c, r, h);
#pragma GCC unroll 8
                    for (int m = 0; m < MR; m++)
                        dot[m] = dpbusd_vex(
                            dot[m], q, _mm256_set1_epi32(sp__pkk_load4(qs[m] + 32 * c + 4 * r)));
                }
                const __m256i sc = scale32(t, pair, j % 2);
#pragma GCC unroll 8
                for (int m = 0; m < MR; m++)
                    sumi[m] = _mm256_add_epi32(sumi[m], _mm256_mullo_epi32(dot[m], sc));
                continue;
            }
            const __m256i sc = scale16(pair, j % 2);
#pragma GCC unroll 8
            for (int r0 = rows * s; r0 < rows * s + rows; r0 += G) {
                __m256i p16[MAX_MR];
#pragma GCC unroll 8
                for (int m = 0; m < MR; m++)
                    p16[m] = _mm256_setzero_si256();
#pragma GCC unroll 8
                for (int r = r0; r < r0 + G; r++) {
                    const __m256i q = weight_row(t, rec, c, r, h);
#pragma GCC unroll 8
                    for (int m = 0; m < MR; m++)
                        p16[m] = _mm256_add_epi16(
                            p16[m], _mm256_maddubs_epi16(q, _mm256_set1_epi32(sp__pkk_load4(
                                                                qs[m] + 32 * c + 4 * r))));
                }
#pragma GCC unroll 8
                for (int m = 0; m < MR; m++)
                    sumi[m] = _mm256_add_epi32(sumi[m], _mm256_madd_epi16(p16[m], sc));
            }
        }
    }
}

/* Q4_K on AVX2, both halves at once: the int32 sumi of rows m0.. over one record into
 * sumi[m][h] (a buffer in L1, so that the registers hold the int16 sums of 4 rows and both
 * halves). Rows k4 and k4 + 4 of a chunk are the low and high nibbles of one load, taken in a
 * loop kept rolled so that the sums keep their registers; a chunk is one sub-block, its int16
 * sums multiplied by the scales once (vpmaddwd) and added. */
SP_PKK_INLINE void sub_blocks_q4(const int MR, const uint8_t *rec, const int8_t *const *qs,
                                 int32_t (*sumi)[2][8]) {
    const uint8_t *pairs = rec + sp__pkk_sc_at(SP_PKK_Q4);
#pragma GCC unroll 4
    for (int m = 0; m < MR; m++)
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++)
            _mm256_store_si256((__m256i *)sumi[m][h], _mm256_setzero_si256());
#pragma GCC unroll 1
    for (int c = 0; c < 8; c++) {
        __m256i p16[MAX_MR][2];
#pragma GCC unroll 4
        for (int m = 0; m < MR; m++)
            p16[m][0] = p16[m][1] = _mm256_setzero_si256();
#pragma GCC unroll 1
        for (int k4 = 0; k4 < 4; k4++) {
            __m256i q[2][2];
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                const __m256i v =
                    _mm256_loadu_si256((const __m256i *)(rec + 256 * c + 64 * k4 + 32 * h));
                q[0][h] = _mm256_and_si256(v, _mm256_set1_epi8(15));
                q[1][h] = _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(15));
            }
#pragma GCC unroll 4
            for (int m = 0; m < MR; m++)
#pragma GCC unroll 2
                for (int j = 0; j < 2; j++) {
                    const __m256i xb =
                        _mm256_set1_epi32(sp__pkk_load4(qs[m] + 32 * c + 4 * (k4 + 4 * j)));
#pragma GCC unroll 2
                    for (int h = 0; h < 2; h++)
                        p16[m][h] = _mm256_add_epi16(p16[m][h], _mm256_maddubs_epi16(q[j][h], xb));
                }
        }
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            const __m256i sc = scale16(pair16(SP_PKK_Q4, pairs + 32 * (c / 2), h), c % 2);
#pragma GCC unroll 4
            for (int m = 0; m < MR; m++)
                _mm256_store_si256((__m256i *)sumi[m][h],
                                   _mm256_add_epi32(_mm256_load_si256((const __m256i *)sumi[m][h]),
                                                    _mm256_madd_epi16(p16[m][h], sc)));
        }
    }
}

/* Rows [m0, m0 + MR) of slice xs times one packed group over nb super-blocks; y: row m0 at the
 * group's first output. */
SP_PKK_INLINE void rows_avx2(const int kind, const int MR, const uint8_t *w, int64_t nb,
                             sp__pkk_slice xs, int m0, float *y, int64_t ldy, uint32_t keep) {
    const int t = kind & SP_PKK_TYPE_MASK;
    const size_t rec_bytes = sp__pkk_rec_bytes(t), sc_at = sp__pkk_sc_at(t);
    const uint8_t *trailer = w + (size_t)nb * rec_bytes;
    const int n_pairs = t == SP_PKK_Q6 ? 8 : 4;
    __m256 acc[MAX_MR][2];
#pragma GCC unroll 8
    for (int m = 0; m < MR; m++)
        acc[m][0] = acc[m][1] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *rec = w + (size_t)b * rec_bytes;
        const int8_t *qs[MAX_MR];
        const sp__pkk_aux *aux[MAX_MR];
#pragma GCC unroll 8
        for (int m = 0; m < MR; m++) {
            qs[m] = sp__pkk_act_qs(xs, b, m0 + m);
            aux[m] = sp__pkk_act_aux(xs, b, m0 + m);
        }
        // The next record while this one is multiplied.
        for (size_t l = 0; l < rec_bytes; l += 64)
            _mm_prefetch((const char *)rec + rec_bytes + l, _MM_HINT_T0);
        const sp_f16 *dd = (const sp_f16 *)(trailer + (size_t)b * sp__pkk_dd_bytes(t));
        const int q4_avx2 = t == SP_PKK_Q4 && !(kind & K_VNNI);
        _Alignas(32) int32_t sumi_q4[MAX_MR][2][8];
        if (q4_avx2)
            sub_blocks_q4(MR, rec, qs, sumi_q4);
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            __m256i sumi[MAX_MR], sums[MAX_MR];
            if (q4_avx2) {
#pragma GCC unroll 8
                for (int m = 0; m < MR; m++)
                    sumi[m] = _mm256_load_si256((const __m256i *)sumi_q4[m][h]);
            } else {
                sub_blocks(kind, MR, rec, h, qs, sumi);
            }
            // Q4_K, Q5_K: summins; Q6_K: the offset sum_j sc_j bsums_j, 32 times which comes off.
#pragma GCC unroll 8
            for (int m = 0; m < MR; m++)
                sums[m] = _mm256_setzero_si256();
#pragma GCC unroll 8
            for (int i = 0; i < n_pairs; i++) {
                const __m256i pv = pair16(t, rec + sc_at + (t == SP_PKK_Q6 ? 0 : 128) + 32 * i, h);
#pragma GCC unroll 8
                for (int m = 0; m < MR; m++) {
                    const int16_t *sums16 = t == SP_PKK_Q6 ? aux[m]->bsums : aux[m]->bs;
                    sums[m] = _mm256_add_epi32(
                        sums[m],
                        _mm256_madd_epi16(pv, _mm256_set1_epi32(sp__pkk_load4(sums16 + 2 * i))));
                }
            }
            const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(dd + 8 * h)));
            if (t == SP_PKK_Q6) {
#pragma GCC unroll 8
                for (int m = 0; m < MR; m++) {
                    const __m256i s = _mm256_sub_epi32(sumi[m], _mm256_slli_epi32(sums[m], 5));
                    acc[m][h] =
                        _mm256_fmadd_ps(_mm256_cvtepi32_ps(s),
                                        _mm256_mul_ps(dw, _mm256_set1_ps(aux[m]->d)), acc[m][h]);
                }
            } else {
                const __m256 dmw =
                    _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(dd + SP_PKK_GROUP + 8 * h)));
#pragma GCC unroll 8
                for (int m = 0; m < MR; m++) {
                    const __m256 dx = _mm256_set1_ps(aux[m]->d);
                    acc[m][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[m]), _mm256_mul_ps(dw, dx),
                                                acc[m][h]);
                    acc[m][h] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(sums[m]),
                                                 _mm256_mul_ps(dmw, dx), acc[m][h]);
                }
            }
        }
    }
    const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        const __m256i k = _mm256_set1_epi32((int)((keep >> (8 * h)) & 0xff));
        const __m256i lanes = _mm256_cmpeq_epi32(_mm256_and_si256(k, bit), bit);
#pragma GCC unroll 8
        for (int m = 0; m < MR; m++)
            _mm256_maskstore_ps(y + m * ldy + 8 * h, lanes, acc[m][h]);
    }
}

#define ROWS_CASE(MR)                                                                              \
    case MR:                                                                                       \
        rows_avx2(kind, MR, w, nb, xs, m0, y + m0 * ldy, ldy, keep);                               \
        break;

SP_PKK_INLINE void pkk_group(const int kind, const uint8_t *w, int64_t nb, sp__pkk_slice xs,
                             float *y, int64_t ldy, uint32_t keep) {
    for (int m0 = 0; m0 < xs.rows; m0 += MAX_MR) {
        switch (SP_MIN(xs.rows - m0, MAX_MR)) {
            SP_EACH_4(ROWS_CASE)
        default:
            SP_ASSERT(!"row count");
        }
    }
}

#include "tensor/packed_k_walk.h"

SP_PKK_MATMUL_ENTRY(matmul_q4_k, SP_PKK_Q4)
SP_PKK_MATMUL_ENTRY(matmul_q5_k, SP_PKK_Q5)
SP_PKK_MATMUL_ENTRY(matmul_q6_k, SP_PKK_Q6)
SP_PKK_MATMUL_ENTRY(matmul_q4_k_vnni, SP_PKK_Q4 | K_VNNI)
SP_PKK_MATMUL_ENTRY(matmul_q5_k_vnni, SP_PKK_Q5 | K_VNNI)
SP_PKK_MATMUL_ENTRY(matmul_q6_k_vnni, SP_PKK_Q6 | K_VNNI)

void sp__packed_k_avx2_init(sp_kernels *k, bool vnni) {
    k->matmul_packed[SP_DTYPE_Q4_K] = vnni ? matmul_q4_k_vnni : matmul_q4_k;
    k->matmul_packed[SP_DTYPE_Q5_K] = vnni ? matmul_q5_k_vnni : matmul_q5_k;
    k->matmul_packed[SP_DTYPE_Q6_K] = vnni ? matmul_q6_k_vnni : matmul_q6_k;
}

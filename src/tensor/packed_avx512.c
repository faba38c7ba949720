/* Packed Q8_0 and Q4_0 (layouts and numerics in packed_x86.h) on AVX512-VNNI: the avx512 table's
 * products of those weights, and the amx table's for one or two rows.
 *
 * Row k4 of a packed block is a vector of the 16 outputs' weights at 4 k4 .. 4 k4 + 3, so
 * vpdpbusd with a row's 4 activations broadcast gives each output's products: no horizontal sum
 * anywhere. vpdpbusd takes one operand unsigned: the activations go in with a bias of 128
 * (x ^ 0x80) and 128 times the sum of each output's block weights (also by vpdpbusd, shared by
 * the rows of a call) comes off again, which leaves the exact int32 S. Up to 8 rows share each
 * weight load (8 accumulators and 8 sums in registers). */
#include <stdint.h>
#include <string.h>

#include "base/err.h"
#include "base/util.h"
#include "tensor/packed_x86.h"

enum { MAX_MR = 8 }; // rows per register block

static size_t pack_bytes(sp_dtype t, int64_t n_in, int64_t n_out) {
    if ((t != SP_DTYPE_Q8_0 && t != SP_DTYPE_Q4_0) || n_in <= 0 || n_in % SP_QK8_0 || n_out <= 0)
        return 0;
    const size_t groups = (size_t)((n_out + SP_PK_GROUP - 1) / SP_PK_GROUP),
                 nb = (size_t)(n_in / SP_QK8_0);
    return groups * nb * (sp__pk_block_bytes(t == SP_DTYPE_Q4_0) + SP_PK_GROUP * sizeof(sp_f16));
}

/* Block b of weight row `row` (zero weights with a zero scale past n_out) as 32 int8 weights in
 * tile order (q[k] for k < 32: for Q4_0 the 4-bit values, still offset by 8) and its scale. */
static sp_f16 block_weights(sp_dtype t, const void *w, size_t wrb, int64_t n_out, int64_t row,
                            int64_t b, uint8_t q[SP_QK8_0]) {
    if (row >= n_out) {
        memset(q, t == SP_DTYPE_Q8_0 ? 0 : 8, SP_QK8_0);
        return 0;
    }
    const uint8_t *r = (const uint8_t *)w + (size_t)row * wrb;
    if (t == SP_DTYPE_Q8_0) {
        sp_block_q8_0 blk;
        memcpy(&blk, r + (size_t)b * sizeof blk, sizeof blk);
        memcpy(q, blk.qs, SP_QK8_0);
        return blk.d;
    }
    sp_block_q4_0 blk;
    memcpy(&blk, r + (size_t)b * sizeof blk, sizeof blk);
    for (int k = 0; k < SP_QK8_0 / 2; k++) {
        q[k] = blk.qs[k] & 15;
        q[k + 16] = blk.qs[k] >> 4;
    }
    return blk.d;
}

/* Rows past n_out (the last group's padding) are zero weights with zero scales. */
static void pack(sp_dtype t, const void *w, size_t wrb, int64_t n_in, int64_t n_out, void *dst) {
    SP_ASSERT(pack_bytes(t, n_in, n_out) > 0);
    const int64_t nb = n_in / SP_QK8_0, groups = (n_out + SP_PK_GROUP - 1) / SP_PK_GROUP;
    const size_t bb = sp__pk_block_bytes(t == SP_DTYPE_Q4_0);
    uint8_t *out = dst;
    for (int64_t g = 0; g < groups; g++) {
        uint8_t *ints = out + (size_t)g * (size_t)nb * (bb + SP_PK_GROUP * sizeof(sp_f16));
        sp_f16 *scales = (sp_f16 *)(ints + (size_t)nb * bb);
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *tile = ints + (size_t)b * bb;
            if (t == SP_DTYPE_Q4_0)
                memset(tile, 0, bb);
            for (int n = 0; n < SP_PK_GROUP; n++) {
                uint8_t q[SP_QK8_0];
                const sp_f16 d = block_weights(t, w, wrb, n_out, g * SP_PK_GROUP + n, b, q);
                memcpy(&scales[b * SP_PK_GROUP + n], &d, sizeof d);
                // Tile row k4 = k / 4, byte 4 n + k % 4; Q4_0 row k4 is the low (k4 < 4) or high
                // nibble of byte row k4 % 4.
                for (int k = 0; k < SP_QK8_0; k++) {
                    const int k4 = k / 4, at = n * 4 + k % 4;
                    if (t == SP_DTYPE_Q8_0)
                        tile[k4 * 64 + at] = q[k];
                    else
                        tile[(k4 % 4) * 64 + at] |= (uint8_t)(q[k] << (k4 / 4 * 4));
                }
            }
        }
    }
}

/* The 8 tile rows (64 bytes each: 16 outputs x 4 weights) of a packed Q4_0 block, as int8
 * weights q - 8. */
SP_PK_INLINE void q4_rows(const uint8_t *nib, __m512i row[8]) {
    const __m512i mask = _mm512_set1_epi8(15), eight = _mm512_set1_epi8(8);
#pragma GCC unroll 4
    for (int p = 0; p < 4; p++) {
        const __m512i v = _mm512_loadu_si512(nib + 64 * p);
        row[p] = _mm512_sub_epi8(_mm512_and_si512(v, mask), eight);
        row[p + 4] = _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(v, 4), mask), eight);
    }
}

static size_t act_pack_bytes(sp_dtype t, int64_t n_in, int64_t n_rows) {
    if (t != SP_DTYPE_Q8_0 || n_in <= 0 || n_in % SP_QK8_0 || n_rows < 0)
        return 0;
    return (size_t)n_rows * (size_t)(n_in / SP_QK8_0) * SP_PK_ACT_BLOCK_BYTES;
}

static void act_pack(sp_dtype t, const void *xq, int64_t n_in, int64_t r, int64_t n_rows,
                     void *dst) {
    SP_ASSERT(act_pack_bytes(t, n_in, n_rows) > 0 && r >= 0 && r < n_rows);
    const int64_t nb = n_in / SP_QK8_0;
    const sp__pk_slice s = sp__pk_slice_of(dst, nb, n_rows, r / 16 * 16);
    const int m = (int)(r % 16);
    const sp_block_q8_0 *blk = xq;
    for (int64_t b = 0; b < nb; b++) {
        memcpy((int8_t *)s.ints + ((size_t)b * (size_t)s.rows + (size_t)m) * SP_QK8_0, blk[b].qs,
               SP_QK8_0);
        ((float *)s.scales)[b * s.rows + m] = sp_f16_to_f32(blk[b].d);
    }
}

/* Rows [m0, m0 + MR) of slice xs times one packed group over nb blocks; y: row m0 at the group's
 * first output. */
SP_PK_INLINE void rows_vnni(const int Q4, const int MR, const uint8_t *ints, const sp_f16 *scales,
                            sp__pk_slice xs, int m0, int64_t nb, float *y, int64_t ldy,
                            __mmask16 keep) {
    const size_t BB = sp__pk_block_bytes(Q4);
    const __m512i bias = _mm512_set1_epi32((int)0x80808080u), ones = _mm512_set1_epi8(1);
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
        __m512i wsum = _mm512_setzero_si512(), s[MAX_MR];
#pragma GCC unroll 8
        for (int m = 0; m < MR; m++)
            s[m] = _mm512_setzero_si512();
#pragma GCC unroll 8
        for (int k4 = 0; k4 < SP_QK8_0 / 4; k4++) {
            const __m512i w = Q4 ? rows[k4] : _mm512_loadu_si512(t + 64 * k4);
            wsum = _mm512_dpbusd_epi32(wsum, ones, w);
#pragma GCC unroll 8
            for (int m = 0; m < MR; m++) {
                int32_t x4;
                memcpy(&x4, a + m * SP_QK8_0 + 4 * k4, 4);
                s[m] = _mm512_dpbusd_epi32(s[m], _mm512_xor_si512(_mm512_set1_epi32(x4), bias), w);
            }
        }
        const __m512 dw = sp__pk_scales(scales, b);
        const __m512i off = _mm512_slli_epi32(wsum, 7);
        const float *dx = xs.scales + b * xs.rows + m0;
#pragma GCC unroll 8
        for (int m = 0; m < MR; m++) {
            const __m512 sf = _mm512_cvtepi32_ps(_mm512_sub_epi32(s[m], off));
            acc[m] = _mm512_fmadd_ps(sf, _mm512_mul_ps(dw, _mm512_set1_ps(dx[m])), acc[m]);
        }
    }
#pragma GCC unroll 8
    for (int m = 0; m < MR; m++)
        _mm512_mask_storeu_ps(y + m * ldy, keep, acc[m]);
}

#define ROWS_CASE(MR)                                                                              \
    case MR:                                                                                       \
        rows_vnni(Q4, MR, ints, scales, xs, m0, nb, y + m0 * ldy, ldy, keep);                      \
        break;

SP_PK_INLINE void group_vnni(const int Q4, const uint8_t *ints, const sp_f16 *scales,
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
        group_vnni(1, ints, scales, xs, nb, y, ldy, keep);
    else
        group_vnni(0, ints, scales, xs, nb, y, ldy, keep);
}

/* matmul over packed weights (w: pack's output; w_row_bytes unused) and packed activations (x:
 * act_pack's output; x_row_bytes unused). Groups of outputs are taken SP_PK_GROUP_CHUNK at a time
 * so their weights stay in cache while every 16-row slice of the activations passes over them. */
SP_PK_INLINE void matmul_packed(const int Q4, const void *w, const void *x, int64_t n_in,
                                int64_t n_rows, float *y, int64_t ldy, int64_t o0, int64_t o1) {
    SP_ASSERT(n_in % SP_QK8_0 == 0 && n_rows >= 0 && o0 <= o1);
    if (n_rows == 0 || o0 == o1)
        return;
    const int64_t nb = n_in / SP_QK8_0;
    const size_t group_bytes = (size_t)nb * (sp__pk_block_bytes(Q4) + SP_PK_GROUP * sizeof(sp_f16));
    const int64_t g0 = o0 / SP_PK_GROUP, g1 = (o1 + SP_PK_GROUP - 1) / SP_PK_GROUP;
    for (int64_t gc = g0; gc < g1; gc += SP_PK_GROUP_CHUNK) {
        const int64_t gce = g1 - gc < SP_PK_GROUP_CHUNK ? g1 : gc + SP_PK_GROUP_CHUNK;
        for (int64_t m0 = 0; m0 < n_rows; m0 += 16) {
            const sp__pk_slice xs = sp__pk_slice_of(x, nb, n_rows, m0);
            for (int64_t g = gc; g < gce; g++) {
                const uint8_t *ints = (const uint8_t *)w + (size_t)g * group_bytes;
                const sp_f16 *scales = (const sp_f16 *)(ints + (size_t)nb * sp__pk_block_bytes(Q4));
                const int64_t lo = SP_MAX(o0, g * SP_PK_GROUP) - g * SP_PK_GROUP;
                const int64_t hi = SP_MIN(o1, g * SP_PK_GROUP + SP_PK_GROUP) - g * SP_PK_GROUP;
                const __mmask16 keep = (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
                group_vnni(Q4, ints, scales, xs, nb, y + m0 * ldy + g * SP_PK_GROUP, ldy, keep);
            }
        }
    }
}

static void matmul_q8_0_packed(const void *w, size_t wrb, const void *x, size_t xrb, int64_t n_in,
                               int64_t n_rows, float *y, int64_t ldy, int64_t o0, int64_t o1) {
    (void)wrb, (void)xrb;
    matmul_packed(0, w, x, n_in, n_rows, y, ldy, o0, o1);
}

static void matmul_q4_0_packed(const void *w, size_t wrb, const void *x, size_t xrb, int64_t n_in,
                               int64_t n_rows, float *y, int64_t ldy, int64_t o0, int64_t o1) {
    (void)wrb, (void)xrb;
    matmul_packed(1, w, x, n_in, n_rows, y, ldy, o0, o1);
}

void sp__packed_avx512_init(sp_kernels *k) {
    k->pack_bytes = pack_bytes;
    k->pack = pack;
    k->act_pack_bytes = act_pack_bytes;
    k->act_pack = act_pack;
    k->matmul_packed[SP_DTYPE_Q8_0] = matmul_q8_0_packed;
    k->matmul_packed[SP_DTYPE_Q4_0] = matmul_q4_0_packed;
}

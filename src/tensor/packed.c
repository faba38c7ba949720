/* The packed Q8_0 and Q4_0 layouts of packed.h, written in plain C: every x86 table that packs
 * uses them, whatever instructions it runs on. K-quant weights and Q8_K activations are passed
 * on to packed_k.c's layouts. */
#include "tensor/packed.h"

#include <string.h>

#include "base/err.h"
#include "tensor/packed_k.h"

size_t sp__pk_pack_bytes(sp_dtype t, int64_t n_in, int64_t n_out) {
    if (sp__pkk_kind(t) >= 0)
        return sp__pkk_pack_bytes(t, n_in, n_out);
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

/* Rows past n_out (the last group's padding) are zero weights with zero scales; Q8_0 weights
 * are stored XOR flip (0x80: w + 128, or 0: w). */
static void pack(sp_dtype t, const void *w, size_t wrb, int64_t n_in, int64_t n_out, void *dst,
                 uint8_t flip) {
    SP_ASSERT(sp__pk_pack_bytes(t, n_in, n_out) > 0);
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
                        tile[k4 * 64 + at] = q[k] ^ flip;
                    else
                        tile[(k4 % 4) * 64 + at] |= (uint8_t)(q[k] << (k4 / 4 * 4));
                }
            }
        }
    }
}

void sp__pk_pack(sp_dtype t, const void *w, size_t wrb, int64_t n_in, int64_t n_out, void *dst) {
    if (sp__pkk_kind(t) >= 0)
        sp__pkk_pack(t, w, wrb, n_in, n_out, dst);
    else
        pack(t, w, wrb, n_in, n_out, dst, 0);
}

void sp__pk_pack_unsigned(sp_dtype t, const void *w, size_t wrb, int64_t n_in, int64_t n_out,
                          void *dst) {
    if (sp__pkk_kind(t) >= 0)
        sp__pkk_pack(t, w, wrb, n_in, n_out, dst);
    else
        pack(t, w, wrb, n_in, n_out, dst, 0x80);
}

size_t sp__pk_act_pack_bytes(sp_dtype t, int64_t n_in, int64_t n_rows) {
    if (t == SP_DTYPE_Q8_K)
        return sp__pkk_act_pack_bytes(t, n_in, n_rows);
    if (t != SP_DTYPE_Q8_0 || n_in <= 0 || n_in % SP_QK8_0 || n_rows < 0)
        return 0;
    return (size_t)n_rows * (size_t)(n_in / SP_QK8_0) * SP_PK_ACT_BLOCK_BYTES;
}

void sp__pk_act_pack(sp_dtype t, const void *xq, int64_t n_in, int64_t r, int64_t n_rows,
                     void *dst) {
    if (t == SP_DTYPE_Q8_K) {
        sp__pkk_act_pack(t, xq, n_in, r, n_rows, dst);
        return;
    }
    SP_ASSERT(sp__pk_act_pack_bytes(t, n_in, n_rows) > 0 && r >= 0 && r < n_rows);
    const int64_t nb = n_in / SP_QK8_0;
    const sp__pk_slice s = sp__pk_slice_of(dst, nb, n_rows, r / 16 * 16);
    const int m = (int)(r % 16);
    const sp_block_q8_0 *blk = xq;
    for (int64_t b = 0; b < nb; b++) {
        memcpy((int8_t *)s.ints + ((size_t)b * (size_t)s.rows + (size_t)m) * SP_QK8_0, blk[b].qs,
               SP_QK8_0);
        int32_t sum = 0;
        for (int k = 0; k < SP_QK8_0; k++)
            sum += blk[b].qs[k];
        ((float *)s.scales)[b * s.rows + m] = sp_f16_to_f32(blk[b].d);
        ((int32_t *)s.off[0])[b * s.rows + m] = -sum * SP_PK_Q8_BIAS;
        ((int32_t *)s.off[1])[b * s.rows + m] = -sum * SP_PK_Q4_BIAS;
    }
}

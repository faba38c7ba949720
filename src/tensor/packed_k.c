/* The packed K-quant and Q8_K layouts of packed_k.h, written in plain C (every x86 table that
 * packs uses them, whatever instructions it runs on), and the table entries that put them beside
 * packed.h's Q8_0/Q4_0 layouts. */
#include "tensor/packed_k.h"

#include <stddef.h>
#include <string.h>

#include "base/err.h"
#include "tensor/packed.h"

size_t sp__pkk_pack_bytes(sp_dtype t, int64_t n_in, int64_t n_out) {
    const int kind = sp__pkk_kind(t);
    if (kind < 0 || n_in <= 0 || n_in % SP_QK_K || n_out <= 0)
        return 0;
    const int64_t groups = (n_out + SP_PKK_GROUP - 1) / SP_PKK_GROUP;
    return (size_t)groups * sp__pkk_group_bytes(kind, n_in / SP_QK_K);
}

/* One super-block of a weight row, unpacked: the stored quants (Q6_K's with its offset, 0..63),
 * the sub-block scales (8, or Q6_K's 16) and mins (8), and the F16 scales. The quants go four
 * at a time as 32-bit words (each byte under 64, so shifts and ors never carry across bytes). */
typedef struct kblock {
    uint8_t q[SP_QK_K];
    int sc[16], mn[8];
    sp_f16 d, dmin;
} kblock;

static uint32_t load32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static void store32(uint8_t *p, uint32_t v) {
    memcpy(p, &v, sizeof v);
}

enum { NIB = 0x0f0f0f0fu };

static void unpack_block(const int kind, const uint8_t *p, kblock *u) {
    if (kind == SP_PKK_Q6) {
        const uint8_t *ql = p + offsetof(sp_block_q6_k, ql), *qh = p + offsetof(sp_block_q6_k, qh);
        // As in dequantization (quant.c): value 128 h + 32 c + l takes the low (c < 2) or high
        // nibble of ql[64 h + 32 (c & 1) + l] and bits 2c, 2c + 1 of qh[32 h + l].
        for (int h = 0; h < 2; h++)
            for (int c = 0; c < 4; c++)
                for (int l = 0; l < 32; l += 4) {
                    const uint32_t lo = load32(ql + 64 * h + 32 * (c & 1) + l);
                    const uint32_t hi = (load32(qh + 32 * h + l) >> (2 * c)) & 0x03030303u;
                    store32(u->q + 128 * h + 32 * c + l,
                            ((c < 2 ? lo : lo >> 4) & NIB) | (hi << 4));
                }
        const int8_t *scales = (const int8_t *)(p + offsetof(sp_block_q6_k, scales));
        for (int j = 0; j < 16; j++)
            u->sc[j] = scales[j];
        memset(u->mn, 0, sizeof u->mn);
        memcpy(&u->d, p + offsetof(sp_block_q6_k, d), sizeof u->d);
        u->dmin = 0;
        return;
    }
    // Q4_K and Q5_K share the F16 scales, the 12 bytes of scales and mins, and the nibbles:
    // sub-block j in the low (even j) or high nibbles of qs[32 (j / 2)..]; Q5_K's 5th bit of
    // value 32 j + l is bit j of qh[l].
    const uint8_t *qs =
        p + (kind == SP_PKK_Q5 ? offsetof(sp_block_q5_k, qs) : offsetof(sp_block_q4_k, qs));
    const uint8_t *qh = p + offsetof(sp_block_q5_k, qh);
    for (int j = 0; j < 8; j++)
        for (int l = 0; l < 32; l += 4) {
            const uint32_t nib = load32(qs + 32 * (j / 2) + l);
            uint32_t q = ((j & 1) ? nib >> 4 : nib) & NIB;
            if (kind == SP_PKK_Q5)
                q |= ((load32(qh + l) >> j) & 0x01010101u) << 4;
            store32(u->q + 32 * j + l, q);
        }
    for (int j = 0; j < 8; j++)
        sp_k_scale_min(p + offsetof(sp_block_q4_k, scales), j, &u->sc[j], &u->mn[j]);
    memset(u->sc + 8, 0, 8 * sizeof u->sc[0]);
    memcpy(&u->d, p + offsetof(sp_block_q4_k, d), sizeof u->d);
    memcpy(&u->dmin, p + offsetof(sp_block_q4_k, dmin), sizeof u->dmin);
}

/* Output n of a group (its super-block u) into record rec (zeroed) and trailer entry dd. Row r
 * of chunk c holds inputs 32c + 4r .. + 3: four quants, one 32-bit word of u->q. */
static void put_output(const int kind, const kblock *u, int n, uint8_t *rec, sp_f16 *dd) {
    uint8_t *high = rec + SP_PKK_NIB_BYTES, *pairs = rec + sp__pkk_sc_at(kind);
    for (int c = 0; c < 8; c++) {
        const uint8_t *q = u->q + 32 * c;
        // Line p: rows p (low nibbles) and p + 4 (high nibbles).
        for (int p = 0; p < 4; p++)
            store32(rec + 256 * c + 64 * p + 4 * n,
                    (load32(q + 4 * p) & NIB) | ((load32(q + 4 * p + 16) & NIB) << 4));
        if (kind == SP_PKK_Q5) {
            uint32_t bits = 0;
            for (int r = 0; r < 8; r++)
                bits |= ((load32(q + 4 * r) >> 4) & 0x01010101u) << r;
            store32(high + 64 * c + 4 * n, bits);
        } else if (kind == SP_PKK_Q6) {
            for (int v = 0; v < 2; v++) {
                uint32_t bits = 0;
                for (int r = 4 * v; r < 4 * v + 4; r++)
                    bits |= ((load32(q + 4 * r) >> 4) & 0x03030303u) << (2 * (r % 4));
                store32(high + 128 * c + 64 * v + 4 * n, bits);
            }
        }
    }
    const int n_sc = kind == SP_PKK_Q6 ? 16 : 8;
    for (int j = 0; j < n_sc; j++)
        pairs[32 * (j / 2) + 2 * n + j % 2] = (uint8_t)u->sc[j]; // Q6_K: int8 bits
    if (kind != SP_PKK_Q6)
        for (int j = 0; j < 8; j++)
            pairs[128 + 32 * (j / 2) + 2 * n + j % 2] = (uint8_t)u->mn[j];
    memcpy(&dd[n], &u->d, sizeof u->d);
    if (kind != SP_PKK_Q6)
        memcpy(&dd[SP_PKK_GROUP + n], &u->dmin, sizeof u->dmin);
}

/* Rows past n_out (the last group's padding) are zero quants with zero scales. */
void sp__pkk_pack(sp_dtype t, const void *w, size_t wrb, int64_t n_in, int64_t n_out, void *dst) {
    SP_ASSERT(sp__pkk_pack_bytes(t, n_in, n_out) > 0);
    const int kind = sp__pkk_kind(t);
    const int64_t nb = n_in / SP_QK_K, groups = (n_out + SP_PKK_GROUP - 1) / SP_PKK_GROUP;
    const size_t block_bytes = (size_t)sp_dtype_get(t)->type_size;
    const size_t rec_bytes = sp__pkk_rec_bytes(kind), group_bytes = sp__pkk_group_bytes(kind, nb);
    memset(dst, 0, (size_t)groups * group_bytes);
    kblock u;
    for (int64_t g = 0; g < groups; g++) {
        uint8_t *group = (uint8_t *)dst + (size_t)g * group_bytes;
        uint8_t *trailer = group + (size_t)nb * rec_bytes;
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *rec = group + (size_t)b * rec_bytes;
            sp_f16 *dd = (sp_f16 *)(trailer + (size_t)b * sp__pkk_dd_bytes(kind));
            for (int n = 0; n < SP_PKK_GROUP && g * SP_PKK_GROUP + n < n_out; n++) {
                const uint8_t *row = (const uint8_t *)w + (size_t)(g * SP_PKK_GROUP + n) * wrb;
                unpack_block(kind, row + (size_t)b * block_bytes, &u);
                put_output(kind, &u, n, rec, dd);
            }
        }
    }
}

size_t sp__pkk_act_pack_bytes(sp_dtype vt, int64_t n_in, int64_t n_rows) {
    if (vt != SP_DTYPE_Q8_K || n_in <= 0 || n_in % SP_QK_K || n_rows < 0)
        return 0;
    return (size_t)n_rows * (size_t)(n_in / SP_QK_K) * SP_PKK_ACT_BYTES;
}

void sp__pkk_act_pack(sp_dtype vt, const void *xq, int64_t n_in, int64_t r, int64_t n_rows,
                      void *dst) {
    SP_ASSERT(sp__pkk_act_pack_bytes(vt, n_in, n_rows) > 0 && r >= 0 && r < n_rows);
    const int64_t nb = n_in / SP_QK_K;
    const sp__pkk_slice s = sp__pkk_slice_of(dst, nb, n_rows, r / 16 * 16);
    const int m = (int)(r % 16);
    const sp_block_q8_k *blk = xq;
    for (int64_t b = 0; b < nb; b++) {
        sp__pkk_aux aux;
        memset(&aux, 0, sizeof aux);
        memcpy(aux.bsums, blk[b].bsums, sizeof aux.bsums);
        for (int j = 0; j < 8; j++) // |bsums| <= 16 * 128: the pair sums fit int16
            aux.bs[j] = (int16_t)(blk[b].bsums[2 * j] + blk[b].bsums[2 * j + 1]);
        aux.d = blk[b].d;
        memcpy((int8_t *)sp__pkk_act_qs(s, b, m), blk[b].qs, SP_QK_K);
        memcpy((sp__pkk_aux *)sp__pkk_act_aux(s, b, m), &aux, sizeof aux);
    }
}

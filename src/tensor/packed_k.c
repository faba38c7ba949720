/* The packed K-quant and Q8_K layouts of packed_k.h, written in plain C (every x86 table that
 * packs uses them, whatever instructions it runs on), and the table entries that put them beside
 * packed.h's Q8_0/Q4_0 layouts. */
#include "tensor/packed_k.h"

#include <string.h>

#include "base/err.h"
#include "tensor/packed.h"

static size_t pkk_pack_bytes(sp_dtype t, int64_t n_in, int64_t n_out) {
    const int kind = sp__pkk_kind(t);
    if (kind < 0 || n_in <= 0 || n_in % SP_QK_K || n_out <= 0)
        return 0;
    const int64_t groups = (n_out + SP_PKK_GROUP - 1) / SP_PKK_GROUP;
    return (size_t)groups * sp__pkk_group_bytes(kind, n_in / SP_QK_K);
}

/* One super-block of a weight row, unpacked: the stored quants (Q6_K's with its offset, 0..63),
 * the sub-block scales (8, or Q6_K's 16) and mins (8), and the F16 scales. */
typedef struct kblock {
    uint8_t q[SP_QK_K];
    int sc[16], mn[8];
    sp_f16 d, dmin;
} kblock;

static void k_scale_min(const uint8_t s[SP_K_SCALE_SIZE], int j, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

static void unpack_block(const int kind, const uint8_t *p, kblock *u) {
    if (kind == SP_PKK_Q6) {
        sp_block_q6_k b;
        memcpy(&b, p, sizeof b);
        for (int k = 0; k < SP_QK_K; k++) {
            // As in dequantization (quant.c): values l, l+32, l+64, l+96 of a half share ql[l],
            // ql[l+32] and the four 2-bit fields of qh[l].
            const int half = k / 128, r = k % 128, quarter = r / 32, l = r % 32;
            const int lo = b.ql[64 * half + l + 32 * (quarter & 1)];
            const int hi = (b.qh[32 * half + l] >> (2 * quarter)) & 3;
            u->q[k] = (uint8_t)(((quarter & 2) ? lo >> 4 : lo & 15) | (hi << 4));
        }
        for (int j = 0; j < 16; j++)
            u->sc[j] = b.scales[j];
        memset(u->mn, 0, sizeof u->mn);
        u->d = b.d;
        u->dmin = 0;
        return;
    }
    // Q4_K and Q5_K share the scales, the nibbles and the two F16 scales.
    sp_block_q5_k b;
    const uint8_t *qh = NULL;
    if (kind == SP_PKK_Q5) {
        memcpy(&b, p, sizeof b);
        qh = b.qh;
    } else {
        sp_block_q4_k b4;
        memcpy(&b4, p, sizeof b4);
        b.d = b4.d;
        b.dmin = b4.dmin;
        memcpy(b.scales, b4.scales, sizeof b.scales);
        memcpy(b.qs, b4.qs, sizeof b.qs);
    }
    for (int k = 0; k < SP_QK_K; k++) {
        const int j = k / 32, l = k % 32;
        const uint8_t byte = b.qs[32 * (j / 2) + l];
        u->q[k] = (uint8_t)(((j & 1) ? byte >> 4 : byte & 15) | (qh ? ((qh[l] >> j) & 1) << 4 : 0));
    }
    for (int j = 0; j < 8; j++)
        k_scale_min(b.scales, j, &u->sc[j], &u->mn[j]);
    memset(u->sc + 8, 0, 8 * sizeof u->sc[0]);
    u->d = b.d;
    u->dmin = b.dmin;
}

/* Output n of a group (its super-block u) into record rec and trailer entry dd. */
static void put_output(const int kind, const kblock *u, int n, uint8_t *rec, sp_f16 *dd) {
    uint8_t *high = rec + SP_PKK_NIB_BYTES, *pairs = rec + sp__pkk_sc_at(kind);
    for (int k = 0; k < SP_QK_K; k++) {
        // Chunk c, row r, byte 4n + i of a 64-byte line.
        const int c = k / 32, r = k % 32 / 4, at = 4 * n + k % 4, q = u->q[k];
        rec[256 * c + 64 * (r % 4) + at] |= (uint8_t)((q & 15) << (4 * (r / 4)));
        if (kind == SP_PKK_Q5)
            high[64 * c + at] |= (uint8_t)(((q >> 4) & 1) << r);
        if (kind == SP_PKK_Q6)
            high[128 * c + 64 * (r / 4) + at] |= (uint8_t)(((q >> 4) & 3) << (2 * (r % 4)));
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
static void pkk_pack(sp_dtype t, const void *w, size_t wrb, int64_t n_in, int64_t n_out,
                     void *dst) {
    SP_ASSERT(pkk_pack_bytes(t, n_in, n_out) > 0);
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

static size_t pkk_act_pack_bytes(sp_dtype vt, int64_t n_in, int64_t n_rows) {
    if (vt != SP_DTYPE_Q8_K || n_in <= 0 || n_in % SP_QK_K || n_rows < 0)
        return 0;
    return (size_t)n_rows * (size_t)(n_in / SP_QK_K) * SP_PKK_ACT_BYTES;
}

static void pkk_act_pack(sp_dtype vt, const void *xq, int64_t n_in, int64_t r, int64_t n_rows,
                         void *dst) {
    SP_ASSERT(pkk_act_pack_bytes(vt, n_in, n_rows) > 0 && r >= 0 && r < n_rows);
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

// The table entries: K-quants and Q8_K here, the other types to packed.h's layouts.

static size_t pack_bytes(sp_dtype t, int64_t n_in, int64_t n_out) {
    return sp__pkk_kind(t) >= 0 ? pkk_pack_bytes(t, n_in, n_out)
                                : sp__pk_pack_bytes(t, n_in, n_out);
}

static void pack(sp_dtype t, const void *w, size_t wrb, int64_t n_in, int64_t n_out, void *dst) {
    if (sp__pkk_kind(t) >= 0)
        pkk_pack(t, w, wrb, n_in, n_out, dst);
    else
        sp__pk_pack(t, w, wrb, n_in, n_out, dst);
}

static size_t act_pack_bytes(sp_dtype vt, int64_t n_in, int64_t n_rows) {
    return vt == SP_DTYPE_Q8_K ? pkk_act_pack_bytes(vt, n_in, n_rows)
                               : sp__pk_act_pack_bytes(vt, n_in, n_rows);
}

static void act_pack(sp_dtype vt, const void *xq, int64_t n_in, int64_t r, int64_t n_rows,
                     void *dst) {
    if (vt == SP_DTYPE_Q8_K)
        pkk_act_pack(vt, xq, n_in, r, n_rows, dst);
    else
        sp__pk_act_pack(vt, xq, n_in, r, n_rows, dst);
}

void sp__pkk_set_layouts(sp_kernels *k) {
    k->pack_bytes = pack_bytes;
    k->pack = pack;
    k->act_pack_bytes = act_pack_bytes;
    k->act_pack = act_pack;
}

/* The walk of a packed Q8_0/Q4_0 product (packed.h), written once for the files that multiply
 * packed weights (packed_avx2.c, packed_avx512.c, kernels_amx.c). Each of them defines, before
 * including this header, the three steps the walk inlines:
 *
 *   pk_slice(xs, state)   before a slice of up to 16 activation rows (e.g. tile configuration;
 *                         state starts at 0 for each call);
 *   pk_group(kind, ints, scales, xs, nb, y, ldy, keep)
 *                         every row of the slice times one group of 16 outputs over nb blocks,
 *                         y at the group's first output, writing only the outputs whose bit is
 *                         set in keep;
 *   pk_done(state)        after the call's last group;
 *
 * and, where it defines SP_PK_GROUP_PAIRS (and SP_PK_PAIR_ROWS, the fewest rows worth it),
 *
 *   pk_group_pair(kind, ints, scales, gs, xs, nb, y, ldy, keep0, keep1)
 *                         the same for two adjacent groups (the second gs bytes after the
 *                         first), taken wherever a chunk has two groups left;
 *
 * and then puts sp__pk_matmul_q8_0 and sp__pk_matmul_q4_0 in its table, or entries of kinds of its
 * own made with SP_PK_MATMUL_ENTRY (kind: bit 0 set for Q4_0, higher bits the file's variants).
 * Groups of outputs are taken SP_PK_GROUP_CHUNK at a time so their weights stay in cache while
 * every slice passes over them. Include from one file per instruction set only (each compiles its
 * own copy). */
#ifndef SP_TENSOR_PACKED_WALK_H
#define SP_TENSOR_PACKED_WALK_H

#include "base/err.h"
#include "base/util.h"
#include "tensor/packed.h"

/* The outputs of group g in [o0, o1), as bits. */
SP_PK_INLINE uint32_t sp__pk_keep(int64_t o0, int64_t o1, int64_t g) {
    const int64_t lo = SP_MAX(o0, g * SP_PK_GROUP) - g * SP_PK_GROUP;
    const int64_t hi = SP_MIN(o1, g * SP_PK_GROUP + SP_PK_GROUP) - g * SP_PK_GROUP;
    return ((1u << hi) - 1) & ~((1u << lo) - 1);
}

SP_PK_INLINE void sp__pk_matmul(const int kind, const void *w, const void *x, int64_t n_in,
                                int64_t n_rows, float *y, int64_t ldy, int64_t o0, int64_t o1,
                                int *state) {
    SP_ASSERT(n_in % SP_QK8_0 == 0 && n_rows >= 0 && o0 <= o1);
    if (n_rows == 0 || o0 == o1)
        return;
    const int64_t nb = n_in / SP_QK8_0;
    const size_t ints_bytes = (size_t)nb * sp__pk_block_bytes(kind & 1);
    const size_t group_bytes = ints_bytes + (size_t)nb * SP_PK_GROUP * sizeof(sp_f16);
    const int64_t g0 = o0 / SP_PK_GROUP, g1 = (o1 + SP_PK_GROUP - 1) / SP_PK_GROUP;
    for (int64_t gc = g0; gc < g1; gc += SP_PK_GROUP_CHUNK) {
        const int64_t gce = g1 - gc < SP_PK_GROUP_CHUNK ? g1 : gc + SP_PK_GROUP_CHUNK;
        for (int64_t m0 = 0; m0 < n_rows; m0 += 16) {
            const sp__pk_slice xs = sp__pk_slice_of(x, nb, n_rows, m0);
            pk_slice(&xs, state);
            for (int64_t g = gc; g < gce;) {
                const uint8_t *ints = (const uint8_t *)w + (size_t)g * group_bytes;
                const sp_f16 *scales = (const sp_f16 *)(ints + ints_bytes);
                float *yg = y + m0 * ldy + g * SP_PK_GROUP;
#ifdef SP_PK_GROUP_PAIRS
                if (g + 1 < gce && xs.rows >= SP_PK_PAIR_ROWS) {
                    pk_group_pair(kind, ints, scales, group_bytes, xs, nb, yg, ldy,
                                  sp__pk_keep(o0, o1, g), sp__pk_keep(o0, o1, g + 1));
                    g += 2;
                    continue;
                }
#endif
                pk_group(kind, ints, scales, xs, nb, yg, ldy, sp__pk_keep(o0, o1, g));
                g++;
            }
        }
    }
}

/* A kernel table entry (matmul_packed) over sp__pk_matmul for one kind (w_row_bytes and
 * x_row_bytes unused). */
#define SP_PK_MATMUL_ENTRY(name, kind)                                                             \
    static void name(const void *w, size_t wrb, const void *x, size_t xrb, int64_t n_in,           \
                     int64_t n_rows, float *y, int64_t ldy, int64_t o0, int64_t o1) {              \
        (void)wrb, (void)xrb;                                                                      \
        int state = 0;                                                                             \
        sp__pk_matmul(kind, w, x, n_in, n_rows, y, ldy, o0, o1, &state);                           \
        pk_done(state);                                                                            \
    }

SP_PK_MATMUL_ENTRY(sp__pk_matmul_q8_0, 0)
SP_PK_MATMUL_ENTRY(sp__pk_matmul_q4_0, 1)

#endif

/* The walk of a packed K-quant product (packed_k.h), written once for the files that multiply
 * them. Each defines, before including this header,
 *
 *   pkk_group(kind, w, nb, xs, y, ldy, keep)   (kind: SP_PKK_Q4, Q5 or Q6, plus the file's bits)
 *       every row of slice xs times one packed group w (nb records and the trailer), y at the
 *       group's first output of the slice's first row, writing only the outputs whose bit is
 *       set in keep;
 *
 * and then puts entries made with SP_PKK_MATMUL_ENTRY in its table. Groups are taken
 * SP_PKK_GROUP_CHUNK at a time so that their weights stay in cache while every slice of 16
 * rows passes over them. Include from one file per instruction set only. */
#ifndef SP_TENSOR_PACKED_K_WALK_H
#define SP_TENSOR_PACKED_K_WALK_H

#include "base/err.h"
#include "base/util.h"
#include "tensor/packed_k.h"

SP_PKK_INLINE void sp__pkk_matmul(const int kind, const void *w, const void *x, int64_t n_in,
                                  int64_t n_rows, float *y, int64_t ldy, int64_t o0, int64_t o1) {
    SP_ASSERT(n_in % SP_QK_K == 0 && n_rows >= 0 && o0 >= 0 && o0 <= o1);
    if (n_rows == 0 || o0 == o1)
        return;
    const int64_t nb = n_in / SP_QK_K;
    const size_t group_bytes = sp__pkk_group_bytes(kind & SP_PKK_TYPE_MASK, nb);
    const int64_t g0 = o0 / SP_PKK_GROUP, g1 = (o1 + SP_PKK_GROUP - 1) / SP_PKK_GROUP;
    for (int64_t gc = g0; gc < g1; gc += SP_PKK_GROUP_CHUNK) {
        const int64_t gce = SP_MIN(g1, gc + SP_PKK_GROUP_CHUNK);
        for (int64_t m0 = 0; m0 < n_rows; m0 += 16) {
            const sp__pkk_slice xs = sp__pkk_slice_of(x, nb, n_rows, m0);
            for (int64_t g = gc; g < gce; g++) {
                const int64_t lo = SP_MAX(o0, g * SP_PKK_GROUP) - g * SP_PKK_GROUP;
                const int64_t hi = SP_MIN(o1, g * SP_PKK_GROUP + SP_PKK_GROUP) - g * SP_PKK_GROUP;
                const uint32_t keep = ((1u << hi) - 1) & ~((1u << lo) - 1);
                pkk_group(kind, (const uint8_t *)w + (size_t)g * group_bytes, nb, xs,
                          y + m0 * ldy + g * SP_PKK_GROUP, ldy, keep);
            }
        }
    }
}

/* A kernel table entry (matmul_packed) over sp__pkk_matmul for one kind (w_row_bytes and
 * x_row_bytes unused). */
#define SP_PKK_MATMUL_ENTRY(name, kind)                                                            \
    static void name(const void *w, size_t wrb, const void *x, size_t xrb, int64_t n_in,           \
                     int64_t n_rows, float *y, int64_t ldy, int64_t o0, int64_t o1) {              \
        (void)wrb, (void)xrb;                                                                      \
        sp__pkk_matmul(kind, w, x, n_in, n_rows, y, ldy, o0, o1);                                  \
    }
#endif

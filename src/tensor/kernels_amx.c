/* AMX (Advanced Matrix Extensions, int8 tiles) products of packed Q8_0 and Q4_0 weights (layouts
 * and numerics in packed.h, the same bits as the avx512 table's VNNI products), chosen at run
 * time as the "amx" table: the avx512 table with these matmul_packed entries and its Q8_0 weights
 * packed signed, as tdpbssd takes them. Per block, one
 * tdpbssd computes the exact int32 dots of up to 16 activation rows with the group's 16 outputs;
 * row counts of 1 and 2, where a tile would be mostly empty (single-sequence decode), go to the
 * VNNI kernel. */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "base/err.h"
#include "base/util.h"
#include "tensor/packed_x86.h"

#define INLINE static inline __attribute__((always_inline))

enum { VNNI_ROWS = 2 }; // row counts up to this go to the VNNI kernel

/* Palette 1. Tiles: 0 and 3 the int32 results (rows x 16), 1 and 4 activations (rows x 32
 * bytes), 2 and 5 weights (8 x 64 bytes): two blocks in flight. */
typedef struct tile_config {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

static void configure(int rows) {
    tile_config c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int t = 0; t < 6; t += 3) {
        c.rows[t + 0] = (uint8_t)rows, c.colsb[t + 0] = 64;
        c.rows[t + 1] = (uint8_t)rows, c.colsb[t + 1] = 32;
        c.rows[t + 2] = 8, c.colsb[t + 2] = 64;
    }
    // GCC 12 does not count the whole of c as read by ldtilecfg and may drop the stores above
    // as dead; an empty asm that reads c keeps them.
    __asm__ volatile("" : : "m"(c));
    _tile_loadconfig(&c);
}

/* The epilogue of one block for MR activation rows: c holds the int32 results (row m at
 * c + 16 m), dw the weights' scales of the block, dx[m] the rows' scales. */
INLINE void accumulate(const int MR, __m512 *acc, const int32_t *c, __m512 dw, const float *dx) {
#pragma GCC unroll 16
    for (int m = 0; m < MR; m++) {
        const __m512 s = _mm512_cvtepi32_ps(_mm512_load_si512(c + 16 * m));
        acc[m] = _mm512_fmadd_ps(s, _mm512_mul_ps(dw, _mm512_set1_ps(dx[m])), acc[m]);
    }
}

/* The same rows stored as a tile at dst (64-byte aligned), then an empty asm that reads them:
 * GCC 12 does not count them as read by the tile load and would drop the stores. */
INLINE void q4_tile(const uint8_t *nib, uint8_t *dst) {
    const __m512i mask = _mm512_set1_epi8(15), eight = _mm512_set1_epi8(8);
#pragma GCC unroll 4
    for (int p = 0; p < 4; p++) {
        const __m512i v = _mm512_loadu_si512(nib + 64 * p);
        _mm512_store_si512(dst + 64 * p, _mm512_sub_epi8(_mm512_and_si512(v, mask), eight));
        _mm512_store_si512(dst + 64 * (p + 4),
                           _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(v, 4), mask), eight));
    }
    __asm__ volatile("" : : "m"(*(const uint8_t(*)[SP_PK_TILE_BYTES])dst));
}

/* Block b on tiles (C, A, B): the int32 results of the group's 16 outputs for the rows, into
 * buf (row m at buf + 16 m). A Q4_0 block's tile is unpacked into wbuf first. */
#define ISSUE(C, A, B, buf, wbuf, b)                                                               \
    do {                                                                                           \
        const uint8_t *t_ = ints + (size_t)(b)*BB;                                                 \
        const int8_t *a_ = xs.ints + (size_t)(b)*MR * SP_QK8_0;                                    \
        sp__pk_prefetch(t_ + SP_PK_PREFETCH_AHEAD * BB, BB / 64);                                  \
        if (Q4) {                                                                                  \
            q4_tile(t_, wbuf);                                                                     \
            t_ = wbuf;                                                                             \
        }                                                                                          \
        _tile_zero(C);                                                                             \
        _tile_loadd(A, a_, SP_QK8_0);                                                              \
        _tile_loadd(B, t_, 64);                                                                    \
        _tile_dpbssd(C, A, B);                                                                     \
        _tile_stored(C, buf, 64);                                                                  \
    } while (0)

/* MR activation rows (the slice xs, MR = xs.rows) times one packed group (ints, scales) over nb
 * blocks (Q8_0, or Q4_0 when Q4); y: row 0 at the group's first output, only the lanes in `keep`
 * written. The tiles must be configured for MR rows. */
INLINE void group_rows(const int Q4, const int MR, const uint8_t *ints, const sp_f16 *scales,
                       sp__pk_slice xs, int64_t nb, float *y, int64_t ldy, __mmask16 keep) {
    const size_t BB = Q4 ? SP_PK_Q4_TILE_BYTES : SP_PK_TILE_BYTES;
    int32_t c0[16 * 16] __attribute__((aligned(64)));
    int32_t c1[16 * 16] __attribute__((aligned(64)));
    uint8_t w0[SP_PK_TILE_BYTES] __attribute__((aligned(64)));
    uint8_t w1[SP_PK_TILE_BYTES] __attribute__((aligned(64)));
    __m512 acc[16];
#pragma GCC unroll 16
    for (int m = 0; m < MR; m++)
        acc[m] = _mm512_setzero_ps();
    // Two blocks in flight: the tile unit computes and stores block b + 1 while the vector units
    // scale and add block b (tiles 0-2 and buffers c0, w0 for even b, 3-5 and c1, w1 for odd).
    ISSUE(0, 1, 2, c0, w0, 0);
    for (int64_t b = 0; b < nb; b += 2) {
        if (b + 1 < nb)
            ISSUE(3, 4, 5, c1, w1, b + 1);
        accumulate(MR, acc, c0, sp__pk_scales(scales, b), xs.scales + b * MR);
        if (b + 1 >= nb)
            break;
        if (b + 2 < nb)
            ISSUE(0, 1, 2, c0, w0, b + 2);
        accumulate(MR, acc, c1, sp__pk_scales(scales, b + 1), xs.scales + (b + 1) * MR);
    }
#pragma GCC unroll 16
    for (int m = 0; m < MR; m++)
        _mm512_mask_storeu_ps(y + m * ldy, keep, acc[m]);
}

#define GROUP_ROWS_CASE(MR)                                                                        \
    case MR:                                                                                       \
        group_rows(Q4, MR, ints, scales, xs, nb, y, ldy, keep);                                    \
        break;

INLINE void group_rows_any(const int Q4, const uint8_t *ints, const sp_f16 *scales, sp__pk_slice xs,
                           int64_t nb, float *y, int64_t ldy, __mmask16 keep) {
    switch (xs.rows) {
    case 1:
    case 2:
        sp__pk_group_vnni(Q4, ints, scales, xs, nb, y, ldy, keep);
        break;
        GROUP_ROWS_CASE(3)
        GROUP_ROWS_CASE(4)
        GROUP_ROWS_CASE(5)
        GROUP_ROWS_CASE(6)
        GROUP_ROWS_CASE(7)
        GROUP_ROWS_CASE(8)
        GROUP_ROWS_CASE(9)
        GROUP_ROWS_CASE(10)
        GROUP_ROWS_CASE(11)
        GROUP_ROWS_CASE(12)
        GROUP_ROWS_CASE(13)
        GROUP_ROWS_CASE(14)
        GROUP_ROWS_CASE(15)
        GROUP_ROWS_CASE(16)
    default:
        SP_ASSERT(!"row count");
    }
}

/* Tiles are configured for a slice's row count when it changes (state: the configured count, 0
 * for none); slices of 1 or 2 rows go to the VNNI kernel and need none. */
SP_PK_INLINE void pk_slice(const sp__pk_slice *xs, int *state) {
    if (xs->rows > VNNI_ROWS && xs->rows != *state) {
        configure(xs->rows);
        *state = xs->rows;
    }
}

SP_PK_INLINE void pk_group(const int Q4, const uint8_t *ints, const sp_f16 *scales, sp__pk_slice xs,
                           int64_t nb, float *y, int64_t ldy, uint32_t keep) {
    group_rows_any(Q4, ints, scales, xs, nb, y, ldy, (__mmask16)keep);
}

SP_PK_INLINE void pk_done(int state) {
    if (state)
        _tile_release();
}

#include "tensor/packed_walk.h"

void sp__kernels_amx_init(sp_kernels *k) {
    sp__pk_set_layouts(k, 0);
    k->matmul_packed[SP_DTYPE_Q8_0] = sp__pk_matmul_q8_0;
    k->matmul_packed[SP_DTYPE_Q4_0] = sp__pk_matmul_q4_0;
}

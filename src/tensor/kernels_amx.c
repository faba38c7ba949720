/* AMX (Advanced Matrix Extensions, int8 tiles) kernels for Q8_0 and Q4_0 weights, chosen at run
 * time as the "amx" table: the avx512 table plus these entries.
 *
 * Weights are rewritten once, at model load (pack), into groups of 16 output rows; per group
 * and block of 32 inputs, 512 bytes in the tile unit's "VNNI" order (row k4 of the tile holds,
 * for each of the 16 outputs n, its 4 weights 4 k4 .. 4 k4 + 3), then per group the blocks'
 * 16 F16 scales:
 *
 *   group g: [ block 0: 8 x 64 bytes | block 1 | ... | block nb-1 ][ nb x 16 F16 scales ]
 *
 * so one tile load takes the 16 x 32 weights of a block, and a decode step streams the packed
 * matrix front to back. Q4_0 packs the same way in half the bytes: per block 4 rows of 64 bytes
 * whose low nibbles are tile rows 0-3 and high nibbles rows 4-7 (the 4-bit values q, standing
 * for q - 8), so a block's tile is 4 loads, masks, shifts and subtractions away; its size is that
 * of the Q4_0 rows it replaces. Activation rows come in act_pack's layout (below): per 16-row slice
 * and block a contiguous tile of int8 values and the rows' F32 scales.
 *
 * Per block, one tdpbssd computes the exact int32 dot S of every (activation row, output) pair;
 * then, as 16 float lanes over the outputs,
 *
 *   acc = fma((float)S, fp32(d_w) * fp32(d_x), acc)        block by block, acc starting at 0,
 *
 * which is the numerics of this table for Q8_0 and Q4_0 (llama.cpp's AMX kernels also convert
 * whole block sums; for Q4_0 the weights in S are q - 8). Every output's arithmetic is that chain
 * whatever the number of rows, their grouping or the [o0, o1) split, so the invariance contract of
 * kernels.h holds. */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "base/err.h"
#include "base/util.h"
#include "tensor/kernels.h"
#include "tensor/quant.h"

#define INLINE static inline __attribute__((always_inline))

enum {
    GROUP = 16,          // output rows per packed group (tile columns)
    BLOCK_BYTES = 34,    // a Q8_0 block: F16 scale, 32 int8
    TILE_BYTES = 512,    // the tile of one block of a group
    Q4_TILE_BYTES = 256, // the packed nibbles of one Q4_0 block of a group
    GROUP_CHUNK = 8,     // groups whose weights stay in cache across row groups
    PREFETCH_AHEAD = 4,  // blocks ahead that the tiles are prefetched
    VNNI_ROWS = 2        // row counts up to this go to group_rows_vnni
};

/* Packed bytes per block of a group: the weights (tile or nibbles), then (at the group's end)
 * the 16 scales. */
static size_t packed_block_bytes(sp_dtype t) {
    return t == SP_DTYPE_Q8_0 ? TILE_BYTES : Q4_TILE_BYTES;
}

static size_t pack_bytes(sp_dtype t, int64_t n_in, int64_t n_out) {
    if ((t != SP_DTYPE_Q8_0 && t != SP_DTYPE_Q4_0) || n_in <= 0 || n_in % SP_QK8_0 || n_out <= 0)
        return 0;
    const size_t groups = (size_t)((n_out + GROUP - 1) / GROUP), nb = (size_t)(n_in / SP_QK8_0);
    return groups * nb * (packed_block_bytes(t) + GROUP * sizeof(sp_f16));
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
    const int64_t nb = n_in / SP_QK8_0, groups = (n_out + GROUP - 1) / GROUP;
    const size_t bb = packed_block_bytes(t);
    uint8_t *out = dst;
    for (int64_t g = 0; g < groups; g++) {
        uint8_t *ints = out + (size_t)g * (size_t)nb * (bb + GROUP * sizeof(sp_f16));
        sp_f16 *scales = (sp_f16 *)(ints + (size_t)nb * bb);
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *tile = ints + (size_t)b * bb;
            if (t == SP_DTYPE_Q4_0)
                memset(tile, 0, bb);
            for (int n = 0; n < GROUP; n++) {
                uint8_t q[SP_QK8_0];
                const sp_f16 d = block_weights(t, w, wrb, n_out, g * GROUP + n, b, q);
                memcpy(&scales[b * GROUP + n], &d, sizeof d);
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
INLINE void q4_rows(const uint8_t *nib, __m512i row[8]) {
    const __m512i mask = _mm512_set1_epi8(15), eight = _mm512_set1_epi8(8);
#pragma GCC unroll 4
    for (int p = 0; p < 4; p++) {
        const __m512i v = _mm512_loadu_si512(nib + 64 * p);
        row[p] = _mm512_sub_epi8(_mm512_and_si512(v, mask), eight);
        row[p + 4] = _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(v, 4), mask), eight);
    }
}

/* Activations, as act_pack lays them out: the rows in slices of 16 (the last slice holds the
 * remaining rows_s = min(16, n_rows - 16 s)); slice s starts at byte 16 s nb ACT_BLOCK_BYTES and
 * holds, per block b, its rows' 32 values (rows_s x 32 bytes, a tile that loads with stride 32),
 * then per block its rows' scales as F32:
 *
 *   slice s: [ block 0: rows_s x 32 int8 | block 1 | ... ][ block 0: rows_s F32 | block 1 | ... ]
 *
 * so a tile load reads contiguous bytes and the float step takes each scale as a broadcast. */
enum { ACT_BLOCK_BYTES = SP_QK8_0 + (int)sizeof(float) };

static size_t act_pack_bytes(sp_dtype t, int64_t n_in, int64_t n_rows) {
    if (t != SP_DTYPE_Q8_0 || n_in <= 0 || n_in % SP_QK8_0 || n_rows < 0)
        return 0;
    return (size_t)n_rows * (size_t)(n_in / SP_QK8_0) * ACT_BLOCK_BYTES;
}

typedef struct act_slice {
    const int8_t *ints;  // block b, row m at ints + (b rows + m) 32
    const float *scales; // block b, row m at scales[b rows + m]
    int rows;
} act_slice;

static act_slice slice_of(const void *x, int64_t nb, int64_t n_rows, int64_t m0) {
    const int rows = n_rows - m0 < 16 ? (int)(n_rows - m0) : 16;
    const int8_t *base = (const int8_t *)x + (size_t)m0 * (size_t)nb * ACT_BLOCK_BYTES;
    return (act_slice){base, (const float *)(base + (size_t)nb * (size_t)rows * SP_QK8_0), rows};
}

static void act_pack(sp_dtype t, const void *xq, int64_t n_in, int64_t r, int64_t n_rows,
                     void *dst) {
    SP_ASSERT(act_pack_bytes(t, n_in, n_rows) > 0 && r >= 0 && r < n_rows);
    const int64_t nb = n_in / SP_QK8_0;
    const act_slice s = slice_of(dst, nb, n_rows, r / 16 * 16);
    const int m = (int)(r % 16);
    const sp_block_q8_0 *blk = xq;
    for (int64_t b = 0; b < nb; b++) {
        memcpy((int8_t *)s.ints + ((size_t)b * (size_t)s.rows + (size_t)m) * SP_QK8_0, blk[b].qs,
               SP_QK8_0);
        ((float *)s.scales)[b * s.rows + m] = sp_f16_to_f32(blk[b].d);
    }
}

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

/* The weights' scales of block b of a group, as floats. */
INLINE __m512 dw_of(const sp_f16 *scales, int64_t b) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(scales + b * GROUP)));
}

INLINE void prefetch_lines(const void *p, int lines) {
#pragma GCC unroll 8
    for (int l = 0; l < lines; l++)
        _mm_prefetch((const char *)p + 64 * l, _MM_HINT_T0);
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
    __asm__ volatile("" : : "m"(*(const uint8_t(*)[TILE_BYTES])dst));
}

/* Block b on tiles (C, A, B): the int32 results of the group's 16 outputs for the rows, into
 * buf (row m at buf + 16 m). A Q4_0 block's tile is unpacked into wbuf first. */
#define ISSUE(C, A, B, buf, wbuf, b)                                                               \
    do {                                                                                           \
        const uint8_t *t_ = ints + (size_t)(b)*BB;                                                 \
        const int8_t *a_ = xs.ints + (size_t)(b)*MR * SP_QK8_0;                                    \
        prefetch_lines(t_ + PREFETCH_AHEAD * BB, BB / 64);                                         \
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
                       act_slice xs, int64_t nb, float *y, int64_t ldy, __mmask16 keep) {
    const size_t BB = Q4 ? Q4_TILE_BYTES : TILE_BYTES;
    int32_t c0[16 * 16] __attribute__((aligned(64)));
    int32_t c1[16 * 16] __attribute__((aligned(64)));
    uint8_t w0[TILE_BYTES] __attribute__((aligned(64)));
    uint8_t w1[TILE_BYTES] __attribute__((aligned(64)));
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
        accumulate(MR, acc, c0, dw_of(scales, b), xs.scales + b * MR);
        if (b + 1 >= nb)
            break;
        if (b + 2 < nb)
            ISSUE(0, 1, 2, c0, w0, b + 2);
        accumulate(MR, acc, c1, dw_of(scales, b + 1), xs.scales + (b + 1) * MR);
    }
#pragma GCC unroll 16
    for (int m = 0; m < MR; m++)
        _mm512_mask_storeu_ps(y + m * ldy, keep, acc[m]);
}

/* The same products on AVX512-VNNI for a few rows, where a tile would be mostly empty (single-
 * sequence decode): row k4 of a packed tile is a vector of the 16 outputs' weights at 4 k4 ..
 * 4 k4 + 3, so vpdpbusd with the row's 4 activations broadcast gives each output's products.
 * vpdpbusd takes one operand unsigned: the activations go in with a bias of 128 (x ^ 0x80) and
 * 128 times the sum of each output's block weights (also by vpdpbusd, shared by the rows) comes
 * off again, which leaves the exact int32 S; then the same float step as group_rows. */
INLINE void group_rows_vnni(const int Q4, const int MR, const uint8_t *ints, const sp_f16 *scales,
                            act_slice xs, int64_t nb, float *y, int64_t ldy, __mmask16 keep) {
    const size_t BB = Q4 ? Q4_TILE_BYTES : TILE_BYTES;
    const __m512i bias = _mm512_set1_epi32((int)0x80808080u), ones = _mm512_set1_epi8(1);
    __m512 acc[VNNI_ROWS];
#pragma GCC unroll 4
    for (int m = 0; m < MR; m++)
        acc[m] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *t = ints + (size_t)b * BB;
        const int8_t *a = xs.ints + (size_t)b * MR * SP_QK8_0;
        prefetch_lines(t + PREFETCH_AHEAD * BB, BB / 64);
        __m512i rows[8];
        if (Q4)
            q4_rows(t, rows);
        __m512i wsum = _mm512_setzero_si512(), s[VNNI_ROWS];
#pragma GCC unroll 4
        for (int m = 0; m < MR; m++)
            s[m] = _mm512_setzero_si512();
#pragma GCC unroll 8
        for (int k4 = 0; k4 < SP_QK8_0 / 4; k4++) {
            const __m512i w = Q4 ? rows[k4] : _mm512_loadu_si512(t + 64 * k4);
            wsum = _mm512_dpbusd_epi32(wsum, ones, w);
#pragma GCC unroll 4
            for (int m = 0; m < MR; m++) {
                int32_t x4;
                memcpy(&x4, a + m * SP_QK8_0 + 4 * k4, 4);
                s[m] = _mm512_dpbusd_epi32(s[m], _mm512_xor_si512(_mm512_set1_epi32(x4), bias), w);
            }
        }
        const __m512 dw = dw_of(scales, b);
        const __m512i off = _mm512_slli_epi32(wsum, 7);
#pragma GCC unroll 4
        for (int m = 0; m < MR; m++) {
            const __m512 sf = _mm512_cvtepi32_ps(_mm512_sub_epi32(s[m], off));
            acc[m] = _mm512_fmadd_ps(sf, _mm512_mul_ps(dw, _mm512_set1_ps(xs.scales[b * MR + m])),
                                     acc[m]);
        }
    }
#pragma GCC unroll 4
    for (int m = 0; m < MR; m++)
        _mm512_mask_storeu_ps(y + m * ldy, keep, acc[m]);
}

#define GROUP_ROWS_CASE(MR)                                                                        \
    case MR:                                                                                       \
        group_rows(Q4, MR, ints, scales, xs, nb, y, ldy, keep);                                    \
        break;

INLINE void group_rows_any(const int Q4, const uint8_t *ints, const sp_f16 *scales, act_slice xs,
                           int64_t nb, float *y, int64_t ldy, __mmask16 keep) {
    switch (xs.rows) {
    case 1:
        group_rows_vnni(Q4, 1, ints, scales, xs, nb, y, ldy, keep);
        break;
    case 2:
        group_rows_vnni(Q4, 2, ints, scales, xs, nb, y, ldy, keep);
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

/* matmul over packed weights (w: pack's output; w_row_bytes unused) and packed activations (x:
 * act_pack's output; x_row_bytes unused). Groups of outputs are taken GROUP_CHUNK at a time so
 * their weights stay in cache while every 16-row slice of the activations passes over them. */
INLINE void matmul_packed(const int Q4, const void *w, const void *x, int64_t n_in, int64_t n_rows,
                          float *y, int64_t ldy, int64_t o0, int64_t o1) {
    SP_ASSERT(n_in % SP_QK8_0 == 0 && n_rows >= 0 && o0 <= o1);
    if (n_rows == 0 || o0 == o1)
        return;
    const int64_t nb = n_in / SP_QK8_0;
    const size_t BB = Q4 ? Q4_TILE_BYTES : TILE_BYTES;
    const size_t group_bytes = (size_t)nb * (BB + GROUP * sizeof(sp_f16));
    const int64_t g0 = o0 / GROUP, g1 = (o1 + GROUP - 1) / GROUP;
    int rows = 0; // the tile configuration's row count
    for (int64_t gc = g0; gc < g1; gc += GROUP_CHUNK) {
        const int64_t gce = g1 - gc < GROUP_CHUNK ? g1 : gc + GROUP_CHUNK;
        for (int64_t m0 = 0; m0 < n_rows; m0 += 16) {
            const act_slice xs = slice_of(x, nb, n_rows, m0);
            if (xs.rows > VNNI_ROWS && xs.rows != rows) {
                configure(xs.rows);
                rows = xs.rows;
            }
            for (int64_t g = gc; g < gce; g++) {
                const uint8_t *ints = (const uint8_t *)w + (size_t)g * group_bytes;
                const sp_f16 *scales = (const sp_f16 *)(ints + (size_t)nb * BB);
                const int64_t lo = SP_MAX(o0, g * GROUP) - g * GROUP;
                const int64_t hi = SP_MIN(o1, g * GROUP + GROUP) - g * GROUP;
                const __mmask16 keep = (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
                group_rows_any(Q4, ints, scales, xs, nb, y + m0 * ldy + g * GROUP, ldy, keep);
            }
        }
    }
    _tile_release();
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

void sp__kernels_amx_init(sp_kernels *k) {
    k->pack_bytes = pack_bytes;
    k->pack = pack;
    k->matmul_packed[SP_DTYPE_Q8_0] = matmul_q8_0_packed;
    k->matmul_packed[SP_DTYPE_Q4_0] = matmul_q4_0_packed;
    k->act_pack_bytes = act_pack_bytes;
    k->act_pack = act_pack;
}

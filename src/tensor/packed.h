/* Packed Q8_0 and Q4_0 weights and activations, shared by the x86 tables that multiply them
 * with exact int32 block sums: packed_avx2.c (AVX2, the avx2 and avxvnni tables), packed_avx512.c
 * (AVX512-VNNI, the avx512 table) and kernels_amx.c (the AMX tile unit, which leaves row counts of
 * 1 and 2 to the VNNI kernel). packed.c writes the layouts; packed_x86.h adds AVX-512 helpers.
 *
 * Weights are rewritten once, at model load (pack), into groups of 16 output rows; per group
 * and block of 32 inputs, 512 bytes in the tile unit's "VNNI" order (row k4 of the tile holds,
 * for each of the 16 outputs n, its 4 weights 4 k4 .. 4 k4 + 3), then per group the blocks'
 * 16 F16 scales:
 *
 *   group g: [ block 0: 8 x 64 bytes | block 1 | ... | block nb-1 ][ nb x 16 F16 scales ]
 *
 * so one tile load, or 8 vector loads, take the 16 x 32 weights of a block, and a decode step
 * streams the packed matrix front to back. A Q8_0 weight w is stored as the byte w + 128
 * (w ^ 0x80) on the tables whose products take the weights unsigned and the activations signed
 * (vpdpbusd: avxvnni, avx512), as w on the others (avx2's vpmaddubsw sign trick, amx's tdpbssd);
 * Q4_0 packs in half the bytes, per block 4 rows of 64 bytes whose low nibbles are tile rows 0-3
 * and high nibbles rows 4-7, the 4-bit values q as they are (standing for q - 8), on every table.
 * The packed size is that of the rows it replaces.
 *
 * Activations, as act_pack lays them out: the rows in slices of 16 (the last slice holds the
 * remaining rows_s = min(16, n_rows - 16 s)); slice s starts at byte 16 s nb ACT_BLOCK_BYTES and
 * holds, per block b, its rows' 32 values (rows_s x 32 bytes, a tile that loads with stride 32),
 * then per block its rows' scales as F32, then per block the offsets that the products of
 * unsigned weights start from, -8 sum(x) for Q4_0 and -128 sum(x) for Q8_0 (int32 each, so that
 * a kernel broadcasts them straight from memory):
 *
 *   slice s: [ block 0: rows_s x 32 int8 | block 1 | ... ][ block 0: rows_s F32 | block 1 | ... ]
 *            [ block 0: rows_s int32 Q4_0 offsets | ... ][ block 0: rows_s int32 Q8_0 offsets | ...
 * ]
 *
 * Numerics, the same on every table: per block the exact int32 dot S of every (activation row,
 * output) pair (where a kernel multiplies unsigned weights, their dot U less the offset times the
 * activations' sum: S = U - 128 sum(x) for Q8_0, U - 8 sum(x) for Q4_0); then, as 16 float lanes
 * over the outputs,
 *
 *   acc = fma((float)S, fp32(d_w) * fp32(d_x), acc)        block by block, acc starting at 0
 *
 * (llama.cpp's AMX kernels also convert whole block sums). Every output's arithmetic is that
 * chain whatever the number of rows, their grouping, the [o0, o1) split or the table, so the
 * invariance contract of kernels.h holds and every table that packs gives the same bits. */
#ifndef SP_TENSOR_PACKED_H
#define SP_TENSOR_PACKED_H

#include <stddef.h>
#include <stdint.h>

#include "tensor/kernels.h"
#include "tensor/quant.h"

#define SP_PK_INLINE static inline __attribute__((always_inline))

enum {
    SP_PK_GROUP = 16,          // output rows per packed group (tile columns, vector lanes)
    SP_PK_TILE_BYTES = 512,    // the weights of one Q8_0 block of a group
    SP_PK_Q4_TILE_BYTES = 256, // the packed nibbles of one Q4_0 block of a group
    SP_PK_GROUP_CHUNK = 8,     // groups whose weights stay in cache across row slices
    SP_PK_PREFETCH_AHEAD = 4,  // blocks ahead that the weights are prefetched
    SP_PK_ACT_BLOCK_BYTES = SP_QK8_0 + 3 * 4, // an activation block: 32 int8, F32 scale, offsets
    SP_PK_Q8_BIAS = 128, // S = U - sum(x) bias: the offset of the unsigned weights
    SP_PK_Q4_BIAS = 8,
};

/* Packed bytes per block of a group: the weights; the group's scales follow its blocks. */
SP_PK_INLINE size_t sp__pk_block_bytes(int q4) {
    return q4 ? SP_PK_Q4_TILE_BYTES : SP_PK_TILE_BYTES;
}

/* The 16 rows (at most) of one activation slice. */
typedef struct sp__pk_slice {
    const int8_t *ints;    // block b, row m at ints + (b rows + m) 32
    const float *scales;   // block b, row m at scales[b rows + m]
    const int32_t *off[2]; // block b, row m at off[q4][b rows + m]: -sum(x) 128 or 8 (Q4_0)
    int rows;
} sp__pk_slice;

SP_PK_INLINE sp__pk_slice sp__pk_slice_of(const void *x, int64_t nb, int64_t n_rows, int64_t m0) {
    const int rows = n_rows - m0 < 16 ? (int)(n_rows - m0) : 16;
    const int8_t *base = (const int8_t *)x + (size_t)m0 * (size_t)nb * SP_PK_ACT_BLOCK_BYTES;
    const size_t n = (size_t)nb * (size_t)rows;
    const float *scales = (const float *)(base + n * SP_QK8_0);
    const int32_t *off4 = (const int32_t *)(scales + n);
    return (sp__pk_slice){base, scales, {off4 + n, off4}, rows};
}

/* The layouts (packed.c), as the kernel table entries pack_bytes, pack, act_pack_bytes and
 * act_pack of kernels.h. */
size_t sp__pk_pack_bytes(sp_dtype t, int64_t n_in, int64_t n_out);
void sp__pk_pack(sp_dtype t, const void *w, size_t wrb, int64_t n_in, int64_t n_out, void *dst);
void sp__pk_pack_unsigned(sp_dtype t, const void *w, size_t wrb, int64_t n_in, int64_t n_out,
                          void *dst); // Q8_0 weights as w + 128
size_t sp__pk_act_pack_bytes(sp_dtype t, int64_t n_in, int64_t n_rows);
void sp__pk_act_pack(sp_dtype t, const void *xq, int64_t n_in, int64_t r, int64_t n_rows,
                     void *dst);

/* Puts the layouts in a table that multiplies packed Q8_0 and Q4_0, with its Q8_0 weights
 * unsigned (w + 128) or not. */
SP_PK_INLINE void sp__pk_set_layouts(sp_kernels *k, int unsigned_q8) {
    k->pack_bytes = sp__pk_pack_bytes;
    k->pack = unsigned_q8 ? sp__pk_pack_unsigned : sp__pk_pack;
    k->act_pack_bytes = sp__pk_act_pack_bytes;
    k->act_pack = sp__pk_act_pack;
}

#endif

/* Packed K-quant weights (Q4_K, Q5_K, Q6_K) and Q8_K activations, for the x86 tables that
 * multiply them with the exact int32 super-block sums of quant.h: packed_k_avx2.c (AVX2, and
 * AVX-VNNI for the avxvnni table) and packed_k_avx512.c (AVX512-VNNI: the avx512 and amx
 * tables). packed_k.c writes the layouts in plain C and puts them in a table beside packed.h's
 * (Q8_0, Q4_0), which it forwards.
 *
 * Weights are rewritten once, at model load, into groups of 16 output rows (SP_PKK_GROUP), so
 * that every vector lane is an output and nothing is summed across lanes. The quants stay
 * unsigned (Q4_K 0..15, Q5_K 0..31, Q6_K 0..63, Q6_K's offset of 32 included): they are the
 * unsigned operand of vpdpbusd and vpmaddubsw, the Q8_K activations the signed one. A group is
 * nb records, one per super-block of 256 inputs, then a trailer of the super-blocks' F16 scales:
 *
 *   group g: [ record 0 | record 1 | ... | record nb-1 ][ trailer: nb x (d[16], dmin[16]) ]
 *
 * (Q6_K has no dmin: nb x d[16]; the trailer is padded to 64 bytes). A record holds, in order:
 *  - the low 4 bits, 2048 bytes: chunk c (inputs 32c..32c+31) in 256 bytes; its row r (r < 8:
 *    inputs 32c + 4r .. 32c + 4r + 3) holds, at byte 4n + i of a 64-byte line, output n's quant
 *    of input 32c + 4r + i: in the low nibbles of line r % 4 for r < 4, the high ones for r >= 4
 *    (Q4_0's packing, packed.h);
 *  - Q5_K: the 5th bits, 64 bytes per chunk: bit r of byte 4n + i is the 5th bit of row r's
 *    quant (512 bytes); Q6_K: the top 2 bits, 128 bytes per chunk: bits 2(r % 4), 2(r % 4) + 1 of
 *    byte 64 (r / 4) + 4n + i are row r's bits 4 and 5 (1024 bytes);
 *  - the sub-block scales as byte pairs: pair i (32 bytes) holds at bytes 2n, 2n + 1 output n's
 *    scales of sub-blocks 2i and 2i + 1 (Q4_K, Q5_K: 4 pairs of 6-bit scales, then 4 pairs of
 *    the 6-bit mins, 256 bytes; Q6_K: 8 pairs of int8 scales, 256 bytes).
 * Records are multiples of 64 bytes (Q4_K 2304, Q5_K 2816, Q6_K 3328), so every line load is
 * aligned where the packed matrix is; the packed forms are 2.8% (Q4_K) and 2.3% (Q5_K) larger
 * than the files' blocks, Q6_K's the same size (plus at most 32 bytes of padding per group).
 * Sub-block j of Q4_K and Q5_K is chunk j; Q6_K's sub-blocks of 16 are rows 0-3 (sub-block 2c)
 * and rows 4-7 (2c + 1) of chunk c.
 *
 * Activations, as act_pack lays them out from Q8_K rows: the rows in slices of 16 (the last
 * holds the remaining rows_s = min(16, n_rows - 16 s)); slice s starts at byte 16 s nb 320 and
 * holds, per super-block b, its rows' 256 quants then its rows' sp__pkk_aux:
 *
 *   slice s: [ b = 0: rows_s x 256 int8 | rows_s x 64 aux ][ b = 1: ... ] ...
 *
 * so a row's 4 quants at a time are one broadcast load, and a super-block's sums come with it.
 *
 * Numerics: exactly sp_vec_dot_ref's (quant.h), as 16 float lanes over the outputs: per
 * super-block the exact int32 sumi and summins of every (row, output) pair, then
 *   acc = fma((float)sumi, fp32(d_w) * d_x, acc);  acc = fma(-(float)summins, fp32(dmin_w) * d_x,
 * acc). Every table that packs gives those bits, for any number of rows, their grouping and the
 * [o0, o1) split (the invariance contract of kernels.h). */
#ifndef SP_TENSOR_PACKED_K_H
#define SP_TENSOR_PACKED_K_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include "tensor/kernels.h"
#include "tensor/quant.h"

#define SP_PKK_INLINE static inline __attribute__((always_inline))

/* The packed kinds, as compile-time constants of the kernels (-1: not a K-quant); a kernel file
 * may add variant bits above SP_PKK_TYPE_MASK. */
enum { SP_PKK_Q4 = 0, SP_PKK_Q5 = 1, SP_PKK_Q6 = 2, SP_PKK_TYPE_MASK = 3 };

enum {
    SP_PKK_GROUP = 16,         // output rows per packed group (vector lanes)
    SP_PKK_GROUP_CHUNK = 8,    // groups whose weights stay in cache across row slices
    SP_PKK_NIB_BYTES = 2048,   // the low 4 bits of a record: 8 chunks of 256 bytes
    SP_PKK_SC_BYTES = 256,     // the scale pairs (and min pairs) of a record
    SP_PKK_ACT_QS_BYTES = 256, // a row's quants per super-block
    SP_PKK_ACT_BYTES = 320,    // a row's quants and sp__pkk_aux per super-block
};

/* Per row and super-block of the packed activations, beside its quants. */
typedef struct sp__pkk_aux {
    int16_t bsums[16]; // Q8_K's sums of 16 quants (Q6_K's offset; pair i at bsums + 2i)
    int16_t bs[8];     // sums of 32: bsums[2j] + bsums[2j + 1] (Q4_K/Q5_K mins; pair i at bs + 2i)
    float d;           // the Q8_K scale
    uint8_t pad[12];   // zero
} sp__pkk_aux;
static_assert(sizeof(sp__pkk_aux) == SP_PKK_ACT_BYTES - SP_PKK_ACT_QS_BYTES, "activation aux");

SP_PKK_INLINE int sp__pkk_kind(sp_dtype t) {
    return t == SP_DTYPE_Q4_K   ? SP_PKK_Q4
           : t == SP_DTYPE_Q5_K ? SP_PKK_Q5
           : t == SP_DTYPE_Q6_K ? SP_PKK_Q6
                                : -1;
}

/* Bytes of the high bits of a record (after the 2048 of low bits). */
SP_PKK_INLINE size_t sp__pkk_qh_bytes(const int kind) {
    return kind == SP_PKK_Q5 ? 512 : kind == SP_PKK_Q6 ? 1024 : 0;
}

/* Where a record's scale pairs start. */
SP_PKK_INLINE size_t sp__pkk_sc_at(const int kind) {
    return SP_PKK_NIB_BYTES + sp__pkk_qh_bytes(kind);
}

SP_PKK_INLINE size_t sp__pkk_rec_bytes(const int kind) {
    return sp__pkk_sc_at(kind) + SP_PKK_SC_BYTES;
}

/* Trailer bytes per super-block: d[16] and (Q4_K, Q5_K) dmin[16], F16. */
SP_PKK_INLINE size_t sp__pkk_dd_bytes(const int kind) {
    return kind == SP_PKK_Q6 ? 32 : 64;
}

SP_PKK_INLINE size_t sp__pkk_group_bytes(const int kind, int64_t nb) {
    const size_t trailer = ((size_t)nb * sp__pkk_dd_bytes(kind) + 63) / 64 * 64;
    return (size_t)nb * sp__pkk_rec_bytes(kind) + trailer;
}

/* The 16 rows (at most) of one activation slice. */
typedef struct sp__pkk_slice {
    const uint8_t *base; // super-block b at base + b rows 320
    int rows;
} sp__pkk_slice;

SP_PKK_INLINE sp__pkk_slice sp__pkk_slice_of(const void *x, int64_t nb, int64_t n_rows,
                                             int64_t m0) {
    const int rows = n_rows - m0 < 16 ? (int)(n_rows - m0) : 16;
    return (sp__pkk_slice){(const uint8_t *)x + (size_t)m0 * (size_t)nb * SP_PKK_ACT_BYTES, rows};
}

/* Row m's quants of super-block b. */
SP_PKK_INLINE const int8_t *sp__pkk_act_qs(sp__pkk_slice s, int64_t b, int m) {
    return (const int8_t *)(s.base + ((size_t)b * (size_t)s.rows) * SP_PKK_ACT_BYTES +
                            (size_t)m * SP_PKK_ACT_QS_BYTES);
}

/* Row m's sums and scale of super-block b. */
SP_PKK_INLINE const sp__pkk_aux *sp__pkk_act_aux(sp__pkk_slice s, int64_t b, int m) {
    return (const sp__pkk_aux *)(s.base + ((size_t)b * (size_t)s.rows) * SP_PKK_ACT_BYTES +
                                 (size_t)s.rows * SP_PKK_ACT_QS_BYTES +
                                 (size_t)m * sizeof(sp__pkk_aux));
}

/* The 4 bytes at p as one int32 (for broadcasts of 4 quants or of a pair of int16 sums). */
SP_PKK_INLINE int32_t sp__pkk_load4(const void *p) {
    int32_t v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

/* The layouts (packed_k.c), for K-quant weights and Q8_K activations: packed.h's table entries
 * (sp__pk_pack_bytes, ...) forward those types here, so every table that packs takes them. */
size_t sp__pkk_pack_bytes(sp_dtype t, int64_t n_in, int64_t n_out);
void sp__pkk_pack(sp_dtype t, const void *w, size_t wrb, int64_t n_in, int64_t n_out, void *dst);
size_t sp__pkk_act_pack_bytes(sp_dtype vt, int64_t n_in, int64_t n_rows);
void sp__pkk_act_pack(sp_dtype vt, const void *xq, int64_t n_in, int64_t r, int64_t n_rows,
                      void *dst);

#endif

/* Matrix kernels chosen at run time for the CPU: products of weight matrices (consumed in their
 * stored type, never dequantized whole) with batches of activation rows, and the conversion of
 * activation rows to the weights' dot-product type.
 *
 * Each instruction set has its own file, compiled with its own flags (kernels_avx2.c,
 * kernels_avx512.c, packed_k_avx2.c, ...); sp_kernels_get() picks the best the CPU supports
 * (CPUID and XGETBV), or the one named by the environment variable
 * SPINDLE_ISA=scalar|avx2|avxvnni|avx512|amx (unset, empty or "auto": the best; a name this CPU
 * lacks: a warning and the best). The scalar table forwards to the reference code of quant.h.
 * "avxvnni" is the avx2 table with the Q8_0/Q4_0 and K-quant integer dots on AVX-VNNI (same
 * results).
 * "avx512" and "amx" extend avx2 with AVX-512 kernels, and amx runs the packed Q8_0/Q4_0
 * products of 3 or more rows on the AMX tile unit (its K-quant products are avx512's).
 *
 * Numerics: one for every table. Each step below is defined down to the order of its float
 * operations (fma: one rounding; every operation rounds to nearest even), and every table
 * computes exactly that, so a request's logits are the same bits under every SPINDLE_ISA
 * (tests/unit/tensor/test_kernels.c compares each table with the scalar one bit for bit;
 * tests/e2e/test_isa_invariance.sh compares whole models). The scalar table is the definition
 * written out in C (vec_dot.c, kernels_scalar.c, exp.h); the SIMD tables only choose how to
 * spread it over vector lanes and registers.
 *  - Q8_0, Q4_0 weights (Q8_0 activations): per 32-value block the exact int32 sum S of the
 *    products (Q4_0 weights q - 8); acc = fma((float)S, fp32(d_w) * fp32(d_x), acc), block by
 *    block from acc = 0. Packed weights (packed.h) and rows in their stored layout (matmul[])
 *    alike; within the last bits of llama.cpp's 8-lane sums (the golden tests hold).
 *  - F32, F16, BF16 weights (activations of the same type; F16 and BF16 values convert to F32
 *    exactly): 16 float lanes, lane l taking the positions i with i % 16 == l, each a chain of
 *    fma(w_i, x_i, lane) in position order from +0; then the halves added, lane i += lane i+8
 *    (i < 8), then i += i+4, i += i+2, and lane 0 + lane 1. A tail of n % 16 positions is the
 *    same as zero padding: a zero product leaves a lane as it is. AVX-512 holds the 16 lanes in
 *    one vector, AVX2 in two of 8 (positions 16k..16k+7 and 16k+8..16k+15).
 *  - Q4_K, Q5_K, Q6_K weights (Q8_K activations): the exact int32 sums of each 256-value
 *    super-block and one or two float steps per super-block and output, acc = fma((float)sumi,
 *    d_w * d_x, acc), then for Q4_K/Q5_K acc = fma(-(float)summins, dmin_w * d_x, acc)
 *    (sp_vec_dot_ref in quant.h states it whole): packed at load (packed_k.h) and multiplied on
 *    AVX2 or AVX-VNNI (packed_k_avx2.c) or AVX512-VNNI (packed_k_avx512.c); matmul[] (the
 *    stored layout) is the scalar reference's.
 *  - Attention, SwiGLU, rounding to F16: as stated at each entry below. The exponential is
 *    sp__exp of exp.h (a fixed range reduction and polynomial, all fmas), the same on every
 *    table; activations are converted (quantize_act) to the same bits everywhere.
 *
 * Invariance contract, which batch invariance of the whole engine rests on: for a given kernel
 * table, the value written for y[r][o] depends only on weight row o and activation row r, never
 * on n_rows, on which other rows are in the call, or on the [o0, o1) split between threads.
 * Register-blocked kernels that process several activation rows per weight load must therefore
 * run exactly the same arithmetic, in the same order, for each row as for a row alone. */
#ifndef SP_TENSOR_KERNELS_H
#define SP_TENSOR_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tensor/dtype.h"

/* y[r * ldy + o] = dot(weight row o, activation row r) for o in [o0, o1) and r in [0, n_rows).
 * w: weight rows of w_row_bytes each (stored type); x: n_rows activation rows of x_row_bytes
 * each, already in sp_dtype_vec_dot_type(weight type); n_in values per row (a multiple of the
 * block size). Q8_0 activation values must lie in [-127, 127], as quantize_act makes them (the
 * AVX2 kernel negates them); Q8_K rows must have bsums that are the sums of their quants, as
 * quantize_act makes them; weight bytes may take any value. Reads w rows [o0, o1) and x;
 * writes only those y entries; no allocation, a few KB of stack; any thread, concurrently on
 * disjoint outputs. */
typedef void (*sp_matmul_fn)(const void *w, size_t w_row_bytes, const void *x, size_t x_row_bytes,
                             int64_t n_in, int64_t n_rows, float *y, int64_t ldy, int64_t o0,
                             int64_t o1);

/* Converts n activations to vt (a dot-product type: F32, F16, BF16, Q8_0, Q8_K), with the same
 * results as sp_quantize_act_row (bit for bit; for Q8_0 and Q8_K, for finite inputs: a NaN
 * gives some block a NaN scale, which one may differ between tables). */
typedef void (*sp_quantize_act_fn)(sp_dtype vt, const float *x, void *dst, int64_t n);

/* Attention over one KV head of the paged cache, for the G query heads that share it, in three
 * steps per token: scores block by block, the softmax of each head's row, the weighted values
 * block by block. A block's keys are stored transposed, kt[d * ld_k + j] (D rows, ld_k >= n
 * positions), its values as rows v[j * D + d]: F16 bit patterns when f16 (read as F32, exactly),
 * else F32. Rows of scores/weights are ld_s apart (head hh at s + hh * ld_s).
 *
 * attn_scores: s[hh][j] = x * scale, where x is the chain x = fma(q_hh[d], k_j[d], x) over
 *   d = 0 .. D-1 in order from x = +0 (q: G rows of D floats).
 * attn_softmax: one row of n scores becomes weights: m = the largest score (NaNs skipped);
 *   e_j = sp__exp(s_j - m); their sum in double, in 8 lanes by j % 8 (each lane adds its e_j in
 *   j order from +0), then the halves added (lane i += lane i+4, i += i+2, lane 0 + lane 1);
 *   weight j = e_j * (float)(1 / sum), rounded to F16 and back when round_f16 (as llama.cpp does
 *   before its value product).
 * attn_values: acc[hh][d] = the chain a = fma(w[hh][j], v_j[d], a) over j = 0 .. n-1 in order,
 *   from a = acc[hh][d] (acc: G rows of D floats).
 * These are the same bits on every table, and the results depend only on these arguments. As the
 * forward pass's tiles of query rows need: a row's results depend only on its own query or
 * weight row, never on G or the other rows; a score s[hh][j] does not depend on n (any n > j
 * gives the same bits); and values over positions [0, n) equal those over [0, m) then [m, n) in
 * a second call. */
typedef void (*sp_attn_scores_fn)(const float *q, int32_t G, int32_t D, float scale, const void *kt,
                                  int32_t ld_k, int32_t n, bool f16, float *s, int64_t ld_s);
typedef void (*sp_attn_softmax_fn)(float *s, int32_t n, bool round_f16);
typedef void (*sp_attn_values_fn)(const float *w, int64_t ld_s, int32_t G, int32_t D, const void *v,
                                  int32_t n, bool f16, float *acc);

/* swiglu: gate[i] = (g / (1 + sp__exp(-g))) * up[i] with g = gate[i], for i < n: silu(g) up, the
 * same bits on every table. Beyond g < -88.7 the exponential overflows and silu(g) is -0 (then
 * times up); g = -inf gives NaN, g = +inf gives +inf * up, NaN stays NaN. */
typedef void (*sp_swiglu_fn)(float *gate, const float *up, int64_t n);

/* round_f16: x[i] = x[i] rounded to F16 (as sp_f32_to_f16) and back, for i < n; the same bits
 * in every table (how attention's queries meet an F16 cache). */
typedef void (*sp_round_f16_fn)(float *x, int64_t n);

/* Weight matrices in a layout of a table's own. pack_bytes(t, n_in, n_out) is the size of the
 * packed form of an n_out x n_in matrix of type t, or 0 if the table has no packed layout for
 * it. pack writes that form to dst (any alignment; rows w_row_bytes apart in w). The packed
 * matrix is then multiplied with matmul_packed[t], which has matmul's contract with w = the
 * packed buffer (w_row_bytes unused) and x = the activation rows in the table's own layout
 * (x_row_bytes unused), and the numerics stated above (the same bits as matmul[t]).
 *
 * That activation layout: act_pack_bytes(vt, n_in, n_rows) bytes hold n_rows rows of the dot
 * type vt (sp_dtype_vec_dot_type of the weights); act_pack writes row r of n_rows there, from
 * the row as quantize_act makes it (xq). Rows may be packed in any order, by any threads. */
typedef size_t (*sp_pack_bytes_fn)(sp_dtype t, int64_t n_in, int64_t n_out);
typedef void (*sp_pack_fn)(sp_dtype t, const void *w, size_t w_row_bytes, int64_t n_in,
                           int64_t n_out, void *dst);
typedef size_t (*sp_act_pack_bytes_fn)(sp_dtype vt, int64_t n_in, int64_t n_rows);
typedef void (*sp_act_pack_fn)(sp_dtype vt, const void *xq, int64_t n_in, int64_t r, int64_t n_rows,
                               void *dst);

typedef struct sp_kernels {
    const char *isa;                      // "scalar", "avx2", "avxvnni", "avx512", "amx"
    sp_matmul_fn matmul[SP_DTYPE__COUNT]; // by weight type; NULL = use the scalar one
    sp_pack_bytes_fn pack_bytes;          // NULL: no packed layouts
    sp_pack_fn pack;
    sp_matmul_fn matmul_packed[SP_DTYPE__COUNT]; // over pack's output; NULL where not packed
    sp_act_pack_bytes_fn act_pack_bytes;         // the activations matmul_packed reads
    sp_act_pack_fn act_pack;
    sp_quantize_act_fn quantize_act; // NULL = use the scalar one
    sp_attn_scores_fn attn_scores;   // attention: see above
    sp_attn_softmax_fn attn_softmax;
    sp_attn_values_fn attn_values;
    sp_swiglu_fn swiglu;       // the gated feed-forward's activation
    sp_round_f16_fn round_f16; // F32 values through F16
} sp_kernels;

/* The kernel table for this CPU (or SPINDLE_ISA), every entry filled (falling back to scalar)
 * for the weight types sp_vec_dot_ref supports; other types' entries are NULL. Chosen once
 * (the environment is read on the first call of this or sp_kernels_for); any thread. */
const sp_kernels *sp_kernels_get(void);

/* The table of a named instruction set, or NULL if this CPU (or this build) lacks it. For
 * tests and benchmarks comparing kernels. */
const sp_kernels *sp_kernels_for(const char *isa);

/* Internal: each ISA file fills the entries it implements. */
void sp__kernels_scalar_init(sp_kernels *k);
void sp__kernels_avx2_init(sp_kernels *k);
void sp__kernels_avxvnni_init(sp_kernels *k); // in kernels_avx2.c, over the avx2 entries
void sp__kernels_avx512_init(sp_kernels *k);
void sp__kernels_amx_init(sp_kernels *k);
void sp__packed_avx2_init(sp_kernels *k);    // packed Q8_0/Q4_0 (packed.h): avx2, avxvnni
void sp__packed_avxvnni_init(sp_kernels *k); // the same on AVX-VNNI, over avx2's: avxvnni
void sp__packed_avx512_init(sp_kernels *k);  // the same on AVX512-VNNI: avx512, amx
/* Packed Q4_K, Q5_K and Q6_K (packed_k.h; the layouts of packed.h pass those types on): on AVX2
 * (avx2; vnni: the avxvnni table's AVX-VNNI products), and on AVX512-VNNI (avx512, amx). */
void sp__packed_k_avx2_init(sp_kernels *k, bool vnni);
void sp__packed_k_avx512_init(sp_kernels *k);

#endif

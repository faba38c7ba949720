/* Block layouts of the quantized types (bit-exact with GGUF/ggml), half-precision conversion,
 * and the scalar reference operations: quantize, dequantize and dot products.
 *
 * The scalar code here is the reference that SIMD kernels are tested against. It is written
 * for clarity and exact reproducibility, not speed. All functions are pure and thread-safe. */
#ifndef SP_TENSOR_QUANT_H
#define SP_TENSOR_QUANT_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include "tensor/dtype.h"

typedef uint16_t sp_f16;  // IEEE 754 binary16 bits
typedef uint16_t sp_bf16; // bfloat16 bits

#define SP_QK8_0        32
#define SP_QK4_0        32
#define SP_QK_K         256
#define SP_K_SCALE_SIZE 12

typedef struct sp_block_q8_0 {
    sp_f16 d;            // scale
    int8_t qs[SP_QK8_0]; // x = d * q
} sp_block_q8_0;
static_assert(sizeof(sp_block_q8_0) == 34, "q8_0 block");

typedef struct sp_block_q4_0 {
    sp_f16 d;                 // scale
    uint8_t qs[SP_QK4_0 / 2]; // low nibbles hold values 0..15, high nibbles 16..31; x = d*(q-8)
} sp_block_q4_0;
static_assert(sizeof(sp_block_q4_0) == 18, "q4_0 block");

typedef struct sp_block_q4_k {
    sp_f16 d;                        // super-block scale for the 6-bit sub-block scales
    sp_f16 dmin;                     // super-block scale for the 6-bit sub-block mins
    uint8_t scales[SP_K_SCALE_SIZE]; // 8 scales and 8 mins, 6 bits each
    uint8_t qs[SP_QK_K / 2];         // 4-bit quants
} sp_block_q4_k;
static_assert(sizeof(sp_block_q4_k) == 144, "q4_k block");

typedef struct sp_block_q5_k {
    sp_f16 d;                        // super-block scale for the 6-bit sub-block scales
    sp_f16 dmin;                     // super-block scale for the 6-bit sub-block mins
    uint8_t scales[SP_K_SCALE_SIZE]; // 8 scales and 8 mins, 6 bits each, packed as in Q4_K
    uint8_t qh[SP_QK_K / 8];         // 5th bits: bit 2i (2i+1) of qh[l] for value 64i + l (+ 32)
    uint8_t qs[SP_QK_K / 2];         // low 4 bits, in Q4_K's nibble order
} sp_block_q5_k;
static_assert(sizeof(sp_block_q5_k) == 176, "q5_k block");

typedef struct sp_block_q6_k {
    uint8_t ql[SP_QK_K / 2];     // low 4 bits
    uint8_t qh[SP_QK_K / 4];     // high 2 bits
    int8_t scales[SP_QK_K / 16]; // 8-bit sub-block scales
    sp_f16 d;                    // super-block scale
} sp_block_q6_k;
static_assert(sizeof(sp_block_q6_k) == 210, "q6_k block");

typedef struct sp_block_q8_k {
    float d;                     // scale
    int8_t qs[SP_QK_K];          // quants
    int16_t bsums[SP_QK_K / 16]; // sums of quants in groups of 16
} sp_block_q8_k;
static_assert(sizeof(sp_block_q8_k) == 292, "q8_k block");

/* Half-precision conversions, round-to-nearest-even, bit-identical to ggml's. */
float sp_f16_to_f32(sp_f16 h);
sp_f16 sp_f32_to_f16(float f);
float sp_bf16_to_f32(sp_bf16 h);
sp_bf16 sp_f32_to_bf16(float f);

/* Converts n values of a supported type (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K, Q8_K) at src
 * to F32 at dst, with the arithmetic of ggml's dequantize_row_* (bit-identical results).
 * n must be a multiple of the type's block size; another type or n aborts (SP_ASSERT), so
 * callers check sp_dtype_info.supported for types read from files. */
void sp_dequantize_row(sp_dtype type, const void *src, float *dst, int64_t n);

/* Quantizes n floats to `type` with the reference rounding of ggml's quantize_row_*_ref
 * (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K, Q8_K), byte-identical to it. n must be
 * a multiple of the block size. dst must hold sp_dtype_row_bytes(type, n) bytes. src must be
 * finite for the block types. Q8_0 rounds with roundf (ties away from zero) as the reference
 * does; llama.cpp's x86 SIMD activation path rounds ties to even, which differs only when
 * x * 127 / amax is exactly k + 0.5. Q8_K rounds ties to even, like ggml; a Q8_K block of
 * zeros gets zero bsums (ggml leaves them unset). */
void sp_quantize_row(sp_dtype type, const float *src, void *dst, int64_t n);

/* The type activations are converted to before a dot product with weights of type w, as in
 * llama.cpp's CPU backend: F32->F32, F16->F16, BF16->BF16, Q8_0->Q8_0, Q4_0->Q8_0,
 * Q4_K->Q8_K, Q5_K->Q8_K, Q6_K->Q8_K. */
sp_dtype sp_dtype_vec_dot_type(sp_dtype w);

/* Dot product of n values: a row of weights of type w and a row of activations already in
 * sp_dtype_vec_dot_type(w). Scalar reference; the summation order is fixed, so the result
 * depends only on the two rows:
 *  - F32, F16, BF16: 16 float lanes by position mod 16, each a chain of fmaf in position order,
 *    then halves added (16 -> 8 -> 4 -> 2 -> 1): the numerics of every kernel table (kernels.h);
 *  - Q8_0, Q4_0: per block the exact int32 dot S, then acc = fmaf((float)S, d_w * d_x, acc)
 *    block by block: also every table's;
 *  - Q4_K, Q5_K, Q6_K (Q8_K activations): per super-block of 256 the exact int32 sums
 *      sumi    = sum_j sc_j * sum_{k in j} q_k x_k     (Q6_K: minus 32 * sum_j sc_j bsums_j)
 *      summins = sum_j m_j * (bsums_2j + bsums_2j+1)     (Q4_K, Q5_K)
 *    over the sub-blocks j (Q4_K, Q5_K: 8 of 32 values, unsigned 6-bit scales sc_j and mins
 *    m_j, quants 0..15 or 0..31; Q6_K: 16 of 16, int8 scales, quants stored as q + 32 in
 *    0..63, the 32 taken off with the activations' bsums), then one float step per super-block,
 *    acc starting at 0:
 *      acc = fmaf((float)sumi, d_w * d_x, acc);
 *      acc = fmaf(-(float)summins, dmin_w * d_x, acc);        (Q4_K, Q5_K)
 *    with d_w * d_x and dmin_w * d_x each rounded to float once (d_w, dmin_w: the F16 scales,
 *    d_x: the Q8_K block's F32 scale). Every kernel table computes exactly this (kernels.h), so
 *    K-quant products have the same bits on every table. The sums need the bsums to be the sums
 *    of their 16 quants, as sp_quantize_row makes them; then nothing overflows int32: each
 *    |sc q x| <= 128 * 63 * 128 (Q6_K's scales reach -128, its stored quants 63, activations
 *    -128), so every partial sum of sumi is under 256 * 2^20 = 2^28 in magnitude plus the Q6_K
 *    offset, 32 * |sum_j sc_j bsums_j| <= 32 * 128 * 256 * 128 = 2^27; |summins| <= 63 * 256 *
 *    128 < 2^21.
 *    These differ from llama.cpp's (8 float lanes and its own summation order) only in float
 *    rounding.
 * n must be a multiple of the block size. */
float sp_vec_dot_ref(sp_dtype w, const void *w_row, const void *x_row, int64_t n);

/* Bytes of scratch sp_matmul_ref needs: n_rows rows of n_in values in
 * sp_dtype_vec_dot_type(wtype). */
size_t sp_matmul_ref_scratch_bytes(sp_dtype wtype, int64_t n_in, int64_t n_rows);

/* y[r*n_out + o] = dot(row o of w, row r of x) for r < n_rows, o < n_out.
 * w: (n_out, n_in) in wtype, rows of sp_dtype_row_bytes(wtype, n_in) bytes, contiguous.
 * x: (n_rows, n_in) F32. y: (n_rows, n_out) F32. scratch: sp_matmul_ref_scratch_bytes() bytes.
 * Each activation row is first converted to sp_dtype_vec_dot_type(wtype) with
 * sp_quantize_row, then every output is sp_vec_dot_ref of one weight row and one converted
 * row. So each output depends only on its weight row and its activation row, never on n_rows
 * or on the other rows (batch invariance). n_in must be a multiple of the block size. */
void sp_matmul_ref(sp_dtype wtype, const void *w, int64_t n_in, int64_t n_out, const float *x,
                   int64_t n_rows, float *y, void *scratch);

/* Converts a row of activations to the dot-product type vt = sp_dtype_vec_dot_type(w) the way
 * llama.cpp's x86 CPU backend does before a matrix product, which differs from the reference
 * quantizer for Q8_0: the inverse scale is 127/amax (not 1/d) and halves round to even. Q8_K,
 * F16, BF16 and F32 are as sp_quantize_row. Matching this is what lets quantized models follow
 * llama.cpp's outputs token for token. */
void sp_quantize_act_row(sp_dtype vt, const float *src, void *dst, int64_t n);

/* The 6-bit scale and min of sub-block j (0..7) of a Q4_K or Q5_K super-block's 12 scale
 * bytes. */
static inline void sp_k_scale_min(const uint8_t s[SP_K_SCALE_SIZE], int j, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

#endif

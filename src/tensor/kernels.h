/* Matrix kernels chosen at run time for the CPU: products of weight matrices (consumed in their
 * stored type, never dequantized whole) with batches of activation rows, and the conversion of
 * activation rows to the weights' dot-product type.
 *
 * Each instruction set has its own file, compiled with its own flags (kernels_avx2.c,
 * kernels_avx512.c, kquants_avx2.c, ...); sp_kernels_get() picks the best the CPU supports
 * (__builtin_cpu_supports), or the one named by the environment variable
 * SPINDLE_ISA=scalar|avx2|avx512. The scalar table forwards to the reference code of quant.h.
 *
 * Invariance contract, which batch invariance of the whole engine rests on: for a given kernel
 * table, the value written for y[r][o] depends only on weight row o and activation row r, never
 * on n_rows, on which other rows are in the call, or on the [o0, o1) split between threads.
 * Register-blocked kernels that process several activation rows per weight load must therefore
 * run exactly the same arithmetic, in the same order, for each row as for a row alone. */
#ifndef SP_TENSOR_KERNELS_H
#define SP_TENSOR_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "tensor/dtype.h"

/* y[r * ldy + o] = dot(weight row o, activation row r) for o in [o0, o1) and r in [0, n_rows).
 * w: weight rows of w_row_bytes each (stored type); x: n_rows activation rows of x_row_bytes
 * each, already in sp_dtype_vec_dot_type(weight type); n_in values per row. */
typedef void (*sp_matmul_fn)(const void *w, size_t w_row_bytes, const void *x,
                             size_t x_row_bytes, int64_t n_in, int64_t n_rows, float *y,
                             int64_t ldy, int64_t o0, int64_t o1);

/* Converts n activations to vt (a dot-product type: F32, F16, BF16, Q8_0, Q8_K), with the same
 * results as sp_quantize_act_row (bit for bit). */
typedef void (*sp_quantize_act_fn)(sp_dtype vt, const float *x, void *dst, int64_t n);

typedef struct sp_kernels {
    const char *isa;                         // "scalar", "avx2", "avx512"
    sp_matmul_fn matmul[SP_DTYPE__COUNT];    // by weight type; NULL = use the scalar one
    sp_quantize_act_fn quantize_act;         // NULL = use the scalar one
} sp_kernels;

/* The kernel table for this CPU (or SPINDLE_ISA), every entry filled (falling back to scalar).
 * Chosen once; any thread. */
const sp_kernels *sp_kernels_get(void);

/* The table of a named instruction set, or NULL if this CPU (or this build) lacks it. For
 * tests and benchmarks comparing kernels. */
const sp_kernels *sp_kernels_for(const char *isa);

/* Internal: each ISA file fills the entries it implements. */
void sp__kernels_scalar_init(sp_kernels *k);
void sp__kernels_avx2_init(sp_kernels *k);
void sp__kernels_avx512_init(sp_kernels *k);
void sp__kquants_avx2_init(sp_kernels *k);
void sp__kquants_avx512_init(sp_kernels *k);

#endif

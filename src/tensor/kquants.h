/* The Q8_K activation quantizer for x86-64 (kquants_avx2.c), internal to src/tensor. The
 * products of K-quant weights with Q8_K rows are packed_k.h's. */
#ifndef SP_TENSOR_KQUANTS_H
#define SP_TENSOR_KQUANTS_H

#include <stdint.h>

/* Converts n floats (a multiple of 256, finite) to Q8_K at dst, bit-identical to
 * sp_quantize_act_row(SP_DTYPE_Q8_K, x, dst, n). Call only when the CPU has AVX2, FMA and F16C.
 * Any thread. */
void sp__quantize_q8_k_avx2(const float *x, void *dst, int64_t n);

#endif

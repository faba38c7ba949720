/* Element types of GGUF tensors (the ggml type ids) and their block layouts.
 *
 * Every type GGUF defines is listed so that a reader can size any tensor; only the types with
 * `supported` set can be computed with. Quantized types store blocks of `block_size` values in
 * `type_size` bytes; a row of n values takes n / block_size blocks. */
#ifndef SP_TENSOR_DTYPE_H
#define SP_TENSOR_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

typedef enum sp_dtype {
    SP_DTYPE_F32 = 0,
    SP_DTYPE_F16 = 1,
    SP_DTYPE_Q4_0 = 2,
    SP_DTYPE_Q4_1 = 3,
    SP_DTYPE_Q5_0 = 6,
    SP_DTYPE_Q5_1 = 7,
    SP_DTYPE_Q8_0 = 8,
    SP_DTYPE_Q8_1 = 9,
    SP_DTYPE_Q2_K = 10,
    SP_DTYPE_Q3_K = 11,
    SP_DTYPE_Q4_K = 12,
    SP_DTYPE_Q5_K = 13,
    SP_DTYPE_Q6_K = 14,
    SP_DTYPE_Q8_K = 15,
    SP_DTYPE_IQ2_XXS = 16,
    SP_DTYPE_IQ2_XS = 17,
    SP_DTYPE_IQ3_XXS = 18,
    SP_DTYPE_IQ1_S = 19,
    SP_DTYPE_IQ4_NL = 20,
    SP_DTYPE_IQ3_S = 21,
    SP_DTYPE_IQ2_S = 22,
    SP_DTYPE_IQ4_XS = 23,
    SP_DTYPE_I8 = 24,
    SP_DTYPE_I16 = 25,
    SP_DTYPE_I32 = 26,
    SP_DTYPE_I64 = 27,
    SP_DTYPE_F64 = 28,
    SP_DTYPE_IQ1_M = 29,
    SP_DTYPE_BF16 = 30,
    SP_DTYPE_TQ1_0 = 34,
    SP_DTYPE_TQ2_0 = 35,
    SP_DTYPE__COUNT = 36
} sp_dtype;

typedef struct sp_dtype_info {
    const char *name;   // "f32", "q8_0", ... as llama.cpp prints them
    int32_t block_size; // values per block (1 for plain types)
    int32_t type_size;  // bytes per block
    bool supported;     // Spindle can dequantize and compute with it
} sp_dtype_info;

/* Returns the layout of a type id, or NULL for an id GGUF does not define (including the
 * removed ids 4, 5, 31-33). Any thread. */
const sp_dtype_info *sp_dtype_get(uint32_t type);

/* Bytes taken by a row of n values: SP_ERR_INVALID when n is not a multiple of the block size
 * or the type is unknown, SP_ERR_RANGE on overflow. *out is written only on success. */
sp_err sp_dtype_row_bytes(uint32_t type, uint64_t n, uint64_t *out) SP_MUST_USE;

/* Parses a type name ("f32", "q4_k", case-insensitive); returns false if unknown. */
bool sp_dtype_from_name(const char *name, sp_dtype *out);

#endif

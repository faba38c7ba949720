/* AVX-512 helpers of the packed Q8_0/Q4_0 kernels (layouts and numerics in packed.h), for
 * packed_avx512.c and kernels_amx.c. Include only from files compiled for AVX-512. */
#ifndef SP_TENSOR_PACKED_X86_H
#define SP_TENSOR_PACKED_X86_H

#include <immintrin.h>

#include "tensor/packed.h"

/* The weights' scales of block b of a group, as floats. */
SP_PK_INLINE __m512 sp__pk_scales(const sp_f16 *scales, int64_t b) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(scales + b * SP_PK_GROUP)));
}

SP_PK_INLINE void sp__pk_prefetch(const void *p, int lines) {
#pragma GCC unroll 8
    for (int l = 0; l < lines; l++)
        _mm_prefetch((const char *)p + 64 * l, _MM_HINT_T0);
}

/* Every row of slice xs times one packed group (ints, its blocks; scales, its scales) over nb
 * blocks, on AVX512-VNNI, in the amx table's layout (Q8_0 weights signed); y: row 0 at the
 * group's first output, only the lanes in `keep` written. */
void sp__pk_group_vnni(int q4, const uint8_t *ints, const sp_f16 *scales, sp__pk_slice xs,
                       int64_t nb, float *y, int64_t ldy, __mmask16 keep);

#endif

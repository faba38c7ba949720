/* Pieces shared by the x86 kernel files (kernels_avx2.c, kernels_avx512.c), which are compiled
 * with at least AVX2, FMA and F16C: internal to src/tensor. */
#ifndef SP_TENSOR_KERNELS_X86_H
#define SP_TENSOR_KERNELS_X86_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#define INLINE static inline __attribute__((always_inline))

/* Switch cases that run F(H, ...) on a block of H query heads, H = the switch value, up to 4 or
 * 8 (larger values take the largest block): the attention kernels' head blocks, one unrolled
 * copy per size, so the heads of any GQA group share each key and value load. */
#define HEAD_CASE(H, F, ...)                                                                       \
    case H:                                                                                        \
        F(H, __VA_ARGS__);                                                                         \
        break;
#define HEAD_CASES_1_3(F, ...)                                                                     \
    HEAD_CASE(1, F, __VA_ARGS__) HEAD_CASE(2, F, __VA_ARGS__) HEAD_CASE(3, F, __VA_ARGS__)
#define HEAD_BLOCK_CASES_4(F, ...)                                                                 \
    HEAD_CASES_1_3(F, __VA_ARGS__)                                                                 \
    default:                                                                                       \
        F(4, __VA_ARGS__);                                                                         \
        break;
#define HEAD_BLOCK_CASES_8(F, ...)                                                                 \
    HEAD_CASES_1_3(F, __VA_ARGS__)                                                                 \
    HEAD_CASE(4, F, __VA_ARGS__)                                                                   \
    HEAD_CASE(5, F, __VA_ARGS__) HEAD_CASE(6, F, __VA_ARGS__) HEAD_CASE(7, F, __VA_ARGS__) default \
        : F(8, __VA_ARGS__);                                                                       \
    break;

/* Horizontal sum in a fixed order: ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)), as ggml's
 * hsum_float_8. */
INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Covers rows [0, n_rows) x outputs [o0, o1) with RB x OB tiles of TILE, then smaller tiles for
 * the leftover rows and outputs. `len` is nb for the quantized kinds, n_in for the float ones.
 * RB and OB are constants, so each tile shape is a separate fully unrolled copy. */
#define DEFINE_TILING(PFX, TILE)                                                                   \
    INLINE void PFX##_cols(const int RB, const int O, const int kind, const uint8_t *w,            \
                           size_t wrb, const uint8_t *x, size_t xrb, int64_t len, int64_t n_rows,  \
                           float *y, int64_t ldy) {                                                \
        int64_t r = 0;                                                                             \
        for (; r + RB <= n_rows; r += RB)                                                          \
            TILE(RB, O, kind, w, wrb, x + (size_t)r * xrb, xrb, len, y + r * ldy, ldy);            \
        const int64_t left = n_rows - r;                                                           \
        x += (size_t)r * xrb;                                                                      \
        y += r * ldy;                                                                              \
        if (RB > 3 && left == 3)                                                                   \
            TILE(3, O, kind, w, wrb, x, xrb, len, y, ldy);                                         \
        else if (RB > 2 && left == 2)                                                              \
            TILE(2, O, kind, w, wrb, x, xrb, len, y, ldy);                                         \
        else if (RB > 1 && left == 1)                                                              \
            TILE(1, O, kind, w, wrb, x, xrb, len, y, ldy);                                         \
    }                                                                                              \
    INLINE void PFX##_tiles(const int RB, const int OB, const int kind, const uint8_t *w,          \
                            size_t wrb, const uint8_t *x, size_t xrb, int64_t len, int64_t n_rows, \
                            float *y, int64_t ldy, int64_t o0, int64_t o1) {                       \
        int64_t o = o0;                                                                            \
        for (; o + OB <= o1; o += OB)                                                              \
            PFX##_cols(RB, OB, kind, w + (size_t)o * wrb, wrb, x, xrb, len, n_rows, y + o, ldy);   \
        for (; o < o1; o++)                                                                        \
            PFX##_cols(RB, 1, kind, w + (size_t)o * wrb, wrb, x, xrb, len, n_rows, y + o, ldy);    \
    }

#define MATMUL(name, impl, kind)                                                                   \
    static void name(const void *w, size_t wrb, const void *x, size_t xrb, int64_t n_in,           \
                     int64_t n_rows, float *y, int64_t ldy, int64_t o0, int64_t o1) {              \
        impl(kind, w, wrb, x, xrb, n_in, n_rows, y, ldy, o0, o1);                                  \
    }

#endif

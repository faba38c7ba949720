/* Pieces shared by the x86 kernel files (kernels_avx2.c, kernels_avx512.c), which are compiled
 * with at least AVX2, FMA and F16C: internal to src/tensor. The Q8_0/Q4_0 tile is written once
 * here over four steps that each including file defines for its instruction set. */
#ifndef SP_TENSOR_KERNELS_X86_H
#define SP_TENSOR_KERNELS_X86_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

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

/* Horizontal sum in a fixed order, halves added: lane i + lane i+4, then i + i+2, then 0 + 1, i.e.
 * ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)). */
INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// ---------------------------------------------------------------- Q8_0 / Q4_0 weights

enum { Q8_0_BYTES = 34, Q4_0_BYTES = 18 };

/* How far ahead of use each weight row is prefetched (the best of 256..2048 bytes measured on a
 * 2048 x 5632 Q8_0 matrix streamed from DRAM, for 1 to 32 activation rows). */
enum { PREFETCH_BYTES = 512 };

/* kind, bit 0: Q4_0 weights, else Q8_0 (kernels_avx2.c uses bit 1 for AVX-VNNI dots). */
enum { K_Q8_0 = 0, K_Q4_0 = 1 };

/* The 16 bytes of a Q4_0 block in both halves, the upper half shifted right by 4 bits: the low
 * nibble of byte j is then value j in the lower half and value j + 16 in the upper one. */
INLINE __m256i q4_nibbles(const uint8_t *blk) {
    const __m256i t = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(blk + 2)));
    return _mm256_srlv_epi64(t, _mm256_setr_epi64x(0, 0, 4, 4));
}

/* The steps of q_tile that differ per instruction set, which every file including this header
 * defines (always_inline, compiled with that file's flags, so each file's q_tile is built from its
 * own steps and inlines them). The exact integer dot of a weight block and an activation block,
 * as 8 int32 lanes (lane l: positions 4l..4l+3), is int_dot(kind, wv, wa, xq, xa) with
 * wv = load_wv(kind, the weight block), wa = prep_wa(kind, wv), xq = the activation block's 32
 * bytes and xa = prep_xa(kind, xq) (a tile computes xa once per activation block); every ISA
 * gives the same integers. */
INLINE __m256i load_wv(const int kind, const uint8_t *blk);
INLINE __m256i prep_wa(const int kind, __m256i wv);
INLINE __m256i prep_xa(const int kind, __m256i xq);
INLINE __m256i int_dot(const int kind, __m256i wv, __m256i wa, __m256i xq, __m256i xa);

/* Lane o: the sum of the 8 int32 lanes of d[o] (exact: a block's dot is far from overflow). */
INLINE __m256i lane_sums8(const __m256i d[8]) {
    // hadd works within 128-bit halves: after two rounds, half h of ab holds the sums of lanes
    // 4h..4h+3 of d[0..3], half h of ce those of d[4..7].
    const __m256i ab =
        _mm256_hadd_epi32(_mm256_hadd_epi32(d[0], d[1]), _mm256_hadd_epi32(d[2], d[3]));
    const __m256i ce =
        _mm256_hadd_epi32(_mm256_hadd_epi32(d[4], d[5]), _mm256_hadd_epi32(d[6], d[7]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(ab, ce, 0x20),
                            _mm256_permute2x128_si256(ab, ce, 0x31));
}

/* The F16 scales of block b of weight rows 0..O-1 (wrb apart) in lanes 0..O-1 as floats (exact),
 * 0 in the others. */
INLINE __m256 row_scales(const int O, const uint8_t *w, size_t wrb, int64_t b, const int wbs) {
    uint16_t d[8] = {0};
#pragma GCC unroll 8
    for (int o = 0; o < O; o++)
        memcpy(&d[o], w + (size_t)o * wrb + (size_t)b * (size_t)wbs, sizeof d[o]);
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)d));
}

/* One R x O tile (O <= 8) over all nb blocks, the outputs in the lanes of one vector per
 * activation row. w: weight row o0 (rows wrb apart); x: activation row r0 (rows xrb apart); y:
 * &y[r0][o0]. Per block, the exact int32 dot S of each (row, output) pair (int_dot's 8 lanes
 * summed into lane o), then per row, lane by lane, acc = fma((float)S, d_w * d_x, acc) from 0:
 * the block sums of packed.h and sp_vec_dot_ref, whatever R, O or the output's lane. */
INLINE void q_tile(const int R, const int O, const int kind, const uint8_t *w, size_t wrb,
                   const uint8_t *x, size_t xrb, int64_t nb, float *y, int64_t ldy) {
    const int wbs = (kind & K_Q4_0) ? Q4_0_BYTES : Q8_0_BYTES;
    __m256 acc[4];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
        acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        // The weights stream from memory (once per call): ask for them ahead of use.
#pragma GCC unroll 8
        for (int o = 0; o < O; o++)
            _mm_prefetch((const char *)(w + (size_t)o * wrb + (size_t)b * (size_t)wbs) +
                             PREFETCH_BYTES,
                         _MM_HINT_T0);
        const __m256 dw = row_scales(O, w, wrb, b, wbs);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const uint8_t *xblk = x + (size_t)r * xrb + (size_t)b * Q8_0_BYTES;
            const __m256i xq = _mm256_loadu_si256((const __m256i *)(xblk + 2));
            const __m256i xa = prep_xa(kind, xq);
            __m256i d[8];
#pragma GCC unroll 8
            for (int o = 0; o < 8; o++) {
                if (o >= O) {
                    d[o] = _mm256_setzero_si256();
                    continue;
                }
                const __m256i wv = load_wv(kind, w + (size_t)o * wrb + (size_t)b * (size_t)wbs);
                d[o] = int_dot(kind, wv, prep_wa(kind, wv), xq, xa);
            }
            uint16_t dx16;
            memcpy(&dx16, xblk, sizeof dx16);
            const __m256 dp = _mm256_mul_ps(dw, _mm256_set1_ps(_cvtsh_ss(dx16)));
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lane_sums8(d)), dp, acc[r]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        float out[8];
        _mm256_storeu_ps(out, acc[r]);
        memcpy(y + r * ldy, out, (size_t)O * sizeof(float));
    }
}

// ---------------------------------------------------------------- tiling and entry points

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

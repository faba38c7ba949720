/* The exponential of every kernel table (internal to src/tensor): the softmax of attention and
 * SwiGLU's sigmoid use e^x computed by exactly these float operations, in this order, on every
 * table. sp__exp below is the scalar form (the scalar table's, and the definition); the SIMD
 * tables run the same operations lane by lane (exp8 in kernels_avx2.c, exp16 in
 * kernels_avx512.c). Every step is a single IEEE operation rounded to nearest (fmaf is fused:
 * one rounding) or exact integer arithmetic on bit patterns, so the result is the same bits
 * wherever it runs.
 *
 *  1. x is clamped to [SP__EXP_LO, SP__EXP_HI] (a NaN passes through): below, e^x rounds to 0;
 *     above, it overflows to infinity, and the clamped value does the same.
 *  2. n = round(x log2(e)) to nearest even: t = fma(x, log2(e), 1.5 2^23), whose last bits are n
 *     (|n| <= 150); nf = t - 1.5 2^23, exact.
 *  3. r = x - n ln2 in two steps: fma(nf, -LN2_HI, x), exact (both are multiples of 2^-25 and
 *     the difference is under 1/2), then fma(nf, -LN2_LO, .); |r| <= ln2 / 2 + a little.
 *  4. e^r by its Taylor polynomial of degree 8 in Horner form, all fmas: p = 1/8!, then
 *     p = fma(p, r, 1/k!) for k = 7 .. 2, then p = fma(p, r, 1) twice (truncation under 2^-29
 *     relative).
 *  5. 2^n as two normal powers 2^n1 2^n2 (n1 = floor(n / 2), n2 = n - n1, built in the exponent
 *     bits from t's bits), and the result (p 2^n1) 2^n2: the first product is exact, the
 *     second rounds once, so subnormal results are rounded correctly. (AVX-512's vscalefps
 *     rounds p 2^n once as well, so exp16 does this step in one instruction: the same bits.)
 *
 * Over every float the result is within 0.9 units in the last place of e^x (tests/unit/tensor/
 * test_kernels.c measures it against the double exponential and against expf); e^0 = 1, e^-inf
 * = 0, e^+inf = +inf, NaN gives a NaN (its payload unspecified). */
#ifndef SP_TENSOR_EXP_H
#define SP_TENSOR_EXP_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#define SP__EXP_LO         (-104.0f)                // e^-104 < 2^-150: rounds to 0
#define SP__EXP_HI         88.75f                   // e^88.75 > FLT_MAX: overflows
#define SP__EXP_LOG2E      1.44269504088896341f     // log2(e)
#define SP__EXP_SHIFT      12582912.0f              // 1.5 2^23: its float's ulp is 1
#define SP__EXP_SHIFT_BITS 0x4b400000u              // the bits of SP__EXP_SHIFT
#define SP__EXP_LN2_HI     0.693147182464599609375f // ln2 rounded to float (a multiple of 2^-24)
#define SP__EXP_LN2_LO     (-1.90465429995e-09f)    // ln2 - SP__EXP_LN2_HI
#define SP__EXP_C8         (1.0f / 40320.0f)        // 1/k!, rounded to float
#define SP__EXP_C7         (1.0f / 5040.0f)
#define SP__EXP_C6         (1.0f / 720.0f)
#define SP__EXP_C5         (1.0f / 120.0f)
#define SP__EXP_C4         (1.0f / 24.0f)
#define SP__EXP_C3         (1.0f / 6.0f)
#define SP__EXP_C2         0.5f

/* e^x by steps 1-5 above. Step 5 takes n from the bits of t in unsigned 32-bit arithmetic, as
 * the vector forms do: n = bits(t) - bits(1.5 2^23), n1 = ((n + 256) >> 1) - 128 (floor(n / 2)
 * for |n| < 256), n2 = n - n1, and 2^k has the bits (k + 127) << 23. */
static inline float sp__exp(float x) {
    x = x < SP__EXP_LO ? SP__EXP_LO : x;
    x = x > SP__EXP_HI ? SP__EXP_HI : x;
    const float t = fmaf(x, SP__EXP_LOG2E, SP__EXP_SHIFT);
    const float nf = t - SP__EXP_SHIFT;
    float r = fmaf(nf, -SP__EXP_LN2_HI, x);
    r = fmaf(nf, -SP__EXP_LN2_LO, r);
    float p = SP__EXP_C8;
    p = fmaf(p, r, SP__EXP_C7);
    p = fmaf(p, r, SP__EXP_C6);
    p = fmaf(p, r, SP__EXP_C5);
    p = fmaf(p, r, SP__EXP_C4);
    p = fmaf(p, r, SP__EXP_C3);
    p = fmaf(p, r, SP__EXP_C2);
    p = fmaf(p, r, 1.0f);
    p = fmaf(p, r, 1.0f);
    uint32_t tb;
    memcpy(&tb, &t, sizeof tb);
    const uint32_t n = tb - SP__EXP_SHIFT_BITS;
    const uint32_t n1 = ((n + 256u) >> 1) - 128u, n2 = n - n1;
    const uint32_t b1 = (n1 + 127u) << 23, b2 = (n2 + 127u) << 23;
    float s1, s2;
    memcpy(&s1, &b1, sizeof s1);
    memcpy(&s2, &b2, sizeof s2);
    return (p * s1) * s2;
}

#endif

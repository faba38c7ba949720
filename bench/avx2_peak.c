/* The most int8 multiply-adds per second one core can do with AVX2's byte products, the way an
 * exact Q8_0 x Q8_0 product must do them without AVX-VNNI: per 32 products of a signed weight and
 * a signed activation, vpsignb (the activation takes the weight's sign), vpmaddubsw (|w| times
 * it, pairs added in int16) and vpmaddwd (pairs of those into int32), then vpaddd into the
 * accumulator. Twelve independent chains keep every port busy; nothing is loaded from memory. With
 * AVX-VNNI one vpdpbusd replaces the four (printed for comparison where the CPU has it).
 *
 * And the same for an exact Q4_0 x Q8_0 product (packed.h's numerics): per block of 32 inputs and
 * 8 outputs (256 multiply-adds), 8 vpmaddubsw of the unsigned 4-bit weights by the activations,
 * their pairs added in int16 (7 vpaddw), then the block's float step: vpmaddwd into int32, the
 * offset of the unsigned weights added, vcvtdq2ps, the product of the two scales and the fma.
 * Unpacking the 4-bit weights is not counted (a kernel shares it among its rows): this is a
 * ceiling no Q4_0 kernel with these instructions passes.
 *
 *   cc -O2 -mavx2 -mfma bench/avx2_peak.c -o avx2_peak && ./avx2_peak
 *
 * Prints GMAC/s for one thread (the best of several runs). */
#define _GNU_SOURCE
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

enum { CHAINS = 12, ITERS = 20 * 1000 * 1000 };

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* MACs per second of the AVX2 sequence. */
static double avx2_rate(void) {
    __m256i acc[CHAINS], x[CHAINS];
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i w = _mm256_set1_epi8(3), aw = _mm256_abs_epi8(w);
    for (int c = 0; c < CHAINS; c++) {
        acc[c] = _mm256_setzero_si256();
        x[c] = _mm256_set1_epi8((char)(c + 1));
    }
    const double t0 = now();
    for (int i = 0; i < ITERS; i++) {
#pragma GCC unroll 12
        for (int c = 0; c < CHAINS; c++) {
            const __m256i p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(x[c], w));
            acc[c] = _mm256_add_epi32(acc[c], _mm256_madd_epi16(p, ones));
        }
        // Keep the compiler from hoisting the products out of the loop.
        __asm__ volatile("" : "+x"(w), "+x"(aw));
    }
    const double dt = now() - t0;
    int32_t sink = 0;
    for (int c = 0; c < CHAINS; c++)
        sink += _mm256_extract_epi32(acc[c], 0);
    if (sink == 42)
        puts("");
    return (double)ITERS * CHAINS * 32 / dt;
}

/* MACs per second of the Q4_0 block sequence. */
static double q4_rate(void) {
    enum { C = 6 };
    __m256 acc[C];
    __m256i x[C];
    const __m256i ones = _mm256_set1_epi16(1), off = _mm256_set1_epi32(-8 * 100);
    __m256i w = _mm256_set1_epi8(7);
    __m256 dw = _mm256_set1_ps(0.5f), dx = _mm256_set1_ps(0.25f);
    for (int c = 0; c < C; c++) {
        acc[c] = _mm256_setzero_ps();
        x[c] = _mm256_set1_epi8((char)(c + 1));
    }
    const int iters = ITERS / 4;
    const double t0 = now();
    for (int i = 0; i < iters; i++) {
#pragma GCC unroll 6
        for (int c = 0; c < C; c++) {
            __m256i p = _mm256_maddubs_epi16(w, x[c]);
#pragma GCC unroll 7
            for (int k = 1; k < 8; k++) {
                __asm__ volatile("" : "+x"(w)); // a new product each time, not one reused
                p = _mm256_add_epi16(p, _mm256_maddubs_epi16(w, x[c]));
            }
            const __m256i s = _mm256_add_epi32(_mm256_madd_epi16(p, ones), off);
            acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(dw, dx), acc[c]);
            __asm__ volatile("" : "+x"(w), "+x"(dx));
        }
    }
    const double dt = now() - t0;
    float sink = 0;
    for (int c = 0; c < C; c++)
        sink += _mm256_cvtss_f32(acc[c]);
    if (sink == 42)
        puts("");
    return (double)iters * C * 256 / dt;
}

#if defined(__GNUC__)
/* MACs per second of vpdpbusd (VEX encoding), if the CPU has AVX-VNNI. */
static double vnni_rate(void) {
    __m256i acc[CHAINS];
    __m256i w = _mm256_set1_epi8(3), x = _mm256_set1_epi8(5);
    for (int c = 0; c < CHAINS; c++)
        acc[c] = _mm256_setzero_si256();
    const double t0 = now();
    for (int i = 0; i < ITERS; i++) {
#pragma GCC unroll 12
        for (int c = 0; c < CHAINS; c++)
            __asm__("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc[c]) : "x"(w), "x"(x));
        __asm__ volatile("" : "+x"(w), "+x"(x));
    }
    const double dt = now() - t0;
    int32_t sink = 0;
    for (int c = 0; c < CHAINS; c++)
        sink += _mm256_extract_epi32(acc[c], 0);
    if (sink == 42)
        puts("");
    return (double)ITERS * CHAINS * 32 / dt;
}
#endif

int main(void) {
    double best = 0;
    for (int r = 0; r < 5; r++) {
        const double v = avx2_rate();
        best = v > best ? v : best;
    }
    printf("avx2 int8 products (vpsignb, vpmaddubsw, vpmaddwd, vpaddd), one thread: %.1f GMAC/s\n",
           best * 1e-9);
    best = 0;
    for (int r = 0; r < 5; r++) {
        const double v = q4_rate();
        best = v > best ? v : best;
    }
    printf("avx2 Q4_0 blocks (8 vpmaddubsw, 7 vpaddw, the float step), one thread: %.1f GMAC/s\n",
           best * 1e-9);
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avxvnni")) {
        double v = 0;
        for (int r = 0; r < 5; r++) {
            const double t = vnni_rate();
            v = t > v ? t : v;
        }
        printf("avx-vnni vpdpbusd (256-bit), one thread: %.1f GMAC/s\n", v * 1e-9);
    }
    return 0;
}

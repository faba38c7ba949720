/* The x86 K-quant kernels (kquants_avx2.c, kquants_avx512.c) against the scalar reference.
 *
 * For each instruction set the CPU has, on a kernel table filled only by
 * sp__kquants_<isa>_init():
 * - Q4_K and Q6_K matmuls equal sp_vec_dot_ref within a float-rounding budget. Integer parts
 *   are exact in both, so they differ only in how the per-block float products are rounded and
 *   summed: |y - ref| <= (nb + 8) * 2^-23 * S, where S is the dot product of absolute values
 *   of the two pieces each weight is made of (Q4_K: |d sc q| and |dmin m|; Q6_K: |d sc q| and
 *   |d sc 32|) with the absolute activations, i.e. a bound on every partial sum. Weights are
 *   made with sp_quantize_row from random rows with block scales from 1e-6 to 1e4, zero
 *   blocks and single outliers, and also as random bytes (every scale bit pattern, Q6_K
 *   scales down to -128); activations with sp_quantize_act_row, and also as random Q8_K
 *   blocks with quants down to -128.
 * - Invariance: each output is bit-identical (memcmp) whatever n_rows (1..9, 33), the first
 *   row, and the [o0, o1) split are; outputs outside [o0, o1) and between rows (ldy > n_out)
 *   are left untouched.
 * - The AVX2 and AVX-512 tables agree bit for bit.
 * - sp__quantize_q8_k_avx2 writes the same bytes as sp_quantize_act_row(SP_DTYPE_Q8_K), on
 *   random rows, ties of magnitude between signs, exact halves, zero and tiny blocks. */
#include "testutil.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "tensor/kernels.h"
#include "tensor/quant.h"

#if defined(__x86_64__)
#include "tensor/kquants.h"

static size_t row_bytes(sp_dtype t, int64_t n) {
    uint64_t b = 0;
    assert_int_equal(sp_dtype_row_bytes(t, (uint64_t)n, &b), SP_OK);
    return (size_t)b;
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

// ---------------------------------------------------------------- kernel tables

typedef struct isa {
    const char *name;
    void (*init)(sp_kernels *k);
    bool present;
} isa;

static isa isas[2];

static void find_isas(void) {
    // The dispatch's CPU detection decides which instruction sets this machine has.
    isas[0] = (isa){"avx2", sp__kquants_avx2_init, sp_kernels_for("avx2") != NULL};
    isas[1] = (isa){"avx512", sp__kquants_avx512_init, sp_kernels_for("avx512") != NULL};
}

static sp_matmul_fn kernel(const isa *s, sp_dtype t) {
    sp_kernels k;
    memset(&k, 0, sizeof k);
    s->init(&k);
    assert_non_null(k.matmul[t]);
    for (int i = 0; i < SP_DTYPE__COUNT; i++)
        if (i != SP_DTYPE_Q4_K && i != SP_DTYPE_Q6_K)
            assert_null(k.matmul[i]);
    assert_null(k.quantize_act); // left to kernels_<isa>.c, which may call ours for Q8_K
    return k.matmul[t];
}

// ---------------------------------------------------------------- test data

/* A row of n floats whose 256-value blocks have scales spread from 1e-6 to 1e4, with some
 * blocks of zeros and some with a single large outlier. */
static void random_floats(uint64_t *rng, float *x, int64_t n) {
    for (int64_t b = 0; b < n / SP_QK_K; b++) {
        float *xb = x + b * SP_QK_K;
        const uint64_t kind = sp_test_rand(rng) % 8;
        const float scale = powf(10.0f, -6.0f + 10.0f * (sp_test_randf(rng) * 0.5f + 0.5f));
        for (int i = 0; i < SP_QK_K; i++)
            xb[i] = kind == 0 ? 0.0f : scale * sp_test_randn(rng);
        if (kind == 1)
            xb[sp_test_rand(rng) % SP_QK_K] = 1000.0f * scale;
        if (kind == 2) // every value positive: Q4_K mins all zero
            for (int i = 0; i < SP_QK_K; i++)
                xb[i] = fabsf(xb[i]) + scale;
    }
}

/* n_out weight rows of type t; raw: random bytes with finite scales instead of quantized
 * floats. */
static void *make_weights(uint64_t *rng, sp_dtype t, int64_t n_in, int64_t n_out, bool raw) {
    const size_t rb = row_bytes(t, n_in);
    uint8_t *w = xmalloc(rb * (size_t)n_out);
    float *x = xmalloc((size_t)n_in * sizeof(float));
    for (int64_t o = 0; o < n_out; o++) {
        uint8_t *row = w + (size_t)o * rb;
        if (!raw) {
            random_floats(rng, x, n_in);
            sp_quantize_row(t, x, row, n_in);
            continue;
        }
        for (size_t i = 0; i < rb; i++)
            row[i] = (uint8_t)sp_test_rand(rng);
        for (int64_t b = 0; b < n_in / SP_QK_K; b++) {
            // Finite f16 scales of either sign, magnitudes 2^-14..2^3.
            const float d = ldexpf(sp_test_randf(rng), (int)(sp_test_rand(rng) % 18) - 14);
            const float dmin = ldexpf(sp_test_randf(rng), (int)(sp_test_rand(rng) % 18) - 14);
            if (t == SP_DTYPE_Q4_K) {
                sp_block_q4_k *blk = (sp_block_q4_k *)row + b;
                blk->d = sp_f32_to_f16(d);
                blk->dmin = sp_f32_to_f16(dmin);
            } else {
                sp_block_q6_k *blk = (sp_block_q6_k *)row + b;
                blk->d = sp_f32_to_f16(d);
            }
        }
    }
    free(x);
    return w;
}

/* n_rows Q8_K activation rows; raw: random quants in -128..127 with consistent bsums. */
static void *make_acts(uint64_t *rng, int64_t n_in, int64_t n_rows, bool raw) {
    const size_t rb = row_bytes(SP_DTYPE_Q8_K, n_in);
    uint8_t *a = xmalloc(rb * (size_t)n_rows);
    float *x = xmalloc((size_t)n_in * sizeof(float));
    for (int64_t r = 0; r < n_rows; r++) {
        sp_block_q8_k *blk = (sp_block_q8_k *)(a + (size_t)r * rb);
        if (!raw) {
            random_floats(rng, x, n_in);
            sp_quantize_act_row(SP_DTYPE_Q8_K, x, blk, n_in);
            continue;
        }
        for (int64_t b = 0; b < n_in / SP_QK_K; b++) {
            blk[b].d = ldexpf(sp_test_randf(rng), (int)(sp_test_rand(rng) % 40) - 20);
            for (int i = 0; i < SP_QK_K; i++)
                blk[b].qs[i] =
                    (int8_t)(sp_test_rand(rng) % 4 == 0 ? 0x80u : (uint8_t)sp_test_rand(rng));
            for (int g = 0; g < SP_QK_K / 16; g++) {
                int s = 0;
                for (int i = 0; i < 16; i++)
                    s += blk[b].qs[16 * g + i];
                blk[b].bsums[g] = (int16_t)s;
            }
        }
    }
    free(x);
    return a;
}

/* S of the header comment for one weight row and one activation row, from the format
 * definitions (6-bit Q4_K scales, 6-bit Q6_K quants stored + 32). */
static double abs_dot(sp_dtype t, const void *w_row, const void *x_row, int64_t n_in) {
    const sp_block_q8_k *x = x_row;
    double s = 0;
    for (int64_t b = 0; b < n_in / SP_QK_K; b++) {
        for (int k = 0; k < SP_QK_K; k++) {
            const double ax = fabs((double)x[b].d * x[b].qs[k]);
            double aw;
            if (t == SP_DTYPE_Q4_K) {
                const sp_block_q4_k *w = (const sp_block_q4_k *)w_row + b;
                const int j = k / 32;
                const uint8_t *p = w->scales;
                const int sc = j < 4 ? p[j] & 63 : (p[j + 4] & 15) | ((p[j - 4] >> 6) << 4);
                const int m = j < 4 ? p[j + 4] & 63 : (p[j + 4] >> 4) | ((p[j] >> 6) << 4);
                const uint8_t byte = w->qs[32 * (j / 2) + k % 32];
                const int q = (j & 1) ? byte >> 4 : byte & 15;
                aw = fabs((double)sp_f16_to_f32(w->d) * sc * q) +
                     fabs((double)sp_f16_to_f32(w->dmin) * m);
            } else {
                const sp_block_q6_k *w = (const sp_block_q6_k *)w_row + b;
                const int h = k / 128, r = k % 128, quarter = r / 32, l = r % 32;
                const uint8_t lo = w->ql[64 * h + l + 32 * (quarter & 1)];
                const int q = ((quarter & 2) ? lo >> 4 : lo & 15) |
                              (((w->qh[32 * h + l] >> (2 * quarter)) & 3) << 4);
                aw = fabs((double)sp_f16_to_f32(w->d) * w->scales[k / 16]) * (q + 32);
            }
            s += aw * ax;
        }
    }
    return s;
}

// ---------------------------------------------------------------- against the reference

static double worst_ratio[2][2]; // [isa][Q4_K, Q6_K]: max |y - ref| / budget seen

static void check_against_ref(const isa *s, int si, sp_dtype t, int64_t n_in, int64_t n_out,
                              int64_t n_rows, bool raw_w, bool raw_x, uint64_t seed) {
    uint64_t rng = seed;
    const size_t wrb = row_bytes(t, n_in), xrb = row_bytes(SP_DTYPE_Q8_K, n_in);
    uint8_t *w = make_weights(&rng, t, n_in, n_out, raw_w);
    uint8_t *x = make_acts(&rng, n_in, n_rows, raw_x);
    float *y = xmalloc((size_t)(n_rows * n_out) * sizeof(float));
    kernel(s, t)(w, wrb, x, xrb, n_in, n_rows, y, n_out, 0, n_out);
    const int64_t nb = n_in / SP_QK_K;
    for (int64_t r = 0; r < n_rows; r++) {
        for (int64_t o = 0; o < n_out; o++) {
            const void *wr = w + (size_t)o * wrb, *xr = x + (size_t)r * xrb;
            const float ref = sp_vec_dot_ref(t, wr, xr, n_in);
            const double budget = (double)(nb + 8) * ldexp(1.0, -23) * abs_dot(t, wr, xr, n_in);
            const double err = fabs((double)y[r * n_out + o] - (double)ref);
            if (!(err <= budget)) {
                fprintf(stderr, "%s %s n_in %lld row %lld out %lld: %.9g vs ref %.9g (budget %g)\n",
                        s->name, t == SP_DTYPE_Q4_K ? "q4_k" : "q6_k", (long long)n_in,
                        (long long)r, (long long)o, (double)y[r * n_out + o], (double)ref, budget);
                fail();
            }
            const double ratio = budget > 0 ? err / budget : 0;
            double *worst = &worst_ratio[si][t == SP_DTYPE_Q6_K];
            if (ratio > *worst)
                *worst = ratio;
        }
    }
    free(y);
    free(x);
    free(w);
}

static void test_matmul_vs_ref(void **state) {
    (void)state;
    static const int64_t n_ins[] = {256, 512, 5632};
    static const sp_dtype types[] = {SP_DTYPE_Q4_K, SP_DTYPE_Q6_K};
    int ran = 0;
    for (int si = 0; si < 2; si++) {
        if (!isas[si].present)
            continue;
        ran++;
        for (size_t ti = 0; ti < 2; ti++) {
            for (size_t ni = 0; ni < SP_ARRAY_LEN(n_ins); ni++) {
                const int64_t n_in = n_ins[ni];
                const int64_t n_out = n_in > 1000 ? 5 : 13;
                for (int64_t n_rows = 1; n_rows <= 9; n_rows++)
                    check_against_ref(&isas[si], si, types[ti], n_in, n_out, n_rows, false, false,
                                      100 * (uint64_t)n_rows + ni);
                check_against_ref(&isas[si], si, types[ti], n_in, n_out, 33, false, false, 7);
                check_against_ref(&isas[si], si, types[ti], n_in, 7, 5, true, false, 8);
                check_against_ref(&isas[si], si, types[ti], n_in, 7, 6, false, true, 9);
                check_against_ref(&isas[si], si, types[ti], n_in, 7, 7, true, true, 10);
            }
        }
        printf("%s: worst |y - ref| / budget: q4_k %.3g, q6_k %.3g\n", isas[si].name,
               worst_ratio[si][0], worst_ratio[si][1]);
    }
    if (!ran)
        skip();
}

// ---------------------------------------------------------------- invariance

static void test_invariance(void **state) {
    (void)state;
    static const sp_dtype types[] = {SP_DTYPE_Q4_K, SP_DTYPE_Q6_K};
    const int64_t n_in = 512, n_out = 11, n_rows = 33, ldy = n_out + 3;
    int ran = 0;
    for (int si = 0; si < 2; si++) {
        if (!isas[si].present)
            continue;
        ran++;
        for (size_t ti = 0; ti < 2; ti++) {
            const sp_dtype t = types[ti];
            uint64_t rng = 42 + ti;
            const size_t wrb = row_bytes(t, n_in), xrb = row_bytes(SP_DTYPE_Q8_K, n_in);
            uint8_t *w = make_weights(&rng, t, n_in, n_out, ti == 1);
            uint8_t *x = make_acts(&rng, n_in, n_rows, false);
            const size_t ny = (size_t)(n_rows * ldy);
            float *full = xmalloc(ny * sizeof(float));
            float *part = xmalloc(ny * sizeof(float));
            const sp_matmul_fn mm = kernel(&isas[si], t);
            for (size_t i = 0; i < ny; i++)
                full[i] = NAN;
            mm(w, wrb, x, xrb, n_in, n_rows, full, ldy, 0, n_out);
            for (int64_t r = 0; r < n_rows; r++)
                for (int64_t o = n_out; o < ldy; o++)
                    assert_true(isnan(full[r * ldy + o])); // padding untouched

            // Every batch size from every first row, with a three-way split of the outputs.
            for (int64_t nr = 1; nr <= 9; nr++) {
                for (int64_t r0 = 0; r0 + nr <= n_rows; r0 += 1 + nr / 2) {
                    for (size_t i = 0; i < ny; i++)
                        part[i] = NAN;
                    const int64_t a = (nr * 3) % n_out, b = a + (n_out - a) / 2;
                    float *yp = part + r0 * ldy;
                    const void *xp = x + (size_t)r0 * xrb;
                    mm(w, wrb, xp, xrb, n_in, nr, yp, ldy, b, n_out);
                    mm(w, wrb, xp, xrb, n_in, nr, yp, ldy, 0, a);
                    mm(w, wrb, xp, xrb, n_in, nr, yp, ldy, a, b);
                    mm(w, wrb, xp, xrb, n_in, nr, yp, ldy, b, b); // empty range
                    for (int64_t r = 0; r < n_rows; r++)
                        for (int64_t o = 0; o < ldy; o++) {
                            const size_t at = (size_t)(r * ldy + o);
                            if (r >= r0 && r < r0 + nr && o < n_out)
                                assert_memory_equal(&part[at], &full[at], sizeof(float));
                            else
                                assert_true(isnan(part[at]));
                        }
                }
            }
            // One output at a time for all rows.
            for (size_t i = 0; i < ny; i++)
                part[i] = NAN;
            for (int64_t o = n_out - 1; o >= 0; o--)
                mm(w, wrb, x, xrb, n_in, n_rows, part, ldy, o, o + 1);
            assert_memory_equal(part, full, ny * sizeof(float));
            free(part);
            free(full);
            free(x);
            free(w);
        }
    }
    if (!ran)
        skip();
}

static void test_isas_agree(void **state) {
    (void)state;
    if (!isas[0].present || !isas[1].present)
        skip();
    static const sp_dtype types[] = {SP_DTYPE_Q4_K, SP_DTYPE_Q6_K};
    const int64_t n_in = 5632, n_out = 9, n_rows = 6;
    for (size_t ti = 0; ti < 2; ti++) {
        for (int raw = 0; raw < 2; raw++) {
            const sp_dtype t = types[ti];
            uint64_t rng = 1000 + 2 * ti + (uint64_t)raw;
            const size_t wrb = row_bytes(t, n_in), xrb = row_bytes(SP_DTYPE_Q8_K, n_in);
            uint8_t *w = make_weights(&rng, t, n_in, n_out, raw);
            uint8_t *x = make_acts(&rng, n_in, n_rows, raw);
            float *y2 = xmalloc((size_t)(n_rows * n_out) * sizeof(float));
            float *y5 = xmalloc((size_t)(n_rows * n_out) * sizeof(float));
            kernel(&isas[0], t)(w, wrb, x, xrb, n_in, n_rows, y2, n_out, 0, n_out);
            kernel(&isas[1], t)(w, wrb, x, xrb, n_in, n_rows, y5, n_out, 0, n_out);
            assert_memory_equal(y2, y5, (size_t)(n_rows * n_out) * sizeof(float));
            free(y5);
            free(y2);
            free(x);
            free(w);
        }
    }
}

// ---------------------------------------------------------------- Q8_K activations

static void expect_same_q8_k(const float *x, int64_t n) {
    const size_t rb = row_bytes(SP_DTYPE_Q8_K, n);
    uint8_t *ref = xmalloc(rb), *got = xmalloc(rb);
    memset(ref, 0xa5, rb);
    memset(got, 0x5a, rb);
    sp_quantize_act_row(SP_DTYPE_Q8_K, x, ref, n);
    sp__quantize_q8_k_avx2(x, got, n);
    assert_memory_equal(got, ref, rb);
    free(got);
    free(ref);
}

static void test_quantize_q8_k(void **state) {
    (void)state;
    if (!isas[0].present)
        skip();
    uint64_t rng = 77;
    const int64_t n = 5632;
    float *x = xmalloc((size_t)n * sizeof(float));
    for (int rep = 0; rep < 20; rep++) {
        random_floats(&rng, x, n);
        expect_same_q8_k(x, n);
    }

    // Ties of magnitude: the first of +a / -a sets the sign of the scale.
    for (int first_neg = 0; first_neg < 2; first_neg++) {
        for (int i = 0; i < SP_QK_K; i++)
            x[i] = 0.25f * sp_test_randf(&rng);
        x[200] = first_neg ? 3.0f : -3.0f;
        x[17] = first_neg ? -3.0f : 3.0f;
        x[90] = first_neg ? 3.0f : -3.0f;
        expect_same_q8_k(x, SP_QK_K);
    }
    // Exact halves: with max -127 the scale is 1, so k + 0.5 must round to even.
    for (int i = 0; i < SP_QK_K; i++)
        x[i] = (float)(i % 250) - 124.5f;
    x[0] = -127.0f;
    expect_same_q8_k(x, SP_QK_K);
    for (int i = 0; i < SP_QK_K; i++)
        x[i] = -x[i];
    expect_same_q8_k(x, SP_QK_K);
    // Zero blocks (including -0), a block with one nonzero value, subnormal and huge values.
    for (int i = 0; i < 3 * SP_QK_K; i++)
        x[i] = (i % 2) ? -0.0f : 0.0f;
    x[SP_QK_K + 255] = -1e-3f;
    for (int i = 2 * SP_QK_K; i < 3 * SP_QK_K; i++)
        x[i] = 1e-40f * (float)(i % 7 - 3) + 1e30f * (i == 2 * SP_QK_K + 5);
    expect_same_q8_k(x, 3 * SP_QK_K);
    expect_same_q8_k(x, 0);
    free(x);
}

int main(void) {
    find_isas();
    printf("avx2: %s, avx512: %s\n", isas[0].present ? "yes" : "absent",
           isas[1].present ? "yes" : "absent");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_vs_ref),
        cmocka_unit_test(test_invariance),
        cmocka_unit_test(test_isas_agree),
        cmocka_unit_test(test_quantize_q8_k),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#else // not x86-64: the kernels are not built

static void test_not_built(void **state) {
    (void)state;
    skip();
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_not_built)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
#endif

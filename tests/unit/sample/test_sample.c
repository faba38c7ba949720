#include "testutil.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "sample/sample.h"

/* Parameters with every truncation and penalty off; tests switch on what they exercise. */
static sp_sample_params plain(float temperature, uint64_t seed) {
    sp_sample_params p = sp_sample_params_default();
    p.temperature = temperature;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.seed = seed;
    return p;
}

static sp_sampler *make(const sp_sample_params *p, int32_t n_vocab) {
    sp_sampler *s = NULL;
    assert_int_equal(sp_sampler_create(p, n_vocab, &s), SP_OK);
    assert_non_null(s);
    return s;
}

static float *random_logits(int32_t n, uint64_t seed, float scale) {
    float *l = malloc((size_t)n * sizeof *l);
    assert_non_null(l);
    for (int32_t i = 0; i < n; i++)
        l[i] = scale * sp_test_randn(&seed);
    return l;
}

/* Reference argmax: first index of the largest value. */
static int32_t ref_argmax(const float *l, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (l[i] > l[best])
            best = i;
    return best;
}

/* Reference softmax(l / T) in double. */
static void ref_softmax(const float *l, int32_t n, double T, double *p) {
    double max = -INFINITY, z = 0;
    for (int32_t i = 0; i < n; i++)
        max = fmax(max, l[i]);
    for (int32_t i = 0; i < n; i++)
        z += p[i] = exp((l[i] - max) / T);
    for (int32_t i = 0; i < n; i++)
        p[i] /= z;
}

/* ---- greedy ---- */

static void test_greedy_is_argmax(void **state) {
    (void)state;
    const int32_t n = 5000;
    sp_sample_params p = plain(0.0f, 1);
    p.top_k = 40; // truncations cannot change the argmax; greedy must ignore them
    p.top_p = 0.5f;
    p.min_p = 0.2f;
    sp_sampler *s = make(&p, n);
    for (uint64_t seed = 1; seed <= 50; seed++) {
        float *l = random_logits(n, seed, 3.0f);
        const float before = l[17];
        assert_int_equal(sp_sampler_sample(s, l), ref_argmax(l, n));
        assert_true(l[17] == before); // logits are not modified
        free(l);
    }
    sp_sampler_destroy(s);
}

static void test_greedy_ties_lowest_id(void **state) {
    (void)state;
    float l[8] = {0, 1, 5, -2, 5, 5, 0, 5};
    sp_sample_params p = plain(0.0f, 1);
    sp_sampler *s = make(&p, 8);
    assert_int_equal(sp_sampler_sample(s, l), 2);
    l[2] = 4.999f;
    assert_int_equal(sp_sampler_sample(s, l), 4);
    // NaN counts as -inf, +inf beats everything finite.
    l[0] = NAN;
    l[6] = INFINITY;
    assert_int_equal(sp_sampler_sample(s, l), 6);
    // Every logit impossible: the lowest id.
    for (int i = 0; i < 8; i++)
        l[i] = -INFINITY;
    assert_int_equal(sp_sampler_sample(s, l), 0);
    sp_sampler_destroy(s);
}

/* top_k = 1 leaves only the argmax, whatever the temperature. */
static void test_top_k_one_is_greedy(void **state) {
    (void)state;
    const int32_t n = 3000;
    const float temps[] = {0.1f, 1.0f, 5.0f, 100.0f};
    for (size_t t = 0; t < SP_ARRAY_LEN(temps); t++) {
        sp_sample_params p = plain(temps[t], 7 + t);
        p.top_k = 1;
        sp_sampler *s = make(&p, n);
        for (uint64_t seed = 1; seed <= 20; seed++) {
            float *l = random_logits(n, seed * 31 + t, 0.5f); // flat: sampling would wander
            assert_int_equal(sp_sampler_sample(s, l), ref_argmax(l, n));
            free(l);
        }
        sp_sampler_destroy(s);
    }
}

/* ---- temperature sampling ---- */

/* Same seed: identical sequences from two samplers; another seed: a different sequence. */
static void test_seed_determinism(void **state) {
    (void)state;
    const int32_t n = 1000;
    float *l = random_logits(n, 5, 1.0f);
    sp_sample_params p = plain(1.0f, 42);
    sp_sampler *a = make(&p, n), *b = make(&p, n);
    p.seed = 43;
    sp_sampler *c = make(&p, n);
    int differ = 0;
    int32_t first[500];
    for (int i = 0; i < 500; i++) {
        int32_t x = sp_sampler_sample(a, l);
        first[i] = x;
        assert_int_equal(x, sp_sampler_sample(b, l));
        differ += x != sp_sampler_sample(c, l);
    }
    // With ~1000 plausible tokens, two independent streams agree rarely.
    assert_true(differ > 400);
    // reset() brings back the start of the sequence.
    sp_sampler_reset(a);
    for (int i = 0; i < 500; i++)
        assert_int_equal(sp_sampler_sample(a, l), first[i]);
    sp_sampler_destroy(a);
    sp_sampler_destroy(b);
    sp_sampler_destroy(c);
    free(l);
}

/* Pearson chi-square of counts against probabilities. */
static double chi_square(const int *counts, const double *p, int n, int draws) {
    double chi = 0;
    for (int i = 0; i < n; i++) {
        double e = p[i] * draws;
        chi += (counts[i] - e) * (counts[i] - e) / e;
    }
    return chi;
}

/* 100k draws at several temperatures match softmax(logits / T): chi-square with 7 degrees of
 * freedom below 29.88 (p = 1e-4). */
static void test_frequencies_match_softmax(void **state) {
    (void)state;
    const float l[8] = {1.0f, 2.0f, 0.5f, -1.0f, 1.5f, 0.0f, 2.2f, -0.3f};
    const float temps[] = {0.5f, 0.7f, 1.0f, 1.8f};
    const int draws = 100000;
    for (size_t t = 0; t < SP_ARRAY_LEN(temps); t++) {
        sp_sample_params p = plain(temps[t], 1000 + t);
        sp_sampler *s = make(&p, 8);
        int counts[8] = {0};
        for (int i = 0; i < draws; i++) {
            int32_t tok = sp_sampler_sample(s, l);
            assert_true(tok >= 0 && tok < 8);
            counts[tok]++;
        }
        double ref[8];
        ref_softmax(l, 8, temps[t], ref);
        double chi = chi_square(counts, ref, 8, draws);
        if (chi >= 29.88)
            fail_msg("T=%g chi-square %g", (double)temps[t], chi);

        // The distribution the sampler reports is the same softmax, in id order.
        int32_t ids[8];
        float probs[8];
        assert_int_equal(sp_sampler_distribution(s, l, 8, ids, probs), 8);
        for (int i = 0; i < 8; i++) {
            assert_int_equal(ids[i], i);
            assert_true(fabs(probs[i] - ref[i]) < 1e-6);
        }
        sp_sampler_destroy(s);
    }
}

/* A wrong sampler must fail the chi-square check: the same counts against the T=1 softmax when
 * sampling at T=0.5 exceed the bound by far. Guards the statistic itself. */
static void test_chi_square_detects_wrong_temperature(void **state) {
    (void)state;
    const float l[8] = {1.0f, 2.0f, 0.5f, -1.0f, 1.5f, 0.0f, 2.2f, -0.3f};
    sp_sample_params p = plain(0.5f, 3);
    sp_sampler *s = make(&p, 8);
    int counts[8] = {0};
    for (int i = 0; i < 100000; i++)
        counts[sp_sampler_sample(s, l)]++;
    double ref[8];
    ref_softmax(l, 8, 1.0, ref);
    assert_true(chi_square(counts, ref, 8, 100000) > 1000);
    sp_sampler_destroy(s);
}

/* Extreme temperatures: tiny T behaves like greedy, without overflow; -inf logits never win. */
static void test_temperature_extremes(void **state) {
    (void)state;
    float l[6] = {1.0f, 3.0f, -INFINITY, 2.9999f, NAN, -50.0f};
    sp_sample_params p = plain(1e-6f, 11);
    sp_sampler *s = make(&p, 6);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(sp_sampler_sample(s, l), 1);
    sp_sampler_destroy(s);

    p = plain(100.0f, 12);
    s = make(&p, 6);
    int seen[6] = {0};
    for (int i = 0; i < 20000; i++)
        seen[sp_sampler_sample(s, l)]++;
    assert_int_equal(seen[2], 0);
    assert_int_equal(seen[4], 0);
    for (int i = 0; i < 6; i++)
        if (i != 2 && i != 4)
            assert_true(seen[i] > 3000); // nearly uniform over the four finite logits
    sp_sampler_destroy(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_is_argmax),
        cmocka_unit_test(test_greedy_ties_lowest_id),
        cmocka_unit_test(test_top_k_one_is_greedy),
        cmocka_unit_test(test_seed_determinism),
        cmocka_unit_test(test_frequencies_match_softmax),
        cmocka_unit_test(test_chi_square_detects_wrong_temperature),
        cmocka_unit_test(test_temperature_extremes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

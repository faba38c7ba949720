#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "loadgen/stats.h"

/* |a - b| <= eps in double precision (cmocka's float assertion rounds to float). */
#define assert_double_equal(a, b, eps)                                                             \
    do {                                                                                           \
        double a_ = (a), b_ = (b);                                                                 \
        if (!(fabs(a_ - b_) <= (eps)))                                                             \
            fail_msg("%.17g != %.17g (eps %g)", a_, b_, (double)(eps));                            \
    } while (0)

/* numpy.percentile(a, q) with the default method="linear", written from its definition: the
 * virtual index (n - 1) q / 100 between the order statistics, interpolated linearly. Values
 * below come from numpy's documentation and from the definition worked by hand. */
static void test_percentile_numpy_examples(void **state) {
    (void)state;
    // np.percentile([[10, 7, 4], [3, 2, 1]], 50) == 3.5 (numpy's documentation).
    double a[] = {1, 2, 3, 4, 7, 10};
    assert_true(sp_lg_percentile_sorted(a, 6, 50) == 3.5);
    // np.percentile([15, 20, 35, 40, 50], 40) == 29.0: index 1.6 -> 20 + 0.6 * 15.
    double b[] = {15, 20, 35, 40, 50};
    assert_double_equal(sp_lg_percentile_sorted(b, 5, 40), 29.0, 1e-12);
    // np.percentile(range(1, 11), 99) == 9.91: index 8.91 -> 9 + 0.91.
    double c[10];
    for (int i = 0; i < 10; i++)
        c[i] = i + 1;
    assert_double_equal(sp_lg_percentile_sorted(c, 10, 99), 9.91, 1e-12);
    // np.percentile([1, 2, 3, 4], 99) == 3.97.
    assert_double_equal(sp_lg_percentile_sorted(c, 4, 99), 3.97, 1e-12);
    // The ends are the extremes exactly; one element is itself; empty is vLLM's 0.
    assert_true(sp_lg_percentile_sorted(b, 5, 0) == 15);
    assert_true(sp_lg_percentile_sorted(b, 5, 100) == 50);
    assert_true(sp_lg_percentile_sorted(b, 1, 99) == 15);
    assert_true(sp_lg_percentile_sorted(NULL, 0, 99) == 0.0);
    // Integer virtual indices hit order statistics exactly: (5 - 1) * 0.25 = 1.
    assert_true(sp_lg_percentile_sorted(b, 5, 25) == 20);
    assert_true(sp_lg_percentile_sorted(b, 5, 75) == 40);
}

/* numpy interpolates from the upper neighbour when the fraction is >= 0.5
 * (b - (b - a)(1 - t)); the two forms differ in the last bits for some inputs. */
static void test_percentile_lerp_form(void **state) {
    (void)state;
    double x[] = {0.1, 0.7};
    // q = 75: t = 0.75 -> 0.7 - 0.6 * 0.25 (numpy), not 0.1 + 0.6 * 0.75.
    double want = 0.7 - (0.7 - 0.1) * (1.0 - 0.75);
    assert_true(sp_lg_percentile_sorted(x, 2, 75) == want);
    // An input where the two forms differ: numpy's must be the one returned.
    double y[] = {0.5123168990641216, 0.9261943858840828};
    double np_form = y[1] - (y[1] - y[0]) * (1.0 - 0.99);
    double naive = y[0] + (y[1] - y[0]) * 0.99;
    assert_true(np_form != naive);
    assert_true(sp_lg_percentile_sorted(y, 2, 99) == np_form);
    // q = 25: t = 0.25 -> 0.1 + 0.6 * 0.25.
    double want2 = 0.1 + (0.7 - 0.1) * 0.25;
    assert_true(sp_lg_percentile_sorted(x, 2, 25) == want2);
    // Monotonic in q and within the data for random data.
    uint64_t s = 7;
    double v[257];
    for (int i = 0; i < 257; i++)
        v[i] = sp_test_randf(&s) * 1000;
    sp_lg_sort(v, 257);
    double prev = -INFINITY;
    for (int q = 0; q <= 1000; q++) {
        double p = sp_lg_percentile_sorted(v, 257, q / 10.0);
        assert_true(p >= prev && p >= v[0] && p <= v[256]);
        prev = p;
    }
    // Against long double arithmetic from the definition.
    for (int q = 0; q <= 100; q++) {
        long double vi = (long double)256 * q / 100;
        size_t lo = (size_t)floorl(vi);
        long double t = vi - lo;
        long double ref = lo >= 256 ? v[256] : v[lo] + (v[lo + 1] - (long double)v[lo]) * t;
        assert_double_equal(sp_lg_percentile_sorted(v, 257, q), (double)ref, 1e-9);
    }
}

static void test_median_mean_std(void **state) {
    (void)state;
    double odd[] = {1, 3, 9};
    double even[] = {1, 3, 9, 10};
    assert_true(sp_lg_median_sorted(odd, 3) == 3);
    assert_true(sp_lg_median_sorted(even, 4) == 6);
    assert_true(sp_lg_median_sorted(NULL, 0) == 0);
    // The classic example: mean 5, population standard deviation 2 (numpy's ddof = 0).
    double x[] = {2, 4, 4, 4, 5, 5, 7, 9};
    assert_double_equal(sp_lg_mean(x, 8), 5.0, 1e-15);
    assert_double_equal(sp_lg_std(x, 8), 2.0, 1e-15);
    assert_true(sp_lg_mean(NULL, 0) == 0 && sp_lg_std(NULL, 0) == 0);
    // Large offsets keep their precision (two-pass variance).
    double y[1000];
    for (int i = 0; i < 1000; i++)
        y[i] = 1e9 + (i % 2 ? 1 : -1);
    assert_double_equal(sp_lg_mean(y, 1000), 1e9, 1e-6);
    assert_double_equal(sp_lg_std(y, 1000), 1.0, 1e-9);

    sp_lg_summary sm;
    double p[] = {50, 99};
    double z[] = {5, 1, 4, 2, 3};
    assert_int_equal(sp_lg_summarize(z, 5, p, 2, &sm), SP_OK);
    assert_true(z[0] == 5); // input untouched
    assert_true(sm.median == 3 && sm.min == 1 && sm.max == 5 && sm.mean == 3);
    assert_true(sm.pct_val[0] == 3);
    assert_double_equal(sm.pct_val[1], 4.96, 1e-12);
    double bad[] = {101};
    assert_int_equal(sp_lg_summarize(z, 5, bad, 1, &sm), SP_ERR_INVALID);
    assert_int_equal(sp_lg_summarize(NULL, 0, p, 2, &sm), SP_OK);
    assert_true(sm.n == 0 && sm.mean == 0 && sm.pct_val[1] == 0);
}

static void test_goodput(void **state) {
    (void)state;
    sp_lg_slo slo = {-1, -1, -1};
    sp_diag d;
    assert_false(sp_lg_slo_any(&slo));
    assert_int_equal(sp_lg_slo_parse("ttft:200", &slo, &d), SP_OK);
    assert_int_equal(sp_lg_slo_parse("TPOT:20.5", &slo, &d), SP_OK);
    assert_true(sp_lg_slo_any(&slo) && slo.ttft_ms == 200 && slo.tpot_ms == 20.5);
    assert_true(slo.e2el_ms < 0);
    assert_int_equal(sp_lg_slo_parse("latency:3", &slo, &d), SP_ERR_INVALID);
    assert_int_equal(sp_lg_slo_parse("ttft", &slo, &d), SP_ERR_INVALID);
    assert_int_equal(sp_lg_slo_parse("ttft:-1", &slo, &d), SP_ERR_INVALID);
    assert_int_equal(sp_lg_slo_parse("ttft:1x", &slo, &d), SP_ERR_INVALID);
    // A request is good when every given SLO >= its value (equality counts, as in vLLM).
    assert_true(sp_lg_slo_met(&slo, 0.2, 0.0205, 100.0)); // e2el not given
    assert_false(sp_lg_slo_met(&slo, 0.2001, 0.01, 0));
    assert_false(sp_lg_slo_met(&slo, 0.1, 0.021, 0));
    sp_lg_slo e = {-1, -1, 1000};
    assert_true(sp_lg_slo_met(&e, 99, 99, 1.0));
    assert_false(sp_lg_slo_met(&e, 0, 0, 1.001));
}

static void test_rng_reproducible(void **state) {
    (void)state;
    sp_lg_rng a, b, c;
    sp_lg_rng_seed(&a, 42);
    sp_lg_rng_seed(&b, 42);
    sp_lg_rng_seed(&c, 43);
    int same_c = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = sp_lg_rng_next(&a);
        assert_true(x == sp_lg_rng_next(&b));
        same_c += x == sp_lg_rng_next(&c);
    }
    assert_true(same_c < 2);
    // Ranges stay inside and reach both ends.
    bool lo = false, hi = false;
    for (int i = 0; i < 10000; i++) {
        int64_t v = sp_lg_rng_range(&a, -3, 5);
        assert_true(v >= -3 && v <= 5);
        lo |= v == -3;
        hi |= v == 5;
        double u = sp_lg_rng_uniform(&a);
        assert_true(u >= 0 && u < 1);
    }
    assert_true(lo && hi);
}

/* Sample mean and variance of gamma variates agree with k theta and k theta^2 within five
 * standard errors (Var(s^2) ~ sigma^4 (2 + 6/k) / n for a gamma law). */
static void check_gamma(double shape, double rate, uint64_t seed) {
    const int n = 200000;
    double scale = 1.0 / (rate * shape);
    sp_lg_rng r;
    sp_lg_rng_seed(&r, seed);
    double *x = malloc(n * sizeof *x);
    assert_non_null(x);
    for (int i = 0; i < n; i++) {
        x[i] = sp_lg_rng_gamma(&r, shape, scale);
        assert_true(x[i] >= 0 && isfinite(x[i]));
    }
    double mean = sp_lg_mean(x, n), sd = sp_lg_std(x, n);
    double mu = 1.0 / rate, var = 1.0 / (shape * rate * rate);
    double se_mean = sqrt(var / n);
    double se_var = var * sqrt((2.0 + 6.0 / shape) / n);
    assert_true(fabs(mean - mu) < 5 * se_mean);
    assert_true(fabs(sd * sd - var) < 5 * se_var);
    free(x);
}

static void test_gamma_moments(void **state) {
    (void)state;
    check_gamma(1.0, 10.0, 1); // Poisson arrivals: exponential gaps
    check_gamma(0.5, 4.0, 2);  // bursty
    check_gamma(0.25, 100.0, 3);
    check_gamma(2.0, 10.0, 4); // smoother
    check_gamma(8.0, 0.5, 5);
}

/* For burstiness 1 the gaps are exponential: P(gap <= t) = 1 - exp(-rate t) at a few points,
 * within five binomial standard errors. */
static void test_exponential_cdf(void **state) {
    (void)state;
    sp_lg_rng r;
    sp_lg_rng_seed(&r, 99);
    const int n = 100000;
    double ts[] = {0.01, 0.05, 0.1, 0.3};
    int cnt[4] = {0};
    for (int i = 0; i < n; i++) {
        double g = sp_lg_rng_gamma(&r, 1.0, 0.1); // rate 10
        for (int k = 0; k < 4; k++)
            cnt[k] += g <= ts[k];
    }
    for (int k = 0; k < 4; k++) {
        double p = 1 - exp(-10 * ts[k]);
        double se = sqrt(p * (1 - p) / n);
        assert_true(fabs((double)cnt[k] / n - p) < 5 * se);
    }
    // sp_lg_rng_exponential has the asked mean.
    double s = 0;
    for (int i = 0; i < n; i++)
        s += sp_lg_rng_exponential(&r, 2.0);
    assert_true(fabs(s / n - 2.0) < 5 * 2.0 / sqrt(n));
}

static void test_arrivals(void **state) {
    (void)state;
    enum { N = 5000 };
    static double t[N], t2[N];
    sp_lg_rng r, r2;
    sp_lg_rng_seed(&r, 7);
    sp_lg_rng_seed(&r2, 7);
    assert_int_equal(sp_lg_arrivals(&r, N, 50.0, 0.5, t), SP_OK);
    assert_int_equal(sp_lg_arrivals(&r2, N, 50.0, 0.5, t2), SP_OK);
    assert_memory_equal(t, t2, sizeof t); // reproducible
    for (int i = 1; i < N; i++)
        assert_true(t[i] >= t[i - 1]);
    assert_true(t[0] >= 0);
    // Scaled like vLLM so the last arrival is exactly n / rate.
    assert_double_equal(t[N - 1], N / 50.0, 1e-9);
    // Bursty gaps: variance of the gaps near 1 / (B R^2) = 0.0008 (the scaling is ~1%).
    double gaps[N];
    gaps[0] = t[0];
    for (int i = 1; i < N; i++)
        gaps[i] = t[i] - t[i - 1];
    double sd = sp_lg_std(gaps, N);
    assert_true(fabs(sd * sd - 0.0008) < 0.0008 * 0.15);
    // Infinite rate: everything at once; infinite burstiness: evenly spaced.
    assert_int_equal(sp_lg_arrivals(&r, 10, INFINITY, 1.0, t), SP_OK);
    for (int i = 0; i < 10; i++)
        assert_true(t[i] == 0);
    assert_int_equal(sp_lg_arrivals(&r, 10, 5.0, INFINITY, t), SP_OK);
    for (int i = 0; i < 10; i++)
        assert_double_equal(t[i], (i + 1) / 5.0, 1e-12);
    assert_int_equal(sp_lg_arrivals(&r, 10, 0, 1.0, t), SP_ERR_INVALID);
    assert_int_equal(sp_lg_arrivals(&r, 10, 1.0, 0, t), SP_ERR_INVALID);
    assert_int_equal(sp_lg_arrivals(&r, 10, NAN, 1.0, t), SP_ERR_INVALID);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_percentile_numpy_examples),
        cmocka_unit_test(test_percentile_lerp_form),
        cmocka_unit_test(test_median_mean_std),
        cmocka_unit_test(test_goodput),
        cmocka_unit_test(test_rng_reproducible),
        cmocka_unit_test(test_gamma_moments),
        cmocka_unit_test(test_exponential_cdf),
        cmocka_unit_test(test_arrivals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

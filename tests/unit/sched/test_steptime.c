/* The step-time model: its fit of synthetic step logs (known coefficients, noise), its
 * robustness to outliers, its prior before any step, collinear features, how it follows a
 * machine whose speed changes, and a step log recorded from `spindle serve` replayed through
 * it. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched/steptime.h"

/* The "machine": a step's true time. */
static const double TRUE_COEF[SP_STEPTIME_NF] = {20000, 300, 380, 450, 0.05};

static double true_time(sp_step_shape s, double speed) {
    return (TRUE_COEF[0] + TRUE_COEF[1] * s.n_decode + TRUE_COEF[2] * s.n_prefill +
            TRUE_COEF[3] * s.n_out + TRUE_COEF[4] * (double)s.n_attn) /
           speed;
}

static uint64_t rng = 88172645463325252ull;
static double uniform(void) { // xorshift64, in [0, 1)
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

/* A step of the mixes the engine makes: d decodes at contexts around ctx, plus maybe a prefill
 * chunk. */
static sp_step_shape random_step(void) {
    const int32_t d = 1 + (int32_t)(uniform() * 32);
    const int64_t ctx = 32 + (int64_t)(uniform() * 900);
    sp_step_shape s = {.n_decode = d, .n_out = d, .n_attn = d * ctx};
    if (uniform() < 0.5) {
        const int32_t chunk = 16 + (int32_t)(uniform() * 240), pos = (int32_t)(uniform() * 500);
        s.n_prefill += chunk;
        s.n_out += uniform() < 0.3;
        s.n_attn += sp_steptime_chunk_attn(pos, chunk);
    }
    return s;
}

static double rel(double a, double b) {
    return fabs(a - b) / b;
}

/* The prior's prediction before anything is observed, and the prior's formula. */
static void test_prior(void **state) {
    (void)state;
    double prior[SP_STEPTIME_NF];
    // 1 GB of weights at 10 GB/s = 100 ms; 1e9 MACs per token at 1e5 MACs/us = 10 ms; ...
    sp_steptime_prior(1e9, 1e4, 1e9, 1e8, 1e5, 1e3, 1e4, prior);
    assert_float_equal(prior[0], 1e5, 1e-6);
    assert_float_equal(prior[1], 1e4, 1e-6);
    assert_float_equal(prior[2], 1e4, 1e-6);
    assert_float_equal(prior[3], 1e3, 1e-6);
    assert_float_equal(prior[4], 0.1, 1e-9);
    sp_steptime m;
    sp_steptime_init(&m, prior);
    const sp_step_shape s = {.n_decode = 6, .n_prefill = 2, .n_out = 8, .n_attn = 800};
    assert_float_equal(sp_steptime_predict(&m, s), 1e5 + 8e4 + 8e3 + 80, 1e-6);
    assert_float_equal(sp_steptime_median_error(&m), 0, 0);
    sp_steptime_observe(&m, s, 0);   // ignored
    sp_steptime_observe(&m, s, NAN); // ignored
    assert_int_equal(m.n_observed, 0);
}

/* Noisy synthetic steps (5% multiplicative noise) from a prior that is off by 3x: after a
 * window of steps, new steps are predicted within 10%, and the median error reported is that
 * of the noise. */
static void test_fits_synthetic_log(void **state) {
    (void)state;
    double prior[SP_STEPTIME_NF];
    for (int j = 0; j < SP_STEPTIME_NF; j++)
        prior[j] = TRUE_COEF[j] * (j % 2 ? 3.0 : 1.0 / 3.0);
    sp_steptime m;
    sp_steptime_init(&m, prior);
    for (int i = 0; i < 2 * SP_STEPTIME_WINDOW; i++) {
        const sp_step_shape s = random_step();
        sp_steptime_observe(&m, s, true_time(s, 1) * (1 + 0.1 * (uniform() - 0.5)));
    }
    double worst = 0;
    for (int i = 0; i < 200; i++) {
        const sp_step_shape s = random_step();
        worst = fmax(worst, rel(sp_steptime_predict(&m, s), true_time(s, 1)));
    }
    assert_true(worst < 0.10);
    assert_true(sp_steptime_median_error(&m) < 0.05);
}

/* One step in eight taking 2-6x as long (another process on the machine): the fit stays within
 * 10% of the true times. */
static void test_bounded_under_outliers(void **state) {
    (void)state;
    sp_steptime m;
    sp_steptime_init(&m, TRUE_COEF);
    for (int i = 0; i < 3 * SP_STEPTIME_WINDOW; i++) {
        const sp_step_shape s = random_step();
        double t = true_time(s, 1) * (1 + 0.04 * (uniform() - 0.5));
        if (i % 8 == 3)
            t *= 2 + 4 * uniform();
        sp_steptime_observe(&m, s, t);
    }
    for (int i = 0; i < 200; i++) {
        const sp_step_shape s = random_step();
        assert_true(rel(sp_steptime_predict(&m, s), true_time(s, 1)) < 0.10);
    }
    // A single enormous step moves nothing much.
    const sp_step_shape s = random_step();
    const double before = sp_steptime_predict(&m, s);
    sp_steptime_observe(&m, s, 1e9);
    assert_true(rel(sp_steptime_predict(&m, s), before) < 0.05);
}

/* Decode-only traffic at one batch size: n_out always equals n_decode, n_attn barely varies.
 * The features cannot be told apart, but the steps seen are predicted well and nothing is NaN
 * or negative. */
static void test_collinear_features(void **state) {
    (void)state;
    double prior[SP_STEPTIME_NF] = {1, 1, 1, 1, 1}; // a useless prior
    sp_steptime m;
    sp_steptime_init(&m, prior);
    for (int i = 0; i < SP_STEPTIME_WINDOW; i++) {
        const sp_step_shape s = {.n_decode = 16, .n_out = 16, .n_attn = 16 * (100 + i % 3)};
        sp_steptime_observe(&m, s, true_time(s, 1));
    }
    const sp_step_shape s = {.n_decode = 16, .n_out = 16, .n_attn = 16 * 101};
    assert_true(rel(sp_steptime_predict(&m, s), true_time(s, 1)) < 0.02);
    for (int j = 0; j < SP_STEPTIME_NF; j++)
        assert_true(isfinite(m.coef[j]) && m.coef[j] >= 0);
}

/* The machine becomes twice as slow (a noisy neighbour for minutes): within a window the model
 * predicts the new times. */
static void test_follows_speed_change(void **state) {
    (void)state;
    sp_steptime m;
    sp_steptime_init(&m, TRUE_COEF);
    for (int i = 0; i < SP_STEPTIME_WINDOW; i++) {
        const sp_step_shape s = random_step();
        sp_steptime_observe(&m, s, true_time(s, 1));
    }
    for (int i = 0; i < SP_STEPTIME_WINDOW; i++) {
        const sp_step_shape s = random_step();
        sp_steptime_observe(&m, s, true_time(s, 0.5));
    }
    for (int i = 0; i < 100; i++) {
        const sp_step_shape s = random_step();
        assert_true(rel(sp_steptime_predict(&m, s), true_time(s, 0.5)) < 0.05);
    }
}

static double num(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    assert_true(json_is_number(v));
    return json_number_value(v);
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* A step log of `spindle serve --step-log` (1.1B Q8_0, the amx table, 2 threads; the chat then
 * the long-prompt workload of bench/stallfree.sh: decode-only steps, where n_out is n_decode,
 * beside steps with prompt chunks), replayed from the prior the server started with: after 20
 * steps each step is predicted before it is observed, and the median error is within 5% (the
 * times repeat within ~2% for equal shapes). A fit that let n_out's coefficient go negative and
 * then clipped it at 0 was 18% off here, 33% on the chat part. */
static void test_replays_served_log(void **state) {
    (void)state;
    const char *src = getenv("SP_SOURCE_DIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/unit/sched/data/steps-1.1b-q8_0.jsonl", src ? src : ".");
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    sp_steptime m;
    char line[1024];
    double err[1024];
    int n = 0, n_err = 0;
    while (fgets(line, sizeof line, f)) {
        json_t *j = json_loads(line, 0, NULL);
        assert_non_null(j);
        if (n == 0) {
            double prior[SP_STEPTIME_NF];
            json_t *c = json_object_get(j, "coef");
            assert_int_equal(json_array_size(c), SP_STEPTIME_NF);
            for (int k = 0; k < SP_STEPTIME_NF; k++)
                prior[k] = json_number_value(json_array_get(c, (size_t)k));
            sp_steptime_init(&m, prior);
        }
        const sp_step_shape s = {.n_decode = (int32_t)num(j, "n_decode"),
                                 .n_prefill = (int32_t)num(j, "n_prefill"),
                                 .n_out = (int32_t)num(j, "n_out"),
                                 .n_attn = (int64_t)num(j, "n_attn")};
        const double measured = num(j, "measured_us");
        if (n >= 20 && n_err < 1024)
            err[n_err++] = rel(sp_steptime_predict(&m, s), measured);
        sp_steptime_observe(&m, s, measured);
        for (int k = 0; k < SP_STEPTIME_NF; k++)
            assert_true(isfinite(m.coef[k]) && m.coef[k] >= 0);
        json_decref(j);
        n++;
    }
    fclose(f);
    assert_true(n_err > 300);
    qsort(err, (size_t)n_err, sizeof *err, cmp_double);
    assert_true(err[n_err / 2] < 0.05);
    assert_true(sp_steptime_median_error(&m) < 0.05);
}

static void test_chunk_attn(void **state) {
    (void)state;
    assert_int_equal(sp_steptime_chunk_attn(0, 1), 1);
    assert_int_equal(sp_steptime_chunk_attn(0, 4), 1 + 2 + 3 + 4);
    assert_int_equal(sp_steptime_chunk_attn(10, 3), 11 + 12 + 13);
    assert_int_equal(sp_steptime_chunk_attn(99, 1), 100); // a decode token at position 99
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prior),
        cmocka_unit_test(test_fits_synthetic_log),
        cmocka_unit_test(test_bounded_under_outliers),
        cmocka_unit_test(test_collinear_features),
        cmocka_unit_test(test_follows_speed_change),
        cmocka_unit_test(test_replays_served_log),
        cmocka_unit_test(test_chunk_attn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

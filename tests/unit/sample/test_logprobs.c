#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sample/sample.h"

typedef struct entry {
    float l;
    int32_t id;
} entry;

static int by_value_then_id(const void *a, const void *b) {
    const entry *x = a, *y = b;
    if (x->l != y->l)
        return x->l > y->l ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Reference log-softmax in long double, the naive way (no max subtraction needed at this scale). */
static void ref_log_softmax(const float *l, int32_t n, long double *out) {
    long double z = 0;
    for (int32_t i = 0; i < n; i++)
        z += expl((long double)l[i]);
    for (int32_t i = 0; i < n; i++)
        out[i] = (long double)l[i] - logl(z);
}

/* Values, order and normalization against a full sort and a long-double reference. */
static void test_logprobs_reference(void **state) {
    (void)state;
    const int32_t sizes[] = {1, 3, 100, 32000};
    const int32_t tops[] = {0, 1, 5, 20};
    uint64_t rs = 9;
    for (size_t a = 0; a < sizeof sizes / sizeof sizes[0]; a++) {
        int32_t n = sizes[a];
        float *l = malloc((size_t)n * sizeof *l);
        long double *ref = malloc((size_t)n * sizeof *ref);
        entry *e = malloc((size_t)n * sizeof *e);
        assert_true(l && ref && e);
        for (int32_t i = 0; i < n; i++) {
            l[i] = 4.0f * sp_test_randn(&rs);
            e[i].l = l[i];
            e[i].id = i;
        }
        ref_log_softmax(l, n, ref);
        qsort(e, (size_t)n, sizeof *e, by_value_then_id);
        for (size_t b = 0; b < sizeof tops / sizeof tops[0]; b++) {
            int32_t top_ids[20];
            float top_lp[20];
            int32_t token = n / 2;
            float lp = 0;
            assert_int_equal(sp_sample_logprobs(l, n, token, tops[b], &lp, top_ids, top_lp),
                             SP_OK);
            assert_true(fabsl(lp - ref[token]) < 1e-5L);
            int32_t k = tops[b] < n ? tops[b] : n;
            for (int32_t i = 0; i < k; i++) {
                assert_int_equal(top_ids[i], e[i].id);
                assert_true(fabsl(top_lp[i] - ref[e[i].id]) < 1e-5L);
                assert_true(i == 0 || top_lp[i] <= top_lp[i - 1]);
            }
        }
        // The whole distribution: exp(logprob) sums to 1.
        int32_t *all_ids = malloc((size_t)n * sizeof *all_ids);
        float *all_lp = malloc((size_t)n * sizeof *all_lp);
        assert_true(all_ids && all_lp);
        assert_int_equal(sp_sample_logprobs(l, n, 0, n, NULL, all_ids, all_lp), SP_OK);
        double sum = 0;
        for (int32_t i = 0; i < n; i++) {
            assert_int_equal(all_ids[i], e[i].id);
            sum += exp((double)all_lp[i]);
        }
        assert_true(fabs(sum - 1.0) < 1e-5);
        free(all_ids);
        free(all_lp);
        free(l);
        free(ref);
        free(e);
    }
}

/* Ties: lower id first; -inf and NaN logits get -inf; huge logits do not overflow. */
static void test_logprobs_edges(void **state) {
    (void)state;
    const float l[6] = {1.0f, 2.0f, -INFINITY, 2.0f, NAN, 1.0f};
    int32_t ids[6];
    float lp[6];
    float one;
    assert_int_equal(sp_sample_logprobs(l, 6, 2, 6, &one, ids, lp), SP_OK);
    const int32_t order[6] = {1, 3, 0, 5, 2, 4};
    for (int i = 0; i < 6; i++)
        assert_int_equal(ids[i], order[i]);
    assert_true(isinf(one) && one < 0);
    assert_true(isinf(lp[4]) && isinf(lp[5]));
    // Two tokens at 2 and two at 1: log(e^2 / (2e^2 + 2e)).
    double expect = 2.0 - log(2 * exp(2.0) + 2 * exp(1.0));
    assert_true(fabs(lp[0] - expect) < 1e-6 && lp[1] == lp[0]);

    const float big[3] = {3e38f, 3e38f, -3e38f}; // the max is subtracted: no overflow
    assert_int_equal(sp_sample_logprobs(big, 3, 0, 3, &one, ids, lp), SP_OK);
    assert_true(fabsf(one - logf(0.5f)) < 1e-6f);
    assert_true(isfinite(lp[2]) || (isinf(lp[2]) && lp[2] < 0));
}

/* Invalid arguments fail and leave the outputs untouched. */
static void test_logprobs_errors(void **state) {
    (void)state;
    const float l[3] = {0.0f, 1.0f, 2.0f};
    const float dead[2] = {-INFINITY, NAN};
    int32_t ids[3] = {-7, -7, -7};
    float lp[3] = {7, 7, 7};
    float one = 7;
    assert_int_equal(sp_sample_logprobs(l, 0, 0, 1, &one, ids, lp), SP_ERR_INVALID);
    assert_int_equal(sp_sample_logprobs(l, 3, 3, 1, &one, ids, lp), SP_ERR_INVALID);
    assert_int_equal(sp_sample_logprobs(l, 3, -1, 1, &one, ids, lp), SP_ERR_INVALID);
    assert_int_equal(sp_sample_logprobs(l, 3, 0, -1, &one, ids, lp), SP_ERR_INVALID);
    assert_int_equal(sp_sample_logprobs(l, 3, 0, 2, &one, NULL, lp), SP_ERR_INVALID);
    assert_int_equal(sp_sample_logprobs(dead, 2, 0, 2, &one, ids, lp), SP_ERR_INVALID);
    assert_true(one == 7 && ids[0] == -7 && lp[0] == 7);
    // token is ignored when its logprob is not asked for.
    assert_int_equal(sp_sample_logprobs(l, 3, 99, 1, NULL, ids, lp), SP_OK);
    assert_int_equal(ids[0], 2);
    assert_int_equal(ids[1], -7);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logprobs_reference),
        cmocka_unit_test(test_logprobs_edges),
        cmocka_unit_test(test_logprobs_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

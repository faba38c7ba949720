#include "testutil.h"

#include "sample/rng.h"

/* xoshiro256** from the state {1, 2, 3, 4}: the reference sequence of Vigna's xoshiro256starstar.c
 * (as used by several independent ports' test suites). */
static void test_xoshiro_reference(void **state) {
    (void)state;
    static const uint64_t expect[10] = {
        11520u,
        0u,
        1509978240u,
        1215971899390074240u,
        1216172134540287360u,
        607988272756665600u,
        16172922978634559625u,
        8476171486693032832u,
        10595114339597558777u,
        2904607092377533576u,
    };
    sp_rng r = {{1, 2, 3, 4}};
    for (int i = 0; i < 10; i++)
        assert_true(sp_rng_next(&r) == expect[i]);
}

/* Seeding goes through splitmix64: seed 0 gives its first four outputs from state 0 (the
 * reference values of base/test_hash.c). */
static void test_seed_expansion(void **state) {
    (void)state;
    sp_rng r;
    sp_rng_seed(&r, 0);
    assert_true(r.s[0] == 0xe220a8397b1dcdafull);
    assert_true(r.s[3] == 0xf88bb8a8724c81ecull);
}

static void test_same_seed_same_sequence(void **state) {
    (void)state;
    sp_rng a, b, c;
    sp_rng_seed(&a, 1234);
    sp_rng_seed(&b, 1234);
    sp_rng_seed(&c, 1235);
    int differ = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = sp_rng_next(&a);
        assert_true(x == sp_rng_next(&b));
        differ += x != sp_rng_next(&c);
    }
    assert_true(differ > 990);
}

/* Uniform doubles lie in [0, 1) and their mean and variance match U(0, 1). */
static void test_uniform(void **state) {
    (void)state;
    sp_rng r;
    sp_rng_seed(&r, 99);
    const int n = 200000;
    double sum = 0, sum2 = 0;
    for (int i = 0; i < n; i++) {
        double u = sp_rng_uniform(&r);
        assert_true(u >= 0.0 && u < 1.0);
        sum += u;
        sum2 += u * u;
    }
    double mean = sum / n, var = sum2 / n - mean * mean;
    // Standard error of the mean is sqrt(1/12/n) ~ 0.00065; allow 6 of them.
    assert_true(mean > 0.5 - 0.004 && mean < 0.5 + 0.004);
    assert_true(var > 1.0 / 12 - 0.003 && var < 1.0 / 12 + 0.003);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xoshiro_reference),
        cmocka_unit_test(test_seed_expansion),
        cmocka_unit_test(test_same_seed_same_sequence),
        cmocka_unit_test(test_uniform),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

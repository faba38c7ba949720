/* N-gram drafts: lookup in one token source (prompt lookup, predicted outputs) and the index
 * shared across requests. */
#include "testutil.h"

#include "spec/lookup.h"

#define LEN(a) ((int32_t)(sizeof(a) / sizeof((a)[0])))

/* Prompt lookup: the longest suffix that occurred before, its latest occurrence. */
static void test_prompt_lookup(void **state) {
    (void)state;
    // ... 1 2 3 4 5 ... 9 1 2 3 7 8 ... 1 2 3  -> "1 2 3" last seen followed by 7 8
    const int32_t ctx[] = {1, 2, 3, 4, 5, 9, 1, 2, 3, 7, 8, 6, 1, 2, 3};
    int32_t out[8];
    assert_int_equal(sp_spec_lookup(ctx, LEN(ctx), ctx, LEN(ctx), 1, 3, 2, out), 2);
    assert_int_equal(out[0], 7);
    assert_int_equal(out[1], 8);
    // k larger than what follows: as many as there are (7 8 6 1 2 3).
    assert_int_equal(sp_spec_lookup(ctx, LEN(ctx), ctx, LEN(ctx), 1, 3, 8, out), 6);
    assert_int_equal(out[5], 3);
    // The longest suffix wins over a later, shorter match: "5 1" was followed by 4, the last
    // "1" alone by 0.
    const int32_t c2[] = {5, 1, 4, 1, 0, 5, 1};
    assert_int_equal(sp_spec_lookup(c2, LEN(c2), c2, LEN(c2), 1, 2, 1, out), 1);
    assert_int_equal(out[0], 4);
    assert_int_equal(sp_spec_lookup(c2, LEN(c2), c2, LEN(c2), 1, 1, 1, out), 1);
    assert_int_equal(out[0], 0);
    // No earlier occurrence of the last token: nothing.
    const int32_t c3[] = {1, 2, 3, 4};
    assert_int_equal(sp_spec_lookup(c3, LEN(c3), c3, LEN(c3), 1, 3, 4, out), 0);
    // k <= 0, bad lengths.
    assert_int_equal(sp_spec_lookup(ctx, LEN(ctx), ctx, LEN(ctx), 1, 3, 0, out), 0);
    assert_int_equal(sp_spec_lookup(ctx, LEN(ctx), ctx, LEN(ctx), 3, 2, 4, out), 0);
}

/* A predicted output: its start before the output has min_n tokens, then wherever the output
 * has got to, also after the output left the prediction for a while. */
static void test_prediction(void **state) {
    (void)state;
    const int32_t pred[] = {10, 11, 12, 13, 14, 15, 16, 17};
    int32_t out[8];
    assert_int_equal(sp_spec_lookup(pred, LEN(pred), NULL, 0, 2, 4, 3, out), 3);
    assert_int_equal(out[0], 10);
    assert_int_equal(out[2], 12);
    const int32_t o1[] = {10, 11, 12};
    assert_int_equal(sp_spec_lookup(pred, LEN(pred), o1, LEN(o1), 2, 4, 3, out), 3);
    assert_int_equal(out[0], 13);
    // The output wrote something else, then came back to the prediction at "14 15".
    const int32_t o2[] = {10, 11, 99, 98, 14, 15};
    assert_int_equal(sp_spec_lookup(pred, LEN(pred), o2, LEN(o2), 2, 4, 8, out), 2);
    assert_int_equal(out[0], 16);
    assert_int_equal(out[1], 17);
    // At the prediction's end nothing is left to propose.
    const int32_t o3[] = {16, 17};
    assert_int_equal(sp_spec_lookup(pred, LEN(pred), o3, LEN(o3), 2, 4, 8, out), 0);
}

/* The shared index: continuations found across texts, the latest one kept, a re-added shorter
 * copy of the same text not shortening it, and nothing for an n-gram never seen (even one that
 * lands in a used slot). */
static void test_index(void **state) {
    (void)state;
    sp_spec_index *x = NULL;
    assert_int_equal(sp_spec_index_create(0, 4, 10, &x), SP_ERR_INVALID);
    assert_int_equal(sp_spec_index_create(3, 17, 10, &x), SP_ERR_INVALID);
    assert_int_equal(sp_spec_index_create(3, 4, 30, &x), SP_ERR_INVALID);
    assert_null(x);
    assert_int_equal(sp_spec_index_create(3, 4, 4, &x), SP_OK); // 16 slots: collisions happen
    const int32_t a[] = {1, 2, 3, 4, 5, 6, 7, 8};
    sp_spec_index_add(x, 7, a, LEN(a));
    int32_t out[8];
    const int32_t q[] = {9, 9, 1, 2, 3};
    assert_int_equal(sp_spec_index_lookup(x, 7, q, LEN(q), 8, out), 4);
    assert_int_equal(out[0], 4);
    assert_int_equal(out[3], 7);
    assert_int_equal(sp_spec_index_lookup(x, 7, q, LEN(q), 2, out), 2);
    // The same text again, cut shorter: the longer continuation stays.
    sp_spec_index_add(x, 7, a, 5);
    assert_int_equal(sp_spec_index_lookup(x, 7, q, LEN(q), 8, out), 4);
    // Another text with "1 2 3" followed by something else: the latest wins.
    const int32_t b[] = {1, 2, 3, 40, 41};
    sp_spec_index_add(x, 7, b, LEN(b));
    assert_int_equal(sp_spec_index_lookup(x, 7, q, LEN(q), 8, out), 2);
    assert_int_equal(out[0], 40);
    assert_int_equal(out[1], 41);
    // Never-seen n-grams: nothing, whatever slot they hash to.
    for (int32_t t = 100; t < 300; t++) {
        const int32_t u[] = {t, t + 1, t + 2};
        assert_int_equal(sp_spec_index_lookup(x, 7, u, LEN(u), 4, out), 0);
    }
    // Another salt: nothing, though the text is there.
    assert_int_equal(sp_spec_index_lookup(x, 8, q, LEN(q), 8, out), 0);
    // Shorter than n: nothing.
    assert_int_equal(sp_spec_index_lookup(x, 7, q, 2, 4, out), 0);
    sp_spec_index_destroy(x);
    sp_spec_index_destroy(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prompt_lookup),
        cmocka_unit_test(test_prediction),
        cmocka_unit_test(test_index),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The decode loop must not allocate: sampling, accepting tokens, log-probabilities and stop
 * matching are checked with a counting malloc.
 *
 * The counting functions below replace glibc's malloc family for this executable and forward to
 * glibc's own allocator (__libc_malloc and friends), which glibc documents as a supported way to
 * replace malloc. AddressSanitizer interposes malloc itself, so under ASan the hooks are not
 * compiled and the tests skip. */
#include "testutil.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sample/sample.h"
#include "sample/stop.h"

#include "alloc_count.h"

/* The hook sees allocations made here and inside the library. */
static void test_hook_counts(void **state) {
    (void)state;
#if COUNT_ALLOCS
    void *(*volatile alloc)(size_t) = malloc; // through a pointer: the compiler cannot elide it
    long before = sp_test_n_allocs;
    void *p = alloc(32);
    assert_non_null(p);
    assert_int_equal(sp_test_n_allocs - before, 1);
    free(p);

    before = sp_test_n_allocs;
    sp_sample_params sp = sp_sample_params_default();
    sp_sampler *s = NULL;
    assert_int_equal(sp_sampler_create(&sp, 1000, &s), SP_OK);
    assert_true(sp_test_n_allocs - before >= 3);
    sp_sampler_destroy(s);
#else
    skip();
#endif
}

static void run_decode_loop(const sp_sample_params *p, int32_t n_vocab) {
    sp_sampler *s = NULL;
    assert_int_equal(sp_sampler_create(p, n_vocab, &s), SP_OK);
    float *logits = malloc((size_t)n_vocab * sizeof *logits);
    float *copy = malloc((size_t)n_vocab * sizeof *copy);
    int32_t *ids = malloc((size_t)n_vocab * sizeof *ids);
    float *probs = malloc((size_t)n_vocab * sizeof *probs);
    assert_true(logits && copy && ids && probs);
    uint64_t rs = 5;
    for (int32_t i = 0; i < n_vocab; i++)
        logits[i] = 0.3f * sp_test_randn(&rs);
    static const char *const stops[] = {"</s>", "\n\nUser:", "aab"};
    sp_stop *stop = NULL;
    assert_int_equal(sp_stop_create(stops, 3, &stop, NULL), SP_OK);

#if COUNT_ALLOCS
    long before = sp_test_n_allocs;
#endif
    for (int32_t t = 0; t < 100; t++) // a prompt
        sp_sampler_accept(s, (t * 7919) % n_vocab);
    for (int step = 0; step < 30; step++) {
        int32_t tok = sp_sampler_sample(s, logits);
        assert_true(tok >= 0 && tok < n_vocab);
        sp_sampler_accept(s, tok);
        logits[tok] += 0.5f; // the next step's logits differ
        memcpy(copy, logits, (size_t)n_vocab * sizeof *copy);
        sp_sampler_apply_penalties(s, copy);
        assert_true(sp_sampler_distribution(s, logits, n_vocab, ids, probs) >= 1);
        float lp;
        int32_t top_ids[20];
        float top_lp[20];
        assert_int_equal(sp_sample_logprobs(logits, n_vocab, tok, 20, &lp, top_ids, top_lp),
                         SP_OK);
        sp_stop_status st;
        sp_stop_feed(stop, "a piece of text a", 17, &st);
        assert_int_equal(st.stop, -1);
    }
    sp_sampler_reset(s);
    sp_stop_reset(stop);
#if COUNT_ALLOCS
    assert_int_equal(sp_test_n_allocs - before, 0);
#endif
    sp_stop_destroy(stop);
    sp_sampler_destroy(s);
    free(logits);
    free(copy);
    free(ids);
    free(probs);
}

static void test_no_alloc_in_decode_loop(void **state) {
    (void)state; // under ASan the loop still runs, for its memory checks, without counting
    const int32_t n_vocab = 152064; // Qwen2's vocabulary
    sp_sample_params p = sp_sample_params_default();
    p.repeat_penalty = 1.1f;
    p.frequency_penalty = 0.3f;
    p.presence_penalty = 0.2f;
    run_decode_loop(&p, n_vocab); // top_k 40, top_p, min_p
    p.top_k = 0;                  // top_p alone: the incremental selection
    run_decode_loop(&p, n_vocab);
    p.top_p = 1.0f; // min_p alone: the unsorted path
    p.repeat_last_n = -1;
    run_decode_loop(&p, n_vocab);
    p.temperature = 0.0f; // greedy
    run_decode_loop(&p, n_vocab);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hook_counts),
        cmocka_unit_test(test_no_alloc_in_decode_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

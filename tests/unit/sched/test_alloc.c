/* The engine's step loop does not allocate: submission allocates everything a request needs,
 * so admitting, prefilling, decoding, preempting and finishing requests run on preallocated
 * memory; so does sampling under a grammar (the matcher's room is made with the request, the
 * token trie and the mask cache at the first constrained submission). Checked with a counting malloc that forwards to glibc's allocator (not compiled under
 * AddressSanitizer, which interposes malloc itself; the test then skips). */
#include "testutil.h"

#include <stdio.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/grammar.h"
#include "model/model.h"
#include "sched/engine.h"
#include "tok/tok.h"

#include "alloc_count.h"

/* Runs 10 requests (under grammar g where not NULL) through an engine short of memory, counting
 * the allocations of its steps. */
static void run_counting(sp_grammar *g) {
#if !COUNT_ALLOCS
    (void)g;
    skip();
#else
    char *path = sp_test_shared("models/stories260K.gguf");
    sp_model *m;
    sp_vocab *v;
    sp_diag d;
    assert_int_equal(sp_model_load(path, &m, &d), SP_OK);
    assert_int_equal(sp_vocab_load(m->gguf, &v, &d), SP_OK);
    sp_engine_opts o = sp_engine_opts_default();
    o.kv_tokens = 12 * 16; // small: forces preemption (with a policy that admits eagerly)
    snprintf(o.admission, sizeof o.admission, "aggressive");
    o.max_batch_tokens = 48;
    o.n_threads = 1;
    sp_engine *e;
    assert_int_equal(sp_engine_create(m, v, &o, &e, &d), SP_OK);
    sp_request *reqs[10];
    uint64_t rs = 3;
    const char *stops[] = {"zzz", "Lily"};
    for (int i = 0; i < 10; i++) {
        int32_t prompt[40];
        prompt[0] = 1;
        for (int k = 1; k < 40; k++)
            prompt[k] = 3 + (int32_t)(sp_test_rand(&rs) % 500);
        sp_req_params p = sp_req_params_default();
        p.max_tokens = 30 + i;
        p.sample.temperature = 0.8f;
        p.sample.seed = (uint64_t)i;
        p.n_logprobs = 3;
        p.stop = stops;
        p.n_stop = 2;
        p.grammar = g;
        assert_int_equal(sp_request_create(v, prompt, 10 + 3 * i, &p, &reqs[i], &d), SP_OK);
        assert_int_equal(sp_engine_submit(e, reqs[i], &d), SP_OK);
    }
    long before = sp_test_n_allocs;
    assert_true(before > 0); // the counting malloc is in use
    int steps = 0;
    while (sp_engine_busy(e)) {
        sp_engine_step(e);
        steps++;
        if (steps == 7)
            sp_request_cancel(reqs[9]);
    }
    long during = sp_test_n_allocs - before;
    sp_engine_stats st;
    sp_engine_stats_get(e, &st);
    print_message("%d steps, %llu preemptions, %llu masks, %ld allocations\n", steps,
                  (unsigned long long)st.preemptions, (unsigned long long)st.grammar_masks,
                  during);
    assert_true(st.preemptions > 0);
    assert_true(!g || st.grammar_masks > 10);
    assert_int_equal(during, 0);
    for (sp_request *r = sp_engine_take_ready(e); r;) {
        sp_request *next = sp_request_next_ready(r);
        sp_request_release(r);
        r = next;
    }
    for (int i = 0; i < 10; i++)
        sp_request_release(reqs[i]);
    sp_engine_destroy(e);
    sp_vocab_destroy(v);
    sp_model_destroy(m);
    free(path);
#endif
}

static void test_step_loop_allocates_nothing(void **state) {
    (void)state;
    run_counting(NULL);
}

/* Under the JSON object grammar, whatever the model prefers most of its tokens are masked. */
static void test_constrained_steps_allocate_nothing(void **state) {
    (void)state;
#if !COUNT_ALLOCS
    skip(); // (before the grammar is made: skip() does not return)
#else
    sp_grammar *g;
    sp_diag d;
    assert_int_equal(sp_grammar_json_object(&g, &d), SP_OK);
    run_counting(g);
    sp_grammar_release(g);
#endif
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_step_loop_allocates_nothing),
                                       cmocka_unit_test(test_constrained_steps_allocate_nothing)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

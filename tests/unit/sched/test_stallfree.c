/* Stall-free steps: decodes get their token in every step while long prompts are prefilled next
 * to them in chunks sized by the step-time model within the step's time budget; a long prompt is
 * not starved by a stream of short ones; outputs stay bitwise those of whole-prompt steps; and
 * --prefer throughput (no time budget) computes a prompt in whole chunks again. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/hash.h"
#include "base/util.h"
#include "model/model.h"
#include "sched/engine.h"
#include "tok/tok.h"

enum { MAX_REQ = 64, MAX_STEPS = 20000, MIN_PREFILL = 32 };

static sp_model *model;
static sp_vocab *vocab;

typedef struct trace {
    sp_request *reqs[MAX_REQ];
    int n;
    int64_t step;                // steps run so far
    int64_t last_token[MAX_REQ]; // the step each request last sampled at (0: not yet)
    int64_t gaps;                // a decoding request skipping a step
    int64_t n_tokens;            // sampled tokens
    uint64_t hash[MAX_REQ];      // logits rows of each request
    int32_t n_tok[MAX_REQ];      // tokens sampled by each request
    int64_t prefill_steps;       // steps with prefill beyond the floor, within the budget check
    int64_t over_budget;         // such steps predicted over their budget
    int32_t max_prefill;         // the most prefill tokens in one step
} trace;

static int find(trace *t, sp_request *r) {
    for (int i = 0; i < t->n; i++)
        if (t->reqs[i] == r)
            return i;
    fail_msg("unknown request");
    return -1;
}

static void on_logits(void *ctx, sp_request *r, const float *logits, int32_t n) {
    trace *t = ctx;
    const int i = find(t, r);
    if (t->last_token[i] && t->last_token[i] != t->step - 1)
        t->gaps++;
    t->last_token[i] = t->step;
    t->n_tokens++;
    t->n_tok[i]++;
    t->hash[i] = sp_fnv1a64_add(t->hash[i] ? t->hash[i] : SP_FNV1A64_BASIS, logits,
                                (size_t)n * sizeof(float));
}

static void on_step(void *ctx, const sp_engine_step_info *info) {
    trace *t = ctx;
    const int32_t prefill = info->n_tokens - info->n_decode;
    t->max_prefill = SP_MAX(t->max_prefill, prefill);
    if (info->budget_us > 0 && prefill > MIN_PREFILL) {
        t->prefill_steps++;
        t->over_budget += info->predicted_us > info->budget_us;
    }
}

static int setup(void **state) {
    (void)state;
    char *path = sp_test_shared("models/stories260K.gguf");
    sp_diag d;
    assert_int_equal(sp_model_load(path, &model, &d), SP_OK);
    assert_int_equal(sp_vocab_load(model->gguf, &vocab, &d), SP_OK);
    free(path);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    sp_vocab_destroy(vocab);
    sp_model_destroy(model);
    return 0;
}

static sp_request *submit_prio(sp_engine *e, trace *t, int32_t n_prompt, int32_t max_tokens,
                               uint64_t seed, int32_t priority) {
    int32_t prompt[512];
    for (int32_t i = 0; i < n_prompt; i++)
        prompt[i] = 1 + (int32_t)((seed * 7919 + (uint64_t)i * 104729) % 500);
    sp_req_params p = sp_req_params_default();
    p.max_tokens = max_tokens;
    p.ignore_eos = true;
    p.priority = priority;
    sp_request *r;
    sp_diag d;
    assert_int_equal(sp_request_create(vocab, prompt, n_prompt, &p, &r, &d), SP_OK);
    assert_int_equal(sp_engine_submit(e, r, &d), SP_OK);
    assert_true(t->n < MAX_REQ);
    t->reqs[t->n++] = r;
    return r;
}

static sp_request *submit(sp_engine *e, trace *t, int32_t n_prompt, int32_t max_tokens,
                          uint64_t seed) {
    return submit_prio(e, t, n_prompt, max_tokens, seed, 0);
}

static sp_engine *engine(trace *t, int32_t max_step_ms, bool throughput) {
    sp_engine_opts o = sp_engine_opts_default();
    o.n_threads = 1;
    o.max_step_ms = max_step_ms;
    o.prefer_throughput = throughput;
    o.on_logits = on_logits;
    o.on_step = on_step;
    o.hook_ctx = t;
    sp_engine *e;
    sp_diag d;
    assert_int_equal(sp_engine_create(model, vocab, &o, &e, &d), SP_OK);
    return e;
}

static void step(sp_engine *e, trace *t) {
    t->step++;
    sp_engine_step(e);
    assert_true(t->step < MAX_STEPS);
}

static void finish(sp_engine *e, trace *t) {
    while (sp_engine_busy(e))
        step(e, t);
    for (sp_request *r = sp_engine_take_ready(e); r;) {
        sp_request *next = sp_request_next_ready(r);
        sp_request_release(r);
        r = next;
    }
    sp_engine_stats st;
    sp_engine_stats_get(e, &st);
    assert_int_equal(st.n_blocks_used, 0);
    for (int i = 0; i < t->n; i++)
        sp_request_release(t->reqs[i]);
    sp_engine_destroy(e);
}

/* Eight streams decode; then three 400-token prompts arrive. With the default budget, and with
 * a fixed one of 20 ms, every stream gets a token in every step and every step with more prefill
 * than the floor was predicted within its budget; the default one splits the prompts. With
 * the budget off, a prompt goes in one chunk of the token budget. The logits are bitwise the same
 * in all three. */
static void test_decodes_never_wait(void **state) {
    (void)state;
    static const int32_t budgets[3] = {0, 20, -1};
    trace *t[3];
    for (int run = 0; run < 3; run++) {
        t[run] = calloc(1, sizeof *t[run]);
        sp_engine *e = engine(t[run], budgets[run], false);
        for (int i = 0; i < 8; i++)
            submit(e, t[run], 8, 120, (uint64_t)i);
        for (int i = 0; i < 20; i++) // the streams are decoding, the model has seen steps
            step(e, t[run]);
        for (int i = 0; i < 3; i++)
            submit(e, t[run], 400, 4, 100 + (uint64_t)i);
        finish(e, t[run]);
        print_message("--max-step-ms %d: %lld steps, prefill at most %d tokens a step, %lld of "
                      "%lld steps over budget\n",
                      budgets[run], (long long)t[run]->step, t[run]->max_prefill,
                      (long long)t[run]->over_budget, (long long)t[run]->prefill_steps);
    }
    for (int run = 0; run < 2; run++) {
        assert_int_equal(t[run]->gaps, 0);
        assert_int_equal(t[run]->over_budget, 0);
    }
    assert_true(t[0]->max_prefill < 400); // split across steps (a 20 ms budget may hold 400
                                          // tokens of this model on a fast machine)
    assert_true(t[1]->prefill_steps > 0); // the 20 ms budget took more than the floor
    assert_true(t[2]->max_prefill >= 400); // whole prompts: streams waited on them
    for (int run = 0; run < 2; run++) {
        assert_int_equal(t[run]->n_tokens, t[2]->n_tokens);
        for (int i = 0; i < t[2]->n; i++)
            assert_true(t[run]->hash[i] == t[2]->hash[i]);
    }
    for (int run = 0; run < 3; run++)
        free(t[run]);
}

/* A fixed budget far below a prompt's time: prefill proceeds at the floor, never stops. */
static void test_floor_progress(void **state) {
    (void)state;
    trace *t = calloc(1, sizeof *t);
    sp_engine *e = engine(t, 1, false);
    for (int i = 0; i < 4; i++)
        submit(e, t, 8, 60, (uint64_t)i);
    for (int i = 0; i < 5; i++)
        step(e, t);
    sp_request *big = submit(e, t, 300, 1, 7);
    finish(e, t);
    (void)big;
    assert_int_equal(t->gaps, 0);
    assert_true(t->max_prefill >= MIN_PREFILL);
    free(t);
}

/* A long prompt behind a stream of short ones that alone would fill every step (a token budget
 * of 40, four 10-token prompts arriving each step): the short ones go first, and the long one
 * still progresses in every step (it counts in the admission bound, and it ages). */
static void test_long_prompt_not_starved(void **state) {
    (void)state;
    trace *t = calloc(1, sizeof *t);
    sp_engine_opts o = sp_engine_opts_default();
    o.n_threads = 1;
    o.max_batch_tokens = 40;
    o.on_logits = on_logits;
    o.hook_ctx = t;
    sp_engine *e;
    sp_diag d;
    assert_int_equal(sp_engine_create(model, vocab, &o, &e, &d), SP_OK);
    sp_request *big = submit(e, t, 200, 1, 1);
    sp_request *extra[4096];
    int n_extra = 0;
    const int64_t t0 = sp_time_us();
    int64_t short_first = 0;
    while (!t->last_token[0]) {
        for (int i = 0; i < 4 && t->n < MAX_REQ; i++)
            submit(e, t, 10, 1, 1000 + (uint64_t)t->step * 4 + (uint64_t)i);
        step(e, t);
        short_first += t->n_tokens > 0 && !t->last_token[0];
        // Finished short requests make room for new ones in the trace.
        for (int i = 1; i < t->n; i++) {
            sp_req_stats st;
            sp_request_stats(t->reqs[i], &st);
            if (st.n_generated > 0 && n_extra < 4096) {
                extra[n_extra++] = t->reqs[i];
                t->reqs[i] = t->reqs[--t->n];
                t->last_token[i] = t->last_token[t->n];
                i--;
            }
        }
        assert_true(sp_time_us() - t0 < 60 * 1000000LL);
    }
    print_message("the 200-token prompt finished after %lld steps (%.2f s), %lld with short "
                  "prompts served first\n",
                  (long long)t->step, (double)(sp_time_us() - t0) * 1e-6, (long long)short_first);
    assert_true(short_first > 0); // short prompts did go first
    assert_true(t->step <= 200);  // and the long one got tokens in every step
    (void)big;
    finish(e, t);
    for (int i = 0; i < n_extra; i++)
        sp_request_release(extra[i]);
    free(t);
}

/* Offline work yields to online requests: twelve offline streams decode; an online 300-token
 * prompt arrives. No offline stream gets a token from the step the prompt arrives in to the
 * step that gives its first token (alone, they decode every step); while the online request
 * decodes, each offline stream still moves within a round of turns; and their logits are
 * bitwise those of a run without the online request. */
static void run_offline(trace *t, bool with_online, int64_t *s0, int64_t *s1, int64_t *worst) {
    sp_engine *e = engine(t, 0, false);
    enum { N = 12, GEN = 90 };
    for (int i = 0; i < N; i++)
        submit_prio(e, t, 40, GEN, (uint64_t)i + 1, SP_PRIORITY_OFFLINE);
    for (int k = 0; k < 20; k++)
        step(e, t);
    if (with_online) {
        submit(e, t, 300, 30, 99);
        *s0 = t->step + 1;
    }
    int64_t last[N];
    for (int i = 0; i < N; i++)
        last[i] = t->step;
    *worst = 0;
    while (sp_engine_busy(e)) {
        step(e, t);
        const bool online_prompt = with_online && !*s1;
        if (online_prompt && t->n_tok[N])
            *s1 = t->step;
        for (int i = 0; i < N; i++) {
            if (online_prompt && t->last_token[i] == t->step)
                fail_msg("offline request %d got a token in step %lld, during the online "
                         "prompt",
                         i, (long long)t->step);
            if (t->last_token[i] == t->step || t->n_tok[i] == GEN)
                last[i] = t->step;
            // While the online request decodes: the longest an offline stream waited.
            if (with_online && *s1 && t->n_tok[N] < 30)
                *worst = SP_MAX(*worst, t->step - last[i]);
        }
    }
    finish(e, t);
}

static void test_offline_yields(void **state) {
    (void)state;
    trace alone = {0}, mixed = {0};
    int64_t s0 = 0, s1 = 0, worst = 0, unused = 0;
    run_offline(&alone, false, &unused, &unused, &unused);
    run_offline(&mixed, true, &s0, &s1, &worst);
    print_message("online prompt from step %lld, first token at %lld; offline gaps %lld, "
                  "longest wait %lld steps\n",
                  (long long)s0, (long long)s1, (long long)mixed.gaps, (long long)worst);
    assert_true(s1 >= s0);
    for (int i = 0; i < 12; i++)
        assert_int_equal(mixed.hash[i], alone.hash[i]);
    assert_true(mixed.gaps >= 12); // each waited out the online prompt
    assert_true(alone.gaps == 0);  // (alone they decode every step)
    assert_true(worst <= 12);      // and each moved within a round of turns
}

/* Offline requests still computing their prompts under a pool whose admission keeps requests
 * waiting, and an online request that arrives among them: everything finishes, within
 * MAX_STEPS (offline work yields to the online request without stopping for good). This run
 * does not reproduce the stall seen in bench/batch.py (an online request that admission could
 * not take, offline work stopped for it), which the engine now avoids by letting offline work
 * go on once a step has failed to admit the online request. */
static void test_offline_frees_memory_for_online(void **state) {
    (void)state;
    trace t = {0};
    sp_engine_opts o = sp_engine_opts_default();
    o.n_threads = 1;
    o.kv_tokens = 64 * 16; // the admission policy's predicted peaks keep requests waiting
    o.max_batch_tokens = 32; // prompts take several steps
    o.on_logits = on_logits;
    o.hook_ctx = &t;
    sp_engine *e;
    sp_diag d;
    assert_int_equal(sp_engine_create(model, vocab, &o, &e, &d), SP_OK);
    enum { N = 4, GEN = 100 };
    for (int i = 0; i < N; i++)
        submit_prio(e, &t, 300, GEN, (uint64_t)i + 1, SP_PRIORITY_OFFLINE);
    for (int k = 0; k < 2; k++)
        step(e, &t);
    submit(e, &t, 60, 200, 99);
    finish(e, &t); // (steps at most MAX_STEPS)
    for (int i = 0; i < N; i++)
        assert_int_equal(t.n_tok[i], GEN);
    assert_int_equal(t.n_tok[N], 200);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decodes_never_wait),
        cmocka_unit_test(test_floor_progress),
        cmocka_unit_test(test_long_prompt_not_starved),
        cmocka_unit_test(test_offline_yields),
        cmocka_unit_test(test_offline_frees_memory_for_online),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

/* The continuous-batching engine: bitwise batch invariance of golden prompts (alone, among 31
 * other requests, with prefill chunks of 1, 7 and 512 tokens), preemption under a small KV pool,
 * cancellation at random steps, seeded sampling, and no allocation in the step loop. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/hash.h"
#include "model/model.h"
#include "sched/engine.h"
#include "tok/tok.h"

#define MAX_REQ 48
#define MAX_GEN 128

typedef struct spec {
    int32_t prompt[256];
    int32_t n_prompt;
    int32_t max_tokens;
    float temperature;
    uint64_t seed;
    int cancel_at_step; // -1: never; 0: before the first step
    bool ignore_eos;
} spec;

typedef struct result {
    int32_t tokens[MAX_GEN];
    int32_t n_tokens;
    uint64_t logits_hash; // FNV-1a over every logits row the request was sampled from
    sp_finish finish;
    char text[4096];
    int32_t gen_at_preempt[64];
    int32_t n_preempt;
} result;

typedef struct run {
    sp_request *reqs[MAX_REQ];
    result res[MAX_REQ];
    int n;
    int64_t steps;
} run;

static sp_model *model;
static sp_vocab *vocab;

static int find(run *rn, sp_request *r) {
    for (int i = 0; i < rn->n; i++)
        if (rn->reqs[i] == r)
            return i;
    fail_msg("unknown request");
    return -1;
}

static void on_logits(void *ctx, sp_request *r, const float *logits, int32_t n) {
    run *rn = ctx;
    result *res = &rn->res[find(rn, r)];
    res->logits_hash = sp_fnv1a64_add(res->logits_hash ? res->logits_hash : SP_FNV1A64_BASIS,
                                      logits, (size_t)n * sizeof(float));
}

static void on_preempt(void *ctx, sp_request *r) {
    run *rn = ctx;
    result *res = &rn->res[find(rn, r)];
    sp_req_stats st;
    sp_request_stats(r, &st);
    assert_true(res->n_preempt < 64);
    res->gen_at_preempt[res->n_preempt++] = st.n_generated;
}

static void load_model(const char *file) {
    char rel[128];
    snprintf(rel, sizeof rel, "models/%s", file);
    char *path = sp_test_shared(rel);
    sp_diag d;
    assert_int_equal(sp_model_load(path, &model, &d), SP_OK);
    assert_int_equal(sp_vocab_load(model->gguf, &vocab, &d), SP_OK);
    free(path);
}

static void unload_model(void) {
    sp_vocab_destroy(vocab);
    sp_model_destroy(model);
}

/* Runs specs through an engine stepped on this thread; returns the engine's final stats. */
static void run_specs(run *rn, const spec *specs, int n, sp_engine_opts o, sp_engine_stats *st) {
    memset(rn, 0, sizeof *rn);
    rn->n = n;
    o.on_logits = on_logits;
    o.on_preempt = on_preempt;
    o.hook_ctx = rn;
    if (!o.n_threads)
        o.n_threads = 1; // one thread unless a test asks: tests may share the machine
    sp_engine *e;
    sp_diag d;
    assert_int_equal(sp_engine_create(model, vocab, &o, &e, &d), SP_OK);
    for (int i = 0; i < n; i++) {
        sp_req_params p = sp_req_params_default();
        p.max_tokens = specs[i].max_tokens;
        p.sample.temperature = specs[i].temperature;
        p.sample.seed = specs[i].seed;
        p.ignore_eos = specs[i].ignore_eos;
        assert_int_equal(
            sp_request_create(vocab, specs[i].prompt, specs[i].n_prompt, &p, &rn->reqs[i], &d),
            SP_OK);
        assert_int_equal(sp_engine_submit(e, rn->reqs[i], &d), SP_OK);
        if (specs[i].cancel_at_step == 0)
            sp_request_cancel(rn->reqs[i]);
    }
    while (sp_engine_busy(e)) {
        rn->steps++;
        for (int i = 0; i < n; i++)
            if (specs[i].cancel_at_step == rn->steps)
                sp_request_cancel(rn->reqs[i]);
        sp_engine_step(e);
        assert_true(rn->steps < 100000);
    }
    for (sp_request *r = sp_engine_take_ready(e); r;) {
        sp_request *next = sp_request_next_ready(r);
        sp_request_release(r);
        r = next;
    }
    sp_engine_stats_get(e, st);
    for (int i = 0; i < n; i++) {
        result *res = &rn->res[i];
        sp_req_cursor cur = {0};
        sp_req_token toks[MAX_GEN];
        char *text = NULL;
        size_t len = 0, cap = 0;
        sp_req_read rd;
        assert_int_equal(sp_request_read(rn->reqs[i], &cur, toks, MAX_GEN, NULL, NULL, &text,
                                         &len, &cap, &rd),
                         SP_OK);
        res->n_tokens = rd.n_new_tokens;
        for (int k = 0; k < rd.n_new_tokens; k++)
            res->tokens[k] = toks[k].id;
        res->finish = rd.finish;
        assert_int_not_equal(rd.finish, SP_FINISH_NONE);
        snprintf(res->text, sizeof res->text, "%s", text ? text : "");
        free(text);
        sp_request_release(rn->reqs[i]);
    }
    sp_engine_destroy(e);
}

static void random_spec(spec *s, uint64_t *rs, int max_prompt, int max_gen) {
    memset(s, 0, sizeof *s);
    s->n_prompt = 1 + (int)(sp_test_rand(rs) % (uint64_t)max_prompt);
    s->prompt[0] = 1; // BOS
    for (int k = 1; k < s->n_prompt; k++)
        s->prompt[k] = 3 + (int32_t)(sp_test_rand(rs) % (uint64_t)(model->hp.n_vocab - 3));
    s->max_tokens = 1 + (int)(sp_test_rand(rs) % (uint64_t)max_gen);
    s->cancel_at_step = -1;
}

/* Golden prompts alone, among 31 others, with chunk sizes 1, 7, 512 and 1-3 threads: same
 * tokens as llama.cpp, bitwise equal logits. */
static void golden_invariance(const char *file) {
    load_model(file);
    char *gpath = sp_test_shared("models/golden-greedy.json");
    json_t *root = sp_test_load_json(gpath);
    json_t *entries = json_object_get(json_object_get(root, "models"), file);
    size_t gi;
    json_t *ge;
    json_array_foreach(entries, gi, ge) {
        spec g = {.max_tokens = 64, .cancel_at_step = -1};
        json_t *pt = json_object_get(ge, "prompt_tokens"), *want = json_object_get(ge, "greedy_tokens");
        g.n_prompt = (int32_t)json_array_size(pt);
        for (int k = 0; k < g.n_prompt; k++)
            g.prompt[k] = (int32_t)json_integer_value(json_array_get(pt, k));
        run *alone = calloc(1, sizeof *alone), *other = calloc(1, sizeof *other);
        sp_engine_stats st;
        run_specs(alone, &g, 1, sp_engine_opts_default(), &st);
        assert_int_equal(alone->res[0].n_tokens, json_array_size(want));
        for (int k = 0; k < alone->res[0].n_tokens; k++)
            assert_int_equal(alone->res[0].tokens[k], json_integer_value(json_array_get(want, k)));
        assert_int_equal(st.n_blocks_used, 0);
        // Chunk sizes 1, 7 and 512, and 1, 2 or 3 compute threads (more than this machine's
        // cores): the same bits.
        const int chunks[] = {1, 7, 512};
        for (int c = 0; c < 3; c++) {
            sp_engine_opts o = sp_engine_opts_default();
            o.max_chunk = chunks[c];
            o.n_threads = c + 1;
            run_specs(other, &g, 1, o, &st);
            assert_memory_equal(other->res[0].tokens, alone->res[0].tokens,
                                alone->res[0].n_tokens * sizeof(int32_t));
            assert_true(other->res[0].logits_hash == alone->res[0].logits_hash);
        }
        // Among 31 requests of mixed lengths, submitted around it, with chunked prefill.
        spec many[32];
        uint64_t rs = 1000 + gi;
        for (int i = 0; i < 32; i++)
            random_spec(&many[i], &rs, 120, 70);
        many[13] = g;
        sp_engine_opts o = sp_engine_opts_default();
        o.max_batch_tokens = 128;
        o.max_chunk = 40;
        run_specs(other, many, 32, o, &st);
        assert_int_equal(other->res[13].n_tokens, alone->res[0].n_tokens);
        assert_memory_equal(other->res[13].tokens, alone->res[0].tokens,
                            alone->res[0].n_tokens * sizeof(int32_t));
        assert_true(other->res[13].logits_hash == alone->res[0].logits_hash);
        assert_string_equal(other->res[13].text, alone->res[0].text);
        assert_int_equal(st.n_blocks_used, 0);
        assert_int_equal(st.finished[SP_FINISH_CANCELLED] + st.finished[SP_FINISH_ERROR], 0);
        free(alone);
        free(other);
    }
    json_decref(root);
    free(gpath);
    unload_model();
}

static void test_golden_invariance_260k(void **s) { (void)s; golden_invariance("stories260K.gguf"); }
static void test_golden_invariance_656k(void **s) { (void)s; golden_invariance("TinyStories-656K-Q8_0.gguf"); }

/* A KV pool too small for all requests at once: everything still completes with the outputs
 * of an unconstrained run; a preempted request always progresses before it is preempted again;
 * no block stays used. */
static void test_preemption(void **state) {
    (void)state;
    load_model("stories260K.gguf");
    spec specs[12];
    uint64_t rs = 77;
    for (int i = 0; i < 12; i++) {
        random_spec(&specs[i], &rs, 60, 60);
        specs[i].max_tokens = 40 + i;
        specs[i].temperature = i % 2 ? 0.9f : 0.0f;
        specs[i].seed = 1000 + (uint64_t)i;
    }
    run *big = calloc(1, sizeof *big), *small = calloc(1, sizeof *small);
    sp_engine_stats st_big, st_small;
    run_specs(big, specs, 12, sp_engine_opts_default(), &st_big);
    assert_int_equal(st_big.preemptions, 0);
    sp_engine_opts o = sp_engine_opts_default();
    o.kv_tokens = 16 * 16; // 16 blocks for ~1000 tokens of demand
    snprintf(o.admission, sizeof o.admission, "aggressive"); // admits eagerly: preempts
    o.prefix_cache = false;
    run_specs(small, specs, 12, o, &st_small);
    print_message("preemptions with a 16-block pool: %llu\n",
                  (unsigned long long)st_small.preemptions);
    assert_true(st_small.preemptions > 0);
    for (int i = 0; i < 12; i++) {
        assert_int_equal(small->res[i].n_tokens, big->res[i].n_tokens);
        assert_memory_equal(small->res[i].tokens, big->res[i].tokens,
                            big->res[i].n_tokens * sizeof(int32_t));
        assert_true(small->res[i].logits_hash == big->res[i].logits_hash);
        assert_string_equal(small->res[i].text, big->res[i].text);
        for (int k = 1; k < small->res[i].n_preempt; k++)
            assert_true(small->res[i].gen_at_preempt[k] > small->res[i].gen_at_preempt[k - 1]);
    }
    assert_int_equal(st_small.n_blocks_used, 0);
    // The same with the prefix cache on: preempted requests get their blocks back.
    o.prefix_cache = true;
    run_specs(small, specs, 12, o, &st_small);
    for (int i = 0; i < 12; i++)
        assert_true(small->res[i].logits_hash == big->res[i].logits_hash);
    assert_int_equal(st_small.n_blocks_used, 0);
    free(big);
    free(small);
    unload_model();
}

/* A request that would outgrow the whole KV pool (here 96 tokens, the context 512) finishes
 * with "length" when it fills the pool, instead of preempting itself and waiting forever; the
 * request queued behind it then runs, and no block stays used. */
static void test_pool_bounds_length(void **state) {
    (void)state;
    load_model("stories260K.gguf");
    spec specs[2];
    uint64_t rs = 5;
    for (int i = 0; i < 2; i++) {
        random_spec(&specs[i], &rs, 8, 1);
        specs[i].max_tokens = MAX_GEN;
        specs[i].ignore_eos = true;
    }
    specs[1].max_tokens = 8;
    sp_engine_opts o = sp_engine_opts_default();
    o.kv_tokens = 96;
    o.n_ctx = 512;
    sp_engine *e;
    sp_diag d;
    assert_int_equal(sp_engine_create(model, vocab, &o, &e, &d), SP_OK);
    assert_int_equal(sp_engine_max_len(e), 96);
    assert_int_equal(sp_engine_n_ctx(e), 512);
    sp_engine_destroy(e);
    // Every front end (serve, bench, generate) starts from these defaults: one admission policy.
    assert_string_equal(sp_engine_opts_default().admission, "past-future");
    run *rn = calloc(1, sizeof *rn);
    sp_engine_stats st;
    run_specs(rn, specs, 2, o, &st);
    assert_int_equal(rn->res[0].finish, SP_FINISH_LENGTH);
    assert_int_equal(rn->res[0].n_tokens, 96 - specs[0].n_prompt);
    assert_int_equal(rn->res[1].finish, SP_FINISH_LENGTH);
    assert_int_equal(rn->res[1].n_tokens, 8);
    assert_int_equal(st.n_blocks_used, 0);
    free(rn);
    unload_model();
}

/* Cancelling at random steps (and before the first) leaks no block and leaves the other
 * requests' outputs unchanged. */
static void test_cancel(void **state) {
    (void)state;
    load_model("stories260K.gguf");
    spec specs[24];
    uint64_t rs = 5;
    for (int i = 0; i < 24; i++) {
        random_spec(&specs[i], &rs, 80, 50);
        specs[i].temperature = 0.7f;
        specs[i].seed = (uint64_t)i;
    }
    run *ref = calloc(1, sizeof *ref), *cut = calloc(1, sizeof *cut);
    sp_engine_stats st;
    sp_engine_opts o = sp_engine_opts_default();
    o.max_batch_tokens = 64;
    o.kv_tokens = 40 * 16;
    run_specs(ref, specs, 24, o, &st);
    for (int i = 0; i < 24; i += 3)
        specs[i].cancel_at_step = (int)(sp_test_rand(&rs) % 30);
    run_specs(cut, specs, 24, o, &st);
    int n_cancelled = 0;
    for (int i = 0; i < 24; i++) {
        if (specs[i].cancel_at_step >= 0) {
            n_cancelled += cut->res[i].finish == SP_FINISH_CANCELLED;
            continue;
        }
        assert_int_equal(cut->res[i].n_tokens, ref->res[i].n_tokens);
        assert_memory_equal(cut->res[i].tokens, ref->res[i].tokens,
                            ref->res[i].n_tokens * sizeof(int32_t));
    }
    assert_true(n_cancelled >= 4);
    assert_int_equal(st.n_blocks_used, 0);
    assert_int_equal(st.n_running + st.n_waiting, 0);
    free(ref);
    free(cut);
    unload_model();
}

/* Same seed, same text: alone or batched; another seed gives another text. */
static void test_seeded(void **state) {
    (void)state;
    load_model("TinyStories-656K-F32.gguf");
    spec s = {.n_prompt = 6, .prompt = {1, 80, 147, 201, 282, 57}, .max_tokens = 48,
              .temperature = 0.9f, .seed = 4242, .cancel_at_step = -1};
    run *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
    sp_engine_stats st;
    run_specs(a, &s, 1, sp_engine_opts_default(), &st);
    spec many[10];
    uint64_t rs = 9;
    for (int i = 0; i < 10; i++) {
        random_spec(&many[i], &rs, 30, 30);
        many[i].temperature = 1.0f;
    }
    many[4] = s;
    run_specs(b, many, 10, sp_engine_opts_default(), &st);
    assert_string_equal(a->res[0].text, b->res[4].text);
    assert_true(strlen(a->res[0].text) > 20);
    s.seed = 4243;
    run_specs(b, &s, 1, sp_engine_opts_default(), &st);
    assert_string_not_equal(a->res[0].text, b->res[0].text);
    free(a);
    free(b);
    unload_model();
}

/* stop_after ends a request like an end-of-generation token: reason "stop", after exactly that
 * many tokens, with the tokens of an unlimited run. */
static void test_stop_after(void **state) {
    (void)state;
    load_model("stories260K.gguf");
    spec s = {.n_prompt = 5, .prompt = {1, 403, 407, 261, 378}, .max_tokens = 40,
              .cancel_at_step = -1};
    run *a = calloc(1, sizeof *a);
    sp_engine_stats st;
    run_specs(a, &s, 1, sp_engine_opts_default(), &st);
    int32_t full[MAX_GEN];
    int n_full = a->res[0].n_tokens;
    memcpy(full, a->res[0].tokens, sizeof full);
    sp_engine *e;
    sp_diag d;
    sp_engine_opts o = sp_engine_opts_default();
    o.n_threads = 1;
    assert_int_equal(sp_engine_create(model, vocab, &o, &e, &d), SP_OK);
    sp_req_params p = sp_req_params_default();
    p.max_tokens = 40;
    p.stop_after = 7;
    p.sample.temperature = 0.0f;
    sp_request *r;
    assert_int_equal(sp_request_create(vocab, s.prompt, 5, &p, &r, &d), SP_OK);
    assert_int_equal(sp_engine_submit(e, r, &d), SP_OK);
    while (sp_engine_busy(e))
        sp_engine_step(e);
    sp_req_cursor cur = {0};
    sp_req_token toks[64];
    sp_req_read rd;
    assert_int_equal(sp_request_read(r, &cur, toks, 64, NULL, NULL, NULL, NULL, NULL, &rd), SP_OK);
    assert_int_equal(rd.finish, SP_FINISH_STOP);
    assert_int_equal(rd.n_new_tokens, 7);
    assert_true(n_full >= 7);
    for (int i = 0; i < 7; i++)
        assert_int_equal(toks[i].id, full[i]);
    for (sp_request *q = sp_engine_take_ready(e); q;) {
        sp_request *next = sp_request_next_ready(q);
        sp_request_release(q);
        q = next;
    }
    sp_request_release(r);
    sp_engine_destroy(e);
    free(a);
    unload_model();
}

/* The ready list under interleaving: the engine runs a step (notifying again) while the
 * consumer is in the middle of walking a list it took. Every request's final output must still
 * reach the consumer through some list: none may be lost or skipped. */
static void test_ready_list_interleaved(void **state) {
    (void)state;
    load_model("stories260K.gguf");
    sp_engine_opts o = sp_engine_opts_default();
    o.n_threads = 1;
    sp_engine *e;
    sp_diag d;
    assert_int_equal(sp_engine_create(model, vocab, &o, &e, &d), SP_OK);
    enum { N = 6 };
    sp_request *reqs[N];
    sp_req_cursor cur[N] = {{0}};
    bool done[N] = {false};
    for (int i = 0; i < N; i++) {
        int32_t prompt[3] = {1, 403 + i, 407};
        sp_req_params p = sp_req_params_default();
        p.max_tokens = 2 + i % 3;
        p.sample.temperature = 0.0f;
        assert_int_equal(sp_request_create(vocab, prompt, 3, &p, &reqs[i], &d), SP_OK);
        assert_int_equal(sp_engine_submit(e, reqs[i], &d), SP_OK);
    }
    sp_engine_step(e);
    for (int round = 0; round < 100; round++) {
        sp_request *r = sp_engine_take_ready(e);
        bool stepped = false;
        while (r) {
            // A step in the middle of the walk, before the consumer moves on from r.
            stepped |= sp_engine_step(e);
            sp_request *next = sp_request_next_ready(r);
            int i = 0;
            while (reqs[i] != r)
                i++;
            sp_req_token toks[8];
            sp_req_read rd;
            assert_int_equal(
                sp_request_read(r, &cur[i], toks, 8, NULL, NULL, NULL, NULL, NULL, &rd), SP_OK);
            if (rd.finish != SP_FINISH_NONE)
                done[i] = true;
            sp_request_release(r);
            r = next;
        }
        if (!stepped)
            sp_engine_step(e);
    }
    assert_false(sp_engine_busy(e));
    for (int i = 0; i < N; i++) {
        if (!done[i])
            fail_msg("request %d finished but its final notification never arrived", i);
        sp_request_release(reqs[i]);
    }
    sp_engine_destroy(e);
    unload_model();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_invariance_260k),
        cmocka_unit_test(test_golden_invariance_656k),
        cmocka_unit_test(test_preemption),
        cmocka_unit_test(test_pool_bounds_length),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_seeded),
        cmocka_unit_test(test_stop_after),
        cmocka_unit_test(test_ready_list_interleaved),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

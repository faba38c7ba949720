/* The prefix cache inside the engine: outputs (bitwise logits) equal to runs without it, for
 * shared prefixes of every length modulo the block size, for requests arriving together with
 * the same prefix (computed once), under eviction pressure, and with forced hash collisions;
 * the pool's counters return to idle (nothing in use) afterwards. */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

#include "base/hash.h"
#include "model/model.h"
#include "sched/engine.h"
#include "tok/tok.h"

#define MAX_N 40

static sp_model *model;
static sp_vocab *vocab;

typedef struct rec {
    sp_request *reqs[MAX_N];
    uint64_t hash[MAX_N];
    int n;
} rec;

static void on_logits(void *ctx, sp_request *r, const float *logits, int32_t n) {
    rec *rc = ctx;
    for (int i = 0; i < rc->n; i++)
        if (rc->reqs[i] == r) {
            rc->hash[i] = sp_fnv1a64_add(rc->hash[i] ? rc->hash[i] : SP_FNV1A64_BASIS, logits,
                                         (size_t)n * sizeof(float));
        }
}

static sp_engine *make_engine(rec *rc, bool cache, int32_t kv_tokens, int32_t hash_bits) {
    sp_engine_opts o = sp_engine_opts_default();
    o.prefix_cache = cache;
    o.kv_tokens = kv_tokens;
    o.kv_hash_bits = hash_bits;
    o.max_batch_tokens = 64;
    o.n_threads = 1;
    o.on_logits = on_logits;
    o.hook_ctx = rc;
    sp_engine *e;
    sp_diag d;
    assert_int_equal(sp_engine_create(model, vocab, &o, &e, &d), SP_OK);
    return e;
}

static void submit(sp_engine *e, rec *rc, const int32_t *prompt, int n, int max_tokens) {
    sp_req_params p = sp_req_params_default();
    p.max_tokens = max_tokens;
    p.sample.temperature = 0.0f;
    sp_diag d;
    assert_true(rc->n < MAX_N);
    assert_int_equal(sp_request_create(vocab, prompt, n, &p, &rc->reqs[rc->n], &d), SP_OK);
    assert_int_equal(sp_engine_submit(e, rc->reqs[rc->n], &d), SP_OK);
    rc->n++;
}

static void drain(sp_engine *e) {
    while (sp_engine_busy(e))
        sp_engine_step(e);
    for (sp_request *r = sp_engine_take_ready(e); r;) {
        sp_request *next = sp_request_next_ready(r);
        sp_request_release(r);
        r = next;
    }
}

static void finish(sp_engine *e, rec *rc, sp_engine_stats *st) {
    drain(e);
    sp_engine_stats_get(e, st);
    for (int i = 0; i < rc->n; i++)
        sp_request_release(rc->reqs[i]);
    sp_engine_destroy(e);
}

static int32_t cached_of(sp_request *r) {
    sp_req_stats st;
    sp_request_stats(r, &st);
    return st.n_cached;
}

static void fill(int32_t *t, int n, uint64_t seed) {
    t[0] = 1;
    for (int i = 1; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        t[i] = 3 + (int32_t)((seed >> 33) % 500);
    }
}

static void setup_model(void) {
    char *path = sp_test_shared("models/stories260K.gguf");
    sp_diag d;
    assert_int_equal(sp_model_load(path, &model, &d), SP_OK);
    assert_int_equal(sp_vocab_load(model->gguf, &vocab, &d), SP_OK);
    free(path);
}

static void teardown_model(void) {
    sp_vocab_destroy(vocab);
    sp_model_destroy(model);
}

/* Request B shares the first k tokens of A's prompt, for k = 1 .. 40 (every residue modulo the
 * block size of 16): B's logits with the cache equal B's logits without it, and B reuses
 * exactly the full blocks of the shared part. */
static void test_every_prefix_length(void **state) {
    (void)state;
    setup_model();
    int32_t a[48], b[48];
    fill(a, 48, 1);
    for (int k = 1; k <= 40; k++) {
        memcpy(b, a, sizeof b);
        fill(b + k, 48 - k, 1000 + (uint64_t)k); // diverges at position k
        b[k] = a[k] == 7 ? 8 : 7;
        rec with = {0}, without = {0};
        sp_engine_stats st;
        sp_engine *e = make_engine(&with, true, 0, 0);
        submit(e, &with, a, 48, 4);
        drain(e);
        submit(e, &with, b, 48, 6);
        drain(e);
        int32_t cached = cached_of(with.reqs[1]);
        finish(e, &with, &st);
        assert_int_equal(st.n_blocks_used, 0);
        assert_int_equal(cached, k / 16 * 16);
        e = make_engine(&without, false, 0, 0);
        submit(e, &without, b, 48, 6);
        finish(e, &without, &st);
        if (with.hash[1] != without.hash[0])
            fail_msg("shared prefix of %d tokens: logits differ with the cache", k);
    }
    teardown_model();
}

/* Eight requests arrive together with the same 64-token prefix: the prefix is computed once
 * (the others wait for its blocks and reuse them), and every output equals the uncached one. */
static void test_concurrent_arrivals(void **state) {
    (void)state;
    setup_model();
    int32_t p[8][80];
    for (int i = 0; i < 8; i++) {
        fill(p[i], 80, 5);
        fill(p[i] + 64, 16, 100 + (uint64_t)i);
    }
    rec with = {0}, without = {0};
    sp_engine_stats st_with, st_without;
    sp_engine *e = make_engine(&with, true, 0, 0);
    for (int i = 0; i < 8; i++)
        submit(e, &with, p[i], 80, 5);
    finish(e, &with, &st_with);
    e = make_engine(&without, false, 0, 0);
    for (int i = 0; i < 8; i++)
        submit(e, &without, p[i], 80, 5);
    finish(e, &without, &st_without);
    for (int i = 0; i < 8; i++)
        assert_true(with.hash[i] == without.hash[i]);
    print_message("prompt tokens computed: %llu with the cache, %llu without\n",
                  (unsigned long long)st_with.prompt_tokens,
                  (unsigned long long)st_without.prompt_tokens);
    // 64 shared tokens once plus 8 unique suffixes of 16, not 8 x 80.
    assert_int_equal(st_with.prompt_tokens, 64 + 8 * 16);
    assert_int_equal(st_without.prompt_tokens, 8 * 80);
    assert_int_equal(st_with.cached_tokens, 7 * 64);
    assert_int_equal(st_with.n_blocks_used, 0);
    teardown_model();
}

/* Admission counts a prefix that running requests share once: six prompts of 208 tokens, 192 of
 * them shared, fit a pool of 640 tokens together (each counted whole, 224 tokens with its
 * output, at most two would). */
static void test_shared_prefix_admitted_once(void **state) {
    (void)state;
    setup_model();
    enum { N = 6, LEN = 208, SHARED = 192 };
    int32_t p[N][LEN];
    for (int i = 0; i < N; i++) {
        fill(p[i], LEN, 9);
        fill(p[i] + SHARED, LEN - SHARED, 200 + (uint64_t)i);
    }
    rec rc = {0};
    sp_engine *e = make_engine(&rc, true, 640, 0);
    submit(e, &rc, p[0], LEN, 16);
    for (int k = 0; k < 5; k++) // its prompt computed: the shared blocks are in use
        sp_engine_step(e);
    for (int i = 1; i < N; i++)
        submit(e, &rc, p[i], LEN, 16);
    int32_t most = 0;
    for (int k = 0; k < 200 && sp_engine_busy(e); k++) {
        sp_engine_step(e);
        sp_engine_stats st;
        sp_engine_stats_get(e, &st);
        most = st.n_running > most ? st.n_running : most;
    }
    print_message("at most %d of %d running at once\n", most, N);
    assert_int_equal(most, N);
    sp_engine_stats st;
    finish(e, &rc, &st);
    teardown_model();
}

/* A pool too small to keep every prefix: cached blocks are evicted, outputs stay exact. */
static void test_eviction(void **state) {
    (void)state;
    setup_model();
    rec with = {0}, without = {0};
    sp_engine_stats st;
    int32_t prompts[30][64];
    for (int i = 0; i < 30; i++)
        fill(prompts[i], 64, (uint64_t)(i * i % 6)); // 4 distinct prompts, 16 blocks in all
    sp_engine *e = make_engine(&with, true, 16 * 16, 0);
    for (int i = 0; i < 30; i++) {
        submit(e, &with, prompts[i], 64, 8);
        drain(e);
    }
    finish(e, &with, &st);
    print_message("evictions: %llu, cached tokens: %llu\n", (unsigned long long)st.evictions,
                  (unsigned long long)st.cached_tokens);
    assert_true(st.evictions > 0);
    assert_true(st.cached_tokens > 0);
    assert_int_equal(st.n_blocks_used, 0);
    e = make_engine(&without, false, 0, 0);
    for (int i = 0; i < 30; i++)
        submit(e, &without, prompts[i], 64, 8);
    finish(e, &without, &st);
    for (int i = 0; i < 30; i++)
        assert_true(with.hash[i] == without.hash[i]);
    teardown_model();
}

/* With 2-bit hashes nearly every block collides: blocks are still shared only when their
 * tokens (and parents) match, so outputs are exact. */
static void test_forced_collisions(void **state) {
    (void)state;
    setup_model();
    rec with = {0}, without = {0};
    sp_engine_stats st;
    int32_t prompts[12][48];
    for (int i = 0; i < 12; i++)
        fill(prompts[i], 48, (uint64_t)(i % 4));
    sp_engine *e = make_engine(&with, true, 0, 2);
    for (int i = 0; i < 12; i++) {
        submit(e, &with, prompts[i], 48, 6);
        drain(e);
    }
    finish(e, &with, &st);
    assert_true(st.cached_tokens > 0);
    e = make_engine(&without, false, 0, 0);
    for (int i = 0; i < 12; i++)
        submit(e, &without, prompts[i], 48, 6);
    finish(e, &without, &st);
    for (int i = 0; i < 12; i++)
        assert_true(with.hash[i] == without.hash[i]);
    teardown_model();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_prefix_length),
        cmocka_unit_test(test_concurrent_arrivals),
        cmocka_unit_test(test_shared_prefix_admitted_once),
        cmocka_unit_test(test_eviction),
        cmocka_unit_test(test_forced_collisions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Admission policies: the Past-Future peak formula against a brute-force simulation, its
 * conditional sampling, and the decisions of each policy on scripted scenarios. */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "model/model.h"
#include "sched/engine.h"
#include "sched/policy.h"
#include "tok/tok.h"

#include <unistd.h>

/* Peak KV use by simulation: at each future step t, request j still holds c_j + t tokens while
 * t <= r_j. */
static int64_t brute_peak(const int32_t *c, const int32_t *r, int n) {
    int32_t max_r = 0;
    for (int i = 0; i < n; i++)
        max_r = r[i] > max_r ? r[i] : max_r;
    int64_t peak = 0;
    for (int32_t t = 0; t <= max_r; t++) {
        int64_t use = 0;
        for (int i = 0; i < n; i++)
            if (t <= r[i])
                use += c[i] + t;
        peak = use > peak ? use : peak;
    }
    return peak;
}

static void test_peak_formula(void **state) {
    (void)state;
    uint64_t rs = 11;
    int32_t c[64], r[64], order[64];
    for (int trial = 0; trial < 3000; trial++) {
        int n = 1 + (int)(sp_test_rand(&rs) % 64);
        int32_t spread = trial % 3 == 0 ? 4 : 300; // small spreads make many ties
        for (int i = 0; i < n; i++) {
            c[i] = (int32_t)(sp_test_rand(&rs) % 500);
            r[i] = (int32_t)(sp_test_rand(&rs) % (uint64_t)spread);
        }
        int64_t want = brute_peak(c, r, n), got = sp_policy_peak(c, r, n, order);
        if (got != want)
            fail_msg("trial %d (n %d): formula %lld, simulation %lld", trial, n, (long long)got,
                     (long long)want);
        for (int k = 1; k < n; k++)
            assert_true(r[order[k - 1]] >= r[order[k]]);
    }
}

static void test_conditional_sampling(void **state) {
    (void)state;
    sp_admission_policy p;
    assert_int_equal(sp_policy_past_future_create(100, 4, 8, 7, &p), SP_OK);
    // Too little history: assume the whole max.
    assert_int_equal(sp__past_future_draw(p.ctx, 0, 500), 500);
    // History: 10, 20, ..., 1000.
    for (int i = 1; i <= 100; i++)
        p.on_finish(p.ctx, 10 * i, 2000);
    int counts[101] = {0};
    for (int k = 0; k < 20000; k++) {
        int32_t r = sp__past_future_draw(p.ctx, 455, 100000);
        // Only lengths above 455 (460, ..., 1000) can be drawn, minus what was generated.
        assert_true(r > 0);
        assert_int_equal((r + 455) % 10, 0);
        assert_true(r + 455 >= 460 && r + 455 <= 1000);
        counts[(r + 455) / 10]++;
    }
    // Uniform over the 55 eligible lengths (each ~364 of 20000): a loose bound.
    for (int v = 46; v <= 100; v++)
        assert_true(counts[v] > 250 && counts[v] < 480);
    // Capped by max_remaining, and max_remaining when nothing recorded is longer.
    assert_true(sp__past_future_draw(p.ctx, 0, 5) <= 5);
    assert_int_equal(sp__past_future_draw(p.ctx, 5000, 77), 77);
    // The window keeps the last 100: after 100 lengths of 3, only 3 remains.
    for (int i = 0; i < 100; i++)
        p.on_finish(p.ctx, 3, 2000);
    assert_int_equal(sp__past_future_draw(p.ctx, 0, 1000), 3);
    assert_int_equal(sp__past_future_draw(p.ctx, 3, 1000), 1000);
    p.destroy(p.ctx);
}

/* Pool of 100 blocks of 16 tokens; two running requests of 100 tokens (10 generated) that may
 * generate up to 1000 more; a candidate with a 100-token prompt and max 1000. */
static void scenario(sp_sched_state *s, sp_policy_req *running, sp_policy_req *cand) {
    for (int i = 0; i < 2; i++)
        running[i] = (sp_policy_req){.n_kv = 100, .n_generated = 10, .max_remaining = 990,
                                     .n_prompt = 90};
    *cand = (sp_policy_req){.n_kv = 100, .max_remaining = 1000, .n_prompt = 100,
                            .blocks_needed = 7};
    *s = (sp_sched_state){.block_size = 16, .n_blocks = 100, .n_available = 86, .n_running = 2,
                          .running = running, .n_waiting = 1};
}

static void test_policy_decisions(void **state) {
    (void)state;
    sp_sched_state s;
    sp_policy_req running[2], cand;
    scenario(&s, running, &cand);
    sp_admission_policy agg = sp_policy_aggressive(), cons = sp_policy_conservative();
    // Aggressive: the prompt fits now.
    assert_true(agg.admit(agg.ctx, &s, &cand));
    // Conservative: 3 x 1100 tokens = 207 blocks > 100.
    assert_false(cons.admit(cons.ctx, &s, &cand));
    // ... but a candidate with max 10 next to running requests with max 10 fits.
    running[0].max_remaining = running[1].max_remaining = 10;
    cand.max_remaining = 10;
    assert_true(cons.admit(cons.ctx, &s, &cand));
    scenario(&s, running, &cand);
    // Nobody admits a prompt that does not fit now.
    cand.blocks_needed = 87;
    assert_false(agg.admit(agg.ctx, &s, &cand));
    assert_false(cons.admit(cons.ctx, &s, &cand));

    // Past-Future with short outputs in its history (20 tokens): the peak is about
    // 300 + 3 * 20 tokens: admit.
    sp_admission_policy pf;
    scenario(&s, running, &cand);
    assert_int_equal(sp_policy_past_future_create(50, 4, 8, 1, &pf), SP_OK);
    for (int i = 0; i < 50; i++)
        pf.on_finish(pf.ctx, 20, 1000);
    assert_true(pf.admit(pf.ctx, &s, &cand));
    // With long outputs (about 900 tokens) the predicted peak exceeds 1600 tokens: wait.
    for (int i = 0; i < 50; i++)
        pf.on_finish(pf.ctx, 900, 1000);
    assert_false(pf.admit(pf.ctx, &s, &cand));
    // With a larger pool it fits again: 3 x ~1000 tokens < 300 blocks.
    s.n_blocks = 300;
    s.n_available = 280;
    assert_true(pf.admit(pf.ctx, &s, &cand));
    pf.destroy(pf.ctx);

    // Without history it behaves like the conservative policy.
    scenario(&s, running, &cand);
    assert_int_equal(sp_policy_past_future_create(50, 4, 8, 1, &pf), SP_OK);
    assert_false(pf.admit(pf.ctx, &s, &cand));
    pf.destroy(pf.ctx);
}

static void test_create_by_name(void **state) {
    (void)state;
    const char *names[] = {"aggressive", "conservative", "past-future"};
    for (int i = 0; i < 3; i++) {
        sp_admission_policy p;
        assert_int_equal(sp_policy_create(names[i], 16, 1, &p), SP_OK);
        assert_string_equal(p.name, names[i]);
        if (p.destroy)
            p.destroy(p.ctx);
    }
    sp_admission_policy p;
    assert_int_equal(sp_policy_create("greedy", 16, 1, &p), SP_ERR_INVALID);
}

/* ---- priorities in the engine ---------------------------------------------------------- */

static sp_model *pm;
static sp_vocab *pv;

static sp_request *submit_prio(sp_engine *e, int32_t prio, int32_t max_tokens, int seed) {
    int32_t prompt[24];
    prompt[0] = 1;
    for (int i = 1; i < 24; i++)
        prompt[i] = 3 + (i * (7 + seed)) % 500;
    sp_req_params p = sp_req_params_default();
    p.max_tokens = max_tokens;
    p.ignore_eos = true;
    p.sample.temperature = 0.0f;
    p.priority = prio;
    sp_request *r;
    sp_diag d;
    assert_int_equal(sp_request_create(pv, prompt, 24, &p, &r, &d), SP_OK);
    assert_int_equal(sp_engine_submit(e, r, &d), SP_OK);
    return r;
}

static int64_t end_of(sp_request *r) {
    sp_req_stats st;
    sp_request_stats(r, &st);
    return st.t_end_us;
}

/* Waits until r has waited longer than ms milliseconds by the engine's clock: what the engine
 * compares with its deadline or max_wait_ms at the next step. */
static void wait_past(sp_request *r, int32_t ms) {
    sp_req_stats st;
    sp_request_stats(r, &st);
    while (sp_time_us() - st.t_submit_us <= (int64_t)ms * 1000)
        usleep(500);
}

/* An engine over the shared model on one thread, with max_seqs sequences and requests aging
 * after max_wait_ms (0: never, so that no test but the aging ones depends on the clock). */
static sp_engine *engine_with(int32_t max_seqs, int32_t max_wait_ms) {
    sp_engine_opts o = sp_engine_opts_default();
    o.max_seqs = max_seqs;
    o.n_threads = 1;
    o.max_wait_ms = max_wait_ms;
    sp_engine *e;
    sp_diag d;
    assert_int_equal(sp_engine_create(pm, pv, &o, &e, &d), SP_OK);
    return e;
}

/* The engine tests' model and vocabulary, loaded once for the group. */
static int load_shared_model(void **state) {
    (void)state;
    char *path = sp_test_shared("models/stories260K.gguf");
    sp_diag d;
    const bool ok =
        sp_model_load(path, &pm, &d) == SP_OK && sp_vocab_load(pm->gguf, &pv, &d) == SP_OK;
    free(path);
    return ok ? 0 : -1;
}

static int free_shared_model(void **state) {
    (void)state;
    sp_vocab_destroy(pv);
    sp_model_destroy(pm);
    return 0;
}

static void drop_ready(sp_engine *e) {
    for (sp_request *r = sp_engine_take_ready(e); r;) {
        sp_request *next = sp_request_next_ready(r);
        sp_request_release(r);
        r = next;
    }
}

/* With the sequence cap full of low-priority work, an urgent request displaces the newest of
 * them at once (no memory shortage involved) and finishes first; everyone completes. */
static void test_priority_preemption(void **state) {
    (void)state;
    sp_engine *e = engine_with(2, 0);
    sp_request *low1 = submit_prio(e, 5, 200, 1), *low2 = submit_prio(e, 5, 200, 2);
    for (int i = 0; i < 5; i++)
        sp_engine_step(e);
    sp_request *urgent = submit_prio(e, 0, 20, 3);
    sp_engine_step(e);
    sp_engine_stats st;
    sp_engine_stats_get(e, &st);
    assert_int_equal(st.preemptions_priority, 1);
    assert_int_equal(st.n_running, 2);
    while (sp_engine_busy(e))
        sp_engine_step(e);
    drop_ready(e);
    assert_true(end_of(urgent) < end_of(low1) && end_of(urgent) < end_of(low2));
    sp_engine_stats_get(e, &st);
    assert_int_equal(st.finished[SP_FINISH_LENGTH], 3);
    assert_int_equal(st.n_blocks_used, 0);
    sp_request_release(low1);
    sp_request_release(low2);
    sp_request_release(urgent);
    sp_engine_destroy(e);
}

/* Deadlines: behind a long request, one that asks for its first token within 1 ms is rejected
 * without being run; one with a generous deadline is served. */
static void test_deadline(void **state) {
    (void)state;
    sp_engine *e = engine_with(1, 0);
    sp_request *busy = submit_prio(e, 0, 100, 1);
    for (int i = 0; i < 3; i++)
        sp_engine_step(e);
    int32_t prompt[4] = {1, 403, 407, 261};
    sp_request *tight, *loose;
    sp_diag d;
    sp_req_params p = sp_req_params_default();
    p.max_tokens = 4;
    p.deadline_ms = 1;
    assert_int_equal(sp_request_create(pv, prompt, 4, &p, &tight, &d), SP_OK);
    p.deadline_ms = 600000;
    assert_int_equal(sp_request_create(pv, prompt, 4, &p, &loose, &d), SP_OK);
    assert_int_equal(sp_engine_submit(e, tight, &d), SP_OK);
    assert_int_equal(sp_engine_submit(e, loose, &d), SP_OK);
    wait_past(tight, 1);
    while (sp_engine_busy(e))
        sp_engine_step(e);
    drop_ready(e);
    sp_req_cursor cur = {0};
    sp_req_token toks[8];
    sp_req_read rd;
    assert_int_equal(sp_request_read(tight, &cur, toks, 8, NULL, NULL, NULL, NULL, NULL, &rd),
                     SP_OK);
    assert_int_equal(rd.finish, SP_FINISH_ERROR);
    assert_int_equal(rd.error, SP_ERR_LIMIT);
    assert_int_equal(rd.n_new_tokens, 0);
    memset(&cur, 0, sizeof cur);
    assert_int_equal(sp_request_read(loose, &cur, toks, 8, NULL, NULL, NULL, NULL, NULL, &rd),
                     SP_OK);
    assert_int_equal(rd.n_new_tokens, 4);
    sp_request_release(busy);
    sp_request_release(tight);
    sp_request_release(loose);
    sp_engine_destroy(e);
}

/* No starvation: a low-priority request that has waited max_wait_ms goes before more urgent
 * requests that arrived after it, though it may not displace the one running. Without aging
 * (max_wait_ms 0) the same requests leave it last. */
static void check_starvation(bool aging) {
    sp_engine *e = engine_with(1, aging ? 30 : 0);
    sp_request *urgent[5];
    urgent[0] = submit_prio(e, 0, 3, 0);
    sp_request *low = submit_prio(e, 9, 3, 1);
    sp_engine_step(e); // urgent[0] takes the only sequence
    if (aging)
        wait_past(low, 30);
    for (int i = 1; i < 5; i++)
        urgent[i] = submit_prio(e, 0, 3, 10 + i);
    while (sp_engine_busy(e))
        sp_engine_step(e);
    drop_ready(e);
    // urgent[0] kept its sequence; low finished before some of the later urgent requests (a
    // more urgent request may still displace it once, until it is resumed), or after all.
    assert_true(end_of(urgent[0]) < end_of(low));
    int after_low = 0;
    for (int i = 1; i < 5; i++)
        after_low += end_of(urgent[i]) > end_of(low);
    if (aging)
        assert_true(after_low > 0);
    else
        assert_int_equal(after_low, 0);
    for (int i = 0; i < 5; i++)
        sp_request_release(urgent[i]);
    sp_request_release(low);
    sp_engine_destroy(e);
}

static void test_no_starvation(void **state) {
    (void)state;
    check_starvation(true);
    check_starvation(false);
}

/* Waiting past max_wait_ms puts a request first in the queue but does not let it preempt a
 * running request of the same declared priority (an overloaded server, where everyone waits
 * that long, would otherwise preempt at every step): it runs when the running one finishes. */
static void test_aging_does_not_preempt(void **state) {
    (void)state;
    sp_engine *e = engine_with(1, 1);
    sp_request *first = submit_prio(e, 0, 40, 1);
    sp_engine_step(e);
    sp_request *second = submit_prio(e, 0, 5, 2);
    wait_past(second, 1);
    while (sp_engine_busy(e))
        sp_engine_step(e);
    drop_ready(e);
    sp_engine_stats st;
    sp_engine_stats_get(e, &st);
    assert_int_equal(st.preemptions, 0);
    assert_true(end_of(first) < end_of(second));
    assert_int_equal(st.finished[SP_FINISH_LENGTH], 2);
    sp_request_release(first);
    sp_request_release(second);
    sp_engine_destroy(e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_peak_formula),
        cmocka_unit_test(test_conditional_sampling),
        cmocka_unit_test(test_policy_decisions),
        cmocka_unit_test(test_create_by_name),
    };
    const struct CMUnitTest engine_tests[] = {
        cmocka_unit_test(test_priority_preemption),
        cmocka_unit_test(test_deadline),
        cmocka_unit_test(test_aging_does_not_preempt),
        cmocka_unit_test(test_no_starvation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL) |
           cmocka_run_group_tests(engine_tests, load_shared_model, free_shared_model);
}

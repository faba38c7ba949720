/* Multi-turn sessions: TTL choice from the gaps between turns, pins, expiry, reclaiming for
 * memory, history matching; and in the engine, a returning turn that finds its whole previous
 * context pinned while other traffic churns through a small cache (exact outputs), and keeps its
 * session's place in the queue. */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

#include "kv/pool.h"
#include "kv/table.h"
#include "model/kvbuf.h"
#include "model/model.h"
#include "sched/engine.h"
#include "sched/session.h"
#include "tok/tok.h"

static void test_ttl_choice(void **state) {
    (void)state;
    sp_sessions *s;
    assert_int_equal(sp_sessions_create(16, -1, 10000, &s), SP_OK);
    // No history: a short trial pin.
    assert_int_equal(sp_sessions_ttl_ms(s), 2000);
    // Gaps of 100..1000 ms: the TTL is their 90th percentile.
    int64_t t = 1000000;
    for (int i = 1; i <= 10; i++) {
        sp_sessions_arrive(s, 7, 1, t);
        sp_kv_seq empty = {0};
        sp_sessions_end_turn(s, 7, 0, &empty, t, NULL);
        t += i * 100000; // gap of i * 100 ms
    }
    sp_sessions_arrive(s, 7, 1, t);
    assert_int_equal(sp_sessions_ttl_ms(s), 1000);
    sp_sessions_destroy(s, NULL);
    // Gaps far beyond the cap: returning within the cap is unlikely, so no pin.
    assert_int_equal(sp_sessions_create(16, -1, 50, &s), SP_OK);
    t = 1000000;
    for (int i = 0; i < 10; i++) {
        sp_sessions_arrive(s, 9, 1, t);
        sp_kv_seq empty = {0};
        sp_sessions_end_turn(s, 9, 0, &empty, t, NULL);
        t += 5000000;
    }
    sp_sessions_arrive(s, 9, 1, t);
    assert_int_equal(sp_sessions_ttl_ms(s), -1);
    sp_sessions_destroy(s, NULL);
    // A fixed TTL always pins.
    assert_int_equal(sp_sessions_create(16, 1234, 50, &s), SP_OK);
    assert_int_equal(sp_sessions_ttl_ms(s), 1234);
    sp_sessions_destroy(s, NULL);
    // TTL 0: never pin.
    assert_int_equal(sp_sessions_create(16, 0, 50, &s), SP_OK);
    assert_int_equal(sp_sessions_ttl_ms(s), -1);
    sp_sessions_destroy(s, NULL);
}

/* Turns waiting on a named tool take their TTL from that tool's gaps. */
static void test_tool_ttl(void **state) {
    (void)state;
    sp_sessions *s;
    assert_int_equal(sp_sessions_create(16, -1, 60000, &s), SP_OK);
    const uint64_t fast = 11, slow = 22;
    int64_t t = 1000000;
    for (int i = 0; i < 8; i++) {
        sp_kv_seq empty = {0};
        // Session 1 calls the fast tool (100 ms), session 2 the slow one (5 s).
        sp_sessions_arrive(s, 1, 1, t);
        sp_sessions_end_turn(s, 1, fast, &empty, t, NULL);
        sp_sessions_arrive(s, 2, 2, t);
        sp_sessions_end_turn(s, 2, slow, &empty, t, NULL);
        t += 100000;
        sp_sessions_arrive(s, 1, 1, t);
        sp_sessions_end_turn(s, 1, 0, &empty, t, NULL); // this turn waits on no named tool
        t += 4900000;
        sp_sessions_arrive(s, 2, 2, t);
        sp_sessions_end_turn(s, 2, slow, &empty, t, NULL);
    }
    assert_int_equal(sp_sessions_ttl_ms_for(s, fast), 100);
    assert_int_equal(sp_sessions_ttl_ms_for(s, slow), 5000);
    sp_sessions_destroy(s, NULL);
}

/* A chosen TTL pins only when the recompute saved outweighs the memory held. */
static void test_pin_cost(void **state) {
    (void)state;
    sp_hparams hp = {.n_layer = 1, .n_head = 1, .n_head_kv = 1, .head_dim = 4};
    sp_kvbuf kv;
    assert_int_equal(sp_kvbuf_init(&kv, &hp, SP_DTYPE_F16, 4, 16), SP_OK);
    sp_kv_pool *pool;
    assert_int_equal(sp_kv_pool_create(&kv, NULL, &pool), SP_OK);
    sp_sessions *s;
    assert_int_equal(sp_sessions_create(8, -1, 60000, &s), SP_OK);
    int32_t toks[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    for (int cheap = 1; cheap >= 0; cheap--) {
        sp_kv_seq seq;
        assert_int_equal(sp_kv_seq_init(&seq, pool, 64), SP_OK);
        sp_kv_seq_lookup(pool, &seq, 5, toks, 0);
        assert_int_equal(sp_kv_seq_reserve(pool, &seq, 12), SP_OK);
        sp_sessions_arrive(s, 5, 1, 1000);
        // No history: a 2 s trial pin, returning with probability 1/2. 12 tokens at 1 us each
        // save 6 us, far less than 3/16 of the pool for 2 s; at 1 s each they save 6 s.
        sp_session_cost cost = {.us_per_token = cheap ? 1.0 : 1e6, .pool_blocks = 16};
        bool pinned = sp_sessions_end_turn(s, 5, 0, &seq, 2000, &cost);
        assert_true(pinned == !cheap);
        if (!pinned)
            sp_kv_seq_release(pool, &seq);
        sp_kv_seq_deinit(&seq);
    }
    sp_sessions_destroy(s, pool);
    sp_kv_pool_destroy(pool);
    sp_kvbuf_deinit(&kv);
}

static void test_pins(void **state) {
    (void)state;
    sp_hparams hp = {.n_layer = 1, .n_head = 1, .n_head_kv = 1, .head_dim = 4};
    sp_kvbuf kv;
    assert_int_equal(sp_kvbuf_init(&kv, &hp, SP_DTYPE_F16, 4, 16), SP_OK);
    sp_kv_pool *pool;
    assert_int_equal(sp_kv_pool_create(&kv, NULL, &pool), SP_OK);
    sp_sessions *s;
    assert_int_equal(sp_sessions_create(8, 1000, 60000, &s), SP_OK);
    int32_t toks[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    for (uint64_t id = 1; id <= 3; id++) {
        sp_kv_seq seq;
        assert_int_equal(sp_kv_seq_init(&seq, pool, 64), SP_OK);
        sp_kv_seq_lookup(pool, &seq, id, toks, 0);
        assert_int_equal(sp_kv_seq_reserve(pool, &seq, 10), SP_OK);
        sp_kv_seq_commit(pool, &seq, toks, 10);
        sp_sessions_arrive(s, id, id, (int64_t)id * 1000);
        assert_true(sp_sessions_end_turn(s, id, 0, &seq, (int64_t)id * 1000, NULL));
        assert_int_equal(seq.n_blocks, 0); // moved into the pin
        sp_kv_seq_deinit(&seq);
    }
    sp_session_stats st;
    sp_sessions_stats(s, &st);
    assert_int_equal(st.n_pinned, 3);
    assert_int_equal(st.pinned_blocks, 9);
    sp_kv_stats ks;
    sp_kv_pool_stats(pool, &ks);
    assert_int_equal(ks.n_used, 9); // pinned blocks are held, not evictable
    // History matching: a sequence that starts with session 2's blocks.
    sp_kv_seq probe;
    assert_int_equal(sp_kv_seq_init(&probe, pool, 64), SP_OK);
    int32_t got = sp_kv_seq_lookup(pool, &probe, 2, toks, 11);
    assert_int_equal(got, 8);
    assert_int_equal(sp_sessions_match(s, &probe), 2);
    sp_sessions_unpin(s, pool, 2);
    sp_kv_seq_release(pool, &probe);
    sp_kv_seq_deinit(&probe);
    // Reclaim takes the oldest pin (session 1); expiry takes the rest.
    assert_true(sp_sessions_reclaim_oldest(s, pool));
    sp_sessions_stats(s, &st);
    assert_int_equal(st.pins_reclaimed, 1);
    assert_int_equal(st.pins_hit, 1);
    assert_int_equal(st.n_pinned, 1);
    sp_sessions_expire(s, pool, 3000 + 999 * 1000);
    sp_sessions_stats(s, &st);
    assert_int_equal(st.n_pinned, 1); // session 3 pinned at 3 ms expires at 1003 ms
    sp_sessions_expire(s, pool, 1003 * 1000);
    sp_sessions_stats(s, &st);
    assert_int_equal(st.n_pinned, 0);
    assert_int_equal(st.pins_expired, 1);
    sp_kv_pool_stats(pool, &ks);
    assert_int_equal(ks.n_used, 0);
    assert_false(sp_sessions_reclaim_oldest(s, pool));
    sp_sessions_destroy(s, pool);
    sp_kv_pool_destroy(pool);
    sp_kvbuf_deinit(&kv);
}

/* In the engine: turn 1 of a session, then traffic that overflows a small cache, then turn 2
 * (turn 1's prompt and output plus more): with a pin, turn 2 finds all of turn 1's full blocks;
 * without sessions they were evicted. Outputs equal the uncached ones either way. */
typedef struct turns {
    sp_model *m;
    sp_vocab *v;
} turns;

static sp_request *run_one(sp_engine *e, turns *t, const int32_t *prompt, int n, uint64_t session,
                           int32_t *out, int *n_out) {
    sp_req_params p = sp_req_params_default();
    p.max_tokens = 16;
    p.sample.temperature = 0.0f;
    p.session_id = session;
    sp_request *r;
    sp_diag d;
    assert_int_equal(sp_request_create(t->v, prompt, n, &p, &r, &d), SP_OK);
    assert_int_equal(sp_engine_submit(e, r, &d), SP_OK);
    while (sp_engine_busy(e))
        sp_engine_step(e);
    for (sp_request *q = sp_engine_take_ready(e); q;) {
        sp_request *next = sp_request_next_ready(q);
        sp_request_release(q);
        q = next;
    }
    sp_req_cursor cur = {0};
    sp_req_token toks[64];
    sp_req_read rd;
    assert_int_equal(sp_request_read(r, &cur, toks, 64, NULL, NULL, NULL, NULL, NULL, &rd), SP_OK);
    for (int i = 0; i < rd.n_new_tokens; i++)
        out[i] = toks[i].id;
    *n_out = rd.n_new_tokens;
    return r;
}

static int32_t session_scenario(turns *t, bool sessions, int32_t *turn2_out, int *n2) {
    sp_engine_opts o = sp_engine_opts_default();
    o.kv_tokens = 24 * 16;
    o.n_threads = 1;
    o.session_ttl_ms = sessions ? 60000 : 0;
    sp_engine *e;
    sp_diag d;
    assert_int_equal(sp_engine_create(t->m, t->v, &o, &e, &d), SP_OK);
    int32_t p1[80], gen[64], other[120], p2[200];
    int n_gen;
    p1[0] = 1;
    for (int i = 1; i < 80; i++)
        p1[i] = 3 + (i * 37) % 500;
    sp_request *r1 = run_one(e, t, p1, 80, sessions ? 77 : 0, gen, &n_gen);
    sp_request_release(r1);
    // Other traffic: 6 distinct prompts of 120 tokens through a 24-block cache.
    for (int k = 0; k < 6; k++) {
        other[0] = 1;
        for (int i = 1; i < 120; i++)
            other[i] = 3 + (i * (53 + k)) % 500;
        int32_t junk[64];
        int nj;
        sp_request_release(run_one(e, t, other, 120, 0, junk, &nj));
    }
    int n2p = 0;
    memcpy(p2, p1, sizeof p1);
    n2p = 80;
    memcpy(p2 + n2p, gen, (size_t)n_gen * sizeof *gen);
    n2p += n_gen;
    for (int i = 0; i < 20; i++)
        p2[n2p++] = 3 + (i * 11) % 500;
    sp_request *r2 = run_one(e, t, p2, n2p, sessions ? 77 : 0, turn2_out, n2);
    sp_req_stats st;
    sp_request_stats(r2, &st);
    sp_request_release(r2);
    sp_engine_stats es;
    sp_engine_stats_get(e, &es);
    if (sessions) {
        assert_int_equal(es.session_pins_hit, 1);
        assert_true(es.session_pins >= 1);
    }
    sp_engine_destroy(e);
    return st.n_cached;
}

static void test_engine_turns(void **state) {
    (void)state;
    turns t;
    char *path = sp_test_shared("models/stories260K.gguf");
    sp_diag d;
    assert_int_equal(sp_model_load(path, &t.m, &d), SP_OK);
    assert_int_equal(sp_vocab_load(t.m->gguf, &t.v, &d), SP_OK);
    free(path);
    int32_t a[64], b[64];
    int na, nb;
    int32_t cached_pinned = session_scenario(&t, true, a, &na);
    int32_t cached_lru = session_scenario(&t, false, b, &nb);
    print_message("turn 2 cached tokens: %d with a pin, %d with LRU only\n", cached_pinned,
                  cached_lru);
    // Turn 1 computed its 80 prompt tokens and 15 of its 16 generated ones (the last was never
    // fed back): 95 positions, so 5 full blocks of 16.
    assert_int_equal(cached_pinned, (80 + 16 - 1) / 16 * 16);
    assert_int_equal(cached_lru, 0);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, (size_t)na * sizeof *a);
    sp_vocab_destroy(t.v);
    sp_model_destroy(t.m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ttl_choice),
        cmocka_unit_test(test_tool_ttl),
        cmocka_unit_test(test_pin_cost),
        cmocka_unit_test(test_pins),
        cmocka_unit_test(test_engine_turns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

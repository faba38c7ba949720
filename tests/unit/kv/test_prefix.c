/* The prefix index: lookups of shared prefixes of every length (only full blocks match),
 * salts, commits of duplicate and forked blocks, and verification of forced hash collisions
 * (a weak-hash pool), which must never share a block with different tokens, parent or salt. */
#include "testutil.h"

#include <string.h>

#include "kv/internal.h"
#include "kv/pool.h"
#include "kv/prefix.h"
#include "kv/table.h"

enum { BS = 4, NB = 32 };

typedef struct fixture {
    sp_kvbuf kv;
    sp_kv_pool *pool;
    sp_kv_seq seq[4];
} fixture;

static void setup(fixture *f, int32_t hash_bits) {
    sp_hparams hp = {.n_layer = 1, .n_head_kv = 1, .head_dim = 2};
    assert_int_equal(sp_kvbuf_init(&f->kv, &hp, SP_DTYPE_F16, BS, NB), SP_OK);
    sp_kv_pool_opts o = sp_kv_pool_opts_default();
    o.hash_bits = hash_bits;
    o.hash_seed = 12345;
    assert_int_equal(sp_kv_pool_create(&f->kv, &o, &f->pool), SP_OK);
    for (int i = 0; i < 4; i++)
        assert_int_equal(sp_kv_seq_init(&f->seq[i], f->pool, 64), SP_OK);
}

static void teardown(fixture *f) {
    for (int i = 0; i < 4; i++) {
        sp_kv_seq_release(f->pool, &f->seq[i]);
        sp_kv_seq_deinit(&f->seq[i]);
    }
    sp_kv_stats s;
    sp_kv_pool_stats(f->pool, &s);
    assert_int_equal(s.n_used, 0);
    assert_true(sp_kv_pool_check(f->pool));
    sp_kv_pool_destroy(f->pool);
    sp_kvbuf_deinit(&f->kv);
}

static sp_kv_stats stats(const sp_kv_pool *p) {
    sp_kv_stats s;
    sp_kv_pool_stats(p, &s);
    assert_true(sp_kv_pool_check(p));
    return s;
}

/* lookup + reserve the rest + commit everything: a request that computed its prompt. */
static void compute(sp_kv_pool *p, sp_kv_seq *s, uint64_t salt, const int32_t *t, int32_t n) {
    int32_t m = sp_kv_seq_lookup(p, s, salt, t, n);
    assert_int_equal(sp_kv_seq_reserve(p, s, n - m), SP_OK);
    sp_kv_seq_commit(p, s, t, n);
    assert_true(sp_kv_pool_check(p));
}

static void test_every_prefix_length(void **state) {
    (void)state;
    fixture f;
    setup(&f, 0);
    enum { N = 5 * BS };
    int32_t t[N];
    for (int i = 0; i < N; i++)
        t[i] = 100 + i * 3;
    sp_kv_seq *a = &f.seq[0], *q = &f.seq[1];
    compute(f.pool, a, 7, t, N);
    assert_int_equal(stats(f.pool).n_indexed, 5);
    int32_t blocks[5];
    memcpy(blocks, a->blocks, sizeof blocks);

    for (int held = 1; held >= 0; held--) { // a still using its blocks, then only cached
        if (!held) {
            sp_kv_seq_release(f.pool, a);
            assert_int_equal(stats(f.pool).n_cached, 5);
        }
        for (int32_t len = 0; len <= N; len++) {
            for (int diverge = 0; diverge < 2; diverge++) {
                int32_t qt[N + 7];
                memcpy(qt, t, (size_t)len * sizeof *qt);
                int32_t n = len;
                if (diverge) // a different token at position len, then more
                    for (int i = 0; i < 7; i++)
                        qt[n++] = 5000 + i;
                int32_t want = len / BS * BS;
                assert_int_equal(sp_kv_prefix_match(f.pool, 7, qt, n), want);
                uint64_t hits = stats(f.pool).hit_blocks;
                assert_int_equal(sp_kv_seq_lookup(f.pool, q, 7, qt, n), want);
                assert_int_equal(q->n_tokens, want);
                assert_int_equal(q->n_blocks, want / BS);
                assert_memory_equal(q->blocks, blocks, (size_t)(want / BS) * sizeof(int32_t));
                for (int32_t b = 0; b < want / BS; b++)
                    assert_int_equal(sp_kv_pool_ref(f.pool, blocks[b]), held + 1);
                sp_kv_stats s = stats(f.pool);
                assert_int_equal(s.hit_blocks - hits, (uint64_t)(want / BS));
                assert_int_equal(s.n_used, held ? 5 : want / BS);
                // The matched sequence continues like a computed one; committing it adds
                // nothing when it is a prefix of a (kept away from the index otherwise, so
                // that cached continuations cannot push a's blocks out).
                assert_int_equal(sp_kv_seq_reserve(f.pool, q, n - want), SP_OK);
                if (!diverge) {
                    sp_kv_seq_commit(f.pool, q, qt, n);
                    assert_int_equal(stats(f.pool).n_indexed, 5);
                }
                assert_true(sp_kv_pool_check(f.pool));
                sp_kv_seq_release(f.pool, q);
            }
        }
    }
    // The whole prompt is cached; passing n - 1 leaves its last block to evaluate.
    assert_int_equal(sp_kv_seq_lookup(f.pool, q, 7, t, N - 1), N - BS);
    sp_kv_seq_release(f.pool, q);
    // Another salt shares nothing.
    assert_int_equal(sp_kv_prefix_match(f.pool, 8, t, N), 0);
    assert_int_equal(sp_kv_seq_lookup(f.pool, q, 8, t, N), 0);
    sp_kv_seq_release(f.pool, q);
    // A table smaller than the match stops at its capacity.
    sp_kv_seq small;
    assert_int_equal(sp_kv_seq_init(&small, f.pool, 2 * BS - 1), SP_OK);
    assert_int_equal(sp_kv_seq_lookup(f.pool, &small, 7, t, N), 2 * BS);
    sp_kv_seq_release(f.pool, &small);
    sp_kv_seq_deinit(&small);
    teardown(&f);
}

static void test_commit_partial(void **state) {
    (void)state;
    fixture f;
    setup(&f, 0);
    const int32_t t[11] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
    sp_kv_seq *a = &f.seq[0];
    assert_int_equal(sp_kv_seq_lookup(f.pool, a, 0, t, 11), 0);
    assert_int_equal(sp_kv_seq_reserve(f.pool, a, 11), SP_OK);
    sp_kv_seq_commit(f.pool, a, t, 3); // no full block known yet
    assert_int_equal(stats(f.pool).n_indexed, 0);
    sp_kv_seq_commit(f.pool, a, t, 7);
    assert_int_equal(stats(f.pool).n_indexed, 1);
    assert_int_equal(sp_kv_prefix_match(f.pool, 0, t, 11), 4);
    sp_kv_seq_commit(f.pool, a, t, 11);
    assert_int_equal(stats(f.pool).n_indexed, 2);
    assert_int_equal(sp_kv_prefix_match(f.pool, 0, t, 11), 8);
    sp_kv_seq_commit(f.pool, a, t, 11); // idempotent
    assert_int_equal(stats(f.pool).n_indexed, 2);
    // The partial last block never enters the index: releasing frees it.
    sp_kv_seq_release(f.pool, a);
    sp_kv_stats s = stats(f.pool);
    assert_int_equal(s.n_cached, 2);
    assert_int_equal(s.n_free, NB - 2);
    teardown(&f);
}

static void test_duplicates_and_forks(void **state) {
    (void)state;
    fixture f;
    setup(&f, 0);
    int32_t ta[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 9};
    int32_t tb[12] = {1, 2, 3, 4, 5, 6, 7, 8, 7, 7, 7, 7};
    sp_kv_seq *a = &f.seq[0], *b = &f.seq[1];
    // Both miss the index (computed side by side), a commits first.
    assert_int_equal(sp_kv_seq_lookup(f.pool, a, 0, ta, 12), 0);
    assert_int_equal(sp_kv_seq_lookup(f.pool, b, 0, tb, 12), 0);
    assert_int_equal(sp_kv_seq_reserve(f.pool, a, 12), SP_OK);
    assert_int_equal(sp_kv_seq_reserve(f.pool, b, 12), SP_OK);
    sp_kv_seq_commit(f.pool, a, ta, 12);
    sp_kv_seq_commit(f.pool, b, tb, 12);
    // b's copies of the shared prefix stay private, and so does what follows them.
    assert_int_equal(stats(f.pool).n_indexed, 3);
    assert_int_equal(sp_kv_prefix_match(f.pool, 0, tb, 12), 8);
    sp_kv_seq_release(f.pool, b);
    assert_int_equal(stats(f.pool).n_cached, 0);
    assert_int_equal(stats(f.pool).n_free, NB - 3);

    // A fork made before the commit shares the very blocks its source commits.
    sp_kv_seq *c = &f.seq[2], *d = &f.seq[3];
    int32_t tc[12] = {50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61};
    assert_int_equal(sp_kv_seq_lookup(f.pool, c, 0, tc, 8), 0);
    assert_int_equal(sp_kv_seq_reserve(f.pool, c, 8), SP_OK);
    assert_int_equal(sp_kv_seq_fork(f.pool, c, d), SP_OK);
    sp_kv_seq_commit(f.pool, c, tc, 8);
    sp_kv_seq_commit(f.pool, d, tc, 8);
    assert_int_equal(stats(f.pool).n_indexed, 5);
    assert_int_equal(sp_kv_seq_reserve(f.pool, d, 4), SP_OK);
    sp_kv_seq_commit(f.pool, d, tc, 12); // d's own continuation extends the chain
    assert_int_equal(stats(f.pool).n_indexed, 6);
    assert_int_equal(sp_kv_prefix_match(f.pool, 0, tc, 12), 12);
    teardown(&f);
}

/* Finds a block of tokens (differing from x) with the same chain hash as x. */
static void find_colliding(const sp_kv_pool *p, uint64_t parent, uint64_t salt, const int32_t *x,
                           int32_t *y) {
    uint64_t hx = sp__kv_hash(p, parent, salt, x);
    for (int32_t k = 1; k < 1000; k++) {
        memcpy(y, x, BS * sizeof *y);
        y[BS - 1] = x[BS - 1] + k;
        if (sp__kv_hash(p, parent, salt, y) == hx)
            return;
    }
    fail_msg("no collision found");
}

static void test_hash_sensitivity(void **state) {
    (void)state;
    fixture f;
    setup(&f, 0);
    const int32_t x[BS] = {10, 20, 30, 40};
    uint64_t h = sp__kv_hash(f.pool, SP__KV_ROOT_HASH, 0, x);
    assert_int_not_equal(h, sp__kv_hash(f.pool, SP__KV_ROOT_HASH, 1, x));
    assert_int_not_equal(h, sp__kv_hash(f.pool, h, 0, x));
    for (int i = 0; i < BS; i++) {
        int32_t y[BS];
        memcpy(y, x, sizeof y);
        y[i]++;
        assert_int_not_equal(h, sp__kv_hash(f.pool, SP__KV_ROOT_HASH, 0, y));
    }
    const int32_t swapped[BS] = {20, 10, 30, 40};
    assert_int_not_equal(h, sp__kv_hash(f.pool, SP__KV_ROOT_HASH, 0, swapped));
    teardown(&f);
}

static void test_forced_collisions(void **state) {
    (void)state;
    fixture f;
    setup(&f, 1); // 1-bit hashes: half of all blocks collide
    const int32_t x[BS] = {10, 20, 30, 40};
    int32_t y[BS], z[BS];
    find_colliding(f.pool, SP__KV_ROOT_HASH, 0, x, y);
    find_colliding(f.pool, SP__KV_ROOT_HASH, 0, y, z);
    assert_memory_not_equal(x, y, sizeof x);
    assert_memory_not_equal(z, x, sizeof x);
    assert_memory_not_equal(z, y, sizeof x);
    sp_kv_seq *a = &f.seq[0], *b = &f.seq[1], *q = &f.seq[2];

    // Same hash, different tokens: no match.
    compute(f.pool, a, 0, x, BS);
    assert_int_equal(sp_kv_prefix_match(f.pool, 0, y, BS), 0);
    assert_int_equal(sp_kv_seq_lookup(f.pool, q, 0, y, BS), 0);
    sp_kv_seq_release(f.pool, q);
    // Both colliding blocks can be indexed, and each lookup finds its own.
    compute(f.pool, b, 0, y, BS);
    assert_int_equal(stats(f.pool).n_indexed, 2);
    assert_int_equal(sp_kv_seq_lookup(f.pool, q, 0, x, BS), BS);
    assert_int_equal(q->blocks[0], a->blocks[0]);
    sp_kv_seq_release(f.pool, q);
    assert_int_equal(sp_kv_seq_lookup(f.pool, q, 0, y, BS), BS);
    assert_int_equal(q->blocks[0], b->blocks[0]);
    sp_kv_seq_release(f.pool, q);
    assert_int_equal(sp_kv_prefix_match(f.pool, 0, z, BS), 0);

    // Same tokens and same chain hash after a different (colliding) parent: the stored parent
    // tells them apart.
    int32_t xc[2 * BS] = {10, 20, 30, 40, 1, 2, 3, 4}, yc[2 * BS];
    memcpy(yc, y, sizeof y);
    memcpy(yc + BS, xc + BS, BS * sizeof *yc);
    uint64_t hx = sp__kv_hash(f.pool, SP__KV_ROOT_HASH, 0, x);
    uint64_t hy = sp__kv_hash(f.pool, SP__KV_ROOT_HASH, 0, y);
    assert_int_equal(sp__kv_hash(f.pool, hx, 0, xc + BS), sp__kv_hash(f.pool, hy, 0, yc + BS));
    sp_kv_seq_release(f.pool, a);
    compute(f.pool, a, 0, xc, 2 * BS); // x's block reused, its continuation indexed
    assert_int_equal(stats(f.pool).n_indexed, 3);
    assert_int_equal(sp_kv_prefix_match(f.pool, 0, xc, 2 * BS), 2 * BS);
    assert_int_equal(sp_kv_prefix_match(f.pool, 0, yc, 2 * BS), BS);
    assert_int_equal(sp_kv_seq_lookup(f.pool, q, 0, yc, 2 * BS), BS);
    assert_int_equal(q->blocks[0], b->blocks[0]);
    sp_kv_seq_release(f.pool, q);

    // Same tokens, colliding salts: no match.
    uint64_t s2 = 1;
    while (sp__kv_hash(f.pool, SP__KV_ROOT_HASH, s2, x) != hx)
        s2++;
    assert_int_equal(sp_kv_prefix_match(f.pool, s2, x, BS), 0);
    assert_int_equal(sp_kv_seq_lookup(f.pool, q, s2, x, BS), 0);
    sp_kv_seq_release(f.pool, q);

    // Eviction removes colliding entries from the shared probe run without losing the others.
    sp_kv_seq_release(f.pool, a);
    sp_kv_seq_release(f.pool, b);
    for (int i = 0; i < 8; i++) {
        int32_t t[BS] = {200 + i, 1, 2, 3};
        compute(f.pool, q, 0, t, BS);
        sp_kv_seq_release(f.pool, q);
    }
    assert_int_equal(stats(f.pool).n_cached, 11);
    int32_t raw[NB];
    for (int i = 0; i < NB; i++) {
        assert_int_equal(sp_kv_pool_alloc(f.pool, &raw[i]), SP_OK);
        assert_true(sp_kv_pool_check(f.pool)); // every indexed block still found
    }
    assert_int_equal(stats(f.pool).evictions, 11);
    for (int i = 0; i < NB; i++)
        sp_kv_pool_release(f.pool, raw[i]);
    teardown(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_prefix_length),  cmocka_unit_test(test_commit_partial),
        cmocka_unit_test(test_duplicates_and_forks), cmocka_unit_test(test_hash_sensitivity),
        cmocka_unit_test(test_forced_collisions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

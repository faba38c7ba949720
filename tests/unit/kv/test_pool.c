/* Block pool and block tables: allocation to exhaustion and back, reference counts through
 * fork and release, copy-on-write (checked on the kvbuf bytes), caching off, and the order in
 * which cached blocks are evicted. */
#include "testutil.h"

#include <string.h>

#include "kv/pool.h"
#include "kv/prefix.h"
#include "kv/table.h"

enum { BS = 4 };

/* A tiny model shape: 2 layers, 2 KV heads of dimension 4: 2*2*2*BS*4 = 128 elements per block. */
static void make_kv(sp_kvbuf *kv, sp_dtype type, int32_t n_blocks) {
    sp_hparams hp = {.n_layer = 2, .n_head_kv = 2, .head_dim = 4};
    assert_int_equal(sp_kvbuf_init(kv, &hp, type, BS, n_blocks), SP_OK);
}

static sp_kv_pool *make_pool(sp_kvbuf *kv, bool caching) {
    sp_kv_pool_opts o = sp_kv_pool_opts_default();
    o.caching = caching;
    sp_kv_pool *p = NULL;
    assert_int_equal(sp_kv_pool_create(kv, &o, &p), SP_OK);
    assert_true(sp_kv_pool_check(p));
    return p;
}

/* Field by field: the structs have padding. */
static void assert_same_stats(const sp_kv_stats *a, const sp_kv_stats *b) {
    assert_int_equal(a->n_blocks, b->n_blocks);
    assert_int_equal(a->n_free, b->n_free);
    assert_int_equal(a->n_used, b->n_used);
    assert_int_equal(a->n_cached, b->n_cached);
    assert_int_equal(a->n_indexed, b->n_indexed);
    assert_int_equal(a->allocations, b->allocations);
    assert_int_equal(a->evictions, b->evictions);
    assert_int_equal(a->hit_blocks, b->hit_blocks);
    assert_int_equal(a->copies, b->copies);
}

static void assert_same_seq(const sp_kv_seq *a, const sp_kv_seq *b) {
    assert_ptr_equal(a->blocks, b->blocks);
    assert_int_equal(a->n_blocks, b->n_blocks);
    assert_int_equal(a->cap_blocks, b->cap_blocks);
    assert_int_equal(a->n_tokens, b->n_tokens);
    assert_int_equal(a->n_hashed, b->n_hashed);
    assert_int_equal(a->chain_indexed, b->chain_indexed);
    assert_int_equal(a->hash, b->hash);
    assert_int_equal(a->salt, b->salt);
}

static sp_kv_stats stats(const sp_kv_pool *p) {
    sp_kv_stats s;
    sp_kv_pool_stats(p, &s);
    assert_int_equal(s.n_free + s.n_used + s.n_cached, s.n_blocks);
    assert_true(sp_kv_pool_check(p));
    return s;
}

static void test_create_invalid(void **state) {
    (void)state;
    sp_kvbuf kv;
    make_kv(&kv, SP_DTYPE_F32, 4);
    sp_kv_pool *p = (sp_kv_pool *)&kv; // sentinel: must stay untouched on failure
    sp_kv_pool_opts o = sp_kv_pool_opts_default();
    o.hash_bits = 65;
    assert_int_equal(sp_kv_pool_create(&kv, &o, &p), SP_ERR_INVALID);
    o.hash_bits = -1;
    assert_int_equal(sp_kv_pool_create(&kv, &o, &p), SP_ERR_INVALID);
    assert_int_equal(sp_kv_pool_create(NULL, NULL, &p), SP_ERR_INVALID);
    assert_ptr_equal(p, (sp_kv_pool *)&kv);
    sp_kv_pool_destroy(NULL);
    sp_kvbuf_deinit(&kv);
}

static void test_alloc_until_exhaustion(void **state) {
    (void)state;
    enum { N = 8 };
    sp_kvbuf kv;
    make_kv(&kv, SP_DTYPE_F16, N);
    sp_kv_pool *p = make_pool(&kv, true);
    assert_int_equal(sp_kv_pool_block_size(p), BS);

    for (int round = 0; round < 2; round++) {
        int32_t ids[N];
        bool seen[N] = {0};
        for (int i = 0; i < N; i++) {
            assert_int_equal(sp_kv_pool_alloc(p, &ids[i]), SP_OK);
            assert_true(ids[i] >= 0 && ids[i] < N);
            assert_false(seen[ids[i]]);
            seen[ids[i]] = true;
            assert_int_equal(sp_kv_pool_ref(p, ids[i]), 1);
            sp_kv_stats s = stats(p);
            assert_int_equal(s.n_free, N - 1 - i);
            assert_int_equal(s.n_used, i + 1);
        }
        int32_t extra = -7;
        assert_int_equal(sp_kv_pool_alloc(p, &extra), SP_ERR_NOMEM);
        assert_int_equal(extra, -7);
        assert_int_equal(sp_kv_pool_n_available(p), 0);
        for (int i = 0; i < N; i++)
            sp_kv_pool_release(p, ids[i]);
        sp_kv_stats s = stats(p);
        assert_int_equal(s.n_free, N);
        assert_int_equal(s.n_used, 0);
        assert_int_equal(s.n_cached, 0);
        assert_int_equal(s.allocations, (uint64_t)N * (round + 1));
        assert_int_equal(s.evictions, 0);
    }

    // Through tables: all-or-nothing reservations.
    sp_kv_seq a, b;
    assert_int_equal(sp_kv_seq_init(&a, p, 64), SP_OK);
    assert_int_equal(sp_kv_seq_init(&b, p, 64), SP_OK);
    assert_int_equal(sp_kv_seq_lookup(p, &a, 0, NULL, 0), 0);
    assert_int_equal(sp_kv_seq_lookup(p, &b, 0, NULL, 0), 0);
    assert_int_equal(sp_kv_seq_blocks_needed(p, &a, 5 * BS + 1), 6);
    assert_int_equal(sp_kv_seq_reserve(p, &a, 5 * BS + 1), SP_OK); // 6 blocks
    assert_int_equal(a.n_tokens, 5 * BS + 1);
    assert_int_equal(a.n_blocks, 6);
    assert_int_equal(sp_kv_seq_blocks_needed(p, &a, BS - 1), 0); // fits the last block
    assert_int_equal(sp_kv_seq_blocks_needed(p, &a, BS), 1);
    assert_int_equal(sp_kv_seq_reserve(p, &b, BS), SP_OK); // 7 blocks used
    sp_kv_seq before = a;
    int32_t table[16];
    memcpy(table, a.blocks, sizeof table);
    sp_kv_stats s0 = stats(p);
    // Two more blocks needed, one available.
    assert_int_equal(sp_kv_seq_reserve(p, &a, 2 * BS), SP_ERR_NOMEM);
    sp_kv_stats s1 = stats(p);
    assert_same_stats(&s0, &s1);
    assert_same_seq(&before, &a);
    assert_memory_equal(table, a.blocks, sizeof table);
    assert_int_equal(sp_kv_seq_reserve(p, &a, -1), SP_ERR_INVALID);
    assert_int_equal(sp_kv_seq_reserve(p, &a, 0), SP_OK);
    // Past the table's capacity (64 positions).
    assert_int_equal(sp_kv_seq_reserve(p, &b, 64 - BS + 1), SP_ERR_LIMIT);
    assert_int_equal(b.n_tokens, BS);
    assert_int_equal(sp_kv_seq_reserve(p, &a, 2 * BS - 1), SP_OK); // exactly one more block
    assert_int_equal(stats(p).n_free, 0);
    sp_kv_seq_release(p, &a);
    sp_kv_seq_release(p, &b);
    assert_int_equal(a.n_tokens, 0);
    assert_int_equal(a.n_blocks, 0);
    sp_kv_stats s = stats(p);
    assert_int_equal(s.n_free, N);
    assert_int_equal(s.n_used, 0);
    assert_int_equal(s.n_cached, 0); // nothing was committed
    sp_kv_seq_deinit(&a);
    sp_kv_seq_deinit(&b);
    sp_kv_seq_deinit(NULL);
    sp_kv_pool_destroy(p);
    sp_kvbuf_deinit(&kv);
}

static void test_fork_refcounts(void **state) {
    (void)state;
    sp_kvbuf kv;
    make_kv(&kv, SP_DTYPE_F16, 16);
    sp_kv_pool *p = make_pool(&kv, true);
    sp_kv_seq a, b, c, small;
    assert_int_equal(sp_kv_seq_init(&a, p, 32), SP_OK);
    assert_int_equal(sp_kv_seq_init(&b, p, 32), SP_OK);
    assert_int_equal(sp_kv_seq_init(&c, p, 32), SP_OK);
    assert_int_equal(sp_kv_seq_init(&small, p, BS), SP_OK);
    assert_int_equal(sp_kv_seq_lookup(p, &a, 5, NULL, 0), 0);
    assert_int_equal(sp_kv_seq_reserve(p, &a, 2 * BS + 2), SP_OK); // 3 blocks
    assert_int_equal(sp_kv_seq_fork(p, &a, &small), SP_ERR_LIMIT);
    assert_int_equal(small.n_blocks, 0);
    assert_int_equal(sp_kv_seq_fork(p, &a, &b), SP_OK);
    assert_int_equal(sp_kv_seq_fork(p, &b, &c), SP_OK);
    assert_int_equal(c.n_tokens, a.n_tokens);
    assert_int_equal(c.salt, 5);
    assert_memory_equal(a.blocks, c.blocks, 3 * sizeof(int32_t));
    for (int i = 0; i < 3; i++)
        assert_int_equal(sp_kv_pool_ref(p, a.blocks[i]), 3);
    assert_int_equal(stats(p).n_used, 3);
    sp_kv_seq_release(p, &b);
    for (int i = 0; i < 3; i++)
        assert_int_equal(sp_kv_pool_ref(p, a.blocks[i]), 2);
    // c grows: its shared partial tail is copied, then a new block is appended.
    assert_int_equal(sp_kv_seq_blocks_needed(p, &c, 3), 2);
    assert_int_equal(sp_kv_seq_reserve(p, &c, 3), SP_OK);
    assert_int_equal(sp_kv_pool_ref(p, a.blocks[2]), 1);
    assert_int_not_equal(c.blocks[2], a.blocks[2]);
    assert_int_equal(sp_kv_pool_ref(p, c.blocks[0]), 2);
    assert_int_equal(sp_kv_pool_ref(p, c.blocks[3]), 1);
    assert_int_equal(stats(p).n_used, 5);
    sp_kv_seq_release(p, &a);
    assert_int_equal(sp_kv_pool_ref(p, c.blocks[0]), 1);
    assert_int_equal(stats(p).n_used, 4);
    sp_kv_seq_release(p, &c);
    sp_kv_stats s = stats(p);
    assert_int_equal(s.n_free, 16);
    assert_int_equal(s.copies, 1);
    sp_kv_seq_deinit(&a);
    sp_kv_seq_deinit(&b);
    sp_kv_seq_deinit(&c);
    sp_kv_seq_deinit(&small);
    sp_kv_pool_destroy(p);
    sp_kvbuf_deinit(&kv);
}

/* Truncation gives back the blocks that hold only dropped positions (rejected drafts), keeps
 * the partly used last block, and the sequence grows again from there. */
static void test_truncate(void **state) {
    (void)state;
    sp_kvbuf kv;
    make_kv(&kv, SP_DTYPE_F16, 8);
    sp_kv_pool *p = make_pool(&kv, true);
    sp_kv_seq a;
    assert_int_equal(sp_kv_seq_init(&a, p, 32), SP_OK);
    assert_int_equal(sp_kv_seq_lookup(p, &a, 1, NULL, 0), 0);
    assert_int_equal(sp_kv_seq_reserve(p, &a, 2 * BS + 3), SP_OK); // 3 blocks
    const int32_t first = a.blocks[0], second = a.blocks[1];
    sp_kv_seq_truncate(p, &a, BS + 1);
    assert_int_equal(a.n_tokens, BS + 1);
    assert_int_equal(a.n_blocks, 2);
    assert_int_equal(stats(p).n_used, 2);
    assert_int_equal(stats(p).n_free, 6);
    sp_kv_seq_truncate(p, &a, BS + 1); // nothing to drop
    assert_int_equal(a.n_blocks, 2);
    sp_kv_seq_truncate(p, &a, BS);
    assert_int_equal(a.n_blocks, 1);
    assert_int_equal(a.blocks[0], first);
    assert_int_equal(stats(p).n_used, 1);
    assert_int_equal(sp_kv_seq_reserve(p, &a, 2), SP_OK);
    assert_int_equal(a.n_blocks, 2);
    assert_int_equal(a.n_tokens, BS + 2);
    (void)second;
    sp_kv_seq_release(p, &a);
    assert_int_equal(stats(p).n_free, 8);
    sp_kv_seq_deinit(&a);
    sp_kv_pool_destroy(p);
    sp_kvbuf_deinit(&kv);
}

/* Fills a whole block with bytes that identify (block, tag, offset). */
static void fill_block(sp_kvbuf *kv, int32_t block, uint8_t tag) {
    uint8_t *d = kv->data + (size_t)block * kv->block_bytes;
    for (size_t i = 0; i < kv->block_bytes; i++)
        d[i] = (uint8_t)(tag * 31 + i * 7 + (i >> 8));
}

static const uint8_t *block_bytes(const sp_kvbuf *kv, int32_t block) {
    return kv->data + (size_t)block * kv->block_bytes;
}

/* Writes a value into every layer, K/V and head of one slot, as a forward pass would. */
static void write_slot(sp_kvbuf *kv, int32_t block, int32_t slot, float v) {
    for (int32_t l = 0; l < kv->n_layer; l++)
        for (int k = 0; k < 2; k++)
            for (int32_t h = 0; h < kv->n_head_kv; h++) {
                float *x = (float *)sp_kvbuf_head(kv, block, l, k, h) + slot * kv->head_dim;
                for (int32_t d = 0; d < kv->head_dim; d++)
                    x[d] = v;
            }
}

static void test_copy_on_write(void **state) {
    (void)state;
    sp_kvbuf kv, twin;
    make_kv(&kv, SP_DTYPE_F32, 8);
    make_kv(&twin, SP_DTYPE_F16, 8); // a draft model's KV, indexed by the same blocks
    kv.twin = &twin;
    sp_kv_pool *p = make_pool(&kv, true);
    sp_kv_seq a, b;
    assert_int_equal(sp_kv_seq_init(&a, p, 32), SP_OK);
    assert_int_equal(sp_kv_seq_init(&b, p, 32), SP_OK);
    assert_int_equal(sp_kv_seq_lookup(p, &a, 0, NULL, 0), 0);
    assert_int_equal(sp_kv_seq_reserve(p, &a, BS + 2), SP_OK);
    fill_block(&kv, a.blocks[0], 1);
    fill_block(&kv, a.blocks[1], 2);
    for (int32_t i = 0; i < 8; i++)
        fill_block(&twin, i, (uint8_t)(50 + i));
    uint8_t orig[2][512];
    assert_int_equal(kv.block_bytes, 512); // F32
    memcpy(orig[0], block_bytes(&kv, a.blocks[0]), 512);
    memcpy(orig[1], block_bytes(&kv, a.blocks[1]), 512);
    // Every other block holds different bytes, so a copy from the wrong block would show.
    for (int32_t i = 2; i < 8; i++)
        fill_block(&kv, i, (uint8_t)(10 + i));

    assert_int_equal(sp_kv_seq_fork(p, &a, &b), SP_OK);
    assert_int_equal(sp_kv_seq_blocks_needed(p, &b, 1), 1); // the copy, no new block
    assert_int_equal(sp_kv_seq_reserve(p, &b, 1), SP_OK);
    assert_int_equal(b.blocks[0], a.blocks[0]); // full blocks stay shared
    assert_int_not_equal(b.blocks[1], a.blocks[1]);
    assert_memory_equal(block_bytes(&kv, b.blocks[1]), orig[1], 512);
    assert_memory_equal(block_bytes(&twin, b.blocks[1]), block_bytes(&twin, a.blocks[1]),
                        twin.block_bytes); // the twin's block is copied with it
    write_slot(&kv, b.blocks[1], 2, 42.0f); // b's position BS + 2
    // a's blocks are untouched.
    assert_memory_equal(block_bytes(&kv, a.blocks[0]), orig[0], 512);
    assert_memory_equal(block_bytes(&kv, a.blocks[1]), orig[1], 512);
    assert_memory_not_equal(block_bytes(&kv, b.blocks[1]), orig[1], 512);
    assert_int_equal(stats(p).copies, 1);

    // a is now the sole holder of its tail: it writes in place.
    int32_t tail = a.blocks[1];
    assert_int_equal(sp_kv_pool_ref(p, tail), 1);
    assert_int_equal(sp_kv_seq_blocks_needed(p, &a, 1), 0);
    assert_int_equal(sp_kv_seq_reserve(p, &a, 1), SP_OK);
    assert_int_equal(a.blocks[1], tail);
    assert_int_equal(stats(p).copies, 1);

    // A full shared tail is never copied: new positions go to a new block.
    sp_kv_seq_release(p, &b);
    assert_int_equal(sp_kv_seq_reserve(p, &a, 1), SP_OK); // a: 2 full blocks
    assert_int_equal(sp_kv_seq_fork(p, &a, &b), SP_OK);
    assert_int_equal(sp_kv_seq_blocks_needed(p, &b, 1), 1);
    assert_int_equal(sp_kv_seq_reserve(p, &b, 1), SP_OK);
    assert_int_equal(b.blocks[1], a.blocks[1]);
    assert_int_equal(b.n_blocks, 3);
    assert_int_equal(stats(p).copies, 1);

    sp_kv_seq_release(p, &a);
    sp_kv_seq_release(p, &b);
    assert_int_equal(stats(p).n_free, 8);
    sp_kv_seq_deinit(&a);
    sp_kv_seq_deinit(&b);
    sp_kv_pool_destroy(p);
    sp_kvbuf_deinit(&kv);
    sp_kvbuf_deinit(&twin);
}

/* Starts a sequence on tokens[n], claims and "computes" them, commits, and releases it. */
static void run_and_release(sp_kv_pool *p, sp_kv_seq *s, const int32_t *tokens, int32_t n) {
    int32_t m = sp_kv_seq_lookup(p, s, 0, tokens, n);
    assert_int_equal(sp_kv_seq_reserve(p, s, n - m), SP_OK);
    sp_kv_seq_commit(p, s, tokens, n);
    sp_kv_seq_release(p, s);
}

static void test_caching_off(void **state) {
    (void)state;
    sp_kvbuf kv;
    make_kv(&kv, SP_DTYPE_F16, 8);
    sp_kv_pool *p = make_pool(&kv, false);
    assert_false(sp_kv_pool_caching(p));
    const int32_t t[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    sp_kv_seq a;
    assert_int_equal(sp_kv_seq_init(&a, p, 32), SP_OK);
    run_and_release(p, &a, t, 12);
    sp_kv_stats s = stats(p);
    assert_int_equal(s.n_free, 8);
    assert_int_equal(s.n_cached, 0);
    assert_int_equal(s.n_indexed, 0);
    assert_int_equal(sp_kv_prefix_match(p, 0, t, 12), 0);
    assert_int_equal(sp_kv_seq_lookup(p, &a, 0, t, 12), 0);

    // On: the same run leaves three cached blocks that a lookup finds.
    sp_kv_pool_set_caching(p, true);
    run_and_release(p, &a, t, 12);
    s = stats(p);
    assert_int_equal(s.n_cached, 3);
    assert_int_equal(s.n_free, 5);
    assert_int_equal(sp_kv_prefix_match(p, 0, t, 12), 12);
    // Keep the first two in use, then turn caching off: the cached third one is evicted.
    assert_int_equal(sp_kv_seq_lookup(p, &a, 0, t, 8), 8);
    sp_kv_pool_set_caching(p, false);
    s = stats(p);
    assert_int_equal(s.n_cached, 0);
    assert_int_equal(s.n_used, 2);
    assert_int_equal(s.n_indexed, 2);
    assert_int_equal(s.evictions, 1);
    assert_int_equal(sp_kv_prefix_match(p, 0, t, 12), 0);
    // Released while off: straight to the free list, out of the index.
    sp_kv_seq_release(p, &a);
    s = stats(p);
    assert_int_equal(s.n_free, 8);
    assert_int_equal(s.n_indexed, 0);
    sp_kv_pool_set_caching(p, true);
    assert_int_equal(sp_kv_prefix_match(p, 0, t, 12), 0);
    sp_kv_seq_deinit(&a);
    sp_kv_pool_destroy(p);
    sp_kvbuf_deinit(&kv);
}

/* Allocates one raw block and returns its id (it comes from the free list or an eviction). */
static int32_t grab(sp_kv_pool *p) {
    int32_t id;
    assert_int_equal(sp_kv_pool_alloc(p, &id), SP_OK);
    assert_true(sp_kv_pool_check(p));
    return id;
}

static void test_lru_eviction(void **state) {
    (void)state;
    enum { N = 8 };
    sp_kvbuf kv;
    make_kv(&kv, SP_DTYPE_F16, N);
    sp_kv_pool *p = make_pool(&kv, true);
    const int32_t ta[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    const int32_t tb[8] = {21, 22, 23, 24, 25, 26, 27, 28};
    sp_kv_seq a, b;
    assert_int_equal(sp_kv_seq_init(&a, p, 32), SP_OK);
    assert_int_equal(sp_kv_seq_init(&b, p, 32), SP_OK);

    for (int variant = 0; variant < 2; variant++) {
        int32_t A[3], B[2], raw[N];
        assert_int_equal(sp_kv_seq_lookup(p, &a, 0, ta, 12), 0);
        assert_int_equal(sp_kv_seq_reserve(p, &a, 12), SP_OK);
        sp_kv_seq_commit(p, &a, ta, 12);
        memcpy(A, a.blocks, sizeof A);
        sp_kv_seq_release(p, &a); // cached: A2, A1, A0 (the end of a chain first)
        assert_int_equal(sp_kv_seq_lookup(p, &b, 0, tb, 8), 0);
        assert_int_equal(sp_kv_seq_reserve(p, &b, 8), SP_OK);
        sp_kv_seq_commit(p, &b, tb, 8);
        memcpy(B, b.blocks, sizeof B);
        sp_kv_seq_release(p, &b); // then B1, B0
        int32_t order[5] = {A[2], A[1], A[0], B[1], B[0]};
        if (variant == 1) {
            // Using A again makes it the most recently used chain.
            assert_int_equal(sp_kv_seq_lookup(p, &a, 0, ta, 12), 12);
            assert_memory_equal(a.blocks, A, sizeof A);
            sp_kv_seq_release(p, &a);
            int32_t o1[5] = {B[1], B[0], A[2], A[1], A[0]};
            memcpy(order, o1, sizeof order);
        }
        sp_kv_stats s = stats(p);
        assert_int_equal(s.n_cached, 5);
        assert_int_equal(s.n_free, 3);
        uint64_t ev0 = s.evictions;
        // The free list goes first.
        for (int i = 0; i < 3; i++)
            raw[i] = grab(p);
        assert_int_equal(stats(p).evictions, ev0);
        // Then evictions, least recently released first and leaves before their parents: the
        // prefixes stay findable, shrinking from their ends.
        for (int i = 0; i < 5; i++) {
            raw[3 + i] = grab(p);
            assert_int_equal(raw[3 + i], order[i]);
            assert_int_equal(stats(p).evictions, ev0 + (uint64_t)i + 1);
            int32_t left_a = 0, left_b = 0;
            for (int j = i + 1; j < 5; j++) {
                for (int k = 0; k < 3; k++)
                    left_a += order[j] == A[k];
                for (int k = 0; k < 2; k++)
                    left_b += order[j] == B[k];
            }
            assert_int_equal(sp_kv_prefix_match(p, 0, ta, 12), left_a * BS);
            assert_int_equal(sp_kv_prefix_match(p, 0, tb, 8), left_b * BS);
        }
        int32_t none;
        assert_int_equal(sp_kv_pool_alloc(p, &none), SP_ERR_NOMEM);
        for (int i = 0; i < N; i++)
            sp_kv_pool_release(p, raw[i]);
        assert_int_equal(stats(p).n_free, N);
    }

    // A parent still used by a shorter request outlives a chain released in between.
    const int32_t tx[4] = {31, 32, 33, 34};
    sp_kv_seq r, x;
    assert_int_equal(sp_kv_seq_init(&r, p, 32), SP_OK);
    assert_int_equal(sp_kv_seq_init(&x, p, 32), SP_OK);
    assert_int_equal(sp_kv_seq_lookup(p, &a, 0, ta, 8), 0);
    assert_int_equal(sp_kv_seq_reserve(p, &a, 8), SP_OK);
    sp_kv_seq_commit(p, &a, ta, 8);
    int32_t P = a.blocks[0], C = a.blocks[1];
    assert_int_equal(sp_kv_seq_lookup(p, &r, 0, ta, 6), 4); // shares P only
    assert_int_equal(r.blocks[0], P);
    assert_int_equal(sp_kv_pool_ref(p, P), 2);
    assert_int_equal(sp_kv_seq_lookup(p, &x, 0, tx, 4), 0);
    assert_int_equal(sp_kv_seq_reserve(p, &x, 4), SP_OK);
    sp_kv_seq_commit(p, &x, tx, 4);
    int32_t X = x.blocks[0];
    sp_kv_seq_release(p, &a); // C cached, P still used by r
    sp_kv_seq_release(p, &x); // X cached
    sp_kv_seq_release(p, &r); // P cached
    int32_t raw[N];
    for (int i = 0; i < N - 3; i++)
        raw[i] = grab(p);
    assert_int_equal(grab(p), C);
    assert_int_equal(grab(p), X);
    assert_int_equal(grab(p), P);
    for (int i = 0; i < N - 3; i++)
        sp_kv_pool_release(p, raw[i]);
    sp_kv_pool_release(p, C);
    sp_kv_pool_release(p, X);
    sp_kv_pool_release(p, P);
    assert_int_equal(stats(p).n_free, N);

    sp_kv_seq_deinit(&a);
    sp_kv_seq_deinit(&b);
    sp_kv_seq_deinit(&r);
    sp_kv_seq_deinit(&x);
    sp_kv_pool_destroy(p);
    sp_kvbuf_deinit(&kv);
}

/* Reservations under pressure evict cached blocks, and never the ones the caller holds. */
static void test_reserve_evicts(void **state) {
    (void)state;
    enum { N = 6 };
    sp_kvbuf kv;
    make_kv(&kv, SP_DTYPE_F16, N);
    sp_kv_pool *p = make_pool(&kv, true);
    const int32_t t[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    sp_kv_seq a, b;
    assert_int_equal(sp_kv_seq_init(&a, p, 64), SP_OK);
    assert_int_equal(sp_kv_seq_init(&b, p, 64), SP_OK);
    run_and_release(p, &a, t, 16); // 4 cached, 2 free
    assert_int_equal(stats(p).n_cached, 4);
    // b takes the first two blocks of the prefix back, then needs 4 more: the free two plus
    // the two cached blocks at the end of the chain.
    assert_int_equal(sp_kv_seq_lookup(p, &b, 0, t, 9), 8);
    assert_int_equal(sp_kv_seq_reserve(p, &b, 4 * BS + 1), SP_ERR_NOMEM);
    assert_int_equal(sp_kv_seq_reserve(p, &b, 4 * BS), SP_OK);
    sp_kv_stats s = stats(p);
    assert_int_equal(s.evictions, 2);
    assert_int_equal(s.n_used, N);
    assert_int_equal(s.hit_blocks, 2);
    assert_int_equal(sp_kv_prefix_match(p, 0, t, 16), 8);
    sp_kv_seq_release(p, &b);
    assert_int_equal(stats(p).n_cached, 2);
    sp_kv_seq_deinit(&a);
    sp_kv_seq_deinit(&b);
    sp_kv_pool_destroy(p);
    sp_kvbuf_deinit(&kv);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_invalid), cmocka_unit_test(test_alloc_until_exhaustion),
        cmocka_unit_test(test_fork_refcounts), cmocka_unit_test(test_copy_on_write),
        cmocka_unit_test(test_caching_off),    cmocka_unit_test(test_lru_eviction),
        cmocka_unit_test(test_reserve_evicts),
        cmocka_unit_test(test_truncate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

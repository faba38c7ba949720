/* Randomized stress test: sequences start from prompts that share prefixes, look them up,
 * grow, fork, commit and release at random under memory pressure, with caching switched off
 * and on now and then. Every position a sequence writes gets a value derived from its salt and
 * all of its tokens so far, as real keys and values are, so reading a sequence's whole cache
 * back proves that no block was shared wrongly (prefix match, forced hash collisions), lost
 * (eviction of a used block) or overwritten (copy-on-write). After every operation: the pool's
 * own invariant check, free + used + cached = n_blocks, each block's reference count equal to
 * the references the tables hold, used = distinct blocks in tables.
 *
 * The operations must not allocate: a counting malloc (as in tests/unit/sample/test_alloc.c;
 * off under ASan, which interposes malloc itself) checks that the whole run allocates nothing
 * after the pool and the tables are created. */
#include "testutil.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kv/pool.h"
#include "kv/prefix.h"
#include "kv/table.h"

#include "alloc_count.h"

enum {
    BS = 4,         // positions per block
    NB = 40,        // blocks in the pool
    MAX_CTX = 48,   // positions per sequence (12 blocks)
    N_SLOTS = 8,    // sequences
    N_FAMILIES = 3, // prompt stems that requests share
};

typedef struct slot {
    bool active;
    sp_kv_seq seq;
    uint64_t salt;
    int32_t tokens[MAX_CTX];
    uint32_t value[MAX_CTX]; // expected cache contents per position
} slot;

typedef struct sim {
    sp_kvbuf kv;
    sp_kv_pool *pool;
    slot slots[N_SLOTS];
    int32_t family[N_FAMILIES][MAX_CTX];
    uint64_t rng;
    int32_t refs[NB]; // scratch for the reference count check
    long n_nomem, n_hits, n_forks, n_limit;
} sim;

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

static uint32_t rnd(sim *s, uint32_t n) {
    return (uint32_t)(sp_test_rand(&s->rng) % n);
}

/* What a forward pass would store at position p: a function of the salt and tokens[0..p]. */
static uint32_t kv_value(uint32_t prev, uint64_t salt, int32_t token, int32_t p) {
    uint64_t h = (uint64_t)prev * 0x9e3779b97f4a7c15ull ^ salt * 0xff51afd7ed558ccdull ^
                 (uint64_t)(uint32_t)token << 20 ^ (uint64_t)p;
    h ^= h >> 31;
    h *= 0xd6e8feb86659fd93ull;
    return (uint32_t)(h ^ h >> 32);
}

/* Writes positions [from, to) of a slot into the cache, element (layer, k/v, head, d) of the
 * position's slot getting value ^ element index. */
static void forward(sim *s, slot *sl, int32_t from, int32_t to) {
    sp_kvbuf *kv = &s->kv;
    for (int32_t p = from; p < to; p++) {
        uint32_t prev = p > 0 ? sl->value[p - 1] : 0;
        sl->value[p] = kv_value(prev, sl->salt, sl->tokens[p], p);
        int32_t blk = sl->seq.blocks[p / BS];
        assert_int_equal(sp_kv_pool_ref(s->pool, blk), 1); // only written when private
        uint32_t e = 0;
        for (int32_t l = 0; l < kv->n_layer; l++)
            for (int k = 0; k < 2; k++)
                for (int32_t h = 0; h < kv->n_head_kv; h++) {
                    uint32_t *x = (uint32_t *)sp_kvbuf_head(kv, blk, l, k, h) +
                                  (size_t)(p % BS) * (size_t)kv->head_dim;
                    for (int32_t d = 0; d < kv->head_dim; d++)
                        x[d] = sl->value[p] ^ e++;
                }
    }
}

static void check_contents(sim *s, const slot *sl) {
    sp_kvbuf *kv = &s->kv;
    assert_int_equal(sl->seq.n_blocks, (sl->seq.n_tokens + BS - 1) / BS);
    for (int32_t p = 0; p < sl->seq.n_tokens; p++) {
        uint32_t want = kv_value(p > 0 ? sl->value[p - 1] : 0, sl->salt, sl->tokens[p], p);
        assert_int_equal(sl->value[p], want);
        int32_t blk = sl->seq.blocks[p / BS];
        uint32_t e = 0;
        for (int32_t l = 0; l < kv->n_layer; l++)
            for (int k = 0; k < 2; k++)
                for (int32_t h = 0; h < kv->n_head_kv; h++) {
                    const uint32_t *x = (const uint32_t *)sp_kvbuf_head(kv, blk, l, k, h) +
                                        (size_t)(p % BS) * (size_t)kv->head_dim;
                    for (int32_t d = 0; d < kv->head_dim; d++)
                        if (x[d] != (want ^ e++))
                            fail_msg("position %d of a sequence reads a wrong value", p);
                }
    }
}

static void check_all(sim *s) {
    assert_true(sp_kv_pool_check(s->pool));
    sp_kv_stats st;
    sp_kv_pool_stats(s->pool, &st);
    assert_int_equal(st.n_free + st.n_used + st.n_cached, NB);
    memset(s->refs, 0, sizeof s->refs);
    for (int i = 0; i < N_SLOTS; i++) {
        const slot *sl = &s->slots[i];
        if (!sl->active) {
            assert_int_equal(sl->seq.n_blocks, 0);
            continue;
        }
        for (int32_t b = 0; b < sl->seq.n_blocks; b++)
            s->refs[sl->seq.blocks[b]]++;
        check_contents(s, sl);
    }
    int32_t distinct = 0;
    for (int32_t b = 0; b < NB; b++) {
        assert_int_equal(sp_kv_pool_ref(s->pool, b), s->refs[b]);
        distinct += s->refs[b] > 0;
    }
    assert_int_equal(st.n_used, distinct);
    assert_int_equal(sp_kv_pool_n_available(s->pool), st.n_free + st.n_cached);
}

static slot *pick(sim *s, bool active) {
    int start = (int)rnd(s, N_SLOTS);
    for (int i = 0; i < N_SLOTS; i++) {
        slot *sl = &s->slots[(start + i) % N_SLOTS];
        if (sl->active == active)
            return sl;
    }
    return NULL;
}

static void stop(sim *s, slot *sl) {
    sp_kv_seq_release(s->pool, &sl->seq);
    sl->active = false;
}

/* Grows a slot by n tokens (all-or-nothing), computes them and maybe commits. */
static void grow(sim *s, slot *sl, int32_t n, bool commit) {
    sp_kv_seq before = sl->seq;
    sp_kv_stats st0, st1;
    sp_kv_pool_stats(s->pool, &st0);
    int32_t need = sp_kv_seq_blocks_needed(s->pool, &sl->seq, n);
    sp_err err = sp_kv_seq_reserve(s->pool, &sl->seq, n);
    if (err != SP_OK) {
        sp_kv_pool_stats(s->pool, &st1);
        assert_same_seq(&before, &sl->seq);
        assert_same_stats(&st0, &st1);
        if (err == SP_ERR_NOMEM) {
            assert_true(need > sp_kv_pool_n_available(s->pool));
            s->n_nomem++;
        } else {
            assert_int_equal(err, SP_ERR_LIMIT);
            assert_true(before.n_tokens + n > MAX_CTX);
            s->n_limit++;
        }
        stop(s, sl); // preempted or finished
        return;
    }
    sp_kv_pool_stats(s->pool, &st1);
    assert_int_equal(st1.allocations - st0.allocations, (uint64_t)need);
    forward(s, sl, before.n_tokens, sl->seq.n_tokens);
    if (commit)
        sp_kv_seq_commit(s->pool, &sl->seq, sl->tokens, sl->seq.n_tokens);
}

static void op_start(sim *s) {
    slot *sl = pick(s, false);
    if (!sl)
        return;
    // A prompt: a stem of a family, then maybe tokens of its own.
    const int32_t *fam = s->family[rnd(s, N_FAMILIES)];
    int32_t stem = 1 + (int32_t)rnd(s, 30), n = stem + (int32_t)rnd(s, 6);
    memcpy(sl->tokens, fam, (size_t)stem * sizeof *sl->tokens);
    for (int32_t i = stem; i < n; i++)
        sl->tokens[i] = 1000 + (int32_t)rnd(s, 4);
    sl->salt = rnd(s, 4) == 0 ? 2 : 1;
    sl->active = true;
    int32_t expect = sp_kv_prefix_match(s->pool, sl->salt, sl->tokens, n - 1);
    int32_t m = sp_kv_seq_lookup(s->pool, &sl->seq, sl->salt, sl->tokens, n - 1);
    assert_int_equal(m, expect);
    assert_true(m % BS == 0 && m <= n - 1);
    s->n_hits += m > 0;
    for (int32_t p = 0; p < m; p++) // what the matched blocks must hold
        sl->value[p] = kv_value(p > 0 ? sl->value[p - 1] : 0, sl->salt, sl->tokens[p], p);
    grow(s, sl, n - m, true);
}

static void op_decode(sim *s) {
    slot *sl = pick(s, true);
    if (!sl)
        return;
    int32_t n = 1 + (int32_t)rnd(s, 5), at = sl->seq.n_tokens;
    for (int32_t i = 0; i < n && at + i < MAX_CTX; i++)
        sl->tokens[at + i] = (int32_t)rnd(s, 3); // few distinct tokens: forks often agree
    grow(s, sl, n, rnd(s, 3) != 0);
}

static void op_fork(sim *s) {
    slot *src = pick(s, true), *dst = pick(s, false);
    if (!src || !dst)
        return;
    assert_int_equal(sp_kv_seq_fork(s->pool, &src->seq, &dst->seq), SP_OK);
    dst->active = true;
    dst->salt = src->salt;
    memcpy(dst->tokens, src->tokens, sizeof dst->tokens);
    memcpy(dst->value, src->value, sizeof dst->value);
    s->n_forks++;
}

static void run(int32_t hash_bits, uint64_t seed, int n_ops) {
    sim *s = calloc(1, sizeof *s);
    assert_non_null(s);
    s->rng = seed;
    sp_hparams hp = {.n_layer = 2, .n_head_kv = 1, .head_dim = 2};
    assert_int_equal(sp_kvbuf_init(&s->kv, &hp, SP_DTYPE_F32, BS, NB), SP_OK);
    sp_kv_pool_opts o = sp_kv_pool_opts_default();
    o.hash_bits = hash_bits;
    o.hash_seed = seed;
    assert_int_equal(sp_kv_pool_create(&s->kv, &o, &s->pool), SP_OK);
    for (int i = 0; i < N_SLOTS; i++)
        assert_int_equal(sp_kv_seq_init(&s->slots[i].seq, s->pool, MAX_CTX), SP_OK);
    for (int f = 0; f < N_FAMILIES; f++)
        for (int i = 0; i < MAX_CTX; i++)
            s->family[f][i] = (int32_t)rnd(s, 50);
    s->family[1][0] = s->family[0][0]; // families 0 and 1 share their first block
    s->family[1][1] = s->family[0][1];
    s->family[1][2] = s->family[0][2];
    s->family[1][3] = s->family[0][3];

#if COUNT_ALLOCS
    long allocs_before = sp_test_n_allocs;
#endif
    for (int i = 0; i < n_ops; i++) {
        uint32_t r = rnd(s, 100);
        if (r < 30)
            op_start(s);
        else if (r < 70)
            op_decode(s);
        else if (r < 80)
            op_fork(s);
        else if (r < 98) {
            slot *sl = pick(s, true);
            if (sl)
                stop(s, sl);
        } else {
            sp_kv_pool_set_caching(s->pool, !sp_kv_pool_caching(s->pool));
        }
        check_all(s);
    }
    for (int i = 0; i < N_SLOTS; i++)
        if (s->slots[i].active)
            stop(s, &s->slots[i]);
    check_all(s);
#if COUNT_ALLOCS
    assert_int_equal(sp_test_n_allocs - allocs_before, 0);
#endif

    sp_kv_stats st;
    sp_kv_pool_stats(s->pool, &st);
    assert_int_equal(st.n_used, 0);
    // The run exercised what it is meant to.
    assert_true(s->n_hits > 50);
    assert_true(s->n_nomem > 10);
    assert_true(s->n_forks > 50);
    assert_true(s->n_limit > 10);
    assert_true(st.evictions > 50);
    assert_true(st.copies > 50);
    print_message("hash_bits %d: %ld hits, %ld out of blocks, %ld forks, %llu evictions, "
                  "%llu copies, %llu hit blocks\n",
                  hash_bits, s->n_hits, s->n_nomem, s->n_forks, (unsigned long long)st.evictions,
                  (unsigned long long)st.copies, (unsigned long long)st.hit_blocks);
    for (int i = 0; i < N_SLOTS; i++)
        sp_kv_seq_deinit(&s->slots[i].seq);
    sp_kv_pool_destroy(s->pool);
    sp_kvbuf_deinit(&s->kv);
    free(s);
}

static void test_stress(void **state) {
    (void)state;
    run(0, 1, 20000);
    run(0, 2, 20000);
}

/* With 2-bit hashes nearly every lookup meets colliding entries: only the stored tokens,
 * parents and salts keep sequences apart. */
static void test_stress_weak_hash(void **state) {
    (void)state;
    run(2, 3, 20000);
}

static void test_hook_counts(void **state) {
    (void)state;
#if COUNT_ALLOCS
    void *(*volatile alloc)(size_t) = malloc;
    long before = sp_test_n_allocs;
    void *p = alloc(16);
    assert_non_null(p);
    assert_int_equal(sp_test_n_allocs - before, 1);
    free(p);
#else
    skip();
#endif
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hook_counts),
        cmocka_unit_test(test_stress),
        cmocka_unit_test(test_stress_weak_hash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#include "kv/table.h"

#include <stdlib.h>

#include "base/util.h"
#include "kv/internal.h"

sp_err sp_kv_seq_init(sp_kv_seq *seq, const sp_kv_pool *pool, int32_t max_tokens) {
    if (max_tokens <= 0)
        return SP_ERR_INVALID;
    int32_t cap = (int32_t)(((int64_t)max_tokens + pool->block_size - 1) / pool->block_size);
    int32_t *blocks = malloc((size_t)cap * sizeof *blocks);
    if (!blocks)
        return SP_ERR_NOMEM;
    *seq = (sp_kv_seq){.blocks = blocks, .cap_blocks = cap};
    return SP_OK;
}

void sp_kv_seq_deinit(sp_kv_seq *seq) {
    if (!seq)
        return;
    SP_ASSERT(seq->n_blocks == 0);
    free(seq->blocks);
    *seq = (sp_kv_seq){0};
}

int32_t sp_kv_seq_lookup(sp_kv_pool *pool, sp_kv_seq *seq, uint64_t salt, const int32_t *tokens,
                         int32_t n) {
    SP_ASSERT(seq->n_blocks == 0 && seq->n_tokens == 0);
    seq->salt = salt;
    seq->n_hashed = 0;
    seq->hash = SP__KV_ROOT_HASH;
    seq->chain_indexed = true;
    if (!pool->caching)
        return 0;
    int32_t bs = pool->block_size, parent = -1;
    uint64_t h = SP__KV_ROOT_HASH;
    while (seq->n_blocks < seq->cap_blocks && n - seq->n_tokens >= bs) {
        const int32_t *tok = tokens + seq->n_tokens;
        h = sp__kv_hash(pool, h, salt, tok);
        int32_t id = sp__kv_index_find(pool, h, parent, salt, tok);
        if (id < 0)
            break;
        sp__kv_take(pool, id);
        seq->blocks[seq->n_blocks++] = id;
        seq->n_tokens += bs;
        seq->n_hashed++;
        seq->hash = h;
        parent = id;
    }
    return seq->n_tokens;
}

/* Blocks to append and whether the last block needs copying, for n more positions. */
static int32_t plan(const sp_kv_pool *pool, const sp_kv_seq *seq, int32_t n, bool *cow) {
    int32_t bs = pool->block_size;
    int64_t end = (int64_t)seq->n_tokens + n;
    int64_t want = (end + bs - 1) / bs;
    *cow = n > 0 && seq->n_tokens % bs != 0 && pool->blocks[seq->blocks[seq->n_blocks - 1]].ref > 1;
    int64_t add = want > seq->n_blocks ? want - seq->n_blocks : 0;
    return (int32_t)SP_MIN(add, (int64_t)INT32_MAX - 1);
}

int32_t sp_kv_seq_blocks_needed(const sp_kv_pool *pool, const sp_kv_seq *seq, int32_t n) {
    if (n <= 0)
        return 0;
    bool cow;
    int32_t add = plan(pool, seq, n, &cow);
    return add + (cow ? 1 : 0);
}

sp_err sp_kv_seq_reserve(sp_kv_pool *pool, sp_kv_seq *seq, int32_t n) {
    if (n < 0)
        return SP_ERR_INVALID;
    if (n == 0)
        return SP_OK;
    if ((int64_t)seq->n_tokens + n > (int64_t)seq->cap_blocks * pool->block_size)
        return SP_ERR_LIMIT;
    bool cow;
    int32_t add = plan(pool, seq, n, &cow);
    if (add + (cow ? 1 : 0) > sp_kv_pool_n_available(pool))
        return SP_ERR_NOMEM;

    // From here on every allocation succeeds: free + cached blocks cover the need.
    if (cow) {
        int32_t old = seq->blocks[seq->n_blocks - 1], copy;
        sp_err err = sp_kv_pool_alloc(pool, &copy);
        SP_ASSERT(err == SP_OK);
        sp_kvbuf_copy_block(pool->kv, copy, old);
        pool->copies++;
        seq->blocks[seq->n_blocks - 1] = copy;
        sp_kv_pool_release(pool, old);
    }
    for (int32_t i = 0; i < add; i++) {
        int32_t id;
        sp_err err = sp_kv_pool_alloc(pool, &id);
        SP_ASSERT(err == SP_OK);
        seq->blocks[seq->n_blocks++] = id;
    }
    seq->n_tokens += n;
    return SP_OK;
}

void sp_kv_seq_truncate(sp_kv_pool *pool, sp_kv_seq *seq, int32_t n) {
    const int32_t bs = pool->block_size;
    SP_ASSERT(n >= 0 && n <= seq->n_tokens && (int64_t)seq->n_hashed * bs <= n);
    const int32_t keep = (int32_t)(((int64_t)n + bs - 1) / bs);
    while (seq->n_blocks > keep)
        sp_kv_pool_release(pool, seq->blocks[--seq->n_blocks]);
    seq->n_tokens = n;
}

void sp_kv_seq_commit(sp_kv_pool *pool, sp_kv_seq *seq, const int32_t *tokens, int32_t n_known) {
    SP_ASSERT(n_known >= 0 && n_known <= seq->n_tokens);
    if (!pool->caching)
        return;
    int32_t bs = pool->block_size;
    while (seq->chain_indexed && (int64_t)(seq->n_hashed + 1) * bs <= n_known) {
        int32_t b = seq->n_hashed;
        const int32_t *tok = tokens + (size_t)b * (size_t)bs;
        uint64_t h = sp__kv_hash(pool, seq->hash, seq->salt, tok);
        int32_t id = seq->blocks[b], parent = b > 0 ? seq->blocks[b - 1] : -1;
        if (pool->blocks[id].indexed) // shared through a fork with a sequence that committed it
            seq->chain_indexed = sp__kv_index_find(pool, h, parent, seq->salt, tok) == id;
        else
            seq->chain_indexed = sp__kv_register(pool, id, parent, h, seq->salt, tok) == id;
        seq->hash = h;
        seq->n_hashed++;
    }
    // Nothing after a private block can be indexed: skip hashing it.
    if (!seq->chain_indexed)
        seq->n_hashed = SP_MAX(seq->n_hashed, n_known / bs);
}

sp_err sp_kv_seq_fork(sp_kv_pool *pool, const sp_kv_seq *src, sp_kv_seq *dst) {
    SP_ASSERT(dst->n_blocks == 0 && dst->n_tokens == 0);
    if (src->n_blocks > dst->cap_blocks)
        return SP_ERR_LIMIT;
    for (int32_t i = 0; i < src->n_blocks; i++) {
        sp_kv_pool_retain(pool, src->blocks[i]);
        dst->blocks[i] = src->blocks[i];
    }
    dst->n_blocks = src->n_blocks;
    dst->n_tokens = src->n_tokens;
    dst->n_hashed = src->n_hashed;
    dst->chain_indexed = src->chain_indexed;
    dst->hash = src->hash;
    dst->salt = src->salt;
    return SP_OK;
}

void sp_kv_seq_release(sp_kv_pool *pool, sp_kv_seq *seq) {
    for (int32_t i = seq->n_blocks; i-- > 0;)
        sp_kv_pool_release(pool, seq->blocks[i]);
    int32_t *blocks = seq->blocks, cap = seq->cap_blocks;
    *seq = (sp_kv_seq){.blocks = blocks, .cap_blocks = cap};
}

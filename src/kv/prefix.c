#include "kv/prefix.h"

#include <string.h>

#include "kv/internal.h"

/* A bijective 64-bit finalizer: two rounds of xor-shift and multiply by odd constants, so
 * every input bit reaches every output bit. */
static inline uint64_t mix64(uint64_t x) {
    x ^= x >> 31;
    x *= UINT64_C(0xbf58476d1ce4e5b9);
    x ^= x >> 29;
    x *= UINT64_C(0x94d049bb133111eb);
    x ^= x >> 32;
    return x;
}

uint64_t sp__kv_hash(const sp_kv_pool *pool, uint64_t parent, uint64_t salt,
                     const int32_t *tokens) {
    // The additive constant keeps a zero state from staying zero on zero input words.
    const uint64_t k = UINT64_C(0x9e3779b97f4a7c15);
    uint64_t h = mix64(pool->hash_seed + k);
    h = mix64(h ^ parent) + k;
    h = mix64(h ^ salt) + k;
    int32_t n = pool->block_size, i = 0;
    for (; i + 1 < n; i += 2) {
        uint64_t w = (uint64_t)(uint32_t)tokens[i] | (uint64_t)(uint32_t)tokens[i + 1] << 32;
        h = mix64(h ^ w) + k;
    }
    if (i < n)
        h = mix64(h ^ (uint32_t)tokens[i]) + k;
    h = mix64(h ^ (uint64_t)n);
    return h & pool->hash_mask;
}

static bool same_identity(const sp_kv_pool *pool, int32_t id, uint64_t hash, int32_t parent,
                          uint64_t salt, const int32_t *tokens) {
    const sp__kv_block *b = &pool->blocks[id];
    return b->hash == hash && b->parent == parent && b->salt == salt &&
           memcmp(pool->tokens + (size_t)id * (size_t)pool->block_size, tokens,
                  (size_t)pool->block_size * sizeof *tokens) == 0;
}

int32_t sp__kv_index_find(const sp_kv_pool *pool, uint64_t hash, int32_t parent, uint64_t salt,
                          const int32_t *tokens) {
    for (uint32_t i = (uint32_t)hash & pool->slot_mask;; i = (i + 1) & pool->slot_mask) {
        int32_t id = pool->slots[i];
        if (id < 0)
            return -1;
        if (same_identity(pool, id, hash, parent, salt, tokens))
            return id;
    }
}

void sp__kv_index_insert(sp_kv_pool *pool, int32_t id) {
    // At most n_blocks entries in >= 2 * n_blocks slots: an empty slot always exists.
    uint32_t i = (uint32_t)pool->blocks[id].hash & pool->slot_mask;
    while (pool->slots[i] >= 0)
        i = (i + 1) & pool->slot_mask;
    pool->slots[i] = id;
}

int64_t sp__kv_index_slot(const sp_kv_pool *pool, int32_t id) {
    for (uint32_t i = (uint32_t)pool->blocks[id].hash & pool->slot_mask;;
         i = (i + 1) & pool->slot_mask) {
        if (pool->slots[i] == id)
            return i;
        if (pool->slots[i] < 0)
            return -1;
    }
}

void sp__kv_index_remove(sp_kv_pool *pool, int32_t id) {
    int64_t at = sp__kv_index_slot(pool, id);
    SP_ASSERT(at >= 0);
    uint32_t hole = (uint32_t)at, mask = pool->slot_mask;
    /* Backward shift: pull later entries of the probe run into the hole when their home slot
     * does not lie cyclically in (hole, j], so every entry stays reachable from its home
     * without tombstones. */
    for (uint32_t j = (hole + 1) & mask;; j = (j + 1) & mask) {
        int32_t e = pool->slots[j];
        if (e < 0)
            break;
        uint32_t home = (uint32_t)pool->blocks[e].hash & mask;
        bool stays = ((j - home) & mask) < ((j - hole) & mask);
        if (!stays) {
            pool->slots[hole] = e;
            hole = j;
        }
    }
    pool->slots[hole] = -1;
}

int32_t sp_kv_prefix_match(const sp_kv_pool *pool, uint64_t salt, const int32_t *tokens,
                           int32_t n) {
    if (!pool->caching || n <= 0)
        return 0;
    int32_t bs = pool->block_size, parent = -1, matched = 0;
    uint64_t h = SP__KV_ROOT_HASH;
    while (n - matched >= bs) {
        h = sp__kv_hash(pool, h, salt, tokens + matched);
        int32_t id = sp__kv_index_find(pool, h, parent, salt, tokens + matched);
        if (id < 0)
            break;
        parent = id;
        matched += bs;
    }
    return matched;
}

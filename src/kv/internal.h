/* Internals shared by pool.c, prefix.c and table.c. Not part of the API. */
#ifndef SP_KV_INTERNAL_H
#define SP_KV_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "kv/pool.h"

enum { SP__KV_FREE = 0, SP__KV_USED = 1, SP__KV_CACHED = 2 };

typedef struct sp__kv_block {
    int32_t ref;        // references held by block tables
    int32_t next;       // free list or LRU list successor, -1 = none
    int32_t prev;       // LRU list predecessor, -1 = none
    int32_t parent;     // registered block holding the previous positions, -1 = first block
    int32_t n_children; // registered blocks whose parent is this one
    uint8_t state;      // SP__KV_FREE, _USED or _CACHED
    bool indexed;       // in the prefix index: hash, salt, parent and tokens are valid
    uint64_t hash;      // chain hash
    uint64_t salt;      // salt of the sequence that committed it
} sp__kv_block;

struct sp_kv_pool {
    sp_kvbuf *kv; // borrowed
    int32_t n_blocks;
    int32_t block_size;
    bool caching;
    uint64_t hash_seed;
    uint64_t hash_mask;

    sp__kv_block *blocks; // (n_blocks)
    int32_t *tokens;      // (n_blocks, block_size) tokens of indexed blocks

    int32_t free_head; // free list, LIFO through next
    int32_t lru_head;  // cached blocks, least recently released first
    int32_t lru_tail;  // most recently released

    int32_t *slots;     // (slot_mask + 1) prefix index: block ids, -1 = empty; linear probing
    uint32_t slot_mask; // slot count - 1 (a power of two >= 2 * n_blocks)

    int32_t n_free, n_used, n_cached, n_indexed;
    uint64_t allocations, evictions, hit_blocks, copies;
};

/* Chain hash of one block of block_size tokens following a block whose chain hash is parent
 * (SP__KV_ROOT_HASH for the first block). */
#define SP__KV_ROOT_HASH UINT64_C(0)
uint64_t sp__kv_hash(const sp_kv_pool *pool, uint64_t parent, uint64_t salt, const int32_t *tokens);

/* The indexed block with exactly this identity (hash, parent block, salt and tokens), or -1. */
int32_t sp__kv_index_find(const sp_kv_pool *pool, uint64_t hash, int32_t parent, uint64_t salt,
                          const int32_t *tokens);
/* Inserts / removes block id (its hash field set) in the open-addressing table. */
void sp__kv_index_insert(sp_kv_pool *pool, int32_t id);
void sp__kv_index_remove(sp_kv_pool *pool, int32_t id);
/* Slot holding id, or -1 (for checks). */
int64_t sp__kv_index_slot(const sp_kv_pool *pool, int32_t id);

/* Gives a used, unindexed block an identity and puts it in the index, unless a block with the
 * same identity is already there. parent is -1 or an indexed block. Returns the block indexed
 * under that identity afterwards: id itself, or the one that was already there. */
int32_t sp__kv_register(sp_kv_pool *pool, int32_t id, int32_t parent, uint64_t hash, uint64_t salt,
                        const int32_t *tokens);

/* Takes a reference on an indexed block found by a lookup: a cached block leaves the LRU list
 * and becomes used. */
void sp__kv_take(sp_kv_pool *pool, int32_t id);

#endif

/* The prefix index: finds cached KV blocks by the tokens they hold.
 *
 * Identity. A full block is identified by its chain hash
 *     h(block) = H(seed, h(previous block) or a root constant, salt, its block_size tokens)
 * where the salt stands for anything besides the tokens that changes the keys and values (the
 * model, an adapter, ...): requests with different salts never share blocks. H is a 64-bit
 * multiply-xorshift mix applied to the parent hash, the salt and the tokens two at a time; it
 * is fast and well spread but not cryptographic. Collisions are harmless: besides the hash, the
 * index stores each block's salt, parent block and a copy of its tokens, and a match requires
 * all of them to be equal, so two different prefixes never share a block. Colliding blocks may
 * sit in the index side by side.
 *
 * The index is an open-addressing hash table (linear probing, deletion by backward shift) with
 * at least twice as many slots as blocks, sized when the pool is created. Blocks enter it
 * through sp_kv_seq_commit and leave it when evicted (pool.h); sp_kv_seq_lookup takes blocks
 * from it. Owned by the engine thread, like the pool. */
#ifndef SP_KV_PREFIX_H
#define SP_KV_PREFIX_H

#include <stdint.h>

#include "kv/pool.h"

/* Length in tokens (a multiple of the block size) of the longest prefix of tokens[n] whose
 * blocks are in the index under this salt, i.e. what sp_kv_seq_lookup would share now. Takes
 * no references and changes nothing. O(matched blocks * block_size). 0 when caching is off. */
int32_t sp_kv_prefix_match(const sp_kv_pool *pool, uint64_t salt, const int32_t *tokens, int32_t n);

#endif

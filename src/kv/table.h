/* Per-sequence block tables of the paged KV cache.
 *
 * A sequence's position p lives in block blocks[p / block_size], slot p % block_size: exactly
 * the table sp_batch (model/forward.h) takes. The table's array is allocated once, for the
 * longest context the sequence may reach, so no operation on it allocates memory.
 *
 * Life of a request's sequence (all on the engine thread, which owns the pool and its tables):
 *   sp_kv_seq_lookup     share the longest cached prefix of the prompt (sets the salt);
 *   sp_kv_seq_reserve    claim positions for the next forward pass (allocates, copies on write);
 *   ... sp_forward_eval writes those positions ...
 *   sp_kv_seq_commit     register the blocks that are now full, for later requests to reuse;
 *   sp_kv_seq_fork       share everything with another sequence (n > 1 completions);
 *   sp_kv_seq_release    drop every block (finished, cancelled or preempted), back to empty.
 *
 * Invariants kept here: a block is written only while this table holds the sole reference and
 * it is not in the prefix index (full committed blocks are never written again); a table holding
 * an indexed block also holds that block's indexed parent at the previous index. */
#ifndef SP_KV_TABLE_H
#define SP_KV_TABLE_H

#include <stdbool.h>
#include <stdint.h>

#include "base/err.h"
#include "kv/pool.h"

/* Fields are read-only outside src/kv/. */
typedef struct sp_kv_seq {
    int32_t *blocks;    // (cap_blocks) block ids; the first n_blocks are valid
    int32_t n_blocks;   // == ceil(n_tokens / block_size)
    int32_t cap_blocks; // ceil(max_tokens / block_size)
    int32_t n_tokens;   // positions claimed: cached or matched, written, or being written
    int32_t n_hashed;   // leading full blocks whose chain hash is known (matched or committed)
    bool chain_indexed; // blocks[0 .. n_hashed) are all in the prefix index
    uint64_t hash;      // chain hash of blocks[n_hashed - 1] (while chain_indexed)
    uint64_t salt;      // set by sp_kv_seq_lookup
} sp_kv_seq;

/* Prepares an empty sequence that can grow to max_tokens positions (rounded up to whole
 * blocks), allocating its table.
 * SP_ERR_INVALID for max_tokens <= 0, SP_ERR_NOMEM if the allocation fails (seq untouched). */
SP_MUST_USE sp_err sp_kv_seq_init(sp_kv_seq *seq, const sp_kv_pool *pool, int32_t max_tokens);

/* Frees the table. The sequence must be empty (released); asserted. NULL is a no-op. */
void sp_kv_seq_deinit(sp_kv_seq *seq);

/* Starts an empty sequence (asserted) for a request whose KV depends on salt (model, adapter:
 * see prefix.h) and whose prompt is tokens[n]: shares the longest chain of indexed full blocks
 * matching the prompt, taking one reference on each (cached ones become used again). Returns
 * the number of positions now filled (a multiple of the block size, at most n and the table's
 * capacity); the caller evaluates the rest. To always keep a token to evaluate, for its
 * logits, pass n = prompt length - 1. With caching off it only sets the salt and returns 0.
 * Call it even then: it is how a sequence learns its salt. O(matched blocks * block_size). */
int32_t sp_kv_seq_lookup(sp_kv_pool *pool, sp_kv_seq *seq, uint64_t salt, const int32_t *tokens,
                         int32_t n);

/* Blocks sp_kv_seq_reserve(pool, seq, n) would take from the pool: new blocks, plus one if the
 * last block is partly filled and shared (copy-on-write). For admission and preemption: compare
 * the sum over sequences with sp_kv_pool_n_available. */
int32_t sp_kv_seq_blocks_needed(const sp_kv_pool *pool, const sp_kv_seq *seq, int32_t n);

/* Claims positions n_tokens .. n_tokens + n - 1 for writing: appends blocks, and if the last
 * block is partly filled and shared (ref > 1) replaces it in this table by a private copy
 * (sp_kvbuf_copy_block) before anyone writes into it. On success n_tokens grows by n and every
 * block holding the new positions has this table as its only holder. All or nothing: returns
 * SP_ERR_LIMIT if the table's capacity would be exceeded, SP_ERR_NOMEM if the pool has fewer
 * available blocks than sp_kv_seq_blocks_needed, SP_ERR_INVALID for n < 0; then nothing
 * changes. Evicts cached blocks only when the free list is empty. The claim holds until the
 * sequence is forked: fork after the forward pass that wrote the positions. O(new blocks). */
SP_MUST_USE sp_err sp_kv_seq_reserve(sp_kv_pool *pool, sp_kv_seq *seq, int32_t n);

/* Gives back the claim on positions n .. n_tokens - 1 (n_hashed * block_size <= n <= n_tokens,
 * asserted): the blocks that hold only such positions leave the table (one reference dropped
 * each), and n_tokens becomes n. For speculative decoding: the positions of rejected draft
 * tokens, written but not part of the sequence. No copy; O(blocks dropped). */
void sp_kv_seq_truncate(sp_kv_pool *pool, sp_kv_seq *seq, int32_t n);

/* Registers in the prefix index every full block of positions below n_known that is not yet
 * hashed. tokens[n_known] are the sequence's tokens from position 0 (borrowed) and the KV of
 * positions 0 .. n_known - 1 must be written already (the forward pass has run);
 * n_known <= n_tokens (asserted). A block is indexed only if the block before it is (so a
 * chain can be looked up from its start) and no identical block is indexed already: a
 * sequence that computed a prefix another request indexed first keeps its copies, and the
 * blocks after them, private. No-op while caching is off. O(new full blocks * block_size). */
void sp_kv_seq_commit(sp_kv_pool *pool, sp_kv_seq *seq, const int32_t *tokens, int32_t n_known);

/* Makes the empty sequence dst (asserted) a copy of src sharing all of its blocks (one more
 * reference each); the next write into a shared partly filled block copies it. Returns
 * SP_ERR_LIMIT, changing nothing, if dst's capacity is smaller than src's block count.
 * O(blocks). */
SP_MUST_USE sp_err sp_kv_seq_fork(sp_kv_pool *pool, const sp_kv_seq *src, sp_kv_seq *dst);

/* Drops the sequence's reference on every block, last block first (so that cached chains are
 * evicted from their ends), and makes it empty; its table stays allocated for reuse. */
void sp_kv_seq_release(sp_kv_pool *pool, sp_kv_seq *seq);

#endif

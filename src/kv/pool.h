/* The block pool of the paged KV cache: which of the n_blocks blocks of an sp_kvbuf are free,
 * in use, or kept for prefix reuse.
 *
 * Every block is in exactly one of three states:
 *   - free:   on the free list, no references, no identity;
 *   - used:   referenced by one or more block tables (ref > 0);
 *   - cached: no references, but still registered in the prefix index (see prefix.h) under
 *             its chain hash, so a later request with the same prefix can take it back
 *             without recomputing it.
 * A block gets an identity (chain hash, salt, parent block, a copy of its tokens) only when a
 * sequence commits it as full (sp_kv_seq_commit in table.h). A cached block is reclaimed only
 * when the free list is empty: allocation then evicts the least recently released cached block
 * that has no registered child, so chains are eaten from their ends and a prefix never
 * disappears before its longer continuations.
 *
 * The pool does not own the KV memory: it borrows the sp_kvbuf, which must outlive it, and
 * only touches it to copy blocks (copy-on-write). Every operation is O(1) or O(blocks
 * touched) and none allocates memory after sp_kv_pool_create. The pool, and every sp_kv_seq
 * using it, is owned by the engine thread; nothing here is thread-safe. */
#ifndef SP_KV_POOL_H
#define SP_KV_POOL_H

#include <stdbool.h>
#include <stdint.h>

#include "base/err.h"
#include "model/kvbuf.h"

typedef struct sp_kv_pool sp_kv_pool;

typedef struct sp_kv_pool_opts {
    bool caching;       // keep released full blocks for prefix reuse (default true)
    uint64_t hash_seed; // mixed into every chain hash; a server should pick it at random so
                        // that clients cannot aim collisions at the index (default 0)
    int32_t hash_bits;  // test hook: keep only the low hash_bits (1..63) bits of each chain
                        // hash, forcing collisions; 0 = all 64 bits (default)
} sp_kv_pool_opts;

/* Counters, a snapshot. n_free + n_used + n_cached == n_blocks at all times. The totals count
 * since creation. */
typedef struct sp_kv_stats {
    int32_t n_blocks;
    int32_t n_free;       // on the free list
    int32_t n_used;       // ref > 0
    int32_t n_cached;     // ref == 0, kept in the prefix index
    int32_t n_indexed;    // in the prefix index (used or cached)
    uint64_t allocations; // blocks handed out by sp_kv_pool_alloc (incl. reserve and COW)
    uint64_t evictions;   // cached blocks reclaimed by allocation or by turning caching off
    uint64_t hit_blocks;  // blocks taken from the prefix index by sp_kv_seq_lookup
    uint64_t copies;      // copy-on-write block copies
} sp_kv_stats;

/* Defaults: caching on, seed 0, full 64-bit hashes. */
sp_kv_pool_opts sp_kv_pool_opts_default(void);

/* Creates a pool managing blocks 0 .. kv->n_blocks - 1 of kv (borrowed; it must outlive the
 * pool), all free. opts may be NULL for the defaults. Allocates everything the pool will ever
 * need: per-block metadata, a token copy of block_size int32 per block, and the prefix index.
 * Returns SP_ERR_INVALID for a bad hash_bits or a kvbuf without blocks, SP_ERR_NOMEM if an
 * allocation fails; *out is written only on success. */
SP_MUST_USE sp_err sp_kv_pool_create(sp_kvbuf *kv, const sp_kv_pool_opts *opts, sp_kv_pool **out);

/* Frees the pool; NULL is a no-op. Outstanding references are simply forgotten. */
void sp_kv_pool_destroy(sp_kv_pool *pool);

/* Positions per block (the kvbuf's block_size). */
int32_t sp_kv_pool_block_size(const sp_kv_pool *pool);

/* Blocks an allocation can still obtain: free plus cached (every cached block is evictable). */
int32_t sp_kv_pool_n_available(const sp_kv_pool *pool);

/* Takes a block with one reference: from the free list, or, when it is empty, by evicting a
 * cached block (see above). Returns SP_ERR_NOMEM, writing nothing, when every block is used.
 * The block's contents are whatever it held before. Block tables (table.h) call this; other
 * callers own the reference they get and must release it. */
SP_MUST_USE sp_err sp_kv_pool_alloc(sp_kv_pool *pool, int32_t *out);

/* Adds a reference to a used block (asserted: 0 <= block < n_blocks and ref > 0). */
void sp_kv_pool_retain(sp_kv_pool *pool, int32_t block);

/* Drops one reference (asserted: ref > 0). At zero the block becomes cached if it is in the
 * prefix index and caching is on, otherwise it leaves the index and goes to the free list. The
 * caller must hold the reference it drops. */
void sp_kv_pool_release(sp_kv_pool *pool, int32_t block);

/* Reference count of a block (asserted in range). */
int32_t sp_kv_pool_ref(const sp_kv_pool *pool, int32_t block);

/* Turns prefix caching on or off. Turning it off evicts every cached block to the free list
 * (counted in evictions); while it is off, sp_kv_seq_commit registers nothing,
 * sp_kv_seq_lookup matches nothing and released blocks go straight to the free list. Blocks
 * registered earlier and still used leave the index when released. O(cached blocks). */
void sp_kv_pool_set_caching(sp_kv_pool *pool, bool on);
bool sp_kv_pool_caching(const sp_kv_pool *pool);

/* Fills *out with the counters. */
void sp_kv_pool_stats(const sp_kv_pool *pool, sp_kv_stats *out);

/* Verifies every internal invariant (lists, counters, child counts, LRU order, the index
 * finding each registered block by its hash and identity, a parent's reference count never
 * below its child's). O(n_blocks^2); meant for tests and debugging. Returns false and logs the
 * first violation with SP_ERROR. */
bool sp_kv_pool_check(const sp_kv_pool *pool);

#endif

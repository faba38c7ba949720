/* Drafts from a draft model: a smaller model of the same vocabulary that runs beside the target
 * model and proposes each sequence's next tokens, which the target then checks in its batched
 * step.
 *
 * The draft model keeps its own paged KV cache, indexed by the target's block tables: block b of
 * the draft's buffer holds the draft model's keys and values for the positions the target keeps
 * in its block b. The pools, tables, reference counts, prefix sharing and copy-on-write of
 * src/kv/ therefore serve both (the draft buffer is the target buffer's twin, copied with it).
 * The caller decides which positions the draft model computes (the engine: every prompt chunk
 * as the target computes it, and a request's generated tokens when it next drafts, in one
 * chunk); a draft model's KV that is stale (a position the draft has not computed) only costs
 * acceptance, never correctness, since every draft token is checked by the target.
 *
 * One call drafts for a whole step: a first forward pass brings every sequence's draft KV up to
 * its last token (prompt chunks of the step, and the tokens accepted since the last step) and
 * proposes each drafting sequence's first token; then one forward pass per draft position over
 * every sequence that wants that many, one token each. Owned by the engine thread. */
#ifndef SP_SPEC_DRAFT_H
#define SP_SPEC_DRAFT_H

#include <stdint.h>

#include "base/err.h"
#include "base/threadpool.h"
#include "model/kvbuf.h"
#include "model/model.h"
#include "sample/sample.h"

typedef struct sp_draft sp_draft;

/* One sequence of a drafting call. Positions [from, to) of tokens are computed (0 <= from <=
 * to; to >= 1 when k > 0); then k drafts follow tokens[to - 1]: out[0] at position to, out[j] at
 * to + j, drawn by sampler's sp_sampler_propose (a greedy sampler: the draft model's argmax),
 * with q[j] (n_vocab floats each) the distribution out[j] was drawn from (untouched for a greedy
 * sampler); with q NULL, the draft model's argmax whatever the sampler (a point mass). The draft KV
 * of positions [from, to + k - 1) is written: the blocks for them must be in the block table. */
typedef struct sp_draft_seq {
    const int32_t *tokens; // (to) the sequence's tokens
    int32_t from, to;      // positions to compute
    const int32_t *blocks; // (n_blocks) the target's block table
    int32_t n_blocks;
    int32_t k;           // drafts wanted (0 .. the max_k of sp_draft_create)
    sp_sampler *sampler; // proposes the drafts (borrowed)
    int32_t *out;        // (k) the drafts
    float *q;            // (k, n_vocab) their distributions, or NULL
} sp_draft_seq;

/* A drafter for draft model m (borrowed: it must outlive the drafter) with a KV buffer of
 * n_blocks blocks of block_size positions of kv_type, for calls of up to max_seqs sequences
 * with up to max_k drafts each and positions below max_ctx; each forward pass takes up to
 * max_tokens tokens (longer calls are split). Returns SP_ERR_INVALID for non-positive sizes,
 * SP_ERR_NOMEM when the buffers cannot be allocated. */
SP_MUST_USE sp_err sp_draft_create(const sp_model *m, sp_dtype kv_type, int32_t block_size,
                                   int32_t n_blocks, int32_t max_tokens, int32_t max_seqs,
                                   int32_t max_k, int32_t max_ctx, sp_draft **out);
void sp_draft_destroy(sp_draft *d);

/* Runs the forward passes on the threads of pool (borrowed), as sp_forward_set_pool. */
SP_MUST_USE sp_err sp_draft_set_pool(sp_draft *d, sp_threadpool *pool);

/* The draft model's KV buffer (to be made the target buffer's twin). */
sp_kvbuf *sp_draft_kv(sp_draft *d);

/* Bytes of draft KV per block (to size a pool shared with a target model). */
size_t sp_draft_block_bytes(const sp_model *m, sp_dtype kv_type, int32_t block_size);

/* Computes and drafts for seqs[n] (n <= max_seqs), as described above. SP_ERR_RANGE (nothing
 * drafted) for a sequence out of range (k > max_k, a position past max_ctx or its blocks, a bad
 * token id); the draft KV of earlier forward passes of the call may then have been written. */
SP_MUST_USE sp_err sp_draft_run(sp_draft *d, sp_draft_seq *seqs, int32_t n);

/* Microseconds the last sp_draft_run spent, and its forward passes. */
typedef struct sp_draft_timing {
    double total_us;
    int32_t n_passes;
    int32_t n_tokens; // tokens computed, all passes
} sp_draft_timing;
sp_draft_timing sp_draft_last_timing(const sp_draft *d);

#endif

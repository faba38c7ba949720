/* The batched forward pass over a paged KV cache.
 *
 * One call evaluates a flattened batch of tokens from any number of sequences: each token has
 * an id, a position and a sequence; each sequence has a block table mapping its positions to
 * KV blocks (position p lives in block block_tables[seq][p / block_size], slot
 * p % block_size). The keys and values of every batch token are written to the cache first,
 * then each token attends to positions 0..pos of its own sequence, so a chunk of a prompt is
 * causal within itself and sees everything cached before it.
 *
 * Linear layers run over all rows of the batch at once. Every reduction has a fixed order per
 * output element, so a token's result depends only on its own inputs and its sequence's cache:
 * never on the other rows of the batch or on how a prompt was chunked (bitwise batch
 * invariance). */
#ifndef SP_MODEL_FORWARD_H
#define SP_MODEL_FORWARD_H

#include <stdint.h>

#include "base/err.h"
#include "base/threadpool.h"
#include "model/kvbuf.h"
#include "model/model.h"

typedef struct sp_batch {
    int32_t n_tokens;
    const int32_t *token; // (n_tokens) vocabulary ids
    const int32_t *pos;   // (n_tokens) positions within their sequences
    const int32_t *seq;   // (n_tokens) index into block_tables
    int32_t n_seqs;
    const int32_t *const *block_tables; // (n_seqs) -> (n_blocks_of_seq) physical block ids
    const int32_t *n_seq_blocks;        // (n_seqs) length of each block table
    int32_t n_out;
    const int32_t *out_rows; // (n_out) batch rows whose logits are wanted, in output order
} sp_batch;

/* Scratch memory for batches of up to max_tokens tokens and positions below max_ctx,
 * allocated once. Owned by the thread that runs the forward pass. */
typedef struct sp_forward sp_forward;

sp_err sp_forward_create(const sp_model *m, int32_t max_tokens, int32_t max_ctx,
                         sp_forward **out) SP_MUST_USE;
void sp_forward_destroy(sp_forward *f);

/* Runs the matrix products and attention on the threads of pool (borrowed; NULL: the calling
 * thread only). Results are bitwise the same for any number of threads. sp_forward_eval must
 * then be called from the pool's owning thread. SP_ERR_NOMEM leaves f unchanged. */
sp_err sp_forward_set_pool(sp_forward *f, sp_threadpool *pool) SP_MUST_USE;

/* Evaluates a batch: writes the K/V of every token into kv and the logits of the rows in
 * b->out_rows to logits (n_out, n_vocab). Returns SP_ERR_RANGE (cache unchanged) if a token
 * id, position, sequence or block id is out of range or n_tokens exceeds max_tokens. Does not
 * allocate. */
sp_err sp_forward_eval(sp_forward *f, sp_kvbuf *kv, const sp_batch *b, float *logits) SP_MUST_USE;

#endif

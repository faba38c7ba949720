/* Drafts for speculative decoding that cost no forward pass: tokens proposed by looking up what
 * followed the current context elsewhere. The engine checks every proposed token in its batched
 * step (the target model's own tokens decide), so a draft only has to be cheap and often right.
 *
 *  - sp_spec_lookup: n-gram lookup in one token source. With the request's own prompt and
 *    output as the source it is prompt lookup (code edits, summaries that quote, repeated
 *    boilerplate); with the client's predicted output (the API's `prediction`) as the source it
 *    follows that text wherever the output has got to.
 *  - sp_spec_index: an n-gram index shared across requests: every n tokens seen map to the
 *    tokens that followed them last, in a fixed-size table (older entries are overwritten), so
 *    that text repeated between requests (tool outputs, templates) is drafted too. Entries
 *    carry a salt (the requests' cache salt): text is drafted only for requests of the salt
 *    it came from, as cached KV is shared only between them.
 *
 * Token ids are plain int32 values; nothing here knows the vocabulary. Not thread safe: the
 * engine thread owns an index. */
#ifndef SP_SPEC_LOOKUP_H
#define SP_SPEC_LOOKUP_H

#include <stdint.h>

#include "base/err.h"

/* The longest suffix of ctx[0..n_ctx), from max_n tokens down to min_n (1 <= min_n <= max_n),
 * that also occurs in src[0..n_src) with a token after it: writes up to k of the tokens that
 * follow its latest such occurrence to out[k] and returns their count (0: no suffix of those
 * lengths occurs, or k <= 0). An occurrence at j (src[j..j+n) equal to the suffix) counts when
 * j + n < n_src; so when src is ctx itself (prompt lookup) the suffix's own place at the end
 * never counts, and the draft repeats what followed an earlier occurrence. When n_ctx < min_n
 * (a predicted output not started yet), the first k tokens of src. Cost O(n_src max_n). */
int32_t sp_spec_lookup(const int32_t *src, int32_t n_src, const int32_t *ctx, int32_t n_ctx,
                       int32_t min_n, int32_t max_n, int32_t k, int32_t *out);

typedef struct sp_spec_index sp_spec_index;

/* An index of n-grams of n tokens (1 <= n <= 8), each remembering up to k_max (1..16) following
 * tokens, in 2^log2_slots slots (4..24). Returns SP_ERR_INVALID for other values, SP_ERR_NOMEM
 * if the table cannot be allocated; *out is written only on success. */
SP_MUST_USE sp_err sp_spec_index_create(int32_t n, int32_t k_max, int32_t log2_slots,
                                        sp_spec_index **out);
void sp_spec_index_destroy(sp_spec_index *x);

/* Records every n-gram of tokens[0..n_tokens) with the (up to k_max) tokens after it, under
 * salt; an n-gram seen before takes its latest continuation, unless that is a prefix of the
 * one it has (the same text added again, cut shorter). Slots are addressed by a hash of the
 * salt and n-gram and hold both, so a lookup never returns another n-gram's (or salt's)
 * continuation; a collision overwrites. Does not allocate. */
void sp_spec_index_add(sp_spec_index *x, uint64_t salt, const int32_t *tokens, int32_t n_tokens);

/* The continuation recorded under salt for the last n tokens of ctx: up to k of its tokens into
 * out[k]; the count (0: none recorded, n_ctx < n, or k <= 0). */
int32_t sp_spec_index_lookup(const sp_spec_index *x, uint64_t salt, const int32_t *ctx,
                             int32_t n_ctx, int32_t k, int32_t *out);

#endif

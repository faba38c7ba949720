/* Token sampling: parameters, the per-request sampler, and log-probabilities.
 *
 * The sampler follows llama.cpp's default chain, in this order:
 *
 *   penalties -> top_k -> top_p -> min_p -> temperature -> draw from the distribution
 *
 * (llama.cpp's typical-p, DRY, XTC and top-n-sigma stages are not implemented; they are off by
 * default there.) With temperature <= 0 the sampler is greedy: the argmax of the penalized
 * logits, ties going to the lowest token id; top_k, top_p and min_p never change the argmax, so
 * they are skipped. top_p and min_p see the probabilities at temperature 1, as in llama.cpp.
 *
 * Candidate order. Candidates are ordered by (logit descending, token id ascending); this is a
 * strict total order, so every truncation keeps a uniquely defined set and the result does not
 * depend on how the selection algorithm partitions.
 *
 * Cost per token (n = n_vocab):
 *   - one O(n) pass over the logits (a copy, except for greedy and small top_k, which scan
 *     them in place); penalties cost O(distinct tokens in the window) on the copy;
 *   - top_k with k <= n/16: one pass keeping the k best in a heap (most tokens cost a single
 *     comparison with the heap's worst), then the k are sorted; larger k: quickselect
 *     (median-of-three, falling back to heapsort when the recursion runs deep) moves the k best
 *     to the front in O(n), then an O(k log k) sort of those k;
 *   - top_p without top_k: one pass sums exp(l - max) into 1024 buckets by distance below the
 *     maximum logit (1/32 logit wide); the bucket where the cumulative mass reaches top_p holds
 *     the cut. A three-way partition keeps the better buckets unsorted and sorts only the
 *     candidates of that one bucket to place the cut exactly. O(n) plus the sort of one
 *     bucket, which is large only when very many logits lie within 1/32 of each other there;
 *   - min_p alone: one filtering pass, no sort;
 *   - the final softmax and draw: O(candidates left).
 * No step allocates memory: the sampler allocates all of its scratch in sp_sampler_create.
 *
 * Numerics. Probabilities are computed in double with the maximum subtracted first
 * (exp(l - max) <= 1, no overflow). Temperature is folded into the final softmax as
 * exp((l - max) / T) evaluated in double, so tiny temperatures cannot overflow. A NaN logit is
 * treated as -inf and +inf as FLT_MAX. If every candidate is -inf the first one in candidate
 * order (the lowest id) is returned. */
#ifndef SP_SAMPLE_SAMPLE_H
#define SP_SAMPLE_SAMPLE_H

#include <stdbool.h>
#include <stdint.h>

#include "base/err.h"
#include "sample/rng.h"

/* Longest repeat-penalty window accepted by validation (tokens). */
#define SP_SAMPLE_MAX_PENALTY_WINDOW (1 << 20)

typedef struct sp_sample_params {
    float temperature;       // 0 (or less) = greedy; valid range [0, 100]
    int32_t top_k;           // keep the k most likely tokens; <= 0 = off
    float top_p;             // nucleus: smallest set with cumulative probability >= top_p;
                             // 1 = off; valid range (0, 1]
    float min_p;             // drop tokens with p < min_p * p_max; 0 = off; range [0, 1]
    float repeat_penalty;    // llama.cpp's: logit > 0 ? logit / rp : logit * rp; 1 = off;
                             // range (0, 100]
    int32_t repeat_last_n;   // penalty window in accepted tokens; 0 = penalties off,
                             // -1 = the whole history; range [-1, SP_SAMPLE_MAX_PENALTY_WINDOW]
    float frequency_penalty; // OpenAI: logit -= frequency_penalty * count; range [-2, 2]
    float presence_penalty;  // OpenAI: logit -= presence_penalty * (count > 0); range [-2, 2]
    uint64_t seed;           // RNG seed; the same seed gives the same tokens for the same logits
} sp_sample_params;

/* llama.cpp's defaults: temperature 0.8, top_k 40, top_p 0.95, min_p 0.05, repeat_penalty 1,
 * repeat_last_n 64, no frequency or presence penalty, seed 0. A server should set `seed` from
 * the request, or from a random source when the request has none. */
sp_sample_params sp_sample_params_default(void);

/* Checks every field against the ranges documented above. On failure returns SP_ERR_INVALID and
 * fills d (if not NULL) with a message and, in d->param, the field's API name ("temperature",
 * "top_p", "min_p", "repeat_penalty", "repeat_last_n", "frequency_penalty",
 * "presence_penalty"). NaN is rejected everywhere. Thread-safe (no shared state). */
SP_MUST_USE sp_err sp_sample_params_validate(const sp_sample_params *p, sp_diag *d);

/* The per-request sampler. Owned by one thread (the engine loop); it keeps the penalty history
 * and the RNG of one request. */
typedef struct sp_sampler sp_sampler;

/* Creates a sampler for a vocabulary of n_vocab tokens. Copies *p (which must pass
 * sp_sample_params_validate) and allocates all scratch up front: candidate arrays of n_vocab
 * entries, the penalty history ring and the token counts. Returns SP_ERR_INVALID for invalid
 * parameters or n_vocab <= 0, SP_ERR_NOMEM if an allocation fails; *out is written only on
 * success. */
SP_MUST_USE sp_err sp_sampler_create(const sp_sample_params *p, int32_t n_vocab,
                                     sp_sampler **out);

/* Frees the sampler; NULL is a no-op. */
void sp_sampler_destroy(sp_sampler *s);

/* Chooses the next token from logits[n_vocab] (borrowed, not modified). Does not allocate.
 * A non-greedy call consumes exactly one RNG draw, greedy calls none. The token is NOT added to
 * the penalty history: call sp_sampler_accept for that. */
int32_t sp_sampler_sample(sp_sampler *s, const float *logits);

/* A draft model's proposal for this request's next position: greedy samplers take the argmax
 * of draft_logits[n_vocab] (q untouched); others draw from q, the distribution
 * sp_sampler_distribution gives for draft_logits (this request's penalties, top_k, top_p,
 * min_p and temperature, applied to the draft model's logits), written densely to q[n_vocab]
 * (0 outside its candidates). One RNG draw (greedy: none). Does not allocate. */
int32_t sp_sampler_propose(sp_sampler *s, const float *draft_logits, float *q);

/* Speculative decoding's check of a drafted token: the token to emit where a drafter proposed
 * `draft`; the draft is accepted when they are equal.
 *
 * q NULL: a drafter that proposes a single token (prompt lookup, a predicted output: a point
 * mass). The token is sp_sampler_sample's: rejection sampling of a point mass accepts with
 * probability p(draft), as a plain draw does, so the plain draw loses nothing and keeps the
 * seed's token stream: a request's tokens are the same with speculation or without.
 *
 * q not NULL: a draft drawn from q[n_vocab] (sp_sampler_propose's). Greedy: the argmax.
 * Otherwise the rejection
 * sampling of Leviathan et al. and Chen et al.: with p this sampler's distribution for logits,
 * the draft with probability min(1, p(draft) / q(draft)); else a token drawn from the residual
 * max(0, p - q), renormalized. Over the draw of the draft from q and this check, the result is
 * distributed exactly as p, and equals draft if and only if the draft is accepted. One RNG draw,
 * two on rejection (greedy: none). Does not allocate. */
int32_t sp_sampler_verify_q(sp_sampler *s, const float *logits, int32_t draft, const float *q);

/* Adds a token (0 <= token < n_vocab, asserted) to the penalty history; the oldest token leaves
 * the window once it holds repeat_last_n tokens. Prompt tokens may be accepted too, as
 * llama.cpp does, so that the repeat penalty sees them. Does not allocate. A no-op when
 * penalties are off. */
void sp_sampler_accept(sp_sampler *s, int32_t token);

/* Forgets the penalty history and reseeds the RNG with the original seed, so the sampler
 * behaves as freshly created. */
void sp_sampler_reset(sp_sampler *s);

/* Applies the sampler's penalties, for its current history, to logits[n_vocab] in place (the
 * caller passes its own copy). This is exactly the first stage of sp_sampler_sample: for each
 * token t with count c > 0 in the window,
 *     l = l <= 0 ? l * repeat_penalty : l / repeat_penalty;
 *     l -= c * frequency_penalty + presence_penalty;          (float arithmetic)
 * Does not allocate. */
void sp_sampler_apply_penalties(const sp_sampler *s, float *logits);

/* Computes the distribution sp_sampler_sample would draw from, without drawing: after
 * penalties, top_k, top_p, min_p and temperature. Writes the first min(count, cap) candidates to
 * ids[cap] and probs[cap] (probabilities summing to 1 over all `count` candidates) and returns
 * count. Candidates come in descending probability (ties: lower id first) when top_k cut the
 * list and top_p was off; otherwise in an unspecified order (ascending id when no stage cut
 * anything). Greedy samplers return the argmax with probability 1.
 * Does not allocate; it does not touch the RNG. */
int32_t sp_sampler_distribution(sp_sampler *s, const float *logits, int32_t cap, int32_t *ids,
                                float *probs);

/* Log-probabilities for the OpenAI API, from the raw logits[n_vocab] (before any sampling
 * transform): log-softmax computed in double with the maximum subtracted.
 *   - if token_logprob is not NULL, *token_logprob = logprob of `token` (0 <= token < n_vocab);
 *   - top_ids[n_top] and top_logprobs[n_top] receive the min(n_top, n_vocab) most likely tokens,
 *     most likely first, ties lower id first (n_top may be 0, then both may be NULL).
 * Returns SP_ERR_INVALID, writing nothing, if n_vocab <= 0, n_top < 0, token is out of range
 * while token_logprob is wanted, or no logit is above -inf. NaN logits count as -inf. Cost
 * O(n_vocab log n_top); does not allocate. Thread-safe. */
SP_MUST_USE sp_err sp_sample_logprobs(const float *logits, int32_t n_vocab, int32_t token,
                                      int32_t n_top, float *token_logprob, int32_t *top_ids,
                                      float *top_logprobs);

#endif

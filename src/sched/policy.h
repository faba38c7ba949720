/* Admission policies: the engine asks its policy, for the request at the head of the waiting
 * queue, whether to admit it into the running batch now. Policies plug in through this table of
 * function pointers without touching the engine loop.
 *
 * What a policy sees is a snapshot built by the engine each step: the pool's free capacity and,
 * for every running request, how many tokens it holds in the KV cache, how many it has
 * generated and how many it may still generate. A policy may keep its own state (for example a
 * history of output lengths, fed by on_finish). All calls come from the engine thread. */
#ifndef SP_SCHED_POLICY_H
#define SP_SCHED_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include "base/err.h"

typedef struct sp_policy_req {
    int32_t n_kv;          // tokens the request holds (or will hold once admitted) in the cache
    int32_t n_generated;   // tokens generated so far
    int32_t max_remaining; // tokens it may still generate (max_tokens and context permitting)
    int32_t n_prompt;      // prompt tokens (original prompt, without generated ones)
    int32_t priority;      // lower is more urgent
    int32_t blocks_needed; // candidates: blocks admission must take from the pool now
    int64_t t_arrival_us;
} sp_policy_req;

typedef struct sp_sched_state {
    int32_t block_size;
    int32_t n_blocks;    // pool size
    int32_t n_available; // free + evictable cached blocks
    int32_t n_running;
    const sp_policy_req *running; // (n_running) oldest first
    int32_t n_waiting;            // including the candidate
} sp_sched_state;

typedef struct sp_admission_policy {
    const char *name;
    void *ctx;
    /* True to admit cand now. The engine still checks that its blocks can be reserved. */
    bool (*admit)(void *ctx, const sp_sched_state *s, const sp_policy_req *cand);
    /* A request finished after generating n_generated tokens (NULL if unused). */
    void (*on_finish)(void *ctx, int32_t n_generated, int32_t max_tokens);
    /* Frees ctx (NULL if nothing to free). */
    void (*destroy)(void *ctx);
    /* The peak KV use (tokens) the last admit call predicted, for metrics; NULL if the policy
     * predicts none. */
    int64_t (*predicted_peak)(void *ctx);
} sp_admission_policy;

/* Aggressive (vLLM's): admit while the free blocks cover the candidate's prompt. Memory that
 * decodes need later is obtained by preemption. */
sp_admission_policy sp_policy_aggressive(void);

/* Conservative (TGI's, TensorRT-LLM's default): admit only if every running request and the
 * candidate can reach their max_tokens (capped by the context) at the same time. Never
 * preempts, often leaves memory idle. */
sp_admission_policy sp_policy_conservative(void);

/* Past-Future (LightLLM): admit while the predicted PEAK KV use of the running batch plus the
 * candidate fits the pool.
 *
 * The past: a window of the output lengths of the last `window` finished requests (until
 * `window / 10` of them exist, each request is assumed to use its whole max_tokens). The
 * future: for a running request with c tokens in the cache and d generated, a remaining length
 * r is drawn from the history conditioned on being longer than d (r = sample - d; max_remaining
 * when no recorded length exceeds d), capped by its max_remaining; the candidate's r is drawn
 * from the whole history. Sorted by r descending, the requests still alive when the k-th
 * finishes are the first k, so the peak is max_k (sum_{j<=k} c_j + k * r_k), plus block
 * rounding (block_size - 1 per live request). The largest peak over `samples` independent
 * draws is compared with the pool. All integer arithmetic; per decision O(n log n) for n
 * running requests (the history is kept sorted, each draw is a binary search). Owns its
 * memory (sized for max_seqs running requests); destroy frees it. */
sp_err sp_policy_past_future_create(int32_t window, int32_t samples, int32_t max_seqs,
                                    uint64_t seed, sp_admission_policy *out) SP_MUST_USE;

/* Creates a policy by name: "aggressive", "conservative" or "past-future" (defaults: window
 * 200, 4 samples). SP_ERR_INVALID for an unknown name. */
sp_err sp_policy_create(const char *name, int32_t max_seqs, uint64_t seed,
                        sp_admission_policy *out) SP_MUST_USE;

/* The peak of the Past-Future formula for n requests holding c[i] tokens and needing r[i] more:
 * max_k (sum_{j<=k} c_j + k * r_k) over the requests sorted by r descending, with order[n] as
 * scratch (filled with the sorted order). Exposed for tests. */
int64_t sp_policy_peak(const int32_t *c, const int32_t *r, int32_t n, int32_t *order);

/* Test hook: one draw of a Past-Future policy's remaining length for a request that generated d
 * tokens and may generate max_rem more (policy.ctx of a past-future policy). */
int32_t sp__past_future_draw(void *ctx, int32_t d, int32_t max_rem);

#endif

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
} sp_admission_policy;

/* The default policy: admit while the free blocks cover the candidate's prompt. Memory that
 * decodes need later is obtained by preemption. */
sp_admission_policy sp_policy_aggressive(void);

#endif

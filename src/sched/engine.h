/* The continuous-batching engine: one owner thread holds the model's forward state and the KV
 * pool, and every step runs ONE forward pass over the tokens of all live requests.
 *
 * Each step builds a batch under a token budget (max_batch_tokens) and a sequence cap
 * (max_seqs): first one decode token for every running request whose prompt is done; then new
 * requests from the waiting queue are admitted in arrival order, as long as the admission policy
 * agrees, their prompt's blocks can be reserved and the prompt tokens admitted but not yet
 * computed fit one step's token budget; then prefill chunks of the admitted prompts, the fewest
 * remaining tokens first (with aging, so that short prompts get their first token soon and a
 * long one is never starved).
 *
 * Stall-free steps: when a step has decodes, its prefill chunks are sized so that the step's
 * predicted time (sched/steptime.h, a model fitted to every measured step) stays within a time
 * budget (max_step_ms, by default 2.25x the predicted time of a pure decode step of every
 * running and waiting request), with a floor of prefill tokens per step so that prompts always
 * progress: a stream's next token never waits for a long prompt's prefill.
 * When a decode cannot get a KV block, the newest running request is preempted by recompute:
 * it releases its blocks and returns to the head of the waiting queue, keeping its generated
 * tokens, which become part of its prompt when it resumes; a resumed request cannot be
 * preempted again until its prefill is done. Cancellation frees a request's blocks in the next
 * step. With the prefix cache on, full blocks are shared between requests with equal prefixes.
 *
 * Because the forward pass is batch invariant, a request's tokens do not depend on what else
 * runs, on chunking or on preemption: the same seed gives the same text.
 *
 * Threads: sp_engine_submit, sp_request_cancel, sp_engine_take_ready, sp_engine_stats and
 * sp_engine_notify_fd may be called from any thread. The engine either runs its own thread
 * (sp_engine_start) or is stepped by its creator with sp_engine_step (tests), never both.
 *
 * Cache-aware admission: among the first prefix_window waiting requests, the one with the most
 * prompt tokens in the prefix cache is admitted first, unless the head has waited longer than
 * max_reorder_wait_ms; and a request whose prefix blocks another running request is computing
 * right now waits for them, so that requests arriving together with a shared prefix compute it
 * once.
 *
 * Priorities: a request's `priority` (lower is more urgent) orders the waiting queue before
 * arrival does, and a more urgent waiting request may preempt the newest of the least urgent
 * running ones when the sequence cap or the memory keeps it out. A request that has waited
 * longer than max_wait_ms goes first whatever its priority; it does not preempt anyone on that
 * account (only a more urgent declared priority does), or an overloaded server, where every
 * request waits that long, would preempt in a storm. */
#ifndef SP_SCHED_ENGINE_H
#define SP_SCHED_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "base/err.h"
#include "model/model.h"
#include "sched/policy.h"
#include "sched/request.h"
#include "tok/tok.h"

#define SP_ENGINE_MAX_SPEC 16  // most draft tokens per decode (spec_k)
#define SP_ENGINE_PRED_K 8     // draft tokens per decode from a predicted output without spec_k
#define SP_ENGINE_PRED_ROWS 64 // logits rows for those drafts per step (without spec_k)
#define SP_ENGINE_SPEC_AUTO_K 8 // longest draft of spec auto by default

typedef struct sp_engine_step_info {
    int32_t n_tokens;  // tokens in the step's batch
    int32_t n_decode;  // of which decode tokens
    int32_t n_draft;   // and speculative draft tokens after them
    int32_t n_accepted; // drafts accepted: the decodes produced n_decode + n_accepted tokens
    int32_t n_seqs;    // sequences in the batch
    int32_t n_preempted;
    double predicted_us; // the step-time model's prediction for the step, before it ran
    double measured_us;  // the step's time: forward pass and sampling
    double budget_us;    // its time budget (0: none)
} sp_engine_step_info;

typedef struct sp_engine_opts {
    int32_t max_batch_tokens; // token budget of one step (default 512)
    int32_t max_seqs;         // running requests at most (default 64)
    int32_t max_chunk;        // prefill tokens per request per step (default: the budget)
    int32_t max_step_ms;      // time budget of a step that has decodes (stall-free steps, see
                              // below): 0 (default) chooses it, 2.25x the predicted time of the
                              // step's decodes alone; -1: none (the token budget only)
    bool prefer_throughput;   // no time budget at all: whole chunks (offline jobs)
    int32_t n_threads;        // compute threads, the engine thread included (0: all cores)
    int32_t n_ctx;            // context length per request (default: the model's, <= 4096)
    int32_t block_size;       // positions per KV block (default 16)
    int64_t kv_bytes;         // KV pool size in bytes; 0: use kv_tokens
    int32_t kv_tokens;        // KV pool size in tokens; 0 with kv_bytes 0: max_seqs * n_ctx
                              // capped at 1 GiB
    sp_dtype kv_type;         // SP_DTYPE_F16 (default) or SP_DTYPE_F32
    bool prefix_cache;        // share full blocks between requests (default true)
    int32_t prefix_window;    // waiting requests considered for cache-aware reordering (8)
    int32_t max_reorder_wait_ms; // a head waiting longer than this is admitted first (500)
    int32_t max_wait_ms;      // a request waiting longer than this goes first whatever its
                              // priority (30000; 0: never)
    uint64_t kv_hash_seed;    // seed of the prefix hashes (a server should pick it at random)
    int32_t kv_hash_bits;     // test hook: truncate prefix hashes to force collisions (0: off)
    int64_t session_ttl_ms;   // pin every finished turn's KV this long; -1 (default): choose
                              // from the observed gaps between turns; 0: never pin (plain LRU
                              // caching); see sched/session.h
    int64_t session_ttl_cap_ms; // longest chosen TTL (default 60 s)
    int32_t max_sessions;     // sessions remembered (default 1024)
    uint64_t cache_salt;      // mixed into the prefix hashes (identifies the model)
    char admission[16];         // "aggressive", "conservative" or "past-future" (the default):
                                // the engine creates that policy (sized for max_seqs)
    sp_admission_policy policy; // a policy of the caller's, used when admission is empty (the
                                // engine then destroys it); with neither, aggressive
    int32_t spec_k;       // speculative decoding: up to this many draft tokens per decode and
                          // step, drafted by prompt lookup over the request's prompt and output
                          // and checked in the same batched step (0, the default: off)
    bool spec_auto;       // with spec_k: each step, each request's draft length (0..spec_k)
                          // chosen for the most expected tokens per second of step time, from
                          // its acceptance so far and the step-time model
    const char *draft_model; // path of a GGUF draft model with the model's vocabulary: it
                          // drafts instead of prompt lookup, run by the engine beside the model
                          // (its own KV in the same blocks); with spec_k 0 and !spec_off, spec
                          // auto with up to SP_ENGINE_SPEC_AUTO_K tokens. NULL: none
    bool spec_off;        // speculation turned off explicitly: no drafts at all, not even from
                          // predicted outputs, and no draft model is loaded
    const char *step_log; // append one JSON line per step to this file (its tokens by kind,
                          // attended positions, predicted and measured time, budget); NULL:
                          // none
    /* Hooks for tests and tracing, called on the engine thread; each may be NULL. on_step after
     * each step; on_logits with a request's logits row just before its token is sampled;
     * on_preempt when a request is preempted. They share one context pointer. */
    void (*on_step)(void *ctx, const sp_engine_step_info *info);
    void (*on_logits)(void *ctx, sp_request *r, const float *logits, int32_t n_vocab);
    void (*on_preempt)(void *ctx, sp_request *r);
    void *hook_ctx;
} sp_engine_opts;

sp_engine_opts sp_engine_opts_default(void);

typedef struct sp_engine_stats {
    uint64_t steps;
    uint64_t prompt_tokens;     // prompt tokens computed (prefill, including recompute)
    uint64_t prefix_query_tokens; // prompt tokens of admitted requests (prefix-cache queries)
    uint64_t cached_tokens;     // prompt tokens taken from the prefix cache
    uint64_t evictions;         // cached blocks reclaimed for new data
    uint64_t session_turns;     // turns of multi-turn sessions
    uint64_t session_pins;      // finished turns whose KV was pinned
    uint64_t session_pins_hit;  // pins used by the session's next turn
    uint64_t session_pins_expired;   // pins that reached their TTL unused
    uint64_t session_pins_reclaimed; // pins given up for memory
    int32_t n_blocks_pinned;    // blocks held by session pins
    uint64_t generated_tokens;
    uint64_t spec_drafts;          // decodes that carried draft tokens
    uint64_t spec_draft_tokens;    // draft tokens checked
    uint64_t spec_accepted_tokens; // of which accepted
    uint64_t spec_accepted_per_pos[SP_ENGINE_MAX_SPEC]; // accepted drafts by position in theirs
    uint64_t spec_k_hist[SP_ENGINE_MAX_SPEC + 1]; // decodes by their draft's length (with
                                                  // speculation on, or a predicted output)
    uint64_t spec_draft_model_us;  // time spent in the draft model
    uint64_t grammar_tokens;       // tokens chosen under a grammar
    uint64_t grammar_masks;        // of which needed the full mask (the sampler's choice was
                                   // not allowed)
    uint64_t grammar_mask_hits;    // of those, masks found in the cache of grammar states
    uint64_t grammar_mask_us;      // time spent on full masks (cached or computed)
    uint64_t preemptions;
    uint64_t preemptions_priority; // of which to admit a more urgent request
    uint64_t admissions;        // admission decisions that admitted a request
    uint64_t deferrals;         // decisions that kept the candidate waiting (policy or memory)
    int64_t predicted_peak_tokens; // the admission policy's last predicted peak (0 if none)
    int32_t peak_blocks_used;   // most blocks in use at once so far
    uint64_t finished[5];       // by sp_finish
    int32_t n_running;
    int32_t n_waiting;          // including requests submitted since the last step
    int32_t n_blocks;
    int32_t n_blocks_used;      // referenced by requests
    int32_t n_blocks_cached;    // kept for prefix reuse, evictable
    int32_t block_size;
    int32_t n_ctx;
    int64_t last_step_us;       // when the last step ended (sp_time_us clock)
    double step_predicted_us;   // the last step's predicted time (before it ran)
    double step_measured_us;    // and its measured time (forward pass and sampling)
    double step_budget_us;      // the last step's time budget (0: none)
    double step_model_median_error; // median |predicted - measured| / measured, recent steps
    uint64_t step_error_hist[6]; // steps by that relative error: <= 5%, 10%, 20%, 50%, 100%, more
    double step_error_sum;       // the sum of those errors
    int64_t busy_since_us;      // when the engine last went from idle to busy (0 when idle)
} sp_engine_stats;

typedef struct sp_engine sp_engine;

/* Creates an engine for a model and its vocabulary (both borrowed; they must outlive it):
 * allocates the KV pool and all per-step buffers once. SP_ERR_INVALID (with diag) for bad
 * options, SP_ERR_NOMEM if the pool does not fit in memory. */
sp_err sp_engine_create(const sp_model *m, const sp_vocab *v, const sp_engine_opts *opts,
                        sp_engine **out, sp_diag *diag) SP_MUST_USE;

/* Stops the thread if started (cancelling every request), releases everything; NULL ok. */
void sp_engine_destroy(sp_engine *e);

/* Starts the engine thread. */
sp_err sp_engine_start(sp_engine *e) SP_MUST_USE;

/* Hands a request to the engine, which takes its own reference. SP_ERR_RANGE (with diag,
 * param "prompt") if the prompt does not fit the context, SP_ERR_NOMEM, SP_ERR_INVALID if the
 * request was submitted before or the engine is shutting down. Any thread. */
sp_err sp_engine_submit(sp_engine *e, sp_request *r, sp_diag *diag) SP_MUST_USE;

/* Runs one step on the calling thread (for engines not started). Returns false if there was
 * nothing to do. */
bool sp_engine_step(sp_engine *e);

/* True while requests are waiting or running (engine thread or a stepping caller). */
bool sp_engine_busy(sp_engine *e);

/* A file descriptor (eventfd) that becomes readable when requests have new output; read it
 * (8 bytes) to reset, then call sp_engine_take_ready. */
int sp_engine_notify_fd(const sp_engine *e);

/* Takes the list of requests with new output since the last call, each with a reference the
 * caller must release. Walk it with sp_request_next_ready, calling it once for every entry
 * BEFORE reading that request's output (it takes the entry off the list, so that output
 * published afterwards notifies again). One consumer thread at a time. */
sp_request *sp_engine_take_ready(sp_engine *e);
sp_request *sp_request_next_ready(sp_request *r);

/* Counters, a consistent snapshot. Any thread. */
void sp_engine_stats_get(sp_engine *e, sp_engine_stats *out);

/* The context length requests get. */
int32_t sp_engine_n_ctx(const sp_engine *e);

/* The most tokens (prompt and output) one request can ever hold: the context length, or the
 * KV pool's size in tokens when the pool is smaller. A request reaching it finishes with
 * SP_FINISH_LENGTH, so that one request alone always fits the pool and never waits forever. */
int32_t sp_engine_max_len(const sp_engine *e);

/* Requests that run at once at most (the max_seqs option). */
int32_t sp_engine_max_seqs(const sp_engine *e);

#endif

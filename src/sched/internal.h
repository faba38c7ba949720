/* The request's full state, shared by request.c and engine.c (not part of the API). */
#ifndef SP_SCHED_INTERNAL_H
#define SP_SCHED_INTERNAL_H

#include "grammar/matcher.h"
#include "sched/request.h"

typedef enum sp__req_state {
    SP__REQ_NEW,      // created, not submitted
    SP__REQ_WAITING,  // in the engine's waiting queue
    SP__REQ_RUNNING,  // admitted: holds KV blocks
    SP__REQ_DONE,     // finished; the engine has let go of it
} sp__req_state;

struct sp_request {
    // Immutable after creation (user: after submission).
    const sp_vocab *vocab;
    void *user;
    sp_req_params params; // stop strings are owned by the matcher; params.stop is NULL
    int32_t n_prompt;
    int32_t cap_tokens; // n_prompt + max_tokens

    // Engine thread only (after submission).
    uint64_t id;
    struct sp_engine *engine;
    sp__req_state state;
    uint64_t arrival;       // submission order, for first-come-first-served
    int32_t *tokens;        // (cap_tokens) prompt, then generated tokens
    int32_t n_tokens;       // known tokens
    int32_t n_computed;     // tokens whose keys and values are in the cache
    int32_t n_generated;
    bool guard;             // resumed after preemption: not preemptible until prefilled
    double spec_acc, spec_rej; // decayed counts of accepted draft tokens and of drafts cut
                               // short by a rejection: the acceptance estimate of --spec auto
    int32_t spec_idle;         // decodes since this request last carried a draft
    int32_t draft_n;           // tokens whose draft-model KV is in the cache (<= n_computed)
    uint64_t session;       // session of this turn (params.session_id, or matched by history)
    uint64_t scheduled_step; // the last engine step whose batch includes this request
    bool seq_ready;         // seq is initialized
    sp_kv_seq seq;
    sp_sampler *sampler;
    sp_matcher *matcher;    // where the output stands in params.grammar (NULL: no grammar)
    sp_stop *stop;
    sp_detok detok;
    char *pending;          // (cap_pending) text fed to the stop matcher, not yet released
    size_t n_pending, cap_pending;
    sp_request *next;       // inbox / waiting / running list link
    sp_request *prev;

    // Shared with clients, under mu.
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int32_t out_n_tokens;
    sp_req_token *out_tokens; // (max_tokens)
    int32_t *out_top_ids;     // (max_tokens, n_logprobs) or NULL
    float *out_top_lps;       // (max_tokens, n_logprobs) or NULL
    char *out_text;
    size_t out_len, out_cap;
    sp_finish finish;
    sp_err error;
    char error_msg[160];
    sp_req_stats stats;

    atomic_int refs;
    atomic_bool cancel;

    // Ready list of the engine's notifier, under the engine's notify lock.
    bool in_ready;
    sp_request *next_ready;
};

/* Engine side of request.c: appends released text / a token, and finishes (under mu, with a
 * broadcast). */
sp_err sp__request_publish(sp_request *r, const sp_req_token *tok, const int32_t *top_ids,
                           const float *top_lps, const char *text, size_t n_text);
void sp__request_finish(sp_request *r, sp_finish f, sp_err err, const char *msg);

#endif

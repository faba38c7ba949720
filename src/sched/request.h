/* A generation request and its output channel.
 *
 * A client (the HTTP server, the CLI, a test) creates a request from prompt tokens and
 * parameters, submits it to the engine (engine.h) and reads its output as it grows: generated
 * tokens (with optional log-probabilities), the text they detokenize to (stop strings already
 * cut, never half a UTF-8 character, never bytes that might still turn out to start a stop
 * string), and finally the finish reason.
 *
 * Threads. Everything the client passes is copied at creation. Afterwards the request is shared
 * by the client's thread and the engine thread: the output fields are written by the engine and
 * read through sp_request_read under the request's mutex; the cancel flag is atomic. All other
 * state is the engine's. The request is reference-counted: sp_request_create returns one
 * reference, the engine holds its own while the request is live, and the last
 * sp_request_release frees it. */
#ifndef SP_SCHED_REQUEST_H
#define SP_SCHED_REQUEST_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "grammar/grammar.h"
#include "kv/table.h"
#include "sample/sample.h"
#include "sample/stop.h"
#include "tok/tok.h"

#define SP_REQ_MAX_TOP_LOGPROBS 20

typedef enum sp_finish {
    SP_FINISH_NONE = 0,   // still running
    SP_FINISH_STOP,       // end-of-generation token or stop string
    SP_FINISH_LENGTH,     // max_tokens or the context length
    SP_FINISH_CANCELLED,  // sp_request_cancel or engine shutdown
    SP_FINISH_ERROR,      // see the error fields
} sp_finish;

/* Name for APIs and logs: "stop", "length", "cancelled", "error"; "" while running. */
const char *sp_finish_name(sp_finish f);

/* Requests of this priority or above are offline work (batch jobs): nobody waits on their
 * tokens, so they yield to online requests: while an online request is around (running,
 * waiting, or seen within the last second), offline requests decode a few at a time, in turn,
 * within a slice of each step's time, and not at all in a step that computes an online prompt
 * (the engine's step, engine.c). */
#define SP_PRIORITY_OFFLINE 1000000

typedef struct sp_req_params {
    sp_sample_params sample;
    int32_t max_tokens;   // tokens to generate at most (>= 1)
    bool ignore_eos;      // keep generating through end-of-generation tokens
    int32_t n_logprobs;   // -1: none; 0..SP_REQ_MAX_TOP_LOGPROBS: the chosen token's
                          // log-probability plus this many top alternatives per step
    bool special;         // render control tokens in the text
    int32_t priority;     // lower is more urgent (admission policies may use it);
                          // SP_PRIORITY_OFFLINE and above: offline work (below)
    const char *const *stop; // stop strings (copied), n_stop of them
    int32_t n_stop;
    uint64_t cache_salt;  // requests share cached KV only with equal salts (0 by default)
    uint64_t session_id;  // multi-turn session (0: none); see sched/session.h
    uint64_t tool_id;     // the tool this turn ends waiting on, if the client names it (0: none)
    int32_t deadline_ms;  // opt-in: the first token is wanted within this many ms of submission;
                          // a request that cannot make it is rejected early (finish "error",
                          // error SP_ERR_LIMIT) instead of being served late (0: none)
    const int32_t *prediction; // the expected output (the API's predicted outputs; copied),
    int32_t n_prediction;      // n_prediction tokens: drafts for speculative decoding
    sp_grammar *grammar;  // the output must be a sentence of this grammar (NULL: free); the
                          // request takes its own reference
    int32_t stop_after;   // finish with reason "stop" after this many tokens, as an
                          // end-of-generation token would (0: off). Admission policies do not
                          // see it: benchmarks use it to give requests output lengths that
                          // the server cannot know in advance
} sp_req_params;

/* Defaults: the sampler's defaults with temperature 1, max_tokens 16, no logprobs. */
sp_req_params sp_req_params_default(void);

/* Per-request timings (microseconds, sp_time_us clock; 0 = not yet) and counts. */
typedef struct sp_req_stats {
    int64_t t_submit_us;
    int64_t t_admit_us;       // first admission into the running batch
    int64_t t_first_token_us;
    int64_t t_end_us;
    int32_t n_prompt;         // prompt tokens
    int32_t n_cached;         // prompt tokens taken from the prefix cache at first admission
    int32_t n_generated;
    int32_t n_preemptions;
    int32_t n_draft_accepted; // speculative draft tokens accepted (predicted outputs: the
    int32_t n_draft_rejected; // accepted and rejected prediction tokens)
} sp_req_stats;

/* One generated token as published to the client. */
typedef struct sp_req_token {
    int32_t id;
    float logprob; // of id under the raw logits (only when n_logprobs >= 0)
} sp_req_token;

typedef struct sp_request sp_request;

/* Creates a request for prompt[n_prompt] (copied; n_prompt >= 1, ids checked against the
 * vocabulary) with params (copied; validated: sampling parameters, max_tokens >= 1,
 * n_logprobs range, stop strings). Allocates everything the engine will need for it: the
 * sampler, stop matcher, detokenizer and output buffers, so that serving it allocates nothing
 * on the engine thread. Errors: SP_ERR_INVALID with d->param naming the bad parameter
 * ("prompt", "max_tokens", "logprobs", "stop", or a sampler field); SP_ERR_NOMEM. Any thread. */
sp_err sp_request_create(const sp_vocab *v, const int32_t *prompt, int32_t n_prompt,
                         const sp_req_params *params, sp_request **out, sp_diag *d) SP_MUST_USE;

/* Adds / drops a reference; the last release frees the request. Any thread. */
void sp_request_retain(sp_request *r);
void sp_request_release(sp_request *r);

/* The id the engine gave the request when it was submitted (0 before). */
uint64_t sp_request_id(const sp_request *r);

/* Asks the engine to stop the request; it finishes with SP_FINISH_CANCELLED (unless it already
 * finished) and its KV blocks are freed in the engine's next step. Any thread, any time. */
void sp_request_cancel(sp_request *r);

/* What a client has read so far; start zeroed. */
typedef struct sp_req_cursor {
    int32_t n_tokens;
    size_t n_text;
} sp_req_cursor;

/* New output since *cur, copied out under the request's lock: up to cap_tokens new tokens into
 * tokens[] (and, when top logprobs were asked, their alternatives into top_ids/top_logprobs,
 * n_logprobs entries per token; may be NULL otherwise), and the new text appended to a buffer
 * the caller owns (*text, *text_cap grown with realloc as needed). Advances *cur. Returns the
 * finish reason once everything has been read (SP_FINISH_NONE before). SP_ERR_NOMEM from the
 * text buffer growth leaves *cur unchanged. Any thread. */
typedef struct sp_req_read {
    int32_t n_new_tokens;
    size_t n_new_text;
    sp_finish finish;  // final reason, set once all tokens and text have been read
    sp_err error;      // for SP_FINISH_ERROR
    char error_msg[160];
} sp_req_read;

sp_err sp_request_read(sp_request *r, sp_req_cursor *cur, sp_req_token *tokens,
                       int32_t cap_tokens, int32_t *top_ids, float *top_logprobs, char **text,
                       size_t *text_len, size_t *text_cap, sp_req_read *out) SP_MUST_USE;

/* Blocks until the request has output beyond *cur or has finished, or timeout_ms passes
 * (-1: no limit). For clients without an event loop (CLI, tests). Returns true if there is
 * something to read. Any thread but the engine's. */
bool sp_request_wait(sp_request *r, const sp_req_cursor *cur, int timeout_ms);

/* A snapshot of the request's timings and counts (under its lock). */
void sp_request_stats(sp_request *r, sp_req_stats *out);

/* An opaque pointer the client attaches (e.g. the HTTP exchange waiting on the request); the
 * engine never touches it. Set it before submitting. */
void sp_request_set_user(sp_request *r, void *user);
void *sp_request_get_user(const sp_request *r);

/* The prompt's length and the tokens the engine will compute for it (for admission). */
int32_t sp_request_n_prompt(const sp_request *r);

#endif

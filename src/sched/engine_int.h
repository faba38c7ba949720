/* The engine's state, shared by engine.c (the step, output, submission and the thread) and
 * schedule.c (who runs, who waits, who is preempted). Not part of the API. */
#ifndef SP_SCHED_ENGINE_INT_H
#define SP_SCHED_ENGINE_INT_H

#include <pthread.h>
#include <stdio.h>

#include "kv/pool.h"
#include "model/forward.h"
#include "model/kvbuf.h"
#include "sched/engine.h"
#include "sched/internal.h"
#include "sched/reqlist.h"
#include "sched/session.h"
#include "sched/steptime.h"
#include "grammar/maskcache.h"
#include "grammar/trie.h"
#include "spec/draft.h"

/* Where a request's drafts come from (one acceptance estimate each). */
typedef enum sp__draft_kind {
    SP__DRAFT_LOOKUP,     // prompt lookup
    SP__DRAFT_PREDICTION, // the request's predicted output
    SP__DRAFT_MODEL,      // the draft model
    SP__DRAFT_KINDS
} sp__draft_kind;

/* A running request with prompt left, and its place in the order prefill chunks are given. */
typedef struct sp__prefill_cand {
    double key;
    sp_request *r;
} sp__prefill_cand;

struct sp_engine {
    const sp_model *m;
    const sp_vocab *v;
    sp_engine_opts o;
    int32_t n_ctx;
    int32_t max_len; // most tokens one sequence can ever hold: n_ctx, or the pool if smaller

    // Engine thread only.
    sp_kvbuf kv;
    sp_kv_pool *pool;
    sp_forward *fw;
    sp_threadpool *threads;   // compute threads; the engine thread is worker 0
    sp_sessions *sessions;    // multi-turn sessions and their KV pins
    sp__req_list waiting;     // arrival order; preempted requests go back to the head
    sp__req_list running;     // arrival order (oldest first)
    uint64_t step_no;         // steps started (numbering starts at 1)
    sp_steptime steptime;     // predicts step times, learns from every step
    sp_step_shape shape;      // what the step being built holds so far
    FILE *step_log;           // opts.step_log, open for appending (NULL: none)
    double us_per_token;      // predicted cost of one prompt token in full chunks
    int32_t *b_tok;           // (max_batch_tokens) batch token ids
    int32_t *b_pos;           // (max_batch_tokens) positions
    int32_t *b_seq;           // (max_batch_tokens) sequence index within the batch
    int32_t *b_rows;          // (max_seqs (1 + spec_k)) rows whose logits are wanted
    const int32_t **b_tables; // (max_seqs) block tables
    int32_t *b_nblocks;       // (max_seqs) their lengths
    sp_request **b_reqs;      // (max_seqs) request of each batch sequence
    int32_t *b_chunk;         // (max_seqs) tokens each sequence contributes
    int32_t *b_out_seq;       // (max_seqs (1 + spec_k)) batch sequence of each output row
    int32_t *b_draft;         // (max_seqs, SP_ENGINE_MAX_SPEC) each sequence's draft tokens
    int32_t spare_rows;       // logits rows beyond one per sequence, for draft tokens
    sp_request **d_reqs;      // (max_seqs) the step's decodes, collected before they are added
    int32_t *d_tokens;        // (max_seqs, SP_ENGINE_MAX_SPEC) their drafts
    int32_t *d_len;           // (max_seqs) the draft tokens each carries
    int32_t *d_avail;         // (max_seqs) the draft tokens each has (--spec auto)
    double spec_acc[SP__DRAFT_KINDS], spec_rej[SP__DRAFT_KINDS]; // engine-wide decayed draft
                              // counts by kind of drafter: --spec auto's starting estimate
    struct sp_spec_index *ngrams; // finished requests' n-grams, for prompt lookup (NULL: none)
    sp_model *draft_model;    // --draft-model (owned; NULL: none)
    sp_draft *drafter;        // its forward passes and KV buffer (the twin of kv)
    sp_draft_seq *dseqs;      // (max_seqs) a step's call to the drafter
    float *dq;                // (n_dq_rows, n_vocab) distributions of sampled draft-model drafts
    int32_t n_dq_rows;
    int32_t *b_dk;            // (max_seqs) draft-model drafts of each batch sequence
    float **b_dq;             // (max_seqs) their distributions (rows of dq), or NULL
    // Offline work yielding to online requests (engine.c): until online_until_us (an online
    // request seen within ONLINE_LINGER_US), offline requests decode a few at a time, in turn
    // (off_cursor), and not at all while an online prompt is being computed.
    int64_t online_until_us;
    uint32_t off_cursor;
    bool yielding;
    bool online_blocked; // an online request was left waiting by the last step's admission
    double spec_cost_scale;   // measured cost of draft tokens / the step-time model's price
    double spec_cost_sxy, spec_cost_sxx; // its decayed least-squares sums (sp__spec_observe)
    double draft_ratio;       // the draft model's weight bytes / the model's
    double draft_scale;       // measured / predicted draft model time (decayed)
    int32_t *b_ndraft;        // (max_seqs) how many (0: a plain decode or a prompt chunk)
    float *logits;            // (max_seqs (1 + spec_k), n_vocab)
    sp_token_trie *trie;      // the vocabulary's token bytes, for grammar masks (built when the
                              // first constrained request is submitted; NULL before)
    uint32_t *gmask;          // (n_vocab / 32 rounded up) the allowed tokens of a grammar
    uint32_t *eog_mask;       // (same) the end-of-generation tokens
    float *glogits;           // (n_vocab) logits with the grammar's mask applied
    sp_mask_cache *masks;     // allowed tokens of recent grammar states
    sp_policy_req *views;     // (max_seqs) snapshot for the admission policy
    uint32_t *blk_seen;       // (n_blocks) the admission snapshot that last counted each block
    uint32_t blk_epoch;
    sp__prefill_cand *b_cand; // (max_seqs) prefill candidates of a step
    int32_t top_ids[SP_REQ_MAX_TOP_LOGPROBS];
    float top_lps[SP_REQ_MAX_TOP_LOGPROBS];

    // Inbox and thread control, under mu.
    pthread_mutex_t mu;
    pthread_cond_t cv;
    sp__req_list inbox;
    bool stopping;
    bool cancel_pending;
    uint64_t next_id;
    pthread_t thread;
    bool started;

    // Ready list, under nmu.
    pthread_mutex_t nmu;
    pthread_mutex_t gmu; // making the grammar masks' trie and cache (sp__constrain_prepare)
    sp_request *ready;
    int efd;

    // Statistics, under smu.
    pthread_mutex_t smu;
    sp_engine_stats stats;
};

/* engine.c: ends a request (releasing its blocks or pinning them for its session), publishes
 * its last output and drops the engine's reference. Engine thread. */
void sp__engine_finish(sp_engine *e, sp_request *r, sp_finish f, sp_err err, const char *msg);

/* constrain.c: sampling under a grammar (r->matcher), on the engine thread, and what it needs
 * made before the first constrained request reaches the engine. */

#define SP__MASK_CACHE_BYTES ((size_t)16 << 20) // memory for masks of recent grammar states

/* The token r emits for logits (a decode's row; draft/q as sp_sampler_verify_q's, draft -1 for
 * none), taken into r's matcher: the sampler's own choice when the grammar allows it, else its
 * choice among the tokens the grammar allows (end of generation only where the output is
 * complete). Returns SP_ERR_INVALID (with msg) when no token of the vocabulary can continue
 * the output, SP_ERR_LIMIT or SP_ERR_NOMEM. */
sp_err sp__constrain_sample(sp_engine *e, sp_request *r, const float *logits, int32_t draft,
                            const float *q, int32_t *tok, const char **msg);

/* Whether r's output is complete with nothing more allowed (the request is done). */
bool sp__constrain_done(const sp_request *r);

/* At submission of a request with a grammar, on the submitting thread: the trie, the mask
 * cache and the buffers, made once (under gmu), so that the engine thread neither builds them
 * nor allocates for them; the request's submission publishes them to it. SP_ERR_NOMEM. */
sp_err sp__constrain_prepare(sp_engine *e);

void sp__constrain_free(sp_engine *e);

/* speculate.c, all on the engine thread. */

/* The kind of drafter r's drafts come from. */
sp__draft_kind sp__spec_kind(const sp_engine *e, const sp_request *r);

/* Loads the draft model at path and checks that its vocabulary is m's (v); SP_ERR_INVALID with
 * diag when it is not. */
sp_err sp__spec_load_draft_model(const char *path, const sp_model *m, const sp_vocab *v,
                                 sp_model **out, sp_diag *diag);

/* Creates the drafter of e->draft_model (KV buffer of n_blocks, the twin of e->kv), after the
 * thread pool. */
sp_err sp__spec_open_drafter(sp_engine *e, int32_t n_blocks);

/* The draft tokens for r's next decode (at most max) into draft, their KV positions reserved;
 * their count. A draft model's are placeholders until sp__spec_run_draft_model. */
int32_t sp__spec_draft_for(sp_engine *e, sp_request *r, int32_t max, int32_t *draft);

/* The draft length d_len[i] of each of the n decodes collected in d_reqs: at most the d_len[i]
 * drafted, and max_total in all; chosen by --spec auto, else the drafts of the oldest first. The
 * positions of the drafts left out leave their block tables. */
void sp__spec_fit_drafts(sp_engine *e, int32_t n, int32_t max_total);

/* With a draft model: runs it over the batch built (n_seq sequences): every sequence's draft KV
 * brought up to date, and the draft-model drafts written into the batch. */
void sp__spec_run_draft_model(sp_engine *e, int32_t n_seq);

/* The distribution draft j of batch sequence s was drawn from (NULL: a point mass). */
const float *sp__spec_draft_q(const sp_engine *e, int32_t s, int32_t j);

/* Records the text of r, finished naturally, for the prompt lookup of later requests. */
void sp__spec_learn(sp_engine *e, const sp_request *r);

/* The step-time model's price of the batch's draft tokens (before the step's forward pass). */
double sp__spec_draft_us(const sp_engine *e, int32_t n_seq);

/* Learns what draft tokens cost from a measured step with drafts priced draft_us. */
void sp__spec_observe(sp_engine *e, double predicted_us, double draft_us, double measured_us);

/* After the check of batch sequence s (r, still running): acc of its drafts were accepted. */
void sp__spec_checked(sp_engine *e, int32_t s, sp_request *r, int32_t acc);

/* schedule.c, all on the engine thread. */

/* KV blocks that n_tokens positions occupy. */
int32_t sp__sched_blocks_for(const sp_engine *e, int32_t n_tokens);

/* Makes room for r to claim n more positions, preempting the newest unprotected running
 * requests that are not in this step's batch; false if r itself had to go or nothing could be
 * freed. Counts preemptions in *n_preempted. */
bool sp__sched_reserve(sp_engine *e, sp_request *r, int32_t n, int32_t *n_preempted);

/* Admits the next waiting request if the policy and the memory allow; returns it (running,
 * its prompt's blocks reserved, cached prefix taken) or NULL. */
sp_request *sp__sched_admit_next(sp_engine *e);

/* Rejects waiting requests that cannot meet their deadline. */
void sp__sched_reject_late(sp_engine *e);

/* Lets a more urgent waiting request displace less urgent running ones. */
void sp__sched_displace_for_priority(sp_engine *e);

#endif

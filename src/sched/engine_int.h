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
    double spec_acc[2], spec_rej[2]; // engine-wide decayed draft counts, prompt lookup [0] and
                                     // predicted outputs [1]: --spec auto's starting estimate
    int32_t *b_ndraft;        // (max_seqs) how many (0: a plain decode or a prompt chunk)
    float *logits;            // (max_seqs (1 + spec_k), n_vocab)
    sp_policy_req *views;     // (max_seqs) snapshot for the admission policy
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
    sp_request *ready;
    int efd;

    // Statistics, under smu.
    pthread_mutex_t smu;
    sp_engine_stats stats;
};

/* engine.c: ends a request (releasing its blocks or pinning them for its session), publishes
 * its last output and drops the engine's reference. Engine thread. */
void sp__engine_finish(sp_engine *e, sp_request *r, sp_finish f, sp_err err, const char *msg);

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

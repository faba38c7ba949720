#include "sched/engine.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "base/log.h"
#include "base/util.h"
#include "kv/table.h"
#include "sched/engine_int.h"
#include "spec/lookup.h"

sp_engine_opts sp_engine_opts_default(void) {
    return (sp_engine_opts){.max_batch_tokens = 512,
                            .max_seqs = 64,
                            .block_size = 16,
                            .kv_type = SP_DTYPE_F16,
                            .prefix_cache = true,
                            .prefix_window = 8,
                            .max_reorder_wait_ms = 500,
                            .max_wait_ms = 30000,
                            .session_ttl_ms = -1,
                            .session_ttl_cap_ms = 60000,
                            .max_sessions = 1024,
                            .admission = "past-future"};
}

/* ---- creation ------------------------------------------------------------------------------- */

enum {
    NGRAM_N = 3,           // tokens of the n-grams of finished requests that prompt lookup finds
    NGRAM_LOG2_SLOTS = 15, // 32768 of them at most (3.5 MiB)
};

/* Nominal machine figures for the step-time model's prior, per compute thread: the first steps
 * measured correct them. */
#define PRIOR_BYTES_PER_US 5e3   // memory bandwidth
#define PRIOR_MACS_PER_US 5e4    // int8 multiply-adds in the matrices
#define PRIOR_FLOPS_PER_US 1e4   // F32 attention

/* The predicted time of prefilling n prompt tokens in full chunks (max_batch_tokens each). */
static double prefill_us(const sp_engine *e, int32_t n) {
    const int32_t C = e->o.max_batch_tokens;
    double t = 0;
    for (int32_t done = 0; done < n;) {
        const int32_t k = SP_MIN(C, n - done);
        const sp_step_shape s = {.n_prefill = k,
                                 .n_out = done + k == n,
                                 .n_attn = sp_steptime_chunk_attn(done, k)};
        t += sp_steptime_predict(&e->steptime, s);
        done += k;
    }
    return t;
}

static void init_steptime(sp_engine *e) {
    const sp_hparams *hp = &e->m->hp;
    const double q = (double)hp->n_head * hp->head_dim, kv = (double)hp->n_head_kv * hp->head_dim;
    const double per_layer = hp->n_embd * (2 * q + 2 * kv) + 3.0 * hp->n_embd * hp->n_ff;
    const double threads = sp_threadpool_n_threads(e->threads);
    double prior[SP_STEPTIME_NF];
    sp_steptime_prior((double)sp_model_weight_bytes(e->m), PRIOR_BYTES_PER_US * threads,
                      per_layer * hp->n_layer, (double)hp->n_embd * hp->n_vocab,
                      PRIOR_MACS_PER_US * threads, 4.0 * hp->n_layer * q,
                      PRIOR_FLOPS_PER_US * threads, prior);
    sp_steptime_init(&e->steptime, prior);
    e->us_per_token = prefill_us(e, e->o.max_batch_tokens) / e->o.max_batch_tokens;
}

sp_err sp_engine_create(const sp_model *m, const sp_vocab *v, const sp_engine_opts *opts,
                        sp_engine **out, sp_diag *diag) {
    sp_engine_opts o = opts ? *opts : sp_engine_opts_default();
    if (!o.policy.admit)
        o.policy = sp_policy_aggressive();
    if (o.max_batch_tokens < 1 || o.max_seqs < 1 || o.block_size < 1 || o.max_chunk < 0 ||
        o.n_threads < 0 || o.n_threads > SP_THREADPOOL_MAX_THREADS || o.n_ctx < 0 ||
        o.kv_bytes < 0 || o.kv_tokens < 0 || o.spec_k < 0 || o.spec_k > SP_ENGINE_MAX_SPEC ||
        (o.kv_type != SP_DTYPE_F16 && o.kv_type != SP_DTYPE_F32))
        return sp_diag_set(diag, SP_ERR_INVALID, UINT64_MAX, "invalid engine options");
    if (o.max_chunk == 0 || o.max_chunk > o.max_batch_tokens)
        o.max_chunk = o.max_batch_tokens;
    if ((int32_t)sp_vocab_n_tokens(v) > m->hp.n_vocab)
        return sp_diag_set(diag, SP_ERR_INVALID, UINT64_MAX,
                           "the vocabulary has %u tokens but the model only %d",
                           sp_vocab_n_tokens(v), m->hp.n_vocab);
    int32_t n_ctx = o.n_ctx ? o.n_ctx : SP_MIN(m->hp.n_ctx_train, 4096);
    size_t block_bytes = sp_kvbuf_block_bytes(&m->hp, o.kv_type, o.block_size);
    sp_model *dm = NULL; // the draft model: its KV shares the blocks, and their budget
    if (o.draft_model && !o.spec_off) {
        sp_err err = sp__spec_load_draft_model(o.draft_model, m, v, &dm, diag);
        if (err)
            return err;
        block_bytes += sp_draft_block_bytes(dm, o.kv_type, o.block_size);
        if (!o.spec_k) {
            o.spec_k = SP_ENGINE_SPEC_AUTO_K;
            o.spec_auto = true;
        }
    }
    int64_t n_blocks;
    if (o.kv_bytes)
        n_blocks = o.kv_bytes / (int64_t)block_bytes;
    else if (o.kv_tokens)
        n_blocks = (o.kv_tokens + o.block_size - 1) / o.block_size;
    else {
        int64_t want = (int64_t)o.max_seqs * ((n_ctx + o.block_size - 1) / o.block_size);
        n_blocks = SP_MIN(want, ((int64_t)1 << 30) / (int64_t)block_bytes);
    }
    if (n_blocks < 1 || n_blocks > INT32_MAX / 2) {
        sp_model_destroy(dm);
        return sp_diag_set(diag, SP_ERR_INVALID, UINT64_MAX,
                           "the KV pool must hold at least one block of %zu bytes", block_bytes);
    }

    if (o.admission[0]) {
        if (sp_policy_create(o.admission, SP_MAX(o.max_seqs, 1), o.kv_hash_seed ^ 0x5eed,
                             &o.policy) != SP_OK) {
            sp_model_destroy(dm);
            return sp_diag_set(diag, SP_ERR_INVALID, UINT64_MAX,
                               "unknown admission policy '%s' (aggressive, conservative, "
                               "past-future)",
                               o.admission);
        }
    }
    sp_engine *e = calloc(1, sizeof *e);
    if (!e) {
        if (o.admission[0] && o.policy.destroy)
            o.policy.destroy(o.policy.ctx);
        sp_model_destroy(dm);
        return SP_ERR_NOMEM;
    }
    e->m = m;
    e->draft_model = dm;
    e->v = v;
    e->o = o;
    e->n_ctx = n_ctx;
    e->max_len = (int32_t)SP_MIN((int64_t)n_ctx, n_blocks * o.block_size);
    e->efd = -1;
    e->spec_cost_scale = 1.0;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    pthread_mutex_init(&e->nmu, NULL);
    pthread_mutex_init(&e->smu, NULL);
    pthread_mutex_init(&e->gmu, NULL);
    sp_err err = sp_kvbuf_init(&e->kv, &m->hp, o.kv_type, o.block_size, (int32_t)n_blocks);
    if (err) {
        sp_diag_set(diag, err, UINT64_MAX, "cannot allocate a KV pool of %lld blocks (%lld MiB)",
                    (long long)n_blocks, (long long)(n_blocks * (int64_t)block_bytes >> 20));
        goto fail;
    }
    sp_kv_pool_opts po = sp_kv_pool_opts_default();
    po.caching = o.prefix_cache;
    po.hash_bits = o.kv_hash_bits;
    po.hash_seed = o.kv_hash_seed;
    if ((err = sp_kv_pool_create(&e->kv, &po, &e->pool)) ||
        (err = sp_forward_create(m, o.max_batch_tokens, n_ctx, &e->fw)) ||
        (err = sp_threadpool_create(o.n_threads, &e->threads)) ||
        (err = sp_sessions_create(SP_MAX(o.max_sessions, 1), o.session_ttl_ms,
                                  o.session_ttl_cap_ms > 0 ? o.session_ttl_cap_ms : 60000,
                                  &e->sessions)) ||
        (err = sp_forward_set_pool(e->fw, e->threads)) ||
        (dm && (err = sp__spec_open_drafter(e, (int32_t)n_blocks))) ||
        (o.spec_k && !dm &&
         (err = sp_spec_index_create(NGRAM_N, SP_ENGINE_MAX_SPEC, NGRAM_LOG2_SLOTS, &e->ngrams))))
        goto fail;
    // Logits rows: one per sequence, plus the draft tokens' (up to spec_k per decode; without
    // --spec, a pool for the requests that bring a predicted output).
    const size_t T = (size_t)o.max_batch_tokens, S = (size_t)o.max_seqs,
                 R = S + (o.spec_k ? S * (size_t)o.spec_k : SP_ENGINE_PRED_ROWS);
    e->b_tok = malloc(T * sizeof *e->b_tok);
    e->b_pos = malloc(T * sizeof *e->b_pos);
    e->b_seq = malloc(T * sizeof *e->b_seq);
    e->b_rows = malloc(R * sizeof *e->b_rows);
    e->b_tables = malloc(S * sizeof *e->b_tables);
    e->b_nblocks = malloc(S * sizeof *e->b_nblocks);
    e->b_reqs = malloc(S * sizeof *e->b_reqs);
    e->b_chunk = malloc(S * sizeof *e->b_chunk);
    e->b_out_seq = malloc(R * sizeof *e->b_out_seq);
    e->spare_rows = (int32_t)(R - S);
    e->b_draft = malloc(S * SP_ENGINE_MAX_SPEC * sizeof *e->b_draft);
    e->b_ndraft = calloc(S, sizeof *e->b_ndraft);
    e->d_reqs = malloc(S * sizeof *e->d_reqs);
    e->d_tokens = malloc(S * SP_ENGINE_MAX_SPEC * sizeof *e->d_tokens);
    e->d_len = malloc(S * sizeof *e->d_len);
    e->d_avail = malloc(S * sizeof *e->d_avail);
    e->views = malloc(S * sizeof *e->views);
    e->blk_seen = calloc((size_t)n_blocks, sizeof *e->blk_seen);
    e->b_cand = malloc(S * sizeof *e->b_cand);
    e->logits = malloc(R * (size_t)m->hp.n_vocab * sizeof *e->logits);
    e->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!e->b_tok || !e->b_pos || !e->b_seq || !e->b_rows || !e->b_tables || !e->b_nblocks ||
        !e->b_reqs || !e->b_chunk || !e->b_out_seq || !e->b_draft || !e->b_ndraft || !e->d_reqs ||
        !e->d_tokens || !e->d_len || !e->d_avail || !e->views || !e->blk_seen ||
        !e->b_cand || !e->logits) {
        err = SP_ERR_NOMEM;
        goto fail;
    }
    if (e->efd < 0) {
        err = sp_diag_set(diag, SP_ERR_IO, UINT64_MAX, "eventfd failed");
        goto fail;
    }
    if (o.step_log && !(e->step_log = fopen(o.step_log, "a"))) {
        err = sp_diag_set(diag, SP_ERR_IO, UINT64_MAX, "cannot open the step log %s: %s",
                          o.step_log, strerror(errno));
        goto fail;
    }
    init_steptime(e);
    e->stats.n_blocks = (int32_t)n_blocks;
    e->stats.block_size = o.block_size;
    e->stats.n_ctx = n_ctx;
    *out = e;
    return SP_OK;
fail:
    if (!o.admission[0])
        e->o.policy.destroy = NULL; // the caller keeps its own policy on failure
    sp_engine_destroy(e);
    return err;
}

/* ---- output --------------------------------------------------------------------------------- */

static void notify(sp_engine *e, sp_request *r) {
    pthread_mutex_lock(&e->nmu);
    if (!r->in_ready) {
        r->in_ready = true;
        sp_request_retain(r);
        r->next_ready = e->ready;
        e->ready = r;
    }
    pthread_mutex_unlock(&e->nmu);
    uint64_t one = 1;
    if (write(e->efd, &one, sizeof one) < 0) {
        // EAGAIN: the counter is saturated, which still reads as readable.
    }
}

sp_request *sp_engine_take_ready(sp_engine *e) {
    pthread_mutex_lock(&e->nmu);
    sp_request *list = e->ready;
    e->ready = NULL;
    pthread_mutex_unlock(&e->nmu);
    return list;
}

sp_request *sp_request_next_ready(sp_request *r) {
    // The entry leaves the list only now: until in_ready is cleared the engine does not touch
    // next_ready, and a notification after the clear starts a new list, so the caller, which
    // reads r's output after this call, misses nothing.
    sp_engine *e = r->engine;
    pthread_mutex_lock(&e->nmu);
    sp_request *next = r->next_ready;
    r->in_ready = false;
    pthread_mutex_unlock(&e->nmu);
    return next;
}

int sp_engine_notify_fd(const sp_engine *e) {
    return e->efd;
}

int32_t sp_engine_n_ctx(const sp_engine *e) {
    return e->n_ctx;
}

int32_t sp_engine_max_len(const sp_engine *e) {
    return e->max_len;
}

int32_t sp_engine_max_seqs(const sp_engine *e) {
    return e->o.max_seqs;
}

/* Releases text through the stop matcher: appends bytes to the pending text, feeds them, and
 * publishes what may go out. Returns true if a stop string matched. */
static bool emit_text(sp_engine *e, sp_request *r, const char *text, size_t n,
                      const sp_req_token *tok, bool *failed) {
    (void)e;
    SP_ASSERT(r->n_pending + n <= r->cap_pending);
    memcpy(r->pending + r->n_pending, text, n);
    r->n_pending += n;
    sp_stop_status st;
    sp_stop_feed(r->stop, text, n, &st);
    size_t emit = SP_MIN(st.emit_bytes, r->n_pending);
    if (sp__request_publish(r, tok, e->top_ids, e->top_lps, r->pending, emit))
        *failed = true;
    memmove(r->pending, r->pending + emit, r->n_pending - emit);
    r->n_pending -= emit;
    if (st.stop >= 0)
        r->n_pending = 0;
    return st.stop >= 0;
}

void sp__engine_finish(sp_engine *e, sp_request *r, sp_finish f, sp_err err, const char *msg) {
    if (r->state == SP__REQ_RUNNING) {
        // A session's turn that ended naturally may keep its blocks pinned for the next turn.
        bool natural = f == SP_FINISH_STOP || f == SP_FINISH_LENGTH;
        sp_session_cost cost = {.us_per_token = e->us_per_token, .pool_blocks = e->kv.n_blocks};
        if (!(natural && r->session &&
              sp_sessions_end_turn(e->sessions, r->session, r->params.tool_id, &r->seq,
                                   sp_time_us(), &cost)))
            sp_kv_seq_release(e->pool, &r->seq);
        list_remove(&e->running, r);
    } else if (r->state == SP__REQ_WAITING) {
        list_remove(&e->waiting, r);
    }
    if (f == SP_FINISH_STOP || f == SP_FINISH_LENGTH) {
        sp__spec_learn(e, r);
        // Release what the stop matcher and the detokenizer still hold.
        bool failed = false;
        sp_str tail = sp_detok_flush(&r->detok);
        bool matched = tail.len && emit_text(e, r, tail.ptr, tail.len, NULL, &failed);
        if (!matched) {
            size_t n = SP_MIN(sp_stop_finish(r->stop), r->n_pending);
            if (sp__request_publish(r, NULL, NULL, NULL, r->pending, n))
                failed = true;
        } else {
            f = SP_FINISH_STOP;
        }
        r->n_pending = 0;
        if (failed) {
            f = SP_FINISH_ERROR;
            err = SP_ERR_NOMEM;
            msg = "out of memory for the output text";
        }
    }
    r->state = SP__REQ_DONE;
    // Only natural ends teach the admission policy about output lengths.
    if (e->o.policy.on_finish && (f == SP_FINISH_STOP || f == SP_FINISH_LENGTH))
        e->o.policy.on_finish(e->o.policy.ctx, r->n_generated, r->params.max_tokens);
    pthread_mutex_lock(&r->mu);
    r->stats.t_end_us = sp_time_us();
    pthread_mutex_unlock(&r->mu);
    sp__request_finish(r, f, err, msg);
    pthread_mutex_lock(&e->smu);
    e->stats.finished[f]++;
    pthread_mutex_unlock(&e->smu);
    notify(e, r);
    sp_request_release(r); // the engine's reference
}

/* Samples the next token of r from its logits row and publishes it; where a drafter proposed a
 * token for this position (draft >= 0), the token is the sampler's check of it against q, the
 * distribution the draft was drawn from (NULL: a point mass; sp_sampler_verify_q: distributed
 * as a plain sample, equal to draft when accepted). The token goes to *out. Returns whether r is
 * still running: when it finishes here the engine's
 * reference to it is gone. */
static bool sample_token(sp_engine *e, sp_request *r, const float *logits, int32_t draft,
                         const float *q, int32_t n_left, int32_t *out_tok) {
    const int32_t V = e->m->hp.n_vocab;
    if (e->o.on_logits)
        e->o.on_logits(e->o.hook_ctx, r, logits, V);
    int32_t tok;
    if (r->matcher) {
        const char *msg = "out of memory for the grammar";
        sp_err err = sp__constrain_sample(e, r, logits, draft, q, &tok, &msg);
        if (err) {
            *out_tok = -2; // no token, and never a draft (nor -1, "no draft")
            sp__engine_finish(e, r, SP_FINISH_ERROR, err, msg);
            return false;
        }
    } else {
        tok = draft >= 0 ? sp_sampler_verify_q(r->sampler, logits, draft, q)
                         : sp_sampler_sample(r->sampler, logits);
    }
    *out_tok = tok;
    if (draft >= 0) { // this draft accepted, or it and the n_left - 1 after it rejected
        pthread_mutex_lock(&r->mu);
        if (tok == draft)
            r->stats.n_draft_accepted++;
        else
            r->stats.n_draft_rejected += n_left;
        pthread_mutex_unlock(&r->mu);
    }
    sp_sampler_accept(r->sampler, tok);
    // A grammar whose output is complete with nothing more allowed ends the request, as an
    // end-of-generation token would.
    const bool grammar_done = r->matcher && sp__constrain_done(r);
    sp_req_token out = {.id = tok, .logprob = 0.0f};
    if (r->params.n_logprobs >= 0 &&
        sp_sample_logprobs(logits, V, tok, r->params.n_logprobs, &out.logprob, e->top_ids,
                           e->top_lps) != SP_OK)
        out.logprob = -INFINITY;
    r->tokens[r->n_tokens++] = tok;
    r->n_generated++;
    if (r->n_generated == 1) {
        pthread_mutex_lock(&r->mu);
        r->stats.t_first_token_us = sp_time_us();
        pthread_mutex_unlock(&r->mu);
    }
    pthread_mutex_lock(&e->smu);
    e->stats.generated_tokens++;
    pthread_mutex_unlock(&e->smu);

    const bool eog = sp_vocab_is_eog(e->v, tok) && !r->params.ignore_eos;
    bool failed = false, matched = false;
    sp_str piece = {"", 0};
    if (!eog && tok < (int32_t)sp_vocab_n_tokens(e->v) &&
        sp_detok_push(&r->detok, tok, &piece) != SP_OK)
        piece = (sp_str){"", 0};
    matched = emit_text(e, r, piece.ptr, piece.len, &out, &failed);
    if (failed)
        sp__engine_finish(e, r, SP_FINISH_ERROR, SP_ERR_NOMEM, "out of memory for the output text");
    else if (matched || eog || grammar_done ||
             (r->params.stop_after > 0 && r->n_generated >= r->params.stop_after))
        sp__engine_finish(e, r, SP_FINISH_STOP, SP_OK, NULL);
    else if (r->n_generated >= r->params.max_tokens || r->n_tokens >= e->max_len)
        sp__engine_finish(e, r, SP_FINISH_LENGTH, SP_OK, NULL);
    else {
        notify(e, r);
        return true;
    }
    return false;
}

static void drain_inbox(sp_engine *e) {
    pthread_mutex_lock(&e->mu);
    sp_request *r = e->inbox.head;
    // The requests stay counted as waiting while they move (stats readers hold mu too).
    pthread_mutex_lock(&e->smu);
    e->stats.n_waiting += e->inbox.n;
    pthread_mutex_unlock(&e->smu);
    e->inbox = (sp__req_list){0};
    bool cancels = e->cancel_pending;
    e->cancel_pending = false;
    pthread_mutex_unlock(&e->mu);
    while (r) {
        sp_request *next = r->next;
        r->state = SP__REQ_WAITING;
        r->session = r->params.session_id;
        if (r->session) {
            // A returning turn keeps its session's place: program-level FCFS.
            r->arrival = sp_sessions_arrive(e->sessions, r->session, r->arrival, sp_time_us());
            list_insert_sorted(&e->waiting, r);
        } else {
            list_push_back(&e->waiting, r);
        }
        r = next;
    }
    sp_sessions_expire(e->sessions, e->pool, sp_time_us());
    sp__sched_reject_late(e);
    if (!cancels)
        return;
    sp__req_list *lists[] = {&e->running, &e->waiting};
    for (int i = 0; i < 2; i++) {
        for (sp_request *q = lists[i]->head; q;) {
            sp_request *next = q->next;
            if (atomic_load(&q->cancel))
                sp__engine_finish(e, q, SP_FINISH_CANCELLED, SP_OK, NULL);
            q = next;
        }
    }
}

/* Adds a sequence's chunk to the batch: chunk tokens of r from n_computed on, then the n_draft
 * draft tokens (a decode with speculation: chunk is 1), each of which needs its logits too. */
static void add_chunk(sp_engine *e, sp_request *r, int32_t chunk, const int32_t *draft,
                      int32_t n_draft, int32_t *n_tok, int32_t *n_seq, int32_t *n_out) {
    int32_t s = (*n_seq)++;
    if (chunk == 1)
        e->shape.n_decode++;
    else
        e->shape.n_prefill += chunk;
    e->shape.n_prefill += n_draft;
    const bool last = r->n_computed + chunk == r->n_tokens;
    e->shape.n_out += last + n_draft;
    e->shape.n_attn += sp_steptime_chunk_attn(r->n_computed, chunk + n_draft);
    r->scheduled_step = e->step_no;
    e->b_reqs[s] = r;
    e->b_chunk[s] = chunk;
    e->b_ndraft[s] = n_draft;
    if (n_draft)
        memcpy(e->b_draft + (size_t)s * SP_ENGINE_MAX_SPEC, draft, sizeof *draft * (size_t)n_draft);
    e->b_tables[s] = r->seq.blocks;
    e->b_nblocks[s] = r->seq.n_blocks;
    for (int32_t i = 0; i < chunk + n_draft; i++) {
        int32_t p = r->n_computed + i;
        e->b_tok[*n_tok] = i < chunk ? r->tokens[p] : draft[i - chunk];
        e->b_pos[*n_tok] = p;
        e->b_seq[*n_tok] = s;
        (*n_tok)++;
        if (last && i >= chunk - 1) {
            e->b_rows[*n_out] = *n_tok - 1;
            e->b_out_seq[*n_out] = s;
            (*n_out)++;
        }
    }
}

/* Publishes the counters after a step (ran: a forward pass ran, computing prompt_tokens). */
static void publish_stats(sp_engine *e, bool ran, uint64_t prompt_tokens) {
    sp_kv_stats ks;
    sp_kv_pool_stats(e->pool, &ks);
    pthread_mutex_lock(&e->smu);
    if (ran) {
        e->stats.steps++;
        e->stats.last_step_us = sp_time_us();
    }
    e->stats.prompt_tokens += prompt_tokens;
    e->stats.n_running = e->running.n;
    e->stats.n_waiting = e->waiting.n;
    e->stats.n_blocks_used = ks.n_used;
    e->stats.peak_blocks_used = SP_MAX(e->stats.peak_blocks_used, ks.n_used);
    e->stats.n_blocks_cached = ks.n_cached;
    e->stats.evictions = ks.evictions;
    sp_session_stats ss;
    sp_sessions_stats(e->sessions, &ss);
    e->stats.session_turns = ss.turns;
    e->stats.session_pins = ss.pins;
    e->stats.session_pins_hit = ss.pins_hit;
    e->stats.session_pins_expired = ss.pins_expired;
    e->stats.session_pins_reclaimed = ss.pins_reclaimed;
    e->stats.n_blocks_pinned = ss.pinned_blocks;
    pthread_mutex_unlock(&e->smu);
}

/* ---- the step ------------------------------------------------------------------------------- */

enum {
    MIN_PREFILL = 32,        // prefill tokens a step may always take, whatever its time budget
    AGING_TOKENS_PER_S = 64, // a prompt's remaining tokens count this many fewer per second
                             // since its submission when prefill chunks are ordered
};
/* The default time budget: this times the decodes' own time. Larger budgets move prompts on
 * sooner (TTFT) and make the steps with prompt chunks longer (inter-token gaps): measured with
 * bench/stallfree.sh, 1.5 gave an ITL p99 of 1.5x the median TPOT and a TTFT p99 of 4.2 s, 2.5
 * 1.9x and 3.3 s; 2.25 keeps the streams' p99 gap well within 2x the median TPOT. */
#define AUTO_BUDGET_FACTOR 2.25

/* ---- offline work (SP_PRIORITY_OFFLINE) beside online requests ----------------------------- */

enum {
    ONLINE_LINGER_US = 1000000, // offline work keeps yielding this long after the last online
                                // request (online traffic comes in bursts)
    ONLINE_REF_PROMPT = 128,    // the online prompt whose prefill time sizes offline slices
};
/* While online requests are around, a step's offline work (decodes and prompt chunks) is
 * predicted to take at most this fraction of the prefill of an ONLINE_REF_PROMPT-token
 * prompt: an online request that arrives during a step waits at most that for it to end,
 * and then gets a step of its own. */
#define OFFLINE_SLICE_FRACTION 0.25

static bool offline(const sp_request *r) {
    return r->params.priority >= SP_PRIORITY_OFFLINE;
}

static bool decode_ready(const sp_request *r) {
    return r->n_tokens - r->n_computed == 1 && r->n_generated > 0;
}

/* Whether offline work yields this step (an online request running, waiting, or seen within
 * ONLINE_LINGER_US), and whether an online prompt will be computed in it (a running online
 * request with prompt left, or a waiting one that the last step did not fail to admit). */
static bool online_around(sp_engine *e, bool *online_prompt) {
    *online_prompt = false;
    bool any = false;
    const sp__req_list *lists[2] = {&e->running, &e->waiting};
    for (int l = 0; l < 2; l++)
        for (const sp_request *r = lists[l]->head; r; r = r->next)
            if (!offline(r)) {
                any = true;
                // A waiting one is admitted in this step unless the last step could not admit
                // it: then offline work goes on, as what it frees may be what it waits for.
                *online_prompt |= l == 0 ? !decode_ready(r) : !e->online_blocked;
            }
    const int64_t now = sp_time_us();
    if (any)
        e->online_until_us = now + ONLINE_LINGER_US;
    return now < e->online_until_us;
}

/* The predicted time offline work may take in a step while online requests are around. */
static double offline_slice_us(const sp_engine *e) {
    const sp_step_shape ref = {.n_prefill = ONLINE_REF_PROMPT,
                               .n_out = 1,
                               .n_attn = sp_steptime_chunk_attn(0, ONLINE_REF_PROMPT)};
    return OFFLINE_SLICE_FRACTION * sp_steptime_predict(&e->steptime, ref);
}

/* How many offline requests decode this step while yielding: as many as fit the slice beside
 * the n_online online decodes (at least one, so that offline work moves), none while an online
 * prompt is being computed. */
static int32_t offline_decode_quota(const sp_engine *e, int32_t n_online, int64_t attn_per_seq,
                                    bool online_prompt) {
    if (online_prompt)
        return 0;
    const double slice = offline_slice_us(e);
    int32_t k = 1;
    while (k < e->o.max_seqs) {
        const int32_t n = n_online + k + 1;
        const sp_step_shape s = {.n_decode = n, .n_out = n, .n_attn = attn_per_seq * n};
        if (sp_steptime_predict(&e->steptime, s) > slice)
            break;
        k++;
    }
    return k;
}

/* The time budget of the step being built, its decodes already in: none for a step without
 * decodes (nobody waits on it for a token) or when turned off. Steps of offline work alone keep
 * it too: without it (whole chunks) a batch ran 1% faster (bench/RESULTS.md), and an online
 * request arriving during such a step waited up to 450 ms for it to end. By default AUTO_BUDGET_FACTOR
 * times the predicted time of a pure decode step of the load being served: every running and
 * waiting request (max_seqs at most) decoding one token at its current length. */
static double step_budget_us(const sp_engine *e, int32_t n_decode) {
    if (e->o.prefer_throughput || e->o.max_step_ms < 0 || n_decode == 0)
        return INFINITY;
    if (e->o.max_step_ms > 0)
        return e->o.max_step_ms * 1000.0;
    sp_step_shape ref = {.n_decode = n_decode, .n_out = n_decode, .n_attn = e->shape.n_attn};
    const sp__req_list *lists[2] = {&e->running, &e->waiting};
    for (int l = 0; l < 2; l++)
        for (const sp_request *r = lists[l]->head; r && ref.n_decode < e->o.max_seqs; r = r->next)
            if (r->scheduled_step != e->step_no) {
                ref.n_decode++;
                ref.n_out++;
                ref.n_attn += r->n_tokens;
            }
    return AUTO_BUDGET_FACTOR * sp_steptime_predict(&e->steptime, ref);
}

/* The step being built with a chunk of k more tokens of r. */
static sp_step_shape with_chunk(const sp_engine *e, const sp_request *r, int32_t k) {
    sp_step_shape s = e->shape;
    if (k == 1)
        s.n_decode++;
    else
        s.n_prefill += k;
    s.n_out += r->n_computed + k == r->n_tokens;
    s.n_attn += sp_steptime_chunk_attn(r->n_computed, k);
    return s;
}

/* The largest chunk of r, up to max_k tokens, that keeps the step's predicted time within
 * budget_us, but at least min_k (within max_k). */
static int32_t chunk_within(const sp_engine *e, const sp_request *r, int32_t max_k, int32_t min_k,
                            double budget_us) {
    if (isinf(budget_us))
        return max_k;
    int32_t lo = 0, hi = max_k; // chunks of lo tokens fit
    while (lo < hi) {
        const int32_t mid = lo + (hi - lo + 1) / 2;
        if (sp_steptime_predict(&e->steptime, with_chunk(e, r, mid)) <= budget_us)
            lo = mid;
        else
            hi = mid - 1;
    }
    return SP_MAX(lo, SP_MIN(min_k, max_k));
}

static int cmp_cand(const void *a, const void *b) {
    const sp__prefill_cand *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return (x->r->stats.t_submit_us > y->r->stats.t_submit_us) -
           (x->r->stats.t_submit_us < y->r->stats.t_submit_us);
}

/* The running requests with prompt left to compute, in e->b_cand, the fewest remaining tokens
 * first, where each second since submission takes AGING_TOKENS_PER_S off. Returns their count. */
static int32_t prefill_candidates(sp_engine *e) {
    const int64_t now = sp_time_us();
    int32_t n = 0;
    for (sp_request *r = e->running.head; r; r = r->next) {
        const int32_t remaining = r->n_tokens - r->n_computed;
        if (remaining <= 0 || (remaining == 1 && r->n_generated > 0) ||
            r->scheduled_step == e->step_no)
            continue;
        const double waited_s = (double)(now - r->stats.t_submit_us) * 1e-6;
        double key = remaining - AGING_TOKENS_PER_S * waited_s;
        if (e->yielding && offline(r))
            key += 1e12; // after every online prompt
        e->b_cand[n++] = (sp__prefill_cand){.key = key, .r = r};
    }
    qsort(e->b_cand, (size_t)n, sizeof *e->b_cand, cmp_cand);
    return n;
}

/* Feeds a measured step to the step-time model and publishes how well it predicted. */
static void learn_step_time(sp_engine *e, double predicted, double measured, double budget) {
    sp_steptime_observe(&e->steptime, e->shape, measured);
    e->us_per_token = prefill_us(e, e->o.max_batch_tokens) / e->o.max_batch_tokens;
    const double err = measured > 0 ? fabs(predicted - measured) / measured : 0;
    static const double bounds[] = {0.05, 0.1, 0.2, 0.5, 1.0};
    int bucket = 0;
    while (bucket < 5 && err > bounds[bucket])
        bucket++;
    pthread_mutex_lock(&e->smu);
    e->stats.step_predicted_us = predicted;
    e->stats.step_measured_us = measured;
    e->stats.step_budget_us = isinf(budget) ? 0 : budget;
    e->stats.step_model_median_error = sp_steptime_median_error(&e->steptime);
    e->stats.step_error_hist[bucket]++;
    e->stats.step_error_sum += err;
    pthread_mutex_unlock(&e->smu);
}

bool sp_engine_step(sp_engine *e) {
    e->step_no++;
    drain_inbox(e);
    sp__sched_displace_for_priority(e);
    int32_t n_tok = 0, n_seq = 0, n_out = 0, n_decode = 0, n_preempted = 0;
    int32_t budget = e->o.max_batch_tokens, spare = e->spare_rows;
    e->shape = (sp_step_shape){0};

    // 1. One decode token for every running request whose prompt is done, oldest first, each
    // with its draft tokens: with --spec, or for a request with a predicted output (up to
    // SP_ENGINE_PRED_K then), within the spare logits rows. The decodes are collected first and
    // the drafts fitted to the budget they leave (sp__spec_fit_drafts): every decode gets its
    // token before any draft, and --spec auto sizes every draft knowing them all.
    // While online requests are around, offline requests decode a quota at a time, in turn.
    bool online_prompt = false;
    e->yielding = online_around(e, &online_prompt);
    int32_t off_quota = INT32_MAX, n_off = 0, off_seen = 0;
    if (e->yielding) {
        int32_t n_on = 0;
        int64_t attn = 0;
        for (const sp_request *r = e->running.head; r; r = r->next)
            if (decode_ready(r)) {
                n_on += !offline(r);
                n_off += offline(r);
                attn += r->n_tokens;
            }
        off_quota = offline_decode_quota(e, n_on, n_on + n_off ? attn / (n_on + n_off) : 0,
                                         online_prompt);
    }
    int32_t n_dec = 0;
    for (sp_request *r = e->running.head; r && budget > 0 && n_dec < e->o.max_seqs;) {
        sp_request *next = r->next;
        if (decode_ready(r) && e->yielding && offline(r)) {
            // The quota's window over the offline requests, from the cursor, wrapping.
            const uint32_t rel = ((uint32_t)off_seen++ + (uint32_t)n_off -
                                  e->off_cursor % (uint32_t)n_off) %
                                 (uint32_t)n_off;
            if (rel >= (uint32_t)off_quota) {
                r = next;
                continue;
            }
        }
        if (decode_ready(r)) {
            int32_t need = r->n_tokens - r->seq.n_tokens;
            bool ok = need <= 0 || sp__sched_reserve(e, r, need, &n_preempted);
            if (ok) {
                const int32_t want = e->o.spec_off           ? 0
                                     : e->o.spec_k            ? e->o.spec_k
                                     : r->params.n_prediction ? SP_ENGINE_PRED_K
                                                              : 0;
                int32_t *draft = e->d_tokens + (size_t)n_dec * SP_ENGINE_MAX_SPEC, k = 0;
                if (want)
                    k = sp__spec_draft_for(e, r, SP_MIN(want, spare), draft);
                spare -= k;
                budget--;
                e->d_reqs[n_dec] = r;
                e->d_len[n_dec++] = k;
            }
            // The list may have lost its tail to preemption; r itself may be gone.
            next = r->state == SP__REQ_RUNNING ? r->next : NULL;
        }
        r = next;
    }
    if (e->yielding && n_off)
        e->off_cursor += (uint32_t)SP_MIN(off_quota, n_off);
    sp__spec_fit_drafts(e, n_dec, e->o.max_batch_tokens - n_dec);
    if (n_dec) {
        pthread_mutex_lock(&e->smu);
        for (int32_t i = 0; i < n_dec; i++)
            if (e->o.spec_k || e->d_reqs[i]->params.n_prediction)
                e->stats.spec_k_hist[e->d_len[i]]++;
        pthread_mutex_unlock(&e->smu);
    }
    for (int32_t i = 0; i < n_dec; i++) {
        sp_request *r = e->d_reqs[i];
        r->spec_idle = e->d_len[i] ? 0 : r->spec_idle + 1;
        add_chunk(e, r, 1, e->d_tokens + (size_t)i * SP_ENGINE_MAX_SPEC, e->d_len[i], &n_tok,
                  &n_seq, &n_out);
        n_decode++;
    }
    budget = e->o.max_batch_tokens - n_tok;
    // 2. New requests from the waiting queue, in order, while they are admitted and the prompts
    // admitted but not yet computed fit in one step's token budget, each counting for at most a
    // quarter of it (admission reserves their blocks: no more of them than can start soon; but a
    // long prompt being computed does not keep short ones out).
    const int32_t share = SP_MAX(e->o.max_batch_tokens / 4, 1);
    int32_t pending = 0;
    for (sp_request *r = e->running.head; r; r = r->next)
        if (r->scheduled_step != e->step_no)
            pending += SP_MIN(r->n_tokens - r->n_computed, share);
    sp_request *adm;
    while (pending < e->o.max_batch_tokens && (adm = sp__sched_admit_next(e)))
        pending += SP_MIN(adm->n_tokens - adm->n_computed, share);
    e->online_blocked = false;
    for (const sp_request *r = e->waiting.head; r && !e->online_blocked; r = r->next)
        e->online_blocked = !offline(r);
    // 3. Prefill chunks, the fewest remaining tokens first (aged), each within the step's time
    // budget, at least MIN_PREFILL tokens in all.
    const double time_budget = step_budget_us(e, n_decode);
    int32_t n_prefill = 0;
    const int32_t n_cand = prefill_candidates(e);
    const double off_budget = e->yielding ? SP_MIN(time_budget, offline_slice_us(e)) : time_budget;
    for (int32_t i = 0; i < n_cand && budget > 0 && n_seq < e->o.max_seqs; i++) {
        sp_request *r = e->b_cand[i].r;
        if (e->yielding && offline(r) && online_prompt)
            break; // (offline candidates come last)
        int32_t max_k = SP_MIN(SP_MIN(r->n_tokens - r->n_computed, e->o.max_chunk), budget);
        int32_t chunk = chunk_within(e, r, max_k, MIN_PREFILL - n_prefill,
                                     e->yielding && offline(r) ? off_budget : time_budget);
        if (chunk == 0)
            break;
        add_chunk(e, r, chunk, NULL, 0, &n_tok, &n_seq, &n_out);
        budget -= chunk;
        n_prefill += chunk;
    }

    if (n_tok == 0) {
        publish_stats(e, false, 0);
        return false;
    }
    sp__spec_run_draft_model(e, n_seq);
    sp_batch b = {.n_tokens = n_tok,
                  .token = e->b_tok,
                  .pos = e->b_pos,
                  .seq = e->b_seq,
                  .n_seqs = n_seq,
                  .block_tables = e->b_tables,
                  .n_seq_blocks = e->b_nblocks,
                  .n_out = n_out,
                  .out_rows = e->b_rows};
    const double predicted = sp_steptime_predict(&e->steptime, e->shape);
    const double draft_us = sp__spec_draft_us(e, n_seq);
    double coef[SP_STEPTIME_NF]; // the coefficients it was made with, for the step log
    memcpy(coef, e->steptime.coef, sizeof coef);
    const int64_t t_fw = sp_time_us();
    sp_err err = sp_forward_eval(e->fw, &e->kv, &b, e->logits);
    if (err) {
        SP_ERROR("forward pass failed: %s", sp_err_str(err));
        for (int32_t s = 0; s < n_seq; s++)
            sp__engine_finish(e, e->b_reqs[s], SP_FINISH_ERROR, err, "the forward pass failed");
        return true;
    }
    int32_t n_drafted = 0, n_spec = 0;
    for (int32_t s = 0; s < n_seq; s++) {
        sp_request *r = e->b_reqs[s];
        n_drafted += e->b_ndraft[s];
        n_spec += e->b_ndraft[s] > 0;
        r->n_computed += e->b_chunk[s];
        sp_kv_seq_commit(e->pool, &r->seq, r->tokens, r->n_computed);
        if (r->n_computed == r->n_tokens)
            r->guard = false;
    }
    const uint64_t prompt_tokens = (uint64_t)(n_tok - n_decode - n_drafted);
    // Each output row in order; a decode with a draft has one row per position: the tokens are
    // sampled (checking the draft) until one differs from the draft, and the accepted draft
    // tokens' KV, written in this step, becomes part of the sequence.
    const int32_t V = e->m->hp.n_vocab;
    int32_t n_accepted = 0;
    for (int32_t i = 0; i < n_out;) {
        const int32_t s = e->b_out_seq[i], nd = e->b_ndraft[s];
        const int32_t *draft = e->b_draft + (size_t)s * SP_ENGINE_MAX_SPEC;
        sp_request *r = e->b_reqs[s];
        if (atomic_load(&r->cancel)) {
            sp__engine_finish(e, r, SP_FINISH_CANCELLED, SP_OK, NULL);
        } else {
            int32_t acc = 0, tok;
            bool running = true;
            for (int32_t j = 0; j <= nd && running; j++) {
                const int32_t d = j < nd ? draft[j] : -1;
                running = sample_token(e, r, e->logits + (size_t)(i + j) * (size_t)V, d,
                                       j < nd ? sp__spec_draft_q(e, s, j) : NULL, nd - j, &tok);
                if (tok != d)
                    break;
                acc++;
                if (running)
                    r->n_computed++;
            }
            n_accepted += acc;
            if (running)
                sp__spec_checked(e, s, r, acc);
            if (running && acc > 0)
                sp_kv_seq_commit(e->pool, &r->seq, r->tokens, r->n_computed);
            // The rejected drafts' positions leave the block table (their KV is garbage).
            if (running && acc < nd)
                sp_kv_seq_truncate(e->pool, &r->seq, r->n_computed);
        }
        i += 1 + nd;
    }
    if (n_spec) {
        pthread_mutex_lock(&e->smu);
        e->stats.spec_drafts += (uint64_t)n_spec;
        e->stats.spec_draft_tokens += (uint64_t)n_drafted;
        e->stats.spec_accepted_tokens += (uint64_t)n_accepted;
        pthread_mutex_unlock(&e->smu);
    }
    const double measured = (double)(sp_time_us() - t_fw);
    sp__spec_observe(e, predicted, draft_us, measured);
    learn_step_time(e, predicted, measured, time_budget);
    if (e->step_log) {
        fprintf(e->step_log,
                "{\"step\":%llu,\"t_us\":%lld,\"n_decode\":%d,\"n_prefill\":%d,\"n_out\":%d,"
                "\"n_attn\":%lld,\"n_seqs\":%d,\"predicted_us\":%.0f,\"measured_us\":%.0f,"
                "\"budget_us\":%.0f,\"coef\":[%.6g,%.6g,%.6g,%.6g,%.6g],\"n_drafted\":%d,"
                "\"n_accepted\":%d,\"draft_us\":%.0f,\"draft_cost_scale\":%.3g}\n",
                (unsigned long long)e->step_no, (long long)t_fw, e->shape.n_decode,
                e->shape.n_prefill, e->shape.n_out, (long long)e->shape.n_attn, n_seq, predicted,
                measured, isinf(time_budget) ? 0 : time_budget, coef[0], coef[1], coef[2],
                coef[3], coef[4], n_drafted, n_accepted, draft_us, e->spec_cost_scale);
        fflush(e->step_log);
    }

    publish_stats(e, true, prompt_tokens);
    if (e->o.on_step) {
        sp_engine_step_info info = {.n_tokens = n_tok,
                                    .n_decode = n_decode,
                                    .n_draft = n_drafted,
                                    .n_accepted = n_accepted,
                                    .n_seqs = n_seq,
                                    .n_preempted = n_preempted,
                                    .predicted_us = predicted,
                                    .measured_us = measured,
                                    .budget_us = isinf(time_budget) ? 0 : time_budget};
        e->o.on_step(e->o.hook_ctx, &info);
    }
    return true;
}

bool sp_engine_busy(sp_engine *e) {
    pthread_mutex_lock(&e->mu);
    bool inbox = e->inbox.n > 0;
    pthread_mutex_unlock(&e->mu);
    return inbox || e->running.n > 0 || e->waiting.n > 0;
}

/* ---- submission and the thread -------------------------------------------------------------- */

sp_err sp_engine_submit(sp_engine *e, sp_request *r, sp_diag *diag) {
    if (r->state != SP__REQ_NEW || r->engine)
        return sp_diag_set(diag, SP_ERR_INVALID, UINT64_MAX, "request submitted twice");
    if (r->n_prompt >= e->n_ctx) {
        sp_diag_set(diag, SP_ERR_RANGE, UINT64_MAX,
                    "the prompt has %d tokens, but the context holds %d (including at least one "
                    "generated token)",
                    r->n_prompt, e->n_ctx);
        if (diag)
            snprintf(diag->param, sizeof diag->param, "prompt");
        return SP_ERR_RANGE;
    }
    if (sp__sched_blocks_for(e, r->n_prompt + 1) > e->kv.n_blocks) {
        sp_diag_set(diag, SP_ERR_RANGE, UINT64_MAX,
                    "the prompt needs %d KV blocks, but the pool has %d: start the server with "
                    "more --kv-memory",
                    sp__sched_blocks_for(e, r->n_prompt + 1), e->kv.n_blocks);
        if (diag)
            snprintf(diag->param, sizeof diag->param, "prompt");
        return SP_ERR_RANGE;
    }
    sp_err err = r->matcher ? sp__constrain_prepare(e) : SP_OK;
    if (err)
        return sp_diag_set(diag, err, UINT64_MAX, "out of memory for the grammar's token masks");
    if ((err = sp_kv_seq_init(&r->seq, e->pool, SP_MIN(r->cap_tokens, e->max_len))))
        return err;
    r->seq_ready = true;
    pthread_mutex_lock(&r->mu);
    r->stats.t_submit_us = sp_time_us();
    pthread_mutex_unlock(&r->mu);
    sp_request_retain(r); // the engine's reference
    pthread_mutex_lock(&e->mu);
    if (e->stopping) {
        pthread_mutex_unlock(&e->mu);
        sp_request_release(r);
        return sp_diag_set(diag, SP_ERR_INVALID, UINT64_MAX, "the engine is shutting down");
    }
    r->id = ++e->next_id;
    r->arrival = r->id;
    r->engine = e;
    r->state = SP__REQ_WAITING;
    list_push_back(&e->inbox, r);
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return SP_OK;
}

void sp_request_cancel(sp_request *r) {
    atomic_store(&r->cancel, true);
    sp_engine *e = r->engine;
    if (!e)
        return;
    pthread_mutex_lock(&e->mu);
    e->cancel_pending = true;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

static void *engine_main(void *arg) {
    sp_engine *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        while (!e->stopping && e->inbox.n == 0 && !e->cancel_pending && e->running.n == 0 &&
               e->waiting.n == 0) {
            pthread_mutex_lock(&e->smu);
            e->stats.busy_since_us = 0;
            pthread_mutex_unlock(&e->smu);
            pthread_cond_wait(&e->cv, &e->mu);
        }
        bool stop = e->stopping;
        pthread_mutex_unlock(&e->mu);
        if (stop)
            break;
        pthread_mutex_lock(&e->smu);
        if (!e->stats.busy_since_us)
            e->stats.busy_since_us = sp_time_us();
        pthread_mutex_unlock(&e->smu);
        if (!sp_engine_step(e) && e->running.n == 0) {
            // Waiting requests that cannot be admitted with nothing running cannot happen
            // (submit checks the pool size); sleep until something changes.
            pthread_mutex_lock(&e->mu);
            if (!e->stopping && e->inbox.n == 0 && !e->cancel_pending)
                pthread_cond_wait(&e->cv, &e->mu);
            pthread_mutex_unlock(&e->mu);
        }
    }
    return NULL;
}

sp_err sp_engine_start(sp_engine *e) {
    if (e->started)
        return SP_ERR_INVALID;
    if (pthread_create(&e->thread, NULL, engine_main, e))
        return SP_ERR_NOMEM;
    e->started = true;
    return SP_OK;
}

void sp_engine_stats_get(sp_engine *e, sp_engine_stats *out) {
    // Lock order mu, then smu (as the engine thread takes them): submitted requests the engine
    // has not taken in yet count as waiting, and none is missed while it moves.
    pthread_mutex_lock(&e->mu);
    pthread_mutex_lock(&e->smu);
    *out = e->stats;
    out->n_waiting += e->inbox.n;
    pthread_mutex_unlock(&e->smu);
    pthread_mutex_unlock(&e->mu);
}

void sp_engine_destroy(sp_engine *e) {
    if (!e)
        return;
    pthread_mutex_lock(&e->mu);
    e->stopping = true;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    if (e->started)
        pthread_join(e->thread, NULL);
    if (e->pool) {
        drain_inbox(e);
        while (e->running.head)
            sp__engine_finish(e, e->running.head, SP_FINISH_CANCELLED, SP_OK, NULL);
        while (e->waiting.head)
            sp__engine_finish(e, e->waiting.head, SP_FINISH_CANCELLED, SP_OK, NULL);
    }
    for (sp_request *r = sp_engine_take_ready(e); r;) {
        sp_request *next = sp_request_next_ready(r);
        sp_request_release(r);
        r = next;
    }
    if (e->o.policy.destroy)
        e->o.policy.destroy(e->o.policy.ctx);
    if (e->step_log)
        fclose(e->step_log);
    if (e->sessions)
        sp_sessions_destroy(e->sessions, e->pool);
    sp_forward_destroy(e->fw);
    sp_draft_destroy(e->drafter);
    sp_spec_index_destroy(e->ngrams);
    sp_model_destroy(e->draft_model);
    free(e->dq);
    free(e->dseqs);
    free(e->b_dk);
    free(e->b_dq);
    sp_threadpool_destroy(e->threads);
    sp_kv_pool_destroy(e->pool);
    sp_kvbuf_deinit(&e->kv);
    free(e->b_tok);
    free(e->b_pos);
    free(e->b_seq);
    free(e->b_rows);
    free(e->b_tables);
    free(e->b_nblocks);
    free(e->b_reqs);
    free(e->b_chunk);
    free(e->b_out_seq);
    free(e->b_draft);
    free(e->b_ndraft);
    free(e->d_reqs);
    free(e->d_tokens);
    free(e->d_len);
    free(e->d_avail);
    free(e->views);
    free(e->blk_seen);
    free(e->b_cand);
    free(e->logits);
    sp__constrain_free(e);
    if (e->efd >= 0)
        close(e->efd);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    pthread_mutex_destroy(&e->nmu);
    pthread_mutex_destroy(&e->smu);
    pthread_mutex_destroy(&e->gmu);
    free(e);
}

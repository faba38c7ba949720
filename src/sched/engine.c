#include "sched/engine.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "base/log.h"
#include "base/util.h"
#include "kv/pool.h"
#include "kv/prefix.h"
#include "kv/table.h"
#include "model/forward.h"
#include "model/kvbuf.h"
#include "sched/internal.h"
#include "sched/session.h"

/* A doubly linked list of requests through next/prev. */
typedef struct req_list {
    sp_request *head, *tail;
    int32_t n;
} req_list;

struct sp_engine {
    const sp_model *m;
    const sp_vocab *v;
    sp_engine_opts o;
    int32_t n_ctx;

    // Engine thread only.
    sp_kvbuf kv;
    sp_kv_pool *pool;
    sp_forward *fw;
    sp_threadpool *threads; // compute threads; the engine thread is worker 0
    sp_sessions *sessions;  // multi-turn sessions and their KV pins
    req_list waiting; // arrival order; preempted requests go back to the head
    req_list running; // arrival order (oldest first)
    uint64_t step_no; // steps started (numbering starts at 1)
    double us_per_token; // recent cost of one token in a forward pass (moving average)
    int32_t *b_tok;   // (max_batch_tokens) batch token ids
    int32_t *b_pos;   // (max_batch_tokens) positions
    int32_t *b_seq;   // (max_batch_tokens) sequence index within the batch
    int32_t *b_rows;  // (max_seqs) rows whose logits are wanted
    const int32_t **b_tables; // (max_seqs) block tables
    int32_t *b_nblocks;       // (max_seqs) their lengths
    sp_request **b_reqs;      // (max_seqs) request of each batch sequence
    int32_t *b_chunk;         // (max_seqs) tokens each sequence contributes
    int32_t *b_out_seq;       // (max_seqs) batch sequence of each output row
    float *logits;            // (max_seqs, n_vocab)
    sp_policy_req *views;     // (max_seqs) snapshot for the admission policy
    int32_t top_ids[SP_REQ_MAX_TOP_LOGPROBS];
    float top_lps[SP_REQ_MAX_TOP_LOGPROBS];

    // Inbox and thread control, under mu.
    pthread_mutex_t mu;
    pthread_cond_t cv;
    req_list inbox;
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
                            .policy = sp_policy_aggressive()};
}

/* ---- lists ---------------------------------------------------------------------------------- */

static void list_remove(req_list *l, sp_request *r) {
    if (r->prev)
        r->prev->next = r->next;
    else
        l->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        l->tail = r->prev;
    r->next = r->prev = NULL;
    l->n--;
}

static void list_push_back(req_list *l, sp_request *r) {
    r->next = NULL;
    r->prev = l->tail;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
    l->n++;
}

static void list_push_front(req_list *l, sp_request *r) {
    r->prev = NULL;
    r->next = l->head;
    if (l->head)
        l->head->prev = r;
    else
        l->tail = r;
    l->head = r;
    l->n++;
}

/* Inserts keeping arrival order. */
static void list_insert_sorted(req_list *l, sp_request *r) {
    sp_request *after = l->tail;
    while (after && after->arrival > r->arrival)
        after = after->prev;
    if (!after) {
        list_push_front(l, r);
        return;
    }
    r->prev = after;
    r->next = after->next;
    if (after->next)
        after->next->prev = r;
    else
        l->tail = r;
    after->next = r;
    l->n++;
}

/* ---- creation ------------------------------------------------------------------------------- */

sp_err sp_engine_create(const sp_model *m, const sp_vocab *v, const sp_engine_opts *opts,
                        sp_engine **out, sp_diag *diag) {
    sp_engine_opts o = opts ? *opts : sp_engine_opts_default();
    if (!o.policy.admit)
        o.policy = sp_policy_aggressive();
    if (o.max_batch_tokens < 1 || o.max_seqs < 1 || o.block_size < 1 || o.max_chunk < 0 ||
        o.n_threads < 0 || o.n_threads > SP_THREADPOOL_MAX_THREADS ||
        o.n_ctx < 0 || o.kv_bytes < 0 || o.kv_tokens < 0 ||
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
    int64_t n_blocks;
    if (o.kv_bytes)
        n_blocks = o.kv_bytes / (int64_t)block_bytes;
    else if (o.kv_tokens)
        n_blocks = (o.kv_tokens + o.block_size - 1) / o.block_size;
    else {
        int64_t want = (int64_t)o.max_seqs * ((n_ctx + o.block_size - 1) / o.block_size);
        n_blocks = SP_MIN(want, ((int64_t)1 << 30) / (int64_t)block_bytes);
    }
    if (n_blocks < 1 || n_blocks > INT32_MAX / 2)
        return sp_diag_set(diag, SP_ERR_INVALID, UINT64_MAX,
                           "the KV pool must hold at least one block of %zu bytes", block_bytes);

    if (o.admission[0]) {
        if (sp_policy_create(o.admission, SP_MAX(o.max_seqs, 1), o.kv_hash_seed ^ 0x5eed,
                             &o.policy) != SP_OK)
            return sp_diag_set(diag, SP_ERR_INVALID, UINT64_MAX,
                               "unknown admission policy '%s' (aggressive, conservative, "
                               "past-future)",
                               o.admission);
    }
    sp_engine *e = calloc(1, sizeof *e);
    if (!e) {
        if (o.admission[0] && o.policy.destroy)
            o.policy.destroy(o.policy.ctx);
        return SP_ERR_NOMEM;
    }
    e->m = m;
    e->v = v;
    e->o = o;
    e->n_ctx = n_ctx;
    e->efd = -1;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    pthread_mutex_init(&e->nmu, NULL);
    pthread_mutex_init(&e->smu, NULL);
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
        (err = sp_forward_set_pool(e->fw, e->threads)))
        goto fail;
    const size_t T = (size_t)o.max_batch_tokens, S = (size_t)o.max_seqs;
    e->b_tok = malloc(T * sizeof *e->b_tok);
    e->b_pos = malloc(T * sizeof *e->b_pos);
    e->b_seq = malloc(T * sizeof *e->b_seq);
    e->b_rows = malloc(S * sizeof *e->b_rows);
    e->b_tables = malloc(S * sizeof *e->b_tables);
    e->b_nblocks = malloc(S * sizeof *e->b_nblocks);
    e->b_reqs = malloc(S * sizeof *e->b_reqs);
    e->b_chunk = malloc(S * sizeof *e->b_chunk);
    e->b_out_seq = malloc(S * sizeof *e->b_out_seq);
    e->views = malloc(S * sizeof *e->views);
    e->logits = malloc(S * (size_t)m->hp.n_vocab * sizeof *e->logits);
    e->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!e->b_tok || !e->b_pos || !e->b_seq || !e->b_rows || !e->b_tables || !e->b_nblocks ||
        !e->b_reqs || !e->b_chunk || !e->b_out_seq || !e->views || !e->logits) {
        err = SP_ERR_NOMEM;
        goto fail;
    }
    if (e->efd < 0) {
        err = sp_diag_set(diag, SP_ERR_IO, UINT64_MAX, "eventfd failed");
        goto fail;
    }
    e->stats.n_blocks = (int32_t)n_blocks;
    e->stats.block_size = o.block_size;
    e->stats.n_ctx = n_ctx;
    *out = e;
    return SP_OK;
fail:
    if (!opts || !opts->admission[0])
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

int sp_engine_notify_fd(const sp_engine *e) { return e->efd; }

int32_t sp_engine_n_ctx(const sp_engine *e) { return e->n_ctx; }

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

static void finish_request(sp_engine *e, sp_request *r, sp_finish f, sp_err err,
                           const char *msg) {
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

/* Samples the next token of r from its logits row and publishes it. */
static void sample_token(sp_engine *e, sp_request *r, const float *logits) {
    const int32_t V = e->m->hp.n_vocab;
    if (e->o.on_logits)
        e->o.on_logits(e->o.hook_ctx, r, logits, V);
    int32_t tok = sp_sampler_sample(r->sampler, logits);
    sp_sampler_accept(r->sampler, tok);
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
        finish_request(e, r, SP_FINISH_ERROR, SP_ERR_NOMEM, "out of memory for the output text");
    else if (matched || eog || (r->params.stop_after > 0 && r->n_generated >= r->params.stop_after))
        finish_request(e, r, SP_FINISH_STOP, SP_OK, NULL);
    else if (r->n_generated >= r->params.max_tokens || r->n_tokens >= e->n_ctx)
        finish_request(e, r, SP_FINISH_LENGTH, SP_OK, NULL);
    else
        notify(e, r);
}

/* ---- scheduling ----------------------------------------------------------------------------- */

static void preempt(sp_engine *e, sp_request *r, bool for_priority) {
    sp_kv_seq_release(e->pool, &r->seq);
    list_remove(&e->running, r);
    r->n_computed = 0;
    r->guard = true;
    r->state = SP__REQ_WAITING;
    list_push_front(&e->waiting, r);
    pthread_mutex_lock(&r->mu);
    r->stats.n_preemptions++;
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_lock(&e->smu);
    e->stats.preemptions++;
    if (for_priority)
        e->stats.preemptions_priority++;
    pthread_mutex_unlock(&e->smu);
    if (e->o.on_preempt)
        e->o.on_preempt(e->o.hook_ctx, r);
}

/* Makes room for r to claim n more positions by preempting the newest running requests that
 * are not protected and not already in this step's batch (n_scheduled of them are, the oldest
 * ones). Returns false if r itself had to go, or nothing could be freed. */
static bool reserve_or_preempt(sp_engine *e, sp_request *r, int32_t n, int32_t *n_preempted) {
    for (;;) {
        if (sp_kv_seq_reserve(e->pool, &r->seq, n) == SP_OK)
            return true;
        if (sp_sessions_reclaim_oldest(e->sessions, e->pool))
            continue; // pins go before running requests
        sp_request *victim = e->running.tail;
        while (victim && victim != r && victim->guard)
            victim = victim->prev;
        if (!victim)
            return false; // only protected requests: r waits for them to finish prefilling
        preempt(e, victim, false);
        (*n_preempted)++;
        if (victim == r)
            return false;
    }
}

static int32_t blocks_for(const sp_engine *e, int32_t n_tokens) {
    return (n_tokens + e->o.block_size - 1) / e->o.block_size;
}

static sp_policy_req view_of(const sp_engine *e, const sp_request *r) {
    int32_t max_rem = SP_MIN(r->params.max_tokens - r->n_generated, e->n_ctx - r->n_tokens);
    return (sp_policy_req){.n_kv = r->n_tokens,
                           .n_generated = r->n_generated,
                           .max_remaining = SP_MAX(max_rem, 0),
                           .n_prompt = r->n_prompt,
                           .priority = r->params.priority,
                           .t_arrival_us = r->stats.t_submit_us};
}

/* Salt of a request's cached blocks. */
static uint64_t salt_of(const sp_engine *e, const sp_request *r) {
    return r->params.cache_salt ^ e->o.cache_salt;
}

/* True if a running request is still computing blocks of r's prompt that the cache does not
 * hold yet (beyond `cached` tokens): r then waits for them instead of computing them twice. */
static bool prefix_in_flight(const sp_engine *e, const sp_request *r, int32_t cached) {
    if (!e->o.prefix_cache)
        return false;
    const int32_t bs = e->o.block_size;
    for (const sp_request *q = e->running.head; q; q = q->next) {
        if (q->n_computed >= q->n_tokens || salt_of(e, q) != salt_of(e, r))
            continue;
        int32_t n = SP_MIN(r->n_tokens - 1, q->n_tokens);
        int32_t common = 0;
        while (common < n && r->tokens[common] == q->tokens[common])
            common++;
        int32_t shared = common / bs * bs;
        if (shared > cached && q->n_computed < shared)
            return true;
    }
    return false;
}

/* A request's priority for scheduling: its own (lower is more urgent), or the most urgent of
 * all once it has waited longer than max_wait_ms (no starvation). */
static int64_t eff_priority(const sp_engine *e, const sp_request *r, int64_t now) {
    if (e->o.max_wait_ms > 0 && now - r->stats.t_submit_us > (int64_t)e->o.max_wait_ms * 1000)
        return INT64_MIN;
    return r->params.priority;
}

/* The waiting request that comes first: most urgent priority, then earliest arrival. */
static sp_request *first_waiting(const sp_engine *e, int64_t now) {
    sp_request *best = NULL;
    int64_t best_p = 0;
    for (sp_request *r = e->waiting.head; r; r = r->next) {
        int64_t p = eff_priority(e, r, now);
        if (!best || p < best_p || (p == best_p && r->arrival < best->arrival)) {
            best = r;
            best_p = p;
        }
    }
    return best;
}

/* Chooses the waiting request to admit next: the first by priority and arrival, or, among the
 * first prefix_window waiting requests of that same priority, the one whose prompt has the most
 * tokens in the prefix cache (ties: arrival order), unless the first has waited longer than
 * max_reorder_wait_ms, which bounds how long reordering can delay anyone. Requests whose prefix
 * another request is computing right now wait for it. *cached receives the chosen request's
 * cached prompt tokens. */
static sp_request *pick_candidate(sp_engine *e, int32_t *cached) {
    int64_t now = sp_time_us();
    sp_request *head = first_waiting(e, now);
    if (!head)
        return NULL;
    const int64_t head_p = eff_priority(e, head, now);
    bool head_only = now - head->stats.t_submit_us > (int64_t)e->o.max_reorder_wait_ms * 1000;
    int32_t window = head_only ? 1 : SP_MAX(e->o.prefix_window, 1);
    sp_request *best = NULL;
    int32_t best_cached = -1, i = 0;
    for (sp_request *r = head_only ? head : e->waiting.head; r && i < window; r = r->next) {
        if (eff_priority(e, r, now) != head_p || r->arrival < head->arrival)
            continue;
        i++;
        int32_t c = e->o.prefix_cache
                        ? sp_kv_prefix_match(e->pool, salt_of(e, r), r->tokens, r->n_tokens - 1)
                        : 0;
        if (prefix_in_flight(e, r, c))
            continue;
        if (c > best_cached) {
            best = r;
            best_cached = c;
        }
        if (head_only)
            break;
    }
    *cached = best_cached;
    return best;
}

/* The running request a more urgent candidate may displace: the newest of the least urgent
 * ones, if its declared priority is less urgent than the candidate's (waiting time orders the
 * queue but licenses no preemption) and it is not protected (resumed, still prefilling); NULL
 * otherwise. */
static sp_request *priority_victim(const sp_engine *e, const sp_request *cand) {
    sp_request *victim = NULL;
    for (sp_request *q = e->running.tail; q; q = q->prev)
        if (!q->guard && q->scheduled_step != e->step_no &&
            (!victim || q->params.priority > victim->params.priority))
            victim = q;
    if (victim && victim->params.priority > cand->params.priority)
        return victim;
    return NULL;
}

/* Tries to admit the next waiting request (pick_candidate); returns it, or NULL. */
static sp_request *admit_next(sp_engine *e) {
    if (!e->waiting.head)
        return NULL;
    int32_t matched;
    sp_request *r = pick_candidate(e, &matched);
    if (!r)
        return NULL;
    if (e->running.n >= e->o.max_seqs) {
        // The sequence cap: only a more urgent request gets in, by displacing a less urgent one.
        sp_request *victim = priority_victim(e, r);
        if (!victim)
            return NULL;
        preempt(e, victim, true);
    }
    // Blocks needed now: the whole prompt (and generated tokens, after a preemption), less the
    // blocks the prefix cache already holds.
    sp_sched_state s = {.block_size = e->o.block_size,
                        .n_blocks = e->kv.n_blocks,
                        .n_available = sp_kv_pool_n_available(e->pool),
                        .n_running = 0,
                        .running = e->views,
                        .n_waiting = e->waiting.n};
    for (sp_request *q = e->running.head; q; q = q->next)
        e->views[s.n_running++] = view_of(e, q);
    sp_policy_req cand = view_of(e, r);
    cand.blocks_needed = blocks_for(e, r->n_tokens) - matched / e->o.block_size;
    bool ok = e->o.policy.admit(e->o.policy.ctx, &s, &cand);
    if (!ok && e->running.n == 0 && cand.blocks_needed <= s.n_available)
        ok = true; // never idle with work that fits
    pthread_mutex_lock(&e->smu);
    if (e->o.policy.predicted_peak)
        e->stats.predicted_peak_tokens = e->o.policy.predicted_peak(e->o.policy.ctx);
    if (ok)
        e->stats.admissions++;
    else
        e->stats.deferrals++;
    pthread_mutex_unlock(&e->smu);
    if (!ok) {
        // Pinned sessions give way to admission, oldest first; then less urgent requests.
        if (cand.blocks_needed > s.n_available && sp_sessions_reclaim_oldest(e->sessions, e->pool))
            return admit_next(e);
        sp_request *victim = priority_victim(e, r);
        if (victim) {
            preempt(e, victim, true);
            return admit_next(e);
        }
        return NULL;
    }
    int32_t got = sp_kv_seq_lookup(e->pool, &r->seq, salt_of(e, r), r->tokens, r->n_tokens - 1);
    while (sp_kv_seq_reserve(e->pool, &r->seq, r->n_tokens - got) != SP_OK) {
        if (!sp_sessions_reclaim_oldest(e->sessions, e->pool)) {
            sp_kv_seq_release(e->pool, &r->seq);
            return NULL;
        }
    }
    // The turn now holds its session's blocks: the pin can go. A turn without a session id
    // continues the pinned session whose blocks its prompt starts with (chat history).
    if (!r->session && e->o.prefix_cache) {
        r->session = sp_sessions_match(e->sessions, &r->seq);
        if (r->session)
            sp_sessions_arrive(e->sessions, r->session, r->arrival, sp_time_us());
    }
    if (r->session)
        sp_sessions_unpin(e->sessions, e->pool, r->session);
    r->n_computed = got;
    list_remove(&e->waiting, r);
    list_insert_sorted(&e->running, r);
    r->state = SP__REQ_RUNNING;
    bool first = false;
    pthread_mutex_lock(&r->mu);
    if (!r->stats.t_admit_us) {
        r->stats.t_admit_us = sp_time_us();
        r->stats.n_cached = got;
        first = true;
    }
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_lock(&e->smu);
    if (first) {
        e->stats.prefix_query_tokens += (uint64_t)r->n_prompt;
        e->stats.cached_tokens += (uint64_t)got;
    }
    pthread_mutex_unlock(&e->smu);
    return r;
}

/* Deadlines (opt-in): a waiting request whose first token cannot come in time is rejected now
 * rather than served late. Its wait is estimated as the prompt tokens that will be computed
 * before its own (running prefills, and waiting requests ahead of it), plus its own, at the
 * recent cost per token; past the deadline it is rejected in any case. */
static void reject_late(sp_engine *e) {
    const int64_t now = sp_time_us();
    int64_t ahead = 0;
    for (sp_request *q = e->running.head; q; q = q->next)
        ahead += q->n_tokens - q->n_computed;
    for (sp_request *r = e->waiting.head; r;) {
        sp_request *next = r->next;
        const int32_t own = r->n_tokens;
        if (r->params.deadline_ms > 0 && !r->stats.t_admit_us) {
            int64_t deadline = r->stats.t_submit_us + (int64_t)r->params.deadline_ms * 1000;
            double eta = (double)now + (double)(ahead + own) * e->us_per_token;
            if (now > deadline || eta > (double)deadline) {
                finish_request(e, r, SP_FINISH_ERROR, SP_ERR_LIMIT,
                               "the request cannot meet its deadline: the server is busy");
                r = next;
                continue;
            }
        }
        ahead += own;
        r = next;
    }
}

static void drain_inbox(sp_engine *e) {
    pthread_mutex_lock(&e->mu);
    sp_request *r = e->inbox.head;
    e->inbox = (req_list){0};
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
    reject_late(e);
    if (!cancels)
        return;
    req_list *lists[] = {&e->running, &e->waiting};
    for (int i = 0; i < 2; i++) {
        for (sp_request *q = lists[i]->head; q;) {
            sp_request *next = q->next;
            if (atomic_load(&q->cancel))
                finish_request(e, q, SP_FINISH_CANCELLED, SP_OK, NULL);
            q = next;
        }
    }
}

/* Adds a sequence's chunk to the batch. */
static void add_chunk(sp_engine *e, sp_request *r, int32_t chunk, int32_t *n_tok,
                      int32_t *n_seq, int32_t *n_out) {
    int32_t s = (*n_seq)++;
    r->scheduled_step = e->step_no;
    e->b_reqs[s] = r;
    e->b_chunk[s] = chunk;
    e->b_tables[s] = r->seq.blocks;
    e->b_nblocks[s] = r->seq.n_blocks;
    for (int32_t i = 0; i < chunk; i++) {
        int32_t p = r->n_computed + i;
        e->b_tok[*n_tok] = r->tokens[p];
        e->b_pos[*n_tok] = p;
        e->b_seq[*n_tok] = s;
        (*n_tok)++;
    }
    if (r->n_computed + chunk == r->n_tokens) {
        e->b_rows[*n_out] = *n_tok - 1;
        e->b_out_seq[*n_out] = s;
        (*n_out)++;
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

/* Before a step's batch is built: while the most urgent waiting request is kept out by the
 * sequence cap or by memory and a less urgent request is running, the newest of the least
 * urgent running requests makes way. */
static void displace_for_priority(sp_engine *e) {
    for (;;) {
        int64_t now = sp_time_us();
        sp_request *cand = first_waiting(e, now);
        if (!cand)
            return;
        int32_t cached = e->o.prefix_cache ? sp_kv_prefix_match(e->pool, salt_of(e, cand),
                                                                cand->tokens, cand->n_tokens - 1)
                                           : 0;
        bool blocked = e->running.n >= e->o.max_seqs ||
                       blocks_for(e, cand->n_tokens) - cached / e->o.block_size >
                           sp_kv_pool_n_available(e->pool);
        sp_request *victim = blocked ? priority_victim(e, cand) : NULL;
        if (!victim)
            return;
        preempt(e, victim, true);
    }
}

bool sp_engine_step(sp_engine *e) {
    e->step_no++;
    drain_inbox(e);
    displace_for_priority(e);
    int32_t n_tok = 0, n_seq = 0, n_out = 0, n_decode = 0, n_preempted = 0;
    int32_t budget = e->o.max_batch_tokens;

    // 1. One decode token for every running request whose prompt is done, oldest first.
    for (sp_request *r = e->running.head; r && budget > 0 && n_seq < e->o.max_seqs;) {
        sp_request *next = r->next;
        if (r->n_tokens - r->n_computed == 1 && r->n_generated > 0) {
            int32_t need = r->n_tokens - r->seq.n_tokens;
            bool ok = need <= 0 || reserve_or_preempt(e, r, need, &n_preempted);
            if (ok) {
                add_chunk(e, r, 1, &n_tok, &n_seq, &n_out);
                budget--;
                n_decode++;
            }
            // The list may have lost its tail to preemption; r itself may be gone.
            next = r->state == SP__REQ_RUNNING ? r->next : NULL;
        }
        r = next;
    }
    // 2. Prefill chunks of admitted requests, oldest first (their blocks are reserved).
    for (sp_request *r = e->running.head; r && budget > 0 && n_seq < e->o.max_seqs; r = r->next) {
        int32_t remaining = r->n_tokens - r->n_computed;
        if (remaining <= 0 || (remaining == 1 && r->n_generated > 0))
            continue;
        int32_t chunk = SP_MIN(SP_MIN(remaining, e->o.max_chunk), budget);
        add_chunk(e, r, chunk, &n_tok, &n_seq, &n_out);
        budget -= chunk;
    }
    // 3. New requests from the waiting queue, in order, while they are admitted.
    sp_request *adm;
    while (budget > 0 && n_seq < e->o.max_seqs && (adm = admit_next(e))) {
        int32_t chunk = SP_MIN(SP_MIN(adm->n_tokens - adm->n_computed, e->o.max_chunk), budget);
        add_chunk(e, adm, chunk, &n_tok, &n_seq, &n_out);
        budget -= chunk;
    }

    if (n_tok == 0) {
        publish_stats(e, false, 0);
        return false;
    }
    sp_batch b = {.n_tokens = n_tok,
                  .token = e->b_tok,
                  .pos = e->b_pos,
                  .seq = e->b_seq,
                  .n_seqs = n_seq,
                  .block_tables = e->b_tables,
                  .n_seq_blocks = e->b_nblocks,
                  .n_out = n_out,
                  .out_rows = e->b_rows};
    const int64_t t_fw = sp_time_us();
    sp_err err = sp_forward_eval(e->fw, &e->kv, &b, e->logits);
    const double per_tok = (double)(sp_time_us() - t_fw) / n_tok;
    e->us_per_token = e->us_per_token > 0 ? 0.9 * e->us_per_token + 0.1 * per_tok : per_tok;
    if (err) {
        SP_ERROR("forward pass failed: %s", sp_err_str(err));
        for (int32_t s = 0; s < n_seq; s++)
            finish_request(e, e->b_reqs[s], SP_FINISH_ERROR, err, "the forward pass failed");
        return true;
    }
    uint64_t prompt_tokens = (uint64_t)(n_tok - n_decode);
    for (int32_t s = 0; s < n_seq; s++) {
        sp_request *r = e->b_reqs[s];
        r->n_computed += e->b_chunk[s];
        sp_kv_seq_commit(e->pool, &r->seq, r->tokens, r->n_computed);
        if (r->n_computed == r->n_tokens)
            r->guard = false;
    }
    const int32_t V = e->m->hp.n_vocab;
    for (int32_t i = 0; i < n_out; i++) {
        sp_request *r = e->b_reqs[e->b_out_seq[i]];
        if (atomic_load(&r->cancel))
            finish_request(e, r, SP_FINISH_CANCELLED, SP_OK, NULL);
        else
            sample_token(e, r, e->logits + (size_t)i * (size_t)V);
    }

    publish_stats(e, true, prompt_tokens);
    if (e->o.on_step) {
        sp_engine_step_info info = {.n_tokens = n_tok,
                                    .n_decode = n_decode,
                                    .n_seqs = n_seq,
                                    .n_preempted = n_preempted};
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
    if (blocks_for(e, r->n_prompt + 1) > e->kv.n_blocks) {
        sp_diag_set(diag, SP_ERR_RANGE, UINT64_MAX,
                    "the prompt needs %d KV blocks, but the pool has %d: start the server with "
                    "more --kv-memory",
                    blocks_for(e, r->n_prompt + 1), e->kv.n_blocks);
        if (diag)
            snprintf(diag->param, sizeof diag->param, "prompt");
        return SP_ERR_RANGE;
    }
    sp_err err = sp_kv_seq_init(&r->seq, e->pool, SP_MIN(r->cap_tokens, e->n_ctx));
    if (err)
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
    pthread_mutex_lock(&e->smu);
    *out = e->stats;
    pthread_mutex_unlock(&e->smu);
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
            finish_request(e, e->running.head, SP_FINISH_CANCELLED, SP_OK, NULL);
        while (e->waiting.head)
            finish_request(e, e->waiting.head, SP_FINISH_CANCELLED, SP_OK, NULL);
    }
    for (sp_request *r = sp_engine_take_ready(e); r;) {
        sp_request *next = sp_request_next_ready(r);
        sp_request_release(r);
        r = next;
    }
    if (e->o.policy.destroy)
        e->o.policy.destroy(e->o.policy.ctx);
    if (e->sessions)
        sp_sessions_destroy(e->sessions, e->pool);
    sp_forward_destroy(e->fw);
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
    free(e->views);
    free(e->logits);
    if (e->efd >= 0)
        close(e->efd);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    pthread_mutex_destroy(&e->nmu);
    pthread_mutex_destroy(&e->smu);
    free(e);
}

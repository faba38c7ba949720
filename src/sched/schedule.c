/* Scheduling decisions of the engine: admission of waiting requests (through the admission
 * policy, cache-aware ordering, priorities), preemption when memory runs out, displacement for
 * more urgent requests, and early rejection of requests that cannot meet their deadline. The
 * step (engine.c) asks; this file decides. Engine thread only. */
#include <stdio.h>
#include <string.h>

#include "base/util.h"
#include "kv/prefix.h"
#include "kv/table.h"
#include "sched/engine_int.h"

static void preempt(sp_engine *e, sp_request *r, bool for_priority) {
    sp_kv_seq_release(e->pool, &r->seq);
    list_remove(&e->running, r);
    r->n_computed = r->draft_n = 0;
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
bool sp__sched_reserve(sp_engine *e, sp_request *r, int32_t n, int32_t *n_preempted) {
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

int32_t sp__sched_blocks_for(const sp_engine *e, int32_t n_tokens) {
    return (n_tokens + e->o.block_size - 1) / e->o.block_size;
}

static sp_policy_req view_of(const sp_engine *e, const sp_request *r) {
    int32_t max_rem = SP_MIN(r->params.max_tokens - r->n_generated, e->max_len - r->n_tokens);
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
sp_request *sp__sched_admit_next(sp_engine *e) {
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
    // Blocks that several requests share (a common prefix) count once: each request's KV is
    // what it holds beyond the blocks already counted for the requests before it, and the
    // candidate's beyond the prefix it finds in the cache.
    if (++e->blk_epoch == 0) {
        memset(e->blk_seen, 0, (size_t)e->kv.n_blocks * sizeof *e->blk_seen);
        e->blk_epoch = 1;
    }
    for (sp_request *q = e->running.head; q; q = q->next) {
        sp_policy_req v = view_of(e, q);
        for (int32_t b = 0; b < q->seq.n_blocks; b++) {
            const int32_t id = q->seq.blocks[b];
            if (id < 0 || id >= e->kv.n_blocks)
                continue;
            if (e->blk_seen[id] == e->blk_epoch)
                v.n_kv -= SP_MIN(e->o.block_size, v.n_kv);
            e->blk_seen[id] = e->blk_epoch;
        }
        e->views[s.n_running++] = v;
    }
    sp_policy_req cand = view_of(e, r);
    cand.n_kv -= SP_MIN(matched, cand.n_kv);
    cand.blocks_needed = sp__sched_blocks_for(e, r->n_tokens) - matched / e->o.block_size;
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
            return sp__sched_admit_next(e);
        sp_request *victim = priority_victim(e, r);
        if (victim) {
            preempt(e, victim, true);
            return sp__sched_admit_next(e);
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
    r->n_computed = r->draft_n = got; // a cached block has the draft model's KV too
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
void sp__sched_reject_late(sp_engine *e) {
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
                sp__engine_finish(e, r, SP_FINISH_ERROR, SP_ERR_LIMIT,
                                  "the request cannot meet its deadline: the server is busy");
                r = next;
                continue;
            }
        }
        ahead += own;
        r = next;
    }
}

/* Before a step's batch is built: while the most urgent waiting request is kept out by the
 * sequence cap or by memory and a less urgent request is running, the newest of the least
 * urgent running requests makes way. */
void sp__sched_displace_for_priority(sp_engine *e) {
    for (;;) {
        int64_t now = sp_time_us();
        sp_request *cand = first_waiting(e, now);
        if (!cand)
            return;
        int32_t cached = e->o.prefix_cache ? sp_kv_prefix_match(e->pool, salt_of(e, cand),
                                                                cand->tokens, cand->n_tokens - 1)
                                           : 0;
        bool blocked = e->running.n >= e->o.max_seqs ||
                       sp__sched_blocks_for(e, cand->n_tokens) - cached / e->o.block_size >
                           sp_kv_pool_n_available(e->pool);
        sp_request *victim = blocked ? priority_victim(e, cand) : NULL;
        if (!victim)
            return;
        preempt(e, victim, true);
    }
}

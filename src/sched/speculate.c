/* Speculative decoding in the engine: each decode's draft tokens (from a predicted output, by
 * prompt lookup, or from a draft model), their lengths under --spec auto, and what is learnt
 * from the tokens the target model accepts. The step itself (engine.c) puts the drafts in its
 * batch and checks them. Engine thread only. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/util.h"
#include "kv/table.h"
#include "sched/engine_int.h"
#include "spec/lookup.h"

enum {
    SPEC_PROBE_EVERY = 32, // decodes without a draft before --spec auto tries one token
    SPEC_INFORMED = 64,    // draft outcomes (decayed) of a kind of drafter after which a new
                           // request trusts the engine-wide estimate without a first probe
    SPEC_PRIOR = 16,       // weight of the engine-wide estimate in a request's (in draft tokens)
    DRAFT_Q_ROWS = 256,    // distributions of sampled draft-model drafts kept per step
};
#define SPEC_COST_DECAY 0.98 // per drafting step, of the draft cost's least-squares sums
#define SPEC_COST_PRIOR 0.03 // their pull toward 1 (3 steps whose drafts are 10% of them)
#define SPEC_COST_MIN_STEPS (2 * SP_STEPTIME_MIN_FIT) // measured steps before it learns

sp__draft_kind sp__spec_kind(const sp_engine *e, const sp_request *r) {
    return r->params.n_prediction > 0 ? SP__DRAFT_PREDICTION
           : e->drafter               ? SP__DRAFT_MODEL
                                      : SP__DRAFT_LOOKUP;
}

/* ---- the draft model ------------------------------------------------------------------------ */

sp_err sp__spec_load_draft_model(const char *path, const sp_model *m, const sp_vocab *v,
                                 sp_model **out, sp_diag *diag) {
    sp_model *dm = NULL;
    sp_vocab *dv = NULL;
    sp_err err = sp_model_load(path, &dm, diag);
    if (err)
        return err;
    if ((err = sp_vocab_load(dm->gguf, &dv, diag))) {
        sp_model_destroy(dm);
        return err;
    }
    // The same vocabulary: the same logits width and the same text for every token id.
    const uint32_t n = sp_vocab_n_tokens(v);
    int64_t bad = -1;
    if (dm->hp.n_vocab != m->hp.n_vocab || sp_vocab_n_tokens(dv) != n)
        bad = INT64_MAX;
    for (uint32_t i = 0; i < n && bad < 0; i++) {
        const sp_str a = sp_vocab_token_text(v, (sp_token)i),
                     b = sp_vocab_token_text(dv, (sp_token)i);
        if (a.len != b.len || memcmp(a.ptr, b.ptr, a.len) ||
            sp_vocab_token_attr(v, (sp_token)i) != sp_vocab_token_attr(dv, (sp_token)i))
            bad = i;
    }
    if (bad == INT64_MAX)
        err = sp_diag_set(diag, SP_ERR_INVALID, UINT64_MAX,
                          "the draft model %s has another vocabulary (%u tokens, %d logits) than "
                          "the model (%u tokens, %d logits): use a draft model of the same family",
                          path, sp_vocab_n_tokens(dv), dm->hp.n_vocab, n, m->hp.n_vocab);
    else if (bad >= 0)
        err = sp_diag_set(diag, SP_ERR_INVALID, UINT64_MAX,
                          "the draft model %s has another vocabulary than the model (token %lld "
                          "differs): use a draft model of the same family",
                          path, (long long)bad);
    sp_vocab_destroy(dv);
    if (err) {
        sp_model_destroy(dm);
        return err;
    }
    *out = dm;
    return SP_OK;
}

sp_err sp__spec_open_drafter(sp_engine *e, int32_t n_blocks) {
    const sp_engine_opts *o = &e->o;
    const size_t S = (size_t)o->max_seqs, V = (size_t)e->m->hp.n_vocab;
    sp_err err =
        sp_draft_create(e->draft_model, o->kv_type, o->block_size, n_blocks, o->max_batch_tokens,
                        o->max_seqs, SP_MAX(o->spec_k, 1), e->n_ctx, &e->drafter);
    if (err || (err = sp_draft_set_pool(e->drafter, e->threads)))
        return err;
    e->kv.twin = sp_draft_kv(e->drafter);
    e->n_dq_rows = (int32_t)SP_MIN(S * (size_t)SP_MAX(o->spec_k, 1), (size_t)DRAFT_Q_ROWS);
    e->dq = malloc((size_t)e->n_dq_rows * V * sizeof *e->dq);
    e->dseqs = malloc(S * sizeof *e->dseqs);
    e->b_dk = calloc(S, sizeof *e->b_dk);
    e->b_dq = malloc(S * sizeof *e->b_dq);
    if (!e->dq || !e->dseqs || !e->b_dk || !e->b_dq)
        return SP_ERR_NOMEM;
    e->draft_ratio =
        (double)sp_model_weight_bytes(e->draft_model) / (double)sp_model_weight_bytes(e->m);
    e->draft_scale = 1.0;
    return SP_OK;
}

/* The draft model's predicted time for passes forward passes of tokens tokens in all, from the
 * target's step-time model scaled by the two models' sizes and by what was measured. */
static double draft_model_us(const sp_engine *e, double passes, double tokens) {
    const double *c = e->steptime.coef;
    return e->draft_scale * e->draft_ratio * (passes * c[0] + tokens * (c[1] + c[3]));
}

void sp__spec_run_draft_model(sp_engine *e, int32_t n_seq) {
    if (!e->drafter)
        return;
    const size_t V = (size_t)e->m->hp.n_vocab;
    int32_t q_rows = e->n_dq_rows;
    for (int32_t s = 0; s < n_seq; s++) {
        sp_request *r = e->b_reqs[s];
        const int32_t k = sp__spec_kind(e, r) == SP__DRAFT_MODEL ? e->b_ndraft[s] : 0;
        // A sampled request's drafts are drawn from the draft model's distribution while there
        // are rows to keep it in, else they are its argmax (a point mass: exact all the same).
        float *q = NULL;
        if (k > 0 && r->params.sample.temperature > 0.0f && q_rows >= k) {
            q_rows -= k;
            q = e->dq + (size_t)q_rows * V;
        }
        e->b_dk[s] = k;
        e->b_dq[s] = q;
        // A decode without drafts leaves the draft model behind: its tokens are caught up, in
        // one chunk, when the request drafts again (a prompt's chunks are followed at once, so
        // that no catch-up is ever a whole prompt).
        const int32_t from = SP_MIN(r->draft_n, r->n_computed);
        const bool lag = k == 0 && e->b_chunk[s] == 1 && r->n_generated > 0;
        e->dseqs[s] = (sp_draft_seq){.tokens = r->tokens,
                                     .from = from,
                                     .to = lag ? from : r->n_computed + e->b_chunk[s],
                                     .blocks = r->seq.blocks,
                                     .n_blocks = r->seq.n_blocks,
                                     .k = k,
                                     .sampler = r->sampler,
                                     .out = e->b_draft + (size_t)s * SP_ENGINE_MAX_SPEC,
                                     .q = q};
    }
    sp_err err = sp_draft_run(e->drafter, e->dseqs, n_seq);
    const sp_draft_timing t = sp_draft_last_timing(e->drafter);
    if (err)
        SP_ERROR("the draft model failed: %s", sp_err_str(err));
    else if (t.n_passes > 0) {
        const double predicted = draft_model_us(e, t.n_passes, t.n_tokens) / e->draft_scale;
        if (predicted > 0 && t.total_us > 0)
            e->draft_scale = 0.9 * e->draft_scale + 0.1 * (t.total_us / predicted);
    }
    pthread_mutex_lock(&e->smu);
    e->stats.spec_draft_model_us += (uint64_t)t.total_us;
    pthread_mutex_unlock(&e->smu);
    // The drafts into the batch, after each sequence's own tokens. On failure the drafts are
    // checked as point masses on token 0: wasted, but the output stays exact.
    int32_t at = 0;
    for (int32_t s = 0; s < n_seq; s++) {
        sp_request *r = e->b_reqs[s];
        int32_t *draft = e->b_draft + (size_t)s * SP_ENGINE_MAX_SPEC;
        if (err && e->b_dk[s] > 0) {
            memset(draft, 0, sizeof *draft * (size_t)e->b_dk[s]);
            e->b_dq[s] = NULL;
        }
        if (e->b_dk[s] > 0)
            memcpy(e->b_tok + at + e->b_chunk[s], draft, sizeof *draft * (size_t)e->b_dk[s]);
        if (!err)
            r->draft_n = e->dseqs[s].to;
        at += e->b_chunk[s] + e->b_ndraft[s];
    }
}

const float *sp__spec_draft_q(const sp_engine *e, int32_t s, int32_t j) {
    if (!e->drafter || e->b_dk[s] == 0 || !e->b_dq[s])
        return NULL;
    return e->b_dq[s] + (size_t)j * (size_t)e->m->hp.n_vocab;
}

/* ---- drafts and their lengths --------------------------------------------------------------- */

/* The draft tokens for r's next decode, at most max, into draft; their count. A request with a
 * predicted output follows it (where the output is at the same place in it, the prediction's
 * next tokens; else the tokens after the latest place in the prediction where the last 1-4
 * output tokens occur); with a draft model, max placeholders (the model drafts once the step's
 * batch is known: sp__spec_run_draft_model); otherwise prompt lookup (what followed the latest
 * earlier occurrence of the longest suffix, up to 3 tokens, of its prompt and output), with the
 * n-gram index of finished requests' text before suffixes of 1-2 tokens.
 * Positions for them are claimed in r's KV table here, without preempting anyone: with no free
 * block there is no draft. */
int32_t sp__spec_draft_for(sp_engine *e, sp_request *r, int32_t max, int32_t *draft) {
    max = SP_MIN(max,
                 SP_MIN(r->params.max_tokens - r->n_generated - 1, e->max_len - r->n_tokens - 1));
    if (r->params.stop_after > 0)
        max = SP_MIN(max, r->params.stop_after - r->n_generated - 1);
    if (max <= 0)
        return 0;
    int32_t k;
    switch (sp__spec_kind(e, r)) {
    case SP__DRAFT_PREDICTION: {
        // Where the output still follows the prediction at the same place (its last token is
        // the prediction's, or the one before is: a token the prediction got wrong), the
        // prediction's next tokens; where it has left it, a lookup of its last tokens in it.
        const int32_t *pred = r->params.prediction, *out = r->tokens + r->n_prompt;
        const int32_t n = r->n_generated;
        if (n < r->params.n_prediction &&
            (out[n - 1] == pred[n - 1] || (n >= 2 && out[n - 2] == pred[n - 2]))) {
            k = SP_MIN(max, r->params.n_prediction - n);
            memcpy(draft, pred + n, sizeof *draft * (size_t)k);
        } else {
            k = sp_spec_lookup(pred, r->params.n_prediction, out, n, 1, 4, max, draft);
        }
        break;
    }
    case SP__DRAFT_MODEL:
        k = max;
        memset(draft, 0, sizeof *draft * (size_t)k);
        break;
    default:
        // Its own text first where its last 3 tokens occur in it, then the text of earlier
        // requests (of its cache salt) after its last 3 tokens, then its own after the last
        // 2 or 1.
        k = sp_spec_lookup(r->tokens, r->n_tokens, r->tokens, r->n_tokens, 3, 3, max, draft);
        if (k == 0 && e->ngrams)
            k = sp_spec_index_lookup(e->ngrams, r->params.cache_salt, r->tokens, r->n_tokens, max,
                                     draft);
        if (k == 0)
            k = sp_spec_lookup(r->tokens, r->n_tokens, r->tokens, r->n_tokens, 1, 2, max, draft);
        break;
    }
    const int32_t need = r->n_tokens + k - r->seq.n_tokens;
    if (k > 0 && need > 0 && sp_kv_seq_reserve(e->pool, &r->seq, need) != SP_OK)
        k = 0;
    return k;
}

/* --spec auto: chooses each collected decode's draft length d_len[i] (at most the drafted
 * tokens it has) for the most expected tokens per second of step time (SmartSpec's goodput).
 * A request's draft tokens are each accepted with probability a, its acceptance estimate
 * ((accepted + 16 g) / (accepted + cut short + 16), decayed counts, g the engine-wide estimate
 * for its kind of drafter), so its j-th draft token adds a^j expected tokens; each costs the
 * step-time model's price of one more token (its logits row, and its attended positions)
 * times what draft tokens were measured to cost against that price (sp__spec_observe: a step
 * that reads the weights anyway computes a few more tokens for less than the linear model
 * says), and a draft model's the draft model's price of a token, and of a forward pass when no
 * other request has a j-th draft yet. Starting from no drafts (one token per decode), the draft
 * token with the best gain per microsecond is added while that ratio beats the step's
 * expected tokens per microsecond so far. A request's first draft (while the engine-wide
 * estimate of its drafter has seen fewer than SPEC_INFORMED outcomes), and one after
 * SPEC_PROBE_EVERY decodes without, has at least one token, so that its estimate (and the
 * engine-wide one, which starts at 1/2) learns from it: without those first probes, short
 * requests would be served on the starting estimate alone. */
static void size_drafts(sp_engine *e, int32_t n, int32_t max_total) {
    const double *c = e->steptime.coef;
    sp_step_shape base = {.n_decode = n, .n_out = n};
    for (int32_t i = 0; i < n; i++)
        base.n_attn += e->d_reqs[i]->n_tokens;
    double t = sp_steptime_predict(&e->steptime, base), tokens = n;
    const double draft_tok_us = e->drafter ? draft_model_us(e, 0, 1) : 0;
    const double draft_pass_us = e->drafter ? draft_model_us(e, 1, 0) : 0;
    int32_t passes = 1; // draft model passes run (the first: prompt chunks keep it running)
    for (int32_t i = 0; i < n; i++) {
        e->d_avail[i] = e->d_len[i];
        e->d_len[i] = 0;
    }
    int32_t total = 0;
    for (; total < max_total; total++) {
        int32_t best = -1;
        double best_gain = 0, best_cost = 1;
        for (int32_t i = 0; i < n; i++) {
            const sp_request *r = e->d_reqs[i];
            if (e->d_len[i] >= e->d_avail[i])
                continue;
            // Its own counts, after SPEC_PRIOR draft tokens' worth of the engine-wide estimate for
            // its kind of drafter: a short request starts from what others have seen, and the
            // lengths of requests alike do not scatter with the noise of a few drafts (the
            // expected tokens are concave in the length: scattered lengths accept fewer).
            const sp__draft_kind kind = sp__spec_kind(e, r);
            const double g = (e->spec_acc[kind] + 1) / (e->spec_acc[kind] + e->spec_rej[kind] + 2);
            const double a =
                (r->spec_acc + SPEC_PRIOR * g) / (r->spec_acc + r->spec_rej + SPEC_PRIOR);
            const double gain = pow(a, e->d_len[i] + 1);
            double cost = e->spec_cost_scale *
                              (c[2] + c[3] + c[4] * (double)(r->n_tokens + e->d_len[i] + 1)) +
                          1e-3;
            if (kind == SP__DRAFT_MODEL) { // and the first: the tokens the draft model lags by
                const int32_t lag = r->n_tokens - SP_MIN(r->draft_n, r->n_computed);
                cost += draft_tok_us * (e->d_len[i] ? 1 : lag) +
                        (e->d_len[i] + 1 > passes ? draft_pass_us : 0);
            }
            if (best < 0 || gain * best_cost > best_gain * cost)
                best = i, best_gain = gain, best_cost = cost;
        }
        if (best < 0 || best_gain * t <= tokens * best_cost)
            break;
        e->d_len[best]++;
        if (sp__spec_kind(e, e->d_reqs[best]) == SP__DRAFT_MODEL)
            passes = SP_MAX(passes, e->d_len[best]);
        tokens += best_gain;
        t += best_cost;
    }
    for (int32_t i = 0; i < n && total < max_total; i++) {
        const sp_request *r = e->d_reqs[i];
        const sp__draft_kind kind = sp__spec_kind(e, r);
        // A first probe only while the engine-wide estimate knows little: once it does, a new
        // request starts from it (probes at high load add a few rows to nearly every step,
        // and a few rows past a full batch cost more than their share).
        const bool informed = e->spec_acc[kind] + e->spec_rej[kind] >= SPEC_INFORMED;
        if (e->d_len[i] == 0 && e->d_avail[i] > 0 &&
            (r->spec_idle >= SPEC_PROBE_EVERY ||
             (!informed && r->spec_acc + r->spec_rej == 0))) {
            e->d_len[i] = 1;
            total++;
        }
    }
}

void sp__spec_fit_drafts(sp_engine *e, int32_t n, int32_t max_total) {
    if (e->o.spec_auto) {
        size_drafts(e, n, max_total);
    } else {
        for (int32_t i = 0; i < n; i++) {
            e->d_len[i] = SP_MIN(e->d_len[i], SP_MAX(max_total, 0));
            max_total -= e->d_len[i];
        }
    }
    for (int32_t i = 0; i < n; i++) { // the positions claimed for drafts left out
        sp_request *r = e->d_reqs[i];
        if (r->seq.n_tokens > r->n_tokens + e->d_len[i])
            sp_kv_seq_truncate(e->pool, &r->seq, r->n_tokens + e->d_len[i]);
    }
}

/* ---- what drafts cost ----------------------------------------------------------------------- */

double sp__spec_draft_us(const sp_engine *e, int32_t n_seq) {
    const double *c = e->steptime.coef;
    double us = 0;
    for (int32_t s = 0; s < n_seq; s++)
        for (int32_t j = 0; j < e->b_ndraft[s]; j++) // position n_computed + 1 + j
            us += c[2] + c[3] + c[4] * (double)(e->b_reqs[s]->n_computed + 2 + j);
    return us;
}

void sp__spec_observe(sp_engine *e, double predicted_us, double draft_us, double measured_us) {
    if (!(draft_us > 0) || !(measured_us > 0) || !(predicted_us > draft_us) ||
        e->steptime.n_observed < SPEC_COST_MIN_STEPS)
        return;
    // What the drafts cost: the step less what the model predicts for the rest of it is
    // scale * draft_us + noise; scale by least squares over the drafting steps (decayed, in
    // relative terms as the noise grows with the step, with a ridge toward 1, and each step's
    // miss beyond the price clipped to 3 typical misses of the model). A step whose drafts are
    // a small share of it tells little, and as it weighs little its noise cannot bias the
    // estimate (a ratio per step, clipped, did: at 64 streams, drafts of 1% of the step were
    // measured at 1.5x their price, and auto stopped drafting where they paid). Not before
    // the step-time model has fitted its first steps: its misses then are its own.
    const double x = draft_us / predicted_us, lim = 3 * sp_steptime_median_error(&e->steptime);
    const double miss = (measured_us - predicted_us) / predicted_us;
    const double y = x + SP_MIN(SP_MAX(miss, -lim), lim);
    e->spec_cost_sxx = SPEC_COST_DECAY * e->spec_cost_sxx + x * x;
    e->spec_cost_sxy = SPEC_COST_DECAY * e->spec_cost_sxy + x * y;
    e->spec_cost_scale = SP_MIN(
        SP_MAX((e->spec_cost_sxy + SPEC_COST_PRIOR) / (e->spec_cost_sxx + SPEC_COST_PRIOR), 0.05),
        3.0);
}

/* ---- after the check ------------------------------------------------------------------------ */

void sp__spec_learn(sp_engine *e, const sp_request *r) {
    if (e->ngrams)
        sp_spec_index_add(e->ngrams, r->params.cache_salt, r->tokens, r->n_tokens);
}

void sp__spec_checked(sp_engine *e, int32_t s, sp_request *r, int32_t acc) {
    const int32_t nd = e->b_ndraft[s];
    if (nd == 0)
        return;
    const sp__draft_kind kind = sp__spec_kind(e, r);
    r->spec_acc = 0.9 * r->spec_acc + acc;
    r->spec_rej = 0.9 * r->spec_rej + (acc < nd);
    e->spec_acc[kind] = 0.99 * e->spec_acc[kind] + acc;
    e->spec_rej[kind] = 0.99 * e->spec_rej[kind] + (acc < nd);
    // The draft model computed its drafts 1 .. k-1 as inputs: the accepted ones stay in its KV.
    if (e->drafter && e->b_dk[s] > 0)
        r->draft_n += SP_MIN(acc, e->b_dk[s] - 1);
    pthread_mutex_lock(&e->smu);
    for (int32_t j = 0; j < acc; j++)
        e->stats.spec_accepted_per_pos[j]++;
    pthread_mutex_unlock(&e->smu);
}

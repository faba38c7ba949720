/* Sampling under a grammar (engine_int.h): the sampler chooses as usual and the grammar checks
 * its choice by feeding the token's bytes to the request's matcher, a few microseconds; only
 * when the grammar rejects it is the full mask of allowed tokens computed (a walk of the token
 * trie) and the sampler asked again over the allowed tokens alone. The result is distributed
 * as sampling from the masked distribution directly: a token t the grammar allows comes from
 * the first draw with probability p(t), and from the second with probability
 * (1 - P(allowed)) p(t) / P(allowed), p(t) / P(allowed) in all. Greedy requests get the
 * argmax over the allowed tokens either way. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "sched/engine_int.h"

/* The trie of the vocabulary's token bytes, the mask cache and buffers (all or none of them). */
static sp_err prepare(sp_engine *e) {
    const int32_t V = e->m->hp.n_vocab, n_tok = (int32_t)sp_vocab_n_tokens(e->v);
    const size_t words = ((size_t)V + 31) / 32;
    const uint8_t **bytes = calloc((size_t)V, sizeof *bytes);
    uint32_t *len = calloc((size_t)V, sizeof *len);
    e->gmask = calloc(words, sizeof *e->gmask);
    e->eog_mask = calloc(words, sizeof *e->eog_mask);
    e->glogits = malloc((size_t)V * sizeof *e->glogits);
    sp_err err = SP_ERR_NOMEM;
    if (bytes && len && e->gmask && e->eog_mask && e->glogits) {
        for (int32_t i = 0; i < V && i < n_tok; i++) {
            // Control tokens have no bytes: the grammar never allows them.
            const sp_str piece = sp_tok_piece_ref(e->v, i, false);
            bytes[i] = (const uint8_t *)piece.ptr;
            len[i] = (uint32_t)piece.len;
            if (sp_vocab_is_eog(e->v, i))
                e->eog_mask[i >> 5] |= 1u << (i & 31);
        }
        err = sp_token_trie_create(bytes, len, V, &e->trie);
        if (!err)
            err = sp_mask_cache_create(e->trie, SP__MASK_CACHE_BYTES, &e->masks);
    }
    free(bytes);
    free(len);
    if (err)
        sp__constrain_free(e);
    return err;
}

sp_err sp__constrain_prepare(sp_engine *e) {
    pthread_mutex_lock(&e->gmu);
    const sp_err err = e->masks ? SP_OK : prepare(e);
    pthread_mutex_unlock(&e->gmu);
    return err;
}

/* e->glogits: the logits where the mask (and, when complete, end of generation) allows. */
static void apply_mask(sp_engine *e, const float *logits, bool complete) {
    const int32_t V = e->m->hp.n_vocab;
    for (int32_t w = 0; w < (V + 31) / 32; w++) {
        const uint32_t bits = e->gmask[w] | (complete ? e->eog_mask[w] : 0);
        const int32_t n = SP_MIN(32, V - 32 * w);
        for (int32_t k = 0; k < n; k++)
            e->glogits[32 * w + k] = (bits >> k) & 1 ? logits[32 * w + k] : -INFINITY;
    }
}

static bool is_eog(const sp_engine *e, int32_t tok) {
    return sp_vocab_is_eog(e->v, tok);
}

/* Takes tok into r's matcher if the grammar lets r emit it now (*ok); otherwise the matcher is
 * unchanged. End of generation is allowed where the output is complete (nothing to take). */
static sp_err take(sp_engine *e, sp_request *r, int32_t tok, bool *ok) {
    if (is_eog(e, tok)) {
        *ok = sp_matcher_complete(r->matcher);
        return SP_OK;
    }
    const sp_str piece = sp_tok_piece_ref(e->v, tok, false);
    *ok = false;
    return piece.len ? sp_matcher_accept(r->matcher, (const uint8_t *)piece.ptr, piece.len, ok)
                     : SP_OK;
}

sp_err sp__constrain_sample(sp_engine *e, sp_request *r, const float *logits, int32_t draft,
                            const float *q, int32_t *tok, const char **msg) {
    const int32_t first = draft >= 0 ? sp_sampler_verify_q(r->sampler, logits, draft, q)
                                     : sp_sampler_sample(r->sampler, logits);
    bool ok;
    sp_err err = take(e, r, first, &ok);
    if (err == SP_ERR_LIMIT)
        *msg = "the grammar is too ambiguous: too many parses in flight";
    if (err)
        return err;
    pthread_mutex_lock(&e->smu);
    e->stats.grammar_tokens++;
    e->stats.grammar_masks += !ok;
    pthread_mutex_unlock(&e->smu);
    if (ok) {
        *tok = first;
        return SP_OK;
    }
    if (!e->masks) { // (submission makes them: a request that came another way)
        *msg = "the grammar's token masks were not prepared";
        return SP_ERR_INVALID;
    }
    const int64_t t0 = sp_time_us();
    bool hit;
    int32_t count;
    if ((err = sp_mask_cache_get(e->masks, r->matcher, true, e->gmask, &count, &hit))) {
        if (err == SP_ERR_LIMIT)
            *msg = "the grammar is too ambiguous: too many parses in flight";
        return err;
    }
    const bool complete = sp_matcher_complete(r->matcher);
    if (count == 0 && !complete) {
        *msg = "no token of the vocabulary can continue the output under its grammar";
        return SP_ERR_INVALID;
    }
    bool any = count > 0;
    for (size_t w = 0; w < ((size_t)e->m->hp.n_vocab + 31) / 32 && !any; w++)
        any = e->eog_mask[w] != 0;
    if (!any) {
        *msg = "the output is complete under its grammar, and the vocabulary has no end token";
        return SP_ERR_INVALID;
    }
    apply_mask(e, logits, complete);
    *tok = sp_sampler_sample(r->sampler, e->glogits);
    if ((err = take(e, r, *tok, &ok)))
        return err;
    if (!ok) {
        // A cached mask allowed a token the grammar does not (two states' hashes collided):
        // the exact mask, and the choice again.
        if ((err = sp_mask_cache_get(e->masks, r->matcher, false, e->gmask, &count, &hit)))
            return err;
        apply_mask(e, logits, complete);
        *tok = sp_sampler_sample(r->sampler, e->glogits);
        if ((err = take(e, r, *tok, &ok)))
            return err;
    }
    pthread_mutex_lock(&e->smu);
    e->stats.grammar_mask_hits += hit;
    e->stats.grammar_mask_us += (uint64_t)(sp_time_us() - t0);
    pthread_mutex_unlock(&e->smu);
    return SP_OK;
}

bool sp__constrain_done(const sp_request *r) {
    return sp_matcher_complete(r->matcher) && !sp_matcher_can_continue(r->matcher);
}

void sp__constrain_free(sp_engine *e) {
    sp_mask_cache_destroy(e->masks);
    sp_token_trie_destroy(e->trie);
    free(e->gmask);
    free(e->eog_mask);
    free(e->glogits);
    e->masks = NULL;
    e->trie = NULL;
    e->gmask = e->eog_mask = NULL;
    e->glogits = NULL;
}

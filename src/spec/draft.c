/* Drafts from a draft model (draft.h): a catch-up pass, then one pass per draft position. */
#include "spec/draft.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "model/forward.h"

struct sp_draft {
    const sp_model *m;
    sp_forward *fw;
    sp_kvbuf kv;
    int32_t max_tokens, max_seqs, max_k, max_ctx;
    // The forward pass being built.
    int32_t n_tok, n_seq, n_out;
    int32_t cur;            // the call's sequence whose tokens the last batch sequence holds
    int32_t *tok;           // (max_tokens) token ids
    int32_t *pos;           // (max_tokens) positions
    int32_t *seq;           // (max_tokens) batch sequence of each token
    int32_t *rows;          // (max_seqs) rows whose logits are wanted
    int32_t *row_seq;       // (max_seqs) the drafting sequence (index into the call) of each
    const int32_t **tables; // (max_seqs) block tables
    int32_t *n_blocks;      // (max_seqs) their lengths
    float *logits;          // (max_seqs, n_vocab)
    sp_draft_timing last;
};

size_t sp_draft_block_bytes(const sp_model *m, sp_dtype kv_type, int32_t block_size) {
    return sp_kvbuf_block_bytes(&m->hp, kv_type, block_size);
}

sp_err sp_draft_create(const sp_model *m, sp_dtype kv_type, int32_t block_size, int32_t n_blocks,
                       int32_t max_tokens, int32_t max_seqs, int32_t max_k, int32_t max_ctx,
                       sp_draft **out) {
    if (!m || block_size <= 0 || n_blocks <= 0 || max_tokens <= 0 || max_seqs <= 0 || max_k <= 0 ||
        max_ctx <= 0)
        return SP_ERR_INVALID;
    sp_draft *d = calloc(1, sizeof *d);
    if (!d)
        return SP_ERR_NOMEM;
    d->m = m;
    d->max_tokens = SP_MAX(max_tokens, max_seqs); // a draft pass holds every sequence
    d->max_seqs = max_seqs;
    d->max_k = max_k;
    d->max_ctx = max_ctx;
    const size_t T = (size_t)d->max_tokens, S = (size_t)max_seqs;
    sp_err err = sp_kvbuf_init(&d->kv, &m->hp, kv_type, block_size, n_blocks);
    if (err) {
        free(d);
        return err;
    }
    if ((err = sp_forward_create(m, d->max_tokens, max_ctx, &d->fw))) {
        sp_draft_destroy(d);
        return err;
    }
    d->tok = malloc(T * sizeof *d->tok);
    d->pos = malloc(T * sizeof *d->pos);
    d->seq = malloc(T * sizeof *d->seq);
    d->rows = malloc(S * sizeof *d->rows);
    d->row_seq = malloc(S * sizeof *d->row_seq);
    d->tables = malloc(S * sizeof *d->tables);
    d->n_blocks = malloc(S * sizeof *d->n_blocks);
    d->logits = malloc(S * (size_t)m->hp.n_vocab * sizeof *d->logits);
    if (!d->tok || !d->pos || !d->seq || !d->rows || !d->row_seq || !d->tables || !d->n_blocks ||
        !d->logits) {
        sp_draft_destroy(d);
        return SP_ERR_NOMEM;
    }
    *out = d;
    return SP_OK;
}

void sp_draft_destroy(sp_draft *d) {
    if (!d)
        return;
    sp_forward_destroy(d->fw);
    sp_kvbuf_deinit(&d->kv);
    free(d->tok);
    free(d->pos);
    free(d->seq);
    free(d->rows);
    free(d->row_seq);
    free(d->tables);
    free(d->n_blocks);
    free(d->logits);
    free(d);
}

sp_err sp_draft_set_pool(sp_draft *d, sp_threadpool *pool) {
    return sp_forward_set_pool(d->fw, pool);
}

sp_kvbuf *sp_draft_kv(sp_draft *d) {
    return &d->kv;
}

sp_draft_timing sp_draft_last_timing(const sp_draft *d) {
    return d->last;
}

/* The first of the largest logits. */
static int32_t argmax(const float *l, size_t n) {
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (l[i] > l[best])
            best = i;
    return (int32_t)best;
}

/* Evaluates the pass being built and draws draft j of each sequence with an output row. */
static sp_err flush(sp_draft *d, sp_draft_seq *seqs, int32_t j) {
    if (d->n_tok == 0)
        return SP_OK;
    const sp_batch b = {.n_tokens = d->n_tok,
                        .token = d->tok,
                        .pos = d->pos,
                        .seq = d->seq,
                        .n_seqs = d->n_seq,
                        .block_tables = d->tables,
                        .n_seq_blocks = d->n_blocks,
                        .n_out = d->n_out,
                        .out_rows = d->rows};
    sp_err err = sp_forward_eval(d->fw, &d->kv, &b, d->logits);
    d->last.n_passes++;
    d->last.n_tokens += d->n_tok;
    const size_t V = (size_t)d->m->hp.n_vocab;
    for (int32_t r = 0; r < d->n_out && !err; r++) {
        sp_draft_seq *s = &seqs[d->row_seq[r]];
        const float *l = d->logits + (size_t)r * V;
        s->out[j] = s->q ? sp_sampler_propose(s->sampler, l, s->q + (size_t)j * V) : argmax(l, V);
    }
    d->n_tok = d->n_seq = d->n_out = 0;
    return err;
}

/* Adds token tok of s at position p to the pass being built (a new batch sequence unless the
 * last token added was s's), with an output row when want_out. Flushes a full pass first. */
static sp_err add(sp_draft *d, sp_draft_seq *seqs, int32_t i, int32_t tok, int32_t p,
                  bool want_out) {
    sp_err err = SP_OK;
    if (d->n_tok == d->max_tokens && (err = flush(d, seqs, 0)))
        return err;
    if (d->n_seq == 0 || d->cur != i) {
        d->tables[d->n_seq] = seqs[i].blocks;
        d->n_blocks[d->n_seq] = seqs[i].n_blocks;
        d->n_seq++;
        d->cur = i;
    }
    d->tok[d->n_tok] = tok;
    d->pos[d->n_tok] = p;
    d->seq[d->n_tok] = d->n_seq - 1;
    if (want_out) {
        d->rows[d->n_out] = d->n_tok;
        d->row_seq[d->n_out++] = i;
    }
    d->n_tok++;
    return SP_OK;
}

sp_err sp_draft_run(sp_draft *d, sp_draft_seq *seqs, int32_t n) {
    const int64_t t0 = sp_time_us();
    d->last = (sp_draft_timing){0};
    if (n < 0 || n > d->max_seqs)
        return SP_ERR_RANGE;
    const int32_t bs = d->kv.block_size;
    int32_t max_k = 0;
    for (int32_t i = 0; i < n; i++) {
        const sp_draft_seq *s = &seqs[i];
        const int64_t end = (int64_t)s->to + SP_MAX(s->k - 1, 0); // positions written
        if (s->k < 0 || s->k > d->max_k || (s->k > 0 && s->to < 1) || s->from < 0 ||
            s->from > s->to || end > d->max_ctx || end > (int64_t)s->n_blocks * bs ||
            (s->k && !s->out))
            return SP_ERR_RANGE;
        max_k = SP_MAX(max_k, s->k);
    }
    sp_err err = SP_OK;
    d->n_tok = d->n_seq = d->n_out = 0;
    // Catch-up: every sequence's missing positions; a drafting sequence's last token always
    // (recomputed if its KV is there already), for the logits of its first draft.
    for (int32_t i = 0; i < n && !err; i++) {
        sp_draft_seq *s = &seqs[i];
        const int32_t from = s->k > 0 ? SP_MIN(s->from, s->to - 1) : s->from;
        for (int32_t p = from; p < s->to && !err; p++)
            err = add(d, seqs, i, s->tokens[p], p, s->k > 0 && p == s->to - 1);
    }
    if (!err)
        err = flush(d, seqs, 0);
    // Draft j + 1 of every sequence that wants it, from draft j.
    for (int32_t j = 1; j < max_k && !err; j++) {
        for (int32_t i = 0; i < n && !err; i++)
            if (seqs[i].k > j)
                err = add(d, seqs, i, seqs[i].out[j - 1], seqs[i].to + j - 1, true);
        if (!err)
            err = flush(d, seqs, j);
    }
    d->n_tok = d->n_seq = d->n_out = 0;
    d->last.total_us = (double)(sp_time_us() - t0);
    return err;
}

#include "model/forward.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "model/linear.h"
#include "model/ops.h"
#include "tensor/kernels.h"
#include "tensor/quant.h"

enum { CACHE_LINE = 64 };

/* n floats starting on a cache line, so that rows which are whole cache lines apart (outputs
 * in groups of 16, a KV head group's attention outputs) never share a line between threads. */
static float *alloc_f32(size_t n) {
    const size_t bytes = (n * sizeof(float) + CACHE_LINE - 1) / CACHE_LINE * CACHE_LINE;
    return aligned_alloc(CACHE_LINE, bytes ? bytes : CACHE_LINE);
}

/* Query rows (token x head of a KV group) that attention takes together, sharing each key and
 * value load: a group of 8 or more heads alone, smaller groups with the next tokens of the same
 * sequence (a prompt's), up to 8 rows. */
enum { TILE_ROWS = 8 };

static int32_t tile_tokens(const sp_hparams *hp) {
    const int32_t group = hp->n_head / hp->n_head_kv;
    return group >= TILE_ROWS ? 1 : TILE_ROWS / group;
}

/* Attention scratch of one thread. */
typedef struct att_scratch {
    float *scores; // (tile rows, max_ctx) the attention weights of a tile's query rows
    float *q;      // (tile rows, head_dim) the tile's queries
    float *out;    // (tile rows, head_dim) its outputs
} att_scratch;

static void scratch_free(att_scratch *ts, int n) {
    for (int i = 0; ts && i < n; i++) {
        free(ts[i].scores);
        free(ts[i].q);
        free(ts[i].out);
    }
    free(ts);
}

static att_scratch *scratch_alloc(const sp_hparams *hp, int32_t max_ctx, int n) {
    const size_t rows = (size_t)(tile_tokens(hp) * (hp->n_head / hp->n_head_kv));
    att_scratch *ts = calloc((size_t)n, sizeof *ts);
    if (!ts)
        return NULL;
    for (int i = 0; i < n; i++) {
        ts[i].scores = alloc_f32(rows * (size_t)max_ctx);
        ts[i].q = alloc_f32(rows * (size_t)hp->head_dim);
        ts[i].out = alloc_f32(rows * (size_t)hp->head_dim);
        if (!ts[i].scores || !ts[i].q || !ts[i].out) {
            scratch_free(ts, n);
            return NULL;
        }
    }
    return ts;
}

struct sp_forward {
    const sp_model *m;
    int32_t max_tokens;
    int32_t max_ctx;
    float *x;            // (max_tokens, n_embd) residual stream
    float *xn;           // (max_tokens, n_embd) normalized input of a sub-layer
    float *q;            // (max_tokens, n_head * head_dim)
    float *k;            // (max_tokens, n_head_kv * head_dim)
    float *v;            // (max_tokens, n_head_kv * head_dim)
    float *att;          // (max_tokens, n_head * head_dim) attention output
    float *gate;         // (max_tokens, n_ff)
    float *up;           // (max_tokens, n_ff)
    float *rope;         // (max_tokens, n_rot) cos/sin pairs per rotated pair
    sp_threadpool *pool; // borrowed; NULL = single thread
    int n_threads;
    att_scratch *ts; // (n_threads) attention scratch of each thread
    float *out_x;    // (max_tokens, n_embd) final-normalized rows whose logits are wanted
    int32_t *tiles;  // (max_tokens + 1) first rows of attention's token tiles, then the end
    void *scratch;   // activations converted for the dot products
};

sp_err sp_forward_create(const sp_model *m, int32_t max_tokens, int32_t max_ctx, sp_forward **out) {
    if (max_tokens <= 0 || max_ctx <= 0)
        return SP_ERR_INVALID;
    const sp_hparams *hp = &m->hp;
    sp_forward *f = calloc(1, sizeof *f);
    if (!f)
        return SP_ERR_NOMEM;
    f->m = m;
    f->max_tokens = max_tokens;
    f->max_ctx = max_ctx;
    size_t T = (size_t)max_tokens;
    size_t nq = (size_t)hp->n_head * (size_t)hp->head_dim;
    size_t nkv = (size_t)hp->n_head_kv * (size_t)hp->head_dim;
    size_t widest = SP_MAX((size_t)hp->n_ff, SP_MAX(nq, (size_t)hp->n_embd));
    f->x = alloc_f32(T * (size_t)hp->n_embd);
    f->xn = alloc_f32(T * (size_t)hp->n_embd);
    f->q = alloc_f32(T * nq);
    f->k = alloc_f32(T * nkv);
    f->v = alloc_f32(T * nkv);
    f->att = alloc_f32(T * nq);
    f->gate = alloc_f32(T * (size_t)hp->n_ff);
    f->up = alloc_f32(T * (size_t)hp->n_ff);
    f->rope = alloc_f32(T * (size_t)hp->n_rot);
    f->n_threads = 1;
    f->ts = scratch_alloc(hp, max_ctx, 1);
    f->out_x = alloc_f32(T * (size_t)hp->n_embd);
    f->tiles = malloc((T + 1) * sizeof *f->tiles);
    f->scratch = malloc(sp__linear_scratch_bytes((int64_t)widest, max_tokens));
    if (!f->x || !f->xn || !f->q || !f->k || !f->v || !f->att || !f->gate || !f->up || !f->rope ||
        !f->ts || !f->out_x || !f->tiles || !f->scratch) {
        sp_forward_destroy(f);
        return SP_ERR_NOMEM;
    }
    *out = f;
    return SP_OK;
}

void sp_forward_destroy(sp_forward *f) {
    if (!f)
        return;
    free(f->x);
    free(f->xn);
    free(f->q);
    free(f->k);
    free(f->v);
    free(f->att);
    free(f->gate);
    free(f->up);
    free(f->rope);
    scratch_free(f->ts, f->n_threads);
    free(f->out_x);
    free(f->tiles);
    free(f->scratch);
    free(f);
}

static sp_err check_batch(const sp_forward *f, const sp_kvbuf *kv, const sp_batch *b) {
    const sp_hparams *hp = &f->m->hp;
    if (b->n_tokens <= 0 || b->n_tokens > f->max_tokens || b->n_out < 0 || b->n_out > b->n_tokens ||
        b->n_seqs <= 0)
        return SP_ERR_RANGE;
    if (kv->n_layer != hp->n_layer || kv->n_head_kv != hp->n_head_kv ||
        kv->head_dim != hp->head_dim)
        return SP_ERR_INVALID;
    for (int32_t t = 0; t < b->n_tokens; t++) {
        int32_t s = b->seq[t], p = b->pos[t];
        if (b->token[t] < 0 || b->token[t] >= hp->n_vocab || s < 0 || s >= b->n_seqs || p < 0 ||
            p >= f->max_ctx)
            return SP_ERR_RANGE;
        // Every block this token reads (positions 0..p) must exist.
        int32_t nb = p / kv->block_size + 1;
        if (nb > b->n_seq_blocks[s])
            return SP_ERR_RANGE;
    }
    for (int32_t s = 0; s < b->n_seqs; s++)
        for (int32_t i = 0; i < b->n_seq_blocks[s]; i++)
            if (b->block_tables[s][i] < 0 || b->block_tables[s][i] >= kv->n_blocks)
                return SP_ERR_RANGE;
    for (int32_t i = 0; i < b->n_out; i++)
        if (b->out_rows[i] < 0 || b->out_rows[i] >= b->n_tokens)
            return SP_ERR_RANGE;
    return SP_OK;
}

/* Stores the key and value of batch token t into its cache slot. */
static void store_kv(sp_forward *f, sp_kvbuf *kv, const sp_batch *b, int32_t il, int32_t t) {
    const sp_hparams *hp = &f->m->hp;
    const int32_t D = hp->head_dim, nkv = hp->n_head_kv * D;
    const int32_t p = b->pos[t];
    const int32_t blk = b->block_tables[b->seq[t]][p / kv->block_size];
    const int32_t slot = p % kv->block_size;
    const sp_kernels *kn = sp_kernels_get();
    for (int32_t h = 0; h < hp->n_head_kv; h++) {
        // Keys transposed within the block (column `slot`), values as rows.
        const float *k = f->k + (size_t)t * nkv + (size_t)h * D;
        const float *v = f->v + (size_t)t * nkv + (size_t)h * D;
        void *kh = sp_kvbuf_head(kv, blk, il, 0, h), *vh = sp_kvbuf_head(kv, blk, il, 1, h);
        const size_t bs = (size_t)kv->block_size;
        if (kv->type == SP_DTYPE_F32) {
            for (int32_t d = 0; d < D; d++)
                ((float *)kh)[(size_t)d * bs + (size_t)slot] = k[d];
            memcpy((float *)vh + (size_t)slot * D, v, (size_t)D * sizeof(float));
        } else {
            sp_f16 kr[1024]; // head_dim <= 1024 (load.c)
            kn->quantize_act(SP_DTYPE_F16, k, kr, D);
            for (int32_t d = 0; d < D; d++)
                ((sp_f16 *)kh)[(size_t)d * bs + (size_t)slot] = kr[d];
            kn->quantize_act(SP_DTYPE_F16, v, (sp_f16 *)vh + (size_t)slot * D, D);
        }
    }
}

/* Attention of every batch token over positions 0..pos of its sequence, block by block through
 * the sequence's table in position order (kernels.h: scores, softmax, values). The query heads
 * that share a KV head, for up to 8 / group consecutive tokens of a prompt (a tile), are
 * processed together, so each cached key and value is loaded and converted once per tile (keys
 * for the scores, then values).
 * With an F16 cache the queries and the softmax weights are rounded to F16 as llama.cpp does
 * before its two products; keys and values are read as F16; sums are in F32 (the softmax
 * normalizer in double). The softmax is two-pass, not online: the weights must be normalized
 * before they are rounded to F16, and with online softmax's unrounded weights the Q8_0 model's
 * greedy output leaves llama.cpp's at the 6th token. A token's output depends only on its query
 * and its sequence's cache. */
typedef struct att_job {
    sp_forward *f;
    const sp_kvbuf *kv;
    const sp_batch *b;
    int32_t il;
    const int32_t *rows;  // output row i is batch token rows[i]; NULL: token i
    int32_t n_tiles;      // tiles of rows: f->tiles[i] .. f->tiles[i + 1]
    _Atomic int64_t next; // the next work item not yet taken
} att_job;

static void attention_worker(void *ctx, int ith, int nth) {
    (void)nth;
    att_job *jb = ctx;
    sp_forward *f = jb->f;
    const sp_kvbuf *kv = jb->kv;
    const sp_batch *b = jb->b;
    const int32_t il = jb->il;
    const sp_hparams *hp = &f->m->hp;
    const int32_t D = hp->head_dim, nq = hp->n_head * D, BS = kv->block_size;
    const int32_t group = hp->n_head / hp->n_head_kv;
    const float scale = 1.0f / sqrtf((float)D);
    const bool f16 = kv->type == SP_DTYPE_F16;
    const sp_kernels *kn = sp_kernels_get();
    att_scratch *ws = &f->ts[ith];
    const int64_t ld_s = f->max_ctx;
    // Work items are (tile, KV head) pairs, each taken by whichever thread is free, so that the
    // long contexts of a prompt's last tokens spread over all threads; which thread takes which
    // never changes a value.
    const int64_t n_items = (int64_t)jb->n_tiles * hp->n_head_kv;
    for (;;) {
        const int64_t item = atomic_fetch_add_explicit(&jb->next, 1, memory_order_relaxed);
        if (item >= n_items)
            break;
        const int32_t i = (int32_t)(item / hp->n_head_kv), g = (int32_t)(item % hp->n_head_kv);
        const int32_t r0 = f->tiles[i], nt = f->tiles[i + 1] - r0, R = nt * group;
        // The tile's tokens are consecutive positions of one sequence: token k reads positions
        // 0 .. pos0 + k. Its query rows k * group .. (the group's heads are adjacent in the q
        // row, already rounded to F16 for an F16 cache: STEP_QKV).
        const int32_t t0 = jb->rows ? jb->rows[r0] : r0;
        const int32_t *table = b->block_tables[b->seq[t0]];
        const int32_t n_first = b->pos[t0] + 1, n_last = n_first + nt - 1;
        // A lone token's rows are already adjacent in q and att; a tile's are gathered.
        const size_t span = (size_t)group * (size_t)D; // a token's rows of the group
        const float *qt = f->q + (size_t)t0 * nq + (size_t)g * span;
        float *out = f->att + (size_t)r0 * nq + (size_t)g * span;
        if (nt > 1) {
            for (int32_t k = 0; k < nt; k++) {
                const int32_t t = jb->rows ? jb->rows[r0 + k] : r0 + k;
                memcpy(ws->q + (size_t)k * span, f->q + (size_t)t * nq + (size_t)g * span,
                       span * sizeof(float));
            }
            qt = ws->q;
            out = ws->out;
        }
        // Scores of every row up to the last token's positions (a row's softmax reads only its
        // own); weights of the positions all rows read, then each later token's own.
        for (int32_t j0 = 0; j0 < n_last; j0 += BS)
            kn->attn_scores(qt, R, D, scale, sp_kvbuf_head(kv, table[j0 / BS], il, 0, g), BS,
                            SP_MIN(BS, n_last - j0), f16, ws->scores + j0, ld_s);
        for (int32_t row = 0; row < R; row++)
            kn->attn_softmax(ws->scores + row * ld_s, n_first + row / group, f16);
        memset(out, 0, (size_t)R * (size_t)D * sizeof(float));
        for (int32_t j0 = 0; j0 < n_first; j0 += BS)
            kn->attn_values(ws->scores + j0, ld_s, R, D,
                            sp_kvbuf_head(kv, table[j0 / BS], il, 1, g), SP_MIN(BS, n_first - j0),
                            f16, out);
        for (int32_t k = 1; k < nt; k++)
            for (int32_t j = n_first; j < n_first + k; j++) // position j, for tokens k and after
                kn->attn_values(ws->scores + (size_t)k * group * ld_s + j, ld_s, group, D,
                                (const sp_f16 *)sp_kvbuf_head(kv, table[j / BS], il, 1, g) +
                                    (size_t)(j % BS) * (size_t)D * (f16 ? 1 : 2),
                                1, f16, out + (size_t)k * span);
        for (int32_t k = 0; k < nt && nt > 1; k++)
            memcpy(f->att + (size_t)(r0 + k) * nq + (size_t)g * span, out + (size_t)k * span,
                   span * sizeof(float));
    }
}

/* Attention of the batch tokens rows[0..n) (NULL: tokens 0..n), output row i for rows[i]. Rows
 * are taken in tiles of up to tile_tokens consecutive positions of one sequence. */
static void attention(sp_forward *f, const sp_kvbuf *kv, const sp_batch *b, int32_t il,
                      const int32_t *rows, int32_t n) {
    const int32_t most = tile_tokens(&f->m->hp);
    int32_t n_tiles = 0;
    for (int32_t r = 0; r < n;) {
        f->tiles[n_tiles++] = r;
        const int32_t t0 = rows ? rows[r] : r;
        int32_t k = 1;
        for (; k < most && r + k < n; k++) {
            const int32_t t = rows ? rows[r + k] : r + k;
            if (b->seq[t] != b->seq[t0] || b->pos[t] != b->pos[t0] + k)
                break;
        }
        r += k;
    }
    f->tiles[n_tiles] = n;
    att_job jb = {.f = f, .kv = kv, .b = b, .il = il, .rows = rows, .n_tiles = n_tiles};
    atomic_init(&jb.next, 0);
    if (f->n_threads > 1)
        sp_threadpool_run(f->pool, attention_worker, &jb);
    else
        attention_worker(&jb, 0, 1);
}

sp_err sp_forward_set_pool(sp_forward *f, sp_threadpool *pool) {
    int n = pool ? sp_threadpool_n_threads(pool) : 1;
    att_scratch *ts = scratch_alloc(&f->m->hp, f->max_ctx, n);
    if (!ts)
        return SP_ERR_NOMEM;
    scratch_free(f->ts, f->n_threads);
    f->ts = ts;
    f->n_threads = n;
    f->pool = pool;
    return SP_OK;
}

/* The per-token steps between the matrix products. Each touches only its token's rows (and
 * cache slots), so the tokens of a batch are split over the threads (for_tokens); a token's
 * values never depend on the split. */
typedef enum token_step {
    STEP_ATTN_NORM, // xn = attn_norm(x)
    STEP_QKV,       // biases, q/k norms, rotary positions; key and value into the cache
    STEP_FFN_NORM,  // x += xn (the attention output); xn = ffn_norm(x)
    STEP_SWIGLU,    // gate = silu(gate) * up
    STEP_RESIDUAL,  // x += xn (the feed-forward output)
    STEP_RES_NORM   // the same, then xn = the next layer's attn_norm(x)
} token_step;

typedef struct token_job {
    sp_forward *f;
    sp_kvbuf *kv;
    const sp_batch *b;
    int32_t il;
    token_step step;
    int32_t n; // rows 0..n
} token_job;

static void token_run(const token_job *j, int32_t t) {
    sp_forward *f = j->f;
    const sp_hparams *hp = &f->m->hp;
    const sp_layer *L = &f->m->layers[j->il];
    const int32_t E = hp->n_embd, D = hp->head_dim, F = hp->n_ff;
    const int32_t nq = hp->n_head * D, nkv = hp->n_head_kv * D;
    float *x = f->x + (size_t)t * E, *xn = f->xn + (size_t)t * E;
    switch (j->step) {
    case STEP_ATTN_NORM:
        sp__rms_norm(xn, x, L->attn_norm.data, E, hp->norm_eps);
        break;
    case STEP_QKV: {
        float *q = f->q + (size_t)t * nq, *k = f->k + (size_t)t * nkv;
        if (L->bq.data) {
            sp__add_inplace(q, L->bq.data, nq);
            sp__add_inplace(k, L->bk.data, nkv);
            sp__add_inplace(f->v + (size_t)t * nkv, L->bv.data, nkv);
        }
        for (int32_t h = 0; h < hp->n_head; h++) {
            if (L->q_norm.data)
                sp__rms_norm(q + h * D, q + h * D, L->q_norm.data, D, hp->norm_eps);
            sp__rope_apply(hp, f->rope + (size_t)t * hp->n_rot, q + h * D);
        }
        // With an F16 cache, attention takes the queries rounded to F16.
        if (j->kv->type == SP_DTYPE_F16)
            sp_kernels_get()->round_f16(q, nq);
        for (int32_t h = 0; h < hp->n_head_kv; h++) {
            if (L->k_norm.data)
                sp__rms_norm(k + h * D, k + h * D, L->k_norm.data, D, hp->norm_eps);
            sp__rope_apply(hp, f->rope + (size_t)t * hp->n_rot, k + h * D);
        }
        store_kv(f, j->kv, j->b, j->il, t);
        break;
    }
    case STEP_FFN_NORM:
        sp__add_inplace(x, xn, E);
        sp__rms_norm(xn, x, L->ffn_norm.data, E, hp->norm_eps);
        break;
    case STEP_SWIGLU:
        sp_kernels_get()->swiglu(f->gate + (size_t)t * F, f->up + (size_t)t * F, F);
        break;
    case STEP_RESIDUAL:
        sp__add_inplace(x, xn, E);
        break;
    case STEP_RES_NORM:
        sp__add_inplace(x, xn, E);
        sp__rms_norm(xn, x, f->m->layers[j->il + 1].attn_norm.data, E, hp->norm_eps);
        break;
    }
}

static void token_worker(void *ctx, int ith, int nth) {
    const token_job *j = ctx;
    int64_t t0, t1;
    sp_split_range(j->n, 1, ith, nth, &t0, &t1);
    for (int64_t t = t0; t < t1; t++)
        token_run(j, (int32_t)t);
}

/* The step on rows 0..n (batch tokens 0..n, or the last layer's selected rows). */
static void for_tokens(sp_forward *f, sp_kvbuf *kv, const sp_batch *b, int32_t il,
                       token_step step, int32_t n) {
    token_job j = {.f = f, .kv = kv, .b = b, .il = il, .step = step, .n = n};
    if (f->n_threads > 1 && n > 1)
        sp_threadpool_run(f->pool, token_worker, &j);
    else
        token_worker(&j, 0, 1);
}

sp_err sp_forward_eval(sp_forward *f, sp_kvbuf *kv, const sp_batch *b, float *logits) {
    sp_err err = check_batch(f, kv, b);
    if (err)
        return err;
    const sp_model *m = f->m;
    const sp_hparams *hp = &m->hp;
    const int32_t T = b->n_tokens, E = hp->n_embd;

    for (int32_t t = 0; t < T; t++)
        sp__weight_row(&m->tok_embd, b->token[t], f->x + (size_t)t * E);
    for (int32_t t = 0; t < T; t++)
        sp__rope_cache(hp, m->rope_freqs, b->pos[t], f->rope + (size_t)t * hp->n_rot);

    for_tokens(f, kv, b, 0, STEP_ATTN_NORM, T);
    for (int32_t il = 0; il < hp->n_layer; il++) {
        const sp_layer *L = &m->layers[il];
        const sp_weight *qkv[] = {&L->wq, &L->wk, &L->wv};
        float *qkv_out[] = {f->q, f->k, f->v};
        sp__linear_n(3, qkv, f->xn, T, qkv_out, f->scratch, f->pool);
        for_tokens(f, kv, b, il, STEP_QKV, T);
        // Past its keys and values, the last layer only feeds the logits: it goes on with the
        // rows whose logits are wanted, gathered to the front (row i = batch token out_rows[i];
        // each row's values are the same as in the whole batch).
        const bool last = il + 1 == hp->n_layer;
        const int32_t n = last ? b->n_out : T;
        if (n == 0)
            break;
        attention(f, kv, b, il, last ? b->out_rows : NULL, n);
        if (last) {
            for (int32_t i = 0; i < n; i++)
                memcpy(f->xn + (size_t)i * E, f->x + (size_t)b->out_rows[i] * E,
                       (size_t)E * sizeof(float));
            memcpy(f->x, f->xn, (size_t)n * (size_t)E * sizeof(float));
        }
        sp__linear(&L->wo, f->att, n, f->xn, f->scratch, f->pool);
        for_tokens(f, kv, b, il, STEP_FFN_NORM, n);
        const sp_weight *gate_up[] = {&L->w_gate, &L->w_up};
        float *gate_up_out[] = {f->gate, f->up};
        sp__linear_n(2, gate_up, f->xn, n, gate_up_out, f->scratch, f->pool);
        for_tokens(f, kv, b, il, STEP_SWIGLU, n);
        sp__linear(&L->w_down, f->gate, n, f->xn, f->scratch, f->pool);
        for_tokens(f, kv, b, il, last ? STEP_RESIDUAL : STEP_RES_NORM, n);
    }

    // The last layer left output i in row i.
    for (int32_t i = 0; i < b->n_out; i++)
        sp__rms_norm(f->out_x + (size_t)i * E, f->x + (size_t)i * E, m->output_norm.data, E,
                     hp->norm_eps);
    if (b->n_out > 0)
        sp__linear(&m->output, f->out_x, b->n_out, logits, f->scratch, f->pool);
    return SP_OK;
}

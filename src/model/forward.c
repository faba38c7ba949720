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

/* Tiles of sequences that share the first blocks of their tables (a common prompt prefix
 * cached once) are taken together, so each shared key and value is loaded once for all their
 * query rows: up to GROUP_ROWS rows, their scores within GROUP_FLOATS per thread. */
enum { GROUP_ROWS = 512, GROUP_FLOATS = 1 << 20 };

/* Attention scratch of one thread. */
typedef struct att_scratch {
    float *scores; // (tile rows, max_ctx), at least GROUP_FLOATS: the attention weights
    float *q;      // (GROUP_ROWS, head_dim) the queries of a tile or a group of tiles
    float *out;    // (GROUP_ROWS, head_dim) their outputs
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
    const size_t q_rows = SP_MAX(rows, (size_t)GROUP_ROWS);
    att_scratch *ts = calloc((size_t)n, sizeof *ts);
    if (!ts)
        return NULL;
    for (int i = 0; i < n; i++) {
        ts[i].scores = alloc_f32(SP_MAX(rows * (size_t)max_ctx, (size_t)GROUP_FLOATS));
        ts[i].q = alloc_f32(q_rows * (size_t)hp->head_dim);
        ts[i].out = alloc_f32(q_rows * (size_t)hp->head_dim);
        if (!ts[i].scores || !ts[i].q || !ts[i].out) {
            scratch_free(ts, n);
            return NULL;
        }
    }
    return ts;
}

/* Tiles taken together by attention: group_tile[first .. first + n), whose sequences' tables
 * begin with the same `shared` positions (whole blocks) of the same physical blocks. */
typedef struct att_group {
    int32_t first, n;
    int32_t shared; // positions; 0 for a lone tile
    int32_t ld;     // the stride of the group's score rows (its longest context)
} att_group;

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
    // Attention's groups of tiles (att_group), and a table of the groups by first block id.
    att_group *groups;   // (max_tokens)
    att_group *keys;     // (max_tokens) the tiles of each first block, while grouping
    int32_t *group_tile; // (max_tokens) the tiles in group order: groups[i].first ..
    int32_t *by_block;   // (2 * max_tokens) open addressing: a group's index + 1, 0 empty
    int32_t *tile_group; // (max_tokens) each tile's group
    void *scratch;       // activations converted for the dot products
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
    f->groups = malloc(T * sizeof *f->groups);
    f->keys = malloc(T * sizeof *f->keys);
    f->group_tile = malloc(T * sizeof *f->group_tile);
    f->by_block = malloc(2 * T * sizeof *f->by_block);
    f->tile_group = malloc(T * sizeof *f->tile_group);
    f->scratch = malloc(sp__linear_scratch_bytes((int64_t)widest, max_tokens));
    if (!f->x || !f->xn || !f->q || !f->k || !f->v || !f->att || !f->gate || !f->up || !f->rope ||
        !f->ts || !f->out_x || !f->tiles || !f->groups || !f->keys || !f->group_tile ||
        !f->by_block || !f->tile_group || !f->scratch) {
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
    free(f->groups);
    free(f->keys);
    free(f->group_tile);
    free(f->by_block);
    free(f->tile_group);
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
    int32_t n_groups;     // groups of tiles (f->groups); tiles: f->tiles[i] .. f->tiles[i + 1]
    _Atomic int64_t next; // the next work item not yet taken
} att_job;

/* The constants of a layer's attention. */
typedef struct att_dims {
    int32_t D, nq, BS, group;
    size_t span; // a token's query rows of one KV group
    float scale;
    bool f16;
} att_dims;

static att_dims dims_of(const sp_forward *f, const sp_kvbuf *kv) {
    const sp_hparams *hp = &f->m->hp;
    const int32_t group = hp->n_head / hp->n_head_kv;
    return (att_dims){.D = hp->head_dim,
                      .nq = hp->n_head * hp->head_dim,
                      .BS = kv->block_size,
                      .group = group,
                      .span = (size_t)group * (size_t)hp->head_dim,
                      .scale = 1.0f / sqrtf((float)hp->head_dim),
                      .f16 = kv->type == SP_DTYPE_F16};
}

static int32_t tile_token(const att_job *jb, int32_t r) {
    return jb->rows ? jb->rows[r] : r;
}

/* One tile's attention over KV head g from position `from` on (the positions before it done:
 * their scores in s, their values summed in out): q and out are its rows (token k's at
 * k * span), s its score rows (ld apart). The tile's tokens are consecutive positions of one
 * sequence: token k reads positions 0 .. pos0 + k. */
static void tile_rest(const att_job *jb, const att_dims *a, int32_t i, int32_t g, int32_t from,
                      const float *q, float *s, int64_t ld, float *out) {
    const sp_kernels *kn = sp_kernels_get();
    const sp_batch *b = jb->b;
    const int32_t r0 = jb->f->tiles[i], nt = jb->f->tiles[i + 1] - r0, R = nt * a->group;
    const int32_t t0 = tile_token(jb, r0);
    const int32_t *table = b->block_tables[b->seq[t0]];
    const int32_t n_first = b->pos[t0] + 1, n_last = n_first + nt - 1, BS = a->BS;
    // Scores of every row up to the last token's positions (a row's softmax reads only its
    // own); weights of the positions all rows read, then each later token's own.
    for (int32_t j0 = from; j0 < n_last; j0 += BS)
        kn->attn_scores(q, R, a->D, a->scale, sp_kvbuf_head(jb->kv, table[j0 / BS], jb->il, 0, g),
                        BS, SP_MIN(BS, n_last - j0), a->f16, s + j0, ld);
    for (int32_t row = 0; row < R; row++)
        kn->attn_softmax(s + row * ld, n_first + row / a->group, a->f16);
    for (int32_t j0 = from; j0 < n_first; j0 += BS)
        kn->attn_values(s + j0, ld, R, a->D, sp_kvbuf_head(jb->kv, table[j0 / BS], jb->il, 1, g),
                        SP_MIN(BS, n_first - j0), a->f16, out);
    for (int32_t k = 1; k < nt; k++)
        for (int32_t j = n_first; j < n_first + k; j++) // position j, for tokens k and after
            kn->attn_values(s + (size_t)k * a->group * ld + j, ld, a->group, a->D,
                            (const sp_f16 *)sp_kvbuf_head(jb->kv, table[j / BS], jb->il, 1, g) +
                                (size_t)(j % BS) * (size_t)a->D * (a->f16 ? 1 : 2),
                            1, a->f16, out + (size_t)k * a->span);
}

/* A lone tile over KV head g. */
static void tile_attention(const att_job *jb, const att_dims *a, att_scratch *ws, int32_t i,
                           int32_t g) {
    sp_forward *f = jb->f;
    const int32_t r0 = f->tiles[i], nt = f->tiles[i + 1] - r0;
    const int32_t t0 = tile_token(jb, r0);
    // A lone token's rows are already adjacent in q and att (rounded to F16 for an F16 cache:
    // STEP_QKV); a tile's are gathered.
    const float *qt = f->q + (size_t)t0 * a->nq + (size_t)g * a->span;
    float *out = f->att + (size_t)r0 * a->nq + (size_t)g * a->span;
    if (nt > 1) {
        for (int32_t k = 0; k < nt; k++)
            memcpy(ws->q + (size_t)k * a->span,
                   f->q + (size_t)tile_token(jb, r0 + k) * a->nq + (size_t)g * a->span,
                   a->span * sizeof(float));
        qt = ws->q;
        out = ws->out;
    }
    memset(out, 0, (size_t)nt * a->span * sizeof(float));
    tile_rest(jb, a, i, g, 0, qt, ws->scores, f->max_ctx, out);
    for (int32_t k = 0; k < nt && nt > 1; k++)
        memcpy(f->att + (size_t)(r0 + k) * a->nq + (size_t)g * a->span, out + (size_t)k * a->span,
               a->span * sizeof(float));
}

/* A group of tiles over KV head g: the shared positions' scores and values for all their rows
 * at once (each key and value loaded once), then each tile's own positions. Every row's results
 * are those of tile_attention: the kernels' rows never depend on the others, and values summed
 * over the shared blocks then the rest equal those summed block by block. */
static void group_attention(const att_job *jb, const att_dims *a, att_scratch *ws,
                            const att_group *gr, int32_t g) {
    sp_forward *f = jb->f;
    const sp_kernels *kn = sp_kernels_get();
    const sp_batch *b = jb->b;
    const int32_t *tiles = f->group_tile + gr->first;
    int32_t R = 0;
    for (int32_t m = 0; m < gr->n; m++) {
        const int32_t r0 = f->tiles[tiles[m]], nt = f->tiles[tiles[m] + 1] - r0;
        for (int32_t k = 0; k < nt; k++, R += a->group)
            memcpy(ws->q + (size_t)R * a->D,
                   f->q + (size_t)tile_token(jb, r0 + k) * a->nq + (size_t)g * a->span,
                   a->span * sizeof(float));
    }
    const int32_t *table = b->block_tables[b->seq[tile_token(jb, f->tiles[tiles[0]])]];
    for (int32_t j0 = 0; j0 < gr->shared; j0 += a->BS)
        kn->attn_scores(ws->q, R, a->D, a->scale,
                        sp_kvbuf_head(jb->kv, table[j0 / a->BS], jb->il, 0, g), a->BS, a->BS,
                        a->f16, ws->scores + j0, gr->ld);
    memset(ws->out, 0, (size_t)R * (size_t)a->D * sizeof(float));
    // The shared values need every row's weights: each tile's scores and softmax first.
    for (int32_t m = 0, row = 0; m < gr->n; m++) {
        const int32_t r0 = f->tiles[tiles[m]], nt = f->tiles[tiles[m] + 1] - r0;
        const int32_t t0 = tile_token(jb, r0);
        const int32_t *tab = b->block_tables[b->seq[t0]];
        const int32_t n_last = b->pos[t0] + nt;
        float *s = ws->scores + (size_t)row * gr->ld;
        for (int32_t j0 = gr->shared; j0 < n_last; j0 += a->BS)
            kn->attn_scores(ws->q + (size_t)row * a->D, nt * a->group, a->D, a->scale,
                            sp_kvbuf_head(jb->kv, tab[j0 / a->BS], jb->il, 0, g), a->BS,
                            SP_MIN(a->BS, n_last - j0), a->f16, s + j0, gr->ld);
        for (int32_t r = 0; r < nt * a->group; r++)
            kn->attn_softmax(s + r * gr->ld, b->pos[t0] + 1 + r / a->group, a->f16);
        row += nt * a->group;
    }
    for (int32_t j0 = 0; j0 < gr->shared; j0 += a->BS)
        kn->attn_values(ws->scores + j0, gr->ld, R, a->D,
                        sp_kvbuf_head(jb->kv, table[j0 / a->BS], jb->il, 1, g), a->BS, a->f16,
                        ws->out);
    for (int32_t m = 0, row = 0; m < gr->n; m++) {
        const int32_t r0 = f->tiles[tiles[m]], nt = f->tiles[tiles[m] + 1] - r0;
        const int32_t t0 = tile_token(jb, r0);
        const int32_t *tab = b->block_tables[b->seq[t0]];
        const int32_t n_first = b->pos[t0] + 1, BS = a->BS;
        const float *s = ws->scores + (size_t)row * gr->ld;
        float *out = ws->out + (size_t)row * a->D;
        for (int32_t j0 = gr->shared; j0 < n_first; j0 += BS)
            kn->attn_values(s + j0, gr->ld, nt * a->group, a->D,
                            sp_kvbuf_head(jb->kv, tab[j0 / BS], jb->il, 1, g),
                            SP_MIN(BS, n_first - j0), a->f16, out);
        for (int32_t k = 1; k < nt; k++)
            for (int32_t j = n_first; j < n_first + k; j++)
                kn->attn_values(s + (size_t)k * a->group * gr->ld + j, gr->ld, a->group, a->D,
                                (const sp_f16 *)sp_kvbuf_head(jb->kv, tab[j / BS], jb->il, 1, g) +
                                    (size_t)(j % BS) * (size_t)a->D * (a->f16 ? 1 : 2),
                                1, a->f16, out + (size_t)k * a->span);
        for (int32_t k = 0; k < nt; k++)
            memcpy(f->att + (size_t)(r0 + k) * a->nq + (size_t)g * a->span,
                   out + (size_t)k * a->span, a->span * sizeof(float));
        row += nt * a->group;
    }
}

static void attention_worker(void *ctx, int ith, int nth) {
    (void)nth;
    att_job *jb = ctx;
    sp_forward *f = jb->f;
    const att_dims a = dims_of(f, jb->kv);
    const int32_t n_kv = f->m->hp.n_head_kv;
    att_scratch *ws = &f->ts[ith];
    // Work items are (group, KV head) pairs, each taken by whichever thread is free, so that the
    // long contexts of a prompt's last tokens spread over all threads; which thread takes which
    // never changes a value.
    const int64_t n_items = (int64_t)jb->n_groups * n_kv;
    for (;;) {
        const int64_t item = atomic_fetch_add_explicit(&jb->next, 1, memory_order_relaxed);
        if (item >= n_items)
            break;
        const att_group *gr = &f->groups[item / n_kv];
        const int32_t g = (int32_t)(item % n_kv);
        if (gr->shared)
            group_attention(jb, &a, ws, gr, g);
        else
            tile_attention(jb, &a, ws, f->group_tile[gr->first], g);
    }
}

/* Groups the n_tiles tiles (f->groups, f->group_tile): tiles whose sequences' tables begin with
 * the same blocks, as many rows as the scratch holds; every other tile alone. */
static int32_t group_tiles(sp_forward *f, const att_job *jb, int32_t n_tiles) {
    const sp_batch *b = jb->b;
    const int32_t BS = jb->kv->block_size, group = f->m->hp.n_head / f->m->hp.n_head_kv;
    const uint32_t n_slots = (uint32_t)(2 * f->max_tokens);
    att_group *keys = f->keys;
    // Tiles by their sequence's first block, in order of first appearance.
    memset(f->by_block, 0, n_slots * sizeof *f->by_block);
    int32_t n_keys = 0;
    for (int32_t i = 0; i < n_tiles; i++) {
        const int32_t block = b->block_tables[b->seq[tile_token(jb, f->tiles[i])]][0];
        uint32_t slot = (uint32_t)block * 2654435761u % n_slots;
        for (;; slot = (slot + 1) % n_slots) {
            const int32_t e = f->by_block[slot];
            if (!e) {
                f->by_block[slot] = ++n_keys;
                keys[n_keys - 1] = (att_group){.n = 0, .shared = block};
                f->tile_group[i] = n_keys - 1;
                break;
            }
            if (keys[e - 1].shared == block) {
                f->tile_group[i] = e - 1;
                break;
            }
        }
        keys[f->tile_group[i]].n++;
    }
    for (int32_t k = 0, at = 0; k < n_keys; k++) {
        keys[k].first = at;
        at += keys[k].n;
        keys[k].n = 0;
    }
    for (int32_t i = 0; i < n_tiles; i++) {
        att_group *gr = &keys[f->tile_group[i]];
        f->group_tile[gr->first + gr->n++] = i;
    }
    // Each key's tiles in runs that fit the scratch, with the whole blocks all their tables
    // share below every tile's first position; lone tiles (or nothing shared) alone.
    const int32_t round = SP_MAX(BS, 16); // score rows as long as the kernels may write
    int32_t n_groups = 0;
    for (int32_t k = 0; k < n_keys; k++) {
        const att_group key = keys[k];
        for (int32_t m = 0; m < key.n;) {
            const int32_t first = key.first + m;
            const int32_t i0 = f->group_tile[first];
            const int32_t t0 = tile_token(jb, f->tiles[i0]);
            const int32_t *tab0 = b->block_tables[b->seq[t0]];
            int32_t n = 0, rows = 0, ld = 0, common = INT32_MAX;
            for (; m + n < key.n; n++) {
                const int32_t i = f->group_tile[first + n];
                const int32_t nt = f->tiles[i + 1] - f->tiles[i];
                const int32_t t = tile_token(jb, f->tiles[i]);
                const int32_t *tab = b->block_tables[b->seq[t]];
                int32_t c = SP_MIN(common, (b->pos[t] + 1) / BS);
                for (int32_t j = 0; j < c; j++)
                    if (tab[j] != tab0[j]) {
                        c = j;
                        break;
                    }
                const int32_t l = SP_MAX(ld, (b->pos[t] + nt + round - 1) / round * round);
                if (n > 0 && (c == 0 || rows + nt * group > GROUP_ROWS ||
                              (int64_t)(rows + nt * group) * l > GROUP_FLOATS))
                    break;
                common = c, rows += nt * group, ld = l;
            }
            f->groups[n_groups++] =
                (att_group){.first = first, .n = n, .shared = n > 1 ? common * BS : 0, .ld = ld};
            m += n;
        }
    }
    return n_groups;
}

/* Attention of the batch tokens rows[0..n) (NULL: tokens 0..n), output row i for rows[i]. Rows
 * are taken in tiles of up to tile_tokens consecutive positions of one sequence, tiles of
 * sequences that share their first blocks in groups. */
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
    att_job jb = {.f = f, .kv = kv, .b = b, .il = il, .rows = rows};
    jb.n_groups = group_tiles(f, &jb, n_tiles);
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
static void for_tokens(sp_forward *f, sp_kvbuf *kv, const sp_batch *b, int32_t il, token_step step,
                       int32_t n) {
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

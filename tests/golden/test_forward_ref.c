/* The batched forward pass against the scalar reference on random `mkmodel` models of every
 * supported weight type, with batches that mix sequences and chunk prompts; and bitwise batch
 * invariance: a sequence's logits do not depend on its batch-mates or on its chunking.
 *
 * Error budgets, as the worst normalized mean squared error of a row of logits. The batched
 * pass rounds each matrix product's input to the weight's dot-product type as llama.cpp does
 * (11-bit F16, 8-bit BF16, 8-bit blocks for the quantized types); the F16 KV cache rounds keys,
 * values, queries and softmax weights to 11 bits. The references keep everything in F32 with
 * double accumulation, either plain or with the same activation rounding. Rounding is
 * discontinuous, so a last-bit difference in summation order can flip a rounded value and the
 * random network (q/k gain 1.5) amplifies it: the budgets, about four times the worst measured
 * value, are F32 weights 1e-9 (F32 cache) / 2e-5 (F16 cache); F16 2e-5 / 4e-5; BF16 1e-3;
 * Q8_0, Q4_0, Q4_K, Q5_K, Q6_K and the q4_k_m / q5_k_m mixes 1e-2.
 * The measured values are printed. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "app/commands.h"
#include "base/threadpool.h"
#include "model/forward.h"
#include "model/kvbuf.h"
#include "model/model.h"
#include "model/ref.h"

#define N_SEQ    3
#define BS       16
#define N_CTX    128
#define N_DECODE 3

static const int prompt_len[N_SEQ] = {9, 20, 35};

typedef struct fixture {
    sp_model *m;
    int32_t toks[N_SEQ][64]; // prompt then decode tokens
    int n_tok[N_SEQ];
} fixture;

static void make_model(fixture *fx, const char *type) {
    char out[512], *vocab = sp_test_shared("models/stories260K.gguf");
    snprintf(out, sizeof out, "%s/rand-%s.gguf", sp_test_tmpdir(), type);
    char *argv[] = {"mkmodel", "-o",       out,          "--n-embd",    "256", "--n-layer",
                    "2",       "--n-head", "4",          "--n-head-kv", "2",   "--n-ff",
                    "512",     "--type",   (char *)type, "--seed",      "7",   "--vocab-from",
                    vocab,     NULL};
    assert_int_equal(sp_cmd_mkmodel(19, argv), 0);
    sp_diag d;
    assert_int_equal(sp_model_load(out, &fx->m, &d), SP_OK);
    free(vocab);
    uint64_t rs = 42;
    for (int s = 0; s < N_SEQ; s++) {
        fx->n_tok[s] = prompt_len[s] + N_DECODE;
        for (int i = 0; i < fx->n_tok[s]; i++)
            fx->toks[s][i] = (int32_t)(sp_test_rand(&rs) % (uint64_t)fx->m->hp.n_vocab);
    }
}

/* One engine step: a list of (sequence, first position, count) chunks. */
typedef struct chunk {
    int seq, first, count;
} chunk;

/* Runs a schedule of steps and records the logits of every position of every sequence into
 * out[seq][pos] (n_vocab floats each). Sequences use disjoint block ranges. With `select`, only
 * some rows ask for logits, out of order: none in the first step, then every other row in
 * reverse order with the last of them twice (positions not asked for stay untouched). */
static sp_threadpool *schedule_pool; // when set, the forward pass runs on these threads

static void run_schedule_rows(fixture *fx, sp_dtype kv_type, const chunk *const *steps,
                              const int *n_chunks, int n_steps, bool select,
                              float *out[N_SEQ][64]) {
    const int32_t V = fx->m->hp.n_vocab, nb = N_CTX / BS;
    sp_kvbuf kv;
    assert_int_equal(sp_kvbuf_init(&kv, &fx->m->hp, kv_type, BS, nb * N_SEQ), SP_OK);
    sp_forward *fw;
    assert_int_equal(sp_forward_create(fx->m, 256, N_CTX, &fw), SP_OK);
    if (schedule_pool)
        assert_int_equal(sp_forward_set_pool(fw, schedule_pool), SP_OK);
    // Interleave block ids between sequences so that tables are not contiguous.
    int32_t tables[N_SEQ][N_CTX / BS];
    for (int s = 0; s < N_SEQ; s++)
        for (int i = 0; i < nb; i++)
            tables[s][i] = i * N_SEQ + (N_SEQ - 1 - s);
    const int32_t *tp[N_SEQ] = {tables[0], tables[1], tables[2]};
    int32_t nbs[N_SEQ] = {nb, nb, nb};
    int32_t tok[256], pos[256], seq[256], rows[256];
    float *logits = malloc((size_t)256 * V * sizeof(float));
    for (int st = 0; st < n_steps; st++) {
        int n = 0;
        for (int c = 0; c < n_chunks[st]; c++) {
            const chunk *ch = &steps[st][c];
            for (int i = 0; i < ch->count; i++) {
                tok[n] = fx->toks[ch->seq][ch->first + i];
                pos[n] = ch->first + i;
                seq[n] = ch->seq;
                rows[n] = n;
                n++;
            }
        }
        int n_out = n;
        if (select) {
            n_out = 0;
            for (int r = st == 0 ? n : (n - 1) / 2 * 2; r >= 0 && st > 0; r -= 2)
                rows[n_out++] = r;
            if (n_out > 0)
                rows[n_out++] = 0;
        }
        sp_batch b = {.n_tokens = n,
                      .token = tok,
                      .pos = pos,
                      .seq = seq,
                      .n_seqs = N_SEQ,
                      .block_tables = tp,
                      .n_seq_blocks = nbs,
                      .n_out = n_out,
                      .out_rows = rows};
        assert_int_equal(sp_forward_eval(fw, &kv, &b, logits), SP_OK);
        for (int i = 0; i < n_out; i++)
            memcpy(out[seq[rows[i]]][pos[rows[i]]], logits + (size_t)i * V, V * sizeof(float));
    }
    free(logits);
    sp_forward_destroy(fw);
    sp_kvbuf_deinit(&kv);
}

static void run_schedule(fixture *fx, sp_dtype kv_type, const chunk *const *steps,
                         const int *n_chunks, int n_steps, float *out[N_SEQ][64]) {
    run_schedule_rows(fx, kv_type, steps, n_chunks, n_steps, false, out);
}

static void alloc_out(fixture *fx, float *out[N_SEQ][64]) {
    for (int s = 0; s < N_SEQ; s++)
        for (int p = 0; p < 64; p++)
            out[s][p] = p < fx->n_tok[s] ? calloc(fx->m->hp.n_vocab, sizeof(float)) : NULL;
}

static void free_out(float *out[N_SEQ][64]) {
    for (int s = 0; s < N_SEQ; s++)
        for (int p = 0; p < 64; p++)
            free(out[s][p]);
}

/* A mixed schedule: prompts chunked unevenly and interleaved, then decode steps for all (with
 * `select`, only some rows asking for logits: run_schedule_rows). */
static void mixed_schedule_rows(fixture *fx, sp_dtype kv_type, bool select, float *out[N_SEQ][64]) {
    const chunk s0[] = {{0, 0, 9}, {1, 0, 7}, {2, 0, 20}};
    const chunk s1[] = {{1, 7, 13}, {2, 20, 15}};
    const chunk d0[] = {{0, 9, 1}, {1, 20, 1}, {2, 35, 1}};
    const chunk d1[] = {{2, 36, 1}, {0, 10, 1}, {1, 21, 1}};
    const chunk d2[] = {{1, 22, 1}, {2, 37, 1}, {0, 11, 1}};
    const chunk *steps[] = {s0, s1, d0, d1, d2};
    const int n[] = {3, 2, 3, 3, 3};
    run_schedule_rows(fx, kv_type, steps, n, 5, select, out);
}

static void mixed_schedule(fixture *fx, sp_dtype kv_type, float *out[N_SEQ][64]) {
    mixed_schedule_rows(fx, kv_type, false, out);
}

static double nmse(const float *a, const float *ref, int n) {
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        double d = (double)a[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return num / (den > 0 ? den : 1);
}

static void check_against_ref(const char *type, double budget_f32kv, double budget_f16kv) {
    fixture fx;
    make_model(&fx, type);
    const int32_t V = fx.m->hp.n_vocab;
    float *out[N_SEQ][64];
    for (int kvt = 0; kvt < 2; kvt++) {
        sp_dtype kv_type = kvt ? SP_DTYPE_F16 : SP_DTYPE_F32;
        alloc_out(&fx, out);
        mixed_schedule(&fx, kv_type, out);
        for (int emulate = 1; emulate >= 0; emulate--) {
            sp_ref *ref;
            assert_int_equal(sp_ref_create(fx.m, N_CTX, emulate, &ref), SP_OK);
            float *rl = malloc(V * sizeof(float));
            double worst = 0;
            for (int s = 0; s < N_SEQ; s++) {
                for (int p = 0; p < fx.n_tok[s]; p++) {
                    assert_int_equal(sp_ref_eval(ref, fx.toks[s][p], p, rl), SP_OK);
                    for (int i = 0; i < V; i++)
                        assert_true(isfinite(out[s][p][i]));
                    double e = nmse(out[s][p], rl, V);
                    worst = e > worst ? e : worst;
                }
            }
            double b = kvt ? budget_f16kv : budget_f32kv;
            print_message("%-5s weights, %s KV, %s reference: worst row NMSE %.3g (budget %.0e)\n",
                          type, kvt ? "f16" : "f32", emulate ? "same-rounding" : "plain F32", worst,
                          b);
            assert_true(worst < b);
            free(rl);
            sp_ref_destroy(ref);
        }
        free_out(out);
    }
    sp_model_destroy(fx.m);
}

static void test_ref_f32(void **s) {
    (void)s;
    check_against_ref("f32", 1e-9, 2e-5);
}
static void test_ref_f16(void **s) {
    (void)s;
    check_against_ref("f16", 2e-5, 4e-5);
}
static void test_ref_bf16(void **s) {
    (void)s;
    check_against_ref("bf16", 1e-3, 1e-3);
}
static void test_ref_q8_0(void **s) {
    (void)s;
    check_against_ref("q8_0", 1e-2, 1e-2);
}
static void test_ref_q4_0(void **s) {
    (void)s;
    check_against_ref("q4_0", 1e-2, 1e-2);
}
static void test_ref_q4_k(void **s) {
    (void)s;
    check_against_ref("q4_k", 1e-2, 1e-2);
}
static void test_ref_q5_k(void **s) {
    (void)s;
    check_against_ref("q5_k", 1e-2, 1e-2);
}
static void test_ref_q6_k(void **s) {
    (void)s;
    check_against_ref("q6_k", 1e-2, 1e-2);
}
static void test_ref_q4_k_m(void **s) {
    (void)s;
    check_against_ref("q4_k_m", 1e-2, 1e-2);
}
static void test_ref_q5_k_m(void **s) {
    (void)s;
    check_against_ref("q5_k_m", 1e-2, 1e-2);
}

/* Bitwise batch invariance: each sequence alone, with prompt chunks of 1, 7 and 512 tokens,
 * gives exactly the logits it gets in the mixed batch (Q8_0 weights, and the K-quants of
 * q4_k_m). */
static void check_batch_invariance(const char *type) {
    fixture fx;
    make_model(&fx, type);
    const int32_t V = fx.m->hp.n_vocab;
    float *mixed[N_SEQ][64], *alone[N_SEQ][64];
    alloc_out(&fx, mixed);
    mixed_schedule(&fx, SP_DTYPE_F16, mixed);
    const int chunk_sizes[] = {1, 7, 512};
    for (int ci = 0; ci < 3; ci++) {
        for (int s = 0; s < N_SEQ; s++) {
            alloc_out(&fx, alone);
            chunk steps_buf[64];
            const chunk *steps[64];
            int n[64], n_steps = 0;
            for (int p = 0; p < fx.n_tok[s];) {
                int len = p < prompt_len[s] ? chunk_sizes[ci] : 1;
                if (p < prompt_len[s] && p + len > prompt_len[s])
                    len = prompt_len[s] - p;
                steps_buf[n_steps] = (chunk){s, p, len};
                steps[n_steps] = &steps_buf[n_steps];
                n[n_steps++] = 1;
                p += len;
            }
            run_schedule(&fx, SP_DTYPE_F16, steps, n, n_steps, alone);
            for (int p = 0; p < fx.n_tok[s]; p++)
                if (memcmp(alone[s][p], mixed[s][p], V * sizeof(float)))
                    fail_msg("%s: sequence %d position %d: logits differ with chunk size %d", type,
                             s, p, chunk_sizes[ci]);
            free_out(alone);
        }
    }
    free_out(mixed);
    sp_model_destroy(fx.m);
}

static void test_batch_invariance(void **st) {
    (void)st;
    check_batch_invariance("q8_0");
    check_batch_invariance("q4_k_m");
}

/* Sequences whose tables begin with the same physical blocks (a prompt prefix cached once) are
 * attended to together: their logits equal, bitwise, those of the same sequences each with its
 * own copy of the prefix, for prompt chunks (tiles of several tokens) and decode steps, groups
 * split to fit the scratch (over 512 query rows in one step), F16 and F32 caches, one thread
 * and three. */
#define SH_SEQS   24
#define SH_PREFIX 32 // two whole blocks
#define SH_DECODE 3

static void run_shared(sp_model *m, sp_dtype kv_type, bool share, const int32_t *prefix,
                       int32_t suffix[SH_SEQS][32], const int *suffix_len, float *out) {
    const int32_t V = m->hp.n_vocab, nb = N_CTX / BS;
    sp_kvbuf kv;
    assert_int_equal(sp_kvbuf_init(&kv, &m->hp, kv_type, BS, nb * SH_SEQS), SP_OK);
    sp_forward *fw;
    assert_int_equal(sp_forward_create(m, 1024, N_CTX, &fw), SP_OK);
    if (schedule_pool)
        assert_int_equal(sp_forward_set_pool(fw, schedule_pool), SP_OK);
    int32_t tables[SH_SEQS][N_CTX / BS], nbs[SH_SEQS];
    const int32_t *tp[SH_SEQS];
    for (int q = 0; q < SH_SEQS; q++) {
        for (int i = 0; i < nb; i++) // shared: everyone's first blocks are sequence 0's
            tables[q][i] = share && i < SH_PREFIX / BS ? i * SH_SEQS : i * SH_SEQS + q;
        tp[q] = tables[q];
        nbs[q] = nb;
    }
    int32_t *tok = malloc(1024 * sizeof *tok), *pos = malloc(1024 * sizeof *pos);
    int32_t *seq = malloc(1024 * sizeof *seq), *rows = malloc(1024 * sizeof *rows);
    float *logits = malloc((size_t)1024 * V * sizeof(float));
    // Step 0: the prefix (once, or once per sequence); step 1: every suffix; then decodes, each
    // sequence's next token its own position's id.
    for (int st = 0; st < 2 + SH_DECODE; st++) {
        int n = 0;
        for (int q = 0; q < SH_SEQS; q++) {
            if (st == 0 && (q == 0 || !share))
                for (int i = 0; i < SH_PREFIX; i++, n++)
                    tok[n] = prefix[i], pos[n] = i, seq[n] = q;
            if (st == 1)
                for (int i = 0; i < suffix_len[q]; i++, n++)
                    tok[n] = suffix[q][i], pos[n] = SH_PREFIX + i, seq[n] = q;
            if (st >= 2) {
                tok[n] = (q * 7 + st) % V, pos[n] = SH_PREFIX + suffix_len[q] + st - 2;
                seq[n++] = q;
            }
        }
        for (int i = 0; i < n; i++)
            rows[i] = i;
        sp_batch b = {.n_tokens = n,
                      .token = tok,
                      .pos = pos,
                      .seq = seq,
                      .n_seqs = SH_SEQS,
                      .block_tables = tp,
                      .n_seq_blocks = nbs,
                      .n_out = n,
                      .out_rows = rows};
        assert_int_equal(sp_forward_eval(fw, &kv, &b, logits), SP_OK);
        for (int i = 0; i < n; i++) // positions after the prefix: out[seq][pos - prefix]
            if (pos[i] >= SH_PREFIX)
                memcpy(out + ((size_t)seq[i] * 64 + (size_t)(pos[i] - SH_PREFIX)) * V,
                       logits + (size_t)i * V, V * sizeof(float));
    }
    free(tok), free(pos), free(seq), free(rows), free(logits);
    sp_forward_destroy(fw);
    sp_kvbuf_deinit(&kv);
}

static void test_shared_prefix_attention(void **st) {
    (void)st;
    fixture fx;
    make_model(&fx, "q8_0");
    const int32_t V = fx.m->hp.n_vocab;
    uint64_t rs = 3;
    int32_t prefix[SH_PREFIX], suffix[SH_SEQS][32];
    int suffix_len[SH_SEQS], total = 0;
    for (int i = 0; i < SH_PREFIX; i++)
        prefix[i] = (int32_t)(sp_test_rand(&rs) % (uint64_t)V);
    for (int q = 0; q < SH_SEQS; q++) {
        suffix_len[q] = 1 + (int)(sp_test_rand(&rs) % 31);
        total += suffix_len[q];
        for (int i = 0; i < suffix_len[q]; i++)
            suffix[q][i] = (int32_t)(sp_test_rand(&rs) % (uint64_t)V);
    }
    assert_true(total * (fx.m->hp.n_head / fx.m->hp.n_head_kv) > 512); // groups are split
    const size_t n_out = (size_t)SH_SEQS * 64 * V;
    float *own = calloc(n_out, sizeof(float)), *shared = calloc(n_out, sizeof(float));
    for (int threads = 1; threads <= 3; threads += 2) {
        if (threads > 1)
            assert_int_equal(sp_threadpool_create(threads, &schedule_pool), SP_OK);
        for (int kvt = 0; kvt < 2; kvt++) {
            const sp_dtype t = kvt ? SP_DTYPE_F16 : SP_DTYPE_F32;
            run_shared(fx.m, t, false, prefix, suffix, suffix_len, own);
            run_shared(fx.m, t, true, prefix, suffix, suffix_len, shared);
            for (int q = 0; q < SH_SEQS; q++)
                for (int p = 0; p < suffix_len[q] + SH_DECODE; p++)
                    if (memcmp(own + ((size_t)q * 64 + (size_t)p) * V,
                               shared + ((size_t)q * 64 + (size_t)p) * V, V * sizeof(float)))
                        fail_msg("%s KV, %d threads: sequence %d position %d: logits differ "
                                 "with a shared prefix",
                                 kvt ? "f16" : "f32", threads, q, SH_PREFIX + p);
        }
        sp_threadpool_destroy(schedule_pool);
        schedule_pool = NULL;
    }
    free(own);
    free(shared);
    sp_model_destroy(fx.m);
}

/* Rows that ask for logits, in any order, get exactly the logits they get when every row asks
 * (the last layer computes only those rows), and a step that asks for none still fills the
 * cache for the steps after it; on one thread and on three. */
static void test_selected_rows(void **st) {
    (void)st;
    fixture fx;
    make_model(&fx, "q8_0");
    const int32_t V = fx.m->hp.n_vocab;
    float *all[N_SEQ][64], *some[N_SEQ][64];
    alloc_out(&fx, all);
    alloc_out(&fx, some);
    mixed_schedule(&fx, SP_DTYPE_F16, all);
    for (int threads = 1; threads <= 3; threads += 2) {
        if (threads > 1)
            assert_int_equal(sp_threadpool_create(threads, &schedule_pool), SP_OK);
        // Mark every slot, so that those the selected run fills can be told apart.
        for (int s = 0; s < N_SEQ; s++)
            for (int p = 0; p < fx.n_tok[s]; p++)
                some[s][p][0] = NAN;
        mixed_schedule_rows(&fx, SP_DTYPE_F16, true, some);
        int filled = 0;
        for (int s = 0; s < N_SEQ; s++)
            for (int p = 0; p < fx.n_tok[s]; p++) {
                if (isnan(some[s][p][0]))
                    continue;
                filled++;
                if (memcmp(some[s][p], all[s][p], V * sizeof(float)))
                    fail_msg("sequence %d position %d: logits of a selected row differ (%d "
                             "threads)",
                             s, p, threads);
            }
        // Steps 2-5 ask for 14, 2, 2 and 2 distinct rows (row 0 twice in each).
        assert_int_equal(filled, 14 + 2 + 2 + 2);
        sp_threadpool_destroy(schedule_pool);
        schedule_pool = NULL;
    }
    free_out(all);
    free_out(some);
    sp_model_destroy(fx.m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ref_f32),
        cmocka_unit_test(test_ref_f16),
        cmocka_unit_test(test_ref_bf16),
        cmocka_unit_test(test_ref_q8_0),
        cmocka_unit_test(test_ref_q4_0),
        cmocka_unit_test(test_ref_q4_k),
        cmocka_unit_test(test_ref_q5_k),
        cmocka_unit_test(test_ref_q6_k),
        cmocka_unit_test(test_ref_q4_k_m),
        cmocka_unit_test(test_ref_q5_k_m),
        cmocka_unit_test(test_batch_invariance),
        cmocka_unit_test(test_selected_rows),
        cmocka_unit_test(test_shared_prefix_attention),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

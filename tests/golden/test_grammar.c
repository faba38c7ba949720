/* Grammars with real vocabularies and models.
 * - The allowed-token mask over the 32k Llama SentencePiece vocabulary and the 50k GPT-2
 *   byte-level BPE vocabulary equals the tokens the matcher accepts one by one, along random
 *   walks through the JSON grammar (the mask time is printed).
 * - A model constrained by a grammar produces a sentence of it, greedy and sampled, whatever
 *   its weights prefer: JSON objects that parse, and exactly one of a GBNF's few sentences;
 *   unconstrained, the same model does not (so the grammar did the work). */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "gguf/gguf.h"
#include "grammar/grammar.h"
#include "grammar/matcher.h"
#include "grammar/trie.h"
#include "model/model.h"
#include "sched/engine.h"
#include "sched/request.h"
#include "tok/tok.h"

static sp_vocab *load_vocab(const char *rel, sp_gguf **g) {
    char *path = sp_test_shared(rel);
    sp_diag d;
    sp_diag_clear(&d);
    assert_int_equal(sp_gguf_open(path, g, &d), SP_OK);
    sp_vocab *v;
    assert_int_equal(sp_vocab_load(*g, &v, &d), SP_OK);
    free(path);
    return v;
}

static void check_vocab_masks(const char *rel) {
    sp_gguf *gg;
    sp_vocab *v = load_vocab(rel, &gg);
    const int32_t n = (int32_t)sp_vocab_n_tokens(v);
    const uint8_t **bytes = malloc((size_t)n * sizeof *bytes);
    uint32_t *len = malloc((size_t)n * sizeof *len);
    for (int32_t i = 0; i < n; i++) {
        const sp_str p = sp_tok_piece_ref(v, i, false);
        bytes[i] = (const uint8_t *)p.ptr;
        len[i] = (uint32_t)p.len;
    }
    sp_token_trie *t;
    assert_int_equal(sp_token_trie_create(bytes, len, n, &t), SP_OK);
    sp_grammar *g;
    sp_diag d;
    sp_diag_clear(&d);
    assert_int_equal(sp_grammar_json_object(&g, &d), SP_OK);
    sp_matcher *m;
    assert_int_equal(sp_matcher_create(g, &m), SP_OK);
    uint32_t *mask = malloc(((size_t)n + 31) / 32 * sizeof *mask);
    int32_t *allowed = malloc((size_t)n * sizeof *allowed);
    uint64_t rs = 5;
    double mask_us = 0;
    int n_masks = 0;
    char walked[4096] = "";
    size_t n_walked = 0;
    for (int step = 0; step < 40; step++) {
        int32_t count;
        const int64_t t0 = sp_time_us();
        assert_int_equal(sp_matcher_fill_mask(m, t, mask, &count), SP_OK);
        mask_us += (double)(sp_time_us() - t0);
        n_masks++;
        int32_t k = 0;
        for (int32_t i = 0; i < n; i++) {
            bool ok = false;
            if (len[i])
                assert_int_equal(sp_matcher_allows(m, bytes[i], len[i], &ok), SP_OK);
            if (ok != (bool)((mask[i >> 5] >> (i & 31)) & 1))
                fail_msg("%s step %d token %d: allowed %d, mask says otherwise", rel, step, i, ok);
            if (ok)
                allowed[k++] = i;
        }
        assert_int_equal(count, k);
        if (k == 0 && !sp_matcher_complete(m))
            fail_msg("%s step %d: no token allowed after \"%s\"", rel, step, walked);
        if (k == 0 || (sp_matcher_complete(m) && sp_test_rand(&rs) % 8 == 0)) {
            sp_matcher_reset(m); // the end of a sentence: walk another
            n_walked = 0;
            continue;
        }
        // Prefer short tokens, so that the walk visits many states of the grammar.
        int32_t tok = allowed[sp_test_rand(&rs) % (uint64_t)k];
        for (int tries = 0; tries < 8 && len[tok] > 2; tries++)
            tok = allowed[sp_test_rand(&rs) % (uint64_t)k];
        bool ok;
        assert_int_equal(sp_matcher_accept(m, bytes[tok], len[tok], &ok), SP_OK);
        assert_true(ok);
        if (n_walked + len[tok] < sizeof walked) {
            memcpy(walked + n_walked, bytes[tok], len[tok]);
            n_walked += len[tok];
            walked[n_walked] = 0;
        }
    }
    print_message("%s: %d tokens, trie of %u nodes, mean full mask %.0f us\n", rel, n, t->n_nodes,
                  mask_us / n_masks);
    free(mask);
    free(allowed);
    sp_matcher_destroy(m);
    sp_grammar_release(g);
    sp_token_trie_destroy(t);
    free(bytes);
    free(len);
    sp_vocab_destroy(v);
    sp_gguf_close(gg);
}

static void test_masks_llama_spm(void **s) {
    (void)s;
    check_vocab_masks("vocab/ggml-vocab-llama-spm.gguf");
}

static void test_masks_gpt2(void **s) {
    (void)s;
    check_vocab_masks("vocab/ggml-vocab-gpt-2.gguf");
}

/* Runs n requests of the prompt under grammar g (NULL: none) on the model, greedy for the
 * first and sampled (temperature 1.2, one seed each) for the others; their texts and finish
 * reasons into text[] / fin[] (texts to free). With kv_tokens > 0, a KV pool of that many
 * tokens and an admission policy that admits eagerly: requests are preempted (their count to
 * *preemptions) and recomputed. */
static void generate_kv(const char *model, sp_grammar *g, int n, int32_t max_tokens,
                        int32_t kv_tokens, char **text, sp_finish *fin, uint64_t *preemptions) {
    char *path = sp_test_shared(model);
    sp_diag d;
    sp_diag_clear(&d);
    sp_model *m;
    sp_vocab *v;
    assert_int_equal(sp_model_load(path, &m, &d), SP_OK);
    assert_int_equal(sp_vocab_load(m->gguf, &v, &d), SP_OK);
    sp_engine_opts o = sp_engine_opts_default();
    o.n_threads = 1;
    o.n_ctx = 512;
    if (kv_tokens > 0) {
        o.kv_tokens = kv_tokens;
        snprintf(o.admission, sizeof o.admission, "aggressive");
        o.max_batch_tokens = 48;
    }
    sp_engine *e;
    assert_int_equal(sp_engine_create(m, v, &o, &e, &d), SP_OK);
    sp_request *reqs[16];
    assert_true(n <= 16);
    const char *prompt = "Once upon a time, there was a little girl who wrote a list:";
    sp_tokens toks;
    sp_tokens_init(&toks);
    assert_int_equal(sp_tok_encode(v, prompt, strlen(prompt), true, false, &toks, &d), SP_OK);
    for (int i = 0; i < n; i++) {
        sp_req_params p = sp_req_params_default();
        p.max_tokens = max_tokens;
        p.sample.temperature = i == 0 ? 0.0f : 1.2f;
        p.sample.top_k = 0;
        p.sample.top_p = 1.0f;
        p.sample.min_p = 0.0f;
        p.sample.seed = (uint64_t)i + 1;
        p.grammar = g;
        assert_int_equal(sp_request_create(v, toks.ids, (int32_t)toks.n, &p, &reqs[i], &d), SP_OK);
        assert_int_equal(sp_engine_submit(e, reqs[i], &d), SP_OK);
    }
    for (int steps = 0; sp_engine_busy(e); steps++) {
        sp_engine_step(e);
        assert_true(steps < 100000);
    }
    sp_engine_stats st;
    sp_engine_stats_get(e, &st);
    if (preemptions)
        *preemptions = st.preemptions;
    for (sp_request *r = sp_engine_take_ready(e); r;) {
        sp_request *next = sp_request_next_ready(r);
        sp_request_release(r);
        r = next;
    }
    for (int i = 0; i < n; i++) {
        sp_req_cursor cur = {0};
        sp_req_read rd;
        sp_req_token toks_out[512];
        char *buf = NULL;
        size_t len = 0, cap = 0;
        assert_int_equal(
            sp_request_read(reqs[i], &cur, toks_out, 512, NULL, NULL, &buf, &len, &cap, &rd),
            SP_OK);
        if (!buf)
            buf = calloc(1, 1);
        text[i] = buf;
        fin[i] = rd.finish;
        sp_request_release(reqs[i]);
    }
    sp_tokens_deinit(&toks);
    sp_engine_destroy(e);
    sp_vocab_destroy(v);
    sp_model_destroy(m);
    free(path);
}

static void generate(const char *model, sp_grammar *g, int n, int32_t max_tokens, char **text,
                     sp_finish *fin) {
    generate_kv(model, g, n, max_tokens, 0, text, fin, NULL);
}

/* The model's outputs under the JSON object grammar: each that ends is an object that parses;
 * each cut short by max_tokens is a prefix of one (the matcher takes its text whole). */
static void test_json_output(void **s) {
    (void)s;
    sp_grammar *g;
    sp_diag d;
    sp_diag_clear(&d);
    assert_int_equal(sp_grammar_json_object(&g, &d), SP_OK);
    enum { N = 8 };
    char *text[N];
    sp_finish fin[N];
    generate("models/stories260K.gguf", g, N, 200, text, fin);
    for (int i = 0; i < N; i++) {
        json_error_t je;
        json_t *j = json_loads(text[i], JSON_DECODE_ANY, &je);
        print_message("%s: %.100s\n", sp_finish_name(fin[i]), text[i]);
        if (fin[i] == SP_FINISH_STOP) {
            if (!j || !json_is_object(j))
                fail_msg("not a JSON object: %s (%s)", text[i], je.text);
        } else {
            assert_int_equal(fin[i], SP_FINISH_LENGTH);
            assert_null(j); // unfinished
            sp_matcher *m;
            bool ok;
            assert_int_equal(sp_matcher_create(g, &m), SP_OK);
            assert_int_equal(sp_matcher_accept(m, (const uint8_t *)text[i], strlen(text[i]), &ok),
                             SP_OK);
            assert_true(ok);
            sp_matcher_destroy(m);
        }
        json_decref(j);
        free(text[i]);
    }
    // Without the grammar the same model writes no JSON.
    generate("models/stories260K.gguf", NULL, 2, 60, text, fin);
    for (int i = 0; i < 2; i++) {
        json_t *j = json_loads(text[i], JSON_DECODE_ANY, NULL);
        assert_null(j);
        free(text[i]);
    }
    sp_grammar_release(g);
}

/* A grammar of bounded JSON records: every output ends, and parses, with the fields the
 * grammar names. */
static void test_json_records(void **s) {
    (void)s;
    const char *gbnf =
        "root ::= \"{\" ws \"\\\"name\\\":\" ws str \",\" ws \"\\\"age\\\":\" ws age "
        "\",\" ws \"\\\"pets\\\":\" ws \"[\" (str (\",\" ws str){0,2})? \"]\" ws \"}\"\n"
        "str ::= \"\\\"\" [a-zA-Z ]{1,12} \"\\\"\"\n"
        "age ::= [1-9] [0-9]?\n"
        "ws ::= \" \"?\n";
    sp_grammar *g;
    sp_diag d;
    sp_diag_clear(&d);
    if (sp_grammar_from_gbnf(gbnf, strlen(gbnf), &g, &d))
        fail_msg("%s", d.msg);
    enum { N = 8 };
    char *text[N];
    sp_finish fin[N];
    generate("models/stories260K.gguf", g, N, 120, text, fin);
    for (int i = 0; i < N; i++) {
        print_message("%s: %s\n", sp_finish_name(fin[i]), text[i]);
        assert_int_equal(fin[i], SP_FINISH_STOP);
        json_error_t je;
        json_t *j = json_loads(text[i], 0, &je);
        if (!j)
            fail_msg("not JSON: %s (%s)", text[i], je.text);
        assert_true(json_is_string(json_object_get(j, "name")));
        assert_true(json_integer_value(json_object_get(j, "age")) >= 1);
        assert_true(json_array_size(json_object_get(j, "pets")) <= 3);
        json_decref(j);
        free(text[i]);
    }
    sp_grammar_release(g);
}

/* Requests preempted and recomputed under a grammar write what they write with all the memory
 * they need: the matcher keeps its state through the recompute (it has taken every token
 * generated so far), and the outputs are those of the grammar still. */
static void test_preempted_output(void **s) {
    (void)s;
    sp_grammar *g;
    sp_diag d;
    sp_diag_clear(&d);
    assert_int_equal(sp_grammar_json_object(&g, &d), SP_OK);
    enum { N = 8 };
    char *text[N], *tight[N];
    sp_finish fin[N], fin_tight[N];
    uint64_t preemptions = 0;
    generate("models/stories260K.gguf", g, N, 100, text, fin);
    generate_kv("models/stories260K.gguf", g, N, 100, 10 * 16, tight, fin_tight, &preemptions);
    print_message("%llu preemptions\n", (unsigned long long)preemptions);
    assert_true(preemptions > 0);
    for (int i = 0; i < N; i++) {
        assert_string_equal(tight[i], text[i]);
        assert_int_equal(fin_tight[i], fin[i]);
        free(text[i]);
        free(tight[i]);
    }
    sp_grammar_release(g);
}

static void test_gbnf_output(void **s) {
    (void)s;
    const char *gbnf = "root ::= (\"yes\" | \"no\" | \"maybe, \" [0-9] [0-9]? \" times\") \".\"\n";
    sp_grammar *g;
    sp_diag d;
    sp_diag_clear(&d);
    assert_int_equal(sp_grammar_from_gbnf(gbnf, strlen(gbnf), &g, &d), SP_OK);
    enum { N = 8 };
    char *text[N];
    sp_finish fin[N];
    generate("models/TinyStories-656K-Q8_0.gguf", g, N, 64, text, fin);
    for (int i = 0; i < N; i++) {
        print_message("%s: %s\n", sp_finish_name(fin[i]), text[i]);
        assert_int_equal(fin[i], SP_FINISH_STOP);
        bool ok = !strcmp(text[i], "yes.") || !strcmp(text[i], "no.");
        if (!strncmp(text[i], "maybe, ", 7)) {
            const char *p = text[i] + 7;
            ok = p[0] >= '0' && p[0] <= '9';
            p += 1 + (p[1] >= '0' && p[1] <= '9');
            ok = ok && !strcmp(p, " times.");
        }
        if (!ok)
            fail_msg("not a sentence of the grammar: \"%s\"", text[i]);
        free(text[i]);
    }
    sp_grammar_release(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_masks_llama_spm), cmocka_unit_test(test_masks_gpt2),
        cmocka_unit_test(test_json_output),     cmocka_unit_test(test_json_records),
        cmocka_unit_test(test_gbnf_output),     cmocka_unit_test(test_preempted_output),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

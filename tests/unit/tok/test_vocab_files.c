/* Tokenizers against llama.cpp's own reference data in ../shared:
 *  - vocab/X.gguf.inp / .out: llama.cpp's test-tokenizer-0 cases (add_special = false,
 *    parse_special = false), read exactly as test-tokenizer-0.cpp reads them;
 *  - models/golden-greedy.json and models/random/MODEL.golden.json: prompt token ids from
 *    llama-server's /tokenize (add_special = true, parse_special = true). */
#include "testutil.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "gguf/gguf.h"
#include "tok/tok.h"

static sp_vocab *load_vocab(const char *rel) {
    char *path = sp_test_shared(rel);
    sp_gguf *g = NULL;
    sp_diag d;
    sp_diag_clear(&d);
    sp_err e = sp_gguf_open(path, &g, &d);
    if (e)
        fail_msg("%s: %s: %s", path, sp_err_str(e), d.msg);
    sp_vocab *v = NULL;
    e = sp_vocab_load(g, &v, &d);
    if (e)
        fail_msg("%s: vocab: %s: %s", path, sp_err_str(e), d.msg);
    sp_gguf_close(g); // the vocabulary must not borrow from the file
    free(path);
    return v;
}

/* One test case: input bytes and expected ids. */
typedef struct vcase {
    char *text;
    size_t len;
    sp_token *ids;
    size_t n_ids;
} vcase;

/* Reads X.inp/X.out as llama.cpp's read_tests(): inputs separated by
 * "\n__ggml_vocab_test__\n" (a trailing separator ends the list), one line of ids per input,
 * each line stripped and split on spaces. */
static size_t read_cases(const char *vocab_rel, vcase **out) {
    char rel[256];
    snprintf(rel, sizeof rel, "%s.inp", vocab_rel);
    char *p_inp = sp_test_shared(rel);
    snprintf(rel, sizeof rel, "%s.out", vocab_rel);
    char *p_out = sp_test_shared(rel);
    size_t n_inp, n_out;
    char *inp = sp_test_read_file(p_inp, &n_inp);
    char *outs = sp_test_read_file(p_out, &n_out);

    const char *sep = "\n__ggml_vocab_test__\n";
    const size_t sep_n = strlen(sep);
    vcase *cases = NULL;
    size_t n = 0;
    for (size_t pos = 0; pos < n_inp;) {
        const char *next = memmem(inp + pos, n_inp - pos, sep, sep_n);
        size_t end = next ? (size_t)(next - inp) : n_inp;
        cases = realloc(cases, (n + 1) * sizeof *cases);
        assert_non_null(cases);
        cases[n].len = end - pos;
        cases[n].text = malloc(cases[n].len + 1);
        memcpy(cases[n].text, inp + pos, cases[n].len);
        cases[n].text[cases[n].len] = '\0';
        cases[n].ids = NULL;
        cases[n].n_ids = 0;
        n++;
        if (!next)
            break;
        pos = end + sep_n;
    }

    size_t line = 0;
    for (char *s = outs; *s; line++) {
        char *nl = strchr(s, '\n');
        if (nl)
            *nl = '\0';
        assert_true(line < n);
        for (char *q = s; *q;) {
            while (*q == ' ' || *q == '\t' || *q == '\r')
                q++;
            if (!*q)
                break;
            char *endp;
            long id = strtol(q, &endp, 10);
            assert_true(endp != q);
            cases[line].ids = realloc(cases[line].ids, (cases[line].n_ids + 1) * sizeof(sp_token));
            cases[line].ids[cases[line].n_ids++] = (sp_token)id;
            q = endp;
        }
        if (!nl)
            break;
        s = nl + 1;
    }
    assert_int_equal(line, n); // as many output lines as inputs
    free(inp);
    free(outs);
    free(p_inp);
    free(p_out);
    *out = cases;
    return n;
}

static void free_cases(vcase *c, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(c[i].text);
        free(c[i].ids);
    }
    free(c);
}

static void print_ids(const char *what, const sp_token *ids, size_t n) {
    fprintf(stderr, "  %s:", what);
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
}

/* True if llama.cpp's clean_up_tokenization_spaces would change s (" ?", " !", " .", " ,",
 * " ' ", " 's", " 'm", " 're", " 've"): such text cannot come back from a vocabulary that cleans
 * up spaces. */
static bool cleanup_applies(const char *s) {
    static const char *const pats[] = {" ?", " !", " .", " ,", " ' ", " 's", " 'm", " 're", " 've"};
    for (size_t i = 0; i < SP_ARRAY_LEN(pats); i++)
        if (strstr(s, pats[i]))
            return true;
    return false;
}

/* Every case tokenizes to the expected ids; returns the number of cases. With `roundtrip`,
 * decoding the expected ids gives the input back (where the vocabulary's clean-up allows). */
static size_t check_vocab_cases(const char *vocab_rel, bool roundtrip) {
    sp_vocab *v = load_vocab(vocab_rel);
    vcase *cases;
    size_t n = read_cases(vocab_rel, &cases);
    // llama.cpp cleans up spaces on decode for BPE vocabularies except these pre-tokenizers
    bool clean = sp_vocab_get_type(v) == SP_VOCAB_BPE && !strstr(vocab_rel, "deepseek");
    assert_true(n > 10);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        sp_tokens t;
        sp_tokens_init(&t);
        sp_diag d;
        assert_int_equal(sp_tok_encode(v, cases[i].text, cases[i].len, false, false, &t, &d),
                         SP_OK);
        bool ok = t.n == cases[i].n_ids &&
                  (t.n == 0 || memcmp(t.ids, cases[i].ids, t.n * sizeof(sp_token)) == 0);
        if (!ok) {
            fprintf(stderr, "%s case %zu '%s'\n", vocab_rel, i, cases[i].text);
            print_ids("expected", cases[i].ids, cases[i].n_ids);
            print_ids("got     ", t.ids, t.n);
            bad++;
        }
        if (roundtrip && !(cleanup_applies(cases[i].text) && clean)) {
            char *s;
            size_t len;
            assert_int_equal(sp_tok_decode(v, cases[i].ids, cases[i].n_ids, 0, &s, &len, &d),
                             SP_OK);
            if (len != cases[i].len || memcmp(s, cases[i].text, len) != 0) {
                fprintf(stderr, "%s case %zu decodes to '%s' not '%s'\n", vocab_rel, i, s,
                        cases[i].text);
                bad++;
            }
            free(s);
        }
        sp_tokens_deinit(&t);
    }
    free_cases(cases, n);
    sp_vocab_destroy(v);
    assert_int_equal(bad, 0);
    return n;
}

static void test_llama_spm_cases(void **state) {
    (void)state;
    check_vocab_cases("vocab/ggml-vocab-llama-spm.gguf", true);
}

static void test_phi3_cases(void **state) {
    (void)state;
    check_vocab_cases("vocab/ggml-vocab-phi-3.gguf", true);
}

static void test_gpt2_cases(void **state) {
    (void)state;
    check_vocab_cases("vocab/ggml-vocab-gpt-2.gguf", true);
}

static void test_deepseek_coder_cases(void **state) {
    (void)state;
    check_vocab_cases("vocab/ggml-vocab-deepseek-coder.gguf", true);
}

static void test_deepseek_llm_cases(void **state) {
    (void)state;
    check_vocab_cases("vocab/ggml-vocab-deepseek-llm.gguf", true);
}

static void test_falcon_cases(void **state) {
    (void)state;
    check_vocab_cases("vocab/ggml-vocab-falcon.gguf", true);
}

static void test_starcoder_cases(void **state) {
    (void)state;
    check_vocab_cases("vocab/ggml-vocab-starcoder.gguf", true);
}

/* prompt_tokens of every entry of a golden file, tokenized as llama-server's /tokenize. */
static size_t check_prompts(sp_vocab *v, json_t *entries) {
    size_t i, n = 0;
    json_t *e;
    json_array_foreach(entries, i, e) {
        const char *prompt = json_string_value(json_object_get(e, "prompt"));
        json_t *want = json_object_get(e, "prompt_tokens");
        assert_non_null(prompt);
        assert_true(json_is_array(want));
        sp_tokens t;
        sp_tokens_init(&t);
        sp_diag d;
        assert_int_equal(sp_tok_encode(v, prompt, strlen(prompt), true, true, &t, &d), SP_OK);
        bool ok = t.n == json_array_size(want);
        for (size_t k = 0; ok && k < t.n; k++)
            ok = t.ids[k] == json_integer_value(json_array_get(want, k));
        if (!ok) {
            fprintf(stderr, "prompt '%s'\n", prompt);
            print_ids("got", t.ids, t.n);
        }
        assert_true(ok);
        sp_tokens_deinit(&t);
        n++;
    }
    return n;
}

static void test_golden_greedy_prompts(void **state) {
    (void)state;
    char *path = sp_test_shared("models/golden-greedy.json");
    json_t *root = sp_test_load_json(path);
    json_t *models = json_object_get(root, "models");
    const char *name;
    json_t *entries;
    size_t n_models = 0, n = 0;
    json_object_foreach(models, name, entries) {
        char rel[256];
        snprintf(rel, sizeof rel, "models/%s", name);
        sp_vocab *v = load_vocab(rel);
        n += check_prompts(v, entries);
        sp_vocab_destroy(v);
        n_models++;
    }
    assert_int_equal(n_models, 3);
    assert_int_equal(n, 9);
    json_decref(root);
    free(path);
}

static void check_random_golden(const char *model) {
    char rel[256];
    snprintf(rel, sizeof rel, "models/random/%s.golden.json", model);
    char *path = sp_test_shared(rel);
    json_t *root = sp_test_load_json(path);
    snprintf(rel, sizeof rel, "models/random/%s.gguf", model);
    sp_vocab *v = load_vocab(rel);
    assert_true(check_prompts(v, json_object_get(root, "entries")) >= 4);
    sp_vocab_destroy(v);
    json_decref(root);
    free(path);
}

static void test_random_spm_prompts(void **state) {
    (void)state;
    check_random_golden("llama-spm-q4k");
    check_random_golden("llama3rope-spm-f16");
    check_random_golden("phi3-spm-f32");
}

/* GPT-2 vocabulary (pre = "gpt-2", no add_bos_token key: no BOS) in the Qwen2 model. */
static void test_random_bpe_prompts(void **state) {
    (void)state;
    check_random_golden("qwen2-gpt2vocab-f32");
}

static sp_token tok_id(const sp_vocab *v, const char *text) {
    sp_token t = sp_vocab_find(v, text, strlen(text));
    assert_int_not_equal(t, SP_TOKEN_NULL);
    return t;
}

/* A continuation's text gives its tokens back: the canonical tokens of a sentence, cut anywhere,
 * decoded without stripping a space, re-encode as a continuation to the tokens after the cut
 * (where a prompt's encoding would add SentencePiece's space prefix), on an SPM and a BPE
 * vocabulary. */
static void test_continuation(void **state) {
    (void)state;
    const char *files[] = {"vocab/ggml-vocab-llama-spm.gguf", "vocab/ggml-vocab-gpt-2.gguf"};
    const char *text = "Once upon a time, \"Here?\" said Anna. The dog ran away quickly!";
    for (size_t f = 0; f < SP_ARRAY_LEN(files); f++) {
        sp_vocab *v = load_vocab(files[f]);
        sp_tokens all, cont;
        sp_tokens_init(&all);
        sp_tokens_init(&cont);
        sp_diag d;
        assert_int_equal(sp_tok_encode(v, text, strlen(text), false, false, &all, &d), SP_OK);
        char *full = NULL;
        size_t full_len = 0;
        assert_int_equal(sp_tok_decode(v, all.ids, all.n, 0, &full, &full_len, &d), SP_OK);
        for (size_t cut = 1; cut < all.n; cut++) {
            // The text after the cut: the whole text less the text before it.
            char *head = NULL;
            size_t head_len = 0;
            assert_int_equal(sp_tok_decode(v, all.ids, cut, 0, &head, &head_len, &d), SP_OK);
            assert_memory_equal(full, head, head_len);
            const char *tail = full + head_len;
            const size_t len = full_len - head_len;
            free(head);
            cont.n = 0;
            assert_int_equal(sp_tok_encode_continuation(v, tail, len, &cont, &d), SP_OK);
            if (cont.n != all.n - cut || memcmp(cont.ids, all.ids + cut, cont.n * sizeof *cont.ids))
                fail_msg("%s: the continuation '%s' (cut %zu) gives other tokens", files[f], tail,
                         cut);
        }
        free(full);
        sp_tokens_deinit(&all);
        sp_tokens_deinit(&cont);
        sp_vocab_destroy(v);
    }
}

/* models/README.md: stories260K's vocabulary, facts about specials and byte tokens. */
static void test_stories260k_vocab(void **state) {
    (void)state;
    sp_vocab *v = load_vocab("models/stories260K.gguf");
    assert_int_equal(sp_vocab_n_tokens(v), 512);
    assert_int_equal(sp_vocab_get_type(v), SP_VOCAB_SPM);
    assert_int_equal(sp_vocab_bos(v), 1);
    assert_int_equal(sp_vocab_eos(v), 2);
    assert_int_equal(sp_vocab_unk(v), 0);
    assert_int_equal(sp_vocab_pad(v), SP_TOKEN_NULL); // 4294967295 in the file: out of range
    assert_true(sp_vocab_add_bos(v));                 // key absent: llama.cpp's default
    assert_false(sp_vocab_add_eos(v));
    assert_true(sp_vocab_is_eog(v, 2));
    assert_false(sp_vocab_is_eog(v, 1));
    assert_true(sp_vocab_is_control(v, 1));
    // ids 3..258 are <0x00>..<0xFF>: id = byte + 3
    for (int b = 0; b < 256; b++) {
        char piece[4];
        assert_int_equal(sp_tok_piece(v, b + 3, false, piece, sizeof piece), 1);
        assert_int_equal((unsigned char)piece[0], b);
    }
    // a byte outside every merged piece falls back to its byte token: "\x01" -> <0x01> = 4
    sp_tokens t;
    sp_tokens_init(&t);
    assert_int_equal(sp_tok_encode(v, "\x01", 1, false, false, &t, NULL), SP_OK);
    assert_int_equal(t.n, 2);
    assert_int_equal(t.ids[0], tok_id(v, "\xe2\x96\x81")); // the space prefix
    assert_int_equal(t.ids[1], 4);
    sp_tokens_deinit(&t);
    // README: prompt tokens [1, 403, 407, 261, 378] = <s>, ▁Once, ▁upon, ▁a, ▁time
    assert_int_equal(tok_id(v, "\xe2\x96\x81Once"), 403);
    char *s;
    size_t len;
    const sp_token ids[] = {1, 403, 407, 261, 378};
    assert_int_equal(sp_tok_decode(v, ids, 5, 0, &s, &len, NULL), SP_OK);
    // llama.cpp keeps the space after a BOS it does not remove
    assert_string_equal(s, " Once upon a time");
    free(s);
    assert_int_equal(sp_tok_decode(v, ids, 5, SP_DECODE_REMOVE_SPECIAL, &s, &len, NULL), SP_OK);
    assert_string_equal(s, " Once upon a time");
    free(s);
    assert_int_equal(sp_tok_decode(v, ids + 1, 4, 0, &s, &len, NULL), SP_OK);
    assert_string_equal(s, "Once upon a time");
    free(s);
    assert_int_equal(sp_tok_decode(v, ids, 5, SP_DECODE_SPECIAL, &s, &len, NULL), SP_OK);
    assert_string_equal(s, "<s> Once upon a time");
    free(s);
    sp_vocab_destroy(v);
}

/* models/README.md, "Caveat: characters outside the vocab": TinyStories-656K has no byte
 * tokens and lacks '~' and 'é'; Hugging Face (whose tokenizer.json has fuse_unk = true) maps
 * them to <unk> (id 0), one per run of unknown characters. */
static void test_tinystories_unknown_chars(void **state) {
    (void)state;
    sp_vocab *v = load_vocab("models/TinyStories-656K-F32.gguf");
    assert_int_equal(sp_vocab_unk(v), 0);
    assert_int_equal(sp_vocab_find(v, "~", 1), SP_TOKEN_NULL);
    assert_int_equal(sp_vocab_find(v, "\xc3\xa9", 2), SP_TOKEN_NULL);
    assert_int_equal(sp_vocab_find(v, "<0x7E>", 6), SP_TOKEN_NULL);

    const char *texts[] = {"~", "caf\xc3\xa9", "a ~~ b", "\xc3\xa9~\xc3\xa9"};
    const size_t want_unk[] = {1, 1, 1, 1};
    for (size_t k = 0; k < SP_ARRAY_LEN(texts); k++) {
        sp_tokens t;
        sp_tokens_init(&t);
        sp_diag d;
        assert_int_equal(sp_tok_encode(v, texts[k], strlen(texts[k]), true, true, &t, &d), SP_OK);
        assert_int_equal(t.ids[0], 1); // BOS
        size_t n_unk = 0;
        for (size_t i = 0; i < t.n; i++)
            n_unk += t.ids[i] == 0;
        assert_int_equal(n_unk, want_unk[k]);
        // the rest of the text is still tokenized: the known characters survive a decode
        char *s;
        size_t len;
        assert_int_equal(sp_tok_decode(v, t.ids, t.n, 0, &s, &len, &d), SP_OK);
        if (k == 2)
            assert_string_equal(s, " a  b"); // <unk> renders as nothing
        free(s);
        sp_tokens_deinit(&t);
    }
    // the ordinary prompt still matches llama.cpp
    sp_tokens t;
    sp_tokens_init(&t);
    assert_int_equal(sp_tok_encode(v, "Once upon a time", 16, true, true, &t, NULL), SP_OK);
    const sp_token want[] = {1, 80, 147, 201, 282, 57};
    assert_int_equal(t.n, 6);
    assert_memory_equal(t.ids, want, sizeof want);
    sp_tokens_deinit(&t);
    sp_vocab_destroy(v);
}

/* GPT-2: <|endoftext|> (50256, control) is one token only with parse_special; otherwise its
 * text goes through BPE like any other. Decoding hides it unless asked. */
static void test_gpt2_special(void **state) {
    (void)state;
    sp_vocab *v = load_vocab("vocab/ggml-vocab-gpt-2.gguf");
    assert_int_equal(sp_vocab_eos(v), 50256);
    assert_true(sp_vocab_is_eog(v, 50256));
    assert_false(sp_vocab_add_bos(v)); // no add_bos_token key in the file
    const char *text = "Hi<|endoftext|>there";
    sp_tokens t;
    sp_tokens_init(&t);
    assert_int_equal(sp_tok_encode(v, text, strlen(text), true, true, &t, NULL), SP_OK);
    assert_int_equal(t.n, 3);
    assert_int_equal(t.ids[0], tok_id(v, "Hi"));
    assert_int_equal(t.ids[1], 50256);
    assert_int_equal(t.ids[2], tok_id(v, "there"));
    char *s;
    size_t len;
    assert_int_equal(sp_tok_decode(v, t.ids, t.n, 0, &s, &len, NULL), SP_OK);
    assert_string_equal(s, "Hithere");
    free(s);
    assert_int_equal(sp_tok_decode(v, t.ids, t.n, SP_DECODE_SPECIAL, &s, &len, NULL), SP_OK);
    assert_string_equal(s, text);
    free(s);
    t.n = 0;
    assert_int_equal(sp_tok_encode(v, text, strlen(text), true, false, &t, NULL), SP_OK);
    assert_true(t.n > 3);
    for (size_t i = 0; i < t.n; i++)
        assert_int_not_equal(t.ids[i], 50256);
    assert_int_equal(sp_tok_decode(v, t.ids, t.n, 0, &s, &len, NULL), SP_OK);
    assert_string_equal(s, text);
    free(s);
    sp_tokens_deinit(&t);
    sp_vocab_destroy(v);
}

typedef struct job {
    const sp_vocab *v;
    const char *text;
    size_t len;
    const sp_tokens *ref;
    bool ok;
} job;

static void *worker(void *arg) {
    job *j = arg;
    j->ok = true;
    for (int it = 0; it < 20 && j->ok; it++) {
        sp_tokens t;
        sp_tokens_init(&t);
        j->ok = sp_tok_encode(j->v, j->text, j->len, true, true, &t, NULL) == SP_OK &&
                t.n == j->ref->n && memcmp(t.ids, j->ref->ids, t.n * sizeof *t.ids) == 0;
        sp_tokens_deinit(&t);
    }
    return NULL;
}

/* Concurrent encodes of llama.cpp's test text on one vocabulary (PCRE2 matching included) give
 * the single-threaded ids. */
static void test_concurrent_encode(void **state) {
    (void)state;
    static const char *const vocabs[] = {"vocab/ggml-vocab-deepseek-llm.gguf",
                                         "vocab/ggml-vocab-phi-3.gguf"};
    char *path = sp_test_shared("vocab/ggml-vocab-gpt-2.gguf.inp");
    size_t len;
    char *text = sp_test_read_file(path, &len);
    for (size_t k = 0; k < SP_ARRAY_LEN(vocabs); k++) {
        sp_vocab *v = load_vocab(vocabs[k]);
        sp_tokens ref;
        sp_tokens_init(&ref);
        assert_int_equal(sp_tok_encode(v, text, len, true, true, &ref, NULL), SP_OK);
        assert_true(ref.n > 500);
        pthread_t th[4];
        job jobs[4];
        for (int i = 0; i < 4; i++) {
            jobs[i] = (job){v, text, len, &ref, false};
            assert_int_equal(pthread_create(&th[i], NULL, worker, &jobs[i]), 0);
        }
        for (int i = 0; i < 4; i++) {
            pthread_join(th[i], NULL);
            assert_true(jobs[i].ok);
        }
        sp_tokens_deinit(&ref);
        sp_vocab_destroy(v);
    }
    free(text);
    free(path);
}

static void test_invalid_utf8(void **state) {
    (void)state;
    sp_vocab *v = load_vocab("vocab/ggml-vocab-llama-spm.gguf");
    static const struct {
        const char *s;
        size_t len, off;
    } bad[] = {
        {"abc\xff", 4, 3},      {"ab\xc3", 3, 2},              // stray byte, truncated
        {"\xc0\xaf", 2, 0},     {"x\xe0\x80\xaf", 4, 1},       // overlong
        {"\xed\xa0\x80", 3, 0}, {"ok \xf4\x90\x80\x80", 7, 3}, // surrogate, > U+10FFFF
        {"\x80", 1, 0},         {"h\xe2\x82", 3, 1},
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(bad); i++) {
        sp_tokens t;
        sp_tokens_init(&t);
        assert_int_equal(sp_tokens_push(&t, 7), SP_OK);
        sp_diag d;
        sp_diag_clear(&d);
        assert_int_equal(sp_tok_encode(v, bad[i].s, bad[i].len, true, true, &t, &d), SP_ERR_UTF8);
        assert_int_equal(d.offset, bad[i].off);
        assert_int_equal(t.n, 1); // unchanged on failure
        sp_tokens_deinit(&t);
    }
    sp_vocab_destroy(v);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama_spm_cases),    cmocka_unit_test(test_phi3_cases),
        cmocka_unit_test(test_gpt2_cases),         cmocka_unit_test(test_deepseek_coder_cases),
        cmocka_unit_test(test_deepseek_llm_cases), cmocka_unit_test(test_falcon_cases),
        cmocka_unit_test(test_starcoder_cases),    cmocka_unit_test(test_golden_greedy_prompts),
        cmocka_unit_test(test_random_spm_prompts), cmocka_unit_test(test_random_bpe_prompts),
        cmocka_unit_test(test_stories260k_vocab),
        cmocka_unit_test(test_continuation),  cmocka_unit_test(test_tinystories_unknown_chars),
        cmocka_unit_test(test_gpt2_special),       cmocka_unit_test(test_concurrent_encode),
        cmocka_unit_test(test_invalid_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

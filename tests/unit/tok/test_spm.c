/* The SentencePiece-style tokenizer on small hand-made vocabularies, one rule of llama.cpp's
 * llm_tokenizer_spm / tokenizer_st_partition / token_to_piece / detokenize per test. */
#include "testutil.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "tok/tok.h"

#define SP "\xe2\x96\x81" // ▁

typedef struct tdef {
    const char *text;
    float score;
    int32_t type; // GGUF token type
} tdef;

/* A vocabulary with <unk>, <s>, </s> at 0..2 followed by `defs`. */
static sp_vocab *make(const tdef *defs, size_t n, const char *name, int8_t add_eos) {
    sp_str *tokens = calloc(n + 3, sizeof *tokens);
    float *scores = calloc(n + 3, sizeof *scores);
    int32_t *types = calloc(n + 3, sizeof *types);
    const tdef base[3] = {{"<unk>", 0, 2}, {"<s>", 0, 3}, {"</s>", 0, 3}};
    for (size_t i = 0; i < n + 3; i++) {
        const tdef *d = i < 3 ? &base[i] : &defs[i - 3];
        tokens[i] = (sp_str){d->text, strlen(d->text)};
        scores[i] = d->score;
        types[i] = d->type;
    }
    sp_vocab_spec spec;
    sp_vocab_spec_init(&spec);
    spec.model = (sp_str){"llama", 5};
    spec.name = (sp_str){name, strlen(name)};
    spec.n_tokens = (uint32_t)(n + 3);
    spec.tokens = tokens;
    spec.scores = scores;
    spec.types = types;
    spec.add_eos = add_eos;
    sp_vocab *v = NULL;
    sp_diag d;
    sp_err e = sp_vocab_build(&spec, &v, &d);
    if (e)
        fail_msg("build: %s: %s", sp_err_str(e), d.msg);
    free(types);
    free(scores);
    free(tokens);
    return v;
}

static sp_token id_of(const sp_vocab *v, const char *s) {
    sp_token t = sp_vocab_find(v, s, strlen(s));
    if (t == SP_TOKEN_NULL)
        fail_msg("no token '%s'", s);
    return t;
}

/* Encodes and compares with the token texts listed in `want` (NULL-terminated). */
static void expect(const sp_vocab *v, const char *text, bool add_special, bool parse_special,
                   const char *const *want) {
    sp_tokens t;
    sp_tokens_init(&t);
    sp_diag d;
    assert_int_equal(sp_tok_encode(v, text, strlen(text), add_special, parse_special, &t, &d),
                     SP_OK);
    size_t n = 0;
    while (want[n])
        n++;
    bool ok = t.n == n;
    for (size_t i = 0; ok && i < n; i++)
        ok = t.ids[i] == id_of(v, want[i]);
    if (!ok) {
        fprintf(stderr, "'%s' gave:", text);
        for (size_t i = 0; i < t.n; i++)
            fprintf(stderr, " '%s'", sp_vocab_token_text(v, t.ids[i]).ptr);
        fprintf(stderr, "\n");
    }
    assert_true(ok);
    sp_tokens_deinit(&t);
}

#define W(...) ((const char *const[]){__VA_ARGS__, NULL})

static char *decode(const sp_vocab *v, const char *const *texts, unsigned flags) {
    sp_token ids[32];
    size_t n = 0;
    for (; texts[n]; n++)
        ids[n] = id_of(v, texts[n]);
    char *s;
    size_t len;
    assert_int_equal(sp_tok_decode(v, ids, n, flags, &s, &len, NULL), SP_OK);
    assert_int_equal(strlen(s), len);
    return s;
}

static const tdef letters[] = {
    {SP, -5, 1},   {"a", -5, 1},  {"b", -5, 1},  {"c", -5, 1},    {"d", -5, 1},
    {"ab", -2, 1}, {"bc", -1, 1}, {"aa", -3, 1}, {SP "a", -4, 1}, {"cd", -1, 1},
};

/* The highest-scoring pair merges first; here "bc" (-1) beats "ab" (-2). */
static void test_score_order(void **state) {
    (void)state;
    sp_vocab *v = make(letters, SP_ARRAY_LEN(letters), "t", -1);
    expect(v, "abc", false, false, W(SP "a", "bc"));
    expect(v, "bab", false, false, W(SP, "b", "ab"));
    // after "bc" and "cd" tie at -1, the leftmost goes first: "b"+"c", then "d" stays alone
    expect(v, "bcd", false, false, W(SP, "bc", "d"));
    sp_vocab_destroy(v);
}

/* Equal scores: the leftmost pair first ("aa" then "a", not "a" then "aa"). */
static void test_leftmost_tie(void **state) {
    (void)state;
    sp_vocab *v = make(letters, SP_ARRAY_LEN(letters), "t", -1);
    expect(v, "aaa", false, false, W(SP, "aa", "a"));
    sp_vocab_destroy(v);
}

/* ' ' becomes ▁ and a leading ▁ is added (add_space_prefix). */
static void test_space_prefix(void **state) {
    (void)state;
    sp_vocab *v = make(letters, SP_ARRAY_LEN(letters), "t", -1);
    expect(v, "a a", false, false, W(SP "a", SP "a"));
    expect(v, " a", false, false, W(SP, SP "a"));
    sp_vocab_destroy(v);
}

/* Characters outside the vocab: byte tokens <0xNN> (uppercase hex) when present... */
static void test_byte_fallback(void **state) {
    (void)state;
    tdef defs[SP_ARRAY_LEN(letters) + 4];
    memcpy(defs, letters, sizeof letters);
    defs[SP_ARRAY_LEN(letters) + 0] = (tdef){"<0xC3>", 0, 6};
    defs[SP_ARRAY_LEN(letters) + 1] = (tdef){"<0xA9>", 0, 6};
    defs[SP_ARRAY_LEN(letters) + 2] = (tdef){"<0x78>", 0, 6};
    defs[SP_ARRAY_LEN(letters) + 3] = (tdef){"<0x0A>", 0, 6};
    sp_vocab *v = make(defs, SP_ARRAY_LEN(defs), "t", -1);
    expect(v, "\xc3\xa9\nx", false, false, W(SP, "<0xC3>", "<0xA9>", "<0x0A>", "<0x78>"));
    char piece[4];
    assert_int_equal(sp_tok_piece(v, id_of(v, "<0xC3>"), false, piece, sizeof piece), 1);
    assert_int_equal((unsigned char)piece[0], 0xC3);
    char *s = decode(v, W(SP, "<0xC3>", "<0xA9>", "<0x0A>"), 0);
    assert_string_equal(s, "\xc3\xa9\n");
    free(s);
    sp_vocab_destroy(v);
}

/* ... and <unk> otherwise, once per run of unknown characters; a character whose bytes are only
 * partly covered by byte tokens is unknown as a whole. */
static void test_unknown_fused(void **state) {
    (void)state;
    tdef defs[SP_ARRAY_LEN(letters) + 1];
    memcpy(defs, letters, sizeof letters);
    defs[SP_ARRAY_LEN(letters)] = (tdef){"<0xC3>", 0, 6};
    sp_vocab *v = make(defs, SP_ARRAY_LEN(defs), "t", -1);
    expect(v, "x", false, false, W(SP, "<unk>"));
    expect(v, "xy\xc3\xa9z", false, false, W(SP, "<unk>"));
    expect(v, "xaz", false, false, W(SP, "<unk>", "a", "<unk>"));
    expect(v, "x x", false, false, W(SP, "<unk>", SP, "<unk>"));
    sp_vocab_destroy(v);
}

static const tdef specials[] = {
    {SP, -5, 1},      {"a", -5, 1},     {"b", -5, 1},         {"c", -5, 1},           {"d", -5, 1},
    {"<0x20>", 0, 6}, {"<0x0A>", 0, 6}, {"<|end|>", 0, 3},    {"<|user|>", 0, 3},     {"ab", 0, 4},
    {"bcd", 0, 4},    {"[PAD9]", 0, 2}, {"<|im_end|>", 0, 1}, {"<|unused_1|>", 0, 3}, {"xyz", 0, 5},
};

/* Control tokens need parse_special; user-defined ones are always split out; a longer special
 * token is split out first even when a shorter one starts earlier ("abcd" -> a, bcd). After a
 * special token the next text gets the space prefix again. */
static void test_partition(void **state) {
    (void)state;
    sp_vocab *v = make(specials, SP_ARRAY_LEN(specials), "t", -1);
    expect(v, "a<|end|>b", false, true, W(SP, "a", "<|end|>", SP, "b"));
    expect(v, "abcd", false, false, W(SP, "a", "bcd"));
    expect(v, "ab<s>", false, true, W("ab", "<s>"));
    expect(v, "[PAD9]", false, true, W("[PAD9]")); // unknown-type: a special token too
    // without parse_special the control text is ordinary text: '<', '|', ... are not tokens,
    // and there are no byte tokens for them, so each run becomes one <unk> ('d' is a token)
    expect(v, "<|end|>", false, false, W(SP, "<unk>", "d", "<unk>"));
    sp_vocab_destroy(v);
}

/* BOS is added by default for "llama" vocabularies, EOS when the file asks. */
static void test_add_special(void **state) {
    (void)state;
    sp_vocab *v = make(specials, SP_ARRAY_LEN(specials), "t", 1);
    assert_true(sp_vocab_add_bos(v));
    assert_true(sp_vocab_add_eos(v));
    expect(v, "a", true, false, W("<s>", SP, "a", "</s>"));
    expect(v, "", true, false, W("<s>", "</s>"));
    expect(v, "", false, false, (const char *const[]){NULL});
    char *s = decode(v, W("<s>", "a", "</s>"), SP_DECODE_REMOVE_SPECIAL);
    assert_string_equal(s, "a");
    free(s);
    s = decode(v, W("<s>", "a", "</s>"), SP_DECODE_SPECIAL);
    assert_string_equal(s, "<s>a</s>");
    free(s);
    sp_vocab_destroy(v);
}

/* Phi-3 (by general.name): whitespace after special tokens is dropped (rstrip), except after
 * <unk>, <s> and <|endoftext|>. */
static void test_phi3_rstrip(void **state) {
    (void)state;
    sp_vocab *v = make(specials, SP_ARRAY_LEN(specials), "Phi3-mini", -1);
    assert_true(sp_vocab_token_attr(v, id_of(v, "<|user|>")) & SP_TOKEN_ATTR_RSTRIP);
    assert_false(sp_vocab_token_attr(v, id_of(v, "<s>")) & SP_TOKEN_ATTR_RSTRIP);
    expect(v, "<|user|>\n a", false, true, W("<|user|>", SP, "a"));
    expect(v, "<s> a", false, true, W("<s>", SP, SP, "a"));
    sp_vocab_destroy(v);
    v = make(specials, SP_ARRAY_LEN(specials), "t", -1);
    expect(v, "<|user|>\na", false, true, W("<|user|>", SP, "<0x0A>", "a"));
    sp_vocab_destroy(v);
}

/* Text-based fix-ups: <|im_end|> and <|end|> end generation, the former becomes control;
 * control tokens named "unused" are unused; EOS ends generation. */
static void test_eog(void **state) {
    (void)state;
    sp_vocab *v = make(specials, SP_ARRAY_LEN(specials), "t", -1);
    sp_token im_end = id_of(v, "<|im_end|>");
    assert_true(sp_vocab_is_eog(v, im_end));
    assert_true(sp_vocab_is_control(v, im_end));
    assert_true(sp_vocab_is_eog(v, id_of(v, "<|end|>")));
    assert_true(sp_vocab_is_eog(v, 2));
    assert_false(sp_vocab_is_eog(v, id_of(v, "<|user|>")));
    assert_false(sp_vocab_is_eog(v, -1));
    assert_false(sp_vocab_is_eog(v, 100000));
    assert_true(sp_vocab_token_attr(v, id_of(v, "<|unused_1|>")) & SP_TOKEN_ATTR_UNUSED);
    assert_int_equal(sp_vocab_eot(v), id_of(v, "<|end|>")); // first by id
    sp_vocab_destroy(v);
}

/* Pieces: ▁ -> space; control/unknown hidden unless special; user-defined shown; unused
 * empty. Decode drops the leading space of the first piece. */
static void test_pieces_and_decode(void **state) {
    (void)state;
    sp_vocab *v = make(specials, SP_ARRAY_LEN(specials), "t", -1);
    char buf[16];
    assert_int_equal(sp_tok_piece(v, id_of(v, SP), false, buf, sizeof buf), 1);
    assert_int_equal(buf[0], ' ');
    assert_int_equal(sp_tok_piece(v, id_of(v, "<|end|>"), false, buf, sizeof buf), 0);
    assert_int_equal(sp_tok_piece(v, id_of(v, "<|end|>"), true, buf, sizeof buf), 7);
    assert_memory_equal(buf, "<|end|>", 7);
    assert_int_equal(sp_tok_piece(v, id_of(v, "[PAD9]"), false, buf, sizeof buf), 0);
    assert_int_equal(sp_tok_piece(v, id_of(v, "ab"), false, buf, sizeof buf), 2);
    assert_int_equal(sp_tok_piece(v, id_of(v, "xyz"), true, buf, sizeof buf), 0);
    assert_int_equal(sp_tok_piece(v, -1, true, buf, sizeof buf), 0);
    assert_int_equal(sp_tok_piece(v, id_of(v, "<|end|>"), true, buf, 3), 7); // truncated copy
    char *s = decode(v, W(SP, "a", "<|end|>", SP, "b"), 0);
    assert_string_equal(s, "a b");
    free(s);
    s = decode(v, W(SP, "a", "<|end|>", SP, "b"), SP_DECODE_SPECIAL);
    assert_string_equal(s, "a<|end|> b");
    free(s);
    sp_token bad[] = {id_of(v, "a"), 99999};
    sp_diag d;
    char *out;
    size_t len;
    assert_int_equal(sp_tok_decode(v, bad, 2, 0, &out, &len, &d), SP_ERR_RANGE);
    assert_int_equal(d.offset, 1);
    sp_vocab_destroy(v);
}

static void test_build_errors(void **state) {
    (void)state;
    sp_str toks[] = {{"<unk>", 5}, {"<s>", 3}, {"</s>", 4}, {"a", 1}, {"a", 1}};
    sp_vocab_spec spec;
    sp_vocab_spec_init(&spec);
    spec.model = (sp_str){"llama", 5};
    spec.tokens = toks;
    spec.n_tokens = 5;
    sp_vocab *v = NULL;
    sp_diag d;
    assert_int_equal(sp_vocab_build(&spec, &v, &d), SP_ERR_FORMAT); // duplicate "a"
    assert_non_null(strstr(d.msg, "duplicate"));
    assert_null(v);
    spec.n_tokens = 4;
    spec.model = (sp_str){"bert", 4};
    assert_int_equal(sp_vocab_build(&spec, &v, &d), SP_ERR_UNSUPPORTED);
    spec.model = (sp_str){"llama", 5};
    spec.bos_id = 1000; // out of range: the default (1) stays
    assert_int_equal(sp_vocab_build(&spec, &v, &d), SP_OK);
    assert_int_equal(sp_vocab_bos(v), 1);
    sp_vocab_destroy(v);
    v = NULL;
    spec.n_tokens = 1; // the default BOS (1) is out of range, yet BOS is to be added
    assert_int_equal(sp_vocab_build(&spec, &v, &d), SP_ERR_FORMAT);
    spec.add_bos = 0;
    assert_int_equal(sp_vocab_build(&spec, &v, &d), SP_OK);
    assert_int_equal(sp_vocab_bos(v), SP_TOKEN_NULL);
    sp_vocab_destroy(v);
    spec.n_tokens = 0;
    assert_int_equal(sp_vocab_build(&spec, &v, &d), SP_ERR_INVALID);
}

/* Empty token texts are renamed "[EMPTY_i]" (llama.cpp), so they never match text. */
static void test_empty_token(void **state) {
    (void)state;
    const tdef defs[] = {{"", 0, 1}, {SP, 0, 1}, {"a", 0, 1}};
    sp_vocab *v = make(defs, SP_ARRAY_LEN(defs), "t", -1);
    assert_string_equal(sp_vocab_token_text(v, 3).ptr, "[EMPTY_3]");
    expect(v, "a", false, false, W(SP, "a"));
    sp_vocab_destroy(v);
}

typedef struct job {
    const sp_vocab *v;
    const char *text;
    sp_tokens ref;
    bool ok;
} job;

static void *worker(void *arg) {
    job *j = arg;
    j->ok = true;
    for (int it = 0; it < 200 && j->ok; it++) {
        sp_tokens t;
        sp_tokens_init(&t);
        if (sp_tok_encode(j->v, j->text, strlen(j->text), true, true, &t, NULL) != SP_OK ||
            t.n != j->ref.n || memcmp(t.ids, j->ref.ids, t.n * sizeof *t.ids) != 0)
            j->ok = false;
        sp_tokens_deinit(&t);
    }
    return NULL;
}

/* Concurrent encodes on one vocabulary give the single-threaded result. */
static void test_threads(void **state) {
    (void)state;
    sp_vocab *v = make(specials, SP_ARRAY_LEN(specials), "t", -1);
    const char *text = "abcd <|end|> ab a b\nc d bcd <|user|>";
    job jobs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        jobs[i].v = v;
        jobs[i].text = text;
        sp_tokens_init(&jobs[i].ref);
        assert_int_equal(sp_tok_encode(v, text, strlen(text), true, true, &jobs[i].ref, NULL),
                         SP_OK);
    }
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, worker, &jobs[i]), 0);
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_true(jobs[i].ok);
        sp_tokens_deinit(&jobs[i].ref);
    }
    sp_vocab_destroy(v);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_score_order),   cmocka_unit_test(test_leftmost_tie),
        cmocka_unit_test(test_space_prefix),  cmocka_unit_test(test_byte_fallback),
        cmocka_unit_test(test_unknown_fused), cmocka_unit_test(test_partition),
        cmocka_unit_test(test_add_special),   cmocka_unit_test(test_phi3_rstrip),
        cmocka_unit_test(test_eog),           cmocka_unit_test(test_pieces_and_decode),
        cmocka_unit_test(test_build_errors),  cmocka_unit_test(test_empty_token),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

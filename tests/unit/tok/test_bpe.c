/* Byte-level BPE on hand-made vocabularies and the pre-tokenizers on chosen strings; each
 * expectation follows from llama.cpp's rules (merge ranks, the split regexes, White_Space). */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "tok/tok.h"
#include "tok/tok_impl.h"

/* A "gpt2" vocabulary: the 256 byte symbols (GPT-2 mapping, in byte order) + extra tokens. */
static sp_vocab *make(const char *pre, const char *const *extra, const char *const *merges,
                      int8_t add_bos) {
    sp_str toks[300];
    char bytes[256][4];
    size_t n = 0;
    for (int b = 0; b < 256; b++) {
        size_t k = sp__utf8_encode(sp__gpt2_byte_to_cp((uint8_t)b), bytes[b]);
        toks[n++] = (sp_str){bytes[b], k};
    }
    for (; *extra; extra++)
        toks[n++] = (sp_str){*extra, strlen(*extra)};
    sp_str m[32];
    size_t nm = 0;
    for (; *merges; merges++)
        m[nm++] = (sp_str){*merges, strlen(*merges)};
    sp_vocab_spec spec;
    sp_vocab_spec_init(&spec);
    spec.model = (sp_str){"gpt2", 4};
    spec.pre = (sp_str){pre, strlen(pre)};
    spec.n_tokens = (uint32_t)n;
    spec.tokens = toks;
    spec.merges = m;
    spec.n_merges = nm;
    spec.add_bos = add_bos;
    sp_vocab *v = NULL;
    sp_diag d;
    sp_err e = sp_vocab_build(&spec, &v, &d);
    if (e)
        fail_msg("build: %s", d.msg);
    return v;
}

#define L(...) ((const char *const[]){__VA_ARGS__, NULL})
#define NONE   ((const char *const[]){NULL})

static void expect(const sp_vocab *v, const char *text, const char *const *want) {
    sp_tokens t;
    sp_tokens_init(&t);
    assert_int_equal(sp_tok_encode(v, text, strlen(text), true, false, &t, NULL), SP_OK);
    size_t n = 0;
    while (want[n])
        n++;
    bool ok = t.n == n;
    for (size_t i = 0; ok && i < n; i++)
        ok = t.ids[i] == sp_vocab_find(v, want[i], strlen(want[i]));
    if (!ok) {
        fprintf(stderr, "'%s' gave:", text);
        for (size_t i = 0; i < t.n; i++)
            fprintf(stderr, " '%s'", sp_vocab_token_text(v, t.ids[i]).ptr);
        fprintf(stderr, "\n");
    }
    assert_true(ok);
    sp_tokens_deinit(&t);
}

/* The GPT-2 byte mapping: printable bytes stand for themselves, the rest shift to 256... */
static void test_byte_mapping(void **state) {
    (void)state;
    assert_int_equal(sp__gpt2_byte_to_cp('!'), '!');
    assert_int_equal(sp__gpt2_byte_to_cp(0), 256);
    assert_int_equal(sp__gpt2_byte_to_cp(' '), 0x120);  // Ġ
    assert_int_equal(sp__gpt2_byte_to_cp('\n'), 0x10A); // Ċ
    assert_int_equal(sp__gpt2_byte_to_cp(0xAD), 0x143); // the last one
    for (int b = 0; b < 256; b++)
        assert_int_equal(sp__gpt2_cp_to_byte(sp__gpt2_byte_to_cp((uint8_t)b)), b);
    assert_int_equal(sp__gpt2_cp_to_byte(0x144), -1);
    assert_int_equal(sp__gpt2_cp_to_byte(' '), -1);
}

/* Lower rank merges first: with "t h" before "h e", "the" is th+e; the other way, t+he. */
static void test_rank_order(void **state) {
    (void)state;
    sp_vocab *v = make("gpt-2", L("th", "he"), L("t h", "h e"), -1);
    expect(v, "the", L("th", "e"));
    sp_vocab_destroy(v);
    v = make("gpt-2", L("th", "he"), L("h e", "t h"), -1);
    expect(v, "the", L("t", "he"));
    sp_vocab_destroy(v);
    // the space joins the word as Ġ and merges like any symbol
    v = make("gpt-2", L("\xc4\xa0t", "he", "\xc4\xa0the"), L("\xc4\xa0 t", "h e", "\xc4\xa0t he"),
             -1);
    expect(v, "the the", L("t", "he", "\xc4\xa0the"));
    sp_vocab_destroy(v);
}

/* The same pair at several places: leftmost first. */
static void test_leftmost(void **state) {
    (void)state;
    sp_vocab *v = make("gpt-2", L("aa"), L("a a"), -1);
    expect(v, "aaa", L("aa", "a"));
    expect(v, "aaaa", L("aa", "aa"));
    sp_vocab_destroy(v);
}

/* Llama-3 vocabularies take a word that is a token whole (ignore_merges), and add BOS. */
static void test_ignore_merges(void **state) {
    (void)state;
    sp_vocab *v = make("llama-bpe", L("ab"), NONE, -1);
    assert_true(sp_vocab_add_bos(v));
    sp_vocab_destroy(v);
    v = make("llama-bpe", L("ab"), NONE, 0);
    assert_false(sp_vocab_add_bos(v));
    expect(v, "ab", L("ab"));
    sp_vocab_destroy(v);
    v = make("gpt-2", L("ab"), NONE, -1);
    assert_false(sp_vocab_add_bos(v));
    expect(v, "ab", L("a", "b"));
    sp_vocab_destroy(v);
}

/* A symbol that is not a token is looked up byte by byte as one-byte tokens, and dropped when
 * absent (llama.cpp): here "Ġ" (U+0120) is missing. */
static void test_missing_symbol(void **state) {
    (void)state;
    sp_vocab *v = NULL;
    sp_str toks[256];
    char bytes[256][4];
    for (int b = 0; b < 256; b++) {
        size_t k = sp__utf8_encode(sp__gpt2_byte_to_cp((uint8_t)b), bytes[b]);
        toks[b] = (sp_str){bytes[b], k};
    }
    toks[' '] = (sp_str){"<space>", 7};
    sp_str merges[] = {{"a b", 3}};
    sp_vocab_spec spec;
    sp_vocab_spec_init(&spec);
    spec.model = (sp_str){"gpt2", 4};
    spec.pre = (sp_str){"gpt-2", 5};
    spec.n_tokens = 256;
    spec.tokens = toks;
    spec.merges = merges;
    spec.n_merges = 1;
    assert_int_equal(sp_vocab_build(&spec, &v, NULL), SP_OK);
    expect(v, "a b", L("a", "b"));
    sp_vocab_destroy(v);
}

static void expect_split(const char *pre, const char *text, const char *const *want) {
    sp__pretok *p = NULL;
    sp__pre_flags f;
    assert_int_equal(sp__pretok_create(pre, strlen(pre), &p, &f, NULL), SP_OK);
    sp__spans s = {0};
    assert_int_equal(sp__pretok_split(p, text, strlen(text), &s), SP_OK);
    size_t n = 0;
    while (want[n])
        n++;
    bool ok = s.n == n;
    for (size_t i = 0; ok && i < n; i++)
        ok = s.len[i] == strlen(want[i]) && memcmp(text + s.off[i], want[i], s.len[i]) == 0;
    if (!ok) {
        fprintf(stderr, "%s '%s' split as:", pre, text);
        for (size_t i = 0; i < s.n; i++)
            fprintf(stderr, " [%.*s]", (int)s.len[i], text + s.off[i]);
        fprintf(stderr, "\n");
    }
    assert_true(ok);
    sp__spans_deinit(&s);
    sp__pretok_destroy(p);
}

static void test_split_gpt2(void **state) {
    (void)state;
    expect_split("gpt-2", "Hello world's  123", L("Hello", " world", "'s", " ", " 123"));
    expect_split("gpt-2", "x!! \n", L("x", "!!", " \n"));
    // U+00A0 and U+0085 are White_Space for llama.cpp: each stays a piece of its own here
    expect_split("gpt-2",
                 "a\xc2\xa0\xc2\xa0"
                 "b",
                 L("a", "\xc2\xa0", "\xc2\xa0", "b"));
    expect_split("gpt-2",
                 "a\xc2\x85\xc2\x85"
                 "b",
                 L("a", "\xc2\x85", "\xc2\x85", "b"));
    // an unknown name falls back to GPT-2's regex
    expect_split("no-such-pre", "Hello world's", L("Hello", " world", "'s"));
}

static void test_split_llama3(void **state) {
    (void)state;
    expect_split("llama-bpe", "I'M 12345 fine!!\n\n  x",
                 L("I", "'M", " ", "123", "45", " fine", "!!\n\n", " ", " x"));
    expect_split("qwen2", "ab 12", L("ab", " ", "1", "2"));
}

static void test_split_deepseek(void **state) {
    (void)state;
    expect_split("deepseek-coder", "ab 12,x", L("ab", " ", "1", "2", ",", "x"));
    expect_split("deepseek-coder", "a\r\nb", L("a", "\r", "\n", "b"));
    // deepseek-llm: letters from its list, then the CJK class, digits as runs
    expect_split("deepseek-llm", "\xce\xb1\xce\xb2 \xe4\xb8\xad\xe6\x96\x87 42",
                 L("\xce\xb1\xce\xb2", " ", "\xe4\xb8\xad\xe6\x96\x87", " ", "42"));
}

/* Default (no pre key): punctuation runs, GPT-2, digit runs, then threes. */
static void test_split_default(void **state) {
    (void)state;
    expect_split("", "a+=b 12345", L("a", "+=", "b", " ", "123", "45"));
}

/* llama.cpp's clean_up_tokenization_spaces on decode for GPT-2-style vocabularies. */
static void test_decode_cleanup(void **state) {
    (void)state;
    sp_vocab *v = make("gpt-2", NONE, NONE, -1);
    const char *src = "Hello , world . I 'm here ' ok";
    sp_tokens t;
    sp_tokens_init(&t);
    assert_int_equal(sp_tok_encode(v, src, strlen(src), false, false, &t, NULL), SP_OK);
    char *s;
    size_t len;
    assert_int_equal(sp_tok_decode(v, t.ids, t.n, 0, &s, &len, NULL), SP_OK);
    assert_string_equal(s, "Hello, world. I'm here'ok");
    free(s);
    sp_tokens_deinit(&t);
    sp_vocab_destroy(v);
    v = make("qwen2", NONE, NONE, -1); // no clean-up for Qwen2
    sp_tokens_init(&t);
    assert_int_equal(sp_tok_encode(v, src, strlen(src), false, false, &t, NULL), SP_OK);
    assert_int_equal(sp_tok_decode(v, t.ids, t.n, 0, &s, &len, NULL), SP_OK);
    assert_string_equal(s, src);
    free(s);
    sp_tokens_deinit(&t);
    sp_vocab_destroy(v);
}

static void test_build_errors(void **state) {
    (void)state;
    sp_str toks[] = {{"a", 1}, {"b", 1}};
    sp_vocab_spec spec;
    sp_vocab_spec_init(&spec);
    spec.model = (sp_str){"gpt2", 4};
    spec.tokens = toks;
    spec.n_tokens = 2;
    sp_vocab *v = NULL;
    sp_diag d;
    assert_int_equal(sp_vocab_build(&spec, &v, &d), SP_ERR_FORMAT); // no merges
    assert_null(v);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_byte_mapping),   cmocka_unit_test(test_rank_order),
        cmocka_unit_test(test_leftmost),       cmocka_unit_test(test_ignore_merges),
        cmocka_unit_test(test_missing_symbol), cmocka_unit_test(test_split_gpt2),
        cmocka_unit_test(test_split_llama3),   cmocka_unit_test(test_split_deepseek),
        cmocka_unit_test(test_split_default),  cmocka_unit_test(test_decode_cleanup),
        cmocka_unit_test(test_build_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

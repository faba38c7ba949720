/* The streaming detokenizer. Reference: llama-server's greedy_text in the golden files, which
 * is the concatenation of the generated tokens' pieces (special = false), serialized to JSON
 * with invalid UTF-8 replaced by U+FFFD. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/gguf.h"
#include "tok/tok.h"

static sp_vocab *load_vocab(const char *rel) {
    char *path = sp_test_shared(rel);
    sp_gguf *g = NULL;
    sp_diag d;
    sp_err e = sp_gguf_open(path, &g, &d);
    if (e)
        fail_msg("%s: %s", path, d.msg);
    sp_vocab *v = NULL;
    e = sp_vocab_load(g, &v, &d);
    if (e)
        fail_msg("%s: %s", path, d.msg);
    sp_gguf_close(g);
    free(path);
    return v;
}

/* True if s[0, n) is valid UTF-8. */
static bool valid_utf8(const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        size_t len = c < 0x80                 ? 1
                     : c >= 0xC2 && c <= 0xDF ? 2
                     : c >= 0xE0 && c <= 0xEF ? 3
                     : c >= 0xF0 && c <= 0xF4 ? 4
                                              : 0;
        if (!len || i + len > n)
            return false;
        uint32_t cp = len == 1 ? c : c & (0x7F >> len);
        for (size_t k = 1; k < len; k++) {
            if (((unsigned char)s[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | ((unsigned char)s[i + k] & 0x3F);
        }
        static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += len;
    }
    return true;
}

typedef struct text {
    char *p;
    size_t n;
} text;

static void append(text *t, sp_str s) {
    t->p = realloc(t->p, t->n + s.len + 1);
    memcpy(t->p + t->n, s.ptr, s.len);
    t->n += s.len;
    t->p[t->n] = '\0';
}

/* Streams ids through a detokenizer; every chunk must be valid UTF-8 with REPLACE_INVALID. */
static text stream(const sp_vocab *v, const sp_token *ids, size_t n, unsigned flags) {
    sp_detok d;
    assert_int_equal(sp_detok_init(&d, v, flags), SP_OK);
    text t = {calloc(1, 1), 0};
    for (size_t i = 0; i < n; i++) {
        sp_str chunk;
        assert_int_equal(sp_detok_push(&d, ids[i], &chunk), SP_OK);
        if (flags & SP_DETOK_REPLACE_INVALID)
            assert_true(valid_utf8(chunk.ptr, chunk.len));
        append(&t, chunk);
    }
    append(&t, sp_detok_flush(&d));
    sp_detok_deinit(&d);
    return t;
}

static size_t check_golden_entries(const sp_vocab *v, json_t *entries) {
    size_t i, n = 0;
    json_t *e;
    json_array_foreach(entries, i, e) {
        json_t *jt = json_object_get(e, "greedy_tokens");
        const char *want = json_string_value(json_object_get(e, "greedy_text"));
        assert_non_null(want);
        size_t n_ids = json_array_size(jt);
        sp_token *ids = malloc((n_ids + 1) * sizeof *ids);
        for (size_t k = 0; k < n_ids; k++)
            ids[k] = (sp_token)json_integer_value(json_array_get(jt, k));
        text t = stream(v, ids, n_ids, SP_DETOK_REPLACE_INVALID);
        if (strcmp(t.p, want) != 0)
            fail_msg("streamed '%s'\n  expected '%s'", t.p, want);
        // without replacement, the stream equals the pieces concatenated (sp_tok_decode with no
        // space stripping: the golden ids never start with a BOS)
        text raw = stream(v, ids, n_ids, 0);
        text pieces = {calloc(1, 1), 0};
        for (size_t k = 0; k < n_ids; k++)
            append(&pieces, sp_tok_piece_ref(v, ids[k], false));
        assert_int_equal(raw.n, pieces.n);
        assert_memory_equal(raw.p, pieces.p, raw.n);
        free(pieces.p);
        free(raw.p);
        free(t.p);
        free(ids);
        n++;
    }
    return n;
}

static void test_golden_greedy_text(void **state) {
    (void)state;
    char *path = sp_test_shared("models/golden-greedy.json");
    json_t *root = sp_test_load_json(path);
    const char *name;
    json_t *entries;
    size_t n = 0;
    json_object_foreach(json_object_get(root, "models"), name, entries) {
        char rel[256];
        snprintf(rel, sizeof rel, "models/%s", name);
        sp_vocab *v = load_vocab(rel);
        n += check_golden_entries(v, entries);
        sp_vocab_destroy(v);
    }
    assert_int_equal(n, 9);
    json_decref(root);
    free(path);
}

/* The random models' goldens include byte tokens that leave invalid UTF-8 (U+FFFD in the
 * JSON), for SPM byte fallback and for byte-level BPE. */
static void test_random_greedy_text(void **state) {
    (void)state;
    static const char *const models[] = {"llama-spm-q4k", "llama3rope-spm-f16", "phi3-spm-f32",
                                         "qwen2-gpt2vocab-f32"};
    static const char *const kinds[] = {"golden", "golden-kvf32"};
    size_t n = 0;
    for (size_t m = 0; m < 4; m++) {
        char rel[256];
        snprintf(rel, sizeof rel, "models/random/%s.gguf", models[m]);
        sp_vocab *v = load_vocab(rel);
        for (size_t k = 0; k < 2; k++) {
            snprintf(rel, sizeof rel, "models/random/%s.%s.json", models[m], kinds[k]);
            char *path = sp_test_shared(rel);
            json_t *root = sp_test_load_json(path);
            n += check_golden_entries(v, json_object_get(root, "entries"));
            json_decref(root);
            free(path);
        }
        sp_vocab_destroy(v);
    }
    assert_int_equal(n, 32);
}

/* A character split over byte tokens comes out whole, once complete; a broken one passes through
 * raw or as U+FFFD; the held start of a character comes out at flush. */
static void test_split_characters(void **state) {
    (void)state;
    sp_vocab *v = load_vocab("vocab/ggml-vocab-llama-spm.gguf");
    const sp_token c3 = 3 + 0xC3, a9 = 3 + 0xA9, f0 = 3 + 0xF0, x9f = 3 + 0x9F;
    sp_token a = sp_vocab_find(v, "a", 1);
    assert_int_not_equal(a, SP_TOKEN_NULL);
    sp_detok d;
    sp_str out;
    assert_int_equal(sp_detok_init(&d, v, 0), SP_OK);
    assert_int_equal(sp_detok_push(&d, c3, &out), SP_OK);
    assert_int_equal(out.len, 0);
    assert_int_equal(sp_detok_push(&d, a9, &out), SP_OK);
    assert_int_equal(out.len, 2);
    assert_memory_equal(out.ptr, "\xc3\xa9", 2);
    // F0 9F then 'a': the start is broken and passes through raw before the 'a'
    assert_int_equal(sp_detok_push(&d, f0, &out), SP_OK);
    assert_int_equal(sp_detok_push(&d, x9f, &out), SP_OK);
    assert_int_equal(out.len, 0);
    assert_int_equal(sp_detok_push(&d, a, &out), SP_OK);
    assert_int_equal(out.len, 3);
    assert_memory_equal(out.ptr,
                        "\xf0\x9f"
                        "a",
                        3);
    assert_int_equal(sp_detok_push(&d, c3, &out), SP_OK);
    assert_int_equal(out.len, 0);
    out = sp_detok_flush(&d);
    assert_int_equal(out.len, 1);
    assert_int_equal((unsigned char)out.ptr[0], 0xC3);
    assert_int_equal(sp_detok_push(&d, -1, &out), SP_ERR_RANGE);
    assert_int_equal(sp_detok_push(&d, 32000, &out), SP_ERR_RANGE);
    sp_detok_deinit(&d);

    // with replacement: E0 80 is two maximal subparts (E0 needs A0..BF next): two U+FFFD
    assert_int_equal(sp_detok_init(&d, v, SP_DETOK_REPLACE_INVALID), SP_OK);
    assert_int_equal(sp_detok_push(&d, 3 + 0xE0, &out), SP_OK);
    assert_int_equal(out.len, 0);
    assert_int_equal(sp_detok_push(&d, 3 + 0x80, &out), SP_OK);
    assert_int_equal(out.len, 6);
    assert_memory_equal(out.ptr, "\xef\xbf\xbd\xef\xbf\xbd", 6);
    assert_int_equal(sp_detok_push(&d, f0, &out), SP_OK);
    out = sp_detok_flush(&d);
    assert_int_equal(out.len, 3);
    assert_memory_equal(out.ptr, "\xef\xbf\xbd", 3);
    sp_detok_deinit(&d);
    sp_vocab_destroy(v);
}

/* Control tokens are hidden unless asked; STRIP_SPACE drops the first piece's leading space,
 * so the stream equals sp_tok_decode. */
static void test_special_and_space(void **state) {
    (void)state;
    sp_vocab *v = load_vocab("vocab/ggml-vocab-llama-spm.gguf");
    const char *src = "Hello world \xf0\x9f\xa6\x99 caf\xc3\xa9";
    sp_tokens t;
    sp_tokens_init(&t);
    assert_int_equal(sp_tok_encode(v, src, strlen(src), true, false, &t, NULL), SP_OK);
    assert_int_equal(sp_tokens_push(&t, sp_vocab_eos(v)), SP_OK);
    text s = stream(v, t.ids + 1, t.n - 1, SP_DETOK_STRIP_SPACE); // without the BOS
    assert_string_equal(s.p, src);
    free(s.p);
    s = stream(v, t.ids, t.n, SP_DECODE_SPECIAL);
    char want[128];
    snprintf(want, sizeof want, "<s> %s</s>", src);
    assert_string_equal(s.p, want);
    free(s.p);
    char *dec;
    size_t len;
    assert_int_equal(sp_tok_decode(v, t.ids + 1, t.n - 1, 0, &dec, &len, NULL), SP_OK);
    assert_string_equal(dec, src);
    free(dec);
    sp_tokens_deinit(&t);
    sp_vocab_destroy(v);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_greedy_text),
        cmocka_unit_test(test_random_greedy_text),
        cmocka_unit_test(test_split_characters),
        cmocka_unit_test(test_special_and_space),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

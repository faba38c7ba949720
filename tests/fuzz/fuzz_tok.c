/* libFuzzer target for the tokenizers. For every input, on a byte-fallback vocabulary
 * (llama-spm) and a byte-level one (gpt-2):
 *  - invalid UTF-8 is refused with SP_ERR_UTF8 at the first bad byte, nothing appended (and a
 *    repaired copy, bad bytes read as Latin-1, goes through the checks below);
 *  - valid UTF-8 round-trips: the pieces of encode(s) concatenate to s (SPM: after its space
 *    prefix), sp_tok_decode gives s back (where GPT-2's space clean-up does not apply), and the
 *    streaming detokenizer gives the same bytes;
 *  - encoding with add_special / parse_special and decoding with every flag do not fail.
 * The vocabularies come from $SP_SHARED_DIR/vocab (default ../shared/vocab). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/gguf.h"
#include "tok/tok.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static sp_vocab *spm, *bpe;

static sp_vocab *load(const char *name) {
    const char *dir = getenv("SP_SHARED_DIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/vocab/%s", dir ? dir : "../shared", name);
    sp_gguf *g = NULL;
    sp_vocab *v = NULL;
    sp_diag d;
    if (sp_gguf_open(path, &g, &d) != SP_OK || sp_vocab_load(g, &v, &d) != SP_OK) {
        fprintf(stderr, "fuzz_tok: cannot load %s: %s (set SP_SHARED_DIR)\n", path, d.msg);
        abort();
    }
    sp_gguf_close(g);
    return v;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    spm = load("ggml-vocab-llama-spm.gguf");
    bpe = load("ggml-vocab-gpt-2.gguf");
    return 0;
}

static void check(bool ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "fuzz_tok: %s\n", what);
        abort();
    }
}

/* First byte that is not valid UTF-8 (RFC 3629), or n. */
static size_t first_bad(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t len = c < 0x80                 ? 1
                     : c >= 0xC2 && c <= 0xDF ? 2
                     : c >= 0xE0 && c <= 0xEF ? 3
                     : c >= 0xF0 && c <= 0xF4 ? 4
                                              : 0;
        if (!len || n - i < len)
            return i;
        uint8_t lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80;
        uint8_t hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
        for (size_t k = 1; k < len; k++) {
            uint8_t b = s[i + k];
            if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xBF))
                return i;
        }
        i += len;
    }
    return n;
}

static bool cleanup_applies(const char *s, size_t n) {
    static const char *const pats[] = {" ?", " !", " .", " ,", " ' ", " 's", " 'm", " 're", " 've"};
    for (size_t i = 0; i < sizeof pats / sizeof pats[0]; i++)
        if (memmem(s, n, pats[i], strlen(pats[i])))
            return true;
    return false;
}

/* The text a round trip gives back: SentencePiece vocabularies write spaces as U+2581 and
 * read U+2581 as a space, so a literal U+2581 comes back as a space (in llama.cpp and
 * SentencePiece too). Returns the length written to out (room for n bytes). */
static size_t expected_text(const sp_vocab *v, const char *s, size_t n, char *out) {
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        if (sp_vocab_get_type(v) == SP_VOCAB_SPM && n - i >= 3 &&
            !memcmp(s + i, "\xE2\x96\x81", 3)) {
            out[k++] = ' ';
            i += 3;
        } else {
            out[k++] = s[i++];
        }
    }
    return k;
}

static void roundtrip(const sp_vocab *v, const char *text, size_t n_text) {
    sp_tokens t;
    sp_tokens_init(&t);
    check(sp_tok_encode(v, text, n_text, false, false, &t, NULL) == SP_OK, "encode failed");
    char *s = malloc(n_text + 1);
    const size_t n = expected_text(v, text, n_text, s);

    // pieces (special: merges may form control-token texts) and the stream
    char *cat = malloc(n + 4);
    size_t k = 0;
    sp_detok d;
    check(sp_detok_init(&d, v, SP_DECODE_SPECIAL) == SP_OK, "detok init");
    char *streamed = malloc(n + 4);
    size_t m = 0;
    const size_t prefix = sp_vocab_add_space_prefix(v) && n > 0 ? 1 : 0;
    for (size_t i = 0; i < t.n; i++) {
        sp_str p = sp_tok_piece_ref(v, t.ids[i], true);
        check(k + p.len <= n + prefix, "pieces longer than the text");
        memcpy(cat + k, p.ptr, p.len);
        k += p.len;
        sp_str chunk;
        check(sp_detok_push(&d, t.ids[i], &chunk) == SP_OK, "detok push");
        check(m + chunk.len <= n + prefix, "stream longer than the text");
        memcpy(streamed + m, chunk.ptr, chunk.len);
        m += chunk.len;
    }
    sp_str tail = sp_detok_flush(&d);
    check(tail.len == 0, "valid text left bytes held");
    check(k == n + prefix && (!prefix || cat[0] == ' ') && memcmp(cat + prefix, s, n) == 0,
          "pieces do not concatenate to the text");
    check(m == k && memcmp(streamed, cat, k) == 0, "stream differs from the pieces");
    sp_detok_deinit(&d);
    free(streamed);
    free(cat);

    char *out;
    size_t len;
    check(sp_tok_decode(v, t.ids, t.n, SP_DECODE_SPECIAL, &out, &len, NULL) == SP_OK, "decode");
    if (sp_vocab_get_type(v) == SP_VOCAB_SPM || !cleanup_applies(s, n))
        check(len == n && memcmp(out, s, n) == 0, "decode(encode(s)) != s");
    free(out);

    // the other modes must not fail
    t.n = 0;
    check(sp_tok_encode(v, text, n_text, true, true, &t, NULL) == SP_OK, "encode special");
    for (unsigned f = 0; f < 4; f++) {
        check(sp_tok_decode(v, t.ids, t.n, f, &out, &len, NULL) == SP_OK, "decode flags");
        free(out);
    }
    sp_tokens_deinit(&t);
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!spm)
        LLVMFuzzerInitialize(NULL, NULL);
    const char *s = (const char *)data;
    size_t bad = first_bad(data, size);
    if (bad < size) {
        const sp_vocab *vs[2] = {spm, bpe};
        for (int i = 0; i < 2; i++) {
            sp_tokens t;
            sp_tokens_init(&t);
            sp_diag d;
            check(sp_tok_encode(vs[i], s, size, true, true, &t, &d) == SP_ERR_UTF8,
                  "accepted bad UTF-8");
            check(d.offset == bad && t.n == 0, "wrong UTF-8 error offset");
            sp_tokens_deinit(&t);
        }
        // also round-trip a repaired copy: each byte of a bad sequence read as Latin-1
        char *fixed = malloc(2 * size + 1);
        size_t k = 0, i = 0;
        while (i < size) {
            size_t ok = first_bad(data + i, size - i);
            memcpy(fixed + k, data + i, ok);
            k += ok;
            i += ok;
            if (i < size) {
                fixed[k++] = (char)(0xC0 | (data[i] >> 6));
                fixed[k++] = (char)(0x80 | (data[i] & 0x3F));
                i++;
            }
        }
        roundtrip(spm, fixed, k);
        roundtrip(bpe, fixed, k);
        free(fixed);
        return 0;
    }
    roundtrip(spm, s, size);
    roundtrip(bpe, s, size);
    return 0;
}

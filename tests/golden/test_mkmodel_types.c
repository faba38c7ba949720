/* `spindle mkmodel`'s type mixes against llama.cpp's llama-quantize presets.
 *
 * - q4_k_m on the shape of random/llama-spm-q4k.gguf (n_embd 256, 2 layers, 8 heads, 2 KV
 *   heads, n_ff 512, tied head), which llama-quantize b4748 made with its Q4_K_M preset: the
 *   same tensors with the same types, one by one, and the same general.file_type (15).
 * - q5_k_m on 8 layers, untied: attn_v and ffn_down q6_k in layers 0, 3, 6, 7 (llama.cpp's
 *   use_more_bits: i < n/8, i >= 7n/8, (i - n/8) % 3 == 2), the output head q6_k, every other
 *   matrix q5_k (the embedding included), norms f32; general.file_type 17.
 * - q4_k_m on 80 layers with grouped KV heads (llama.cpp's 70B type): attn_v q5_k where it is not
 *   q6_k.
 * - Rows that do not fit 256-value blocks (n_embd 64): q8_0, as the help says. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/commands.h"
#include "gguf/gguf.h"
#include "tensor/dtype.h"

/* Runs mkmodel with the shape arguments and the vocabulary of vocab_rel; returns the file. */
static sp_gguf *make(const char *name, const char *type, const char *vocab_rel, const char *embd,
                     const char *layers, const char *heads, const char *heads_kv, const char *ff,
                     bool tied) {
    char out[512];
    snprintf(out, sizeof out, "%s/%s.gguf", sp_test_tmpdir(), name);
    char *vocab = sp_test_shared(vocab_rel);
    char *argv[] = {"mkmodel",
                    "-o",
                    out,
                    "--n-embd",
                    (char *)embd,
                    "--n-layer",
                    (char *)layers,
                    "--n-head",
                    (char *)heads,
                    "--n-head-kv",
                    (char *)heads_kv,
                    "--n-ff",
                    (char *)ff,
                    "--type",
                    (char *)type,
                    "--vocab-from",
                    vocab,
                    "--seed",
                    "3",
                    tied ? "--tied" : NULL,
                    NULL};
    const int argc = tied ? 20 : 19;
    assert_int_equal(sp_cmd_mkmodel(argc, argv), 0);
    free(vocab);
    sp_gguf *g = NULL;
    sp_diag d;
    assert_int_equal(sp_gguf_open(out, &g, &d), SP_OK);
    return g;
}

static sp_dtype type_of(const sp_gguf *g, const char *name) {
    const sp_gguf_tensor *t = sp_gguf_find_tensor(g, name);
    if (!t)
        fail_msg("no tensor %s", name);
    return t->type;
}

static int64_t file_type(const sp_gguf *g) {
    int64_t v = -1;
    sp_diag d;
    assert_int_equal(sp_gguf_get_int(g, "general.file_type", &v, &d), SP_OK);
    return v;
}

static void expect(const sp_gguf *g, const char *name, sp_dtype want) {
    const sp_dtype got = type_of(g, name);
    if (got != want)
        fail_msg("%s is %s, want %s", name, sp_dtype_get(got)->name, sp_dtype_get(want)->name);
}

static void test_q4_k_m_as_llama_quantize(void **state) {
    (void)state;
    char *ref_path = sp_test_shared("models/random/llama-spm-q4k.gguf");
    sp_gguf *ref = NULL;
    sp_diag d;
    assert_int_equal(sp_gguf_open(ref_path, &ref, &d), SP_OK);
    free(ref_path);
    sp_gguf *g = make("q4km-as-ref", "q4_k_m", "vocab/ggml-vocab-llama-spm.gguf", "256", "2", "8",
                      "2", "512", true);
    assert_int_equal(sp_gguf_n_tensors(g), sp_gguf_n_tensors(ref));
    for (uint64_t i = 0; i < sp_gguf_n_tensors(ref); i++) {
        const sp_gguf_tensor *t = sp_gguf_tensor_at(ref, i);
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        const sp_dtype got = type_of(g, name);
        print_message("%-24s llama-quantize %-5s mkmodel %s\n", name, sp_dtype_get(t->type)->name,
                      sp_dtype_get(got)->name);
        if (got != t->type)
            fail_msg("%s: mkmodel q4_k_m wrote %s, llama-quantize Q4_K_M %s", name,
                     sp_dtype_get(got)->name, sp_dtype_get(t->type)->name);
    }
    assert_int_equal(file_type(g), file_type(ref));
    sp_gguf_close(g);
    sp_gguf_close(ref);
}

static void test_q5_k_m_rules(void **state) {
    (void)state;
    sp_gguf *g =
        make("q5km-8", "q5_k_m", "models/stories260K.gguf", "256", "8", "4", "2", "256", false);
    assert_int_equal(file_type(g), 17);
    expect(g, "token_embd.weight", SP_DTYPE_Q5_K);
    expect(g, "output.weight", SP_DTYPE_Q6_K);
    expect(g, "output_norm.weight", SP_DTYPE_F32);
    for (int il = 0; il < 8; il++) {
        const bool more = il == 0 || il == 3 || il == 6 || il == 7;
        static const char *const plain[] = {"attn_q", "attn_k", "attn_output", "ffn_gate",
                                            "ffn_up"};
        char name[64];
        for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", il, plain[i]);
            expect(g, name, SP_DTYPE_Q5_K);
        }
        snprintf(name, sizeof name, "blk.%d.attn_v.weight", il);
        expect(g, name, more ? SP_DTYPE_Q6_K : SP_DTYPE_Q5_K);
        snprintf(name, sizeof name, "blk.%d.ffn_down.weight", il);
        expect(g, name, more ? SP_DTYPE_Q6_K : SP_DTYPE_Q5_K);
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", il);
        expect(g, name, SP_DTYPE_F32);
    }
    sp_gguf_close(g);
}

static void test_q4_k_m_80_layers(void **state) {
    (void)state;
    sp_gguf *g =
        make("q4km-80", "q4_k_m", "models/stories260K.gguf", "256", "80", "8", "2", "256", false);
    for (int il = 0; il < 80; il++) {
        // n/8 = 10, 7n/8 = 70.
        const bool more = il < 10 || il >= 70 || (il - 10) % 3 == 2;
        char name[64];
        snprintf(name, sizeof name, "blk.%d.attn_v.weight", il);
        expect(g, name, more ? SP_DTYPE_Q6_K : SP_DTYPE_Q5_K);
        snprintf(name, sizeof name, "blk.%d.ffn_down.weight", il);
        expect(g, name, more ? SP_DTYPE_Q6_K : SP_DTYPE_Q4_K);
        snprintf(name, sizeof name, "blk.%d.attn_q.weight", il);
        expect(g, name, SP_DTYPE_Q4_K);
    }
    sp_gguf_close(g);
}

static void test_mix_fallback(void **state) {
    (void)state;
    sp_gguf *g =
        make("q4km-64", "q4_k_m", "models/stories260K.gguf", "64", "2", "4", "2", "256", false);
    expect(g, "token_embd.weight", SP_DTYPE_Q8_0);
    expect(g, "output.weight", SP_DTYPE_Q8_0);
    expect(g, "blk.0.attn_q.weight", SP_DTYPE_Q8_0);
    expect(g, "blk.1.attn_v.weight", SP_DTYPE_Q8_0);
    expect(g, "blk.0.ffn_down.weight", SP_DTYPE_Q4_K); // rows of n_ff = 256
    expect(g, "blk.1.ffn_down.weight", SP_DTYPE_Q6_K);
    sp_gguf_close(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_q4_k_m_as_llama_quantize),
        cmocka_unit_test(test_q5_k_m_rules),
        cmocka_unit_test(test_q4_k_m_80_layers),
        cmocka_unit_test(test_mix_fallback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
